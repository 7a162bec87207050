// Internal to codegen/gemm.c and codegen/gemm_bf16.c: the IR-building context
// and small helpers both GEMM generators use (constants, entry-block
// variables, counted loops, if/else, index arithmetic, the argument block,
// the per-thread work split). Not a public header.
#ifndef NC_CODEGEN_GEMM_IR_H
#define NC_CODEGEN_GEMM_IR_H

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>  // LLVMTemporaryMDNode, LLVMMetadataReplaceAllUsesWith
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codegen/gemm.h"

typedef struct {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMValueRef fn;  // function being built
  LLVMBasicBlockRef entry;
  LLVMTypeRef i1, i16, i32, i64, f32, ptr, voidt;
  LLVMTypeRef vec;   // <vw x float>
  LLVMTypeRef ivec;  // bf16 only: <16 x i32>, 16 pair words
  LLVMTypeRef bvec;  // bf16 only: <32 x bfloat>, the same bits as dpbf16ps sees them
  LLVMTypeRef fma_ty, fmav_ty, dp_ty, pf_ty;
  LLVMValueRef fma, fmav, dp, prefetch;  // llvm.fma.f32, llvm.fma.vNf32, dpbf16ps, llvm.prefetch
  const nc_gemm_spec *s;
  const nc_gemm_knobs *k;
  // fp32 GEMM's skinny path, in the function being built: E - C and D - C in
  // elements (0 without an addend / D) and the relu2 switch (i1)
  LLVMValueRef epi_eoff, epi_doff, epi_relu2;
} nc_gemm_ir;

typedef struct {
  LLVMValueRef var, end, step;
  LLVMBasicBlockRef cond, body, exit;
} nc_loop;

// if (c) { then } else { els }: nc_if_begin positions at "then"; nc_if_else
// switches to "else"; nc_if_end joins.
typedef struct {
  LLVMBasicBlockRef then, els, join;
} nc_if;

static inline LLVMValueRef c64(nc_gemm_ir *g, int64_t v) { return LLVMConstInt(g->i64, (unsigned long long)v, 1); }
static inline LLVMValueRef c32(nc_gemm_ir *g, int v) { return LLVMConstInt(g->i32, (unsigned long long)v, 1); }
static inline LLVMValueRef cf(nc_gemm_ir *g, double v) { return LLVMConstReal(g->f32, v); }

// An alloca in the entry block (so mem2reg can promote it), initialised here.
static inline LLVMValueRef nc_var(nc_gemm_ir *g, LLVMTypeRef ty, const char *name, LLVMValueRef init) {
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(g->b);
  LLVMValueRef first = LLVMGetFirstInstruction(g->entry);
  if (first)
    LLVMPositionBuilderBefore(g->b, first);
  else
    LLVMPositionBuilderAtEnd(g->b, g->entry);
  LLVMValueRef v = LLVMBuildAlloca(g->b, ty, name);
  LLVMPositionBuilderAtEnd(g->b, cur);
  if (init) LLVMBuildStore(g->b, init, v);
  return v;
}

static inline LLVMBasicBlockRef nc_block(nc_gemm_ir *g, const char *name) {
  return LLVMAppendBasicBlockInContext(g->ctx, g->fn, name);
}

// for (i = start; i < end; i += step): returns i, valid inside the body.
static inline LLVMValueRef nc_loop_begin(nc_gemm_ir *g, nc_loop *L, const char *name, LLVMValueRef start,
                                         LLVMValueRef end, LLVMValueRef step) {
  L->var = nc_var(g, g->i64, name, start);
  L->end = end;
  L->step = step;
  L->cond = nc_block(g, name);
  L->body = nc_block(g, "body");
  L->exit = nc_block(g, "exit");
  LLVMBuildBr(g->b, L->cond);
  LLVMPositionBuilderAtEnd(g->b, L->cond);
  LLVMValueRef i = LLVMBuildLoad2(g->b, g->i64, L->var, name);
  LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, i, end, ""), L->body, L->exit);
  LLVMPositionBuilderAtEnd(g->b, L->body);
  return i;
}

static inline void nc_loop_end(nc_gemm_ir *g, nc_loop *L) {
  LLVMValueRef i = LLVMBuildLoad2(g->b, g->i64, L->var, "");
  LLVMBuildStore(g->b, LLVMBuildNSWAdd(g->b, i, L->step, ""), L->var);
  LLVMBuildBr(g->b, L->cond);
  LLVMPositionBuilderAtEnd(g->b, L->exit);
}

// nc_loop_end for a cold loop (edge tiles, tails, the mirror of a symmetric
// product): marked llvm.loop.vectorize.enable false + llvm.loop.unroll.disable,
// so O3 keeps it one scalar loop. Vectorized and unrolled, such loops were most
// of the code the backend (loop strength reduction above all) had to compile.
static inline void nc_loop_end_cold(nc_gemm_ir *g, nc_loop *L) {
  LLVMValueRef i = LLVMBuildLoad2(g->b, g->i64, L->var, "");
  LLVMBuildStore(g->b, LLVMBuildNSWAdd(g->b, i, L->step, ""), L->var);
  LLVMValueRef br = LLVMBuildBr(g->b, L->cond);
  LLVMPositionBuilderAtEnd(g->b, L->exit);
  // A loop id must be its own first operand (else LLVM ignores it): built
  // around a temporary node that is then replaced by the id itself.
  LLVMMetadataRef self = LLVMTemporaryMDNode(g->ctx, NULL, 0);
  LLVMMetadataRef vec[2] = {LLVMMDStringInContext2(g->ctx, "llvm.loop.vectorize.enable", 26),
                            LLVMValueAsMetadata(LLVMConstInt(g->i1, 0, 0))};
  LLVMMetadataRef unr = LLVMMDStringInContext2(g->ctx, "llvm.loop.unroll.disable", 24);
  LLVMMetadataRef ops[3] = {self, LLVMMDNodeInContext2(g->ctx, vec, 2), LLVMMDNodeInContext2(g->ctx, &unr, 1)};
  LLVMMetadataRef id = LLVMMDNodeInContext2(g->ctx, ops, 3);
  LLVMMetadataReplaceAllUsesWith(self, id);  // also frees the temporary
  LLVMSetMetadata(br, LLVMGetMDKindIDInContext(g->ctx, "llvm.loop", 9), LLVMMetadataAsValue(g->ctx, id));
}

static inline void nc_if_begin(nc_gemm_ir *g, nc_if *f, LLVMValueRef c) {
  f->then = nc_block(g, "then");
  f->els = nc_block(g, "else");
  f->join = nc_block(g, "join");
  LLVMBuildCondBr(g->b, c, f->then, f->els);
  LLVMPositionBuilderAtEnd(g->b, f->then);
}
static inline void nc_if_else(nc_gemm_ir *g, nc_if *f) {
  LLVMBuildBr(g->b, f->join);
  LLVMPositionBuilderAtEnd(g->b, f->els);
}
static inline void nc_if_end(nc_gemm_ir *g, nc_if *f) {
  LLVMBuildBr(g->b, f->join);
  LLVMPositionBuilderAtEnd(g->b, f->join);
}

static inline LLVMValueRef nc_min(nc_gemm_ir *g, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, a, b, ""), a, b, "");
}
static inline LLVMValueRef nc_mul(nc_gemm_ir *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWMul(g->b, a, b, ""); }
static inline LLVMValueRef nc_add(nc_gemm_ir *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(g->b, a, b, ""); }
static inline LLVMValueRef nc_sub(nc_gemm_ir *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWSub(g->b, a, b, ""); }

// &p[i] of a float (fp32 operands, C) or of a 32-bit word (bf16 pair panels):
// both 4 bytes, so one GEP type serves.
static inline LLVMValueRef nc_fptr(nc_gemm_ir *g, LLVMValueRef p, LLVMValueRef i) {
  return LLVMBuildInBoundsGEP2(g->b, g->f32, p, &i, 1, "");
}
static inline LLVMValueRef nc_fmav(nc_gemm_ir *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[3] = {a, b, c};
  return LLVMBuildCall2(g->b, g->fmav_ty, g->fmav, args, 3, "");
}
static inline LLVMValueRef nc_fmaf(nc_gemm_ir *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[3] = {a, b, c};
  return LLVMBuildCall2(g->b, g->fma_ty, g->fma, args, 3, "");
}

// A new function; internal helpers are noinline: a call per packed panel or
// per MR x NR tile costs nothing measurable, while register allocation of one
// huge inlined function dominated the cold compile time.
static inline LLVMValueRef nc_begin_fn(nc_gemm_ir *g, const char *name, LLVMTypeRef *params, unsigned n,
                                       bool internal) {
  LLVMTypeRef fty = LLVMFunctionType(g->voidt, params, n, 0);
  g->fn = LLVMAddFunction(g->mod, name, fty);
  if (internal) LLVMSetLinkage(g->fn, LLVMInternalLinkage);
  unsigned kind = LLVMGetEnumAttributeKindForName("nounwind", 8);
  LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->ctx, kind, 0));
  if (internal) {
    kind = LLVMGetEnumAttributeKindForName("noinline", 8);
    LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->ctx, kind, 0));
  }
  g->entry = nc_block(g, "entry");
  LLVMPositionBuilderAtEnd(g->b, g->entry);
  return g->fn;
}

// A field of the nc_gemm_args block at byte offset off.
static inline LLVMValueRef nc_arg(nc_gemm_ir *g, LLVMValueRef args, size_t off, LLVMTypeRef ty) {
  LLVMValueRef i = c64(g, (int64_t)off);
  LLVMValueRef p = LLVMBuildInBoundsGEP2(g->b, LLVMInt8TypeInContext(g->ctx), args, &i, 1, "");
  return LLVMBuildLoad2(g->b, ty, p, "");
}

static inline void nc_call(nc_gemm_ir *g, LLVMValueRef fn, LLVMValueRef *args, unsigned n) {
  LLVMBuildCall2(g->b, LLVMGlobalGetValueType(fn), fn, args, n, "");
}

// Thread t of T gets [t*n/T, (t+1)*n/T) of n units of size `unit`, clipped to total.
static inline void nc_split(nc_gemm_ir *g, LLVMValueRef total, int unit, LLVMValueRef t, LLVMValueRef T,
                            LLVMValueRef *lo, LLVMValueRef *hi) {
  LLVMValueRef units = LLVMBuildSDiv(g->b, nc_add(g, total, c64(g, unit - 1)), c64(g, unit), "");
  LLVMValueRef u0 = LLVMBuildSDiv(g->b, nc_mul(g, t, units), T, "");
  LLVMValueRef u1 = LLVMBuildSDiv(g->b, nc_mul(g, nc_add(g, t, c64(g, 1)), units), T, "");
  *lo = nc_min(g, nc_mul(g, u0, c64(g, unit)), total);
  *hi = nc_min(g, nc_mul(g, u1, c64(g, unit)), total);
}
#endif

#endif
