// decompose + fusion + lowering to kernel IR, checked against the reference
// interpreter: kernels run on the kernel-IR evaluator must reproduce the
// graph's outputs (whole GPT forward, backward and optimizer step included).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/model_io.h"
#include "models/init.h"
#include "models/train.h"
#include "passes/lower.h"
#include "passes/pass.h"
#include "runtime/cpu.h"
#include "runtime/plan_run.h"
#include "ir/build.h"
#include "tests/support/model_util.h"

#define GOLDEN_FUSION \
  "// plan: 2 kernels, 3 materialized of 6 nodes\n"\
  "// %2 -> f32[2,1]\n"\
  "kernel k2_reduce_max(out f32*t2, in f32*t0) {\n"\
  "  f32 acc0\n"\
  "  for i0 in [0, 2) parallel {\n"\
  "    acc0 = -inf\n"\
  "    for i1 in [0, 3) vectorize(16) {\n"\
  "      acc0 = MAX(acc0, ABS(t0[((i0*3) + i1)]))\n"\
  "    }\n"\
  "    t2[i0] = acc0\n"\
  "  }\n"\
  "}\n"\
  "// %5 -> f32[2,3]\n"\
  "kernel k5_exp(out f32*t5, in f32*t0, in f32*t2) {\n"\
  "  for i0 in [0, 2) parallel {\n"\
  "    for i1 in [0, 3) vectorize(16) {\n"\
  "      t5[((i0*3) + i1)] = EXP(SUB(t0[((i0*3) + i1)], t2[i0]))\n"\
  "    }\n"\
  "  }\n"\
  "}\n"

#define GOLDEN_ROW_FUSION \
  "// plan: 1 kernels, 2 materialized of 6 nodes\n"\
  "// %5 -> f32[2,3]\n"\
  "kernel k5_exp(out f32*t5, in f32*t0) {\n"\
  "  f32 acc0\n"\
  "  for i0 in [0, 2) parallel {\n"\
  "    acc0 = -inf\n"\
  "    for i1 in [0, 3) vectorize(16) {\n"\
  "      acc0 = MAX(acc0, ABS(t0[((i0*3) + i1)]))\n"\
  "    }\n"\
  "    for i2 in [0, 3) vectorize(16) {\n"\
  "      t5[((i0*3) + i2)] = EXP(SUB(t0[((i0*3) + i2)], acc0))\n"\
  "    }\n"\
  "  }\n"\
  "}\n"

// Fills the session with everything the graph's inputs/params need.
static void feed_random(nc_session *s, const nc_graph *g, int64_t B, int64_t T, int vocab, uint64_t seed) {
  nc_rng r;
  nc_rng_seed(&r, seed);
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    const char *name = nc_node_name(g, i);
    if (!name || nc_session_get(s, name)) continue;
    nc_type t = nc_type_of(g, i);
    int64_t shape[NC_MAX_RANK], syms[NC_MAX_SYMS] = {B, T};
    for (int d = 0; d < t.rank; d++) shape[d] = nc_dim_eval(t.dim[d], syms);
    nc_tensor x;
    cr_assert_null(nc_tensor_alloc(&x, t.dtype, t.rank, shape));
    // second moments must be non-negative (their square roots are taken)
    bool positive = !strncmp(name, "adamw.exp_avg_sq.", 17) || !strncmp(name, "muon.second_momentum.", 21);
    for (int64_t j = 0; j < nc_tensor_numel(&x); j++) {
      if (t.dtype == NC_I32) ((int32_t *)x.data)[j] = (int32_t)(nc_rng_next(&r) % (uint64_t)vocab);
      else ((float *)x.data)[j] = (float)(positive ? nc_rng_uniform(&r) * 0.01 : nc_rng_uniform(&r) * 0.2 - 0.1);
    }
    if (t.rank == 0 && t.dtype == NC_F32) *(float *)x.data = (float)(0.1 + 0.8 * nc_rng_uniform(&r));  // scalars in (0,1)
    cr_assert_null(nc_session_put(s, name, &x));
  }
}

static void collect_feeds(const nc_session *s, const nc_graph *g, nc_feed *feeds, int *n) {
  *n = 0;
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    const char *name = nc_node_name(g, i);
    if (name && nc_session_get(s, name)) feeds[(*n)++] = (nc_feed){name, nc_session_get(s, name)};
  }
}

// Runs g on the interpreter and decompose(g) through plan+evaluator; compares.
// device: 0 = kernel-IR evaluator, else the CPU backend with that many threads
// (negative: AVX2-only codegen with -device threads).
static void check_graph_on(nc_graph *g, nc_session *s, bool fuse, double tol, int device) {
  int nout = nc_graph_noutputs(g);
  nc_feed *feeds = calloc(nc_graph_nnodes(g), sizeof *feeds);
  int nf;
  collect_feeds(s, g, feeds, &nf);
  nc_tensor *want = calloc((size_t)nout, sizeof *want), *got = calloc((size_t)nout, sizeof *got);
  nc_status st = nc_interp_run(g, feeds, nf, want);
  cr_assert_null(st, "interp: %s", nc_status_msg(st));
  nc_graph *h = g;
  // decompose works on a copy: the pass replaces the graph it gets
  nc_graph *copy;
  cr_assert_null(nc_graph_copy(g, &copy));
  h = copy;
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.verify = true;
  const char *passes[] = {"decompose", "dce"};
  st = nc_pass_run_pipeline(&h, passes, 2, &ctx);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_lower_opts lo = {.fuse = fuse};
  nc_plan *p;
  st = nc_plan_build(h, &lo, &p);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_feed *hf = calloc(nc_graph_nnodes(h), sizeof *hf);
  int nh;
  collect_feeds(s, h, hf, &nh);
  nc_cpu *cpu = NULL;
  if (device) {
    nc_cpu_opts co = {.threads = device > 0 ? device : -device, .avx2_only = device < 0};
    st = nc_cpu_compile(p, &co, &cpu);
    cr_assert_null(st, "cpu compile: %s", nc_status_msg(st));
    cr_log_info("compiled %d kernels in %.3f s", p->nkernels, nc_cpu_compile_seconds(cpu));
    // run twice through one persistent arena: the second run reuses it
    nc_plan_mem *mem = nc_plan_mem_new();
    st = nc_plan_run_mem(h, p, mem, nc_cpu_runner, cpu, hf, nh, got);
    for (int k = 0; k < nout && !st; k++) nc_tensor_free(&got[k]);
    if (!st) st = nc_plan_run_mem(h, p, mem, nc_cpu_runner, cpu, hf, nh, got);
    cr_log_info("arena %lld bytes", (long long)nc_plan_mem_arena_bytes(mem));
    nc_plan_mem_free(mem);
  } else if (fuse) {
    nc_plan_mem *mem = nc_plan_mem_new();
    st = nc_plan_run_mem(h, p, mem, nc_kernel_runner_eval, NULL, hf, nh, got);
    nc_plan_mem_free(mem);
  } else {
    st = nc_plan_run(h, p, nc_kernel_runner_eval, NULL, hf, nh, got);
  }
  cr_assert_null(st, "plan: %s", nc_status_msg(st));
  nc_cpu_free(cpu);
  double worst = 0;
  for (int k = 0; k < nout; k++) {
    double e = nc_test_rel_err(&got[k], &want[k]);
    worst = fmax(worst, e);
    cr_expect_lt(e, tol, "output %s: rel err %g (fuse=%d)", nc_graph_output_name(g, k), e, fuse);
    nc_tensor_free(&got[k]);
    nc_tensor_free(&want[k]);
  }
  cr_log_info("%s: %d kernels for %u nodes (fuse=%d, device %d), %d outputs, worst rel err %.3g", nc_graph_name(g),
              p->nkernels, nc_graph_nnodes(h), fuse, device, nout, worst);
  nc_plan_free(p);
  nc_graph_free(h);
  free(feeds);
  free(hf);
  free(want);
  free(got);
}

static void check_graph(nc_graph *g, nc_session *s, bool fuse, double tol) { check_graph_on(g, s, fuse, tol, 0); }

static nc_model_spec spec(const char *name) {
  char rel[128], path[1024];
  snprintf(rel, sizeof rel, "models/specs/%s.xml", name);
  nc_model_spec s;
  cr_assert_null(nc_spec_load(nc_test_path(path, sizeof path, rel), &s));
  return s;
}

static void train_step_on(const char *name, bool fuse, int device) {
  nc_model_spec sp = spec(name);
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g;
  cr_assert_null(nc_train_build(&sp, &oc, &to, &g));
  nc_session *s = nc_session_new();
  cr_assert_null(nc_model_init_session(&sp, 3, s));
  feed_random(s, g, 2, 16, sp.vocab_size, 5);
  check_graph_on(g, s, fuse, 2e-4, device);
  nc_session_free(s);
  nc_graph_free(g);
}
static void train_step(const char *name, bool fuse) { train_step_on(name, fuse, 0); }

Test(lower, tiny_train_step_fused) { train_step("tiny", true); }
// The CPU backend (LLVM JIT) on the same graphs. Compiling ~700-1500 kernels
// takes tens of seconds under sanitizers, so the ASan run skips these (the
// normal build runs them).
#ifndef NC_SANITIZED
Test(lower, cpu_tiny_train_step_1_thread) { train_step_on("tiny", true, 1); }
Test(lower, cpu_tiny_all_train_step_2_threads) { train_step_on("tiny-all", true, 2); }
Test(lower, cpu_tiny_train_step_avx2) { train_step_on("tiny", true, -2); }
#endif
Test(lower, tiny_train_step_unfused) { train_step("tiny", false); }
Test(lower, tiny_all_train_step_fused) { train_step("tiny-all", true); }

Test(lower, forward_with_symbolic_shapes) {
  nc_model_spec sp = spec("tiny-all");
  nc_gpt_opts o = {.with_logits = true, .with_loss = true};
  nc_graph *g;
  cr_assert_null(nc_gpt_build(&sp, &o, &g));
  nc_session *s = nc_session_new();
  cr_assert_null(nc_model_init_session(&sp, 4, s));
  feed_random(s, g, 3, 11, sp.vocab_size, 6);  // B=3, T=11: odd sizes
  check_graph(g, s, true, 1e-4);
  nc_session_free(s);
  nc_graph_free(g);
}

Test(lower, plan_print_is_readable) {
  nc_graph *g = nc_graph_new("p");
  nc_dim d[2] = {nc_dim_const(2), nc_dim_const(3)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, d));
  nc_id y = nc_op1(g, NC_OP_TANH, nc_op1(g, NC_OP_EXP, x));
  cr_assert_null(nc_graph_set_output(g, "y", y));
  nc_lower_opts lo = {.fuse = true};
  nc_plan *p;
  cr_assert_null(nc_plan_build(g, &lo, &p));
  nc_buf b;
  nc_buf_init(&b);
  nc_plan_print(g, p, &b);
  cr_assert_str_eq(b.data,
                   "// plan: 1 kernels, 2 materialized of 3 nodes\n"
                   "// %2 -> f32[2,3]\n"
                   "kernel k2_tanh(out f32*t2, in f32*t0) {\n"
                   "  for i0 in [0, 2) parallel {\n"
                   "    for i1 in [0, 3) vectorize(16) {\n"
                   "      t2[((i0*3) + i1)] = TANH(EXP(t0[((i0*3) + i1)]))\n"
                   "    }\n"
                   "  }\n"
                   "}\n");
  nc_buf_free(&b);
  nc_plan_free(p);
  nc_graph_free(g);
}

// Golden dump of fusion: a reduction with an elementwise prologue and a
// broadcast consumer inlined (softmax's numerator).
Test(lower, fusion_golden_reduction_and_broadcast) {
  nc_graph *g = nc_graph_new("f");
  nc_dim d[2] = {nc_dim_const(2), nc_dim_const(3)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, d));
  nc_id m = nc_b_reduce(g, NC_OP_REDUCE_MAX, nc_op1(g, NC_OP_ABS, x), 2, true);
  nc_id y = nc_op1(g, NC_OP_EXP, nc_op2(g, NC_OP_SUB, x, nc_b_expand_like(g, m, x)));
  cr_assert_null(nc_graph_set_output(g, "y", y));
  // the generic fusion (the row pattern would fold the reduction in: below)
  nc_lower_opts lo = {.fuse = true, .patterns_off = NC_PATTERN_NORM_ROPE};
  nc_plan *p;
  cr_assert_null(nc_plan_build(g, &lo, &p));
  nc_buf b;
  nc_buf_init(&b);
  nc_plan_print(g, p, &b);
  cr_assert_str_eq(b.data, GOLDEN_FUSION);
  nc_buf_free(&b);
  nc_plan_free(p);
  // NC_PATTERN_NORM_ROPE on: the row's max and its consumer in one kernel
  lo.patterns_off = 0;
  cr_assert_null(nc_plan_build(g, &lo, &p));
  nc_buf_init(&b);
  nc_plan_print(g, p, &b);
  cr_assert_str_eq(b.data, GOLDEN_ROW_FUSION);
  nc_buf_free(&b);
  nc_plan_free(p);
  nc_graph_free(g);
}

// The cross-entropy pattern: on, decompose keeps a per-row cross_entropy for
// the row kernel; off (its switch), it becomes primitives. Both lower to the
// interpreter's values for every reduction, with ignored targets, and through
// their gradients.
#include "passes/autodiff.h"
static nc_graph *ce_graph(void) {
  nc_graph *g = nc_graph_new("ce");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim dl[3] = {nc_dim_sym(B), nc_dim_const(5), nc_dim_const(37)}, dt[2] = {nc_dim_sym(B), nc_dim_const(5)};
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 3, dl));
  nc_id t = nc_leaf(g, NC_OP_INPUT, "t", nc_type_make(NC_I32, 2, dt));
  nc_id outs[3];
  const char *names[3] = {"none", "sum", "mean"};
  nc_id total = NC_NONE;
  for (int r = 0; r < 3; r++) {
    outs[r] = nc_b_cross_entropy(g, x, t, -1, r);
    cr_assert_null(nc_graph_set_output(g, names[r], outs[r]));
    nc_id s = r == 0 ? nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op1(g, NC_OP_SQUARE, outs[0]), 3, false) : outs[r];
    total = total == NC_NONE ? s : nc_op2(g, NC_OP_ADD, total, s);
  }
  nc_id gx;
  cr_assert_null(nc_autodiff(g, total, NC_NONE, &x, 1, &gx));
  cr_assert_null(nc_graph_set_output(g, "dx", gx));
  return g;
}

static int count_op(const nc_graph *g, nc_op op) {
  int n = 0;
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) n += nc_graph_node(g, i)->op == op;
  return n;
}

Test(lower, cross_entropy_pattern_and_its_switch) {
  for (int off = 0; off < 2; off++) {
    nc_graph *g = ce_graph(), *h = ce_graph();
    nc_pass_ctx ctx;
    nc_pass_ctx_init(&ctx);
    ctx.verify = true;
    ctx.patterns_off = off ? NC_PATTERN_CROSS_ENTROPY : 0;
    const char *passes[] = {"decompose", "dce"};
    cr_assert_null(nc_pass_run_pipeline(&h, passes, 2, &ctx));
    if (off) cr_expect_eq(count_op(h, NC_OP_CROSS_ENTROPY) + count_op(h, NC_OP_CROSS_ENTROPY_GRAD), 0);
    else cr_expect_gt(count_op(h, NC_OP_CROSS_ENTROPY), 0, "the pattern keeps row cross-entropy");
    nc_graph_free(h);
    nc_session *s = nc_session_new();
    int64_t tl[2] = {3, 5};
    nc_tensor t;
    cr_assert_null(nc_tensor_alloc(&t, NC_I32, 2, tl));
    for (int i = 0; i < 15; i++) ((int32_t *)t.data)[i] = i % 4 == 1 ? -1 : (i * 7) % 37;
    cr_assert_null(nc_session_put(s, "t", &t));
    feed_random(s, g, 3, 5, 37, 9);
    if (off) {
      // run the decomposed path by hand: the switch must reach the pipeline
      nc_graph *hh = ce_graph();
      cr_assert_null(nc_pass_run_pipeline(&hh, passes, 2, &ctx));
      nc_lower_opts lo = {.fuse = true};
      nc_plan *p;
      cr_assert_null(nc_plan_build(hh, &lo, &p));
      for (int q = 0; q < p->nkernels; q++) cr_expect(!strstr(p->kernels[q].k.name, "cross_entropy"));
      nc_feed f[2] = {{"x", nc_session_get(s, "x")}, {"t", nc_session_get(s, "t")}};
      nc_tensor want[4], got[4];
      cr_assert_null(nc_interp_run(g, f, 2, want));
      cr_assert_null(nc_plan_run(hh, p, nc_kernel_runner_eval, NULL, f, 2, got));
      for (int k = 0; k < 4; k++) {
        double e = nc_test_rel_err(&got[k], &want[k]);
        cr_expect_lt(e, 1e-5, "pattern off, output %d: rel err %g", k, e);
        nc_tensor_free(&got[k]);
        nc_tensor_free(&want[k]);
      }
      nc_plan_free(p);
      nc_graph_free(hh);
    } else {
      check_graph_on(g, s, true, 1e-5, 0);
#ifndef NC_SANITIZED
      check_graph_on(g, s, true, 1e-5, 2);
#endif
    }
    nc_session_free(s);
    nc_graph_free(g);
  }
}
