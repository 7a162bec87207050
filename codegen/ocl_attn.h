// Flash attention for OpenCL devices (FlashAttention-2 style): the kernels behind
// the NC_KT_ATTENTION template call (ir/kir.h), emitted as OpenCL C.
//
// Nothing (Tq,Tk)-sized is ever stored: a work-group owns a block of query rows
// (forward, dQ) or of key rows (dK/dV), streams the other side through local
// memory in blocks, and keeps the running softmax statistics (row max m, sum l)
// in registers. The backward recomputes the probabilities per tile from the
// per-row logsumexp and Di = rowsum(dO * O), which a statistics pass (the
// forward kernel in mode 1) writes into a small (2, B*Hq*Tq) f32 scratch buffer.
//
// Every product is a 16x8x16 tile product in the layout of PTX's
// mma.sync.aligned.m16n8k16 (four fp32 accumulators per work-item of a warp):
//   tc 1: bf16 tiles in local memory, mma.sync through inline PTX, row
//         reductions by shfl.sync (NVIDIA only);
//   tc 2: the same bf16 tiles, the mma done by scalar fmas per work-item and the
//         row reductions through local memory (any device: PoCL in tests);
//   tc 0: fp32 tiles, scalar fmas (any device; exact fp32, the default unless
//         bf16 matmuls are asked for).
// Head dims are padded to multiples of 16 (one kernel set per padded pair),
// at most NC_FLASH_MAX_D (passes/lower.h). In the bf16 modes the kernels read
// q, k, v and dO packed first to bf16 rows of the padded dims (nc_fa_pack(src,
// long osrc, ushort *dst, long odst, long rows, long Dm, int dp): one work-item
// per element), so Q, K, V, dO below are ushort there (float in mode 0); the
// forward's dO (mode 1, for Di) is always the f32 tensor.
//
// Kernels (FA = _<DP>_<DVP>, element offsets o* into the buffers):
//   nc_fa_fwd FA (Q, K, V, O, st, dO, long Tq, Tk, Hq, Hkv, D, Dv, int causal,
//       long window, float scale, int mode, long NR, long oq, ok, ov, oo, odo, ost):
//       mode 0 writes O; mode 1 writes st[r] = lse, st[NR + r] = Di for row r =
//       (b*Hq + h)*Tq + i (O not written). Global (ceil(Tq/BM) * 2*BM, Hq, B),
//       local (2*BM).
//   nc_fa_dq FA (Q, K, V, dO, dQ, st, Tq, Tk, Hq, Hkv, D, Dv, causal, window,
//       scale, NR, oq, ok, ov, odo, odq, ost): global (ceil(Tq/BMQ) * 2*BMQ, Hq, B).
//   nc_fa_dkdv FA (Q, K, V, dO, dK, dV, st, Tq, Tk, Hq, Hkv, D, Dv, causal,
//       window, scale, NR, int wdk, int wdv, oq, ok, ov, odo, odk, odv, ost):
//       global (ceil(Tk/KM) * 2*KM, Hkv, B); the G = Hq/Hkv query heads of a kv
//       head are summed inside (no atomics).
// Tiles that every row of a warp sees whole (fa_full) skip the mask.
#ifndef NC_CODEGEN_OCL_ATTN_H
#define NC_CODEGEN_OCL_ATTN_H

#include <stdbool.h>

#include "support/buf.h"
#include "support/status.h"

// Block sizes of a mode: rows per forward work-group (BM), per dQ work-group
// (BMQ), keys per step (BN), keys per dK/dV work-group (KM), queries per dK/dV
// step (QN). Work-groups are 2 * rows work-items (one warp per 16 rows). st:
// stages of the streamed tiles (K, V in the forward and dQ; Q, dO in dK/dV):
// 1 = load, barrier, use; 2 = the next block is copied (cp.async on NVIDIA)
// while this one is used.
typedef struct {
  int bm, bmq, bn, km, qn, st;
} nc_ocl_attn_blocks;
void nc_ocl_attn_blocks_of(int tc, nc_ocl_attn_blocks *out);
// "BM,BMQ,BN,KM,QN[,STAGES]" (NC_OCL_FA): multiples of 16, rows 16..128, BN and
// QN 16..64 (32 with fp32 tiles), STAGES 1 or 2 (default 1); an error names the
// value that is off.
nc_status nc_ocl_attn_blocks_parse(const char *spec, int tc, nc_ocl_attn_blocks *out);

// The template's own limits on blocks (the tuner's knob space ocl.flash, codegen/tune.h): the ranges
// above, fp32 BN/QN <= 32, and at padded head dims (dp, dvp > 0) each kernel's static local memory
// (NC_OCL_ATTN_LOCAL_TC for the bf16 modes: Hopper's 227 KiB per work-group, which NVIDIA's OpenCL
// takes for static arrays; NC_OCL_ATTN_LOCAL_F32, 48 KiB, for fp32) and its fp32 accumulators per
// work-item (NC_OCL_ATTN_MAX_ACC, a guard against register spills: the default dK/dV at 128 holds 160
// and takes 240 of the 255 registers mma.sync code may use).
#define NC_OCL_ATTN_MAX_D 128
#define NC_OCL_ATTN_LOCAL_TC 232448L
#define NC_OCL_ATTN_LOCAL_F32 49152L
#define NC_OCL_ATTN_MAX_ACC 160
nc_status nc_ocl_attn_blocks_check(int tc, int dp, int dvp, const nc_ocl_attn_blocks *bl);
// Static local memory in bytes of the forward, dQ and dK/dV kernels.
void nc_ocl_attn_local_bytes(int tc, int dp, int dvp, const nc_ocl_attn_blocks *bl, long out[3]);

// Head dim padded as the kernels expect it.
int nc_ocl_attn_pad(long d);

// The mode's shared helpers (once per program, after nc_ocl_emit_prelude).
void nc_ocl_emit_attn_common(int tc, const nc_ocl_attn_blocks *bl, nc_buf *out);
// The three kernels for padded head dims (dp, dvp) (once per pair, same tc).
void nc_ocl_emit_attn(int tc, int dp, int dvp, nc_buf *out);
// "nc_fa_<what>_<dp>_<dvp>" into buf (what: fwd, dq, dkdv).
void nc_ocl_attn_name(const char *what, int dp, int dvp, char *buf, int n);
// Another block set's three kernels for (dp, dvp) next to the program's own (per-shape tuned
// blocks, runtime/ocl_tune.h), named "nc_fa_<what>_<dp>_<dvp>_t<set>": the block macros are
// redefined to bl around them and set back to def (the program's blocks, which the helpers and
// the default kernels use) after them. Emitted after nc_ocl_emit_attn_common.
void nc_ocl_emit_attn_set(int tc, int dp, int dvp, const nc_ocl_attn_blocks *bl, const nc_ocl_attn_blocks *def, int set, nc_buf *out);
// nc_ocl_attn_name with "_t<set>" (set < 0: the default kernels' name).
void nc_ocl_attn_name_set(const char *what, int dp, int dvp, int set, char *buf, int n);

#endif
