// Model spec loading and validation (libxml2).
#include "frontend/spec.h"

#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/buf.h"

void nc_spec_defaults(nc_model_spec *s) {
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "model");
  s->depth = 12;
  s->aspect_ratio = 64;
  s->head_dim = 128;
  s->vocab_size = 32768;
  s->sequence_len = 2048;
  s->rope_base = 10000;
  snprintf(s->window_pattern, sizeof s->window_pattern, "L");
  s->qk_scale = 1.0;
  s->softcap = 15;
  snprintf(s->init, sizeof s->init, "2025-10");
  s->seed = 42;
  snprintf(s->precision, sizeof s->precision, "fp32");
}

nc_status nc_spec_set_precision(nc_model_spec *s, const char *value, const char *what) {
  if (!value || (strcmp(value, "fp32") && strcmp(value, "bf16")))
    return nc_errorf(NC_E_INVALID, "%s: precision '%s' is unknown (fp32 or bf16)", what, value ? value : "(null)");
  snprintf(s->precision, sizeof s->precision, "%s", value);
  return NC_OK;
}

bool nc_spec_bf16(const nc_model_spec *s) { return !strcmp(s->precision, "bf16"); }

nc_status nc_spec_finalize(nc_model_spec *s) {
#define RANGE(field, lo, hi)                                                                      \
  if (s->field < (lo) || s->field > (hi))                                                         \
    return nc_errorf(NC_E_INVALID, "spec '%s': %s = %d is outside %d..%d", s->name, #field, s->field, \
                     (int)(lo), (int)(hi));
  RANGE(depth, 1, NC_SPEC_MAX_LAYERS);
  RANGE(aspect_ratio, 1, 4096);
  RANGE(head_dim, 2, 1024);
  RANGE(vocab_size, 2, 1 << 24);
  RANGE(sequence_len, 1, 1 << 20);
  RANGE(seed, 0, 2147483647);
#undef RANGE
  if (s->head_dim % 2) return nc_errorf(NC_E_INVALID, "spec '%s': head_dim = %d must be even (rotary pairs)", s->name, s->head_dim);
  long dim = (long)s->depth * s->aspect_ratio;
  dim = (dim + s->head_dim - 1) / s->head_dim * s->head_dim;
  if (dim > 65536) return nc_errorf(NC_E_INVALID, "spec '%s': model_dim %ld exceeds 65536", s->name, dim);
  s->model_dim = (int)dim;
  s->n_head = s->model_dim / s->head_dim;
  if (s->n_kv_head == 0) s->n_kv_head = s->n_head;
  if (s->n_kv_head < 1 || s->n_kv_head > s->n_head || s->n_head % s->n_kv_head)
    return nc_errorf(NC_E_INVALID, "spec '%s': n_kv_head = %d must divide n_head = %d", s->name, s->n_kv_head, s->n_head);
  if (!(s->rope_base > 1 && s->rope_base < 1e12)) return nc_errorf(NC_E_INVALID, "spec '%s': rope_base = %g must be in (1, 1e12)", s->name, s->rope_base);
  if (!(s->qk_scale > 0 && s->qk_scale < 100)) return nc_errorf(NC_E_INVALID, "spec '%s': qk_scale = %g must be in (0, 100)", s->name, s->qk_scale);
  if (!(s->softcap >= 0 && s->softcap < 1e6)) return nc_errorf(NC_E_INVALID, "spec '%s': softcap = %g must be >= 0 (0 = off)", s->name, s->softcap);
  size_t np = strlen(s->window_pattern);
  if (np == 0) return nc_errorf(NC_E_INVALID, "spec '%s': window_pattern is empty", s->name);
  for (size_t i = 0; i < np; i++)
    if (s->window_pattern[i] != 'S' && s->window_pattern[i] != 'L')
      return nc_errorf(NC_E_INVALID, "spec '%s': window_pattern '%s' may contain only S and L", s->name, s->window_pattern);
  if (s->short_window < 0 || s->short_window > s->sequence_len)
    return nc_errorf(NC_E_INVALID, "spec '%s': short_window = %d must be in 0..sequence_len (%d)", s->name, s->short_window, s->sequence_len);
  if (strcmp(s->init, "2025-10") && strcmp(s->init, "head"))
    return nc_errorf(NC_E_INVALID, "spec '%s': init scheme '%s' is unknown (2025-10 or head)", s->name, s->init);
  if (strcmp(s->precision, "fp32") && strcmp(s->precision, "bf16"))
    return nc_errorf(NC_E_INVALID, "spec '%s': precision compute '%s' is unknown (fp32 or bf16)", s->name, s->precision);
  if (s->smear && s->model_dim < 24) return nc_errorf(NC_E_INVALID, "spec '%s': smear needs model_dim >= 24", s->name);
  if (s->value_embeds && s->model_dim < 12) return nc_errorf(NC_E_INVALID, "spec '%s': value_embeds need model_dim >= 12", s->name);
  return NC_OK;
}

int nc_spec_window(const nc_model_spec *s, int layer) {
  size_t np = strlen(s->window_pattern);
  char c = layer == s->depth - 1 ? 'L' : s->window_pattern[(size_t)layer % np];
  if (c == 'L') return s->sequence_len;
  if (s->short_window > 0) return s->short_window;
  // nanochat: w = ceil(seq/4) rounded up to a multiple of 128, and a query
  // sees keys [p-w, p], i.e. w+1 tokens.
  int w = (s->sequence_len + 3) / 4;
  w = (w + 127) / 128 * 128;
  return w + 1 < s->sequence_len ? w + 1 : s->sequence_len;
}

bool nc_spec_has_ve(const nc_model_spec *s, int layer) {
  return s->value_embeds && layer % 2 == (s->depth - 1) % 2;
}

// ---- XML -------------------------------------------------------------------------
typedef struct {
  const char *file;
  xmlNodePtr node;
} nc_spec_ctx;

static nc_status nc_attr_err(const nc_spec_ctx *c, const char *attr, const char *msg, const char *val) {
  return nc_errorf(NC_E_PARSE, "%s:%ld: <%s> attribute %s: %s%s%s%s", c->file, (long)xmlGetLineNo(c->node),
                   (const char *)c->node->name, attr, msg, val ? ", got '" : "", val ? val : "", val ? "'" : "");
}

static nc_status nc_get_int(const nc_spec_ctx *c, const char *attr, int *out) {
  xmlChar *v = xmlGetProp(c->node, (const xmlChar *)attr);
  if (!v) return NC_OK;
  char *end;
  errno = 0;
  long x = strtol((const char *)v, &end, 10);
  nc_status st = NC_OK;
  if (end == (char *)v || *end || errno || x < -2147483647L || x > 2147483647L)
    st = nc_attr_err(c, attr, "expected an integer", (const char *)v);
  else *out = (int)x;
  xmlFree(v);
  return st;
}

static nc_status nc_get_double(const nc_spec_ctx *c, const char *attr, double *out) {
  xmlChar *v = xmlGetProp(c->node, (const xmlChar *)attr);
  if (!v) return NC_OK;
  char *end;
  double x = strtod((const char *)v, &end);
  nc_status st = NC_OK;
  if (end == (char *)v || *end || !isfinite(x)) st = nc_attr_err(c, attr, "expected a finite number", (const char *)v);
  else *out = x;
  xmlFree(v);
  return st;
}

static nc_status nc_get_bool(const nc_spec_ctx *c, const char *attr, bool *out) {
  xmlChar *v = xmlGetProp(c->node, (const xmlChar *)attr);
  if (!v) return NC_OK;
  const char *s = (const char *)v;
  nc_status st = NC_OK;
  if (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "1")) *out = true;
  else if (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "0")) *out = false;
  else st = nc_attr_err(c, attr, "expected on or off", s);
  xmlFree(v);
  return st;
}

static nc_status nc_get_str(const nc_spec_ctx *c, const char *attr, char *out, size_t cap) {
  xmlChar *v = xmlGetProp(c->node, (const xmlChar *)attr);
  if (!v) return NC_OK;
  nc_status st = NC_OK;
  if (strlen((const char *)v) >= cap) st = nc_attr_err(c, attr, "value too long", NULL);
  else snprintf(out, cap, "%s", (const char *)v);
  xmlFree(v);
  return st;
}

// Every attribute of the element must be one of `allowed` (NULL-terminated).
static nc_status nc_check_attrs(const nc_spec_ctx *c, const char *const *allowed) {
  for (xmlAttrPtr a = c->node->properties; a; a = a->next) {
    bool ok = false;
    for (int i = 0; allowed[i]; i++) ok |= !strcmp((const char *)a->name, allowed[i]);
    if (!ok) {
      nc_buf b;
      nc_buf_init(&b);
      for (int i = 0; allowed[i]; i++) nc_buf_printf(&b, "%s%s", i ? ", " : "", allowed[i]);
      nc_status st = nc_errorf(NC_E_PARSE, "%s:%ld: <%s> has unknown attribute '%s' (allowed: %s)", c->file,
                               (long)xmlGetLineNo(c->node), (const char *)c->node->name, (const char *)a->name,
                               b.data ? b.data : "none");
      nc_buf_free(&b);
      return st;
    }
  }
  return NC_OK;
}

static nc_status nc_spec_element(nc_spec_ctx *c, nc_model_spec *s, unsigned *seen) {
  const char *name = (const char *)c->node->name;
  static const char *const dims[] = {"depth", "aspect_ratio", "head_dim", "n_kv_head", "vocab_size", "sequence_len", NULL};
  static const char *const attn[] = {"rope_base", "window_pattern", "short_window", "qk_scale", NULL};
  static const char *const outp[] = {"softcap", NULL};
  static const char *const feat[] = {"value_embeds", "resid_lambdas", "smear", "backout", NULL};
  static const char *const init[] = {"scheme", "seed", NULL};
  static const char *const prec[] = {"compute", NULL};
  static const char *const names[] = {"dims", "attention", "output", "features", "init", "precision"};
  int which = -1;
  for (int i = 0; i < 6; i++)
    if (!strcmp(name, names[i])) which = i;
  if (which < 0)
    return nc_errorf(NC_E_PARSE, "%s:%ld: unknown element <%s> (expected dims, attention, output, features, init, precision)",
                     c->file, (long)xmlGetLineNo(c->node), name);
  if (*seen & (1u << which))
    return nc_errorf(NC_E_PARSE, "%s:%ld: element <%s> appears twice", c->file, (long)xmlGetLineNo(c->node), name);
  *seen |= 1u << which;
  if (c->node->children)
    for (xmlNodePtr k = c->node->children; k; k = k->next)
      if (k->type == XML_ELEMENT_NODE)
        return nc_errorf(NC_E_PARSE, "%s:%ld: <%s> takes no child elements", c->file, (long)xmlGetLineNo(k), name);
  switch (which) {
    case 0:
      NC_TRY(nc_check_attrs(c, dims));
      NC_TRY(nc_get_int(c, "depth", &s->depth));
      NC_TRY(nc_get_int(c, "aspect_ratio", &s->aspect_ratio));
      NC_TRY(nc_get_int(c, "head_dim", &s->head_dim));
      NC_TRY(nc_get_int(c, "n_kv_head", &s->n_kv_head));
      NC_TRY(nc_get_int(c, "vocab_size", &s->vocab_size));
      return nc_get_int(c, "sequence_len", &s->sequence_len);
    case 1:
      NC_TRY(nc_check_attrs(c, attn));
      NC_TRY(nc_get_double(c, "rope_base", &s->rope_base));
      NC_TRY(nc_get_str(c, "window_pattern", s->window_pattern, sizeof s->window_pattern));
      NC_TRY(nc_get_int(c, "short_window", &s->short_window));
      return nc_get_double(c, "qk_scale", &s->qk_scale);
    case 2:
      NC_TRY(nc_check_attrs(c, outp));
      return nc_get_double(c, "softcap", &s->softcap);
    case 3:
      NC_TRY(nc_check_attrs(c, feat));
      NC_TRY(nc_get_bool(c, "value_embeds", &s->value_embeds));
      NC_TRY(nc_get_bool(c, "resid_lambdas", &s->resid_lambdas));
      NC_TRY(nc_get_bool(c, "smear", &s->smear));
      return nc_get_bool(c, "backout", &s->backout);
    case 5: {
      NC_TRY(nc_check_attrs(c, prec));
      char v[16] = "";
      NC_TRY(nc_get_str(c, "compute", v, sizeof v));
      if (!v[0]) return NC_OK;
      if (strcmp(v, "fp32") && strcmp(v, "bf16")) return nc_attr_err(c, "compute", "expected fp32 or bf16", v);
      snprintf(s->precision, sizeof s->precision, "%s", v);
      return NC_OK;
    }
    default:
      NC_TRY(nc_check_attrs(c, init));
      NC_TRY(nc_get_str(c, "scheme", s->init, sizeof s->init));
      return nc_get_int(c, "seed", &s->seed);
  }
}

nc_status nc_spec_parse(const char *src, size_t len, const char *filename, nc_model_spec *out) {
  nc_spec_defaults(out);
  if (len > (1u << 20)) return nc_errorf(NC_E_PARSE, "%s: spec larger than 1 MiB", filename);
  long bad = nc_utf8_invalid_at(src, len);
  if (bad >= 0) return nc_errorf(NC_E_PARSE, "%s: invalid UTF-8 at byte %ld", filename, bad);
  xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
  if (!ctxt) return nc_errorf(NC_E_NOMEM, "out of memory");
  xmlDocPtr doc = xmlCtxtReadMemory(ctxt, src, (int)len, filename, NULL,
                                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  nc_status st = NC_OK;
  if (!doc) {
    const xmlError *e = xmlCtxtGetLastError(ctxt);
    st = nc_errorf(NC_E_PARSE, "%s:%d: malformed XML: %s", filename, e ? e->line : 0,
                   e && e->message ? e->message : "unknown error");
    // libxml2 messages end with a newline; trim it
    char *m = (char *)nc_status_msg(st);
    size_t ml = strlen(m);
    while (ml && (m[ml - 1] == '\n' || m[ml - 1] == ' ')) m[--ml] = 0;
    xmlFreeParserCtxt(ctxt);
    return st;
  }
  nc_spec_ctx c = {filename, xmlDocGetRootElement(doc)};
  if (!c.node || strcmp((const char *)c.node->name, "model")) {
    st = nc_errorf(NC_E_PARSE, "%s: the root element must be <model>", filename);
    goto done;
  }
  static const char *const root_attrs[] = {"version", "name", NULL};
  if ((st = nc_check_attrs(&c, root_attrs))) goto done;
  int version = 0;
  if ((st = nc_get_int(&c, "version", &version))) goto done;
  if (version != NC_SPEC_VERSION) {
    st = nc_errorf(NC_E_PARSE, "%s:%ld: <model> version %d is not supported (this build reads version %d)", filename,
                   (long)xmlGetLineNo(c.node), version, NC_SPEC_VERSION);
    goto done;
  }
  if ((st = nc_get_str(&c, "name", out->name, sizeof out->name))) goto done;
  unsigned seen = 0;
  for (xmlNodePtr k = c.node->children; k && !st; k = k->next) {
    if (k->type != XML_ELEMENT_NODE) continue;
    c.node = k;
    st = nc_spec_element(&c, out, &seen);
  }
  if (!st && !(seen & 1)) st = nc_errorf(NC_E_PARSE, "%s: <dims> is required", filename);
  if (!st) st = nc_status_prefix(nc_spec_finalize(out), "%s: ", filename);
done:
  xmlFreeDoc(doc);
  xmlFreeParserCtxt(ctxt);
  return st;
}

nc_status nc_spec_load(const char *path, nc_model_spec *out) {
  char *src;
  size_t len;
  NC_TRY(nc_file_read(path, 1u << 20, &src, &len));
  nc_status st = nc_spec_parse(src, len, path, out);
  free(src);
  return st;
}

nc_status nc_spec_to_xml(const nc_model_spec *s, char **out) {
  nc_buf b;
  nc_buf_init(&b);
  char name[6 * sizeof s->name];  // XML-escaped name
  size_t o = 0;
  for (const char *p = s->name; *p; p++) {
    const char *rep = *p == '<' ? "&lt;" : *p == '>' ? "&gt;" : *p == '&' ? "&amp;" : *p == '"' ? "&quot;" : NULL;
    if (rep) o += (size_t)snprintf(name + o, sizeof name - o, "%s", rep);
    else name[o++] = *p;
  }
  name[o] = 0;
  char rb[32], qk[32], sc[32];
  nc_fmt_double(rb, s->rope_base);
  nc_fmt_double(qk, s->qk_scale);
  nc_fmt_double(sc, s->softcap);
  nc_buf_printf(&b,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<model version=\"%d\" name=\"%s\">\n"
                "  <dims depth=\"%d\" aspect_ratio=\"%d\" head_dim=\"%d\" n_kv_head=\"%d\" vocab_size=\"%d\" sequence_len=\"%d\"/>\n"
                "  <attention rope_base=\"%s\" window_pattern=\"%s\" short_window=\"%d\" qk_scale=\"%s\"/>\n"
                "  <output softcap=\"%s\"/>\n"
                "  <features value_embeds=\"%s\" resid_lambdas=\"%s\" smear=\"%s\" backout=\"%s\"/>\n"
                "  <init scheme=\"%s\" seed=\"%d\"/>\n%s</model>\n",
                NC_SPEC_VERSION, name, s->depth, s->aspect_ratio, s->head_dim, s->n_kv_head, s->vocab_size,
                s->sequence_len, rb, s->window_pattern, s->short_window, qk, sc, s->value_embeds ? "on" : "off",
                s->resid_lambdas ? "on" : "off", s->smear ? "on" : "off", s->backout ? "on" : "off", s->init, s->seed,
                nc_spec_bf16(s) ? "  <precision compute=\"bf16\"/>\n" : "");
  *out = nc_buf_take(&b);
  return *out ? NC_OK : nc_errorf(NC_E_NOMEM, "out of memory");
}
