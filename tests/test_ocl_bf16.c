// The bf16 GEMM of the OpenCL backend (codegen/ocl_emit.c, gemm_tc knob):
// fp32 operands rounded to bf16 (nearest even) while staged into local
// memory, fp32 accumulation. On any device the emulated form (gemm_tc = 2:
// the tensor-core kernel with each mma done by scalar fmas) runs against a
// CPU reference over bf16-rounded operands; on an NVIDIA device the real
// mma.sync kernel (gemm_tc = 1) runs against the same reference. Also: the
// precision switch (NC_OCL_MATMUL, nc_device_set_precision), the knobs'
// ranges, and the emitter's output.
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/ocl_emit.h"
#include "ir/build.h"
#include "runtime/exec.h"
#include "runtime/ocl_device.h"

#define NEED_OPENCL()                                                                  \
  do {                                                                                 \
    if (!nc_ocl_available()) cr_skip_test("no OpenCL device (install pocl-opencl-icd)"); \
  } while (0)

#define C(v) nc_dim_const(v)

// Independent oracle: fp32 -> bf16 -> fp32, round to nearest, ties to even.
static float ref_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return f;
  uint32_t lo = u & 0xffffu, hi = u >> 16;
  if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u))) hi++;
  u = hi << 16;
  memcpy(&f, &u, 4);
  return f;
}

// nn, nt, tn, tt over batched operands and a shared weight (linear): (B, M, K) x (B, K, N),
// all of dtype t; with_wt adds the shared weight transposed (linear_t: the nt form of
// nn.Linear, which the bf16 path reads in place).
static nc_graph *gemm_graph_of(int64_t M, int64_t N, int64_t K, nc_dtype t, bool with_wt) {
  nc_graph *g = nc_graph_new(t == NC_BF16 ? "gemm_bf16_operands" : "gemm_bf16");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim da[3] = {nc_dim_sym(B), C(M), C(K)}, dat[3] = {nc_dim_sym(B), C(K), C(M)};
  nc_dim db[3] = {nc_dim_sym(B), C(K), C(N)}, dbt[3] = {nc_dim_sym(B), C(N), C(K)};
  nc_dim dw[2] = {C(K), C(N)}, dwt[2] = {C(N), C(K)};
  nc_id a = nc_leaf(g, NC_OP_INPUT, "a", nc_type_make(t, 3, da));
  nc_id at = nc_leaf(g, NC_OP_INPUT, "at", nc_type_make(t, 3, dat));
  nc_id b = nc_leaf(g, NC_OP_INPUT, "b", nc_type_make(t, 3, db));
  nc_id bt = nc_leaf(g, NC_OP_INPUT, "bt", nc_type_make(t, 3, dbt));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(t, 2, dw));
  cr_assert_null(nc_graph_set_output(g, "nn", nc_b_bmm(g, a, b, false, false)));
  cr_assert_null(nc_graph_set_output(g, "nt", nc_b_bmm(g, a, bt, false, true)));
  cr_assert_null(nc_graph_set_output(g, "tn", nc_b_bmm(g, at, b, true, false)));
  cr_assert_null(nc_graph_set_output(g, "tt", nc_b_bmm(g, at, bt, true, true)));
  cr_assert_null(nc_graph_set_output(g, "linear", nc_b_matmul(g, a, w, false, false)));
  if (with_wt) {
    nc_id wt = nc_leaf(g, NC_OP_PARAM, "wt", nc_type_make(t, 2, dwt));
    cr_assert_null(nc_graph_set_output(g, "linear_t", nc_b_matmul(g, a, wt, false, true)));
  }
  cr_assert_null(nc_graph_error(g));
  return g;
}

static nc_graph *gemm_graph(int64_t M, int64_t N, int64_t K) { return gemm_graph_of(M, N, K, NC_F32, false); }

typedef struct {
  int64_t B, M, N, K;
  nc_tensor a, at, b, bt, w;
} gemm_data;

static void fill(nc_tensor *t, int rank, const int64_t *shape, uint64_t *seed) {
  cr_assert_null(nc_tensor_alloc(t, NC_F32, rank, shape));
  float *p = t->data;
  for (int64_t i = 0; i < nc_tensor_numel(t); i++) {
    *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = (float)((double)(*seed >> 11) / 9007199254740992.0 * 2 - 1);  // never all-zero, never bf16-exact
  }
}

static void data_make(gemm_data *d, int64_t B, int64_t M, int64_t N, int64_t K) {
  uint64_t seed = 12345;
  d->B = B, d->M = M, d->N = N, d->K = K;
  int64_t sa[3] = {B, M, K}, sat[3] = {B, K, M}, sb[3] = {B, K, N}, sbt[3] = {B, N, K}, sw[2] = {K, N};
  fill(&d->a, 3, sa, &seed), fill(&d->at, 3, sat, &seed), fill(&d->b, 3, sb, &seed), fill(&d->bt, 3, sbt, &seed), fill(&d->w, 2, sw, &seed);
}

static void data_free(gemm_data *d) {
  nc_tensor_free(&d->a), nc_tensor_free(&d->at), nc_tensor_free(&d->b), nc_tensor_free(&d->bt), nc_tensor_free(&d->w);
}

// output o (0 nn, 1 nt, 2 tn, 3 tt, 4 linear) element (q, m, n): the reference
// over operands rounded to bf16 (round = true) or not, in double; *mag = sum |a*b|.
static double ref_at(const gemm_data *d, int o, int64_t q, int64_t m, int64_t n, bool round, double *mag) {
  const float *A = o == 2 || o == 3 ? d->at.data : d->a.data;
  const float *Bm = o == 4 ? d->w.data : o == 1 || o == 3 ? d->bt.data : d->b.data;
  bool ta = o == 2 || o == 3, tb = o == 1 || o == 3;
  int64_t M = d->M, N = d->N, K = d->K;
  A += q * M * K;
  if (o != 4) Bm += q * K * N;
  double s = 0, s_abs = 0;
  for (int64_t k = 0; k < K; k++) {
    float x = ta ? A[k * M + m] : A[m * K + k], y = tb ? Bm[n * K + k] : Bm[k * N + n];
    if (round) x = ref_bf16(x), y = ref_bf16(y);
    s += (double)x * y, s_abs += fabs((double)x * y);
  }
  *mag = s_abs;
  return s;
}

// Runs the graph on dev (with NC_OCL_TC=tc when given) and checks every output
// against the bf16 reference within fp32 accumulation-order tolerance; returns
// how many elements differ from the unrounded (fp32) product by more than that.
static int64_t run_and_check_k(const char *tc, bool want_bf16, int64_t K) {
  const int64_t B = 2, M = 70, N = 37;
  nc_graph *g = gemm_graph(M, N, K);
  if (tc) setenv("NC_OCL_TC", tc, 1);
  nc_device dev;
  cr_assert_null(nc_device_parse("opencl", &dev));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &dev, &ex);
  cr_assert_null(st, "%s", nc_status_msg(st));
  unsetenv("NC_OCL_TC");
  gemm_data d;
  data_make(&d, B, M, N, K);
  nc_feed f[5] = {{"a", &d.a}, {"at", &d.at}, {"b", &d.b}, {"bt", &d.bt}, {"w", &d.w}};
  nc_tensor out[5];
  st = nc_exec_run(ex, f, 5, out);
  cr_assert_null(st, "%s", nc_status_msg(st));
  int64_t off_fp32 = 0;
  double worst = 0;
  for (int o = 0; o < 5; o++) {
    const float *c = out[o].data;
    cr_assert_eq(nc_tensor_numel(&out[o]), B * M * N);
    for (int64_t q = 0; q < B; q++)
      for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
          double mag, mag32;
          double want = ref_at(&d, o, q, m, n, want_bf16, &mag);
          double exact32 = ref_at(&d, o, q, m, n, false, &mag32);
          double got = c[(q * M + m) * N + n], tol = 2e-6 * mag + 1e-30;
          worst = fmax(worst, fabs(got - want) / (mag + 1e-30));
          if (fabs(got - want) > tol)
            cr_assert_fail("%s output %d [%lld,%lld,%lld]: got %.9g want %.9g (|a.b| %.3g)", tc ? tc : "default", o, (long long)q, (long long)m,
                           (long long)n, got, want, mag);
          if (fabs(got - exact32) > tol) off_fp32++;
        }
    nc_tensor_free(&out[o]);
  }
  cr_log_info("NC_OCL_TC=%s K=%lld: worst |err| / sum|a*b| = %.3g; %lld elements off the fp32 product", tc ? tc : "-", (long long)K, worst,
              (long long)off_fp32);
  data_free(&d);
  nc_exec_free(ex);
  nc_graph_free(g);
  return off_fp32;
}

// K = 45: the scalar staging; K = 48 (a multiple of 4): the vector staging of k-contiguous operands
static int64_t run_and_check(const char *tc, bool want_bf16) { return run_and_check_k(tc, want_bf16, 45) + run_and_check_k(tc, want_bf16, 48); }

static bool device_is_nvidia(void) {
  nc_ocl_device_desc dd;
  nc_status st = nc_ocl_select("", &dd);
  if (st) {
    nc_status_free(st);
    return false;
  }
  return strstr(dd.vendor, "NVIDIA") || strstr(dd.platform_vendor, "NVIDIA");
}

Test(ocl_bf16, emulated_kernel_matches_the_bf16_reference_every_transpose_and_edge) {
  NEED_OPENCL();
  // several tilings: edges in M, N and K (70 x 37 x 45 fits none), one and several warps, k-steps 16..64
  const char *tcs[] = {"32,32,16,16,16,2", "32,16,16,8,32,2", "64,32,32,16,64,2", "16,8,16,8,16,2"};
  for (size_t i = 0; i < sizeof tcs / sizeof *tcs; i++) cr_expect_gt(run_and_check(tcs[i], true), 1000, "%s: no element shows bf16 rounding", tcs[i]);
}

// The pipelined kernel (7th knob, tc_stages): operands packed to bf16 and
// padded, a swizzled ring of slices, split-K with its sum; emulated anywhere.
static int64_t run_packed(const char *tc, const char *splitk) {
  if (splitk) setenv("NC_OCL_SPLITK", splitk, 1);
  int64_t n = run_and_check(tc, true) + run_and_check_k(tc, true, 200);
  unsetenv("NC_OCL_SPLITK");
  return n;
}

Test(ocl_bf16, pipelined_kernel_emulated_matches_the_bf16_reference_with_and_without_split_k) {
  NEED_OPENCL();
  const char *tcs[] = {"32,32,16,16,32,2,2", "64,32,32,16,64,2,3", "32,32,16,16,32,2,4", "16,16,16,16,32,2,2"};
  for (size_t i = 0; i < sizeof tcs / sizeof *tcs; i++) cr_expect_gt(run_packed(tcs[i], NULL), 1000, "%s: no element shows bf16 rounding", tcs[i]);
  // K = 200 is 7 k-tiles of 32: 3 splits of 3, 3 and 1; 2 splits; more splits than tiles (clamped)
  const char *sk[] = {"3", "2", "64"};
  for (size_t i = 0; i < sizeof sk / sizeof *sk; i++) cr_expect_gt(run_packed("32,32,16,16,32,2,2", sk[i]), 1000, "split-K %s", sk[i]);
  setenv("NC_OCL_SPLITK", "0", 1);
  nc_graph *g = gemm_graph(4, 4, 4);
  setenv("NC_OCL_TC", "32,32,16,16,32,2,2", 1);
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &d, &ex);
  cr_assert_not_null(st, "NC_OCL_SPLITK=0 accepted");
  cr_expect(strstr(nc_status_msg(st), "NC_OCL_SPLITK='0'"), "%s", nc_status_msg(st));
  nc_status_free(st);
  unsetenv("NC_OCL_SPLITK");
  unsetenv("NC_OCL_TC");
  nc_graph_free(g);
}

// NC_OCL_BUILD_OPTS (extra build options for experiments) is checked, and a
// valid one reaches the compiler (the emulated kernel's macros compile either way).
Test(ocl_bf16, build_options_variable_is_checked) {
  NEED_OPENCL();
  nc_graph *g = gemm_graph(4, 4, 4);
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  char longopt[300];
  memset(longopt, 'x', sizeof longopt - 1);
  longopt[sizeof longopt - 1] = 0;
  const char *bad[] = {longopt, "-DA=1\n-DB=2"};
  for (int i = 0; i < 2; i++) {
    setenv("NC_OCL_BUILD_OPTS", bad[i], 1);
    nc_exec *ex;
    nc_status st = nc_exec_new(g, &d, &ex);
    cr_assert_not_null(st, "bad NC_OCL_BUILD_OPTS %d accepted", i);
    cr_expect(strstr(nc_status_msg(st), "NC_OCL_BUILD_OPTS"), "%s", nc_status_msg(st));
    nc_status_free(st);
  }
  setenv("NC_OCL_BUILD_OPTS", "-DNC_MMA_Q= -DNC_LDM_CLOBBER=", 1);
  cr_expect_gt(run_and_check_k("32,32,16,16,32,2,2", true, 48), 1000);
  unsetenv("NC_OCL_BUILD_OPTS");
  nc_graph_free(g);
}

Test(ocl_bf16, pipelined_mma_kernel_on_nvidia_matches_the_bf16_reference) {
  NEED_OPENCL();
  if (!device_is_nvidia()) cr_skip_test("the default OpenCL device is not NVIDIA: cp.async/ldmatrix/mma.sync need one (the emulated form is tested above)");
  const char *tcs[] = {"128,128,64,32,32,1,3", "128,128,64,32,32,1,2", "64,64,32,32,64,1,2", "128,256,64,64,32,1,2", "64,128,32,64,32,1,4"};
  for (size_t i = 0; i < sizeof tcs / sizeof *tcs; i++) cr_expect_gt(run_packed(tcs[i], NULL), 1000, "%s: no element shows bf16 rounding", tcs[i]);
  cr_expect_gt(run_packed("128,128,64,32,32,1,3", "3"), 1000, "split-K 3");
}

Test(ocl_bf16, mma_kernel_on_nvidia_matches_the_bf16_reference) {
  NEED_OPENCL();
  if (!device_is_nvidia()) cr_skip_test("the default OpenCL device is not NVIDIA: mma.sync needs one (the emulated form is tested above)");
  const char *tcs[] = {"128,128,64,32,32,1", "64,64,32,32,16,1", "32,16,16,8,64,1", "128,64,64,32,32,1"};
  for (size_t i = 0; i < sizeof tcs / sizeof *tcs; i++) cr_expect_gt(run_and_check(tcs[i], true), 1000, "%s: no element shows bf16 rounding", tcs[i]);
  // the precision switch alone picks the tensor cores on NVIDIA
  setenv("NC_OCL_MATMUL", "bf16", 1);
  cr_expect_gt(run_and_check(NULL, true), 1000);
  unsetenv("NC_OCL_MATMUL");
}

// Rounding is exact and bit-for-bit: C = A @ I gives bf16(A) including ties
// (to even), on the emulated kernel and, on NVIDIA, on the tensor cores.
Test(ocl_bf16, staging_rounds_to_nearest_even_bit_exactly) {
  NEED_OPENCL();
  const int64_t M = 24, K = 40;
  nc_graph *g = nc_graph_new("round");
  nc_dim da[2] = {C(M), C(K)}, di[2] = {C(K), C(K)};
  nc_id a = nc_leaf(g, NC_OP_INPUT, "a", nc_type_make(NC_F32, 2, da));
  nc_id e = nc_leaf(g, NC_OP_INPUT, "eye", nc_type_make(NC_F32, 2, di));
  cr_assert_null(nc_graph_set_output(g, "c", nc_b_matmul(g, a, e, false, false)));
  nc_tensor ta, te, out;
  int64_t sa[2] = {M, K}, si[2] = {K, K};
  cr_assert_null(nc_tensor_alloc(&ta, NC_F32, 2, sa));
  cr_assert_null(nc_tensor_alloc(&te, NC_F32, 2, si));
  float *pa = ta.data, *pe = te.data;
  for (int64_t i = 0; i < K * K; i++) pe[i] = i / K == i % K ? 1.0f : 0.0f;
  for (int64_t i = 0; i < M * K; i++) {
    // 1 + j/256 hits every tie and non-tie of the 8th mantissa bit; scaled and signed
    uint32_t u = 0x3f800000u + (uint32_t)(i % 97) * 0x4000u + (uint32_t)(i % 3) * 0x2001u * (i % 5 == 0);
    memcpy(&pa[i], &u, 4);
    pa[i] *= (i % 2 ? -1.0f : 1.0f) * ldexpf(1.0f, (int)(i % 9) - 4);
  }
  const char *modes[] = {"32,32,16,16,16,2", "32,32,16,16,32,2,2", "32,32,16,16,16,1", "32,32,16,16,32,1,2"};
  for (int mi = 0; mi < 4; mi++) {
    if (mi >= 2 && !device_is_nvidia()) {
      cr_log_info("not NVIDIA: the mma form of the rounding test is skipped");
      break;
    }
    setenv("NC_OCL_TC", modes[mi], 1);
    nc_device dev;
    cr_assert_null(nc_device_parse("opencl", &dev));
    nc_exec *ex;
    nc_status st = nc_exec_new(g, &dev, &ex);
    cr_assert_null(st, "%s", nc_status_msg(st));
    nc_feed f[2] = {{"a", &ta}, {"eye", &te}};
    cr_assert_null(nc_exec_run(ex, f, 2, &out));
    int ties = 0;
    for (int64_t i = 0; i < M * K; i++) {
      float want = ref_bf16(pa[i]), got = ((float *)out.data)[i];
      uint32_t u;
      memcpy(&u, &pa[i], 4);
      ties += (u & 0xffffu) == 0x8000u;
      cr_assert(memcmp(&want, &got, 4) == 0, "%s: bf16(%.9g) = %.9g, got %.9g", modes[mi], pa[i], want, got);
    }
    cr_expect_gt(ties, 10, "the data has too few ties");
    nc_tensor_free(&out);
    nc_exec_free(ex);
  }
  unsetenv("NC_OCL_TC");
  nc_tensor_free(&ta), nc_tensor_free(&te);
  nc_graph_free(g);
}

// fp32 stays the default and exact; bf16 requested on a non-NVIDIA device keeps the fp32 GEMM.
Test(ocl_bf16, precision_switch_defaults_to_fp32_and_names_bad_values) {
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  cr_expect(!d.matmul_bf16);
  cr_assert_null(nc_device_set_precision(&d, "bf16"));
  cr_expect(d.matmul_bf16);
  cr_assert_null(nc_device_set_precision(&d, "fp32"));
  cr_expect(!d.matmul_bf16);
  nc_status st = nc_device_set_precision(&d, "fp8");
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "'fp8'"), "%s", nc_status_msg(st));
  nc_status_free(st);
  if (!nc_ocl_available()) return;
  cr_expect_eq(run_and_check_k(NULL, false, 45), 0, "the default is not the exact fp32 GEMM");
  if (!device_is_nvidia()) {
    setenv("NC_OCL_MATMUL", "bf16", 1);
    cr_expect_eq(run_and_check_k(NULL, false, 45), 0, "bf16 off NVIDIA should keep the fp32 GEMM");
  }
  setenv("NC_OCL_MATMUL", "half", 1);
  nc_graph *g = gemm_graph(4, 4, 4);
  nc_exec *ex;
  st = nc_exec_new(g, &d, &ex);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "NC_OCL_MATMUL") && strstr(nc_status_msg(st), "'half'"), "%s", nc_status_msg(st));
  nc_status_free(st);
  unsetenv("NC_OCL_MATMUL");
  nc_graph_free(g);
}

Test(ocl_bf16, bad_tensor_core_knobs_name_the_knob) {
  nc_ocl_knobs k;
  nc_ocl_knobs_default(true, &k);
  cr_assert_null(nc_ocl_knobs_check(&k));
  struct {
    const char *s, *want;
  } bad[] = {{"", "want 5"},          {"128,128,64,32", "want 5"},      {"128,128,64,32,32,3", "gemm_tc=3"}, {"128,128,24,32,32", "tc_wm=24"},
             {"128,128,64,12,32", "tc_wn=12"}, {"128,128,64,32,24", "tc_bk=24"}, {"96,128,64,32,32", "tc_bm=96"},  {"128,128,128,128,32", "over 32"},
             {"256,256,16,8,16", "over 1024"}, {"128,x,64,32,32", "item 2"},   {"16,8,16,8,64,2,1", "tc_stages=1"},    {"48,8,16,8,16", "split evenly"},
             {"128,128,64,32,32,1,5", "tc_stages=5"}, {"128,128,64,32,16,1,2", "tc_bk=16"}, {"128,96,64,24,32,1,2", "multiple of 16"},
             {"128,256,64,64,64,1,2", "over 49152"}, {"128,128,64,32,32,1,3,1,5", "want 5 to 8"}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    nc_status st = nc_ocl_tc_parse(bad[i].s, &k);
    cr_expect_not_null(st, "tc knobs '%s' accepted", bad[i].s);
    if (st) cr_expect(strstr(nc_status_msg(st), bad[i].want), "'%s': %s", bad[i].s, nc_status_msg(st));
    nc_status_free(st);
  }
  cr_assert_null(nc_ocl_tc_parse("64,32,32,16,64,2", &k));
  cr_expect_eq(k.tc_bm, 64);
  cr_expect_eq(k.tc_bk, 64);
  cr_expect_eq(k.gemm_tc, 2);
  // the fp32 knobs keep the tensor-core ones
  cr_assert_null(nc_ocl_knobs_parse("16,16,8,2,2", &k));
  cr_expect_eq(k.tc_bm, 64);
  if (!nc_ocl_available() || device_is_nvidia()) return;
  setenv("NC_OCL_TC", "32,32,16,16,16,1", 1);
  nc_graph *g = gemm_graph(4, 4, 4);
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &d, &ex);
  cr_assert_not_null(st, "mma.sync accepted on a non-NVIDIA device");
  cr_expect(strstr(nc_status_msg(st), "NVIDIA"), "%s", nc_status_msg(st));
  nc_status_free(st);
  unsetenv("NC_OCL_TC");
  nc_graph_free(g);
}

Test(ocl_bf16, emitter_writes_the_pipelined_kernel_or_its_emulation) {
  nc_ocl_knobs k;
  nc_ocl_knobs_default(true, &k);
  cr_expect_eq(k.tc_stages, 3, "the GPU default is the pipelined kernel");
  for (int mode = 1; mode <= 2; mode++) {
    k.gemm_tc = mode;
    nc_buf b;
    nc_buf_init(&b);
    nc_ocl_emit_gemm_packed(&k, &b);
    cr_assert(b.data && strstr(b.data, "nc_gemm_bf16p") && strstr(b.data, "nc_pack_k") && strstr(b.data, "nc_pack_t") && strstr(b.data, "nc_splitk_sum"));
    const char *ptx[] = {"cp.async.cg.shared.global", "cp.async.wait_group 1;", "ldmatrix.sync.aligned.m8n8.x4.shared.b16", "mma.sync.aligned.m16n8k16"};
    for (int i = 0; i < 4; i++) cr_expect_eq(strstr(b.data, ptx[i]) != NULL, mode == 1, "mode %d: %s", mode, ptx[i]);
    cr_expect(strstr(b.data, "__local uint4 sm[3072]"), "3 slots of (128 + 128) rows x 4 pieces");
    nc_buf_free(&b);
  }
}

Test(ocl_bf16, emitter_writes_the_mma_or_its_emulation) {
  nc_ocl_knobs k;
  nc_ocl_knobs_default(true, &k);
  for (int mode = 1; mode <= 2; mode++)
    for (int v = 0; v < 4; v++) {
      k.gemm_tc = mode;
      nc_buf b;
      nc_buf_init(&b);
      nc_ocl_emit_gemm(&k, v, &b);
      cr_assert(b.data && strstr(b.data, nc_ocl_gemm_name(v)));
      bool mma = strstr(b.data, "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") != NULL;
      cr_expect_eq(mma, mode == 1, "mode %d variant %d", mode, v);
      cr_expect(strstr(b.data, "nc_f2bf(ra[r])") && strstr(b.data, "reqd_work_group_size(256, 1, 1)"), "mode %d variant %d", mode, v);
      nc_buf_free(&b);
    }
}

// ---- the wgmma kernel (8th knob, tc_wg; codegen/ocl_gemm.c) ----

// Emulated anywhere (gemm_tc 2): the packing, the swizzled ring in wgmma's
// 32/64/128-byte layouts, the warpgroup fragments, the tile order, the float2
// store and split-K, at K = 200 (several k-steps, edges in M, N and K).
Test(ocl_bf16, wgmma_kernel_emulated_matches_the_bf16_reference) {
  NEED_OPENCL();
  // BM,BN,-,-,BK,MODE,STAGES,WG: k-steps 16/32/64, one and two warpgroups, waiting (1) or one group
  // in flight (2), and B slices that do not split evenly over the work-items (64 x 8)
  const char *tcs[] = {"64,32,0,0,16,2,2,1", "64,64,0,0,32,2,3,2", "128,64,0,0,64,2,2,1", "64,8,0,0,16,2,4,2"};
  for (size_t i = 0; i < sizeof tcs / sizeof *tcs; i++)
    cr_expect_gt(run_and_check_k(tcs[i], true, 200), 1000, "%s: no element shows bf16 rounding", tcs[i]);
  setenv("NC_OCL_SPLITK", "3", 1);
  cr_expect_gt(run_and_check_k("64,32,0,0,32,2,3,1", true, 200), 1000, "split-K 3");
  unsetenv("NC_OCL_SPLITK");
  cr_expect_gt(run_and_check_k("64,32,0,0,32,2,3,1", true, 45), 1000, "one k-step");
}

// On an NVIDIA compute capability 9.x device: the real kernel (wgmma.mma_async
// through the patched PTX) under several tilings, split-K, the bit-exact
// identity, and the default (NC_OCL_MATMUL=bf16 picks it on Hopper).
Test(ocl_bf16, wgmma_kernel_on_hopper_matches_the_bf16_reference) {
  NEED_OPENCL();
  if (!device_is_nvidia()) cr_skip_test("the default OpenCL device is not NVIDIA: wgmma needs a Hopper GPU (the emulated form is tested above)");
  nc_graph *g = gemm_graph(4, 4, 4);
  setenv("NC_OCL_TC", "128,128,0,0,32,1,3,1", 1);
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &d, &ex);
  unsetenv("NC_OCL_TC");
  nc_graph_free(g);
  if (st && strstr(nc_status_msg(st), "compute capability 9")) {
    nc_status_free(st);
    cr_skip_test("the NVIDIA device is not a Hopper (compute capability 9.x)");
  }
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_exec_free(ex);
  const char *tcs[] = {"128,128,0,0,32,1,3,1", "128,128,0,0,64,1,3,1", "64,128,0,0,64,1,2,1", "128,256,0,0,32,1,4,2", "256,128,0,0,16,1,4,1",
                       "128,64,0,0,64,1,4,2"};
  for (size_t i = 0; i < sizeof tcs / sizeof *tcs; i++) cr_expect_gt(run_packed(tcs[i], NULL), 1000, "%s: no element shows bf16 rounding", tcs[i]);
  cr_expect_gt(run_packed("128,128,0,0,32,1,3,1", "3"), 1000, "split-K 3");
  setenv("NC_OCL_MATMUL", "bf16", 1);
  cr_expect_gt(run_and_check_k(NULL, true, 200), 1000, "the default on Hopper");
  unsetenv("NC_OCL_MATMUL");
}

Test(ocl_bf16, wgmma_knobs_emitter_and_ptx_patch) {
  nc_ocl_knobs k;
  nc_ocl_knobs_default(true, &k);
  struct {
    const char *s, *want;
  } bad[] = {{"96,128,0,0,32,1,3,1", "tc_bm=96"},   {"128,100,0,0,32,1,3,1", "tc_bn=100"},     {"128,128,0,0,48,1,3,1", "tc_bk=48"},
             {"128,128,0,0,32,1,2,2", "tc_stages=2"}, {"128,128,0,0,32,1,9,1", "tc_stages=9"}, {"256,256,0,0,64,1,4,1", "over 229376"},
             {"128,128,0,0,32,1,3,3", "tc_wg=3"},   {"128,264,0,0,32,1,3,1", "tc_bn=264"}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    nc_status st = nc_ocl_tc_parse(bad[i].s, &k);
    cr_expect_not_null(st, "tc knobs '%s' accepted", bad[i].s);
    if (st) cr_expect(strstr(nc_status_msg(st), bad[i].want), "'%s': %s", bad[i].s, nc_status_msg(st));
    nc_status_free(st);
  }
  cr_assert_null(nc_ocl_tc_parse("128,128,0,0,32,1,3,1", &k));
  cr_expect_eq(k.tc_wg, 1);
  for (int mode = 1; mode <= 2; mode++) {
    k.gemm_tc = mode;
    nc_buf b;
    nc_buf_init(&b);
    nc_ocl_emit_gemm_packed(&k, &b);
    cr_assert(b.data && strstr(b.data, "nc_gemm_wgmma") && !strstr(b.data, "nc_gemm_bf16p") && strstr(b.data, "nc_pack_k"));
    const char *ptx[] = {"wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16", "wgmma.fence.sync.aligned", "wgmma.commit_group",
                         "wgmma.wait_group.sync.aligned 0", "fence.proxy.async.shared::cta", "cp.async.wait_group 1;"};
    for (int i = 0; i < 6; i++) cr_expect_eq(strstr(b.data, ptx[i]) != NULL, mode == 1, "mode %d: %s", mode, ptx[i]);
    cr_expect(strstr(b.data, "__local uint4 sm[3072] __attribute__((aligned(1024)))"), "3 slots of (128 + 128) rows x 4 pieces");
    cr_expect(strstr(b.data, "reqd_work_group_size(256, 1, 1)"), "two warpgroups");
    nc_buf_free(&b);
  }
  // the PTX patch: markers removed, sm_90 -> sm_90a, an old .version raised to 8.0
  const char *ptx = "//\n.version 7.8\n.target sm_90, texmode_independent\n.address_size 64\n\t// begin inline asm\n\t//NCWG wgmma.fence.sync.aligned;\n";
  bool changed = false;
  char *out = nc_ocl_ptx_unhide(ptx, strlen(ptx), &changed);
  cr_assert_not_null(out);
  cr_expect(changed);
  cr_expect_str_eq(out, "//\n.version 8.0\n.target sm_90a, texmode_independent\n.address_size 64\n\t// begin inline asm\n\twgmma.fence.sync.aligned;\n");
  free(out);
  const char *plain = ".version 9.0\n.target sm_90a\n// nothing hidden\n";
  out = nc_ocl_ptx_unhide(plain, strlen(plain), &changed);
  cr_assert_not_null(out);
  cr_expect(!changed);
  cr_expect_str_eq(out, plain);
  free(out);
  // NC_OCL_WGMMA is checked; tc_wg with real wgmma off NVIDIA is refused naming the device
  if (!nc_ocl_available()) return;
  nc_graph *g = gemm_graph(4, 4, 4);
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_exec *ex;
  setenv("NC_OCL_WGMMA", "yes", 1);
  nc_status st = nc_exec_new(g, &d, &ex);
  unsetenv("NC_OCL_WGMMA");
  cr_assert_not_null(st, "NC_OCL_WGMMA=yes accepted");
  cr_expect(strstr(nc_status_msg(st), "NC_OCL_WGMMA='yes'"), "%s", nc_status_msg(st));
  nc_status_free(st);
  if (!device_is_nvidia()) {
    setenv("NC_OCL_TC", "128,128,0,0,32,1,3,1", 1);
    st = nc_exec_new(g, &d, &ex);
    unsetenv("NC_OCL_TC");
    cr_assert_not_null(st, "wgmma accepted on a non-NVIDIA device");
    cr_expect(strstr(nc_status_msg(st), "NVIDIA"), "%s", nc_status_msg(st));
    nc_status_free(st);
  }
  nc_graph_free(g);
}

// ---- bf16 operands in memory (the bf16 model's matmuls: NC_PATTERN_BF16_GEMM on OpenCL) ----

static uint16_t to_bf16_bits(float f) {
  float r = ref_bf16(f);
  uint32_t u;
  memcpy(&u, &r, 4);
  return (uint16_t)(u >> 16);
}

static float bf16_bits_to_f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// The same five products as gemm_graph over bf16 inputs, bf16 outputs, plus the
// shared weight transposed (linear_t: the nt form of nn.Linear, read in place).
static nc_graph *gemm_graph_bf16(int64_t M, int64_t N, int64_t K) { return gemm_graph_of(M, N, K, NC_BF16, true); }

static void to_bf16_tensor(const nc_tensor *f, nc_tensor *h) {
  cr_assert_null(nc_tensor_alloc(h, NC_BF16, f->rank, f->shape));
  const float *p = f->data;
  uint16_t *q = h->data;
  for (int64_t i = 0; i < nc_tensor_numel(f); i++) q[i] = to_bf16_bits(p[i]);
}

// Runs gemm_graph_bf16 at B x M x N x K on OpenCL (NC_OCL_TC=tc when given)
// against a double reference over the bf16 operands: every element within
// half a bf16 ulp of the exact product plus fp32 accumulation (2e-6 x sum|a*b|);
// returns how many elements are bit-identical to the exact product rounded once.
static int64_t run_bf16_operands_mn(const char *tc, int64_t M, int64_t N, int64_t K, int64_t *total) {
  const int64_t B = 2;
  nc_graph *g = gemm_graph_bf16(M, N, K);
  if (tc) setenv("NC_OCL_TC", tc, 1);
  nc_device dev;
  cr_assert_null(nc_device_parse("opencl", &dev));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &dev, &ex);
  cr_assert_null(st, "%s", nc_status_msg(st));
  unsetenv("NC_OCL_TC");
  gemm_data d;
  data_make(&d, B, M, N, K);
  // the bf16 operands (d's f32 tensors rounded: ref_at with round = true is their exact product)
  nc_tensor wt32, h[6];
  int64_t swt[2] = {N, K};
  cr_assert_null(nc_tensor_alloc(&wt32, NC_F32, 2, swt));
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++) ((float *)wt32.data)[n * K + k] = ((const float *)d.w.data)[k * N + n];
  to_bf16_tensor(&d.a, &h[0]), to_bf16_tensor(&d.at, &h[1]), to_bf16_tensor(&d.b, &h[2]), to_bf16_tensor(&d.bt, &h[3]);
  to_bf16_tensor(&d.w, &h[4]), to_bf16_tensor(&wt32, &h[5]);
  nc_feed f[6] = {{"a", &h[0]}, {"at", &h[1]}, {"b", &h[2]}, {"bt", &h[3]}, {"w", &h[4]}, {"wt", &h[5]}};
  nc_tensor out[6];
  st = nc_exec_run(ex, f, 6, out);
  cr_assert_null(st, "%s", nc_status_msg(st));
  int64_t same = 0;
  double worst = 0;
  for (int o = 0; o < 6; o++) {
    cr_assert_eq(out[o].dtype, NC_BF16, "output %d is not bf16", o);
    cr_assert_eq(nc_tensor_numel(&out[o]), B * M * N);
    const uint16_t *c = out[o].data;
    for (int64_t q = 0; q < B; q++)
      for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
          double mag;
          double want = ref_at(&d, o == 5 ? 4 : o, q, m, n, true, &mag);
          uint16_t gb = c[(q * M + m) * N + n];
          double got = bf16_bits_to_f(gb), tol = fabs(want) / 256 + 2e-6 * mag + 1e-30;
          worst = fmax(worst, fabs(got - want) / (fabs(want) + mag * 1e-3 + 1e-30));
          if (!(fabs(got - want) <= tol))
            cr_assert_fail("%s %lldx%lldx%lld output %d [%lld,%lld,%lld]: got %.9g want %.9g (|a.b| %.3g)", tc ? tc : "default", (long long)M,
                           (long long)N, (long long)K, o,
                           (long long)q, (long long)m, (long long)n, got, want, mag);
          same += gb == to_bf16_bits((float)want);
        }
    nc_tensor_free(&out[o]);
  }
  *total = 6 * B * M * N;
  cr_log_info("bf16 operands NC_OCL_TC=%s %lldx%lldx%lld: %lld of %lld elements are the exact product rounded once; worst rel. %.3g",
              tc ? tc : "-", (long long)M, (long long)N, (long long)K, (long long)same, (long long)*total, worst);
  for (int i = 0; i < 6; i++) nc_tensor_free(&h[i]);
  nc_tensor_free(&wt32);
  data_free(&d);
  nc_exec_free(ex);
  nc_graph_free(g);
  return same;
}

static int64_t run_bf16_operands(const char *tc, int64_t K, int64_t *total) { return run_bf16_operands_mn(tc, 70, 37, K, total); }

// K = 45: no operand can be read in place (rows not 16-byte aligned: packed from bf16); 48 and 200
// (several k-steps): the k-contiguous ones (nt's A and B, nn's A, linear_t's) in place, the rest packed.
static void check_bf16_operands(const char *tc) {
  const int64_t ks[3] = {45, 48, 200};
  for (int i = 0; i < 3; i++) {
    int64_t total = 0, same = run_bf16_operands(tc, ks[i], &total);
    // fp32 accumulation in another order may flip a rounding now and then, never often
    cr_expect_geq(same * 100, total * 97, "%s K=%lld: only %lld of %lld elements are the product rounded once", tc ? tc : "default", (long long)ks[i],
                  (long long)same, (long long)total);
  }
}

Test(ocl_bf16, bf16_operands_every_kernel_and_transpose_match_the_reference, .timeout = 600) {
  NEED_OPENCL();
  // the portable GEMM (the default off NVIDIA), the register-staged, pipelined (mma.sync) and wgmma kernels emulated
  const char *tcs[] = {NULL, "32,32,16,16,16,2", "32,32,16,16,32,2,3", "64,32,0,0,32,2,3,1", "64,64,0,0,64,2,2,1"};
  for (size_t i = 0; i < sizeof tcs / sizeof *tcs; i++) check_bf16_operands(tcs[i]);
}

Test(ocl_bf16, bf16_operands_packed_and_split_k_match_the_reference, .timeout = 600) {
  NEED_OPENCL();
  // every operand packed (NC_OCL_GEMM_DIRECT=0: nc_pack_kh / nc_pack_th), then split-K (partial sums, bf16 C in the sum)
  setenv("NC_OCL_GEMM_DIRECT", "0", 1);
  check_bf16_operands("64,32,0,0,32,2,3,1");
  check_bf16_operands("32,32,16,16,32,2,2");
  unsetenv("NC_OCL_GEMM_DIRECT");
  setenv("NC_OCL_SPLITK", "3", 1);
  check_bf16_operands("64,32,0,0,32,2,3,1");
  check_bf16_operands("32,32,16,16,32,2,2");
  unsetenv("NC_OCL_SPLITK");
  // a bad value of any of the device's on/off switches is named
  nc_graph *g = gemm_graph_bf16(4, 4, 8);
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  const char *sw[] = {"NC_OCL_GEMM_DIRECT", "NC_OCL_WGMMA", "NC_OCL_SCATTER"};
  for (size_t i = 0; i < sizeof sw / sizeof *sw; i++) {
    nc_exec *ex;
    char want[64];
    snprintf(want, sizeof want, "%s='yes'", sw[i]);
    setenv(sw[i], "yes", 1);
    setenv("NC_OCL_TC", "64,32,0,0,32,2,3,1", 1);
    nc_status st = nc_exec_new(g, &d, &ex);
    unsetenv("NC_OCL_TC");
    unsetenv(sw[i]);
    cr_assert_not_null(st, "%s accepted", want);
    cr_expect(strstr(nc_status_msg(st), want), "%s", nc_status_msg(st));
    nc_status_free(st);
  }
  nc_graph_free(g);
}

// The wgmma kernel's MN-major operands read in place (the tn weight gradients' A and B, the nn form's B,
// the tt form's A: rows of M or N elements, 16-byte aligned): at 72 x 40 (partial tiles, M and N multiples
// of 8: the zero-filling _z variants) with K = 45 (no k-contiguous row aligned: those operands packed, the
// MN-major ones still in place, k rows past K zero-filled) and 200, and at 128 x 128 x 64 (whole tiles:
// the plain variants; with whole), within the same tolerance and rounding as check_bf16_operands.
static void check_bf16_operands_mn(const char *tc, bool whole) {
  const int64_t shapes[3][3] = {{72, 40, 45}, {72, 40, 200}, {128, 128, 64}};
  for (int i = 0; i < (whole ? 3 : 2); i++) {
    int64_t total = 0, same = run_bf16_operands_mn(tc, shapes[i][0], shapes[i][1], shapes[i][2], &total);
    cr_expect_geq(same * 100, total * 97, "%s %lldx%lldx%lld: only %lld of %lld elements are the product rounded once", tc ? tc : "default",
                  (long long)shapes[i][0], (long long)shapes[i][1], (long long)shapes[i][2], (long long)same, (long long)total);
  }
}

Test(ocl_bf16, bf16_operands_mn_major_in_place_match_the_reference, .timeout = 900) {
  NEED_OPENCL();
  // emulated wgmma: 128-byte (k-step 64), 32-byte (16) and 64-byte (32) K-major swizzles beside the MN-major slots, one and two
  // warpgroups, tc_wg 1 and 2; tc_bn 32 has no MN-major B (the tn form then reads A alone MN-major: the tt form's variant)
  const char *tcs[] = {"64,64,0,0,64,2,2,1", "64,64,0,0,16,2,3,1", "128,128,0,0,32,2,3,2", "64,32,0,0,32,2,3,1"};
  for (size_t i = 0; i < sizeof tcs / sizeof *tcs; i++) check_bf16_operands_mn(tcs[i], i == 0);
  setenv("NC_OCL_SPLITK", "3", 1);  // split-K over MN-major operands (f32 partials)
  check_bf16_operands_mn("64,64,0,0,64,2,3,1", false);
  unsetenv("NC_OCL_SPLITK");
}

// On a Hopper GPU: the real wgmma kernel (and mma.sync) reading bf16 operands in place (cp.async with
// src-size zero-fill at the edges), packed from bf16, with split-K, and the default through the precision switch.
Test(ocl_bf16, bf16_operands_on_nvidia_match_the_reference, .timeout = 600) {
  NEED_OPENCL();
  if (!device_is_nvidia()) cr_skip_test("the default OpenCL device is not NVIDIA (the emulated forms are tested above)");
  check_bf16_operands("128,128,64,32,32,1,3");
  check_bf16_operands("128,128,64,32,32,1");
  check_bf16_operands(NULL);  // the default: gemm_tc 0 (no bf16 asked), the portable GEMM over bf16 buffers
  setenv("NC_OCL_MATMUL", "bf16", 1);
  check_bf16_operands(NULL);  // wgmma on Hopper, else mma.sync
  setenv("NC_OCL_SPLITK", "3", 1);
  check_bf16_operands(NULL);
  unsetenv("NC_OCL_SPLITK");
  setenv("NC_OCL_GEMM_DIRECT", "0", 1);
  check_bf16_operands(NULL);
  unsetenv("NC_OCL_GEMM_DIRECT");
  unsetenv("NC_OCL_MATMUL");
  nc_ocl_knobs k;
  nc_ocl_knobs_default(true, &k);
  nc_ocl_wgmma_default(&k);
  char tc[64];
  snprintf(tc, sizeof tc, "%d,%d,0,0,%d,1,%d,1", k.tc_bm, k.tc_bn, k.tc_bk, k.tc_stages);
  nc_graph *g = gemm_graph(4, 4, 4);
  setenv("NC_OCL_TC", tc, 1);
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &d, &ex);
  unsetenv("NC_OCL_TC");
  nc_graph_free(g);
  if (st) {  // not a Hopper
    nc_status_free(st);
    return;
  }
  nc_exec_free(ex);
  check_bf16_operands(tc);
  check_bf16_operands("128,256,0,0,32,1,4,2");
  // MN-major operands in place through wgmma's transpose bits (the descriptors' MN-major strides checked here only)
  check_bf16_operands_mn(tc, true);
  check_bf16_operands_mn("128,256,0,0,32,1,4,2", true);
  check_bf16_operands_mn("64,64,0,0,16,1,3,1", true);
  check_bf16_operands_mn("128,64,0,0,32,1,3,1", true);  // tc_bn 64: one MN-major block of B
  check_bf16_operands_mn("64,32,0,0,64,1,3,1", true);   // no MN-major B: tn reads A alone in place
  setenv("NC_OCL_MATMUL", "bf16", 1);
  check_bf16_operands_mn(NULL, true);
  setenv("NC_OCL_SPLITK", "3", 1);
  check_bf16_operands_mn(NULL, true);
  unsetenv("NC_OCL_SPLITK");
  unsetenv("NC_OCL_MATMUL");
}

// The emitter: bf16 variants of the portable and register-staged GEMMs; the pipelined and wgmma
// kernels copy with cp.async's src-size (zero-fill), have the bf16 pack kernels and a bf16 store.
Test(ocl_bf16, emitter_writes_bf16_operand_variants) {
  nc_ocl_knobs k;
  nc_ocl_knobs_default(true, &k);
  for (int tc = 0; tc <= 2; tc++)
    for (int v = 0; v < 4; v++) {
      k.gemm_tc = tc;
      nc_buf b;
      nc_buf_init(&b);
      nc_ocl_emit_gemm(&k, v | NC_OCL_GEMM_BF16, &b);
      cr_assert(b.data && strstr(b.data, nc_ocl_gemm_name(v | NC_OCL_GEMM_BF16)) && strstr(b.data, "_h("), "tc %d variant %d", tc, v);
      cr_expect(strstr(b.data, "__global const ushort *A, __global const ushort *B, __global ushort *C"), "tc %d variant %d", tc, v);
      cr_expect(strstr(b.data, "#define NC_GL(x) nc_bf2f(x)") && !strstr(b.data, "vload4"), "tc %d variant %d", tc, v);
      nc_buf_free(&b);
    }
  nc_ocl_wgmma_default(&k);
  for (int wg = 0; wg <= 1; wg++)
    for (int mode = 1; mode <= 2; mode++) {
      nc_ocl_knobs kk = k;
      kk.gemm_tc = mode;
      if (!wg) kk.tc_wg = 0, kk.tc_bk = 32, kk.tc_wm = 64, kk.tc_wn = 32;
      nc_buf b;
      nc_buf_init(&b);
      nc_ocl_emit_gemm_packed(&kk, &b);
      cr_assert(b.data && strstr(b.data, "nc_pack_kh") && strstr(b.data, "nc_pack_th") && strstr(b.data, "long lda, long ldb, long Kv"));
      // the plain kernel (f32 C, no bounds: packed operands or whole tiles) as before
      cr_expect(!strstr(b.data, "16, %2;") && !strstr(b.data, "(uint4)(0u)") && !strstr(b.data, "_z(") && !strstr(b.data, "ushort *C, long M"),
                "wg %d mode %d: the plain kernel has bounds or a bf16 C", wg, mode);
      nc_buf_free(&b);
      for (int f = 1; f < 4; f++) {  // the zero-fill and bf16-C variants
        char nm[40];
        nc_ocl_gemm_packed_name(&kk, f, nm, sizeof nm);
        char want[40];
        snprintf(want, sizeof want, "nc_gemm_%s%s%s", wg ? "wgmma" : "bf16p", f & 1 ? "_z" : "", f & 2 ? "_h" : "");
        cr_expect_str_eq(nm, want);
        nc_buf_init(&b);
        nc_ocl_emit_gemm_packed_kernel(&kk, f, &b);
        cr_assert(b.data && strstr(b.data, nm));
        bool zf = f & NC_OCL_GEMMP_ZFILL, h = f & NC_OCL_GEMMP_CBF16;
        cr_expect_eq(strstr(b.data, "cp.async.cg.shared.global [%0], [%1], 16, %2;") != NULL, zf && mode == 1, "wg %d mode %d f %d", wg, mode, f);
        cr_expect_eq(strstr(b.data, "ok ? *src : (uint4)(0u)") != NULL, zf && mode == 2, "wg %d mode %d f %d", wg, mode, f);
        cr_expect_eq(strstr(b.data, "ushort *C, long M") != NULL, h, "wg %d mode %d f %d: bf16 C", wg, mode, f);
        nc_buf_free(&b);
      }
    }
}

// The wgmma kernel's MN-major variants: names, copies from k rows (base pointer not scaled by lda / ldb),
// the MN-major descriptor and transpose bits (mode 1) or the MN-major element reads (mode 2); not
// offered for the mma.sync kernel nor for a B block whose width is not a multiple of 64.
Test(ocl_bf16, emitter_writes_mn_major_wgmma_variants) {
  nc_ocl_knobs k;
  nc_ocl_knobs_default(true, &k);
  nc_ocl_wgmma_default(&k);
  const int fl[3] = {NC_OCL_GEMMP_BMN, NC_OCL_GEMMP_AMN | NC_OCL_GEMMP_BMN, NC_OCL_GEMMP_AMN};
  const char *sfx[3] = {"_tb", "_ta_tb", "_ta"}, *bits[3] = {"p, 1, 1, 0, 1;", "p, 1, 1, 1, 1;", "p, 1, 1, 1, 0;"};
  const char *base[3] = {"A += oa + q * sa + m0 * lda; B += ob + q * sb + n0;", "A += oa + q * sa + m0; B += ob + q * sb + n0;",
                         "A += oa + q * sa + m0; B += ob + q * sb + n0 * ldb;"};
  for (int mode = 1; mode <= 2; mode++)
    for (int i = 0; i < 3; i++)
      for (int zh = 0; zh < 4; zh++) {
        nc_ocl_knobs kk = k;
        kk.gemm_tc = mode;
        int f = fl[i] | zh;
        cr_assert(nc_ocl_gemm_variant_ok(&kk, f));
        char nm[48], want[48];
        nc_ocl_gemm_packed_name(&kk, f, nm, sizeof nm);
        snprintf(want, sizeof want, "nc_gemm_wgmma%s%s%s", zh & 1 ? "_z" : "", zh & 2 ? "_h" : "", sfx[i]);
        cr_expect_str_eq(nm, want);
        nc_buf b;
        nc_buf_init(&b);
        nc_ocl_emit_gemm_packed_kernel(&kk, f, &b);
        cr_assert(b.data && strstr(b.data, nm));
        cr_expect(strstr(b.data, base[i]), "%s: base pointers", nm);
        cr_expect(strstr(b.data, "((c & 7) ^ (kr & 7))"), "%s: MN-major slot layout", nm);
        cr_expect_eq(strstr(b.data, bits[i]) != NULL, mode == 1, "%s mode %d: transpose bits", nm, mode);
        cr_expect_eq(strstr(b.data, "NC_DESCT(aa") != NULL, mode == 1 && (fl[i] & NC_OCL_GEMMP_AMN), "%s mode %d: A descriptor", nm, mode);
        cr_expect_eq(strstr(b.data, "NC_DESCT(ba") != NULL, mode == 1 && (fl[i] & NC_OCL_GEMMP_BMN), "%s mode %d: B descriptor", nm, mode);
        cr_expect_eq(strstr(b.data, "(nr >> 6)") != NULL, mode == 2 && (fl[i] & NC_OCL_GEMMP_BMN), "%s mode %d: B reads", nm, mode);
        cr_expect_eq(strstr(b.data, "gk < Kv") != NULL, (zh & 1) != 0, "%s: zero-fill", nm);
        nc_buf_free(&b);
      }
  // the K-major kernel keeps its descriptor and bits
  nc_buf b;
  nc_buf_init(&b);
  nc_ocl_emit_gemm_packed_kernel(&k, 0, &b);
  cr_expect(b.data && strstr(b.data, "p, 1, 1, 0, 0;") && !strstr(b.data, "NC_DESCT(aa") && !strstr(b.data, "NC_DESCT(ba"));
  nc_buf_free(&b);
  nc_ocl_knobs m = k;
  m.tc_bn = 96;
  cr_expect(!nc_ocl_gemm_variant_ok(&m, NC_OCL_GEMMP_BMN) && nc_ocl_gemm_variant_ok(&m, NC_OCL_GEMMP_AMN));
  // ring slots off 1024-byte boundaries ((128 + 40) x 32 x 2 = 10,752 bytes): no MN-major variant
  m.tc_bn = 40, m.tc_bk = 32;
  cr_expect(!nc_ocl_gemm_variant_ok(&m, NC_OCL_GEMMP_AMN) && !nc_ocl_gemm_variant_ok(&m, NC_OCL_GEMMP_BMN));
  m.tc_bn = 96, m.tc_bk = 64;
  m.tc_wg = 0;
  cr_expect(!nc_ocl_gemm_variant_ok(&m, NC_OCL_GEMMP_AMN) && nc_ocl_gemm_variant_ok(&m, NC_OCL_GEMMP_ZFILL));
}

// The split-K count (nc_ocl_splitk_choose, 132 compute units as on the H100, 128 x 128 x 64 tiles): none
// when the tiles fill two work-groups per compute unit or K is short; else in 1..min(16, nkt / 4) with no
// empty split, and on the tn weight-gradient shapes the counts that ran fastest in the H100 sweep
// (docs/performance.md, 2026-11-27 "MN-major operands"): 7 for d12's 3072 x 768 x 32768 and for
// 768 x 768 x 65536 and 2304 x 768 x 65536, 9 for 3072 x 768 x 65536 (the old rule, the first count
// reaching two work-groups per unit, gave 2, 8, 3 and 2).
Test(ocl_bf16, split_k_count_fills_whole_waves) {
  const int64_t macs = 128 * 128 * 64;
  cr_expect_eq(nc_ocl_splitk_choose(264, 512, 132, 4096LL * 2048, macs), 1);   // the tiles fill the device
  cr_expect_eq(nc_ocl_splitk_choose(1536, 1024, 132, 32768LL * 768, macs), 1);  // the lm_head's weight gradient
  cr_expect_eq(nc_ocl_splitk_choose(4, 7, 132, 256LL * 256, macs), 1);          // under 8 k-steps
  const int64_t sh[4][3] = {{3072, 768, 32768}, {768, 768, 65536}, {2304, 768, 65536}, {3072, 768, 65536}}, want[4] = {7, 7, 7, 9};
  for (int i = 0; i < 4; i++) {
    int64_t tiles = (sh[i][0] / 128) * (sh[i][1] / 128), nkt = sh[i][2] / 64;
    cr_expect_eq(nc_ocl_splitk_choose(tiles, nkt, 132, sh[i][0] * sh[i][1], macs), want[i], "%lld x %lld x %lld", (long long)sh[i][0],
                 (long long)sh[i][1], (long long)sh[i][2]);
  }
  for (int64_t tiles = 1; tiles < 300; tiles += 7)
    for (int64_t nkt = 1; nkt < 600; nkt += 13) {
      int64_t s = nc_ocl_splitk_choose(tiles, nkt, 132, tiles * 128 * 128, macs), kps = (nkt + s - 1) / s;
      int64_t smax = nkt / 4 < 16 ? nkt / 4 : 16;
      cr_assert(s == 1 || (s >= 2 && s <= smax && (s - 1) * kps < nkt), "tiles %lld nkt %lld: %lld splits", (long long)tiles, (long long)nkt,
                (long long)s);
      if (tiles >= 264 || nkt < 8) cr_assert_eq(s, 1);
    }
  cr_expect_eq(nc_ocl_splitk_choose(36, 1024, 0, 768LL * 768, macs), nc_ocl_splitk_choose(36, 1024, 1, 768LL * 768, macs));  // no units reported
}
