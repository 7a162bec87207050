// CORE's shared path (eval/core_run.c: shared prefixes, longer continuations
// from a KV cache of the prefix, length-sorted batches, the lm_head at the
// scored positions only), with and without the KV cache, against the reference path
// (every choice's whole sequence, logits everywhere) on a tiny model: the
// per-example mean cross-entropy of every choice, the picks and the LM exact
// matches agree on a few hundred examples of seven bundle tasks; the ranks'
// parts (--rank/--world) merge into the 1-rank result (CORE; chat by hand
// and through nc_chat_eval_run on MMLU and GSM8K);
// bad input of the gathered forward pass and of the flags. Skips cleanly
// without ../shared/data/eval/core.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "chat/model_io.h"
#include "eval/chat.h"
#include "eval/core.h"
#include "eval/forward.h"

static const char *core_bundle(char *buf, size_t n) {
  const char *sh = getenv("NC_SHARED_DIR");
  snprintf(buf, n, "%s/data/eval/core", sh && *sh ? sh : "../shared");
  char p[4200];
  snprintf(p, sizeof p, "%s/core.yaml", buf);
  return access(p, R_OK) == 0 ? buf : NULL;
}

static uint64_t rng_next(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

// Up to cap bytes of a (gzipped) task file as one document per line.
static void add_docs(const char *path, size_t cap, char **docs, size_t *lens, size_t *n) {
  gzFile gz = gzopen(path, "rb");
  cr_assert_not_null(gz, "%s", path);
  char *buf = malloc(cap + 1);
  int got = gzread(gz, buf, (unsigned)cap);
  gzclose(gz);
  cr_assert_gt(got, 0);
  buf[got] = 0;
  for (char *p = buf; *p && *n < 4096;) {
    char *nl = strchr(p, '\n');
    size_t l = nl ? (size_t)(nl - p) : strlen(p);
    docs[*n] = strndup(p, l);
    lens[(*n)++] = l;
    p += l + (nl ? 1 : 0);
  }
  free(buf);
}

// A tiny random GPT (vocab 1024, width 32, 2 layers) with a BPE tokenizer
// trained on text of the bundle, so that answers like " yes" are single tokens.
static void make_ckpt(const char *dir, const char *bundle) {
  static const char *const files[] = {"reading_comprehension/boolq", "commonsense_reasoning/commonsense_qa",
                                      "commonsense_reasoning/copa", "world_knowledge/arc_easy", "language_understanding/winograd_wsc"};
  char *docs[4096];
  size_t lens[4096], nd = 0;
  for (int i = 0; i < 5; i++) {
    char p[4400];
    snprintf(p, sizeof p, "%s/eval_data/%s.jsonl.gz", bundle, files[i]);
    add_docs(p, 60000, docs, lens, &nd);
  }
  nc_tok_train_opts to;
  nc_tok_train_opts_default(&to);
  to.vocab_size = 1024;
  to.threads = 1;
  nc_tok *tok;
  nc_status st = nc_tok_train_docs((const char *const *)docs, lens, nd, &to, &tok);
  cr_assert_null(st, "%s", nc_status_msg(st));
  for (size_t i = 0; i < nd; i++) free(docs[i]);
  char tp[600];
  snprintf(tp, sizeof tp, "%s/tokenizer.tiktoken", dir);
  cr_assert_null(nc_tok_save(tok, tp));
  cr_assert_leq(nc_tok_vocab_size(tok), 1024u);
  nc_tok_free(tok);
  const char *xml = "<model version=\"1\" name=\"evshare\"><dims depth=\"2\" aspect_ratio=\"16\" head_dim=\"16\" vocab_size=\"1024\" "
                    "sequence_len=\"32\"/><attention rope_base=\"10000\" window_pattern=\"L\"/><output softcap=\"15\"/></model>";
  nc_model_spec s;
  cr_assert_null(nc_spec_parse(xml, strlen(xml), "spec", &s));
  nc_session *p = nc_session_new();
  cr_assert_null(nc_model_init_session(&s, 7, p));
  uint64_t x = 0x2545f491;
  for (int k = 0; k < nc_session_count(p); k++) {
    nc_tensor *t = (nc_tensor *)nc_session_get(p, nc_session_name_at(p, k));
    float *d = t->data;
    for (int64_t i = 0; i < nc_tensor_numel(t); i++)
      if (d[i] == 0) d[i] = (float)((double)(rng_next(&x) % 2001) / 1000.0 - 1.0) * 0.3f;
  }
  cr_assert_null(nc_model_ckpt_save(dir, 0, &s, p, NULL, NULL));
  nc_session_free(p);
}

// Per-example records of one run.
typedef struct {
  char label[64];
  int64_t idx;
  int n, pick;
  bool correct;
  double mean[8];
} rec;
typedef struct {
  rec *v;
  int n, cap;
} recs;

static void on_example(void *ctx, const nc_core_example *ex) {
  recs *r = ctx;
  if (r->n == r->cap) r->v = realloc(r->v, (size_t)(r->cap = r->cap ? 2 * r->cap : 256) * sizeof *r->v);
  rec *e = &r->v[r->n++];
  memset(e, 0, sizeof *e);
  snprintf(e->label, sizeof e->label, "%s", ex->label);
  e->idx = ex->idx;
  e->n = ex->n < 8 ? ex->n : 8;
  e->pick = ex->pick;
  e->correct = ex->correct;
  for (int i = 0; i < e->n; i++) e->mean[i] = ex->mean_ce[i];
}

#define TASKS "copa,commonsense_qa,boolq,arc_easy,winograd,lambada_openai,bigbench_operators"

Test(eval_share, shared_equals_reference_and_ranks_merge, .timeout = 600) {
  char b[4096];
  if (!core_bundle(b, sizeof b)) cr_skip_test("no eval bundle under NC_SHARED_DIR");
  char dir[] = "/tmp/nc_evs_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  make_ckpt(dir, b);
  nc_device dev;
  cr_assert_null(nc_device_parse("cpu", &dev));
  dev.threads = 1;
  nc_evalfwd *f;
  nc_status st = nc_evalfwd_open(dir, -1, NULL, &dev, &f);
  cr_assert_null(st, "%s", nc_status_msg(st));
  recs sh = {0}, ref = {0};
  // 7 tasks x 48 examples = 336; sequences cropped to 160 tokens (10-shot prompts are longer)
  nc_core_opts o = {.bundle = b, .tasks = TASKS, .max_per_task = 48, .batch = 16, .batch_tokens = 2048, .max_len = 160,
                    .on_example = on_example, .ctx = &sh, .chunk = 20};
  nc_core_result *rs, *rr;
  int ns, nr;
  double cs, cr;
  st = nc_core_run(f, &o, &rs, &ns, &cs);
  cr_assert_null(st, "%s", nc_status_msg(st));
  o.unshared = true, o.ctx = &ref, o.batch = 8;
  st = nc_core_run(f, &o, &rr, &nr, &cr);
  cr_assert_null(st, "%s", nc_status_msg(st));
  // the shared path without the KV cache (a whole row for every longer continuation): the same counts
  recs nokv = {0};
  nc_core_opts o2 = o;
  o2.unshared = false, o2.kv_cache = -1, o2.ctx = &nokv, o2.batch = 16;
  nc_core_result *rk;
  int nk;
  double ck;
  st = nc_core_run(f, &o2, &rk, &nk, &ck);
  cr_assert_null(st, "%s", nc_status_msg(st));
  cr_assert_eq(nokv.n, ref.n);
  for (int k = 0; k < nokv.n; k++)
    for (int i = 0; i < nokv.v[k].n; i++)
      if (!isnan(ref.v[k].mean[i]))
        cr_assert_leq(fabs(nokv.v[k].mean[i] - ref.v[k].mean[i]), 1e-4 * (1 + fabs(ref.v[k].mean[i])), "%s %lld", ref.v[k].label,
                      (long long)ref.v[k].idx);
  for (int i = 0; i < nk; i++) {
    cr_assert_eq(rk[i].correct, rr[i].correct, "%s", rk[i].label);
    if (!strcmp(rk[i].label, "copa"))  // copa's multi-token answers: the KV cache forwards fewer tokens than whole rows
      cr_assert_lt(rs[i].tokens, rk[i].tokens, "copa: %lld with the KV cache, %lld without", (long long)rs[i].tokens, (long long)rk[i].tokens);
  }
  free(rk);
  free(nokv.v);
  cr_assert_eq(ns, 7);
  cr_assert_eq(nr, 7);
  cr_assert_eq(sh.n, 7 * 48);
  cr_assert_eq(ref.n, sh.n);
  int near_ties = 0, choices = 0;
  double worst = 0;
  for (int k = 0; k < sh.n; k++) {
    rec *a = &sh.v[k], *c = &ref.v[k];
    cr_assert_str_eq(a->label, c->label);
    cr_assert_eq(a->idx, c->idx, "%s", a->label);
    cr_assert_eq(a->n, c->n, "%s %lld", a->label, (long long)a->idx);
    for (int i = 0; i < a->n; i++) {
      cr_assert_eq(isnan(a->mean[i]), isnan(c->mean[i]));
      if (isnan(a->mean[i])) continue;
      double d = fabs(a->mean[i] - c->mean[i]);
      worst = d > worst ? d : worst;
      cr_assert_leq(d, 1e-4 * (1 + fabs(c->mean[i])), "%s %lld choice %d: shared %.9f, reference %.9f", a->label, (long long)a->idx, i,
                    a->mean[i], c->mean[i]);
      choices++;
    }
    if (a->pick != c->pick) {  // only on a near tie of the reference's means
      cr_assert_leq(fabs(c->mean[a->pick] - c->mean[c->pick]), 2e-4, "%s %lld: picks %d vs %d", a->label, (long long)a->idx, a->pick, c->pick);
      near_ties++;
    } else {
      cr_assert_eq(a->correct, c->correct, "%s %lld", a->label, (long long)a->idx);
    }
  }
  fprintf(stderr, "shared vs reference: %d choice means, worst |diff| %.3g, %d near ties\n", choices, worst, near_ties);
  cr_assert_leq(near_ties, 2);
  cr_assert_geq(choices, 600);  // 48 x (2 + 5 + 2 + 3..5 + 2) less empty spans
  for (int i = 0; i < ns; i++) {
    cr_assert_str_eq(rs[i].label, rr[i].label);
    cr_assert_eq(rs[i].n, 48);
    if (!near_ties) cr_assert_eq(rs[i].correct, rr[i].correct, "%s", rs[i].label);
    // never more padded tokens than the reference
    fprintf(stderr, "%-20s correct %lld/%lld, padded tokens shared %lld, reference %lld\n", rs[i].label, (long long)rs[i].correct,
            (long long)rs[i].n, (long long)rs[i].tokens, (long long)rr[i].tokens);
    cr_assert_leq(rs[i].tokens, rr[i].tokens, "%s: %lld vs %lld tokens", rs[i].label, (long long)rs[i].tokens, (long long)rr[i].tokens);
    if (!strcmp(rs[i].label, "commonsense_qa"))  // one-token answers here: the 5 choices share one prefix row
      cr_assert_lt(rs[i].tokens * 3, rr[i].tokens, "commonsense_qa: %lld vs %lld tokens", (long long)rs[i].tokens, (long long)rr[i].tokens);
  }
  // the ranks' parts merge into the 1-rank result
  nc_core_result *p0, *p1;
  int n0, n1;
  double c0, c1;
  o.unshared = false, o.on_example = NULL, o.world = 2, o.rank = 0;
  cr_assert_null(nc_core_run(f, &o, &p0, &n0, &c0));
  o.rank = 1;
  cr_assert_null(nc_core_run(f, &o, &p1, &n1, &c1));
  cr_assert_eq(p0[0].n + p1[0].n, 48);
  cr_assert_eq(p0[0].n, 24);  // examples 0, 2, 4, ... and 1, 3, 5, ...
  double cm;
  cr_assert_null(nc_core_results_merge(p0, n0, p1, n1, &cm));
  for (int i = 0; i < ns; i++) {
    cr_assert_eq(p0[i].n, rs[i].n, "%s", rs[i].label);
    cr_assert_eq(p0[i].correct, rs[i].correct, "%s", rs[i].label);
    cr_assert_float_eq(p0[i].acc, rs[i].acc, 1e-15);
    cr_assert_float_eq(p0[i].centered, rs[i].centered, 1e-15);
  }
  cr_assert_float_eq(cm, cs, 1e-15);
  // bad input: a rank outside the world, an inconsistent part
  o.rank = 2;
  st = nc_core_run(f, &o, &p1, &n1, &c1);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "rank 2 is outside [0, world = 2)"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_core_result bad = rs[0];
  bad.correct = bad.n + 1;
  st = nc_core_results_merge(rr, nr, &bad, 1, &cm);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "merge: task 'arc_easy' has 49 correct of 48"), "%s", nc_status_msg(st));
  nc_status_free(st);
  free(p0);
  free(rs);
  free(rr);
  free(sh.v);
  free(ref.v);
  nc_evalfwd_free(f);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

Test(eval_share, gathered_logits_equal_full_logits_and_bad_input, .timeout = 300) {
  char b[4096];
  if (!core_bundle(b, sizeof b)) cr_skip_test("no eval bundle under NC_SHARED_DIR");
  char dir[] = "/tmp/nc_evg_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  make_ckpt(dir, b);
  nc_device dev;
  cr_assert_null(nc_device_parse("interp", &dev));
  nc_evalfwd *f;
  cr_assert_null(nc_evalfwd_open(dir, -1, NULL, &dev, &f));
  int32_t s0[9] = {5, 17, 300, 2, 9, 44, 1000, 3, 12}, s1[4] = {7, 8, 9, 10};
  const int32_t *seqs[2] = {s0, s1};
  int64_t lens[2] = {9, 4}, pos[2] = {6, 3};
  float *full[2] = {malloc(1024 * sizeof(float)), malloc(1024 * sizeof(float))};
  cr_assert_null(nc_evalfwd_logits_at(f, seqs, lens, 2, 0, pos, full));
  int prow[3] = {1, 0, 0};
  int64_t ppos[3] = {3, 6, 0};
  float *g = malloc(3 * 1024 * sizeof(float));
  nc_status st = nc_evalfwd_gather(f, seqs, lens, 2, 0, 3, prow, ppos, g);
  cr_assert_null(st, "%s", nc_status_msg(st));
  for (int v = 0; v < 1024; v++) {
    cr_assert_float_eq(g[v], full[1][v], 1e-5, "row 1 logit %d", v);
    cr_assert_float_eq(g[1024 + v], full[0][v], 1e-5, "row 0 logit %d", v);
  }
  // a position past its sequence, a row outside the batch, a token outside the vocabulary, nothing to run
  ppos[0] = 4;
  st = nc_evalfwd_gather(f, seqs, lens, 2, 0, 3, prow, ppos, g);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "position 0 (sequence 1, index 4) is outside the batch"), "%s", nc_status_msg(st));
  nc_status_free(st);
  ppos[0] = 3, prow[2] = 2;
  st = nc_evalfwd_gather(f, seqs, lens, 2, 0, 3, prow, ppos, g);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "position 2 (sequence 2"), "%s", nc_status_msg(st));
  nc_status_free(st);
  s1[2] = 5000;
  st = nc_evalfwd_gather(f, seqs, lens, 2, 0, 1, prow, ppos, g);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "token 5000 at [1][2] is outside the vocabulary"), "%s", nc_status_msg(st));
  nc_status_free(st);
  st = nc_evalfwd_gather(f, seqs, lens, 2, 0, 0, prow, ppos, g);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "empty batch"), "%s", nc_status_msg(st));
  nc_status_free(st);
  free(g);
  free(full[0]);
  free(full[1]);
  nc_evalfwd_free(f);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

Test(eval_share, chat_results_merge) {
  // rank 0 held problems 0, 2, 4 of MMLU and GSM8K, rank 1 the others; HumanEval skipped
  nc_chat_result a[3] = {{.task = "MMLU", .n = 3, .passed = 2}, {.task = "GSM8K", .n = 3, .passed = 1}, {.task = "HumanEval", .skipped = true}};
  nc_chat_result p[2] = {{.task = "MMLU", .n = 2, .passed = 1}, {.task = "GSM8K", .n = 2, .passed = 0}};
  double cc;
  bool complete;
  cr_assert_null(nc_chat_results_merge(a, 3, p, 2, &cc, &complete));
  cr_assert_eq(a[0].n, 5);
  cr_assert_eq(a[0].passed, 3);
  cr_assert_float_eq(a[0].acc, 0.6, 1e-15);
  cr_assert_float_eq(a[0].centered, (0.6 - 0.25) / 0.75, 1e-15);
  cr_assert_eq(a[1].n, 5);
  cr_assert_float_eq(a[1].centered, 0.2, 1e-15);  // generative: baseline 0
  cr_assert_eq(a[2].n, 0);
  cr_assert_float_eq(cc, ((0.6 - 0.25) / 0.75 + 0.2) / 2, 1e-15);
  cr_assert_not(complete);
  nc_chat_result bad = {.task = "MMLU", .n = 1, .passed = 2};
  nc_status st = nc_chat_results_merge(a, 3, &bad, 1, &cc, &complete);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "merge: task 'MMLU' has 2 passed of 1"), "%s", nc_status_msg(st));
  nc_status_free(st);
}

// nc_chat_eval_run's striding: ranks 0 and 1 of 2 merged equal the 1-rank counts
// (MMLU categorical, GSM8K generative; 7 problems each).
Test(eval_share, chat_ranks_merge, .timeout = 300) {
  char b[4096], p[4400];
  if (!core_bundle(b, sizeof b)) cr_skip_test("no eval bundle under NC_SHARED_DIR");
  const char *sh = getenv("NC_SHARED_DIR");
  snprintf(p, sizeof p, "%s/data/eval/mmlu/mmlu_test.jsonl.gz", sh && *sh ? sh : "../shared");
  if (access(p, R_OK)) cr_skip_test("no MMLU under NC_SHARED_DIR");
  char dir[] = "/tmp/nc_evr_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  make_ckpt(dir, b);
  nc_chat_eval_opts o;
  nc_chat_eval_opts_default(&o);
  o.ckpt = dir;
  o.tasks = "MMLU,GSM8K";
  o.max_per_task = 7;
  o.max_tokens = 4;
  o.progress = false;
  cr_assert_null(nc_device_parse("cpu", &o.device));
  o.device.threads = 1;
  nc_chat_result *all, *r0, *r1;
  int n, n0, n1;
  double cc, c0, c1;
  bool full, f0, f1;
  nc_status st = nc_chat_eval_run(&o, &all, &n, &cc, &full);
  cr_assert_null(st, "%s", nc_status_msg(st));
  o.world = 2, o.rank = 0;
  cr_assert_null(nc_chat_eval_run(&o, &r0, &n0, &c0, &f0));
  o.rank = 1;
  cr_assert_null(nc_chat_eval_run(&o, &r1, &n1, &c1, &f1));
  cr_assert_eq(n0, n);
  int ran = 0;
  for (int i = 0; i < n; i++) {
    if (all[i].skipped) continue;
    ran++;
    cr_assert_eq(r0[i].n, 4, "%s", all[i].task);  // problems 0, 2, 4, 6
    cr_assert_eq(r1[i].n, 3, "%s", all[i].task);
  }
  cr_assert_eq(ran, 2);
  cr_assert_null(nc_chat_results_merge(r0, n0, r1, n1, &c0, &f0));
  for (int i = 0; i < n; i++) {
    cr_assert_eq(r0[i].n, all[i].n, "%s", all[i].task);
    cr_assert_eq(r0[i].passed, all[i].passed, "%s", all[i].task);
    cr_assert_float_eq(r0[i].centered, all[i].centered, 1e-15);
  }
  cr_assert_float_eq(c0, cc, 1e-15);
  cr_assert_eq(f0, full);
  free(r1);
  o.rank = 2;
  st = nc_chat_eval_run(&o, &r1, &n1, &c1, &f1);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "rank 2 is outside [0, world = 2)"), "%s", nc_status_msg(st));
  nc_status_free(st);
  free(all);
  free(r0);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

static int run_cli(const char *args, char *err, size_t cap) {
  const char *b = getenv("NC_BUILD_DIR");
  char cmd[2048], ef[] = "/tmp/nc_evs_cli_XXXXXX";
  int fd = mkstemp(ef);
  cr_assert_geq(fd, 0);
  close(fd);
  snprintf(cmd, sizeof cmd, "%s/cli/nanochat eval %s >/dev/null 2>%s", b && *b ? b : ".", args, ef);
  int rc = system(cmd);
  FILE *f = fopen(ef, "r");
  size_t n = f ? fread(err, 1, cap - 1, f) : 0;
  err[n] = 0;
  if (f) fclose(f);
  unlink(ef);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void expect_cli(const char *args, int code, const char *words) {
  char err[2048];
  cr_assert_eq(run_cli(args, err, sizeof err), code, "nanochat eval %s: %s", args, err);
  cr_assert(strstr(err, words), "nanochat eval %s: '%s' lacks '%s'", args, err, words);
}

Test(eval_share, cli_rank_flags_bad_input) {
  const char *b = getenv("NC_BUILD_DIR");
  char bin[1024];
  snprintf(bin, sizeof bin, "%s/cli/nanochat", b && *b ? b : ".");
  if (access(bin, X_OK)) cr_skip_test("no nanochat binary at %s", bin);
  expect_cli("base --ckpt x --rank 2 --world 2", 2, "--rank 2 must be below --world 2");
  expect_cli("base --ckpt x --world 0", 2, "--world: '0'");
  expect_cli("base --ckpt x --rank -1", 2, "--rank: '-1'");
  expect_cli("base --ckpt x --kv-cache maybe", 2, "--kv-cache: 'maybe' is not auto, on or off");
  expect_cli("chat --ckpt x --rank 1", 2, "--rank 1 must be below --world 1");
  expect_cli("chat --ckpt x --world x", 2, "--world: 'x'");
}
