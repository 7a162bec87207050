// The default pretraining corpus from Debian-packaged text (data/corpus.h).
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/corpus.h"
#include "data/sft_internal.h"
#include "support/buf.h"

enum { NC_SRC_BIBLE, NC_SRC_GCIDE, NC_SRC_JARGON, NC_SRC_FORTUNES };
static const char *const nc_src_names[] = {"bible", "gcide", "jargon", "fortunes"};

// GCIDE is ~40 MB; every NC_GCIDE_EVERY-th entry (in index order) is kept.
#define NC_GCIDE_EVERY 16

typedef struct {
  char *text;
  size_t len;
  int src;
  uint64_t hash;
} nc_cdoc;

typedef struct {
  nc_cdoc *d;
  size_t n, cap;
  const nc_corpus_opts *o;
} nc_cdocs;

static void nc_clog(const nc_corpus_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void nc_clog(const nc_corpus_opts *o, const char *fmt, ...) {
  if (!o->log) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  o->log(o->log_ctx, line);
}

// Keeps a cleaned document: valid UTF-8, no control bytes but \n, at least
// 16 bytes of text. Takes ownership of b's memory.
static nc_status nc_cdocs_add(nc_cdocs *c, nc_buf *b, int src) {
  // trim trailing whitespace
  while (b->len && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == ' ')) b->len--;
  size_t start = 0;
  while (start < b->len && (b->data[start] == '\n' || b->data[start] == ' ')) start++;
  bool ok = b->len - start >= 16 && nc_utf8_invalid_at(b->data + start, b->len - start) < 0;
  for (size_t i = start; ok && i < b->len; i++) ok = (unsigned char)b->data[i] >= 0x20 || b->data[i] == '\n';
  if (!ok || b->oom) {
    nc_buf_free(b);
    return NC_OK;
  }
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 4096;
    nc_cdoc *d = realloc(c->d, cap * sizeof *d);
    if (!d) {
      nc_buf_free(b);
      return nc_errorf(NC_E_NOMEM, "out of memory");
    }
    c->d = d;
    c->cap = cap;
  }
  char *t = strndup(b->data + start, b->len - start);
  nc_buf_free(b);
  if (!t) return nc_errorf(NC_E_NOMEM, "out of memory");
  size_t len = strlen(t);
  c->d[c->n++] = (nc_cdoc){t, len, src, nc_hash_bytes(NC_HASH_SEED, t, len)};
  return NC_OK;
}

// ---- Bible (bible-kjv: `bible -l100000 Gen1:1-Rev22:21`) -------------------

static nc_status nc_corpus_bible(nc_cdocs *c) {
  const char *cmd = c->o->bible_cmd ? c->o->bible_cmd : "bible";
  char line[1024];
  snprintf(line, sizeof line, "%s -l100000 'Gen1:1-Rev22:21' </dev/null 2>/dev/null", cmd);
  FILE *p = popen(line, "r");
  if (!p) {
    nc_clog(c->o, "bible: cannot run '%s' (install bible-kjv); skipped", cmd);
    return NC_OK;
  }
  // A chapter per document: "Genesis 1" then "1 In the beginning ..." lines.
  nc_buf doc = {0}, ln = {0};
  size_t before = c->n;
  char chunk[8192];
  nc_status st = NC_OK;
  for (;;) {
    if (!fgets(chunk, sizeof chunk, p)) break;
    nc_buf_puts(&ln, chunk);
    if (!ln.len || ln.data[ln.len - 1] != '\n') continue;
    ln.data[--ln.len] = 0;
    if (ln.len && ln.data[0] != ' ') {  // a chapter heading
      if (doc.len) st = nc_cdocs_add(c, &doc, NC_SRC_BIBLE);
      nc_buf_init(&doc);
      nc_buf_printf(&doc, "%s\n\n", ln.data);
    } else if (ln.len) {
      const char *s = ln.data;
      while (*s == ' ') s++;
      nc_buf_printf(&doc, "%s\n", s);
    }
    ln.len = 0;
    if (st) break;
  }
  if (!st && doc.len) st = nc_cdocs_add(c, &doc, NC_SRC_BIBLE);
  nc_buf_free(&doc);
  nc_buf_free(&ln);
  int rc = pclose(p);
  if (!st && c->n == before)
    nc_clog(c->o, "bible: '%s' gave no text (exit status %d; install bible-kjv); skipped", cmd, rc);
  return st;
}

// ---- dictd files (.index + .dict.dz) ---------------------------------------

static int nc_b64v(char ch) {
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9') return ch - '0' + 52;
  if (ch == '+') return 62;
  if (ch == '/') return 63;
  return -1;
}

static bool nc_b64num(const char *s, size_t n, uint64_t *out) {
  uint64_t v = 0;
  if (!n || n > 10) return false;
  for (size_t i = 0; i < n; i++) {
    int d = nc_b64v(s[i]);
    if (d < 0) return false;
    v = v * 64 + (uint64_t)d;
  }
  *out = v;
  return true;
}

// Removes \pron\ groups, (...) holding pronunciation markup, [...] groups and
// braces; unwraps lines into paragraphs.
static void nc_clean_gcide(const char *s, size_t n, nc_buf *out) {
  nc_buf t = {0};
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch == '\\') {
      const char *e = memchr(s + i + 1, '\\', n - i - 1);
      if (e && e - (s + i) < 80) {
        i = (size_t)(e - s);
        continue;
      }
    }
    if (ch == '[') {  // etymologies, sources, accent markup; nested
      size_t j = i + 1;
      int depth = 1;
      for (; j < n && j - i < 4000 && depth; j++) depth += s[j] == '[' ? 1 : s[j] == ']' ? -1 : 0;
      if (!depth) {
        i = j - 1;
        continue;
      }
    }
    if (ch == '(') {
      const char *e = memchr(s + i + 1, ')', n - i - 1);
      if (e && e - (s + i) < 120) {
        bool markup = false;
        for (const char *q = s + i; q < e && !markup; q++) markup = *q == '*' || *q == '"' || *q == '`' || *q == '[';
        if (markup) {
          i = (size_t)(e - s);
          continue;
        }
      }
    }
    if (ch == '{' || ch == '}') continue;
    nc_buf_put(&t, &ch, 1);
  }
  // Unwrap: lines -> spaces, blank lines -> paragraph breaks; squeeze spaces.
  bool space = false, nl = false;
  int nls = 0;
  for (size_t i = 0; i < t.len; i++) {
    char ch = t.data[i];
    if (ch == '\n') {
      nls++;
      continue;
    }
    if (ch == ' ' || ch == '\t' || ch == '\r') {
      space = true;
      continue;
    }
    if (nls >= 2 && out->len) nl = true;
    else if (nls == 1) space = true;
    nls = 0;
    if (nl) {
      nc_buf_puts(out, "\n\n");
    } else if (space && out->len) {
      if (ch != ',' && ch != '.' && ch != ';' && ch != ':') nc_buf_puts(out, " ");
    }
    space = nl = false;
    nc_buf_put(out, &ch, 1);
  }
  nc_buf_free(&t);
}

typedef struct {
  uint64_t off, len;
} nc_dentry;

static int nc_dentry_cmp(const void *a, const void *b) {
  const nc_dentry *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

static nc_status nc_corpus_dict(nc_cdocs *c, const char *dir, const char *name, int src, int every) {
  char ipath[4096], dpath[4096];
  snprintf(ipath, sizeof ipath, "%s/%s.index", dir, name);
  snprintf(dpath, sizeof dpath, "%s/%s.dict.dz", dir, name);
  struct stat sb;
  if (stat(ipath, &sb) != 0 || stat(dpath, &sb) != 0) {
    nc_clog(c->o, "%s: %s or %s missing (install dict-%s); skipped", name, ipath, dpath, name);
    return NC_OK;
  }
  nc_buf idx = {0}, dict = {0};
  nc_status st = nc_data_read_all(ipath, &idx);
  if (!st) st = nc_data_read_all(dpath, &dict);
  nc_dentry *ents = NULL;
  size_t ne = 0, cap = 0, line = 0;
  for (size_t pos = 0; !st && pos < idx.len;) {
    const char *p = idx.data + pos;
    const char *e = memchr(p, '\n', idx.len - pos);
    size_t n = e ? (size_t)(e - p) : idx.len - pos;
    pos += n + 1;
    line++;
    const char *t1 = memchr(p, '\t', n);
    const char *t2 = t1 ? memchr(t1 + 1, '\t', n - (size_t)(t1 + 1 - p)) : NULL;
    uint64_t off, len;
    if (!t1 || !t2 || !nc_b64num(t1 + 1, (size_t)(t2 - t1 - 1), &off) ||
        !nc_b64num(t2 + 1, n - (size_t)(t2 + 1 - p), &len)) {
      st = nc_errorf(NC_E_PARSE, "%s:%zu: not a dictd index line (word TAB offset TAB length)", ipath, line);
      break;
    }
    if (n >= 2 && !strncmp(p, "00", 2)) continue;  // 00-database-* metadata entries
    if (off + len > dict.len) {
      st = nc_errorf(NC_E_PARSE, "%s:%zu: entry past the end of %s", ipath, line, dpath);
      break;
    }
    if (ne == cap) {
      cap = cap ? cap * 2 : 4096;
      nc_dentry *d = realloc(ents, cap * sizeof *d);
      if (!d) {
        st = nc_errorf(NC_E_NOMEM, "out of memory");
        break;
      }
      ents = d;
    }
    ents[ne++] = (nc_dentry){off, len};
  }
  if (!st && ne) {
    // Entries in file order, each once (several headwords may share one).
    qsort(ents, ne, sizeof *ents, nc_dentry_cmp);
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
      if (!k || ents[i].off != ents[k - 1].off) ents[k++] = ents[i];
    ne = k;
    for (size_t i = 0; !st && i < ne; i++) {
      if (every > 1 && i % (size_t)every) continue;
      nc_buf b = {0};
      nc_clean_gcide(dict.data + ents[i].off, ents[i].len, &b);
      st = nc_cdocs_add(c, &b, src);
    }
  }
  if (st) st = nc_status_prefix(st, "%s: ", name);
  free(ents);
  nc_buf_free(&idx);
  nc_buf_free(&dict);
  return st;
}

// ---- fortunes (%-separated) ------------------------------------------------

static int nc_strcmp_p(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static nc_status nc_corpus_fortunes(nc_cdocs *c, const char *dir) {
  DIR *d = opendir(dir);
  if (!d) {
    nc_clog(c->o, "fortunes: cannot open %s (install fortunes); skipped", dir);
    return NC_OK;
  }
  char **names = NULL;
  size_t nn = 0, cap = 0;
  nc_status st = NC_OK;
  for (struct dirent *e; !st && (e = readdir(d));) {
    const char *n = e->d_name;
    size_t l = strlen(n);
    if (n[0] == '.' || strchr(n, '.')) continue;  // .dat indexes, .u8 links
    if (!strcmp(n, "art") || !strcmp(n, "ascii-art")) continue;  // pictures, not text
    (void)l;
    if (nn == cap) {
      cap = cap ? cap * 2 : 64;
      char **p = realloc(names, cap * sizeof *p);
      if (!p) {
        st = nc_errorf(NC_E_NOMEM, "out of memory");
        break;
      }
      names = p;
    }
    names[nn] = strdup(n);
    if (names[nn]) nn++;
  }
  closedir(d);
  if (nn) qsort(names, nn, sizeof *names, nc_strcmp_p);
  for (size_t i = 0; !st && i < nn; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
    nc_buf f = {0};
    st = nc_data_read_all(path, &f);
    nc_buf doc = {0};
    for (size_t pos = 0; !st && pos < f.len;) {
      const char *p = f.data + pos;
      const char *e = memchr(p, '\n', f.len - pos);
      size_t n = e ? (size_t)(e - p) : f.len - pos;
      pos += n + 1;
      if (n == 1 && p[0] == '%') {
        st = nc_cdocs_add(c, &doc, NC_SRC_FORTUNES);
        nc_buf_init(&doc);
        continue;
      }
      for (size_t k = 0; k < n; k++) nc_buf_put(&doc, p[k] == '\t' ? "    " : p + k, p[k] == '\t' ? 4 : 1);
      nc_buf_puts(&doc, "\n");
    }
    if (!st) st = nc_cdocs_add(c, &doc, NC_SRC_FORTUNES);
    else nc_buf_free(&doc);
    nc_buf_free(&f);
  }
  for (size_t i = 0; i < nn; i++) free(names[i]);
  free(names);
  return st;
}

// ---- assembly --------------------------------------------------------------

static int nc_cdoc_hash_cmp(const void *a, const void *b) {
  const nc_cdoc *x = a, *y = b;
  if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  int r = memcmp(x->text, y->text, x->len);
  if (r) return r;
  return x->src - y->src;
}

static nc_status nc_write_shard(const char *dir, int idx, const nc_cdoc *d, size_t n) {
  nc_buf b = {0};
  for (size_t i = 0; i < n; i++) {
    json_t *o = json_pack("{s:s%}", "text", d[i].text, d[i].len);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s) {
      nc_buf_free(&b);
      return nc_errorf(NC_E_NOMEM, "out of memory");
    }
    nc_buf_puts(&b, s);
    nc_buf_puts(&b, "\n");
    free(s);
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/shard_%05d.jsonl.gz", dir, idx);
  nc_status st = b.oom ? nc_errorf(NC_E_NOMEM, "out of memory")
                        : nc_data_write_maybe_gz(path, b.data ? b.data : "", b.len);
  nc_buf_free(&b);
  return st;
}

nc_status nc_corpus_build(const nc_corpus_opts *o, nc_corpus_summary *sum) {
  memset(sum, 0, sizeof *sum);
  if (!o || !o->out_dir) return nc_errorf(NC_E_INVALID, "corpus: no output folder");
  if (o->val_fraction < 0 || o->val_fraction >= 1)
    return nc_errorf(NC_E_INVALID, "corpus: val fraction %g is not in [0, 1)", o->val_fraction);
  if (o->shard_bytes < 0 || o->max_bytes < 0) return nc_errorf(NC_E_INVALID, "corpus: negative size");
  if (mkdir(o->out_dir, 0777) != 0 && errno != EEXIST)
    return nc_errorf(NC_E_IO, "%s: cannot create folder: %s", o->out_dir, strerror(errno));
  nc_cdocs c = {.o = o};
  const char *dictd = o->dictd_dir ? o->dictd_dir : "/usr/share/dictd";
  nc_status st = nc_corpus_bible(&c);
  if (!st) st = nc_corpus_dict(&c, dictd, "gcide", NC_SRC_GCIDE, NC_GCIDE_EVERY);
  if (!st) st = nc_corpus_dict(&c, dictd, "jargon", NC_SRC_JARGON, 1);
  if (!st) st = nc_corpus_fortunes(&c, o->fortunes_dir ? o->fortunes_dir : "/usr/share/games/fortunes");
  if (!st && c.n == 0)
    st = nc_errorf(NC_E_INVALID, "corpus: no source could be read (install bible-kjv bible-kjv-text dict-gcide "
                   "dict-jargon fortunes: scripts/setup.sh)");
  if (!st) {
    // Deduplicate (exact text), then shuffle deterministically.
    qsort(c.d, c.n, sizeof *c.d, nc_cdoc_hash_cmp);
    size_t k = 0;
    for (size_t i = 0; i < c.n; i++) {
      if (k && c.d[k - 1].hash == c.d[i].hash && c.d[k - 1].len == c.d[i].len &&
          !memcmp(c.d[k - 1].text, c.d[i].text, c.d[i].len)) {
        free(c.d[i].text);
        continue;
      }
      c.d[k++] = c.d[i];
    }
    c.n = k;
    uint64_t rs = o->seed ? o->seed : 42;
    for (size_t i = c.n - 1; i > 0; i--) {
      size_t j = (size_t)nc_data_rand_below(&rs, (uint64_t)i + 1);
      nc_cdoc t = c.d[i];
      c.d[i] = c.d[j];
      c.d[j] = t;
    }
    if (o->max_bytes) {
      int64_t tot = 0;
      size_t keep = 0;
      while (keep < c.n && tot + (int64_t)c.d[keep].len <= o->max_bytes) tot += (int64_t)c.d[keep++].len;
      for (size_t i = keep; i < c.n; i++) free(c.d[i].text);
      c.n = keep;
      if (!c.n) st = nc_errorf(NC_E_INVALID, "corpus: max bytes %lld keeps no document", (long long)o->max_bytes);
    }
  }
  if (!st) {
    double vf = o->val_fraction ? o->val_fraction : 0.02;
    size_t nval = (size_t)((double)c.n * vf + 0.5);
    if (nval < 1) nval = 1;
    if (nval >= c.n) st = nc_errorf(NC_E_INVALID, "corpus: only %zu documents, too few for a val shard", c.n);
    size_t ntrain = c.n - nval;
    int64_t shard = o->shard_bytes ? o->shard_bytes : (int64_t)1 << 20;
    int idx = 0;
    size_t start = 0;
    int64_t acc = 0;
    for (size_t i = 0; !st && i < ntrain; i++) {
      acc += (int64_t)c.d[i].len;
      if (acc >= shard || i + 1 == ntrain) {
        st = nc_write_shard(o->out_dir, idx++, c.d + start, i + 1 - start);
        start = i + 1;
        acc = 0;
      }
    }
    if (!st) st = nc_write_shard(o->out_dir, idx, c.d + ntrain, nval);
    if (!st) {
      sum->train_shards = idx;
      sum->docs = (int64_t)c.n;
      sum->val_docs = (int64_t)nval;
      for (size_t i = 0; i < c.n; i++) {
        sum->bytes += (int64_t)c.d[i].len;
        if (i >= ntrain) sum->val_bytes += (int64_t)c.d[i].len;
        sum->per_source_docs[c.d[i].src]++;
        sum->per_source_bytes[c.d[i].src] += (int64_t)c.d[i].len;
      }
      for (int s = 0; s < 4; s++)
        nc_clog(o, "%s: %lld documents, %lld bytes", nc_src_names[s], (long long)sum->per_source_docs[s],
                (long long)sum->per_source_bytes[s]);
    }
  }
  for (size_t i = 0; i < c.n; i++) free(c.d[i].text);
  free(c.d);
  return st;
}
