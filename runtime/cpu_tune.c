// The CPU device and the tuning database (runtime/tunedb.h): which tuned GEMMs
// a plan gets, for every GEMM variant of runtime/cpu.h (plain, symmetric,
// ReLU^2 and addend fp32 launches; bf16-buffer launches) (nc_cpu_tuned_collect,
// no LLVM) and their code (nc_cpu_tuned_emit, runtime/cpu_jit.c calls it while
// building the plan's module).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/gemm_bf16.h"
#include "codegen/tune.h"
#include "runtime/cpu.h"
#include "runtime/cpu_tune.h"
#include "runtime/kir_eval.h"
#include "runtime/threadpool.h"
#include "runtime/tunedb.h"
#include "support/buf.h"

// True when x is constant (no kernel argument, loop variable or load).
static bool nc_ct_const(const nc_kernel *k, nc_kx x, int depth) {
  if (x == NC_KX_NONE) return true;
  if (depth > 32) return false;
  const nc_kexpr *e = nc_kx_get(k, x);
  switch (e->kind) {
    case NC_KX_CONST: return true;
    case NC_KX_UNARY: case NC_KX_BINARY: case NC_KX_SELECT: case NC_KX_CAST:
      return nc_ct_const(k, e->a, depth + 1) && nc_ct_const(k, e->b, depth + 1) && nc_ct_const(k, e->c, depth + 1);
    default: return false;
  }
}

// The runtime/cpu.h GEMM variant of template kernel k (as runtime/cpu.c's
// launch picks it), or -1 when a flag is not a constant.
static int nc_ct_variant(const nc_kernel *k, const nc_kstmt *s) {
  int64_t f[11] = {0};  // ta (4), tb (5), sym (9), epilogue (10)
  const int at[4] = {4, 5, 9, 10};
  for (int a = 0; a < 4; a++) {
    if (at[a] >= s->nargs) continue;
    if (!nc_ct_const(k, s->args[at[a]], 0)) return -1;
    f[at[a]] = nc_kernel_eval_index(k, s->args[at[a]], NULL);
  }
  int ta = f[4] ? 1 : 0, tb = f[5] ? 1 : 0, sym = f[9] ? 1 : 0;
  if (k->bufs[s->cbufs[0]].dtype == NC_BF16) return 8 + ta * 2 + tb;
  return f[10] == 1 ? 16 + ta * 2 + tb : f[10] == 2 ? 20 + sym * 4 + ta * 2 + tb : sym * 4 + ta * 2 + tb;
}

// Could some GEMM of p of this variant have this shape? (Dims that depend on
// symbols match anything.)
static bool nc_ct_plan_may_use(const nc_plan *p, int variant, const int64_t dims[4]) {
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (!nc_kernel_is_template(k)) continue;
    const nc_kstmt *s = nc_ks_get(k, k->body);
    if (s->tmpl != NC_KT_MATMUL || nc_ct_variant(k, s) != variant) continue;
    bool ok = true;
    for (int d = 0; d < 4 && ok; d++)
      if (nc_ct_const(k, s->args[d], 0) && nc_kernel_eval_index(k, s->args[d], NULL) != dims[d]) ok = false;
    if (ok) return true;
  }
  return false;
}

int nc_cpu_tuned_collect(const nc_plan *p, const nc_host_cpu *hc, int nthreads, const nc_cpu_layout *L, const nc_gemm_knobs *def32,
                         nc_cpu_tuned_gemm *out, int max) {
  nc_tunedb *db = nc_tunedb_open_default();
  if (!db) return 0;
  if (nthreads <= 0) nthreads = nc_pool_default_threads();
  char device[192], driver[192], kernel[128];
  nc_tune_cpu_ids(hc, device, sizeof device, driver, sizeof driver);
  int n = 0;
  nc_gemm_knobs def16 = nc_gemm_bf16_knobs_default(hc);
  for (int v = 0; v < NC_CPU_GEMM_VARIANTS; v++) {
    // bf16 buffers without AVX512_BF16 run the fp32 GEMM on widened copies: untuned
    if (!L->need[v] || (v >= 8 && v < 16 && L->bf16_fallback)) continue;
    bool bf = v >= 8 && v < 16;
    const nc_gemm_knobs *def = bf ? &def16 : def32;
    const nc_knob_space *sp = bf ? &nc_gemm_bf16_knob_space : &nc_gemm_knob_space;
    nc_tune_cpu_kernel(v, def->vw, nthreads, kernel, sizeof kernel);
    const nc_tune_entry *es[NC_CPU_MAX_TUNED];
    int ne = nc_tunedb_select(db, device, driver, kernel, es, NC_CPU_MAX_TUNED);
    for (int i = 0; i < ne && n < max; i++) {
      long long b, m, nn, k;
      char tail;
      if (sscanf(es[i]->shape, "batch=%lld m=%lld n=%lld k=%lld%c", &b, &m, &nn, &k, &tail) != 4 || b < 1 || m < 1 || nn < 1 || k < 1) {
        nc_tunedb_warn(db, "tuning database %s: entry (%s, %s): shape '%s' is not 'batch=B m=M n=N k=K'; ignored", nc_tunedb_file(db),
                       es[i]->device, es[i]->kernel, es[i]->shape);
        continue;
      }
      nc_gemm_knobs kn = *def;
      nc_status st = nc_tune_entry_apply(es[i], sp, &kn);
      if (st) {
        nc_tunedb_warn(db, "tuning database %s: entry (%s, %s, %s): %s (stale); ignored", nc_tunedb_file(db), es[i]->device, es[i]->kernel,
                       es[i]->shape, nc_status_msg(st));
        nc_status_free(st);
        continue;
      }
      if (!memcmp(&kn, def, sizeof kn)) continue;  // the default won: nothing to compile
      int64_t dims[4] = {b, m, nn, k};
      if (!nc_ct_plan_may_use(p, v, dims)) {
        const char *dbg = getenv("NC_DEBUG");
        if (dbg && atoi(dbg) >= 2) fprintf(stderr, "cpu: tuned GEMM %s %s: no such GEMM in this plan\n", es[i]->kernel, es[i]->shape);
        continue;
      }
      nc_cpu_tuned_gemm *t = &out[n];
      *t = (nc_cpu_tuned_gemm){.variant = v, .batch = b, .m = m, .n = nn, .k = k, .knobs = kn};
      int j = 0;  // equal knobs of one function (nc_cpu_gemm_code: every fp32 variant of a ta, tb) share it
      while (j < n && !(nc_cpu_gemm_code(out[j].variant) == nc_cpu_gemm_code(v) && !memcmp(&out[j].knobs, &kn, sizeof kn))) j++;
      snprintf(t->symbol, sizeof t->symbol, "nc_gemm_%d_t%d", nc_cpu_gemm_code(v), j);
      n++;
    }
  }
  const char *dbg = getenv("NC_DEBUG");
  if (dbg && atoi(dbg) >= 1) fprintf(stderr, "cpu: %d tuned GEMM shapes from %s\n", n, nc_tunedb_file(db));
  nc_tunedb_free(db);
  return n;
}

uint64_t nc_cpu_tuned_key(uint64_t key, const nc_cpu_tuned_gemm *t, int n) {
  for (int i = 0; i < n; i++) {
    key = nc_hash_u64(key, (uint64_t)t[i].variant);
    key = nc_hash_bytes(key, &t[i].knobs, sizeof t[i].knobs);
    key = nc_hash_bytes(key, t[i].symbol, strlen(t[i].symbol));
  }
  return key;
}

#ifdef NC_HAVE_LLVM
nc_status nc_cpu_tuned_emit(LLVMModuleRef m, const nc_host_cpu *hc, const nc_cpu_tuned_gemm *t, int n) {
  for (int i = 0; i < n; i++) {
    bool first = true;
    for (int j = 0; j < i && first; j++) first = strcmp(t[j].symbol, t[i].symbol) != 0;
    if (!first) continue;
    bool bf = t[i].variant >= 8 && t[i].variant < 16;  // bf16 memory, as the plan's bf16 GEMMs (runtime/cpu_jit.c)
    nc_gemm_spec gs = {.name = t[i].symbol, .ta = (t[i].variant >> 1) & 1, .tb = t[i].variant & 1, .knobs = t[i].knobs, .bf16_io = bf};
    NC_TRY(bf ? nc_gemm_bf16_emit(m, hc, &gs) : nc_gemm_emit(m, &gs));
  }
  return NC_OK;
}
#endif
