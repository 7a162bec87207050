// The OpenCL GEMM templates' knob tables (codegen/tune.h), their launch
// geometry and the renamed emission used for per-shape tuned kernels. The
// templates themselves are in codegen/ocl_emit.c.
#include <stdio.h>
#include <string.h>

#include "codegen/ocl_emit.h"
#include "codegen/tune.h"

static nc_status nc_ocl_knobs_check_any(const void *k) { return nc_ocl_knobs_check(k); }

#define NC_OK_FIELD(f) offsetof(nc_ocl_knobs, f)

// The fp32 tiled GEMM: a TM x TN tile of C per work-group of (TN/WN) x (TM/WM)
// work-items, K in TK-deep local-memory slices.
static const nc_knob nc_ocl_gemm_knobs[] = {
    {"gemm_tm", NC_OK_FIELD(gemm_tm), 16, 256, 4, {16, 32, 64, 128}, "rows of C per work-group"},
    {"gemm_tn", NC_OK_FIELD(gemm_tn), 16, 256, 4, {16, 32, 64, 128}, "columns of C per work-group"},
    {"gemm_tk", NC_OK_FIELD(gemm_tk), 4, 64, 4, {8, 16, 32, 64}, "depth of the local-memory tiles"},
    {"gemm_wm", NC_OK_FIELD(gemm_wm), 1, 16, 4, {1, 2, 4, 8}, "rows of C per work-item"},
    {"gemm_wn", NC_OK_FIELD(gemm_wn), 1, 16, 4, {1, 2, 4, 8}, "columns of C per work-item"},
};

const nc_knob_space nc_ocl_gemm_knob_space = {"ocl.gemm_f32", 5, nc_ocl_gemm_knobs, sizeof(nc_ocl_knobs), nc_ocl_knobs_check_any};

// The bf16 tensor-core GEMM (mma.sync m16n8k16): BM x BN blocks of C per
// work-group, WM x WN per warp, K in BK steps.
static const nc_knob nc_ocl_tc_knobs[] = {
    {"tc_bm", NC_OK_FIELD(tc_bm), 16, 256, 5, {32, 64, 128, 192, 256}, "rows of C per work-group"},
    {"tc_bn", NC_OK_FIELD(tc_bn), 8, 256, 5, {32, 64, 128, 192, 256}, "columns of C per work-group"},
    {"tc_wm", NC_OK_FIELD(tc_wm), 16, 128, 4, {16, 32, 64, 128}, "rows of C per warp (multiple of 16)"},
    {"tc_wn", NC_OK_FIELD(tc_wn), 8, 128, 5, {8, 16, 32, 64, 128}, "columns of C per warp (multiple of 8)"},
    {"tc_bk", NC_OK_FIELD(tc_bk), 16, 64, 4, {16, 32, 48, 64}, "k-step (multiple of 16)"},
};

const nc_knob_space nc_ocl_tc_knob_space = {"ocl.gemm_bf16", 5, nc_ocl_tc_knobs, sizeof(nc_ocl_knobs), nc_ocl_knobs_check_any};

// The pipelined bf16 GEMM (tc_stages > 0: packed or in-place bf16 operands, a cp.async ring,
// split-K): the mma.sync kernel (tc_wg 0: tc_wm x tc_wn per warp, fixed at the device default)
// or the Hopper wgmma kernel (tc_wg 1/2: a warpgroup per 64 rows; nc_ocl_wgmma_check).
static const nc_knob nc_ocl_tcp_knobs[] = {
    {"tc_bm", NC_OK_FIELD(tc_bm), 16, 256, 4, {64, 128, 192, 256}, "rows of C per work-group"},
    {"tc_bn", NC_OK_FIELD(tc_bn), 8, 256, 5, {64, 96, 128, 192, 256}, "columns of C per work-group"},
    {"tc_bk", NC_OK_FIELD(tc_bk), 16, 64, 3, {16, 32, 64}, "k-step (wgmma: 16, 32 or 64; mma.sync: 32 or 64)"},
    {"tc_stages", NC_OK_FIELD(tc_stages), 1, 8, 5, {2, 3, 4, 5, 6}, "slots of the shared-memory ring (mma.sync 2..4, wgmma 2..8)"},
    {"tc_wg", NC_OK_FIELD(tc_wg), 0, 2, 3, {0, 1, 2}, "0 mma.sync; 1 wgmma, each k-step waited for; 2 one wgmma group in flight"},
    {"tc_wm", NC_OK_FIELD(tc_wm), 16, 128, 0, {0}, "rows of C per warp (mma.sync; fixed)"},
    {"tc_wn", NC_OK_FIELD(tc_wn), 8, 128, 0, {0}, "columns of C per warp (mma.sync; fixed)"},
};

static nc_status nc_ocl_tcp_check(const void *p) {
  const nc_ocl_knobs *k = p;
  if (k->tc_stages < 1) return nc_errorf(NC_E_INVALID, "OpenCL knob tc_stages=%d: the pipelined kernel needs a ring (tc_stages >= 2)", k->tc_stages);
  if (!k->gemm_tc) return nc_errorf(NC_E_INVALID, "OpenCL knob gemm_tc=0: the pipelined kernel is the bf16 tensor-core GEMM (gemm_tc 1 or 2)");
  return nc_ocl_knobs_check(k);  // nc_ocl_tc_check: the mma.sync ring's rules, or nc_ocl_wgmma_check with tc_wg
}

void nc_ocl_tcp_emulated_default(bool gpu, nc_ocl_knobs *k) {
  nc_ocl_knobs_default(gpu, k);
  k->gemm_tc = 2;
  if (!k->tc_stages) k->tc_stages = 2, k->tc_bk = 32;  // the CPU defaults' blocks with a 2-slot ring (k-step 32)
}

const nc_knob_space nc_ocl_tcp_knob_space = {"ocl.gemm_bf16p", 7, nc_ocl_tcp_knobs, sizeof(nc_ocl_knobs), nc_ocl_tcp_check};

// Flash attention (codegen/ocl_attn.h): rows of queries per forward / dQ work-group (bm, bmq; one warp
// per 16), keys per step (bn), keys per dK/dV work-group (km), queries per dK/dV step (qn), stages of
// the streamed tiles (st). The check is the template's: nc_ocl_attn_blocks_check at the signature's
// mode and padded head dims (local memory, accumulators).
#define NC_FK_FIELD(f) offsetof(nc_ocl_flash_knobs, bl.f)
static const nc_knob nc_ocl_flash_knobs_tab[] = {
    {"bm", NC_FK_FIELD(bm), 16, 128, 3, {32, 64, 128}, "query rows per forward work-group (multiple of 16)"},
    {"bmq", NC_FK_FIELD(bmq), 16, 128, 3, {32, 64, 128}, "query rows per dQ work-group (multiple of 16)"},
    {"bn", NC_FK_FIELD(bn), 16, 64, 3, {16, 32, 64}, "keys per step of the forward and dQ (multiple of 16; fp32 <= 32)"},
    {"km", NC_FK_FIELD(km), 16, 128, 3, {32, 64, 128}, "key rows per dK/dV work-group (multiple of 16)"},
    {"qn", NC_FK_FIELD(qn), 16, 64, 3, {16, 32, 64}, "queries per dK/dV step (multiple of 16; fp32 <= 32)"},
    {"st", NC_FK_FIELD(st), 1, 2, 2, {1, 2}, "stages of the streamed tiles (2: the next block copied during this one)"},
};

static nc_status nc_ocl_flash_check(const void *p) {
  const nc_ocl_flash_knobs *k = p;
  return nc_ocl_attn_blocks_check(k->tc, k->dp, k->dvp, &k->bl);
}

const nc_knob_space nc_ocl_flash_knob_space = {"ocl.flash", 6, nc_ocl_flash_knobs_tab, sizeof(nc_ocl_flash_knobs), nc_ocl_flash_check};

void nc_ocl_flash_knobs_default(int tc, int dp, int dvp, nc_ocl_flash_knobs *k) {
  memset(k, 0, sizeof *k);
  nc_ocl_attn_blocks_of(tc, &k->bl);
  k->tc = tc, k->dp = dp, k->dvp = dvp;
}

void nc_ocl_flash_signature(int tc, int dp, int dvp, char *buf, size_t n) { snprintf(buf, n, "ocl.flash mode=%d dp=%d dvp=%d", tc, dp, dvp); }

void nc_ocl_flash_shape_str(const nc_ocl_flash_shape *s, char *buf, size_t n) {
  snprintf(buf, n, "batch=%lld tq=%lld tk=%lld hq=%lld hkv=%lld causal=%d window=%lld", (long long)s->batch, (long long)s->tq,
           (long long)s->tk, (long long)s->hq, (long long)s->hkv, s->causal, (long long)s->window);
}

bool nc_ocl_flash_shape_parse(const char *str, nc_ocl_flash_shape *out) {
  long long b, tq, tk, hq, hkv, w;
  int c, used = -1;
  if (sscanf(str, "batch=%lld tq=%lld tk=%lld hq=%lld hkv=%lld causal=%d window=%lld%n", &b, &tq, &tk, &hq, &hkv, &c, &w, &used) != 7 ||
      used < 0 || str[used] || b < 1 || tq < 1 || tk < 1 || hq < 1 || hkv < 1 || hq % hkv || (c != 0 && c != 1) || w < -1)
    return false;
  *out = (nc_ocl_flash_shape){.batch = b, .tq = tq, .tk = tk, .hq = hq, .hkv = hkv, .window = w, .causal = c};
  return true;
}

// The loop kernels' work-groups: loop_wg (elementwise loop kernels, per launch), row_wg (work-items
// per row of a row kernel; reductions round it down to a power of two) and reduce_wg (the one
// work-group of a whole-buffer reduction; 0, the default, follows loop_wg).
static const nc_knob nc_ocl_loop_knobs[] = {
    {"loop_wg", NC_OK_FIELD(loop_wg), 32, 1024, 6, {32, 64, 128, 256, 512, 1024}, "work-group of elementwise loop kernels"},
    {"row_wg", NC_OK_FIELD(row_wg), 2, 1024, 6, {32, 64, 128, 256, 512, 1024}, "work-items per row of row kernels (power of two)"},
    {"reduce_wg", NC_OK_FIELD(reduce_wg), 0, 1024, 6, {32, 64, 128, 256, 512, 1024},
     "work-group of whole-buffer reductions (power of two; 0: loop_wg's)"},
};

static nc_status nc_ocl_loop_check(const void *p) {
  const nc_ocl_knobs *k = p;
  if (k->row_wg & (k->row_wg - 1)) return nc_errorf(NC_E_INVALID, "OpenCL knob row_wg=%d: the tuned row work-group must be a power of two", k->row_wg);
  if (k->reduce_wg & (k->reduce_wg - 1))
    return nc_errorf(NC_E_INVALID, "OpenCL knob reduce_wg=%d: the tuned reduction work-group must be a power of two", k->reduce_wg);
  return nc_ocl_knobs_check(k);
}

const nc_knob_space nc_ocl_loop_knob_space = {"ocl.loop", 3, nc_ocl_loop_knobs, sizeof(nc_ocl_knobs), nc_ocl_loop_check};

void nc_ocl_loop_signature(nc_ocl_loop_class cls, char *buf, size_t n) {
  snprintf(buf, n, "ocl.loop class=%s", cls == NC_OCL_LOOP_ROW ? "row" : cls == NC_OCL_LOOP_REDUCE ? "reduce" : "loop");
}

int nc_ocl_reduce_wg_of(const nc_ocl_knobs *k) {
  int v = k->reduce_wg ? k->reduce_wg : k->loop_wg, p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

int nc_ocl_loop_bucket(int64_t items) {
  int k = 0;
  while (k < 62 && items >= (int64_t)2 << k) k++;
  return k;
}

// An index expression's value when it is a constant (integer constants, + - * and integer division).
static bool nc_ok_const(const nc_kernel *k, nc_kx x, int64_t *v) {
  const nc_kexpr *e = &k->x[x];
  int64_t a, b;
  if (e->kind == NC_KX_CONST) return *v = e->ival, true;
  if (e->kind == NC_KX_CAST) return nc_ok_const(k, e->a, v);
  if (e->kind != NC_KX_BINARY || !nc_ok_const(k, e->a, &a) || !nc_ok_const(k, e->b, &b)) return false;
  switch (e->op) {
    case NC_KOP_ADD: return *v = a + b, true;
    case NC_KOP_SUB: return *v = a - b, true;
    case NC_KOP_MUL: return *v = a * b, true;
    case NC_KOP_MAX: return *v = a > b ? a : b, true;
    case NC_KOP_MIN: return *v = a < b ? a : b, true;
    case NC_KOP_IDIV: return b > 0 && (*v = a / b, true);
    default: return false;
  }
}

int64_t nc_ocl_row_cols(const nc_kernel *k, int ncollapse) {
  if (ncollapse < 1) return -1;
  nc_ks last = k->body;
  for (int c = 1; c < ncollapse && last != NC_KS_NONE; c++) last = k->s[last].body;
  if (last == NC_KS_NONE) return -1;
  int64_t cols = 0;
  for (nc_ks s = k->s[last].body; s != NC_KS_NONE; s = k->s[s].next) {  // the row's loops (a norm: its sum, then its scale)
    if (k->s[s].kind != NC_KS_FOR) continue;
    int64_t b, e;
    if (!nc_ok_const(k, k->s[s].begin, &b) || !nc_ok_const(k, k->s[s].end, &e)) return -1;
    if (e - b > cols) cols = e - b;
  }
  return cols > 0 ? cols : -1;
}

int nc_ocl_row_bucket(int64_t cols) { return cols < 1 ? NC_OCL_ROW_VAR : nc_ocl_loop_bucket(cols); }

int64_t nc_ocl_reduce_items(const nc_kernel *k, const nc_ocl_launch *L) {
  int64_t b, e;
  if (!L->reduce_wg || !nc_ok_const(k, L->reduce_begin, &b) || !nc_ok_const(k, L->reduce_end, &e) || e <= b) return -1;
  return e - b;
}

// "<key>=2^k" / "<key>=var" (the row and reduction buckets) and back.
static void nc_ok_bucket_str(const char *key, int bucket, char *buf, size_t n) {
  if (bucket < 0) snprintf(buf, n, "%s=var", key);
  else snprintf(buf, n, "%s=2^%d", key, bucket);
}

static bool nc_ok_bucket_parse(const char *key, const char *str, int *bucket) {
  size_t kl = strlen(key);
  if (strncmp(str, key, kl) || str[kl] != '=') return false;
  str += kl + 1;
  if (!strcmp(str, "var")) return *bucket = NC_OCL_ROW_VAR, true;
  int k = -1, used = -1;
  if (sscanf(str, "2^%d%n", &k, &used) != 1 || used < 0 || str[used] || k < 0 || k > 40) return false;
  return *bucket = k, true;
}

void nc_ocl_row_shape_str(int bucket, char *buf, size_t n) { nc_ok_bucket_str("cols", bucket, buf, n); }
bool nc_ocl_row_shape_parse(const char *str, int *bucket) { return nc_ok_bucket_parse("cols", str, bucket); }
void nc_ocl_reduce_shape_str(int bucket, char *buf, size_t n) { nc_ok_bucket_str("items", bucket, buf, n); }
bool nc_ocl_reduce_shape_parse(const char *str, int *bucket) { return nc_ok_bucket_parse("items", str, bucket); }

void nc_ocl_gemm_geometry(const nc_ocl_knobs *kn, int64_t m, int64_t n, int64_t batch, size_t gws[3], size_t lws[3]) {
  size_t lx = (size_t)(kn->gemm_tn / kn->gemm_wn), ly = (size_t)(kn->gemm_tm / kn->gemm_wm);
  size_t gx = (size_t)((n + kn->gemm_tn - 1) / kn->gemm_tn) * lx;
  size_t gy = (size_t)((m + kn->gemm_tm - 1) / kn->gemm_tm) * ly;
  if (kn->gemm_tc) {  // one work-group of warps per tc_bm x tc_bn tile
    lx = (size_t)(32 * (kn->tc_bm / kn->tc_wm) * (kn->tc_bn / kn->tc_wn)), ly = 1;
    gx = (size_t)((n + kn->tc_bn - 1) / kn->tc_bn) * lx;
    gy = (size_t)((m + kn->tc_bm - 1) / kn->tc_bm);
  }
  gws[0] = gx, gws[1] = gy, gws[2] = (size_t)batch;
  lws[0] = lx, lws[1] = ly, lws[2] = 1;
}

nc_status nc_ocl_emit_gemm_named(const nc_ocl_knobs *kn, int variant, const char *name, nc_buf *out) {
  nc_buf tmp;
  nc_buf_init(&tmp);
  nc_ocl_emit_gemm(kn, variant, &tmp);
  char pat[64];
  snprintf(pat, sizeof pat, "void %s(", nc_ocl_gemm_name(variant));
  const char *at = tmp.data ? strstr(tmp.data, pat) : NULL;
  if (!at || tmp.oom) {
    nc_buf_free(&tmp);
    return nc_errorf(NC_E_INTERNAL, "OpenCL GEMM %s: kernel declaration '%s' not found in the emitted source", nc_ocl_gemm_name(variant), pat);
  }
  size_t pre = (size_t)(at - tmp.data);
  nc_buf_printf(out, "%.*svoid %s(%s", (int)pre, tmp.data, name, at + strlen(pat));
  nc_buf_free(&tmp);
  return NC_OK;
}

nc_status nc_ocl_emit_gemm_packed_named(const nc_ocl_knobs *kn, int flags, const char *name, nc_buf *out) {
  nc_buf tmp;
  nc_buf_init(&tmp);
  nc_ocl_emit_gemm_packed_kernel(kn, flags, &tmp);
  char pat[64];
  nc_ocl_gemm_packed_name(kn, flags, pat + 5, sizeof pat - 6);
  memcpy(pat, "void ", 5);
  strcat(pat, "(");
  const char *at = tmp.data ? strstr(tmp.data, pat) : NULL;
  if (!at || tmp.oom) {
    nc_buf_free(&tmp);
    return nc_errorf(NC_E_INTERNAL, "OpenCL bf16 GEMM: kernel declaration '%s' not found in the emitted source", pat);
  }
  size_t pre = (size_t)(at - tmp.data);
  nc_buf_printf(out, "%.*svoid %s(%s", (int)pre, tmp.data, name, at + strlen(pat));
  nc_buf_free(&tmp);
  return NC_OK;
}
