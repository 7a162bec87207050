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
  char name[40];  // kernel name in the program (shared by equal knobs)
} nc_ocl_tuned_gemm;

#define NC_OCL_MAX_TUNED 64

// Entries of the default database for this device and driver, the GEMM
// variants in need[4] and the template def selects (def->gemm_tc: bf16),
// applied over def; stale or invalid entries are warned about and skipped,
// entries equal to def too. Returns how many were written to out.
int nc_ocl_tuned_collect(const nc_ocl_device_desc *d, const nc_ocl_knobs *def, const bool need[4], nc_ocl_tuned_gemm *out, int max);
// Appends each distinct tuned kernel's source to src.
nc_status nc_ocl_tuned_emit(const nc_ocl_tuned_gemm *t, int n, nc_buf *src);

#endif
