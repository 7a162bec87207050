// LLVM codegen of kernel IR (ir/kir.h) through the LLVM C API.
//
// Each kernel becomes
//   void <name>(void *const *bufs, const int64_t *args, int64_t thread, int64_t nthreads)
// whose outermost parallel loop is split into nthreads contiguous chunks, so
// every thread of a pool calls the same function with its own index. Loops
// are emitted plainly, with noalias buffers, fast-math reassociation on
// reductions and the vectorize/unroll schedule as loop metadata, and the O3
// pipeline (codegen/jit.h) vectorizes them for the host's vector width.
// Kernels whose body is a template call are not emitted here: the runtime
// runs templates through their own generators (codegen/gemm.h).
#ifndef NC_CODEGEN_LLVM_KIR_H
#define NC_CODEGEN_LLVM_KIR_H

#include <stdbool.h>
#include <stddef.h>

#include "codegen/jit.h"
#include "ir/kir.h"

typedef void (*nc_kernel_fn)(void *const *bufs, const int64_t *args, int64_t thread, int64_t nthreads);

// nc_kernel_is_template (a single template call, nothing to emit) is in ir/kir.h.

#ifdef NC_HAVE_LLVM
// Emits kernel k as function `fname` into module m (built in jit's context).
nc_status nc_llvm_emit_kernel(nc_jit *jit, LLVMModuleRef m, const nc_kernel *k, const char *fname);
// Sets the llvm.loop metadata of br (a loop's back edge) to a loop id with the
// properties props[0..n) (n <= 7; MD nodes such as !{!"llvm.loop.unroll.disable"}).
// A loop id must be a distinct node whose first operand is itself (else LLVM's
// Loop::getLoopID ignores it): built around a temporary node that is then
// replaced by the id. Used by this file and the GEMM generators (codegen/gemm_ir.h).
void nc_llvm_loop_id_set(LLVMContextRef c, LLVMValueRef br, LLVMMetadataRef *props, size_t n);
#endif

#endif
