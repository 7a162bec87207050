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
// --membw: no checkpoint; the memory read bandwidth of 1..threads threads (a
// 1 GiB buffer summed through the pool, best and mean of 8), i.e. the bound
// of batch-1 decode: bytes of weights per token / bandwidth.
// --gemm: no checkpoint; the fp32 GEMM of the linear layers (x W^T, W
// (N,K) rotated over >= 256 MB so it comes from DRAM) at decode's M = 1, 4
// and 16 (the skinny path) on d8's and d12's shapes: GB/s of weights and
// GFLOP/s, best and mean.

#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "codegen/gemm.h"
#include "codegen/jit.h"
#include "engine/engine.h"
#include "engine/infer.h"
#include "runtime/session.h"
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
  if (!st) st = nc_session_pack(params);  // the weights in huge pages, as the engine keeps them
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

// ---- --membw ------------------------------------------------------------------
typedef struct {
  const uint64_t *p;
  size_t n;  // words
  int parts;
  uint64_t sum[64];
} membw_job;

// 16-byte vectors (GCC/Clang vector extension; SSE2 on any x86-64), 8
// independent sums: one 64-byte line per 2 iterations, far below what a core
// can load, so the loop measures memory.
typedef uint64_t membw_v2 __attribute__((vector_size(16)));

static void membw_task(void *ctx, int t, int thread) {
  (void)thread;
  membw_job *j = ctx;
  size_t lo = j->n * (size_t)t / (size_t)j->parts / 16 * 16, hi = j->n * (size_t)(t + 1) / (size_t)j->parts / 16 * 16;
  const membw_v2 *v = (const membw_v2 *)j->p;  // 64-byte aligned
  membw_v2 s0 = {0}, s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;  // (-O2 does not unroll)
  for (size_t i = lo / 2; i + 8 <= hi / 2; i += 8) {
    s0 += v[i], s1 += v[i + 1], s2 += v[i + 2], s3 += v[i + 3];
    s4 += v[i + 4], s5 += v[i + 5], s6 += v[i + 6], s7 += v[i + 7];
  }
  membw_v2 x = s0 ^ s1 ^ s2 ^ s3 ^ s4 ^ s5 ^ s6 ^ s7;
  j->sum[t] = x[0] ^ x[1];
}

static int membw_main(int threads) {
  int T = threads > 0 ? threads : nc_pool_default_threads();
  if (T > 64) T = 64;
  nc_pool *pool;
  nc_status st = nc_pool_new(T, &pool);
  if (st) return fail(st);
  size_t bytes = (size_t)1 << 30, n = bytes / sizeof(uint64_t);
  uint64_t *p = aligned_alloc(64, bytes);
  if (!p) return fail(nc_errorf(NC_E_NOMEM, "out of memory for the 1 GiB buffer"));
  for (size_t i = 0; i < n; i++) p[i] = i;
  for (int th = 1; th <= T; th++) {
    double best = 1e30, tot = 0;
    for (int r = 0; r < 8; r++) {
      membw_job j = {.p = p, .n = n, .parts = th};
      double t0 = now();
      if ((st = nc_pool_run(pool, th, membw_task, &j))) return fail(st);
      t0 = now() - t0;
      tot += t0;
      if (t0 < best) best = t0;
    }
    printf("memory read bandwidth, %d thread%s: best %.1f GB/s, mean %.1f GB/s\n", th, th > 1 ? "s" : "",
           (double)bytes / best / 1e9, 8.0 * (double)bytes / tot / 1e9);
  }
  free(p);
  nc_pool_free(pool);
  return 0;
}

// ---- --gemm -------------------------------------------------------------------
typedef struct {
  nc_gemm_fn fn;
  nc_gemm_args a;
  int n;
} gemm_job;

static void gemm_task(void *ctx, int t, int thread) {
  (void)thread;
  gemm_job *j = ctx;
  j->fn(&j->a, t, j->n);
}

static int gemm_main(int threads) {
  int T = threads > 0 ? threads : nc_pool_default_threads();
  nc_pool *pool;
  nc_jit *jit;
  nc_status st = nc_pool_new(T, &pool);
  if (!st) st = nc_jit_create(NULL, &jit);
  if (st) return fail(st);
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  nc_gemm_spec spec = {.name = "bench_gemm_tb", .tb = true, .knobs = kn};
  nc_gemm_fn fn;
  if ((st = nc_gemm_compile(jit, &spec, &fn))) return fail(st);
  printf("GEMM x W^T, skinny path (vw %d), %d threads (%d tasks, as runtime/cpu.c), weights from DRAM\n", kn.vw, T,
         T > 1 ? 2 * T : 1);
  static const struct {
    const char *name;
    int n, k;
  } shapes[] = {{"d8 attn 512x512", 512, 512},      {"d8 fc 2048x512", 2048, 512},    {"d8 proj 512x2048", 512, 2048},
                {"d8 lm_head 8192x512", 8192, 512}, {"d12 fc 3072x768", 3072, 768},   {"d12 proj 768x3072", 768, 3072},
                {"d12 lm_head 32768x768", 32768, 768}};
  float *A = aligned_alloc(64, 16 * 4096 * sizeof(float)), *C = aligned_alloc(64, 16 * 32768 * sizeof(float));
  if (!A || !C) return fail(nc_errorf(NC_E_NOMEM, "out of memory"));
  for (int i = 0; i < 16 * 4096; i++) A[i] = (float)(i % 7) * 0.1f;
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    int N = shapes[s].n, K = shapes[s].k;
    size_t wn = (size_t)N * (size_t)K;
    int copies = (int)(((size_t)256 << 20) / (wn * sizeof(float))) + 1;
    float *W = aligned_alloc(64, wn * (size_t)copies * sizeof(float));
    if (!W) return fail(nc_errorf(NC_E_NOMEM, "out of memory for %s", shapes[s].name));
    for (size_t i = 0; i < wn * (size_t)copies; i++) W[i] = (float)(i % 13) * 0.01f;
    static const int ms[] = {1, 4, 16};
    for (int mi = 0; mi < 3; mi++) {
      int M = ms[mi], reps = copies * 3 < 30 ? 30 : copies * 3;
      double best = 1e30, tot = 0;
      for (int r = 0; r < reps; r++) {
        gemm_job j = {fn,
                      {.a = A, .b = W + (size_t)(r % copies) * wn, .c = C, .m = M, .n = N, .k = K, .lda = K, .ldb = K,
                       .ldc = N, .batch = 1, .alpha = 1, .beta = 0},
                      T > 1 ? 2 * T : 1};
        double t0 = now();
        if ((st = nc_pool_run(pool, j.n, gemm_task, &j))) return fail(st);
        t0 = now() - t0;
        if (r >= copies) tot += t0;  // the first pass over the copies faults the pages in
        if (t0 < best) best = t0;
      }
      double mean = tot / (reps - copies), fl = 2.0 * M * (double)wn;
      printf("  %-22s M=%2d: best %7.3f ms (%5.1f GB/s, %6.1f GFLOP/s), mean %7.3f ms (%5.1f GB/s, %6.1f GFLOP/s)\n",
             shapes[s].name, M, 1e3 * best, (double)wn * 4 / best / 1e9, fl / best / 1e9, 1e3 * mean,
             (double)wn * 4 / mean / 1e9, fl / mean / 1e9);
    }
    free(W);
  }
  free(A);
  free(C);
  nc_jit_free(jit);
  nc_pool_free(pool);
  return 0;
}

int main(int argc, char **argv) {
  const char *ckpt = NULL, *tok = NULL;
  int threads = 0, ntok = 128, np = 32, profile = 0, steps = 0, membw = 0, gemm = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--ckpt") && i + 1 < argc) ckpt = argv[++i];
    else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tok = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) ntok = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) np = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--profile")) profile = 1;
    else if (!strcmp(argv[i], "--top") && i + 1 < argc) profile = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--membw")) membw = 1;
    else if (!strcmp(argv[i], "--gemm")) gemm = 1;
    else {
      fprintf(stderr, "usage: decode_bench --ckpt DIR --tokenizer FILE [--threads N] [--tokens N] [--prompt N] [--profile] [--steps ROWS [--top N]]\n"
                      "       decode_bench --membw | --gemm [--threads N]\n");
      return 2;
    }
  }
  if (membw) return membw_main(threads);
  if (gemm) return gemm_main(threads);
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
