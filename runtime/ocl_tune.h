// The OpenCL device and the tuning database (runtime/tunedb.h): the tuned
// GEMM kernels a program gets. runtime/ocl_device.c adds them to the plan's
// program next to the default GEMM variants and launches them for exactly
// their shape.
#ifndef NC_RUNTIME_OCL_TUNE_H
#define NC_RUNTIME_OCL_TUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "codegen/ocl_emit.h"
#include "codegen/tune.h"
#include "runtime/ocl_device.h"
#include "support/buf.h"

typedef struct {
  int variant;  // ta*2 + tb
  int64_t batch, m, n, k;
  nc_ocl_knobs knobs;
  char name[40];  // kernel name in the program (shared by equal knobs); pipelined: the base of its
                  // variants' names, "nc_gemmp_t<set>_f<flags>" (NC_OCL_GEMMP_*)
  bool packed;    // the pipelined kernel (knob space ocl.gemm_bf16p), matched by form for f32 and bf16 buffers
  int set;        // index of the first entry with these knobs
} nc_ocl_tuned_gemm;

#define NC_OCL_MAX_TUNED 64

// Entries of the default database for this device and driver, the GEMM
// variants in need[8] (ta*2 + tb, + NC_OCL_GEMM_BF16) and the template def selects (def->gemm_tc: bf16;
// with def->tc_stages > 0 the pipelined kernel, keyed by form: need[v] or need[v | bf16]),
// applied over def; stale or invalid entries are warned about and skipped,
// entries equal to def too. Returns how many were written to out.
int nc_ocl_tuned_collect(const nc_ocl_device_desc *d, const nc_ocl_knobs *def, const bool need[8], nc_ocl_tuned_gemm *out, int max);
// Appends each distinct tuned kernel's source to src (not the pipelined ones: runtime/ocl_device.c).
nc_status nc_ocl_tuned_emit(const nc_ocl_tuned_gemm *t, int n, nc_buf *src);

// Flash-attention blocks tuned for one padded head-dim pair of a program (space ocl.flash): launched
// for calls of exactly their shape (runtime/ocl_launch.c), kernels "nc_fa_<what>_<dp>_<dvp>_t<set>".
typedef struct {
  nc_ocl_flash_shape shape;
  nc_ocl_attn_blocks bl;
  int set;  // kernel set in the program (equal blocks share one)
} nc_ocl_tuned_flash;

#define NC_OCL_MAX_TUNED_FLASH 8

// Entries "ocl.flash mode=<tc> dp=<dp> dvp=<dvp>" of the default database for this device and driver,
// applied over def and checked (nc_ocl_attn_blocks_check); stale or invalid ones are warned about and
// skipped, entries equal to def too. *nsets: distinct block sets. Returns how many were written.
int nc_ocl_flash_collect(const nc_ocl_device_desc *d, int tc, int dp, int dvp, const nc_ocl_attn_blocks *def, nc_ocl_tuned_flash *out,
                         int max, int *nsets);

// The same over an open database (warnings go to db: nc_tunedb_warning).
typedef struct nc_tunedb nc_tunedb;
int nc_ocl_flash_select(nc_tunedb *db, const nc_ocl_device_desc *d, int tc, int dp, int dvp, const nc_ocl_attn_blocks *def,
                        nc_ocl_tuned_flash *out, int max, int *nsets);

// Work-groups of the loop kernels (space ocl.loop, codegen/tune.h) by class and size bucket, for this
// device and driver: wg[slot] > 0 where an entry of the class gives a value other than def's (checked:
// the space's range and check, a power of two, at most max_wg, the device's largest work-group, when
// max_wg > 0); stale or invalid entries are warned about and skipped. Returns the number of slots set.
//   NC_OCL_LOOP_ELEMENTWISE "ocl.loop class=loop", "items=2^k": loop_wg, chosen per launch by the
//     bucket of its work-items (nc_ocl_loop_bucket; slot = k, NC_OCL_LOOP_BUCKETS slots).
//   NC_OCL_LOOP_ROW "ocl.loop class=row", "cols=2^k" / "cols=var": row_wg per row-length bucket
//     (nc_ocl_row_bucket; slot nc_ocl_row_slot), compiled into the row kernel's source.
//   NC_OCL_LOOP_REDUCE "ocl.loop class=reduce", "items=2^k" / "items=var": reduce_wg per bucket of the
//     reduced element count (nc_ocl_reduce_items; slot nc_ocl_row_slot), compiled into the source.
// runtime/ocl_device.c emits a row or reduction kernel of a tuned bucket with a copy of the knobs, so
// the program source changes only where such entries exist.
#define NC_OCL_LOOP_BUCKETS 48
#define NC_OCL_ROW_SLOTS (NC_OCL_LOOP_BUCKETS + 1)
#define NC_OCL_WG_SLOTS NC_OCL_ROW_SLOTS  // wg[] has room for any class
static inline int nc_ocl_row_slot(int bucket) { return bucket < 0 || bucket >= NC_OCL_LOOP_BUCKETS ? NC_OCL_LOOP_BUCKETS : bucket; }
// The default database (NULL, disabled: nothing set).
int nc_ocl_wg_collect(const nc_ocl_device_desc *d, const nc_ocl_knobs *def, nc_ocl_loop_class cls, int max_wg, int wg[NC_OCL_WG_SLOTS]);
// An open database (warnings go to db: nc_tunedb_warning).
int nc_ocl_wg_select(nc_tunedb *db, const nc_ocl_device_desc *d, const nc_ocl_knobs *def, nc_ocl_loop_class cls, int max_wg,
                     int wg[NC_OCL_WG_SLOTS]);

#endif
