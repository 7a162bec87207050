// Dispatch latency of the thread pool (runtime/threadpool.h).
//
// Build and run (no CMake target yet; it needs only the pool and nc_status):
//   cc -O2 -std=c11 -D_GNU_SOURCE -I. bench/pool_bench.c runtime/threadpool.c
//      support/status.c support/buf.c -lpthread -lm -o /tmp/pool_bench
//   /tmp/pool_bench [max_threads] [runs]
//
// For each thread count it times back-to-back runs of empty tasks (one task
// per thread), which is the fixed cost a kernel launch pays on top of its
// work:
//   hot    default spin: workers are still spinning when the next run comes
//          (kernels launched back to back in a training step);
//   cold   spin 0: every run wakes sleeping workers through the futex and the
//          caller sleeps until they finish (the worst case after idling);
//   pfor   nc_pool_parallel_for over 1e6 indices doing nothing, hot;
// and, as a yardstick, the cost of creating and joining n-1 pthreads per run
// (what a pool saves). Prints the median over 7 batches, in microseconds.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "runtime/threadpool.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void noop_task(void *ctx, int t, int thread) {
  // Touch something so the call is not optimized into nothing.
  __atomic_fetch_add((long *)ctx + 8 * thread, 1, __ATOMIC_RELAXED);
}

static void noop_range(void *ctx, int64_t lo, int64_t hi, int thread) { noop_task(ctx, 0, thread); }

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

enum { BATCHES = 7 };

// Median over BATCHES of the mean time per run, in microseconds.
static double time_runs(nc_pool *p, int mode, int runs, long *scratch) {
  double t[BATCHES];
  int n = nc_pool_nthreads(p);
  for (int b = 0; b < BATCHES; b++) {
    double t0 = now_s();
    for (int r = 0; r < runs; r++) {
      nc_status st = mode == 0 ? nc_pool_run(p, n, noop_task, scratch)
                               : nc_pool_parallel_for(p, 0, 1000000, 1024, noop_range, scratch);
      if (st) {
        fprintf(stderr, "pool_bench: %s\n", nc_status_msg(st));
        exit(1);
      }
    }
    t[b] = (now_s() - t0) / runs * 1e6;
  }
  qsort(t, BATCHES, sizeof *t, cmp_double);
  return t[BATCHES / 2];
}

static void *spawn_noop(void *arg) {
  noop_task(arg, 0, 0);
  return NULL;
}

static double time_spawn(int n, int runs, long *scratch) {
  pthread_t th[1024];
  double t0 = now_s();
  for (int r = 0; r < runs; r++) {
    for (int i = 0; i < n - 1; i++) pthread_create(&th[i], NULL, spawn_noop, scratch);
    noop_task(scratch, 0, 0);
    for (int i = 0; i < n - 1; i++) pthread_join(th[i], NULL);
  }
  return (now_s() - t0) / runs * 1e6;
}

int main(int argc, char **argv) {
  int ncpu = nc_pool_default_threads();
  int maxn = argc > 1 ? atoi(argv[1]) : ncpu;
  int runs = argc > 2 ? atoi(argv[2]) : 20000;
  if (maxn < 1) maxn = 1;
  if (maxn > 1024) maxn = 1024;
  long *scratch = calloc((size_t)8 * 1024, sizeof(long));
  printf("pool_bench: %d usable CPUs, %d runs per batch, median of %d batches (us per run)\n", ncpu, runs,
         BATCHES);
  printf("%8s %10s %10s %10s %12s\n", "threads", "hot", "cold", "pfor", "spawn+join");
  for (int n = 1, next; n <= maxn; n = next) {
    nc_pool *hot, *cold;
    nc_pool_opts oh = {n, -1}, oc = {n, 0};
    if (nc_pool_new_ex(&oh, &hot) || nc_pool_new_ex(&oc, &cold)) {
      fprintf(stderr, "pool_bench: cannot start a pool of %d threads\n", n);
      return 1;
    }
    double h = time_runs(hot, 0, runs, scratch);
    double c = time_runs(cold, 0, runs / 4 > 0 ? runs / 4 : 1, scratch);
    double pf = time_runs(hot, 1, runs, scratch);
    double sp = time_spawn(n, runs / 20 > 0 ? runs / 20 : 1, scratch);
    printf("%8d %10.3f %10.3f %10.3f %12.3f\n", n, h, c, pf, sp);
    nc_pool_free(hot);
    nc_pool_free(cold);
    next = n < 4 ? n + 1 : n * 2;
    if (next > maxn && n < maxn) next = maxn;  // always end with maxn itself
  }
  free(scratch);
  return 0;
}
