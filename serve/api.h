// The OpenAI-compatible API's JSON side, without any HTTP or engine state:
// parsing and validating a chat.completions request (OpenAI's fields plus
// top_k, nanochat's input limits) and formatting responses, stream chunks,
// model lists and errors. serve/server.c drives it; docs/api.md describes
// the wire format. Pure functions: every call may run on any thread.
#ifndef NC_SERVE_API_H
#define NC_SERVE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "support/status.h"

// An error as the API reports it: HTTP status and OpenAI's error object
// {"error":{"message","type","param","code"}} (empty param/code -> null).
typedef struct {
  int http;           // 400, 404, 405, 413, 429, 500, 503
  char type[40];      // "invalid_request_error", "not_found_error", "server_error", ...
  char param[64];     // the offending field ("messages[3].content"), or ""
  char code[48];      // machine-readable ("context_length_exceeded"), or ""
  char message[600];
} nc_api_error;
void nc_api_error_set(nc_api_error *e, int http, const char *type, const char *param, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));
// {"error":{...}} (malloc'd, NUL-terminated).
char *nc_api_error_json(const nc_api_error *e);

// nanochat's chat_web limits, plus what this server allows for n and stop.
typedef struct {
  int max_messages;       // 500
  int max_message_chars;  // 8000 (Unicode code points, like Python's len)
  int max_total_chars;    // 32000
  int max_tokens;         // upper bound of max_tokens: 4096
  int default_max_tokens; // when the request gives none: 512 (chat_web's -m)
  int max_n;              // upper bound of n (at most the engine's slots)
  int max_top_k;          // 200
} nc_api_limits;
void nc_api_limits_default(nc_api_limits *l);

typedef struct {
  char *model;       // as given, or NULL when absent
  char *conv;        // {"messages":[..., {"role":"assistant","content":""}]} for nc_tok_render_for_completion
  size_t conv_len;
  nc_gen_opts gen;   // stop[] points into stops[]
  char *stops[NC_GEN_MAX_STOP];
  bool stream, include_usage;
  int nmessages;
} nc_api_request;

// Parses body (any bytes) into out. On failure returns an NC_E_INVALID or
// NC_E_PARSE status and fills err (HTTP 400, the field in err->param).
// out needs nc_api_request_free either way.
nc_status nc_api_request_parse(const char *body, size_t len, const nc_api_limits *lim, nc_api_request *out,
                               nc_api_error *err);
void nc_api_request_free(nc_api_request *r);

// Appends text as valid UTF-8 (each invalid byte becomes U+FFFD).
void nc_api_utf8_sanitize(const char *s, size_t n, nc_buf *out);

// One choice of a finished completion.
typedef struct {
  const char *text;
  size_t len;
  nc_finish finish;
} nc_api_choice;

// OpenAI's finish_reason for an engine finish ("stop", "length"; NULL: none yet).
const char *nc_api_finish_reason(nc_finish f);

// The chat.completion object (malloc'd JSON).
char *nc_api_completion_json(const char *id, int64_t created, const char *model, const nc_api_choice *choices,
                             int n, int64_t prompt_tokens, int64_t completion_tokens);
// One chat.completion.chunk for choice index: delta {role?, content?} and
// finish_reason (NULL -> null). with_usage adds "usage":null (stream_options
// include_usage asks for it on every chunk but the last).
char *nc_api_chunk_json(const char *id, int64_t created, const char *model, int index, bool role,
                        const char *content, size_t len, bool has_content, const char *finish, bool with_usage);
// The last chunk when include_usage: "choices":[] and the usage.
char *nc_api_usage_chunk_json(const char *id, int64_t created, const char *model, int64_t prompt_tokens,
                              int64_t completion_tokens);
// GET /v1/models and GET /v1/models/{id}.
char *nc_api_models_json(const char *model, int64_t created);
char *nc_api_model_json(const char *model, int64_t created);

#endif
