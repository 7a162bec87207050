// Reference interpreter: rms_norm (+grad), softmax, log_softmax, rope,
// attention (+grad), cross_entropy (+grad). All in float64, rounded once.
// Semantics: see the top of runtime/interp.c.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/interp_impl.h"

// Loads up to three inputs as doubles and allocates a float64 result of the
// output's size; frees everything on failure.
typedef struct {
  double *x[5];
  double *y;
} nc_stage;

static void nc_stage_free(nc_stage *s) {
  for (int i = 0; i < 5; i++) free(s->x[i]);
  free(s->y);
}

static nc_status nc_stage_load(nc_stage *s, const nc_interp_call *c, int nin) {
  memset(s, 0, sizeof *s);
  nc_status st = NC_OK;
  for (int i = 0; i < nin && !st; i++) st = nc_interp_load_f64(c->in[i], &s->x[i]);
  if (!st) {
    int64_t n = nc_tensor_numel(c->out);
    s->y = calloc((size_t)(n ? n : 1), sizeof *s->y);
    if (!s->y) st = nc_errorf(NC_E_NOMEM, "out of memory");
  }
  if (st) nc_stage_free(s);
  return st;
}

static nc_status nc_stage_finish(nc_stage *s, nc_tensor *out) {
  nc_interp_store_f64(out, s->y);
  nc_stage_free(s);
  return NC_OK;
}

static int64_t nc_last_dim(const nc_tensor *t) { return t->rank ? t->shape[t->rank - 1] : 1; }

// ---- rms_norm ------------------------------------------------------------------------
// 1 / sqrt(mean(x^2) + eps) of one row
static double nc_rms_r(const double *x, int64_t d, double eps) {
  double ss = 0;
  for (int64_t j = 0; j < d; j++) ss += x[j] * x[j];
  return 1.0 / sqrt(ss / (double)d + eps);
}

NC_INTERP_FN(RMS_NORM) {  // (..., D) -> (..., D)
  nc_stage s;
  NC_TRY(nc_stage_load(&s, c, 1));
  int64_t d = nc_last_dim(c->out), rows = nc_tensor_numel(c->out) / d;
  for (int64_t r = 0; r < rows; r++) {
    const double *x = s.x[0] + r * d;
    double rr = nc_rms_r(x, d, c->n->fa[0]);
    for (int64_t j = 0; j < d; j++) s.y[r * d + j] = x[j] * rr;
  }
  return nc_stage_finish(&s, c->out);
}

NC_INTERP_FN(RMS_NORM_GRAD) {  // x (..., D), dy (..., D) -> dx (..., D)
  nc_stage s;
  NC_TRY(nc_stage_load(&s, c, 2));
  int64_t d = nc_last_dim(c->out), rows = nc_tensor_numel(c->out) / d;
  for (int64_t r = 0; r < rows; r++) {
    const double *x = s.x[0] + r * d, *dy = s.x[1] + r * d;
    double rr = nc_rms_r(x, d, c->n->fa[0]), m = 0;
    for (int64_t j = 0; j < d; j++) m += dy[j] * x[j] * rr;
    m /= (double)d;
    for (int64_t j = 0; j < d; j++) s.y[r * d + j] = rr * (dy[j] - x[j] * rr * m);
  }
  return nc_stage_finish(&s, c->out);
}

// ---- softmax ---------------------------------------------------------------------------
static nc_status nc_softmax(const nc_interp_call *c, bool logv) {  // over the last axis
  nc_stage s;
  NC_TRY(nc_stage_load(&s, c, 1));
  int64_t d = nc_last_dim(c->out), rows = nc_tensor_numel(c->out) / d;
  for (int64_t r = 0; r < rows; r++) {
    const double *x = s.x[0] + r * d;
    double *y = s.y + r * d, mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < d; j++) mx = x[j] > mx || isnan(x[j]) ? x[j] : mx;
    for (int64_t j = 0; j < d; j++) sum += exp(x[j] - mx);
    double lse = log(sum);
    for (int64_t j = 0; j < d; j++) y[j] = logv ? x[j] - mx - lse : exp(x[j] - mx) / sum;
  }
  return nc_stage_finish(&s, c->out);
}

NC_INTERP_FN(SOFTMAX) { return nc_softmax(c, false); }
NC_INTERP_FN(LOG_SOFTMAX) { return nc_softmax(c, true); }

// ---- rope --------------------------------------------------------------------------------
NC_INTERP_FN(ROPE) {  // x (B,T,H,D) [, pos0] -> (B,T,H,D)
  nc_stage s;
  NC_TRY(nc_stage_load(&s, c, 1));
  const nc_tensor *x = c->in[0];
  int64_t bn = x->shape[0], tn = x->shape[1], hn = x->shape[2], dn = x->shape[3], half = dn / 2;
  int64_t pos0 = c->n->nin > 1 ? nc_interp_scalar_i64(c->in[1]) : 0;
  double base = c->n->fa[0], sign = c->n->ia[0] ? -1.0 : 1.0;
  for (int64_t b = 0; b < bn; b++)
    for (int64_t t = 0; t < tn; t++)
      for (int64_t j = 0; j < half; j++) {
        double ang = sign * (double)(t + pos0) * pow(base, -2.0 * (double)j / (double)dn);
        double cs = cos(ang), sn = sin(ang);
        for (int64_t h = 0; h < hn; h++) {
          int64_t o = ((b * tn + t) * hn + h) * dn;
          double x1 = s.x[0][o + j], x2 = s.x[0][o + j + half];
          s.y[o + j] = x1 * cs + x2 * sn;
          s.y[o + j + half] = -x1 * sn + x2 * cs;
        }
      }
  return nc_stage_finish(&s, c->out);
}

// ---- attention ------------------------------------------------------------------------------
typedef struct {
  int64_t bn, tq, tk, hq, hkv, d, dv, kvlen, window;
  bool causal;
  double scale;
} nc_attn_dims;

static nc_status nc_attn_dims_get(const nc_interp_call *c, int kvlen_index, int attr0, nc_attn_dims *a) {
  const nc_tensor *q = c->in[0], *k = c->in[1], *v = c->in[2];
  a->bn = q->shape[0];
  a->tq = q->shape[1];
  a->hq = q->shape[2];
  a->d = q->shape[3];
  a->tk = k->shape[1];
  a->hkv = k->shape[2];
  a->dv = v->shape[3];
  a->causal = c->n->ia[attr0];
  a->window = c->n->ia[attr0 + 1];
  a->scale = c->n->fa[0];
  a->kvlen = c->n->nin > kvlen_index ? nc_interp_scalar_i64(c->in[kvlen_index]) : a->tk;
  if (a->kvlen < 1 || a->kvlen > a->tk)
    return nc_errorf(NC_E_INVALID, "kvlen %lld is outside [1, %lld] (Tk)", (long long)a->kvlen, (long long)a->tk);
  if (a->causal && a->kvlen < a->tq)
    return nc_errorf(NC_E_INVALID, "kvlen %lld is less than Tq %lld with causal masking", (long long)a->kvlen,
                     (long long)a->tq);
  return NC_OK;
}

// The contiguous key range [*lo, *hi) query i sees.
static void nc_attn_range(const nc_attn_dims *a, int64_t i, int64_t *lo, int64_t *hi) {
  int64_t p = a->kvlen - a->tq + i;
  *hi = a->causal ? (p + 1 < a->kvlen ? p + 1 : a->kvlen) : a->kvlen;
  *lo = a->window > 0 ? (p - a->window + 1 > 0 ? p - a->window + 1 : 0) : 0;
  if (*hi < *lo) *hi = *lo;
}

// Probabilities of one query row over keys [lo, hi) into pr[0..hi-lo).
static void nc_attn_probs(const nc_attn_dims *a, const double *q, const double *k, int64_t b, int64_t hk,
                          int64_t lo, int64_t hi, double *pr) {
  double mx = -INFINITY, sum = 0;
  for (int64_t j = lo; j < hi; j++) {
    const double *kr = k + ((b * a->tk + j) * a->hkv + hk) * a->d;
    double sc = 0;
    for (int64_t e = 0; e < a->d; e++) sc += q[e] * kr[e];
    sc *= a->scale;
    pr[j - lo] = sc;
    if (sc > mx) mx = sc;
  }
  for (int64_t j = lo; j < hi; j++) sum += pr[j - lo] = exp(pr[j - lo] - mx);
  for (int64_t j = lo; j < hi; j++) pr[j - lo] /= sum;
}

NC_INTERP_FN(ATTENTION) {  // q (B,Tq,Hq,D), k (B,Tk,Hkv,D), v (B,Tk,Hkv,Dv) -> (B,Tq,Hq,Dv)
  nc_attn_dims a;
  NC_TRY(nc_attn_dims_get(c, 3, 0, &a));
  nc_stage s;
  NC_TRY(nc_stage_load(&s, c, 3));
  double *pr = malloc((size_t)a.tk * sizeof *pr);
  if (!pr) {
    nc_stage_free(&s);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  int64_t group = a.hq / a.hkv;
  for (int64_t b = 0; b < a.bn; b++)
    for (int64_t i = 0; i < a.tq; i++)
      for (int64_t h = 0; h < a.hq; h++) {
        int64_t lo, hi, hk = h / group;
        nc_attn_range(&a, i, &lo, &hi);
        const double *q = s.x[0] + ((b * a.tq + i) * a.hq + h) * a.d;
        double *y = s.y + ((b * a.tq + i) * a.hq + h) * a.dv;  // zeros if no key
        nc_attn_probs(&a, q, s.x[1], b, hk, lo, hi, pr);
        for (int64_t j = lo; j < hi; j++) {
          const double *vr = s.x[2] + ((b * a.tk + j) * a.hkv + hk) * a.dv;
          for (int64_t e = 0; e < a.dv; e++) y[e] += pr[j - lo] * vr[e];
        }
      }
  free(pr);
  return nc_stage_finish(&s, c->out);
}

// dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij'), dP_ij = dO_i . V_j;
// dQ_i = scale sum_j dS_ij K_j; dK_j = scale sum_i dS_ij Q_i; dV_j = sum_i P_ij dO_i.
NC_INTERP_FN(ATTENTION_GRAD) {  // q, k, v, dout [, kvlen] -> d(q|k|v)
  nc_attn_dims a;
  NC_TRY(nc_attn_dims_get(c, 4, 1, &a));
  int wrt = (int)c->n->ia[0];
  nc_stage s;
  NC_TRY(nc_stage_load(&s, c, 4));
  double *pr = malloc((size_t)a.tk * 2 * sizeof *pr);
  if (!pr) {
    nc_stage_free(&s);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  double *dp = pr + a.tk;
  const double *qv = s.x[0], *kv = s.x[1], *vv = s.x[2], *dov = s.x[3];
  int64_t group = a.hq / a.hkv;
  for (int64_t b = 0; b < a.bn; b++)
    for (int64_t i = 0; i < a.tq; i++)
      for (int64_t h = 0; h < a.hq; h++) {
        int64_t lo, hi, hk = h / group, qo = ((b * a.tq + i) * a.hq + h);
        nc_attn_range(&a, i, &lo, &hi);
        if (lo == hi) continue;
        const double *q = qv + qo * a.d, *dout = dov + qo * a.dv;
        nc_attn_probs(&a, q, kv, b, hk, lo, hi, pr);
        if (wrt == 2) {  // dV
          for (int64_t j = lo; j < hi; j++) {
            double *dvr = s.y + ((b * a.tk + j) * a.hkv + hk) * a.dv;
            for (int64_t e = 0; e < a.dv; e++) dvr[e] += pr[j - lo] * dout[e];
          }
          continue;
        }
        double dot = 0;
        for (int64_t j = lo; j < hi; j++) {
          const double *vr = vv + ((b * a.tk + j) * a.hkv + hk) * a.dv;
          double t = 0;
          for (int64_t e = 0; e < a.dv; e++) t += dout[e] * vr[e];
          dp[j - lo] = t;
          dot += pr[j - lo] * t;
        }
        for (int64_t j = lo; j < hi; j++) {
          double ds = pr[j - lo] * (dp[j - lo] - dot) * a.scale;
          int64_t ko = ((b * a.tk + j) * a.hkv + hk) * a.d;
          if (wrt == 0) {
            double *dq = s.y + qo * a.d;
            for (int64_t e = 0; e < a.d; e++) dq[e] += ds * kv[ko + e];
          } else {
            double *dk = s.y + ko;
            for (int64_t e = 0; e < a.d; e++) dk[e] += ds * q[e];
          }
        }
      }
  free(pr);
  return nc_stage_finish(&s, c->out);
}

// ---- cross entropy -------------------------------------------------------------------------
// Validates targets; returns the count of non-ignored positions.
static nc_status nc_ce_targets(const nc_tensor *tg, int64_t v, int64_t ignore, int64_t *count) {
  int64_t n = nc_tensor_numel(tg), cnt = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t t = nc_elem_get_i64(tg->data, tg->dtype, (size_t)i);
    if (t == ignore) continue;
    if (t < 0 || t >= v)
      return nc_errorf(NC_E_INVALID, "target %lld at position %lld is outside [0, %lld) and is not ignore_index %lld",
                       (long long)t, (long long)i, (long long)v, (long long)ignore);
    cnt++;
  }
  *count = cnt;
  return NC_OK;
}

static double nc_row_lse(const double *x, int64_t v) {
  double mx = -INFINITY, sum = 0;
  for (int64_t j = 0; j < v; j++) mx = x[j] > mx || isnan(x[j]) ? x[j] : mx;
  for (int64_t j = 0; j < v; j++) sum += exp(x[j] - mx);
  return mx + log(sum);
}

NC_INTERP_FN(CROSS_ENTROPY) {  // logits (...,V), targets (...) -> f32 (...) or ()
  const nc_tensor *lg = c->in[0], *tg = c->in[1];
  int64_t v = nc_last_dim(lg), rows = nc_tensor_numel(tg), ignore = c->n->ia[0], red = c->n->ia[1], cnt = 0;
  NC_TRY(nc_ce_targets(tg, v, ignore, &cnt));
  nc_stage s;
  NC_TRY(nc_stage_load(&s, c, 1));
  double total = 0;
  for (int64_t r = 0; r < rows; r++) {
    int64_t t = nc_elem_get_i64(tg->data, tg->dtype, (size_t)r);
    double l = 0;
    if (t != ignore) {
      const double *x = s.x[0] + r * v;
      l = nc_row_lse(x, v) - x[t];
    }
    if (red == 0) s.y[r] = l;
    total += l;
  }
  if (red == 1) s.y[0] = total;
  if (red == 2) s.y[0] = cnt ? total / (double)cnt : 0.0;
  return nc_stage_finish(&s, c->out);
}

NC_INTERP_FN(CROSS_ENTROPY_GRAD) {  // logits (...,V), targets (...), dloss -> (...,V)
  const nc_tensor *lg = c->in[0], *tg = c->in[1];
  int64_t v = nc_last_dim(lg), rows = nc_tensor_numel(tg), ignore = c->n->ia[0], red = c->n->ia[1], cnt = 0;
  NC_TRY(nc_ce_targets(tg, v, ignore, &cnt));
  nc_stage s;
  NC_TRY(nc_stage_load(&s, c, 3));
  for (int64_t r = 0; r < rows; r++) {
    int64_t t = nc_elem_get_i64(tg->data, tg->dtype, (size_t)r);
    if (t == ignore) continue;
    double dl = red == 0 ? s.x[2][r] : s.x[2][0];
    if (red == 2) dl /= (double)cnt;  // cnt >= 1 here
    const double *x = s.x[0] + r * v;
    double lse = nc_row_lse(x, v), *y = s.y + r * v;
    for (int64_t j = 0; j < v; j++) y[j] = (exp(x[j] - lse) - (j == t ? 1.0 : 0.0)) * dl;
  }
  return nc_stage_finish(&s, c->out);
}
