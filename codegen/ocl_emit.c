// Kernel IR -> OpenCL C (see codegen/ocl_emit.h).
#include "codegen/ocl_emit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nc_ocl_knobs_default(bool gpu, nc_ocl_knobs *k) {
  if (gpu)
    *k = (nc_ocl_knobs){.gemm_tm = 64, .gemm_tn = 64, .gemm_tk = 16, .gemm_wm = 4, .gemm_wn = 4, .loop_wg = 256, .row_wg = 128,
                        .tc_bm = 128, .tc_bn = 128, .tc_wm = 64, .tc_wn = 32, .tc_bk = 32, .tc_stages = 3};
  else
    *k = (nc_ocl_knobs){.gemm_tm = 32, .gemm_tn = 32, .gemm_tk = 16, .gemm_wm = 4, .gemm_wn = 4, .loop_wg = 64, .row_wg = 4,
                        .tc_bm = 32, .tc_bn = 32, .tc_wm = 16, .tc_wn = 16, .tc_bk = 16};
}

nc_status nc_ocl_tc_check(const nc_ocl_knobs *k) {
  if (k->gemm_tc < 0 || k->gemm_tc > 2) return nc_errorf(NC_E_INVALID, "OpenCL knob gemm_tc=%d: must be 0 (fp32), 1 (mma) or 2 (emulated)", k->gemm_tc);
  if (k->tc_wg) return nc_ocl_wgmma_check(k);  // the wgmma kernel (codegen/ocl_gemm.c): its own tiling
  if (k->tc_wm < 16 || k->tc_wm > 128 || k->tc_wm % 16)
    return nc_errorf(NC_E_INVALID, "OpenCL knob tc_wm=%d: must be a multiple of 16 in 16..128", k->tc_wm);
  if (k->tc_wn < 8 || k->tc_wn > 128 || k->tc_wn % 8) return nc_errorf(NC_E_INVALID, "OpenCL knob tc_wn=%d: must be a multiple of 8 in 8..128", k->tc_wn);
  if ((k->tc_wm / 16) * (k->tc_wn / 8) > 32)
    return nc_errorf(NC_E_INVALID, "OpenCL knobs tc_wm=%d tc_wn=%d: over 32 mma tiles per warp (too many registers)", k->tc_wm, k->tc_wn);
  if (k->tc_bm < 16 || k->tc_bm > 256 || k->tc_bm % k->tc_wm)
    return nc_errorf(NC_E_INVALID, "OpenCL knob tc_bm=%d: must be in 16..256 and a multiple of tc_wm=%d", k->tc_bm, k->tc_wm);
  if (k->tc_bn < 8 || k->tc_bn > 256 || k->tc_bn % k->tc_wn)
    return nc_errorf(NC_E_INVALID, "OpenCL knob tc_bn=%d: must be in 8..256 and a multiple of tc_wn=%d", k->tc_bn, k->tc_wn);
  if (k->tc_bk < 16 || k->tc_bk > 64 || k->tc_bk % 16) return nc_errorf(NC_E_INVALID, "OpenCL knob tc_bk=%d: must be 16, 32, 48 or 64", k->tc_bk);
  int nth = 32 * (k->tc_bm / k->tc_wm) * (k->tc_bn / k->tc_wn);
  if (nth > 1024) return nc_errorf(NC_E_INVALID, "OpenCL tensor-core knobs: work-group of %d work-items (over 1024)", nth);
  if (k->tc_stages && (k->tc_stages < 2 || k->tc_stages > 4))
    return nc_errorf(NC_E_INVALID, "OpenCL knob tc_stages=%d: must be 0 (register-staged kernel) or 2..4 (pipelined)", k->tc_stages);
  if (k->tc_stages) {
    if (k->tc_bk != 32 && k->tc_bk != 64) return nc_errorf(NC_E_INVALID, "OpenCL knob tc_bk=%d: must be 32 or 64 with tc_stages=%d", k->tc_bk, k->tc_stages);
    if (k->tc_wn % 16) return nc_errorf(NC_E_INVALID, "OpenCL knob tc_wn=%d: must be a multiple of 16 with tc_stages=%d", k->tc_wn, k->tc_stages);
    int ring = k->tc_stages * (k->tc_bm + k->tc_bn) * k->tc_bk * 2;
    if (ring > 49152)
      return nc_errorf(NC_E_INVALID, "OpenCL tensor-core knobs: a ring of %d x (%d + %d) x %d bf16 is %d bytes of local memory (over 49152)", k->tc_stages,
                       k->tc_bm, k->tc_bn, k->tc_bk, ring);
    if ((k->tc_bm * k->tc_bk / 8) % nth || (k->tc_bn * k->tc_bk / 8) % nth)
      return nc_errorf(NC_E_INVALID, "OpenCL tensor-core knobs: the %dx%d and %dx%d slices must split into 16-byte pieces evenly over %d work-items",
                       k->tc_bm, k->tc_bk, k->tc_bn, k->tc_bk, nth);
  }
  if ((k->tc_bm * k->tc_bk) % nth || (k->tc_bn * k->tc_bk) % nth)
    return nc_errorf(NC_E_INVALID, "OpenCL tensor-core knobs: the %dx%d and %dx%d tiles must split evenly over %d work-items", k->tc_bm, k->tc_bk,
                     k->tc_bn, k->tc_bk, nth);
  return NC_OK;
}

// Parses 5 to max (7 or 8) comma-separated integers in lo..4096 into v (items not given keep their value);
// `what` and `want` name the setting and its items in the error messages.
static nc_status nc_ocl_parse_ints(const char *s, int v[8], int max, long lo, const char *what, const char *want) {
  const char *p = s;
  int n = 0;
  while (*p && n < max) {
    char *end;
    long x = strtol(p, &end, 10);
    if (end == p || x < lo || x > 4096)
      return nc_errorf(NC_E_INVALID, "%s '%s': item %d is not a number in %ld..4096 (want %s)", what, s, n + 1, lo, want);
    v[n++] = (int)x;
    p = end;
    if (*p == ',') p++;
    else if (*p) return nc_errorf(NC_E_INVALID, "%s '%s': unexpected '%c' (want %s)", what, s, *p, want);
  }
  if (*p || n < 5) return nc_errorf(NC_E_INVALID, "%s '%s': want 5 to %d comma-separated numbers %s", what, s, max, want);
  return NC_OK;
}

nc_status nc_ocl_tc_parse(const char *s, nc_ocl_knobs *k) {
  int v[8] = {k->tc_bm, k->tc_bn, k->tc_wm, k->tc_wn, k->tc_bk, k->gemm_tc, 0, 0};
  NC_TRY(nc_ocl_parse_ints(s, v, 8, 0, "tensor-core knobs", "BM,BN,WM,WN,BK[,MODE[,STAGES[,WG]]]"));
  nc_ocl_knobs t = *k;
  t.tc_bm = v[0], t.tc_bn = v[1], t.tc_wm = v[2], t.tc_wn = v[3], t.tc_bk = v[4], t.gemm_tc = v[5], t.tc_stages = v[6], t.tc_wg = v[7];
  NC_TRY(nc_ocl_tc_check(&t));
  *k = t;
  return NC_OK;
}

nc_status nc_ocl_knobs_check(const nc_ocl_knobs *k) {
  if (k->gemm_wm < 1 || k->gemm_wm > 16) return nc_errorf(NC_E_INVALID, "OpenCL knob gemm_wm=%d: must be in 1..16", k->gemm_wm);
  if (k->gemm_wn < 1 || k->gemm_wn > 16) return nc_errorf(NC_E_INVALID, "OpenCL knob gemm_wn=%d: must be in 1..16", k->gemm_wn);
  if (k->gemm_tm < 16 || k->gemm_tm > 256 || k->gemm_tm % k->gemm_wm)
    return nc_errorf(NC_E_INVALID, "OpenCL knob gemm_tm=%d: must be in 16..256 and a multiple of gemm_wm=%d", k->gemm_tm, k->gemm_wm);
  if (k->gemm_tn < 16 || k->gemm_tn > 256 || k->gemm_tn % k->gemm_wn)
    return nc_errorf(NC_E_INVALID, "OpenCL knob gemm_tn=%d: must be in 16..256 and a multiple of gemm_wn=%d", k->gemm_tn, k->gemm_wn);
  if (k->gemm_tk < 4 || k->gemm_tk > 64) return nc_errorf(NC_E_INVALID, "OpenCL knob gemm_tk=%d: must be in 4..64", k->gemm_tk);
  int wg = (k->gemm_tm / k->gemm_wm) * (k->gemm_tn / k->gemm_wn);
  if (wg > 1024) return nc_errorf(NC_E_INVALID, "OpenCL GEMM knobs: work-group of %d work-items (over 1024)", wg);
  if (k->loop_wg < 1 || k->loop_wg > 1024) return nc_errorf(NC_E_INVALID, "OpenCL knob loop_wg=%d: must be in 1..1024", k->loop_wg);
  if (k->row_wg < 1 || k->row_wg > 1024) return nc_errorf(NC_E_INVALID, "OpenCL knob row_wg=%d: must be in 1..1024", k->row_wg);
  if (k->reduce_wg < 0 || k->reduce_wg > 1024)
    return nc_errorf(NC_E_INVALID, "OpenCL knob reduce_wg=%d: must be in 1..1024 (0: loop_wg's)", k->reduce_wg);
  return nc_ocl_tc_check(k);
}

nc_status nc_ocl_knobs_parse(const char *s, nc_ocl_knobs *k) {
  int v[8] = {k->gemm_tm, k->gemm_tn, k->gemm_tk, k->gemm_wm, k->gemm_wn, k->loop_wg, k->row_wg, 0};
  NC_TRY(nc_ocl_parse_ints(s, v, 7, 1, "OpenCL knobs", "TM,TN,TK,WM,WN[,WG[,RWG]]"));
  nc_ocl_knobs t = *k;
  t.gemm_tm = v[0], t.gemm_tn = v[1], t.gemm_tk = v[2], t.gemm_wm = v[3], t.gemm_wn = v[4], t.loop_wg = v[5], t.row_wg = v[6];
  NC_TRY(nc_ocl_knobs_check(&t));
  *k = t;
  return NC_OK;
}

void nc_ocl_emit_prelude(nc_buf *out) {
  nc_buf_puts(out,
              "// generated by nanochat-c (codegen/ocl_emit.c)\n"
              "inline float nc_bf2f(ushort h) { return as_float(((uint)h) << 16); }\n"
              "inline ushort nc_f2bf(float f) {\n"
              "  uint u = as_uint(f);\n"
              "  if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u);\n"
              "  return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);\n"
              "}\n"
              "inline float nc_rbf(float f) { return nc_bf2f(nc_f2bf(f)); }\n"
              "inline float nc_rh(float f) { ushort h; vstore_half_rte(f, 0, (__private half *)&h); "
              "return vload_half(0, (__private const half *)&h); }\n"
              "inline float nc_fmaxn(float a, float b) { return isnan(a) || isnan(b) ? NAN : fmax(a, b); }\n"
              "inline float nc_fminn(float a, float b) { return isnan(a) || isnan(b) ? NAN : fmin(a, b); }\n\n");
}

const char *nc_ocl_gemm_name(int variant) {
  static const char *const names[8] = {"nc_gemm_nn", "nc_gemm_nt", "nc_gemm_tn", "nc_gemm_tt", "nc_gemm_nn_h", "nc_gemm_nt_h", "nc_gemm_tn_h", "nc_gemm_tt_h"};
  return names[variant & 7];
}

// The element access macros of a GEMM variant over f32 or bf16 (NC_OCL_GEMM_BF16) buffers:
// NC_GL(x) widens an element read to float, NC_GS(v) narrows a float to the element type.
static void nc_oe_gemm_access(nc_buf *o, bool bf) {
  if (bf) nc_buf_puts(o, "#define NC_GL(x) nc_bf2f(x)\n#define NC_GS(v) nc_f2bf(v)\n");
  else nc_buf_puts(o, "#define NC_GL(x) (x)\n#define NC_GS(v) (v)\n");
}

// The bf16 tensor-core GEMM (kn->gemm_tc 1: mma.sync through inline PTX, NVIDIA
// only; 2: the same kernel with each mma done by scalar fmas, for any device).
// A work-group of 32 * (BM/WM) * (BN/WN) work-items computes a BM x BN tile of C;
// warp w owns a WM x WN sub-tile made of (WM/16) x (WN/8) m16n8k16 tiles. Each
// k-step the group stages a BM x BK slice of op(A) and a BN x BK slice of op(B)
// from fp32 global memory into local memory as bf16 (round to nearest even),
// k contiguous (As[m][k], Bs[n][k]: the "row" and "col" fragments of the mma),
// rows padded by 8 so the fragment reads hit distinct banks. The next slice is
// loaded into registers while the current one is multiplied. Out-of-range
// elements are staged as 0 and masked on store. Accumulation is fp32.
static void nc_oe_gemm_tc(const nc_ocl_knobs *kn, int variant, nc_buf *o) {
  int BM = kn->tc_bm, BN = kn->tc_bn, WM = kn->tc_wm, WN = kn->tc_wn, BK = kn->tc_bk, LDS = BK + 8;
  int WX = BN / WN, NTH = 32 * (BM / WM) * WX, MT = WM / 16, NT = WN / 8, RA = BM * BK / NTH, RB = BN * BK / NTH;
  bool ta = variant & 2, tb = variant & 1, emu = kn->gemm_tc == 2, bf = variant & NC_OCL_GEMM_BF16;
  const char *ty = bf ? "ushort" : "float";
  nc_oe_gemm_access(o, bf);
  nc_buf_printf(o,
                "// C (+)= op(A) @ op(B) in bf16 with fp32 accumulation (%s): %dx%d block, %dx%d per warp, k-step %d (ta=%d tb=%d), %s buffers\n"
                "__kernel __attribute__((reqd_work_group_size(%d, 1, 1)))\n"
                "void %s(__global const %s *A, __global const %s *B, __global %s *C, long M, long N, long K,\n"
                "        long sa, long sb, int beta, long oa, long ob, long oc) {\n"
                "  __local ushort As[%d] __attribute__((aligned(16)));\n"
                "  __local ushort Bs[%d] __attribute__((aligned(16)));\n"
                "  const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;\n"
                "  const int wm0 = (warp / %d) * %d, wn0 = (warp %% %d) * %d;\n"
                "  const long n0 = (long)get_group_id(0) * %d, m0 = (long)get_group_id(1) * %d, q = get_global_id(2);\n"
                "  A += oa + q * sa; B += ob + q * sb; C += oc + q * M * N;\n"
                "  float acc[%d][%d][4];\n"
                "#pragma unroll\n"
                "  for (int i = 0; i < %d; i++)\n"
                "#pragma unroll\n"
                "    for (int j = 0; j < %d; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;\n"
                "  float ra[%d], rb[%d];\n",
                emu ? "scalar emulation of mma.sync" : "mma.sync m16n8k16 tensor cores", BM, BN, WM, WN, BK, ta, tb, bf ? "bf16" : "f32", NTH,
                nc_ocl_gemm_name(variant), ty, ty, ty, BM * LDS, BN * LDS, WX, WM, WX, WN, BN, BM, MT, NT, MT, NT, RA, RB);
  // staging element e = tid + r * NTH of the slice starting at k0: (row, kk) and its global address
  char la[256], lb[256];
  if (!ta) snprintf(la, sizeof la, "int kk = e %% %d, mm = e / %d; long gm = m0 + mm, gk = k0 + kk; ra[r] = gm < M && gk < K ? NC_GL(A[gm * K + gk]) : 0.0f;", BK, BK);
  else snprintf(la, sizeof la, "int mm = e %% %d, kk = e / %d; long gm = m0 + mm, gk = k0 + kk; ra[r] = gm < M && gk < K ? NC_GL(A[gk * M + gm]) : 0.0f;", BM, BM);
  if (tb) snprintf(lb, sizeof lb, "int kk = e %% %d, nn = e / %d; long gn = n0 + nn, gk = k0 + kk; rb[r] = gn < N && gk < K ? NC_GL(B[gn * K + gk]) : 0.0f;", BK, BK);
  else snprintf(lb, sizeof lb, "int nn = e %% %d, kk = e / %d; long gn = n0 + nn, gk = k0 + kk; rb[r] = gn < N && gk < K ? NC_GL(B[gk * N + gn]) : 0.0f;", BN, BN);
  char sa_[160], sb_[160];
  if (!ta) snprintf(sa_, sizeof sa_, "int kk = e %% %d, mm = e / %d; As[mm * %d + kk] = nc_f2bf(ra[r]);", BK, BK, LDS);
  else snprintf(sa_, sizeof sa_, "int mm = e %% %d, kk = e / %d; As[mm * %d + kk] = nc_f2bf(ra[r]);", BM, BM, LDS);
  if (tb) snprintf(sb_, sizeof sb_, "int kk = e %% %d, nn = e / %d; Bs[nn * %d + kk] = nc_f2bf(rb[r]);", BK, BK, LDS);
  else snprintf(sb_, sizeof sb_, "int nn = e %% %d, kk = e / %d; Bs[nn * %d + kk] = nc_f2bf(rb[r]);", BN, BN, LDS);
  // the four loops (load A, load B into registers; store A, B into local memory); a
  // k-contiguous operand (A not transposed, B transposed) moves 4 elements at a time
  // (vload4, two packed bf16 pairs per store) when K is a multiple of 4 (vk, uniform)
  bool va = !bf && !ta && (BM * BK / 4) % NTH == 0, vb = !bf && tb && (BN * BK / 4) % NTH == 0;
  char LA[1024], LB[1024], SA[1024], SB[1024];
  const char *pk = "(uint2)(nc_f2bf(%s[4 * r]) | ((uint)nc_f2bf(%s[4 * r + 1]) << 16), nc_f2bf(%s[4 * r + 2]) | ((uint)nc_f2bf(%s[4 * r + 3]) << 16))";
  char pka[256], pkb[256];
  snprintf(pka, sizeof pka, pk, "ra", "ra", "ra", "ra");
  snprintf(pkb, sizeof pkb, pk, "rb", "rb", "rb", "rb");
  if (va) {
    snprintf(LA, sizeof LA,
             "if (vk) {\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; int kk = (e %% %d) * 4, mm = e / %d; long gm = m0 + mm, gk = k0 + kk;"
             " float4 v = gm < M && gk < K ? vload4(0, A + gm * K + gk) : (float4)(0.0f); ra[4 * r] = v.x; ra[4 * r + 1] = v.y; ra[4 * r + 2] = v.z; ra[4 * r + 3] = v.w; }\n"
             "} else {\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; %s }\n}\n",
             RA / 4, NTH, BK / 4, BK / 4, RA, NTH, la);
    snprintf(SA, sizeof SA,
             "if (vk) {\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; int kk = (e %% %d) * 4, mm = e / %d; *(__local uint2 *)(As + mm * %d + kk) = %s; }\n"
             "} else {\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; %s }\n}\n",
             RA / 4, NTH, BK / 4, BK / 4, LDS, pka, RA, NTH, sa_);
  } else {
    snprintf(LA, sizeof LA, "\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; %s }\n", RA, NTH, la);
    snprintf(SA, sizeof SA, "\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; %s }\n", RA, NTH, sa_);
  }
  if (vb) {
    snprintf(LB, sizeof LB,
             "if (vk) {\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; int kk = (e %% %d) * 4, nn = e / %d; long gn = n0 + nn, gk = k0 + kk;"
             " float4 v = gn < N && gk < K ? vload4(0, B + gn * K + gk) : (float4)(0.0f); rb[4 * r] = v.x; rb[4 * r + 1] = v.y; rb[4 * r + 2] = v.z; rb[4 * r + 3] = v.w; }\n"
             "} else {\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; %s }\n}\n",
             RB / 4, NTH, BK / 4, BK / 4, RB, NTH, lb);
    snprintf(SB, sizeof SB,
             "if (vk) {\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; int kk = (e %% %d) * 4, nn = e / %d; *(__local uint2 *)(Bs + nn * %d + kk) = %s; }\n"
             "} else {\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; %s }\n}\n",
             RB / 4, NTH, BK / 4, BK / 4, LDS, pkb, RB, NTH, sb_);
  } else {
    snprintf(LB, sizeof LB, "\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; %s }\n", RB, NTH, lb);
    snprintf(SB, sizeof SB, "\n#pragma unroll\n for (int r = 0; r < %d; r++) { int e = tid + r * %d; %s }\n", RB, NTH, sb_);
  }
  nc_buf_printf(o,
                "  long k0 = 0;\n"
                "  const int vk = (K & 3) == 0;\n"
                "%s%s"
                "  for (; k0 < K; k0 += %d) {\n"
                "    barrier(CLK_LOCAL_MEM_FENCE);\n"
                "%s%s"
                "    barrier(CLK_LOCAL_MEM_FENCE);\n"
                "    if (k0 + %d < K) {\n"
                "      k0 += %d;\n"
                "%s%s"
                "      k0 -= %d;\n"
                "    }\n"
                "#pragma unroll\n"
                "    for (int ks = 0; ks < %d; ks += 16) {\n",
                LA, LB, BK, SA, SB, BK, BK, LA, LB, BK, BK);
  if (!emu) {
    // fragments (PTX ISA, m16n8k16 bf16): a0 (g, 2t..2t+1), a1 (g+8, ..), a2 (g, 2t+8..), a3 (g+8, 2t+8..);
    // b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g); c0,c1 (g, 2t..2t+1), c2,c3 (g+8, ..)
    nc_buf_printf(o,
                  "      uint af[%d][4], bfr[%d][2];\n"
                  "#pragma unroll\n"
                  "      for (int i = 0; i < %d; i++) {\n"
                  "        __local const ushort *p = As + (wm0 + i * 16 + g) * %d + ks + 2 * t;\n"
                  "        af[i][0] = *(__local const uint *)p; af[i][1] = *(__local const uint *)(p + %d);\n"
                  "        af[i][2] = *(__local const uint *)(p + 8); af[i][3] = *(__local const uint *)(p + %d);\n"
                  "      }\n"
                  "#pragma unroll\n"
                  "      for (int j = 0; j < %d; j++) {\n"
                  "        __local const ushort *p = Bs + (wn0 + j * 8 + g) * %d + ks + 2 * t;\n"
                  "        bfr[j][0] = *(__local const uint *)p; bfr[j][1] = *(__local const uint *)(p + 8);\n"
                  "      }\n"
                  "#pragma unroll\n"
                  "      for (int i = 0; i < %d; i++)\n"
                  "#pragma unroll\n"
                  "        for (int j = 0; j < %d; j++) {\n"
                  "          float d0, d1, d2, d3;\n"
                  "          asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%%0,%%1,%%2,%%3}, {%%4,%%5,%%6,%%7}, {%%8,%%9}, {%%10,%%11,%%12,%%13};\"\n"
                  "                       : \"=f\"(d0), \"=f\"(d1), \"=f\"(d2), \"=f\"(d3)\n"
                  "                       : \"r\"(af[i][0]), \"r\"(af[i][1]), \"r\"(af[i][2]), \"r\"(af[i][3]), \"r\"(bfr[j][0]), \"r\"(bfr[j][1]),\n"
                  "                         \"f\"(acc[i][j][0]), \"f\"(acc[i][j][1]), \"f\"(acc[i][j][2]), \"f\"(acc[i][j][3]));\n"
                  "          acc[i][j][0] = d0; acc[i][j][1] = d1; acc[i][j][2] = d2; acc[i][j][3] = d3;\n"
                  "        }\n",
                  MT, NT, MT, LDS, 8 * LDS, 8 * LDS + 8, NT, LDS, MT, NT);
  } else {
    // the four outputs this work-item's fragment of C holds, from the same staged bf16 values
    nc_buf_printf(o,
                  "      for (int i = 0; i < %d; i++)\n"
                  "        for (int j = 0; j < %d; j++)\n"
                  "          for (int h = 0; h < 4; h++) {\n"
                  "            int mr = wm0 + i * 16 + g + (h >> 1) * 8, nr = wn0 + j * 8 + 2 * t + (h & 1);\n"
                  "            float s = acc[i][j][h];\n"
                  "            for (int kq = 0; kq < 16; kq++) s = fma(nc_bf2f(As[mr * %d + ks + kq]), nc_bf2f(Bs[nr * %d + ks + kq]), s);\n"
                  "            acc[i][j][h] = s;\n"
                  "          }\n",
                  MT, NT, LDS, LDS);
  }
  nc_buf_printf(o,
                "    }\n"
                "  }\n"
                "#pragma unroll\n"
                "  for (int i = 0; i < %d; i++)\n"
                "#pragma unroll\n"
                "    for (int j = 0; j < %d; j++)\n"
                "#pragma unroll\n"
                "      for (int h = 0; h < 4; h++) {\n"
                "        long m = m0 + wm0 + i * 16 + g + (h >> 1) * 8, n = n0 + wn0 + j * 8 + 2 * t + (h & 1);\n"
                "        if (m < M && n < N) C[m * N + n] = NC_GS(beta ? NC_GL(C[m * N + n]) + acc[i][j][h] : acc[i][j][h]);\n"
                "      }\n"
                "}\n#undef NC_GL\n#undef NC_GS\n\n",
                MT, NT);
}

// The copy of k-tile lkt (of this split) into ring slot lslot: 16-byte pieces
// of the A rows, then of the B rows (cp.async, or plain copies when emulated).
static void nc_oe_tc_load(nc_buf *o, bool emu, bool zf, int BK, int CA, int CB, int NTH, int CPR, int STG, int BM) {
  for (int ab = 0; ab < 2; ab++) {
    nc_buf_printf(o,
                  "#pragma unroll\n"
                  "      for (int r = 0; r < %d; r++) {\n"
                  "        const int e = tid + r * %d, row = e / %d, c = e %% %d, d = lslot * %d + %d + row * %d + NC_SWZ(row, c);\n",
                  ab ? CB : CA, NTH, CPR, CPR, STG, ab ? BM * CPR : 0, CPR);
    nc_ocl_gemm_copy(o, emu, zf, ab, BK, false);
    nc_buf_puts(o, "      }\n");
  }
}

// The pipelined bf16 GEMM (kn->tc_stages > 0; see ocl_emit.h): both operands
// are first packed to bf16, k contiguous and zero-padded to the tiles
// (nc_pack_k / nc_pack_t, the latter a tiled transpose, so every (ta, tb)
// becomes the same "row.col" product and the main loop needs no bounds
// checks); the GEMM then streams BK-wide slices of A (BM rows) and B (BN rows)
// into a ring of tc_stages shared-memory slots as 16-byte pieces with
// cp.async (one barrier per k-step, tc_stages - 1 slices in flight), laid out
// with an XOR swizzle of the 16-byte piece index (piece c of row r sits at
// c ^ ((r * CPR / 8) % CPR), CPR = BK / 8 pieces per row) so that the
// ldmatrix reads of eight rows hit distinct banks. Fragments come from
// ldmatrix.x4 (A: one 16x16 tile; B: two 8-column tiles), then mma.sync
// m16n8k16. gemm_tc = 2 runs the same kernel with plain 16-byte copies and
// scalar fmas over the same swizzled slots (any device).
static void nc_oe_gemm_bf16p(const nc_ocl_knobs *kn, int flags, nc_buf *o);

void nc_ocl_gemm_packed_name(const nc_ocl_knobs *kn, int flags, char *buf, size_t n) {
  snprintf(buf, n, "%s%s%s%s%s", kn->tc_wg ? "nc_gemm_wgmma" : "nc_gemm_bf16p", flags & NC_OCL_GEMMP_ZFILL ? "_z" : "",
           flags & NC_OCL_GEMMP_CBF16 ? "_h" : "", flags & NC_OCL_GEMMP_AMN ? "_ta" : "", flags & NC_OCL_GEMMP_BMN ? "_tb" : "");
}

void nc_ocl_emit_gemm_packed_kernel(const nc_ocl_knobs *kn, int flags, nc_buf *o) {
  if (kn->tc_wg) nc_ocl_emit_gemm_wgmma(kn, flags, o);  // the Hopper kernel (codegen/ocl_gemm.c)
  else nc_oe_gemm_bf16p(kn, flags, o);
}

void nc_ocl_emit_gemm_packed(const nc_ocl_knobs *kn, nc_buf *o) {
  nc_buf_puts(o,
              "// op(X) -> bf16 P[q][r][k], k contiguous, zero-padded to Rp x Kp (X k-contiguous: X[r*Kd + k])\n"
              "__kernel void nc_pack_k(__global const float *X, long ox, long sx, long R, long Kd, __global ushort *P, long op, long Rp, long Kp) {\n"
              "  const long k8 = get_global_id(0) * 8, r = get_global_id(1), q = get_global_id(2);\n"
              "  if (k8 >= Kp || r >= Rp) return;\n"
              "  X += ox + q * sx + r * Kd + k8;\n"
              "  float v[8];\n"
              "  if (r < R && k8 + 8 <= Kd) {\n"
              "    float4 a = vload4(0, X), b = vload4(1, X);\n"
              "    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;\n"
              "  } else {\n"
              "    for (int j = 0; j < 8; j++) v[j] = r < R && k8 + j < Kd ? X[j] : 0.0f;\n"
              "  }\n"
              "  uint4 w = (uint4)(nc_f2bf(v[0]) | ((uint)nc_f2bf(v[1]) << 16), nc_f2bf(v[2]) | ((uint)nc_f2bf(v[3]) << 16),\n"
              "                    nc_f2bf(v[4]) | ((uint)nc_f2bf(v[5]) << 16), nc_f2bf(v[6]) | ((uint)nc_f2bf(v[7]) << 16));\n"
              "  *(__global uint4 *)(P + op + (q * Rp + r) * Kp + k8) = w;\n"
              "}\n\n"
              "// the same from an r-contiguous X (X[k*R + r]) through a 32x32 tile in local memory\n"
              "__kernel __attribute__((reqd_work_group_size(32, 8, 1)))\n"
              "void nc_pack_t(__global const float *X, long ox, long sx, long R, long Kd, __global ushort *P, long op, long Rp, long Kp) {\n"
              "  __local float tile[32][33];\n"
              "  const int tx = get_local_id(0), ty = get_local_id(1);\n"
              "  const long r0 = (long)get_group_id(0) * 32, k0 = (long)get_group_id(1) * 32, q = get_global_id(2);\n"
              "  X += ox + q * sx;\n"
              "  for (int j = ty; j < 32; j += 8) { long k = k0 + j, r = r0 + tx; tile[j][tx] = r < R && k < Kd ? X[k * R + r] : 0.0f; }\n"
              "  barrier(CLK_LOCAL_MEM_FENCE);\n"
              "  for (int j = ty; j < 32; j += 8) { long r = r0 + j, k = k0 + tx; if (r < Rp && k < Kp) P[op + (q * Rp + r) * Kp + k] = nc_f2bf(tile[tx][j]); }\n"
              "}\n\n"
              "// nc_pack_k and nc_pack_t from a bf16 (ushort) X: copies, no rounding\n"
              "__kernel void nc_pack_kh(__global const ushort *X, long ox, long sx, long R, long Kd, __global ushort *P, long op, long Rp, long Kp) {\n"
              "  const long k8 = get_global_id(0) * 8, r = get_global_id(1), q = get_global_id(2);\n"
              "  if (k8 >= Kp || r >= Rp) return;\n"
              "  X += ox + q * sx + r * Kd + k8;\n"
              "  ushort8 v;\n"
              "  if (r < R && k8 + 8 <= Kd) {\n"
              "    v = vload8(0, X);\n"
              "  } else {\n"
              "    ushort w[8];\n"
              "    for (int j = 0; j < 8; j++) w[j] = r < R && k8 + j < Kd ? X[j] : (ushort)0;\n"
              "    v = vload8(0, w);\n"
              "  }\n"
              "  vstore8(v, 0, P + op + (q * Rp + r) * Kp + k8);\n"
              "}\n\n"
              "__kernel __attribute__((reqd_work_group_size(32, 8, 1)))\n"
              "void nc_pack_th(__global const ushort *X, long ox, long sx, long R, long Kd, __global ushort *P, long op, long Rp, long Kp) {\n"
              "  __local ushort tile[32][34];\n"
              "  const int tx = get_local_id(0), ty = get_local_id(1);\n"
              "  const long r0 = (long)get_group_id(0) * 32, k0 = (long)get_group_id(1) * 32, q = get_global_id(2);\n"
              "  X += ox + q * sx;\n"
              "  for (int j = ty; j < 32; j += 8) { long k = k0 + j, r = r0 + tx; tile[j][tx] = r < R && k < Kd ? X[k * R + r] : (ushort)0; }\n"
              "  barrier(CLK_LOCAL_MEM_FENCE);\n"
              "  for (int j = ty; j < 32; j += 8) { long r = r0 + j, k = k0 + tx; if (r < Rp && k < Kp) P[op + (q * Rp + r) * Kp + k] = tile[tx][j]; }\n"
              "}\n\n"
              "// split-K: C (+)= the sum of the splits' partial products (C f32, or bf16 with cbf)\n"
              "__kernel void nc_splitk_sum(__global const float *P, __global float *C, long MN, int splits, int beta, long oc, int cbf) {\n"
              "  const long i = get_global_id(0), q = get_global_id(1);\n"
              "  if (i >= MN) return;\n"
              "  __global ushort *Ch = (__global ushort *)C;\n"
              "  const long ci = oc + q * MN + i;\n"
              "  float s = beta ? (cbf ? nc_bf2f(Ch[ci]) : C[ci]) : 0.0f;\n"
              "  for (int k = 0; k < splits; k++) s += P[(q * splits + k) * MN + i];\n"
              "  if (cbf) Ch[ci] = nc_f2bf(s);\n"
              "  else C[ci] = s;\n"
              "}\n\n");
  nc_ocl_emit_gemm_packed_kernel(kn, 0, o);
}

// The pipelined mma.sync GEMM kernel (flags: NC_OCL_GEMMP_*).
static void nc_oe_gemm_bf16p(const nc_ocl_knobs *kn, int flags, nc_buf *o) {
  int BM = kn->tc_bm, BN = kn->tc_bn, BK = kn->tc_bk, S = kn->tc_stages;
  int WM = kn->tc_wm > 0 ? kn->tc_wm : 16, WN = kn->tc_wn > 0 ? kn->tc_wn : 8;
  int WX = BN / WN, NTH = 32 * (BM / WM) * WX, MT = WM / 16, NT = WN / 8, CPR = BK / 8, STG = (BM + BN) * CPR;
  int CA = BM * CPR / NTH, CB = BN * CPR / NTH;
  bool emu = kn->gemm_tc == 2, zf = flags & NC_OCL_GEMMP_ZFILL, cbf = flags & NC_OCL_GEMMP_CBF16;
  char name[40];
  nc_ocl_gemm_packed_name(kn, flags, name, sizeof name);
  nc_buf_printf(o,
                "// C (+)= A @ B^T over packed bf16 operands (%s): %dx%d block, %dx%d per warp, k-step %d, %d-slot ring\n"
                "// (the mma's asm qualifier and ldmatrix's clobbers: volatile and memory unless the build options say\n"
                "// otherwise, e.g. -DNC_MMA_Q= -DNC_LDM_CLOBBER=, NC_OCL_BUILD_OPTS)\n"
                "#ifndef NC_MMA_Q\n#define NC_MMA_Q volatile\n#endif\n"
                "#ifndef NC_LDM_CLOBBER\n#define NC_LDM_CLOBBER : \"memory\"\n#endif\n"
                "#define NC_SWZ(r, c) ((c) ^ (((r) * %d / 8) %% %d))\n"
                "__kernel __attribute__((reqd_work_group_size(%d, 1, 1)))\n"
                "void %s(__global const ushort *A, __global const ushort *B, __global %s *C, long M, long N, long Kp,\n"
                "                   long sa, long sb, int beta, long oa, long ob, long oc, long kt_per, int splits, long lda, long ldb, long Kv) {\n"
                "  __local uint4 sm[%d];\n"
                "  const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;\n"
                "  const int wm0 = (warp / %d) * %d, wn0 = (warp %% %d) * %d;\n"
                "  const long n0 = (long)get_group_id(0) * %d, m0 = (long)get_group_id(1) * %d, z = get_global_id(2);\n"
                "  const long q = z / splits, sp = z %% splits;\n"
                "  A += oa + q * sa + m0 * lda; B += ob + q * sb + n0 * ldb;\n"
                "  if (splits > 1) { C += oc + z * M * N; beta = 0; } else C += oc + q * M * N;\n"
                "  const long kt0 = sp * kt_per, nkt_all = Kp / %d;\n"
                "  const int nk = (int)(kt0 + kt_per < nkt_all ? kt_per : nkt_all - kt0);\n"
                "  float acc[%d][%d][4];\n"
                "#pragma unroll\n"
                "  for (int i = 0; i < %d; i++)\n"
                "#pragma unroll\n"
                "    for (int j = 0; j < %d; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;\n",
                emu ? "scalar emulation" : "cp.async ring, ldmatrix, mma.sync m16n8k16", BM, BN, WM, WN, BK, S, CPR, CPR, NTH, name,
                cbf ? "ushort" : "float", S * STG, WX,
                WM, WX, WN, BN, BM, BK, MT, NT, MT, NT);
  if (!emu) nc_buf_puts(o, "  const uint sbase = (uint)(ulong)sm;\n");
  const char *commit = emu ? "" : "asm volatile(\"cp.async.commit_group;\" ::: \"memory\");";
  char wait[96] = "";
  if (!emu) snprintf(wait, sizeof wait, "asm volatile(\"cp.async.wait_group %d;\" ::: \"memory\");", S - 2);
  nc_buf_printf(o, "  for (int s = 0; s < %d; s++) {\n    if (s < nk) {\n      const int lkt = s, lslot = s;\n", S - 1);
  nc_oe_tc_load(o, emu, zf, BK, CA, CB, NTH, CPR, STG, BM);
  nc_buf_printf(o,
                "    }\n    %s\n  }\n"
                "  for (int kt = 0; kt < nk; kt++) {\n"
                "    %s\n"
                "    barrier(CLK_LOCAL_MEM_FENCE);\n"
                "    if (kt + %d < nk) {\n      const int lkt = kt + %d, lslot = (kt + %d) %% %d;\n",
                commit, wait, S - 1, S - 1, S - 1, S);
  nc_oe_tc_load(o, emu, zf, BK, CA, CB, NTH, CPR, STG, BM);
  nc_buf_printf(o,
                "    }\n"
                "    %s\n"
                "    const int slot = kt %% %d;\n"
                "#pragma unroll\n"
                "    for (int ks = 0; ks < %d; ks += 16) {\n",
                commit, S, BK);
  if (!emu) {
    nc_buf_printf(o,
                  "      uint af[%d][4], bfr[%d][2];\n"
                  "#pragma unroll\n"
                  "      for (int i = 0; i < %d; i++) {\n"
                  "        int row = wm0 + i * 16 + (lane & 15), c = ks / 8 + (lane >> 4);\n"
                  "        uint ad = sbase + (uint)(slot * %d + row * %d + NC_SWZ(row, c)) * 16u;\n"
                  "        asm volatile(\"ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%%0,%%1,%%2,%%3}, [%%4];\"\n"
                  "                     : \"=r\"(af[i][0]), \"=r\"(af[i][1]), \"=r\"(af[i][2]), \"=r\"(af[i][3]) : \"r\"(ad) NC_LDM_CLOBBER);\n"
                  "      }\n"
                  "#pragma unroll\n"
                  "      for (int j = 0; j < %d; j += 2) {\n"
                  "        int row = wn0 + j * 8 + (lane & 7) + ((lane >> 4) << 3), c = ks / 8 + ((lane >> 3) & 1);\n"
                  "        uint ad = sbase + (uint)(slot * %d + %d + row * %d + NC_SWZ(row, c)) * 16u;\n"
                  "        asm volatile(\"ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%%0,%%1,%%2,%%3}, [%%4];\"\n"
                  "                     : \"=r\"(bfr[j][0]), \"=r\"(bfr[j][1]), \"=r\"(bfr[j + 1][0]), \"=r\"(bfr[j + 1][1]) : \"r\"(ad) NC_LDM_CLOBBER);\n"
                  "      }\n"
                  "#pragma unroll\n"
                  "      for (int i = 0; i < %d; i++)\n"
                  "#pragma unroll\n"
                  "        for (int j = 0; j < %d; j++) {\n"
                  "          float d0, d1, d2, d3;\n"
                  "          asm NC_MMA_Q(\"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%%0,%%1,%%2,%%3}, {%%4,%%5,%%6,%%7}, {%%8,%%9}, {%%10,%%11,%%12,%%13};\"\n"
                  "                       : \"=f\"(d0), \"=f\"(d1), \"=f\"(d2), \"=f\"(d3)\n"
                  "                       : \"r\"(af[i][0]), \"r\"(af[i][1]), \"r\"(af[i][2]), \"r\"(af[i][3]), \"r\"(bfr[j][0]), \"r\"(bfr[j][1]),\n"
                  "                         \"f\"(acc[i][j][0]), \"f\"(acc[i][j][1]), \"f\"(acc[i][j][2]), \"f\"(acc[i][j][3]));\n"
                  "          acc[i][j][0] = d0; acc[i][j][1] = d1; acc[i][j][2] = d2; acc[i][j][3] = d3;\n"
                  "        }\n",
                  MT, NT, MT, STG, CPR, NT, STG, BM * CPR, CPR, MT, NT);
  } else {
    // element (row, k) of a slot's A (or B, rows after BM) slice: piece NC_SWZ(row, k / 8), half k % 8
    nc_buf_printf(o,
                  "      __local const ushort *h = (__local const ushort *)sm;\n"
                  "      for (int i = 0; i < %d; i++)\n"
                  "        for (int j = 0; j < %d; j++)\n"
                  "          for (int hh = 0; hh < 4; hh++) {\n"
                  "            int mr = wm0 + i * 16 + g + (hh >> 1) * 8, nr = wn0 + j * 8 + 2 * t + (hh & 1);\n"
                  "            float s = acc[i][j][hh];\n"
                  "            for (int kq = ks; kq < ks + 16; kq++) {\n"
                  "              float a = nc_bf2f(h[(slot * %d + mr * %d + NC_SWZ(mr, kq / 8)) * 8 + kq %% 8]);\n"
                  "              float b = nc_bf2f(h[(slot * %d + %d + nr * %d + NC_SWZ(nr, kq / 8)) * 8 + kq %% 8]);\n"
                  "              s = fma(a, b, s);\n"
                  "            }\n"
                  "            acc[i][j][hh] = s;\n"
                  "          }\n",
                  MT, NT, STG, CPR, STG, BM * CPR, CPR);
  }
  nc_buf_printf(o,
                "    }\n"
                "  }\n"
                "#pragma unroll\n"
                "  for (int i = 0; i < %d; i++)\n"
                "#pragma unroll\n"
                "    for (int j = 0; j < %d; j++)\n"
                "#pragma unroll\n"
                "      for (int hh = 0; hh < 4; hh++) {\n"
                "        long m = m0 + wm0 + i * 16 + g + (hh >> 1) * 8, n = n0 + wn0 + j * 8 + 2 * t + (hh & 1);\n"
                "        if (m < M && n < N) C[m * N + n] = %s;\n"
                "      }\n"
                "}\n"
                "#undef NC_SWZ\n\n",
                MT, NT, cbf ? "nc_f2bf(beta ? nc_bf2f(C[m * N + n]) + acc[i][j][hh] : acc[i][j][hh])" : "beta ? C[m * N + n] + acc[i][j][hh] : acc[i][j][hh]");
}

void nc_ocl_emit_gemm(const nc_ocl_knobs *kn, int variant, nc_buf *o) {
  if (kn->gemm_tc) {
    nc_oe_gemm_tc(kn, variant, o);
    return;
  }
  int TM = kn->gemm_tm, TN = kn->gemm_tn, TK = kn->gemm_tk, WM = kn->gemm_wm, WN = kn->gemm_wn;
  int LX = TN / WN, LY = TM / WM, NT = LX * LY;
  bool ta = variant & 2, tb = variant & 1, bf = variant & NC_OCL_GEMM_BF16;
  const char *nm = nc_ocl_gemm_name(variant), *ty = bf ? "ushort" : "float";
  nc_oe_gemm_access(o, bf);
  // A(m, k) = ta ? A[k*M + m] : A[m*K + k]; B(k, n) = tb ? B[n*K + k] : B[k*N + n]
  nc_buf_printf(o,
                "// C (+)= op(A) @ op(B): %dx%d tiles, depth %d, %dx%d per work-item (ta=%d tb=%d), %s buffers\n"
                "__kernel __attribute__((reqd_work_group_size(%d, %d, 1)))\n"
                "void %s(__global const %s *A, __global const %s *B, __global %s *C, long M, long N, long K,\n"
                "        long sa, long sb, int beta, long oa, long ob, long oc) {\n"
                "  __local float As[%d][%d];\n"
                "  __local float Bs[%d][%d];\n"
                "  const int tx = get_local_id(0), ty = get_local_id(1), tid = ty * %d + tx;\n"
                "  const long n0 = (long)get_group_id(0) * %d, m0 = (long)get_group_id(1) * %d, q = get_global_id(2);\n"
                "  A += oa + q * sa; B += ob + q * sb; C += oc + q * M * N;\n"
                "  float acc[%d][%d];\n"
                "  for (int i = 0; i < %d; i++) for (int j = 0; j < %d; j++) acc[i][j] = 0.0f;\n"
                "  for (long k0 = 0; k0 < K; k0 += %d) {\n",
                TM, TN, TK, WM, WN, ta, tb, bf ? "bf16" : "f32", LX, LY, nm, ty, ty, ty, TK, TM + 1, TK, TN + 1, LX, TN, TM, WM, WN, WM, WN, TK);
  // tile loads: consecutive work-items read consecutive addresses
  if (!ta)
    nc_buf_printf(o,
                  "    for (int e = tid; e < %d; e += %d) { int kk = e %% %d, mm = e / %d; long gm = m0 + mm, gk = k0 + kk;\n"
                  "      As[kk][mm] = gm < M && gk < K ? NC_GL(A[gm * K + gk]) : 0.0f; }\n",
                  TM * TK, NT, TK, TK);
  else
    nc_buf_printf(o,
                  "    for (int e = tid; e < %d; e += %d) { int mm = e %% %d, kk = e / %d; long gm = m0 + mm, gk = k0 + kk;\n"
                  "      As[kk][mm] = gm < M && gk < K ? NC_GL(A[gk * M + gm]) : 0.0f; }\n",
                  TM * TK, NT, TM, TM);
  if (!tb)
    nc_buf_printf(o,
                  "    for (int e = tid; e < %d; e += %d) { int nn = e %% %d, kk = e / %d; long gn = n0 + nn, gk = k0 + kk;\n"
                  "      Bs[kk][nn] = gn < N && gk < K ? NC_GL(B[gk * N + gn]) : 0.0f; }\n",
                  TN * TK, NT, TN, TN);
  else
    nc_buf_printf(o,
                  "    for (int e = tid; e < %d; e += %d) { int kk = e %% %d, nn = e / %d; long gn = n0 + nn, gk = k0 + kk;\n"
                  "      Bs[kk][nn] = gn < N && gk < K ? NC_GL(B[gn * K + gk]) : 0.0f; }\n",
                  TN * TK, NT, TK, TK);
  nc_buf_printf(o,
                "    barrier(CLK_LOCAL_MEM_FENCE);\n"
                "    for (int kk = 0; kk < %d; kk++) {\n"
                "      float a[%d], b[%d];\n"
                "      for (int i = 0; i < %d; i++) a[i] = As[kk][ty + i * %d];\n"
                "      for (int j = 0; j < %d; j++) b[j] = Bs[kk][tx + j * %d];\n"
                "      for (int i = 0; i < %d; i++) for (int j = 0; j < %d; j++) acc[i][j] = fma(a[i], b[j], acc[i][j]);\n"
                "    }\n"
                "    barrier(CLK_LOCAL_MEM_FENCE);\n"
                "  }\n"
                "  for (int i = 0; i < %d; i++) {\n"
                "    long m = m0 + ty + i * %d;\n"
                "    if (m >= M) break;\n"
                "    for (int j = 0; j < %d; j++) {\n"
                "      long n = n0 + tx + j * %d;\n"
                "      if (n < N) C[m * N + n] = NC_GS(beta ? NC_GL(C[m * N + n]) + acc[i][j] : acc[i][j]);\n"
                "    }\n"
                "  }\n"
                "}\n#undef NC_GL\n#undef NC_GS\n\n",
                TK, WM, WN, WM, LY, WN, LX, WM, WN, WM, LY, WN, LX);
}

// ---- loop kernels ------------------------------------------------------------

typedef struct {
  const nc_kernel *k;
  nc_buf *o;
  unsigned char *memo;  // per expression: emitted as a temporary x<i> in the current statement
  int depth;            // indentation
  nc_status st;
} nc_oe;

static bool nc_isf(nc_dtype t) { return nc_dtype_is_float(t); }

static const char *nc_oe_reg(nc_dtype t) {
  switch (t) {
    case NC_F32: case NC_BF16: case NC_F16: return "float";
    case NC_I32: return "int";
    case NC_I64: return "long";
    case NC_U8: return "uchar";
    case NC_BOOL: return "int";
    default: return "?";
  }
}

static const char *nc_oe_mem(nc_dtype t) {
  switch (t) {
    case NC_F32: return "float";
    case NC_BF16: return "ushort";
    case NC_F16: return "half";
    case NC_I32: return "int";
    case NC_I64: return "long";
    case NC_U8: case NC_BOOL: return "uchar";
    default: return "?";
  }
}

static void nc_oe_indent(nc_oe *e) {
  for (int i = 0; i < e->depth; i++) nc_buf_puts(e->o, "  ");
}

// Wraps text into the rounding of a bf16/f16 register.
static const char *nc_oe_round_fn(nc_dtype t) { return t == NC_BF16 ? "nc_rbf" : t == NC_F16 ? "nc_rh" : ""; }

static void nc_oe_float_lit(nc_buf *o, double v, nc_dtype t) {
  float f = (float)v;
  if (t == NC_BF16) f = nc_bf16_to_f32(nc_f32_to_bf16(f));
  if (t == NC_F16) f = nc_f16_to_f32(nc_f32_to_f16(f));
  if (isnan(f)) nc_buf_puts(o, "NAN");
  else if (isinf(f)) nc_buf_puts(o, f > 0 ? "INFINITY" : "(-INFINITY)");
  else nc_buf_printf(o, "(%af)", (double)f);
}

static void nc_oe_int_lit(nc_buf *o, int64_t v, nc_dtype t) {
  switch (t) {
    case NC_I64:
      if (v == INT64_MIN) nc_buf_puts(o, "(-9223372036854775807L - 1L)");
      else nc_buf_printf(o, "%lldL", (long long)v);
      break;
    case NC_I32:
      if ((int32_t)v == INT32_MIN) nc_buf_puts(o, "(-2147483647 - 1)");
      else nc_buf_printf(o, "%d", (int32_t)v);
      break;
    case NC_U8: nc_buf_printf(o, "((uchar)%u)", (unsigned)(uint8_t)v); break;
    default: nc_buf_printf(o, "%d", v != 0); break;
  }
}

static void nc_oe_x(nc_oe *e, nc_kx x);

// The text naming an already emitted (or trivial) expression.
static void nc_oe_ref(nc_oe *e, nc_kx x) {
  const nc_kexpr *ex = &e->k->x[x];
  switch (ex->kind) {
    case NC_KX_CONST:
      if (nc_isf(ex->dtype)) nc_oe_float_lit(e->o, ex->fval, ex->dtype);
      else nc_oe_int_lit(e->o, ex->ival, ex->dtype);
      return;
    case NC_KX_ARG: nc_buf_printf(e->o, "a%lld", (long long)ex->ival); return;
    case NC_KX_VAR: nc_buf_printf(e->o, "i%lld", (long long)ex->ival); return;
    case NC_KX_ACC: nc_buf_printf(e->o, "acc%lld", (long long)ex->ival); return;
    default: nc_buf_printf(e->o, "x%d", x); return;
  }
}

#define R(x) nc_oe_ref(e, x)
#define P(s) nc_buf_puts(o, s)

static void nc_oe_unary(nc_oe *e, const nc_kexpr *ex) {
  nc_buf *o = e->o;
  nc_kx a = ex->a;
  if (nc_isf(ex->dtype)) {
    const char *rf = nc_oe_round_fn(ex->dtype);
    nc_buf_printf(o, "%s(", rf);
    switch (ex->op) {
      case NC_KOP_NEG: P("-"), R(a); break;
      case NC_KOP_ABS: P("fabs("), R(a), P(")"); break;
      case NC_KOP_RELU: P("("), R(a), P(" > 0.0f || isnan("), R(a), P(") ? "), R(a), P(" : 0.0f)"); break;
      case NC_KOP_SQUARE: R(a), P(" * "), R(a); break;
      case NC_KOP_TANH: P("tanh("), R(a), P(")"); break;
      case NC_KOP_EXP: P("exp("), R(a), P(")"); break;
      case NC_KOP_LOG: P("log("), R(a), P(")"); break;
      case NC_KOP_SQRT: P("sqrt("), R(a), P(")"); break;
      case NC_KOP_RSQRT: P("1.0f / sqrt("), R(a), P(")"); break;
      case NC_KOP_SIGMOID: P("1.0f / (1.0f + exp(-"), R(a), P("))"); break;
      case NC_KOP_SIN: P("sin("), R(a), P(")"); break;
      case NC_KOP_COS: P("cos("), R(a), P(")"); break;
      case NC_KOP_POWC: P("pow("), R(a), P(", "), nc_oe_float_lit(o, ex->fval, NC_F32), P(")"); break;
      default:
        if (!e->st) e->st = nc_errorf(NC_E_UNSUPPORTED, "kernel %s: unary %s on %s has no OpenCL form", e->k->name, nc_kop_name(ex->op), nc_dtype_name(ex->dtype));
        P("0.0f");
    }
    P(")");
    return;
  }
  nc_buf_printf(o, "(%s)(", nc_oe_reg(ex->dtype));
  switch (ex->op) {
    case NC_KOP_NEG: P("-"), R(a); break;
    case NC_KOP_ABS: R(a), P(" < 0 ? -"), R(a), P(" : "), R(a); break;
    case NC_KOP_RELU: R(a), P(" > 0 ? "), R(a), P(" : 0"); break;
    case NC_KOP_SQUARE: R(a), P(" * "), R(a); break;
    case NC_KOP_NOT: P("!"), R(a); break;
    default:
      if (!e->st) e->st = nc_errorf(NC_E_UNSUPPORTED, "kernel %s: unary %s on %s has no OpenCL form", e->k->name, nc_kop_name(ex->op), nc_dtype_name(ex->dtype));
      P("0");
  }
  P(")");
}

static void nc_oe_binary(nc_oe *e, const nc_kexpr *ex) {
  nc_buf *o = e->o;
  nc_kx a = ex->a, b = ex->b;
  nc_dtype ot = e->k->x[a].dtype;
  const char *cmp = NULL;
  switch (ex->op) {
    case NC_KOP_EQ: cmp = " == "; break;
    case NC_KOP_NE: cmp = " != "; break;
    case NC_KOP_LT: cmp = " < "; break;
    case NC_KOP_LE: cmp = " <= "; break;
    case NC_KOP_GT: cmp = " > "; break;
    case NC_KOP_GE: cmp = " >= "; break;
    default: break;
  }
  if (cmp) {
    P("(int)("), R(a), P(cmp), R(b), P(")");
    return;
  }
  if (nc_isf(ot)) {
    nc_buf_printf(o, "%s(", nc_oe_round_fn(ex->dtype));
    switch (ex->op) {
      case NC_KOP_ADD: R(a), P(" + "), R(b); break;
      case NC_KOP_SUB: R(a), P(" - "), R(b); break;
      case NC_KOP_MUL: R(a), P(" * "), R(b); break;
      case NC_KOP_DIV: R(a), P(" / "), R(b); break;
      case NC_KOP_MAX: P("nc_fmaxn("), R(a), P(", "), R(b), P(")"); break;
      case NC_KOP_MIN: P("nc_fminn("), R(a), P(", "), R(b), P(")"); break;
      default:
        if (!e->st) e->st = nc_errorf(NC_E_UNSUPPORTED, "kernel %s: binary %s on %s has no OpenCL form", e->k->name, nc_kop_name(ex->op), nc_dtype_name(ot));
        P("0.0f");
    }
    P(")");
    return;
  }
  nc_buf_printf(o, "(%s)(", nc_oe_reg(ex->dtype));
  switch (ex->op) {
    case NC_KOP_ADD: R(a), P(" + "), R(b); break;
    case NC_KOP_SUB: R(a), P(" - "), R(b); break;
    case NC_KOP_MUL: R(a), P(" * "), R(b); break;
    case NC_KOP_DIV:
    case NC_KOP_IDIV: R(b), P(" ? "), R(a), P(" / "), R(b), P(" : 0"); break;
    case NC_KOP_IMOD: R(b), P(" ? "), R(a), P(" % "), R(b), P(" : 0"); break;
    case NC_KOP_MAX: R(a), P(" > "), R(b), P(" ? "), R(a), P(" : "), R(b); break;
    case NC_KOP_MIN: R(a), P(" < "), R(b), P(" ? "), R(a), P(" : "), R(b); break;
    case NC_KOP_AND: R(a), P(" && "), R(b); break;
    case NC_KOP_OR: R(a), P(" || "), R(b); break;
    default:
      if (!e->st) e->st = nc_errorf(NC_E_UNSUPPORTED, "kernel %s: binary %s on %s has no OpenCL form", e->k->name, nc_kop_name(ex->op), nc_dtype_name(ot));
      P("0");
  }
  P(")");
}

static void nc_oe_cast(nc_oe *e, const nc_kexpr *ex) {
  nc_buf *o = e->o;
  nc_dtype from = e->k->x[ex->a].dtype, to = ex->dtype;
  nc_kx a = ex->a;
  if (nc_isf(to)) {
    nc_buf_printf(o, "%s((float)", nc_oe_round_fn(to)), R(a), P(")");
  } else if (to == NC_BOOL) {
    P("(int)("), R(a), P(nc_isf(from) ? " != 0.0f)" : " != 0)");
  } else if (nc_isf(from)) {  // saturating, toward zero, NaN -> 0 (the CPU backend's fptosi.sat)
    nc_buf_printf(o, "convert_%s_sat(", to == NC_I32 ? "int" : to == NC_I64 ? "long" : "uchar"), R(a), P(")");
  } else {
    nc_buf_printf(o, "(%s)(", nc_oe_reg(to)), R(a), P(")");
  }
}

static void nc_oe_load(nc_oe *e, const nc_kexpr *ex) {
  nc_buf *o = e->o;
  int b = (int)ex->ival;
  switch (e->k->bufs[b].dtype) {
    case NC_BF16: nc_buf_printf(o, "nc_bf2f(b%d[", b), R(ex->a), P("])"); break;
    case NC_F16: P("vload_half("), R(ex->a), nc_buf_printf(o, ", b%d)", b); break;
    case NC_BOOL: nc_buf_printf(o, "(int)(b%d[", b), R(ex->a), P("] != 0)"); break;
    default: nc_buf_printf(o, "b%d[", b), R(ex->a), P("]"); break;
  }
}

// Emits the temporaries that x needs, then x itself (unless trivial).
static void nc_oe_x(nc_oe *e, nc_kx x) {
  if (x < 0 || x >= e->k->nx) {
    if (!e->st) e->st = nc_errorf(NC_E_INTERNAL, "kernel %s: expression %d out of range", e->k->name, x);
    return;
  }
  const nc_kexpr *ex = &e->k->x[x];
  if (ex->kind == NC_KX_CONST || ex->kind == NC_KX_ARG || ex->kind == NC_KX_VAR || ex->kind == NC_KX_ACC) return;
  if (e->memo[x]) return;
  e->memo[x] = 1;
  if (ex->kind == NC_KX_SELECT) {  // keep the branches lazy: loads on the other side may be out of range
    nc_oe_x(e, ex->a);
    nc_oe_indent(e);
    nc_buf_printf(e->o, "%s x%d;\n", nc_oe_reg(ex->dtype), x);
    nc_oe_indent(e);
    nc_buf_puts(e->o, "if ("), nc_oe_ref(e, ex->a), nc_buf_puts(e->o, ") {\n");
    e->depth++;
    unsigned char *save = malloc((size_t)e->k->nx);
    if (save) memcpy(save, e->memo, (size_t)e->k->nx);
    nc_oe_x(e, ex->b);
    nc_oe_indent(e);
    nc_buf_printf(e->o, "x%d = ", x), nc_oe_ref(e, ex->b), nc_buf_puts(e->o, ";\n");
    if (save) memcpy(e->memo, save, (size_t)e->k->nx);
    e->depth--;
    nc_oe_indent(e);
    nc_buf_puts(e->o, "} else {\n");
    e->depth++;
    nc_oe_x(e, ex->c);
    nc_oe_indent(e);
    nc_buf_printf(e->o, "x%d = ", x), nc_oe_ref(e, ex->c), nc_buf_puts(e->o, ";\n");
    if (save) memcpy(e->memo, save, (size_t)e->k->nx);
    e->depth--;
    nc_oe_indent(e);
    nc_buf_puts(e->o, "}\n");
    free(save);
    if (!save && !e->st) e->st = nc_errorf(NC_E_NOMEM, "out of memory");
    return;
  }
  if (ex->a >= 0) nc_oe_x(e, ex->a);
  if (ex->b >= 0) nc_oe_x(e, ex->b);
  nc_oe_indent(e);
  nc_buf_printf(e->o, "const %s x%d = ", nc_oe_reg(ex->dtype), x);
  switch (ex->kind) {
    case NC_KX_LOAD: nc_oe_load(e, ex); break;
    case NC_KX_UNARY: nc_oe_unary(e, ex); break;
    case NC_KX_BINARY: nc_oe_binary(e, ex); break;
    case NC_KX_CAST: nc_oe_cast(e, ex); break;
    default:
      if (!e->st) e->st = nc_errorf(NC_E_INTERNAL, "kernel %s: expression kind %d", e->k->name, (int)ex->kind);
  }
  nc_buf_puts(e->o, ";\n");
}

// One statement's expressions live in their own C block (fresh temporaries).
static void nc_oe_open(nc_oe *e) {
  memset(e->memo, 0, (size_t)e->k->nx);
  nc_oe_indent(e);
  nc_buf_puts(e->o, "{\n");
  e->depth++;
}

static void nc_oe_close(nc_oe *e) {
  e->depth--;
  nc_oe_indent(e);
  nc_buf_puts(e->o, "}\n");
}

static void nc_oe_block(nc_oe *e, nc_ks s);

static void nc_oe_store(nc_oe *e, const nc_kstmt *t) {
  nc_oe_open(e);
  nc_oe_x(e, t->index);
  nc_oe_x(e, t->value);
  nc_oe_indent(e);
  nc_buf *o = e->o;
  int b = t->buf;
  switch (e->k->bufs[b].dtype) {
    case NC_BF16: nc_buf_printf(o, "b%d[", b), R(t->index), P("] = nc_f2bf("), R(t->value), P(");\n"); break;
    case NC_F16: P("vstore_half_rte("), R(t->value), P(", "), R(t->index), nc_buf_printf(o, ", b%d);\n", b); break;
    case NC_BOOL: nc_buf_printf(o, "b%d[", b), R(t->index), P("] = (uchar)("), R(t->value), P(" != 0);\n"); break;
    default: nc_buf_printf(o, "b%d[", b), R(t->index), nc_buf_printf(o, "] = (%s)", nc_oe_mem(e->k->bufs[b].dtype)), R(t->value), P(";\n"); break;
  }
  nc_oe_close(e);
}

static void nc_oe_acc(nc_oe *e, const nc_kstmt *t) {
  nc_buf *o = e->o;
  nc_oe_open(e);
  nc_oe_x(e, t->value);
  nc_oe_indent(e);
  int a = t->acc;
  nc_dtype dt = e->k->accs[a];
  if (t->kind == NC_KS_ACC_INIT) {
    nc_buf_printf(o, "acc%d = ", a), R(t->value), P(";\n");
  } else if (nc_isf(dt)) {
    if (t->op == NC_KOP_MAX) nc_buf_printf(o, "acc%d = nc_fmaxn(acc%d, ", a, a), R(t->value), P(");\n");
    else nc_buf_printf(o, "acc%d = %s(acc%d + ", a, nc_oe_round_fn(dt), a), R(t->value), P(");\n");
  } else {
    if (t->op == NC_KOP_MAX) nc_buf_printf(o, "acc%d = acc%d > ", a, a), R(t->value), nc_buf_printf(o, " ? acc%d : ", a), R(t->value), P(";\n");
    else nc_buf_printf(o, "acc%d = (%s)(acc%d + ", a, nc_oe_reg(dt), a), R(t->value), P(");\n");
  }
  nc_oe_close(e);
}

static void nc_oe_for(nc_oe *e, const nc_kstmt *t) {
  nc_buf *o = e->o;
  nc_oe_open(e);
  nc_oe_x(e, t->begin);
  nc_oe_x(e, t->end);
  nc_oe_indent(e);
  nc_buf_printf(o, "for (i%d = ", t->var), R(t->begin), nc_buf_printf(o, "; i%d < ", t->var), R(t->end), nc_buf_printf(o, "; i%d++) {\n", t->var);
  e->depth++;
  nc_oe_block(e, t->body);
  e->depth--;
  nc_oe_indent(e);
  P("}\n");
  nc_oe_close(e);
}

static void nc_oe_block(nc_oe *e, nc_ks s) {
  for (; s != NC_KS_NONE && !e->st; s = e->k->s[s].next) {
    const nc_kstmt *t = &e->k->s[s];
    switch (t->kind) {
      case NC_KS_FOR: nc_oe_for(e, t); break;
      case NC_KS_STORE: nc_oe_store(e, t); break;
      case NC_KS_ACC_INIT:
      case NC_KS_ACC_UPDATE: nc_oe_acc(e, t); break;
      case NC_KS_CALL:
        e->st = nc_errorf(NC_E_UNSUPPORTED, "kernel %s: a %s template call inside a loop nest has no OpenCL lowering", e->k->name,
                          nc_ktemplate_name(t->tmpl));
        break;
    }
  }
}

#undef R
#undef P

// ---- collapsing the parallel nest ----------------------------------------------

// True when x depends only on constants and kernel arguments.
static bool nc_oe_args_only(const nc_kernel *k, nc_kx x) {
  if (x < 0) return true;
  const nc_kexpr *ex = &k->x[x];
  switch (ex->kind) {
    case NC_KX_CONST: case NC_KX_ARG: return true;
    case NC_KX_UNARY: case NC_KX_BINARY: case NC_KX_SELECT: case NC_KX_CAST:
      return nc_oe_args_only(k, ex->a) && nc_oe_args_only(k, ex->b) && nc_oe_args_only(k, ex->c);
    default: return false;
  }
}

// True when var appears in x outside of any load's index.
static bool nc_oe_uses_var_directly(const nc_kernel *k, nc_kx x, int var) {
  if (x < 0) return false;
  const nc_kexpr *ex = &k->x[x];
  if (ex->kind == NC_KX_VAR) return ex->ival == var;
  if (ex->kind == NC_KX_LOAD) return false;
  return nc_oe_uses_var_directly(k, ex->a, var) || nc_oe_uses_var_directly(k, ex->b, var) ||
         nc_oe_uses_var_directly(k, ex->c, var);
}

static void nc_oe_loads(const nc_kernel *k, nc_kx x, uint64_t *bufs) {
  if (x < 0) return;
  const nc_kexpr *ex = &k->x[x];
  if (ex->kind == NC_KX_LOAD) *bufs |= 1ull << ex->ival;
  nc_oe_loads(k, ex->a, bufs);
  nc_oe_loads(k, ex->b, bufs);
  nc_oe_loads(k, ex->c, bufs);
}

// Which buffers the block reads and writes; false if a store's index does not
// use var directly (iterations of var might then write the same element).
static bool nc_oe_scan(const nc_kernel *k, nc_ks s, int var, uint64_t *rd, uint64_t *wr) {
  bool ok = true;
  for (; s != NC_KS_NONE; s = k->s[s].next) {
    const nc_kstmt *t = &k->s[s];
    switch (t->kind) {
      case NC_KS_FOR:
        nc_oe_loads(k, t->begin, rd), nc_oe_loads(k, t->end, rd);
        ok &= nc_oe_scan(k, t->body, var, rd, wr);
        break;
      case NC_KS_STORE:
        nc_oe_loads(k, t->index, rd), nc_oe_loads(k, t->value, rd);
        *wr |= 1ull << t->buf;
        ok &= nc_oe_uses_var_directly(k, t->index, var);
        break;
      case NC_KS_ACC_INIT:
      case NC_KS_ACC_UPDATE: nc_oe_loads(k, t->value, rd); break;
      case NC_KS_CALL: ok = false; break;
    }
  }
  return ok;
}

// Fills L with the collapsible loop chain from the top; returns the chain's
// innermost loop (or NC_KS_NONE).
static nc_ks nc_oe_collapse(const nc_kernel *k, nc_ocl_launch *L) {
  L->ncollapse = 0;
  nc_ks s = k->body;
  if (s == NC_KS_NONE || k->s[s].kind != NC_KS_FOR || k->s[s].next != NC_KS_NONE) return NC_KS_NONE;
  if (!(k->s[s].sched & NC_KSCHED_PARALLEL)) return NC_KS_NONE;
  if (!nc_oe_args_only(k, k->s[s].begin) || !nc_oe_args_only(k, k->s[s].end)) return NC_KS_NONE;
  nc_ks last = s;
  L->begin[0] = k->s[s].begin, L->end[0] = k->s[s].end, L->ncollapse = 1;
  while (L->ncollapse < NC_OCL_MAX_COLLAPSE) {
    nc_ks in = k->s[last].body;
    if (in == NC_KS_NONE || k->s[in].kind != NC_KS_FOR || k->s[in].next != NC_KS_NONE) break;
    const nc_kstmt *t = &k->s[in];
    if (!nc_oe_args_only(k, t->begin) || !nc_oe_args_only(k, t->end)) break;
    uint64_t rd = 0, wr = 0;
    if (!nc_oe_scan(k, t->body, t->var, &rd, &wr) || (rd & wr)) break;
    L->begin[L->ncollapse] = t->begin, L->end[L->ncollapse] = t->end;
    L->ncollapse++;
    last = in;
  }
  return last;
}

// ---- whole-buffer reductions on one work-group --------------------------------------

static bool nc_oe_uses_acc(const nc_kernel *k, nc_kx x) {
  if (x < 0) return false;
  const nc_kexpr *ex = &k->x[x];
  if (ex->kind == NC_KX_ACC) return true;
  return nc_oe_uses_acc(k, ex->a) || nc_oe_uses_acc(k, ex->b) || nc_oe_uses_acc(k, ex->c);
}

// The loop's subtree holds only loops and accumulator updates (ADD or MAX, one op
// per accumulator, values that read no accumulator); ops[a] records each op.
static bool nc_oe_reduce_body(const nc_kernel *k, nc_ks s, int *ops) {
  for (; s != NC_KS_NONE; s = k->s[s].next) {
    const nc_kstmt *t = &k->s[s];
    if (t->kind == NC_KS_FOR) {
      if (nc_oe_uses_acc(k, t->begin) || nc_oe_uses_acc(k, t->end) || !nc_oe_reduce_body(k, t->body, ops)) return false;
    } else if (t->kind == NC_KS_ACC_UPDATE) {
      if (t->op != NC_KOP_ADD && t->op != NC_KOP_MAX) return false;
      if (ops[t->acc] >= 0 && ops[t->acc] != (int)t->op) return false;
      if (nc_oe_uses_acc(k, t->value)) return false;
      ops[t->acc] = (int)t->op;
    } else {
      return false;
    }
  }
  return true;
}

// body = ACC_INIT(const)... ; FOR (argument bounds) { updates } ; rest. Returns the loop.
static nc_ks nc_oe_reduce_shape(const nc_kernel *k, int *ops) {
  for (int a = 0; a < NC_KERNEL_MAX_ACCS; a++) ops[a] = -1;
  bool inited[NC_KERNEL_MAX_ACCS] = {false};
  double initv[NC_KERNEL_MAX_ACCS] = {0};
  nc_ks s = k->body;
  for (; s != NC_KS_NONE && k->s[s].kind == NC_KS_ACC_INIT; s = k->s[s].next) {
    const nc_kexpr *v = &k->x[k->s[s].value];
    if (v->kind != NC_KX_CONST) return NC_KS_NONE;
    inited[k->s[s].acc] = true;
    initv[k->s[s].acc] = nc_dtype_is_float(v->dtype) ? v->fval : (double)v->ival;
  }
  if (s == NC_KS_NONE || k->s[s].kind != NC_KS_FOR) return NC_KS_NONE;
  const nc_kstmt *loop = &k->s[s];
  if (!nc_oe_args_only(k, loop->begin) || !nc_oe_args_only(k, loop->end)) return NC_KS_NONE;
  if (!nc_oe_reduce_body(k, loop->body, ops)) return NC_KS_NONE;
  bool any = false;
  for (int a = 0; a < k->naccs; a++) {
    if (ops[a] < 0) continue;
    nc_dtype dt = k->accs[a];
    if (!inited[a] || (dt != NC_F32 && dt != NC_I32 && dt != NC_I64)) return NC_KS_NONE;
    if (ops[a] == NC_KOP_ADD && initv[a] != 0) return NC_KS_NONE;  // every work-item starts from the init value
    any = true;
  }
  return any ? s : NC_KS_NONE;
}

static int nc_oe_pow2_floor(int v) {
  int p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

static void nc_oe_emit_reduce(nc_oe *e, nc_ks loop_s, const int *ops, int W) {
  const nc_kernel *k = e->k;
  nc_buf *o = e->o;
  const nc_kstmt *loop = &k->s[loop_s];
  bool needf = false, needl = false;
  for (int a = 0; a < k->naccs; a++)
    if (ops[a] >= 0) {
      if (k->accs[a] == NC_F32) needf = true;
      else needl = true;
    }
  nc_buf_puts(o, "  const int nc_lid = get_local_id(0);\n");
  if (needf) nc_buf_printf(o, "  __local float nc_rf[%d];\n", W);
  if (needl) nc_buf_printf(o, "  __local long nc_rl[%d];\n", W);
  for (nc_ks s = k->body; s != loop_s; s = k->s[s].next) nc_oe_acc(e, &k->s[s]);
  // this work-item's share of the loop: iterations lid, lid + W, ...
  nc_oe_open(e);
  nc_oe_x(e, loop->begin);
  nc_oe_x(e, loop->end);
  nc_oe_indent(e);
  nc_buf_printf(o, "for (i%d = ", loop->var), nc_oe_ref(e, loop->begin), nc_buf_printf(o, " + nc_lid; i%d < ", loop->var);
  nc_oe_ref(e, loop->end), nc_buf_printf(o, "; i%d += %d) {\n", loop->var, W);
  e->depth++;
  nc_oe_block(e, loop->body);
  e->depth--;
  nc_oe_indent(e);
  nc_buf_puts(o, "}\n");
  nc_oe_close(e);
  for (int a = 0; a < k->naccs; a++) {
    if (ops[a] < 0) continue;
    bool f = k->accs[a] == NC_F32;
    const char *r = f ? "nc_rf" : "nc_rl";
    nc_buf_printf(o, "  %s[nc_lid] = acc%d;\n  barrier(CLK_LOCAL_MEM_FENCE);\n", r, a);
    nc_buf_printf(o, "  for (int s = %d; s > 0; s >>= 1) {\n    if (nc_lid < s) %s[nc_lid] = ", W / 2, r);
    if (ops[a] == NC_KOP_ADD) nc_buf_printf(o, "%s[nc_lid] + %s[nc_lid + s]", r, r);
    else if (f) nc_buf_printf(o, "nc_fmaxn(%s[nc_lid], %s[nc_lid + s])", r, r);
    else nc_buf_printf(o, "max(%s[nc_lid], %s[nc_lid + s])", r, r);
    nc_buf_printf(o, ";\n    barrier(CLK_LOCAL_MEM_FENCE);\n  }\n  acc%d = (%s)%s[0];\n  barrier(CLK_LOCAL_MEM_FENCE);\n", a,
                  nc_oe_reg(k->accs[a]), r);
  }
  nc_buf_puts(o, "  if (nc_lid != 0) return;\n");
  nc_oe_block(e, loop->next);
}

// ---- row kernels: one work-group per collapsed iteration ------------------------------

static uint32_t nc_oe_acc_reads(const nc_kernel *k, nc_kx x) {
  if (x < 0) return 0;
  const nc_kexpr *ex = &k->x[x];
  uint32_t m = ex->kind == NC_KX_ACC ? 1u << ex->ival : 0;
  return m | nc_oe_acc_reads(k, ex->a) | nc_oe_acc_reads(k, ex->b) | nc_oe_acc_reads(k, ex->c);
}

// Loads of statement s (and its body), into *rd.
static void nc_oe_stmt_loads(const nc_kernel *k, nc_ks s, uint64_t *rd) {
  const nc_kstmt *t = &k->s[s];
  switch (t->kind) {
    case NC_KS_FOR:
      nc_oe_loads(k, t->begin, rd), nc_oe_loads(k, t->end, rd);
      for (nc_ks b = t->body; b != NC_KS_NONE; b = k->s[b].next) nc_oe_stmt_loads(k, b, rd);
      break;
    case NC_KS_STORE: nc_oe_loads(k, t->index, rd), nc_oe_loads(k, t->value, rd); break;
    case NC_KS_ACC_INIT:
    case NC_KS_ACC_UPDATE: nc_oe_loads(k, t->value, rd); break;
    case NC_KS_CALL: *rd = ~0ull; break;
  }
}

// A loop of accumulator updates only: ops[a] per updated accumulator, *reads
// the accumulators its values and bounds read.
static bool nc_oe_red_loop(const nc_kernel *k, nc_ks s, int *ops, uint32_t *reads) {
  for (; s != NC_KS_NONE; s = k->s[s].next) {
    const nc_kstmt *t = &k->s[s];
    if (t->kind == NC_KS_FOR) {
      *reads |= nc_oe_acc_reads(k, t->begin) | nc_oe_acc_reads(k, t->end);
      if (!nc_oe_red_loop(k, t->body, ops, reads)) return false;
    } else if (t->kind == NC_KS_ACC_UPDATE) {
      if (t->op != NC_KOP_ADD && t->op != NC_KOP_MAX) return false;
      if (ops[t->acc] >= 0 && ops[t->acc] != (int)t->op) return false;
      ops[t->acc] = (int)t->op;
      *reads |= nc_oe_acc_reads(k, t->value);
    } else {
      return false;
    }
  }
  return true;
}

static bool nc_oe_has_acc_stmt(const nc_kernel *k, nc_ks s) {
  for (; s != NC_KS_NONE; s = k->s[s].next) {
    const nc_kstmt *t = &k->s[s];
    if (t->kind == NC_KS_ACC_INIT || t->kind == NC_KS_ACC_UPDATE || t->kind == NC_KS_CALL) return true;
    if (t->kind == NC_KS_FOR && nc_oe_has_acc_stmt(k, t->body)) return true;
  }
  return false;
}

enum { NC_SEG_SCALAR, NC_SEG_RED, NC_SEG_STORES };

// Classifies the block's statements (kind[i], and per reduction loop its
// accumulator ops); false when the block cannot run as a work-group: a
// statement reads a buffer an earlier one wrote (no global barrier between
// them), an accumulator of another dtype than f32/i32/i64 is split, a loop is
// neither a reduction nor independent stores.
static bool nc_oe_seg_check(const nc_kernel *k, nc_ks s, bool *needf, bool *needl) {
  uint64_t written = 0;
  bool split = false;
  for (; s != NC_KS_NONE; s = k->s[s].next) {
    const nc_kstmt *t = &k->s[s];
    uint64_t rd = 0;
    nc_oe_stmt_loads(k, s, &rd);
    if (rd & written) return false;
    if (t->kind == NC_KS_CALL) return false;
    if (t->kind == NC_KS_STORE) written |= 1ull << t->buf;
    if (t->kind != NC_KS_FOR) continue;
    int ops[NC_KERNEL_MAX_ACCS];
    for (int a = 0; a < NC_KERNEL_MAX_ACCS; a++) ops[a] = -1;
    uint32_t reads = 0, upd = 0;
    if (nc_oe_red_loop(k, t->body, ops, &reads)) {
      for (int a = 0; a < k->naccs; a++)
        if (ops[a] >= 0) {
          upd |= 1u << a;
          if (k->accs[a] == NC_F32) *needf = true;
          else if (k->accs[a] == NC_I32 || k->accs[a] == NC_I64) *needl = true;
          else return false;
        }
      if (!upd || (reads & upd)) return false;
      split = true;
      continue;
    }
    uint64_t lrd = 0, lwr = 0;
    if (nc_oe_has_acc_stmt(k, t->body) || !nc_oe_scan(k, t->body, t->var, &lrd, &lwr) || (lrd & lwr)) return false;
    written |= lwr;
    split = true;
  }
  return split;
}

static void nc_oe_split_for(nc_oe *e, const nc_kstmt *loop, int W) {
  nc_buf *o = e->o;
  nc_oe_open(e);
  nc_oe_x(e, loop->begin);
  nc_oe_x(e, loop->end);
  nc_oe_indent(e);
  nc_buf_printf(o, "for (i%d = ", loop->var), nc_oe_ref(e, loop->begin), nc_buf_printf(o, " + nc_lid; i%d < ", loop->var);
  nc_oe_ref(e, loop->end), nc_buf_printf(o, "; i%d += %d) {\n", loop->var, W);
  e->depth++;
  nc_oe_block(e, loop->body);
  e->depth--;
  nc_oe_indent(e);
  nc_buf_puts(o, "}\n");
  nc_oe_close(e);
}

// Combines accumulator a's partial values over the work-group (every work-item gets the result).
static void nc_oe_combine(nc_oe *e, int a, int op, int W) {
  nc_buf *o = e->o;
  bool f = e->k->accs[a] == NC_F32;
  const char *r = f ? "nc_rf" : "nc_rl";
  nc_oe_indent(e);
  nc_buf_printf(o, "%s[nc_lid] = acc%d; barrier(CLK_LOCAL_MEM_FENCE);\n", r, a);
  nc_oe_indent(e);
  nc_buf_printf(o, "for (int s = %d; s > 0; s >>= 1) { if (nc_lid < s) %s[nc_lid] = ", W / 2, r);
  if (op == NC_KOP_ADD) nc_buf_printf(o, "%s[nc_lid] + %s[nc_lid + s]", r, r);
  else if (f) nc_buf_printf(o, "nc_fmaxn(%s[nc_lid], %s[nc_lid + s])", r, r);
  else nc_buf_printf(o, "max(%s[nc_lid], %s[nc_lid + s])", r, r);
  nc_buf_puts(o, "; barrier(CLK_LOCAL_MEM_FENCE); }\n");
  nc_oe_indent(e);
  nc_buf_printf(o, "acc%d = (%s)%s[0]; barrier(CLK_LOCAL_MEM_FENCE);\n", a, nc_oe_reg(e->k->accs[a]), r);
}

// Emits a block checked by nc_oe_seg_check for a work-group of W work-items.
static void nc_oe_emit_group(nc_oe *e, nc_ks s, int W) {
  const nc_kernel *k = e->k;
  for (; s != NC_KS_NONE && !e->st; s = k->s[s].next) {
    const nc_kstmt *t = &k->s[s];
    switch (t->kind) {
      case NC_KS_ACC_INIT:
      case NC_KS_ACC_UPDATE: nc_oe_acc(e, t); break;  // uniform: every work-item alike
      case NC_KS_STORE:
        nc_oe_indent(e);
        nc_buf_puts(e->o, "if (nc_lid == 0)\n");
        nc_oe_store(e, t);
        break;
      case NC_KS_FOR: {
        int ops[NC_KERNEL_MAX_ACCS];
        for (int a = 0; a < NC_KERNEL_MAX_ACCS; a++) ops[a] = -1;
        uint32_t reads = 0;
        if (nc_oe_red_loop(k, t->body, ops, &reads)) {
          for (int a = 0; a < k->naccs; a++)  // sums: the init value counts once (work-item 0)
            if (ops[a] == NC_KOP_ADD) {
              nc_oe_indent(e);
              nc_buf_printf(e->o, "if (nc_lid != 0) acc%d = 0;\n", a);
            }
          nc_oe_split_for(e, t, W);
          for (int a = 0; a < k->naccs; a++)
            if (ops[a] >= 0) nc_oe_combine(e, a, ops[a], W);
        } else {
          nc_oe_split_for(e, t, W);
        }
        break;
      }
      case NC_KS_CALL: break;
    }
  }
}

nc_status nc_ocl_emit_kernel(const nc_kernel *k, const char *fname, const nc_ocl_knobs *kn, nc_buf *out, nc_ocl_launch *L) {
  int reduce_wg = kn->reduce_wg ? kn->reduce_wg : kn->loop_wg;  // whole-buffer reductions (0: loop_wg's work-group)
  memset(L, 0, sizeof *L);
  NC_TRY(nc_kernel_verify(k));
  if (nc_kernel_is_template(k)) {
    const nc_kstmt *c = &k->s[k->body];
    if (c->tmpl == NC_KT_ATTENTION) {  // flash attention (codegen/ocl_attn.h): head dims must be constants
      const nc_kexpr *dx = &k->x[c->args[5]], *dvx = &k->x[c->args[6]];
      if (c->nargs < 11 || c->nargs > 12 || c->ncbufs < 4 || dx->kind != NC_KX_CONST || dvx->kind != NC_KX_CONST || dx->ival < 1 || dvx->ival < 1 ||
          dx->ival > 128 || dvx->ival > 128)
        return nc_errorf(NC_E_UNSUPPORTED, "kernel %s: attention call needs constant head dims in 1..128", k->name);
      for (int i = 0; i < c->ncbufs; i++)
        if (k->bufs[c->cbufs[i]].dtype != NC_F32)
          return nc_errorf(NC_E_UNSUPPORTED, "kernel %s: attention on %s buffer '%s': f32 only", k->name,
                           nc_dtype_name(k->bufs[c->cbufs[i]].dtype), k->bufs[c->cbufs[i]].name);
      L->attn = true;
      L->attn_dp = (int)((dx->ival + 15) / 16 * 16);
      L->attn_dvp = (int)((dvx->ival + 15) / 16 * 16);
      return NC_OK;
    }
    if (c->tmpl == NC_KT_SCATTER_ADD) {  // codegen/ocl_scatter.h
      if (c->nargs != 3 || c->ncbufs != 3) return nc_errorf(NC_E_INTERNAL, "kernel %s: scatter_add call with %d args, %d buffers", k->name, c->nargs, c->ncbufs);
      nc_dtype it = k->bufs[c->cbufs[0]].dtype;
      if ((it != NC_I32 && it != NC_I64) || k->bufs[c->cbufs[1]].dtype != NC_F32 || k->bufs[c->cbufs[2]].dtype != NC_F32)
        return nc_errorf(NC_E_UNSUPPORTED, "kernel %s: scatter_add call needs i32/i64 ids and f32 values", k->name);
      L->scatter = true;
      L->scatter_i64 = it == NC_I64;
      return NC_OK;
    }
    if (c->tmpl != NC_KT_MATMUL)
      return nc_errorf(NC_E_UNSUPPORTED, "kernel %s: template %s has no OpenCL lowering yet (switch its fusion pattern off)",
                       k->name, nc_ktemplate_name(c->tmpl));
    // arg 9 (optional) is the symmetric-result hint: ignoring it is always correct
    if (c->nargs < 9 || c->nargs > 10 || c->ncbufs != 3) return nc_errorf(NC_E_INTERNAL, "kernel %s: matmul call with %d args, %d buffers", k->name, c->nargs, c->ncbufs);
    // f32 A, B, C, or bf16 A, B, C (the bf16 model's matmuls, NC_PATTERN_BF16_GEMM: fp32 accumulation, C rounded once)
    nc_dtype gdt = k->bufs[c->cbufs[0]].dtype;
    for (int i = 0; i < 3; i++)
      if ((gdt != NC_F32 && gdt != NC_BF16) || k->bufs[c->cbufs[i]].dtype != gdt)
        return nc_errorf(NC_E_UNSUPPORTED, "kernel %s: matmul on %s buffer '%s': the OpenCL GEMM takes f32 only or bf16 only A, B and C",
                         k->name, nc_dtype_name(k->bufs[c->cbufs[i]].dtype), k->bufs[c->cbufs[i]].name);
    const nc_kexpr *ta = &k->x[c->args[4]], *tb = &k->x[c->args[5]];
    if (ta->kind != NC_KX_CONST || tb->kind != NC_KX_CONST)
      return nc_errorf(NC_E_UNSUPPORTED, "kernel %s: matmul transposes must be constants", k->name);
    L->gemm = true;
    L->gemm_variant = (ta->ival ? 2 : 0) + (tb->ival ? 1 : 0) + (gdt == NC_BF16 ? NC_OCL_GEMM_BF16 : 0);
    return NC_OK;
  }
  for (int b = 0; b < k->nbufs; b++)
    if (k->bufs[b].dtype >= NC_DTYPE_COUNT) return nc_errorf(NC_E_INTERNAL, "kernel %s: buffer %d has a bad dtype", k->name, b);
  nc_oe e = {.k = k, .o = out, .depth = 1};
  e.memo = calloc((size_t)(k->nx > 0 ? k->nx : 1), 1);
  if (!e.memo) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_buf_printf(out, "// %s\n__kernel void %s(", k->name, fname);
  for (int b = 0; b < k->nbufs; b++)
    nc_buf_printf(out, "%s__global %s%s *b%d", b ? ", " : "", k->bufs[b].written ? "" : "const ", nc_oe_mem(k->bufs[b].dtype), b);
  for (int a = 0; a < k->nargs; a++) nc_buf_printf(out, "%slong a%d", k->nbufs + a ? ", " : "", a);
  nc_buf_printf(out, "%slong nc_total", k->nbufs + k->nargs ? ", " : "");
  for (int b = 0; b < k->nbufs; b++) nc_buf_printf(out, ", long o%d", b);
  nc_buf_puts(out, ") {\n");
  for (int b = 0; b < k->nbufs; b++) nc_buf_printf(out, "  b%d += o%d;\n", b, b);
  if (k->nvars) {
    nc_buf_puts(out, "  long ");
    for (int v = 0; v < k->nvars; v++) nc_buf_printf(out, "%si%d", v ? ", " : "", v);
    nc_buf_puts(out, ";\n");
  }
  for (int a = 0; a < k->naccs; a++) nc_buf_printf(out, "  %s acc%d;\n", nc_oe_reg(k->accs[a]), a);
  nc_ks last = nc_oe_collapse(k, L);
  int ops[NC_KERNEL_MAX_ACCS];
  nc_ks red = last == NC_KS_NONE && reduce_wg > 1 ? nc_oe_reduce_shape(k, ops) : NC_KS_NONE;
  if (red != NC_KS_NONE) {
    L->reduce_wg = nc_oe_pow2_floor(reduce_wg);
    L->reduce_begin = k->s[red].begin, L->reduce_end = k->s[red].end;
    nc_oe_emit_reduce(&e, red, ops, L->reduce_wg);
  } else if (last == NC_KS_NONE) {
    nc_buf_puts(out, "  if (get_global_id(0) != 0) return;\n");
    nc_oe_block(&e, k->body);
  } else {
    bool needf = false, needl = false;
    int RW = nc_oe_pow2_floor(kn->row_wg);
    bool rows = RW > 1 && nc_oe_seg_check(k, k->s[last].body, &needf, &needl);
    if (rows) {
      L->row_wg = RW;
      nc_buf_puts(out, "  long nc_gid = get_group_id(0);\n  const int nc_lid = get_local_id(0);\n");
      nc_buf_puts(out, "  const bool nc_small = nc_total <= 0xffffffffL;\n");
      if (needf) nc_buf_printf(out, "  __local float nc_rf[%d];\n", RW);
      if (needl) nc_buf_printf(out, "  __local long nc_rl[%d];\n", RW);
    } else {
      nc_buf_puts(out, "  long nc_gid = get_global_id(0);\n  if (nc_gid >= nc_total) return;\n");
      nc_buf_puts(out, "  const bool nc_small = nc_total <= 0xffffffffL;\n");
    }
    // the chain's loops, innermost first: i = begin + gid % extent, in 32-bit arithmetic when
    // every index fits (64-bit division is several times slower on GPUs; -DNC_IDX64 in
    // NC_OCL_BUILD_OPTS keeps the 64-bit form)
    nc_ks chain[NC_OCL_MAX_COLLAPSE];
    int n = 0;
    for (nc_ks s = k->body; n < L->ncollapse; s = k->s[s].body) chain[n++] = s;
    nc_oe_open(&e);
    for (int q = n - 1; q >= 0; q--) {
      const nc_kstmt *t = &k->s[chain[q]];
      nc_oe_x(&e, t->begin);
      if (q == 0) {  // the outermost loop: what is left of the id (it is below nc_total), no division
        nc_oe_indent(&e);
        nc_buf_printf(out, "i%d = ", t->var), nc_oe_ref(&e, t->begin), nc_buf_puts(out, " + nc_gid;\n");
        continue;
      }
      nc_oe_x(&e, t->end);
      nc_oe_indent(&e);
      nc_buf_printf(out, "{ long ext = "), nc_oe_ref(&e, t->end), nc_buf_puts(out, " - "), nc_oe_ref(&e, t->begin);
      nc_buf_printf(out, "; i%d = ", t->var), nc_oe_ref(&e, t->begin);
      nc_buf_printf(out, ";\n#ifndef NC_IDX64\n");
      nc_oe_indent(&e);
      nc_buf_printf(out, "  if (nc_small) { const uint g_ = (uint)nc_gid, e_ = (uint)ext; i%d += (long)(g_ %% e_); nc_gid = (long)(g_ / e_); } else\n",
                    t->var);
      nc_buf_puts(out, "#endif\n");
      nc_oe_indent(&e);
      nc_buf_printf(out, "  { i%d += nc_gid %% ext; nc_gid /= ext; } }\n", t->var);
    }
    nc_oe_close(&e);
    if (rows) nc_oe_emit_group(&e, k->s[last].body, RW);
    else nc_oe_block(&e, k->s[last].body);
  }
  nc_buf_puts(out, "}\n\n");
  free(e.memo);
  if (!e.st && out->oom) e.st = nc_errorf(NC_E_NOMEM, "out of memory emitting kernel %s", k->name);
  return e.st;
}
