// RL: the REINFORCE batches and weights on hand-made samples, the engine
// following new weights (nc_engine_set_params against a fresh engine), and
// `nanochat rl` end to end with bad flags.
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "pipeline/rl.h"

// ---- batches and advantages ------------------------------------------------------

static void set_sample(nc_gen_result *r, int j, const int32_t *toks, const char *mask, int n) {
  r->tokens[j] = (nc_ids){0};
  r->mask[j] = (nc_buf){0};
  for (int i = 0; i < n; i++) cr_assert(!nc_ids_push(&r->tokens[j], toks[i]));
  nc_buf_put(&r->mask[j], mask, (size_t)n);
}

Test(rl, batches_group_by_advantage_and_mask_prompt_and_tool_output) {
  nc_ids prompt = {0};
  for (int32_t t = 100; t < 103; t++) cr_assert(!nc_ids_push(&prompt, t));  // P = 3
  nc_gen_result r = {.n = 3};
  r.tokens = calloc(3, sizeof *r.tokens), r.mask = calloc(3, sizeof *r.mask), r.text = calloc(3, sizeof *r.text);
  set_sample(&r, 0, (int32_t[]){1, 2}, "\1\1", 2);          // correct
  set_sample(&r, 1, (int32_t[]){3, 4, 5, 6}, "\1\0\0\1", 4);  // wrong; tokens 4, 5 forced (tool output)
  set_sample(&r, 2, (int32_t[]){7}, "\1", 1);               // wrong
  double reward[3] = {1, 0, 0};  // mean 1/3: A = 2/3, -1/3, -1/3
  nc_rl_batches bs = {0};
  cr_assert(!nc_rl_question_batches(&bs, &prompt, &r, reward, 0));
  cr_assert_eq(bs.n, 2);
  // batch 0: sample 0 alone, T = 3 + 2 - 1 = 4: inputs 100 101 102 1, targets - - 1 2
  cr_assert_eq(bs.b[0].B, 1);
  cr_assert_eq(bs.b[0].T, 4);
  int32_t in0[] = {100, 101, 102, 1}, tg0[] = {-1, -1, 1, 2};
  cr_assert(!memcmp(bs.b[0].inputs, in0, sizeof in0));
  cr_assert(!memcmp(bs.b[0].targets, tg0, sizeof tg0));
  cr_assert_float_eq(bs.b[0].weight, 2.0 / 3 * 2, 1e-12);
  // batch 1: samples 1 and 2, T = 3 + 4 - 1 = 6, padding 0 and targets -1 past each sample
  cr_assert_eq(bs.b[1].B, 2);
  cr_assert_eq(bs.b[1].T, 6);
  int32_t in1[] = {100, 101, 102, 3, 4, 5, 100, 101, 102, 7, 0, 0};
  int32_t tg1[] = {-1, -1, 3, -1, -1, 6, -1, -1, 7, -1, -1, -1};
  cr_assert(!memcmp(bs.b[1].inputs, in1, sizeof in1));
  cr_assert(!memcmp(bs.b[1].targets, tg1, sizeof tg1));
  cr_assert_float_eq(bs.b[1].weight, -1.0 / 3 * 3, 1e-12);  // 3 trained targets: 3, 6, 7
  cr_assert_eq(bs.tokens, 5);
  nc_rl_batches_free(&bs);
  // all rewards equal: no advantage, no batch
  double same[3] = {1, 1, 1};
  cr_assert(!nc_rl_question_batches(&bs, &prompt, &r, same, 0));
  cr_assert_eq(bs.n, 0);
  cr_assert_eq(bs.tokens, 0);
  nc_gen_result_free(&r);
  nc_ids_free(&prompt);
}

// ---- end to end ---------------------------------------------------------------------

static char tmp[256], cmdbuf[8192], outbuf[1 << 16];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/nc_test_rl_XXXXXX");
  cr_assert(mkdtemp(tmp));
}
static void teardown(void) {
  snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %s", tmp);
  cr_assert_eq(system(cmdbuf), 0);
}
TestSuite(rl_cli, .init = setup, .fini = teardown, .timeout = 600);

static int nc(const char *args) {
  snprintf(cmdbuf, sizeof cmdbuf, "%s/cli/nanochat %s 2>&1", getenv("NC_BUILD_DIR"), args);
  FILE *p = popen(cmdbuf, "r");
  cr_assert(p);
  size_t n = fread(outbuf, 1, sizeof outbuf - 1, p);
  outbuf[n] = 0;
  int ws = pclose(p);
  return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128;
}

// A d4 checkpoint (init, seed s) with a 300-token tokenizer in tmp/<name>.
static void make_ckpt(const char *name, int seed) {
  char a[2048];
  snprintf(a, sizeof a, "init --spec %s/models/specs/d4.xml -o %s/%s --seed %d", getenv("NC_SOURCE_DIR"), tmp, name, seed);
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  snprintf(a, sizeof a, "%s/words.txt", tmp);
  if (access(a, F_OK) != 0) {
    FILE *f = fopen(a, "w");
    cr_assert(f);
    for (int i = 0; i < 300; i++) fprintf(f, "what is %d plus %d? it is %d. the answer is %d.\n\n", i, i * 7 % 13, i + i * 7 % 13, i % 10);
    fclose(f);
    snprintf(a, sizeof a, "tok train -q -i %s/words.txt --vocab-size 300 -o %s/tok.tiktoken", tmp, tmp);
    cr_assert_eq(nc(a), 0, "%s", outbuf);
  }
  snprintf(a, sizeof a, "cp %s/tok.tiktoken %s/%s/tokenizer.tiktoken && cp %s/tok.tiktoken.json %s/%s/tokenizer.tiktoken.json", tmp, tmp,
           name, tmp, tmp, name);
  cr_assert_eq(system(a), 0);
}

static void greedy(nc_engine *e, const nc_ids *prompt, nc_buf *text) {
  nc_gen_opts g;
  nc_gen_opts_default(&g);
  g.temperature = 0, g.max_tokens = 12;
  nc_gen_result r;
  cr_assert(!nc_engine_generate(e, prompt->data, prompt->len, &g, &r));
  *text = (nc_buf){0};
  nc_buf_put(text, r.tokens[0].data, r.tokens[0].len * sizeof(int32_t));
  nc_gen_result_free(&r);
}

static nc_engine *open_engine(const char *name) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/%s", tmp, name);
  nc_engine_opts o;
  nc_engine_opts_default(&o);
  o.ckpt_dir = dir;
  o.device.kind = NC_DEV_INTERP;
  o.slots = 2;
  o.max_seq = 64;
  nc_engine *e;
  nc_status st = nc_engine_open(&o, &e);
  cr_assert(!st, "%s", nc_status_msg(st));
  return e;
}

// Gives checkpoint tmp/<name> a random lm_head (init leaves it zero, which
// would make every greedy continuation the same).
static void randomize_lm_head(const char *name, unsigned seed) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/%s", tmp, name);
  nc_session *s = nc_session_new();
  nc_model_spec spec;
  cr_assert(!nc_model_ckpt_load(dir, -1, &spec, s, NULL, NULL));
  const nc_tensor *w = nc_session_get(s, "lm_head.weight");
  cr_assert(w);
  float *v = w->data;
  for (int64_t i = 0; i < nc_tensor_numel(w); i++) {
    seed = seed * 1664525u + 1013904223u;
    v[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 0.5f;
  }
  cr_assert(!nc_model_ckpt_save(dir, 1, &spec, s, NULL, NULL));
  nc_session_free(s);
}

Test(rl_cli, engine_follows_new_weights) {
  make_ckpt("a", 1);
  make_ckpt("b", 2);
  randomize_lm_head("a", 11);
  randomize_lm_head("b", 22);
  nc_engine *ea = open_engine("a"), *eb = open_engine("b");
  nc_ids prompt = {0};
  for (int32_t t = 10; t < 16; t++) cr_assert(!nc_ids_push(&prompt, t));
  nc_buf ta, tb, tswap;
  greedy(ea, &prompt, &ta);
  greedy(eb, &prompt, &tb);
  cr_assert(ta.len != tb.len || memcmp(ta.data, tb.data, ta.len), "two inits gave the same greedy tokens (%zu, %zu bytes)", ta.len, tb.len);
  // engine a with b's weights generates exactly what engine b does
  nc_session *sb = nc_session_new();
  nc_model_spec s;
  char dir[512];
  snprintf(dir, sizeof dir, "%s/b", tmp);
  cr_assert(!nc_model_ckpt_load(dir, -1, &s, sb, NULL, NULL));
  cr_assert(!nc_engine_set_params(ea, sb));
  greedy(ea, &prompt, &tswap);
  cr_assert_eq(tswap.len, tb.len);
  cr_assert(!memcmp(tswap.data, tb.data, tb.len));
  // a session missing a weight is refused
  nc_session *empty = nc_session_new();
  nc_status st = nc_engine_set_params(ea, empty);
  cr_assert(st && strstr(nc_status_msg(st), "lack"), "%s", st ? nc_status_msg(st) : "ok");
  nc_status_free(st);
  nc_session_free(empty), nc_session_free(sb);
  nc_buf_free(&ta), nc_buf_free(&tb), nc_buf_free(&tswap);
  nc_ids_free(&prompt);
  nc_engine_close(ea), nc_engine_close(eb);
}

Test(rl_cli, runs_end_to_end_and_refuses_bad_input) {
  make_ckpt("sft", 3);
  char a[4096], base[1024];
  snprintf(a, sizeof a, "data synth arithmetic -n 20 -o %s/arith.jsonl", tmp);
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  snprintf(a, sizeof a, "data synth identity -n 5 -o %s/identity.jsonl", tmp);
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  snprintf(base, sizeof base,
           "rl --from %s/sft --out %s/run --num-iterations 2 --examples-per-step 2 --samples 3 --max-new-tokens 8 --eval-every 1 "
           "--eval-examples 2 --eval-k 2 --device interp -q",
           tmp, tmp);
  snprintf(a, sizeof a, "%s --data %s/arith.jsonl", base, tmp);
  cr_assert_eq(nc(a), 0, "%s", outbuf);
  cr_assert(strstr(outbuf, "pass@1"), "%s", outbuf);
  snprintf(a, sizeof a, "%s/run/chatrl_checkpoints/d4/run.json", tmp);
  json_t *j = json_load_file(a, 0, NULL);
  cr_assert(j, "no run.json");
  cr_assert_eq(json_integer_value(json_object_get(j, "steps")), 2);
  cr_assert(json_is_number(json_object_get(j, "pass_at_1")));
  double r = json_number_value(json_object_get(j, "mean_reward"));
  cr_assert(r >= 0 && r <= 1);
  json_decref(j);
  snprintf(a, sizeof a, "%s/run/chatrl_checkpoints/d4/model_000002.safetensors", tmp);
  cr_assert_eq(access(a, R_OK), 0);
  // a second run refuses to mix with the first
  snprintf(a, sizeof a, "%s --data %s/arith.jsonl", base, tmp);
  cr_assert_neq(nc(a), 0);
  cr_assert(strstr(outbuf, "--overwrite"), "%s", outbuf);
  // bad input
  cr_assert_eq(nc("rl --data x.jsonl --samples 1"), 2);
  cr_assert(strstr(outbuf, "--samples"), "%s", outbuf);
  cr_assert_eq(nc("rl"), 2);
  cr_assert(strstr(outbuf, "--data"), "%s", outbuf);
  cr_assert_eq(nc("rl --data x.jsonl -t hot"), 2);
  cr_assert(strstr(outbuf, "--temperature"), "%s", outbuf);
  snprintf(a, sizeof a, "%s --data %s/identity.jsonl --overwrite", base, tmp);  // no "#### N" answers
  cr_assert_neq(nc(a), 0);
  cr_assert(strstr(outbuf, "no usable"), "%s", outbuf);
  snprintf(a, sizeof a, "rl --data %s/arith.jsonl --from %s/nowhere --out %s/run2", tmp, tmp, tmp);
  cr_assert_neq(nc(a), 0);
  cr_assert(strstr(outbuf, "nowhere"), "%s", outbuf);
}
