// Graphviz DOT rendering: one box per node (id, op, name, attributes, type),
// one edge per input (labelled with the input's position when an op has
// several), and one ellipse per named output. Every string goes through
// nc_dot_escape, so names with quotes, backslashes or line breaks cannot
// break out of a label.
#include "ir/dot.h"

#include <string.h>

#include "ir/irfmt.h"

// Appends s as the inside of a DOT double-quoted string: '"' and '\' are
// escaped (so escString sequences such as \N or \l cannot be injected), line
// breaks become \n (a centered line break in a label), other control bytes
// and invalid UTF-8 bytes
// are shown as \\xHH text.
static void nc_dot_escape(nc_buf *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"') nc_buf_puts(b, "\\\"");
    else if (c == '\\') nc_buf_puts(b, "\\\\");
    else if (c == '\n') nc_buf_puts(b, "\\n");
    else if (c < 0x20 || c == 0x7f) nc_buf_printf(b, "\\\\x%02X", c);
    else if (c < 0x80) nc_buf_put(b, &s[i], 1);
    else {
      size_t len = nc_utf8_seq((const unsigned char *)s + i, n - i);
      if (!len) {
        nc_buf_printf(b, "\\\\x%02X", c);  // invalid UTF-8 (only possible in a graph name)
        continue;
      }
      nc_buf_put(b, s + i, len);
      i += len - 1;
    }
  }
}

nc_status nc_graph_write_dot(const nc_graph *g, nc_buf *out) {
  nc_buf lab;
  nc_buf_init(&lab);
  const char *gname = nc_graph_name(g);
  nc_buf_puts(out, "digraph \"");
  nc_dot_escape(out, gname, strlen(gname));
  nc_buf_puts(out, "\" {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n"
                   "  edge [fontsize=8];\n");
  for (nc_id id = 0; id < nc_graph_nnodes(g); id++) {
    const nc_node *n = nc_graph_node(g, id);
    nc_attr_spec specs[NC_MAX_ATTRS];
    int ns = nc_op_attr_specs(n->op, specs);
    // the label is built in text-IR syntax, then escaped once for DOT
    lab.len = 0;
    nc_buf_printf(&lab, "%%%u %s", id, nc_op_get(n->op)->name);
    for (int i = 0; i < ns; i++) {
      nc_buf_puts(&lab, specs[i].type == NC_ATTR_STR ? " " : "\n");
      if (specs[i].type != NC_ATTR_STR) nc_buf_printf(&lab, "%s=", specs[i].name);
      nc_fmt_attr_value(&lab, g, n, &specs[i], true);
    }
    nc_buf_puts(&lab, "\n");
    nc_fmt_type(&lab, g, &n->type);
    const char *style = n->op == NC_OP_INPUT ? ", style=filled, fillcolor=\"#dbeafe\""
                        : n->op == NC_OP_PARAM ? ", style=filled, fillcolor=\"#fef3c7\""
                        : n->op == NC_OP_CONST || n->op == NC_OP_IOTA ? ", style=filled, fillcolor=\"#e5e7eb\""
                                                                        : "";
    nc_buf_printf(out, "  n%u [label=\"", id);
    nc_dot_escape(out, lab.data ? lab.data : "", lab.len);
    nc_buf_printf(out, "\"%s];\n", style);
    for (int k = 0; k < n->nin; k++) {
      nc_buf_printf(out, "  n%u -> n%u", nc_graph_input_of(g, id, k), id);
      if (n->nin > 1) nc_buf_printf(out, " [label=\"%d\"]", k);
      nc_buf_puts(out, ";\n");
    }
  }
  for (int k = 0; k < nc_graph_noutputs(g); k++) {
    const char *on = nc_graph_output_name(g, k);
    lab.len = 0;
    nc_buf_puts(&lab, "output ");
    nc_fmt_qstring(&lab, on, strlen(on));
    nc_buf_printf(out, "  out%d [shape=ellipse, label=\"", k);
    nc_dot_escape(out, lab.data ? lab.data : "", lab.len);
    nc_buf_printf(out, "\"];\n  n%u -> out%d;\n", nc_graph_output(g, k), k);
  }
  nc_buf_puts(out, "}\n");
  nc_buf_free(&lab);
  if (out->oom) return nc_errorf(NC_E_NOMEM, "out of memory writing DOT");
  return NC_OK;
}
