// The tuned GEMMs' code (runtime/cpu_tune.c; the rest of the API is in runtime/cpu.h).
#ifndef NC_RUNTIME_CPU_TUNE_H
#define NC_RUNTIME_CPU_TUNE_H

#include "runtime/cpu.h"

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>
// Adds each distinct tuned GEMM (its symbol, compiled with its knobs; bf16
// variants by codegen/gemm_bf16.c with bf16 memory, for hc) to m.
nc_status nc_cpu_tuned_emit(LLVMModuleRef m, const nc_host_cpu *hc, const nc_cpu_tuned_gemm *t, int n);
#endif

#endif
