// Reverse-mode automatic differentiation over the graph IR. Every op of
// ir/ops.def has a gradient rule here (nc_grad_<ID>); ops without the DIFF
// flag propagate nothing. The backward graph is built from these rules, never
// written by hand.
#ifndef NC_PASSES_AUTODIFF_H
#define NC_PASSES_AUTODIFF_H

#include "ir/graph.h"

// Adds to g the gradient of the scalar node `loss` (seeded with 1, or with
// the node `seed` of loss's type when seed != NC_NONE) with respect to each
// wrt[i]. grads[i] is a node of wrt[i]'s type (a zero const when loss does
// not depend on it).
nc_status nc_autodiff(nc_graph *g, nc_id loss, nc_id seed, const nc_id *wrt, int n, nc_id *grads);

#endif
