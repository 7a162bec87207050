#include "codegen/host.h"

#include <string.h>

#ifdef NC_HAVE_LLVM
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <stdio.h>
#include <string.h>

static bool nc_has_feature(const char *features, const char *name) {
  char want[64];
  snprintf(want, sizeof want, "+%s", name);
  size_t n = strlen(want);
  for (const char *p = strstr(features, want); p; p = strstr(p + 1, want))
    if (p[n] == ',' || p[n] == 0) return true;
  return false;
}

nc_status nc_host_cpu_query(nc_host_cpu *out) {
  memset(out, 0, sizeof *out);
  char *triple = LLVMGetDefaultTargetTriple();
  char *cpu = LLVMGetHostCPUName();
  char *feat = LLVMGetHostCPUFeatures();
  if (!triple || !cpu || !feat) {
    LLVMDisposeMessage(triple);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(feat);
    return nc_errorf(NC_E_INTERNAL, "LLVM could not describe the host CPU");
  }
  snprintf(out->triple, sizeof out->triple, "%s", triple);
  snprintf(out->cpu, sizeof out->cpu, "%s", cpu);
  snprintf(out->features, sizeof out->features, "%s", feat);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  unsigned major, minor, patch;
  LLVMGetVersion(&major, &minor, &patch);
  snprintf(out->llvm_version, sizeof out->llvm_version, "%u.%u.%u", major, minor, patch);
  out->avx2 = nc_has_feature(out->features, "avx2");
  out->avx512f = nc_has_feature(out->features, "avx512f");
  out->avx512bf16 = nc_has_feature(out->features, "avx512bf16");
  out->fma = nc_has_feature(out->features, "fma");
  return NC_OK;
}
#else
nc_status nc_host_cpu_query(nc_host_cpu *out) {
  memset(out, 0, sizeof *out);
  return nc_errorf(NC_E_UNSUPPORTED, "this build has no LLVM (configured with -DNC_WITH_LLVM=OFF)");
}
#endif
