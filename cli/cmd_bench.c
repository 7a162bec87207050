// nanochat bench train: tokens/s of the whole training step on a device.
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/precision.h"
#include "chat/model_io.h"
#include "cli/commands.h"
#include "models/init.h"
#include "models/train.h"
#include "runtime/cpu_peak.h"
#include "runtime/exec.h"
#include "runtime/session.h"
#include "support/clock.h"

static int nc_bench_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int nc_bench_fail(nc_status st) {
  int code = nc_status_code(st);
  fprintf(stderr, "nanochat bench: %s\n", nc_status_msg(st));
  nc_status_free(st);
  return code > 0 && code < 128 ? code : 1;
}

// Model FLOPs per token as nanochat counts them: 6 x (matmul weights, incl.
// lm_head, not the embeddings) + 12 x layers x heads x head_dim x seq (attention).
static double nc_bench_flops_per_token(const nc_model_spec *s, int64_t T) {
  nc_param_desc *ps;
  int np;
  if (nc_gpt_params(s, &ps, &np)) return 0;
  double w = 0;
  for (int i = 0; i < np; i++)
    if (ps[i].rank == 2 && ps[i].group != NC_GROUP_WTE && ps[i].group != NC_GROUP_VALUE_EMBEDS)
      w += (double)ps[i].shape[0] * (double)ps[i].shape[1];
  free(ps);
  double attn = 0;
  for (int l = 0; l < s->depth; l++) {
    double win = nc_spec_window(s, l);
    attn += 12.0 * s->n_head * s->head_dim * fmin(win, (double)T);
  }
  return 6 * w + attn;
}

static void nc_bench_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat bench train --spec SPEC [options]\n\n"
          "Times the whole training step (forward, backward, AdamW + Muon update) on\n"
          "random tokens; prints tokens/s, step time (median, min, max), GFLOP/s and\n"
          "MFU against --peak, then one JSON line.\n"
          "  -s, --spec SPEC     model spec (e.g. models/specs/d4.xml)\n"
          "  -b, --batch B       sequences per step (default 8)\n"
          "  -t, --seq T         tokens per sequence (default 256)\n"
          "  -n, --steps N       timed steps (default 5; 1 warm-up step first)\n"
          "  -d, --device D      cpu (default), cpu:avx2, opencl[:N|gpu|cpu|NAME], interp\n"
          "      --threads N     CPU threads (default: one per core)\n"
          "      --peak GFLOPS   peak for MFU (default on the cpu device: the fp32 FMA peak measured at start on\n"
          "                      --threads threads;\n"
          "                      other devices: no MFU unless given)\n"
          "      --trace FILE    write the last step's kernel launches as Chrome trace JSON (cpu)\n"
          "      --precision P   fp32 or bf16: the model's compute precision (bf16: activations and matmuls in bf16\n"
          "                      with fp32 accumulation, fp32 weights; cpu: AVX512-BF16 GEMM; opencl: tensor cores\n"
          "                      on NVIDIA); default: the spec's <precision> (fp32)\n"
          "Environment: NC_PROFILE=N prints the N kernels that took longest.\n");
}

static int nc_bench_train(int argc, char **argv) {
  static const struct option opts[] = {
      {"spec", required_argument, 0, 's'},  {"batch", required_argument, 0, 'b'},   {"seq", required_argument, 0, 't'},
      {"steps", required_argument, 0, 'n'}, {"device", required_argument, 0, 'd'},  {"threads", required_argument, 0, 'T'},
      {"peak", required_argument, 0, 'P'},  {"trace", required_argument, 0, 'R'},   {"help", no_argument, 0, 'h'},
      {"precision", required_argument, 0, 'X'},
      {0, 0, 0, 0}};
  const char *trace = NULL, *precision = NULL;
  const char *spec_path = NULL;
  long batch = 8, seq = 256, steps = 5, threads = 0;
  double peak = 0;  // 0: measured on the cpu device, unknown (no MFU) on others
  nc_device dev = {.kind = NC_DEV_CPU};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "s:b:t:n:d:h", opts, NULL)) != -1) {
    char *end = NULL;
    switch (c) {
      case 's': spec_path = optarg; break;
      case 'b': batch = strtol(optarg, &end, 10); if (*end || batch < 1 || batch > 4096) { fprintf(stderr, "nanochat bench: --batch wants 1..4096, got '%s'\n", optarg); return 2; } break;
      case 't': seq = strtol(optarg, &end, 10); if (*end || seq < 1 || seq > 1 << 20) { fprintf(stderr, "nanochat bench: --seq wants 1..1048576, got '%s'\n", optarg); return 2; } break;
      case 'n': steps = strtol(optarg, &end, 10); if (*end || steps < 1 || steps > 100000) { fprintf(stderr, "nanochat bench: --steps wants 1..100000, got '%s'\n", optarg); return 2; } break;
      case 'T': threads = strtol(optarg, &end, 10); if (*end || threads < 1 || threads > 1024) { fprintf(stderr, "nanochat bench: --threads wants 1..1024, got '%s'\n", optarg); return 2; } break;
      case 'P': peak = strtod(optarg, &end); if (*end || !(peak > 0)) { fprintf(stderr, "nanochat bench: --peak wants a positive number, got '%s'\n", optarg); return 2; } break;
      case 'd': {
        nc_status st = nc_device_parse(optarg, &dev);
        if (st) return nc_bench_fail(st);
        break;
      }
      case 'R': trace = optarg; break;
      case 'X': precision = optarg; break;
      case 'h': nc_bench_usage(stdout); return 0;
      default: nc_bench_usage(stderr); return 2;
    }
  }
  if (!spec_path || optind != argc) {
    nc_bench_usage(stderr);
    return 2;
  }
  dev.threads = (int)threads;
  if (precision && nc_cli_precision_check("bench", precision)) return 2;
  nc_model_spec s;
  nc_status st = nc_spec_load(spec_path, &s);
  if (st) return nc_bench_fail(st);
  nc_cli_precision_apply(precision, &s, &dev);
  if (seq > s.sequence_len) {
    fprintf(stderr, "nanochat bench: --seq %ld exceeds the spec's sequence_len %d\n", seq, s.sequence_len);
    return 2;
  }
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g = NULL;
  nc_exec *ex = NULL;
  nc_session *sess = nc_session_new();
  double t0 = nc_clock_now();
  st = nc_train_build(&s, &oc, &to, &g);
  if (!st) st = nc_exec_new(g, &dev, &ex);
  double tcompile = nc_clock_now() - t0;
  if (!st) st = nc_model_init_session(&s, 42, sess);
  nc_param_desc *sd = NULL;
  int ns = 0;
  if (!st) st = nc_train_state_descs(&s, &oc, &sd, &ns);
  for (int i = 0; i < ns && !st; i++) {
    nc_tensor z;
    st = nc_tensor_alloc(&z, NC_F32, sd[i].rank, sd[i].shape);
    if (!st) st = nc_session_put(sess, sd[i].name, &z);
  }
  free(sd);
  int64_t shape[2] = {batch, seq};
  nc_rng r;
  nc_rng_seed(&r, 1);
  for (int k = 0; k < 2 && !st; k++) {
    nc_tensor t;
    st = nc_tensor_alloc(&t, NC_I32, 2, shape);
    for (int64_t i = 0; !st && i < batch * seq; i++) ((int32_t *)t.data)[i] = (int32_t)(nc_rng_next(&r) % (uint64_t)s.vocab_size);
    if (!st) st = nc_session_put(sess, k ? "targets" : "tokens", &t);
  }
  double lr[NC_GROUP_COUNT], wd[NC_GROUP_COUNT] = {0};
  for (int i = 0; i < NC_GROUP_COUNT; i++) lr[i] = 0.001;
  double *times = calloc((size_t)steps + 1, sizeof *times);
  double *cpus = calloc((size_t)steps + 1, sizeof *cpus);  // process CPU time per step (all threads)
  for (long step = 0; step <= steps && !st; step++) {
    nc_train_scalar sc[NC_TRAIN_NSCALARS];
    nc_train_scalars(&oc, lr, wd, 0.95, step + 1, 1.0, sc);
    for (int i = 0; i < NC_TRAIN_NSCALARS && !st; i++) st = nc_session_put_scalar(sess, sc[i].name, sc[i].value);
    if (!st && trace && step == steps) st = nc_exec_trace_start(ex);
    struct timespec ca, cb;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ca);
    double a = nc_clock_now();
    if (!st) st = nc_session_run_exec(sess, ex);
    if (!st && trace && step == steps) st = nc_exec_trace_write(ex, trace);
    times[step] = nc_clock_now() - a;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cb);
    cpus[step] = (double)(cb.tv_sec - ca.tv_sec) + 1e-9 * (double)(cb.tv_nsec - ca.tv_nsec);
    if (!st) fprintf(stderr, "\rstep %ld/%ld  %.3f s  loss %.4f   ", step, steps, times[step], *(float *)nc_session_get(sess, "loss")->data);
  }
  fprintf(stderr, "\n");
  int rc = 0;
  if (st) rc = nc_bench_fail(st);
  else {
    qsort(times + 1, (size_t)steps, sizeof *times, nc_bench_cmp);  // times[0] is the warm-up
    qsort(cpus + 1, (size_t)steps, sizeof *cpus, nc_bench_cmp);
    double cpu_med = cpus[1 + steps / 2];
    double med = times[1 + steps / 2], mn = times[1], mx = times[steps];
    double tokens = (double)batch * (double)seq, fpt = nc_bench_flops_per_token(&s, seq);
    double tps = tokens / med, gflops = tps * fpt / 1e9;
    printf("bench train %s on %s (%s): batch %ld x seq %ld, %d kernels, prepared in %.2f s\n", s.name, nc_device_name(&dev), s.precision,
           batch, seq, nc_exec_nkernels(ex), tcompile);
    const char *peak_src = "given";
    if (!(peak > 0) && dev.kind == NC_DEV_CPU) {
      nc_status pst = nc_cpu_peak_measure(dev.threads, &peak);
      if (pst) {  // no MFU then, but the timing stands
        fprintf(stderr, "nanochat bench: %s\n", nc_status_msg(pst));
        nc_status_free(pst);
        peak = 0;
      }
      peak_src = "measured";
    }
    char mfus[96] = "MFU -- (no --peak for this device)";
    if (peak > 0) snprintf(mfus, sizeof mfus, "MFU %.1f%% of %.0f GFLOP/s (%s peak)", 100 * gflops / peak, peak, peak_src);
    printf("step %.3f s median (min %.3f, max %.3f) over %ld steps; %.0f tokens/s; %.1f GFLOP/s; %s\n", med, mn, mx, steps, tps,
           gflops, mfus);
    printf("process CPU time %.3f s per step (median; all threads, incl. the pool's bounded spin)\n", cpu_med);
    printf("{\"bench\":\"train\",\"spec\":\"%s\",\"precision\":\"%s\",\"device\":\"%s\",\"batch\":%ld,\"seq\":%ld,\"steps\":%ld,\"step_s_median\":%.6f,"
           "\"step_s_min\":%.6f,\"step_s_max\":%.6f,\"tokens_per_s\":%.1f,\"gflops\":%.2f,\"mfu\":%.4f,\"peak_gflops\":%.1f,\"prepare_s\":%.3f,"
           "\"kernels\":%d,\"cpu_s_median\":%.6f}\n",
           s.name, s.precision, nc_device_name(&dev), batch, seq, steps, med, mn, mx, tps, gflops, peak > 0 ? gflops / peak : 0, peak,
           tcompile, nc_exec_nkernels(ex), cpu_med);
  }
  if (!st && getenv("NC_PROFILE")) nc_exec_profile_print(ex, atoi(getenv("NC_PROFILE")) > 0 ? atoi(getenv("NC_PROFILE")) : 25);
  free(times);
  free(cpus);
  nc_exec_free(ex);
  nc_graph_free(g);
  nc_session_free(sess);
  return rc;
}

// nanochat bench compile: prepare time of a spec's training step on the cpu
// device, cold (empty kernel cache) and warm (cache hit), medians of runs.
static int nc_bench_compile(int argc, char **argv) {
  const char *spec_path = NULL;
  long runs = 3;
  for (int i = 1; i < argc; i++) {
    if ((!strcmp(argv[i], "--spec") || !strcmp(argv[i], "-s")) && i + 1 < argc) spec_path = argv[++i];
    else if ((!strcmp(argv[i], "--runs") || !strcmp(argv[i], "-n")) && i + 1 < argc) {
      char *end;
      runs = strtol(argv[++i], &end, 10);
      if (*end || runs < 1 || runs > 100) {
        fprintf(stderr, "nanochat bench compile: --runs wants 1..100, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: nanochat bench compile --spec SPEC [--runs N]\n\nTimes building and compiling the spec's whole training step for the cpu\n"
             "device: cold (empty kernel cache) and warm (cache hit); prints medians and a JSON line.\n");
      return 0;
    } else {
      fprintf(stderr, "nanochat bench compile: unexpected argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!spec_path) {
    fprintf(stderr, "usage: nanochat bench compile --spec SPEC [--runs N]\n");
    return 2;
  }
  nc_model_spec s;
  nc_status st = nc_spec_load(spec_path, &s);
  if (st) return nc_bench_fail(st);
  char dir[] = "/tmp/nc_bench_cache_XXXXXX";
  if (!mkdtemp(dir)) {
    fprintf(stderr, "nanochat bench compile: cannot create a temporary cache folder\n");
    return 1;
  }
  const char *old = getenv("NC_CACHE_DIR");
  char *saved = old ? strdup(old) : NULL;
  setenv("NC_CACHE_DIR", dir, 1);
  double cold[100], warm[100];
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_device dev = {.kind = NC_DEV_CPU};
  for (long r = 0; r < runs && !st; r++) {
    for (int w = 0; w < 2 && !st; w++) {
      if (!w) {  // cold: empty the cache folder
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -f %s/plan-*.o", dir);
        if (system(cmd) != 0) fprintf(stderr, "warning: could not empty %s\n", dir);
      }
      double t0 = nc_clock_now();
      nc_graph *g = NULL;
      nc_exec *ex = NULL;
      st = nc_train_build(&s, &oc, &to, &g);
      if (!st) st = nc_exec_new(g, &dev, &ex);
      (w ? warm : cold)[r] = nc_clock_now() - t0;
      nc_exec_free(ex);
      nc_graph_free(g);
    }
  }
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
  if (saved) setenv("NC_CACHE_DIR", saved, 1);
  else unsetenv("NC_CACHE_DIR");
  free(saved);
  if (st) return nc_bench_fail(st);
  qsort(cold, (size_t)runs, sizeof *cold, nc_bench_cmp);
  qsort(warm, (size_t)runs, sizeof *warm, nc_bench_cmp);
  printf("bench compile %s (training step, cpu): cold %.3f s, warm %.3f s (medians of %ld)\n", s.name, cold[runs / 2],
         warm[runs / 2], runs);
  printf("{\"bench\":\"compile\",\"spec\":\"%s\",\"runs\":%ld,\"cold_s\":%.4f,\"warm_s\":%.4f}\n", s.name, runs,
         cold[runs / 2], warm[runs / 2]);
  return 0;
}

int nc_cmd_bench(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    FILE *f = argc < 2 ? stderr : stdout;
    fprintf(f, "usage: nanochat bench train --spec SPEC [--batch B] [--seq T] [--steps N] [--device D] [--threads N]\n"
               "       nanochat bench compile --spec SPEC [--runs N]\n"
               "       (GEMM vs OpenBLAS: bench/gemm_bench.sh; tokenizer: bench/tok_bench.sh)\n");
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "train")) return nc_bench_train(argc - 1, argv + 1);
  if (!strcmp(argv[1], "compile")) return nc_bench_compile(argc - 1, argv + 1);
  fprintf(stderr, "nanochat bench: unknown benchmark '%s' (train, compile)\n", argv[1]);
  return 2;
}
