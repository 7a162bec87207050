// `nanochat data` end to end: help, exit codes, errors naming file:line,
// synth / gsm8k / stats / pack / corpus on small files. Runs the nanochat
// binary of its own build (so the ASan build checks the sanitized command).
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "chat/tokenizer.h"
#include "tests/support/tok_util.h"

static char g_dir[256];
static char out[1 << 16];

static void setup(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/nc_data_cli_XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
}
static void teardown(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  (void)!system(cmd);
}
TestSuite(data_cli, .init = setup, .fini = teardown);

static int nc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int nc(const char *fmt, ...) {
  char args[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  const char *b = getenv("NC_BUILD_DIR");
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s/cli/nanochat' %s 2>&1", g_dir, b ? b : "build", args);
  FILE *p = popen(cmd, "r");
  cr_assert_not_null(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  int st = pclose(p);
  cr_assert(WIFEXITED(st), "nanochat %s did not exit normally: %s", args, out);
  return WEXITSTATUS(st);
}

static void put(const char *name, const char *s) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", g_dir, name);
  FILE *f = fopen(p, "wb");
  cr_assert(f);
  fputs(s, f);
  fclose(f);
}

static int count_lines(const char *name) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", g_dir, name);
  FILE *f = fopen(p, "rb");
  cr_assert(f, "%s missing", p);
  int n = 0, c;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

#define EXPECT(rc_want, words, ...)                                                               \
  do {                                                                                            \
    int rc_ = nc(__VA_ARGS__);                                                                    \
    cr_expect_eq(rc_, rc_want, "exit %d (want %d): %s", rc_, rc_want, out);                      \
    cr_expect(strstr(out, words), "output lacks '%s':\n%s", words, out);                          \
  } while (0)

Test(data_cli, help_and_usage_errors) {
  EXPECT(0, "synth", "data --help");
  EXPECT(2, "usage: nanochat data", "data");
  EXPECT(2, "unknown subcommand 'bogus'", "data bogus");
  EXPECT(0, "spellingbee", "data synth --help");
  EXPECT(0, "validation shard", "data corpus --help");
  EXPECT(0, "--tokenizer", "data pack --help");
  EXPECT(0, "--sft", "data stats --help");
  EXPECT(2, "-n N is required", "data synth arithmetic -o x.jsonl");
  EXPECT(2, "-n needs a count", "data synth arithmetic -n -3 -o x.jsonl");
  EXPECT(1, "unknown task 'spelling'", "data synth spelling -n 2 -o x.jsonl");
  EXPECT(2, "unknown option '--frobnicate'", "data stats a.txt --frobnicate");
  EXPECT(2, "no input FILE", "data stats");
  EXPECT(2, "--tokenizer TOK is required", "data pack a.txt");
  EXPECT(2, "-T must be >= 1", "data pack a.txt --tokenizer t -T 0");
  EXPECT(2, "-o DIR is required", "data corpus");
  EXPECT(2, "--val-frac needs a fraction", "data corpus -o c --val-frac 2");
}

Test(data_cli, synth_gsm8k_stats_pack) {
  EXPECT(0, "5 arithmetic conversations", "data synth arithmetic -n 5 -o a.jsonl --seed 3");
  cr_assert_eq(count_lines("a.jsonl"), 5);
  put("w.txt", "apple\nbanana\n");
  EXPECT(0, "4 spellingbee conversations", "data synth spellingbee -n 4 --words w.txt -o s.jsonl");
  EXPECT(1, "nope.txt", "data synth simplespelling -n 4 --words nope.txt -o s2.jsonl");
  put("g.jsonl", "{\"question\":\"1+1?\",\"answer\":\"<<1+1=2>>2\\n#### 2\"}\n{\"question\":\"x\"}\n");
  EXPECT(1, "g.jsonl:2: needs string fields", "data gsm8k g.jsonl -o gc.jsonl");
  EXPECT(0, "1 conversations (1 lines skipped)", "data gsm8k g.jsonl -o gc.jsonl --skip-bad");
  // Tokenizer files for stats/pack.
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  char tp[512];
  snprintf(tp, sizeof tp, "%s/tok.tiktoken", g_dir);
  cr_assert(nc_tok_save(tok, tp) == NC_OK);
  nc_tok_free(tok);
  put("docs.txt", "first document here\n\nsecond one\nwith two lines\n\nthird\n");
  EXPECT(0, "documents  3", "data stats docs.txt --tokenizer tok.tiktoken");
  cr_expect(strstr(out, "bytes      52 "), "%s", out);  // 20 + 26 + 6 bytes
  cr_expect(strstr(out, "tokens     55 "), "%s", out);  // byte tokens + a BOS per document
  EXPECT(0, "packed 4 rows of 9 tokens", "data pack docs.txt --tokenizer tok.tiktoken -B 2 -T 8 --batches 2");
  cr_expect(strstr(out, "<|bos|>"), "%s", out);
  put("bad.jsonl", "{\"text\":\"ok\"}\n{\"text\": 3}\n");
  EXPECT(1, "bad.jsonl:2: field \"text\" is not a string", "data stats bad.jsonl");
  EXPECT(0, "skipped    1", "data stats bad.jsonl --skip-bad");
  EXPECT(0, "conversations  5", "data stats --sft a.jsonl --tokenizer tok.tiktoken");
  EXPECT(0, "trained targets", "data pack --sft a.jsonl s.jsonl --tokenizer tok.tiktoken -B 2 -T 64 --batches 3");
  put("badc.jsonl", "{\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}\n");
  EXPECT(1, "badc.jsonl:1: messages[0] has role \"bot\"", "data pack --sft badc.jsonl --tokenizer tok.tiktoken");
  EXPECT(1, "cannot open", "data pack docs.txt --tokenizer missing.tiktoken");
}

Test(data_cli, corpus_from_fixtures) {
  char fort[512], cmd[1024];
  snprintf(fort, sizeof fort, "%s/f", g_dir);
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", fort);
  cr_assert_eq(system(cmd), 0);
  put("f/wisdom", "A fortune that is long enough to keep.\n%\nAnother fortune, also long enough.\n%\n"
                  "A third fortune for the validation shard.\n%\nAnd a fourth one to be sure.\n");
  EXPECT(0, "4 documents", "data corpus -o out --fortunes f --dictd nodict --bible /nonexistent/bible --val-frac 0.25");
  struct stat sb;
  char p[512];
  snprintf(p, sizeof p, "%s/out/shard_00001.jsonl.gz", g_dir);
  cr_assert(stat(p, &sb) == 0, "the val shard after one training shard");
  EXPECT(1, "no source could be read", "data corpus -o out2 --fortunes nof --dictd nodict --bible /nonexistent/bible");
}
