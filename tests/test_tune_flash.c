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
#include "tests/support/tune_util.h"

#define NEED_OPENCL()                                                                  \
  do {                                                                                 \
    if (!nc_ocl_available()) cr_skip_test("no OpenCL device (install pocl-opencl-icd)"); \
  } while (0)

static char tmpdir[512];

static void setup(void) { nc_test_scratch_make(tmpdir, sizeof tmpdir, "nc_test_tune_flash"); }
static void teardown(void) { nc_test_scratch_remove(tmpdir); }

TestSuite(tune_flash, .init = setup, .fini = teardown);

// PoCL leaks inside its LLVM when it compiles a kernel not in its own cache (see test_tune.c).
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libpocl.so\nleak:libLLVM-15.so\n"; }

#define write_text nc_test_write_text
#define warned nc_test_tunedb_warned
#define entry nc_test_ocl_entry
#define HEAD NC_TEST_TUNEDB_HEAD

// A database at path of n entries of kernel for device d: es[i] = {shape, knobs as JSON text}.
static void write_entries(const char *path, const nc_ocl_device_desc *d, const char *kernel, const char *const (*es)[2], int n) {
  char text[16384] = HEAD, e[2048];
  for (int i = 0; i < n; i++) {
    nc_test_ocl_entry(e, sizeof e, d, kernel, es[i][0], es[i][1]);
    cr_assert_lt(strlen(text) + strlen(e) + 3, sizeof text);
    strcat(text, e), strcat(text, i + 1 < n ? ",\n" : "");
  }
  strcat(text, "]}");
  nc_test_write_text(path, text);
}

// Loads path, checks that `loaded` entries survived the load, and selects the class's work-groups over
// the device defaults into wg; returns the slots set (*db stays open for its warnings).
static int load_and_select(const char *path, const nc_ocl_device_desc *d, int loaded, nc_ocl_loop_class cls, int max_wg, nc_tunedb **db,
                           int wg[NC_OCL_WG_SLOTS]) {
  cr_assert_null(nc_tunedb_load(path, false, db));
  cr_assert_eq(nc_tunedb_count(*db), loaded, "%d entries loaded", nc_tunedb_count(*db));
  nc_ocl_knobs kn;
  nc_ocl_knobs_default(d->gpu, &kn);
  return nc_ocl_wg_select(*db, d, &kn, cls, max_wg, wg);
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
  int wg[NC_OCL_WG_SLOTS];
  cr_assert_eq(nc_ocl_wg_select(db, &d, &kn, NC_OCL_LOOP_ELEMENTWISE, 0, wg), 1);
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

// g0 (kept) planned as the device plans it and compiled on PoCL with NC_TUNE_DB = db_path, run on the
// feeds f; every output checked against the interpreter within tol. The compilation stays open for its
// counters and launches (compiled_free).
typedef struct {
  nc_graph *g;
  nc_plan *p;
  nc_ocl *c;
} compiled;

static compiled compile_and_check(const char *db_path, const nc_graph *g0, const nc_feed *f, int nf, double tol) {
  compiled x = {0};
  setenv("NC_TUNE_DB", db_path, 1);
  cr_assert_null(nc_graph_copy(g0, &x.g));
  x.p = plan_of(&x.g);
  nc_ocl_opts oo = {.select = ""};
  nc_status st = nc_ocl_compile(x.p, &oo, &x.c);
  unsetenv("NC_TUNE_DB");
  cr_assert_null(st, "%s", st ? nc_status_msg(st) : "");
  int nout = nc_graph_noutputs(g0);
  cr_assert_leq(nout, 8);
  nc_tensor got[8] = {0}, want[8] = {0};
  st = nc_ocl_run(x.c, x.g, x.p, f, nf, got);
  cr_assert_null(st, "%s", st ? nc_status_msg(st) : "");
  cr_assert_null(nc_interp_run(g0, f, nf, want));
  for (int k = 0; k < nout; k++) {
    double e = rel_err(&got[k], &want[k]);
    cr_assert_lt(e, tol, "output %d: %g of the interpreter", k, e);
    nc_tensor_free(&got[k]);
    nc_tensor_free(&want[k]);
  }
  return x;
}

static void compiled_free(compiled *x) {
  nc_ocl_free(x->c);
  nc_plan_free(x->p);
  nc_graph_free(x->g);
}

// An f32 input of shape (rank, shape) filled with sin(w*j + i), fed as name.
static nc_feed sin_input(nc_tensor *t, const char *name, int rank, const int64_t *shape, double w, int i) {
  cr_assert_null(nc_tensor_alloc(t, NC_F32, rank, shape));
  for (int64_t j = 0; j < nc_tensor_numel(t); j++) ((float *)t->data)[j] = (float)sin(w * (double)j + i);
  return (nc_feed){name, t};
}

// Compiles and runs attn_graph on PoCL (fp32 tiles) with NC_TUNE_DB = db_path; checks every output
// against the interpreter; returns the tuned block sets, and the tuned flash calls and loop launches.
static int attn_compile_and_check(const char *db_path, int64_t *fcalls, int64_t *lcalls) {
  nc_graph *g0 = attn_graph();
  nc_tensor in[6];
  const char *nm[6] = {"q", "k", "v", "dout", "a", "b"};
  int64_t shq[4] = {AB, AT, AHQ, AD}, shk[4] = {AB, AT, AHKV, AD}, shl[1] = {9000};
  nc_feed f[6];
  for (int i = 0; i < 6; i++) f[i] = sin_input(&in[i], nm[i], i >= 4 ? 1 : 4, i >= 4 ? shl : (i == 1 || i == 2) ? shk : shq, 0.731, i);
  compiled x = compile_and_check(db_path, g0, f, 6, 1e-4);
  int sets = nc_ocl_flash_tuned_sets(x.c);
  *fcalls = nc_ocl_flash_tuned_calls(x.c);
  *lcalls = nc_ocl_loop_tuned_calls(x.c);
  for (int i = 0; i < 6; i++) nc_tensor_free(&in[i]);
  compiled_free(&x);
  nc_graph_free(g0);
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
  nc_tune_wg_shape ls = {.bucket = 12, .count = 3, .items = 5000};
  o.break_candidates = false, o.budget_s = 5;
  cr_assert_null(nc_tune_wg_run(NC_OCL_LOOP_ELEMENTWISE, &ls, 1, &o, db, &r));
  cr_assert(r.tuned);
  cr_assert_str_eq(r.kernel, "ocl.loop class=loop");
  cr_assert_str_eq(r.shape, "items=2^12");
  cr_assert_eq(r.tried, 6, "the default and the five other loop_wg values");
  cr_assert_eq(r.rejected, 0);
  o.break_candidates = true;
  cr_assert_null(nc_tune_wg_run(NC_OCL_LOOP_ELEMENTWISE, &ls, 1, &o, db, &r));
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
  nc_graph *g0 = nc_graph_new("tune_rows");
  nc_dim d1[2] = {nc_dim_const(RR), nc_dim_const(RC)}, d2[2] = {nc_dim_const(RR2), nc_dim_const(RC2)};
  nc_id x = nc_leaf(g0, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, d1)), x2 = nc_leaf(g0, NC_OP_INPUT, "x2", nc_type_make(NC_F32, 2, d2));
  cr_assert_null(nc_graph_set_output(g0, "y", nc_b_rms_norm(g0, x, 1e-6)));
  cr_assert_null(nc_graph_set_output(g0, "y2", nc_b_rms_norm(g0, x2, 1e-6)));
  cr_assert_null(nc_graph_error(g0));
  nc_tensor in[2];
  int64_t s1[2] = {RR, RC}, s2[2] = {RR2, RC2};
  nc_feed f[2] = {sin_input(&in[0], "x", 2, s1, 0.377, 0), sin_input(&in[1], "x2", 2, s2, 0.377, 1)};
  compiled c = compile_and_check(db_path, g0, f, 2, 1e-5);
  int tuned = nc_ocl_row_tuned_kernels(c.c);
  for (int i = 0; i < 2; i++) nc_tensor_free(&in[i]);
  compiled_free(&c);
  nc_graph_free(g0);
  return tuned;
}

Test(tune_flash, row_entries_are_emitted_and_bad_ones_ignored) {
  NEED_OPENCL();
  nc_ocl_device_desc d;
  cr_assert_null(nc_ocl_select("", &d));
  cr_assert_eq(rows_compile_and_check("off"), 0, "no database: nothing tuned");
  char path[600];
  snprintf(path, sizeof path, "%s/rows.json", tmpdir);
  // cols=2^6: row_wg 16 (PoCL's default is 4); cols=2^7 (the 200-wide rows): row_wg 3, not a power of
  // two; cols=var: row_wg 4096, out of range (dropped on load); a malformed bucket
  const char *const es[][2] = {{"cols=2^6", "{\"loop_wg\": 64, \"row_wg\": 16}"}, {"cols=2^7", "{\"row_wg\": 3}"}, {"cols=var", "{\"row_wg\": 4096}"},
                               {"cols=200", "{\"row_wg\": 8}"}};
  write_entries(path, &d, "ocl.loop class=row", es, 4);
  nc_tunedb *db;
  int rw[NC_OCL_WG_SLOTS];
  cr_assert_eq(load_and_select(path, &d, 3, NC_OCL_LOOP_ROW, 0, &db, rw), 1);
  cr_assert(warned(db, "row_wg=4096"), "out of range: dropped on load");
  nc_ocl_knobs kn;
  nc_ocl_knobs_default(d.gpu, &kn);
  cr_assert_eq(rw[6], 16);
  cr_assert_eq(rw[7], 0);
  cr_assert_eq(rw[nc_ocl_row_slot(NC_OCL_ROW_VAR)], 0);
  cr_assert(warned(db, "row_wg=3") && warned(db, "power of two"), "row_wg 3");
  cr_assert(warned(db, "is not 'cols=2^K'"), "malformed bucket");
  cr_assert_eq(nc_tunedb_nwarnings(db), 3, "%d warnings", nc_tunedb_nwarnings(db));
  // the loop class does not read row entries, and vice versa
  int wg[NC_OCL_WG_SLOTS];
  cr_assert_eq(nc_ocl_wg_select(db, &d, &kn, NC_OCL_LOOP_ELEMENTWISE, 0, wg), 0);
  cr_assert_eq(nc_ocl_wg_select(db, &d, &kn, NC_OCL_LOOP_REDUCE, 0, wg), 0);
  nc_tunedb_free(db);
  // a compilation: the 64-wide RMSNorm's row kernels get row_wg 16, the 200-wide ones keep the default
  int t = rows_compile_and_check(path);
  cr_assert_geq(t, 1, "the 64-wide rows were emitted with the tuned row_wg");
  // the same with the 200-wide bucket tuned too: more kernels take a tuned work-group
  const char *const es2[][2] = {{"cols=2^6", "{\"row_wg\": 16}"}, {"cols=2^7", "{\"row_wg\": 32}"}};
  write_entries(path, &d, "ocl.loop class=row", es2, 2);
  cr_assert_eq(rows_compile_and_check(path), 2 * t, "both widths' row kernels tuned");
  // an entry equal to the default changes nothing
  char kb[64];
  snprintf(kb, sizeof kb, "{\"row_wg\": %d}", kn.row_wg);
  const char *const es3[][2] = {{"cols=2^6", kb}};
  write_entries(path, &d, "ocl.loop class=row", es3, 1);
  cr_assert_eq(rows_compile_and_check(path), 0);
}

// A tuned row_wg a plan kernel cannot take (its CL_KERNEL_WORK_GROUP_SIZE, lowered here by the test hook
// NC_OCL_TEST_KERNEL_WG): the plan is built again without tuned row work-groups, and still matches the
// interpreter; where every kernel can take its entry, the entries are used.
Test(tune_flash, row_entries_a_kernel_cannot_take_fall_back_to_the_default) {
  NEED_OPENCL();
  nc_ocl_device_desc d;
  cr_assert_null(nc_ocl_select("", &d));
  char path[600];
  snprintf(path, sizeof path, "%s/rows_limit.json", tmpdir);
  const char *const es[][2] = {{"cols=2^6", "{\"row_wg\": 16}"}, {"cols=2^7", "{\"row_wg\": 32}"}};
  write_entries(path, &d, "ocl.loop class=row", es, 2);
  int all = rows_compile_and_check(path);
  cr_assert_geq(all, 2, "both widths tuned without a limit");
  setenv("NC_OCL_TEST_KERNEL_WG", "32", 1);
  cr_assert_eq(rows_compile_and_check(path), all, "a limit of 32 takes both entries");
  setenv("NC_OCL_TEST_KERNEL_WG", "16", 1);
  cr_assert_eq(rows_compile_and_check(path), 0, "row_wg 32 over the limit 16: no tuned row kernels");
  setenv("NC_OCL_TEST_KERNEL_WG", "8", 1);
  cr_assert_eq(rows_compile_and_check(path), 0, "both over the limit 8");
  unsetenv("NC_OCL_TEST_KERNEL_WG");
}

// A tuning run of one bucket of class cls (the default and at least one candidate, none rejected),
// then the same with the test hook (every other candidate rejected: the default kept, the entry
// replaced); then `nanochat tune` over the tiny spec with --only <only> (with NC_TUNE_TEST_BREAK when
// hook), whose entries are all the class's and read back without warnings. Returns the first run's
// entry's value of the class's knob and the command's output in out.
static int wg_tuning_checks(nc_ocl_loop_class cls, const nc_tune_wg_shape *ws, const char *only, const char *shape, char *out, size_t nout) {
  static const char *knob[3] = {"loop_wg", "row_wg", "reduce_wg"};
  char path[600], kernel[64];
  nc_ocl_loop_signature(cls, kernel, sizeof kernel);
  snprintf(path, sizeof path, "%s/%srun.json", tmpdir, only);
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(path, false, &db));
  nc_tune_opts o = {.dev = {.kind = NC_DEV_OPENCL}, .budget_s = 6};
  nc_tune_result r;
  cr_assert_null(nc_tune_wg_run(cls, ws, 1, &o, db, &r));
  cr_assert(r.tuned);
  cr_assert_str_eq(r.kernel, kernel);
  cr_assert_str_eq(r.shape, shape);
  cr_assert_gt(r.tried, 1, "the default and at least one candidate");
  cr_assert_eq(r.rejected, 0);
  cr_assert(strstr(r.knobs, knob[cls]), "%s", r.knobs);
  cr_assert_eq(nc_tunedb_count(db), 1);
  const nc_tune_entry *e = nc_tunedb_entry(db, 0);
  int v = -1;
  for (int i = 0; i < e->nknobs; i++)
    if (!strcmp(e->knob_names[i], knob[cls])) v = e->knob_values[i];
  o.break_candidates = true;  // every non-default candidate's output is corrupted: all rejected
  cr_assert_null(nc_tune_wg_run(cls, ws, 1, &o, db, &r));
  cr_assert_gt(r.tried, 1);
  cr_assert_eq(r.rejected, r.tried - 1);
  cr_assert(r.is_default);
  cr_assert_eq(nc_tunedb_count(db), 1, "the same key: replaced");
  nc_tunedb_free(db);
  // the tiny spec's step: nanochat tune --only <only> records its buckets
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "tune models/specs/tiny.xml --device opencl --batch 2 --seq 16 --only %s --budget 8 --db %s/tiny-%s.json", only, tmpdir, only);
  int rc = nc_test_cli(cmd, out, nout);
  cr_assert_eq(rc, 0, "%s", out);
  cr_assert(strstr(out, kernel), "%s", out);
  snprintf(path, sizeof path, "%s/tiny-%s.json", tmpdir, only);
  cr_assert_null(nc_tunedb_load(path, false, &db));
  cr_assert_geq(nc_tunedb_count(db), 1, "%s", out);
  for (int i = 0; i < nc_tunedb_count(db); i++) cr_assert_str_eq(nc_tunedb_entry(db, i)->kernel, kernel);
  cr_assert_eq(nc_tunedb_nwarnings(db), 0);
  nc_tunedb_free(db);
  return v;
}

Test(tune_flash, row_tuning_records_entries_and_the_hook_rejects_candidates) {
  NEED_OPENCL();
  nc_tune_wg_shape rs = {.bucket = 6, .count = 4, .rows = 32, .cols = 64};
  char out[16384];
  int v = wg_tuning_checks(NC_OCL_LOOP_ROW, &rs, "row", "cols=2^6", out, sizeof out);
  cr_assert(v >= 2 && !(v & (v - 1)), "row_wg %d", v);
  cr_assert(strstr(out, "cols=2^"), "%s", out);
}

// ---- whole-buffer reductions (ocl.loop class=reduce) -------------------------------------
enum { RN = 1000, RN2 = 5000 };

// s = sum(x) over RN items and m = max(x2) over RN2: two whole-buffer reductions (buckets 2^9, 2^12).
static nc_graph *reduce_graph(int sym) {
  nc_graph *g = nc_graph_new("tune_reduce");
  int t = 0;
  if (sym) cr_assert_null(nc_graph_sym(g, "T", &t));
  nc_dim d1[1] = {sym ? nc_dim_sym(t) : nc_dim_const(RN)}, d2[1] = {nc_dim_const(RN2)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 1, d1)), x2 = nc_leaf(g, NC_OP_INPUT, "x2", nc_type_make(NC_F32, 1, d2));
  cr_assert_null(nc_graph_set_output(g, "s", nc_b_reduce(g, NC_OP_REDUCE_SUM, x, 1, false)));
  cr_assert_null(nc_graph_set_output(g, "m", nc_b_reduce(g, NC_OP_REDUCE_MAX, x2, 1, false)));
  cr_assert_null(nc_graph_error(g));
  return g;
}

Test(tune_flash, reduce_key_knob_and_buckets) {
  const nc_knob_space *sp = &nc_ocl_loop_knob_space;
  char b[32];
  int k;
  nc_ocl_reduce_shape_str(9, b, sizeof b);
  cr_assert_str_eq(b, "items=2^9");
  cr_assert(nc_ocl_reduce_shape_parse(b, &k) && k == 9);
  nc_ocl_reduce_shape_str(NC_OCL_ROW_VAR, b, sizeof b);
  cr_assert_str_eq(b, "items=var");
  cr_assert(nc_ocl_reduce_shape_parse(b, &k) && k == NC_OCL_ROW_VAR);
  const char *bad[] = {"items=1000", "items=2^41", "cols=2^5", "items=2^5 ", "items=", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) cr_assert_not(nc_ocl_reduce_shape_parse(bad[i], &k), "'%s'", bad[i]);
  nc_ocl_loop_signature(NC_OCL_LOOP_REDUCE, b, sizeof b);
  cr_assert_str_eq(b, "ocl.loop class=reduce");
  // the knob: 0 (the default) follows loop_wg; a tuned value is a power of two in 1..1024
  for (int gpu = 0; gpu <= 1; gpu++) {
    nc_ocl_knobs kn;
    nc_ocl_knobs_default(gpu, &kn);
    cr_assert_eq(kn.reduce_wg, 0);
    cr_assert_eq(nc_ocl_reduce_wg_of(&kn), gpu ? 256 : 64);
    kn.loop_wg = 100;
    cr_assert_eq(nc_ocl_reduce_wg_of(&kn), 64, "rounded down to a power of two");
    kn.reduce_wg = 512;
    cr_assert_eq(nc_ocl_reduce_wg_of(&kn), 512);
    kn.loop_wg = gpu ? 256 : 64;
    cr_assert_null(nc_knob_check(sp, &kn));
    kn.reduce_wg = 3;
    expect_bad(sp, &kn, "reduce_wg=3");
    kn.reduce_wg = 2048;
    expect_bad(sp, &kn, "reduce_wg=2048");
  }
  // the bucket of a plan's reductions: a constant count, and a symbolic one
  for (int sym = 0; sym < 2; sym++) {
    nc_graph *g = reduce_graph(sym);
    nc_plan *p = plan_of(&g);
    nc_ocl_knobs kn;
    nc_ocl_knobs_default(false, &kn);
    nc_buf tmp;
    nc_buf_init(&tmp);
    int nred = 0;
    for (int i = 0; i < p->nkernels; i++) {
      if (nc_kernel_is_template(&p->kernels[i].k)) continue;
      nc_ocl_launch L;
      tmp.len = 0;
      cr_assert_null(nc_ocl_emit_kernel(&p->kernels[i].k, "nck", &kn, &tmp, &L));
      if (!L.reduce_wg) continue;
      nred++;
      cr_assert_eq(L.reduce_wg, 64, "PoCL's loop_wg");
      int64_t items = nc_ocl_reduce_items(&p->kernels[i].k, &L);
      cr_assert(items == RN2 || items == (sym ? -1 : RN), "kernel %s: %lld items", p->kernels[i].k.name, (long long)items);
      // the knob sizes the work-group (and the source): 128 work-items
      nc_ocl_knobs k2 = kn;
      k2.reduce_wg = 128;
      tmp.len = 0;
      cr_assert_null(nc_ocl_emit_kernel(&p->kernels[i].k, "nck", &k2, &tmp, &L));
      cr_assert_eq(L.reduce_wg, 128);
      cr_assert(strstr(tmp.data, "+= 128)") && strstr(tmp.data, "nc_r"), "%s", tmp.data);
    }
    cr_assert_eq(nred, 2, "two whole-buffer reductions");
    // the tuner's buckets of the plan (symbols bound: T = 700)
    int64_t syms[NC_MAX_SYMS] = {700};
    nc_tune_wg_shape *ws;
    int n;
    cr_assert_null(nc_tune_plan_buckets(g, p, syms, false, NC_OCL_LOOP_REDUCE, &ws, &n));
    cr_assert_eq(n, 2);
    for (int i = 0; i < n; i++) {
      cr_assert(ws[i].bucket == 12 || ws[i].bucket == (sym ? NC_OCL_ROW_VAR : 9), "bucket %d", ws[i].bucket);
      cr_assert_eq(ws[i].items, ws[i].bucket == 12 ? RN2 : sym ? 700 : RN);
      cr_assert_eq(ws[i].count, 1);
    }
    free(ws);
    nc_buf_free(&tmp);
    nc_plan_free(p);
    nc_graph_free(g);
  }
}

// reduce_graph on PoCL with NC_TUNE_DB = db_path, both outputs checked against the interpreter within
// 1e-5; returns the kernels emitted with a tuned reduce_wg and, in wg[2], the reductions' work-groups
// (the sum's, the max's).
static int reduce_compile_and_check(const char *db_path, int wg[2]) {
  nc_graph *g0 = reduce_graph(0);
  nc_tensor in[2];
  int64_t s1[1] = {RN}, s2[1] = {RN2};
  nc_feed f[2] = {sin_input(&in[0], "x", 1, s1, 0.377, 0), sin_input(&in[1], "x2", 1, s2, 0.377, 1)};
  for (int64_t j = 0; j < RN; j++) ((float *)in[0].data)[j] += 2;  // positive: the sum does not cancel
  compiled c = compile_and_check(db_path, g0, f, 2, 1e-5);
  int tuned = nc_ocl_reduce_tuned_kernels(c.c);
  wg[0] = wg[1] = 0;
  for (int q = 0; q < c.p->nkernels; q++) {
    const nc_ocl_launch *L = nc_ocl_kernel_launch(c.c, q);
    cr_assert_not_null(L);
    if (L->reduce_wg) wg[strstr(c.p->kernels[q].k.name, "max") ? 1 : 0] = L->reduce_wg;
  }
  for (int i = 0; i < 2; i++) nc_tensor_free(&in[i]);
  compiled_free(&c);
  nc_graph_free(g0);
  return tuned;
}

Test(tune_flash, reduce_entries_are_emitted_and_bad_ones_ignored) {
  NEED_OPENCL();
  nc_ocl_device_desc d;
  cr_assert_null(nc_ocl_select("", &d));
  nc_ocl_knobs kn;
  nc_ocl_knobs_default(d.gpu, &kn);
  int wg[2], dw = nc_ocl_reduce_wg_of(&kn);  // the device's default (loop_wg's: PoCL 64, a GPU 256)
  cr_assert_eq(reduce_compile_and_check("off", wg), 0, "no database: nothing tuned");
  cr_assert(wg[0] == dw && wg[1] == dw, "the default %d (%d, %d)", dw, wg[0], wg[1]);
  char path[600];
  snprintf(path, sizeof path, "%s/reduce.json", tmpdir);
  // items=2^9 (the sum): reduce_wg 16; items=2^12 (the max): 3, not a power of two; items=var: 0 (no
  // work-group); items=2^13: 4096, out of range (dropped on load); a malformed bucket
  const char *const es[][2] = {{"items=2^9", "{\"reduce_wg\": 16}"}, {"items=2^12", "{\"reduce_wg\": 3}"}, {"items=var", "{\"reduce_wg\": 0}"},
                               {"items=2^13", "{\"reduce_wg\": 4096}"}, {"items=1000", "{\"reduce_wg\": 8}"}};
  write_entries(path, &d, "ocl.loop class=reduce", es, 5);
  nc_tunedb *db;
  int rw[NC_OCL_WG_SLOTS];
  cr_assert_eq(load_and_select(path, &d, 4, NC_OCL_LOOP_REDUCE, 0, &db, rw), 1);
  cr_assert(warned(db, "reduce_wg=4096"), "out of range: dropped on load");
  cr_assert_eq(rw[9], 16);
  cr_assert_eq(rw[12], 0);
  cr_assert_eq(rw[nc_ocl_row_slot(NC_OCL_ROW_VAR)], 0);
  cr_assert(warned(db, "reduce_wg=3") && warned(db, "power of two"), "reduce_wg 3");
  cr_assert(warned(db, "reduce_wg=0"), "reduce_wg 0");
  cr_assert(warned(db, "is not 'items=2^K' (K in 0..40) or 'items=var'"), "malformed bucket");
  cr_assert_eq(nc_tunedb_nwarnings(db), 4, "%d warnings", nc_tunedb_nwarnings(db));
  // over the device's largest work-group (here said to be 8): ignored with a warning
  cr_assert_eq(nc_ocl_wg_select(db, &d, &kn, NC_OCL_LOOP_REDUCE, 8, rw), 0);
  cr_assert(warned(db, "largest work-group (8)"));
  // the other classes do not read reduce entries
  cr_assert_eq(nc_ocl_wg_select(db, &d, &kn, NC_OCL_LOOP_ROW, 0, rw), 0);
  nc_tunedb_free(db);
  // a compilation: the sum runs on 16 work-items, the max keeps the default; both still right
  cr_assert_eq(reduce_compile_and_check(path, wg), 1);
  cr_assert_eq(wg[0], 16, "the tuned bucket's reduction: %d", wg[0]);
  cr_assert_eq(wg[1], dw, "the untuned one: %d", wg[1]);
  // both buckets tuned (the max at 32)
  const char *const es2[][2] = {{"items=2^9", "{\"reduce_wg\": 16}"}, {"items=2^12", "{\"loop_wg\": 64, \"row_wg\": 4, \"reduce_wg\": 32}"}};
  write_entries(path, &d, "ocl.loop class=reduce", es2, 2);
  cr_assert_eq(reduce_compile_and_check(path, wg), 2);
  cr_assert(wg[0] == 16 && wg[1] == 32, "%d %d", wg[0], wg[1]);
  // an entry equal to the default changes nothing
  char kb[64];
  snprintf(kb, sizeof kb, "{\"reduce_wg\": %d}", dw);
  const char *const es3[][2] = {{"items=2^9", kb}};
  write_entries(path, &d, "ocl.loop class=reduce", es3, 1);
  cr_assert_eq(reduce_compile_and_check(path, wg), 0);
}

Test(tune_flash, reduce_tuning_records_entries_and_the_hook_rejects_candidates, .timeout = 300) {
  NEED_OPENCL();
  nc_tune_wg_shape ws = {.bucket = 12, .count = 2, .items = 5000};
  char out[16384];
  int v = wg_tuning_checks(NC_OCL_LOOP_REDUCE, &ws, "reduce", "items=2^12", out, sizeof out);
  cr_assert(v >= 1 && !(v & (v - 1)), "the recorded reduce_wg %d is the work-group itself (not 0, the default's 'follow loop_wg')", v);
  cr_assert(strstr(out, "items="), "%s", out);
  // the test hook through the command line: every bucket keeps the default
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "tune models/specs/tiny.xml --device opencl --batch 2 --seq 16 --only reduce --budget 8 --db %s/tiny-hook.json", tmpdir);
  setenv("NC_TUNE_TEST_BREAK", "1", 1);
  int rc = nc_test_cli(cmd, out, sizeof out);
  unsetenv("NC_TUNE_TEST_BREAK");
  cr_assert_eq(rc, 0, "%s", out);
  // (the child may run on another device than this process's default: a GPU held by this process in
  // exclusive mode leaves it PoCL; so the table is read, not compared with this process's defaults)
  int rows = 0;
  for (const char *l = strstr(out, "\nocl.loop class=reduce"); l; l = strstr(l + 1, "\nocl.loop class=reduce")) {
    const char *end = strchr(l + 1, '\n');
    int len = end ? (int)(end - l - 1) : (int)strlen(l + 1);
    char line[512];
    snprintf(line, sizeof line, "%.*s", len < 511 ? len : 511, l + 1);
    cr_assert(strstr(line, "(default) reduce_wg="), "a bucket kept a non-default work-group under the hook: %s", line);
    rows++;
  }
  cr_assert_geq(rows, 1, "%s", out);
  cr_assert(strstr(out, "rejected reduce_wg=") && !strstr(out, "(best so far"), "%s", out);
}

// The tiny training step with every reduction bucket at a non-default reduce_wg (16; the defaults are
// 64 on PoCL, 256 on a GPU): the reductions are emitted with it, and the losses of two steps equal the interpreter's.
Test(tune_flash, tiny_step_with_tuned_reductions_matches_the_interpreter, .timeout = 300) {
  NEED_OPENCL();
  nc_ocl_device_desc d;
  cr_assert_null(nc_ocl_select("", &d));
  char path[600], sh[42][16];
  snprintf(path, sizeof path, "%s/tinyred.json", tmpdir);
  const char *es[42][2];
  for (int b = -1; b <= 40; b++) {
    nc_ocl_reduce_shape_str(b, sh[b + 1], sizeof sh[0]);
    es[b + 1][0] = sh[b + 1], es[b + 1][1] = "{\"reduce_wg\": 16}";
  }
  // the entries for every device (the command may not pick this process's default: a GPU this
  // process holds in exclusive mode leaves the child PoCL)
  char text[1 << 16] = HEAD, e[2048];
  for (int dev = 0, first = 1; dev < 8; dev++) {
    char sel[8];
    snprintf(sel, sizeof sel, "%d", dev);
    nc_status st = nc_ocl_select(sel, &d);
    if (st) {
      nc_status_free(st);
      break;
    }
    for (int i = 0; i < 42; i++, first = 0) {
      entry(e, sizeof e, &d, "ocl.loop class=reduce", es[i][0], es[i][1]);
      cr_assert_lt(strlen(text) + strlen(e) + 4, sizeof text);
      strcat(text, first ? "" : ",\n"), strcat(text, e);
    }
  }
  strcat(text, "]}");
  write_text(path, text);
  setenv("NC_TUNE_DB", path, 1);
  setenv("NC_DEBUG", "1", 1);
  char out[1 << 14], ref[1 << 13];
  int rc = nc_test_cli("bench train --spec models/specs/tiny.xml --batch 2 --seq 16 --steps 2 --device opencl", out, sizeof out);
  unsetenv("NC_DEBUG");
  unsetenv("NC_TUNE_DB");
  cr_assert_eq(rc, 0, "%s", out);
  const char *at = strstr(out, " reductions emitted with a tuned work-group");
  cr_assert(at, "%s", out);
  while (at > out && at[-1] != ' ') at--;
  cr_assert_gt(atoi(at), 0, "the step's reductions took the entries:\n%s", out);
  cr_assert_eq(nc_test_cli("bench train --spec models/specs/tiny.xml --batch 2 --seq 16 --steps 2 --device interp", ref, sizeof ref), 0, "%s", ref);
  const char *a = strstr(out, "step 2/2"), *b = strstr(ref, "step 2/2");
  cr_assert(a && b, "%s\n%s", out, ref);
  const char *la = strstr(a, "loss"), *lb = strstr(b, "loss");
  cr_assert(la && lb);
  cr_assert_eq(strncmp(la, lb, 11), 0, "opencl %.11s vs interp %.11s", la, lb);
}

// ---- small mends ------------------------------------------------------------------------
Test(tune_flash, cli_only_wants_a_space) {
  char out[4096];
  int rc = nc_test_cli("tune models/specs/tiny.xml --device opencl --only \"\"", out, sizeof out);
  cr_assert(rc > 0 && strstr(out, "--only wants at least one of gemm, flash, loop, row, reduce"), "%d: %s", rc, out);
  rc = nc_test_cli("tune models/specs/tiny.xml --device opencl --only ,", out, sizeof out);
  cr_assert(rc > 0 && strstr(out, "--only wants"), "%d: %s", rc, out);
  rc = nc_test_cli("tune models/specs/tiny.xml --device opencl --only reduces", out, sizeof out);
  cr_assert(rc > 0 && strstr(out, "gemm, flash, loop, row, reduce; got 'reduces'"), "%d: %s", rc, out);
}

// Explicit flash-attention blocks (nc_ocl_opts.attn_blocks, the tuner's candidates) are checked at the
// plan's head dims: fp32 tiles of 128 query rows fit the 48 KiB at head dim 16, not at 128.
Test(tune_flash, explicit_attention_blocks_are_checked_at_the_plan_head_dims) {
  NEED_OPENCL();
  for (int dim = 16; dim <= 128; dim += 112) {
    nc_graph *g = nc_graph_new("attn_dims");
    nc_dim dq[4] = {nc_dim_const(1), nc_dim_const(16), nc_dim_const(1), nc_dim_const(dim)};
    nc_id q = nc_leaf(g, NC_OP_INPUT, "q", nc_type_make(NC_F32, 4, dq));
    cr_assert_null(nc_graph_set_output(g, "o", nc_b_attention(g, q, q, q, NC_NONE, true, 0, 0.25)));
    nc_plan *p = plan_of(&g);
    nc_ocl_attn_blocks bl;
    nc_ocl_attn_blocks_of(0, &bl);
    bl.bm = 128;
    cr_assert_null(nc_ocl_attn_blocks_check(0, 0, 0, &bl), "valid without head dims");
    nc_ocl_opts oo = {.select = "", .attn_blocks = &bl};
    nc_ocl *c = NULL;
    nc_status st = nc_ocl_compile(p, &oo, &c);
    if (dim == 16) {
      cr_assert_null(st, "%s", st ? nc_status_msg(st) : "");
    } else {
      cr_assert_not_null(st, "bm=128 at head dim 128 accepted");
      cr_assert(strstr(nc_status_msg(st), "head dims 128/128") && strstr(nc_status_msg(st), "local memory"), "%s", nc_status_msg(st));
      nc_status_free(st);
    }
    nc_ocl_free(c);
    nc_plan_free(p);
    nc_graph_free(g);
  }
}
