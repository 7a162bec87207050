// Tokenizer files and edge cases: malformed rank files and sidecars give
// errors naming file:line, save/load round trip, special-token modes, the
// token-bytes table, invalid UTF-8 round trip, the streaming decoder.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat/tokenizer.h"
#include "tests/support/tok_util.h"

static void expect_parse_error(const char *text, const char *needle) {
  nc_tok_ranks r;
  nc_status st = nc_tok_ranks_parse("t.tiktoken", text, strlen(text), &r);
  cr_assert(st != NC_OK, "no error for '%s'", text);
  cr_assert(strstr(nc_status_msg(st), needle), "error '%s' lacks '%s'", nc_status_msg(st), needle);
  nc_status_free(st);
}

Test(tok_files, malformed_rank_files) {
  expect_parse_error("YQ== 0\n!!!! 1\n", "t.tiktoken:2: bad base64");
  expect_parse_error("YQ== 0\nYQ 1\n", "t.tiktoken:2: bad base64");
  expect_parse_error("YQ== 0\nYg== 1\nYQ== 2\n", "t.tiktoken:3: duplicate token 'YQ==' (first on line 1)");
  expect_parse_error("YQ== 0\nYg== 0\n", "t.tiktoken:2: duplicate rank 0");
  expect_parse_error("YQ== 0\nYg== 2\nYw== 3\n", "rank 1 is missing");
  expect_parse_error("YQ== 0\nYg==\n", "t.tiktoken:2: expected 'BASE64 RANK'");
  expect_parse_error("YQ== 0\nYg== x1\n", "t.tiktoken:2: bad rank");
  expect_parse_error("YQ== 0\nYg== 99\n", "t.tiktoken:2: rank 99 out of range");
  expect_parse_error("\n\n", "no tokens");
  // Good: blank lines skipped, CRLF tolerated.
  nc_tok_ranks r;
  const char *ok = "YQ== 1\r\n\nYg== 0\n";
  cr_assert(nc_tok_ranks_parse("ok", ok, strlen(ok), &r) == NC_OK);
  cr_assert_eq(r.n, 2);
  cr_assert(r.len[0] == 1 && r.tok[0][0] == 'b' && r.tok[1][0] == 'a');
  nc_tok_ranks_free(&r);
}

static char *tmp(const char *name) {
  static char p[4][1024];
  static int k;
  char *r = p[k++ % 4];
  snprintf(r, 1024, "%s/tokf_%ld_%s", nc_tok_test_build_dir(), (long)getpid(), name);
  return r;
}

static void put(const char *path, const char *s) {
  FILE *f = fopen(path, "wb");
  cr_assert(f, "cannot write %s", path);
  fputs(s, f);
  fclose(f);
}

static nc_status load_err(const char *path) {
  nc_tok *t = NULL;
  nc_status st = nc_tok_load(path, &t);
  nc_tok_free(t);
  return st;
}

Test(tok_files, load_errors) {
  nc_status st = load_err("/nonexistent/x.tiktoken");
  cr_assert(st && strstr(nc_status_msg(st), "cannot open"), "%s", nc_status_msg(st));
  nc_status_free(st);
  // Byte-level BPE needs all 256 single bytes.
  char *p = tmp("few.tiktoken");
  put(p, "YQ== 0\nYg== 1\n");
  st = load_err(p);
  cr_assert(st && strstr(nc_status_msg(st), "single-byte"), "%s", nc_status_msg(st));
  nc_status_free(st);
  unlink(p);
  // Sidecar errors name the sidecar.
  nc_tok *t = nc_tok_test_small(NULL, 0);
  p = tmp("s.tiktoken");
  cr_assert(nc_tok_save(t, p) == NC_OK);
  char side[1100];
  snprintf(side, sizeof side, "%s.json", p);
  put(side, "{\"pattern\": \"gpt5\"}");
  st = load_err(p);
  cr_assert(st && strstr(nc_status_msg(st), "unknown split pattern 'gpt5'"), "%s", nc_status_msg(st));
  nc_status_free(st);
  put(side, "{\"pattern\": \"gpt2\", \"special_tokens\": {\"<|x|>\": 3}}");
  st = load_err(p);
  cr_assert(st && strstr(nc_status_msg(st), "collides"), "%s", nc_status_msg(st));
  nc_status_free(st);
  put(side, "{\"pattern\": \"gpt2\",");
  st = load_err(p);
  cr_assert(st && strstr(nc_status_msg(st), ".json:1:"), "%s", nc_status_msg(st));
  nc_status_free(st);
  // Without a sidecar: nanochat's conventions.
  unlink(side);
  nc_tok *r = NULL;
  cr_assert(nc_tok_load(p, &r) == NC_OK);
  cr_assert_eq(nc_tok_special_id(r, "<|bos|>"), 256);
  cr_assert_eq(nc_tok_get_pattern(r), NC_TOK_PAT_NANOCHAT);
  nc_tok_free(r);
  unlink(p);
  nc_tok_free(t);
}

Test(tok_files, save_load_round_trip) {
  const char *m[] = {"th", "the", " the", "\xff\xfe", "a"};  // "a" duplicates byte 'a'
  const uint8_t *toks[300];
  size_t lens[300];
  static uint8_t bytes[256];
  for (int b = 0; b < 256; b++) bytes[b] = (uint8_t)b, toks[b] = &bytes[b], lens[b] = 1;
  for (int i = 0; i < 5; i++) toks[256 + i] = (const uint8_t *)m[i], lens[256 + i] = strlen(m[i]);
  nc_tok *t = NULL;
  nc_status st = nc_tok_new(toks, lens, 261, NC_TOK_PAT_GPT2, NULL, NULL, 0, &t);
  cr_assert(st && strstr(nc_status_msg(st), "duplicate token"), "%s", nc_status_msg(st));
  nc_status_free(st);
  const char *names[] = {"<|endoftext|>", "<|fim|>"};
  int32_t ids[] = {300, 260};
  cr_assert(nc_tok_new(toks, lens, 260, NC_TOK_PAT_GPT2, names, ids, 2, &t) == NC_OK);
  cr_assert_eq(nc_tok_vocab_size(t), 301);
  char *p = tmp("rt.tiktoken");
  cr_assert(nc_tok_save(t, p) == NC_OK);
  nc_tok *r = NULL;
  st = nc_tok_load(p, &r);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  cr_assert_eq(nc_tok_n_ranks(r), 260);
  cr_assert_eq(nc_tok_get_pattern(r), NC_TOK_PAT_GPT2);
  cr_assert_eq(nc_tok_special_id(r, "<|endoftext|>"), 300);
  cr_assert_eq(nc_tok_special_id(r, "<|fim|>"), 260);
  cr_assert_eq(nc_tok_bos_id(r), 300);
  for (int32_t i = 0; i < 260; i++) {
    size_t a, b;
    const uint8_t *x = nc_tok_token(t, i, &a), *y = nc_tok_token(r, i, &b);
    cr_assert(a == b && !memcmp(x, y, a));
  }
  // token bytes: lengths for ranks, 0 for specials and unused ids
  int32_t tb[301];
  nc_tok_token_bytes(r, tb);
  cr_assert(tb[0] == 1 && tb[256] == 2 && tb[257] == 3 && tb[258] == 4 && tb[259] == 2);
  cr_assert(tb[260] == 0 && tb[280] == 0 && tb[300] == 0);
  // decoding an unused id is an error
  nc_buf b;
  nc_buf_init(&b);
  int32_t bad[] = {280};
  st = nc_tok_decode(r, bad, 1, &b);
  cr_assert(st && strstr(nc_status_msg(st), "unknown id 280"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_buf_free(&b);
  char side[1100];
  snprintf(side, sizeof side, "%s.json", p);
  unlink(p), unlink(side);
  nc_tok_free(t), nc_tok_free(r);
}

Test(tok_files, special_modes) {
  const char *m[] = {"hi"};
  nc_tok *t = nc_tok_test_small(m, 1);
  const char *s = "hi<|bos|>hi";
  nc_ids ids = {0};
  nc_tok_encode_opts ord = {NC_TOK_SPECIAL_ORDINARY, 1}, allow = {NC_TOK_SPECIAL_ALLOW, 1},
                     dis = {NC_TOK_SPECIAL_DISALLOW, 1};
  cr_assert(nc_tok_encode(t, s, strlen(s), &ord, &ids) == NC_OK);
  cr_assert_eq(ids.len, 2 + 7);
  ids.len = 0;
  cr_assert(nc_tok_encode(t, s, strlen(s), &allow, &ids) == NC_OK);
  cr_assert_eq(ids.len, 3);
  cr_assert(ids.data[0] == 256 && ids.data[1] == 257 && ids.data[2] == 256);
  ids.len = 0;
  nc_status st = nc_tok_encode(t, s, strlen(s), &dis, &ids);
  cr_assert(st && strstr(nc_status_msg(st), "<|bos|>"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_ids_free(&ids);
  nc_tok_free(t);
}

// Invalid UTF-8: every invalid byte is its own single-byte token, and
// decode(encode(x)) == x exactly.
static void check_invalid_utf8(nc_tok *t) {
  const char *cases[] = {"\xff", "ab\xff" "cd", "\xc3", "caf\xc3", "\xe4\xb8", "x\xe4\xb8\xad\xe4", "\x80\x80 \xbf",
                         "\xed\xa0\x80 surrogate", "\xf8\x88\x80\x80\x80 5-byte", "\xc0\xaf overlong", "  \xfe\xff  ",
                         "hello\xa0world", "\xf0\x9f\x98 emoji-cut"};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    size_t n = strlen(cases[c]);
    nc_ids ids = {0};
    cr_assert(nc_tok_encode(t, cases[c], n, NULL, &ids) == NC_OK);
    nc_buf b;
    nc_buf_init(&b);
    cr_assert(nc_tok_decode(t, ids.data, ids.len, &b) == NC_OK);
    cr_assert(b.len == n && !memcmp(b.data, cases[c], n), "case %zu does not round-trip", c);
    nc_buf_free(&b);
    nc_ids_free(&ids);
  }
  nc_ids ids = {0};
  cr_assert(nc_tok_encode(t, "\xff", 1, NULL, &ids) == NC_OK);
  cr_assert_eq(ids.len, 1);
  cr_assert_eq(ids.data[0], nc_tok_rank_of(t, "\xff", 1));
  ids.len = 0;
  cr_assert(nc_tok_encode(t, "\xfe\xff", 2, NULL, &ids) == NC_OK);
  cr_assert_eq(ids.len, 2, "invalid bytes are never merged");
  nc_ids_free(&ids);
}

Test(tok_files, invalid_utf8_round_trip_small) {
  const char *m[] = {"\xfe\xff", "ab", "cd"};
  nc_tok *t = nc_tok_test_small(m, 3);
  check_invalid_utf8(t);
  nc_tok_free(t);
}

Test(tok_files, invalid_utf8_round_trip_tiktoken_ranks) {
  char why[512];
  const char *dir = nc_tok_test_ranks_dir(why, sizeof why);
  if (!dir) NC_TOK_TEST_SKIP_OR_FAIL("ranks unavailable: %s", why);
  const char *names[] = {"gpt2", "cl100k_base"};
  for (int i = 0; i < 2; i++) {
    nc_tok *t = nc_tok_test_load(dir, names[i]);
    check_invalid_utf8(t);
    nc_tok_free(t);
  }
}

Test(tok_files, stream_decoder_holds_partial_utf8) {
  nc_tok *t = nc_tok_test_small(NULL, 0);
  const char *s = "a\xe4\xb8\xad" "b\xf0\x9f\x98\x80";  // a 中 b 😀, byte tokens
  nc_ids ids = {0};
  cr_assert(nc_tok_encode(t, s, strlen(s), NULL, &ids) == NC_OK);
  cr_assert_eq(ids.len, 9);
  nc_tok_stream ds;
  nc_tok_stream_init(&ds);
  nc_buf out;
  nc_buf_init(&out);
  size_t want_len[] = {1, 1, 1, 4, 5, 5, 5, 5, 9};  // output length after each push
  for (size_t i = 0; i < ids.len; i++) {
    cr_assert(nc_tok_stream_push(t, &ds, ids.data[i], &out) == NC_OK);
    cr_assert_eq(out.len, want_len[i], "after token %zu: %zu bytes out", i, out.len);
  }
  cr_assert(!memcmp(out.data, s, 9));
  // An incomplete sequence at the end comes out on flush.
  cr_assert(nc_tok_stream_push(t, &ds, 0xe4, &out) == NC_OK);
  cr_assert_eq(out.len, 9);
  nc_tok_stream_flush(&ds, &out);
  cr_assert_eq(out.len, 10);
  nc_status st = nc_tok_stream_push(t, &ds, 99999, &out);
  cr_assert(st != NC_OK);
  nc_status_free(st);
  nc_buf_free(&out);
  nc_ids_free(&ids);
  nc_tok_free(t);
}
