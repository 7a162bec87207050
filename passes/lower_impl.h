// Internal to passes/lower*.c: the lowering state shared by lower.c (fusion
// decisions, elementwise/reduction/GEMM/cross-entropy lowering) and
// lower_attn.c (the attention loop nests and the flash-attention template call).
#ifndef NC_PASSES_LOWER_IMPL_H
#define NC_PASSES_LOWER_IMPL_H

#include "passes/lower.h"

typedef struct {
  const nc_graph *g;
  nc_plan *p;
  nc_plan_kernel *pk;  // the kernel being built
  nc_kernel *k;
  int depth;
  nc_status st;
  nc_id sub_node;  // while set: the value of node sub_node is sub_val (epilogue fusion)
  nc_kx sub_val;
  const unsigned char *rowfused;  // per node: a row reduction computed inside its consumers' kernels
  bool sym_ok;  // NC_PATTERN_SYMMETRIC_GEMM on
  bool hosts;   // this kernel stores other nodes too (NC_PATTERN_UPDATE_GROUP)
  int nrow;
  nc_id row_node[NC_KERNEL_MAX_ACCS];  // the row reductions computed so far in this kernel ...
  nc_kx row_val[NC_KERNEL_MAX_ACCS];   // ... and their values
  bool scatter_blocks;  // NC_PATTERN_SCATTER_BLOCKS on
} nc_lw;

// Columns per block of a scatter_add loop nest (NC_PATTERN_SCATTER_BLOCKS): 16 floats, a cache line.
#define NC_LW_SCATTER_COLS 16

// A dim as an i64 expression over the kernel's symbol arguments.
nc_kx nc_lw_dim(nc_lw *w, nc_dim d);
// The kernel buffer holding materialized node n (added on first use).
int nc_lw_buf(nc_lw *w, nc_id n, bool written);
// The value of node n at multi-index idx (rank of n), inlining unmaterialized nodes.
nc_kx nc_lw_emit(nc_lw *w, nc_id n, const nc_kx *idx, bool root);

// lower_attn.c
// attention / attention_grad as online-softmax loop nests (NC_PATTERN_ATTENTION).
nc_status nc_lw_attention(nc_lw *w, nc_id n);
// flash attention (nc_lower_opts.flash_attention): whether node n qualifies,
// the grouping of one attention's gradients into one call, and the call.
bool nc_lw_flash_ok(const nc_graph *g, nc_id n);
void nc_lw_flash_group(const nc_graph *g, nc_plan *p);
// Each flash backward call whose forward (same q, k, v, scale, causal, window) is a
// flash call of the plan reads that forward's output and softmax statistics:
// p->extra_read[grad host] = the forward (kept alive until then). false: out of memory.
bool nc_lw_flash_link(const nc_graph *g, nc_plan *p);
nc_status nc_lw_flash(nc_lw *w, nc_id n);

// lower_recompute.c (NC_PATTERN_RECOMPUTE): relu/neg/abs nodes of materialized
// nodes read only by elementwise nodes lose their buffers (recomputed by each
// reader). false: out of memory.
bool nc_lw_recompute(const nc_graph *g, nc_plan *p);

#endif
