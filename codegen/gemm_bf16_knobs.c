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

// ---- the knob table (codegen/tune.h): what the autotuner searches ----------
#include "codegen/tune.h"

static nc_status nc_gemm_bf16_knobs_check_any(const void *k) { return nc_gemm_bf16_knobs_check(k); }

// The fp32 table's knobs (codegen/gemm_knobs.c) with vw fixed at 16 and kc
// counting k: a packed panel of kc k holds kc/2 32-bit pairs, so kc runs about
// twice fp32's for the same bytes (even values only: the check). Every search
// value compiles and matches a naive loop in the bf16 emitter with bf16 memory
// (tests/test_tune.c, bf16_knob_table_values_compile_and_match).
static const nc_knob nc_gemm_bf16_knobs_table[] = {
    {"vw", offsetof(nc_gemm_knobs, vw), 16, 16, 0, {0}, "floats per vector register (16: AVX-512)"},
    {"mr", offsetof(nc_gemm_knobs, mr), 1, 32, 5, {4, 6, 8, 12, 14}, "rows of the register block"},
    {"nr", offsetof(nc_gemm_knobs, nr), 16, 512, 5, {16, 32, 48, 64, 96}, "columns of the register block (multiple of 16)"},
    {"kc", offsetof(nc_gemm_knobs, kc), 2, 16384, 6, {256, 384, 512, 768, 1024, 1536}, "K depth of a packed panel (even: k pairs)"},
    {"mc", offsetof(nc_gemm_knobs, mc), 1, 8192, 6, {48, 96, 120, 168, 240, 336}, "rows of A per packed block (multiple of mr)"},
    {"nc", offsetof(nc_gemm_knobs, nc), 16, 65536, 6, {192, 384, 576, 768, 1152, 1536}, "columns of B per packed panel (multiple of nr)"},
    {"ku", offsetof(nc_gemm_knobs, ku), 1, 16, 4, {1, 2, 4, 8}, "unroll of the micro-kernel's k loop"},
    {"order", offsetof(nc_gemm_knobs, order), 0, 1, 2, {0, 1}, "0: B panel reused from L1; 1: A panel reused from L1"},
    {"prefetch_b", offsetof(nc_gemm_knobs, prefetch_b), 0, 64, 3, {0, 8, 16}, "prefetch packed B this many k steps ahead"},
};

const nc_knob_space nc_gemm_bf16_knob_space = {"cpu.gemm_bf16", 9, nc_gemm_bf16_knobs_table, sizeof(nc_gemm_knobs),
                                               nc_gemm_bf16_knobs_check_any};
