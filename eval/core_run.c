// Running CORE and bits per byte on a model (batched forward passes).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "eval/core.h"
#include "eval/forward.h"

static double nc_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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
} nc_pending;

// Scores the pending examples after one forward pass over all their sequences.
static nc_status nc_core_flush(nc_evalfwd *f, nc_core_type type, nc_pending *pend, int np, int64_t *correct) {
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
  for (int i = 0, k = 0; !st && i < np; k += pend[i].s.n, i++) {
    if (type == NC_CORE_LM)
      *correct += nc_core_lm_correct(pred[k], seqs[k], pend[i].s.start[0], pend[i].s.end[0]);
    else
      *correct += nc_core_pick_lowest((const double *const *)&loss[k], pend[i].s.start, pend[i].s.end, pend[i].s.n) == pend[i].gold;
  }
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

static nc_status nc_core_task_run(nc_evalfwd *f, const nc_core_opts *o, const nc_core_task *t, const char *path, nc_core_result *r) {
  nc_core_data d;
  nc_status st = nc_core_data_load(path, t->type, &d);
  if (st) return st;
  if ((st = nc_core_data_shuffle(&d, o->max_per_task))) {
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
  double t0 = nc_now(), last = t0;
  for (int64_t idx = 0; !st && idx < d.n; idx++) {
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
      if ((st = nc_core_flush(f, t->type, pend, np, &r->correct))) {
        nc_core_seqs_free(&s);
        break;
      }
      np = nseq = 0;
      maxl = 0;
      newmax = l;
    }
    pend[np].s = s;
    pend[np].gold = d.items[idx].gold;
    np++;
    nseq += s.n;
    maxl = newmax;
    if (np == batch) {
      if ((st = nc_core_flush(f, t->type, pend, np, &r->correct))) break;
      np = nseq = 0;
      maxl = 0;
    }
    double now = nc_now();
    if (o->progress && now - last > 5) {
      fprintf(stderr, "core: %s %lld/%lld (%.0f s)\n", t->label, (long long)idx + 1, (long long)d.n, now - t0);
      last = now;
    }
  }
  if (!st) st = nc_core_flush(f, t->type, pend, np, &r->correct);
  else
    for (int i = 0; i < np; i++) nc_core_seqs_free(&pend[i].s);
  free(pend);
  r->n = d.n;
  nc_core_data_free(&d);
  return st;
}

nc_status nc_core_run(nc_evalfwd *f, const nc_core_opts *o, nc_core_result **res, int *nres, double *core) {
  *res = NULL;
  *nres = 0;
  *core = NAN;
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
    double t0 = nc_now();
    if ((st = nc_core_task_run(f, o, t, path, r))) {
      st = nc_status_prefix(st, "core task '%s': ", t->label);
      break;
    }
    r->seconds = nc_now() - t0;
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
  double t0 = nc_now(), last = t0;
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
    double now = nc_now();
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
