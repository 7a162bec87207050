// Graphviz DOT rendering of a graph (one box per node: id, op, attributes,
// type; edges from inputs; outputs as extra labelled nodes).
#ifndef NC_IR_DOT_H
#define NC_IR_DOT_H

#include "ir/graph.h"
#include "support/buf.h"

nc_status nc_graph_write_dot(const nc_graph *g, nc_buf *out);

#endif
