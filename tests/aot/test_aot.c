// An ahead-of-time plan linked into this program: `nanochat compile
// models/specs/tiny.xml --train -o DIR` ran at build time, plan.o and the
// generated plan_symbols.c are linked in, and the executor comes from the
// LLVM-free archives only (tests/CMakeLists.txt: no libLLVM on the link line).
// Checks: the training step matches the reference interpreter, no LLVM is
// mapped in the process, and manifests/graphs that do not match are refused.
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frontend/spec.h"
#include "ir/text.h"
#include "models/gpt.h"
#include "models/init.h"
#include "models/train.h"
#include "runtime/aot.h"
#include "runtime/interp.h"

#ifndef NC_AOT_DIR
#error "NC_AOT_DIR (the compiled plan folder) must be defined by the build"
#endif

extern const nc_aot_symbol nc_aot_symbols[];
extern const int nc_aot_nsymbols;

static char tmpdir[256];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/nc_aot_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}
static void teardown(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  cr_assert_eq(system(cmd), 0);
}

static nc_model_spec tiny_spec(void) {
  const char *src = getenv("NC_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/models/specs/tiny.xml", src ? src : ".");
  nc_model_spec s;
  nc_status st = nc_spec_load(path, &s);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return s;
}

// Named tensors for every leaf of a graph: params from nc_gpt_init, tokens
// and targets in the vocabulary, optimizer state and scalars random (second
// moments non-negative, scalars in (0,1)), as tests/test_lower.c does.
typedef struct {
  int n;
  char (*names)[128];
  nc_tensor *t;
} nc_named;

static nc_tensor *named_get(nc_named *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->names[i], name)) return &s->t[i];
  return NULL;
}

static void fill_inputs(nc_named *s, const nc_graph *g, const nc_model_spec *sp, int64_t B, int64_t T) {
  nc_param_desc *ps;
  int np;
  cr_assert_null(nc_gpt_params(sp, &ps, &np));
  nc_tensor *init = calloc((size_t)np, sizeof *init);
  cr_assert_null(nc_gpt_init(ps, np, 3, init));
  s->names = calloc(nc_graph_nnodes(g), sizeof *s->names);
  s->t = calloc(nc_graph_nnodes(g), sizeof *s->t);
  nc_rng r;
  nc_rng_seed(&r, 5);
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    nc_op op = nc_graph_node(g, i)->op;
    if (op != NC_OP_INPUT && op != NC_OP_PARAM) continue;
    const char *name = nc_node_name(g, i);
    snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    nc_tensor *x = &s->t[s->n++];
    int p = 0;
    while (p < np && strcmp(ps[p].name, name)) p++;
    if (p < np) {  // a model param: its nanochat init
      *x = init[p];
      memset(&init[p], 0, sizeof init[p]);
      continue;
    }
    nc_type t = nc_type_of(g, i);
    int64_t shape[NC_MAX_RANK], syms[NC_MAX_SYMS] = {B, T};
    for (int d = 0; d < t.rank; d++) shape[d] = nc_dim_eval(t.dim[d], syms);
    cr_assert_null(nc_tensor_alloc(x, t.dtype, t.rank, shape));
    bool positive = !strncmp(name, "adamw.exp_avg_sq.", 17) || !strncmp(name, "muon.second_momentum.", 21);
    for (int64_t j = 0; j < nc_tensor_numel(x); j++) {
      if (t.dtype == NC_I32) ((int32_t *)x->data)[j] = (int32_t)(nc_rng_next(&r) % (uint64_t)sp->vocab_size);
      else ((float *)x->data)[j] = (float)(positive ? nc_rng_uniform(&r) * 0.01 : nc_rng_uniform(&r) * 0.2 - 0.1);
    }
    if (t.rank == 0 && t.dtype == NC_F32) *(float *)x->data = (float)(0.1 + 0.8 * nc_rng_uniform(&r));
  }
  for (int p = 0; p < np; p++) nc_tensor_free(&init[p]);
  free(init);
  free(ps);
}

static void named_free(nc_named *s) {
  for (int i = 0; i < s->n; i++) nc_tensor_free(&s->t[i]);
  free(s->t);
  free(s->names);
}

// Feeds for exactly the leaves of g, from s.
static int feeds_for(nc_named *s, const nc_graph *g, nc_feed *f) {
  int n = 0;
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    nc_op op = nc_graph_node(g, i)->op;
    if (op != NC_OP_INPUT && op != NC_OP_PARAM) continue;
    const nc_tensor *t = named_get(s, nc_node_name(g, i));
    cr_assert_not_null(t, "no value for %s", nc_node_name(g, i));
    f[n++] = (nc_feed){nc_node_name(g, i), t};
  }
  return n;
}

// max |a - b| / max(max |b|, 1e-12), f32 outputs.
static double rel_err(const nc_tensor *a, const nc_tensor *b) {
  cr_assert_eq(a->dtype, NC_F32);
  cr_assert_eq(b->dtype, NC_F32);
  cr_assert_eq(nc_tensor_numel(a), nc_tensor_numel(b));
  double num = 0, den = 1e-12;
  for (int64_t i = 0; i < nc_tensor_numel(a); i++) {
    double x = ((const float *)a->data)[i], y = ((const float *)b->data)[i];
    if (isnan(x) != isnan(y)) return INFINITY;
    num = fmax(num, fabs(x - y));
    den = fmax(den, fabs(y));
  }
  return num / den;
}

static bool llvm_mapped(char *line, size_t n) {
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f);
  bool found = false;
  while (!found && fgets(line, (int)n, f)) found = strstr(line, "LLVM") || strstr(line, "libllvm");
  fclose(f);
  return found;
}

TestSuite(aot, .init = setup, .fini = teardown, .timeout = 300);

Test(aot, tiny_train_step_matches_the_interpreter_without_llvm) {
  nc_cpu_opts o = {.threads = 2};
  nc_aot *a;
  nc_status st = nc_aot_load(NC_AOT_DIR, nc_aot_symbols, nc_aot_nsymbols, &o, &a);
  cr_assert_null(st, "%s", nc_status_msg(st));
  const nc_graph *g = nc_aot_graph(a), *fg = nc_aot_feed_graph(a);
  nc_model_spec sp = tiny_spec();
  nc_named s = {0};
  fill_inputs(&s, g, &sp, 2, 16);
  nc_feed *fi = calloc(nc_graph_nnodes(g), sizeof *fi), *fa = calloc(nc_graph_nnodes(fg), sizeof *fa);
  int ni = feeds_for(&s, g, fi), na = feeds_for(&s, fg, fa);
  int nout = nc_graph_noutputs(g);
  nc_tensor *want = calloc((size_t)nout, sizeof *want), *got = calloc((size_t)nout, sizeof *got);
  st = nc_interp_run(g, fi, ni, want);
  cr_assert_null(st, "interp: %s", nc_status_msg(st));
  // twice through the persistent arena: the second run reuses it
  for (int run = 0; run < 2; run++) {
    st = nc_aot_run(a, fa, na, got);
    cr_assert_null(st, "aot run %d: %s", run, nc_status_msg(st));
    double worst = 0;
    for (int k = 0; k < nout; k++) {
      double e = rel_err(&got[k], &want[k]);
      worst = fmax(worst, e);
      cr_expect_lt(e, 2e-4, "run %d: output %s: rel err %g", run, nc_graph_output_name(g, k), e);
      nc_tensor_free(&got[k]);
    }
    cr_log_info("run %d: %d kernels, %d outputs, worst rel err %.3g", run, nc_aot_nkernels(a), nout, worst);
  }
  char line[4096];
  cr_expect_not(llvm_mapped(line, sizeof line), "LLVM is mapped in the process: %s", line);
  cr_expect_null(dlsym(RTLD_DEFAULT, "LLVMGetVersion"), "an LLVM symbol is resolvable in the process");
  cr_expect_null(dlsym(RTLD_DEFAULT, "nc_jit_create"), "nc_jit_create is linked in");
  for (int k = 0; k < nout; k++) nc_tensor_free(&want[k]);
  free(want);
  free(got);
  free(fi);
  free(fa);
  named_free(&s);
  nc_aot_free(a);
}

// ---- refusals -----------------------------------------------------------------------
static void copy_file(const char *from_dir, const char *name, const char *to_dir) {
  char a[1024], b[1024];
  snprintf(a, sizeof a, "%s/%s", from_dir, name);
  snprintf(b, sizeof b, "%s/%s", to_dir, name);
  FILE *f = fopen(a, "rb"), *g = fopen(b, "wb");
  cr_assert(f && g, "copy %s -> %s", a, b);
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) cr_assert_eq(fwrite(buf, 1, n, g), n);
  fclose(f);
  fclose(g);
}

// Copies graph.ncir into tmpdir and returns the manifest to edit (manifest_save writes it there).
static json_t *manifest_copy(void) {
  copy_file(NC_AOT_DIR, NC_AOT_GRAPH, tmpdir);
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", NC_AOT_DIR, NC_AOT_MANIFEST);
  json_error_t e;
  json_t *m = json_load_file(path, JSON_PRESERVE_ORDER, &e);
  cr_assert_not_null(m, "%s: %s", path, e.text);
  return m;
}

static void manifest_save(json_t *m) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", tmpdir, NC_AOT_MANIFEST);
  cr_assert_eq(json_dump_file(m, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER), 0);
  json_decref(m);
}

static void expect_refused(const char *words) {
  nc_aot *a = NULL;
  nc_status st = nc_aot_load(tmpdir, nc_aot_symbols, nc_aot_nsymbols, NULL, &a);
  cr_assert_not_null(st, "loaded a plan that should be refused (%s)", words);
  cr_assert_null(a);
  cr_expect(strstr(nc_status_msg(st), words), "error lacks '%s': %s", words, nc_status_msg(st));
  nc_status_free(st);
}

Test(aot, an_unchanged_copy_loads) {
  manifest_save(manifest_copy());
  nc_aot *a = NULL;
  nc_status st = nc_aot_load(tmpdir, nc_aot_symbols, nc_aot_nsymbols, NULL, &a);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_aot_free(a);
}

Test(aot, a_tampered_layout_key_is_refused) {
  json_t *m = manifest_copy();
  const char *k = json_string_value(json_object_get(m, "layout_key"));
  char bad[17];
  snprintf(bad, sizeof bad, "%s", k);
  bad[15] = bad[15] == '0' ? '1' : '0';
  json_object_set_new(m, "layout_key", json_string(bad));
  manifest_save(m);
  expect_refused("layout key");
}

Test(aot, another_llvm_version_is_refused) {
  json_t *m = manifest_copy();
  json_object_set_new(m, "llvm_version", json_string("18.1.0"));
  manifest_save(m);
  expect_refused("another nanochat-c version");
}

// Writes g as the folder's graph.ncir.
static void write_graph(const nc_graph *g) {
  nc_buf b;
  nc_buf_init(&b);
  cr_assert_null(nc_graph_print_text(g, &b));
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", tmpdir, NC_AOT_GRAPH);
  cr_assert_null(nc_file_write_atomic(path, b.data, b.len));
  nc_buf_free(&b);
}

Test(aot, a_different_graph_is_refused) {
  nc_model_spec sp = tiny_spec();
  nc_gpt_opts go = {.with_logits = true, .with_loss = true};
  nc_graph *g, *lowered;
  nc_plan *p;
  cr_assert_null(nc_gpt_build(&sp, &go, &g));  // the forward graph instead of the training step
  cr_assert_null(nc_aot_plan_build(g, &lowered, &p));
  char h[17];
  snprintf(h, sizeof h, "%016llx", (unsigned long long)nc_graph_hash(g));
  // the manifest as compiled: the graph hash differs
  manifest_save(manifest_copy());
  write_graph(g);
  expect_refused("graph hash");
  // the graph hash edited to match: the kernel count differs
  json_t *m = manifest_copy();
  json_object_set_new(m, "graph_hash", json_string(h));
  manifest_save(m);
  write_graph(g);
  expect_refused("\"kernels\"");
  // and with the kernel count edited too, the layout key still refuses it
  m = manifest_copy();
  json_object_set_new(m, "graph_hash", json_string(h));
  json_object_set_new(m, "kernels", json_integer(p->nkernels));
  manifest_save(m);
  write_graph(g);
  expect_refused("layout key");
  nc_plan_free(p);
  nc_graph_free(lowered);
  nc_graph_free(g);
}

Test(aot, bad_manifests_name_the_field) {
  struct {
    const char *field;
    json_t *value;  // NULL: delete the field
    const char *words;
  } cases[] = {
      {"cpu", NULL, "missing field \"cpu\""},
      {"kernels", json_string("650"), "\"kernels\" is not an integer"},
      {"avx2_only", json_integer(0), "\"avx2_only\" is not a boolean"},
      {"version", json_integer(2), "format version 2"},
      {"format", json_string("onnx"), "\"format\" = \"onnx\""},
      {"graph", json_string("../graph.ncir"), "field \"graph\""},
      {"layout_key", json_string("xyz"), "not 16 lowercase hex digits"},
      {"symbols", json_object(), "\"symbols\" is not an array"},
      {"surprise", json_true(), "unknown field \"surprise\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_t *m = manifest_copy();
    if (cases[i].value) json_object_set_new(m, cases[i].field, cases[i].value);
    else json_object_del(m, cases[i].field);
    manifest_save(m);
    expect_refused(cases[i].words);
  }
  // a knob out of range, and a knob missing
  json_t *m = manifest_copy();
  json_object_set_new(json_object_get(m, "gemm_knobs"), "ku", json_integer(99));
  manifest_save(m);
  expect_refused("ku 99");
  m = manifest_copy();
  json_object_del(json_object_get(m, "gemm_knobs"), "mr");
  manifest_save(m);
  expect_refused("gemm_knobs");
  // not JSON at all
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", tmpdir, NC_AOT_MANIFEST);
  cr_assert_null(nc_file_write_atomic(path, "{\"format\":", 10));
  expect_refused("manifest.json:1:");
  // no manifest
  unlink(path);
  expect_refused("manifest.json");
}

Test(aot, a_symbol_table_of_another_plan_is_refused) {
  manifest_save(manifest_copy());
  nc_aot *a = NULL;
  nc_status st = nc_aot_load(tmpdir, nc_aot_symbols, nc_aot_nsymbols - 1, NULL, &a);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "no symbol"), "%s", nc_status_msg(st));
  nc_status_free(st);
}
