// GEMM generator (see gemm.h for the algorithm). The micro-kernel's skeleton,
// the driver's argument loads, workspace and static split and the tile loops
// are codegen/gemm_drv.c's, shared with the bf16 generator; this file has the
// fp32 micro-kernel step (nc_f32_ops), packing, the skinny path, the dynamic
// split and the symmetric product. The IR is written the easy way: loop
// counters and accumulators live in allocas of the entry block and the O3
// pipeline (SROA/mem2reg) turns them into SSA registers.
#include "codegen/gemm.h"

#include <stdio.h>
#include <string.h>

#define NC_GEMM_SKINNY_M 16  // M up to this (and !ta) takes the skinny path

// nc_gemm_knobs_default, nc_gemm_knobs_check and nc_gemm_workspace_size live in
// codegen/gemm_knobs.c (no LLVM: the AOT runtime links them).

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>

#include "codegen/gemm_ir.h"

typedef nc_gemm_ir nc_gg;  // codegen/gemm_ir.h

static LLVMValueRef nc_loadf(nc_gg *g, LLVMValueRef p) { return LLVMBuildLoad2(g->b, g->f32, p, ""); }
static LLVMValueRef nc_loadv(nc_gg *g, LLVMValueRef p) { return nc_load4(g, g->vec, p); }
static void nc_storev(nc_gg *g, LLVMValueRef v, LLVMValueRef p) { nc_store4(g, v, p); }
static LLVMValueRef nc_splat(nc_gg *g, LLVMValueRef x) { return nc_splat_to(g, g->vec, x); }
// relu(x)^2 of a float or a vector (NaN stays NaN, as the interpreter's relu)
static LLVMValueRef nc_relu2(nc_gg *g, LLVMValueRef x) {
  LLVMValueRef zero = LLVMConstNull(LLVMTypeOf(x));
  LLVMValueRef r = LLVMBuildSelect(g->b, LLVMBuildFCmp(g->b, LLVMRealUGT, x, zero, ""), x, zero, "");
  return LLVMBuildFMul(g->b, r, r, "");
}
// The relu2 epilogue's second store: relu(*p)^2 at p + doff (a GEP from p, so
// it stays "based on" C's noalias pointer also when doff == 0).
static void nc_epi_store(nc_gg *g, LLVMValueRef p, LLVMValueRef doff, bool vec) {
  LLVMValueRef x = vec ? nc_loadv(g, p) : nc_loadf(g, p);
  LLVMValueRef q = LLVMBuildGEP2(g->b, g->f32, p, &doff, 1, "");
  if (vec) nc_storev(g, nc_relu2(g, x), q);
  else LLVMBuildStore(g->b, nc_relu2(g, x), q);
}

// ---- micro-kernel (codegen/gemm_drv.c) ---------------------------------------
// ukernel(kc, Ap, Bp, C, ldc, mr, nr, alpha, beta, epi, doff, loff): FMA on fp32
// panels; C[. + loff] is the addend on the first K block (loff = E - C, else 0);
// when epi != 0 (the last K block of a relu2 GEMM) also C[i,j + doff] = relu(C[i,j])^2.
// Ap is one packed A panel: k-major (Ap[k*MR + i]) when ta, else row-major
// (Ap[i*kc + k]) — whichever layout packing can produce by plain copies.
static LLVMValueRef nc_f32_load_a(nc_gg *g, LLVMValueRef p) { return nc_splat(g, nc_loadf(g, p)); }
static LLVMValueRef nc_f32_madd(nc_gg *g, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b) {
  return nc_fmav(g, a, b, acc);
}
static LLVMValueRef nc_f32_cload(nc_gg *g, LLVMTypeRef ty, LLVMValueRef p) {
  return ty == g->vec ? nc_loadv(g, p) : nc_loadf(g, p);
}
static void nc_f32_cstore(nc_gg *g, LLVMValueRef x, LLVMValueRef p) {
  if (LLVMTypeOf(x) == g->vec) nc_storev(g, x, p);
  else LLVMBuildStore(g->b, x, p);
}
static const nc_gemm_ukernel_ops nc_f32_ops = {
    .kname = "k", .kname_rem = "krem", .cold = true, .load_b = nc_loadv, .load_a = nc_f32_load_a,
    .madd = nc_f32_madd, .cptr = nc_fptr, .cload = nc_f32_cload, .cstore = nc_f32_cstore, .epi_store = nc_epi_store};

// ---- packing ------------------------------------------------------------------
// pack_a(Ap, A, lda, ic, mc, pc, kc): rows ic..ic+mc of op(A), depth pc..pc+kc,
// into ceil(mc/MR) panels of MR x kc (zero rows past mc).
static LLVMValueRef nc_emit_pack_a(nc_gg *g, const char *name) {
  const int MR = g->k->mr;
  LLVMValueRef P[7];
  LLVMValueRef fn = nc_gemm_ir_pack_begin(g, name, P);
  LLVMValueRef ap = P[0], a = P[1], lda = P[2], ic = P[3], mc = P[4], pc = P[5], kc = P[6];
  if (!g->s->ta) {
    nc_loop Lr;
    LLVMValueRef ir = nc_loop_begin(g, &Lr, "ir", c64(g, 0), mc, c64(g, MR));
    LLVMValueRef panel = nc_fptr(g, ap, nc_mul(g, ir, kc));
    LLVMValueRef rows = nc_min(g, c64(g, MR), nc_sub(g, mc, ir));
    LLVMValueRef row0 = nc_add(g, ic, ir);
    // A (M,K): panel row i = A[row0+i, pc:pc+kc], contiguous: a memcpy (a
    // memset for the zero rows past `rows`), no loop for the backend to compile.
    LLVMValueRef bytes = nc_mul(g, kc, c64(g, 4));
    for (int i = 0; i < MR; i++) {
      LLVMValueRef dst = nc_fptr(g, panel, nc_mul(g, c64(g, i), kc));
      nc_if f;
      nc_if_begin(g, &f, LLVMBuildICmp(g->b, LLVMIntSLT, c64(g, i), rows, ""));
      LLVMValueRef src = nc_fptr(g, a, nc_add(g, nc_mul(g, nc_add(g, row0, c64(g, i)), lda), pc));
      LLVMBuildMemCpy(g->b, dst, 4, src, 4, bytes);
      nc_if_else(g, &f);
      LLVMBuildMemSet(g->b, dst, LLVMConstInt(LLVMInt8TypeInContext(g->ctx), 0, 0), bytes, 4);
      nc_if_end(g, &f);
    }
    nc_loop_end(g, &Lr);
  } else {
    // A stored (K,M): Ap[panel p][k*MR + i] = A[(pc+k)*lda + ic + p*MR + i].
    // k outer: each k reads one contiguous run of mc floats of A's row pc+k
    // and deals it out MR at a time to the panels. (Panel by panel, the k
    // loop read MR floats per row at a stride of lda: with lda a large power
    // of two (the lm_head's dW, lda 8192) those rows share a few cache sets,
    // so every panel fetched A's lines again.)
    LLVMValueRef mfull = nc_mul(g, LLVMBuildSDiv(g->b, mc, c64(g, MR), ""), c64(g, MR));
    nc_loop Lk, Lp;
    LLVMValueRef kk = nc_loop_begin(g, &Lk, "k", c64(g, 0), kc, c64(g, 1));
    LLVMValueRef src = nc_fptr(g, a, nc_add(g, nc_mul(g, nc_add(g, pc, kk), lda), ic));
    LLVMValueRef dk = nc_fptr(g, ap, nc_mul(g, kk, c64(g, MR)));
    LLVMValueRef ir = nc_loop_begin(g, &Lp, "ir", c64(g, 0), mfull, c64(g, MR));
    LLVMValueRef s = nc_fptr(g, src, ir), d = nc_fptr(g, dk, nc_mul(g, ir, kc));
    for (int i = 0; i < MR; i++)
      LLVMBuildStore(g->b, nc_loadf(g, nc_fptr(g, s, c64(g, i))), nc_fptr(g, d, c64(g, i)));
    nc_loop_end_cold(g, &Lp);
    nc_loop_end(g, &Lk);
    // the edge panel (mc % MR rows), zero-padded
    nc_if f;
    nc_if_begin(g, &f, LLVMBuildICmp(g->b, LLVMIntSLT, mfull, mc, ""));
    LLVMValueRef rows = nc_sub(g, mc, mfull);
    LLVMValueRef panel = nc_fptr(g, ap, nc_mul(g, mfull, kc));
    kk = nc_loop_begin(g, &Lk, "ke", c64(g, 0), kc, c64(g, 1));
    src = nc_fptr(g, a, nc_add(g, nc_mul(g, nc_add(g, pc, kk), lda), nc_add(g, ic, mfull)));
    LLVMValueRef dst = nc_fptr(g, panel, nc_mul(g, kk, c64(g, MR)));
    for (int i = 0; i < MR; i++) {
      nc_if e;
      nc_if_begin(g, &e, LLVMBuildICmp(g->b, LLVMIntSLT, c64(g, i), rows, ""));
      LLVMBuildStore(g->b, nc_loadf(g, nc_fptr(g, src, c64(g, i))), nc_fptr(g, dst, c64(g, i)));
      nc_if_else(g, &e);
      LLVMBuildStore(g->b, cf(g, 0.0), nc_fptr(g, dst, c64(g, i)));
      nc_if_end(g, &e);
    }
    nc_loop_end_cold(g, &Lk);
    nc_if_else(g, &f);
    nc_if_end(g, &f);
  }
  LLVMBuildRetVoid(g->b);
  return fn;
}

// pack_b(Bp, B, ldb, pc, kc, jc, nc): depth pc..pc+kc, columns jc..jc+nc of
// op(B) into ceil(nc/NR) panels of kc x NR (Bp[k*NR + j]; zero columns past nc).
static LLVMValueRef nc_emit_pack_b(nc_gg *g, const char *name) {
  const int NR = g->k->nr, VW = g->k->vw, NV = NR / VW;
  LLVMValueRef P[7];
  LLVMValueRef fn = nc_gemm_ir_pack_begin(g, name, P);
  LLVMValueRef bp = P[0], b = P[1], ldb = P[2], pc = P[3], kc = P[4], jc = P[5], nc = P[6];
  nc_loop Lj;
  LLVMValueRef jr = nc_loop_begin(g, &Lj, "jr", c64(g, 0), nc, c64(g, NR));
  LLVMValueRef panel = nc_fptr(g, bp, nc_mul(g, jr, kc));
  LLVMValueRef cols = nc_min(g, c64(g, NR), nc_sub(g, nc, jr));
  LLVMValueRef col0 = nc_add(g, jc, jr);
  // element (k, j) of this panel in B: B[(pc+k)*ldb + col0+j], or B[(col0+j)*ldb + pc+k] with tb
  nc_if f;
  nc_if_begin(g, &f, LLVMBuildICmp(g->b, LLVMIntEQ, cols, c64(g, NR), ""));
  if (!g->s->tb) {
    nc_loop Lk;
    LLVMValueRef kk = nc_loop_begin(g, &Lk, "k", c64(g, 0), kc, c64(g, 1));
    LLVMValueRef src = nc_fptr(g, b, nc_add(g, nc_mul(g, nc_add(g, pc, kk), ldb), col0));
    LLVMValueRef dst = nc_fptr(g, panel, nc_mul(g, kk, c64(g, NR)));
    for (int v = 0; v < NV; v++)
      nc_storev(g, nc_loadv(g, nc_fptr(g, src, c64(g, v * VW))), nc_fptr(g, dst, c64(g, v * VW)));
    nc_loop_end(g, &Lk);
  } else {
    // VW x VW blocks: VW rows of B (columns j of op(B)) of VW contiguous k,
    // transposed in registers into VW rows of the panel.
    LLVMValueRef kv = nc_sub(g, kc, LLVMBuildSRem(g->b, kc, c64(g, VW), ""));
    nc_loop Lk;
    LLVMValueRef k0 = nc_loop_begin(g, &Lk, "k", c64(g, 0), kv, c64(g, VW));
    // A run-time loop over the NV column groups (not unrolled): the shuffle
    // network is the costliest IR to compile, one copy keeps cold compiles short.
    nc_loop Lv;
    LLVMValueRef v0 = nc_loop_begin(g, &Lv, "v", c64(g, 0), c64(g, NR), c64(g, VW));
    LLVMValueRef r[16];
    for (int j = 0; j < VW; j++) {
      LLVMValueRef row = nc_add(g, col0, nc_add(g, v0, c64(g, j)));
      r[j] = nc_loadv(g, nc_fptr(g, b, nc_add(g, nc_mul(g, row, ldb), nc_add(g, pc, k0))));
    }
    nc_gemm_ir_transpose(g, r, VW);
    for (int kq = 0; kq < VW; kq++) {
      LLVMValueRef off = nc_add(g, nc_mul(g, nc_add(g, k0, c64(g, kq)), c64(g, NR)), v0);
      nc_storev(g, r[kq], nc_fptr(g, panel, off));
    }
    nc_loop_end(g, &Lv);
    nc_loop_end(g, &Lk);
    nc_loop Lt;
    LLVMValueRef kk = nc_loop_begin(g, &Lk, "kt", kv, kc, c64(g, 1));
    LLVMValueRef j = nc_loop_begin(g, &Lt, "jt", c64(g, 0), c64(g, NR), c64(g, 1));
    LLVMValueRef x = nc_loadf(g, nc_fptr(g, b, nc_add(g, nc_mul(g, nc_add(g, col0, j), ldb), nc_add(g, pc, kk))));
    LLVMBuildStore(g->b, x, nc_fptr(g, panel, nc_add(g, nc_mul(g, kk, c64(g, NR)), j)));
    nc_loop_end_cold(g, &Lt);
    nc_loop_end_cold(g, &Lk);
  }
  nc_if_else(g, &f);
  {  // edge panel: scalar, zero past cols
    nc_loop Lk, Lc;
    LLVMValueRef kk = nc_loop_begin(g, &Lk, "ke", c64(g, 0), kc, c64(g, 1));
    LLVMValueRef j = nc_loop_begin(g, &Lc, "je", c64(g, 0), c64(g, NR), c64(g, 1));
    LLVMValueRef dst = nc_fptr(g, panel, nc_add(g, nc_mul(g, kk, c64(g, NR)), j));
    nc_if e;
    nc_if_begin(g, &e, LLVMBuildICmp(g->b, LLVMIntSLT, j, cols, ""));
    LLVMValueRef col = nc_add(g, col0, j), kr = nc_add(g, pc, kk);
    LLVMValueRef idx = g->s->tb ? nc_add(g, nc_mul(g, col, ldb), kr) : nc_add(g, nc_mul(g, kr, ldb), col);
    LLVMBuildStore(g->b, nc_loadf(g, nc_fptr(g, b, idx)), dst);
    nc_if_else(g, &e);
    LLVMBuildStore(g->b, cf(g, 0.0), dst);
    nc_if_end(g, &e);
    nc_loop_end_cold(g, &Lc);
    nc_loop_end_cold(g, &Lk);
  }
  nc_if_end(g, &f);
  nc_loop_end(g, &Lj);
  LLVMBuildRetVoid(g->b);
  return fn;
}

// ---- skinny path (small M: decode) ------------------------------------------------
// skinny(A, B, C, M, N, K, lda, ldb, ldc, batch, sa, sb, sc, alpha, beta, t, T, eoff, doff, relu2):
// the whole product without packing, for M <= NC_GEMM_SKINNY_M and !ta. Every
// weight element is read from memory once: columns of op(B) go in blocks
// (tb: 4 rows of the stored B, each K contiguous; else 2 vectors of a stored
// row), and all M rows of A run against one block while it sits in L1/L2.
// Threads split whole batch items when batch >= T, else columns (block units).
static LLVMValueRef nc_hsum(nc_gg *g, LLVMValueRef v) {
  int w = g->k->vw;
  while (w > 1) {
    LLVMValueRef lo[16], hi[16];
    for (int i = 0; i < w / 2; i++) lo[i] = c32(g, i), hi[i] = c32(g, w / 2 + i);
    LLVMValueRef a = LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(lo, (unsigned)(w / 2)), "");
    LLVMValueRef b = LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(hi, (unsigned)(w / 2)), "");
    v = LLVMBuildFAdd(g->b, a, b, "");
    w /= 2;
  }
  return LLVMBuildExtractElement(g->b, v, c32(g, 0), "");
}

// C[i] = alpha * r + beta * E[i] (E = C without an addend; not read when beta == 0),
// then relu(C[i])^2 at D[i] when relu2 (branch-free: otherwise C[i] is stored again)
static void nc_store_ab(nc_gg *g, LLVMValueRef r, LLVMValueRef p, LLVMValueRef alpha, LLVMValueRef beta, bool vec) {
  LLVMValueRef beta0 = LLVMBuildFCmp(g->b, LLVMRealOEQ, beta, cf(g, 0.0), "");
  LLVMValueRef a = vec ? nc_splat(g, alpha) : alpha;
  LLVMValueRef x = LLVMBuildFMul(g->b, r, a, "");
  nc_if f;
  nc_if_begin(g, &f, beta0);
  if (vec) nc_storev(g, x, p);
  else LLVMBuildStore(g->b, x, p);
  nc_if_else(g, &f);
  LLVMValueRef src = LLVMBuildGEP2(g->b, g->f32, p, &g->epi_eoff, 1, "");  // E
  if (vec) nc_storev(g, nc_fmav(g, nc_loadv(g, src), nc_splat(g, beta), x), p);
  else LLVMBuildStore(g->b, nc_fmaf(g, nc_loadf(g, src), beta, x), p);
  nc_if_end(g, &f);
  // the skinny path has no K blocks: the epilogue follows every store
  LLVMValueRef c = vec ? nc_loadv(g, p) : nc_loadf(g, p);
  LLVMValueRef off = LLVMBuildSelect(g->b, g->epi_relu2, g->epi_doff, c64(g, 0), "");
  LLVMValueRef val = LLVMBuildSelect(g->b, g->epi_relu2, nc_relu2(g, c), c, "");
  LLVMValueRef q = LLVMBuildGEP2(g->b, g->f32, p, &off, 1, "");
  if (vec) nc_storev(g, val, q);
  else LLVMBuildStore(g->b, val, q);
}

// Register block of the tb skinny path, by vector width: rows of A and
// columns of C (rows of the stored B) per block, vector accumulators per
// element of C, vectors of k per loop iteration. Each k vector then costs
// rows + cols loads for rows * cols FMAs.
// - vw 16 (AVX-512, 32 zmm): 2 x 4, two accumulators each: 16 accumulators.
// - vw 8/4 (AVX2, 16 ymm): 4 x 3, one accumulator each: 12 accumulators +
//   3 B vectors + 1 row vector of A = 16 registers (2 x 4 with two
//   accumulators each needed 22 and spilled: ~24 GFLOP/s per thread at M = 16).
#define NC_SKINNY_MAX 4  // rows and columns of a block at most; acc <= 2

typedef struct {
  int rows, cols, acc, unroll;
} nc_skinny_shape;

static nc_skinny_shape nc_skinny_shape_for(int vw) {
  if (vw >= 16) return (nc_skinny_shape){.rows = 2, .cols = 4, .acc = 2, .unroll = 2};
  return (nc_skinny_shape){.rows = 4, .cols = 3, .acc = 1, .unroll = 2};
}

// tb: rows m..m+nrow of C, columns j0..j0+ncol (B stored (N,K)); nrow <=
// sh->rows, ncol <= sh->cols. Each x vector feeds ncol FMAs and each B vector
// nrow; k runs sh->unroll vectors per iteration, vector u into accumulator
// u % sh->acc. Every row sums in the same order whatever nrow, so a row's
// result does not depend on M (nor on how M is cut into row groups).
// pfd (NULL, or one offset in elements per column): prefetch (into L2) the
// line pfd[c] past each line of B row c loaded in the main k loop, i.e. the
// next block's rows while this one is computed (0: the line itself, a no-op):
// a block's rows are short streams (1-2 KB at K = 256-512) that the hardware
// prefetcher alone does not keep ahead of.
static void nc_skinny_tb_rows(nc_gg *g, const nc_skinny_shape *sh, int ncol, int nrow, LLVMValueRef m,
                              LLVMValueRef j0, LLVMValueRef A, LLVMValueRef *brow, LLVMValueRef C, LLVMValueRef K,
                              LLVMValueRef lda, LLVMValueRef ldc, LLVMValueRef alpha, LLVMValueRef beta,
                              LLVMValueRef *pfd) {
  const int VW = g->k->vw, U = sh->acc, L = sh->unroll;
  LLVMValueRef acc[NC_SKINNY_MAX][NC_SKINNY_MAX][2], sacc[NC_SKINNY_MAX][NC_SKINNY_MAX], arow[NC_SKINNY_MAX];
  for (int r = 0; r < nrow; r++) {
    arow[r] = nc_fptr(g, A, nc_mul(g, nc_add(g, m, c64(g, r)), lda));
    for (int c = 0; c < ncol; c++) {
      sacc[r][c] = nc_var(g, g->f32, "ssum", NULL);
      for (int u = 0; u < U; u++) acc[r][c][u] = nc_var(g, g->vec, "sacc", LLVMConstNull(g->vec));
    }
  }
  LLVMValueRef kv = nc_sub(g, K, LLVMBuildSRem(g->b, K, c64(g, VW), ""));
  LLVMValueRef kvu = nc_sub(g, K, LLVMBuildSRem(g->b, K, c64(g, L * VW), ""));
  nc_loop Lk;
  for (int pass = 0; pass < (L > 1 ? 2 : 1); pass++) {
    // pass 0: steps of L vectors up to kvu; pass 1 (L > 1): single vectors up to kv
    int uu = pass ? 1 : L;
    LLVMValueRef k = pass ? nc_loop_begin(g, &Lk, "sk1", kvu, kv, c64(g, VW))
                          : nc_loop_begin(g, &Lk, "sk", c64(g, 0), kvu, c64(g, L * VW));
    for (int u = 0; u < uu; u++) {
      LLVMValueRef ku = nc_add(g, k, c64(g, u * VW));
      LLVMValueRef w[NC_SKINNY_MAX];
      for (int c = 0; c < ncol; c++) {
        w[c] = nc_loadv(g, nc_fptr(g, brow[c], ku));
        if (pfd && !pass && (u * VW * 4) % 64 == 0) {  // one prefetch per 64-byte line
          LLVMValueRef pa[4] = {nc_fptr(g, brow[c], nc_add(g, ku, pfd[c])), c32(g, 0), c32(g, 2), c32(g, 1)};
          LLVMBuildCall2(g->b, g->pf_ty, g->prefetch, pa, 4, "");
        }
      }
      for (int r = 0; r < nrow; r++) {
        LLVMValueRef x = nc_loadv(g, nc_fptr(g, arow[r], ku));
        for (int c = 0; c < ncol; c++) {
          LLVMValueRef p = acc[r][c][u % U];
          LLVMBuildStore(g->b, nc_fmav(g, x, w[c], LLVMBuildLoad2(g->b, g->vec, p, "")), p);
        }
      }
    }
    nc_loop_end(g, &Lk);
  }
  for (int r = 0; r < nrow; r++)
    for (int c = 0; c < ncol; c++) {
      LLVMValueRef v = LLVMBuildLoad2(g->b, g->vec, acc[r][c][0], "");
      for (int u = 1; u < U; u++) v = LLVMBuildFAdd(g->b, v, LLVMBuildLoad2(g->b, g->vec, acc[r][c][u], ""), "");
      LLVMBuildStore(g->b, nc_hsum(g, v), sacc[r][c]);
    }
  LLVMValueRef k = nc_loop_begin(g, &Lk, "skt", kv, K, c64(g, 1));
  for (int r = 0; r < nrow; r++) {
    LLVMValueRef xs = nc_loadf(g, nc_fptr(g, arow[r], k));
    for (int c = 0; c < ncol; c++)
      LLVMBuildStore(g->b, nc_fmaf(g, xs, nc_loadf(g, nc_fptr(g, brow[c], k)), nc_loadf(g, sacc[r][c])), sacc[r][c]);
  }
  nc_loop_end(g, &Lk);
  for (int r = 0; r < nrow; r++) {
    LLVMValueRef crow = nc_fptr(g, C, nc_mul(g, nc_add(g, m, c64(g, r)), ldc));
    for (int c = 0; c < ncol; c++)
      nc_store_ab(g, nc_loadf(g, sacc[r][c]), nc_fptr(g, crow, nc_add(g, j0, c64(g, c))), alpha, beta, false);
  }
}

// tb: columns j0..j0+ncol of C for all M rows, sh->rows rows at a time, then
// the 1..sh->rows-1 rows left in one group.
static void nc_skinny_tb_block(nc_gg *g, const nc_skinny_shape *sh, int ncol, LLVMValueRef j0, LLVMValueRef A,
                               LLVMValueRef B, LLVMValueRef C, LLVMValueRef M, LLVMValueRef K, LLVMValueRef lda,
                               LLVMValueRef ldb, LLVMValueRef ldc, LLVMValueRef alpha, LLVMValueRef beta) {
  const int R = sh->rows;
  LLVMValueRef brow[NC_SKINNY_MAX];
  for (int c = 0; c < ncol; c++) brow[c] = nc_fptr(g, B, nc_mul(g, nc_add(g, j0, c64(g, c)), ldb));
  LLVMValueRef mfull = nc_sub(g, M, LLVMBuildSRem(g->b, M, c64(g, R), "")), zero = c64(g, 0);
  // Full blocks prefetch the next block (ncol rows on), each of its rows
  // during one row group: row c in group c % ngroups (other groups prefetch
  // in place, a no-op). Spread so, the next block's lines are requested
  // evenly over the block's time; all of them in the first group (before
  // 2026-11-27) was a burst that the rest of the block left idle: the M = 16
  // d4 lm_head with weights from DRAM ran 59 GFLOP/s instead of 86-90 (2
  // threads, Zen 3; docs/performance.md). With no full group, the 1..R-1
  // rows left prefetch every row.
  LLVMValueRef pfn = ncol > 1 ? nc_mul(g, c64(g, ncol), ldb) : NULL, pf[NC_SKINNY_MAX];
  LLVMValueRef ngr = LLVMBuildSDiv(g->b, mfull, c64(g, R), "");
  ngr = LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSGT, ngr, zero, ""), ngr, c64(g, 1), "");  // >= 1
  nc_loop Lm;
  LLVMValueRef m = nc_loop_begin(g, &Lm, "smr", zero, mfull, c64(g, R));
  LLVMValueRef grp = LLVMBuildSDiv(g->b, m, c64(g, R), "");
  for (int c = 0; c < ncol && pfn; c++) {
    LLVMValueRef mine = LLVMBuildICmp(g->b, LLVMIntEQ, grp, LLVMBuildSRem(g->b, c64(g, c), ngr, ""), "");
    pf[c] = LLVMBuildSelect(g->b, mine, pfn, zero, "");
  }
  nc_skinny_tb_rows(g, sh, ncol, R, m, j0, A, brow, C, K, lda, ldc, alpha, beta, pfn ? pf : NULL);
  nc_loop_end(g, &Lm);
  LLVMValueRef rem = nc_sub(g, M, mfull);
  for (int c = 0; c < ncol && pfn; c++)
    pf[c] = LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, mfull, zero, ""), pfn, zero, "");
  for (int r = 1; r < R; r++) {
    nc_if f;
    nc_if_begin(g, &f, LLVMBuildICmp(g->b, LLVMIntEQ, rem, c64(g, r), ""));
    nc_skinny_tb_rows(g, sh, ncol, r, mfull, j0, A, brow, C, K, lda, ldc, alpha, beta, pfn ? pf : NULL);
    nc_if_else(g, &f);
    nc_if_end(g, &f);
  }
}

// !tb: columns j0..j0+nv*VW (nv > 0), or the single column j0 (nv == 0), B stored (K,N).
static void nc_skinny_nn_block(nc_gg *g, int nv, LLVMValueRef j0, LLVMValueRef A, LLVMValueRef B, LLVMValueRef C,
                               LLVMValueRef M, LLVMValueRef K, LLVMValueRef lda, LLVMValueRef ldb, LLVMValueRef ldc,
                               LLVMValueRef alpha, LLVMValueRef beta) {
  const int VW = g->k->vw;
  LLVMTypeRef ty = nv ? g->vec : g->f32;
  int na = nv ? nv : 1;
  LLVMValueRef acc[8];
  for (int v = 0; v < na; v++) acc[v] = nc_var(g, ty, "nacc", NULL);
  nc_loop Lm, Lk;
  LLVMValueRef m = nc_loop_begin(g, &Lm, "nm", c64(g, 0), M, c64(g, 1));
  LLVMValueRef arow = nc_fptr(g, A, nc_mul(g, m, lda));
  for (int v = 0; v < na; v++) LLVMBuildStore(g->b, LLVMConstNull(ty), acc[v]);
  LLVMValueRef k = nc_loop_begin(g, &Lk, "nk", c64(g, 0), K, c64(g, 1));
  LLVMValueRef a = nc_loadf(g, nc_fptr(g, arow, k));
  LLVMValueRef bp = nc_fptr(g, B, nc_add(g, nc_mul(g, k, ldb), j0));
  if (nv) {
    LLVMValueRef av = nc_splat(g, a);
    for (int v = 0; v < nv; v++)
      LLVMBuildStore(g->b, nc_fmav(g, av, nc_loadv(g, nc_fptr(g, bp, c64(g, v * VW))), LLVMBuildLoad2(g->b, ty, acc[v], "")),
                     acc[v]);
  } else {
    LLVMBuildStore(g->b, nc_fmaf(g, a, nc_loadf(g, bp), nc_loadf(g, acc[0])), acc[0]);
  }
  nc_loop_end(g, &Lk);
  LLVMValueRef cp = nc_fptr(g, C, nc_add(g, nc_mul(g, m, ldc), j0));
  for (int v = 0; v < na; v++)
    nc_store_ab(g, LLVMBuildLoad2(g->b, ty, acc[v], ""), nc_fptr(g, cp, c64(g, v * VW)), alpha, beta, nv > 0);
  nc_loop_end(g, &Lm);
}

// !tb: columns of C per block, 32 (2 vectors on AVX-512, 4 on AVX2): one
// independent FMA chain per vector, k by k (4 chains hide the FMA latency
// better than AVX2's former 2).
#define NC_GEMM_SKINNY_NN_COLS 32

static LLVMValueRef nc_emit_skinny(nc_gg *g, const char *name) {
  LLVMTypeRef ps[20] = {g->ptr, g->ptr, g->ptr};
  for (int i = 3; i < 13; i++) ps[i] = g->i64;
  ps[13] = ps[14] = g->f32;
  for (int i = 15; i < 20; i++) ps[i] = g->i64;  // t, T, E - C, D - C, relu2
  const int np = 20;
  LLVMValueRef fn = nc_begin_fn(g, name, ps, (unsigned)np, true);
  LLVMValueRef P[20];
  for (int i = 0; i < np; i++) P[i] = LLVMGetParam(fn, (unsigned)i);
  g->epi_eoff = P[17];
  g->epi_doff = P[18];
  g->epi_relu2 = LLVMBuildICmp(g->b, LLVMIntNE, P[19], c64(g, 0), "");
  LLVMValueRef A = P[0], B = P[1], C = P[2], M = P[3], N = P[4], K = P[5], lda = P[6], ldb = P[7], ldc = P[8];
  LLVMValueRef batch = P[9], sa = P[10], sb = P[11], sc = P[12], alpha = P[13], beta = P[14], t = P[15], T = P[16];
  const nc_skinny_shape sh = nc_skinny_shape_for(g->k->vw);
  const int nnv = NC_GEMM_SKINNY_NN_COLS / g->k->vw > 0 ? NC_GEMM_SKINNY_NN_COLS / g->k->vw : 1;
  const int unit = g->s->tb ? sh.cols : nnv * g->k->vw;
  LLVMValueRef bsplit = LLVMBuildICmp(g->b, LLVMIntSGE, batch, T, "");
  LLVMValueRef b0, b1, n0, n1, zero = c64(g, 0);
  nc_split(g, batch, 1, t, T, &b0, &b1);
  nc_split(g, N, unit, t, T, &n0, &n1);
  b0 = LLVMBuildSelect(g->b, bsplit, b0, zero, "");
  b1 = LLVMBuildSelect(g->b, bsplit, b1, batch, "");
  n0 = LLVMBuildSelect(g->b, bsplit, zero, n0, "");
  n1 = LLVMBuildSelect(g->b, bsplit, N, n1, "");
  LLVMValueRef nfull = nc_add(g, n0, nc_mul(g, LLVMBuildSDiv(g->b, nc_sub(g, n1, n0), c64(g, unit), ""), c64(g, unit)));
  nc_loop Lb, Lj;
  LLVMValueRef bi = nc_loop_begin(g, &Lb, "sb", b0, b1, c64(g, 1));
  LLVMValueRef Ab = nc_fptr(g, A, nc_mul(g, bi, sa));
  LLVMValueRef Bb = nc_fptr(g, B, nc_mul(g, bi, sb));
  LLVMValueRef Cb = nc_fptr(g, C, nc_mul(g, bi, sc));
  LLVMValueRef j = nc_loop_begin(g, &Lj, "sj", n0, nfull, c64(g, unit));
  if (g->s->tb) {
    // M = 1 (batch-1 decode): the block's weight rows one after another, so
    // each thread reads one sequential stream (its rows are contiguous) and
    // issues no software prefetch; rows read side by side are several short
    // streams. With the weights in huge pages (nc_session_pack) the d8 step
    // took 10-13 % less time on the Zen 3 VM (docs/performance.md). Each row
    // sums in the same order as in a block, so results are bit-identical.
    nc_if f1;
    nc_if_begin(g, &f1, LLVMBuildICmp(g->b, LLVMIntEQ, M, c64(g, 1), ""));
    for (int c = 0; c < sh.cols; c++)
      nc_skinny_tb_block(g, &sh, 1, nc_add(g, j, c64(g, c)), Ab, Bb, Cb, M, K, lda, ldb, ldc, alpha, beta);
    nc_if_else(g, &f1);
    nc_skinny_tb_block(g, &sh, sh.cols, j, Ab, Bb, Cb, M, K, lda, ldb, ldc, alpha, beta);
    nc_if_end(g, &f1);
  } else {
    nc_skinny_nn_block(g, nnv, j, Ab, Bb, Cb, M, K, lda, ldb, ldc, alpha, beta);
  }
  nc_loop_end(g, &Lj);
  j = nc_loop_begin(g, &Lj, "sjt", nfull, n1, c64(g, 1));
  if (g->s->tb) nc_skinny_tb_block(g, &sh, 1, j, Ab, Bb, Cb, M, K, lda, ldb, ldc, alpha, beta);
  else nc_skinny_nn_block(g, 0, j, Ab, Bb, Cb, M, K, lda, ldb, ldc, alpha, beta);
  nc_loop_end(g, &Lj);
  nc_loop_end(g, &Lb);
  LLVMBuildRetVoid(g->b);
  return fn;
}

// ---- driver -------------------------------------------------------------------
// What the tiles of one packed A block (mcur x kc, rows ic..) against one
// packed B panel (kc x ncur, columns jc.., depth pc..) need.
typedef struct {
  LLVMValueRef Ap, Bp, Cb, ldc, ic, jc, pc, kc, mcur, ncur, K, alpha, beta, relu2, doff, eoff;
  LLVMValueRef nsym;  // i1: not symmetric (every tile); else tiles strictly above the diagonal are skipped
} nc_tiles;

// The micro-kernel over the block's MR x NR tiles (nc_gemm_ir_tile_loops). beta
// applies on the first K block (pc == 0), E is read there, ReLU^2 on the last.
static void nc_emit_tiles(nc_gg *g, LLVMValueRef uk, const nc_tiles *t) {
  LLVMValueRef zero = c64(g, 0);
  LLVMValueRef first = LLVMBuildICmp(g->b, LLVMIntEQ, t->pc, zero, "");
  LLVMValueRef beff = LLVMBuildSelect(g->b, first, t->beta, cf(g, 1.0), "");
  LLVMValueRef epi = LLVMBuildAnd(
      g->b, t->relu2, LLVMBuildZExt(g->b, LLVMBuildICmp(g->b, LLVMIntSGE, nc_add(g, t->pc, t->kc), t->K, ""), g->i64, ""), "");
  LLVMValueRef loff = LLVMBuildSelect(g->b, first, t->eoff, zero, "");
  nc_gemm_ir_tiles tl = {.Ap = t->Ap, .Bp = t->Bp, .Cb = t->Cb, .ldc = t->ldc, .ic = t->ic, .jc = t->jc, .kd = t->kc,
                         .mcur = t->mcur, .ncur = t->ncur, .alpha = t->alpha, .beff = beff, .extra = {epi, t->doff, loff},
                         .nsym = t->nsym};
  nc_gemm_ir_tile_loops(g, uk, &tl);
}

// The dynamic split (args.sync, gemm.h): units (batch item, NC column block, KC
// depth block, MC row block), numbered in that order, claimed one at a time
// from the counter sync[0] by whichever thread is free. Unit (b, jc, pc, ic)
// waits until its C block's flag sync[1 + (b * njc + jc) * nic + ic] says that
// the block's earlier K blocks (pc of them) are done, runs, and then sets it to
// pc + 1: only the K blocks of one C block are ordered, so every C block is an
// independent chain. A thread packs its B panel again only when its unit's
// (b, jc, pc) differs from the last one's.
static void nc_emit_dynamic(nc_gg *g, LLVMValueRef uk, LLVMValueRef pa, LLVMValueRef pb, LLVMValueRef sync, const nc_tiles *base,
                            LLVMValueRef A, LLVMValueRef B, LLVMValueRef M, LLVMValueRef N, LLVMValueRef lda,
                            LLVMValueRef ldb, LLVMValueRef batch, LLVMValueRef sa, LLVMValueRef sb, LLVMValueRef sc,
                            LLVMValueRef kend) {
  const nc_gemm_knobs *k = g->k;
  LLVMValueRef one = c64(g, 1);
  LLVMValueRef nic = LLVMBuildSDiv(g->b, nc_add(g, M, c64(g, k->mc - 1)), c64(g, k->mc), "nic");
  LLVMValueRef npc = LLVMBuildSDiv(g->b, nc_add(g, kend, c64(g, k->kc - 1)), c64(g, k->kc), "npc");
  LLVMValueRef njc = LLVMBuildSDiv(g->b, nc_add(g, N, c64(g, k->nc - 1)), c64(g, k->nc), "njc");
  LLVMValueRef total = nc_mul(g, nc_mul(g, nc_mul(g, batch, njc), npc), nic);
  LLVMValueRef packed = nc_var(g, g->i64, "packed", c64(g, -1));  // (b, jc, pc) of the B panel in Bp
  LLVMBasicBlockRef head = nc_block(g, "claim"), body = nc_block(g, "unit"), wait = nc_block(g, "wait"),
                    run = nc_block(g, "run"), out = nc_block(g, "dyn_done");
  LLVMBuildBr(g->b, head);
  LLVMPositionBuilderAtEnd(g->b, head);
  LLVMValueRef u = LLVMBuildAtomicRMW(g->b, LLVMAtomicRMWBinOpAdd, sync, one, LLVMAtomicOrderingMonotonic, 0);
  LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, u, total, ""), body, out);
  LLVMPositionBuilderAtEnd(g->b, body);
  LLVMValueRef ici = LLVMBuildSRem(g->b, u, nic, ""), r = LLVMBuildSDiv(g->b, u, nic, "");  // r: (b, jc, pc)
  LLVMValueRef pci = LLVMBuildSRem(g->b, r, npc, ""), r2 = LLVMBuildSDiv(g->b, r, npc, "");
  LLVMValueRef jci = LLVMBuildSRem(g->b, r2, njc, ""), bi = LLVMBuildSDiv(g->b, r2, njc, "");
  LLVMValueRef step = pci;  // this C block's units before this one (its earlier K blocks)
  nc_tiles t = *base;
  t.ic = nc_mul(g, ici, c64(g, k->mc));
  t.jc = nc_mul(g, jci, c64(g, k->nc));
  t.pc = nc_mul(g, pci, c64(g, k->kc));
  t.kc = nc_min(g, c64(g, k->kc), nc_sub(g, t.K, t.pc));
  t.mcur = nc_min(g, c64(g, k->mc), nc_sub(g, M, t.ic));
  t.ncur = nc_min(g, c64(g, k->nc), nc_sub(g, N, t.jc));
  LLVMValueRef Ab = nc_fptr(g, A, nc_mul(g, bi, sa));
  LLVMValueRef Bb = nc_fptr(g, B, nc_mul(g, bi, sb));
  t.Cb = nc_fptr(g, base->Cb, nc_mul(g, bi, sc));
  nc_if fp;
  nc_if_begin(g, &fp, LLVMBuildICmp(g->b, LLVMIntNE, LLVMBuildLoad2(g->b, g->i64, packed, ""), r, ""));
  LLVMValueRef pbargs[] = {t.Bp, Bb, ldb, t.pc, t.kc, t.jc, t.ncur};
  nc_call(g, pb, pbargs, 7);
  LLVMBuildStore(g->b, r, packed);
  nc_if_else(g, &fp);
  nc_if_end(g, &fp);
  LLVMValueRef tile = nc_add(g, nc_mul(g, nc_add(g, nc_mul(g, bi, njc), jci), nic), ici);  // (b, jc, ic)
  LLVMValueRef flag = LLVMBuildInBoundsGEP2(g->b, g->i64, sync, (LLVMValueRef[]){nc_add(g, tile, one)}, 1, "");
  LLVMBuildBr(g->b, wait);
  LLVMPositionBuilderAtEnd(g->b, wait);  // the earlier K blocks of these C tiles, if another thread still runs one
  LLVMValueRef fv = LLVMBuildLoad2(g->b, g->i64, flag, "");
  LLVMSetOrdering(fv, LLVMAtomicOrderingAcquire);
  LLVMSetAlignment(fv, 8);
  // spinning: x86's pause between reads (lets a sibling hyperthread run, eases the bus)
  unsigned pause_id = LLVMLookupIntrinsicID("llvm.x86.sse2.pause", 19);
  LLVMBasicBlockRef spin = pause_id ? nc_block(g, "spin") : wait;
  LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSGE, fv, step, ""), run, spin);
  if (pause_id) {
    LLVMPositionBuilderAtEnd(g->b, spin);
    LLVMModuleRef mod = LLVMGetGlobalParent(LLVMGetBasicBlockParent(spin));
    LLVMBuildCall2(g->b, LLVMIntrinsicGetType(g->ctx, pause_id, NULL, 0), LLVMGetIntrinsicDeclaration(mod, pause_id, NULL, 0), NULL, 0, "");
    LLVMBuildBr(g->b, wait);
  }
  LLVMPositionBuilderAtEnd(g->b, run);
  LLVMValueRef paargs[] = {t.Ap, Ab, lda, t.ic, t.mcur, t.pc, t.kc};
  nc_call(g, pa, paargs, 7);
  nc_emit_tiles(g, uk, &t);
  LLVMValueRef st = LLVMBuildStore(g->b, nc_add(g, step, one), flag);
  LLVMSetOrdering(st, LLVMAtomicOrderingRelease);
  LLVMSetAlignment(st, 8);
  LLVMBuildBr(g->b, head);
  LLVMPositionBuilderAtEnd(g->b, out);
}

static void nc_emit_driver(nc_gg *g, LLVMValueRef uk, LLVMValueRef pa, LLVMValueRef pb, LLVMValueRef sk) {
  const nc_gemm_knobs *k = g->k;
  nc_gemm_drv dr;
  nc_gemm_ir_driver_begin(g, &dr);
  LLVMValueRef t = dr.t, T = dr.T, A = dr.A, B = dr.B, C = dr.C, M = dr.M, N = dr.N, K = dr.K;
  LLVMValueRef lda = dr.lda, ldb = dr.ldb, ldc = dr.ldc, batch = dr.batch, sa = dr.sa, sb = dr.sb, sc = dr.sc;
  LLVMValueRef alpha = dr.alpha, beta = dr.beta;
#define NC_F(field, ty) nc_arg(g, dr.args, offsetof(nc_gemm_args, field), ty)
  // The run-time switches (gemm.h): sym, relu2 (D - C in elements, 0 when d is
  // NULL: relu(C)^2 over C) and the addend (E - C, 0 when e is NULL: the plain GEMM).
  LLVMValueRef sym = LLVMBuildICmp(g->b, LLVMIntNE, NC_F(sym, g->i32), c32(g, 0), "sym");
  LLVMValueRef relu2 = LLVMBuildZExt(g->b, LLVMBuildICmp(g->b, LLVMIntNE, NC_F(relu2, g->i32), c32(g, 0), ""), g->i64, "relu2");
  LLVMValueRef D = NC_F(d, g->ptr), E = NC_F(e, g->ptr);
  LLVMValueRef doff = LLVMBuildSelect(g->b, LLVMBuildIsNull(g->b, D, ""), c64(g, 0), LLVMBuildPtrDiff2(g->b, g->f32, D, C, ""), "");
  LLVMValueRef eoff = LLVMBuildSelect(g->b, LLVMBuildIsNull(g->b, E, ""), c64(g, 0), LLVMBuildPtrDiff2(g->b, g->f32, E, C, ""), "");
  LLVMValueRef sync = NC_F(sync, g->ptr);
#undef NC_F
  // Small M (decode): the skinny path, no packing (sk is NULL with ta).
  nc_if fsk = {0};
  if (sk) {
    nc_if_begin(g, &fsk, LLVMBuildICmp(g->b, LLVMIntSLE, M, c64(g, NC_GEMM_SKINNY_M), ""));
    LLVMValueRef skargs[20] = {A, B, C, M, N, K, lda, ldb, ldc, batch, sa, sb, sc, alpha, beta, t, T, eoff, doff, relu2};
    nc_call(g, sk, skargs, 20);
    nc_if_else(g, &fsk);
  }
  LLVMValueRef Ap, Bp;
  nc_gemm_ir_workspace(g, &dr, (int64_t)(nc_gemm_workspace_size(k, 1) / sizeof(float)), (int64_t)k->mc * k->kc, &Ap, &Bp);

  // Work split (see gemm.h): whole batch items, else M or N ranges.
  nc_gemm_split sp;
  nc_gemm_ir_split_begin(g, &dr, &sp);
  LLVMValueRef zero = c64(g, 0);
  {  // sym: rows of a lower triangle: thread t gets [M sqrt(t/T), M sqrt((t+1)/T)) in MR units
    LLVMTypeRef f64 = LLVMDoubleTypeInContext(g->ctx);
    unsigned sq = LLVMLookupIntrinsicID("llvm.sqrt", 9);
    LLVMValueRef sqf = LLVMGetIntrinsicDeclaration(g->mod, sq, &f64, 1);
    LLVMTypeRef sqt = LLVMIntrinsicGetType(g->ctx, sq, &f64, 1);
    LLVMValueRef units = LLVMBuildSDiv(g->b, nc_add(g, M, c64(g, k->mr - 1)), c64(g, k->mr), "");
    LLVMValueRef fu = LLVMBuildSIToFP(g->b, units, f64, ""), fT = LLVMBuildSIToFP(g->b, T, f64, "");
    LLVMValueRef bound[2];
    for (int e = 0; e < 2; e++) {
      LLVMValueRef q = LLVMBuildFDiv(g->b, LLVMBuildSIToFP(g->b, nc_add(g, t, c64(g, e)), f64, ""), fT, "");
      LLVMValueRef r = LLVMBuildCall2(g->b, sqt, sqf, &q, 1, "");
      LLVMValueRef u = LLVMBuildFPToSI(g->b, LLVMBuildFMul(g->b, fu, r, ""), g->i64, "");
      bound[e] = nc_min(g, nc_mul(g, nc_min(g, u, units), c64(g, k->mr)), M);
    }
    sp.m0 = LLVMBuildSelect(g->b, sym, bound[0], sp.m0, "");
    bound[1] = LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, nc_add(g, t, c64(g, 1)), T, ""), M, bound[1], "");
    sp.m1 = LLVMBuildSelect(g->b, sym, bound[1], sp.m1, "");
  }
  LLVMValueRef kend = nc_gemm_ir_split_end(g, &dr, &sp);
  LLVMValueRef b0 = sp.b0, b1 = sp.b1, m0 = sp.m0, m1 = sp.m1, n0 = sp.n0, n1 = sp.n1;

  LLVMValueRef nsym = LLVMBuildNot(g->b, sym, "");
  nc_if fdyn;
  nc_if_begin(g, &fdyn, LLVMBuildAnd(g->b, LLVMBuildIsNotNull(g->b, sync, ""), nsym, ""));
  {
    nc_tiles tb = {Ap, Bp, C, ldc, zero, zero, zero, zero, zero, zero, K, alpha, beta, relu2, doff, eoff, nsym};
    nc_emit_dynamic(g, uk, pa, pb, sync, &tb, A, B, M, N, lda, ldb, batch, sa, sb, sc, kend);
  }
  nc_if_else(g, &fdyn);
  nc_loop Lb, Ljc, Lpc, Lic;
  LLVMValueRef bi = nc_loop_begin(g, &Lb, "b", b0, b1, c64(g, 1));
  LLVMValueRef Ab = nc_fptr(g, A, nc_mul(g, bi, sa));
  LLVMValueRef Bb = nc_fptr(g, B, nc_mul(g, bi, sb));
  LLVMValueRef Cb = nc_fptr(g, C, nc_mul(g, bi, sc));
  LLVMValueRef jc = nc_loop_begin(g, &Ljc, "jc", n0, n1, c64(g, k->nc));
  // sym: a tile is skipped when its first column >= its first row + MR (all
  // of it strictly above the diagonal); row tiles are MR-aligned, column
  // tiles NR-aligned from 0, so the mirror below knows exactly which.
  LLVMValueRef mr_c = c64(g, k->mr);
  nc_if fjc, fic;
  LLVMValueRef m1r = nc_mul(g, LLVMBuildSDiv(g->b, nc_add(g, m1, c64(g, k->mr - 1)), mr_c, ""), mr_c);
  nc_if_begin(g, &fjc, LLVMBuildOr(g->b, nsym, LLVMBuildICmp(g->b, LLVMIntSLT, jc, m1r, ""), ""));
  LLVMValueRef ncur = nc_min(g, c64(g, k->nc), nc_sub(g, n1, jc));
  LLVMValueRef pc = nc_loop_begin(g, &Lpc, "pc", zero, kend, c64(g, k->kc));
  LLVMValueRef kc = nc_min(g, c64(g, k->kc), nc_sub(g, K, pc));
  LLVMValueRef pbargs[] = {Bp, Bb, ldb, pc, kc, jc, ncur};
  nc_call(g, pb, pbargs, 7);
  LLVMValueRef ic = nc_loop_begin(g, &Lic, "ic", m0, m1, c64(g, k->mc));
  LLVMValueRef mcur = nc_min(g, c64(g, k->mc), nc_sub(g, m1, ic));
  LLVMValueRef rend = nc_add(g, ic, nc_mul(g, LLVMBuildSDiv(g->b, nc_add(g, mcur, c64(g, k->mr - 1)), mr_c, ""), mr_c));
  nc_if_begin(g, &fic, LLVMBuildOr(g->b, nsym, LLVMBuildICmp(g->b, LLVMIntSLT, jc, rend, ""), ""));
  LLVMValueRef paargs[] = {Ap, Ab, lda, ic, mcur, pc, kc};
  nc_call(g, pa, paargs, 7);
  nc_tiles tl = {Ap, Bp, Cb, ldc, ic, jc, pc, kc, mcur, ncur, K, alpha, beta, relu2, doff, eoff, nsym};
  nc_emit_tiles(g, uk, &tl);
  nc_if_else(g, &fic), nc_if_end(g, &fic);
  nc_loop_end(g, &Lic);
  nc_loop_end(g, &Lpc);
  nc_if_else(g, &fjc), nc_if_end(g, &fjc);
  nc_loop_end(g, &Ljc);
  {  // sym: mirror C[j][i] = C[i][j] for the skipped tiles, by the owner of row i
    nc_if fm;
    nc_if_begin(g, &fm, sym);
    nc_loop Lmi, Lmj;
    LLVMValueRef i = nc_loop_begin(g, &Lmi, "mi", m0, m1, c64(g, 1));
    LLVMValueRef cs = nc_mul(g, LLVMBuildSDiv(g->b, i, c64(g, k->nr), ""), c64(g, k->nr));
    LLVMValueRef jmax = nc_mul(g, LLVMBuildSDiv(g->b, cs, mr_c, ""), mr_c);
    LLVMValueRef j = nc_loop_begin(g, &Lmj, "mj", zero, jmax, c64(g, 1));
    LLVMValueRef v = nc_loadf(g, nc_fptr(g, Cb, nc_add(g, nc_mul(g, i, ldc), j)));
    LLVMBuildStore(g->b, v, nc_fptr(g, Cb, nc_add(g, nc_mul(g, j, ldc), i)));
    nc_loop_end_cold(g, &Lmj);
    nc_loop_end_cold(g, &Lmi);
    nc_if_else(g, &fm);
    nc_if_end(g, &fm);
  }
  nc_loop_end(g, &Lb);
  nc_if_end(g, &fdyn);
  if (sk) nc_if_end(g, &fsk);
  LLVMBuildRetVoid(g->b);
}

nc_status nc_gemm_emit(LLVMModuleRef m, const nc_gemm_spec *spec) {
  if (!spec || !spec->name || !spec->name[0])
    return nc_errorf(NC_E_INVALID, "nc_gemm_emit: spec needs a function name");
  NC_TRY(nc_status_prefix(nc_gemm_knobs_check(&spec->knobs), "gemm '%s': ", spec->name));
  if (LLVMGetNamedFunction(m, spec->name))
    return nc_errorf(NC_E_INVALID, "nc_gemm_emit: module already has a function '%s'", spec->name);
  nc_gg g;
  nc_gemm_ir_init(&g, m, spec, spec->knobs.vw, 0);
  g.ops = &nc_f32_ops;

  // The helpers depend on ta or tb and the knobs only: named after those, each
  // is emitted once per module and shared by the GEMMs that need it.
  const nc_gemm_knobs *k = &spec->knobs;
  char kn[96], name[160];
  snprintf(kn, sizeof kn, "v%d.%dx%d.k%d.m%d.n%d.u%d.o%d.p%d", k->vw, k->mr, k->nr, k->kc, k->mc, k->nc, k->ku, k->order,
           k->prefetch_b);
  LLVMValueRef (*emit[4])(nc_gg *, const char *) = {nc_gemm_ir_ukernel, nc_emit_pack_a, nc_emit_pack_b, nc_emit_skinny};
  static const char *const what[4] = {"ukernel.a", "pack_a.a", "pack_b.b", "skinny.b"};
  LLVMValueRef fns[4] = {NULL, NULL, NULL, NULL};
  for (int h = 0; h < 4; h++) {
    if (h == 3 && spec->ta) continue;  // the skinny path is for !ta only
    snprintf(name, sizeof name, "nc_gemm.%s%d.%s", what[h], h < 2 ? spec->ta : spec->tb, kn);
    fns[h] = LLVMGetNamedFunction(m, name);
    if (!fns[h]) fns[h] = emit[h](&g, name);
  }
  nc_emit_driver(&g, fns[0], fns[1], fns[2], fns[3]);
  LLVMDisposeBuilder(g.b);
  return NC_OK;
}

static nc_status nc_gemm_emit_for(LLVMModuleRef m, const nc_host_cpu *cpu, const nc_gemm_spec *spec) {
  (void)cpu;  // the knobs say the vector width
  return nc_gemm_emit(m, spec);
}

nc_status nc_gemm_compile(nc_jit *jit, const nc_gemm_spec *spec, nc_gemm_fn *out) {
  return nc_gemm_ir_compile(jit, spec, "gemm", nc_gemm_emit_for, out);
}

#else  // !NC_HAVE_LLVM
nc_status nc_gemm_compile(nc_jit *jit, const nc_gemm_spec *spec, nc_gemm_fn *out) {
  (void)jit;
  (void)spec;
  *out = NULL;
  return nc_errorf(NC_E_UNSUPPORTED, "nc_gemm_compile: this build has no LLVM");
}
#endif
