// Reference interpreter: rms_norm, softmax, rope, attention, cross_entropy
// and their gradient ops, against hand-computed values and against central
// finite differences of the forward ops.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tests/support/interp_util.h"

TestSuite(interp_nn, .fini = nct_cleanup);

#define LN3 1.0986122886681098
#define LN4 1.3862943611198906

// ---- hand-computed -------------------------------------------------------------------------
Test(interp_nn, rms_norm_values) {
  nc_tensor x = NCT_T(NC_F32, "2,4", 1, -1, 1, -1, 0, 0, 0, 0);
  nc_tensor y = NCT_APPLY(NC_OP_RMS_NORM, "eps=0.5625", &x);  // 1/sqrt(1 + 0.5625) = 0.8
  NCT_EXPECT(&y, 1e-7, 0.8, -0.8, 0.8, -0.8, 0, 0, 0, 0);
  nc_tensor z = NCT_T(NC_F32, "1,1,2", 3, 4);
  nc_tensor yz = NCT_APPLY(NC_OP_RMS_NORM, "eps=1e-6", &z);  // mean(x^2) = 12.5
  NCT_EXPECT(&yz, 1e-7, 0.8485281034827336, 1.1313708046436448);
  nc_tensor b = NCT_T(NC_BF16, "4", 1, -1, 1, -1);
  nc_tensor yb = NCT_APPLY(NC_OP_RMS_NORM, "eps=0.5625", &b);
  NCT_EXPECT(&yb, 0, 0.80078125, -0.80078125, 0.80078125, -0.80078125);  // bf16(0.8)
}

Test(interp_nn, rms_norm_grad_values) {
  // r = 0.8, y = [.8,-.8,.8,-.8], mean(dy*y) = 0.2, dx = r*(dy - 0.2*y)
  nc_tensor x = NCT_T(NC_F32, "1,4", 1, -1, 1, -1), dy = NCT_T(NC_F32, "1,4", 1, 0, 0, 0);
  nc_tensor dx = NCT_APPLY(NC_OP_RMS_NORM_GRAD, "eps=0.5625", &x, &dy);
  NCT_EXPECT(&dx, 1e-7, 0.672, 0.128, -0.128, 0.128);
  nc_tensor xh = NCT_T(NC_F16, "1,4", 1, -1, 1, -1), dyh = NCT_T(NC_F16, "1,4", 1, 0, 0, 0);
  nc_tensor dxh = NCT_APPLY(NC_OP_RMS_NORM_GRAD, "eps=0.5625", &xh, &dyh);
  NCT_EXPECT(&dxh, 0, 0.671875, 0.1280517578125, -0.1280517578125, 0.1280517578125);  // f16 rounding
}

Test(interp_nn, softmax_log_softmax_values) {
  nc_tensor x = NCT_T(NC_F32, "2,1,2", 0, LN3, 1000, 1000);
  nc_tensor s = NCT_APPLY(NC_OP_SOFTMAX, NULL, &x), l = NCT_APPLY(NC_OP_LOG_SOFTMAX, NULL, &x);
  NCT_EXPECT(&s, 1e-7, 0.25, 0.75, 0.5, 0.5);
  NCT_EXPECT(&l, 1e-6, -LN4, -0.2876820724517809, -0.6931471805599453, -0.6931471805599453);
  nc_tensor y = NCT_T(NC_F32, "3", 1, 2, 3);
  nc_tensor sy = NCT_APPLY(NC_OP_SOFTMAX, NULL, &y);
  NCT_EXPECT(&sy, 1e-7, 0.09003057317038046, 0.24472847105479767, 0.6652409557748219);
  nc_tensor b = NCT_T(NC_BF16, "2", 0, LN3);
  nc_tensor sb = NCT_APPLY(NC_OP_SOFTMAX, NULL, &b);  // bf16(ln3) = 1.1015625: p = [0.24945, 0.75055]
  NCT_EXPECT(&sb, 0, 0.2490234375, 0.75);
}

Test(interp_nn, rope_values) {
  // t = 1, D = 4: pair (x0,x2) rotates by 1 rad, (x1,x3) by base^(-1/2) = 0.01 rad
  nc_tensor x = NCT_T(NC_F32, "1,2,1,4", 1, 2, 3, 4, 1, 2, 3, 4);
  nc_tensor y = NCT_APPLY(NC_OP_ROPE, NULL, &x);
  NCT_EXPECT(&y, 1e-6, 1, 2, 3, 4, 3.064715260291829, 2.039899334169997, 0.7794359327965228, 3.9798003349983277);
  // every head rotates alike
  nc_tensor h = NCT_T(NC_F32, "1,2,2,2", 1, 0, 0, 1, 1, 0, 0, 1);
  nc_tensor yh = NCT_APPLY(NC_OP_ROPE, "base=100", &h);
  NCT_EXPECT(&yh, 1e-7, 1, 0, 0, 1, 0.5403023058681398, -0.8414709848078965, 0.8414709848078965,
             0.5403023058681398);
}

Test(interp_nn, rope_pos0_and_inverse) {
  nc_tensor x = NCT_T(NC_F32, "1,1,1,2", 1, 0);
  nc_tensor p = nct_scalar_i32(2);
  nc_tensor y = NCT_APPLY(NC_OP_ROPE, NULL, &x, &p), yi = NCT_APPLY(NC_OP_ROPE, "inverse=1", &x, &p);
  NCT_EXPECT(&y, 1e-7, -0.4161468365471424, -0.9092974268256817);
  NCT_EXPECT(&yi, 1e-7, -0.4161468365471424, 0.9092974268256817);
  nc_tensor b = NCT_T(NC_BF16, "1,1,1,2", 1, 0);
  nc_tensor yb = NCT_APPLY(NC_OP_ROPE, NULL, &b, &p);
  NCT_EXPECT(&yb, 0, -0.416015625, -0.91015625);  // bf16 rounding
}

// q (1,2,1,1) = 1, k = [0, ln3], v = [1, 5]: full softmax gives [.25, .75] -> 4
static nc_tensor attn(const char *attrs, int kvlen) {
  nc_tensor q = NCT_T(NC_F32, "1,2,1,1", 1, 1), k = NCT_T(NC_F32, "1,2,1,1", 0, LN3);
  nc_tensor v = NCT_T(NC_F32, "1,2,1,1", 1, 5), kl = nct_scalar_i32(kvlen);
  if (kvlen) return NCT_APPLY(NC_OP_ATTENTION, attrs, &q, &k, &v, &kl);
  return NCT_APPLY(NC_OP_ATTENTION, attrs, &q, &k, &v);
}

Test(interp_nn, attention_masks) {
  nc_tensor full = attn("causal=0 scale=1", 0), causal = attn("causal=1 scale=1", 0);
  nc_tensor win1 = attn("causal=1 window=1 scale=1", 0), win2 = attn("causal=1 window=2 scale=1", 0);
  nc_tensor kv1 = attn("causal=0 scale=1", 1), ncw = attn("causal=0 window=1 scale=1", 0);
  NCT_EXPECT(&full, 1e-6, 4, 4);
  NCT_EXPECT(&causal, 1e-6, 1, 4);
  NCT_EXPECT(&win1, 1e-6, 1, 5);   // each query sees only itself
  NCT_EXPECT(&win2, 1e-6, 1, 4);
  NCT_EXPECT(&kv1, 1e-6, 1, 1);    // only key 0 is valid
  NCT_EXPECT(&ncw, 1e-6, 4, 5);    // window without causal masks only the far past
}

Test(interp_nn, attention_decode_kvlen_scale) {
  nc_tensor q = NCT_T(NC_F32, "1,1,1,1", 2), k = NCT_T(NC_F32, "1,3,1,1", 0, LN3, 100);
  nc_tensor v = NCT_T(NC_F32, "1,3,1,1", 1, 5, -7);
  nc_tensor k2 = nct_scalar_i32(2), k1 = nct_scalar_i32(1);
  // the query sits at position kvlen-1; key 2 is beyond kvlen
  nc_tensor a = NCT_APPLY(NC_OP_ATTENTION, "scale=0.5", &q, &k, &v, &k2);
  nc_tensor b = NCT_APPLY(NC_OP_ATTENTION, "scale=0.5", &q, &k, &v, &k1);
  NCT_EXPECT(&a, 1e-6, 4);
  NCT_EXPECT(&b, 1e-6, 1);
}

Test(interp_nn, attention_gqa_head_mapping_and_dv) {
  // Hq = 4, Hkv = 2: heads 0,1 use kv head 0 (k = [0, ln3]); heads 2,3 kv head 1 (k = [ln3, 0])
  nc_tensor q = NCT_T(NC_F32, "1,1,4,1", 1, 1, 1, 1);
  nc_tensor k = NCT_T(NC_F32, "1,2,2,1", 0, LN3, LN3, 0);
  nc_tensor v = NCT_T(NC_F32, "1,2,2,2", 1, 10, 1, 10, 5, 50, 5, 50);
  nc_tensor o = NCT_APPLY(NC_OP_ATTENTION, "causal=0 scale=1", &q, &k, &v);
  NCT_SHAPE(&o, NC_F32, "1,1,4,2");
  NCT_EXPECT(&o, 1e-5, 4, 40, 4, 40, 2, 20, 2, 20);
}

Test(interp_nn, attention_bf16) {
  nc_tensor q = NCT_T(NC_BF16, "1,1,1,1", 1), k = NCT_T(NC_BF16, "1,2,1,1", 0, 0);
  nc_tensor v = NCT_T(NC_BF16, "1,2,1,1", 1, 1.0078125);
  nc_tensor o = NCT_APPLY(NC_OP_ATTENTION, "causal=0 scale=1", &q, &k, &v);
  NCT_EXPECT(&o, 0, 1.0);  // 1.00390625 ties to even
}

Test(interp_nn, attention_grad_values) {
  // P = [.25, .75], dP = v = [1, 5], dS = P*(dP - 4) = [-.75, .75]
  nc_tensor q = NCT_T(NC_F32, "1,1,1,1", 1), k = NCT_T(NC_F32, "1,2,1,1", 0, LN3);
  nc_tensor v = NCT_T(NC_F32, "1,2,1,1", 1, 5), d = NCT_T(NC_F32, "1,1,1,1", 1);
  nc_tensor dq = NCT_APPLY(NC_OP_ATTENTION_GRAD, "wrt=q causal=0 scale=1", &q, &k, &v, &d);
  nc_tensor dk = NCT_APPLY(NC_OP_ATTENTION_GRAD, "wrt=k causal=0 scale=1", &q, &k, &v, &d);
  nc_tensor dv = NCT_APPLY(NC_OP_ATTENTION_GRAD, "wrt=v causal=0 scale=1", &q, &k, &v, &d);
  NCT_EXPECT(&dq, 1e-6, 0.8239592165010823);
  NCT_EXPECT(&dk, 1e-6, -0.75, 0.75);
  NCT_EXPECT(&dv, 1e-6, 0.25, 0.75);
  // with kvlen = 1 only key 0 is seen: softmax is constant -> dq = dk = 0, dv = [1, 0]
  nc_tensor kl = nct_scalar_i32(1);
  nc_tensor dq1 = NCT_APPLY(NC_OP_ATTENTION_GRAD, "wrt=q causal=1 scale=1", &q, &k, &v, &d, &kl);
  nc_tensor dv1 = NCT_APPLY(NC_OP_ATTENTION_GRAD, "wrt=v causal=1 scale=1", &q, &k, &v, &d, &kl);
  NCT_EXPECT(&dq1, 1e-7, 0);
  NCT_EXPECT(&dv1, 1e-7, 1, 0);
}

static nc_tensor ce(const char *attrs, const nc_tensor *targets) {
  nc_tensor lg = NCT_T(NC_F32, "3,2", 0, LN3, 0, LN3, 0, LN3);
  return NCT_APPLY(NC_OP_CROSS_ENTROPY, attrs, &lg, targets);
}

Test(interp_nn, cross_entropy_reductions_and_ignore) {
  nc_tensor t = NCT_T(NC_I32, "3", 1, 0, -1);
  nc_tensor none = ce("reduction=none", &t), sum = ce("reduction=sum", &t), mean = ce(NULL, &t);
  NCT_SHAPE(&none, NC_F32, "3");
  NCT_EXPECT(&none, 1e-6, 0.2876820724517809, LN4, 0);
  NCT_SHAPE(&sum, NC_F32, "");
  NCT_EXPECT(&sum, 1e-6, 1.6739764335716716);
  NCT_EXPECT(&mean, 1e-6, 0.8369882167858358);
  nc_tensor t0 = NCT_T(NC_I64, "3", 1, 0, 1);
  nc_tensor m0 = ce("ignore_index=0", &t0), n0 = ce("ignore_index=0 reduction=none", &t0);
  NCT_EXPECT(&m0, 1e-6, 0.2876820724517809);
  NCT_EXPECT(&n0, 1e-6, 0.2876820724517809, 0, 0.2876820724517809);
  nc_tensor all = NCT_T(NC_I32, "3", -1, -1, -1);
  nc_tensor ma = ce(NULL, &all), sa = ce("reduction=sum", &all);
  NCT_EXPECT(&ma, 0, 0);  // documented: 0, not NaN
  NCT_EXPECT(&sa, 0, 0);
}

Test(interp_nn, cross_entropy_bf16_logits) {
  nc_tensor lg = NCT_T(NC_BF16, "2,2", 0, 1, 0, 1), t = NCT_T(NC_I32, "2", 1, 0);
  nc_tensor l = NCT_APPLY(NC_OP_CROSS_ENTROPY, "reduction=none", &lg, &t);
  NCT_SHAPE(&l, NC_F32, "2");
  NCT_EXPECT(&l, 1e-6, 0.3132616875182228, 1.3132616875182228);
}

Test(interp_nn, cross_entropy_grad_values) {
  nc_tensor lg = NCT_T(NC_F32, "3,2", 0, LN3, 0, LN3, 0, LN3), t = NCT_T(NC_I32, "3", 1, 0, -1);
  nc_tensor dn = NCT_T(NC_F32, "3", 1, 2, 3), d2 = NCT_T(NC_F32, "", 2), d1 = NCT_T(NC_F32, "", 1);
  nc_tensor gn = NCT_APPLY(NC_OP_CROSS_ENTROPY_GRAD, "reduction=none", &lg, &t, &dn);
  nc_tensor gs = NCT_APPLY(NC_OP_CROSS_ENTROPY_GRAD, "reduction=sum", &lg, &t, &d2);
  nc_tensor gm = NCT_APPLY(NC_OP_CROSS_ENTROPY_GRAD, "reduction=mean", &lg, &t, &d1);
  NCT_EXPECT(&gn, 1e-6, 0.25, -0.25, -1.5, 1.5, 0, 0);
  NCT_EXPECT(&gs, 1e-6, 0.5, -0.5, -1.5, 1.5, 0, 0);
  NCT_EXPECT(&gm, 1e-6, 0.125, -0.125, -0.375, 0.375, 0, 0);
  nc_tensor all = NCT_T(NC_I32, "3", -1, -1, -1);
  nc_tensor ga = NCT_APPLY(NC_OP_CROSS_ENTROPY_GRAD, NULL, &lg, &all, &d1);
  NCT_EXPECT(&ga, 0, 0, 0, 0, 0, 0, 0);
}

// ---- finite differences ---------------------------------------------------------------------
// L = the f32 scalar node `loss`; checks d L / d feeds[k] against `analytic`
// by central differences (h measured after rounding the perturbed input).
static void fd_check(const nc_graph *g, nc_id loss, nc_feed *feeds, int nf, int k, const nc_tensor *analytic,
                     double eps, double atol, double rtol, const char *what) {
  nc_tensor *x = (nc_tensor *)feeds[k].value;
  int bad = 0;
  for (int64_t i = 0; i < nc_tensor_numel(x); i++) {
    double v = nct_get(x, i);
    nct_set(x, i, v + eps);
    double xp = nct_get(x, i);
    nc_tensor lp, lm;
    cr_assert_eq(nct_eval_fv(g, loss, &lp, feeds, nf), NC_OK);
    nct_set(x, i, v - eps);
    double xm = nct_get(x, i);
    cr_assert_eq(nct_eval_fv(g, loss, &lm, feeds, nf), NC_OK);
    nct_set(x, i, v);
    double fd = (nct_get(&lp, 0) - nct_get(&lm, 0)) / (xp - xm), an = nct_get(analytic, i);
    nc_tensor_free(&lp);
    nc_tensor_free(&lm);
    if (fabs(fd - an) > atol + rtol * fabs(an) && bad++ < 5)
      cr_expect(0, "%s: element %lld: finite difference %.7g, analytic %.7g", what, (long long)i, fd, an);
  }
}

// sum(out * w) over all axes (out rank >= 1)
static nc_id dot_loss(nc_graph *g, nc_id out, nc_id w) {
  nc_id m = nct_op(g, NC_OP_MUL, NULL, 2, out, w);
  char axes[32] = "axes=";
  int r = nc_type_of(g, m).rank;
  for (int i = 0; i < r; i++) snprintf(axes + strlen(axes), sizeof axes - strlen(axes), i ? ",%d" : "%d", i);
  return nct_op(g, NC_OP_REDUCE_SUM, axes, 1, m);
}

Test(interp_nn, rms_norm_grad_vs_finite_differences) {
  uint64_t rng = 11;
  nc_graph *g = nct_graph();
  nc_id x = nct_in(g, "x", NC_F32, "3,5"), w = nct_in(g, "w", NC_F32, "3,5");
  nc_id y = nct_op(g, NC_OP_RMS_NORM, "eps=1e-5", 1, x);
  nc_id loss = dot_loss(g, y, w);
  nc_id dx = nct_op(g, NC_OP_RMS_NORM_GRAD, "eps=1e-5", 2, x, w);
  nc_tensor xv = nct_rand(NC_F32, "3,5", &rng, -2, 2), wv = nct_rand(NC_F32, "3,5", &rng, -1, 1);
  nc_feed f[2] = {{"x", &xv}, {"w", &wv}};
  nc_tensor an = nct_eval(g, dx, "x", &xv, "w", &wv, NULL);
  fd_check(g, loss, f, 2, 0, &an, 1e-3, 1e-3, 1e-2, "rms_norm");
}

static void attn_fd_case(const char *attrs, int bsz, int tq, int tk, int hq, int hkv, int d, int dv, int kvlen,
                         uint64_t seed) {
  nc_graph *g = nct_graph();
  char s[4][64];
  snprintf(s[0], 64, "%d,%d,%d,%d", bsz, tq, hq, d);
  snprintf(s[1], 64, "%d,%d,%d,%d", bsz, tk, hkv, d);
  snprintf(s[2], 64, "%d,%d,%d,%d", bsz, tk, hkv, dv);
  snprintf(s[3], 64, "%d,%d,%d,%d", bsz, tq, hq, dv);
  nc_id q = nct_in(g, "q", NC_F32, s[0]), k = nct_in(g, "k", NC_F32, s[1]), v = nct_in(g, "v", NC_F32, s[2]);
  nc_id w = nct_in(g, "w", NC_F32, s[3]), kl = nct_in(g, "kvlen", NC_I32, "");
  nc_id o = kvlen ? nct_op(g, NC_OP_ATTENTION, attrs, 4, q, k, v, kl) : nct_op(g, NC_OP_ATTENTION, attrs, 3, q, k, v);
  nc_id loss = dot_loss(g, o, w);
  uint64_t rng = seed;
  nc_tensor qv = nct_rand(NC_F32, s[0], &rng, -1, 1), kv = nct_rand(NC_F32, s[1], &rng, -1, 1);
  nc_tensor vv = nct_rand(NC_F32, s[2], &rng, -1, 1), wv = nct_rand(NC_F32, s[3], &rng, -1, 1);
  nc_tensor klv = nct_scalar_i32(kvlen);
  nc_feed f[5] = {{"q", &qv}, {"k", &kv}, {"v", &vv}, {"w", &wv}, {"kvlen", &klv}};
  int nf = kvlen ? 5 : 4;
  static const char *const wrt[3] = {"q", "k", "v"};
  for (int which = 0; which < 3; which++) {
    char ga[96];
    snprintf(ga, sizeof ga, "wrt=%s %s", wrt[which], attrs);
    nc_id gid = kvlen ? nct_op(g, NC_OP_ATTENTION_GRAD, ga, 5, q, k, v, w, kl)
                      : nct_op(g, NC_OP_ATTENTION_GRAD, ga, 4, q, k, v, w);
    nc_tensor an;
    cr_assert_eq(nct_eval_fv(g, gid, &an, f, nf), NC_OK);
    char what[160];
    snprintf(what, sizeof what, "attention d%s [%s, kvlen %d]", wrt[which], attrs, kvlen);
    fd_check(g, loss, f, nf, which, &an, 1e-3, 1e-3, 1e-2, what);
    nc_tensor_free(&an);
  }
}

Test(interp_nn, attention_grad_vs_finite_differences) {
  attn_fd_case("causal=1 scale=0.5", 1, 3, 3, 2, 2, 3, 2, 0, 1);
  attn_fd_case("causal=0 scale=0.7", 2, 2, 3, 2, 1, 2, 3, 0, 2);      // GQA, cross lengths
  attn_fd_case("causal=1 window=2 scale=0.6", 1, 4, 4, 4, 2, 2, 2, 0, 3);
  attn_fd_case("causal=1 scale=0.5", 1, 2, 5, 2, 1, 3, 2, 4, 4);      // decode with kvlen < Tk
  attn_fd_case("causal=0 window=2 scale=1", 1, 2, 4, 3, 3, 2, 2, 3, 5);
}

static void ce_fd_case(const char *red, uint64_t seed) {
  nc_graph *g = nct_graph();
  bool none = !strcmp(red, "none");
  char attrs[64];
  snprintf(attrs, sizeof attrs, "reduction=%s ignore_index=-100", red);
  nc_id lg = nct_in(g, "logits", NC_F32, "2,3,5"), tg = nct_in(g, "targets", NC_I64, "2,3");
  nc_id w = nct_in(g, "w", NC_F32, none ? "2,3" : "");
  nc_id l = nct_op(g, NC_OP_CROSS_ENTROPY, attrs, 2, lg, tg);
  nc_id loss = none ? dot_loss(g, l, w) : nct_op(g, NC_OP_MUL, NULL, 2, l, w);
  nc_id grad = nct_op(g, NC_OP_CROSS_ENTROPY_GRAD, attrs, 3, lg, tg, w);
  uint64_t rng = seed;
  nc_tensor lv = nct_rand(NC_F32, "2,3,5", &rng, -3, 3);
  nc_tensor tv = NCT_T(NC_I64, "2,3", 4, -100, 0, 2, 1, -100);
  nc_tensor wv = nct_rand(NC_F32, none ? "2,3" : "", &rng, 0.5, 2);
  nc_feed f[3] = {{"logits", &lv}, {"targets", &tv}, {"w", &wv}};
  nc_tensor an = nct_eval(g, grad, "logits", &lv, "targets", &tv, "w", &wv, NULL);
  fd_check(g, loss, f, 3, 0, &an, 1e-3, 1e-3, 1e-2, red);
}

Test(interp_nn, cross_entropy_grad_vs_finite_differences) {
  ce_fd_case("none", 21);
  ce_fd_case("sum", 22);
  ce_fd_case("mean", 23);
}

Test(interp_nn, rope_inverse_is_gradient) {
  uint64_t rng = 31;
  nc_graph *g = nct_graph();
  nc_id x = nct_in(g, "x", NC_F32, "2,3,2,4"), w = nct_in(g, "w", NC_F32, "2,3,2,4");
  nc_id p = nct_in(g, "pos0", NC_I32, "");
  nc_id y = nct_op(g, NC_OP_ROPE, "base=50", 2, x, p);
  nc_id loss = dot_loss(g, y, w);
  nc_id gx = nct_op(g, NC_OP_ROPE, "base=50 inverse=1", 2, w, p);
  nc_tensor xv = nct_rand(NC_F32, "2,3,2,4", &rng, -1, 1), wv = nct_rand(NC_F32, "2,3,2,4", &rng, -1, 1);
  nc_tensor pv = nct_scalar_i32(5);
  nc_feed f[3] = {{"x", &xv}, {"w", &wv}, {"pos0", &pv}};
  nc_tensor an = nct_eval(g, gx, "w", &wv, "pos0", &pv, NULL);
  fd_check(g, loss, f, 3, 0, &an, 1e-2, 1e-3, 1e-2, "rope");
}
