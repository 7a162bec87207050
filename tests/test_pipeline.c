// The training pipeline: nanochat's schedules and horizon (hand-computed
// values), the PNG writer (decoded back with zlib), and `nanochat base-train`
// end to end: exact resume after --stop-after and after SIGKILL, bad flags
// and bad data.
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "tests/support/corpus_util.h"

#include "pipeline/plot.h"
#include "pipeline/schedule.h"

// ---- schedules ----------------------------------------------------------------

Test(schedule, lr_multiplier_warmup_flat_warmdown) {
  nc_sched s;
  nc_sched_defaults(&s, 100);  // warmup 40, warmdown round(65) steps to 0.05
  cr_assert_float_eq(nc_sched_lr_mult(&s, 0), 1.0 / 40, 1e-12);
  cr_assert_float_eq(nc_sched_lr_mult(&s, 19), 0.5, 1e-12);
  cr_assert_float_eq(nc_sched_lr_mult(&s, 35), 0.9, 1e-12);   // still warming up (36/40)
  cr_assert_float_eq(nc_sched_lr_mult(&s, 39), 1.0, 1e-12);
  s.warmup_steps = 10;
  cr_assert_float_eq(nc_sched_lr_mult(&s, 20), 1.0, 1e-12);
  cr_assert_float_eq(nc_sched_lr_mult(&s, 35), 1.0, 1e-12);   // the last flat step: 100 - 65
  // step 68: p = 32/65, p + (1 - p) * 0.05 = 0.51769230769...
  cr_assert_float_eq(nc_sched_lr_mult(&s, 68), 0.5176923076923077, 1e-12);
  cr_assert_float_eq(nc_sched_lr_mult(&s, 99), 1.0 / 65 + (64.0 / 65) * 0.05, 1e-12);
  s.init_lr_frac = 0.8, s.final_lr_frac = 0;  // SFT style
  cr_assert_float_eq(nc_sched_lr_mult(&s, 68), 0.8 * 32 / 65, 1e-12);
}

Test(schedule, muon_momentum_and_weight_decay) {
  nc_sched s;
  nc_sched_defaults(&s, 1000);  // warmdown starts at step 350
  cr_assert_float_eq(nc_sched_momentum(&s, 0), 0.85, 1e-12);
  cr_assert_float_eq(nc_sched_momentum(&s, 200), 0.91, 1e-12);
  cr_assert_float_eq(nc_sched_momentum(&s, 350), 0.85 + 0.12 * 350 / 400, 1e-12);  // ramp not over yet
  cr_assert_float_eq(nc_sched_momentum(&s, 400), 0.97 - 0.07 * 50 / 650, 1e-12);
  cr_assert_float_eq(nc_sched_momentum(&s, 1000), 0.90, 1e-12);
  cr_assert_float_eq(nc_sched_wd_mult(&s, 0), 1.0, 1e-12);
  cr_assert_float_eq(nc_sched_wd_mult(&s, 500), 0.5, 1e-12);
  cr_assert_float_eq(nc_sched_wd_mult(&s, 1000), 0.0, 1e-12);
}

static void load_spec(const char *name, nc_model_spec *s) {
  char path[1024];
  snprintf(path, sizeof path, "%s/models/specs/%s.xml", getenv("NC_SOURCE_DIR"), name);
  nc_status st = nc_spec_load(path, s);
  cr_assert(!st, "%s", nc_status_msg(st));
}

Test(schedule, horizon_and_auto_batch_as_nanochat) {
  nc_model_spec s;
  load_spec("d12", &s);
  // blocks (12 x 12 x 768^2) + lm_head (32768 x 768): nanochat's 110,100,480
  cr_assert_eq(nc_sched_scaling_params(&s), 110100480);
  nc_horizon h = {.param_data_ratio = 12, .device_batch = 32, .seq = 2048, .world = 1};
  cr_assert(!nc_horizon_compute(&s, &h));
  cr_assert_eq(h.batch_tokens, 524288);  // nanochat's d12 reference batch
  cr_assert_eq(h.grad_accum, 8);
  cr_assert_eq(h.steps, (int64_t)(12.0 * 110100480 / 524288));
  cr_assert_float_eq(h.batch_lr_scale, 1.0, 1e-12);
  load_spec("d20", &s);
  nc_horizon h20 = {.param_data_ratio = 12, .device_batch = 32, .seq = 2048};
  cr_assert(!nc_horizon_compute(&s, &h20));
  cr_assert_eq(h20.batch_tokens, 1048576);  // nanochat: d18-d26 get 2^20
  // explicit batch and iterations
  nc_horizon e = {.num_iterations = 7, .total_batch = 4096, .device_batch = 8, .seq = 256};
  cr_assert(!nc_horizon_compute(&s, &e));
  cr_assert_eq(e.steps, 7);
  cr_assert_eq(e.grad_accum, 2);
  nc_horizon bad = {.num_iterations = 7, .total_batch = 5000, .device_batch = 8, .seq = 256};
  nc_status st = nc_horizon_compute(&s, &bad);
  cr_assert(st);
  cr_assert(strstr(nc_status_msg(st), "--total-batch-size 5000"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_horizon longseq = {.num_iterations = 7, .device_batch = 8, .seq = 4096};
  st = nc_horizon_compute(&s, &longseq);
  cr_assert(st && strstr(nc_status_msg(st), "--seq 4096"));
  nc_status_free(st);
}

Test(schedule, group_rates) {
  nc_model_spec s;
  load_spec("d12", &s);  // model_dim 768: no width scaling
  nc_lr_cfg c;
  nc_lr_cfg_defaults(&c);
  double lr[NC_GROUP_COUNT], wd[NC_GROUP_COUNT];
  nc_group_rates(&s, &c, 0.5, 0.1, lr, wd);
  cr_assert_float_eq(lr[NC_GROUP_LM_HEAD], 0.004, 1e-12);
  cr_assert_float_eq(lr[NC_GROUP_WTE], 0.15, 1e-12);
  cr_assert_float_eq(lr[NC_GROUP_VALUE_EMBEDS], 0.075, 1e-12);
  cr_assert_float_eq(lr[NC_GROUP_MUON], 0.01, 1e-12);
  cr_assert_float_eq(lr[NC_GROUP_SMEAR_BACKOUT], 0.2, 1e-12);
  cr_assert_float_eq(wd[NC_GROUP_MUON], 0.1, 1e-12);
  load_spec("d4", &s);  // model_dim 256: (256/768)^-0.5 = sqrt(3)
  nc_group_rates(&s, &c, 1.0, 0, lr, wd);
  cr_assert_float_eq(lr[NC_GROUP_WTE], 0.3 * sqrt(3.0), 1e-12);
}

// ---- PNG ----------------------------------------------------------------------

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

Test(png, encodes_a_decodable_image) {
  uint8_t rgb[2 * 3 * 3];
  for (int i = 0; i < (int)sizeof rgb; i++) rgb[i] = (uint8_t)(i * 13);
  uint8_t *png;
  size_t n;
  cr_assert(!nc_png_encode(rgb, 3, 2, &png, &n));
  cr_assert(n > 8 + 25 + 12 + 12);
  cr_assert(!memcmp(png, "\x89PNG\r\n\x1a\n", 8));
  // walk the chunks, checking every CRC; inflate IDAT
  size_t off = 8;
  uint8_t raw[2 * (1 + 9)];
  int seen = 0;
  while (off + 12 <= n) {
    uint32_t len = be32(png + off);
    const uint8_t *type = png + off + 4, *data = type + 4;
    uLong crc = crc32(crc32(0, type, 4), data, len);
    cr_assert_eq(be32(data + len), (uint32_t)crc, "chunk %.4s", type);
    if (!memcmp(type, "IHDR", 4)) {
      cr_assert_eq(be32(data), 3);
      cr_assert_eq(be32(data + 4), 2);
      cr_assert_eq(data[8], 8);
      cr_assert_eq(data[9], 2);
      seen |= 1;
    } else if (!memcmp(type, "IDAT", 4)) {
      uLongf rn = sizeof raw;
      cr_assert_eq(uncompress(raw, &rn, data, len), Z_OK);
      cr_assert_eq(rn, sizeof raw);
      seen |= 2;
    } else if (!memcmp(type, "IEND", 4)) {
      seen |= 4;
    }
    off += 12 + len;
  }
  cr_assert_eq(seen, 7);
  cr_assert_eq(off, n);
  for (int y = 0; y < 2; y++) {
    cr_assert_eq(raw[y * 10], 0);  // filter none
    cr_assert(!memcmp(raw + y * 10 + 1, rgb + y * 9, 9));
  }
  free(png);
  cr_assert(nc_png_encode(rgb, 0, 2, &png, &n));
}

// ---- base-train end to end ------------------------------------------------------

static char tmp[256], cmdbuf[8192], extra[1024], outbuf[1 << 16];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/nc_test_pipeline_XXXXXX");
  cr_assert(mkdtemp(tmp));
}
static void teardown(void) {
  snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %s", tmp);
  cr_assert_eq(system(cmdbuf), 0);
}

static const char *bin(void) {
  static char b[1024];
  snprintf(b, sizeof b, "%s/cli/nanochat", getenv("NC_BUILD_DIR"));
  return b;
}

// Runs `nanochat ARGS` (stderr into the output too); returns the exit code.
static int nc(const char *args) {
  snprintf(cmdbuf, sizeof cmdbuf, "%s %s 2>&1", bin(), args);
  FILE *p = popen(cmdbuf, "r");
  cr_assert(p);
  size_t n = fread(outbuf, 1, sizeof outbuf - 1, p);
  outbuf[n] = 0;
  int ws = pclose(p);
  return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128;
}

// A small corpus (distinct sentences) in tmp/train.txt and tmp/val.txt and a
// 300-token tokenizer trained on it.
static void make_data(void) {
  nc_test_write_corpus(tmp);
  char args[1024];
  snprintf(args, sizeof args, "tok train -q -i %s/train.txt --vocab-size 300 -o %s/tokenizer/tokenizer.tiktoken", tmp, tmp);
  snprintf(cmdbuf, sizeof cmdbuf, "mkdir -p %s/tokenizer", tmp);
  cr_assert_eq(system(cmdbuf), 0);
  cr_assert_eq(nc(args), 0, "%s", outbuf);
}

static void train_args(char *out, size_t n, const char *run, const char *more) {
  snprintf(out, n,
           "base-train -q --spec %s/models/specs/d4.xml --data %s/train.txt --val %s/val.txt --out %s/%s --model-tag t "
           "--tokenizer %s/tokenizer/tokenizer.tiktoken --num-iterations 9 --device-batch-size 2 --seq 32 --total-batch-size 128 "
           "--eval-every 3 --eval-batches 2 --save-every 3 --threads 2 %s",
           getenv("NC_SOURCE_DIR"), tmp, tmp, tmp, run, tmp, more);
}

static json_t *history(const char *run, int step) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s/base_checkpoints/t/meta_%06d.json", tmp, run, step);
  json_error_t e;
  json_t *m = json_load_file(path, 0, &e);
  cr_assert(m, "%s: %s", path, e.text);
  json_t *h = json_incref(json_object_get(m, "history"));
  json_decref(m);
  cr_assert(h);
  return h;
}

TestSuite(base_train, .init = setup, .fini = teardown, .timeout = 600);

Test(base_train, resume_is_exact_after_stop_and_after_sigkill) {
  make_data();
  char a[4096];
  train_args(a, sizeof a, "full", "");
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  cr_assert(strstr(outbuf, "unigram baseline"), "%s", outbuf);
  json_t *full = history("full", 9);
  cr_assert_eq(json_array_size(json_object_get(full, "train_loss")), 9);
  cr_assert_eq(json_array_size(json_object_get(full, "val_bpb")), 4);  // steps 0, 3, 6, 9
  snprintf(cmdbuf, sizeof cmdbuf, "%s/full/base_checkpoints/t/loss.png", tmp);
  cr_assert_eq(access(cmdbuf, R_OK), 0);
  // the report shows the run's figures, as run.json has them
  snprintf(extra, sizeof extra, "report --out %s/full --model-tag t", tmp);
  cr_assert_eq(nc(extra), 0, "%s", outbuf);
  snprintf(cmdbuf, sizeof cmdbuf, "%s/full/base_checkpoints/t/run.json", tmp);
  json_t *run = json_load_file(cmdbuf, 0, NULL);
  cr_assert(run);
  char want[128];
  snprintf(want, sizeof want, "| val bits per byte | %.4f | - | - | - |", json_number_value(json_object_get(run, "val_bpb")));
  json_decref(run);
  snprintf(cmdbuf, sizeof cmdbuf, "%s/full/report.md", tmp);
  FILE *rf = fopen(cmdbuf, "r");
  cr_assert(rf);
  size_t rn = fread(outbuf, 1, sizeof outbuf - 1, rf);
  outbuf[rn] = 0;
  fclose(rf);
  cr_assert(strstr(outbuf, want), "report lacks '%s':\n%s", want, outbuf);
  cr_assert(strstr(outbuf, "![training loss](base_checkpoints/t/loss.png)"));
  cr_assert(strstr(outbuf, "The capital of France is"));
  snprintf(extra, sizeof extra, "report --out %s/nothing-here", tmp);
  cr_assert_neq(nc(extra), 0);
  cr_assert(strstr(outbuf, "no stage"), "%s", outbuf);

  // stopped after step 4 (last checkpoint: step 3), then resumed
  train_args(a, sizeof a, "stop", "--stop-after 4");
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  train_args(a, sizeof a, "stop", "--resume");
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  cr_assert(strstr(outbuf, "resumed from"), "%s", outbuf);
  json_t *stop = history("stop", 9);
  cr_assert(json_equal(full, stop), "losses differ after --stop-after + --resume");
  json_decref(stop);

  // SIGKILL as soon as the step-3 checkpoint exists, then resume
  train_args(a, sizeof a, "kill", "");
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    snprintf(cmdbuf, sizeof cmdbuf, "exec %s %s >/dev/null 2>&1", bin(), a);
    execl("/bin/sh", "sh", "-c", cmdbuf, (char *)NULL);
    _exit(127);
  }
  char meta[1024];
  snprintf(meta, sizeof meta, "%s/kill/base_checkpoints/t/meta_000003.json", tmp);
  for (int i = 0; i < 6000 && access(meta, F_OK) != 0; i++) usleep(5000);
  kill(pid, SIGKILL);
  int ws;
  waitpid(pid, &ws, 0);
  cr_assert(WIFSIGNALED(ws), "the run finished before it could be killed");
  train_args(a, sizeof a, "kill", "--resume");
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  json_t *killed = history("kill", 9);
  cr_assert(json_equal(full, killed), "losses differ after SIGKILL + --resume");
  json_decref(killed);
  json_decref(full);
}

Test(base_train, bad_flags_and_data) {
  make_data();
  char a[4096];
  cr_assert_eq(nc("base-train --num-iterations abc --spec x.xml"), 2);
  cr_assert(strstr(outbuf, "--num-iterations"), "%s", outbuf);
  cr_assert_neq(nc("base-train --data x --val y"), 0);
  cr_assert(strstr(outbuf, "--spec"), "%s", outbuf);
  cr_assert_eq(nc("base-train --warmdown-ratio 2 --spec x.xml"), 2);
  cr_assert_eq(nc("base-train --time-budget 0 --spec x.xml"), 2);
  cr_assert(strstr(outbuf, "--time-budget"), "%s", outbuf);
  cr_assert_eq(nc("bench train --spec x.xml --precision fp16"), 2);
  cr_assert(strstr(outbuf, "fp16"), "%s", outbuf);
  train_args(a, sizeof a, "r1", "--data /nonexistent/shard.txt");
  cr_assert_neq(nc(a), 0);
  cr_assert(strstr(outbuf, "/nonexistent/shard.txt"), "%s", outbuf);
  // a fresh run into a folder that holds checkpoints: refused unless --overwrite
  train_args(a, sizeof a, "r0", "--num-iterations 1 --eval-every 0 --eval-batches 1");
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  cr_assert_neq(nc(a), 0);
  cr_assert(strstr(outbuf, "--overwrite"), "%s", outbuf);
  train_args(a, sizeof a, "r0", "--num-iterations 1 --eval-every 0 --eval-batches 1 --overwrite");
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  train_args(a, sizeof a, "r2", "--total-batch-size 100");
  cr_assert_neq(nc(a), 0);
  cr_assert(strstr(outbuf, "--total-batch-size 100"), "%s", outbuf);
  snprintf(extra, sizeof extra, "--resume --tokenizer %s/nope.tiktoken", tmp);
  train_args(a, sizeof a, "r3", extra);
  cr_assert_neq(nc(a), 0);
  cr_assert(strstr(outbuf, "no checkpoint"), "%s", outbuf);
  // a tokenizer larger than the model's vocab
  snprintf(extra, sizeof extra, "--spec %s/models/specs/tiny.xml", getenv("NC_SOURCE_DIR"));
  train_args(a, sizeof a, "r4", extra);
  cr_assert_neq(nc(a), 0);
  cr_assert(strstr(outbuf, "vocab"), "%s", outbuf);
}

// ---- the weighted step (REINFORCE) ----------------------------------------------

#include "chat/model_io.h"
#include "pipeline/trainer.h"

static int32_t wb_in[2 * 8], wb_tg[2 * 8];
static nc_status same_batch(void *ctx, int32_t *in, int32_t *tg) {
  (void)ctx;
  memcpy(in, wb_in, sizeof wb_in);
  memcpy(tg, wb_tg, sizeof wb_tg);
  return NC_OK;
}

static nc_trainer *open_trainer(const nc_model_spec *s, nc_session *sess) {
  cr_assert(!nc_model_init_session(s, 7, sess));
  nc_trainer_opts o = {.spec = s, .device = {.kind = NC_DEV_INTERP}, .B = 2, .T = 8, .grad_accum = 2};
  nc_optim_defaults(&o.oc);
  nc_trainer *t;
  nc_status st = nc_trainer_open(&o, sess, &t);
  cr_assert(!st, "%s", nc_status_msg(st));
  return t;
}

Test(trainer, weighted_step_equals_accumulation) {
  nc_model_spec s;
  load_spec("tiny", &s);
  for (int i = 0; i < 16; i++) wb_in[i] = (i * 7 + 3) % 64, wb_tg[i] = i % 5 == 0 ? -1 : (i * 11 + 1) % 64;
  nc_session *sa = nc_session_new(), *sb = nc_session_new();
  nc_trainer *ta = open_trainer(&s, sa), *tb = open_trainer(&s, sb);
  double lr[NC_GROUP_COUNT], wd[NC_GROUP_COUNT];
  for (int g = 0; g < NC_GROUP_COUNT; g++) lr[g] = 0.01, wd[g] = 0.01;
  double loss;
  cr_assert(!nc_trainer_step(ta, same_batch, NULL, lr, wd, 0.9, 1, &loss));  // grad = (g + g) / 2
  nc_wbatch wb[2] = {{wb_in, wb_tg, 2, 8, 0.5}, {wb_in, wb_tg, 2, 8, 0.5}};  // grad = 0.5 g + 0.5 g
  cr_assert(!nc_trainer_step_weighted(tb, wb, 2, lr, wd, 0.9, 1));
  nc_param_desc *ps;
  int np;
  cr_assert(!nc_gpt_params(&s, &ps, &np));
  int changed = 0;
  for (int i = 0; i < np; i++) {
    const nc_tensor *a = nc_session_get(sa, ps[i].name), *b = nc_session_get(sb, ps[i].name);
    for (int64_t j = 0; j < nc_tensor_numel(a); j++) {
      float x = ((const float *)a->data)[j], y = ((const float *)b->data)[j];
      cr_assert(fabsf(x - y) <= 1e-6f * (1 + fabsf(x)), "%s[%lld]: %g vs %g", ps[i].name, (long long)j, x, y);
    }
  }
  // and the update did something: the params moved from their init
  nc_session *s0 = nc_session_new();
  cr_assert(!nc_model_init_session(&s, 7, s0));
  for (int i = 0; i < np; i++) {
    const nc_tensor *a = nc_session_get(sa, ps[i].name), *z = nc_session_get(s0, ps[i].name);
    changed += memcmp(a->data, z->data, nc_tensor_nbytes(a)) != 0;
  }
  cr_assert_gt(changed, np / 2);
  // all-zero weights: no step at all (nothing moves)
  nc_session *snap = nc_session_new();
  for (int i = 0; i < np; i++) cr_assert(!nc_session_put_copy(snap, ps[i].name, nc_session_get(sb, ps[i].name)));
  cr_assert(!nc_trainer_step_weighted(tb, (nc_wbatch[]){{wb_in, wb_tg, 2, 8, 0}}, 1, lr, wd, 0.9, 2));
  for (int i = 0; i < np; i++) {
    const nc_tensor *a = nc_session_get(snap, ps[i].name), *b = nc_session_get(sb, ps[i].name);
    cr_assert(!memcmp(a->data, b->data, nc_tensor_nbytes(a)), "%s moved", ps[i].name);
  }
  nc_session_free(snap);
  free(ps);
  nc_trainer_free(ta), nc_trainer_free(tb);
  nc_session_free(sa), nc_session_free(sb), nc_session_free(s0);
}
