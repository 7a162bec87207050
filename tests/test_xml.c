// The XML form: exact expected output, round trips (XML and text <-> XML) on
// random graphs, version and schema checks, hostile inputs (DTDs, entities,
// invalid UTF-8, truncations, mutations, deep nesting).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/graph.h"
#include "ir/text.h"
#include "ir/xml.h"
#include "tests/support/randgraph.h"

static char *write_xml(const nc_graph *g) {
  nc_buf b;
  nc_buf_init(&b);
  nc_status st = nc_graph_write_xml(g, &b);
  cr_assert_null(st, "write: %s", nc_status_msg(st));
  return nc_buf_take(&b);
}

static char *print_text(const nc_graph *g) {
  nc_buf b;
  nc_buf_init(&b);
  nc_status st = nc_graph_print_text(g, &b);
  cr_assert_null(st, "print: %s", nc_status_msg(st));
  return nc_buf_take(&b);
}

static nc_graph *parse_ok(const char *src) {
  nc_graph *g = NULL;
  nc_status st = nc_graph_parse_xml(src, strlen(src), "t.xml", &g);
  cr_assert_null(st, "parse failed: %s\n%s", nc_status_msg(st), src);
  return g;
}

static void expect_fail_n(const char *src, size_t len, nc_code code, const char *where, const char *w1) {
  nc_graph *g = (nc_graph *)1;
  nc_status st = nc_graph_parse_xml(src, len, "t.xml", &g);
  cr_assert_not_null(st, "parse unexpectedly succeeded:\n%.*s", (int)len, src);
  cr_assert_null(g);
  const char *m = nc_status_msg(st);
  char pre[64];
  snprintf(pre, sizeof pre, "t.xml:%s", where);
  cr_expect(!strncmp(m, pre, strlen(pre)), "message '%s' should start with '%s'", m, pre);
  cr_expect_eq(nc_status_code(st), code, "code %d != %d for '%s'", nc_status_code(st), code, m);
  if (w1) cr_expect(strstr(m, w1) != NULL, "message '%s' lacks '%s'", m, w1);
  nc_status_free(st);
}
static void expect_fail(const char *src, nc_code code, const char *where, const char *w1) {
  expect_fail_n(src, strlen(src), code, where, w1);
}

Test(xml, exact_output_of_a_small_graph) {
  nc_graph *g = nc_graph_new("a<b>&\"c\"\n\té");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_dim dims[2] = {nc_dim_sym(B), nc_dim_const(4)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x 'q' <&>", nc_type_make(NC_F32, 2, dims));
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_REDUCE_MEAN);
  d.nin = 1, d.in[0] = x, d.ia[0] = 2;
  nc_id m = nc_build(g, &d);
  nc_id y = nc_op2(g, NC_OP_ADD, x, x);
  cr_assert_null(nc_graph_error(g));
  cr_assert_null(nc_graph_set_output(g, "m\r", m));
  cr_assert_null(nc_graph_set_output(g, "y", y));
  char *s = write_xml(g);
  cr_assert_str_eq(s,
                   "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                   "<graph xmlns=\"https://nanochat-c/ir\" version=\"1\" name=\"a&lt;b&gt;&amp;&quot;c&quot;&#10;&#9;é\">\n"
                   "  <sym name=\"B\"/>\n"
                   "  <node id=\"0\" op=\"input\" name=\"x 'q' &lt;&amp;&gt;\" type=\"f32[B,4]\"/>\n"
                   "  <node id=\"1\" op=\"reduce_mean\" inputs=\"0\" type=\"f32[B]\">\n"
                   "    <attr name=\"axes\" value=\"[1]\"/>\n"
                   "    <attr name=\"keepdim\" value=\"false\"/>\n"
                   "  </node>\n"
                   "  <node id=\"2\" op=\"add\" inputs=\"0 0\" type=\"f32[B,4]\"/>\n"
                   "  <output name=\"m&#13;\" node=\"1\"/>\n"
                   "  <output name=\"y\" node=\"2\"/>\n"
                   "</graph>\n");
  nc_graph *h = parse_ok(s);
  cr_assert_eq(nc_graph_hash(g), nc_graph_hash(h));
  cr_assert_str_eq(nc_graph_name(h), "a<b>&\"c\"\n\té");
  cr_assert_str_eq(nc_graph_output_name(h, 0), "m\r");
  free(s);
  nc_graph_free(g);
  nc_graph_free(h);
}

Test(xml, roundtrip_random_graphs_and_cross_format) {
  for (uint64_t seed = 1; seed <= 300; seed++) {
    int target = seed % 3 == 0 ? (int)(seed % 40) + 2 : NC_OP_COUNT + (int)(seed * 13 % 150);
    nc_graph *g = nc_test_random_graph_ex(seed + 1000, target, seed % 5 == 0 ? NC_RG_DEEP : 0);
    cr_assert_not_null(g);
    char *x1 = write_xml(g);
    nc_graph *h = parse_ok(x1);
    char *x2 = write_xml(h);
    cr_assert_str_eq(x1, x2, "seed %llu", (unsigned long long)seed);
    cr_assert_eq(nc_graph_hash(g), nc_graph_hash(h));
    // text -> graph -> XML -> graph -> text
    char *t1 = print_text(g);
    nc_graph *tg = NULL;
    cr_assert_null(nc_graph_parse_text(t1, strlen(t1), "t", &tg));
    char *x3 = write_xml(tg);
    nc_graph *xg = parse_ok(x3);
    char *t2 = print_text(xg);
    cr_assert_str_eq(t1, t2);
    cr_assert_eq(nc_graph_hash(xg), nc_graph_hash(g));
    free(x1), free(x2), free(x3), free(t1), free(t2);
    nc_graph_free(g), nc_graph_free(h), nc_graph_free(tg), nc_graph_free(xg);
  }
}

Test(xml, lenient_reader) {
  // no namespace, labels that are not numbers, attributes in any order,
  // defaults omitted, optional types on computed ops, comments, CRLF
  const char *src = "<?xml version='1.0'?>\r\n<!-- hand written -->\r\n"
                    "<graph version='1' name='h'>\r\n"
                    "  <sym name='T'/>\n"
                    "  <node op='param' type='f32[ T * 2 , 3 ]' name='w' id='weight'/>\n"
                    "  <node id='s' op='reduce_sum' inputs=' weight\n'><attr value='[0]' name='axes'/></node>\n"
                    "  <node id='s2' op='reduce_sum' inputs='weight' type='f32[3]'><attr value='[ 0 ]' name='axes'/>"
                    "<!-- same node --></node>\n"
                    "  <output node='s2' name='o'/>\n"
                    "</graph>";
  nc_graph *g = parse_ok(src);
  cr_assert_eq(nc_graph_nnodes(g), 2);
  char *t = print_text(g);
  cr_assert_str_eq(t, "// nanochat-c IR v1\n"
                      "graph \"h\" (T) {\n"
                      "  %0 = param \"w\" : f32[2*T,3]\n"
                      "  %1 = reduce_sum(%0) {axes=[0], keepdim=false} : f32[3]\n"
                      "  output \"o\" = %1\n"
                      "}\n");
  free(t);
  nc_graph_free(g);
}

#define XH "<graph xmlns=\"https://nanochat-c/ir\" version=\"1\" name=\"g\">\n<sym name=\"B\"/>\n"
#define X0 "<node id=\"0\" op=\"input\" name=\"x\" type=\"f32[B,4]\"/>\n"

Test(xml, malformed_table) {
  expect_fail("", NC_E_PARSE, "1:1:", "empty input");
  expect_fail("<graph", NC_E_PARSE, "1:", "XML:");
  expect_fail("<graph version=\"2\" name=\"g\"/>", NC_E_UNSUPPORTED, "1:", "unsupported IR XML version \"2\"");
  expect_fail("<graph name=\"g\"/>", NC_E_PARSE, "1:", "needs a 'version'");
  expect_fail("<graph version=\"1\"/>", NC_E_PARSE, "1:", "needs a 'name'");
  expect_fail("<graf version=\"1\" name=\"g\"/>", NC_E_PARSE, "1:", "expected <graph>");
  expect_fail("<graph xmlns=\"urn:other\" version=\"1\" name=\"g\"/>", NC_E_PARSE, "1:", "namespace 'urn:other'");
  expect_fail("<graph version=\"1\" name=\"g\" extra=\"1\"/>", NC_E_PARSE, "1:", "unknown attribute 'extra'");
  expect_fail(XH "<nodes/>\n</graph>", NC_E_PARSE, "3:", "unknown element <nodes>");
  expect_fail(XH "text\n</graph>", NC_E_PARSE, "3:", "unexpected text");
  expect_fail(XH "<node op=\"input\" name=\"x\" type=\"f32[2]\"/>\n</graph>", NC_E_PARSE, "3:", "needs a 'id'");
  expect_fail(XH "<node id=\"0\" op=\"input\" name=\"x\" type=\"f32[2]\" color=\"red\"/>\n</graph>", NC_E_PARSE, "3:",
              "unknown attribute 'color' on <node>");
  expect_fail(XH "<node id=\"0\" op=\"frob\"/>\n</graph>", NC_E_PARSE, "3:", "unknown op 'frob'");
  expect_fail(XH "<node id=\"0\" op=\"input\" name=\"x\"/>\n</graph>", NC_E_PARSE, "3:", "needs a type");
  expect_fail(XH "<node id=\"0\" op=\"input\" name=\"x\" type=\"f32[B,Q]\"/>\n</graph>", NC_E_PARSE, "3:",
              "undeclared symbol 'Q'");
  expect_fail(XH "<node id=\"0\" op=\"input\" name=\"x\" type=\"f32[B,4] junk\"/>\n</graph>", NC_E_PARSE, "3:",
              "after the value");
  expect_fail(XH "<node id=\"0\" op=\"input\" name=\"x\" type=\"f32[99999999999999999999]\"/>\n</graph>", NC_E_PARSE,
              "3:", "2^40");
  expect_fail(XH X0 "<node id=\"1\" op=\"neg\" inputs=\"7\"/>\n</graph>", NC_E_PARSE, "4:", "input '7' is not the id");
  expect_fail(XH "<node id=\"1\" op=\"neg\" inputs=\"1\"/>\n</graph>", NC_E_PARSE, "3:", "forward references");
  expect_fail(XH X0 X0 "</graph>", NC_E_PARSE, "4:", "id '0' is defined twice");
  expect_fail(XH X0 "<node id=\"1\" op=\"neg\" inputs=\"0\" type=\"f32[B]\"/>\n</graph>", NC_E_TYPE, "4:",
              "declared f32[B] but the rule of 'neg' gives f32[B,4]");
  expect_fail(XH X0 "<node id=\"1\" op=\"add\" inputs=\"0\"/>\n</graph>", NC_E_INVALID, "4:", "add takes 2 inputs");
  expect_fail(XH X0 "<node id=\"1\" op=\"rms_norm\" inputs=\"0\"/>\n</graph>", NC_E_PARSE, "4:", "requires");
  expect_fail(XH X0 "<node id=\"1\" op=\"rms_norm\" inputs=\"0\">\n<attr name=\"eps\" value=\"x\"/></node>\n</graph>",
              NC_E_PARSE, "5:", "expected a number");
  expect_fail(XH X0 "<node id=\"1\" op=\"rms_norm\" inputs=\"0\">\n<attr name=\"epz\" value=\"1\"/></node>\n</graph>",
              NC_E_PARSE, "5:", "no attribute 'epz'");
  expect_fail(XH X0 "<node id=\"1\" op=\"rms_norm\" inputs=\"0\">\n<attr name=\"eps\" value=\"0.1\"/>\n"
                    "<attr name=\"eps\" value=\"0.1\"/></node>\n</graph>",
              NC_E_PARSE, "6:", "given twice");
  expect_fail(XH X0 "<node id=\"1\" op=\"rms_norm\" inputs=\"0\"><attr name=\"eps\" value=\"0.1\"><x/></attr></node>\n</graph>",
              NC_E_PARSE, "4:", "unexpected element <x>");
  expect_fail(XH X0 "<node id=\"1\" op=\"neg\" name=\"n\" inputs=\"0\"/>\n</graph>", NC_E_PARSE, "4:", "takes no name");
  expect_fail(XH X0 "<output name=\"o\" node=\"9\"/>\n</graph>", NC_E_PARSE, "4:", "not defined before it");
  expect_fail(XH X0 "<output name=\"o\" node=\"0\"/>\n<output name=\"o\" node=\"0\"/>\n</graph>", NC_E_INVALID, "5:",
              "declared twice");
  expect_fail(XH "<sym name=\"B\"/>\n</graph>", NC_E_PARSE, "3:", "declared twice");
  expect_fail(XH "<sym name=\"1x\"/>\n</graph>", NC_E_INVALID, "3:", "not an identifier");
  expect_fail(XH "<![CDATA[x]]>\n</graph>", NC_E_PARSE, "3:", "unexpected content");
  expect_fail(XH "<node id=\"0\" op=\"input\" name=\"x\" type=\"f32[2]\" type=\"f32[3]\"/>\n</graph>", NC_E_PARSE, "3:",
              "XML:");
  expect_fail("<graph version=\"1\" name=\"\xC3\x28\"/>", NC_E_PARSE, "1:", "XML:");
  expect_fail_n("<graph version=\"1\" name=\"a\0\"/>", 29, NC_E_PARSE, "1:", "XML:");
  expect_fail("<graph version=\"1\" name=\"&bogus;\"/>", NC_E_PARSE, "1:", "XML:");
  expect_fail("<graph version=\"1\" name=\"g\"/><graph version=\"1\" name=\"g\"/>", NC_E_PARSE, "1:", "XML:");
}

Test(xml, dtds_and_entities_are_refused) {
  const char *laughs =
      "<?xml version=\"1.0\"?>\n"
      "<!DOCTYPE lolz [\n"
      " <!ENTITY lol \"lol\">\n"
      " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
      " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
      " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
      "]>\n"
      "<graph version=\"1\" name=\"&lol3;\"/>\n";
  expect_fail(laughs, NC_E_PARSE, "", "<!DOCTYPE");
  const char *xxe = "<?xml version=\"1.0\"?>\n<!DOCTYPE g [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n"
                    "<graph version=\"1\" name=\"&x;\"/>\n";
  expect_fail(xxe, NC_E_PARSE, "", "<!DOCTYPE");
  expect_fail("<!DOCTYPE graph SYSTEM \"http://example.com/x.dtd\"><graph version=\"1\" name=\"g\"/>", NC_E_PARSE, "",
              "<!DOCTYPE");
}

Test(xml, deep_nesting_fails_cleanly) {
  size_t n = 100000;
  char *s = malloc(n * 3 + 100);
  size_t o = (size_t)sprintf(s, "<graph version=\"1\" name=\"g\">");
  for (size_t i = 0; i < n; i++) memcpy(s + o, "<a>", 3), o += 3;
  nc_graph *g = NULL;
  nc_status st = nc_graph_parse_xml(s, o, "t.xml", &g);
  cr_assert_not_null(st);
  cr_assert_null(g);
  cr_assert(!strncmp(nc_status_msg(st), "t.xml:1:", 8), "%s", nc_status_msg(st));
  nc_status_free(st);
  free(s);
}

Test(xml, unrepresentable_names_are_write_errors) {
  nc_graph *g = nc_graph_new("ctl\x01");
  nc_buf b;
  nc_buf_init(&b);
  nc_status st = nc_graph_write_xml(g, &b);
  cr_assert_not_null(st);
  cr_assert_eq(nc_status_code(st), NC_E_UNSUPPORTED);
  cr_assert(strstr(nc_status_msg(st), "U+0001"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_buf_free(&b);
  nc_graph_free(g);
  g = nc_graph_new("bad \xFF utf8");
  nc_buf_init(&b);
  st = nc_graph_write_xml(g, &b);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "UTF-8"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_buf_free(&b);
  nc_graph_free(g);
}

Test(xml, truncations_and_mutations_never_crash) {
  nc_graph *g = nc_test_random_graph(77, 25);
  cr_assert_not_null(g);
  char *s = write_xml(g);
  size_t len = strlen(s);
  size_t close = (size_t)(strstr(s, "</graph>") - s) + strlen("</graph>");
  for (size_t k = 0; k < len; k += 1) {
    nc_graph *h = NULL;
    nc_status st = nc_graph_parse_xml(s, k, "t.xml", &h);
    if (k < close) {
      cr_assert_not_null(st, "prefix %zu parsed", k);
      cr_assert(!strncmp(nc_status_msg(st), "t.xml:", 6), "%s", nc_status_msg(st));
      nc_status_free(st);
    } else {
      cr_assert_null(st, "%s", nc_status_msg(st));
      nc_graph_free(h);
    }
  }
  uint64_t rng = 99;
  int ok = 0, bad = 0;
  char *m = malloc(len + 8);
  for (int it = 0; it < 2000; it++) {
    memcpy(m, s, len);
    size_t ml = len;
    for (int e = 0; e < 2; e++) {
      uint64_t r = nc_test_rand_next(&rng);
      size_t at = (size_t)((r >> 8) % ml);
      static const char interesting[] = "<>&\"'=/ \n0123456789[],*^BTxX\x80\xC3\xFF";
      char c = (r >> 40) % 2 ? interesting[(r >> 48) % (sizeof interesting - 1)] : (char)(r >> 32);
      if (r % 3 == 0) m[at] = c;
      else if (r % 3 == 1 && ml > 1) memmove(m + at, m + at + 1, ml - at - 1), ml--;
      else memmove(m + at + 1, m + at, ml - at), m[at] = c, ml++;
    }
    nc_graph *h = NULL;
    nc_status st = nc_graph_parse_xml(m, ml, "m.xml", &h);
    if (st) {
      cr_assert(!strncmp(nc_status_msg(st), "m.xml:", 6), "%s", nc_status_msg(st));
      nc_status_free(st);
      bad++;
    } else {
      cr_assert_null(nc_graph_verify(h));
      char *x1 = write_xml(h);
      nc_graph *h2 = parse_ok(x1);
      char *x2 = write_xml(h2);
      cr_assert_str_eq(x1, x2);
      free(x1), free(x2);
      nc_graph_free(h2);
      nc_graph_free(h);
      ok++;
    }
  }
  cr_assert_eq(ok + bad, 2000);
  free(m);
  free(s);
  nc_graph_free(g);
}

// models/examples/tiny_block.ncir parses and verifies, and tiny_block.xml is
// exactly what the XML writer makes of it.
Test(xml, example_model_files_agree) {
  const char *root = getenv("NC_SOURCE_DIR");
  if (!root) cr_skip_test("NC_SOURCE_DIR is not set (ctest sets it)");
  char path[1024];
  char *text, *xml;
  size_t tl, xl;
  snprintf(path, sizeof path, "%s/models/examples/tiny_block.ncir", root);
  cr_assert_null(nc_file_read(path, 1 << 20, &text, &tl), "%s", path);
  snprintf(path, sizeof path, "%s/models/examples/tiny_block.xml", root);
  cr_assert_null(nc_file_read(path, 1 << 20, &xml, &xl), "%s", path);
  nc_graph *g = NULL;
  nc_status st = nc_graph_parse_text(text, tl, "tiny_block.ncir", &g);
  cr_assert_null(st, "%s", nc_status_msg(st));
  cr_assert_null(nc_graph_verify(g));
  cr_assert_eq(nc_graph_noutputs(g), 2);
  cr_assert_str_eq(nc_graph_output_name(g, 0), "loss");
  cr_assert_str_eq(nc_graph_output_name(g, 1), "logits");
  cr_assert_eq(nc_graph_nsyms(g), 2);
  char *x = write_xml(g);
  cr_assert_str_eq(x, xml);
  nc_graph *h = parse_ok(xml);
  cr_assert_eq(nc_graph_hash(g), nc_graph_hash(h));
  free(x), free(text), free(xml);
  nc_graph_free(g), nc_graph_free(h);
}
