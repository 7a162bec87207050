// The textual IR: canonical printer and parser (grammar in docs/ir-format.md).
//
// The printer writes one node per line in id order with every attribute of
// the op's schema, so print -> parse -> print is byte-identical and keeps
// nc_graph_hash. The parser is lenient where humans need it (comments, any
// layout, any labels, attributes in any order, defaults omitted, optional
// type annotations on ops whose type is computed) and strict everywhere else;
// it rebuilds the graph through nc_graph_add, so every node passes the same
// shape rules as built ones, and a label must be defined before its use,
// which is what keeps a parsed graph acyclic. The parser has no recursion.
#include "ir/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/irfmt.h"

// ---- printer -----------------------------------------------------------------
nc_status nc_graph_print_text(const nc_graph *g, nc_buf *out) {
  nc_buf_puts(out, "// nanochat-c IR v1\ngraph ");
  const char *name = nc_graph_name(g);
  nc_fmt_qstring(out, name, strlen(name));
  nc_buf_puts(out, " (");
  for (int k = 0; k < nc_graph_nsyms(g); k++) nc_buf_printf(out, "%s%s", k ? ", " : "", nc_graph_sym_name(g, k));
  nc_buf_puts(out, ") {\n");
  for (nc_id id = 0; id < nc_graph_nnodes(g); id++) {
    const nc_node *n = nc_graph_node(g, id);
    nc_attr_spec specs[NC_MAX_ATTRS];
    int ns = nc_op_attr_specs(n->op, specs);
    nc_buf_printf(out, "  %%%u = %s", id, nc_op_get(n->op)->name);
    for (int i = 0; i < ns; i++)
      if (specs[i].type == NC_ATTR_STR) {
        nc_buf_puts(out, " ");
        nc_fmt_attr_value(out, g, n, &specs[i], true);
      }
    if (n->nin) {
      nc_buf_puts(out, "(");
      for (int k = 0; k < n->nin; k++) nc_buf_printf(out, "%s%%%u", k ? ", " : "", nc_graph_input_of(g, id, k));
      nc_buf_puts(out, ")");
    }
    bool first = true;
    for (int i = 0; i < ns; i++) {
      if (specs[i].type == NC_ATTR_STR) continue;
      nc_buf_printf(out, "%s%s=", first ? " {" : ", ", specs[i].name);
      nc_fmt_attr_value(out, g, n, &specs[i], true);
      first = false;
    }
    if (!first) nc_buf_puts(out, "}");
    nc_buf_puts(out, " : ");
    nc_fmt_type(out, g, &n->type);
    nc_buf_puts(out, "\n");
  }
  for (int k = 0; k < nc_graph_noutputs(g); k++) {
    const char *on = nc_graph_output_name(g, k);
    nc_buf_puts(out, "  output ");
    nc_fmt_qstring(out, on, strlen(on));
    nc_buf_printf(out, " = %%%u\n", nc_graph_output(g, k));
  }
  nc_buf_puts(out, "}\n");
  if (out->oom) return nc_errorf(NC_E_NOMEM, "out of memory printing graph '%s'", name);
  return NC_OK;
}

// ---- parser -------------------------------------------------------------------
typedef struct {
  nc_lexer lx;
  nc_graph *g;
  nc_label_map labels;
} nc_text_parser;

static nc_status nc_tp_expected(nc_text_parser *p, const char *what) {
  char d[64];
  nc_tok_describe(&p->lx.tok, d, sizeof d);
  return nc_lex_error_at(&p->lx, NULL, NC_E_PARSE, "expected %s, found %s", what, d);
}

// Formats "(its attributes: a, b)" for unknown-attribute messages.
static void nc_attr_list(const nc_attr_spec *specs, int ns, char *out, size_t n) {
  if (!ns) {
    snprintf(out, n, "it has no attributes");
    return;
  }
  size_t o = (size_t)snprintf(out, n, "its attributes: ");
  for (int i = 0; i < ns && o < n; i++) o += (size_t)snprintf(out + o, n - o, "%s%s", i ? ", " : "", specs[i].name);
}

static nc_status nc_tp_inputs(nc_text_parser *p, nc_node_desc *d) {
  nc_lexer *lx = &p->lx;
  NC_TRY(nc_lex_next(lx));  // '('
  if (nc_tok_is(lx, ')')) return nc_lex_next(lx);
  for (;;) {
    if (lx->tok.kind != NC_TK_LABEL) return nc_tp_expected(p, "an input label such as %0");
    nc_id id = nc_label_find(&p->labels, lx->tok.p, lx->tok.n);
    if (id == NC_NONE)
      return nc_lex_error_at(lx, NULL, NC_E_PARSE,
                             "label %%%.*s is used before it is defined (inputs must be defined on earlier "
                             "lines: forward references and cycles are not allowed)",
                             (int)(lx->tok.n > 64 ? 64 : lx->tok.n), lx->tok.p);
    if (d->nin >= NC_MAX_INPUTS)
      return nc_lex_error_at(lx, NULL, NC_E_PARSE, "too many inputs (at most %d)", NC_MAX_INPUTS);
    d->in[d->nin++] = id;
    NC_TRY(nc_lex_next(lx));
    if (nc_tok_is(lx, ')')) return nc_lex_next(lx);
    if (!nc_tok_is(lx, ',')) return nc_tp_expected(p, "',' or ')' in the input list");
    NC_TRY(nc_lex_next(lx));
  }
}

static nc_status nc_tp_attrs(nc_text_parser *p, const nc_op_info *info, const nc_attr_spec *specs, int ns,
                             bool *seen, nc_node_desc *d, char **str) {
  nc_lexer *lx = &p->lx;
  NC_TRY(nc_lex_next(lx));  // '{'
  if (nc_tok_is(lx, '}')) return nc_lex_next(lx);
  for (;;) {
    if (lx->tok.kind != NC_TK_IDENT) return nc_tp_expected(p, "an attribute name");
    int k = -1;
    for (int i = 0; i < ns; i++)
      if (strlen(specs[i].name) == lx->tok.n && !memcmp(specs[i].name, lx->tok.p, lx->tok.n)) k = i;
    if (k < 0) {
      char list[200];
      nc_attr_list(specs, ns, list, sizeof list);
      return nc_lex_error_at(lx, NULL, NC_E_PARSE, "op '%s' has no attribute '%.*s' (%s)", info->name,
                             (int)(lx->tok.n > 64 ? 64 : lx->tok.n), lx->tok.p, list);
    }
    if (seen[k]) return nc_lex_error_at(lx, NULL, NC_E_PARSE, "attribute '%s' is given twice", specs[k].name);
    seen[k] = true;
    NC_TRY(nc_lex_next(lx));
    NC_TRY(nc_lex_expect(lx, '=', "after the attribute name"));
    NC_TRY(nc_parse_attr_value(lx, &specs[k], d, str));
    if (nc_tok_is(lx, '}')) return nc_lex_next(lx);
    if (!nc_tok_is(lx, ',')) return nc_tp_expected(p, "',' or '}' in the attribute list");
    NC_TRY(nc_lex_next(lx));
  }
}

// LABEL '=' OP STRING? ('(' inputs ')')? ('{' attrs '}')? (':' type)?
static nc_status nc_tp_node_body(nc_text_parser *p, const nc_tok *label, char **str) {
  nc_lexer *lx = &p->lx;
  NC_TRY(nc_lex_expect(lx, '=', "after the node label"));
  if (lx->tok.kind != NC_TK_IDENT) return nc_tp_expected(p, "an op name");
  nc_tok optok = lx->tok;
  nc_op op = nc_op_lookup(optok.p, optok.n);
  if (op == NC_OP_COUNT)
    return nc_lex_error_at(lx, NULL, NC_E_PARSE, "unknown op '%.*s'", (int)(optok.n > 64 ? 64 : optok.n), optok.p);
  const nc_op_info *info = nc_op_get(op);
  NC_TRY(nc_lex_next(lx));
  nc_attr_spec specs[NC_MAX_ATTRS];
  int ns = nc_op_attr_specs(op, specs);
  bool seen[NC_MAX_ATTRS] = {0};
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  if (lx->tok.kind == NC_TK_STRING) {
    int k = -1;
    for (int i = 0; i < ns; i++)
      if (specs[i].type == NC_ATTR_STR) k = i;
    if (k < 0) return nc_lex_error_at(lx, NULL, NC_E_PARSE, "op '%s' takes no name string", info->name);
    seen[k] = true;
    NC_TRY(nc_parse_attr_value(lx, &specs[k], &d, str));
  }
  if (nc_tok_is(lx, '(')) NC_TRY(nc_tp_inputs(p, &d));
  if (nc_tok_is(lx, '{')) NC_TRY(nc_tp_attrs(p, info, specs, ns, seen, &d, str));
  for (int i = 0; i < ns; i++)
    if (!seen[i] && !specs[i].has_default) {
      if (specs[i].type == NC_ATTR_STR)
        return nc_lex_error_at(lx, &optok, NC_E_PARSE, "op '%s' needs a name: %s \"...\"", info->name, info->name);
      return nc_lex_error_at(lx, &optok, NC_E_PARSE, "op '%s' requires attribute '%s'", info->name, specs[i].name);
    }
  nc_type declared;
  nc_tok typetok = lx->tok;
  bool have_type = false;
  if (nc_tok_is(lx, ':')) {
    NC_TRY(nc_lex_next(lx));
    typetok = lx->tok;
    NC_TRY(nc_parse_type(lx, p->g, &declared));
    have_type = true;
  }
  bool decl = info->flags & NC_OPF_DECL;
  if (decl && !have_type) {
    char dsc[64];
    nc_tok_describe(&lx->tok, dsc, sizeof dsc);
    return nc_lex_error_at(lx, NULL, NC_E_PARSE, "op '%s' declares its type: expected ': dtype[dims]', found %s",
                           info->name, dsc);
  }
  if (decl) d.type = declared;
  d.str = *str;
  nc_id id;
  nc_status st = nc_graph_add(p->g, &d, &id);
  if (st) {
    return nc_status_prefix(st, "%s:%d:%d: %%%.*s = %s: ", lx->file, optok.line, optok.col,
                            (int)(label->n > 64 ? 64 : label->n), label->p, info->name);
  }
  if (have_type && !decl) {
    const nc_type *got = &nc_graph_node(p->g, id)->type;
    if (!nc_type_eq(got, &declared)) {
      nc_buf a, b;
      nc_buf_init(&a);
      nc_buf_init(&b);
      nc_fmt_type(&a, p->g, &declared);
      nc_fmt_type(&b, p->g, got);
      st = nc_lex_error_at(lx, &typetok, NC_E_TYPE, "declared %s but the rule of '%s' gives %s", a.data ? a.data : "?",
                           info->name, b.data ? b.data : "?");
      nc_buf_free(&a);
      nc_buf_free(&b);
      return st;
    }
  }
  if (!nc_label_put(&p->labels, label->p, label->n, id)) return nc_errorf(NC_E_NOMEM, "out of memory");
  return NC_OK;
}

static nc_status nc_tp_node(nc_text_parser *p) {
  nc_tok label = p->lx.tok;
  if (nc_label_find(&p->labels, label.p, label.n) != NC_NONE)
    return nc_lex_error_at(&p->lx, NULL, NC_E_PARSE, "label %%%.*s is defined twice",
                           (int)(label.n > 64 ? 64 : label.n), label.p);
  NC_TRY(nc_lex_next(&p->lx));
  char *str = NULL;
  nc_status st = nc_tp_node_body(p, &label, &str);
  free(str);
  return st;
}

// 'output' STRING '=' LABEL
static nc_status nc_tp_output(nc_text_parser *p) {
  nc_lexer *lx = &p->lx;
  nc_tok start = lx->tok;
  NC_TRY(nc_lex_next(lx));
  if (lx->tok.kind != NC_TK_STRING) return nc_tp_expected(p, "the output's name as a string");
  char *name = strdup(lx->str.data ? lx->str.data : "");
  if (!name) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_status st = nc_lex_next(lx);
  if (!st) st = nc_lex_expect(lx, '=', "after the output name");
  if (!st && lx->tok.kind != NC_TK_LABEL) st = nc_tp_expected(p, "a node label such as %3");
  if (!st) {
    nc_id id = nc_label_find(&p->labels, lx->tok.p, lx->tok.n);
    if (id == NC_NONE)
      st = nc_lex_error_at(lx, NULL, NC_E_PARSE, "output refers to undefined label %%%.*s",
                           (int)(lx->tok.n > 64 ? 64 : lx->tok.n), lx->tok.p);
    else if ((st = nc_graph_set_output(p->g, name, id)))
      st = nc_status_prefix(st, "%s:%d:%d: ", lx->file, start.line, start.col);
  }
  free(name);
  return st ? st : nc_lex_next(lx);
}

static nc_status nc_tp_header(nc_text_parser *p) {
  nc_lexer *lx = &p->lx;
  if (!nc_tok_is_word(lx, "graph")) return nc_tp_expected(p, "'graph' at the start of the IR");
  NC_TRY(nc_lex_next(lx));
  if (lx->tok.kind != NC_TK_STRING) return nc_tp_expected(p, "the graph's name as a string");
  p->g = nc_graph_new(lx->str.data ? lx->str.data : "");
  if (!p->g) return nc_errorf(NC_E_NOMEM, "out of memory");
  NC_TRY(nc_lex_next(lx));
  if (nc_tok_is(lx, '(')) {
    NC_TRY(nc_lex_next(lx));
    while (!nc_tok_is(lx, ')')) {
      if (lx->tok.kind != NC_TK_IDENT) return nc_tp_expected(p, "a symbol name or ')'");
      nc_tok t = lx->tok;
      if (nc_graph_sym_find(p->g, t.p, t.n) >= 0)
        return nc_lex_error_at(lx, NULL, NC_E_PARSE, "symbol '%.*s' is declared twice", (int)(t.n > 64 ? 64 : t.n), t.p);
      char name[80];
      if (t.n >= sizeof name)
        return nc_lex_error_at(lx, NULL, NC_E_PARSE, "symbol name '%.32s...' is longer than 63 characters", t.p);
      memcpy(name, t.p, t.n);
      name[t.n] = 0;
      nc_status st = nc_graph_sym(p->g, name, NULL);
      if (st) return nc_status_prefix(st, "%s:%d:%d: ", lx->file, t.line, t.col);
      NC_TRY(nc_lex_next(lx));
      if (nc_tok_is(lx, ',')) {
        NC_TRY(nc_lex_next(lx));
        if (nc_tok_is(lx, ')')) return nc_tp_expected(p, "a symbol name after ','");
      } else if (!nc_tok_is(lx, ')')) {
        return nc_tp_expected(p, "',' or ')' in the symbol list");
      }
    }
    NC_TRY(nc_lex_next(lx));
  }
  return nc_lex_expect(lx, '{', "to open the graph body");
}

static nc_status nc_tp_graph(nc_text_parser *p) {
  nc_lexer *lx = &p->lx;
  NC_TRY(nc_tp_header(p));
  for (;;) {
    if (lx->tok.kind == NC_TK_LABEL) NC_TRY(nc_tp_node(p));
    else if (nc_tok_is_word(lx, "output")) NC_TRY(nc_tp_output(p));
    else if (nc_tok_is(lx, '}')) break;
    else if (lx->tok.kind == NC_TK_EOF) return nc_tp_expected(p, "a statement or the closing '}' of the graph");
    else return nc_tp_expected(p, "a node (%label = op ...), 'output' or '}'");
  }
  NC_TRY(nc_lex_next(lx));
  if (lx->tok.kind != NC_TK_EOF) {
    char d[64];
    nc_tok_describe(&lx->tok, d, sizeof d);
    return nc_lex_error_at(lx, NULL, NC_E_PARSE, "unexpected %s after the closing '}' of the graph", d);
  }
  nc_status st = nc_graph_verify(p->g);
  if (st) return nc_status_prefix(st, "%s: ", lx->file);
  return NC_OK;
}

nc_status nc_graph_parse_text(const char *src, size_t len, const char *filename, nc_graph **out) {
  *out = NULL;
  nc_text_parser p;
  memset(&p, 0, sizeof p);
  // a leading UTF-8 byte order mark is skipped (editors on some systems add one)
  if (src && len >= 3 && !memcmp(src, "\xEF\xBB\xBF", 3)) src += 3, len -= 3;
  nc_status st = nc_lex_init(&p.lx, src, len, filename);
  if (!st) st = nc_tp_graph(&p);
  nc_lex_free(&p.lx);
  nc_label_map_free(&p.labels);
  if (st) {
    nc_graph_free(p.g);
    return st;
  }
  *out = p.g;
  return NC_OK;
}
