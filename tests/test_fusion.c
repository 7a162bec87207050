// The named fusion patterns (passes/pass.h NC_PATTERN_*): each one on and off
// (its switch) against the reference interpreter on fresh random inputs, on
// the kernel-IR evaluator and on the CPU backend with 1 and 2 threads, plus a
// golden check that the pattern's fused kernel is in the plan when on and
// gone when off.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/build.h"
#include "passes/autodiff.h"
#include "passes/lower.h"
#include "passes/pass.h"
#include "runtime/cpu.h"
#include "runtime/interp.h"
#include "runtime/kir_eval.h"
#include "runtime/plan_run.h"
#include "models/init.h"
#include "models/train.h"
#include "tests/support/model_util.h"

#define FZ_MAX_FEEDS 40

typedef struct {
  nc_feed f[FZ_MAX_FEEDS];
  nc_tensor t[FZ_MAX_FEEDS];
  int n;
} fz_feeds;

static void fz_free_feeds(fz_feeds *fs) {
  for (int i = 0; i < fs->n; i++) nc_tensor_free(&fs->t[i]);
}

// Random values for every input and param of g (i32 inputs: in [0, imax)),
// symbols bound to syms.
static void fz_feed_random(const nc_graph *g, const int64_t *syms, uint64_t seed, int imax, fz_feeds *fs) {
  nc_rng r;
  nc_rng_seed(&r, seed);
  fs->n = 0;
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (nd->op != NC_OP_INPUT && nd->op != NC_OP_PARAM) continue;
    cr_assert_lt(fs->n, FZ_MAX_FEEDS);
    nc_type t = nd->type;
    int64_t shape[NC_MAX_RANK];
    for (int d = 0; d < t.rank; d++) shape[d] = nc_dim_eval(t.dim[d], syms);
    nc_tensor *x = &fs->t[fs->n];
    cr_assert_null(nc_tensor_alloc(x, t.dtype, t.rank, shape));
    for (int64_t j = 0; j < nc_tensor_numel(x); j++) {
      if (t.dtype == NC_I32) ((int32_t *)x->data)[j] = (int32_t)(nc_rng_next(&r) % (uint64_t)imax);
      else ((float *)x->data)[j] = (float)(nc_rng_uniform(&r) * 2 - 1);
    }
    fs->f[fs->n] = (nc_feed){nc_node_name(g, i), x};
    fs->n++;
  }
}

static nc_graph *fz_copy(const nc_graph *g) {
  nc_graph *c;
  cr_assert_null(nc_graph_copy(g, &c));
  return c;
}

// Lowers g with the given patterns off; returns the plan and the lowered graph.
static unsigned fz_force;  // patterns_force of the next lowerings (set per test)
static unsigned fz_lower_force;  // nc_lower_opts.patterns_force of the next lowerings

static nc_plan *fz_lower(const nc_graph *g, unsigned off, nc_graph **lowered) {
  nc_graph *h = fz_copy(g);
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.verify = true;
  ctx.patterns_off = off;
  ctx.patterns_force = fz_force;
  const char *passes[] = {"decompose", "dce"};
  nc_status st = nc_pass_run_pipeline(&h, passes, 2, &ctx);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_lower_opts lo = {.fuse = true, .patterns_off = off, .patterns_force = fz_lower_force};
  nc_plan *p;
  st = nc_plan_build(h, &lo, &p);
  cr_assert_null(st, "%s", nc_status_msg(st));
  *lowered = h;
  return p;
}

static int fz_count_kernels(const nc_plan *p, const char *marker) {
  int n = 0;
  for (int i = 0; i < p->nkernels; i++) n += strstr(p->kernels[i].k.name, marker) != NULL;
  return n;
}

// Runs g with `bit` on and off on the evaluator and the CPU (1 and 2 threads)
// and compares every output with the interpreter. marker: a substring of the
// pattern's kernel names (present only when the pattern is on).
static void fz_check(const nc_graph *g, const fz_feeds *fs, unsigned bit, const char *marker, double tol) {
  int nout = nc_graph_noutputs(g);
  nc_tensor want[16], got[16];
  cr_assert_leq(nout, 16);
  nc_status st = nc_interp_run(g, fs->f, fs->n, want);
  cr_assert_null(st, "interp: %s", nc_status_msg(st));
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? bit : 0, &h);
    if (marker) {
      int nk = fz_count_kernels(p, marker);
      if (off) cr_expect_eq(nk, 0, "pattern off: %d '%s' kernels remain", nk, marker);
      else cr_expect_gt(nk, 0, "pattern on: no '%s' kernel in the plan", marker);
    }
#ifdef NC_SANITIZED
    const int ndev = 1;  // the evaluator only: JIT under sanitizers is slow
#else
    const int ndev = 3;
#endif
    for (int dev = 0; dev < ndev; dev++) {
      nc_cpu *cpu = NULL;
      if (dev) {
        nc_cpu_opts co = {.threads = dev};
        st = nc_cpu_compile(p, &co, &cpu);
        cr_assert_null(st, "cpu compile: %s", nc_status_msg(st));
        st = nc_plan_run(h, p, nc_cpu_runner, cpu, fs->f, fs->n, got);
      } else {  // the evaluator through the memory plan's arena (buffers reused)
        nc_plan_mem *mem = nc_plan_mem_new();
        st = nc_plan_run_mem(h, p, mem, nc_kernel_runner_eval, NULL, fs->f, fs->n, got);
        nc_plan_mem_free(mem);
      }
      cr_assert_null(st, "plan run: %s", nc_status_msg(st));
      for (int k = 0; k < nout; k++) {
        double e = nc_test_rel_err(&got[k], &want[k]);
        cr_expect_lt(e, tol, "%s: output %s, pattern %s, device %s%d: rel err %g", nc_graph_name(g), nc_graph_output_name(g, k),
                     off ? "off" : "on", dev ? "cpu threads " : "eval ", dev, e);
        nc_tensor_free(&got[k]);
      }
      nc_cpu_free(cpu);
    }
    nc_plan_free(p);
    nc_graph_free(h);
  }
  for (int k = 0; k < nout; k++) nc_tensor_free(&want[k]);
}

// ---- attention with online softmax --------------------------------------------
// loss = sum(attention(q, k, v) * w) and its gradients w.r.t. q, k, v.
// Tq == 0: a symbolic T for queries and keys (a training graph's shape).
static nc_graph *attn_graph(int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, bool causal, int64_t window, bool kvlen) {
  nc_graph *g = nc_graph_new("attn");
  int B, T = 0;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  if (!Tq) cr_assert_null(nc_graph_sym(g, "T", &T));
  const int64_t D = 8;
  nc_dim tq = Tq ? nc_dim_const(Tq) : nc_dim_sym(T), tk = Tq ? nc_dim_const(Tk) : nc_dim_sym(T);
  nc_dim dq[4] = {nc_dim_sym(B), tq, nc_dim_const(Hq), nc_dim_const(D)};
  nc_dim dk[4] = {nc_dim_sym(B), tk, nc_dim_const(Hkv), nc_dim_const(D)};
  nc_id q = nc_leaf(g, NC_OP_PARAM, "q", nc_type_make(NC_F32, 4, dq));
  nc_id k = nc_leaf(g, NC_OP_PARAM, "k", nc_type_make(NC_F32, 4, dk));
  nc_id v = nc_leaf(g, NC_OP_PARAM, "v", nc_type_make(NC_F32, 4, dk));
  nc_id w = nc_leaf(g, NC_OP_INPUT, "w", nc_type_make(NC_F32, 4, dq));
  nc_id len = kvlen ? nc_leaf(g, NC_OP_INPUT, "kvlen", nc_type_make(NC_I32, 0, NULL)) : NC_NONE;
  nc_id y = nc_b_attention(g, q, k, v, len, causal, window, 1.0 / sqrt((double)D));
  nc_id loss = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op2(g, NC_OP_MUL, y, w), 15, false);
  nc_id wrt[3] = {q, k, v}, grads[3];
  cr_assert_null(nc_autodiff(g, loss, NC_NONE, wrt, 3, grads));
  cr_assert_null(nc_graph_set_output(g, "y", y));
  cr_assert_null(nc_graph_set_output(g, "dq", grads[0]));
  cr_assert_null(nc_graph_set_output(g, "dk", grads[1]));
  cr_assert_null(nc_graph_set_output(g, "dv", grads[2]));
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

static void attn_case(int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, bool causal, int64_t window, int64_t kvlen, uint64_t seed) {
  nc_graph *g = attn_graph(Tq, Tk, Hq, Hkv, causal, window, kvlen > 0);
  int64_t syms[NC_MAX_SYMS] = {2, 13};
  fz_feeds fs;
  fz_feed_random(g, syms, seed, 1, &fs);
  for (int i = 0; i < fs.n; i++)
    if (!strcmp(fs.f[i].name, "kvlen")) *(int32_t *)fs.t[i].data = (int32_t)kvlen;
  fz_check(g, &fs, NC_PATTERN_ATTENTION, "_attention", 2e-5);
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

Test(fusion, attention_causal) { attn_case(7, 7, 2, 2, true, 0, 0, 1); }
Test(fusion, attention_full_gqa) { attn_case(6, 6, 4, 2, false, 0, 0, 2); }
Test(fusion, attention_sliding_window_gqa) { attn_case(9, 9, 3, 1, true, 3, 0, 3); }
// queries at the end of a longer key range (the KV-cache engine): positions kvlen-Tq..kvlen-1
Test(fusion, attention_kvlen_window) { attn_case(3, 10, 2, 1, true, 4, 8, 4); }
Test(fusion, attention_kvlen_causal) { attn_case(4, 11, 2, 2, true, 0, 9, 5); }

// A training shape (symbolic T): the cost rule keeps the GEMM decomposition
// unless the pattern is forced; forced, the loop nests match too.
Test(fusion, attention_symbolic_T_cost_rule_and_forced) {
  nc_graph *g = attn_graph(0, 0, 2, 1, true, 5, false), *h;
  nc_plan *p = fz_lower(g, 0, &h);
  cr_expect_eq(fz_count_kernels(p, "_attention"), 0, "symbolic T: the cost rule picks the decomposition");
  nc_plan_free(p);
  nc_graph_free(h);
  nc_graph_free(g);
  fz_force = NC_PATTERN_ATTENTION;
  attn_case(0, 0, 2, 1, true, 5, 0, 6);
  fz_force = 0;
}

// ---- softcap + cross-entropy ----------------------------------------------------
// loss = mean CE(cap * tanh((h @ w) / cap), targets) (ignored targets included),
// outputs the loss and its gradients w.r.t. h and w.
static nc_graph *ce_graph(double cap, int64_t V) {
  nc_graph *g = nc_graph_new("softcap_ce");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim dh[3] = {nc_dim_sym(B), nc_dim_const(5), nc_dim_const(12)}, dw[2] = {nc_dim_const(12), nc_dim_const(V)};
  nc_dim dt[2] = {nc_dim_sym(B), nc_dim_const(5)};
  nc_id h = nc_leaf(g, NC_OP_PARAM, "h", nc_type_make(NC_F32, 3, dh));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_F32, 2, dw));
  nc_id t = nc_leaf(g, NC_OP_INPUT, "t", nc_type_make(NC_I32, 2, dt));
  nc_id logits = nc_b_scale(g, nc_b_matmul(g, h, w, false, false), 4.0);  // logits of a few units
  logits = nc_b_scale(g, nc_op1(g, NC_OP_TANH, nc_op2(g, NC_OP_DIV, logits, nc_b_const_like(g, logits, cap))), cap);
  nc_id loss = nc_b_cross_entropy(g, logits, t, -1, 2);
  nc_id wrt[2] = {h, w}, grads[2];
  cr_assert_null(nc_autodiff(g, loss, NC_NONE, wrt, 2, grads));
  cr_assert_null(nc_graph_set_output(g, "loss", loss));
  cr_assert_null(nc_graph_set_output(g, "dh", grads[0]));
  cr_assert_null(nc_graph_set_output(g, "dw", grads[1]));
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

static void ce_case(double cap, int64_t V, uint64_t seed) {
  nc_graph *g = ce_graph(cap, V);
  int64_t syms[NC_MAX_SYMS] = {3};
  fz_feeds fs;
  fz_feed_random(g, syms, seed, (int)V, &fs);
  for (int i = 0; i < fs.n; i++)  // two ignored positions
    if (!strcmp(fs.f[i].name, "t")) ((int32_t *)fs.t[i].data)[1] = ((int32_t *)fs.t[i].data)[7] = -1;
  fz_check(g, &fs, NC_PATTERN_SOFTCAP_CE, "_ce_grad_epilogue", 1e-5);
  // golden: on, neither the softmax nor the softcapped logits are written
  // (the tanh is: computed once, read back by the row kernels)
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? NC_PATTERN_SOFTCAP_CE : 0, &h);
    int tanh_k = fz_count_kernels(p, "_tanh"), grad_k = fz_count_kernels(p, "_cross_entropy_grad");
    int mul_k = 0;
    for (int q = 0; q < p->nkernels; q++) {  // a kernel writing cap * tanh: the softcapped logits
      const nc_node *kn = nc_graph_node(h, p->kernels[q].node);
      mul_k += kn->op == NC_OP_MUL && nc_graph_node(h, nc_graph_input_of(h, p->kernels[q].node, 0))->op == NC_OP_TANH;
    }
    if (off) cr_expect(tanh_k == 1 && grad_k == 1 && mul_k == 1, "off: %d tanh, %d grad, %d softcap kernels", tanh_k, grad_k, mul_k);
    else cr_expect(tanh_k == 1 && grad_k == 0 && mul_k == 0, "on: %d tanh, %d grad, %d softcap kernels", tanh_k, grad_k, mul_k);
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

Test(fusion, softcap_cross_entropy) { ce_case(3.0, 37, 11); }
Test(fusion, softcap_cross_entropy_wide_rows) { ce_case(15.0, 130, 12); }

// ---- QK-norm + rope: one kernel per row ------------------------------------------
// y = rms_norm(rope(x)) * s (x (B,T,H,D)), z = rms_norm(u) (u (B,T,C)); the loss
// sum(y * w1) + sum(z * w2) and its gradients w.r.t. x and u.
static nc_graph *norm_graph(int64_t H, int64_t D, int64_t C) {
  nc_graph *g = nc_graph_new("norm_rope");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim dx[4] = {nc_dim_sym(B), nc_dim_const(6), nc_dim_const(H), nc_dim_const(D)};
  nc_dim du[3] = {nc_dim_sym(B), nc_dim_const(6), nc_dim_const(C)};
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 4, dx));
  nc_id u = nc_leaf(g, NC_OP_PARAM, "u", nc_type_make(NC_F32, 3, du));
  nc_id w1 = nc_leaf(g, NC_OP_INPUT, "w1", nc_type_make(NC_F32, 4, dx));
  nc_id w2 = nc_leaf(g, NC_OP_INPUT, "w2", nc_type_make(NC_F32, 3, du));
  nc_id y = nc_b_scale(g, nc_b_rms_norm(g, nc_b_rope(g, x, NC_NONE, 100.0, false), 1e-6), 1.2);
  nc_id z = nc_b_rms_norm(g, u, 1e-6);
  nc_id loss = nc_op2(g, NC_OP_ADD, nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op2(g, NC_OP_MUL, y, w1), 15, false),
                      nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op2(g, NC_OP_MUL, z, w2), 7, false));
  nc_id wrt[2] = {x, u}, grads[2];
  cr_assert_null(nc_autodiff(g, loss, NC_NONE, wrt, 2, grads));
  cr_assert_null(nc_graph_set_output(g, "y", y));
  cr_assert_null(nc_graph_set_output(g, "z", z));
  cr_assert_null(nc_graph_set_output(g, "dx", grads[0]));
  cr_assert_null(nc_graph_set_output(g, "du", grads[1]));
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

// force: the rotation is recomputed in the norm's kernels (patterns_force)
static void norm_rope_case(bool force) {
  nc_graph *g = norm_graph(3, 16, 24);
  int64_t syms[NC_MAX_SYMS] = {2};
  fz_feeds fs;
  fz_feed_random(g, syms, 21, 1, &fs);
  fz_lower_force = force ? NC_PATTERN_NORM_ROPE : 0;
  fz_check(g, &fs, NC_PATTERN_NORM_ROPE, NULL, 1e-5);
  // on: no reduction has a kernel of its own; forced, no forward rotation
  // either (the concat left is dx, the inverse rotation of the gradient: an output)
  int nk[2] = {0, 0};
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? NC_PATTERN_NORM_ROPE : 0, &h);
    int red = fz_count_kernels(p, "_reduce_mean"), rot = fz_count_kernels(p, "_concat");
    nk[off] = p->nkernels;
    if (off) cr_expect(red == 4 && rot == 2, "off: %d reduce_mean, %d concat kernels", red, rot);
    else cr_expect(red == 0 && rot == (force ? 1 : 2), "on (force %d): %d reduce_mean, %d concat kernels", force, red, rot);
    cr_log_info("norm_rope pattern %s (force %d): %d kernels", off ? "off" : "on", force, p->nkernels);
    if (getenv("NC_TEST_DUMP_PLAN")) {  // a debugging aid: the plan on stderr
      nc_buf b;
      nc_buf_init(&b);
      nc_plan_print(h, p, &b);
      fprintf(stderr, "%s", b.data);
      nc_buf_free(&b);
    }
    nc_plan_free(p);
    nc_graph_free(h);
  }
  cr_expect_lt(nk[0], nk[1], "on: %d kernels, off: %d", nk[0], nk[1]);
  fz_lower_force = 0;
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

Test(fusion, norm_one_kernel_per_row) { norm_rope_case(false); }
Test(fusion, norm_rope_one_kernel_per_row_forced) { norm_rope_case(true); }

// ---- the optimizer update as one kernel per parameter ------------------------------
// AdamW on two parameters: g scaled, m and v lerped, p updated; outputs p', m', v'.
static nc_graph *adamw_graph(void) {
  nc_graph *g = nc_graph_new("adamw");
  nc_dim d1[2] = {nc_dim_const(9), nc_dim_const(21)}, d2[1] = {nc_dim_const(37)};
  nc_type ts[2] = {nc_type_make(NC_F32, 2, d1), nc_type_make(NC_F32, 1, d2)};
  nc_id lr = nc_leaf(g, NC_OP_INPUT, "lr", nc_type_make(NC_F32, 0, NULL));
  for (int q = 0; q < 2; q++) {
    char nm[4][16];
    const char *pre[4] = {"p", "g", "m", "v"};
    nc_id x[4];
    for (int k = 0; k < 4; k++) {
      snprintf(nm[k], sizeof nm[k], "%s%d", pre[k], q);
      x[k] = nc_leaf(g, k ? NC_OP_INPUT : NC_OP_PARAM, nm[k], ts[q]);
    }
    nc_id gs = nc_b_scale(g, x[1], 0.5);  // a scaled gradient, used twice
    nc_id m1 = nc_op2(g, NC_OP_ADD, x[2], nc_b_scale(g, nc_op2(g, NC_OP_SUB, gs, x[2]), 0.1));
    nc_id v1 = nc_op2(g, NC_OP_ADD, x[3], nc_b_scale(g, nc_op2(g, NC_OP_SUB, nc_op1(g, NC_OP_SQUARE, gs), x[3]), 0.05));
    nc_id den = nc_op2(g, NC_OP_ADD, nc_op1(g, NC_OP_SQRT, nc_op1(g, NC_OP_ABS, v1)), nc_b_const_like(g, v1, 1e-3));
    nc_id step = nc_op2(g, NC_OP_MUL, nc_op2(g, NC_OP_DIV, m1, den), nc_b_expand_like(g, lr, m1));
    nc_id p1 = nc_op2(g, NC_OP_SUB, x[0], step);
    char on[3][16];
    snprintf(on[0], 16, "p%d'", q), snprintf(on[1], 16, "m%d'", q), snprintf(on[2], 16, "v%d'", q);
    cr_assert_null(nc_graph_set_output(g, on[0], p1));
    cr_assert_null(nc_graph_set_output(g, on[1], m1));
    cr_assert_null(nc_graph_set_output(g, on[2], v1));
  }
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

Test(fusion, optimizer_update_one_kernel_per_parameter) {
  nc_graph *g = adamw_graph();
  int64_t syms[NC_MAX_SYMS] = {0};
  fz_feeds fs;
  fz_feed_random(g, syms, 31, 1, &fs);
  fz_check(g, &fs, NC_PATTERN_UPDATE_GROUP, "_update_group", 1e-6);
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? NC_PATTERN_UPDATE_GROUP : 0, &h);
    if (off) {
      cr_expect_eq(p->nkernels, 8, "off: %d kernels (p, m, v and the scaled gradient, per parameter)", p->nkernels);
    } else {
      cr_expect_eq(p->nkernels, 2, "on: %d kernels", p->nkernels);
      for (int q = 0; q < p->nkernels; q++) {
        int written = 0;
        for (int b = 0; b < p->kernels[q].k.nbufs; b++) written += p->kernels[q].k.bufs[b].written;
        cr_expect_eq(written, 3, "kernel %s writes %d buffers", p->kernels[q].k.name, written);
      }
    }
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

// ---- the symmetric GEMM hint (Muon's Polar Express) ------------------------------
// two iterations of X <- aX + (bA + cA A) X, A = X X^T, on a wide and a tall
// (A = X^T X) matrix of odd sizes.
static nc_graph *polar_graph(void) {
  nc_graph *g = nc_graph_new("polar");
  nc_dim dw[2] = {nc_dim_const(37), nc_dim_const(70)}, dt[2] = {nc_dim_const(45), nc_dim_const(19)};
  nc_id xs[2] = {nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_F32, 2, dw)), nc_leaf(g, NC_OP_PARAM, "t", nc_type_make(NC_F32, 2, dt))};
  const char *names[2] = {"w'", "t'"};
  for (int q = 0; q < 2; q++) {
    nc_id x = nc_b_scale(g, xs[q], 0.1);
    bool tall = q == 1;
    for (int it = 0; it < 2; it++) {
      nc_id a = tall ? nc_b_matmul(g, x, x, true, false) : nc_b_matmul(g, x, x, false, true);
      nc_id b = nc_op2(g, NC_OP_ADD, nc_b_scale(g, a, -1.5), nc_b_scale(g, nc_b_matmul(g, a, a, false, false), 0.5));
      nc_id xb = tall ? nc_b_matmul(g, x, b, false, false) : nc_b_matmul(g, b, x, false, false);
      x = nc_op2(g, NC_OP_ADD, nc_b_scale(g, x, 2.0), xb);
    }
    cr_assert_null(nc_graph_set_output(g, names[q], x));
  }
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

Test(fusion, symmetric_gemm_hint) {
  nc_graph *g = polar_graph();
  int64_t syms[NC_MAX_SYMS] = {0};
  fz_feeds fs;
  fz_feed_random(g, syms, 41, 1, &fs);
  fz_check(g, &fs, NC_PATTERN_SYMMETRIC_GEMM, NULL, 1e-5);
  for (int off = 0; off < 2; off++) {  // on: X X^T, X^T X and A A (4 per matrix) carry sym = 1; B X does not
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? NC_PATTERN_SYMMETRIC_GEMM : 0, &h);
    int sym = 0, mm = 0;
    for (int q = 0; q < p->nkernels; q++) {
      const nc_kernel *k = &p->kernels[q].k;
      if (!nc_kernel_is_template(k)) continue;
      const nc_kstmt *s = nc_ks_get(k, k->body);
      mm++;
      sym += s->nargs > 9 && nc_kernel_eval_index(k, s->args[9], NULL) == 1;
    }
    cr_expect_eq(mm, 12, "%d matmul kernels", mm);
    cr_expect_eq(sym, off ? 0 : 8, "pattern %s: %d symmetric matmuls", off ? "off" : "on", sym);
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

// ---- ReLU^2 in the MLP matmul's epilogue ---------------------------------------------
// y = relu(x @ w1^T)^2 @ w2^T (x (B,7,C)); train: the loss sum(y * wout) and
// its gradients w.r.t. x, w1, w2 (the backward reads u = x @ w1^T: the GEMM
// stores u and relu(u)^2), else y alone (the GEMM stores relu(u)^2 only).
static nc_graph *mlp_graph(int64_t C, int64_t Hd, bool train) {
  nc_graph *g = nc_graph_new(train ? "mlp_train" : "mlp_fwd");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim dx[3] = {nc_dim_sym(B), nc_dim_const(7), nc_dim_const(C)};
  nc_dim d1[2] = {nc_dim_const(Hd), nc_dim_const(C)}, d2[2] = {nc_dim_const(C), nc_dim_const(Hd)};
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 3, dx));
  nc_id w1 = nc_leaf(g, NC_OP_PARAM, "w1", nc_type_make(NC_F32, 2, d1));
  nc_id w2 = nc_leaf(g, NC_OP_PARAM, "w2", nc_type_make(NC_F32, 2, d2));
  nc_id h = nc_op1(g, NC_OP_SQUARE, nc_op1(g, NC_OP_RELU, nc_b_matmul(g, x, w1, false, true)));
  nc_id y = nc_b_matmul(g, h, w2, false, true);
  cr_assert_null(nc_graph_set_output(g, "y", y));
  if (train) {
    nc_id wout = nc_leaf(g, NC_OP_INPUT, "wout", nc_type_make(NC_F32, 3, dx));
    nc_id loss = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op2(g, NC_OP_MUL, y, wout), 7, false);
    nc_id wrt[3] = {x, w1, w2}, grads[3];
    cr_assert_null(nc_autodiff(g, loss, NC_NONE, wrt, 3, grads));
    cr_assert_null(nc_graph_set_output(g, "dx", grads[0]));
    cr_assert_null(nc_graph_set_output(g, "dw1", grads[1]));
    cr_assert_null(nc_graph_set_output(g, "dw2", grads[2]));
  }
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

// B rows of 7 tokens: B 3 -> M 21 (the packed GEMM, an edge tile), B 1 -> M 7
// (the skinny path); C 400 > kc 384: two K blocks, the epilogue on the last.
static void relu2_case(int64_t C, int64_t Hd, bool train, int64_t B, uint64_t seed) {
  nc_graph *g = mlp_graph(C, Hd, train);
  int64_t syms[NC_MAX_SYMS] = {B};
  fz_feeds fs;
  fz_feed_random(g, syms, seed, 1, &fs);
  fz_check(g, &fs, NC_PATTERN_RELU2_EPILOGUE, "_matmul_relu2", 1e-5);
  // golden: on, neither relu(u) nor its square has a kernel of its own; the
  // epilogue GEMM writes u and relu(u)^2 (train) or relu(u)^2 alone
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? NC_PATTERN_RELU2_EPILOGUE : 0, &h);
    int relu_k = fz_count_kernels(p, "_relu("), sq_k = fz_count_kernels(p, "_square"), epi_k = 0, written = 0, nbufs = 0;
    for (int q = 0; q < p->nkernels; q++) {
      const nc_kernel *k = &p->kernels[q].k;
      if (!strstr(k->name, "_matmul_relu2")) continue;
      epi_k++;
      const nc_kstmt *s = nc_ks_get(k, k->body);
      nbufs = s->ncbufs;
      for (int b = 0; b < k->nbufs; b++) written += k->bufs[b].written;
      cr_expect(s->nargs == 11 && nc_kernel_eval_index(k, s->args[10], NULL) == 1, "%s: no epilogue argument", k->name);
    }
    relu_k = 0;
    for (int q = 0; q < p->nkernels; q++) relu_k += nc_graph_node(h, p->kernels[q].node)->op == NC_OP_RELU;
    if (off) {
      cr_expect(epi_k == 0 && sq_k == 1 && relu_k == (train ? 1 : 0), "off: %d epilogue, %d square, %d relu kernels", epi_k, sq_k, relu_k);
    } else {
      cr_expect(epi_k == 1 && sq_k == 0 && relu_k == 0, "on: %d epilogue, %d square, %d relu kernels", epi_k, sq_k, relu_k);
      cr_expect(nbufs == (train ? 4 : 3) && written == (train ? 2 : 1), "on: the epilogue GEMM has %d buffers, writes %d", nbufs, written);
    }
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

Test(fusion, relu2_epilogue_train) { relu2_case(20, 36, true, 3, 51); }
Test(fusion, relu2_epilogue_train_two_k_blocks_skinny) { relu2_case(400, 20, true, 1, 52); }
Test(fusion, relu2_epilogue_forward_only) { relu2_case(20, 70, false, 3, 53); }
Test(fusion, relu2_epilogue_forward_two_k_blocks) { relu2_case(400, 24, false, 3, 54); }
Test(fusion, relu2_epilogue_forward_skinny) { relu2_case(30, 33, false, 1, 55); }

// ---- the updates of same-shaped parameters in one launch ---------------------------
// Per parameter q: m' = 0.9 m + g (reads only inputs: joins the first such
// kernel's launch), p' = p - 0.01 (g g^T) g (reads a GEMM computed per
// parameter: joins the last one's launch). Three (9,21) parameters and one (5,21).
static nc_graph *batch_graph(void) {
  nc_graph *g = nc_graph_new("update_batch");
  for (int q = 0; q < 4; q++) {
    nc_dim d[2] = {nc_dim_const(q < 3 ? 9 : 5), nc_dim_const(21)};
    nc_type t = nc_type_make(NC_F32, 2, d);
    char nm[3][16];
    snprintf(nm[0], 16, "p%d", q), snprintf(nm[1], 16, "g%d", q), snprintf(nm[2], 16, "m%d", q);
    nc_id p = nc_leaf(g, NC_OP_PARAM, nm[0], t), gr = nc_leaf(g, NC_OP_INPUT, nm[1], t), m = nc_leaf(g, NC_OP_INPUT, nm[2], t);
    nc_id m1 = nc_op2(g, NC_OP_ADD, nc_b_scale(g, m, 0.9), gr);
    nc_id x = nc_b_matmul(g, nc_b_matmul(g, gr, gr, false, true), gr, false, false);
    nc_id p1 = nc_op2(g, NC_OP_SUB, p, nc_b_scale(g, x, 0.01));
    char on[2][16];
    snprintf(on[0], 16, "p%d'", q), snprintf(on[1], 16, "m%d'", q);
    cr_assert_null(nc_graph_set_output(g, on[0], p1));
    cr_assert_null(nc_graph_set_output(g, on[1], m1));
  }
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

Test(fusion, optimizer_updates_of_a_group_in_one_launch) {
  nc_graph *g = batch_graph();
  int64_t syms[NC_MAX_SYMS] = {0};
  fz_feeds fs;
  fz_feed_random(g, syms, 61, 1, &fs);
  fz_check(g, &fs, NC_PATTERN_UPDATE_BATCH, "_update_batch", 1e-5);
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? NC_PATTERN_UPDATE_BATCH : 0, &h);
    int b3 = fz_count_kernels(p, "_update_batch3"), mm = fz_count_kernels(p, "_matmul");
    // off: 8 GEMMs + 8 updates; on: the three (9,21) m' in one kernel, their p' in another
    cr_expect_eq(mm, 8, "%d matmul kernels", mm);
    if (off) cr_expect(p->nkernels == 16 && b3 == 0, "off: %d kernels, %d batches", p->nkernels, b3);
    else cr_expect(p->nkernels == 12 && b3 == 2, "on: %d kernels, %d batches of 3", p->nkernels, b3);
    for (int q = 0; q < p->nkernels && !off; q++) {
      const nc_kernel *k = &p->kernels[q].k;
      if (!strstr(k->name, "_update_batch")) continue;
      int written = 0, loops = 0;
      for (int b = 0; b < k->nbufs; b++) written += k->bufs[b].written;
      for (nc_ks s = k->body; s != NC_KS_NONE; s = nc_ks_get(k, s)->next) loops++;
      cr_expect(written == 3 && loops == 3, "%s: writes %d buffers in %d loop nests", k->name, written, loops);
      // the m' batch runs where the first m' ran (before every GEMM), the p'
      // batch where the last p' ran (after the six GEMMs of the (9,21) parameters)
      int before = 0;
      for (int r = 0; r < q; r++) before += strstr(p->kernels[r].k.name, "_matmul") != NULL;
      bool is_m = nc_graph_node(h, p->kernels[q].node)->op == NC_OP_ADD;
      cr_expect(is_m ? before == 0 : before == 6, "%s: at position %d, %d GEMMs before it", k->name, q, before);
    }
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

// ---- GEMMs with an addend (Polar Express sums, residual adds) -----------------------
// B = -1.5 A + 0.5 A A (A = X X^T: symmetric, the hint kept), Y = 2 X + B X;
// y = r2 + r w^T (K 400 > kc: two K blocks; B 1: the skinny path);
// s = 0.5 q k^T + e (a bmm).
static nc_graph *gemm_add_graph(void) {
  nc_graph *g = nc_graph_new("gemm_add");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim dx[2] = {nc_dim_const(37), nc_dim_const(70)};
  nc_dim dr[3] = {nc_dim_sym(B), nc_dim_const(7), nc_dim_const(400)}, dw[2] = {nc_dim_const(20), nc_dim_const(400)};
  nc_dim dr2[3] = {nc_dim_sym(B), nc_dim_const(7), nc_dim_const(20)};
  nc_dim dq[4] = {nc_dim_sym(B), nc_dim_const(3), nc_dim_const(5), nc_dim_const(8)};
  nc_dim de[4] = {nc_dim_sym(B), nc_dim_const(3), nc_dim_const(5), nc_dim_const(5)};
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 2, dx));
  nc_id a = nc_b_matmul(g, x, x, false, true);
  nc_id bm = nc_op2(g, NC_OP_ADD, nc_b_scale(g, a, -1.5), nc_b_scale(g, nc_b_matmul(g, a, a, false, false), 0.5));
  nc_id y1 = nc_op2(g, NC_OP_ADD, nc_b_scale(g, x, 2.0), nc_b_matmul(g, bm, x, false, false));
  nc_id r = nc_leaf(g, NC_OP_PARAM, "r", nc_type_make(NC_F32, 3, dr));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_F32, 2, dw));
  nc_id r2 = nc_leaf(g, NC_OP_PARAM, "r2", nc_type_make(NC_F32, 3, dr2));
  nc_id y2 = nc_op2(g, NC_OP_ADD, r2, nc_b_matmul(g, r, w, false, true));
  nc_id q = nc_leaf(g, NC_OP_PARAM, "q", nc_type_make(NC_F32, 4, dq));
  nc_id k = nc_leaf(g, NC_OP_PARAM, "k", nc_type_make(NC_F32, 4, dq));
  nc_id e = nc_leaf(g, NC_OP_PARAM, "e", nc_type_make(NC_F32, 4, de));
  nc_id s = nc_op2(g, NC_OP_ADD, nc_b_scale(g, nc_b_bmm(g, q, k, false, true), 0.5), e);
  cr_assert_null(nc_graph_set_output(g, "Y", y1));
  cr_assert_null(nc_graph_set_output(g, "y", y2));
  cr_assert_null(nc_graph_set_output(g, "s", s));
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

static void gemm_add_case(int64_t B, uint64_t seed) {
  nc_graph *g = gemm_add_graph();
  int64_t syms[NC_MAX_SYMS] = {B};
  fz_feeds fs;
  fz_feed_random(g, syms, seed, 1, &fs);
  fz_check(g, &fs, NC_PATTERN_GEMM_ADD, "_matmul_add", 1e-5);
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? NC_PATTERN_GEMM_ADD : 0, &h);
    int fused = fz_count_kernels(p, "_matmul_add"), adds = 0, sym_add = 0;
    for (int q = 0; q < p->nkernels; q++) {
      const nc_kernel *k = &p->kernels[q].k;
      adds += nc_graph_node(h, p->kernels[q].node)->op == NC_OP_ADD && !nc_kernel_is_template(k);
      if (!strstr(k->name, "_matmul_add")) continue;
      const nc_kstmt *s = nc_ks_get(k, k->body);
      cr_expect(s->nargs == 13 && s->ncbufs == 4 && nc_kernel_eval_index(k, s->args[10], NULL) == 2, "%s: not an addend call", k->name);
      sym_add += nc_kernel_eval_index(k, s->args[9], NULL) == 1;
    }
    // on: the four sums are GEMMs (b A + c A A keeps the symmetric hint); off: four add kernels
    if (off) cr_expect(fused == 0 && adds == 4, "off: %d fused, %d add kernels", fused, adds);
    else cr_expect(fused == 4 && adds == 0 && sym_add == 1, "on: %d fused (%d symmetric), %d add kernels", fused, sym_add, adds);
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

Test(fusion, gemm_addend_packed) { gemm_add_case(3, 71); }
Test(fusion, gemm_addend_skinny) { gemm_add_case(1, 72); }

// ---- Polar Express in Gram form (Muon's non-square matrices) ------------------------
// The Muon update of three non-square params of the tiny spec (c_fc 128x32
// tall, mlp.c_proj 32x128 wide, c_k 16x32 wide: GQA) built by nc_train_build
// with polar_gram on and off. The Gram graph runs on the evaluator and the
// CPU (1, 2 threads) against the interpreter, with the symmetric hint on and
// off; its interpreted outputs match the X form's (the oracle: the plain
// iteration) within fp32 reassociation; and its plan's Gram-side products
// (polynomials of one Gram matrix) carry the symmetric hint.
static bool pg_pick(const nc_param_desc *p, void *ctx) {
  (void)ctx;
  return !strcmp(p->name, "transformer.h.0.mlp.c_fc.weight") || !strcmp(p->name, "transformer.h.0.mlp.c_proj.weight") ||
         !strcmp(p->name, "transformer.h.0.attn.c_k.weight");
}

static nc_graph *pg_graph(bool gram) {
  char path[1024];
  nc_model_spec s;
  nc_status st = nc_spec_load(nc_test_path(path, sizeof path, "models/specs/tiny.xml"), &s);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  oc.polar_gram = gram;
  nc_train_opts to = {.kind = NC_TRAIN_APPLY, .only = pg_pick};
  nc_graph *g;
  st = nc_train_build(&s, &oc, &to, &g);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return g;
}

static void pg_count(const nc_graph *g, unsigned off, int *mm, int *sym) {
  nc_graph *h;
  nc_plan *p = fz_lower(g, off, &h);
  *mm = *sym = 0;
  for (int q = 0; q < p->nkernels; q++) {
    const nc_kernel *k = &p->kernels[q].k;
    if (!nc_kernel_is_template(k)) continue;
    const nc_kstmt *s = nc_ks_get(k, k->body);
    (*mm)++;
    *sym += s->nargs > 9 && nc_kernel_eval_index(k, s->args[9], NULL) == 1;
  }
  nc_plan_free(p);
  nc_graph_free(h);
}

Test(fusion, polar_express_gram_form) {
  nc_graph *gg = pg_graph(true), *gx = pg_graph(false);
  int64_t syms[NC_MAX_SYMS] = {0};
  fz_feeds fs;
  fz_feed_random(gg, syms, 81, 1, &fs);
  fz_check(gg, &fs, NC_PATTERN_SYMMETRIC_GEMM, NULL, 2e-5);
  int nout = nc_graph_noutputs(gg);
  cr_assert_eq(nout, nc_graph_noutputs(gx));
  nc_tensor a[16], b[16];
  cr_assert_leq(nout, 16);
  nc_status st = nc_interp_run(gg, fs.f, fs.n, a);
  cr_assert_null(st, "%s", nc_status_msg(st));
  st = nc_interp_run(gx, fs.f, fs.n, b);
  cr_assert_null(st, "%s", nc_status_msg(st));
  for (int k = 0; k < nout; k++) {
    cr_assert_str_eq(nc_graph_output_name(gg, k), nc_graph_output_name(gx, k));
    double e = nc_test_rel_err(&a[k], &b[k]);
    cr_expect_lt(e, 2e-5, "%s: Gram form vs X form rel err %g", nc_graph_output_name(gg, k), e);
    nc_tensor_free(&a[k]);
    nc_tensor_free(&b[k]);
  }
  // per non-square matrix, 5 steps: X form 3 products a step (X X^T and A A
  // symmetric): 15, 10 symmetric. Gram form from step 2: 6 (4) + A (1) + step
  // 2: A A, B A, B A B (3) + step 3: A A, B Q, B A, B A B (4) + step 4: A A,
  // B Q (2) + Q X (not symmetric): 17, 14 symmetric
  int mm, sym;
  pg_count(gx, 0, &mm, &sym);
  cr_expect(mm == 45 && sym == 30, "X form: %d matmuls, %d symmetric", mm, sym);
  pg_count(gg, 0, &mm, &sym);
  cr_expect(mm == 51 && sym == 42, "Gram form: %d matmuls, %d symmetric", mm, sym);
  pg_count(gg, NC_PATTERN_SYMMETRIC_GEMM, &mm, &sym);
  cr_expect(mm == 51 && sym == 0, "Gram form, symmetric hint off: %d matmuls, %d symmetric", mm, sym);
  fz_free_feeds(&fs);
  nc_graph_free(gg);
  nc_graph_free(gx);
}

Test(fusion, graph_pattern_switches) {  // NC_PATTERNS_OFF's bits 1024 and 16384 reach nc_optim_defaults
  nc_optim_cfg oc;
  cr_assert_eq(setenv("NC_PATTERNS_OFF", "1024", 1), 0);
  nc_optim_defaults(&oc);
  cr_expect(!oc.polar_gram);
  cr_expect(oc.muon_stack);
  cr_assert_eq(setenv("NC_PATTERNS_OFF", "16896", 1), 0);  // 16384 + 512
  nc_optim_defaults(&oc);
  cr_expect(oc.polar_gram && !oc.muon_stack);
  cr_assert_eq(unsetenv("NC_PATTERNS_OFF"), 0);
  nc_optim_defaults(&oc);
  cr_expect(oc.polar_gram && oc.muon_stack);
}

// ---- concat as one loop nest per input -------------------------------------------------
// c = concat(x, exp(y), 2 x) along axis 1 (B, 3+2+3, 5) and d = concat along
// the last axis (rope's halves): on, each concat kernel has one parallel loop
// nest per input; off, one nest with a select chain.
static nc_graph *concat_graph(void) {
  nc_graph *g = nc_graph_new("concat");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim dx[3] = {nc_dim_sym(B), nc_dim_const(3), nc_dim_const(5)}, dy[3] = {nc_dim_sym(B), nc_dim_const(2), nc_dim_const(5)};
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 3, dx));
  nc_id y = nc_leaf(g, NC_OP_PARAM, "y", nc_type_make(NC_F32, 3, dy));
  nc_id parts[3] = {x, nc_op1(g, NC_OP_EXP, y), nc_b_scale(g, x, 2.0)};
  nc_id c = nc_b_concat(g, parts, 3, 1);
  nc_id halves[2] = {nc_op1(g, NC_OP_NEG, x), nc_op2(g, NC_OP_MUL, x, x)};
  nc_id d = nc_b_concat(g, halves, 2, 2);
  cr_assert_null(nc_graph_set_output(g, "c", c));
  cr_assert_null(nc_graph_set_output(g, "d", d));
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

Test(fusion, concat_one_nest_per_input) {
  nc_graph *g = concat_graph();
  int64_t syms[NC_MAX_SYMS] = {3};
  fz_feeds fs;
  fz_feed_random(g, syms, 91, 1, &fs);
  fz_check(g, &fs, NC_PATTERN_CONCAT_NESTS, NULL, 1e-6);
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? NC_PATTERN_CONCAT_NESTS : 0, &h);
    int seen = 0;
    for (int q = 0; q < p->nkernels; q++) {
      const nc_kernel *k = &p->kernels[q].k;
      if (!strstr(k->name, "_concat")) continue;
      int nest = 0;
      for (nc_ks st = k->body; st != NC_KS_NONE; st = nc_ks_get(k, st)->next) nest++;
      int want = off ? 1 : nc_graph_node(h, p->kernels[q].node)->nin;
      cr_expect_eq(nest, want, "%s: %d loop nests, want %d", k->name, nest, want);
      seen++;
    }
    cr_expect_eq(seen, 2);
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

// ---- Muon's same-shaped matrices stacked (batched GEMMs) ------------------------------
// The Muon update of five params of the tiny spec: c_q of both layers (32x32,
// a stack of 2) and c_k, c_v of layer 0 and c_k of layer 1 (16x32, a stack of
// 3 in Gram form), built with muon_stack on and off. The stacked graph
// matches the unstacked one on the interpreter and runs on the evaluator
// and the CPU (1, 2 threads, concat nests on and off) like the interpreter;
// its plan has batched GEMMs (batch 2 and 3) and no per-matrix ones.
static bool st_pick(const nc_param_desc *p, void *ctx) {
  (void)ctx;
  return strstr(p->name, "attn.c_q.weight") || strstr(p->name, "attn.c_k.weight") || !strcmp(p->name, "transformer.h.0.attn.c_v.weight");
}

static nc_graph *st_graph(bool stack) {
  char path[1024];
  nc_model_spec s;
  nc_status st = nc_spec_load(nc_test_path(path, sizeof path, "models/specs/tiny.xml"), &s);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  oc.muon_stack = stack;
  oc.polar_gram = true;
  nc_train_opts to = {.kind = NC_TRAIN_APPLY, .only = st_pick};
  nc_graph *g;
  st = nc_train_build(&s, &oc, &to, &g);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return g;
}

Test(fusion, muon_stack_batched_gemms) {
  nc_graph *gs = st_graph(true), *gu = st_graph(false);
  int64_t syms[NC_MAX_SYMS] = {0};
  fz_feeds fs;
  fz_feed_random(gs, syms, 93, 1, &fs);
  fz_check(gs, &fs, NC_PATTERN_CONCAT_NESTS, NULL, 2e-5);
  int nout = nc_graph_noutputs(gs);
  cr_assert_eq(nout, nc_graph_noutputs(gu));
  nc_tensor *a = calloc((size_t)nout, sizeof *a), *b = calloc((size_t)nout, sizeof *b);
  nc_status st = nc_interp_run(gs, fs.f, fs.n, a);
  cr_assert_null(st, "%s", nc_status_msg(st));
  st = nc_interp_run(gu, fs.f, fs.n, b);
  cr_assert_null(st, "%s", nc_status_msg(st));
  for (int k = 0; k < nout; k++) {
    cr_assert_str_eq(nc_graph_output_name(gs, k), nc_graph_output_name(gu, k));
    double e = nc_test_rel_err(&a[k], &b[k]);
    cr_expect_lt(e, 2e-5, "%s: stacked vs per matrix rel err %g", nc_graph_output_name(gs, k), e);
    nc_tensor_free(&a[k]);
    nc_tensor_free(&b[k]);
  }
  free(a), free(b);
  for (int v = 0; v < 2; v++) {  // stacked: every GEMM batched over 2 or 3 matrices; unstacked: batch 1
    nc_graph *h;
    nc_plan *p = fz_lower(v ? gu : gs, 0, &h);
    int b1 = 0, b2 = 0, b3 = 0;
    for (int q = 0; q < p->nkernels; q++) {
      const nc_kernel *k = &p->kernels[q].k;
      if (!nc_kernel_is_template(k)) continue;
      int64_t batch = nc_kernel_eval_index(k, nc_ks_get(k, k->body)->args[0], NULL);
      b1 += batch == 1, b2 += batch == 2, b3 += batch == 3;
    }
    // square (X form): 15 products; 16x32 (Gram form from step 2): 17
    if (v) cr_expect(b1 == 2 * 15 + 3 * 17 && b2 == 0 && b3 == 0, "unstacked: %d/%d/%d GEMMs of batch 1/2/3", b1, b2, b3);
    else cr_expect(b1 == 0 && b2 == 15 && b3 == 17, "stacked: %d/%d/%d GEMMs of batch 1/2/3", b1, b2, b3);
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fz_free_feeds(&fs);
  nc_graph_free(gs);
  nc_graph_free(gu);
}

// ---- cross-entropy gradient from the forward's logsumexp -----------------------------
// The softcap + cross-entropy graph above with NC_PATTERN_CE_LSE on and off
// (SOFTCAP_CE on; its own test runs LSE with SOFTCAP off): on, the gradient's
// kernel reads the forward's per-row loss buffer and makes one sweep over
// each row (no accumulators), and the memory plan keeps the loss rows alive
// until that kernel; off, three sweeps.
static void ce_lse_case(double cap, int64_t V, uint64_t seed) {
  nc_graph *g = ce_graph(cap, V);
  int64_t syms[NC_MAX_SYMS] = {3};
  fz_feeds fs;
  fz_feed_random(g, syms, seed, (int)V, &fs);
  for (int i = 0; i < fs.n; i++)  // two ignored positions
    if (!strcmp(fs.f[i].name, "t")) ((int32_t *)fs.t[i].data)[2] = ((int32_t *)fs.t[i].data)[9] = -1;
  fz_check(g, &fs, NC_PATTERN_CE_LSE, NULL, 1e-5);
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fz_lower(g, off ? NC_PATTERN_CE_LSE : 0, &h);
    int found = 0;
    for (int q = 0; q < p->nkernels; q++) {
      const nc_plan_kernel *pk = &p->kernels[q];
      if (!strstr(pk->k.name, "_ce_grad_epilogue")) continue;
      found++;
      nc_id gn = NC_NONE;  // the cross_entropy_grad node this kernel computes
      for (nc_id i = 0; i < nc_graph_nnodes(h); i++)
        if (nc_graph_node(h, i)->op == NC_OP_CROSS_ENTROPY_GRAD) gn = i;
      cr_assert_neq(gn, NC_NONE);
      nc_id fw = p->extra_read ? p->extra_read[gn] : NC_NONE;
      if (off) {
        cr_expect(fw == NC_NONE && pk->k.naccs == 2, "off: extra read %u, %d accumulators", fw, pk->k.naccs);
        continue;
      }
      cr_assert(fw != NC_NONE && nc_graph_node(h, fw)->op == NC_OP_CROSS_ENTROPY, "on: no forward loss read");
      cr_expect_eq(pk->k.naccs, 0, "on: %d accumulators (want one sweep)", pk->k.naccs);
      bool reads = false;
      for (int b = 0; b < pk->k.nbufs; b++) reads |= pk->buf_node[b] == fw && !pk->k.bufs[b].written;
      cr_expect(reads, "on: the gradient kernel does not read the loss rows");
      nc_memplan *mp;
      cr_assert_null(nc_plan_memplan(h, p, syms, &mp));
      const nc_membuf *mb = nc_memplan_find(mp, fw);
      cr_assert_not_null(mb);
      cr_expect_geq(mb->last, pk->node, "loss rows live to %u, read at %u", mb->last, pk->node);
      nc_memplan_free(mp);
    }
    cr_expect_eq(found, 1);
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fz_free_feeds(&fs);
  nc_graph_free(g);
}

Test(fusion, cross_entropy_grad_from_forward_lse) { ce_lse_case(3.0, 37, 13); }
Test(fusion, cross_entropy_grad_from_forward_lse_wide_rows) { ce_lse_case(15.0, 130, 14); }
