// Graphviz DOT output: one node statement per graph node, one edge per input
// (and per output), labels escaped so that no name can break the syntax.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/dot.h"
#include "ir/graph.h"
#include "tests/support/randgraph.h"

static char *write_dot(const nc_graph *g) {
  nc_buf b;
  nc_buf_init(&b);
  nc_status st = nc_graph_write_dot(g, &b);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return nc_buf_take(&b);
}

// Checks the DOT text line by line: every line has balanced, properly
// escaped double quotes (no raw line break can sit inside a string, since
// each statement is one line) and no raw control bytes. Counts node
// statements "  nK [", edges "  nA -> nB" and output nodes "  outK [".
static void check_dot(const char *s, int *nodes, int *edges, int *outs) {
  *nodes = *edges = *outs = 0;
  const char *line = s;
  while (*line) {
    const char *end = strchr(line, '\n');
    cr_assert_not_null(end, "unterminated last line");
    bool in = false;
    for (const char *p = line; p < end; p++) {
      cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "raw control byte in DOT: %.*s", (int)(end - line), line);
      if (in && *p == '\\') {
        p++;  // escaped character: skip it
        cr_assert(p < end, "dangling backslash");
        continue;
      }
      if (*p == '"') in = !in;
    }
    cr_assert(!in, "unbalanced quotes: %.*s", (int)(end - line), line);
    unsigned a, b;
    int k;
    char tail[4];
    if (sscanf(line, "  n%u -> n%u%1[;[ ]", &a, &b, tail) == 3) {
      cr_assert_lt(a, b, "edges go from earlier to later nodes");
      (*edges)++;
    } else if (sscanf(line, "  n%u -> out%d;", &a, &k) == 2) {
      (*edges)++;
    } else if (sscanf(line, "  n%u [label=%1[\"]", &a, tail) == 2) {
      cr_assert_eq((int)a, *nodes, "node statements in id order");
      (*nodes)++;
    } else if (sscanf(line, "  out%d [shape=ellipse%1[,]", &k, tail) == 2) {
      (*outs)++;
    }
    line = end + 1;
  }
}

Test(dot, structure_of_random_graphs) {
  for (uint64_t seed = 1; seed <= 60; seed++) {
    nc_graph *g = nc_test_random_graph_ex(seed, 20 + (int)seed * 3, NC_RG_CONTROL_NAMES);
    cr_assert_not_null(g);
    char *s = write_dot(g);
    cr_assert(!strncmp(s, "digraph \"", 9));
    cr_assert(strstr(s, "\n}\n") && s[strlen(s) - 2] == '}');
    int nodes, edges, outs, nin = 0;
    check_dot(s, &nodes, &edges, &outs);
    for (nc_id id = 0; id < nc_graph_nnodes(g); id++) nin += nc_graph_node(g, id)->nin;
    cr_assert_eq(nodes, (int)nc_graph_nnodes(g));
    cr_assert_eq(outs, nc_graph_noutputs(g));
    cr_assert_eq(edges, nin + nc_graph_noutputs(g));
    free(s);
    nc_graph_free(g);
  }
}

Test(dot, labels_are_escaped) {
  nc_graph *g = nc_graph_new("g \"q\" \\N");
  nc_id x = nc_leaf(g, NC_OP_INPUT, "say \"hi\"\nnext\\line\x01", nc_type_make(NC_F32, 1, (nc_dim[]){nc_dim_const(3)}));
  nc_id y = nc_op2(g, NC_OP_MUL, x, x);
  cr_assert_null(nc_graph_error(g));
  cr_assert_null(nc_graph_set_output(g, "out \"1\"\n", y));
  char *s = write_dot(g);
  // graph name: quotes and backslashes escaped (no \N escString injection)
  cr_assert(strstr(s, "digraph \"g \\\"q\\\" \\\\N\" {\n"), "%s", s);
  // the node label holds the text-IR form of the name, escaped for DOT
  cr_assert(strstr(s, "  n0 [label=\"%0 input \\\"say \\\\\\\"hi\\\\\\\"\\\\nnext\\\\\\\\line\\\\x01\\\"\\nf32[3]\""),
            "%s", s);
  cr_assert(strstr(s, "  n1 [label=\"%1 mul\\nf32[3]\"];\n"), "%s", s);
  cr_assert(strstr(s, "  n0 -> n1 [label=\"0\"];\n  n0 -> n1 [label=\"1\"];\n"), "%s", s);
  cr_assert(strstr(s, "  out0 [shape=ellipse, label=\"output \\\"out \\\\\\\"1\\\\\\\"\\\\n\\\"\"];\n  n1 -> out0;\n"), "%s", s);
  int nodes, edges, outs;
  check_dot(s, &nodes, &edges, &outs);
  cr_assert_eq(nodes, 2);
  cr_assert_eq(edges, 3);
  cr_assert_eq(outs, 1);
  free(s);
  nc_graph_free(g);
}

Test(dot, attributes_appear_in_labels) {
  nc_graph *g = nc_graph_new("a");
  int B;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  nc_id x = nc_leaf(g, NC_OP_PARAM, "w", nc_type_make(NC_BF16, 2, (nc_dim[]){nc_dim_sym(B), nc_dim_const(8)}));
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_RMS_NORM);
  d.nin = 1, d.in[0] = x, d.fa[0] = 1e-5;
  nc_build(g, &d);
  cr_assert_null(nc_graph_error(g));
  char *s = write_dot(g);
  cr_assert(strstr(s, "  n1 [label=\"%1 rms_norm\\neps=1e-05\\nbf16[B,8]\"];\n"), "%s", s);
  cr_assert(strstr(s, "  n0 [label=\"%0 param \\\"w\\\"\\nbf16[B,8]\", style=filled"), "%s", s);
  free(s);
  nc_graph_free(g);
}
