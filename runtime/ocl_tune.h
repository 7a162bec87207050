// The OpenCL device and the tuning database (runtime/tunedb.h): the tuned
// GEMM kernels a program gets. runtime/ocl_device.c adds them to the plan's
// program next to the default GEMM variants and launches them for exactly
// their shape.
#ifndef NC_RUNTIME_OCL_TUNE_H
#define NC_RUNTIME_OCL_TUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "codegen/ocl_emit.h"
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

#endif
