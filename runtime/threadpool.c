// The thread pool (runtime/threadpool.h).
//
// Protocol. The pool keeps three atomics, each on its own cache line so that
// spinning readers of one do not slow down writers of another:
//   gen      generation counter: the caller bumps it to publish a job (or the
//            stop request); idle workers wait for it to change.
//   next     the next task index to hand out (dynamic scheduling, used
//            only when there are more tasks than threads).
//   pending  workers that have not yet finished the current job.
// A run: the caller writes the job (fn, ctx, ntasks: plain fields), resets
// next and pending, bumps gen, wakes sleepers, works on tasks itself, then
// waits for pending == 0. Every worker takes part in every generation (it
// decrements pending once per job even if it found no task), so a worker can
// never miss a generation or read job fields of the next one: the caller
// rewrites them only after it has seen pending == 0.
//
// Memory orders, and why they suffice:
//   - gen is bumped with a seq_cst RMW (a release, among other things) after
//     the job fields, next and pending were written; a worker loads gen with
//     acquire (or seq_cst), so those writes happen-before its reads of them.
//   - next is only an atomic counter: fetch_add relaxed. Visibility of the job
//     comes from gen; completion ordering comes from pending.
//   - A worker decrements pending after its last task (seq_cst RMW, a release)
//     and the caller reads pending == 0 with acquire: the decrements form a
//     release sequence, so every task's writes happen-before the return of
//     nc_pool_run. It also makes the next run's reset of next/pending and
//     rewrite of the job fields ordered after the workers' last reads.
//   - Sleeping uses the store-buffering (Dekker) pattern, which needs
//     seq_cst on both sides: a worker increments nsleep and then re-reads
//     gen; the caller bumps gen and then reads nsleep. In the single total
//     order of seq_cst operations one of the two second reads must see the
//     other side's write, so either the caller sees a sleeper and wakes it or
//     the worker sees the new generation and does not sleep. The futex wait
//     itself re-checks the word in the kernel, so a wake that comes between
//     the check and the sleep is not lost. The caller's sleep on pending is
//     the same pattern with caller_waiting in place of nsleep.
//   - busy is taken with an acq_rel exchange and released with release, so a
//     second caller (another thread, later) sees the previous run complete.
#include "runtime/threadpool.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__) && !defined(NC_POOL_NO_FUTEX)
#include <linux/futex.h>
#include <sys/syscall.h>
#define NC_POOL_FUTEX 1
#else
#define NC_POOL_FUTEX 0
#endif

#define NC_POOL_LINE 64
#define NC_POOL_DEFAULT_SPIN_US 50

typedef struct {
  nc_pool *pool;
  int index;  // 1..nthreads-1
} nc_pool_worker;

struct nc_pool {
  alignas(NC_POOL_LINE) _Atomic uint32_t gen;
  alignas(NC_POOL_LINE) _Atomic unsigned next;
  alignas(NC_POOL_LINE) _Atomic uint32_t pending;
  alignas(NC_POOL_LINE) _Atomic uint32_t nsleep;     // workers asleep (or about to sleep) on gen
  _Atomic uint32_t caller_waiting;                   // the caller sleeps (or is about to) on pending
  _Atomic bool busy;                                 // a run is in progress
  // The job: written by the caller before gen is bumped, read by workers after.
  alignas(NC_POOL_LINE) nc_pool_task_fn fn;
  void *ctx;
  int ntasks;
  bool stop;
  int nthreads;
  bool yield_spin;      // more threads than CPUs: spin with sched_yield, not pause
  int64_t spin_ns;
  pthread_t *threads;   // nthreads - 1 workers
  nc_pool_worker *workers;
  int nstarted;
#if !NC_POOL_FUTEX
  pthread_mutex_t mu;
  pthread_cond_t cv;
#endif
};

// ---- waiting ------------------------------------------------------------------

static inline void nc_pool_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int64_t nc_pool_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// Sleeps while *w == val (may return spuriously; callers loop).
static void nc_pool_sleep(nc_pool *p, _Atomic uint32_t *w, uint32_t val) {
#if NC_POOL_FUTEX
  (void)p;
  syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
  pthread_mutex_lock(&p->mu);
  while (atomic_load_explicit(w, memory_order_seq_cst) == val) pthread_cond_wait(&p->cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
#endif
}

static void nc_pool_wake(nc_pool *p, _Atomic uint32_t *w) {
#if NC_POOL_FUTEX
  (void)p;
  syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
  // Taking the mutex orders this wake after a sleeper's check of *w.
  (void)w;
  pthread_mutex_lock(&p->mu);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
#endif
}

// Spins for up to spin_ns while cond(p, arg) is false; returns cond's last value.
// Reading the clock every 64 rounds keeps the spin bounded in time, not in
// iterations (pause costs 10-150 cycles depending on the CPU).
#define NC_POOL_SPIN(p, done_expr)                                      \
  do {                                                                  \
    if ((p)->spin_ns <= 0) break;                                       \
    int64_t t0_ = nc_pool_now_ns();                                     \
    for (unsigned i_ = 1; !(done_expr); i_++) {                         \
      if ((p)->yield_spin) sched_yield();                               \
      else nc_pool_relax();                                             \
      if ((i_ & 63) == 0 && nc_pool_now_ns() - t0_ > (p)->spin_ns) break; \
    }                                                                   \
  } while (0)

// Waits until gen differs from seen; returns the new generation.
static uint32_t nc_pool_wait_gen(nc_pool *p, uint32_t seen) {
  uint32_t g = seen;
  NC_POOL_SPIN(p, (g = atomic_load_explicit(&p->gen, memory_order_acquire)) != seen);
  if (g != seen) return g;
  atomic_fetch_add_explicit(&p->nsleep, 1, memory_order_seq_cst);
  while ((g = atomic_load_explicit(&p->gen, memory_order_seq_cst)) == seen) nc_pool_sleep(p, &p->gen, seen);
  atomic_fetch_sub_explicit(&p->nsleep, 1, memory_order_relaxed);
  return g;
}

// The caller waits until every worker has finished the current job.
static void nc_pool_wait_done(nc_pool *p) {
  bool done = false;
  NC_POOL_SPIN(p, (done = atomic_load_explicit(&p->pending, memory_order_acquire) == 0));
  if (done) return;
  atomic_store_explicit(&p->caller_waiting, 1, memory_order_seq_cst);
  uint32_t v;
  while ((v = atomic_load_explicit(&p->pending, memory_order_seq_cst)) != 0) nc_pool_sleep(p, &p->pending, v);
  atomic_store_explicit(&p->caller_waiting, 0, memory_order_seq_cst);
}

// ---- running --------------------------------------------------------------------

static void nc_pool_work(nc_pool *p, int thread) {
  nc_pool_task_fn fn = p->fn;
  void *ctx = p->ctx;
  unsigned n = (unsigned)p->ntasks;
  // No more tasks than threads: task t runs on thread t, with no atomic at
  // all. Contended RMWs on one cache line are most of the dispatch cost on
  // many cores, and a worker that wakes late delays the run anyway (the
  // caller waits for every worker), so stealing would gain nothing. It also
  // keeps chunk k of a parallel_for on the same thread from run to run
  // (warm caches).
  if (n <= (unsigned)p->nthreads) {
    if ((unsigned)thread < n) fn(ctx, thread, thread);
    return;
  }
  // next never exceeds ntasks + nthreads <= INT_MAX + NC_POOL_MAX_THREADS: no wrap.
  for (;;) {
    unsigned t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
    if (t >= n) break;
    fn(ctx, (int)t, thread);
  }
}

static void *nc_pool_worker_main(void *arg) {
  nc_pool_worker *w = arg;
  nc_pool *p = w->pool;
  uint32_t seen = 0;  // no run can start before nc_pool_new returns, so gen is 0 here
  for (;;) {
    seen = nc_pool_wait_gen(p, seen);
    if (p->stop) break;  // stop is written before the gen bump that we acquired
    nc_pool_work(p, w->index);
    if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&p->caller_waiting, memory_order_seq_cst))
      nc_pool_wake(p, &p->pending);
  }
  return NULL;
}

// Publishes the current job (or stop) to the workers.
static void nc_pool_publish(nc_pool *p) {
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&p->nsleep, memory_order_seq_cst) > 0) nc_pool_wake(p, &p->gen);
}

static nc_status nc_pool_busy_error(const char *what) {
  return nc_errorf(NC_E_INVALID,
                   "%s: the pool is already running a job (nested call from a task, or a concurrent call from "
                   "another thread); a pool runs one job at a time",
                   what);
}

nc_status nc_pool_run(nc_pool *p, int ntasks, nc_pool_task_fn fn, void *ctx) {
  if (!p || !fn) return nc_errorf(NC_E_INVALID, "nc_pool_run: %s is NULL", p ? "fn" : "pool");
  if (ntasks <= 0) return NC_OK;
  if (atomic_exchange_explicit(&p->busy, true, memory_order_acq_rel)) return nc_pool_busy_error("nc_pool_run");
  if (p->nthreads == 1 || ntasks == 1) {
    for (int t = 0; t < ntasks; t++) fn(ctx, t, 0);
  } else {
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, (uint32_t)(p->nthreads - 1), memory_order_relaxed);
    nc_pool_publish(p);
    nc_pool_work(p, 0);
    nc_pool_wait_done(p);
  }
  atomic_store_explicit(&p->busy, false, memory_order_release);
  return NC_OK;
}

// ---- parallel_for -----------------------------------------------------------------

typedef struct {
  nc_pool_range_fn fn;
  void *ctx;
  int64_t begin, end, grain;
  int64_t q, r;  // units per chunk, and how many chunks get one more
} nc_pool_range;

static void nc_pool_range_task(void *arg, int k, int thread) {
  const nc_pool_range *r = arg;
  // Chunk k covers units [k*q + min(k, r), (k+1)*q + min(k+1, r)).
  int64_t u0 = k * r->q + (k < r->r ? k : r->r);
  int64_t u1 = u0 + r->q + (k < r->r ? 1 : 0);
  int64_t lo = r->begin + u0 * r->grain;
  int64_t hi = (r->end - r->begin) / r->grain < u1 ? r->end : r->begin + u1 * r->grain;
  r->fn(r->ctx, lo, hi, thread);
}

nc_status nc_pool_parallel_for(nc_pool *p, int64_t begin, int64_t end, int64_t grain, nc_pool_range_fn fn,
                               void *ctx) {
  if (!p || !fn) return nc_errorf(NC_E_INVALID, "nc_pool_parallel_for: %s is NULL", p ? "fn" : "pool");
  if (end <= begin) return NC_OK;
  if (grain < 1) grain = 1;
  // n may not fit int64 (begin = INT64_MIN, end = INT64_MAX): count in uint64.
  uint64_t n = (uint64_t)end - (uint64_t)begin;
  if (n > (uint64_t)INT64_MAX)
    return nc_errorf(NC_E_INVALID, "nc_pool_parallel_for: range [%lld, %lld) is too long", (long long)begin,
                     (long long)end);
  int64_t units = (int64_t)(n / (uint64_t)grain) + (n % (uint64_t)grain != 0);
  int64_t chunks = units < p->nthreads ? units : p->nthreads;
  if (chunks <= 1) {
    if (atomic_exchange_explicit(&p->busy, true, memory_order_acq_rel))
      return nc_pool_busy_error("nc_pool_parallel_for");
    fn(ctx, begin, end, 0);
    atomic_store_explicit(&p->busy, false, memory_order_release);
    return NC_OK;
  }
  nc_pool_range r = {fn, ctx, begin, end, grain, units / chunks, units % chunks};
  nc_status st = nc_pool_run(p, (int)chunks, nc_pool_range_task, &r);
  return st ? nc_status_prefix(st, "nc_pool_parallel_for: ") : NC_OK;
}

// ---- lifetime -----------------------------------------------------------------------

int nc_pool_default_threads(void) {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#endif
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n >= 1 ? (n > NC_POOL_MAX_THREADS ? NC_POOL_MAX_THREADS : (int)n) : 1;
}

int nc_pool_nthreads(const nc_pool *p) { return p ? p->nthreads : 0; }

static void nc_pool_stop(nc_pool *p) {
  p->stop = true;
  nc_pool_publish(p);
  for (int i = 0; i < p->nstarted; i++) pthread_join(p->threads[i], NULL);
  p->nstarted = 0;
}

static void nc_pool_destroy(nc_pool *p) {
#if !NC_POOL_FUTEX
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
#endif
  free(p->threads);
  free(p->workers);
  free(p);
}

nc_status nc_pool_new_ex(const nc_pool_opts *o, nc_pool **out) {
  if (!out) return nc_errorf(NC_E_INVALID, "nc_pool_new: out is NULL");
  *out = NULL;
  int ncpu = nc_pool_default_threads();
  int n = o && o->nthreads > 0 ? o->nthreads : ncpu;
  if (n > NC_POOL_MAX_THREADS)
    return nc_errorf(NC_E_INVALID, "nc_pool_new: %d threads is more than the limit %d", n, NC_POOL_MAX_THREADS);
  int spin_us = o && o->spin_us >= 0 ? o->spin_us : NC_POOL_DEFAULT_SPIN_US;
  if (spin_us > 1000000) spin_us = 1000000;
  // aligned_alloc: the struct is over-aligned (cache lines) and malloc only
  // guarantees 16 bytes.
  size_t sz = (sizeof(nc_pool) + NC_POOL_LINE - 1) / NC_POOL_LINE * NC_POOL_LINE;
  nc_pool *p = aligned_alloc(NC_POOL_LINE, sz);
  if (!p) return nc_errorf(NC_E_NOMEM, "nc_pool_new: out of memory");
  memset(p, 0, sz);
  atomic_init(&p->gen, 0);
  atomic_init(&p->next, 0);
  atomic_init(&p->pending, 0);
  atomic_init(&p->nsleep, 0);
  atomic_init(&p->caller_waiting, 0);
  atomic_init(&p->busy, false);
  p->nthreads = n;
  p->yield_spin = n > ncpu;
  p->spin_ns = (int64_t)spin_us * 1000;
#if !NC_POOL_FUTEX
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
#endif
  if (n > 1) {
    p->threads = calloc((size_t)n - 1, sizeof *p->threads);
    p->workers = calloc((size_t)n - 1, sizeof *p->workers);
    if (!p->threads || !p->workers) {
      nc_pool_destroy(p);
      return nc_errorf(NC_E_NOMEM, "nc_pool_new: out of memory");
    }
    for (int i = 0; i < n - 1; i++) {
      p->workers[i] = (nc_pool_worker){p, i + 1};
      int rc = pthread_create(&p->threads[i], NULL, nc_pool_worker_main, &p->workers[i]);
      if (rc != 0) {
        nc_pool_stop(p);
        nc_pool_destroy(p);
        return nc_errorf(NC_E_NOMEM, "nc_pool_new: starting worker thread %d of %d failed: %s", i + 1, n - 1,
                         strerror(rc));
      }
      p->nstarted++;
    }
  }
  *out = p;
  return NC_OK;
}

nc_status nc_pool_new(int nthreads, nc_pool **out) {
  nc_pool_opts o = {nthreads, -1};
  return nc_pool_new_ex(&o, out);
}

void nc_pool_free(nc_pool *p) {
  if (!p) return;
  nc_pool_stop(p);
  nc_pool_destroy(p);
}
