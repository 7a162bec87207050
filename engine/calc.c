// The calculator tool (engine/calc.h): nanochat's use_calculator filters,
// then a recursive-descent evaluator of the Python subset they admit.
//
//   expr    := term (('+' | '-') term)*
//   term    := unary (('*' | '/' | '//') unary)*
//   unary   := ('+' | '-') unary | postfix
//   postfix := atom ('.count' '(' expr ')')*
//   atom    := NUMBER | STRING | '(' expr ')'
#include "engine/calc.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NC_CALC_MAX_DEPTH 100
#define NC_CALC_MAX_LEN 10000

typedef enum { NC_CV_INT, NC_CV_FLOAT, NC_CV_STR } nc_cv_kind;

typedef struct {
  nc_cv_kind kind;
  int64_t i;
  double f;
  const char *s;  // into the expression (no escapes are possible)
  size_t n;
} nc_cv;

typedef struct {
  const char *p, *end;
  int depth;
} nc_cp;

static void nc_cp_ws(nc_cp *c) {
  while (c->p < c->end && *c->p == ' ') c->p++;
}

static bool nc_cp_eat(nc_cp *c, const char *tok) {
  nc_cp_ws(c);
  size_t n = strlen(tok);
  if ((size_t)(c->end - c->p) >= n && !memcmp(c->p, tok, n)) {
    c->p += n;
    return true;
  }
  return false;
}

static nc_status nc_calc_expr(nc_cp *c, nc_cv *out);

static double nc_cv_num(const nc_cv *v) { return v->kind == NC_CV_INT ? (double)v->i : v->f; }

// A Python number literal: digits [. digits] | . digits (no exponents: 'e' is refused).
static nc_status nc_calc_number(nc_cp *c, nc_cv *out) {
  const char *s = c->p;
  size_t nd = 0, nf = 0;
  while (c->p < c->end && isdigit((unsigned char)*c->p)) c->p++, nd++;
  bool dot = c->p < c->end && *c->p == '.';
  if (dot) {
    c->p++;
    while (c->p < c->end && isdigit((unsigned char)*c->p)) c->p++, nf++;
  }
  if (nd + nf == 0) return nc_errorf(NC_E_PARSE, "calc: expected a number at '%.*s'", (int)(c->end - s), s);
  char buf[512];
  size_t len = (size_t)(c->p - s);
  if (!dot) {
    bool zeros = true;
    for (size_t i = 0; i < nd; i++) zeros &= s[i] == '0';
    if (nd > 1 && s[0] == '0' && !zeros)
      return nc_errorf(NC_E_PARSE, "calc: leading zeros in the integer '%.*s'", (int)len, s);
    int64_t v = 0;
    for (size_t i = 0; i < nd; i++)
      if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[i] - '0', &v))
        return nc_errorf(NC_E_UNSUPPORTED, "calc: the integer '%.*s' does not fit 64 bits", (int)(len > 40 ? 40 : len), s);
    out->kind = NC_CV_INT;
    out->i = v;
    return NC_OK;
  }
  out->kind = NC_CV_FLOAT;
  if (len < sizeof buf) {
    memcpy(buf, s, len);
    buf[len] = 0;
    out->f = strtod(buf, NULL);
  } else {
    char *tmp = malloc(len + 1);
    if (!tmp) return nc_errorf(NC_E_NOMEM, "out of memory");
    memcpy(tmp, s, len);
    tmp[len] = 0;
    out->f = strtod(tmp, NULL);
    free(tmp);
  }
  return NC_OK;
}

static nc_status nc_calc_atom(nc_cp *c, nc_cv *out) {
  nc_cp_ws(c);
  if (c->p >= c->end) return nc_errorf(NC_E_PARSE, "calc: unexpected end of the expression");
  char ch = *c->p;
  if (ch == '(') {
    if (++c->depth > NC_CALC_MAX_DEPTH) return nc_errorf(NC_E_UNSUPPORTED, "calc: nested deeper than %d", NC_CALC_MAX_DEPTH);
    c->p++;
    NC_TRY(nc_calc_expr(c, out));
    if (!nc_cp_eat(c, ")")) return nc_errorf(NC_E_PARSE, "calc: missing ')'");
    c->depth--;
    return NC_OK;
  }
  if (ch == '\'' || ch == '"') {
    const char *q = memchr(c->p + 1, ch, (size_t)(c->end - c->p - 1));
    if (!q) return nc_errorf(NC_E_PARSE, "calc: unterminated string");
    out->kind = NC_CV_STR;
    out->s = c->p + 1;
    out->n = (size_t)(q - c->p - 1);
    c->p = q + 1;
    return NC_OK;
  }
  if (isdigit((unsigned char)ch) || ch == '.') return nc_calc_number(c, out);
  return nc_errorf(NC_E_PARSE, "calc: unexpected '%c'", ch);
}

static int64_t nc_str_count(const char *s, size_t n, const char *sub, size_t m) {
  if (m == 0) return (int64_t)n + 1;  // Python: len + 1
  int64_t k = 0;
  for (size_t i = 0; i + m <= n;) {
    if (!memcmp(s + i, sub, m)) {
      k++;
      i += m;
    } else {
      i++;
    }
  }
  return k;
}

static nc_status nc_calc_postfix(nc_cp *c, nc_cv *out) {
  NC_TRY(nc_calc_atom(c, out));
  for (;;) {
    nc_cp_ws(c);
    if (!(c->end - c->p >= 6 && !memcmp(c->p, ".count", 6))) return NC_OK;
    c->p += 6;
    if (!nc_cp_eat(c, "(")) return nc_errorf(NC_E_PARSE, "calc: .count wants '('");
    if (++c->depth > NC_CALC_MAX_DEPTH) return nc_errorf(NC_E_UNSUPPORTED, "calc: nested deeper than %d", NC_CALC_MAX_DEPTH);
    nc_cv arg;
    NC_TRY(nc_calc_expr(c, &arg));
    if (!nc_cp_eat(c, ")")) return nc_errorf(NC_E_PARSE, "calc: missing ')' after the .count argument");
    c->depth--;
    if (out->kind != NC_CV_STR) return nc_errorf(NC_E_TYPE, "calc: .count on a number");
    if (arg.kind != NC_CV_STR) return nc_errorf(NC_E_TYPE, "calc: .count wants a string argument");
    int64_t k = nc_str_count(out->s, out->n, arg.s, arg.n);
    out->kind = NC_CV_INT;
    out->i = k;
  }
}

static nc_status nc_calc_unary(nc_cp *c, nc_cv *out) {
  nc_cp_ws(c);
  if (c->p < c->end && (*c->p == '-' || *c->p == '+')) {
    bool neg = *c->p == '-';
    c->p++;
    if (++c->depth > NC_CALC_MAX_DEPTH) return nc_errorf(NC_E_UNSUPPORTED, "calc: nested deeper than %d", NC_CALC_MAX_DEPTH);
    NC_TRY(nc_calc_unary(c, out));
    c->depth--;
    if (out->kind == NC_CV_STR) return nc_errorf(NC_E_TYPE, "calc: unary %c on a string", neg ? '-' : '+');
    if (neg) {
      if (out->kind == NC_CV_INT) {
        if (out->i == INT64_MIN) return nc_errorf(NC_E_UNSUPPORTED, "calc: integer overflow");
        out->i = -out->i;
      } else {
        out->f = -out->f;
      }
    }
    return NC_OK;
  }
  return nc_calc_postfix(c, out);
}

// Python's float floor division (floatobject.c float_floor_div).
static double nc_py_floordiv(double vx, double wx) {
  double mod = fmod(vx, wx), div = (vx - mod) / wx;
  if (mod) {
    if ((wx < 0) != (mod < 0)) div -= 1.0;
  }
  double fl;
  if (div) {
    fl = floor(div);
    if (div - fl > 0.5) fl += 1.0;
  } else {
    fl = copysign(0.0, vx / wx);
  }
  return fl;
}

static nc_status nc_calc_binop(char op, bool floordiv, nc_cv *a, const nc_cv *b) {
  if (a->kind == NC_CV_STR || b->kind == NC_CV_STR)
    return nc_errorf(NC_E_TYPE, "calc: arithmetic on a string");
  bool ints = a->kind == NC_CV_INT && b->kind == NC_CV_INT;
  if (op == '/') {
    if (nc_cv_num(b) == 0) return nc_errorf(NC_E_INVALID, "calc: division by zero");
    if (floordiv && ints) {
      if (a->i == INT64_MIN && b->i == -1) return nc_errorf(NC_E_UNSUPPORTED, "calc: integer overflow");
      int64_t q = a->i / b->i, r = a->i % b->i;
      if (r != 0 && ((r < 0) != (b->i < 0))) q--;
      a->i = q;
      return NC_OK;
    }
    double x = nc_cv_num(a), y = nc_cv_num(b);
    a->kind = NC_CV_FLOAT;
    a->f = floordiv ? nc_py_floordiv(x, y) : x / y;
    return NC_OK;
  }
  if (ints) {
    bool ovf = op == '+' ? __builtin_add_overflow(a->i, b->i, &a->i)
             : op == '-' ? __builtin_sub_overflow(a->i, b->i, &a->i)
                         : __builtin_mul_overflow(a->i, b->i, &a->i);
    if (ovf) return nc_errorf(NC_E_UNSUPPORTED, "calc: integer overflow (results are 64-bit)");
    return NC_OK;
  }
  double x = nc_cv_num(a), y = nc_cv_num(b);
  a->kind = NC_CV_FLOAT;
  a->f = op == '+' ? x + y : op == '-' ? x - y : x * y;
  return NC_OK;
}

static nc_status nc_calc_term(nc_cp *c, nc_cv *out) {
  NC_TRY(nc_calc_unary(c, out));
  for (;;) {
    nc_cp_ws(c);
    if (c->p >= c->end || (*c->p != '*' && *c->p != '/')) return NC_OK;
    char op = *c->p++;
    bool fd = false;
    if (op == '/' && c->p < c->end && *c->p == '/') c->p++, fd = true;
    nc_cv b;
    NC_TRY(nc_calc_unary(c, &b));
    NC_TRY(nc_calc_binop(op, fd, out, &b));
  }
}

static nc_status nc_calc_expr(nc_cp *c, nc_cv *out) {
  NC_TRY(nc_calc_term(c, out));
  for (;;) {
    nc_cp_ws(c);
    if (c->p >= c->end || (*c->p != '+' && *c->p != '-')) return NC_OK;
    char op = *c->p++;
    nc_cv b;
    NC_TRY(nc_calc_term(c, &b));
    NC_TRY(nc_calc_binop(op, false, out, &b));
  }
}

// Python's repr of a float: the shortest digits that round-trip, fixed
// notation for decimal exponents -4..15, else d.ddde+XX.
static void nc_py_float_repr(double v, nc_buf *out) {
  if (isnan(v)) {
    nc_buf_puts(out, "nan");
    return;
  }
  if (isinf(v)) {
    nc_buf_puts(out, v < 0 ? "-inf" : "inf");
    return;
  }
  if (v == 0) {
    nc_buf_puts(out, signbit(v) ? "-0.0" : "0.0");
    return;
  }
  char e[40];
  int prec;
  for (prec = 1; prec <= 17; prec++) {
    snprintf(e, sizeof e, "%.*e", prec - 1, v);
    if (strtod(e, NULL) == v) break;
  }
  // e = [-]d[.ddd]e[+-]XX
  const char *p = e;
  bool neg = *p == '-';
  if (neg) p++;
  char digits[24];
  int nd = 0;
  for (; *p && *p != 'e'; p++)
    if (isdigit((unsigned char)*p)) digits[nd++] = *p;
  while (nd > 1 && digits[nd - 1] == '0') nd--;
  int exp10 = atoi(p + 1);
  if (neg) nc_buf_puts(out, "-");
  if (exp10 >= -4 && exp10 < 16) {
    if (exp10 >= 0) {
      for (int i = 0; i <= exp10; i++) nc_buf_put(out, i < nd ? &digits[i] : "0", 1);
      nc_buf_puts(out, ".");
      if (nd > exp10 + 1) nc_buf_put(out, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
      else nc_buf_puts(out, "0");
    } else {
      nc_buf_puts(out, "0.");
      for (int i = 0; i < -exp10 - 1; i++) nc_buf_puts(out, "0");
      nc_buf_put(out, digits, (size_t)nd);
    }
  } else {
    nc_buf_put(out, digits, 1);
    if (nd > 1) {
      nc_buf_puts(out, ".");
      nc_buf_put(out, digits + 1, (size_t)(nd - 1));
    }
    nc_buf_printf(out, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
  }
}

static bool nc_all_in(const char *s, size_t n, const char *set) {
  for (size_t i = 0; i < n; i++)
    if (!s[i] || !strchr(set, s[i])) return false;
  return true;
}

nc_status nc_calc_eval(const char *expr, size_t n, nc_buf *out) {
  if (n > NC_CALC_MAX_LEN) return nc_errorf(NC_E_UNSUPPORTED, "calc: expression of %zu bytes (at most %d)", n, NC_CALC_MAX_LEN);
  char *e = malloc(n + 1);
  if (!e) return nc_errorf(NC_E_NOMEM, "out of memory");
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (expr[i] != ',') e[m++] = expr[i];
  e[m] = 0;
  nc_status st = NC_OK;
  if (nc_all_in(e, m, "0123456789*+-/.() ")) {
    if (strstr(e, "**")) st = nc_errorf(NC_E_UNSUPPORTED, "calc: the power operator ** is not allowed");
  } else if (!nc_all_in(e, m, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'\"()._ ")) {
    st = nc_errorf(NC_E_UNSUPPORTED, "calc: characters outside arithmetic and string .count() expressions");
  } else {
    static const char *const bad[] = {"__", "import", "exec", "eval", "compile", "open", "file", "input", "raw_input",
                                      "globals", "locals", "vars", "dir", "getattr", "setattr", "delattr", "hasattr"};
    char *low = malloc(m + 1);
    if (!low) st = nc_errorf(NC_E_NOMEM, "out of memory");
    for (size_t i = 0; low && i <= m; i++) low[i] = (char)tolower((unsigned char)e[i]);
    for (size_t k = 0; low && !st && k < sizeof bad / sizeof bad[0]; k++)
      if (strstr(low, bad[k])) st = nc_errorf(NC_E_UNSUPPORTED, "calc: '%s' is not allowed", bad[k]);
    free(low);
    if (!st && !strstr(e, ".count(")) st = nc_errorf(NC_E_UNSUPPORTED, "calc: only .count() string expressions are allowed");
  }
  nc_cv v = {0};
  if (!st) {
    nc_cp c = {e, e + m, 0};
    st = nc_calc_expr(&c, &v);
    nc_cp_ws(&c);
    if (!st && c.p != c.end) st = nc_errorf(NC_E_PARSE, "calc: unexpected '%.20s'", c.p);
    if (!st && v.kind == NC_CV_STR) st = nc_errorf(NC_E_TYPE, "calc: the result is a string, not a number");
  }
  if (!st) {
    if (v.kind == NC_CV_INT) nc_buf_printf(out, "%lld", (long long)v.i);
    else nc_py_float_repr(v.f, out);
  }
  free(e);
  return st;
}
