// The OpenCL device's template launches: the tensor-core GEMM (pack, GEMM, split-K
// sum), scatter_add and flash attention (see runtime/ocl_impl.h).
#include <stdlib.h>
#include <string.h>

#include "codegen/ocl_scatter.h"
#include "runtime/kir_eval.h"
#include "runtime/ocl_impl.h"

static nc_status nc_oc_scratch(nc_ocl *c, cl_mem *buf, size_t *have, size_t bytes, const char *what) {
  if (*buf && *have >= bytes) return NC_OK;
  if (*buf) clReleaseMemObject(*buf);  // commands already enqueued keep it alive
  *buf = NULL;
  *have = 0;
  size_t want = bytes;
  cl_int err;
  *buf = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, want, NULL, &err);
  if (!*buf || err != CL_SUCCESS) {
    *buf = NULL;
    return nc_errorf(NC_E_NOMEM, "OpenCL: cannot allocate %zu bytes on %s for the %s (%s)", bytes, c->dev.d.name, what, nc_oc_errname(err));
  }
  *have = want;
  return NC_OK;
}

static int64_t nc_oc_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

#define NC_OC_FLOP_PER_BYTE 180.0  // the split-K model's GEMM flops per byte of memory traffic (nc_ocl_splitk_choose)

int64_t nc_ocl_splitk_choose(int64_t tiles, int64_t nkt, int ncu, int64_t mn, int64_t tile_macs) {
  int64_t slots = 2 * (int64_t)(ncu > 0 ? ncu : 1);  // two work-groups per compute unit (the default rings)
  if (tiles >= slots || nkt < 8) return 1;
  // the split sum's traffic per split (M*N f32 written, then read) in waves of k-steps: NC_OC_FLOP_PER_BYTE
  // flops of the GEMM take as long as one byte of memory traffic (H100: ~450 TFLOP/s over ~2.5 TB/s)
  double wave = (double)slots * 2.0 * (double)tile_macs, per_split = (double)mn * 8.0 * NC_OC_FLOP_PER_BYTE / wave;
  int64_t best = 1, smax = nkt / 4 < 16 ? nkt / 4 : 16;
  double best_cost = 1e300;
  for (int64_t s = 1; s <= smax; s++) {
    int64_t kps = (nkt + s - 1) / s;
    if ((s - 1) * kps >= nkt) continue;  // an empty split
    double cost = (double)((tiles * s + slots - 1) / slots) * (double)kps + (s > 1 ? (double)s * per_split : 0.0);
    if (cost < best_cost - 1e-9) best = s, best_cost = cost;
  }
  return best;
}

// The pipelined bf16 GEMM: op(A) (M x K) and op(B)^T (N x K) as bf16, k contiguous,
// then the GEMM (codegen/ocl_emit.h), split over K when the tiles alone would leave
// compute units idle (then the split sum). An operand over a bf16 buffer whose k is
// contiguous (A not transposed, B transposed) and whose rows are 16-byte aligned is
// read in place (rows past M or N and k past K zero-filled by the GEMM's copies); so is,
// by the wgmma kernel's MN-major variants (NC_OCL_GEMMP_AMN / _BMN, where the program
// has them), one whose m (n) is contiguous: A transposed, B not, rows of M (N) 16-byte
// aligned (M (N), the offset and the batch stride multiples of 8, any K);
// any other is packed first (nc_pack_k / nc_pack_t from f32, rounding; nc_pack_kh /
// nc_pack_th from bf16, copying), zero-padded to the block tile and k-step.
// v: batch, M, N, K, ta, tb, sa, sb, beta (the call's arguments).
nc_status nc_oc_launch_packed(nc_ocl *c, int q, const nc_plan_kernel *pk, const int64_t *v, int variant, cl_event *evp) {
  const nc_kstmt *s = &pk->k.s[pk->k.body];
  const nc_ocl_knobs *kn = &c->knobs;
  int64_t batch = v[0], M = v[1], N = v[2], K = v[3], sa = v[6], sb = v[7];
  cl_kernel *pv = c->gemm_pv;  // the kernel by variant flags: the default knobs', or a tuned set's for exactly this shape
  for (int i = 0; i < c->ntuned && c->tuned_pv; i++) {
    const nc_ocl_tuned_gemm *t = &c->tuned[i];
    if (t->variant == (variant & 3) && t->batch == batch && t->m == M && t->n == N && t->k == K) {
      kn = &t->knobs, pv = c->tuned_pv[i], c->tuned_calls++;
      break;
    }
  }
  bool ta = variant & 2, tb = variant & 1, bf = variant & NC_OCL_GEMM_BF16;
  // Kp: a multiple of the k-step and of nc_pack_t's 32-wide tiles (the wgmma kernel's k-step may be 16)
  int64_t Mp = nc_oc_up(M, kn->tc_bm), Np = nc_oc_up(N, kn->tc_bn), Kp = nc_oc_up(K > 0 ? K : 1, kn->tc_bk > 32 ? kn->tc_bk : 32);
  cl_mem bufA = c->view[pk->buf_node[s->cbufs[0]]], bufB = c->view[pk->buf_node[s->cbufs[1]]], bufC = c->view[pk->buf_node[s->cbufs[2]]];
  cl_long offA = c->off[pk->buf_node[s->cbufs[0]]], offB = c->off[pk->buf_node[s->cbufs[1]]];
  cl_long offC = c->off[pk->buf_node[s->cbufs[2]]];
  // in place: bf16, k contiguous, every row start 16-byte aligned (offset, K and the batch stride multiples of 8)
  bool al = bf && !c->direct_off && K % 8 == 0;
  bool dA = al && !ta && offA % 8 == 0 && sa % 8 == 0, dB = al && tb && offB % 8 == 0 && sb % 8 == 0;
  // MN-major in place (the wgmma kernel's transposed variants): m (n) contiguous, rows of M (N) 16-byte aligned
  bool mA = bf && !c->direct_off && ta && M % 8 == 0 && offA % 8 == 0 && sa % 8 == 0;
  bool mB = bf && !c->direct_off && !tb && N % 8 == 0 && offB % 8 == 0 && sb % 8 == 0;
  int mf = (mA ? NC_OCL_GEMMP_AMN : 0) | (mB ? NC_OCL_GEMMP_BMN : 0);
  if (mf && !pv[mf]) {  // the program has the variants of its forms only (nn: B, tn: A and B, tt: A; wgmma)
    if (mA && mB && pv[NC_OCL_GEMMP_BMN]) mA = false;
    else if (mA && mB && pv[NC_OCL_GEMMP_AMN]) mB = false;
    else mA = mB = false;
  }
  dA |= mA, dB |= mB;
  int64_t ba = sa ? batch : 1, bb = sb ? batch : 1, pa = dA ? 0 : ba * Mp * Kp, pb = dB ? 0 : bb * Np * Kp;
  c->kitems[q] = (dA ? 1 : 0) | (dB ? 2 : 0);
  if (pa + pb) NC_TRY(nc_oc_scratch(c, &c->packed, &c->packed_bytes, (size_t)(pa + pb) * 2, "packed bf16 GEMM operands"));
  int64_t tiles = (Mp / kn->tc_bm) * (Np / kn->tc_bn) * batch, nkt = Kp / kn->tc_bk, splits = 1;
  if (c->splitk_force) splits = c->splitk_force;
  else splits = nc_ocl_splitk_choose(tiles, nkt, c->ncu, M * N * batch, kn->tc_bm * kn->tc_bn * kn->tc_bk);
  if (splits > nkt) splits = nkt;
  if (splits < 1) splits = 1;
  int64_t kt_per = (nkt + splits - 1) / splits;
  splits = (nkt + kt_per - 1) / kt_per;  // no empty split
  if (splits > 1) NC_TRY(nc_oc_scratch(c, &c->partial, &c->partial_bytes, (size_t)(splits * batch * M * N) * 4, "split-K partial sums"));
  cl_int err = CL_SUCCESS;
  bool first = true;
  for (int opd = 0; opd < 2; opd++) {  // op(A) as M x K, op(B)^T as N x K
    if (opd ? dB : dA) continue;
    bool kc = opd ? tb : !ta;          // k contiguous in the source
    cl_kernel kk = kc ? (bf ? c->pack_kh : c->pack_k) : (bf ? c->pack_th : c->pack_t);
    cl_mem X = opd ? bufB : bufA;
    cl_long ox = opd ? offB : offA, sx = opd ? (sb ? sb : 0) : (sa ? sa : 0), R = opd ? N : M, Kd = K, op = opd ? pa : 0;
    cl_long Rp = opd ? Np : Mp, Kpl = Kp;
    size_t nb = (size_t)(opd ? bb : ba);
    cl_uint a = 0;
    err |= clSetKernelArg(kk, a++, sizeof X, &X);
    err |= clSetKernelArg(kk, a++, sizeof ox, &ox);
    err |= clSetKernelArg(kk, a++, sizeof sx, &sx);
    err |= clSetKernelArg(kk, a++, sizeof R, &R);
    err |= clSetKernelArg(kk, a++, sizeof Kd, &Kd);
    err |= clSetKernelArg(kk, a++, sizeof c->packed, &c->packed);
    err |= clSetKernelArg(kk, a++, sizeof op, &op);
    err |= clSetKernelArg(kk, a++, sizeof Rp, &Rp);
    err |= clSetKernelArg(kk, a++, sizeof Kpl, &Kpl);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg(pack)");
    size_t gws[3], lws[3] = {32, 8, 1};
    if (kc) gws[0] = (size_t)(Kp / 8), gws[1] = (size_t)Rp, gws[2] = nb;
    else gws[0] = (size_t)nc_oc_up(Rp, 32), gws[1] = (size_t)(Kp / 32 * 8), gws[2] = nb;
    err = clEnqueueNDRangeKernel(c->q, kk, 3, NULL, gws, kc ? NULL : lws, 0, NULL, evp && first ? &c->ev0[q] : NULL);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel(pack)");
    first = false;
  }
  // the operands as the GEMM reads them: in place (the call's buffer, offset, stride; rows of K) or packed (rows of Kp)
  cl_mem opA = dA ? bufA : c->packed, opB = dB ? bufB : c->packed;
  cl_long Ml = M, Nl = N, Kl = Kp, sal = dA ? sa : sa ? Mp * Kp : 0, sbl = dB ? sb : sb ? Np * Kp : 0;
  cl_long oal = dA ? offA : 0, obl = dB ? offB : pa, ocl = splits > 1 ? 0 : offC, ktp = kt_per;
  cl_long lda = mA ? M : dA ? K : Kp, ldb = mB ? N : dB ? K : Kp, Kv = K;
  cl_int beta = v[8] != 0, spl = (cl_int)splits;
  cl_mem Cout = splits > 1 ? c->partial : bufC;
  // the kernel variant: zero-filled copies when an operand read in place has a partial tile (rows or k),
  // a bf16 C unless the splits' f32 partial sums are written
  bool zf = (dA && (M % kn->tc_bm || K != Kp)) || (dB && (N % kn->tc_bn || K != Kp));
  cl_kernel kk = pv[(zf ? NC_OCL_GEMMP_ZFILL : 0) | (bf && splits == 1 ? NC_OCL_GEMMP_CBF16 : 0) | (mA ? NC_OCL_GEMMP_AMN : 0) |
                            (mB ? NC_OCL_GEMMP_BMN : 0)];
  if (!kk) return nc_errorf(NC_E_INTERNAL, "kernel %s: GEMM kernel variant missing", pk->k.name);
  cl_uint a = 0;
  err |= clSetKernelArg(kk, a++, sizeof opA, &opA);
  err |= clSetKernelArg(kk, a++, sizeof opB, &opB);
  err |= clSetKernelArg(kk, a++, sizeof Cout, &Cout);
  cl_long la[5] = {Ml, Nl, Kl, sal, sbl};
  for (int i = 0; i < 5; i++) err |= clSetKernelArg(kk, a++, sizeof(cl_long), &la[i]);
  err |= clSetKernelArg(kk, a++, sizeof beta, &beta);
  err |= clSetKernelArg(kk, a++, sizeof oal, &oal);
  err |= clSetKernelArg(kk, a++, sizeof obl, &obl);
  err |= clSetKernelArg(kk, a++, sizeof ocl, &ocl);
  err |= clSetKernelArg(kk, a++, sizeof ktp, &ktp);
  err |= clSetKernelArg(kk, a++, sizeof spl, &spl);
  err |= clSetKernelArg(kk, a++, sizeof lda, &lda);
  err |= clSetKernelArg(kk, a++, sizeof ldb, &ldb);
  err |= clSetKernelArg(kk, a++, sizeof Kv, &Kv);
  if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg(gemm_bf16p)");
  size_t lx = kn->tc_wg ? (size_t)(2 * kn->tc_bm) : (size_t)(32 * (kn->tc_bm / kn->tc_wm) * (kn->tc_bn / kn->tc_wn));
  size_t gws[3] = {(size_t)(Np / kn->tc_bn) * lx, (size_t)(Mp / kn->tc_bm), (size_t)(batch * splits)}, lws[3] = {lx, 1, 1};
  cl_event *ge = !evp ? NULL : splits == 1 ? evp : first ? &c->ev0[q] : NULL;
  err = clEnqueueNDRangeKernel(c->q, kk, 3, NULL, gws, lws, 0, NULL, ge);
  if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel(gemm_bf16p)");
  if (splits > 1) {
    cl_long MN = M * N;
    cl_int cb = bf;
    kk = c->splitk_sum;
    a = 0;
    err |= clSetKernelArg(kk, a++, sizeof c->partial, &c->partial);
    err |= clSetKernelArg(kk, a++, sizeof bufC, &bufC);
    err |= clSetKernelArg(kk, a++, sizeof MN, &MN);
    err |= clSetKernelArg(kk, a++, sizeof spl, &spl);
    err |= clSetKernelArg(kk, a++, sizeof beta, &beta);
    err |= clSetKernelArg(kk, a++, sizeof offC, &offC);
    err |= clSetKernelArg(kk, a++, sizeof cb, &cb);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg(splitk_sum)");
    size_t g2[2] = {(size_t)nc_oc_up(MN, 256), (size_t)batch}, l2[2] = {256, 1};
    err = clEnqueueNDRangeKernel(c->q, kk, 2, NULL, g2, l2, 0, NULL, evp);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel(splitk_sum)");
  }
  return NC_OK;
}

// scatter_add (NC_KT_SCATTER_ADD, codegen/ocl_scatter.h): zero out, then one
// work-item per (token, channel) adds its value with a float atomic.
nc_status nc_oc_launch_scatter(nc_ocl *c, int q, const nc_plan_kernel *pk, const int64_t *args, cl_event *evp) {
  const nc_kernel *k = &pk->k;
  const nc_kstmt *s = &k->s[k->body];
  cl_long N = nc_kernel_eval_index(k, s->args[0], args), V = nc_kernel_eval_index(k, s->args[1], args),
          C = nc_kernel_eval_index(k, s->args[2], args);
  if (V <= 0 || C <= 0) return NC_OK;
  cl_mem mb[3];
  cl_long mo[3];
  for (int i = 0; i < 3; i++) mb[i] = c->view[pk->buf_node[s->cbufs[i]]], mo[i] = c->off[pk->buf_node[s->cbufs[i]]];
  cl_float zero = 0.0f;
  cl_int err = clEnqueueFillBuffer(c->q, mb[2], &zero, sizeof zero, (size_t)mo[2] * sizeof(float), (size_t)(V * C) * sizeof(float), 0,
                                   NULL, evp && N > 0 ? &c->ev0[q] : evp);
  if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueFillBuffer(scatter_add)");
  if (N <= 0) return NC_OK;
  cl_kernel kk = c->scatter[c->launch[q].scatter_i64 ? 1 : 0];
  cl_uint ai = 0;
  for (int i = 0; i < 3; i++) {
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &mb[i]);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_long), &mo[i]);
  }
  err |= clSetKernelArg(kk, ai++, sizeof N, &N);
  err |= clSetKernelArg(kk, ai++, sizeof V, &V);
  err |= clSetKernelArg(kk, ai++, sizeof C, &C);
  if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg(scatter_add)");
  size_t g = (size_t)nc_oc_up(N * C, 256), l = 256;
  err = clEnqueueNDRangeKernel(c->q, kk, 1, NULL, &g, &l, 0, NULL, evp);
  if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel(scatter_add)");
  c->kitems[q] = N * C;
  return NC_OK;
}

// The statistics buffer of the forward call that computes node, or NULL; with
// bytes > 0 it is made (or grown) to hold that many.
static nc_status nc_oc_attn_lse(nc_ocl *c, nc_id node, size_t bytes, cl_mem *out) {
  *out = NULL;
  int i = 0;
  while (i < c->nattn_lse && c->attn_lse[i].node != node) i++;
  if (i == c->nattn_lse) {
    if (!bytes) return NC_OK;
    void *na = realloc(c->attn_lse, (size_t)(c->nattn_lse + 1) * sizeof *c->attn_lse);
    if (!na) return nc_errorf(NC_E_NOMEM, "out of memory");
    c->attn_lse = na;
    c->attn_lse[c->nattn_lse++] = (struct nc_oc_lse){.node = node};
  }
  if (bytes) NC_TRY(nc_oc_scratch(c, &c->attn_lse[i].buf, &c->attn_lse[i].bytes, bytes, "attention statistics"));
  *out = c->attn_lse[i].buf;
  return NC_OK;
}

// Flash attention (NC_KT_ATTENTION, codegen/ocl_attn.h): the forward kernel, or
// the backward: statistics (lse, Di) into the scratch (or, when the forward of
// the same inputs stored its logsumexp, only Di = rowsum(dO * O) next to it),
// then dQ and dK/dV.
nc_status nc_oc_launch_attn(nc_ocl *c, int q, const nc_plan_kernel *pk, const int64_t *args, cl_event *evp) {
  const nc_kernel *k = &pk->k;
  const nc_kstmt *s = &k->s[k->body];
  const nc_ocl_launch *L = &c->launch[q];
  int64_t v[10];
  for (int i = 0; i < 10; i++) v[i] = nc_kernel_eval_index(k, s->args[i], args);
  cl_long B = v[0], Tq = v[1], Tk = v[2], Hq = v[3], Hkv = v[4], D = v[5], Dv = v[6], win = v[8];
  cl_int causal = v[7] != 0, mask = (cl_int)v[9];
  cl_float scale = (cl_float)k->x[s->args[10]].fval;
  // arg 11: a forward keeps its logsumexp (1); a backward reads the one forward node link - 1 kept
  int64_t link = s->nargs > 11 ? nc_kernel_eval_index(k, s->args[11], args) : 0;
  if (B <= 0 || Tq <= 0 || Hq <= 0 || Hkv <= 0 || Hq % Hkv) return NC_OK;
  int a = 0;
  while (a < c->nattn && (c->attn[a].dp != L->attn_dp || c->attn[a].dvp != L->attn_dvp)) a++;
  if (a == c->nattn) return nc_errorf(NC_E_INTERNAL, "kernel %s: no attention kernels for head dims %d/%d", k->name, L->attn_dp, L->attn_dvp);
  nc_ocl_attn_blocks bl = c->attn_bl;
  cl_kernel kf = c->attn[a].fwd, kq = c->attn[a].dq, kd = c->attn[a].dkdv;
  for (int j = 0; j < c->attn[a].nft; j++) {  // tuned blocks for exactly this shape (runtime/ocl_tune.h)
    const nc_ocl_flash_shape *fs = &c->attn[a].ft[j].shape;
    if (fs->batch != B || fs->tq != Tq || fs->tk != Tk || fs->hq != Hq || fs->hkv != Hkv || fs->causal != causal || fs->window != win) continue;
    int set = c->attn[a].ft[j].set;
    bl = c->attn[a].ft[j].bl, kf = c->attn[a].tk[set][0], kq = c->attn[a].tk[set][1], kd = c->attn[a].tk[set][2];
    c->attn_tuned_calls++;
    break;
  }
  cl_mem mb[8];
  cl_long mo[8];
  for (int i = 0; i < s->ncbufs && i < 8; i++) mb[i] = c->view[pk->buf_node[s->cbufs[i]]], mo[i] = c->off[pk->buf_node[s->cbufs[i]]];
  cl_long NR = B * Hq * Tq, zero = 0;
  // the statistics: a forward with link stores its rows' logsumexp for the backward;
  // a backward with link finds them there (its last buffer is the forward's O)
  cl_mem lse = NULL;
  if (link && !mask) NC_TRY(nc_oc_attn_lse(c, pk->node, (size_t)(2 * NR) * sizeof(float), &lse));
  if (link && mask && !c->attn_stats_force) {
    NC_TRY(nc_oc_attn_lse(c, (nc_id)(link - 1), 0, &lse));
    size_t have = 0;
    if (lse) clGetMemObjectInfo(lse, CL_MEM_SIZE, sizeof have, &have, NULL);
    if (have < (size_t)(2 * NR) * sizeof(float)) lse = NULL;  // not stored at these sizes: recompute
  }
  bool stats = mask && !lse;  // the backward's statistics pass (a second forward)
  // the bf16 modes read q, k, v (and dO) packed to bf16 rows of the padded head dims
  cl_mem tb[4] = {mb[0], mb[1], mb[2], mb[3]};  // what the kernels read as Q, K, V, dO tiles
  cl_long to[4] = {mo[0], mo[1], mo[2], mo[3]};
  bool first_cmd = true;
  if (c->attn_tc) {
    cl_long rows[4] = {B * Tq * Hq, B * Tk * Hkv, B * Tk * Hkv, B * Tq * Hq}, dm[4] = {D, D, Dv, Dv};
    cl_int dpad[4] = {L->attn_dp, L->attn_dp, L->attn_dvp, L->attn_dvp};
    int npk = mask ? 4 : 3;  // (the statistics pass and dQ, dK/dV read dO packed too)
    cl_long at[4], tot = 0;
    for (int i = 0; i < npk; i++) at[i] = tot, tot += (rows[i] * dpad[i] + 7) / 8 * 8;
    NC_TRY(nc_oc_scratch(c, &c->attn_pk, &c->attn_pk_bytes, (size_t)tot * 2, "bf16 attention operands"));
    for (int i = 0; i < npk; i++) {
      cl_int err0 = CL_SUCCESS;
      cl_uint ai = 0;
      err0 |= clSetKernelArg(c->attn_pack, ai++, sizeof(cl_mem), &mb[i]);
      err0 |= clSetKernelArg(c->attn_pack, ai++, sizeof(cl_long), &mo[i]);
      err0 |= clSetKernelArg(c->attn_pack, ai++, sizeof(cl_mem), &c->attn_pk);
      err0 |= clSetKernelArg(c->attn_pack, ai++, sizeof(cl_long), &at[i]);
      err0 |= clSetKernelArg(c->attn_pack, ai++, sizeof(cl_long), &rows[i]);
      err0 |= clSetKernelArg(c->attn_pack, ai++, sizeof(cl_long), &dm[i]);
      err0 |= clSetKernelArg(c->attn_pack, ai++, sizeof(cl_int), &dpad[i]);
      if (err0 != CL_SUCCESS) return NC_CL_ERR(err0, "clSetKernelArg(nc_fa_pack)");
      size_t gp = (size_t)((rows[i] * dpad[i] + 255) / 256 * 256), lp = 256;
      err0 = clEnqueueNDRangeKernel(c->q, c->attn_pack, 1, NULL, &gp, &lp, 0, NULL, evp && first_cmd ? &c->ev0[q] : NULL);
      if (err0 != CL_SUCCESS) return NC_CL_ERR(err0, "clEnqueueNDRangeKernel(nc_fa_pack)");
      first_cmd = false;
      tb[i] = c->attn_pk, to[i] = at[i];
    }
  }
  // FA2's count: 4 B H Tq Tk D (forward), 2.5x that (backward), halved when causal
  c->kflop[q] = (mask ? 10.0 : 4.0) * (double)B * (double)Hq * (double)Tq * (double)Tk * (double)D * (causal ? 0.5 : 1.0);
  cl_int err = CL_SUCCESS;
  size_t l1 = (size_t)bl.bm * 2, g1[3] = {(size_t)((Tq + bl.bm - 1) / bl.bm) * l1, (size_t)Hq, (size_t)B}, lw1[3] = {l1, 1, 1};
  cl_kernel kk = kf;
  cl_int mode = mask ? 1 : lse ? 2 : 0;
  if (stats) NC_TRY(nc_oc_scratch(c, &c->attn_st, &c->attn_st_bytes, (size_t)(2 * NR) * sizeof(float), "attention statistics"));
  cl_mem stb = mask ? c->attn_st : lse ? lse : mb[0], O = mask ? mb[0] : mb[3], dO = mask ? mb[3] : mb[0];
  cl_long oO = mask ? mo[0] : mo[3], odO = mask ? mo[3] : mo[0];
  if (mask && !stats) {  // Di = rowsum(dO * O) next to the forward's logsumexp
    cl_mem Ob = mb[s->ncbufs - 1];
    cl_long oOb = mo[s->ncbufs - 1];
    cl_uint ai = 0;
    err |= clSetKernelArg(c->attn_di, ai++, sizeof(cl_mem), &Ob);
    err |= clSetKernelArg(c->attn_di, ai++, sizeof(cl_long), &oOb);
    err |= clSetKernelArg(c->attn_di, ai++, sizeof(cl_mem), &mb[3]);
    err |= clSetKernelArg(c->attn_di, ai++, sizeof(cl_long), &mo[3]);
    err |= clSetKernelArg(c->attn_di, ai++, sizeof(cl_mem), &lse);
    err |= clSetKernelArg(c->attn_di, ai++, sizeof NR, &NR);
    err |= clSetKernelArg(c->attn_di, ai++, sizeof(cl_long), &Tq);
    err |= clSetKernelArg(c->attn_di, ai++, sizeof(cl_long), &Hq);
    err |= clSetKernelArg(c->attn_di, ai++, sizeof(cl_long), &Dv);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg(nc_fa_di)");
    size_t gd = (size_t)((NR + 15) / 16) * 256, ld = 256;
    err = clEnqueueNDRangeKernel(c->q, c->attn_di, 1, NULL, &gd, &ld, 0, NULL, evp && first_cmd ? &c->ev0[q] : NULL);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel(nc_fa_di)");
    first_cmd = false;
  }
  cl_mem stu = stats ? c->attn_st : lse;  // what dQ and dK/dV read
  if (!mask || stats) {
    cl_uint ai = 0;
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &tb[0]);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &tb[1]);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &tb[2]);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &O);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &stb);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &dO);
    cl_long la[6] = {Tq, Tk, Hq, Hkv, D, Dv};
    for (int i = 0; i < 6; i++) err |= clSetKernelArg(kk, ai++, sizeof(cl_long), &la[i]);
    err |= clSetKernelArg(kk, ai++, sizeof causal, &causal);
    err |= clSetKernelArg(kk, ai++, sizeof win, &win);
    err |= clSetKernelArg(kk, ai++, sizeof scale, &scale);
    err |= clSetKernelArg(kk, ai++, sizeof mode, &mode);
    err |= clSetKernelArg(kk, ai++, sizeof NR, &NR);
    cl_long lo[6] = {to[0], to[1], to[2], oO, odO, zero};
    for (int i = 0; i < 6; i++) err |= clSetKernelArg(kk, ai++, sizeof(cl_long), &lo[i]);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg(flash attention forward)");
    err = clEnqueueNDRangeKernel(c->q, kk, 3, NULL, g1, lw1, 0, NULL, evp ? (!mask ? evp : first_cmd ? &c->ev0[q] : NULL) : NULL);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel(flash attention forward)");
  }
  if (!mask) return NC_OK;
  int nb = 4;
  cl_mem gq = mb[0], gk = mb[0], gv = mb[0];
  cl_long oq = 0, ok = 0, ov = 0;
  if (mask & 1) gq = mb[nb], oq = mo[nb], nb++;
  if (mask & 2) gk = mb[nb], ok = mo[nb], nb++;
  if (mask & 4) gv = mb[nb], ov = mo[nb], nb++;
  cl_long la[6] = {Tq, Tk, Hq, Hkv, D, Dv};
  bool dkv = mask & 6;
  if (mask & 1) {
    kk = kq;
    cl_uint ai = 0;
    for (int i = 0; i < 4; i++) err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &tb[i]);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &gq);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &stu);
    for (int i = 0; i < 6; i++) err |= clSetKernelArg(kk, ai++, sizeof(cl_long), &la[i]);
    err |= clSetKernelArg(kk, ai++, sizeof causal, &causal);
    err |= clSetKernelArg(kk, ai++, sizeof win, &win);
    err |= clSetKernelArg(kk, ai++, sizeof scale, &scale);
    err |= clSetKernelArg(kk, ai++, sizeof NR, &NR);
    cl_long lo[6] = {to[0], to[1], to[2], to[3], oq, zero};
    for (int i = 0; i < 6; i++) err |= clSetKernelArg(kk, ai++, sizeof(cl_long), &lo[i]);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg(flash attention dq)");
    size_t l2 = (size_t)bl.bmq * 2, g2[3] = {(size_t)((Tq + bl.bmq - 1) / bl.bmq) * l2, (size_t)Hq, (size_t)B}, lw2[3] = {l2, 1, 1};
    err = clEnqueueNDRangeKernel(c->q, kk, 3, NULL, g2, lw2, 0, NULL, evp && !dkv ? evp : NULL);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel(flash attention dq)");
  }
  if (dkv) {
    kk = kd;
    cl_int wdk = (mask & 2) != 0, wdv = (mask & 4) != 0;
    cl_uint ai = 0;
    for (int i = 0; i < 4; i++) err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &tb[i]);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &gk);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &gv);
    err |= clSetKernelArg(kk, ai++, sizeof(cl_mem), &stu);
    for (int i = 0; i < 6; i++) err |= clSetKernelArg(kk, ai++, sizeof(cl_long), &la[i]);
    err |= clSetKernelArg(kk, ai++, sizeof causal, &causal);
    err |= clSetKernelArg(kk, ai++, sizeof win, &win);
    err |= clSetKernelArg(kk, ai++, sizeof scale, &scale);
    err |= clSetKernelArg(kk, ai++, sizeof NR, &NR);
    err |= clSetKernelArg(kk, ai++, sizeof wdk, &wdk);
    err |= clSetKernelArg(kk, ai++, sizeof wdv, &wdv);
    cl_long lo[7] = {to[0], to[1], to[2], to[3], ok, ov, zero};
    for (int i = 0; i < 7; i++) err |= clSetKernelArg(kk, ai++, sizeof(cl_long), &lo[i]);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg(flash attention dkdv)");
    size_t l3 = (size_t)bl.km * 2, g3[3] = {(size_t)((Tk + bl.km - 1) / bl.km) * l3, (size_t)Hkv, (size_t)B}, lw3[3] = {l3, 1, 1};
    err = clEnqueueNDRangeKernel(c->q, kk, 3, NULL, g3, lw3, 0, NULL, evp);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel(flash attention dkdv)");
  }
  return NC_OK;
}
