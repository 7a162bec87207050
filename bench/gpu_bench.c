// GPU kernel benchmark of the OpenCL backend (bench/gpu_bench.sh runs it):
//   gemm MODEL M N K TA TB  -- one matmul (M,K)x(K,N) (transposes TA/TB) in the
//                              precision of --precision (bf16: tensor cores on
//                              NVIDIA), device time from profiling events, median
//                              of --reps runs; 64 sampled outputs checked against
//                              a CPU reference (bf16-rounded operands for bf16).
//                              --operands fp32 (the default): f32 A, B, C in memory
//                              (the fp32 graph's GEMMs: operands packed to bf16 per
//                              call); bf16: bf16 A, B, C in memory, as torch.matmul's
//                              bf16 tensors and the bf16 model's matmuls (read in
//                              place where k is contiguous).
//   attn B T H D            -- causal attention forward + the three gradients
//                              (fp32), total device time of the plan's kernels.
// Prints one line per case: "ours gemm <label> M N K ta tb <precision> <operands>-operands: X ms, Y TFLOP/s, max rel err Z".
// Usage: gpu_bench [--device SEL] [--precision bf16|fp32] [--operands fp32|bf16] [--reps N] CASE... where CASE
// is "gemm:LABEL:M:N:K:TA:TB" or "attn:B:T:H:D".
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/ocl_emit.h"
#include "ir/build.h"
#include "passes/lower.h"
#include "passes/pass.h"
#include "runtime/ocl_device.h"

static float bench_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t lo = u & 0xffffu, hi = u >> 16;
  if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u))) hi++;
  u = hi << 16;
  memcpy(&f, &u, 4);
  return f;
}

static void bench_fill(nc_tensor *t, uint64_t seed, float scale) {
  float *p = t->data;
  for (int64_t i = 0; i < nc_tensor_numel(t); i++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = scale * (float)((double)(seed >> 11) / 9007199254740992.0 * 2 - 1);
  }
}

static int bench_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

// Compiles g for the device, runs it reps+1 times (the first is warm-up), returns the median device time.
// *tc receives the GEMM actually built (gemm_tc: 0 fp32, 1 mma.sync, 2 emulated).
// patterns_off: NC_PATTERN_* bits switched off on top of those the OpenCL device never
// uses (runtime/exec.c keeps only the patterns its emitter lowers).
#define BENCH_OCL_PATTERNS_OK                                                                                    \
  (NC_PATTERN_CROSS_ENTROPY | NC_PATTERN_ATTENTION | NC_PATTERN_SOFTCAP_CE | NC_PATTERN_NORM_ROPE |              \
   NC_PATTERN_SYMMETRIC_GEMM | NC_PATTERN_UPDATE_GROUP | NC_PATTERN_FLASH_ATTENTION | NC_PATTERN_BF16_GEMM)
static nc_status bench_run(nc_graph **g, const char *sel, bool bf16, unsigned patterns_off, const nc_feed *f, int nf, int reps, double *med,
                           nc_tensor *out, int nout, int *tc) {
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.patterns_off = patterns_off | ~(unsigned)BENCH_OCL_PATTERNS_OK;
  // flash attention as runtime/exec.c uses it on OpenCL, unless switched off
  bool flash = !(ctx.patterns_off & (NC_PATTERN_FLASH_ATTENTION | NC_PATTERN_ATTENTION));
  if (flash) ctx.patterns_force |= NC_PATTERN_FLASH_ATTENTION;
  const char *passes[] = {"decompose", "dce"};
  NC_TRY(nc_pass_run_pipeline(g, passes, 2, &ctx));
  nc_lower_opts lo = {.fuse = true, .patterns_off = ctx.patterns_off, .flash_attention = flash};
  nc_plan *p;
  NC_TRY(nc_plan_build(*g, &lo, &p));
  nc_ocl_opts oo = {.select = sel, .profile = true, .matmul_bf16 = bf16};
  nc_ocl_knobs kn;
  const char *ts = getenv("NC_OCL_TC");
  nc_ocl *c = NULL;
  nc_status st = NC_OK;
  if (ts && *ts) {
    nc_ocl_device_desc dd;
    st = nc_ocl_select(sel, &dd);
    if (!st) nc_ocl_knobs_default(dd.gpu, &kn), st = nc_ocl_tc_parse(ts, &kn), oo.knobs = &kn;
  }
  if (!st) st = nc_ocl_compile(p, &oo, &c);
  if (!st) *tc = nc_ocl_knobs_used(c)->gemm_tc;
  double t[64];
  if (reps > 63) reps = 63;
  for (int r = 0; r <= reps && !st; r++) {
    nc_tensor tmp[8];
    st = nc_ocl_run(c, *g, p, f, nf, r == reps ? out : tmp);
    if (!st && r != reps)
      for (int i = 0; i < nout; i++) nc_tensor_free(&tmp[i]);
    t[r] = nc_ocl_last_run_seconds(c);
  }
  if (!st) {
    qsort(t + 1, (size_t)reps, sizeof *t, bench_cmp);
    *med = t[1 + reps / 2];
  }
  nc_ocl_free(c);
  nc_plan_free(p);
  return st;
}

// The bf16 (ushort) copy of an f32 tensor, rounded to nearest even.
static nc_status bench_to_bf16(const nc_tensor *f, nc_tensor *h) {
  NC_TRY(nc_tensor_alloc(h, NC_BF16, f->rank, f->shape));
  const float *p = f->data;
  uint16_t *q = h->data;
  for (int64_t i = 0; i < nc_tensor_numel(f); i++) {
    float r = bench_bf16(p[i]);
    uint32_t u;
    memcpy(&u, &r, 4);
    q[i] = (uint16_t)(u >> 16);
  }
  return NC_OK;
}

static nc_status bench_gemm(const char *label, int64_t M, int64_t N, int64_t K, bool ta, bool tb, const char *sel, bool bf16, bool bf_ops,
                            int reps) {
  nc_graph *g = nc_graph_new("gpu_bench_gemm");
  nc_dim da[2] = {nc_dim_const(ta ? K : M), nc_dim_const(ta ? M : K)}, db[2] = {nc_dim_const(tb ? N : K), nc_dim_const(tb ? K : N)};
  nc_dtype odt = bf_ops ? NC_BF16 : NC_F32;
  nc_id a = nc_leaf(g, NC_OP_INPUT, "a", nc_type_make(odt, 2, da));
  nc_id b = nc_leaf(g, NC_OP_INPUT, "b", nc_type_make(odt, 2, db));
  nc_status st = nc_graph_set_output(g, "c", nc_b_matmul(g, a, b, ta, tb));
  if (!st && nc_graph_error(g)) st = nc_errorf(NC_E_INVALID, "%s", nc_status_msg(nc_graph_error(g)));
  nc_tensor A = {0}, B = {0}, C = {0}, Ah = {0}, Bh = {0};
  int64_t sa[2] = {ta ? K : M, ta ? M : K}, sb[2] = {tb ? N : K, tb ? K : N};
  if (!st) st = nc_tensor_alloc(&A, NC_F32, 2, sa);
  if (!st) st = nc_tensor_alloc(&B, NC_F32, 2, sb);
  double med = 0;
  int tc = 0;
  if (!st) {
    bench_fill(&A, 1, 1.0f), bench_fill(&B, 2, 1.0f);
    if (bf_ops) st = bench_to_bf16(&A, &Ah);
    if (!st && bf_ops) st = bench_to_bf16(&B, &Bh);
  }
  if (!st) {
    nc_feed f[2] = {{"a", bf_ops ? &Ah : &A}, {"b", bf_ops ? &Bh : &B}};
    st = bench_run(&g, sel, bf16, 0, f, 2, reps, &med, &C, 1, &tc);
    bf16 = tc != 0 || bf_ops;  // bf16 asked off NVIDIA runs (and is checked as) the fp32 GEMM; bf16 operands are bf16
  }
  if (!st) {
    const float *pa = A.data, *pb = B.data;
    double worst = 0;
    for (int s = 0; s < 64; s++) {
      int64_t m = (int64_t)((uint64_t)s * 2654435761u % (uint64_t)M), n = (int64_t)((uint64_t)s * 40503u % (uint64_t)N);
      if (s == 63) m = M - 1, n = N - 1;
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; k++) {
        float x = ta ? pa[k * M + m] : pa[m * K + k], y = tb ? pb[n * K + k] : pb[k * N + n];
        if (bf16) x = bench_bf16(x), y = bench_bf16(y);
        ref += (double)x * y, mag += fabs((double)x * y);
      }
      double got;
      if (bf_ops) {  // a bf16 C: the product rounded once (half an ulp, 1/512 of it, is not an error)
        uint32_t u = (uint32_t)((const uint16_t *)C.data)[m * N + n] << 16;
        float x;
        memcpy(&x, &u, 4);
        got = x;
        worst = fmax(worst, fmax(fabs(got - ref) - fabs(ref) / 256, 0.0) / mag);
      } else {
        got = ((const float *)C.data)[m * N + n];
        worst = fmax(worst, fabs(got - ref) / mag);
      }
    }
    double tf = 2.0 * (double)M * (double)N * (double)K / med * 1e-12;
    printf("ours gemm %-12s %6lld %6lld %6lld %s%s %s %s-operands: %8.3f ms %7.1f TFLOP/s  max |err|/sum|ab| %.2g%s\n", label, (long long)M,
           (long long)N, (long long)K, ta ? "t" : "n", tb ? "t" : "n", tc == 1 ? "bf16" : tc == 2 ? "bf16-emulated" : "fp32", bf_ops ? "bf16" : "fp32",
           med * 1e3, tf, worst, worst > 1e-5 ? "  WRONG" : "");
    fflush(stdout);
    nc_tensor_free(&C);
  }
  nc_tensor_free(&A), nc_tensor_free(&B), nc_tensor_free(&Ah), nc_tensor_free(&Bh);
  nc_graph_free(g);
  return st;
}

// Attention as the training step runs it on OpenCL: flash attention (codegen/ocl_attn.h;
// tensor cores with --precision bf16 on NVIDIA), then for scale the GEMM decomposition
// (scores, masked softmax, probabilities @ V and their gradients; bmm through the GEMM
// template), which the step used before; the two results are compared.
static nc_status bench_attn(int64_t B, int64_t T, int64_t H, int64_t D, const char *sel, bool bf16, int reps) {
  nc_graph *g = nc_graph_new("gpu_bench_attn");
  nc_dim d4[4] = {nc_dim_const(B), nc_dim_const(T), nc_dim_const(H), nc_dim_const(D)};
  nc_type ty = nc_type_make(NC_F32, 4, d4);
  nc_id q = nc_leaf(g, NC_OP_INPUT, "q", ty), k = nc_leaf(g, NC_OP_INPUT, "k", ty), v = nc_leaf(g, NC_OP_INPUT, "v", ty);
  nc_id dout = nc_leaf(g, NC_OP_INPUT, "dout", ty);
  double scale = 1.0 / sqrt((double)D);
  nc_status st = nc_graph_set_output(g, "y", nc_b_attention(g, q, k, v, NC_NONE, true, 0, scale));
  const char *names[3] = {"dq", "dk", "dv"};
  for (int w = 0; w < 3 && !st; w++) st = nc_graph_set_output(g, names[w], nc_b_attention_grad(g, q, k, v, dout, NC_NONE, w, true, 0, scale));
  if (!st && nc_graph_error(g)) st = nc_errorf(NC_E_INVALID, "%s", nc_status_msg(nc_graph_error(g)));
  nc_tensor t[4] = {{0}};
  int64_t shape[4] = {B, T, H, D};
  for (int i = 0; i < 4 && !st; i++) {
    st = nc_tensor_alloc(&t[i], NC_F32, 4, shape);
    if (!st) bench_fill(&t[i], (uint64_t)i + 10, 1.0f);
  }
  double med = 0;
  nc_tensor out[2][4];
  const char *how[2] = {"flash attention", "GEMM decomposition"};
  const char *old = getenv("GPU_BENCH_ATTN_OLD");  // 0: skip the decomposition
  int runs = old && !strcmp(old, "0") ? 1 : 2;
  for (int r = 0; r < runs && !st; r++) {
    nc_graph *h = NULL;  // a fresh copy: bench_run lowers its graph in place
    st = nc_graph_copy(g, &h);
    nc_feed f[4] = {{"q", &t[0]}, {"k", &t[1]}, {"v", &t[2]}, {"dout", &t[3]}};
    int tc = 0;
    if (!st) st = bench_run(&h, sel, bf16, r ? NC_PATTERN_ATTENTION | NC_PATTERN_FLASH_ATTENTION : 0, f, 4, reps, &med, out[r], 4, &tc);
    nc_graph_free(h);
    if (st) break;
    // causal: 4 matmuls of (T x T x D) halved, forward 2 + backward 5 -> 7 * 2 * B*H*T*T*D / 2 flops (FA2 counting: fwd 2, bwd 5 -> 3.5 fwd)
    double fl = 3.5 * 4.0 * (double)B * (double)H * (double)T * (double)T * (double)D / 2.0;
    printf("ours attention fwd+bwd B=%lld T=%lld H=%lld D=%lld causal, %s, %s: %8.3f ms  %6.1f TFLOP/s\n", (long long)B, (long long)T,
           (long long)H, (long long)D, how[r], tc == 1 ? "bf16 tensor cores" : tc ? "bf16 emulated" : "fp32", med * 1e3, fl / med * 1e-12);
    fflush(stdout);
  }
  if (!st && runs == 2) {  // flash vs the decomposition: max |diff| / max |ref| per output
    const char *on[4] = {"y", "dq", "dk", "dv"};
    for (int i = 0; i < 4; i++) {
      const float *a = out[0][i].data, *b = out[1][i].data;
      double md = 0, mr = 0;
      for (int64_t j = 0; j < nc_tensor_numel(&out[0][i]); j++) md = fmax(md, fabs((double)a[j] - b[j])), mr = fmax(mr, fabs((double)b[j]));
      printf("  %s: flash vs decomposition max|diff|/max|ref| = %.3g\n", on[i], mr > 0 ? md / mr : md);
    }
  }
  for (int r = 0; r < runs && !st; r++)
    for (int i = 0; i < 4; i++) nc_tensor_free(&out[r][i]);
  for (int i = 0; i < 4; i++) nc_tensor_free(&t[i]);
  nc_graph_free(g);
  return st;
}

int main(int argc, char **argv) {
  const char *sel = "gpu";
  bool bf16 = true, bf_ops = false;
  int reps = 10, rc = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--device") && i + 1 < argc) sel = argv[++i];
    else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
      const char *p = argv[++i];
      if (strcmp(p, "bf16") && strcmp(p, "fp32")) {
        fprintf(stderr, "gpu_bench: --precision %s: want bf16 or fp32\n", p);
        return 2;
      }
      bf16 = !strcmp(p, "bf16");
    } else if (!strcmp(argv[i], "--operands") && i + 1 < argc) {
      const char *p = argv[++i];
      if (strcmp(p, "bf16") && strcmp(p, "fp32")) {
        fprintf(stderr, "gpu_bench: --operands %s: want bf16 or fp32\n", p);
        return 2;
      }
      bf_ops = !strcmp(p, "bf16");
    } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strncmp(argv[i], "gemm:", 5)) {
      char label[32];
      long long m, n, k;
      int ta, tb;
      if (sscanf(argv[i] + 5, "%31[^:]:%lld:%lld:%lld:%d:%d", label, &m, &n, &k, &ta, &tb) != 6 || m < 1 || n < 1 || k < 1) {
        fprintf(stderr, "gpu_bench: bad case '%s' (want gemm:LABEL:M:N:K:TA:TB)\n", argv[i]);
        return 2;
      }
      nc_status st = bench_gemm(label, m, n, k, ta, tb, sel, bf16, bf_ops, reps);
      if (st) fprintf(stderr, "gpu_bench: %s: %s\n", argv[i], nc_status_msg(st)), nc_status_free(st), rc = 1;
    } else if (!strncmp(argv[i], "attn:", 5)) {
      long long b, t, h, d;
      if (sscanf(argv[i] + 5, "%lld:%lld:%lld:%lld", &b, &t, &h, &d) != 4 || b < 1 || t < 1 || h < 1 || d < 1) {
        fprintf(stderr, "gpu_bench: bad case '%s' (want attn:B:T:H:D)\n", argv[i]);
        return 2;
      }
      nc_status st = bench_attn(b, t, h, d, sel, bf16, reps);
      if (st) fprintf(stderr, "gpu_bench: %s: %s\n", argv[i], nc_status_msg(st)), nc_status_free(st), rc = 1;
    } else {
      fprintf(stderr, "gpu_bench: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  return rc;
}
