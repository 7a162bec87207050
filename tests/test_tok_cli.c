// The `nanochat tok` command end to end: train -> encode -> decode gives the
// exact bytes back; every subcommand has --help; errors exit 1..127 with a
// message on stderr, never a crash.
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/tok_util.h"

static char nc_bin[2048], dir[2048];

static void setup(void) {
  snprintf(nc_bin, sizeof nc_bin, "%s/cli/nanochat", nc_tok_test_build_dir());
  snprintf(dir, sizeof dir, "%s/tok_cli_%ld", nc_tok_test_build_dir(), (long)getpid());
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  cr_assert(system(cmd) == 0);
}

static void teardown(void) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(tok_cli, .init = setup, .fini = teardown);

// Runs a shell command; returns its exit status (or 128+signal). Whatever the
// command leaves on stderr (unless it redirects it itself) is kept in
// last_err, so a failed assertion shows why the command failed.
static char last_err[4096];

// The first n-1 bytes of a file as a string ("" when it cannot be read).
static void read_text(const char *path, char *buf, size_t n) {
  buf[0] = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return;
  size_t got = fread(buf, 1, n - 1, f);
  buf[got] = 0;
  fclose(f);
}

static int sh(const char *fmt, ...) {
  char cmd[16384], wrapped[20000], errpath[2200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  snprintf(errpath, sizeof errpath, "%s/sh_stderr.txt", dir);
  snprintf(wrapped, sizeof wrapped, "{ %s ; } 2> '%s'", cmd, errpath);
  int rc = system(wrapped);
  read_text(errpath, last_err, sizeof last_err);
  if (rc == -1) return -1;
  if (WIFSIGNALED(rc)) return 128 + WTERMSIG(rc);
  return WEXITSTATUS(rc);
}

// The cases below send the command's stderr to dir/err.txt; this reads it
// back for assertion messages.
static const char *case_err(void) {
  static char buf[4096];
  char path[2200];
  snprintf(path, sizeof path, "%s/err.txt", dir);
  read_text(path, buf, sizeof buf);
  return buf;
}

static void need_binary(void) {
  if (access(nc_bin, X_OK) != 0) NC_TOK_TEST_SKIP_OR_FAIL("%s is not built", nc_bin);
}

Test(tok_cli, train_encode_decode_round_trip) {
  need_binary();
  // Training input: the test corpus as one JSONL file (gzip) plus a text file.
  int rc = sh("cd '%s/tests/data/tok' && cat *.txt > '%s/corpus.txt' && "
              "for f in *.txt; do printf '{\"text\": \"%%s\"}\\n' \"$(head -n 1 $f | tr -d '\\n\\\\\"\\t\\r')\"; done"
              " | gzip > '%s/docs.jsonl.gz'", nc_tok_test_source_dir(), dir, dir);
  cr_assert_eq(rc, 0, "making the corpus: %s", last_err);
  rc = sh("'%s' tok train --input '%s/corpus.txt' '%s/docs.jsonl.gz' --vocab-size 700 -o '%s/t.tiktoken' -q",
          nc_bin, dir, dir, dir);
  cr_assert_eq(rc, 0, "train exited %d: %s", rc, last_err);
  // Bytes including invalid UTF-8 and NULs round-trip through encode | decode.
  rc = sh("cat '%s/corpus.txt' > '%s/in.bin' && printf '\\377\\376 \\303 x\\000y\\n' >> '%s/in.bin' && "
          "'%s' tok encode -t '%s/t.tiktoken' '%s/in.bin' > '%s/ids.txt' && "
          "'%s' tok decode -t '%s/t.tiktoken' '%s/ids.txt' > '%s/out.bin' && cmp -s '%s/in.bin' '%s/out.bin'",
          dir, dir, dir, nc_bin, dir, dir, dir, nc_bin, dir, dir, dir, dir, dir);
  cr_assert_eq(rc, 0, "encode | decode did not round-trip (%d): %s", rc, last_err);
  // One line of ids separated by single spaces.
  rc = sh("test $(wc -l < '%s/ids.txt') -eq 1 && ! grep -q '  ' '%s/ids.txt' && grep -qE '^[0-9]+( [0-9]+)*$' "
          "'%s/ids.txt'", dir, dir, dir);
  cr_assert_eq(rc, 0, "ids file format");
  // stdin works too, and specials are only special when allowed.
  rc = sh("printf '<|bos|>' | '%s' tok encode -t '%s/t.tiktoken' --allow-special | grep -qx 691", nc_bin, dir);
  cr_assert_eq(rc, 0, "allowed special: %s", last_err);
  rc = sh("printf '<|bos|>' | '%s' tok encode -t '%s/t.tiktoken' | grep -qx 691", nc_bin, dir);
  cr_assert_neq(rc, 0, "special from ordinary text");
}

Test(tok_cli, help_and_errors) {
  need_binary();
  const char *subs[] = {"", "train ", "encode ", "decode ", "eval "};
  for (int i = 0; i < 5; i++)
    cr_assert_eq(sh("'%s' tok %s--help > /dev/null", nc_bin, subs[i]), 0, "tok %s--help: %s", subs[i], last_err);
  struct {
    const char *args, *msg;
  } cases[] = {
      {"tok frob", "unknown subcommand"},
      {"tok train --vocab-size 300 -o /tmp/x", "--input and -o are required"},
      {"tok train --input /nonexistent.txt -o /tmp/x", "cannot open"},
      {"tok train --input /dev/null --vocab-size 100 -o /tmp/x", "too small"},
      {"tok train --input /dev/null --vocab-size 1000 -o /tmp/x", "empty corpus"},
      {"tok train --input /dev/null --vocab-size lots -o /tmp/x", "bad value"},
      {"tok encode /dev/null", "-t TOKENIZER is required"},
      {"tok encode -t /nonexistent.tiktoken", "no such tokenizer"},
      {"tok encode -t gpt2 --ranks-dir /nonexistent", "export_ranks.mjs"},
      {"tok eval --ranks-dir /nonexistent", "ranks not found"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int rc = sh("'%s' %s < /dev/null > /dev/null 2> '%s/err.txt'", nc_bin, cases[i].args, dir);
    cr_assert(rc >= 1 && rc < 128, "'%s' exited %d: %s", cases[i].args, rc, case_err());
    cr_assert_eq(sh("grep -qF -- '%s' '%s/err.txt'", cases[i].msg, dir), 0, "'%s': stderr lacks '%s': %s", cases[i].args,
                 cases[i].msg, case_err());
  }
  // Bad ids and a malformed rank file.
  cr_assert_eq(sh("printf 'YQ== 0\\n' > '%s/bad.tiktoken'", dir), 0);
  int rc = sh("echo 1 | '%s' tok decode -t '%s/bad.tiktoken' 2> '%s/err.txt'", nc_bin, dir, dir);
  cr_assert(rc >= 1 && rc < 128);
  cr_assert_eq(sh("grep -q 'single-byte' '%s/err.txt'", dir), 0);
}
