#include "runtime/cpu_peak.h"
#include "support/clock.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

// 12 independent accumulators hide the FMA latency (4-5 cycles) on two FMA
// pipes; each iteration is 12 FMAs. The result is kept so nothing is folded.
#define NC_PEAK_CHAINS 12

__attribute__((target("avx2,fma"))) static float nc_peak_avx2(int64_t iters) {
  __m256 acc[NC_PEAK_CHAINS];
  for (int i = 0; i < NC_PEAK_CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; it++)
    for (int i = 0; i < NC_PEAK_CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < NC_PEAK_CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}

__attribute__((target("avx512f"))) static float nc_peak_avx512(int64_t iters) {
  __m512 acc[NC_PEAK_CHAINS];
  for (int i = 0; i < NC_PEAK_CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; it++)
    for (int i = 0; i < NC_PEAK_CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  return _mm512_reduce_add_ps(acc[0]) + _mm512_reduce_add_ps(acc[NC_PEAK_CHAINS - 1]);
}

typedef struct {
  bool avx512;
  int64_t iters;
  atomic_int *go;  // workers spin until it is set, so all start together
  volatile float sink;
} nc_peak_job;

static void *nc_peak_worker(void *arg) {
  nc_peak_job *j = arg;
  while (!atomic_load(j->go)) {
  }
  j->sink = j->avx512 ? nc_peak_avx512(j->iters) : nc_peak_avx2(j->iters);
  return NULL;
}

// One timed round on n threads (the caller is one of them); returns seconds,
// or -1 when a thread could not be started.
static double nc_peak_round(int n, bool avx512, int64_t iters) {
  atomic_int go = 0;
  nc_peak_job *jobs = calloc((size_t)n, sizeof *jobs);
  pthread_t *tids = calloc((size_t)n, sizeof *tids);
  if (!jobs || !tids) {
    free(jobs);
    free(tids);
    return -1;
  }
  for (int i = 0; i < n; i++) jobs[i] = (nc_peak_job){.avx512 = avx512, .iters = iters, .go = &go};
  int started = 1;
  for (int i = 1; i < n; i++, started++)
    if (pthread_create(&tids[i], NULL, nc_peak_worker, &jobs[i]) != 0) break;
  double t0 = nc_clock_now();
  atomic_store(&go, 1);
  nc_peak_worker(&jobs[0]);
  for (int i = 1; i < started; i++) pthread_join(tids[i], NULL);
  double dt = nc_clock_now() - t0;
  free(jobs);
  free(tids);
  return started < n ? -1 : dt;
}

nc_status nc_cpu_peak_measure(int threads, double *gflops) {
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f");
  if (!avx512 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
    return nc_errorf(NC_E_UNSUPPORTED, "cpu peak: this CPU has neither AVX-512 nor AVX2+FMA");
  int n = threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) n = 1;
  int lanes = avx512 ? 16 : 8;
  // Calibrate on one thread to ~60 ms per round, then take the best of 3.
  int64_t iters = 1 << 16;
  double dt = nc_peak_round(1, avx512, iters);
  while (dt > 0 && dt < 0.02) {
    iters *= 4;
    dt = nc_peak_round(1, avx512, iters);
  }
  if (dt > 0) iters = (int64_t)((double)iters * 0.06 / dt) + 1;
  double best = 0;
  for (int r = 0; r < 3; r++) {
    dt = nc_peak_round(n, avx512, iters);
    if (dt <= 0) return nc_errorf(NC_E_INTERNAL, "cpu peak: cannot start %d threads", n);
    double rate = (double)n * (double)iters * NC_PEAK_CHAINS * lanes * 2 / dt / 1e9;
    if (rate > best) best = rate;
  }
  *gflops = best;
  return NC_OK;
}
