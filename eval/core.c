// CORE: bundle parsing, nanochat's rendering and scoring. See core.h.
#include "eval/core.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include <zlib.h>

#include "eval/pyrandom.h"

const char *nc_core_type_name(nc_core_type t) {
  switch (t) {
    case NC_CORE_MC: return "multiple_choice";
    case NC_CORE_SCHEMA: return "schema";
    case NC_CORE_LM: return "language_modeling";
  }
  return "?";
}

void nc_core_config_free(nc_core_config *c) {
  free(c->tasks);
  c->tasks = NULL;
  c->n = 0;
}

// ---- core.yaml ---------------------------------------------------------------

static yaml_node_t *nc_yaml_get(yaml_document_t *doc, yaml_node_t *map, const char *key) {
  if (!map || map->type != YAML_MAPPING_NODE) return NULL;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *k = yaml_document_get_node(doc, p->key);
    if (k && k->type == YAML_SCALAR_NODE && !strcmp((const char *)k->data.scalar.value, key))
      return yaml_document_get_node(doc, p->value);
  }
  return NULL;
}

static nc_status nc_yaml_str(yaml_node_t *n, const char *file, int line, const char *label, const char *field, char *out,
                             size_t cap, bool required) {
  if (!n) return required ? nc_errorf(NC_E_PARSE, "%s:%d: task '%s' has no '%s'", file, line, label, field) : NC_OK;
  if (n->type != YAML_SCALAR_NODE)
    return nc_errorf(NC_E_PARSE, "%s:%d: task '%s': '%s' must be a string", file, (int)n->start_mark.line + 1, label, field);
  if (n->data.scalar.length >= cap)
    return nc_errorf(NC_E_PARSE, "%s:%d: task '%s': '%s' is too long (%zu bytes, at most %zu)", file,
                     (int)n->start_mark.line + 1, label, field, n->data.scalar.length, cap - 1);
  memcpy(out, n->data.scalar.value, n->data.scalar.length);
  out[n->data.scalar.length] = 0;
  return NC_OK;
}

nc_status nc_core_yaml_parse(const char *text, size_t len, const char *file, nc_core_config *out) {
  memset(out, 0, sizeof *out);
  yaml_parser_t parser;
  yaml_document_t doc;
  if (!yaml_parser_initialize(&parser)) return nc_errorf(NC_E_NOMEM, "%s: cannot start the YAML parser", file);
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, &doc)) {
    nc_status st = nc_errorf(NC_E_PARSE, "%s:%d:%d: %s", file, (int)parser.problem_mark.line + 1,
                             (int)parser.problem_mark.column + 1, parser.problem ? parser.problem : "invalid YAML");
    yaml_parser_delete(&parser);
    return st;
  }
  yaml_parser_delete(&parser);
  nc_status st = NC_OK;
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  yaml_node_t *list = nc_yaml_get(&doc, root, "icl_tasks");
  if (!root) st = nc_errorf(NC_E_PARSE, "%s:1: empty document (expected a mapping with 'icl_tasks')", file);
  else if (!list) st = nc_errorf(NC_E_PARSE, "%s:%d: no 'icl_tasks' list", file, (int)root->start_mark.line + 1);
  else if (list->type != YAML_SEQUENCE_NODE)
    st = nc_errorf(NC_E_PARSE, "%s:%d: 'icl_tasks' must be a list", file, (int)list->start_mark.line + 1);
  int cap = 0;
  if (!st) cap = (int)(list->data.sequence.items.top - list->data.sequence.items.start);
  if (!st && cap == 0) st = nc_errorf(NC_E_PARSE, "%s:%d: 'icl_tasks' is empty", file, (int)list->start_mark.line + 1);
  if (!st && !(out->tasks = calloc((size_t)cap, sizeof *out->tasks))) st = nc_errorf(NC_E_NOMEM, "%s: out of memory", file);
  for (int i = 0; !st && i < cap; i++) {
    yaml_node_t *tn = yaml_document_get_node(&doc, list->data.sequence.items.start[i]);
    nc_core_task *t = &out->tasks[out->n];
    int line = (int)tn->start_mark.line + 1;
    t->line = line;
    t->baseline = NAN;
    if (tn->type != YAML_MAPPING_NODE) {
      st = nc_errorf(NC_E_PARSE, "%s:%d: task %d must be a mapping", file, line, i + 1);
      break;
    }
    char type[64] = "";
    strcpy(t->delim, " ");
    if ((st = nc_yaml_str(nc_yaml_get(&doc, tn, "label"), file, line, "?", "label", t->label, sizeof t->label, true))) break;
    if ((st = nc_yaml_str(nc_yaml_get(&doc, tn, "dataset_uri"), file, line, t->label, "dataset_uri", t->uri, sizeof t->uri, true))) break;
    if ((st = nc_yaml_str(nc_yaml_get(&doc, tn, "icl_task_type"), file, line, t->label, "icl_task_type", type, sizeof type, true))) break;
    if ((st = nc_yaml_str(nc_yaml_get(&doc, tn, "continuation_delimiter"), file, line, t->label, "continuation_delimiter",
                          t->delim, sizeof t->delim, false)))
      break;
    if (!strcmp(type, "multiple_choice")) t->type = NC_CORE_MC;
    else if (!strcmp(type, "schema")) t->type = NC_CORE_SCHEMA;
    else if (!strcmp(type, "language_modeling")) t->type = NC_CORE_LM;
    else {
      yaml_node_t *n = nc_yaml_get(&doc, tn, "icl_task_type");
      st = nc_errorf(NC_E_PARSE, "%s:%d: task '%s': unknown icl_task_type '%s' (multiple_choice, schema, language_modeling)",
                     file, (int)n->start_mark.line + 1, t->label, type);
      break;
    }
    yaml_node_t *fs = nc_yaml_get(&doc, tn, "num_fewshot");
    yaml_node_t *first = NULL;
    if (fs && fs->type == YAML_SEQUENCE_NODE && fs->data.sequence.items.top > fs->data.sequence.items.start)
      first = yaml_document_get_node(&doc, fs->data.sequence.items.start[0]);
    else if (fs && fs->type == YAML_SCALAR_NODE)
      first = fs;
    if (!fs) {
      st = nc_errorf(NC_E_PARSE, "%s:%d: task '%s' has no 'num_fewshot'", file, line, t->label);
      break;
    }
    char *end = NULL;
    long k = first && first->type == YAML_SCALAR_NODE ? strtol((const char *)first->data.scalar.value, &end, 10) : -1;
    if (!first || first->type != YAML_SCALAR_NODE || !end || *end || end == (char *)first->data.scalar.value || k < 0 || k > 1000) {
      st = nc_errorf(NC_E_PARSE, "%s:%d: task '%s': num_fewshot must be a list of integers in [0, 1000], like [10]", file,
                     (int)fs->start_mark.line + 1, t->label);
      break;
    }
    t->num_fewshot = (int)k;
    for (int j = 0; j < out->n; j++)
      if (!strcmp(out->tasks[j].label, t->label)) {
        st = nc_errorf(NC_E_PARSE, "%s:%d: duplicate task label '%s' (first at line %d)", file, line, t->label, out->tasks[j].line);
        break;
      }
    if (!st) out->n++;
  }
  yaml_document_delete(&doc);
  if (st) nc_core_config_free(out);
  return st;
}

// ---- eval_meta_data.csv ---------------------------------------------------------

// Splits one CSV record starting at *p (RFC 4180 quotes; newlines inside
// quotes). Fields are written into fields[] (malloc'ed). Returns the count,
// -1 on an unterminated quote.
static int nc_csv_record(const char **p, const char *end, char **fields, int maxf, int *lines) {
  int nf = 0;
  const char *s = *p;
  for (;;) {
    nc_buf b;
    nc_buf_init(&b);
    nc_buf_puts(&b, "");
    if (s < end && *s == '"') {
      s++;
      for (;;) {
        if (s >= end) {
          nc_buf_free(&b);
          for (int i = 0; i < nf; i++) free(fields[i]);
          return -1;
        }
        if (*s == '"') {
          if (s + 1 < end && s[1] == '"') nc_buf_put(&b, "\"", 1), s += 2;
          else {
            s++;
            break;
          }
        } else {
          if (*s == '\n') (*lines)++;
          nc_buf_put(&b, s, 1), s++;
        }
      }
      while (s < end && *s != ',' && *s != '\n') s++;  // junk after the closing quote is dropped
    } else {
      const char *a = s;
      while (s < end && *s != ',' && *s != '\n') s++;
      const char *z = s;
      if (z > a && z[-1] == '\r') z--;
      nc_buf_put(&b, a, (size_t)(z - a));
    }
    if (nf < maxf) fields[nf++] = nc_buf_take(&b);
    else nc_buf_free(&b);
    if (s < end && *s == ',') {
      s++;
      continue;
    }
    if (s < end && *s == '\n') s++, (*lines)++;
    break;
  }
  *p = s;
  return nf;
}

nc_status nc_core_baselines_parse(const char *text, size_t len, const char *file, nc_core_config *cfg) {
  const char *p = text, *end = text + len;
  char *f[64];
  int line = 1, col_task = -1, col_base = -1, hdr_fields;
  int lines = 0;
  hdr_fields = nc_csv_record(&p, end, f, 64, &lines);
  if (hdr_fields <= 0) return nc_errorf(NC_E_PARSE, "%s:1: empty or malformed header", file);
  for (int i = 0; i < hdr_fields; i++) {
    if (!strcmp(f[i], "Eval Task")) col_task = i;
    if (!strcmp(f[i], "Random baseline")) col_base = i;
    free(f[i]);
  }
  if (col_task < 0 || col_base < 0)
    return nc_errorf(NC_E_PARSE, "%s:1: the header lacks the column '%s'", file, col_task < 0 ? "Eval Task" : "Random baseline");
  line += lines;
  nc_status st = NC_OK;
  while (!st && p < end) {
    int at = line;
    lines = 0;
    int nf = nc_csv_record(&p, end, f, 64, &lines);
    line += lines;
    if (nf < 0) return nc_errorf(NC_E_PARSE, "%s:%d: unterminated quoted field", file, at);
    if (nf == 1 && !f[0][0]) {  // blank line
      free(f[0]);
      continue;
    }
    if (nf <= col_task || nf <= col_base)
      st = nc_errorf(NC_E_PARSE, "%s:%d: %d fields, expected at least %d", file, at, nf, (col_task > col_base ? col_task : col_base) + 1);
    else {
      char *e = NULL;
      errno = 0;
      double b = strtod(f[col_base], &e);
      if (!*f[col_base] || *e || errno || !(b >= 0 && b < 100))
        st = nc_errorf(NC_E_PARSE, "%s:%d: task '%s': random baseline '%s' is not a percentage in [0, 100)", file, at, f[col_task],
                       f[col_base]);
      for (int i = 0; !st && i < cfg->n; i++)
        if (!strcmp(cfg->tasks[i].label, f[col_task])) cfg->tasks[i].baseline = b;
    }
    for (int i = 0; i < nf; i++) free(f[i]);
  }
  return st;
}

nc_status nc_core_config_load(const char *bundle, nc_core_config *out) {
  char path[4096];
  char *text = NULL;
  size_t len = 0;
  snprintf(path, sizeof path, "%s/core.yaml", bundle);
  nc_status st = nc_file_read(path, 1 << 24, &text, &len);
  if (st) return st;
  st = nc_core_yaml_parse(text, len, path, out);
  free(text);
  if (st) return st;
  snprintf(path, sizeof path, "%s/eval_meta_data.csv", bundle);
  if ((st = nc_file_read(path, 1 << 24, &text, &len))) {
    nc_core_config_free(out);
    return st;
  }
  st = nc_core_baselines_parse(text, len, path, out);
  free(text);
  if (st) nc_core_config_free(out);
  return st;
}

// ---- task files ------------------------------------------------------------------

static void nc_core_item_free(nc_core_item *it) {
  free(it->query);
  free(it->context);
  free(it->continuation);
  for (int i = 0; i < it->nchoices; i++) {
    if (it->choices) free(it->choices[i]);
    if (it->ctx_options) free(it->ctx_options[i]);
  }
  free(it->choices);
  free(it->ctx_options);
}

void nc_core_data_free(nc_core_data *d) {
  for (int64_t i = 0; i < d->n; i++) nc_core_item_free(&d->items[i]);
  free(d->items);
  d->items = NULL;
  d->n = 0;
}

static nc_status nc_json_string(json_t *o, const char *key, const char *file, int64_t line, char **out) {
  json_t *v = json_object_get(o, key);
  if (!v) return nc_errorf(NC_E_PARSE, "%s:%lld: missing field '%s'", file, (long long)line, key);
  if (!json_is_string(v)) return nc_errorf(NC_E_PARSE, "%s:%lld: field '%s' must be a string", file, (long long)line, key);
  *out = strdup(json_string_value(v));
  return *out ? NC_OK : nc_errorf(NC_E_NOMEM, "%s: out of memory", file);
}

static nc_status nc_json_strings(json_t *o, const char *key, const char *file, int64_t line, char ***out, int *n) {
  json_t *v = json_object_get(o, key);
  if (!v) return nc_errorf(NC_E_PARSE, "%s:%lld: missing field '%s'", file, (long long)line, key);
  if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > 64)
    return nc_errorf(NC_E_PARSE, "%s:%lld: field '%s' must be a list of 1..64 strings", file, (long long)line, key);
  *n = (int)json_array_size(v);
  *out = calloc((size_t)*n, sizeof **out);
  if (!*out) return nc_errorf(NC_E_NOMEM, "%s: out of memory", file);
  for (int i = 0; i < *n; i++) {
    json_t *s = json_array_get(v, (size_t)i);
    if (!json_is_string(s)) return nc_errorf(NC_E_PARSE, "%s:%lld: %s[%d] must be a string", file, (long long)line, key, i);
    if (!((*out)[i] = strdup(json_string_value(s)))) return nc_errorf(NC_E_NOMEM, "%s: out of memory", file);
  }
  return NC_OK;
}

static nc_status nc_core_item_parse(const char *ln, size_t n, nc_core_type type, const char *file, int64_t line, nc_core_item *it) {
  json_error_t je;
  json_t *o = json_loadb(ln, n, 0, &je);
  if (!o) return nc_errorf(NC_E_PARSE, "%s:%lld:%d: invalid JSON: %s", file, (long long)line, je.column, je.text);
  nc_status st = NC_OK;
  if (!json_is_object(o)) st = nc_errorf(NC_E_PARSE, "%s:%lld: expected a JSON object", file, (long long)line);
  if (!st && type == NC_CORE_MC) {
    st = nc_json_string(o, "query", file, line, &it->query);
    if (!st) st = nc_json_strings(o, "choices", file, line, &it->choices, &it->nchoices);
  } else if (!st && type == NC_CORE_SCHEMA) {
    st = nc_json_strings(o, "context_options", file, line, &it->ctx_options, &it->nchoices);
    if (!st) st = nc_json_string(o, "continuation", file, line, &it->continuation);
  } else if (!st) {
    st = nc_json_string(o, "context", file, line, &it->context);
    if (!st) st = nc_json_string(o, "continuation", file, line, &it->continuation);
  }
  if (!st && type != NC_CORE_LM) {
    json_t *g = json_object_get(o, "gold");
    if (!json_is_integer(g))
      st = nc_errorf(NC_E_PARSE, "%s:%lld: field 'gold' must be an integer", file, (long long)line);
    else if (json_integer_value(g) < 0 || json_integer_value(g) >= it->nchoices)
      st = nc_errorf(NC_E_PARSE, "%s:%lld: gold = %lld is outside [0, %d)", file, (long long)line, (long long)json_integer_value(g),
                     it->nchoices);
    else
      it->gold = (int)json_integer_value(g);
  }
  json_decref(o);
  return st;
}

nc_status nc_core_data_load(const char *path, nc_core_type type, nc_core_data *out) {
  memset(out, 0, sizeof *out);
  gzFile gz = gzopen(path, "rb");  // reads plain files as they are
  if (!gz) return nc_errorf(NC_E_IO, "%s: cannot open: %s", path, strerror(errno));
  nc_buf all;
  nc_buf_init(&all);
  char chunk[65536];
  int got;
  while ((got = gzread(gz, chunk, sizeof chunk)) > 0) nc_buf_put(&all, chunk, (size_t)got);
  int gerr = 0;
  const char *gmsg = got < 0 ? gzerror(gz, &gerr) : NULL;
  nc_status st = got < 0 ? nc_errorf(NC_E_IO, "%s: read error: %s", path, gmsg ? gmsg : "?") : NC_OK;
  gzclose(gz);
  if (!st && all.oom) st = nc_errorf(NC_E_NOMEM, "%s: out of memory", path);
  int64_t cap = 0;
  const char *p = all.data, *end = all.data + all.len;
  for (int64_t line = 1; !st && p && p < end; line++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    const char *a = p;
    p = nl ? nl + 1 : end;
    while (a < le && (*a == ' ' || *a == '\t' || *a == '\r')) a++;
    if (a == le) continue;
    if (out->n == cap) {
      cap = cap ? cap * 2 : 256;
      nc_core_item *ni = realloc(out->items, (size_t)cap * sizeof *ni);
      if (!ni) {
        st = nc_errorf(NC_E_NOMEM, "%s: out of memory", path);
        break;
      }
      out->items = ni;
    }
    nc_core_item *it = &out->items[out->n];
    memset(it, 0, sizeof *it);
    st = nc_core_item_parse(a, (size_t)(le - a), type, path, line, it);
    if (st) nc_core_item_free(it);
    else out->n++;
  }
  if (!st && out->n == 0) st = nc_errorf(NC_E_PARSE, "%s: no examples", path);
  nc_buf_free(&all);
  if (st) nc_core_data_free(out);
  return st;
}

nc_status nc_core_data_shuffle(nc_core_data *d, int64_t max) {
  int64_t *perm = malloc((size_t)(d->n ? d->n : 1) * sizeof *perm);
  nc_core_item *items = malloc((size_t)(d->n ? d->n : 1) * sizeof *items);
  if (!perm || !items) {
    free(perm);
    free(items);
    return nc_errorf(NC_E_NOMEM, "shuffle: out of memory");
  }
  for (int64_t i = 0; i < d->n; i++) perm[i] = i;
  nc_pyrandom r;
  nc_pyrandom_seed(&r, 1337);
  nc_pyrandom_shuffle(&r, perm, d->n);
  for (int64_t i = 0; i < d->n; i++) items[i] = d->items[perm[i]];
  int64_t keep = max > 0 && max < d->n ? max : d->n;
  for (int64_t i = keep; i < d->n; i++) nc_core_item_free(&items[i]);
  free(d->items);
  free(perm);
  d->items = items;
  d->n = keep;
  return NC_OK;
}

// ---- rendering (nanochat's Jinja templates) ----------------------------------------

// Jinja's trim = Python's str.strip(): Unicode whitespace at both ends.
static size_t nc_ws_len(const unsigned char *s, size_t n) {
  if (!n) return 0;
  unsigned c = s[0];
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  if (n >= 2 && c == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
  if (n >= 3 && c == 0xe1 && s[1] == 0x9a && s[2] == 0x80) return 3;  // U+1680
  if (n >= 3 && c == 0xe2 && s[1] == 0x80 && ((s[2] >= 0x80 && s[2] <= 0x8a) || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf))
    return 3;  // U+2000..200A, 2028, 2029, 202F
  if (n >= 3 && c == 0xe2 && s[1] == 0x81 && s[2] == 0x9f) return 3;  // U+205F
  if (n >= 3 && c == 0xe3 && s[1] == 0x80 && s[2] == 0x80) return 3;  // U+3000
  return 0;
}
static size_t nc_ws_len_back(const unsigned char *s, size_t n) {
  for (size_t k = 1; k <= 3 && k <= n; k++)
    if (nc_ws_len(s + n - k, k) == k) return k;
  return 0;
}
static void nc_put_trimmed(nc_buf *b, const char *s) {
  const unsigned char *a = (const unsigned char *)s;
  size_t n = strlen(s), k;
  while ((k = nc_ws_len(a, n))) a += k, n -= k;
  while ((k = nc_ws_len_back(a, n))) n -= k;
  nc_buf_put(b, a, n);
}
static void nc_buf_strip(nc_buf *b) {
  nc_buf t;
  nc_buf_init(&t);
  nc_buf_puts(&t, "");
  nc_put_trimmed(&t, b->data ? b->data : "");
  nc_buf_free(b);
  *b = t;
}

nc_status nc_core_render(const nc_core_task *t, const nc_core_data *d, int64_t idx, nc_buf **prompts, int *n) {
  *prompts = NULL;
  *n = 0;
  if (idx < 0 || idx >= d->n) return nc_errorf(NC_E_INVALID, "render: example %lld of %lld", (long long)idx, (long long)d->n);
  int k = t->num_fewshot;
  if (k > d->n - 1)
    return nc_errorf(NC_E_INVALID, "task '%s': %d few-shot examples need at least %d items, have %lld", t->label, k, k + 1,
                     (long long)d->n);
  int64_t *shots = malloc((size_t)(k + 1) * sizeof *shots);
  int64_t *avail = malloc((size_t)(d->n > 1 ? d->n - 1 : 1) * sizeof *avail);
  if (!shots || !avail) {
    free(shots);
    free(avail);
    return nc_errorf(NC_E_NOMEM, "render: out of memory");
  }
  nc_status st = NC_OK;
  if (k > 0) {
    for (int64_t i = 0, j = 0; i < d->n; i++)
      if (i != idx) avail[j++] = i;
    nc_pyrandom r;
    nc_pyrandom_seed(&r, (uint64_t)(1234 + idx));
    st = nc_pyrandom_sample(&r, avail, d->n - 1, k, shots);
  }
  free(avail);
  if (st) {
    free(shots);
    return st;
  }
  nc_buf head;  // the few-shot part, shared by every prompt
  nc_buf_init(&head);
  nc_buf_puts(&head, "");
  for (int s = 0; s < k; s++) {
    const nc_core_item *e = &d->items[shots[s]];
    if (t->type == NC_CORE_MC) nc_buf_printf(&head, "%s%s%s\n\n", e->query, t->delim, e->choices[e->gold]);
    else if (t->type == NC_CORE_SCHEMA) nc_buf_printf(&head, "%s%s%s\n\n", e->ctx_options[e->gold], t->delim, e->continuation);
    else {
      nc_put_trimmed(&head, e->context);
      nc_buf_printf(&head, "%s%s\n\n", t->delim, e->continuation);
    }
  }
  free(shots);
  const nc_core_item *it = &d->items[idx];
  int np = t->type == NC_CORE_LM ? 2 : it->nchoices;
  nc_buf *ps = calloc((size_t)np, sizeof *ps);
  if (!ps) {
    nc_buf_free(&head);
    return nc_errorf(NC_E_NOMEM, "render: out of memory");
  }
  for (int i = 0; i < np; i++) {
    nc_buf_init(&ps[i]);
    nc_buf_put(&ps[i], head.data, head.len);
    nc_buf_puts(&ps[i], "");
    if (t->type == NC_CORE_MC) nc_buf_printf(&ps[i], "%s%s%s", it->query, t->delim, it->choices[i]);
    else if (t->type == NC_CORE_SCHEMA) nc_buf_printf(&ps[i], "%s%s%s", it->ctx_options[i], t->delim, it->continuation);
    else {
      nc_put_trimmed(&ps[i], it->context);
      nc_buf_puts(&ps[i], t->delim);
      if (i == 1) nc_buf_puts(&ps[i], it->continuation);
      else nc_buf_strip(&ps[i]);  // prompt_without.strip()
    }
  }
  nc_buf_free(&head);
  bool oom = false;
  for (int i = 0; i < np; i++) oom |= ps[i].oom;
  if (oom) {
    for (int i = 0; i < np; i++) nc_buf_free(&ps[i]);
    free(ps);
    return nc_errorf(NC_E_NOMEM, "render: out of memory");
  }
  *prompts = ps;
  *n = np;
  return NC_OK;
}

// ---- tokenizing and batching ----------------------------------------------------------

void nc_core_seqs_free(nc_core_seqs *s) {
  for (int i = 0; i < s->n; i++) nc_ids_free(&s->seqs[i]);
  free(s->seqs);
  free(s->start);
  free(s->end);
  memset(s, 0, sizeof *s);
}

nc_status nc_core_tokenize(const nc_tok *tok, nc_core_type type, nc_buf *prompts, int n, nc_core_seqs *out) {
  memset(out, 0, sizeof *out);
  if (n < 1 || (type == NC_CORE_LM && n != 2)) return nc_errorf(NC_E_INVALID, "tokenize: %d prompts", n);
  nc_core_seqs s = {calloc((size_t)n, sizeof(nc_ids)), n, calloc((size_t)n, sizeof(int64_t)), calloc((size_t)n, sizeof(int64_t))};
  if (!s.seqs || !s.start || !s.end) {
    nc_core_seqs_free(&s);
    return nc_errorf(NC_E_NOMEM, "tokenize: out of memory");
  }
  nc_tok_encode_opts eo = {NC_TOK_SPECIAL_ORDINARY, 1};
  nc_status st = NC_OK;
  for (int i = 0; !st && i < n; i++) {
    st = nc_ids_push(&s.seqs[i], nc_tok_bos_id(tok));
    if (!st) st = nc_tok_encode(tok, prompts[i].data ? prompts[i].data : "", prompts[i].len, &eo, &s.seqs[i]);
  }
  if (st) {
    nc_core_seqs_free(&s);
    return st;
  }
  size_t minlen = SIZE_MAX;
  for (int i = 0; i < n; i++) minlen = s.seqs[i].len < minlen ? s.seqs[i].len : minlen;
  if (type == NC_CORE_MC) {  // common prefix
    size_t c = 0;
    for (; c < minlen; c++) {
      bool same = true;
      for (int i = 1; i < n; i++) same &= s.seqs[i].data[c] == s.seqs[0].data[c];
      if (!same) break;
    }
    for (int i = 0; i < n; i++) s.start[i] = (int64_t)c, s.end[i] = (int64_t)s.seqs[i].len;
  } else if (type == NC_CORE_SCHEMA) {  // common suffix
    size_t c = 0;
    for (; c < minlen; c++) {
      bool same = true;
      for (int i = 1; i < n; i++)
        same &= s.seqs[i].data[s.seqs[i].len - 1 - c] == s.seqs[0].data[s.seqs[0].len - 1 - c];
      if (!same) break;
    }
    for (int i = 0; i < n; i++) s.end[i] = (int64_t)s.seqs[i].len, s.start[i] = s.end[i] - (int64_t)c;
  } else {  // lm: only the sequence with the continuation is scored
    int64_t a = (int64_t)s.seqs[0].len, b = (int64_t)s.seqs[1].len;
    nc_ids with = s.seqs[1];
    nc_ids_free(&s.seqs[0]);
    s.seqs[0] = with;
    s.seqs[1] = (nc_ids){0};
    s.n = 1;
    s.start[0] = a < b ? a : b - 1;  // nanochat asserts a < b; keep a non-empty span
    s.end[0] = b;
  }
  *out = s;
  return NC_OK;
}

void nc_core_crop(nc_core_seqs *s, int64_t max_len) {
  for (int i = 0; i < s->n; i++) {
    int64_t len = (int64_t)s->seqs[i].len;
    if (len <= max_len) continue;
    int64_t crop = len - max_len;
    memmove(s->seqs[i].data, s->seqs[i].data + crop, (size_t)max_len * sizeof(int32_t));
    s->seqs[i].len = (size_t)max_len;
    s->start[i] = s->start[i] - crop < 1 ? 1 : s->start[i] - crop;
    s->end[i] -= crop;
  }
}

// ---- scoring -----------------------------------------------------------------------------

double nc_core_mean_loss(const double *losses, int64_t start, int64_t end) {
  double sum = 0;
  int64_t cnt = 0;
  for (int64_t p = start - 1; p < end - 1; p++) sum += losses[p], cnt++;
  return cnt ? sum / (double)cnt : NAN;  // torch: mean of nothing is nan
}

int nc_core_pick_lowest(const double *const *losses, const int64_t *start, const int64_t *end, int n) {
  int best = 0;
  double bestv = INFINITY;
  for (int i = 0; i < n; i++) {
    double m = nc_core_mean_loss(losses[i], start[i], end[i]);
    if (m < bestv) bestv = m, best = i;  // nan never wins; first minimum kept
  }
  return best;
}

bool nc_core_lm_correct(const int32_t *pred, const int32_t *tokens, int64_t start, int64_t end) {
  for (int64_t p = start; p < end; p++)
    if (pred[p - 1] != tokens[p]) return false;
  return true;
}

double nc_core_centered(double acc, double baseline_pct) {
  return (acc - 0.01 * baseline_pct) / (1.0 - 0.01 * baseline_pct);
}
