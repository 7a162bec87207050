// Flash attention on OpenCL (codegen/ocl_attn.c, NC_PATTERN_FLASH_ATTENTION):
// forward and backward against the reference interpreter (causal, sliding
// window, non-causal, GQA, odd lengths, padded and unequal head dims, the fp32
// kernels and the bf16 tile kernels: emulated on PoCL, mma.sync on NVIDIA), the
// plan (one template call per attention and per gradient group, nothing
// (T,T)-sized in the memory plan), the fallbacks (head dim over 128, kvlen), a
// tiny-all training step (GQA + windows) and `graph dump --device opencl`.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/ocl_attn.h"
#include "codegen/ocl_emit.h"
#include "chat/model_io.h"
#include "ir/build.h"
#include "models/init.h"
#include "models/train.h"
#include "passes/lower.h"
#include "passes/memplan.h"
#include "passes/pass.h"
#include "runtime/exec.h"
#include "runtime/kir_eval.h"
#include "runtime/ocl_device.h"
#include "runtime/session.h"
#include "tests/support/cli_util.h"
#include "tests/support/model_util.h"

#define NEED_OPENCL()                                                                  \
  do {                                                                                 \
    if (!nc_ocl_available()) cr_skip_test("no OpenCL device (install pocl-opencl-icd)"); \
  } while (0)
#define C(v) nc_dim_const(v)

typedef struct {
  int64_t hq, hkv, d, dv;
  bool causal;
  int64_t window;
  double scale;
} at_case;

// For each case i: inputs q<i> (B,T,Hq,D), k<i> (B,T,Hkv,D), v<i> (B,T,Hkv,Dv),
// dout<i> (B,T,Hq,Dv) with B, T symbolic; outputs o<i> (the attention) and
// dq<i>, dk<i>, dv<i> (its gradients). One graph, one program to build.
static nc_graph *at_graph_n(const at_case *cs, int n) {
  nc_graph *g = nc_graph_new("attn");
  int B, T;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  cr_assert_null(nc_graph_sym(g, "T", &T));
  for (int i = 0; i < n; i++) {
    const at_case *c = &cs[i];
    nc_dim dq[4] = {nc_dim_sym(B), nc_dim_sym(T), C(c->hq), C(c->d)}, dk[4] = {nc_dim_sym(B), nc_dim_sym(T), C(c->hkv), C(c->d)};
    nc_dim dv[4] = {nc_dim_sym(B), nc_dim_sym(T), C(c->hkv), C(c->dv)}, dout[4] = {nc_dim_sym(B), nc_dim_sym(T), C(c->hq), C(c->dv)};
    char nm[4][16];
    const char *in[4] = {"q", "k", "v", "dout"};
    for (int j = 0; j < 4; j++) snprintf(nm[j], sizeof nm[j], "%s%d", in[j], i);
    nc_id q = nc_leaf(g, NC_OP_INPUT, nm[0], nc_type_make(NC_F32, 4, dq));
    nc_id k = nc_leaf(g, NC_OP_INPUT, nm[1], nc_type_make(NC_F32, 4, dk));
    nc_id v = nc_leaf(g, NC_OP_INPUT, nm[2], nc_type_make(NC_F32, 4, dv));
    nc_id d = nc_leaf(g, NC_OP_INPUT, nm[3], nc_type_make(NC_F32, 4, dout));
    char on[16];
    snprintf(on, sizeof on, "o%d", i);
    cr_assert_null(nc_graph_set_output(g, on, nc_b_attention(g, q, k, v, NC_NONE, c->causal, c->window, c->scale)));
    const char *names[3] = {"dq", "dk", "dv"};
    for (int w = 0; w < 3; w++) {
      snprintf(on, sizeof on, "%s%d", names[w], i);
      cr_assert_null(nc_graph_set_output(g, on, nc_b_attention_grad(g, q, k, v, d, NC_NONE, w, c->causal, c->window, c->scale)));
    }
  }
  cr_assert_null(nc_graph_error(g), "%s", nc_status_msg(nc_graph_error(g)));
  return g;
}
static nc_graph *at_graph(const at_case *c) { return at_graph_n(c, 1); }

static void put_random(nc_session *s, const char *name, nc_dtype dt, int rank, const int64_t *shape, uint64_t seed, double amp) {
  nc_tensor x;
  cr_assert_null(nc_tensor_alloc(&x, dt, rank, shape));
  nc_rng r;
  nc_rng_seed(&r, seed);
  for (int64_t j = 0; j < nc_tensor_numel(&x); j++) ((float *)x.data)[j] = (float)((nc_rng_uniform(&r) * 2 - 1) * amp);
  cr_assert_null(nc_session_put(s, name, &x));
}

// Runs g (n cases) on the interpreter and on ex for (B, T); returns the worst relative error.
static double at_compare(nc_exec *ex, const nc_graph *g, const at_case *cs, int n, int64_t B, int64_t T, double tol, uint64_t seed) {
  nc_session *s = nc_session_new();
  char nm[16][16];
  for (int i = 0; i < n; i++) {
    const at_case *c = &cs[i];
    int64_t sh[4][4] = {{B, T, c->hq, c->d}, {B, T, c->hkv, c->d}, {B, T, c->hkv, c->dv}, {B, T, c->hq, c->dv}};
    const char *in[4] = {"q", "k", "v", "dout"};
    for (int j = 0; j < 4; j++) {
      snprintf(nm[i * 4 + j], sizeof nm[0], "%s%d", in[j], i);
      put_random(s, nm[i * 4 + j], NC_F32, 4, sh[j], seed + (uint64_t)(i * 4 + j), j < 2 ? 2.0 : 1.0);
    }
  }
  nc_feed f[16];
  for (int j = 0; j < 4 * n; j++) f[j] = (nc_feed){nm[j], nc_session_get(s, nm[j])};
  int nout = nc_graph_noutputs(g);
  nc_tensor want[16] = {0}, got[16] = {0};
  nc_status st = nc_interp_run(g, f, 4 * n, want);
  cr_assert_null(st, "interp: %s", nc_status_msg(st));
  st = nc_exec_run(ex, f, 4 * n, got);
  cr_assert_null(st, "opencl: %s", nc_status_msg(st));
  double worst = 0;
  for (int k = 0; k < nout; k++) {
    const at_case *c = &cs[k / 4];
    double e = nc_test_rel_err(&got[k], &want[k]);
    worst = fmax(worst, e);
    cr_expect_lt(e, tol, "output %s (Hq %lld Hkv %lld D %lld Dv %lld causal %d window %lld, B %lld T %lld): rel err %g",
                 nc_graph_output_name(g, k), (long long)c->hq, (long long)c->hkv, (long long)c->d, (long long)c->dv, c->causal,
                 (long long)c->window, (long long)B, (long long)T, e);
    nc_tensor_free(&got[k]);
    nc_tensor_free(&want[k]);
  }
  nc_session_free(s);
  return worst;
}

static nc_exec *at_exec(const nc_graph *g) {
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &d, &ex);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return ex;
}

// The plan OpenCL builds for g (the device's patterns, as runtime/exec.c does).
static nc_plan *at_plan(const nc_graph *g0, nc_graph **lowered) {
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_graph *g;
  cr_assert_null(nc_graph_copy(g0, &g));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.verify = true;
  ctx.patterns_off = nc_device_patterns_off(&d);
  ctx.patterns_force = nc_device_patterns_force(&d);
  const char *passes[] = {"decompose", "dce"};
  cr_assert_null(nc_pass_run_pipeline(&g, passes, 2, &ctx));
  nc_lower_opts lo = nc_device_lower_opts(&d, &ctx);
  nc_plan *p;
  nc_status st = nc_plan_build(g, &lo, &p);
  cr_assert_null(st, "%s", nc_status_msg(st));
  *lowered = g;
  return p;
}

static int at_flash_calls(const nc_plan *p) {
  int n = 0;
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    n += nc_kernel_is_template(k) && k->s[k->body].tmpl == NC_KT_ATTENTION;
  }
  return n;
}

// Buffers of the memory plan at (B, T) whose last two dims are both T.
static int at_tt_buffers(const nc_graph *g, const nc_plan *p, int64_t B, int64_t T) {
  int64_t syms[NC_MAX_SYMS] = {B, T};
  nc_memplan *mp;
  cr_assert_null(nc_plan_memplan(g, p, syms, &mp));
  int n = 0;
  for (int i = 0; i < mp->nbufs; i++) {
    const nc_membuf *b = &mp->bufs[i];
    n += b->rank >= 2 && b->dims[b->rank - 1] == T && b->dims[b->rank - 2] == T;
  }
  nc_memplan_free(mp);
  return n;
}

static const at_case at_cases[] = {
    {2, 2, 16, 16, true, 0, 0.25},     // d-spec heads (16), causal
    {4, 2, 20, 12, true, 5, 0.3},      // GQA, sliding window, odd head dims (padded to 32 / 16), Dv != D
    {2, 1, 16, 24, false, 0, 0.2},     // non-causal, one kv head
    {1, 1, 128, 128, true, 0, 0.088},  // d12's head dim
};

#define AT_N ((int)(sizeof at_cases / sizeof *at_cases))

Test(ocl_attn, fp32_forward_and_backward_match_the_interpreter, .timeout = 300) {
  NEED_OPENCL();
  nc_graph *g = at_graph_n(at_cases, AT_N);
  nc_exec *ex = at_exec(g);
  int64_t sizes[2][2] = {{2, 37}, {1, 70}};  // odd lengths, several blocks; B and T bound per call
  for (int z = 0; z < 2; z++) {
    double w = at_compare(ex, g, at_cases, AT_N, sizes[z][0], sizes[z][1], 1e-4, 11 + (uint64_t)z * 50);
    cr_log_info("fp32 B=%lld T=%lld: worst rel err %.3g", (long long)sizes[z][0], (long long)sizes[z][1], w);
  }
  nc_exec_free(ex);
  nc_graph_free(g);
}

// The bf16 tile kernels (operands and probabilities rounded to bf16, fp32
// accumulation): mma.sync on NVIDIA, the scalar emulation elsewhere. The
// tolerance is bf16's (8 mantissa bits).
Test(ocl_attn, bf16_tiles_match_the_interpreter_within_bf16_rounding, .timeout = 300) {
  NEED_OPENCL();
  nc_ocl_device_desc dd;
  cr_assert_null(nc_ocl_select("", &dd));
  bool nvidia = strstr(dd.vendor, "NVIDIA") || strstr(dd.platform_vendor, "NVIDIA");
  setenv("NC_OCL_TC", nvidia ? "32,32,16,16,16,1" : "32,32,16,16,16,2", 1);
  nc_graph *g = at_graph_n(at_cases, AT_N);
  nc_exec *ex = at_exec(g);
  unsetenv("NC_OCL_TC");
  double w = at_compare(ex, g, at_cases, AT_N, 1, 70, 3e-2, 101);
  cr_log_info("bf16 (%s) B=1 T=70: worst rel err %.3g", nvidia ? "mma.sync" : "emulated", w);
  nc_exec_free(ex);
  nc_graph_free(g);
}

Test(ocl_attn, plan_has_one_call_per_attention_and_no_tt_buffers) {
  const at_case *c = &at_cases[1];
  nc_graph *g0 = at_graph(c), *g;
  nc_plan *p = at_plan(g0, &g);
  cr_expect_eq(at_flash_calls(p), 2, "one forward call and one call for the three gradients, got %d", at_flash_calls(p));
  cr_expect_eq(at_tt_buffers(g, p, 2, 64), 0, "the flash plan holds (T,T) buffers");
  int groups = 0;
  for (nc_id i = 0; i < p->nnodes; i++) groups += p->stored_by[i] != NC_NONE;
  cr_expect_eq(groups, 2, "dk and dv are stored by dq's kernel");
  nc_plan_free(p);
  nc_graph_free(g);
  // switched off (NC_PATTERNS_OFF=4096): the GEMM decomposition, with its (T,T) scores
  setenv("NC_PATTERNS_OFF", "4096", 1);
  p = at_plan(g0, &g);
  unsetenv("NC_PATTERNS_OFF");
  cr_expect_eq(at_flash_calls(p), 0);
  cr_expect_gt(at_tt_buffers(g, p, 2, 64), 0, "the decomposition should materialize scores");
  nc_plan_free(p);
  nc_graph_free(g);
  nc_graph_free(g0);
}

// The flash calls of p: the forward's and the backward's kernels (the last of each).
static void at_calls(const nc_plan *p, const nc_kernel **fwd, const nc_kernel **bwd, nc_id *fwd_node) {
  *fwd = *bwd = NULL;
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (!nc_kernel_is_template(k) || k->s[k->body].tmpl != NC_KT_ATTENTION) continue;
    const nc_kstmt *c = &k->s[k->body];
    if (nc_kernel_eval_index(k, c->args[9], NULL) == 0) *fwd = k, *fwd_node = p->kernels[i].node;
    else *bwd = k;
  }
}

// Graph of case c's three gradients only (no forward: nothing to take the statistics from).
static nc_graph *at_grad_graph(const at_case *c) {
  nc_graph *g = at_graph(c), *h = nc_graph_new("attn_grads");
  int B, T;
  cr_assert_null(nc_graph_sym(h, "B", &B));
  cr_assert_null(nc_graph_sym(h, "T", &T));
  nc_graph_free(g);
  nc_dim dq[4] = {nc_dim_sym(B), nc_dim_sym(T), C(c->hq), C(c->d)}, dk[4] = {nc_dim_sym(B), nc_dim_sym(T), C(c->hkv), C(c->d)};
  nc_dim dv[4] = {nc_dim_sym(B), nc_dim_sym(T), C(c->hkv), C(c->dv)}, dout[4] = {nc_dim_sym(B), nc_dim_sym(T), C(c->hq), C(c->dv)};
  nc_id q = nc_leaf(h, NC_OP_INPUT, "q0", nc_type_make(NC_F32, 4, dq));
  nc_id k = nc_leaf(h, NC_OP_INPUT, "k0", nc_type_make(NC_F32, 4, dk));
  nc_id v = nc_leaf(h, NC_OP_INPUT, "v0", nc_type_make(NC_F32, 4, dv));
  nc_id d = nc_leaf(h, NC_OP_INPUT, "dout0", nc_type_make(NC_F32, 4, dout));
  const char *names[3] = {"dq0", "dk0", "dv0"};
  for (int w = 0; w < 3; w++)
    cr_assert_null(nc_graph_set_output(h, names[w], nc_b_attention_grad(h, q, k, v, d, NC_NONE, w, c->causal, c->window, c->scale)));
  cr_assert_null(nc_graph_error(h));
  return h;
}

// The backward takes the rows' logsumexp from its forward (call arg 11, the
// forward's O as its last buffer) instead of a statistics pass; without a
// forward in the graph, or with NC_OCL_FA_STATS=1, it recomputes them. All
// three agree with the interpreter.
Test(ocl_attn, backward_reads_the_forwards_statistics_or_recomputes_them, .timeout = 300) {
  const at_case *c = &at_cases[1];
  nc_graph *g0 = at_graph(c), *g;
  nc_plan *p = at_plan(g0, &g);
  const nc_kernel *fk, *bk;
  nc_id fnode = NC_NONE;
  at_calls(p, &fk, &bk, &fnode);
  cr_assert(fk && bk, "a forward and a backward flash call");
  const nc_kstmt *fc = &fk->s[fk->body], *bc = &bk->s[bk->body];
  cr_assert_eq(fc->nargs, 12);
  cr_assert_eq(bc->nargs, 12);
  cr_expect_eq(nc_kernel_eval_index(fk, fc->args[11], NULL), 1, "the forward keeps its logsumexp");
  cr_expect_eq(nc_kernel_eval_index(bk, bc->args[11], NULL), (int64_t)fnode + 1, "the backward names its forward");
  cr_expect_eq(bc->ncbufs, 8, "q, k, v, dO, dq, dk, dv and the forward's O");
  cr_expect_not_null(p->extra_read, "the memory plan keeps O alive for the backward");
  nc_plan_free(p);
  nc_graph_free(g);
  nc_graph *h0 = at_grad_graph(c);
  p = at_plan(h0, &g);
  at_calls(p, &fk, &bk, &fnode);
  cr_assert(!fk && bk);
  cr_expect_eq(nc_kernel_eval_index(bk, bk->s[bk->body].args[11], NULL), 0, "no forward: the statistics pass");
  nc_plan_free(p);
  nc_graph_free(g);
  NEED_OPENCL();
  nc_exec *ex = at_exec(h0);
  double w = at_compare(ex, h0, c, 1, 2, 37, 1e-4, 31);
  cr_log_info("gradients alone (statistics pass): worst rel err %.3g", w);
  nc_exec_free(ex);
  setenv("NC_OCL_FA_STATS", "1", 1);
  ex = at_exec(g0);
  unsetenv("NC_OCL_FA_STATS");
  w = at_compare(ex, g0, c, 1, 1, 70, 1e-4, 37);
  cr_log_info("NC_OCL_FA_STATS=1: worst rel err %.3g", w);
  nc_exec_free(ex);
  // a value other than 0 or 1 is named
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  setenv("NC_OCL_FA_STATS", "yes", 1);
  nc_status st = nc_exec_new(g0, &d, &ex);
  unsetenv("NC_OCL_FA_STATS");
  cr_assert_not_null(st, "NC_OCL_FA_STATS=yes accepted");
  cr_expect(strstr(nc_status_msg(st), "NC_OCL_FA_STATS='yes'"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_graph_free(h0);
  nc_graph_free(g0);
}

// NC_OCL_FA sets the block sizes: wrong ones are named; larger blocks than the
// defaults (8 warps, 64-wide key and query steps) still match, on the bf16 tiles
// (emulated on PoCL, mma.sync on NVIDIA).
Test(ocl_attn, block_sizes_from_nc_ocl_fa, .timeout = 300) {
  nc_ocl_attn_blocks bl;
  const char *bad[] = {"64,32,32", "64,32,32,32,24", "64,32,32,32,80", "256,32,32,32,32", "64,32,x,32,32", "64,32,32,32,32,", "64,32,32,32,32,3", "64,32,32,32,32,2,1"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    nc_status st = nc_ocl_attn_blocks_parse(bad[i], 1, &bl);
    cr_assert_not_null(st, "NC_OCL_FA='%s' must be refused", bad[i]);
    cr_expect(strstr(nc_status_msg(st), "NC_OCL_FA") != NULL, "%s", nc_status_msg(st));
    nc_status_free(st);
  }
  nc_status st = nc_ocl_attn_blocks_parse("32,16,64,16,16", 0, &bl);
  cr_assert_not_null(st, "fp32 tiles with BN 64");
  nc_status_free(st);
  cr_assert_null(nc_ocl_attn_blocks_parse("128,64,64,128,64", 1, &bl));
  cr_expect(bl.bm == 128 && bl.bmq == 64 && bl.bn == 64 && bl.km == 128 && bl.qn == 64);
  NEED_OPENCL();
  nc_ocl_device_desc dd;
  cr_assert_null(nc_ocl_select("", &dd));
  bool nvidia = strstr(dd.vendor, "NVIDIA") || strstr(dd.platform_vendor, "NVIDIA");
  const at_case cs[2] = {at_cases[1], at_cases[3]};
  setenv("NC_OCL_TC", nvidia ? "32,32,16,16,16,1" : "32,32,16,16,16,2", 1);
  setenv("NC_OCL_FA", "128,64,64,128,64,2", 1);
  nc_graph *g = at_graph_n(cs, 2);
  nc_exec *ex = at_exec(g);
  unsetenv("NC_OCL_FA");
  unsetenv("NC_OCL_TC");
  double w = at_compare(ex, g, cs, 2, 2, 150, 3e-2, 211);
  cr_log_info("NC_OCL_FA=128,64,64,128,64,2 (%s) B=2 T=150: worst rel err %.3g", nvidia ? "mma.sync" : "emulated", w);
  nc_exec_free(ex);
  nc_graph_free(g);
}

// A window narrower than the sequence (80 keys at T = 200, GQA): tiles wholly inside
// it skip the mask (fa_full's window clause true), tiles that cross its far edge
// keep it (false); fp32 and bf16 tiles against the interpreter.
Test(ocl_attn, window_narrower_than_the_sequence_matches_the_interpreter, .timeout = 300) {
  NEED_OPENCL();
  nc_ocl_device_desc dd;
  cr_assert_null(nc_ocl_select("", &dd));
  bool nvidia = strstr(dd.vendor, "NVIDIA") || strstr(dd.platform_vendor, "NVIDIA");
  const at_case c = {2, 1, 16, 16, true, 80, 0.25};
  nc_graph *g = at_graph_n(&c, 1);
  for (int bf = 0; bf < 2; bf++) {
    if (bf) setenv("NC_OCL_TC", nvidia ? "32,32,16,16,16,1" : "32,32,16,16,16,2", 1);
    nc_exec *ex = at_exec(g);
    unsetenv("NC_OCL_TC");
    double w = at_compare(ex, g, &c, 1, 1, 200, bf ? 3e-2 : 1e-4, 401 + (uint64_t)bf);
    cr_log_info("window 80, B=1 T=200, %s: worst rel err %.3g", bf ? (nvidia ? "bf16 mma.sync" : "bf16 emulated") : "fp32", w);
    nc_exec_free(ex);
  }
  nc_graph_free(g);
}

// Outside the template's reach the old paths stay: head dims over 128 and kvlen
// (decode) are not flash calls, and still match the interpreter.
Test(ocl_attn, head_dim_over_128_and_kvlen_fall_back, .timeout = 120) {
  at_case big = {1, 1, 136, 8, true, 0, 0.1};
  nc_graph *g0 = at_graph(&big), *g;
  nc_plan *p = at_plan(g0, &g);
  cr_expect_eq(at_flash_calls(p), 0, "head dim 136 is over the template's 128");
  nc_plan_free(p);
  nc_graph_free(g);
  nc_graph *h = nc_graph_new("kv");
  int B;
  cr_assert_null(nc_graph_sym(h, "B", &B));
  nc_dim d4[4] = {nc_dim_sym(B), C(3), C(2), C(16)}, dc[4] = {nc_dim_sym(B), C(9), C(2), C(16)};
  nc_id q = nc_leaf(h, NC_OP_INPUT, "q", nc_type_make(NC_F32, 4, d4));
  nc_id kc = nc_leaf(h, NC_OP_INPUT, "k", nc_type_make(NC_F32, 4, dc));
  nc_id vc = nc_leaf(h, NC_OP_INPUT, "v", nc_type_make(NC_F32, 4, dc));
  nc_id len = nc_leaf(h, NC_OP_INPUT, "len", nc_type_make(NC_I32, 0, NULL));
  cr_assert_null(nc_graph_set_output(h, "o", nc_b_attention(h, q, kc, vc, len, true, 0, 0.25)));
  p = at_plan(h, &g);
  cr_expect_eq(at_flash_calls(p), 0, "attention with kvlen is not a flash call");
  nc_plan_free(p);
  nc_graph_free(g);
  nc_graph_free(h);
  if (!nc_ocl_available()) {
    nc_graph_free(g0);
    return;
  }
  nc_exec *ex = at_exec(g0);
  double w = at_compare(ex, g0, &big, 1, 1, 19, 1e-4, 5);
  cr_log_info("head dim 136 through the decomposition: worst rel err %.3g", w);
  nc_exec_free(ex);
  nc_graph_free(g0);
}

// The emitter refuses an attention call it cannot run, naming the kernel.
Test(ocl_attn, emitter_refuses_symbolic_or_too_large_head_dims) {
  nc_ocl_knobs kn;
  nc_ocl_knobs_default(false, &kn);
  for (int bad = 0; bad < 2; bad++) {
    nc_kernel k;
    nc_kernel_init(&k, "k_attn_bad");
    int bufs[4];
    for (int i = 0; i < 4; i++) {
      char nm[8];
      snprintf(nm, sizeof nm, "b%d", i);
      bufs[i] = nc_kernel_buf(&k, nm, NC_F32, i == 3);
    }
    nc_kx T = nc_kx_arg(&k, nc_kernel_arg(&k, "T"));
    nc_kx D = bad ? T : nc_kx_idx(&k, 256);
    nc_kx args[11] = {nc_kx_idx(&k, 1), T, T, nc_kx_idx(&k, 1), nc_kx_idx(&k, 1), D, nc_kx_idx(&k, 16), nc_kx_idx(&k, 1),
                      nc_kx_idx(&k, 0), nc_kx_idx(&k, 0), nc_kx_const_f(&k, NC_F32, 0.5)};
    nc_ks *tail = &k.body;
    nc_ks_call(&k, &tail, NC_KT_ATTENTION, args, 11, bufs, 4);
    nc_buf out;
    nc_buf_init(&out);
    nc_ocl_launch L;
    nc_status st = nc_ocl_emit_kernel(&k, "f", &kn, &out, &L);
    cr_assert_not_null(st, "a %s head dim must be refused", bad ? "symbolic" : "256-wide");
    cr_expect(strstr(nc_status_msg(st), "k_attn_bad") != NULL, "message names the kernel: %s", nc_status_msg(st));
    nc_status_free(st);
    nc_buf_free(&out);
    nc_kernel_free(&k);
  }
}

// A whole training step with GQA and sliding windows (tiny-all: one kv head,
// SSSL windows of 8 at T = 16) on OpenCL against the interpreter.
Test(ocl_attn, tiny_all_training_step_matches_the_interpreter, .timeout = 300) {
  NEED_OPENCL();
  char path[1024];
  nc_model_spec sp;
  cr_assert_null(nc_spec_load(nc_test_path(path, sizeof path, "models/specs/tiny-all.xml"), &sp));
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g;
  cr_assert_null(nc_train_build(&sp, &oc, &to, &g));
  nc_graph *lg;
  nc_plan *p = at_plan(g, &lg);
  int calls = at_flash_calls(p);
  cr_expect_eq(calls, 2 * sp.depth, "one forward and one backward call per layer, got %d", calls);
  nc_plan_free(p);
  nc_graph_free(lg);
  nc_session *s = nc_session_new();
  cr_assert_null(nc_model_init_session(&sp, 3, s));
  nc_rng r;
  nc_rng_seed(&r, 17);
  int nf = 0;
  nc_feed *f = calloc(nc_graph_nnodes(g) + 1, sizeof *f);
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (nd->op != NC_OP_INPUT && nd->op != NC_OP_PARAM) continue;
    const char *name = nc_node_name(g, i);
    if (!nc_session_get(s, name)) {
      nc_type t = nd->type;
      int64_t syms[NC_MAX_SYMS] = {2, 16}, shape[NC_MAX_RANK];
      for (int d = 0; d < t.rank; d++) shape[d] = nc_dim_eval(t.dim[d], syms);
      nc_tensor x;
      cr_assert_null(nc_tensor_alloc(&x, t.dtype, t.rank, shape));
      bool positive = !strncmp(name, "adamw.exp_avg_sq.", 17) || !strncmp(name, "muon.second_momentum.", 21);
      for (int64_t j = 0; j < nc_tensor_numel(&x); j++) {
        if (t.dtype == NC_I32) ((int32_t *)x.data)[j] = (int32_t)(nc_rng_next(&r) % (uint64_t)sp.vocab_size);
        else ((float *)x.data)[j] = (float)(positive ? nc_rng_uniform(&r) * 0.01 : nc_rng_uniform(&r) * 2 - 1);
      }
      if (t.rank == 0 && t.dtype == NC_F32) *(float *)x.data = (float)(0.1 + 0.8 * nc_rng_uniform(&r));
      cr_assert_null(nc_session_put(s, name, &x));
    }
  }
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {  // after every put: the session may move its tensors
    const nc_node *nd = nc_graph_node(g, i);
    if (nd->op == NC_OP_INPUT || nd->op == NC_OP_PARAM) f[nf++] = (nc_feed){nc_node_name(g, i), nc_session_get(s, nc_node_name(g, i))};
  }
  nc_exec *ex = at_exec(g);
  int nout = nc_graph_noutputs(g);
  nc_tensor *want = calloc((size_t)nout, sizeof *want), *got = calloc((size_t)nout, sizeof *got);
  nc_status st = nc_interp_run(g, f, nf, want);
  cr_assert_null(st, "interp: %s", nc_status_msg(st));
  st = nc_exec_run(ex, f, nf, got);
  cr_assert_null(st, "opencl: %s", nc_status_msg(st));
  double worst = 0;
  for (int k = 0; k < nout; k++) {
    double e = nc_test_rel_err(&got[k], &want[k]);
    worst = fmax(worst, e);
    cr_expect_lt(e, 1e-4, "output %s: rel err %g", nc_graph_output_name(g, k), e);
    nc_tensor_free(&got[k]);
    nc_tensor_free(&want[k]);
  }
  cr_log_info("tiny-all train step on opencl (flash attention): %d kernels, worst rel err %.3g", nc_exec_nkernels(ex), worst);
  free(want);
  free(got);
  free(f);
  nc_exec_free(ex);
  nc_session_free(s);
  nc_graph_free(g);
}

// `graph dump --device opencl` plans with flash attention: d12's training step
// at 32 x 2048 drops the (B,H,T,T) buffers; a bad device is named.
Test(ocl_attn, graph_dump_memplan_with_the_opencl_device) {
  char out[4096];
  int rc = nc_test_cli("graph dump models/specs/d12.xml --train --after memplan --bind B=32,T=2048 --device opencl 2>&1 | head -1", out, sizeof out);
  cr_assert_eq(rc, 0, "%s", out);
  long long flash = 0, before = 0;
  cr_assert(sscanf(strstr(out, "arena ") ? strstr(out, "arena ") : "", "arena %lld", &flash) == 1, "%s", out);
  setenv("NC_PATTERNS_OFF", "4096", 1);
  rc = nc_test_cli("graph dump models/specs/d12.xml --train --after memplan --bind B=32,T=2048 --device opencl 2>&1 | head -1", out, sizeof out);
  unsetenv("NC_PATTERNS_OFF");
  cr_assert_eq(rc, 0, "%s", out);
  cr_assert(sscanf(strstr(out, "arena ") ? strstr(out, "arena ") : "", "arena %lld", &before) == 1, "%s", out);
  cr_log_info("d12 32x2048 arena: %lld B with flash attention, %lld B without", flash, before);
  cr_expect_lt(flash, 75000000000LL, "flash arena %lld", flash);
  cr_expect_gt(before, 100000000000LL, "decomposed arena %lld", before);
  rc = nc_test_cli("graph dump models/specs/tiny.xml --train --after memplan --device opencl:", out, sizeof out);
  cr_expect_neq(rc, 0);
  cr_expect(strstr(out, "--device") != NULL && strstr(out, "opencl:") != NULL, "%s", out);
}
