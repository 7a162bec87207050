// Tokenizer files: tiktoken rank files and the JSON sidecar.
//
// Rank file (tiktoken's format, byte-compatible with load_tiktoken_bpe):
//   one "BASE64 RANK\n" line per mergeable token, ranks 0..N-1.
// Sidecar PATH.json (ours; tiktoken keeps these in code, not in the file):
//   {"format": "nanochat-c-tokenizer", "version": 1, "pattern": "nanochat",
//    "special_tokens": {"<|bos|>": 32759, ...}}
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat/tokenizer_internal.h"

#define NC_TOK_MAX_FILE ((size_t)1 << 30)

static int nc_b64_val(uint8_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Strict standard base64 (with padding). Returns decoded length or -1.
static long nc_b64_decode(const char *s, size_t n, uint8_t *out) {
  if (n == 0 || n % 4) return -1;
  size_t pad = 0;
  if (s[n - 1] == '=') pad++;
  if (s[n - 2] == '=') pad++;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    int v[4];
    for (int k = 0; k < 4; k++) {
      bool is_pad = i + (size_t)k >= n - pad;
      v[k] = is_pad ? 0 : nc_b64_val((uint8_t)s[i + k]);
      if (v[k] < 0) return -1;
    }
    uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
    out[o++] = (uint8_t)(w >> 16);
    if (i + 4 < n || pad < 2) out[o++] = (uint8_t)(w >> 8);
    if (i + 4 < n || pad < 1) out[o++] = (uint8_t)w;
  }
  return (long)o;
}

static void nc_b64_encode(const uint8_t *b, size_t n, nc_buf *out) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < n; i += 3) {
    uint32_t w = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) | (i + 2 < n ? b[i + 2] : 0);
    char q[4] = {tab[w >> 18], tab[(w >> 12) & 63], i + 1 < n ? tab[(w >> 6) & 63] : '=', i + 2 < n ? tab[w & 63] : '='};
    nc_buf_put(out, q, 4);
  }
}

void nc_tok_ranks_free(nc_tok_ranks *r) {
  if (r->tok)
    for (size_t i = 0; i < r->n; i++) free(r->tok[i]);
  free(r->tok);
  free(r->len);
  memset(r, 0, sizeof *r);
}

nc_status nc_tok_ranks_parse(const char *name, const char *text, size_t n, nc_tok_ranks *out) {
  memset(out, 0, sizeof *out);
  // Count lines to size the tables.
  size_t nlines = 1;
  for (size_t i = 0; i < n; i++) nlines += text[i] == '\n';
  out->tok = calloc(nlines, sizeof *out->tok);
  out->len = calloc(nlines, sizeof *out->len);
  size_t *line_of = calloc(nlines, sizeof *line_of);  // rank -> line (0 = unseen)
  nc_tok_bmap seen;
  nc_tok_bmap_init(&seen);
  nc_status st = NC_OK;
  if (!out->tok || !out->len || !line_of) {
    st = nc_errorf(NC_E_NOMEM, "%s: out of memory", name);
    goto done;
  }
  size_t pos = 0, line = 0, count = 0, max_rank = 0;
  while (pos < n) {
    line++;
    const char *l = text + pos;
    const char *e = memchr(l, '\n', n - pos);
    size_t ll = e ? (size_t)(e - l) : n - pos;
    pos += ll + (e ? 1 : 0);
    if (ll && l[ll - 1] == '\r') ll--;
    if (ll == 0) continue;  // tiktoken skips blank lines
    const char *sp = memchr(l, ' ', ll);
    if (!sp) {
      st = nc_errorf(NC_E_PARSE, "%s:%zu: expected 'BASE64 RANK'", name, line);
      goto done;
    }
    size_t bl = (size_t)(sp - l);
    const char *rs = sp + 1;
    size_t rl = ll - bl - 1;
    if (rl == 0 || rl > 10) {
      st = nc_errorf(NC_E_PARSE, "%s:%zu: bad rank '%.*s'", name, line, (int)(rl > 20 ? 20 : rl), rs);
      goto done;
    }
    uint64_t rank = 0;
    for (size_t k = 0; k < rl; k++) {
      if (rs[k] < '0' || rs[k] > '9') {
        st = nc_errorf(NC_E_PARSE, "%s:%zu: bad rank '%.*s'", name, line, (int)rl, rs);
        goto done;
      }
      rank = rank * 10 + (uint64_t)(rs[k] - '0');
    }
    if (rank >= nlines) {
      st = nc_errorf(NC_E_PARSE, "%s:%zu: rank %llu out of range (the file has %zu lines; ranks must be 0..N-1)",
                     name, line, (unsigned long long)rank, nlines);
      goto done;
    }
    uint8_t *tok = malloc(bl / 4 * 3 + 3);
    long tl = tok ? nc_b64_decode(l, bl, tok) : -1;
    if (tl <= 0) {
      free(tok);
      st = tok ? nc_errorf(NC_E_PARSE, "%s:%zu: bad base64 token '%.*s'", name, line, (int)(bl > 40 ? 40 : bl), l)
               : nc_errorf(NC_E_NOMEM, "%s: out of memory", name);
      goto done;
    }
    if (line_of[rank]) {
      free(tok);
      st = nc_errorf(NC_E_PARSE, "%s:%zu: duplicate rank %llu (first on line %zu)", name, line,
                     (unsigned long long)rank, line_of[rank]);
      goto done;
    }
    uint64_t h = nc_tok_hash(tok, (size_t)tl);
    nc_tok_bslot *prev = nc_tok_bmap_find(&seen, tok, (size_t)tl, h);
    if (prev) {
      free(tok);
      st = nc_errorf(NC_E_PARSE, "%s:%zu: duplicate token '%.*s' (first on line %lld)", name, line, (int)bl, l,
                     (long long)prev->val);
      goto done;
    }
    if (!nc_tok_bmap_add(&seen, tok, (size_t)tl, h, (int64_t)line)) {
      free(tok);
      st = nc_errorf(NC_E_NOMEM, "%s: out of memory", name);
      goto done;
    }
    out->tok[rank] = tok;
    out->len[rank] = (size_t)tl;
    line_of[rank] = line;
    count++;
    if (rank > max_rank) max_rank = rank;
  }
  if (count == 0) {
    st = nc_errorf(NC_E_PARSE, "%s: no tokens", name);
    goto done;
  }
  if (max_rank + 1 != count) {
    size_t gap = 0;
    while (line_of[gap]) gap++;
    st = nc_errorf(NC_E_PARSE, "%s: rank %zu is missing (ranks must be 0..N-1 without gaps; %zu tokens, highest rank %zu)",
                   name, gap, count, max_rank);
    goto done;
  }
  out->n = count;
done:
  free(line_of);
  nc_tok_bmap_free(&seen);
  if (st) {
    out->n = nlines;  // free every slot
    nc_tok_ranks_free(out);
  }
  return st;
}

static nc_status nc_tok_sidecar_read(const char *path, nc_tok_pattern *pat, char ***names, int32_t **ids,
                                     size_t *n) {
  *names = NULL;
  *ids = NULL;
  *n = 0;
  json_error_t err;
  json_t *root = json_load_file(path, 0, &err);
  if (!root) return nc_errorf(NC_E_PARSE, "%s:%d:%d: %s", path, err.line, err.column, err.text);
  nc_status st = NC_OK;
  json_t *p = json_object_get(root, "pattern");
  json_t *sp = json_object_get(root, "special_tokens");
  if (!json_is_object(root) || !json_is_string(p)) {
    st = nc_errorf(NC_E_PARSE, "%s: field \"pattern\" (a string: gpt2, cl100k, o200k, nanochat) is required", path);
    goto done;
  }
  st = nc_tok_pattern_parse(json_string_value(p), pat);
  if (st) {
    st = nc_status_prefix(st, "%s: field \"pattern\": ", path);
    goto done;
  }
  if (sp && !json_is_object(sp)) {
    st = nc_errorf(NC_E_PARSE, "%s: field \"special_tokens\" must be an object {name: id}", path);
    goto done;
  }
  size_t cnt = sp ? json_object_size(sp) : 0;
  *names = calloc(cnt + 1, sizeof **names);
  *ids = calloc(cnt + 1, sizeof **ids);
  if (!*names || !*ids) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  const char *key;
  json_t *v;
  size_t i = 0;
  if (sp) json_object_foreach(sp, key, v) {
      if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX / 2) {
        st = nc_errorf(NC_E_PARSE, "%s: special_tokens.%s: id must be a non-negative integer", path, key);
        goto done;
      }
      (*names)[i] = strdup(key);
      if (!(*names)[i]) {
        st = nc_errorf(NC_E_NOMEM, "out of memory");
        goto done;
      }
      (*ids)[i] = (int32_t)json_integer_value(v);
      i++;
      *n = i;
    }
done:
  json_decref(root);
  if (st) {
    for (size_t k = 0; k < *n; k++) free((*names)[k]);
    free(*names);
    free(*ids);
    *names = NULL;
    *ids = NULL;
    *n = 0;
  }
  return st;
}

nc_status nc_tok_load(const char *path, nc_tok **out) {
  *out = NULL;
  char *text;
  size_t n;
  NC_TRY(nc_file_read(path, NC_TOK_MAX_FILE, &text, &n));
  nc_tok_ranks r;
  nc_status st = nc_tok_ranks_parse(path, text, n, &r);
  free(text);
  if (st) return st;
  size_t pl = strlen(path);
  char *side = malloc(pl + 6);
  if (!side) {
    nc_tok_ranks_free(&r);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  memcpy(side, path, pl);
  memcpy(side + pl, ".json", 6);
  struct stat sb;
  nc_tok_pattern pat = NC_TOK_PAT_NANOCHAT;
  char **names = NULL;
  int32_t *ids = NULL;
  size_t ns = 0;
  if (stat(side, &sb) == 0) {
    st = nc_tok_sidecar_read(side, &pat, &names, &ids, &ns);
    if (!st)
      st = nc_tok_new((const uint8_t *const *)r.tok, r.len, r.n, pat, (const char *const *)names, ids, ns, out);
    if (st) st = nc_status_prefix(st, "%s: ", path);
  } else {
    // No sidecar: nanochat's conventions.
    st = nc_tok_new((const uint8_t *const *)r.tok, r.len, r.n, pat, nc_tok_nanochat_specials, NULL,
                    NC_TOK_N_NANOCHAT_SPECIALS, out);
    if (st) st = nc_status_prefix(st, "%s: ", path);
  }
  for (size_t k = 0; k < ns; k++) free(names[k]);
  free(names);
  free(ids);
  free(side);
  nc_tok_ranks_free(&r);
  return st;
}

nc_status nc_tok_save(const nc_tok *t, const char *path) {
  nc_buf b;
  nc_buf_init(&b);
  for (size_t i = 0; i < t->n_ranks; i++) {
    nc_b64_encode(t->pool + t->tok_off[i], t->tok_len[i], &b);
    nc_buf_printf(&b, " %zu\n", i);
  }
  if (b.oom) {
    nc_buf_free(&b);
    return nc_errorf(NC_E_NOMEM, "out of memory writing %s", path);
  }
  nc_status st = nc_file_write_atomic(path, b.data, b.len);
  nc_buf_free(&b);
  if (st) return st;
  json_t *root = json_object();
  json_t *sp = json_object();
  json_object_set_new(root, "format", json_string("nanochat-c-tokenizer"));
  json_object_set_new(root, "version", json_integer(1));
  json_object_set_new(root, "pattern", json_string(nc_tok_pattern_name(t->pat)));
  for (size_t i = 0; i < t->n_special; i++) json_object_set_new(sp, t->special_name[i], json_integer(t->special_id[i]));
  json_object_set_new(root, "special_tokens", sp);
  char *js = json_dumps(root, JSON_INDENT(2));
  json_decref(root);
  if (!js) return nc_errorf(NC_E_NOMEM, "out of memory writing %s.json", path);
  size_t pl = strlen(path);
  char *side = malloc(pl + 6);
  if (!side) {
    free(js);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  memcpy(side, path, pl);
  memcpy(side + pl, ".json", 6);
  size_t jl = strlen(js);
  js[jl] = '\n';  // json_dumps leaves no newline; the NUL slot becomes one
  st = nc_file_write_atomic(side, js, jl + 1);
  free(js);
  free(side);
  return st;
}

// ---- growable byte map -------------------------------------------------------

void nc_tok_bmap_init(nc_tok_bmap *m) { memset(m, 0, sizeof *m); }

void nc_tok_bmap_free(nc_tok_bmap *m) {
  free(m->slots);
  free(m->arena);
  memset(m, 0, sizeof *m);
}

nc_tok_bslot *nc_tok_bmap_find(const nc_tok_bmap *m, const uint8_t *key, size_t n, uint64_t h) {
  if (!m->slots) return NULL;
  size_t i = (size_t)h & m->mask;
  for (;;) {
    nc_tok_bslot *s = &m->slots[i];
    if (!s->used) return NULL;
    if (s->h == h && s->len == n && memcmp(m->arena + s->off, key, n) == 0) return s;
    i = (i + 1) & m->mask;
  }
}

static bool nc_tok_bmap_grow(nc_tok_bmap *m) {
  size_t cap = m->slots ? (m->mask + 1) * 2 : 1024;
  nc_tok_bslot *ns = calloc(cap, sizeof *ns);
  if (!ns) return false;
  if (m->slots)
    for (size_t i = 0; i <= m->mask; i++) {
      if (!m->slots[i].used) continue;
      size_t j = (size_t)m->slots[i].h & (cap - 1);
      while (ns[j].used) j = (j + 1) & (cap - 1);
      ns[j] = m->slots[i];
    }
  free(m->slots);
  m->slots = ns;
  m->mask = cap - 1;
  return true;
}

nc_tok_bslot *nc_tok_bmap_add(nc_tok_bmap *m, const uint8_t *key, size_t n, uint64_t h, int64_t delta) {
  nc_tok_bslot *s = nc_tok_bmap_find(m, key, n, h);
  if (s) {
    s->val += delta;
    return s;
  }
  if (n > UINT32_MAX) return NULL;
  if (!m->slots || (m->count + 1) * 4 > (m->mask + 1) * 3)  // load <= 3/4
    if (!nc_tok_bmap_grow(m)) return NULL;
  if (m->arena_len + n > m->arena_cap) {
    size_t cap = m->arena_cap ? m->arena_cap : 4096;
    while (cap < m->arena_len + n) cap *= 2;
    uint8_t *a = realloc(m->arena, cap);
    if (!a) return NULL;
    m->arena = a;
    m->arena_cap = cap;
  }
  memcpy(m->arena + m->arena_len, key, n);
  size_t i = (size_t)h & m->mask;
  while (m->slots[i].used) i = (i + 1) & m->mask;
  s = &m->slots[i];
  *s = (nc_tok_bslot){h, m->arena_len, (uint32_t)n, 1, delta};
  m->arena_len += n;
  m->count++;
  return s;
}
