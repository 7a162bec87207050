// The CPU device's GEMM launches (runtime/cpu.c) against the reference
// interpreter: GEMMs of different shapes back to back on one nc_cpu, each run
// with the dynamic split (codegen/gemm.h, nc_gemm_args.sync). The device keeps
// one sync buffer, grown to the largest nc_gemm_sync_want it has seen and
// zeroed per launch over the launch's length: a GEMM with fewer C blocks after
// a larger one, then larger ones again (one needing more words than any
// before), must each see clean flags.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/build.h"
#include "passes/lower.h"
#include "passes/pass.h"
#include "runtime/cpu.h"
#include "runtime/interp.h"
#include "runtime/plan_run.h"
#include "models/init.h"  // nc_rng
#include "tests/support/model_util.h"

// Five GEMMs:
//   y0 = x  · w0   (M, n0), K kx
//   y1 = y0 · w1   (M, n1), K n0
//   y2 = y1 · w2   (M, n2), K n1
//   y3 = x3 · w3   (2M, n3), K n2
//   yb = xb · wb   (nb, M, n1), K kx (a batched product)
typedef struct {
  int64_t M, kx, n0, n1, n2, n3, nb;
} chain_shape;

static nc_id param(nc_graph *g, const char *name, int rank, const int64_t *d) {
  nc_dim dims[3];
  for (int i = 0; i < rank; i++) dims[i] = nc_dim_const(d[i]);
  return nc_leaf(g, NC_OP_PARAM, name, nc_type_make(NC_F32, rank, dims));
}

static nc_graph *chain_graph(const chain_shape *c) {
  nc_graph *g = nc_graph_new("gemm_chain");
  nc_id x = param(g, "x", 2, (int64_t[]){c->M, c->kx});
  nc_id w0 = param(g, "w0", 2, (int64_t[]){c->kx, c->n0});
  nc_id w1 = param(g, "w1", 2, (int64_t[]){c->n0, c->n1});
  nc_id w2 = param(g, "w2", 2, (int64_t[]){c->n1, c->n2});
  nc_id x3 = param(g, "x3", 2, (int64_t[]){2 * c->M, c->n2});
  nc_id w3 = param(g, "w3", 2, (int64_t[]){c->n2, c->n3});
  nc_id xb = param(g, "xb", 3, (int64_t[]){c->nb, c->M, c->kx});
  nc_id wb = param(g, "wb", 2, (int64_t[]){c->kx, c->n1});
  nc_id y0 = nc_b_matmul(g, x, w0, false, false);
  nc_id y1 = nc_b_matmul(g, y0, w1, false, false);
  nc_id y2 = nc_b_matmul(g, y1, w2, false, false);
  nc_id y3 = nc_b_matmul(g, x3, w3, false, false);
  nc_id yb = nc_b_matmul(g, xb, wb, false, false);
  cr_assert_null(nc_graph_set_output(g, "y1", y1));
  cr_assert_null(nc_graph_set_output(g, "y2", y2));
  cr_assert_null(nc_graph_set_output(g, "y3", y3));
  cr_assert_null(nc_graph_set_output(g, "yb", yb));
  cr_assert_null(nc_graph_take_error(g));
  return g;
}

#define MAX_FEEDS 8

// Runs g on the interpreter and on the CPU device (threads, every launch
// parallel), twice through one nc_cpu; compares every output.
static void check_on_cpu(nc_graph *g, int threads) {
  nc_feed feeds[MAX_FEEDS];
  nc_tensor t[MAX_FEEDS];
  int nf = 0;
  nc_rng r;
  nc_rng_seed(&r, 7);
  for (nc_id i = 0; i < nc_graph_nnodes(g); i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (nd->op != NC_OP_PARAM) continue;
    int64_t shape[NC_MAX_RANK];
    for (int d = 0; d < nd->type.rank; d++) shape[d] = nc_dim_eval(nd->type.dim[d], (int64_t[NC_MAX_SYMS]){0});
    cr_assert_null(nc_tensor_alloc(&t[nf], NC_F32, nd->type.rank, shape));
    for (int64_t j = 0; j < nc_tensor_numel(&t[nf]); j++) ((float *)t[nf].data)[j] = (float)(nc_rng_uniform(&r) - 0.5);
    feeds[nf] = (nc_feed){nc_node_name(g, i), &t[nf]};
    nf++;
  }
  int nout = nc_graph_noutputs(g);
  nc_tensor want[4], got[4];
  cr_assert_null(nc_interp_run(g, feeds, nf, want));

  nc_graph *h;
  cr_assert_null(nc_graph_copy(g, &h));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  const char *passes[] = {"decompose", "dce"};
  cr_assert_null(nc_pass_run_pipeline(&h, passes, 2, &ctx));
  nc_lower_opts lo = {.fuse = true};
  nc_plan *p;
  cr_assert_null(nc_plan_build(h, &lo, &p));
  int ngemm = 0;
  for (int i = 0; i < p->nkernels; i++) ngemm += nc_kernel_is_template(&p->kernels[i].k);
  cr_assert_eq(ngemm, 5, "%d GEMM launches in the plan", ngemm);
  // serial_work < 0: every launch uses every thread (0 would mean the default
  // threshold; these GEMMs are far above it anyway)
  nc_cpu_opts co = {.threads = threads, .serial_work = -1};
  nc_cpu *cpu;
  nc_status st = nc_cpu_compile(p, &co, &cpu);
  cr_assert_null(st, "cpu compile: %s", nc_status_msg(st));
  nc_plan_mem *mem = nc_plan_mem_new();
  for (int run = 0; run < 2; run++) {
    st = nc_plan_run_mem(h, p, mem, nc_cpu_runner, cpu, feeds, nf, got);
    cr_assert_null(st, "run %d: %s", run, nc_status_msg(st));
    for (int k = 0; k < nout; k++) {
      double e = nc_test_rel_err(&got[k], &want[k]);
      cr_expect_lt(e, 1e-5, "run %d, output %s: rel err %g", run, nc_graph_output_name(g, k), e);
      nc_tensor_free(&got[k]);
    }
  }
  nc_plan_mem_free(mem);
  nc_cpu_free(cpu);
  nc_plan_free(p);
  nc_graph_free(h);
  for (int k = 0; k < nout; k++) nc_tensor_free(&want[k]);
  for (int i = 0; i < nf; i++) nc_tensor_free(&t[i]);
}

Test(cpu_gemm, dynamic_split_sync_buffer_across_gemms_of_different_shapes) {
  // With the default knobs (mc 120, nc 512; AVX-512 and AVX2 alike) and 2
  // threads: y0 (300 x 1100): 3 x 3 C blocks, sync 10 words; y1 (300 x 40,
  // K 1100: several K blocks a C block): 3 blocks, 4 words; y2 (300 x 1100):
  // 10 words again; y3 (600 x 1100): 5 x 3 blocks, 16 words (the buffer
  // grows after having shrunk its use); yb (4 batch items of 300 x 40): 13.
  // The graph's outputs are y1 (from y0), y2, y3, yb.
  chain_shape c = {.M = 300, .kx = 700, .n0 = 1100, .n1 = 40, .n2 = 1100, .n3 = 1100, .nb = 4};
  nc_host_cpu hc;
  cr_assert_null(nc_host_cpu_query(&hc));
  nc_gemm_knobs kn = nc_gemm_knobs_default(&hc);
  size_t want[5] = {nc_gemm_sync_want(&kn, 2, 1, c.M, c.n0, false), nc_gemm_sync_want(&kn, 2, 1, c.M, c.n1, false),
                    nc_gemm_sync_want(&kn, 2, 1, c.M, c.n2, false), nc_gemm_sync_want(&kn, 2, 1, 2 * c.M, c.n3, false),
                    nc_gemm_sync_want(&kn, 2, c.nb, c.M, c.n1, false)};
  // the premise: every GEMM runs the dynamic split, with lengths that shrink and grow
  for (int i = 0; i < 5; i++) cr_assert_gt(want[i], 0, "GEMM %d would take the static split", i);
  cr_assert(want[1] < want[0] && want[2] > want[1] && want[3] > want[2] && want[4] < want[3], "sync lengths %zu %zu %zu %zu %zu",
            want[0], want[1], want[2], want[3], want[4]);
  nc_graph *g = chain_graph(&c);
  check_on_cpu(g, 2);
  nc_graph_free(g);
}
