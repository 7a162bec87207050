// The CPU device and the tuning database (runtime/tunedb.h): which tuned fp32
// GEMMs a plan gets (nc_cpu_tuned_collect, no LLVM) and their code
// (nc_cpu_tuned_emit, runtime/cpu_jit.c calls it while building the plan's module).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

// Could some fp32 GEMM of p of this variant have this shape? (Dims that
// depend on symbols match anything.)
static bool nc_ct_plan_may_use(const nc_plan *p, int variant, const int64_t dims[4]) {
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (!nc_kernel_is_template(k)) continue;
    const nc_kstmt *s = nc_ks_get(k, k->body);
    if (k->bufs[s->cbufs[0]].dtype != NC_F32) continue;
    bool ok = true;
    int64_t flag[3] = {0, 0, 0};  // ta, tb, sym
    for (int a = 0; a < 3; a++) {
      int ai = a < 2 ? 4 + a : 9;
      if (ai >= s->nargs) continue;
      if (!nc_ct_const(k, s->args[ai], 0)) ok = false;
      else flag[a] = nc_kernel_eval_index(k, s->args[ai], NULL);
    }
    if (s->nargs > 10 && (!nc_ct_const(k, s->args[10], 0) || nc_kernel_eval_index(k, s->args[10], NULL) != 0)) continue;  // relu2
    if (!ok || (flag[2] ? 4 : 0) + (flag[0] ? 2 : 0) + (flag[1] ? 1 : 0) != variant) continue;
    for (int d = 0; d < 4 && ok; d++)
      if (nc_ct_const(k, s->args[d], 0) && nc_kernel_eval_index(k, s->args[d], NULL) != dims[d]) ok = false;
    if (ok) return true;
  }
  return false;
}

int nc_cpu_tuned_collect(const nc_plan *p, const nc_host_cpu *hc, int nthreads, const bool *need, const nc_gemm_knobs *def,
                         nc_cpu_tuned_gemm *out, int max) {
  nc_tunedb *db = nc_tunedb_open_default();
  if (!db) return 0;
  if (nthreads <= 0) nthreads = nc_pool_default_threads();
  char device[192], driver[192], kernel[128];
  nc_tune_cpu_ids(hc, device, sizeof device, driver, sizeof driver);
  int n = 0;
  for (int v = 0; v < 8; v++) {
    if (!need[v]) continue;
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
      nc_status st = nc_tune_entry_apply(es[i], &nc_gemm_knob_space, &kn);
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
      int j = 0;  // equal knobs share one function
      while (j < n && !(out[j].variant == v && !memcmp(&out[j].knobs, &kn, sizeof kn))) j++;
      snprintf(t->symbol, sizeof t->symbol, "nc_gemm_%d_t%d", v, j);
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
nc_status nc_cpu_tuned_emit(LLVMModuleRef m, const nc_cpu_tuned_gemm *t, int n) {
  for (int i = 0; i < n; i++) {
    bool first = true;
    for (int j = 0; j < i && first; j++) first = strcmp(t[j].symbol, t[i].symbol) != 0;
    if (!first) continue;
    nc_gemm_spec gs = {.name = t[i].symbol, .ta = (t[i].variant >> 1) & 1, .tb = t[i].variant & 1, .knobs = t[i].knobs};
    NC_TRY(nc_gemm_emit(m, &gs));
  }
  return NC_OK;
}
#endif
