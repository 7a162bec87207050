#include "support/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nc_err {
  nc_code code;
  char *msg;
};

// Returned when even the error object cannot be allocated.
static struct nc_err nc_oom_err = {NC_E_NOMEM, "out of memory"};

nc_status nc_verrorf(nc_code code, const char *fmt, va_list ap) {
  struct nc_err *e = malloc(sizeof *e);
  if (!e) return &nc_oom_err;
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) n = 0;
  e->msg = malloc((size_t)n + 1);
  if (!e->msg) {
    free(e);
    return &nc_oom_err;
  }
  vsnprintf(e->msg, (size_t)n + 1, fmt, ap);
  e->code = code == NC_E_OK ? NC_E_INTERNAL : code;
  return e;
}

nc_status nc_errorf(nc_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  nc_status st = nc_verrorf(code, fmt, ap);
  va_end(ap);
  return st;
}

nc_status nc_status_prefix(nc_status st, const char *fmt, ...) {
  if (!st || st == &nc_oom_err) return st;
  char pre[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  size_t a = strlen(pre), b = strlen(st->msg);
  char *m = malloc(a + b + 1);
  if (!m) return st;
  memcpy(m, pre, a);
  memcpy(m + a, st->msg, b + 1);
  free(st->msg);
  st->msg = m;
  return st;
}

nc_code nc_status_code(nc_status st) { return st ? st->code : NC_E_OK; }
const char *nc_status_msg(nc_status st) { return st ? st->msg : ""; }

void nc_status_free(nc_status st) {
  if (!st || st == &nc_oom_err) return;
  free(st->msg);
  free(st);
}
