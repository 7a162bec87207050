// `nanochat chat` end to end: -p one-shot and the REPL (multi-turn history,
// clear, quit) against the engine's own greedy replies computed in-process
// on the same checkpoint, and clear errors for bad flags and folders.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "engine/engine.h"
#include "tests/support/tok_util.h"

static char dir[256];
static char out[1 << 16];

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/nc_chat_XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
}
static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}
TestSuite(chat, .init = setup, .fini = teardown);

static const char *SPEC =
    "<model version=\"1\" name=\"tchat\"><dims depth=\"2\" aspect_ratio=\"16\" head_dim=\"16\" "
    "vocab_size=\"320\" sequence_len=\"96\"/><attention rope_base=\"10000\" window_pattern=\"L\"/>"
    "<output softcap=\"15\"/></model>";

static void make_ckpt(void) {
  nc_model_spec s;
  cr_assert_null(nc_spec_parse(SPEC, strlen(SPEC), "spec", &s));
  nc_session *p = nc_session_new();
  cr_assert_null(nc_model_init_session(&s, 3, p));
  unsigned x = 99;
  for (int k = 0; k < nc_session_count(p); k++) {  // no all-zero tensors: replies are not constant
    nc_tensor *t = (nc_tensor *)nc_session_get(p, nc_session_name_at(p, k));
    float *d = t->data;
    if (d[0] != 0) continue;
    for (int64_t i = 0; i < nc_tensor_numel(t); i++) {
      x = x * 1103515245u + 12345u;
      d[i] = (float)((x >> 16) % 2001) / 1000.0f - 1.0f;
    }
  }
  cr_assert_null(nc_model_ckpt_save(dir, 0, &s, p, NULL, NULL));
  nc_session_free(p);
  static const char *const merges[] = {"he", "ll", "hello", "wo", "rld"};
  nc_tok *t = nc_tok_test_small(merges, 5);
  char tp[512];
  snprintf(tp, sizeof tp, "%s/tokenizer.tiktoken", dir);
  cr_assert_null(nc_tok_save(t, tp));
  nc_tok_free(t);
}

// Runs "[printf INPUT |] nanochat chat ARGS"; stdout only unless err; returns the exit code.
static int chat(const char *input, const char *args, bool err) {
  const char *b = getenv("NC_BUILD_DIR");
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "%s%s%s'%s/cli/nanochat' chat %s %s", input ? "printf '" : "", input ? input : "",
           input ? "' | " : "", b ? b : "build", args, err ? "2>&1" : "2>/dev/null");
  FILE *p = popen(cmd, "r");
  cr_assert_not_null(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  int st = pclose(p);
  cr_assert(WIFEXITED(st), "chat %s did not exit normally: %s", args, out);
  return WEXITSTATUS(st);
}

// The engine's greedy reply to the history, appended to the history with <|assistant_end|>.
static void reply(nc_engine *e, nc_ids *hist, const char *user, nc_buf *text) {
  const nc_tok *t = nc_engine_tok(e);
  nc_ids_push(hist, nc_tok_special_id(t, "<|user_start|>"));
  nc_tok_encode(t, user, strlen(user), NULL, hist);
  nc_ids_push(hist, nc_tok_special_id(t, "<|user_end|>"));
  nc_ids_push(hist, nc_tok_special_id(t, "<|assistant_start|>"));
  nc_gen_opts o;
  nc_gen_opts_default(&o);
  o.temperature = 0;
  o.max_tokens = 12;
  nc_gen_result r;
  cr_assert_null(nc_engine_generate(e, hist->data, hist->len, &o, &r));
  nc_buf_put(text, r.text[0].data, r.text[0].len);
  nc_buf_puts(text, "\n");
  nc_ids_append(hist, r.tokens[0].data, r.tokens[0].len);
  nc_ids_push(hist, nc_tok_special_id(t, "<|assistant_end|>"));
  nc_gen_result_free(&r);
}

Test(chat, one_shot_and_repl_match_the_engine) {
  make_ckpt();
  nc_engine_opts eo;
  nc_engine_opts_default(&eo);
  eo.ckpt_dir = dir;
  eo.slots = 1;
  eo.device.threads = 1;
  nc_engine *e;
  cr_assert_null(nc_engine_open(&eo, &e));
  nc_ids hist = {0};
  nc_buf one, two;
  nc_buf_init(&one);
  nc_buf_init(&two);
  nc_ids_push(&hist, nc_tok_bos_id(nc_engine_tok(e)));
  reply(e, &hist, "hello", &one);  // turn 1
  nc_buf_put(&two, one.data, one.len);
  reply(e, &hist, "world", &two);  // turn 2, with the history
  nc_engine_close(e);
  char args[1024];
  snprintf(args, sizeof args, "--ckpt %s -p hello -t 0 --max-tokens 12 --threads 1", dir);
  cr_assert_eq(chat(NULL, args, false), 0);
  cr_assert_str_eq(out, one.data);
  // REPL: two turns, clear, the first turn again, quit (then nothing more)
  snprintf(args, sizeof args, "-c %s -t 0 -m 12 --threads 1 --seed 5", dir);
  cr_assert_eq(chat("hello\\nworld\\nclear\\n\\nhello\\nquit\\nhello\\n", args, false), 0);
  nc_buf want;
  nc_buf_init(&want);
  nc_buf_put(&want, two.data, two.len);
  nc_buf_put(&want, one.data, one.len);
  cr_assert_str_eq(out, want.data);
  // end of input ends the REPL too
  cr_assert_eq(chat("hello\\n", args, false), 0);
  cr_assert_str_eq(out, one.data);
  // sampling with a seed is reproducible
  snprintf(args, sizeof args, "--ckpt %s -p hello -t 1 -k 20 --seed 7 -m 12 --threads 1", dir);
  cr_assert_eq(chat(NULL, args, false), 0);
  static char first[sizeof out];
  memcpy(first, out, sizeof out);
  cr_assert_eq(chat(NULL, args, false), 0);
  cr_assert_str_eq(out, first);
  nc_buf_free(&want);
  nc_buf_free(&one);
  nc_buf_free(&two);
  nc_ids_free(&hist);
}

static void expect_fail(const char *args, int code, const char *words) {
  int rc = chat(NULL, args, true);
  cr_assert_eq(rc, code, "chat %s: exit %d, want %d: %s", args, rc, code, out);
  cr_assert(strstr(out, words), "chat %s: '%s' does not mention '%s'", args, out, words);
}

Test(chat, bad_flags_and_folders) {
  make_ckpt();
  char a[1024];
  expect_fail("", 2, "usage");
  expect_fail("-p hi", 2, "usage");
  snprintf(a, sizeof a, "--ckpt %s -t hot", dir);
  expect_fail(a, 2, "--temperature");
  snprintf(a, sizeof a, "--ckpt %s -t -1", dir);
  expect_fail(a, 2, "--temperature");
  snprintf(a, sizeof a, "--ckpt %s -k -3", dir);
  expect_fail(a, 2, "--top-k");
  snprintf(a, sizeof a, "--ckpt %s --max-tokens 0", dir);
  expect_fail(a, 2, "--max-tokens");
  snprintf(a, sizeof a, "--ckpt %s --threads 0", dir);
  expect_fail(a, 2, "--threads");
  snprintf(a, sizeof a, "--ckpt %s --seed x", dir);
  expect_fail(a, 2, "--seed");
  snprintf(a, sizeof a, "--ckpt %s --device gpu9", dir);
  expect_fail(a, 1, "gpu9");
  snprintf(a, sizeof a, "--ckpt %s extra", dir);
  expect_fail(a, 2, "extra");
  expect_fail("--ckpt /nonexistent/ckpt -p hi", 3, "/nonexistent/ckpt");
  snprintf(a, sizeof a, "--ckpt %s --tokenizer /nonexistent/t.tiktoken -p hi", dir);
  expect_fail(a, 3, "/nonexistent/t.tiktoken");
  cr_assert_eq(chat(NULL, "--help", false), 0);
  cr_assert(strstr(out, "usage: nanochat chat"));
}
