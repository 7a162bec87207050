// Reverse-mode autodiff (passes/autodiff.c) against central finite
// differences computed by the reference interpreter, for every op flagged
// DIFF in ir/ops.def and the attribute variants the model uses.
//
// Each case builds one small graph: the tensors to differentiate are `param`
// nodes filled from a PRNG seeded by the case's name; everything that is not
// differentiable (ids, targets, conditions, kvlen/pos0 scalars) is an `input`.
// The checked scalar is
//     loss = reduce_sum(y * R)
// where y is the node under test and R a random f32 input of y's shape, so
// every output element (and each with its own weight) reaches the loss: a
// gradient rule that, say, swaps two output positions or drops a broadcast
// sum is caught even when sum(y) alone would not see it.
//
// Finite differences: for every element x of every param,
//     fd = (L(x + h) - L(x - h)) / (x+h - (x-h))
// where the denominator is the step actually taken after rounding x +- h to
// f32 (so the representation of the step adds no error).
//
// Step and tolerance (fp32 everywhere; the interpreter rounds each node to
// f32 once and accumulates reductions in double):
//  - rounding: perturbing one element changes only the terms that depend on
//    it; the rest of L is bit-identical in both evaluations, so the noise is
//    roughly the final rounding of L and of the affected terms,
//    ~ 2^-24 * |L| ~ 1e-6 for |L| ~ 10. Divided by 2h = 2e-2 that is ~5e-5.
//  - truncation: h^2/6 * |L'''|. With inputs kept O(1) and away from domain
//    edges (log/sqrt/rsqrt/powc get x in [0.5, 2], where |f'''| <= ~20) this
//    is <= ~4e-4.
//  So the FD estimate is good to ~5e-4 absolute for O(1) gradients (and
//  relative for larger ones). We accept |grad - fd| <= 5e-3 * max(1, |fd|).
//  Measured worst case over all cases (NC_AD_VERBOSE=1 prints it per case):
//  3.2e-4 (the model-like graph; div 2.6e-4, rsqrt 1.9e-4, most ops < 2e-5),
//  so >= 15x margin, while a real rule error (wrong sign, missing factor,
//  transposed or misplaced element, missing accumulation, wrong mask) is
//  O(|grad|) and far above it: 30 hand-made mutations of passes/autodiff.c
//  (one per rule or attribute) each fail at least one case here.
// Kinks are avoided so FD sees a smooth function: |x| >= 0.1 for abs/relu,
// |a - b| >= 0.1 for max/min, maxima separated by >= 0.1 for reduce_max
// (h = 1e-2 never crosses them). Each param must also see a gradient
// (max |fd| > 1e-3), so a case cannot pass vacuously.
//
// The case table also drives a coverage test: every DIFF op must be the op
// under test of at least one case, so a new DIFF op without a case fails.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/build.h"
#include "passes/autodiff.h"
#include "passes/pass.h"
#include "tests/support/interp_util.h"

TestSuite(autodiff, .fini = nct_cleanup);

#define AD_H 1e-2
#define AD_TOL 5e-3
#define AD_MAXT 16  // params + inputs of one case

// ---- the per-case context -------------------------------------------------------------
typedef struct {
  nc_graph *g;
  uint64_t rng;
  int np, nf;               // params are feeds[0..np), inputs feeds[np..nf)
  nc_id pid[AD_MAXT];       // param node ids
  nc_tensor val[AD_MAXT];   // feed values (params are perturbed in place)
  char names[AD_MAXT][8];
  nc_feed feeds[AD_MAXT];
  nc_id y;                  // the node under test (set by the builder)
  double h;                 // FD step (default AD_H)
  bool allow_zero;          // the gradient may legitimately be zero everywhere
  bool grid_r;              // R on the 1/64 grid (exact in f16/bf16, for casts)
} adc;

typedef void (*ad_build_fn)(adc *c);

static uint64_t ad_seed(const char *name) {  // FNV-1a: a different, fixed seed per case
  uint64_t h = 1469598103934665603ull;
  for (const char *s = name; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static void ad_init(adc *c, const char *name) {
  memset(c, 0, sizeof *c);
  c->g = nct_graph();
  c->rng = ad_seed(name);
  c->y = NC_NONE;
  c->h = AD_H;
}

static nc_id ad_feed(adc *c, nc_op op, const char *dims, nc_tensor t) {
  cr_assert(c->nf < AD_MAXT, "too many leaves");
  cr_assert(op == NC_OP_INPUT || c->nf == c->np, "declare params before inputs");
  int k = c->nf++;
  snprintf(c->names[k], sizeof c->names[k], "%s%d", op == NC_OP_PARAM ? "p" : "in", k);
  nc_id id = op == NC_OP_PARAM ? nct_param(c->g, c->names[k], t.dtype, dims) : nct_in(c->g, c->names[k], t.dtype, dims);
  c->val[k] = t;
  c->feeds[k] = (nc_feed){c->names[k], &c->val[k]};
  if (op == NC_OP_PARAM) c->pid[c->np++] = id;
  return id;
}

// A param of type f32[dims] (dims may use symbols, e.g. "B,3") with the given value.
static nc_id ad_param_t(adc *c, const char *dims, nc_tensor t) { return ad_feed(c, NC_OP_PARAM, dims, t); }
// A param uniform in [lo, hi).
static nc_id ad_param(adc *c, const char *dims, double lo, double hi) {
  return ad_param_t(c, dims, nct_rand(NC_F32, dims, &c->rng, lo, hi));
}
// A param with |x| uniform in [lo, hi) and a random sign: away from a kink at 0.
static nc_id ad_param_away(adc *c, const char *dims, double lo, double hi) {
  nc_tensor t = nct_rand(NC_F32, dims, &c->rng, lo, hi);
  for (int64_t i = 0; i < nc_tensor_numel(&t); i++)
    if (nct_uniform(&c->rng) < 0.5) nct_set(&t, i, -nct_get(&t, i));
  return ad_param_t(c, dims, t);
}
static nc_id ad_input(adc *c, const char *dims, nc_tensor t) { return ad_feed(c, NC_OP_INPUT, dims, t); }
static nc_id ad_pos(adc *c, int32_t v) { return ad_input(c, "", nct_scalar_i32(v)); }

static double ad_loss_value(adc *c, nc_id loss) {
  nc_tensor out;
  nc_status st = nc_interp_eval(c->g, c->feeds, c->nf, &loss, 1, &out);
  if (st) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nc_status_msg(st));
    nc_status_free(st);
    cr_assert_fail("evaluating the loss failed: %s", msg);
  }
  double v = nct_get(&out, 0);
  nc_tensor_free(&out);
  return v;
}

// Compares grads (values of d loss / d param k, as evaluated) with central
// differences of loss for every param element. Returns the worst
// |grad - fd| / max(1, |fd|).
static double ad_compare_fd(adc *c, const char *what, nc_id loss, const nc_tensor *grads) {
  double worst = 0;
  for (int k = 0; k < c->np; k++) {
    nc_tensor *p = &c->val[k];
    const nc_tensor *gk = &grads[k];
    int64_t n = nc_tensor_numel(p);
    cr_assert(gk->rank == p->rank && nc_tensor_numel(gk) == n && gk->dtype == p->dtype,
              "%s: gradient of %s has the wrong type", what, c->names[k]);
    double maxfd = 0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
      double x = nct_get(p, i);
      nct_set(p, i, x + c->h);
      double xp = nct_get(p, i), lp = ad_loss_value(c, loss);
      nct_set(p, i, x - c->h);
      double xm = nct_get(p, i), lm = ad_loss_value(c, loss);
      nct_set(p, i, x);
      double fd = (lp - lm) / (xp - xm), got = nct_get(gk, i);
      double err = fabs(got - fd) / fmax(1.0, fabs(fd));
      if (!(err <= AD_TOL) && bad++ < 5)  // also catches NaN
        cr_expect_fail("%s: d loss / d %s[%lld]: autodiff %.7g, finite differences %.7g", what, c->names[k],
                       (long long)i, got, fd);
      if (err > worst || isnan(err)) worst = isnan(err) ? INFINITY : err;
      maxfd = fmax(maxfd, fabs(fd));
    }
    cr_expect(bad == 0, "%s: %d elements of d loss / d %s differ", what, bad, c->names[k]);
    if (!c->allow_zero)
      cr_expect(maxfd > 1e-3, "%s: the loss does not depend on %s: the case checks nothing", what, c->names[k]);
  }
  return worst;
}

// The full check of one case: loss = sum(y * R), autodiff, verify, evaluate
// the gradients, compare with finite differences.
static void ad_check(adc *c, const char *name) {
  nc_graph *g = c->g;
  cr_assert(c->y != NC_NONE && c->np > 0, "%s: the builder set no output or no params", name);
  nc_type yt = nc_type_of(g, c->y);
  cr_assert(yt.dtype == NC_F32, "%s: the op under test must produce f32", name);
  nc_tensor yv;  // y's concrete shape (it may have symbolic dims)
  nc_status st = nc_interp_eval(g, c->feeds, c->nf, &c->y, 1, &yv);
  cr_assert_null(st, "%s: evaluating y failed: %s", name, nc_status_msg(st));
  nc_tensor r = nct_rand_shape(NC_F32, yv.rank, yv.shape, &c->rng, -1, 1);
  nc_tensor_free(&yv);
  for (int64_t i = 0; c->grid_r && i < nc_tensor_numel(&r); i++) nct_set(&r, i, floor(nct_get(&r, i) * 64) / 64);
  cr_assert(c->nf < AD_MAXT);
  int k = c->nf++;
  snprintf(c->names[k], sizeof c->names[k], "R");
  c->val[k] = r;
  c->feeds[k] = (nc_feed){c->names[k], &c->val[k]};
  nc_id rn = nc_leaf(g, NC_OP_INPUT, "R", yt);
  nc_id prod = nc_op2(g, NC_OP_MUL, c->y, rn);
  nc_id loss = yt.rank ? nc_b_reduce(g, NC_OP_REDUCE_SUM, prod, (INT64_C(1) << yt.rank) - 1, false) : prod;
  cr_assert(loss != NC_NONE, "%s: building the loss: %s", name, nc_status_msg(nc_graph_error(g)));

  nc_id grads[AD_MAXT];
  st = nc_autodiff(g, loss, NC_NONE, c->pid, c->np, grads);
  cr_assert_null(st, "%s: autodiff failed: %s", name, nc_status_msg(st));
  st = nc_graph_verify(g);
  cr_assert_null(st, "%s: the graph with gradients does not verify: %s", name, nc_status_msg(st));
  for (int i = 0; i < c->np; i++) {
    nc_type pt = nc_type_of(g, c->pid[i]), gt = nc_type_of(g, grads[i]);
    cr_assert(nc_type_eq(&pt, &gt), "%s: the gradient of %s does not have the param's type", name, c->names[i]);
  }
  nc_tensor gv[AD_MAXT];
  st = nc_interp_eval(g, c->feeds, c->nf, grads, c->np, gv);
  cr_assert_null(st, "%s: evaluating the gradients failed: %s", name, nc_status_msg(st));
  double worst = ad_compare_fd(c, name, loss, gv);
  for (int i = 0; i < c->np; i++) nc_tensor_free(&gv[i]);
  if (getenv("NC_AD_VERBOSE")) fprintf(stderr, "autodiff %-28s worst |ad-fd|/max(1,|fd|) = %.2e\n", name, worst);
}

// ---- the case table -------------------------------------------------------------------
// AD_CASE(name) { ...build, set c->y... } defines the builder, registers it
// (a constructor runs in every test process, so the coverage test sees all
// of them) and defines the Criterion test that checks it.
#define AD_MAXCASES 256
static struct {
  const char *name;
  ad_build_fn build;
} ad_cases[AD_MAXCASES];
static int ad_ncases;

static void ad_register(const char *name, ad_build_fn build) {
  if (ad_ncases < AD_MAXCASES) ad_cases[ad_ncases].name = name, ad_cases[ad_ncases].build = build;
  ad_ncases++;  // the coverage test fails if this overflows the table
}

#define AD_CASE(name)                                                                    \
  static void ad_build_##name(adc *c);                                                   \
  __attribute__((constructor)) static void ad_register_##name(void) {                    \
    ad_register(#name, ad_build_##name);                                                 \
  }                                                                                      \
  Test(autodiff, name) {                                                                 \
    adc c;                                                                               \
    ad_init(&c, #name);                                                                  \
    ad_build_##name(&c);                                                                 \
    ad_check(&c, #name);                                                                 \
  }                                                                                      \
  static void ad_build_##name(adc *c)

#define OP(ID, attrs, ...) nct_op(c->g, NC_OP_##ID, attrs, NCT_NARGS_ID(__VA_ARGS__), __VA_ARGS__)
#define NCT_NARGS_ID(...) ((int)(sizeof((nc_id[]){__VA_ARGS__}) / sizeof(nc_id)))
#define OPD(ID, dt, dims, attrs, ...) \
  nct_opd(c->g, NC_OP_##ID, nct_type(c->g, dt, dims), attrs, NCT_NARGS_ID(__VA_ARGS__), __VA_ARGS__)

// ---- value generators that keep away from kinks ---------------------------------------------
// Pairs (a, b) with |a - b| in [0.1, 1): max/min never switch branch under +-h.
static void ad_separated(adc *c, const char *dims, nc_id *a, nc_id *b) {
  nc_tensor tb = nct_rand(NC_F32, dims, &c->rng, -1, 1), ta = nct_rand(NC_F32, dims, &c->rng, 0.1, 1);
  for (int64_t i = 0; i < nc_tensor_numel(&ta); i++)
    nct_set(&ta, i, nct_get(&tb, i) + (nct_uniform(&c->rng) < 0.5 ? -1 : 1) * nct_get(&ta, i));
  *a = ad_param_t(c, dims, ta);
  *b = ad_param_t(c, dims, tb);
}

// Distinct values 0.15 apart, shuffled: every reduce_max has a unique
// maximum that +-h cannot overtake.
static nc_id ad_param_distinct(adc *c, const char *dims) {
  nc_tensor t = nct_tensor(NC_F32, dims, NULL);
  int64_t n = nc_tensor_numel(&t);
  for (int64_t i = 0; i < n; i++) nct_set(&t, i, 0.15 * (double)(i - n / 2));
  for (int64_t i = n - 1; i > 0; i--) {  // Fisher-Yates
    int64_t j = nct_randint(&c->rng, 0, i + 1);
    double a = nct_get(&t, i), b = nct_get(&t, j);
    nct_set(&t, i, b), nct_set(&t, j, a);
  }
  return ad_param_t(c, dims, t);
}

// Multiples of 1/64 in [-1, 1]: exact in f16 and bf16, and so are x +- 1/64.
static nc_id ad_param_grid(adc *c, const char *dims) {
  nc_tensor t = nct_rand(NC_F32, dims, &c->rng, -1, 1);
  for (int64_t i = 0; i < nc_tensor_numel(&t); i++) nct_set(&t, i, floor(nct_get(&t, i) * 64) / 64);
  return ad_param_t(c, dims, t);
}

static nc_id ad_ids(adc *c, nc_dtype dt, const char *dims, const double *vals) {
  return ad_input(c, dims, nct_tensor(dt, dims, vals));
}

// ---- elementwise unary -------------------------------------------------------------------------
AD_CASE(neg) { c->y = OP(NEG, NULL, ad_param(c, "3,4", -1, 1)); }
AD_CASE(abs) { c->y = OP(ABS, NULL, ad_param_away(c, "3,4", 0.1, 1)); }
AD_CASE(relu) { c->y = OP(RELU, NULL, ad_param_away(c, "3,4", 0.1, 1)); }
AD_CASE(square) { c->y = OP(SQUARE, NULL, ad_param(c, "3,4", -1, 1)); }
AD_CASE(tanh) { c->y = OP(TANH, NULL, ad_param(c, "3,4", -2, 2)); }
AD_CASE(sin) { c->y = OP(SIN, NULL, ad_param(c, "3,4", -3, 3)); }
AD_CASE(cos) { c->y = OP(COS, NULL, ad_param(c, "3,4", -3, 3)); }
AD_CASE(exp) { c->y = OP(EXP, NULL, ad_param(c, "3,4", -1, 1)); }
AD_CASE(log) { c->y = OP(LOG, NULL, ad_param(c, "3,4", 0.5, 2)); }
AD_CASE(sqrt) { c->y = OP(SQRT, NULL, ad_param(c, "3,4", 0.5, 2)); }
AD_CASE(rsqrt) { c->y = OP(RSQRT, NULL, ad_param(c, "3,4", 0.5, 2)); }
AD_CASE(sigmoid) { c->y = OP(SIGMOID, NULL, ad_param(c, "3,4", -3, 3)); }
AD_CASE(powc_2_5) { c->y = OP(POWC, "p=2.5", ad_param(c, "3,4", 0.5, 2)); }
AD_CASE(powc_minus_0_5) { c->y = OP(POWC, "p=-0.5", ad_param(c, "3,4", 0.5, 2)); }
AD_CASE(powc_3_signed) { c->y = OP(POWC, "p=3", ad_param(c, "3,4", -1, 1)); }  // integral p: negative x is fine

// cast round trips are lossless on the 1/64 grid with h = 1/64, so FD is exact
// there; the op under test is the final cast back to f32 (and the inner one).
// The adjoint flows back through the narrow dtype too (dy is cast to it), so
// R is put on the grid as well: then both sides are exact, not merely close.
AD_CASE(cast_f16_roundtrip) {
  c->h = 1.0 / 64;
  c->grid_r = true;
  nc_id x16 = OPD(CAST, NC_F16, "3,4", NULL, ad_param_grid(c, "3,4"));
  c->y = OPD(CAST, NC_F32, "3,4", NULL, x16);
}
AD_CASE(cast_bf16_roundtrip) {
  c->h = 1.0 / 64;
  c->grid_r = true;
  nc_id xb = OPD(CAST, NC_BF16, "2,5", NULL, ad_param_grid(c, "2,5"));
  c->y = OPD(CAST, NC_F32, "2,5", NULL, OP(NEG, NULL, xb));  // with a bf16 op in between
}

// ---- elementwise binary / ternary ------------------------------------------------------------
AD_CASE(add) { c->y = OP(ADD, NULL, ad_param(c, "3,4", -1, 1), ad_param(c, "3,4", -1, 1)); }
AD_CASE(sub) { c->y = OP(SUB, NULL, ad_param(c, "3,4", -1, 1), ad_param(c, "3,4", -1, 1)); }
AD_CASE(mul) { c->y = OP(MUL, NULL, ad_param(c, "3,4", -1, 1), ad_param(c, "3,4", -1, 1)); }
AD_CASE(div) {  // both inputs; the divisor keeps |b| >= 0.5
  nc_id a = ad_param(c, "3,4", -1, 1), b = ad_param_away(c, "3,4", 0.5, 2);
  c->y = OP(DIV, NULL, a, b);
}
AD_CASE(max) {
  nc_id a, b;
  ad_separated(c, "3,4", &a, &b);
  c->y = OP(MAX, NULL, a, b);
}
AD_CASE(min) {
  nc_id a, b;
  ad_separated(c, "3,4", &a, &b);
  c->y = OP(MIN, NULL, a, b);
}
// One param reaching the loss along several paths: adjoints must add up.
AD_CASE(mul_same_param_twice) {
  nc_id x = ad_param(c, "3,4", -1, 1);
  c->y = OP(MUL, NULL, x, x);
}
AD_CASE(add_fanout) {
  nc_id x = ad_param(c, "2,3", -1, 1), w = ad_param(c, "2,3", -1, 1);
  c->y = OP(ADD, NULL, OP(MUL, NULL, x, w), OP(TANH, NULL, x));
}
AD_CASE(where) {  // gradient to both branches (the condition is an input)
  nc_id a = ad_param(c, "3,4", -1, 1), b = ad_param(c, "3,4", -1, 1);
  nc_id cond = ad_ids(c, NC_BOOL, "3,4", (const double[]){1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0});
  c->y = OP(WHERE, NULL, cond, a, b);
}
AD_CASE(where_same_param_both_branches) {
  nc_id x = ad_param(c, "2,3", -1, 1);
  nc_id cond = ad_ids(c, NC_BOOL, "2,3", (const double[]){1, 0, 1, 0, 0, 1});
  c->y = OP(WHERE, NULL, cond, x, OP(SQUARE, NULL, x));
}

// ---- reductions ----------------------------------------------------------------------------------
AD_CASE(reduce_sum_axis0) { c->y = OP(REDUCE_SUM, "axes=0", ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(reduce_sum_axis1_keepdim) { c->y = OP(REDUCE_SUM, "axes=1 keepdim=1", ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(reduce_sum_axes02) { c->y = OP(REDUCE_SUM, "axes=0,2", ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(reduce_sum_all_to_scalar) { c->y = OP(REDUCE_SUM, "axes=0,1,2", ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(reduce_sum_last_keepdim) { c->y = OP(REDUCE_SUM, "axes=2 keepdim=1", ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(reduce_mean_axis1) { c->y = OP(REDUCE_MEAN, "axes=1", ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(reduce_mean_axes02_keepdim) { c->y = OP(REDUCE_MEAN, "axes=0,2 keepdim=1", ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(reduce_mean_all) { c->y = OP(REDUCE_MEAN, "axes=0,1 keepdim=1", ad_param(c, "3,4", -1, 1)); }
// Mean over a symbolic axis: the rule divides by a count computed at run time.
AD_CASE(reduce_mean_symbolic_axis) {
  c->y = OP(REDUCE_MEAN, "axes=0", ad_param_t(c, "B,3", nct_rand(NC_F32, "4,3", &c->rng, -1, 1)));
}
AD_CASE(reduce_mean_symbolic_keepdim) {
  nc_id x = ad_param_t(c, "2,T,3", nct_rand(NC_F32, "2,5,3", &c->rng, -1, 1));
  c->y = OP(REDUCE_MEAN, "axes=1,2 keepdim=1", x);
}
AD_CASE(reduce_max_axis1) { c->y = OP(REDUCE_MAX, "axes=1", ad_param_distinct(c, "2,3,4")); }
AD_CASE(reduce_max_axes02_keepdim) { c->y = OP(REDUCE_MAX, "axes=0,2 keepdim=1", ad_param_distinct(c, "2,3,4")); }
AD_CASE(reduce_max_last) { c->y = OP(REDUCE_MAX, "axes=2", ad_param_distinct(c, "2,3,4")); }
AD_CASE(reduce_max_all) { c->y = OP(REDUCE_MAX, "axes=0,1", ad_param_distinct(c, "3,4")); }

// ---- normalization, softmax, rotary ------------------------------------------------------------
AD_CASE(rms_norm) { c->y = OP(RMS_NORM, "eps=1e-5", ad_param(c, "3,4", -1, 1)); }
AD_CASE(rms_norm_rank3_f32_eps) { c->y = OP(RMS_NORM, "eps=1.1920928955078125e-07", ad_param(c, "2,3,5", -1, 1)); }
AD_CASE(rms_norm_large_eps) { c->y = OP(RMS_NORM, "eps=0.5", ad_param(c, "2,4", -1, 1)); }
AD_CASE(softmax) { c->y = OP(SOFTMAX, NULL, ad_param(c, "3,4", -2, 2)); }
AD_CASE(softmax_rank3) { c->y = OP(SOFTMAX, NULL, ad_param(c, "2,2,5", -2, 2)); }
AD_CASE(log_softmax) { c->y = OP(LOG_SOFTMAX, NULL, ad_param(c, "3,4", -2, 2)); }
AD_CASE(log_softmax_rank3) { c->y = OP(LOG_SOFTMAX, NULL, ad_param(c, "2,2,5", -2, 2)); }
AD_CASE(rope) { c->y = OP(ROPE, NULL, ad_param(c, "1,3,2,4", -1, 1)); }
AD_CASE(rope_base100_batch2) { c->y = OP(ROPE, "base=100", ad_param(c, "2,3,2,6", -1, 1)); }
AD_CASE(rope_pos0) {
  nc_id x = ad_param(c, "1,3,2,4", -1, 1);
  c->y = OP(ROPE, NULL, x, ad_pos(c, 5));
}
AD_CASE(rope_inverse) { c->y = OP(ROPE, "inverse=1 base=100", ad_param(c, "1,3,2,4", -1, 1)); }
AD_CASE(rope_inverse_pos0) {
  nc_id x = ad_param(c, "2,2,1,4", -1, 1);
  c->y = OP(ROPE, "inverse=1", x, ad_pos(c, 3));
}

// ---- contractions ----------------------------------------------------------------------------------
AD_CASE(matmul) { c->y = OP(MATMUL, NULL, ad_param(c, "3,4", -1, 1), ad_param(c, "4,5", -1, 1)); }
AD_CASE(matmul_ta) { c->y = OP(MATMUL, "ta=1", ad_param(c, "4,3", -1, 1), ad_param(c, "4,5", -1, 1)); }
AD_CASE(matmul_tb) { c->y = OP(MATMUL, "tb=1", ad_param(c, "3,4", -1, 1), ad_param(c, "5,4", -1, 1)); }
AD_CASE(matmul_ta_tb) { c->y = OP(MATMUL, "ta=1 tb=1", ad_param(c, "4,3", -1, 1), ad_param(c, "5,4", -1, 1)); }
AD_CASE(matmul_rank3) { c->y = OP(MATMUL, NULL, ad_param(c, "2,3,4", -1, 1), ad_param(c, "4,5", -1, 1)); }
AD_CASE(matmul_rank3_tb) { c->y = OP(MATMUL, "tb=1", ad_param(c, "2,3,4", -1, 1), ad_param(c, "5,4", -1, 1)); }
AD_CASE(matmul_rank4) { c->y = OP(MATMUL, NULL, ad_param(c, "2,2,3,4", -1, 1), ad_param(c, "4,2", -1, 1)); }
AD_CASE(bmm) { c->y = OP(BMM, NULL, ad_param(c, "2,3,4", -1, 1), ad_param(c, "2,4,5", -1, 1)); }
AD_CASE(bmm_ta) { c->y = OP(BMM, "ta=1", ad_param(c, "2,4,3", -1, 1), ad_param(c, "2,4,5", -1, 1)); }
AD_CASE(bmm_tb) { c->y = OP(BMM, "tb=1", ad_param(c, "2,3,4", -1, 1), ad_param(c, "2,5,4", -1, 1)); }
AD_CASE(bmm_ta_tb) { c->y = OP(BMM, "ta=1 tb=1", ad_param(c, "2,4,3", -1, 1), ad_param(c, "2,5,4", -1, 1)); }
AD_CASE(bmm_rank4) { c->y = OP(BMM, "tb=1", ad_param(c, "2,2,3,4", -1, 1), ad_param(c, "2,2,2,4", -1, 1)); }

// attention(q, k, v [, kvlen]); q, k and v are all params. scale = 1/sqrt(D).
static void ad_attention(adc *c, const char *qd, const char *kd, const char *vd, int kvlen, const char *attrs) {
  nc_id q = ad_param(c, qd, -1, 1), k = ad_param(c, kd, -1, 1), v = ad_param(c, vd, -1, 1);
  c->y = kvlen ? OP(ATTENTION, attrs, q, k, v, ad_pos(c, kvlen)) : OP(ATTENTION, attrs, q, k, v);
}
AD_CASE(attention_causal) { ad_attention(c, "2,3,2,4", "2,3,2,4", "2,3,2,4", 0, "causal=1 scale=0.5"); }
AD_CASE(attention_noncausal) { ad_attention(c, "1,3,2,4", "1,4,2,4", "1,4,2,4", 0, "causal=0 scale=0.5"); }
AD_CASE(attention_window_causal) { ad_attention(c, "1,5,1,4", "1,5,1,4", "1,5,1,4", 0, "causal=1 window=2 scale=0.5"); }
AD_CASE(attention_window_noncausal) {
  ad_attention(c, "1,4,1,4", "1,4,1,4", "1,4,1,4", 0, "causal=0 window=2 scale=0.5");
}
AD_CASE(attention_gqa) { ad_attention(c, "1,3,4,4", "1,3,2,4", "1,3,2,4", 0, "causal=1 scale=0.5"); }
AD_CASE(attention_gqa_dv3_noncausal) { ad_attention(c, "2,2,4,2", "2,3,2,2", "2,3,2,3", 0, "causal=0 scale=0.7"); }
// Decode-like: 2 queries at positions 2, 3 against a 5-slot cache of which 4 are valid.
AD_CASE(attention_kvlen_causal) { ad_attention(c, "1,2,2,4", "1,5,2,4", "1,5,2,4", 4, "causal=1 scale=0.5"); }
AD_CASE(attention_kvlen_noncausal_window) {
  ad_attention(c, "1,2,2,4", "1,5,2,4", "1,5,2,4", 4, "causal=0 window=3 scale=0.5");
}
AD_CASE(attention_kvlen_gqa_window) {
  ad_attention(c, "1,2,4,2", "1,4,2,2", "1,4,2,2", 3, "causal=1 window=2 scale=0.7");
}

// ---- embeddings and loss -------------------------------------------------------------------------
// Repeated ids: scatter_add must accumulate; row 3 is never read (zero gradient).
AD_CASE(gather_repeated_ids) {
  nc_id t = ad_param(c, "5,3", -1, 1);
  c->y = OP(GATHER, NULL, t, ad_ids(c, NC_I32, "2,4", (const double[]){0, 2, 2, 4, 0, 1, 2, 2}));
}
AD_CASE(gather_i64_ids) {
  nc_id t = ad_param(c, "4,2", -1, 1);
  c->y = OP(GATHER, NULL, t, ad_ids(c, NC_I64, "6", (const double[]){1, 1, 1, 3, 0, 3}));
}
AD_CASE(gather_scalar_id) {
  nc_id t = ad_param(c, "4,3", -1, 1);
  c->y = OP(GATHER, NULL, t, ad_ids(c, NC_I32, "", (const double[]){2}));
}
static void ad_ce(adc *c, const char *attrs) {
  nc_id lg = ad_param(c, "2,3,5", -2, 2);
  c->y = OP(CROSS_ENTROPY, attrs, lg, ad_ids(c, NC_I32, "2,3", (const double[]){1, -1, 4, 0, 2, -1}));
}
AD_CASE(cross_entropy_none) { ad_ce(c, "reduction=none"); }
AD_CASE(cross_entropy_sum) { ad_ce(c, "reduction=sum"); }
AD_CASE(cross_entropy_mean) { ad_ce(c, "reduction=mean"); }
AD_CASE(cross_entropy_ignore_index2_i64) {
  nc_id lg = ad_param(c, "4,5", -2, 2);
  c->y = OP(CROSS_ENTROPY, "ignore_index=2 reduction=mean", lg, ad_ids(c, NC_I64, "4", (const double[]){2, 0, 4, 2}));
}
// Every target ignored: mean is defined as 0, the gradient is zero.
AD_CASE(cross_entropy_mean_all_ignored) {
  c->allow_zero = true;
  nc_id lg = ad_param(c, "2,3", -2, 2);
  c->y = OP(CROSS_ENTROPY, "reduction=mean", lg, ad_ids(c, NC_I32, "2", (const double[]){-1, -1}));
}

// ---- layout ---------------------------------------------------------------------------------------
AD_CASE(reshape) { c->y = OPD(RESHAPE, NC_F32, "3,4", NULL, ad_param(c, "2,6", -1, 1)); }
AD_CASE(reshape_rank3_to_2) { c->y = OPD(RESHAPE, NC_F32, "6,4", NULL, ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(reshape_to_rank1) { c->y = OPD(RESHAPE, NC_F32, "6", NULL, ad_param(c, "2,3", -1, 1)); }
AD_CASE(permute_201) { c->y = OP(PERMUTE, "perm=2,0,1", ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(permute_0213) { c->y = OP(PERMUTE, "perm=0,2,1,3", ad_param(c, "2,3,2,3", -1, 1)); }
AD_CASE(permute_transpose) { c->y = OP(PERMUTE, "perm=1,0", ad_param(c, "3,4", -1, 1)); }
AD_CASE(slice_middle) { c->y = OP(SLICE, "axis=0 start=1 end=3", ad_param(c, "4,3", -1, 1)); }
AD_CASE(slice_prefix) { c->y = OP(SLICE, "axis=1 start=0 end=2", ad_param(c, "2,5", -1, 1)); }
AD_CASE(slice_suffix_last_axis) { c->y = OP(SLICE, "axis=2 start=1 end=4", ad_param(c, "2,3,4", -1, 1)); }
AD_CASE(slice_full) { c->y = OP(SLICE, "axis=1 start=0 end=3", ad_param(c, "2,3", -1, 1)); }
AD_CASE(concat_three_axis1) {
  nc_id a = ad_param(c, "2,1", -1, 1), b = ad_param(c, "2,3", -1, 1), d = ad_param(c, "2,2", -1, 1);
  c->y = OP(CONCAT, "axis=1", a, b, d);
}
AD_CASE(concat_axis0) { c->y = OP(CONCAT, "axis=0", ad_param(c, "1,3", -1, 1), ad_param(c, "2,3", -1, 1)); }
AD_CASE(concat_same_param_twice) {
  nc_id x = ad_param(c, "2,3", -1, 1);
  c->y = OP(CONCAT, "axis=0", x, x);
}
AD_CASE(expand_rank_growth) { c->y = OPD(EXPAND, NC_F32, "2,3", NULL, ad_param(c, "3", -1, 1)); }
AD_CASE(expand_size1) { c->y = OPD(EXPAND, NC_F32, "2,3,4", NULL, ad_param(c, "2,1,4", -1, 1)); }
AD_CASE(expand_growth_and_size1) { c->y = OPD(EXPAND, NC_F32, "2,3,4", NULL, ad_param(c, "1,4", -1, 1)); }
AD_CASE(expand_scalar) { c->y = OPD(EXPAND, NC_F32, "2,3", NULL, ad_param(c, "", -1, 1)); }
AD_CASE(shift_plus1) { c->y = OP(SHIFT, "axis=1 amount=1", ad_param(c, "2,4,3", -1, 1)); }
AD_CASE(shift_minus2) { c->y = OP(SHIFT, "axis=1 amount=-2", ad_param(c, "2,4,3", -1, 1)); }
AD_CASE(shift_axis0) { c->y = OP(SHIFT, "axis=0 amount=2", ad_param(c, "3,2", -1, 1)); }
AD_CASE(shift_last_axis_minus1) { c->y = OP(SHIFT, "axis=2 amount=-1", ad_param(c, "2,2,3", -1, 1)); }

// ---- coverage ------------------------------------------------------------------------------------
// Every op flagged DIFF must be the op under test of some case above. The
// cases are built (not checked) here, so the op counted is the one actually
// in the graph.
Test(autodiff, every_diff_op_has_a_fd_case) {
  cr_assert(ad_ncases <= AD_MAXCASES, "raise AD_MAXCASES to %d", ad_ncases);
  int hits[NC_OP_COUNT] = {0};
  for (int i = 0; i < ad_ncases; i++) {
    adc c;
    ad_init(&c, ad_cases[i].name);
    ad_cases[i].build(&c);
    cr_assert(c.y != NC_NONE, "case %s sets no output", ad_cases[i].name);
    nc_op op = nc_graph_node(c.g, c.y)->op;
    cr_assert(nc_op_get(op)->flags & NC_OPF_DIFF, "case %s tests %s, which is not DIFF", ad_cases[i].name,
              nc_op_get(op)->name);
    hits[op]++;
  }
  int missing = 0;
  for (int op = 0; op < NC_OP_COUNT; op++)
    if ((nc_op_get((nc_op)op)->flags & NC_OPF_DIFF) && !hits[op]) {
      missing++;
      cr_expect_fail("op %s is DIFF but no finite-difference case in tests/test_autodiff.c tests it",
                     nc_op_get((nc_op)op)->name);
    }
  cr_assert_eq(missing, 0);
}

// ---- gradients checked by hand -------------------------------------------------------------------
// cast's rule casts the adjoint back to the input's dtype: through an f16
// round trip the gradient of x is f32(f16(R)), i.e. exactly R when R is
// representable in f16 and R rounded to f16 otherwise (as PyTorch's
// x.half().float() backward).
Test(autodiff, cast_gradient_passes_through_exactly) {
  nc_graph *g = nct_graph();
  nc_id x = nct_param(g, "x", NC_F32, "4");
  nc_id r = nct_in(g, "r", NC_F32, "4");
  nc_id xh = nct_opd(g, NC_OP_CAST, nct_type(g, NC_F16, "4"), NULL, 1, x);
  nc_id y = nct_opd(g, NC_OP_CAST, nct_type(g, NC_F32, "4"), NULL, 1, xh);
  nc_id loss = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op2(g, NC_OP_MUL, y, r), 1, false);
  nc_id dx;
  cr_assert_null(nc_autodiff(g, loss, NC_NONE, &x, 1, &dx));
  nc_tensor xv = NCT_T(NC_F32, "4", 0.1, -7, 3, 1e-3);
  nc_tensor rv = NCT_T(NC_F32, "4", 0.5, -1.25, 3072, 1 + 0x1p-12);
  nc_tensor got = nct_eval(g, dx, "x", &xv, "r", &rv, NULL);
  NCT_EXPECT(&got, 0, 0.5, -1.25, 3072, 1.0);  // 1 + 2^-12 is not an f16: rounds to 1
  // the gradient is of x's type, built from casts only
  cr_assert_eq(nc_type_of(g, dx).dtype, NC_F32);
}

// where: no gradient reaches the condition (a bool input). Asking for it
// anyway yields a zero constant of its type, like any node the loss does not
// depend on differentiably.
Test(autodiff, where_gives_no_gradient_to_cond) {
  nc_graph *g = nct_graph();
  nc_id cond = nct_in(g, "c", NC_BOOL, "3");
  nc_id a = nct_param(g, "a", NC_F32, "3"), b = nct_param(g, "b", NC_F32, "3");
  nc_id unused = nct_param(g, "unused", NC_F32, "2");
  nc_id loss = nc_b_reduce(g, NC_OP_REDUCE_SUM, nct_op(g, NC_OP_WHERE, NULL, 3, cond, a, b), 1, false);
  nc_id wrt[4] = {cond, a, b, unused}, grads[4];
  cr_assert_null(nc_autodiff(g, loss, NC_NONE, wrt, 4, grads));
  const nc_node *gc = nc_graph_node(g, grads[0]);
  cr_assert_eq(gc->op, NC_OP_CONST);
  cr_assert_eq(gc->fa[0], 0.0);
  cr_assert_eq(gc->type.dtype, NC_BOOL);
  const nc_node *gu = nc_graph_node(g, grads[3]);
  cr_assert(gu->op == NC_OP_CONST && gu->fa[0] == 0.0 && gu->type.dtype == NC_F32 && gu->type.rank == 1);
  nc_tensor cv = NCT_T(NC_BOOL, "3", 1, 0, 1), av = NCT_T(NC_F32, "3", 1, 2, 3), bv = NCT_T(NC_F32, "3", 4, 5, 6);
  nc_tensor da = nct_eval(g, grads[1], "c", &cv, "a", &av, "b", &bv, NULL);
  nc_tensor db = nct_eval(g, grads[2], "c", &cv, "a", &av, "b", &bv, NULL);
  NCT_EXPECT(&da, 0, 1, 0, 1);
  NCT_EXPECT(&db, 0, 0, 1, 0);
}

// A seed makes a non-scalar "loss" differentiable: d(sum(y * s))/dx.
Test(autodiff, seed_weights_a_nonscalar_output) {
  nc_graph *g = nct_graph();
  nc_id x = nct_param(g, "x", NC_F32, "2,3");
  nc_id s = nct_in(g, "s", NC_F32, "2,3");
  nc_id y = nct_op(g, NC_OP_SQUARE, NULL, 1, x);
  nc_id dx;
  cr_assert_null(nc_autodiff(g, y, s, &x, 1, &dx));
  nc_tensor xv = NCT_T(NC_F32, "2,3", 1, 2, 3, -1, -2, 0.5), sv = NCT_T(NC_F32, "2,3", 1, 0, -1, 2, 0.5, 4);
  nc_tensor got = nct_eval(g, dx, "x", &xv, "s", &sv, NULL);
  NCT_EXPECT(&got, 0, 2, 0, -6, -4, -2, 4);  // 2 x s
}

// ---- errors ------------------------------------------------------------------------------------------
Test(autodiff, errors_name_the_problem) {
  nc_graph *g = nct_graph();
  nc_id x = nct_param(g, "x", NC_F32, "2,3");
  nc_id y = nct_op(g, NC_OP_TANH, NULL, 1, x);
  nc_id ids = nct_in(g, "ids", NC_I32, "");
  nc_id dx = 12345;
  NCT_ERROR(nc_autodiff(g, y, NC_NONE, &x, 1, &dx), "autodiff|scalar|seed");
  NCT_ERROR(nc_autodiff(g, ids, NC_NONE, &x, 1, &dx), "autodiff|floating point");
  NCT_ERROR(nc_autodiff(g, 999, NC_NONE, &x, 1, &dx), "autodiff|999|does not exist");
  NCT_ERROR(nc_autodiff(g, NC_NONE, NC_NONE, &x, 1, &dx), "autodiff|does not exist");
  cr_assert_eq(dx, 12345, "grads are not written on error");
  cr_assert_null(nc_graph_verify(g), "a failed call leaves the graph valid");
  cr_assert_null(nc_graph_error(g), "and without a sticky error");
}

// ---- the autodiff pass on a model-like graph ------------------------------------------------------
// One tiny transformer block over symbolic (B, T): embedding, rms_norm,
// q/k/v projections, rope, causal attention, residual, tanh MLP, lm head,
// cross_entropy (mean, one ignored target). The pass adds "grad/<param>".
Test(autodiff, pass_on_model_like_graph_matches_fd) {
  adc c;
  ad_init(&c, "model");
  nc_graph *g = c.g;
  const char *pnames[] = {"wte", "wq", "wk", "wv", "wo", "w1", "w2", "lm"};
  const char *pdims[] = {"7,4", "4,4", "4,4", "4,4", "4,4", "4,6", "6,4", "4,7"};
  nc_id p[8];
  for (int i = 0; i < 8; i++) {  // params first: ad_compare_fd perturbs feeds[0..np)
    p[i] = c.pid[i] = nct_param(g, pnames[i], NC_F32, pdims[i]);
    snprintf(c.names[i], sizeof c.names[i], "%s", pnames[i]);
    c.val[i] = nct_rand(NC_F32, pdims[i], &c.rng, -1, 1);
  }
  nc_id ids = nct_in(g, "ids", NC_I32, "B,T"), tg = nct_in(g, "targets", NC_I32, "B,T");
  c.val[8] = nct_rand_ids(NC_I32, "2,3", &c.rng, 0, 7);
  c.val[9] = NCT_T(NC_I32, "2,3", 3, 0, -1, 6, 2, 5);
  snprintf(c.names[8], sizeof c.names[8], "ids");
  snprintf(c.names[9], sizeof c.names[9], "targets");
  c.nf = 10;
  for (int i = 0; i < c.nf; i++) c.feeds[i] = (nc_feed){c.names[i], &c.val[i]};

  nc_id x = nct_op(g, NC_OP_GATHER, NULL, 2, p[0], ids);  // (B,T,4)
  nc_id h = nct_op(g, NC_OP_RMS_NORM, "eps=1e-5", 1, x);
  nc_type heads = nct_type(g, NC_F32, "B,T,2,2"), flat = nct_type(g, NC_F32, "B,T,4");
  nc_id q = nct_opd(g, NC_OP_RESHAPE, heads, NULL, 1, nct_op(g, NC_OP_MATMUL, NULL, 2, h, p[1]));
  nc_id k = nct_opd(g, NC_OP_RESHAPE, heads, NULL, 1, nct_op(g, NC_OP_MATMUL, NULL, 2, h, p[2]));
  nc_id v = nct_opd(g, NC_OP_RESHAPE, heads, NULL, 1, nct_op(g, NC_OP_MATMUL, NULL, 2, h, p[3]));
  q = nct_op(g, NC_OP_ROPE, NULL, 1, q);
  k = nct_op(g, NC_OP_ROPE, NULL, 1, k);
  nc_id a = nct_op(g, NC_OP_ATTENTION, "causal=1 scale=0.7071067811865476", 3, q, k, v);
  a = nct_op(g, NC_OP_MATMUL, NULL, 2, nct_opd(g, NC_OP_RESHAPE, flat, NULL, 1, a), p[4]);
  x = nct_op(g, NC_OP_ADD, NULL, 2, x, a);
  nc_id m = nct_op(g, NC_OP_RMS_NORM, "eps=1e-5", 1, x);
  m = nct_op(g, NC_OP_TANH, NULL, 1, nct_op(g, NC_OP_MATMUL, NULL, 2, m, p[5]));
  x = nct_op(g, NC_OP_ADD, NULL, 2, x, nct_op(g, NC_OP_MATMUL, NULL, 2, m, p[6]));
  nc_id logits = nct_op(g, NC_OP_MATMUL, NULL, 2, nct_op(g, NC_OP_RMS_NORM, "eps=1e-5", 1, x), p[7]);
  nc_id loss = nct_op(g, NC_OP_CROSS_ENTROPY, NULL, 2, logits, tg);
  cr_assert_null(nc_graph_set_output(g, "loss", loss));

  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.verify = true;
  const char *names[] = {"autodiff", "verify"};
  nc_graph *before = g;
  cr_assert_null(nc_pass_run_pipeline(&g, names, 2, &ctx));
  cr_assert(g == before, "autodiff adds to the graph in place");
  cr_assert_null(nc_graph_verify(g));
  cr_assert_eq(nc_graph_noutputs(g), 9, "loss + one grad/<param> per param");
  cr_assert_str_eq(nc_graph_output_name(g, 0), "loss");
  cr_assert_eq(nc_graph_output(g, 0), loss);

  nc_tensor outs[9];
  nc_status st = nc_interp_run(g, c.feeds, c.nf, outs);
  cr_assert_null(st, "running the graph: %s", nc_status_msg(st));
  nc_tensor grads[8];
  for (int i = 0; i < 8; i++) {
    char want[32];
    snprintf(want, sizeof want, "grad/%s", pnames[i]);
    int found = -1;
    for (int o = 0; o < nc_graph_noutputs(g); o++)
      if (!strcmp(nc_graph_output_name(g, o), want)) found = o;
    cr_assert(found > 0, "output %s is missing", want);
    nc_type pt = nc_type_of(g, p[i]), gt = nc_type_of(g, nc_graph_output(g, found));
    cr_assert(nc_type_eq(&pt, &gt), "%s has the wrong type", want);
    grads[i] = outs[found];
  }
  c.np = 8;
  double worst = ad_compare_fd(&c, "model", loss, grads);
  if (getenv("NC_AD_VERBOSE"))
    fprintf(stderr, "autodiff %-28s worst |ad-fd|/max(1,|fd|) = %.2e\n", "model (pass)", worst);
  for (int i = 0; i < 9; i++) nc_tensor_free(&outs[i]);
}

// The pass needs an output named "loss".
Test(autodiff, pass_without_loss_output_is_an_error) {
  nc_graph *g = nct_graph();
  nc_id x = nct_param(g, "x", NC_F32, "2");
  cr_assert_null(nc_graph_set_output(g, "y", nct_op(g, NC_OP_TANH, NULL, 1, x)));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  const char *names[] = {"autodiff"};
  NCT_ERROR(nc_pass_run_pipeline(&g, names, 1, &ctx), "loss");
}

// Bad wrt ids and seeds are rejected up front, naming the culprit.
Test(autodiff, bad_wrt_and_seed_are_errors) {
  nc_graph *g = nct_graph();
  nc_id x = nct_param(g, "x", NC_F32, "2,3");
  nc_id y = nct_op(g, NC_OP_TANH, NULL, 1, x);
  nc_id loss = nc_b_reduce(g, NC_OP_REDUCE_SUM, y, 3, false);
  nc_id s23 = nct_in(g, "s", NC_F32, "2,3"), s32 = nct_in(g, "t", NC_F32, "3,2");
  nc_id dx[2] = {12345, 12345};
  nc_id wrt_bad[2] = {x, 999}, wrt_none[2] = {x, NC_NONE};
  NCT_ERROR(nc_autodiff(g, loss, NC_NONE, wrt_bad, 2, dx), "autodiff|999|does not exist");
  NCT_ERROR(nc_autodiff(g, loss, NC_NONE, wrt_none, 2, dx), "autodiff|does not exist");
  NCT_ERROR(nc_autodiff(g, y, 999, &x, 1, dx), "autodiff|seed|999");
  NCT_ERROR(nc_autodiff(g, y, s32, &x, 1, dx), "autodiff|seed|type");
  NCT_ERROR(nc_autodiff(g, loss, s23, &x, 1, dx), "autodiff|seed|type");
  cr_assert(dx[0] == 12345 && dx[1] == 12345, "grads are not written on error");
  cr_assert_null(nc_graph_verify(g));
  cr_assert_null(nc_graph_error(g));
}

// reduce_max at ties: the gradient is split evenly among the maxima (as
// torch.amax), a valid subgradient: it sums to dy, so moving every element
// up by t moves the max by exactly t.
Test(autodiff, reduce_max_splits_ties_evenly) {
  nc_graph *g = nct_graph();
  nc_id x = nct_param(g, "x", NC_F32, "2,4");
  nc_id r = nct_in(g, "r", NC_F32, "2");
  nc_id m = nct_op(g, NC_OP_REDUCE_MAX, "axes=1", 1, x);
  nc_id loss = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op2(g, NC_OP_MUL, m, r), 1, false);
  nc_id dx;
  cr_assert_null(nc_autodiff(g, loss, NC_NONE, &x, 1, &dx));
  nc_tensor xv = NCT_T(NC_F32, "2,4", 1, 3, 3, 2, 5, 5, 5, 5), rv = NCT_T(NC_F32, "2", 1, 2);
  nc_tensor got = nct_eval(g, dx, "x", &xv, "r", &rv, NULL);
  NCT_EXPECT(&got, 0, 0, 0.5, 0.5, 0, 0.5, 0.5, 0.5, 0.5);
}
