// nanochat compile end to end: help, usage errors, bad files, unwritable
// folders (exit codes 1..127, messages naming the culprit), and a small graph
// compiled into a complete plan folder. Linking and running a compiled plan
// is tests/aot/test_aot.c.
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];
static char out[1 << 16];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/nc_compile_cli_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}
static void teardown(void) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "chmod -R u+w '%s'; rm -rf '%s'", tmpdir, tmpdir);
  cr_assert_eq(system(cmd), 0);
}

// Runs "nanochat ARGS" from the source dir; returns the exit code, output in out.
static int nc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int nc(const char *fmt, ...) {
  char args[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  const char *b = getenv("NC_BUILD_DIR"), *s = getenv("NC_SOURCE_DIR");
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s/cli/nanochat' %s 2>&1", s ? s : ".", b ? b : "build", args);
  FILE *p = popen(cmd, "r");
  cr_assert_not_null(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  int st = pclose(p);
  cr_assert(WIFEXITED(st), "nanochat %s did not exit normally (signal?): %s", args, out);
  return WEXITSTATUS(st);
}

static void expect_fail(int rc, const char *words) {
  cr_expect(rc > 0 && rc < 128, "exit %d (want 1..127): %s", rc, out);
  cr_expect(strstr(out, words), "output lacks '%s':\n%s", words, out);
}

static void write_file(const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
  fclose(f);
}

// in canonical form (printing it again gives the same bytes)
static const char *small_graph =
    "// nanochat-c IR v1\n"
    "graph \"small\" (B) {\n"
    "  %0 = input \"x\" : f32[B,8]\n"
    "  %1 = param \"w\" : f32[4,8]\n"
    "  %2 = matmul(%0, %1) {ta=false, tb=true} : f32[B,4]\n"
    "  %3 = relu(%2) : f32[B,4]\n"
    "  output \"y\" = %3\n"
    "}\n";

TestSuite(compile_cli, .init = setup, .fini = teardown);

Test(compile_cli, help_and_usage) {
  cr_assert_eq(nc("compile --help"), 0, "%s", out);
  cr_expect(strstr(out, "usage: nanochat compile") && strstr(out, "manifest.json") && strstr(out, "--train"), "%s", out);
  cr_assert_eq(nc("--help"), 0);
  cr_expect(strstr(out, "compile"), "the command list lacks compile: %s", out);
  cr_expect_eq(nc("compile"), 2);
  cr_expect(strstr(out, "exactly one FILE"), "%s", out);
  cr_expect_eq(nc("compile models/specs/tiny.xml"), 2);
  cr_expect(strstr(out, "-o DIR is required"), "%s", out);
  cr_expect_eq(nc("compile a.xml b.xml -o %s/x", tmpdir), 2);
  cr_expect(strstr(out, "exactly one FILE"), "%s", out);
  cr_expect_eq(nc("compile --frobnicate models/specs/tiny.xml -o %s/x", tmpdir), 2);
  cr_expect(strstr(out, "usage"), "%s", out);
}

Test(compile_cli, bad_files) {
  expect_fail(nc("compile %s/missing.ncir -o %s/out", tmpdir, tmpdir), "missing.ncir");
  write_file("garbage.ncir", "graph \"x\" { %0 = frob() : f32[] }");
  expect_fail(nc("compile %s/garbage.ncir -o %s/out", tmpdir, tmpdir), "garbage.ncir");
  write_file("small.ncir", small_graph);
  expect_fail(nc("compile %s/small.ncir --train -o %s/out", tmpdir, tmpdir), "--train needs a model spec");
  write_file("bad_spec.xml", "<model version=\"1\" name=\"x\"><dims depth=\"-3\"/></model>");
  expect_fail(nc("compile %s/bad_spec.xml -o %s/out", tmpdir, tmpdir), "bad_spec.xml");
  // nothing was written for failed compiles
  char path[512];
  snprintf(path, sizeof path, "%s/out/manifest.json", tmpdir);
  cr_expect_neq(access(path, F_OK), 0, "a failed compile left %s", path);
}

Test(compile_cli, bad_output_folders) {
  write_file("small.ncir", small_graph);
  write_file("afile", "x");
  expect_fail(nc("compile %s/small.ncir -o %s/afile", tmpdir, tmpdir), "not a folder");
  expect_fail(nc("compile %s/small.ncir -o %s/no/such/dir", tmpdir, tmpdir), "cannot create the folder");
  if (geteuid() != 0) {  // root writes anywhere
    char ro[512];
    snprintf(ro, sizeof ro, "%s/ro", tmpdir);
    cr_assert_eq(mkdir(ro, 0555), 0);
    expect_fail(nc("compile %s/small.ncir -o %s", tmpdir, ro), "not writable");
  }
}

Test(compile_cli, a_small_graph_compiles_to_a_complete_folder) {
  write_file("small.ncir", small_graph);
  cr_assert_eq(nc("compile %s/small.ncir -o %s/plan", tmpdir, tmpdir), 0, "%s", out);
  cr_expect(strstr(out, "2 kernels"), "%s", out);
  const char *files[] = {"graph.ncir", "plan.o", "plan_symbols.c", "manifest.json"};
  char path[512];
  for (int i = 0; i < 4; i++) {
    snprintf(path, sizeof path, "%s/plan/%s", tmpdir, files[i]);
    struct stat sb;
    cr_expect(stat(path, &sb) == 0 && sb.st_size > 0, "%s missing or empty", path);
  }
  snprintf(path, sizeof path, "%s/plan/manifest.json", tmpdir);
  json_error_t e;
  json_t *m = json_load_file(path, 0, &e);
  cr_assert_not_null(m, "%s: %s", path, e.text);
  cr_expect_str_eq(json_string_value(json_object_get(m, "format")), "nanochat-aot");
  cr_expect_eq(json_integer_value(json_object_get(m, "kernels")), 2);
  cr_expect_str_eq(json_string_value(json_object_get(m, "graph_name")), "small");
  json_t *syms = json_object_get(m, "symbols");
  cr_expect(json_is_array(syms) && json_array_size(syms) == 2, "symbols: one kernel and one GEMM");
  json_decref(m);
  // the graph is the one given, byte for byte (text IR round-trips)
  snprintf(path, sizeof path, "%s/plan/graph.ncir", tmpdir);
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f);
  char buf[1024] = {0};
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  cr_expect(n == strlen(small_graph) && !memcmp(buf, small_graph, n), "graph.ncir differs:\n%s", buf);
  // compiling again over the folder replaces it (no temporary files left)
  cr_assert_eq(nc("compile %s/small.ncir -o %s/plan --avx2", tmpdir, tmpdir), 0, "%s", out);
  snprintf(path, sizeof path, "%s/plan", tmpdir);
  DIR *d = opendir(path);
  cr_assert_not_null(d);
  int nfiles = 0;
  for (struct dirent *de; (de = readdir(d));) {
    if (de->d_name[0] == '.') continue;
    nfiles++;
    cr_expect_null(strstr(de->d_name, ".tmp"), "temporary file left: %s", de->d_name);
  }
  closedir(d);
  cr_expect_eq(nfiles, 4);
  snprintf(path, sizeof path, "%s/plan/manifest.json", tmpdir);
  m = json_load_file(path, 0, &e);
  cr_assert_not_null(m);
  cr_expect(json_is_true(json_object_get(m, "avx2_only")));
  cr_expect_eq(json_integer_value(json_object_get(json_object_get(m, "gemm_knobs"), "vw")), 8);
  json_decref(m);
}
