// The inference engine (engine/engine.h, docs/engine.md): a worker thread
// that admits queued requests (batch-1 prefill cloned into n rows), runs one
// decode step over every active row, samples, applies the calculator tool
// and stop strings, and streams events.
#include "engine/engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/model_io.h"
#include "engine/calc.h"
#include "engine/infer.h"
#include "engine/sample.h"
#include "support/clock.h"

void nc_gen_opts_default(nc_gen_opts *o) {
  memset(o, 0, sizeof *o);
  o->temperature = 1.0;
  o->top_p = 1.0;
  o->max_tokens = 256;
  o->n = 1;
  o->tools = true;
}

void nc_engine_opts_default(nc_engine_opts *o) {
  memset(o, 0, sizeof *o);
  o->step = -1;
  o->device.kind = NC_DEV_CPU;
  o->slots = 16;
  o->queue_max = 64;
}

const char *nc_finish_name(nc_finish f) {
  switch (f) {
    case NC_FINISH_NONE: return "none";
    case NC_FINISH_STOP: return "stop";
    case NC_FINISH_LENGTH: return "length";
    case NC_FINISH_CANCELLED: return "cancelled";
    case NC_FINISH_ERROR: return "error";
  }
  return "?";
}

typedef struct nc_req nc_req;

#define NC_ENGINE_PROF_B 16  // step profile buckets: 1..16 rows, then one for more

typedef struct {
  nc_req *req;
  int index;          // sample number
  int row;            // row in the decode batch, -1 when none
  bool done;
  nc_finish finish;   // how it ended
  nc_srng rng;
  int32_t next;       // the token to feed at the next decode step
  int64_t ncompletion;
  int32_t *counts;    // per token id (penalties only)
  int32_t forced[64]; // calculator output waiting to replace samples
  int nforced, iforced;
  bool in_python;
  nc_ids expr;        // tokens of the current python block
  nc_tok_stream stream;
  nc_buf pending;     // decoded text not yet emitted (stop strings)
  nc_ids tokens;      // kept for nc_engine_generate
  nc_buf mask, text;
} nc_sample;

struct nc_req {
  uint64_t id;
  nc_gen_opts o;
  char *stops[NC_GEN_MAX_STOP];
  size_t stoplen[NC_GEN_MAX_STOP];
  int32_t *prompt;
  size_t nprompt;
  nc_gen_cb cb;
  void *user;
  nc_sample *s;
  int live;           // samples not done
  bool keep;          // keep tokens/text for nc_engine_generate
  void *waiter;       // nc_engine_generate's (keep only)
  nc_req *next;       // queue / active list
};

struct nc_engine {
  nc_model_spec spec;
  nc_session *params;
  nc_tok *tok;
  nc_infer *m;
  char model_name[96];
  int slots, queue_max;
  int32_t tok_vocab;
  int32_t id_end, id_bos, id_py_start, id_py_end, id_out_start, id_out_end;
  // worker
  pthread_t worker;
  bool started;
  pthread_mutex_t mu;   // the model, the active requests and rows (held by the worker during a step)
  pthread_mutex_t qmu;  // the queue, ids, stats (never held while taking mu)
  pthread_cond_t qcond;
  bool closing;
  nc_req *qhead, *qtail;
  int nqueued, nactive_rows;
  uint64_t next_id, seed_counter;
  nc_req *active;       // admitted requests (under mu)
  nc_sample **rowsamp;  // row -> sample (under mu)
  float *logits;        // (slots, V)
  int32_t *toks;        // (slots)
  int32_t *scratch_idx;
  float *scratch_p;
  // where the worker's time goes (nc_engine_profile_print), by rows in the step (the last bucket: more)
  struct {
    int64_t steps;
    double decode_s, rows_s, sweep_s;  // nc_infer_decode; sampling, tokens, events; dropping finished rows
  } prof[NC_ENGINE_PROF_B + 1];
  double admit_s;  // prefills and first tokens
  int64_t admits, admit_runs;  // requests admitted, prefill runs (several requests per run)
};

const nc_tok *nc_engine_tok(const nc_engine *e) { return e->tok; }
const nc_model_spec *nc_engine_spec(const nc_engine *e) { return &e->spec; }
const char *nc_engine_model_name(const nc_engine *e) { return e->model_name; }
int64_t nc_engine_max_seq(const nc_engine *e) { return nc_infer_max_seq(e->m); }

static void nc_req_free(nc_req *r) {
  if (!r) return;
  for (int i = 0; i < NC_GEN_MAX_STOP; i++) free(r->stops[i]);
  if (r->s)
    for (int k = 0; k < r->o.n; k++) {
      nc_sample *s = &r->s[k];
      free(s->counts);
      nc_ids_free(&s->expr);
      nc_ids_free(&s->tokens);
      nc_buf_free(&s->pending);
      nc_buf_free(&s->mask);
      nc_buf_free(&s->text);
    }
  free(r->s);
  free(r->prompt);
  free(r);
}

// ---- events -----------------------------------------------------------------------------
static void nc_emit(nc_engine *e, nc_sample *s, const char *text, size_t len, nc_finish fin, const char *err) {
  nc_req *r = s->req;
  if (r->keep && len) nc_buf_put(&s->text, text, len);
  if (!r->cb || (!len && fin == NC_FINISH_NONE)) return;
  nc_gen_event ev = {.req = r->id,
                     .sample = s->index,
                     .text = text ? text : "",
                     .len = len,
                     .finish = fin,
                     .prompt_tokens = (int64_t)r->nprompt,
                     .completion_tokens = s->ncompletion,
                     .error = err};
  (void)e;
  r->cb(r->user, &ev);
}

// Emits what of s->pending can no longer start a stop string; at a stop
// string, emits the text before it and returns true.
static bool nc_stop_scan(nc_engine *e, nc_sample *s, bool final) {
  nc_req *r = s->req;
  const char *p = s->pending.data;
  size_t n = s->pending.len;
  size_t cut = n;
  bool hit = false;
  for (int k = 0; k < r->o.nstop; k++) {
    size_t m = r->stoplen[k];
    if (!m || m > n) continue;
    for (size_t i = 0; i + m <= n && i < cut; i++)
      if (!memcmp(p + i, r->stops[k], m)) {
        cut = i;
        hit = true;
        break;
      }
  }
  if (hit) {
    if (cut) nc_emit(e, s, p, cut, NC_FINISH_NONE, NULL);
    s->pending.len = 0;
    return true;
  }
  size_t hold = 0;
  if (!final)
    for (int k = 0; k < r->o.nstop; k++) {
      size_t m = r->stoplen[k];
      for (size_t h = m ? m - 1 : 0; h > hold; h--)
        if (h <= n && !memcmp(p + n - h, r->stops[k], h)) {
          hold = h;
          break;
        }
    }
  if (n > hold) {
    nc_emit(e, s, p, n - hold, NC_FINISH_NONE, NULL);
    memmove(s->pending.data, p + n - hold, hold);
    s->pending.len = hold;
  }
  return false;
}

// Ends sample s: flushes held text (unless a stop string ended it) and
// sends the last event.
static void nc_sample_finish(nc_engine *e, nc_sample *s, nc_finish fin, const char *err) {
  if (s->done) return;
  if (fin != NC_FINISH_ERROR && fin != NC_FINISH_CANCELLED) {
    nc_tok_stream_flush(&s->stream, &s->pending);
    if (fin == NC_FINISH_STOP && s->pending.len == 0) {
      // nothing left
    } else if (nc_stop_scan(e, s, true)) {
      fin = NC_FINISH_STOP;
    }
  }
  s->done = true;
  s->finish = fin;
  s->req->live--;
  nc_emit(e, s, NULL, 0, fin, err);
}

// A new token of sample s (sampled, or forced by the calculator). Returns
// false when the sample has ended.
static bool nc_sample_token(nc_engine *e, nc_sample *s, int32_t t, bool forced) {
  nc_req *r = s->req;
  s->ncompletion++;
  if (!forced && (t == e->id_end || t == e->id_bos)) {
    nc_sample_finish(e, s, NC_FINISH_STOP, NULL);
    return false;
  }
  if (s->counts && t >= 0 && t < e->tok_vocab) s->counts[t]++;
  if (r->keep) {
    nc_ids_push(&s->tokens, t);
    uint8_t mk = forced ? 0 : 1;
    nc_buf_put(&s->mask, &mk, 1);
  }
  if (r->o.tools && e->id_py_start >= 0) {
    if (t == e->id_py_start) {
      s->in_python = true;
      s->expr.len = 0;
    } else if (t == e->id_py_end && s->in_python) {
      s->in_python = false;
      nc_buf dec, res;
      nc_buf_init(&dec);
      nc_buf_init(&res);
      nc_status st = nc_tok_decode(e->tok, s->expr.data, s->expr.len, &dec);
      if (!st) st = nc_calc_eval(dec.data ? dec.data : "", dec.len, &res);
      nc_ids ids = {0};
      if (!st) st = nc_tok_encode(e->tok, res.data, res.len, &(nc_tok_encode_opts){.threads = 1}, &ids);
      if (!st && ids.len + 2 <= sizeof s->forced / sizeof s->forced[0]) {
        s->nforced = s->iforced = 0;
        s->forced[s->nforced++] = e->id_out_start;
        for (size_t i = 0; i < ids.len; i++) s->forced[s->nforced++] = ids.data[i];
        s->forced[s->nforced++] = e->id_out_end;
      }
      nc_status_free(st);  // a failed evaluation injects nothing
      nc_ids_free(&ids);
      nc_buf_free(&dec);
      nc_buf_free(&res);
    } else if (s->in_python) {
      nc_ids_push(&s->expr, t);
    }
  }
  size_t before = s->pending.len;
  nc_status st = nc_tok_stream_push(e->tok, &s->stream, t, &s->pending);
  if (st) {
    nc_sample_finish(e, s, NC_FINISH_ERROR, nc_status_msg(st));
    nc_status_free(st);
    return false;
  }
  if (s->pending.len > before || r->o.nstop) {
    if (nc_stop_scan(e, s, false)) {
      nc_sample_finish(e, s, NC_FINISH_STOP, NULL);
      return false;
    }
  }
  if (s->ncompletion >= r->o.max_tokens) {
    nc_sample_finish(e, s, NC_FINISH_LENGTH, NULL);
    return false;
  }
  s->next = t;
  return true;
}

// Picks the next token of s from its logits row.
static int32_t nc_sample_next(nc_engine *e, nc_sample *s, float *logits, bool *forced) {
  if (s->iforced < s->nforced) {
    *forced = true;
    return s->forced[s->iforced++];
  }
  *forced = false;
  nc_sample_params sp = {s->req->o.temperature, s->req->o.top_k, s->req->o.top_p, s->req->o.presence_penalty,
                         s->req->o.frequency_penalty};
  return nc_sample_pick(logits, e->tok_vocab, s->counts, &sp, &s->rng, e->scratch_idx, e->scratch_p);
}

// ---- rows -----------------------------------------------------------------------------------
// Removes the row of s from the batch (under mu).
static void nc_row_drop(nc_engine *e, nc_sample *s) {
  if (s->row < 0) return;
  int row = s->row;
  int moved = nc_infer_remove(e->m, row);
  if (moved >= 0) {
    e->rowsamp[row] = e->rowsamp[moved];
    e->rowsamp[row]->row = row;
  }
  s->row = -1;
}

static void nc_active_unlink(nc_engine *e, nc_req *r) {
  for (nc_req **pp = &e->active; *pp; pp = &(*pp)->next)
    if (*pp == r) {
      *pp = r->next;
      return;
    }
}

static void nc_stats_rows(nc_engine *e) {
  pthread_mutex_lock(&e->qmu);
  e->nactive_rows = nc_infer_rows(e->m);
  pthread_mutex_unlock(&e->qmu);
}

// Frees finished requests (under mu). nc_engine_generate's requests are
// handed to their waiter instead.
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  nc_req *r;
} nc_waiter;

static void nc_req_retire(nc_engine *e, nc_req *r) {
  nc_active_unlink(e, r);
  if (r->keep) {
    nc_waiter *w = r->waiter;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    w->r = r;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return;
  }
  nc_req_free(r);
}

static void nc_sweep(nc_engine *e) {
  for (int row = 0; row < nc_infer_rows(e->m);) {
    nc_sample *s = e->rowsamp[row];
    if (s->done || nc_infer_row_len(e->m, row) >= nc_infer_max_seq(e->m)) {
      if (!s->done) nc_sample_finish(e, s, NC_FINISH_LENGTH, NULL);
      nc_row_drop(e, s);  // the last row moved here: look at row again
    } else {
      row++;
    }
  }
  for (nc_req *r = e->active, *nx; r; r = nx) {
    nx = r->next;
    if (r->live == 0) nc_req_retire(e, r);
  }
  nc_stats_rows(e);
}

// Admits requests rs[0..k) together (under mu): one prefill run for all
// their prompts (nc_infer_prefill_batch), then each sample's first token.
#define NC_ENGINE_ADMIT_MAX 16        // requests per prefill run
#define NC_ENGINE_ADMIT_TOKENS 2048  // padded prompt tokens per prefill run (requests x longest prompt)
static void nc_admit_group(nc_engine *e, nc_req **rs, int k) {
  const int32_t *pr[NC_ENGINE_ADMIT_MAX];
  int64_t len[NC_ENGINE_ADMIT_MAX];
  int cp[NC_ENGINE_ADMIT_MAX], rows = 0;
  for (int i = 0; i < k; i++) {
    nc_req *r = rs[i];
    r->next = e->active;
    e->active = r;
    pr[i] = r->prompt, len[i] = (int64_t)r->nprompt, cp[i] = r->o.n, rows += r->o.n;
  }
  nc_status st = nc_infer_prefill_batch(e->m, k, pr, len, cp, e->logits);  // logits: k rows
  int64_t V = e->spec.vocab_size;
  int row = nc_infer_rows(e->m) - rows;
  for (int i = 0; i < k; i++) {
    nc_req *r = rs[i];
    for (int j = 0; j < r->o.n; j++) {
      nc_sample *s = &r->s[j];
      if (st) {
        s->row = -1;
        nc_sample_finish(e, s, NC_FINISH_ERROR, nc_status_msg(st));
        continue;
      }
      s->row = row;
      e->rowsamp[row++] = s;
      // every sample draws its own first token from its request's logits; with
      // n > 1 each draws from a copy in row k (free: k requests < rows <= slots)
      float *lg = e->logits + (size_t)i * (size_t)V;
      if (r->o.n > 1) {
        memcpy(e->logits + (size_t)k * (size_t)V, lg, (size_t)V * sizeof(float));
        lg = e->logits + (size_t)k * (size_t)V;
      }
      bool forced;
      int32_t t = nc_sample_next(e, s, lg, &forced);
      nc_sample_token(e, s, t, forced);
    }
  }
  nc_status_free(st);
}

// One decode step over every row (under mu).
static void nc_step(nc_engine *e) {
  int B = nc_infer_rows(e->m);
  if (!B) return;
  double t0 = nc_clock_now();
  for (int r = 0; r < B; r++) e->toks[r] = e->rowsamp[r]->next;
  nc_status st = nc_infer_decode(e->m, e->toks, e->logits);
  double t1 = nc_clock_now();
  int pb = B > NC_ENGINE_PROF_B ? 0 : B;
  e->prof[pb].steps++;
  e->prof[pb].decode_s += t1 - t0;
  if (st) {
    for (int r = 0; r < B; r++) nc_sample_finish(e, e->rowsamp[r], NC_FINISH_ERROR, nc_status_msg(st));
    nc_status_free(st);
    return;
  }
  int64_t V = e->spec.vocab_size;
  for (int r = 0; r < B; r++) {
    nc_sample *s = e->rowsamp[r];
    if (s->done) continue;  // (a callback may have cancelled it)
    bool forced;
    int32_t t = nc_sample_next(e, s, e->logits + (size_t)r * (size_t)V, &forced);
    nc_sample_token(e, s, t, forced);
  }
  e->prof[pb].rows_s += nc_clock_now() - t1;
}

static void *nc_worker(void *arg) {
  nc_engine *e = arg;
  for (;;) {
    pthread_mutex_lock(&e->qmu);
    while (!e->closing && !e->qhead && e->nactive_rows == 0) pthread_cond_wait(&e->qcond, &e->qmu);
    bool closing = e->closing;
    pthread_mutex_unlock(&e->qmu);
    if (closing) break;
    pthread_mutex_lock(&e->mu);
    // admit queued requests (in order) while their samples fit the free rows,
    // up to NC_ENGINE_ADMIT_MAX of them (and NC_ENGINE_ADMIT_TOKENS padded
    // prompt tokens) per prefill run
    for (;;) {
      nc_req *rs[NC_ENGINE_ADMIT_MAX];
      int k = 0, rows = 0;
      size_t longest = 0;
      pthread_mutex_lock(&e->qmu);
      for (nc_req *r = e->qhead; r && k < NC_ENGINE_ADMIT_MAX; r = e->qhead) {
        size_t lg = r->nprompt > longest ? r->nprompt : longest;
        if (r->o.n > e->slots - nc_infer_rows(e->m) - rows) break;
        if (k && (size_t)(k + 1) * lg > NC_ENGINE_ADMIT_TOKENS) break;
        e->qhead = r->next;
        if (!e->qhead) e->qtail = NULL;
        e->nqueued--;
        r->next = NULL;
        rs[k++] = r, rows += r->o.n, longest = lg;
      }
      pthread_mutex_unlock(&e->qmu);
      if (!k) break;
      double t0 = nc_clock_now();
      nc_admit_group(e, rs, k);
      nc_sweep(e);
      e->admit_s += nc_clock_now() - t0;
      e->admits += k;
      e->admit_runs++;
    }
    int B = nc_infer_rows(e->m);
    nc_step(e);
    double t0 = nc_clock_now();
    nc_sweep(e);
    if (B) e->prof[B > NC_ENGINE_PROF_B ? 0 : B].sweep_s += nc_clock_now() - t0;
    pthread_mutex_unlock(&e->mu);
  }
  return NULL;
}

// ---- public API -----------------------------------------------------------------------------
nc_status nc_engine_open(const nc_engine_opts *o, nc_engine **out) {
  *out = NULL;
  if (!o->ckpt_dir) return nc_errorf(NC_E_INVALID, "engine: no checkpoint folder given");
  if (o->slots < 1 || o->slots > 1024) return nc_errorf(NC_E_INVALID, "engine: slots %d is outside 1..1024", o->slots);
  if (o->queue_max < 0) return nc_errorf(NC_E_INVALID, "engine: queue_max %d is negative", o->queue_max);
  nc_engine *e = calloc(1, sizeof *e);
  if (!e) return nc_errorf(NC_E_NOMEM, "out of memory");
  e->slots = o->slots;
  e->queue_max = o->queue_max;
  pthread_mutex_init(&e->mu, NULL);
  pthread_mutex_init(&e->qmu, NULL);
  pthread_cond_init(&e->qcond, NULL);
  nc_status st = NC_OK;
  if (!(e->params = nc_session_new())) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto fail;
  }
  if ((st = nc_model_ckpt_load(o->ckpt_dir, o->step, &e->spec, e->params, NULL, NULL))) goto fail;
  // The weights in one buffer of huge pages: a CPU decode step streams all of
  // them once per token, ~15-20 % faster than from 4 KiB pages (docs/engine.md).
  if (o->device.kind == NC_DEV_CPU && (st = nc_session_pack(e->params))) goto fail;
  if (o->precision && (st = nc_spec_set_precision(&e->spec, o->precision, "--precision"))) goto fail;
  char path[4096];
  if (o->tokenizer) snprintf(path, sizeof path, "%s", o->tokenizer);
  else snprintf(path, sizeof path, "%s/tokenizer.tiktoken", o->ckpt_dir);
  if ((st = nc_tok_load(path, &e->tok))) {
    st = nc_status_prefix(st, "engine: tokenizer %s: ", path);
    goto fail;
  }
  size_t tv = nc_tok_vocab_size(e->tok);
  if (tv > (size_t)e->spec.vocab_size) {
    st = nc_errorf(NC_E_INVALID, "engine: tokenizer %s has %zu ids but model '%s' only %d (vocab_size)", path, tv,
                   e->spec.name, e->spec.vocab_size);
    goto fail;
  }
  e->tok_vocab = (int32_t)tv;
  e->id_end = nc_tok_special_id(e->tok, "<|assistant_end|>");
  e->id_bos = nc_tok_bos_id(e->tok);
  e->id_py_start = nc_tok_special_id(e->tok, "<|python_start|>");
  e->id_py_end = nc_tok_special_id(e->tok, "<|python_end|>");
  e->id_out_start = nc_tok_special_id(e->tok, "<|output_start|>");
  e->id_out_end = nc_tok_special_id(e->tok, "<|output_end|>");
  if (e->id_py_end < 0 || e->id_out_start < 0 || e->id_out_end < 0) e->id_py_start = -1;  // no tool
  snprintf(e->model_name, sizeof e->model_name, "nanochat-%s", e->spec.name);
  if ((st = nc_infer_new(&e->spec, e->params, &o->device, e->slots, o->max_seq, &e->m))) goto fail;
  e->rowsamp = calloc((size_t)e->slots, sizeof *e->rowsamp);
  e->logits = malloc((size_t)e->slots * (size_t)e->spec.vocab_size * sizeof(float));
  e->toks = calloc((size_t)e->slots, sizeof *e->toks);
  e->scratch_idx = malloc((size_t)e->spec.vocab_size * sizeof(int32_t));
  e->scratch_p = malloc((size_t)e->spec.vocab_size * sizeof(float));
  if (!e->rowsamp || !e->logits || !e->toks || !e->scratch_idx || !e->scratch_p) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto fail;
  }
  e->next_id = 1;
  e->seed_counter = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)e << 16);
  if (pthread_create(&e->worker, NULL, nc_worker, e)) {
    st = nc_errorf(NC_E_INTERNAL, "engine: cannot start the worker thread");
    goto fail;
  }
  e->started = true;
  *out = e;
  return NC_OK;
fail:
  nc_engine_close(e);
  return st;
}

void nc_engine_close(nc_engine *e) {
  if (!e) return;
  if (e->started) {
    pthread_mutex_lock(&e->qmu);
    e->closing = true;
    pthread_cond_broadcast(&e->qcond);
    pthread_mutex_unlock(&e->qmu);
    pthread_join(e->worker, NULL);
  }
  for (int list = 0; list < 2; list++)
    for (nc_req *r = list ? e->active : e->qhead, *nx; r; r = nx) {
      nx = r->next;
      if (!r->keep) {
        nc_req_free(r);
        continue;
      }
      // a thread waits in nc_engine_generate*: hand the request back, unfinished samples cancelled
      for (int k = 0; k < r->o.n; k++)
        if (!r->s[k].done) r->s[k].done = true, r->s[k].finish = NC_FINISH_CANCELLED;
      nc_waiter *w = r->waiter;
      pthread_mutex_lock(&w->mu);
      w->done = true;
      w->r = r;
      pthread_cond_signal(&w->cv);
      pthread_mutex_unlock(&w->mu);
    }
  e->qhead = e->active = NULL;
  nc_infer_free(e->m);
  nc_tok_free(e->tok);
  nc_session_free(e->params);
  free(e->rowsamp);
  free(e->logits);
  free(e->toks);
  free(e->scratch_idx);
  free(e->scratch_p);
  pthread_mutex_destroy(&e->mu);
  pthread_mutex_destroy(&e->qmu);
  pthread_cond_destroy(&e->qcond);
  free(e);
}

static nc_status nc_engine_check(nc_engine *e, const int32_t *prompt, size_t n, const nc_gen_opts *o) {
  if (!n) return nc_errorf(NC_E_INVALID, "the prompt is empty");
  if ((int64_t)n > nc_infer_max_seq(e->m))
    return nc_errorf(NC_E_INVALID, "the prompt has %zu tokens; the model's context holds %lld", n,
                     (long long)nc_infer_max_seq(e->m));
  for (size_t i = 0; i < n; i++)
    if (prompt[i] < 0 || prompt[i] >= e->tok_vocab)
      return nc_errorf(NC_E_INVALID, "prompt token %zu: id %d is outside the vocabulary 0..%d", i, prompt[i],
                       e->tok_vocab - 1);
  if (o->n < 1 || o->n > e->slots)
    return nc_errorf(NC_E_INVALID, "n = %d: samples per request must be 1..%d (the engine's slots)", o->n, e->slots);
  if (o->max_tokens < 1) return nc_errorf(NC_E_INVALID, "max_tokens = %d must be at least 1", o->max_tokens);
  if (!(o->temperature >= 0) || o->temperature > 1e6)
    return nc_errorf(NC_E_INVALID, "temperature = %g must be >= 0", o->temperature);
  if (o->top_k < 0) return nc_errorf(NC_E_INVALID, "top_k = %d must be >= 0", o->top_k);
  if (!(o->top_p > 0 && o->top_p <= 1)) return nc_errorf(NC_E_INVALID, "top_p = %g must be in (0, 1]", o->top_p);
  if (!(o->presence_penalty >= -2 && o->presence_penalty <= 2))
    return nc_errorf(NC_E_INVALID, "presence_penalty = %g must be in [-2, 2]", o->presence_penalty);
  if (!(o->frequency_penalty >= -2 && o->frequency_penalty <= 2))
    return nc_errorf(NC_E_INVALID, "frequency_penalty = %g must be in [-2, 2]", o->frequency_penalty);
  if (o->nstop < 0 || o->nstop > NC_GEN_MAX_STOP)
    return nc_errorf(NC_E_INVALID, "%d stop strings (at most %d)", o->nstop, NC_GEN_MAX_STOP);
  for (int k = 0; k < o->nstop; k++)
    if (!o->stop[k] || !o->stop[k][0]) return nc_errorf(NC_E_INVALID, "stop string %d is empty", k);
    else if (nc_utf8_invalid_at(o->stop[k], strlen(o->stop[k])) >= 0)
      return nc_errorf(NC_E_INVALID, "stop string %d is not valid UTF-8", k);
  return NC_OK;
}

static nc_status nc_engine_submit_req(nc_engine *e, const int32_t *prompt, size_t n, const nc_gen_opts *o, nc_gen_cb cb,
                                      void *user, void *waiter, uint64_t *id) {
  bool keep = waiter != NULL;
  NC_TRY(nc_engine_check(e, prompt, n, o));
  nc_req *r = calloc(1, sizeof *r);
  if (!r) return nc_errorf(NC_E_NOMEM, "out of memory");
  r->o = *o;
  r->cb = cb;
  r->user = user;
  r->keep = keep;
  r->waiter = waiter;
  r->nprompt = n;
  r->prompt = malloc(n * sizeof *r->prompt);
  r->s = calloc((size_t)o->n, sizeof *r->s);
  bool oom = !r->prompt || !r->s;
  for (int k = 0; k < o->nstop && !oom; k++) {
    r->stops[k] = strdup(o->stop[k]);
    r->o.stop[k] = r->stops[k];
    r->stoplen[k] = r->stops[k] ? strlen(r->stops[k]) : 0;
    oom |= !r->stops[k];
  }
  for (int k = o->nstop; k < NC_GEN_MAX_STOP; k++) r->o.stop[k] = NULL;
  bool pen = o->presence_penalty != 0 || o->frequency_penalty != 0;
  for (int k = 0; k < o->n && !oom; k++) {
    nc_sample *s = &r->s[k];
    s->req = r;
    s->index = k;
    s->row = -1;
    nc_tok_stream_init(&s->stream);
    nc_buf_init(&s->pending);
    nc_buf_init(&s->mask);
    nc_buf_init(&s->text);
    if (pen) oom |= !(s->counts = calloc((size_t)e->tok_vocab, sizeof *s->counts));
  }
  if (oom) {
    nc_req_free(r);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  memcpy(r->prompt, prompt, n * sizeof *prompt);
  r->live = o->n;
  pthread_mutex_lock(&e->qmu);
  if (e->nqueued >= e->queue_max) {
    pthread_mutex_unlock(&e->qmu);
    nc_req_free(r);
    return nc_errorf(NC_E_UNSUPPORTED, "engine: queue full (%d requests waiting)", e->queue_max);
  }
  r->id = e->next_id++;
  uint64_t seed = o->seeded ? o->seed : (e->seed_counter += 0x9e3779b97f4a7c15ull);
  for (int k = 0; k < o->n; k++) nc_srng_seed(&r->s[k].rng, seed, (uint64_t)k);
  if (e->qtail) e->qtail->next = r;
  else e->qhead = r;
  e->qtail = r;
  e->nqueued++;
  if (id) *id = r->id;
  pthread_cond_signal(&e->qcond);
  pthread_mutex_unlock(&e->qmu);
  return NC_OK;
}

nc_status nc_engine_submit(nc_engine *e, const int32_t *prompt, size_t n, const nc_gen_opts *o, nc_gen_cb cb,
                           void *user, uint64_t *id) {
  return nc_engine_submit_req(e, prompt, n, o, cb, user, NULL, id);
}

void nc_engine_cancel(nc_engine *e, uint64_t id) {
  // still queued: drop it, it never had an event
  pthread_mutex_lock(&e->qmu);
  for (nc_req **pp = &e->qhead, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next)
    if ((*pp)->id == id) {
      nc_req *r = *pp;
      *pp = r->next;
      if (e->qtail == r) e->qtail = prev;
      e->nqueued--;
      pthread_mutex_unlock(&e->qmu);
      nc_req_free(r);
      return;
    }
  pthread_mutex_unlock(&e->qmu);
  // active: from a callback the worker already holds mu; else wait for the step to end
  bool on_worker = e->started && pthread_equal(pthread_self(), e->worker);
  if (!on_worker) pthread_mutex_lock(&e->mu);
  for (nc_req *r = e->active; r; r = r->next) {
    if (r->id != id || r->keep) continue;
    r->cb = NULL;  // no more events
    for (int k = 0; k < r->o.n; k++) {
      nc_sample *s = &r->s[k];
      if (!s->done) {
        s->done = true;
        r->live--;
      }
      if (!on_worker) nc_row_drop(e, s);  // the worker sweeps its own rows after the step
    }
    if (!on_worker) {
      nc_active_unlink(e, r);
      nc_req_free(r);
      nc_stats_rows(e);
    }
    break;
  }
  if (!on_worker) pthread_mutex_unlock(&e->mu);
}

void nc_engine_stats_get(nc_engine *e, nc_engine_stats *s) {
  pthread_mutex_lock(&e->qmu);
  s->queued = e->nqueued;
  s->active = e->nactive_rows;
  s->slots = e->slots;
  pthread_mutex_unlock(&e->qmu);
}

nc_status nc_engine_generate(nc_engine *e, const int32_t *prompt, size_t n, const nc_gen_opts *o, nc_gen_result *out) {
  return nc_engine_generate_stream(e, prompt, n, o, NULL, NULL, out);
}

nc_status nc_engine_generate_stream(nc_engine *e, const int32_t *prompt, size_t n, const nc_gen_opts *o, nc_gen_cb cb,
                                    void *user, nc_gen_result *out) {
  memset(out, 0, sizeof *out);
  nc_waiter w = {.done = false};
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  uint64_t id;
  nc_status st = nc_engine_submit_req(e, prompt, n, o, cb, user, &w, &id);
  if (!st) {
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    nc_req *r = w.r;
    out->n = r->o.n;
    out->prompt_tokens = (int64_t)r->nprompt;
    out->tokens = calloc((size_t)out->n, sizeof *out->tokens);
    out->text = calloc((size_t)out->n, sizeof *out->text);
    out->mask = calloc((size_t)out->n, sizeof *out->mask);
    out->finish = calloc((size_t)out->n, sizeof *out->finish);
    if (!out->tokens || !out->text || !out->mask || !out->finish) {
      st = nc_errorf(NC_E_NOMEM, "out of memory");
    } else {
      for (int k = 0; k < out->n; k++) {
        nc_sample *s = &r->s[k];
        out->tokens[k] = s->tokens;
        out->text[k] = s->text;
        out->mask[k] = s->mask;
        memset(&s->tokens, 0, sizeof s->tokens);
        nc_buf_init(&s->text);
        nc_buf_init(&s->mask);
        out->finish[k] = s->finish;
      }
    }
    nc_req_free(r);
    if (st) nc_gen_result_free(out);
  }
  pthread_mutex_destroy(&w.mu);
  pthread_cond_destroy(&w.cv);
  return st;
}

void nc_gen_result_free(nc_gen_result *r) {
  for (int k = 0; k < r->n; k++) {
    if (r->tokens) nc_ids_free(&r->tokens[k]);
    if (r->text) nc_buf_free(&r->text[k]);
    if (r->mask) nc_buf_free(&r->mask[k]);
  }
  free(r->tokens);
  free(r->text);
  free(r->mask);
  free(r->finish);
  memset(r, 0, sizeof *r);
}

void nc_engine_profile_print(nc_engine *e, int top) {
  pthread_mutex_lock(&e->mu);
  fprintf(stderr, "prefill plan:\n");
  nc_exec_profile_print(nc_infer_exec(e->m, 0), top);
  fprintf(stderr, "decode plan (2+ rows):\n");
  nc_exec_profile_print(nc_infer_exec(e->m, 1), top);
  if (nc_infer_exec(e->m, 2)) {
    fprintf(stderr, "decode plan (1 row):\n");
    nc_exec_profile_print(nc_infer_exec(e->m, 2), top);
  }
  fprintf(stderr, "engine worker: %lld requests admitted in %lld prefill runs (prefill, first tokens): %.3f ms per run\n",
          (long long)e->admits, (long long)e->admit_runs, e->admit_runs ? 1e3 * e->admit_s / (double)e->admit_runs : 0.0);
  fprintf(stderr, "  rows   steps   decode ms/step   rows ms/step (sample, tokens, events)   sweep ms/step\n");
  for (int b = 1; b <= NC_ENGINE_PROF_B + 1; b++) {
    int i = b > NC_ENGINE_PROF_B ? 0 : b;
    double n = (double)e->prof[i].steps;
    if (n == 0) continue;
    fprintf(stderr, "  %s%-3d %7lld %16.3f %40.3f %15.3f\n", i ? " " : ">", i ? b : NC_ENGINE_PROF_B,
            (long long)e->prof[i].steps, 1e3 * e->prof[i].decode_s / n, 1e3 * e->prof[i].rows_s / n,
            1e3 * e->prof[i].sweep_s / n);
  }
  pthread_mutex_unlock(&e->mu);
}

nc_status nc_engine_set_params(nc_engine *e, const nc_session *src) {
  nc_status st = NC_OK;
  pthread_mutex_lock(&e->mu);  // the worker holds mu during a step: weights change between steps only
  for (int i = 0; i < nc_session_count(e->params) && !st; i++) {
    const char *name = nc_session_name_at(e->params, i);
    const nc_tensor *d = nc_session_get(e->params, name), *s = nc_session_get(src, name);
    if (!s) st = nc_errorf(NC_E_INVALID, "engine: new weights lack '%s'", name);
    else if (nc_tensor_nbytes(s) != nc_tensor_nbytes(d) || s->dtype != d->dtype)
      st = nc_errorf(NC_E_INVALID, "engine: new weights for '%s' have another shape or dtype", name);
    else memcpy(d->data, s->data, nc_tensor_nbytes(d));
  }
  pthread_mutex_unlock(&e->mu);
  return st;
}
