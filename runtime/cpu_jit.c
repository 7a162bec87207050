// The CPU device's JIT half: builds one LLVM module per plan (every unique
// kernel plus the GEMM variants it needs), compiles it through the kernel
// cache, and hands the functions to the executor (runtime/cpu.c) through
// nc_cpu_from_symbols. Also writes AOT object files. Everything that needs
// LLVM is here, so the executor links without it.
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

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>

static double nc_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// One module with every unique kernel and the GEMM variants the plan needs.
static nc_status nc_cpu_build_module(nc_jit *jit, const nc_plan *p, const nc_cpu_layout *L, const nc_gemm_knobs *knobs,
                                     bool verbose, LLVMModuleRef *out) {
  LLVMModuleRef m;
  NC_TRY(nc_jit_module_new(jit, "plan", &m));
  nc_status st = NC_OK;
  for (int i = 0; i < p->nkernels && !st; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (L->same_as[i] != i || nc_kernel_is_template(k)) continue;
    if (verbose) {
      nc_buf b;
      nc_buf_init(&b);
      nc_kernel_print(k, &b);
      fputs(b.data ? b.data : "", stderr);
      nc_buf_free(&b);
    }
    st = nc_llvm_emit_kernel(jit, m, k, L->names[i]);
  }
  for (int v = 0; v < NC_CPU_GEMM_VARIANTS && !st; v++) {
    if (!L->need[v]) continue;
    char name[32];
    nc_cpu_gemm_symbol(v, name);
    if (v >= 20) {  // fp32 with an addend
      nc_gemm_spec gs = {name, (v / 2) % 2, v % 2, *knobs, v >= 24, false, false, true};
      st = nc_gemm_emit(m, &gs);
      continue;
    }
    if (v >= 16) {  // fp32 with the ReLU^2 epilogue
      nc_gemm_spec gs = {name, (v / 2) % 2, v % 2, *knobs, false, false, true, false};
      st = nc_gemm_emit(m, &gs);
      continue;
    }
    if (v >= 8) {  // bf16 buffers: codegen/gemm_bf16.c with bf16 memory (needs AVX512_BF16)
      nc_gemm_spec gs = {name, (v / 2) % 2, v % 2, nc_gemm_bf16_knobs_default(nc_jit_cpu(jit)), false, true, false, false};
      st = nc_status_prefix(nc_gemm_bf16_emit(m, nc_jit_cpu(jit), &gs), "bf16 matmuls (precision bf16) on the cpu device: ");
      continue;
    }
    nc_gemm_spec gs = {name, (v / 2) % 2, v % 2, *knobs, v >= 4, false, false, false};
    st = nc_gemm_emit(m, &gs);
  }
  if (st) {
    LLVMDisposeModule(m);
    return st;
  }
  *out = m;
  return NC_OK;
}

static nc_status nc_cpu_jit_resolve(void *ctx, const char *name, void **fn) { return nc_jit_lookup(ctx, name, fn); }
static void nc_cpu_jit_release(void *ctx) { nc_jit_free(ctx); }

nc_status nc_cpu_compile(const nc_plan *p, const nc_cpu_opts *o, nc_cpu **out) {
  *out = NULL;
  double t0 = nc_now();
  nc_jit_options jo = {.avx2_only = o && o->avx2_only};
  nc_jit *jit;
  NC_TRY(nc_jit_create(&jo, &jit));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  const nc_host_cpu *hc = nc_jit_cpu(jit);
  nc_cpu_layout L;
  nc_status st = nc_cpu_layout_build(p, hc->llvm_version, hc->cpu, hc->features, o && o->avx2_only, &kn, &L);
  // per-shape GEMMs from the tuning database (runtime/tunedb.h), part of the cache key
  nc_cpu_tuned_gemm tuned[NC_CPU_MAX_TUNED];
  int ntuned = st ? 0 : nc_cpu_tuned_collect(p, hc, o ? o->threads : 0, L.need, &kn, tuned, NC_CPU_MAX_TUNED);
  if (!st) L.key = nc_cpu_tuned_key(L.key, tuned, ntuned);
  bool hit = false;
  void *cached = NULL;
  size_t cached_size = 0;
  if (!st) st = nc_kcache_get(L.key, &cached, &cached_size);
  if (!st && cached) {
    nc_status ast = nc_jit_add_object(jit, cached, cached_size, "cached plan");
    free(cached);
    if (!ast) {
      hit = true;
    } else {  // an unusable entry: start a fresh JIT and compile
      nc_status_free(ast);
      nc_jit_free(jit);
      jit = NULL;
      st = nc_jit_create(&jo, &jit);
    }
  }
  if (!st && !hit) {
    LLVMModuleRef m;
    void *obj = NULL;
    size_t obj_size = 0;
    st = nc_cpu_build_module(jit, p, &L, &kn, o && o->verbose, &m);
    if (!st && (st = nc_cpu_tuned_emit(m, tuned, ntuned))) LLVMDisposeModule(m);
    if (!st) st = nc_jit_emit_object(jit, m, NULL, &obj, &obj_size);  // one O3 + codegen for JIT and cache
    if (!st) st = nc_jit_add_object(jit, obj, obj_size, "plan");
    if (!st) nc_status_free(nc_kcache_put(L.key, obj, obj_size));  // an unwritable cache is not an error
    free(obj);
  }
  nc_cpu *c = NULL;
  if (!st) st = nc_cpu_from_symbols(p, o, &kn, &L, nc_cpu_jit_resolve, jit, &c);
  if (!st && (st = nc_cpu_set_tuned(c, tuned, ntuned, nc_cpu_jit_resolve, jit))) nc_cpu_free(c);
  nc_cpu_layout_free(&L);
  if (st) {
    nc_jit_free(jit);
    return st;
  }
  nc_cpu_set_release(c, nc_cpu_jit_release, jit);
  nc_cpu_set_compile_info(c, nc_now() - t0, hit);
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
  if (!st) st = nc_cpu_build_module(jit, p, L, &kn, o && o->verbose, &m);
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
