// A small wrapper over the LLVM C API: one pipeline for JIT and AOT.
//
//   nc_jit_create            target machine for the host CPU (or AVX2 only)
//   nc_jit_module_new        an empty module in the jit's context, with the
//                            target's triple and data layout
//   ... build IR with the LLVM C API (codegen/gemm.c, ...) ...
//   nc_jit_add_module        verify + default<O3> + hand to ORC LLJIT
//   nc_jit_lookup            address of a JIT-compiled symbol
//   nc_jit_emit_object       verify + default<O3> + write an object file
//
// The same nc_jit_optimize runs before both ends, so what the JIT runs is what
// an AOT object would contain. An nc_jit is not thread-safe: build, add and
// look up from one thread; the compiled functions themselves may be called
// from any number of threads.
#ifndef NC_CODEGEN_JIT_H
#define NC_CODEGEN_JIT_H

#include <stdbool.h>
#include <stddef.h>

#include "codegen/host.h"
#include "support/status.h"

#ifdef NC_HAVE_LLVM
#include <llvm-c/Types.h>
#endif

typedef struct nc_jit nc_jit;

typedef struct {
  bool avx2_only;  // drop AVX-512 (and AVX10/AMX) features: tests the fallback
  int opt_level;   // 0..3 for both the IR pipeline and codegen; 0 in opts means 3
  bool no_jit;     // AOT only: do not create the ORC LLJIT (saves ~ms at start-up)
} nc_jit_options;

// opts may be NULL (host CPU, O3, JIT enabled).
nc_status nc_jit_create(const nc_jit_options *opts, nc_jit **out);
// Disposes the JIT and everything it compiled; function pointers from
// nc_jit_lookup become invalid. NULL is fine.
void nc_jit_free(nc_jit *jit);

// The CPU the code is generated for: the host, with avx512* cleared when
// avx2_only was asked. Generators pick vector widths from this.
const nc_host_cpu *nc_jit_cpu(const nc_jit *jit);

#ifdef NC_HAVE_LLVM
// Modules must be built in this context (it belongs to the jit).
LLVMContextRef nc_jit_context(nc_jit *jit);
// A fresh module with the target's triple and data layout set. The caller
// owns it until it is passed to nc_jit_add_module / nc_jit_emit_object (or
// disposes it with LLVMDisposeModule before nc_jit_free).
nc_status nc_jit_module_new(nc_jit *jit, const char *name, LLVMModuleRef *out);
// Verify, then run the new-pass-manager pipeline "default<On>". Called by the
// two functions below; exposed for tests and IR dumps.
nc_status nc_jit_optimize(nc_jit *jit, LLVMModuleRef m);
// Optimize and add to the JIT. Takes ownership of m, also on failure.
nc_status nc_jit_add_module(nc_jit *jit, LLVMModuleRef m);
// Optimize and write a relocatable object file. path == NULL writes to memory
// instead: *data (malloc'ed, free() it) and *size. Takes ownership of m, also
// on failure. data/size may be NULL when path is given.
nc_status nc_jit_emit_object(nc_jit *jit, LLVMModuleRef m, const char *path, void **data,
                             size_t *size);
#endif

// Adds a relocatable object (from nc_jit_emit_object, e.g. read back from a
// cache) to the JIT; name labels it in errors.
nc_status nc_jit_add_object(nc_jit *jit, const void *data, size_t size, const char *name);

// Address of a symbol added with nc_jit_add_module (compiles it on first use).
nc_status nc_jit_lookup(nc_jit *jit, const char *name, void **out);

#endif
