// The versioned XML form of the IR (schema in docs/ir-format.md):
//
//   <graph xmlns="https://nanochat-c/ir" version="1" name="tiny">
//     <sym name="B"/>
//     <node id="0" op="input" name="tokens" type="i32[B,T]"/>
//     <node id="3" op="rms_norm" inputs="2" type="f32[B,T,64]">
//       <attr name="eps" value="1.1920929e-07"/>
//     </node>
//     <output name="loss" node="12"/>
//   </graph>
//
// Writing is done by hand with exact escaping (deterministic bytes, so the
// form round-trips byte for byte). Reading goes through libxml2 with a parser
// context of our own: no network, no DTD (a <!DOCTYPE> stops the parser), no
// entity substitution, errors kept in the context instead of printed, and no
// process-global handler touched. Value syntax inside attributes (types,
// lists, floats) is the text IR's, read by the same code (ir/irfmt.c).
#include "ir/xml.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "ir/irfmt.h"

#define NC_XML_NS "https://nanochat-c/ir"

// ---- writer --------------------------------------------------------------------
// Escapes s for a double-quoted attribute value. XML 1.0 cannot carry most
// control characters (not even as &#N;), nor U+FFFE/U+FFFF: those are errors.
static nc_status nc_xml_escape(nc_buf *b, const char *s, const char *what) {
  size_t n = strlen(s);
  long bad = nc_utf8_invalid_at(s, n);
  if (bad >= 0) return nc_errorf(NC_E_UNSUPPORTED, "XML: %s is not valid UTF-8 (byte %ld)", what, bad);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
      case '&': nc_buf_puts(b, "&amp;"); continue;
      case '<': nc_buf_puts(b, "&lt;"); continue;
      case '>': nc_buf_puts(b, "&gt;"); continue;
      case '"': nc_buf_puts(b, "&quot;"); continue;
      case '\n': nc_buf_puts(b, "&#10;"); continue;
      case '\r': nc_buf_puts(b, "&#13;"); continue;
      case '\t': nc_buf_puts(b, "&#9;"); continue;
      default: break;
    }
    if (c < 0x20)
      return nc_errorf(NC_E_UNSUPPORTED, "XML: %s contains control character U+%04X, which XML 1.0 cannot represent",
                       what, c);
    if (c == 0xEF && i + 2 < n && (unsigned char)s[i + 1] == 0xBF && ((unsigned char)s[i + 2] & 0xFE) == 0xBE)
      return nc_errorf(NC_E_UNSUPPORTED, "XML: %s contains the noncharacter U+FFFE or U+FFFF", what);
    nc_buf_put(b, &s[i], 1);
  }
  return NC_OK;
}

nc_status nc_graph_write_xml(const nc_graph *g, nc_buf *out) {
  nc_buf_puts(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  nc_buf_printf(out, "<graph xmlns=\"%s\" version=\"%d\" name=\"", NC_XML_NS, NC_XML_VERSION);
  NC_TRY(nc_xml_escape(out, nc_graph_name(g), "the graph name"));
  nc_buf_puts(out, "\">\n");
  for (int k = 0; k < nc_graph_nsyms(g); k++) nc_buf_printf(out, "  <sym name=\"%s\"/>\n", nc_graph_sym_name(g, k));
  nc_buf tmp;
  nc_buf_init(&tmp);
  nc_status st = NC_OK;
  for (nc_id id = 0; id < nc_graph_nnodes(g) && !st; id++) {
    const nc_node *n = nc_graph_node(g, id);
    nc_attr_spec specs[NC_MAX_ATTRS];
    int ns = nc_op_attr_specs(n->op, specs);
    nc_buf_printf(out, "  <node id=\"%u\" op=\"%s\"", id, nc_op_get(n->op)->name);
    bool children = false;
    for (int i = 0; i < ns; i++) {
      if (specs[i].type != NC_ATTR_STR) {
        children = true;
        continue;
      }
      nc_buf_puts(out, " name=\"");
      const char *s = nc_graph_str(g, n->ia[specs[i].slot]);
      char what[48];
      snprintf(what, sizeof what, "the name of node %u", id);
      if ((st = nc_xml_escape(out, s ? s : "", what))) break;
      nc_buf_puts(out, "\"");
    }
    if (st) break;
    if (n->nin) {
      nc_buf_puts(out, " inputs=\"");
      for (int k = 0; k < n->nin; k++) nc_buf_printf(out, "%s%u", k ? " " : "", nc_graph_input_of(g, id, k));
      nc_buf_puts(out, "\"");
    }
    tmp.len = 0;
    nc_fmt_type(&tmp, g, &n->type);
    nc_buf_puts(out, " type=\"");
    if ((st = nc_xml_escape(out, tmp.data ? tmp.data : "", "a type"))) break;
    nc_buf_puts(out, children ? "\">\n" : "\"/>\n");
    if (!children) continue;
    for (int i = 0; i < ns; i++) {
      if (specs[i].type == NC_ATTR_STR) continue;
      tmp.len = 0;
      nc_fmt_attr_value(&tmp, g, n, &specs[i], false);
      nc_buf_printf(out, "    <attr name=\"%s\" value=\"", specs[i].name);
      if ((st = nc_xml_escape(out, tmp.data ? tmp.data : "", "an attribute value"))) break;
      nc_buf_puts(out, "\"/>\n");
    }
    nc_buf_puts(out, "  </node>\n");
  }
  for (int k = 0; k < nc_graph_noutputs(g) && !st; k++) {
    nc_buf_puts(out, "  <output name=\"");
    if ((st = nc_xml_escape(out, nc_graph_output_name(g, k), "an output name"))) break;
    nc_buf_printf(out, "\" node=\"%u\"/>\n", nc_graph_output(g, k));
  }
  nc_buf_free(&tmp);
  if (st) return st;
  nc_buf_puts(out, "</graph>\n");
  if (out->oom) return nc_errorf(NC_E_NOMEM, "out of memory writing XML");
  return NC_OK;
}

// ---- reader --------------------------------------------------------------------
typedef struct {
  const char *file;
  nc_graph *g;
  nc_label_map labels;
} nc_xml_reader;

// Attributes of one element, looked up by the names it may have.
#define NC_XML_MAX_ATTRS 6
typedef struct {
  const char *names[NC_XML_MAX_ATTRS];
  xmlChar *vals[NC_XML_MAX_ATTRS];
  int n;
} nc_xml_attrs;

static void nc_xml_attrs_free(nc_xml_attrs *a) {
  for (int i = 0; i < a->n; i++) xmlFree(a->vals[i]);
  memset(a->vals, 0, sizeof a->vals);
}

static const char *nc_xml_get(const nc_xml_attrs *a, const char *name) {
  for (int i = 0; i < a->n; i++)
    if (!strcmp(a->names[i], name)) return (const char *)a->vals[i];
  return NULL;
}

static int nc_xml_line(const xmlNode *node) { return (int)xmlGetLineNo((xmlNode *)node); }

static nc_status nc_xml_err(const nc_xml_reader *r, const xmlNode *node, nc_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static nc_status nc_xml_err(const nc_xml_reader *r, const xmlNode *node, nc_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  nc_status st = nc_verrorf(code, fmt, ap);
  va_end(ap);
  return nc_status_prefix(st, "%s:%d: ", r->file, nc_xml_line(node));
}

// Elements must be in our namespace or in none.
static nc_status nc_xml_check_ns(const nc_xml_reader *r, const xmlNode *node) {
  if (node->ns && (!node->ns->href || strcmp((const char *)node->ns->href, NC_XML_NS)))
    return nc_xml_err(r, node, NC_E_PARSE, "element <%.40s> is in namespace '%.80s' (expected %s)",
                      (const char *)node->name, node->ns->href ? (const char *)node->ns->href : "", NC_XML_NS);
  return NC_OK;
}

// Reads the attributes of node into a (names listed in a->names, a->n set);
// any other attribute is an error.
static nc_status nc_xml_read_attrs(const nc_xml_reader *r, const xmlNode *node, nc_xml_attrs *a) {
  for (const xmlAttr *at = node->properties; at; at = at->next) {
    int k = -1;
    for (int i = 0; i < a->n; i++)
      if (!strcmp(a->names[i], (const char *)at->name)) k = i;
    if (k < 0 || at->ns) {
      char list[120] = "";
      for (int i = 0; i < a->n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", a->names[i]);
      return nc_xml_err(r, node, NC_E_PARSE, "unknown attribute '%.40s' on <%s> (allowed: %s)", (const char *)at->name,
                        (const char *)node->name, list);
    }
    if (a->vals[k]) xmlFree(a->vals[k]);  // duplicates are rejected by libxml2 already
    a->vals[k] = xmlNodeGetContent((const xmlNode *)at);
    if (!a->vals[k]) return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  return NC_OK;
}

// Only whitespace text and comments may sit between elements.
static nc_status nc_xml_check_misc(const nc_xml_reader *r, const xmlNode *c, const xmlNode *parent) {
  if (c->type == XML_COMMENT_NODE) return NC_OK;
  if (c->type == XML_TEXT_NODE) {
    const xmlChar *p = c->content, *last = NULL;
    for (; p && *p; p++)
      if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') last = p;
    if (!last) return NC_OK;
    // libxml2 numbers a text node by the line where it ends; report the line
    // of its last non-blank character instead
    int line = nc_xml_line(c);
    for (p = last; *p; p++)
      if (*p == '\n') line--;
    return nc_errorf(NC_E_PARSE, "%s:%d: unexpected text inside <%s>", r->file, line, (const char *)parent->name);
  }
  if (c->type == XML_ELEMENT_NODE) return nc_xml_err(r, c, NC_E_PARSE, "unexpected element <%.40s> inside <%s>", (const char *)c->name, (const char *)parent->name);
  return nc_xml_err(r, c, NC_E_PARSE, "unexpected content (node type %d) inside <%s>", (int)c->type, (const char *)parent->name);
}

static nc_status nc_xml_no_children(const nc_xml_reader *r, const xmlNode *node) {
  for (const xmlNode *c = node->children; c; c = c->next) NC_TRY(nc_xml_check_misc(r, c, node));
  return NC_OK;
}

static nc_status nc_xml_need(const nc_xml_reader *r, const xmlNode *node, const nc_xml_attrs *a, const char *name,
                             const char **out) {
  *out = nc_xml_get(a, name);
  if (!*out) return nc_xml_err(r, node, NC_E_PARSE, "<%s> needs a '%s' attribute", (const char *)node->name, name);
  return NC_OK;
}

static nc_status nc_xml_sym(nc_xml_reader *r, const xmlNode *node) {
  nc_xml_attrs a = {{"name"}, {0}, 1};
  const char *name;
  nc_status st = nc_xml_read_attrs(r, node, &a);
  if (!st) st = nc_xml_no_children(r, node);
  if (!st) st = nc_xml_need(r, node, &a, "name", &name);
  if (!st && nc_graph_sym_find(r->g, name, strlen(name)) >= 0)
    st = nc_xml_err(r, node, NC_E_PARSE, "symbol '%.64s' is declared twice", name);
  if (!st && (st = nc_graph_sym(r->g, name, NULL))) st = nc_status_prefix(st, "%s:%d: ", r->file, nc_xml_line(node));
  nc_xml_attrs_free(&a);
  return st;
}

static nc_status nc_xml_output(nc_xml_reader *r, const xmlNode *node) {
  nc_xml_attrs a = {{"name", "node"}, {0}, 2};
  const char *name, *ref;
  nc_status st = nc_xml_read_attrs(r, node, &a);
  if (!st) st = nc_xml_no_children(r, node);
  if (!st) st = nc_xml_need(r, node, &a, "name", &name);
  if (!st) st = nc_xml_need(r, node, &a, "node", &ref);
  if (!st) {
    nc_id id = nc_label_find(&r->labels, ref, strlen(ref));
    if (id == NC_NONE) st = nc_xml_err(r, node, NC_E_PARSE, "output '%.64s' refers to node '%.64s', which is not defined before it", name, ref);
    else if ((st = nc_graph_set_output(r->g, name, id))) st = nc_status_prefix(st, "%s:%d: ", r->file, nc_xml_line(node));
  }
  nc_xml_attrs_free(&a);
  return st;
}

// "1 0 3" -> d->in[]
static nc_status nc_xml_inputs(nc_xml_reader *r, const xmlNode *node, const char *s, nc_node_desc *d) {
  const char *p = s;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (!*p) return NC_OK;
    const char *e = p;
    while (*e && *e != ' ' && *e != '\t' && *e != '\n' && *e != '\r') e++;
    nc_id id = nc_label_find(&r->labels, p, (size_t)(e - p));
    if (id == NC_NONE)
      return nc_xml_err(r, node, NC_E_PARSE,
                        "input '%.*s' is not the id of an earlier node (forward references and cycles are not allowed)",
                        (int)(e - p > 64 ? 64 : e - p), p);
    if (d->nin >= NC_MAX_INPUTS) return nc_xml_err(r, node, NC_E_PARSE, "too many inputs (at most %d)", NC_MAX_INPUTS);
    d->in[d->nin++] = id;
    p = e;
  }
}

static nc_status nc_xml_node_attrs(nc_xml_reader *r, const xmlNode *node, const char *ctxid, nc_op op,
                                   const nc_attr_spec *specs, int ns, bool *seen, nc_node_desc *d) {
  for (const xmlNode *c = node->children; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE || strcmp((const char *)c->name, "attr")) {
      NC_TRY(nc_xml_check_misc(r, c, node));
      continue;
    }
    NC_TRY(nc_xml_check_ns(r, c));
    nc_xml_attrs a = {{"name", "value"}, {0}, 2};
    const char *name, *value;
    nc_status st = nc_xml_read_attrs(r, c, &a);
    if (!st) st = nc_xml_no_children(r, c);
    if (!st) st = nc_xml_need(r, c, &a, "name", &name);
    if (!st) st = nc_xml_need(r, c, &a, "value", &value);
    int k = -1;
    for (int i = 0; !st && i < ns; i++)
      if (!strcmp(specs[i].name, name) && specs[i].type != NC_ATTR_STR) k = i;
    if (!st && k < 0)
      st = nc_xml_err(r, c, NC_E_PARSE, "op '%s' has no attribute '%.40s'%s", nc_op_get(op)->name, name,
                      !strcmp(name, "name") ? " (names go in the name attribute of <node>)" : "");
    if (!st && seen[k]) st = nc_xml_err(r, c, NC_E_PARSE, "attribute '%s' is given twice", specs[k].name);
    if (!st) {
      seen[k] = true;
      char ctx[120];
      snprintf(ctx, sizeof ctx, "<node id=\"%.40s\"> attribute %s=\"%.24s\"", ctxid, specs[k].name, value);
      st = nc_parse_xml_value(value, r->file, nc_xml_line(c), ctx, r->g, &specs[k], d, NULL);
    }
    nc_xml_attrs_free(&a);
    NC_TRY(st);
  }
  return NC_OK;
}

static nc_status nc_xml_node2(nc_xml_reader *r, const xmlNode *node, const nc_xml_attrs *a) {
  const char *id, *opname, *name = nc_xml_get(a, "name"), *inputs = nc_xml_get(a, "inputs"),
                            *type = nc_xml_get(a, "type");
  NC_TRY(nc_xml_need(r, node, a, "id", &id));
  NC_TRY(nc_xml_need(r, node, a, "op", &opname));
  if (!*id) return nc_xml_err(r, node, NC_E_PARSE, "<node> has an empty id");
  if (nc_label_find(&r->labels, id, strlen(id)) != NC_NONE)
    return nc_xml_err(r, node, NC_E_PARSE, "node id '%.64s' is defined twice", id);
  nc_op op = nc_op_lookup(opname, strlen(opname));
  if (op == NC_OP_COUNT) return nc_xml_err(r, node, NC_E_PARSE, "unknown op '%.64s'", opname);
  const nc_op_info *info = nc_op_get(op);
  nc_attr_spec specs[NC_MAX_ATTRS];
  int ns = nc_op_attr_specs(op, specs);
  bool seen[NC_MAX_ATTRS] = {0};
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  if (name) {
    int k = -1;
    for (int i = 0; i < ns; i++)
      if (specs[i].type == NC_ATTR_STR) k = i;
    if (k < 0) return nc_xml_err(r, node, NC_E_PARSE, "op '%s' takes no name attribute", info->name);
    seen[k] = true;
    d.str = name;
  }
  if (inputs) NC_TRY(nc_xml_inputs(r, node, inputs, &d));
  NC_TRY(nc_xml_node_attrs(r, node, id, op, specs, ns, seen, &d));
  for (int i = 0; i < ns; i++)
    if (!seen[i] && !specs[i].has_default)
      return nc_xml_err(r, node, NC_E_PARSE, "op '%s' requires %s '%s'", info->name,
                        specs[i].type == NC_ATTR_STR ? "the attribute" : "<attr name=...>", specs[i].name);
  nc_type declared;
  bool decl = info->flags & NC_OPF_DECL;
  if (type) {
    char ctx[80];
    snprintf(ctx, sizeof ctx, "<node id=\"%.40s\"> attribute type", id);
    NC_TRY(nc_parse_xml_value(type, r->file, nc_xml_line(node), ctx, r->g, NULL, NULL, &declared));
    if (decl) d.type = declared;
  } else if (decl) {
    return nc_xml_err(r, node, NC_E_PARSE, "op '%s' declares its type: <node> needs a type attribute", info->name);
  }
  nc_id nid;
  nc_status st = nc_graph_add(r->g, &d, &nid);
  if (st) return nc_status_prefix(st, "%s:%d: <node id=\"%.40s\">: ", r->file, nc_xml_line(node), id);
  if (type && !decl && !nc_type_eq(&declared, &nc_graph_node(r->g, nid)->type)) {
    nc_buf x, y;
    nc_buf_init(&x);
    nc_buf_init(&y);
    nc_fmt_type(&x, r->g, &declared);
    nc_fmt_type(&y, r->g, &nc_graph_node(r->g, nid)->type);
    st = nc_xml_err(r, node, NC_E_TYPE, "<node id=\"%.40s\">: declared %s but the rule of '%s' gives %s", id,
                    x.data ? x.data : "?", info->name, y.data ? y.data : "?");
    nc_buf_free(&x);
    nc_buf_free(&y);
    return st;
  }
  if (!nc_label_put(&r->labels, id, strlen(id), nid)) return nc_errorf(NC_E_NOMEM, "out of memory");
  return NC_OK;
}

static nc_status nc_xml_node(nc_xml_reader *r, const xmlNode *node) {
  nc_xml_attrs a = {{"id", "op", "name", "inputs", "type"}, {0}, 5};
  nc_status st = nc_xml_read_attrs(r, node, &a);
  if (!st) st = nc_xml_node2(r, node, &a);
  nc_xml_attrs_free(&a);
  return st;
}

static nc_status nc_xml_graph(nc_xml_reader *r, const xmlNode *root) {
  NC_TRY(nc_xml_check_ns(r, root));
  if (strcmp((const char *)root->name, "graph"))
    return nc_xml_err(r, root, NC_E_PARSE, "the root element is <%.40s>, expected <graph>", (const char *)root->name);
  nc_xml_attrs a = {{"version", "name"}, {0}, 2};
  const char *version, *name;
  nc_status st = nc_xml_read_attrs(r, root, &a);
  if (!st) st = nc_xml_need(r, root, &a, "version", &version);
  if (!st) {
    char want[16];
    snprintf(want, sizeof want, "%d", NC_XML_VERSION);
    if (strcmp(version, want))
      st = nc_xml_err(r, root, NC_E_UNSUPPORTED, "unsupported IR XML version \"%.20s\" (this build reads version %d)",
                      version, NC_XML_VERSION);
  }
  if (!st) st = nc_xml_need(r, root, &a, "name", &name);
  if (!st && !(r->g = nc_graph_new(name))) st = nc_errorf(NC_E_NOMEM, "out of memory");
  nc_xml_attrs_free(&a);
  NC_TRY(st);
  for (const xmlNode *c = root->children; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE) {
      NC_TRY(nc_xml_check_misc(r, c, root));
      continue;
    }
    NC_TRY(nc_xml_check_ns(r, c));
    const char *en = (const char *)c->name;
    if (!strcmp(en, "sym")) NC_TRY(nc_xml_sym(r, c));
    else if (!strcmp(en, "node")) NC_TRY(nc_xml_node(r, c));
    else if (!strcmp(en, "output")) NC_TRY(nc_xml_output(r, c));
    else return nc_xml_err(r, c, NC_E_PARSE, "unknown element <%.40s> (expected <sym>, <node> or <output>)", en);
  }
  st = nc_graph_verify(r->g);
  if (st) return nc_status_prefix(st, "%s: ", r->file);
  return NC_OK;
}

// Structured error sink of our parser context: errors stay in the context
// (xmlCtxtGetLastError) and nothing is printed.
static void nc_xml_silent(void *user, xmlErrorPtr err) {
  (void)user;
  (void)err;
}

// A <!DOCTYPE> stops the parser before its internal subset (entity
// declarations) is read: no entity tricks can follow.
static void nc_xml_on_dtd(void *ctx, const xmlChar *name, const xmlChar *ext, const xmlChar *sys) {
  (void)name;
  (void)ext;
  (void)sys;
  xmlStopParser((xmlParserCtxtPtr)ctx);
}

nc_status nc_graph_parse_xml(const char *src, size_t len, const char *filename, nc_graph **out) {
  *out = NULL;
  nc_xml_reader r;
  memset(&r, 0, sizeof r);
  r.file = filename ? filename : "<input>";
  if (len > INT_MAX) return nc_errorf(NC_E_INVALID, "%s: XML input of %zu bytes is too large", r.file, len);
  if (len == 0) return nc_errorf(NC_E_PARSE, "%s:1:1: XML: empty input (expected <graph>)", r.file);
  xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
  if (!ctxt) return nc_errorf(NC_E_NOMEM, "out of memory creating an XML parser");
  ctxt->sax->serror = nc_xml_silent;
  ctxt->sax->internalSubset = nc_xml_on_dtd;
  ctxt->sax->externalSubset = NULL;
  int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_BIG_LINES;
  xmlDocPtr doc = xmlCtxtReadMemory(ctxt, src, (int)len, r.file, NULL, opts);
  nc_status st = NC_OK;
  if (ctxt->errNo == XML_ERR_USER_STOP || (doc && (doc->intSubset || doc->extSubset))) {
    st = nc_errorf(NC_E_PARSE, "%s:%d: XML: document type declarations (<!DOCTYPE>) are not allowed", r.file,
                   ctxt->input ? ctxt->input->line : 1);
  } else if (!doc || !ctxt->wellFormed) {
    xmlErrorPtr e = xmlCtxtGetLastError(ctxt);
    if (e && e->message) {
      // one line: libxml2 messages may span lines ("...encoding !\nBytes: 0xFF")
      char msg[256];
      snprintf(msg, sizeof msg, "%s", e->message);
      size_t n = strlen(msg);
      while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = 0;
      for (char *p = msg; *p; p++)
        if (*p == '\n') *p = ' ';
      st = nc_errorf(NC_E_PARSE, "%s:%d:%d: XML: %s", r.file, e->line, e->int2, msg);
    } else {
      st = nc_errorf(NC_E_PARSE, "%s: XML: the document is not well-formed", r.file);
    }
  } else {
    const xmlNode *root = xmlDocGetRootElement(doc);
    if (!root) st = nc_errorf(NC_E_PARSE, "%s: XML: no root element", r.file);
    else st = nc_xml_graph(&r, root);
  }
  if (doc) xmlFreeDoc(doc);
  xmlFreeParserCtxt(ctxt);
  nc_label_map_free(&r.labels);
  if (st) {
    nc_graph_free(r.g);
    return st;
  }
  *out = r.g;
  return NC_OK;
}
