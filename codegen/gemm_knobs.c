// GEMM knobs without LLVM: defaults per CPU, validation, workspace size. The
// executor of ahead-of-time plans (runtime/aot.h) links this file alone, so it
// must not include any LLVM header.
#include "codegen/gemm.h"

#define NC_GEMM_MAX_ACC 32  // accumulators the micro-kernel may keep (as in gemm.c)

nc_gemm_knobs nc_gemm_knobs_default(const nc_host_cpu *cpu) {
  nc_gemm_knobs k;
  if (cpu && cpu->avx512f) {
    // Zen 5: 32 zmm, 2 FMA pipes of 4-cycle latency. 6x64 = 24 accumulators
    // + 4 B vectors + a broadcast; kc*nc*4 = 768 KB of packed B stays in the
    // 1 MB L2 (order 1). Measured against 8x48, 12x32, 14x32, 7x64, 4x96 and
    // other kc/mc/nc: see docs/performance.md, "GEMM (CPU)".
    k = (nc_gemm_knobs){.vw = 16, .mr = 6, .nr = 64, .kc = 384, .mc = 120, .nc = 512,
                        .ku = 4, .order = 1, .prefetch_b = 0};
  } else {
    // AVX2: 16 ymm. 6x16 = 12 accumulators + 2 B vectors + a broadcast.
    k = (nc_gemm_knobs){.vw = 8, .mr = 6, .nr = 16, .kc = 256, .mc = 120, .nc = 512,
                        .ku = 4, .order = 1, .prefetch_b = 0};
  }
  return k;
}

nc_status nc_gemm_knobs_check(const nc_gemm_knobs *k) {
  if (k->vw != 4 && k->vw != 8 && k->vw != 16)
    return nc_errorf(NC_E_INVALID, "gemm knobs: vw %d is not 4, 8 or 16", k->vw);
  if (k->mr < 1 || k->nr < k->vw || k->nr % k->vw)
    return nc_errorf(NC_E_INVALID, "gemm knobs: mr %d / nr %d (nr must be a multiple of vw %d)",
                     k->mr, k->nr, k->vw);
  if (k->mr * (k->nr / k->vw) > NC_GEMM_MAX_ACC)
    return nc_errorf(NC_E_INVALID, "gemm knobs: mr*nr/vw = %d accumulators (max %d)",
                     k->mr * (k->nr / k->vw), NC_GEMM_MAX_ACC);
  if (k->kc < 1 || k->mc < k->mr || k->mc % k->mr || k->nc < k->nr || k->nc % k->nr)
    return nc_errorf(NC_E_INVALID,
                     "gemm knobs: kc %d mc %d nc %d (mc a multiple of mr %d, nc of nr %d)", k->kc,
                     k->mc, k->nc, k->mr, k->nr);
  if (k->ku < 1 || k->ku > 16)
    return nc_errorf(NC_E_INVALID, "gemm knobs: ku %d is not in 1..16", k->ku);
  if (k->order != 0 && k->order != 1)
    return nc_errorf(NC_E_INVALID, "gemm knobs: order %d is not 0 or 1", k->order);
  if (k->prefetch_b < 0 || k->prefetch_b > 64)
    return nc_errorf(NC_E_INVALID, "gemm knobs: prefetch_b %d is not in 0..64", k->prefetch_b);
  return NC_OK;
}

// Floats of one thread's workspace slice: packed A block then packed B panel,
// each rounded to 64 bytes.
static int64_t nc_gemm_ws_floats(const nc_gemm_knobs *k) {
  int64_t a = (int64_t)k->mc * k->kc, b = (int64_t)k->kc * k->nc;
  return (a + 15) / 16 * 16 + (b + 15) / 16 * 16;
}

size_t nc_gemm_workspace_size(const nc_gemm_knobs *k, int nthreads) {
  return (size_t)nc_gemm_ws_floats(k) * sizeof(float) * (size_t)(nthreads < 1 ? 1 : nthreads);
}

size_t nc_gemm_sync_len(const nc_gemm_knobs *k, int64_t batch, int64_t m, int64_t n) {
  int64_t nic = (m + k->mc - 1) / k->mc, njc = (n + k->nc - 1) / k->nc;
  return 1 + (size_t)(batch < 1 ? 1 : batch) * (size_t)(njc < 1 ? 1 : njc) * (size_t)(nic < 1 ? 1 : nic);
}

size_t nc_gemm_sync_want(const nc_gemm_knobs *k, int nthreads, int64_t batch, int64_t m, int64_t n, bool sym) {
  if (nthreads < 2 || sym || m <= 16) return 0;  // one thread, the symmetric split, the skinny path
  size_t len = nc_gemm_sync_len(k, batch, m, n);
  return len - 1 >= (size_t)nthreads ? len : 0;  // fewer C blocks than threads: the static split cuts finer
}

// ---- the knob table (codegen/tune.h): what the autotuner searches ----------
#include "codegen/tune.h"

static nc_status nc_gemm_knobs_check_any(const void *k) { return nc_gemm_knobs_check(k); }

// vw is fixed by the CPU (the default's); the search values keep mc a
// multiple of every mr and nc of every nr, so most combinations are valid.
static const nc_knob nc_gemm_knobs_table[] = {
    {"vw", offsetof(nc_gemm_knobs, vw), 4, 16, 0, {0}, "floats per vector register (fixed by the CPU)"},
    {"mr", offsetof(nc_gemm_knobs, mr), 1, 32, 5, {4, 6, 8, 12, 14}, "rows of the register block"},
    {"nr", offsetof(nc_gemm_knobs, nr), 4, 512, 5, {16, 32, 48, 64, 96}, "columns of the register block (multiple of vw)"},
    {"kc", offsetof(nc_gemm_knobs, kc), 1, 8192, 6, {128, 192, 256, 384, 512, 768}, "K depth of a packed panel"},
    {"mc", offsetof(nc_gemm_knobs, mc), 1, 8192, 6, {48, 96, 120, 168, 240, 336}, "rows of A per packed block (multiple of mr)"},
    {"nc", offsetof(nc_gemm_knobs, nc), 1, 65536, 6, {192, 384, 576, 768, 1152, 1536}, "columns of B per packed panel (multiple of nr)"},
    {"ku", offsetof(nc_gemm_knobs, ku), 1, 16, 4, {1, 2, 4, 8}, "unroll of the micro-kernel's k loop"},
    {"order", offsetof(nc_gemm_knobs, order), 0, 1, 2, {0, 1}, "0: B panel reused from L1; 1: A panel reused from L1"},
    {"prefetch_b", offsetof(nc_gemm_knobs, prefetch_b), 0, 64, 3, {0, 8, 16}, "prefetch packed B this many k steps ahead"},
};

const nc_knob_space nc_gemm_knob_space = {"cpu.gemm_f32", 9, nc_gemm_knobs_table, sizeof(nc_gemm_knobs), nc_gemm_knobs_check_any};
