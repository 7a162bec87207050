// Reference interpreter: elementwise ops, cast, where, reductions, matmul,
// bmm, gather and scatter_add. Semantics: see the top of runtime/interp.c.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/interp_impl.h"

// ---- helpers --------------------------------------------------------------------
nc_status nc_interp_load_f64(const nc_tensor *t, double **out) {
  int64_t n = nc_tensor_numel(t);
  double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
  if (!v) return nc_errorf(NC_E_NOMEM, "out of memory staging %lld values", (long long)n);
  if (t->dtype == NC_F32) {
    const float *f = t->data;
    for (int64_t i = 0; i < n; i++) v[i] = f[i];
  } else {
    for (int64_t i = 0; i < n; i++) v[i] = nc_elem_get(t->data, t->dtype, (size_t)i);
  }
  *out = v;
  return NC_OK;
}

void nc_interp_store_f64(nc_tensor *out, const double *v) {
  int64_t n = nc_tensor_numel(out);
  if (out->dtype == NC_F32) {
    float *f = out->data;
    for (int64_t i = 0; i < n; i++) f[i] = (float)v[i];
  } else {
    for (int64_t i = 0; i < n; i++) nc_elem_set(out->data, out->dtype, (size_t)i, v[i]);
  }
}

void nc_interp_set_wrap(void *buf, nc_dtype t, size_t i, int64_t v) {
  switch (t) {
    case NC_I32: ((int32_t *)buf)[i] = (int32_t)(uint32_t)(uint64_t)v; break;
    case NC_I64: ((int64_t *)buf)[i] = v; break;
    case NC_U8: ((uint8_t *)buf)[i] = (uint8_t)(uint64_t)v; break;
    case NC_BOOL: ((uint8_t *)buf)[i] = v != 0; break;
    default: nc_elem_set(buf, t, i, (double)v); break;
  }
}

int64_t nc_interp_scalar_i64(const nc_tensor *t) { return nc_elem_get_i64(t->data, t->dtype, 0); }

// Integer view (bool included) of element i.
static inline int64_t geti(const nc_tensor *t, int64_t i) { return nc_elem_get_i64(t->data, t->dtype, (size_t)i); }
static inline double getf(const nc_tensor *t, int64_t i) { return nc_elem_get(t->data, t->dtype, (size_t)i); }

// ---- unary ------------------------------------------------------------------------
static double nc_unary_f(nc_op op, double x, double p) {
  switch (op) {
    case NC_OP_NEG: return -x;
    case NC_OP_ABS: return fabs(x);
    case NC_OP_RELU: return isnan(x) ? x : (x > 0 ? x : 0.0);
    case NC_OP_SQUARE: return x * x;
    case NC_OP_TANH: return tanh(x);
    case NC_OP_EXP: return exp(x);
    case NC_OP_LOG: return log(x);
    case NC_OP_SQRT: return sqrt(x);
    case NC_OP_RSQRT: return 1.0 / sqrt(x);
    case NC_OP_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case NC_OP_SIN: return sin(x);
    case NC_OP_COS: return cos(x);
    case NC_OP_POWC: return pow(x, p);
    default: return NAN;
  }
}

static int64_t nc_unary_i(nc_op op, int64_t x) {
  uint64_t u = (uint64_t)x;
  switch (op) {
    case NC_OP_NEG: return (int64_t)(0 - u);
    case NC_OP_ABS: return x < 0 ? (int64_t)(0 - u) : x;
    case NC_OP_RELU: return x > 0 ? x : 0;
    case NC_OP_SQUARE: return (int64_t)(u * u);
    default: return 0;
  }
}

static nc_status nc_unary(const nc_interp_call *c) {
  const nc_tensor *x = c->in[0];
  nc_tensor *o = c->out;
  int64_t n = nc_tensor_numel(o);
  nc_op op = c->n->op;
  if (op == NC_OP_NOT) {
    for (int64_t i = 0; i < n; i++) ((uint8_t *)o->data)[i] = !((const uint8_t *)x->data)[i];
  } else if (nc_dtype_is_float(o->dtype)) {
    double p = c->n->fa[0];
    for (int64_t i = 0; i < n; i++) nc_elem_set(o->data, o->dtype, (size_t)i, nc_unary_f(op, getf(x, i), p));
  } else {
    for (int64_t i = 0; i < n; i++) nc_interp_set_wrap(o->data, o->dtype, (size_t)i, nc_unary_i(op, geti(x, i)));
  }
  return NC_OK;
}

NC_INTERP_FN(NEG) { return nc_unary(c); }
NC_INTERP_FN(ABS) { return nc_unary(c); }
NC_INTERP_FN(RELU) { return nc_unary(c); }
NC_INTERP_FN(SQUARE) { return nc_unary(c); }
NC_INTERP_FN(TANH) { return nc_unary(c); }
NC_INTERP_FN(EXP) { return nc_unary(c); }
NC_INTERP_FN(LOG) { return nc_unary(c); }
NC_INTERP_FN(SQRT) { return nc_unary(c); }
NC_INTERP_FN(RSQRT) { return nc_unary(c); }
NC_INTERP_FN(SIGMOID) { return nc_unary(c); }
NC_INTERP_FN(SIN) { return nc_unary(c); }
NC_INTERP_FN(COS) { return nc_unary(c); }
NC_INTERP_FN(POWC) { return nc_unary(c); }
NC_INTERP_FN(NOT) { return nc_unary(c); }

NC_INTERP_FN(CAST) {
  const nc_tensor *x = c->in[0];
  nc_tensor *o = c->out;
  int64_t n = nc_tensor_numel(o);
  bool fin = nc_dtype_is_float(x->dtype), fout = nc_dtype_is_float(o->dtype);
  for (int64_t i = 0; i < n; i++) {
    if (fin && o->dtype == NC_BOOL) {
      ((uint8_t *)o->data)[i] = getf(x, i) != 0;  // NaN != 0
    } else if (fin || fout) {
      nc_elem_set(o->data, o->dtype, (size_t)i, getf(x, i));  // float->int: trunc, saturate, NaN->0
    } else {
      nc_interp_set_wrap(o->data, o->dtype, (size_t)i, geti(x, i));  // int->int wraps
    }
  }
  return NC_OK;
}

// ---- binary ----------------------------------------------------------------------
static double nc_binary_f(nc_op op, double a, double b) {
  switch (op) {
    case NC_OP_ADD: return a + b;
    case NC_OP_SUB: return a - b;
    case NC_OP_MUL: return a * b;
    case NC_OP_DIV: return a / b;
    case NC_OP_MAX: return isnan(a) || isnan(b) ? NAN : (a > b ? a : b);
    case NC_OP_MIN: return isnan(a) || isnan(b) ? NAN : (a < b ? a : b);
    default: return NAN;
  }
}

static bool nc_compare(nc_op op, int c) {  // c = sign of (a - b), 2 = unordered (NaN)
  switch (op) {
    case NC_OP_EQ: return c == 0;
    case NC_OP_NE: return c != 0;
    case NC_OP_LT: return c == -1;
    case NC_OP_LE: return c == -1 || c == 0;
    case NC_OP_GT: return c == 1;
    case NC_OP_GE: return c == 1 || c == 0;
    default: return false;
  }
}

static nc_status nc_binary(const nc_interp_call *c) {
  const nc_tensor *a = c->in[0], *b = c->in[1];
  nc_tensor *o = c->out;
  int64_t n = nc_tensor_numel(o);
  nc_op op = c->n->op;
  bool fl = nc_dtype_is_float(a->dtype);
  if (op >= NC_OP_EQ && op <= NC_OP_GE) {
    uint8_t *r = o->data;
    for (int64_t i = 0; i < n; i++) {
      int s;
      if (fl) {
        double x = getf(a, i), y = getf(b, i);
        s = x < y ? -1 : x > y ? 1 : x == y ? 0 : 2;
      } else {
        int64_t x = geti(a, i), y = geti(b, i);
        s = x < y ? -1 : x > y ? 1 : 0;
      }
      r[i] = nc_compare(op, s);
    }
    return NC_OK;
  }
  if (op == NC_OP_AND || op == NC_OP_OR) {
    const uint8_t *x = a->data, *y = b->data;
    uint8_t *r = o->data;
    for (int64_t i = 0; i < n; i++) r[i] = op == NC_OP_AND ? (x[i] && y[i]) : (x[i] || y[i]);
    return NC_OK;
  }
  if (fl) {
    for (int64_t i = 0; i < n; i++) nc_elem_set(o->data, o->dtype, (size_t)i, nc_binary_f(op, getf(a, i), getf(b, i)));
    return NC_OK;
  }
  for (int64_t i = 0; i < n; i++) {
    int64_t x = geti(a, i), y = geti(b, i), r;
    uint64_t ux = (uint64_t)x, uy = (uint64_t)y;
    switch (op) {
      case NC_OP_ADD: r = (int64_t)(ux + uy); break;
      case NC_OP_SUB: r = (int64_t)(ux - uy); break;
      case NC_OP_MUL: r = (int64_t)(ux * uy); break;
      case NC_OP_DIV:
        if (y == 0) return nc_errorf(NC_E_INVALID, "integer division by zero at element %lld", (long long)i);
        r = (x == INT64_MIN && y == -1) ? INT64_MIN : x / y;
        break;
      case NC_OP_MAX: r = x > y ? x : y; break;
      case NC_OP_MIN: r = x < y ? x : y; break;
      default: r = 0; break;
    }
    nc_interp_set_wrap(o->data, o->dtype, (size_t)i, r);
  }
  return NC_OK;
}

NC_INTERP_FN(ADD) { return nc_binary(c); }
NC_INTERP_FN(SUB) { return nc_binary(c); }
NC_INTERP_FN(MUL) { return nc_binary(c); }
NC_INTERP_FN(DIV) { return nc_binary(c); }
NC_INTERP_FN(MAX) { return nc_binary(c); }
NC_INTERP_FN(MIN) { return nc_binary(c); }
NC_INTERP_FN(AND) { return nc_binary(c); }
NC_INTERP_FN(OR) { return nc_binary(c); }
NC_INTERP_FN(EQ) { return nc_binary(c); }
NC_INTERP_FN(NE) { return nc_binary(c); }
NC_INTERP_FN(LT) { return nc_binary(c); }
NC_INTERP_FN(LE) { return nc_binary(c); }
NC_INTERP_FN(GT) { return nc_binary(c); }
NC_INTERP_FN(GE) { return nc_binary(c); }

NC_INTERP_FN(WHERE) {
  const uint8_t *cond = c->in[0]->data;
  const char *a = c->in[1]->data, *b = c->in[2]->data;
  nc_tensor *o = c->out;
  size_t es = nc_dtype_size(o->dtype);
  int64_t n = nc_tensor_numel(o);
  for (int64_t i = 0; i < n; i++) memcpy((char *)o->data + (size_t)i * es, (cond[i] ? a : b) + (size_t)i * es, es);
  return NC_OK;
}

// ---- reductions -----------------------------------------------------------------------
// Iterates the input in row-major order; the output offset of each element
// is sum over kept axes of idx[d] * (output stride of d).
static void nc_reduce_strides(const nc_tensor *x, int64_t axes, int64_t *ost) {
  int64_t s = 1;
  for (int d = x->rank - 1; d >= 0; d--) {
    if (axes & (INT64_C(1) << d)) {
      ost[d] = 0;
    } else {
      ost[d] = s;
      s *= x->shape[d];
    }
  }
}

static nc_status nc_reduce(const nc_interp_call *c) {
  const nc_tensor *x = c->in[0];
  nc_tensor *o = c->out;
  nc_op op = c->n->op;
  int64_t axes = c->n->ia[0], n = nc_tensor_numel(x), no = nc_tensor_numel(o);
  int64_t ost[NC_MAX_RANK];
  nc_reduce_strides(x, axes, ost);
  nc_interp_iter it;
  nc_interp_iter_init(&it, x->rank, x->shape, ost);
  if (!nc_dtype_is_float(x->dtype)) {  // reduce_sum / reduce_max of ints: exact, wrapping
    int64_t *acc = malloc((size_t)no * sizeof *acc);
    if (!acc) return nc_errorf(NC_E_NOMEM, "out of memory");
    for (int64_t j = 0; j < no; j++) acc[j] = op == NC_OP_REDUCE_MAX ? INT64_MIN : 0;
    for (int64_t i = 0; i < n; i++, nc_interp_iter_next(&it)) {
      int64_t v = geti(x, i), *a = &acc[it.off];
      if (op == NC_OP_REDUCE_MAX) *a = v > *a ? v : *a;
      else *a = (int64_t)((uint64_t)*a + (uint64_t)v);
    }
    for (int64_t j = 0; j < no; j++) nc_interp_set_wrap(o->data, o->dtype, (size_t)j, acc[j]);
    free(acc);
    return NC_OK;
  }
  double *acc = malloc((size_t)no * sizeof *acc);
  if (!acc) return nc_errorf(NC_E_NOMEM, "out of memory");
  for (int64_t j = 0; j < no; j++) acc[j] = op == NC_OP_REDUCE_MAX ? -INFINITY : 0.0;
  for (int64_t i = 0; i < n; i++, nc_interp_iter_next(&it)) {
    double v = getf(x, i), *a = &acc[it.off];
    if (op == NC_OP_REDUCE_MAX) {
      if (isnan(v) || isnan(*a)) *a = NAN;
      else if (v > *a) *a = v;
    } else {
      *a += v;
    }
  }
  if (op == NC_OP_REDUCE_MEAN) {
    double cnt = (double)(n / no);
    for (int64_t j = 0; j < no; j++) acc[j] /= cnt;
  }
  nc_interp_store_f64(o, acc);
  free(acc);
  return NC_OK;
}

NC_INTERP_FN(REDUCE_SUM) { return nc_reduce(c); }
NC_INTERP_FN(REDUCE_MAX) { return nc_reduce(c); }
NC_INTERP_FN(REDUCE_MEAN) { return nc_reduce(c); }

// ---- contractions -----------------------------------------------------------------------
// C (M,N) = A (M,K) @ B (K,N), all row-major doubles; the k loop is outermost
// per row so the inner loop runs over contiguous n (and sums in k order).
static void nc_gemm(const double *a, const double *b, double *cm, int64_t m, int64_t k, int64_t n) {
  for (int64_t i = 0; i < m; i++) {
    double *crow = cm + i * n;
    for (int64_t j = 0; j < n; j++) crow[j] = 0.0;
    for (int64_t p = 0; p < k; p++) {
      double av = a[i * k + p];
      const double *brow = b + p * n;
      for (int64_t j = 0; j < n; j++) crow[j] += av * brow[j];
    }
  }
}

// dst (c,r) = src (r,c)ᵀ
static void nc_transpose(const double *src, double *dst, int64_t r, int64_t cols) {
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < cols; j++) dst[j * r + i] = src[i * cols + j];
}

// batch products of (m,k) and (k,n) slices; ta/tb say the stored slices are
// transposed. av/bv are the loaded inputs; result goes to out.
static nc_status nc_batched_gemm(const double *av, const double *bv, nc_tensor *out, int64_t batch, int64_t m,
                                 int64_t k, int64_t n, bool ta, bool tb, bool shared_b) {
  double *ta_buf = malloc((size_t)(m * k) * sizeof(double));
  double *tb_buf = malloc((size_t)(k * n) * sizeof(double));
  double *cv = malloc((size_t)(batch * m * n) * sizeof(double));
  nc_status st = NC_OK;
  if (!ta_buf || !tb_buf || !cv) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  for (int64_t bi = 0; bi < batch; bi++) {
    const double *a = av + bi * m * k, *b = bv + (shared_b ? 0 : bi * k * n);
    if (ta) {
      nc_transpose(a, ta_buf, k, m);
      a = ta_buf;
    }
    if (tb && (bi == 0 || !shared_b)) nc_transpose(b, tb_buf, n, k);
    if (tb) b = tb_buf;
    nc_gemm(a, b, cv + bi * m * n, m, k, n);
  }
  nc_interp_store_f64(out, cv);
done:
  free(ta_buf);
  free(tb_buf);
  free(cv);
  return st;
}

NC_INTERP_FN(MATMUL) {
  const nc_tensor *a = c->in[0], *b = c->in[1];
  bool ta = c->n->ia[0], tb = c->n->ia[1];
  int r = a->rank;
  int64_t k = ta ? a->shape[0] : a->shape[r - 1];
  int64_t n = tb ? b->shape[0] : b->shape[1];
  int64_t m = ta ? a->shape[1] : nc_tensor_numel(a) / k;  // leading dims fold into M
  double *av = NULL, *bv = NULL;
  nc_status st = nc_interp_load_f64(a, &av);
  if (!st) st = nc_interp_load_f64(b, &bv);
  if (!st) st = nc_batched_gemm(av, bv, c->out, 1, m, k, n, ta, tb, true);
  free(av);
  free(bv);
  return st;
}

NC_INTERP_FN(BMM) {
  const nc_tensor *a = c->in[0], *b = c->in[1];
  bool ta = c->n->ia[0], tb = c->n->ia[1];
  int r = a->rank;
  int64_t batch = 1;
  for (int d = 0; d < r - 2; d++) batch *= a->shape[d];
  int64_t m = ta ? a->shape[r - 1] : a->shape[r - 2], k = ta ? a->shape[r - 2] : a->shape[r - 1];
  int64_t n = tb ? b->shape[r - 2] : b->shape[r - 1];
  double *av = NULL, *bv = NULL;
  nc_status st = nc_interp_load_f64(a, &av);
  if (!st) st = nc_interp_load_f64(b, &bv);
  if (!st) st = nc_batched_gemm(av, bv, c->out, batch, m, k, n, ta, tb, false);
  free(av);
  free(bv);
  return st;
}

// ---- embeddings ----------------------------------------------------------------------------
NC_INTERP_FN(GATHER) {
  const nc_tensor *t = c->in[0], *ids = c->in[1];
  nc_tensor *o = c->out;
  int64_t v = t->shape[0], ch = t->shape[1], n = nc_tensor_numel(ids);
  size_t row = (size_t)ch * nc_dtype_size(t->dtype);
  for (int64_t i = 0; i < n; i++) {
    int64_t id = geti(ids, i);
    if (id < 0 || id >= v)
      return nc_errorf(NC_E_INVALID, "id %lld at position %lld is outside [0, %lld)", (long long)id, (long long)i,
                       (long long)v);
    memcpy((char *)o->data + (size_t)i * row, (const char *)t->data + (size_t)id * row, row);
  }
  return NC_OK;
}

NC_INTERP_FN(SCATTER_ADD) {
  const nc_tensor *ids = c->in[0], *src = c->in[1];
  nc_tensor *o = c->out;
  int64_t v = o->shape[0], ch = o->shape[1], n = nc_tensor_numel(ids);
  for (int64_t i = 0; i < n; i++) {
    int64_t id = geti(ids, i);
    if (id < 0 || id >= v)
      return nc_errorf(NC_E_INVALID, "id %lld at position %lld is outside [0, %lld)", (long long)id, (long long)i,
                       (long long)v);
  }
  if (!nc_dtype_is_float(o->dtype)) {
    int64_t *acc = calloc((size_t)(v * ch), sizeof *acc);
    if (!acc) return nc_errorf(NC_E_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
      int64_t *row = acc + geti(ids, i) * ch;
      for (int64_t j = 0; j < ch; j++) row[j] = (int64_t)((uint64_t)row[j] + (uint64_t)geti(src, i * ch + j));
    }
    for (int64_t j = 0; j < v * ch; j++) nc_interp_set_wrap(o->data, o->dtype, (size_t)j, acc[j]);
    free(acc);
    return NC_OK;
  }
  double *acc = calloc((size_t)(v * ch), sizeof *acc);
  if (!acc) return nc_errorf(NC_E_NOMEM, "out of memory");
  for (int64_t i = 0; i < n; i++) {
    double *row = acc + geti(ids, i) * ch;
    for (int64_t j = 0; j < ch; j++) row[j] += getf(src, i * ch + j);
  }
  nc_interp_store_f64(o, acc);
  free(acc);
  return NC_OK;
}
