// Decode benchmark of the engine (engine/engine.h) on one checkpoint:
// batch-1 decode tokens/s, time to first token, and aggregate tokens/s with
// 1, 4 and 16 concurrent requests. The tokenizer is the 256 byte tokens with
// no special tokens, so no sample ends early (every request makes exactly
// --tokens tokens) and the model's whole vocabulary is computed each step.
// Aggregates are the best of two runs. Built and run by bench/decode_bench.sh.
//
// --steps B: instead, time decode steps of the model alone (engine/infer.h,
// no engine thread, no sampling) with B rows after a 16-token prompt: mean
// and best wall time per step and the process's CPU time per step (all
// threads), which a shared machine distorts less than wall time; --top N
// then prints the decode plan's N slowest kernels (kernel time over all steps).
// --profile (engine mode): the plans' slowest kernels and where the engine
// worker's time went (nc_engine_profile_print).

#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "engine/engine.h"
#include "engine/infer.h"
#include "runtime/threadpool.h"  // nc_pool_default_threads: what threads 0 means

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int finished, want;
  double t_first[64], t_end[64];
  int64_t tokens[64];
  uint64_t ids[64];
  int nreq;
} bench_state;

static void cb(void *user, const nc_gen_event *ev) {
  bench_state *b = user;
  double t = now();
  pthread_mutex_lock(&b->mu);
  int k = -1;
  for (int i = 0; i < b->nreq; i++)
    if (b->ids[i] == ev->req) k = i;
  if (k >= 0) {
    if (b->t_first[k] == 0) b->t_first[k] = t;
    b->tokens[k] = ev->completion_tokens;
    if (ev->finish != NC_FINISH_NONE) {
      b->t_end[k] = t;
      if (ev->finish == NC_FINISH_ERROR) fprintf(stderr, "decode_bench: %s\n", ev->error);
      b->finished++;
      pthread_cond_signal(&b->cv);
    }
  }
  pthread_mutex_unlock(&b->mu);
}

// Runs c concurrent requests; returns the wall time from the first submit to the last end.
static double run(nc_engine *e, int c, const int32_t *prompt, int np, int ntok, bench_state *b) {
  memset(b->t_first, 0, sizeof b->t_first);
  memset(b->t_end, 0, sizeof b->t_end);
  memset(b->tokens, 0, sizeof b->tokens);
  b->finished = 0;
  b->nreq = c;
  nc_gen_opts o;
  nc_gen_opts_default(&o);
  o.temperature = 1.0;
  o.max_tokens = ntok;
  o.seeded = true;
  double t0 = now();
  pthread_mutex_lock(&b->mu);  // ids are known before the first event is matched
  for (int i = 0; i < c; i++) {
    o.seed = (uint64_t)i;
    nc_status st = nc_engine_submit(e, prompt, (size_t)np, &o, cb, b, &b->ids[i]);
    if (st) {
      fprintf(stderr, "decode_bench: %s\n", nc_status_msg(st));
      exit(1);
    }
  }
  while (b->finished < c) pthread_cond_wait(&b->cv, &b->mu);
  pthread_mutex_unlock(&b->mu);
  double t1 = 0;
  for (int i = 0; i < c; i++)
    if (b->t_end[i] > t1) t1 = b->t_end[i];
  return t1 - t0;
}

static double cpu_s(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static int fail(nc_status st) {
  fprintf(stderr, "decode_bench: %s\n", nc_status_msg(st));
  nc_status_free(st);
  return 1;
}

// --steps: decode steps of B rows through nc_infer directly.
static int steps_main(const char *ckpt, int threads, int rows, int nsteps, int profile) {
  nc_model_spec s;
  nc_session *params = nc_session_new();
  if (!params) return fail(nc_errorf(NC_E_NOMEM, "out of memory"));
  nc_status st = nc_model_ckpt_load(ckpt, -1, &s, params, NULL, NULL);
  if (st) return fail(st);
  nc_device d;
  memset(&d, 0, sizeof d);
  d.kind = NC_DEV_CPU;
  d.threads = threads;
  nc_infer *m;
  if ((st = nc_infer_new(&s, params, &d, rows, 0, &m))) return fail(st);
  int32_t prompt[16], tok[64];
  for (int i = 0; i < 16; i++) prompt[i] = 'a' + i;
  for (int i = 0; i < rows; i++) tok[i] = 'a' + i % 26;
  float *logits = malloc((size_t)rows * (size_t)s.vocab_size * sizeof(float));
  if (!logits) return fail(nc_errorf(NC_E_NOMEM, "out of memory"));
  if ((st = nc_infer_prefill(m, prompt, 16, rows, logits))) return fail(st);
  for (int i = 0; i < 5 && !st; i++) st = nc_infer_decode(m, tok, logits);  // warm-up
  double best = 1e30, t0 = now(), c0 = cpu_s();
  for (int i = 0; i < nsteps && !st; i++) {
    double t = now();
    st = nc_infer_decode(m, tok, logits);
    if (now() - t < best) best = now() - t;
  }
  if (st) return fail(st);
  double wall = (now() - t0) / nsteps, cpu = (cpu_s() - c0) / nsteps;
  printf("%s decode steps: rows %d threads %d steps %d: mean %.3f ms (%.1f steps/s, %.1f tok/s), best %.3f ms, "
         "CPU %.3f ms per step\n",
         s.name, rows, threads > 0 ? threads : nc_pool_default_threads(), nsteps, 1e3 * wall, 1 / wall, rows / wall,
         1e3 * best, 1e3 * cpu);
  if (profile) nc_exec_profile_print(nc_infer_exec(m, 1), profile > 1 ? profile : 25);
  free(logits);
  nc_infer_free(m);
  nc_session_free(params);
  return 0;
}

int main(int argc, char **argv) {
  const char *ckpt = NULL, *tok = NULL;
  int threads = 0, ntok = 128, np = 32, profile = 0, steps = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--ckpt") && i + 1 < argc) ckpt = argv[++i];
    else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tok = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) ntok = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) np = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--profile")) profile = 1;
    else if (!strcmp(argv[i], "--top") && i + 1 < argc) profile = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: decode_bench --ckpt DIR --tokenizer FILE [--threads N] [--tokens N] [--prompt N] [--profile] [--steps ROWS [--top N]]\n");
      return 2;
    }
  }
  if (ckpt && steps) {
    if (steps < 1 || steps > 64) {
      fprintf(stderr, "decode_bench: --steps %d: rows must be 1..64\n", steps);
      return 2;
    }
    return steps_main(ckpt, threads, steps, ntok, profile);
  }
  if (!ckpt || !tok || ntok < 2 || np < 1 || np > 512) {
    fprintf(stderr, "usage: decode_bench --ckpt DIR --tokenizer FILE [--threads N] [--tokens N>=2] [--prompt 1..512]\n");
    return 2;
  }
  if (access(tok, R_OK)) {  // the 256 byte tokens, no specials
    uint8_t bytes[256];
    const uint8_t *toks[256];
    size_t lens[256];
    for (int i = 0; i < 256; i++) bytes[i] = (uint8_t)i, toks[i] = &bytes[i], lens[i] = 1;
    nc_tok *t;
    nc_status st = nc_tok_new(toks, lens, 256, NC_TOK_PAT_NANOCHAT, NULL, NULL, 0, &t);
    if (!st) st = nc_tok_save(t, tok);
    nc_tok_free(t);
    if (st) {
      fprintf(stderr, "decode_bench: %s\n", nc_status_msg(st));
      return 1;
    }
  }
  nc_engine_opts eo;
  nc_engine_opts_default(&eo);
  eo.ckpt_dir = ckpt;
  eo.tokenizer = tok;
  eo.device.threads = threads;
  eo.slots = 16;
  double t0 = now();
  nc_engine *e;
  nc_status st = nc_engine_open(&eo, &e);
  if (st) {
    fprintf(stderr, "decode_bench: %s\n", nc_status_msg(st));
    return 1;
  }
  double topen = now() - t0;
  const nc_model_spec *s = nc_engine_spec(e);
  if (np + ntok > nc_engine_max_seq(e)) {
    ntok = (int)(nc_engine_max_seq(e) - np);
  }
  int32_t prompt[512];
  for (int i = 0; i < np; i++) prompt[i] = (int32_t)('a' + i % 26);
  bench_state b;
  memset(&b, 0, sizeof b);
  pthread_mutex_init(&b.mu, NULL);
  pthread_cond_init(&b.cv, NULL);
  run(e, 1, prompt, np, 8, &b);  // warm-up (page faults, arenas, thread pools)
  run(e, 4, prompt, np, 8, &b);
  run(e, 16, prompt, np, 8, &b);
  // batch 1: decode rate after the first token, time to first token
  double best_dec = 0, best_ttft = 1e9;
  for (int rep = 0; rep < 2; rep++) {
    double t = now();
    double wall = run(e, 1, prompt, np, ntok, &b);
    (void)wall;
    double ttft = b.t_first[0] - t, dec = (double)(b.tokens[0] - 1) / (b.t_end[0] - b.t_first[0]);
    if (dec > best_dec) best_dec = dec;
    if (ttft < best_ttft) best_ttft = ttft;
  }
  double params = (double)((int64_t)s->depth * 12 * s->model_dim * s->model_dim + 2LL * s->vocab_size * s->model_dim) / 1e6;
  int nthr = threads > 0 ? threads : nc_pool_default_threads();
  printf("%-5s params %.1fM  open %.2fs  prompt %d  tokens %d  threads %d\n", s->name, params, topen, np, ntok, nthr);
  printf("  batch-1 decode %8.1f tok/s   time to first token %7.1f ms\n", best_dec, 1e3 * best_ttft);
  double agg1 = 0, aggs[3];
  const int conc[3] = {1, 4, 16};
  for (int i = 0; i < 3; i++) {
    int c = conc[i];
    // best of two runs (a shared machine's load comes and goes)
    double wall = 1e30, agg = 0, cpu = 1e30;
    int64_t tot = 0;
    for (int rep = 0; rep < 2; rep++) {
      double c0 = cpu_s();
      double w = run(e, c, prompt, np, ntok, &b);
      double cw = cpu_s() - c0;
      int64_t n = 0;
      for (int k = 0; k < c; k++) n += b.tokens[k];
      if ((double)n / w > agg) agg = (double)n / w, wall = w, tot = n;
      if (n > 0 && cw / (double)n < cpu) cpu = cw / (double)n;
    }
    if (c == 1) agg1 = agg;
    aggs[i] = agg;
    // process CPU time per token (all threads, spinning included): less distorted by a shared machine
    printf("  %2d concurrent: aggregate %8.1f tok/s (%.2fx of 1)  %lld tokens in %.2f s  CPU %.3f ms/token\n", c, agg,
           agg / agg1, (long long)tot, wall, 1e3 * cpu);
  }
  // one row of the table (bench/decode_bench.sh collects them)
  printf("| %s | %.1fM | %d | %.1f tok/s | %.1f ms | %.1f tok/s | %.1f tok/s (%.2fx) | %.1f tok/s (%.2fx) |\n", s->name,
         params, nthr, best_dec, 1e3 * best_ttft, aggs[0], aggs[1], aggs[1] / agg1, aggs[2], aggs[2] / agg1);
  if (profile) nc_engine_profile_print(e, 12);
  nc_engine_close(e);
  return 0;
}
