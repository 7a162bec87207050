// The host CPU's fp32 FMA peak, measured: what `nanochat bench` reports MFU
// against when no --peak is given. A measurement, not a datasheet figure: a
// VM's clock, its neighbours and the vector units it exposes all show in it.
#ifndef NC_RUNTIME_CPU_PEAK_H
#define NC_RUNTIME_CPU_PEAK_H

#include "support/status.h"

// Runs independent vector FMA chains (AVX-512 where the CPU has it, else
// AVX2+FMA) on `threads` threads at once (0 = one per core) for about
// 3 x 60 ms and returns the best rate in GFLOP/s (2 flops per FMA lane).
// Fails on a CPU with neither instruction set.
nc_status nc_cpu_peak_measure(int threads, double *gflops);

#endif
