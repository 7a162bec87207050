// Shape and dtype rules, one per RULE column of ir/ops.def.
#include "ir/rules.h"

#include <string.h>

static const char *opn(const nc_node_desc *d) { return nc_op_get(d->op)->name; }

static nc_status mismatch(const nc_graph *g, const nc_node_desc *d, const char *what,
                          const nc_type *a, const nc_type *b) {
  char sa[160], sb[160];
  return nc_errorf(NC_E_TYPE, "%s: %s: %s vs %s", opn(d), what, nc_type_str(g, a, sa, sizeof sa),
                   nc_type_str(g, b, sb, sizeof sb));
}

static nc_status want_dtype(const nc_graph *g, const nc_node_desc *d, const nc_type *t, int k,
                            bool ok, const char *what) {
  if (ok) return NC_OK;
  char s[160];
  return nc_errorf(NC_E_TYPE, "%s: input %d must be %s, got %s", opn(d), k, what, nc_type_str(g, t, s, sizeof s));
}

static nc_status want_rank(const nc_graph *g, const nc_node_desc *d, const nc_type *t, int k, int lo,
                           int hi) {
  if (t->rank >= lo && t->rank <= hi) return NC_OK;
  char s[160];
  if (lo == hi) return nc_errorf(NC_E_TYPE, "%s: input %d must have rank %d, got %s", opn(d), k, lo, nc_type_str(g, t, s, sizeof s));
  return nc_errorf(NC_E_TYPE, "%s: input %d must have rank %d to %d, got %s", opn(d), k, lo, hi, nc_type_str(g, t, s, sizeof s));
}

static nc_status want_scalar_i32(const nc_graph *g, const nc_node_desc *d, const nc_type *t, int k) {
  if (t->rank == 0 && t->dtype == NC_I32) return NC_OK;
  char s[160];
  return nc_errorf(NC_E_TYPE, "%s: input %d must be an i32 scalar (i32[]), got %s", opn(d), k, nc_type_str(g, t, s, sizeof s));
}

static bool is_num(nc_dtype t) { return t != NC_BOOL; }

static nc_status dim_mismatch(const nc_graph *g, const nc_node_desc *d, const char *what, nc_dim a,
                              nc_dim b) {
  char sa[96], sb[96];
  return nc_errorf(NC_E_TYPE, "%s: %s: %s vs %s", opn(d), what, nc_dim_str(g, a, sa, sizeof sa),
                   nc_dim_str(g, b, sb, sizeof sb));
}

NC_RULE(leaf) { return NC_OK; }

NC_RULE(iota) {
  if (d->ia[0] < 0 || d->ia[0] >= out->rank)
    return nc_errorf(NC_E_INVALID, "iota: axis %lld out of range for rank %d", (long long)d->ia[0], out->rank);
  if (out->dtype == NC_BOOL) return nc_errorf(NC_E_TYPE, "iota: dtype bool is not allowed");
  return NC_OK;
}

NC_RULE(unary_num) {
  NC_TRY(want_dtype(g, d, in[0], 0, is_num(in[0]->dtype), "numeric"));
  *out = *in[0];
  return NC_OK;
}

NC_RULE(unary_float) {
  NC_TRY(want_dtype(g, d, in[0], 0, nc_dtype_is_float(in[0]->dtype), "floating point"));
  *out = *in[0];
  return NC_OK;
}

NC_RULE(unary_bool) {
  NC_TRY(want_dtype(g, d, in[0], 0, in[0]->dtype == NC_BOOL, "bool"));
  *out = *in[0];
  return NC_OK;
}

NC_RULE(cast) {
  if (!nc_shape_eq(out, in[0])) return mismatch(g, d, "declared shape differs from the input's", out, in[0]);
  return NC_OK;
}

static nc_status same2(const nc_graph *g, const nc_node_desc *d, const nc_type *const *in) {
  if (!nc_type_eq(in[0], in[1])) return mismatch(g, d, "inputs must have identical types", in[0], in[1]);
  return NC_OK;
}

NC_RULE(binary_num) {
  NC_TRY(same2(g, d, in));
  NC_TRY(want_dtype(g, d, in[0], 0, is_num(in[0]->dtype), "numeric"));
  *out = *in[0];
  return NC_OK;
}

NC_RULE(binary_bool) {
  NC_TRY(same2(g, d, in));
  NC_TRY(want_dtype(g, d, in[0], 0, in[0]->dtype == NC_BOOL, "bool"));
  *out = *in[0];
  return NC_OK;
}

NC_RULE(compare) {
  NC_TRY(same2(g, d, in));
  *out = *in[0];
  out->dtype = NC_BOOL;
  return NC_OK;
}

NC_RULE(where) {
  NC_TRY(want_dtype(g, d, in[0], 0, in[0]->dtype == NC_BOOL, "bool"));
  if (!nc_type_eq(in[1], in[2])) return mismatch(g, d, "the two branches must have identical types", in[1], in[2]);
  if (!nc_shape_eq(in[0], in[1])) return mismatch(g, d, "condition and branches must have the same shape", in[0], in[1]);
  *out = *in[1];
  return NC_OK;
}

NC_RULE(reduce) {
  int64_t axes = d->ia[0];
  bool keep = d->ia[1];
  const nc_type *x = in[0];
  NC_TRY(want_dtype(g, d, x, 0, is_num(x->dtype), "numeric"));
  if (axes == 0) return nc_errorf(NC_E_INVALID, "%s: axes must name at least one axis", opn(d));
  if (axes < 0 || axes >= (INT64_C(1) << x->rank))
    return nc_errorf(NC_E_INVALID, "%s: axes include an axis beyond rank %d", opn(d), x->rank);
  if (d->op == NC_OP_REDUCE_MEAN && !nc_dtype_is_float(x->dtype))
    return want_dtype(g, d, x, 0, false, "floating point");
  memset(out, 0, sizeof *out);
  out->dtype = x->dtype;
  for (int i = 0; i < x->rank; i++) {
    if (axes & (INT64_C(1) << i)) {
      if (keep) out->dim[out->rank++] = nc_dim_const(1);
    } else {
      out->dim[out->rank++] = x->dim[i];
    }
  }
  return NC_OK;
}

NC_RULE(rms_norm) {
  NC_TRY(want_dtype(g, d, in[0], 0, nc_dtype_is_float(in[0]->dtype), "floating point"));
  NC_TRY(want_rank(g, d, in[0], 0, 1, NC_MAX_RANK));
  if (!(d->fa[0] > 0 && d->fa[0] < 1)) return nc_errorf(NC_E_INVALID, "%s: eps must be in (0, 1), got %g", opn(d), d->fa[0]);
  *out = *in[0];
  return NC_OK;
}

NC_RULE(rms_norm_grad) {
  NC_TRY(same2(g, d, in));
  return nc_rule_rms_norm(g, d, in, out);
}

NC_RULE(softmax) {
  NC_TRY(want_dtype(g, d, in[0], 0, nc_dtype_is_float(in[0]->dtype), "floating point"));
  NC_TRY(want_rank(g, d, in[0], 0, 1, NC_MAX_RANK));
  *out = *in[0];
  return NC_OK;
}

NC_RULE(rope) {
  const nc_type *x = in[0];
  NC_TRY(want_dtype(g, d, x, 0, nc_dtype_is_float(x->dtype), "floating point"));
  NC_TRY(want_rank(g, d, x, 0, 4, 4));
  nc_dim hd = x->dim[3];
  if (!nc_dim_is_const(hd) || hd.c % 2)
    return nc_errorf(NC_E_TYPE, "rope: head dim (axis 3) must be a constant even number");
  if (d->nin == 2) NC_TRY(want_scalar_i32(g, d, in[1], 1));
  if (!(d->fa[0] > 1)) return nc_errorf(NC_E_INVALID, "rope: base must be > 1, got %g", d->fa[0]);
  *out = *x;
  return NC_OK;
}

NC_RULE(matmul) {
  const nc_type *a = in[0], *b = in[1];
  bool ta = d->ia[0], tb = d->ia[1];
  if (a->dtype != b->dtype) return mismatch(g, d, "inputs must have the same dtype", a, b);
  NC_TRY(want_dtype(g, d, a, 0, nc_dtype_is_float(a->dtype), "floating point"));
  NC_TRY(want_rank(g, d, a, 0, ta ? 2 : 2, ta ? 2 : NC_MAX_RANK));
  NC_TRY(want_rank(g, d, b, 1, 2, 2));
  int r = a->rank;
  nc_dim m = ta ? a->dim[1] : a->dim[r - 2], ka = ta ? a->dim[0] : a->dim[r - 1];
  nc_dim kb = tb ? b->dim[1] : b->dim[0], n = tb ? b->dim[0] : b->dim[1];
  if (!nc_dim_eq(ka, kb)) return dim_mismatch(g, d, "contraction dims differ", ka, kb);
  *out = *a;
  out->dim[r - 2] = m;
  out->dim[r - 1] = n;
  return NC_OK;
}

NC_RULE(bmm) {
  const nc_type *a = in[0], *b = in[1];
  bool ta = d->ia[0], tb = d->ia[1];
  if (a->dtype != b->dtype) return mismatch(g, d, "inputs must have the same dtype", a, b);
  NC_TRY(want_dtype(g, d, a, 0, nc_dtype_is_float(a->dtype), "floating point"));
  NC_TRY(want_rank(g, d, a, 0, 3, NC_MAX_RANK));
  if (a->rank != b->rank) return mismatch(g, d, "inputs must have the same rank", a, b);
  int r = a->rank;
  for (int i = 0; i < r - 2; i++)
    if (!nc_dim_eq(a->dim[i], b->dim[i])) return mismatch(g, d, "batch dims differ", a, b);
  nc_dim m = ta ? a->dim[r - 1] : a->dim[r - 2], ka = ta ? a->dim[r - 2] : a->dim[r - 1];
  nc_dim kb = tb ? b->dim[r - 1] : b->dim[r - 2], n = tb ? b->dim[r - 2] : b->dim[r - 1];
  if (!nc_dim_eq(ka, kb)) return dim_mismatch(g, d, "contraction dims differ", ka, kb);
  *out = *a;
  out->dim[r - 2] = m;
  out->dim[r - 1] = n;
  return NC_OK;
}

// Shared checks of attention and attention_grad: q, k, v (and dout).
static nc_status attn_check(const nc_graph *g, const nc_node_desc *d, const nc_type *const *in,
                            int kvlen_index, int64_t window, double scale) {
  const nc_type *q = in[0], *k = in[1], *v = in[2];
  for (int i = 0; i < 3; i++) {
    NC_TRY(want_rank(g, d, in[i], i, 4, 4));
    NC_TRY(want_dtype(g, d, in[i], i, nc_dtype_is_float(in[i]->dtype), "floating point"));
  }
  if (q->dtype != k->dtype || q->dtype != v->dtype) return mismatch(g, d, "q, k, v must share a dtype", q, v);
  if (!nc_dim_eq(q->dim[0], k->dim[0]) || !nc_dim_eq(k->dim[0], v->dim[0]))
    return mismatch(g, d, "batch dims of q, k, v differ", q, v);
  if (!nc_dim_eq(k->dim[1], v->dim[1])) return mismatch(g, d, "k and v sequence lengths differ", k, v);
  if (!nc_dim_eq(k->dim[2], v->dim[2])) return mismatch(g, d, "k and v head counts differ", k, v);
  if (!nc_dim_eq(q->dim[3], k->dim[3])) return mismatch(g, d, "q and k head dims differ", q, k);
  nc_dim hq = q->dim[2], hk = k->dim[2];
  if (!nc_dim_is_const(hq) || !nc_dim_is_const(hk) || hq.c % hk.c)
    return dim_mismatch(g, d, "query heads must be a constant multiple of kv heads", hq, hk);
  if (d->nin > kvlen_index) NC_TRY(want_scalar_i32(g, d, in[kvlen_index], kvlen_index));
  if (window < 0) return nc_errorf(NC_E_INVALID, "%s: window must be >= 0 (0 = none), got %lld", opn(d), (long long)window);
  if (!(scale > 0)) return nc_errorf(NC_E_INVALID, "%s: scale must be > 0, got %g", opn(d), scale);
  return NC_OK;
}

NC_RULE(attention) {
  NC_TRY(attn_check(g, d, in, 3, d->ia[1], d->fa[0]));
  *out = *in[0];
  out->dim[3] = in[2]->dim[3];
  return NC_OK;
}

NC_RULE(attention_grad) {
  NC_TRY(attn_check(g, d, in, 4, d->ia[2], d->fa[0]));
  nc_type want = *in[0];
  want.dim[3] = in[2]->dim[3];
  if (!nc_type_eq(in[3], &want)) return mismatch(g, d, "dout must have the attention output's type", in[3], &want);
  *out = *in[d->ia[0]];
  return NC_OK;
}

NC_RULE(gather) {
  const nc_type *t = in[0], *ids = in[1];
  NC_TRY(want_rank(g, d, t, 0, 2, 2));
  NC_TRY(want_dtype(g, d, ids, 1, ids->dtype == NC_I32 || ids->dtype == NC_I64, "i32 or i64"));
  NC_TRY(want_rank(g, d, ids, 1, 0, NC_MAX_RANK - 1));
  *out = *ids;
  out->dtype = t->dtype;
  out->dim[out->rank++] = t->dim[1];
  return NC_OK;
}

NC_RULE(scatter_add) {
  const nc_type *ids = in[0], *src = in[1];
  NC_TRY(want_dtype(g, d, ids, 0, ids->dtype == NC_I32 || ids->dtype == NC_I64, "i32 or i64"));
  NC_TRY(want_rank(g, d, ids, 0, 0, NC_MAX_RANK - 1));
  if (out->rank != 2) return nc_errorf(NC_E_TYPE, "scatter_add: declared type must have rank 2 (V,C)");
  nc_type want = *ids;
  want.dtype = out->dtype;
  want.dim[want.rank++] = out->dim[1];
  if (!nc_type_eq(src, &want)) return mismatch(g, d, "src must be ids' shape + (C) in the output dtype", src, &want);
  return NC_OK;
}

static nc_status ce_check(const nc_graph *g, const nc_node_desc *d, const nc_type *const *in) {
  const nc_type *lg = in[0], *tg = in[1];
  NC_TRY(want_dtype(g, d, lg, 0, nc_dtype_is_float(lg->dtype), "floating point"));
  NC_TRY(want_rank(g, d, lg, 0, 1, NC_MAX_RANK));
  NC_TRY(want_dtype(g, d, tg, 1, tg->dtype == NC_I32 || tg->dtype == NC_I64, "i32 or i64"));
  if (tg->rank != lg->rank - 1) return mismatch(g, d, "targets must have the logits' shape without the last axis", tg, lg);
  for (int i = 0; i < tg->rank; i++)
    if (!nc_dim_eq(tg->dim[i], lg->dim[i])) return mismatch(g, d, "targets must have the logits' shape without the last axis", tg, lg);
  return NC_OK;
}

static void ce_out(const nc_type *lg, int64_t reduction, nc_type *out) {
  memset(out, 0, sizeof *out);
  out->dtype = NC_F32;
  if (reduction == 0) {
    out->rank = (uint8_t)(lg->rank - 1);
    for (int i = 0; i < out->rank; i++) out->dim[i] = lg->dim[i];
  }
}

NC_RULE(cross_entropy) {
  NC_TRY(ce_check(g, d, in));
  ce_out(in[0], d->ia[1], out);
  return NC_OK;
}

NC_RULE(cross_entropy_grad) {
  NC_TRY(ce_check(g, d, in));
  nc_type want;
  ce_out(in[0], d->ia[1], &want);
  if (!nc_type_eq(in[2], &want)) return mismatch(g, d, "dloss must have the loss's type", in[2], &want);
  *out = *in[0];
  return NC_OK;
}

NC_RULE(reshape) {
  nc_dim a, b;
  if (out->dtype != in[0]->dtype) return mismatch(g, d, "reshape keeps the dtype", out, in[0]);
  if (!nc_type_numel(in[0], &a) || !nc_type_numel(out, &b) || !nc_dim_eq(a, b))
    return mismatch(g, d, "element counts differ", in[0], out);
  return NC_OK;
}

int64_t nc_perm_encode(const int *perm, int rank) {
  uint64_t p = (uint64_t)rank << 60;
  for (int i = 0; i < rank; i++) p |= (uint64_t)(perm[i] & 15) << (4 * i);
  return (int64_t)p;
}

NC_RULE(permute) {
  const nc_type *x = in[0];
  int64_t p = d->ia[0];
  int r = nc_perm_rank(p);
  if (r != x->rank) return nc_errorf(NC_E_INVALID, "permute: perm has %d entries, input has rank %d", r, x->rank);
  if ((uint64_t)p & (((1ull << 60) - 1) & ~((r ? (1ull << (4 * r)) : 1ull) - 1)))
    return nc_errorf(NC_E_INVALID, "permute: perm has stray bits");
  unsigned seen = 0;
  *out = *x;
  for (int i = 0; i < r; i++) {
    int a = nc_perm_at(p, i);
    if (a >= r || (seen & (1u << a))) return nc_errorf(NC_E_INVALID, "permute: perm is not a permutation of 0..%d", r - 1);
    seen |= 1u << a;
    out->dim[i] = x->dim[a];
  }
  return NC_OK;
}

NC_RULE(slice) {
  const nc_type *x = in[0];
  int64_t axis = d->ia[0], s = d->ia[1], e = d->ia[2];
  if (axis < 0 || axis >= x->rank) return nc_errorf(NC_E_INVALID, "slice: axis %lld out of range for rank %d", (long long)axis, x->rank);
  nc_dim n = x->dim[axis];
  if (!nc_dim_is_const(n)) return nc_errorf(NC_E_TYPE, "slice: axis %lld is symbolic; only constant axes can be sliced", (long long)axis);
  if (s < 0 || e <= s || e > n.c)
    return nc_errorf(NC_E_INVALID, "slice: range [%lld, %lld) is empty or outside [0, %lld)", (long long)s, (long long)e, (long long)n.c);
  *out = *x;
  out->dim[axis] = nc_dim_const(e - s);
  return NC_OK;
}

NC_RULE(concat) {
  const nc_type *x = in[0];
  int64_t axis = d->ia[0];
  if (axis < 0 || axis >= x->rank) return nc_errorf(NC_E_INVALID, "concat: axis %lld out of range for rank %d", (long long)axis, x->rank);
  *out = *x;
  int64_t total = 0;
  for (int k = 0; k < d->nin; k++) {
    const nc_type *y = in[k];
    if (y->dtype != x->dtype || y->rank != x->rank) return mismatch(g, d, "inputs must share dtype and rank", x, y);
    for (int i = 0; i < x->rank; i++)
      if (i != axis && !nc_dim_eq(x->dim[i], y->dim[i])) return mismatch(g, d, "inputs differ outside the concat axis", x, y);
    if (!nc_dim_is_const(y->dim[axis])) return nc_errorf(NC_E_TYPE, "concat: the concat axis must be constant in every input");
    total += y->dim[axis].c;
  }
  out->dim[axis] = nc_dim_const(total);
  return NC_OK;
}

NC_RULE(expand) {
  const nc_type *x = in[0];
  if (out->dtype != x->dtype) return mismatch(g, d, "expand keeps the dtype", out, x);
  if (x->rank > out->rank) return mismatch(g, d, "expand cannot lower the rank", x, out);
  int off = out->rank - x->rank;
  for (int i = 0; i < x->rank; i++) {
    nc_dim a = x->dim[i], b = out->dim[off + i];
    if (!nc_dim_eq(a, b) && !(a.c == 1 && a.e == 0))
      return mismatch(g, d, "each input dim must equal the output's or be 1 (right-aligned)", x, out);
  }
  return NC_OK;
}

NC_RULE(shift) {
  const nc_type *x = in[0];
  int64_t axis = d->ia[0];
  if (axis < 0 || axis >= x->rank) return nc_errorf(NC_E_INVALID, "shift: axis %lld out of range for rank %d", (long long)axis, x->rank);
  if (d->ia[1] < -NC_MAX_DIM || d->ia[1] > NC_MAX_DIM) return nc_errorf(NC_E_INVALID, "shift: amount %lld is absurd", (long long)d->ia[1]);
  *out = *x;
  return NC_OK;
}
