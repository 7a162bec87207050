// Document streams over pretraining shards (data/loader.h): plain-text
// paragraphs or JSONL "text" fields, plain or gzipped (zlib reads both), with
// the start position of every document so a loader can resume exactly, and
// malformed input reported as file:line (or skipped and counted).
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "data/loader.h"
#include "support/buf.h"

#define NC_DOC_MAX ((size_t)1 << 20)  // plain-text paragraphs are cut at a line end past this
#define NC_DOC_RBUF ((size_t)1 << 17)

struct nc_docstream {
  char **paths;
  int npaths;
  bool skip_bad;
  int cur;          // current shard (npaths = at the end)
  gzFile gz;        // open while reading shard cur
  bool jsonl;
  int64_t line;     // lines consumed in the current shard
  int64_t offset;   // uncompressed bytes consumed in the current shard
  bool file_docs;   // the current shard has documents (empty-shard check)
  nc_buf ln;        // the last line read
  int64_t ln_off, ln_line;
  bool pending;     // ln is not consumed yet (it starts the next document)
  nc_buf doc;
  char *rbuf;
  size_t rpos, rlen;
  bool eof;
  int64_t skipped;
  char *first_skip;
};

static bool nc_ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

// With skip_bad: counts st as a skip (keeping the first message) and returns
// NC_OK; otherwise returns st.
static nc_status nc_ds_skip(nc_docstream *s, nc_status st) {
  if (!st || !s->skip_bad) return st;
  s->skipped++;
  if (!s->first_skip) s->first_skip = strdup(nc_status_msg(st));
  nc_status_free(st);
  return NC_OK;
}

static void nc_ds_close_file(nc_docstream *s) {
  if (s->gz) gzclose(s->gz);
  s->gz = NULL;
  s->pending = false;
  s->rpos = s->rlen = 0;
  s->eof = false;
}

// Reads one line (with its '\n') into s->ln; *got = false at the end of the
// shard. Own buffering (not gzgets) so NUL bytes inside lines survive.
static nc_status nc_ds_read_line(nc_docstream *s, bool *got) {
  if (s->pending) {
    s->pending = false;
    *got = true;
    return NC_OK;
  }
  s->ln.len = 0;
  *got = false;
  for (;;) {
    if (s->rpos == s->rlen) {
      if (s->eof) break;
      int r = gzread(s->gz, s->rbuf, (unsigned)NC_DOC_RBUF);
      int err = Z_OK;
      const char *msg = r <= 0 ? gzerror(s->gz, &err) : "";
      if (r < 0 || (r == 0 && err != Z_OK)) {
        size_t pl = strlen(s->paths[s->cur]);  // gzerror's message starts with "path: "
        if (!strncmp(msg, s->paths[s->cur], pl) && !strncmp(msg + pl, ": ", 2)) msg += pl + 2;
        return nc_errorf(NC_E_IO, "%s:%lld: %s (%s)", s->paths[s->cur], (long long)s->line + 1,
                         err == Z_BUF_ERROR ? "truncated gzip file" : "unreadable gzip data", msg);
      }
      if (r == 0) {
        s->eof = true;
        break;
      }
      s->rpos = 0;
      s->rlen = (size_t)r;
    }
    const char *p = s->rbuf + s->rpos;
    size_t avail = s->rlen - s->rpos;
    const char *nl = memchr(p, '\n', avail);
    size_t take = nl ? (size_t)(nl - p) + 1 : avail;
    nc_buf_put(&s->ln, p, take);
    s->rpos += take;
    *got = true;
    if (nl) break;
  }
  if (s->ln.oom) return nc_errorf(NC_E_NOMEM, "%s:%lld: out of memory", s->paths[s->cur], (long long)s->line + 1);
  if (*got) {
    s->ln_off = s->offset;
    s->ln_line = ++s->line;
    s->offset += (int64_t)s->ln.len;
  }
  return NC_OK;
}

static nc_status nc_ds_open_file(nc_docstream *s) {
  const char *p = s->paths[s->cur];
  struct stat sb;
  if (stat(p, &sb) != 0) return nc_errorf(NC_E_IO, "%s: cannot open: %s", p, strerror(errno));
  if (S_ISDIR(sb.st_mode)) return nc_errorf(NC_E_IO, "%s: is a directory, not a shard file", p);
  s->gz = gzopen(p, "rb");
  if (!s->gz) return nc_errorf(NC_E_IO, "%s: cannot open: %s", p, strerror(errno));
  gzbuffer(s->gz, 1 << 17);
  s->line = s->offset = 0;
  s->rpos = s->rlen = 0;
  s->eof = false;
  s->pending = false;
  s->file_docs = false;
  char name[4096];
  snprintf(name, sizeof name, "%s", p);
  if (nc_ends_with(name, ".gz")) name[strlen(name) - 3] = 0;
  s->jsonl = nc_ends_with(name, ".jsonl") || nc_ends_with(name, ".json") || nc_ends_with(name, ".ndjson");
  if (!s->jsonl) {
    // Sniff: a first line that is a JSON object with a "text" string means JSONL.
    bool got;
    nc_status st = nc_ds_read_line(s, &got);
    if (st) {
      nc_ds_close_file(s);
      return st;
    }
    if (got && s->ln.len && s->ln.data[0] == '{') {
      json_t *j = json_loadb(s->ln.data, s->ln.len, 0, NULL);
      s->jsonl = j && json_is_string(json_object_get(j, "text"));
      json_decref(j);
    }
    if (gzrewind(s->gz) != 0) {
      nc_ds_close_file(s);
      return nc_errorf(NC_E_IO, "%s: cannot rewind", p);
    }
    s->line = s->offset = 0;
    s->rpos = s->rlen = 0;
    s->eof = false;
    s->pending = false;
  }
  return NC_OK;
}

nc_status nc_docstream_open(const char *const *paths, int npaths, bool skip_bad, nc_docstream **out) {
  *out = NULL;
  if (npaths <= 0) return nc_errorf(NC_E_INVALID, "no shard files given");
  nc_docstream *s = calloc(1, sizeof *s);
  if (!s) return nc_errorf(NC_E_NOMEM, "out of memory");
  s->paths = calloc((size_t)npaths, sizeof *s->paths);
  s->rbuf = malloc(NC_DOC_RBUF);
  s->npaths = npaths;
  s->skip_bad = skip_bad;
  if (!s->paths || !s->rbuf) {
    nc_docstream_close(s);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  for (int i = 0; i < npaths; i++) {
    if (!paths[i]) {
      nc_docstream_close(s);
      return nc_errorf(NC_E_INVALID, "shard path %d is NULL", i);
    }
    s->paths[i] = strdup(paths[i]);
    if (!s->paths[i]) {
      nc_docstream_close(s);
      return nc_errorf(NC_E_NOMEM, "out of memory");
    }
  }
  *out = s;
  return NC_OK;
}

void nc_docstream_close(nc_docstream *s) {
  if (!s) return;
  nc_ds_close_file(s);
  if (s->paths)
    for (int i = 0; i < s->npaths; i++) free(s->paths[i]);
  free(s->paths);
  free(s->rbuf);
  free(s->first_skip);
  nc_buf_free(&s->ln);
  nc_buf_free(&s->doc);
  free(s);
}

int64_t nc_docstream_skipped(const nc_docstream *s) { return s->skipped; }
const char *nc_docstream_first_skip(const nc_docstream *s) { return s->first_skip ? s->first_skip : ""; }

void nc_docstream_tell(const nc_docstream *s, nc_doc_pos *pos) {
  if (s->cur >= s->npaths) {
    *pos = (nc_doc_pos){s->npaths, 0, 1};
  } else if (!s->gz) {
    *pos = (nc_doc_pos){s->cur, 0, 1};
  } else if (s->pending) {
    *pos = (nc_doc_pos){s->cur, s->ln_off, s->ln_line};
  } else {
    *pos = (nc_doc_pos){s->cur, s->offset, s->line + 1};
  }
}

nc_status nc_docstream_seek(nc_docstream *s, const nc_doc_pos *pos) {
  if (pos->file < 0 || pos->file > s->npaths || pos->offset < 0 || pos->line < 1)
    return nc_errorf(NC_E_INVALID, "document position (file %d, offset %lld, line %lld) is out of range (%d shards)",
                     (int)pos->file, (long long)pos->offset, (long long)pos->line, s->npaths);
  if (pos->file == s->npaths) {
    nc_ds_close_file(s);
    s->cur = s->npaths;
    return NC_OK;
  }
  if (s->cur != pos->file || !s->gz) {
    nc_ds_close_file(s);
    s->cur = pos->file;
    NC_TRY(nc_ds_open_file(s));
  }
  if (gzseek(s->gz, (z_off_t)pos->offset, SEEK_SET) < 0) {
    int err;
    const char *msg = gzerror(s->gz, &err);
    return nc_errorf(NC_E_IO, "%s: cannot seek to byte %lld (line %lld): %s", s->paths[s->cur],
                     (long long)pos->offset, (long long)pos->line, msg);
  }
  s->rpos = s->rlen = 0;
  s->eof = false;
  s->pending = false;
  s->offset = pos->offset;
  s->line = pos->line - 1;
  s->file_docs = pos->offset > 0;
  return NC_OK;
}

static bool nc_ds_blank(const nc_buf *b) {
  for (size_t i = 0; i < b->len; i++)
    if (b->data[i] != '\n' && b->data[i] != '\r' && b->data[i] != ' ' && b->data[i] != '\t') return false;
  return true;
}

static nc_status nc_ds_check_utf8(const nc_docstream *s) {
  long bad = nc_utf8_invalid_at(s->ln.data, s->ln.len);
  if (bad < 0) return NC_OK;
  return nc_errorf(NC_E_PARSE, "%s:%lld:%ld: invalid UTF-8 (byte 0x%02x)", s->paths[s->cur], (long long)s->ln_line,
                   bad + 1, (unsigned char)s->ln.data[bad]);
}

// One JSONL document; *got = false at the end of the shard.
static nc_status nc_ds_next_jsonl(nc_docstream *s, bool *got, nc_doc_pos *pos) {
  for (;;) {
    NC_TRY(nc_ds_read_line(s, got));
    if (!*got) return NC_OK;
    if (nc_ds_blank(&s->ln)) continue;
    nc_status st = nc_ds_check_utf8(s);
    if (st) {
      NC_TRY(nc_ds_skip(s, st));
      continue;
    }
    json_error_t err;
    json_t *j = json_loadb(s->ln.data, s->ln.len, 0, &err);
    if (!j) {
      NC_TRY(nc_ds_skip(s, nc_errorf(NC_E_PARSE, "%s:%lld:%d: bad JSON: %s", s->paths[s->cur],
                                     (long long)s->ln_line, err.column, err.text)));
      continue;
    }
    json_t *t = json_is_object(j) ? json_object_get(j, "text") : NULL;
    if (!json_is_string(t)) {
      json_decref(j);
      NC_TRY(nc_ds_skip(s, nc_errorf(NC_E_PARSE, "%s:%lld: %s", s->paths[s->cur], (long long)s->ln_line,
                                     t ? "field \"text\" is not a string" : "no \"text\" field")));
      continue;
    }
    s->doc.len = 0;
    nc_buf_put(&s->doc, json_string_value(t), json_string_length(t));
    json_decref(j);
    if (s->doc.oom) return nc_errorf(NC_E_NOMEM, "%s:%lld: out of memory", s->paths[s->cur], (long long)s->ln_line);
    *pos = (nc_doc_pos){s->cur, s->ln_off, s->ln_line};
    return NC_OK;
  }
}

// One plain-text paragraph; *got = false at the end of the shard.
static nc_status nc_ds_next_text(nc_docstream *s, bool *got, nc_doc_pos *pos) {
  for (;;) {
    s->doc.len = 0;
    bool started = false, line_got = false;
    nc_status bad = NC_OK;
    for (;;) {
      NC_TRY(nc_ds_read_line(s, &line_got));
      if (!line_got) break;
      if (nc_ds_blank(&s->ln)) {
        if (started) break;
        continue;
      }
      if (started && s->doc.len >= NC_DOC_MAX) {
        s->pending = true;  // this line opens the next document
        break;
      }
      if (!started) *pos = (nc_doc_pos){s->cur, s->ln_off, s->ln_line};
      started = true;
      if (!bad) bad = nc_ds_check_utf8(s);
      nc_buf_put(&s->doc, s->ln.data, s->ln.len);
    }
    if (s->doc.oom) {
      nc_status_free(bad);
      return nc_errorf(NC_E_NOMEM, "%s: out of memory", s->paths[s->cur]);
    }
    *got = started;
    if (!started) return NC_OK;
    if (bad) {
      NC_TRY(nc_ds_skip(s, bad));  // the whole paragraph is dropped
      continue;
    }
    return NC_OK;
  }
}

nc_status nc_docstream_next(nc_docstream *s, const char **text, size_t *len, nc_doc_pos *pos) {
  *text = NULL;
  *len = 0;
  for (;;) {
    if (s->cur >= s->npaths) return NC_OK;
    if (!s->gz) {
      nc_status st = nc_ds_open_file(s);
      if (st) {
        NC_TRY(nc_ds_skip(s, st));
        s->cur++;
        continue;
      }
    }
    bool got = false;
    nc_status st = s->jsonl ? nc_ds_next_jsonl(s, &got, pos) : nc_ds_next_text(s, &got, pos);
    if (st) {
      // A read error (truncated / corrupt gzip) ends the shard.
      if (nc_status_code(st) == NC_E_NOMEM || !s->skip_bad) return st;
      NC_TRY(nc_ds_skip(s, st));
      nc_ds_close_file(s);
      s->cur++;
      continue;
    }
    if (got) {
      s->file_docs = true;
      *text = s->doc.data ? s->doc.data : "";
      *len = s->doc.len;
      return NC_OK;
    }
    bool empty = !s->file_docs;
    nc_ds_close_file(s);
    s->cur++;
    if (empty)
      NC_TRY(nc_ds_skip(s, nc_errorf(NC_E_PARSE, "%s: empty shard (no documents)", s->paths[s->cur - 1])));
  }
}
