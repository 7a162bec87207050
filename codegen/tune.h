// Knob spaces of the code templates: what the autotuner (`nanochat tune`,
// runtime/tuner.h) may change and what the tuning database (runtime/tunedb.h)
// may hold. Each template declares its table next to its defaults:
//   nc_gemm_knob_space      the CPU GEMM (codegen/gemm.h), in codegen/gemm_knobs.c
//   nc_gemm_bf16_knob_space the CPU bf16 GEMM (codegen/gemm_bf16.h), in codegen/gemm_bf16_knobs.c
//   nc_ocl_gemm_knob_space  the OpenCL fp32 tiled GEMM (codegen/ocl_emit.h), codegen/ocl_knobs.c
//   nc_ocl_tc_knob_space    the OpenCL bf16 tensor-core GEMM, register-staged (tc_stages 0), codegen/ocl_knobs.c
//   nc_ocl_tcp_knob_space   the OpenCL bf16 tensor-core GEMM, pipelined (tc_stages > 0: mma.sync or wgmma), codegen/ocl_knobs.c
//   nc_ocl_flash_knob_space the OpenCL flash-attention blocks (codegen/ocl_attn.h), codegen/ocl_knobs.c
//   nc_ocl_loop_knob_space  the OpenCL loop kernels' work-group sizes (loop_wg, row_wg, reduce_wg), codegen/ocl_knobs.c
// A knob is an int field of the template's knob struct with a valid range
// (every database entry is checked against it) and the values the tuner
// searches; the template's own check adds the constraints between knobs.
// docs/tuning.md lists the knobs.
#ifndef NC_CODEGEN_TUNE_H
#define NC_CODEGEN_TUNE_H

#include <stddef.h>
#include <stdint.h>

#include "codegen/ocl_attn.h"
#include "codegen/ocl_emit.h"
#include "support/status.h"

#define NC_KNOB_MAX_SEARCH 12
#define NC_KNOB_MAX 16

typedef struct {
  const char *name;  // key in the tuning database
  size_t offset;     // of its int field in the knob struct
  int min, max;      // valid range
  int nsearch;       // values the tuner tries (0: fixed at the device default)
  int search[NC_KNOB_MAX_SEARCH];
  const char *doc;
} nc_knob;

typedef struct {
  const char *name;  // the template: "cpu.gemm_f32", "cpu.gemm_bf16", "ocl.gemm_f32", "ocl.gemm_bf16", "ocl.gemm_bf16p"
  int nknobs;
  const nc_knob *knobs;
  size_t size;                             // sizeof the knob struct
  nc_status (*check)(const void *knobs);   // the template's constraints between knobs
} nc_knob_space;

extern const nc_knob_space nc_gemm_knob_space;
extern const nc_knob_space nc_gemm_bf16_knob_space;
extern const nc_knob_space nc_ocl_gemm_knob_space;
extern const nc_knob_space nc_ocl_tc_knob_space;
extern const nc_knob_space nc_ocl_tcp_knob_space;
extern const nc_knob_space nc_ocl_flash_knob_space;
extern const nc_knob_space nc_ocl_loop_knob_space;

// The flash-attention template's knobs (space ocl.flash): the blocks of its three kernels, and the
// context its check needs (not knobs: the kernel signature says them): the tile mode (0 fp32, 1
// mma.sync, 2 emulated) and the padded head dims.
typedef struct {
  nc_ocl_attn_blocks bl;
  int tc, dp, dvp;
} nc_ocl_flash_knobs;
// The mode's default blocks (nc_ocl_attn_blocks_of) with that context.
void nc_ocl_flash_knobs_default(int tc, int dp, int dvp, nc_ocl_flash_knobs *k);
// "ocl.flash mode=<tc> dp=<dp> dvp=<dvp>" (the database's kernel signature).
void nc_ocl_flash_signature(int tc, int dp, int dvp, char *buf, size_t n);
// "batch=B tq=Tq tk=Tk hq=Hq hkv=Hkv causal=C window=W" (the database's shape) and back (false: malformed).
typedef struct {
  int64_t batch, tq, tk, hq, hkv, window;
  int causal;
} nc_ocl_flash_shape;
void nc_ocl_flash_shape_str(const nc_ocl_flash_shape *s, char *buf, size_t n);
bool nc_ocl_flash_shape_parse(const char *str, nc_ocl_flash_shape *out);

// The loop kernels' work-group sizes (space ocl.loop), keyed by kernel class and a size bucket, not
// per kernel (a training step has hundreds of loop kernels): "ocl.loop class=loop" (one work-item
// per element: loop_wg, chosen per launch, the source does not change) by the bucket of its
// work-items, "items=2^k" for 2^k <= items < 2^(k+1) (k <= 40); "ocl.loop class=row" (row kernels:
// row_wg work-items per row, compiled into the kernel's source) by the bucket of its row length,
// "cols=2^k" or "cols=var" (below); "ocl.loop class=reduce" (whole-buffer reductions: one work-group
// of reduce_wg, compiled into the source) by the bucket of the reduced element count, "items=2^k" or
// "items=var". An entry stores every knob of the space; a class reads its own.
typedef enum { NC_OCL_LOOP_ELEMENTWISE, NC_OCL_LOOP_ROW, NC_OCL_LOOP_REDUCE } nc_ocl_loop_class;
void nc_ocl_loop_signature(nc_ocl_loop_class cls, char *buf, size_t n);
int nc_ocl_loop_bucket(int64_t items);  // floor(log2(items)), 0 for items < 2
// Row kernels (class=row) are keyed by their row length: the extent of the loops inside the last
// collapsed loop (the largest, where a row has several), "cols=2^k" (nc_ocl_loop_bucket) where every
// such extent is a constant, "cols=var" where one depends on a symbol (NC_OCL_ROW_VAR: one bucket for
// all of them; the program is compiled before symbols are bound).
#define NC_OCL_ROW_VAR (-1)
// The row length of row kernel k whose first ncollapse loops are collapsed: > 0, or -1 when symbolic.
int64_t nc_ocl_row_cols(const nc_kernel *k, int ncollapse);
// nc_ocl_loop_bucket(cols), or NC_OCL_ROW_VAR for cols < 1 (also the reductions' bucket of their items).
int nc_ocl_row_bucket(int64_t cols);
// "cols=2^k" / "cols=var" and back (false: malformed, or k outside 0..40).
void nc_ocl_row_shape_str(int bucket, char *buf, size_t n);
bool nc_ocl_row_shape_parse(const char *str, int *bucket);
// Whole-buffer reductions (class=reduce, L->reduce_wg > 0) are keyed by the reduced loop's element
// count: > 0 when its bounds are constants, -1 when they depend on a symbol (or L is no reduction).
int64_t nc_ocl_reduce_items(const nc_kernel *k, const nc_ocl_launch *L);
// "items=2^k" / "items=var" and back (false: malformed, or k outside 0..40).
void nc_ocl_reduce_shape_str(int bucket, char *buf, size_t n);
bool nc_ocl_reduce_shape_parse(const char *str, int *bucket);
// The work-group a whole-buffer reduction gets with knobs k (reduce_wg, else loop_wg, rounded down
// to a power of two; 1: serial).
int nc_ocl_reduce_wg_of(const nc_ocl_knobs *k);

// The pipelined bf16 GEMM's knobs the tuner starts from off NVIDIA (the emulation, gemm_tc 2): the
// device defaults (nc_ocl_knobs_default) with tc_stages 2 and tc_bk 32 where they have no ring.
void nc_ocl_tcp_emulated_default(bool gpu, nc_ocl_knobs *k);

// The space named name, or NULL.
const nc_knob_space *nc_knob_space_find(const char *name);
// Index of the knob called name in s, or -1.
int nc_knob_find(const nc_knob_space *s, const char *name);
int nc_knob_get(const nc_knob_space *s, const void *knobs, int i);
void nc_knob_set(const nc_knob_space *s, void *knobs, int i, int v);
// Knob i's range, then the template's own check.
nc_status nc_knob_check(const nc_knob_space *s, const void *knobs);
// "mr=6 nr=64 ..." (the searched knobs) into buf.
void nc_knob_format(const nc_knob_space *s, const void *knobs, char *buf, size_t n);

// Launch geometry of the OpenCL GEMM kernel (fp32 tiles or, with gemm_tc,
// the tensor-core blocks) for C of M x N x batch, as runtime/ocl_device.c
// launches it.
void nc_ocl_gemm_geometry(const nc_ocl_knobs *kn, int64_t m, int64_t n, int64_t batch, size_t gws[3], size_t lws[3]);
// The GEMM variant emitted under another kernel name (programs that hold
// several knob sets of one variant): NC_E_INTERNAL if the name is not found.
nc_status nc_ocl_emit_gemm_named(const nc_ocl_knobs *kn, int variant, const char *name, nc_buf *out);
// The pipelined bf16 GEMM kernel of variant flags (NC_OCL_GEMMP_*) emitted under another name (a
// per-shape tuned knob set next to the program's default one): NC_E_INTERNAL if the name is not found.
nc_status nc_ocl_emit_gemm_packed_named(const nc_ocl_knobs *kn, int flags, const char *name, nc_buf *out);

#endif
