// decompose: rewrites the ops that have no loop-nest lowering (rms_norm,
// softmax, log_softmax, rope, attention, cross_entropy and their gradients)
// into primitive elementwise, reduction, layout and bmm ops, with the same
// semantics as the reference interpreter. Fusion then rebuilds efficient
// kernels from the primitives; named fusion patterns replace the hot ones.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir/build.h"
#include "ir/rules.h"
#include "passes/pass.h"

typedef struct {
  nc_graph *g;  // the new graph
} nc_dc;

static nc_id add(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_ADD, a, b); }
static nc_id sub(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_SUB, a, b); }
static nc_id mul(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_MUL, a, b); }
static nc_id dvd(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_DIV, a, b); }
static int64_t last_axis(nc_graph *g, nc_id x) { return INT64_C(1) << (nc_type_of(g, x).rank - 1); }
// reduce over the last axis keeping it, broadcast back to x's shape
static nc_id rlast(nc_graph *g, nc_op op, nc_id x) {
  return nc_b_expand_like(g, nc_b_reduce(g, op, x, last_axis(g, x), true), x);
}
static nc_id iota_like(nc_graph *g, nc_type t, int axis, nc_dtype dt) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_IOTA);
  t.dtype = dt;
  d.type = t;
  d.ia[0] = axis;
  return nc_build(g, &d);
}
static nc_id cast(nc_graph *g, nc_id x, nc_dtype dt) { return nc_b_cast(g, x, dt); }

// y = x * rsqrt(mean(x^2) + eps)
static nc_id dc_rms_norm(nc_graph *g, nc_id x, double eps, nc_id *r_out) {
  nc_id ms = nc_b_reduce(g, NC_OP_REDUCE_MEAN, nc_op1(g, NC_OP_SQUARE, x), last_axis(g, x), true);
  nc_id r = nc_b_expand_like(g, nc_op1(g, NC_OP_RSQRT, add(g, ms, nc_b_const_like(g, ms, eps))), x);
  if (r_out) *r_out = r;
  return mul(g, x, r);
}

static nc_id dc_softmax(nc_graph *g, nc_id x, bool log) {
  nc_id z = sub(g, x, rlast(g, NC_OP_REDUCE_MAX, x));
  nc_id e = nc_op1(g, NC_OP_EXP, z);
  nc_id s = rlast(g, NC_OP_REDUCE_SUM, e);
  return log ? sub(g, z, nc_op1(g, NC_OP_LOG, s)) : dvd(g, e, s);
}

static nc_id dc_rope(nc_graph *g, nc_id x, nc_id pos0, double base, bool inverse) {
  nc_type t = nc_type_of(g, x);  // (B,T,H,D)
  int64_t D = t.dim[3].c, half = D / 2;
  nc_id x1 = nc_b_slice(g, x, 3, 0, half), x2 = nc_b_slice(g, x, 3, half, D);
  // The tables are (T, D/2), broadcast over batch and heads, so cos/sin are
  // computed once per position and frequency: angle = (t + pos0) * base^(-2j/D),
  // in f32 as nanochat computes its tables.
  nc_dim td[2] = {t.dim[1], nc_dim_const(half)};
  nc_type tt = nc_type_make(NC_F32, 2, td);
  nc_id pos = iota_like(g, tt, 0, NC_F32);
  if (pos0 != NC_NONE) pos = add(g, pos, nc_b_expand(g, cast(g, pos0, NC_F32), tt));
  nc_id j = iota_like(g, tt, 1, NC_F32);
  nc_id inv_freq = nc_op1(g, NC_OP_EXP, nc_b_scale(g, j, -2.0 * log(base) / (double)D));
  nc_id ang = mul(g, pos, inv_freq);
  nc_dim t3[3] = {t.dim[1], nc_dim_const(1), nc_dim_const(half)};
  nc_type ht = t;
  ht.dim[3] = nc_dim_const(half);
  nc_id c = nc_b_expand(g, nc_b_reshape_dims(g, cast(g, nc_op1(g, NC_OP_COS, ang), t.dtype), 3, t3), ht);
  nc_id s = nc_b_expand(g, nc_b_reshape_dims(g, cast(g, nc_op1(g, NC_OP_SIN, ang), t.dtype), 3, t3), ht);
  if (inverse) s = nc_op1(g, NC_OP_NEG, s);
  nc_id y1 = add(g, mul(g, x1, c), mul(g, x2, s));
  nc_id y2 = sub(g, mul(g, x2, c), mul(g, x1, s));
  nc_id parts[2] = {y1, y2};
  return nc_b_concat(g, parts, 2, 3);
}

// The pieces of attention shared by forward and backward, in (B,H,T,D) layout.
typedef struct {
  nc_id qh, kh, vh;  // (B,Hq,Tq,D), (B,Hq,Tk,D), (B,Hq,Tk,Dv) (kv repeated for GQA)
  nc_id p;           // softmax probabilities (B,Hq,Tq,Tk)
  int64_t G;         // query heads per kv head
  nc_type kt, vt;    // k, v input types
} nc_attn;

// (B,T,H,D) -> (B,H,T,D), then kv heads repeated G times: (B,Hkv*G,T,D)
static nc_id heads_first(nc_graph *g, nc_id x, int64_t G) {
  static const int p[4] = {0, 2, 1, 3};
  nc_id y = nc_b_permute(g, x, p, 4);
  if (G == 1) return y;
  nc_type t = nc_type_of(g, y);  // (B,Hkv,T,D)
  nc_dim d5[5] = {t.dim[0], t.dim[1], nc_dim_const(1), t.dim[2], t.dim[3]};
  nc_dim e5[5] = {t.dim[0], t.dim[1], nc_dim_const(G), t.dim[2], t.dim[3]};
  nc_dim d4[4] = {t.dim[0], nc_dim_const(t.dim[1].c * G), t.dim[2], t.dim[3]};
  nc_id r = nc_b_reshape_dims(g, y, 5, d5);
  r = nc_b_expand(g, r, nc_type_make(t.dtype, 5, e5));
  return nc_b_reshape_dims(g, r, 4, d4);
}

// Sums the G query heads that share a kv head: (B,Hkv*G,T,D) -> (B,T,Hkv,D)
static nc_id heads_back(nc_graph *g, nc_id y, int64_t G) {
  static const int p[4] = {0, 2, 1, 3};
  if (G > 1) {
    nc_type t = nc_type_of(g, y);
    nc_dim d5[5] = {t.dim[0], nc_dim_const(t.dim[1].c / G), nc_dim_const(G), t.dim[2], t.dim[3]};
    y = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_b_reshape_dims(g, y, 5, d5), 4, false);
  }
  return nc_b_permute(g, y, p, 4);
}

static void dc_attn_core(nc_graph *g, const nc_node *nd, const nc_id *in, nc_id kvlen, nc_attn *a, bool causal,
                         int64_t window, double scale) {
  nc_type qt = nc_type_of(g, in[0]);
  a->kt = nc_type_of(g, in[1]);
  a->vt = nc_type_of(g, in[2]);
  a->G = qt.dim[2].c / a->kt.dim[2].c;
  a->qh = heads_first(g, in[0], 1);
  a->kh = heads_first(g, in[1], a->G);
  a->vh = heads_first(g, in[2], a->G);
  nc_id s = nc_b_scale(g, nc_b_bmm(g, a->qh, a->kh, false, true), scale);  // (B,H,Tq,Tk)
  nc_type st = nc_type_of(g, s);
  // mask: key j valid if j < kvlen, and (causal) j <= p, and (window) j > p - window,
  // with the query's position p = kvlen - Tq + i
  nc_id i = iota_like(g, st, 2, NC_I32), j = iota_like(g, st, 3, NC_I32);
  nc_id len = kvlen != NC_NONE ? nc_b_expand(g, kvlen, nc_type_of(g, i)) : NC_NONE;
  nc_id tq = nc_dim_is_const(st.dim[2]) ? nc_const(g, (double)st.dim[2].c, nc_type_of(g, i)) : NC_NONE;
  if (tq == NC_NONE) {  // symbolic Tq: count it with a reduction over an iota of ones
    nc_id ones = nc_b_const_like(g, i, 1);
    tq = nc_b_expand_like(g, nc_b_reduce(g, NC_OP_REDUCE_SUM, ones, 4, true), i);
  }
  nc_id tk = nc_dim_is_const(st.dim[3]) ? nc_const(g, (double)st.dim[3].c, nc_type_of(g, i)) : NC_NONE;
  if (tk == NC_NONE) tk = nc_b_expand_like(g, nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_b_const_like(g, j, 1), 8, true), j);
  if (len == NC_NONE) len = tk;
  nc_id pos = add(g, sub(g, len, tq), i);
  nc_id valid = nc_op2(g, NC_OP_LT, j, len);
  if (causal) valid = nc_op2(g, NC_OP_AND, valid, nc_op2(g, NC_OP_LE, j, pos));
  if (window > 0) valid = nc_op2(g, NC_OP_AND, valid, nc_op2(g, NC_OP_GT, j, sub(g, pos, nc_b_const_like(g, pos, (double)window))));
  s = nc_op3(g, NC_OP_WHERE, valid, s, nc_b_const_like(g, s, -INFINITY));
  a->p = dc_softmax(g, s, false);
  (void)nd;
}

static nc_id dc_attention(nc_graph *g, const nc_node *nd, const nc_id *in) {
  nc_attn a;
  dc_attn_core(g, nd, in, nd->nin > 3 ? in[3] : NC_NONE, &a, nd->ia[0], nd->ia[1], nd->fa[0]);
  return heads_back(g, nc_b_bmm(g, a.p, a.vh, false, false), 1);
}

static nc_id dc_attention_grad(nc_graph *g, const nc_node *nd, const nc_id *in) {
  int wrt = (int)nd->ia[0];
  double scale = nd->fa[0];
  nc_attn a;
  dc_attn_core(g, nd, in, nd->nin > 4 ? in[4] : NC_NONE, &a, nd->ia[1], nd->ia[2], scale);
  nc_id doh = heads_first(g, in[3], 1);  // (B,H,Tq,Dv)
  if (wrt == 2) return heads_back(g, nc_b_bmm(g, a.p, doh, true, false), a.G);  // dv = p^T do
  nc_id dp = nc_b_bmm(g, doh, a.vh, false, true);                               // (B,H,Tq,Tk)
  nc_id ds = nc_b_scale(g, mul(g, a.p, sub(g, dp, rlast(g, NC_OP_REDUCE_SUM, mul(g, dp, a.p)))), scale);
  if (wrt == 0) return heads_back(g, nc_b_bmm(g, ds, a.kh, false, false), 1);    // dq = ds k
  return heads_back(g, nc_b_bmm(g, ds, a.qh, true, false), a.G);                 // dk = ds^T q
}

// Per-position cross-entropy pieces: x = f32 logits (...,V), valid mask (...).
static nc_id dc_onehot(nc_graph *g, nc_id x, nc_id targets) {
  nc_type xt = nc_type_of(g, x);
  nc_id iv = iota_like(g, xt, xt.rank - 1, nc_type_of(g, targets).dtype);
  nc_type tt = nc_type_of(g, targets), kt = tt;
  kt.dim[kt.rank++] = nc_dim_const(1);
  nc_id te = nc_b_expand(g, nc_b_reshape(g, targets, kt), nc_type_of(g, iv));
  return nc_op2(g, NC_OP_EQ, iv, te);
}

static nc_id dc_valid(nc_graph *g, nc_id targets, int64_t ignore) {
  return nc_op2(g, NC_OP_NE, targets, nc_b_const_like(g, targets, (double)ignore));
}

// count of valid positions, at least 1 (a mean over none is 0), as an f32 scalar
static nc_id dc_count(nc_graph *g, nc_id valid) {
  nc_type t = nc_type_of(g, valid);
  nc_id f = cast(g, valid, NC_F32);
  nc_id c = t.rank ? nc_b_reduce(g, NC_OP_REDUCE_SUM, f, (INT64_C(1) << t.rank) - 1, false) : f;
  return nc_op2(g, NC_OP_MAX, c, nc_b_const_like(g, c, 1.0));
}

// With the cross-entropy pattern on: per-row losses stay one op (reduction
// none, lowered as a row kernel); sum/mean are taken here.
static nc_id dc_cross_entropy_rows(nc_graph *g, const nc_node *nd, const nc_id *in) {
  int64_t ignore = nd->ia[0];
  int red = (int)nd->ia[1];
  nc_id l = nc_b_cross_entropy(g, in[0], in[1], ignore, 0);
  if (red == 0) return l;
  nc_type lt = nc_type_of(g, l);
  nc_id sum = lt.rank ? nc_b_reduce(g, NC_OP_REDUCE_SUM, l, (INT64_C(1) << lt.rank) - 1, false) : l;
  return red == 1 ? sum : dvd(g, sum, dc_count(g, dc_valid(g, in[1], ignore)));
}

static nc_id dc_cross_entropy_grad_rows(nc_graph *g, const nc_node *nd, const nc_id *in) {
  int64_t ignore = nd->ia[0];
  int red = (int)nd->ia[1];
  nc_id dl = in[2];
  if (red != 0) {  // a scalar: per row, divided by the count for mean
    nc_id s = red == 2 ? dvd(g, dl, dc_count(g, dc_valid(g, in[1], ignore))) : dl;
    nc_type tt = nc_type_of(g, in[1]);
    tt.dtype = NC_F32;
    dl = nc_b_expand(g, s, tt);
  }
  return nc_b_cross_entropy_grad(g, in[0], in[1], dl, ignore, 0);
}

static nc_id dc_cross_entropy(nc_graph *g, const nc_node *nd, const nc_id *in) {
  nc_id x = cast(g, in[0], NC_F32), targets = in[1];
  int64_t ignore = nd->ia[0];
  int red = (int)nd->ia[1];
  nc_id m = rlast(g, NC_OP_REDUCE_MAX, x);
  nc_id lse = add(g, nc_b_reduce(g, NC_OP_REDUCE_MAX, x, last_axis(g, x), false),
                  nc_op1(g, NC_OP_LOG, nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op1(g, NC_OP_EXP, sub(g, x, m)), last_axis(g, x), false)));
  nc_id picked = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op3(g, NC_OP_WHERE, dc_onehot(g, x, targets), x, nc_b_const_like(g, x, 0)),
                             last_axis(g, x), false);
  nc_id valid = dc_valid(g, targets, ignore);
  nc_id l = nc_op3(g, NC_OP_WHERE, valid, sub(g, lse, picked), nc_b_const_like(g, lse, 0));
  if (red == 0) return l;
  nc_type lt = nc_type_of(g, l);
  nc_id sum = lt.rank ? nc_b_reduce(g, NC_OP_REDUCE_SUM, l, (INT64_C(1) << lt.rank) - 1, false) : l;
  return red == 1 ? sum : dvd(g, sum, dc_count(g, valid));
}

static nc_id dc_cross_entropy_grad(nc_graph *g, const nc_node *nd, const nc_id *in) {
  nc_id x = cast(g, in[0], NC_F32), targets = in[1], dloss = in[2];
  int64_t ignore = nd->ia[0];
  int red = (int)nd->ia[1];
  nc_id p = dc_softmax(g, x, false);
  nc_id d = sub(g, p, cast(g, dc_onehot(g, x, targets), NC_F32));
  nc_id valid = dc_valid(g, targets, ignore);
  nc_type tt = nc_type_of(g, targets), kt = tt;
  kt.dim[kt.rank++] = nc_dim_const(1);
  nc_id vmask = nc_b_expand_like(g, nc_b_reshape(g, cast(g, valid, NC_F32), kt), x);
  nc_id scale;
  if (red == 0) {
    kt.dtype = NC_F32;
    scale = nc_b_expand_like(g, nc_b_reshape(g, dloss, kt), x);
  } else {
    nc_id s = red == 2 ? dvd(g, dloss, dc_count(g, valid)) : dloss;
    scale = nc_b_expand_like(g, s, x);
  }
  return cast(g, mul(g, mul(g, d, vmask), scale), nc_type_of(g, in[0]).dtype);
}

static nc_id dc_rms_norm_grad(nc_graph *g, nc_id x, nc_id dy, double eps) {
  nc_id r;
  nc_id y = dc_rms_norm(g, x, eps, &r);
  nc_id m = rlast(g, NC_OP_REDUCE_MEAN, mul(g, dy, y));
  return mul(g, r, sub(g, dy, mul(g, y, m)));
}

// Ops decomposed here compute in f32 when their inputs are bf16/f16: the
// inputs are widened, the decomposition runs in f32 and its result is
// rounded once to the node's dtype, as the interpreter does (double math,
// one rounding per node). True when node nd is such a case.
static bool dc_half(const nc_graph *g, const nc_node *nd, const nc_id *in) {
  switch (nd->op) {
    case NC_OP_RMS_NORM: case NC_OP_RMS_NORM_GRAD: case NC_OP_SOFTMAX: case NC_OP_LOG_SOFTMAX: case NC_OP_ROPE:
    case NC_OP_ATTENTION: case NC_OP_ATTENTION_GRAD: case NC_OP_CROSS_ENTROPY: case NC_OP_CROSS_ENTROPY_GRAD: break;
    default: return false;
  }
  for (int q = 0; q < nd->nin; q++) {
    nc_dtype t = nc_type_of(g, in[q]).dtype;
    if (t == NC_BF16 || t == NC_F16) return true;
  }
  return false;
}

// NC_PATTERN_FLASH_ATTENTION's shapes: no kvlen, rank-4 q/k/v with constant head
// counts (Hq % Hkv == 0) and head dims <= 128 (the template's limit).
static bool dc_flash_shape(const nc_graph *g, const nc_node *nd, const nc_id *in) {
  if (nd->nin != (nd->op == NC_OP_ATTENTION ? 3 : 4)) return false;
  nc_type qt = nc_type_of(g, in[0]), kt = nc_type_of(g, in[1]), vt = nc_type_of(g, in[2]);
  if (qt.rank != 4 || kt.rank != 4 || vt.rank != 4) return false;
  for (int d = 2; d < 4; d++)
    if (!nc_dim_is_const(qt.dim[d]) || !nc_dim_is_const(kt.dim[d]) || !nc_dim_is_const(vt.dim[d])) return false;
  return kt.dim[2].c > 0 && qt.dim[2].c % kt.dim[2].c == 0 && qt.dim[3].c <= 128 && vt.dim[3].c <= 128;
}

nc_status nc_pass_decompose(nc_graph **gp, nc_pass_ctx *ctx) {
  const nc_graph *src = *gp;
  uint32_t n = nc_graph_nnodes(src);
  nc_id *map = malloc((n ? n : 1) * sizeof *map);
  nc_graph *g = nc_graph_new_like(src);
  if (!map || !g) {
    free(map);
    nc_graph_free(g);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  nc_status st = NC_OK;
  bool ce_rows = ctx && !(ctx->patterns_off & NC_PATTERN_CROSS_ENTROPY);
  bool attn = ctx && !(ctx->patterns_off & NC_PATTERN_ATTENTION);
  bool force_attn = ctx && (ctx->patterns_force & NC_PATTERN_ATTENTION);
  bool flash = attn && (ctx->patterns_force & NC_PATTERN_FLASH_ATTENTION) && !(ctx->patterns_off & NC_PATTERN_FLASH_ATTENTION);
  bool bf16_gemm = !ctx || !(ctx->patterns_off & NC_PATTERN_BF16_GEMM);
  for (nc_id i = 0; i < n && !st; i++) {
    const nc_node *nd = nc_graph_node(src, i);
    nc_id in[NC_MAX_INPUTS];
    for (int q = 0; q < nd->nin; q++) in[q] = map[nc_graph_input_of(src, i, q)];
    bool half = dc_half(g, nd, in);
    if (half)
      for (int q = 0; q < nd->nin; q++)
        if (nc_dtype_is_float(nc_type_of(g, in[q]).dtype)) in[q] = cast(g, in[q], NC_F32);
    nc_id r;
    switch (nd->op) {
      case NC_OP_RMS_NORM: r = dc_rms_norm(g, in[0], nd->fa[0], NULL); break;
      case NC_OP_RMS_NORM_GRAD: r = dc_rms_norm_grad(g, in[0], in[1], nd->fa[0]); break;
      case NC_OP_SOFTMAX: r = dc_softmax(g, in[0], false); break;
      case NC_OP_LOG_SOFTMAX: r = dc_softmax(g, in[0], true); break;
      case NC_OP_ROPE: r = dc_rope(g, in[0], nd->nin > 1 ? in[1] : NC_NONE, nd->fa[0], nd->ia[0]); break;
      case NC_OP_ATTENTION:
      case NC_OP_ATTENTION_GRAD:
        if (attn && (force_attn || (flash && dc_flash_shape(g, nd, in)) ||
                     (nc_dim_is_const(nc_type_of(g, in[0]).dim[1]) && nc_type_of(g, in[0]).dim[1].c <= NC_ATTN_LOOP_MAX_TQ)) &&
            (half || nd->type.dtype == NC_F32) && nc_type_of(g, in[0]).dtype == NC_F32 && nc_type_of(g, in[1]).dtype == NC_F32 &&
            nc_type_of(g, in[2]).dtype == NC_F32 && (nd->op == NC_OP_ATTENTION || nc_type_of(g, in[3]).dtype == NC_F32)) {
          nc_node_desc d;  // kept for the online-softmax loop nests (NC_PATTERN_ATTENTION)
          nc_node_desc_from(src, i, &d);
          memcpy(d.in, in, sizeof(nc_id) * (size_t)d.nin);
          if (half) d.type.dtype = NC_F32;
          r = nc_build(g, &d);
        } else {
          r = nd->op == NC_OP_ATTENTION ? dc_attention(g, nd, in) : dc_attention_grad(g, nd, in);
        }
        break;
      case NC_OP_CROSS_ENTROPY:
        r = ce_rows ? dc_cross_entropy_rows(g, nd, in) : dc_cross_entropy(g, nd, in);
        break;
      case NC_OP_CROSS_ENTROPY_GRAD:
        r = ce_rows ? dc_cross_entropy_grad_rows(g, nd, in) : dc_cross_entropy_grad(g, nd, in);
        break;
      case NC_OP_MATMUL:
      case NC_OP_BMM:
        if (!bf16_gemm && nd->type.dtype == NC_BF16) {
          r = nd->op == NC_OP_MATMUL ? nc_b_matmul(g, cast(g, in[0], NC_F32), cast(g, in[1], NC_F32), nd->ia[0], nd->ia[1])
                                     : nc_b_bmm(g, cast(g, in[0], NC_F32), cast(g, in[1], NC_F32), nd->ia[0], nd->ia[1]);
          r = cast(g, r, NC_BF16);
          break;
        }
        goto keep;
      case NC_OP_SCATTER_ADD:
        if (nd->type.dtype == NC_BF16 || nd->type.dtype == NC_F16) {
          // a half-precision sum accumulates in f32 and rounds once (the interpreter's semantics)
          nc_type t = nd->type;
          t.dtype = NC_F32;
          r = cast(g, nc_b_scatter_add(g, in[0], cast(g, in[1], NC_F32), t), nd->type.dtype);
          break;
        }
        // fallthrough
      default:
      keep: {
        nc_node_desc d;
        nc_node_desc_from(src, i, &d);
        memcpy(d.in, in, sizeof(nc_id) * (size_t)d.nin);
        r = nc_build(g, &d);
      }
    }
    if (half) r = cast(g, r, nd->type.dtype);
    if ((st = nc_graph_take_error(g))) st = nc_status_prefix(st, "decomposing node %%%u (%s): ", i, nc_op_get(nd->op)->name);
    else if (!nc_type_eq(&nc_graph_node(g, r)->type, &nd->type))
      st = nc_errorf(NC_E_INTERNAL, "decompose: node %%%u (%s) changed type", i, nc_op_get(nd->op)->name);
    map[i] = r;
  }
  for (int k = 0; k < nc_graph_noutputs(src) && !st; k++)
    st = nc_graph_set_output(g, nc_graph_output_name(src, k), map[nc_graph_output(src, k)]);
  free(map);
  if (st) {
    nc_graph_free(g);
    return st;
  }
  nc_graph_free(*gp);
  *gp = g;
  (void)ctx;
  return NC_OK;
}
