// The autotuner and its database: knob spaces (codegen/tune.h), the JSON
// database and its bad-content handling (runtime/tunedb.h), tuning runs on the
// CPU and on PoCL that write entries the next compilation picks up
// (runtime/tuner.h, runtime/cpu.h, runtime/ocl_device.h), the rejection of a
// wrong candidate, and `nanochat tune`'s bad input.
#include <criterion/criterion.h>
#include <jansson.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/cli_util.h"
#include "codegen/gemm.h"
#include "codegen/gemm_bf16.h"
#include "codegen/jit.h"
#include "ir/dtype.h"
#include "codegen/host.h"
#include "codegen/tune.h"
#include "ir/build.h"
#include "passes/lower.h"
#include "runtime/cpu.h"
#include "runtime/ocl_device.h"
#include "runtime/tunedb.h"
#include "runtime/tuner.h"
#include "tests/support/interp_util.h"
#include "tests/support/tune_util.h"

static char tmpdir[512];

static void setup(void) { nc_test_scratch_make(tmpdir, sizeof tmpdir, "nc_test_tune"); }
static void teardown(void) { nc_test_scratch_remove(tmpdir); }

TestSuite(tune, .init = setup, .fini = teardown);

// PoCL 3.1 leaks inside its LLVM 15 whenever it compiles a kernel that is not
// in its own cache (~/.cache/pocl), and the tuner's candidates are such
// kernels: LeakSanitizer ignores allocations made from those two libraries
// (ours are still checked).
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libpocl.so\nleak:libLLVM-15.so\n"; }

static const char *tpath(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s", tmpdir, name);
  return buf;
}

#define write_text nc_test_write_text  // (tests/support/tune_util.h)
#define warned nc_test_tunedb_warned

// ---- knob spaces -------------------------------------------------------------------
Test(tune, knob_spaces_are_consistent) {
  const nc_knob_space *spaces[] = {&nc_gemm_knob_space, &nc_ocl_gemm_knob_space, &nc_ocl_tc_knob_space, &nc_ocl_tcp_knob_space};
  for (int s = 0; s < 4; s++) {
    const nc_knob_space *sp = spaces[s];
    cr_assert_eq(nc_knob_space_find(sp->name), sp);
    cr_assert_gt(sp->nknobs, 0);
    int searched = 0;
    for (int i = 0; i < sp->nknobs; i++) {
      const nc_knob *k = &sp->knobs[i];
      cr_assert_leq(k->min, k->max, "%s.%s", sp->name, k->name);
      cr_assert_eq(nc_knob_find(sp, k->name), i);
      cr_assert_leq(k->offset + sizeof(int), sp->size);
      for (int v = 0; v < k->nsearch; v++)
        cr_assert(k->search[v] >= k->min && k->search[v] <= k->max, "%s.%s value %d outside %d..%d", sp->name, k->name, k->search[v],
                  k->min, k->max);
      searched += k->nsearch > 0;
    }
    cr_assert_gt(searched, 0, "%s searches nothing", sp->name);
  }
  cr_assert_null(nc_knob_space_find("cpu.nope"));
  // the device defaults are inside their spaces
  nc_host_cpu zen = {.avx512f = true};
  nc_gemm_knobs g512 = nc_gemm_knobs_default(&zen), g256 = nc_gemm_knobs_default(NULL);
  cr_assert_null(nc_knob_check(&nc_gemm_knob_space, &g512));
  cr_assert_null(nc_knob_check(&nc_gemm_knob_space, &g256));
  for (int gpu = 0; gpu < 2; gpu++) {
    nc_ocl_knobs o;
    nc_ocl_knobs_default(gpu, &o);
    cr_assert_null(nc_knob_check(&nc_ocl_gemm_knob_space, &o));
    o.gemm_tc = 2;
    o.tc_stages = 0;
    cr_assert_null(nc_knob_check(&nc_ocl_tc_knob_space, &o));
  }
  // get/set by name, range errors name the knob, the template's own check runs
  nc_gemm_knobs k = g512;
  int mr = nc_knob_find(&nc_gemm_knob_space, "mr");
  nc_knob_set(&nc_gemm_knob_space, &k, mr, 8);
  cr_assert_eq(k.mr, 8);
  cr_assert_eq(nc_knob_get(&nc_gemm_knob_space, &k, mr), 8);
  nc_knob_set(&nc_gemm_knob_space, &k, mr, 99);
  nc_status st = nc_knob_check(&nc_gemm_knob_space, &k);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "mr=99"), "%s", nc_status_msg(st));
  nc_status_free(st);
  k = g512;
  k.mr = 12, k.nr = 96;  // 72 accumulators: in range, rejected by the template
  st = nc_knob_check(&nc_gemm_knob_space, &k);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "accumulators"), "%s", nc_status_msg(st));
  nc_status_free(st);
  char buf[256];
  nc_knob_format(&nc_gemm_knob_space, &g512, buf, sizeof buf);
  cr_assert(strstr(buf, "mr=6 nr=64 kc=384"), "%s", buf);
  cr_assert_null(strstr(buf, "vw="), "fixed knobs are not printed: %s", buf);
}

Test(tune, ocl_named_gemm_and_geometry) {
  nc_ocl_knobs kn;
  nc_ocl_knobs_default(false, &kn);  // 32x32 tiles, 4x4 per work-item
  size_t g[3], l[3];
  nc_ocl_gemm_geometry(&kn, 70, 37, 3, g, l);
  cr_assert(l[0] == 8 && l[1] == 8 && l[2] == 1, "local %zu %zu %zu", l[0], l[1], l[2]);
  cr_assert(g[0] == 16 && g[1] == 24 && g[2] == 3, "global %zu %zu %zu", g[0], g[1], g[2]);
  for (int tc = 0; tc <= 2; tc += 2) {
    kn.gemm_tc = tc;
    kn.tc_stages = 0;
    nc_buf b;
    nc_buf_init(&b);
    cr_assert_null(nc_ocl_emit_gemm_named(&kn, 1, "nc_gemm_nt_t7", &b));
    cr_assert(strstr(b.data, "void nc_gemm_nt_t7("), "tc %d", tc);
    cr_assert_null(strstr(b.data, "void nc_gemm_nt("), "tc %d: the default name is gone", tc);
    nc_buf_free(&b);
  }
  kn.gemm_tc = 2;  // bf16 blocks: 32 * (bm/wm) * (bn/wn) work-items per bm x bn tile
  nc_ocl_gemm_geometry(&kn, 70, 37, 1, g, l);
  cr_assert(l[0] == (size_t)(32 * (kn.tc_bm / kn.tc_wm) * (kn.tc_bn / kn.tc_wn)) && l[1] == 1);
  cr_assert(g[0] == (size_t)((37 + kn.tc_bn - 1) / kn.tc_bn) * l[0] && g[1] == (size_t)((70 + kn.tc_bm - 1) / kn.tc_bm));
}

// ---- the database -------------------------------------------------------------------
static nc_tune_entry entry(const char *device, const char *driver, const char *kernel, const char *shape) {
  nc_tune_entry e;
  memset(&e, 0, sizeof e);
  snprintf(e.device, sizeof e.device, "%s", device);
  snprintf(e.driver, sizeof e.driver, "%s", driver);
  snprintf(e.kernel, sizeof e.kernel, "%s", kernel);
  snprintf(e.shape, sizeof e.shape, "%s", shape);
  snprintf(e.date, sizeof e.date, "2026-11-26T00:00:00Z");
  e.time_us = 10, e.default_time_us = 12;
  return e;
}

Test(tune, database_round_trip_and_replace) {
  char path[600];
  tpath(path, sizeof path, "sub/dir/tune.json");
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(path, false, &db));  // absent: empty, no warning
  cr_assert_eq(nc_tunedb_count(db), 0);
  cr_assert_eq(nc_tunedb_nwarnings(db), 0);
  nc_gemm_knobs k = nc_gemm_knobs_default(NULL);
  k.mr = 4;
  nc_tune_entry e = entry("cpu test", "LLVM 1", "cpu.gemm_f32 ta=0 tb=1 sym=0 vw=8 threads=2", "batch=1 m=8 n=8 k=8");
  nc_tune_entry_set_knobs(&e, &nc_gemm_knob_space, &k);
  cr_assert_null(nc_tunedb_put(db, &e));
  e.time_us = 5;  // same key: replaced
  cr_assert_null(nc_tunedb_put(db, &e));
  nc_tune_entry e2 = entry("cpu test", "LLVM 1", "cpu.gemm_f32 ta=0 tb=0 sym=0 vw=8 threads=2", "batch=1 m=8 n=8 k=8");
  cr_assert_null(nc_tunedb_put(db, &e2));
  cr_assert_eq(nc_tunedb_count(db), 2);
  cr_assert_null(nc_tunedb_save(db, path));  // creates the folders
  nc_tunedb_free(db);
  // a temporary file is not left behind; the file is plain JSON
  char cmd[700];
  snprintf(cmd, sizeof cmd, "test $(ls -A '%s/sub/dir' | wc -l) -eq 1", tmpdir);
  cr_assert_eq(system(cmd), 0, "the folder holds exactly tune.json");
  json_error_t jerr;
  json_t *root = json_load_file(path, 0, &jerr);
  cr_assert_not_null(root, "%s", jerr.text);
  cr_assert_eq(json_integer_value(json_object_get(root, "version")), NC_TUNEDB_VERSION);
  json_t *e0 = json_array_get(json_object_get(root, "entries"), 0);
  cr_assert_eq(json_integer_value(json_object_get(json_object_get(e0, "knobs"), "mr")), 4);
  cr_assert_float_eq(json_number_value(json_object_get(e0, "speedup")), 12.0 / 5.0, 1e-9);
  json_decref(root);
  cr_assert_null(nc_tunedb_load(path, false, &db));
  cr_assert_eq(nc_tunedb_nwarnings(db), 0);
  cr_assert_eq(nc_tunedb_count(db), 2);
  const nc_tune_entry *f = nc_tunedb_find(db, "cpu test", "LLVM 1", "cpu.gemm_f32 ta=0 tb=1 sym=0 vw=8 threads=2", "batch=1 m=8 n=8 k=8");
  cr_assert_not_null(f);
  cr_assert_float_eq(f->time_us, 5, 1e-9);
  nc_gemm_knobs got = nc_gemm_knobs_default(NULL);
  cr_assert_null(nc_tune_entry_apply(f, &nc_gemm_knob_space, &got));
  cr_assert_eq(memcmp(&got, &k, sizeof k), 0);
  // another driver: stale, one warning naming the file and the entry
  const nc_tune_entry *sel[4];
  cr_assert_eq(nc_tunedb_select(db, "cpu test", "LLVM 2", "cpu.gemm_f32 ta=0 tb=1 sym=0 vw=8 threads=2", sel, 4), 0);
  cr_assert_eq(nc_tunedb_nwarnings(db), 1);
  cr_assert(warned(db, "stale") && warned(db, path) && warned(db, "LLVM 1"), "%s", nc_tunedb_warning(db, 0));
  cr_assert_eq(nc_tunedb_select(db, "cpu test", "LLVM 1", "cpu.gemm_f32 ta=0 tb=1 sym=0 vw=8 threads=2", sel, 4), 1);
  nc_tunedb_free(db);
}

static nc_tunedb *load_text(const char *name, const char *text) {
  char path[600];
  write_text(tpath(path, sizeof path, name), text);
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(path, false, &db));
  return db;
}

#define GOOD_HEAD "{\"format\": \"nanochat-c tuning database\", \"version\": 1, \"entries\": ["
#define E_KEYS "\"device\": \"cpu x\", \"driver\": \"LLVM 1\", \"kernel\": \"cpu.gemm_f32 ta=0 tb=1 sym=0 vw=16 threads=1\", \"shape\": \"batch=1 m=8 n=8 k=8\""

Test(tune, bad_files_are_ignored_with_a_warning) {
  struct {
    const char *name, *text, *want;
  } cases[] = {
      {"notjson.json", "{\"format\": \"nanochat-c tuning database\", \"version\": 1, \"entries\": [", "not JSON"},
      {"garbage.json", "\x01\x02 binary", "not JSON"},
      {"other.json", "{\"format\": \"something else\", \"version\": 1, \"entries\": []}", "not a tuning database"},
      {"array.json", "[1, 2]", "not a tuning database"},
      {"v0.json", "{\"format\": \"nanochat-c tuning database\", \"version\": 0, \"entries\": []}", "stale"},
      {"vstr.json", "{\"format\": \"nanochat-c tuning database\", \"version\": \"1\", \"entries\": []}", "version"},
      {"noentries.json", "{\"format\": \"nanochat-c tuning database\", \"version\": 1, \"entries\": {}}", "not an array"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    nc_tunedb *db = load_text(cases[i].name, cases[i].text);
    cr_assert_eq(nc_tunedb_count(db), 0, "%s", cases[i].name);
    cr_assert_eq(nc_tunedb_nwarnings(db), 1, "%s: %d warnings", cases[i].name, nc_tunedb_nwarnings(db));
    cr_assert(warned(db, cases[i].want) && warned(db, cases[i].name), "%s: %s", cases[i].name, nc_tunedb_warning(db, 0));
    nc_tunedb_free(db);
  }
}

Test(tune, bad_entries_are_dropped_one_warning_each) {
  const char *text = GOOD_HEAD
      "{" E_KEYS ", \"knobs\": {\"mr\": 4}, \"time_us\": 1, \"default_time_us\": 2},\n"                 // 0 good
      "{" E_KEYS ", \"knobs\": {\"mr\": 4}, \"time_us\": \"fast\", \"default_time_us\": 2},\n"          // 1 wrong type
      "{" E_KEYS ", \"knobs\": {\"warp_speed\": 4}, \"time_us\": 1, \"default_time_us\": 2},\n"         // 2 unknown knob
      "{" E_KEYS ", \"knobs\": {\"mr\": 400}, \"time_us\": 1, \"default_time_us\": 2},\n"              // 3 out of range
      "{" E_KEYS ", \"knobs\": {\"mr\": 4.5}, \"time_us\": 1, \"default_time_us\": 2},\n"              // 4 not an integer
      "{\"device\": 3, \"driver\": \"d\", \"kernel\": \"cpu.gemm_f32\", \"shape\": \"s\", \"knobs\": {}, \"time_us\": 1, \"default_time_us\": 1},\n"  // 5
      "{\"device\": \"a\", \"driver\": \"d\", \"kernel\": \"gpu.magic\", \"shape\": \"s\", \"knobs\": {}, \"time_us\": 1, \"default_time_us\": 1},\n"  // 6
      "{" E_KEYS ", \"knobs\": [4], \"time_us\": 1, \"default_time_us\": 2},\n"                         // 7 knobs not an object
      "17]}";
  nc_tunedb *db = load_text("entries.json", text);
  cr_assert_eq(nc_tunedb_count(db), 1);
  cr_assert_eq(nc_tunedb_nwarnings(db), 8, "%d warnings", nc_tunedb_nwarnings(db));
  const char *want[] = {"entry 1: field 'time_us'", "entry 2: unknown knob 'warp_speed'", "entry 3: knob mr=400 is outside",
                        "entry 4: knob 'mr' is not an integer", "entry 5: field 'device'", "entry 6: kernel 'gpu.magic'",
                        "entry 7: field 'knobs'", "entry 8: not an object"};
  for (int i = 0; i < 8; i++) cr_assert(warned(db, want[i]), "missing warning '%s'", want[i]);
  cr_assert(warned(db, "entries.json"), "warnings name the file");
  nc_tunedb_free(db);
}

// ---- the CPU: a tuning run, and the next compilation reads the database -------------
static nc_graph *matmul_graph(int64_t M, int64_t N, int64_t K) {
  nc_graph *g = nc_graph_new("tune_mm");
  nc_dim dx[2] = {nc_dim_const(M), nc_dim_const(K)}, dw[2] = {nc_dim_const(N), nc_dim_const(K)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, dx));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_F32, 2, dw));
  cr_assert_null(nc_graph_set_output(g, "y", nc_b_matmul(g, x, w, false, true)));  // (M,N) = x w^T: variant tb
  cr_assert_null(nc_graph_error(g));
  return g;
}

static void fill_feeds(nc_tensor *t, int64_t M, int64_t N, int64_t K) {
  int64_t sx[2] = {M, K}, sw[2] = {N, K};
  cr_assert_null(nc_tensor_alloc(&t[0], NC_F32, 2, sx));
  cr_assert_null(nc_tensor_alloc(&t[1], NC_F32, 2, sw));
  for (int64_t i = 0; i < M * K; i++) ((float *)t[0].data)[i] = (float)sin(0.37 * (double)i);
  for (int64_t i = 0; i < N * K; i++) ((float *)t[1].data)[i] = (float)cos(0.11 * (double)i);
}

static double max_rel_err(const nc_tensor *a, const nc_tensor *b) {  // any dtypes (bf16 too)
  double e = 0, m = 1e-30;
  int64_t n = nc_tensor_numel(a);
  for (int64_t i = 0; i < n; i++) {
    double x = nct_get(a, i), y = nct_get(b, i);
    e = fmax(e, fabs(x - y));
    m = fmax(m, fabs(y));
  }
  return e / m;
}

enum { TM = 70, TN = 37, TK = 45 };

// A one-GEMM graph whose launch is GEMM variant `variant` (runtime/cpu.h) of
// batch 1 x m x n x k, its leaves (inputs or params) and the tolerance of its
// output against the interpreter.
typedef struct {
  const char *what;
  nc_graph *(*build)(void);
  int variant;
  int64_t m, n, k;
  int nleaves;
  const char *leaf[3];
  nc_dtype dt;
  int64_t dims[3][2];
  double tol;
} gemm_case;

static nc_graph *plain_graph(void) { return matmul_graph(TM, TN, TK); }
static const gemm_case plain_case = {"plain", plain_graph, 1, TM, TN, TK, 2, {"x", "w"}, NC_F32, {{TM, TK}, {TN, TK}}, 1e-5};

static bool cpu_compile_and_check_case(const char *db_path, const gemm_case *gc, nc_gemm_knobs *kn);
static bool cpu_compile_and_check(const char *db_path, nc_gemm_knobs *kn) { return cpu_compile_and_check_case(db_path, &plain_case, kn); }

Test(tune, cpu_tuning_run_writes_entries_and_rejects_a_wrong_candidate) {
  char db_path[600];
  tpath(db_path, sizeof db_path, "tune.json");
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(db_path, false, &db));
  nc_tune_shape shapes[2] = {{.variant = 1, .batch = 1, .m = TM, .n = TN, .k = TK, .count = 1},
                             {.variant = 4 + 1, .batch = 1, .m = 40, .n = 40, .k = 24, .count = 3}};  // X X^T (sym)
  nc_tune_result res[2];
  nc_tune_opts o = {.dev = {.kind = NC_DEV_CPU, .threads = 2}, .budget_s = 6.0};  // compiling a candidate takes ~0.2-1.5 s
  nc_status st = nc_tune_run(shapes, 2, &o, db, res);
  if (st && nc_status_code(st) == NC_E_UNSUPPORTED) {  // a build without LLVM
    nc_status_free(st);
    nc_tunedb_free(db);
    cr_skip_test("no LLVM");
  }
  cr_assert_null(st, "%s", nc_status_msg(st));
  for (int i = 0; i < 2; i++) {
    cr_assert(res[i].tuned, "shape %d tuned", i);
    cr_assert_gt(res[i].default_us, 0);
    cr_assert_gt(res[i].best_us, 0);
    cr_assert_leq(res[i].best_us, res[i].default_us * 1.0001);
    cr_assert_eq(res[i].rejected, 0, "no correct candidate is rejected");
  }
  cr_assert_gt(res[0].tried + res[1].tried, 2, "the search tried candidates beyond the defaults");
  cr_assert_eq(nc_tunedb_count(db), 2);
  cr_assert(strstr(res[0].kernel, "cpu.gemm_f32 ta=0 tb=1 sym=0") && strstr(res[0].kernel, "threads=2"), "%s", res[0].kernel);
  cr_assert_str_eq(res[0].shape, "batch=1 m=70 n=37 k=45");
  cr_assert(strstr(res[1].kernel, "sym=1"), "%s", res[1].kernel);
  cr_assert_null(nc_tunedb_save(db, db_path));
  // the next compilation of a plan with that GEMM runs the recorded winner
  // (an extra GEMM when it is not the default)
  nc_host_cpu hc;
  cr_assert_null(nc_host_cpu_query(&hc));
  char device[192], driver[192];
  nc_tune_cpu_ids(&hc, device, sizeof device, driver, sizeof driver);
  const nc_tune_entry *won = nc_tunedb_find(db, device, driver, res[0].kernel, res[0].shape);
  cr_assert_not_null(won);
  nc_gemm_knobs want = nc_gemm_knobs_default(&hc), kn;
  cr_assert_null(nc_tune_entry_apply(won, &nc_gemm_knob_space, &want));
  bool tuned = cpu_compile_and_check(db_path, &kn);
  cr_assert_eq(tuned, !res[0].is_default, "tuned %d, default won %d", tuned, res[0].is_default);
  cr_assert_eq(memcmp(&kn, &want, sizeof kn), 0, "the launch runs the database's knobs");
  nc_tunedb_free(db);

  // the test hook corrupts every non-default candidate's output: all rejected, the default wins
  cr_assert_null(nc_tunedb_load(db_path, false, &db));
  o.break_candidates = true;
  o.budget_s = 2.5;
  o.seed = 99;
  cr_assert_null(nc_tune_run(shapes, 1, &o, db, res));
  cr_assert_gt(res[0].rejected, 0, "candidates tried: %d", res[0].tried);
  cr_assert(res[0].is_default);
  cr_assert_eq(res[0].tried, res[0].rejected + 1, "only the default was accepted: %d tried, %d rejected", res[0].tried, res[0].rejected);
  nc_tunedb_free(db);
}

static nc_plan *plan_of(const nc_graph *g) {
  nc_lower_opts lo = {.fuse = true};
  nc_plan *p = NULL;
  cr_assert_null(nc_plan_build(g, &lo, &p));
  return p;
}

// Entries written as a tuning run would (non-default knobs), for this CPU: one
// per case, its variant's signature (2 threads) and shape.
static void write_cpu_entries(const char *db_path, const char *driver_override, const gemm_case *const *cases, const char *const *knobs_json,
                              int n) {
  nc_host_cpu hc;
  cr_assert_null(nc_host_cpu_query(&hc));
  char device[192], driver[192], kernel[128], shape[96];
  nc_tune_cpu_ids(&hc, device, sizeof device, driver, sizeof driver);
  char text[8192];
  int at = snprintf(text, sizeof text, GOOD_HEAD);
  for (int i = 0; i < n; i++) {
    bool bf = nc_tune_variant_bf16(cases[i]->variant);
    nc_tune_cpu_kernel(cases[i]->variant, bf ? 16 : nc_gemm_knobs_default(&hc).vw, 2, kernel, sizeof kernel);
    nc_tune_shape_str(1, cases[i]->m, cases[i]->n, cases[i]->k, shape, sizeof shape);
    at += snprintf(text + at, sizeof text - (size_t)at,
                   "%s{\"device\": \"%s\", \"driver\": \"%s\", \"kernel\": \"%s\", \"shape\": \"%s\", \"knobs\": %s, "
                   "\"time_us\": 1, \"default_time_us\": 2, \"date\": \"2026-11-26T00:00:00Z\"}",
                   i ? ",\n" : "", device, driver_override ? driver_override : driver, kernel, shape, knobs_json[i]);
    cr_assert_lt(at, (int)sizeof text);
  }
  snprintf(text + at, sizeof text - (size_t)at, "]}");
  write_text(db_path, text);
}

static void write_cpu_entry(const char *db_path, const char *driver_override, const char *knobs_json) {
  const gemm_case *c = &plain_case;
  write_cpu_entries(db_path, driver_override, &c, &knobs_json, 1);
}

// Compiles the case's plan on the CPU with NC_TUNE_DB = db_path; returns
// whether the launch of its shape is tuned, with its knobs, after checking the
// result against the interpreter.
static bool cpu_compile_and_check_case(const char *db_path, const gemm_case *gc, nc_gemm_knobs *kn) {
  setenv("NC_TUNE_DB", db_path, 1);
  nc_graph *g = gc->build();
  nc_plan *p = plan_of(g);
  nc_cpu_opts co = {.threads = 2};
  nc_cpu *c = NULL;
  nc_status st = nc_cpu_compile(p, &co, &c);
  if (st && nc_status_code(st) == NC_E_UNSUPPORTED) {
    nc_status_free(st);
    nc_plan_free(p);
    nc_graph_free(g);
    cr_skip_test("no LLVM");
  }
  cr_assert_null(st, "%s", nc_status_msg(st));
  bool tuned = nc_cpu_gemm_knobs_for(c, gc->variant, 1, gc->m, gc->n, gc->k, kn);
  nc_tensor in[3], got, want;
  nc_feed feeds[3];
  for (int l = 0; l < gc->nleaves; l++) {
    cr_assert_null(nc_tensor_alloc(&in[l], gc->dt, 2, gc->dims[l]));
    for (int64_t i = 0; i < gc->dims[l][0] * gc->dims[l][1]; i++) nct_set(&in[l], i, l % 2 ? cos(0.11 * (double)i) : sin(0.37 * (double)i));
    feeds[l] = (nc_feed){gc->leaf[l], &in[l]};
  }
  cr_assert_null(nc_plan_run(g, p, nc_cpu_runner, c, feeds, gc->nleaves, &got));
  cr_assert_null(nc_interp_run(g, feeds, gc->nleaves, &want));
  double err = max_rel_err(&got, &want);
  cr_assert_lt(err, gc->tol, "%s: error %g", gc->what, err);
  nc_tensor_free(&got);
  nc_tensor_free(&want);
  for (int l = 0; l < gc->nleaves; l++) nc_tensor_free(&in[l]);
  nc_cpu_free(c);
  nc_plan_free(p);
  nc_graph_free(g);
  unsetenv("NC_TUNE_DB");
  return tuned;
}

Test(tune, cpu_compile_uses_the_database_entry_for_its_shape) {
  char db_path[600];
  tpath(db_path, sizeof db_path, "cpu.json");
  nc_gemm_knobs kn;
  cr_assert_not(cpu_compile_and_check(db_path, &kn), "no database: defaults");
  write_cpu_entry(db_path, NULL, "{\"mr\": 4, \"nr\": 32, \"kc\": 64, \"mc\": 48, \"nc\": 96, \"ku\": 2, \"order\": 0}");
  cr_assert(cpu_compile_and_check(db_path, &kn), "the entry is used");
  cr_assert_eq(kn.mr, 4);
  cr_assert_eq(kn.nr, 32);
  cr_assert_eq(kn.kc, 64);
  cr_assert_eq(kn.order, 0);
  // stale entries fall back to the defaults (and warn on stderr)
  write_cpu_entry(db_path, "LLVM 0.1-old", "{\"mr\": 4, \"nr\": 32}");
  cr_assert_not(cpu_compile_and_check(db_path, &kn), "another driver: stale");
  write_cpu_entry(db_path, NULL, "{\"mr\": 12, \"nr\": 96}");  // 72 accumulators: the template's check
  cr_assert_not(cpu_compile_and_check(db_path, &kn), "invalid knob combination: stale");
  write_cpu_entry(db_path, NULL, "{\"mr\": 4, \"vw\": 4}");  // a fixed knob that differs from this CPU's
  cr_assert_not(cpu_compile_and_check(db_path, &kn), "fixed knob differs");
  write_text(db_path, "{ corrupt");
  cr_assert_not(cpu_compile_and_check(db_path, &kn), "corrupt file");
  setenv("NC_TUNE_DB", "off", 1);
  char p2[1024];
  cr_assert_not(nc_tunedb_path(NULL, p2, sizeof p2), "NC_TUNE_DB=off disables lookups");
  cr_assert(nc_tunedb_path("/x/y.json", p2, sizeof p2) && !strcmp(p2, "/x/y.json"), "--db wins");
  unsetenv("NC_TUNE_DB");
}

// ---- the CPU's epilogue and bf16 GEMM launches: knobs, tuning, tuned launches --------
static bool host_has_bf16(void) {
  nc_host_cpu hc;
  cr_assert_null(nc_host_cpu_query(&hc));
  return nc_gemm_bf16_supported(&hc);
}

// A combination valid under the check with knob i of sp set to v (the other
// knobs the default's, or mr/nr/mc/nc moved to values of the table that fit).
static bool valid_combo(const nc_knob_space *sp, const nc_gemm_knobs *def, int i, int v, nc_gemm_knobs *out) {
  int imr = nc_knob_find(sp, "mr"), inr = nc_knob_find(sp, "nr"), imc = nc_knob_find(sp, "mc"), inc = nc_knob_find(sp, "nc");
  for (int d = -1; d < sp->knobs[imr].nsearch; d++)
  for (int a = -1; a < sp->knobs[inr].nsearch; a++)
    for (int b = -1; b < sp->knobs[imc].nsearch; b++)
      for (int c = -1; c < sp->knobs[inc].nsearch; c++) {
        nc_gemm_knobs k = *def;
        if (d >= 0) nc_knob_set(sp, &k, imr, sp->knobs[imr].search[d]);
        if (a >= 0) nc_knob_set(sp, &k, inr, sp->knobs[inr].search[a]);
        if (b >= 0) nc_knob_set(sp, &k, imc, sp->knobs[imc].search[b]);
        if (c >= 0) nc_knob_set(sp, &k, inc, sp->knobs[inc].search[c]);
        nc_knob_set(sp, &k, i, v);
        nc_status st = nc_knob_check(sp, &k);
        if (!st) {
          *out = k;
          return true;
        }
        nc_status_free(st);
      }
  return false;
}

Test(tune, bf16_knob_space_and_bad_entries) {
  const nc_knob_space *sp = &nc_gemm_bf16_knob_space;
  cr_assert_eq(nc_knob_space_find("cpu.gemm_bf16"), sp);
  nc_gemm_knobs def = nc_gemm_bf16_knobs_default(NULL), k;
  cr_assert_null(nc_knob_check(sp, &def));
  int searched = 0;
  for (int i = 0; i < sp->nknobs; i++) {
    const nc_knob *kb = &sp->knobs[i];
    cr_assert_eq(nc_knob_find(sp, kb->name), nc_knob_find(&nc_gemm_knob_space, kb->name), "the fp32 table's knobs: %s", kb->name);
    cr_assert_eq(kb->offset, nc_gemm_knob_space.knobs[i].offset);
    for (int v = 0; v < kb->nsearch; v++) {
      cr_assert(kb->search[v] >= kb->min && kb->search[v] <= kb->max, "%s=%d", kb->name, kb->search[v]);
      cr_assert(valid_combo(sp, &def, i, kb->search[v], &k), "%s=%d fits no combination", kb->name, kb->search[v]);
    }
    searched += kb->nsearch > 0;
  }
  cr_assert_eq(searched, sp->nknobs - 1, "every knob but vw is searched");
  cr_assert_eq(sp->knobs[nc_knob_find(sp, "vw")].nsearch, 0);
  int kc = nc_knob_find(sp, "kc");
  for (int v = 0; v < sp->knobs[kc].nsearch; v++) cr_assert_eq(sp->knobs[kc].search[v] % 2, 0, "kc counts k: even");
  cr_assert_gt(sp->knobs[kc].search[sp->knobs[kc].nsearch - 1], nc_gemm_knob_space.knobs[kc].search[nc_gemm_knob_space.knobs[kc].nsearch - 1],
               "kc runs past fp32's (pairs)");
  k = def, k.kc = 257;
  nc_status st = nc_knob_check(sp, &k);
  cr_assert(st && strstr(nc_status_msg(st), "odd"), "%s", st ? nc_status_msg(st) : "accepted");
  nc_status_free(st);
  // database entries: vw 8 is outside the space (dropped at load, one warning); kc odd loads but
  // fails the template's check when applied
  const char *text = GOOD_HEAD
      "{\"device\": \"cpu x\", \"driver\": \"LLVM 1\", \"kernel\": \"cpu.gemm_bf16 ta=0 tb=1 vw=16 threads=1\", \"shape\": \"batch=1 m=8 n=8 k=8\", "
      "\"knobs\": {\"vw\": 8, \"mr\": 4}, \"time_us\": 1, \"default_time_us\": 2},\n"
      "{\"device\": \"cpu x\", \"driver\": \"LLVM 1\", \"kernel\": \"cpu.gemm_bf16 ta=0 tb=1 vw=16 threads=1\", \"shape\": \"batch=1 m=8 n=9 k=8\", "
      "\"knobs\": {\"kc\": 255}, \"time_us\": 1, \"default_time_us\": 2}]}";
  nc_tunedb *db = load_text("bf16.json", text);
  cr_assert_eq(nc_tunedb_count(db), 1);
  cr_assert(warned(db, "entry 0: knob vw=8 is outside 16..16"), "%s", nc_tunedb_nwarnings(db) ? nc_tunedb_warning(db, 0) : "no warning");
  k = def;
  st = nc_tune_entry_apply(nc_tunedb_entry(db, 0), sp, &k);
  cr_assert(st && strstr(nc_status_msg(st), "kc 255 is odd"), "%s", st ? nc_status_msg(st) : "accepted");
  nc_status_free(st);
  cr_assert_eq(memcmp(&k, &def, sizeof k), 0, "a rejected entry leaves the knobs alone");
  nc_tunedb_free(db);
  // the signatures: the plain fp32 one unchanged, epilogues and bf16 of their own
  char sig[128];
  nc_tune_cpu_kernel(5, 16, 2, sig, sizeof sig);
  cr_assert_str_eq(sig, "cpu.gemm_f32 ta=0 tb=1 sym=1 vw=16 threads=2");
  nc_tune_cpu_kernel(17, 16, 2, sig, sizeof sig);
  cr_assert_str_eq(sig, "cpu.gemm_f32 ta=0 tb=1 sym=0 vw=16 threads=2 epi=relu2");
  nc_tune_cpu_kernel(25, 16, 2, sig, sizeof sig);
  cr_assert_str_eq(sig, "cpu.gemm_f32 ta=0 tb=1 sym=1 vw=16 threads=2 epi=addend");
  nc_tune_cpu_kernel(10, 16, 2, sig, sizeof sig);
  cr_assert_str_eq(sig, "cpu.gemm_bf16 ta=1 tb=0 vw=16 threads=2");
}

// Machine code for an AVX512_BF16 CPU (Zen 4) of module m, whatever the host: IR verified, the O2
// pipeline and instruction selection run. NULL or the error.
static char *emit_for_zen4(LLVMModuleRef m, const char *triple) {
  char *err = NULL;
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &err)) return err;
  LLVMDisposeMessage(err);
  err = NULL;
  LLVMTargetRef target;
  if (LLVMGetTargetFromTriple(triple, &target, &err)) return err;
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, "znver4", "+avx512f,+avx512bw,+avx512vl,+avx512dq,+avx512bf16,+avx2,+fma",
                                                    LLVMCodeGenLevelDefault, LLVMRelocPIC, LLVMCodeModelDefault);
  LLVMPassBuilderOptionsRef pbo = LLVMCreatePassBuilderOptions();
  LLVMErrorRef e = LLVMRunPasses(m, "default<O2>", tm, pbo);
  LLVMDisposePassBuilderOptions(pbo);
  if (e) {
    err = LLVMGetErrorMessage(e);
  } else {
    LLVMMemoryBufferRef buf = NULL;
    if (!LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMObjectFile, &err, &buf)) {
      if (LLVMGetBufferSize(buf) < 64) err = LLVMCreateMessage("empty object");
      LLVMDisposeMemoryBuffer(buf);
    }
  }
  LLVMDisposeTargetMachine(tm);
  return err;
}

// Every search value of the bf16 table (in a valid combination) compiles in the bf16 emitter with
// bf16 memory, as the runtime runs it: machine code for Zen 4 on any host (LLVM's X86 target); on a
// host with AVX512_BF16 the JIT-compiled function also matches a naive loop over the bf16 inputs
// (edges: M, N not multiples of the blocks, K over two kc blocks, both shares of 2 threads).
Test(tune, bf16_knob_table_values_compile_and_match, .timeout = 600) {
  const nc_knob_space *sp = &nc_gemm_bf16_knob_space;
  nc_jit_options jo = {.no_jit = true};
  nc_jit *aot, *jit = NULL;
  cr_assert_null(nc_jit_create(&jo, &aot));
  bool run = host_has_bf16();
  if (run) cr_assert_null(nc_jit_create(NULL, &jit));
  nc_host_cpu zen4 = *nc_jit_cpu(aot);
  zen4.avx512f = zen4.avx512bf16 = true;
  nc_gemm_knobs def = nc_gemm_bf16_knobs_default(&zen4);
  enum { M = 50, N = 200, K = 1600 };
  uint16_t *a = malloc(sizeof(uint16_t) * M * K), *b = malloc(sizeof(uint16_t) * K * N), *c = malloc(sizeof(uint16_t) * M * N);
  float *cw = malloc(sizeof(float) * M * N);
  cr_assert(a && b && c && cw);
  uint64_t r = 7;
  for (int i = 0; i < M * K; i++) a[i] = nc_f32_to_bf16((float)(2 * nct_uniform(&r) - 1));
  for (int i = 0; i < K * N; i++) b[i] = nc_f32_to_bf16((float)(2 * nct_uniform(&r) - 1));
  int ncomp = 0;
  for (int i = 0; i < sp->nknobs; i++)
    for (int v = 0; v < sp->knobs[i].nsearch; v++) {
      nc_gemm_knobs kn;
      cr_assert(valid_combo(sp, &def, i, sp->knobs[i].search[v], &kn));
      if (!memcmp(&kn, &def, sizeof kn) && ncomp) continue;
      bool ta = ncomp & 2, tb = ncomp & 1;  // every transpose combination in turn
      char name[48];
      snprintf(name, sizeof name, "bf16_knob_%d", ncomp++);
      nc_gemm_spec gs = {.name = name, .ta = ta, .tb = tb, .knobs = kn, .bf16_io = true};
      LLVMModuleRef m;
      cr_assert_null(nc_jit_module_new(aot, name, &m));
      nc_status st = nc_gemm_bf16_emit(m, &zen4, &gs);
      cr_assert_null(st, "%s=%d: %s", sp->knobs[i].name, sp->knobs[i].search[v], nc_status_msg(st));
      char *err = emit_for_zen4(m, zen4.triple);
      LLVMDisposeModule(m);
      cr_assert_null(err, "%s=%d (ta %d tb %d): %s", sp->knobs[i].name, sp->knobs[i].search[v], ta, tb, err);
      if (!run) continue;
      nc_gemm_fn fn;
      st = nc_gemm_bf16_compile(jit, &gs, &fn);
      cr_assert_null(st, "%s=%d: %s", sp->knobs[i].name, sp->knobs[i].search[v], nc_status_msg(st));
      float *work = aligned_alloc(64, (nc_gemm_bf16_workspace_size(&kn, 2) + 63) / 64 * 64);
      // cw: the fp32 shadow of C that K > kc needs for one rounding (codegen/gemm.h), as the runtime passes it
      nc_gemm_args ar = {.a = (const float *)a, .b = (const float *)b, .c = (float *)c, .m = M, .n = N, .k = K, .lda = ta ? M : K,
                         .ldb = tb ? K : N, .ldc = N, .batch = 1, .alpha = 1, .beta = 0, .work = work, .cw = cw};
      memset(c, 0xff, sizeof(uint16_t) * M * N);
      fn(&ar, 0, 2);  // both shares of a 2-thread split, one after the other
      fn(&ar, 1, 2);
      free(work);
      double worst = 0;
      for (int q = 0; q < 300; q++) {
        int ii = q < 2 ? (q ? M - 1 : 0) : (int)(nct_randint(&r, 0, M)), jj = q < 2 ? (q ? N - 1 : 0) : (int)(nct_randint(&r, 0, N));
        double acc = 0, bound = 0;
        for (int kk = 0; kk < K; kk++) {
          double x = nc_bf16_to_f32(a[ta ? kk * M + ii : ii * K + kk]), y = nc_bf16_to_f32(b[tb ? jj * K + kk : kk * N + jj]);
          acc += x * y, bound += fabs(x * y);
        }
        double got = nc_bf16_to_f32(c[ii * N + jj]), e = fabs(got - acc) / (1e-5 * bound + fabs(acc) / 256 + 1e-6);
        if (!isfinite(got)) e = INFINITY;
        if (e > worst) worst = e;
      }
      cr_assert_leq(worst, 1.0, "%s=%d (ta %d tb %d): error %.3g x tolerance", sp->knobs[i].name, sp->knobs[i].search[v], ta, tb, worst);
    }
  cr_assert_gt(ncomp, 20);
  free(a), free(b), free(c), free(cw);
  nc_jit_free(jit);
  nc_jit_free(aot);
}

// The tuner over ReLU^2, addend (symmetric too) and bf16 shapes: timed with their epilogue, checked
// against the reference with it, new signatures; the break hook rejects every non-default candidate.
Test(tune, cpu_tuning_run_epilogue_and_bf16_shapes, .timeout = 300) {
  char db_path[600];
  tpath(db_path, sizeof db_path, "epi.json");
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(db_path, false, &db));
  bool bf = host_has_bf16();
  nc_tune_shape shapes[4] = {{.variant = 16 + 1, .batch = 1, .m = TM, .n = TN, .k = TK, .count = 2},   // ReLU^2 (x w^T)
                             {.variant = 20 + 1, .batch = 2, .m = 33, .n = TN, .k = 400, .count = 1},  // addend, two K blocks
                             {.variant = 24 + 1, .batch = 1, .m = 40, .n = 40, .k = 24, .count = 1},   // X X^T + E (sym)
                             {.variant = 8 + 1, .batch = 1, .m = TM, .n = 130, .k = 900, .count = 1}}; // bf16 buffers
  int n = bf ? 4 : 3;
  nc_tune_result res[4];
  nc_tune_opts o = {.dev = {.kind = NC_DEV_CPU, .threads = 2}, .budget_s = 10.0};
  nc_status st = nc_tune_run(shapes, n, &o, db, res);
  if (st && nc_status_code(st) == NC_E_UNSUPPORTED) {
    nc_status_free(st);
    nc_tunedb_free(db);
    cr_skip_test("no LLVM");
  }
  cr_assert_null(st, "%s", nc_status_msg(st));
  const char *want[4] = {"cpu.gemm_f32 ta=0 tb=1 sym=0 vw=", "cpu.gemm_f32 ta=0 tb=1 sym=0 vw=", "cpu.gemm_f32 ta=0 tb=1 sym=1 vw=",
                         "cpu.gemm_bf16 ta=0 tb=1 vw=16 threads=2"};
  const char *tail[4] = {"threads=2 epi=relu2", "threads=2 epi=addend", "threads=2 epi=addend", "threads=2"};
  for (int i = 0; i < n; i++) {
    cr_assert(res[i].tuned, "shape %d tuned", i);
    cr_assert_eq(res[i].rejected, 0, "shape %d: no correct candidate is rejected", i);
    cr_assert(strstr(res[i].kernel, want[i]) == res[i].kernel && strlen(res[i].kernel) >= strlen(tail[i]) &&
                  !strcmp(res[i].kernel + strlen(res[i].kernel) - strlen(tail[i]), tail[i]),
              "%s", res[i].kernel);
  }
  cr_assert_eq(nc_tunedb_count(db), n);
  nc_tunedb_free(db);
  // every non-default candidate corrupted: all rejected, the defaults win
  cr_assert_null(nc_tunedb_load(db_path, false, &db));
  o.break_candidates = true;
  o.budget_s = 2.0 * n;
  o.seed = 7;
  cr_assert_null(nc_tune_run(shapes, n, &o, db, res));
  for (int i = 0; i < n; i++) {
    cr_assert_gt(res[i].rejected, 0, "shape %d: candidates tried %d", i, res[i].tried);
    cr_assert(res[i].is_default, "shape %d", i);
    cr_assert_eq(res[i].tried, res[i].rejected + 1, "shape %d: %d tried, %d rejected", i, res[i].tried, res[i].rejected);
  }
  nc_tunedb_free(db);
}

enum { RN = 29, BN = 41 };
static nc_graph *addend_graph(void) {  // y = x w^T + r: the addend (alpha 1, beta 1)
  nc_graph *g = nc_graph_new("tune_add");
  nc_dim dx[2] = {nc_dim_const(TM), nc_dim_const(TK)}, dw[2] = {nc_dim_const(TN), nc_dim_const(TK)}, dr[2] = {nc_dim_const(TM), nc_dim_const(TN)};
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 2, dx));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_F32, 2, dw));
  nc_id r = nc_leaf(g, NC_OP_PARAM, "r", nc_type_make(NC_F32, 2, dr));
  cr_assert_null(nc_graph_set_output(g, "y", nc_op2(g, NC_OP_ADD, nc_b_matmul(g, x, w, false, true), r)));
  cr_assert_null(nc_graph_take_error(g));
  return g;
}
static nc_graph *relu2_graph(void) {  // y = relu(x w^T)^2: the ReLU^2 epilogue
  nc_graph *g = nc_graph_new("tune_relu2");
  nc_dim dx[2] = {nc_dim_const(TM), nc_dim_const(TK)}, dw[2] = {nc_dim_const(RN), nc_dim_const(TK)};
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 2, dx));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_F32, 2, dw));
  cr_assert_null(nc_graph_set_output(g, "y", nc_op1(g, NC_OP_SQUARE, nc_op1(g, NC_OP_RELU, nc_b_matmul(g, x, w, false, true)))));
  cr_assert_null(nc_graph_take_error(g));
  return g;
}
static nc_graph *bf16_graph(void) {  // y = x w^T in bf16 buffers: the bf16 GEMM
  nc_graph *g = nc_graph_new("tune_bf16");
  nc_dim dx[2] = {nc_dim_const(TM), nc_dim_const(TK)}, dw[2] = {nc_dim_const(BN), nc_dim_const(TK)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_BF16, 2, dx));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_BF16, 2, dw));
  cr_assert_null(nc_graph_set_output(g, "y", nc_b_matmul(g, x, w, false, true)));
  cr_assert_null(nc_graph_take_error(g));
  return g;
}
static const gemm_case addend_case = {"addend", addend_graph, 20 + 1, TM, TN, TK, 3, {"x", "w", "r"}, NC_F32, {{TM, TK}, {TN, TK}, {TM, TN}}, 1e-5};
static const gemm_case relu2_case = {"relu2", relu2_graph, 16 + 1, TM, RN, TK, 2, {"x", "w"}, NC_F32, {{TM, TK}, {RN, TK}}, 1e-5};
static const gemm_case bf16_case = {"bf16", bf16_graph, 8 + 1, TM, BN, TK, 2, {"x", "w"}, NC_BF16, {{TM, TK}, {BN, TK}}, 1e-2};

Test(tune, cpu_compile_uses_entries_for_epilogue_and_bf16_launches, .timeout = 300) {
  char db_path[600];
  tpath(db_path, sizeof db_path, "cpu_epi.json");
  bool bf = host_has_bf16();
  const gemm_case *cases[3] = {&relu2_case, &addend_case, &bf16_case};
  int n = bf ? 3 : 2;
  nc_gemm_knobs kn;
  // (the bf16 case too without AVX512_BF16: its matmul then runs the fp32 GEMM on widened copies)
  for (int i = 0; i < 3; i++) cr_assert_not(cpu_compile_and_check_case(db_path, cases[i], &kn), "%s: no database: defaults", cases[i]->what);
  const char *good[3] = {"{\"mr\": 4, \"nr\": 32, \"kc\": 16, \"mc\": 48, \"nc\": 96, \"ku\": 2, \"order\": 0}",
                         "{\"mr\": 8, \"nr\": 16, \"kc\": 32, \"mc\": 48, \"nc\": 64, \"ku\": 1, \"order\": 0}",
                         "{\"mr\": 4, \"nr\": 32, \"kc\": 16, \"mc\": 48, \"nc\": 96, \"ku\": 2, \"order\": 0}"};
  write_cpu_entries(db_path, NULL, cases, good, n);
  for (int i = 0; i < n; i++) {
    cr_assert(cpu_compile_and_check_case(db_path, cases[i], &kn), "%s: the entry is used", cases[i]->what);
    cr_assert(kn.mr == (i == 1 ? 8 : 4) && kn.kc == (i == 1 ? 32 : 16) && kn.order == 0, "%s: mr %d kc %d", cases[i]->what, kn.mr, kn.kc);
  }
  cr_assert_not(cpu_compile_and_check(db_path, &kn), "the plain GEMM of the addend's shape keeps its defaults (its own signature)");
  // stale or invalid entries: warned about, the defaults run
  write_cpu_entries(db_path, "LLVM 0.1-old", cases, good, n);
  for (int i = 0; i < n; i++) cr_assert_not(cpu_compile_and_check_case(db_path, cases[i], &kn), "%s: another driver", cases[i]->what);
  if (bf) {
    const char *bad[2] = {"{\"kc\": 33}", "{\"vw\": 8}"};
    for (int i = 0; i < 2; i++) {
      write_cpu_entries(db_path, NULL, &cases[2], &bad[i], 1);
      cr_assert_not(cpu_compile_and_check_case(db_path, &bf16_case, &kn), "bf16 %s: ignored", bad[i]);
      nc_gemm_knobs def = nc_gemm_bf16_knobs_default(NULL);
      cr_assert_eq(memcmp(&kn, &def, sizeof kn), 0, "the bf16 defaults run");
    }
  }
}

// ---- OpenCL (PoCL): tuning, and the program picks the entry up ------------------------
#define NEED_OPENCL()                                   \
  do {                                                  \
    if (!nc_ocl_available()) cr_skip_test("no OpenCL"); \
  } while (0)

Test(tune, ocl_tuning_run_and_compile_pick_up_entries) {
  NEED_OPENCL();
  char db_path[600];
  tpath(db_path, sizeof db_path, "ocl.json");
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(db_path, false, &db));
  nc_tune_shape sh = {.variant = 1, .batch = 1, .m = TM, .n = TN, .k = TK, .count = 1};
  nc_tune_result res;
  nc_tune_opts o = {.dev = {.kind = NC_DEV_OPENCL}, .budget_s = 3.0};
  cr_assert_null(nc_tune_run(&sh, 1, &o, db, &res));
  cr_assert(res.tuned);
  cr_assert_eq(res.rejected, 0);
  cr_assert(strstr(res.kernel, "ocl.gemm_f32 ta=0 tb=1"), "%s", res.kernel);
  cr_assert_eq(nc_tunedb_count(db), 1);
  const nc_tune_entry *e = nc_tunedb_entry(db, 0);
  nc_ocl_device_desc d;
  cr_assert_null(nc_ocl_select("", &d));
  char device[192], driver[192];
  nc_tune_ocl_ids(&d, device, sizeof device, driver, sizeof driver);
  cr_assert_str_eq(e->device, device);
  cr_assert_str_eq(e->driver, driver);
  {  // the next program for a plan with that GEMM runs the recorded winner
    cr_assert_null(nc_tunedb_save(db, db_path));
    nc_ocl_knobs want, got;
    nc_ocl_knobs_default(d.gpu, &want);
    cr_assert_null(nc_tune_entry_apply(e, &nc_ocl_gemm_knob_space, &want));
    setenv("NC_TUNE_DB", db_path, 1);
    nc_graph *g1 = matmul_graph(TM, TN, TK);
    nc_plan *p1 = plan_of(g1);
    nc_ocl_opts oo1 = {.select = ""};
    nc_ocl *c1 = NULL;
    cr_assert_null(nc_ocl_compile(p1, &oo1, &c1));
    bool tuned = nc_ocl_gemm_knobs_for(c1, 1, 1, TM, TN, TK, &got);
    cr_assert_eq(tuned, !res.is_default, "tuned %d, default won %d", tuned, res.is_default);
    cr_assert_eq(memcmp(&got, &want, sizeof got), 0, "the launch runs the database's knobs");
    nc_ocl_free(c1);
    nc_plan_free(p1);
    nc_graph_free(g1);
    unsetenv("NC_TUNE_DB");
  }
  // a wrong candidate is rejected on this backend too
  o.break_candidates = true;
  o.budget_s = 2.5;
  cr_assert_null(nc_tune_run(&sh, 1, &o, db, &res));
  cr_assert_gt(res.rejected, 0);
  cr_assert(res.is_default);
  nc_tunedb_free(db);

  // an entry with non-default knobs: the program gets a kernel for exactly this shape
  char text[2048];
  snprintf(text, sizeof text,
           GOOD_HEAD "{\"device\": \"%s\", \"driver\": \"%s\", \"kernel\": \"ocl.gemm_f32 ta=0 tb=1\", \"shape\": \"batch=1 m=%d n=%d k=%d\", "
                     "\"knobs\": {\"gemm_tm\": 16, \"gemm_tn\": 64, \"gemm_tk\": 8, \"gemm_wm\": 2, \"gemm_wn\": 8}, \"time_us\": 1, \"default_time_us\": 2}]}",
           device, driver, TM, TN, TK);
  write_text(db_path, text);
  setenv("NC_TUNE_DB", db_path, 1);
  nc_graph *g = matmul_graph(TM, TN, TK);
  nc_plan *p = plan_of(g);
  nc_ocl_opts oo = {.select = ""};
  nc_ocl *c = NULL;
  cr_assert_null(nc_ocl_compile(p, &oo, &c));
  cr_assert_eq(nc_ocl_tuned_count(c), 1);
  nc_ocl_knobs kn;
  cr_assert(nc_ocl_gemm_knobs_for(c, 1, 1, TM, TN, TK, &kn));
  cr_assert_eq(kn.gemm_tm, 16);
  cr_assert_eq(kn.gemm_wn, 8);
  cr_assert_not(nc_ocl_gemm_knobs_for(c, 1, 1, TM + 1, TN, TK, &kn), "other shapes: defaults");
  nc_tensor in[2], got, want;
  fill_feeds(in, TM, TN, TK);
  nc_feed feeds[2] = {{"x", &in[0]}, {"w", &in[1]}};
  cr_assert_null(nc_ocl_run(c, g, p, feeds, 2, &got));
  cr_assert_null(nc_interp_run(g, feeds, 2, &want));
  cr_assert_lt(max_rel_err(&got, &want), 1e-5);
  nc_tensor_free(&got);
  nc_tensor_free(&want);
  nc_ocl_free(c);
  // a knob out of its template's limits (work-group over 1024): ignored
  snprintf(text, sizeof text,
           GOOD_HEAD "{\"device\": \"%s\", \"driver\": \"%s\", \"kernel\": \"ocl.gemm_f32 ta=0 tb=1\", \"shape\": \"batch=1 m=%d n=%d k=%d\", "
                     "\"knobs\": {\"gemm_tm\": 256, \"gemm_tn\": 256, \"gemm_wm\": 1, \"gemm_wn\": 1}, \"time_us\": 1, \"default_time_us\": 2}]}",
           device, driver, TM, TN, TK);
  write_text(db_path, text);
  cr_assert_null(nc_ocl_compile(p, &oo, &c));
  cr_assert_eq(nc_ocl_tuned_count(c), 0);
  nc_ocl_free(c);
  unsetenv("NC_TUNE_DB");
  nc_tensor_free(&in[0]);
  nc_tensor_free(&in[1]);
  nc_plan_free(p);
  nc_graph_free(g);
}

// ---- the pipelined bf16 GEMM (ocl.gemm_bf16p): knobs, tuning, per-shape kernels -------------
Test(tune, pipelined_bf16_knob_space_and_check) {
  const nc_knob_space *sp = &nc_ocl_tcp_knob_space;
  cr_assert_eq(nc_knob_space_find("ocl.gemm_bf16p"), sp);
  nc_ocl_knobs k;
  for (int gpu = 0; gpu < 2; gpu++) {  // the tuner's starting points are valid
    nc_ocl_tcp_emulated_default(gpu, &k);
    cr_assert_null(nc_knob_check(sp, &k));
    nc_ocl_knobs w = k;
    w.gemm_tc = 1;
    nc_ocl_wgmma_default(&w);  // the Hopper default
    cr_assert_null(nc_knob_check(sp, &w));
  }
  nc_ocl_tcp_emulated_default(false, &k);
  struct {
    const char *knob;
    int value;
    const char *want;
  } bad[] = {
      {"tc_stages", 0, "needs a ring"},     // the register-staged kernel is another space
      {"tc_stages", 9, "outside"},          // the range
      {"tc_wg", 3, "outside"},              // the range
      {"tc_wg", 1, "tc_bm=32"},             // wgmma: 64 rows per warpgroup
      {"tc_bk", 16, "tc_bk=16"},            // mma.sync ring: k-step 32 or 64
      {"tc_bm", 256, "tiles must split"},   // the mma.sync tiling: 32x(256/16)x(32/16) work-items ...
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    nc_ocl_knobs b = k;
    nc_knob_set(sp, &b, nc_knob_find(sp, bad[i].knob), bad[i].value);
    nc_status st = nc_knob_check(sp, &b);
    cr_assert_not_null(st, "%s=%d accepted", bad[i].knob, bad[i].value);
    nc_status_free(st);
  }
  nc_ocl_knobs w = k;  // an emulated wgmma set: valid
  w.tc_wg = 1, w.tc_bm = 64, w.tc_bn = 64, w.tc_bk = 32, w.tc_stages = 3;
  cr_assert_null(nc_knob_check(sp, &w));
  w.tc_stages = 8, w.tc_bm = 256, w.tc_bn = 256, w.tc_bk = 64;  // a ring of 512 KiB
  nc_status st = nc_knob_check(sp, &w);
  cr_assert(st && strstr(nc_status_msg(st), "local memory"), "%s", st ? nc_status_msg(st) : "accepted");
  nc_status_free(st);
  char kname[128];
  nc_tune_ocl_pkernel(1, 2, kname, sizeof kname);
  cr_assert_str_eq(kname, "ocl.gemm_bf16p ta=0 tb=1 mode=2");
}

// One PoCL compilation of x w^T (TM x TN x TK) with the emulated pipelined GEMM and the database at
// db_path: how many tuned shapes it took, the knobs of TM x TN x TK's launch (*kn), how many launches
// ran a tuned kernel, and its output against the interpreter (bf16 operands: 1e-2).
static int bf16p_compile_and_check(const char *db_path, nc_ocl_knobs *kn, int64_t *calls) {
  setenv("NC_TUNE_DB", db_path, 1);
  nc_ocl_knobs def;
  nc_ocl_tcp_emulated_default(false, &def);
  nc_graph *g = matmul_graph(TM, TN, TK);
  nc_plan *p = plan_of(g);
  nc_ocl_opts oo = {.select = "", .knobs = &def, .knobs_tuned = true};
  nc_ocl *c = NULL;
  cr_assert_null(nc_ocl_compile(p, &oo, &c));
  int n = nc_ocl_tuned_count(c);
  nc_ocl_gemm_knobs_for(c, 1, 1, TM, TN, TK, kn);
  nc_tensor in[2], got, want;
  fill_feeds(in, TM, TN, TK);
  nc_feed feeds[2] = {{"x", &in[0]}, {"w", &in[1]}};
  cr_assert_null(nc_ocl_run(c, g, p, feeds, 2, &got));
  cr_assert_null(nc_interp_run(g, feeds, 2, &want));
  cr_assert_lt(max_rel_err(&got, &want), 1e-2);
  *calls = nc_ocl_tuned_calls(c);
  nc_tensor_free(&got);
  nc_tensor_free(&want);
  nc_tensor_free(&in[0]);
  nc_tensor_free(&in[1]);
  nc_ocl_free(c);
  nc_plan_free(p);
  nc_graph_free(g);
  unsetenv("NC_TUNE_DB");
  return n;
}

static void write_bf16p_entry(const char *db_path, const char *knobs) {
  nc_ocl_device_desc d;
  cr_assert_null(nc_ocl_select("", &d));
  char device[192], driver[192], text[2048];
  nc_tune_ocl_ids(&d, device, sizeof device, driver, sizeof driver);
  snprintf(text, sizeof text,
           GOOD_HEAD "{\"device\": \"%s\", \"driver\": \"%s\", \"kernel\": \"ocl.gemm_bf16p ta=0 tb=1 mode=2\", \"shape\": \"batch=1 m=%d n=%d "
                     "k=%d\", \"knobs\": %s, \"time_us\": 1, \"default_time_us\": 2}]}",
           device, driver, TM, TN, TK, knobs);
  write_text(db_path, text);
}

Test(tune, ocl_pipelined_bf16_tuning_and_per_shape_kernels) {
  NEED_OPENCL();
  char db_path[600];
  tpath(db_path, sizeof db_path, "bf16p.json");
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(db_path, false, &db));
  nc_tune_shape sh = {.variant = 1, .batch = 1, .m = TM, .n = TN, .k = TK, .count = 1};
  nc_tune_result res;
  nc_tune_opts o = {.dev = {.kind = NC_DEV_OPENCL, .matmul_bf16 = true}, .budget_s = 4.0};
  // the mode of the device the tuner takes (the first): 1, the tensor cores of an NVIDIA card; 2, the
  // emulated pipelined kernel elsewhere (PoCL), which the rest of this test compiles and checks
  nc_ocl_device_desc dd;
  cr_assert_null(nc_ocl_select("", &dd));
  int mode = strstr(dd.vendor, "NVIDIA") || strstr(dd.platform_vendor, "NVIDIA") ? 1 : 2;
  char want_kernel[64];
  nc_tune_ocl_pkernel(1, mode, want_kernel, sizeof want_kernel);
  cr_assert_null(nc_tune_run(&sh, 1, &o, db, &res));
  cr_assert(res.tuned);
  cr_assert_eq(res.rejected, 0, "%d candidates rejected", res.rejected);
  cr_assert_gt(res.tried, 1);
  cr_assert_str_eq(res.kernel, want_kernel, "on %s", dd.name);
  cr_assert_eq(nc_tunedb_count(db), 1);
  cr_assert(strstr(res.knobs, "tc_stages="), "%s", res.knobs);
  cr_assert_null(nc_tunedb_save(db, db_path));
  if (mode == 2) {  // the recorded winner is what the next compilation launches for this shape
    nc_ocl_knobs want, got;
    nc_ocl_tcp_emulated_default(false, &want);
    cr_assert_null(nc_tune_entry_apply(nc_tunedb_entry(db, 0), &nc_ocl_tcp_knob_space, &want));
    int64_t calls;
    int n = bf16p_compile_and_check(db_path, &got, &calls);
    cr_assert_eq(n, res.is_default ? 0 : 1);
    cr_assert_eq(memcmp(&got, &want, sizeof got), 0, "the launch runs the database's knobs");
    cr_assert_eq(calls, res.is_default ? 0 : 1);
  }
  o.break_candidates = true;  // the test hook: every non-default candidate is wrong
  o.budget_s = 2.5;
  cr_assert_null(nc_tune_run(&sh, 1, &o, db, &res));
  cr_assert_gt(res.rejected, 0);
  cr_assert_eq(res.rejected, res.tried - 1);
  cr_assert(res.is_default);
  nc_tunedb_free(db);
  if (mode != 2) return;  // what follows compiles the emulated kernel (mode=2 entries, emulated defaults)

  // hand-written entries: the emulated wgmma kernel and an mma.sync ring, each emitted under its own
  // names and launched for exactly this shape (a counter), with the interpreter's result
  const char *sets[] = {"{\"tc_wg\": 1, \"tc_bm\": 64, \"tc_bn\": 64, \"tc_bk\": 32, \"tc_stages\": 3}",
                        "{\"tc_bm\": 64, \"tc_bn\": 32, \"tc_bk\": 64, \"tc_stages\": 3}"};
  for (int i = 0; i < 2; i++) {
    write_bf16p_entry(db_path, sets[i]);
    nc_ocl_knobs kn;
    int64_t calls;
    cr_assert_eq(bf16p_compile_and_check(db_path, &kn, &calls), 1, "set %d", i);
    cr_assert_eq(kn.tc_bm, 64);
    cr_assert_eq(kn.tc_wg, i == 0 ? 1 : 0);
    cr_assert_eq(kn.tc_stages, 3);
    cr_assert_eq(calls, 1, "set %d: the tuned kernel ran", i);
  }
  // bad entries are ignored with a warning: the template's check (wgmma needs 64-row blocks), a fixed knob
  const char *bad[] = {"{\"tc_wg\": 1, \"tc_bm\": 32}", "{\"tc_wm\": 32}", "{\"tc_stages\": 0}"};
  for (int i = 0; i < 3; i++) {
    write_bf16p_entry(db_path, bad[i]);
    nc_tunedb *d2;
    cr_assert_null(nc_tunedb_load(db_path, false, &d2));
    nc_tunedb_free(d2);
    nc_ocl_knobs kn;
    int64_t calls;
    cr_assert_eq(bf16p_compile_and_check(db_path, &kn, &calls), 0, "bad entry %d used", i);
    cr_assert_eq(calls, 0);
    cr_assert_eq(kn.tc_stages, 2, "defaults");
  }
  // without explicit knobs_tuned, explicit knobs keep the database off
  write_bf16p_entry(db_path, sets[0]);
  setenv("NC_TUNE_DB", db_path, 1);
  nc_ocl_knobs def;
  nc_ocl_tcp_emulated_default(false, &def);
  nc_graph *g = matmul_graph(TM, TN, TK);
  nc_plan *p = plan_of(g);
  nc_ocl_opts oo = {.select = "", .knobs = &def};
  nc_ocl *c = NULL;
  cr_assert_null(nc_ocl_compile(p, &oo, &c));
  cr_assert_eq(nc_ocl_tuned_count(c), 0);
  nc_ocl_free(c);
  nc_plan_free(p);
  nc_graph_free(g);
  unsetenv("NC_TUNE_DB");
}

// ---- the command line ------------------------------------------------------------------
// `nanochat tune ARGS`
static int run_cli(const char *args, char *out, size_t n) {
  char a[1900];
  snprintf(a, sizeof a, "tune %s", args);
  return nc_test_cli(a, out, n);
}

Test(tune, cli_bad_input_gives_clear_errors) {
  char out[8192];
  struct {
    const char *args, *want;
  } cases[] = {
      {"", "missing SPEC"},
      {"models/specs/tiny.xml --budget abc", "--budget wants seconds"},
      {"models/specs/tiny.xml --budget -3", "--budget wants seconds"},
      {"models/specs/tiny.xml --budget 0", "--budget wants seconds"},
      {"models/specs/tiny.xml --device quantum", "quantum"},
      {"models/specs/tiny.xml --device interp", "no tunable kernels"},
      {"models/specs/tiny.xml --batch 0", "--batch wants"},
      {"models/specs/tiny.xml --seq 999", "exceeds the spec's sequence_len"},
      {"models/specs/tiny.xml --precision fp8", "fp8"},
      {"models/specs/tiny.xml --device cpu:avx2 --precision bf16", "no AVX512_BF16"},
      {"models/specs/nope.xml", "nope.xml"},
      {"models/specs/tiny.xml extra", "unexpected argument 'extra'"},
      {"--frobnicate", "usage"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int rc = run_cli(cases[i].args, out, sizeof out);
    cr_assert(rc > 0 && rc < 128, "'%s': exit %d", cases[i].args, rc);
    cr_assert(strstr(out, cases[i].want), "'%s': want '%s' in:\n%s", cases[i].args, cases[i].want, out);
  }
}

Test(tune, cli_tiny_run_writes_the_database) {
  char out[16384], args[1024], db_path[600];
  tpath(db_path, sizeof db_path, "cli.json");
  snprintf(args, sizeof args, "models/specs/tiny.xml --batch 1 --seq 8 --budget 1.5 --threads 1 --db '%s'", db_path);
  int rc = run_cli(args, out, sizeof out);
  cr_assert_eq(rc, 0, "%s", out);
  cr_assert(strstr(out, "tuning ") && strstr(out, "entries written to"), "%s", out);
  nc_tunedb *db;
  cr_assert_null(nc_tunedb_load(db_path, false, &db));
  cr_assert_gt(nc_tunedb_count(db), 0);
  cr_assert_eq(nc_tunedb_nwarnings(db), 0);
  cr_assert(strstr(nc_tunedb_entry(db, 0)->kernel, "threads=1"), "%s", nc_tunedb_entry(db, 0)->kernel);
  nc_tunedb_free(db);
  // --list prints the shapes without tuning
  rc = run_cli("models/specs/tiny.xml --batch 1 --seq 8 --list", out, sizeof out);
  cr_assert_eq(rc, 0, "%s", out);
  cr_assert(strstr(out, "GEMM shapes in the training step") && strstr(out, "fp32 ta=0 tb=1 sym=0 epi=none batch=1 m=8"), "%s", out);
  cr_assert(strstr(out, "epi=relu2") && strstr(out, "epi=addend"), "the epilogue GEMMs are listed:\n%s", out);
  // --precision bf16: the bf16 model's GEMMs (bf16 buffers), tuned where the CPU has AVX512_BF16
  rc = run_cli("models/specs/tiny.xml --batch 1 --seq 8 --precision bf16 --list", out, sizeof out);
  if (!host_has_bf16()) {
    cr_assert(rc == 2 && strstr(out, "no AVX512_BF16"), "%s", out);
    return;
  }
  cr_assert_eq(rc, 0, "%s", out);
  cr_assert(strstr(out, "bf16 ta=0 tb=1 sym=0 epi=none batch=1 m=8"), "%s", out);
  // batch 16 x seq 16: the bf16 model's GEMMs outgrow the fp32 ones (Muon's) and are tuned first (the
  // tuner goes by work); at batch 1 x seq 8 a 16-core host spent the budget before reaching them
  snprintf(args, sizeof args, "models/specs/tiny.xml --batch 16 --seq 16 --precision bf16 --budget 4 --threads 1 --db '%s'", db_path);
  rc = run_cli(args, out, sizeof out);
  cr_assert_eq(rc, 0, "%s", out);
  cr_assert_null(nc_tunedb_load(db_path, false, &db));
  int nbf = 0;
  for (int i = 0; i < nc_tunedb_count(db); i++) nbf += strstr(nc_tunedb_entry(db, i)->kernel, "cpu.gemm_bf16 ta=") == nc_tunedb_entry(db, i)->kernel;
  cr_assert_gt(nbf, 0, "bf16 entries written:\n%s", out);
  nc_tunedb_free(db);
}
