// Reference interpreter: every bad feed and runtime data error returns a
// status naming the culprit, never a crash.
#include <criterion/criterion.h>

#include "tests/support/interp_util.h"

TestSuite(interp_errors, .fini = nct_cleanup);

// tokens (B,T) i32, targets (B,T) i64, w (64,64) f32 param
static nc_graph *model(nc_id *out) {
  nc_graph *g = nct_graph();
  nc_id tok = nct_in(g, "tokens", NC_I32, "B,T");
  nc_id tgt = nct_in(g, "targets", NC_I64, "B,T");
  nc_id w = nct_param(g, "w", NC_F32, "64,64");
  nc_id e = nct_op(g, NC_OP_GATHER, NULL, 2, w, tok);             // (B,T,64)
  nc_id l = nct_op(g, NC_OP_CROSS_ENTROPY, NULL, 2, e, tgt);      // ()
  out[0] = l;
  out[1] = e;
  return g;
}

Test(interp_errors, unknown_feed_name) {
  nc_id ids[2];
  nc_graph *g = model(ids);
  nc_tensor t = NCT_T(NC_I32, "1,2", 0, 1), o;
  NCT_ERROR(nct_eval_st(g, ids[1], &o, "tokenz", &t, NULL), "feed 'tokenz'|no input or param");
}

Test(interp_errors, missing_feed) {
  nc_id ids[2];
  nc_graph *g = model(ids);
  nc_tensor t = NCT_T(NC_I32, "1,2", 0, 1), w = nct_tensor(NC_F32, "64,64", NULL), o;
  NCT_ERROR(nct_eval_st(g, ids[0], &o, "tokens", &t, "w", &w, NULL), "input 'targets' is not fed");
  NCT_ERROR(nct_eval_st(g, ids[1], &o, "tokens", &t, NULL), "param 'w' is not fed");
  // targets is not needed for the embedding: evaluating it without is fine
  cr_expect_eq(nct_eval_st(g, ids[1], &o, "tokens", &t, "w", &w, NULL), NC_OK);
  nc_tensor_free(&o);
}

Test(interp_errors, dtype_rank_shape_mismatch) {
  nc_id ids[2];
  nc_graph *g = model(ids);
  nc_tensor t = NCT_T(NC_I32, "1,2", 0, 1), o;
  nc_tensor w1 = nct_tensor(NC_F32, "64,32", NULL), w2 = nct_tensor(NC_BF16, "64,64", NULL);
  nc_tensor w3 = nct_tensor(NC_F32, "64", NULL);
  NCT_ERROR(nct_eval_st(g, ids[1], &o, "tokens", &t, "w", &w1, NULL), "param 'w': expected f32[64,64], got f32[64,32]");
  NCT_ERROR(nct_eval_st(g, ids[1], &o, "tokens", &t, "w", &w2, NULL), "param 'w': expected f32[64,64], got bf16[64,64]");
  NCT_ERROR(nct_eval_st(g, ids[1], &o, "tokens", &t, "w", &w3, NULL), "param 'w': expected f32[64,64], got f32[64]");
  nc_tensor w = nct_tensor(NC_F32, "64,64", NULL), tf = nct_tensor(NC_F32, "1,2", NULL);
  NCT_ERROR(nct_eval_st(g, ids[1], &o, "tokens", &tf, "w", &w, NULL), "input 'tokens': expected i32[B,T], got f32[1,2]");
}

Test(interp_errors, inconsistent_symbol) {
  nc_id ids[2];
  nc_graph *g = model(ids);
  nc_tensor t = nct_tensor(NC_I32, "2,7", NULL), tg = nct_tensor(NC_I64, "2,9", NULL);
  nc_tensor w = nct_tensor(NC_F32, "64,64", NULL), o;
  NCT_ERROR(nct_eval_st(g, ids[0], &o, "tokens", &t, "targets", &tg, "w", &w, NULL),
            "T is 7 from 'tokens' but 9 from 'targets'");
}

Test(interp_errors, composite_dim_checked_after_binding) {
  nc_graph *g = nct_graph();
  nc_id x = nct_in(g, "x", NC_F32, "B,T");
  nc_id y = nct_in(g, "y", NC_F32, "B*T");
  nc_id r = nct_opd(g, NC_OP_RESHAPE, nct_type(g, NC_F32, "B*T"), NULL, 1, x);
  nc_id s = nct_op(g, NC_OP_ADD, NULL, 2, r, y);
  nc_tensor xv = nct_tensor(NC_F32, "2,3", NULL), yv = nct_tensor(NC_F32, "5", NULL), o;
  NCT_ERROR(nct_eval_st(g, s, &o, "y", &yv, "x", &xv, NULL), "input 'y': expected f32[B*T] (B=2, T=3), got f32[5]");
  NCT_ERROR(nct_eval_st(g, s, &o, "y", &yv, NULL), "input 'y'|symbol B|not bound");
}

Test(interp_errors, unbound_symbol_in_needed_node) {
  nc_graph *g = nct_graph();
  nc_id io = nct_opd(g, NC_OP_IOTA, nct_type(g, NC_I32, "T"), "axis=0", 0);
  nc_tensor o;
  NCT_ERROR(nct_eval_st(g, io, &o, NULL), "symbol T is not bound|iota");
}

Test(interp_errors, bad_arguments) {
  nc_id ids[2];
  nc_graph *g = model(ids);
  nc_tensor t = NCT_T(NC_I32, "1,2", 0, 1), o;
  NCT_ERROR(nct_eval_st(g, 999, &o, NULL), "node %999 does not exist");
  NCT_ERROR(nct_eval_st(g, ids[1], &o, "tokens", &t, "tokens", &t, NULL), "feed 'tokens' is given twice");
  nc_feed f = {"tokens", NULL};
  NCT_ERROR(nc_interp_eval(g, &f, 1, &ids[1], 1, &o), "feed 'tokens' has no value");
  NCT_ERROR(nc_interp_eval(NULL, NULL, 0, NULL, 0, NULL), "graph is NULL");
  nc_tensor z = nct_tensor(NC_I32, "0,2", NULL);
  NCT_ERROR(nct_eval_st(g, ids[1], &o, "tokens", &z, NULL), "symbol B|must be >= 1");
}

Test(interp_errors, gather_scatter_ids_out_of_range) {
  nc_tensor tab = NCT_T(NC_F32, "3,1", 1, 2, 3), ids = NCT_T(NC_I32, "2", 1, 3), neg = NCT_T(NC_I64, "1", -1), o;
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_GATHER, NULL, &tab, &ids), "gather|id 3 at position 1 is outside [0, 3)|node %");
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_GATHER, NULL, &tab, &neg), "gather|id -1");
  nc_tensor src = NCT_T(NC_F32, "2,1", 1, 2);
  const nc_tensor *in[2] = {&ids, &src};
  NCT_ERROR(nct_apply_st(NC_OP_SCATTER_ADD, NC_F32, "3,1", NULL, 2, in, &o), "scatter_add|id 3 at position 1");
}

Test(interp_errors, cross_entropy_bad_target) {
  nc_tensor lg = nct_tensor(NC_F32, "2,4", NULL), t = NCT_T(NC_I32, "2", 1, 4), t2 = NCT_T(NC_I64, "2", -2, 0);
  nc_tensor d = NCT_T(NC_F32, "", 1), o;
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_CROSS_ENTROPY, NULL, &lg, &t), "cross_entropy|target 4 at position 1|[0, 4)");
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_CROSS_ENTROPY, NULL, &lg, &t2), "target -2 at position 0|ignore_index -1");
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_CROSS_ENTROPY_GRAD, NULL, &lg, &t, &d), "cross_entropy_grad|target 4");
  // -1 (the ignore index) is fine; with ignore_index=7, -1 is out of range
  nc_tensor ok = NCT_T(NC_I32, "2", -1, 3);
  cr_expect_eq(NCT_APPLY_ST(&o, NC_OP_CROSS_ENTROPY, NULL, &lg, &ok), NC_OK);
  nc_tensor_free(&o);
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_CROSS_ENTROPY, "ignore_index=7", &lg, &ok), "target -1");
}

Test(interp_errors, integer_division_by_zero) {
  nc_tensor a = NCT_T(NC_I32, "3", 1, 2, 3), b = NCT_T(NC_I32, "3", 1, 0, 1), o;
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_DIV, NULL, &a, &b), "div|division by zero|element 1|node %");
  nc_tensor u = NCT_T(NC_U8, "1", 0);
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_DIV, NULL, &u, &u), "division by zero");
}

Test(interp_errors, attention_bad_kvlen) {
  nc_tensor q = nct_tensor(NC_F32, "1,2,1,2", NULL), k = nct_tensor(NC_F32, "1,3,1,2", NULL);
  nc_tensor d = nct_tensor(NC_F32, "1,2,1,2", NULL), o;
  nc_tensor k0 = nct_scalar_i32(0), k4 = nct_scalar_i32(4), k1 = nct_scalar_i32(1);
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_ATTENTION, "scale=1", &q, &k, &k, &k0), "attention|kvlen 0 is outside [1, 3]");
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_ATTENTION, "scale=1", &q, &k, &k, &k4), "kvlen 4 is outside [1, 3]");
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_ATTENTION, "scale=1", &q, &k, &k, &k1), "kvlen 1 is less than Tq 2");
  NCT_ERROR(NCT_APPLY_ST(&o, NC_OP_ATTENTION_GRAD, "wrt=k scale=1", &q, &k, &k, &d, &k4), "attention_grad|kvlen 4");
  cr_expect_eq(NCT_APPLY_ST(&o, NC_OP_ATTENTION, "causal=0 scale=1", &q, &k, &k, &k1), NC_OK);
  nc_tensor_free(&o);
}

Test(interp_errors, error_frees_everything_and_outputs_zeroed) {
  // a runtime error late in a graph: outputs come back zeroed (safe to free)
  nc_graph *g = nct_graph();
  nc_id a = nct_in(g, "a", NC_I32, "2"), b = nct_in(g, "b", NC_I32, "2");
  nc_id s = nct_op(g, NC_OP_ADD, NULL, 2, a, b);
  nc_id q = nct_op(g, NC_OP_DIV, NULL, 2, s, b);
  nc_tensor av = NCT_T(NC_I32, "2", 1, 2), bv = NCT_T(NC_I32, "2", 1, 0);
  nc_feed f[2] = {{"a", &av}, {"b", &bv}};
  nc_id ids[2] = {s, q};
  nc_tensor out[2];
  NCT_ERROR(nc_interp_eval(g, f, 2, ids, 2, out), "division by zero");
  cr_expect(out[0].data == NULL && out[1].data == NULL);
  nc_tensor_free(&out[0]);
}
