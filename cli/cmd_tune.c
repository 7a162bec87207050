// nanochat tune SPEC: the autotuner (runtime/tuner.h) over the GEMM shapes of
// the spec's compiled training step; winners go to the tuning database
// (runtime/tunedb.h, docs/tuning.md).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "models/train.h"
#include "passes/pass.h"
#include "runtime/exec.h"
#include "runtime/tuner.h"

static void nc_tune_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat tune SPEC [options]\n\n"
          "Searches the GEMM templates' knobs for every matmul shape of SPEC's training\n"
          "step on a device, within a time budget; checks every candidate against a\n"
          "double-precision reference; stores the winners in the tuning database, which\n"
          "later compilations for that device read (docs/tuning.md).\n"
          "  -d, --device D      cpu (default), cpu:avx2, opencl[:N|gpu|cpu|NAME]\n"
          "  -B, --budget S      seconds for the whole search (default 60)\n"
          "  -b, --batch B       sequences per step (default 8)\n"
          "  -t, --seq T         tokens per sequence (default 256)\n"
          "      --threads N     CPU threads (default: one per core)\n"
          "      --precision P   fp32 (default) or bf16 (opencl: the pipelined tensor-core GEMM, wgmma on Hopper;\n"
          "                      emulated off NVIDIA)\n"
          "      --db PATH       the database (default: $NC_TUNE_DB, else the cache folder's tune.json)\n"
          "      --timer T       cpu: time a candidate by its slowest thread's CPU time (cpu, default:\n"
          "                      robust to other processes) or by the wall clock (wall)\n"
          "      --list          print the shapes and exit\n"
          "  -q, --quiet         no progress lines\n");
}

static int nc_tune_fail(nc_status st) {
  int code = nc_status_code(st);
  fprintf(stderr, "nanochat tune: %s\n", nc_status_msg(st));
  nc_status_free(st);
  return code > 0 && code < 128 ? code : 1;
}

// The GEMM shapes of the spec's training step as the device would compile it.
static nc_status nc_tune_spec_shapes(const char *spec_path, const nc_device *dev, long batch, long seq, nc_tune_shape **shapes, int *n) {
  nc_model_spec s;
  NC_TRY(nc_spec_load(spec_path, &s));
  if (seq > s.sequence_len) return nc_errorf(NC_E_INVALID, "--seq %ld exceeds the spec's sequence_len %d (%s)", seq, s.sequence_len, spec_path);
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g = NULL;
  nc_plan *p = NULL;
  NC_TRY(nc_train_build(&s, &oc, &to, &g));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.patterns_off = nc_device_patterns_off(dev);  // as runtime/exec.c compiles for dev (OpenCL: flash attention,
  ctx.patterns_force |= nc_device_patterns_force(dev);  // so the attention's batched GEMMs are not in its step)
  const char *passes[] = {"decompose", "dce"};
  nc_status st = nc_pass_run_pipeline(&g, passes, 2, &ctx);
  nc_lower_opts lo = {.fuse = true, .patterns_off = ctx.patterns_off, .patterns_force = nc_device_patterns_force(dev) & NC_PATTERN_SOFTCAP_CE,
                      .flash_attention = (ctx.patterns_force & NC_PATTERN_FLASH_ATTENTION) != 0,
                      .scatter_atomic = nc_device_scatter_atomic(dev)};
  if (!st) st = nc_plan_build(g, &lo, &p);
  int64_t syms[NC_MAX_SYMS] = {0};
  for (int k = 0; !st && k < nc_graph_nsyms(g); k++) {
    const char *nm = nc_graph_sym_name(g, k);
    if (!strcmp(nm, "B")) syms[k] = batch;
    else if (!strcmp(nm, "T")) syms[k] = seq;
    else st = nc_errorf(NC_E_INTERNAL, "the training step of %s has a symbol '%s' this command cannot bind", spec_path, nm);
  }
  if (!st) st = nc_tune_plan_shapes(g, p, syms, dev->kind == NC_DEV_CPU, shapes, n);
  nc_plan_free(p);
  nc_graph_free(g);
  return st;
}

int nc_cmd_tune(int argc, char **argv) {
  static const struct option opts[] = {
      {"device", required_argument, 0, 'd'}, {"budget", required_argument, 0, 'B'}, {"batch", required_argument, 0, 'b'},
      {"seq", required_argument, 0, 't'},    {"threads", required_argument, 0, 'T'}, {"precision", required_argument, 0, 'P'},
      {"db", required_argument, 0, 'D'},     {"list", no_argument, 0, 'L'},          {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},         {"timer", required_argument, 0, 'W'}, {0, 0, 0, 0}};
  nc_device dev = {.kind = NC_DEV_CPU};
  double budget = 60;
  long batch = 8, seq = 256, threads = 0;
  const char *db_path = NULL, *precision = NULL;
  bool list = false, quiet = false, wall = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "d:B:b:t:qh", opts, NULL)) != -1) {
    char *end = NULL;
    switch (c) {
      case 'd': {
        nc_status st = nc_device_parse(optarg, &dev);
        if (st) return nc_tune_fail(st);
        break;
      }
      case 'B':
        budget = strtod(optarg, &end);
        if (end == optarg || *end || !(budget > 0 && budget <= 86400)) {
          fprintf(stderr, "nanochat tune: --budget wants seconds in (0, 86400], got '%s'\n", optarg);
          return 2;
        }
        break;
      case 'b': batch = strtol(optarg, &end, 10); if (end == optarg || *end || batch < 1 || batch > 4096) { fprintf(stderr, "nanochat tune: --batch wants 1..4096, got '%s'\n", optarg); return 2; } break;
      case 't': seq = strtol(optarg, &end, 10); if (end == optarg || *end || seq < 1 || seq > 1 << 20) { fprintf(stderr, "nanochat tune: --seq wants 1..1048576, got '%s'\n", optarg); return 2; } break;
      case 'T': threads = strtol(optarg, &end, 10); if (end == optarg || *end || threads < 1 || threads > 1024) { fprintf(stderr, "nanochat tune: --threads wants 1..1024, got '%s'\n", optarg); return 2; } break;
      case 'P': precision = optarg; break;
      case 'D': db_path = optarg; break;
      case 'L': list = true; break;
      case 'q': quiet = true; break;
      case 'W':
        if (!strcmp(optarg, "wall")) wall = true;
        else if (!strcmp(optarg, "cpu")) wall = false;
        else {
          fprintf(stderr, "nanochat tune: --timer wants cpu or wall, got '%s'\n", optarg);
          return 2;
        }
        break;
      case 'h': nc_tune_usage(stdout); return 0;
      default: nc_tune_usage(stderr); return 2;
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "nanochat tune: missing SPEC (a model spec such as models/specs/d4.xml)\n\n");
    nc_tune_usage(stderr);
    return 2;
  }
  if (optind + 1 != argc) {
    fprintf(stderr, "nanochat tune: unexpected argument '%s' after SPEC\n", argv[optind + 1]);
    return 2;
  }
  const char *spec_path = argv[optind];
  if (dev.kind != NC_DEV_CPU && dev.kind != NC_DEV_OPENCL) {
    fprintf(stderr, "nanochat tune: device '%s' has no tunable kernels (use cpu, cpu:avx2 or opencl[:N])\n", nc_device_name(&dev));
    return 2;
  }
  dev.threads = (int)threads;
  if (precision) {
    nc_status pst = nc_device_set_precision(&dev, precision);
    if (pst) return nc_tune_fail(pst);
    if (dev.matmul_bf16 && dev.kind != NC_DEV_OPENCL) {
      fprintf(stderr, "nanochat tune: --precision bf16 is tunable on opencl devices only (CPU plans run fp32 GEMMs)\n");
      return 2;
    }
  }
  char path[1024];
  if (!nc_tunedb_path(db_path, path, sizeof path)) {
    fprintf(stderr, "nanochat tune: the tuning database is disabled (NC_TUNE_DB or NC_CACHE_DIR is 'off'); pass --db PATH\n");
    return 2;
  }
  nc_tune_shape *shapes = NULL;
  int n = 0;
  nc_status st = nc_tune_spec_shapes(spec_path, &dev, batch, seq, &shapes, &n);
  if (st) return nc_tune_fail(st);
  if (list) {
    printf("%d GEMM shapes in the training step of %s (batch %ld x seq %ld):\n", n, spec_path, batch, seq);
    for (int i = 0; i < n; i++)
      printf("  ta=%d tb=%d sym=%d batch=%lld m=%lld n=%lld k=%lld  x%d\n", (shapes[i].variant >> 1) & 1, shapes[i].variant & 1,
             (shapes[i].variant >> 2) & 1, (long long)shapes[i].batch, (long long)shapes[i].m, (long long)shapes[i].n,
             (long long)shapes[i].k, shapes[i].count);
    free(shapes);
    return 0;
  }
  nc_tunedb *db = NULL;
  st = nc_tunedb_load(path, true, &db);
  nc_tune_result *res = calloc((size_t)(n > 0 ? n : 1), sizeof *res);
  if (!st && !res) st = nc_errorf(NC_E_NOMEM, "out of memory");
  nc_tune_opts to = {.dev = dev, .budget_s = budget, .progress = quiet ? NULL : stderr, .wall_time = wall};
  if (!st && getenv("NC_TUNE_TEST_BREAK")) to.break_candidates = true;  // test hook: every non-default candidate is wrong
  if (!st) st = nc_tune_run(shapes, n, &to, db, res);
  int written = 0;
  for (int i = 0; !st && i < n; i++) written += res[i].tuned;
  if (!st && written) st = nc_tunedb_save(db, path);
  if (!st) {
    printf("%-44s %-32s %5s %12s %12s %7s  %s\n", "kernel", "shape", "calls", "default_us", "tuned_us", "speedup", "knobs");
    for (int i = 0; i < n; i++) {
      if (!res[i].tuned) {
        printf("%-44s %-32s %5d %12s %12s %7s  (budget spent)\n", res[i].kernel, res[i].shape, shapes[i].count, "-", "-", "-");
        continue;
      }
      printf("%-44s %-32s %5d %12.1f %12.1f %7.2f  %s%s\n", res[i].kernel, res[i].shape, shapes[i].count, res[i].default_us, res[i].best_us,
             res[i].default_us / res[i].best_us, res[i].is_default ? "(default) " : "", res[i].knobs);
    }
    double td = 0, tt = 0;
    for (int i = 0; i < n; i++)
      if (res[i].tuned) td += res[i].default_us * shapes[i].count, tt += res[i].best_us * shapes[i].count;
    printf("%d of %d shapes tuned; GEMM time per step %.1f ms default, %.1f ms tuned (%.2fx); %d entries written to %s\n", written, n,
           td / 1e3, tt / 1e3, tt > 0 ? td / tt : 0, written, path);
  }
  free(res);
  free(shapes);
  nc_tunedb_free(db);
  return st ? nc_tune_fail(st) : 0;
}
