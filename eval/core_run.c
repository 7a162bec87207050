// Running CORE and bits per byte on a model (batched forward passes).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "eval/core.h"
#include "engine/infer.h"
#include "eval/forward.h"
#include "support/clock.h"

static bool nc_label_wanted(const char *list, const char *label) {
  if (!list) return true;
  size_t n = strlen(label);
  for (const char *p = list; *p;) {
    const char *c = strchr(p, ',');
    size_t k = c ? (size_t)(c - p) : strlen(p);
    if (k == n && !strncmp(p, label, n)) return true;
    p += k + (c ? 1 : 0);
  }
  return false;
}

// A pending example: its sequences in the current batch.
typedef struct {
  nc_core_seqs s;
  int gold;
  int64_t idx;
} nc_pending;

// Scores one example from its per-choice losses (mc/schema) or predictions (lm)
// and reports it.
static bool nc_core_score(const nc_core_opts *o, const nc_core_task *t, int64_t idx, int gold, const nc_core_seqs *s,
                          const double *const *loss, const int32_t *pred) {
  nc_core_example ex = {t->label, t->type, idx, 0, NULL, -1, gold, false};
  double mean[64];
  if (t->type == NC_CORE_LM) {
    ex.correct = nc_core_lm_correct(pred, s->seqs[0].data, s->start[0], s->end[0]);
    ex.gold = -1;
  } else {
    ex.pick = nc_core_pick_lowest(loss, s->start, s->end, s->n);
    ex.correct = ex.pick == gold;
    ex.n = s->n < 64 ? s->n : 64;
    for (int i = 0; i < ex.n; i++) mean[i] = nc_core_mean_loss(loss[i], s->start[i], s->end[i]);
    ex.mean_ce = mean;
  }
  if (o->on_example) o->on_example(o->ctx, &ex);
  return ex.correct;
}

// Scores the pending examples after one forward pass over all their sequences.
static nc_status nc_core_flush(nc_evalfwd *f, const nc_core_opts *o, const nc_core_task *t, nc_pending *pend, int np, int64_t *correct,
                               int64_t *tokens) {
  nc_core_type type = t->type;
  if (!np) return NC_OK;
  int nseq = 0;
  for (int i = 0; i < np; i++) nseq += pend[i].s.n;
  const int32_t **seqs = calloc((size_t)nseq, sizeof *seqs);
  int64_t *lens = calloc((size_t)nseq, sizeof *lens), *from = calloc((size_t)nseq, sizeof *from), *to = calloc((size_t)nseq, sizeof *to);
  double **loss = calloc((size_t)nseq, sizeof *loss);
  int32_t **pred = calloc((size_t)nseq, sizeof *pred);
  nc_status st = seqs && lens && from && to && loss && pred ? NC_OK : nc_errorf(NC_E_NOMEM, "core: out of memory");
  for (int i = 0, k = 0; !st && i < np; i++)
    for (int j = 0; j < pend[i].s.n; j++, k++) {
      seqs[k] = pend[i].s.seqs[j].data;
      lens[k] = (int64_t)pend[i].s.seqs[j].len;
      from[k] = pend[i].s.start[j] - 1;  // only the continuation's positions are scored
      to[k] = pend[i].s.end[j] - 1;
      loss[k] = malloc((size_t)lens[k] * sizeof(double));
      pred[k] = malloc((size_t)lens[k] * sizeof(int32_t));
      if (!loss[k] || !pred[k]) st = nc_errorf(NC_E_NOMEM, "core: out of memory");
    }
  if (!st) st = nc_evalfwd_run(f, seqs, lens, nseq, nc_tok_bos_id(nc_evalfwd_tok(f)), from, to, loss, type == NC_CORE_LM ? pred : NULL);
  int64_t T = 0;
  for (int k = 0; !st && k < nseq; k++) T = lens[k] > T ? lens[k] : T;
  *tokens += (T + 15) / 16 * 16 * nseq;
  for (int i = 0, k = 0; !st && i < np; k += pend[i].s.n, i++)
    *correct += nc_core_score(o, t, pend[i].idx, pend[i].gold, &pend[i].s, (const double *const *)&loss[k], pred[k]);
  for (int k = 0; k < nseq && loss && pred; k++) free(loss[k]), free(pred[k]);
  free(seqs);
  free(lens);
  free(from);
  free(to);
  free(loss);
  free(pred);
  for (int i = 0; i < np; i++) nc_core_seqs_free(&pend[i].s);
  return st;
}

// ---- the shared path ---------------------------------------------------------------

// Renders and tokenizes example idx (bos, spans, cropping), printing its prompts
// under -v.
static nc_status nc_core_prepare(nc_evalfwd *f, const nc_core_opts *o, const nc_core_task *t, const nc_core_data *d, int64_t idx,
                                 int64_t max_len, nc_core_seqs *s) {
  nc_buf *prompts = NULL;
  int n = 0;
  NC_TRY(nc_core_render(t, d, idx, &prompts, &n));
  if (o->verbose > 0 && idx < o->verbose) {
    fprintf(stderr, "---- %s example %lld (gold %d) ----\n", t->label, (long long)idx, t->type == NC_CORE_LM ? -1 : d->items[idx].gold);
    for (int i = 0; i < n; i++) fprintf(stderr, "[prompt %d]\n%s\n", i, prompts[i].data ? prompts[i].data : "");
  }
  nc_status st = nc_core_tokenize(nc_evalfwd_tok(f), t->type, prompts, n, s);
  for (int i = 0; i < n; i++) nc_buf_free(&prompts[i]);
  free(prompts);
  if (!st) nc_core_crop(s, max_len);
  return st;
}

// An example of a chunk: its sequences, the shared prefix [0, c) and which
// choices are scored from it, per-choice losses (mc/schema), predictions (lm).
typedef struct {
  int64_t idx;
  int gold;
  nc_core_seqs s;
  int64_t c;
  bool *shared, *kv;  // per choice: scored from the prefix row / from the KV cache
  int nkv;
  double **loss;
  int32_t *pred;
} nc_core_ex;

// One forward row: the shared prefix of example ex (choice -1) or one choice's
// whole sequence; positions [p0, p1) scored.
typedef struct {
  int ex, choice;
  const int32_t *tok;
  int64_t len, p0, p1;
} nc_core_row;

static void nc_core_ex_free(nc_core_ex *e) {
  for (int i = 0; e->loss && i < e->s.n; i++) free(e->loss[i]);
  free(e->loss);
  free(e->shared);
  free(e->kv);
  free(e->pred);
  nc_core_seqs_free(&e->s);
  memset(e, 0, sizeof *e);
}

// Fills e (whose s is set) and appends its rows.
static nc_status nc_core_ex_rows(nc_core_type type, nc_core_ex *e, int ei, bool kv, nc_core_row *rows, int *nrows) {
  nc_core_seqs *s = &e->s;
  if (type == NC_CORE_LM) {
    if (!(e->pred = malloc(s->seqs[0].len * sizeof *e->pred))) return nc_errorf(NC_E_NOMEM, "core: out of memory");
    if (s->end[0] > s->start[0])
      rows[(*nrows)++] = (nc_core_row){ei, 0, s->seqs[0].data, (int64_t)s->seqs[0].len, s->start[0] - 1, s->end[0] - 1};
    return NC_OK;
  }
  e->loss = calloc((size_t)s->n, sizeof *e->loss);
  e->shared = calloc((size_t)s->n, sizeof *e->shared);
  e->kv = calloc((size_t)s->n, sizeof *e->kv);
  if (!e->loss || !e->shared || !e->kv) return nc_errorf(NC_E_NOMEM, "core: out of memory");
  // the common token prefix of the (cropped) sequences: logits at p < c are the same for every choice
  int64_t c = INT64_MAX;
  for (int i = 0; i < s->n; i++) c = (int64_t)s->seqs[i].len < c ? (int64_t)s->seqs[i].len : c;
  for (int64_t p = 0; p < c; p++) {
    bool same = true;
    for (int i = 1; i < s->n && same; i++) same = s->seqs[i].data[p] == s->seqs[0].data[p];
    if (!same) c = p;
  }
  e->c = c;
  int64_t p0 = INT64_MAX, p1 = 0;
  for (int i = 0; i < s->n; i++) {
    if (!(e->loss[i] = malloc(s->seqs[i].len * sizeof(double)))) return nc_errorf(NC_E_NOMEM, "core: out of memory");
    int64_t a = s->start[i] - 1, b = s->end[i] - 1;  // scored positions [a, b)
    if (a >= b) {
      e->shared[i] = true;  // nothing to score (mean of nothing: nan)
    } else if (b <= c) {
      e->shared[i] = true;  // every scored position lies in the prefix
      p0 = a < p0 ? a : p0;
      p1 = b > p1 ? b : p1;
    } else if (kv && c >= 1 && a == c - 1) {
      e->kv[i] = true;  // the prefix's last logits, then decode steps over the continuation
      e->nkv++;
    } else {
      rows[(*nrows)++] = (nc_core_row){ei, i, s->seqs[i].data, (int64_t)s->seqs[i].len, a, b};
    }
  }
  // the prefill of the KV choices also yields the logits at c - 1: no prefix row needed for that alone
  if (e->nkv && p0 == c - 1 && p1 == c) p1 = p0;
  if (p1 > p0) rows[(*nrows)++] = (nc_core_row){ei, -1, s->seqs[0].data, c, p0, p1};
  return NC_OK;
}

static int nc_core_row_cmp(const void *a, const void *b) {
  const nc_core_row *x = a, *y = b;
  if (x->len != y->len) return x->len > y->len ? -1 : 1;  // longest first
  if (x->ex != y->ex) return x->ex < y->ex ? -1 : 1;
  return x->choice < y->choice ? -1 : x->choice > y->choice;
}

// The forward scratch of a task run (kept across batches).
typedef struct {
  const int32_t **seqs;
  int64_t *lens, *ppos;
  int *prow, *pref;  // pref[k]: the row (index into the sorted rows) of position k
  float *logits;
  int maxrows, maxpos;
} nc_core_scratch;

static void nc_core_scratch_free(nc_core_scratch *b) {
  free(b->seqs);
  free(b->lens);
  free(b->ppos);
  free(b->prow);
  free(b->pref);
  free(b->logits);
  memset(b, 0, sizeof *b);
}

static nc_status nc_core_scratch_fit(nc_core_scratch *b, int rows, int pos, int64_t V) {
  if (rows > b->maxrows) {
    const int32_t **s = realloc(b->seqs, (size_t)rows * sizeof *s);
    if (s) b->seqs = s;
    int64_t *l = realloc(b->lens, (size_t)rows * sizeof *l);
    if (l) b->lens = l;
    if (!s || !l) return nc_errorf(NC_E_NOMEM, "core: out of memory");
    b->maxrows = rows;
  }
  if (pos > b->maxpos) {
    int64_t *pp = realloc(b->ppos, (size_t)pos * sizeof *pp);
    if (pp) b->ppos = pp;
    int *pr = realloc(b->prow, (size_t)pos * sizeof *pr);
    if (pr) b->prow = pr;
    int *rf = realloc(b->pref, (size_t)pos * sizeof *rf);
    if (rf) b->pref = rf;
    float *lg = realloc(b->logits, (size_t)pos * (size_t)V * sizeof *lg);
    if (lg) b->logits = lg;
    if (!pp || !pr || !rf || !lg) return nc_errorf(NC_E_NOMEM, "core: out of memory");
    b->maxpos = pos;
  }
  return NC_OK;
}

// Runs rows[a, z) as one batch and stores the losses / predictions.
static nc_status nc_core_run_rows(nc_evalfwd *f, nc_core_type type, nc_core_ex *exs, const nc_core_row *rows, int a, int z,
                                  nc_core_scratch *b) {
  int64_t V = nc_evalfwd_spec(f)->vocab_size;
  int npos = 0;
  for (int r = a; r < z; r++) npos += (int)(rows[r].p1 - rows[r].p0);
  NC_TRY(nc_core_scratch_fit(b, z - a, npos, V));
  for (int r = a, k = 0; r < z; r++) {
    b->seqs[r - a] = rows[r].tok;
    b->lens[r - a] = rows[r].len;
    for (int64_t p = rows[r].p0; p < rows[r].p1; p++, k++) b->prow[k] = r - a, b->ppos[k] = p, b->pref[k] = r;
  }
  NC_TRY(nc_evalfwd_gather(f, b->seqs, b->lens, z - a, nc_tok_bos_id(nc_evalfwd_tok(f)), npos, b->prow, b->ppos, b->logits));
  for (int k = 0; k < npos; k++) {
    const nc_core_row *rw = &rows[b->pref[k]];
    nc_core_ex *e = &exs[rw->ex];
    const float *lg = b->logits + (size_t)k * (size_t)V;
    int64_t p = b->ppos[k];
    if (type == NC_CORE_LM) e->pred[p] = nc_logits_argmax(lg, V);
    else if (rw->choice >= 0) e->loss[rw->choice][p] = nc_logits_ce(lg, V, e->s.seqs[rw->choice].data[p + 1]);
    else
      for (int i = 0; i < e->s.n; i++)  // the prefix row serves every shared choice scored at p
        if (e->shared[i] && e->s.start[i] - 1 <= p && p < e->s.end[i] - 1)
          e->loss[i][p] = nc_logits_ce(lg, V, e->s.seqs[i].data[p + 1]);
  }
  return NC_OK;
}

// The chunk's KV choices: per group of examples (at most `rows` choices), each
// example's prefix through the prefill plan into the cache (one row per KV
// choice), then the continuations' tokens as decode steps.
static nc_status nc_core_run_kv(nc_evalfwd *f, nc_core_ex *exs, int ne, int rows, int64_t max_len, int64_t *tokens) {
  int maxkv = 0;
  for (int i = 0; i < ne; i++) maxkv = exs[i].nkv > maxkv ? exs[i].nkv : maxkv;
  if (!maxkv) return NC_OK;
  rows = maxkv > rows ? maxkv : rows;
  nc_infer *m;
  NC_TRY(nc_evalfwd_infer(f, rows, max_len + 1, &m));
  int64_t V = nc_evalfwd_spec(f)->vocab_size;
  int32_t bos = nc_tok_bos_id(nc_evalfwd_tok(f));
  float *lg = malloc((size_t)rows * (size_t)V * sizeof *lg);
  int *rex = malloc((size_t)rows * sizeof *rex), *rch = malloc((size_t)rows * sizeof *rch);
  int32_t *tok = malloc((size_t)rows * sizeof *tok);
  nc_status st = lg && rex && rch && tok ? NC_OK : nc_errorf(NC_E_NOMEM, "core: out of memory");
  for (int i = 0; !st && i < ne;) {
    nc_infer_clear(m);
    int nr = 0;
    int64_t steps = 0;
    for (; !st && i < ne; i++) {
      nc_core_ex *e = &exs[i];
      if (!e->nkv) continue;
      if (nr + e->nkv > rows) break;
      const nc_core_seqs *s = &e->s;
      int64_t c = e->c;
      if ((st = nc_infer_prefill(m, s->seqs[0].data, c, e->nkv, lg))) break;
      *tokens += c;
      for (int ch = 0; ch < s->n; ch++) {
        if (s->start[ch] - 1 <= c - 1 && c - 1 < s->end[ch] - 1 && (e->kv[ch] || e->shared[ch]))
          e->loss[ch][c - 1] = nc_logits_ce(lg, V, s->seqs[ch].data[c]);
        if (!e->kv[ch]) continue;
        rex[nr] = i, rch[nr] = ch, nr++;
        steps = s->end[ch] - 1 - c > steps ? s->end[ch] - 1 - c : steps;
      }
    }
    for (int64_t j = 0; !st && j < steps; j++) {  // token c + j of every row -> logits at position c + j
      for (int r = 0; r < nr; r++) {
        const nc_core_ex *e = &exs[rex[r]];
        tok[r] = e->c + j < e->s.end[rch[r]] - 1 ? e->s.seqs[rch[r]].data[e->c + j] : bos;  // finished rows idle on bos
      }
      if ((st = nc_infer_decode(m, tok, lg))) break;
      *tokens += nr;
      for (int r = 0; r < nr; r++) {
        nc_core_ex *e = &exs[rex[r]];
        int ch = rch[r];
        int64_t p = e->c + j;
        if (p < e->s.end[ch] - 1) e->loss[ch][p] = nc_logits_ce(lg + (size_t)r * (size_t)V, V, e->s.seqs[ch].data[p + 1]);
      }
    }
  }
  free(lg);
  free(rex);
  free(rch);
  free(tok);
  return st;
}

// CORE of one task on the shared path: chunks of examples are rendered and
// tokenized, their rows sorted by length (longest first) and packed into
// batches of at most `batch` rows and `batch_tokens` padded tokens.
static nc_status nc_core_task_run_shared(nc_evalfwd *f, const nc_core_opts *o, const nc_core_task *t, const nc_core_data *d,
                                         nc_core_result *r) {
  int batch = o->batch > 0 ? o->batch : 32;
  int64_t budget = o->batch_tokens > 0 ? o->batch_tokens : 8192;
  int64_t max_len = o->max_len > 0 ? o->max_len : 10 * (int64_t)nc_evalfwd_spec(f)->sequence_len;
  int64_t chunk = o->chunk > 0 ? o->chunk : 512;
  int world = o->world > 1 ? o->world : 1, rank = o->world > 1 ? o->rank : 0;
  bool kv = o->kv_cache > 0 || (o->kv_cache == 0 && nc_evalfwd_device(f)->kind != NC_DEV_OPENCL);
  int maxch = 1;
  for (int64_t i = 0; i < d->n; i++) maxch = d->items[i].nchoices > maxch ? d->items[i].nchoices : maxch;
  nc_core_ex *exs = calloc((size_t)chunk, sizeof *exs);
  nc_core_row *rows = calloc((size_t)chunk * (size_t)(maxch + 1), sizeof *rows);
  nc_core_scratch sc = {0};
  nc_status st = exs && rows ? NC_OK : nc_errorf(NC_E_NOMEM, "core: out of memory");
  double t0 = nc_clock_now(), last = t0;
  r->n = 0;
  for (int64_t from = rank; !st && from < d->n;) {
    int ne = 0, nrows = 0;
    for (; !st && ne < chunk && from < d->n; from += world, ne++) {
      nc_core_ex *e = &exs[ne];
      e->idx = from;
      e->gold = d->items[from].gold;
      if (!(st = nc_core_prepare(f, o, t, d, from, max_len, &e->s))) st = nc_core_ex_rows(t->type, e, ne, kv, rows, &nrows);
    }
    qsort(rows, (size_t)nrows, sizeof *rows, nc_core_row_cmp);
    for (int a = 0; !st && a < nrows;) {
      int64_t T = (rows[a].len + 15) / 16 * 16;  // the batch's padded length: its first (longest) row
      int z = a + 1;
      int64_t npos = rows[a].p1 - rows[a].p0;
      while (z < nrows && z - a < batch && (int64_t)(z - a + 1) * T <= budget && npos + (rows[z].p1 - rows[z].p0) <= 4096)
        npos += rows[z].p1 - rows[z].p0, z++;
      st = nc_core_run_rows(f, t->type, exs, rows, a, z, &sc);
      r->tokens += T * (z - a);
      a = z;
    }
    if (!st && kv) st = nc_core_run_kv(f, exs, ne, 16, max_len, &r->tokens);
    for (int i = 0; i < ne; i++) {
      if (!st) {
        r->correct += nc_core_score(o, t, exs[i].idx, exs[i].gold, &exs[i].s, (const double *const *)exs[i].loss, exs[i].pred);
        r->n++;
      }
      nc_core_ex_free(&exs[i]);
    }
    double now = nc_clock_now();
    if (!st && o->progress && now - last > 5) {
      fprintf(stderr, "core: %s %lld/%lld (%.0f s)\n", t->label, (long long)(from < d->n ? from : d->n), (long long)d->n, now - t0);
      last = now;
    }
  }
  nc_core_scratch_free(&sc);
  free(exs);
  free(rows);
  return st;
}

static nc_status nc_core_task_run(nc_evalfwd *f, const nc_core_opts *o, const nc_core_task *t, const char *path, nc_core_result *r) {
  nc_core_data d;
  nc_status st = nc_core_data_load(path, t->type, &d);
  if (st) return st;
  if ((st = nc_core_data_shuffle(&d, o->max_per_task))) {
    nc_core_data_free(&d);
    return st;
  }
  if (!o->unshared) {
    st = nc_core_task_run_shared(f, o, t, &d, r);
    nc_core_data_free(&d);
    return st;
  }
  int batch = o->batch > 0 ? o->batch : 32;
  int64_t budget = o->batch_tokens > 0 ? o->batch_tokens : 8192;
  int64_t max_len = o->max_len > 0 ? o->max_len : 10 * (int64_t)nc_evalfwd_spec(f)->sequence_len;
  nc_pending *pend = calloc((size_t)batch, sizeof *pend);
  if (!pend) st = nc_errorf(NC_E_NOMEM, "core: out of memory");
  int np = 0, nseq = 0;
  int64_t maxl = 0;
  double t0 = nc_clock_now(), last = t0;
  int world = o->world > 1 ? o->world : 1, rank = o->world > 1 ? o->rank : 0;
  r->n = 0;
  for (int64_t idx = rank; !st && idx < d.n; idx += world) {
    nc_buf *prompts = NULL;
    int n = 0;
    if ((st = nc_core_render(t, &d, idx, &prompts, &n))) break;
    if (o->verbose > 0 && idx < o->verbose) {
      fprintf(stderr, "---- %s example %lld (gold %d) ----\n", t->label, (long long)idx, t->type == NC_CORE_LM ? -1 : d.items[idx].gold);
      for (int i = 0; i < n; i++) fprintf(stderr, "[prompt %d]\n%s\n", i, prompts[i].data ? prompts[i].data : "");
    }
    nc_core_seqs s;
    st = nc_core_tokenize(nc_evalfwd_tok(f), t->type, prompts, n, &s);
    for (int i = 0; i < n; i++) nc_buf_free(&prompts[i]);
    free(prompts);
    if (st) break;
    nc_core_crop(&s, max_len);
    int64_t l = 0;
    for (int i = 0; i < s.n; i++) l = (int64_t)s.seqs[i].len > l ? (int64_t)s.seqs[i].len : l;
    int64_t newmax = l > maxl ? l : maxl;
    // flush first if this example would overflow the batch
    if (np && (nseq + s.n > batch || (int64_t)(nseq + s.n) * newmax > budget)) {
      if ((st = nc_core_flush(f, o, t, pend, np, &r->correct, &r->tokens))) {
        nc_core_seqs_free(&s);
        break;
      }
      np = nseq = 0;
      maxl = 0;
      newmax = l;
    }
    pend[np].s = s;
    pend[np].gold = d.items[idx].gold;
    pend[np].idx = idx;
    r->n++;
    np++;
    nseq += s.n;
    maxl = newmax;
    if (np == batch) {
      if ((st = nc_core_flush(f, o, t, pend, np, &r->correct, &r->tokens))) break;
      np = nseq = 0;
      maxl = 0;
    }
    double now = nc_clock_now();
    if (o->progress && now - last > 5) {
      fprintf(stderr, "core: %s %lld/%lld (%.0f s)\n", t->label, (long long)idx + 1, (long long)d.n, now - t0);
      last = now;
    }
  }
  if (!st) st = nc_core_flush(f, o, t, pend, np, &r->correct, &r->tokens);
  else
    for (int i = 0; i < np; i++) nc_core_seqs_free(&pend[i].s);
  free(pend);
  nc_core_data_free(&d);
  return st;
}


nc_status nc_core_run(nc_evalfwd *f, const nc_core_opts *o, nc_core_result **res, int *nres, double *core) {
  *res = NULL;
  *nres = 0;
  *core = NAN;
  if (o->world > 1 && (o->rank < 0 || o->rank >= o->world))
    return nc_errorf(NC_E_INVALID, "core: rank %d is outside [0, world = %d)", o->rank, o->world);
  nc_core_config cfg;
  nc_status st = nc_core_config_load(o->bundle, &cfg);
  if (st) return st;
  // every requested label must exist
  for (const char *p = o->tasks; p && *p && !st;) {
    const char *c = strchr(p, ',');
    size_t k = c ? (size_t)(c - p) : strlen(p);
    bool found = false;
    for (int i = 0; i < cfg.n; i++) found |= strlen(cfg.tasks[i].label) == k && !strncmp(cfg.tasks[i].label, p, k);
    if (!found) st = nc_errorf(NC_E_INVALID, "--tasks: no task '%.*s' in %s/core.yaml", (int)k, p, o->bundle);
    p += k + (c ? 1 : 0);
  }
  nc_core_result *rs = st ? NULL : calloc((size_t)cfg.n, sizeof *rs);
  if (!st && !rs) st = nc_errorf(NC_E_NOMEM, "core: out of memory");
  int nr = 0, ncore = 0;
  double sum = 0;
  for (int i = 0; !st && i < cfg.n; i++) {
    const nc_core_task *t = &cfg.tasks[i];
    if (!nc_label_wanted(o->tasks, t->label)) continue;
    nc_core_result *r = &rs[nr++];
    snprintf(r->label, sizeof r->label, "%s", t->label);
    r->type = t->type;
    r->num_fewshot = t->num_fewshot;
    r->baseline = t->baseline;
    char path[4400];
    struct stat sb;
    snprintf(path, sizeof path, "%s/eval_data/%s", o->bundle, t->uri);
    if (stat(path, &sb)) snprintf(path, sizeof path, "%s/eval_data/%s.gz", o->bundle, t->uri);
    if (stat(path, &sb)) {
      r->skipped = true;
      snprintf(r->note, sizeof r->note, "task file eval_data/%s(.gz) not in the bundle", t->uri);
      if (o->progress) fprintf(stderr, "core: %s skipped: %s\n", t->label, r->note);
      continue;
    }
    if (isnan(t->baseline)) {
      st = nc_errorf(NC_E_INVALID, "%s/eval_meta_data.csv: no random baseline for task '%s'", o->bundle, t->label);
      break;
    }
    double t0 = nc_clock_now();
    if ((st = nc_core_task_run(f, o, t, path, r))) {
      st = nc_status_prefix(st, "core task '%s': ", t->label);
      break;
    }
    r->seconds = nc_clock_now() - t0;
    r->acc = r->n ? (double)r->correct / (double)r->n : 0;
    r->centered = nc_core_centered(r->acc, t->baseline);
    sum += r->centered;
    ncore++;
    if (o->progress)
      fprintf(stderr, "core: %-34s %-17s %2d-shot n=%-6lld acc %.4f centered %+.4f (%.1f s)\n", t->label, nc_core_type_name(t->type),
              t->num_fewshot, (long long)r->n, r->acc, r->centered, r->seconds);
  }
  nc_core_config_free(&cfg);
  if (st) {
    free(rs);
    return st;
  }
  *res = rs;
  *nres = nr;
  *core = ncore ? sum / ncore : NAN;
  return NC_OK;
}

nc_status nc_core_results_merge(nc_core_result *res, int nres, const nc_core_result *part, int npart, double *core) {
  int ncore = 0;
  double sum = 0;
  for (int i = 0; i < nres; i++) {
    nc_core_result *r = &res[i];
    for (int j = 0; !r->skipped && j < npart; j++) {
      if (strcmp(part[j].label, r->label) || part[j].skipped) continue;
      if (part[j].n < 0 || part[j].correct < 0 || part[j].correct > part[j].n)
        return nc_errorf(NC_E_INVALID, "merge: task '%s' has %lld correct of %lld", r->label, (long long)part[j].correct, (long long)part[j].n);
      r->n += part[j].n;
      r->correct += part[j].correct;
      r->tokens += part[j].tokens;
      r->seconds = part[j].seconds > r->seconds ? part[j].seconds : r->seconds;
    }
    if (r->skipped) continue;
    r->acc = r->n ? (double)r->correct / (double)r->n : 0;
    r->centered = nc_core_centered(r->acc, r->baseline);
    sum += r->centered;
    ncore++;
  }
  *core = ncore ? sum / ncore : NAN;
  return NC_OK;
}

// ---- bits per byte -------------------------------------------------------------------------

nc_status nc_eval_bpb(nc_evalfwd *f, const char *const *files, int nfiles, int64_t max_tokens, int batch, bool progress, double *bpb,
                      int64_t *ntokens) {
  *bpb = NAN;
  *ntokens = 0;
  const nc_tok *tok = nc_evalfwd_tok(f);
  int64_t T = nc_evalfwd_spec(f)->sequence_len;
  if (batch < 1) batch = 8;
  if (max_tokens <= 0) max_tokens = 1 << 20;
  size_t V = nc_tok_vocab_size(tok);
  int32_t *tb = calloc(V, sizeof *tb);
  nc_ids stream = {0};
  nc_tok_docfile *df = NULL;
  nc_status st = tb ? NC_OK : nc_errorf(NC_E_NOMEM, "bpb: out of memory");
  if (!st) nc_tok_token_bytes(tok, tb);
  if (!st) st = nc_tok_docfile_open((const char *const *)files, (size_t)nfiles, &df);
  // tokens needed: rows of T+1 (targets = row[1:])
  int64_t want = max_tokens + max_tokens / T + 1;
  nc_tok_encode_opts eo = {NC_TOK_SPECIAL_ORDINARY, 0};
  while (!st && (int64_t)stream.len < want) {
    const char *doc;
    size_t len;
    if ((st = nc_tok_docfile_next(df, &doc, &len)) || !doc) break;
    if (!(st = nc_ids_push(&stream, nc_tok_bos_id(tok)))) st = nc_tok_encode(tok, doc, len, &eo, &stream);
  }
  if (df) nc_tok_docfile_close(df);
  int64_t rows = (int64_t)stream.len / (T + 1);
  if (!st && rows * T > max_tokens) rows = max_tokens / T > 0 ? max_tokens / T : 1;
  if (!st && rows < 1)
    st = nc_errorf(NC_E_INVALID, "bpb: the validation files hold %zu tokens, fewer than one row of %lld", stream.len, (long long)T + 1);
  double nats = 0, bytes = 0;
  const int32_t **seqs = calloc((size_t)batch, sizeof *seqs);
  int64_t *lens = calloc((size_t)batch, sizeof *lens);
  double **loss = calloc((size_t)batch, sizeof *loss);
  if (!st && (!seqs || !lens || !loss)) st = nc_errorf(NC_E_NOMEM, "bpb: out of memory");
  for (int i = 0; !st && i < batch; i++)
    if (!(loss[i] = malloc((size_t)(T + 1) * sizeof(double)))) st = nc_errorf(NC_E_NOMEM, "bpb: out of memory");
  double t0 = nc_clock_now(), last = t0;
  for (int64_t r0 = 0; !st && r0 < rows; r0 += batch) {
    int nb = (int)(rows - r0 < batch ? rows - r0 : batch);
    for (int i = 0; i < nb; i++) seqs[i] = stream.data + (r0 + i) * (T + 1), lens[i] = T + 1;
    if ((st = nc_evalfwd_run(f, seqs, lens, nb, nc_tok_bos_id(tok), NULL, NULL, loss, NULL))) break;
    for (int i = 0; i < nb; i++)
      for (int64_t p = 0; p < T; p++) {
        int32_t y = seqs[i][p + 1];
        int32_t nb_ = y >= 0 && (size_t)y < V ? tb[y] : 0;
        if (nb_ > 0) nats += loss[i][p], bytes += nb_;
      }
    *ntokens += (int64_t)nb * T;
    double now = nc_clock_now();
    if (progress && now - last > 5) {
      fprintf(stderr, "bpb: %lld/%lld tokens (%.0f s)\n", (long long)*ntokens, (long long)(rows * T), now - t0);
      last = now;
    }
  }
  for (int i = 0; loss && i < batch; i++) free(loss[i]);
  free(loss);
  free(seqs);
  free(lens);
  free(tb);
  nc_ids_free(&stream);
  if (!st && bytes <= 0) st = nc_errorf(NC_E_INVALID, "bpb: no target token has bytes");
  if (!st) *bpb = nats / (log(2.0) * bytes);
  return st;
}
