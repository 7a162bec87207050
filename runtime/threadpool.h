// A small persistent thread pool for the CPU backend.
//
//   nc_pool *pool;
//   NC_TRY(nc_pool_new(0, &pool));            // 0 = one thread per usable core
//   NC_TRY(nc_pool_run(pool, ntasks, fn, ctx));   // fn(ctx, task, thread)
//   NC_TRY(nc_pool_parallel_for(pool, 0, n, 64, body, ctx));  // body(ctx, lo, hi, thread)
//   nc_pool_free(pool);
//
// A pool of n threads is the calling thread (thread index 0) plus n-1
// workers (indices 1..n-1) that live as long as the pool. A run publishes a
// job; its tasks are claimed one at a time through an atomic counter tagged
// with the run's generation, by the caller and by whichever workers are
// awake, and the run returns once every task has finished; all writes made
// by tasks are then visible to the caller. The caller waits only for tasks
// that a worker actually claimed: a worker that wakes late (not yet
// scheduled, asleep) finds nothing left and never delays the run, so on a
// busy machine the caller simply does more of the tasks itself. Any task may
// run on any thread; the thread index (0 <= thread < nc_pool_nthreads) is
// passed so that kernels can use per-thread scratch buffers without locking
// (a thread runs one task at a time). Give a run more tasks than threads
// when finer load balancing helps: claiming a task costs one uncontended CAS.
//
// Dispatch is low-latency: idle workers spin on the job word for a short
// while (opts.spin_us) before they sleep on a futex (Linux) or a condition
// variable (elsewhere); kernels launched back to back find them awake.
// docs/runtime.md gives measured dispatch latencies (bench/pool_bench.c).
//
// Rules:
// - One run at a time per pool. nc_pool_run / nc_pool_parallel_for called
//   while the same pool is running (from inside one of its tasks, i.e.
//   nested, or concurrently from another thread) returns NC_E_INVALID at
//   once and runs nothing; it never deadlocks. Using a *different* pool from
//   inside a task is allowed.
// - A pool of 1 thread runs everything inline on the caller, and starts no
//   threads. Runs with a single task (or a single parallel_for chunk) run
//   inline on any pool without waking the workers.
// - Every run wakes sleeping workers (a worker that finds no task left returns
//   to waiting at once), so give a small job a single task (it runs inline).
// - Tasks must not fail: they return nothing. A kernel that can fail records
//   its error in its ctx (per thread or with an atomic) and the caller checks
//   it after the run.
// - The pool has no global state; several pools may coexist.
#ifndef NC_RUNTIME_THREADPOOL_H
#define NC_RUNTIME_THREADPOOL_H

#include <stdint.h>

#include "support/status.h"

typedef struct nc_pool nc_pool;

// A task: task in [0, ntasks), thread in [0, nthreads).
typedef void (*nc_pool_task_fn)(void *ctx, int task, int thread);
// A loop chunk [lo, hi) run on thread.
typedef void (*nc_pool_range_fn)(void *ctx, int64_t lo, int64_t hi, int thread);

#define NC_POOL_MAX_THREADS 1024

typedef struct {
  int nthreads;  // <= 0: one per CPU this process may run on
  int spin_us;   // how long an idle thread spins before it sleeps; < 0: default (50 us)
} nc_pool_opts;

// Usable CPUs of this process (affinity mask; >= 1).
int nc_pool_default_threads(void);

nc_status nc_pool_new(int nthreads, nc_pool **out);
nc_status nc_pool_new_ex(const nc_pool_opts *opts, nc_pool **out);
// Stops and joins the workers. The pool must not be running. NULL is a no-op.
void nc_pool_free(nc_pool *pool);
int nc_pool_nthreads(const nc_pool *pool);

// Runs fn(ctx, t, thread) once for each t in [0, ntasks) and returns when all
// have finished. ntasks <= 0 runs nothing. Errors: NULL pool/fn, pool busy
// (nested or concurrent call).
nc_status nc_pool_run(nc_pool *pool, int ntasks, nc_pool_task_fn fn, void *ctx);

// Static partition of [begin, end) into at most nc_pool_nthreads contiguous
// chunks of whole grains (run as tasks: any chunk on any thread): chunk boundaries are begin + k*grain (the last
// chunk ends at end), chunk sizes differ by at most one grain, and every
// index is covered by exactly one call fn(ctx, lo, hi, thread). grain < 1 is
// taken as 1. An empty range runs nothing; a range of one grain (or a pool of
// one thread) runs inline as fn(ctx, begin, end, 0).
nc_status nc_pool_parallel_for(nc_pool *pool, int64_t begin, int64_t end, int64_t grain, nc_pool_range_fn fn,
                               void *ctx);

#endif
