#include "support/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void nc_buf_init(nc_buf *b) { memset(b, 0, sizeof *b); }

void nc_buf_free(nc_buf *b) {
  free(b->data);
  nc_buf_init(b);
}

static bool nc_buf_reserve(nc_buf *b, size_t extra) {
  if (b->oom) return false;
  if (b->len + extra + 1 <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *d = realloc(b->data, cap);
  if (!d) {
    b->oom = true;
    return false;
  }
  b->data = d;
  b->cap = cap;
  return true;
}

void nc_buf_put(nc_buf *b, const void *p, size_t n) {
  if (!nc_buf_reserve(b, n)) return;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = 0;
}

void nc_buf_puts(nc_buf *b, const char *s) { nc_buf_put(b, s, strlen(s)); }

void nc_buf_printf(nc_buf *b, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n > 0 && nc_buf_reserve(b, (size_t)n)) {
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    b->len += (size_t)n;
  }
  va_end(ap2);
}

char *nc_buf_take(nc_buf *b) {
  if (b->oom) {
    nc_buf_free(b);
    return NULL;
  }
  if (!b->data) nc_buf_reserve(b, 0), b->data[0] = 0;
  char *d = b->data;
  nc_buf_init(b);
  return d;
}

uint64_t nc_hash_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t nc_hash_u64(uint64_t h, uint64_t v) {
  // splitmix-style finalizer folded into the running hash
  v += 0x9e3779b97f4a7c15ull;
  v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
  v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
  v ^= v >> 31;
  h ^= v;
  h *= 0x100000001b3ull;
  return h ^ (h >> 29);
}

long nc_utf8_invalid_at(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return (long)i;
    if (i + len > n) return (long)i;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return (long)i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return (long)i;
    i += len;
  }
  return -1;
}

nc_status nc_file_read(const char *path, size_t max_bytes, char **out, size_t *len) {
  *out = NULL;
  if (len) *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return nc_errorf(NC_E_IO, "%s: cannot open: %s", path, strerror(errno));
  nc_buf b;
  nc_buf_init(&b);
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (b.len + n > max_bytes) {
      fclose(f);
      nc_buf_free(&b);
      return nc_errorf(NC_E_INVALID, "%s: file larger than the limit of %zu bytes", path, max_bytes);
    }
    nc_buf_put(&b, chunk, n);
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    nc_buf_free(&b);
    return nc_errorf(NC_E_IO, "%s: read error", path);
  }
  size_t l = b.len;
  char *d = nc_buf_take(&b);
  if (!d) return nc_errorf(NC_E_NOMEM, "%s: out of memory reading file", path);
  *out = d;
  if (len) *len = l;
  return NC_OK;
}

nc_status nc_file_write_atomic(const char *path, const void *data, size_t len) {
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 32);
  if (!tmp) return nc_errorf(NC_E_NOMEM, "out of memory");
  snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    nc_status st = nc_errorf(NC_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
    free(tmp);
    return st;
  }
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      nc_status st = nc_errorf(NC_E_IO, "%s: write failed: %s", tmp, strerror(errno));
      close(fd);
      unlink(tmp);
      free(tmp);
      return st;
    }
    p += w;
    left -= (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    nc_status st = nc_errorf(NC_E_IO, "%s: fsync/close failed: %s", tmp, strerror(errno));
    unlink(tmp);
    free(tmp);
    return st;
  }
  if (rename(tmp, path) != 0) {
    nc_status st = nc_errorf(NC_E_IO, "%s: rename failed: %s", path, strerror(errno));
    unlink(tmp);
    free(tmp);
    return st;
  }
  free(tmp);
  return NC_OK;
}

void nc_fmt_double(char out[32], double v) {
  if (isnan(v)) {
    strcpy(out, "nan");
    return;
  }
  if (isinf(v)) {
    strcpy(out, v > 0 ? "inf" : "-inf");
    return;
  }
  for (int prec = 6; prec <= 17; prec++) {
    snprintf(out, 32, "%.*g", prec, v);
    if (strtod(out, NULL) == v) return;
  }
}
