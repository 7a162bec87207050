// Executes a plan (passes/lower.h): binds symbols from the feeds, gives every
// materialized node a buffer, runs the kernels in order through a runner
// (the kernel-IR evaluator or a compiled backend), returns the outputs.
#ifndef NC_RUNTIME_PLAN_RUN_H
#define NC_RUNTIME_PLAN_RUN_H

#include "passes/lower.h"
#include "runtime/interp.h"

// Runs kernel k (plan kernel index ki) on bufs with args (symbol values in
// the kernel's argument order).
typedef nc_status (*nc_kernel_runner)(void *ctx, int ki, const nc_kernel *k, void *const *bufs, const int64_t *args);

// The kernel-IR evaluator as a runner (ctx unused).
nc_status nc_kernel_runner_eval(void *ctx, int ki, const nc_kernel *k, void *const *bufs, const int64_t *args);

// Buffers of a plan kept across runs: one arena laid out by the memory
// planner (passes/memplan.h) for the last symbol sizes, reused while they
// stay the same (no allocation, no page faults per step).
typedef struct nc_plan_mem nc_plan_mem;
nc_plan_mem *nc_plan_mem_new(void);
void nc_plan_mem_free(nc_plan_mem *m);
int64_t nc_plan_mem_arena_bytes(const nc_plan_mem *m);

// outputs[k] receives output k (owned), as nc_interp_run. mem may be NULL
// (a buffer is allocated per materialized node for this run only).
nc_status nc_plan_run(const nc_graph *g, const nc_plan *p, nc_kernel_runner run, void *ctx, const nc_feed *feeds,
                      int nfeeds, nc_tensor *outputs);
nc_status nc_plan_run_mem(const nc_graph *g, const nc_plan *p, nc_plan_mem *mem, nc_kernel_runner run, void *ctx,
                          const nc_feed *feeds, int nfeeds, nc_tensor *outputs);

// A progress hook (runtime/exec.h nc_exec_hook): fn(ctx, k, value) right after
// the last kernel that writes output k (value: a view of it, valid during the
// call; before the first kernel for outputs no kernel writes), and
// fn(ctx, -1, NULL) after every kernel. An error from fn stops the run.
typedef struct {
  nc_status (*fn)(void *ctx, int output, const nc_tensor *value);
  void *ctx;
} nc_plan_hook;
nc_status nc_plan_run_hooked(const nc_graph *g, const nc_plan *p, nc_plan_mem *mem, nc_kernel_runner run, void *ctx,
                             const nc_plan_hook *hook, const nc_feed *feeds, int nfeeds, nc_tensor *outputs);
// out[k] = the plan kernel after which output k of g holds its final value
// (-1: none writes it, e.g. a leaf).
void nc_plan_output_kernels(const nc_graph *g, const nc_plan *p, int *out);

#endif
