// The IR core: dims, types, the op table, shape rules, hash-consing, verify.
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ir/graph.h"
#include "ir/rules.h"
#include "ir/text.h"
#include "support/buf.h"

static nc_graph *g;
static int B, T;

static void setup(void) {
  g = nc_graph_new("t");
  cr_assert_null(nc_graph_sym(g, "B", &B));
  cr_assert_null(nc_graph_sym(g, "T", &T));
}
static void teardown(void) { nc_graph_free(g); }

static nc_type ty(nc_dtype dt, int rank, ...) {
  nc_dim dims[NC_MAX_RANK];
  va_list ap;
  va_start(ap, rank);
  for (int i = 0; i < rank; i++) {
    long long v = va_arg(ap, long long);
    dims[i] = v == -1 ? nc_dim_sym(B) : v == -2 ? nc_dim_sym(T) : nc_dim_const(v);
  }
  va_end(ap);
  return nc_type_make(dt, rank, dims);
}
#define SB -1LL
#define ST -2LL

static void expect_type(nc_id id, const char *want) {
  cr_assert_neq(id, NC_NONE, "build failed: %s", nc_status_msg(nc_graph_error(g)));
  char buf[200];
  nc_type t = nc_type_of(g, id);
  cr_assert_str_eq(nc_type_str(g, &t, buf, sizeof buf), want);
}

static void expect_error(nc_id id, const char *words) {
  cr_assert_eq(id, NC_NONE, "expected a build error containing '%s'", words);
  nc_status st = nc_graph_take_error(g);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), words), "message '%s' lacks '%s'", nc_status_msg(st), words);
  nc_status_free(st);
}

TestSuite(graph, .init = setup, .fini = teardown);

Test(graph, dims_multiply_and_print) {
  nc_dim bt;
  cr_assert(nc_dim_mul(nc_dim_sym(B), nc_dim_sym(T), &bt));
  nc_dim d;
  cr_assert(nc_dim_mul(bt, nc_dim_const(4), &d));
  cr_assert(nc_dim_mul(d, nc_dim_sym(B), &d));
  char buf[64];
  cr_assert_str_eq(nc_dim_str(g, d, buf, sizeof buf), "4*B^2*T");
  int64_t syms[2] = {3, 5};
  cr_assert_eq(nc_dim_eval(d, syms), 4 * 9 * 5);
  cr_assert(!nc_dim_mul(nc_dim_const(INT64_C(1) << 40), nc_dim_const(INT64_C(1) << 40), &d), "overflow caught");
}

Test(graph, symbols_limited_and_checked) {
  nc_status st = nc_graph_sym(g, "3x", NULL);
  cr_assert_not_null(st);
  nc_status_free(st);
  for (int i = 2; i < NC_MAX_SYMS; i++) {
    char nm[8];
    snprintf(nm, sizeof nm, "S%d", i);
    cr_assert_null(nc_graph_sym(g, nm, NULL));
  }
  st = nc_graph_sym(g, "extra", NULL);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "too many symbols"));
  nc_status_free(st);
  int k;
  cr_assert_null(nc_graph_sym(g, "T", &k));
  cr_assert_eq(k, T);
}

Test(graph, hash_consing_dedups_identical_nodes) {
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", ty(NC_F32, 2, SB, 8LL));
  nc_id a = nc_op1(g, NC_OP_EXP, x), b = nc_op1(g, NC_OP_EXP, x);
  cr_assert_eq(a, b);
  nc_id c = nc_op1(g, NC_OP_TANH, x);
  cr_assert_neq(a, c);
  nc_id k1 = nc_const(g, 0.5, ty(NC_F32, 0)), k2 = nc_const(g, 0.5, ty(NC_F32, 0));
  nc_id k3 = nc_const(g, -0.5, ty(NC_F32, 0));
  cr_assert_eq(k1, k2);
  cr_assert_neq(k1, k3);
  cr_assert_eq(nc_leaf(g, NC_OP_INPUT, "x", ty(NC_F32, 2, SB, 8LL)), x);
  cr_assert_eq(nc_graph_nnodes(g), 5);
  cr_assert_null(nc_graph_verify(g));
}

// nc_graph_copy: the same text (symbols, names, attributes, outputs), the same
// node ids, and a copy that changes without touching the original.
Test(graph, copy_is_identical_and_independent) {
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", ty(NC_F32, 2, SB, ST));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", ty(NC_F32, 2, ST, 4LL));
  nc_id y = nc_op1(g, NC_OP_TANH, nc_op2(g, NC_OP_MATMUL, x, w));
  cr_assert_null(nc_graph_set_output(g, "y", y));
  cr_assert_null(nc_graph_set_output(g, "x_again", x));
  nc_graph *h;
  cr_assert_null(nc_graph_copy(g, &h));
  nc_buf a, b;
  nc_buf_init(&a);
  nc_buf_init(&b);
  cr_assert_null(nc_graph_print_text(g, &a));
  cr_assert_null(nc_graph_print_text(h, &b));
  cr_assert_str_eq(b.data, a.data);
  cr_assert(strstr(a.data, "\"w\""), "the dump names the param: %s", a.data);
  cr_assert_eq(nc_graph_output(h, 0), y);
  cr_assert_str_eq(nc_graph_output_name(h, 1), "x_again");
  int n = nc_graph_nnodes(g);
  cr_assert_neq(nc_op1(h, NC_OP_EXP, y), NC_NONE);
  cr_assert_eq(nc_graph_nnodes(h), n + 1);
  cr_assert_eq(nc_graph_nnodes(g), n, "the original is untouched");
  cr_assert_null(nc_graph_verify(h));
  nc_buf_free(&a);
  nc_buf_free(&b);
  nc_graph_free(h);
}

Test(graph, leaf_redeclared_with_other_type_is_an_error) {
  nc_leaf(g, NC_OP_PARAM, "w", ty(NC_F32, 2, 4LL, 4LL));
  expect_error(nc_leaf(g, NC_OP_PARAM, "w", ty(NC_F32, 2, 4LL, 5LL)), "already declared");
  expect_error(nc_leaf(g, NC_OP_INPUT, "w", ty(NC_F32, 2, 4LL, 4LL)), "already declared");
}

Test(graph, absurd_and_bad_declared_types_rejected) {
  expect_error(nc_leaf(g, NC_OP_INPUT, "a", ty(NC_F32, 1, 0LL)), "extent");
  expect_error(nc_leaf(g, NC_OP_INPUT, "a", ty(NC_F32, 1, (long long)(INT64_C(1) << 41))), "extent");
  expect_error(nc_leaf(g, NC_OP_INPUT, "a", ty(NC_F32, 3, 1LL << 20, 1LL << 20, 1LL << 20)), "overflow");
  nc_type t = ty(NC_F32, 1, 4LL);
  t.dim[0].e = (uint64_t)1 << (4 * 9);  // symbol 9 is not declared
  expect_error(nc_leaf(g, NC_OP_INPUT, "a", t), "undeclared symbol");
  t = ty(NC_F32, 1, 4LL);
  t.rank = 7;
  expect_error(nc_leaf(g, NC_OP_INPUT, "a", t), "rank");
  expect_error(nc_leaf(g, NC_OP_INPUT, "bad\xff", ty(NC_F32, 1, 4LL)), "UTF-8");
}

Test(graph, elementwise_rules) {
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", ty(NC_F32, 2, SB, 8LL));
  nc_id y = nc_leaf(g, NC_OP_INPUT, "y", ty(NC_F32, 2, SB, 9LL));
  nc_id i = nc_leaf(g, NC_OP_INPUT, "i", ty(NC_I32, 2, SB, 8LL));
  expect_type(nc_op2(g, NC_OP_ADD, x, x), "f32[B,8]");
  expect_type(nc_op2(g, NC_OP_LT, x, x), "bool[B,8]");
  expect_type(nc_op1(g, NC_OP_NEG, i), "i32[B,8]");
  expect_error(nc_op2(g, NC_OP_ADD, x, y), "identical types");
  expect_error(nc_op2(g, NC_OP_ADD, x, i), "identical types");
  expect_error(nc_op1(g, NC_OP_EXP, i), "floating point");
  expect_error(nc_op1(g, NC_OP_NOT, x), "bool");
  nc_id c = nc_op2(g, NC_OP_GT, x, x);
  expect_type(nc_op3(g, NC_OP_WHERE, c, x, x), "f32[B,8]");
  expect_error(nc_op3(g, NC_OP_WHERE, x, x, x), "bool");
  expect_error(nc_op1(g, NC_OP_ADD, x), "takes 2 inputs");
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_CAST);
  d.nin = 1;
  d.in[0] = x;
  d.type = ty(NC_BF16, 2, SB, 8LL);
  expect_type(nc_build(g, &d), "bf16[B,8]");
  d.type = ty(NC_BF16, 2, SB, 7LL);
  expect_error(nc_build(g, &d), "declared shape");
}

Test(graph, reduce_rules) {
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", ty(NC_F32, 3, SB, ST, 8LL));
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_REDUCE_SUM);
  d.nin = 1;
  d.in[0] = x;
  d.ia[0] = 0x6;  // axes {1,2}
  expect_type(nc_build(g, &d), "f32[B]");
  d.ia[1] = 1;
  expect_type(nc_build(g, &d), "f32[B,1,1]");
  d.ia[0] = 0x8;
  expect_error(nc_build(g, &d), "beyond rank");
  d.ia[0] = 0;
  expect_error(nc_build(g, &d), "at least one axis");
  d.ia[0] = 1;
  d.ia[1] = 2;
  expect_error(nc_build(g, &d), "0 or 1");
}

Test(graph, matmul_and_bmm_rules) {
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", ty(NC_F32, 3, SB, ST, 64LL));
  nc_id w = nc_leaf(g, NC_OP_PARAM, "w", ty(NC_F32, 2, 256LL, 64LL));
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_MATMUL);
  d.nin = 2;
  d.in[0] = x;
  d.in[1] = w;
  expect_error(nc_build(g, &d), "contraction dims differ");
  d.ia[1] = 1;  // tb
  expect_type(nc_build(g, &d), "f32[B,T,256]");
  d.ia[0] = 1;  // ta on rank 3
  expect_error(nc_build(g, &d), "rank 2");
  nc_id q = nc_leaf(g, NC_OP_INPUT, "q", ty(NC_F32, 4, SB, 4LL, ST, 16LL));
  nc_node_desc_init(&d, NC_OP_BMM);
  d.nin = 2;
  d.in[0] = q;
  d.in[1] = q;
  d.ia[1] = 1;
  expect_type(nc_build(g, &d), "f32[B,4,T,T]");
}

Test(graph, attention_and_rope_rules) {
  nc_id q = nc_leaf(g, NC_OP_INPUT, "q", ty(NC_F32, 4, SB, ST, 6LL, 16LL));
  nc_id k = nc_leaf(g, NC_OP_INPUT, "k", ty(NC_F32, 4, SB, ST, 2LL, 16LL));
  nc_id v = nc_leaf(g, NC_OP_INPUT, "v", ty(NC_F32, 4, SB, ST, 2LL, 8LL));
  nc_id k4 = nc_leaf(g, NC_OP_INPUT, "k4", ty(NC_F32, 4, SB, ST, 4LL, 16LL));
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_ATTENTION);
  d.nin = 3;
  d.in[0] = q;
  d.in[1] = k;
  d.in[2] = v;
  expect_error(nc_build(g, &d), "scale must be > 0");
  d.fa[0] = 0.25;
  expect_type(nc_build(g, &d), "f32[B,T,6,8]");
  d.in[1] = k4;
  expect_error(nc_build(g, &d), "head counts differ");
  d.in[1] = k;
  d.in[2] = k4;
  expect_error(nc_build(g, &d), "head counts differ");
  nc_id r = nc_op1(g, NC_OP_ROPE, q);
  cr_assert_eq(nc_graph_node(g, r)->fa[0], 10000.0, "default base");
  expect_type(r, "f32[B,T,6,16]");
  nc_id x3 = nc_leaf(g, NC_OP_INPUT, "x3", ty(NC_F32, 3, SB, ST, 16LL));
  expect_error(nc_op1(g, NC_OP_ROPE, x3), "rank 4");
}

Test(graph, layout_rules) {
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", ty(NC_F32, 3, SB, ST, 8LL));
  int perm[3] = {2, 0, 1};
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_PERMUTE);
  d.nin = 1;
  d.in[0] = x;
  d.ia[0] = nc_perm_encode(perm, 3);
  expect_type(nc_build(g, &d), "f32[8,B,T]");
  int bad[3] = {0, 0, 1};
  d.ia[0] = nc_perm_encode(bad, 3);
  expect_error(nc_build(g, &d), "not a permutation");
  nc_dim bt;
  nc_dim_mul(nc_dim_sym(B), nc_dim_sym(T), &bt);
  nc_node_desc_init(&d, NC_OP_RESHAPE);
  d.nin = 1;
  d.in[0] = x;
  nc_dim dims[2] = {bt, nc_dim_const(8)};
  d.type = nc_type_make(NC_F32, 2, dims);
  expect_type(nc_build(g, &d), "f32[B*T,8]");
  dims[1] = nc_dim_const(4);
  d.type = nc_type_make(NC_F32, 2, dims);
  expect_error(nc_build(g, &d), "element counts differ");
  nc_node_desc_init(&d, NC_OP_SLICE);
  d.nin = 1;
  d.in[0] = x;
  d.ia[0] = 2;
  d.ia[1] = 2;
  d.ia[2] = 5;
  expect_type(nc_build(g, &d), "f32[B,T,3]");
  d.ia[0] = 1;
  expect_error(nc_build(g, &d), "symbolic");
  nc_node_desc_init(&d, NC_OP_CONCAT);
  d.nin = 3;
  d.in[0] = d.in[1] = d.in[2] = x;
  d.ia[0] = 2;
  expect_type(nc_build(g, &d), "f32[B,T,24]");
  nc_id s = nc_leaf(g, NC_OP_INPUT, "s", ty(NC_F32, 1, 8LL));
  nc_node_desc_init(&d, NC_OP_EXPAND);
  d.nin = 1;
  d.in[0] = s;
  d.type = ty(NC_F32, 3, SB, ST, 8LL);
  expect_type(nc_build(g, &d), "f32[B,T,8]");
  d.type = ty(NC_F32, 3, SB, ST, 9LL);
  expect_error(nc_build(g, &d), "right-aligned");
}

Test(graph, embedding_and_loss_rules) {
  nc_id wte = nc_leaf(g, NC_OP_PARAM, "wte", ty(NC_F32, 2, 100LL, 16LL));
  nc_id ids = nc_leaf(g, NC_OP_INPUT, "ids", ty(NC_I32, 2, SB, ST));
  nc_id e = nc_op2(g, NC_OP_GATHER, wte, ids);
  expect_type(e, "f32[B,T,16]");
  expect_error(nc_op2(g, NC_OP_GATHER, wte, e), "i32 or i64");
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_SCATTER_ADD);
  d.nin = 2;
  d.in[0] = ids;
  d.in[1] = e;
  d.type = ty(NC_F32, 2, 100LL, 16LL);
  expect_type(nc_build(g, &d), "f32[100,16]");
  nc_id logits = nc_leaf(g, NC_OP_INPUT, "logits", ty(NC_F32, 3, SB, ST, 100LL));
  nc_id ce = nc_op2(g, NC_OP_CROSS_ENTROPY, logits, ids);
  expect_type(ce, "f32[]");
  cr_assert_eq(nc_graph_node(g, ce)->ia[0], -1, "default ignore_index");
  nc_node_desc_init(&d, NC_OP_CROSS_ENTROPY);
  d.nin = 2;
  d.in[0] = logits;
  d.in[1] = ids;
  d.ia[1] = 0;  // none
  expect_type(nc_build(g, &d), "f32[B,T]");
  expect_error(nc_op2(g, NC_OP_CROSS_ENTROPY, e, wte), "i32 or i64");
}

Test(graph, sticky_error_propagates) {
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", ty(NC_I32, 1, 4LL));
  nc_id bad = nc_op1(g, NC_OP_EXP, x);
  cr_assert_eq(bad, NC_NONE);
  cr_assert_eq(nc_op1(g, NC_OP_NEG, x), NC_NONE, "builders stop after the first error");
  cr_assert(strstr(nc_status_msg(nc_graph_error(g)), "exp"));
}

Test(graph, outputs_named_and_unique) {
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", ty(NC_F32, 1, 4LL));
  cr_assert_null(nc_graph_set_output(g, "y", x));
  nc_status st = nc_graph_set_output(g, "y", x);
  cr_assert(strstr(nc_status_msg(st), "twice"));
  nc_status_free(st);
  st = nc_graph_set_output(g, "z", 99);
  cr_assert(strstr(nc_status_msg(st), "does not exist"));
  nc_status_free(st);
  cr_assert_eq(nc_graph_noutputs(g), 1);
}

Test(graph, hash_is_structural_and_stable) {
  nc_graph *h = nc_graph_new("t");
  cr_assert_null(nc_graph_sym(h, "B", NULL));
  cr_assert_null(nc_graph_sym(h, "T", NULL));
  nc_graph *gs[2] = {g, h};
  for (int i = 0; i < 2; i++) {
    nc_id x = nc_leaf(gs[i], NC_OP_INPUT, "x", nc_type_make(NC_F32, 1, (nc_dim[]){nc_dim_sym(0)}));
    nc_id y = nc_op1(gs[i], NC_OP_TANH, x);
    cr_assert_null(nc_graph_set_output(gs[i], "y", y));
  }
  cr_assert_eq(nc_graph_hash(g), nc_graph_hash(h));
  nc_op1(h, NC_OP_EXP, 0);
  cr_assert_neq(nc_graph_hash(g), nc_graph_hash(h));
  nc_graph_free(h);
}

Test(graph, every_op_has_name_lookup_and_parsable_schema) {
  for (int op = 0; op < NC_OP_COUNT; op++) {
    const nc_op_info *info = nc_op_get((nc_op)op);
    cr_assert_eq(nc_op_lookup(info->name, strlen(info->name)), op);
    nc_attr_spec specs[NC_MAX_ATTRS];
    int n = nc_op_attr_specs((nc_op)op, specs);
    int ni = 0, nf = 0;
    for (int i = 0; i < n; i++) {
      if (specs[i].type == NC_ATTR_FLOAT) nf++;
      else ni++;
      cr_assert(strlen(specs[i].name) > 0);
    }
    cr_assert(ni <= NC_MAX_IATTR && nf <= NC_MAX_FATTR, "%s attrs fit the node", info->name);
  }
  cr_assert_eq(nc_op_lookup("nope", 4), NC_OP_COUNT);
}
