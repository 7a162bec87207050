// Training documents from files, streamed: plain text (a document per
// paragraph: lines up to and including the blank line(s) after them), JSONL
// with a "text" string field per line, or either gzipped. zlib's gzread reads
// uncompressed files transparently, so every format goes through gzFile.
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "chat/tokenizer_internal.h"

// A plain-text document is also cut at a line end once it is this long, so a
// file without blank lines streams instead of becoming one huge document.
#define NC_TEXT_DOC_MAX ((size_t)1 << 20)

struct nc_tok_docfile {
  char **paths;
  size_t npaths, cur;
  gzFile gz;
  bool jsonl;
  size_t line;
  nc_buf ln;       // current line
  nc_buf doc;      // document handed out
  bool have_pending;  // text mode: ln holds the first line of the next doc
  uint64_t bytes;
  char *rbuf;  // read buffer
  size_t rpos, rlen;
  bool eof;
};
#define NC_RBUF (1 << 17)

static bool nc_ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

nc_status nc_tok_docfile_open(const char *const *paths, size_t n, nc_tok_docfile **out) {
  *out = NULL;
  if (n == 0) return nc_errorf(NC_E_INVALID, "no input files");
  for (size_t i = 0; i < n; i++) {
    FILE *f = fopen(paths[i], "rb");
    if (!f) return nc_errorf(NC_E_IO, "%s: cannot open: %s", paths[i], strerror(errno));
    fclose(f);
    struct stat sb;
    if (stat(paths[i], &sb) == 0 && S_ISDIR(sb.st_mode)) return nc_errorf(NC_E_IO, "%s: is a directory", paths[i]);
  }
  nc_tok_docfile *f = calloc(1, sizeof *f);
  if (!f) return nc_errorf(NC_E_NOMEM, "out of memory");
  f->paths = calloc(n, sizeof *f->paths);
  if (!f->paths) {
    free(f);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  f->rbuf = malloc(NC_RBUF);
  if (!f->rbuf) {
    free(f->paths);
    free(f);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++) f->paths[i] = strdup(paths[i]);
  f->npaths = n;
  *out = f;
  return NC_OK;
}

void nc_tok_docfile_close(nc_tok_docfile *f) {
  if (!f) return;
  if (f->gz) gzclose(f->gz);
  for (size_t i = 0; i < f->npaths; i++) free(f->paths[i]);
  free(f->paths);
  free(f->rbuf);
  nc_buf_free(&f->ln);
  nc_buf_free(&f->doc);
  free(f);
}

uint64_t nc_tok_docfile_bytes_read(const nc_tok_docfile *f) { return f->bytes; }

// Reads one line (with its '\n') into f->ln; *got = false at end of file.
// Own buffering (not gzgets) so NUL bytes inside lines survive.
static nc_status nc_read_line(nc_tok_docfile *f, bool *got) {
  f->ln.len = 0;
  *got = false;
  for (;;) {
    if (f->rpos == f->rlen) {
      if (f->eof) break;
      int r = gzread(f->gz, f->rbuf, NC_RBUF);
      if (r < 0) {
        int err;
        const char *msg = gzerror(f->gz, &err);
        return nc_errorf(NC_E_IO, "%s:%zu: read error: %s", f->paths[f->cur], f->line + 1, msg);
      }
      if (r == 0) {
        f->eof = true;
        break;
      }
      f->rpos = 0;
      f->rlen = (size_t)r;
    }
    const char *s = f->rbuf + f->rpos;
    size_t avail = f->rlen - f->rpos;
    const char *nl = memchr(s, '\n', avail);
    size_t take = nl ? (size_t)(nl - s) + 1 : avail;
    nc_buf_put(&f->ln, s, take);
    f->rpos += take;
    *got = true;
    if (nl) break;
  }
  if (f->ln.oom) return nc_errorf(NC_E_NOMEM, "out of memory reading %s", f->paths[f->cur]);
  if (*got) f->line++, f->bytes += f->ln.len;
  return NC_OK;
}

static nc_status nc_open_next(nc_tok_docfile *f) {
  const char *p = f->paths[f->cur];
  f->gz = gzopen(p, "rb");
  if (!f->gz) return nc_errorf(NC_E_IO, "%s: cannot open: %s", p, strerror(errno));
  f->line = 0;
  f->rpos = f->rlen = 0;
  f->eof = false;
  f->have_pending = false;
  char name[4096];
  snprintf(name, sizeof name, "%s", p);
  if (nc_ends_with(name, ".gz")) name[strlen(name) - 3] = 0;
  f->jsonl = nc_ends_with(name, ".jsonl") || nc_ends_with(name, ".json") || nc_ends_with(name, ".ndjson");
  if (!f->jsonl) {
    // Sniff: a first line that is a JSON object with "text" means JSONL.
    bool got;
    NC_TRY(nc_read_line(f, &got));
    if (got) {
      f->have_pending = true;
      if (f->ln.data[0] == '{') {
        json_t *j = json_loadb(f->ln.data, f->ln.len, 0, NULL);
        f->jsonl = j && json_is_string(json_object_get(j, "text"));
        json_decref(j);
      }
    }
  }
  return NC_OK;
}

static bool nc_blank(const nc_buf *b) {
  for (size_t i = 0; i < b->len; i++)
    if (b->data[i] != '\n' && b->data[i] != '\r' && b->data[i] != ' ' && b->data[i] != '\t') return false;
  return true;
}

nc_status nc_tok_docfile_next(void *vf, const char **doc, size_t *len) {
  nc_tok_docfile *f = vf;
  *doc = NULL;
  *len = 0;
  for (;;) {
    if (!f->gz) {
      if (f->cur >= f->npaths) return NC_OK;
      NC_TRY(nc_open_next(f));
    }
    f->doc.len = 0;
    if (f->jsonl) {
      for (;;) {
        bool got = true;
        if (f->have_pending) f->have_pending = false;
        else NC_TRY(nc_read_line(f, &got));
        if (!got) break;
        if (nc_blank(&f->ln)) continue;
        json_error_t err;
        json_t *j = json_loadb(f->ln.data, f->ln.len, 0, &err);
        if (!j) return nc_errorf(NC_E_PARSE, "%s:%zu: bad JSON: %s", f->paths[f->cur], f->line, err.text);
        json_t *t = json_object_get(j, "text");
        if (!json_is_string(t)) {
          json_decref(j);
          return nc_errorf(NC_E_PARSE, "%s:%zu: no \"text\" string field", f->paths[f->cur], f->line);
        }
        nc_buf_put(&f->doc, json_string_value(t), json_string_length(t));
        json_decref(j);
        if (f->doc.oom) return nc_errorf(NC_E_NOMEM, "out of memory");
        *doc = f->doc.data;
        *len = f->doc.len;
        return NC_OK;
      }
    } else {
      bool in_blank = false;
      for (;;) {
        bool got = true;
        if (f->have_pending) f->have_pending = false;
        else NC_TRY(nc_read_line(f, &got));
        if (!got) break;
        bool blank = nc_blank(&f->ln);
        if (!blank && (in_blank || f->doc.len >= NC_TEXT_DOC_MAX) && f->doc.len) {
          f->have_pending = true;  // this line opens the next document
          break;
        }
        in_blank = blank;
        nc_buf_put(&f->doc, f->ln.data, f->ln.len);
      }
      if (f->doc.oom) return nc_errorf(NC_E_NOMEM, "out of memory");
      if (f->doc.len) {
        *doc = f->doc.data;
        *len = f->doc.len;
        if (!f->have_pending) goto next_file;  // end of this file
        return NC_OK;
      }
    }
  next_file:
    gzclose(f->gz);
    f->gz = NULL;
    f->cur++;
    if (*doc) return NC_OK;
  }
}
