// GEMM generator + LLVM JIT/AOT wrapper: the JIT-compiled GEMM against a naive
// double-accumulating reference on random and edge shapes, every transpose
// combination, alpha/beta, batches, 1..3 threads, AVX-512 and AVX2 knobs.
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <llvm-c/Core.h>

#include "codegen/gemm.h"
#include "codegen/jit.h"

#define OK(expr)                                                               \
  do {                                                                         \
    nc_status st_ = (expr);                                                    \
    cr_assert(st_ == NC_OK, "%s: %s", #expr, nc_status_msg(st_));              \
  } while (0)

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}
static int rng_int(uint64_t *s, int lo, int hi) { return lo + (int)(rng_next(s) % (uint64_t)(hi - lo + 1)); }
static float rng_float(uint64_t *s) { return (float)((double)(rng_next(s) >> 11) / 9007199254740992.0 * 2.0 - 1.0); }

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

// Every thread calls the same function with its index, as a pool would.
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
  int pad;  // extra elements per leading dimension
} shape;

// Runs one GEMM and compares with the reference; returns the worst relative
// error, where an element's error is scaled by sum_k |a||b| (+|beta c|).
static double check_one(nc_gemm_fn fn, const nc_gemm_knobs *kn, shape s, uint64_t *rng) {
  int64_t ar = s.ta ? s.k : s.m, acn = s.ta ? s.m : s.k;  // stored A is ar x acn
  int64_t br = s.tb ? s.n : s.k, bcn = s.tb ? s.k : s.n;
  int64_t lda = acn + s.pad, ldb = bcn + s.pad, ldc = s.n + s.pad;
  int64_t sa = ar * lda + 3, sb = br * ldb + 5, sc = (int64_t)s.m * ldc + 1;
  size_t na = (size_t)(sa * s.batch), nb = (size_t)(sb * s.batch), ncn = (size_t)(sc * s.batch);
  float *a = malloc(na * sizeof(float) + 4), *b = malloc(nb * sizeof(float) + 4);
  float *c = malloc(ncn * sizeof(float) + 4), *c0 = malloc(ncn * sizeof(float) + 4);
  for (size_t i = 0; i < na; i++) a[i] = rng_float(rng);
  for (size_t i = 0; i < nb; i++) b[i] = rng_float(rng);
  for (size_t i = 0; i < ncn; i++) c0[i] = s.beta == 0.0f ? NAN : rng_float(rng);  // beta 0: never read
  memcpy(c, c0, ncn * sizeof(float));
  size_t wsz = nc_gemm_workspace_size(kn, s.threads);
  float *work = aligned_alloc(64, (wsz + 63) / 64 * 64);
  nc_gemm_args args = {.a = a, .b = b, .c = c, .m = s.m, .n = s.n, .k = s.k, .lda = lda,
                       .ldb = ldb, .ldc = ldc, .batch = s.batch, .stride_a = sa, .stride_b = sb,
                       .stride_c = sc, .alpha = s.alpha, .beta = s.beta, .work = work};
  run_threads(fn, &args, s.threads);
  double worst = 0;
  for (int bi = 0; bi < s.batch; bi++)
    for (int i = 0; i < s.m; i++)
      for (int j = 0; j < s.n; j++) {
        double acc = 0, mag = 0;
        for (int kk = 0; kk < s.k; kk++) {
          double x = s.ta ? a[bi * sa + kk * lda + i] : a[bi * sa + i * lda + kk];
          double y = s.tb ? b[bi * sb + j * ldb + kk] : b[bi * sb + kk * ldb + j];
          acc += x * y;
          mag += fabs(x * y);
        }
        double cold = c0[bi * sc + i * ldc + j];
        double ref = s.alpha * acc + (s.beta == 0.0f ? 0.0 : s.beta * cold);
        mag = fabs(s.alpha) * mag + (s.beta == 0.0f ? 0.0 : fabs(s.beta * cold)) + 1e-30;
        double got = c[bi * sc + i * ldc + j];
        double e = fabs(got - ref) / mag;
        if (!(e <= 1e30)) e = 1e30;  // NaN
        if (e > worst) worst = e;
      }
  // Padding between rows and between batch items must be untouched.
  for (int bi = 0; bi < s.batch; bi++)
    for (int i = 0; i < s.m; i++)
      for (int j = s.n; j < ldc; j++) {
        float x = c[bi * sc + i * ldc + j], y = c0[bi * sc + i * ldc + j];
        if (memcmp(&x, &y, sizeof x)) worst = 1e30;
      }
  free(a);
  free(b);
  free(c);
  free(c0);
  free(work);
  return worst;
}

static double tol_for(int k) { return 1e-5 * (k > 100 ? k / 100.0 : 1.0); }

// The 4 transpose variants of one knob set in one module.
static void compile4(nc_jit *jit, const nc_gemm_knobs *kn, const char *tag, nc_gemm_fn fns[4]) {
  for (int v = 0; v < 4; v++) {
    char name[64];
    snprintf(name, sizeof name, "gemm_%s_%d", tag, v);
    nc_gemm_spec spec = {.name = name, .ta = v & 1, .tb = (v >> 1) & 1, .knobs = *kn};
    OK(nc_gemm_compile(jit, &spec, &fns[v]));
  }
}

static const int edge_dims[] = {1, 2, 3, 5, 7, 8, 13, 15, 16, 17, 31, 32, 33, 47, 48, 49, 61, 64, 67, 70};
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
    s.k = edge ? edge_dims[rng_int(&rng, 0, NEDGE - 1)] : rng_int(&rng, 1, 70);
    s.batch = rng_int(&rng, 1, 3);
    s.threads = rng_int(&rng, 1, 3);
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    s.beta = betas[it % 3];
    s.alpha = it % 5 == 4 ? -0.75f : 1.0f;
    s.pad = it % 4 == 3 ? rng_int(&rng, 1, 5) : 0;
    double e = check_one(fns[s.ta + 2 * s.tb], kn, s, &rng);
    cr_assert(e < tol_for(s.k),
              "%s: M=%d N=%d K=%d ta=%d tb=%d batch=%d threads=%d alpha=%g beta=%g pad=%d: rel err %g",
              tag, s.m, s.n, s.k, s.ta, s.tb, s.batch, s.threads, s.alpha, s.beta, s.pad, e);
  }
}

// Small cache blocks so that small shapes cross every block boundary
// (several jc/pc/ic blocks, kc not a multiple of the vector width).
static nc_gemm_knobs tiny_blocks(nc_gemm_knobs k, int kc) {
  k.kc = kc;
  k.mc = 2 * k.mr;
  k.nc = 2 * k.nr;
  return k;
}

Test(gemm, jit_host_and_avx2_restriction) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  const nc_host_cpu *cpu = nc_jit_cpu(jit);
  cr_assert(cpu->cpu[0] && cpu->triple[0]);
  bool had512 = cpu->avx512f;
  nc_jit_free(jit);
  nc_jit_options o = {.avx2_only = true};
  nc_status st = nc_jit_create(&o, &jit);
  if (st) {  // a host without AVX2 cannot test the fallback
    cr_assert_eq(nc_status_code(st), NC_E_UNSUPPORTED);
    nc_status_free(st);
    return;
  }
  cr_assert(!nc_jit_cpu(jit)->avx512f);
  cr_assert(!strstr(nc_jit_cpu(jit)->features, "+avx512"), "%s", nc_jit_cpu(jit)->features);
  if (had512) cr_assert(strstr(nc_jit_cpu(jit)->features, "-avx512f"));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  cr_assert_eq(kn.vw, 8);
  nc_jit_free(jit);
}

Test(gemm, bad_knobs_are_errors) {
  nc_gemm_knobs k = nc_gemm_knobs_default(NULL);
  k.nr = k.vw + 1;
  nc_status st = nc_gemm_knobs_check(&k);
  cr_assert(st && strstr(nc_status_msg(st), "nr"), "%s", nc_status_msg(st));
  nc_status_free(st);
  k = nc_gemm_knobs_default(NULL);
  k.mr = 40;
  st = nc_gemm_knobs_check(&k);
  cr_assert(st && strstr(nc_status_msg(st), "accumulators"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  nc_gemm_spec spec = {.name = "bad", .knobs = k};
  nc_gemm_fn fn;
  st = nc_gemm_compile(jit, &spec, &fn);
  cr_assert(st && strstr(nc_status_msg(st), "'bad'"), "%s", nc_status_msg(st));
  cr_assert_null(fn);
  nc_status_free(st);
  st = nc_jit_lookup(jit, "no_such_symbol", (void **)&fn);
  cr_assert(st && strstr(nc_status_msg(st), "no_such_symbol"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_jit_free(jit);
}

Test(gemm, random_shapes_default_knobs) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  random_suite(jit, &kn, "def", 80, 0x9E3779B97F4A7C15ull);
  nc_jit_free(jit);
}

Test(gemm, random_shapes_tiny_blocks) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  nc_gemm_knobs kn = tiny_blocks(nc_gemm_knobs_default(nc_jit_cpu(jit)), 13);
  kn.order = 0;
  kn.ku = 3;
  kn.prefetch_b = 4;
  random_suite(jit, &kn, "tiny", 80, 12345);
  nc_jit_free(jit);
}

Test(gemm, random_shapes_other_blockings) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  const nc_host_cpu *cpu = nc_jit_cpu(jit);
  int vw = nc_gemm_knobs_default(cpu).vw;
  // (mr, nr in vectors): tall, wide and odd register blocks
  static const int blocks[][2] = {{14, 2}, {5, 4}, {1, 1}};
  for (int i = 0; i < 3; i++) {
    nc_gemm_knobs kn = nc_gemm_knobs_default(cpu);
    kn.mr = blocks[i][0];
    kn.nr = blocks[i][1] * vw;
    kn = tiny_blocks(kn, 16 + i);
    kn.order = i & 1;
    char tag[16];
    snprintf(tag, sizeof tag, "blk%d", i);
    random_suite(jit, &kn, tag, 24, 777 + (uint64_t)i);
  }
  nc_jit_free(jit);
}

Test(gemm, avx2_fallback) {
  nc_jit *jit;
  nc_jit_options o = {.avx2_only = true};
  nc_status st = nc_jit_create(&o, &jit);
  if (st) {
    cr_assert_eq(nc_status_code(st), NC_E_UNSUPPORTED);
    nc_status_free(st);
    return;
  }
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  cr_assert_eq(kn.vw, 8);
  random_suite(jit, &kn, "avx2", 40, 4242);
  kn = tiny_blocks(kn, 9);
  random_suite(jit, &kn, "avx2tiny", 40, 4343);
  nc_jit_free(jit);
}

Test(gemm, large_shapes) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  nc_gemm_fn fns[4];
  compile4(jit, &kn, "big", fns);
  uint64_t rng = 99;
  // Cross the default kc/mc/nc blocks with ragged edges.
  static const shape shapes[] = {
      {.m = 301, .n = 257, .k = 520, .batch = 1, .threads = 2, .alpha = 1, .beta = 0},
      {.m = 67, .n = 1601, .k = 300, .batch = 1, .threads = 3, .tb = true, .alpha = 1, .beta = 1},
      {.m = 260, .n = 97, .k = 777, .batch = 1, .threads = 2, .ta = true, .alpha = 1, .beta = 0.5f},
      {.m = 130, .n = 200, .k = 64, .batch = 5, .threads = 2, .ta = true, .tb = true, .alpha = 2, .beta = 0},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    shape s = shapes[i];
    double e = check_one(fns[s.ta + 2 * s.tb], &kn, s, &rng);
    cr_assert(e < tol_for(s.k), "M=%d N=%d K=%d ta=%d tb=%d: rel err %g", s.m, s.n, s.k, s.ta, s.tb, e);
  }
  nc_jit_free(jit);
}

Test(gemm, k_zero_scales_c_by_beta) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  nc_gemm_spec spec = {.name = "gemm_k0", .knobs = kn};
  nc_gemm_fn fn;
  OK(nc_gemm_compile(jit, &spec, &fn));
  float c[3 * 5], a[1], b[1];
  for (int i = 0; i < 15; i++) c[i] = (float)i;
  float *work = aligned_alloc(64, (nc_gemm_workspace_size(&kn, 1) + 63) / 64 * 64);
  nc_gemm_args args = {.a = a, .b = b, .c = c, .m = 3, .n = 5, .k = 0, .lda = 1, .ldb = 5,
                       .ldc = 5, .batch = 1, .alpha = 1, .beta = 0.5f, .work = work};
  fn(&args, 0, 1);
  for (int i = 0; i < 15; i++) cr_assert_float_eq(c[i], 0.5f * (float)i, 0, "c[%d]=%g", i, c[i]);
  free(work);
  nc_jit_free(jit);
}

Test(gemm, aot_object_emission) {
  nc_jit *jit;
  nc_jit_options o = {.no_jit = true};
  OK(nc_jit_create(&o, &jit));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  nc_gemm_spec spec = {.name = "nc_gemm_aot_tb", .tb = true, .knobs = kn};
  LLVMModuleRef m;
  OK(nc_jit_module_new(jit, "aot", &m));
  OK(nc_gemm_emit(m, &spec));
  void *data;
  size_t size;
  OK(nc_jit_emit_object(jit, m, NULL, &data, &size));
  cr_assert_gt(size, 256);
  cr_assert(!memcmp(data, "\177ELF", 4), "not an ELF object");
  cr_assert_not_null(memmem(data, size, spec.name, strlen(spec.name)), "symbol name missing");
  free(data);
  // Same pipeline, to a file.
  char path[] = "/tmp/nc_gemm_aot_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);
  OK(nc_jit_module_new(jit, "aot2", &m));
  OK(nc_gemm_emit(m, &spec));
  OK(nc_jit_emit_object(jit, m, path, NULL, NULL));
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f);
  fseek(f, 0, SEEK_END);
  long fsize = ftell(f);
  fclose(f);
  unlink(path);
  cr_assert_eq((size_t)fsize, size, "file %ld bytes, memory %zu", fsize, size);
  // AOT-only jit cannot JIT.
  OK(nc_jit_module_new(jit, "aot3", &m));
  nc_status st = nc_jit_add_module(jit, m);
  cr_assert(st && strstr(nc_status_msg(st), "no_jit"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_jit_free(jit);
}

Test(gemm, verify_failure_is_an_error) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  LLVMModuleRef m;
  OK(nc_jit_module_new(jit, "broken", &m));
  // A function whose entry block has no terminator does not verify.
  LLVMContextRef ctx = nc_jit_context(jit);
  LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(ctx), NULL, 0, 0);
  LLVMValueRef fn = LLVMAddFunction(m, "broken_fn", fty);
  LLVMAppendBasicBlockInContext(ctx, fn, "entry");
  nc_status st = nc_jit_add_module(jit, m);
  cr_assert(st && strstr(nc_status_msg(st), "broken"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_jit_free(jit);
}

// The symmetric product (args.sym: lower-triangle tiles computed, the rest
// mirrored): C = X X^T (ta 0, tb 1, B = A) and C = A A with A symmetric
// (ta = tb = 0), against the double reference, on edge sizes, several K
// blocks, batches and 1..3 threads; the result must be exactly symmetric.
static void sym_suite(nc_jit *jit, const nc_gemm_knobs *kn, const char *tag, int count, uint64_t seed) {
  nc_gemm_fn fn[2];
  for (int v = 0; v < 2; v++) {
    char name[64];
    snprintf(name, sizeof name, "gemm_sym_%s_%d", tag, v);
    nc_gemm_spec spec = {.name = name, .ta = false, .tb = v == 0, .knobs = *kn};
    OK(nc_gemm_compile(jit, &spec, &fn[v]));
  }
  uint64_t rng = seed;
  for (int it = 0; it < count; it++) {
    int v = it & 1;  // 0: X X^T, 1: A A
    int n = it % 3 == 0 ? edge_dims[rng_int(&rng, 0, NEDGE - 1)] : rng_int(&rng, 1, 90);
    int k = v ? n : rng_int(&rng, 1, 90);
    int batch = rng_int(&rng, 1, 3), threads = rng_int(&rng, 1, 3);
    float beta = it % 4 == 3 ? 0.5f : 0.0f;  // beta != 0 with a symmetric old C
    int64_t sa = (int64_t)n * k, sc = (int64_t)n * n;
    float *a = malloc(sizeof(float) * (size_t)(sa * batch)), *c = malloc(sizeof(float) * (size_t)(sc * batch));
    float *c0 = malloc(sizeof(float) * (size_t)(sc * batch));
    for (int64_t i = 0; i < sa * batch; i++) a[i] = rng_float(&rng);
    for (int bi = 0; bi < batch; bi++)
      for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
          if (v) a[bi * sa + (int64_t)j * n + i] = a[bi * sa + (int64_t)i * n + j];  // A symmetric
          float x = beta != 0.0f ? rng_float(&rng) : NAN;
          c0[bi * sc + (int64_t)i * n + j] = c0[bi * sc + (int64_t)j * n + i] = x;
        }
    memcpy(c, c0, sizeof(float) * (size_t)(sc * batch));
    size_t wsz = nc_gemm_workspace_size(kn, threads);
    float *work = aligned_alloc(64, (wsz + 63) / 64 * 64);
    nc_gemm_args args = {.a = a, .b = a, .c = c, .m = n, .n = n, .k = k, .lda = k, .ldb = v ? n : k, .ldc = n,
                         .batch = batch, .stride_a = sa, .stride_b = sa, .stride_c = sc, .alpha = 1.0f, .beta = beta,
                         .work = work, .sym = 1};
    run_threads(fn[v], &args, threads);
    double worst = 0;
    bool exact = true;
    for (int bi = 0; bi < batch; bi++)
      for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
          double acc = 0, mag = 1e-30;
          for (int q = 0; q < k; q++) {
            double x = a[bi * sa + (int64_t)i * k + q];
            double y = v ? a[bi * sa + (int64_t)q * n + j] : a[bi * sa + (int64_t)j * k + q];
            acc += x * y;
            mag += fabs(x * y);
          }
          double cold = c0[bi * sc + (int64_t)i * n + j];
          if (beta != 0.0f) acc += beta * cold, mag += fabs(beta * cold);
          double e = fabs(c[bi * sc + (int64_t)i * n + j] - acc) / mag;
          if (!(e <= 1e30)) e = 1e30;
          if (e > worst) worst = e;
          float u = c[bi * sc + (int64_t)i * n + j], w = c[bi * sc + (int64_t)j * n + i];
          exact &= !memcmp(&u, &w, sizeof u);
        }
    cr_assert(worst < tol_for(k), "%s %s: n=%d k=%d batch=%d threads=%d beta=%g: rel err %g", tag, v ? "A A" : "X X^T", n,
              k, batch, threads, beta, worst);
    cr_assert(exact, "%s %s: n=%d k=%d threads=%d: result not exactly symmetric", tag, v ? "A A" : "X X^T", n, k, threads);
    free(a);
    free(c);
    free(c0);
    free(work);
  }
}

Test(gemm, symmetric_output_default_knobs) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  sym_suite(jit, &kn, "def", 40, 77);
  nc_jit_free(jit);
}

Test(gemm, symmetric_output_tiny_blocks) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  nc_gemm_knobs kn = tiny_blocks(nc_gemm_knobs_default(nc_jit_cpu(jit)), 13);
  sym_suite(jit, &kn, "tiny", 40, 78);
  kn.order = 1;
  sym_suite(jit, &kn, "tiny1", 20, 79);
  nc_jit_free(jit);
}

// The skinny path (M <= 16, !ta: decode's small-M products, no packing) on odd
// and decode-sized N and K, batches, 1..3 threads, every transpose (ta takes
// the packed path), M = 17 just past the threshold; AVX-512 and AVX2 knobs.
static void skinny_suite(nc_jit *jit, const char *tag, uint64_t seed) {
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  nc_gemm_fn fns[4];
  compile4(jit, &kn, tag, fns);
  uint64_t rng = seed;
  static const int ns[] = {1, 3, 4, 5, 31, 33, 67, 130, 1601};
  static const int ks[] = {0, 1, 7, 15, 16, 17, 33, 520, 777};
  for (int it = 0; it < 60; it++) {
    shape s = {0};
    s.m = it % 10 == 9 ? 17 : rng_int(&rng, 1, 16);
    s.n = ns[rng_int(&rng, 0, 8)];
    s.k = ks[rng_int(&rng, 0, 8)];
    s.ta = it % 7 == 6;
    s.tb = it % 2 == 0;
    s.batch = rng_int(&rng, 1, 4);
    s.threads = rng_int(&rng, 1, 3);
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    s.beta = betas[it % 3];
    s.alpha = it % 5 == 4 ? -0.75f : 1.0f;
    s.pad = it % 4 == 3 ? rng_int(&rng, 1, 5) : 0;
    double e = check_one(fns[s.ta + 2 * s.tb], &kn, s, &rng);
    cr_assert(e < tol_for(s.k),
              "%s: M=%d N=%d K=%d ta=%d tb=%d batch=%d threads=%d alpha=%g beta=%g pad=%d: rel err %g", tag,
              s.m, s.n, s.k, s.ta, s.tb, s.batch, s.threads, s.alpha, s.beta, s.pad, e);
  }
}

Test(gemm, skinny_small_m) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  skinny_suite(jit, "skinny", 31337);
  nc_jit_free(jit);
  nc_jit_options o = {.avx2_only = true};
  nc_status st = nc_jit_create(&o, &jit);
  if (st) {
    nc_status_free(st);
    return;
  }
  skinny_suite(jit, "skinny2", 31338);
  nc_jit_free(jit);
}

// Every row of an M-row product (M = 1..mmax, 1..3 threads) equals the same
// row computed alone, bit for bit. a is (mmax, k), b is (n, k) (tb).
static void expect_rows_independent(nc_gemm_fn fn, const float *a, const float *b, int n, int k, int mmax, float *work,
                                    int vw) {
  float *c1 = malloc((size_t)n * sizeof *c1), *cm = malloc((size_t)mmax * n * sizeof *cm);
  cr_assert(c1 && cm);
  for (int m = 1; m <= mmax; m++) {
    nc_gemm_args args = {.a = a, .b = b, .c = cm, .m = m, .n = n, .k = k, .lda = k, .ldb = k, .ldc = n,
                         .batch = 1, .alpha = 1, .beta = 0, .work = work};
    run_threads(fn, &args, 1 + m % 3);
    for (int r = 0; r < m; r++) {
      nc_gemm_args one = args;
      one.a = a + (size_t)r * k;
      one.c = c1;
      one.m = 1;
      run_threads(fn, &one, 1);
      cr_assert(!memcmp(c1, cm + (size_t)r * n, (size_t)n * sizeof *c1), "vw %d M=%d: row %d differs from the same row alone",
                vw, m, r);
    }
  }
  free(c1);
  free(cm);
}

// The skinny path sums every row in the same order whatever M (1..16) and the
// thread count: decode logits of a row do not depend on the batch beside it.
Test(gemm, skinny_rows_do_not_depend_on_m) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
  nc_gemm_spec spec = {.name = "gemm_rowind", .tb = true, .knobs = kn};
  nc_gemm_fn fn;
  OK(nc_gemm_compile(jit, &spec, &fn));
  enum { N = 37, K = 203, MMAX = 16 };
  static float a[MMAX * K], b[N * K];
  uint64_t rng = 5;
  for (int i = 0; i < MMAX * K; i++) a[i] = rng_float(&rng);
  for (int i = 0; i < N * K; i++) b[i] = rng_float(&rng);
  float *work = aligned_alloc(64, (nc_gemm_workspace_size(&kn, 3) + 63) / 64 * 64);
  expect_rows_independent(fn, a, b, N, K, MMAX, work, kn.vw);
  free(work);
  nc_jit_free(jit);
}

// The skinny path's register blocks (tb: 4 rows x 3 columns with AVX2's
// vw 8, 2 x 4 with AVX-512's vw 16; !tb: 32 columns) on every row count
// 1..16 (full row groups plus each remainder), odd N and K (column and k
// tails), the relu2 and addend epilogues, 1..3 threads, against a naive loop.
// Both knob sets run on any x86-64 host: LLVM splits 16-wide vectors for AVX2.
static nc_gemm_knobs knobs_vw(int vw) {
  nc_host_cpu cpu;
  memset(&cpu, 0, sizeof cpu);
  cpu.avx2 = cpu.fma = true;
  cpu.avx512f = vw == 16;
  return nc_gemm_knobs_default(&cpu);
}

// epi 0: plain (alpha, beta), 1: relu2 into D, 2: relu2 over C, 3: addend E.
static void skinny_epi_case(nc_gemm_fn fn, int epi, bool tb, int m, int n, int k, int threads, uint64_t *rng) {
  int64_t lda = k + 1, ldb = (tb ? k : n) + 2, ldc = n + 3;
  size_t nb = (size_t)(tb ? n : k) * (size_t)ldb;
  float *a = malloc((size_t)(m * lda) * sizeof(float)), *b = malloc(nb * sizeof(float));
  float *c = malloc((size_t)(m * ldc) * sizeof(float)), *c0 = malloc((size_t)(m * ldc) * sizeof(float));
  float *d = malloc((size_t)(m * ldc) * sizeof(float)), *e = malloc((size_t)(m * ldc) * sizeof(float));
  for (int64_t i = 0; i < m * lda; i++) a[i] = rng_float(rng);
  for (size_t i = 0; i < nb; i++) b[i] = rng_float(rng);
  for (int64_t i = 0; i < m * ldc; i++) c0[i] = rng_float(rng), e[i] = rng_float(rng), d[i] = 7.0f;
  memcpy(c, c0, (size_t)(m * ldc) * sizeof(float));
  float alpha = epi == 3 ? 0.5f : 1.0f, beta = epi == 3 ? -2.0f : epi == 0 ? 0.25f : 0.0f;
  nc_gemm_args args = {.a = a, .b = b, .c = c, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,
                       .batch = 1, .alpha = alpha, .beta = beta, .work = NULL,
                       .d = epi == 1 ? d : NULL, .e = epi == 3 ? e : NULL, .relu2 = epi == 1 || epi == 2};
  run_threads(fn, &args, threads);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < ldc; j++) {
      int64_t o = i * ldc + j;
      if (j >= n) {  // padding untouched
        cr_assert(!memcmp(&c[o], &c0[o], sizeof(float)), "epi %d M=%d N=%d K=%d: padding of C written", epi, m, n, k);
        continue;
      }
      double acc = 0, mag = 1e-30;
      for (int kk = 0; kk < k; kk++) {
        double x = a[i * lda + kk], y = tb ? b[j * ldb + kk] : b[kk * ldb + j];
        acc += x * y;
        mag += fabs(x * y);
      }
      double old = epi == 3 ? e[o] : c0[o];
      double p = alpha * acc + (beta != 0.0f ? beta * old : 0.0);
      mag = fabs(alpha) * mag + fabs(beta * old);
      double got = c[o], want = p;
      if (epi == 2) want = p > 0 ? p * p : 0, mag *= 2 * fabs(p) + mag;  // relu(p)^2 over C
      cr_assert(fabs(got - want) <= 1e-5 * (k > 100 ? k / 100.0 : 1.0) * mag,
                "epi %d tb %d M=%d N=%d K=%d threads %d: C[%d,%d] = %g, want %g", epi, tb, m, n, k, threads, i, j, got,
                want);
      if (epi == 1) {
        double r = p > 0 ? p * p : 0;
        cr_assert(fabs(d[o] - r) <= 1e-5 * (k > 100 ? k / 100.0 : 1.0) * mag * (2 * fabs(p) + mag),
                  "epi 1 M=%d N=%d K=%d: D[%d,%d] = %g, want %g", m, n, k, i, j, d[o], r);
      }
    }
  free(a), free(b), free(c), free(c0), free(d), free(e);
}

Test(gemm, skinny_blocks_and_epilogues) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  static const int ns[] = {1, 2, 3, 4, 7, 37, 100, 131};
  static const int ks[] = {1, 7, 8, 9, 23, 128, 203};
  uint64_t rng = 77;
  for (int vi = 0; vi < 2; vi++) {
    nc_gemm_knobs kn = knobs_vw(vi ? 16 : 8);
    for (int tb = 0; tb < 2; tb++) {
      char name[64];
      snprintf(name, sizeof name, "gemm_skepi_%d_%d", kn.vw, tb);
      nc_gemm_spec spec = {.name = name, .tb = tb, .knobs = kn};
      nc_gemm_fn fn;  // one function: the epilogue is a switch of the arguments
      OK(nc_gemm_compile(jit, &spec, &fn));
      for (int epi = 0; epi < 4; epi++)
        for (int m = 1; m <= 16; m++) {
          int n = ns[rng_int(&rng, 0, 7)], k = ks[rng_int(&rng, 0, 6)];
          if (m == 1 || m == 3 || m == 16) n = tb ? 131 : 100, k = 203;  // odd N and K at the decode sizes
          skinny_epi_case(fn, epi, tb, m, n, k, 1 + m % 3, &rng);
        }
    }
  }
  nc_jit_free(jit);
}

// Row independence (as skinny_rows_do_not_depend_on_m) for both knob sets:
// with vw 8 rows run in groups of 4 then 3, 2 or 1.
Test(gemm, skinny_rows_do_not_depend_on_m_any_block) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  enum { N = 41, K = 77, MMAX = 16 };
  static float a[MMAX * K], b[N * K];
  uint64_t rng = 9;
  for (int i = 0; i < MMAX * K; i++) a[i] = rng_float(&rng);
  for (int i = 0; i < N * K; i++) b[i] = rng_float(&rng);
  for (int vi = 0; vi < 2; vi++) {
    nc_gemm_knobs kn = knobs_vw(vi ? 16 : 8);
    char name[64];
    snprintf(name, sizeof name, "gemm_rowind_%d", kn.vw);
    nc_gemm_spec spec = {.name = name, .tb = true, .knobs = kn};
    nc_gemm_fn fn;
    OK(nc_gemm_compile(jit, &spec, &fn));
    expect_rows_independent(fn, a, b, N, K, MMAX, NULL, kn.vw);
  }
  nc_jit_free(jit);
}

// The run-time switches of one function (ta, tb fixed): plain with beta, ReLU^2
// into D or over C, the addend E, and sym with an addend, on the packed path
// (several K blocks with tiny knobs: E is read on the first only, ReLU^2 on the
// last) and on the skinny one (M <= 16), batches, 1..3 threads, calls of every
// kind interleaved on the same function, against a double reference.
// epi 0: plain, 1: relu2 into D, 2: relu2 over C, 3: addend, 4: sym + addend
// (C = X X^T or X^T X with a symmetric E: needs ta != tb, M == N).
// dyn: 0 the static split; 1 the dynamic split (nc_gemm_args.sync), threads
// concurrent; 2 the dynamic split with the threads' calls one after the other
// (a late worker: the first call does every unit, the others find none left).
static void switch_case_dyn(nc_gemm_fn fn, const nc_gemm_knobs *kn, bool ta, bool tb, int epi, int m, int n, int k, int batch,
                            int threads, int dyn, uint64_t *rng) {
  if (epi == 4) n = m;
  int64_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2, ldc = n + 3;
  if (epi == 4) ldb = lda;  // B = A
  int64_t sa = (ta ? k : m) * lda, sb = epi == 4 ? sa : (tb ? n : k) * ldb, sc = m * ldc;
  size_t na = (size_t)(sa * batch), nb = (size_t)(sb * batch), ncn = (size_t)(sc * batch);
  float *a = malloc(na * sizeof(float)), *b = epi == 4 ? a : malloc(nb * sizeof(float));
  float *c = malloc(ncn * sizeof(float)), *c0 = malloc(ncn * sizeof(float));
  float *d = malloc(ncn * sizeof(float)), *e = malloc(ncn * sizeof(float));
  for (size_t i = 0; i < na; i++) a[i] = rng_float(rng);
  if (epi != 4)
    for (size_t i = 0; i < nb; i++) b[i] = rng_float(rng);
  for (size_t i = 0; i < ncn; i++) c0[i] = epi >= 1 && epi <= 3 ? NAN : rng_float(rng), e[i] = rng_float(rng), d[i] = 7.0f;
  if (epi == 4)  // E symmetric
    for (int bi = 0; bi < batch; bi++)
      for (int i = 0; i < m; i++)
        for (int j = 0; j < i; j++) e[bi * sc + j * ldc + i] = e[bi * sc + i * ldc + j];
  memcpy(c, c0, ncn * sizeof(float));
  float alpha = epi >= 3 ? 0.5f : 1.0f, beta = epi >= 3 ? -2.0f : epi == 0 ? 0.25f : 0.0f;
  size_t wsz = nc_gemm_workspace_size(kn, threads);
  float *work = aligned_alloc(64, (wsz + 63) / 64 * 64);
  nc_gemm_args args = {.a = a, .b = b, .c = c, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,
                       .batch = batch, .stride_a = sa, .stride_b = sb, .stride_c = sc, .alpha = alpha, .beta = beta,
                       .work = work, .d = epi == 1 ? d : NULL, .e = epi >= 3 ? e : NULL, .relu2 = epi == 1 || epi == 2,
                       .sym = epi == 4};
  int64_t *sync = NULL;
  if (dyn) {
    size_t len = nc_gemm_sync_len(kn, batch, m, n);
    sync = calloc(len, sizeof *sync);
    args.sync = sync;
  }
  if (dyn == 2)
    for (int t = 0; t < threads; t++) fn(&args, t, threads);
  else
    run_threads(fn, &args, threads);
  if (dyn && epi != 4 && m > 16) {  // every unit claimed once and every C block's flag at its last K block
    int64_t nic = (m + kn->mc - 1) / kn->mc, npc = (k + kn->kc - 1) / kn->kc, njc = (n + kn->nc - 1) / kn->nc;
    if (npc < 1) npc = 1;
    cr_assert_eq(sync[0], batch * njc * npc * nic + threads, "dyn: counter %lld", (long long)sync[0]);
    for (int64_t i = 1; i < (int64_t)nc_gemm_sync_len(kn, batch, m, n); i++)
      cr_assert_eq(sync[i], npc, "dyn: flag %lld is %lld", (long long)i, (long long)sync[i]);
  }
  free(sync);
  for (int bi = 0; bi < batch; bi++)
    for (int i = 0; i < m; i++)
      for (int j = 0; j < ldc; j++) {
        int64_t o = bi * sc + i * ldc + j;
        if (j >= n) {  // padding of C (and D) untouched
          cr_assert(!memcmp(&c[o], &c0[o], sizeof(float)) && d[o] == 7.0f, "epi %d: padding written", epi);
          continue;
        }
        double acc = 0, mag = 1e-30;
        for (int q = 0; q < k; q++) {
          double x = ta ? a[bi * sa + q * lda + i] : a[bi * sa + i * lda + q];
          double y = tb ? b[bi * sb + j * ldb + q] : b[bi * sb + q * ldb + j];
          acc += x * y;
          mag += fabs(x * y);
        }
        double old = epi >= 3 ? e[o] : c0[o];
        double p = alpha * acc + (beta != 0.0f ? beta * old : 0.0);
        mag = fabs(alpha) * mag + (beta != 0.0f ? fabs(beta * old) : 0.0);
        double want = epi == 2 ? (p > 0 ? p * p : 0) : p, tol = tol_for(k) * (epi == 2 ? mag * (2 * fabs(p) + mag) : mag);
        cr_assert(fabs(c[o] - want) <= tol, "epi %d ta %d tb %d M=%d N=%d K=%d batch %d threads %d: C[%d][%d,%d] = %g, want %g",
                  epi, ta, tb, m, n, k, batch, threads, bi, i, j, c[o], want);
        if (epi == 1) {
          double r = p > 0 ? p * p : 0;
          cr_assert(fabs(d[o] - r) <= tol * (2 * fabs(p) + mag), "epi 1 M=%d N=%d K=%d: D[%d,%d] = %g, want %g", m, n, k, i, j,
                    d[o], r);
        } else {
          cr_assert(d[o] == 7.0f, "epi %d: D written", epi);
        }
        if (epi == 4) cr_assert(!memcmp(&c[o], &c[bi * sc + j * ldc + i], sizeof(float)), "sym: C not exactly symmetric");
      }
  free(a), free(c), free(c0), free(d), free(e), free(work);
  if (epi != 4) free(b);
}

static void switch_case(nc_gemm_fn fn, const nc_gemm_knobs *kn, bool ta, bool tb, int epi, int m, int n, int k, int batch,
                        int threads, uint64_t *rng) {
  switch_case_dyn(fn, kn, ta, tb, epi, m, n, k, batch, threads, 0, rng);
}

// The dynamic split (nc_gemm_args.sync): every (ta, tb), every run-time switch
// (sym falls back to the static split), tiny blocks so that a call has many
// units and several K blocks per C tile (the flags' waits), 1..3 threads run
// concurrently or one after the other, K = 0, against the double reference.
Test(gemm, dynamic_split) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  uint64_t rng = 777;
  for (int kset = 0; kset < 2; kset++) {
    nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
    if (kset == 1) kn = tiny_blocks(kn, 7);
    for (int v = 0; v < 4; v++) {
      bool ta = v & 2, tb = v & 1;
      char name[64];
      snprintf(name, sizeof name, "gemm_dyn_%d_%d", kset, v);
      nc_gemm_spec spec = {.name = name, .ta = ta, .tb = tb, .knobs = kn};
      nc_gemm_fn fn;
      OK(nc_gemm_compile(jit, &spec, &fn));
      for (int it = 0; it < 16; it++) {
        int epi = it % 5;
        if (epi == 4 && ta == tb) epi = it % 4;
        int m = it % 4 == 0 ? rng_int(&rng, 1, 16) : rng_int(&rng, 17, kset ? 90 : 300);
        int n = rng_int(&rng, 1, kset ? 90 : 600), k = it == 5 ? 0 : rng_int(&rng, 1, kset ? 70 : 600);
        if (k == 0 && epi >= 3) epi = 0;
        switch_case_dyn(fn, &kn, ta, tb, epi, m, n, k, rng_int(&rng, 1, 3), rng_int(&rng, 1, 3), 1 + it % 2, &rng);
      }
    }
  }
  nc_jit_free(jit);
}

Test(gemm, run_time_switches) {
  nc_jit *jit;
  OK(nc_jit_create(NULL, &jit));
  uint64_t rng = 4242;
  for (int kset = 0; kset < 3; kset++) {  // the host's knobs, tiny blocks, the other vector width (AVX-512 / AVX2)
    nc_gemm_knobs kn = nc_gemm_knobs_default(nc_jit_cpu(jit));
    if (kset == 1) kn = tiny_blocks(kn, 13);
    if (kset == 2) kn = knobs_vw(kn.vw == 16 ? 8 : 16);
    for (int v = 0; v < 4; v++) {
      bool ta = v & 2, tb = v & 1;
      char name[64];
      snprintf(name, sizeof name, "gemm_switch_%d_%d", kset, v);
      nc_gemm_spec spec = {.name = name, .ta = ta, .tb = tb, .knobs = kn};
      nc_gemm_fn fn;
      OK(nc_gemm_compile(jit, &spec, &fn));
      for (int it = 0; it < 20; it++) {
        int epi = it % 5;
        if (epi == 4 && ta == tb) epi = it % 4;
        int m = it % 3 == 0 ? rng_int(&rng, 1, 16) : rng_int(&rng, 17, 90);
        int n = rng_int(&rng, 1, 90), k = rng_int(&rng, 1, 70);
        switch_case(fn, &kn, ta, tb, epi, m, n, k, rng_int(&rng, 1, 2), rng_int(&rng, 1, 3), &rng);
      }
    }
  }
  nc_jit_free(jit);
}
