// CORE: Python's random reproduced (fixture from tools/gen_eval_fixtures.py),
// core.yaml / eval_meta_data.csv parsing and their bad input, nanochat's
// prompt rendering, scoring on hand-made cases (always-A, oracle, ties), the
// centered accuracy against the bundle's reference scores, and a tiny model
// scored on slices of the bundle's tasks (skipped when ../shared is absent).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "eval/core.h"
#include "eval/forward.h"
#include "eval/pyrandom.h"
#include "tests/support/tok_util.h"

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  size_t got = fread(b, 1, (size_t)n, f);
  b[got] = 0;
  fclose(f);
  if (len) *len = got;
  return b;
}

static const char *src_dir(void) {
  const char *s = getenv("NC_SOURCE_DIR");
  return s && *s ? s : ".";
}

static const char *core_bundle(char *buf, size_t n) {
  const char *sh = getenv("NC_SHARED_DIR");
  snprintf(buf, n, "%s/data/eval/core", sh && *sh ? sh : "../shared");
  char p[4200];
  snprintf(p, sizeof p, "%s/core.yaml", buf);
  return access(p, R_OK) == 0 ? buf : NULL;
}

// ---- Python random ---------------------------------------------------------------

Test(eval_random, matches_cpython_fixture) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/fixtures/eval/pyrandom.txt", src_dir());
  char *text = slurp(path, NULL);
  cr_assert_not_null(text, "missing %s (run tools/gen_eval_fixtures.py)", path);
  int cases = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    char kind[16];
    int off = 0;
    cr_assert_eq(sscanf(line, "%15s%n", kind, &off), 1);
    char *p = line + off;
    long long a[4];
    int used;
    if (!strcmp(kind, "u32")) {
      sscanf(p, "%lld %lld%n", &a[0], &a[1], &used), p += used;
      nc_pyrandom r;
      nc_pyrandom_seed(&r, (uint64_t)a[0]);
      for (int i = 0; i < a[1]; i++) {
        long long want;
        sscanf(p, "%lld%n", &want, &used), p += used;
        cr_assert_eq((long long)nc_pyrandom_getrandbits(&r, 32), want, "seed %lld word %d", a[0], i);
      }
    } else if (!strcmp(kind, "shuffle")) {
      sscanf(p, "%lld %lld%n", &a[0], &a[1], &used), p += used;
      int64_t *x = malloc((size_t)(a[1] + 1) * sizeof *x);
      for (int64_t i = 0; i < a[1]; i++) x[i] = i;
      nc_pyrandom r;
      nc_pyrandom_seed(&r, (uint64_t)a[0]);
      nc_pyrandom_shuffle(&r, x, a[1]);
      for (int64_t i = 0; i < a[1]; i++) {
        long long want;
        sscanf(p, "%lld%n", &want, &used), p += used;
        cr_assert_eq(x[i], want, "shuffle n=%lld at %lld", a[1], (long long)i);
      }
      free(x);
    } else if (!strcmp(kind, "sample")) {
      sscanf(p, "%lld %lld %lld %lld%n", &a[0], &a[1], &a[2], &a[3], &used), p += used;
      int64_t *avail = malloc((size_t)a[1] * sizeof *avail), out[64];
      int64_t m = 0;
      for (int64_t i = 0; i < a[1]; i++)
        if (i != a[2]) avail[m++] = i;
      nc_pyrandom r;
      nc_pyrandom_seed(&r, (uint64_t)a[0]);
      cr_assert_null(nc_pyrandom_sample(&r, avail, m, a[3], out));
      for (int64_t i = 0; i < a[3]; i++) {
        long long want;
        sscanf(p, "%lld%n", &want, &used), p += used;
        cr_assert_eq(out[i], want, "sample n=%lld k=%lld at %lld", a[1], a[3], (long long)i);
      }
      free(avail);
    } else if (!strcmp(kind, "core")) {
      // nanochat: shuffled by Random(1337), few-shot over the shuffled positions
      sscanf(p, "%lld %lld %lld%n", &a[0], &a[1], &a[2], &used), p += used;
      nc_core_data d = {calloc((size_t)a[0], sizeof(nc_core_item)), a[0]};
      for (int64_t i = 0; i < a[0]; i++) {
        char q[32];
        snprintf(q, sizeof q, "Q%lld", (long long)i);
        d.items[i].query = strdup(q);
        d.items[i].choices = calloc(1, sizeof(char *));
        d.items[i].choices[0] = strdup("x");
        d.items[i].nchoices = 1;
      }
      cr_assert_null(nc_core_data_shuffle(&d, 0));
      nc_core_task t = {.label = "t", .num_fewshot = (int)a[2], .type = NC_CORE_MC, .delim = "|"};
      nc_buf *pr;
      int np;
      cr_assert_null(nc_core_render(&t, &d, a[1], &pr, &np));
      // expected: "Q<s1>|x\n\nQ<s2>|x\n\n...Q<item>|x"
      nc_buf want;
      nc_buf_init(&want);
      for (int64_t i = 0; i < a[2]; i++) {
        long long s;
        sscanf(p, "%lld%n", &s, &used), p += used;
        nc_buf_printf(&want, "Q%lld|x\n\n", s);
      }
      nc_buf_printf(&want, "%s|x", d.items[a[1]].query);
      cr_assert_str_eq(pr[0].data, want.data, "core n=%lld idx=%lld", a[0], a[1]);
      nc_buf_free(&want);
      nc_buf_free(&pr[0]);
      free(pr);
      nc_core_data_free(&d);
    } else if (!strcmp(kind, "random")) {
      sscanf(p, "%lld %lld%n", &a[0], &a[1], &used), p += used;
      nc_pyrandom r;
      nc_pyrandom_seed(&r, (uint64_t)a[0]);
      for (int i = 0; i < a[1]; i++) {
        double want;
        sscanf(p, "%lf%n", &want, &used), p += used;
        cr_assert_eq(nc_pyrandom_random(&r), want);
      }
    } else {
      cr_assert_fail("unknown fixture line %s", kind);
    }
    cases++;
  }
  cr_assert_geq(cases, 30);
  free(text);
}

Test(eval_random, sample_too_many_is_an_error) {
  nc_pyrandom r;
  nc_pyrandom_seed(&r, 1);
  int64_t pop[3] = {1, 2, 3}, out[4];
  nc_status st = nc_pyrandom_sample(&r, pop, 3, 4, out);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "larger than the population"));
  nc_status_free(st);
}

// ---- parsing -------------------------------------------------------------------------

static void expect_err(nc_status st, const char *words) {
  cr_assert_not_null(st, "expected an error with '%s'", words);
  cr_assert(strstr(nc_status_msg(st), words), "error '%s' lacks '%s'", nc_status_msg(st), words);
  nc_status_free(st);
}

Test(eval_parse, yaml_good) {
  const char *y = "icl_tasks:\n-\n  label: a\n  dataset_uri: x/a.jsonl\n  num_fewshot: [10]\n  icl_task_type: multiple_choice\n"
                  "  continuation_delimiter: \"\\nAnswer: \"\n-\n  label: b\n  dataset_uri: b.jsonl\n  num_fewshot: [0]\n"
                  "  icl_task_type: schema\n";
  nc_core_config c;
  nc_status st = nc_core_yaml_parse(y, strlen(y), "t.yaml", &c);
  cr_assert_null(st, "%s", nc_status_msg(st));
  cr_assert_eq(c.n, 2);
  cr_assert_str_eq(c.tasks[0].delim, "\nAnswer: ");
  cr_assert_eq(c.tasks[0].num_fewshot, 10);
  cr_assert_str_eq(c.tasks[1].delim, " ");
  cr_assert_eq(c.tasks[1].type, NC_CORE_SCHEMA);
  const char *csv = "Eval Task,Task Category,Random baseline,Desc\na,x,25,\"quoted, with comma\nand newline\"\nb,y,50,\n";
  cr_assert_null(nc_core_baselines_parse(csv, strlen(csv), "m.csv", &c));
  cr_assert_float_eq(c.tasks[0].baseline, 25.0, 1e-12);
  cr_assert_float_eq(c.tasks[1].baseline, 50.0, 1e-12);
  nc_core_config_free(&c);
}

Test(eval_parse, yaml_bad) {
  nc_core_config c;
  const char *cases[][2] = {
      {"icl_tasks: [\n", "t.yaml:"},
      {"foo: 1\n", "t.yaml:1: no 'icl_tasks'"},
      {"icl_tasks: 3\n", "must be a list"},
      {"icl_tasks:\n- label: a\n  dataset_uri: a\n  num_fewshot: [1]\n", "t.yaml:2: task 'a' has no 'icl_task_type'"},
      {"icl_tasks:\n- label: a\n  dataset_uri: a\n  num_fewshot: [1]\n  icl_task_type: generation\n", "t.yaml:5: task 'a': unknown icl_task_type"},
      {"icl_tasks:\n- label: a\n  dataset_uri: a\n  num_fewshot: [x]\n  icl_task_type: schema\n", "t.yaml:4: task 'a': num_fewshot"},
      {"icl_tasks:\n- label: a\n  dataset_uri: a\n  icl_task_type: schema\n", "has no 'num_fewshot'"},
      {"icl_tasks:\n- label: a\n  dataset_uri: a\n  num_fewshot: [0]\n  icl_task_type: schema\n- label: a\n  dataset_uri: b\n"
       "  num_fewshot: [0]\n  icl_task_type: schema\n",
       "t.yaml:6: duplicate task label 'a' (first at line 2)"},
      {"icl_tasks:\n- 7\n", "t.yaml:2: task 1 must be a mapping"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_err(nc_core_yaml_parse(cases[i][0], strlen(cases[i][0]), "t.yaml", &c), cases[i][1]);
}

Test(eval_parse, csv_bad) {
  const char *y = "icl_tasks:\n- label: a\n  dataset_uri: a\n  num_fewshot: [0]\n  icl_task_type: schema\n";
  nc_core_config c;
  cr_assert_null(nc_core_yaml_parse(y, strlen(y), "t.yaml", &c));
  const char *cases[][2] = {
      {"Task,Random baseline\na,1\n", "m.csv:1: the header lacks the column 'Eval Task'"},
      {"Eval Task,Random baseline\na,abc\n", "m.csv:2: task 'a': random baseline 'abc' is not a percentage"},
      {"Eval Task,Random baseline\nb,10\na,100\n", "m.csv:3: task 'a': random baseline '100'"},
      {"Eval Task,Random baseline\na\n", "m.csv:2: 1 fields"},
      {"Eval Task,Random baseline,D\nb,1,\"x\ny\"\na,1,\"open\n", "m.csv:4: unterminated quoted field"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_err(nc_core_baselines_parse(cases[i][0], strlen(cases[i][0]), "m.csv", &c), cases[i][1]);
  nc_core_config_free(&c);
}

Test(eval_parse, task_file_bad) {
  char dir[] = "/tmp/nc_evt_XXXXXX", path[600];
  cr_assert_not_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/t.jsonl", dir);
  const char *cases[][3] = {
      {"{\"query\":\"q\",\"choices\":[\"a\",\"b\"],\"gold\":0}\n{\"query\":\"q\",\"choices\":[\"a\"],\"gold\":3}\n", "m", ":2: gold = 3 is outside [0, 1)"},
      {"{\"query\":\"q\",\"choices\":[\"a\",\"b\"],\"gold\":0}\n\n{bad json\n", "m", ":3:"},
      {"{\"query\":\"q\",\"gold\":0}\n", "m", ":1: missing field 'choices'"},
      {"{\"context_options\":[\"a\",1],\"continuation\":\"c\",\"gold\":0}\n", "s", ":1: context_options[1] must be a string"},
      {"{\"context\":\"a\"}\n", "l", ":1: missing field 'continuation'"},
      {"\n\n", "l", "no examples"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    FILE *f = fopen(path, "w");
    fputs(cases[i][0], f);
    fclose(f);
    nc_core_data d;
    nc_core_type ty = cases[i][1][0] == 'm' ? NC_CORE_MC : cases[i][1][0] == 's' ? NC_CORE_SCHEMA : NC_CORE_LM;
    expect_err(nc_core_data_load(path, ty, &d), cases[i][2]);
  }
  nc_core_data d;
  expect_err(nc_core_data_load("/nonexistent/x.jsonl", NC_CORE_MC, &d), "/nonexistent/x.jsonl: cannot open");
  unlink(path);
  rmdir(dir);
}

// ---- rendering --------------------------------------------------------------------------

Test(eval_render, lm_and_schema_templates) {
  nc_core_item its[2] = {{.context = strdup("  ctx one \n"), .continuation = strdup("cont1")},
                         {.context = strdup("ctx two"), .continuation = strdup("cont2")}};
  nc_core_data d = {its, 2};
  nc_core_task t = {.label = "l", .num_fewshot = 1, .type = NC_CORE_LM, .delim = " "};
  nc_buf *p;
  int n;
  cr_assert_null(nc_core_render(&t, &d, 1, &p, &n));
  cr_assert_eq(n, 2);
  cr_assert_str_eq(p[0].data, "ctx one cont1\n\nctx two");  // without: stripped
  cr_assert_str_eq(p[1].data, "ctx one cont1\n\nctx two cont2");
  for (int i = 0; i < n; i++) nc_buf_free(&p[i]);
  free(p);
  free(its[0].context), free(its[0].continuation), free(its[1].context), free(its[1].continuation);
  char *opts[2] = {"The man", "The woman"};
  nc_core_item s = {.ctx_options = opts, .nchoices = 2, .continuation = "left.", .gold = 1};
  nc_core_data ds = {&s, 1};
  nc_core_task ts = {.label = "s", .num_fewshot = 0, .type = NC_CORE_SCHEMA, .delim = " "};
  cr_assert_null(nc_core_render(&ts, &ds, 0, &p, &n));
  cr_assert_str_eq(p[0].data, "The man left.");
  cr_assert_str_eq(p[1].data, "The woman left.");
  for (int i = 0; i < n; i++) nc_buf_free(&p[i]);
  free(p);
  ts.num_fewshot = 1;
  expect_err(nc_core_render(&ts, &ds, 0, &p, &n), "need at least 2 items");
}

Test(eval_render, tokenize_spans) {
  static const char *const merges[] = {"he", "th", "the"};
  nc_tok *tok = nc_tok_test_small(merges, 3);
  nc_buf pr[2];
  nc_buf_init(&pr[0]), nc_buf_init(&pr[1]);
  nc_buf_puts(&pr[0], "q: ab"), nc_buf_puts(&pr[1], "q: cd");
  nc_core_seqs s;
  cr_assert_null(nc_core_tokenize(tok, NC_CORE_MC, pr, 2, &s));
  // bos + "q: " (3 byte tokens) shared; pretokenizer splits " ab"/" cd" so the
  // common prefix ends before the space
  cr_assert_eq(s.seqs[0].data[0], nc_tok_bos_id(tok));
  cr_assert_eq(s.start[0], s.start[1]);
  cr_assert_eq(s.end[0], (int64_t)s.seqs[0].len);
  cr_assert_lt(s.start[0], s.end[0]);
  for (int64_t i = 0; i < s.start[0]; i++) cr_assert_eq(s.seqs[0].data[i], s.seqs[1].data[i]);
  cr_assert_neq(s.seqs[0].data[s.start[0]], s.seqs[1].data[s.start[0]]);
  nc_core_seqs_free(&s);
  // schema: common suffix
  nc_buf_free(&pr[0]), nc_buf_free(&pr[1]);
  nc_buf_init(&pr[0]), nc_buf_init(&pr[1]);
  nc_buf_puts(&pr[0], "xx end"), nc_buf_puts(&pr[1], "yyy end");
  cr_assert_null(nc_core_tokenize(tok, NC_CORE_SCHEMA, pr, 2, &s));
  cr_assert_eq(s.end[0] - s.start[0], s.end[1] - s.start[1]);
  cr_assert_eq(s.end[0] - s.start[0], 4);  // " end" = 4 byte tokens
  nc_core_crop(&s, 5);
  cr_assert_eq(s.seqs[1].len, 5u);
  cr_assert_eq(s.end[1], 5);
  cr_assert_eq(s.start[1], 1);
  nc_core_seqs_free(&s);
  nc_buf_free(&pr[0]), nc_buf_free(&pr[1]);
  nc_tok_free(tok);
}

// ---- scoring on hand-made cases ---------------------------------------------------------------

Test(eval_score, always_a_oracle_ties) {
  // 4 choices, continuation spans [3,5): losses at positions 2..3 count
  double l0[6] = {9, 9, 1, 1, 9, NAN}, l1[6] = {0, 0, 2, 2, 0, NAN}, l2[6] = {0, 0, 1, 1, 0, NAN}, l3[6] = {0, 0, 3, 0.5, 0, NAN};
  const double *ls[4] = {l0, l1, l2, l3};
  int64_t st[4] = {3, 3, 3, 3}, en[4] = {5, 5, 5, 5};
  // choice 0 and 2 tie at mean 1.0, choice 3 has 1.75: the first minimum wins
  cr_assert_eq(nc_core_pick_lowest(ls, st, en, 4), 0);
  l0[2] = 1.5;
  cr_assert_eq(nc_core_pick_lowest(ls, st, en, 4), 2);
  // a model that always answers A (lowest loss on choice 0) over golds 0,1,2,3,0: acc 2/5
  int golds[5] = {0, 1, 2, 3, 0}, correct = 0;
  double a[4][3] = {{0, 0.1, 0}, {0, 0.9, 0}, {0, 0.9, 0}, {0, 0.9, 0}};
  const double *la[4] = {a[0], a[1], a[2], a[3]};
  int64_t s2[4] = {2, 2, 2, 2}, e2[4] = {3, 3, 3, 3};
  for (int i = 0; i < 5; i++) correct += nc_core_pick_lowest(la, s2, e2, 4) == golds[i];
  cr_assert_eq(correct, 2);
  // oracle: lowest loss on the gold choice
  correct = 0;
  for (int i = 0; i < 5; i++) {
    double o[4][3];
    for (int c = 0; c < 4; c++) o[c][0] = o[c][2] = 0, o[c][1] = c == golds[i] ? 0.1 : 2.0;
    const double *lo[4] = {o[0], o[1], o[2], o[3]};
    correct += nc_core_pick_lowest(lo, s2, e2, 4) == golds[i];
  }
  cr_assert_eq(correct, 5);
  // different span lengths: mean, not sum
  double b0[5] = {0, 1, 1, 1, NAN}, b1[3] = {0, 1.2, NAN};
  const double *lb[2] = {b0, b1};
  int64_t sb[2] = {2, 2}, eb[2] = {5, 3};
  cr_assert_eq(nc_core_pick_lowest(lb, sb, eb, 2), 0);
  // lm: argmax predictions at [s-1, e-1) must equal tokens [s, e)
  int32_t toks[6] = {0, 5, 6, 7, 8, 9}, pred[6] = {5, 6, 7, 8, 9, 1};
  cr_assert(nc_core_lm_correct(pred, toks, 3, 6));
  pred[3] = 0;
  cr_assert_not(nc_core_lm_correct(pred, toks, 3, 6));
  cr_assert(nc_core_lm_correct(pred, toks, 1, 3));
  // logits helpers: CE of a uniform row = ln V; argmax takes the first maximum
  float row[4] = {1, 3, 3, 0};
  cr_assert_eq(nc_logits_argmax(row, 4), 1);
  float u[8] = {0};
  cr_assert_float_eq(nc_logits_ce(u, 8, 3), log(8.0), 1e-12);
}

Test(eval_score, centered_matches_reference_scores) {
  char b[4096];
  if (!core_bundle(b, sizeof b)) cr_skip_test("no eval bundle under NC_SHARED_DIR");
  nc_core_config c;
  nc_status st = nc_core_config_load(b, &c);
  cr_assert_null(st, "%s", nc_status_msg(st));
  char path[4200];
  snprintf(path, sizeof path, "%s/reference_scores/openai-community-gpt2.csv", b);
  char *text = slurp(path, NULL);
  if (!text) cr_skip_test("no reference scores");
  int checked = 0;
  double sum = 0, core_ref = NAN;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    char label[128];
    double acc, cen;
    if (sscanf(line, " %127[^ ,] , %lf , %lf", label, &acc, &cen) == 3) {
      for (int i = 0; i < c.n; i++)
        if (!strcmp(c.tasks[i].label, label)) {
          // the reference rounds to 6 digits; nanochat's formula on its accuracy
          cr_assert_float_eq(nc_core_centered(acc, c.tasks[i].baseline), cen, 2e-6, "%s", label);
          sum += cen;
          checked++;
        }
    } else if (sscanf(line, " CORE , , %lf", &cen) == 1)
      core_ref = cen;
  }
  cr_assert_eq(checked, 22);
  cr_assert_float_eq(sum / checked, core_ref, 2e-6);
  cr_assert_float_eq(nc_core_centered(0.25, 25), 0.0, 1e-15);
  cr_assert_float_eq(nc_core_centered(1.0, 62), 1.0, 1e-15);
  free(text);
  nc_core_config_free(&c);
}

// ---- a tiny model on slices of the bundle --------------------------------------------------

static uint64_t rng_next(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static void make_ckpt(const char *dir) {
  const char *xml = "<model version=\"1\" name=\"evtiny\"><dims depth=\"2\" aspect_ratio=\"16\" head_dim=\"16\" vocab_size=\"320\" "
                    "sequence_len=\"32\"/><attention rope_base=\"10000\" window_pattern=\"L\"/><output softcap=\"15\"/></model>";
  nc_model_spec s;
  cr_assert_null(nc_spec_parse(xml, strlen(xml), "spec", &s));
  nc_session *p = nc_session_new();
  cr_assert_null(nc_model_init_session(&s, 5, p));
  uint64_t x = 0x9e3779b9;
  for (int k = 0; k < nc_session_count(p); k++) {
    nc_tensor *t = (nc_tensor *)nc_session_get(p, nc_session_name_at(p, k));
    float *d = t->data;
    for (int64_t i = 0; i < nc_tensor_numel(t); i++)
      if (d[i] == 0) d[i] = (float)((double)(rng_next(&x) % 2001) / 1000.0 - 1.0) * 0.3f;
  }
  cr_assert_null(nc_model_ckpt_save(dir, 0, &s, p, NULL, NULL));
  nc_session_free(p);
  static const char *const merges[] = {"he", "th", "the", "in", "an", "er", " t", " a"};
  nc_tok *t = nc_tok_test_small(merges, 8);
  char tp[600];
  snprintf(tp, sizeof tp, "%s/tokenizer.tiktoken", dir);
  cr_assert_null(nc_tok_save(t, tp));
  nc_tok_free(t);
}

Test(eval_model, tiny_model_on_bundle_slices, .timeout = 300) {
  char b[4096];
  if (!core_bundle(b, sizeof b)) cr_skip_test("no eval bundle under NC_SHARED_DIR");
  char dir[] = "/tmp/nc_evm_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  make_ckpt(dir);
  nc_device dev;
  cr_assert_null(nc_device_parse("interp", &dev));
  nc_evalfwd *f;
  nc_status st = nc_evalfwd_open(dir, -1, NULL, &dev, &f);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_core_opts o = {.bundle = b, .tasks = "copa,winograd,lambada_openai,bigbench_operators,no_such_file_task", .max_per_task = 11,
                    .batch = 8, .batch_tokens = 4096, .max_len = 96};
  nc_core_result *r;
  int n;
  double core;
  // an unknown label is an error naming it
  expect_err(nc_core_run(f, &o, &r, &n, &core), "no task 'no_such_file_task'");
  o.tasks = NULL;  // every task of core.yaml: those whose file is present run (11 examples each)
  st = nc_core_run(f, &o, &r, &n, &core);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_core_config cfg;
  cr_assert_null(nc_core_config_load(b, &cfg));
  cr_assert_eq(n, cfg.n);
  double sum = 0;
  int ran = 0;
  for (int i = 0; i < n; i++) {
    char path[4400];
    snprintf(path, sizeof path, "%s/eval_data/%s.gz", b, cfg.tasks[i].uri);
    cr_assert_str_eq(r[i].label, cfg.tasks[i].label);
    cr_assert_eq(r[i].skipped, access(path, R_OK) != 0, "%s: %s", r[i].label, r[i].note);
    if (r[i].skipped) continue;
    cr_assert_eq(r[i].n, 11, "%s", r[i].label);
    cr_assert(r[i].acc >= 0 && r[i].acc <= 1);
    cr_assert_float_eq(r[i].centered, nc_core_centered(r[i].acc, r[i].baseline), 1e-12);
    sum += r[i].centered;
    ran++;
  }
  cr_assert_geq(ran, 4);
  cr_assert_float_eq(core, sum / ran, 1e-12);
  nc_core_config_free(&cfg);
  free(r);
  o.tasks = "copa,winograd,lambada_openai,bigbench_operators";
  cr_assert_null(nc_core_run(f, &o, &r, &n, &core));
  cr_assert_eq(n, 4);
  cr_assert_float_eq(r[0].baseline, 50.0, 1e-12);  // copa
  cr_assert_str_eq(r[1].label, "lambada_openai");
  cr_assert_eq(r[1].type, NC_CORE_LM);
  cr_assert_eq(r[1].correct, 0);  // a random model cannot produce the exact continuations
  // batching does not change results: one sequence per forward pass
  nc_core_opts o1 = o;
  o1.batch = 1;
  nc_core_result *r1;
  int n1;
  double core1;
  cr_assert_null(nc_core_run(f, &o1, &r1, &n1, &core1));
  for (int i = 0; i < n; i++) cr_assert_eq(r1[i].correct, r[i].correct, "%s", r[i].label);
  free(r1);
  free(r);
  nc_evalfwd_free(f);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

// ---- bits per byte against the graph's own cross-entropy --------------------------------------

#include <jansson.h>
#include <sys/wait.h>

#include "models/gpt.h"
#include "runtime/session.h"

Test(eval_model, bpb_matches_loss_graph, .timeout = 120) {
  char dir[] = "/tmp/nc_evb_XXXXXX", txt[600];
  cr_assert_not_null(mkdtemp(dir));
  make_ckpt(dir);
  snprintf(txt, sizeof txt, "%s/val.txt", dir);
  FILE *fp = fopen(txt, "w");
  fputs("the cat sat on the mat and then the hat\n\nin the beginning there was an answer\n\n"
        "caf\xc3\xa9 na\xc3\xafve \xe2\x82\xac 42 then the other thing happened again and again\n", fp);
  fclose(fp);
  nc_device dev;
  cr_assert_null(nc_device_parse("interp", &dev));
  nc_evalfwd *f;
  cr_assert_null(nc_evalfwd_open(dir, -1, NULL, &dev, &f));
  const char *files[1] = {txt};
  double bpb;
  int64_t ntok;
  nc_status st = nc_eval_bpb(f, files, 1, 64, 2, false, &bpb, &ntok);
  cr_assert_null(st, "%s", nc_status_msg(st));
  cr_assert_eq(ntok, 64);  // 2 rows of T=32
  // oracle: the same rows through the loss graph (mean CE, ignore -1)
  const nc_tok *tok = nc_evalfwd_tok(f);
  nc_ids s = {0};
  // plain text documents are paragraphs up to and including their blank lines
  const char *docs[3] = {"the cat sat on the mat and then the hat\n\n", "in the beginning there was an answer\n\n",
                         "caf\xc3\xa9 na\xc3\xafve \xe2\x82\xac 42 then the other thing happened again and again\n"};
  nc_tok_encode_opts eo = {NC_TOK_SPECIAL_ORDINARY, 1};
  for (int i = 0; i < 3; i++) {
    nc_ids_push(&s, nc_tok_bos_id(tok));
    nc_tok_encode(tok, docs[i], strlen(docs[i]), &eo, &s);
  }
  cr_assert_geq(s.len, 66u);
  int32_t tb[512];
  nc_tok_token_bytes(tok, tb);
  nc_model_spec spec;
  nc_session *sess = nc_session_new();
  cr_assert_null(nc_model_ckpt_load(dir, -1, &spec, sess, NULL, NULL));
  nc_gpt_opts go = {.with_loss = true};
  nc_graph *g;
  cr_assert_null(nc_gpt_build(&spec, &go, &g));
  double nats = 0, bytes = 0;
  for (int r = 0; r < 2; r++) {
    int64_t shape[2] = {1, 32};
    nc_tensor t, y;
    nc_tensor_alloc(&t, NC_I32, 2, shape);
    nc_tensor_alloc(&y, NC_I32, 2, shape);
    int cnt = 0;
    for (int p = 0; p < 32; p++) {
      ((int32_t *)t.data)[p] = s.data[r * 33 + p];
      int32_t tgt = s.data[r * 33 + p + 1];
      ((int32_t *)y.data)[p] = tb[tgt] > 0 ? tgt : -1;
      if (tb[tgt] > 0) cnt++, bytes += tb[tgt];
    }
    nc_session_put(sess, "tokens", &t);
    nc_session_put(sess, "targets", &y);
    cr_assert_null(nc_session_run(sess, g));
    nats += *(float *)nc_session_get(sess, "loss")->data * cnt;
  }
  double want = nats / (log(2.0) * bytes);
  cr_assert_float_eq(bpb, want, 1e-4 * want, "bpb %.6f, oracle %.6f", bpb, want);
  nc_graph_free(g);
  nc_session_free(sess);
  nc_ids_free(&s);
  // bad input: a file with too little text names the problem
  fp = fopen(txt, "w");
  fputs("hi\n", fp);
  fclose(fp);
  nc_status e = nc_eval_bpb(f, files, 1, 64, 2, false, &bpb, &ntok);
  cr_assert_not_null(e);
  cr_assert(strstr(nc_status_msg(e), "fewer than one row"), "%s", nc_status_msg(e));
  nc_status_free(e);
  nc_evalfwd_free(f);
  // the command: CSV + JSON summary
  const char *b = getenv("NC_BUILD_DIR");
  char bundle[4096], cmd[16384], bin[4096];
  snprintf(bin, sizeof bin, "%s/cli/nanochat", b && *b ? b : ".");
  if (core_bundle(bundle, sizeof bundle) && access(bin, X_OK) == 0) {  // the command (when built)
    fp = fopen(txt, "w");
    for (int i = 0; i < 20; i++) fputs("the quick brown fox jumps over the lazy dog again and again\n\n", fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd,
             "%s eval base --ckpt %s --bundle %s --tasks copa,winograd --max-per-task 4 --val %s --bpb-tokens 64 "
             "--device interp >/dev/null 2>&1",
             bin, dir, bundle, txt);
    int rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "%s", cmd);
    char jp[700];
    snprintf(jp, sizeof jp, "%s/eval_base.json", dir);
    json_t *j = json_load_file(jp, 0, NULL);
    cr_assert_not_null(j);
    double core = json_real_value(json_object_get(j, "core"));
    cr_assert(json_is_real(json_object_get(j, "bpb")));
    json_t *copa = json_object_get(json_object_get(j, "tasks"), "copa");
    json_t *wino = json_object_get(json_object_get(j, "tasks"), "winograd");
    cr_assert_eq(json_integer_value(json_object_get(copa, "n")), 4);
    double c1 = json_real_value(json_object_get(copa, "centered")), c2 = json_real_value(json_object_get(wino, "centered"));
    cr_assert_float_eq(core, (c1 + c2) / 2, 1e-12);
    cr_assert_float_eq(c1, nc_core_centered(json_real_value(json_object_get(copa, "accuracy")), 50), 1e-12);
    json_decref(j);
    snprintf(jp, sizeof jp, "%s/eval_base.csv", dir);
    cr_assert_eq(access(jp, R_OK), 0);
  }
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

// ---- prompts against nanochat's Jinja templates (tests/fixtures/eval/core_prompts.json) -------

Test(eval_render, matches_jinja_fixture) {
  char b[4096], path[4200];
  if (!core_bundle(b, sizeof b)) cr_skip_test("no eval bundle under NC_SHARED_DIR");
  snprintf(path, sizeof path, "%s/tests/fixtures/eval/core_prompts.json", src_dir());
  json_error_t je;
  json_t *cases = json_load_file(path, 0, &je);
  cr_assert(json_is_array(cases), "%s: %s", path, je.text);
  cr_assert_geq(json_array_size(cases), 12u);
  for (size_t c = 0; c < json_array_size(cases); c++) {
    json_t *o = json_array_get(cases, c);
    nc_core_task t = {0};
    snprintf(t.label, sizeof t.label, "%s", json_string_value(json_object_get(o, "label")));
    snprintf(t.delim, sizeof t.delim, "%s", json_string_value(json_object_get(o, "delim")));
    t.num_fewshot = (int)json_integer_value(json_object_get(o, "fewshot"));
    const char *ty = json_string_value(json_object_get(o, "type"));
    t.type = !strcmp(ty, "multiple_choice") ? NC_CORE_MC : !strcmp(ty, "schema") ? NC_CORE_SCHEMA : NC_CORE_LM;
    snprintf(path, sizeof path, "%s/eval_data/%s.gz", b, json_string_value(json_object_get(o, "uri")));
    nc_core_data d;
    nc_status st = nc_core_data_load(path, t.type, &d);
    cr_assert_null(st, "%s", nc_status_msg(st));
    cr_assert_null(nc_core_data_shuffle(&d, json_integer_value(json_object_get(o, "max"))));
    nc_buf *p;
    int n;
    int64_t idx = json_integer_value(json_object_get(o, "idx"));
    cr_assert_null(nc_core_render(&t, &d, idx, &p, &n));
    json_t *want = json_object_get(o, "prompts");
    cr_assert_eq((size_t)n, json_array_size(want), "%s idx %lld", t.label, (long long)idx);
    for (int i = 0; i < n; i++)
      cr_assert_str_eq(p[i].data, json_string_value(json_array_get(want, (size_t)i)), "%s idx %lld prompt %d", t.label, (long long)idx, i);
    for (int i = 0; i < n; i++) nc_buf_free(&p[i]);
    free(p);
    nc_core_data_free(&d);
  }
  json_decref(cases);
}
