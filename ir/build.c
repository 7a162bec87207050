#include "ir/build.h"

#include "ir/rules.h"

static nc_id nc_b_desc(nc_graph *g, nc_op op, int nin, const nc_id *in, nc_node_desc *d) {
  d->nin = nin;
  for (int i = 0; i < nin; i++) d->in[i] = in[i];
  return nc_build(g, d);
}

static bool nc_b_bad(const nc_graph *g, nc_id x) { return nc_graph_error(g) || x == NC_NONE; }

nc_id nc_b_const_like(nc_graph *g, nc_id x, double value) {
  if (nc_b_bad(g, x)) return NC_NONE;
  return nc_const(g, value, nc_type_of(g, x));
}

nc_id nc_b_scale(nc_graph *g, nc_id x, double s) {
  if (s == 1.0) return x;
  return nc_op2(g, NC_OP_MUL, x, nc_b_const_like(g, x, s));
}

nc_id nc_b_reshape(nc_graph *g, nc_id x, nc_type t) {
  if (nc_b_bad(g, x)) return NC_NONE;
  nc_type xt = nc_type_of(g, x);
  t.dtype = xt.dtype;
  if (nc_type_eq(&t, &xt)) return x;
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_RESHAPE);
  d.type = t;
  return nc_b_desc(g, NC_OP_RESHAPE, 1, &x, &d);
}

nc_id nc_b_reshape_dims(nc_graph *g, nc_id x, int rank, const nc_dim *dims) {
  return nc_b_reshape(g, x, nc_type_make(nc_type_of(g, x).dtype, rank, dims));
}

nc_id nc_b_expand(nc_graph *g, nc_id x, nc_type t) {
  if (nc_b_bad(g, x)) return NC_NONE;
  nc_type xt = nc_type_of(g, x);
  t.dtype = xt.dtype;
  if (nc_type_eq(&t, &xt)) return x;
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_EXPAND);
  d.type = t;
  return nc_b_desc(g, NC_OP_EXPAND, 1, &x, &d);
}

nc_id nc_b_expand_like(nc_graph *g, nc_id x, nc_id like) {
  if (nc_b_bad(g, like)) return NC_NONE;
  return nc_b_expand(g, x, nc_type_of(g, like));
}

nc_id nc_b_cast(nc_graph *g, nc_id x, nc_dtype dt) {
  if (nc_b_bad(g, x)) return NC_NONE;
  nc_type t = nc_type_of(g, x);
  if (t.dtype == dt) return x;
  t.dtype = dt;
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_CAST);
  d.type = t;
  return nc_b_desc(g, NC_OP_CAST, 1, &x, &d);
}

nc_id nc_b_permute(nc_graph *g, nc_id x, const int *perm, int rank) {
  bool ident = true;
  for (int i = 0; i < rank; i++) ident &= perm[i] == i;
  if (ident) return x;
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_PERMUTE);
  d.ia[0] = nc_perm_encode(perm, rank);
  return nc_b_desc(g, NC_OP_PERMUTE, 1, &x, &d);
}

nc_id nc_b_slice(nc_graph *g, nc_id x, int axis, int64_t start, int64_t end) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_SLICE);
  d.ia[0] = axis;
  d.ia[1] = start;
  d.ia[2] = end;
  return nc_b_desc(g, NC_OP_SLICE, 1, &x, &d);
}

nc_id nc_b_concat(nc_graph *g, const nc_id *xs, int n, int axis) {
  if (n == 1) return xs[0];
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_CONCAT);
  d.ia[0] = axis;
  return nc_b_desc(g, NC_OP_CONCAT, n, xs, &d);
}

nc_id nc_b_reduce(nc_graph *g, nc_op op, nc_id x, int64_t axes, bool keepdim) {
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  d.ia[0] = axes;
  d.ia[1] = keepdim;
  return nc_b_desc(g, op, 1, &x, &d);
}

static nc_id nc_b_mm(nc_graph *g, nc_op op, nc_id a, nc_id b, bool ta, bool tb) {
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  d.ia[0] = ta;
  d.ia[1] = tb;
  nc_id in[2] = {a, b};
  return nc_b_desc(g, op, 2, in, &d);
}

nc_id nc_b_matmul(nc_graph *g, nc_id a, nc_id b, bool ta, bool tb) { return nc_b_mm(g, NC_OP_MATMUL, a, b, ta, tb); }
nc_id nc_b_bmm(nc_graph *g, nc_id a, nc_id b, bool ta, bool tb) { return nc_b_mm(g, NC_OP_BMM, a, b, ta, tb); }

nc_id nc_b_rms_norm(nc_graph *g, nc_id x, double eps) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_RMS_NORM);
  d.fa[0] = eps;
  return nc_b_desc(g, NC_OP_RMS_NORM, 1, &x, &d);
}

nc_id nc_b_rms_norm_grad(nc_graph *g, nc_id x, nc_id dy, double eps) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_RMS_NORM_GRAD);
  d.fa[0] = eps;
  nc_id in[2] = {x, dy};
  return nc_b_desc(g, NC_OP_RMS_NORM_GRAD, 2, in, &d);
}

nc_id nc_b_rope(nc_graph *g, nc_id x, nc_id pos0, double base, bool inverse) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_ROPE);
  d.fa[0] = base;
  d.ia[0] = inverse;
  nc_id in[2] = {x, pos0};
  return nc_b_desc(g, NC_OP_ROPE, pos0 == NC_NONE ? 1 : 2, in, &d);
}

nc_id nc_b_attention(nc_graph *g, nc_id q, nc_id k, nc_id v, nc_id kvlen, bool causal, int64_t window,
                     double scale) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_ATTENTION);
  d.ia[0] = causal;
  d.ia[1] = window;
  d.fa[0] = scale;
  nc_id in[4] = {q, k, v, kvlen};
  return nc_b_desc(g, NC_OP_ATTENTION, kvlen == NC_NONE ? 3 : 4, in, &d);
}

nc_id nc_b_attention_grad(nc_graph *g, nc_id q, nc_id k, nc_id v, nc_id dout, nc_id kvlen, int wrt,
                          bool causal, int64_t window, double scale) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_ATTENTION_GRAD);
  d.ia[0] = wrt;
  d.ia[1] = causal;
  d.ia[2] = window;
  d.fa[0] = scale;
  nc_id in[5] = {q, k, v, dout, kvlen};
  return nc_b_desc(g, NC_OP_ATTENTION_GRAD, kvlen == NC_NONE ? 4 : 5, in, &d);
}

nc_id nc_b_cross_entropy(nc_graph *g, nc_id logits, nc_id targets, int64_t ignore_index, int reduction) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_CROSS_ENTROPY);
  d.ia[0] = ignore_index;
  d.ia[1] = reduction;
  nc_id in[2] = {logits, targets};
  return nc_b_desc(g, NC_OP_CROSS_ENTROPY, 2, in, &d);
}

nc_id nc_b_cross_entropy_grad(nc_graph *g, nc_id logits, nc_id targets, nc_id dloss, int64_t ignore_index,
                              int reduction) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_CROSS_ENTROPY_GRAD);
  d.ia[0] = ignore_index;
  d.ia[1] = reduction;
  nc_id in[3] = {logits, targets, dloss};
  return nc_b_desc(g, NC_OP_CROSS_ENTROPY_GRAD, 3, in, &d);
}

nc_id nc_b_scatter_add(nc_graph *g, nc_id ids, nc_id src, nc_type out) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_SCATTER_ADD);
  d.type = out;
  nc_id in[2] = {ids, src};
  return nc_b_desc(g, NC_OP_SCATTER_ADD, 2, in, &d);
}

nc_id nc_b_powc(nc_graph *g, nc_id x, double p) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_POWC);
  d.fa[0] = p;
  return nc_b_desc(g, NC_OP_POWC, 1, &x, &d);
}

nc_id nc_b_shift(nc_graph *g, nc_id x, int axis, int64_t amount) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_SHIFT);
  d.ia[0] = axis;
  d.ia[1] = amount;
  return nc_b_desc(g, NC_OP_SHIFT, 1, &x, &d);
}
