// Convenience builders over nc_build for model code and passes. All follow
// the sticky-error convention of ir/graph.h: they return NC_NONE once the
// graph holds an error (read it with nc_graph_error).
#ifndef NC_IR_BUILD_H
#define NC_IR_BUILD_H

#include "ir/graph.h"

// const splat of value with x's type (or an explicit type).
nc_id nc_b_const_like(nc_graph *g, nc_id x, double value);
// x * s (s a compile-time constant). Returns x when s == 1.
nc_id nc_b_scale(nc_graph *g, nc_id x, double s);
nc_id nc_b_reshape(nc_graph *g, nc_id x, nc_type t);
nc_id nc_b_reshape_dims(nc_graph *g, nc_id x, int rank, const nc_dim *dims);
nc_id nc_b_expand(nc_graph *g, nc_id x, nc_type t);
// Broadcast a scalar or lower-rank x to like's type (right-aligned).
nc_id nc_b_expand_like(nc_graph *g, nc_id x, nc_id like);
nc_id nc_b_cast(nc_graph *g, nc_id x, nc_dtype dt);
nc_id nc_b_permute(nc_graph *g, nc_id x, const int *perm, int rank);
nc_id nc_b_slice(nc_graph *g, nc_id x, int axis, int64_t start, int64_t end);
nc_id nc_b_concat(nc_graph *g, const nc_id *xs, int n, int axis);
// reduce_{sum,max,mean} over an axis set (bitmask).
nc_id nc_b_reduce(nc_graph *g, nc_op op, nc_id x, int64_t axes, bool keepdim);
nc_id nc_b_matmul(nc_graph *g, nc_id a, nc_id b, bool ta, bool tb);
nc_id nc_b_bmm(nc_graph *g, nc_id a, nc_id b, bool ta, bool tb);
nc_id nc_b_rms_norm(nc_graph *g, nc_id x, double eps);
nc_id nc_b_rms_norm_grad(nc_graph *g, nc_id x, nc_id dy, double eps);
// rope(x [, pos0 or NC_NONE]).
nc_id nc_b_rope(nc_graph *g, nc_id x, nc_id pos0, double base, bool inverse);
nc_id nc_b_attention(nc_graph *g, nc_id q, nc_id k, nc_id v, nc_id kvlen, bool causal, int64_t window,
                     double scale);
// wrt: 0 = q, 1 = k, 2 = v.
nc_id nc_b_attention_grad(nc_graph *g, nc_id q, nc_id k, nc_id v, nc_id dout, nc_id kvlen, int wrt,
                          bool causal, int64_t window, double scale);
// reduction: 0 none, 1 sum, 2 mean.
nc_id nc_b_cross_entropy(nc_graph *g, nc_id logits, nc_id targets, int64_t ignore_index, int reduction);
nc_id nc_b_cross_entropy_grad(nc_graph *g, nc_id logits, nc_id targets, nc_id dloss, int64_t ignore_index,
                              int reduction);
nc_id nc_b_scatter_add(nc_graph *g, nc_id ids, nc_id src, nc_type out);
nc_id nc_b_powc(nc_graph *g, nc_id x, double p);
// y[t] = x[t - amount] along axis, zero-filled.
nc_id nc_b_shift(nc_graph *g, nc_id x, int axis, int64_t amount);
// The rms_norm eps nanochat uses for f32 (torch.finfo(float32).eps).
#define NC_RMS_EPS_F32 1.1920928955078125e-07

#endif
