// Scatter_add column blocks (NC_PATTERN_SCATTER_BLOCKS) and broadcast sources
// (NC_PATTERN_EXPAND_SOURCE), each on and off against the reference
// interpreter on fresh random inputs, on the kernel-IR evaluator and on the
// CPU backend with 1 and 2 threads (every launch split), plus plan checks:
// the kernels the pattern changes or removes, with it on and off.
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
#include "tests/support/model_util.h"

#define FR_MAX_FEEDS 16

typedef struct {
  nc_feed f[FR_MAX_FEEDS];
  nc_tensor t[FR_MAX_FEEDS];
  int n;
} fr_feeds;

static void fr_free_feeds(fr_feeds *fs) {
  for (int i = 0; i < fs->n; i++) nc_tensor_free(&fs->t[i]);
}

// Random values for every input and param (i32: in [0, imax)), symbols bound to syms.
static void fr_feed_random(const nc_graph *g, const int64_t *syms, uint64_t seed, int imax, fr_feeds *fs) {
  nc_rng r;
  nc_rng_seed(&r, seed);
  fs->n = 0;
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (nd->op != NC_OP_INPUT && nd->op != NC_OP_PARAM) continue;
    cr_assert_lt(fs->n, FR_MAX_FEEDS);
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

// Decompose + dce + lowering of a copy of g with the patterns `off` off.
static nc_plan *fr_lower(const nc_graph *g, unsigned off, nc_graph **lowered) {
  nc_graph *h;
  cr_assert_null(nc_graph_copy(g, &h));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.verify = true;
  ctx.patterns_off = off;
  const char *passes[] = {"decompose", "dce"};
  nc_status st = nc_pass_run_pipeline(&h, passes, 2, &ctx);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_lower_opts lo = {.fuse = true, .patterns_off = off};
  nc_plan *p;
  st = nc_plan_build(h, &lo, &p);
  cr_assert_null(st, "%s", nc_status_msg(st));
  *lowered = h;
  return p;
}

static int fr_count(const nc_plan *p, const char *marker) {
  int n = 0;
  for (int i = 0; i < p->nkernels; i++) n += strstr(p->kernels[i].k.name, marker) != NULL;
  return n;
}

// Every output of g with `bit` on and off, on the evaluator and the CPU (1, 2
// threads), against the interpreter; returns the kernel counts (on, off).
static void fr_check(const nc_graph *g, const fr_feeds *fs, unsigned bit, double tol, int nk[2]) {
  int nout = nc_graph_noutputs(g);
  nc_tensor want[8], got[8];
  cr_assert_leq(nout, 8);
  nc_status st = nc_interp_run(g, fs->f, fs->n, want);
  cr_assert_null(st, "interp: %s", nc_status_msg(st));
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fr_lower(g, off ? bit : 0, &h);
    nk[off] = p->nkernels;
#ifdef NC_SANITIZED
    const int ndev = 1;  // the evaluator only: JIT under sanitizers is slow
#else
    const int ndev = 3;
#endif
    for (int dev = 0; dev < ndev; dev++) {
      nc_cpu *cpu = NULL;
      if (dev) {
        nc_cpu_opts co = {.threads = dev, .serial_work = -1};  // every parallel launch split over the threads
        st = nc_cpu_compile(p, &co, &cpu);
        cr_assert_null(st, "cpu compile: %s", nc_status_msg(st));
        st = nc_plan_run(h, p, nc_cpu_runner, cpu, fs->f, fs->n, got);
      } else {
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

// ---- scatter_add in blocks of 16 columns ---------------------------------------------
// out = scatter_add(ids, src) into (V, C) with repeated ids (sums of several
// rows); C = 48 runs in blocks, C = 20 (not a multiple of 16) column by column.
static void fr_scatter_case(int64_t C, uint64_t seed) {
  nc_graph *g = nc_graph_new("scatter");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim di[2] = {nc_dim_sym(B), nc_dim_const(7)}, ds[3] = {nc_dim_sym(B), nc_dim_const(7), nc_dim_const(C)};
  nc_dim dout[2] = {nc_dim_const(5), nc_dim_const(C)};
  nc_id ids = nc_leaf(g, NC_OP_INPUT, "ids", nc_type_make(NC_I32, 2, di));
  nc_id src = nc_leaf(g, NC_OP_PARAM, "src", nc_type_make(NC_F32, 3, ds));
  nc_id out = nc_b_scatter_add(g, ids, nc_op1(g, NC_OP_TANH, src), nc_type_make(NC_F32, 2, dout));
  cr_assert_null(nc_graph_set_output(g, "out", out));
  cr_assert_null(nc_graph_take_error(g));
  int64_t syms[NC_MAX_SYMS] = {3};
  fr_feeds fs;
  fr_feed_random(g, syms, seed, 5, &fs);
  int nk[2];
  fr_check(g, &fs, NC_PATTERN_SCATTER_BLOCKS, 1e-6, nk);
  for (int off = 0; off < 2; off++) {  // the parallel loop: C / 16 blocks, or C columns
    nc_graph *h;
    nc_plan *p = fr_lower(g, off ? NC_PATTERN_SCATTER_BLOCKS : 0, &h);
    int seen = 0;
    for (int i = 0; i < p->nkernels; i++) {
      const nc_kernel *k = &p->kernels[i].k;
      if (!strstr(k->name, "_scatter_add")) continue;
      const nc_kstmt *outer = nc_ks_get(k, k->body);
      cr_assert_eq(outer->kind, NC_KS_FOR);
      int64_t trip = nc_kernel_eval_index(k, outer->end, (int64_t[]){3});
      int64_t want = !off && C % 16 == 0 ? C / 16 : C;
      cr_expect_eq(trip, want, "C %lld, pattern %s: parallel loop of %lld, want %lld", (long long)C, off ? "off" : "on", (long long)trip,
                   (long long)want);
      seen++;
    }
    cr_expect_eq(seen, 1);
    nc_plan_free(p);
    nc_graph_free(h);
  }
  fr_free_feeds(&fs);
  nc_graph_free(g);
}

Test(fusion_rows, scatter_add_column_blocks) { fr_scatter_case(48, 103); }
Test(fusion_rows, scatter_add_columns_not_a_multiple_of_16) { fr_scatter_case(20, 104); }

// ---- a broadcast table stored at its own size -----------------------------------------
// c = cos(x * 0.5), x (5, 8), expanded to (B, 5, 8) and read by two outputs
// (a * c, b - c): with the pattern the (5, 8) table is the only buffer between
// x and the outputs; without it the (B, 5, 8) expand has a kernel.
Test(fusion_rows, expand_reads_its_smaller_source) {
  nc_graph *g = nc_graph_new("expand_source");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim dx[2] = {nc_dim_const(5), nc_dim_const(8)}, db[3] = {nc_dim_sym(B), nc_dim_const(5), nc_dim_const(8)};
  nc_type tb = nc_type_make(NC_F32, 3, db);
  nc_id x = nc_leaf(g, NC_OP_PARAM, "x", nc_type_make(NC_F32, 2, dx));
  nc_id a = nc_leaf(g, NC_OP_PARAM, "a", tb), b = nc_leaf(g, NC_OP_PARAM, "b", tb);
  nc_id c = nc_b_expand(g, nc_op1(g, NC_OP_COS, nc_b_scale(g, x, 0.5)), tb);
  cr_assert_null(nc_graph_set_output(g, "y", nc_op2(g, NC_OP_MUL, a, c)));
  cr_assert_null(nc_graph_set_output(g, "z", nc_op2(g, NC_OP_SUB, b, c)));
  cr_assert_null(nc_graph_take_error(g));
  int64_t syms[NC_MAX_SYMS] = {3};
  fr_feeds fs;
  fr_feed_random(g, syms, 105, 1, &fs);
  int nk[2];
  fr_check(g, &fs, NC_PATTERN_EXPAND_SOURCE, 1e-6, nk);
  for (int off = 0; off < 2; off++) {
    nc_graph *h;
    nc_plan *p = fr_lower(g, off ? NC_PATTERN_EXPAND_SOURCE : 0, &h);
    int nexp = fr_count(p, "_expand"), ncos = fr_count(p, "_cos");
    if (off) cr_expect(nexp == 1 && ncos == 0, "pattern off: expand %d, cos %d kernels", nexp, ncos);
    else cr_expect(nexp == 0 && ncos == 1, "pattern on: expand %d, cos %d kernels", nexp, ncos);
    nc_plan_free(p);
    nc_graph_free(h);
  }
  cr_expect_eq(nk[0], nk[1], "kernels with the pattern %d, without %d", nk[0], nk[1]);
  fr_free_feeds(&fs);
  nc_graph_free(g);
}
