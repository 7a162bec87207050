// One stage's training run (run.h).
#include "pipeline/run.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "data/loader.h"
#include "pipeline/plot.h"
#include "pipeline/trainer.h"
#include "runtime/checkpoint.h"
#include "support/buf.h"
#include "support/clock.h"

const char *nc_stage_name(nc_stage s) { return s == NC_STAGE_BASE ? "base" : s == NC_STAGE_MID ? "mid" : "sft"; }
const char *nc_stage_folder(nc_stage s) {
  return s == NC_STAGE_BASE ? "base_checkpoints" : s == NC_STAGE_MID ? "mid_checkpoints" : "chatsft_checkpoints";
}

void nc_run_opts_default(nc_run_opts *o, nc_stage stage) {
  memset(o, 0, sizeof *o);
  o->stage = stage;
  o->h.device_batch = 8;
  o->h.param_data_ratio = stage == NC_STAGE_BASE ? 12 : 0;
  o->h.total_batch = -1;
  o->h.world = 1;
  nc_lr_cfg_defaults(&o->lr);
  o->weight_decay = -1;
  o->warmup_steps = -1;
  o->warmdown_ratio = o->final_lr_frac = o->init_lr_frac = -1;
  o->eval_every = 250;
  o->eval_batches = 0;
  o->sample_every = 0;
  o->resume_step = -1;
  o->device.kind = NC_DEV_CPU;
  o->seed = 42;
}

static bool nc_run_lead(const nc_run_opts *o) { return !o->dist || o->dist->rank == 0; }

// ---- batch sources -------------------------------------------------------------

typedef struct {
  nc_loader *pre;      // base
  nc_sft_loader *sft;  // mid / sft
} nc_run_src;

static nc_status nc_run_next(void *ctx, int32_t *in, int32_t *tg) {
  nc_run_src *s = ctx;
  return s->pre ? nc_loader_next(s->pre, in, tg) : nc_sft_loader_next(s->sft, in, tg);
}

static nc_status nc_run_src_state(const nc_run_src *s, json_t **out) {
  char *txt = NULL;
  NC_TRY(s->pre ? nc_loader_state_json(s->pre, &txt) : nc_sft_loader_state_json(s->sft, &txt));
  json_error_t e;
  *out = json_loads(txt, 0, &e);
  free(txt);
  return *out ? NC_OK : nc_errorf(NC_E_INTERNAL, "loader state is not JSON: %s", e.text);
}

static nc_status nc_run_src_restore(const nc_run_src *s, json_t *state) {
  char *txt = json_dumps(state, JSON_COMPACT);
  if (!txt) return nc_errorf(NC_E_INVALID, "checkpoint meta: bad dataloader_state_dict");
  nc_status st = s->pre ? nc_loader_restore(s->pre, txt) : nc_sft_loader_restore(s->sft, txt);
  free(txt);
  return st ? nc_status_prefix(st, "checkpoint meta: dataloader_state_dict: ") : NC_OK;
}

// ---- loss history (kept in the checkpoint meta so plots survive resumes) ----

typedef struct {
  double *x, *y;
  int n, cap;
} nc_series;

static void nc_series_push(nc_series *s, double x, double y) {
  if (s->n == s->cap) {
    int cap = s->cap ? 2 * s->cap : 256;
    double *nx = realloc(s->x, sizeof(double) * (size_t)cap), *ny = nx ? realloc(s->y, sizeof(double) * (size_t)cap) : NULL;
    if (nx) s->x = nx;
    if (!ny) return;  // out of memory: the plot misses a point, training goes on
    s->y = ny, s->cap = cap;
  }
  s->x[s->n] = x, s->y[s->n++] = y;
}

static json_t *nc_series_json(const nc_series *s) {
  json_t *a = json_array();
  for (int i = 0; i < s->n; i++) json_array_append_new(a, json_pack("[f,f]", s->x[i], s->y[i]));
  return a;
}

static void nc_series_load(nc_series *s, json_t *a, double max_x) {
  size_t i;
  json_t *v;
  json_array_foreach(a, i, v) {
    if (json_is_array(v) && json_array_size(v) == 2 && json_number_value(json_array_get(v, 0)) <= max_x)
      nc_series_push(s, json_number_value(json_array_get(v, 0)), json_number_value(json_array_get(v, 1)));
  }
}

// ---- the run -------------------------------------------------------------------

typedef struct {
  const nc_run_opts *o;
  nc_model_spec spec;
  nc_session *sess;
  nc_tok *tok;
  int32_t *token_bytes;
  nc_trainer *tr;
  nc_run_src src;
  nc_sft_mix *mix, *val_mix;
  nc_evalset *val;
  nc_horizon h;
  nc_sched sched;
  nc_optim_cfg oc;
  int64_t step;          // optimizer steps done
  double smooth, min_bpb, last_bpb, train_seconds;
  nc_series loss, bpb;
  json_t *samples;       // final greedy samples (run.json)
  int64_t saved_steps;   // the horizon in a resumed checkpoint's meta
  nc_device dev;         // o->device, or (data parallel) this rank's GPU (nc_dist_pick_device)
} nc_run;

static void nc_run_free(nc_run *r) {
  nc_trainer_free(r->tr);
  nc_loader_close(r->src.pre);
  nc_sft_loader_close(r->src.sft);
  nc_sft_mix_close(r->mix);
  nc_sft_mix_close(r->val_mix);
  nc_evalset_close(r->val);
  nc_session_free(r->sess);
  nc_tok_free(r->tok);
  free(r->token_bytes);
  free(r->loss.x), free(r->loss.y), free(r->bpb.x), free(r->bpb.y);
  json_decref(r->samples);
}

// Validation bits per byte: base over the evalset, mid/sft over the first
// eval_batches (default 8) batches of the packed val conversations.
static nc_status nc_run_eval(nc_run *r, double *bpb) {
  if (r->val) return nc_trainer_bpb(r->tr, r->val, r->token_bytes, (int64_t)nc_tok_vocab_size(r->tok), bpb);
  if (!r->val_mix) return nc_errorf(NC_E_INVALID, "no validation data");
  nc_sft_loader_opts so = {.mix = r->val_mix, .tok = r->tok, .B = r->h.device_batch, .T = r->h.seq, .skip_bad = r->o->skip_bad};
  nc_sft_loader *l;
  NC_TRY(nc_sft_loader_open(&so, &l));
  int64_t n = r->h.device_batch * r->h.seq, nb = r->o->eval_batches > 0 ? r->o->eval_batches : 8, V = (int64_t)nc_tok_vocab_size(r->tok);
  int32_t *in = malloc(sizeof(int32_t) * (size_t)n), *tg = malloc(sizeof(int32_t) * (size_t)n);
  double nats = 0, bytes = 0;
  nc_status st = in && tg ? NC_OK : nc_errorf(NC_E_NOMEM, "eval: out of memory");
  for (int64_t b = 0; b < nb && !st; b++) {
    st = nc_sft_loader_next(l, in, tg);
    for (int64_t i = 0; i < n && !st; i++) {
      if (tg[i] < 0 || tg[i] >= V || r->token_bytes[tg[i]] <= 0) tg[i] = -1;
      else bytes += r->token_bytes[tg[i]];
    }
    double mean;
    int64_t count;
    if (!st) st = nc_trainer_loss(r->tr, in, tg, r->h.device_batch, r->h.seq, &mean, &count);
    if (!st && count) nats += mean * (double)count;
  }
  free(in), free(tg);
  nc_sft_loader_close(l);
  if (!st && bytes <= 0) st = nc_errorf(NC_E_INVALID, "eval: the validation conversations have no trained tokens");
  if (!st) *bpb = nats / (M_LN2 * bytes);
  return st;
}

static const char *nc_run_prompts[] = {
    "The capital of France is", "The chemical symbol of gold is", "If yesterday was Friday, then tomorrow will be",
    "The opposite of hot is", "The planets of the solar system are:", "My favorite color is", "If 5*x + 3 = 13, then x is",
};

static nc_status nc_run_samples(nc_run *r, json_t *keep) {
  int32_t bos = nc_tok_bos_id(r->tok);
  for (size_t p = 0; p < sizeof nc_run_prompts / sizeof *nc_run_prompts; p++) {
    nc_ids ids = {0}, outp = {0};
    nc_buf text = {0};
    nc_status st = nc_ids_push(&ids, bos);
    nc_tok_encode_opts eo = {.special = NC_TOK_SPECIAL_ORDINARY, .threads = 1};
    if (!st) st = nc_tok_encode(r->tok, nc_run_prompts[p], strlen(nc_run_prompts[p]), &eo, &ids);
    if (!st) st = nc_trainer_greedy(r->tr, ids.data, ids.len, 16, bos, &outp);
    if (!st) st = nc_tok_decode(r->tok, outp.data, outp.len, &text);
    for (size_t i = 0; i < text.len; i++)  // one printable line: control bytes become spaces, broken UTF-8 '?'
      if ((unsigned char)text.data[i] < 0x20 || text.data[i] == 0x7f) text.data[i] = ' ';
    for (long bad; text.len && (bad = nc_utf8_invalid_at(text.data, text.len)) >= 0;) text.data[bad] = '?';
    if (!st) fprintf(stderr, "  sample: %s|%.*s\n", nc_run_prompts[p], (int)text.len, text.data ? text.data : "");
    if (!st && keep) json_array_append_new(keep, json_pack("{s:s, s:s%}", "prompt", nc_run_prompts[p], "completion", text.data ? text.data : "", text.len));
    nc_ids_free(&ids), nc_ids_free(&outp), nc_buf_free(&text);
    NC_TRY(st);
  }
  return NC_OK;
}

static nc_status nc_run_plot(nc_run *r) {
  char path[4096];
  snprintf(path, sizeof path, "%s/loss.png", r->o->out_dir);
  double *ema = malloc(sizeof(double) * (size_t)(r->loss.n ? r->loss.n : 1)), acc = 0;
  if (!ema) return nc_errorf(NC_E_NOMEM, "plot: out of memory");
  for (int i = 0; i < r->loss.n; i++) {  // the raw losses, and their debiased EMA (as the progress line shows)
    acc = 0.9 * acc + 0.1 * r->loss.y[i];
    ema[i] = acc / (1 - pow(0.9, i + 1));
  }
  nc_plot_series s[2] = {{r->loss.x, r->loss.y, r->loss.n, 0xaec7e8}, {r->loss.x, ema, r->loss.n, 0x1f77b4}};
  nc_status st = nc_plot_png(path, s, 2, 800, 450);
  free(ema);
  NC_TRY(st);
  if (r->bpb.n) {
    snprintf(path, sizeof path, "%s/val_bpb.png", r->o->out_dir);
    nc_plot_series v = {r->bpb.x, r->bpb.y, r->bpb.n, 0xd62728};
    NC_TRY(nc_plot_png(path, &v, 1, 800, 450));
  }
  return NC_OK;
}

static nc_status nc_run_save(nc_run *r) {
  bool sharded = r->tr && nc_trainer_sharded(r->tr);
  if (sharded) {  // data parallel: every rank writes its optimizer shard, then rank 0 model and meta (the commit)
    NC_TRY(nc_trainer_save_optim(r->tr, r->o->out_dir, r->step));
    NC_TRY(nc_dist_barrier(r->o->dist));
    if (!nc_run_lead(r->o)) return NC_OK;
  }
  json_t *meta = json_object(), *ds = NULL;
  nc_status st = nc_run_src_state(&r->src, &ds);
  if (st) {
    json_decref(meta);
    return st;
  }
  json_object_set_new(meta, "stage", json_string(nc_stage_name(r->o->stage)));
  json_object_set_new(meta, "dataloader_state_dict", ds);
  json_object_set_new(meta, "val_bpb", isfinite(r->last_bpb) ? json_real(r->last_bpb) : json_null());
  json_object_set_new(meta, "device_batch_size", json_integer(r->h.device_batch));
  json_object_set_new(meta, "max_seq_len", json_integer(r->h.seq));
  json_object_set_new(meta, "total_batch_size", json_integer(r->h.batch_tokens));
  json_object_set_new(meta, "num_iterations", json_integer(r->h.steps));
  json_object_set_new(meta, "loop_state", json_pack("{s:f, s:f, s:f}", "min_val_bpb", isfinite(r->min_bpb) ? r->min_bpb : -1.0,
                                                    "smooth_train_loss", r->smooth, "total_training_time", r->train_seconds));
  json_object_set_new(meta, "history", json_pack("{s:o, s:o}", "train_loss", nc_series_json(&r->loss), "val_bpb", nc_series_json(&r->bpb)));
  char *extra = json_dumps(meta, JSON_COMPACT);
  json_decref(meta);
  if (!extra) return nc_errorf(NC_E_NOMEM, "checkpoint meta: out of memory");
  st = sharded ? nc_model_ckpt_save_sharded(r->o->out_dir, r->step, &r->spec, r->sess, r->o->dist->world, extra)
               : nc_model_ckpt_save(r->o->out_dir, r->step, &r->spec, r->sess, &r->oc, extra);
  free(extra);
  if (!st) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.tiktoken", r->o->out_dir);
    if (access(path, F_OK) != 0) st = nc_tok_save(r->tok, path);
  }
  if (!st) st = nc_run_plot(r);
  return st;
}

// Restores loader position, loop state and history from a checkpoint's meta.
static nc_status nc_run_restore_meta(nc_run *r, const char *dir, int64_t step) {
  json_t *meta = NULL;
  NC_TRY(nc_checkpoint_load_meta(dir, step, &meta));
  nc_status st = NC_OK;
  json_t *ds = json_object_get(meta, "dataloader_state_dict"), *ls = json_object_get(meta, "loop_state");
  if (!ds) st = nc_errorf(NC_E_INVALID, "%s/meta_%06lld.json has no dataloader_state_dict: not a resumable %s checkpoint", dir, (long long)step, nc_stage_name(r->o->stage));
  if (!st) st = nc_run_src_restore(&r->src, ds);
  if (!st && ls) {
    r->smooth = json_number_value(json_object_get(ls, "smooth_train_loss"));
    r->train_seconds = json_number_value(json_object_get(ls, "total_training_time"));
    double m = json_number_value(json_object_get(ls, "min_val_bpb"));
    json_t *vb = json_object_get(meta, "val_bpb"), *ni = json_object_get(meta, "num_iterations");
    r->saved_steps = json_is_integer(ni) ? (int64_t)json_integer_value(ni) : 0;
    r->last_bpb = json_is_number(vb) ? json_number_value(vb) : NAN;
    r->min_bpb = m > 0 ? m : INFINITY;
  }
  json_t *hist = json_object_get(meta, "history");
  if (!st && hist) {
    nc_series_load(&r->loss, json_object_get(hist, "train_loss"), (double)step);
    nc_series_load(&r->bpb, json_object_get(hist, "val_bpb"), (double)step);
  }
  json_decref(meta);
  return st;
}

// Unigram baseline: token frequencies (add-one) of as many training tokens as
// the run trained on (capped at 4M), read by a fresh loader; its bits per
// byte on the same validation batches.
static nc_status nc_run_unigram(nc_run *r, double *bpb) {
  int64_t V = (int64_t)nc_tok_vocab_size(r->tok), n = r->h.device_batch * r->h.seq;
  double want = fmin(r->h.tokens, 4e6);
  nc_loader_opts lo = {.paths = r->o->train_paths, .npaths = r->o->ntrain, .tok = r->tok, .B = r->h.device_batch, .T = r->h.seq,
                       .skip_bad = r->o->skip_bad};
  nc_loader *l;
  NC_TRY(nc_loader_open(&lo, &l));
  double *cnt = calloc((size_t)V, sizeof(double));
  int32_t *in = malloc(sizeof(int32_t) * (size_t)n), *tg = malloc(sizeof(int32_t) * (size_t)n);
  nc_status st = cnt && in && tg ? NC_OK : nc_errorf(NC_E_NOMEM, "unigram: out of memory");
  double total = 0;
  while (!st && total < want) {
    st = nc_loader_next(l, in, tg);
    for (int64_t i = 0; i < n && !st; i++)
      if (tg[i] >= 0 && tg[i] < V) cnt[tg[i]] += 1, total += 1;
  }
  nc_loader_close(l);
  double nats = 0, bytes = 0;
  if (!st) st = nc_evalset_reset(r->val);
  while (!st) {
    bool done = false;
    st = nc_evalset_next(r->val, in, tg, &done);
    if (st || done) break;
    for (int64_t i = 0; i < n; i++) {
      int32_t y = tg[i];
      if (y < 0 || y >= V || r->token_bytes[y] <= 0) continue;
      nats -= log((cnt[y] + 1) / (total + (double)V));
      bytes += r->token_bytes[y];
    }
  }
  free(cnt), free(in), free(tg);
  if (!st && bytes > 0) *bpb = nats / (M_LN2 * bytes);
  return st;
}

static void nc_run_fmt_time(char *out, size_t n, double s) {
  if (!isfinite(s) || s < 0) snprintf(out, n, "--");
  else if (s < 3600) snprintf(out, n, "%dm%02ds", (int)s / 60, (int)s % 60);
  else snprintf(out, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

// Peak FLOP/s for MFU: this development machine's measured fp32 peak (2 cores, docs/performance.md) on the
// cpu device; unknown (0: MFU not reported) on other devices, whose peak depends on the card and precision.
static double nc_run_peak(const nc_run *r) { return r->dev.kind == NC_DEV_CPU ? 234e9 : 0; }

static void nc_run_progress(nc_run *r, double loss_debiased, double lrm, double dt, double fpt, double frac_done, bool tty) {
  double tps = (double)r->h.batch_tokens / dt, peak = nc_run_peak(r), mfu = peak > 0 ? tps * fpt / peak : 0;
  char mfus[32];
  if (peak > 0) snprintf(mfus, sizeof mfus, "%.1f%%", 100 * mfu);
  else snprintf(mfus, sizeof mfus, "--");
  double eta = frac_done > 0 ? r->train_seconds * (1 - frac_done) / frac_done : NAN;
  char e[32];
  nc_run_fmt_time(e, sizeof e, eta);
  int width = 24, fill = (int)(frac_done * width + 0.5);
  char bar[32];
  for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
  bar[width] = 0;
  bool line_due = !tty && (r->step % 10 == 0 || frac_done >= 1);
  if (tty || line_due)
    fprintf(stderr, "%s%s step %lld/%lld [%s] %5.1f%% | loss %.4f | lrm %.2f | %.0f tok/s | MFU %s | ETA %s%s", tty ? "\r" : "",
            nc_stage_name(r->o->stage), (long long)r->step, (long long)r->h.steps, bar, 100 * frac_done, loss_debiased, lrm, tps,
            mfus, e, tty ? "\033[K" : "\n");
}

static nc_status nc_run_setup_data(nc_run *r) {
  const nc_run_opts *o = r->o;
  if (o->stage == NC_STAGE_BASE) {
    if (o->ntrain < 1) return nc_errorf(NC_E_INVALID, "base-train: no training shards (--data)");
    if (o->nval < 1) return nc_errorf(NC_E_INVALID, "base-train: no validation shard (--val)");
    nc_loader_opts lo = {.paths = o->train_paths, .npaths = o->ntrain, .tok = r->tok, .B = r->h.device_batch, .T = r->h.seq,
                         .skip_bad = o->skip_bad};
    NC_TRY(nc_loader_open(&lo, &r->src.pre));
    nc_loader_opts vo = lo;
    vo.paths = o->val_paths, vo.npaths = o->nval;
    return nc_evalset_open(&vo, o->eval_batches, &r->val);
  }
  if (o->nsources < 1) return nc_errorf(NC_E_INVALID, "%s: no conversation sources (--data)", nc_stage_name(o->stage));
  nc_sft_mix_opts mo = {.sources = o->sources, .nsources = o->nsources, .seed = o->seed, .skip_bad = o->skip_bad};
  NC_TRY(nc_sft_mix_open(&mo, &r->mix));
  if (o->nval_sources > 0) {
    nc_sft_mix_opts vo = {.sources = o->val_sources, .nsources = o->nval_sources, .seed = o->seed, .skip_bad = o->skip_bad};
    NC_TRY(nc_sft_mix_open(&vo, &r->val_mix));
  }
  nc_sft_loader_opts so = {.mix = r->mix, .tok = r->tok, .B = r->h.device_batch, .T = r->h.seq, .skip_bad = o->skip_bad};
  return nc_sft_loader_open(&so, &r->src.sft);
}

// <out_dir>/run.json: what `nanochat report` shows of this stage.
static nc_status nc_run_write_summary(nc_run *r, const nc_run_result *res) {
  const nc_run_opts *o = r->o;
  json_t *j = json_pack("{s:s, s:s, s:I, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:f, s:f, s:s, s:s, s:I}", "stage",
                        nc_stage_name(o->stage), "spec", r->spec.name, "steps", (json_int_t)res->steps, "tokens", res->tokens,
                        "seconds", res->seconds, "tokens_per_s", res->tokens_per_s, "mfu", res->mfu, "train_loss", res->final_loss,
                        "total_batch_size", (json_int_t)r->h.batch_tokens, "device_batch_size", (json_int_t)r->h.device_batch,
                        "seq", (json_int_t)r->h.seq, "grad_accum", (json_int_t)r->h.grad_accum, "flops", r->h.flops,
                        "muon_weight_decay", o->weight_decay >= 0 ? o->weight_decay : o->stage == NC_STAGE_BASE ? r->h.muon_wd : 0.0,
                        "device", nc_device_name(&r->dev), "tokenizer", o->tokenizer_path, "scaling_params",
                        (json_int_t)res->scaling_params);
  if (!j) return nc_errorf(NC_E_NOMEM, "run.json: out of memory");
  json_object_set_new(j, "ranks", json_integer(r->h.world));
  if (isfinite(res->val_bpb)) json_object_set_new(j, "val_bpb", json_real(res->val_bpb));
  if (isfinite(res->min_val_bpb)) json_object_set_new(j, "min_val_bpb", json_real(res->min_val_bpb));
  if (isfinite(res->unigram_bpb)) json_object_set_new(j, "unigram_bpb", json_real(res->unigram_bpb));
  json_t *data = json_array();
  for (int i = 0; i < o->ntrain; i++) json_array_append_new(data, json_string(o->train_paths[i]));
  for (int i = 0; i < o->nsources; i++) json_array_append_new(data, json_pack("{s:s, s:i}", "path", o->sources[i].path, "epochs", o->sources[i].epochs));
  json_object_set_new(j, "data", data);
  if (r->samples) json_object_set(j, "samples", r->samples);
  char *txt = json_dumps(j, JSON_INDENT(2));
  json_decref(j);
  if (!txt) return nc_errorf(NC_E_NOMEM, "run.json: out of memory");
  char path[4096];
  snprintf(path, sizeof path, "%s/run.json", o->out_dir);
  nc_status st = nc_file_write_atomic(path, txt, strlen(txt));
  free(txt);
  return st;
}

// A fresh run into a folder with checkpoints: an error, or (overwrite) the
// old checkpoint files are removed so that "latest" never finds a stale step.
static nc_status nc_run_claim_dir(const nc_run_opts *o) {
  int64_t latest = -1;
  NC_TRY(nc_checkpoint_find_latest(o->out_dir, &latest));
  if (latest < 0) return NC_OK;
  if (!o->overwrite)
    return nc_errorf(NC_E_INVALID, "%s already holds checkpoints (latest step %lld): --resume continues that run, --overwrite starts over",
                     o->out_dir, (long long)latest);
  DIR *d = opendir(o->out_dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (strncmp(e->d_name, "model_", 6) && strncmp(e->d_name, "meta_", 5) && strncmp(e->d_name, "optim_", 6)) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", o->out_dir, e->d_name);
    if (unlink(path) != 0) {
      closedir(d);
      return nc_errorf(NC_E_IO, "--overwrite: cannot remove %s", path);
    }
  }
  if (d) closedir(d);
  return NC_OK;
}

static nc_status nc_run_body(nc_run *r, nc_run_result *res) {
  const nc_run_opts *o = r->o;
  bool fresh = true;
  int64_t resume_from = -1;
  r->sess = nc_session_new();
  if (!r->sess) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_optim_defaults(&r->oc);
  if (!o->resume && nc_run_lead(o)) NC_TRY(nc_run_claim_dir(o));
  if (o->dist) NC_TRY(nc_dist_barrier(o->dist));
  if (o->resume) {
    NC_TRY(nc_checkpoint_find_latest(o->out_dir, &resume_from));
    if (o->resume_step >= 0) resume_from = o->resume_step;
    if (resume_from < 0) return nc_errorf(NC_E_INVALID, "--resume: %s holds no checkpoint", o->out_dir);
    bool sharded = o->dist && o->dist->world > 1;  // the optimizer shards load once the trainer is open
    NC_TRY(nc_model_ckpt_load(o->out_dir, resume_from, &r->spec, r->sess, sharded ? NULL : &r->oc, &resume_from));
    fresh = false;
  } else if (o->stage == NC_STAGE_BASE) {
    if (!o->spec_path) return nc_errorf(NC_E_INVALID, "base-train: --spec is required");
    NC_TRY(nc_spec_load(o->spec_path, &r->spec));
    NC_TRY(nc_model_init_session(&r->spec, o->seed, r->sess));
  } else {
    if (!o->init_dir) return nc_errorf(NC_E_INVALID, "%s: no checkpoint to start from (--from)", nc_stage_name(o->stage));
    NC_TRY(nc_model_ckpt_load(o->init_dir, -1, &r->spec, r->sess, NULL, NULL));
  }
  if (o->precision) NC_TRY(nc_spec_set_precision(&r->spec, o->precision, "--precision"));
  if (!o->tokenizer_path) return nc_errorf(NC_E_INVALID, "no tokenizer (--tokenizer)");
  NC_TRY(nc_tok_load(o->tokenizer_path, &r->tok));
  int64_t V = (int64_t)nc_tok_vocab_size(r->tok);
  if (V > r->spec.vocab_size)
    return nc_errorf(NC_E_INVALID, "tokenizer %s has %lld ids but the model's vocab is %d", o->tokenizer_path, (long long)V, r->spec.vocab_size);
  if (nc_tok_bos_id(r->tok) < 0) return nc_errorf(NC_E_INVALID, "tokenizer %s has no <|bos|> token", o->tokenizer_path);
  r->token_bytes = calloc((size_t)V, sizeof(int32_t));
  if (!r->token_bytes) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_tok_token_bytes(r->tok, r->token_bytes);

  r->h = o->h;
  r->h.world = o->dist ? o->dist->world : 1;
  if (r->h.seq <= 0) r->h.seq = r->spec.sequence_len;
  if (o->stage != NC_STAGE_BASE && r->h.total_batch <= 0) r->h.total_batch = r->h.device_batch * r->h.seq * r->h.world;
  if (o->stage != NC_STAGE_BASE && r->h.num_iterations <= 0) r->h.num_iterations = 1;  // replaced below: one epoch
  NC_TRY(nc_horizon_compute(&r->spec, &r->h));
  NC_TRY(nc_run_setup_data(r));
  bool by_epoch = o->stage != NC_STAGE_BASE && o->h.num_iterations <= 0;
  if (by_epoch) {  // one epoch of the mixture: estimate the steps from the rendered lengths of a sample
    nc_sft_loader_stats s0;
    int64_t n = r->h.device_batch * r->h.seq;
    int32_t *in = malloc(sizeof(int32_t) * (size_t)n), *tg = malloc(sizeof(int32_t) * (size_t)n);
    nc_sft_loader_opts so = {.mix = r->mix, .tok = r->tok, .B = r->h.device_batch, .T = r->h.seq, .skip_bad = o->skip_bad};
    nc_sft_loader *probe = NULL;
    nc_status st = in && tg ? nc_sft_loader_open(&so, &probe) : nc_errorf(NC_E_NOMEM, "out of memory");
    for (int k = 0; k < 4 && !st; k++) st = nc_sft_loader_next(probe, in, tg);
    double prog = st ? 0 : nc_sft_loader_progress(probe);
    if (probe) nc_sft_loader_get_stats(probe, &s0);
    nc_sft_loader_close(probe);
    free(in), free(tg);
    NC_TRY(st);
    double micro_per_epoch = prog > 0 ? 4.0 / prog : 1;
    r->h.steps = (int64_t)ceil(micro_per_epoch / (double)(r->h.grad_accum * r->h.world));  // all ranks read every micro-batch
    if (r->h.steps < 1) r->h.steps = 1;
    r->h.tokens = (double)r->h.steps * (double)r->h.batch_tokens;
  }
  nc_sched_defaults(&r->sched, r->h.steps);
  if (o->stage != NC_STAGE_BASE) {  // nanochat chat_sft: no warmup, warmdown over the second half to 0, LR x0.8
    r->sched.warmup_steps = 0, r->sched.warmdown_ratio = 0.5, r->sched.final_lr_frac = 0, r->sched.init_lr_frac = 0.8;
    r->sched.momentum_ramp = 300, r->sched.momentum_peak = 0.95, r->sched.momentum_end = 0.95, r->sched.muon_wd_cosine = false;
  }
  if (o->warmup_steps >= 0) r->sched.warmup_steps = o->warmup_steps;
  if (o->warmdown_ratio >= 0) r->sched.warmdown_ratio = o->warmdown_ratio;
  if (o->final_lr_frac >= 0) r->sched.final_lr_frac = o->final_lr_frac;
  if (o->init_lr_frac >= 0) r->sched.init_lr_frac = o->init_lr_frac;
  double muon_wd = o->weight_decay >= 0 ? o->weight_decay : o->stage == NC_STAGE_BASE ? r->h.muon_wd : 0;

  r->min_bpb = INFINITY, r->last_bpb = NAN;
  if (!fresh) {
    NC_TRY(nc_run_restore_meta(r, o->out_dir, resume_from));
    if (r->saved_steps > 0 && r->saved_steps != r->h.steps) {  // the horizon the run was started with wins
      muon_wd *= o->weight_decay >= 0 ? 1.0 : (double)r->h.steps / (double)r->saved_steps;
      r->h.steps = r->sched.steps = r->saved_steps;
      r->h.tokens = (double)r->h.steps * (double)r->h.batch_tokens;
    }
    r->step = resume_from;
  }
  r->dev = o->device;  // data parallel: `opencl` / `opencl:gpu` become this rank's GPU
  char note[256];
  NC_TRY(nc_dist_pick_device(o->dist, &r->dev, note, sizeof note));
  if (note[0] && !o->quiet) fprintf(stderr, "%s: %s\n", nc_stage_name(o->stage), note);
  // NC_DP_OVERLAP=0: reduce the gradients only after the backward pass (docs/distributed.md)
  const char *ov = getenv("NC_DP_OVERLAP");
  nc_trainer_opts to = {.spec = &r->spec, .oc = r->oc, .device = r->dev, .B = r->h.device_batch, .T = r->h.seq,
                        .grad_accum = r->h.grad_accum, .dist = o->dist, .no_overlap = ov && !strcmp(ov, "0")};
  NC_TRY(nc_trainer_open(&to, r->sess, &r->tr));
  if (!fresh) NC_TRY(nc_trainer_load_optim(r->tr, o->out_dir, resume_from));  // data parallel: this rank's shard
  NC_TRY(nc_checkpoint_mkdir(o->out_dir));
  double fpt = nc_sched_flops_per_token(&r->spec, r->h.seq);
  bool lead = nc_run_lead(o);
  if (lead) fprintf(stderr,
          "%s: %s (%lld scaling params), %lld steps x %lld tokens (%lld x %lld x %lld micro-steps) = %.3g tokens, %.3g FLOPs; "
          "compiled in %.1f s on %s%s\n",
          nc_stage_name(o->stage), r->spec.name, (long long)nc_sched_scaling_params(&r->spec), (long long)r->h.steps,
          (long long)r->h.batch_tokens, (long long)r->h.device_batch, (long long)r->h.seq, (long long)r->h.grad_accum, r->h.tokens,
          r->h.flops, nc_trainer_compile_seconds(r->tr), nc_device_name(&r->dev), fresh ? "" : " (resumed)");
  if (lead && o->dist && o->dist->world > 1)
    fprintf(stderr, "%s: data parallel over %d ranks: %lld micro-steps per rank and step\n", nc_stage_name(o->stage), o->dist->world,
            (long long)r->h.grad_accum);
  if (lead && !fresh) fprintf(stderr, "%s: resumed from %s at step %lld\n", nc_stage_name(o->stage), o->out_dir, (long long)r->step);

  bool tty = lead && !o->quiet && isatty(2);
  double t_start = nc_clock_now(), t_first = t_start, t_ten = t_start, step_dt[3] = {0, 0, 0};
  double lr[NC_GROUP_COUNT], wd[NC_GROUP_COUNT];
  while (r->step < r->h.steps) {
    int64_t s = r->step;
    bool eval_now = lead && (o->eval_every > 0 && s % o->eval_every == 0) && (r->val || r->val_mix);
    if (eval_now && !(r->bpb.n && r->bpb.x[r->bpb.n - 1] == (double)s)) {
      NC_TRY(nc_run_eval(r, &r->last_bpb));
      r->min_bpb = fmin(r->min_bpb, r->last_bpb);
      nc_series_push(&r->bpb, (double)s, r->last_bpb);
      if (tty) fprintf(stderr, "\n");
      fprintf(stderr, "%s step %lld: val bpb %.4f\n", nc_stage_name(o->stage), (long long)s, r->last_bpb);
    }
    if (lead && o->sample_every > 0 && s > 0 && s % o->sample_every == 0) NC_TRY(nc_run_samples(r, NULL));
    double lrm = nc_sched_lr_mult(&r->sched, s);
    nc_group_rates(&r->spec, &o->lr, r->h.batch_lr_scale, muon_wd * nc_sched_wd_mult(&r->sched, s), lr, wd);
    for (int g = 0; g < NC_GROUP_COUNT; g++) lr[g] *= lrm;
    double t0 = nc_clock_now(), loss;
    NC_TRY(nc_trainer_step(r->tr, nc_run_next, &r->src, lr, wd, nc_sched_momentum(&r->sched, s), s + 1, &loss));
    double dt = nc_clock_now() - t0;
    r->step = s + 1;
    if (s < 3) step_dt[s] = dt;
    if (r->step == 1) t_first = nc_clock_now();
    // --time-budget: the horizon is the steps that fit the budget, first at the pace of steps 2
    // and 3, then re-planned every 10 steps at the pace so far (evaluations included) until the
    // warmdown begins, so that a machine that slows down or speeds up still ends on time.
    int64_t wd_start = r->sched.steps - (int64_t)llround(r->sched.warmdown_ratio * (double)r->sched.steps);
    bool replan = r->step > 3 && r->step % 10 == 0 && r->step < wd_start - 1;
    // In the warmdown the horizon only shrinks, when the run is more than 5 % behind its budget
    // (the machine slowed down): the rest of the warmdown is compressed (the LR steps down).
    bool behind = false;
    if (o->time_budget_s > 0 && o->h.num_iterations <= 0 && fresh && !replan && r->step > 3 && r->step % 10 == 0) {
      double now = nc_clock_now(), per = fmax((now - t_first) / (double)(r->step - 1), (now - t_ten) / 10.0);  // recent pace
      double end = (now - t_start) + per * (double)(r->h.steps - r->step);
      behind = end > 1.05 * o->time_budget_s;
      if (o->dist && o->dist->world > 1) {  // rank 0 decides for all
        double v = lead && behind ? 1 : 0;
        NC_TRY(nc_dist_allreduce_f64(o->dist, &v, 1));
        behind = v > 0;
      }
    }
    if (o->time_budget_s > 0 && o->h.num_iterations <= 0 && fresh && (r->step == 3 || replan || behind)) {
      double now = nc_clock_now(), left = o->time_budget_s - (now - t_start);
      double per = r->step == 3 ? 0.5 * (step_dt[1] + step_dt[2]) : (now - t_first) / (double)(r->step - 1);
      if (behind) per = fmax(per, (now - t_ten) / 10.0);
      if (o->dist && o->dist->world > 1) {  // every rank takes rank 0's pace: all must agree on the horizon
        double v[2] = {lead ? per : 0, lead ? left : 0};
        NC_TRY(nc_dist_allreduce_f64(o->dist, v, 2));
        per = v[0], left = v[1];
      }
      int64_t n = r->step + (int64_t)(left > 0 ? left / per : 0), old_steps = r->h.steps;
      if (n < r->step + 1) n = r->step + 1;
      if (behind && n > old_steps) n = old_steps;
      if (o->weight_decay < 0 && o->stage == NC_STAGE_BASE) muon_wd *= (double)r->h.steps / (double)n;
      r->h.steps = r->sched.steps = n;
      r->h.tokens = (double)n * (double)r->h.batch_tokens;
      r->h.flops = r->h.tokens * fpt;
      if (r->step == 3 || llabs(n - old_steps) * 50 > old_steps) {  // report the first plan and changes over 2 %
        if (tty) fprintf(stderr, "\n");
        if (lead)
          fprintf(stderr, "%s: %.2f s per step: %lld steps fit the time budget of %.0f s\n", nc_stage_name(o->stage), per, (long long)n,
                  o->time_budget_s);
      }
    }
    if (r->step % 10 == 0) t_ten = nc_clock_now();
    if (s > 0) r->train_seconds += dt;  // the first step includes warm-up (nanochat skips the first steps too)
    r->smooth = 0.9 * r->smooth + 0.1 * loss;
    double debiased = r->smooth / (1 - pow(0.9, (double)r->step));
    nc_series_push(&r->loss, (double)r->step, loss);
    if (lead && !(o->quiet && tty)) nc_run_progress(r, debiased, lrm, dt, fpt, (double)r->step / (double)r->h.steps, tty);
    if (o->stop_after > 0 && r->step >= o->stop_after && r->step < r->h.steps) {
      if (tty) fprintf(stderr, "\n");
      fprintf(stderr, "%s: stopping after step %lld as asked (--stop-after)\n", nc_stage_name(o->stage), (long long)r->step);
      res->steps = r->step;
      res->stopped = true;
      res->final_loss = debiased;
      return NC_OK;
    }
    if (o->save_every > 0 && r->step % o->save_every == 0 && r->step < r->h.steps) {
      NC_TRY(nc_run_save(r));  // data parallel: every rank its optimizer shard, rank 0 the rest
      if (o->dist) NC_TRY(nc_dist_barrier(o->dist));  // every rank agrees the checkpoint exists
    }
  }
  if (tty) fprintf(stderr, "\n");
  if (o->dist && o->dist->world > 1) {  // where each rank's step time went (docs/distributed.md)
    nc_trainer_dp_stats ds;
    nc_trainer_dp_stats_get(r->tr, &ds);
    fprintf(stderr,
            "%s: rank %d: %lld steps: compute %.2f s, copies %.2f s (%.2f s during backward), optimizer %.2f s, waiting on MPI %.2f s "
            "(%lld collectives, %lld gradient buckets issued during backward)\n",
            nc_stage_name(o->stage), o->dist->rank, (long long)ds.steps, ds.compute_s, ds.pack_s, ds.hook_s, ds.apply_s, ds.wait_s,
            (long long)ds.collectives, (long long)ds.early);
  }
  if (!lead) {  // the lead rank evaluates, samples and saves; the others wait for it
    res->steps = r->step;
    res->unigram_bpb = res->val_bpb = res->min_val_bpb = NAN;
    NC_TRY(nc_run_save(r));  // its optimizer shard
    return o->dist ? nc_dist_barrier(o->dist) : NC_OK;
  }
  if (r->val || r->val_mix) {
    if (!(r->bpb.n && r->bpb.x[r->bpb.n - 1] == (double)r->step)) {
      NC_TRY(nc_run_eval(r, &r->last_bpb));
      r->min_bpb = fmin(r->min_bpb, r->last_bpb);
      nc_series_push(&r->bpb, (double)r->step, r->last_bpb);
    }
    fprintf(stderr, "%s step %lld: val bpb %.4f\n", nc_stage_name(o->stage), (long long)r->step, r->last_bpb);
  }
  json_t *samples = json_array();
  nc_status sst = nc_run_samples(r, samples);
  if (sst) json_decref(samples);
  NC_TRY(sst);
  r->samples = samples;
  NC_TRY(nc_run_save(r));
  res->unigram_bpb = NAN;
  if (r->val) NC_TRY(nc_run_unigram(r, &res->unigram_bpb));
  res->steps = r->step;
  res->final_loss = r->smooth / (1 - pow(0.9, (double)(r->step > 0 ? r->step : 1)));
  res->val_bpb = r->last_bpb;
  res->min_val_bpb = r->min_bpb;
  res->tokens = (double)r->step * (double)r->h.batch_tokens;
  res->seconds = r->train_seconds;
  double timed_tokens = (double)(r->step > 1 ? r->step - 1 : 1) * (double)r->h.batch_tokens;
  res->tokens_per_s = r->train_seconds > 0 ? timed_tokens / r->train_seconds : 0;
  res->mfu = nc_run_peak(r) > 0 ? res->tokens_per_s * fpt / nc_run_peak(r) : 0;  // 0: peak unknown (not a cpu device)
  res->scaling_params = nc_sched_scaling_params(&r->spec);
  snprintf(res->spec_name, sizeof res->spec_name, "%s", r->spec.name);
  NC_TRY(nc_run_write_summary(r, res));
  return o->dist ? nc_dist_barrier(o->dist) : NC_OK;
}

nc_status nc_run_train(const nc_run_opts *o, nc_run_result *res) {
  nc_run r;
  memset(&r, 0, sizeof r);
  memset(res, 0, sizeof *res);
  r.o = o;
  nc_status st = nc_run_body(&r, res);
  nc_run_free(&r);
  return st;
}
