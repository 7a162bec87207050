// bf16 GEMM generator (see gemm_bf16.h). The loop nest, work split and store
// of C follow codegen/gemm.c; what differs is packing (fp32 -> bf16 pairs)
// and the micro-kernel (vdpbf16ps on pair words). IR is written the easy way,
// as in gemm.c: counters and accumulators in entry-block allocas, promoted to
// SSA by the O3 pipeline.
#include "codegen/gemm_bf16.h"

#include <stdio.h>
#include <string.h>

#define NC_BF_MAX_ACC 32  // accumulators the micro-kernel may keep (zmm count)

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
static LLVMValueRef nc_load(nc_bg *g, LLVMTypeRef ty, LLVMValueRef p) {
  LLVMValueRef v = LLVMBuildLoad2(g->b, ty, p, "");
  LLVMSetAlignment(v, 4);
  return v;
}
static void nc_store(nc_bg *g, LLVMValueRef v, LLVMValueRef p) {
  LLVMSetAlignment(LLVMBuildStore(g->b, v, p), 4);
}
static LLVMValueRef nc_splat_to(nc_bg *g, LLVMTypeRef vty, LLVMValueRef x) {
  LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetPoison(vty), x, c32(g, 0), "");
  LLVMValueRef zero = LLVMConstNull(LLVMVectorType(g->i32, LLVMGetVectorSize(vty)));
  return LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(vty), zero, "");
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
  if (!g->s->bf16_io) return nc_load(g, ty, p);
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
    nc_store(g, x, p);
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

// ---- micro-kernel -----------------------------------------------------------
// ukernel(kp, Ap, Bp, C, ldc, mr, nr, alpha, beta):
//   C[0:mr, 0:nr] = alpha * Ap(MR x kp pairs) · Bp(kp pairs x NR) + beta * C
static LLVMValueRef nc_emit_ukernel(nc_bg *g, const char *name) {
  const nc_gemm_knobs *k = g->k;
  const int MR = k->mr, NV = k->nr / 16, VW = 16;
  LLVMTypeRef ps[] = {g->i64, g->ptr, g->ptr, g->ptr, g->i64, g->i64, g->i64, g->f32, g->f32};
  LLVMValueRef fn = nc_begin_fn(g, name, ps, 9, true);
  LLVMValueRef kp = LLVMGetParam(fn, 0), ap = LLVMGetParam(fn, 1), bp = LLVMGetParam(fn, 2);
  LLVMValueRef cp = LLVMGetParam(fn, 3), ldc = LLVMGetParam(fn, 4), mr = LLVMGetParam(fn, 5);
  LLVMValueRef nr = LLVMGetParam(fn, 6), alpha = LLVMGetParam(fn, 7), beta = LLVMGetParam(fn, 8);
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (unsigned i = 1; i <= 3; i++)
    LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(g->ctx, noalias, 0));

  LLVMValueRef acc[NC_BF_MAX_ACC];
  for (int i = 0; i < MR * NV; i++) acc[i] = nc_var(g, g->vec, "acc", LLVMConstNull(g->vec));
  LLVMValueRef arow[NC_BF_MAX_ACC];
  if (!g->s->ta)
    for (int i = 0; i < MR; i++) arow[i] = nc_fptr(g, ap, nc_mul(g, c64(g, i), kp));

  // One pair step: NV vector loads of B, MR broadcast pair words of A (folded
  // into vdpbf16ps as {1to16} memory operands), MR*NV vdpbf16ps.
#define NC_PSTEP(pv)                                                                          \
  do {                                                                                        \
    LLVMValueRef bv[NC_BF_MAX_ACC];                                                           \
    LLVMValueRef brow = nc_fptr(g, bp, nc_mul(g, (pv), c64(g, k->nr)));                       \
    if (k->prefetch_b) {                                                                      \
      LLVMValueRef pa[4] = {nc_fptr(g, brow, c64(g, (int64_t)k->prefetch_b * k->nr)),        \
                            c32(g, 0), c32(g, 3), c32(g, 1)};                                 \
      LLVMBuildCall2(g->b, g->pf_ty, g->prefetch, pa, 4, "");                                 \
    }                                                                                         \
    for (int v = 0; v < NV; v++)                                                              \
      bv[v] = nc_load(g, g->bvec, nc_fptr(g, brow, c64(g, v * VW)));                          \
    for (int i = 0; i < MR; i++) {                                                            \
      LLVMValueRef ae = g->s->ta ? nc_fptr(g, ap, nc_add(g, nc_mul(g, (pv), c64(g, MR)), c64(g, i))) \
                                 : nc_fptr(g, arow[i], (pv));                                 \
      LLVMValueRef a = LLVMBuildBitCast(g->b, nc_splat_to(g, g->ivec, nc_load(g, g->i32, ae)), \
                                        g->bvec, "");                                         \
      for (int v = 0; v < NV; v++) {                                                          \
        LLVMValueRef p = acc[i * NV + v];                                                     \
        LLVMValueRef da[3] = {LLVMBuildLoad2(g->b, g->vec, p, ""), a, bv[v]};                 \
        LLVMBuildStore(g->b, LLVMBuildCall2(g->b, g->dp_ty, g->dp, da, 3, ""), p);            \
      }                                                                                       \
    }                                                                                         \
  } while (0)

  LLVMValueRef pmain = nc_sub(g, kp, LLVMBuildSRem(g->b, kp, c64(g, k->ku), ""));
  nc_bloop L;
  LLVMValueRef pp = nc_loop_begin(g, &L, "p", c64(g, 0), pmain, c64(g, k->ku));
  for (int u = 0; u < k->ku; u++) NC_PSTEP(nc_add(g, pp, c64(g, u)));
  nc_loop_end(g, &L);
  pp = nc_loop_begin(g, &L, "prem", pmain, kp, c64(g, 1));
  NC_PSTEP(pp);
  nc_loop_end(g, &L);
#undef NC_PSTEP

  // Store: identical to the fp32 template.
  LLVMValueRef valpha = nc_splat_to(g, g->vec, alpha), vbeta = nc_splat_to(g, g->vec, beta);
  LLVMValueRef full = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, mr, c64(g, MR), ""),
                                   LLVMBuildICmp(g->b, LLVMIntEQ, nr, c64(g, k->nr), ""), "");
  LLVMValueRef beta0 = LLVMBuildFCmp(g->b, LLVMRealOEQ, beta, cf(g, 0.0), "");
  nc_bif fi;
  nc_if_begin(g, &fi, full);
  {
    nc_bif bi;
    nc_if_begin(g, &bi, beta0);
    for (int i = 0; i < MR; i++)
      for (int v = 0; v < NV; v++) {
        LLVMValueRef p = nc_xptr(g, cp, nc_add(g, nc_mul(g, c64(g, i), ldc), c64(g, v * VW)));
        LLVMValueRef a = LLVMBuildLoad2(g->b, g->vec, acc[i * NV + v], "");
        nc_cstore(g, LLVMBuildFMul(g->b, a, valpha, ""), p);
      }
    nc_if_else(g, &bi);
    for (int i = 0; i < MR; i++)
      for (int v = 0; v < NV; v++) {
        LLVMValueRef p = nc_xptr(g, cp, nc_add(g, nc_mul(g, c64(g, i), ldc), c64(g, v * VW)));
        LLVMValueRef a = LLVMBuildLoad2(g->b, g->vec, acc[i * NV + v], "");
        nc_cstore(g, nc_fmav(g, nc_xload(g, g->vec, p), vbeta, LLVMBuildFMul(g->b, a, valpha, "")), p);
      }
    nc_if_end(g, &bi);
  }
  nc_if_else(g, &fi);
  {  // edge tile: spill the accumulators, then scalar stores of the valid part
    LLVMValueRef tmp = nc_var(g, LLVMArrayType(g->f32, (unsigned)(MR * k->nr)), "tile", NULL);
    for (int i = 0; i < MR; i++)
      for (int v = 0; v < NV; v++)
        nc_store(g, LLVMBuildLoad2(g->b, g->vec, acc[i * NV + v], ""),
                 nc_fptr(g, tmp, c64(g, i * k->nr + v * VW)));
    nc_bloop Li, Lj;
    LLVMValueRef i = nc_loop_begin(g, &Li, "ei", c64(g, 0), mr, c64(g, 1));
    LLVMValueRef j = nc_loop_begin(g, &Lj, "ej", c64(g, 0), nr, c64(g, 1));
    LLVMValueRef t = LLVMBuildLoad2(g->b, g->f32, nc_fptr(g, tmp, nc_add(g, nc_mul(g, i, c64(g, k->nr)), j)), "");
    LLVMValueRef p = nc_xptr(g, cp, nc_add(g, nc_mul(g, i, ldc), j));
    LLVMValueRef r = LLVMBuildFMul(g->b, t, alpha, "");
    nc_bif bi;
    nc_if_begin(g, &bi, beta0);
    nc_cstore(g, r, p);
    nc_if_else(g, &bi);
    nc_cstore(g, nc_fmaf(g, nc_xload(g, g->f32, p), beta, r), p);
    nc_if_end(g, &bi);
    nc_loop_end(g, &Lj);
    nc_loop_end(g, &Li);
  }
  nc_if_end(g, &fi);
  LLVMBuildRetVoid(g->b);
  return fn;
}

// ---- packing ------------------------------------------------------------------
// pack_a(Ap, A, lda, ic, mc, pc, kc): rows ic..ic+mc of op(A), depth pc..pc+kc
// (kc in k, not pairs), into ceil(mc/MR) panels of MR x kp pair words, zero
// rows past mc and a zero high half in the last pair when kc is odd.
static LLVMValueRef nc_emit_pack_a(nc_bg *g, const char *name) {
  const int MR = g->k->mr;
  LLVMTypeRef ps[] = {g->ptr, g->ptr, g->i64, g->i64, g->i64, g->i64, g->i64};
  LLVMValueRef fn = nc_begin_fn(g, name, ps, 7, true);
  LLVMValueRef ap = LLVMGetParam(fn, 0), a = LLVMGetParam(fn, 1), lda = LLVMGetParam(fn, 2);
  LLVMValueRef ic = LLVMGetParam(fn, 3), mc = LLVMGetParam(fn, 4), pc = LLVMGetParam(fn, 5);
  LLVMValueRef kc = LLVMGetParam(fn, 6);
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
      nc_store(g, w, nc_fptr(g, dst, p));
      nc_loop_end(g, &Lk);
      p = nc_loop_begin(g, &Lk, "pt", p32, kp, c64(g, 1));
      LLVMValueRef s = nc_xptr(g, src, nc_mul(g, p, c64(g, 2)));
      nc_store(g, nc_pair_scalar(g, s, nc_xptr(g, s, c64(g, 1)), nc_lt(g, p, kfull)), nc_fptr(g, dst, p));
      nc_loop_end(g, &Lk);
      nc_if_else(g, &f);
      p = nc_loop_begin(g, &Lk, "z", c64(g, 0), kp, c64(g, 1));
      nc_store(g, c32(g, 0), nc_fptr(g, dst, p));
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
    nc_store(g, w, nc_fptr(g, panel, nc_mul(g, p, c64(g, MR))));
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
      nc_store(g, nc_pair_scalar(g, x0, nc_xptr(g, x0, lda), has1), dst);
      nc_if_else(g, &e);
      nc_store(g, c32(g, 0), dst);
      nc_if_end(g, &e);
    }
    nc_loop_end(g, &Lk);
  }
  nc_loop_end(g, &Lr);
  LLVMBuildRetVoid(g->b);
  return fn;
}

// In-register transpose of 16 vectors of 16 words (as gemm.c's nc_transpose).
static void nc_transpose16(nc_bg *g, LLVMValueRef *r) {
  const int VW = 16;
  LLVMValueRef m0[16], m1[16];
  for (int d = VW / 2; d >= 1; d /= 2) {
    for (int c = 0; c < VW; c++) {
      m0[c] = c32(g, (c & d) ? VW + c - d : c);
      m1[c] = c32(g, (c & d) ? VW + c : c + d);
    }
    LLVMValueRef k0 = LLVMConstVector(m0, (unsigned)VW), k1 = LLVMConstVector(m1, (unsigned)VW);
    for (int row = 0; row < VW; row++) {
      if (row & d) continue;
      LLVMValueRef lo = LLVMBuildShuffleVector(g->b, r[row], r[row + d], k0, "");
      LLVMValueRef hi = LLVMBuildShuffleVector(g->b, r[row], r[row + d], k1, "");
      r[row] = lo;
      r[row + d] = hi;
    }
  }
}

// pack_b(Bp, B, ldb, pc, kc, jc, nc): depth pc..pc+kc, columns jc..jc+nc of
// op(B) into ceil(nc/NR) panels of kp x NR pair words (Bp[p*NR + j]; zero
// columns past nc, zero high half of the last pair when kc is odd).
static LLVMValueRef nc_emit_pack_b(nc_bg *g, const char *name) {
  const int NR = g->k->nr, VW = 16, NV = NR / VW;
  LLVMTypeRef ps[] = {g->ptr, g->ptr, g->i64, g->i64, g->i64, g->i64, g->i64};
  LLVMValueRef fn = nc_begin_fn(g, name, ps, 7, true);
  LLVMValueRef bp = LLVMGetParam(fn, 0), b = LLVMGetParam(fn, 1), ldb = LLVMGetParam(fn, 2);
  LLVMValueRef pc = LLVMGetParam(fn, 3), kc = LLVMGetParam(fn, 4), jc = LLVMGetParam(fn, 5);
  LLVMValueRef nc = LLVMGetParam(fn, 6);
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
      nc_store(g, nc_pair(g, nc_xload(g, g->vec, nc_xptr(g, s0, o)), nc_xload(g, g->vec, nc_xptr(g, s1, o))),
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
    nc_transpose16(g, r);
    for (int q = 0; q < VW; q++) {
      LLVMValueRef off = nc_add(g, nc_mul(g, nc_add(g, p0, c64(g, q)), c64(g, NR)), v0);
      nc_store(g, r[q], nc_fptr(g, panel, off));
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
    nc_store(g, nc_pair_scalar(g, x0, x1, has1), dst);
    nc_if_else(g, &e);
    nc_store(g, c32(g, 0), dst);
    nc_if_end(g, &e);
    nc_loop_end(g, &Lc);
    nc_loop_end(g, &Lk);
  }
  nc_loop_end(g, &Lj);
  LLVMBuildRetVoid(g->b);
  return fn;
}

// ---- driver -------------------------------------------------------------------
// The loop nest and work split of gemm.c's driver; panel offsets are in pair
// words (ir*kp, jr*kp) and the micro-kernel gets the pair count.
static void nc_emit_driver(nc_bg *g, LLVMValueRef uk, LLVMValueRef pa, LLVMValueRef pb) {
  const nc_gemm_knobs *k = g->k;
  LLVMTypeRef ps[] = {g->ptr, g->i32, g->i32};
  LLVMValueRef fn = nc_begin_fn(g, g->s->name, ps, 3, false);
  LLVMValueRef args = LLVMGetParam(fn, 0);
  LLVMValueRef t = LLVMBuildSExt(g->b, LLVMGetParam(fn, 1), g->i64, "t");
  LLVMValueRef T = LLVMBuildSExt(g->b, LLVMGetParam(fn, 2), g->i64, "T");
#define NC_F(field, ty) nc_arg(g, args, offsetof(nc_gemm_args, field), ty)
  LLVMValueRef A = NC_F(a, g->ptr), B = NC_F(b, g->ptr), C = NC_F(c, g->ptr);
  LLVMValueRef M = NC_F(m, g->i64), N = NC_F(n, g->i64), K = NC_F(k, g->i64);
  LLVMValueRef lda = NC_F(lda, g->i64), ldb = NC_F(ldb, g->i64), ldc = NC_F(ldc, g->i64);
  LLVMValueRef batch = NC_F(batch, g->i64), sa = NC_F(stride_a, g->i64);
  LLVMValueRef sb = NC_F(stride_b, g->i64), sc = NC_F(stride_c, g->i64);
  LLVMValueRef alpha = NC_F(alpha, g->f32), beta = NC_F(beta, g->f32), work = NC_F(work, g->ptr);
#undef NC_F
  LLVMValueRef ws = nc_fptr(g, work, nc_mul(g, t, c64(g, nc_bf_ws_words(k))));
  LLVMValueRef Ap = ws;
  LLVMValueRef Bp = nc_fptr(g, ws, c64(g, ((int64_t)k->mc * ((k->kc + 1) / 2) + 15) / 16 * 16));

  LLVMValueRef bsplit = LLVMBuildICmp(g->b, LLVMIntSGE, batch, T, "");
  LLVMValueRef msplit = LLVMBuildICmp(g->b, LLVMIntSGE, M, N, "");
  LLVMValueRef b0, b1, m0, m1, n0, n1;
  nc_split(g, batch, 1, t, T, &b0, &b1);
  nc_split(g, M, k->mr, t, T, &m0, &m1);
  nc_split(g, N, k->nr, t, T, &n0, &n1);
  LLVMValueRef zero = c64(g, 0);
  LLVMValueRef nb = LLVMBuildNot(g->b, bsplit, "");
  LLVMValueRef use_m = LLVMBuildAnd(g->b, nb, msplit, "");
  LLVMValueRef use_n = LLVMBuildAnd(g->b, nb, LLVMBuildNot(g->b, msplit, ""), "");
  b0 = LLVMBuildSelect(g->b, bsplit, b0, zero, "");
  b1 = LLVMBuildSelect(g->b, bsplit, b1, batch, "");
  m0 = LLVMBuildSelect(g->b, use_m, m0, zero, "");
  m1 = LLVMBuildSelect(g->b, use_m, m1, M, "");
  n0 = LLVMBuildSelect(g->b, use_n, n0, zero, "");
  n1 = LLVMBuildSelect(g->b, use_n, n1, N, "");
  // With K == 0 one pass with kc = 0 (no pairs) still applies beta to C.
  LLVMValueRef kend = LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, K, zero, ""), c64(g, 1), K, "");

  nc_bloop Lb, Ljc, Lpc, Lic, Lo, Li;
  LLVMValueRef bi = nc_loop_begin(g, &Lb, "b", b0, b1, c64(g, 1));
  LLVMValueRef Ab = nc_xptr(g, A, nc_mul(g, bi, sa));
  LLVMValueRef Bb = nc_xptr(g, B, nc_mul(g, bi, sb));
  LLVMValueRef Cb = nc_xptr(g, C, nc_mul(g, bi, sc));
  LLVMValueRef jc = nc_loop_begin(g, &Ljc, "jc", n0, n1, c64(g, k->nc));
  LLVMValueRef ncur = nc_min(g, c64(g, k->nc), nc_sub(g, n1, jc));
  LLVMValueRef pc = nc_loop_begin(g, &Lpc, "pc", zero, kend, c64(g, k->kc));
  LLVMValueRef kc = nc_min(g, c64(g, k->kc), nc_sub(g, K, pc));
  LLVMValueRef kp = LLVMBuildSDiv(g->b, nc_add(g, kc, c64(g, 1)), c64(g, 2), "kp");
  LLVMValueRef beff =
      LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, pc, zero, ""), beta, cf(g, 1.0), "");
  LLVMValueRef pbargs[] = {Bp, Bb, ldb, pc, kc, jc, ncur};
  nc_call(g, pb, pbargs, 7);
  LLVMValueRef ic = nc_loop_begin(g, &Lic, "ic", m0, m1, c64(g, k->mc));
  LLVMValueRef mcur = nc_min(g, c64(g, k->mc), nc_sub(g, m1, ic));
  LLVMValueRef paargs[] = {Ap, Ab, lda, ic, mcur, pc, kc};
  nc_call(g, pa, paargs, 7);
  LLVMValueRef ir, jr;
  if (k->order == 0) {
    jr = nc_loop_begin(g, &Lo, "jr", zero, ncur, c64(g, k->nr));
    ir = nc_loop_begin(g, &Li, "ir", zero, mcur, c64(g, k->mr));
  } else {
    ir = nc_loop_begin(g, &Lo, "ir", zero, mcur, c64(g, k->mr));
    jr = nc_loop_begin(g, &Li, "jr", zero, ncur, c64(g, k->nr));
  }
  LLVMValueRef cptr = nc_xptr(g, Cb, nc_add(g, nc_mul(g, nc_add(g, ic, ir), ldc), nc_add(g, jc, jr)));
  LLVMValueRef ukargs[] = {kp,
                           nc_fptr(g, Ap, nc_mul(g, ir, kp)),
                           nc_fptr(g, Bp, nc_mul(g, jr, kp)),
                           cptr,
                           ldc,
                           nc_min(g, c64(g, k->mr), nc_sub(g, mcur, ir)),
                           nc_min(g, c64(g, k->nr), nc_sub(g, ncur, jr)),
                           alpha,
                           beff};
  nc_call(g, uk, ukargs, 9);
  nc_loop_end(g, &Li);
  nc_loop_end(g, &Lo);
  nc_loop_end(g, &Lic);
  nc_loop_end(g, &Lpc);
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
  nc_bg g = {0};
  g.mod = m;
  g.ctx = LLVMGetModuleContext(m);
  g.b = LLVMCreateBuilderInContext(g.ctx);
  g.s = spec;
  g.k = &spec->knobs;
  g.i1 = LLVMInt1TypeInContext(g.ctx);
  g.i16 = LLVMInt16TypeInContext(g.ctx);
  g.i32 = LLVMInt32TypeInContext(g.ctx);
  g.i64 = LLVMInt64TypeInContext(g.ctx);
  g.f32 = LLVMFloatTypeInContext(g.ctx);
  g.ptr = LLVMPointerTypeInContext(g.ctx, 0);
  g.voidt = LLVMVoidTypeInContext(g.ctx);
  g.vec = LLVMVectorType(g.f32, 16);
  g.ivec = LLVMVectorType(g.i32, 16);
  g.bvec = LLVMVectorType(LLVMBFloatTypeInContext(g.ctx), 32);
  unsigned fma_id = LLVMLookupIntrinsicID("llvm.fma", 8);
  unsigned pf_id = LLVMLookupIntrinsicID("llvm.prefetch", 13);
  static const char dp_name[] = "llvm.x86.avx512bf16.dpbf16ps.512";
  unsigned dp_id = LLVMLookupIntrinsicID(dp_name, sizeof dp_name - 1);
  if (!dp_id) {
    LLVMDisposeBuilder(g.b);
    return nc_errorf(NC_E_UNSUPPORTED, "bf16 gemm: this LLVM has no %s", dp_name);
  }
  g.fma = LLVMGetIntrinsicDeclaration(m, fma_id, &g.f32, 1);
  g.fma_ty = LLVMIntrinsicGetType(g.ctx, fma_id, &g.f32, 1);
  g.fmav = LLVMGetIntrinsicDeclaration(m, fma_id, &g.vec, 1);
  g.fmav_ty = LLVMIntrinsicGetType(g.ctx, fma_id, &g.vec, 1);
  g.dp = LLVMGetIntrinsicDeclaration(m, dp_id, NULL, 0);  // not overloaded
  g.dp_ty = LLVMIntrinsicGetType(g.ctx, dp_id, NULL, 0);
  g.prefetch = LLVMGetIntrinsicDeclaration(m, pf_id, &g.ptr, 1);
  g.pf_ty = LLVMIntrinsicGetType(g.ctx, pf_id, &g.ptr, 1);

  char name[256];
  snprintf(name, sizeof name, "%s.ukernel", spec->name);
  LLVMValueRef uk = nc_emit_ukernel(&g, name);
  snprintf(name, sizeof name, "%s.pack_a", spec->name);
  LLVMValueRef pa = nc_emit_pack_a(&g, name);
  snprintf(name, sizeof name, "%s.pack_b", spec->name);
  LLVMValueRef pb = nc_emit_pack_b(&g, name);
  nc_emit_driver(&g, uk, pa, pb);
  LLVMDisposeBuilder(g.b);
  return NC_OK;
}

nc_status nc_gemm_bf16_compile(nc_jit *jit, const nc_gemm_spec *spec, nc_gemm_fn *out) {
  *out = NULL;
  LLVMModuleRef m;
  NC_TRY(nc_jit_module_new(jit, spec->name ? spec->name : "gemm_bf16", &m));
  nc_status st = nc_gemm_bf16_emit(m, nc_jit_cpu(jit), spec);
  if (st) {
    LLVMDisposeModule(m);
    return st;
  }
  NC_TRY(nc_jit_add_module(jit, m));
  void *p;
  NC_TRY(nc_jit_lookup(jit, spec->name, &p));
  *out = (nc_gemm_fn)p;
  return NC_OK;
}

#else  // !NC_HAVE_LLVM
nc_status nc_gemm_bf16_compile(nc_jit *jit, const nc_gemm_spec *spec, nc_gemm_fn *out) {
  (void)jit;
  (void)spec;
  *out = NULL;
  return nc_errorf(NC_E_UNSUPPORTED, "nc_gemm_bf16_compile: this build has no LLVM");
}
#endif
