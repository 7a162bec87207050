// bf16 GEMM knobs without LLVM: support check, defaults, validation,
// workspace size (see codegen/gemm_bf16.h). The CPU executor (runtime/cpu.c,
// also linked by ahead-of-time plans without LLVM) sizes its workspace with
// these, so this file must not include any LLVM header.
#include "codegen/gemm_bf16.h"

bool nc_gemm_bf16_supported(const nc_host_cpu *cpu) { return cpu && cpu->avx512f && cpu->avx512bf16; }

nc_gemm_knobs nc_gemm_bf16_knobs_default(const nc_host_cpu *cpu) {
  (void)cpu;
  // Zen 5: same 6x64 block as fp32 (24 accumulators + 4 B vectors + a
  // broadcast). kc 768 k = 384 pairs: the packed B panel (384 x 512 words =
  // 768 KB) is the same size in bytes as fp32's kc 384, so it still fits the
  // 1 MB L2, with half as many passes over C. See docs/performance.md.
  return (nc_gemm_knobs){.vw = 16, .mr = 6, .nr = 64, .kc = 768, .mc = 120, .nc = 512,
                         .ku = 4, .order = 1, .prefetch_b = 0};
}

nc_status nc_gemm_bf16_knobs_check(const nc_gemm_knobs *k) {
  if (k->vw != 16) return nc_errorf(NC_E_INVALID, "bf16 gemm knobs: vw %d is not 16", k->vw);
  NC_TRY(nc_gemm_knobs_check(k));
  if (k->kc % 2)
    return nc_errorf(NC_E_INVALID, "bf16 gemm knobs: kc %d is odd (k pairs must not straddle blocks)",
                     k->kc);
  return NC_OK;
}

int64_t nc_gemm_bf16_ws_words(const nc_gemm_knobs *k) {
  int64_t kp = (k->kc + 1) / 2;
  int64_t a = (int64_t)k->mc * kp, b = kp * k->nc;
  return (a + 15) / 16 * 16 + (b + 15) / 16 * 16;
}

size_t nc_gemm_bf16_workspace_size(const nc_gemm_knobs *k, int nthreads) {
  return (size_t)nc_gemm_bf16_ws_words(k) * 4 * (size_t)(nthreads < 1 ? 1 : nthreads);
}
