// Errors as values. A function that can fail returns nc_status: NC_OK (NULL)
// on success, otherwise an owned error object carrying a code and a message
// that names the culprit (file:line, node, field). The caller frees it with
// nc_status_free or passes it up, optionally prefixing context.
#ifndef NC_SUPPORT_STATUS_H
#define NC_SUPPORT_STATUS_H

#include <stdarg.h>

typedef enum {
  NC_E_OK = 0,
  NC_E_INVALID = 2,   // bad argument / bad user input
  NC_E_PARSE = 3,     // malformed text, XML, JSON ...
  NC_E_TYPE = 4,      // dtype or shape rule violated
  NC_E_IO = 5,        // file system
  NC_E_NOMEM = 6,     // allocation failed or size absurd
  NC_E_UNSUPPORTED = 7,
  NC_E_INTERNAL = 8,  // a bug in nanochat-c
} nc_code;

typedef struct nc_err *nc_status;
#define NC_OK ((nc_status)0)

nc_status nc_errorf(nc_code code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
nc_status nc_verrorf(nc_code code, const char *fmt, va_list ap);
// Returns st with "prefix" (printf-style) put in front of its message.
nc_status nc_status_prefix(nc_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
nc_code nc_status_code(nc_status st);
const char *nc_status_msg(nc_status st);  // "" for NC_OK
void nc_status_free(nc_status st);

#define NC_TRY(expr)                 \
  do {                               \
    nc_status nc_try_st_ = (expr);   \
    if (nc_try_st_) return nc_try_st_; \
  } while (0)

#endif
