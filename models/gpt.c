// The nanochat GPT as a graph. docs/model.md describes it step by step.
#include "models/gpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/build.h"

const char *nc_param_group_name(nc_param_group g) {
  static const char *const n[NC_GROUP_COUNT] = {"lm_head", "wte", "value_embeds", "resid_lambdas",
                                                "x0_lambdas", "scalars", "muon"};
  return (unsigned)g < NC_GROUP_COUNT ? n[g] : "?";
}

typedef struct {
  nc_param_desc *v;
  int n, cap;
  bool oom;
} nc_plist;

static nc_param_desc *nc_plist_add(nc_plist *l, const char *name, int rank, int64_t d0, int64_t d1,
                                   nc_param_group group) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 32;
    nc_param_desc *p = realloc(l->v, (size_t)cap * sizeof *p);
    if (!p) {
      l->oom = true;
      return NULL;
    }
    l->v = p;
    l->cap = cap;
  }
  nc_param_desc *d = &l->v[l->n++];
  memset(d, 0, sizeof *d);
  snprintf(d->name, sizeof d->name, "%s", name);
  d->rank = rank;
  d->shape[0] = d0;
  d->shape[1] = d1;
  d->group = group;
  return d;
}

static void nc_init_set(nc_param_desc *d, nc_init_kind k, double a, double b) {
  if (!d) return;
  d->init = k;
  d->a = a;
  d->b = b;
}

// nanochat October 2025: std = 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in)).
static void nc_init_linear_2025(nc_param_desc *d) {
  if (!d) return;
  double out = (double)d->shape[0], in = (double)d->shape[1];
  nc_init_set(d, NC_INIT_NORMAL, 1.0 / sqrt(in) * fmin(1.0, sqrt(out / in)), 0);
}

nc_status nc_gpt_params(const nc_model_spec *s, nc_param_desc **out, int *n) {
  nc_plist l = {0};
  int64_t C = s->model_dim, V = s->vocab_size, L = s->depth;
  int64_t qd = (int64_t)s->n_head * s->head_dim, kvd = (int64_t)s->n_kv_head * s->head_dim;
  bool head = !strcmp(s->init, "head");
  double ub = sqrt(3.0) / sqrt((double)C);  // HEAD: uniform bound for C-fan-in matrices
  char name[96];
  nc_param_desc *d = nc_plist_add(&l, "transformer.wte.weight", 2, V, C, NC_GROUP_WTE);
  nc_init_set(d, NC_INIT_NORMAL, head ? 0.8 : 1.0, 0);
  if (s->smear) {
    nc_init_set(nc_plist_add(&l, "smear_gate.weight", 2, 1, 24, NC_GROUP_SMEAR_BACKOUT), NC_INIT_UNIFORM, 0.0, 0.02);
    nc_init_set(nc_plist_add(&l, "smear_lambda", 1, 1, 0, NC_GROUP_SMEAR_BACKOUT), NC_INIT_CONST, 0.0, 0);
  }
  for (int64_t i = 0; i < L; i++) {
    static const char *const qkv[3] = {"c_q", "c_k", "c_v"};
    for (int k = 0; k < 3; k++) {
      snprintf(name, sizeof name, "transformer.h.%lld.attn.%s.weight", (long long)i, qkv[k]);
      d = nc_plist_add(&l, name, 2, k == 0 ? qd : kvd, C, NC_GROUP_MUON);
      if (head) nc_init_set(d, NC_INIT_UNIFORM, -ub, ub);
      else nc_init_linear_2025(d);
    }
    snprintf(name, sizeof name, "transformer.h.%lld.attn.c_proj.weight", (long long)i);
    nc_init_set(nc_plist_add(&l, name, 2, C, qd, NC_GROUP_MUON), NC_INIT_ZEROS, 0, 0);
    if (nc_spec_has_ve(s, (int)i)) {
      snprintf(name, sizeof name, "transformer.h.%lld.attn.ve_gate.weight", (long long)i);
      nc_init_set(nc_plist_add(&l, name, 2, s->n_kv_head, 12, NC_GROUP_MUON), NC_INIT_UNIFORM, 0.0, 0.02);
    }
    snprintf(name, sizeof name, "transformer.h.%lld.mlp.c_fc.weight", (long long)i);
    d = nc_plist_add(&l, name, 2, 4 * C, C, NC_GROUP_MUON);
    if (head) nc_init_set(d, NC_INIT_UNIFORM, -0.4 * ub, 0.4 * ub);
    else nc_init_linear_2025(d);
    snprintf(name, sizeof name, "transformer.h.%lld.mlp.c_proj.weight", (long long)i);
    nc_init_set(nc_plist_add(&l, name, 2, C, 4 * C, NC_GROUP_MUON), NC_INIT_ZEROS, 0, 0);
  }
  d = nc_plist_add(&l, "lm_head.weight", 2, V, C, NC_GROUP_LM_HEAD);
  if (head) nc_init_set(d, NC_INIT_NORMAL, 0.001, 0);
  else nc_init_set(d, NC_INIT_ZEROS, 0, 0);
  for (int64_t i = 0; i < L && s->value_embeds; i++) {
    if (!nc_spec_has_ve(s, (int)i)) continue;
    snprintf(name, sizeof name, "value_embeds.%lld.weight", (long long)i);
    nc_init_set(nc_plist_add(&l, name, 2, V, kvd, NC_GROUP_VALUE_EMBEDS), NC_INIT_UNIFORM, -ub, ub);
  }
  if (s->resid_lambdas) {
    nc_init_set(nc_plist_add(&l, "resid_lambdas", 1, L, 0, NC_GROUP_RESID_LAMBDAS), NC_INIT_LINSPACE, 1.15, L > 1 ? 1.05 : 1.15);
    nc_init_set(nc_plist_add(&l, "x0_lambdas", 1, L, 0, NC_GROUP_X0_LAMBDAS), NC_INIT_LINSPACE, 0.20, L > 1 ? 0.05 : 0.20);
  }
  if (s->backout) nc_init_set(nc_plist_add(&l, "backout_lambda", 1, 1, 0, NC_GROUP_SMEAR_BACKOUT), NC_INIT_CONST, 0.2, 0);
  if (l.oom) {
    free(l.v);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  *out = l.v;
  *n = l.n;
  return NC_OK;
}

// ---- the forward graph -------------------------------------------------------------
typedef struct {
  nc_graph *g;
  const nc_model_spec *s;
  nc_dim B, T;
  // inference graphs (nc_gpt_build_infer); mode NC_GPT_FORWARD for nc_gpt_build
  int mode;
  bool gemv;             // linear layers as reductions (NC_GPT_DECODE_GEMV)
  nc_dim Tc;             // decode: the cache length symbol
  nc_id rope_cos, rope_sin;  // decode: (B,1,1,D/2)
  nc_id *kout, *vout;    // per layer: the new keys/values
  bool bf16;             // mixed precision (spec precision "bf16"): activations and matmuls in bf16
} nc_gb;

// Mixed precision (nanochat's COMPUTE_DTYPE = bf16, docs/model.md): an
// activation in the compute dtype, and back to f32 (norms, rope, attention,
// logits and the loss stay f32; the weights are f32 master copies cast at use).
static nc_id nc_gb_act(nc_gb *b, nc_id x) { return b->bf16 ? nc_b_cast(b->g, x, NC_BF16) : x; }
static nc_id nc_gb_f32(nc_gb *b, nc_id x) { return b->bf16 ? nc_b_cast(b->g, x, NC_F32) : x; }

#define NC_GPT_FORWARD (-1)

static nc_id nc_gb_param(nc_gb *b, const nc_param_desc *d) {
  nc_dim dims[2] = {nc_dim_const(d->shape[0]), nc_dim_const(d->shape[1])};
  return nc_leaf(b->g, NC_OP_PARAM, d->name, nc_type_make(NC_F32, d->rank, dims));
}

static nc_id nc_gb_param_named(nc_gb *b, const nc_param_desc *ps, int np, const char *name) {
  for (int i = 0; i < np; i++)
    if (!strcmp(ps[i].name, name)) return nc_gb_param(b, &ps[i]);
  return NC_NONE;
}

// x (B,T,in) @ W^T with W (out,in) -> (B,T,out): nanochat's bias-free Linear.
static nc_id nc_gb_linear(nc_gb *b, nc_id x, nc_id w) {
  x = nc_gb_act(b, x), w = nc_gb_act(b, w);  // bf16: operands in bf16, the product rounded once (fp32 accumulation)
  if (!b->gemv) return nc_b_matmul(b->g, x, w, false, true);
  // decode of few rows: y[b,o] = sum_c x[b,c] w[o,c] as a reduction over
  // (O,B,C) with O outermost (a GEMV loop nest: no GEMM packing of the weights)
  nc_graph *g = b->g;
  if (x == NC_NONE || w == NC_NONE) return NC_NONE;
  nc_type tx = nc_type_of(g, x), tw = nc_type_of(g, w);
  nc_dim in = tx.dim[tx.rank - 1], out = tw.dim[0];
  nc_dim d2[2] = {b->B, in}, d3[3] = {out, b->B, in}, dw[3] = {out, nc_dim_const(1), in};
  nc_type t3 = nc_type_make(tx.dtype, 3, d3);
  nc_id xe = nc_b_expand(g, nc_b_reshape_dims(g, x, 2, d2), t3);
  nc_id we = nc_b_expand(g, nc_b_reshape_dims(g, w, 3, dw), t3);
  nc_id y = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op2(g, NC_OP_MUL, xe, we), 1 << 2, false);  // (O,B)
  static const int tr[2] = {1, 0};
  y = nc_b_permute(g, y, tr, 2);  // (B,O)
  tx.dim[tx.rank - 1] = out;
  return nc_b_reshape(g, y, tx);
}

// A scalar param element k of a rank-1 param, broadcast to like's type.
static nc_id nc_gb_scalar_of(nc_gb *b, nc_id vec, int64_t k, nc_id like) {
  nc_id s = nc_b_reshape_dims(b->g, nc_b_slice(b->g, vec, 0, k, k + 1), 0, NULL);
  if (like != NC_NONE) s = nc_b_cast(b->g, s, nc_type_of(b->g, like).dtype);  // bf16 activations: the scalar in bf16
  return nc_b_expand_like(b->g, s, like);
}

// bf16: the norm computes in f32 and rounds its output to bf16 (F.rms_norm on bf16).
static nc_id nc_gb_norm(nc_gb *b, nc_id x) { return nc_gb_act(b, nc_b_rms_norm(b->g, nc_gb_f32(b, x), NC_RMS_EPS_F32)); }

// (B,T,H*D) -> (B,T,H,D)
static nc_id nc_gb_heads(nc_gb *b, nc_id x, int h) {
  nc_dim d[4] = {b->B, b->T, nc_dim_const(h), nc_dim_const(b->s->head_dim)};
  return nc_b_reshape_dims(b->g, x, 4, d);
}

// Decode: rope with per-row angles from the inputs rope_cos/rope_sin (B,1,1,D/2)
// (each row sits at its own position). x (B,1,H,D), half-split pairs.
static nc_id nc_gb_rope_table(nc_gb *b, nc_id x) {
  nc_graph *g = b->g;
  int64_t half = b->s->head_dim / 2;
  nc_id x1 = nc_b_slice(g, x, 3, 0, half), x2 = nc_b_slice(g, x, 3, half, 2 * half);
  nc_id c = nc_b_expand_like(g, b->rope_cos, x1), sn = nc_b_expand_like(g, b->rope_sin, x1);
  nc_id y1 = nc_op2(g, NC_OP_ADD, nc_op2(g, NC_OP_MUL, x1, c), nc_op2(g, NC_OP_MUL, x2, sn));
  nc_id y2 = nc_op2(g, NC_OP_SUB, nc_op2(g, NC_OP_MUL, x2, c), nc_op2(g, NC_OP_MUL, x1, sn));
  nc_id ys[2] = {y1, y2};
  return nc_b_concat(g, ys, 2, 3);
}

// The additive mask input of a window (0 = every cached key): "mask.<window>"
// (B,T) f32, 0 where the cached key is visible, -1e30 where it is not.
static nc_id nc_gb_mask(nc_gb *b, int64_t window) {
  char name[48];
  snprintf(name, sizeof name, "mask.%lld", (long long)window);
  nc_dim d[2] = {b->B, b->Tc};
  return nc_leaf(b->g, NC_OP_INPUT, name, nc_type_make(NC_F32, 2, d));
}

// Decode attention of one new query per row over the row's cached keys plus
// its own new key: q (B,1,H,D), k/v (B,1,Hkv,D); inputs k_cache.<i>,
// v_cache.<i> (B,Hkv,T,D). The softmax is split between the cache part and
// the new key so the cache is read in place (no concat). -> (B,1,H,D)
static nc_id nc_gb_attn_cached(nc_gb *b, int layer, nc_id q, nc_id k, nc_id v, int64_t window) {
  nc_graph *g = b->g;
  const nc_model_spec *s = b->s;
  int64_t H = s->n_head, Hkv = s->n_kv_head, G = H / Hkv, D = s->head_dim;
  double scale = 1.0 / sqrt((double)D);
  char name[64];
  b->kout[layer] = k;
  b->vout[layer] = v;
  nc_dim dq[4] = {b->B, nc_dim_const(Hkv), nc_dim_const(G), nc_dim_const(D)};
  nc_dim dk[4] = {b->B, nc_dim_const(Hkv), nc_dim_const(1), nc_dim_const(D)};
  nc_dim dc[4] = {b->B, nc_dim_const(Hkv), b->Tc, nc_dim_const(D)};
  nc_id q4 = nc_b_reshape_dims(g, q, 4, dq);  // (B,Hkv,G,D): consecutive query heads share a kv head
  nc_id k4 = nc_b_reshape_dims(g, k, 4, dk), v4 = nc_b_reshape_dims(g, v, 4, dk);  // (B,Hkv,1,D)
  snprintf(name, sizeof name, "k_cache.%d", layer);
  nc_id kc = nc_leaf(g, NC_OP_INPUT, name, nc_type_make(NC_F32, 4, dc));
  snprintf(name, sizeof name, "v_cache.%d", layer);
  nc_id vc = nc_leaf(g, NC_OP_INPUT, name, nc_type_make(NC_F32, 4, dc));
  nc_id sc = nc_b_scale(g, nc_b_bmm(g, q4, kc, false, true), scale);  // (B,Hkv,G,T)
  nc_dim dm[4] = {b->B, nc_dim_const(1), nc_dim_const(1), b->Tc};
  sc = nc_op2(g, NC_OP_ADD, sc, nc_b_expand_like(g, nc_b_reshape_dims(g, nc_gb_mask(b, window), 4, dm), sc));
  nc_id sn = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op2(g, NC_OP_MUL, q4, nc_b_expand_like(g, k4, q4)), 1 << 3, true);
  sn = nc_b_scale(g, sn, scale);  // (B,Hkv,G,1): the row's own new key
  nc_id m = nc_op2(g, NC_OP_MAX, nc_b_reduce(g, NC_OP_REDUCE_MAX, sc, 1 << 3, true), sn);
  nc_id ec = nc_op1(g, NC_OP_EXP, nc_op2(g, NC_OP_SUB, sc, nc_b_expand_like(g, m, sc)));
  nc_id en = nc_op1(g, NC_OP_EXP, nc_op2(g, NC_OP_SUB, sn, m));
  nc_id den = nc_op2(g, NC_OP_ADD, nc_b_reduce(g, NC_OP_REDUCE_SUM, ec, 1 << 3, true), en);
  nc_id y = nc_b_bmm(g, ec, vc, false, false);  // (B,Hkv,G,D)
  y = nc_op2(g, NC_OP_ADD, y, nc_op2(g, NC_OP_MUL, nc_b_expand_like(g, en, y), nc_b_expand_like(g, v4, y)));
  y = nc_op2(g, NC_OP_DIV, y, nc_b_expand_like(g, den, y));
  nc_dim dy[4] = {b->B, b->T, nc_dim_const(H), nc_dim_const(D)};
  return nc_b_reshape_dims(g, y, 4, dy);
}

static nc_id nc_gb_attn(nc_gb *b, const nc_param_desc *ps, int np, int layer, nc_id x, nc_id tokens) {
  nc_graph *g = b->g;
  const nc_model_spec *s = b->s;
  char name[96];
#define P(fmt) (snprintf(name, sizeof name, fmt, layer), nc_gb_param_named(b, ps, np, name))
  nc_id q = nc_gb_heads(b, nc_gb_linear(b, x, P("transformer.h.%d.attn.c_q.weight")), s->n_head);
  nc_id k = nc_gb_heads(b, nc_gb_linear(b, x, P("transformer.h.%d.attn.c_k.weight")), s->n_kv_head);
  nc_id v = nc_gb_heads(b, nc_gb_linear(b, x, P("transformer.h.%d.attn.c_v.weight")), s->n_kv_head);
  if (nc_spec_has_ve(s, layer)) {
    // ResFormer value embedding: v += 3*sigmoid(ve_gate(x[..., :12])) * ve, one gate per kv head
    nc_id ve = nc_gb_heads(b, nc_gb_act(b, nc_op2(g, NC_OP_GATHER, P("value_embeds.%d.weight"), tokens)), s->n_kv_head);
    nc_id gate = nc_gb_linear(b, nc_b_slice(g, x, 2, 0, 12), P("transformer.h.%d.attn.ve_gate.weight"));
    gate = nc_b_scale(g, nc_op1(g, NC_OP_SIGMOID, gate), 3.0);  // (B,T,Hkv)
    nc_dim d4[4] = {b->B, b->T, nc_dim_const(s->n_kv_head), nc_dim_const(1)};
    gate = nc_b_expand_like(g, nc_b_reshape_dims(g, gate, 4, d4), ve);
    v = nc_op2(g, NC_OP_ADD, v, nc_op2(g, NC_OP_MUL, gate, ve));
  }
  q = nc_gb_f32(b, q), k = nc_gb_f32(b, k), v = nc_gb_f32(b, v);  // bf16: rope, qk norm and attention in f32
  if (b->mode == NC_GPT_DECODE) {
    q = nc_gb_rope_table(b, q);
    k = nc_gb_rope_table(b, k);
  } else {
    q = nc_b_rope(g, q, NC_NONE, s->rope_base, false);
    k = nc_b_rope(g, k, NC_NONE, s->rope_base, false);
  }
  // bf16: q and k enter attention rounded to bf16, as nanochat's FA3 inputs
  q = nc_gb_f32(b, nc_gb_act(b, nc_b_scale(g, nc_b_rms_norm(g, q, NC_RMS_EPS_F32), s->qk_scale)));
  k = nc_gb_f32(b, nc_gb_act(b, nc_b_scale(g, nc_b_rms_norm(g, k, NC_RMS_EPS_F32), s->qk_scale)));
  int w = nc_spec_window(s, layer);  // keys seen, the query itself included
  int64_t window = w >= s->sequence_len ? 0 : w;
  nc_id y;
  if (b->mode == NC_GPT_DECODE) {
    y = nc_gb_attn_cached(b, layer, q, k, v, window);
  } else {
    if (b->kout) b->kout[layer] = k, b->vout[layer] = v;
    y = nc_b_attention(g, q, k, v, NC_NONE, true, window, 1.0 / sqrt((double)s->head_dim));
  }
  nc_dim d3[3] = {b->B, b->T, nc_dim_const((int64_t)s->n_head * s->head_dim)};
  y = nc_b_reshape_dims(g, y, 3, d3);
  return nc_gb_linear(b, y, P("transformer.h.%d.attn.c_proj.weight"));
#undef P
}

static nc_id nc_gb_mlp(nc_gb *b, const nc_param_desc *ps, int np, int layer, nc_id x) {
  char name[96];
  snprintf(name, sizeof name, "transformer.h.%d.mlp.c_fc.weight", layer);
  nc_id h = nc_gb_linear(b, x, nc_gb_param_named(b, ps, np, name));
  h = nc_op1(b->g, NC_OP_SQUARE, nc_op1(b->g, NC_OP_RELU, h));  // ReLU^2
  snprintf(name, sizeof name, "transformer.h.%d.mlp.c_proj.weight", layer);
  return nc_gb_linear(b, h, nc_gb_param_named(b, ps, np, name));
}

static nc_status nc_gpt_build_impl(const nc_model_spec *s, const nc_gpt_opts *o, int mode, nc_graph **out) {
  *out = NULL;
  nc_param_desc *ps;
  int np;
  NC_TRY(nc_gpt_params(s, &ps, &np));
  nc_graph *g = nc_graph_new(s->name);
  nc_id *kv = calloc(2 * (size_t)s->depth + 2, sizeof *kv);
  if (!g || !kv) {
    free(ps);
    free(kv);
    nc_graph_free(g);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  bool gemv = mode == NC_GPT_DECODE_GEMV;
  if (gemv) mode = NC_GPT_DECODE;
  nc_gb b = {.g = g, .s = s, .B = nc_dim_const(o->batch), .T = nc_dim_const(o->seq), .mode = mode, .gemv = gemv};
  b.rope_cos = b.rope_sin = NC_NONE;
  b.bf16 = nc_spec_bf16(s);
  if (mode != NC_GPT_FORWARD) b.kout = kv, b.vout = kv + s->depth;
  nc_status st = NC_OK;
  int k;
  if (!o->batch) {
    if ((st = nc_graph_sym(g, "B", &k))) goto fail;
    b.B = nc_dim_sym(k);
  }
  if (mode == NC_GPT_DECODE) {
    if ((st = nc_graph_sym(g, "T", &k))) goto fail;
    b.Tc = nc_dim_sym(k);
    b.T = nc_dim_const(1);
  } else if (!o->seq) {
    if ((st = nc_graph_sym(g, "T", &k))) goto fail;
    b.T = nc_dim_sym(k);
  }
  nc_dim bt[2] = {b.B, b.T};
  nc_id tokens = nc_leaf(g, NC_OP_INPUT, "tokens", nc_type_make(NC_I32, 2, bt));
  if (mode == NC_GPT_DECODE) {
    nc_dim dr[2] = {b.B, nc_dim_const(s->head_dim / 2)}, dr4[4] = {b.B, b.T, nc_dim_const(1), nc_dim_const(s->head_dim / 2)};
    b.rope_cos = nc_b_reshape_dims(g, nc_leaf(g, NC_OP_INPUT, "rope_cos", nc_type_make(NC_F32, 2, dr)), 4, dr4);
    b.rope_sin = nc_b_reshape_dims(g, nc_leaf(g, NC_OP_INPUT, "rope_sin", nc_type_make(NC_F32, 2, dr)), 4, dr4);
  }
  nc_id x = nc_gb_act(&b, nc_op2(g, NC_OP_GATHER, nc_gb_param_named(&b, ps, np, "transformer.wte.weight"), tokens));  // (B,T,C)
  x = nc_gb_norm(&b, x);
  nc_id emb = x;
  if (s->smear) {
    // x[t] += smear_lambda * sigmoid(smear_gate(x[t, :24])) * x[t-1] for t >= 1
    nc_id gate = nc_gb_linear(&b, nc_b_slice(g, x, 2, 0, 24), nc_gb_param_named(&b, ps, np, "smear_gate.weight"));
    nc_id lam = nc_b_expand_like(g, nc_gb_act(&b, nc_b_reshape_dims(g, nc_gb_param_named(&b, ps, np, "smear_lambda"), 0, NULL)), gate);
    gate = nc_op2(g, NC_OP_MUL, lam, nc_op1(g, NC_OP_SIGMOID, gate));  // (B,T,1)
    nc_id prev;
    if (mode == NC_GPT_DECODE) {  // the previous token's normed embedding, kept by the engine
      nc_dim dp[2] = {b.B, nc_dim_const(s->model_dim)}, dp3[3] = {b.B, b.T, nc_dim_const(s->model_dim)};
      prev = nc_gb_act(&b, nc_b_reshape_dims(g, nc_leaf(g, NC_OP_INPUT, "prev_emb", nc_type_make(NC_F32, 2, dp)), 3, dp3));
    } else {
      prev = nc_b_shift(g, x, 1, 1);  // x[t-1], zeros at t = 0
    }
    x = nc_op2(g, NC_OP_ADD, x, nc_op2(g, NC_OP_MUL, nc_b_expand_like(g, gate, x), prev));
  }
  nc_id x0 = x, resid = NC_NONE, x0l = NC_NONE, x_mid = NC_NONE;
  if (s->resid_lambdas) {
    resid = nc_gb_param_named(&b, ps, np, "resid_lambdas");
    x0l = nc_gb_param_named(&b, ps, np, "x0_lambdas");
  }
  for (int i = 0; i < s->depth; i++) {
    if (s->resid_lambdas)
      x = nc_op2(g, NC_OP_ADD, nc_op2(g, NC_OP_MUL, nc_gb_scalar_of(&b, resid, i, x), x),
                 nc_op2(g, NC_OP_MUL, nc_gb_scalar_of(&b, x0l, i, x0), x0));
    x = nc_op2(g, NC_OP_ADD, x, nc_gb_attn(&b, ps, np, i, nc_gb_norm(&b, x), tokens));
    x = nc_op2(g, NC_OP_ADD, x, nc_gb_mlp(&b, ps, np, i, nc_gb_norm(&b, x)));
    if (s->backout && i == s->depth / 2) x_mid = x;
  }
  if (s->backout) {
    nc_id lam = nc_gb_scalar_of(&b, nc_gb_param_named(&b, ps, np, "backout_lambda"), 0, x);
    x = nc_op2(g, NC_OP_SUB, x, nc_op2(g, NC_OP_MUL, lam, x_mid));
  }
  nc_dim dbc[2] = {b.B, nc_dim_const(s->model_dim)};
  if (mode == NC_GPT_PREFILL) {
    // only the wanted position goes through the head: gather row "last" of (B*T,C)
    nc_dim flat[2], d1[2] = {b.B, nc_dim_const(1)};
    nc_dim_mul(b.B, b.T, &flat[0]);
    flat[1] = nc_dim_const(s->model_dim);
    nc_id last = nc_leaf(g, NC_OP_INPUT, "last", nc_type_make(NC_I32, 2, d1));
    x = nc_b_reshape_dims(g, nc_op2(g, NC_OP_GATHER, nc_b_reshape_dims(g, x, 2, flat), last), 2, dbc);
    emb = nc_b_reshape_dims(g, nc_op2(g, NC_OP_GATHER, nc_b_reshape_dims(g, emb, 2, flat), last), 2, dbc);
  } else if (mode == NC_GPT_DECODE) {
    x = nc_b_reshape_dims(g, x, 2, dbc);
    emb = nc_b_reshape_dims(g, emb, 2, dbc);
  }
  x = nc_gb_norm(&b, x);
  if (mode != NC_GPT_FORWARD) emb = nc_gb_f32(&b, emb);  // the engine keeps f32
  // bf16: the head's product is rounded to bf16, then logits, softcap and loss are f32 (nanochat's .float())
  nc_id logits = nc_gb_f32(&b, nc_gb_linear(&b, x, nc_gb_param_named(&b, ps, np, "lm_head.weight")));  // (B,T,V) or (B,V)
  if (s->softcap > 0)  // softcap * tanh(logits / softcap)
    logits = nc_b_scale(g, nc_op1(g, NC_OP_TANH, nc_op2(g, NC_OP_DIV, logits, nc_b_const_like(g, logits, s->softcap))), s->softcap);
  if ((st = nc_graph_take_error(g))) goto fail;
  if (mode != NC_GPT_FORWARD) {
    if ((st = nc_graph_set_output(g, "logits", logits))) goto fail;
    if ((st = nc_graph_set_output(g, "emb", emb))) goto fail;
    char name[32];
    for (int i = 0; i < s->depth; i++) {
      snprintf(name, sizeof name, "k.%d", i);
      if ((st = nc_graph_set_output(g, name, b.kout[i]))) goto fail;
      snprintf(name, sizeof name, "v.%d", i);
      if ((st = nc_graph_set_output(g, name, b.vout[i]))) goto fail;
    }
  }
  if (o->with_logits && (st = nc_graph_set_output(g, "logits", logits))) goto fail;
  if (o->with_loss) {
    nc_id targets = nc_leaf(g, NC_OP_INPUT, "targets", nc_type_make(NC_I32, 2, bt));
    nc_id loss = nc_b_cross_entropy(g, logits, targets, -1, 2);
    if ((st = nc_graph_take_error(g))) goto fail;
    if ((st = nc_graph_set_output(g, "loss", loss))) goto fail;
  }
  free(ps);
  free(kv);
  *out = g;
  return NC_OK;
fail:
  free(ps);
  free(kv);
  nc_graph_free(g);
  return nc_status_prefix(st, "building model '%s': ", s->name);
}

nc_status nc_gpt_build(const nc_model_spec *s, const nc_gpt_opts *o, nc_graph **out) {
  return nc_gpt_build_impl(s, o, NC_GPT_FORWARD, out);
}

nc_status nc_gpt_build_infer(const nc_model_spec *s, nc_gpt_infer_mode mode, nc_graph **out) {
  nc_gpt_opts o = {0};
  if (mode != NC_GPT_PREFILL && mode != NC_GPT_DECODE && mode != NC_GPT_DECODE_GEMV) return nc_errorf(NC_E_INVALID, "unknown inference graph mode %d", (int)mode);
  return nc_gpt_build_impl(s, &o, (int)mode, out);
}
