// bf16 GEMM generator (see gemm_bf16.h). The micro-kernel's skeleton and store
// of C, the driver's argument loads, workspace and static split and the tile
// loops are codegen/gemm_drv.c's, shared with codegen/gemm.c; what is this
// file's: packing (fp32 or bf16 memory -> bf16 pair words), the micro-kernel's
// step (vdpbf16ps on pair words: nc_bf_ops) and the bf16 memory of C. IR is
// written the easy way, as in gemm.c: counters and accumulators in entry-block
// allocas, promoted to SSA by the O3 pipeline.
#include "codegen/gemm_bf16.h"

#include <stdio.h>
#include <string.h>

// 32-bit words of one thread's workspace slice: packed A block then packed B
// panel, each rounded to 64 bytes (codegen/gemm_bf16_knobs.c).
#define nc_bf_ws_words nc_gemm_bf16_ws_words

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>

#include "codegen/gemm_ir.h"

typedef nc_gemm_ir nc_bg;  // codegen/gemm_ir.h
typedef nc_loop nc_bloop;
typedef nc_if nc_bif;

static LLVMValueRef nc_lt(nc_bg *g, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(g->b, LLVMIntSLT, a, b, "");
}
// An i32 constant of type ty (i32 or <n x i32>).
static LLVMValueRef nc_ci(nc_bg *g, LLVMTypeRef ty, uint32_t v) {
  LLVMValueRef c = LLVMConstInt(g->i32, v, 0);
  if (LLVMGetTypeKind(ty) != LLVMVectorTypeKind) return c;
  unsigned n = LLVMGetVectorSize(ty);
  LLVMValueRef e[64];
  for (unsigned i = 0; i < n; i++) e[i] = c;
  return LLVMConstVector(e, n);
}

// fp32 (scalar or vector) -> its bits rounded so that the top 16 bits are
// nc_f32_to_bf16(x): round to nearest even, NaN quieted (not rounded, which
// could carry it into infinity).
static LLVMValueRef nc_rne(nc_bg *g, LLVMValueRef x) {
  LLVMTypeRef fty = LLVMTypeOf(x);
  LLVMTypeRef ity = LLVMGetTypeKind(fty) == LLVMVectorTypeKind
                        ? LLVMVectorType(g->i32, LLVMGetVectorSize(fty))
                        : g->i32;
  LLVMValueRef u = LLVMBuildBitCast(g->b, x, ity, "");
  LLVMValueRef odd = LLVMBuildAnd(g->b, LLVMBuildLShr(g->b, u, nc_ci(g, ity, 16), ""), nc_ci(g, ity, 1), "");
  LLVMValueRef r = LLVMBuildAdd(g->b, u, LLVMBuildAdd(g->b, odd, nc_ci(g, ity, 0x7fff), ""), "");
  LLVMValueRef nan = LLVMBuildICmp(g->b, LLVMIntUGT, LLVMBuildAnd(g->b, u, nc_ci(g, ity, 0x7fffffff), ""),
                                   nc_ci(g, ity, 0x7f800000), "");
  return LLVMBuildSelect(g->b, nan, LLVMBuildOr(g->b, u, nc_ci(g, ity, 0x00400000), ""), r, "");
}

// Pair word(s) of (x0 at k, x1 at k+1): bf16(x0) in the low half (element 2i
// of the <32 x bfloat> view), bf16(x1) in the high half.
static LLVMValueRef nc_pair(nc_bg *g, LLVMValueRef x0, LLVMValueRef x1) {
  LLVMValueRef r0 = nc_rne(g, x0), r1 = nc_rne(g, x1);
  LLVMTypeRef ity = LLVMTypeOf(r0);
  return LLVMBuildOr(g->b, LLVMBuildLShr(g->b, r0, nc_ci(g, ity, 16), ""),
                     LLVMBuildAnd(g->b, r1, nc_ci(g, ity, 0xffff0000u), ""), "");
}

// ---- operand memory: fp32, or bf16 with spec->bf16_io -------------------------
// Element pointer into A, B or C.
static LLVMValueRef nc_xptr(nc_bg *g, LLVMValueRef p, LLVMValueRef i) {
  return LLVMBuildInBoundsGEP2(g->b, g->s->bf16_io ? g->i16 : g->f32, p, &i, 1, "");
}
// Loads ty (float or <n x float>) from an element pointer of A, B or C: a bf16
// is widened exactly (its bits in the top half of an fp32).
static LLVMValueRef nc_xload(nc_bg *g, LLVMTypeRef ty, LLVMValueRef p) {
  if (!g->s->bf16_io) return nc_load4(g, ty, p);
  bool vec = LLVMGetTypeKind(ty) == LLVMVectorTypeKind;
  unsigned n = vec ? LLVMGetVectorSize(ty) : 1;
  LLVMTypeRef hty = vec ? LLVMVectorType(g->i16, n) : g->i16, ity = vec ? LLVMVectorType(g->i32, n) : g->i32;
  LLVMValueRef h = LLVMBuildLoad2(g->b, hty, p, "");
  LLVMSetAlignment(h, 2);
  LLVMValueRef u = LLVMBuildShl(g->b, LLVMBuildZExt(g->b, h, ity, ""), nc_ci(g, ity, 16), "");
  return LLVMBuildBitCast(g->b, u, ty, "");
}
// Stores fp32 x (float or vector) to C: as is, or rounded to bf16 exactly as
// nc_f32_to_bf16 (nearest even, NaN quieted).
static void nc_cstore(nc_bg *g, LLVMValueRef x, LLVMValueRef p) {
  if (!g->s->bf16_io) {
    nc_store4(g, x, p);
    return;
  }
  LLVMValueRef r = nc_rne(g, x);
  LLVMTypeRef ity = LLVMTypeOf(r);
  LLVMTypeRef hty = LLVMGetTypeKind(ity) == LLVMVectorTypeKind ? LLVMVectorType(g->i16, LLVMGetVectorSize(ity)) : g->i16;
  LLVMValueRef h = LLVMBuildTrunc(g->b, LLVMBuildLShr(g->b, r, nc_ci(g, ity, 16), ""), hty, "");
  LLVMSetAlignment(LLVMBuildStore(g->b, h, p), 2);
}

// 32 consecutive k of one fp32 row (v0: k 0..15, v1: k 16..31) -> 16 pair
// words: the top halves of the rounded bits, in order (one vpermt2w).
static LLVMValueRef nc_pairs32(nc_bg *g, LLVMValueRef v0, LLVMValueRef v1) {
  LLVMTypeRef h = LLVMVectorType(g->i16, 32);
  LLVMValueRef a = LLVMBuildBitCast(g->b, nc_rne(g, v0), h, "");
  LLVMValueRef b = LLVMBuildBitCast(g->b, nc_rne(g, v1), h, "");
  LLVMValueRef m[32];
  for (int i = 0; i < 32; i++) m[i] = c32(g, 2 * i + 1);
  LLVMValueRef s = LLVMBuildShuffleVector(g->b, a, b, LLVMConstVector(m, 32), "");
  return LLVMBuildBitCast(g->b, s, g->ivec, "");
}

// Scalar pair word from p0 (always valid) and p1 (valid when has1, else the
// high bf16 is 0): the tails and edges of packing.
static LLVMValueRef nc_pair_scalar(nc_bg *g, LLVMValueRef p0, LLVMValueRef p1, LLVMValueRef has1) {
  LLVMValueRef x1v = nc_var(g, g->f32, "x1", cf(g, 0.0));
  nc_bif f;
  nc_if_begin(g, &f, has1);
  LLVMBuildStore(g->b, nc_xload(g, g->f32, p1), x1v);
  nc_if_else(g, &f);
  nc_if_end(g, &f);
  return nc_pair(g, nc_xload(g, g->f32, p0), LLVMBuildLoad2(g->b, g->f32, x1v, ""));
}

// ---- micro-kernel (codegen/gemm_drv.c) ---------------------------------------
// ukernel(kp, Ap, Bp, C, ldc, mr, nr, alpha, beta):
//   C[0:mr, 0:nr] = alpha * Ap(MR x kp pairs) · Bp(kp pairs x NR) + beta * C
// One pair step: NV vector loads of B, MR broadcast pair words of A (folded
// into vdpbf16ps as {1to16} memory operands), MR*NV vdpbf16ps.
static LLVMValueRef nc_bf_load_b(nc_bg *g, LLVMValueRef p) { return nc_load4(g, g->bvec, p); }
static LLVMValueRef nc_bf_load_a(nc_bg *g, LLVMValueRef p) {
  return LLVMBuildBitCast(g->b, nc_splat_to(g, g->ivec, nc_load4(g, g->i32, p)), g->bvec, "");
}
static LLVMValueRef nc_bf_madd(nc_bg *g, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef da[3] = {acc, a, b};
  return LLVMBuildCall2(g->b, g->dp_ty, g->dp, da, 3, "");
}
static const nc_gemm_ukernel_ops nc_bf_ops = {.kname = "p", .kname_rem = "prem", .cold = false,
                                              .load_b = nc_bf_load_b, .load_a = nc_bf_load_a, .madd = nc_bf_madd,
                                              .cptr = nc_xptr, .cload = nc_xload, .cstore = nc_cstore};
// The same micro-kernel with an fp32 C (the shadow nc_gemm_args.cw of a
// bf16_io GEMM with K > kc): the partial sums of the K blocks stay fp32.
static LLVMValueRef nc_bf_f32_ptr(nc_bg *g, LLVMValueRef p, LLVMValueRef i) { return nc_fptr(g, p, i); }
static const nc_gemm_ukernel_ops nc_bf_ops_f32c = {.kname = "p", .kname_rem = "prem", .cold = false,
                                                   .load_b = nc_bf_load_b, .load_a = nc_bf_load_a, .madd = nc_bf_madd,
                                                   .cptr = nc_bf_f32_ptr, .cload = nc_load4, .cstore = nc_store4};

// ---- packing ------------------------------------------------------------------
// pack_a(Ap, A, lda, ic, mc, pc, kc): rows ic..ic+mc of op(A), depth pc..pc+kc
// (kc in k, not pairs), into ceil(mc/MR) panels of MR x kp pair words, zero
// rows past mc and a zero high half in the last pair when kc is odd.
static LLVMValueRef nc_emit_pack_a(nc_bg *g, const char *name) {
  const int MR = g->k->mr;
  LLVMValueRef P[7];
  LLVMValueRef fn = nc_gemm_ir_pack_begin(g, name, P);
  LLVMValueRef ap = P[0], a = P[1], lda = P[2], ic = P[3], mc = P[4], pc = P[5], kc = P[6];
  LLVMValueRef kp = LLVMBuildSDiv(g->b, nc_add(g, kc, c64(g, 1)), c64(g, 2), "kp");
  LLVMValueRef kfull = LLVMBuildSDiv(g->b, kc, c64(g, 2), "kfull");  // pairs with both halves
  nc_bloop Lr;
  LLVMValueRef ir = nc_loop_begin(g, &Lr, "ir", c64(g, 0), mc, c64(g, MR));
  LLVMValueRef panel = nc_fptr(g, ap, nc_mul(g, ir, kp));
  LLVMValueRef rows = nc_min(g, c64(g, MR), nc_sub(g, mc, ir));
  LLVMValueRef row0 = nc_add(g, ic, ir);
  if (!g->s->ta) {
    // A (M,K): row i of the panel converts A[row0+i, pc:pc+kc] 32 k at a time.
    LLVMValueRef p32 = nc_mul(g, LLVMBuildSDiv(g->b, kc, c64(g, 32), ""), c64(g, 16));
    for (int i = 0; i < MR; i++) {
      LLVMValueRef dst = nc_fptr(g, panel, nc_mul(g, c64(g, i), kp));
      nc_bif f;
      nc_if_begin(g, &f, nc_lt(g, c64(g, i), rows));
      LLVMValueRef src = nc_xptr(g, a, nc_add(g, nc_mul(g, nc_add(g, row0, c64(g, i)), lda), pc));
      nc_bloop Lk;
      LLVMValueRef p = nc_loop_begin(g, &Lk, "p", c64(g, 0), p32, c64(g, 16));
      LLVMValueRef s0 = nc_xptr(g, src, nc_mul(g, p, c64(g, 2)));
      LLVMValueRef w = nc_pairs32(g, nc_xload(g, g->vec, s0), nc_xload(g, g->vec, nc_xptr(g, s0, c64(g, 16))));
      nc_store4(g, w, nc_fptr(g, dst, p));
      nc_loop_end(g, &Lk);
      p = nc_loop_begin(g, &Lk, "pt", p32, kp, c64(g, 1));
      LLVMValueRef s = nc_xptr(g, src, nc_mul(g, p, c64(g, 2)));
      nc_store4(g, nc_pair_scalar(g, s, nc_xptr(g, s, c64(g, 1)), nc_lt(g, p, kfull)), nc_fptr(g, dst, p));
      nc_loop_end(g, &Lk);
      nc_if_else(g, &f);
      p = nc_loop_begin(g, &Lk, "z", c64(g, 0), kp, c64(g, 1));
      nc_store4(g, c32(g, 0), nc_fptr(g, dst, p));
      nc_loop_end(g, &Lk);
      nc_if_end(g, &f);
    }
  } else {
    // A stored (K,M): Ap[p*MR + i] pairs A[(pc+2p)*lda + row0+i] with the
    // next stored row. Full panels convert <MR x float> rows at a time.
    LLVMTypeRef rv = LLVMVectorType(g->f32, (unsigned)MR);
    nc_bif f;
    nc_if_begin(g, &f, LLVMBuildICmp(g->b, LLVMIntEQ, rows, c64(g, MR), ""));
    nc_bloop Lk;
    LLVMValueRef p = nc_loop_begin(g, &Lk, "p", c64(g, 0), kfull, c64(g, 1));
    LLVMValueRef s0 = nc_xptr(g, a, nc_add(g, nc_mul(g, nc_add(g, pc, nc_mul(g, p, c64(g, 2))), lda), row0));
    LLVMValueRef s1 = nc_xptr(g, s0, lda);
    LLVMValueRef w = nc_pair(g, nc_xload(g, rv, s0), nc_xload(g, rv, s1));
    nc_store4(g, w, nc_fptr(g, panel, nc_mul(g, p, c64(g, MR))));
    nc_loop_end(g, &Lk);
    nc_if_else(g, &f);
    nc_if_end(g, &f);
    // Edge panels, and the odd last pair of any panel: scalar.
    LLVMValueRef pstart = LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, rows, c64(g, MR), ""),
                                          kfull, c64(g, 0), "");
    p = nc_loop_begin(g, &Lk, "pe", pstart, kp, c64(g, 1));
    s0 = nc_xptr(g, a, nc_add(g, nc_mul(g, nc_add(g, pc, nc_mul(g, p, c64(g, 2))), lda), row0));
    LLVMValueRef has1 = nc_lt(g, p, kfull);
    for (int i = 0; i < MR; i++) {
      LLVMValueRef dst = nc_fptr(g, panel, nc_add(g, nc_mul(g, p, c64(g, MR)), c64(g, i)));
      nc_bif e;
      nc_if_begin(g, &e, nc_lt(g, c64(g, i), rows));
      LLVMValueRef x0 = nc_xptr(g, s0, c64(g, i));
      nc_store4(g, nc_pair_scalar(g, x0, nc_xptr(g, x0, lda), has1), dst);
      nc_if_else(g, &e);
      nc_store4(g, c32(g, 0), dst);
      nc_if_end(g, &e);
    }
    nc_loop_end(g, &Lk);
  }
  nc_loop_end(g, &Lr);
  LLVMBuildRetVoid(g->b);
  return fn;
}

// pack_b(Bp, B, ldb, pc, kc, jc, nc): depth pc..pc+kc, columns jc..jc+nc of
// op(B) into ceil(nc/NR) panels of kp x NR pair words (Bp[p*NR + j]; zero
// columns past nc, zero high half of the last pair when kc is odd).
static LLVMValueRef nc_emit_pack_b(nc_bg *g, const char *name) {
  const int NR = g->k->nr, VW = 16, NV = NR / VW;
  LLVMValueRef P[7];
  LLVMValueRef fn = nc_gemm_ir_pack_begin(g, name, P);
  LLVMValueRef bp = P[0], b = P[1], ldb = P[2], pc = P[3], kc = P[4], jc = P[5], nc = P[6];
  LLVMValueRef kp = LLVMBuildSDiv(g->b, nc_add(g, kc, c64(g, 1)), c64(g, 2), "kp");
  LLVMValueRef kfull = LLVMBuildSDiv(g->b, kc, c64(g, 2), "kfull");
  nc_bloop Lj;
  LLVMValueRef jr = nc_loop_begin(g, &Lj, "jr", c64(g, 0), nc, c64(g, NR));
  LLVMValueRef panel = nc_fptr(g, bp, nc_mul(g, jr, kp));
  LLVMValueRef cols = nc_min(g, c64(g, NR), nc_sub(g, nc, jr));
  LLVMValueRef col0 = nc_add(g, jc, jr);
  LLVMValueRef isfull = LLVMBuildICmp(g->b, LLVMIntEQ, cols, c64(g, NR), "");
  // Pairs [0, pdone) of a full panel are done by the vector code below; the
  // scalar loop at the end does the rest (all of an edge panel).
  LLVMValueRef pdone = nc_var(g, g->i64, "pdone", c64(g, 0));
  nc_bif f;
  nc_if_begin(g, &f, isfull);
  if (!g->s->tb) {
    // B (K,N): two stored rows -> one row of pair words, 16 columns a vector.
    nc_bloop Lk;
    LLVMValueRef p = nc_loop_begin(g, &Lk, "p", c64(g, 0), kfull, c64(g, 1));
    LLVMValueRef s0 = nc_xptr(g, b, nc_add(g, nc_mul(g, nc_add(g, pc, nc_mul(g, p, c64(g, 2))), ldb), col0));
    LLVMValueRef s1 = nc_xptr(g, s0, ldb);
    LLVMValueRef dst = nc_fptr(g, panel, nc_mul(g, p, c64(g, NR)));
    for (int v = 0; v < NV; v++) {
      LLVMValueRef o = c64(g, v * VW);
      nc_store4(g, nc_pair(g, nc_xload(g, g->vec, nc_xptr(g, s0, o)), nc_xload(g, g->vec, nc_xptr(g, s1, o))),
               nc_fptr(g, dst, o));
    }
    nc_loop_end(g, &Lk);
    LLVMBuildStore(g->b, kfull, pdone);
  } else {
    // B stored (N,K): 16 columns x 32 k -> 16 rows of 16 pair words
    // (nc_pairs32), transposed in registers into 16 pair rows of the panel.
    LLVMValueRef p32 = nc_mul(g, LLVMBuildSDiv(g->b, kc, c64(g, 32), ""), c64(g, 16));
    nc_bloop Lk, Lv;
    LLVMValueRef p0 = nc_loop_begin(g, &Lk, "p", c64(g, 0), p32, c64(g, 16));
    // Column groups in a run-time loop: one copy of the shuffle network keeps
    // the cold compile short (as in gemm.c).
    LLVMValueRef v0 = nc_loop_begin(g, &Lv, "v", c64(g, 0), c64(g, NR), c64(g, VW));
    LLVMValueRef r[16];
    for (int j = 0; j < VW; j++) {
      LLVMValueRef row = nc_add(g, col0, nc_add(g, v0, c64(g, j)));
      LLVMValueRef s = nc_xptr(g, b, nc_add(g, nc_mul(g, row, ldb), nc_add(g, pc, nc_mul(g, p0, c64(g, 2)))));
      r[j] = nc_pairs32(g, nc_xload(g, g->vec, s), nc_xload(g, g->vec, nc_xptr(g, s, c64(g, 16))));
    }
    nc_gemm_ir_transpose(g, r, VW);
    for (int q = 0; q < VW; q++) {
      LLVMValueRef off = nc_add(g, nc_mul(g, nc_add(g, p0, c64(g, q)), c64(g, NR)), v0);
      nc_store4(g, r[q], nc_fptr(g, panel, off));
    }
    nc_loop_end(g, &Lv);
    nc_loop_end(g, &Lk);
    LLVMBuildStore(g->b, p32, pdone);
  }
  nc_if_else(g, &f);
  nc_if_end(g, &f);
  {  // scalar rest: zero past cols
    nc_bloop Lk, Lc;
    LLVMValueRef p = nc_loop_begin(g, &Lk, "pe", LLVMBuildLoad2(g->b, g->i64, pdone, ""), kp, c64(g, 1));
    LLVMValueRef has1 = nc_lt(g, p, kfull);
    LLVMValueRef j = nc_loop_begin(g, &Lc, "je", c64(g, 0), c64(g, NR), c64(g, 1));
    LLVMValueRef dst = nc_fptr(g, panel, nc_add(g, nc_mul(g, p, c64(g, NR)), j));
    nc_bif e;
    nc_if_begin(g, &e, nc_lt(g, j, cols));
    LLVMValueRef col = nc_add(g, col0, j), kr = nc_add(g, pc, nc_mul(g, p, c64(g, 2)));
    LLVMValueRef x0, x1;
    if (g->s->tb) {
      x0 = nc_xptr(g, b, nc_add(g, nc_mul(g, col, ldb), kr));
      x1 = nc_xptr(g, x0, c64(g, 1));
    } else {
      x0 = nc_xptr(g, b, nc_add(g, nc_mul(g, kr, ldb), col));
      x1 = nc_xptr(g, x0, ldb);
    }
    nc_store4(g, nc_pair_scalar(g, x0, x1, has1), dst);
    nc_if_else(g, &e);
    nc_store4(g, c32(g, 0), dst);
    nc_if_end(g, &e);
    nc_loop_end(g, &Lc);
    nc_loop_end(g, &Lk);
  }
  nc_loop_end(g, &Lj);
  LLVMBuildRetVoid(g->b);
  return fn;
}

// ---- driver -------------------------------------------------------------------
// bf16_io with K > kc and a shadow cw: after the last K block of a C panel,
// rows [m0, m1) x columns [jc, jc + ncur) of C = bf16(cw + beta * C), one
// rounding of the fp32 total; with beta0 C is not read (it may hold NaN).
static void nc_emit_cw_flush(nc_bg *g, const nc_gemm_drv *d, LLVMValueRef Cb, LLVMValueRef Wb, LLVMValueRef m0,
                             LLVMValueRef m1, LLVMValueRef jc, LLVMValueRef ncur, bool beta0) {
  const int VW = 16;
  LLVMValueRef vbeta = nc_splat_to(g, g->vec, d->beta);
  LLVMValueRef nvec = nc_mul(g, LLVMBuildSDiv(g->b, ncur, c64(g, VW), ""), c64(g, VW));
  nc_bloop Li, Lj;
  LLVMValueRef i = nc_loop_begin(g, &Li, "fi", m0, m1, c64(g, 1));
  LLVMValueRef row = nc_add(g, nc_mul(g, i, d->ldc), jc);
  LLVMValueRef j = nc_loop_begin(g, &Lj, "fj", c64(g, 0), nvec, c64(g, VW));
  LLVMValueRef off = nc_add(g, row, j);
  LLVMValueRef x = nc_load4(g, g->vec, nc_fptr(g, Wb, off));
  if (!beta0) x = nc_fmav(g, nc_xload(g, g->vec, nc_xptr(g, Cb, off)), vbeta, x);
  nc_cstore(g, x, nc_xptr(g, Cb, off));
  nc_loop_end(g, &Lj);
  j = nc_loop_begin(g, &Lj, "fjt", nvec, ncur, c64(g, 1));
  off = nc_add(g, row, j);
  x = nc_load4(g, g->f32, nc_fptr(g, Wb, off));
  if (!beta0) x = nc_fmaf(g, nc_xload(g, g->f32, nc_xptr(g, Cb, off)), d->beta, x);
  nc_cstore(g, x, nc_xptr(g, Cb, off));
  nc_loop_end_cold(g, &Lj);
  nc_loop_end(g, &Li);
}

// The loop nest and work split of gemm.c's driver; panel offsets are in pair
// words (ir*kp, jr*kp) and the micro-kernel gets the pair count. With bf16_io,
// K > kc and args->cw set (a run-time test), every K block accumulates into the
// fp32 shadow cw (uk32: beta 0 on the first block, 1 after) and C is written
// once per panel after the last one (nc_emit_cw_flush); else each K block
// reads and rounds C (bf16 memory: one rounding per K block).
static void nc_emit_driver(nc_bg *g, LLVMValueRef uk, LLVMValueRef uk32, LLVMValueRef pa, LLVMValueRef pb) {
  const nc_gemm_knobs *k = g->k;
  nc_gemm_drv d;
  nc_gemm_ir_driver_begin(g, &d);
  LLVMValueRef Ap, Bp;
  nc_gemm_ir_workspace(g, &d, nc_bf_ws_words(k), (int64_t)k->mc * ((k->kc + 1) / 2), &Ap, &Bp);
  LLVMValueRef cw = NULL, use_cw = NULL;
  if (uk32) {
    cw = nc_arg(g, d.args, offsetof(nc_gemm_args, cw), g->ptr);
    use_cw = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntSGT, d.K, c64(g, k->kc), ""),
                          LLVMBuildNot(g->b, LLVMBuildIsNull(g->b, cw, ""), ""), "use_cw");
  }
  nc_gemm_split sp;
  nc_gemm_ir_split_begin(g, &d, &sp);
  // With K == 0 one pass with kc = 0 (no pairs) still applies beta to C.
  LLVMValueRef kend = nc_gemm_ir_split_end(g, &d, &sp), zero = c64(g, 0);

  nc_bloop Lb, Ljc, Lpc, Lic;
  LLVMValueRef bi = nc_loop_begin(g, &Lb, "b", sp.b0, sp.b1, c64(g, 1));
  LLVMValueRef Ab = nc_xptr(g, d.A, nc_mul(g, bi, d.sa));
  LLVMValueRef Bb = nc_xptr(g, d.B, nc_mul(g, bi, d.sb));
  LLVMValueRef Cb = nc_xptr(g, d.C, nc_mul(g, bi, d.sc));
  LLVMValueRef Wb = uk32 ? nc_fptr(g, cw, nc_mul(g, bi, d.sc)) : NULL;
  LLVMValueRef jc = nc_loop_begin(g, &Ljc, "jc", sp.n0, sp.n1, c64(g, k->nc));
  LLVMValueRef ncur = nc_min(g, c64(g, k->nc), nc_sub(g, sp.n1, jc));
  LLVMValueRef pc = nc_loop_begin(g, &Lpc, "pc", zero, kend, c64(g, k->kc));
  LLVMValueRef kc = nc_min(g, c64(g, k->kc), nc_sub(g, d.K, pc));
  LLVMValueRef kp = LLVMBuildSDiv(g->b, nc_add(g, kc, c64(g, 1)), c64(g, 2), "kp");
  LLVMValueRef first = LLVMBuildICmp(g->b, LLVMIntEQ, pc, zero, "");
  LLVMValueRef beff = LLVMBuildSelect(g->b, first, d.beta, cf(g, 1.0), "");
  LLVMValueRef pbargs[] = {Bp, Bb, d.ldb, pc, kc, jc, ncur};
  nc_call(g, pb, pbargs, 7);
  LLVMValueRef ic = nc_loop_begin(g, &Lic, "ic", sp.m0, sp.m1, c64(g, k->mc));
  LLVMValueRef mcur = nc_min(g, c64(g, k->mc), nc_sub(g, sp.m1, ic));
  LLVMValueRef paargs[] = {Ap, Ab, d.lda, ic, mcur, pc, kc};
  nc_call(g, pa, paargs, 7);
  // panel offsets in pair words (ir*kp, jr*kp); the micro-kernel gets the pair count
  nc_gemm_ir_tiles tl = {.Ap = Ap, .Bp = Bp, .Cb = Cb, .ldc = d.ldc, .ic = ic, .jc = jc, .kd = kp,
                         .mcur = mcur, .ncur = ncur, .alpha = d.alpha, .beff = beff};
  if (uk32) {
    nc_bif fw;
    nc_if_begin(g, &fw, use_cw);
    nc_gemm_ir_tiles tw = tl;
    tw.Cb = Wb;
    tw.beff = LLVMBuildSelect(g->b, first, cf(g, 0.0), cf(g, 1.0), "");
    g->ops = &nc_bf_ops_f32c;  // (tile_loops forms the C pointers with ops->cptr)
    nc_gemm_ir_tile_loops(g, uk32, &tw);
    g->ops = &nc_bf_ops;
    nc_if_else(g, &fw);
    nc_gemm_ir_tile_loops(g, uk, &tl);
    nc_if_end(g, &fw);
  } else {
    nc_gemm_ir_tile_loops(g, uk, &tl);
  }
  nc_loop_end(g, &Lic);
  nc_loop_end(g, &Lpc);
  if (uk32) {  // the panel's one rounding to bf16
    nc_bif fw, fb;
    nc_if_begin(g, &fw, use_cw);
    nc_if_begin(g, &fb, LLVMBuildFCmp(g->b, LLVMRealOEQ, d.beta, cf(g, 0.0), ""));
    nc_emit_cw_flush(g, &d, Cb, Wb, sp.m0, sp.m1, jc, ncur, true);
    nc_if_else(g, &fb);
    nc_emit_cw_flush(g, &d, Cb, Wb, sp.m0, sp.m1, jc, ncur, false);
    nc_if_end(g, &fb);
    nc_if_else(g, &fw);
    nc_if_end(g, &fw);
  }
  nc_loop_end(g, &Ljc);
  nc_loop_end(g, &Lb);
  LLVMBuildRetVoid(g->b);
}

nc_status nc_gemm_bf16_emit(LLVMModuleRef m, const nc_host_cpu *cpu, const nc_gemm_spec *spec) {
  if (!spec || !spec->name || !spec->name[0])
    return nc_errorf(NC_E_INVALID, "nc_gemm_bf16_emit: spec needs a function name");
  // Without AVX512_BF16 LLVM would fail in instruction selection (or worse,
  // expand the intrinsic away); refuse up front with a clear message.
  if (!nc_gemm_bf16_supported(cpu))
    return nc_errorf(NC_E_UNSUPPORTED, "bf16 gemm '%s': CPU '%s' lacks avx512bf16", spec->name,
                     cpu ? cpu->cpu : "?");
  NC_TRY(nc_status_prefix(nc_gemm_bf16_knobs_check(&spec->knobs), "bf16 gemm '%s': ", spec->name));
  if (LLVMGetNamedFunction(m, spec->name))
    return nc_errorf(NC_E_INVALID, "nc_gemm_bf16_emit: module already has a function '%s'", spec->name);
  static const char dp_name[] = "llvm.x86.avx512bf16.dpbf16ps.512";
  unsigned dp_id = LLVMLookupIntrinsicID(dp_name, sizeof dp_name - 1);
  if (!dp_id) return nc_errorf(NC_E_UNSUPPORTED, "bf16 gemm: this LLVM has no %s", dp_name);
  nc_bg g;
  nc_gemm_ir_init(&g, m, spec, 16, dp_id);
  g.ops = &nc_bf_ops;

  char name[256];
  snprintf(name, sizeof name, "%s.ukernel", spec->name);
  LLVMValueRef uk = nc_gemm_ir_ukernel(&g, name), uk32 = NULL;
  if (spec->bf16_io) {  // the fp32 shadow's micro-kernel (K > kc)
    snprintf(name, sizeof name, "%s.ukernel_f32c", spec->name);
    g.ops = &nc_bf_ops_f32c;
    uk32 = nc_gemm_ir_ukernel(&g, name);
    g.ops = &nc_bf_ops;
  }
  snprintf(name, sizeof name, "%s.pack_a", spec->name);
  LLVMValueRef pa = nc_emit_pack_a(&g, name);
  snprintf(name, sizeof name, "%s.pack_b", spec->name);
  LLVMValueRef pb = nc_emit_pack_b(&g, name);
  nc_emit_driver(&g, uk, uk32, pa, pb);
  LLVMDisposeBuilder(g.b);
  return NC_OK;
}

nc_status nc_gemm_bf16_compile(nc_jit *jit, const nc_gemm_spec *spec, nc_gemm_fn *out) {
  return nc_gemm_ir_compile(jit, spec, "gemm_bf16", nc_gemm_bf16_emit, out);
}

#else  // !NC_HAVE_LLVM
nc_status nc_gemm_bf16_compile(nc_jit *jit, const nc_gemm_spec *spec, nc_gemm_fn *out) {
  (void)jit;
  (void)spec;
  *out = NULL;
  return nc_errorf(NC_E_UNSUPPORTED, "nc_gemm_bf16_compile: this build has no LLVM");
}
#endif
