// Shared pieces of the IR dump formats: printing of dims/types/strings/
// attribute values, the lexer of the text IR and the value parsers that the
// text and XML readers share. See ir/irfmt.h and docs/ir-format.md.
//
// The lexer never recurses and never reads past src + len: every input
// (truncated, NUL bytes, invalid UTF-8, absurd numbers) ends in a status.
#include "ir/irfmt.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/rules.h"

#define NC_MAX_NUMBER_CHARS 100

// ---- printing ----------------------------------------------------------------
void nc_fmt_dim(nc_buf *b, const nc_graph *g, nc_dim d) {
  bool any = false;
  if (d.c != 1 || d.e == 0) {
    nc_buf_printf(b, "%lld", (long long)d.c);
    any = true;
  }
  for (int k = 0; k < NC_MAX_SYMS; k++) {
    unsigned ek = (unsigned)(d.e >> (4 * k)) & 15;
    if (!ek) continue;
    const char *nm = g ? nc_graph_sym_name(g, k) : NULL;
    nc_buf_printf(b, "%s%s", any ? "*" : "", nm ? nm : "?");
    if (ek > 1) nc_buf_printf(b, "^%u", ek);
    any = true;
  }
}

void nc_fmt_type(nc_buf *b, const nc_graph *g, const nc_type *t) {
  nc_buf_printf(b, "%s[", nc_dtype_name(t->dtype));
  for (int i = 0; i < t->rank && i < NC_MAX_RANK; i++) {
    if (i) nc_buf_puts(b, ",");
    nc_fmt_dim(b, g, t->dim[i]);
  }
  nc_buf_puts(b, "]");
}

// Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not valid.
size_t nc_utf8_seq(const unsigned char *s, size_t n) {
  size_t len = s[0] < 0x80 ? 1 : s[0] >= 0xC2 && s[0] <= 0xDF ? 2 : s[0] >= 0xE0 && s[0] <= 0xEF ? 3
             : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : 0;
  if (!len || len > n) return 0;
  return nc_utf8_invalid_at((const char *)s, len) < 0 ? len : 0;
}

void nc_fmt_qstring(nc_buf *b, const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  nc_buf_puts(b, "\"");
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c == '"') nc_buf_puts(b, "\\\"");
    else if (c == '\\') nc_buf_puts(b, "\\\\");
    else if (c == '\n') nc_buf_puts(b, "\\n");
    else if (c == '\t') nc_buf_puts(b, "\\t");
    else if (c < 0x20 || c == 0x7f) nc_buf_printf(b, "\\x%02X", c);
    else if (c < 0x80) nc_buf_put(b, &s[i], 1);
    else {
      size_t len = nc_utf8_seq(s + i, n - i);
      if (!len) {
        nc_buf_printf(b, "\\x%02X", c);  // invalid UTF-8: keep the byte, escaped
      } else {
        nc_buf_put(b, s + i, len);
        i += len;
        continue;
      }
    }
    i++;
  }
  nc_buf_puts(b, "\"");
}

void nc_fmt_attr_value(nc_buf *b, const nc_graph *g, const nc_node *n, const nc_attr_spec *spec,
                       bool quote) {
  int64_t v = spec->type == NC_ATTR_FLOAT ? 0 : n->ia[spec->slot];
  switch (spec->type) {
    case NC_ATTR_INT: nc_buf_printf(b, "%lld", (long long)v); break;
    case NC_ATTR_FLOAT: {
      char f[32];
      nc_fmt_double(f, n->fa[spec->slot]);
      nc_buf_puts(b, f);
      break;
    }
    case NC_ATTR_BOOL: nc_buf_puts(b, v ? "true" : "false"); break;
    case NC_ATTR_ENUM:
      if (v >= 0 && v < spec->nenum) nc_buf_puts(b, spec->enums[v]);
      else nc_buf_printf(b, "%lld", (long long)v);  // unreachable for verified graphs
      break;
    case NC_ATTR_AXES: {
      nc_buf_puts(b, "[");
      bool first = true;
      for (int k = 0; k < 63; k++)
        if ((uint64_t)v & (1ull << k)) {
          nc_buf_printf(b, "%s%d", first ? "" : ",", k);
          first = false;
        }
      nc_buf_puts(b, "]");
      break;
    }
    case NC_ATTR_PERM: {
      nc_buf_puts(b, "[");
      int r = nc_perm_rank(v);
      for (int i = 0; i < r && i < 15; i++) nc_buf_printf(b, "%s%d", i ? "," : "", nc_perm_at(v, i));
      nc_buf_puts(b, "]");
      break;
    }
    case NC_ATTR_STR: {
      const char *s = nc_graph_str(g, v);
      if (!s) s = "";
      if (quote) nc_fmt_qstring(b, s, strlen(s));
      else nc_buf_puts(b, s);
      break;
    }
  }
}

// ---- lexer -----------------------------------------------------------------------
nc_status nc_lex_error_at(const nc_lexer *lx, const nc_tok *t, nc_code code, const char *fmt, ...) {
  if (!t) t = &lx->tok;
  va_list ap;
  va_start(ap, fmt);
  nc_status st = nc_verrorf(code, fmt, ap);
  va_end(ap);
  const char *file = lx->file ? lx->file : "<input>";
  if (lx->xml_line > 0) {
    char ctx[200];
    snprintf(ctx, sizeof ctx, "%s", lx->ctx ? lx->ctx : "value");
    st = nc_status_prefix(st, "%s:%d: %s, column %d: ", file, lx->xml_line, ctx, t->col);
  } else {
    st = nc_status_prefix(st, "%s:%d:%d: ", file, t->line, t->col);
  }
  return st;
}

// Describes the code point at s (valid UTF-8 guaranteed by nc_lex_init).
static void nc_describe_char(const char *s, size_t n, char *out, size_t on) {
  unsigned char c = (unsigned char)s[0];
  if (c >= 0x21 && c < 0x7f) snprintf(out, on, "'%c'", c);
  else if (c < 0x80) snprintf(out, on, "byte 0x%02X", c);
  else {
    size_t len = nc_utf8_seq((const unsigned char *)s, n);
    snprintf(out, on, "'%.*s'", (int)(len ? len : 1), s);
  }
}

void nc_tok_describe(const nc_tok *t, char *out, size_t n) {
  int k = t->n > 32 ? 32 : (int)t->n;
  const char *more = t->n > 32 ? "..." : "";
  switch (t->kind) {
    case NC_TK_EOF: snprintf(out, n, "end of input"); break;
    case NC_TK_IDENT: snprintf(out, n, "'%.*s%s'", k, t->p, more); break;
    case NC_TK_LABEL: snprintf(out, n, "label %%%.*s%s", k, t->p, more); break;
    case NC_TK_INT:
    case NC_TK_FLOAT: snprintf(out, n, "number %.*s%s", k, t->p, more); break;
    case NC_TK_STRING: snprintf(out, n, "a string"); break;
    case NC_TK_PUNCT: snprintf(out, n, "'%c'", t->p[0]); break;
  }
}

static void nc_lex_advance(nc_lexer *lx, size_t k) {
  for (size_t i = 0; i < k && lx->pos < lx->len; i++) {
    unsigned char c = (unsigned char)lx->src[lx->pos++];
    if (c == '\n') {
      lx->line++;
      lx->col = 1;
    } else if ((c & 0xC0) != 0x80) {
      lx->col++;
    }
  }
}

static int nc_lex_peek(const nc_lexer *lx, size_t k) {
  return lx->pos + k < lx->len ? (unsigned char)lx->src[lx->pos + k] : -1;
}

static bool nc_is_alpha(int c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static bool nc_is_digit(int c) { return c >= '0' && c <= '9'; }
static int nc_hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static nc_status nc_lex_string(nc_lexer *lx) {
  nc_tok *t = &lx->tok;
  t->kind = NC_TK_STRING;
  lx->str.len = 0;
  if (lx->str.data) lx->str.data[0] = 0;
  nc_lex_advance(lx, 1);  // opening quote
  for (;;) {
    int c = nc_lex_peek(lx, 0);
    if (c < 0) return nc_lex_error_at(lx, t, NC_E_PARSE, "unterminated string (missing closing '\"')");
    if (c == '"') {
      nc_lex_advance(lx, 1);
      break;
    }
    nc_tok here = {NC_TK_STRING, lx->src + lx->pos, 1, lx->line, lx->col};
    if (c == '\n' || c == '\r')
      return nc_lex_error_at(lx, &here, NC_E_PARSE, "line break inside a string (write \\n)");
    if (c < 0x20 && c != '\t')
      return nc_lex_error_at(lx, &here, NC_E_PARSE, "control byte 0x%02X inside a string (write \\x%02X)", c, c);
    if (c != '\\') {
      char ch = (char)c;
      nc_buf_put(&lx->str, &ch, 1);
      nc_lex_advance(lx, 1);
      continue;
    }
    int e = nc_lex_peek(lx, 1);
    char out;
    size_t used = 2;
    if (e == '"') out = '"';
    else if (e == '\\') out = '\\';
    else if (e == 'n') out = '\n';
    else if (e == 't') out = '\t';
    else if (e == 'r') out = '\r';
    else if (e == 'x') {
      int h1 = nc_hexval(nc_lex_peek(lx, 2)), h2 = nc_hexval(nc_lex_peek(lx, 3));
      if (h1 < 0 || h2 < 0) return nc_lex_error_at(lx, &here, NC_E_PARSE, "\\x must be followed by two hex digits");
      if (h1 == 0 && h2 == 0) return nc_lex_error_at(lx, &here, NC_E_PARSE, "\\x00 (NUL) is not allowed in strings");
      out = (char)(h1 * 16 + h2);
      used = 4;
    } else if (e < 0) {
      return nc_lex_error_at(lx, t, NC_E_PARSE, "unterminated string (missing closing '\"')");
    } else {
      char d[32];
      nc_describe_char(lx->src + lx->pos + 1, lx->len - lx->pos - 1, d, sizeof d);
      return nc_lex_error_at(lx, &here, NC_E_PARSE, "unknown escape \\ followed by %s (use \\\" \\\\ \\n \\t \\r or \\xHH)", d);
    }
    nc_buf_put(&lx->str, &out, 1);
    nc_lex_advance(lx, used);
  }
  if (lx->str.oom) return nc_errorf(NC_E_NOMEM, "out of memory reading a string");
  if (!lx->str.data) nc_buf_puts(&lx->str, "");
  t->n = (size_t)(lx->src + lx->pos - t->p);
  return NC_OK;
}

nc_status nc_lex_next(nc_lexer *lx) {
  // skip blanks and comments
  for (;;) {
    int c = nc_lex_peek(lx, 0);
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') nc_lex_advance(lx, 1);
    else if (c == '/' && nc_lex_peek(lx, 1) == '/') {
      while (lx->pos < lx->len && lx->src[lx->pos] != '\n') nc_lex_advance(lx, 1);
    } else break;
  }
  nc_tok *t = &lx->tok;
  t->p = lx->src + lx->pos;
  t->n = 0;
  t->line = lx->line;
  t->col = lx->col;
  int c = nc_lex_peek(lx, 0);
  if (c < 0) {
    t->kind = NC_TK_EOF;
    return NC_OK;
  }
  if (c == '"') return nc_lex_string(lx);
  if (nc_is_alpha(c)) {
    size_t k = 1;
    while (nc_is_alpha(nc_lex_peek(lx, k)) || nc_is_digit(nc_lex_peek(lx, k))) k++;
    t->kind = NC_TK_IDENT;
    t->n = k;
    nc_lex_advance(lx, k);
    return NC_OK;
  }
  if (c == '%') {
    size_t k = 1;
    for (int d; (d = nc_lex_peek(lx, k)) >= 0 && (nc_is_alpha(d) || nc_is_digit(d) || d == '.');) k++;
    if (k == 1) return nc_lex_error_at(lx, t, NC_E_PARSE, "expected a label name after '%%'");
    t->kind = NC_TK_LABEL;
    t->p++;
    t->n = k - 1;
    nc_lex_advance(lx, k);
    return NC_OK;
  }
  if (nc_is_digit(c)) {
    size_t k = 1;
    bool isfloat = false;
    while (nc_is_digit(nc_lex_peek(lx, k))) k++;
    if (nc_lex_peek(lx, k) == '.') {
      isfloat = true;
      k++;
      while (nc_is_digit(nc_lex_peek(lx, k))) k++;
    }
    int e = nc_lex_peek(lx, k);
    if (e == 'e' || e == 'E') {
      size_t j = k + 1;
      if (nc_lex_peek(lx, j) == '+' || nc_lex_peek(lx, j) == '-') j++;
      if (nc_is_digit(nc_lex_peek(lx, j))) {
        while (nc_is_digit(nc_lex_peek(lx, j))) j++;
        k = j;
        isfloat = true;
      }
    }
    t->kind = isfloat ? NC_TK_FLOAT : NC_TK_INT;
    t->n = k;
    int after = nc_lex_peek(lx, k);
    if (nc_is_alpha(after) || after == '.')
      return nc_lex_error_at(lx, t, NC_E_PARSE, "malformed number '%.*s%c'", (int)(k > 40 ? 40 : k), t->p, after);
    if (k > NC_MAX_NUMBER_CHARS)
      return nc_lex_error_at(lx, t, NC_E_PARSE, "number literal longer than %d characters", NC_MAX_NUMBER_CHARS);
    nc_lex_advance(lx, k);
    return NC_OK;
  }
  if (strchr("(){}[],=:*^-", c)) {
    t->kind = NC_TK_PUNCT;
    t->n = 1;
    nc_lex_advance(lx, 1);
    return NC_OK;
  }
  char d[32];
  nc_describe_char(t->p, lx->len - lx->pos, d, sizeof d);
  return nc_lex_error_at(lx, t, NC_E_PARSE, "unexpected character %s", d);
}

static void nc_lex_setup(nc_lexer *lx, const char *src, size_t len, const char *file) {
  memset(lx, 0, sizeof *lx);
  lx->src = src ? src : "";
  lx->len = src ? len : 0;
  lx->line = lx->col = 1;
  lx->file = file ? file : "<input>";
  nc_buf_init(&lx->str);
}

// Finds the first NUL or invalid UTF-8 byte and reports its line:col; then
// reads the first token.
static nc_status nc_lex_start(nc_lexer *lx) {
  const char *nul = memchr(lx->src, 0, lx->len);
  size_t limit = nul ? (size_t)(nul - lx->src) : lx->len;
  long bad = nc_utf8_invalid_at(lx->src, limit);
  if (bad >= 0 || nul) {
    size_t at = bad >= 0 ? (size_t)bad : limit;
    nc_lex_advance(lx, at);
    nc_tok t = {NC_TK_EOF, lx->src + at, 1, lx->line, lx->col};
    if (bad >= 0)
      return nc_lex_error_at(lx, &t, NC_E_PARSE, "invalid UTF-8 (byte 0x%02X)", (unsigned char)lx->src[at]);
    return nc_lex_error_at(lx, &t, NC_E_PARSE, "NUL byte in the input");
  }
  return nc_lex_next(lx);
}

nc_status nc_lex_init(nc_lexer *lx, const char *src, size_t len, const char *file) {
  nc_lex_setup(lx, src, len, file);
  return nc_lex_start(lx);
}

void nc_lex_free(nc_lexer *lx) { nc_buf_free(&lx->str); }

bool nc_tok_is(const nc_lexer *lx, char punct) { return lx->tok.kind == NC_TK_PUNCT && lx->tok.p[0] == punct; }

bool nc_tok_is_word(const nc_lexer *lx, const char *word) {
  return lx->tok.kind == NC_TK_IDENT && strlen(word) == lx->tok.n && !memcmp(lx->tok.p, word, lx->tok.n);
}

nc_status nc_lex_expect(nc_lexer *lx, char c, const char *what) {
  if (!nc_tok_is(lx, c)) {
    char d[64];
    nc_tok_describe(&lx->tok, d, sizeof d);
    return nc_lex_error_at(lx, NULL, NC_E_PARSE, "expected '%c'%s%s, found %s", c, what && *what ? " " : "",
                           what ? what : "", d);
  }
  return nc_lex_next(lx);
}

static nc_status nc_expected(const nc_lexer *lx, const char *what) {
  char d[64];
  nc_tok_describe(&lx->tok, d, sizeof d);
  return nc_lex_error_at(lx, NULL, NC_E_PARSE, "expected %s, found %s", what, d);
}

// ---- values ----------------------------------------------------------------------
// Digits of an INT token as an unsigned value; false if it exceeds max.
static bool nc_tok_u64(const nc_tok *t, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  for (size_t i = 0; i < t->n; i++) {
    uint64_t dgt = (uint64_t)(t->p[i] - '0');
    if (v > (max - dgt) / 10) return false;
    v = v * 10 + dgt;
  }
  *out = v;
  return true;
}

nc_status nc_parse_int(nc_lexer *lx, int64_t lo, int64_t hi, int64_t *out) {
  nc_tok start = lx->tok;
  bool neg = false;
  if (nc_tok_is(lx, '-')) {
    neg = true;
    NC_TRY(nc_lex_next(lx));
  }
  if (lx->tok.kind != NC_TK_INT) return nc_expected(lx, "an integer");
  uint64_t u;
  const nc_tok *t = &lx->tok;
  if (!nc_tok_u64(t, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &u))
    return nc_lex_error_at(lx, &start, NC_E_PARSE, "integer %s%.*s%s does not fit in 64 bits", neg ? "-" : "",
                           (int)(t->n > 40 ? 40 : t->n), t->p, t->n > 40 ? "..." : "");
  int64_t v = neg ? (u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u) : (int64_t)u;
  if (v < lo || v > hi)
    return nc_lex_error_at(lx, &start, NC_E_PARSE, "integer %lld is out of range (%lld to %lld)", (long long)v,
                           (long long)lo, (long long)hi);
  *out = v;
  return nc_lex_next(lx);
}

nc_status nc_parse_float(nc_lexer *lx, double *out) {
  nc_tok start = lx->tok;
  bool neg = false;
  if (nc_tok_is(lx, '-')) {
    neg = true;
    NC_TRY(nc_lex_next(lx));
  }
  double v;
  if (nc_tok_is_word(lx, "nan")) v = NAN;
  else if (nc_tok_is_word(lx, "inf")) v = INFINITY;
  else if (lx->tok.kind == NC_TK_INT || lx->tok.kind == NC_TK_FLOAT) {
    char buf[NC_MAX_NUMBER_CHARS + 1];
    memcpy(buf, lx->tok.p, lx->tok.n);  // the lexer caps number length
    buf[lx->tok.n] = 0;
    errno = 0;
    v = strtod(buf, NULL);
    if (isinf(v)) return nc_lex_error_at(lx, &start, NC_E_PARSE, "number %s%s is out of the range of a double", neg ? "-" : "", buf);
  } else {
    return nc_expected(lx, "a number (or nan, inf)");
  }
  *out = neg ? -v : v;
  return nc_lex_next(lx);
}

// factor := (INT | IDENT) ('^' INT)?
static nc_status nc_parse_dim(nc_lexer *lx, const nc_graph *g, nc_dim *out) {
  uint64_t c = 1;
  unsigned exps[NC_MAX_SYMS] = {0};
  for (;;) {
    nc_tok ft = lx->tok;
    int sym = -1;
    uint64_t base = 0;
    if (ft.kind == NC_TK_INT) {
      if (!nc_tok_u64(&ft, UINT64_MAX, &base) || base > (uint64_t)NC_MAX_DIM)
        return nc_lex_error_at(lx, &ft, NC_E_PARSE, "extent %.*s%s is larger than the maximum 2^40",
                               (int)(ft.n > 40 ? 40 : ft.n), ft.p, ft.n > 40 ? "..." : "");
      if (base == 0) return nc_lex_error_at(lx, &ft, NC_E_PARSE, "extent 0: extents must be at least 1");
    } else if (ft.kind == NC_TK_IDENT) {
      sym = g ? nc_graph_sym_find(g, ft.p, ft.n) : -1;
      if (sym < 0)
        return nc_lex_error_at(lx, &ft, NC_E_PARSE, "undeclared symbol '%.*s' (declare it %s)",
                               (int)(ft.n > 64 ? 64 : ft.n), ft.p, lx->xml_line ? "with <sym>" : "in the graph header");
    } else {
      return nc_expected(lx, "a dimension (an integer or a symbol)");
    }
    NC_TRY(nc_lex_next(lx));
    int64_t e = 1;
    if (nc_tok_is(lx, '^')) {
      NC_TRY(nc_lex_next(lx));
      NC_TRY(nc_parse_int(lx, 1, 15, &e));
    }
    if (sym >= 0) {
      exps[sym] += (unsigned)e;
      if (exps[sym] > 15)
        return nc_lex_error_at(lx, &ft, NC_E_PARSE, "exponent of symbol '%.*s' exceeds 15", (int)ft.n, ft.p);
    } else {
      for (int64_t i = 0; i < e; i++) {
        if (c > (uint64_t)NC_MAX_DIM / base)
          return nc_lex_error_at(lx, &ft, NC_E_PARSE, "constant factor of the dimension exceeds 2^40");
        c *= base;
      }
    }
    if (!nc_tok_is(lx, '*')) break;
    NC_TRY(nc_lex_next(lx));
  }
  out->c = (int64_t)c;
  out->e = 0;
  for (int k = 0; k < NC_MAX_SYMS; k++) out->e |= (uint64_t)exps[k] << (4 * k);
  return NC_OK;
}

nc_status nc_parse_type(nc_lexer *lx, const nc_graph *g, nc_type *out) {
  memset(out, 0, sizeof *out);
  if (lx->tok.kind != NC_TK_IDENT) return nc_expected(lx, "a type such as f32[B,T,64]");
  nc_dtype dt;
  if (!nc_dtype_parse(lx->tok.p, lx->tok.n, &dt))
    return nc_lex_error_at(lx, NULL, NC_E_PARSE, "unknown dtype '%.*s' (expected f32, bf16, f16, i32, i64, u8 or bool)",
                           (int)(lx->tok.n > 32 ? 32 : lx->tok.n), lx->tok.p);
  out->dtype = dt;
  NC_TRY(nc_lex_next(lx));
  NC_TRY(nc_lex_expect(lx, '[', "after the dtype"));
  if (nc_tok_is(lx, ']')) return nc_lex_next(lx);
  for (;;) {
    if (out->rank >= NC_MAX_RANK)
      return nc_lex_error_at(lx, NULL, NC_E_PARSE, "rank exceeds the maximum of %d dimensions", NC_MAX_RANK);
    NC_TRY(nc_parse_dim(lx, g, &out->dim[out->rank]));
    out->rank++;
    if (nc_tok_is(lx, ']')) return nc_lex_next(lx);
    if (!nc_tok_is(lx, ',')) return nc_expected(lx, "',' or ']' in the shape");
    NC_TRY(nc_lex_next(lx));
  }
}

// '[' (INT (',' INT)*)? ']' with entries in [0, NC_MAX_RANK).
static nc_status nc_parse_list(nc_lexer *lx, const char *what, int vals[NC_MAX_RANK], int *n) {
  *n = 0;
  NC_TRY(nc_lex_expect(lx, '[', what));
  if (nc_tok_is(lx, ']')) return nc_lex_next(lx);
  for (;;) {
    if (*n >= NC_MAX_RANK) return nc_lex_error_at(lx, NULL, NC_E_PARSE, "list has more than %d entries", NC_MAX_RANK);
    int64_t v;
    NC_TRY(nc_parse_int(lx, 0, NC_MAX_RANK - 1, &v));
    vals[(*n)++] = (int)v;
    if (nc_tok_is(lx, ']')) return nc_lex_next(lx);
    if (!nc_tok_is(lx, ',')) return nc_expected(lx, "',' or ']' in the list");
    NC_TRY(nc_lex_next(lx));
  }
}

nc_status nc_parse_attr_value(nc_lexer *lx, const nc_attr_spec *spec, nc_node_desc *d, char **str_out) {
  nc_tok start = lx->tok;
  switch (spec->type) {
    case NC_ATTR_INT: return nc_parse_int(lx, INT64_MIN, INT64_MAX, &d->ia[spec->slot]);
    case NC_ATTR_FLOAT: return nc_parse_float(lx, &d->fa[spec->slot]);
    case NC_ATTR_BOOL:
      if (nc_tok_is_word(lx, "true")) d->ia[spec->slot] = 1;
      else if (nc_tok_is_word(lx, "false")) d->ia[spec->slot] = 0;
      else return nc_expected(lx, "true or false");
      return nc_lex_next(lx);
    case NC_ATTR_ENUM: {
      for (int i = 0; i < spec->nenum && lx->tok.kind == NC_TK_IDENT; i++)
        if (strlen(spec->enums[i]) == lx->tok.n && !memcmp(spec->enums[i], lx->tok.p, lx->tok.n)) {
          d->ia[spec->slot] = i;
          return nc_lex_next(lx);
        }
      char want[80] = "";
      for (int i = 0; i < spec->nenum; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s", i ? (i + 1 == spec->nenum ? " or " : ", ") : "", spec->enums[i]);
      char dsc[64];
      nc_tok_describe(&lx->tok, dsc, sizeof dsc);
      return nc_lex_error_at(lx, NULL, NC_E_PARSE, "invalid value %s for %s (expected %s)", dsc, spec->name, want);
    }
    case NC_ATTR_AXES: {
      int v[NC_MAX_RANK], n;
      NC_TRY(nc_parse_list(lx, "to start the axes list", v, &n));
      int64_t mask = 0;
      for (int i = 0; i < n; i++) {
        if (mask & (INT64_C(1) << v[i])) return nc_lex_error_at(lx, &start, NC_E_PARSE, "axis %d listed twice", v[i]);
        mask |= INT64_C(1) << v[i];
      }
      d->ia[spec->slot] = mask;
      return NC_OK;
    }
    case NC_ATTR_PERM: {
      int v[NC_MAX_RANK], n;
      NC_TRY(nc_parse_list(lx, "to start the permutation", v, &n));
      d->ia[spec->slot] = nc_perm_encode(v, n);
      return NC_OK;
    }
    case NC_ATTR_STR:
      if (lx->tok.kind != NC_TK_STRING) return nc_expected(lx, "a string");
      if (str_out) {
        free(*str_out);
        *str_out = strdup(lx->str.data ? lx->str.data : "");
        if (!*str_out) return nc_errorf(NC_E_NOMEM, "out of memory");
      }
      return nc_lex_next(lx);
  }
  return nc_errorf(NC_E_INTERNAL, "attribute %s has an unknown kind", spec->name);
}

nc_status nc_parse_xml_value(const char *val, const char *file, int line, const char *ctx, const nc_graph *g,
                             const nc_attr_spec *spec, nc_node_desc *d, nc_type *type_out) {
  nc_lexer lx;
  nc_lex_setup(&lx, val, strlen(val), file);
  lx.xml_line = line > 0 ? line : 1;
  lx.ctx = ctx;
  nc_status st = nc_lex_start(&lx);
  if (!st && spec && spec->type == NC_ATTR_STR) {
    // strings are taken verbatim from XML; the caller handles them
    st = nc_errorf(NC_E_INTERNAL, "string attributes are not parsed as values");
  }
  if (!st) st = spec ? nc_parse_attr_value(&lx, spec, d, NULL) : nc_parse_type(&lx, g, type_out);
  if (!st && lx.tok.kind != NC_TK_EOF) {
    char dsc[64];
    nc_tok_describe(&lx.tok, dsc, sizeof dsc);
    st = nc_lex_error_at(&lx, NULL, NC_E_PARSE, "unexpected %s after the value", dsc);
  }
  nc_lex_free(&lx);
  return st;
}

// ---- labels ------------------------------------------------------------------------
static uint64_t nc_label_hash(const char *p, size_t n) { return nc_hash_bytes(NC_HASH_SEED, p, n); }

void nc_label_map_free(nc_label_map *m) {
  for (size_t i = 0; i < m->cap; i++) free((void *)m->slots[i].p);
  free(m->slots);
  memset(m, 0, sizeof *m);
}

nc_id nc_label_find(const nc_label_map *m, const char *p, size_t n) {
  if (!m->cap) return NC_NONE;
  size_t mask = m->cap - 1;
  for (size_t i = nc_label_hash(p, n) & mask;; i = (i + 1) & mask) {
    const struct nc_label_slot *s = &m->slots[i];
    if (!s->p) return NC_NONE;
    if (s->n == n && !memcmp(s->p, p, n)) return s->id;
  }
}

bool nc_label_put(nc_label_map *m, const char *p, size_t n, nc_id id) {
  if (2 * (m->count + 1) > m->cap) {
    size_t cap = m->cap ? 2 * m->cap : 64;
    struct nc_label_slot *s = calloc(cap, sizeof *s);
    if (!s) return false;
    for (size_t i = 0; i < m->cap; i++) {
      if (!m->slots[i].p) continue;
      size_t j = nc_label_hash(m->slots[i].p, m->slots[i].n) & (cap - 1);
      while (s[j].p) j = (j + 1) & (cap - 1);
      s[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = s;
    m->cap = cap;
  }
  char *key = malloc(n + 1);
  if (!key) return false;
  memcpy(key, p, n);
  key[n] = 0;
  size_t j = nc_label_hash(p, n) & (m->cap - 1);
  while (m->slots[j].p) j = (j + 1) & (m->cap - 1);
  m->slots[j] = (struct nc_label_slot){key, n, id};
  m->count++;
  return true;
}
