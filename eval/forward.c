// The evaluation forward pass. See forward.h.
#include "eval/forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/model_io.h"
#include "models/gpt.h"
#include "runtime/session.h"

struct nc_evalfwd {
  nc_model_spec spec;
  nc_session *sess;
  nc_tok *tok;
  nc_graph *g;
  nc_exec *ex;
};

nc_status nc_evalfwd_open(const char *ckpt, int64_t step, const char *tok_path, const nc_device *dev, nc_evalfwd **out) {
  *out = NULL;
  nc_evalfwd *f = calloc(1, sizeof *f);
  if (!f) return nc_errorf(NC_E_NOMEM, "eval: out of memory");
  f->sess = nc_session_new();
  nc_status st = f->sess ? NC_OK : nc_errorf(NC_E_NOMEM, "eval: out of memory");
  if (!st) st = nc_model_ckpt_load(ckpt, step, &f->spec, f->sess, NULL, NULL);
  char path[4096];
  if (tok_path) snprintf(path, sizeof path, "%s", tok_path);
  else snprintf(path, sizeof path, "%s/tokenizer.tiktoken", ckpt);
  if (!st && (st = nc_tok_load(path, &f->tok))) st = nc_status_prefix(st, "eval: tokenizer %s: ", path);
  if (!st && (int64_t)nc_tok_vocab_size(f->tok) > f->spec.vocab_size)
    st = nc_errorf(NC_E_INVALID, "eval: tokenizer %s has %zu ids but the model only %d (vocab_size)", path,
                   nc_tok_vocab_size(f->tok), f->spec.vocab_size);
  nc_gpt_opts o = {.with_logits = true};
  if (!st) st = nc_gpt_build(&f->spec, &o, &f->g);
  if (!st) st = nc_exec_new(f->g, dev, &f->ex);
  if (st) {
    nc_evalfwd_free(f);
    return st;
  }
  *out = f;
  return NC_OK;
}

void nc_evalfwd_free(nc_evalfwd *f) {
  if (!f) return;
  nc_exec_free(f->ex);
  nc_graph_free(f->g);
  nc_tok_free(f->tok);
  nc_session_free(f->sess);
  free(f);
}

const nc_tok *nc_evalfwd_tok(const nc_evalfwd *f) { return f->tok; }
const nc_model_spec *nc_evalfwd_spec(const nc_evalfwd *f) { return &f->spec; }
double nc_evalfwd_compile_seconds(const nc_evalfwd *f) { return nc_exec_compile_seconds(f->ex); }

double nc_logits_ce(const float *row, int64_t v, int32_t target) {
  double m = -INFINITY;
  for (int64_t j = 0; j < v; j++) m = row[j] > m ? row[j] : m;
  double s = 0;
  for (int64_t j = 0; j < v; j++) s += exp((double)row[j] - m);
  return m + log(s) - (double)row[target];
}

int32_t nc_logits_argmax(const float *row, int64_t v) {
  int32_t best = 0;
  for (int64_t j = 1; j < v; j++)
    if (row[j] > row[best]) best = (int32_t)j;
  return best;
}

// Runs the batch; *logits points into the session's (B,T,V) output.
static nc_status nc_evalfwd_batch(nc_evalfwd *f, const int32_t *const *seqs, const int64_t *lens, int nseq, int32_t pad,
                                  const float **logits, int64_t *tpad) {
  if (nseq < 1) return nc_errorf(NC_E_INVALID, "eval forward: empty batch");
  int64_t T = 1;
  for (int i = 0; i < nseq; i++) {
    if (lens[i] < 1) return nc_errorf(NC_E_INVALID, "eval forward: sequence %d is empty", i);
    T = lens[i] > T ? lens[i] : T;
  }
  T = (T + 15) / 16 * 16;
  int64_t shape[2] = {nseq, T};
  nc_tensor tok;
  nc_status st = nc_tensor_alloc(&tok, NC_I32, 2, shape);
  if (st) return st;
  int32_t *d = tok.data;
  for (int i = 0; i < nseq; i++)
    for (int64_t p = 0; p < T; p++) {
      int32_t v = p < lens[i] ? seqs[i][p] : pad;
      if (v < 0 || v >= f->spec.vocab_size) {
        nc_tensor_free(&tok);
        return nc_errorf(NC_E_INVALID, "eval forward: token %d at [%d][%lld] is outside the vocabulary [0, %d)", v, i,
                         (long long)p, f->spec.vocab_size);
      }
      d[i * T + p] = v;
    }
  if ((st = nc_session_put(f->sess, "tokens", &tok))) return st;
  if ((st = nc_session_run_exec(f->sess, f->ex))) return st;
  const nc_tensor *lt = nc_session_get(f->sess, "logits");
  if (!lt || lt->dtype != NC_F32 || lt->rank != 3 || lt->shape[0] != nseq || lt->shape[1] != T || lt->shape[2] != f->spec.vocab_size)
    return nc_errorf(NC_E_INTERNAL, "eval forward: unexpected logits output");
  *logits = lt->data;
  *tpad = T;
  return NC_OK;
}

nc_status nc_evalfwd_run(nc_evalfwd *f, const int32_t *const *seqs, const int64_t *lens, int nseq, int32_t pad,
                         const int64_t *from, const int64_t *to, double **loss, int32_t **pred) {
  const float *lg;
  int64_t T, V = f->spec.vocab_size;
  nc_status st = nc_evalfwd_batch(f, seqs, lens, nseq, pad, &lg, &T);
  if (st) return st;
  for (int i = 0; i < nseq; i++)
    for (int64_t p = from && from[i] > 0 ? from[i] : 0; p < (to && to[i] < lens[i] ? to[i] : lens[i]); p++) {
      const float *row = lg + ((int64_t)i * T + p) * V;
      if (loss) loss[i][p] = p + 1 < lens[i] ? nc_logits_ce(row, V, seqs[i][p + 1]) : NAN;
      if (pred) pred[i][p] = nc_logits_argmax(row, V);
    }
  return NC_OK;
}

nc_status nc_evalfwd_logits_at(nc_evalfwd *f, const int32_t *const *seqs, const int64_t *lens, int nseq, int32_t pad,
                               const int64_t *pos, float **logits) {
  for (int i = 0; i < nseq; i++)
    if (pos[i] < 0 || pos[i] >= lens[i]) return nc_errorf(NC_E_INVALID, "eval forward: position %lld outside sequence %d", (long long)pos[i], i);
  const float *lg;
  int64_t T, V = f->spec.vocab_size;
  nc_status st = nc_evalfwd_batch(f, seqs, lens, nseq, pad, &lg, &T);
  if (st) return st;
  for (int i = 0; i < nseq; i++) memcpy(logits[i], lg + ((int64_t)i * T + pos[i]) * V, (size_t)V * sizeof(float));
  return NC_OK;
}
