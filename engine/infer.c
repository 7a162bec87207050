// Prefill/decode plans over a host KV cache (engine/infer.h).
#include "engine/infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/gpt.h"

// Tcap is rounded up to a chunk that grows with it: attention reads every
// row's cache up to Tcap, so rounding wastes up to a chunk of reads per row
// and step, while each change of Tcap re-lays the whole cache out (about two
// steps' worth of attention reads). 16 up to 128 positions, 32 up to 512, 64
// beyond (~2 sqrt(T), the minimum of the two costs, in powers of two).
#define NC_INFER_TCHUNK_MIN 16
#define NC_INFER_MASKED (-1e30f)

// What a leaf of a plan's feed graph is bound to.
typedef enum {
  NC_LEAF_PARAM,
  NC_LEAF_TOKENS,
  NC_LEAF_LAST,
  NC_LEAF_COS,
  NC_LEAF_SIN,
  NC_LEAF_PREV,
  NC_LEAF_KCACHE,
  NC_LEAF_VCACHE,
  NC_LEAF_MASK,
} nc_leaf_kind;

typedef struct {
  nc_leaf_kind kind;
  int index;                // layer (caches) or window slot (masks)
  const char *name;         // points into the feed graph
  const nc_tensor *param;   // NC_LEAF_PARAM
} nc_leaf_bind;

typedef struct {
  nc_exec *e;
  nc_leaf_bind *leaves;
  int nleaves;
  int out_logits, out_emb, *out_k, *out_v;  // output indices
  nc_feed *feeds;
  nc_tensor *vals;  // per leaf: the wrapped value of this call
  nc_tensor *outs;
} nc_infer_plan;

struct nc_infer {
  nc_model_spec s;
  const nc_session *params;
  nc_infer_plan pre, dec, dec1;  // dec1: DECODE_GEMV for a batch of one row (not on interp or cpu)
  int rows_max, nrows;
  int64_t max_seq, tcap, tcap_alloc;
  int L, Hkv, D, C, V;
  float **kc, **vc;   // per layer: (rows_max, Hkv, tcap, D)
  int64_t *len;       // per row
  float *prev_emb;    // (rows_max, C)
  int nwin;
  int64_t win[64];    // the distinct windows of the decode plan's masks
  float **mask;       // per window: (rows_max, tcap_alloc)
  float *cosb, *sinb; // (rows_max, D/2)
  double *inv_freq;   // (D/2)
  float *rope;        // (rope_n, 2, D/2): cos, sin of pos * inv_freq[j] (computed in double) by position
  int64_t rope_n;     // positions in rope (grown geometrically as rows get longer)
  int32_t *tok;       // (rows_max)
};

int nc_infer_rows(const nc_infer *m) { return m->nrows; }
int nc_infer_rows_max(const nc_infer *m) { return m->rows_max; }
int64_t nc_infer_max_seq(const nc_infer *m) { return m->max_seq; }
int64_t nc_infer_row_len(const nc_infer *m, int row) { return row >= 0 && row < m->nrows ? m->len[row] : -1; }
int64_t nc_infer_vocab(const nc_infer *m) { return m->V; }
int64_t nc_infer_tcap(const nc_infer *m) { return m->tcap; }
nc_exec *nc_infer_exec(nc_infer *m, int which) { return which == 2 ? m->dec1.e : which ? m->dec.e : m->pre.e; }

static void nc_infer_plan_free(nc_infer_plan *p) {
  if (p->outs && p->e)
    for (int k = 0; k < nc_graph_noutputs(nc_exec_graph(p->e)); k++) nc_tensor_free(&p->outs[k]);
  nc_exec_free(p->e);
  free(p->leaves);
  free(p->out_k);
  free(p->out_v);
  free(p->feeds);
  free(p->vals);
  free(p->outs);
  memset(p, 0, sizeof *p);
}

void nc_infer_free(nc_infer *m) {
  if (!m) return;
  nc_infer_plan_free(&m->pre);
  nc_infer_plan_free(&m->dec);
  nc_infer_plan_free(&m->dec1);
  for (int i = 0; i < m->L; i++) {
    if (m->kc) free(m->kc[i]);
    if (m->vc) free(m->vc[i]);
  }
  for (int w = 0; w < m->nwin; w++)
    if (m->mask) free(m->mask[w]);
  free(m->kc);
  free(m->vc);
  free(m->mask);
  free(m->len);
  free(m->prev_emb);
  free(m->cosb);
  free(m->sinb);
  free(m->inv_freq);
  free(m->rope);
  free(m->tok);
  free(m);
}

static int nc_infer_window_slot(nc_infer *m, int64_t w, bool add) {
  for (int i = 0; i < m->nwin; i++)
    if (m->win[i] == w) return i;
  if (!add || m->nwin == (int)(sizeof m->win / sizeof m->win[0])) return -1;
  m->win[m->nwin] = w;
  return m->nwin++;
}

// Builds, compiles and binds one plan.
static nc_status nc_infer_plan_make(nc_infer *m, nc_gpt_infer_mode mode, const nc_device *d, nc_infer_plan *p) {
  nc_graph *g;
  NC_TRY(nc_gpt_build_infer(&m->s, mode, &g));
  nc_status st = nc_exec_new(g, d, &p->e);
  nc_graph_free(g);
  if (st) return st;
  const nc_graph *fg = nc_exec_feed_graph(p->e), *og = nc_exec_graph(p->e);
  uint32_t nn = nc_graph_nnodes(fg);
  int nout = nc_graph_noutputs(og);
  p->leaves = calloc(nn + 1, sizeof *p->leaves);
  p->feeds = calloc(nn + 1, sizeof *p->feeds);
  p->vals = calloc(nn + 1, sizeof *p->vals);
  p->outs = calloc((size_t)nout + 1, sizeof *p->outs);
  p->out_k = calloc((size_t)m->L + 1, sizeof *p->out_k);
  p->out_v = calloc((size_t)m->L + 1, sizeof *p->out_v);
  if (!p->leaves || !p->feeds || !p->vals || !p->outs || !p->out_k || !p->out_v)
    return nc_errorf(NC_E_NOMEM, "out of memory");
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(fg, i);
    if (nd->op != NC_OP_INPUT && nd->op != NC_OP_PARAM) continue;
    const char *name = nc_node_name(fg, i);
    nc_leaf_bind *b = &p->leaves[p->nleaves++];
    b->name = name;
    int layer;
    long long w;
    if (nd->op == NC_OP_PARAM) {
      b->kind = NC_LEAF_PARAM;
      b->param = nc_session_get(m->params, name);
      if (!b->param) return nc_errorf(NC_E_INVALID, "the checkpoint has no parameter '%s'", name);
    } else if (!strcmp(name, "tokens")) b->kind = NC_LEAF_TOKENS;
    else if (!strcmp(name, "last")) b->kind = NC_LEAF_LAST;
    else if (!strcmp(name, "rope_cos")) b->kind = NC_LEAF_COS;
    else if (!strcmp(name, "rope_sin")) b->kind = NC_LEAF_SIN;
    else if (!strcmp(name, "prev_emb")) b->kind = NC_LEAF_PREV;
    else if (sscanf(name, "k_cache.%d", &layer) == 1) b->kind = NC_LEAF_KCACHE, b->index = layer;
    else if (sscanf(name, "v_cache.%d", &layer) == 1) b->kind = NC_LEAF_VCACHE, b->index = layer;
    else if (sscanf(name, "mask.%lld", &w) == 1) {
      b->kind = NC_LEAF_MASK;
      b->index = nc_infer_window_slot(m, w, true);
      if (b->index < 0) return nc_errorf(NC_E_UNSUPPORTED, "too many distinct attention windows");
    } else return nc_errorf(NC_E_INTERNAL, "inference graph input '%s' is unknown to the engine", name);
    if ((b->kind == NC_LEAF_KCACHE || b->kind == NC_LEAF_VCACHE) && (b->index < 0 || b->index >= m->L))
      return nc_errorf(NC_E_INTERNAL, "inference graph input '%s': no such layer", name);
  }
  p->out_logits = p->out_emb = -1;
  for (int i = 0; i < m->L; i++) p->out_k[i] = p->out_v[i] = -1;
  for (int k = 0; k < nout; k++) {
    const char *name = nc_graph_output_name(og, k);
    int layer;
    if (!strcmp(name, "logits")) p->out_logits = k;
    else if (!strcmp(name, "emb")) p->out_emb = k;
    else if (sscanf(name, "k.%d", &layer) == 1 && layer >= 0 && layer < m->L) p->out_k[layer] = k;
    else if (sscanf(name, "v.%d", &layer) == 1 && layer >= 0 && layer < m->L) p->out_v[layer] = k;
  }
  if (p->out_logits < 0 || p->out_emb < 0) return nc_errorf(NC_E_INTERNAL, "inference graph lacks its outputs");
  for (int i = 0; i < m->L; i++)
    if (p->out_k[i] < 0 || p->out_v[i] < 0) return nc_errorf(NC_E_INTERNAL, "inference graph lacks k/v of layer %d", i);
  return NC_OK;
}

nc_status nc_infer_new(const nc_model_spec *s, const nc_session *params, const nc_device *d, int rows_max,
                       int64_t max_seq, nc_infer **out) {
  *out = NULL;
  if (rows_max < 1 || rows_max > 4096) return nc_errorf(NC_E_INVALID, "rows %d is outside 1..4096", rows_max);
  if (max_seq < 0 || max_seq > (1 << 20))
    return nc_errorf(NC_E_INVALID, "max_seq %lld is outside 0..1048576", (long long)max_seq);
  nc_infer *m = calloc(1, sizeof *m);
  if (!m) return nc_errorf(NC_E_NOMEM, "out of memory");
  m->s = *s;
  m->params = params;
  m->rows_max = rows_max;
  m->max_seq = max_seq ? max_seq : s->sequence_len;
  m->L = s->depth;
  m->Hkv = s->n_kv_head;
  m->D = s->head_dim;
  m->C = s->model_dim;
  m->V = s->vocab_size;
  m->tcap = m->tcap_alloc = m->max_seq < NC_INFER_TCHUNK_MIN ? m->max_seq : NC_INFER_TCHUNK_MIN;
  nc_status st = NC_OK;
  m->kc = calloc((size_t)m->L, sizeof *m->kc);
  m->vc = calloc((size_t)m->L, sizeof *m->vc);
  m->len = calloc((size_t)rows_max, sizeof *m->len);
  m->prev_emb = calloc((size_t)rows_max * (size_t)m->C, sizeof *m->prev_emb);
  m->cosb = calloc((size_t)rows_max * (size_t)(m->D / 2) + 1, sizeof *m->cosb);
  m->sinb = calloc((size_t)rows_max * (size_t)(m->D / 2) + 1, sizeof *m->sinb);
  m->inv_freq = calloc((size_t)(m->D / 2) + 1, sizeof *m->inv_freq);
  m->tok = calloc((size_t)rows_max, sizeof *m->tok);
  if (!m->kc || !m->vc || !m->len || !m->prev_emb || !m->cosb || !m->sinb || !m->inv_freq || !m->tok) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto fail;
  }
  size_t per = (size_t)rows_max * (size_t)m->Hkv * (size_t)m->tcap_alloc * (size_t)m->D;
  for (int i = 0; i < m->L; i++) {
    m->kc[i] = calloc(per, sizeof(float));
    m->vc[i] = calloc(per, sizeof(float));
    if (!m->kc[i] || !m->vc[i]) {
      st = nc_errorf(NC_E_NOMEM, "out of memory for the KV cache");
      goto fail;
    }
  }
  for (int j = 0; j < m->D / 2; j++) m->inv_freq[j] = pow(s->rope_base, -2.0 * (double)j / (double)m->D);
  if ((st = nc_infer_plan_make(m, NC_GPT_PREFILL, d, &m->pre))) goto fail;
  if ((st = nc_infer_plan_make(m, NC_GPT_DECODE, d, &m->dec))) goto fail;
  // One-row plan (linear layers as reductions) only where the GEMM has no small-M path:
  // on the CPU the GEMM template streams the weights once for M <= 16 (codegen/gemm.c,
  // "skinny"), which measured ~1.8x faster than the reductions at batch 1 (docs/engine.md).
  if (d->kind != NC_DEV_INTERP && d->kind != NC_DEV_CPU &&
      (st = nc_infer_plan_make(m, NC_GPT_DECODE_GEMV, d, &m->dec1)))
    goto fail;
  m->mask = calloc((size_t)m->nwin + 1, sizeof *m->mask);
  if (!m->mask) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto fail;
  }
  for (int w = 0; w < m->nwin; w++)
    if (!(m->mask[w] = calloc((size_t)rows_max * (size_t)m->tcap_alloc, sizeof(float)))) {
      st = nc_errorf(NC_E_NOMEM, "out of memory");
      goto fail;
    }
  *out = m;
  return NC_OK;
fail:
  nc_infer_free(m);
  return nc_status_prefix(st, "engine model '%s': ", s->name);
}

// Re-lays the cache out with Tcap = cap (every active row's data kept; the
// positions gained are zero: the cache never holds a NaN that a masked key
// could turn into NaN logits).
static nc_status nc_infer_set_tcap(nc_infer *m, int64_t cap) {
  if (cap == m->tcap) return NC_OK;
  size_t D = (size_t)m->D, slices = (size_t)m->rows_max * (size_t)m->Hkv, active = (size_t)m->nrows * (size_t)m->Hkv;
  size_t oc = (size_t)m->tcap, nc = (size_t)cap;
  if (cap > m->tcap_alloc) {
    // the allocation grows geometrically (the layout's stride is still cap)
    int64_t alloc = 2 * m->tcap_alloc > m->max_seq ? m->max_seq : 2 * m->tcap_alloc;
    size_t na = (size_t)(alloc > cap ? alloc : cap);
    for (int i = 0; i < 2 * m->L; i++) {
      float **bp = i < m->L ? &m->kc[i] : &m->vc[i - m->L];
      float *q = realloc(*bp, slices * na * D * sizeof(float));
      if (!q) return nc_errorf(NC_E_NOMEM, "out of memory growing the KV cache to %lld positions", (long long)cap);
      *bp = q;
    }
    for (int w = 0; w < m->nwin; w++) {
      float *q = realloc(m->mask[w], (size_t)m->rows_max * na * sizeof(float));
      if (!q) return nc_errorf(NC_E_NOMEM, "out of memory growing the KV cache to %lld positions", (long long)cap);
      m->mask[w] = q;
    }
    m->tcap_alloc = (int64_t)na;
  }
  for (int i = 0; i < 2 * m->L; i++) {
    float *b = i < m->L ? m->kc[i] : m->vc[i - m->L];
    if (nc > oc) {
      for (size_t idx = active; idx-- > 0;) {
        memmove(b + idx * nc * D, b + idx * oc * D, oc * D * sizeof(float));
        memset(b + (idx * nc + oc) * D, 0, (nc - oc) * D * sizeof(float));
      }
      memset(b + active * nc * D, 0, (slices - active) * nc * D * sizeof(float));
    } else {
      for (size_t idx = 0; idx < active; idx++) memmove(b + idx * nc * D, b + idx * oc * D, nc * D * sizeof(float));
    }
  }
  m->tcap = cap;
  return NC_OK;
}

// The rotary tables of positions 0..need-1: a decode step copies a row's
// (cos, sin) instead of 2 * D/2 calls of cos and sin per row.
static nc_status nc_infer_rope_ensure(nc_infer *m, int64_t need) {
  if (need <= m->rope_n) return NC_OK;
  int64_t n = m->rope_n ? 2 * m->rope_n : 64, half = m->D / 2;
  if (n < need) n = need;
  if (n > m->max_seq) n = m->max_seq;
  float *q = realloc(m->rope, (size_t)n * 2 * (size_t)half * sizeof *q + 1);
  if (!q) return nc_errorf(NC_E_NOMEM, "out of memory for the rotary tables of %lld positions", (long long)n);
  m->rope = q;
  for (int64_t pos = m->rope_n; pos < n; pos++)
    for (int64_t j = 0; j < half; j++) {
      double a = (double)pos * m->inv_freq[j];
      q[(pos * 2) * half + j] = (float)cos(a);
      q[(pos * 2 + 1) * half + j] = (float)sin(a);
    }
  m->rope_n = n;
  return NC_OK;
}

static int64_t nc_infer_tcap_for(const nc_infer *m, int64_t need) {
  int64_t chunk = need <= 128 ? NC_INFER_TCHUNK_MIN : need <= 512 ? 2 * NC_INFER_TCHUNK_MIN : 4 * NC_INFER_TCHUNK_MIN;
  int64_t c = (need + chunk - 1) / chunk * chunk;
  if (c < NC_INFER_TCHUNK_MIN) c = NC_INFER_TCHUNK_MIN;
  return c > m->max_seq ? m->max_seq : c;
}

// Runs a plan: feeds from the leaves' bindings, outputs into p->outs.
static nc_status nc_infer_run(nc_infer *m, nc_infer_plan *p, int64_t B, int64_t T) {
  int64_t half = m->D / 2;
  for (int k = 0; k < nc_graph_noutputs(nc_exec_graph(p->e)); k++) nc_tensor_free(&p->outs[k]);
  for (int i = 0; i < p->nleaves; i++) {
    const nc_leaf_bind *b = &p->leaves[i];
    nc_tensor *v = &p->vals[i];
    switch (b->kind) {
      case NC_LEAF_PARAM: p->feeds[i] = (nc_feed){b->name, b->param}; continue;
      case NC_LEAF_TOKENS: *v = nc_tensor_wrap(m->tok, NC_I32, 2, (int64_t[]){B, T}); break;
      case NC_LEAF_LAST: return nc_errorf(NC_E_INTERNAL, "decode graph has a 'last' input");
      case NC_LEAF_COS: *v = nc_tensor_wrap(m->cosb, NC_F32, 2, (int64_t[]){B, half}); break;
      case NC_LEAF_SIN: *v = nc_tensor_wrap(m->sinb, NC_F32, 2, (int64_t[]){B, half}); break;
      case NC_LEAF_PREV: *v = nc_tensor_wrap(m->prev_emb, NC_F32, 2, (int64_t[]){B, m->C}); break;
      case NC_LEAF_KCACHE:
      case NC_LEAF_VCACHE: {
        float *buf = b->kind == NC_LEAF_KCACHE ? m->kc[b->index] : m->vc[b->index];
        *v = nc_tensor_wrap(buf, NC_F32, 4, (int64_t[]){B, m->Hkv, m->tcap, m->D});
        break;
      }
      case NC_LEAF_MASK: *v = nc_tensor_wrap(m->mask[b->index], NC_F32, 2, (int64_t[]){B, m->tcap}); break;
    }
    p->feeds[i] = (nc_feed){b->name, v};
  }
  return nc_exec_run(p->e, p->feeds, p->nleaves, p->outs);
}

nc_status nc_infer_prefill(nc_infer *m, const int32_t *tokens, int64_t n, int ncopies, float *logits) {
  return nc_infer_prefill_batch(m, 1, &tokens, &n, &ncopies, logits);
}

nc_status nc_infer_prefill_batch(nc_infer *m, int count, const int32_t *const *prompts, const int64_t *lens,
                                 const int *ncopies, float *logits) {
  if (count < 1 || count > m->rows_max) return nc_errorf(NC_E_INVALID, "%d prompts: 1..%d at once", count, m->rows_max);
  int64_t T = 0;
  int rows = 0;
  for (int i = 0; i < count; i++) {
    int64_t n = lens[i];
    if (n < 1 || n > m->max_seq)
      return nc_errorf(NC_E_INVALID, "prompt of %lld tokens: the cache holds 1..%lld", (long long)n, (long long)m->max_seq);
    if (ncopies[i] < 1) return nc_errorf(NC_E_INVALID, "prompt %d: %d copies (at least 1)", i, ncopies[i]);
    for (int64_t t = 0; t < n; t++)
      if (prompts[i][t] < 0 || prompts[i][t] >= m->V)
        return nc_errorf(NC_E_INVALID, "prompt token %lld: id %d is outside the vocabulary 0..%d", (long long)t,
                         prompts[i][t], m->V - 1);
    if (n > T) T = n;
    rows += ncopies[i];
  }
  if (rows > m->rows_max - m->nrows)
    return nc_errorf(NC_E_INVALID, "%d rows wanted, %d of %d free", rows, m->rows_max - m->nrows, m->rows_max);
  int64_t need = nc_infer_tcap_for(m, T + 1);
  if (need > m->tcap) NC_TRY(nc_infer_set_tcap(m, need));
  // (count, T): shorter prompts padded at the end with token 0 (causal: the
  // padding changes nothing before it, and its keys are never copied)
  const int32_t *tok = prompts[0];
  int32_t *padded = NULL, *last = malloc((size_t)count * sizeof *last);
  if (!last) return nc_errorf(NC_E_NOMEM, "out of memory");
  if (count > 1) {
    if (!(padded = calloc((size_t)count * (size_t)T, sizeof *padded))) {
      free(last);
      return nc_errorf(NC_E_NOMEM, "out of memory for %d prompts of up to %lld tokens", count, (long long)T);
    }
    for (int i = 0; i < count; i++) memcpy(padded + (size_t)i * (size_t)T, prompts[i], (size_t)lens[i] * sizeof *padded);
    tok = padded;
  }
  for (int i = 0; i < count; i++) last[i] = (int32_t)((int64_t)i * T + lens[i] - 1);  // flat row of (count*T, C)
  nc_infer_plan *p = &m->pre;
  nc_status st = NC_OK;
  for (int k = 0; k < nc_graph_noutputs(nc_exec_graph(p->e)); k++) nc_tensor_free(&p->outs[k]);
  for (int i = 0; i < p->nleaves; i++) {
    const nc_leaf_bind *b = &p->leaves[i];
    nc_tensor *v = &p->vals[i];
    if (b->kind == NC_LEAF_PARAM) {
      p->feeds[i] = (nc_feed){b->name, b->param};
      continue;
    }
    // the prompts are wrapped in place (plans never write their inputs)
    if (b->kind == NC_LEAF_TOKENS) *v = nc_tensor_wrap((void *)tok, NC_I32, 2, (int64_t[]){count, T});
    else if (b->kind == NC_LEAF_LAST) *v = nc_tensor_wrap(last, NC_I32, 2, (int64_t[]){count, 1});
    else {
      st = nc_errorf(NC_E_INTERNAL, "prefill graph input '%s' unexpected", b->name);
      break;
    }
    p->feeds[i] = (nc_feed){b->name, v};
  }
  if (!st) st = nc_exec_run(p->e, p->feeds, p->nleaves, p->outs);
  free(padded);
  free(last);
  if (st) return nc_status_prefix(st, "prefill: ");
  memcpy(logits, p->outs[p->out_logits].data, (size_t)count * (size_t)m->V * sizeof(float));
  size_t D = (size_t)m->D, Hkv = (size_t)m->Hkv, tc = (size_t)m->tcap, r = (size_t)m->nrows;
  for (int i = 0; i < count; i++)
    for (int c = 0; c < ncopies[i]; c++, r++) {
      for (int l = 0; l < m->L; l++) {
        const float *kk = p->outs[p->out_k[l]].data, *vv = p->outs[p->out_v[l]].data;  // (count,T,Hkv,D)
        for (size_t h = 0; h < Hkv; h++)
          for (size_t t = 0; t < (size_t)lens[i]; t++) {
            size_t src = (((size_t)i * (size_t)T + t) * Hkv + h) * D;
            memcpy(m->kc[l] + ((r * Hkv + h) * tc + t) * D, kk + src, D * sizeof(float));
            memcpy(m->vc[l] + ((r * Hkv + h) * tc + t) * D, vv + src, D * sizeof(float));
          }
      }
      memcpy(m->prev_emb + r * (size_t)m->C, (const float *)p->outs[p->out_emb].data + (size_t)i * (size_t)m->C,
             (size_t)m->C * sizeof(float));
      m->len[r] = lens[i];
    }
  m->nrows += rows;
  return NC_OK;
}

nc_status nc_infer_decode(nc_infer *m, const int32_t *tokens, float *logits) {
  int B = m->nrows;
  if (B == 0) return NC_OK;
  int64_t maxlen = 0;
  for (int r = 0; r < B; r++) {
    if (m->len[r] >= m->max_seq)
      return nc_errorf(NC_E_INVALID, "decode: row %d is full (%lld positions)", r, (long long)m->max_seq);
    if (tokens[r] < 0 || tokens[r] >= m->V)
      return nc_errorf(NC_E_INVALID, "decode: row %d token %d is outside the vocabulary 0..%d", r, tokens[r], m->V - 1);
    if (m->len[r] > maxlen) maxlen = m->len[r];
  }
  NC_TRY(nc_infer_rope_ensure(m, maxlen + 1));
  int64_t want = nc_infer_tcap_for(m, maxlen + 1);
  if (want > m->tcap || want * 2 <= m->tcap) NC_TRY(nc_infer_set_tcap(m, want));
  int64_t half = m->D / 2, tc = m->tcap;
  for (int r = 0; r < B; r++) {
    m->tok[r] = tokens[r];
    const float *cs = m->rope + (size_t)m->len[r] * 2 * (size_t)half;  // len < max_seq (checked above)
    memcpy(m->cosb + r * half, cs, (size_t)half * sizeof(float));
    memcpy(m->sinb + r * half, cs + half, (size_t)half * sizeof(float));
    for (int w = 0; w < m->nwin; w++) {
      float *mk = m->mask[w] + (size_t)r * (size_t)tc;
      int64_t lo = m->win[w] > 0 ? m->len[r] - m->win[w] + 1 : 0;  // visible: lo <= j < len
      for (int64_t j = 0; j < tc; j++) mk[j] = j >= lo && j < m->len[r] ? 0.0f : NC_INFER_MASKED;
    }
  }
  nc_infer_plan *p = B == 1 && m->dec1.e ? &m->dec1 : &m->dec;
  nc_status st = nc_infer_run(m, p, B, 1);
  if (st) return nc_status_prefix(st, "decode: ");
  memcpy(logits, p->outs[p->out_logits].data, (size_t)B * (size_t)m->V * sizeof(float));
  memcpy(m->prev_emb, p->outs[p->out_emb].data, (size_t)B * (size_t)m->C * sizeof(float));
  size_t D = (size_t)m->D, Hkv = (size_t)m->Hkv;
  for (int l = 0; l < m->L; l++) {
    const float *kk = p->outs[p->out_k[l]].data, *vv = p->outs[p->out_v[l]].data;  // (B,1,Hkv,D)
    for (size_t r = 0; r < (size_t)B; r++)
      for (size_t h = 0; h < Hkv; h++) {
        size_t o = ((r * Hkv + h) * (size_t)tc + (size_t)m->len[r]) * D;
        memcpy(m->kc[l] + o, kk + (r * Hkv + h) * D, D * sizeof(float));
        memcpy(m->vc[l] + o, vv + (r * Hkv + h) * D, D * sizeof(float));
      }
  }
  for (int r = 0; r < B; r++) m->len[r]++;
  return NC_OK;
}

int nc_infer_remove(nc_infer *m, int row) {
  if (row < 0 || row >= m->nrows) return -1;
  int last = m->nrows - 1, moved = -1;
  if (row != last) {
    size_t D = (size_t)m->D, Hkv = (size_t)m->Hkv, tc = (size_t)m->tcap;
    for (int l = 0; l < m->L; l++) {
      memcpy(m->kc[l] + (size_t)row * Hkv * tc * D, m->kc[l] + (size_t)last * Hkv * tc * D, Hkv * tc * D * sizeof(float));
      memcpy(m->vc[l] + (size_t)row * Hkv * tc * D, m->vc[l] + (size_t)last * Hkv * tc * D, Hkv * tc * D * sizeof(float));
    }
    memcpy(m->prev_emb + (size_t)row * (size_t)m->C, m->prev_emb + (size_t)last * (size_t)m->C, (size_t)m->C * sizeof(float));
    m->len[row] = m->len[last];
    moved = last;
  }
  m->len[last] = 0;
  m->nrows--;
  return moved;
}

void nc_infer_clear(nc_infer *m) {
  for (int r = 0; r < m->nrows; r++) m->len[r] = 0;
  m->nrows = 0;
}
