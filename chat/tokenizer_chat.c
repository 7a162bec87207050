// Chat rendering exactly as nanochat's Tokenizer.render_conversation and
// render_for_completion: token ids plus a mask of which tokens the model is
// trained to produce (assistant content and its end token).
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "chat/tokenizer_internal.h"

#define NC_CHAT_DEFAULT_MAX 2048

void nc_tok_rendered_free(nc_tok_rendered *r) {
  free(r->ids);
  free(r->mask);
  memset(r, 0, sizeof *r);
}

static nc_status nc_r_add(nc_tok_rendered *r, const int32_t *ids, size_t n, uint8_t m) {
  if (r->len + n > r->cap) {
    size_t cap = r->cap ? r->cap : 256;
    while (cap < r->len + n) cap *= 2;
    int32_t *i = realloc(r->ids, cap * sizeof *i);
    if (i) r->ids = i;
    uint8_t *k = realloc(r->mask, cap);
    if (k) r->mask = k;
    if (!i || !k) return nc_errorf(NC_E_NOMEM, "out of memory rendering a conversation");
    r->cap = cap;
  }
  memcpy(r->ids + r->len, ids, n * sizeof *ids);
  memset(r->mask + r->len, m, n);
  r->len += n;
  return NC_OK;
}

static nc_status nc_r_text(const nc_tok *t, nc_tok_rendered *r, const char *s, size_t n, uint8_t m) {
  nc_ids ids = {0};
  nc_tok_encode_opts o = {NC_TOK_SPECIAL_ORDINARY, 1};  // nanochat encodes with encode_ordinary
  nc_status st = nc_tok_encode(t, s, n, &o, &ids);
  if (!st) st = nc_r_add(r, ids.data, ids.len, m);
  nc_ids_free(&ids);
  return st;
}

typedef struct {
  int32_t bos, user_start, user_end, assistant_start, assistant_end, python_start, python_end, output_start,
      output_end;
} nc_chat_ids;

static nc_status nc_chat_specials(const nc_tok *t, nc_chat_ids *c) {
  int32_t *dst[] = {&c->bos,           &c->user_start,   &c->user_end,     &c->assistant_start, &c->assistant_end,
                    &c->python_start,  &c->python_end,   &c->output_start, &c->output_end};
  for (int i = 0; i < NC_TOK_N_NANOCHAT_SPECIALS; i++) {
    *dst[i] = nc_tok_special_id(t, nc_tok_nanochat_specials[i]);
    if (*dst[i] < 0)
      return nc_errorf(NC_E_INVALID, "tokenizer has no special token %s (chat rendering needs nanochat's specials)",
                       nc_tok_nanochat_specials[i]);
  }
  return NC_OK;
}

static const char *nc_role(json_t *msg) {
  json_t *r = json_object_get(msg, "role");
  return json_is_string(r) ? json_string_value(r) : NULL;
}

// Renders messages[first..last) (after the system merge) of a parsed conversation.
static nc_status nc_render(const nc_tok *t, json_t *root, size_t drop_last, size_t max_tokens, nc_tok_rendered *r) {
  nc_chat_ids c;
  NC_TRY(nc_chat_specials(t, &c));
  json_t *msgs = json_is_object(root) ? json_object_get(root, "messages") : NULL;
  if (!json_is_array(msgs)) return nc_errorf(NC_E_PARSE, "conversation: field \"messages\" (an array) is required");
  size_t n = json_array_size(msgs);
  for (size_t i = 0; i < n; i++) {
    json_t *m = json_array_get(msgs, i);
    if (!json_is_object(m) || !nc_role(m))
      return nc_errorf(NC_E_PARSE, "conversation: messages[%zu] needs a string \"role\"", i);
  }
  if (n < drop_last + 1) return nc_errorf(NC_E_INVALID, "conversation has no messages");
  n -= drop_last;
  size_t first = 0;
  const char *sys = NULL;
  size_t sys_len = 0;
  if (!strcmp(nc_role(json_array_get(msgs, 0)), "system")) {
    json_t *m0 = json_array_get(msgs, 0);
    json_t *sc = json_object_get(m0, "content");
    if (!json_is_string(sc)) return nc_errorf(NC_E_PARSE, "conversation: messages[0] (system): content must be a string");
    if (n < 2 || strcmp(nc_role(json_array_get(msgs, 1)), "user") != 0)
      return nc_errorf(NC_E_INVALID, "conversation: the system message must be followed by a user message");
    sys = json_string_value(sc);
    sys_len = json_string_length(sc);
    first = 1;
  }
  if (n - first < 1) return nc_errorf(NC_E_INVALID, "conversation has less than 1 message");
  r->len = 0;
  NC_TRY(nc_r_add(r, &c.bos, 1, 0));
  for (size_t i = first; i < n; i++) {
    json_t *m = json_array_get(msgs, i);
    const char *role = nc_role(m);
    size_t k = i - first;
    const char *want = k % 2 == 0 ? "user" : "assistant";
    if (strcmp(role, want) != 0)
      return nc_errorf(NC_E_INVALID, "conversation: messages[%zu] is from %s but should be from %s (user and "
                       "assistant must alternate, starting with user)", i, role, want);
    json_t *content = json_object_get(m, "content");
    if (k % 2 == 0) {
      if (!json_is_string(content))
        return nc_errorf(NC_E_PARSE, "conversation: messages[%zu] (user): content must be a string", i);
      NC_TRY(nc_r_add(r, &c.user_start, 1, 0));
      if (sys && i == first) {
        // nanochat: system content + "\n\n" + user content, encoded as one text.
        size_t ul = json_string_length(content);
        char *cat = malloc(sys_len + 2 + ul + 1);
        if (!cat) return nc_errorf(NC_E_NOMEM, "out of memory");
        memcpy(cat, sys, sys_len);
        memcpy(cat + sys_len, "\n\n", 2);
        memcpy(cat + sys_len + 2, json_string_value(content), ul);
        nc_status st = nc_r_text(t, r, cat, sys_len + 2 + ul, 0);
        free(cat);
        NC_TRY(st);
      } else {
        NC_TRY(nc_r_text(t, r, json_string_value(content), json_string_length(content), 0));
      }
      NC_TRY(nc_r_add(r, &c.user_end, 1, 0));
      continue;
    }
    NC_TRY(nc_r_add(r, &c.assistant_start, 1, 0));
    if (json_is_string(content)) {
      NC_TRY(nc_r_text(t, r, json_string_value(content), json_string_length(content), 1));
    } else if (json_is_array(content)) {
      for (size_t p = 0; p < json_array_size(content); p++) {
        json_t *part = json_array_get(content, p);
        json_t *ty = json_object_get(part, "type"), *tx = json_object_get(part, "text");
        if (!json_is_string(ty) || !json_is_string(tx))
          return nc_errorf(NC_E_PARSE, "conversation: messages[%zu].content[%zu] needs string \"type\" and \"text\"",
                           i, p);
        const char *type = json_string_value(ty), *s = json_string_value(tx);
        size_t sl = json_string_length(tx);
        if (!strcmp(type, "text")) {
          NC_TRY(nc_r_text(t, r, s, sl, 1));
        } else if (!strcmp(type, "python")) {
          NC_TRY(nc_r_add(r, &c.python_start, 1, 1));
          NC_TRY(nc_r_text(t, r, s, sl, 1));
          NC_TRY(nc_r_add(r, &c.python_end, 1, 1));
        } else if (!strcmp(type, "python_output")) {
          // Not supervised: at test time these tokens come from Python.
          NC_TRY(nc_r_add(r, &c.output_start, 1, 0));
          NC_TRY(nc_r_text(t, r, s, sl, 0));
          NC_TRY(nc_r_add(r, &c.output_end, 1, 0));
        } else {
          return nc_errorf(NC_E_PARSE, "conversation: messages[%zu].content[%zu]: unknown part type '%s' (text, "
                           "python, python_output)", i, p, type);
        }
      }
    } else {
      return nc_errorf(NC_E_PARSE, "conversation: messages[%zu] (assistant): content must be a string or a list of "
                       "parts", i);
    }
    NC_TRY(nc_r_add(r, &c.assistant_end, 1, 1));
  }
  if (r->len > max_tokens) r->len = max_tokens;
  return NC_OK;
}

static nc_status nc_parse_conv(const char *json, size_t len, json_t **out) {
  json_error_t err;
  *out = json_loadb(json, len, 0, &err);
  if (!*out) return nc_errorf(NC_E_PARSE, "conversation JSON:%d:%d: %s", err.line, err.column, err.text);
  return NC_OK;
}

nc_status nc_tok_render_conversation(const nc_tok *t, const char *json, size_t len, size_t max_tokens,
                                     nc_tok_rendered *out) {
  json_t *root;
  NC_TRY(nc_parse_conv(json, len, &root));
  nc_status st = nc_render(t, root, 0, max_tokens ? max_tokens : NC_CHAT_DEFAULT_MAX, out);
  json_decref(root);
  return st;
}

nc_status nc_tok_render_for_completion(const nc_tok *t, const char *json, size_t len, nc_ids *out) {
  json_t *root;
  NC_TRY(nc_parse_conv(json, len, &root));
  json_t *msgs = json_is_object(root) ? json_object_get(root, "messages") : NULL;
  size_t n = json_is_array(msgs) ? json_array_size(msgs) : 0;
  nc_status st = NC_OK;
  if (!n || !nc_role(json_array_get(msgs, n - 1)) || strcmp(nc_role(json_array_get(msgs, n - 1)), "assistant"))
    st = nc_errorf(NC_E_INVALID, "render_for_completion: the last message must be from the assistant");
  nc_tok_rendered r = {0};
  if (!st) st = nc_render(t, root, 1, NC_CHAT_DEFAULT_MAX, &r);
  json_decref(root);
  if (!st) st = nc_ids_append(out, r.ids, r.len);
  if (!st) st = nc_ids_push(out, nc_tok_special_id(t, "<|assistant_start|>"));
  nc_tok_rendered_free(&r);
  return st;
}
