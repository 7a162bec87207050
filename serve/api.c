// OpenAI chat.completions request parsing/validation and response JSON
// (serve/api.h).
#include "serve/api.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nc_api_error_set(nc_api_error *e, int http, const char *type, const char *param, const char *code,
                      const char *fmt, ...) {
  e->http = http;
  snprintf(e->type, sizeof e->type, "%s", type ? type : "");
  snprintf(e->param, sizeof e->param, "%s", param ? param : "");
  snprintf(e->code, sizeof e->code, "%s", code ? code : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
}

static json_t *nc_jstr_or_null(const char *s) { return s && *s ? json_string(s) : json_null(); }

// json_string* refuse invalid UTF-8: every string we emit goes through this.
static json_t *nc_jtext(const char *s, size_t n) {
  nc_buf b;
  nc_buf_init(&b);
  nc_api_utf8_sanitize(s, n, &b);
  json_t *j = json_stringn(b.len ? b.data : "", b.len);
  nc_buf_free(&b);
  return j ? j : json_string("");
}

char *nc_api_error_json(const nc_api_error *e) {
  nc_buf m;
  nc_buf_init(&m);
  nc_api_utf8_sanitize(e->message, strlen(e->message), &m);
  json_t *o = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", m.len ? m.data : "", "type",
                        e->type[0] ? e->type : "invalid_request_error", "param", nc_jstr_or_null(e->param), "code",
                        nc_jstr_or_null(e->code));
  nc_buf_free(&m);
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

void nc_api_limits_default(nc_api_limits *l) {
  l->max_messages = 500;
  l->max_message_chars = 8000;
  l->max_total_chars = 32000;
  l->max_tokens = 4096;
  l->default_max_tokens = 512;
  l->max_n = 16;
  l->max_top_k = 200;
}

void nc_api_utf8_sanitize(const char *s, size_t n, nc_buf *out) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    long bad = nc_utf8_invalid_at((const char *)p + i, n - i);
    if (bad < 0) {
      nc_buf_put(out, p + i, n - i);
      return;
    }
    nc_buf_put(out, p + i, (size_t)bad);
    nc_buf_put(out, "\xEF\xBF\xBD", 3);
    i += (size_t)bad + 1;
  }
}

static size_t nc_utf8_count(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
  return c;
}

static const char *nc_jtype(const json_t *j) {
  switch (json_typeof(j)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
  }
}

#define NC_BAD(param, ...)                                                                \
  do {                                                                                    \
    nc_api_error_set(err, 400, "invalid_request_error", param, "invalid_value", __VA_ARGS__); \
    return nc_errorf(NC_E_INVALID, "%s", err->message);                                   \
  } while (0)
#define NC_BADTYPE(param, j, want)                                                                    \
  do {                                                                                                \
    nc_api_error_set(err, 400, "invalid_request_error", param, "invalid_type", "%s must be %s, got %s", \
                     param, want, nc_jtype(j));                                                        \
    return nc_errorf(NC_E_INVALID, "%s", err->message);                                               \
  } while (0)

// A number field in [lo, hi]; absent or null leaves *v.
static nc_status nc_get_num(json_t *root, const char *key, double lo, double hi, bool open_lo, double *v,
                            nc_api_error *err) {
  json_t *j = json_object_get(root, key);
  if (!j || json_is_null(j)) return NC_OK;
  if (!json_is_number(j)) NC_BADTYPE(key, j, "a number");
  double x = json_number_value(j);
  if (!isfinite(x) || x > hi || (open_lo ? x <= lo : x < lo))
    NC_BAD(key, "%s must be in %s%g, %g], got %g", key, open_lo ? "(" : "[", lo, hi, x);
  *v = x;
  return NC_OK;
}

static nc_status nc_get_int(json_t *root, const char *key, long long lo, long long hi, long long *v, bool *given,
                            nc_api_error *err) {
  json_t *j = json_object_get(root, key);
  if (given) *given = false;
  if (!j || json_is_null(j)) return NC_OK;
  long long x;
  if (json_is_integer(j))
    x = json_integer_value(j);
  else if (json_is_real(j) && json_real_value(j) == floor(json_real_value(j)) && fabs(json_real_value(j)) < 9e15)
    x = (long long)json_real_value(j);  // 5.0 is an integer in JSON's number model
  else
    NC_BADTYPE(key, j, "an integer");
  if (x < lo || x > hi) NC_BAD(key, "%s must be in [%lld, %lld], got %lld", key, lo, hi, x);
  *v = x;
  if (given) *given = true;
  return NC_OK;
}

static nc_status nc_get_bool(json_t *root, const char *key, bool *v, nc_api_error *err) {
  json_t *j = json_object_get(root, key);
  if (!j || json_is_null(j)) return NC_OK;
  if (!json_is_boolean(j)) NC_BADTYPE(key, j, "a boolean");
  *v = json_is_true(j);
  return NC_OK;
}

// messages -> conv (a new array of {role, content: string}); counts characters.
static nc_status nc_parse_messages(json_t *msgs, const nc_api_limits *lim, json_t *conv, nc_api_error *err) {
  char param[64];
  if (!msgs) NC_BAD("messages", "messages is required");
  if (!json_is_array(msgs)) NC_BADTYPE("messages", msgs, "an array");
  size_t n = json_array_size(msgs);
  if (n == 0) NC_BAD("messages", "messages must not be empty");
  if (n > (size_t)lim->max_messages)
    NC_BAD("messages", "too many messages: %zu (at most %d)", n, lim->max_messages);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *m = json_array_get(msgs, i);
    snprintf(param, sizeof param, "messages[%zu]", i);
    if (!json_is_object(m)) NC_BADTYPE(param, m, "an object");
    json_t *role = json_object_get(m, "role");
    snprintf(param, sizeof param, "messages[%zu].role", i);
    if (!json_is_string(role)) NC_BADTYPE(param, role ? role : json_null(), "a string");
    const char *r = json_string_value(role);
    if (!strcmp(r, "developer")) r = "system";
    if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
      NC_BAD(param, "%s: unsupported role '%s' (system, developer, user, assistant)", param, json_string_value(role));
    json_t *content = json_object_get(m, "content");
    snprintf(param, sizeof param, "messages[%zu].content", i);
    nc_buf text;
    nc_buf_init(&text);
    if (json_is_string(content)) {
      nc_buf_put(&text, json_string_value(content), json_string_length(content));
    } else if (json_is_array(content)) {
      for (size_t k = 0; k < json_array_size(content); k++) {
        json_t *part = json_array_get(content, k);
        json_t *type = json_object_get(part, "type"), *t = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") ||
            !json_is_string(t)) {
          nc_buf_free(&text);
          NC_BAD(param, "%s[%zu]: only {\"type\":\"text\",\"text\":\"...\"} parts are supported", param, k);
        }
        nc_buf_put(&text, json_string_value(t), json_string_length(t));
      }
    } else {
      NC_BADTYPE(param, content ? content : json_null(), "a string or an array of text parts");
    }
    size_t chars = nc_utf8_count(text.data ? text.data : "", text.len);
    if (chars == 0) {
      nc_buf_free(&text);
      NC_BAD(param, "%s is empty", param);
    }
    if (chars > (size_t)lim->max_message_chars) {
      nc_buf_free(&text);
      NC_BAD(param, "%s is too long: %zu characters (at most %d)", param, chars, lim->max_message_chars);
    }
    total += chars;
    if (total > (size_t)lim->max_total_chars) {
      nc_buf_free(&text);
      NC_BAD("messages", "the conversation is too long: more than %d characters in all", lim->max_total_chars);
    }
    json_t *o = json_pack("{s:s,s:s%}", "role", r, "content", text.data ? text.data : "", text.len);
    nc_buf_free(&text);
    if (!o || json_array_append_new(conv, o)) NC_BAD(param, "out of memory");
  }
  return NC_OK;
}

static nc_status nc_parse_stop(json_t *stop, nc_api_request *out, nc_api_error *err) {
  if (!stop || json_is_null(stop)) return NC_OK;
  json_t *one[1] = {stop};
  json_t **items = one;
  size_t n = 1;
  json_t *arr = NULL;
  if (json_is_array(stop)) {
    arr = stop;
    n = json_array_size(stop);
    if (n > NC_GEN_MAX_STOP) NC_BAD("stop", "stop: at most %d sequences, got %zu", NC_GEN_MAX_STOP, n);
  } else if (!json_is_string(stop)) {
    NC_BADTYPE("stop", stop, "a string or an array of strings");
  }
  for (size_t i = 0; i < n; i++) {
    json_t *s = arr ? json_array_get(arr, i) : items[0];
    if (!json_is_string(s)) NC_BADTYPE("stop", s, "a string or an array of strings");
    if (json_string_length(s) == 0) NC_BAD("stop", "stop sequences must not be empty");
    out->stops[out->gen.nstop] = strdup(json_string_value(s));
    if (!out->stops[out->gen.nstop]) NC_BAD("stop", "out of memory");
    out->gen.stop[out->gen.nstop] = out->stops[out->gen.nstop];
    out->gen.nstop++;
  }
  return NC_OK;
}

nc_status nc_api_request_parse(const char *body, size_t len, const nc_api_limits *lim, nc_api_request *out,
                               nc_api_error *err) {
  memset(out, 0, sizeof *out);
  // OpenAI's defaults (temperature 1, top_p 1, n 1, no penalties), calculator tool on.
  out->gen.temperature = 1.0;
  out->gen.top_p = 1.0;
  out->gen.n = 1;
  out->gen.tools = true;
  out->gen.max_tokens = lim->default_max_tokens;
  json_error_t je;
  json_t *root = json_loadb(body ? body : "", len, 0, &je);
  if (!root) {
    nc_api_error_set(err, 400, "invalid_request_error", "", "invalid_json",
                     "could not parse the JSON body of the request: %s (line %d, column %d)", je.text, je.line,
                     je.column);
    return nc_errorf(NC_E_PARSE, "%s", err->message);
  }
  json_t *conv = json_array();
  nc_status st = NC_OK;
  if (!json_is_object(root)) {
    nc_api_error_set(err, 400, "invalid_request_error", "", "invalid_type",
                     "the request body must be a JSON object, got %s", nc_jtype(root));
    st = nc_errorf(NC_E_INVALID, "%s", err->message);
  }
  json_t *model = st ? NULL : json_object_get(root, "model");
  if (!st && model && !json_is_null(model)) {
    if (!json_is_string(model)) {
      nc_api_error_set(err, 400, "invalid_request_error", "model", "invalid_type", "model must be a string, got %s",
                       nc_jtype(model));
      st = nc_errorf(NC_E_INVALID, "%s", err->message);
    } else {
      out->model = strdup(json_string_value(model));
    }
  }
  if (!st) st = nc_parse_messages(json_object_get(root, "messages"), lim, conv, err);
  if (!st) out->nmessages = (int)json_array_size(conv);
  if (!st) st = nc_get_num(root, "temperature", 0, 2, false, &out->gen.temperature, err);
  if (!st) st = nc_get_num(root, "top_p", 0, 1, true, &out->gen.top_p, err);
  if (!st) st = nc_get_num(root, "presence_penalty", -2, 2, false, &out->gen.presence_penalty, err);
  if (!st) st = nc_get_num(root, "frequency_penalty", -2, 2, false, &out->gen.frequency_penalty, err);
  long long v = 0;
  bool given = false;
  if (!st) st = nc_get_int(root, "top_k", 0, lim->max_top_k, &v, &given, err);
  if (!st && given) out->gen.top_k = (int)v;
  if (!st) st = nc_get_int(root, "max_tokens", 1, lim->max_tokens, &v, &given, err);
  if (!st && given) out->gen.max_tokens = (int)v;
  if (!st) st = nc_get_int(root, "max_completion_tokens", 1, lim->max_tokens, &v, &given, err);
  if (!st && given) out->gen.max_tokens = (int)v;
  if (!st) st = nc_get_int(root, "n", 1, lim->max_n, &v, &given, err);
  if (!st && given) out->gen.n = (int)v;
  if (!st) st = nc_get_int(root, "seed", INT64_MIN, INT64_MAX, &v, &given, err);
  if (!st && given) {
    out->gen.seeded = true;
    out->gen.seed = (uint64_t)v;
  }
  if (!st) st = nc_get_bool(root, "stream", &out->stream, err);
  json_t *so = st ? NULL : json_object_get(root, "stream_options");
  if (!st && so && !json_is_null(so)) {
    if (!json_is_object(so)) {
      nc_api_error_set(err, 400, "invalid_request_error", "stream_options", "invalid_type",
                       "stream_options must be an object, got %s", nc_jtype(so));
      st = nc_errorf(NC_E_INVALID, "%s", err->message);
    } else if (!out->stream) {
      nc_api_error_set(err, 400, "invalid_request_error", "stream_options", "invalid_value",
                       "stream_options is only allowed when stream is true");
      st = nc_errorf(NC_E_INVALID, "%s", err->message);
    } else {
      json_t *iu = json_object_get(so, "include_usage");
      if (iu && !json_is_null(iu) && !json_is_boolean(iu)) {
        nc_api_error_set(err, 400, "invalid_request_error", "stream_options.include_usage", "invalid_type",
                         "stream_options.include_usage must be a boolean, got %s", nc_jtype(iu));
        st = nc_errorf(NC_E_INVALID, "%s", err->message);
      } else {
        out->include_usage = json_is_true(iu);
      }
    }
  }
  if (!st) st = nc_parse_stop(json_object_get(root, "stop"), out, err);
  if (!st) {
    json_t *c = json_pack("{s:O}", "messages", conv);
    json_t *end = json_pack("{s:s,s:s}", "role", "assistant", "content", "");
    json_array_append_new(conv, end);  // render_for_completion drops it and opens the reply
    out->conv = c ? json_dumps(c, JSON_COMPACT) : NULL;
    out->conv_len = out->conv ? strlen(out->conv) : 0;
    json_decref(c);
    if (!out->conv) {
      nc_api_error_set(err, 500, "server_error", "", "", "out of memory");
      st = nc_errorf(NC_E_NOMEM, "out of memory formatting the conversation");
    }
  }
  json_decref(conv);
  json_decref(root);
  return st;
}

void nc_api_request_free(nc_api_request *r) {
  free(r->model);
  free(r->conv);
  for (int i = 0; i < NC_GEN_MAX_STOP; i++) free(r->stops[i]);
  memset(r, 0, sizeof *r);
}

const char *nc_api_finish_reason(nc_finish f) {
  switch (f) {
    case NC_FINISH_STOP: return "stop";
    case NC_FINISH_LENGTH: return "length";
    case NC_FINISH_NONE: return NULL;
    default: return "stop";
  }
}

static json_t *nc_usage(int64_t p, int64_t c) {
  return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)p, "completion_tokens", (json_int_t)c,
                   "total_tokens", (json_int_t)(p + c));
}

static char *nc_dump(json_t *o) {
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

char *nc_api_completion_json(const char *id, int64_t created, const char *model, const nc_api_choice *choices,
                             int n, int64_t prompt_tokens, int64_t completion_tokens) {
  json_t *arr = json_array();
  for (int i = 0; i < n; i++) {
    const char *fr = nc_api_finish_reason(choices[i].finish);
    json_array_append_new(arr, json_pack("{s:i,s:{s:s,s:o},s:o,s:n}", "index", i, "message", "role", "assistant",
                                         "content", nc_jtext(choices[i].text, choices[i].len), "finish_reason",
                                         nc_jstr_or_null(fr), "logprobs"));
  }
  return nc_dump(json_pack("{s:s,s:s,s:I,s:s,s:o,s:o,s:n}", "id", id, "object", "chat.completion", "created",
                           (json_int_t)created, "model", model, "choices", arr, "usage",
                           nc_usage(prompt_tokens, completion_tokens), "system_fingerprint"));
}

char *nc_api_chunk_json(const char *id, int64_t created, const char *model, int index, bool role,
                        const char *content, size_t len, bool has_content, const char *finish, bool with_usage) {
  json_t *delta = json_object();
  if (role) json_object_set_new(delta, "role", json_string("assistant"));
  if (has_content) json_object_set_new(delta, "content", nc_jtext(content ? content : "", len));
  json_t *choice =
      json_pack("{s:i,s:o,s:o,s:n}", "index", index, "delta", delta, "finish_reason", nc_jstr_or_null(finish),
                "logprobs");
  json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", id, "object", "chat.completion.chunk", "created",
                        (json_int_t)created, "model", model, "choices", choice);
  if (o && with_usage) json_object_set_new(o, "usage", json_null());
  return nc_dump(o);
}

char *nc_api_usage_chunk_json(const char *id, int64_t created, const char *model, int64_t prompt_tokens,
                              int64_t completion_tokens) {
  return nc_dump(json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", id, "object", "chat.completion.chunk", "created",
                           (json_int_t)created, "model", model, "choices", "usage",
                           nc_usage(prompt_tokens, completion_tokens)));
}

char *nc_api_model_json(const char *model, int64_t created) {
  return nc_dump(json_pack("{s:s,s:s,s:I,s:s}", "id", model, "object", "model", "created", (json_int_t)created,
                           "owned_by", "nanochat"));
}

char *nc_api_models_json(const char *model, int64_t created) {
  return nc_dump(json_pack("{s:s,s:[{s:s,s:s,s:I,s:s}]}", "object", "list", "data", "id", model, "object", "model",
                           "created", (json_int_t)created, "owned_by", "nanochat"));
}
