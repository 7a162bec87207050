// Shared harness of the CPU GEMM benchmarks (bench/gemm_bench.c,
// bench/gemm_bf16_bench.c): a monotonic clock, a minimal spin-then-sleep
// pool that runs one nc_gemm_fn on N threads, the shape record and medians.
// Bench only: runtime/threadpool is the product's pool. Include once per
// program (it defines static functions and one static array).
#ifndef NC_BENCH_GEMM_HARNESS_H
#define NC_BENCH_GEMM_HARNESS_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/gemm.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- a minimal spinning pool (bench only; runtime/threadpool is the real one)
typedef struct {
  pthread_t th[8];
  int n;
  atomic_int gen, done, quit;
  nc_gemm_fn fn;
  const nc_gemm_args *args;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} pool;

typedef struct {
  pool *p;
  int t;
} pool_arg;
static pool_arg pool_args[8];

// Workers spin briefly for the next run, then sleep: a spinning worker would
// steal the core OpenBLAS's own threads need while it is being timed.
static void *pool_main(void *v) {
  pool_arg *a = v;
  pool *p = a->p;
  int seen = 0;
  for (;;) {
    int g = seen;
    for (long spin = 0; spin < 200000 && (g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen; spin++) {
    }
    if (g == seen) {
      pthread_mutex_lock(&p->mu);
      while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->cv, &p->mu);
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load(&p->quit)) return NULL;
    seen = g;
    p->fn(p->args, a->t, p->n);
    atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
  }
}

static void pool_start(pool *p, int n) {
  if (n < 1 || n > 8) {
    fprintf(stderr, "gemm bench: %d threads (1 to 8)\n", n);
    exit(2);
  }
  memset(p, 0, sizeof *p);
  p->n = n;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  for (int t = 1; t < n; t++) {
    pool_args[t] = (pool_arg){p, t};
    pthread_create(&p->th[t], NULL, pool_main, &pool_args[t]);
  }
}
static void pool_run(pool *p, nc_gemm_fn fn, const nc_gemm_args *args) {
  p->fn = fn;
  p->args = args;
  atomic_store(&p->done, 0);
  pthread_mutex_lock(&p->mu);
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  fn(args, 0, p->n);
  while (atomic_load_explicit(&p->done, memory_order_acquire) != p->n - 1) {
  }
}
static void pool_stop(pool *p) {
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->quit, 1);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (int t = 1; t < p->n; t++) pthread_join(p->th[t], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
}

typedef struct {
  const char *what;
  int m, k, n;
  bool ta, tb;
} shape;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
