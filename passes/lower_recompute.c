// NC_PATTERN_RECOMPUTE (lowering, force-only: the OpenCL device sets it in
// patterns_force): a cheap unary elementwise node (relu, neg, abs) of a
// materialized node, read by several elementwise kernels, is recomputed in each
// of them instead of being stored by a kernel of its own. The MLP's relu(u) of
// the bf16 model: square(relu(u)) (the c_proj GEMM's operand) and the backward's
// mask and 2 relu(u) both read u, which they read anyway; a GPU is bound by
// the bytes, and the relu kernel (read u, write relu(u): 0.8 GB per layer at d12
// 32 x 2048) and one read of relu(u) in the backward go.
#include <stdlib.h>

#include "passes/lower_impl.h"
#include "passes/pass.h"

static bool nc_lw_rc_cheap(nc_op op) { return op == NC_OP_RELU || op == NC_OP_NEG || op == NC_OP_ABS; }

bool nc_lw_recompute(const nc_graph *g, nc_plan *p) {
  uint32_t nn = nc_graph_nnodes(g);
  // per node: 1 = a candidate, 0 = not (or a consumer needs its buffer)
  unsigned char *ok = calloc(nn ? nn : 1, 1);
  if (!ok) return false;
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (!p->materialized[i] || p->stored_by[i] != NC_NONE || !nc_lw_rc_cheap(nd->op) || nd->nin != 1) continue;
    nc_id in = nc_graph_input_of(g, i, 0);
    if (!p->materialized[in]) continue;
    const nc_node *id = nc_graph_node(g, in);
    if (id->type.dtype != nd->type.dtype || id->type.rank != nd->type.rank) continue;
    ok[i] = 1;
  }
  for (int k = 0; k < nc_graph_noutputs(g); k++) ok[nc_graph_output(g, k)] = 0;
  // every consumer must be an elementwise node (its kernel, or the kernel it is
  // inlined into, reads the value through an index map; a GEMM, a reduction's
  // template or a row pattern might want the buffer)
  for (nc_id j = 0; j < nn; j++) {
    const nc_node *nd = nc_graph_node(g, j);
    bool elem = nc_op_get(nd->op)->kind == NC_KIND_ELEMWISE;
    for (int q = 0; q < nd->nin; q++) {
      nc_id in = nc_graph_input_of(g, j, q);
      if (ok[in] && (!elem || p->stored_by[j] != NC_NONE)) ok[in] = 0;
    }
  }
  if (p->extra_read)
    for (nc_id j = 0; j < nn; j++)
      if (p->extra_read[j] != NC_NONE) ok[p->extra_read[j]] = 0;
  for (nc_id i = 0; i < nn; i++)
    if (ok[i]) p->materialized[i] = 0;
  free(ok);
  return true;
}
