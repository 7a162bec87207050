// The evaluation forward pass. See forward.h.
#include "eval/forward.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/model_io.h"
#include "engine/infer.h"
#include "ir/build.h"
#include "models/gpt.h"
#include "runtime/session.h"

struct nc_evalfwd {
  nc_model_spec spec;
  nc_session *sess;
  nc_tok *tok;
  nc_graph *g;
  nc_exec *ex;
  nc_device dev;
  // the gathered-positions plan (nc_evalfwd_gather), built on first use
  nc_exec *gx;
  nc_feed *gfeeds;
  int ngfeeds, gf_tok, gf_pos;
  nc_tensor gtok, gpos;  // wrap tokbuf / posbuf per call
  int32_t *tokbuf, *posbuf;
  size_t tokcap, poscap;
  nc_infer *inf;  // nc_evalfwd_infer
  int inf_rows;
  int64_t inf_seq;
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
  if (!st) f->dev = *dev;  // the plans are compiled on first use (nc_evalfwd_batch, nc_evalfwd_gather)
  if (st) {
    nc_evalfwd_free(f);
    return st;
  }
  *out = f;
  return NC_OK;
}

nc_status nc_evalfwd_set_precision(nc_evalfwd *f, const char *precision) {
  if (f->ex || f->gx || f->inf) return nc_errorf(NC_E_INTERNAL, "eval: --precision after the first forward pass");
  NC_TRY(nc_spec_set_precision(&f->spec, precision, "--precision"));
  nc_graph *g = NULL;
  nc_gpt_opts o = {.with_logits = true};
  NC_TRY(nc_gpt_build(&f->spec, &o, &g));
  nc_graph_free(f->g);
  f->g = g;
  return NC_OK;
}

void nc_evalfwd_free(nc_evalfwd *f) {
  if (!f) return;
  nc_exec_free(f->ex);
  nc_exec_free(f->gx);
  nc_infer_free(f->inf);
  free(f->gfeeds);
  free(f->tokbuf);
  free(f->posbuf);
  nc_graph_free(f->g);
  nc_tok_free(f->tok);
  nc_session_free(f->sess);
  free(f);
}

const nc_tok *nc_evalfwd_tok(const nc_evalfwd *f) { return f->tok; }
const nc_model_spec *nc_evalfwd_spec(const nc_evalfwd *f) { return &f->spec; }
double nc_evalfwd_compile_seconds(const nc_evalfwd *f) {
  return (f->ex ? nc_exec_compile_seconds(f->ex) : 0) + (f->gx ? nc_exec_compile_seconds(f->gx) : 0);
}

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
  if (!f->ex && (st = nc_exec_new(f->g, &f->dev, &f->ex))) return st;
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

// ---- logits at chosen positions ---------------------------------------------------

// The checkpoint's graph without outputs, plus: positions (P) -> gather rows of
// the final normed x (B*T,C) -> lm_head -> softcap -> output "logits" (P,V).
static nc_status nc_evalfwd_gather_build(nc_evalfwd *f) {
  nc_gpt_opts o = {0};
  nc_graph *g;
  NC_TRY(nc_gpt_build(&f->spec, &o, &g));
  nc_id w = nc_graph_find_leaf(g, NC_OP_PARAM, "lm_head.weight"), x = NC_NONE;
  for (nc_id i = 0; w != NC_NONE && i < nc_graph_nnodes(g); i++) {  // lm_head's matmul (bf16: of the weight cast to bf16)
    if (nc_graph_node(g, i)->op != NC_OP_MATMUL) continue;
    nc_id b = nc_graph_input_of(g, i, 1);
    if (b == w || (nc_graph_node(g, b)->op == NC_OP_CAST && nc_graph_input_of(g, b, 0) == w)) x = nc_graph_input_of(g, i, 0), w = b;
  }
  nc_status st = x == NC_NONE ? nc_errorf(NC_E_INTERNAL, "eval forward: no lm_head matmul in the model graph") : NC_OK;
  int kp = 0;
  if (!st) st = nc_graph_sym(g, "P", &kp);
  if (!st) {
    nc_type tx = nc_type_of(g, x);  // (B,T,C)
    nc_dim flat[2], dp[1] = {nc_dim_sym(kp)};
    nc_dim_mul(tx.dim[0], tx.dim[1], &flat[0]);
    flat[1] = tx.dim[2];
    nc_id pos = nc_leaf(g, NC_OP_INPUT, "positions", nc_type_make(NC_I32, 1, dp));
    nc_id xs = nc_op2(g, NC_OP_GATHER, nc_b_reshape_dims(g, x, 2, flat), pos);  // (P,C)
    nc_id lg = nc_b_cast(g, nc_b_matmul(g, xs, w, false, true), NC_F32);      // (P,V)
    double cap = f->spec.softcap;
    if (cap > 0) lg = nc_b_scale(g, nc_op1(g, NC_OP_TANH, nc_op2(g, NC_OP_DIV, lg, nc_b_const_like(g, lg, cap))), cap);
    if (!(st = nc_graph_take_error(g))) st = nc_graph_set_output(g, "logits", lg);
  }
  if (!st) st = nc_exec_new(g, &f->dev, &f->gx);
  nc_graph_free(g);
  if (st) return nc_status_prefix(st, "eval forward (gathered positions): ");
  const nc_graph *fg = nc_exec_feed_graph(f->gx);
  uint32_t nn = nc_graph_nnodes(fg);
  if (!(f->gfeeds = calloc(nn + 1, sizeof *f->gfeeds))) return nc_errorf(NC_E_NOMEM, "eval forward: out of memory");
  f->gf_tok = f->gf_pos = -1;
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(fg, i);
    if (nd->op != NC_OP_INPUT && nd->op != NC_OP_PARAM) continue;
    const char *name = nc_node_name(fg, i);
    int k = f->ngfeeds++;
    f->gfeeds[k].name = name;
    if (nd->op == NC_OP_PARAM) {
      if (!(f->gfeeds[k].value = nc_session_get(f->sess, name)))
        return nc_errorf(NC_E_INVALID, "eval forward: the checkpoint has no parameter '%s'", name);
    } else if (!strcmp(name, "tokens")) f->gf_tok = k, f->gfeeds[k].value = &f->gtok;
    else if (!strcmp(name, "positions")) f->gf_pos = k, f->gfeeds[k].value = &f->gpos;
    else return nc_errorf(NC_E_INTERNAL, "eval forward: unexpected graph input '%s'", name);
  }
  if (f->gf_tok < 0 || f->gf_pos < 0) return nc_errorf(NC_E_INTERNAL, "eval forward: the gathered plan lacks tokens/positions");
  return NC_OK;
}

nc_status nc_evalfwd_gather(nc_evalfwd *f, const int32_t *const *seqs, const int64_t *lens, int nseq, int32_t pad, int npos,
                            const int *prow, const int64_t *ppos, float *logits) {
  if (nseq < 1 || npos < 1) return nc_errorf(NC_E_INVALID, "eval forward: empty batch (%d sequences, %d positions)", nseq, npos);
  if (!f->gx) {
    nc_status st = nc_evalfwd_gather_build(f);
    if (st) {
      nc_exec_free(f->gx);
      f->gx = NULL;
      free(f->gfeeds);
      f->gfeeds = NULL;
      f->ngfeeds = 0;
      return st;
    }
  }
  int64_t T = 1, V = f->spec.vocab_size;
  for (int i = 0; i < nseq; i++) {
    if (lens[i] < 1) return nc_errorf(NC_E_INVALID, "eval forward: sequence %d is empty", i);
    T = lens[i] > T ? lens[i] : T;
  }
  T = (T + 15) / 16 * 16;
  size_t need = (size_t)nseq * (size_t)T;
  if (need > f->tokcap) {
    int32_t *nb = realloc(f->tokbuf, need * sizeof *nb);
    if (!nb) return nc_errorf(NC_E_NOMEM, "eval forward: out of memory for %zu tokens", need);
    f->tokbuf = nb, f->tokcap = need;
  }
  if ((size_t)npos > f->poscap) {
    int32_t *nb = realloc(f->posbuf, (size_t)npos * sizeof *nb);
    if (!nb) return nc_errorf(NC_E_NOMEM, "eval forward: out of memory for %d positions", npos);
    f->posbuf = nb, f->poscap = (size_t)npos;
  }
  for (int i = 0; i < nseq; i++)
    for (int64_t p = 0; p < T; p++) {
      int32_t v = p < lens[i] ? seqs[i][p] : pad;
      if (v < 0 || v >= V)
        return nc_errorf(NC_E_INVALID, "eval forward: token %d at [%d][%lld] is outside the vocabulary [0, %lld)", v, i, (long long)p,
                         (long long)V);
      f->tokbuf[(size_t)i * (size_t)T + (size_t)p] = v;
    }
  for (int k = 0; k < npos; k++) {
    if (prow[k] < 0 || prow[k] >= nseq || ppos[k] < 0 || ppos[k] >= lens[prow[k]])
      return nc_errorf(NC_E_INVALID, "eval forward: position %d (sequence %d, index %lld) is outside the batch", k, prow[k],
                       (long long)ppos[k]);
    int64_t flat = (int64_t)prow[k] * T + ppos[k];
    if (flat > INT32_MAX) return nc_errorf(NC_E_INVALID, "eval forward: batch too large (%lld positions)", (long long)flat);
    f->posbuf[k] = (int32_t)flat;
  }
  f->gtok = nc_tensor_wrap(f->tokbuf, NC_I32, 2, (int64_t[]){nseq, T});
  f->gpos = nc_tensor_wrap(f->posbuf, NC_I32, 1, (int64_t[]){npos});
  nc_tensor out = {0};
  nc_status st = nc_exec_run(f->gx, f->gfeeds, f->ngfeeds, &out);
  if (!st && (out.dtype != NC_F32 || out.rank != 2 || out.shape[0] != npos || out.shape[1] != V))
    st = nc_errorf(NC_E_INTERNAL, "eval forward: unexpected gathered logits output");
  if (!st) memcpy(logits, out.data, (size_t)npos * (size_t)V * sizeof(float));
  nc_tensor_free(&out);
  return st;
}

const nc_device *nc_evalfwd_device(const nc_evalfwd *f) { return &f->dev; }

nc_status nc_evalfwd_infer(nc_evalfwd *f, int rows, int64_t max_seq, nc_infer **out) {
  *out = NULL;
  if (!f->inf || f->inf_rows != rows || f->inf_seq != max_seq) {
    nc_infer_free(f->inf);
    f->inf = NULL;
    NC_TRY(nc_infer_new(&f->spec, f->sess, &f->dev, rows, max_seq, &f->inf));
    f->inf_rows = rows, f->inf_seq = max_seq;
  }
  nc_infer_clear(f->inf);
  *out = f->inf;
  return NC_OK;
}
