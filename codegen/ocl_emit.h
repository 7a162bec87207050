// Kernel IR (ir/kir.h) -> OpenCL C. The same kernels and plans as the CPU
// backend (passes/lower.h); no LLVM here.
//
// Loop kernels: the outermost parallel loop and the perfectly nested loops
// under it that are safe to run in any order (bounds from kernel arguments
// only; every store in the nest indexed by the loop's variable, into a
// buffer the nest does not read) are collapsed into one NDRange dimension:
// one work-item per iteration of the collapsed nest, the rest of the body
// serial inside the work-item. A kernel without a parallel loop that is a
// reduction (accumulators set to constants, one loop of accumulator updates,
// then anything) runs as one work-group: the work-items split the loop, the
// partial accumulators are combined through local memory, work-item 0 runs the
// rest. Any other kernel without a parallel loop runs as one work-item.
//
// Row kernels: when the body under the collapsed nest is a sequence of
// accumulator reductions over loops, loops of stores indexed by their
// variable, and scalar statements (softmax, rms_norm, the cross-entropy rows),
// each collapsed iteration gets a work-group of row_wg work-items: the loops
// are split across them (neighbouring work-items read neighbouring elements),
// partial accumulators are combined through local memory after each loop and
// scalar stores are done by work-item 0. Float registers are `float` (bf16/f16 values are rounded after
// every op, as the CPU backend and the evaluator do); bf16 buffers are
// `ushort`, f16 buffers `half` (vload_half/vstore_half_rte), bool and u8
// buffers `uchar`; index math is `long`.
//
// Template kernels (nc_kernel_is_template: matmul/bmm with transposes) run a
// portable tiled GEMM with local-memory tiles (knobs below), one variant per
// (ta, tb); with the gemm_tc knob (bf16 matmul precision on NVIDIA) the
// variant is a tensor-core kernel (mma.sync m16n8k16 bf16 through inline PTX,
// operands rounded to bf16 while staged, fp32 accumulation), or its scalar
// emulation (gemm_tc = 2, any device). A, B and C are all f32 or all bf16 (ushort: the bf16 model's
// matmuls, the variants' NC_OCL_GEMM_BF16 bit). Anything the emitter cannot express (another template
// kind, a call inside a loop nest, a GEMM over mixed dtypes) is an NC_E_UNSUPPORTED error
// naming the kernel: the OpenCL device never guesses.
#ifndef NC_CODEGEN_OCL_EMIT_H
#define NC_CODEGEN_OCL_EMIT_H

#include <stdbool.h>

#include "ir/kir.h"
#include "support/buf.h"

// Knobs of the generated code (the autotuner's seam: each has a valid range,
// nc_ocl_knobs_check says which one is out of it).
typedef struct {
  int gemm_tm, gemm_tn;  // output tile per work-group (rows, columns): 16..256, multiples of gemm_wm/gemm_wn
  int gemm_tk;           // depth of the local-memory tiles: 4..64
  int gemm_wm, gemm_wn;  // outputs per work-item (rows, columns): 1..16
  int loop_wg;           // work-group size of loop kernels (and of whole-buffer reductions unless reduce_wg): 1..1024
  int row_wg;            // work-items per row of row kernels (1 = off): 1..1024
  int reduce_wg;         // work-group of whole-buffer reductions (rounded down to a power of two; 1 = serial):
                         // 0 (the default) follows loop_wg; 1..1024 (the tuning database, ocl.loop class=reduce)
  // The bf16 GEMM (fp32 operands rounded to bf16 while staged, fp32 accumulation):
  int gemm_tc;           // 0: the fp32 GEMM above; 1: bf16 on tensor cores (mma.sync inline PTX,
                         // NVIDIA only); 2: the same kernel with the mma done by scalar fmas (any device)
  int tc_bm, tc_bn;      // block tile: 16..256 (bn 8..256), multiples of tc_wm / tc_wn
  int tc_wm, tc_wn;      // warp tile: tc_wm a multiple of 16 (16..128), tc_wn of 8 (8..128), <= 32 mma tiles
  int tc_bk;             // k-step: 16, 32, 48 or 64; the BMxBK and BNxBK slices split evenly over the work-items
  int tc_stages;         // 0: the register-staged kernel over fp32 operands; 2..4: the pipelined kernel: operands
                         // packed to bf16 (k contiguous, zero-padded) first, then a ring of tc_stages shared-memory
                         // slices filled by cp.async, fragments by ldmatrix (tc_bk 32 or 64, tc_wn a multiple of 16,
                         // the ring at most 48 KiB)
  int tc_wg;             // with tc_stages > 0: 0 the mma.sync kernel; 1, 2 the Hopper wgmma kernel (codegen/ocl_gemm.c:
                         // a warpgroup per 64 rows of the tc_bm x tc_bn block, tc_wm/tc_wn unused), waiting for each
                         // k-step's wgmma (1) or keeping one in flight (2, tc_stages >= 3)
} nc_ocl_knobs;

// Defaults for a GPU (64x64x16 tiles, 4x4 per work-item, 256-wide loops,
// 128-wide rows; bf16: 128x128 blocks, 64x32 warps, k-step 32) or a CPU device
// such as PoCL (32x32x16, 4x4, 64, 4; bf16: 32x32, 16x16, 16). gemm_tc = 0.
void nc_ocl_knobs_default(bool gpu, nc_ocl_knobs *k);
nc_status nc_ocl_knobs_check(const nc_ocl_knobs *k);
// The bf16 GEMM's knobs alone (also checked by nc_ocl_knobs_check).
nc_status nc_ocl_tc_check(const nc_ocl_knobs *k);
// "BM,BN,WM,WN,BK[,MODE[,STAGES]]" (the NC_OCL_TC environment variable) over *k; MODE is
// gemm_tc, STAGES tc_stages (0, the register-staged kernel, when not given).
nc_status nc_ocl_tc_parse(const char *s, nc_ocl_knobs *k);
// "TM,TN,TK,WM,WN[,WG[,RWG]]" (the NC_OCL_KNOBS environment variable) over *k.
nc_status nc_ocl_knobs_parse(const char *s, nc_ocl_knobs *k);

#define NC_OCL_MAX_COLLAPSE 8

// How a kernel is launched.
typedef struct {
  bool gemm;                 // template: the tiled GEMM
  int gemm_variant;          // ta * 2 + tb, + NC_OCL_GEMM_BF16 for bf16 buffers
  bool attn;                 // template: flash attention (codegen/ocl_attn.h)
  int attn_dp, attn_dvp;     // its head dims padded to multiples of 16
  bool scatter;              // template: scatter_add with float atomics (codegen/ocl_scatter.h)
  bool scatter_i64;          // its ids are i64 (else i32)
  int ncollapse;             // loops folded into the global id (0: one work-item)
  int reduce_wg;             // > 0: a whole-buffer reduction run by one work-group of this size
  nc_kx reduce_begin, reduce_end;  // its reduced loop's bounds (argument-only expressions)
  int row_wg;                // > 0: one work-group of this size per collapsed iteration (a row kernel)
  nc_kx begin[NC_OCL_MAX_COLLAPSE], end[NC_OCL_MAX_COLLAPSE];  // their bounds (argument-only expressions)
} nc_ocl_launch;

// Helpers every program starts with (bf16/f16 conversions and rounding).
void nc_ocl_emit_prelude(nc_buf *out);
// The GEMM template variant (ta, tb) as kernel nc_gemm_<n|t><n|t>:
//   (A, B, C, long M, long N, long K, long sa, long sb, int beta, long oa, long ob, long oc),
//   batch = global dim 2, oa/ob/oc the operands' element offsets in their buffers;
//   C[q] (+)= op(A[q]) @ op(B[q]) with A at q*sa, B at q*sb, C at q*M*N.
// With kn->gemm_tc set, the bf16 tensor-core kernel (same arguments; the
// work-group is 32 * (tc_bm/tc_wm) * (tc_bn/tc_wn) work-items in dimension 0,
// one per tc_bm x tc_bn tile of C: global (ceil(N/tc_bn) * that, ceil(M/tc_bm), batch)).
void nc_ocl_emit_gemm(const nc_ocl_knobs *kn, int variant, nc_buf *out);
// With kn->tc_stages > 0 the GEMM is three kernels, emitted once per program:
//   nc_pack_k(X, long ox, long sx, long R, long Kd, P, long op, long Rp, long Kp): P[q][r][k] (bf16, at op,
//     Rp x Kp per q, zero-padded) = X[ox + q*sx + r*Kd + k]; global (Kp/8, Rp, batch), any local size;
//   nc_pack_t(same): = X[ox + q*sx + k*R + r] (a tiled transpose); global (ceil(Rp/32)*32, Kp/32*8, batch),
//     local (32, 8, 1);
//   nc_pack_kh, nc_pack_th(same, X bf16): the same from a bf16 (ushort) X, copied;
//   nc_gemm_bf16p(A, B, C, M, N, Kp, sa, sb, beta, oa, ob, oc, long kt_per, int splits, long lda, long ldb,
//     long Kv): C (+)= A @ B^T over bf16 operands, k contiguous (A: rows of lda, B: rows of ldb at
//     element offsets oa/ob of their ushort buffers, batch strides sa/sb: packed, lda = ldb = Kp, or
//     a bf16 operand read in place, rows of K), Kp / tc_bk k-steps, global (Np/tc_bn * WG, Mp/tc_bm,
//     batch * splits); with splits > 1 split s of batch q covers k-tiles [s*kt_per, (s+1)*kt_per)
//     and writes its partial sum to C + oc + (q*splits + s)*M*N (no beta). Its variants
//     (nc_ocl_emit_gemm_packed_kernel, below): _z zero-fills rows >= M (N) and pieces >= Kv, _h
//     stores a bf16 C;
//   nc_splitk_sum(P, C, long MN, int splits, int beta, long oc, int cbf): C[oc + q*MN + i] (+)= sum
//     over s of P[(q*splits + s)*MN + i] (C bf16 with cbf); global (MN rounded up, batch).
void nc_ocl_emit_gemm_packed(const nc_ocl_knobs *kn, nc_buf *out);
// With kn->tc_wg > 0 (codegen/ocl_gemm.c): the same three kernels, the GEMM being
//   nc_gemm_wgmma(same arguments as nc_gemm_bf16p): 2 * tc_bm work-items (tc_bm/64 warpgroups),
//   global (Np/tc_bn * 2*tc_bm, Mp/tc_bm, batch * splits); wgmma.mma_async m64n<tc_bn>k16 from
//   128/64/32-byte-swizzled shared memory (tc_bk 64/32/16). Its Hopper-only instructions are
//   wrapped in NC_WGI(): compiled with -DNC_WG_HIDE they become PTX comments marked "//NCWG "
//   (nc_ocl_ptx_unhide turns them back on in the program's PTX, for drivers whose OpenCL
//   compiler will not target sm_90a). gemm_tc = 2 emulates it with scalar fmas (any device).
//   Flags NC_OCL_GEMMP_AMN / BMN (below): A / B read in place MN-major (lda / ldb = M / N).
void nc_ocl_emit_gemm_wgmma(const nc_ocl_knobs *kn, int flags, nc_buf *out);
// The wgmma kernel's knob check (tc_bm a multiple of 64 up to 256, tc_bn a multiple of 8 up to 256,
// tc_bk 16/32/64, tc_stages 2..8 (3..8 with tc_wg 2), the ring at most NC_OCL_WGMMA_MAX_RING bytes).
#define NC_OCL_WGMMA_MAX_RING (224 * 1024)
// The wgmma kernel's defaults over *k (the fastest of the sweeps on the H100, docs/performance.md):
// 128 x 128 blocks, k-step 64 (128-byte swizzle), 3 slots (96 KiB), each k-step's wgmma waited for.
void nc_ocl_wgmma_default(nc_ocl_knobs *k);
nc_status nc_ocl_wgmma_check(const nc_ocl_knobs *k);
// PTX text of a program built with -DNC_WG_HIDE -> the same with the hidden instructions
// restored, `.target sm_90` -> `sm_90a` and `.version` at least 8.0. Returns a malloc'd
// NUL-terminated string (NULL: out of memory); *changed says whether anything was hidden.
char *nc_ocl_ptx_unhide(const char *ptx, size_t len, bool *changed);
// The GEMM variant bit for bf16 A, B and C buffers (the bf16 model's matmuls: NC_PATTERN_BF16_GEMM).
#define NC_OCL_GEMM_BF16 4
// Kernel names by variant (ta * 2 + tb, + NC_OCL_GEMM_BF16): nc_gemm_nn ... nc_gemm_tt, nc_gemm_nn_h ... nc_gemm_tt_h.
const char *nc_ocl_gemm_name(int variant);
// The pipelined and wgmma kernels' copy of one 16-byte piece of A (ab 0) or B (ab 1) into ring piece d
// for a k-step of BK (codegen/ocl_gemm.c): K-major (row `row`, piece c of k-tile lkt) or MN-major (mn:
// k row kr, piece c along m / n); zero-filled for a row (piece) at or past M (N) or k at or past Kv
// (cp.async's src-size operand 0; plain copies when emulated). zf false: no bounds (every row and piece
// exists: packed and padded, or in place over whole tiles).
void nc_ocl_gemm_copy(nc_buf *o, bool emu, bool zf, int ab, int BK, bool mn);
// Variants of the pipelined / wgmma GEMM kernel (flags): ZFILL zero-fills rows past M (N) and pieces past
// Kv (an operand read in place over partial tiles); CBF16 stores a bf16 (ushort) C, rounded once; the
// wgmma kernel only: AMN / BMN read A / B MN-major in place (A (K, M): element (m, k) at A[k*lda + m]; B
// (K, N): (n, k) at B[k*ldb + n]; the tn weight gradients' operands, the nn form's B), copied into
// 128-byte-swizzled MN-major slots and multiplied with wgmma's transpose bit (tc_bn a multiple of 64 for BMN).
enum { NC_OCL_GEMMP_ZFILL = 1, NC_OCL_GEMMP_CBF16 = 2, NC_OCL_GEMMP_AMN = 4, NC_OCL_GEMMP_BMN = 8, NC_OCL_GEMMP_NVAR = 16 };
// Its kernel name: nc_gemm_bf16p or nc_gemm_wgmma (tc_wg), + "_z" (ZFILL), + "_h" (CBF16), + "_ta" (AMN), + "_tb" (BMN).
void nc_ocl_gemm_packed_name(const nc_ocl_knobs *kn, int flags, char *buf, size_t n);
// Whether the kernel of knobs k has variant flags (AMN / BMN: the wgmma kernel only; BMN needs tc_bn % 64 == 0).
bool nc_ocl_gemm_variant_ok(const nc_ocl_knobs *k, int flags);
// The GEMM kernel alone in variant flags (nc_ocl_emit_gemm_packed emits the packing kernels and flags 0).
void nc_ocl_emit_gemm_packed_kernel(const nc_ocl_knobs *kn, int flags, nc_buf *out);

// Kernel k as an OpenCL kernel called fname: arguments are the buffers in
// order (b0, b1, ...), then the symbol sizes (long a0, a1, ...), then
// `long nc_total` (the collapsed iteration count), then each buffer's element
// offset (long o0, o1, ...: buffers are views into one arena). Template kernels emit
// nothing and fill L->gemm. kn->loop_wg / kn->row_wg / kn->reduce_wg size the work-groups
// (rounded down to powers of two for reductions; 1 turns those modes off).
nc_status nc_ocl_emit_kernel(const nc_kernel *k, const char *fname, const nc_ocl_knobs *kn, nc_buf *out, nc_ocl_launch *L);

#endif
