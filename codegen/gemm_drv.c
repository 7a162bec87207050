// The skeleton both GEMM generators share (codegen/gemm.c: fp32 FMA,
// codegen/gemm_bf16.c: bf16 pairs with vdpbf16ps): the micro-kernel's
// accumulators, k loops and store of C, the driver's argument loads, workspace
// slice and static split, the loops over the tiles of a packed block, the
// in-register transpose, set-up and compile. What differs comes in through
// nc_gemm_ukernel_ops (codegen/gemm_ir.h) or stays in the generator. IR is
// written the easy way, as there: counters and accumulators in entry-block
// allocas, promoted to SSA registers by the O3 pipeline.
#include "codegen/gemm.h"

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>

#include "codegen/gemm_ir.h"

void nc_gemm_ir_init(nc_gemm_ir *g, LLVMModuleRef m, const nc_gemm_spec *spec, int vw, unsigned dp_id) {
  *g = (nc_gemm_ir){0};
  g->mod = m;
  g->ctx = LLVMGetModuleContext(m);
  g->b = LLVMCreateBuilderInContext(g->ctx);
  g->s = spec;
  g->k = &spec->knobs;
  g->i1 = LLVMInt1TypeInContext(g->ctx);
  g->i16 = LLVMInt16TypeInContext(g->ctx);
  g->i32 = LLVMInt32TypeInContext(g->ctx);
  g->i64 = LLVMInt64TypeInContext(g->ctx);
  g->f32 = LLVMFloatTypeInContext(g->ctx);
  g->ptr = LLVMPointerTypeInContext(g->ctx, 0);
  g->voidt = LLVMVoidTypeInContext(g->ctx);
  g->vec = LLVMVectorType(g->f32, (unsigned)vw);
  g->ivec = LLVMVectorType(g->i32, 16);
  g->bvec = LLVMVectorType(LLVMBFloatTypeInContext(g->ctx), 32);
  unsigned fma_id = LLVMLookupIntrinsicID("llvm.fma", 8);
  unsigned pf_id = LLVMLookupIntrinsicID("llvm.prefetch", 13);
  g->fma = LLVMGetIntrinsicDeclaration(m, fma_id, &g->f32, 1);
  g->fma_ty = LLVMIntrinsicGetType(g->ctx, fma_id, &g->f32, 1);
  g->fmav = LLVMGetIntrinsicDeclaration(m, fma_id, &g->vec, 1);
  g->fmav_ty = LLVMIntrinsicGetType(g->ctx, fma_id, &g->vec, 1);
  if (dp_id) {
    g->dp = LLVMGetIntrinsicDeclaration(m, dp_id, NULL, 0);  // not overloaded
    g->dp_ty = LLVMIntrinsicGetType(g->ctx, dp_id, NULL, 0);
  }
  g->prefetch = LLVMGetIntrinsicDeclaration(m, pf_id, &g->ptr, 1);
  g->pf_ty = LLVMIntrinsicGetType(g->ctx, pf_id, &g->ptr, 1);
}

// ---- micro-kernel -------------------------------------------------------------
// The k index of step u of an unrolled iteration (u < 0: k itself). Built anew
// at every use, as the generators' step macros did.
static LLVMValueRef nc_ukstep_k(nc_gemm_ir *g, LLVMValueRef k, int u) { return u < 0 ? k : nc_add(g, k, c64(g, u)); }

// One k step: NV vector loads of B, MR broadcasts of A, MR*NV multiply-adds.
static void nc_ukstep(nc_gemm_ir *g, LLVMValueRef ap, LLVMValueRef bp, LLVMValueRef *arow, LLVMValueRef *acc,
                      LLVMValueRef k, int u) {
  const nc_gemm_knobs *kn = g->k;
  const nc_gemm_ukernel_ops *o = g->ops;
  const int MR = kn->mr, VW = (int)LLVMGetVectorSize(g->vec), NV = kn->nr / VW;
  LLVMValueRef bv[NC_GEMM_MAX_ACC];
  LLVMValueRef brow = nc_fptr(g, bp, nc_mul(g, nc_ukstep_k(g, k, u), c64(g, kn->nr)));
  if (kn->prefetch_b) {
    LLVMValueRef pa[4] = {nc_fptr(g, brow, c64(g, (int64_t)kn->prefetch_b * kn->nr)), c32(g, 0), c32(g, 3), c32(g, 1)};
    LLVMBuildCall2(g->b, g->pf_ty, g->prefetch, pa, 4, "");
  }
  for (int v = 0; v < NV; v++) bv[v] = o->load_b(g, nc_fptr(g, brow, c64(g, v * VW)));
  for (int i = 0; i < MR; i++) {
    LLVMValueRef ae = g->s->ta ? nc_fptr(g, ap, nc_add(g, nc_mul(g, nc_ukstep_k(g, k, u), c64(g, MR)), c64(g, i)))
                               : nc_fptr(g, arow[i], nc_ukstep_k(g, k, u));
    LLVMValueRef a = o->load_a(g, ae);
    for (int v = 0; v < NV; v++) {
      LLVMValueRef p = acc[i * NV + v];
      LLVMValueRef cur = LLVMBuildLoad2(g->b, g->vec, p, "");
      LLVMBuildStore(g->b, o->madd(g, cur, a, bv[v]), p);
    }
  }
}

static void nc_uk_loop_end(nc_gemm_ir *g, nc_loop *L) {
  if (g->ops->cold) nc_loop_end_cold(g, L);
  else nc_loop_end(g, L);
}

LLVMValueRef nc_gemm_ir_ukernel(nc_gemm_ir *g, const char *name) {
  const nc_gemm_knobs *k = g->k;
  const nc_gemm_ukernel_ops *o = g->ops;
  const int MR = k->mr, VW = (int)LLVMGetVectorSize(g->vec), NV = k->nr / VW;
  const bool epi = o->epi_store != NULL;
  LLVMTypeRef ps[] = {g->i64, g->ptr, g->ptr, g->ptr, g->i64, g->i64, g->i64, g->f32, g->f32, g->i64, g->i64, g->i64};
  LLVMValueRef fn = nc_begin_fn(g, name, ps, epi ? 12 : 9, true);
  LLVMValueRef loff = epi ? LLVMGetParam(fn, 11) : NULL;
  LLVMValueRef kd = LLVMGetParam(fn, 0), ap = LLVMGetParam(fn, 1), bp = LLVMGetParam(fn, 2);
  LLVMValueRef cp = LLVMGetParam(fn, 3), ldc = LLVMGetParam(fn, 4), mr = LLVMGetParam(fn, 5);
  LLVMValueRef nr = LLVMGetParam(fn, 6), alpha = LLVMGetParam(fn, 7), beta = LLVMGetParam(fn, 8);
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (unsigned i = 1; i <= 3; i++)
    LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(g->ctx, noalias, 0));

  LLVMValueRef acc[NC_GEMM_MAX_ACC];
  for (int i = 0; i < MR * NV; i++) acc[i] = nc_var(g, g->vec, "acc", LLVMConstNull(g->vec));
  // Row pointers of A for the row-major layout.
  LLVMValueRef arow[NC_GEMM_MAX_ACC];
  if (!g->s->ta)
    for (int i = 0; i < MR; i++) arow[i] = nc_fptr(g, ap, nc_mul(g, c64(g, i), kd));

  // Main loop, ku steps per iteration, then the remainder one step at a time.
  LLVMValueRef kmain = nc_sub(g, kd, LLVMBuildSRem(g->b, kd, c64(g, k->ku), ""));
  nc_loop L;
  LLVMValueRef kk = nc_loop_begin(g, &L, o->kname, c64(g, 0), kmain, c64(g, k->ku));
  for (int u = 0; u < k->ku; u++) nc_ukstep(g, ap, bp, arow, acc, kk, u);
  nc_loop_end(g, &L);
  kk = nc_loop_begin(g, &L, o->kname_rem, kmain, kd, c64(g, 1));
  nc_ukstep(g, ap, bp, arow, acc, kk, -1);
  nc_uk_loop_end(g, &L);

  LLVMValueRef valpha = nc_splat_to(g, g->vec, alpha), vbeta = nc_splat_to(g, g->vec, beta);
  LLVMValueRef full = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, mr, c64(g, MR), ""),
                                   LLVMBuildICmp(g->b, LLVMIntEQ, nr, c64(g, k->nr), ""), "");
  LLVMValueRef beta0 = LLVMBuildFCmp(g->b, LLVMRealOEQ, beta, cf(g, 0.0), "");
  nc_if fi;
  nc_if_begin(g, &fi, full);
  {  // full tile: vector stores straight into C
    nc_if bi;
    nc_if_begin(g, &bi, beta0);
    for (int i = 0; i < MR; i++)
      for (int v = 0; v < NV; v++) {
        LLVMValueRef p = o->cptr(g, cp, nc_add(g, nc_mul(g, c64(g, i), ldc), c64(g, v * VW)));
        LLVMValueRef a = LLVMBuildLoad2(g->b, g->vec, acc[i * NV + v], "");
        o->cstore(g, LLVMBuildFMul(g->b, a, valpha, ""), p);
      }
    nc_if_else(g, &bi);
    for (int i = 0; i < MR; i++)
      for (int v = 0; v < NV; v++) {
        LLVMValueRef p = o->cptr(g, cp, nc_add(g, nc_mul(g, c64(g, i), ldc), c64(g, v * VW)));
        LLVMValueRef a = LLVMBuildLoad2(g->b, g->vec, acc[i * NV + v], "");
        // (the old C before the product with loff, after it without: the
        // order each generator had before they shared this code)
        LLVMValueRef old = loff ? o->cload(g, g->vec, LLVMBuildGEP2(g->b, g->f32, p, &loff, 1, "")) : NULL;
        LLVMValueRef x = LLVMBuildFMul(g->b, a, valpha, "");
        if (!old) old = o->cload(g, g->vec, p);
        o->cstore(g, nc_fmav(g, old, vbeta, x), p);
      }
    nc_if_end(g, &bi);
    if (epi) {  // relu2's last K block: relu(C)^2 at C + doff
      nc_if fe;
      nc_if_begin(g, &fe, LLVMBuildICmp(g->b, LLVMIntNE, LLVMGetParam(fn, 9), c64(g, 0), ""));
      for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++)
          o->epi_store(g, o->cptr(g, cp, nc_add(g, nc_mul(g, c64(g, i), ldc), c64(g, v * VW))), LLVMGetParam(fn, 10), true);
      nc_if_else(g, &fe);
      nc_if_end(g, &fe);
    }
  }
  nc_if_else(g, &fi);
  {  // edge tile: spill the accumulators, then scalar stores of the valid part
    LLVMValueRef tmp = nc_var(g, LLVMArrayType(g->f32, (unsigned)(MR * k->nr)), "tile", NULL);
    for (int i = 0; i < MR; i++)
      for (int v = 0; v < NV; v++)
        nc_store4(g, LLVMBuildLoad2(g->b, g->vec, acc[i * NV + v], ""), nc_fptr(g, tmp, c64(g, i * k->nr + v * VW)));
    nc_loop Li, Lj;
    LLVMValueRef i = nc_loop_begin(g, &Li, "ei", c64(g, 0), mr, c64(g, 1));
    LLVMValueRef j = nc_loop_begin(g, &Lj, "ej", c64(g, 0), nr, c64(g, 1));
    LLVMValueRef t = LLVMBuildLoad2(g->b, g->f32, nc_fptr(g, tmp, nc_add(g, nc_mul(g, i, c64(g, k->nr)), j)), "");
    LLVMValueRef p = o->cptr(g, cp, nc_add(g, nc_mul(g, i, ldc), j));
    LLVMValueRef r = LLVMBuildFMul(g->b, t, alpha, "");
    nc_if bi;
    nc_if_begin(g, &bi, beta0);
    o->cstore(g, r, p);
    nc_if_else(g, &bi);
    LLVMValueRef old = o->cload(g, g->f32, loff ? LLVMBuildGEP2(g->b, g->f32, p, &loff, 1, "") : p);
    o->cstore(g, nc_fmaf(g, old, beta, r), p);
    nc_if_end(g, &bi);
    if (epi) {
      nc_if fe;
      nc_if_begin(g, &fe, LLVMBuildICmp(g->b, LLVMIntNE, LLVMGetParam(fn, 9), c64(g, 0), ""));
      o->epi_store(g, p, LLVMGetParam(fn, 10), false);
      nc_if_else(g, &fe);
      nc_if_end(g, &fe);
    }
    nc_uk_loop_end(g, &Lj);
    nc_uk_loop_end(g, &Li);
  }
  nc_if_end(g, &fi);
  LLVMBuildRetVoid(g->b);
  return fn;
}

// ---- packing ------------------------------------------------------------------
void nc_gemm_ir_transpose(nc_gemm_ir *g, LLVMValueRef *r, int vw) {
  LLVMValueRef m0[16], m1[16];
  for (int d = vw / 2; d >= 1; d /= 2) {
    for (int c = 0; c < vw; c++) {
      m0[c] = c32(g, (c & d) ? vw + c - d : c);
      m1[c] = c32(g, (c & d) ? vw + c : c + d);
    }
    LLVMValueRef k0 = LLVMConstVector(m0, (unsigned)vw), k1 = LLVMConstVector(m1, (unsigned)vw);
    for (int row = 0; row < vw; row++) {
      if (row & d) continue;
      LLVMValueRef lo = LLVMBuildShuffleVector(g->b, r[row], r[row + d], k0, "");
      LLVMValueRef hi = LLVMBuildShuffleVector(g->b, r[row], r[row + d], k1, "");
      r[row] = lo;
      r[row + d] = hi;
    }
  }
}

LLVMValueRef nc_gemm_ir_pack_begin(nc_gemm_ir *g, const char *name, LLVMValueRef P[7]) {
  LLVMTypeRef ps[] = {g->ptr, g->ptr, g->i64, g->i64, g->i64, g->i64, g->i64};
  LLVMValueRef fn = nc_begin_fn(g, name, ps, 7, true);
  for (unsigned i = 0; i < 7; i++) P[i] = LLVMGetParam(fn, i);
  return fn;
}

// ---- driver -------------------------------------------------------------------
void nc_gemm_ir_driver_begin(nc_gemm_ir *g, nc_gemm_drv *d) {
  LLVMTypeRef ps[] = {g->ptr, g->i32, g->i32};
  d->fn = nc_begin_fn(g, g->s->name, ps, 3, false);
  d->args = LLVMGetParam(d->fn, 0);
  d->t = LLVMBuildSExt(g->b, LLVMGetParam(d->fn, 1), g->i64, "t");
  d->T = LLVMBuildSExt(g->b, LLVMGetParam(d->fn, 2), g->i64, "T");
#define NC_F(field, ty) nc_arg(g, d->args, offsetof(nc_gemm_args, field), ty)
  d->A = NC_F(a, g->ptr);
  d->B = NC_F(b, g->ptr);
  d->C = NC_F(c, g->ptr);
  d->M = NC_F(m, g->i64);
  d->N = NC_F(n, g->i64);
  d->K = NC_F(k, g->i64);
  d->lda = NC_F(lda, g->i64);
  d->ldb = NC_F(ldb, g->i64);
  d->ldc = NC_F(ldc, g->i64);
  d->batch = NC_F(batch, g->i64);
  d->sa = NC_F(stride_a, g->i64);
  d->sb = NC_F(stride_b, g->i64);
  d->sc = NC_F(stride_c, g->i64);
  d->alpha = NC_F(alpha, g->f32);
  d->beta = NC_F(beta, g->f32);
  d->work = NC_F(work, g->ptr);
#undef NC_F
}

void nc_gemm_ir_workspace(nc_gemm_ir *g, const nc_gemm_drv *d, int64_t ws_words, int64_t a_words, LLVMValueRef *Ap,
                          LLVMValueRef *Bp) {
  LLVMValueRef ws = nc_fptr(g, d->work, nc_mul(g, d->t, c64(g, ws_words)));
  *Ap = ws;
  *Bp = nc_fptr(g, ws, c64(g, (a_words + 15) / 16 * 16));
}

void nc_gemm_ir_split_begin(nc_gemm_ir *g, const nc_gemm_drv *d, nc_gemm_split *sp) {
  LLVMValueRef bsplit = LLVMBuildICmp(g->b, LLVMIntSGE, d->batch, d->T, "");
  LLVMValueRef msplit = LLVMBuildICmp(g->b, LLVMIntSGE, d->M, d->N, "");
  nc_split(g, d->batch, 1, d->t, d->T, &sp->b0, &sp->b1);
  nc_split(g, d->M, g->k->mr, d->t, d->T, &sp->m0, &sp->m1);
  nc_split(g, d->N, g->k->nr, d->t, d->T, &sp->n0, &sp->n1);
  LLVMValueRef zero = c64(g, 0);
  LLVMValueRef nb = LLVMBuildNot(g->b, bsplit, "");
  sp->use_m = LLVMBuildAnd(g->b, nb, msplit, "");
  sp->use_n = LLVMBuildAnd(g->b, nb, LLVMBuildNot(g->b, msplit, ""), "");
  sp->b0 = LLVMBuildSelect(g->b, bsplit, sp->b0, zero, "");
  sp->b1 = LLVMBuildSelect(g->b, bsplit, sp->b1, d->batch, "");
}

LLVMValueRef nc_gemm_ir_split_end(nc_gemm_ir *g, const nc_gemm_drv *d, nc_gemm_split *sp) {
  LLVMValueRef zero = c64(g, 0);
  sp->m0 = LLVMBuildSelect(g->b, sp->use_m, sp->m0, zero, "");
  sp->m1 = LLVMBuildSelect(g->b, sp->use_m, sp->m1, d->M, "");
  sp->n0 = LLVMBuildSelect(g->b, sp->use_n, sp->n0, zero, "");
  sp->n1 = LLVMBuildSelect(g->b, sp->use_n, sp->n1, d->N, "");
  return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, d->K, zero, ""), c64(g, 1), d->K, "");
}

void nc_gemm_ir_tile_loops(nc_gemm_ir *g, LLVMValueRef uk, const nc_gemm_ir_tiles *t) {
  const nc_gemm_knobs *k = g->k;
  LLVMValueRef zero = c64(g, 0), mr_c = c64(g, k->mr);
  nc_loop Lo, Li;
  LLVMValueRef ir, jr;
  if (k->order == 0) {
    jr = nc_loop_begin(g, &Lo, "jr", zero, t->ncur, c64(g, k->nr));
    ir = nc_loop_begin(g, &Li, "ir", zero, t->mcur, c64(g, k->mr));
  } else {
    ir = nc_loop_begin(g, &Lo, "ir", zero, t->mcur, c64(g, k->mr));
    jr = nc_loop_begin(g, &Li, "jr", zero, t->ncur, c64(g, k->nr));
  }
  LLVMValueRef cptr = g->ops->cptr(g, t->Cb, nc_add(g, nc_mul(g, nc_add(g, t->ic, ir), t->ldc), nc_add(g, t->jc, jr)));
  LLVMValueRef ukargs[] = {t->kd,
                           nc_fptr(g, t->Ap, nc_mul(g, ir, t->kd)),
                           nc_fptr(g, t->Bp, nc_mul(g, jr, t->kd)),
                           cptr,
                           t->ldc,
                           nc_min(g, c64(g, k->mr), nc_sub(g, t->mcur, ir)),
                           nc_min(g, c64(g, k->nr), nc_sub(g, t->ncur, jr)),
                           t->alpha,
                           t->beff,
                           t->extra[0],
                           t->extra[1],
                           t->extra[2]};
  if (t->nsym) {
    nc_if ftile;
    LLVMValueRef below = LLVMBuildICmp(g->b, LLVMIntSLT, nc_add(g, t->jc, jr), nc_add(g, nc_add(g, t->ic, ir), mr_c), "");
    nc_if_begin(g, &ftile, LLVMBuildOr(g->b, t->nsym, below, ""));
    nc_call(g, uk, ukargs, t->extra[0] ? 12 : 9);
    nc_if_else(g, &ftile), nc_if_end(g, &ftile);
  } else {
    nc_call(g, uk, ukargs, t->extra[0] ? 12 : 9);
  }
  nc_loop_end(g, &Li);
  nc_loop_end(g, &Lo);
}

nc_status nc_gemm_ir_compile(nc_jit *jit, const nc_gemm_spec *spec, const char *what,
                             nc_status (*emit)(LLVMModuleRef m, const nc_host_cpu *cpu, const nc_gemm_spec *spec),
                             nc_gemm_fn *out) {
  *out = NULL;
  LLVMModuleRef m;
  NC_TRY(nc_jit_module_new(jit, spec->name ? spec->name : what, &m));
  nc_status st = emit(m, nc_jit_cpu(jit), spec);
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
#endif
