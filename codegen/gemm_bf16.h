// bf16 GEMM generator (mixed precision): the same C = alpha*op(A)·op(B) +
// beta*C, argument block (nc_gemm_args) and threading contract as
// codegen/gemm.h, but the products are computed in bf16:
//
//   A, B, C are fp32 in memory (the graph's tensors), or with spec->bf16_io
//   bf16 (uint16_t; the bf16 model's matmuls in CPU plans, runtime/cpu.c:
//   C is then rounded to bf16 on store, exactly nc_f32_to_bf16, once: with
//   K > kc the K blocks' partial sums stay fp32 in nc_gemm_args.cw). A and B are
//   rounded to bf16 (round to nearest even, NaN quieted: exactly
//   nc_f32_to_bf16; a no-op for bf16 memory) while packing, into
//   k-pair-interleaved panels: one 32-bit word holds the two
//   bf16 of (k, k+1). The micro-kernel runs `vdpbf16ps`
//   (llvm.x86.avx512bf16.dpbf16ps.512): per fp32 lane acc += a0*b0 + a1*b1,
//   two k steps per instruction, fp32 accumulators, fp32 alpha/beta/output.
//
// Numerics: bf16 x bf16 products are exact in fp32, so against a reference
// computed on the bf16-rounded inputs the only error is fp32 accumulation
// (like the fp32 GEMM); against the fp32 inputs it is bf16's ~2^-9 relative
// rounding of each operand. vdpbf16ps treats denormal inputs as zero and
// flushes denormal results (DAZ/FTZ regardless of MXCSR).
//
// Packed layouts (in 32-bit words, kp = ceil(kc/2) pairs; an odd kc pads the
// last pair with a zero bf16):
//   A panel (MR rows): row-major Ap[i*kp + p] when !ta (packing is a
//     contiguous convert of each row), k-major Ap[p*MR + i] when ta;
//   B panel (NR cols): Bp[p*NR + j] (one zmm = 16 columns x 2 k).
// The knobs are nc_gemm_knobs with vw 16; kc counts k (not pairs) and must be
// even so that pairs never straddle two kc blocks.
//
// Requires AVX512_BF16 on the CPU the code is generated for: the emitter
// refuses with NC_E_UNSUPPORTED otherwise (also for an avx2_only jit).
#ifndef NC_CODEGEN_GEMM_BF16_H
#define NC_CODEGEN_GEMM_BF16_H

#include "codegen/gemm.h"

// Whether cpu can run the bf16 GEMM (AVX-512F + AVX512_BF16).
bool nc_gemm_bf16_supported(const nc_host_cpu *cpu);
// Defaults (measured on Zen 5, see docs/performance.md "bf16 GEMM (CPU)").
nc_gemm_knobs nc_gemm_bf16_knobs_default(const nc_host_cpu *cpu);
// nc_gemm_knobs_check plus: vw 16, kc even.
nc_status nc_gemm_bf16_knobs_check(const nc_gemm_knobs *k);
// Workspace bytes for up to nthreads threads (half of the fp32 GEMM's for the
// same knobs: packed panels hold bf16).
size_t nc_gemm_bf16_workspace_size(const nc_gemm_knobs *k, int nthreads);
// 32-bit words of one thread's workspace slice (packed A block + B panel).
int64_t nc_gemm_bf16_ws_words(const nc_gemm_knobs *k);

#ifdef NC_HAVE_LLVM
// Adds spec->name (external) plus internal helpers to module m, for code that
// will run on cpu (nc_jit_cpu of the jit that compiles m).
nc_status nc_gemm_bf16_emit(LLVMModuleRef m, const nc_host_cpu *cpu, const nc_gemm_spec *spec);
#endif
// Builds a module with the bf16 GEMM, JIT-compiles it and returns the function.
nc_status nc_gemm_bf16_compile(nc_jit *jit, const nc_gemm_spec *spec, nc_gemm_fn *out);

#endif
