// GEMM benchmark: our JIT-compiled GEMM (codegen/gemm.c) against OpenBLAS
// sgemm at the model's shapes (d4/d8, 2048 tokens), 1 and 2 threads, medians
// over repeats; plus cold compile time of the GEMM module (build + O3 + JIT).
// OpenBLAS is linked into this benchmark only, never into the product.
//
//   gemm_bench [--reps N] [--threads 1,2] [--shape I] [--no-blas]
//              [--knobs mr,nr,kc,mc,nc,ku,order,prefetch] [--avx2]
// Ends with one JSON line.
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/gemm.h"
#include "codegen/jit.h"
#include "bench/gemm_harness.h"

// OpenBLAS extras (declared in its cblas.h too, repeated for other cblas.h).
extern void openblas_set_num_threads(int);
extern char *openblas_get_corename(void);
extern char *openblas_get_config(void);

// ---- shapes -------------------------------------------------------------------
static const shape shapes[] = {
    {"d4 qkvo x W^T", 2048, 256, 256, 0, 1},
    {"d4 qkv fused", 2048, 256, 768, 0, 1},
    {"d4 mlp up", 2048, 256, 1024, 0, 1},
    {"d4 mlp down", 2048, 1024, 256, 0, 1},
    {"d4 lm_head", 2048, 256, 8192, 0, 1},
    {"d4 dX mlp down", 2048, 256, 1024, 0, 0},
    {"d4 dX mlp up", 2048, 1024, 256, 0, 0},
    {"d4 dW attn", 256, 2048, 256, 1, 0},
    {"d4 dW mlp up", 1024, 2048, 256, 1, 0},
    {"d4 dW mlp down", 256, 2048, 1024, 1, 0},
    {"d4 dX lm_head", 2048, 8192, 256, 0, 0},
    {"d4 dW lm_head", 8192, 2048, 256, 1, 0},
    {"d8 attn", 2048, 512, 512, 0, 1},
    {"d8 mlp up", 2048, 512, 2048, 0, 1},
    {"d8 mlp down", 2048, 2048, 512, 0, 1},
    {"d8 lm_head", 2048, 512, 8192, 0, 1},
    {"d8 dX mlp up", 2048, 2048, 512, 0, 0},
    {"d8 dW attn", 512, 2048, 512, 1, 0},
    {"d8 dW mlp up", 2048, 2048, 512, 1, 0},
    {"d8 dW mlp down", 512, 2048, 2048, 1, 0},
    {"d8 dX lm_head", 2048, 8192, 512, 0, 0},
    {"d8 dW lm_head", 8192, 2048, 512, 1, 0},
};
#define NSHAPES ((int)(sizeof shapes / sizeof *shapes))

static void die(nc_status st) {
  if (st) {
    fprintf(stderr, "gemm_bench: %s\n", nc_status_msg(st));
    exit(1);
  }
}

int main(int argc, char **argv) {
  int reps = 5, only = -1, tlist[2] = {1, 2}, nt = 2;
  bool blas = true, avx2 = false, have_knobs = false;
  nc_gemm_knobs kn = {0};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--shape") && i + 1 < argc) only = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      nt = sscanf(argv[++i], "%d,%d", &tlist[0], &tlist[1]);
    } else if (!strcmp(argv[i], "--no-blas")) blas = false;
    else if (!strcmp(argv[i], "--avx2")) avx2 = true;
    else if (!strcmp(argv[i], "--knobs") && i + 1 < argc) {
      have_knobs = sscanf(argv[++i], "%d,%d,%d,%d,%d,%d,%d,%d", &kn.mr, &kn.nr, &kn.kc, &kn.mc,
                          &kn.nc, &kn.ku, &kn.order, &kn.prefetch_b) == 8;
      if (!have_knobs) fprintf(stderr, "--knobs wants mr,nr,kc,mc,nc,ku,order,prefetch\n"), exit(2);
    } else {
      fprintf(stderr, "usage: gemm_bench [--reps N] [--threads 1,2] [--shape I] [--no-blas] "
                      "[--knobs mr,nr,kc,mc,nc,ku,order,prefetch] [--avx2]\n");
      return 2;
    }
  }
  // Cold compile: jit creation + emit + O3 + JIT codegen of the 4 transpose variants.
  double t0 = now();
  nc_jit *jit;
  nc_jit_options jo = {.avx2_only = avx2};
  die(nc_jit_create(&jo, &jit));
  double t_jit = now() - t0;
  nc_gemm_knobs def = nc_gemm_knobs_default(nc_jit_cpu(jit));
  if (have_knobs) {
    kn.vw = def.vw;
  } else {
    kn = def;
  }
  nc_gemm_fn fns[4];
  double t_first = 0;
  for (int v = 0; v < 4; v++) {
    char name[32];
    snprintf(name, sizeof name, "gemm_%s%s", v & 1 ? "t" : "n", v & 2 ? "t" : "n");
    nc_gemm_spec spec = {.name = name, .ta = v & 1, .tb = v & 2, .knobs = kn};
    die(nc_gemm_compile(jit, &spec, &fns[v]));
    if (v == 0) t_first = now() - t0;
  }
  double t_all = now() - t0;
  printf("cpu %s, llvm %s, knobs vw=%d mr=%d nr=%d kc=%d mc=%d nc=%d ku=%d order=%d prefetch=%d\n",
         nc_jit_cpu(jit)->cpu, nc_jit_cpu(jit)->llvm_version, kn.vw, kn.mr, kn.nr, kn.kc, kn.mc,
         kn.nc, kn.ku, kn.order, kn.prefetch_b);
  printf("compile (cold): jit create %.1f ms, first GEMM module %.1f ms, all 4 variants %.1f ms\n",
         1e3 * t_jit, 1e3 * t_first, 1e3 * t_all);
  const char *core = blas ? openblas_get_corename() : "-";
  if (blas) printf("openblas: %s (core %s)\n", openblas_get_config(), core);
  const char *env1 = getenv("OPENBLAS_CORETYPE"), *env2 = getenv("OPENBLAS_L2_SIZE");
  if (env1 || env2)
    printf("WARNING: OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s are set\n", env1 ? env1 : "",
           env2 ? env2 : "");

  size_t maxa = 0, maxb = 0, maxc = 0;
  for (int s = 0; s < NSHAPES; s++) {
    size_t m = (size_t)shapes[s].m, n = (size_t)shapes[s].n, k = (size_t)shapes[s].k;
    if (m * k > maxa) maxa = m * k;
    if (k * n > maxb) maxb = k * n;
    if (m * n > maxc) maxc = m * n;
  }
  float *A = aligned_alloc(64, maxa * 4), *B = aligned_alloc(64, maxb * 4);
  float *C = aligned_alloc(64, maxc * 4), *C2 = aligned_alloc(64, maxc * 4);
  size_t wsz = (nc_gemm_workspace_size(&kn, 8) + 63) / 64 * 64;
  float *work = aligned_alloc(64, wsz);
  uint64_t r = 1;
  for (size_t i = 0; i < maxa; i++) A[i] = (float)((r = r * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;
  for (size_t i = 0; i < maxb; i++) B[i] = (float)((r = r * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;

  // Passes of (all shapes with ours, pause, all shapes with OpenBLAS, pause):
  // the sides never overlap (OpenBLAS's idle threads keep spinning ~0.1 s
  // after a call and would steal our second core), and several passes spread
  // the shared machine's load drifts over both sides. Medians per side.
  enum { PASSES = 3, MAXR = 32 };
  int R = reps < 1 ? 1 : reps > MAXR ? MAXR : reps;
  static double times[2][2][NSHAPES][PASSES * MAXR];
  static double errs[2][NSHAPES];
  for (int pass = 0; pass < PASSES; pass++)
    for (int side = 0; side < (blas ? 2 : 1); side++) {
      for (int ti = 0; ti < nt; ti++) {
        int T = tlist[ti];
        pool p;
        if (side == 0) pool_start(&p, T);
        else openblas_set_num_threads(T);
        for (int s = 0; s < NSHAPES; s++) {
          if (only >= 0 && s != only) continue;
          const shape *sh = &shapes[s];
          int64_t lda = sh->ta ? sh->m : sh->k, ldb = sh->tb ? sh->k : sh->n;
          nc_gemm_args args = {.a = A, .b = B, .c = C, .m = sh->m, .n = sh->n, .k = sh->k,
                               .lda = lda, .ldb = ldb, .ldc = sh->n, .batch = 1,
                               .alpha = 1, .beta = 0, .work = work};
          nc_gemm_fn fn = fns[sh->ta + 2 * sh->tb];
          CBLAS_TRANSPOSE tra = sh->ta ? CblasTrans : CblasNoTrans;
          CBLAS_TRANSPOSE trb = sh->tb ? CblasTrans : CblasNoTrans;
          for (int i = -1; i < R; i++) {  // i == -1: warm-up
            double a0 = now();
            if (side == 0)
              pool_run(&p, fn, &args);
            else
              cblas_sgemm(CblasRowMajor, tra, trb, sh->m, sh->n, sh->k, 1.0f, A, (int)lda, B,
                          (int)ldb, 0.0f, C2, sh->n);
            if (i >= 0) times[side][ti][s][pass * R + i] = now() - a0;
          }
          if (side == 1 && pass == 0) {
            // our result of this shape is in C only if it ran last; recompute it
            pool q;
            pool_start(&q, 1);
            pool_run(&q, fn, &args);
            pool_stop(&q);
            // max |ours - OpenBLAS| relative to max |C|
            double err = 0, big = 1e-30;
            for (size_t e = 0; e < (size_t)sh->m * (size_t)sh->n; e++) {
              double d = fabs((double)C[e] - (double)C2[e]);
              if (d > err) err = d;
              if (fabs((double)C2[e]) > big) big = fabs((double)C2[e]);
            }
            errs[ti][s] = err / big;
          }
        }
        if (side == 0) pool_stop(&p);
        struct timespec pause = {0, 300000000};
        nanosleep(&pause, NULL);
      }
    }

  printf("\n%-16s %5s %5s %5s %2s %2s %3s %9s %9s %6s %8s\n", "shape", "M", "K", "N", "ta", "tb",
         "thr", "ours GF/s", "BLAS GF/s", "ratio", "max err");
  char json[16384];
  int jl = snprintf(json, sizeof json, "{\"bench\":\"gemm\",\"cpu\":\"%s\",\"openblas_core\":\"%s\","
                                       "\"compile_ms\":%.1f,\"knobs\":[%d,%d,%d,%d,%d,%d,%d,%d,%d],\"results\":[",
                    nc_jit_cpu(jit)->cpu, core, 1e3 * t_all, kn.vw, kn.mr, kn.nr, kn.kc, kn.mc,
                    kn.nc, kn.ku, kn.order, kn.prefetch_b);
  double sum_lr[2] = {0}, sum_ours[2] = {0};
  int cnt[2] = {0}, first = 1;
  for (int ti = 0; ti < nt; ti++)
    for (int s = 0; s < NSHAPES; s++) {
      if (only >= 0 && s != only) continue;
      const shape *sh = &shapes[s];
      double flops = 2.0 * sh->m * sh->n * sh->k;
      double ours = flops / median(times[0][ti][s], PASSES * R) / 1e9;
      double theirs = blas ? flops / median(times[1][ti][s], PASSES * R) / 1e9 : 0;
      double ratio = blas ? ours / theirs : 0;
      printf("%-16s %5d %5d %5d %2d %2d %3d %9.1f %9.1f %6.2f %8.1e\n", sh->what, sh->m, sh->k,
             sh->n, sh->ta, sh->tb, tlist[ti], ours, theirs, ratio, errs[ti][s]);
      sum_ours[ti] += ours;
      if (blas) sum_lr[ti] += log(ratio);
      cnt[ti]++;
      if (jl < (int)sizeof json - 300)
        jl += snprintf(json + jl, sizeof json - (size_t)jl,
                       "%s{\"shape\":\"%s\",\"m\":%d,\"k\":%d,\"n\":%d,\"ta\":%d,\"tb\":%d,"
                       "\"threads\":%d,\"ours\":%.1f,\"openblas\":%.1f,\"ratio\":%.3f}",
                       first ? "" : ",", sh->what, sh->m, sh->k, sh->n, sh->ta, sh->tb, tlist[ti],
                       ours, theirs, ratio);
      first = 0;
    }
  for (int ti = 0; ti < nt; ti++)
    if (cnt[ti])
      printf("threads %d: mean ours %.1f GF/s, geomean ratio %.3f over %d shapes\n", tlist[ti],
             sum_ours[ti] / cnt[ti], exp(sum_lr[ti] / cnt[ti]), cnt[ti]);
  printf("%s]}\n", json);
  free(A);
  free(B);
  free(C);
  free(C2);
  free(work);
  nc_jit_free(jit);
  return 0;
}
