// The textual IR: human-readable, round-trips exactly (print -> parse ->
// print gives identical text and the same nc_graph_hash). Grammar in
// docs/ir-format.md.
#ifndef NC_IR_TEXT_H
#define NC_IR_TEXT_H

#include <stddef.h>

#include "ir/graph.h"
#include "support/buf.h"

// Appends the canonical text of g to out.
nc_status nc_graph_print_text(const nc_graph *g, nc_buf *out);
// Parses text IR; errors name filename:line:col. On success *out is a new
// verified graph owned by the caller.
nc_status nc_graph_parse_text(const char *src, size_t len, const char *filename, nc_graph **out);

#endif
