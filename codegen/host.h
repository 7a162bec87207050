// What LLVM knows about the host CPU: name, features, target triple. The CPU
// backend picks AVX-512 or AVX2 code paths from these.
#ifndef NC_CODEGEN_HOST_H
#define NC_CODEGEN_HOST_H

#include <stdbool.h>

#include "support/status.h"

typedef struct {
  char triple[128];
  char cpu[64];
  char features[4096];  // "+avx2,+avx512f,..." as LLVM reports them
  char llvm_version[32];
  bool avx2, avx512f, avx512bf16, fma;
} nc_host_cpu;

nc_status nc_host_cpu_query(nc_host_cpu *out);

#endif
