// Internal to codegen/gemm.c and codegen/gemm_bf16.c: the IR-building context
// and small helpers both GEMM generators use (constants, entry-block
// variables, counted loops, if/else, index arithmetic, the argument block,
// the per-thread work split), and the skeleton they share (codegen/gemm_drv.c:
// the micro-kernel's accumulators, k loops and store of C, the driver's
// argument loads, workspace and static split, the loops over the tiles of a
// packed block, the in-register transpose). Not a public header.
#ifndef NC_CODEGEN_GEMM_IR_H
#define NC_CODEGEN_GEMM_IR_H

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codegen/gemm.h"
#include "codegen/llvm_kir.h"  // nc_llvm_loop_id_set

#define NC_GEMM_MAX_ACC 32  // accumulators the micro-kernel may keep (zmm count)

typedef struct nc_gemm_ukernel_ops nc_gemm_ukernel_ops;

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
  const nc_gemm_ukernel_ops *ops;  // what the generator's micro-kernel and C access are
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
  LLVMMetadataRef vec[2] = {LLVMMDStringInContext2(g->ctx, "llvm.loop.vectorize.enable", 26),
                            LLVMValueAsMetadata(LLVMConstInt(g->i1, 0, 0))};
  LLVMMetadataRef unr = LLVMMDStringInContext2(g->ctx, "llvm.loop.unroll.disable", 24);
  LLVMMetadataRef props[2] = {LLVMMDNodeInContext2(g->ctx, vec, 2), LLVMMDNodeInContext2(g->ctx, &unr, 1)};
  nc_llvm_loop_id_set(g->ctx, br, props, 2);  // codegen/llvm_kir.h
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

// Loads / stores with alignment 4 (packed panels, C rows at any column).
static inline LLVMValueRef nc_load4(nc_gemm_ir *g, LLVMTypeRef ty, LLVMValueRef p) {
  LLVMValueRef v = LLVMBuildLoad2(g->b, ty, p, "");
  LLVMSetAlignment(v, 4);
  return v;
}
static inline void nc_store4(nc_gemm_ir *g, LLVMValueRef v, LLVMValueRef p) {
  LLVMSetAlignment(LLVMBuildStore(g->b, v, p), 4);
}
// x (a scalar) in every lane of vector type vty.
static inline LLVMValueRef nc_splat_to(nc_gemm_ir *g, LLVMTypeRef vty, LLVMValueRef x) {
  LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetPoison(vty), x, c32(g, 0), "");
  LLVMValueRef zero = LLVMConstNull(LLVMVectorType(g->i32, LLVMGetVectorSize(vty)));
  return LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(vty), zero, "");
}

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

// ---- the shared skeleton (codegen/gemm_drv.c) ---------------------------------
// Sets up g for spec in module m: types (vec = <vw x float>; the bf16 ones too),
// a builder, and the intrinsics llvm.fma (f32 and vec), dp_id's (0: none; the
// bf16 generator's vdpbf16ps), llvm.prefetch, declared in that order.
void nc_gemm_ir_init(nc_gemm_ir *g, LLVMModuleRef m, const nc_gemm_spec *spec, int vw, unsigned dp_id);

// What a micro-kernel computes with and how it reads and writes C. The
// micro-kernel (nc_gemm_ir_ukernel) is
//   ukernel(kd, Ap, Bp, C, ldc, mr, nr, alpha, beta [, epi, doff, loff]):
//   C[0:mr, 0:nr] = alpha * Ap(MR x kd) · Bp(kd x NR) + beta * C[. + loff]   (beta == 0: not read)
// over kd steps of the packed panels (fp32: k; bf16: k pairs): Ap is k-major
// (Ap[k*MR + i]) when ta, else row-major (Ap[i*kd + k]); Bp[k*NR + j]. MR * NR/VW
// vector accumulators (VW 16 for the bf16 generator); a full tile is stored with
// vector stores straight into C, an edge tile (mr < MR or nr < NR) spilled and
// stored element by element.
struct nc_gemm_ukernel_ops {
  const char *kname, *kname_rem;  // names of the main and remainder k loops
  bool cold;                      // the k remainder and edge-tile loops marked cold (nc_loop_end_cold)
  LLVMValueRef (*load_b)(nc_gemm_ir *g, LLVMValueRef p);  // one vector of the packed B panel
  LLVMValueRef (*load_a)(nc_gemm_ir *g, LLVMValueRef p);  // one element of the packed A panel, broadcast
  LLVMValueRef (*madd)(nc_gemm_ir *g, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b);  // acc + a·b
  LLVMValueRef (*cptr)(nc_gemm_ir *g, LLVMValueRef p, LLVMValueRef i);                    // &C[i]
  LLVMValueRef (*cload)(nc_gemm_ir *g, LLVMTypeRef ty, LLVMValueRef p);  // a float or <vw x float> of C
  void (*cstore)(nc_gemm_ir *g, LLVMValueRef x, LLVMValueRef p);
  // NULL: 9 parameters. Else 12: on the last K block of a relu2 GEMM (epi != 0)
  // this stores relu(*p)^2 at p + doff after each element of C, and the old C
  // is read at p + loff (the addend E - C on the first K block, else 0).
  void (*epi_store)(nc_gemm_ir *g, LLVMValueRef p, LLVMValueRef doff, bool vec);
};
// Emits the micro-kernel `name` (internal, noinline) with g->ops.
LLVMValueRef nc_gemm_ir_ukernel(nc_gemm_ir *g, const char *name);

// In-register transpose of vw vectors (rows) of vw 32-bit lanes: log2(vw)
// rounds of two-source shuffles that swap the off-diagonal d x d blocks of
// every 2d x 2d block (one vpermt2ps each on AVX-512).
void nc_gemm_ir_transpose(nc_gemm_ir *g, LLVMValueRef *r, int vw);

// A packing function name(P[0], ..., P[6]) (internal, noinline): two pointers
// (panel, operand) then five i64; P gets the parameters.
LLVMValueRef nc_gemm_ir_pack_begin(nc_gemm_ir *g, const char *name, LLVMValueRef P[7]);

// The driver: void spec->name(const nc_gemm_args *args, int32_t thread, int32_t nthreads)
// with the argument block's common fields loaded (in this order).
typedef struct {
  LLVMValueRef fn, args, t, T;  // t, T: thread and nthreads as i64
  LLVMValueRef A, B, C, M, N, K, lda, ldb, ldc, batch, sa, sb, sc, alpha, beta, work;
} nc_gemm_drv;
void nc_gemm_ir_driver_begin(nc_gemm_ir *g, nc_gemm_drv *d);
// This thread's workspace slice (ws_words 32-bit words a thread): the packed A
// block at its start, the packed B panel a_words (rounded up to 16) on.
void nc_gemm_ir_workspace(nc_gemm_ir *g, const nc_gemm_drv *d, int64_t ws_words, int64_t a_words, LLVMValueRef *Ap,
                          LLVMValueRef *Bp);
// The static split (gemm.h): whole batch items when batch >= nthreads, else
// M ranges (MR units) when M >= N, else N ranges (NR units). _begin computes
// every range and selects the batch range; between it and _end a generator may
// replace m0 / m1 (the symmetric product's split); _end selects the M and N
// ranges and returns kend: K, or 1 when K == 0 (one pass with kc = 0 still
// applies beta to C).
typedef struct {
  LLVMValueRef b0, b1, m0, m1, n0, n1, use_m, use_n;
} nc_gemm_split;
void nc_gemm_ir_split_begin(nc_gemm_ir *g, const nc_gemm_drv *d, nc_gemm_split *sp);
LLVMValueRef nc_gemm_ir_split_end(nc_gemm_ir *g, const nc_gemm_drv *d, nc_gemm_split *sp);

// The micro-kernel over the MR x NR tiles of one packed A block (mcur rows,
// ic..) against one packed B panel (ncur columns, jc..), kd steps deep, in
// the knobs' order: uk(kd, Ap + ir*kd, Bp + jr*kd, &C[ic+ir, jc+jr], ldc, mr,
// nr, alpha, beff [, extra[0..2]]). nsym (NULL: every tile): an i1, false where
// tiles strictly above the diagonal are skipped (the symmetric product).
typedef struct {
  LLVMValueRef Ap, Bp, Cb, ldc, ic, jc, kd, mcur, ncur, alpha, beff;
  LLVMValueRef extra[3];  // the fp32 micro-kernel's epi, doff, loff; NULL: 9 arguments
  LLVMValueRef nsym;
} nc_gemm_ir_tiles;
void nc_gemm_ir_tile_loops(nc_gemm_ir *g, LLVMValueRef uk, const nc_gemm_ir_tiles *t);

// nc_gemm_compile / nc_gemm_bf16_compile: a module named spec->name (or
// what), emit, JIT-compile, look up.
nc_status nc_gemm_ir_compile(nc_jit *jit, const nc_gemm_spec *spec, const char *what,
                             nc_status (*emit)(LLVMModuleRef m, const nc_host_cpu *cpu, const nc_gemm_spec *spec),
                             nc_gemm_fn *out);
#endif

#endif
