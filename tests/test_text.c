// The text IR: golden output, round trips on random graphs, parser leniency,
// and a table of malformed inputs plus truncations, mutations, invalid UTF-8
// and deep nesting (parse must fail cleanly, never crash).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/graph.h"
#include "ir/rules.h"
#include "ir/text.h"
#include "tests/support/randgraph.h"

// ---- helpers ------------------------------------------------------------------------
static char *print_text(const nc_graph *g) {
  nc_buf b;
  nc_buf_init(&b);
  nc_status st = nc_graph_print_text(g, &b);
  cr_assert_null(st, "print: %s", nc_status_msg(st));
  return nc_buf_take(&b);
}

static nc_graph *parse_ok(const char *src, size_t len) {
  nc_graph *g = NULL;
  nc_status st = nc_graph_parse_text(src, len, "t.ncir", &g);
  cr_assert_null(st, "parse failed: %s\n--- input ---\n%.*s", nc_status_msg(st), (int)len, src);
  cr_assert_not_null(g);
  return g;
}

// Parses src expecting failure with code and a message that starts with
// "t.ncir:" + where and contains each of the words.
static void expect_fail_n(const char *src, size_t len, nc_code code, const char *where, const char *w1,
                          const char *w2) {
  nc_graph *g = (nc_graph *)1;
  nc_status st = nc_graph_parse_text(src, len, "t.ncir", &g);
  cr_assert_not_null(st, "parse unexpectedly succeeded:\n%.*s", (int)len, src);
  cr_assert_null(g, "no graph on failure");
  const char *m = nc_status_msg(st);
  char pre[64];
  snprintf(pre, sizeof pre, "t.ncir:%s", where);
  cr_expect(!strncmp(m, pre, strlen(pre)), "message '%s' should start with '%s'", m, pre);
  cr_expect_eq(nc_status_code(st), code, "code %d != %d for '%s'", nc_status_code(st), code, m);
  if (w1) cr_expect(strstr(m, w1) != NULL, "message '%s' lacks '%s'", m, w1);
  if (w2) cr_expect(strstr(m, w2) != NULL, "message '%s' lacks '%s'", m, w2);
  nc_status_free(st);
}
static void expect_fail(const char *src, nc_code code, const char *where, const char *w1, const char *w2) {
  expect_fail_n(src, strlen(src), code, where, w1, w2);
}

// ---- golden ---------------------------------------------------------------------------
static nc_graph *golden_graph(void) {
  nc_graph *g = nc_graph_new("golden \"g\"");
  int B, T;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  cr_assert_null(nc_graph_sym(g, "T", &T));
  nc_dim b = nc_dim_sym(B), t = nc_dim_sym(T), bt, b2t;
  nc_dim_mul(b, t, &bt);
  nc_dim_mul(bt, b, &b2t);
  nc_id tok = nc_leaf(g, NC_OP_INPUT, "tokens", nc_type_make(NC_I32, 2, (nc_dim[]){b, t}));
  nc_id wte = nc_leaf(g, NC_OP_PARAM, "transformer.wte.weight",
                      nc_type_make(NC_F32, 2, (nc_dim[]){nc_dim_const(512), nc_dim_const(64)}));
  nc_id x = nc_op2(g, NC_OP_GATHER, wte, tok);
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_RMS_NORM);
  d.nin = 1, d.in[0] = x, d.fa[0] = 1.1920928955078125e-07;
  nc_id xn = nc_build(g, &d);
  nc_node_desc_init(&d, NC_OP_RESHAPE);
  d.nin = 1, d.in[0] = xn, d.type = nc_type_make(NC_F32, 2, (nc_dim[]){bt, nc_dim_const(64)});
  nc_id x2 = nc_build(g, &d);
  nc_node_desc_init(&d, NC_OP_MATMUL);
  d.nin = 2, d.in[0] = x2, d.in[1] = wte, d.ia[1] = 1;
  nc_id logits = nc_build(g, &d);
  nc_id half = nc_const(g, 0.5, nc_type_make(NC_F32, 0, NULL));
  nc_node_desc_init(&d, NC_OP_RESHAPE);
  d.nin = 1, d.in[0] = tok, d.type = nc_type_make(NC_I32, 1, &bt);
  nc_id tg = nc_build(g, &d);
  nc_id loss = nc_op2(g, NC_OP_CROSS_ENTROPY, logits, tg);
  nc_id scaled = nc_op2(g, NC_OP_MUL, loss, half);
  nc_node_desc_init(&d, NC_OP_REDUCE_SUM);
  d.nin = 1, d.in[0] = x, d.ia[0] = 5, d.ia[1] = 1;
  nc_id red = nc_build(g, &d);
  nc_node_desc_init(&d, NC_OP_PERMUTE);
  d.nin = 1, d.in[0] = x, d.ia[0] = nc_perm_encode((int[]){2, 0, 1}, 3);
  nc_build(g, &d);
  nc_node_desc_init(&d, NC_OP_IOTA);
  d.ia[0] = 1, d.type = nc_type_make(NC_I64, 2, (nc_dim[]){nc_dim_const(2), b2t});
  nc_build(g, &d);
  nc_node_desc_init(&d, NC_OP_CONST);
  d.fa[0] = -INFINITY, d.type = nc_type_make(NC_BF16, 1, &t);
  nc_build(g, &d);
  cr_assert_null(nc_graph_error(g), "%s", nc_status_msg(nc_graph_error(g)));
  cr_assert_null(nc_graph_set_output(g, "loss", scaled));
  cr_assert_null(nc_graph_set_output(g, "sum\n\"x\"\\ é", red));
  return g;
}

static const char golden_text[] =
    "// nanochat-c IR v1\n"
    "graph \"golden \\\"g\\\"\" (B, T) {\n"
    "  %0 = input \"tokens\" : i32[B,T]\n"
    "  %1 = param \"transformer.wte.weight\" : f32[512,64]\n"
    "  %2 = gather(%1, %0) : f32[B,T,64]\n"
    "  %3 = rms_norm(%2) {eps=1.1920928955078125e-07} : f32[B,T,64]\n"
    "  %4 = reshape(%3) : f32[B*T,64]\n"
    "  %5 = matmul(%4, %1) {ta=false, tb=true} : f32[B*T,512]\n"
    "  %6 = const {value=0.5} : f32[]\n"
    "  %7 = reshape(%0) : i32[B*T]\n"
    "  %8 = cross_entropy(%5, %7) {ignore_index=-1, reduction=mean} : f32[]\n"
    "  %9 = mul(%8, %6) : f32[]\n"
    "  %10 = reduce_sum(%2) {axes=[0,2], keepdim=true} : f32[1,T,1]\n"
    "  %11 = permute(%2) {perm=[2,0,1]} : f32[64,B,T]\n"
    "  %12 = iota {axis=1} : i64[2,B^2*T]\n"
    "  %13 = const {value=-inf} : bf16[T]\n"
    "  output \"loss\" = %9\n"
    "  output \"sum\\n\\\"x\\\"\\\\ é\" = %10\n"
    "}\n";

Test(text, golden) {
  nc_graph *g = golden_graph();
  char *s = print_text(g);
  cr_assert_str_eq(s, golden_text);
  nc_graph *h = parse_ok(s, strlen(s));
  cr_assert_eq(nc_graph_hash(g), nc_graph_hash(h));
  free(s);
  nc_graph_free(g);
  nc_graph_free(h);
}

// ---- round trips on random graphs ------------------------------------------------------
static void roundtrip(nc_graph *g) {
  char *a = print_text(g);
  nc_graph *h = parse_ok(a, strlen(a));
  char *b = print_text(h);
  cr_assert_str_eq(a, b);
  cr_assert_eq(nc_graph_hash(g), nc_graph_hash(h), "hash differs");
  cr_assert_eq(nc_graph_nnodes(g), nc_graph_nnodes(h));
  free(a);
  free(b);
  nc_graph_free(h);
}

Test(text, roundtrip_random_graphs) {
  bool seen[NC_OP_COUNT] = {0};
  int n = 0;
  for (uint64_t seed = 1; seed <= 320; seed++) {
    int target = seed % 3 == 0 ? (int)(seed % 50) + 2 : NC_OP_COUNT + (int)(seed * 7 % 200);
    unsigned flags = (seed % 4 == 1 ? NC_RG_CONTROL_NAMES : 0) | (seed % 5 == 2 ? NC_RG_DEEP : 0);
    nc_graph *g = nc_test_random_graph_ex(seed, target, flags);
    cr_assert_not_null(g, "generator failed for seed %llu", (unsigned long long)seed);
    cr_assert_null(nc_graph_verify(g));
    bool all[NC_OP_COUNT] = {0};
    for (nc_id id = 0; id < nc_graph_nnodes(g); id++) seen[nc_graph_node(g, id)->op] = all[nc_graph_node(g, id)->op] = true;
    if (target >= NC_OP_COUNT)
      for (int op = 0; op < NC_OP_COUNT; op++)
        cr_expect(all[op], "seed %llu lacks op %s", (unsigned long long)seed, nc_op_get((nc_op)op)->name);
    roundtrip(g);
    nc_graph_free(g);
    n++;
  }
  cr_assert_eq(n, 320);
  for (int op = 0; op < NC_OP_COUNT; op++) cr_expect(seen[op], "op %s never generated", nc_op_get((nc_op)op)->name);
}

Test(text, random_graph_is_deterministic) {
  nc_graph *a = nc_test_random_graph(42, 150), *b = nc_test_random_graph(42, 150), *c = nc_test_random_graph(43, 150);
  cr_assert_eq(nc_graph_hash(a), nc_graph_hash(b));
  cr_assert_neq(nc_graph_hash(a), nc_graph_hash(c));
  cr_assert_geq(nc_graph_nnodes(a), 150);
  nc_graph_free(a);
  nc_graph_free(b);
  nc_graph_free(c);
}

// ---- leniency ---------------------------------------------------------------------------
Test(text, lenient_input_canonicalizes) {
  const char *src =
      "\xEF\xBB\xBF// a hand-written graph\n"
      "graph \"h\" (B, T)   // symbols\n"
      "{\n"
      "  %x = input \"x\" : f32[ T * B * 2 * B , 4 ]   // any factor order\n"
      "  %y=neg(%x)\n"
      "  %sum.1 = reduce_sum(%y){keepdim=false,axes=[1]} // attrs in any order\n"
      "  %dup = neg(%x) : f32[2*B^2*T,4]  // identical node: maps to %y\n"
      "  %z = add(%y, %dup)\n"
      "  %r = rope(%w) : f32[1,2,3,4]\n"
      "  output \"o\" = %z\n"
      "}\n"
      "// trailing comment\n";
  // %w is undefined: fix that line first to test the rest
  char *fixed = strdup(src);
  char *p = strstr(fixed, "  %r = rope(%w) : f32[1,2,3,4]\n");
  memset(p, ' ', strlen("  %r = rope(%w) : f32[1,2,3,4]"));
  nc_graph *g = parse_ok(fixed, strlen(fixed));
  char *s = print_text(g);
  cr_assert_str_eq(s,
                   "// nanochat-c IR v1\n"
                   "graph \"h\" (B, T) {\n"
                   "  %0 = input \"x\" : f32[2*B^2*T,4]\n"
                   "  %1 = neg(%0) : f32[2*B^2*T,4]\n"
                   "  %2 = reduce_sum(%1) {axes=[1], keepdim=false} : f32[2*B^2*T]\n"
                   "  %3 = add(%1, %1) : f32[2*B^2*T,4]\n"
                   "  output \"o\" = %3\n"
                   "}\n");
  free(s);
  free(fixed);
  nc_graph_free(g);
  expect_fail(src, NC_E_PARSE, "9:13:", "%w is used before it is defined", "cycles");
}

Test(text, defaults_and_optional_parts) {
  const char *src = "graph \"d\" {\n"
                    "  %0 = input \"q\" : f32[1,4,2,8]\n"
                    "  %1 = attention(%0, %0, %0) {scale=0.25}\n"
                    "  %2 = cross_entropy(%1, %t)\n"
                    "}";
  expect_fail(src, NC_E_PARSE, "4:26:", "used before", NULL);
  const char *ok = "graph \"d\" () {\n"
                   "  %0 = input \"q\" : f32[1,4,2,8]\n"
                   "  %1 = attention(%0, %0, %0) {scale=0.25}\n"
                   "  %2 = rope(%1)\n"
                   "  %3 = const {} : f32[]\n"  // value has no default: error
                   "}";
  expect_fail(ok, NC_E_PARSE, "5:8:", "requires attribute 'value'", NULL);
  const char *ok2 = "graph \"d\" () {\n"
                    "  %0 = input \"q\" : f32[1,4,2,8]\n"
                    "  %1 = attention(%0, %0, %0) {scale=0.25}\n"
                    "  %2 = rope(%1)\n"
                    "}";
  nc_graph *g = parse_ok(ok2, strlen(ok2));
  char *s = print_text(g);
  cr_assert(strstr(s, "%1 = attention(%0, %0, %0) {causal=true, window=0, scale=0.25} : f32[1,4,2,8]\n"), "%s", s);
  cr_assert(strstr(s, "%2 = rope(%1) {base=10000, inverse=false} : f32[1,4,2,8]\n"), "%s", s);
  free(s);
  nc_graph_free(g);
}

Test(text, special_floats_and_strings_roundtrip) {
  const char *src = "graph \"s\\x01\\x7F\\xFF\\t\\r\" {\n"
                    "  %0 = const {value=nan} : f32[]\n"
                    "  %1 = const {value=-inf} : f32[]\n"
                    "  %2 = const {value=-0} : f32[]\n"
                    "  %3 = const {value=5e-324} : f32[]\n"
                    "  %4 = const {value=1.7976931348623157e+308} : f32[]\n"
                    "  %5 = const {value=0} : f32[]\n"
                    "  %6 = input \"a\\\\b\\\"c\\nd\\te\\x1B\" : u8[3]\n"
                    "  output \"\xF0\x9F\x99\x82\" = %6\n"
                    "}\n";
  nc_graph *g = parse_ok(src, strlen(src));
  cr_assert_eq(nc_graph_nnodes(g), 7, "-0 and 0 are distinct constants");
  cr_assert(isnan(nc_graph_node(g, 0)->fa[0]));
  cr_assert(signbit(nc_graph_node(g, 2)->fa[0]));
  cr_assert_eq(nc_graph_node(g, 3)->fa[0], 5e-324);
  cr_assert_str_eq(nc_graph_name(g), "s\x01\x7f\xff\t\r");
  cr_assert_str_eq(nc_node_name(g, 6), "a\\b\"c\nd\te\x1b");
  char *s = print_text(g);
  cr_assert(strstr(s, "graph \"s\\x01\\x7F\\xFF\\t\\x0D\" () {\n"), "%s", s);
  cr_assert(strstr(s, "{value=nan}"));
  cr_assert(strstr(s, "{value=-0}"));
  cr_assert(strstr(s, "{value=1.7976931348623157e+308}"));
  cr_assert(strstr(s, "input \"a\\\\b\\\"c\\nd\\te\\x1B\" : u8[3]"));
  cr_assert(strstr(s, "output \"\xF0\x9F\x99\x82\" = %6"));
  roundtrip(g);
  free(s);
  nc_graph_free(g);
}

// ---- malformed inputs -------------------------------------------------------------------
#define HDR "graph \"g\" (B, T) {\n"

Test(text, malformed_table) {
  expect_fail("", NC_E_PARSE, "1:1:", "expected 'graph'", "end of input");
  expect_fail("graph", NC_E_PARSE, "1:6:", "graph's name", NULL);
  expect_fail("graph \"g\" {", NC_E_PARSE, "1:12:", "closing '}'", "end of input");
  expect_fail("graph \"g\" { } x", NC_E_PARSE, "1:15:", "after the closing '}'", NULL);
  expect_fail("graph \"g\" { }\n}", NC_E_PARSE, "2:1:", "after the closing '}'", NULL);
  expect_fail("graf \"g\" {}", NC_E_PARSE, "1:1:", "expected 'graph'", "'graf'");
  expect_fail(HDR "  %0 = foo : f32[]\n}", NC_E_PARSE, "2:8:", "unknown op 'foo'", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f33[2]\n}", NC_E_PARSE, "2:20:", "unknown dtype 'f33'", NULL);
  expect_fail(HDR "  %0 = input \"x\"\n}", NC_E_PARSE, "3:1:", "declares its type", NULL);
  expect_fail(HDR "  %0 = input : f32[]\n}", NC_E_PARSE, "2:8:", "needs a name", NULL);
  expect_fail(HDR "  %0 = neg(%1) : f32[]\n}", NC_E_PARSE, "2:12:", "%1 is used before it is defined", NULL);
  expect_fail(HDR "  %a = neg(%b)\n  %b = neg(%a)\n}", NC_E_PARSE, "2:12:", "%b is used before", "cycles");
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %0 = input \"y\" : f32[2]\n}", NC_E_PARSE, "3:3:",
              "label %0 is defined twice", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[B,T]\n  %1 = input \"y\" : f32[T]\n  %2 = add(%0, %1)\n}", NC_E_TYPE,
              "4:8:", "identical types", "f32[B,T] vs f32[T]");
  expect_fail(HDR "  %0 = input \"x\" : f32[B,T]\n  %1 = reduce_sum(%0) {axes=[1]} : f32[B,T]\n}", NC_E_TYPE,
              "3:36:", "declared f32[B,T] but the rule of 'reduce_sum' gives f32[B]", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[99999999999999999999]\n}", NC_E_PARSE, "2:24:",
              "larger than the maximum 2^40", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[1099511627777]\n}", NC_E_PARSE, "2:24:", "2^40", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[1048577*1048576]\n}", NC_E_PARSE, "2:32:", "exceeds 2^40", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[B,0]\n}", NC_E_PARSE, "2:26:", "extent 0", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[-3]\n}", NC_E_PARSE, "2:24:", "expected a dimension", "'-'");
  expect_fail(HDR "  %0 = input \"x\" : f32[1048576,1048576,1048576]\n}", NC_E_TYPE, "2:8:", "2^48", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[1,1,1,1,1,1,1]\n}", NC_E_PARSE, "2:36:", "rank exceeds", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[Q]\n}", NC_E_PARSE, "2:24:", "undeclared symbol 'Q'", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[B^16]\n}", NC_E_PARSE, "2:26:", "out of range (1 to 15)", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[B^9*B^9]\n}", NC_E_PARSE, "2:28:", "exponent of symbol 'B' exceeds 15", NULL);
  expect_fail("graph \"g\" (A0,A1,A2,A3,A4,A5,A6,A7,A8,A9,A10,A11,A12,A13,A14,A15,A16) {}", NC_E_INVALID, "1:66:",
              "too many symbols", NULL);
  expect_fail("graph \"g\" (B, B) {}", NC_E_PARSE, "1:15:", "symbol 'B' is declared twice", NULL);
  expect_fail("graph \"g\" (B,) {}", NC_E_PARSE, "1:14:", "symbol name after ','", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n"
                  "  %1 = concat(%0,%0,%0,%0,%0,%0,%0,%0,%0,%0,%0,%0,%0,%0,%0,%0,%0) {axis=0}\n}",
              NC_E_PARSE, "3:63:", "too many inputs", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 = neg(%0) {foo=1}\n}", NC_E_PARSE, "3:17:",
              "op 'neg' has no attribute 'foo'", "no attributes");
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 = rms_norm(%0)\n}", NC_E_PARSE, "3:8:",
              "requires attribute 'eps'", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2,3]\n  %1 = input \"t\" : i32[2]\n"
                  "  %2 = cross_entropy(%0, %1) {reduction=avg}\n}",
              NC_E_PARSE, "4:41:", "expected none, sum or mean", "'avg'");
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 = slice(%0) {axis=0, axis=0, start=0, end=1}\n}", NC_E_PARSE,
              "3:27:", "given twice", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 = slice(%0) {axis=0, start=0, end=99999999999999999999}\n}",
              NC_E_PARSE, "3:40:", "does not fit in 64 bits", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 = slice(%0) {axis=0, start=0, end=3}\n}", NC_E_INVALID, "3:8:",
              "%1 = slice", "outside [0, 2)");
  expect_fail(HDR "  %0 = const {value=1e999} : f32[]\n}", NC_E_PARSE, "2:21:", "out of the range of a double", NULL);
  expect_fail(HDR "  %0 = const {value=abc} : f32[]\n}", NC_E_PARSE, "2:21:", "expected a number", NULL);
  expect_fail(HDR "  %0 = const {value=1.5x} : f32[]\n}", NC_E_PARSE, "2:21:", "malformed number", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2,3]\n  %1 = reduce_sum(%0) {axes=[1,1]}\n}", NC_E_PARSE, "3:29:",
              "axis 1 listed twice", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2,3]\n  %1 = reduce_sum(%0) {axes=[6]}\n}", NC_E_PARSE, "3:30:",
              "out of range (0 to 5)", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2,3]\n  %1 = permute(%0) {perm=[0,0]}\n}", NC_E_INVALID, "3:8:",
              "not a permutation", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 = neg(%0, %0)\n}", NC_E_INVALID, "3:8:", "neg takes 1 input",
              NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 = neg \"n\" (%0)\n}", NC_E_PARSE, "3:12:", "takes no name",
              NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 = input \"x\" : f32[3]\n}", NC_E_TYPE, "3:8:",
              "already declared", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  output \"o\" = %9\n}", NC_E_PARSE, "3:16:", "undefined label %9",
              NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  output \"o\" = %0\n  output \"o\" = %0\n}", NC_E_INVALID, "4:3:",
              "declared twice", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  @\n}", NC_E_PARSE, "3:3:", "unexpected character '@'", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  % = neg(%0)\n}", NC_E_PARSE, "3:3:", "label name after '%'", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 neg(%0)\n}", NC_E_PARSE, "3:6:", "expected '='", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2]\n  %1 = neg(%0 %0)\n}", NC_E_PARSE, "3:15:", "',' or ')'", NULL);
  expect_fail(HDR "  %0 = input \"x\" : f32[2\n}", NC_E_PARSE, "3:1:", "',' or ']'", NULL);
  expect_fail(HDR "  %0 = input \"\" : f32[2]\n}", NC_E_INVALID, "2:8:", "1 to 4096 bytes", NULL);
  expect_fail(HDR "  %0 = input \"x\" : bool[2]\n  %1 = neg(%0)\n}", NC_E_TYPE, "3:8:", "must be numeric", NULL);
  expect_fail(HDR "  %0 = iota {axis=3} : i32[2]\n}", NC_E_INVALID, "2:8:", "axis 3 out of range", NULL);
  expect_fail(HDR "  output = %0\n}", NC_E_PARSE, "2:10:", "output's name", NULL);
  expect_fail(HDR "  neg(%0)\n}", NC_E_PARSE, "2:3:", "expected a node", "'neg'");
}

Test(text, strings_and_encoding_errors) {
  expect_fail("graph \"abc", NC_E_PARSE, "1:7:", "unterminated string", NULL);
  expect_fail("graph \"a\\q\" {}", NC_E_PARSE, "1:9:", "unknown escape", "'q'");
  expect_fail("graph \"a\\x0\" {}", NC_E_PARSE, "1:9:", "two hex digits", NULL);
  expect_fail("graph \"a\\x00\" {}", NC_E_PARSE, "1:9:", "NUL", NULL);
  expect_fail("graph \"a\nb\" {}", NC_E_PARSE, "1:9:", "line break inside a string", NULL);
  expect_fail("graph \"a\x01" "b\" {}", NC_E_PARSE, "1:9:", "control byte 0x01", NULL);
  expect_fail("graph \"\xC3\xA9t\xC3\xA9\xFF\" {}", NC_E_PARSE, "1:11:", "invalid UTF-8", "0xFF");
  expect_fail("graph \"g\" {\n  // comment \xE2\x82 broken\n}", NC_E_PARSE, "2:14:", "invalid UTF-8", NULL);
  expect_fail("graph \"g\" {\n  // surrogate \xED\xA0\x80\n}", NC_E_PARSE, "2:16:", "invalid UTF-8", NULL);
  expect_fail("graph \"g\" {}\xC0\xAF", NC_E_PARSE, "1:13:", "invalid UTF-8", NULL);
  expect_fail_n("graph \"g\" {\0}", 13, NC_E_PARSE, "1:12:", "NUL byte", NULL);
  expect_fail_n("\0", 1, NC_E_PARSE, "1:1:", "NUL byte", NULL);
  expect_fail("graph \"g\" { \xE2\x82\xAC }", NC_E_PARSE, "1:13:", "unexpected character '\xE2\x82\xAC'", NULL);
  // NULL source with zero length is an empty input
  nc_graph *g = NULL;
  nc_status st = nc_graph_parse_text(NULL, 0, NULL, &g);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "<input>:1:1:"), "%s", nc_status_msg(st));
  nc_status_free(st);
}

Test(text, deep_nesting_and_huge_tokens) {
  size_t n = 100000;
  const char *pre[] = {HDR "  %0 = input \"x\" : f32", HDR "  %0 = neg", HDR "  %0 = const ", HDR "  %0 = input \"x\" : f32[",
                       HDR "  %0 = iota {axis="};
  const char fill[] = {'[', '(', '{', '1', '-'};
  const char *where[] = {"2:24:", "2:12:", "2:15:", "2:24:", "2:20:"};
  for (int k = 0; k < 5; k++) {
    size_t pl = strlen(pre[k]);
    char *s = malloc(pl + n + 1);
    memcpy(s, pre[k], pl);
    memset(s + pl, fill[k], n);
    s[pl + n] = 0;
    nc_graph *g = NULL;
    nc_status st = nc_graph_parse_text(s, pl + n, "t.ncir", &g);
    cr_assert_not_null(st, "case %d", k);
    cr_assert_null(g);
    char want[32];
    snprintf(want, sizeof want, "t.ncir:%s", where[k]);
    cr_expect(!strncmp(nc_status_msg(st), want, strlen(want)), "case %d: %s", k, nc_status_msg(st));
    nc_status_free(st);
    free(s);
  }
  // a 100k-character label and a 100k-byte string are fine as tokens
  char *s = malloc(2 * n + 200);
  int o = sprintf(s, HDR "  %%");
  memset(s + o, 'a', n);
  o += (int)n;
  o += sprintf(s + o, " = input \"x\" : f32[2]\n  output \"o\" = %%");
  memset(s + o, 'a', n);
  o += (int)n;
  o += sprintf(s + o, "\n}\n");
  nc_graph *g = parse_ok(s, (size_t)o);
  nc_graph_free(g);
  free(s);
}

// ---- truncations and mutations -------------------------------------------------------------
Test(text, every_truncation_fails_cleanly) {
  nc_graph *g = nc_test_random_graph(7, 40);
  cr_assert_not_null(g);
  char *s = print_text(g);
  size_t len = strlen(s), close = (size_t)(strrchr(s, '}') - s);
  int ok = 0;
  for (size_t k = 0; k < len; k++) {
    nc_graph *h = NULL;
    nc_status st = nc_graph_parse_text(s, k, "t.ncir", &h);
    if (k <= close) {
      cr_assert_not_null(st, "prefix of %zu bytes parsed", k);
      cr_assert(!strncmp(nc_status_msg(st), "t.ncir:", 7), "%s", nc_status_msg(st));
      nc_status_free(st);
    } else {
      cr_assert_null(st, "complete prefix %zu: %s", k, nc_status_msg(st));
      cr_assert_eq(nc_graph_hash(h), nc_graph_hash(g));
      nc_graph_free(h);
      ok++;
    }
  }
  cr_assert_eq(ok, (int)(len - close - 1));
  free(s);
  nc_graph_free(g);
}

Test(text, random_mutations_never_crash) {
  static const char interesting[] = "%=(){}[],:*^-\"\\ \n/0123456789ABTfi\x80\xC3\xFF";
  uint64_t rng = 12345;
  int parsed = 0, failed = 0;
  for (int round = 0; round < 6; round++) {
    nc_graph *g = nc_test_random_graph(100 + (uint64_t)round, 10 + round * 5);
    cr_assert_not_null(g);
    char *s = print_text(g);
    size_t len = strlen(s);
    char *m = malloc(len + 16);
    for (int it = 0; it < 700; it++) {
      memcpy(m, s, len);
      size_t ml = len;
      int edits = 1 + (int)(nc_test_rand_next(&rng) % 3);
      for (int e = 0; e < edits; e++) {
        uint64_t r = nc_test_rand_next(&rng);
        size_t at = (size_t)((r >> 8) % ml);
        int kind = (int)(r % 4);
        char c = (r >> 40) % 2 ? interesting[(r >> 48) % (sizeof interesting - 1)] : (char)(r >> 32);
        if (kind == 0) m[at] = c;
        else if (kind == 1 && ml > 1) {
          memmove(m + at, m + at + 1, ml - at - 1);
          ml--;
        } else if (kind == 2) {
          memmove(m + at + 1, m + at, ml - at);
          m[at] = c;
          ml++;
        } else {
          ml = at + 1;  // truncate
        }
      }
      nc_graph *h = NULL;
      nc_status st = nc_graph_parse_text(m, ml, "m.ncir", &h);
      if (st) {
        cr_assert(!strncmp(nc_status_msg(st), "m.ncir:", 7), "%s", nc_status_msg(st));
        cr_assert_null(h);
        nc_status_free(st);
        failed++;
      } else {
        // whatever parsed is a valid graph whose canonical text is stable
        cr_assert_null(nc_graph_verify(h));
        roundtrip(h);
        nc_graph_free(h);
        parsed++;
      }
    }
    free(m);
    free(s);
    nc_graph_free(g);
  }
  cr_assert_eq(parsed + failed, 4200);
  cr_expect_gt(failed, 0);
}
