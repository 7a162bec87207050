// The reference interpreter: executes any graph on the host in plain C, the
// correctness oracle for every kernel and backend. Simple loops, float64
// accumulation for reductions, matmuls, norms, softmax, attention and losses;
// results are rounded to each node's dtype exactly once.
#ifndef NC_RUNTIME_INTERP_H
#define NC_RUNTIME_INTERP_H

#include "ir/graph.h"
#include "ir/tensor.h"

// A named value for an input or param node.
typedef struct {
  const char *name;
  const nc_tensor *value;
} nc_feed;

// Binds the graph's symbols from the feeds' shapes, checks every feed (dtype,
// rank, extents; names must exist; every input/param needed must be fed) and
// evaluates the graph's outputs. outputs[k] receives a new owned tensor for
// output k (nc_graph_noutputs(g) of them).
nc_status nc_interp_run(const nc_graph *g, const nc_feed *feeds, int nfeeds, nc_tensor *outputs);
// Same, for arbitrary nodes: values[i] receives the value of ids[i].
nc_status nc_interp_eval(const nc_graph *g, const nc_feed *feeds, int nfeeds, const nc_id *ids, int n,
                         nc_tensor *values);

// The binding and checks of nc_interp_run alone: symbol sizes from the
// feeds' shapes (syms[k] for symbol k; every symbol must be bound) and, when
// per_node is not NULL (nc_graph_nnodes entries), the feed of each input/param.
nc_status nc_feeds_bind(const nc_graph *g, const nc_feed *feeds, int nfeeds, int64_t syms[NC_MAX_SYMS],
                        const nc_tensor **per_node);

#endif
