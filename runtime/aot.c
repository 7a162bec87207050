// Ahead-of-time plans (aot.h): manifest and symbol table generation for the
// compiler, and the LLVM-free loader. Only the executor half of the CPU
// device (runtime/cpu.c) is used here, never cpu_jit.c.
#include "runtime/aot.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/graphio.h"
#include "ir/text.h"
#include "passes/pass.h"
#include "runtime/plan_run.h"

struct nc_aot {
  nc_graph *g;        // as given (graph.ncir)
  nc_graph *lowered;  // decompose + dce
  nc_plan *plan;
  nc_cpu *cpu;
  nc_plan_mem *mem;
};

// ---- the plan: the same passes as runtime/exec.c ------------------------------------
static nc_status nc_aot_graph_copy(const nc_graph *g, nc_graph **out) {
  nc_graph *h = nc_graph_new_like(g);
  if (!h) return nc_errorf(NC_E_NOMEM, "out of memory copying the graph");
  nc_status st = NC_OK;
  for (nc_id i = 0; i < nc_graph_nnodes(g) && !st; i++) {
    nc_node_desc d;
    nc_node_desc_from(g, i, &d);
    nc_id id;
    st = nc_graph_add(h, &d, &id);
    if (!st && id != i) st = nc_errorf(NC_E_INTERNAL, "copying the graph: node %%%u became %%%u", i, id);
  }
  for (int k = 0; k < nc_graph_noutputs(g) && !st; k++)
    st = nc_graph_set_output(h, nc_graph_output_name(g, k), nc_graph_output(g, k));
  if (st) {
    nc_graph_free(h);
    return st;
  }
  *out = h;
  return NC_OK;
}

nc_status nc_aot_plan_build(const nc_graph *g, nc_graph **lowered, nc_plan **plan) {
  *lowered = NULL;
  *plan = NULL;
  nc_graph *h;
  NC_TRY(nc_aot_graph_copy(g, &h));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  const char *passes[] = {"decompose", "dce"};
  nc_status st = nc_pass_run_pipeline(&h, passes, 2, &ctx);
  nc_lower_opts lo = {.fuse = true};
  if (!st) st = nc_plan_build(h, &lo, plan);
  if (st) {
    nc_graph_free(h);
    return st;
  }
  *lowered = h;
  return NC_OK;
}

// ---- generation (the compiler's side) ----------------------------------------------
// Calls f(ctx, symbol) for every unique symbol of the layout, in a fixed order.
static void nc_aot_each_symbol(const nc_plan *p, const nc_cpu_layout *L, void (*f)(void *, const char *, bool), void *ctx) {
  for (int i = 0; i < p->nkernels; i++)
    if (!nc_kernel_is_template(&p->kernels[i].k) && L->same_as[i] == i) f(ctx, L->names[i], false);
  for (int v = 0; v < NC_CPU_GEMM_VARIANTS; v++) {
    if (!L->code[v]) continue;
    char name[32];
    nc_cpu_gemm_symbol(v, name);
    f(ctx, name, true);
  }
}

static void nc_aot_json_symbol(void *ctx, const char *name, bool gemm) {
  (void)gemm;
  json_array_append_new(ctx, json_string(name));
}

static void nc_aot_hex(uint64_t v, char out[17]) { snprintf(out, 17, "%016" PRIx64, v); }

nc_status nc_aot_manifest_text(const nc_graph *g, const nc_plan *p, const nc_cpu_layout *L, const nc_aot_target *t,
                               nc_buf *out) {
  char key[17], gh[17];
  nc_aot_hex(L->key, key);
  nc_aot_hex(nc_graph_hash(g), gh);
  json_t *syms = json_array();
  if (syms) nc_aot_each_symbol(p, L, nc_aot_json_symbol, syms);
  const nc_gemm_knobs *k = &t->knobs;
  json_t *root = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b,"
                           " s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}, s:s, s:i, s:i, s:o}",
                           "format", NC_AOT_FORMAT, "version", NC_AOT_VERSION, "graph", NC_AOT_GRAPH, "object",
                           NC_AOT_OBJECT, "symbols_c", NC_AOT_SYMBOLS_C, "graph_name", nc_graph_name(g), "graph_hash", gh,
                           "llvm_version", t->llvm_version, "cpu", t->cpu, "features", t->features, "avx2_only",
                           (int)t->avx2_only, "gemm_knobs", "vw", k->vw, "mr", k->mr, "nr", k->nr, "kc", k->kc, "mc", k->mc,
                           "nc", k->nc, "ku", k->ku, "order", k->order, "prefetch_b", k->prefetch_b, "layout_key", key,
                           "kernels", p->nkernels, "unique_kernels", L->nunique, "symbols", syms);
  if (!root) return nc_errorf(NC_E_NOMEM, "out of memory building the manifest");
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
  json_decref(root);
  if (!text) return nc_errorf(NC_E_NOMEM, "out of memory printing the manifest");
  nc_buf_puts(out, text);
  nc_buf_puts(out, "\n");
  free(text);
  return out->oom ? nc_errorf(NC_E_NOMEM, "out of memory printing the manifest") : NC_OK;
}

static void nc_aot_c_decl(void *ctx, const char *name, bool gemm) {
  nc_buf_printf(ctx, gemm ? "extern void %s(const nc_gemm_args *, int32_t, int32_t);\n"
                          : "extern void %s(void *const *, const int64_t *, int64_t, int64_t);\n",
                name);
}
static void nc_aot_c_entry(void *ctx, const char *name, bool gemm) {
  (void)gemm;
  nc_buf_printf(ctx, "    {\"%s\", (void *)&%s},\n", name, name);
}
static void nc_aot_count(void *ctx, const char *name, bool gemm) {
  (void)name;
  (void)gemm;
  ++*(int *)ctx;
}

nc_status nc_aot_symbols_c(const nc_plan *p, const nc_cpu_layout *L, nc_buf *out) {
  int n = 0;
  nc_aot_each_symbol(p, L, nc_aot_count, &n);
  char key[17];
  nc_aot_hex(L->key, key);
  nc_buf_printf(out,
                "// Generated by `nanochat compile` (layout key %s): the symbols of plan.o for\n"
                "// nc_aot_load (runtime/aot.h). Do not edit.\n"
                "#include <stdint.h>\n\n#include \"runtime/aot.h\"\n\n",
                key);
  nc_aot_each_symbol(p, L, nc_aot_c_decl, out);
  nc_buf_puts(out, "\nconst nc_aot_symbol nc_aot_symbols[] = {\n");
  nc_aot_each_symbol(p, L, nc_aot_c_entry, out);
  if (!n) nc_buf_puts(out, "    {0, 0},\n");  // C has no empty arrays
  nc_buf_printf(out, "};\nconst int nc_aot_nsymbols = %d;\n", n);
  return out->oom ? nc_errorf(NC_E_NOMEM, "out of memory printing %s", NC_AOT_SYMBOLS_C) : NC_OK;
}

// ---- the manifest, read strictly -----------------------------------------------------
typedef struct {
  char graph_name[256];
  uint64_t graph_hash, key;
  nc_aot_target t;
  int64_t kernels, unique_kernels;
  json_t *symbols;  // borrowed from the root
} nc_aot_manifest;

static const char *nc_aot_fields[] = {"format", "version", "graph", "object", "symbols_c", "graph_name", "graph_hash",
                                      "llvm_version", "cpu", "features", "avx2_only", "gemm_knobs", "layout_key",
                                      "kernels", "unique_kernels", "symbols"};
#define NC_AOT_NFIELDS ((int)(sizeof nc_aot_fields / sizeof nc_aot_fields[0]))

static nc_status nc_aot_str(const json_t *root, const char *field, char *dst, size_t n, const char *path) {
  const json_t *v = json_object_get(root, field);
  if (!v) return nc_errorf(NC_E_PARSE, "%s: missing field \"%s\"", path, field);
  if (!json_is_string(v)) return nc_errorf(NC_E_PARSE, "%s: field \"%s\" is not a string", path, field);
  size_t len = json_string_length(v);
  if (len >= n || strlen(json_string_value(v)) != len)
    return nc_errorf(NC_E_PARSE, "%s: field \"%s\" is too long or holds a NUL (%zu bytes, max %zu)", path, field, len,
                     n - 1);
  memcpy(dst, json_string_value(v), len + 1);
  return NC_OK;
}

static nc_status nc_aot_int(const json_t *root, const char *field, int64_t lo, int64_t hi, int64_t *out,
                            const char *path) {
  const json_t *v = json_object_get(root, field);
  if (!v) return nc_errorf(NC_E_PARSE, "%s: missing field \"%s\"", path, field);
  if (!json_is_integer(v)) return nc_errorf(NC_E_PARSE, "%s: field \"%s\" is not an integer", path, field);
  int64_t x = (int64_t)json_integer_value(v);
  if (x < lo || x > hi)
    return nc_errorf(NC_E_PARSE, "%s: field \"%s\" = %lld is out of range %lld..%lld", path, field, (long long)x,
                     (long long)lo, (long long)hi);
  *out = x;
  return NC_OK;
}

static nc_status nc_aot_hex_field(const json_t *root, const char *field, uint64_t *out, const char *path) {
  char s[32];
  NC_TRY(nc_aot_str(root, field, s, sizeof s, path));
  char *end;
  if (strlen(s) != 16 || strspn(s, "0123456789abcdef") != 16)
    return nc_errorf(NC_E_PARSE, "%s: field \"%s\" = \"%s\" is not 16 lowercase hex digits", path, field, s);
  *out = strtoull(s, &end, 16);
  return NC_OK;
}

// A file name inside the plan folder: the expected one (no paths).
static nc_status nc_aot_name_field(const json_t *root, const char *field, const char *want, const char *path) {
  char s[256];
  NC_TRY(nc_aot_str(root, field, s, sizeof s, path));
  if (strcmp(s, want))
    return nc_errorf(NC_E_PARSE, "%s: field \"%s\" = \"%s\", expected \"%s\"", path, field, s, want);
  return NC_OK;
}

static nc_status nc_aot_manifest_check(const json_t *root, nc_aot_manifest *m, const char *path) {
  memset(m, 0, sizeof *m);
  if (!json_is_object(root)) return nc_errorf(NC_E_PARSE, "%s: not a JSON object", path);
  const char *k;
  const json_t *v;
  json_object_foreach((json_t *)root, k, v) {
    int i = 0;
    while (i < NC_AOT_NFIELDS && strcmp(k, nc_aot_fields[i])) i++;
    if (i == NC_AOT_NFIELDS) return nc_errorf(NC_E_PARSE, "%s: unknown field \"%s\"", path, k);
  }
  char fmt[64];
  NC_TRY(nc_aot_str(root, "format", fmt, sizeof fmt, path));
  if (strcmp(fmt, NC_AOT_FORMAT))
    return nc_errorf(NC_E_PARSE, "%s: field \"format\" = \"%s\", expected \"%s\"", path, fmt, NC_AOT_FORMAT);
  int64_t ver;
  NC_TRY(nc_aot_int(root, "version", 0, INT32_MAX, &ver, path));
  if (ver != NC_AOT_VERSION)
    return nc_errorf(NC_E_UNSUPPORTED, "%s: format version %lld, this nanochat-c reads version %d (recompile the plan)",
                     path, (long long)ver, NC_AOT_VERSION);
  NC_TRY(nc_aot_name_field(root, "graph", NC_AOT_GRAPH, path));
  NC_TRY(nc_aot_name_field(root, "object", NC_AOT_OBJECT, path));
  NC_TRY(nc_aot_name_field(root, "symbols_c", NC_AOT_SYMBOLS_C, path));
  NC_TRY(nc_aot_str(root, "graph_name", m->graph_name, sizeof m->graph_name, path));
  NC_TRY(nc_aot_hex_field(root, "graph_hash", &m->graph_hash, path));
  NC_TRY(nc_aot_str(root, "llvm_version", m->t.llvm_version, sizeof m->t.llvm_version, path));
  NC_TRY(nc_aot_str(root, "cpu", m->t.cpu, sizeof m->t.cpu, path));
  NC_TRY(nc_aot_str(root, "features", m->t.features, sizeof m->t.features, path));
  const json_t *b = json_object_get(root, "avx2_only");
  if (!b) return nc_errorf(NC_E_PARSE, "%s: missing field \"avx2_only\"", path);
  if (!json_is_boolean(b)) return nc_errorf(NC_E_PARSE, "%s: field \"avx2_only\" is not a boolean", path);
  m->t.avx2_only = json_is_true(b);
  const json_t *kn = json_object_get(root, "gemm_knobs");
  if (!kn) return nc_errorf(NC_E_PARSE, "%s: missing field \"gemm_knobs\"", path);
  if (!json_is_object(kn)) return nc_errorf(NC_E_PARSE, "%s: field \"gemm_knobs\" is not an object", path);
  static const char *knames[] = {"vw", "mr", "nr", "kc", "mc", "nc", "ku", "order", "prefetch_b"};
  int *kdst[] = {&m->t.knobs.vw, &m->t.knobs.mr, &m->t.knobs.nr, &m->t.knobs.kc, &m->t.knobs.mc,
                 &m->t.knobs.nc, &m->t.knobs.ku, &m->t.knobs.order, &m->t.knobs.prefetch_b};
  if (json_object_size(kn) != 9) return nc_errorf(NC_E_PARSE, "%s: field \"gemm_knobs\" must have exactly 9 knobs", path);
  char kpath[1100];
  snprintf(kpath, sizeof kpath, "%s: gemm_knobs", path);
  for (int i = 0; i < 9; i++) {
    int64_t x;
    NC_TRY(nc_aot_int(kn, knames[i], INT32_MIN, INT32_MAX, &x, kpath));
    *kdst[i] = (int)x;
  }
  nc_status st = nc_gemm_knobs_check(&m->t.knobs);
  if (st) return nc_status_prefix(st, "%s: ", path);
  NC_TRY(nc_aot_hex_field(root, "layout_key", &m->key, path));
  NC_TRY(nc_aot_int(root, "kernels", 0, INT32_MAX, &m->kernels, path));
  NC_TRY(nc_aot_int(root, "unique_kernels", 0, INT32_MAX, &m->unique_kernels, path));
  m->symbols = json_object_get(root, "symbols");
  if (!m->symbols) return nc_errorf(NC_E_PARSE, "%s: missing field \"symbols\"", path);
  if (!json_is_array(m->symbols)) return nc_errorf(NC_E_PARSE, "%s: field \"symbols\" is not an array", path);
  for (size_t i = 0; i < json_array_size(m->symbols); i++)
    if (!json_is_string(json_array_get(m->symbols, i)))
      return nc_errorf(NC_E_PARSE, "%s: symbols[%zu] is not a string", path, i);
  return NC_OK;
}

// The object file uses the CPU features it was compiled for: refuse a host
// without the main ones rather than die of SIGILL in the first kernel.
static nc_status nc_aot_check_host(const nc_aot_target *t, const char *path) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  static const char *names[] = {"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"};
  bool have[] = {__builtin_cpu_supports("avx"),      __builtin_cpu_supports("avx2"),     __builtin_cpu_supports("fma"),
                 __builtin_cpu_supports("avx512f"),  __builtin_cpu_supports("avx512bw"), __builtin_cpu_supports("avx512dq"),
                 __builtin_cpu_supports("avx512vl")};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char want[32];
    int n = snprintf(want, sizeof want, "+%s", names[i]);
    for (const char *s = t->features; (s = strstr(s, want)); s += n)
      if ((s == t->features || s[-1] == ',') && (s[n] == ',' || !s[n]) && !have[i])
        return nc_errorf(NC_E_UNSUPPORTED, "%s: plan.o was compiled for CPU '%s' with %s, which this CPU lacks", path,
                         t->cpu, names[i]);
  }
#else
  (void)t;
  (void)path;
#endif
  return NC_OK;
}

// ---- the loader -------------------------------------------------------------------
typedef struct {
  const nc_aot_symbol *table;
  int n;
} nc_aot_table;

static nc_status nc_aot_resolve(void *ctx, const char *name, void **fn) {
  const nc_aot_table *t = ctx;
  for (int i = 0; i < t->n; i++)
    if (t->table[i].name && !strcmp(t->table[i].name, name)) {
      if (!t->table[i].fn) return nc_errorf(NC_E_INVALID, "AOT symbol table: '%s' has a NULL address", name);
      *fn = t->table[i].fn;
      return NC_OK;
    }
  return nc_errorf(NC_E_INVALID,
                   "AOT symbol table: no symbol '%s' (the linked plan_symbols.c/plan.o belong to another plan)", name);
}

static nc_status nc_aot_load_into(nc_aot *a, const char *dir, const nc_aot_symbol *table, int n, const nc_cpu_opts *o) {
  char mpath[1024], gpath[1024];
  if ((size_t)snprintf(mpath, sizeof mpath, "%s/%s", dir, NC_AOT_MANIFEST) >= sizeof mpath ||
      (size_t)snprintf(gpath, sizeof gpath, "%s/%s", dir, NC_AOT_GRAPH) >= sizeof gpath)
    return nc_errorf(NC_E_INVALID, "AOT plan folder path too long: %s", dir);
  char *text;
  size_t len;
  NC_TRY(nc_file_read(mpath, (size_t)64 << 20, &text, &len));
  json_error_t jerr;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  free(text);
  if (!root) return nc_errorf(NC_E_PARSE, "%s:%d:%d: %s", mpath, jerr.line, jerr.column, jerr.text);
  nc_aot_manifest m;
  nc_status st = nc_aot_manifest_check(root, &m, mpath);
  if (!st) st = nc_aot_check_host(&m.t, mpath);
  if (st) {
    json_decref(root);
    return st;
  }
  // the graph, as compiled
  char *src = NULL;
  st = nc_file_read(gpath, NC_GRAPH_FILE_MAX, &src, &len);
  if (!st) st = nc_graph_parse_text(src, len, gpath, &a->g);
  free(src);
  if (!st && nc_graph_hash(a->g) != m.graph_hash) {
    char h[17];
    nc_aot_hex(nc_graph_hash(a->g), h);
    st = nc_errorf(NC_E_INVALID, "%s: graph hash %s differs from the manifest's %016" PRIx64
                   " (the graph was changed after `nanochat compile`: recompile the plan)",
                   gpath, h, m.graph_hash);
  }
  if (!st) st = nc_aot_plan_build(a->g, &a->lowered, &a->plan);
  if (!st && a->plan->nkernels != m.kernels)
    st = nc_errorf(NC_E_INVALID, "%s: \"kernels\" = %lld but the graph lowers to %d kernels here (another nanochat-c version?)",
                   mpath, (long long)m.kernels, a->plan->nkernels);
  nc_cpu_layout L;
  memset(&L, 0, sizeof L);
  if (!st)
    st = nc_cpu_layout_build(a->plan, m.t.llvm_version, m.t.cpu, m.t.features, m.t.avx2_only, &m.t.knobs, &L);
  if (!st && L.key != m.key) {
    char h[17];
    nc_aot_hex(L.key, h);
    st = nc_errorf(NC_E_INVALID, "%s: layout key %016" PRIx64 " does not match the plan rebuilt here (%s): plan.o was "
                   "compiled by another nanochat-c version or from another graph, or the manifest was edited; recompile it",
                   mpath, m.key, h);
  }
  if (!st && L.nunique != m.unique_kernels)
    st = nc_errorf(NC_E_INVALID, "%s: \"unique_kernels\" = %lld, the layout has %d", mpath, (long long)m.unique_kernels,
                   L.nunique);
  json_decref(root);
  nc_aot_table t = {table, n};
  if (!st && (!table || n < 0)) st = nc_errorf(NC_E_INVALID, "nc_aot_load: no symbol table");
  nc_cpu_opts co = {.threads = o ? o->threads : 0};
  if (!st) st = nc_cpu_from_symbols(a->plan, &co, &m.t.knobs, &L, nc_aot_resolve, &t, &a->cpu);
  nc_cpu_layout_free(&L);
  if (!st && !(a->mem = nc_plan_mem_new())) st = nc_errorf(NC_E_NOMEM, "out of memory");
  return st;
}

nc_status nc_aot_load(const char *dir, const nc_aot_symbol *table, int n, const nc_cpu_opts *o, nc_aot **out) {
  *out = NULL;
  nc_aot *a = calloc(1, sizeof *a);
  if (!a) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_status st = nc_aot_load_into(a, dir, table, n, o);
  if (st) {
    nc_aot_free(a);
    return nc_status_prefix(st, "loading the AOT plan %s: ", dir);
  }
  *out = a;
  return NC_OK;
}

nc_status nc_aot_run(nc_aot *a, const nc_feed *feeds, int nfeeds, nc_tensor *outputs) {
  return nc_plan_run_mem(a->lowered, a->plan, a->mem, nc_cpu_runner, a->cpu, feeds, nfeeds, outputs);
}

const nc_graph *nc_aot_graph(const nc_aot *a) { return a->g; }
const nc_graph *nc_aot_feed_graph(const nc_aot *a) { return a->lowered; }
int nc_aot_nkernels(const nc_aot *a) { return a->plan->nkernels; }

void nc_aot_free(nc_aot *a) {
  if (!a) return;
  nc_cpu_free(a->cpu);
  nc_plan_mem_free(a->mem);
  nc_plan_free(a->plan);
  nc_graph_free(a->lowered);
  nc_graph_free(a->g);
  free(a);
}
