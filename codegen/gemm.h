// GEMM generator: emits LLVM IR (through the C API) for
//
//   C[b] = alpha * op(A[b]) · op(B[b]) + beta * C[b]      fp32, b < batch
//
// op(A) is (M,K): A stored (M,K) row-major, or (K,M) with ta (A^T).
// op(B) is (K,N): B stored (K,N) row-major, or (N,K) with tb (B^T; the graph's
// linear layers: y = x W^T with W (out,in)). C is (M,N) row-major.
//
// The emitted function is a Goto/BLIS-style loop nest: NC columns of B and
// KC rows of K are packed into NR-wide panels, MC rows of A into MR-tall
// panels (both zero-padded, so every micro-kernel call computes a full
// MR x NR tile in registers), then a register-blocked micro-kernel of
// MR * NR/VW vector accumulators with FMA. Only the store of an edge tile is
// special. Shapes, strides and alpha/beta are run-time arguments; the knobs
// and the transposes are compiled in.
//
// Small M (decode): with M <= 16 and no ta the function takes a "skinny" path
// instead (decided per call from the run-time M): no packing and no workspace;
// blocks of columns of C (tb: 3 rows of the stored B against 4 rows of A at
// a time with AVX2's vw 8, 4 against 2 with AVX-512's vw 16, so the block's
// accumulators fit the 16 or 32 vector registers; !tb: 32 columns) against
// every row of A, vectorised along K, so each element of B is read from
// memory once. Threads split columns (or whole batch items when batch >=
// nthreads). A row's result is bit-identical for every M <= 16.
//
// Threading: the function takes (thread, nthreads) and computes only that
// thread's share, so every thread of a pool calls it with the same args. With
// batch >= nthreads whole matrices are split over threads; otherwise each
// matrix is split over M (in MR units) when M >= N, else over N (NR units),
// which keeps the redundantly packed operand the smaller one. Each thread
// packs into its own slice of the workspace; there are no barriers inside.
// With nc_gemm_args.sync (the runtime's launches) the split is dynamic instead:
// see there.
#ifndef NC_CODEGEN_GEMM_H
#define NC_CODEGEN_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codegen/host.h"
#include "codegen/jit.h"
#include "support/status.h"

// Tuning knobs (compiled into the function). See docs/performance.md for how
// the defaults were chosen.
typedef struct {
  int vw;          // floats per vector register: 16 (AVX-512) or 8 (AVX2)
  int mr, nr;      // register block of C: mr rows x nr cols; nr % vw == 0;
                   // mr * nr / vw accumulators must fit the register file
  int kc, mc, nc;  // cache blocks: K depth of a packed panel, rows of A per
                   // packed block (multiple of mr), cols of B (multiple of nr)
  int ku;          // unroll factor of the micro-kernel's k loop (1..16)
  int order;       // 0: jr outer, ir inner (the kc x nr B panel is reused
                   //    from L1 across the A panels of an MC block);
                   // 1: ir outer, jr inner (the mr x kc A panel is reused
                   //    from L1 while B streams from L2)
  int prefetch_b;  // prefetch packed B this many k steps ahead (0 = off)
} nc_gemm_knobs;

// One function per (ta, tb, knobs): the symmetric product, the ReLU^2
// epilogue and the addend are switched per call by the argument block
// (nc_gemm_args.sym, .relu2, .e), so a plan compiles at most 4 fp32 GEMM
// functions. Their internal helpers (micro-kernel, packing, skinny path) are
// named after what they depend on (ta or tb and the knobs) and emitted once per
// module: GEMMs of one module with the same knobs share them.
typedef struct {
  const char *name;  // symbol of the emitted function (unique per module/JIT)
  bool ta, tb;
  nc_gemm_knobs knobs;
  // bf16_io (codegen/gemm_bf16.c only): A, B and C hold bf16 in memory (the
  // args' pointers are uint16_t *), C is rounded to bf16 (nearest even) on
  // store; accumulation stays fp32. Ignored (must be false) by gemm.c.
  bool bf16_io;
} nc_gemm_spec;

// Argument block of the emitted function (the IR reads it by offsetof).
typedef struct {
  const float *a, *b;
  float *c;
  int64_t m, n, k;
  int64_t lda, ldb, ldc;                 // in elements, of the stored layout
  int64_t batch;                         // >= 1
  int64_t stride_a, stride_b, stride_c;  // elements between batch items (0 = shared)
  float alpha, beta;                     // beta == 0: C (or E) is not read (may hold NaN)
  float *work;  // >= nc_gemm_workspace_size(knobs, nthreads) bytes, 64-byte aligned
  // relu2 != 0: the ReLU^2 epilogue (the MLP's c_fc). After the last K block,
  // where C holds the product p (alpha, beta applied), the function also stores
  // relu(p)^2: into d (same ldc/stride_c as C) when d != NULL, else over C
  // itself (C then holds relu(p)^2 only). Not with sym. gemm.c only.
  float *d;
  // The addend: C = alpha * op(A) op(B) + beta * E, E = e (same ldc/stride_c
  // as C), read where C would be on the first K block (never when beta == 0);
  // NULL: E is C itself, the plain GEMM. With sym, E must be symmetric too.
  // Fuses Muon's Polar Express sums and the residual adds into the GEMMs.
  const float *e;
  // sym != 0: C is known to be symmetric (M == N: X X^T, A A with A
  // symmetric). Only the MR x NR tiles not strictly above the diagonal are
  // computed (about half the FLOPs, syrk-style), the rest mirrored from below;
  // rows are split over threads by area (M sqrt(t/T)). With beta != 0 the old
  // C (or E) must be symmetric too. Ignored by the skinny path (M <= 16) and
  // by gemm_bf16.c.
  int32_t sym;
  int32_t relu2;
  // sync != NULL (and not sym): the dynamic split. Instead of a fixed share per
  // thread, the work is cut into units of one MC x NC block of C at one KC
  // depth, which every calling thread claims one at a time from the counter
  // sync[0]; a unit waits for the earlier K blocks of its C block through the
  // block's flag sync[1 + (b * ceil(N / nc) + column block) * ceil(M / mc) + row
  // block]. So a thread that runs late or slow (a neighbour on the core) leaves
  // its units to the others instead of holding them up at the end of the GEMM.
  // sync must hold nc_gemm_sync_len(knobs, batch, m, n) zeros at the call, is shared by all the
  // call's threads and written by them; every thread's (thread, nthreads)
  // still picks its workspace slice. Any thread may do any share of the work
  // (all of it if the others never call), so results do not depend on the
  // thread count. NULL: the static split above. Ignored by the skinny path and
  // by gemm_bf16.c.
  int64_t *sync;
  // cw != NULL: the fp32 shadow of a bf16_io C (gemm_bf16.c only; ignored by
  // gemm.c), laid out like C (same ldc, stride_c: (batch-1)*stride_c +
  // (m-1)*ldc + n floats; disjoint per thread like C; its contents on entry do
  // not matter). When K > knobs.kc the partial sums of the K blocks are kept
  // there in fp32 and C is written once, bf16(alpha AB + beta C) with one
  // rounding of the fp32 total, as PyTorch's bf16 matmul. NULL (or K <= kc):
  // each K block reads and rounds C, one bf16 rounding per block of kc.
  float *cw;
} nc_gemm_args;

// void name(const nc_gemm_args *args, int32_t thread, int32_t nthreads)
typedef void (*nc_gemm_fn)(const nc_gemm_args *args, int32_t thread, int32_t nthreads);

// Defaults for the CPU: AVX-512 when cpu->avx512f, else AVX2 (vw 8).
nc_gemm_knobs nc_gemm_knobs_default(const nc_host_cpu *cpu);
// Checks the knobs against each other and the vector width.
nc_status nc_gemm_knobs_check(const nc_gemm_knobs *k);
// Workspace bytes for up to nthreads threads (packed A block + B panel each).
size_t nc_gemm_workspace_size(const nc_gemm_knobs *k, int nthreads);
// int64 words of nc_gemm_args.sync for a call of batch items of m x n.
size_t nc_gemm_sync_len(const nc_gemm_knobs *k, int64_t batch, int64_t m, int64_t n);
// Whether a call runs the dynamic split: the sync length to pass, or 0 for the
// static split (one thread, sym, M <= 16, or fewer MC x NC blocks of C than
// threads: each block's K units form one ordered chain, so fewer chains than
// threads would leave threads waiting, where the static split cuts M or N finer).
// The runtime's launches and the tuner's timing both decide through it.
size_t nc_gemm_sync_want(const nc_gemm_knobs *k, int nthreads, int64_t batch, int64_t m, int64_t n, bool sym);

#ifdef NC_HAVE_LLVM
// Adds spec->name (external) plus internal helpers to module m.
nc_status nc_gemm_emit(LLVMModuleRef m, const nc_gemm_spec *spec);
#endif
// Builds a module with the GEMM, JIT-compiles it and returns the function.
nc_status nc_gemm_compile(nc_jit *jit, const nc_gemm_spec *spec, nc_gemm_fn *out);

#endif
