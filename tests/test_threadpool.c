// The thread pool: every task exactly once, parallel_for coverage, misuse
// (nested and concurrent runs) reported as errors, long back-to-back runs.
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/threadpool.h"

static nc_pool *make_pool(int n, int spin_us) {
  nc_pool *p = NULL;
  nc_pool_opts o = {n, spin_us};
  nc_status st = nc_pool_new_ex(&o, &p);
  cr_assert_null(st, "%s", nc_status_msg(st));
  cr_assert_not_null(p);
  cr_assert_eq(nc_pool_nthreads(p), n);
  return p;
}

// ---- every task exactly once ----------------------------------------------------

typedef struct {
  _Atomic int *count;     // per task
  int nthreads, ntasks;
  _Atomic int bad_thread;
  _Atomic int *in_use;    // per thread: a task is running with this index
  long *scratch;          // per thread, written without atomics
} once_ctx;

static void once_task(void *arg, int t, int thread) {
  once_ctx *c = arg;
  atomic_fetch_add_explicit(&c->count[t], 1, memory_order_relaxed);
  if (thread < 0 || thread >= c->nthreads) {
    atomic_store(&c->bad_thread, 1);
    return;
  }
  // Any task may run on any thread, but a thread index is never used by two
  // running tasks at once, so per-thread scratch needs no atomics.
  if (atomic_exchange(&c->in_use[thread], 1)) atomic_store(&c->bad_thread, 2);
  c->scratch[thread] += t + 1;
  atomic_store(&c->in_use[thread], 0);
}

Test(threadpool, every_task_runs_exactly_once) {
  const int threads[] = {1, 2, 3, 4, 8};
  const int tasks[] = {0, 1, 2, 3, 7, 8, 9, 64, 1000, 65535, 65536, 70001};  // > 65535: several rounds
  const int spins[] = {-1, 0};
  for (size_t si = 0; si < sizeof spins / sizeof *spins; si++)
    for (size_t ti = 0; ti < sizeof threads / sizeof *threads; ti++) {
      nc_pool *p = make_pool(threads[ti], spins[si]);
      for (size_t ki = 0; ki < sizeof tasks / sizeof *tasks; ki++) {
        int n = tasks[ki];
        once_ctx c = {calloc((size_t)n + 1, sizeof(_Atomic int)), threads[ti], n, 0,
                      calloc((size_t)threads[ti], sizeof(_Atomic int)), calloc((size_t)threads[ti], sizeof(long))};
        for (int rep = 0; rep < 3; rep++) {
          cr_assert_null(nc_pool_run(p, n, once_task, &c));
          for (int t = 0; t < n; t++)
            cr_assert_eq(atomic_load(&c.count[t]), rep + 1, "threads %d tasks %d: task %d ran %d times",
                         threads[ti], n, t, atomic_load(&c.count[t]) - rep);
        }
        cr_assert_eq(atomic_load(&c.bad_thread), 0);
        long sum = 0;
        for (int k = 0; k < threads[ti]; k++) sum += c.scratch[k];
        cr_assert_eq(sum, 3L * n * (n + 1) / 2);
        free((void *)c.count);
        free((void *)c.in_use);
        free(c.scratch);
      }
      nc_pool_free(p);
    }
}

// ---- a pool of one thread runs inline ---------------------------------------------

typedef struct {
  pthread_t caller;
  int off_caller, nonzero_thread, ran;
} inline_ctx;

static void inline_task(void *arg, int t, int thread) {
  inline_ctx *c = arg;
  c->ran++;
  if (!pthread_equal(pthread_self(), c->caller)) c->off_caller++;
  if (thread != 0) c->nonzero_thread++;
}

static void inline_range(void *arg, int64_t lo, int64_t hi, int thread) {
  inline_task(arg, (int)lo, thread);
}

Test(threadpool, one_thread_runs_inline) {
  nc_pool *p = make_pool(1, -1);
  inline_ctx c = {pthread_self(), 0, 0, 0};
  cr_assert_null(nc_pool_run(p, 100, inline_task, &c));
  cr_assert_null(nc_pool_parallel_for(p, 0, 1000, 7, inline_range, &c));
  cr_assert_eq(c.ran, 101);
  cr_assert_eq(c.off_caller, 0);
  cr_assert_eq(c.nonzero_thread, 0);
  nc_pool_free(p);
  // Single-task runs are inline on any pool.
  p = make_pool(4, -1);
  c.ran = 0;
  cr_assert_null(nc_pool_run(p, 1, inline_task, &c));
  cr_assert_null(nc_pool_parallel_for(p, 5, 9, 16, inline_range, &c));
  cr_assert_eq(c.ran, 2);
  cr_assert_eq(c.off_caller, 0);
  nc_pool_free(p);
}

// ---- parallel_for ------------------------------------------------------------------

typedef struct {
  int64_t begin, end, grain;
  _Atomic int *hits;     // per index
  _Atomic int chunks;
  _Atomic int bad;       // boundary not on a grain multiple, or empty chunk
} range_ctx;

static void range_body(void *arg, int64_t lo, int64_t hi, int thread) {
  range_ctx *c = arg;
  atomic_fetch_add(&c->chunks, 1);
  if (lo >= hi || lo < c->begin || hi > c->end || (lo - c->begin) % c->grain != 0 ||
      (hi != c->end && (hi - c->begin) % c->grain != 0))
    atomic_store(&c->bad, 1);
  for (int64_t i = lo; i < hi && i >= c->begin && i < c->end; i++) atomic_fetch_add(&c->hits[i - c->begin], 1);
}

Test(threadpool, parallel_for_covers_range_exactly) {
  const int threads[] = {1, 2, 3, 5, 8};
  const int64_t spans[][3] = {  // begin, end, grain
      {0, 0, 1},    {0, 1, 1},    {0, 10, 1},   {0, 10, 3},    {-17, 40, 4}, {3, 1003, 64},
      {0, 1000, 1}, {5, 6, 100},  {0, 63, 64},  {0, 65, 64},   {0, 7, 0},    {-1000, -3, 13},
      {0, 129, 2},  {10, 5, 1}};
  for (size_t ti = 0; ti < sizeof threads / sizeof *threads; ti++) {
    nc_pool *p = make_pool(threads[ti], -1);
    for (size_t si = 0; si < sizeof spans / sizeof *spans; si++) {
      int64_t b = spans[si][0], e = spans[si][1], g = spans[si][2];
      int64_t n = e > b ? e - b : 0;
      range_ctx c = {b, e, g < 1 ? 1 : g, calloc((size_t)n + 1, sizeof(_Atomic int)), 0, 0};
      cr_assert_null(nc_pool_parallel_for(p, b, e, g, range_body, &c));
      for (int64_t i = 0; i < n; i++)
        cr_assert_eq(atomic_load(&c.hits[i]), 1, "threads %d [%lld,%lld) grain %lld: index %lld hit %d times",
                     threads[ti], (long long)b, (long long)e, (long long)g, (long long)(b + i),
                     atomic_load(&c.hits[i]));
      cr_assert_eq(atomic_load(&c.bad), 0, "chunk boundaries off the grain for [%lld,%lld) grain %lld",
                   (long long)b, (long long)e, (long long)g);
      int64_t units = (n + c.grain - 1) / c.grain;
      int64_t want = units < threads[ti] ? units : threads[ti];
      cr_assert_eq(atomic_load(&c.chunks), want);
      free((void *)c.hits);
    }
    nc_pool_free(p);
  }
}

typedef struct {
  _Atomic int64_t sum;
} huge_ctx;

static void huge_body(void *arg, int64_t lo, int64_t hi, int thread) {
  huge_ctx *c = arg;
  atomic_fetch_add(&c->sum, 1);
  (void)lo, (void)hi;
}

Test(threadpool, parallel_for_extreme_ranges) {
  nc_pool *p = make_pool(3, -1);
  huge_ctx c = {0};
  cr_assert_null(nc_pool_parallel_for(p, INT64_MIN / 2, INT64_MAX / 2, 1, huge_body, &c));
  cr_assert_eq(atomic_load(&c.sum), 3);
  nc_status st = nc_pool_parallel_for(p, INT64_MIN, INT64_MAX, 1, huge_body, &c);
  cr_assert_not_null(st);
  cr_assert_eq(nc_status_code(st), NC_E_INVALID);
  nc_status_free(st);
  nc_pool_free(p);
}

// ---- misuse --------------------------------------------------------------------------

typedef struct {
  nc_pool *self, *other;
  _Atomic int nested_errors, nested_ok, inner_ran;
} nest_ctx;

static void inner_task(void *arg, int t, int thread) {
  nest_ctx *c = arg;
  atomic_fetch_add(&c->inner_ran, 1);
}

static void inner_range(void *arg, int64_t lo, int64_t hi, int thread) { inner_task(arg, 0, thread); }

static void nesting_task(void *arg, int t, int thread) {
  nest_ctx *c = arg;
  nc_status st = nc_pool_run(c->self, 4, inner_task, c);
  if (st && nc_status_code(st) == NC_E_INVALID && strstr(nc_status_msg(st), "already running"))
    atomic_fetch_add(&c->nested_errors, 1);
  nc_status_free(st);
  st = nc_pool_parallel_for(c->self, 0, 100, 1, inner_range, c);
  if (st && nc_status_code(st) == NC_E_INVALID) atomic_fetch_add(&c->nested_errors, 1);
  nc_status_free(st);
  // Even a single-chunk parallel_for on the busy pool is refused (it would
  // otherwise silently work on 1 thread and fail on others).
  st = nc_pool_parallel_for(c->self, 0, 1, 1, inner_range, c);
  if (st) atomic_fetch_add(&c->nested_errors, 1);
  nc_status_free(st);
  // Another pool is fine.
  if (c->other) {
    st = nc_pool_run(c->other, 3, inner_task, c);
    if (!st) atomic_fetch_add(&c->nested_ok, 1);
    nc_status_free(st);
  }
}

Test(threadpool, nested_run_on_same_pool_is_an_error) {
  const int threads[] = {1, 2, 4};
  for (size_t ti = 0; ti < 3; ti++) {
    nest_ctx c = {make_pool(threads[ti], -1), make_pool(2, -1), 0, 0, 0};
    cr_assert_null(nc_pool_run(c.self, 6, nesting_task, &c));
    cr_assert_eq(atomic_load(&c.nested_errors), 18);
    if (threads[ti] == 1) cr_assert_eq(atomic_load(&c.nested_ok), 6);
    // Tasks on the other pool may be refused when two outer tasks use it at
    // the same time (one run per pool); the refused ones did not run.
    cr_assert_eq(atomic_load(&c.inner_ran), 3 * atomic_load(&c.nested_ok));
    cr_assert_geq(atomic_load(&c.nested_ok), 1);
    // The pool still works after refusing.
    c.inner_ran = 0;
    cr_assert_null(nc_pool_run(c.self, 5, inner_task, &c));
    cr_assert_eq(atomic_load(&c.inner_ran), 5);
    nc_pool_free(c.self);
    nc_pool_free(c.other);
  }
}

typedef struct {
  nc_pool *pool;
  _Atomic int started, release;
} conc_ctx;

static void blocking_task(void *arg, int t, int thread) {
  conc_ctx *c = arg;
  atomic_store(&c->started, 1);
  while (!atomic_load(&c->release)) sched_yield();
}

static void *runner(void *arg) {
  conc_ctx *c = arg;
  nc_status st = nc_pool_run(c->pool, 3, blocking_task, c);
  return st;  // NULL on success
}

Test(threadpool, concurrent_run_from_another_thread_is_an_error) {
  conc_ctx c = {make_pool(2, -1), 0, 0};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, runner, &c), 0);
  while (!atomic_load(&c.started)) sched_yield();
  nc_status st = nc_pool_run(c.pool, 2, inner_task, NULL);
  cr_assert_not_null(st);
  cr_assert_eq(nc_status_code(st), NC_E_INVALID);
  nc_status_free(st);
  atomic_store(&c.release, 1);
  void *res;
  pthread_join(th, &res);
  cr_assert_null(res);
  nc_pool_free(c.pool);
}

Test(threadpool, bad_arguments) {
  nc_pool *p = NULL;
  nc_status st = nc_pool_run(NULL, 1, inner_task, NULL);
  cr_assert_eq(nc_status_code(st), NC_E_INVALID);
  nc_status_free(st);
  st = nc_pool_new(NC_POOL_MAX_THREADS + 1, &p);
  cr_assert_eq(nc_status_code(st), NC_E_INVALID);
  cr_assert_null(p);
  nc_status_free(st);
  p = make_pool(2, -1);
  st = nc_pool_run(p, 4, NULL, NULL);
  cr_assert_eq(nc_status_code(st), NC_E_INVALID);
  nc_status_free(st);
  st = nc_pool_parallel_for(p, 0, 4, 1, NULL, NULL);
  cr_assert_eq(nc_status_code(st), NC_E_INVALID);
  nc_status_free(st);
  nc_pool_free(p);
  nc_pool_free(NULL);
  cr_assert_geq(nc_pool_default_threads(), 1);
  // 0 = default thread count.
  cr_assert_null(nc_pool_new(0, &p));
  cr_assert_eq(nc_pool_nthreads(p), nc_pool_default_threads());
  nc_pool_free(p);
}

// ---- many back-to-back runs ------------------------------------------------------------

typedef struct {
  long *slots;      // per task; plain writes, read by the caller after the run
} b2b_ctx;

static void b2b_task(void *arg, int t, int thread) {
  b2b_ctx *c = arg;
  c->slots[t]++;
}

Test(threadpool, thousands_of_back_to_back_runs) {
  // spin 0 puts every worker to sleep between runs (futex path), the default
  // keeps them spinning, 1 us mixes both.
  const int threads[] = {2, 4, 8};
  const int spins[] = {-1, 0, 1};
  for (size_t ti = 0; ti < 3; ti++)
    for (size_t si = 0; si < 3; si++) {
      nc_pool *p = make_pool(threads[ti], spins[si]);
      enum { RUNS = 3000, TASKS = 8 };
      long slots[TASKS] = {0};
      b2b_ctx c = {slots};
      for (int r = 0; r < RUNS; r++) {
        cr_assert_null(nc_pool_run(p, TASKS, b2b_task, &c));
        // The previous run's writes are visible here (acquire on completion).
        for (int t = 0; t < TASKS; t++) cr_assert_eq(slots[t], r + 1);
      }
      nc_pool_free(p);
    }
}

Test(threadpool, create_and_free_many_pools) {
  for (int i = 0; i < 200; i++) {
    nc_pool *p = make_pool(1 + i % 5, i % 2 ? 0 : -1);
    if (i % 3 == 0) {
      long slots[4] = {0};
      b2b_ctx c = {slots};
      cr_assert_null(nc_pool_run(p, 4, b2b_task, &c));
    }
    nc_pool_free(p);
  }
}

// ---- late workers never hold the caller up ------------------------------------------

typedef struct {
  _Atomic int on_caller;  // tasks of this run that ran on thread 0
  long *slots;
} late_ctx;

static void late_task(void *arg, int t, int thread) {
  late_ctx *c = arg;
  c->slots[t]++;
  if (thread == 0) atomic_fetch_add_explicit(&c->on_caller, 1, memory_order_relaxed);
}

Test(threadpool, caller_does_not_wait_for_sleeping_workers) {
  // spin 0: every worker sleeps between runs and needs a futex wake-up
  // (microseconds) to join; the caller claims tiny tasks in nanoseconds, so
  // in most runs it has done all of them before a worker arrives and returns
  // at once. (With a protocol that makes the caller wait for every worker to
  // check in, thread 0 could never run all tasks of a run of 2+ threads with
  // no more tasks than threads.) Only pools of at most one thread per core:
  // with more threads than cores, a woken worker preempts the caller on its
  // core (the scheduler favours the wakee), and on a loaded 2-core machine a
  // 4-thread pool's caller lost the race in 5,000 runs out of 5,000.
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  for (int n = 2; n <= 4 && n <= ncpu; n++) {
    nc_pool *p = make_pool(n, 0);
    enum { RUNS = 2000, TASKS = 4 };
    long slots[TASKS] = {0};
    int all_on_caller = 0;
    for (int r = 0; r < RUNS; r++) {
      late_ctx c = {0, slots};
      cr_assert_null(nc_pool_run(p, TASKS, late_task, &c));
      if (atomic_load(&c.on_caller) == TASKS) all_on_caller++;
      for (int t = 0; t < TASKS; t++) cr_assert_eq(slots[t], r + 1, "run %d task %d", r, t);
    }
    cr_assert_geq(all_on_caller, 1, "%d threads: the caller never ran a whole run alone", n);
    nc_pool_free(p);
  }
}

// ---- rapid launches of varying shape, as kernels of a decode step do -----------------

typedef struct {
  _Atomic int *count;
  long *slots;
} mix_ctx;

static void mix_task(void *arg, int t, int thread) {
  mix_ctx *c = arg;
  atomic_fetch_add_explicit(&c->count[t], 1, memory_order_relaxed);
  c->slots[t] += t;
}

static void mix_range(void *arg, int64_t lo, int64_t hi, int thread) {
  mix_ctx *c = arg;
  for (int64_t i = lo; i < hi; i++) mix_task(arg, (int)i, thread);
  (void)c;
}

Test(threadpool, rapid_launches_of_varying_sizes) {
  const int spins[] = {-1, 0, 2};
  for (int n = 1; n <= 4; n++)
    for (size_t si = 0; si < 3; si++) {
      nc_pool *p = make_pool(n, spins[si]);
      enum { RUNS = 2000, MAXT = 37 };
      _Atomic int count[MAXT];
      long slots[MAXT];
      long want[MAXT];
      for (int t = 0; t < MAXT; t++) atomic_init(&count[t], 0), slots[t] = 0, want[t] = 0;
      mix_ctx c = {count, slots};
      uint32_t x = 12345u + (uint32_t)n;
      for (int r = 0; r < RUNS; r++) {
        x = x * 1664525u + 1013904223u;
        int k = 1 + (int)((x >> 16) % MAXT);
        if (r % 3 == 2) cr_assert_null(nc_pool_parallel_for(p, 0, k, 1 + (int64_t)(x % 5), mix_range, &c));
        else cr_assert_null(nc_pool_run(p, k, mix_task, &c));
        for (int t = 0; t < k; t++) want[t] += t;
        // the writes of every task are visible to the caller after the run
        for (int t = 0; t < MAXT; t++) cr_assert_eq(slots[t], want[t], "threads %d run %d task %d", n, r, t);
      }
      long runs = 0;
      for (int t = 0; t < MAXT; t++) runs += atomic_load(&count[t]);
      cr_assert_gt(runs, RUNS);
      nc_pool_free(p);
    }
}
