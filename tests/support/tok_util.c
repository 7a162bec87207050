#include "tests/support/tok_util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *nc_tok_test_source_dir(void) {
  const char *s = getenv("NC_SOURCE_DIR");
  return s && *s ? s : ".";
}

const char *nc_tok_test_build_dir(void) {
  const char *s = getenv("NC_BUILD_DIR");
  return s && *s ? s : "build";
}

static bool nc_exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0;
}

bool nc_tok_test_have_node(char *why, size_t whylen) {
  char p[4096];
  snprintf(p, sizeof p, "%s/tests/js/node_modules/js-tiktoken", nc_tok_test_source_dir());
  if (!nc_exists(p)) {
    snprintf(why, whylen, "%s missing (run 'npm ci' in tests/js)", p);
    return false;
  }
  if (system("node --version >/dev/null 2>&1") != 0) {
    snprintf(why, whylen, "node is not installed");
    return false;
  }
  return true;
}

const char *nc_tok_test_ranks_dir(char *why, size_t whylen) {
  static char dir[4096];
  snprintf(dir, sizeof dir, "%s/ranks", nc_tok_test_build_dir());
  static const char *names[] = {"gpt2", "cl100k_base", "o200k_base"};
  bool all = true;
  for (int i = 0; i < 3; i++) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s.tiktoken.json", dir, names[i]);
    all = all && nc_exists(p);
  }
  if (all) return dir;
  if (!nc_tok_test_have_node(why, whylen)) return NULL;
  char cmd[9000];
  snprintf(cmd, sizeof cmd, "node '%s/tools/export_ranks.mjs' '%s' 2>/dev/null", nc_tok_test_source_dir(), dir);
  if (system(cmd) != 0) {
    snprintf(why, whylen, "tools/export_ranks.mjs failed");
    return NULL;
  }
  return dir;
}

nc_tok *nc_tok_test_load(const char *ranks_dir, const char *name) {
  char p[4200];
  snprintf(p, sizeof p, "%s/%s.tiktoken", ranks_dir, name);
  nc_tok *t = NULL;
  nc_status st = nc_tok_load(p, &t);
  cr_assert(st == NC_OK, "load %s: %s", p, nc_status_msg(st));
  return t;
}

char *nc_tok_test_slurp(const char *path, size_t *len) {
  char *d = NULL;
  nc_status st = nc_file_read(path, (size_t)1 << 30, &d, len);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  return d;
}

bool nc_tok_test_read_ids(const char *path, nc_ids *out) {
  size_t n;
  char *d = NULL;
  nc_status st = nc_file_read(path, (size_t)1 << 30, &d, &n);
  if (st) {
    nc_status_free(st);
    return false;
  }
  char *p = d;
  for (;;) {
    while (*p == ' ' || *p == '\n') p++;
    if (!*p) break;
    char *e;
    long v = strtol(p, &e, 10);
    if (e == p) {
      free(d);
      return false;
    }
    nc_ids_push(out, (int32_t)v);
    p = e;
  }
  free(d);
  return true;
}

nc_tok *nc_tok_test_small(const char *const *merges, size_t n) {
  const uint8_t *toks[512];
  size_t lens[512];
  static uint8_t bytes[256];
  cr_assert(n <= 256);
  for (int b = 0; b < 256; b++) bytes[b] = (uint8_t)b, toks[b] = &bytes[b], lens[b] = 1;
  for (size_t i = 0; i < n; i++) toks[256 + i] = (const uint8_t *)merges[i], lens[256 + i] = strlen(merges[i]);
  nc_tok *t = NULL;
  nc_status st = nc_tok_new(toks, lens, 256 + n, NC_TOK_PAT_NANOCHAT, nc_tok_nanochat_specials, NULL,
                            NC_TOK_N_NANOCHAT_SPECIALS, &t);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  return t;
}
