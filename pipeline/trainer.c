// The compiled training step and evaluation graphs of one model (trainer.h).
#include "pipeline/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/gpt.h"

struct nc_trainer {
  nc_trainer_opts o;
  nc_session *sess;
  nc_graph *g_step, *g_acc, *g_loss, *g_logits;  // g_step: the optimizer-only graph when data parallel
  nc_exec *x_step, *x_acc, *x_loss, *x_logits;
  bool dp;      // data parallel: accumulate, all-reduce, apply
  float *flat;  // dp: every gradient, flattened for one all-reduce
  nc_param_desc *params;
  int nparams;
  int32_t *in, *tg;  // (B,T) micro-batch staging
  double compile_s;
};

static nc_status nc_tr_put_i32(nc_session *s, const char *name, const int32_t *v, int64_t B, int64_t T) {
  nc_tensor t;
  int64_t shape[2] = {B, T};
  NC_TRY(nc_tensor_alloc(&t, NC_I32, 2, shape));
  memcpy(t.data, v, (size_t)(B * T) * sizeof(int32_t));
  return nc_session_put(s, name, &t);
}

static nc_status nc_tr_zero(nc_session *s, const char *name, const nc_param_desc *d, bool only_missing) {
  const nc_tensor *have = nc_session_get(s, name);
  if (have && only_missing) return NC_OK;
  if (have && have->data) {
    memset(have->data, 0, nc_tensor_nbytes(have));
    return NC_OK;
  }
  nc_tensor z;
  NC_TRY(nc_tensor_alloc(&z, NC_F32, d->rank, d->shape));
  return nc_session_put(s, name, &z);
}

nc_status nc_trainer_open(const nc_trainer_opts *o, nc_session *sess, nc_trainer **out) {
  if (o->B < 1 || o->T < 1 || o->grad_accum < 1)
    return nc_errorf(NC_E_INVALID, "trainer: batch %lld x %lld with %lld micro-steps", (long long)o->B, (long long)o->T,
                     (long long)o->grad_accum);
  nc_trainer *t = calloc(1, sizeof *t);
  if (!t) return nc_errorf(NC_E_NOMEM, "trainer: out of memory");
  t->o = *o;
  t->sess = sess;
  nc_status st = NC_OK;
  t->in = malloc((size_t)(o->B * o->T) * sizeof(int32_t));
  t->tg = malloc((size_t)(o->B * o->T) * sizeof(int32_t));
  if (!t->in || !t->tg) st = nc_errorf(NC_E_NOMEM, "trainer: out of memory for a %lld x %lld batch", (long long)o->B, (long long)o->T);
  if (!st) st = nc_gpt_params(o->spec, &t->params, &t->nparams);
  nc_param_desc *sd = NULL;
  int ns = 0;
  if (!st) st = nc_train_state_descs(o->spec, &o->oc, &sd, &ns);
  for (int i = 0; i < ns && !st; i++) st = nc_tr_zero(sess, sd[i].name, &sd[i], true);
  free(sd);
  for (int i = 0; i < t->nparams && !st; i++)
    if (!nc_session_get(sess, t->params[i].name)) st = nc_errorf(NC_E_INVALID, "trainer: the session lacks param '%s'", t->params[i].name);
  t->dp = o->dist && o->dist->world > 1;
  nc_train_opts to = {.kind = t->dp ? NC_TRAIN_APPLY : NC_TRAIN_STEP, .with_acc = o->grad_accum > 1};
  if (!st) st = nc_train_build(o->spec, &o->oc, &to, &t->g_step);
  if (!st) st = nc_exec_new(t->g_step, &o->device, &t->x_step);
  if (!st && t->dp) {
    int64_t total = 0;
    for (int i = 0; i < t->nparams; i++) total += t->params[i].rank == 2 ? t->params[i].shape[0] * t->params[i].shape[1] : t->params[i].shape[0];
    if (!(t->flat = malloc(sizeof(float) * (size_t)total))) st = nc_errorf(NC_E_NOMEM, "trainer: out of memory for the gradients");
    for (int i = 0; i < t->nparams && !st; i++) {
      char name[160];
      snprintf(name, sizeof name, "grad.%s", t->params[i].name);
      st = nc_tr_zero(sess, name, &t->params[i], false);
    }
  }
  if (!st && (o->grad_accum > 1 || t->dp)) {
    nc_train_opts ta = {.kind = NC_TRAIN_ACCUMULATE};
    st = nc_train_build(o->spec, &o->oc, &ta, &t->g_acc);
    if (!st) st = nc_exec_new(t->g_acc, &o->device, &t->x_acc);
    for (int i = 0; i < t->nparams && !st; i++) {
      char name[160];
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      st = nc_tr_zero(sess, name, &t->params[i], false);
    }
  }
  nc_gpt_opts lo = {.with_loss = true};
  if (!st) st = nc_gpt_build(o->spec, &lo, &t->g_loss);
  if (!st) st = nc_exec_new(t->g_loss, &o->device, &t->x_loss);
  nc_gpt_opts go = {.with_logits = true};
  if (!st) st = nc_gpt_build(o->spec, &go, &t->g_logits);
  if (!st) st = nc_exec_new(t->g_logits, &o->device, &t->x_logits);
  if (st) {
    nc_trainer_free(t);
    return st;
  }
  t->compile_s = nc_exec_compile_seconds(t->x_step) + (t->x_acc ? nc_exec_compile_seconds(t->x_acc) : 0) +
                 nc_exec_compile_seconds(t->x_loss) + nc_exec_compile_seconds(t->x_logits);
  *out = t;
  return NC_OK;
}

void nc_trainer_free(nc_trainer *t) {
  if (!t) return;
  nc_exec_free(t->x_step), nc_exec_free(t->x_acc), nc_exec_free(t->x_loss), nc_exec_free(t->x_logits);
  nc_graph_free(t->g_step), nc_graph_free(t->g_acc), nc_graph_free(t->g_loss), nc_graph_free(t->g_logits);
  free(t->params);
  free(t->flat);
  free(t->in);
  free(t->tg);
  free(t);
}

double nc_trainer_compile_seconds(const nc_trainer *t) { return t->compile_s; }

static float nc_tr_scalar(const nc_session *s, const char *name) {
  const nc_tensor *x = nc_session_get(s, name);
  return x && x->data ? *(const float *)x->data : NAN;
}

static nc_status nc_trainer_step_dp(nc_trainer *t, nc_batch_fn next, void *ctx, const double lr[NC_GROUP_COUNT],
                                     const double wd[NC_GROUP_COUNT], double momentum, int64_t step, double *loss) {
  const nc_dist *d = t->o.dist;
  int64_t K = t->o.grad_accum, M = K * d->world;
  char name[160];
  for (int i = 0; i < t->nparams; i++) {
    snprintf(name, sizeof name, "acc.%s", t->params[i].name);
    NC_TRY(nc_tr_zero(t->sess, name, &t->params[i], false));
  }
  double sums[2] = {0, 0};  // loss sum, micro-batches
  for (int64_t m = 0; m < M; m++) {
    NC_TRY(next(ctx, t->in, t->tg));  // every rank reads every micro-batch: the same stream everywhere
    if (m % d->world != d->rank) continue;
    NC_TRY(nc_tr_put_i32(t->sess, "tokens", t->in, t->o.B, t->o.T));
    NC_TRY(nc_tr_put_i32(t->sess, "targets", t->tg, t->o.B, t->o.T));
    NC_TRY(nc_session_run_exec(t->sess, t->x_acc));
    sums[0] += nc_tr_scalar(t->sess, "loss"), sums[1] += 1;
  }
  size_t off = 0;
  for (int i = 0; i < t->nparams; i++) {
    snprintf(name, sizeof name, "acc.%s", t->params[i].name);
    const nc_tensor *a = nc_session_get(t->sess, name);
    memcpy(t->flat + off, a->data, nc_tensor_nbytes(a));
    off += (size_t)nc_tensor_numel(a);
  }
  NC_TRY(nc_dist_allreduce_f32(d, t->flat, off));
  NC_TRY(nc_dist_allreduce_f64(d, sums, 2));
  off = 0;
  for (int i = 0; i < t->nparams; i++) {
    snprintf(name, sizeof name, "grad.%s", t->params[i].name);
    const nc_tensor *gt = nc_session_get(t->sess, name);
    memcpy(gt->data, t->flat + off, nc_tensor_nbytes(gt));
    off += (size_t)nc_tensor_numel(gt);
  }
  nc_train_scalar sc[NC_TRAIN_NSCALARS];
  nc_train_scalars(&t->o.oc, lr, wd, momentum, step, 1.0 / (double)M, sc);
  for (int i = 0; i < NC_TRAIN_NSCALARS; i++) NC_TRY(nc_session_put_scalar(t->sess, sc[i].name, sc[i].value));
  NC_TRY(nc_session_run_exec(t->sess, t->x_step));
  *loss = sums[0] / sums[1];
  if (!isfinite(*loss)) return nc_errorf(NC_E_INVALID, "training diverged at step %lld: loss is %g", (long long)step, *loss);
  return NC_OK;
}

nc_status nc_trainer_step(nc_trainer *t, nc_batch_fn next, void *ctx, const double lr[NC_GROUP_COUNT],
                          const double wd[NC_GROUP_COUNT], double momentum, int64_t step, double *loss) {
  if (t->dp) return nc_trainer_step_dp(t, next, ctx, lr, wd, momentum, step, loss);
  int64_t K = t->o.grad_accum;
  nc_train_scalar sc[NC_TRAIN_NSCALARS];
  nc_train_scalars(&t->o.oc, lr, wd, momentum, step, 1.0 / (double)K, sc);
  for (int i = 0; i < NC_TRAIN_NSCALARS; i++) NC_TRY(nc_session_put_scalar(t->sess, sc[i].name, sc[i].value));
  double sum = 0;
  for (int64_t k = 0; k < K; k++) {
    NC_TRY(next(ctx, t->in, t->tg));
    NC_TRY(nc_tr_put_i32(t->sess, "tokens", t->in, t->o.B, t->o.T));
    NC_TRY(nc_tr_put_i32(t->sess, "targets", t->tg, t->o.B, t->o.T));
    NC_TRY(nc_session_run_exec(t->sess, k + 1 < K ? t->x_acc : t->x_step));
    sum += nc_tr_scalar(t->sess, "loss");
  }
  if (K > 1)  // the accumulators start from zero for the next step
    for (int i = 0; i < t->nparams; i++) {
      char name[160];
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      NC_TRY(nc_tr_zero(t->sess, name, &t->params[i], false));
    }
  *loss = sum / (double)K;
  if (!isfinite(*loss)) return nc_errorf(NC_E_INVALID, "training diverged at step %lld: loss is %g", (long long)step, *loss);
  return NC_OK;
}

nc_status nc_trainer_step_weighted(nc_trainer *t, const nc_wbatch *b, int n, const double lr[NC_GROUP_COUNT],
                                   const double wd[NC_GROUP_COUNT], double momentum, int64_t step) {
  if (!t->x_acc) return nc_errorf(NC_E_INTERNAL, "weighted step: the trainer has no accumulate graph (grad_accum < 2)");
  int last = -1;
  for (int k = 0; k < n; k++)
    if (b[k].weight != 0 && (last < 0 || fabs(b[k].weight) > fabs(b[last].weight))) last = k;
  if (last < 0) return NC_OK;  // every weight is zero: no gradient, no step
  char name[160];
  float **total = calloc((size_t)t->nparams, sizeof *total);
  nc_status st = total ? NC_OK : nc_errorf(NC_E_NOMEM, "weighted step: out of memory");
  for (int i = 0; i < t->nparams && !st; i++) {
    const nc_tensor *p = nc_session_get(t->sess, t->params[i].name);
    if (!(total[i] = calloc((size_t)nc_tensor_numel(p), sizeof(float)))) st = nc_errorf(NC_E_NOMEM, "weighted step: out of memory");
  }
  for (int k = 0; k < n && !st; k++) {
    if (k == last || b[k].weight == 0) continue;
    for (int i = 0; i < t->nparams && !st; i++) {
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      st = nc_tr_zero(t->sess, name, &t->params[i], false);
    }
    if (!st) st = nc_tr_put_i32(t->sess, "tokens", b[k].inputs, b[k].B, b[k].T);
    if (!st) st = nc_tr_put_i32(t->sess, "targets", b[k].targets, b[k].B, b[k].T);
    if (!st) st = nc_session_run_exec(t->sess, t->x_acc);
    for (int i = 0; i < t->nparams && !st; i++) {
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      const nc_tensor *g = nc_session_get(t->sess, name);
      const float *gv = g->data;
      for (int64_t j = 0, m = nc_tensor_numel(g); j < m; j++) total[i][j] += (float)b[k].weight * gv[j];
    }
  }
  // the last batch through the step graph: (acc + g_last) * w_last = sum_k w_k g_k
  double wl = b[last].weight;
  for (int i = 0; i < t->nparams && !st; i++) {
    snprintf(name, sizeof name, "acc.%s", t->params[i].name);
    const nc_tensor *a = nc_session_get(t->sess, name);
    float *av = a->data;
    for (int64_t j = 0, m = nc_tensor_numel(a); j < m; j++) av[j] = (float)(total[i][j] / wl);
  }
  nc_train_scalar sc[NC_TRAIN_NSCALARS];
  nc_train_scalars(&t->o.oc, lr, wd, momentum, step, wl, sc);
  for (int i = 0; i < NC_TRAIN_NSCALARS && !st; i++) st = nc_session_put_scalar(t->sess, sc[i].name, sc[i].value);
  if (!st) st = nc_tr_put_i32(t->sess, "tokens", b[last].inputs, b[last].B, b[last].T);
  if (!st) st = nc_tr_put_i32(t->sess, "targets", b[last].targets, b[last].B, b[last].T);
  if (!st) st = nc_session_run_exec(t->sess, t->x_step);
  for (int i = 0; i < t->nparams && !st; i++) {
    snprintf(name, sizeof name, "acc.%s", t->params[i].name);
    st = nc_tr_zero(t->sess, name, &t->params[i], false);
  }
  for (int i = 0; total && i < t->nparams; i++) free(total[i]);
  free(total);
  return st;
}

nc_status nc_trainer_loss(nc_trainer *t, const int32_t *inputs, const int32_t *targets, int64_t B, int64_t T,
                          double *mean, int64_t *count) {
  NC_TRY(nc_tr_put_i32(t->sess, "tokens", inputs, B, T));
  NC_TRY(nc_tr_put_i32(t->sess, "targets", targets, B, T));
  NC_TRY(nc_session_run_exec(t->sess, t->x_loss));
  int64_t c = 0;
  for (int64_t i = 0; i < B * T; i++) c += targets[i] >= 0;
  *mean = nc_tr_scalar(t->sess, "loss");
  *count = c;
  return NC_OK;
}

nc_status nc_trainer_bpb(nc_trainer *t, nc_evalset *set, const int32_t *token_bytes, int64_t vocab, double *bpb) {
  NC_TRY(nc_evalset_reset(set));
  double nats = 0, bytes = 0;
  for (;;) {
    bool done = false;
    NC_TRY(nc_evalset_next(set, t->in, t->tg, &done));
    if (done) break;
    int64_t n = t->o.B * t->o.T;
    for (int64_t i = 0; i < n; i++) {  // targets without bytes (specials) do not count
      int32_t y = t->tg[i];
      if (y < 0 || y >= vocab || token_bytes[y] <= 0) t->tg[i] = -1;
      else bytes += token_bytes[y];
    }
    double mean;
    int64_t count;
    NC_TRY(nc_trainer_loss(t, t->in, t->tg, t->o.B, t->o.T, &mean, &count));
    if (count) nats += mean * (double)count;
  }
  if (bytes <= 0) return nc_errorf(NC_E_INVALID, "bits per byte: the validation set has no scored tokens");
  *bpb = nats / (M_LN2 * bytes);
  return NC_OK;
}

nc_status nc_trainer_greedy(nc_trainer *t, const int32_t *prompt, size_t n, int max_new, int32_t stop_id, nc_ids *out) {
  int64_t Tmax = t->o.spec->sequence_len;
  int32_t *seq = malloc(sizeof(int32_t) * (size_t)Tmax);
  if (!seq) return nc_errorf(NC_E_NOMEM, "greedy: out of memory");
  if ((int64_t)n > Tmax) n = (size_t)Tmax;
  memcpy(seq, prompt, n * sizeof(int32_t));
  int64_t len = (int64_t)n, V = t->o.spec->vocab_size;
  nc_status st = NC_OK;
  for (int k = 0; k < max_new && len < Tmax && !st; k++) {
    st = nc_tr_put_i32(t->sess, "tokens", seq, 1, len);
    if (!st) st = nc_session_run_exec(t->sess, t->x_logits);
    const nc_tensor *lg = st ? NULL : nc_session_get(t->sess, "logits");
    if (!st && (!lg || nc_tensor_numel(lg) != len * V)) st = nc_errorf(NC_E_INTERNAL, "greedy: logits missing");
    if (st) break;
    const float *row = (const float *)lg->data + (len - 1) * V;
    int32_t best = 0;
    for (int64_t v = 1; v < V; v++)
      if (row[v] > row[best]) best = (int32_t)v;
    if (best == stop_id) break;
    seq[len++] = best;
    st = nc_ids_push(out, best);
  }
  free(seq);
  return st;
}
