// The calculator tool's evaluator (engine/calc.h): results as Python's
// str(eval(expr)) prints them (values checked with CPython by hand), and
// refusals for everything nanochat's use_calculator refuses or Python would
// raise on, plus hostile inputs (deep nesting, huge numbers, garbage bytes).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/calc.h"

static void ok(const char *expr, const char *want) {
  nc_buf b;
  nc_buf_init(&b);
  nc_buf_puts(&b, "");
  b.len = 0;
  nc_status st = nc_calc_eval(expr, strlen(expr), &b);
  cr_assert_null(st, "'%s': %s", expr, nc_status_msg(st));
  cr_assert_eq(b.len, strlen(want), "'%s' = '%.*s', want '%s'", expr, (int)b.len, b.data, want);
  cr_assert(!memcmp(b.data, want, b.len), "'%s' = '%.*s', want '%s'", expr, (int)b.len, b.data, want);
  nc_buf_free(&b);
}

static void bad(const char *expr, size_t n, const char *why) {
  nc_buf b;
  nc_buf_init(&b);
  nc_status st = nc_calc_eval(expr, n, &b);
  cr_assert_not_null(st, "'%.*s' should fail (%s), gave '%.*s'", (int)n, expr, why, (int)b.len, b.data);
  cr_assert(strstr(nc_status_msg(st), why), "'%.*s': '%s' does not mention '%s'", (int)n, expr, nc_status_msg(st), why);
  cr_assert_eq(b.len, 0, "nothing appended on failure");
  nc_status_free(st);
  nc_buf_free(&b);
}
#define BAD(e, why) bad(e, strlen(e), why)

Test(calc, integer_arithmetic) {
  ok("1+2", "3");
  ok(" 2 * 3 + 4 ", "10");
  ok("2*(3+4)", "14");
  ok("-5+2", "-3");
  ok("--5", "5");
  ok("+-+5", "-5");
  ok("10-2-3", "5");
  ok("7//2", "3");
  ok("-7//2", "-4");
  ok("7//-2", "-4");
  ok("1,234,567 + 1", "1234568");  // commas stripped
  ok("0", "0");
  ok("00", "0");
  ok("9223372036854775807", "9223372036854775807");
  ok("((((((1))))))", "1");
}

Test(calc, true_division_and_floats_print_like_python) {
  ok("10/4", "2.5");
  ok("4/2", "2.0");
  ok("1/3", "0.3333333333333333");
  ok("2/3", "0.6666666666666666");
  ok("0.1+0.2", "0.30000000000000004");
  ok("1.5*2", "3.0");
  ok(".5+1.", "1.5");
  ok("1/8", "0.125");
  ok("1/10000", "0.0001");
  ok("1/100000", "1e-05");
  ok("3/200000", "1.5e-05");
  ok("100000000000000000/1", "1e+17");
  ok("1000000000000000/1", "1000000000000000.0");
  ok("10000000000000000/1", "1e+16");
  ok("123456789.125*1", "123456789.125");
  ok("-1/4", "-0.25");
  ok("0*-1.0", "-0.0");
  ok("7.5//2", "3.0");
  ok("-7.5//2", "-4.0");
  ok("12.5 * 4 / 100", "0.5");
  ok("3.14159*2", "6.28318");
}

Test(calc, string_count) {
  ok("'strawberry'.count('r')", "3");
  ok("\"strawberry\".count(\"r\")", "3");
  ok("'banana'.count('an')", "2");
  ok("'aaaa'.count('aa')", "2");  // non-overlapping
  ok("'abc'.count('')", "4");
  ok("'hello world'.count('o')", "2");
  ok("('mississippi').count('ss')", "2");
  ok("'a,b,c'.count('b')", "1");  // commas stripped
}

Test(calc, refusals_like_nanochat) {
  BAD("2**10", "**");
  BAD("2 ** 10", "**");
  BAD("__import__('os')", "not allowed");
  BAD("'abc'.count('a') + 1", "characters");
  BAD("import os", "not allowed");
  BAD("open('x')", "not allowed");
  BAD("'x'.upper()", ".count");
  BAD("x", ".count");
  BAD("1 % 2", "characters");
  BAD("1e5", ".count");
  BAD("a = 1", "characters");
  BAD("1;2", "characters");
  BAD("'a'.count('a')\n", "characters");
  BAD("'eval'.count('e')", "eval");
  BAD("'DIR'.count('d')", "dir");
}

Test(calc, errors_python_would_raise) {
  BAD("1/0", "division by zero");
  BAD("1//0", "division by zero");
  BAD("1/(2-2)", "division by zero");
  BAD("1.5/0.0", "division by zero");
  BAD("", "end");
  BAD("   ", "end");
  BAD("()", "unexpected");
  BAD("1+", "end");
  BAD("(1+2", "missing ')'");
  BAD("1+2)", "unexpected");
  BAD("1 2", "unexpected");
  BAD("1.5.2", "unexpected");
  BAD("012", "leading zeros");
  BAD("*3", "unexpected");
  BAD("3*/4", "unexpected");
  BAD("'abc'", ".count");
  BAD("'abc.count(x)'", "string");
  BAD("'abc'.count(1)", "string argument");
  BAD("'abc'.count('a'", "missing ')'");
  BAD("'abc.count('a')", "unexpected");
  BAD("'abc'.count('a)", "unterminated");
  BAD("'abc'.count", "(");
  BAD("''.count('')()", "unexpected");
}

Test(calc, overflow_and_big_numbers) {
  BAD("9223372036854775808", "64 bits");
  BAD("99999999999999999999999999999", "64 bits");
  BAD("9223372036854775807+1", "overflow");
  BAD("-9223372036854775807-2", "overflow");
  BAD("3037000500*3037000500", "overflow");
  ok("-9223372036854775807-1", "-9223372036854775808");
  BAD("-(-9223372036854775807-1)", "overflow");
  BAD("(-9223372036854775807-1)//-1", "overflow");
  // floats overflow to inf as in Python (no exception for * and +)
  char big[400];
  memset(big, '9', 350);
  strcpy(big + 350, ".0*1");
  ok(big, "inf");
  strcpy(big + 350, ".0*-1");
  ok(big, "-inf");
  char huge[20100];
  memset(huge, '1', 20000);
  huge[20000] = 0;
  BAD(huge, "at most");
}

Test(calc, deep_nesting_and_garbage) {
  char deep[2000];
  size_t n = 0;
  for (int i = 0; i < 150; i++) deep[n++] = '(';
  deep[n++] = '1';
  for (int i = 0; i < 150; i++) deep[n++] = ')';
  deep[n] = 0;
  BAD(deep, "nested deeper");
  n = 0;
  for (int i = 0; i < 500; i++) deep[n++] = '-';
  deep[n++] = '1';
  deep[n] = 0;
  BAD(deep, "nested deeper");
  n = 0;
  for (int i = 0; i < 90; i++) deep[n++] = '(';
  deep[n++] = '2';
  for (int i = 0; i < 90; i++) deep[n++] = ')';
  deep[n] = 0;
  ok(deep, "2");
  // embedded NUL and bytes outside ASCII
  bad("1\0+2", 4, "characters");
  BAD("1 + \xff\xfe", "characters");
  BAD("\xe2\x88\x9a" "4", "characters");
  // random byte strings never crash and never append on failure
  unsigned x = 12345;
  for (int k = 0; k < 3000; k++) {
    char s[24];
    int len = (int)(x % 23);
    static const char alphabet[] = "0123456789+-*/(). ,'\"abcount_";
    for (int i = 0; i < len; i++) {
      x = x * 1103515245u + 12345u;
      s[i] = alphabet[(x >> 16) % (sizeof alphabet - 1)];
    }
    x = x * 1103515245u + 12345u;
    nc_buf b;
    nc_buf_init(&b);
    nc_status st = nc_calc_eval(s, (size_t)len, &b);
    if (st) cr_assert_eq(b.len, 0);
    else cr_assert(b.len > 0);
    nc_status_free(st);
    nc_buf_free(&b);
  }
}
