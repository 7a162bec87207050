// The CPU device's JIT half: builds one LLVM module per plan (every unique
// kernel plus the GEMM variants it needs), compiles it through the kernel
// cache, and hands the functions to the executor (runtime/cpu.c) through
// nc_cpu_from_symbols. Also writes AOT object files. Everything that needs
// LLVM is here, so the executor links without it.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/gemm.h"
#include "codegen/gemm_bf16.h"
#include "codegen/jit.h"
#include "codegen/llvm_kir.h"
#include "runtime/cpu.h"
#include "runtime/cpu_impl.h"
#include "runtime/cpu_tune.h"
#include "runtime/kcache.h"
#include "runtime/threadpool.h"
#include "support/clock.h"

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>

// The plan's code is cut into NC_CPU_PARTS modules, balanced by estimated
// compile cost, and the parts are compiled on up to `threads` threads at once,
// each in its own LLVM context and target machine (LLVM's optimizer and code
// generator are single-threaded per module: one module kept one core busy for
// the whole ~9 s of a cold d4 training step on a Zen 3 VM). The number of parts
// is fixed, not the thread count, so the kernel cache's entries (one per part)
// are the same whatever --threads a later run uses.
#define NC_CPU_PARTS 4
// What a GEMM function (driver + micro-kernel + packing + skinny path) costs
// to compile, in average kernels (d4's training step on a Zen 3 VM: 103
// kernels ~3.5 s of CPU; nc_gemm_00 0.25 s, _01 0.5 s (the tb skinny path's
// blocks), _10 0.17 s, no skinny path with ta).
static double nc_cpu_gemm_cost(int v) {
  if (v >= 8 && v < 16) return 10;  // bf16
  return v & 2 ? 5 : v & 1 ? 15 : 7;
}

typedef struct {
  int *kpart;                       // per kernel: its part, -1 when not compiled here
  int gpart[NC_CPU_GEMM_VARIANTS];  // per GEMM variant: its part, -1 when unused
  int tpart;                        // the part holding the tuned GEMMs (-1: none)
  int nitems[NC_CPU_PARTS];
  int order[NC_CPU_PARTS];  // parts by decreasing estimated cost: the compile threads take them in this order
} nc_cpu_parts;

static void nc_cpu_parts_free(nc_cpu_parts *P) { free(P->kpart); }

// Kernel i gets code of its own: the first of its identical kernels, not a
// GEMM template (those run the GEMM variants).
static bool nc_cpu_owns_code(const nc_plan *p, const nc_cpu_layout *L, int i) {
  return L->same_as[i] == i && !nc_kernel_is_template(&p->kernels[i].k);
}

static int nc_cpu_part_least(const double *load) {
  int best = 0;
  for (int i = 1; i < NC_CPU_PARTS; i++)
    if (load[i] < load[best]) best = i;
  return best;
}

// Greedy largest-first: GEMM functions, the tuned GEMMs, then the kernels in
// plan order, each to the least loaded part. Deterministic for a plan.
static nc_status nc_cpu_parts_build(const nc_plan *p, const nc_cpu_layout *L, int ntuned, nc_cpu_parts *P) {
  memset(P, 0, sizeof *P);
  P->kpart = malloc(((size_t)p->nkernels + 1) * sizeof *P->kpart);
  if (!P->kpart) return nc_errorf(NC_E_NOMEM, "out of memory");
  double load[NC_CPU_PARTS] = {0}, total = 0;
  int nk = 0;
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    P->kpart[i] = -1;
    if (!nc_cpu_owns_code(p, L, i)) continue;
    total += k->nx + k->ns;
    nk++;
  }
  double avg = nk ? total / nk : 100.0;
  for (int v = 0; v < NC_CPU_GEMM_VARIANTS; v++) {
    P->gpart[v] = -1;
    if (!L->code[v]) continue;
    int q = nc_cpu_part_least(load);
    P->gpart[v] = q;
    load[q] += nc_cpu_gemm_cost(v) * avg;
    P->nitems[q]++;
  }
  P->tpart = -1;
  if (ntuned > 0) {
    int q = nc_cpu_part_least(load);
    P->tpart = q;
    load[q] += 10 * avg * ntuned;
    P->nitems[q]++;
  }
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (!nc_cpu_owns_code(p, L, i)) continue;
    int q = nc_cpu_part_least(load);
    P->kpart[i] = q;
    load[q] += k->nx + k->ns;
    P->nitems[q]++;
  }
  for (int i = 0; i < NC_CPU_PARTS; i++) P->order[i] = i;
  for (int i = 1; i < NC_CPU_PARTS; i++)  // insertion sort, largest first
    for (int j = i; j > 0 && load[P->order[j]] > load[P->order[j - 1]]; j--) {
      int t = P->order[j];
      P->order[j] = P->order[j - 1];
      P->order[j - 1] = t;
    }
  return NC_OK;
}

static void nc_cpu_print_kernels(const nc_plan *p, const nc_cpu_layout *L) {
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (!nc_cpu_owns_code(p, L, i)) continue;
    nc_buf b;
    nc_buf_init(&b);
    nc_kernel_print(k, &b);
    fputs(b.data ? b.data : "", stderr);
    nc_buf_free(&b);
  }
}

// One module with the unique kernels and GEMM variants of part `part` (all
// of them when P is NULL: the AOT object).
static nc_status nc_cpu_build_module(nc_jit *jit, const nc_plan *p, const nc_cpu_layout *L, const nc_gemm_knobs *knobs,
                                     const nc_cpu_parts *P, int part, LLVMModuleRef *out) {
  LLVMModuleRef m;
  NC_TRY(nc_jit_module_new(jit, "plan", &m));
  nc_status st = NC_OK;
  for (int i = 0; i < p->nkernels && !st; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (!nc_cpu_owns_code(p, L, i)) continue;
    if (P && P->kpart[i] != part) continue;
    st = nc_llvm_emit_kernel(jit, m, k, L->names[i]);
  }
  for (int v = 0; v < NC_CPU_GEMM_VARIANTS && !st; v++) {
    if (!L->code[v] || (P && P->gpart[v] != part)) continue;
    char name[32];
    nc_cpu_gemm_symbol(v, name);
    if (v >= 8 && !L->bf16_fallback) {  // bf16 buffers: codegen/gemm_bf16.c with bf16 memory (needs AVX512_BF16)
      nc_gemm_spec gs = {.name = name, .ta = (v / 2) % 2, .tb = v % 2, .knobs = nc_gemm_bf16_knobs_default(nc_jit_cpu(jit)),
                         .bf16_io = true};
      st = nc_status_prefix(nc_gemm_bf16_emit(m, nc_jit_cpu(jit), &gs), "bf16 matmuls (precision bf16) on the cpu device: ");
      continue;
    }
    // fp32 (every sym/ReLU^2/addend variant of this ta, tb), or bf16 without
    // AVX512_BF16: the fp32 GEMM on widened copies (runtime/cpu.c)
    nc_gemm_spec gs = {.name = name, .ta = (v / 2) % 2, .tb = v % 2, .knobs = *knobs};
    st = nc_gemm_emit(m, &gs);
  }
  if (st) {
    LLVMDisposeModule(m);
    return st;
  }
  *out = m;
  return NC_OK;
}

// The parts to compile, shared by the compile threads.
typedef struct {
  const nc_plan *p;
  const nc_cpu_layout *L;
  const nc_gemm_knobs *knobs;
  const nc_cpu_parts *P;
  const nc_cpu_tuned_gemm *tuned;
  int ntuned;
  bool avx2_only;
  bool pending[NC_CPU_PARTS];
  atomic_int next;
  void *obj[NC_CPU_PARTS];
  size_t size[NC_CPU_PARTS];
  nc_status st[NC_CPU_PARTS];
} nc_cpu_cjob;

// Build, optimize and emit part i in a jit of its own (context + target
// machine; no ORC): nothing LLVM is shared with other threads.
static nc_status nc_cpu_compile_part(nc_cpu_cjob *j, int i) {
  nc_jit_options jo = {.avx2_only = j->avx2_only, .no_jit = true};
  nc_jit *wj;
  NC_TRY(nc_jit_create(&jo, &wj));
  LLVMModuleRef m;
  nc_status st = nc_cpu_build_module(wj, j->p, j->L, j->knobs, j->P, i, &m);
  if (!st && j->P->tpart == i && (st = nc_cpu_tuned_emit(m, nc_jit_cpu(wj), j->tuned, j->ntuned))) LLVMDisposeModule(m);
  if (!st) st = nc_jit_emit_object(wj, m, NULL, &j->obj[i], &j->size[i]);  // one O3 + codegen for JIT and cache
  nc_jit_free(wj);
  return st;
}

static void *nc_cpu_compile_worker(void *arg) {
  nc_cpu_cjob *j = arg;
  for (int n; (n = atomic_fetch_add(&j->next, 1)) < NC_CPU_PARTS;) {
    int i = j->P->order[n];
    if (j->pending[i]) j->st[i] = nc_cpu_compile_part(j, i);
  }
  return NULL;
}

// Compiles the parts marked pending on up to nthreads threads (this one included).
static nc_status nc_cpu_compile_parts(nc_cpu_cjob *j, int nthreads) {
  int npending = 0;
  for (int i = 0; i < NC_CPU_PARTS; i++) npending += j->pending[i];
  int nt = nthreads < npending ? nthreads : npending;
  pthread_t tids[NC_CPU_PARTS];
  int started = 0;
  for (int t = 1; t < nt; t++, started++)
    if (pthread_create(&tids[started], NULL, nc_cpu_compile_worker, j) != 0) break;  // fewer threads: still correct
  nc_cpu_compile_worker(j);
  for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
  nc_status st = NC_OK;
  for (int i = 0; i < NC_CPU_PARTS; i++) {
    if (!j->st[i]) continue;
    if (!st) st = j->st[i];
    else nc_status_free(j->st[i]);
    j->st[i] = NC_OK;
  }
  return st;
}

static uint64_t nc_cpu_part_key(uint64_t key, int part) { return nc_hash_u64(key, 0x9a27000u + (uint64_t)part); }

static nc_status nc_cpu_jit_resolve(void *ctx, const char *name, void **fn) { return nc_jit_lookup(ctx, name, fn); }
static void nc_cpu_jit_release(void *ctx) { nc_jit_free(ctx); }

nc_status nc_cpu_compile(const nc_plan *p, const nc_cpu_opts *o, nc_cpu **out) {
  *out = NULL;
  double t0 = nc_clock_now();
  nc_jit_options jo = {.avx2_only = o && o->avx2_only};
  nc_jit *jit;
  NC_TRY(nc_jit_create(&jo, &jit));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  const nc_host_cpu *hc = nc_jit_cpu(jit);
  nc_cpu_layout L;
  nc_status st = nc_cpu_layout_build(p, hc->llvm_version, hc->cpu, hc->features, o && o->avx2_only, &kn, &L);
  // per-shape GEMMs from the tuning database (runtime/tunedb.h), part of the cache key
  nc_cpu_tuned_gemm tuned[NC_CPU_MAX_TUNED];
  int ntuned = st ? 0 : nc_cpu_tuned_collect(p, hc, o ? o->threads : 0, &L, &kn, tuned, NC_CPU_MAX_TUNED);
  if (!st) L.key = nc_cpu_tuned_key(L.key, tuned, ntuned);
  nc_cpu_parts P = {0};
  if (!st) st = nc_cpu_parts_build(p, &L, ntuned, &P);
  if (!st && o && o->verbose) nc_cpu_print_kernels(p, &L);
  // Each nonempty part: its cache entry, else compiled below.
  nc_cpu_cjob job = {.p = p, .L = &L, .knobs = &kn, .P = &P, .tuned = tuned, .ntuned = ntuned,
                     .avx2_only = o && o->avx2_only};
  bool hit = true;
  for (int i = 0; i < NC_CPU_PARTS && !st; i++) {
    if (!P.nitems[i]) continue;
    st = nc_kcache_get(nc_cpu_part_key(L.key, i), &job.obj[i], &job.size[i]);
    if (!st && !job.obj[i]) job.pending[i] = true, hit = false;
  }
  for (int i = 0; i < NC_CPU_PARTS && !st; i++) {
    if (!job.obj[i]) continue;
    nc_status ast = nc_jit_add_object(jit, job.obj[i], job.size[i], "cached plan part");
    if (!ast) continue;
    // an unusable entry: start a fresh JIT and compile every part
    nc_status_free(ast);
    nc_jit_free(jit);
    jit = NULL;
    st = nc_jit_create(&jo, &jit);
    for (int q = 0; q < NC_CPU_PARTS; q++) {
      free(job.obj[q]);
      job.obj[q] = NULL;
      job.pending[q] = P.nitems[q] > 0;
    }
    hit = false;
    break;
  }
  if (!st && !hit) {
    int nthreads = o && o->threads > 0 ? o->threads : nc_pool_default_threads();
    st = nc_cpu_compile_parts(&job, nthreads);
    for (int i = 0; i < NC_CPU_PARTS && !st; i++) {
      if (!job.pending[i]) continue;
      st = nc_jit_add_object(jit, job.obj[i], job.size[i], "plan part");
      if (!st) nc_status_free(nc_kcache_put(nc_cpu_part_key(L.key, i), job.obj[i], job.size[i]));  // an unwritable cache is not an error
    }
  }
  for (int i = 0; i < NC_CPU_PARTS; i++) free(job.obj[i]);
  nc_cpu_parts_free(&P);
  nc_cpu *c = NULL;
  if (!st) st = nc_cpu_from_symbols(p, o, &kn, &L, nc_cpu_jit_resolve, jit, &c);
  if (!st && (st = nc_cpu_set_tuned(c, tuned, ntuned, nc_cpu_jit_resolve, jit))) nc_cpu_free(c);
  nc_cpu_layout_free(&L);
  if (st) {
    nc_jit_free(jit);
    return st;
  }
  nc_cpu_set_release(c, nc_cpu_jit_release, jit);
  nc_cpu_set_compile_info(c, nc_clock_now() - t0, hit);
  *out = c;
  return NC_OK;
}

nc_status nc_cpu_emit_object(const nc_plan *p, const nc_cpu_opts *o, const char *path, nc_gemm_knobs *knobs_out,
                             nc_cpu_layout *L) {
  nc_jit_options jo = {.avx2_only = o && o->avx2_only, .no_jit = true};
  nc_jit *jit;
  NC_TRY(nc_jit_create(&jo, &jit));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  const nc_host_cpu *hc = nc_jit_cpu(jit);
  nc_status st = nc_cpu_layout_build(p, hc->llvm_version, hc->cpu, hc->features, o && o->avx2_only, &kn, L);
  LLVMModuleRef m;
  if (!st && o && o->verbose) nc_cpu_print_kernels(p, L);
  if (!st) st = nc_cpu_build_module(jit, p, L, &kn, NULL, 0, &m);
  if (!st) st = nc_jit_emit_object(jit, m, path, NULL, NULL);
  nc_jit_free(jit);
  if (st) nc_cpu_layout_free(L);
  else if (knobs_out) *knobs_out = kn;
  return st;
}
#else
nc_status nc_cpu_compile(const nc_plan *p, const nc_cpu_opts *o, nc_cpu **out) {
  (void)p;
  (void)o;
  *out = NULL;
  return nc_errorf(NC_E_UNSUPPORTED, "this build has no LLVM: JIT compilation is unavailable (use AOT plans or --device interp)");
}
nc_status nc_cpu_emit_object(const nc_plan *p, const nc_cpu_opts *o, const char *path, nc_gemm_knobs *knobs_out,
                             nc_cpu_layout *L) {
  (void)p; (void)o; (void)path; (void)knobs_out; (void)L;
  return nc_errorf(NC_E_UNSUPPORTED, "this build has no LLVM: cannot emit object files");
}
#endif
