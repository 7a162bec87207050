// The autotuner's flash-attention, loop- and row-kernel spaces (codegen/tune.h ocl.flash, ocl.loop): the
// tables and the templates' checks, database entries (bad ones ignored with a warning), a PoCL
// compilation that launches hand-written entries (counters) and still matches the interpreter, and
// tuning runs that record entries (the test hook rejecting every non-default candidate).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codegen/ocl_attn.h"
#include "codegen/tune.h"
#include "ir/build.h"
#include "passes/lower.h"
#include "passes/pass.h"
#include "runtime/exec.h"
#include "runtime/ocl_device.h"
#include "runtime/ocl_tune.h"
#include "runtime/tunedb.h"
#include "runtime/tuner.h"
#include "tests/support/cli_util.h"

#define NEED_OPENCL()                                                                  \
  do {                                                                                 \
    if (!nc_ocl_available()) cr_skip_test("no OpenCL device (install pocl-opencl-icd)"); \
  } while (0)

static char tmpdir[512];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/nc_test_tune_flash_%d", (int)getpid());
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", tmpdir, tmpdir);
  cr_assert_eq(system(cmd), 0);
}

static void teardown(void) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd)) {
  }
}

TestSuite(tune_flash, .init = setup, .fini = teardown);

// PoCL leaks inside its LLVM when it compiles a kernel not in its own cache (see test_tune.c).
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libpocl.so\nleak:libLLVM-15.so\n"; }

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "%s", path);
  fputs(text, f);
  fclose(f);
}

static bool warned(const nc_tunedb *db, const char *needle) {
  for (int i = 0; i < nc_tunedb_nwarnings(db); i++)
    if (strstr(nc_tunedb_warning(db, i), needle)) return true;
  return false;
}

static void expect_bad(const nc_knob_space *sp, const void *k, const char *want) {
  nc_status st = nc_knob_check(sp, k);
  cr_assert_not_null(st, "accepted; wanted an error with '%s'", want);
  cr_assert(strstr(nc_status_msg(st), want), "'%s' not in: %s", want, nc_status_msg(st));
  nc_status_free(st);
}

// ---- the tables --------------------------------------------------------------------
Test(tune_flash, flash_knob_space_ranges_and_checks) {
  const nc_knob_space *sp = nc_knob_space_find("ocl.flash");
  cr_assert_eq(sp, &nc_ocl_flash_knob_space);
  cr_assert_eq(sp->nknobs, 6);
  for (int i = 0; i < sp->nknobs; i++)
    for (int v = 0; v < sp->knobs[i].nsearch; v++)
      cr_assert(sp->knobs[i].search[v] >= sp->knobs[i].min && sp->knobs[i].search[v] <= sp->knobs[i].max, "%s", sp->knobs[i].name);
  // every mode's defaults are valid at the head dims the models use
  int dims[3] = {16, 64, 128};
  for (int tc = 0; tc <= 2; tc++)
    for (int d = 0; d < 3; d++) {
      nc_ocl_flash_knobs k;
      nc_ocl_flash_knobs_default(tc, dims[d], dims[d], &k);
      nc_status st = nc_knob_check(sp, &k);
      cr_assert_null(st, "mode %d dims %d: %s", tc, dims[d], st ? nc_status_msg(st) : "");
    }
  nc_ocl_flash_knobs k0;
  nc_ocl_flash_knobs_default(1, 128, 128, &k0);
  nc_ocl_flash_knobs k = k0;
  k.bl.bm = 40;  // inside the range, not a multiple of 16
  expect_bad(sp, &k, "bm=40");
  k = k0, k.bl.bn = 80;
  expect_bad(sp, &k, "bn=80");
  k = k0, k.bl.st = 3;
  expect_bad(sp, &k, "st=3");
  k = k0, k.bl.qn = 64;  // dK/dV at head dim 128: 64 + 64 + 64 fp32 accumulators per work-item
  expect_bad(sp, &k, "accumulators");
  k.dp = k.dvp = 64;  // the same blocks at head dim 64 fit
  cr_assert_null(nc_knob_check(sp, &k));
  k = k0, k.bl.bm = 128, k.bl.bn = 64, k.bl.st = 2;  // forward at 128: 2*(128*136 + 2*64*272 + 128*72) + 1 KiB = 123 KB: fits Hopper
  cr_assert_null(nc_knob_check(sp, &k));
  nc_ocl_flash_knobs_default(0, 128, 128, &k);  // fp32 tiles: 48 KiB and bn, qn <= 32
  k.bl.bm = 128;
  expect_bad(sp, &k, "local memory");
  nc_ocl_flash_knobs_default(0, 16, 16, &k);
  k.bl.bn = 64;
  expect_bad(sp, &k, "fp32 tiles");
  k = k0, k.tc = 3;
  expect_bad(sp, &k, "mode 3");
  k = k0, k.dp = 136;
  expect_bad(sp, &k, "head dims");
  // the local memory of the default bf16 blocks at 128 is what docs/opencl.md says (57, 75, 80 KB)
  long lb[3];
  nc_ocl_attn_local_bytes(1, 128, 128, &k0.bl, lb);
  cr_assert(lb[0] > 57000 && lb[0] < 58000 && lb[1] > 74000 && lb[1] < 76000 && lb[2] > 79000 && lb[2] < 81000, "%ld %ld %ld", lb[0], lb[1], lb[2]);
  // signature and shape, and the shape's parser
  char buf[128];
  nc_ocl_flash_signature(1, 128, 64, buf, sizeof buf);
  cr_assert_str_eq(buf, "ocl.flash mode=1 dp=128 dvp=64");
  nc_ocl_flash_shape s = {.batch = 32, .tq = 2048, .tk = 2048, .hq = 6, .hkv = 6, .causal = 1, .window = 1024}, r;
  nc_ocl_flash_shape_str(&s, buf, sizeof buf);
  cr_assert_str_eq(buf, "batch=32 tq=2048 tk=2048 hq=6 hkv=6 causal=1 window=1024");
  cr_assert(nc_ocl_flash_shape_parse(buf, &r));
  cr_assert(r.batch == 32 && r.tq == 2048 && r.tk == 2048 && r.hq == 6 && r.hkv == 6 && r.causal == 1 && r.window == 1024);
  const char *bad[] = {"batch=32 tq=2048", "batch=32 tq=2048 tk=2048 hq=6 hkv=4 causal=1 window=0", "batch=0 tq=1 tk=1 hq=1 hkv=1 causal=0 window=0",
                       "batch=1 tq=1 tk=1 hq=1 hkv=1 causal=2 window=0", "batch=1 tq=1 tk=1 hq=1 hkv=1 causal=0 window=0 x"};
  for (int i = 0; i < 5; i++) cr_assert_not(nc_ocl_flash_shape_parse(bad[i], &r), "%s", bad[i]);
}

Test(tune_flash, loop_knob_space_and_buckets) {
  const nc_knob_space *sp = nc_knob_space_find("ocl.loop");
  cr_assert_eq(sp, &nc_ocl_loop_knob_space);
  for (int gpu = 0; gpu <= 1; gpu++) {
    nc_ocl_knobs k;
    nc_ocl_knobs_default(gpu, &k);
    cr_assert_null(nc_knob_check(sp, &k));
    k.row_wg = 48;
    expect_bad(sp, &k, "power of two");
  }
  char buf[64];
  nc_ocl_loop_signature(NC_OCL_LOOP_ELEMENTWISE, buf, sizeof buf);
  cr_assert_str_eq(buf, "ocl.loop class=loop");
  nc_ocl_loop_signature(NC_OCL_LOOP_ROW, buf, sizeof buf);
  cr_assert_str_eq(buf, "ocl.loop class=row");
  cr_assert_eq(nc_ocl_loop_bucket(1), 0);
  cr_assert_eq(nc_ocl_loop_bucket(2), 1);
  cr_assert_eq(nc_ocl_loop_bucket(3), 1);
  cr_assert_eq(nc_ocl_loop_bucket(1024), 10);
  cr_assert_eq(nc_ocl_loop_bucket(2047), 10);
  cr_assert_eq(nc_ocl_loop_bucket((int64_t)1 << 33), 33);
}

// ---- database entries -----------------------------------------------------------------
#define HEAD "{\"format\": \"nanochat-c tuning database\", \"version\": 1, \"entries\": ["

// An entry for this PoCL device (kernel, shape, knobs as JSON text).
static void entry(char *buf, size_t n, const nc_ocl_device_desc *d, const char *kernel, const char *shape, const char *knobs) {
  char device[192], driver[192];
  nc_tune_ocl_ids(d, device, sizeof device, driver, sizeof driver);
  snprintf(buf, n, "{\"device\": \"%s\", \"driver\": \"%s\", \"kernel\": \"%s\", \"shape\": \"%s\", \"knobs\": %s, \"time_us\": 1, \"default_time_us\": 2}",
           device, driver, kernel, shape, knobs);
}

Test(tune_flash, bad_entries_are_ignored_with_a_warning) {
  NEED_OPENCL();
  nc_ocl_device_desc d;
  cr_assert_null(nc_ocl_select("", &d));
  const char *sh = "batch=2 tq=40 tk=40 hq=2 hkv=1 causal=1 window=0";
  struct {
    const char *kernel, *shape, *knobs;
  } es[] = {
      {"ocl.flash mode=0 dp=16 dvp=16", sh, "{\"bm\": 32, \"bmq\": 32, \"bn\": 32, \"km\": 32, \"qn\": 16, \"st\": 2}"},  // 0 good
      {"ocl.flash mode=0 dp=16 dvp=16", "batch=2 tq=41 tk=41 hq=2 hkv=1 causal=1 window=0", "{\"bn\": 64}"},                                          // 1 fp32 tiles: bn <= 32
      {"ocl.flash mode=0 dp=16 dvp=16", "batch=2 tq=40", "{\"bm\": 64}"},                             // 2 malformed shape
      {"ocl.flash mode=0 dp=16 dvp=16", "batch=2 tq=42 tk=42 hq=2 hkv=1 causal=1 window=0", "{\"bm\": 48, \"km\": 40}"},                               // 3 km not a multiple of 16
      {"ocl.flash mode=0 dp=16 dvp=16", "batch=2 tq=50 tk=50 hq=2 hkv=1 causal=1 window=0", "{\"bm\": 32, \"bmq\": 32, \"bn\": 32, \"km\": 32, \"qn\": 16, \"st\": 2}"},  // 4 good, same blocks
      {"ocl.loop class=loop", "items=2^10", "{\"loop_wg\": 128}"},                                    // 5 good
      {"ocl.loop class=loop", "items=2^11", "{\"loop_wg\": 64, \"row_wg\": 48}"},                      // 6 row_wg not a power of two
      {"ocl.loop class=loop", "items=1024", "{\"loop_wg\": 64}"},                                     // 7 malformed shape
  };
  enum { NE = sizeof es / sizeof es[0] };
  char text[16384] = HEAD, e[2048];
  for (int i = 0; i < NE; i++) {
    entry(e, sizeof e, &d, es[i].kernel, es[i].shape, es[i].knobs);
    strcat(text, e);
    strcat(text, i + 1 < NE ? ",\n" : "]}");
  }
  char path[600];
  snprintf(path, sizeof path, "%s/bad.json", tmpdir);
  write_text(path, text);
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(path, false, &db));
  cr_assert_eq(nc_tunedb_count(db), NE, "one entry per key: the shapes differ");
  nc_ocl_attn_blocks def;
  nc_ocl_attn_blocks_of(0, &def);
  nc_ocl_tuned_flash ft[8];
  int nsets;
  int n = nc_ocl_flash_select(db, &d, 0, 16, 16, &def, ft, 8, &nsets);
  cr_assert_eq(n, 2, "entries 0 and 4");
  cr_assert_eq(nsets, 1, "equal blocks share one kernel set");
  cr_assert_eq(ft[0].bl.bm, 32);
  cr_assert_eq(ft[0].bl.st, 2);
  cr_assert_eq(ft[1].shape.tq, 50);
  cr_assert(warned(db, "bn=64") && warned(db, "fp32 tiles"), "the template's check names the knob");
  cr_assert(warned(db, "is not 'batch=B tq=Tq"), "a malformed shape");
  cr_assert(warned(db, "km=40"), "km");
  cr_assert_eq(nc_tunedb_nwarnings(db), 3, "%d warnings", nc_tunedb_nwarnings(db));
  // another mode's or head dim's entries are not this signature's
  cr_assert_eq(nc_ocl_flash_select(db, &d, 2, 16, 16, &def, ft, 8, &nsets), 0);
  cr_assert_eq(nc_ocl_flash_select(db, &d, 0, 32, 16, &def, ft, 8, &nsets), 0);
  nc_ocl_knobs kn;
  nc_ocl_knobs_default(d.gpu, &kn);
  int wg[NC_OCL_LOOP_BUCKETS];
  cr_assert_eq(nc_ocl_loop_select(db, &d, &kn, wg), 1);
  cr_assert_eq(wg[10], 128);
  cr_assert_eq(wg[11], 0);
  cr_assert(warned(db, "row_wg=48"), "loop entry 6");
  cr_assert(warned(db, "is not 'items=2^K'"), "loop entry 7");
  nc_tunedb_free(db);
  // an out-of-range knob: dropped with a warning when the file is read
  char stale[4096];
  snprintf(stale, sizeof stale, HEAD "{\"device\": \"x\", \"driver\": \"y\", \"kernel\": \"ocl.flash mode=0 dp=16 dvp=16\", \"shape\": \"%s\", \"knobs\": {\"bm\": 300}, "
                                     "\"time_us\": 1, \"default_time_us\": 2}]}", sh);
  write_text(path, stale);
  cr_assert_null(nc_tunedb_load(path, false, &db));
  cr_assert_eq(nc_tunedb_count(db), 0, "bm=300 is outside the range: dropped on load");
  cr_assert(warned(db, "bm=300 is outside"));
  nc_tunedb_free(db);
}

// ---- a compilation that uses the entries ----------------------------------------------
enum { AB = 2, AT = 40, AHQ = 2, AHKV = 1, AD = 16 };

// q, k, v, dout (B,T,H,D) and the attention with its three gradients, plus y = a*b + a over 9000 items.
static nc_graph *attn_graph(void) {
  nc_graph *g = nc_graph_new("tune_flash_attn");
  nc_dim dq[4] = {nc_dim_const(AB), nc_dim_const(AT), nc_dim_const(AHQ), nc_dim_const(AD)};
  nc_dim dk[4] = {nc_dim_const(AB), nc_dim_const(AT), nc_dim_const(AHKV), nc_dim_const(AD)};
  nc_id q = nc_leaf(g, NC_OP_INPUT, "q", nc_type_make(NC_F32, 4, dq));
  nc_id k = nc_leaf(g, NC_OP_INPUT, "k", nc_type_make(NC_F32, 4, dk));
  nc_id v = nc_leaf(g, NC_OP_INPUT, "v", nc_type_make(NC_F32, 4, dk));
  nc_id d = nc_leaf(g, NC_OP_INPUT, "dout", nc_type_make(NC_F32, 4, dq));
  cr_assert_null(nc_graph_set_output(g, "o", nc_b_attention(g, q, k, v, NC_NONE, true, 0, 0.25)));
  const char *names[3] = {"dq", "dk", "dv"};
  for (int w = 0; w < 3; w++) cr_assert_null(nc_graph_set_output(g, names[w], nc_b_attention_grad(g, q, k, v, d, NC_NONE, w, true, 0, 0.25)));
  nc_dim dl[1] = {nc_dim_const(9000)};
  nc_id a = nc_leaf(g, NC_OP_INPUT, "a", nc_type_make(NC_F32, 1, dl));
  nc_id b = nc_leaf(g, NC_OP_INPUT, "b", nc_type_make(NC_F32, 1, dl));
  cr_assert_null(nc_graph_set_output(g, "y", nc_op2(g, NC_OP_ADD, nc_op2(g, NC_OP_MUL, a, b), a)));
  cr_assert_null(nc_graph_error(g));
  return g;
}

static nc_plan *plan_of(nc_graph **g) {
  nc_device dev;
  cr_assert_null(nc_device_parse("opencl", &dev));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.patterns_off = nc_device_patterns_off(&dev);
  ctx.patterns_force = nc_device_patterns_force(&dev);
  const char *passes[] = {"decompose", "dce"};
  cr_assert_null(nc_pass_run_pipeline(g, passes, 2, &ctx));
  nc_lower_opts lo = nc_device_lower_opts(&dev, &ctx);
  nc_plan *p;
  cr_assert_null(nc_plan_build(*g, &lo, &p));
  return p;
}

static double rel_err(const nc_tensor *a, const nc_tensor *b) {
  double e = 0, m = 1e-30;
  for (int64_t i = 0; i < nc_tensor_numel(b); i++) {
    e = fmax(e, fabs((double)((float *)a->data)[i] - (double)((float *)b->data)[i]));
    m = fmax(m, fabs((double)((float *)b->data)[i]));
  }
  return e / m;
}

// Compiles and runs attn_graph on PoCL (fp32 tiles) with NC_TUNE_DB = db_path; checks every output
// against the interpreter; returns the tuned block sets, and the tuned flash calls and loop launches.
static int attn_compile_and_check(const char *db_path, int64_t *fcalls, int64_t *lcalls) {
  setenv("NC_TUNE_DB", db_path, 1);
  nc_graph *g0 = attn_graph(), *g;
  cr_assert_null(nc_graph_copy(g0, &g));
  nc_plan *p = plan_of(&g);
  nc_ocl_opts oo = {.select = ""};
  nc_ocl *c = NULL;
  nc_status st = nc_ocl_compile(p, &oo, &c);
  cr_assert_null(st, "%s", st ? nc_status_msg(st) : "");
  int sets = nc_ocl_flash_tuned_sets(c);
  nc_tensor in[6];
  const char *nm[6] = {"q", "k", "v", "dout", "a", "b"};
  int64_t shq[4] = {AB, AT, AHQ, AD}, shk[4] = {AB, AT, AHKV, AD}, shl[1] = {9000};
  nc_feed f[6];
  for (int i = 0; i < 6; i++) {
    cr_assert_null(nc_tensor_alloc(&in[i], NC_F32, i >= 4 ? 1 : 4, i >= 4 ? shl : (i == 1 || i == 2) ? shk : shq));
    for (int64_t j = 0; j < nc_tensor_numel(&in[i]); j++) ((float *)in[i].data)[j] = (float)sin(0.731 * (double)j + i);
    f[i] = (nc_feed){nm[i], &in[i]};
  }
  nc_tensor got[5] = {0}, want[5] = {0};
  cr_assert_null(nc_ocl_run(c, g, p, f, 6, got));
  cr_assert_null(nc_interp_run(g0, f, 6, want));
  for (int k = 0; k < 5; k++) {
    double e = rel_err(&got[k], &want[k]);
    cr_assert_lt(e, 1e-4, "output %d: %g of the interpreter", k, e);
    nc_tensor_free(&got[k]);
    nc_tensor_free(&want[k]);
  }
  *fcalls = nc_ocl_flash_tuned_calls(c);
  *lcalls = nc_ocl_loop_tuned_calls(c);
  for (int i = 0; i < 6; i++) nc_tensor_free(&in[i]);
  nc_ocl_free(c);
  nc_plan_free(p);
  nc_graph_free(g);
  nc_graph_free(g0);
  unsetenv("NC_TUNE_DB");
  return sets;
}

Test(tune_flash, compile_launches_the_entries_for_their_shape) {
  NEED_OPENCL();
  nc_ocl_device_desc d;
  cr_assert_null(nc_ocl_select("", &d));
  char path[600], text[8192] = HEAD, e[2048];
  snprintf(path, sizeof path, "%s/use.json", tmpdir);
  // two block sets for this attention's shape and another shape, and the loop bucket of 9000 items
  entry(e, sizeof e, &d, "ocl.flash mode=0 dp=16 dvp=16", "batch=2 tq=40 tk=40 hq=2 hkv=1 causal=1 window=0",
        "{\"bm\": 16, \"bmq\": 32, \"bn\": 32, \"km\": 32, \"qn\": 32, \"st\": 2}");
  strcat(text, e), strcat(text, ",\n");
  entry(e, sizeof e, &d, "ocl.flash mode=0 dp=16 dvp=16", "batch=2 tq=64 tk=64 hq=2 hkv=1 causal=1 window=0", "{\"bm\": 64}");
  strcat(text, e), strcat(text, ",\n");
  entry(e, sizeof e, &d, "ocl.loop class=loop", "items=2^13", "{\"loop_wg\": 32}");
  strcat(text, e), strcat(text, "]}");
  write_text(path, text);
  int64_t fc, lc;
  cr_assert_eq(attn_compile_and_check(path, &fc, &lc), 2, "two block sets emitted");
  cr_assert_eq(fc, 2, "the forward and the backward call ran the tuned blocks");
  cr_assert_eq(lc, 1, "the 9000-item loop kernel ran the tuned work-group");
  // without entries: nothing tuned, same results
  write_text(path, HEAD "]}");
  cr_assert_eq(attn_compile_and_check(path, &fc, &lc), 0);
  cr_assert_eq(fc, 0);
  cr_assert_eq(lc, 0);
}

// ---- tuning runs ------------------------------------------------------------------------
Test(tune_flash, tuning_runs_record_entries_and_the_hook_rejects_candidates) {
  NEED_OPENCL();
  char path[600];
  snprintf(path, sizeof path, "%s/run.json", tmpdir);
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(path, false, &db));
  nc_tune_flash_shape fs = {.s = {.batch = 1, .tq = 24, .tk = 24, .hq = 2, .hkv = 2, .causal = 1, .window = 0}, .d = 16, .dv = 16, .scale = 0.25, .count = 1, .bwd = 1};
  nc_tune_opts o = {.dev = {.kind = NC_DEV_OPENCL}, .budget_s = 4};  // (the default and at least one candidate: a build each)
  nc_tune_result r;
  cr_assert_null(nc_tune_flash_run(&fs, 1, &o, db, &r));
  cr_assert(r.tuned);
  cr_assert_str_eq(r.kernel, "ocl.flash mode=0 dp=16 dvp=16");
  cr_assert_str_eq(r.shape, "batch=1 tq=24 tk=24 hq=2 hkv=2 causal=1 window=0");
  cr_assert_gt(r.tried, 1, "the default and at least one candidate");
  cr_assert_eq(r.rejected, 0);
  cr_assert(strstr(r.knobs, "bm=") && strstr(r.knobs, "st="), "%s", r.knobs);
  cr_assert_eq(nc_tunedb_count(db), 1);
  const nc_tune_entry *e = nc_tunedb_entry(db, 0);
  cr_assert_str_eq(e->kernel, r.kernel);
  cr_assert_eq(e->nknobs, 6);
  o.break_candidates = true;  // every non-default candidate's output is corrupted: all rejected
  cr_assert_null(nc_tune_flash_run(&fs, 1, &o, db, &r));
  cr_assert_gt(r.tried, 1);
  cr_assert_eq(r.rejected, r.tried - 1);
  cr_assert(r.is_default);
  cr_assert_eq(nc_tunedb_count(db), 1, "the same key: replaced");
  // the loop space: every search value of one bucket, then the hook
  nc_tune_loop_shape ls = {.bucket = 12, .count = 3, .items = 5000};
  o.break_candidates = false, o.budget_s = 5;
  cr_assert_null(nc_tune_loop_run(&ls, 1, &o, db, &r));
  cr_assert(r.tuned);
  cr_assert_str_eq(r.kernel, "ocl.loop class=loop");
  cr_assert_str_eq(r.shape, "items=2^12");
  cr_assert_eq(r.tried, 6, "the default and the five other loop_wg values");
  cr_assert_eq(r.rejected, 0);
  o.break_candidates = true;
  cr_assert_null(nc_tune_loop_run(&ls, 1, &o, db, &r));
  cr_assert_eq(r.rejected, 5);
  cr_assert(r.is_default);
  cr_assert_eq(nc_tunedb_count(db), 2);
  cr_assert_null(nc_tunedb_save(db, path));
  nc_tunedb_free(db);
  // what was written reads back without warnings, and a compilation takes it (defaults won: nothing to emit)
  cr_assert_null(nc_tunedb_load(path, false, &db));
  cr_assert_eq(nc_tunedb_count(db), 2);
  cr_assert_eq(nc_tunedb_nwarnings(db), 0);
  nc_tunedb_free(db);
}

// ---- the command line ----------------------------------------------------------------
Test(tune_flash, cli_lists_flash_and_loop_shapes_and_checks_only) {
  NEED_OPENCL();
  char out[16384];
  int rc = nc_test_cli("tune models/specs/tiny.xml --device opencl --batch 2 --seq 16 --list", out, sizeof out);
  cr_assert_eq(rc, 0, "%s", out);
  cr_assert(strstr(out, "1 flash-attention shapes") && strstr(out, "batch=2 tq=16 tk=16 hq=2 hkv=1 causal=1 window=0 d=16 dv=16"), "%s", out);
  cr_assert(strstr(out, "loop-kernel size buckets") && strstr(out, "items=2^"), "%s", out);
  cr_assert(strstr(out, "row-kernel length buckets") && strstr(out, "cols=2^"), "%s", out);
  rc = nc_test_cli("tune models/specs/tiny.xml --device opencl --batch 2 --seq 16 --only flash --list", out, sizeof out);
  cr_assert_eq(rc, 0, "%s", out);
  cr_assert(strstr(out, "0 GEMM shapes") && strstr(out, "0 loop-kernel"), "%s", out);
  rc = nc_test_cli("tune models/specs/tiny.xml --device opencl --only flash,warp", out, sizeof out);
  cr_assert(rc > 0 && strstr(out, "--only wants"), "%s", out);
  rc = nc_test_cli("tune models/specs/tiny.xml --only flash", out, sizeof out);
  cr_assert(rc > 0 && strstr(out, "OpenCL templates"), "%s", out);
}

// ---- row kernels (ocl.loop class=row) ---------------------------------------------------
Test(tune_flash, row_key_and_buckets) {
  char b[32];
  int k;
  cr_assert_eq(nc_ocl_row_bucket(768), 9);
  cr_assert_eq(nc_ocl_row_bucket(64), 6);
  cr_assert_eq(nc_ocl_row_bucket(-1), NC_OCL_ROW_VAR);
  nc_ocl_row_shape_str(9, b, sizeof b);
  cr_assert_str_eq(b, "cols=2^9");
  cr_assert(nc_ocl_row_shape_parse(b, &k) && k == 9);
  nc_ocl_row_shape_str(NC_OCL_ROW_VAR, b, sizeof b);
  cr_assert_str_eq(b, "cols=var");
  cr_assert(nc_ocl_row_shape_parse(b, &k) && k == NC_OCL_ROW_VAR);
  const char *bad[] = {"cols=768", "cols=2^41", "cols=2^", "cols=2^5 ", "items=2^5", "cols=vars", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) cr_assert_not(nc_ocl_row_shape_parse(bad[i], &k), "'%s'", bad[i]);
  cr_assert_eq(nc_ocl_row_slot(NC_OCL_ROW_VAR), NC_OCL_LOOP_BUCKETS);
  cr_assert_eq(nc_ocl_row_slot(9), 9);
  // the row length of a plan's row kernels: a constant width, and a symbolic one
  for (int sym = 0; sym < 2; sym++) {
    nc_graph *g = nc_graph_new("rows");
    int t = 0;
    cr_assert_null(nc_graph_sym(g, "T", &t));
    nc_dim dx[2] = {nc_dim_const(8), sym ? nc_dim_sym(t) : nc_dim_const(200)};
    nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, dx));
    cr_assert_null(nc_graph_set_output(g, "y", nc_b_rms_norm(g, x, 1e-6)));
    nc_plan *p = plan_of(&g);
    nc_ocl_knobs kn;
    nc_ocl_knobs_default(false, &kn);
    int nrow = 0;
    nc_buf tmp;
    nc_buf_init(&tmp);
    for (int i = 0; i < p->nkernels; i++) {
      nc_ocl_launch L;
      tmp.len = 0;
      if (nc_kernel_is_template(&p->kernels[i].k)) continue;
      cr_assert_null(nc_ocl_emit_kernel(&p->kernels[i].k, "nck", &kn, &tmp, &L));
      if (!L.row_wg) continue;
      nrow++;
      cr_assert_eq(nc_ocl_row_cols(&p->kernels[i].k, L.ncollapse), sym ? -1 : 200, "kernel %s", p->kernels[i].k.name);
    }
    nc_buf_free(&tmp);
    cr_assert_geq(nrow, 1, "RMSNorm lowers to a row kernel");
    nc_plan_free(p);
    nc_graph_free(g);
  }
}

enum { RR = 48, RC = 64, RR2 = 16, RC2 = 200 };

// y = rmsnorm(x) over (RR, RC) and y2 = rmsnorm(x2) over (RR2, RC2) on PoCL with NC_TUNE_DB = db_path,
// both checked against the interpreter within 1e-5; returns the kernels emitted with a tuned row_wg.
static int rows_compile_and_check(const char *db_path) {
  setenv("NC_TUNE_DB", db_path, 1);
  nc_graph *g0 = nc_graph_new("tune_rows"), *g;
  nc_dim d1[2] = {nc_dim_const(RR), nc_dim_const(RC)}, d2[2] = {nc_dim_const(RR2), nc_dim_const(RC2)};
  nc_id x = nc_leaf(g0, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, d1)), x2 = nc_leaf(g0, NC_OP_INPUT, "x2", nc_type_make(NC_F32, 2, d2));
  cr_assert_null(nc_graph_set_output(g0, "y", nc_b_rms_norm(g0, x, 1e-6)));
  cr_assert_null(nc_graph_set_output(g0, "y2", nc_b_rms_norm(g0, x2, 1e-6)));
  cr_assert_null(nc_graph_error(g0));
  cr_assert_null(nc_graph_copy(g0, &g));
  nc_plan *p = plan_of(&g);
  nc_ocl_opts oo = {.select = ""};
  nc_ocl *c = NULL;
  nc_status st = nc_ocl_compile(p, &oo, &c);
  cr_assert_null(st, "%s", st ? nc_status_msg(st) : "");
  int tuned = nc_ocl_row_tuned_kernels(c);
  nc_tensor in[2];
  int64_t s1[2] = {RR, RC}, s2[2] = {RR2, RC2};
  cr_assert_null(nc_tensor_alloc(&in[0], NC_F32, 2, s1));
  cr_assert_null(nc_tensor_alloc(&in[1], NC_F32, 2, s2));
  for (int i = 0; i < 2; i++)
    for (int64_t j = 0; j < nc_tensor_numel(&in[i]); j++) ((float *)in[i].data)[j] = (float)sin(0.377 * (double)j + i);
  nc_feed f[2] = {{"x", &in[0]}, {"x2", &in[1]}};
  nc_tensor got[2] = {0}, want[2] = {0};
  cr_assert_null(nc_ocl_run(c, g, p, f, 2, got));
  cr_assert_null(nc_interp_run(g0, f, 2, want));
  for (int k = 0; k < 2; k++) {
    double e = rel_err(&got[k], &want[k]);
    cr_assert_lt(e, 1e-5, "output %d: %g of the interpreter", k, e);
    nc_tensor_free(&got[k]);
    nc_tensor_free(&want[k]);
  }
  for (int i = 0; i < 2; i++) nc_tensor_free(&in[i]);
  nc_ocl_free(c);
  nc_plan_free(p);
  nc_graph_free(g);
  nc_graph_free(g0);
  unsetenv("NC_TUNE_DB");
  return tuned;
}

Test(tune_flash, row_entries_are_emitted_and_bad_ones_ignored) {
  NEED_OPENCL();
  nc_ocl_device_desc d;
  cr_assert_null(nc_ocl_select("", &d));
  cr_assert_eq(rows_compile_and_check("off"), 0, "no database: nothing tuned");
  char path[600], text[8192] = HEAD, e[2048];
  snprintf(path, sizeof path, "%s/rows.json", tmpdir);
  // cols=2^6: row_wg 16 (PoCL's default is 4); cols=2^7 (the 200-wide rows): row_wg 3, not a power of
  // two; cols=var: row_wg 4096, out of range (dropped on load); a malformed bucket
  entry(e, sizeof e, &d, "ocl.loop class=row", "cols=2^6", "{\"loop_wg\": 64, \"row_wg\": 16}");
  strcat(text, e), strcat(text, ",\n");
  entry(e, sizeof e, &d, "ocl.loop class=row", "cols=2^7", "{\"row_wg\": 3}");
  strcat(text, e), strcat(text, ",\n");
  entry(e, sizeof e, &d, "ocl.loop class=row", "cols=var", "{\"row_wg\": 4096}");
  strcat(text, e), strcat(text, ",\n");
  entry(e, sizeof e, &d, "ocl.loop class=row", "cols=200", "{\"row_wg\": 8}");
  strcat(text, e), strcat(text, "]}");
  write_text(path, text);
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(path, false, &db));
  cr_assert_eq(nc_tunedb_count(db), 3, "row_wg=4096 dropped on load");
  cr_assert(warned(db, "row_wg=4096"), "out of range");
  nc_ocl_knobs kn;
  nc_ocl_knobs_default(d.gpu, &kn);
  int rw[NC_OCL_ROW_SLOTS];
  cr_assert_eq(nc_ocl_row_select(db, &d, &kn, rw), 1);
  cr_assert_eq(rw[6], 16);
  cr_assert_eq(rw[7], 0);
  cr_assert_eq(rw[nc_ocl_row_slot(NC_OCL_ROW_VAR)], 0);
  cr_assert(warned(db, "row_wg=3") && warned(db, "power of two"), "row_wg 3");
  cr_assert(warned(db, "is not 'cols=2^K'"), "malformed bucket");
  cr_assert_eq(nc_tunedb_nwarnings(db), 3, "%d warnings", nc_tunedb_nwarnings(db));
  // the loop class does not read row entries, and vice versa
  int wg[NC_OCL_LOOP_BUCKETS];
  cr_assert_eq(nc_ocl_loop_select(db, &d, &kn, wg), 0);
  nc_tunedb_free(db);
  // a compilation: the 64-wide RMSNorm's row kernels get row_wg 16, the 200-wide ones keep the default
  int t = rows_compile_and_check(path);
  cr_assert_geq(t, 1, "the 64-wide rows were emitted with the tuned row_wg");
  // the same with the 200-wide bucket tuned too: more kernels take a tuned work-group
  char text2[8192] = HEAD;
  entry(e, sizeof e, &d, "ocl.loop class=row", "cols=2^6", "{\"row_wg\": 16}");
  strcat(text2, e), strcat(text2, ",\n");
  entry(e, sizeof e, &d, "ocl.loop class=row", "cols=2^7", "{\"row_wg\": 32}");
  strcat(text2, e), strcat(text2, "]}");
  write_text(path, text2);
  cr_assert_eq(rows_compile_and_check(path), 2 * t, "both widths' row kernels tuned");
  // an entry equal to the default changes nothing
  char text3[4096] = HEAD, kb[64];
  snprintf(kb, sizeof kb, "{\"row_wg\": %d}", kn.row_wg);
  entry(e, sizeof e, &d, "ocl.loop class=row", "cols=2^6", kb);
  strcat(text3, e), strcat(text3, "]}");
  write_text(path, text3);
  cr_assert_eq(rows_compile_and_check(path), 0);
}

Test(tune_flash, row_tuning_records_entries_and_the_hook_rejects_candidates) {
  NEED_OPENCL();
  char path[600];
  snprintf(path, sizeof path, "%s/rowrun.json", tmpdir);
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(path, false, &db));
  nc_tune_row_shape rs = {.bucket = 6, .count = 4, .rows = 32, .cols = 64};
  nc_tune_opts o = {.dev = {.kind = NC_DEV_OPENCL}, .budget_s = 6};
  nc_tune_result r;
  cr_assert_null(nc_tune_row_run(&rs, 1, &o, db, &r));
  cr_assert(r.tuned);
  cr_assert_str_eq(r.kernel, "ocl.loop class=row");
  cr_assert_str_eq(r.shape, "cols=2^6");
  cr_assert_gt(r.tried, 1, "the default and at least one candidate");
  cr_assert_eq(r.rejected, 0);
  cr_assert(strstr(r.knobs, "row_wg="), "%s", r.knobs);
  o.break_candidates = true;
  cr_assert_null(nc_tune_row_run(&rs, 1, &o, db, &r));
  cr_assert_gt(r.tried, 1);
  cr_assert_eq(r.rejected, r.tried - 1);
  cr_assert(r.is_default);
  cr_assert_eq(nc_tunedb_count(db), 1, "the same key: replaced");
  nc_tunedb_free(db);
  // the tiny spec's step: nanochat tune --only row records its buckets
  char cmd[1024], out[16384];
  snprintf(cmd, sizeof cmd, "tune models/specs/tiny.xml --device opencl --batch 2 --seq 16 --only row --budget 8 --db %s/tiny.json", tmpdir);
  int rc = nc_test_cli(cmd, out, sizeof out);
  cr_assert_eq(rc, 0, "%s", out);
  cr_assert(strstr(out, "ocl.loop class=row") && strstr(out, "cols=2^"), "%s", out);
  snprintf(path, sizeof path, "%s/tiny.json", tmpdir);
  cr_assert_null(nc_tunedb_load(path, false, &db));
  cr_assert_geq(nc_tunedb_count(db), 1, "%s", out);
  for (int i = 0; i < nc_tunedb_count(db); i++) cr_assert_str_eq(nc_tunedb_entry(db, i)->kernel, "ocl.loop class=row");
  cr_assert_eq(nc_tunedb_nwarnings(db), 0);
  nc_tunedb_free(db);
}
