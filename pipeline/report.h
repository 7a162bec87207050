// The report card of a run (nanochat's report.md): the machine, the code
// version, the tokenizer, and every stage's settings, metrics, samples and
// loss plots, read from the stages' run.json files under the base folder.
#ifndef NC_PIPELINE_REPORT_H
#define NC_PIPELINE_REPORT_H

#include "support/status.h"

// Writes out_path (markdown; plots linked relative to it) for run tag under
// base (base/<stage folder>/<tag>/run.json for base, mid, sft and rl).
// Stages without run.json are listed as not run; none at all is an error.
nc_status nc_report_write(const char *base, const char *tag, const char *out_path);

#endif
