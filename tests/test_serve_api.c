// serve/api.h: chat.completions request validation (OpenAI's fields, nanochat's
// limits) and the JSON shapes of responses, chunks, model lists and errors.
// Expected values are written out by hand from OpenAI's API reference.
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "serve/api.h"

static nc_api_limits lim(void) {
  nc_api_limits l;
  nc_api_limits_default(&l);
  return l;
}

// Parses body; expects success.
static void ok(const char *body, nc_api_request *r) {
  nc_api_limits l = lim();
  nc_api_error e = {0};
  nc_status st = nc_api_request_parse(body, strlen(body), &l, r, &e);
  cr_assert_null(st, "unexpected error: %s", nc_status_msg(st));
}

// Parses body; expects a 400 naming param and containing needle.
static void bad(const char *body, size_t len, const char *param, const char *needle) {
  nc_api_limits l = lim();
  nc_api_error e = {0};
  nc_api_request r;
  nc_status st = nc_api_request_parse(body, len, &l, &r, &e);
  cr_assert_not_null(st, "accepted: %.200s", body);
  cr_assert_eq(e.http, 400);
  cr_assert_str_eq(e.type, "invalid_request_error");
  cr_assert_str_eq(e.param, param, "param '%s' for %.100s (%s)", e.param, body, e.message);
  cr_assert_not_null(strstr(e.message, needle), "message '%s' lacks '%s'", e.message, needle);
  nc_status_free(st);
  nc_api_request_free(&r);
}
#define BAD(body, param, needle) bad(body, strlen(body), param, needle)

#define MSG "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

Test(serve_api, full_request) {
  nc_api_request r;
  ok("{\"model\":\"m\"," MSG ",\"temperature\":0.5,\"top_p\":0.9,\"top_k\":7,\"max_tokens\":11,"
     "\"max_completion_tokens\":12,\"n\":3,\"seed\":-5,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
     "\"stop\":[\"a\",\"bc\"],\"presence_penalty\":-1.5,\"frequency_penalty\":2,\"user\":\"ignored\"}",
     &r);
  cr_assert_str_eq(r.model, "m");
  cr_assert_float_eq(r.gen.temperature, 0.5, 1e-12);
  cr_assert_float_eq(r.gen.top_p, 0.9, 1e-12);
  cr_assert_eq(r.gen.top_k, 7);
  cr_assert_eq(r.gen.max_tokens, 12);  // max_completion_tokens wins over the deprecated max_tokens
  cr_assert_eq(r.gen.n, 3);
  cr_assert(r.gen.seeded);
  cr_assert_eq(r.gen.seed, (uint64_t)-5);
  cr_assert(r.stream && r.include_usage);
  cr_assert_eq(r.gen.nstop, 2);
  cr_assert_str_eq(r.gen.stop[0], "a");
  cr_assert_str_eq(r.gen.stop[1], "bc");
  cr_assert_float_eq(r.gen.presence_penalty, -1.5, 1e-12);
  cr_assert_float_eq(r.gen.frequency_penalty, 2.0, 1e-12);
  cr_assert_str_eq(r.conv, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"\"}]}");
  nc_api_request_free(&r);
}

Test(serve_api, defaults_and_nulls) {
  nc_api_request r;
  ok("{" MSG ",\"temperature\":null,\"stop\":null,\"seed\":null,\"n\":null,\"stream_options\":null}", &r);
  cr_assert_null(r.model);
  cr_assert_float_eq(r.gen.temperature, 1.0, 0);
  cr_assert_float_eq(r.gen.top_p, 1.0, 0);
  cr_assert_eq(r.gen.top_k, 0);
  cr_assert_eq(r.gen.n, 1);
  cr_assert_eq(r.gen.max_tokens, 512);
  cr_assert_not(r.gen.seeded);
  cr_assert_not(r.stream);
  cr_assert_eq(r.gen.nstop, 0);
  nc_api_request_free(&r);
  ok("{" MSG ",\"stop\":\"END\",\"max_tokens\":4096,\"temperature\":0,\"top_k\":200,\"n\":2.0}", &r);
  cr_assert_eq(r.gen.nstop, 1);
  cr_assert_str_eq(r.gen.stop[0], "END");
  cr_assert_eq(r.gen.max_tokens, 4096);
  cr_assert_eq(r.gen.top_k, 200);
  cr_assert_eq(r.gen.n, 2);
  nc_api_request_free(&r);
}

Test(serve_api, messages_normalized) {
  nc_api_request r;
  ok("{\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":"
     "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}],\"name\":\"x\"},"
     "{\"role\":\"assistant\",\"content\":\"c\"},{\"role\":\"user\",\"content\":\"d\\u00e9\"}]}",
     &r);
  cr_assert_eq(r.nmessages, 4);
  cr_assert_str_eq(r.conv, "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":"
                           "\"ab\"},{\"role\":\"assistant\",\"content\":\"c\"},{\"role\":\"user\",\"content\":"
                           "\"d\xc3\xa9\"},{\"role\":\"assistant\",\"content\":\"\"}]}");
  nc_api_request_free(&r);
}

Test(serve_api, malformed_and_wrong_types) {
  BAD("{\"messages\":[", "", "could not parse the JSON");
  BAD("", "", "could not parse the JSON");
  bad("{\"a\":\"\xff\"}", 9, "", "could not parse the JSON");  // invalid UTF-8
  BAD("[1,2]", "", "must be a JSON object, got array");
  BAD("{}", "messages", "messages is required");
  BAD("{\"messages\":{}}", "messages", "messages must be an array, got object");
  BAD("{\"messages\":[]}", "messages", "must not be empty");
  BAD("{\"messages\":[\"hi\"]}", "messages[0]", "must be an object, got string");
  BAD("{\"messages\":[{\"content\":\"hi\"}]}", "messages[0].role", "must be a string, got null");
  BAD("{\"messages\":[{\"role\":\"tool\",\"content\":\"hi\"}]}", "messages[0].role", "unsupported role 'tool'");
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content", "got integer");
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}", "messages[0].content", "is empty");
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages[0].content",
      "only {\"type\":\"text\"");
  BAD("{\"model\":3," MSG "}", "model", "model must be a string, got integer");
  BAD("{" MSG ",\"temperature\":\"hot\"}", "temperature", "temperature must be a number, got string");
  BAD("{" MSG ",\"top_k\":1.5}", "top_k", "top_k must be an integer, got number");
  BAD("{" MSG ",\"max_tokens\":\"9\"}", "max_tokens", "must be an integer, got string");
  BAD("{" MSG ",\"n\":true}", "n", "must be an integer, got boolean");
  BAD("{" MSG ",\"seed\":1.5}", "seed", "must be an integer");
  BAD("{" MSG ",\"stream\":1}", "stream", "stream must be a boolean, got integer");
  BAD("{" MSG ",\"stop\":7}", "stop", "a string or an array of strings");
  BAD("{" MSG ",\"stop\":[\"a\",1]}", "stop", "a string or an array of strings");
  BAD("{" MSG ",\"stream_options\":[]}", "stream_options", "must be an object");
  BAD("{" MSG ",\"stream\":true,\"stream_options\":{\"include_usage\":\"yes\"}}", "stream_options.include_usage",
      "must be a boolean");
}

Test(serve_api, ranges) {
  BAD("{" MSG ",\"temperature\":2.01}", "temperature", "temperature must be in [0, 2]");
  BAD("{" MSG ",\"temperature\":-0.1}", "temperature", "temperature must be in [0, 2]");
  BAD("{" MSG ",\"top_k\":201}", "top_k", "top_k must be in [0, 200], got 201");
  BAD("{" MSG ",\"top_k\":-1}", "top_k", "top_k must be in [0, 200]");
  BAD("{" MSG ",\"max_tokens\":0}", "max_tokens", "max_tokens must be in [1, 4096], got 0");
  BAD("{" MSG ",\"max_tokens\":4097}", "max_tokens", "[1, 4096]");
  BAD("{" MSG ",\"max_completion_tokens\":5000}", "max_completion_tokens", "[1, 4096]");
  BAD("{" MSG ",\"top_p\":0}", "top_p", "top_p must be in (0, 1]");
  BAD("{" MSG ",\"top_p\":1.5}", "top_p", "top_p must be in (0, 1]");
  BAD("{" MSG ",\"n\":0}", "n", "n must be in [1, 16]");
  BAD("{" MSG ",\"n\":17}", "n", "n must be in [1, 16]");
  BAD("{" MSG ",\"presence_penalty\":2.5}", "presence_penalty", "[-2, 2]");
  BAD("{" MSG ",\"frequency_penalty\":-3}", "frequency_penalty", "[-2, 2]");
  BAD("{" MSG ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", "at most 4 sequences");
  BAD("{" MSG ",\"stop\":\"\"}", "stop", "must not be empty");
  BAD("{" MSG ",\"stream_options\":{\"include_usage\":true}}", "stream_options", "only allowed when stream is true");
}

// nanochat's chat_web limits: 500 messages, 8000 characters each, 32000 in all.
Test(serve_api, nanochat_limits) {
  nc_buf b;
  nc_buf_init(&b);
  nc_buf_puts(&b, "{\"messages\":[");
  for (int i = 0; i < 501; i++) nc_buf_printf(&b, "%s{\"role\":\"%s\",\"content\":\"x\"}", i ? "," : "", i % 2 ? "assistant" : "user");
  nc_buf_puts(&b, "]}");
  bad(b.data, b.len, "messages", "too many messages: 501 (at most 500)");
  // 500 is fine
  b.len = 0;
  nc_buf_puts(&b, "{\"messages\":[");
  for (int i = 0; i < 500; i++) nc_buf_printf(&b, "%s{\"role\":\"%s\",\"content\":\"x\"}", i ? "," : "", i % 2 ? "assistant" : "user");
  nc_buf_puts(&b, "]}");
  nc_api_request r;
  ok(b.data, &r);
  nc_api_request_free(&r);
  // 8000 two-byte characters pass (characters, not bytes), 8001 do not
  for (int k = 8000; k <= 8001; k++) {
    b.len = 0;
    nc_buf_puts(&b, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < k; i++) nc_buf_puts(&b, "\xc3\xa9");
    nc_buf_puts(&b, "\"}]}");
    if (k == 8000) {
      ok(b.data, &r);
      nc_api_request_free(&r);
    } else {
      bad(b.data, b.len, "messages[0].content", "too long: 8001 characters (at most 8000)");
    }
  }
  // 5 messages of 7000 characters: over 32000 in all
  b.len = 0;
  nc_buf_puts(&b, "{\"messages\":[");
  for (int m = 0; m < 5; m++) {
    nc_buf_printf(&b, "%s{\"role\":\"%s\",\"content\":\"", m ? "," : "", m % 2 ? "assistant" : "user");
    for (int i = 0; i < 7000; i++) nc_buf_puts(&b, "y");
    nc_buf_puts(&b, "\"}");
  }
  nc_buf_puts(&b, "]}");
  bad(b.data, b.len, "messages", "more than 32000 characters in all");
  nc_buf_free(&b);
}

static json_t *load(char *s) {
  cr_assert_not_null(s);
  json_error_t e;
  json_t *j = json_loads(s, 0, &e);
  cr_assert_not_null(j, "bad JSON %s: %s", s, e.text);
  free(s);
  return j;
}

Test(serve_api, error_shape) {
  nc_api_error e;
  nc_api_error_set(&e, 404, "invalid_request_error", "model", "model_not_found", "The model '%s' does not exist", "x");
  json_t *j = load(nc_api_error_json(&e));
  json_t *o = json_object_get(j, "error");
  cr_assert_eq(json_object_size(j), 1);
  cr_assert_str_eq(json_string_value(json_object_get(o, "message")), "The model 'x' does not exist");
  cr_assert_str_eq(json_string_value(json_object_get(o, "type")), "invalid_request_error");
  cr_assert_str_eq(json_string_value(json_object_get(o, "param")), "model");
  cr_assert_str_eq(json_string_value(json_object_get(o, "code")), "model_not_found");
  json_decref(j);
  nc_api_error_set(&e, 400, "invalid_request_error", "", "", "bad \xff byte");
  j = load(nc_api_error_json(&e));
  o = json_object_get(j, "error");
  cr_assert(json_is_null(json_object_get(o, "param")));
  cr_assert(json_is_null(json_object_get(o, "code")));
  cr_assert_str_eq(json_string_value(json_object_get(o, "message")), "bad \xef\xbf\xbd byte");
  json_decref(j);
}

Test(serve_api, completion_shape) {
  nc_api_choice ch[2] = {{"Hello", 5, NC_FINISH_STOP}, {"abc\xe2\x82", 5, NC_FINISH_LENGTH}};
  json_t *j = load(nc_api_completion_json("chatcmpl-1", 1700000000, "nanochat-d4", ch, 2, 10, 7));
  cr_assert_str_eq(json_string_value(json_object_get(j, "id")), "chatcmpl-1");
  cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "chat.completion");
  cr_assert_eq(json_integer_value(json_object_get(j, "created")), 1700000000);
  cr_assert_str_eq(json_string_value(json_object_get(j, "model")), "nanochat-d4");
  json_t *c = json_object_get(j, "choices");
  cr_assert_eq(json_array_size(c), 2);
  json_t *c0 = json_array_get(c, 0), *c1 = json_array_get(c, 1);
  cr_assert_eq(json_integer_value(json_object_get(c0, "index")), 0);
  cr_assert_str_eq(json_string_value(json_object_get(json_object_get(c0, "message"), "role")), "assistant");
  cr_assert_str_eq(json_string_value(json_object_get(json_object_get(c0, "message"), "content")), "Hello");
  cr_assert_str_eq(json_string_value(json_object_get(c0, "finish_reason")), "stop");
  cr_assert_eq(json_integer_value(json_object_get(c1, "index")), 1);
  cr_assert_str_eq(json_string_value(json_object_get(c1, "finish_reason")), "length");
  // a cut UTF-8 sequence becomes U+FFFD per byte instead of breaking the JSON
  cr_assert_str_eq(json_string_value(json_object_get(json_object_get(c1, "message"), "content")),
                   "abc\xef\xbf\xbd\xef\xbf\xbd");
  json_t *u = json_object_get(j, "usage");
  cr_assert_eq(json_integer_value(json_object_get(u, "prompt_tokens")), 10);
  cr_assert_eq(json_integer_value(json_object_get(u, "completion_tokens")), 7);
  cr_assert_eq(json_integer_value(json_object_get(u, "total_tokens")), 17);
  json_decref(j);
}

Test(serve_api, chunk_shapes) {
  json_t *j = load(nc_api_chunk_json("id1", 5, "m", 2, true, "", 0, true, NULL, true));
  cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "chat.completion.chunk");
  json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
  cr_assert_eq(json_array_size(json_object_get(j, "choices")), 1);
  cr_assert_eq(json_integer_value(json_object_get(ch, "index")), 2);
  json_t *d = json_object_get(ch, "delta");
  cr_assert_str_eq(json_string_value(json_object_get(d, "role")), "assistant");
  cr_assert_str_eq(json_string_value(json_object_get(d, "content")), "");
  cr_assert(json_is_null(json_object_get(ch, "finish_reason")));
  cr_assert(json_is_null(json_object_get(j, "usage")) && json_object_get(j, "usage"));
  json_decref(j);

  j = load(nc_api_chunk_json("id1", 5, "m", 0, false, "tok\"en", 6, true, NULL, false));
  ch = json_array_get(json_object_get(j, "choices"), 0);
  d = json_object_get(ch, "delta");
  cr_assert_null(json_object_get(d, "role"));
  cr_assert_str_eq(json_string_value(json_object_get(d, "content")), "tok\"en");
  cr_assert_null(json_object_get(j, "usage"));
  json_decref(j);

  j = load(nc_api_chunk_json("id1", 5, "m", 0, false, NULL, 0, false, "length", false));
  ch = json_array_get(json_object_get(j, "choices"), 0);
  cr_assert_eq(json_object_size(json_object_get(ch, "delta")), 0);
  cr_assert_str_eq(json_string_value(json_object_get(ch, "finish_reason")), "length");
  json_decref(j);

  j = load(nc_api_usage_chunk_json("id1", 5, "m", 3, 4));
  cr_assert_eq(json_array_size(json_object_get(j, "choices")), 0);
  cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")), 7);
  json_decref(j);
}

Test(serve_api, models_shape) {
  json_t *j = load(nc_api_models_json("nanochat-d4", 42));
  cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "list");
  json_t *m = json_array_get(json_object_get(j, "data"), 0);
  cr_assert_str_eq(json_string_value(json_object_get(m, "id")), "nanochat-d4");
  cr_assert_str_eq(json_string_value(json_object_get(m, "object")), "model");
  cr_assert_eq(json_integer_value(json_object_get(m, "created")), 42);
  cr_assert_str_eq(json_string_value(json_object_get(m, "owned_by")), "nanochat");
  json_decref(j);
  j = load(nc_api_model_json("nanochat-d4", 42));
  cr_assert_str_eq(json_string_value(json_object_get(j, "id")), "nanochat-d4");
  json_decref(j);
}

Test(serve_api, finish_reasons) {
  cr_assert_str_eq(nc_api_finish_reason(NC_FINISH_STOP), "stop");
  cr_assert_str_eq(nc_api_finish_reason(NC_FINISH_LENGTH), "length");
  cr_assert_null(nc_api_finish_reason(NC_FINISH_NONE));
}
