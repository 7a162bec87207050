// The OpenCL backend (codegen/ocl_emit.c, runtime/ocl_device.c, --device
// opencl) against the reference interpreter: every op family, the fused
// kernels (reductions with prologues, the cross-entropy pattern, scatter_add,
// GEMM with transposes and tile edges), a whole training step, symbolic sizes
// bound per call, the program-binary cache (hit, corrupt entry rebuilt,
// refused binary rebuilt) and device selection errors. Without an OpenCL
// device (no ICD) the device tests skip with a message.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/cli_util.h"
#include "codegen/ocl_emit.h"
#include "ir/build.h"
#include "chat/model_io.h"
#include "models/init.h"
#include "models/train.h"
#include "passes/lower.h"
#include "passes/pass.h"
#include "runtime/exec.h"
#include "runtime/ocl_cache.h"
#include "runtime/ocl_device.h"
#include "runtime/session.h"
#include "tests/support/model_util.h"

#define NEED_OPENCL()                                                                  \
  do {                                                                                 \
    if (!nc_ocl_available()) cr_skip_test("no OpenCL device (install pocl-opencl-icd)"); \
  } while (0)

// Random values for every input/param of g (B = syms[0]); ids in [0, vocab)
// with every 5th target -1 when ignore is set.
static void fill(nc_session *s, const nc_graph *g, const int64_t *syms, int vocab, uint64_t seed, bool ignore) {
  nc_rng r;
  nc_rng_seed(&r, seed);
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (nd->op != NC_OP_INPUT && nd->op != NC_OP_PARAM) continue;
    const char *name = nc_node_name(g, i);
    if (nc_session_get(s, name)) continue;
    nc_type t = nd->type;
    int64_t shape[NC_MAX_RANK];
    for (int d = 0; d < t.rank; d++) shape[d] = nc_dim_eval(t.dim[d], syms);
    nc_tensor x;
    cr_assert_null(nc_tensor_alloc(&x, t.dtype, t.rank, shape));
    bool positive = !strncmp(name, "adamw.exp_avg_sq.", 17) || !strncmp(name, "muon.second_momentum.", 21);
    for (int64_t j = 0; j < nc_tensor_numel(&x); j++) {
      if (t.dtype == NC_I32)
        ((int32_t *)x.data)[j] = ignore && j % 5 == 3 ? -1 : (int32_t)(nc_rng_next(&r) % (uint64_t)vocab);
      else
        ((float *)x.data)[j] = (float)(positive ? nc_rng_uniform(&r) * 0.01 : nc_rng_uniform(&r) * 2 - 1);
    }
    if (t.rank == 0 && t.dtype == NC_F32) *(float *)x.data = (float)(0.1 + 0.8 * nc_rng_uniform(&r));
    cr_assert_null(nc_session_put(s, name, &x));
  }
}

static int feeds_for(const nc_session *s, const nc_graph *g, nc_feed *f) {
  int n = 0;
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (nd->op != NC_OP_INPUT && nd->op != NC_OP_PARAM) continue;
    const char *name = nc_node_name(g, i);
    if (nc_session_get(s, name)) f[n++] = (nc_feed){name, nc_session_get(s, name)};
  }
  return n;
}

// Runs g on the interpreter and through an exec on dev; every output within tol.
static double compare_on(nc_exec *ex, const nc_graph *g, nc_session *s, double tol) {
  int nout = nc_graph_noutputs(g);
  nc_feed *fi = calloc(nc_graph_nnodes(g) + 1, sizeof *fi);
  const nc_graph *fg = nc_exec_feed_graph(ex);
  nc_feed *fe = calloc(nc_graph_nnodes(fg) + 1, sizeof *fe);
  int ni = feeds_for(s, g, fi), ne = feeds_for(s, fg, fe);
  nc_tensor *want = calloc((size_t)nout, sizeof *want), *got = calloc((size_t)nout, sizeof *got);
  nc_status st = nc_interp_run(g, fi, ni, want);
  cr_assert_null(st, "interp: %s", nc_status_msg(st));
  st = nc_exec_run(ex, fe, ne, got);
  cr_assert_null(st, "opencl: %s", nc_status_msg(st));
  double worst = 0;
  for (int k = 0; k < nout; k++) {
    cr_assert_eq(got[k].dtype, want[k].dtype, "output %s: dtype", nc_graph_output_name(g, k));
    cr_assert_eq(nc_tensor_numel(&got[k]), nc_tensor_numel(&want[k]), "output %s: size", nc_graph_output_name(g, k));
    double e = nc_test_rel_err(&got[k], &want[k]);
    worst = fmax(worst, e);
    cr_expect_lt(e, tol, "output %s: rel err %g", nc_graph_output_name(g, k), e);
    nc_tensor_free(&got[k]);
    nc_tensor_free(&want[k]);
  }
  free(fi);
  free(fe);
  free(want);
  free(got);
  return worst;
}

static nc_exec *exec_on(const nc_graph *g, const char *dev) {
  nc_device d;
  cr_assert_null(nc_device_parse(dev, &d));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &d, &ex);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return ex;
}

#define C(v) nc_dim_const(v)

// Every op family in one graph (one program to build): elementwise float and
// integer math, comparisons and logic, casts through bf16/f16/ints/bool,
// reductions, norms, softmax, rope, matmul/bmm, attention (+grad),
// cross-entropy (+grad), gather/scatter_add, layout ops.
static nc_graph *op_zoo(void) {
  nc_graph *g = nc_graph_new("zoo");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim d3[3] = {nc_dim_sym(B), C(6), C(8)}, d4[4] = {nc_dim_sym(B), C(6), C(2), C(4)}, di[2] = {nc_dim_sym(B), C(6)};
  nc_type t3 = nc_type_make(NC_F32, 3, d3), t4 = nc_type_make(NC_F32, 4, d4);
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", t3), y = nc_leaf(g, NC_OP_INPUT, "y", t3);
  nc_id ids = nc_leaf(g, NC_OP_INPUT, "ids", nc_type_make(NC_I32, 2, di));
  nc_dim dw[2] = {C(8), C(5)}, dwt[2] = {C(5), C(8)};
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_F32, 2, dw));
  nc_id wt = nc_leaf(g, NC_OP_PARAM, "wt", nc_type_make(NC_F32, 2, dwt));
  nc_id pos = nc_op2(g, NC_OP_ADD, nc_op1(g, NC_OP_ABS, x), nc_b_const_like(g, x, 0.5));
#define OUT(name, v) cr_assert_null(nc_graph_set_output(g, name, v), "output %s: %s", name, nc_status_msg(nc_graph_error(g)))
#define A2(op, a, b) nc_op2(g, NC_OP_##op, a, b)
#define A1(op, a) nc_op1(g, NC_OP_##op, a)
  OUT("neg_abs_relu_square", A2(ADD, A2(ADD, A1(NEG, x), A1(ABS, y)), A2(ADD, A1(RELU, x), A1(SQUARE, y))));
  OUT("tanh_exp_log_sqrt", A2(ADD, A2(ADD, A1(TANH, x), A1(EXP, y)), A2(ADD, A1(LOG, pos), A1(SQRT, pos))));
  OUT("rsqrt_sigmoid_sin_cos_pow",
      A2(ADD, A2(ADD, A1(RSQRT, pos), A1(SIGMOID, x)), A2(ADD, A2(ADD, A1(SIN, x), A1(COS, y)), nc_b_powc(g, pos, 1.5))));
  OUT("add_sub_mul_div_max_min", A2(ADD, A2(MUL, A2(SUB, x, y), A2(ADD, x, y)), A2(DIV, A2(MAX, x, y), A2(ADD, pos, A2(MIN, x, y)))));
  nc_id lt = A2(LT, x, y), ne = A2(NE, x, y);
  OUT("where_logic", nc_op3(g, NC_OP_WHERE, A2(AND, lt, ne), x, nc_op3(g, NC_OP_WHERE, A2(OR, A2(GE, x, pos), A1(NOT, A2(LE, y, x))), pos, y)));
  OUT("cmp_bool", A2(OR, A2(EQ, x, x), A2(GT, x, y)));
  OUT("bf16", A2(MUL, nc_b_cast(g, x, NC_BF16), nc_b_cast(g, y, NC_BF16)));
  OUT("f16", A2(ADD, nc_b_cast(g, x, NC_F16), nc_b_cast(g, y, NC_F16)));
  OUT("i32", A2(ADD, nc_b_cast(g, nc_b_scale(g, x, 10), NC_I32), A1(NEG, nc_b_cast(g, nc_b_scale(g, y, 7), NC_I32))));
  OUT("i64", A2(MUL, nc_b_cast(g, nc_b_scale(g, x, 100), NC_I64), nc_b_cast(g, nc_b_scale(g, y, 30), NC_I64)));
  OUT("u8", nc_b_cast(g, nc_b_scale(g, pos, 90), NC_U8));
  OUT("sum_inner", nc_b_reduce(g, NC_OP_REDUCE_SUM, A1(EXP, x), 4, false));
  OUT("max_outer_keep", nc_b_reduce(g, NC_OP_REDUCE_MAX, x, 3, true));
  OUT("mean_all", nc_b_reduce(g, NC_OP_REDUCE_MEAN, A2(MUL, x, y), 7, false));
  OUT("max_all", nc_b_reduce(g, NC_OP_REDUCE_MAX, y, 7, false));
  OUT("isum_all", nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_b_cast(g, nc_b_scale(g, x, 10), NC_I32), 7, false));
  OUT("softmax_bcast", A2(SUB, A1(SOFTMAX, x), nc_b_expand_like(g, nc_b_reduce(g, NC_OP_REDUCE_MEAN, y, 4, true), x)));
  OUT("log_softmax", A1(LOG_SOFTMAX, y));
  OUT("rms_norm", nc_b_rms_norm(g, x, NC_RMS_EPS_F32));
  OUT("rms_norm_grad", nc_b_rms_norm_grad(g, x, y, NC_RMS_EPS_F32));
  nc_id x4 = nc_b_reshape(g, x, t4), y4 = nc_b_reshape(g, y, t4);
  OUT("rope", nc_b_rope(g, x4, NC_NONE, 10000, false));
  OUT("rope_inverse", nc_b_rope(g, y4, NC_NONE, 100, true));
  OUT("matmul", nc_b_matmul(g, x, w, false, false));
  OUT("matmul_tb", nc_b_matmul(g, y, wt, false, true));
  nc_dim dk[3] = {nc_dim_sym(B), C(8), C(6)};
  nc_id xt = nc_b_permute(g, x, (int[]){0, 2, 1}, 3);  // (B, 8, 6)
  (void)dk;
  OUT("bmm_nn", nc_b_bmm(g, x, xt, false, false));
  OUT("bmm_nt", nc_b_bmm(g, x, y, false, true));
  OUT("bmm_tn", nc_b_bmm(g, x, y, true, false));
  OUT("bmm_tt", nc_b_bmm(g, xt, x, true, true));
  nc_id v4 = A2(MUL, x4, y4);
  OUT("attention", nc_b_attention(g, x4, y4, v4, NC_NONE, true, 0, 0.5));
  OUT("attention_window", nc_b_attention(g, y4, x4, v4, NC_NONE, true, 2, 0.7));
  for (int wrt = 0; wrt < 3; wrt++) {
    char name[32];
    snprintf(name, sizeof name, "attention_grad_%d", wrt);
    OUT(name, nc_b_attention_grad(g, x4, y4, v4, A1(TANH, y4), NC_NONE, wrt, true, 0, 0.5));
  }
  nc_id ce = nc_b_cross_entropy(g, x, ids, -1, 0);
  OUT("ce_none", ce);
  OUT("ce_sum", nc_b_cross_entropy(g, y, ids, -1, 1));
  OUT("ce_mean", nc_b_cross_entropy(g, x, ids, -1, 2));
  OUT("ce_grad", nc_b_cross_entropy_grad(g, x, ids, A1(SIGMOID, nc_b_reduce(g, NC_OP_REDUCE_SUM, y, 4, false)), -1, 0));
  OUT("ce_grad_mean", nc_b_cross_entropy_grad(g, y, ids, nc_b_reduce(g, NC_OP_REDUCE_MEAN, x, 7, false), -1, 2));
  nc_id safe_ids = nc_op2(g, NC_OP_MAX, ids, nc_const(g, 0, nc_type_make(NC_I32, 2, di)));
  OUT("gather", nc_op2(g, NC_OP_GATHER, w, safe_ids));
  OUT("scatter_add", nc_b_scatter_add(g, safe_ids, nc_b_matmul(g, x, w, false, false), nc_type_make(NC_F32, 2, dw)));
  OUT("permute", A1(EXP, xt));
  nc_id sl[2] = {nc_b_slice(g, x, 2, 1, 6), nc_b_slice(g, y, 2, 0, 3)};
  OUT("slice_concat", nc_b_concat(g, sl, 2, 2));
  OUT("shift", A2(ADD, nc_b_shift(g, x, 1, 2), nc_b_shift(g, y, 2, -3)));
#undef OUT
#undef A1
#undef A2
  cr_assert_null(nc_graph_error(g), "%s", nc_status_msg(nc_graph_error(g)));
  return g;
}

Test(ocl, every_op_family_matches_the_interpreter_for_two_batch_sizes) {
  NEED_OPENCL();
  nc_graph *g = op_zoo();
  nc_exec *ex = exec_on(g, "opencl");
  for (int64_t b = 2; b <= 3; b++) {  // symbolic B bound per call: the same program, other sizes
    nc_session *s = nc_session_new();
    int64_t syms[NC_MAX_SYMS] = {b};
    fill(s, g, syms, 8, 40 + (uint64_t)b, true);
    double worst = compare_on(ex, g, s, 2e-5);
    cr_log_info("B=%lld: %d kernels, worst rel err %.3g", (long long)b, nc_exec_nkernels(ex), worst);
    nc_session_free(s);
  }
  nc_exec_free(ex);
  nc_graph_free(g);
}

// scatter_add (the embedding gradient) as one template call with float atomics
// (codegen/ocl_scatter.h): i32 and i64 ids with many tokens per row (colliding
// atomics), against the interpreter. The adds' order varies from run to run, so
// the rounding may too: the tolerance is a few fp32 ulps of the sums, not 0.
Test(ocl, scatter_add_with_colliding_ids_matches_the_interpreter) {
  NEED_OPENCL();
  nc_graph *g = nc_graph_new("scatter");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  const int64_t T = 37, Cn = 70, V = 9;
  nc_dim di[2] = {nc_dim_sym(B), C(T)}, ds[3] = {nc_dim_sym(B), C(T), C(Cn)}, dw[2] = {C(V), C(Cn)};
  nc_id i32 = nc_leaf(g, NC_OP_INPUT, "ids32", nc_type_make(NC_I32, 2, di));
  nc_id i64 = nc_leaf(g, NC_OP_INPUT, "ids64", nc_type_make(NC_I64, 2, di));
  nc_id src = nc_leaf(g, NC_OP_INPUT, "src", nc_type_make(NC_F32, 3, ds));
  nc_id two = nc_op2(g, NC_OP_MUL, src, nc_b_const_like(g, src, 2.0));  // a computed (materialized) source
  cr_assert_null(nc_graph_set_output(g, "dw32", nc_b_scatter_add(g, i32, src, nc_type_make(NC_F32, 2, dw))));
  cr_assert_null(nc_graph_set_output(g, "dw64", nc_b_scatter_add(g, i64, two, nc_type_make(NC_F32, 2, dw))));
  cr_assert_null(nc_graph_error(g));
  nc_lower_opts lo = {.fuse = true, .scatter_atomic = true};
  for (int on = 0; on < 2; on++) {  // the plan: two template calls with the option, none without
    lo.scatter_atomic = on;
    nc_plan *p;
    cr_assert_null(nc_plan_build(g, &lo, &p));
    int calls = 0;
    for (int i = 0; i < p->nkernels; i++)
      calls += nc_kernel_is_template(&p->kernels[i].k) && p->kernels[i].k.s[p->kernels[i].k.body].tmpl == NC_KT_SCATTER_ADD;
    cr_expect_eq(calls, on ? 2 : 0, "scatter_add template calls with scatter_atomic=%d: %d", on, calls);
    nc_plan_free(p);
  }
  nc_exec *ex = exec_on(g, "opencl");
  for (int64_t b = 1; b <= 3; b += 2) {
    nc_session *s = nc_session_new();
    int64_t sh[3] = {b, T, Cn};
    nc_tensor a, c;
    cr_assert_null(nc_tensor_alloc(&a, NC_I32, 2, sh));
    cr_assert_null(nc_tensor_alloc(&c, NC_I64, 2, sh));
    for (int64_t j = 0; j < b * T; j++) {  // row 2 takes a third of the tokens; row 8 none
      ((int32_t *)a.data)[j] = j % 3 == 0 ? 2 : (int32_t)((j * 5) % 8);
      ((int64_t *)c.data)[j] = (int64_t)((j * 7) % 3);
    }
    cr_assert_null(nc_session_put(s, "ids32", &a));
    cr_assert_null(nc_session_put(s, "ids64", &c));
    int64_t syms[NC_MAX_SYMS] = {b};
    fill(s, g, syms, (int)V, 70 + (uint64_t)b, false);
    double worst = compare_on(ex, g, s, 1e-5);
    cr_log_info("scatter_add B=%lld: worst rel err %.3g", (long long)b, worst);
    nc_session_free(s);
  }
  nc_exec_free(ex);
  nc_graph_free(g);
}

// The GEMM template across tile edges (sizes not multiples of any tile), every
// transpose, batched and shared-weight forms, with the default and other knobs.
static nc_graph *gemm_graph(int64_t M, int64_t N, int64_t K) {
  nc_graph *g = nc_graph_new("gemm");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim da[3] = {nc_dim_sym(B), C(M), C(K)}, dat[3] = {nc_dim_sym(B), C(K), C(M)};
  nc_dim db[3] = {nc_dim_sym(B), C(K), C(N)}, dbt[3] = {nc_dim_sym(B), C(N), C(K)};
  nc_dim dw[2] = {C(K), C(N)}, dwt[2] = {C(N), C(K)};
  nc_id a = nc_leaf(g, NC_OP_INPUT, "a", nc_type_make(NC_F32, 3, da));
  nc_id at = nc_leaf(g, NC_OP_INPUT, "at", nc_type_make(NC_F32, 3, dat));
  nc_id b = nc_leaf(g, NC_OP_INPUT, "b", nc_type_make(NC_F32, 3, db));
  nc_id bt = nc_leaf(g, NC_OP_INPUT, "bt", nc_type_make(NC_F32, 3, dbt));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_F32, 2, dw));
  nc_id wt = nc_leaf(g, NC_OP_PARAM, "wt", nc_type_make(NC_F32, 2, dwt));
  cr_assert_null(nc_graph_set_output(g, "nn", nc_b_bmm(g, a, b, false, false)));
  cr_assert_null(nc_graph_set_output(g, "nt", nc_b_bmm(g, a, bt, false, true)));
  cr_assert_null(nc_graph_set_output(g, "tn", nc_b_bmm(g, at, b, true, false)));
  cr_assert_null(nc_graph_set_output(g, "tt", nc_b_bmm(g, at, bt, true, true)));
  cr_assert_null(nc_graph_set_output(g, "linear", nc_b_matmul(g, a, w, false, false)));
  cr_assert_null(nc_graph_set_output(g, "linear_t", nc_b_matmul(g, a, wt, false, true)));
  cr_assert_null(nc_graph_error(g));
  return g;
}

Test(ocl, gemm_template_every_transpose_across_tile_edges) {
  NEED_OPENCL();
  nc_graph *g = gemm_graph(70, 37, 45);
  const char *knobs[] = {NULL, "16,16,8,2,2,32", "64,32,4,8,2"};
  for (int i = 0; i < 3; i++) {
    if (knobs[i]) setenv("NC_OCL_KNOBS", knobs[i], 1);
    else unsetenv("NC_OCL_KNOBS");
    nc_exec *ex = exec_on(g, "opencl");
    nc_session *s = nc_session_new();
    int64_t syms[NC_MAX_SYMS] = {2};
    fill(s, g, syms, 1, 7, false);
    double worst = compare_on(ex, g, s, 1e-5);
    cr_log_info("knobs %s: worst rel err %.3g", knobs[i] ? knobs[i] : "default", worst);
    nc_session_free(s);
    nc_exec_free(ex);
  }
  unsetenv("NC_OCL_KNOBS");
  nc_graph_free(g);
}

static nc_model_spec load_spec(const char *name) {
  char rel[128], path[1024];
  snprintf(rel, sizeof rel, "models/specs/%s.xml", name);
  nc_model_spec s;
  cr_assert_null(nc_spec_load(nc_test_path(path, sizeof path, rel), &s));
  return s;
}

// A whole training step (forward, loss, backward, MuonAdamW update) on the
// interpreter and on OpenCL: every output (new params, optimizer state, loss).
static void train_step_on_opencl(const char *spec, int64_t B, int64_t T, double tol) {
  nc_model_spec sp = load_spec(spec);
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g;
  cr_assert_null(nc_train_build(&sp, &oc, &to, &g));
  nc_session *s = nc_session_new();
  cr_assert_null(nc_model_init_session(&sp, 3, s));
  int64_t syms[NC_MAX_SYMS] = {B, T};
  fill(s, g, syms, sp.vocab_size, 5, false);
  nc_exec *ex = exec_on(g, "opencl");
  double worst = compare_on(ex, g, s, tol);
  cr_log_info("%s train step B=%lld T=%lld on opencl: %d kernels, prepared in %.2f s, worst rel err %.3g", spec, (long long)B,
              (long long)T, nc_exec_nkernels(ex), nc_exec_compile_seconds(ex), worst);
  nc_exec_free(ex);
  nc_session_free(s);
  nc_graph_free(g);
}

Test(ocl, tiny_training_step_matches_the_interpreter, .timeout = 300) {
  NEED_OPENCL();
  train_step_on_opencl("tiny", 2, 16, 1e-4);
}

// The cross-entropy pattern (row kernels) and its switch (primitives): every
// reduction, ignored targets, and the gradient through autodiff, both ways.
#include "passes/autodiff.h"
Test(ocl, cross_entropy_pattern_on_and_off) {
  NEED_OPENCL();
  for (int run = 0; run < 3; run++) {
    int off = run == 1;
    // run 2: row kernels 64 work-items wide, wider than the 37-long rows
    if (run == 2) setenv("NC_OCL_KNOBS", "32,32,16,4,4,64,64", 1);
    nc_graph *g = nc_graph_new("ce");
    int B;
    cr_assert_null(nc_graph_sym(g, "B", &B));
    nc_dim dl[3] = {nc_dim_sym(B), C(5), C(37)}, dt[2] = {nc_dim_sym(B), C(5)};
    nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 3, dl));
    nc_id t = nc_leaf(g, NC_OP_INPUT, "t", nc_type_make(NC_I32, 2, dt));
    nc_id total = NC_NONE;
    const char *names[3] = {"none", "sum", "mean"};
    for (int r = 0; r < 3; r++) {
      nc_id o = nc_b_cross_entropy(g, x, t, -1, r);
      cr_assert_null(nc_graph_set_output(g, names[r], o));
      nc_id s = r == 0 ? nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op1(g, NC_OP_SQUARE, o), 3, false) : o;
      total = total == NC_NONE ? s : nc_op2(g, NC_OP_ADD, total, s);
    }
    nc_id gx;
    cr_assert_null(nc_autodiff(g, total, NC_NONE, &x, 1, &gx));
    cr_assert_null(nc_graph_set_output(g, "dx", gx));
    setenv("NC_PATTERNS_OFF", off ? "1" : "0", 1);
    nc_exec *ex = exec_on(g, "opencl");
    unsetenv("NC_PATTERNS_OFF");
    bool row_kernel = false;
    for (nc_id i = 0; i < nc_graph_nnodes(nc_exec_feed_graph(ex)); i++)
      row_kernel |= nc_graph_node(nc_exec_feed_graph(ex), i)->op == NC_OP_CROSS_ENTROPY;
    cr_expect_eq(row_kernel, !off, "pattern %s", off ? "off" : "on");
    nc_session *s = nc_session_new();
    int64_t syms[NC_MAX_SYMS] = {3};
    fill(s, g, syms, 37, 9, true);
    double worst = compare_on(ex, g, s, 1e-5);
    cr_log_info("cross-entropy pattern %s%s: %d kernels, worst rel err %.3g", off ? "off" : "on", run == 2 ? ", 64-wide rows" : "",
                nc_exec_nkernels(ex), worst);
    unsetenv("NC_OCL_KNOBS");
    nc_session_free(s);
    nc_exec_free(ex);
    nc_graph_free(g);
  }
}

// The softcap + cross-entropy pattern on OpenCL recomputes the tanh inside the
// loss kernels (SOFTCAP_CE in the device's patterns_force): no kernel stores the
// tanh, and the loss and the logits' gradient match the interpreter; with the
// pattern off (NC_PATTERNS_OFF=4) the tanh is a kernel of its own again.
static bool plan_stores_tanh(const nc_graph *g0) {
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_graph *g;
  cr_assert_null(nc_graph_copy(g0, &g));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.patterns_off = nc_device_patterns_off(&d);
  ctx.patterns_force = nc_device_patterns_force(&d);
  const char *passes[] = {"decompose", "dce"};
  cr_assert_null(nc_pass_run_pipeline(&g, passes, 2, &ctx));
  nc_lower_opts lo = nc_device_lower_opts(&d, &ctx);
  nc_plan *p;
  cr_assert_null(nc_plan_build(g, &lo, &p));
  bool tanh = false;
  for (int k = 0; k < p->nkernels; k++) tanh |= nc_graph_node(g, p->kernels[k].node)->op == NC_OP_TANH;
  nc_plan_free(p);
  nc_graph_free(g);
  return tanh;
}

Test(ocl, softcap_tanh_is_recomputed_in_the_loss_kernels) {
  nc_graph *g = nc_graph_new("softcap_ce");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim dl[3] = {nc_dim_sym(B), C(5), C(37)}, dt[2] = {nc_dim_sym(B), C(5)};
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 3, dl));
  nc_id t = nc_leaf(g, NC_OP_INPUT, "t", nc_type_make(NC_I32, 2, dt));
  nc_id l = nc_b_scale(g, nc_op1(g, NC_OP_TANH, nc_op2(g, NC_OP_DIV, x, nc_b_const_like(g, x, 3.0))), 3.0);
  nc_id loss = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_b_cross_entropy(g, l, t, -1, 0), 3, false);
  cr_assert_null(nc_graph_set_output(g, "loss", loss));
  nc_id gx;
  cr_assert_null(nc_autodiff(g, loss, NC_NONE, &x, 1, &gx));
  cr_assert_null(nc_graph_set_output(g, "dx", gx));
  cr_assert_null(nc_graph_error(g));
  cr_expect(!plan_stores_tanh(g), "the OpenCL plan recomputes the tanh in the loss kernels");
  setenv("NC_PATTERNS_OFF", "4", 1);
  cr_expect(plan_stores_tanh(g), "NC_PATTERNS_OFF=4: the tanh has its own kernel");
  unsetenv("NC_PATTERNS_OFF");
  NEED_OPENCL();
  for (int off = 0; off < 2; off++) {
    if (off) setenv("NC_PATTERNS_OFF", "4", 1);
    nc_exec *ex = exec_on(g, "opencl");
    unsetenv("NC_PATTERNS_OFF");
    nc_session *s = nc_session_new();
    int64_t syms[NC_MAX_SYMS] = {3};
    fill(s, g, syms, 37, 13, true);
    double worst = compare_on(ex, g, s, 1e-5);
    cr_log_info("softcap + cross-entropy, pattern %s: %d kernels, worst rel err %.3g", off ? "off" : "on", nc_exec_nkernels(ex), worst);
    nc_session_free(s);
    nc_exec_free(ex);
  }
  nc_graph_free(g);
}

// The OpenCL plan of g: per op, how many kernels compute a node of that op.
static int plan_kernels_of(const nc_graph *g0, nc_op op) {
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_graph *g;
  cr_assert_null(nc_graph_copy(g0, &g));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.patterns_off = nc_device_patterns_off(&d);
  ctx.patterns_force = nc_device_patterns_force(&d);
  const char *passes[] = {"decompose", "dce"};
  cr_assert_null(nc_pass_run_pipeline(&g, passes, 2, &ctx));
  nc_lower_opts lo = nc_device_lower_opts(&d, &ctx);
  nc_plan *p;
  cr_assert_null(nc_plan_build(g, &lo, &p));
  int n = 0;
  for (int k = 0; k < p->nkernels; k++) n += nc_graph_node(g, p->kernels[k].node)->op == op;
  nc_plan_free(p);
  nc_graph_free(g);
  return n;
}

// The small loop kernels of the OpenCL training step (docs/opencl.md "Small loop
// kernels"): relu(u) read by two elementwise nodes (square, the backward's 2 relu(u))
// is recomputed, not stored (NC_PATTERN_RECOMPUTE); a reshape feeding a GEMM is read
// in place (NC_PATTERN_RESHAPE_VIEW). Beside them a row reduction over a nest (3 rows
// of 40 x 50, Muon's stacked norms). Same values as the interpreter, patterns on and off.
Test(ocl, relu_recomputed_and_reshapes_read_in_place) {
  nc_graph *g = nc_graph_new("mlp");
  nc_dim dx[3] = {C(4), C(6), C(16)}, d2[2] = {C(24), C(16)}, dw1[2] = {C(16), C(40)}, dw2[2] = {C(40), C(16)},
         dm[3] = {C(3), C(40), C(50)};
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 3, dx));
  nc_id w1 = nc_leaf(g, NC_OP_PARAM, "w1", nc_type_make(NC_F32, 2, dw1));
  nc_id w2 = nc_leaf(g, NC_OP_PARAM, "w2", nc_type_make(NC_F32, 2, dw2));
  nc_id m = nc_leaf(g, NC_OP_PARAM, "m", nc_type_make(NC_F32, 3, dm));
  nc_id h = nc_b_reshape(g, nc_op1(g, NC_OP_EXP, x), nc_type_make(NC_F32, 2, d2));  // (24, 16)
  nc_id u = nc_b_matmul(g, h, w1, false, false);                                        // (24, 40)
  nc_id y = nc_b_matmul(g, nc_op1(g, NC_OP_SQUARE, nc_op1(g, NC_OP_RELU, u)), w2, false, false);
  nc_id loss = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op2(g, NC_OP_MUL, y, y), 3, false);
  cr_assert_null(nc_graph_set_output(g, "loss", loss));
  nc_id wrt[2] = {x, w1}, grads[2];
  cr_assert_null(nc_autodiff(g, loss, NC_NONE, wrt, 2, grads));
  cr_assert_null(nc_graph_set_output(g, "dx", grads[0]));
  cr_assert_null(nc_graph_set_output(g, "dw1", grads[1]));
  cr_assert_null(nc_graph_set_output(g, "norms", nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op1(g, NC_OP_SQUARE, m), 6, false)));
  cr_assert_null(nc_graph_error(g));
  cr_expect_eq(plan_kernels_of(g, NC_OP_RELU), 0, "relu is recomputed by its readers");
  cr_expect_eq(plan_kernels_of(g, NC_OP_RESHAPE), 0, "the GEMM reads the reshape's input in place");
  setenv("NC_PATTERNS_OFF", "67584", 1);  // RECOMPUTE | RESHAPE_VIEW
  cr_expect_eq(plan_kernels_of(g, NC_OP_RELU), 1, "NC_PATTERNS_OFF=65536: relu has its own kernel");
  cr_expect_geq(plan_kernels_of(g, NC_OP_RESHAPE), 1, "NC_PATTERNS_OFF=2048: the reshape is copied");
  unsetenv("NC_PATTERNS_OFF");
  NEED_OPENCL();
  for (int off = 0; off < 2; off++) {
    if (off) setenv("NC_PATTERNS_OFF", "67584", 1);
    nc_exec *ex = exec_on(g, "opencl");
    unsetenv("NC_PATTERNS_OFF");
    nc_session *s = nc_session_new();
    int64_t syms[NC_MAX_SYMS] = {0};
    fill(s, g, syms, 2, 29, false);
    double worst = compare_on(ex, g, s, 1e-5);
    cr_log_info("relu recomputed, reshape views, patterns %s: %d kernels, worst rel err %.3g", off ? "off" : "on",
                nc_exec_nkernels(ex), worst);
    nc_session_free(s);
    nc_exec_free(ex);
  }
  nc_graph_free(g);
}

// ---- the program-binary cache -----------------------------------------------------

static nc_plan *plan_of(nc_graph **g) {
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  const char *passes[] = {"decompose", "dce"};
  cr_assert_null(nc_pass_run_pipeline(g, passes, 2, &ctx));
  nc_lower_opts lo = {.fuse = true};
  nc_plan *p;
  cr_assert_null(nc_plan_build(*g, &lo, &p));
  return p;
}

static void check_small_run(nc_ocl *c, const nc_graph *g, const nc_plan *p) {
  int64_t shape[2] = {3, 33};
  nc_tensor x, out[1];
  cr_assert_null(nc_tensor_alloc(&x, NC_F32, 2, shape));
  for (int i = 0; i < 99; i++) ((float *)x.data)[i] = (float)(i % 13) * 0.25f - 1.5f;
  nc_feed f = {"x", &x};
  nc_status st = nc_ocl_run(c, g, p, &f, 1, out);
  cr_assert_null(st, "%s", nc_status_msg(st));
  for (int r = 0; r < 3; r++) {
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < 33; j++) m = fmax(m, ((float *)x.data)[r * 33 + j]);
    for (int j = 0; j < 33; j++) sum += exp(((float *)x.data)[r * 33 + j] - m);
    for (int j = 0; j < 33; j++) {
      double want = exp(((float *)x.data)[r * 33 + j] - m) / sum;
      cr_assert_float_eq(((float *)out[0].data)[r * 33 + j], want, 1e-6, "softmax[%d,%d]", r, j);
    }
  }
  nc_tensor_free(&out[0]);
  nc_tensor_free(&x);
}

static void corrupt_byte(const char *path, long offset) {
  FILE *f = fopen(path, "r+b");
  cr_assert_not_null(f, "%s", path);
  cr_assert_eq(fseek(f, offset, SEEK_SET), 0);
  int ch = fgetc(f);
  cr_assert_neq(ch, EOF);
  fseek(f, offset, SEEK_SET);
  fputc(ch ^ 0x5a, f);
  fclose(f);
}

Test(ocl, program_cache_hits_and_rebuilds_bad_entries) {
  NEED_OPENCL();
  char dir[] = "/tmp/nc_ocl_cache_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  setenv("NC_CACHE_DIR", dir, 1);
  nc_graph *g = nc_graph_new("sm");
  nc_dim d[2] = {C(3), C(33)};
  cr_assert_null(nc_graph_set_output(g, "y", nc_op1(g, NC_OP_SOFTMAX, nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, d)))));
  nc_plan *p = plan_of(&g);
  nc_ocl_opts o = {.select = ""};
  nc_ocl *c;
  // 1. cold: built from source, written to the cache
  cr_assert_null(nc_ocl_compile(p, &o, &c));
  cr_expect(!nc_ocl_cache_hit(c), "a fresh cache folder cannot hit");
  char path[1024];
  cr_assert(nc_ocl_cache_path(nc_ocl_program_key(c), path, sizeof path));
  cr_assert_eq(access(path, R_OK), 0, "the entry %s was written", path);
  check_small_run(c, g, p);
  nc_ocl_free(c);
  // 2. warm: from the cache, same results
  cr_assert_null(nc_ocl_compile(p, &o, &c));
  cr_expect(nc_ocl_cache_hit(c), "the second build hits the cache");
  check_small_run(c, g, p);
  nc_ocl_free(c);
  // 3. a flipped payload byte: the checksum rejects it, rebuilt silently and rewritten
  corrupt_byte(path, 100);
  cr_assert_null(nc_ocl_compile(p, &o, &c));
  cr_expect(!nc_ocl_cache_hit(c), "a corrupt entry is not used");
  check_small_run(c, g, p);
  uint64_t key = nc_ocl_program_key(c);
  nc_ocl_free(c);
  cr_assert_null(nc_ocl_compile(p, &o, &c));
  cr_expect(nc_ocl_cache_hit(c), "the rebuilt entry was written back");
  nc_ocl_free(c);
  // 4. a well-formed entry whose binary the driver refuses: rebuilt from source
  const char junk[] = "this is not a program binary";
  cr_assert_null(nc_ocl_cache_put(key, junk, sizeof junk));
  cr_assert_null(nc_ocl_compile(p, &o, &c));
  cr_expect(!nc_ocl_cache_hit(c), "a refused binary is not a hit");
  check_small_run(c, g, p);
  nc_ocl_free(c);
  cr_assert_null(nc_ocl_compile(p, &o, &c));
  cr_expect(nc_ocl_cache_hit(c));
  nc_ocl_free(c);
  // 5. a truncated entry
  cr_assert_eq(truncate(path, 20), 0);
  cr_assert_null(nc_ocl_compile(p, &o, &c));
  cr_expect(!nc_ocl_cache_hit(c));
  check_small_run(c, g, p);
  nc_ocl_free(c);
  // 6. NC_CACHE_DIR=off: no cache at all
  setenv("NC_CACHE_DIR", "off", 1);
  cr_assert(!nc_ocl_cache_path(key, path, sizeof path));
  cr_assert_null(nc_ocl_compile(p, &o, &c));
  cr_expect(!nc_ocl_cache_hit(c));
  check_small_run(c, g, p);
  nc_ocl_free(c);
  nc_plan_free(p);
  nc_graph_free(g);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_expect_eq(system(cmd), 0);
}

Test(ocl, cache_keys_cover_every_part) {
  const char *a[] = {"src", "-O", "dev", "1.0"}, *b[] = {"src", "-O", "dev", "1.1"}, *c[] = {"srcX", "-O", "dev", "1.0"};
  const char *d[] = {"sr", "c-O", "dev", "1.0"};  // same bytes, other split
  uint64_t ka = nc_ocl_cache_key(a, 4);
  cr_expect_eq(ka, nc_ocl_cache_key(a, 4));
  cr_expect_neq(ka, nc_ocl_cache_key(b, 4), "the driver version is part of the key");
  cr_expect_neq(ka, nc_ocl_cache_key(c, 4), "the source is part of the key");
  cr_expect_neq(ka, nc_ocl_cache_key(d, 4), "parts are length-delimited");
}

// ---- device selection and bad input --------------------------------------------------

Test(ocl, device_strings_parse_and_bad_ones_name_the_problem) {
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  cr_expect_eq(d.kind, NC_DEV_OPENCL);
  cr_expect_str_eq(d.select, "");
  cr_expect_str_eq(nc_device_name(&d), "opencl");
  cr_assert_null(nc_device_parse("opencl:1", &d));
  cr_expect_str_eq(d.select, "1");
  cr_expect_str_eq(nc_device_name(&d), "opencl:1");
  cr_assert_null(nc_device_parse("opencl:NVIDIA H100", &d));
  cr_expect_str_eq(d.select, "NVIDIA H100");
  nc_status st = nc_device_parse("opencl:", &d);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "empty OpenCL selector"), "%s", nc_status_msg(st));
  nc_status_free(st);
  st = nc_device_parse("openclx", &d);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "unknown device 'openclx'"), "%s", nc_status_msg(st));
  nc_status_free(st);
  char longsel[200];
  memset(longsel, 'a', sizeof longsel);
  memcpy(longsel, "opencl:", 7);
  longsel[199] = 0;
  st = nc_device_parse(longsel, &d);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "longer than"), "%s", nc_status_msg(st));
  nc_status_free(st);
}

Test(ocl, selectors_pick_by_index_type_and_name) {
  NEED_OPENCL();
  nc_ocl_device_desc d0, d;
  cr_assert_null(nc_ocl_select("0", &d0));
  cr_expect_eq(d0.index, 0);
  cr_assert_null(nc_ocl_select("", &d));
  if (!d.gpu) cr_expect_eq(d.index, 0, "without a GPU the default is the first device");
  // a substring of the device's name, in another case
  char sub[8] = {0};
  size_t n = strlen(d0.name);
  cr_assert_gt(n, 0);
  for (size_t i = 0; i < 6 && i < n; i++) sub[i] = (char)((d0.name[i] >= 'a' && d0.name[i] <= 'z') ? d0.name[i] - 32 : d0.name[i]);
  cr_assert_null(nc_ocl_select(sub, &d));
  cr_expect_str_eq(d.name, d0.name);
  nc_status st = nc_ocl_select(d0.gpu ? "gpu" : "cpu", &d);
  cr_expect_null(st, "%s", nc_status_msg(st));
  st = nc_ocl_select("99", &d);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "opencl:99: no such device"), "%s", nc_status_msg(st));
  nc_status_free(st);
  st = nc_ocl_select("no-such-device-zz", &d);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "contains 'no-such-device-zz'") && strstr(nc_status_msg(st), d0.name), "%s",
            nc_status_msg(st));
  nc_status_free(st);
  // through the exec interface: the error names the device string
  nc_graph *g = gemm_graph(4, 4, 4);
  nc_device dev;
  cr_assert_null(nc_device_parse("opencl:42", &dev));
  nc_exec *ex;
  st = nc_exec_new(g, &dev, &ex);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "opencl:42"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_graph_free(g);
}

Test(ocl, bad_knobs_are_rejected_with_the_variable_named) {
  nc_ocl_knobs k;
  nc_ocl_knobs_default(true, &k);
  cr_assert_null(nc_ocl_knobs_check(&k));
  nc_ocl_knobs_default(false, &k);
  cr_assert_null(nc_ocl_knobs_check(&k));
  const char *bad[] = {"", "64", "64,64,16,4,x", "64,64,16,4,4,4,4,4", "64,64,16,4,4,64,2000", "63,64,16,4,4", "64,64,2,4,4", "512,512,16,4,4",
                       "64,64,16,4,4,0", "64;64;16;4;4"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    nc_status st = nc_ocl_knobs_parse(bad[i], &k);
    cr_expect_not_null(st, "knobs '%s' accepted", bad[i]);
    nc_status_free(st);
  }
  cr_assert_null(nc_ocl_knobs_parse("16,32,8,2,4,128", &k));
  cr_expect_eq(k.gemm_tm, 16);
  cr_expect_eq(k.gemm_wn, 4);
  cr_expect_eq(k.loop_wg, 128);
  cr_assert_null(nc_ocl_knobs_parse("16,32,8,2,4,128,32", &k));
  cr_expect_eq(k.row_wg, 32);
  if (!nc_ocl_available()) return;
  setenv("NC_OCL_KNOBS", "64,64,16,4", 1);
  nc_graph *g = gemm_graph(4, 4, 4);
  nc_device dev;
  cr_assert_null(nc_device_parse("opencl", &dev));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &dev, &ex);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "NC_OCL_KNOBS"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_graph_free(g);
}

Test(ocl, unfed_inputs_are_an_error_not_garbage) {
  NEED_OPENCL();
  nc_graph *g = gemm_graph(5, 6, 7);
  nc_exec *ex = exec_on(g, "opencl");
  int64_t sa[3] = {1, 5, 7};
  nc_tensor a;
  cr_assert_null(nc_tensor_alloc(&a, NC_F32, 3, sa));
  nc_feed f = {"a", &a};
  nc_tensor out[6];
  nc_status st = nc_exec_run(ex, &f, 1, out);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "not fed"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_tensor_free(&a);
  nc_exec_free(ex);
  nc_graph_free(g);
}

// ---- the emitter alone (no device needed) ----------------------------------------------

Test(ocl, emitter_collapses_the_parallel_nest_and_keeps_reductions_serial) {
  nc_graph *g = nc_graph_new("e");
  nc_dim d[3] = {C(2), C(3), C(4)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 3, d));
  cr_assert_null(nc_graph_set_output(g, "e", nc_op1(g, NC_OP_EXP, x)));
  cr_assert_null(nc_graph_set_output(g, "s", nc_b_reduce(g, NC_OP_REDUCE_SUM, x, 4, false)));
  nc_lower_opts lo = {.fuse = true};
  nc_plan *p;
  cr_assert_null(nc_plan_build(g, &lo, &p));
  cr_assert_eq(p->nkernels, 2);
  for (int q = 0; q < 2; q++) {
    nc_buf b;
    nc_buf_init(&b);
    nc_ocl_launch L;
    nc_ocl_knobs kn;
    nc_ocl_knobs_default(false, &kn);
    cr_assert_null(nc_ocl_emit_kernel(&p->kernels[q].k, "kq", &kn, &b, &L));
    cr_expect(strstr(b.data, "__kernel void kq("), "%s", b.data);
    bool red = strstr(p->kernels[q].k.name, "reduce") != NULL;
    // elementwise: all three loops collapsed; the reduction: its two output loops
    cr_expect_eq(L.ncollapse, red ? 2 : 3, "%s: %d loops collapsed\n%s", p->kernels[q].k.name, L.ncollapse, b.data);
    // the reduction's loop is split over a row's work-group, its partial sums combined in local memory
    cr_expect_eq(L.row_wg, red ? 4 : 0, "%s: row_wg %d\n%s", p->kernels[q].k.name, L.row_wg, b.data);
    if (red) cr_expect(strstr(b.data, "+= 4)") && strstr(b.data, "nc_rf[nc_lid] = acc0"), "%s", b.data);
    nc_buf_free(&b);
    // row kernels off: the reduction loop runs serially in its work-item
    b.len = 0;
    nc_buf_init(&b);
    kn.row_wg = 1;
    cr_assert_null(nc_ocl_emit_kernel(&p->kernels[q].k, "kq", &kn, &b, &L));
    cr_expect_eq(L.row_wg, 0);
    if (red) cr_expect(strstr(b.data, "i3++") || strstr(b.data, "i2++"), "the reduction loop stays serial:\n%s", b.data);
    nc_buf_free(&b);
  }
  nc_plan_free(p);
  nc_graph_free(g);
  // a reduction to a scalar: one work-group splits the loop and combines through local memory
  g = nc_graph_new("r");
  x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 3, d));
  cr_assert_null(nc_graph_set_output(g, "m", nc_b_reduce(g, NC_OP_REDUCE_MAX, x, 7, false)));
  cr_assert_null(nc_plan_build(g, &lo, &p));
  cr_assert_eq(p->nkernels, 1);
  for (int wg = 1; wg <= 100; wg += 99) {
    nc_buf b;
    nc_buf_init(&b);
    nc_ocl_launch L;
    nc_ocl_knobs kn;
    nc_ocl_knobs_default(true, &kn);
    kn.loop_wg = wg;
    cr_assert_null(nc_ocl_emit_kernel(&p->kernels[0].k, "kr", &kn, &b, &L));
    cr_expect_eq(L.ncollapse, 0);
    cr_expect_eq(L.reduce_wg, wg == 1 ? 0 : 64, "work-group %d: reduce_wg %d", wg, L.reduce_wg);
    if (wg > 1) cr_expect(strstr(b.data, "barrier(CLK_LOCAL_MEM_FENCE)") && strstr(b.data, "nc_fmaxn(nc_rf"), "%s", b.data);
    nc_buf_free(&b);
  }
  nc_plan_free(p);
  nc_graph_free(g);
}

Test(ocl, emitter_refuses_what_it_cannot_lower) {
  nc_kernel k;
  nc_kernel_init(&k, "k_bf16_matmul");
  int bufs[3] = {nc_kernel_buf(&k, "a", NC_BF16, false), nc_kernel_buf(&k, "b", NC_BF16, false), nc_kernel_buf(&k, "c", NC_F32, true)};
  nc_kx args[9];
  for (int i = 0; i < 9; i++) args[i] = nc_kx_idx(&k, i < 4 ? 4 : i == 6 || i == 7 ? 16 : 0);
  nc_ks *tail = &k.body;
  nc_ks_call(&k, &tail, NC_KT_MATMUL, args, 9, bufs, 3);
  nc_buf b;
  nc_buf_init(&b);
  nc_ocl_launch L;
  nc_ocl_knobs kn;
  nc_ocl_knobs_default(true, &kn);
  nc_status st = nc_ocl_emit_kernel(&k, "x", &kn, &b, &L);
  cr_assert_not_null(st);
  cr_expect_eq(nc_status_code(st), NC_E_UNSUPPORTED);
  cr_expect(strstr(nc_status_msg(st), "k_bf16_matmul") && strstr(nc_status_msg(st), "f32 only"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_kernel_free(&k);
  // a template call inside a loop nest
  nc_kernel_init(&k, "k_nested_call");
  int fb[3] = {nc_kernel_buf(&k, "a", NC_F32, false), nc_kernel_buf(&k, "b", NC_F32, false), nc_kernel_buf(&k, "c", NC_F32, true)};
  for (int i = 0; i < 9; i++) args[i] = nc_kx_idx(&k, i < 4 ? 4 : i == 6 || i == 7 ? 16 : 0);
  tail = &k.body;
  nc_ks l = nc_ks_for(&k, &tail, nc_kernel_var(&k), nc_kx_idx(&k, 0), nc_kx_idx(&k, 2));
  nc_ks *body = nc_ks_body_slot(&k, l);
  nc_ks_call(&k, &body, NC_KT_MATMUL, args, 9, fb, 3);
  b.len = 0;
  st = nc_ocl_emit_kernel(&k, "x", &kn, &b, &L);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "k_nested_call") && strstr(nc_status_msg(st), "inside a loop nest"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_kernel_free(&k);
  nc_buf_free(&b);
}

// ---- the CLI: `nanochat devices` and --device opencl on a command ------------------

static int run_cli(const char *args, char *out, size_t n) { return nc_test_cli(args, out, n); }

Test(ocl, cli_lists_devices_and_runs_a_training_step_on_opencl, .timeout = 300) {
  if (!getenv("NC_BUILD_DIR")) cr_skip_test("NC_BUILD_DIR not set (run through ctest)");
  char bin[1024];
  snprintf(bin, sizeof bin, "%s/cli/nanochat", getenv("NC_BUILD_DIR"));
  if (access(bin, X_OK) != 0) cr_skip_test("%s is not built", bin);
  static char out[1 << 16];
  cr_assert_eq(run_cli("devices", out, sizeof out), 0, "%s", out);
  if (!nc_ocl_available()) {
    cr_expect(strstr(out, "no platforms"), "%s", out);
    cr_skip_test("no OpenCL device (install pocl-opencl-icd)");
  }
  cr_expect(strstr(out, "opencl:0"), "%s", out);
  cr_expect(strstr(out, "*"), "the default device is marked: %s", out);
  int rc = run_cli("bench train --spec models/specs/tiny.xml --batch 2 --seq 16 --steps 1 --device opencl:no-such-gpu", out, sizeof out);
  cr_expect_neq(rc, 0);
  cr_expect(rc < 128, "an error exit, not a crash (%d)", rc);
  cr_expect(strstr(out, "opencl:no-such-gpu"), "%s", out);
  rc = run_cli("bench train --spec models/specs/tiny.xml --batch 2 --seq 16 --steps 2 --device opencl", out, sizeof out);
  cr_assert_eq(rc, 0, "%s", out);
  cr_expect(strstr(out, "\"device\":\"opencl\""), "%s", out);
  char cpu[1 << 12];
  cr_assert_eq(run_cli("bench train --spec models/specs/tiny.xml --batch 2 --seq 16 --steps 2 --device interp", cpu, sizeof cpu), 0, "%s", cpu);
  // the same losses as the reference interpreter (printed to 4 decimals)
  const char *a = strstr(out, "step 2/2"), *b = strstr(cpu, "step 2/2");
  cr_assert(a && b, "%s\n%s", out, cpu);
  const char *la = strstr(a, "loss"), *lb = strstr(b, "loss");
  cr_assert(la && lb);
  cr_expect_eq(strncmp(la, lb, 11), 0, "opencl %.11s vs interp %.11s", la, lb);
}
