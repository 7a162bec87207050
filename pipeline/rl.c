// REINFORCE on questions with "#### N" answers (rl.h).
#include "pipeline/rl.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "data/sft.h"
#include "data/tasks.h"
#include "engine/engine.h"
#include "pipeline/schedule.h"
#include "pipeline/trainer.h"
#include "runtime/checkpoint.h"
#include "support/clock.h"

void nc_rl_opts_default(nc_rl_opts *o) {
  memset(o, 0, sizeof *o);
  o->examples_per_step = 16;
  o->samples = 16;
  o->max_new_tokens = 256;
  o->temperature = 1.0;
  o->top_k = 50;
  o->lr_frac = 0.05;
  o->eval_every = 60;
  o->eval_examples = 100;
  o->eval_k = 8;
  o->save_every = 60;
  o->device.kind = NC_DEV_CPU;
  o->seed = 42;
}

typedef struct {
  const nc_rl_opts *o;
  nc_device dev;  // o->device, or this rank's GPU (nc_dist_pick_device)
  int rank, world;
  nc_model_spec spec;
  nc_session *sess;
  nc_tok *tok;
  nc_engine *eng;
  nc_trainer *tr;
  nc_sft_mix *train, *val;
  nc_optim_cfg oc;
} nc_rl;

// Prompt ids and reference answer of mixture entry i. *ok = false when the
// conversation has no "#### N" answer or the prompt leaves no room to answer.
static nc_status nc_rl_question(nc_rl *r, nc_sft_mix *m, int64_t i, nc_ids *prompt, char *ref, size_t cap, bool *ok) {
  const char *json;
  size_t len;
  int src;
  int64_t line;
  NC_TRY(nc_sft_mix_get(m, i, &json, &len, &src, &line));
  *ok = nc_task_conversation_answer(json, len, ref, cap);
  if (!*ok) return NC_OK;
  prompt->len = 0;
  nc_status st = nc_tok_render_for_completion(r->tok, json, len, prompt);
  if (st) return nc_status_prefix(st, "%s:%lld: ", nc_sft_mix_source_path(m, src), (long long)line);
  *ok = (int64_t)prompt->len + 8 <= nc_engine_max_seq(r->eng);
  return NC_OK;
}

static void nc_rl_gen_opts(const nc_rl_opts *o, nc_gen_opts *g, int n, uint64_t seed) {
  nc_gen_opts_default(g);
  g->temperature = o->temperature;
  g->top_k = o->top_k;
  g->n = n;
  g->max_tokens = o->max_new_tokens;
  g->seeded = true;
  g->seed = seed;
}

// pass@1 (mean fraction correct) and pass@k (any correct) over the first
// eval_examples usable questions of the val mixture.
static nc_status nc_rl_eval(nc_rl *r, double *pass1, double *passk) {
  const nc_rl_opts *o = r->o;
  nc_sft_mix *m = r->val ? r->val : r->train;
  nc_ids prompt = {0};
  char ref[128];
  double sums[3] = {0, 0, 0};  // pass@1 sum, pass@k sum, questions evaluated (over the ranks)
  int used = 0;  // usable questions so far: rank r evaluates every world-th
  nc_status st = NC_OK;
  for (int64_t i = 0; i < nc_sft_mix_len(m) && used < o->eval_examples && !st; i++) {
    bool ok;
    st = nc_rl_question(r, m, i, &prompt, ref, sizeof ref, &ok);
    if (st || !ok) continue;
    if (used++ % r->world != r->rank) continue;
    nc_gen_opts g;
    nc_rl_gen_opts(o, &g, o->eval_k, o->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)));
    nc_gen_result res;
    st = nc_engine_generate(r->eng, prompt.data, prompt.len, &g, &res);
    if (st) break;
    int correct = 0;
    for (int j = 0; j < res.n; j++) correct += nc_task_reward(res.text[j].data ? res.text[j].data : "", res.text[j].len, ref) > 0.5;
    sums[0] += (double)correct / res.n;
    sums[1] += correct > 0;
    sums[2] += 1;
    nc_gen_result_free(&res);
  }
  nc_ids_free(&prompt);
  if (!st && o->dist) st = nc_dist_allreduce_f64(o->dist, sums, 3);
  if (!st && !used) st = nc_errorf(NC_E_INVALID, "rl: no usable evaluation question (each needs a \"#### N\" answer)");
  if (!st) *pass1 = sums[0] / sums[2], *passk = sums[1] / sums[2];
  return st;
}

static nc_status nc_rl_save(nc_rl *r, int64_t step, const nc_rl_result *res) {
  const nc_rl_opts *o = r->o;
  char extra[256];
  snprintf(extra, sizeof extra, "{\"stage\":\"rl\",\"mean_reward\":%.6f}", res->mean_reward);
  NC_TRY(nc_model_ckpt_save(o->out_dir, step, &r->spec, r->sess, NULL, extra));
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer.tiktoken", o->out_dir);
  if (access(path, F_OK) != 0) NC_TRY(nc_tok_save(r->tok, path));
  json_t *j = json_pack("{s:s, s:s, s:I, s:f, s:f, s:i, s:i, s:i, s:f, s:s}", "stage", "rl", "spec", r->spec.name, "steps",
                        (json_int_t)step, "seconds", res->seconds, "mean_reward", res->mean_reward, "examples_per_step",
                        o->examples_per_step, "samples", o->samples, "max_new_tokens", o->max_new_tokens, "temperature",
                        o->temperature, "device", nc_device_name(&r->dev));
  if (!j) return nc_errorf(NC_E_NOMEM, "rl: out of memory");
  if (isfinite(res->pass1)) json_object_set_new(j, "pass_at_1", json_real(res->pass1));
  if (isfinite(res->passk)) json_object_set_new(j, "pass_at_k", json_real(res->passk)), json_object_set_new(j, "k", json_integer(o->eval_k));
  json_t *data = json_array();
  for (int i = 0; i < o->ntrain; i++) json_array_append_new(data, json_string(o->train_paths[i]));
  json_object_set_new(j, "data", data);
  char *txt = json_dumps(j, JSON_INDENT(2));
  json_decref(j);
  if (!txt) return nc_errorf(NC_E_NOMEM, "rl: out of memory");
  snprintf(path, sizeof path, "%s/run.json", o->out_dir);
  nc_status st = nc_file_write_atomic(path, txt, strlen(txt));
  free(txt);
  return st;
}

// One batch: the samples of res whose advantage is exactly a.
static nc_status nc_rl_add_group(nc_rl_batches *bs, const nc_ids *prompt, const nc_gen_result *res, const double *adv, double a,
                                 int32_t pad) {
  int rows = 0;
  int64_t T = 0;
  for (int j = 0; j < res->n; j++)
    if (adv[j] == a) {
      rows++;
      int64_t L = (int64_t)(prompt->len + res->tokens[j].len) - 1;
      if (L > T) T = L;
    }
  if (!rows || T < 1) return NC_OK;
  int32_t *in = malloc(sizeof(int32_t) * (size_t)(rows * T)), *tg = malloc(sizeof(int32_t) * (size_t)(rows * T));
  if (!in || !tg || (bs->n == bs->cap && !(bs->b = realloc(bs->b, sizeof *bs->b * (size_t)(bs->cap = bs->cap ? 2 * bs->cap : 32))))) {
    free(in), free(tg);
    return nc_errorf(NC_E_NOMEM, "rl: out of memory");
  }
  int64_t count = 0;
  int row = 0;
  for (int j = 0; j < res->n; j++) {
    if (adv[j] != a) continue;
    int64_t P = (int64_t)prompt->len, G = (int64_t)res->tokens[j].len;
    for (int64_t t = 0; t < T; t++) {
      int64_t s = t + 1;  // target position in prompt + generated
      int32_t x = t < P ? prompt->data[t] : t - P < G ? res->tokens[j].data[t - P] : pad;
      int32_t y = -1;
      if (s >= P && s - P < G && res->mask[j].data[s - P]) y = res->tokens[j].data[s - P];
      in[row * T + t] = x;
      tg[row * T + t] = y;
      count += y >= 0;
    }
    row++;
  }
  if (!count) {
    free(in), free(tg);
    return NC_OK;
  }
  bs->b[bs->n++] = (nc_wbatch){.inputs = in, .targets = tg, .B = rows, .T = T, .weight = a * (double)count};
  bs->tokens += count;
  return NC_OK;
}

nc_status nc_rl_question_batches(nc_rl_batches *bs, const nc_ids *prompt, const nc_gen_result *res, const double *reward,
                                 int32_t pad) {
  if (res->n < 1) return NC_OK;
  double *adv = malloc(sizeof(double) * (size_t)res->n), mean = 0;
  if (!adv) return nc_errorf(NC_E_NOMEM, "rl: out of memory");
  for (int j = 0; j < res->n; j++) mean += reward[j] / res->n;
  for (int j = 0; j < res->n; j++) adv[j] = reward[j] - mean;
  nc_status st = NC_OK;
  for (int j = 0; j < res->n && !st; j++) {  // one batch per distinct nonzero advantage
    bool first = true;
    for (int q = 0; q < j; q++) first &= adv[q] != adv[j];
    if (first && adv[j] != 0) st = nc_rl_add_group(bs, prompt, res, adv, adv[j], pad);
  }
  free(adv);
  return st;
}

void nc_rl_batches_free(nc_rl_batches *bs) {
  for (int k = 0; k < bs->n; k++) free((void *)bs->b[k].inputs), free((void *)bs->b[k].targets);
  free(bs->b);
  memset(bs, 0, sizeof *bs);
}

static nc_status nc_rl_body(nc_rl *r, nc_rl_result *res) {
  const nc_rl_opts *o = r->o;
  if (!o->init_dir) return nc_errorf(NC_E_INVALID, "rl: no checkpoint to start from (--from)");
  if (o->ntrain < 1) return nc_errorf(NC_E_INVALID, "rl: no questions (--data)");
  if (o->samples < 2) return nc_errorf(NC_E_INVALID, "rl: --samples must be at least 2 (advantages need a mean), got %d", o->samples);
  int64_t latest = -1;
  NC_TRY(nc_checkpoint_find_latest(o->out_dir, &latest));
  if (latest >= 0 && !o->overwrite)
    return nc_errorf(NC_E_INVALID, "%s already holds checkpoints (latest step %lld): --overwrite starts over", o->out_dir, (long long)latest);
  r->rank = o->dist ? o->dist->rank : 0, r->world = o->dist ? o->dist->world : 1;
  r->dev = o->device;
  char note[256];
  NC_TRY(nc_dist_pick_device(o->dist, &r->dev, note, sizeof note));
  if (note[0] && !o->quiet) fprintf(stderr, "rl: %s\n", note);
  if (o->dist) NC_TRY(nc_dist_barrier(o->dist));  // every rank has looked before rank 0 writes
  if (!(r->sess = nc_session_new())) return nc_errorf(NC_E_NOMEM, "out of memory");
  NC_TRY(nc_model_ckpt_load(o->init_dir, -1, &r->spec, r->sess, NULL, NULL));
  if (o->precision) NC_TRY(nc_spec_set_precision(&r->spec, o->precision, "--precision"));
  char tokpath[4096];
  snprintf(tokpath, sizeof tokpath, "%s/tokenizer.tiktoken", o->init_dir);
  NC_TRY(nc_tok_load(o->tokenizer_path ? o->tokenizer_path : tokpath, &r->tok));
  nc_engine_opts eo;
  nc_engine_opts_default(&eo);
  eo.ckpt_dir = o->init_dir;
  eo.tokenizer = o->tokenizer_path;
  eo.device = r->dev;
  eo.slots = o->samples > o->eval_k ? o->samples : o->eval_k;
  eo.precision = o->precision;
  NC_TRY(nc_engine_open(&eo, &r->eng));
  nc_sft_source *src = calloc((size_t)o->ntrain + (size_t)o->nval, sizeof *src);
  if (!src) return nc_errorf(NC_E_NOMEM, "out of memory");
  for (int i = 0; i < o->ntrain; i++) src[i] = (nc_sft_source){.path = o->train_paths[i], .epochs = 1};
  for (int i = 0; i < o->nval; i++) src[o->ntrain + i] = (nc_sft_source){.path = o->val_paths[i], .epochs = 1};
  nc_sft_mix_opts mo = {.sources = src, .nsources = o->ntrain, .seed = o->seed};
  nc_status st = nc_sft_mix_open(&mo, &r->train);
  if (!st && o->nval) {
    nc_sft_mix_opts vo = {.sources = src + o->ntrain, .nsources = o->nval, .seed = o->seed};
    st = nc_sft_mix_open(&vo, &r->val);
  }
  free(src);
  NC_TRY(st);
  nc_optim_defaults(&r->oc);
  nc_trainer_opts to = {.spec = &r->spec, .oc = r->oc, .device = r->dev, .B = 1, .T = 1, .grad_accum = 2, .dist = o->dist};
  NC_TRY(nc_trainer_open(&to, r->sess, &r->tr));
  if (r->rank == 0) NC_TRY(nc_checkpoint_mkdir(o->out_dir));
  int64_t nq = nc_sft_mix_len(r->train);
  int64_t steps = o->steps > 0 ? o->steps : nq / o->examples_per_step;
  if (steps < 1) steps = 1;
  nc_lr_cfg lc;
  nc_lr_cfg_defaults(&lc);
  double base_lr[NC_GROUP_COUNT], wd[NC_GROUP_COUNT];
  nc_group_rates(&r->spec, &lc, 1.0, 0, base_lr, wd);
  for (int g = 0; g < NC_GROUP_COUNT; g++) wd[g] = 0;
  if (r->rank == 0)
    fprintf(stderr, "rl: %s, %lld questions, %lld steps x %d questions x %d samples (max %d tokens, T %.2f, top-k %d)%s\n", r->spec.name,
            (long long)nq, (long long)steps, o->examples_per_step, o->samples, o->max_new_tokens, o->temperature, o->top_k,
            r->world > 1 ? "; data parallel: each rank samples every world-th question" : "");
  res->pass1 = res->passk = NAN;
  int32_t pad = nc_tok_bos_id(r->tok);
  nc_ids prompt = {0};
  char ref[128];
  int64_t cursor = 0;
  double t0 = nc_clock_now();
  for (int64_t s = 0; s < steps && !st; s++) {
    if (o->eval_every > 0 && s % o->eval_every == 0) {
      st = nc_rl_eval(r, &res->pass1, &res->passk);
      if (st) break;
      if (r->rank == 0) fprintf(stderr, "rl step %lld: pass@1 %.4f, pass@%d %.4f\n", (long long)s, res->pass1, o->eval_k, res->passk);
    }
    nc_rl_batches bs = {0};
    double sums[3] = {0, 0, 0};  // rewards, samples, trained tokens (over the ranks)
    for (int e = 0; e < o->examples_per_step && !st; e++) {
      bool ok = false;  // every rank walks the same questions; rank r samples questions r, r + world, ...
      for (int tries = 0; !ok && tries < nq && !st; tries++) st = nc_rl_question(r, r->train, cursor++ % nq, &prompt, ref, sizeof ref, &ok);
      if (st || !ok) {
        if (!st) st = nc_errorf(NC_E_INVALID, "rl: no usable question (each needs a \"#### N\" answer and a prompt that fits the context)");
        break;
      }
      if (e % r->world != r->rank) continue;
      nc_gen_opts g;
      nc_rl_gen_opts(o, &g, o->samples, o->seed * 1000003ull + (uint64_t)s * 1009ull + (uint64_t)e);
      nc_gen_result gr;
      st = nc_engine_generate(r->eng, prompt.data, prompt.len, &g, &gr);
      if (st) break;
      double *rw = malloc(sizeof(double) * (size_t)gr.n);
      if (!rw) st = nc_errorf(NC_E_NOMEM, "out of memory");
      for (int j = 0; j < gr.n && !st; j++) {
        rw[j] = nc_task_reward(gr.text[j].data ? gr.text[j].data : "", gr.text[j].len, ref);
        sums[0] += rw[j];
        sums[1] += 1;
      }
      if (!st) st = nc_rl_question_batches(&bs, &prompt, &gr, rw, pad);
      free(rw);
      nc_gen_result_free(&gr);
    }
    sums[2] = (double)bs.tokens;
    if (!st && o->dist) st = nc_dist_allreduce_f64(o->dist, sums, 3);
    if (!st && sums[2] > 0) {  // the loss is over the trained tokens of the whole step, all ranks
      for (int k = 0; k < bs.n; k++) bs.b[k].weight /= sums[2];
      double lr[NC_GROUP_COUNT], lrm = o->lr_frac * (1.0 - (double)s / (double)steps);
      for (int g = 0; g < NC_GROUP_COUNT; g++) lr[g] = base_lr[g] * lrm;
      st = nc_trainer_step_weighted(r->tr, bs.b, bs.n, lr, wd, 0.95, s + 1);
      if (!st) st = nc_engine_set_params(r->eng, r->sess);
    }
    nc_rl_batches_free(&bs);
    if (st) break;
    res->mean_reward = sums[1] > 0 ? sums[0] / sums[1] : 0;
    res->steps = s + 1;
    res->seconds = nc_clock_now() - t0;
    if (r->rank == 0 && (!o->quiet || (s + 1) % 10 == 0 || s + 1 == steps))
      fprintf(stderr, "rl step %lld/%lld | mean reward %.4f | %.1f s\n", (long long)(s + 1), (long long)steps, res->mean_reward, res->seconds);
    if (o->save_every > 0 && (s + 1) % o->save_every == 0 && s + 1 < steps) {  // rank 0 writes; all agree it exists
      if (r->rank == 0) st = nc_rl_save(r, s + 1, res);
      if (!st && o->dist) st = nc_dist_barrier(o->dist);
    }
  }
  nc_ids_free(&prompt);
  if (!st) st = nc_rl_eval(r, &res->pass1, &res->passk);
  if (!st && r->rank == 0) fprintf(stderr, "rl step %lld: pass@1 %.4f, pass@%d %.4f\n", (long long)res->steps, res->pass1, o->eval_k, res->passk);
  if (!st && r->rank == 0) st = nc_rl_save(r, res->steps, res);
  if (!st && o->dist) st = nc_dist_barrier(o->dist);
  return st;
}

nc_status nc_rl_train(const nc_rl_opts *o, nc_rl_result *res) {
  nc_rl r;
  memset(&r, 0, sizeof r);
  memset(res, 0, sizeof *res);
  r.o = o;
  nc_status st = nc_rl_body(&r, res);
  nc_trainer_free(r.tr);
  nc_engine_close(r.eng);
  nc_sft_mix_close(r.train);
  nc_sft_mix_close(r.val);
  nc_session_free(r.sess);
  nc_tok_free(r.tok);
  return st;
}
