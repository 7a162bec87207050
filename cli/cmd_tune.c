// nanochat tune SPEC: the autotuner (runtime/tuner.h) over the GEMM shapes of
// the spec's compiled training step and, on OpenCL, its flash-attention calls
// and loop, row and reduction kernels' size buckets; winners go to the tuning database
// (runtime/tunedb.h, docs/tuning.md).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "codegen/gemm_bf16.h"
#include "codegen/host.h"
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
          "                      emulated off NVIDIA; cpu: the bf16 model's bf16 GEMMs, needs AVX512_BF16)\n"
          "      --db PATH       the database (default: $NC_TUNE_DB, else the cache folder's tune.json)\n"
          "      --timer T       cpu: time a candidate by its slowest thread's CPU time (cpu, default:\n"
          "                      robust to other processes) or by the wall clock (wall)\n"
          "      --only LIST     opencl: the spaces to tune, of gemm, flash, loop, row, reduce (default all: flash\n"
          "                      attention's blocks first, then the loop kernels' work-group, the row kernels' and\n"
          "                      the whole-buffer reductions' work-groups,\n"
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
  nc_tune_wg_shape *wg[3];  // the loop space's buckets by class (nc_ocl_loop_class: loop, row, reduce)
  int nwg[3];
} nc_tune_ocl_shapes;

static int nc_tune_cmp_wg(const void *a, const void *b) {
  const nc_tune_wg_shape *x = a, *y = b;
  return x->count != y->count ? y->count - x->count : x->bucket - y->bucket;
}

static nc_status nc_tune_spec_shapes(const char *spec_path, const nc_device *dev, long batch, long seq, nc_tune_shape **shapes, int *n,
                                     nc_tune_ocl_shapes *os) {
  nc_model_spec s;
  NC_TRY(nc_spec_load(spec_path, &s));
  if (dev->kind == NC_DEV_CPU && dev->matmul_bf16)  // the bf16 model (cli/precision.c): its matmuls have bf16 buffers
    NC_TRY(nc_spec_set_precision(&s, "bf16", "--precision"));
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
    for (int cls = 0; cls < 3 && !st; cls++) {  // most launches first
      st = nc_tune_plan_buckets(g, p, syms, dd.gpu, (nc_ocl_loop_class)cls, &os->wg[cls], &os->nwg[cls]);
      if (!st) qsort(os->wg[cls], (size_t)os->nwg[cls], sizeof *os->wg[cls], nc_tune_cmp_wg);
    }
    if (!st) {  // loop buckets over 2^27 items are not timed (the synthetic kernel's buffers)
      int m = 0;
      for (int i = 0; i < os->nwg[0]; i++)
        if (os->wg[0][i].bucket <= 27) os->wg[0][m++] = os->wg[0][i];
      os->nwg[0] = m;
    }
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
  bool want[5] = {true, true, true, true, true};  // gemm, flash, loop, row, reduce
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
        want[0] = want[1] = want[2] = want[3] = want[4] = false;
        const char *q = optarg;
        while (*q) {
          size_t l = strcspn(q, ",");
          if (l == 4 && !strncmp(q, "gemm", 4)) want[0] = true;
          else if (l == 5 && !strncmp(q, "flash", 5)) want[1] = true;
          else if (l == 4 && !strncmp(q, "loop", 4)) want[2] = true;
          else if (l == 3 && !strncmp(q, "row", 3)) want[3] = true;
          else if (l == 6 && !strncmp(q, "reduce", 6)) want[4] = true;
          else {
            fprintf(stderr, "nanochat tune: --only wants a comma-separated list of gemm, flash, loop, row, reduce; got '%s'\n", optarg);
            return 2;
          }
          q += l + (q[l] == ',');
        }
        if (!want[0] && !want[1] && !want[2] && !want[3] && !want[4]) {
          fprintf(stderr, "nanochat tune: --only wants at least one of gemm, flash, loop, row, reduce\n");
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
    if (dev.matmul_bf16 && dev.kind == NC_DEV_CPU) {  // the bf16 GEMM (codegen/gemm_bf16.h) needs AVX512_BF16
      nc_host_cpu hc;
      nc_status hst = nc_host_cpu_query(&hc);
      if (hst) return nc_tune_fail(hst);
      if (dev.avx2_only || !nc_gemm_bf16_supported(&hc)) {
        fprintf(stderr,
                "nanochat tune: --precision bf16 on %s: this CPU (%s) has no AVX512_BF16%s, so bf16 matmuls run the fp32 GEMM on "
                "widened copies; tune the fp32 GEMMs instead (--precision fp32)\n",
                nc_device_name(&dev), hc.cpu, dev.avx2_only ? " in use (cpu:avx2)" : "");
        return 2;
      }
    }
  }
  char path[1024];
  if (!nc_tunedb_path(db_path, path, sizeof path)) {
    fprintf(stderr, "nanochat tune: the tuning database is disabled (NC_TUNE_DB or NC_CACHE_DIR is 'off'); pass --db PATH\n");
    return 2;
  }
  if (dev.kind != NC_DEV_OPENCL && !want[0]) {
    fprintf(stderr, "nanochat tune: --only flash/loop/row/reduce: those are OpenCL templates (use --device opencl...)\n");
    return 2;
  }
  nc_tune_shape *shapes = NULL;
  int n = 0;
  nc_tune_ocl_shapes os = {0};
  nc_status st = nc_tune_spec_shapes(spec_path, &dev, batch, seq, &shapes, &n, &os);
  if (st) {
    free(os.flash), free(os.wg[0]), free(os.wg[1]), free(os.wg[2]);
    return nc_tune_fail(st);
  }
  if (!want[0]) n = 0;
  if (!want[1]) os.nflash = 0;
  for (int cls = 0; cls < 3; cls++)
    if (!want[2 + cls]) os.nwg[cls] = 0;
  if (list) {
    printf("%d GEMM shapes in the training step of %s (batch %ld x seq %ld):\n", n, spec_path, batch, seq);
    for (int i = 0; i < n; i++) {  // CPU: the variant's dtype and epilogue (runtime/cpu.h); OpenCL: fp32 plain
      int v = shapes[i].variant, epi = dev.kind == NC_DEV_CPU ? nc_tune_variant_epi(v) : 0;
      bool bf = dev.kind == NC_DEV_CPU && nc_tune_variant_bf16(v);
      printf("  %s ta=%d tb=%d sym=%d epi=%s batch=%lld m=%lld n=%lld k=%lld  x%d\n", bf ? "bf16" : "fp32", (v >> 1) & 1, v & 1,
             dev.kind == NC_DEV_CPU ? (int)nc_tune_variant_sym(v) : (v >> 2) & 1, epi == 1 ? "relu2" : epi == 2 ? "addend" : "none",
             (long long)shapes[i].batch, (long long)shapes[i].m, (long long)shapes[i].n, (long long)shapes[i].k, shapes[i].count);
    }
    if (dev.kind == NC_DEV_OPENCL) {
      printf("%d flash-attention shapes (knob space ocl.flash):\n", os.nflash);
      for (int i = 0; i < os.nflash; i++) {
        char sh[96];
        nc_ocl_flash_shape_str(&os.flash[i].s, sh, sizeof sh);
        printf("  %s d=%lld dv=%lld  x%d forward, x%d backward\n", sh, (long long)os.flash[i].d, (long long)os.flash[i].dv, os.flash[i].count,
               os.flash[i].bwd);
      }
      const nc_tune_wg_shape *lo = os.wg[0], *ro = os.wg[1], *rd = os.wg[2];
      printf("%d loop-kernel size buckets (knob space ocl.loop, class=loop):\n", os.nwg[0]);
      for (int i = 0; i < os.nwg[0]; i++) printf("  items=2^%d  x%d (largest %lld items)\n", lo[i].bucket, lo[i].count, (long long)lo[i].items);
      printf("%d row-kernel length buckets (knob space ocl.loop, class=row):\n", os.nwg[1]);
      for (int i = 0; i < os.nwg[1]; i++) {
        char sh[32];
        nc_ocl_row_shape_str(ro[i].bucket, sh, sizeof sh);
        printf("  %s  x%d (largest %lld rows of %lld)\n", sh, ro[i].count, (long long)ro[i].rows, (long long)ro[i].cols);
      }
      printf("%d reduction element-count buckets (knob space ocl.loop, class=reduce):\n", os.nwg[2]);
      for (int i = 0; i < os.nwg[2]; i++) {
        char sh[32];
        nc_ocl_reduce_shape_str(rd[i].bucket, sh, sizeof sh);
        printf("  %s  x%d (largest %lld items)\n", sh, rd[i].count, (long long)rd[i].items);
      }
    }
    free(shapes), free(os.flash), free(os.wg[0]), free(os.wg[1]), free(os.wg[2]);
    return 0;
  }
  nc_tunedb *db = NULL;
  st = nc_tunedb_load(path, true, &db);
  nc_tune_result *res = calloc((size_t)(n > 0 ? n : 1), sizeof *res);
  if (!st && !res) st = nc_errorf(NC_E_NOMEM, "out of memory");
  // per space (0 GEMM, 1 flash attention, 2 + class: the loop space's loop, row and reduce buckets): shapes,
  // launches of shape i, results
  int ns[5] = {n, os.nflash, os.nwg[0], os.nwg[1], os.nwg[2]};
#define NC_TUNE_CALLS(sp, i) ((sp) == 0 ? shapes[i].count : (sp) == 1 ? os.flash[i].count : os.wg[(sp) - 2][i].count)
  nc_tune_result *rs[5] = {res};
  for (int sp = 1; sp < 5; sp++)
    if (!(rs[sp] = calloc((size_t)ns[sp] + 1, sizeof *rs[sp])) && !st) st = nc_errorf(NC_E_NOMEM, "out of memory");
  nc_tune_opts to = {.dev = dev, .budget_s = budget, .progress = quiet ? NULL : stderr, .wall_time = wall};
  if (!st && getenv("NC_TUNE_TEST_BREAK")) to.break_candidates = true;  // test hook: every non-default candidate is wrong
  // the budget: flash attention first (a large share of the step, few shapes), then the loop buckets (no
  // compilation per candidate), then the row buckets and the reductions' (a small program build per
  // candidate, few candidates; few reductions per step: a small share), then the GEMMs; each space gets
  // its weight's share of what is left, and what a space does not use passes on
  double w[5] = {n ? 0.40 : 0, os.nflash ? 0.40 : 0, ns[2] ? 0.10 : 0, ns[3] ? 0.10 : 0, ns[4] ? 0.05 : 0};
  struct timespec ts0;
  clock_gettime(CLOCK_MONOTONIC, &ts0);
  double t_end = (double)ts0.tv_sec + 1e-9 * (double)ts0.tv_nsec + budget;
  const int order[5] = {1, 2, 3, 4, 0};
  for (int oi = 0; oi < 5 && !st; oi++) {
    int sp = order[oi];
    if (w[sp] <= 0) continue;
    double wl = 0;
    for (int j = oi; j < 5; j++) wl += w[order[j]];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double left = t_end - ((double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
    to.budget_s = left > 0 ? left * w[sp] / wl : 1e-9;
    double wt = w[0] + w[1] + w[2] + w[3] + w[4];
    if (sp == 2 && to.budget_s < budget * w[sp] / wt) to.budget_s = budget * w[sp] / wt;  // cheap candidates: at least the nominal share
    if (sp == 1) st = nc_tune_flash_run(os.flash, os.nflash, &to, db, rs[1]);
    else if (sp >= 2) st = nc_tune_wg_run((nc_ocl_loop_class)(sp - 2), os.wg[sp - 2], ns[sp], &to, db, rs[sp]);
    else st = nc_tune_run(shapes, n, &to, db, res);
  }
  int written = 0, total = 0;
  for (int sp = 0; sp < 5; sp++) {
    total += ns[sp];
    for (int i = 0; !st && i < ns[sp]; i++) written += rs[sp][i].tuned;
  }
  if (!st && written) st = nc_tunedb_save(db, path);
  if (!st) {
    printf("%-44s %-32s %5s %12s %12s %7s  %s\n", "kernel", "shape", "calls", "default_us", "tuned_us", "speedup", "knobs");
    for (int sp = 0; sp < 5; sp++) {  // GEMMs, flash attention (a forward + its backward per call), loop-space buckets (one launch)
      const nc_tune_result *rr = rs[sp];
      for (int i = 0; i < ns[sp]; i++) {
        int calls = NC_TUNE_CALLS(sp, i);
        if (!rr[i].tuned) {
          printf("%-44s %-32s %5d %12s %12s %7s  (budget spent)\n", rr[i].kernel, rr[i].shape, calls, "-", "-", "-");
          continue;
        }
        printf("%-44s %-32s %5d %12.1f %12.1f %7.2f  %s%s\n", rr[i].kernel, rr[i].shape, calls, rr[i].default_us, rr[i].best_us,
               rr[i].default_us / rr[i].best_us, rr[i].is_default ? "(default) " : "", rr[i].knobs);
      }
    }
    const char *what[5] = {"GEMM", "flash-attention (forward + backward)", "loop-kernel (synthetic, per launch)", "row-kernel (synthetic RMSNorm, per launch)",
                           "reduction (synthetic sum, per launch)"};
    for (int sp = 0; sp < 5; sp++) {
      int m = ns[sp], done = 0;
      if (!m) continue;
      const nc_tune_result *rr = rs[sp];
      double td = 0, tt = 0;
      for (int i = 0; i < m; i++) {
        int calls = NC_TUNE_CALLS(sp, i);
        if (rr[i].tuned) td += rr[i].default_us * calls, tt += rr[i].best_us * calls, done++;
      }
      printf("%s: %d of %d shapes tuned (%d skipped for lack of budget); time per step over them %.1f ms default, %.1f ms tuned (%.2fx)\n", what[sp],
             done, m, m - done, td / 1e3, tt / 1e3, tt > 0 ? td / tt : 0);
    }
#undef NC_TUNE_CALLS
    printf("%d of %d shapes tuned; %d entries written to %s\n", written, total, written, path);
  }
  for (int sp = 0; sp < 5; sp++) free(rs[sp]);
  free(os.flash);
  for (int cls = 0; cls < 3; cls++) free(os.wg[cls]);
  free(shapes);
  nc_tunedb_free(db);
  return st ? nc_tune_fail(st) : 0;
}
