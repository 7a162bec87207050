// Chat evals: nanochat's multiple-choice rendering, letter scoring (always-A,
// oracle, ties), the HumanEval program assembly with the canonical solutions
// as an oracle through the runner, ChatCORE baselines, a tiny model on slices
// of MMLU / GSM8K / HumanEval / SpellingBee from ../shared/data (skipped when
// absent), and the CLI's bad input.
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "chat/model_io.h"
#include "eval/chat.h"
#include "eval/runner.h"
#include "tests/support/tok_util.h"

static const char *shared_eval(char *buf, size_t n, const char *rel) {
  const char *sh = getenv("NC_SHARED_DIR");
  snprintf(buf, n, "%s/data/eval/%s", sh && *sh ? sh : "../shared", rel);
  return access(buf, R_OK) == 0 ? buf : NULL;
}

Test(chat_eval, render_mc_exact) {
  const char *letters[] = {"A", "B", "C", "D"}, *choices[] = {"0", "1", "2", "3"};
  nc_buf b;
  nc_buf_init(&b);
  nc_chat_render_mc("Find c.", letters, choices, 4, &b);
  cr_assert_str_eq(b.data, "Multiple Choice question: Find c.\n- 0=A\n- 1=B\n- 2=C\n- 3=D\n\nRespond only with the letter of the correct answer.");
  nc_buf_free(&b);
}

Test(chat_eval, letter_scoring) {
  // vocabulary of 10; letters A..D are ids 3,4,5,6
  int32_t ids[4] = {3, 4, 5, 6};
  float lg[10] = {9, 9, 9, 1, 0, 0, 0, 9, 9, 9};  // other tokens larger: ignored (restricted)
  cr_assert_eq(nc_chat_pick_letter(lg, ids, 4), 0);
  // always-A model over golds: 1 of 4
  int golds[4] = {0, 1, 2, 3}, correct = 0;
  for (int i = 0; i < 4; i++) correct += nc_chat_pick_letter(lg, ids, 4) == golds[i];
  cr_assert_eq(correct, 1);
  // oracle
  correct = 0;
  for (int i = 0; i < 4; i++) {
    float o[10] = {0};
    o[ids[golds[i]]] = 5;
    correct += nc_chat_pick_letter(o, ids, 4) == golds[i];
  }
  cr_assert_eq(correct, 4);
  // ties: the first letter (torch.argmax)
  float t[10] = {0, 0, 0, 2, 3, 3, 3, 0, 0, 0};
  cr_assert_eq(nc_chat_pick_letter(t, ids, 4), 1);
  // ChatCORE centering
  cr_assert_float_eq(nc_chat_baseline("MMLU"), 0.25, 0);
  cr_assert_float_eq(nc_chat_baseline("ARC-Easy"), 0.25, 0);
  cr_assert_float_eq(nc_chat_baseline("GSM8K"), 0.0, 0);
  cr_assert_float_eq(nc_chat_baseline("HumanEval"), 0.0, 0);
}

Test(chat_eval, humaneval_program_assembly) {
  nc_buf b;
  nc_buf_init(&b);
  nc_chat_humaneval_program("# c\nimport math\nfrom typing import List\n\ndef f(x):\n    import os\n",
                            "Sure:\n```python\ndef f(x):\n    return 1\n```\nand ```python\nother\n```", "def check(c):\n    pass", "f", &b);
  cr_assert_str_eq(b.data, "import math\nfrom typing import List\n\ndef f(x):\n    return 1\n\ndef check(c):\n    pass\ncheck(f)");
  nc_buf_free(&b);
  nc_buf_init(&b);
  nc_chat_humaneval_program("def g():\n", "  \n  return 2\n\n", "T", "g", &b);
  cr_assert_str_eq(b.data, "\n\nreturn 2\n\nT\ncheck(g)");
  nc_buf_free(&b);
}

Test(chat_eval, humaneval_canonical_solutions_pass, .timeout = 120) {
  char p[4096];
  if (!shared_eval(p, sizeof p, "humaneval/HumanEval.jsonl.gz")) cr_skip_test("no HumanEval under NC_SHARED_DIR");
  gzFile gz = gzopen(p, "rb");
  char *line = malloc(1 << 20);
  for (int i = 0; i < 4 && gzgets(gz, line, 1 << 20); i++) {
    json_t *o = json_loads(line, 0, NULL);
    cr_assert_not_null(o);
    const char *prompt = json_string_value(json_object_get(o, "prompt")), *sol = json_string_value(json_object_get(o, "canonical_solution"));
    const char *test = json_string_value(json_object_get(o, "test")), *entry = json_string_value(json_object_get(o, "entry_point"));
    for (int good = 1; good >= 0; good--) {
      nc_buf comp, prog;
      nc_buf_init(&comp), nc_buf_init(&prog);
      nc_buf_printf(&comp, "Here it is:\n```python\n%s%s\n```\n", prompt, good ? sol : "    return None\n");
      nc_chat_humaneval_program(prompt, comp.data, test, entry, &prog);
      nc_run_result r;
      cr_assert_null(nc_runner_exec(prog.data, prog.len, NULL, &r));
      cr_assert_eq(r.outcome, good ? NC_RUN_PASS : NC_RUN_FAIL, "problem %d good=%d: %s\n%s", i, good, nc_run_outcome_name(r.outcome), r.output);
      nc_buf_free(&comp), nc_buf_free(&prog);
    }
    json_decref(o);
  }
  free(line);
  gzclose(gz);
}

static uint64_t rng_next(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static void make_ckpt(const char *dir) {
  const char *xml = "<model version=\"1\" name=\"evchat\"><dims depth=\"2\" aspect_ratio=\"16\" head_dim=\"16\" vocab_size=\"320\" "
                    "sequence_len=\"1024\"/><attention rope_base=\"10000\" window_pattern=\"L\"/><output softcap=\"15\"/></model>";
  nc_model_spec s;
  cr_assert_null(nc_spec_parse(xml, strlen(xml), "spec", &s));
  nc_session *p = nc_session_new();
  cr_assert_null(nc_model_init_session(&s, 5, p));
  uint64_t x = 0x12345;
  for (int k = 0; k < nc_session_count(p); k++) {
    nc_tensor *t = (nc_tensor *)nc_session_get(p, nc_session_name_at(p, k));
    float *d = t->data;
    for (int64_t i = 0; i < nc_tensor_numel(t); i++)
      if (d[i] == 0) d[i] = (float)((double)(rng_next(&x) % 2001) / 1000.0 - 1.0) * 0.3f;
  }
  cr_assert_null(nc_model_ckpt_save(dir, 0, &s, p, NULL, NULL));
  nc_session_free(p);
  static const char *const merges[] = {"he", "th", "the", "in", "an"};
  nc_tok *t = nc_tok_test_small(merges, 5);
  char tp[600];
  snprintf(tp, sizeof tp, "%s/tokenizer.tiktoken", dir);
  cr_assert_null(nc_tok_save(t, tp));
  nc_tok_free(t);
}

Test(chat_eval, tiny_model_on_slices, .timeout = 300) {
  char p[4096];
  if (!shared_eval(p, sizeof p, "mmlu/mmlu_test.jsonl.gz")) cr_skip_test("no eval data under NC_SHARED_DIR");
  char dir[] = "/tmp/nc_evc_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  make_ckpt(dir);
  nc_chat_eval_opts o;
  nc_chat_eval_opts_default(&o);
  o.ckpt = dir;
  o.max_per_task = 3;
  o.max_tokens = 8;
  o.progress = false;
  cr_assert_null(nc_device_parse("interp", &o.device));
  o.tasks = "MMLU,Bogus";
  nc_chat_result *r;
  int n;
  double cc;
  bool complete;
  nc_status st = nc_chat_eval_run(&o, &r, &n, &cc, &complete);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "unknown task 'Bogus'"));
  nc_status_free(st);
  o.tasks = access("/usr/share/dict/words", R_OK) == 0 ? "ARC-Easy,MMLU,GSM8K,HumanEval,SpellingBee" : "ARC-Easy,MMLU,GSM8K,HumanEval";
  st = nc_chat_eval_run(&o, &r, &n, &cc, &complete);
  cr_assert_null(st, "%s", nc_status_msg(st));
  cr_assert_not(complete);
  double sum = 0;
  int ran = 0;
  for (int i = 0; i < n; i++) {
    if (r[i].skipped) continue;
    cr_assert_eq(r[i].n, 3, "%s", r[i].task);
    double b = nc_chat_baseline(r[i].task);
    cr_assert_float_eq(r[i].centered, (r[i].acc - b) / (1 - b), 1e-12);
    sum += r[i].centered;
    ran++;
  }
  cr_assert_geq(ran, 4);
  cr_assert_float_eq(cc, sum / ran, 1e-12);
  free(r);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

static int run_cli(const char *args) {
  const char *b = getenv("NC_BUILD_DIR");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s/cli/nanochat eval %s >/dev/null 2>/tmp/nc_eval_cli_err.txt", b && *b ? b : ".", args);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void expect_cli(const char *args, int code, const char *words) {
  cr_assert_eq(run_cli(args), code, "nanochat eval %s", args);
  FILE *f = fopen("/tmp/nc_eval_cli_err.txt", "r");
  char buf[2048] = "";
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  buf[n] = 0;
  if (f) fclose(f);
  cr_assert(strstr(buf, words), "nanochat eval %s: '%s' lacks '%s'", args, buf, words);
}

Test(chat_eval, cli_bad_input) {
  const char *b = getenv("NC_BUILD_DIR");
  char bin[1024];
  snprintf(bin, sizeof bin, "%s/cli/nanochat", b && *b ? b : ".");
  if (access(bin, X_OK)) cr_skip_test("no nanochat binary at %s", bin);
  expect_cli("", 2, "usage: nanochat eval base|chat");
  expect_cli("frob", 2, "unknown mode 'frob'");
  expect_cli("base", 2, "usage: nanochat eval base");
  expect_cli("base --ckpt x --max-per-task 0", 2, "--max-per-task: '0'");
  expect_cli("base --ckpt x --batch abc", 2, "--batch: 'abc'");
  expect_cli("base --ckpt x --device nope", 2, "--device");
  expect_cli("base --ckpt /nonexistent/ckpt --tasks none", 3, "/nonexistent/ckpt");
  expect_cli("chat --ckpt x -t 5", 2, "-t: '5' is not a temperature");
  expect_cli("chat --ckpt x -n 0", 2, "-n: '0'");
  expect_cli("chat --ckpt x extra", 2, "unexpected argument 'extra'");
}
