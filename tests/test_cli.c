// The nanochat command end to end: help, exit codes, clear errors on bad
// input, init/forward/graph on real files. It runs the nanochat binary of its
// own build, so the ASan build checks the sanitized command.
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];
static char out[1 << 16];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/nc_cli_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}
static void teardown(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  cr_assert_eq(system(cmd), 0);
}

// Runs "nanochat ARGS" from the source dir; returns the exit code, output in out.
static int nc(const char *args) {
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

static void expect_fail(const char *args, const char *words) {
  int rc = nc(args);
  cr_expect(rc > 0 && rc < 128, "nanochat %s: exit %d (want 1..127): %s", args, rc, out);
  cr_expect(strstr(out, words), "nanochat %s: output lacks '%s':\n%s", args, words, out);
}

static void write_file(const char *name, const void *data, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(data, 1, n, f), n);
  fclose(f);
}

// A safetensors file with one or two i32 (2,4) tensors.
static void write_tokens(const char *name, const char *t1, const char *dtype, int32_t fill_bad) {
  char hdr[256];
  int32_t data[16];
  for (int i = 0; i < 16; i++) data[i] = i % 7;
  if (fill_bad) data[3] = fill_bad;
  int n = snprintf(hdr, sizeof hdr,
                   "{\"%s\":{\"dtype\":\"%s\",\"shape\":[2,4],\"data_offsets\":[0,32]},"
                   "\"targets\":{\"dtype\":\"I32\",\"shape\":[2,4],\"data_offsets\":[32,64]}}",
                   t1, dtype);
  while (n % 8) hdr[n++] = ' ';
  unsigned char buf[512];
  uint64_t len = (uint64_t)n;
  memcpy(buf, &len, 8);
  memcpy(buf + 8, hdr, (size_t)n);
  memcpy(buf + 8 + n, data, 64);
  write_file(name, buf, 8 + (size_t)n + 64);
}

TestSuite(cli, .init = setup, .fini = teardown);

Test(cli, help_and_usage_errors) {
  cr_assert_eq(nc("--help"), 0);
  cr_assert(strstr(out, "graph") && strstr(out, "init") && strstr(out, "forward"));
  expect_fail("", "usage");
  expect_fail("frobnicate", "unknown command 'frobnicate'");
  const char *subs[] = {"graph --help", "graph dump --help", "graph check --help", "init --help", "forward --help", "devices --help"};
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) cr_expect_eq(nc(subs[i]), 0, "%s: %s", subs[i], out);
  expect_fail("graph dump models/specs/tiny.xml --format pdf", "unknown --format 'pdf'");
  expect_fail("graph dump", "exactly one FILE");
  expect_fail("graph frob x", "unknown subcommand 'frob'");
  expect_fail("graph dump models/specs/tiny.xml --passes dce,nope", "unknown pass 'nope'");
  cr_expect_eq(nc("bench --help"), 0, "%s", out);
  cr_expect_eq(nc("bench train --help"), 0, "%s", out);
  cr_expect_eq(nc("bench compile --help"), 0, "%s", out);
  expect_fail("bench frob", "unknown benchmark 'frob'");
  expect_fail("bench train", "usage");
  expect_fail("bench train --spec models/specs/tiny.xml --batch 0", "--batch wants 1..4096");
  expect_fail("bench train --spec models/specs/tiny.xml --seq 99", "exceeds the spec's sequence_len 16");
  expect_fail("bench train --spec models/specs/tiny.xml --device tpu", "unknown device 'tpu'");
  expect_fail("bench compile --spec models/specs/tiny.xml --runs x", "--runs wants 1..100");
  expect_fail("bench train --spec models/specs/tiny.xml --batch 1 --seq 4 --steps 1 --device interp --trace /tmp/x.json",
              "tracing needs the cpu device");
}

#ifndef NC_SANITIZED
Test(cli, bench_trace_is_chrome_json) {
  char args[600], path[400];
  snprintf(path, sizeof path, "%s/trace.json", tmpdir);
  snprintf(args, sizeof args, "bench train --spec models/specs/tiny.xml --batch 2 --seq 16 --steps 1 --trace %s", path);
  cr_assert_eq(nc(args), 0, "%s", out);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  cr_assert(!strncmp(buf, "{\"traceEvents\":[", 16), "starts as a Chrome trace");
  cr_assert(strstr(buf, "\"ph\":\"X\"") && strstr(buf, "\"name\":\"k"), "has complete events");
  cr_assert(strstr(buf, "\"displayTimeUnit\":\"ms\"}"), "is closed");
  // No --peak on the cpu device: MFU against the FMA peak measured at start.
  const char *pk = strstr(out, "\"peak_gflops\":");
  cr_assert(pk && strstr(out, "(measured peak)"), "%s", out);
  double peak = strtod(pk + 14, NULL);
  cr_assert(peak > 1 && peak < 1e6, "a plausible measured peak: %g", peak);
}
#endif

Test(cli, bench_train_runs_on_the_interpreter) {
  cr_assert_eq(nc("bench train --spec models/specs/tiny.xml --batch 2 --seq 16 --steps 2 --device interp"), 0, "%s", out);
  cr_assert(strstr(out, "\"bench\":\"train\"") && strstr(out, "tokens_per_s"), "ends with the JSON line: %s", out);
  cr_assert(strstr(out, "MFU --") && strstr(out, "\"peak_gflops\":0.0"), "no peak on the interpreter: %s", out);
  cr_assert_eq(nc("bench train --spec models/specs/tiny.xml --batch 2 --seq 16 --steps 1 --device interp --peak 100"), 0, "%s", out);
  cr_assert(strstr(out, "of 100 GFLOP/s (given peak)") && strstr(out, "\"peak_gflops\":100.0"), "%s", out);
}

Test(cli, graph_on_specs_and_bad_files) {
  cr_assert_eq(nc("graph check models/specs/d4.xml"), 0, "%s", out);
  cr_assert(strstr(out, "params 26 tensors, 7340032 elements"), "%s", out);
  cr_assert_eq(nc("graph check models/specs/tiny.xml --train"), 0, "%s", out);
  cr_assert(strstr(out, "new.lm_head.weight") && strstr(out, "muon.momentum"), "%s", out);
  char args[600];
  snprintf(args, sizeof args, "graph dump models/specs/tiny.xml -o %s/tiny.ncir", tmpdir);
  cr_assert_eq(nc(args), 0, "%s", out);
  snprintf(args, sizeof args, "graph check %s/tiny.ncir", tmpdir);
  cr_assert_eq(nc(args), 0, "the dumped text IR reads back: %s", out);
  write_file("garbage.ncir", "graph \"x\" { %0 = frob() : f32[] }", 33);
  snprintf(args, sizeof args, "graph check %s/garbage.ncir", tmpdir);
  expect_fail(args, "garbage.ncir:1:");
  snprintf(args, sizeof args, "graph check %s/missing.ncir", tmpdir);
  expect_fail(args, "cannot open");
  write_file("bad_spec.xml", "<model version=\"1\"><dims depth=\"x\"/></model>", 44);
  snprintf(args, sizeof args, "graph check %s/bad_spec.xml", tmpdir);
  expect_fail(args, "attribute depth");
  snprintf(args, sizeof args, "graph dump %s/tiny.ncir --train", tmpdir);
  expect_fail(args, "--train needs a model spec");
}

Test(cli, init_and_forward) {
  char args[1024], a[512], b[512];
  snprintf(args, sizeof args, "init --spec models/specs/tiny.xml -o %s/ck --seed 5", tmpdir);
  cr_assert_eq(nc(args), 0, "%s", out);
  snprintf(args, sizeof args, "init --spec models/specs/tiny.xml -o %s/ck2 --seed 5", tmpdir);
  cr_assert_eq(nc(args), 0, "%s", out);
  snprintf(args, sizeof args, "cmp -s %s/ck/model_000000.safetensors %s/ck2/model_000000.safetensors", tmpdir, tmpdir);
  cr_assert_eq(system(args), 0, "same seed, same bytes");
  write_tokens("in.safetensors", "tokens", "I32", 0);
  snprintf(args, sizeof args, "forward --ckpt %s/ck --input %s/in.safetensors -o %s/out.safetensors", tmpdir, tmpdir, tmpdir);
  cr_assert_eq(nc(args), 0, "%s", out);
  cr_assert(strstr(out, "loss 4.158"), "zero lm_head at init: loss = ln(64): %s", out);
  snprintf(a, sizeof a, "%s/out.safetensors", tmpdir);
  struct stat sb;
  cr_assert_eq(stat(a, &sb), 0);
  cr_assert_gt(sb.st_size, 2 * 4 * 64 * 4, "logits are there");
  // bad inputs
  snprintf(args, sizeof args, "init -o %s/x", tmpdir);
  expect_fail(args, "usage");
  snprintf(args, sizeof args, "init --spec models/specs/tiny.xml -o %s/x --seed -3", tmpdir);
  expect_fail(args, "--seed wants an integer");
  snprintf(args, sizeof args, "init --spec /nonexistent.xml -o %s/x", tmpdir);
  expect_fail(args, "cannot open");
  snprintf(args, sizeof args, "forward --ckpt %s/nope --input %s/in.safetensors -o %s/o.st", tmpdir, tmpdir, tmpdir);
  expect_fail(args, "nope");
  write_tokens("wrongname.safetensors", "tokenz", "I32", 0);
  snprintf(args, sizeof args, "forward --ckpt %s/ck --input %s/wrongname.safetensors -o %s/o.st", tmpdir, tmpdir, tmpdir);
  expect_fail(args, "unexpected tensor 'tokenz'");
  write_tokens("wrongtype.safetensors", "tokens", "F32", 0);
  snprintf(args, sizeof args, "forward --ckpt %s/ck --input %s/wrongtype.safetensors -o %s/o.st", tmpdir, tmpdir, tmpdir);
  expect_fail(args, "'tokens' must be i32");
  write_tokens("range.safetensors", "tokens", "I32", 999);
  snprintf(args, sizeof args, "forward --ckpt %s/ck --input %s/range.safetensors -o %s/o.st", tmpdir, tmpdir, tmpdir);
  expect_fail(args, "tokens[0][3] = 999 is outside the vocabulary [0, 64)");
  write_file("trunc.safetensors", "\x10\0\0\0\0\0\0\0{\"tok", 13);
  snprintf(args, sizeof args, "forward --ckpt %s/ck --input %s/trunc.safetensors -o %s/o.st", tmpdir, tmpdir, tmpdir);
  expect_fail(args, "trunc.safetensors");
  snprintf(args, sizeof args, "forward --ckpt %s/ck --input %s/in.safetensors -o %s/o.st --device gpu9", tmpdir, tmpdir, tmpdir);
  expect_fail(args, "unknown device 'gpu9'");
  (void)b;
}
