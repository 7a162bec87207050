// Chat evals and ChatCORE. See chat.h.
#include "eval/chat.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "data/tasks.h"
#include "engine/engine.h"
#include "eval/runner.h"
#include "support/clock.h"

static const char *const nc_chat_all[] = {"ARC-Easy", "ARC-Challenge", "MMLU", "GSM8K", "HumanEval", "SpellingBee"};
#define NC_CHAT_NTASKS 6

void nc_chat_eval_opts_default(nc_chat_eval_opts *o) {
  memset(o, 0, sizeof *o);
  o->step = -1;
  o->num_samples = 1;
  o->temperature = 0;
  o->top_k = 50;
  o->max_tokens = 512;
  o->batch = 8;
  nc_status st = nc_device_parse("cpu", &o->device);
  nc_status_free(st);
  o->progress = true;
}

void nc_chat_render_mc(const char *question, const char *const *letters, const char *const *choices, int n, nc_buf *out) {
  nc_buf_printf(out, "Multiple Choice question: %s\n", question);
  for (int i = 0; i < n; i++) nc_buf_printf(out, "- %s=%s\n", choices[i], letters[i]);
  nc_buf_puts(out, "\nRespond only with the letter of the correct answer.");
}

int nc_chat_pick_letter(const float *logits, const int32_t *ids, int n) {
  int best = 0;
  for (int k = 1; k < n; k++)
    if (logits[ids[k]] > logits[ids[best]]) best = k;
  return best;
}

double nc_chat_baseline(const char *task) {
  return !strcmp(task, "ARC-Easy") || !strcmp(task, "ARC-Challenge") || !strcmp(task, "MMLU") ? 0.25 : 0.0;
}

void nc_chat_humaneval_program(const char *prompt, const char *completion, const char *test, const char *entry, nc_buf *out) {
  // extract_imports: leading import/from lines (comments and blanks skipped)
  bool first = true;
  for (const char *p = prompt; *p;) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    const char *a = p, *z = p + n;
    while (a < z && (*a == ' ' || *a == '\t' || *a == '\r')) a++;
    while (z > a && (z[-1] == ' ' || z[-1] == '\t' || z[-1] == '\r')) z--;
    if ((z - a >= 7 && !strncmp(a, "import ", 7)) || (z - a >= 5 && !strncmp(a, "from ", 5))) {
      if (!first) nc_buf_puts(out, "\n");
      nc_buf_put(out, a, (size_t)(z - a));
      first = false;
    } else if (z > a && *a != '#')
      break;
    p += n + (nl ? 1 : 0);
  }
  nc_buf_puts(out, "\n\n");
  // extract_program: ```(?:python)?\s*\n(.*?)\n``` else the whole completion, stripped
  const char *code = NULL, *code_end = NULL;
  for (const char *f = strstr(completion, "```"); f && !code; f = strstr(f + 1, "```")) {
    const char *q = f + 3;
    if (!strncmp(q, "python", 6)) q += 6;
    const char *ws = q;
    while (*ws == ' ' || *ws == '\t' || *ws == '\r' || *ws == '\n' || *ws == '\f' || *ws == '\v') ws++;
    // \s*\n: the last newline within the whitespace run (greedy, then backtrack)
    const char *nl = NULL;
    for (const char *w = q; w < ws; w++)
      if (*w == '\n') nl = w;
    if (!nl) continue;
    const char *end = strstr(nl + 1, "\n```");
    if (!end && nl + 1 <= ws && !strncmp(nl, "\n```", 4)) end = nl;  // empty block
    if (end) code = nl + 1, code_end = end;
  }
  if (!code) code = completion, code_end = completion + strlen(completion);
  while (code < code_end && (*code == ' ' || *code == '\n' || *code == '\t' || *code == '\r')) code++;
  while (code_end > code && (code_end[-1] == ' ' || code_end[-1] == '\n' || code_end[-1] == '\t' || code_end[-1] == '\r')) code_end--;
  nc_buf_put(out, code, (size_t)(code_end - code));
  nc_buf_printf(out, "\n\n%s\ncheck(%s)", test, entry);
}

// Reads a JSONL(.gz) file into an array of objects.
static nc_status nc_chat_jsonl(const char *path, int64_t max, json_t ***out, int64_t *n) {
  *out = NULL;
  *n = 0;
  gzFile gz = gzopen(path, "rb");
  if (!gz) return nc_errorf(NC_E_IO, "%s: cannot open: %s", path, strerror(errno));
  nc_buf all;
  nc_buf_init(&all);
  char chunk[65536];
  int got;
  while ((got = gzread(gz, chunk, sizeof chunk)) > 0) nc_buf_put(&all, chunk, (size_t)got);
  gzclose(gz);
  nc_status st = got < 0 ? nc_errorf(NC_E_IO, "%s: read error", path) : NC_OK;
  int64_t cap = 0;
  const char *p = all.data, *end = all.data + all.len;
  for (int64_t line = 1; !st && p && p < end && (max <= 0 || *n < max); line++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end, *a = p;
    p = nl ? nl + 1 : end;
    if (le == a) continue;
    json_error_t je;
    json_t *o = json_loadb(a, (size_t)(le - a), 0, &je);
    if (!o || !json_is_object(o)) {
      json_decref(o);
      st = nc_errorf(NC_E_PARSE, "%s:%lld: invalid JSON object: %s", path, (long long)line, o ? "not an object" : je.text);
      break;
    }
    if (*n == cap) {
      cap = cap ? 2 * cap : 256;
      json_t **no = realloc(*out, (size_t)cap * sizeof *no);
      if (!no) {
        json_decref(o);
        st = nc_errorf(NC_E_NOMEM, "%s: out of memory", path);
        break;
      }
      *out = no;
    }
    (*out)[(*n)++] = o;
  }
  nc_buf_free(&all);
  return st;
}

static void nc_chat_jsonl_free(json_t **v, int64_t n) {
  for (int64_t i = 0; i < n; i++) json_decref(v[i]);
  free(v);
}

static const char *nc_jstr(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

// A conversation JSON {"messages":[{user},{assistant}]} into out.
static void nc_chat_conv(const char *user, const char *assistant, nc_buf *out) {
  json_t *j = json_pack("{s:[{s:s,s:s},{s:s,s:s}]}", "messages", "role", "user", "content", user, "role", "assistant", "content", assistant);
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  if (s) nc_buf_puts(out, s);
  free(s);
  json_decref(j);
}

// ---- categorical -----------------------------------------------------------------

typedef struct {
  nc_buf conv;
  char letters[8][4];
  int n, gold;
} nc_mc_item;

static nc_status nc_chat_categorical(nc_evalfwd *f, nc_mc_item *items, int64_t n, int batch, bool progress, const char *task, int64_t *passed) {
  const nc_tok *tok = nc_evalfwd_tok(f);
  int64_t V = nc_evalfwd_spec(f)->vocab_size;
  nc_status st = NC_OK;
  nc_ids *ids = calloc((size_t)batch, sizeof *ids);
  float **lg = calloc((size_t)batch, sizeof *lg);
  const int32_t **seqs = calloc((size_t)batch, sizeof *seqs);
  int64_t *lens = calloc((size_t)batch, sizeof *lens), *pos = calloc((size_t)batch, sizeof *pos);
  if (!ids || !lg || !seqs || !lens || !pos) st = nc_errorf(NC_E_NOMEM, "%s: out of memory", task);
  for (int i = 0; !st && i < batch; i++)
    if (!(lg[i] = malloc((size_t)V * sizeof(float)))) st = nc_errorf(NC_E_NOMEM, "%s: out of memory", task);
  double t0 = nc_clock_now(), last = t0;
  nc_tok_encode_opts eo = {NC_TOK_SPECIAL_ORDINARY, 1};
  for (int64_t b0 = 0; !st && b0 < n; b0 += batch) {
    int nb = (int)(n - b0 < batch ? n - b0 : batch);
    for (int i = 0; !st && i < nb; i++) {
      ids[i].len = 0;
      st = nc_tok_render_for_completion(tok, items[b0 + i].conv.data, items[b0 + i].conv.len, &ids[i]);
      seqs[i] = ids[i].data, lens[i] = (int64_t)ids[i].len, pos[i] = lens[i] - 1;
    }
    if (!st) st = nc_evalfwd_logits_at(f, seqs, lens, nb, nc_tok_bos_id(tok), pos, lg);
    for (int i = 0; !st && i < nb; i++) {
      nc_mc_item *it = &items[b0 + i];
      int32_t lid[8];
      for (int k = 0; !st && k < it->n; k++) {
        nc_ids e = {0};
        st = nc_tok_encode(tok, it->letters[k], strlen(it->letters[k]), &eo, &e);
        if (!st && e.len != 1) st = nc_errorf(NC_E_INVALID, "%s: the letter '%s' is not a single token", task, it->letters[k]);
        if (!st) lid[k] = e.data[0];
        nc_ids_free(&e);
      }
      if (!st) *passed += nc_chat_pick_letter(lg[i], lid, it->n) == it->gold;
    }
    double now = nc_clock_now();
    if (progress && now - last > 5) {
      fprintf(stderr, "%s: %lld/%lld, %lld passed (%.0f s)\n", task, (long long)(b0 + nb), (long long)n, (long long)*passed, now - t0);
      last = now;
    }
  }
  for (int i = 0; ids && i < batch; i++) nc_ids_free(&ids[i]);
  for (int i = 0; lg && i < batch; i++) free(lg[i]);
  free(ids), free(lg), free(seqs), free(lens), free(pos);
  return st;
}

static nc_status nc_chat_mc_load(const char *task, const char *path, int64_t max, nc_mc_item **out, int64_t *n) {
  json_t **rows;
  int64_t nr;
  nc_status st = nc_chat_jsonl(path, max, &rows, &nr);
  if (st) return st;
  nc_mc_item *items = calloc((size_t)(nr ? nr : 1), sizeof *items);
  if (!items) st = nc_errorf(NC_E_NOMEM, "%s: out of memory", path);
  for (int64_t i = 0; !st && i < nr; i++) {
    nc_mc_item *it = &items[i];
    const char *q = nc_jstr(rows[i], "question");
    const char *choices[8];
    const char *letters[8];
    json_t *ch = json_object_get(rows[i], "choices");
    if (!strcmp(task, "MMLU")) {  // {question, choices:[4], answer:int}
      json_t *ans = json_object_get(rows[i], "answer");
      if (!q || !json_is_array(ch) || json_array_size(ch) != 4 || !json_is_integer(ans) || json_integer_value(ans) < 0 || json_integer_value(ans) > 3) {
        st = nc_errorf(NC_E_PARSE, "%s:%lld: expected question, 4 choices and answer 0..3", path, (long long)i + 1);
        break;
      }
      it->n = 4;
      it->gold = (int)json_integer_value(ans);
      for (int k = 0; k < 4; k++) choices[k] = json_string_value(json_array_get(ch, (size_t)k)), snprintf(it->letters[k], 4, "%c", 'A' + k);
    } else {  // ARC (HF ai2_arc): {question, choices:{text:[], label:[]}, answerKey}
      json_t *tx = json_object_get(ch, "text"), *lb = json_object_get(ch, "label");
      const char *key = nc_jstr(rows[i], "answerKey");
      if (!q || !json_is_array(tx) || !json_is_array(lb) || json_array_size(tx) != json_array_size(lb) || json_array_size(tx) < 2 ||
          json_array_size(tx) > 8 || !key) {
        st = nc_errorf(NC_E_PARSE, "%s:%lld: expected question, choices {text, label} and answerKey", path, (long long)i + 1);
        break;
      }
      it->n = (int)json_array_size(tx);
      it->gold = -1;
      for (int k = 0; k < it->n; k++) {
        choices[k] = json_string_value(json_array_get(tx, (size_t)k));
        snprintf(it->letters[k], 4, "%s", json_string_value(json_array_get(lb, (size_t)k)) ? json_string_value(json_array_get(lb, (size_t)k)) : "?");
        if (!strcmp(it->letters[k], key)) it->gold = k;
      }
    }
    for (int k = 0; k < it->n; k++) {
      letters[k] = it->letters[k];
      if (!choices[k]) choices[k] = "";
    }
    nc_buf user;
    nc_buf_init(&user);
    nc_chat_render_mc(q, letters, choices, it->n, &user);
    nc_buf_init(&it->conv);
    nc_chat_conv(user.data, it->gold >= 0 ? letters[it->gold] : "?", &it->conv);
    nc_buf_free(&user);
  }
  nc_chat_jsonl_free(rows, nr);
  if (st) {
    for (int64_t i = 0; items && i < nr; i++) nc_buf_free(&items[i].conv);
    free(items);
    return st;
  }
  *out = items;
  *n = nr;
  return NC_OK;
}

// ---- generative -------------------------------------------------------------------------------

static nc_status nc_chat_generate(nc_engine *e, const nc_chat_eval_opts *o, const char *conv, size_t len, nc_buf *completions,
                                  bool *too_long) {
  *too_long = false;
  const nc_tok *tok = nc_engine_tok(e);
  nc_ids prompt = {0};
  nc_status st = nc_tok_render_for_completion(tok, conv, len, &prompt);
  nc_gen_opts g;
  nc_gen_opts_default(&g);
  g.temperature = o->temperature;
  g.top_k = o->top_k;
  g.max_tokens = o->max_tokens;
  g.n = o->num_samples;
  g.seeded = true;
  g.seed = 42;
  g.tools = true;
  nc_gen_result r;
  if (!st && (int64_t)prompt.len + 1 >= nc_engine_max_seq(e)) {  // no room to answer: every sample is empty (a failure)
    for (int s = 0; s < g.n; s++) nc_buf_init(&completions[s]), nc_buf_puts(&completions[s], "");
    nc_ids_free(&prompt);
    *too_long = true;
    return NC_OK;
  }
  if (!st) st = nc_engine_generate(e, prompt.data, prompt.len, &g, &r);
  if (!st) {
    for (int s = 0; s < r.n; s++) {
      nc_buf_init(&completions[s]);
      nc_status d = nc_tok_decode(tok, r.tokens[s].data, r.tokens[s].len, &completions[s]);
      nc_status_free(d);
      nc_buf_puts(&completions[s], "");
    }
    nc_gen_result_free(&r);
  }
  nc_ids_free(&prompt);
  return st;
}

nc_status nc_chat_eval_run(const nc_chat_eval_opts *o, nc_chat_result **res, int *nres, double *chatcore, bool *complete) {
  *res = NULL;
  *nres = 0;
  *chatcore = NAN;
  *complete = false;
  if (o->world > 1 && (o->rank < 0 || o->rank >= o->world))
    return nc_errorf(NC_E_INVALID, "chat eval: rank %d is outside [0, world = %d)", o->rank, o->world);
  for (const char *p = o->tasks; p && *p;) {
    const char *c = strchr(p, ',');
    size_t k = c ? (size_t)(c - p) : strlen(p);
    bool ok = false;
    for (int i = 0; i < NC_CHAT_NTASKS; i++) ok |= strlen(nc_chat_all[i]) == k && !strncmp(nc_chat_all[i], p, k);
    if (!ok) return nc_errorf(NC_E_INVALID, "--tasks: unknown task '%.*s' (ARC-Easy, ARC-Challenge, MMLU, GSM8K, HumanEval, SpellingBee)", (int)k, p);
    p += k + (c ? 1 : 0);
  }
  char ddef[4096];
  const char *data = o->data;
  if (!data) {
    const char *sh = getenv("NC_SHARED_DIR");
    snprintf(ddef, sizeof ddef, "%s/data/eval", sh && *sh ? sh : "../shared");
    data = ddef;
  }
  nc_chat_result *rs = calloc(NC_CHAT_NTASKS, sizeof *rs);
  if (!rs) return nc_errorf(NC_E_NOMEM, "chat eval: out of memory");
  nc_evalfwd *f = NULL;
  nc_engine *eng = NULL;
  nc_status st = NC_OK;
  int nr = 0, ncen = 0;
  double sum = 0;
  for (int ti = 0; !st && ti < NC_CHAT_NTASKS; ti++) {
    const char *task = nc_chat_all[ti];
    if (o->tasks) {
      bool want = false;
      for (const char *p = o->tasks; *p;) {
        const char *c = strchr(p, ',');
        size_t k = c ? (size_t)(c - p) : strlen(p);
        want |= strlen(task) == k && !strncmp(task, p, k);
        p += k + (c ? 1 : 0);
      }
      if (!want) continue;
    }
    nc_chat_result *r = &rs[nr++];
    snprintf(r->task, sizeof r->task, "%s", task);
    char path[4200];
    struct stat sb;
    bool mc = ti <= 2;
    if (ti == 0) snprintf(path, sizeof path, "%s/arc/ARC-Easy-test.jsonl", data);
    if (ti == 1) snprintf(path, sizeof path, "%s/arc/ARC-Challenge-test.jsonl", data);
    if (ti == 2) snprintf(path, sizeof path, "%s/mmlu/mmlu_test.jsonl", data);
    if (ti == 3) snprintf(path, sizeof path, "%s/gsm8k/test.jsonl", data);
    if (ti == 4) snprintf(path, sizeof path, "%s/humaneval/HumanEval.jsonl", data);
    if (ti != 5 && stat(path, &sb)) {
      size_t l = strlen(path);
      snprintf(path + l, sizeof path - l, ".gz");
      if (stat(path, &sb)) {
        r->skipped = true;
        snprintf(r->note, sizeof r->note, "%.200s not found", path);
        if (o->progress) fprintf(stderr, "chat eval: %s skipped: %s\n", task, r->note);
        continue;
      }
    }
    double t0 = nc_clock_now();
    if (mc) {
      if (!f) {
        st = nc_evalfwd_open(o->ckpt, o->step, o->tokenizer, &o->device, &f);
        if (!st && o->precision) st = nc_evalfwd_set_precision(f, o->precision);
      }
      nc_mc_item *items = NULL;
      int64_t n = 0;
      if (!st) st = nc_chat_mc_load(task, path, o->max_per_task, &items, &n);
      if (!st && o->world > 1) {  // this rank's share: items rank, rank + world, ...
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++) {
          if (i % o->world == o->rank) items[k++] = items[i];
          else nc_buf_free(&items[i].conv);
        }
        n = k;
      }
      if (!st) st = nc_chat_categorical(f, items, n, o->batch > 0 ? o->batch : 8, o->progress, task, &r->passed);
      r->n = n;
      for (int64_t i = 0; items && i < n; i++) nc_buf_free(&items[i].conv);
      free(items);
    } else {
      if (!eng) {
        nc_engine_opts eo;
        nc_engine_opts_default(&eo);
        eo.ckpt_dir = o->ckpt;
        eo.step = o->step;
        eo.tokenizer = o->tokenizer;
        eo.device = o->device;
        eo.slots = o->num_samples > 1 ? o->num_samples : 1;
        eo.precision = o->precision;
        st = nc_engine_open(&eo, &eng);
      }
      json_t **rows = NULL;
      int64_t nrow = 0;
      nc_gsm8k gsm = {0};
      nc_wordlist words = {0};
      if (!st && ti == 3) st = nc_gsm8k_load(path, false, &gsm), nrow = gsm.n;
      if (!st && ti == 4) st = nc_chat_jsonl(path, o->max_per_task, &rows, &nrow);
      if (!st && ti == 5) st = nc_wordlist_load(o->words, &words), nrow = 256;  // nanochat: 256 problems
      if (o->max_per_task > 0 && nrow > o->max_per_task) nrow = o->max_per_task;
      double last = t0;
      int64_t ntoolong = 0;
      for (int64_t i = o->world > 1 ? o->rank : 0; !st && i < nrow; i += o->world > 1 ? o->world : 1) {
        nc_buf conv, comp[64];
        nc_buf_init(&conv);
        char ref[64] = "";
        const char *pr = NULL, *test = NULL, *entry = NULL;
        if (ti == 3) {
          st = nc_gsm8k_conversation(&gsm.items[i], &conv);
          snprintf(ref, sizeof ref, "%s", gsm.items[i].final);
        } else if (ti == 4) {
          pr = nc_jstr(rows[i], "prompt"), test = nc_jstr(rows[i], "test"), entry = nc_jstr(rows[i], "entry_point");
          const char *sol = nc_jstr(rows[i], "canonical_solution");
          if (!pr || !test || !entry || !sol) st = nc_errorf(NC_E_PARSE, "%s:%lld: missing prompt/test/entry_point/canonical_solution", path, (long long)i + 1);
          else {
            nc_buf a;
            nc_buf_init(&a);
            nc_buf_printf(&a, "%s\n%s", pr, sol);
            nc_chat_conv(pr, a.data, &conv);
            nc_buf_free(&a);
          }
        } else {
          st = nc_task_generate(NC_TASK_SPELLING_BEE, &words, 1234567, i, &conv);
          if (!st && !nc_task_conversation_answer(conv.data, conv.len, ref, sizeof ref)) st = nc_errorf(NC_E_INTERNAL, "SpellingBee: no reference answer");
        }
        int ns = o->num_samples > 0 && o->num_samples <= 64 ? o->num_samples : 1;
        bool too_long = false;
        if (!st) st = nc_chat_generate(eng, o, conv.data, conv.len, comp, &too_long);
        ntoolong += too_long;
        bool pass = false;
        for (int s = 0; !st && s < ns; s++) {
          if (ti == 4) {
            nc_buf prog;
            nc_buf_init(&prog);
            nc_chat_humaneval_program(pr, comp[s].data ? comp[s].data : "", test, entry, &prog);
            nc_runner_opts ro;
            nc_runner_opts_default(&ro);
            nc_run_result rr;
            st = nc_runner_exec(prog.data, prog.len, &ro, &rr);
            pass |= !st && rr.outcome == NC_RUN_PASS;
            nc_buf_free(&prog);
          } else
            pass |= nc_task_reward(comp[s].data ? comp[s].data : "", comp[s].len, ref) > 0.5;
        }
        if (!st)
          for (int s = 0; s < ns; s++) nc_buf_free(&comp[s]);
        nc_buf_free(&conv);
        r->passed += pass;
        r->n++;
        double now = nc_clock_now();
        if (o->progress && now - last > 5) {
          fprintf(stderr, "%s: %lld/%lld, %lld passed (%.0f s)\n", task, (long long)i + 1, (long long)nrow, (long long)r->passed, now - t0);
          last = now;
        }
      }
      if (ntoolong)
        snprintf(r->note, sizeof r->note, "%lld prompts longer than the model's context (%lld tokens) counted as failed",
                 (long long)ntoolong, (long long)nc_engine_max_seq(eng));
      if (rows) nc_chat_jsonl_free(rows, nrow);
      nc_gsm8k_free(&gsm);
      if (ti == 5) nc_wordlist_free(&words);
    }
    if (st) {
      st = nc_status_prefix(st, "%s: ", task);
      break;
    }
    r->seconds = nc_clock_now() - t0;
    r->acc = r->n ? (double)r->passed / (double)r->n : 0;
    double b = nc_chat_baseline(task);
    r->centered = (r->acc - b) / (1.0 - b);
    sum += r->centered;
    ncen++;
    if (o->progress) fprintf(stderr, "chat eval: %-14s n=%-6lld acc %.4f centered %+.4f (%.1f s)\n", task, (long long)r->n, r->acc, r->centered, r->seconds);
  }
  nc_evalfwd_free(f);
  if (eng) nc_engine_close(eng);
  if (st) {
    free(rs);
    return st;
  }
  *res = rs;
  *nres = nr;
  *chatcore = ncen ? sum / ncen : NAN;
  *complete = ncen == NC_CHAT_NTASKS;
  return NC_OK;
}

nc_status nc_chat_results_merge(nc_chat_result *res, int nres, const nc_chat_result *part, int npart, double *chatcore,
                                bool *complete) {
  int ncen = 0;
  double sum = 0;
  for (int i = 0; i < nres; i++) {
    nc_chat_result *r = &res[i];
    for (int j = 0; !r->skipped && j < npart; j++) {
      if (strcmp(part[j].task, r->task) || part[j].skipped) continue;
      if (part[j].n < 0 || part[j].passed < 0 || part[j].passed > part[j].n)
        return nc_errorf(NC_E_INVALID, "merge: task '%s' has %lld passed of %lld", r->task, (long long)part[j].passed, (long long)part[j].n);
      r->n += part[j].n;
      r->passed += part[j].passed;
      r->seconds = part[j].seconds > r->seconds ? part[j].seconds : r->seconds;
    }
    if (r->skipped) continue;
    r->acc = r->n ? (double)r->passed / (double)r->n : 0;
    double b = nc_chat_baseline(r->task);
    r->centered = (r->acc - b) / (1.0 - b);
    sum += r->centered;
    ncen++;
  }
  *chatcore = ncen ? sum / ncen : NAN;
  *complete = ncen == NC_CHAT_NTASKS;
  return NC_OK;
}
