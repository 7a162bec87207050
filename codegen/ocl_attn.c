// Flash attention kernels for OpenCL (codegen/ocl_attn.h).
#include "codegen/ocl_attn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nc_ocl_attn_blocks_of(int tc, nc_ocl_attn_blocks *out) {
  // fp32 tiles take twice the local memory: smaller blocks keep every kernel
  // under NVIDIA's 48 KiB per work-group at head dim 128
  if (tc == 0) *out = (nc_ocl_attn_blocks){.bm = 32, .bmq = 16, .bn = 16, .km = 16, .qn = 16, .st = 1};
  // bf16: 4 warps everywhere, the next K/V or Q/dO block copied during this one (cp.async): the
  // fastest of eight block/stage sets on the H100 (docs/performance.md, 2026-11-27)
  else *out = (nc_ocl_attn_blocks){.bm = 64, .bmq = 64, .bn = 32, .km = 64, .qn = 32, .st = 2};
}

nc_status nc_ocl_attn_blocks_parse(const char *spec, int tc, nc_ocl_attn_blocks *out) {
  int v[6] = {0, 0, 0, 0, 0, 1}, n = 0;
  const char *p = spec;
  char *e;
  bool more = true;  // a value must follow the start and every comma
  while (more && n < 6) {
    long x = strtol(p, &e, 10);
    if (e == p) break;
    v[n++] = (int)x;
    p = e;
    more = *p == ',';
    if (more) p++;
  }
  if (n < 5 || more || *p) return nc_errorf(NC_E_INVALID, "NC_OCL_FA='%s': want BM,BMQ,BN,KM,QN[,STAGES] (five or six integers)", spec);
  if (v[5] < 1 || v[5] > 2) return nc_errorf(NC_E_INVALID, "NC_OCL_FA='%s': STAGES = %d must be 1 or 2", spec, v[5]);
  const char *name[5] = {"BM", "BMQ", "BN", "KM", "QN"};
  for (int i = 0; i < 5; i++) {
    // rows per work-group (BM, BMQ, KM): one warp per 16, at most 8 warps; keys / queries per step (BN, QN): 16..64
    int hi = i == 2 || i == 4 ? 64 : 128;
    if (v[i] < 16 || v[i] > hi || v[i] % 16)
      return nc_errorf(NC_E_INVALID, "NC_OCL_FA='%s': %s = %d must be a multiple of 16 in 16..%d", spec, name[i], v[i], hi);
  }
  if (tc == 0 && (v[2] > 32 || v[4] > 32))
    return nc_errorf(NC_E_INVALID, "NC_OCL_FA='%s': the fp32 tiles take BN, QN <= 32", spec);
  *out = (nc_ocl_attn_blocks){.bm = v[0], .bmq = v[1], .bn = v[2], .km = v[3], .qn = v[4], .st = v[5]};
  return NC_OK;
}

int nc_ocl_attn_pad(long d) { return (int)((d + 15) / 16 * 16); }

void nc_ocl_attn_name(const char *what, int dp, int dvp, char *buf, int n) { snprintf(buf, (size_t)n, "nc_fa_%s_%d_%d", what, dp, dvp); }

// The helpers: tile type, block sizes, the 16x8x16 product and the quad
// reductions (the four work-items t = 0..3 that hold one row of a C fragment).
static const char nc_fa_common[] =
    "// flash attention (codegen/ocl_attn.c)\n"
    "#if FA_TC == 0\n"
    "typedef float fa_t;\n"
    "#define FA_G float\n"
    "#define FA_TO(v) (v)\n"
    "#define FA_FROM(x) (x)\n"
    "#define FA_PAD 4\n"
    "#else\n"
    "typedef ushort fa_t;\n"
    "#define FA_G ushort  // q, k, v, dO packed to bf16 rows of FA_DP / FA_DVP by nc_fa_pack\n"
    "#define FA_TO(v) nc_f2bf(v)\n"
    "#define FA_FROM(x) nc_bf2f(x)\n"
    "#define FA_PAD 8\n"
    "#endif\n"
    "// c += A (16x16) B (16x8) in mma.sync m16n8k16 layout: work-item (g, t) = (lane/4, lane%4) holds\n"
    "// c0,c1 = (row g, cols 2t, 2t+1), c2,c3 = (row g+8, same cols). A(m,k) = A[m*lda + k] (ta: A[k*lda + m]);\n"
    "// B(k,n) = B[n*ldb + k] (tb = 0) or B[k*ldb + n] (tb = 1).\n"
    "inline void fa_mma(float *c, __local const fa_t *A, int lda, int ta, __local const fa_t *B, int ldb, int tb) {\n"
    "  const int lane = get_local_id(0) & 31, g = lane >> 2, t = lane & 3;\n"
    "#if FA_TC == 1\n"
    "  uint a0, a1, a2, a3, b0, b1;\n"
    "  if (!ta) {\n"
    "    __local const fa_t *p = A + g * lda + 2 * t;\n"
    "    a0 = *(__local const uint *)p; a1 = *(__local const uint *)(p + 8 * lda);\n"
    "    a2 = *(__local const uint *)(p + 8); a3 = *(__local const uint *)(p + 8 * lda + 8);\n"
    "  } else {\n"
    "    a0 = A[(2 * t) * lda + g] | ((uint)A[(2 * t + 1) * lda + g] << 16);\n"
    "    a1 = A[(2 * t) * lda + g + 8] | ((uint)A[(2 * t + 1) * lda + g + 8] << 16);\n"
    "    a2 = A[(2 * t + 8) * lda + g] | ((uint)A[(2 * t + 9) * lda + g] << 16);\n"
    "    a3 = A[(2 * t + 8) * lda + g + 8] | ((uint)A[(2 * t + 9) * lda + g + 8] << 16);\n"
    "  }\n"
    "  if (!tb) {\n"
    "    __local const fa_t *p = B + g * ldb + 2 * t;\n"
    "    b0 = *(__local const uint *)p; b1 = *(__local const uint *)(p + 8);\n"
    "  } else {\n"
    "    b0 = B[(2 * t) * ldb + g] | ((uint)B[(2 * t + 1) * ldb + g] << 16);\n"
    "    b1 = B[(2 * t + 8) * ldb + g] | ((uint)B[(2 * t + 9) * ldb + g] << 16);\n"
    "  }\n"
    "  float d0, d1, d2, d3;\n"
    "  asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\"\n"
    "               : \"=f\"(d0), \"=f\"(d1), \"=f\"(d2), \"=f\"(d3)\n"
    "               : \"r\"(a0), \"r\"(a1), \"r\"(a2), \"r\"(a3), \"r\"(b0), \"r\"(b1), \"f\"(c[0]), \"f\"(c[1]), \"f\"(c[2]), \"f\"(c[3]));\n"
    "  c[0] = d0; c[1] = d1; c[2] = d2; c[3] = d3;\n"
    "#else\n"
    "  for (int h = 0; h < 4; h++) {\n"
    "    const int m = g + (h >> 1) * 8, n = 2 * t + (h & 1);\n"
    "    float s = c[h];\n"
    "    for (int kq = 0; kq < 16; kq++)\n"
    "      s = fma(FA_FROM(ta ? A[kq * lda + m] : A[m * lda + kq]), FA_FROM(tb ? B[kq * ldb + n] : B[n * ldb + kq]), s);\n"
    "    c[h] = s;\n"
    "  }\n"
    "#endif\n"
    "}\n"
    "// FA_LDA(a, A, lda): the A fragment of a 16x16 tile (row-major, lda); FA_MMAB(c, a, B, ldb, tb): c += A B.\n"
    "// mma.sync: fragments by ldmatrix (.trans for a k-major B); otherwise fa_mma on the same tiles.\n"
    "#if FA_TC == 1\n"
    "#define FA_LDA(a, A, lda) uint a[4]; { __local const fa_t *pa_ = (A) + (tid & 15) * (lda) + ((tid & 31) >> 4) * 8; \\\n"
    "    asm volatile(\"ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\" \\\n"
    "                 : \"=r\"(a[0]), \"=r\"(a[1]), \"=r\"(a[2]), \"=r\"(a[3]) : \"r\"((uint)(ulong)pa_) : \"memory\"); }\n"
    "#define FA_MMAB(c, a, B, ldb, tb) { uint b0_, b1_; \\\n"
    "    if (tb) { __local const fa_t *pb_ = (B) + (tid & 15) * (ldb); \\\n"
    "      asm volatile(\"ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\" : \"=r\"(b0_), \"=r\"(b1_) : \"r\"((uint)(ulong)pb_) : \"memory\"); \\\n"
    "    } else { __local const fa_t *pb_ = (B) + (tid & 7) * (ldb) + ((tid >> 3) & 1) * 8; \\\n"
    "      asm volatile(\"ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\" : \"=r\"(b0_), \"=r\"(b1_) : \"r\"((uint)(ulong)pb_) : \"memory\"); } \\\n"
    "    float d0_, d1_, d2_, d3_; \\\n"
    "    asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\" \\\n"
    "                 : \"=f\"(d0_), \"=f\"(d1_), \"=f\"(d2_), \"=f\"(d3_) \\\n"
    "                 : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"r\"(b0_), \"r\"(b1_), \"f\"((c)[0]), \"f\"((c)[1]), \"f\"((c)[2]), \"f\"((c)[3])); \\\n"
    "    (c)[0] = d0_; (c)[1] = d1_; (c)[2] = d2_; (c)[3] = d3_; }\n"
    "#define FA_EXP(x) native_exp(x)\n"
    "#else\n"
    "#define FA_LDA(a, A, lda) __local const fa_t *a = (A); const int a##_ld = (lda);\n"
    "#define FA_MMAB(c, a, B, ldb, tb) fa_mma(c, a, a##_ld, 0, B, ldb, tb)\n"
    "#define FA_EXP(x) exp(x)\n"
    "#endif\n"
    "// max / sum over the quad of work-items holding one row (all work-items of the group call it)\n"
    "#if FA_TC == 1\n"
    "inline float fa_shfl(float v, int m) {\n"
    "  uint r;\n"
    "  asm volatile(\"shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;\" : \"=r\"(r) : \"r\"(as_uint(v)), \"r\"(m));\n"
    "  return as_float(r);\n"
    "}\n"
    "inline float fa_qmax(float v, __local float *red) { v = fmax(v, fa_shfl(v, 1)); return fmax(v, fa_shfl(v, 2)); }\n"
    "inline float fa_qsum(float v, __local float *red) { v += fa_shfl(v, 1); return v + fa_shfl(v, 2); }\n"
    "#else\n"
    "inline float fa_qmax(float v, __local float *red) {\n"
    "  const int l = get_local_id(0), q = l & ~3;\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  red[l] = v;\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  return fmax(fmax(red[q], red[q + 1]), fmax(red[q + 2], red[q + 3]));\n"
    "}\n"
    "inline float fa_qsum(float v, __local float *red) {\n"
    "  const int l = get_local_id(0), q = l & ~3;\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  red[l] = v;\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  return (red[q] + red[q + 1]) + (red[q + 2] + red[q + 3]);\n"
    "}\n"
    "#endif\n"
    "// keys [j0, j0 + n) all visible from the positions [p, p + m) (no mask needed on such a tile)\n"
    "inline int fa_full(long j0, int n, long p, int m, long Tk, int causal, long window) {\n"
    "  return j0 + n <= Tk && (!causal || j0 + n - 1 <= p) && (window <= 0 || j0 > p + m - 1 - window);\n"
    "}\n"
    "// key j visible from position p\n"
    "inline int fa_vis(int j, int p, int Tk, int causal, int window) {\n"
    "  return j < Tk && j >= 0 && (!causal || j <= p) && (window <= 0 || j > p - window);\n"
    "}\n"
    "// rows [r0, r0 + n) of a (B,T,H,Dm) tensor at (b, h) into a local tile (ld), zero-padded to dp columns;\n"
    "// the bf16 modes read the packed copy (rows of dp, already padded)\n"
    "inline void fa_load(__local fa_t *dst, int ld, __global const FA_G *src, long b, long r0, int n, long T, long H, long h,\n"
    "                    long Dm, int dp, int tid, int nt) {\n"
    "#if FA_TC == 0\n"
    "  if ((Dm & 3) == 0) {  // 4 at a time\n"
    "    const int q4 = dp / 4;\n"
    "    for (int e = tid; e < n * q4; e += nt) {\n"
    "      const int r = e / q4, d = (e % q4) * 4;\n"
    "      const long i = r0 + r;\n"
    "      const float4 v = i < T && d < Dm ? vload4(0, src + ((b * T + i) * H + h) * Dm + d) : (float4)(0.0f);\n"
    "      vstore4(v, 0, dst + r * ld + d);\n"
    "    }\n"
    "    return;\n"
    "  }\n"
    "  for (int e = tid; e < n * dp; e += nt) {\n"
    "    const int r = e / dp, d = e % dp;\n"
    "    const long i = r0 + r;\n"
    "    dst[r * ld + d] = i < T && d < Dm ? src[((b * T + i) * H + h) * Dm + d] : 0.0f;\n"
    "  }\n"
    "#else\n"
    "  const int q8 = dp / 8;  // 8 bf16 (16 bytes) at a time\n"
    "  for (int e = tid; e < n * q8; e += nt) {\n"
    "    const int r = e / q8, d = (e % q8) * 8;\n"
    "    const long i = r0 + r;\n"
    "    *(__local uint4 *)(dst + r * ld + d) = i < T ? *(__global const uint4 *)(src + ((b * T + i) * H + h) * dp + d) : (uint4)(0);\n"
    "  }\n"
    "#endif\n"
    "}\n"
    "// fa_load, asynchronous where the device can (FA_TC 1: cp.async, 16 bytes per copy, zero-filled past T;\n"
    "// FA_COMMIT then FA_WAIT0 complete it for the calling work-item, a barrier for the group)\n"
    "inline void fa_issue(__local fa_t *dst, int ld, __global const FA_G *src, long b, long r0, int n, long T, long H, long h,\n"
    "                     long Dm, int dp, int tid, int nt) {\n"
    "#if FA_TC == 0\n"
    "  fa_load(dst, ld, src, b, r0, n, T, H, h, Dm, dp, tid, nt);\n"
    "#else\n"
    "  const int q8 = dp / 8;\n"
    "  for (int e = tid; e < n * q8; e += nt) {\n"
    "    const int r = e / q8, d = (e % q8) * 8;\n"
    "    const long i = r0 + r;\n"
    "    __global const FA_G *sp = src + ((b * T + (i < T ? i : 0)) * H + h) * dp + d;\n"
    "#if FA_TC == 1\n"
    "    asm volatile(\"cp.async.cg.shared.global [%0], [%1], 16, %2;\" :: \"r\"((uint)(ulong)(dst + r * ld + d)), \"l\"((ulong)sp),\n"
    "                 \"r\"(i < T ? 16 : 0) : \"memory\");\n"
    "#else\n"
    "    *(__local uint4 *)(dst + r * ld + d) = i < T ? *(__global const uint4 *)sp : (uint4)(0);\n"
    "#endif\n"
    "  }\n"
    "#endif\n"
    "}\n"
    "#if FA_TC == 1\n"
    "#define FA_COMMIT() asm volatile(\"cp.async.commit_group;\" ::: \"memory\")\n"
    "#define FA_WAIT0() asm volatile(\"cp.async.wait_group 0;\" ::: \"memory\")\n"
    "#else\n"
    "#define FA_COMMIT()\n"
    "#define FA_WAIT0()\n"
    "#endif\n"
    "// the dK/dV kernel's query step: Q and dO rows [i0, i0 + qn) of query head hq, their lse and Di (qn: FA_QN of the\n"
    "// calling kernel set; a program may hold several, codegen/ocl_attn.h nc_ocl_emit_attn_set)\n"
    "inline void fa_qstep(__local fa_t *Qd, __local fa_t *dOd, __local float *Ld, __local float *Dd, __global const FA_G *Q,\n"
    "                     __global const FA_G *dO, __global const float *st, long b, long hq, long i0, long Tq, long Hq, long D,\n"
    "                     long Dv, long NR, int dp, int dvp, int qn, int tid, int nt) {\n"
    "  fa_issue(Qd, dp + FA_PAD, Q, b, i0, qn, Tq, Hq, hq, D, dp, tid, nt);\n"
    "  fa_issue(dOd, dvp + FA_PAD, dO, b, i0, qn, Tq, Hq, hq, Dv, dvp, tid, nt);\n"
    "  for (int r = tid; r < qn; r += nt) {\n"
    "    const long i = i0 + r, q = (b * Hq + hq) * Tq + i;\n"
    "    Ld[r] = i < Tq ? st[q] : 0.0f;\n"
    "    Dd[r] = i < Tq ? st[NR + q] : 0.0f;\n"
    "  }\n"
    "}\n"
    "#if FA_TC != 0\n"
    "// dst[odst + r*dp + d] = bf16(src[osrc + r*Dm + d]) (0 for d >= Dm), r < rows\n"
    "__kernel void nc_fa_pack(__global const float *src, long osrc, __global ushort *dst, long odst, long rows, long Dm, int dp) {\n"
    "  const long e = get_global_id(0);\n"
    "  if (e >= rows * dp) return;\n"
    "  const long r = e / dp;\n"
    "  const int d = (int)(e - r * dp);\n"
    "  dst[odst + e] = d < Dm ? nc_f2bf(src[osrc + r * Dm + d]) : (ushort)0;\n"
    "}\n"
    "#endif\n"
    "// Di = rowsum(dO * O) of each (B,Tq,Hq,Dv) row R = (b*Tq + i)*Hq + h into st[NR + (b*Hq + h)*Tq + i]:\n"
    "// 16 rows per work-group of 256, 16 work-items per row\n"
    "__kernel __attribute__((reqd_work_group_size(256, 1, 1)))\n"
    "void nc_fa_di(__global const float *O, long oo, __global const float *dO, long odo, __global float *st, long NR, long Tq,\n"
    "              long Hq, long Dv) {\n"
    "  __local float red[256];\n"
    "  const int l = get_local_id(0), lr = l & 15;\n"
    "  const long R = (long)get_group_id(0) * 16 + (l >> 4);\n"
    "  float acc = 0.0f;\n"
    "  if (R < NR)\n"
    "    for (long d = lr; d < Dv; d += 16) acc = fma(dO[odo + R * Dv + d], O[oo + R * Dv + d], acc);\n"
    "  red[l] = acc;\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  for (int w = 8; w > 0; w >>= 1) {\n"
    "    if (lr < w) red[l] += red[l + w];\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  }\n"
    "  if (lr == 0 && R < NR) {\n"
    "    const long h = R % Hq, i = (R / Hq) % Tq, b = R / (Hq * Tq);\n"
    "    st[NR + (b * Hq + h) * Tq + i] = red[l];\n"
    "  }\n"
    "}\n\n";

static const char nc_fa_kernels[] =
    "__kernel __attribute__((reqd_work_group_size(FA_BM * 2, 1, 1)))\n"
    "void FA_N(nc_fa_fwd)(__global const FA_G *Q, __global const FA_G *K, __global const FA_G *V, __global float *O,\n"
    "                     __global float *st, __global const float *dO, long Tq, long Tk, long Hq, long Hkv, long D, long Dv,\n"
    "                     int causal, long window, float scale, int mode, long NR, long oq, long ok, long ov, long oo, long odo,\n"
    "                     long ost) {\n"
    "  __local fa_t Qs[FA_BM * (FA_DP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Ks[FA_ST * FA_BN * (FA_DP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Vs[FA_ST * FA_BN * (FA_DVP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Ps[FA_BM * (FA_BN + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local float red[FA_BM * 2];\n"
    "  const int tid = get_local_id(0), warp = tid >> 5, g = (tid & 31) >> 2, t = tid & 3, NT = FA_BM * 2;\n"
    "  const int LQ = FA_DP + FA_PAD, LV = FA_DVP + FA_PAD, LP = FA_BN + FA_PAD;\n"
    "  const long i0 = (long)get_group_id(0) * FA_BM, h = get_group_id(1), b = get_group_id(2), hk = h / (Hq / Hkv);\n"
    "  Q += oq; K += ok; V += ov; O += oo; dO += odo; st += ost;\n"
    "  fa_load(Qs, LQ, Q, b, i0, FA_BM, Tq, Hq, h, D, FA_DP, tid, NT);\n"
    "  const long off = Tk - Tq, last = (i0 + FA_BM < Tq ? i0 + FA_BM : Tq) - 1;\n"
    "  long jlo = 0, jhi = Tk;\n"
    "  if (causal && off + last + 1 < jhi) jhi = off + last + 1;\n"
    "  if (window > 0 && off + i0 - window + 1 > jlo) jlo = (off + i0 - window + 1) / FA_BN * FA_BN;\n"
    "  const long r0 = i0 + warp * 16 + g, r1 = r0 + 8, p0 = off + r0, p1 = off + r1, pw = off + i0 + warp * 16;\n"
    "  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;\n"
    "  float oacc[FA_DVP / 8][4];\n"
    "  FA_UNROLL for (int jd = 0; jd < FA_DVP / 8; jd++) oacc[jd][0] = oacc[jd][1] = oacc[jd][2] = oacc[jd][3] = 0.0f;\n"
    "  // key blocks through FA_ST stages: with 2 the next block is copied while this one is used\n"
    "  const int nst = jhi > jlo ? (int)((jhi - jlo + FA_BN - 1) / FA_BN) : 0;\n"
    "#if FA_ST == 2\n"
    "  if (nst > 0) {\n"
    "    fa_issue(Ks, LQ, K, b, jlo, FA_BN, Tk, Hkv, hk, D, FA_DP, tid, NT);\n"
    "    fa_issue(Vs, LV, V, b, jlo, FA_BN, Tk, Hkv, hk, Dv, FA_DVP, tid, NT);\n"
    "  }\n"
    "  FA_COMMIT();\n"
    "#endif\n"
    "  for (int it = 0; it < nst; it++) {\n"
    "    const long j0 = jlo + (long)it * FA_BN;\n"
    "    __local fa_t *Kc = Ks + (it % FA_ST) * (FA_BN * LQ), *Vc = Vs + (it % FA_ST) * (FA_BN * LV);\n"
    "#if FA_ST == 2\n"
    "    FA_WAIT0();\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    if (it + 1 < nst) {\n"
    "      fa_issue(Ks + ((it + 1) % 2) * (FA_BN * LQ), LQ, K, b, j0 + FA_BN, FA_BN, Tk, Hkv, hk, D, FA_DP, tid, NT);\n"
    "      fa_issue(Vs + ((it + 1) % 2) * (FA_BN * LV), LV, V, b, j0 + FA_BN, FA_BN, Tk, Hkv, hk, Dv, FA_DVP, tid, NT);\n"
    "    }\n"
    "    FA_COMMIT();\n"
    "#else\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    fa_issue(Kc, LQ, K, b, j0, FA_BN, Tk, Hkv, hk, D, FA_DP, tid, NT);\n"
    "    fa_issue(Vc, LV, V, b, j0, FA_BN, Tk, Hkv, hk, Dv, FA_DVP, tid, NT);\n"
    "    FA_COMMIT();\n"
    "    FA_WAIT0();\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "#endif\n"
    "    float s[FA_BN / 8][4];\n"
    "    FA_UNROLL for (int jn = 0; jn < FA_BN / 8; jn++) s[jn][0] = s[jn][1] = s[jn][2] = s[jn][3] = 0.0f;\n"
    "    FA_UNROLL for (int kk = 0; kk < FA_DP / 16; kk++) {\n"
    "      FA_LDA(af, Qs + warp * 16 * LQ + kk * 16, LQ)\n"
    "      FA_UNROLL for (int jn = 0; jn < FA_BN / 8; jn++) FA_MMAB(s[jn], af, Kc + jn * 8 * LQ + kk * 16, LQ, 0);\n"
    "    }\n"
    "    float mx0 = -INFINITY, mx1 = -INFINITY;\n"
    "    if (fa_full(j0, FA_BN, pw, 16, Tk, causal, window)) {  // every key visible from the warp's 16 rows: no mask\n"
    "      FA_UNROLL for (int jn = 0; jn < FA_BN / 8; jn++)\n"
    "        FA_UNROLL for (int e = 0; e < 4; e++) {\n"
    "          const float v = s[jn][e] * scale;\n"
    "          s[jn][e] = v;\n"
    "          if (e < 2) mx0 = fmax(mx0, v); else mx1 = fmax(mx1, v);\n"
    "        }\n"
    "    } else {\n"
    "      FA_UNROLL for (int jn = 0; jn < FA_BN / 8; jn++)\n"
    "        FA_UNROLL for (int e = 0; e < 4; e++) {\n"
    "          const int j = (int)j0 + jn * 8 + 2 * t + (e & 1);\n"
    "          const float v = fa_vis(j, (int)(e < 2 ? p0 : p1), (int)Tk, causal, (int)window) ? s[jn][e] * scale : -INFINITY;\n"
    "          s[jn][e] = v;\n"
    "          if (e < 2) mx0 = fmax(mx0, v); else mx1 = fmax(mx1, v);\n"
    "        }\n"
    "    }\n"
    "    mx0 = fa_qmax(mx0, red);\n"
    "    mx1 = fa_qmax(mx1, red);\n"
    "    const float mn0 = fmax(m0, mx0), mn1 = fmax(m1, mx1);\n"
    "    const float bs0 = mn0 == -INFINITY ? 0.0f : mn0, bs1 = mn1 == -INFINITY ? 0.0f : mn1;\n"
    "    const float al0 = FA_EXP(m0 - bs0), al1 = FA_EXP(m1 - bs1);\n"
    "    float sm0 = 0.0f, sm1 = 0.0f;\n"
    "    FA_UNROLL for (int jn = 0; jn < FA_BN / 8; jn++)\n"
    "      FA_UNROLL for (int e = 0; e < 4; e++) {\n"
    "        const float pv = FA_EXP(s[jn][e] - (e < 2 ? bs0 : bs1));\n"
    "        if (e < 2) sm0 += pv; else sm1 += pv;\n"
    "        Ps[(warp * 16 + g + (e >> 1) * 8) * LP + jn * 8 + 2 * t + (e & 1)] = FA_TO(pv);\n"
    "      }\n"
    "    sm0 = fa_qsum(sm0, red);\n"
    "    sm1 = fa_qsum(sm1, red);\n"
    "    l0 = l0 * al0 + sm0; l1 = l1 * al1 + sm1; m0 = mn0; m1 = mn1;\n"
    "    FA_UNROLL for (int jd = 0; jd < FA_DVP / 8; jd++) { oacc[jd][0] *= al0; oacc[jd][1] *= al0; oacc[jd][2] *= al1; oacc[jd][3] *= al1; }\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    FA_UNROLL for (int kk = 0; kk < FA_BN / 16; kk++) {\n"
    "      FA_LDA(af, Ps + warp * 16 * LP + kk * 16, LP)\n"
    "      FA_UNROLL for (int jd = 0; jd < FA_DVP / 8; jd++) FA_MMAB(oacc[jd], af, Vc + kk * 16 * LV + jd * 8, LV, 1);\n"
    "    }\n"
    "  }\n"
    "  const float iv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, iv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;\n"
    "  if (mode != 1) {  // O; mode 2 also the rows' logsumexp for the backward\n"
    "    FA_UNROLL for (int jd = 0; jd < FA_DVP / 8; jd++)\n"
    "      FA_UNROLL for (int e = 0; e < 4; e++) {\n"
    "        const long r = e < 2 ? r0 : r1;\n"
    "        const int d = jd * 8 + 2 * t + (e & 1);\n"
    "        if (r < Tq && d < Dv) O[((b * Tq + r) * Hq + h) * Dv + d] = oacc[jd][e] * (e < 2 ? iv0 : iv1);\n"
    "      }\n"
    "    if (mode == 2 && t == 0) {\n"
    "      if (r0 < Tq) st[(b * Hq + h) * Tq + r0] = m0 + log(l0);\n"
    "      if (r1 < Tq) st[(b * Hq + h) * Tq + r1] = m1 + log(l1);\n"
    "    }\n"
    "    return;\n"
    "  }\n"
    "  float di0 = 0.0f, di1 = 0.0f;\n"
    "  FA_UNROLL for (int jd = 0; jd < FA_DVP / 8; jd++)\n"
    "    FA_UNROLL for (int e = 0; e < 4; e++) {\n"
    "      const long r = e < 2 ? r0 : r1;\n"
    "      const int d = jd * 8 + 2 * t + (e & 1);\n"
    "      if (r < Tq && d < Dv) {\n"
    "        const float x = oacc[jd][e] * (e < 2 ? iv0 : iv1) * dO[((b * Tq + r) * Hq + h) * Dv + d];\n"
    "        if (e < 2) di0 += x; else di1 += x;\n"
    "      }\n"
    "    }\n"
    "  di0 = fa_qsum(di0, red);\n"
    "  di1 = fa_qsum(di1, red);\n"
    "  if (t == 0) {\n"
    "    if (r0 < Tq) { st[(b * Hq + h) * Tq + r0] = m0 + log(l0); st[NR + (b * Hq + h) * Tq + r0] = di0; }\n"
    "    if (r1 < Tq) { st[(b * Hq + h) * Tq + r1] = m1 + log(l1); st[NR + (b * Hq + h) * Tq + r1] = di1; }\n"
    "  }\n"
    "}\n\n"
    "__kernel __attribute__((reqd_work_group_size(FA_BMQ * 2, 1, 1)))\n"
    "void FA_N(nc_fa_dq)(__global const FA_G *Q, __global const FA_G *K, __global const FA_G *V, __global const FA_G *dO,\n"
    "                    __global float *dQ, __global const float *st, long Tq, long Tk, long Hq, long Hkv, long D, long Dv,\n"
    "                    int causal, long window, float scale, long NR, long oq, long ok, long ov, long odo, long odq, long ost) {\n"
    "  __local fa_t Qs[FA_BMQ * (FA_DP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t dOs[FA_BMQ * (FA_DVP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Ks[FA_ST * FA_BN * (FA_DP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Vs[FA_ST * FA_BN * (FA_DVP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Ss[FA_BMQ * (FA_BN + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local float red[FA_BMQ * 2];\n"
    "  const int tid = get_local_id(0), warp = tid >> 5, g = (tid & 31) >> 2, t = tid & 3, NT = FA_BMQ * 2;\n"
    "  const int LQ = FA_DP + FA_PAD, LV = FA_DVP + FA_PAD, LP = FA_BN + FA_PAD;\n"
    "  const long i0 = (long)get_group_id(0) * FA_BMQ, h = get_group_id(1), b = get_group_id(2), hk = h / (Hq / Hkv);\n"
    "  Q += oq; K += ok; V += ov; dO += odo; dQ += odq; st += ost;\n"
    "  fa_load(Qs, LQ, Q, b, i0, FA_BMQ, Tq, Hq, h, D, FA_DP, tid, NT);\n"
    "  fa_load(dOs, LV, dO, b, i0, FA_BMQ, Tq, Hq, h, Dv, FA_DVP, tid, NT);\n"
    "  const long off = Tk - Tq, last = (i0 + FA_BMQ < Tq ? i0 + FA_BMQ : Tq) - 1;\n"
    "  long jlo = 0, jhi = Tk;\n"
    "  if (causal && off + last + 1 < jhi) jhi = off + last + 1;\n"
    "  if (window > 0 && off + i0 - window + 1 > jlo) jlo = (off + i0 - window + 1) / FA_BN * FA_BN;\n"
    "  const long r0 = i0 + warp * 16 + g, r1 = r0 + 8, p0 = off + r0, p1 = off + r1, pw = off + i0 + warp * 16;\n"
    "  const long q0 = (b * Hq + h) * Tq + r0, q1 = q0 + 8;\n"
    "  const float ls0 = r0 < Tq ? st[q0] : 0.0f, ls1 = r1 < Tq ? st[q1] : 0.0f;\n"
    "  const float di0 = r0 < Tq ? st[NR + q0] : 0.0f, di1 = r1 < Tq ? st[NR + q1] : 0.0f;\n"
    "  float dq[FA_DP / 8][4];\n"
    "  FA_UNROLL for (int jd = 0; jd < FA_DP / 8; jd++) dq[jd][0] = dq[jd][1] = dq[jd][2] = dq[jd][3] = 0.0f;\n"
    "  // key blocks through FA_ST stages: with 2 the next block is copied while this one is used\n"
    "  const int nst = jhi > jlo ? (int)((jhi - jlo + FA_BN - 1) / FA_BN) : 0;\n"
    "#if FA_ST == 2\n"
    "  if (nst > 0) {\n"
    "    fa_issue(Ks, LQ, K, b, jlo, FA_BN, Tk, Hkv, hk, D, FA_DP, tid, NT);\n"
    "    fa_issue(Vs, LV, V, b, jlo, FA_BN, Tk, Hkv, hk, Dv, FA_DVP, tid, NT);\n"
    "  }\n"
    "  FA_COMMIT();\n"
    "#endif\n"
    "  for (int it = 0; it < nst; it++) {\n"
    "    const long j0 = jlo + (long)it * FA_BN;\n"
    "    __local fa_t *Kc = Ks + (it % FA_ST) * (FA_BN * LQ), *Vc = Vs + (it % FA_ST) * (FA_BN * LV);\n"
    "#if FA_ST == 2\n"
    "    FA_WAIT0();\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    if (it + 1 < nst) {\n"
    "      fa_issue(Ks + ((it + 1) % 2) * (FA_BN * LQ), LQ, K, b, j0 + FA_BN, FA_BN, Tk, Hkv, hk, D, FA_DP, tid, NT);\n"
    "      fa_issue(Vs + ((it + 1) % 2) * (FA_BN * LV), LV, V, b, j0 + FA_BN, FA_BN, Tk, Hkv, hk, Dv, FA_DVP, tid, NT);\n"
    "    }\n"
    "    FA_COMMIT();\n"
    "#else\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    fa_issue(Kc, LQ, K, b, j0, FA_BN, Tk, Hkv, hk, D, FA_DP, tid, NT);\n"
    "    fa_issue(Vc, LV, V, b, j0, FA_BN, Tk, Hkv, hk, Dv, FA_DVP, tid, NT);\n"
    "    FA_COMMIT();\n"
    "    FA_WAIT0();\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "#endif\n"
    "    float s[FA_BN / 8][4], dp[FA_BN / 8][4];\n"
    "    FA_UNROLL for (int jn = 0; jn < FA_BN / 8; jn++) {\n"
    "      s[jn][0] = s[jn][1] = s[jn][2] = s[jn][3] = 0.0f;\n"
    "      dp[jn][0] = dp[jn][1] = dp[jn][2] = dp[jn][3] = 0.0f;\n"
    "    }\n"
    "    FA_UNROLL for (int kk = 0; kk < FA_DP / 16; kk++) {\n"
    "      FA_LDA(af, Qs + warp * 16 * LQ + kk * 16, LQ)\n"
    "      FA_UNROLL for (int jn = 0; jn < FA_BN / 8; jn++) FA_MMAB(s[jn], af, Kc + jn * 8 * LQ + kk * 16, LQ, 0);\n"
    "    }\n"
    "    FA_UNROLL for (int kk = 0; kk < FA_DVP / 16; kk++) {\n"
    "      FA_LDA(af, dOs + warp * 16 * LV + kk * 16, LV)\n"
    "      FA_UNROLL for (int jn = 0; jn < FA_BN / 8; jn++) FA_MMAB(dp[jn], af, Vc + jn * 8 * LV + kk * 16, LV, 0);\n"
    "    }\n"
    "    const int full = fa_full(j0, FA_BN, pw, 16, Tk, causal, window);  // no mask on this tile\n"
    "    FA_UNROLL for (int jn = 0; jn < FA_BN / 8; jn++)\n"
    "      FA_UNROLL for (int e = 0; e < 4; e++) {\n"
    "        const int j = (int)j0 + jn * 8 + 2 * t + (e & 1);\n"
    "        const float pv = full || fa_vis(j, (int)(e < 2 ? p0 : p1), (int)Tk, causal, (int)window) ? FA_EXP(s[jn][e] * scale - (e < 2 ? ls0 : ls1)) : 0.0f;\n"
    "        const float ds = pv * (dp[jn][e] - (e < 2 ? di0 : di1)) * scale;\n"
    "        Ss[(warp * 16 + g + (e >> 1) * 8) * LP + jn * 8 + 2 * t + (e & 1)] = FA_TO(ds);\n"
    "      }\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    FA_UNROLL for (int kk = 0; kk < FA_BN / 16; kk++) {\n"
    "      FA_LDA(af, Ss + warp * 16 * LP + kk * 16, LP)\n"
    "      FA_UNROLL for (int jd = 0; jd < FA_DP / 8; jd++) FA_MMAB(dq[jd], af, Kc + kk * 16 * LQ + jd * 8, LQ, 1);\n"
    "    }\n"
    "  }\n"
    "  FA_UNROLL for (int jd = 0; jd < FA_DP / 8; jd++)\n"
    "    FA_UNROLL for (int e = 0; e < 4; e++) {\n"
    "      const long r = e < 2 ? r0 : r1;\n"
    "      const int d = jd * 8 + 2 * t + (e & 1);\n"
    "      if (r < Tq && d < D) dQ[((b * Tq + r) * Hq + h) * D + d] = dq[jd][e];\n"
    "    }\n"
    "}\n\n"
    "__kernel __attribute__((reqd_work_group_size(FA_KM * 2, 1, 1)))\n"
    "void FA_N(nc_fa_dkdv)(__global const FA_G *Q, __global const FA_G *K, __global const FA_G *V, __global const FA_G *dO,\n"
    "                      __global float *dK, __global float *dV, __global const float *st, long Tq, long Tk, long Hq, long Hkv,\n"
    "                      long D, long Dv, int causal, long window, float scale, long NR, int wdk, int wdv, long oq, long ok,\n"
    "                      long ov, long odo, long odk, long odv, long ost) {\n"
    "  __local fa_t Ks[FA_KM * (FA_DP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Vs[FA_KM * (FA_DVP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Qs[FA_ST * FA_QN * (FA_DP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t dOs[FA_ST * FA_QN * (FA_DVP + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Ps[FA_KM * (FA_QN + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local fa_t Ss[FA_KM * (FA_QN + FA_PAD)] __attribute__((aligned(16)));\n"
    "  __local float Ls[FA_ST * FA_QN], Ds[FA_ST * FA_QN];\n"
    "  const int tid = get_local_id(0), warp = tid >> 5, g = (tid & 31) >> 2, t = tid & 3, NT = FA_KM * 2;\n"
    "  const int LQ = FA_DP + FA_PAD, LV = FA_DVP + FA_PAD, LP = FA_QN + FA_PAD;\n"
    "  const long j0 = (long)get_group_id(0) * FA_KM, hk = get_group_id(1), b = get_group_id(2), G = Hq / Hkv;\n"
    "  Q += oq; K += ok; V += ov; dO += odo; dK += odk; dV += odv; st += ost;\n"
    "  fa_load(Ks, LQ, K, b, j0, FA_KM, Tk, Hkv, hk, D, FA_DP, tid, NT);\n"
    "  fa_load(Vs, LV, V, b, j0, FA_KM, Tk, Hkv, hk, Dv, FA_DVP, tid, NT);\n"
    "  const long off = Tk - Tq, jl = (j0 + FA_KM < Tk ? j0 + FA_KM : Tk) - 1;\n"
    "  long ilo = 0, ihi = Tq;\n"
    "  if (causal && j0 - off > ilo) ilo = (j0 - off) / FA_QN * FA_QN;\n"
    "  if (window > 0 && jl + window - off < ihi) ihi = jl + window - off;\n"
    "  const long k0 = j0 + warp * 16 + g, k1 = k0 + 8;\n"
    "  float dk[FA_DP / 8][4], dv[FA_DVP / 8][4];\n"
    "  FA_UNROLL for (int jd = 0; jd < FA_DP / 8; jd++) dk[jd][0] = dk[jd][1] = dk[jd][2] = dk[jd][3] = 0.0f;\n"
    "  FA_UNROLL for (int jd = 0; jd < FA_DVP / 8; jd++) dv[jd][0] = dv[jd][1] = dv[jd][2] = dv[jd][3] = 0.0f;\n"
    "  // steps over (query head hk*G + it / nq, query block ilo + (it % nq) * FA_QN), through FA_ST stages\n"
    "  const int nq = ihi > ilo ? (int)((ihi - ilo + FA_QN - 1) / FA_QN) : 0, nst = nq * (int)G;\n"
    "#if FA_ST == 2\n"
    "  if (nst > 0) fa_qstep(Qs, dOs, Ls, Ds, Q, dO, st, b, hk * G, ilo, Tq, Hq, D, Dv, NR, FA_DP, FA_DVP, FA_QN, tid, NT);\n"
    "  FA_COMMIT();\n"
    "#endif\n"
    "    for (int it = 0; it < nst; it++) {\n"
    "      const long i0 = ilo + (long)(it % nq) * FA_QN;\n"
    "      const int cs = it % FA_ST;\n"
    "      __local fa_t *Qc = Qs + cs * (FA_QN * LQ), *dOc = dOs + cs * (FA_QN * LV);\n"
    "      __local float *Lc = Ls + cs * FA_QN, *Dc = Ds + cs * FA_QN;\n"
    "#if FA_ST == 2\n"
    "      FA_WAIT0();\n"
    "      barrier(CLK_LOCAL_MEM_FENCE);\n"
    "      if (it + 1 < nst) {\n"
    "        const int ns = (it + 1) % 2;\n"
    "        fa_qstep(Qs + ns * (FA_QN * LQ), dOs + ns * (FA_QN * LV), Ls + ns * FA_QN, Ds + ns * FA_QN, Q, dO, st, b,\n"
    "                 hk * G + (it + 1) / nq, ilo + (long)((it + 1) % nq) * FA_QN, Tq, Hq, D, Dv, NR, FA_DP, FA_DVP, FA_QN, tid, NT);\n"
    "      }\n"
    "      FA_COMMIT();\n"
    "#else\n"
    "      barrier(CLK_LOCAL_MEM_FENCE);\n"
    "      fa_qstep(Qc, dOc, Lc, Dc, Q, dO, st, b, hk * G + it / nq, i0, Tq, Hq, D, Dv, NR, FA_DP, FA_DVP, FA_QN, tid, NT);\n"
    "      FA_COMMIT();\n"
    "      FA_WAIT0();\n"
    "      barrier(CLK_LOCAL_MEM_FENCE);\n"
    "#endif\n"
    "      float s[FA_QN / 8][4], dp[FA_QN / 8][4];\n"
    "      FA_UNROLL for (int jn = 0; jn < FA_QN / 8; jn++) {\n"
    "        s[jn][0] = s[jn][1] = s[jn][2] = s[jn][3] = 0.0f;\n"
    "        dp[jn][0] = dp[jn][1] = dp[jn][2] = dp[jn][3] = 0.0f;\n"
    "      }\n"
    "      FA_UNROLL for (int kk = 0; kk < FA_DP / 16; kk++) {\n"
    "        FA_LDA(af, Ks + warp * 16 * LQ + kk * 16, LQ)\n"
    "        FA_UNROLL for (int jn = 0; jn < FA_QN / 8; jn++) FA_MMAB(s[jn], af, Qc + jn * 8 * LQ + kk * 16, LQ, 0);\n"
    "      }\n"
    "      FA_UNROLL for (int kk = 0; kk < FA_DVP / 16; kk++) {\n"
    "        FA_LDA(af, Vs + warp * 16 * LV + kk * 16, LV)\n"
    "        FA_UNROLL for (int jn = 0; jn < FA_QN / 8; jn++) FA_MMAB(dp[jn], af, dOc + jn * 8 * LV + kk * 16, LV, 0);\n"
    "      }\n"
    "      // no mask where every query of the step sees the warp's 16 keys\n"
    "      const int full = i0 + FA_QN <= Tq && fa_full(j0 + warp * 16, 16, off + i0, FA_QN, Tk, causal, window);\n"
    "      FA_UNROLL for (int jn = 0; jn < FA_QN / 8; jn++)\n"
    "        FA_UNROLL for (int e = 0; e < 4; e++) {\n"
    "          const int c = jn * 8 + 2 * t + (e & 1);\n"
    "          const long i = i0 + c;\n"
    "          const int ok_ = full || (i < Tq && fa_vis((int)(e < 2 ? k0 : k1), (int)(off + i), (int)Tk, causal, (int)window));\n"
    "          const float pv = ok_ ? FA_EXP(s[jn][e] * scale - Lc[c]) : 0.0f;\n"
    "          const float ds = pv * (dp[jn][e] - Dc[c]) * scale;\n"
    "          const int at = (warp * 16 + g + (e >> 1) * 8) * LP + c;\n"
    "          Ps[at] = FA_TO(pv);\n"
    "          Ss[at] = FA_TO(ds);\n"
    "        }\n"
    "      barrier(CLK_LOCAL_MEM_FENCE);\n"
    "      FA_UNROLL for (int kk = 0; kk < FA_QN / 16; kk++) {\n"
    "        FA_LDA(af, Ps + warp * 16 * LP + kk * 16, LP)\n"
    "        FA_UNROLL for (int jd = 0; jd < FA_DVP / 8; jd++) FA_MMAB(dv[jd], af, dOc + kk * 16 * LV + jd * 8, LV, 1);\n"
    "      }\n"
    "      FA_UNROLL for (int kk = 0; kk < FA_QN / 16; kk++) {\n"
    "        FA_LDA(af, Ss + warp * 16 * LP + kk * 16, LP)\n"
    "        FA_UNROLL for (int jd = 0; jd < FA_DP / 8; jd++) FA_MMAB(dk[jd], af, Qc + kk * 16 * LQ + jd * 8, LQ, 1);\n"
    "      }\n"
    "    }\n"
    "  FA_UNROLL for (int e = 0; e < 4; e++) {\n"
    "    const long j = e < 2 ? k0 : k1;\n"
    "    if (j >= Tk) continue;\n"
    "    if (wdk) {\n"
    "      FA_UNROLL for (int jd = 0; jd < FA_DP / 8; jd++) {\n"
    "        const int d = jd * 8 + 2 * t + (e & 1);\n"
    "        if (d < D) dK[((b * Tk + j) * Hkv + hk) * D + d] = dk[jd][e];\n"
    "      }\n"
    "    }\n"
    "    if (wdv) {\n"
    "      FA_UNROLL for (int jd = 0; jd < FA_DVP / 8; jd++) {\n"
    "        const int d = jd * 8 + 2 * t + (e & 1);\n"
    "        if (d < Dv) dV[((b * Tk + j) * Hkv + hk) * Dv + d] = dv[jd][e];\n"
    "      }\n"
    "    }\n"
    "  }\n"
    "}\n\n";

void nc_ocl_emit_attn_common(int tc, const nc_ocl_attn_blocks *bl, nc_buf *out) {
  nc_buf_printf(out, "#define FA_TC %d\n#define FA_BM %d\n#define FA_BMQ %d\n#define FA_BN %d\n#define FA_KM %d\n#define FA_QN %d\n#define FA_ST %d\n",
                tc, bl->bm, bl->bmq, bl->bn, bl->km, bl->qn, bl->st);
  nc_buf_puts(out, nc_fa_common);
}

// The three kernels of (dp, dvp) with FA_N(x) = x_<dp>_<dvp><suffix>.
static void nc_ocl_emit_attn_kernels(int tc, int dp, int dvp, const char *suffix, nc_buf *out) {
  nc_buf_printf(out, "#define FA_DP %d\n#define FA_DVP %d\n#define FA_N(x) x##_%d_%d%s\n", dp, dvp, dp, dvp, suffix);
  // "FA_UNROLL for" lines: with mma.sync the loop gets its own "#pragma unroll" line (the
  // fragments stay in registers); the scalar modes keep loops (PoCL compiles them much faster)
  for (const char *l = nc_fa_kernels; *l;) {
    const char *e = strchr(l, '\n');
    size_t n = e ? (size_t)(e - l + 1) : strlen(l);
    const char *u = strstr(l, "FA_UNROLL ");
    if (u && u < l + n && tc == 1) {
      nc_buf_printf(out, "#pragma unroll\n%.*s%.*s", (int)(u - l), l, (int)(n - (size_t)(u + 10 - l)), u + 10);
    } else {
      if (u && u < l + n) nc_buf_printf(out, "%.*s%.*s", (int)(u - l), l, (int)(n - (size_t)(u + 10 - l)), u + 10);
      else nc_buf_printf(out, "%.*s", (int)n, l);
    }
    l += n;
  }
  nc_buf_puts(out, "#undef FA_DP\n#undef FA_DVP\n#undef FA_N\n\n");
}

void nc_ocl_emit_attn(int tc, int dp, int dvp, nc_buf *out) { nc_ocl_emit_attn_kernels(tc, dp, dvp, "", out); }

static void nc_ocl_attn_define(const nc_ocl_attn_blocks *bl, nc_buf *out) {
  nc_buf_puts(out, "#undef FA_BM\n#undef FA_BMQ\n#undef FA_BN\n#undef FA_KM\n#undef FA_QN\n#undef FA_ST\n");
  nc_buf_printf(out, "#define FA_BM %d\n#define FA_BMQ %d\n#define FA_BN %d\n#define FA_KM %d\n#define FA_QN %d\n#define FA_ST %d\n", bl->bm,
                bl->bmq, bl->bn, bl->km, bl->qn, bl->st);
}

void nc_ocl_emit_attn_set(int tc, int dp, int dvp, const nc_ocl_attn_blocks *bl, const nc_ocl_attn_blocks *def, int set, nc_buf *out) {
  char suffix[16];
  snprintf(suffix, sizeof suffix, "_t%d", set);
  nc_ocl_attn_define(bl, out);
  nc_ocl_emit_attn_kernels(tc, dp, dvp, suffix, out);
  nc_ocl_attn_define(def, out);  // the program's own blocks again
}

void nc_ocl_attn_name_set(const char *what, int dp, int dvp, int set, char *buf, int n) {
  if (set < 0) nc_ocl_attn_name(what, dp, dvp, buf, n);
  else snprintf(buf, (size_t)n, "nc_fa_%s_%d_%d_t%d", what, dp, dvp, set);
}

// Bytes of static local memory of each kernel (forward, dQ, dK/dV) for blocks bl at padded head dims.
void nc_ocl_attn_local_bytes(int tc, int dp, int dvp, const nc_ocl_attn_blocks *bl, long out[3]) {
  const long es = tc ? 2 : 4, pad = tc ? 8 : 4, lq = dp + pad, lv = dvp + pad, st = bl->st;
  out[0] = es * (bl->bm * lq + st * bl->bn * (lq + lv) + bl->bm * (bl->bn + pad)) + 4L * 2 * bl->bm;
  out[1] = es * (bl->bmq * (lq + lv) + st * bl->bn * (lq + lv) + bl->bmq * (bl->bn + pad)) + 4L * 2 * bl->bmq;
  out[2] = es * (bl->km * (lq + lv) + st * bl->qn * (lq + lv) + 2L * bl->km * (bl->qn + pad)) + 4L * 2 * st * bl->qn;
}

nc_status nc_ocl_attn_blocks_check(int tc, int dp, int dvp, const nc_ocl_attn_blocks *bl) {
  const int v[5] = {bl->bm, bl->bmq, bl->bn, bl->km, bl->qn};
  const char *name[5] = {"bm", "bmq", "bn", "km", "qn"};
  for (int i = 0; i < 5; i++) {
    int hi = i == 2 || i == 4 ? 64 : 128;
    if (v[i] < 16 || v[i] > hi || v[i] % 16)
      return nc_errorf(NC_E_INVALID, "flash attention block %s=%d: must be a multiple of 16 in 16..%d", name[i], v[i], hi);
  }
  if (bl->st < 1 || bl->st > 2) return nc_errorf(NC_E_INVALID, "flash attention stages st=%d: must be 1 or 2", bl->st);
  if (tc < 0 || tc > 2) return nc_errorf(NC_E_INVALID, "flash attention mode %d: must be 0 (fp32), 1 (mma.sync) or 2 (emulated)", tc);
  if (tc == 0 && (bl->bn > 32 || bl->qn > 32))
    return nc_errorf(NC_E_INVALID, "flash attention blocks bn=%d qn=%d: the fp32 tiles take bn, qn <= 32", bl->bn, bl->qn);
  if (dp <= 0 && dvp <= 0) return NC_OK;  // no head dims given: the blocks alone
  if (dp < 16 || dp > NC_OCL_ATTN_MAX_D || dp % 16 || dvp < 16 || dvp > NC_OCL_ATTN_MAX_D || dvp % 16)
    return nc_errorf(NC_E_INVALID, "flash attention head dims %d/%d: must be padded to multiples of 16 in 16..%d", dp, dvp, NC_OCL_ATTN_MAX_D);
  long lb[3];
  nc_ocl_attn_local_bytes(tc, dp, dvp, bl, lb);
  const long lim = tc ? NC_OCL_ATTN_LOCAL_TC : NC_OCL_ATTN_LOCAL_F32;
  const char *kn[3] = {"forward", "dQ", "dK/dV"};
  for (int i = 0; i < 3; i++)
    if (lb[i] > lim)
      return nc_errorf(NC_E_INVALID, "flash attention blocks %d,%d,%d,%d,%d,%d at head dims %d/%d: the %s kernel needs %ld bytes of local memory (limit %ld)",
                       bl->bm, bl->bmq, bl->bn, bl->km, bl->qn, bl->st, dp, dvp, kn[i], lb[i], lim);
  // fp32 accumulators per work-item (the registers that grow with the blocks): O and S (forward), dQ, S and dP (dQ),
  // dK, dV, P and dP (dK/dV)
  const int acc[3] = {dvp / 2 + bl->bn / 2, dp / 2 + bl->bn, dp / 2 + dvp / 2 + bl->qn};
  const char *by[3] = {"bn", "bn", "qn"};
  for (int i = 0; i < 3; i++)
    if (acc[i] > NC_OCL_ATTN_MAX_ACC)
      return nc_errorf(NC_E_INVALID, "flash attention block %s=%d at head dims %d/%d: the %s kernel would hold %d fp32 accumulators per work-item (limit %d)",
                       by[i], i == 2 ? bl->qn : bl->bn, dp, dvp, kn[i], acc[i], NC_OCL_ATTN_MAX_ACC);
  return NC_OK;
}
