// The autotuner: searches the GEMM templates' knob spaces (codegen/tune.h)
// for the shapes of a plan, on the CPU (LLVM JIT, the thread pool) or an
// OpenCL device, within a time budget, and stores the winners in the tuning
// database (runtime/tunedb.h), which the backends read when they compile.
//
// Per shape (largest total work first, the budget left split evenly over the
// shapes left): the device default is timed, then a hill climb over
// single-knob changes of the best so far (in a seeded random order, invalid
// combinations skipped by the templates' checks) until the shape's share of
// the budget is spent. Every candidate's output is checked against a double
// precision reference at sampled positions (the four corners, the last row
// and column, random others); a wrong candidate is rejected and reported.
// Finally the default and the winner are timed again in 3 interleaved pairs;
// the winner is kept only if it wins at least 2 pairs and its fastest run
// beats the default's by more than 2 % (noise on a loaded machine is larger
// than the 1 % the climb accepts).
#ifndef NC_RUNTIME_TUNER_H
#define NC_RUNTIME_TUNER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "codegen/tune.h"
#include "passes/lower.h"
#include "runtime/exec.h"
#include "runtime/tunedb.h"

typedef struct {
  int variant;  // sym*4 + ta*2 + tb
  int64_t batch, m, n, k;
  int count;    // launches per run of the plan
} nc_tune_shape;

// The distinct fp32 GEMM shapes of p's template kernels with the symbols
// bound to syms (indexed like g's symbols); sym_variants: symmetric GEMMs are
// variants of their own (the CPU's; OpenCL has none). *out is malloc'ed.
nc_status nc_tune_plan_shapes(const nc_graph *g, const nc_plan *p, const int64_t *syms, bool sym_variants, nc_tune_shape **out, int *n);

typedef struct {
  nc_device dev;       // cpu (threads, avx2_only) or opencl (select, matmul_bf16: tune the bf16 GEMM)
  double budget_s;     // wall-clock budget of the whole search
  FILE *progress;      // a line per shape and per rejected candidate; NULL: quiet
  bool break_candidates;  // test hook: every non-default candidate's output is corrupted (so rejected)
  uint64_t seed;       // search order (0: a fixed default)
  bool wall_time;      // cpu: time with the wall clock (default: the slowest task's thread CPU time, robust to other load)
} nc_tune_opts;

typedef struct {
  char kernel[128], shape[96];
  double default_us, best_us;  // final interleaved timings (0: not reached)
  char knobs[256];             // the winner's searched knobs, formatted
  int tried, rejected, invalid;  // candidates run (the default included), of them wrong or failing, skipped by the checks
  bool tuned;                  // reached and written to the database
  bool is_default;             // the default won
} nc_tune_result;

// Tunes shapes[0..n) on o->dev, adds winners to db (the caller saves it) and
// fills res[i] per shape. Errors: the device cannot be opened, the default
// kernel itself is wrong or fails to run, out of memory.
nc_status nc_tune_run(const nc_tune_shape *shapes, int n, const nc_tune_opts *o, nc_tunedb *db, nc_tune_result *res);

// ---- the other OpenCL templates (runtime/tuner_flash.c) -----------------------------
// Flash attention: the distinct attention calls of p (symbols bound to syms); count the forward
// calls, bwd the backward ones. One tuning unit is a forward and its backward.
typedef struct {
  nc_ocl_flash_shape s;
  int64_t d, dv;   // head dims (unpadded)
  double scale;
  int count, bwd;
} nc_tune_flash_shape;
nc_status nc_tune_plan_flash(const nc_graph *g, const nc_plan *p, const int64_t *syms, nc_tune_flash_shape **out, int *n);
// Searches the blocks (space ocl.flash) of each shape on o->dev (OpenCL; o->dev.matmul_bf16: the
// bf16 tiles, mma.sync on NVIDIA, emulated elsewhere), within o->budget_s; res[i] per shape.
nc_status nc_tune_flash_run(const nc_tune_flash_shape *shapes, int n, const nc_tune_opts *o, nc_tunedb *db, nc_tune_result *res);

// Elementwise loop kernels of p by size bucket (nc_ocl_loop_bucket of their work-items, with the
// device type's default knobs deciding which kernels are row kernels): launches and the largest.
typedef struct {
  int bucket;
  int count;
  int64_t items;
} nc_tune_loop_shape;
nc_status nc_tune_plan_loops(const nc_graph *g, const nc_plan *p, const int64_t *syms, bool gpu, nc_tune_loop_shape **out, int *n);
// Times each loop_wg of the space ocl.loop per bucket (a fused elementwise kernel of the bucket's
// largest size), within o->budget_s; res[i] per bucket.
nc_status nc_tune_loop_run(const nc_tune_loop_shape *shapes, int n, const nc_tune_opts *o, nc_tunedb *db, nc_tune_result *res);

// Row kernels of p (a work-group per row, row_wg) by row-length bucket (nc_ocl_row_bucket of the
// row's constant length; NC_OCL_ROW_VAR when it depends on a symbol): launches, the largest row count
// and the largest row length (symbols bound to syms) of the bucket's kernels.
typedef struct {
  int bucket;
  int count;
  int64_t rows, cols;
} nc_tune_row_shape;
nc_status nc_tune_plan_rows(const nc_graph *g, const nc_plan *p, const int64_t *syms, bool gpu, nc_tune_row_shape **out, int *n);
// Times row_wg candidates per bucket (a synthetic RMSNorm of rows x cols, one program build per
// candidate), within o->budget_s; res[i] per bucket.
nc_status nc_tune_row_run(const nc_tune_row_shape *shapes, int n, const nc_tune_opts *o, nc_tunedb *db, nc_tune_result *res);

// ---- backends (runtime/tuner.c: cpu; runtime/tuner_ocl.c: opencl) ------------
typedef struct nc_tune_backend nc_tune_backend;
struct nc_tune_backend {
  const nc_knob_space *space;
  char device[192], driver[192];
  char defaults[256];  // the device's default knob struct
  void *ctx;
  void (*kernel)(const nc_tune_backend *b, int variant, char *buf, size_t n);  // the database's kernel signature
  bool bf16;           // operands are rounded to bf16 (the reference does the same)
  // Uploads A, B and sizes C for shape s.
  nc_status (*prepare)(nc_tune_backend *b, const nc_tune_shape *s, const float *a, size_t na, const float *bm, size_t nb, size_t nc);
  // Runs knobs on the prepared shape: one warm-up then reps timed runs
  // (*sec = the fastest); C (nc floats) receives the last output.
  nc_status (*run)(nc_tune_backend *b, const nc_tune_shape *s, const void *knobs, int reps, double *sec, float *c);
  void (*release)(nc_tune_backend *b);
};
nc_status nc_tune_backend_cpu(const nc_device *d, bool wall_time, nc_tune_backend *out);
nc_status nc_tune_backend_ocl(const nc_device *d, nc_tune_backend *out);

#endif
