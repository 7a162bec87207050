// Ahead-of-time plans: a graph compiled once by `nanochat compile` into a
// folder, then linked into a program and run without LLVM.
//
//   DIR/graph.ncir       the graph as given (text IR, ir/text.h)
//   DIR/plan.o           the plan's kernels and GEMMs (nc_cpu_emit_object)
//   DIR/plan_symbols.c   extern declarations of every symbol of plan.o and a
//                        table nc_aot_symbols[] / nc_aot_nsymbols of them
//   DIR/manifest.json    format version, file names, the target (LLVM
//                        version, CPU, features, avx2_only), the GEMM knobs,
//                        the layout key, kernel count and symbols
//
// A program links plan.o and plan_symbols.c, then nc_aot_load(DIR,
// nc_aot_symbols, nc_aot_nsymbols, ...) re-reads the graph, rebuilds the plan
// (the same passes as the compiler), recomputes the layout for the manifest's
// target and refuses to run unless its key equals the manifest's: a graph
// edited since, or plan.o built by another nanochat-c version, is an error,
// never wrong results. The loader needs no LLVM (docs/runtime.md).
#ifndef NC_RUNTIME_AOT_H
#define NC_RUNTIME_AOT_H

#include "ir/graph.h"
#include "passes/lower.h"
#include "runtime/cpu.h"
#include "runtime/interp.h"
#include "support/buf.h"

#define NC_AOT_FORMAT "nanochat-aot"
#define NC_AOT_VERSION 1
#define NC_AOT_MANIFEST "manifest.json"
#define NC_AOT_GRAPH "graph.ncir"
#define NC_AOT_OBJECT "plan.o"
#define NC_AOT_SYMBOLS_C "plan_symbols.c"

// One entry of the generated table: a symbol of plan.o and its address.
typedef struct {
  const char *name;
  void *fn;
} nc_aot_symbol;

// The target plan.o was generated for (what the layout key covers besides
// the plan itself).
typedef struct {
  char llvm_version[32];
  char cpu[64];
  char features[4096];
  bool avx2_only;
  nc_gemm_knobs knobs;
} nc_aot_target;

// g (not modified) -> decompose + dce (a copy) -> nc_plan_build with fusion:
// exactly what runtime/exec.c does for the cpu device. *lowered is the graph
// the plan runs on (feed its leaves).
nc_status nc_aot_plan_build(const nc_graph *g, nc_graph **lowered, nc_plan **plan);

// The manifest (JSON text) and the generated C table for a compiled plan.
nc_status nc_aot_manifest_text(const nc_graph *g, const nc_plan *p, const nc_cpu_layout *L, const nc_aot_target *t,
                               nc_buf *out);
nc_status nc_aot_symbols_c(const nc_plan *p, const nc_cpu_layout *L, nc_buf *out);

typedef struct nc_aot nc_aot;

// Loads the plan compiled into dir; table/n: the linked symbols (from the
// generated plan_symbols.c). o: threads (0 = one per core); avx2_only and
// verbose are ignored (the manifest decides the code). Errors name the file
// and the field, the symbol or the mismatch.
nc_status nc_aot_load(const char *dir, const nc_aot_symbol *table, int n, const nc_cpu_opts *o, nc_aot **out);
// outputs[k] receives output k of the graph (owned), as nc_interp_run. Buffers
// persist across runs (one arena, reused while the symbol sizes stay).
nc_status nc_aot_run(nc_aot *a, const nc_feed *feeds, int nfeeds, nc_tensor *outputs);
const nc_graph *nc_aot_graph(const nc_aot *a);       // the graph as given (outputs, names)
const nc_graph *nc_aot_feed_graph(const nc_aot *a);  // feed exactly its leaves (dce may drop unused ones)
int nc_aot_nkernels(const nc_aot *a);
void nc_aot_free(nc_aot *a);

#endif
