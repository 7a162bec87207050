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
  // OpenCL: ta*2 + tb. CPU: runtime/cpu.h's GEMM variants: 0..7 fp32 (sym*4 + ta*2 + tb),
  // 8..11 bf16 buffers (8 + ta*2 + tb), 16..19 the ReLU^2 epilogue, 20..27 the addend
  // (20 + sym*4 + ta*2 + tb); the helpers below decode them.
  int variant;
  int64_t batch, m, n, k;
  int count;    // launches per run of the plan
} nc_tune_shape;

static inline bool nc_tune_variant_bf16(int v) { return v >= 8 && v < 16; }
// 0: none, 1: ReLU^2 (relu(p)^2 into D beside C = p), 2: the addend (C = alpha p + beta E)
static inline int nc_tune_variant_epi(int v) { return v >= 20 ? 2 : v >= 16 ? 1 : 0; }
static inline bool nc_tune_variant_sym(int v) { return v < 8 ? (v >> 2) & 1 : v >= 20 ? ((v - 20) >> 2) & 1 : false; }
// alpha and beta of the addend shapes' timing and reference (run-time arguments, like the model's)
#define NC_TUNE_ADDEND_ALPHA 0.75f
#define NC_TUNE_ADDEND_BETA (-1.25f)

// The distinct GEMM shapes of p's template kernels with the symbols bound to
// syms (indexed like g's symbols). cpu_variants (the CPU): every GEMM launch,
// by its runtime/cpu.h variant (symmetric, bf16-buffer, ReLU^2 and addend
// GEMMs are variants of their own); else (OpenCL) the plain fp32 GEMMs by
// ta*2 + tb. *out is malloc'ed.
nc_status nc_tune_plan_shapes(const nc_graph *g, const nc_plan *p, const int64_t *syms, bool cpu_variants, nc_tune_shape **out, int *n);
// Kernel k's arguments with the symbols bound to syms (indexed like g's symbols; an argument that
// names no symbol of g gets 0): what the planners above evaluate a kernel's shapes with.
void nc_tune_bind_args(const nc_graph *g, const nc_kernel *k, const int64_t *syms, int64_t *args);

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
// A progress line to o->progress (nothing when NULL), flushed: the searches' (runtime/tuner.c,
// runtime/tuner_flash.c).
void nc_tune_progress(const nc_tune_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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

// The loop kernels' work-group buckets of p (space ocl.loop, codegen/tune.h), one class at a time,
// with the device type's default knobs deciding which kernels are loop, row or reduction kernels:
//   NC_OCL_LOOP_ELEMENTWISE elementwise loop kernels by nc_ocl_loop_bucket of their work-items;
//   NC_OCL_LOOP_ROW row kernels by nc_ocl_row_bucket of the row's constant length (NC_OCL_ROW_VAR
//     when it depends on a symbol);
//   NC_OCL_LOOP_REDUCE whole-buffer reductions by nc_ocl_row_bucket of their constant element count
//     (nc_ocl_reduce_items; NC_OCL_ROW_VAR when symbolic).
// Per bucket: launches, and the largest kernel's size with the symbols bound to syms. *out is malloc'ed.
typedef struct {
  int bucket;
  int count;
  int64_t items;       // loop: work-items; reduce: reduced elements
  int64_t rows, cols;  // row: rows and row length
} nc_tune_wg_shape;
nc_status nc_tune_plan_buckets(const nc_graph *g, const nc_plan *p, const int64_t *syms, bool gpu, nc_ocl_loop_class cls, nc_tune_wg_shape **out,
                               int *n);
// Times the class's work-group candidates per bucket on a synthetic kernel of the bucket's largest size,
// within o->budget_s; res[i] per bucket. Loop: y = a*b + a, every loop_wg (chosen per launch: no build);
// row: an RMSNorm, row_wg candidates (a build each); reduce: a sum of positive values checked against a
// double-precision sum, reduce_wg candidates (a build each). docs/tuning.md.
nc_status nc_tune_wg_run(nc_ocl_loop_class cls, const nc_tune_wg_shape *shapes, int n, const nc_tune_opts *o, nc_tunedb *db, nc_tune_result *res);

// ---- backends (runtime/tuner.c: cpu; runtime/tuner_ocl.c: opencl) ------------
typedef struct nc_tune_backend nc_tune_backend;
struct nc_tune_backend {
  const nc_knob_space *space;
  char device[192], driver[192];
  char defaults[256];  // the device's default knob struct
  void *ctx;
  void (*kernel)(const nc_tune_backend *b, int variant, char *buf, size_t n);  // the database's kernel signature
  bool bf16;           // operands are rounded to bf16 (the reference does the same)
  bool bf16_out;       // C is rounded to bf16 on store (the check tolerates it)
  // Optional (the CPU's): sets space, defaults, bf16 and bf16_out for a shape's variant before it is
  // tuned (one run may hold fp32 and bf16 GEMMs); NULL: one space for every shape.
  void (*select)(nc_tune_backend *b, int variant);
  // Optional (the CPU's): E of an addend shape (nc floats, after prepare); NULL: no epilogue shapes.
  nc_status (*prepare_e)(nc_tune_backend *b, const float *e, size_t ne);
  // Uploads A, B and sizes C for shape s.
  nc_status (*prepare)(nc_tune_backend *b, const nc_tune_shape *s, const float *a, size_t na, const float *bm, size_t nb, size_t nc);
  // Runs knobs on the prepared shape: one warm-up then reps timed runs
  // (*sec = the fastest); C (nc floats) receives the last output (ReLU^2
  // shapes: C then D, nc = 2 batch m n; bf16 C widened to fp32).
  nc_status (*run)(nc_tune_backend *b, const nc_tune_shape *s, const void *knobs, int reps, double *sec, float *c);
  void (*release)(nc_tune_backend *b);
};
nc_status nc_tune_backend_cpu(const nc_device *d, bool wall_time, nc_tune_backend *out);
nc_status nc_tune_backend_ocl(const nc_device *d, nc_tune_backend *out);

#endif
