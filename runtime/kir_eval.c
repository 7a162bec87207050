#include "runtime/kir_eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef union {
  double f;
  int64_t i;
} nc_kv;

typedef struct {
  const nc_kernel *k;
  void *const *bufs;
  const int64_t *args;
  int64_t vars[64];
  nc_kv accs[NC_KERNEL_MAX_ACCS];
} nc_ke;

static bool nc_isf(nc_dtype t) { return nc_dtype_is_float(t); }

// Rounds a double to the dtype's precision (what a typed register holds).
static double nc_round(double v, nc_dtype t) {
  if (t == NC_F32) return (double)(float)v;
  if (t == NC_BF16) return nc_bf16_to_f32(nc_f32_to_bf16((float)v));
  if (t == NC_F16) return nc_f16_to_f32(nc_f32_to_f16((float)v));
  return v;
}

static int64_t nc_wrap(int64_t v, nc_dtype t) {
  switch (t) {
    case NC_I32: return (int32_t)(uint32_t)(uint64_t)v;
    case NC_U8: return (uint8_t)(uint64_t)v;
    case NC_BOOL: return v != 0;
    default: return v;
  }
}

static nc_kv nc_ke_x(nc_ke *e, nc_kx xi) {
  const nc_kexpr *ex = &e->k->x[xi];
  nc_kv r = {0}, a, b;
  bool f = nc_isf(ex->dtype);
  switch (ex->kind) {
    case NC_KX_CONST:
      if (f) r.f = nc_round(ex->fval, ex->dtype);
      else r.i = ex->ival;
      return r;
    case NC_KX_ARG: r.i = e->args[ex->ival]; return r;
    case NC_KX_VAR: r.i = e->vars[ex->ival]; return r;
    case NC_KX_ACC: return e->accs[ex->ival];
    case NC_KX_LOAD: {
      int64_t i = nc_ke_x(e, ex->a).i;
      const void *buf = e->bufs[ex->ival];
      if (f) r.f = nc_elem_get(buf, ex->dtype, (size_t)i);
      else r.i = nc_elem_get_i64(buf, ex->dtype, (size_t)i);
      return r;
    }
    case NC_KX_CAST: {
      nc_dtype from = e->k->x[ex->a].dtype;
      a = nc_ke_x(e, ex->a);
      if (f) r.f = nc_round(nc_isf(from) ? a.f : (double)a.i, ex->dtype);
      else if (ex->dtype == NC_BOOL) r.i = nc_isf(from) ? a.f != 0 : a.i != 0;
      else if (nc_isf(from)) {
        double v = a.f;
        double lo = ex->dtype == NC_I32 ? -2147483648.0 : ex->dtype == NC_U8 ? 0 : -9223372036854775808.0;
        double hi = ex->dtype == NC_I32 ? 2147483647.0 : ex->dtype == NC_U8 ? 255 : 9223372036854774784.0;
        r.i = isnan(v) ? 0 : v <= lo ? (int64_t)lo : v >= hi ? (int64_t)hi : (int64_t)v;
      } else {
        r.i = nc_wrap(a.i, ex->dtype);
      }
      return r;
    }
    case NC_KX_SELECT: return nc_ke_x(e, ex->a).i ? nc_ke_x(e, ex->b) : nc_ke_x(e, ex->c);
    case NC_KX_UNARY:
      a = nc_ke_x(e, ex->a);
      if (f) {
        double v = a.f;
        switch (ex->op) {
          case NC_KOP_NEG: v = -v; break;
          case NC_KOP_ABS: v = fabs(v); break;
          case NC_KOP_RELU: v = v > 0 ? v : (isnan(v) ? v : 0); break;
          case NC_KOP_SQUARE: v = v * v; break;
          case NC_KOP_TANH: v = tanh(v); break;
          case NC_KOP_EXP: v = exp(v); break;
          case NC_KOP_LOG: v = log(v); break;
          case NC_KOP_SQRT: v = sqrt(v); break;
          case NC_KOP_RSQRT: v = 1.0 / sqrt(v); break;
          case NC_KOP_SIGMOID: v = 1.0 / (1.0 + exp(-v)); break;
          case NC_KOP_SIN: v = sin(v); break;
          case NC_KOP_COS: v = cos(v); break;
          case NC_KOP_POWC: v = pow(v, ex->fval); break;
          default: break;
        }
        r.f = nc_round(v, ex->dtype);
      } else {
        int64_t v = a.i;
        switch (ex->op) {
          case NC_KOP_NEG: v = (int64_t)(0 - (uint64_t)v); break;
          case NC_KOP_ABS: v = v < 0 ? (int64_t)(0 - (uint64_t)v) : v; break;
          case NC_KOP_RELU: v = v > 0 ? v : 0; break;
          case NC_KOP_SQUARE: v = (int64_t)((uint64_t)v * (uint64_t)v); break;
          case NC_KOP_NOT: v = !v; break;
          default: break;
        }
        r.i = nc_wrap(v, ex->dtype);
      }
      return r;
    case NC_KX_BINARY: {
      nc_dtype ot = e->k->x[ex->a].dtype;
      a = nc_ke_x(e, ex->a);
      b = nc_ke_x(e, ex->b);
      if (nc_isf(ot)) {
        double x = a.f, y = b.f, v = 0;
        switch (ex->op) {
          case NC_KOP_ADD: v = x + y; break;
          case NC_KOP_SUB: v = x - y; break;
          case NC_KOP_MUL: v = x * y; break;
          case NC_KOP_DIV: v = x / y; break;
          case NC_KOP_MAX: v = isnan(x) || isnan(y) ? NAN : x > y ? x : y; break;
          case NC_KOP_MIN: v = isnan(x) || isnan(y) ? NAN : x < y ? x : y; break;
          case NC_KOP_EQ: r.i = x == y; return r;
          case NC_KOP_NE: r.i = x != y; return r;
          case NC_KOP_LT: r.i = x < y; return r;
          case NC_KOP_LE: r.i = x <= y; return r;
          case NC_KOP_GT: r.i = x > y; return r;
          case NC_KOP_GE: r.i = x >= y; return r;
          default: break;
        }
        r.f = nc_round(v, ex->dtype);
      } else {
        int64_t x = a.i, y = b.i, v = 0;
        switch (ex->op) {
          case NC_KOP_ADD: v = (int64_t)((uint64_t)x + (uint64_t)y); break;
          case NC_KOP_SUB: v = (int64_t)((uint64_t)x - (uint64_t)y); break;
          case NC_KOP_MUL: v = (int64_t)((uint64_t)x * (uint64_t)y); break;
          case NC_KOP_DIV:
          case NC_KOP_IDIV: v = y ? x / y : 0; break;
          case NC_KOP_IMOD: v = y ? x % y : 0; break;
          case NC_KOP_MAX: v = x > y ? x : y; break;
          case NC_KOP_MIN: v = x < y ? x : y; break;
          case NC_KOP_AND: v = x && y; break;
          case NC_KOP_OR: v = x || y; break;
          case NC_KOP_EQ: v = x == y; break;
          case NC_KOP_NE: v = x != y; break;
          case NC_KOP_LT: v = x < y; break;
          case NC_KOP_LE: v = x <= y; break;
          case NC_KOP_GT: v = x > y; break;
          case NC_KOP_GE: v = x >= y; break;
          default: break;
        }
        r.i = nc_wrap(v, ex->dtype);
      }
      return r;
    }
  }
  return r;
}

// The matmul template: C[b] = op(A[b]) @ op(B[b]) (+ C when beta), f32 accumulation in double
// (the optional sym hint, arg 9, is ignored: every element is computed).
static void nc_ke_matmul(nc_ke *e, const nc_kstmt *s) {
  int64_t v[9];
  for (int i = 0; i < 9; i++) v[i] = nc_ke_x(e, s->args[i]).i;
  int64_t batch = v[0], M = v[1], N = v[2], K = v[3], sa = v[6], sb = v[7];
  bool ta = v[4], tb = v[5], beta = v[8];
  if (e->k->bufs[s->cbufs[0]].dtype == NC_BF16) {  // bf16 buffers (the bf16 model): sums in double, C rounded once
    void *Ab = e->bufs[s->cbufs[0]], *Bb = e->bufs[s->cbufs[1]], *Cb = e->bufs[s->cbufs[2]];
    for (int64_t q = 0; q < batch; q++)
      for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
          size_t ci = (size_t)(q * M * N + m * N + n);
          double acc = beta ? nc_elem_get(Cb, NC_BF16, ci) : 0;
          for (int64_t kk = 0; kk < K; kk++)
            acc += nc_elem_get(Ab, NC_BF16, (size_t)(ta ? q * sa + kk * M + m : q * sa + m * K + kk)) *
                   nc_elem_get(Bb, NC_BF16, (size_t)(tb ? q * sb + n * K + kk : q * sb + kk * N + n));
          nc_elem_set(Cb, NC_BF16, ci, acc);
        }
    return;
  }
  // arg 10: the ReLU^2 epilogue (over C, or into D with a fourth buffer)
  bool relu2 = s->nargs > 10 && nc_ke_x(e, s->args[10]).i == 1;
  // arg 10 == 2: C = alpha * product + beta * E (args 11, 12; E the fourth buffer)
  bool addend = s->nargs > 12 && nc_ke_x(e, s->args[10]).i == 2 && s->ncbufs > 3;
  double alpha = addend ? nc_ke_x(e, s->args[11]).f : 1, beta_e = addend ? nc_ke_x(e, s->args[12]).f : 0;
  const float *E = addend ? e->bufs[s->cbufs[3]] : NULL;
  const float *A = e->bufs[s->cbufs[0]], *B = e->bufs[s->cbufs[1]];
  float *C = e->bufs[s->cbufs[2]], *D = relu2 && s->ncbufs > 3 ? e->bufs[s->cbufs[3]] : NULL;
  for (int64_t q = 0; q < batch; q++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        double acc = beta ? C[q * M * N + m * N + n] : 0;
        for (int64_t kk = 0; kk < K; kk++) {
          float a = ta ? A[q * sa + kk * M + m] : A[q * sa + m * K + kk];
          float b = tb ? B[q * sb + n * K + kk] : B[q * sb + kk * N + n];
          acc += (double)a * b;
        }
        float c = (float)acc;
        if (addend) c = (float)((double)(float)(alpha * (double)c) + beta_e * E[q * M * N + m * N + n]);
        if (relu2) {  // as the interpreter: relu(c) exact, its square rounded once
          double r = c > 0 ? (double)c : isnan(c) ? (double)c : 0.0;
          (D ? D : C)[q * M * N + m * N + n] = (float)(r * r);
          if (D) C[q * M * N + m * N + n] = c;
        } else {
          C[q * M * N + m * N + n] = c;
        }
      }
}

static void nc_ke_s(nc_ke *e, nc_ks s) {
  for (; s != NC_KS_NONE; s = e->k->s[s].next) {
    const nc_kstmt *t = &e->k->s[s];
    switch (t->kind) {
      case NC_KS_FOR: {
        int64_t b = nc_ke_x(e, t->begin).i, end = nc_ke_x(e, t->end).i;
        for (int64_t i = b; i < end; i++) {
          e->vars[t->var] = i;
          nc_ke_s(e, t->body);
        }
        break;
      }
      case NC_KS_STORE: {
        int64_t i = nc_ke_x(e, t->index).i;
        nc_kv v = nc_ke_x(e, t->value);
        nc_dtype dt = e->k->bufs[t->buf].dtype;
        if (nc_isf(dt)) nc_elem_set(e->bufs[t->buf], dt, (size_t)i, v.f);
        else nc_elem_set_i64(e->bufs[t->buf], dt, (size_t)i, v.i);
        break;
      }
      case NC_KS_ACC_INIT: e->accs[t->acc] = nc_ke_x(e, t->value); break;
      case NC_KS_ACC_UPDATE: {
        nc_kv v = nc_ke_x(e, t->value), *a = &e->accs[t->acc];
        nc_dtype dt = e->k->accs[t->acc];
        if (nc_isf(dt)) {
          if (t->op == NC_KOP_MAX) a->f = isnan(a->f) || isnan(v.f) ? NAN : a->f > v.f ? a->f : v.f;
          else a->f = nc_round(a->f + v.f, dt);
        } else {
          a->i = t->op == NC_KOP_MAX ? (a->i > v.i ? a->i : v.i) : nc_wrap((int64_t)((uint64_t)a->i + (uint64_t)v.i), dt);
        }
        break;
      }
      case NC_KS_CALL:
        if (t->tmpl == NC_KT_MATMUL) nc_ke_matmul(e, t);
        break;
    }
  }
}

nc_status nc_kernel_eval(const nc_kernel *k, void *const *bufs, const int64_t *args) {
  NC_TRY(nc_kernel_verify(k));
  if (k->nvars > 64) return nc_errorf(NC_E_UNSUPPORTED, "kernel %s: more than 64 loop variables", k->name);
  nc_ke *e = calloc(1, sizeof *e);
  if (!e) return nc_errorf(NC_E_NOMEM, "out of memory");
  e->k = k;
  e->bufs = bufs;
  e->args = args;
  nc_ke_s(e, k->body);
  free(e);
  return NC_OK;
}

int64_t nc_kernel_eval_index(const nc_kernel *k, nc_kx x, const int64_t *args) {
  nc_ke e;
  memset(&e, 0, sizeof e);
  e.k = k;
  e.args = args;
  return nc_ke_x(&e, x).i;
}
