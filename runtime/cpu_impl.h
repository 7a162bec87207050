// Private to the CPU device (runtime/cpu.c, runtime/cpu_jit.c): how the JIT
// half hands an executor the code it owns. Not part of runtime/cpu.h's API.
#ifndef NC_RUNTIME_CPU_IMPL_H
#define NC_RUNTIME_CPU_IMPL_H

#include "runtime/cpu.h"

// nc_cpu_free calls release(ctx) (e.g. nc_jit_free of the JIT holding the code).
void nc_cpu_set_release(nc_cpu *c, void (*release)(void *), void *ctx);
void nc_cpu_set_compile_info(nc_cpu *c, double seconds, bool cache_hit);

#endif
