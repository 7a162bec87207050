// Synthetic tasks, GSM8K and the reward (data/tasks.h), and the default
// corpus builder (data/corpus.h) on small fixture sources.
//
// Answers are checked independently: letter counts recounted from the word,
// arithmetic re-evaluated by a separate recursive-descent evaluator,
// GSM8K parts compared with hand-written expectations.
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "data/corpus.h"
#include "data/loader.h"
#include "data/tasks.h"
#include "tests/support/tok_util.h"

static char g_dir[512];
static void mk_dir(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/nc_test_tasks_XXXXXX");
  cr_assert(mkdtemp(g_dir));
}
static void rm_dir(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  (void)!system(cmd);
}
TestSuite(data_tasks, .init = mk_dir, .fini = rm_dir);

static const char *path_of(const char *name) {
  static char p[8][700];
  static int k;
  char *r = p[k++ % 8];
  snprintf(r, 700, "%s/%s", g_dir, name);
  return r;
}

static const char *put(const char *name, const char *s) {
  const char *p = path_of(name);
  FILE *f = fopen(p, "wb");
  cr_assert(f);
  fputs(s, f);
  fclose(f);
  return p;
}

static nc_wordlist test_words(void) {
  const char *p = put("words.txt", "apple\nBanana\nstrawberry\nit's\na\nmississippi\nzz\r\nbookkeeper\nhello\n"
                                   "caf\xc3\xa9\nrhythm\n");
  nc_wordlist w;
  nc_status st = nc_wordlist_load(p, &w);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  return w;
}

Test(data_tasks, wordlist_filter) {
  nc_wordlist w = test_words();
  const char *want[] = {"apple", "strawberry", "mississippi", "zz", "bookkeeper", "hello", "rhythm"};
  cr_assert_eq(w.n, 7);
  for (int i = 0; i < 7; i++) cr_assert_str_eq(w.words[i], want[i]);
  nc_wordlist_free(&w);
  nc_status st = nc_wordlist_load(put("none.txt", "A\nB's\n"), &w);
  cr_assert(st && strstr(nc_status_msg(st), "none.txt: no usable words"));
  nc_status_free(st);
  st = nc_wordlist_load(path_of("absent.txt"), &w);
  cr_assert(st && strstr(nc_status_msg(st), "absent.txt"));
  nc_status_free(st);
}

// Parses one generated line and returns the assistant parts as a JSON array
// (a string content becomes one text part). The caller decrefs root.
static json_t *assistant_parts(const char *line, json_t **root, const char **user) {
  *root = json_loads(line, 0, NULL);
  cr_assert(*root, "bad JSON: %s", line);
  json_t *msgs = json_object_get(*root, "messages");
  cr_assert(json_is_array(msgs) && json_array_size(msgs) >= 2);
  *user = json_string_value(json_object_get(json_array_get(msgs, 0), "content"));
  cr_assert(*user);
  json_t *c = json_object_get(json_array_get(msgs, json_array_size(msgs) - 1), "content");
  if (json_is_string(c)) {
    json_t *a = json_pack("[{ssss}]", "type", "text", "text", json_string_value(c));
    json_object_set_new(*root, "_parts", a);
    return a;
  }
  return c;
}

static void gen(nc_task_kind k, const nc_wordlist *w, uint64_t seed, int64_t i, nc_buf *b) {
  b->len = 0;
  nc_status st = nc_task_generate(k, w, seed, i, b);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
}

Test(data_tasks, spelling_bee_answers_are_correct) {
  nc_wordlist w = test_words();
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  nc_buf b = {0};
  int with_letter_absent = 0, lowered = 0;
  for (int64_t i = 0; i < 400; i++) {
    gen(NC_TASK_SPELLING_BEE, &w, 42, i, &b);
    json_t *root;
    const char *user;
    json_t *parts = assistant_parts(b.data, &root, &user);
    cr_assert_eq(json_array_size(parts), 5);
    const char *py = json_string_value(json_object_get(json_array_get(parts, 2), "text"));
    const char *out = json_string_value(json_object_get(json_array_get(parts, 3), "text"));
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(parts, 2), "type")), "python");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(parts, 3), "type")), "python_output");
    // python part: 'word'.count('l')
    char word[64], letter;
    cr_assert(sscanf(py, "'%63[a-z]'.count('%c')", word, &letter) == 2, "python part '%s'", py);
    int count = 0;
    for (char *p = word; *p; p++) count += *p == letter;
    with_letter_absent += count == 0;
    char num[16];
    snprintf(num, sizeof num, "%d", count);
    cr_assert_str_eq(out, num, "%s count %c", word, letter);
    // Spelled out and counted with a running count in the first text part.
    const char *manual = json_string_value(json_object_get(json_array_get(parts, 0), "text"));
    char spelled[256];
    size_t k = (size_t)snprintf(spelled, sizeof spelled, "%s:", word);
    for (size_t j = 0; word[j]; j++) k += (size_t)snprintf(spelled + k, sizeof spelled - k, "%s%c", j ? "," : "", word[j]);
    cr_assert(strstr(manual, spelled), "no '%s' in the manual part", spelled);
    char gives[64];
    snprintf(gives, sizeof gives, "This gives us %d.", count);
    cr_assert(strstr(manual, gives));
    int hits = 0;
    for (const char *p = manual; (p = strstr(p, " hit! count=")); p++) cr_assert_eq(atoi(p + 12), ++hits);
    cr_assert_eq(hits, count);
    // The user asks about this word and letter; the final answer is "#### n".
    cr_assert(strstr(user, word), "user '%s' lacks %s", user, word);
    lowered += user[0] >= 'a' && user[0] <= 'z';
    const char *last = json_string_value(json_object_get(json_array_get(parts, 4), "text"));
    char ans[32];
    cr_assert(nc_task_extract_answer(last, strlen(last), ans, sizeof ans));
    cr_assert_str_eq(ans, num);
    cr_assert(nc_task_conversation_answer(b.data, b.len, ans, sizeof ans) && !strcmp(ans, num));
    // Renders (well-formed for the chat tokenizer).
    nc_tok_rendered r = {0};
    nc_status st = nc_tok_render_conversation(tok, b.data, b.len, 4096, &r);
    cr_assert(st == NC_OK, "%s", nc_status_msg(st));
    nc_tok_rendered_free(&r);
    json_decref(root);
  }
  cr_assert(with_letter_absent > 0 && with_letter_absent < 120, "~10%% ask for an absent letter: %d",
            with_letter_absent);
  cr_assert(lowered > 0);
  nc_buf_free(&b);
  nc_tok_free(tok);
  nc_wordlist_free(&w);
}

Test(data_tasks, simple_spelling) {
  nc_wordlist w = test_words();
  nc_buf b = {0};
  for (int64_t i = 0; i < 50; i++) {
    gen(NC_TASK_SIMPLE_SPELLING, &w, 1, i, &b);
    json_t *root;
    const char *user;
    json_t *parts = assistant_parts(b.data, &root, &user);
    char word[64];
    cr_assert(sscanf(user, "Spell the word: %63s", word) == 1);
    char want[256];
    size_t k = (size_t)snprintf(want, sizeof want, "%s:", word);
    for (size_t j = 0; word[j]; j++) k += (size_t)snprintf(want + k, sizeof want - k, "%s%c", j ? "," : "", word[j]);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(parts, 0), "text")), want);
    json_decref(root);
  }
  nc_buf_free(&b);
  nc_wordlist_free(&w);
  // The spelling tasks need words.
  nc_status st = nc_task_generate(NC_TASK_SIMPLE_SPELLING, NULL, 1, 0, &b);
  cr_assert(st && strstr(nc_status_msg(st), "needs a word list"));
  nc_status_free(st);
}

// Independent evaluator: expr := term (('+'|'-') term)*; term := atom ('*' atom)*;
// atom := int | '(' expr ')'.
static long long ev_expr(const char **s);
static long long ev_atom(const char **s) {
  if (**s == '(') {
    (*s)++;
    long long v = ev_expr(s);
    cr_assert_eq(**s, ')');
    (*s)++;
    return v;
  }
  char *e;
  long long v = strtoll(*s, &e, 10);
  cr_assert(e != *s, "number expected at '%s'", *s);
  *s = e;
  return v;
}
static long long ev_term(const char **s) {
  long long v = ev_atom(s);
  while (**s == '*') {
    (*s)++;
    v *= ev_atom(s);
  }
  return v;
}
static long long ev_expr(const char **s) {
  long long v = ev_term(s);
  while (**s == '+' || **s == '-') {
    char op = *(*s)++;
    long long r = ev_term(s);
    v = op == '+' ? v + r : v - r;
  }
  return v;
}

Test(data_tasks, arithmetic_answers_are_correct) {
  nc_buf b = {0};
  int parens = 0, negative = 0;
  for (int64_t i = 0; i < 500; i++) {
    gen(NC_TASK_ARITHMETIC, NULL, 9, i, &b);
    json_t *root;
    const char *user;
    json_t *parts = assistant_parts(b.data, &root, &user);
    cr_assert_eq(json_array_size(parts), 4);
    const char *py = json_string_value(json_object_get(json_array_get(parts, 1), "text"));
    const char *out = json_string_value(json_object_get(json_array_get(parts, 2), "text"));
    const char *p = py;
    long long v = ev_expr(&p);
    cr_assert_eq(*p, 0, "trailing '%s' in '%s'", p, py);
    char num[32];
    snprintf(num, sizeof num, "%lld", v);
    cr_assert_str_eq(out, num, "%s", py);
    char ans[32];
    cr_assert(nc_task_conversation_answer(b.data, b.len, ans, sizeof ans));
    cr_assert_str_eq(ans, num);
    // The question holds the same expression (with spaces).
    char q[256];
    size_t k = 0;
    for (const char *u = user; *u && k + 1 < sizeof q; u++)
      if (*u != ' ') q[k++] = *u;
    q[k] = 0;
    cr_assert(strstr(q, py), "question '%s' lacks '%s'", user, py);
    parens += strchr(py, '(') != NULL;
    negative += v < 0;
    json_decref(root);
  }
  cr_assert(parens > 20 && negative > 20, "variety: %d with parentheses, %d negative", parens, negative);
  nc_buf_free(&b);
}

Test(data_tasks, identity_and_determinism) {
  nc_buf b = {0}, c = {0};
  int distinct = 0;
  char seen[60][64];
  for (int64_t i = 0; i < 60; i++) {
    gen(NC_TASK_IDENTITY, NULL, 5, i, &b);
    json_t *root = json_loads(b.data, 0, NULL);
    json_t *msgs = json_object_get(root, "messages");
    size_t n = json_array_size(msgs);
    cr_assert(n >= 2 && n <= 6 && n % 2 == 0);
    bool names = false;
    for (size_t m = 0; m < n; m++) {
      const char *role = json_string_value(json_object_get(json_array_get(msgs, m), "role"));
      cr_assert_str_eq(role, m % 2 ? "assistant" : "user");
      const char *t = json_string_value(json_object_get(json_array_get(msgs, m), "content"));
      cr_assert(t && *t);
      names |= m % 2 && strstr(t, "nanochat") != NULL;
    }
    cr_assert(names, "an identity answer names nanochat: %s", b.data);
    snprintf(seen[i], 64, "%.63s", b.data + 30);
    bool dup = false;
    for (int64_t j = 0; j < i; j++) dup |= !strcmp(seen[j], seen[i]);
    distinct += !dup;
    json_decref(root);
  }
  cr_assert(distinct > 20, "varied: %d distinct openings of 60", distinct);
  // Conversation i depends only on (seed, i): same bytes again, other seed differs.
  gen(NC_TASK_ARITHMETIC, NULL, 77, 12, &b);
  gen(NC_TASK_ARITHMETIC, NULL, 77, 12, &c);
  cr_assert_str_eq(b.data, c.data);
  gen(NC_TASK_ARITHMETIC, NULL, 78, 12, &c);
  cr_assert(strcmp(b.data, c.data));
  // Files: n=5 is the prefix of n=10; gzip output reads back the same.
  nc_wordlist w = test_words();
  const char *f5 = path_of("s5.jsonl"), *f10 = path_of("s10.jsonl.gz");
  cr_assert(nc_task_write(NC_TASK_SPELLING_BEE, &w, 3, 5, f5) == NC_OK);
  cr_assert(nc_task_write(NC_TASK_SPELLING_BEE, &w, 3, 10, f10) == NC_OK);
  char a5[65536], a10[65536];
  FILE *f = fopen(f5, "rb");
  size_t l5 = fread(a5, 1, sizeof a5, f);
  fclose(f);
  gzFile g = gzopen(f10, "rb");
  int l10 = gzread(g, a10, sizeof a10);
  gzclose(g);
  cr_assert(l10 > (int)l5 && !memcmp(a5, a10, l5));
  int lines = 0;
  for (int i = 0; i < l10; i++) lines += a10[i] == '\n';
  cr_assert_eq(lines, 10);
  nc_wordlist_free(&w);
  nc_task_kind k;
  nc_status st = nc_task_parse("spelling", &k);
  cr_assert(st && strstr(nc_status_msg(st), "unknown task 'spelling'"));
  nc_status_free(st);
  cr_assert(nc_task_parse("identity", &k) == NC_OK && k == NC_TASK_IDENTITY);
  nc_buf_free(&b);
  nc_buf_free(&c);
}

Test(data_tasks, reward) {
  char out[64];
  cr_assert(nc_task_extract_answer("so #### 1,234.5 ok", 18, out, sizeof out) && !strcmp(out, "1234.5"));
  cr_assert(nc_task_extract_answer("#### -7", 7, out, sizeof out) && !strcmp(out, "-7"));
  cr_assert(nc_task_extract_answer("#### x then #### 12", 19, out, sizeof out) && !strcmp(out, "12"));
  cr_assert(!nc_task_extract_answer("the answer is 12", 16, out, sizeof out));
  cr_assert(!nc_task_extract_answer("####12", 6, out, sizeof out));
  cr_assert(!nc_task_extract_answer("#### -", 6, out, sizeof out));
  const char *c = "We get 18.\n#### 18";
  cr_assert_float_eq(nc_task_reward(c, strlen(c), "18"), 1.0, 0);
  cr_assert_float_eq(nc_task_reward(c, strlen(c), "blah\n#### 18"), 1.0, 0);
  cr_assert_float_eq(nc_task_reward(c, strlen(c), "1,8"), 1.0, 0);  // commas stripped on both sides
  cr_assert_float_eq(nc_task_reward(c, strlen(c), "19"), 0.0, 0);
  cr_assert_float_eq(nc_task_reward("18", 2, "18"), 0.0, 0);  // no "####": no reward
  cr_assert_float_eq(nc_task_reward("#### 18.0", 9, "18"), 0.0, 0);  // string compare, as nanochat
  cr_assert_float_eq(nc_task_reward("#### 70,000", 11, "70000"), 1.0, 0);
}

Test(data_tasks, gsm8k_reader_and_conversation) {
  const char *p = put("g.jsonl",
                      "{\"question\": \"Janet has 16 eggs, eats 3, bakes 4. Sells at $2. How much?\", \"answer\": "
                      "\"Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\\nShe makes 9 * 2 = $<<9*2=18>>18 every "
                      "day.\\n#### 18\"}\n\n{\"question\":\"q2\",\"answer\":\"a <<b> c <<5>> x\\n#### 1,000\"}\n");
  nc_gsm8k g;
  nc_status st = nc_gsm8k_load(p, false, &g);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  cr_assert_eq(g.n, 2);
  cr_assert_str_eq(g.items[0].final, "18");
  cr_assert_str_eq(g.items[1].final, "1000");
  nc_buf b = {0};
  cr_assert(nc_gsm8k_conversation(&g.items[0], &b) == NC_OK);
  const char *want =
      "{\"messages\":[{\"role\":\"user\",\"content\":\"Janet has 16 eggs, eats 3, bakes 4. Sells at $2. How much?\"},"
      "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Janet sells 16 - 3 - 4 = \"},{\"type\":"
      "\"python\",\"text\":\"16-3-4\"},{\"type\":\"python_output\",\"text\":\"9\"},{\"type\":\"text\",\"text\":\"9 "
      "duck eggs a day.\\nShe makes 9 * 2 = $\"},{\"type\":\"python\",\"text\":\"9*2\"},{\"type\":\"python_output\","
      "\"text\":\"18\"},{\"type\":\"text\",\"text\":\"18 every day.\\n#### 18\"}]}]}";
  cr_assert_str_eq(b.data, want);
  // "<<5>>" without '=': python "5", empty output; "<<b>" (no ">>") stays text.
  b.len = 0;
  cr_assert(nc_gsm8k_conversation(&g.items[1], &b) == NC_OK);
  cr_assert(strstr(b.data, "{\"type\":\"text\",\"text\":\"a <<b> c \"},{\"type\":\"python\",\"text\":\"5\"},"
                           "{\"type\":\"python_output\",\"text\":\"\"}"),
            "%s", b.data);
  char ans[32];
  cr_assert(nc_task_conversation_answer(b.data, b.len, ans, sizeof ans) && !strcmp(ans, "1000"));
  const char *out = path_of("conv.jsonl.gz");
  cr_assert(nc_gsm8k_write_conversations(&g, out) == NC_OK);
  nc_buf_free(&b);
  nc_gsm8k_free(&g);
  // Malformed lines: named, or skipped.
  const char *bad = put("bad.jsonl", "{\"question\":\"q\",\"answer\":\"#### 1\"}\n{\"question\":\"q\"}\n"
                                     "{\"question\":\"q\",\"answer\":\"no final\"}\nnot json\n");
  st = nc_gsm8k_load(bad, false, &g);
  cr_assert(st && strstr(nc_status_msg(st), "bad.jsonl:2: needs string fields"), "%s", nc_status_msg(st));
  nc_status_free(st);
  cr_assert(nc_gsm8k_load(bad, true, &g) == NC_OK);
  cr_assert_eq(g.n, 1);
  cr_assert_eq(g.skipped, 3);
  nc_gsm8k_free(&g);
  const char *bad3 = put("bad3.jsonl", "{\"question\":\"q\",\"answer\":\"no final\"}\n");
  st = nc_gsm8k_load(bad3, false, &g);
  cr_assert(st && strstr(nc_status_msg(st), "bad3.jsonl:1: the answer has no final \"#### N\""), "%s",
            nc_status_msg(st));
  nc_status_free(st);
}

Test(data_tasks, gsm8k_real_files) {
  const char *shared = getenv("NC_SHARED_DIR");
  char p[1024];
  snprintf(p, sizeof p, "%s/data/eval/gsm8k/test.jsonl.gz", shared ? shared : "/nonexistent");
  struct stat sb;
  if (!shared || stat(p, &sb) != 0) cr_skip_test("no %s (shared data absent)", p);
  nc_gsm8k g;
  nc_status st = nc_gsm8k_load(p, false, &g);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  cr_assert_eq(g.n, 1319);
  cr_assert_eq(g.skipped, 0);
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  nc_buf b = {0};
  for (int64_t i = 0; i < g.n; i++) {
    b.len = 0;
    cr_assert(nc_gsm8k_conversation(&g.items[i], &b) == NC_OK);
    char ans[64];
    cr_assert(nc_task_conversation_answer(b.data, b.len, ans, sizeof ans), "item %lld", (long long)i);
    cr_assert_str_eq(ans, g.items[i].final);
    cr_assert_float_eq(nc_task_reward(g.items[i].answer, strlen(g.items[i].answer), g.items[i].final), 1.0, 0);
    if (i < 100) {
      nc_tok_rendered r = {0};
      cr_assert(nc_tok_render_conversation(tok, b.data, b.len, 1 << 20, &r) == NC_OK);
      nc_tok_rendered_free(&r);
    }
  }
  nc_buf_free(&b);
  nc_tok_free(tok);
  nc_gsm8k_free(&g);
}

// ---- corpus ----------------------------------------------------------------

static void put_gz(const char *path, const char *s) {
  gzFile g = gzopen(path, "wb");
  cr_assert(g);
  gzwrite(g, s, (unsigned)strlen(s));
  gzclose(g);
}

static void b64(uint64_t v, char *out) {
  const char *al = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char tmp[16];
  int n = 0;
  do tmp[n++] = al[v % 64], v /= 64;
  while (v);
  for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  out[n] = 0;
}

// A dictd pair: entries concatenated, index "word TAB off TAB len".
static void put_dict(const char *dir, const char *name, const char *const *words, const char *const *entries,
                     int n) {
  char body[8192] = "", index[4096] = "";
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    char o[16], l[16];
    b64(off, o);
    b64(strlen(entries[i]), l);
    snprintf(index + strlen(index), sizeof index - strlen(index), "%s\t%s\t%s\n", words[i], o, l);
    strcat(body, entries[i]);
    off += strlen(entries[i]);
  }
  char p[1024];
  snprintf(p, sizeof p, "%s/%s.dict.dz", dir, name);
  put_gz(p, body);
  snprintf(p, sizeof p, "%s/%s.index", dir, name);
  FILE *f = fopen(p, "wb");
  fputs(index, f);
  fclose(f);
}

static void build_fixture_sources(char *dictd, char *fort, char *bible) {
  snprintf(dictd, 700, "%s/dictd", g_dir);
  snprintf(fort, 700, "%s/fortunes", g_dir);
  snprintf(bible, 700, "%s/bible.sh", g_dir);
  mkdir(dictd, 0777);
  mkdir(fort, 0777);
  const char *gw[] = {"00-database-info", "Abacinate"};
  const char *ge[] = {"This is the GCIDE header.\n",
                      "Abacinate \\A*bac\"i*nate\\ ([.a]*b[a^]s\"[i^]*n[=a]t), v. t. [LL.\n   abacinatus, p. p. of "
                      "abacinare.]\n   To blind by a red-hot metal plate held before the eyes. [R.]\n   [1913 Webster]\n"};
  put_dict(dictd, "gcide", gw, ge, 2);
  const char *jw[] = {"hack", "kluge"};
  const char *je[] = {"hack\n\n    1. n. Originally, a quick job that produces what is needed, but not well.\n",
                      "kluge\n\n    A clever programming trick intended to solve a particular nasty case.\n"};
  put_dict(dictd, "jargon", jw, je, 2);
  char p[1024];
  snprintf(p, sizeof p, "%s/computers", fort);
  FILE *f = fopen(p, "wb");
  fputs("There are two ways to write error-free programs.\n%\nThe only way to learn a new programming language is by "
        "writing programs in it.\n%\nshort\n%\n",
        f);
  fclose(f);
  snprintf(p, sizeof p, "%s/wisdom", fort);
  f = fopen(p, "wb");
  fputs("There are two ways to write error-free programs.\n%\nA bad \x08 overstruck fortune here, long enough.\n%\n"
        "Tab\tseparated and long enough text.\n",
        f);
  fclose(f);
  snprintf(p, sizeof p, "%s/wisdom.dat", fort);
  put(p + strlen(g_dir) + 1, "binary");
  f = fopen(bible, "wb");
  fputs("#!/bin/sh\nprintf '\\nGenesis 1\\n\\n  1 In the beginning God created the heaven and the earth.\\n  2 And "
        "the earth was without form.\\n\\nGenesis 2\\n\\n  1 Thus the heavens and the earth were finished.\\n'\n",
        f);
  fclose(f);
  chmod(bible, 0755);
}

static char *read_gz(const char *path) {
  gzFile g = gzopen(path, "rb");
  cr_assert(g, "%s", path);
  static char buf[65536];
  int n = gzread(g, buf, sizeof buf - 1);
  gzclose(g);
  buf[n < 0 ? 0 : n] = 0;
  return strdup(buf);
}

Test(data_tasks, corpus_from_fixture_sources) {
  char dictd[700], fort[700], bible[700], out[700], out2[700];
  build_fixture_sources(dictd, fort, bible);
  snprintf(out, sizeof out, "%s/corpus", g_dir);
  snprintf(out2, sizeof out2, "%s/corpus2", g_dir);
  nc_corpus_opts o = {.out_dir = out, .dictd_dir = dictd, .fortunes_dir = fort, .bible_cmd = bible,
                      .shard_bytes = 150, .val_fraction = 0.2};
  nc_corpus_summary s;
  nc_status st = nc_corpus_build(&o, &s);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  // bible 2 chapters, gcide 1 (entry 0 of 16; the 00-database entry is not text),
  // jargon 2, fortunes 3 (a duplicate, a too-short one and an overstruck one dropped).
  cr_assert_eq(s.per_source_docs[0], 2);
  cr_assert_eq(s.per_source_docs[1], 1);
  cr_assert_eq(s.per_source_docs[2], 2);
  cr_assert_eq(s.per_source_docs[3], 3);
  cr_assert_eq(s.docs, 8);
  cr_assert_eq(s.val_docs, 2);
  // Read all shards back: the val shard is the last; texts are the cleaned documents.
  char all[65536] = "";
  int64_t docs = 0;
  for (int i = 0; i <= s.train_shards; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/shard_%05d.jsonl.gz", out, i);
    char *t = read_gz(p);
    for (char *q = t; *q; q++) docs += *q == '\n';
    strcat(all, t);
    free(t);
  }
  cr_assert_eq(docs, 8);
  cr_assert(strstr(all, "Genesis 1\\n\\n1 In the beginning God created the heaven and the earth.\\n2 And the earth"),
            "%s", all);
  cr_assert(strstr(all, "\"Abacinate, v. t. To blind by a red-hot metal plate held before the eyes.\""), "%s", all);
  cr_assert(strstr(all, "Tab    separated"));
  cr_assert(!strstr(all, "GCIDE header") && !strstr(all, "overstruck") && !strstr(all, "\"short"));
  char p[1024];
  snprintf(p, sizeof p, "%s/shard_%05lld.jsonl.gz", out, (long long)s.train_shards + 1);
  struct stat sb;
  cr_assert(stat(p, &sb) != 0, "no shard after the val shard");
  // Deterministic: the same bytes again.
  o.out_dir = out2;
  cr_assert(nc_corpus_build(&o, &s) == NC_OK);
  for (int i = 0; i <= s.train_shards; i++) {
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/shard_%05d.jsonl.gz", out, i);
    snprintf(b, sizeof b, "%s/shard_%05d.jsonl.gz", out2, i);
    char *x = read_gz(a), *y = read_gz(b);
    cr_assert_str_eq(x, y);
    free(x);
    free(y);
  }
  // The loader reads the shards.
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  const char *paths[1] = {p};
  snprintf(p, sizeof p, "%s/shard_00000.jsonl.gz", out);
  nc_loader *l;
  cr_assert(nc_loader_open(&(nc_loader_opts){.paths = paths, .npaths = 1, .tok = tok, .B = 2, .T = 32}, &l) == NC_OK);
  int32_t in[64], tg[64];
  st = nc_loader_next(l, in, tg);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  nc_loader_close(l);
  nc_tok_free(tok);
  // No source at all: an error naming the packages.
  nc_corpus_opts none = {.out_dir = out, .dictd_dir = "/nonexistent", .fortunes_dir = "/nonexistent",
                         .bible_cmd = "/nonexistent/bible"};
  st = nc_corpus_build(&none, &s);
  cr_assert(st && strstr(nc_status_msg(st), "no source could be read"), "%s", nc_status_msg(st));
  nc_status_free(st);
  // A broken index line is named.
  snprintf(p, sizeof p, "%s/jargon.index", dictd);
  FILE *f = fopen(p, "ab");
  fputs("broken line\n", f);
  fclose(f);
  o.out_dir = out;
  st = nc_corpus_build(&o, &s);
  cr_assert(st && strstr(nc_status_msg(st), "jargon.index:3: not a dictd index line"), "%s", nc_status_msg(st));
  nc_status_free(st);
}
