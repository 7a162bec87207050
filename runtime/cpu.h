// The CPU device: a plan's kernels compiled to native code with LLVM (one
// module, JIT at start-up) and run on a thread pool. Template kernels
// (matmul/bmm) run through the GEMM generator (codegen/gemm.h).
#ifndef NC_RUNTIME_CPU_H
#define NC_RUNTIME_CPU_H

#include "passes/lower.h"
#include "runtime/plan_run.h"

typedef struct nc_cpu nc_cpu;

typedef struct {
  int threads;     // 0 = one per core
  bool avx2_only;  // restrict codegen to AVX2 (tests the fallback)
  bool verbose;    // print each kernel's kernel IR
} nc_cpu_opts;

// Compiles every kernel of p.
nc_status nc_cpu_compile(const nc_plan *p, const nc_cpu_opts *o, nc_cpu **out);
void nc_cpu_free(nc_cpu *c);
// A runner for nc_plan_run (ctx = the nc_cpu).
nc_status nc_cpu_runner(void *ctx, int ki, const nc_kernel *k, void *const *bufs, const int64_t *args);
double nc_cpu_compile_seconds(const nc_cpu *c);
int nc_cpu_unique_kernels(const nc_cpu *c);
bool nc_cpu_cache_hit(const nc_cpu *c);  // the code came from the on-disk kernel cache (runtime/kcache.h)  // compiled once each (identical kernels share code)
// Per-kernel time summed over all runs so far: the top kernels to f.
#include <stdio.h>
void nc_cpu_profile_print(const nc_cpu *c, const nc_plan *p, int top, FILE *f);

#endif
