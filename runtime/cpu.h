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
  // Launches whose estimated work (innermost statements executed; a GEMM's
  // batch*M*N*K) is below this run on the calling thread alone, without
  // waking the pool (a fork-join costs ~5 us idle, up to ~1 ms on a loaded
  // machine). 0: the environment's NC_CPU_SERIAL_WORK, else
  // NC_CPU_SERIAL_WORK_DEFAULT; < 0: every parallel kernel uses every thread.
  int64_t serial_work;
} nc_cpu_opts;

#define NC_CPU_SERIAL_WORK_DEFAULT 32768

#include "codegen/gemm.h"

// Compiles every kernel of p (JIT, through the on-disk kernel cache).
nc_status nc_cpu_compile(const nc_plan *p, const nc_cpu_opts *o, nc_cpu **out);

// GEMM variants (the kinds of GEMM launch of a plan): 0..7 fp32 (sym*4 + ta*2 + tb), 8..11
// bf16 buffers (8 + ta*2 + tb), 16..19 fp32 with the ReLU^2 epilogue (16 + ta*2 + tb), 20..27
// fp32 with an addend (20 + sym*4 + ta*2 + tb). Every fp32 variant of one (ta, tb) runs the
// same function, nc_gemm_<ta><tb> (sym, ReLU^2 and the addend are switches of its argument
// block: codegen/gemm.h), so a plan compiles at most 4 fp32 GEMMs; bf16 ones nc_gemmbf_<ta><tb>.
#define NC_CPU_GEMM_VARIANTS 28
// The variant whose function runs variant v: ta*2 + tb for fp32, v itself for bf16.
static inline int nc_cpu_gemm_code(int v) { return v >= 8 && v < 16 ? v : v % 4; }

// Which kernels share code and the symbol of each (nck<i>_<name>; GEMMs are
// nc_gemm_<ta><tb>), plus the plan's cache key. Deterministic for a plan,
// CPU and knobs: the JIT, the kernel cache and AOT object files agree on it.
typedef struct {
  int *same_as;        // per kernel: the kernel whose code it runs
  char (*names)[96];   // per kernel: its function's symbol
  bool need[NC_CPU_GEMM_VARIANTS];  // GEMM variants used (see NC_CPU_GEMM_VARIANTS)
  bool code[NC_CPU_GEMM_VARIANTS];  // GEMM functions compiled: nc_cpu_gemm_code of the variants used
  uint64_t key;
  int nunique;
  bool bf16_fallback;  // no AVX512_BF16 (or avx2_only): bf16 matmuls run the fp32 GEMM
                       // on widened copies, C rounded back to bf16 (nc_f32_to_bf16)
} nc_cpu_layout;
nc_status nc_cpu_layout_build(const nc_plan *p, const char *llvm_version, const char *cpu, const char *features,
                              bool avx2_only, const nc_gemm_knobs *knobs, nc_cpu_layout *L);
void nc_cpu_layout_free(nc_cpu_layout *L);
void nc_cpu_gemm_symbol(int variant, char out[32]);  // the function of variant (nc_cpu_gemm_code)

// AOT: writes p's code as a relocatable object file at path (same pipeline as
// the JIT) and fills the layout and the GEMM knobs it was built with.
nc_status nc_cpu_emit_object(const nc_plan *p, const nc_cpu_opts *o, const char *path, nc_gemm_knobs *knobs,
                             nc_cpu_layout *L);
// An executor over functions linked ahead of time: resolve maps each symbol
// of the layout to its address. Needs no LLVM.
typedef nc_status (*nc_cpu_resolver)(void *ctx, const char *symbol, void **fn);
nc_status nc_cpu_from_symbols(const nc_plan *p, const nc_cpu_opts *o, const nc_gemm_knobs *knobs, const nc_cpu_layout *L,
                              nc_cpu_resolver resolve, void *ctx, nc_cpu **out);
void nc_cpu_free(nc_cpu *c);
// Tuned GEMMs (the tuning database, runtime/tunedb.h): a launch of GEMM
// variant `variant` (NC_CPU_GEMM_VARIANTS' numbering: plain, symmetric, ReLU^2
// and addend fp32, bf16 buffers) with exactly this batch/m/n/k runs symbol,
// the variant's function (nc_cpu_gemm_code: fp32 with the epilogue switched in
// its argument block; the bf16 GEMM with bf16 memory) compiled with these
// knobs, instead of the default one. Not in ahead-of-time plans (runtime/aot.h:
// their object holds the default GEMMs only).
typedef struct {
  int variant;
  int64_t batch, m, n, k;
  nc_gemm_knobs knobs;
  char symbol[40];
} nc_cpu_tuned_gemm;
#define NC_CPU_MAX_TUNED 64
// Installs them on c (symbols through resolve) and grows the workspace.
nc_status nc_cpu_set_tuned(nc_cpu *c, const nc_cpu_tuned_gemm *t, int n, nc_cpu_resolver resolve, void *ctx);
int nc_cpu_tuned_count(const nc_cpu *c);
// The knobs a GEMM launch of this variant (NC_CPU_GEMM_VARIANTS) and shape
// runs with (bf16 variants: the bf16 GEMM's); true when they come from the
// tuning database.
bool nc_cpu_gemm_knobs_for(const nc_cpu *c, int variant, int64_t batch, int64_t m, int64_t n, int64_t k, nc_gemm_knobs *out);
// The database's entries for p's GEMM variants on this CPU (runtime/cpu_tune.c;
// the variants L->need, bf16 ones only without L->bf16_fallback; def32 the
// fp32 defaults, the bf16 ones nc_gemm_bf16_knobs_default): entries of another
// driver, or whose knobs are invalid, are warned about and skipped; entries
// whose static dims match no GEMM of p are skipped. Returns how many were
// written to out (symbols nc_gemm_<nc_cpu_gemm_code>_t<j>, shared by equal knobs).
int nc_cpu_tuned_collect(const nc_plan *p, const nc_host_cpu *hc, int nthreads, const nc_cpu_layout *L, const nc_gemm_knobs *def32,
                         nc_cpu_tuned_gemm *out, int max);
// key folded with the tuned GEMMs (the kernel cache's key must cover them).
uint64_t nc_cpu_tuned_key(uint64_t key, const nc_cpu_tuned_gemm *t, int n);
// A runner for nc_plan_run (ctx = the nc_cpu).
nc_status nc_cpu_runner(void *ctx, int ki, const nc_kernel *k, void *const *bufs, const int64_t *args);
double nc_cpu_compile_seconds(const nc_cpu *c);
int nc_cpu_unique_kernels(const nc_cpu *c);
bool nc_cpu_cache_hit(const nc_cpu *c);  // the code came from the on-disk kernel cache (runtime/kcache.h)  // compiled once each (identical kernels share code)
// Per-kernel time summed over all runs so far: the top kernels to f.
#include <stdio.h>
void nc_cpu_profile_print(const nc_cpu *c, const nc_plan *p, int top, FILE *f);
// Records every kernel launch from now on; nc_cpu_trace_write stops and
// writes them as Chrome trace JSON (chrome://tracing, Perfetto).
void nc_cpu_trace_start(nc_cpu *c);
nc_status nc_cpu_trace_write(nc_cpu *c, const nc_plan *p, const char *path);

#endif
