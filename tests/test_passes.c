// The pass manager and the basic passes.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/pass.h"

// x -> tanh -> output "y"; exp(x) and neg(exp(x)) are dead.
static nc_graph *make_graph(void) {
  nc_graph *g = nc_graph_new("p");
  nc_dim d4 = nc_dim_const(4);
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 1, &d4));
  nc_id dead = nc_op1(g, NC_OP_EXP, x);
  nc_op1(g, NC_OP_NEG, dead);
  nc_id y = nc_op1(g, NC_OP_TANH, x);
  cr_assert_null(nc_graph_set_output(g, "y", y));
  cr_assert_null(nc_graph_error(g));
  return g;
}

Test(passes, dce_removes_dead_nodes_keeps_outputs) {
  nc_graph *g = make_graph();
  uint64_t before = nc_graph_hash(g);
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.verify = true;
  const char *names[] = {"dce"};
  cr_assert_null(nc_pass_run_pipeline(&g, names, 1, &ctx));
  cr_assert_eq(nc_graph_nnodes(g), 2);
  cr_assert_eq(nc_graph_node(g, 1)->op, NC_OP_TANH);
  cr_assert_eq(nc_graph_output(g, 0), 1);
  cr_assert_str_eq(nc_graph_output_name(g, 0), "y");
  cr_assert_neq(nc_graph_hash(g), before);
  // idempotent
  uint64_t h = nc_graph_hash(g);
  cr_assert_null(nc_pass_run_pipeline(&g, names, 1, &ctx));
  cr_assert_eq(nc_graph_hash(g), h);
  cr_assert_eq(ctx.nrun, 1);
  cr_assert(ctx.seconds[0] >= 0);
  nc_graph_free(g);
}

Test(passes, unknown_pass_is_named) {
  nc_graph *g = make_graph();
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  const char *names[] = {"verify", "fuse_everything"};
  nc_status st = nc_pass_run_pipeline(&g, names, 2, &ctx);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "unknown pass 'fuse_everything'"), "%s", nc_status_msg(st));
  cr_assert(strstr(nc_status_msg(st), "dce"), "lists the known passes");
  cr_assert_eq(ctx.nrun, 0, "nothing ran");
  nc_status_free(st);
  nc_graph_free(g);
}

Test(passes, stop_after_and_dumps) {
  nc_graph *g = make_graph();
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.verify = true;
  ctx.stop_after = 0;
  char *mem = NULL;
  size_t memlen = 0;
  ctx.dump_to = open_memstream(&mem, &memlen);
  ctx.dump_after = "*";
  ctx.dump_before = "verify";
  ctx.timing = true;
  const char *names[] = {"verify", "dce"};
  cr_assert_null(nc_pass_run_pipeline(&g, names, 2, &ctx));
  fclose(ctx.dump_to);
  cr_assert_eq(ctx.nrun, 1, "stopped after the first pass");
  cr_assert_eq(nc_graph_nnodes(g), 4, "dce did not run");
  cr_assert(strstr(mem, "IR before pass 'verify'"));
  cr_assert(strstr(mem, "IR after pass 'verify'"));
  cr_assert(!strstr(mem, "'dce'"));
  cr_assert(strstr(mem, "tanh"), "the dump is the text IR");
  cr_assert(strstr(mem, "pass verify"), "timing line");
  free(mem);
  nc_graph_free(g);
}

Test(passes, split_list) {
  char *storage;
  const char *names[NC_MAX_PIPELINE];
  int n;
  cr_assert_null(nc_pass_split_list("verify,dce,,verify", &storage, names, &n));
  cr_assert_eq(n, 3);
  cr_assert_str_eq(names[2], "verify");
  free(storage);
}
