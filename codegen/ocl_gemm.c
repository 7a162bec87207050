// The Hopper (sm_90a) bf16 GEMM for OpenCL: wgmma.mma_async through inline PTX
// over the packed operands of the pipelined GEMM (see codegen/ocl_emit.h,
// nc_ocl_emit_gemm_wgmma, and docs/opencl.md "The wgmma kernel").
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/ocl_emit.h"

#define NC_OG_GROUP 8  // block rows per group of the tile order (L2 reuse: docs/opencl.md)

void nc_ocl_wgmma_default(nc_ocl_knobs *k) { k->tc_bm = 128, k->tc_bn = 128, k->tc_bk = 64, k->tc_stages = 3, k->tc_wg = 1; }

nc_status nc_ocl_wgmma_check(const nc_ocl_knobs *k) {
  if (k->tc_wg < 0 || k->tc_wg > 2) return nc_errorf(NC_E_INVALID, "OpenCL knob tc_wg=%d: must be 0 (mma.sync), 1 or 2 (wgmma)", k->tc_wg);
  if (k->tc_bm < 64 || k->tc_bm > 256 || k->tc_bm % 64)
    return nc_errorf(NC_E_INVALID, "OpenCL knob tc_bm=%d: must be 64, 128, 192 or 256 with tc_wg=%d (one warpgroup per 64 rows)", k->tc_bm, k->tc_wg);
  if (k->tc_bn < 8 || k->tc_bn > 256 || k->tc_bn % 8)
    return nc_errorf(NC_E_INVALID, "OpenCL knob tc_bn=%d: must be a multiple of 8 in 8..256 with tc_wg=%d (wgmma's n)", k->tc_bn, k->tc_wg);
  if (k->tc_bk != 16 && k->tc_bk != 32 && k->tc_bk != 64)
    return nc_errorf(NC_E_INVALID, "OpenCL knob tc_bk=%d: must be 16, 32 or 64 with tc_wg=%d (32-, 64-, 128-byte swizzle)", k->tc_bk, k->tc_wg);
  int smin = k->tc_wg == 2 ? 3 : 2;
  if (k->tc_stages < smin || k->tc_stages > 8)
    return nc_errorf(NC_E_INVALID, "OpenCL knob tc_stages=%d: must be in %d..8 with tc_wg=%d", k->tc_stages, smin, k->tc_wg);
  // NVIDIA's OpenCL reports 48 KiB of local memory but builds and runs kernels with more static
  // __local (measured on the H100: docs/opencl.md); sm_90 gives a work-group up to 227 KiB.
  int ring = k->tc_stages * (k->tc_bm + k->tc_bn) * k->tc_bk * 2;
  if (ring > NC_OCL_WGMMA_MAX_RING)
    return nc_errorf(NC_E_INVALID, "OpenCL wgmma knobs: a ring of %d x (%d + %d) x %d bf16 is %d bytes of local memory (over %d)", k->tc_stages,
                     k->tc_bm, k->tc_bn, k->tc_bk, ring, NC_OCL_WGMMA_MAX_RING);
  return NC_OK;
}

// The MN-major variants need wgmma, and slots on 1024-byte boundaries: the 128-byte swizzle
// repeats every 1024 bytes and NC_DESCT has no base offset, so every ring slot ((BM + BN) x BK
// bf16) must be a multiple of 1024 bytes (B's part starts BM x BK x 2 bytes in, a multiple of
// 1024 as BM is of 64); B MN-major also needs whole 64-wide blocks (BN a multiple of 64).
bool nc_ocl_gemm_variant_ok(const nc_ocl_knobs *k, int flags) {
  if (!(flags & (NC_OCL_GEMMP_AMN | NC_OCL_GEMMP_BMN))) return true;
  if (!k->tc_wg || (k->tc_bm + k->tc_bn) * k->tc_bk * 2 % 1024) return false;
  return !(flags & NC_OCL_GEMMP_BMN) || k->tc_bn % 64 == 0;
}

// One 16-byte piece of operand ab (0 A, 1 B) into ring piece d (cp.async, or a plain copy when
// emulated); zero-filled (zf) for pieces at or past M (N) or k at or past Kv. K-major (rows of lda /
// ldb over m / n): piece c of row `row`, k = (kt0 + lkt) * BK + 8c ... + 7. MN-major (mn; A (K, M) or
// B (K, N), rows over k): piece c of k row kr, elements m0 (n0) + 8c ... + 7 at k = (kt0 + lkt) * BK + kr.
void nc_ocl_gemm_copy(nc_buf *o, bool emu, bool zf, int ab, int BK, bool mn) {
  const char *X = ab ? "B" : "A", *ld = ab ? "ldb" : "lda";
  if (!zf) {  // every row and piece exists (packed and padded, or in place with whole tiles)
    char at[96];
    if (mn) snprintf(at, sizeof at, "((kt0 + lkt) * %d + kr) * %s + c * 8", BK, ld);
    else snprintf(at, sizeof at, "row * %s + (kt0 + lkt) * %d + c * 8", ld, BK);
    nc_buf_printf(o,
                  "        __global const uint4 *src = (__global const uint4 *)(%s + %s);\n"
                  "        %s\n",
                  X, at,
                  emu ? "sm[d] = *src;"
                      : "asm volatile(\"cp.async.cg.shared.global [%0], [%1], 16;\" :: \"r\"(sbase + (uint)d * 16u), \"l\"((ulong)src) : \"memory\");");
    return;
  }
  const char *lim = ab ? "N" : "M", *base = ab ? "n0" : "m0";
  nc_buf_printf(o,
                "        const long gk = (kt0 + lkt) * %d + %s;\n"
                "        const bool ok = %s + %s < %s && gk < Kv;\n"
                "        __global const uint4 *src = (__global const uint4 *)(ok ? %s + %s * %s + %s : %s);\n"
                "        %s\n",
                BK, mn ? "kr" : "c * 8", base, mn ? "c * 8" : "row", lim, X, mn ? "gk" : "row", ld, mn ? "c * 8" : "gk", X,
                emu ? "sm[d] = ok ? *src : (uint4)(0u);"
                    : "asm volatile(\"cp.async.cg.shared.global [%0], [%1], 16, %2;\" :: \"r\"(sbase + (uint)d * 16u), \"l\"((ulong)src), "
                      "\"r\"(ok ? 16 : 0) : \"memory\");");
}

// The copy of k-tile lkt (of this split) into ring slot lslot: the BM rows of A,
// then the BN rows of B, as 16-byte pieces at their swizzled places (cp.async,
// or plain copies when emulated), spread over the NTH work-items. A K-major
// operand: piece c of row r at NC_SWZ(r, c) in rows of CPR pieces; an MN-major
// one (mn bit ab): 64-wide blocks of BK rows of 128 bytes (one k each), piece c
// of k row kr in block c / 8 at (c % 8) ^ (kr % 8) (the 128-byte swizzle).
static void nc_og_load_both(nc_buf *o, bool emu, bool zf, int mn, int BM, int BN, int NTH, int CPR, int STG, int BK) {
  for (int ab = 0; ab < 2; ab++) {
    bool t = mn & (1 << ab);
    int R = ab ? BN : BM, total = R * CPR, per = (total + NTH - 1) / NTH;
    char guard[64] = "";
    if (total % NTH) snprintf(guard, sizeof guard, "        if (e >= %d) break;\n", total);
    nc_buf_printf(o,
                  "#pragma unroll\n"
                  "      for (int r = 0; r < %d; r++) {\n"
                  "        const int e = tid + r * %d;\n"
                  "%s",
                  per, NTH, guard);
    if (t) {
      nc_buf_printf(o, "        const int kr = e / %d, c = e %% %d, d = lslot * %d + %d + (c >> 3) * %d + kr * 8 + ((c & 7) ^ (kr & 7));\n", R / 8, R / 8,
                    STG, ab ? BM * CPR : 0, BK * 8);
      nc_ocl_gemm_copy(o, emu, zf, ab, BK, true);
    } else {
      nc_buf_printf(o, "        const int row = e / %d, c = e %% %d, d = lslot * %d + %d + row * %d + NC_SWZ(row, c);\n", CPR, CPR, STG,
                    ab ? BM * CPR : 0, CPR);
      nc_ocl_gemm_copy(o, emu, zf, ab, BK, false);
    }
    nc_buf_puts(o, "      }\n");
  }
}

// The wgmma GEMM (see ocl_emit.h). A work-group of BM/64 warpgroups computes a
// BM x BN tile of C; warpgroup w owns rows 64w..64w+63, its accumulators are
// the m64nBN fragment (thread (warp v, lane l): rows 16v + l/4 (+8), columns
// 8j + 2(l%4) (+1), register 4j + 2*(row half) + column parity), BN/2 floats.
// Each k-step's BK-wide slices of A and B sit in one slot of a tc_stages ring,
// rows of 2*BK bytes with the 16-byte pieces XOR-swizzled as wgmma's 32/64/128-
// byte swizzle modes expect (piece c of row r at c ^ ((r * CPR / 8) % CPR), the
// slots 1024-byte aligned); the shared-memory matrix descriptors point at the
// warpgroup's 64 rows of A and the BN rows of B, advanced by 32 bytes per k16.
// Slices are copied by every work-item with cp.async; each k-step waits for
// its slice, makes the copies visible to the tensor cores
// (fence.proxy.async.shared::cta), synchronizes the work-group, starts the copy
// of a later slice into the slot freed by a finished wgmma, then issues
// BK/16 wgmmas (one commit group) and waits for all (tc_wg 1) or all but the
// newest (tc_wg 2) of its groups. With NC_OCL_GEMMP_AMN (BMN) A (B) is read in
// place MN-major: its slice is copied from k rows into 64-wide blocks of
// 128-byte k rows (the 128-byte swizzle), its descriptor (NC_DESCT) has the
// next block as leading and the next 8 k rows as stride byte offset and is
// advanced by 16 k rows (2048 bytes) per k16, and the wgmma's transpose bit is set.
void nc_ocl_emit_gemm_wgmma(const nc_ocl_knobs *kn, int flags, nc_buf *o) {
  int BM = kn->tc_bm, BN = kn->tc_bn, BK = kn->tc_bk, S = kn->tc_stages, W = kn->tc_wg == 2 ? 1 : 0;
  int NTH = 2 * BM, CPR = BK / 8, STG = (BM + BN) * CPR, NACC = BN / 2, LA = W ? S - 2 : S - 1;
  int RB = BK * 2, SWZ = RB == 128 ? 1 : RB == 64 ? 2 : 3, SBO = 8 * RB;
  bool emu = kn->gemm_tc == 2, zf = flags & NC_OCL_GEMMP_ZFILL, cbf = flags & NC_OCL_GEMMP_CBF16;
  bool ta = flags & NC_OCL_GEMMP_AMN, tb = flags & NC_OCL_GEMMP_BMN;
  int mn = (ta ? 1 : 0) | (tb ? 2 : 0);
  char name[48];
  nc_ocl_gemm_packed_name(kn, flags, name, sizeof name);
  nc_buf_printf(o,
                "// C (+)= op(A) @ op(B) over bf16 operands, A %s-major, B %s-major (%s): %dx%d block, %d warpgroups, k-step %d\n"
                "// (%d-byte swizzle; MN-major slots 128-byte), %d-slot ring, %s\n"
                "#ifdef NC_WG_HIDE\n#define NC_WGI(s) \"//NCWG \" s\n#else\n#define NC_WGI(s) s\n#endif\n"
                "#define NC_SWZ(r, c) ((c) ^ (((r) * %d / 8) %% %d))\n"
                "#define NC_DESC(a) ((ulong)(((a) & 0x3FFFFu) >> 4) | (1ul << 16) | ((ulong)%d << 32) | ((ulong)%d << 62))\n"
                "// MN-major: leading byte offset = the next 64-wide block (BK rows of 128 bytes), stride = the next 8 k rows\n"
                "#define NC_DESCT(a) ((ulong)(((a) & 0x3FFFFu) >> 4) | ((ulong)%d << 16) | (64ul << 32) | (1ul << 62))\n"
                "__kernel __attribute__((reqd_work_group_size(%d, 1, 1)))\n"
                "void %s(__global const ushort *A, __global const ushort *B, __global %s *C, long M, long N, long Kp,\n"
                "                   long sa, long sb, int beta, long oa, long ob, long oc, long kt_per, int splits, long lda, long ldb, long Kv) {\n"
                "  __local uint4 sm[%d] __attribute__((aligned(1024)));\n"
                "  const int tid = get_local_id(0), lane = tid & 31, wg = tid >> 7, g = lane >> 2, t = lane & 3;\n"
                "  const int wr = wg * 64 + ((tid >> 5) & 3) * 16 + g;\n"
                "  // tiles in groups of %d block rows, column by column, so the tiles in flight share operands in L2\n"
                "  const int gx = get_num_groups(0), gy = get_num_groups(1), lin = get_group_id(1) * gx + get_group_id(0);\n"
                "  const int first = lin / (%d * gx) * %d, gsz = min(gy - first, %d), rem = lin - first * gx;\n"
                "  const long n0 = (long)(rem / gsz) * %d, m0 = (long)(first + rem %% gsz) * %d, z = get_global_id(2);\n"
                "  const long q = z / splits, sp = z %% splits;\n"
                "  A += oa + q * sa + m0%s; B += ob + q * sb + n0%s;\n"
                "  if (splits > 1) { C += oc + z * M * N; beta = 0; } else C += oc + q * M * N;\n"
                "  const long kt0 = sp * kt_per, nkt_all = Kp / %d;\n"
                "  const int nk = (int)(kt0 + kt_per < nkt_all ? kt_per : nkt_all - kt0);\n"
                "  float acc[%d];\n"
                "#pragma unroll\n"
                "  for (int i = 0; i < %d; i++) acc[i] = 0.0f;\n",
                ta ? "M" : "K", tb ? "N" : "K", emu ? "scalar emulation" : "cp.async ring, wgmma.mma_async", BM, BN, BM / 64, BK, RB, S,
                W ? "one wgmma group in flight" : "each wgmma group waited for", CPR, CPR, SBO >> 4, SWZ, BK * 8, NTH, name, cbf ? "ushort" : "float", S * STG,
                NC_OG_GROUP, NC_OG_GROUP, NC_OG_GROUP, NC_OG_GROUP, BN, BM, ta ? "" : " * lda", tb ? "" : " * ldb", BK,
                NACC, NACC);
  if (!emu)
    nc_buf_printf(o,
                "  const uint sbase = (uint)(ulong)sm;\n"
                "  if (sbase & 1023u) { if (tid == 0) C[0] = %s; return; }  // the swizzle needs 1024-byte aligned slots\n"
                "  const int one = 1;\n", cbf ? "(ushort)0x7fc0u" : "NAN");
  const char *commit = emu ? "" : "asm volatile(\"cp.async.commit_group;\" ::: \"memory\");";
  char wait[160] = "";
  if (!emu)
    snprintf(wait, sizeof wait,
             "asm volatile(\"cp.async.wait_group %d;\" ::: \"memory\");\n"
             "    asm volatile(NC_WGI(\"fence.proxy.async.shared::cta;\") ::: \"memory\");",
             LA - 1);
  nc_buf_printf(o, "  for (int s = 0; s < %d; s++) {\n    if (s < nk) {\n      const int lkt = s, lslot = s;\n", LA);
  nc_og_load_both(o, emu, zf, mn, BM, BN, NTH, CPR, STG, BK);
  nc_buf_printf(o,
                "    }\n    %s\n  }\n"
                "  for (int kt = 0; kt < nk; kt++) {\n"
                "    %s\n"
                "    barrier(CLK_LOCAL_MEM_FENCE);\n"
                "    if (kt + %d < nk) {\n      const int lkt = kt + %d, lslot = (kt + %d) %% %d;\n",
                commit, wait, LA, LA, LA, S);
  nc_og_load_both(o, emu, zf, mn, BM, BN, NTH, CPR, STG, BK);
  nc_buf_printf(o, "    }\n    %s\n    const int slot = kt %% %d;\n", commit, S);
  if (!emu) {
    nc_buf_printf(o,
                  "    const uint aa = sbase + (uint)(slot * %d + wg * %d) * 16u, ba = sbase + (uint)(slot * %d + %d) * 16u;\n"
                  "    asm volatile(NC_WGI(\"wgmma.fence.sync.aligned;\") ::: \"memory\");\n"
                  "#pragma unroll\n"
                  "    for (int kk = 0; kk < %d; kk++) {\n"
                  "      const ulong da = %s(aa + (uint)kk * %du), db = %s(ba + (uint)kk * %du);\n"
                  "      asm volatile(NC_WGI(\"{.reg .pred p; setp.ne.b32 p, %%%d, 0; wgmma.mma_async.sync.aligned.m64n%dk16.f32.bf16.bf16 {",
                  STG, 64 * CPR, STG, BM * CPR, BK / 16, ta ? "NC_DESCT" : "NC_DESC", ta ? 2048 : 32, tb ? "NC_DESCT" : "NC_DESC",
                  tb ? 2048 : 32, NACC + 2, BN);
    for (int i = 0; i < NACC; i++) nc_buf_printf(o, "%s%%%d", i ? "," : "", i);
    nc_buf_printf(o, "}, %%%d, %%%d, p, 1, 1, %d, %d;}\")\n                   : ", NACC, NACC + 1, ta, tb);
    for (int i = 0; i < NACC; i++) nc_buf_printf(o, "%s\"+f\"(acc[%d])%s", i ? ", " : "", i, i % 8 == 7 && i + 1 < NACC ? "\n                     " : "");
    nc_buf_printf(o,
                  "\n                   : \"l\"(da), \"l\"(db), \"r\"(one) : \"memory\");\n"
                  "    }\n"
                  "    asm volatile(NC_WGI(\"wgmma.commit_group.sync.aligned;\") ::: \"memory\");\n"
                  "    asm volatile(NC_WGI(\"wgmma.wait_group.sync.aligned %d;\") ::: \"memory\");\n"
                  "  }\n",
                  W);
    if (W) nc_buf_puts(o, "  asm volatile(NC_WGI(\"wgmma.wait_group.sync.aligned 0;\") ::: \"memory\");\n");
  } else {
    // element (row, k) of a slot's A (or B, rows after BM) slice: K-major, piece NC_SWZ(row, k / 8), half k % 8;
    // MN-major, piece (row / 64) * BK * 8 + k * 8 + ((row / 8) % 8 ^ k % 8), half row % 8
    char ea[128], eb[128];
    if (ta) snprintf(ea, sizeof ea, "((mr >> 6) * %d + kq * 8 + (((mr >> 3) & 7) ^ (kq & 7))) * 8 + (mr & 7)", BK * 8);
    else snprintf(ea, sizeof ea, "(mr * %d + NC_SWZ(mr, kq / 8)) * 8 + kq %% 8", CPR);
    if (tb) snprintf(eb, sizeof eb, "((nr >> 6) * %d + kq * 8 + (((nr >> 3) & 7) ^ (kq & 7))) * 8 + (nr & 7)", BK * 8);
    else snprintf(eb, sizeof eb, "(nr * %d + NC_SWZ(nr, kq / 8)) * 8 + kq %% 8", CPR);
    nc_buf_printf(o,
                  "    __local const ushort *h = (__local const ushort *)sm;\n"
                  "    __local const ushort *ha = h + slot * %d * 8, *hb = h + (slot * %d + %d) * 8;\n"
                  "    for (int j = 0; j < %d; j++)\n"
                  "      for (int hh = 0; hh < 4; hh++) {\n"
                  "        const int mr = wr + (hh >> 1) * 8, nr = j * 8 + 2 * t + (hh & 1);\n"
                  "        float s = acc[j * 4 + hh];\n"
                  "        for (int kq = 0; kq < %d; kq++) {\n"
                  "          float a = nc_bf2f(ha[%s]);\n"
                  "          float b = nc_bf2f(hb[%s]);\n"
                  "          s = fma(a, b, s);\n"
                  "        }\n"
                  "        acc[j * 4 + hh] = s;\n"
                  "      }\n"
                  "  }\n",
                  STG, STG, BM * CPR, BN / 8, BK, ea, eb);
  }
  // the store: two adjacent columns per row half, as one float2 (bf16 C: one 32-bit word) when C's layout allows
  nc_buf_printf(o,
                "  const bool v2 = (N & 1) == 0 && ((ulong)C & %d) == 0;  // C (offset to this tile's batch) 2-element aligned\n"
                "#pragma unroll\n"
                "  for (int j = 0; j < %d; j++)\n"
                "#pragma unroll\n"
                "    for (int hr = 0; hr < 2; hr++) {\n"
                "      const long m = m0 + wr + hr * 8, n = n0 + j * 8 + 2 * t;\n"
                "      if (m >= M || n >= N) continue;\n"
                "      float x0 = acc[j * 4 + hr * 2], x1 = acc[j * 4 + hr * 2 + 1];\n",
                cbf ? 3 : 7, BN / 8);
  if (cbf)
    nc_buf_puts(o,
                "      __global ushort *ch = C + m * N + n;  // rounded once\n"
                "      if (beta) x0 += nc_bf2f(ch[0]), x1 += n + 1 < N ? nc_bf2f(ch[1]) : 0.0f;\n"
                "      if (v2 && n + 1 < N) *(__global uint *)ch = (uint)nc_f2bf(x0) | ((uint)nc_f2bf(x1) << 16);\n"
                "      else { ch[0] = nc_f2bf(x0); if (n + 1 < N) ch[1] = nc_f2bf(x1); }\n");
  else
    nc_buf_puts(o,
                "      __global float *cp = C + m * N + n;\n"
                "      if (v2 && n + 1 < N) {\n"
                "        float2 c2 = (float2)(x0, x1);\n"
                "        if (beta) c2 += *(__global float2 *)cp;\n"
                "        *(__global float2 *)cp = c2;\n"
                "      } else {\n"
                "        cp[0] = beta ? cp[0] + x0 : x0;\n"
                "        if (n + 1 < N) cp[1] = beta ? cp[1] + x1 : x1;\n"
                "      }\n");
  nc_buf_puts(o,
              "    }\n"
              "}\n"
              "#undef NC_SWZ\n#undef NC_DESC\n#undef NC_DESCT\n#undef NC_WGI\n\n");
}

// ".version X.Y" below 8.0 (wgmma's PTX ISA) -> 8.0; ".target sm_90" -> sm_90a;
// "//NCWG " markers removed.
char *nc_ocl_ptx_unhide(const char *ptx, size_t len, bool *changed) {
  static const char mark[] = "//NCWG ";
  *changed = false;
  char *out = malloc(len + 64);
  if (!out) return NULL;
  size_t o = 0, ml = sizeof mark - 1;
  bool target_done = false, version_done = false;
  for (size_t i = 0; i < len;) {
    if (i + ml <= len && memcmp(ptx + i, mark, ml) == 0) {
      *changed = true;
      i += ml;
      continue;
    }
    bool bol = i == 0 || ptx[i - 1] == '\n';
    if (bol && !target_done && i + 13 <= len && memcmp(ptx + i, ".target sm_90", 13) == 0 && (i + 13 == len || ptx[i + 13] != 'a')) {
      memcpy(out + o, ".target sm_90a", 14);
      o += 14, i += 13, target_done = true;
      continue;
    }
    if (bol && !version_done && i + 9 <= len && memcmp(ptx + i, ".version ", 9) == 0) {
      version_done = true;
      int maj = atoi(ptx + i + 9);
      if (maj < 8) {
        memcpy(out + o, ".version 8.0", 12);
        o += 12, i += 9;
        while (i < len && ptx[i] != '\n') i++;
        continue;
      }
    }
    out[o++] = ptx[i++];
  }
  out[o] = 0;
  return out;
}
