// bf16 GEMM benchmark: our JIT-compiled mixed-precision GEMM
// (codegen/gemm_bf16.c: fp32 in memory, bf16 products, fp32 accumulation)
// next to our fp32 GEMM (codegen/gemm.c) at the model's shapes (d4/d8, 2048
// tokens) and Muon's Newton-Schulz squares, 1 and 2 threads, medians.
//
//   gemm_bf16_bench [--reps N] [--threads 1,2] [--shape I]
//                   [--knobs mr,nr,kc,mc,nc,ku,order,prefetch]   (bf16 side)
//                   [--obj PATH]   (also write the bf16 nn+nt GEMMs as an object, for objdump)
// Ends with one JSON line.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/gemm.h"
#include "codegen/gemm_bf16.h"
#include "codegen/jit.h"
#include "bench/gemm_harness.h"

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
    {"d8 attn", 2048, 512, 512, 0, 1},
    {"d8 mlp up", 2048, 512, 2048, 0, 1},
    {"d8 mlp down", 2048, 2048, 512, 0, 1},
    {"d8 lm_head", 2048, 512, 8192, 0, 1},
    {"d8 dX mlp up", 2048, 2048, 512, 0, 0},
    {"d8 dW attn", 512, 2048, 512, 1, 0},
    {"d8 dW mlp up", 2048, 2048, 512, 1, 0},
    {"d8 dW mlp down", 512, 2048, 2048, 1, 0},
    // Muon Newton-Schulz: X·X^T (tb) and the square products (nn)
    {"muon 256 X X^T", 256, 256, 256, 0, 1},
    {"muon 256 A B", 256, 256, 256, 0, 0},
    {"muon 512 X X^T", 512, 512, 512, 0, 1},
    {"muon 512 A B", 512, 512, 512, 0, 0},
    {"muon 1024 X X^T", 1024, 1024, 1024, 0, 1},
    {"muon 1024 A B", 1024, 1024, 1024, 0, 0},
    {"muon 2048 X X^T", 2048, 2048, 2048, 0, 1},
    {"muon 2048 A B", 2048, 2048, 2048, 0, 0},
};
#define NSHAPES ((int)(sizeof shapes / sizeof *shapes))

static void die(nc_status st) {
  if (st) {
    fprintf(stderr, "gemm_bf16_bench: %s\n", nc_status_msg(st));
    exit(1);
  }
}

int main(int argc, char **argv) {
  int reps = 5, only = -1, tlist[2] = {1, 2}, nt = 2;
  bool have_knobs = false;
  const char *obj = NULL;
  nc_gemm_knobs kb = {0};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--shape") && i + 1 < argc) only = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) nt = sscanf(argv[++i], "%d,%d", &tlist[0], &tlist[1]);
    else if (!strcmp(argv[i], "--obj") && i + 1 < argc) obj = argv[++i];
    else if (!strcmp(argv[i], "--knobs") && i + 1 < argc) {
      have_knobs = sscanf(argv[++i], "%d,%d,%d,%d,%d,%d,%d,%d", &kb.mr, &kb.nr, &kb.kc, &kb.mc,
                          &kb.nc, &kb.ku, &kb.order, &kb.prefetch_b) == 8;
      if (!have_knobs) fprintf(stderr, "--knobs wants mr,nr,kc,mc,nc,ku,order,prefetch\n"), exit(2);
      kb.vw = 16;
    } else {
      fprintf(stderr, "usage: gemm_bf16_bench [--reps N] [--threads 1,2] [--shape I] "
                      "[--knobs mr,nr,kc,mc,nc,ku,order,prefetch] [--obj PATH]\n");
      return 2;
    }
  }
  nc_jit *jit;
  die(nc_jit_create(NULL, &jit));
  const nc_host_cpu *cpu = nc_jit_cpu(jit);
  if (!nc_gemm_bf16_supported(cpu)) {
    fprintf(stderr, "gemm_bf16_bench: CPU '%s' lacks avx512bf16\n", cpu->cpu);
    return 1;
  }
  nc_gemm_knobs kf = nc_gemm_knobs_default(cpu);
  if (!have_knobs) kb = nc_gemm_bf16_knobs_default(cpu);
  if (obj) {
    LLVMModuleRef m;
    die(nc_jit_module_new(jit, "bf16_obj", &m));
    nc_gemm_spec s0 = {.name = "gemm_bf16_nn", .knobs = kb};
    nc_gemm_spec s1 = {.name = "gemm_bf16_tn", .ta = true, .knobs = kb};
    nc_gemm_spec s2 = {.name = "gemm_bf16_nt", .tb = true, .knobs = kb};
    die(nc_gemm_bf16_emit(m, cpu, &s0));
    die(nc_gemm_bf16_emit(m, cpu, &s1));
    die(nc_gemm_bf16_emit(m, cpu, &s2));
    die(nc_jit_emit_object(jit, m, obj, NULL, NULL));
  }
  // fns[0]: fp32, fns[1]: bf16; 4 transpose variants each. Cold compile
  // time of the 4 bf16 variants is reported.
  nc_gemm_fn fns[2][4];
  double tc[2] = {0, 0};
  for (int side = 0; side < 2; side++)
    for (int v = 0; v < 4; v++) {
      char name[32];
      snprintf(name, sizeof name, "%s_%s%s", side ? "bf16" : "f32", v & 1 ? "t" : "n", v & 2 ? "t" : "n");
      nc_gemm_spec spec = {.name = name, .ta = v & 1, .tb = v & 2, .knobs = side ? kb : kf};
      double t0 = now();
      die(side ? nc_gemm_bf16_compile(jit, &spec, &fns[side][v]) : nc_gemm_compile(jit, &spec, &fns[side][v]));
      tc[side] += now() - t0;
    }
  printf("cpu %s, llvm %s\n", cpu->cpu, cpu->llvm_version);
  printf("fp32 knobs mr=%d nr=%d kc=%d mc=%d nc=%d ku=%d order=%d prefetch=%d\n", kf.mr, kf.nr,
         kf.kc, kf.mc, kf.nc, kf.ku, kf.order, kf.prefetch_b);
  printf("bf16 knobs mr=%d nr=%d kc=%d mc=%d nc=%d ku=%d order=%d prefetch=%d\n", kb.mr, kb.nr,
         kb.kc, kb.mc, kb.nc, kb.ku, kb.order, kb.prefetch_b);
  printf("compile (4 variants, warm jit): fp32 %.1f ms, bf16 %.1f ms\n", 1e3 * tc[0], 1e3 * tc[1]);

  size_t maxa = 0, maxb = 0, maxc = 0;
  for (int s = 0; s < NSHAPES; s++) {
    size_t m = (size_t)shapes[s].m, n = (size_t)shapes[s].n, k = (size_t)shapes[s].k;
    if (m * k > maxa) maxa = m * k;
    if (k * n > maxb) maxb = k * n;
    if (m * n > maxc) maxc = m * n;
  }
  float *A = aligned_alloc(64, maxa * 4), *B = aligned_alloc(64, maxb * 4);
  float *C[2] = {aligned_alloc(64, maxc * 4), aligned_alloc(64, maxc * 4)};
  size_t w0 = nc_gemm_workspace_size(&kf, 8), w1 = nc_gemm_bf16_workspace_size(&kb, 8);
  size_t wsz = ((w0 > w1 ? w0 : w1) + 63) / 64 * 64;
  float *work = aligned_alloc(64, wsz);
  uint64_t r = 1;
  for (size_t i = 0; i < maxa; i++) A[i] = (float)((r = r * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;
  for (size_t i = 0; i < maxb; i++) B[i] = (float)((r = r * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;

  // Passes of (all shapes fp32, all shapes bf16), several passes so that
  // the shared machine's load drifts hit both sides alike. Medians per side.
  enum { PASSES = 3, MAXR = 32 };
  int R = reps < 1 ? 1 : reps > MAXR ? MAXR : reps;
  static double times[2][2][NSHAPES][PASSES * MAXR];
  static double errs[NSHAPES];
  for (int pass = 0; pass < PASSES; pass++)
    for (int ti = 0; ti < nt; ti++) {
      pool p;
      pool_start(&p, tlist[ti]);
      for (int side = 0; side < 2; side++)
        for (int s = 0; s < NSHAPES; s++) {
          if (only >= 0 && s != only) continue;
          const shape *sh = &shapes[s];
          int64_t lda = sh->ta ? sh->m : sh->k, ldb = sh->tb ? sh->k : sh->n;
          nc_gemm_args args = {.a = A, .b = B, .c = C[side], .m = sh->m, .n = sh->n, .k = sh->k,
                               .lda = lda, .ldb = ldb, .ldc = sh->n, .batch = 1,
                               .alpha = 1, .beta = 0, .work = work};
          nc_gemm_fn fn = fns[side][sh->ta + 2 * sh->tb];
          for (int i = -1; i < R; i++) {  // i == -1: warm-up
            double a0 = now();
            pool_run(&p, fn, &args);
            if (i >= 0) times[side][ti][s][pass * R + i] = now() - a0;
          }
        }
      pool_stop(&p);
    }
  // max |bf16 - fp32| / max |fp32 C| per shape (1 thread, after timing).
  {
    pool p;
    pool_start(&p, 1);
    for (int s = 0; s < NSHAPES; s++) {
      if (only >= 0 && s != only) continue;
      const shape *sh = &shapes[s];
      int64_t lda = sh->ta ? sh->m : sh->k, ldb = sh->tb ? sh->k : sh->n;
      double err = 0, big = 1e-30;
      for (int side = 0; side < 2; side++) {
        nc_gemm_args args = {.a = A, .b = B, .c = C[side], .m = sh->m, .n = sh->n, .k = sh->k,
                             .lda = lda, .ldb = ldb, .ldc = sh->n, .batch = 1,
                             .alpha = 1, .beta = 0, .work = work};
        pool_run(&p, fns[side][sh->ta + 2 * sh->tb], &args);
      }
      for (size_t e = 0; e < (size_t)sh->m * (size_t)sh->n; e++) {
        double d = fabs((double)C[1][e] - (double)C[0][e]);
        if (d > err) err = d;
        if (fabs((double)C[0][e]) > big) big = fabs((double)C[0][e]);
      }
      errs[s] = err / big;
    }
    pool_stop(&p);
  }

  printf("\n%-16s %5s %5s %5s %2s %2s %3s %9s %9s %6s %8s\n", "shape", "M", "K", "N", "ta", "tb",
         "thr", "f32 GF/s", "bf16 GF/s", "speedup", "rel diff");
  char json[16384];
  int jl = snprintf(json, sizeof json,
                    "{\"bench\":\"gemm_bf16\",\"cpu\":\"%s\",\"knobs_bf16\":[%d,%d,%d,%d,%d,%d,%d,%d],\"results\":[",
                    cpu->cpu, kb.mr, kb.nr, kb.kc, kb.mc, kb.nc, kb.ku, kb.order, kb.prefetch_b);
  double sum_lr[2] = {0}, sum_b[2] = {0};
  int cnt[2] = {0}, first = 1;
  for (int ti = 0; ti < nt; ti++)
    for (int s = 0; s < NSHAPES; s++) {
      if (only >= 0 && s != only) continue;
      const shape *sh = &shapes[s];
      double flops = 2.0 * sh->m * sh->n * sh->k;
      double f = flops / median(times[0][ti][s], PASSES * R) / 1e9;
      double b = flops / median(times[1][ti][s], PASSES * R) / 1e9;
      printf("%-16s %5d %5d %5d %2d %2d %3d %9.1f %9.1f %6.2f %8.1e\n", sh->what, sh->m, sh->k,
             sh->n, sh->ta, sh->tb, tlist[ti], f, b, b / f, errs[s]);
      sum_lr[ti] += log(b / f);
      sum_b[ti] += b;
      cnt[ti]++;
      if (jl < (int)sizeof json - 300)
        jl += snprintf(json + jl, sizeof json - (size_t)jl,
                       "%s{\"shape\":\"%s\",\"m\":%d,\"k\":%d,\"n\":%d,\"ta\":%d,\"tb\":%d,"
                       "\"threads\":%d,\"f32\":%.1f,\"bf16\":%.1f,\"speedup\":%.3f}",
                       first ? "" : ",", sh->what, sh->m, sh->k, sh->n, sh->ta, sh->tb, tlist[ti], f, b, b / f);
      first = 0;
    }
  for (int ti = 0; ti < nt; ti++)
    if (cnt[ti])
      printf("threads %d: mean bf16 %.1f GF/s, geomean speedup over fp32 %.3f over %d shapes\n",
             tlist[ti], sum_b[ti] / cnt[ti], exp(sum_lr[ti] / cnt[ti]), cnt[ti]);
  printf("%s]}\n", json);
  free(A);
  free(B);
  free(C[0]);
  free(C[1]);
  free(work);
  nc_jit_free(jit);
  return 0;
}
