#include "codegen/llvm_kir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>  // LLVMTemporaryMDNode, LLVMMetadataReplaceAllUsesWith

typedef struct {
  LLVMContextRef c;
  LLVMModuleRef m;
  LLVMBuilderRef b;
  LLVMValueRef fn;
  const nc_kernel *k;
  LLVMValueRef bufs[NC_KERNEL_MAX_BUFS];
  LLVMValueRef args[NC_KERNEL_MAX_ARGS];
  LLVMValueRef vars[64];
  LLVMValueRef accs[NC_KERNEL_MAX_ACCS];  // allocas
  LLVMValueRef thread, nthreads;
  // memo of emitted expressions, valid while the loop level they were
  // emitted at is open (level[x] <= current level)
  LLVMValueRef *memo;
  int *memo_level;
  int level;
  LLVMTypeRef i1, i8, i16, i32, i64, f32, ptr, vd;
  bool bf16hw;  // the target has AVX512_BF16: fptrunc to bfloat is vcvtneps2bf16 (else a libcall the JIT lacks)
  nc_status st;
} nc_lk;

// Register type of a dtype: half precisions compute in float.
static LLVMTypeRef nc_lk_reg(nc_lk *e, nc_dtype t) {
  switch (t) {
    case NC_F32: case NC_BF16: case NC_F16: return e->f32;
    case NC_I32: return e->i32;
    case NC_I64: return e->i64;
    case NC_U8: return e->i8;
    case NC_BOOL: return e->i1;
    default: return e->f32;
  }
}

// Memory type of a dtype.
static LLVMTypeRef nc_lk_mem(nc_lk *e, nc_dtype t) {
  switch (t) {
    case NC_BF16: return LLVMBFloatTypeInContext(e->c);
    case NC_F16: return LLVMHalfTypeInContext(e->c);
    case NC_BOOL: return e->i8;
    default: return nc_lk_reg(e, t);
  }
}

// f32 -> the bits of its bf16 (i16): round to nearest even, NaN kept quiet,
// exactly nc_f32_to_bf16; integer ops only, for targets without AVX512_BF16.
static LLVMValueRef nc_lk_bf16_bits(nc_lk *e, LLVMValueRef v) {
  LLVMBuilderRef b = e->b;
  LLVMValueRef u = LLVMBuildBitCast(b, v, e->i32, "");
  LLVMValueRef odd = LLVMBuildAnd(b, LLVMBuildLShr(b, u, LLVMConstInt(e->i32, 16, 0), ""), LLVMConstInt(e->i32, 1, 0), "");
  LLVMValueRef r = LLVMBuildLShr(b, LLVMBuildAdd(b, u, LLVMBuildAdd(b, odd, LLVMConstInt(e->i32, 0x7fff, 0), ""), ""),
                                 LLVMConstInt(e->i32, 16, 0), "");
  LLVMValueRef nan = LLVMBuildICmp(b, LLVMIntUGT, LLVMBuildAnd(b, u, LLVMConstInt(e->i32, 0x7fffffff, 0), ""),
                                   LLVMConstInt(e->i32, 0x7f800000, 0), "");
  LLVMValueRef q = LLVMBuildOr(b, LLVMBuildLShr(b, u, LLVMConstInt(e->i32, 16, 0), ""), LLVMConstInt(e->i32, 0x40, 0), "");
  return LLVMBuildTrunc(b, LLVMBuildSelect(b, nan, q, r, ""), e->i16, "");
}

// Rounds a float register value to bf16/f16 precision (what the evaluator does per op).
static LLVMValueRef nc_lk_round(nc_lk *e, LLVMValueRef v, nc_dtype t) {
  if (t != NC_BF16 && t != NC_F16) return v;
  if (t == NC_BF16 && !e->bf16hw) {
    LLVMValueRef w = LLVMBuildShl(e->b, LLVMBuildZExt(e->b, nc_lk_bf16_bits(e, v), e->i32, ""), LLVMConstInt(e->i32, 16, 0), "");
    return LLVMBuildBitCast(e->b, w, e->f32, "");
  }
  LLVMValueRef h = LLVMBuildFPTrunc(e->b, v, nc_lk_mem(e, t), "");
  return LLVMBuildFPExt(e->b, h, e->f32, "");
}

static LLVMValueRef nc_lk_intrinsic(nc_lk *e, const char *name, LLVMTypeRef ty, LLVMValueRef *args, int n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef tys[1] = {ty};
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(e->m, id, tys, 1);
  LLVMTypeRef ft = LLVMIntrinsicGetType(e->c, id, tys, 1);
  return LLVMBuildCall2(e->b, ft, f, args, (unsigned)n, "");
}

static LLVMValueRef nc_lk_x(nc_lk *e, nc_kx x);

static LLVMValueRef nc_lk_fma_chain(nc_lk *e, LLVMValueRef x, const double *c, int n) {
  // Horner: ((c0*x + c1)*x + c2)... in plain mul/add (the backend forms FMAs)
  LLVMValueRef y = LLVMConstReal(e->f32, c[0]);
  for (int i = 1; i < n; i++) y = LLVMBuildFAdd(e->b, LLVMBuildFMul(e->b, y, x, ""), LLVMConstReal(e->f32, c[i]), "");
  return y;
}

// exp(x) without a libm call, so loops over it vectorize: Cephes' range
// reduction x = n ln2 + r and degree-6 polynomial, 2^n applied in two halves
// so results down to the subnormal range and up to FLT_MAX are exact in
// exponent; within 2 ulp of exp over [-104, 88.7] (tests/test_codegen.c).
static LLVMValueRef nc_lk_fexp(nc_lk *e, LLVMValueRef x) {
  LLVMBuilderRef b = e->b;
  LLVMValueRef hi = LLVMConstReal(e->f32, 88.72283935), lo = LLVMConstReal(e->f32, -103.972084);
  LLVMValueRef xc = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, hi, ""), hi, x, "");
  xc = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, xc, lo, ""), lo, xc, "");
  LLVMValueRef t = LLVMBuildFAdd(b, LLVMBuildFMul(b, xc, LLVMConstReal(e->f32, 1.44269504088896341), ""), LLVMConstReal(e->f32, 0.5), "");
  LLVMValueRef fx = nc_lk_intrinsic(e, "llvm.floor", e->f32, &t, 1);
  LLVMValueRef r = LLVMBuildFSub(b, xc, LLVMBuildFMul(b, fx, LLVMConstReal(e->f32, 0.693359375), ""), "");
  r = LLVMBuildFSub(b, r, LLVMBuildFMul(b, fx, LLVMConstReal(e->f32, -2.12194440e-4), ""), "");
  static const double c[6] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3, 4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1};
  LLVMValueRef y = nc_lk_fma_chain(e, r, c, 6);
  y = LLVMBuildFAdd(b, LLVMBuildFAdd(b, LLVMBuildFMul(b, y, LLVMBuildFMul(b, r, r, ""), ""), r, ""), LLVMConstReal(e->f32, 1.0), "");
  LLVMValueRef n = LLVMBuildFPToSI(b, fx, e->i32, "");
  LLVMValueRef n1 = LLVMBuildAShr(b, n, LLVMConstInt(e->i32, 1, 0), "");
  LLVMValueRef n2 = LLVMBuildSub(b, n, n1, "");
  LLVMValueRef bias = LLVMConstInt(e->i32, 127, 0), sh = LLVMConstInt(e->i32, 23, 0);
  LLVMValueRef s1 = LLVMBuildBitCast(b, LLVMBuildShl(b, LLVMBuildAdd(b, n1, bias, ""), sh, ""), e->f32, "");
  LLVMValueRef s2 = LLVMBuildBitCast(b, LLVMBuildShl(b, LLVMBuildAdd(b, n2, bias, ""), sh, ""), e->f32, "");
  y = LLVMBuildFMul(b, LLVMBuildFMul(b, y, s1, ""), s2, "");
  y = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, hi, ""), LLVMConstReal(e->f32, 1.0 / 0.0), y, "");
  y = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, x, lo, ""), LLVMConstReal(e->f32, 0.0), y, "");
  return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealUNO, x, x, ""), x, y, "");
}

// tanh(x) as a rational function on [-7.9053, 7.9053] (beyond it tanh rounds
// to +-1 in f32), x itself for |x| < 4e-4: within 7 ulp, vectorizable.
static LLVMValueRef nc_lk_ftanh(nc_lk *e, LLVMValueRef x) {
  LLVMBuilderRef b = e->b;
  LLVMValueRef lim = LLVMConstReal(e->f32, 7.90531110763549805), nlim = LLVMConstReal(e->f32, -7.90531110763549805);
  LLVMValueRef c = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, lim, ""), lim, x, "");
  c = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, c, nlim, ""), nlim, c, "");
  LLVMValueRef x2 = LLVMBuildFMul(b, c, c, "");
  static const double pc[7] = {-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
                               1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03};
  static const double qc[4] = {1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03};
  LLVMValueRef p = LLVMBuildFMul(b, nc_lk_fma_chain(e, x2, pc, 7), c, "");
  LLVMValueRef q = nc_lk_fma_chain(e, x2, qc, 4);
  LLVMValueRef y = LLVMBuildFDiv(b, p, q, "");
  LLVMValueRef ax = nc_lk_intrinsic(e, "llvm.fabs", e->f32, &x, 1);
  y = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, ax, LLVMConstReal(e->f32, 0.0004), ""), x, y, "");
  return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealUNO, x, x, ""), x, y, "");
}

static LLVMValueRef nc_lk_fconst(nc_lk *e, double v) { return LLVMConstReal(e->f32, v); }

static LLVMValueRef nc_lk_unary(nc_lk *e, const nc_kexpr *ex, LLVMValueRef a) {
  nc_dtype t = ex->dtype;
  LLVMBuilderRef b = e->b;
  if (nc_dtype_is_float(t)) {
    LLVMValueRef v = NULL;
    switch (ex->op) {
      case NC_KOP_NEG: v = LLVMBuildFNeg(b, a, ""); break;
      case NC_KOP_ABS: v = nc_lk_intrinsic(e, "llvm.fabs", e->f32, &a, 1); break;
      case NC_KOP_RELU: {  // NaN stays NaN (as the interpreter): x > 0 ? x : (x != x ? x : 0)
        LLVMValueRef gt = LLVMBuildFCmp(b, LLVMRealUGT, a, nc_lk_fconst(e, 0), "");
        v = LLVMBuildSelect(b, gt, a, nc_lk_fconst(e, 0), "");
        break;
      }
      case NC_KOP_SQUARE: v = LLVMBuildFMul(b, a, a, ""); break;
      case NC_KOP_TANH: v = nc_lk_ftanh(e, a); break;
      case NC_KOP_EXP: v = nc_lk_fexp(e, a); break;
      case NC_KOP_LOG: v = nc_lk_intrinsic(e, "llvm.log", e->f32, &a, 1); break;
      case NC_KOP_SQRT: v = nc_lk_intrinsic(e, "llvm.sqrt", e->f32, &a, 1); break;
      case NC_KOP_RSQRT: v = LLVMBuildFDiv(b, nc_lk_fconst(e, 1), nc_lk_intrinsic(e, "llvm.sqrt", e->f32, &a, 1), ""); break;
      case NC_KOP_SIGMOID: {
        LLVMValueRef ex2 = nc_lk_fexp(e, LLVMBuildFNeg(b, a, ""));
        v = LLVMBuildFDiv(b, nc_lk_fconst(e, 1), LLVMBuildFAdd(b, nc_lk_fconst(e, 1), ex2, ""), "");
        break;
      }
      case NC_KOP_SIN: v = nc_lk_intrinsic(e, "llvm.sin", e->f32, &a, 1); break;
      case NC_KOP_COS: v = nc_lk_intrinsic(e, "llvm.cos", e->f32, &a, 1); break;
      case NC_KOP_POWC: {
        LLVMValueRef args[2] = {a, nc_lk_fconst(e, ex->fval)};
        v = nc_lk_intrinsic(e, "llvm.pow", e->f32, args, 2);
        break;
      }
      default: e->st = nc_errorf(NC_E_UNSUPPORTED, "llvm: unary %s on floats", nc_kop_name(ex->op)); return a;
    }
    return nc_lk_round(e, v, t);
  }
  LLVMTypeRef ty = nc_lk_reg(e, t);
  LLVMValueRef zero = LLVMConstInt(ty, 0, 0);
  switch (ex->op) {
    case NC_KOP_NEG: return LLVMBuildSub(b, zero, a, "");
    case NC_KOP_ABS: return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, a, zero, ""), LLVMBuildSub(b, zero, a, ""), a, "");
    case NC_KOP_RELU: return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, a, zero, ""), a, zero, "");
    case NC_KOP_SQUARE: return LLVMBuildMul(b, a, a, "");
    case NC_KOP_NOT: return LLVMBuildXor(b, a, LLVMConstInt(ty, 1, 0), "");
    default: e->st = nc_errorf(NC_E_UNSUPPORTED, "llvm: unary %s on integers", nc_kop_name(ex->op)); return a;
  }
}

static LLVMValueRef nc_lk_binary(nc_lk *e, const nc_kexpr *ex, LLVMValueRef a, LLVMValueRef y) {
  nc_dtype ot = e->k->x[ex->a].dtype;
  LLVMBuilderRef b = e->b;
  bool u8 = ot == NC_U8 || ot == NC_BOOL;
  if (nc_dtype_is_float(ot)) {
    LLVMValueRef v;
    LLVMValueRef ab[2] = {a, y};
    switch (ex->op) {
      case NC_KOP_ADD: v = LLVMBuildFAdd(b, a, y, ""); break;
      case NC_KOP_SUB: v = LLVMBuildFSub(b, a, y, ""); break;
      case NC_KOP_MUL: v = LLVMBuildFMul(b, a, y, ""); break;
      case NC_KOP_DIV: v = LLVMBuildFDiv(b, a, y, ""); break;
      case NC_KOP_MAX: v = nc_lk_intrinsic(e, "llvm.maximum", e->f32, ab, 2); break;
      case NC_KOP_MIN: v = nc_lk_intrinsic(e, "llvm.minimum", e->f32, ab, 2); break;
      case NC_KOP_EQ: return LLVMBuildFCmp(b, LLVMRealOEQ, a, y, "");
      case NC_KOP_NE: return LLVMBuildFCmp(b, LLVMRealUNE, a, y, "");
      case NC_KOP_LT: return LLVMBuildFCmp(b, LLVMRealOLT, a, y, "");
      case NC_KOP_LE: return LLVMBuildFCmp(b, LLVMRealOLE, a, y, "");
      case NC_KOP_GT: return LLVMBuildFCmp(b, LLVMRealOGT, a, y, "");
      case NC_KOP_GE: return LLVMBuildFCmp(b, LLVMRealOGE, a, y, "");
      default: e->st = nc_errorf(NC_E_UNSUPPORTED, "llvm: %s on floats", nc_kop_name(ex->op)); return a;
    }
    return nc_lk_round(e, v, ex->dtype);
  }
  switch (ex->op) {
    case NC_KOP_ADD: return LLVMBuildAdd(b, a, y, "");
    case NC_KOP_SUB: return LLVMBuildSub(b, a, y, "");
    case NC_KOP_MUL: return LLVMBuildMul(b, a, y, "");
    case NC_KOP_DIV:
    case NC_KOP_IDIV:
    case NC_KOP_IMOD: {
      // division by zero gives 0 (as the evaluator); INT_MIN / -1 wraps
      LLVMTypeRef ty = LLVMTypeOf(a);
      LLVMValueRef zero = LLVMConstInt(ty, 0, 0), one = LLVMConstInt(ty, 1, 0);
      LLVMValueRef isz = LLVMBuildICmp(b, LLVMIntEQ, y, zero, "");
      LLVMValueRef safe = LLVMBuildSelect(b, isz, one, y, "");
      if (!u8) {  // avoid the INT_MIN / -1 trap: divide by 1 and negate instead
        LLVMValueRef m1 = LLVMConstAllOnes(ty);
        LLVMValueRef isneg1 = LLVMBuildICmp(b, LLVMIntEQ, safe, m1, "");
        safe = LLVMBuildSelect(b, isneg1, one, safe, "");
        LLVMValueRef q = ex->op == NC_KOP_IMOD ? LLVMBuildSRem(b, a, safe, "") : LLVMBuildSDiv(b, a, safe, "");
        LLVMValueRef negq = ex->op == NC_KOP_IMOD ? zero : LLVMBuildSub(b, zero, q, "");
        q = LLVMBuildSelect(b, isneg1, negq, q, "");
        return LLVMBuildSelect(b, isz, zero, q, "");
      }
      LLVMValueRef q = ex->op == NC_KOP_IMOD ? LLVMBuildURem(b, a, safe, "") : LLVMBuildUDiv(b, a, safe, "");
      return LLVMBuildSelect(b, isz, zero, q, "");
    }
    case NC_KOP_MAX: return LLVMBuildSelect(b, LLVMBuildICmp(b, u8 ? LLVMIntUGT : LLVMIntSGT, a, y, ""), a, y, "");
    case NC_KOP_MIN: return LLVMBuildSelect(b, LLVMBuildICmp(b, u8 ? LLVMIntULT : LLVMIntSLT, a, y, ""), a, y, "");
    case NC_KOP_AND: return LLVMBuildAnd(b, a, y, "");
    case NC_KOP_OR: return LLVMBuildOr(b, a, y, "");
    case NC_KOP_EQ: return LLVMBuildICmp(b, LLVMIntEQ, a, y, "");
    case NC_KOP_NE: return LLVMBuildICmp(b, LLVMIntNE, a, y, "");
    case NC_KOP_LT: return LLVMBuildICmp(b, u8 ? LLVMIntULT : LLVMIntSLT, a, y, "");
    case NC_KOP_LE: return LLVMBuildICmp(b, u8 ? LLVMIntULE : LLVMIntSLE, a, y, "");
    case NC_KOP_GT: return LLVMBuildICmp(b, u8 ? LLVMIntUGT : LLVMIntSGT, a, y, "");
    case NC_KOP_GE: return LLVMBuildICmp(b, u8 ? LLVMIntUGE : LLVMIntSGE, a, y, "");
    default: e->st = nc_errorf(NC_E_UNSUPPORTED, "llvm: %s on integers", nc_kop_name(ex->op)); return a;
  }
}

static LLVMValueRef nc_lk_cast(nc_lk *e, LLVMValueRef a, nc_dtype from, nc_dtype to) {
  LLVMBuilderRef b = e->b;
  bool ff = nc_dtype_is_float(from), ft = nc_dtype_is_float(to);
  if (ff && ft) return nc_lk_round(e, a, to);
  if (to == NC_BOOL) return ff ? LLVMBuildFCmp(b, LLVMRealUNE, a, nc_lk_fconst(e, 0), "")
                               : LLVMBuildICmp(b, LLVMIntNE, a, LLVMConstInt(LLVMTypeOf(a), 0, 0), "");
  if (ft) {
    LLVMValueRef v = from == NC_BOOL || from == NC_U8 ? LLVMBuildUIToFP(b, a, e->f32, "") : LLVMBuildSIToFP(b, a, e->f32, "");
    return nc_lk_round(e, v, to);
  }
  LLVMTypeRef ty = nc_lk_reg(e, to);
  if (ff) {  // saturating, NaN -> 0 (as the evaluator)
    const char *name = to == NC_U8 ? "llvm.fptoui.sat" : "llvm.fptosi.sat";
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMTypeRef tys[2] = {ty, e->f32};
    LLVMValueRef f = LLVMGetIntrinsicDeclaration(e->m, id, tys, 2);
    return LLVMBuildCall2(b, LLVMIntrinsicGetType(e->c, id, tys, 2), f, &a, 1, "");
  }
  unsigned wf = LLVMGetIntTypeWidth(LLVMTypeOf(a)), wt = LLVMGetIntTypeWidth(ty);
  if (wf == wt) return a;
  if (wf > wt) return LLVMBuildTrunc(b, a, ty, "");
  return from == NC_BOOL || from == NC_U8 ? LLVMBuildZExt(b, a, ty, "") : LLVMBuildSExt(b, a, ty, "");
}

static LLVMValueRef nc_lk_gep(nc_lk *e, int buf, LLVMValueRef idx) {
  LLVMTypeRef mt = nc_lk_mem(e, e->k->bufs[buf].dtype);
  return LLVMBuildInBoundsGEP2(e->b, mt, e->bufs[buf], &idx, 1, "");
}

static LLVMValueRef nc_lk_load(nc_lk *e, int buf, LLVMValueRef idx) {
  nc_dtype t = e->k->bufs[buf].dtype;
  if (t == NC_BF16 && !e->bf16hw) {
    // its 16 bits as the top half of an fp32, by integer ops: an fpext from
    // bfloat lets InstCombine narrow max/select chains into bfloat ops whose
    // legalization calls __truncsfbf2, which the JIT cannot resolve
    LLVMValueRef h = LLVMBuildLoad2(e->b, e->i16, nc_lk_gep(e, buf, idx), "");
    LLVMValueRef w = LLVMBuildShl(e->b, LLVMBuildZExt(e->b, h, e->i32, ""), LLVMConstInt(e->i32, 16, 0), "");
    return LLVMBuildBitCast(e->b, w, e->f32, "");
  }
  LLVMValueRef v = LLVMBuildLoad2(e->b, nc_lk_mem(e, t), nc_lk_gep(e, buf, idx), "");
  if (t == NC_BF16 || t == NC_F16) return LLVMBuildFPExt(e->b, v, e->f32, "");
  if (t == NC_BOOL) return LLVMBuildICmp(e->b, LLVMIntNE, v, LLVMConstInt(e->i8, 0, 0), "");
  return v;
}

static void nc_lk_store(nc_lk *e, int buf, LLVMValueRef idx, LLVMValueRef v) {
  nc_dtype t = e->k->bufs[buf].dtype;
  if (t == NC_BF16 && !e->bf16hw) v = nc_lk_bf16_bits(e, v);  // stored as its 16 bits
  else if (t == NC_BF16 || t == NC_F16) v = LLVMBuildFPTrunc(e->b, v, nc_lk_mem(e, t), "");
  if (t == NC_BOOL) v = LLVMBuildZExt(e->b, v, e->i8, "");
  LLVMBuildStore(e->b, v, nc_lk_gep(e, buf, idx));
}

static LLVMValueRef nc_lk_x(nc_lk *e, nc_kx x) {
  if (e->memo[x] && e->memo_level[x] <= e->level) return e->memo[x];
  const nc_kexpr *ex = &e->k->x[x];
  LLVMValueRef v = NULL;
  switch (ex->kind) {
    case NC_KX_CONST:
      if (nc_dtype_is_float(ex->dtype)) {
        // constants are rounded to their dtype like any value
        double c = ex->dtype == NC_F32 ? (double)(float)ex->fval : ex->fval;
        if (ex->dtype == NC_BF16) c = nc_bf16_to_f32(nc_f32_to_bf16((float)c));
        if (ex->dtype == NC_F16) c = nc_f16_to_f32(nc_f32_to_f16((float)c));
        v = nc_lk_fconst(e, c);
      } else {
        v = LLVMConstInt(nc_lk_reg(e, ex->dtype), (unsigned long long)ex->ival, ex->dtype != NC_U8 && ex->dtype != NC_BOOL);
      }
      break;
    case NC_KX_ARG: v = e->args[ex->ival]; break;
    case NC_KX_VAR: v = e->vars[ex->ival]; break;
    case NC_KX_ACC: v = LLVMBuildLoad2(e->b, nc_lk_reg(e, ex->dtype), e->accs[ex->ival], ""); break;
    case NC_KX_LOAD: v = nc_lk_load(e, (int)ex->ival, nc_lk_x(e, ex->a)); break;
    case NC_KX_UNARY: v = nc_lk_unary(e, ex, nc_lk_x(e, ex->a)); break;
    case NC_KX_BINARY: {
      LLVMValueRef a = nc_lk_x(e, ex->a), y = nc_lk_x(e, ex->b);
      v = nc_lk_binary(e, ex, a, y);
      break;
    }
    case NC_KX_SELECT: {
      LLVMValueRef c = nc_lk_x(e, ex->a), a = nc_lk_x(e, ex->b), y = nc_lk_x(e, ex->c);
      v = LLVMBuildSelect(e->b, c, a, y, "");
      break;
    }
    case NC_KX_CAST: v = nc_lk_cast(e, nc_lk_x(e, ex->a), e->k->x[ex->a].dtype, ex->dtype); break;
  }
  // accumulator reads change inside loops: never memoize them (or what uses them)
  bool pure = ex->kind != NC_KX_ACC;
  if (pure && ex->a >= 0 && ex->kind != NC_KX_CONST && ex->kind != NC_KX_ARG && ex->kind != NC_KX_VAR)
    pure = e->memo[ex->a] != NULL && (ex->b < 0 || e->memo[ex->b]) && (ex->c < 0 || e->memo[ex->c]);
  if (pure && ex->kind == NC_KX_LOAD) pure = false;  // a store may change it later in the same block
  if (pure) {
    e->memo[x] = v;
    e->memo_level[x] = e->level;
  }
  return v;
}

// Forgets memoized values emitted inside loops deeper than the current level.
static void nc_lk_forget(nc_lk *e) {
  for (int i = 0; i < e->k->nx; i++)
    if (e->memo[i] && e->memo_level[i] > e->level) e->memo[i] = NULL;
}

static LLVMMetadataRef nc_lk_md_str(nc_lk *e, const char *s) { return LLVMMDStringInContext2(e->c, s, strlen(s)); }

void nc_llvm_loop_id_set(LLVMContextRef c, LLVMValueRef br, LLVMMetadataRef *props, size_t n) {
  LLVMMetadataRef ops[8];
  if (n > 7) n = 7;
  LLVMMetadataRef self = LLVMTemporaryMDNode(c, NULL, 0);
  ops[0] = self;
  for (size_t i = 0; i < n; i++) ops[i + 1] = props[i];
  LLVMMetadataRef id = LLVMMDNodeInContext2(c, ops, n + 1);
  LLVMMetadataReplaceAllUsesWith(self, id);  // also frees the temporary
  LLVMSetMetadata(br, LLVMGetMDKindIDInContext(c, "llvm.loop", 9), LLVMMetadataAsValue(c, id));
}

// Loop metadata: the unroll count the schedule asks for (a loop id, as the
// GEMM generators' cold loops carry: nc_llvm_loop_id_set). The schedule's
// vectorize mark (NC_KSCHED_VECTORIZE) is not passed on as
// llvm.loop.vectorize.enable: until 2026-11-27 the ids were malformed, so O3's
// cost model decided every loop, and made valid the forced hints were no faster
// on the Zen 3 VM (4-5 % more CPU per d4 step in most A/B pairs;
// docs/performance.md) and made LLVM warn about the loops it could not vectorize.
static void nc_lk_loop_md(nc_lk *e, LLVMValueRef br, const nc_kstmt *t) {
  if (!(t->sched & NC_KSCHED_UNROLL)) return;
  LLVMMetadataRef un[2] = {nc_lk_md_str(e, "llvm.loop.unroll.count"),
                           LLVMValueAsMetadata(LLVMConstInt(e->i32, (unsigned long long)t->unroll, 0))};
  LLVMMetadataRef prop = LLVMMDNodeInContext2(e->c, un, 2);
  nc_llvm_loop_id_set(e->c, br, &prop, 1);
}

static void nc_lk_s(nc_lk *e, nc_ks s);

static void nc_lk_for(nc_lk *e, const nc_kstmt *t) {
  LLVMBuilderRef b = e->b;
  LLVMValueRef begin = nc_lk_x(e, t->begin), end = nc_lk_x(e, t->end);
  if (t->sched & NC_KSCHED_PARALLEL) {  // this thread's contiguous chunk of [begin, end)
    LLVMValueRef n = LLVMBuildSub(b, end, begin, "");
    LLVMValueRef chunk = LLVMBuildSDiv(b, LLVMBuildAdd(b, n, LLVMBuildSub(b, e->nthreads, LLVMConstInt(e->i64, 1, 0), ""), ""), e->nthreads, "");
    LLVMValueRef lo = LLVMBuildAdd(b, begin, LLVMBuildMul(b, chunk, e->thread, ""), "");
    LLVMValueRef hi = LLVMBuildAdd(b, lo, chunk, "");
    hi = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, hi, end, ""), hi, end, "");
    begin = lo;
    end = hi;
  }
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(e->c, e->fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(e->c, e->fn, "body");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(e->c, e->fn, "exit");
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, begin, end, ""), head, exit);
  LLVMPositionBuilderAtEnd(b, head);
  LLVMValueRef iv = LLVMBuildPhi(b, e->i64, "i");
  LLVMBuildBr(b, body);
  LLVMPositionBuilderAtEnd(b, body);
  e->vars[t->var] = iv;
  e->level++;
  nc_lk_s(e, t->body);
  LLVMValueRef next = LLVMBuildAdd(b, iv, LLVMConstInt(e->i64, 1, 0), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
  LLVMValueRef br = LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, end, ""), head, exit);
  nc_lk_loop_md(e, br, t);
  LLVMValueRef inc_v[2] = {begin, next};
  LLVMBasicBlockRef inc_b[2] = {pre, latch};
  LLVMAddIncoming(iv, inc_v, inc_b, 2);
  e->level--;
  nc_lk_forget(e);
  LLVMPositionBuilderAtEnd(b, exit);
}

static void nc_lk_s(nc_lk *e, nc_ks s) {
  for (; s != NC_KS_NONE && !e->st; s = e->k->s[s].next) {
    const nc_kstmt *t = &e->k->s[s];
    switch (t->kind) {
      case NC_KS_FOR: nc_lk_for(e, t); break;
      case NC_KS_STORE: {
        LLVMValueRef idx = nc_lk_x(e, t->index), v = nc_lk_x(e, t->value);
        nc_lk_store(e, t->buf, idx, v);
        break;
      }
      case NC_KS_ACC_INIT: LLVMBuildStore(e->b, nc_lk_x(e, t->value), e->accs[t->acc]); break;
      case NC_KS_ACC_UPDATE: {
        nc_dtype dt = e->k->accs[t->acc];
        LLVMValueRef cur = LLVMBuildLoad2(e->b, nc_lk_reg(e, dt), e->accs[t->acc], "");
        LLVMValueRef v = nc_lk_x(e, t->value), r;
        if (nc_dtype_is_float(dt)) {
          if (t->op == NC_KOP_MAX) {
            LLVMValueRef ab[2] = {cur, v};
            r = nc_lk_intrinsic(e, "llvm.maximum", e->f32, ab, 2);
          } else {
            r = LLVMBuildFAdd(e->b, cur, v, "");
            // reassociation lets the vectorizer split the sum into lanes
            LLVMSetFastMathFlags(r, LLVMFastMathAllowReassoc);
          }
          r = nc_lk_round(e, r, dt);
        } else {
          r = t->op == NC_KOP_MAX ? LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSGT, cur, v, ""), cur, v, "")
                                  : LLVMBuildAdd(e->b, cur, v, "");
        }
        LLVMBuildStore(e->b, r, e->accs[t->acc]);
        break;
      }
      case NC_KS_CALL:
        e->st = nc_errorf(NC_E_UNSUPPORTED, "llvm: template %s inside a loop nest", nc_ktemplate_name(t->tmpl));
        break;
    }
  }
}

nc_status nc_llvm_emit_kernel(nc_jit *jit, LLVMModuleRef m, const nc_kernel *k, const char *fname) {
  NC_TRY(nc_kernel_verify(k));
  if (k->nvars > 64) return nc_errorf(NC_E_UNSUPPORTED, "kernel %s: more than 64 loop variables", k->name);
  if (nc_kernel_is_template(k)) return nc_errorf(NC_E_INVALID, "kernel %s is a template call, not a loop nest", k->name);
  nc_lk e;
  memset(&e, 0, sizeof e);
  e.c = nc_jit_context(jit);
  e.bf16hw = nc_jit_cpu(jit) && nc_jit_cpu(jit)->avx512bf16;
  e.m = m;
  e.k = k;
  e.i1 = LLVMInt1TypeInContext(e.c);
  e.i8 = LLVMInt8TypeInContext(e.c);
  e.i16 = LLVMInt16TypeInContext(e.c);
  e.i32 = LLVMInt32TypeInContext(e.c);
  e.i64 = LLVMInt64TypeInContext(e.c);
  e.f32 = LLVMFloatTypeInContext(e.c);
  e.ptr = LLVMPointerTypeInContext(e.c, 0);
  e.vd = LLVMVoidTypeInContext(e.c);
  e.memo = calloc((size_t)k->nx + 1, sizeof *e.memo);
  e.memo_level = calloc((size_t)k->nx + 1, sizeof *e.memo_level);
  if (!e.memo || !e.memo_level) {
    free(e.memo);
    free(e.memo_level);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  // inner function with one noalias pointer per buffer, wrapped by the entry
  LLVMTypeRef ptys[NC_KERNEL_MAX_BUFS + 3];
  int np = 0;
  for (int i = 0; i < k->nbufs; i++) ptys[np++] = e.ptr;
  ptys[np++] = e.ptr;  // args
  ptys[np++] = e.i64;  // thread
  ptys[np++] = e.i64;  // nthreads
  char inner[96];
  snprintf(inner, sizeof inner, "%s.body", fname);
  LLVMTypeRef ity = LLVMFunctionType(e.vd, ptys, (unsigned)np, 0);
  e.fn = LLVMAddFunction(m, inner, ity);
  LLVMSetLinkage(e.fn, LLVMInternalLinkage);
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (int i = 0; i < k->nbufs; i++) LLVMAddAttributeAtIndex(e.fn, (unsigned)i + 1, LLVMCreateEnumAttribute(e.c, noalias, 0));
  e.b = LLVMCreateBuilderInContext(e.c);
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(e.c, e.fn, "entry");
  LLVMPositionBuilderAtEnd(e.b, entry);
  for (int i = 0; i < k->nbufs; i++) e.bufs[i] = LLVMGetParam(e.fn, (unsigned)i);
  LLVMValueRef argp = LLVMGetParam(e.fn, (unsigned)k->nbufs);
  for (int i = 0; i < k->nargs; i++) {
    LLVMValueRef idx = LLVMConstInt(e.i64, (unsigned long long)i, 0);
    e.args[i] = LLVMBuildLoad2(e.b, e.i64, LLVMBuildInBoundsGEP2(e.b, e.i64, argp, &idx, 1, ""), k->args[i]);
  }
  e.thread = LLVMGetParam(e.fn, (unsigned)k->nbufs + 1);
  e.nthreads = LLVMGetParam(e.fn, (unsigned)k->nbufs + 2);
  for (int i = 0; i < k->naccs; i++) e.accs[i] = LLVMBuildAlloca(e.b, nc_lk_reg(&e, k->accs[i]), "acc");
  nc_lk_s(&e, k->body);
  LLVMBuildRetVoid(e.b);
  // the entry: void fname(void *const *bufs, const int64_t *args, int64_t thread, int64_t nthreads)
  LLVMTypeRef ety_p[4] = {e.ptr, e.ptr, e.i64, e.i64};
  LLVMValueRef ef = LLVMAddFunction(m, fname, LLVMFunctionType(e.vd, ety_p, 4, 0));
  LLVMBasicBlockRef eb = LLVMAppendBasicBlockInContext(e.c, ef, "entry");
  LLVMPositionBuilderAtEnd(e.b, eb);
  LLVMValueRef cargs[NC_KERNEL_MAX_BUFS + 3];
  for (int i = 0; i < k->nbufs; i++) {
    LLVMValueRef idx = LLVMConstInt(e.i64, (unsigned long long)i, 0);
    cargs[i] = LLVMBuildLoad2(e.b, e.ptr, LLVMBuildInBoundsGEP2(e.b, e.ptr, LLVMGetParam(ef, 0), &idx, 1, ""), "");
  }
  cargs[k->nbufs] = LLVMGetParam(ef, 1);
  cargs[k->nbufs + 1] = LLVMGetParam(ef, 2);
  cargs[k->nbufs + 2] = LLVMGetParam(ef, 3);
  LLVMBuildCall2(e.b, ity, e.fn, cargs, (unsigned)np, "");
  LLVMBuildRetVoid(e.b);
  LLVMDisposeBuilder(e.b);
  free(e.memo);
  free(e.memo_level);
  return e.st;
}
#endif
