// nanochat tune SPEC: the autotuner (runtime/tuner.h) over the GEMM shapes of
// the spec's compiled training step and, on OpenCL, its flash-attention calls
// and loop and row kernels' size buckets; winners go to the tuning database
// (runtime/tunedb.h, docs/tuning.md).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "models/train.h"
#include "passes/pass.h"
#include "runtime/exec.h"
#include "runtime/ocl_device.h"
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
          "      --only LIST     opencl: the spaces to tune, of gemm, flash, loop, row (default all: flash attention's\n"
          "                      blocks first, then the loop kernels' work-group, the row kernels' work-group,\n"
          "                      then the GEMMs)\n"
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
typedef struct {
  nc_tune_flash_shape *flash;
  int nflash;
  nc_tune_loop_shape *loop;
  int nloop;
  nc_tune_row_shape *row;
  int nrow;
} nc_tune_ocl_shapes;

static int nc_tune_cmp_row(const void *a, const void *b) {
  const nc_tune_row_shape *x = a, *y = b;
  return x->count != y->count ? y->count - x->count : x->bucket - y->bucket;
}

static int nc_tune_cmp_loop(const void *a, const void *b) {
  const nc_tune_loop_shape *x = a, *y = b;
  return x->count != y->count ? y->count - x->count : x->bucket - y->bucket;
}

static nc_status nc_tune_spec_shapes(const char *spec_path, const nc_device *dev, long batch, long seq, nc_tune_shape **shapes, int *n,
                                     nc_tune_ocl_shapes *os) {
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
  if (!st && dev->kind == NC_DEV_OPENCL) {
    st = nc_tune_plan_flash(g, p, syms, &os->flash, &os->nflash);
    nc_ocl_device_desc dd;
    if (!st) st = nc_ocl_select(dev->select, &dd);
    if (!st) st = nc_tune_plan_loops(g, p, syms, dd.gpu, &os->loop, &os->nloop);
    if (!st) {  // most launches first; buckets over 2^27 items are not timed (the synthetic kernel's buffers)
      qsort(os->loop, (size_t)os->nloop, sizeof *os->loop, nc_tune_cmp_loop);
      int m = 0;
      for (int i = 0; i < os->nloop; i++)
        if (os->loop[i].bucket <= 27) os->loop[m++] = os->loop[i];
      os->nloop = m;
    }
    if (!st) st = nc_tune_plan_rows(g, p, syms, dd.gpu, &os->row, &os->nrow);  // most launches first
    if (!st) qsort(os->row, (size_t)os->nrow, sizeof *os->row, nc_tune_cmp_row);
  }
  nc_plan_free(p);
  nc_graph_free(g);
  return st;
}

int nc_cmd_tune(int argc, char **argv) {
  static const struct option opts[] = {
      {"device", required_argument, 0, 'd'}, {"budget", required_argument, 0, 'B'}, {"batch", required_argument, 0, 'b'},
      {"seq", required_argument, 0, 't'},    {"threads", required_argument, 0, 'T'}, {"precision", required_argument, 0, 'P'},
      {"db", required_argument, 0, 'D'},     {"list", no_argument, 0, 'L'},          {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},         {"timer", required_argument, 0, 'W'}, {"only", required_argument, 0, 'O'},
      {0, 0, 0, 0}};
  nc_device dev = {.kind = NC_DEV_CPU};
  double budget = 60;
  long batch = 8, seq = 256, threads = 0;
  const char *db_path = NULL, *precision = NULL;
  bool list = false, quiet = false, wall = false;
  bool want[4] = {true, true, true, true};  // gemm, flash, loop, row
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
      case 'O': {
        want[0] = want[1] = want[2] = want[3] = false;
        const char *q = optarg;
        while (*q) {
          size_t l = strcspn(q, ",");
          if (l == 4 && !strncmp(q, "gemm", 4)) want[0] = true;
          else if (l == 5 && !strncmp(q, "flash", 5)) want[1] = true;
          else if (l == 4 && !strncmp(q, "loop", 4)) want[2] = true;
          else if (l == 3 && !strncmp(q, "row", 3)) want[3] = true;
          else {
            fprintf(stderr, "nanochat tune: --only wants a comma-separated list of gemm, flash, loop, row; got '%s'\n", optarg);
            return 2;
          }
          q += l + (q[l] == ',');
        }
        if (!want[0] && !want[1] && !want[2] && !want[3]) {
          fprintf(stderr, "nanochat tune: --only wants at least one of gemm, flash, loop, row\n");
          return 2;
        }
        break;
      }
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
  if (dev.kind != NC_DEV_OPENCL && !want[0]) {
    fprintf(stderr, "nanochat tune: --only flash/loop/row: those are OpenCL templates (use --device opencl...)\n");
    return 2;
  }
  nc_tune_shape *shapes = NULL;
  int n = 0;
  nc_tune_ocl_shapes os = {0};
  nc_status st = nc_tune_spec_shapes(spec_path, &dev, batch, seq, &shapes, &n, &os);
  if (st) {
    free(os.flash), free(os.loop), free(os.row);
    return nc_tune_fail(st);
  }
  if (!want[0]) n = 0;
  if (!want[1]) os.nflash = 0;
  if (!want[2]) os.nloop = 0;
  if (!want[3]) os.nrow = 0;
  if (list) {
    printf("%d GEMM shapes in the training step of %s (batch %ld x seq %ld):\n", n, spec_path, batch, seq);
    for (int i = 0; i < n; i++)
      printf("  ta=%d tb=%d sym=%d batch=%lld m=%lld n=%lld k=%lld  x%d\n", (shapes[i].variant >> 1) & 1, shapes[i].variant & 1,
             (shapes[i].variant >> 2) & 1, (long long)shapes[i].batch, (long long)shapes[i].m, (long long)shapes[i].n,
             (long long)shapes[i].k, shapes[i].count);
    if (dev.kind == NC_DEV_OPENCL) {
      printf("%d flash-attention shapes (knob space ocl.flash):\n", os.nflash);
      for (int i = 0; i < os.nflash; i++) {
        char sh[96];
        nc_ocl_flash_shape_str(&os.flash[i].s, sh, sizeof sh);
        printf("  %s d=%lld dv=%lld  x%d forward, x%d backward\n", sh, (long long)os.flash[i].d, (long long)os.flash[i].dv, os.flash[i].count,
               os.flash[i].bwd);
      }
      printf("%d loop-kernel size buckets (knob space ocl.loop, class=loop):\n", os.nloop);
      for (int i = 0; i < os.nloop; i++)
        printf("  items=2^%d  x%d (largest %lld items)\n", os.loop[i].bucket, os.loop[i].count, (long long)os.loop[i].items);
      printf("%d row-kernel length buckets (knob space ocl.loop, class=row):\n", os.nrow);
      for (int i = 0; i < os.nrow; i++) {
        char sh[32];
        nc_ocl_row_shape_str(os.row[i].bucket, sh, sizeof sh);
        printf("  %s  x%d (largest %lld rows of %lld)\n", sh, os.row[i].count, (long long)os.row[i].rows, (long long)os.row[i].cols);
      }
    }
    free(shapes), free(os.flash), free(os.loop), free(os.row);
    return 0;
  }
  nc_tunedb *db = NULL;
  st = nc_tunedb_load(path, true, &db);
  nc_tune_result *res = calloc((size_t)(n > 0 ? n : 1), sizeof *res);
  if (!st && !res) st = nc_errorf(NC_E_NOMEM, "out of memory");
  nc_tune_result *fres = calloc((size_t)os.nflash + 1, sizeof *fres), *lres = calloc((size_t)os.nloop + 1, sizeof *lres),
                 *rres = calloc((size_t)os.nrow + 1, sizeof *rres);
  if (!st && (!fres || !lres || !rres)) st = nc_errorf(NC_E_NOMEM, "out of memory");
  nc_tune_opts to = {.dev = dev, .budget_s = budget, .progress = quiet ? NULL : stderr, .wall_time = wall};
  if (!st && getenv("NC_TUNE_TEST_BREAK")) to.break_candidates = true;  // test hook: every non-default candidate is wrong
  // the budget: flash attention first (a large share of the step, few shapes), then the loop buckets (no
  // compilation per candidate), then the row buckets (a small program build per candidate, few
  // candidates), then the GEMMs; each space gets its weight's share of what is left, and what a space
  // does not use passes on
  double w[4] = {n ? 0.40 : 0, os.nflash ? 0.40 : 0, os.nloop ? 0.10 : 0, os.nrow ? 0.10 : 0};
  struct timespec ts0;
  clock_gettime(CLOCK_MONOTONIC, &ts0);
  double t_end = (double)ts0.tv_sec + 1e-9 * (double)ts0.tv_nsec + budget;
  const int order[4] = {1, 2, 3, 0};
  for (int oi = 0; oi < 4 && !st; oi++) {
    int sp = order[oi];
    if (w[sp] <= 0) continue;
    double wl = 0;
    for (int j = oi; j < 4; j++) wl += w[order[j]];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double left = t_end - ((double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
    to.budget_s = left > 0 ? left * w[sp] / wl : 1e-9;
    double wt = w[0] + w[1] + w[2] + w[3];
    if (sp == 2 && to.budget_s < budget * w[sp] / wt) to.budget_s = budget * w[sp] / wt;  // cheap candidates: at least the nominal share
    if (sp == 1) st = nc_tune_flash_run(os.flash, os.nflash, &to, db, fres);
    else if (sp == 2) st = nc_tune_loop_run(os.loop, os.nloop, &to, db, lres);
    else if (sp == 3) st = nc_tune_row_run(os.row, os.nrow, &to, db, rres);
    else st = nc_tune_run(shapes, n, &to, db, res);
  }
  int written = 0;
  for (int i = 0; !st && i < n; i++) written += res[i].tuned;
  for (int i = 0; !st && i < os.nflash; i++) written += fres[i].tuned;
  for (int i = 0; !st && i < os.nloop; i++) written += lres[i].tuned;
  for (int i = 0; !st && i < os.nrow; i++) written += rres[i].tuned;
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
    for (int sp = 1; sp <= 3; sp++) {  // flash attention (a forward + its backward per call), loop and row buckets (one launch)
      int m = sp == 1 ? os.nflash : sp == 2 ? os.nloop : os.nrow;
      const nc_tune_result *rr = sp == 1 ? fres : sp == 2 ? lres : rres;
      for (int i = 0; i < m; i++) {
        int calls = sp == 1 ? os.flash[i].count : sp == 2 ? os.loop[i].count : os.row[i].count;
        if (!rr[i].tuned) {
          printf("%-44s %-32s %5d %12s %12s %7s  (budget spent)\n", rr[i].kernel, rr[i].shape, calls, "-", "-", "-");
          continue;
        }
        printf("%-44s %-32s %5d %12.1f %12.1f %7.2f  %s%s\n", rr[i].kernel, rr[i].shape, calls, rr[i].default_us, rr[i].best_us,
               rr[i].default_us / rr[i].best_us, rr[i].is_default ? "(default) " : "", rr[i].knobs);
      }
    }
    const char *what[4] = {"GEMM", "flash-attention (forward + backward)", "loop-kernel (synthetic, per launch)", "row-kernel (synthetic RMSNorm, per launch)"};
    int total = n + os.nflash + os.nloop + os.nrow;
    for (int sp = 0; sp < 4; sp++) {
      int m = sp == 0 ? n : sp == 1 ? os.nflash : sp == 2 ? os.nloop : os.nrow, done = 0;
      if (!m) continue;
      const nc_tune_result *rr = sp == 0 ? res : sp == 1 ? fres : sp == 2 ? lres : rres;
      double td = 0, tt = 0;
      for (int i = 0; i < m; i++) {
        int calls = sp == 0 ? shapes[i].count : sp == 1 ? os.flash[i].count : sp == 2 ? os.loop[i].count : os.row[i].count;
        if (rr[i].tuned) td += rr[i].default_us * calls, tt += rr[i].best_us * calls, done++;
      }
      printf("%s: %d of %d shapes tuned (%d skipped for lack of budget); time per step over them %.1f ms default, %.1f ms tuned (%.2fx)\n", what[sp],
             done, m, m - done, td / 1e3, tt / 1e3, tt > 0 ? td / tt : 0);
    }
    printf("%d of %d shapes tuned; %d entries written to %s\n", written, total, written, path);
  }
  free(res);
  free(fres);
  free(lres);
  free(rres);
  free(os.flash);
  free(os.loop);
  free(os.row);
  free(shapes);
  nc_tunedb_free(db);
  return st ? nc_tune_fail(st) : 0;
}
