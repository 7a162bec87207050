// Reference interpreter: properties on random shapes and seeds.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tests/support/interp_util.h"

TestSuite(interp_props, .fini = nct_cleanup);

static void shape_str(int rank, const int64_t *s, char *buf, size_t n) {
  size_t o = 0;
  buf[0] = 0;
  for (int i = 0; i < rank; i++) o += (size_t)snprintf(buf + o, n - o, i ? ",%lld" : "%lld", (long long)s[i]);
}

static double dot(const nc_tensor *a, const nc_tensor *b) {
  double s = 0;
  for (int64_t i = 0; i < nc_tensor_numel(a); i++) s += nct_get(a, i) * nct_get(b, i);
  return s;
}

Test(interp_props, softmax_rows_sum_to_one_and_log_softmax_matches) {
  uint64_t rng = 1;
  for (int trial = 0; trial < 20; trial++) {
    int rank = (int)nct_randint(&rng, 1, 4);
    int64_t sh[4];
    for (int i = 0; i < rank; i++) sh[i] = nct_randint(&rng, 1, 7);
    nc_tensor x = nct_rand_shape(NC_F32, rank, sh, &rng, -20, 20);
    nc_tensor s = NCT_APPLY(NC_OP_SOFTMAX, NULL, &x), l = NCT_APPLY(NC_OP_LOG_SOFTMAX, NULL, &x);
    nc_tensor e = NCT_APPLY(NC_OP_EXP, NULL, &l);
    int64_t d = sh[rank - 1], rows = nc_tensor_numel(&x) / d;
    for (int64_t r = 0; r < rows; r++) {
      double sum = 0;
      for (int64_t j = 0; j < d; j++) sum += nct_get(&s, r * d + j);
      cr_expect(fabs(sum - 1) < 1e-6, "row %lld sums to %.9g", (long long)r, sum);
    }
    NCT_CLOSE(&e, &s, 1e-7, 1e-6);
  }
}

Test(interp_props, matmul_associative_and_bmm_is_per_batch_matmul) {
  uint64_t rng = 2;
  for (int trial = 0; trial < 10; trial++) {
    int64_t m = nct_randint(&rng, 1, 6), k = nct_randint(&rng, 1, 6), n = nct_randint(&rng, 1, 6),
            p = nct_randint(&rng, 1, 6);
    char sa[32], sb[32], sc[32];
    snprintf(sa, sizeof sa, "%lld,%lld", (long long)m, (long long)k);
    snprintf(sb, sizeof sb, "%lld,%lld", (long long)k, (long long)n);
    snprintf(sc, sizeof sc, "%lld,%lld", (long long)n, (long long)p);
    nc_graph *g = nct_graph();
    nc_id a = nct_in(g, "a", NC_F32, sa), b = nct_in(g, "b", NC_F32, sb), c = nct_in(g, "c", NC_F32, sc);
    nc_id ab_c = nct_op(g, NC_OP_MATMUL, NULL, 2, nct_op(g, NC_OP_MATMUL, NULL, 2, a, b), c);
    nc_id bc = nct_op(g, NC_OP_MATMUL, NULL, 2, b, c);
    nc_id a_bc = nct_op(g, NC_OP_MATMUL, NULL, 2, a, bc);
    nc_tensor av = nct_rand(NC_F32, sa, &rng, -1, 1), bv = nct_rand(NC_F32, sb, &rng, -1, 1);
    nc_tensor cv = nct_rand(NC_F32, sc, &rng, -1, 1);
    nc_tensor r1 = nct_eval(g, ab_c, "a", &av, "b", &bv, "c", &cv, NULL);
    nc_tensor r2 = nct_eval(g, a_bc, "a", &av, "b", &bv, "c", &cv, NULL);
    NCT_CLOSE(&r1, &r2, 1e-5, 1e-5);
  }
  for (int trial = 0; trial < 10; trial++) {
    int64_t nb = nct_randint(&rng, 1, 4), m = nct_randint(&rng, 1, 5), k = nct_randint(&rng, 1, 5),
            n = nct_randint(&rng, 1, 5);
    bool ta = nct_randint(&rng, 0, 2), tb = nct_randint(&rng, 0, 2);
    char sa[48], sb[48], attrs[32];
    snprintf(sa, sizeof sa, "%lld,%lld,%lld", (long long)nb, (long long)(ta ? k : m), (long long)(ta ? m : k));
    snprintf(sb, sizeof sb, "%lld,%lld,%lld", (long long)nb, (long long)(tb ? n : k), (long long)(tb ? k : n));
    snprintf(attrs, sizeof attrs, "ta=%d tb=%d", ta, tb);
    nc_tensor av = nct_rand(NC_F32, sa, &rng, -1, 1), bv = nct_rand(NC_F32, sb, &rng, -1, 1);
    nc_tensor r = NCT_APPLY(NC_OP_BMM, attrs, &av, &bv);
    int64_t asz = nc_tensor_numel(&av) / nb, bsz = nc_tensor_numel(&bv) / nb;
    for (int64_t i = 0; i < nb; i++) {
      int64_t a2[2] = {av.shape[1], av.shape[2]}, b2[2] = {bv.shape[1], bv.shape[2]};
      nc_tensor ai = nc_tensor_wrap((float *)av.data + i * asz, NC_F32, 2, a2);
      nc_tensor bi = nc_tensor_wrap((float *)bv.data + i * bsz, NC_F32, 2, b2);
      nc_tensor ri = NCT_APPLY(NC_OP_MATMUL, attrs, &ai, &bi);
      int64_t r2[2] = {m, n};
      nc_tensor slice = nc_tensor_wrap((float *)r.data + i * m * n, NC_F32, 2, r2);
      NCT_CLOSE(&ri, &slice, 0, 0);
    }
  }
}

Test(interp_props, permute_inverse_is_identity) {
  uint64_t rng = 3;
  for (int trial = 0; trial < 30; trial++) {
    int rank = 1 + trial % 6;
    int64_t sh[6];
    for (int i = 0; i < rank; i++) sh[i] = nct_randint(&rng, 1, 4);
    int perm[6], inv[6];
    for (int i = 0; i < rank; i++) perm[i] = i;
    for (int i = rank - 1; i > 0; i--) {
      int j = (int)nct_randint(&rng, 0, i + 1), t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    for (int i = 0; i < rank; i++) inv[perm[i]] = i;
    char sp[64] = "perm=", si[64] = "perm=";
    for (int i = 0; i < rank; i++) {
      snprintf(sp + strlen(sp), 64 - strlen(sp), i ? ",%d" : "%d", perm[i]);
      snprintf(si + strlen(si), 64 - strlen(si), i ? ",%d" : "%d", inv[i]);
    }
    nc_tensor x = nct_rand_shape(NC_F32, rank, sh, &rng, -1, 1);
    nc_tensor y = NCT_APPLY(NC_OP_PERMUTE, sp, &x);
    for (int i = 0; i < rank; i++) cr_expect_eq(y.shape[i], sh[perm[i]]);
    nc_tensor z = NCT_APPLY(NC_OP_PERMUTE, si, &y);
    NCT_CLOSE(&z, &x, 0, 0);
  }
}

Test(interp_props, reshape_round_trip_and_concat_slices) {
  uint64_t rng = 4;
  for (int trial = 0; trial < 15; trial++) {
    int64_t a = nct_randint(&rng, 1, 5), b = nct_randint(&rng, 1, 5), c = nct_randint(&rng, 1, 5);
    char s3[48], s2[48];
    snprintf(s3, sizeof s3, "%lld,%lld,%lld", (long long)a, (long long)b, (long long)c);
    snprintf(s2, sizeof s2, "%lld,%lld", (long long)(a * b), (long long)c);
    nc_tensor x = nct_rand(NC_I64, s3, &rng, -100, 100);
    nc_tensor y = NCT_APPLYD(NC_OP_RESHAPE, NC_I64, s2, NULL, &x);
    nc_tensor z = NCT_APPLYD(NC_OP_RESHAPE, NC_I64, s3, NULL, &y);
    NCT_CLOSE(&z, &x, 0, 0);
    // concat along a random axis, then slice the parts back out
    int axis = (int)nct_randint(&rng, 0, 3);
    int64_t sh[3] = {a, b, c}, s1[3] = {a, b, c};
    s1[axis] = nct_randint(&rng, 1, 4);
    nc_tensor p = nct_rand_shape(NC_BF16, 3, sh, &rng, -1, 1), q = nct_rand_shape(NC_BF16, 3, s1, &rng, -1, 1);
    char attrs[32], sl1[64], sl2[64];
    snprintf(attrs, sizeof attrs, "axis=%d", axis);
    nc_tensor cat = NCT_APPLY(NC_OP_CONCAT, attrs, &p, &q);
    snprintf(sl1, sizeof sl1, "axis=%d start=0 end=%lld", axis, (long long)sh[axis]);
    snprintf(sl2, sizeof sl2, "axis=%d start=%lld end=%lld", axis, (long long)sh[axis], (long long)(sh[axis] + s1[axis]));
    nc_tensor p2 = NCT_APPLY(NC_OP_SLICE, sl1, &cat), q2 = NCT_APPLY(NC_OP_SLICE, sl2, &cat);
    NCT_CLOSE(&p2, &p, 0, 0);
    NCT_CLOSE(&q2, &q, 0, 0);
  }
}

Test(interp_props, rope_inverse_and_pair_norms) {
  uint64_t rng = 5;
  for (int trial = 0; trial < 10; trial++) {
    int64_t sh[4] = {nct_randint(&rng, 1, 3), nct_randint(&rng, 1, 6), nct_randint(&rng, 1, 4),
                     2 * nct_randint(&rng, 1, 5)};
    nc_tensor x = nct_rand_shape(NC_F32, 4, sh, &rng, -1, 1);
    nc_tensor p = nct_scalar_i32((int32_t)nct_randint(&rng, 0, 1000));
    nc_tensor y = NCT_APPLY(NC_OP_ROPE, NULL, &x, &p);
    nc_tensor z = NCT_APPLY(NC_OP_ROPE, "inverse=1", &y, &p);
    NCT_CLOSE(&z, &x, 1e-6, 0);
    int64_t d = sh[3], h = d / 2;
    for (int64_t r = 0; r < nc_tensor_numel(&x) / d; r++)
      for (int64_t j = 0; j < h; j++) {
        double a1 = nct_get(&x, r * d + j), a2 = nct_get(&x, r * d + j + h);
        double b1 = nct_get(&y, r * d + j), b2 = nct_get(&y, r * d + j + h);
        cr_expect(fabs((a1 * a1 + a2 * a2) - (b1 * b1 + b2 * b2)) < 1e-6, "pair norm changed");
      }
  }
}

// attention built from primitives: scores = scale * q k^T (bmm tb), mask from
// iota + compares, where(mask, s, -inf), softmax, bmm with v; GQA through
// reshape + expand of k and v.
static nc_id attn_ref(nc_graph *g, nc_id q, nc_id k, nc_id v, int64_t bn, int64_t tq, int64_t tk, int64_t hq,
                      int64_t hkv, int64_t d, int64_t dv, int64_t kvlen, bool causal, int64_t window, double scale) {
  char s[96];
  int64_t grp = hq / hkv;
  nc_id qp = nct_op(g, NC_OP_PERMUTE, "perm=0,2,1,3", 1, q);  // (B,Hq,Tq,D)
  nc_id kv[2] = {k, v};
  int64_t dims[2] = {d, dv};
  for (int i = 0; i < 2; i++) {
    nc_id t = nct_op(g, NC_OP_PERMUTE, "perm=0,2,1,3", 1, kv[i]);  // (B,Hkv,Tk,D)
    snprintf(s, sizeof s, "%lld,%lld,1,%lld,%lld", (long long)bn, (long long)hkv, (long long)tk, (long long)dims[i]);
    t = nct_opd(g, NC_OP_RESHAPE, nct_type(g, NC_F32, s), NULL, 1, t);
    snprintf(s, sizeof s, "%lld,%lld,%lld,%lld,%lld", (long long)bn, (long long)hkv, (long long)grp, (long long)tk,
             (long long)dims[i]);
    t = nct_opd(g, NC_OP_EXPAND, nct_type(g, NC_F32, s), NULL, 1, t);
    snprintf(s, sizeof s, "%lld,%lld,%lld,%lld", (long long)bn, (long long)hq, (long long)tk, (long long)dims[i]);
    kv[i] = nct_opd(g, NC_OP_RESHAPE, nct_type(g, NC_F32, s), NULL, 1, t);  // (B,Hq,Tk,D)
  }
  char st[64], sm[64];
  snprintf(st, sizeof st, "%lld,%lld,%lld,%lld", (long long)bn, (long long)hq, (long long)tq, (long long)tk);
  snprintf(sm, sizeof sm, "%lld,%lld", (long long)tq, (long long)tk);
  nc_id sc = nct_op(g, NC_OP_BMM, "tb=1", 2, qp, kv[0]);  // (B,Hq,Tq,Tk)
  sc = nct_op(g, NC_OP_MUL, NULL, 2, sc, nct_const(g, scale, NC_F32, st));
  nc_id qi = nct_opd(g, NC_OP_IOTA, nct_type(g, NC_I32, sm), "axis=0", 0);
  nc_id kj = nct_opd(g, NC_OP_IOTA, nct_type(g, NC_I32, sm), "axis=1", 0);
  nc_id pos = nct_op(g, NC_OP_ADD, NULL, 2, qi, nct_const(g, (double)(kvlen - tq), NC_I32, sm));
  nc_id mask = nct_op(g, NC_OP_LT, NULL, 2, kj, nct_const(g, (double)kvlen, NC_I32, sm));
  if (causal) mask = nct_op(g, NC_OP_AND, NULL, 2, mask, nct_op(g, NC_OP_LE, NULL, 2, kj, pos));
  if (window > 0) {
    nc_id lo = nct_op(g, NC_OP_SUB, NULL, 2, pos, nct_const(g, (double)window, NC_I32, sm));
    mask = nct_op(g, NC_OP_AND, NULL, 2, mask, nct_op(g, NC_OP_GT, NULL, 2, kj, lo));
  }
  mask = nct_opd(g, NC_OP_EXPAND, nct_type(g, NC_BOOL, st), NULL, 1, mask);
  sc = nct_op(g, NC_OP_WHERE, NULL, 3, mask, sc, nct_const(g, -INFINITY, NC_F32, st));
  nc_id p = nct_op(g, NC_OP_SOFTMAX, NULL, 1, sc);
  nc_id o = nct_op(g, NC_OP_BMM, NULL, 2, p, kv[1]);       // (B,Hq,Tq,Dv)
  return nct_op(g, NC_OP_PERMUTE, "perm=0,2,1,3", 1, o);   // (B,Tq,Hq,Dv)
}

Test(interp_props, attention_equals_primitive_composition) {
  uint64_t rng = 6;
  for (int trial = 0; trial < 16; trial++) {
    int64_t bn = nct_randint(&rng, 1, 3), hkv = nct_randint(&rng, 1, 3), grp = nct_randint(&rng, 1, 3);
    int64_t hq = hkv * grp, d = nct_randint(&rng, 1, 5), dv = nct_randint(&rng, 1, 5);
    int64_t tk = nct_randint(&rng, 1, 7), tq = nct_randint(&rng, 1, tk + 1), kvlen = nct_randint(&rng, tq, tk + 1);
    bool causal = trial % 2 == 0, use_kvlen = trial % 3 != 0;
    if (!use_kvlen) kvlen = tk;
    int64_t window = trial % 4 >= 2 ? nct_randint(&rng, 1, 4) : 0;
    double scale = 0.3 + nct_uniform(&rng);
    int64_t sq[4] = {bn, tq, hq, d}, sk[4] = {bn, tk, hkv, d}, sv[4] = {bn, tk, hkv, dv};
    char qs[64], ks[64], vs[64], attrs[96];
    shape_str(4, sq, qs, sizeof qs);
    shape_str(4, sk, ks, sizeof ks);
    shape_str(4, sv, vs, sizeof vs);
    snprintf(attrs, sizeof attrs, "causal=%d window=%lld scale=%.17g", causal, (long long)window, scale);
    nc_graph *g = nct_graph();
    nc_id q = nct_in(g, "q", NC_F32, qs), k = nct_in(g, "k", NC_F32, ks), v = nct_in(g, "v", NC_F32, vs);
    nc_id kl = nct_in(g, "kvlen", NC_I32, "");
    nc_id a = use_kvlen ? nct_op(g, NC_OP_ATTENTION, attrs, 4, q, k, v, kl) : nct_op(g, NC_OP_ATTENTION, attrs, 3, q, k, v);
    nc_id r = attn_ref(g, q, k, v, bn, tq, tk, hq, hkv, d, dv, kvlen, causal, window, (float)scale);
    nc_tensor qv = nct_rand_shape(NC_F32, 4, sq, &rng, -2, 2), kv = nct_rand_shape(NC_F32, 4, sk, &rng, -2, 2);
    nc_tensor vv = nct_rand_shape(NC_F32, 4, sv, &rng, -2, 2), klv = nct_scalar_i32((int32_t)kvlen);
    nc_tensor av = nct_eval(g, a, "q", &qv, "k", &kv, "v", &vv, "kvlen", &klv, NULL);
    nc_tensor rv = nct_eval(g, r, "q", &qv, "k", &kv, "v", &vv, NULL);
    // the composition rounds scores and probabilities to f32 on the way
    NCT_CLOSE(&av, &rv, 2e-6, 2e-5);
  }
}

Test(interp_props, reduce_mean_is_sum_over_n) {
  uint64_t rng = 7;
  for (int trial = 0; trial < 20; trial++) {
    int rank = (int)nct_randint(&rng, 1, 5);
    int64_t sh[4], n = 1, axes = 0;
    for (int i = 0; i < rank; i++) sh[i] = nct_randint(&rng, 1, 5);
    while (!axes) axes = nct_randint(&rng, 0, INT64_C(1) << rank);
    char attrs[48] = "axes=";
    bool first = true;
    for (int i = 0; i < rank; i++)
      if (axes >> i & 1) {
        n *= sh[i];
        snprintf(attrs + strlen(attrs), sizeof attrs - strlen(attrs), first ? "%d" : ",%d", i);
        first = false;
      }
    if (trial % 2) strcat(attrs, " keepdim=1");
    nc_tensor x = nct_rand_shape(NC_F32, rank, sh, &rng, -1, 1);
    nc_tensor m = NCT_APPLY(NC_OP_REDUCE_MEAN, attrs, &x), s = NCT_APPLY(NC_OP_REDUCE_SUM, attrs, &x);
    for (int64_t i = 0; i < nc_tensor_numel(&m); i++) nct_set(&s, i, nct_get(&s, i) / (double)n);
    NCT_CLOSE(&m, &s, 1e-7, 1e-6);
  }
}

Test(interp_props, scatter_add_is_adjoint_of_gather) {
  uint64_t rng = 8;
  for (int trial = 0; trial < 10; trial++) {
    int64_t v = nct_randint(&rng, 1, 8), c = nct_randint(&rng, 1, 5), n1 = nct_randint(&rng, 1, 4),
            n2 = nct_randint(&rng, 1, 4);
    char st[32], si[32], sg[48];
    snprintf(st, sizeof st, "%lld,%lld", (long long)v, (long long)c);
    snprintf(si, sizeof si, "%lld,%lld", (long long)n1, (long long)n2);
    snprintf(sg, sizeof sg, "%lld,%lld,%lld", (long long)n1, (long long)n2, (long long)c);
    nc_tensor t = nct_rand(NC_F32, st, &rng, -1, 1), ids = nct_rand_ids(trial % 2 ? NC_I64 : NC_I32, si, &rng, 0, v);
    nc_tensor gr = nct_rand(NC_F32, sg, &rng, -1, 1);
    nc_tensor ga = NCT_APPLY(NC_OP_GATHER, NULL, &t, &ids);
    const nc_tensor *in[2] = {&ids, &gr};
    nc_tensor sc = nct_apply(NC_OP_SCATTER_ADD, NC_F32, st, NULL, 2, in);
    double lhs = dot(&ga, &gr), rhs = dot(&t, &sc);
    cr_expect(fabs(lhs - rhs) < 1e-5 * (1 + fabs(lhs)), "<gather(T,ids),G> = %.9g but <T,scatter_add(ids,G)> = %.9g",
              lhs, rhs);
  }
}
