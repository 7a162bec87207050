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
} nc_gb;

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
static nc_id nc_gb_linear(nc_gb *b, nc_id x, nc_id w) { return nc_b_matmul(b->g, x, w, false, true); }

// A scalar param element k of a rank-1 param, broadcast to like's type.
static nc_id nc_gb_scalar_of(nc_gb *b, nc_id vec, int64_t k, nc_id like) {
  nc_id s = nc_b_reshape_dims(b->g, nc_b_slice(b->g, vec, 0, k, k + 1), 0, NULL);
  return nc_b_expand_like(b->g, s, like);
}

static nc_id nc_gb_norm(nc_gb *b, nc_id x) { return nc_b_rms_norm(b->g, x, NC_RMS_EPS_F32); }

// (B,T,H*D) -> (B,T,H,D)
static nc_id nc_gb_heads(nc_gb *b, nc_id x, int h) {
  nc_dim d[4] = {b->B, b->T, nc_dim_const(h), nc_dim_const(b->s->head_dim)};
  return nc_b_reshape_dims(b->g, x, 4, d);
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
    nc_id ve = nc_gb_heads(b, nc_op2(g, NC_OP_GATHER, P("value_embeds.%d.weight"), tokens), s->n_kv_head);
    nc_id gate = nc_gb_linear(b, nc_b_slice(g, x, 2, 0, 12), P("transformer.h.%d.attn.ve_gate.weight"));
    gate = nc_b_scale(g, nc_op1(g, NC_OP_SIGMOID, gate), 3.0);  // (B,T,Hkv)
    nc_dim d4[4] = {b->B, b->T, nc_dim_const(s->n_kv_head), nc_dim_const(1)};
    gate = nc_b_expand_like(g, nc_b_reshape_dims(g, gate, 4, d4), ve);
    v = nc_op2(g, NC_OP_ADD, v, nc_op2(g, NC_OP_MUL, gate, ve));
  }
  q = nc_b_rope(g, q, NC_NONE, s->rope_base, false);
  k = nc_b_rope(g, k, NC_NONE, s->rope_base, false);
  q = nc_b_scale(g, nc_gb_norm(b, q), s->qk_scale);
  k = nc_b_scale(g, nc_gb_norm(b, k), s->qk_scale);
  int w = nc_spec_window(s, layer);  // keys seen, the query itself included
  int64_t window = w >= s->sequence_len ? 0 : w;
  nc_id y = nc_b_attention(g, q, k, v, NC_NONE, true, window, 1.0 / sqrt((double)s->head_dim));
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

nc_status nc_gpt_build(const nc_model_spec *s, const nc_gpt_opts *o, nc_graph **out) {
  *out = NULL;
  nc_param_desc *ps;
  int np;
  NC_TRY(nc_gpt_params(s, &ps, &np));
  nc_graph *g = nc_graph_new(s->name);
  if (!g) {
    free(ps);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  nc_gb b = {g, s, nc_dim_const(o->batch), nc_dim_const(o->seq)};
  nc_status st = NC_OK;
  int k;
  if (!o->batch) {
    if ((st = nc_graph_sym(g, "B", &k))) goto fail;
    b.B = nc_dim_sym(k);
  }
  if (!o->seq) {
    if ((st = nc_graph_sym(g, "T", &k))) goto fail;
    b.T = nc_dim_sym(k);
  }
  nc_dim bt[2] = {b.B, b.T};
  nc_id tokens = nc_leaf(g, NC_OP_INPUT, "tokens", nc_type_make(NC_I32, 2, bt));
  nc_id x = nc_op2(g, NC_OP_GATHER, nc_gb_param_named(&b, ps, np, "transformer.wte.weight"), tokens);  // (B,T,C)
  x = nc_gb_norm(&b, x);
  if (s->smear) {
    // x[t] += smear_lambda * sigmoid(smear_gate(x[t, :24])) * x[t-1] for t >= 1
    nc_id gate = nc_gb_linear(&b, nc_b_slice(g, x, 2, 0, 24), nc_gb_param_named(&b, ps, np, "smear_gate.weight"));
    nc_id lam = nc_b_expand_like(g, nc_b_reshape_dims(g, nc_gb_param_named(&b, ps, np, "smear_lambda"), 0, NULL), gate);
    gate = nc_op2(g, NC_OP_MUL, lam, nc_op1(g, NC_OP_SIGMOID, gate));  // (B,T,1)
    nc_id prev = nc_b_shift(g, x, 1, 1);                               // x[t-1], zeros at t = 0
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
  x = nc_gb_norm(&b, x);
  nc_id logits = nc_gb_linear(&b, x, nc_gb_param_named(&b, ps, np, "lm_head.weight"));  // (B,T,V)
  if (s->softcap > 0)  // softcap * tanh(logits / softcap)
    logits = nc_b_scale(g, nc_op1(g, NC_OP_TANH, nc_op2(g, NC_OP_DIV, logits, nc_b_const_like(g, logits, s->softcap))), s->softcap);
  if ((st = nc_graph_take_error(g))) goto fail;
  if (o->with_logits && (st = nc_graph_set_output(g, "logits", logits))) goto fail;
  if (o->with_loss) {
    nc_id targets = nc_leaf(g, NC_OP_INPUT, "targets", nc_type_make(NC_I32, 2, bt));
    nc_id loss = nc_b_cross_entropy(g, logits, targets, -1, 2);
    if ((st = nc_graph_take_error(g))) goto fail;
    if ((st = nc_graph_set_output(g, "loss", loss))) goto fail;
  }
  free(ps);
  *out = g;
  return NC_OK;
fail:
  free(ps);
  nc_graph_free(g);
  return nc_status_prefix(st, "building model '%s': ", s->name);
}
