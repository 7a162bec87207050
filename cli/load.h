// Shared by the CLI's commands: loading FILE, a graph or a model spec.
#ifndef NC_CLI_LOAD_H
#define NC_CLI_LOAD_H

#include <stdbool.h>

#include "ir/graph.h"

// Loads FILE: a graph (text IR or XML) or a model spec (XML with a <model>
// root), which is built into its forward graph (outputs logits and loss) or,
// with train, its whole training step (forward, backward, AdamW + Muon).
// --train with a graph file is an error.
nc_status nc_cli_load_graph(const char *path, bool train, nc_graph **g);

#endif
