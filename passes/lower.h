// Fusion and lowering: groups of graph nodes become kernels (ir/kir.h).
//
// Fusion decides which nodes are materialized (own a buffer): graph inputs,
// params, outputs, reductions, contractions (matmul/bmm), scatter_add and
// every node used by more than one consumer. Everything else is inlined into
// its single consumer's loop nest (elementwise chains, broadcasts, layout ops,
// reduction prologues). Cheap leaves (const, iota) are inlined everywhere.
//
// Lowering turns each materialized non-leaf node and the nodes inlined into
// it into one kernel: loops over the output's dims (the outermost parallel,
// the innermost vectorizable), the value computed by walking the inlined
// nodes with index maps (expand, reshape, permute, slice, concat, shift,
// gather), reductions with an accumulator over the reduced dims, and
// template calls for matmul/bmm.
//
// Ops that have no loop-nest lowering yet (rms_norm, softmax, attention, the
// losses and their gradients, rope) must first be rewritten into primitives
// by the `decompose` pass.
#ifndef NC_PASSES_LOWER_H
#define NC_PASSES_LOWER_H

#include "ir/graph.h"
#include "ir/kir.h"
#include "passes/memplan.h"

typedef struct {
  nc_kernel k;
  nc_id node;                           // the node the kernel computes
  nc_id buf_node[NC_KERNEL_MAX_BUFS];   // graph node held by each kernel buffer
} nc_plan_kernel;

typedef struct {
  int nkernels;
  nc_plan_kernel *kernels;  // in execution order
  unsigned char *materialized;  // per node id: 1 if it owns a buffer
  // per node id: the node whose kernel computes and stores it (a kernel with
  // several outputs: NC_PATTERN_UPDATE_GROUP), or NC_NONE (its own kernel)
  nc_id *stored_by;
  uint32_t nnodes;
  // per node id (NULL: none): a materialized node its kernel reads beyond its
  // graph inputs (NC_PATTERN_CE_LSE: the gradient reads the forward's loss
  // rows), or NC_NONE; the memory plan keeps it alive until then
  nc_id *extra_read;
} nc_plan;

typedef struct {
  bool fuse;  // false: materialize every node (one kernel per node; for tests)
  unsigned patterns_off;    // NC_PATTERN_* bits (passes/pass.h) of lowering-time patterns switched off
  unsigned patterns_force;  // NC_PATTERN_* bits applied beyond their cost rule (NORM_ROPE: the rotation too;
                            // SOFTCAP_CE: the softcap's div and tanh recomputed too, set for OpenCL)
  // OpenCL only (runtime/exec.c): f32 attention / attention_grad without kvlen, head dims
  // <= NC_FLASH_MAX_D, become NC_KT_ATTENTION template calls (codegen/ocl_attn.h); the
  // attention_grad nodes of one attention (wrt q, k, v) share one call (stored_by)
  bool flash_attention;
  // OpenCL only: scatter_add with f32 src and out and i32/i64 ids becomes one
  // NC_KT_SCATTER_ADD call (float atomics, codegen/ocl_scatter.h)
  bool scatter_atomic;
} nc_lower_opts;
#define NC_FLASH_MAX_D 128

nc_status nc_plan_build(const nc_graph *g, const nc_lower_opts *o, nc_plan **out);
// NC_PATTERN_UPDATE_BATCH (passes/batch.c; nc_plan_build runs it unless the
// bit is off): merges the plan's identical optimizer-update kernels.
nc_status nc_plan_batch_updates(const nc_graph *g, nc_plan *p);
void nc_plan_free(nc_plan *p);
// The memory plan of p's buffers (materialized non-leaf nodes) for the given
// symbol sizes (syms[k] = size of symbol k).
nc_status nc_plan_memplan(const nc_graph *g, const nc_plan *p, const int64_t *syms, nc_memplan **out);

// Every kernel, printed (for --verbose and golden tests).
void nc_plan_print(const nc_graph *g, const nc_plan *p, nc_buf *out);

#endif
