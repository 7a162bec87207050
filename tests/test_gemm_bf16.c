// bf16 GEMM generator (codegen/gemm_bf16.c): the JIT-compiled mixed-precision
// GEMM (fp32 in memory, bf16 products, fp32 accumulation) against
//   - a double reference on the bf16-rounded inputs (nc_f32_to_bf16): the
//     only error left is fp32 accumulation order, so the fp32 GEMM's
//     tolerance applies;
//   - the exact product of the fp32 inputs, within bf16 tolerance (1e-2);
// on random and edge shapes (odd K: a half-empty last pair), every transpose
// combination, alpha/beta, batches, 1..3 threads; plus refusal without
// avx512bf16 and bad knobs. With bf16 memory (bf16_io): a naive double loop
// over the bf16 inputs within one bf16 rounding of the fp32 total, K below, at
// and far above kc (the fp32 shadow nc_gemm_args.cw). Skips (with a message)
// on hosts without avx512bf16.
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <llvm-c/Core.h>

#include "codegen/gemm_bf16.h"
#include "codegen/jit.h"
#include "ir/dtype.h"

#define OK(expr)                                                               \
  do {                                                                         \
    nc_status st_ = (expr);                                                    \
    cr_assert(st_ == NC_OK, "%s: %s", #expr, nc_status_msg(st_));              \
  } while (0)

// A jit for the host, or a skipped test when the host cannot run bf16.
static nc_jit *host_jit_or_skip(void) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  if (!nc_gemm_bf16_supported(nc_jit_cpu(jit))) {
    const char *cpu = nc_jit_cpu(jit)->cpu;
    char msg[128];
    snprintf(msg, sizeof msg, "host CPU '%s' lacks avx512bf16: bf16 GEMM not testable here", cpu);
    nc_jit_free(jit);
    cr_skip_test("%s", msg);
  }
  return jit;
}

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}
static int rng_int(uint64_t *s, int lo, int hi) { return lo + (int)(rng_next(s) % (uint64_t)(hi - lo + 1)); }
static float rng_float(uint64_t *s) { return (float)((double)(rng_next(s) >> 11) / 9007199254740992.0 * 2.0 - 1.0); }
static double bf(float x) { return nc_bf16_to_f32(nc_f32_to_bf16(x)); }

typedef struct {
  nc_gemm_fn fn;
  const nc_gemm_args *args;
  int t, T;
} worker;

static void *worker_run(void *p) {
  worker *w = p;
  w->fn(w->args, w->t, w->T);
  return NULL;
}

static void run_threads(nc_gemm_fn fn, const nc_gemm_args *args, int T) {
  pthread_t th[8];
  worker w[8];
  for (int t = 0; t < T; t++) w[t] = (worker){fn, args, t, T};
  for (int t = 1; t < T; t++) cr_assert_eq(pthread_create(&th[t], NULL, worker_run, &w[t]), 0);
  worker_run(&w[0]);
  for (int t = 1; t < T; t++) pthread_join(th[t], NULL);
}

typedef struct {
  int m, n, k, batch, threads;
  bool ta, tb;
  float alpha, beta;
  int pad;
} shape;

typedef struct {
  double rounded;  // worst error against the reference on bf16-rounded inputs
  double exact;    // worst error against the fp32 inputs' exact product
} errs;

// Runs one GEMM; errors are relative to sum_k |a||b| (+|beta c|) per element.
static errs check_one(nc_gemm_fn fn, const nc_gemm_knobs *kn, shape s, uint64_t *rng) {
  int64_t ar = s.ta ? s.k : s.m, acn = s.ta ? s.m : s.k;
  int64_t br = s.tb ? s.n : s.k, bcn = s.tb ? s.k : s.n;
  int64_t lda = acn + s.pad, ldb = bcn + s.pad, ldc = s.n + s.pad;
  int64_t sa = ar * lda + 3, sb = br * ldb + 5, sc = (int64_t)s.m * ldc + 1;
  size_t na = (size_t)(sa * s.batch), nb = (size_t)(sb * s.batch), ncn = (size_t)(sc * s.batch);
  float *a = malloc(na * sizeof(float) + 4), *b = malloc(nb * sizeof(float) + 4);
  float *c = malloc(ncn * sizeof(float) + 4), *c0 = malloc(ncn * sizeof(float) + 4);
  for (size_t i = 0; i < na; i++) a[i] = rng_float(rng);
  for (size_t i = 0; i < nb; i++) b[i] = rng_float(rng);
  for (size_t i = 0; i < ncn; i++) c0[i] = s.beta == 0.0f ? NAN : rng_float(rng);
  memcpy(c, c0, ncn * sizeof(float));
  size_t wsz = nc_gemm_bf16_workspace_size(kn, s.threads);
  float *work = aligned_alloc(64, (wsz + 63) / 64 * 64);
  nc_gemm_args args = {.a = a, .b = b, .c = c, .m = s.m, .n = s.n, .k = s.k, .lda = lda,
                       .ldb = ldb, .ldc = ldc, .batch = s.batch, .stride_a = sa, .stride_b = sb,
                       .stride_c = sc, .alpha = s.alpha, .beta = s.beta, .work = work};
  run_threads(fn, &args, s.threads);
  errs worst = {0, 0};
  for (int bi = 0; bi < s.batch; bi++)
    for (int i = 0; i < s.m; i++)
      for (int j = 0; j < s.n; j++) {
        double acc = 0, accx = 0, mag = 0;
        for (int kk = 0; kk < s.k; kk++) {
          float x = s.ta ? a[bi * sa + kk * lda + i] : a[bi * sa + i * lda + kk];
          float y = s.tb ? b[bi * sb + j * ldb + kk] : b[bi * sb + kk * ldb + j];
          acc += bf(x) * bf(y);
          accx += (double)x * y;
          mag += fabs((double)x * y);
        }
        double cold = c0[bi * sc + i * ldc + j];
        double cb = s.beta == 0.0f ? 0.0 : s.beta * cold;
        mag = fabs(s.alpha) * mag + fabs(cb) + 1e-30;
        double got = c[bi * sc + i * ldc + j];
        double e1 = fabs(got - (s.alpha * acc + cb)) / mag, e2 = fabs(got - (s.alpha * accx + cb)) / mag;
        if (!(e1 <= 1e30)) e1 = 1e30;  // NaN
        if (!(e2 <= 1e30)) e2 = 1e30;
        if (e1 > worst.rounded) worst.rounded = e1;
        if (e2 > worst.exact) worst.exact = e2;
      }
  for (int bi = 0; bi < s.batch; bi++)  // padding must be untouched
    for (int i = 0; i < s.m; i++)
      for (int j = s.n; j < ldc; j++) {
        float x = c[bi * sc + i * ldc + j], y = c0[bi * sc + i * ldc + j];
        if (memcmp(&x, &y, sizeof x)) worst.rounded = worst.exact = 1e30;
      }
  free(a);
  free(b);
  free(c);
  free(c0);
  free(work);
  return worst;
}

static double tol_for(int k) { return 1e-5 * (k > 100 ? k / 100.0 : 1.0); }
#define TOL_EXACT 1e-2  // bf16 keeps 8 significant bits: ~2^-8 per product at worst

static void assert_errs(errs e, const char *tag, shape s) {
  cr_assert(e.rounded < tol_for(s.k) && e.exact < TOL_EXACT,
            "%s: M=%d N=%d K=%d ta=%d tb=%d batch=%d threads=%d alpha=%g beta=%g pad=%d: "
            "rel err %g (bf16-rounded ref), %g (fp32 ref)",
            tag, s.m, s.n, s.k, s.ta, s.tb, s.batch, s.threads, s.alpha, s.beta, s.pad, e.rounded,
            e.exact);
}

static void compile4(nc_jit *jit, const nc_gemm_knobs *kn, const char *tag, nc_gemm_fn fns[4]) {
  for (int v = 0; v < 4; v++) {
    char name[64];
    snprintf(name, sizeof name, "gemm_bf16_%s_%d", tag, v);
    nc_gemm_spec spec = {.name = name, .ta = v & 1, .tb = (v >> 1) & 1, .knobs = *kn};
    OK(nc_gemm_bf16_compile(jit, &spec, &fns[v]));
  }
}

static const int edge_dims[] = {1, 2, 3, 5, 7, 8, 13, 15, 16, 17, 31, 32, 33, 47, 48, 49, 61, 64, 65, 67, 70};
#define NEDGE ((int)(sizeof edge_dims / sizeof *edge_dims))

static void random_suite(nc_jit *jit, const nc_gemm_knobs *kn, const char *tag, int count, uint64_t seed) {
  nc_gemm_fn fns[4];
  compile4(jit, kn, tag, fns);
  uint64_t rng = seed;
  for (int it = 0; it < count; it++) {
    shape s;
    s.ta = it & 1;
    s.tb = (it >> 1) & 1;
    bool edge = it % 3 == 0;
    s.m = edge ? edge_dims[rng_int(&rng, 0, NEDGE - 1)] : rng_int(&rng, 1, 70);
    s.n = edge ? edge_dims[rng_int(&rng, 0, NEDGE - 1)] : rng_int(&rng, 1, 70);
    s.k = edge ? edge_dims[rng_int(&rng, 0, NEDGE - 1)] : rng_int(&rng, 1, 100);
    s.batch = rng_int(&rng, 1, 3);
    s.threads = rng_int(&rng, 1, 3);
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    s.beta = betas[it % 3];
    s.alpha = it % 5 == 4 ? -0.75f : 1.0f;
    s.pad = it % 4 == 3 ? rng_int(&rng, 1, 5) : 0;
    assert_errs(check_one(fns[s.ta + 2 * s.tb], kn, s, &rng), tag, s);
  }
}

// Small cache blocks so that small shapes cross every block boundary.
static nc_gemm_knobs tiny_blocks(nc_gemm_knobs k, int kc) {
  k.kc = kc;
  k.mc = 2 * k.mr;
  k.nc = 2 * k.nr;
  return k;
}

Test(gemm_bf16, refuses_without_avx512bf16) {
  nc_jit *jit;
  nc_jit_options o = {.avx2_only = true};
  nc_status st = nc_jit_create(&o, &jit);
  if (st) {  // no AVX2 host: nothing to refuse on
    nc_status_free(st);
    cr_skip_test("host lacks AVX2");
  }
  cr_assert(!nc_gemm_bf16_supported(nc_jit_cpu(jit)));
  nc_gemm_spec spec = {.name = "bf16_avx2", .knobs = nc_gemm_bf16_knobs_default(nc_jit_cpu(jit))};
  nc_gemm_fn fn;
  st = nc_gemm_bf16_compile(jit, &spec, &fn);
  cr_assert(st && nc_status_code(st) == NC_E_UNSUPPORTED && strstr(nc_status_msg(st), "avx512bf16"),
            "%s", nc_status_msg(st));
  cr_assert_null(fn);
  nc_status_free(st);
  nc_jit_free(jit);
  nc_host_cpu none = {0};
  cr_assert(!nc_gemm_bf16_supported(&none));
  cr_assert(!nc_gemm_bf16_supported(NULL));
}

Test(gemm_bf16, bad_knobs_are_errors) {
  nc_gemm_knobs k = nc_gemm_bf16_knobs_default(NULL);
  OK(nc_gemm_bf16_knobs_check(&k));
  k.kc = 15;
  nc_status st = nc_gemm_bf16_knobs_check(&k);
  cr_assert(st && strstr(nc_status_msg(st), "odd"), "%s", nc_status_msg(st));
  nc_status_free(st);
  k = nc_gemm_bf16_knobs_default(NULL);
  k.vw = 8;
  k.nr = 16;
  st = nc_gemm_bf16_knobs_check(&k);
  cr_assert(st && strstr(nc_status_msg(st), "vw"), "%s", nc_status_msg(st));
  nc_status_free(st);
  k = nc_gemm_bf16_knobs_default(NULL);
  k.mr = 40;
  st = nc_gemm_bf16_knobs_check(&k);
  cr_assert(st && strstr(nc_status_msg(st), "accumulators"), "%s", nc_status_msg(st));
  nc_status_free(st);
  // bf16 panels are half the bytes of fp32 ones.
  nc_gemm_knobs f = nc_gemm_bf16_knobs_default(NULL);
  cr_assert_eq(nc_gemm_bf16_workspace_size(&f, 2), nc_gemm_workspace_size(&f, 2) / 2);
  nc_jit *jit = host_jit_or_skip();
  nc_gemm_spec spec = {.name = "bad_bf16", .knobs = k};
  nc_gemm_fn fn;
  st = nc_gemm_bf16_compile(jit, &spec, &fn);
  cr_assert(st && strstr(nc_status_msg(st), "'bad_bf16'"), "%s", nc_status_msg(st));
  cr_assert_null(fn);
  nc_status_free(st);
  nc_jit_free(jit);
}

Test(gemm_bf16, random_shapes_default_knobs) {
  nc_jit *jit = host_jit_or_skip();
  nc_gemm_knobs kn = nc_gemm_bf16_knobs_default(nc_jit_cpu(jit));
  random_suite(jit, &kn, "def", 80, 0x9E3779B97F4A7C15ull);
  nc_jit_free(jit);
}

Test(gemm_bf16, random_shapes_tiny_blocks) {
  nc_jit *jit = host_jit_or_skip();
  // kc 14: no 32-k vector chunk, every pair through the tails; kc 64: two
  // chunks per block, then a ragged last block.
  nc_gemm_knobs kn = tiny_blocks(nc_gemm_bf16_knobs_default(nc_jit_cpu(jit)), 14);
  kn.order = 0;
  kn.ku = 3;
  kn.prefetch_b = 4;
  random_suite(jit, &kn, "tiny14", 60, 12345);
  kn = tiny_blocks(nc_gemm_bf16_knobs_default(nc_jit_cpu(jit)), 64);
  random_suite(jit, &kn, "tiny64", 60, 54321);
  nc_jit_free(jit);
}

Test(gemm_bf16, random_shapes_other_blockings) {
  nc_jit *jit = host_jit_or_skip();
  static const int blocks[][2] = {{12, 2}, {5, 4}, {1, 1}};
  for (int i = 0; i < 3; i++) {
    nc_gemm_knobs kn = nc_gemm_bf16_knobs_default(nc_jit_cpu(jit));
    kn.mr = blocks[i][0];
    kn.nr = blocks[i][1] * 16;
    kn = tiny_blocks(kn, 32 + 2 * i);
    kn.order = i & 1;
    char tag[16];
    snprintf(tag, sizeof tag, "blk%d", i);
    random_suite(jit, &kn, tag, 24, 777 + (uint64_t)i);
  }
  nc_jit_free(jit);
}

Test(gemm_bf16, large_shapes) {
  nc_jit *jit = host_jit_or_skip();
  nc_gemm_knobs kn = nc_gemm_bf16_knobs_default(nc_jit_cpu(jit));
  nc_gemm_fn fns[4];
  compile4(jit, &kn, "big", fns);
  uint64_t rng = 99;
  // Cross the default kc (768) / mc / nc blocks with ragged (and odd) edges.
  static const shape shapes[] = {
      {.m = 301, .n = 257, .k = 901, .batch = 1, .threads = 2, .alpha = 1, .beta = 0},
      {.m = 67, .n = 1601, .k = 300, .batch = 1, .threads = 3, .tb = true, .alpha = 1, .beta = 1},
      {.m = 260, .n = 97, .k = 777, .batch = 1, .threads = 2, .ta = true, .alpha = 1, .beta = 0.5f},
      {.m = 130, .n = 200, .k = 64, .batch = 5, .threads = 2, .ta = true, .tb = true, .alpha = 2, .beta = 0},
      {.m = 97, .n = 131, .k = 1539, .batch = 1, .threads = 1, .tb = true, .alpha = 1, .beta = 0},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
    assert_errs(check_one(fns[shapes[i].ta + 2 * shapes[i].tb], &kn, shapes[i], &rng), "big", shapes[i]);
  nc_jit_free(jit);
}

// Exact values: ties round to even (as nc_f32_to_bf16), an odd K leaves the
// last pair's high half zero, NaN in A reaches C.
Test(gemm_bf16, rounding_ties_and_nan) {
  nc_jit *jit = host_jit_or_skip();
  nc_gemm_knobs kn = nc_gemm_bf16_knobs_default(nc_jit_cpu(jit));
  nc_gemm_fn fns[4];
  compile4(jit, &kn, "exact", fns);
  // bf16 keeps 7 fraction bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7
  // (-> 1, even), 1 + 3*2^-8 a tie between 1 + 2^-7 and 1 + 2^-6 (-> 1 + 2^-6).
  const float t1 = 1.0f + 0x1p-8f, t3 = 1.0f + 3 * 0x1p-8f;
  for (int v = 0; v < 4; v++) {
    enum { M = 2, N = 3, K = 3 };
    float a[M * K] = {t1, t3, 1.0f, t3, t1, 2.0f};  // op(A) rows; stored transposed when ta
    float at[K * M], b[K * N], bt[N * K];
    for (int i = 0; i < M; i++)
      for (int k = 0; k < K; k++) at[k * M + i] = a[i * K + k];
    for (int k = 0; k < K; k++)
      for (int j = 0; j < N; j++) b[k * N + j] = bt[j * K + k] = (float)(j + 1);
    bool ta = v & 1, tb = v & 2;
    float c[M * N];
    float *work = aligned_alloc(64, (nc_gemm_bf16_workspace_size(&kn, 1) + 63) / 64 * 64);
    nc_gemm_args args = {.a = ta ? at : a, .b = tb ? bt : b, .c = c, .m = M, .n = N, .k = K,
                         .lda = ta ? M : K, .ldb = tb ? K : N, .ldc = N, .batch = 1,
                         .alpha = 1, .beta = 0, .work = work};
    fns[v](&args, 0, 1);
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        double ref = 0;
        for (int k = 0; k < K; k++) ref += bf(a[i * K + k]) * (j + 1);
        cr_assert_float_eq(c[i * N + j], ref, 0, "v=%d c[%d][%d]=%.9g want %.9g", v, i, j, c[i * N + j], ref);
      }
    // row 0: (1 + (1 + 2^-6) + 1) * (j+1); truncation would give 1 + 2^-7
    cr_assert_float_eq(c[0], 3.0f + 0x1p-6f, 0, "v=%d c[0]=%.9g", v, c[0]);
    a[1] = at[M] = NAN;
    fns[v](&args, 0, 1);
    cr_assert(isnan(c[0]) && isnan(c[N - 1]) && !isnan(c[N]), "v=%d NaN did not stay in row 0", v);
    free(work);
  }
  nc_jit_free(jit);
}

Test(gemm_bf16, k_zero_scales_c_by_beta) {
  nc_jit *jit = host_jit_or_skip();
  nc_gemm_knobs kn = nc_gemm_bf16_knobs_default(nc_jit_cpu(jit));
  nc_gemm_spec spec = {.name = "gemm_bf16_k0", .knobs = kn};
  nc_gemm_fn fn;
  OK(nc_gemm_bf16_compile(jit, &spec, &fn));
  float c[3 * 5], a[1], b[1];
  for (int i = 0; i < 15; i++) c[i] = (float)i;
  float *work = aligned_alloc(64, (nc_gemm_bf16_workspace_size(&kn, 1) + 63) / 64 * 64);
  nc_gemm_args args = {.a = a, .b = b, .c = c, .m = 3, .n = 5, .k = 0, .lda = 1, .ldb = 5,
                       .ldc = 5, .batch = 1, .alpha = 1, .beta = 0.5f, .work = work};
  fn(&args, 0, 1);
  for (int i = 0; i < 15; i++) cr_assert_float_eq(c[i], 0.5f * (float)i, 0, "c[%d]=%g", i, c[i]);
  free(work);
  nc_jit_free(jit);
}

Test(gemm_bf16, aot_object_emission) {
  nc_jit *jit;
  nc_jit_options o = {.no_jit = true};
  OK(nc_jit_create(&o, &jit));
  if (!nc_gemm_bf16_supported(nc_jit_cpu(jit))) {
    nc_jit_free(jit);
    cr_skip_test("host lacks avx512bf16");
  }
  nc_gemm_spec spec = {.name = "nc_gemm_bf16_aot_tb", .tb = true,
                       .knobs = nc_gemm_bf16_knobs_default(nc_jit_cpu(jit))};
  LLVMModuleRef m;
  OK(nc_jit_module_new(jit, "aot", &m));
  OK(nc_gemm_bf16_emit(m, nc_jit_cpu(jit), &spec));
  void *data;
  size_t size;
  OK(nc_jit_emit_object(jit, m, NULL, &data, &size));
  cr_assert(!memcmp(data, "\177ELF", 4), "not an ELF object");
  cr_assert_not_null(memmem(data, size, spec.name, strlen(spec.name)), "symbol name missing");
  free(data);
  nc_jit_free(jit);
}

// ---- bf16 memory (spec.bf16_io): A, B and C hold bf16 -------------------------
// Against a naive double loop over the bf16 inputs, within one bf16 rounding of
// the fp32 total: |ref| 2^-8 (half an ulp of bf16 is at most 2^-8 |x|) plus
// the fp32 accumulation (1e-5 per sum |a b|). K > kc needs the fp32 shadow
// nc_gemm_args.cw: without it (the code before it) each K block's partial sum
// was rounded to bf16, which this tolerance rejects
// (bf16_io_tolerance_rejects_per_block_rounding shows it on the same data).
typedef struct {
  uint16_t *a, *b, *c, *c0;
  int64_t lda, ldb, ldc, sa, sb, sc;
  float *cw;
  size_t ncw;
} io_data;

static io_data io_make(shape s, uint64_t *rng) {
  io_data d;
  int64_t ar = s.ta ? s.k : s.m, acn = s.ta ? s.m : s.k;
  int64_t br = s.tb ? s.n : s.k, bcn = s.tb ? s.k : s.n;
  d.lda = acn + s.pad, d.ldb = bcn + s.pad, d.ldc = s.n + s.pad;
  d.sa = ar * d.lda + 3, d.sb = br * d.ldb + 5, d.sc = (int64_t)s.m * d.ldc + 1;
  size_t na = (size_t)(d.sa * s.batch), nb = (size_t)(d.sb * s.batch), ncn = (size_t)(d.sc * s.batch);
  d.a = malloc(na * 2 + 2), d.b = malloc(nb * 2 + 2), d.c = malloc(ncn * 2 + 2), d.c0 = malloc(ncn * 2 + 2);
  cr_assert(d.a && d.b && d.c && d.c0);
  for (size_t i = 0; i < na; i++) d.a[i] = nc_f32_to_bf16(rng_float(rng));
  for (size_t i = 0; i < nb; i++) d.b[i] = nc_f32_to_bf16(rng_float(rng));
  // beta 0: C holds NaN bit patterns (quiet, negative, signalling), never read
  static const uint16_t nans[] = {0x7fc1, 0xffff, 0x7f81};
  for (size_t i = 0; i < ncn; i++) d.c0[i] = s.beta == 0.0f ? nans[i % 3] : nc_f32_to_bf16(4 * rng_float(rng));
  memcpy(d.c, d.c0, ncn * 2);
  // the shadow as the gemm.h contract sizes it, filled with NaN: its contents on entry must not matter
  d.ncw = (size_t)((s.batch - 1) * d.sc + (int64_t)(s.m - 1) * d.ldc + s.n);
  d.cw = malloc(d.ncw * sizeof(float) + 4);
  cr_assert(d.cw);
  memset(d.cw, 0xff, d.ncw * sizeof(float));
  return d;
}

static void io_free(io_data *d) { free(d->a), free(d->b), free(d->c), free(d->c0), free(d->cw); }

// The reference for C[bi][i][j], its tolerance, and (kc_sim > 0) what the code
// without the shadow computed: C read, updated and rounded to bf16 per block
// of kc_sim (the fp32 sum within a block taken exact).
static double io_ref(const io_data *d, shape s, int bi, int i, int j, int kc_sim, double *tol, double *sim) {
  double acc = 0, mag = 0, part = 0;
  double cold = s.beta == 0.0f ? 0.0 : s.beta * (double)nc_bf16_to_f32(d->c0[bi * d->sc + i * d->ldc + j]);
  float cur = 0;
  for (int kk = 0; kk < s.k; kk++) {
    double x = nc_bf16_to_f32(s.ta ? d->a[bi * d->sa + kk * d->lda + i] : d->a[bi * d->sa + i * d->lda + kk]);
    double y = nc_bf16_to_f32(s.tb ? d->b[bi * d->sb + j * d->ldb + kk] : d->b[bi * d->sb + kk * d->ldb + j]);
    acc += x * y, part += x * y, mag += fabs(x * y);
    if (kc_sim > 0 && ((kk + 1) % kc_sim == 0 || kk + 1 == s.k)) {
      double base = kk < kc_sim ? cold : cur;
      cur = nc_bf16_to_f32(nc_f32_to_bf16((float)(s.alpha * part + base)));
      part = 0;
    }
  }
  double ref = s.alpha * acc + cold;
  *tol = fabs(ref) * 0x1p-8 + 1e-5 * (fabs(s.alpha) * mag + fabs(cold)) + 1e-30;
  if (sim) *sim = cur;
  return ref;
}

// Runs one bf16_io GEMM (with the shadow when use_cw); returns the worst
// error / tolerance (1e30: NaN, or a padding element of C touched).
static double io_check(nc_gemm_fn fn, const nc_gemm_knobs *kn, shape s, bool use_cw, uint64_t *rng) {
  io_data d = io_make(s, rng);
  size_t wsz = nc_gemm_bf16_workspace_size(kn, s.threads);
  float *work = aligned_alloc(64, (wsz + 63) / 64 * 64);
  nc_gemm_args args = {.a = (const float *)d.a, .b = (const float *)d.b, .c = (float *)d.c, .m = s.m, .n = s.n,
                       .k = s.k, .lda = d.lda, .ldb = d.ldb, .ldc = d.ldc, .batch = s.batch, .stride_a = d.sa,
                       .stride_b = d.sb, .stride_c = d.sc, .alpha = s.alpha, .beta = s.beta, .work = work,
                       .cw = use_cw ? d.cw : NULL};
  run_threads(fn, &args, s.threads);
  double worst = 0;
  for (int bi = 0; bi < s.batch; bi++)
    for (int i = 0; i < s.m; i++) {
      for (int j = 0; j < s.n; j++) {
        double tol, ref = io_ref(&d, s, bi, i, j, 0, &tol, NULL);
        double got = nc_bf16_to_f32(d.c[bi * d.sc + i * d.ldc + j]);
        double e = fabs(got - ref) / tol;
        if (!(e <= 1e30)) e = 1e30;
        if (e > worst) worst = e;
      }
      for (int64_t j = s.n; j < d.ldc; j++)  // padding untouched
        if (d.c[bi * d.sc + i * d.ldc + j] != d.c0[bi * d.sc + i * d.ldc + j]) worst = 1e30;
    }
  free(work);
  io_free(&d);
  return worst;
}

static void compile4_io(nc_jit *jit, const nc_gemm_knobs *kn, const char *tag, nc_gemm_fn fns[4]) {
  for (int v = 0; v < 4; v++) {
    char name[64];
    snprintf(name, sizeof name, "gemm_bf16io_%s_%d", tag, v);
    nc_gemm_spec spec = {.name = name, .ta = v & 1, .tb = (v >> 1) & 1, .knobs = *kn, .bf16_io = true};
    OK(nc_gemm_bf16_compile(jit, &spec, &fns[v]));
  }
}

static void io_assert(nc_gemm_fn fns[4], const nc_gemm_knobs *kn, shape s, bool use_cw, const char *tag, uint64_t *rng) {
  double e = io_check(fns[s.ta + 2 * s.tb], kn, s, use_cw, rng);
  cr_assert(e <= 1.0,
            "%s (kc %d): M=%d N=%d K=%d ta=%d tb=%d batch=%d threads=%d alpha=%g beta=%g pad=%d cw=%d: "
            "error %.3g x (one bf16 rounding of the fp32 total)",
            tag, kn->kc, s.m, s.n, s.k, s.ta, s.tb, s.batch, s.threads, s.alpha, s.beta, s.pad, use_cw, e);
}

// Random shapes with K from below kc to several kc blocks (odd K included):
// every ta/tb, beta 0 / 1 / 0.5, alpha != 1, batches, 1..3 threads, padding.
static void io_random_suite(nc_jit *jit, const nc_gemm_knobs *kn, const char *tag, int count, int kmax, uint64_t seed) {
  nc_gemm_fn fns[4];
  compile4_io(jit, kn, tag, fns);
  uint64_t rng = seed;
  for (int it = 0; it < count; it++) {
    shape s;
    s.ta = it & 1;
    s.tb = (it >> 1) & 1;
    s.m = it % 3 == 0 ? edge_dims[rng_int(&rng, 0, NEDGE - 1)] : rng_int(&rng, 1, 70);
    s.n = it % 3 == 1 ? edge_dims[rng_int(&rng, 0, NEDGE - 1)] : rng_int(&rng, 1, 70);
    int kcs[] = {rng_int(&rng, 1, kn->kc - 1), kn->kc, kn->kc + 1, rng_int(&rng, kn->kc + 2, kmax)};
    s.k = kcs[(it / 4) % 4];
    s.batch = rng_int(&rng, 1, 3);
    s.threads = rng_int(&rng, 1, 3);
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    s.beta = betas[it % 3];
    s.alpha = it % 5 == 4 ? -0.75f : 1.0f;
    s.pad = it % 4 == 3 ? rng_int(&rng, 1, 5) : 0;
    io_assert(fns, kn, s, true, tag, &rng);
    if (s.k <= kn->kc) io_assert(fns, kn, s, false, tag, &rng);  // no shadow needed: cw NULL
  }
}

Test(gemm_bf16, bf16_io_default_knobs_across_kc) {
  nc_jit *jit = host_jit_or_skip();
  nc_gemm_knobs kn = nc_gemm_bf16_knobs_default(nc_jit_cpu(jit));
  nc_gemm_fn fns[4];
  compile4_io(jit, &kn, "def", fns);
  uint64_t rng = 4242;
  // K below, at and far above the default kc (768): several blocks, odd K, a ragged last block
  const int kc = kn.kc;
  const shape shapes[] = {
      {.m = 50, .n = 200, .k = 1600, .batch = 1, .threads = 2, .alpha = 1, .beta = 0},  // test_tune's failing shape
      {.m = 70, .n = 130, .k = 900, .batch = 1, .threads = 3, .tb = true, .alpha = 1, .beta = 0},  // the tuner's
      {.m = 33, .n = 47, .k = kc - 1, .batch = 2, .threads = 2, .alpha = 1, .beta = 1},
      {.m = 33, .n = 47, .k = kc, .batch = 1, .threads = 1, .ta = true, .alpha = 1, .beta = 0.5f},
      {.m = 61, .n = 65, .k = kc + 1, .batch = 1, .threads = 2, .tb = true, .alpha = -0.75f, .beta = 1},
      {.m = 40, .n = 96, .k = 3 * kc + 17, .batch = 2, .threads = 3, .ta = true, .tb = true, .alpha = 1, .beta = 0},
      {.m = 17, .n = 300, .k = 8 * kc + 5, .batch = 1, .threads = 2, .alpha = 0.5f, .beta = 0.5f, .pad = 3},
      {.m = 64, .n = 64, .k = 4097, .batch = 3, .threads = 2, .ta = true, .alpha = 1, .beta = 1},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    io_assert(fns, &kn, shapes[i], true, "def", &rng);
    if (shapes[i].k <= kc) io_assert(fns, &kn, shapes[i], false, "def", &rng);
  }
  // Without the shadow (cw NULL: the code before it) the first two shapes,
  // found by the tuner, break the tolerance: the test tells the two apart.
  for (size_t i = 0; i < 2; i++) {
    double e = io_check(fns[shapes[i].ta + 2 * shapes[i].tb], &kn, shapes[i], false, &rng);
    cr_assert_gt(e, 1.0, "shape %zu without cw: only %.3g x tolerance", i, e);
  }
  io_random_suite(jit, &kn, "defr", 16, 2600, 0xB16B00B5ull);
  nc_jit_free(jit);
}

Test(gemm_bf16, bf16_io_tiny_blocks_many_k_blocks) {
  nc_jit *jit = host_jit_or_skip();
  // kc 14 / 32 / 64 with small mc, nc: small shapes cross many K blocks (up
  // to ~20), M and N blocks, with ragged edges
  static const int kcs[] = {14, 32, 64};
  for (int i = 0; i < 3; i++) {
    nc_gemm_knobs kn = tiny_blocks(nc_gemm_bf16_knobs_default(nc_jit_cpu(jit)), kcs[i]);
    kn.order = i & 1;
    char tag[16];
    snprintf(tag, sizeof tag, "tiny%d", kcs[i]);
    io_random_suite(jit, &kn, tag, 32, 20 * kcs[i] + 3, 1000 + (uint64_t)i);
  }
  nc_jit_free(jit);
}

// The tolerance above is tight enough to catch the bug it guards against:
// rounding C to bf16 after every kc block (what the code without the shadow
// did) breaks it on the same data for K > kc, shape after shape, while one
// rounding passes. Pure C (no JIT): runs on any host.
Test(gemm_bf16, bf16_io_tolerance_rejects_per_block_rounding) {
  uint64_t rng = 777;
  const shape shapes[] = {
      {.m = 50, .n = 200, .k = 1600, .batch = 1, .alpha = 1, .beta = 0},
      {.m = 70, .n = 130, .k = 900, .batch = 1, .tb = true, .alpha = 1, .beta = 0},
      {.m = 40, .n = 96, .k = 3 * 768 + 17, .batch = 1, .ta = true, .alpha = 1, .beta = 1},
      {.m = 30, .n = 40, .k = 300, .batch = 1, .alpha = -0.75f, .beta = 0.5f},  // kc 14: ~21 blocks
  };
  const int kc_of[] = {768, 768, 768, 14};
  for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
    shape s = shapes[t];
    io_data d = io_make(s, &rng);
    double worst_sim = 0, worst_one = 0;
    for (int i = 0; i < s.m; i++)
      for (int j = 0; j < s.n; j++) {
        double tol, sim, ref = io_ref(&d, s, 0, i, j, kc_of[t], &tol, &sim);
        // one rounding of the (here exact) total
        double one = nc_bf16_to_f32(nc_f32_to_bf16((float)ref));
        if (fabs(one - ref) / tol > worst_one) worst_one = fabs(one - ref) / tol;
        if (fabs(sim - ref) / tol > worst_sim) worst_sim = fabs(sim - ref) / tol;
      }
    io_free(&d);
    cr_assert_leq(worst_one, 1.0, "shape %zu: one rounding gives %.3g x tolerance", t, worst_one);
    cr_assert_gt(worst_sim, 1.5, "shape %zu (K %d, kc %d): per-block rounding gives only %.3g x tolerance", t, s.k,
                 kc_of[t], worst_sim);
  }
}
