// The thread pool (runtime/threadpool.h).
//
// Protocol. A run is one *generation*. Its tasks are claimed through one
// 64-bit atomic word, `job`:
//     gen (32 bits) | n (16 bits: tasks of this generation) | next (16 bits)
// A thread claims task `next` with a compare-and-swap from (gen, n, next) to
// (gen, n, next + 1), only while next < n and gen is the generation it read
// the job's fields for. The caller publishes a generation (job fields, then
// the word), claims tasks itself like any worker, and once none is left to
// claim waits only for the tasks that workers claimed (counted in `done`).
// A worker that wakes late finds nothing to claim and goes back to waiting:
// it never holds the caller up, and the caller never waits for a thread that
// the OS has not scheduled (the common case on a loaded machine). Runs of
// more than NC_POOL_ROUND tasks are split into rounds (one generation each,
// `base` offsetting the task index).
//
// Memory orders, and why they suffice:
//   - The job fields (fn, ctx, base) are relaxed atomics, written before the
//     word is stored (seq_cst, a release); a worker loads the word with
//     acquire and then the fields, so it sees at least this generation's
//     fields. It may see a *later* generation's fields only if the caller has
//     moved on, and then the word no longer holds the (gen, n, next) it read:
//     its CAS fails and it runs nothing. A successful CAS therefore proves
//     the fields it read belong to the task it claimed. (n lives in the word
//     for the same reason: a task count read from a field could be the next
//     generation's and let a stale claim succeed.)
//   - The caller rewrites the fields only after every task of the previous
//     generation was claimed and finished: a worker's reads of the fields
//     are sequenced before its release increment of `done`, which the caller
//     reads with acquire, so the caller's next writes cannot be seen by them.
//     The same acquire makes every task's writes visible to the caller when
//     nc_pool_run returns.
//   - The caller stores the new word while the old generation is exhausted
//     (next == n), so no worker's CAS can succeed against the old word and be
//     lost by the store.
//   - done is reset by the caller (relaxed) before the word is published; a
//     worker increments it only for a task it claimed in the current
//     generation, which the caller waits for, so no increment of an older
//     generation can land after the reset.
//   - Sleeping uses the store-buffering (Dekker) pattern with seq_cst on both
//     sides: a worker increments nsleep and re-reads gen32; the caller stores
//     gen32 and then reads nsleep. One of the two second reads sees the other
//     side's write, so either the caller wakes the worker or the worker does
//     not sleep. The futex wait re-checks the word in the kernel, so a wake
//     between the check and the sleep is not lost. The caller's sleep on
//     `done` is the same pattern with caller_waiting.
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
#define NC_POOL_ROUND 0xFFFF  // most tasks per generation (16-bit fields of the word)

#define NC_JOB_GEN(w) ((uint32_t)((w) >> 32))
#define NC_JOB_N(w) ((unsigned)(((w) >> 16) & 0xFFFF))
#define NC_JOB_NEXT(w) ((unsigned)((w)&0xFFFF))
#define NC_JOB(gen, n) (((uint64_t)(gen) << 32) | ((uint64_t)(n) << 16))

typedef struct {
  nc_pool *pool;
  int index;  // 1..nthreads-1
} nc_pool_worker;

struct nc_pool {
  alignas(NC_POOL_LINE) _Atomic uint64_t job;  // gen | n | next
  alignas(NC_POOL_LINE) _Atomic uint32_t done;  // tasks of this generation finished by workers
  _Atomic uint32_t caller_waiting;              // the caller sleeps (or is about to) on done
  alignas(NC_POOL_LINE) _Atomic uint32_t gen32; // the generation, for futex sleepers
  _Atomic uint32_t nsleep;                      // workers asleep (or about to sleep) on gen32
  _Atomic bool busy;                            // a run is in progress
  _Atomic bool stop;
  // The job's fields: written by the caller before the word, read by workers after it.
  alignas(NC_POOL_LINE) _Atomic(nc_pool_task_fn) fn;
  _Atomic(void *) ctx;
  _Atomic int base;
  uint32_t gen;         // caller side: the current generation
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

// Spins for up to spin_ns while done_expr is false. Reading the clock every
// 64 rounds keeps the spin bounded in time, not in iterations (pause costs
// 10-150 cycles depending on the CPU).
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

// A worker waits until the generation differs from seen; returns the job word.
static uint64_t nc_pool_wait_gen(nc_pool *p, uint32_t seen) {
  uint64_t w = 0;
  NC_POOL_SPIN(p, NC_JOB_GEN(w = atomic_load_explicit(&p->job, memory_order_acquire)) != seen);
  if (NC_JOB_GEN(w) != seen) return w;
  atomic_fetch_add_explicit(&p->nsleep, 1, memory_order_seq_cst);
  uint32_t g;
  while ((g = atomic_load_explicit(&p->gen32, memory_order_seq_cst)) == seen) nc_pool_sleep(p, &p->gen32, seen);
  atomic_fetch_sub_explicit(&p->nsleep, 1, memory_order_relaxed);
  // gen32 is stored after the word: the word holds that generation (or a later one)
  return atomic_load_explicit(&p->job, memory_order_acquire);
}

// The caller waits until workers have finished `target` tasks of this generation.
static void nc_pool_wait_done(nc_pool *p, uint32_t target) {
  bool ok = false;
  NC_POOL_SPIN(p, (ok = atomic_load_explicit(&p->done, memory_order_acquire) == target));
  if (ok) return;
  atomic_store_explicit(&p->caller_waiting, 1, memory_order_seq_cst);
  uint32_t v;
  while ((v = atomic_load_explicit(&p->done, memory_order_seq_cst)) != target) nc_pool_sleep(p, &p->done, v);
  atomic_store_explicit(&p->caller_waiting, 0, memory_order_relaxed);
}

// ---- running --------------------------------------------------------------------

// Claims a task of generation gen starting from the word w; returns its index
// or -1 when the generation has none left (or is over).
static inline int nc_pool_claim(nc_pool *p, uint64_t w, uint32_t gen) {
  while (NC_JOB_GEN(w) == gen && NC_JOB_NEXT(w) < NC_JOB_N(w)) {
    if (atomic_compare_exchange_weak_explicit(&p->job, &w, w + 1, memory_order_acq_rel, memory_order_acquire))
      return (int)NC_JOB_NEXT(w);
  }
  return -1;
}

static void *nc_pool_worker_main(void *arg) {
  nc_pool_worker *wk = arg;
  nc_pool *p = wk->pool;
  uint32_t seen = 0;  // no run can start before nc_pool_new returns, so gen is 0 here
  for (;;) {
    uint64_t w = nc_pool_wait_gen(p, seen);
    if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
    seen = NC_JOB_GEN(w);
    nc_pool_task_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
    void *ctx = atomic_load_explicit(&p->ctx, memory_order_relaxed);
    int base = atomic_load_explicit(&p->base, memory_order_relaxed);
    int t;
    while ((t = nc_pool_claim(p, w, seen)) >= 0) {
      fn(ctx, base + t, wk->index);
      atomic_fetch_add_explicit(&p->done, 1, memory_order_seq_cst);
      if (atomic_load_explicit(&p->caller_waiting, memory_order_seq_cst)) nc_pool_wake(p, &p->done);
      w = atomic_load_explicit(&p->job, memory_order_acquire);
    }
  }
  return NULL;
}

// Publishes generation p->gen + 1 with n tasks (0: the stop request).
static void nc_pool_publish(nc_pool *p, unsigned n) {
  p->gen++;
  atomic_store_explicit(&p->job, NC_JOB(p->gen, n), memory_order_seq_cst);
  atomic_store_explicit(&p->gen32, p->gen, memory_order_seq_cst);
  if (atomic_load_explicit(&p->nsleep, memory_order_seq_cst) > 0) nc_pool_wake(p, &p->gen32);
}

// One generation of n (1..NC_POOL_ROUND) tasks base..base+n-1.
static void nc_pool_round(nc_pool *p, int base, unsigned n, nc_pool_task_fn fn, void *ctx) {
  atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
  atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
  atomic_store_explicit(&p->base, base, memory_order_relaxed);
  atomic_store_explicit(&p->done, 0, memory_order_relaxed);
  nc_pool_publish(p, n);
  uint32_t gen = p->gen;
  unsigned own = 0;
  int t;
  uint64_t w = NC_JOB(gen, n);
  while ((t = nc_pool_claim(p, w, gen)) >= 0) {
    fn(ctx, base + t, 0);
    own++;
    w = atomic_load_explicit(&p->job, memory_order_acquire);
  }
  if (own < n) nc_pool_wait_done(p, n - own);
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
    for (int base = 0; base < ntasks; base += NC_POOL_ROUND) {
      int n = ntasks - base < NC_POOL_ROUND ? ntasks - base : NC_POOL_ROUND;
      nc_pool_round(p, base, (unsigned)n, fn, ctx);
    }
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
  atomic_store_explicit(&p->stop, true, memory_order_release);
  nc_pool_publish(p, 0);
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
  atomic_init(&p->job, 0);
  atomic_init(&p->done, 0);
  atomic_init(&p->caller_waiting, 0);
  atomic_init(&p->gen32, 0);
  atomic_init(&p->nsleep, 0);
  atomic_init(&p->busy, false);
  atomic_init(&p->stop, false);
  atomic_init(&p->fn, NULL);
  atomic_init(&p->ctx, NULL);
  atomic_init(&p->base, 0);
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
