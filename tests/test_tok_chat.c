// Chat rendering: exact ids and masks for hand-made conversations, as
// nanochat's render_conversation / render_for_completion produce them.
#include <criterion/criterion.h>
#include <string.h>

#include "chat/tokenizer.h"
#include "tests/support/tok_util.h"

// bytes 0..255, "hi" = 256, "ok" = 257, specials 258..266:
enum { HI = 256, OK_ = 257, BOS = 258, US, UE, AS, AE, PS, PE, OS, OE };

static nc_tok *tok(void) {
  const char *m[] = {"hi", "ok"};
  return nc_tok_test_small(m, 2);
}

static void expect(const nc_tok_rendered *r, const int32_t *ids, const uint8_t *mask, size_t n) {
  cr_assert_eq(r->len, n, "got %zu tokens, want %zu", r->len, n);
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(r->ids[i], ids[i], "token %zu: id %d, want %d", i, r->ids[i], ids[i]);
    cr_assert_eq(r->mask[i], mask[i], "token %zu: mask %d, want %d", i, r->mask[i], mask[i]);
  }
}

static nc_status render(nc_tok *t, const char *json, size_t max, nc_tok_rendered *r) {
  return nc_tok_render_conversation(t, json, strlen(json), max, r);
}

Test(tok_chat, system_merged_into_first_user) {
  nc_tok *t = tok();
  nc_tok_rendered r = {0};
  const char *j = "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"hi\"},"
                  "{\"role\":\"assistant\",\"content\":\"ok\"},{\"role\":\"user\",\"content\":\"x\"}]}";
  nc_status st = render(t, j, 0, &r);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  int32_t ids[] = {BOS, US, 'S', '\n', '\n', HI, UE, AS, OK_, AE, US, 'x', UE};
  uint8_t mask[] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0};
  expect(&r, ids, mask, sizeof ids / sizeof *ids);
  nc_tok_rendered_free(&r);
  nc_tok_free(t);
}

Test(tok_chat, assistant_parts) {
  nc_tok *t = tok();
  nc_tok_rendered r = {0};
  const char *j = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":["
                  "{\"type\":\"text\",\"text\":\"hi\"},{\"type\":\"python\",\"text\":\"1+1\"},"
                  "{\"type\":\"python_output\",\"text\":\"2\"},{\"type\":\"text\",\"text\":\"ok\"}]}]}";
  nc_status st = render(t, j, 0, &r);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  int32_t ids[] = {BOS, US, HI, UE, AS, HI, PS, '1', '+', '1', PE, OS, '2', OE, OK_, AE};
  uint8_t mask[] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1};
  expect(&r, ids, mask, sizeof ids / sizeof *ids);
  nc_tok_rendered_free(&r);
  nc_tok_free(t);
}

Test(tok_chat, truncation_and_special_text_is_ordinary) {
  nc_tok *t = tok();
  nc_tok_rendered r = {0};
  const char *j = "{\"messages\":[{\"role\":\"user\",\"content\":\"<|bos|>\"},{\"role\":\"assistant\",\"content\":\"ok\"}]}";
  cr_assert(render(t, j, 0, &r) == NC_OK);
  // "<|bos|>" in user text is plain bytes, never the special id.
  int32_t ids[] = {BOS, US, '<', '|', 'b', 'o', 's', '|', '>', UE, AS, OK_, AE};
  uint8_t mask[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
  expect(&r, ids, mask, 13);
  cr_assert(render(t, j, 5, &r) == NC_OK);
  expect(&r, ids, mask, 5);
  nc_tok_rendered_free(&r);
  nc_tok_free(t);
}

Test(tok_chat, render_for_completion) {
  nc_tok *t = tok();
  nc_ids ids = {0};
  const char *j = "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"hi\"},"
                  "{\"role\":\"assistant\",\"content\":\"ok\"}]}";
  nc_status st = nc_tok_render_for_completion(t, j, strlen(j), &ids);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  int32_t want[] = {BOS, US, 'S', '\n', '\n', HI, UE, AS};
  cr_assert_eq(ids.len, 8);
  cr_assert(!memcmp(ids.data, want, sizeof want));
  nc_ids_free(&ids);
  const char *bad = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
  st = nc_tok_render_for_completion(t, bad, strlen(bad), &ids);
  cr_assert(st && strstr(nc_status_msg(st), "last message must be from the assistant"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_ids_free(&ids);
  nc_tok_free(t);
}

static void expect_error(nc_tok *t, const char *json, const char *needle) {
  nc_tok_rendered r = {0};
  nc_status st = render(t, json, 0, &r);
  cr_assert(st != NC_OK, "no error for %s", json);
  cr_assert(strstr(nc_status_msg(st), needle), "error '%s' lacks '%s'", nc_status_msg(st), needle);
  nc_status_free(st);
  nc_tok_rendered_free(&r);
}

Test(tok_chat, errors) {
  nc_tok *t = tok();
  expect_error(t, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"}]}",
               "messages[1] is from user but should be from assistant");
  expect_error(t, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"a\"}]}",
               "messages[0] is from assistant but should be from user");
  expect_error(t, "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"assistant\",\"content\":\"a\"}]}",
               "system message must be followed by a user message");
  expect_error(t, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":"
                  "[{\"type\":\"image\",\"text\":\"x\"}]}]}", "unknown part type 'image'");
  expect_error(t, "{\"messages\":[{\"role\":\"user\",\"content\":[\"a\"]}]}", "content must be a string");
  expect_error(t, "{\"messages\":[]}", "no messages");
  expect_error(t, "{\"msgs\":[]}", "\"messages\"");
  expect_error(t, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}", "conversation JSON:");
  nc_tok_free(t);
  // A tokenizer without nanochat's specials cannot render chats.
  const uint8_t *toks[256];
  size_t lens[256];
  static uint8_t bytes[256];
  for (int b = 0; b < 256; b++) bytes[b] = (uint8_t)b, toks[b] = &bytes[b], lens[b] = 1;
  nc_tok *plain = NULL;
  cr_assert(nc_tok_new(toks, lens, 256, NC_TOK_PAT_GPT2, NULL, NULL, 0, &plain) == NC_OK);
  expect_error(plain, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}", "no special token <|bos|>");
  nc_tok_free(plain);
}
