// Tokenizer parity with tiktoken: our encoder on the js-tiktoken rank files
// (gpt2, cl100k_base, o200k_base) must produce exactly the ids js-tiktoken
// produces on the multilingual corpus in tests/data/tok/ (the oracle runs
// tests/js/tok_oracle.mjs). Also: decode round trip, threaded == serial.
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/tokenizer.h"
#include "tests/support/tok_util.h"

#define MAX_FILES 64

static int list_corpus(char files[MAX_FILES][1024]) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/tests/data/tok", nc_tok_test_source_dir());
  DIR *d = opendir(dir);
  cr_assert(d, "cannot open %s", dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < MAX_FILES) {
    size_t l = strlen(e->d_name);
    if (l > 4 && !strcmp(e->d_name + l - 4, ".txt")) snprintf(files[n++], 1024, "%s/%s", dir, e->d_name);
  }
  closedir(d);
  cr_assert(n >= 8, "corpus too small (%d files)", n);
  return n;
}

static void expect_ids_equal(const nc_ids *got, const nc_ids *want, const char *what) {
  size_t n = got->len < want->len ? got->len : want->len;
  for (size_t i = 0; i < n; i++)
    if (got->data[i] != want->data[i])
      cr_assert_fail("%s: token %zu differs: got %d, tiktoken %d (lengths %zu vs %zu)", what, i, got->data[i],
                     want->data[i], got->len, want->len);
  cr_assert_eq(got->len, want->len, "%s: %zu tokens, tiktoken %zu", what, got->len, want->len);
}

Test(tok_parity, matches_js_tiktoken_on_corpus) {
  char why[512];
  const char *ranks = nc_tok_test_ranks_dir(why, sizeof why);
  if (!ranks) NC_TOK_TEST_SKIP_OR_FAIL("tiktoken oracle unavailable: %s", why);
  static char files[MAX_FILES][1024];
  int nf = list_corpus(files);
  char outdir[4096], cmd[65536];
  snprintf(outdir, sizeof outdir, "%s/tok_oracle", nc_tok_test_build_dir());
  int w = snprintf(cmd, sizeof cmd, "node '%s/tests/js/tok_oracle.mjs' '%s'", nc_tok_test_source_dir(), outdir);
  for (int i = 0; i < nf; i++) w += snprintf(cmd + w, sizeof cmd - (size_t)w, " '%s'", files[i]);
  cr_assert(system(cmd) == 0, "oracle failed: %s", cmd);

  const char *encs[] = {"gpt2", "cl100k_base", "o200k_base"};
  for (int e = 0; e < 3; e++) {
    nc_tok *t = nc_tok_test_load(ranks, encs[e]);
    for (int i = 0; i < nf; i++) {
      size_t n;
      char *text = nc_tok_test_slurp(files[i], &n);
      nc_ids got = {0}, want = {0};
      nc_status st = nc_tok_encode(t, text, n, NULL, &got);
      cr_assert(st == NC_OK, "%s", nc_status_msg(st));
      const char *base = strrchr(files[i], '/') + 1;
      char p[4700], what[700];
      snprintf(p, sizeof p, "%s/%s.%s.ids", outdir, base, encs[e]);
      cr_assert(nc_tok_test_read_ids(p, &want), "cannot read %s", p);
      snprintf(what, sizeof what, "%s with %s", base, encs[e]);
      expect_ids_equal(&got, &want, what);
      nc_buf back;
      nc_buf_init(&back);
      cr_assert(nc_tok_decode(t, got.data, got.len, &back) == NC_OK);
      cr_assert(back.len == n && memcmp(back.data, text, n) == 0, "%s: decode(encode(x)) != x", what);
      nc_buf_free(&back);
      nc_ids_free(&got);
      nc_ids_free(&want);
      free(text);
    }
    nc_tok_free(t);
  }
}

// Large inputs are split at safe boundaries and encoded by several threads;
// the result must equal the serial encoding token for token.
Test(tok_parity, threaded_equals_serial) {
  char why[512];
  const char *ranks = nc_tok_test_ranks_dir(why, sizeof why);
  if (!ranks) NC_TOK_TEST_SKIP_OR_FAIL("ranks unavailable: %s", why);
  static char files[MAX_FILES][1024];
  int nf = list_corpus(files);
  nc_buf big;
  nc_buf_init(&big);
  for (int rep = 0; big.len < 1500 * 1000; rep++)
    for (int i = 0; i < nf; i++) {
      size_t n;
      char *text = nc_tok_test_slurp(files[(i + rep) % nf], &n);
      nc_buf_put(&big, text, n);
      free(text);
    }
  const char *encs[] = {"gpt2", "cl100k_base"};
  for (int e = 0; e < 2; e++) {
    nc_tok *t = nc_tok_test_load(ranks, encs[e]);
    nc_ids a = {0}, b = {0};
    nc_tok_encode_opts o1 = {NC_TOK_SPECIAL_ORDINARY, 1}, o4 = {NC_TOK_SPECIAL_ORDINARY, 4};
    cr_assert(nc_tok_encode(t, big.data, big.len, &o1, &a) == NC_OK);
    cr_assert(nc_tok_encode(t, big.data, big.len, &o4, &b) == NC_OK);
    expect_ids_equal(&b, &a, encs[e]);
    nc_ids_free(&a);
    nc_ids_free(&b);
    nc_tok_free(t);
  }
  nc_buf_free(&big);
}
