// Growable byte buffer (strings, file contents) and a few helpers shared by
// every layer: hashing, UTF-8 validation, whole-file reads, atomic writes.
#ifndef NC_SUPPORT_BUF_H
#define NC_SUPPORT_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "support/status.h"

typedef struct {
  char *data;  // always NUL-terminated when len > 0 or after nc_buf_puts
  size_t len, cap;
  bool oom;    // sticky: an allocation failed; contents are truncated
} nc_buf;

void nc_buf_init(nc_buf *b);
void nc_buf_free(nc_buf *b);
void nc_buf_put(nc_buf *b, const void *p, size_t n);
void nc_buf_puts(nc_buf *b, const char *s);
void nc_buf_printf(nc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Takes ownership of the buffer's memory (caller frees); NULL if oom.
char *nc_buf_take(nc_buf *b);

// 64-bit FNV-1a style mixing (stable across runs and machines).
uint64_t nc_hash_bytes(uint64_t h, const void *p, size_t n);
uint64_t nc_hash_u64(uint64_t h, uint64_t v);
#define NC_HASH_SEED 0xcbf29ce484222325ull

// Returns the byte offset of the first invalid UTF-8 sequence, or -1 if valid.
long nc_utf8_invalid_at(const char *s, size_t n);

// Reads a whole file (max_bytes guards absurd sizes). *out is NUL-terminated.
nc_status nc_file_read(const char *path, size_t max_bytes, char **out, size_t *len);
// Writes atomically: temporary file in the same folder, fsync, rename.
nc_status nc_file_write_atomic(const char *path, const void *data, size_t len);

// Formats a double so that strtod gives back the same value, shortest first.
void nc_fmt_double(char out[32], double v);

#endif
