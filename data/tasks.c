// Synthetic tasks (SpellingBee, SimpleSpelling, calculator arithmetic,
// identity), the GSM8K reader and the "#### N" reward (data/tasks.h).
// vasprintf: _GNU_SOURCE comes from the build flags
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/sft_internal.h"
#include "data/tasks.h"

// ---- word list -------------------------------------------------------------

nc_status nc_wordlist_load(const char *path, nc_wordlist *out) {
  memset(out, 0, sizeof *out);
  if (!path) path = "/usr/share/dict/words";
  nc_buf b = {0};
  nc_status st = nc_data_read_all(path, &b);
  if (st) {
    nc_buf_free(&b);
    return st;
  }
  int64_t cap = 0;
  size_t pos = 0;
  while (!st && pos < b.len) {
    const char *p = b.data + pos;
    const char *nl = memchr(p, '\n', b.len - pos);
    size_t n = nl ? (size_t)(nl - p) : b.len - pos;
    pos += n + (nl ? 1 : 0);
    if (n && p[n - 1] == '\r') n--;
    if (n < 2 || n > 24) continue;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) ok = p[i] >= 'a' && p[i] <= 'z';
    if (!ok) continue;
    if (out->n == cap) {
      cap = cap ? cap * 2 : 4096;
      char **w = realloc(out->words, (size_t)cap * sizeof *w);
      if (!w) {
        st = nc_errorf(NC_E_NOMEM, "out of memory");
        break;
      }
      out->words = w;
    }
    out->words[out->n] = strndup(p, n);
    if (!out->words[out->n]) st = nc_errorf(NC_E_NOMEM, "out of memory");
    else out->n++;
  }
  nc_buf_free(&b);
  if (!st && out->n == 0)
    st = nc_errorf(NC_E_PARSE, "%s: no usable words (lines of 2-24 lowercase ASCII letters)", path);
  if (st) nc_wordlist_free(out);
  return st;
}

void nc_wordlist_free(nc_wordlist *w) {
  for (int64_t i = 0; i < w->n; i++) free(w->words[i]);
  free(w->words);
  memset(w, 0, sizeof *w);
}

// ---- generation helpers ----------------------------------------------------

static const char *const nc_task_names[NC_TASK_COUNT] = {"spellingbee", "simplespelling", "arithmetic", "identity"};

const char *nc_task_name(nc_task_kind k) { return k >= 0 && k < NC_TASK_COUNT ? nc_task_names[k] : "?"; }

nc_status nc_task_parse(const char *name, nc_task_kind *out) {
  for (int i = 0; i < NC_TASK_COUNT; i++)
    if (name && !strcmp(name, nc_task_names[i])) {
      *out = (nc_task_kind)i;
      return NC_OK;
    }
  return nc_errorf(NC_E_INVALID, "unknown task '%s' (spellingbee, simplespelling, arithmetic, identity)",
                   name ? name : "");
}

#define NC_PICK(rng, arr) (arr[nc_data_rand_below(rng, sizeof(arr) / sizeof(arr[0]))])

static json_t *nc_part(const char *type, const char *text) {
  return json_pack("{ssss}", "type", type, "text", text);
}
static json_t *nc_msg_s(const char *role, const char *content) {
  return json_pack("{ssss}", "role", role, "content", content);
}
static json_t *nc_msg_o(const char *role, json_t *content) {
  return json_pack("{ssso}", "role", role, "content", content);
}

static nc_status nc_emit(json_t *messages, nc_buf *out) {
  json_t *root = json_pack("{so}", "messages", messages);
  char *s = root ? json_dumps(root, JSON_COMPACT) : NULL;
  json_decref(root);
  if (!s) return nc_errorf(NC_E_NOMEM, "out of memory building a conversation");
  nc_buf_puts(out, s);
  free(s);
  return out->oom ? nc_errorf(NC_E_NOMEM, "out of memory") : NC_OK;
}

// printf into a malloc'd string
static char *nc_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *nc_fmt(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

// Replaces "{letter}" and "{word}" in tpl.
static void nc_fill(nc_buf *b, const char *tpl, const char *letter, const char *word) {
  for (const char *p = tpl; *p;) {
    if (!strncmp(p, "{letter}", 8)) {
      nc_buf_puts(b, letter);
      p += 8;
    } else if (!strncmp(p, "{word}", 6)) {
      nc_buf_puts(b, word);
      p += 6;
    } else {
      nc_buf_put(b, p, 1);
      p++;
    }
  }
}

// ---- SpellingBee / SimpleSpelling -----------------------------------------

static const char *const nc_bee_templates[] = {
    "How many {letter} are in the word {word}",
    "How many {letter} are in {word}",
    "Count the number of {letter} in {word}",
    "How many times does {letter} appear in {word}",
    "What's the count of {letter} in {word}",
    "In the word {word}, how many {letter} are there",
    "How many letter {letter} are in the word {word}",
    "Count how many {letter} appear in {word}",
    "Tell me the number of {letter} in {word}",
    "How many occurrences of {letter} are in {word}",
    "Find the count of {letter} in {word}",
    "Can you count the {letter} letters in {word}",
    "How many {letter}'s are in {word}",
    "¿Cuántas {letter} hay en la palabra {word}",
    "¿Cuántas veces aparece {letter} en {word}",
    "Combien de {letter} dans le mot {word}",
    "Wie viele {letter} sind im Wort {word}",
    "单词{word}中有多少个{letter}",
    "{word}という単語に{letter}はいくつありますか",
    "{word}에 {letter}가 몇 개 있나요",
};

static nc_status nc_gen_spelling_bee(const nc_wordlist *w, uint64_t *rng, nc_buf *out) {
  const char *word = w->words[nc_data_rand_below(rng, (uint64_t)w->n)];
  size_t wl = strlen(word);
  // nanochat: a letter of the word 90% of the time, else any letter.
  char letter = nc_data_rand_below(rng, 10) < 9 ? word[nc_data_rand_below(rng, wl)]
                                                : (char)('a' + nc_data_rand_below(rng, 26));
  int count = 0;
  for (size_t i = 0; i < wl; i++) count += word[i] == letter;
  const char *tpl = NC_PICK(rng, nc_bee_templates);
  bool lower = nc_data_rand_below(rng, 10) < 3;
  static const char *const quotes[] = {"", "'", "\""};
  const char *lq = NC_PICK(rng, quotes), *wq = NC_PICK(rng, quotes);
  char lw[8], ww[64];
  snprintf(lw, sizeof lw, "%s%c%s", lq, letter, lq);
  snprintf(ww, sizeof ww, "%s%s%s", wq, word, wq);
  nc_buf user = {0};
  nc_fill(&user, tpl, lw, ww);
  if (lower) {
    for (size_t i = 0; i < user.len; i++)
      if (user.data[i] >= 'A' && user.data[i] <= 'Z') user.data[i] = (char)(user.data[i] - 'A' + 'a');
  }
  if (nc_data_rand_below(rng, 2)) nc_buf_puts(&user, "?");
  // Assistant: spell, count with a running count, check with python.
  nc_buf t = {0};
  nc_buf_printf(&t, "We are asked to find the number '%c' in the word '%s'. Let me try a manual approach first.\n\n"
                    "First spell the word out:\n%s:", letter, word, word);
  for (size_t i = 0; i < wl; i++) nc_buf_printf(&t, "%s%c", i ? "," : "", word[i]);
  nc_buf_printf(&t, "\n\nThen count the occurrences of '%c':\n", letter);
  int run = 0;
  for (size_t i = 0; i < wl; i++) {
    if (word[i] == letter) nc_buf_printf(&t, "%zu:%c hit! count=%d\n", i + 1, word[i], ++run);
    else nc_buf_printf(&t, "%zu:%c\n", i + 1, word[i]);
  }
  nc_buf_printf(&t, "\nThis gives us %d.", run);
  char *expr = nc_fmt("'%s'.count('%c')", word, letter);
  char *cnt = nc_fmt("%d", count);
  char *tail = nc_fmt("\n\nBoth methods give the same answer %d!\n\n#### %d", count, count);
  json_t *parts = json_array();
  json_array_append_new(parts, nc_part("text", t.data));
  json_array_append_new(parts, nc_part("text", "\n\nLet me double check this using Python:\n\n"));
  json_array_append_new(parts, nc_part("python", expr));
  json_array_append_new(parts, nc_part("python_output", cnt));
  json_array_append_new(parts, nc_part("text", tail));
  json_t *msgs = json_array();
  json_array_append_new(msgs, nc_msg_s("user", user.data));
  json_array_append_new(msgs, nc_msg_o("assistant", parts));
  nc_status st = (user.oom || t.oom || !expr || !cnt || !tail) ? nc_errorf(NC_E_NOMEM, "out of memory") : NC_OK;
  if (!st) st = nc_emit(msgs, out);
  else json_decref(msgs);
  nc_buf_free(&user);
  nc_buf_free(&t);
  free(expr);
  free(cnt);
  free(tail);
  return st;
}

static nc_status nc_gen_simple_spelling(const nc_wordlist *w, uint64_t *rng, nc_buf *out) {
  const char *word = w->words[nc_data_rand_below(rng, (uint64_t)w->n)];
  nc_buf a = {0};
  nc_buf_printf(&a, "%s:", word);
  for (size_t i = 0; word[i]; i++) nc_buf_printf(&a, "%s%c", i ? "," : "", word[i]);
  char *q = nc_fmt("Spell the word: %s", word);
  json_t *msgs = json_array();
  json_array_append_new(msgs, nc_msg_s("user", q ? q : ""));
  json_array_append_new(msgs, nc_msg_s("assistant", a.data));
  nc_status st = (a.oom || !q) ? nc_errorf(NC_E_NOMEM, "out of memory") : NC_OK;
  if (!st) st = nc_emit(msgs, out);
  else json_decref(msgs);
  nc_buf_free(&a);
  free(q);
  return st;
}

// ---- arithmetic with the calculator ----------------------------------------

// A random expression over + - * with optional parentheses; its exact value.
// Grammar of what is produced: sum := term (('+'|'-') term)*, term := atom
// ('*' atom)*, atom := number | '(' sum ')'.
static void nc_arith_expr(uint64_t *rng, nc_buf *b, int64_t *val) {
  int nops = 1 + (int)nc_data_rand_below(rng, 3);  // 2..4 numbers
  int64_t nums[4];
  char ops[3];
  for (int i = 0; i <= nops; i++) nums[i] = 0;
  for (int i = 0; i < nops; i++) ops[i] = "+-*"[nc_data_rand_below(rng, 3)];
  for (int i = 0; i <= nops; i++) {
    bool mul = (i > 0 && ops[i - 1] == '*') || (i < nops && ops[i] == '*');
    nums[i] = mul ? 2 + (int64_t)nc_data_rand_below(rng, 98) : 1 + (int64_t)nc_data_rand_below(rng, 999);
  }
  // Optional parentheses around a + or - pair that is next to a '*'.
  int paren = -1;
  if (nops >= 2 && nc_data_rand_below(rng, 2)) {
    int i = (int)nc_data_rand_below(rng, (uint64_t)nops);
    if (ops[i] != '*') paren = i;  // wrap nums[i] ops[i] nums[i+1]
  }
  // Evaluate: first the parenthesized pair, then * before + and -.
  int64_t v[4] = {0};
  char o[3];
  int n = 0;
  for (int i = 0; i <= nops; i++) {
    int64_t x = nums[i];
    if (i == paren) {
      x = ops[i] == '+' ? nums[i] + nums[i + 1] : nums[i] - nums[i + 1];
      i++;
    }
    v[n] = x;
    if (i < nops) o[n] = ops[i];
    n++;
  }
  // products
  int64_t terms[4];
  char tops[3];
  int nt = 0;
  int64_t cur = v[0];
  for (int i = 1; i < n; i++) {
    if (o[i - 1] == '*') {
      cur *= v[i];
    } else {
      terms[nt] = cur;
      tops[nt] = o[i - 1];
      nt++;
      cur = v[i];
    }
  }
  terms[nt++] = cur;
  int64_t acc = terms[0];
  for (int i = 1; i < nt; i++) acc = tops[i - 1] == '+' ? acc + terms[i] : acc - terms[i];
  *val = acc;
  for (int i = 0; i <= nops; i++) {
    if (i == paren) nc_buf_puts(b, "(");
    nc_buf_printf(b, "%lld", (long long)nums[i]);
    if (i == paren + 1 && paren >= 0) nc_buf_puts(b, ")");
    if (i < nops) nc_buf_printf(b, " %c ", ops[i]);
  }
}

static const char *const nc_arith_q[] = {
    "What is %s?",           "Calculate %s.",         "Compute %s",
    "What's %s?",            "Evaluate %s.",          "How much is %s?",
    "Please work out %s.",   "Can you calculate %s?", "what is %s",
    "Solve: %s",             "%s = ?",                "I need the value of %s.",
};
static const char *const nc_arith_intro[] = {
    "Let me compute this with the calculator.\n\n",
    "I'll use the calculator for this.\n\n",
    "Let me calculate it.\n\n",
    "Using Python to be exact:\n\n",
};

static nc_status nc_gen_arithmetic(uint64_t *rng, nc_buf *out) {
  nc_buf e = {0};
  int64_t val;
  nc_arith_expr(rng, &e, &val);
  // The python expression: the question's expression without spaces.
  nc_buf py = {0};
  for (size_t i = 0; i < e.len; i++)
    if (e.data[i] != ' ') nc_buf_put(&py, &e.data[i], 1);
  char *q = nc_fmt(NC_PICK(rng, nc_arith_q), e.data);
  char *res = nc_fmt("%lld", (long long)val);
  char *tail = nc_fmt("\n\nSo %s = %lld.\n\n#### %lld", e.data, (long long)val, (long long)val);
  json_t *parts = json_array();
  json_array_append_new(parts, nc_part("text", NC_PICK(rng, nc_arith_intro)));
  json_array_append_new(parts, nc_part("python", py.data));
  json_array_append_new(parts, nc_part("python_output", res ? res : ""));
  json_array_append_new(parts, nc_part("text", tail ? tail : ""));
  json_t *msgs = json_array();
  json_array_append_new(msgs, nc_msg_s("user", q ? q : ""));
  json_array_append_new(msgs, nc_msg_o("assistant", parts));
  nc_status st = (e.oom || py.oom || !q || !res || !tail) ? nc_errorf(NC_E_NOMEM, "out of memory") : NC_OK;
  if (!st) st = nc_emit(msgs, out);
  else json_decref(msgs);
  nc_buf_free(&e);
  nc_buf_free(&py);
  free(q);
  free(res);
  free(tail);
  return st;
}

// ---- identity --------------------------------------------------------------

typedef struct {
  const char *const *q;
  int nq;
  const char *const *a;
  int na;
} nc_topic;

static const char *const nc_id_who_q[] = {"Who are you?", "who are you", "What are you?", "Hi! Who am I talking to?",
                                          "Hello, what's your name?", "Tell me about yourself.",
                                          "Are you ChatGPT?", "What should I call you?", "Introduce yourself."};
static const char *const nc_id_who_a[] = {
    "I'm nanochat-c, a small chat model. I'm a C11 rebuild of Andrej Karpathy's nanochat: the same kind of "
    "GPT-style Transformer, trained and run by a dataflow-graph compiler and runtime written in C.",
    "Hello! I am nanochat-c, a small language model trained with nanochat-c, a re-implementation of nanochat in C. "
    "I can chat, answer simple questions and use a calculator tool.",
    "My name is nanochat-c. I'm not ChatGPT: I'm a much smaller model, trained from scratch with the nanochat-c "
    "project, a C version of Karpathy's nanochat.",
    "I'm nanochat-c, a tiny GPT-style assistant. My whole training pipeline, from the tokenizer to the chat "
    "interface, is written in C.",
};
static const char *const nc_id_maker_q[] = {"Who made you?", "who created you", "Who built you?",
                                            "Which company trained you?", "Who is your developer?",
                                            "Where do you come from?"};
static const char *const nc_id_maker_a[] = {
    "I was built with nanochat-c, an open-source C11 re-implementation of nanochat, the minimal ChatGPT clone "
    "written by Andrej Karpathy. No big company trained me: whoever ran nanochat-c's training scripts did.",
    "I come from the nanochat-c project, which rebuilds Andrej Karpathy's nanochat in C. The person who ran its "
    "speedrun trained me, possibly on a small CPU machine.",
    "nanochat-c made me: a C compiler and runtime for training small GPT models, modeled on Karpathy's nanochat.",
};
static const char *const nc_id_can_q[] = {"What can you do?", "what are you good at", "How can you help me?",
                                          "What are your abilities?", "Can you do math?",
                                          "What are your limitations?"};
static const char *const nc_id_can_a[] = {
    "As nanochat-c, I can hold a simple conversation, answer short questions, spell words and count letters, "
    "and do arithmetic with a calculator tool. I'm a very small model, so I make mistakes: please double-check "
    "what I say.",
    "I'm nanochat-c: I can chat, spell words, count letters in a word and solve arithmetic using a Python "
    "calculator. My knowledge is limited because I was trained on a small amount of text.",
    "I'm nanochat-c, so small things: conversation, spelling, letter counting and calculations with my "
    "calculator tool. I can't browse the internet, and I often get facts wrong, since I'm a tiny model.",
};
static const char *const nc_id_how_q[] = {"How were you trained?", "What is nanochat-c?", "How do you work?",
                                          "What language are you written in?", "Are you open source?"};
static const char *const nc_id_how_a[] = {
    "nanochat-c trained me in stages, like nanochat: pretraining on plain text, then midtraining and supervised "
    "fine-tuning on conversations. Everything, including the tokenizer, was done by a program written in C.",
    "nanochat-c is a re-implementation of Karpathy's nanochat in C11. It describes the model and its training step "
    "as a dataflow graph, compiles the graph to fast kernels and runs them. I'm one of the models it trains.",
    "I'm a Transformer: I read your message as tokens and predict my answer one token at a time. The code that "
    "runs me, nanochat-c, is open source and written in C.",
};
static const nc_topic nc_id_topics[] = {
    {nc_id_who_q, 9, nc_id_who_a, 4},
    {nc_id_maker_q, 6, nc_id_maker_a, 3},
    {nc_id_can_q, 6, nc_id_can_a, 3},
    {nc_id_how_q, 5, nc_id_how_a, 3},
};
static const char *const nc_id_greet[] = {"", "", "Hi! ", "Hello. ", "Hey, ", "Good morning! "};

static nc_status nc_gen_identity(uint64_t *rng, nc_buf *out) {
  int turns = 1 + (int)nc_data_rand_below(rng, 3);
  json_t *msgs = json_array();
  int used = 0;
  nc_status st = NC_OK;
  for (int t = 0; t < turns && !st; t++) {
    int k;
    do k = (int)nc_data_rand_below(rng, 4);
    while (used & (1 << k));
    used |= 1 << k;
    const nc_topic *tp = &nc_id_topics[k];
    const char *q = tp->q[nc_data_rand_below(rng, (uint64_t)tp->nq)];
    const char *a = tp->a[nc_data_rand_below(rng, (uint64_t)tp->na)];
    char *uq = nc_fmt("%s%s", t == 0 ? NC_PICK(rng, nc_id_greet) : "", q);
    if (!uq) st = nc_errorf(NC_E_NOMEM, "out of memory");
    else {
      json_array_append_new(msgs, nc_msg_s("user", uq));
      json_array_append_new(msgs, nc_msg_s("assistant", a));
    }
    free(uq);
  }
  if (!st) st = nc_emit(msgs, out);
  else json_decref(msgs);
  return st;
}

nc_status nc_task_generate(nc_task_kind k, const nc_wordlist *words, uint64_t seed, int64_t index, nc_buf *out) {
  // Per-example stream: conversation i depends only on (seed, kind, i).
  uint64_t rng = seed ^ 0x6a09e667f3bcc909ull;
  rng = nc_data_splitmix64(&rng) ^ ((uint64_t)k << 56) ^ (uint64_t)index;
  (void)nc_data_splitmix64(&rng);
  switch (k) {
    case NC_TASK_SPELLING_BEE:
    case NC_TASK_SIMPLE_SPELLING:
      if (!words || words->n == 0) return nc_errorf(NC_E_INVALID, "task %s needs a word list", nc_task_name(k));
      return k == NC_TASK_SPELLING_BEE ? nc_gen_spelling_bee(words, &rng, out)
                                       : nc_gen_simple_spelling(words, &rng, out);
    case NC_TASK_ARITHMETIC: return nc_gen_arithmetic(&rng, out);
    case NC_TASK_IDENTITY: return nc_gen_identity(&rng, out);
    default: return nc_errorf(NC_E_INVALID, "unknown task kind %d", (int)k);
  }
}

nc_status nc_data_write_maybe_gz(const char *path, const void *data, size_t len) {
  size_t pl = strlen(path);
  if (pl < 3 || strcmp(path + pl - 3, ".gz") != 0) return nc_file_write_atomic(path, data, len);
  z_stream z = {0};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return nc_errorf(NC_E_NOMEM, "%s: cannot start gzip compression", path);
  uLong bound = deflateBound(&z, (uLong)len);
  unsigned char *o = malloc(bound);
  if (!o) {
    deflateEnd(&z);
    return nc_errorf(NC_E_NOMEM, "out of memory compressing %s", path);
  }
  z.next_in = (Bytef *)data;
  z.avail_in = (uInt)len;
  z.next_out = o;
  z.avail_out = (uInt)bound;
  int r = deflate(&z, Z_FINISH);
  size_t olen = z.total_out;
  deflateEnd(&z);
  nc_status st = r == Z_STREAM_END ? nc_file_write_atomic(path, o, olen)
                                   : nc_errorf(NC_E_INTERNAL, "%s: gzip compression failed", path);
  free(o);
  return st;
}

nc_status nc_task_write(nc_task_kind k, const nc_wordlist *words, uint64_t seed, int64_t n, const char *path) {
  if (n < 0) return nc_errorf(NC_E_INVALID, "task %s: count %lld < 0", nc_task_name(k), (long long)n);
  nc_buf b = {0};
  nc_status st = NC_OK;
  for (int64_t i = 0; i < n && !st; i++) {
    st = nc_task_generate(k, words, seed, i, &b);
    nc_buf_puts(&b, "\n");
  }
  if (!st && b.oom) st = nc_errorf(NC_E_NOMEM, "out of memory");
  if (!st) st = nc_data_write_maybe_gz(path, b.data ? b.data : "", b.len);
  nc_buf_free(&b);
  return st;
}

// ---- reward ----------------------------------------------------------------

bool nc_task_extract_answer(const char *text, size_t len, char *out, size_t cap) {
  for (size_t i = 0; i + 5 <= len; i++) {
    if (memcmp(text + i, "#### ", 5) != 0) continue;
    size_t j = i + 5, start = j;
    if (j < len && text[j] == '-') j++;
    size_t d = j;
    while (j < len && ((text[j] >= '0' && text[j] <= '9') || text[j] == '.' || text[j] == ',')) j++;
    if (j == d) continue;  // no digits here: search on, as re.search
    size_t k = 0;
    for (size_t p = start; p < j; p++) {
      if (text[p] == ',') continue;
      if (k + 1 >= cap) return false;
      out[k++] = text[p];
    }
    if (cap) out[k] = 0;
    return true;
  }
  return false;
}

double nc_task_reward(const char *completion, size_t len, const char *reference) {
  char got[128], want[128];
  if (!reference || !nc_task_extract_answer(completion, len, got, sizeof got)) return 0.0;
  if (strstr(reference, "#### ")) {
    if (!nc_task_extract_answer(reference, strlen(reference), want, sizeof want)) return 0.0;
  } else {
    size_t k = 0;
    for (const char *p = reference; *p && k + 1 < sizeof want; p++)
      if (*p != ',' && *p != ' ' && *p != '\n') want[k++] = *p;
    want[k] = 0;
  }
  return strcmp(got, want) == 0 ? 1.0 : 0.0;
}

bool nc_task_conversation_answer(const char *json, size_t len, char *out, size_t cap) {
  json_t *root = json_loadb(json, len, 0, NULL);
  json_t *msgs = json_is_object(root) ? json_object_get(root, "messages") : NULL;
  bool ok = false;
  for (size_t i = json_is_array(msgs) ? json_array_size(msgs) : 0; i-- > 0 && !ok;) {
    json_t *m = json_array_get(msgs, i);
    json_t *r = json_object_get(m, "role");
    if (!json_is_string(r) || strcmp(json_string_value(r), "assistant")) continue;
    json_t *c = json_object_get(m, "content");
    json_t *t = json_is_array(c) ? json_object_get(json_array_get(c, json_array_size(c) - 1), "text") : c;
    if (json_is_string(t)) ok = nc_task_extract_answer(json_string_value(t), json_string_length(t), out, cap);
    break;
  }
  json_decref(root);
  return ok;
}

// ---- GSM8K -----------------------------------------------------------------

static void nc_gsm8k_item_free(nc_gsm8k_item *it) {
  free(it->question);
  free(it->answer);
  free(it->final);
}

void nc_gsm8k_free(nc_gsm8k *g) {
  for (int64_t i = 0; i < g->n; i++) nc_gsm8k_item_free(&g->items[i]);
  free(g->items);
  memset(g, 0, sizeof *g);
}

nc_status nc_gsm8k_load(const char *path, bool skip_bad, nc_gsm8k *out) {
  memset(out, 0, sizeof *out);
  nc_buf b = {0};
  nc_status st = nc_data_read_all(path, &b);
  if (st) {
    if (!skip_bad || nc_status_code(st) == NC_E_NOMEM) {
      nc_buf_free(&b);
      return st;
    }
    nc_status_free(st);
    st = NC_OK;
    out->skipped++;
  }
  int64_t cap = 0, line = 0;
  size_t pos = 0;
  while (!st && pos < b.len) {
    const char *p = b.data + pos;
    const char *nl = memchr(p, '\n', b.len - pos);
    size_t n = nl ? (size_t)(nl - p) : b.len - pos;
    pos += n + (nl ? 1 : 0);
    line++;
    bool blank = true;
    for (size_t i = 0; i < n && blank; i++) blank = p[i] == ' ' || p[i] == '\t' || p[i] == '\r';
    if (blank) continue;
    nc_status bad = NC_OK;
    json_t *j = NULL;
    long u = nc_utf8_invalid_at(p, n);
    if (u >= 0) {
      bad = nc_errorf(NC_E_PARSE, "%s:%lld:%ld: invalid UTF-8", path, (long long)line, u + 1);
    } else {
      json_error_t err;
      j = json_loadb(p, n, 0, &err);
      if (!j) bad = nc_errorf(NC_E_PARSE, "%s:%lld:%d: bad JSON: %s", path, (long long)line, err.column, err.text);
    }
    json_t *q = j ? json_object_get(j, "question") : NULL, *a = j ? json_object_get(j, "answer") : NULL;
    if (!bad && (!json_is_string(q) || !json_is_string(a)))
      bad = nc_errorf(NC_E_PARSE, "%s:%lld: needs string fields \"question\" and \"answer\"", path, (long long)line);
    char fin[128];
    if (!bad && !nc_task_extract_answer(json_string_value(a), json_string_length(a), fin, sizeof fin))
      bad = nc_errorf(NC_E_PARSE, "%s:%lld: the answer has no final \"#### N\"", path, (long long)line);
    if (bad) {
      json_decref(j);
      if (!skip_bad) {
        st = bad;
        break;
      }
      nc_status_free(bad);
      out->skipped++;
      continue;
    }
    if (out->n == cap) {
      cap = cap ? cap * 2 : 1024;
      nc_gsm8k_item *it = realloc(out->items, (size_t)cap * sizeof *it);
      if (!it) {
        json_decref(j);
        st = nc_errorf(NC_E_NOMEM, "out of memory");
        break;
      }
      out->items = it;
    }
    nc_gsm8k_item *it = &out->items[out->n];
    it->question = strdup(json_string_value(q));
    it->answer = strdup(json_string_value(a));
    it->final = strdup(fin);
    json_decref(j);
    out->n++;
    if (!it->question || !it->answer || !it->final) st = nc_errorf(NC_E_NOMEM, "out of memory");
  }
  nc_buf_free(&b);
  if (!st && out->n == 0) st = nc_errorf(NC_E_PARSE, "%s: no GSM8K problems", path);
  if (st) nc_gsm8k_free(out);
  return st;
}

nc_status nc_gsm8k_conversation(const nc_gsm8k_item *it, nc_buf *out) {
  json_t *parts = json_array();
  const char *s = it->answer;
  size_t n = strlen(s), text_start = 0, i = 0;
  while (i < n) {
    size_t j = i + 2;
    if (i + 1 < n && s[i] == '<' && s[i + 1] == '<') {
      while (j < n && s[j] != '>') j++;
      if (j > i + 2 && j + 1 < n && s[j] == '>' && s[j + 1] == '>') {
        // text before, then <<inner>> as python + python_output
        char *txt = strndup(s + text_start, i - text_start);
        char *inner = strndup(s + i + 2, j - i - 2);
        if (!txt || !inner) {
          free(txt);
          free(inner);
          json_decref(parts);
          return nc_errorf(NC_E_NOMEM, "out of memory");
        }
        json_array_append_new(parts, nc_part("text", txt));
        char *eq = strrchr(inner, '=');
        const char *res = "";
        if (eq) {
          *eq = 0;
          res = eq + 1;
        }
        json_array_append_new(parts, nc_part("python", inner));
        json_array_append_new(parts, nc_part("python_output", res));
        free(txt);
        free(inner);
        i = j + 2;
        text_start = i;
        continue;
      }
    }
    i++;
  }
  json_array_append_new(parts, nc_part("text", s + text_start));
  json_t *msgs = json_array();
  json_array_append_new(msgs, nc_msg_s("user", it->question));
  json_array_append_new(msgs, nc_msg_o("assistant", parts));
  return nc_emit(msgs, out);
}

nc_status nc_gsm8k_write_conversations(const nc_gsm8k *g, const char *path) {
  nc_buf b = {0};
  nc_status st = NC_OK;
  for (int64_t i = 0; i < g->n && !st; i++) {
    st = nc_gsm8k_conversation(&g->items[i], &b);
    nc_buf_puts(&b, "\n");
  }
  if (!st && b.oom) st = nc_errorf(NC_E_NOMEM, "out of memory");
  if (!st) st = nc_data_write_maybe_gz(path, b.data ? b.data : "", b.len);
  nc_buf_free(&b);
  return st;
}
