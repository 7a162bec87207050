// The embedding gradient's scatter_add on OpenCL: the NC_KT_SCATTER_ADD
// template call (ir/kir.h), emitted as OpenCL C.
//
// out (V,C) = 0, then out[clamp(ids[i], 0, V-1), c] += src[i, c] for every
// token i and channel c: one work-item per (i, c) element (neighbouring
// work-items take neighbouring channels), adding with a float atomic:
// red.global.add.f32 through inline PTX on NVIDIA, an atomic_cmpxchg loop
// elsewhere (PoCL). The order in which colliding tokens add up differs from
// run to run, so the result's rounding does too (not bit-reproducible).
//
// Kernels (offsets o* in elements):
//   nc_scatter_add_i32 / _i64 (ids, long oi, src, long os, out, long oo, long N,
//       long V, long C): global round_up(N*C, 256), local 256. The runtime
//       zeroes out's V*C elements first (clEnqueueFillBuffer).
#ifndef NC_CODEGEN_OCL_SCATTER_H
#define NC_CODEGEN_OCL_SCATTER_H

#include <stdbool.h>

#include "support/buf.h"

// Both kernels (once per program). nvidia: the PTX float atomic.
void nc_ocl_emit_scatter(bool nvidia, nc_buf *out);

#endif
