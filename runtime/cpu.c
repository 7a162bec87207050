#include "runtime/cpu.h"

#include "support/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/gemm.h"
#include "codegen/gemm_bf16.h"  // workspace size and default knobs (plain C)
#include "codegen/llvm_kir.h"  // nc_kernel_fn (a type only: nothing of LLVM is linked)
#include "runtime/cpu_impl.h"
#include "runtime/kcache.h"    // NC_KCACHE_FORMAT (a constant only)
#include "runtime/kir_eval.h"
#include "ir/dtype.h"       // nc_f32_to_bf16 for bf16 matmuls without AVX512_BF16
#include "runtime/threadpool.h"
#include "support/clock.h"

// Bumped whenever the emitted machine code changes for the same plan and knobs
// (2-9: the GEMM's skinny small-M path; 9: its prefetch; 10: bf16 rounding without AVX512_BF16
// by integer ops in codegen/llvm_kir.c; 11: the skinny path's 4 x 3 block on AVX2; 12: bf16
// loads widened by integer ops too without AVX512_BF16; 13: one fp32 GEMM per (ta, tb) with
// sym, ReLU^2 and the addend switched at run time; 14: the skinny path's M = 1 rows one at a
// time; 15: the transposed A packed k-outer (codegen/gemm.c's pack_a); 16: the skinny
// path's prefetch of the next block spread over its row groups; 17: the packed path's dynamic
// split through nc_gemm_args.sync; 18: its flags per C block, a pause in its wait; 19: the bf16
// GEMM with bf16 memory accumulates K > kc in the fp32 shadow nc_gemm_args.cw, one rounding of C), so
// that cached objects are rebuilt.
#define NC_CPU_CODEGEN_REV 19

// The executor: layout, function pointers, thread pool, launches. It never
// references LLVM or codegen/jit.h's functions, so ahead-of-time plans
// (runtime/aot.h) link it without LLVM; JIT compilation is in cpu_jit.c.
struct nc_cpu {
  void (*release)(void *);  // frees what owns the code (the JIT); NULL for AOT
  void *release_ctx;
  nc_pool *pool;
  int nthreads;
  int64_t serial_work;  // launches with less estimated work run on the caller alone (0: never)
  int nkernels;
  nc_kernel_fn *fns;   // per plan kernel (NULL for templates)
  nc_gemm_fn gemm[NC_CPU_GEMM_VARIANTS];  // by variant (cpu.h): nc_cpu_gemm_code's function
  nc_gemm_knobs knobs;
  nc_gemm_knobs bf_knobs;    // the bf16 GEMM's (nc_gemm_bf16_knobs_default, as runtime/cpu_jit.c compiles it)
  nc_cpu_tuned_gemm *tuned;  // per-shape GEMMs of any variant from the tuning database
  nc_gemm_fn *tuned_fn;
  int ntuned;
  float *work;
  int64_t *sync;  // the GEMMs' dynamic split (nc_gemm_args.sync), zeroed per launch
  size_t sync_cap;  // words
  float *cw;        // the bf16 GEMMs' fp32 shadow of C (nc_gemm_args.cw) when K > kc, grown as needed
  size_t cw_cap;    // floats
  double compile_s;
  bool cache_hit;
  int nunique;         // kernels actually compiled (after deduplication)
  double *ktime;       // per kernel: seconds spent, summed over runs
  // per loop kernel: its thread count for the arguments of its last launch
  // (a decode step launches ~200 kernels with the same symbol sizes each time)
  struct nc_cpu_split {
    int64_t args[4];
    int n;  // 0: not known yet
  } *split;
  int64_t *kcalls;
  // trace of launches since nc_cpu_trace_start (Chrome trace events)
  struct nc_trace_ev {
    int ki;
    double t0, t1;
  } *trace;
  int ntrace, captrace;
  bool tracing;
  double trace_origin;
  // bf16 matmuls without AVX512_BF16: fp32 copies of A, B and C (grown as needed)
  bool bf16_fallback;
  float *bf_scratch;
  size_t bf_cap;  // floats
};

void nc_cpu_free(nc_cpu *c) {
  if (!c) return;
  if (c->release) c->release(c->release_ctx);
  nc_pool_free(c->pool);
  free(c->fns);
  free(c->tuned);
  free(c->tuned_fn);
  free(c->work);
  free(c->sync);
  free(c->cw);
  free(c->bf_scratch);
  free(c->ktime);
  free(c->split);
  free(c->kcalls);
  free(c->trace);
  free(c);
}

void nc_cpu_trace_start(nc_cpu *c) {
  c->ntrace = 0;
  c->tracing = true;
  c->trace_origin = nc_clock_now();
}

nc_status nc_cpu_trace_write(nc_cpu *c, const nc_plan *p, const char *path) {
  c->tracing = false;
  nc_buf b;
  nc_buf_init(&b);
  nc_buf_puts(&b, "{\"traceEvents\":[\n");
  for (int i = 0; i < c->ntrace; i++) {
    const struct nc_trace_ev *e = &c->trace[i];
    const nc_kernel *k = &p->kernels[e->ki].k;
    nc_buf_printf(&b,
                  "%s{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":1,\"tid\":1,"
                  "\"args\":{\"kernel\":%d,\"node\":%u}}",
                  i ? ",\n" : "", k->name, nc_kernel_is_template(k) ? "template" : "loops",
                  1e6 * (e->t0 - c->trace_origin), 1e6 * (e->t1 - e->t0), e->ki, p->kernels[e->ki].node);
  }
  nc_buf_puts(&b, "\n],\"displayTimeUnit\":\"ms\"}\n");
  nc_status st = b.oom ? nc_errorf(NC_E_NOMEM, "out of memory writing the trace") : nc_file_write_atomic(path, b.data, b.len);
  nc_buf_free(&b);
  return st;
}

void nc_cpu_set_release(nc_cpu *c, void (*release)(void *), void *ctx) {
  c->release = release;
  c->release_ctx = ctx;
}

void nc_cpu_set_compile_info(nc_cpu *c, double seconds, bool cache_hit) {
  c->compile_s = seconds;
  c->cache_hit = cache_hit;
}

double nc_cpu_compile_seconds(const nc_cpu *c) { return c->compile_s; }
bool nc_cpu_cache_hit(const nc_cpu *c) { return c->cache_hit; }
int nc_cpu_unique_kernels(const nc_cpu *c) { return c->nunique; }

// ---- layout: which kernels share code, their symbols, the plan's key ----------------
void nc_cpu_layout_free(nc_cpu_layout *L) {
  free(L->same_as);
  free(L->names);
  memset(L, 0, sizeof *L);
}

nc_status nc_cpu_layout_build(const nc_plan *p, const char *llvm_version, const char *cpu, const char *features,
                              bool avx2_only, const nc_gemm_knobs *knobs, nc_cpu_layout *L) {
  memset(L, 0, sizeof *L);
  uint64_t *keys = calloc((size_t)p->nkernels + 1, sizeof *keys);
  L->same_as = calloc((size_t)p->nkernels + 1, sizeof *L->same_as);
  L->names = calloc((size_t)p->nkernels + 1, sizeof *L->names);
  if (!keys || !L->same_as || !L->names) {
    free(keys);
    nc_cpu_layout_free(L);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  L->bf16_fallback = avx2_only || !strstr(features, "+avx512bf16");  // (the features are in the key)
  // everything that decides the machine code goes into the key
  uint64_t key = nc_hash_u64(NC_HASH_SEED, NC_KCACHE_FORMAT);
  key = nc_hash_u64(key, NC_CPU_CODEGEN_REV);
  key = nc_hash_bytes(key, llvm_version, strlen(llvm_version));
  key = nc_hash_bytes(key, cpu, strlen(cpu));
  key = nc_hash_bytes(key, features, strlen(features));
  key = nc_hash_u64(key, (uint64_t)avx2_only);
  key = nc_hash_bytes(key, knobs, sizeof *knobs);
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    L->same_as[i] = i;
    if (nc_kernel_is_template(k)) {
      const nc_kstmt *ts = nc_ks_get(k, k->body);
      int ta = (int)nc_kernel_eval_index(k, ts->args[4], NULL), tb = (int)nc_kernel_eval_index(k, ts->args[5], NULL);
      int sym = ts->nargs > 9 && nc_kernel_eval_index(k, ts->args[9], NULL) ? 1 : 0;
      int bf = k->bufs[ts->cbufs[0]].dtype == NC_BF16;
      bool relu2 = !bf && ts->nargs > 10 && nc_kernel_eval_index(k, ts->args[10], NULL) == 1;  // the ReLU^2 epilogue
      bool addend = !bf && ts->nargs > 10 && nc_kernel_eval_index(k, ts->args[10], NULL) == 2;  // C = a AB + b E
      L->need[relu2 ? 16 + ta * 2 + tb : addend ? 20 + sym * 4 + ta * 2 + tb : bf * 8 + (bf ? 0 : sym) * 4 + ta * 2 + tb] = true;
      continue;
    }
    // kernels that differ only in which buffers they touch (every layer's,
    // say) share code: the key is the kernel printed with positional names
    nc_kernel canon = *k;  // shallow: shares the expression/statement arrays
    snprintf(canon.name, sizeof canon.name, "k");
    for (int b = 0; b < canon.nbufs; b++) snprintf(canon.bufs[b].name, sizeof canon.bufs[b].name, "b%d", b);
    keys[i] = nc_kernel_hash(&canon);
    for (int j = 0; j < i; j++)
      if (keys[j] == keys[i] && L->same_as[j] == j) {
        L->same_as[i] = j;
        break;
      }
    snprintf(L->names[i], sizeof L->names[i], "nck%d_%.80s", L->same_as[i], p->kernels[L->same_as[i]].k.name);
    if (L->same_as[i] == i) {
      key = nc_hash_u64(key, keys[i]);
      key = nc_hash_bytes(key, L->names[i], strlen(L->names[i]));
      L->nunique++;
    }
  }
  for (int v = 0; v < NC_CPU_GEMM_VARIANTS; v++)
    if (L->need[v]) L->code[nc_cpu_gemm_code(v)] = true;
  for (int v = 0; v < NC_CPU_GEMM_VARIANTS; v++)
    if (L->code[v]) key = nc_hash_u64(key, 0x9e33u + (uint64_t)v);
  L->key = key;
  free(keys);
  return NC_OK;
}

void nc_cpu_gemm_symbol(int v, char out[32]) {
  v = nc_cpu_gemm_code(v);
  snprintf(out, 32, "nc_gemm%s_%d%d", v >= 8 ? "bf" : "", (v / 2) % 2, v % 2);
}

// ---- the executor: thread pool, workspace, function pointers --------------------------
static nc_status nc_cpu_new_exec(const nc_plan *p, const nc_cpu_opts *o, nc_cpu **out) {
  nc_cpu *c = calloc(1, sizeof *c);
  if (!c) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_status st = nc_pool_new(o && o->threads > 0 ? o->threads : nc_pool_default_threads(), &c->pool);
  if (st) {
    free(c);
    return st;
  }
  c->nthreads = nc_pool_nthreads(c->pool);
  c->serial_work = NC_CPU_SERIAL_WORK_DEFAULT;
  const char *env = getenv("NC_CPU_SERIAL_WORK");
  if (o && o->serial_work) {
    c->serial_work = o->serial_work < 0 ? 0 : o->serial_work;
  } else if (env && *env) {
    char *end;
    long long v = strtoll(env, &end, 10);
    if (*end || v < 0) {
      nc_pool_free(c->pool);
      free(c);
      return nc_errorf(NC_E_INVALID, "environment NC_CPU_SERIAL_WORK='%s' is not a non-negative integer", env);
    }
    c->serial_work = v;
  }
  c->nkernels = p->nkernels;
  c->fns = calloc((size_t)p->nkernels + 1, sizeof *c->fns);
  c->ktime = calloc((size_t)p->nkernels + 1, sizeof *c->ktime);
  c->kcalls = calloc((size_t)p->nkernels + 1, sizeof *c->kcalls);
  c->split = calloc((size_t)p->nkernels + 1, sizeof *c->split);
  if (!c->fns || !c->ktime || !c->kcalls || !c->split) {
    nc_cpu_free(c);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  *out = c;
  return NC_OK;
}

static nc_status nc_cpu_set_knobs(nc_cpu *c, const nc_gemm_knobs *knobs) {
  c->knobs = *knobs;
  free(c->work);
  // room for the bf16 GEMM too (its default knobs: runtime/cpu_jit.c)
  c->bf_knobs = nc_gemm_bf16_knobs_default(NULL);
  size_t ws = nc_gemm_workspace_size(&c->knobs, c->nthreads), wb = nc_gemm_bf16_workspace_size(&c->bf_knobs, c->nthreads);
  c->work = aligned_alloc(64, ((ws > wb ? ws : wb) + 63) / 64 * 64);
  return c->work ? NC_OK : nc_errorf(NC_E_NOMEM, "out of memory for the GEMM workspace");
}

// Looks every kernel's and GEMM's function up through resolve.
static nc_status nc_cpu_resolve(nc_cpu *c, const nc_plan *p, const nc_cpu_layout *L, nc_cpu_resolver resolve, void *ctx) {
  for (int i = 0; i < p->nkernels; i++) {
    if (nc_kernel_is_template(&p->kernels[i].k)) continue;
    if (L->same_as[i] != i) continue;
    void *f;
    NC_TRY(resolve(ctx, L->names[i], &f));
    c->fns[i] = (nc_kernel_fn)f;
  }
  for (int i = 0; i < p->nkernels; i++)
    if (L->same_as[i] != i) c->fns[i] = c->fns[L->same_as[i]];
  for (int v = 0; v < NC_CPU_GEMM_VARIANTS; v++) {
    if (!L->need[v]) continue;
    char name[32];
    nc_cpu_gemm_symbol(v, name);
    void *f;
    NC_TRY(resolve(ctx, name, &f));
    c->gemm[v] = (nc_gemm_fn)f;
  }
  c->nunique = L->nunique;
  return NC_OK;
}

nc_status nc_cpu_from_symbols(const nc_plan *p, const nc_cpu_opts *o, const nc_gemm_knobs *knobs, const nc_cpu_layout *L,
                              nc_cpu_resolver resolve, void *ctx, nc_cpu **out) {
  *out = NULL;
  nc_cpu *c = NULL;
  NC_TRY(nc_cpu_new_exec(p, o, &c));
  nc_status st = nc_cpu_set_knobs(c, knobs);
  c->bf16_fallback = L->bf16_fallback;
  if (!st) st = nc_cpu_resolve(c, p, L, resolve, ctx);
  if (st) {
    nc_cpu_free(c);
    return st;
  }
  *out = c;
  return NC_OK;
}

// ---- running kernels ----------------------------------------------------------------
typedef struct {
  nc_kernel_fn fn;
  void *const *bufs;
  const int64_t *args;
  int nthreads;
} nc_cpu_task;

static void nc_cpu_task_run(void *ctx, int task, int thread) {
  nc_cpu_task *t = ctx;
  (void)thread;
  t->fn(t->bufs, t->args, task, t->nthreads);
}

typedef struct {
  nc_gemm_fn fn;
  nc_gemm_args a;
  int nthreads;
} nc_gemm_task;

static void nc_gemm_task_run(void *ctx, int task, int thread) {
  nc_gemm_task *t = ctx;
  (void)thread;
  t->fn(&t->a, task, t->nthreads);
}

static nc_status nc_cpu_launch(nc_cpu *c, int ki, const nc_kernel *k, void *const *bufs, const int64_t *args);

nc_status nc_cpu_runner(void *ctx, int ki, const nc_kernel *k, void *const *bufs, const int64_t *args) {
  nc_cpu *c = ctx;
  if (ki < 0 || ki >= c->nkernels) return nc_errorf(NC_E_INTERNAL, "cpu: kernel index %d out of range", ki);
  double t0 = nc_clock_now();
  nc_status st = nc_cpu_launch(c, ki, k, bufs, args);
  double t1 = nc_clock_now();
  c->ktime[ki] += t1 - t0;
  c->kcalls[ki]++;
  if (c->tracing) {
    if (c->ntrace == c->captrace) {
      int cap = c->captrace ? 2 * c->captrace : 1024;
      void *q = realloc(c->trace, (size_t)cap * sizeof *c->trace);
      if (q) c->trace = q, c->captrace = cap;
    }
    if (c->ntrace < c->captrace) c->trace[c->ntrace++] = (struct nc_trace_ev){ki, t0, t1};
  }
  return st;
}

static int nc_cpu_cmp_time(const void *a, const void *b, void *ctx) {
  const double *t = ctx;
  double x = t[*(const int *)a], y = t[*(const int *)b];
  return x < y ? 1 : x > y ? -1 : 0;
}

void nc_cpu_profile_print(const nc_cpu *c, const nc_plan *p, int top, FILE *f) {
  int *order = malloc((size_t)c->nkernels * sizeof *order);
  if (!order) return;
  double total = 0;
  for (int i = 0; i < c->nkernels; i++) order[i] = i, total += c->ktime[i];
  qsort_r(order, (size_t)c->nkernels, sizeof *order, nc_cpu_cmp_time, c->ktime);
  fprintf(f, "kernel time %.3f s over %d kernels; top %d:\n", total, c->nkernels, top);
  for (int i = 0; i < top && i < c->nkernels; i++) {
    int k = order[i];
    fprintf(f, "  %6.1f%% %9.3f ms x%-4lld %s\n", total > 0 ? 100 * c->ktime[k] / total : 0, 1e3 * c->ktime[k],
            (long long)c->kcalls[k], p->kernels[k].k.name);
  }
  free(order);
}

// True when x is index arithmetic over kernel arguments only (no loop
// variable, load or accumulator), so it can be evaluated before the launch.
static bool nc_cpu_x_static(const nc_kernel *k, nc_kx x, int depth) {
  if (x == NC_KX_NONE) return true;
  if (depth > 32) return false;
  const nc_kexpr *e = nc_kx_get(k, x);
  switch (e->kind) {
    case NC_KX_CONST: case NC_KX_ARG: return true;
    case NC_KX_UNARY: case NC_KX_BINARY: case NC_KX_SELECT: case NC_KX_CAST:
      return nc_cpu_x_static(k, e->a, depth + 1) && nc_cpu_x_static(k, e->b, depth + 1) &&
             nc_cpu_x_static(k, e->c, depth + 1);
    default: return false;
  }
}

// Statements executed by the block starting at s, each loop counted with its
// trip count (a bound that depends on an outer loop counts as 64), saturating.
static double nc_cpu_work(const nc_kernel *k, nc_ks s, const int64_t *args, int depth) {
  double w = 0;
  for (; s != NC_KS_NONE && depth < 32; s = k->s[s].next) {
    const nc_kstmt *st = &k->s[s];
    if (st->kind != NC_KS_FOR) {
      w += 1;
      continue;
    }
    double trip = 64;
    if (nc_cpu_x_static(k, st->begin, 0) && nc_cpu_x_static(k, st->end, 0)) {
      int64_t b = nc_kernel_eval_index(k, st->begin, args), e = nc_kernel_eval_index(k, st->end, args);
      trip = e > b ? (double)(e - b) : 0;
    }
    w += trip * nc_cpu_work(k, st->body, args, depth + 1);
    if (w > 1e18) return 1e18;
  }
  return w;
}

// A bf16 GEMM on a CPU without AVX512_BF16 (t->fn is then the fp32 GEMM):
// A and B widened exactly to fp32 copies (C too when accumulated into), the
// fp32 GEMM, C rounded back to bf16 as nc_f32_to_bf16. The same products as
// the bf16 GEMM (bf16 x bf16 is exact in fp32); only the summation order differs.
static nc_status nc_cpu_gemm_bf16_widened(nc_cpu *c, nc_gemm_task *t) {
  nc_gemm_args *a = &t->a;
  size_t na = (size_t)((a->batch - 1) * a->stride_a + a->m * a->k);
  size_t nb = (size_t)((a->batch - 1) * a->stride_b + a->k * a->n);
  size_t nc = (size_t)(a->batch * a->m * a->n);
  size_t need = na + nb + nc;
  if (need > c->bf_cap) {
    float *s = realloc(c->bf_scratch, need * sizeof *s);
    if (!s) return nc_errorf(NC_E_NOMEM, "out of memory widening a bf16 matmul (%zu floats)", need);
    c->bf_scratch = s, c->bf_cap = need;
  }
  float *wa = c->bf_scratch, *wb = wa + na, *wc = wb + nb;
  const uint16_t *ha = (const uint16_t *)a->a, *hb = (const uint16_t *)a->b;
  uint16_t *hc = (uint16_t *)a->c;
  for (size_t i = 0; i < na; i++) wa[i] = nc_bf16_to_f32(ha[i]);
  for (size_t i = 0; i < nb; i++) wb[i] = nc_bf16_to_f32(hb[i]);
  if (a->beta != 0.0f)
    for (size_t i = 0; i < nc; i++) wc[i] = nc_bf16_to_f32(hc[i]);
  a->a = wa, a->b = wb, a->c = wc;
  nc_status st = nc_pool_run(c->pool, t->nthreads, nc_gemm_task_run, t);
  for (size_t i = 0; i < nc && !st; i++) hc[i] = nc_f32_to_bf16(wc[i]);
  return st;
}

static nc_status nc_cpu_launch(nc_cpu *c, int ki, const nc_kernel *k, void *const *bufs, const int64_t *args) {
  if (nc_kernel_is_template(k)) {
    const nc_kstmt *s = nc_ks_get(k, k->body);
    int64_t v[11] = {0};
    for (int i = 0; i < s->nargs && i < 11; i++) v[i] = nc_kernel_eval_index(k, s->args[i], args);
    bool ta = v[4], tb = v[5], sym = v[9];
    bool bf = k->bufs[s->cbufs[0]].dtype == NC_BF16;  // bf16 buffers: the bf16 GEMM (bf16 in/out, fp32 accumulation)
    nc_gemm_task t;
    memset(&t, 0, sizeof t);
    int gv = bf ? 8 + ta * 2 + tb : v[10] == 1 ? 16 + ta * 2 + tb : v[10] == 2 ? 20 + sym * 4 + ta * 2 + tb : sym * 4 + ta * 2 + tb;
    t.fn = c->gemm[gv];
    t.a.relu2 = !bf && v[10] == 1;
    t.a.sym = !bf && !t.a.relu2 && sym;  // (the relu2 variants were never symmetric)
    if (t.a.relu2 && s->ncbufs > 3) t.a.d = bufs[s->cbufs[3]];  // relu2 into D (else over C)
    const nc_gemm_knobs *kn = bf && !c->bf16_fallback ? &c->bf_knobs : &c->knobs;
    for (int i = 0; i < c->ntuned; i++)  // a GEMM of this variant tuned for exactly this shape
      if (c->tuned[i].variant == gv && c->tuned[i].batch == v[0] && c->tuned[i].m == v[1] && c->tuned[i].n == v[2] &&
          c->tuned[i].k == v[3]) {
        t.fn = c->tuned_fn[i];
        kn = &c->tuned[i].knobs;
        break;
      }
    t.a.a = bufs[s->cbufs[0]];
    t.a.b = bufs[s->cbufs[1]];
    t.a.c = bufs[s->cbufs[2]];
    t.a.batch = v[0];
    t.a.m = v[1];
    t.a.n = v[2];
    t.a.k = v[3];
    t.a.lda = ta ? v[1] : v[3];
    t.a.ldb = tb ? v[3] : v[2];
    t.a.ldc = v[2];
    t.a.stride_a = v[6];
    t.a.stride_b = v[7];
    t.a.stride_c = v[1] * v[2];
    t.a.alpha = 1.0f;
    t.a.beta = v[8] ? 1.0f : 0.0f;
    if (v[10] == 2 && s->nargs > 12 && s->ncbufs > 3) {  // the addend: C = alpha AB + beta E
      t.a.alpha = (float)nc_kx_get(k, s->args[11])->fval;
      t.a.beta = (float)nc_kx_get(k, s->args[12])->fval;
      t.a.e = bufs[s->cbufs[3]];
    }
    t.a.work = c->work;
    double work = (double)v[0] * (double)v[1] * (double)v[2] * (double)v[3];
    t.nthreads = work < (double)c->serial_work ? 1 : c->nthreads;
    // The skinny path (fp32, M <= 16, no A^T: decode) uses no workspace, so it
    // can be cut finer than one task per thread: when a worker comes late the
    // caller claims more of the pieces (runtime/threadpool.h).
    if (t.nthreads > 1 && !bf && !ta && !sym && v[1] <= 16) t.nthreads *= 2;
    // The packed path's dynamic split (codegen/gemm.h: units claimed from a
    // counter instead of a fixed half each), so that a thread slowed by a
    // neighbour does not hold the other up at the end of every GEMM.
    size_t len = bf ? 0 : nc_gemm_sync_want(kn, t.nthreads, v[0], v[1], v[2], t.a.sym);
    if (len) {
      if (len > c->sync_cap) {
        int64_t *q = realloc(c->sync, len * sizeof *q);
        if (q) c->sync = q, c->sync_cap = len;
      }
      if (len <= c->sync_cap) {
        memset(c->sync, 0, len * sizeof *c->sync);
        t.a.sync = c->sync;
      }
    }
    if (bf && c->bf16_fallback) return nc_cpu_gemm_bf16_widened(c, &t);
    // bf16 C over more than one K block: the fp32 partial sums go to a shadow
    // of C (nc_gemm_args.cw), C is rounded once (as PyTorch's bf16 matmul)
    if (bf && v[3] > kn->kc) {
      size_t need = (size_t)v[0] * (size_t)v[1] * (size_t)v[2];  // (batch, M, N), ldc N, stride_c M*N
      if (need > c->cw_cap) {
        float *q = realloc(c->cw, need * sizeof *q);
        if (!q)
          return nc_errorf(NC_E_NOMEM, "out of memory for the fp32 accumulator of bf16 GEMM '%s' (%zu floats)", k->name,
                           need);
        c->cw = q, c->cw_cap = need;
      }
      t.a.cw = c->cw;
    }
    return nc_pool_run(c->pool, t.nthreads, nc_gemm_task_run, &t);
  }
  // A kernel without a parallel loop (a reduction to a scalar, say) runs on
  // one thread: every thread would otherwise run all of it, racing on its
  // output (fatally when the output sits in place over an input).
  // The decision depends on the kernel and its arguments only: kept per kernel.
  struct nc_cpu_split *sp = &c->split[ki];
  int na = k->nargs < 4 ? k->nargs : 4;
  if (k->nargs > 4 || !sp->n || memcmp(sp->args, args, (size_t)na * sizeof *args)) {
    bool parallel = false;
    for (nc_ks s = k->body; s != NC_KS_NONE && !parallel; s = k->s[s].next)
      parallel = k->s[s].kind == NC_KS_FOR && (k->s[s].sched & NC_KSCHED_PARALLEL);
    sp->n = parallel && c->nthreads > 1 && nc_cpu_work(k, k->body, args, 0) >= (double)c->serial_work ? c->nthreads : 1;
    memcpy(sp->args, args, (size_t)na * sizeof *args);
  }
  int n = sp->n;
  nc_cpu_task t = {c->fns[ki], bufs, args, n};
  return nc_pool_run(c->pool, n, nc_cpu_task_run, &t);
}

// ---- tuned GEMMs (runtime/tunedb.h) ---------------------------------------------
nc_status nc_cpu_set_tuned(nc_cpu *c, const nc_cpu_tuned_gemm *t, int n, nc_cpu_resolver resolve, void *ctx) {
  if (n <= 0) return NC_OK;
  nc_cpu_tuned_gemm *tt = malloc((size_t)n * sizeof *tt);
  nc_gemm_fn *fns = malloc((size_t)n * sizeof *fns);
  if (!tt || !fns) {
    free(tt);
    free(fns);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  size_t ws = nc_gemm_workspace_size(&c->knobs, c->nthreads), wb = nc_gemm_bf16_workspace_size(&c->bf_knobs, c->nthreads);
  if (wb > ws) ws = wb;
  for (int i = 0; i < n; i++) {
    void *f;
    nc_status st = resolve(ctx, t[i].symbol, &f);
    if (st) {
      free(tt);
      free(fns);
      return st;
    }
    fns[i] = (nc_gemm_fn)f;
    tt[i] = t[i];
    bool bf = t[i].variant >= 8 && t[i].variant < 16;
    size_t w = bf ? nc_gemm_bf16_workspace_size(&t[i].knobs, c->nthreads) : nc_gemm_workspace_size(&t[i].knobs, c->nthreads);
    if (w > ws) ws = w;
  }
  float *work = aligned_alloc(64, (ws + 63) / 64 * 64);
  if (!work) {
    free(tt);
    free(fns);
    return nc_errorf(NC_E_NOMEM, "out of memory for the GEMM workspace");
  }
  free(c->work);
  c->work = work;
  free(c->tuned);
  free(c->tuned_fn);
  c->tuned = tt, c->tuned_fn = fns, c->ntuned = n;
  return NC_OK;
}

int nc_cpu_tuned_count(const nc_cpu *c) { return c->ntuned; }

bool nc_cpu_gemm_knobs_for(const nc_cpu *c, int variant, int64_t batch, int64_t m, int64_t n, int64_t k, nc_gemm_knobs *out) {
  for (int i = 0; i < c->ntuned; i++)
    if (c->tuned[i].variant == variant && c->tuned[i].batch == batch && c->tuned[i].m == m && c->tuned[i].n == n && c->tuned[i].k == k) {
      *out = c->tuned[i].knobs;
      return true;
    }
  *out = variant >= 8 && variant < 16 && !c->bf16_fallback ? c->bf_knobs : c->knobs;
  return false;
}
