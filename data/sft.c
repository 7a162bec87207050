// Conversation mixtures and nanochat's SFT best-fit packing with padding
// (data/sft.h).
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "data/sft.h"
#include "support/buf.h"

// ---- helpers shared with tasks.c (declared in data/sft_internal.h) ---------

#include "data/sft_internal.h"

uint64_t nc_data_splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t nc_data_rand_below(uint64_t *s, uint64_t n) {
  return (uint64_t)(((unsigned __int128)nc_data_splitmix64(s) * n) >> 64);
}

nc_status nc_data_read_all(const char *path, nc_buf *out) {
  struct stat sb;
  if (stat(path, &sb) != 0) return nc_errorf(NC_E_IO, "%s: cannot open: %s", path, strerror(errno));
  if (S_ISDIR(sb.st_mode)) return nc_errorf(NC_E_IO, "%s: is a directory, not a file", path);
  gzFile gz = gzopen(path, "rb");
  if (!gz) return nc_errorf(NC_E_IO, "%s: cannot open: %s", path, strerror(errno));
  char tmp[1 << 16];
  for (;;) {
    int r = gzread(gz, tmp, sizeof tmp);
    int err = Z_OK;
    const char *msg = r <= 0 ? gzerror(gz, &err) : "";
    if (r < 0 || (r == 0 && err != Z_OK)) {
      // Count the complete lines read so far for the message.
      size_t lines = 0;
      for (size_t i = 0; i < out->len; i++) lines += out->data[i] == '\n';
      size_t pl = strlen(path);  // gzerror's message starts with "path: "
      if (!strncmp(msg, path, pl) && !strncmp(msg + pl, ": ", 2)) msg += pl + 2;
      nc_status st = nc_errorf(NC_E_IO, "%s:%zu: %s (%s)", path, lines + 1,
                               err == Z_BUF_ERROR ? "truncated gzip file" : "unreadable gzip data", msg);
      gzclose(gz);  // msg lives in gz
      return st;
    }
    if (r == 0) break;
    nc_buf_put(out, tmp, (size_t)r);
    if (out->oom) {
      gzclose(gz);
      return nc_errorf(NC_E_NOMEM, "%s: out of memory", path);
    }
  }
  gzclose(gz);
  return NC_OK;
}

static bool nc_is_blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return false;
  return true;
}

nc_status nc_data_conversation_check(json_t *root) {
  json_t *msgs = json_is_object(root) ? json_object_get(root, "messages") : NULL;
  if (!json_is_array(msgs)) return nc_errorf(NC_E_PARSE, "field \"messages\" (an array) is required");
  size_t n = json_array_size(msgs);
  if (n == 0) return nc_errorf(NC_E_PARSE, "\"messages\" is empty");
  size_t first = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *m = json_array_get(msgs, i);
    json_t *r = json_is_object(m) ? json_object_get(m, "role") : NULL;
    if (!json_is_string(r)) return nc_errorf(NC_E_PARSE, "messages[%zu] needs a string \"role\"", i);
    const char *role = json_string_value(r);
    json_t *c = json_object_get(m, "content");
    if (i == 0 && !strcmp(role, "system")) {
      if (!json_is_string(c)) return nc_errorf(NC_E_PARSE, "messages[0] (system): \"content\" must be a string");
      if (n < 2) return nc_errorf(NC_E_PARSE, "the system message must be followed by a user message");
      first = 1;
      continue;
    }
    const char *want = (i - first) % 2 == 0 ? "user" : "assistant";
    if (strcmp(role, want) != 0)
      return nc_errorf(NC_E_PARSE, "messages[%zu] has role \"%s\" but should be \"%s\" (user and assistant "
                       "alternate, starting with user)", i, role, want);
    if (!strcmp(role, "user")) {
      if (!json_is_string(c)) return nc_errorf(NC_E_PARSE, "messages[%zu] (user): \"content\" must be a string", i);
      continue;
    }
    if (json_is_string(c)) continue;
    if (!json_is_array(c))
      return nc_errorf(NC_E_PARSE, "messages[%zu] (assistant): \"content\" must be a string or a list of parts", i);
    for (size_t p = 0; p < json_array_size(c); p++) {
      json_t *part = json_array_get(c, p);
      json_t *ty = json_is_object(part) ? json_object_get(part, "type") : NULL;
      json_t *tx = json_is_object(part) ? json_object_get(part, "text") : NULL;
      if (!json_is_string(ty) || !json_is_string(tx))
        return nc_errorf(NC_E_PARSE, "messages[%zu].content[%zu] needs string \"type\" and \"text\"", i, p);
      const char *t = json_string_value(ty);
      if (strcmp(t, "text") && strcmp(t, "python") && strcmp(t, "python_output"))
        return nc_errorf(NC_E_PARSE, "messages[%zu].content[%zu]: unknown part type \"%s\" (text, python, "
                         "python_output)", i, p, t);
    }
  }
  return NC_OK;
}

// ---- mixture ---------------------------------------------------------------

typedef struct {
  size_t off, len;  // into the source's text
  int src;
  int64_t line;
} nc_conv;

struct nc_sft_mix {
  char **paths;
  int nsrc;
  nc_buf *text;  // per source: the file contents
  int64_t *src_len;
  nc_conv *convs;
  int64_t nconv, capconv;
  int64_t *entries;  // shuffled conversation indices
  int64_t nentries;
  int64_t skipped;
};

static nc_status nc_mix_add(nc_sft_mix *m, nc_conv c) {
  if (m->nconv == m->capconv) {
    int64_t cap = m->capconv ? m->capconv * 2 : 1024;
    nc_conv *p = realloc(m->convs, (size_t)cap * sizeof *p);
    if (!p) return nc_errorf(NC_E_NOMEM, "out of memory");
    m->convs = p;
    m->capconv = cap;
  }
  m->convs[m->nconv++] = c;
  return NC_OK;
}

static nc_status nc_mix_load_source(nc_sft_mix *m, int s, bool skip_bad) {
  const char *path = m->paths[s];
  nc_buf *b = &m->text[s];
  nc_status st = nc_data_read_all(path, b);
  if (st) {
    if (!skip_bad || nc_status_code(st) == NC_E_NOMEM) return st;
    nc_status_free(st);
    m->skipped++;
    // Keep the complete lines read before the damage.
  }
  size_t pos = 0;
  int64_t line = 0, before = m->nconv;
  while (pos < b->len) {
    const char *p = b->data + pos;
    const char *nl = memchr(p, '\n', b->len - pos);
    size_t n = nl ? (size_t)(nl - p) : b->len - pos;
    line++;
    size_t off = pos;
    pos += n + (nl ? 1 : 0);
    if (nc_is_blank(p, n)) continue;
    nc_status bad = NC_OK;
    long u = nc_utf8_invalid_at(p, n);
    if (u >= 0) {
      bad = nc_errorf(NC_E_PARSE, "%s:%lld:%ld: invalid UTF-8 (byte 0x%02x)", path, (long long)line, u + 1,
                      (unsigned char)p[u]);
    } else {
      json_error_t err;
      json_t *j = json_loadb(p, n, 0, &err);
      if (!j) {
        bad = nc_errorf(NC_E_PARSE, "%s:%lld:%d: bad JSON: %s", path, (long long)line, err.column, err.text);
      } else {
        bad = nc_data_conversation_check(j);
        if (bad) bad = nc_status_prefix(bad, "%s:%lld: ", path, (long long)line);
        json_decref(j);
      }
    }
    if (bad) {
      if (!skip_bad) return bad;
      nc_status_free(bad);
      m->skipped++;
      continue;
    }
    NC_TRY(nc_mix_add(m, (nc_conv){off, n, s, line}));
  }
  m->src_len[s] = m->nconv - before;
  if (m->src_len[s] == 0) {
    st = nc_errorf(NC_E_PARSE, "%s: no conversations in this source", path);
    if (!skip_bad) return st;
    nc_status_free(st);
    m->skipped++;
  }
  return NC_OK;
}

nc_status nc_sft_mix_open(const nc_sft_mix_opts *o, nc_sft_mix **out) {
  *out = NULL;
  if (!o || o->nsources <= 0 || !o->sources) return nc_errorf(NC_E_INVALID, "SFT mixture: no sources");
  for (int s = 0; s < o->nsources; s++) {
    if (!o->sources[s].path) return nc_errorf(NC_E_INVALID, "SFT mixture: source %d has no path", s);
    if (o->sources[s].epochs < 0 || o->sources[s].epochs > 1000)
      return nc_errorf(NC_E_INVALID, "SFT mixture: %s: epochs %d out of range [0, 1000]", o->sources[s].path,
                       o->sources[s].epochs);
  }
  nc_sft_mix *m = calloc(1, sizeof *m);
  if (!m) return nc_errorf(NC_E_NOMEM, "out of memory");
  m->nsrc = o->nsources;
  m->paths = calloc((size_t)m->nsrc, sizeof *m->paths);
  m->text = calloc((size_t)m->nsrc, sizeof *m->text);
  m->src_len = calloc((size_t)m->nsrc, sizeof *m->src_len);
  nc_status st = (!m->paths || !m->text || !m->src_len) ? nc_errorf(NC_E_NOMEM, "out of memory") : NC_OK;
  for (int s = 0; !st && s < m->nsrc; s++) {
    m->paths[s] = strdup(o->sources[s].path);
    if (!m->paths[s]) st = nc_errorf(NC_E_NOMEM, "out of memory");
  }
  for (int s = 0; !st && s < m->nsrc; s++) st = nc_mix_load_source(m, s, o->skip_bad);
  int64_t total = 0;
  for (int s = 0; !st && s < m->nsrc; s++) total += m->src_len[s] * (o->sources[s].epochs ? o->sources[s].epochs : 1);
  if (!st && total == 0) st = nc_errorf(NC_E_INVALID, "SFT mixture: no conversations in any source");
  if (!st) {
    m->entries = malloc((size_t)total * sizeof *m->entries);
    if (!m->entries) st = nc_errorf(NC_E_NOMEM, "out of memory");
  }
  if (st) {
    nc_sft_mix_close(m);
    return st;
  }
  // Entries: each source's conversations, repeated per its epochs, then shuffled.
  int64_t k = 0, base = 0;
  for (int s = 0; s < m->nsrc; s++) {
    int ep = o->sources[s].epochs ? o->sources[s].epochs : 1;
    for (int e = 0; e < ep; e++)
      for (int64_t i = 0; i < m->src_len[s]; i++) m->entries[k++] = base + i;
    base += m->src_len[s];
  }
  m->nentries = total;
  uint64_t rs = o->seed;
  for (int64_t i = total - 1; i > 0; i--) {
    int64_t j = (int64_t)nc_data_rand_below(&rs, (uint64_t)i + 1);
    int64_t t = m->entries[i];
    m->entries[i] = m->entries[j];
    m->entries[j] = t;
  }
  *out = m;
  return NC_OK;
}

int64_t nc_sft_mix_len(const nc_sft_mix *m) { return m->nentries; }
int64_t nc_sft_mix_skipped(const nc_sft_mix *m) { return m->skipped; }
int64_t nc_sft_mix_source_len(const nc_sft_mix *m, int s) { return s >= 0 && s < m->nsrc ? m->src_len[s] : 0; }
const char *nc_sft_mix_source_path(const nc_sft_mix *m, int s) { return s >= 0 && s < m->nsrc ? m->paths[s] : "?"; }

nc_status nc_sft_mix_get(const nc_sft_mix *m, int64_t i, const char **json, size_t *len, int *source,
                         int64_t *line) {
  if (i < 0 || i >= m->nentries)
    return nc_errorf(NC_E_INVALID, "SFT mixture: entry %lld out of range [0, %lld)", (long long)i,
                     (long long)m->nentries);
  const nc_conv *c = &m->convs[m->entries[i]];
  *json = m->text[c->src].data + c->off;
  *len = c->len;
  if (source) *source = c->src;
  if (line) *line = c->line;
  return NC_OK;
}

void nc_sft_mix_close(nc_sft_mix *m) {
  if (!m) return;
  for (int s = 0; s < m->nsrc; s++) {
    if (m->paths) free(m->paths[s]);
    if (m->text) nc_buf_free(&m->text[s]);
  }
  free(m->paths);
  free(m->text);
  free(m->src_len);
  free(m->convs);
  free(m->entries);
  free(m);
}

// ---- packing ---------------------------------------------------------------

typedef struct {
  int32_t *ids;
  uint8_t *mask;
  int64_t n, entry;
} nc_sconv;

struct nc_sft_loader {
  const nc_sft_mix *mix;
  const nc_tok *tok;
  int64_t B, T;
  int rank, world, bufn;
  bool skip_bad;
  int32_t bos;
  int64_t cursor, epoch, consumed, skipped;
  nc_sconv *buf;
  int64_t nbuf;
  nc_sft_loader_stats stats;
  int32_t *row;
  uint8_t *mrow;
};

static nc_status nc_sft_render(const nc_sft_loader *l, int64_t entry, nc_sconv *c) {
  const char *json = NULL;
  size_t len = 0;
  int src = 0;
  int64_t line = 0;
  NC_TRY(nc_sft_mix_get(l->mix, entry, &json, &len, &src, &line));
  nc_tok_rendered r = {0};
  nc_status st = nc_tok_render_conversation(l->tok, json, len, (size_t)(l->T + 1), &r);
  if (st) {
    nc_tok_rendered_free(&r);
    return nc_status_prefix(st, "%s:%lld: ", nc_sft_mix_source_path(l->mix, src), (long long)line);
  }
  if (r.len == 0) {
    nc_tok_rendered_free(&r);
    return nc_errorf(NC_E_INTERNAL, "%s:%lld: rendered to no tokens", nc_sft_mix_source_path(l->mix, src),
                     (long long)line);
  }
  *c = (nc_sconv){r.ids, r.mask, (int64_t)r.len, entry};
  return NC_OK;
}

static nc_status nc_sft_refill(nc_sft_loader *l) {
  int64_t fails = 0, len = nc_sft_mix_len(l->mix);
  while (l->nbuf < l->bufn) {
    int64_t entry = l->cursor;
    l->cursor += l->world;
    if (l->cursor >= len) {
      l->cursor %= len;
      l->epoch++;
    }
    nc_sconv c;
    nc_status st = nc_sft_render(l, entry, &c);
    if (st) {
      if (!l->skip_bad || nc_status_code(st) == NC_E_NOMEM) return st;
      if (++fails > len) return nc_status_prefix(st, "every conversation fails to render; last: ");
      nc_status_free(st);
      l->skipped++;
      continue;
    }
    l->buf[l->nbuf++] = c;
  }
  return NC_OK;
}

nc_status nc_sft_loader_open(const nc_sft_loader_opts *o, nc_sft_loader **out) {
  *out = NULL;
  if (!o || !o->mix || !o->tok) return nc_errorf(NC_E_INVALID, "SFT loader: mixture and tokenizer are required");
  if (o->B < 1 || o->T < 1 || o->B > (1 << 20) || o->T > (1 << 24))
    return nc_errorf(NC_E_INVALID, "SFT loader: batch %lld x %lld is out of range", (long long)o->B, (long long)o->T);
  int world = o->world > 0 ? o->world : 1;
  if (o->rank < 0 || o->rank >= world)
    return nc_errorf(NC_E_INVALID, "SFT loader: rank %d is out of range for world size %d", o->rank, world);
  if (o->buffer_convs < 0) return nc_errorf(NC_E_INVALID, "SFT loader: buffer_convs %d < 0", o->buffer_convs);
  for (int i = 0; i < NC_TOK_N_NANOCHAT_SPECIALS; i++)
    if (nc_tok_special_id(o->tok, nc_tok_nanochat_specials[i]) < 0)
      return nc_errorf(NC_E_INVALID, "SFT loader: the tokenizer has no %s (chat needs nanochat's special tokens)",
                       nc_tok_nanochat_specials[i]);
  if (o->rank >= nc_sft_mix_len(o->mix))
    return nc_errorf(NC_E_INVALID, "SFT loader: rank %d gets no conversations (the mixture has %lld)", o->rank,
                     (long long)nc_sft_mix_len(o->mix));
  nc_sft_loader *l = calloc(1, sizeof *l);
  if (!l) return nc_errorf(NC_E_NOMEM, "out of memory");
  l->mix = o->mix;
  l->tok = o->tok;
  l->B = o->B;
  l->T = o->T;
  l->rank = o->rank;
  l->world = world;
  l->bufn = o->buffer_convs ? o->buffer_convs : 100;
  l->skip_bad = o->skip_bad;
  l->bos = nc_tok_bos_id(o->tok);
  l->cursor = o->rank;
  l->buf = calloc((size_t)l->bufn, sizeof *l->buf);
  l->row = malloc((size_t)(o->T + 1) * sizeof *l->row);
  l->mrow = malloc((size_t)(o->T + 1));
  if (!l->buf || !l->row || !l->mrow) {
    nc_sft_loader_close(l);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  *out = l;
  return NC_OK;
}

static void nc_sft_clear(nc_sft_loader *l) {
  for (int64_t i = 0; i < l->nbuf; i++) {
    free(l->buf[i].ids);
    free(l->buf[i].mask);
  }
  l->nbuf = 0;
}

void nc_sft_loader_close(nc_sft_loader *l) {
  if (!l) return;
  if (l->buf) nc_sft_clear(l);
  free(l->buf);
  free(l->row);
  free(l->mrow);
  free(l);
}

nc_status nc_sft_loader_next(nc_sft_loader *l, int32_t *inputs, int32_t *targets) {
  const int64_t cap = l->T + 1, T = l->T;
  for (int64_t b = 0; b < l->B; b++) {
    int64_t pos = 0;
    while (pos < cap) {
      NC_TRY(nc_sft_refill(l));
      int64_t remaining = cap - pos, best = -1, best_len = 0;
      for (int64_t i = 0; i < l->nbuf; i++)
        if (l->buf[i].n <= remaining && l->buf[i].n > best_len) best = i, best_len = l->buf[i].n;
      if (best < 0) {
        // Nothing fits: pad with BOS, targets ignored.
        for (int64_t t = pos; t < cap; t++) l->row[t] = l->bos, l->mrow[t] = 0;
        l->stats.pad_tokens += remaining;
        break;
      }
      nc_sconv c = l->buf[best];
      memmove(l->buf + best, l->buf + best + 1, (size_t)(l->nbuf - best - 1) * sizeof *l->buf);
      l->nbuf--;
      memcpy(l->row + pos, c.ids, (size_t)c.n * sizeof *l->row);
      memcpy(l->mrow + pos, c.mask, (size_t)c.n);
      pos += c.n;
      l->stats.tokens += c.n;
      l->consumed++;
      free(c.ids);
      free(c.mask);
    }
    for (int64_t t = 0; t < T; t++) {
      inputs[b * T + t] = l->row[t];
      targets[b * T + t] = l->mrow[t + 1] ? l->row[t + 1] : -1;
      l->stats.trained_targets += l->mrow[t + 1] != 0;
    }
    l->stats.rows++;
  }
  return NC_OK;
}

int64_t nc_sft_loader_epoch(const nc_sft_loader *l) { return l->epoch; }
int64_t nc_sft_loader_consumed(const nc_sft_loader *l) { return l->consumed; }
double nc_sft_loader_progress(const nc_sft_loader *l) {
  return (double)(l->consumed * l->world) / (double)nc_sft_mix_len(l->mix);
}
int64_t nc_sft_loader_skipped(const nc_sft_loader *l) { return l->skipped; }
void nc_sft_loader_get_stats(const nc_sft_loader *l, nc_sft_loader_stats *out) { *out = l->stats; }

nc_status nc_sft_loader_state_json(const nc_sft_loader *l, char **json) {
  *json = NULL;
  json_t *o = json_object(), *buf = json_array();
  if (!o || !buf) {
    json_decref(o);
    json_decref(buf);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  json_object_set_new(o, "version", json_integer(1));
  json_object_set_new(o, "cursor", json_integer(l->cursor));
  json_object_set_new(o, "epoch", json_integer(l->epoch));
  json_object_set_new(o, "consumed", json_integer(l->consumed));
  json_object_set_new(o, "skipped", json_integer(l->skipped));
  json_object_set_new(o, "rank", json_integer(l->rank));
  json_object_set_new(o, "world", json_integer(l->world));
  json_object_set_new(o, "T", json_integer(l->T));
  json_object_set_new(o, "entries", json_integer(nc_sft_mix_len(l->mix)));
  for (int64_t i = 0; i < l->nbuf; i++) json_array_append_new(buf, json_integer(l->buf[i].entry));
  json_object_set_new(o, "buffer", buf);
  *json = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return *json ? NC_OK : nc_errorf(NC_E_NOMEM, "out of memory");
}

static nc_status nc_sft_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out) {
  json_t *v = json_object_get(o, key);
  if (!json_is_integer(v)) return nc_errorf(NC_E_PARSE, "SFT loader state: field \"%s\" (an integer) is missing", key);
  int64_t x = json_integer_value(v);
  if (x < lo || x > hi)
    return nc_errorf(NC_E_INVALID, "SFT loader state: field \"%s\" = %lld is out of range [%lld, %lld]", key,
                     (long long)x, (long long)lo, (long long)hi);
  *out = x;
  return NC_OK;
}

static nc_status nc_sft_restore_parsed(nc_sft_loader *l, json_t *o) {
  int64_t len = nc_sft_mix_len(l->mix), v = 0, cursor = 0, epoch = 0, consumed = 0, skipped = 0, rank = 0, world = 0, T = 0, entries = 0;
  NC_TRY(nc_sft_int(o, "version", 1, 1, &v));
  NC_TRY(nc_sft_int(o, "entries", 0, INT64_MAX, &entries));
  if (entries != len)
    return nc_errorf(NC_E_INVALID, "SFT loader state is for a mixture of %lld entries, this one has %lld",
                     (long long)entries, (long long)len);
  NC_TRY(nc_sft_int(o, "cursor", 0, len - 1, &cursor));
  NC_TRY(nc_sft_int(o, "epoch", 0, INT64_MAX, &epoch));
  NC_TRY(nc_sft_int(o, "consumed", 0, INT64_MAX, &consumed));
  NC_TRY(nc_sft_int(o, "skipped", 0, INT64_MAX, &skipped));
  NC_TRY(nc_sft_int(o, "rank", 0, INT32_MAX, &rank));
  NC_TRY(nc_sft_int(o, "world", 1, INT32_MAX, &world));
  NC_TRY(nc_sft_int(o, "T", 1, INT64_MAX, &T));
  if (rank != l->rank || world != l->world || T != l->T)
    return nc_errorf(NC_E_INVALID, "SFT loader state is for rank %lld of %lld with T = %lld; this loader: rank %d "
                     "of %d, T = %lld", (long long)rank, (long long)world, (long long)T, l->rank, l->world,
                     (long long)l->T);
  json_t *buf = json_object_get(o, "buffer");
  if (!json_is_array(buf)) return nc_errorf(NC_E_PARSE, "SFT loader state: field \"buffer\" (an array) is missing");
  size_t nb = json_array_size(buf);
  if (nb > (size_t)l->bufn)
    return nc_errorf(NC_E_INVALID, "SFT loader state: %zu buffered conversations, the buffer holds %d", nb, l->bufn);
  nc_sconv *tmp = calloc(nb ? nb : 1, sizeof *tmp);
  if (!tmp) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_status st = NC_OK;
  size_t done = 0;
  for (; !st && done < nb; done++) {
    json_t *e = json_array_get(buf, done);
    if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= len) {
      st = nc_errorf(NC_E_PARSE, "SFT loader state: buffer[%zu] is not an entry index in [0, %lld)", done,
                     (long long)len);
      break;
    }
    st = nc_sft_render(l, json_integer_value(e), &tmp[done]);
    if (st) break;
  }
  if (st) {
    for (size_t i = 0; i < done; i++) free(tmp[i].ids), free(tmp[i].mask);
    free(tmp);
    return st;
  }
  nc_sft_clear(l);
  memcpy(l->buf, tmp, nb * sizeof *tmp);
  l->nbuf = (int64_t)nb;
  free(tmp);
  l->cursor = cursor;
  l->epoch = epoch;
  l->consumed = consumed;
  l->skipped = skipped;
  return NC_OK;
}

nc_status nc_sft_loader_restore(nc_sft_loader *l, const char *json) {
  json_error_t err;
  json_t *o = json ? json_loads(json, 0, &err) : NULL;
  if (!o)
    return nc_errorf(NC_E_PARSE, "SFT loader state: bad JSON:%d:%d: %s", json ? err.line : 0, json ? err.column : 0,
                     json ? err.text : "no state");
  nc_status st = json_is_object(o) ? nc_sft_restore_parsed(l, o)
                                   : nc_errorf(NC_E_PARSE, "SFT loader state: not a JSON object");
  json_decref(o);
  return st;
}
