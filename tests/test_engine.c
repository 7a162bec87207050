// The engine end to end (engine/engine.h) on small checkpoints: greedy
// generation against a full-forward oracle (interpreter), batching that does
// not change results, seeds, n > 1, stop strings, max_tokens, cancel, the
// queue, the calculator tool on a rigged model, and bad inputs.
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "engine/engine.h"
#include "models/gpt.h"
#include "tests/support/tok_util.h"

static char dir[256];
static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/nc_engine_XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
}
static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}
TestSuite(engine, .init = setup, .fini = teardown);

// tiny-all with a vocabulary for the test tokenizer (256 bytes + merges + 9 specials <= 320).
static const char *SPEC_ALL =
    "<model version=\"1\" name=\"tall\"><dims depth=\"4\" aspect_ratio=\"8\" head_dim=\"16\" n_kv_head=\"1\" "
    "vocab_size=\"320\" sequence_len=\"64\"/><attention rope_base=\"100000\" window_pattern=\"SSSL\" "
    "short_window=\"8\" qk_scale=\"1.2\"/><output softcap=\"15\"/><features value_embeds=\"on\" "
    "resid_lambdas=\"on\" smear=\"on\" backout=\"on\"/></model>";
static const char *SPEC_PLAIN =
    "<model version=\"1\" name=\"tplain\"><dims depth=\"2\" aspect_ratio=\"16\" head_dim=\"16\" "
    "vocab_size=\"320\" sequence_len=\"64\"/><attention rope_base=\"10000\" window_pattern=\"L\"/>"
    "<output softcap=\"15\"/></model>";

static uint64_t rng_next(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static nc_tok *test_tok(void) {
  static const char *const merges[] = {"he", "th", "the", "in", "ing", "er", "an", "hello", "wor", "world"};
  return nc_tok_test_small(merges, sizeof merges / sizeof merges[0]);
}

// Writes a checkpoint of spec xml (every zero tensor made random) + the test
// tokenizer into path; returns the session (caller frees) and the spec.
static nc_session *make_ckpt(const char *path, const char *xml, nc_model_spec *s) {
  nc_status st = nc_spec_parse(xml, strlen(xml), "test spec", s);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_session *p = nc_session_new();
  cr_assert_null(nc_model_init_session(s, 5, p));
  uint64_t x = 0x1234567;
  for (int k = 0; k < nc_session_count(p); k++) {
    nc_tensor *t = (nc_tensor *)nc_session_get(p, nc_session_name_at(p, k));
    float *d = t->data;
    bool zero = true;
    for (int64_t i = 0; i < nc_tensor_numel(t); i++) zero &= d[i] == 0;
    if (zero)
      for (int64_t i = 0; i < nc_tensor_numel(t); i++) d[i] = (float)((double)(rng_next(&x) % 2001) / 1000.0 - 1.0) * 0.3f;
  }
  st = nc_model_ckpt_save(path, 0, s, p, NULL, NULL);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_tok *t = test_tok();
  char tp[512];
  snprintf(tp, sizeof tp, "%s/tokenizer.tiktoken", path);
  cr_assert_null(nc_tok_save(t, tp));
  nc_tok_free(t);
  return p;
}

static nc_engine *open_engine(const char *path, const char *device, int slots) {
  nc_engine_opts o;
  nc_engine_opts_default(&o);
  o.ckpt_dir = path;
  o.slots = slots;
  cr_assert_null(nc_device_parse(device, &o.device));
  o.device.threads = 2;
  nc_engine *e;
  nc_status st = nc_engine_open(&o, &e);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return e;
}

static void prompt_of(const nc_tok *t, const char *text, nc_ids *out) {
  memset(out, 0, sizeof *out);
  cr_assert_null(nc_ids_push(out, nc_tok_bos_id(t)));
  cr_assert_null(nc_ids_push(out, nc_tok_special_id(t, "<|user_start|>")));
  cr_assert_null(nc_tok_encode(t, text, strlen(text), NULL, out));
  cr_assert_null(nc_ids_push(out, nc_tok_special_id(t, "<|user_end|>")));
  cr_assert_null(nc_ids_push(out, nc_tok_special_id(t, "<|assistant_start|>")));
}

// Greedy decoding by full forward passes on the interpreter (the oracle).
static void oracle_greedy(const nc_model_spec *s, nc_session *p, const nc_tok *t, const nc_ids *prompt, int max,
                          nc_ids *out) {
  nc_graph *g;
  nc_gpt_opts o = {.with_logits = true};
  cr_assert_null(nc_gpt_build(s, &o, &g));
  int32_t seq[128];
  size_t n = prompt->len;
  memcpy(seq, prompt->data, n * sizeof *seq);
  int32_t tv = (int32_t)nc_tok_vocab_size(t), end = nc_tok_special_id(t, "<|assistant_end|>");
  memset(out, 0, sizeof *out);
  int np = nc_session_count(p);
  nc_feed *f = calloc((size_t)np + 1, sizeof *f);
  for (int k = 0; k < np; k++) f[k] = (nc_feed){nc_session_name_at(p, k), nc_session_get(p, nc_session_name_at(p, k))};
  for (int step = 0; step < max && n < (size_t)s->sequence_len; step++) {
    nc_tensor tt = nc_tensor_wrap(seq, NC_I32, 2, (int64_t[]){1, (int64_t)n}), lg;
    f[np] = (nc_feed){"tokens", &tt};
    cr_assert_null(nc_interp_run(g, f, np + 1, &lg));
    const float *row = (const float *)lg.data + (n - 1) * (size_t)s->vocab_size;
    int32_t best = 0;
    for (int32_t i = 1; i < tv; i++)
      if (row[i] > row[best]) best = i;
    nc_tensor_free(&lg);
    if (best == end || best == nc_tok_bos_id(t)) break;
    nc_ids_push(out, best);
    seq[n++] = best;
  }
  free(f);
  nc_graph_free(g);
}

static nc_gen_opts greedy(int max) {
  nc_gen_opts o;
  nc_gen_opts_default(&o);
  o.temperature = 0;
  o.max_tokens = max;
  o.tools = false;
  return o;
}

static void check_greedy(const char *xml, const char *device) {
  nc_model_spec s;
  nc_session *p = make_ckpt(dir, xml, &s);
  nc_engine *e = open_engine(dir, device, 4);
  nc_ids prompt, want;
  prompt_of(nc_engine_tok(e), "hello world", &prompt);
  oracle_greedy(&s, p, nc_engine_tok(e), &prompt, 30, &want);
  nc_gen_opts o = greedy(30);
  nc_gen_result r;
  nc_status st = nc_engine_generate(e, prompt.data, prompt.len, &o, &r);
  cr_assert_null(st, "%s", nc_status_msg(st));
  cr_assert_eq(r.n, 1);
  cr_assert_eq(r.prompt_tokens, (int64_t)prompt.len);
  cr_assert_eq(r.tokens[0].len, want.len, "%s/%s: %zu tokens, oracle %zu", s.name, device, r.tokens[0].len, want.len);
  for (size_t i = 0; i < want.len; i++) cr_assert_eq(r.tokens[0].data[i], want.data[i], "token %zu", i);
  cr_assert_eq(r.finish[0], want.len == 30 ? NC_FINISH_LENGTH : NC_FINISH_STOP);
  nc_buf dec;
  nc_buf_init(&dec);
  cr_assert_null(nc_tok_decode(nc_engine_tok(e), want.data, want.len, &dec));
  cr_assert_eq(r.text[0].len, dec.len);
  cr_assert(!dec.len || !memcmp(r.text[0].data, dec.data, dec.len));
  for (size_t i = 0; i < r.mask[0].len; i++) cr_assert_eq(r.mask[0].data[i], 1);
  nc_buf_free(&dec);
  nc_gen_result_free(&r);
  nc_ids_free(&prompt);
  nc_ids_free(&want);
  nc_engine_close(e);
  nc_session_free(p);
}

Test(engine, greedy_matches_oracle_interp_all_features) { check_greedy(SPEC_ALL, "interp"); }
Test(engine, greedy_matches_oracle_cpu_plain) { check_greedy(SPEC_PLAIN, "cpu"); }

// ---- streaming, concurrency, cancel -------------------------------------------------------
typedef struct {
  pthread_mutex_t mu;
  nc_buf text[4];
  nc_finish fin[4];
  int events, finished, n;
  int64_t completion[4];
  bool bad;  // an event after the end, or a partial code point
  nc_engine *e;
  uint64_t cancel_id;
  int cancel_after;  // cancel from the callback after this many events (0 = never)
} sink;

static void sink_init(sink *k, int n) {
  memset(k, 0, sizeof *k);
  pthread_mutex_init(&k->mu, NULL);
  k->n = n;
  for (int i = 0; i < 4; i++) nc_buf_init(&k->text[i]);
}
static void sink_free(sink *k) {
  for (int i = 0; i < 4; i++) nc_buf_free(&k->text[i]);
  pthread_mutex_destroy(&k->mu);
}

static void sink_cb(void *user, const nc_gen_event *ev) {
  sink *k = user;
  pthread_mutex_lock(&k->mu);
  k->events++;
  if (ev->sample < 0 || ev->sample >= k->n || k->fin[ev->sample] != NC_FINISH_NONE) k->bad = true;
  else {
    nc_buf_put(&k->text[ev->sample], ev->text, ev->len);
    k->completion[ev->sample] = ev->completion_tokens;
    if (ev->finish != NC_FINISH_NONE) {
      k->fin[ev->sample] = ev->finish;
      k->finished++;
    }
  }
  bool cancel = k->cancel_after && k->events == k->cancel_after;
  pthread_mutex_unlock(&k->mu);
  if (cancel) nc_engine_cancel(k->e, ev->req);
}

static void sink_wait(sink *k, int want_finished) {
  for (int i = 0; i < 20000; i++) {
    pthread_mutex_lock(&k->mu);
    int f = k->finished;
    pthread_mutex_unlock(&k->mu);
    if (f >= want_finished) return;
    usleep(1000);
  }
  cr_assert_fail("timed out waiting for %d finished samples", want_finished);
}

Test(engine, concurrent_requests_match_alone_and_stream_utf8) {
  nc_model_spec s;
  nc_session *p = make_ckpt(dir, SPEC_PLAIN, &s);
  nc_engine *e = open_engine(dir, "cpu", 3);
  static const char *const prompts[6] = {"hello", "the world", "thinking", "an answer", "héllo wörld", "x"};
  nc_ids ids[6];
  nc_gen_result alone[6];
  nc_gen_opts o = greedy(24);
  for (int i = 0; i < 6; i++) {
    prompt_of(nc_engine_tok(e), prompts[i], &ids[i]);
    cr_assert_null(nc_engine_generate(e, ids[i].data, ids[i].len, &o, &alone[i]));
  }
  // all six at once through 3 slots (the rest wait in the queue)
  sink k[6];
  uint64_t id[6];
  for (int i = 0; i < 6; i++) {
    sink_init(&k[i], 1);
    nc_status st = nc_engine_submit(e, ids[i].data, ids[i].len, &o, sink_cb, &k[i], &id[i]);
    cr_assert_null(st, "%s", nc_status_msg(st));
  }
  nc_engine_stats stats;
  nc_engine_stats_get(e, &stats);
  cr_assert_eq(stats.slots, 3);
  cr_assert(stats.active <= 3);
  for (int i = 0; i < 6; i++) {
    sink_wait(&k[i], 1);
    cr_assert(!k[i].bad);
    cr_assert_eq(k[i].fin[0], alone[i].finish[0]);
    cr_assert_eq(k[i].text[0].len, alone[i].text[0].len, "request %d: %zu bytes streamed, %zu alone", i,
                 k[i].text[0].len, alone[i].text[0].len);
    cr_assert(!k[i].text[0].len || !memcmp(k[i].text[0].data, alone[i].text[0].data, k[i].text[0].len));
    cr_assert_eq(k[i].completion[0], (int64_t)alone[i].tokens[0].len + (alone[i].finish[0] == NC_FINISH_STOP));
    sink_free(&k[i]);
    nc_gen_result_free(&alone[i]);
    nc_ids_free(&ids[i]);
  }
  nc_engine_close(e);
  nc_session_free(p);
}

Test(engine, seeds_samples_and_penalties) {
  nc_model_spec s;
  nc_session *p = make_ckpt(dir, SPEC_PLAIN, &s);
  nc_engine *e = open_engine(dir, "cpu", 8);
  nc_ids ids;
  prompt_of(nc_engine_tok(e), "hello", &ids);
  nc_gen_opts o;
  nc_gen_opts_default(&o);
  o.max_tokens = 20;
  o.n = 3;
  o.seeded = true;
  o.seed = 42;
  o.top_k = 50;
  o.top_p = 0.9;
  o.temperature = 1.5;
  nc_gen_result a, b, c;
  cr_assert_null(nc_engine_generate(e, ids.data, ids.len, &o, &a));
  cr_assert_null(nc_engine_generate(e, ids.data, ids.len, &o, &b));
  o.seed = 43;
  cr_assert_null(nc_engine_generate(e, ids.data, ids.len, &o, &c));
  cr_assert_eq(a.n, 3);
  bool samples_differ = false, seeds_differ = false;
  for (int k = 0; k < 3; k++) {
    cr_assert_eq(a.tokens[k].len, b.tokens[k].len, "same seed, same output");
    cr_assert(!a.tokens[k].len || !memcmp(a.tokens[k].data, b.tokens[k].data, a.tokens[k].len * 4));
    if (k && (a.tokens[k].len != a.tokens[0].len || memcmp(a.tokens[k].data, a.tokens[0].data, a.tokens[0].len * 4)))
      samples_differ = true;
    if (a.tokens[k].len != c.tokens[k].len || memcmp(a.tokens[k].data, c.tokens[k].data, a.tokens[k].len * 4))
      seeds_differ = true;
  }
  cr_assert(samples_differ, "the 3 samples of one request are not all the same");
  cr_assert(seeds_differ, "another seed gives another output");
  nc_gen_result_free(&a);
  nc_gen_result_free(&b);
  nc_gen_result_free(&c);
  // a strong presence penalty under greedy decoding: no token twice
  nc_gen_opts g = greedy(15);
  g.presence_penalty = 2.0;
  nc_gen_result r;
  cr_assert_null(nc_engine_generate(e, ids.data, ids.len, &g, &r));
  (void)r;
  nc_gen_opts g0 = greedy(15);
  nc_gen_result r0;
  cr_assert_null(nc_engine_generate(e, ids.data, ids.len, &g0, &r0));
  bool repeats0 = false;
  for (size_t i = 0; i < r0.tokens[0].len; i++)
    for (size_t j = 0; j < i; j++) repeats0 |= r0.tokens[0].data[i] == r0.tokens[0].data[j];
  if (repeats0) {  // penalties only matter when greedy repeats itself
    bool differs = r.tokens[0].len != r0.tokens[0].len || memcmp(r.tokens[0].data, r0.tokens[0].data, r0.tokens[0].len * 4);
    cr_assert(differs, "the presence penalty changed nothing");
  }
  nc_gen_result_free(&r);
  nc_gen_result_free(&r0);
  nc_ids_free(&ids);
  nc_engine_close(e);
  nc_session_free(p);
}

Test(engine, stop_strings_and_max_tokens) {
  nc_model_spec s;
  nc_session *p = make_ckpt(dir, SPEC_PLAIN, &s);
  nc_engine *e = open_engine(dir, "cpu", 2);
  nc_ids ids;
  prompt_of(nc_engine_tok(e), "the", &ids);
  nc_gen_opts o = greedy(40);
  nc_gen_result full;
  cr_assert_null(nc_engine_generate(e, ids.data, ids.len, &o, &full));
  const char *t = full.text[0].data;
  size_t n = full.text[0].len;
  cr_assert(n >= 12, "need some text to cut (%zu bytes)", n);
  // a stop string from the middle: the output ends just before its first occurrence
  char stop[8] = {0};
  for (size_t at = n / 2; at + 3 <= n && !stop[0]; at++) {  // a valid UTF-8 window, no NUL
    if (memchr(t + at, 0, 3) || nc_utf8_invalid_at(t + at, 3) >= 0) continue;
    memcpy(stop, t + at, 3);
  }
  if (!stop[0]) cr_skip_test("no 3-byte valid UTF-8 window in the greedy text");
  size_t first = 0;
  while (memcmp(t + first, stop, 3)) first++;
  o.nstop = 2;
  o.stop[0] = "never appears \x01";
  o.stop[1] = stop;
  sink k;
  sink_init(&k, 1);
  uint64_t id;
  cr_assert_null(nc_engine_submit(e, ids.data, ids.len, &o, sink_cb, &k, &id));
  sink_wait(&k, 1);
  cr_assert_eq(k.fin[0], NC_FINISH_STOP);
  cr_assert_eq(k.text[0].len, first, "stopped text %zu bytes, want %zu", k.text[0].len, first);
  cr_assert(!first || !memcmp(k.text[0].data, t, first));
  sink_free(&k);
  // max_tokens
  nc_gen_opts m = greedy(3);
  nc_gen_result r;
  cr_assert_null(nc_engine_generate(e, ids.data, ids.len, &m, &r));
  if (full.tokens[0].len >= 3) {
    cr_assert_eq(r.finish[0], NC_FINISH_LENGTH);
    cr_assert_eq(r.tokens[0].len, 3);
  }
  nc_gen_result_free(&r);
  nc_gen_result_free(&full);
  nc_ids_free(&ids);
  nc_engine_close(e);
  nc_session_free(p);
}

Test(engine, cancel_stops_events_and_frees_the_slot) {
  nc_model_spec s;
  nc_session *p = make_ckpt(dir, SPEC_PLAIN, &s);
  nc_engine *e = open_engine(dir, "cpu", 1);
  nc_ids ids;
  prompt_of(nc_engine_tok(e), "hello", &ids);
  nc_gen_opts o;
  nc_gen_opts_default(&o);
  o.max_tokens = 10000;  // the context (64) ends it at the latest
  o.seeded = true;
  // from another thread: no event after cancel returns, the slot is free at once
  sink k;
  sink_init(&k, 1);
  uint64_t id, id2;
  cr_assert_null(nc_engine_submit(e, ids.data, ids.len, &o, sink_cb, &k, &id));
  cr_assert_null(nc_engine_submit(e, ids.data, ids.len, &o, sink_cb, &k, &id2));  // queued behind it
  for (int i = 0; i < 5000; i++) {
    pthread_mutex_lock(&k.mu);
    int ev = k.events;
    pthread_mutex_unlock(&k.mu);
    if (ev) break;
    usleep(1000);
  }
  nc_engine_cancel(e, id2);  // still queued
  nc_engine_cancel(e, id);
  nc_engine_stats st;
  nc_engine_stats_get(e, &st);
  cr_assert_eq(st.active, 0);
  cr_assert_eq(st.queued, 0);
  pthread_mutex_lock(&k.mu);
  int seen = k.events;
  pthread_mutex_unlock(&k.mu);
  usleep(50000);
  pthread_mutex_lock(&k.mu);
  cr_assert_eq(k.events, seen, "events after cancel");
  pthread_mutex_unlock(&k.mu);
  nc_engine_cancel(e, id);        // again: ignored
  nc_engine_cancel(e, 987654321); // unknown: ignored
  sink_free(&k);
  // from inside a callback
  sink k2;
  sink_init(&k2, 1);
  k2.e = e;
  k2.cancel_after = 2;
  cr_assert_null(nc_engine_submit(e, ids.data, ids.len, &o, sink_cb, &k2, &id));
  for (int i = 0; i < 5000; i++) {
    nc_engine_stats_get(e, &st);
    pthread_mutex_lock(&k2.mu);
    int ev = k2.events;
    pthread_mutex_unlock(&k2.mu);
    if (ev >= 2 && st.active == 0 && st.queued == 0) break;
    usleep(1000);
  }
  usleep(20000);
  pthread_mutex_lock(&k2.mu);
  cr_assert_eq(k2.events, 2, "%d events, cancelled after 2", k2.events);
  pthread_mutex_unlock(&k2.mu);
  sink_free(&k2);
  // the engine still works
  nc_gen_opts g = greedy(4);
  nc_gen_result r;
  cr_assert_null(nc_engine_generate(e, ids.data, ids.len, &g, &r));
  nc_gen_result_free(&r);
  nc_ids_free(&ids);
  nc_engine_close(e);
  nc_session_free(p);
}

typedef struct {
  nc_engine *e;
  nc_ids *ids;
  nc_status st;
  nc_gen_result r;
} gen_thread;

static void *gen_run(void *arg) {
  gen_thread *g = arg;
  nc_gen_opts o;
  nc_gen_opts_default(&o);
  o.max_tokens = 10000;
  o.temperature = 0;
  o.n = 2;
  g->st = nc_engine_generate(g->e, g->ids->data, g->ids->len, &o, &g->r);
  return NULL;
}

Test(engine, close_with_requests_in_flight) {
  nc_model_spec s;
  static const char *SPEC_LONG =
      "<model version=\"1\" name=\"tlong\"><dims depth=\"1\" aspect_ratio=\"16\" head_dim=\"16\" "
      "vocab_size=\"320\" sequence_len=\"4096\"/><attention rope_base=\"10000\" window_pattern=\"L\"/>"
      "<output softcap=\"15\"/></model>";
  nc_session *p = make_ckpt(dir, SPEC_LONG, &s);
  // lm_head zero: every logit 0, greedy picks token 0 forever (no request ends by itself)
  nc_tensor *lm = (nc_tensor *)nc_session_get(p, "lm_head.weight");
  memset(lm->data, 0, (size_t)nc_tensor_numel(lm) * sizeof(float));
  cr_assert_null(nc_model_ckpt_save(dir, 1, &s, p, NULL, NULL));
  nc_engine *e = open_engine(dir, "cpu", 2);
  nc_ids ids;
  prompt_of(nc_engine_tok(e), "hello", &ids);
  nc_gen_opts o;
  nc_gen_opts_default(&o);
  o.max_tokens = 10000;
  o.temperature = 0;
  sink k;
  sink_init(&k, 2);
  for (int i = 0; i < 5; i++) cr_assert_null(nc_engine_submit(e, ids.data, ids.len, &o, sink_cb, &k, NULL));
  gen_thread g = {.e = e, .ids = &ids};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, gen_run, &g), 0);
  nc_engine_stats es = {0};
  for (int i = 0; i < 10000 && !(es.queued == 4 && es.active == 2); i++) {  // 3 requests + the generate wait
    usleep(1000);
    nc_engine_stats_get(e, &es);
  }
  cr_assert_eq(es.queued, 4, "queued %d active %d", es.queued, es.active);
  nc_engine_close(e);  // cancels all: no crash, no leak (ASan)
  pthread_join(th, NULL);  // the waiting generate got its result back
  cr_assert_null(g.st);
  cr_assert_eq(g.r.n, 2);
  for (int i = 0; i < 2; i++)
    cr_assert(g.r.finish[i] == NC_FINISH_CANCELLED || g.r.finish[i] == NC_FINISH_LENGTH, "finish %d", g.r.finish[i]);
  nc_gen_result_free(&g.r);
  sink_free(&k);
  nc_ids_free(&ids);
  nc_session_free(p);
}

typedef struct {
  pthread_mutex_t mu;
  char text[64];
  int n, nonempty;
  bool done, partial;
} utf8_sink;

static void utf8_cb(void *user, const nc_gen_event *ev) {
  utf8_sink *u = user;
  pthread_mutex_lock(&u->mu);
  if (ev->len) {
    u->nonempty++;
    if (nc_utf8_invalid_at(ev->text, ev->len) >= 0) u->partial = true;
    if (u->n + ev->len < sizeof u->text) memcpy(u->text + u->n, ev->text, ev->len), u->n += (int)ev->len;
  }
  if (ev->finish != NC_FINISH_NONE) u->done = true;
  pthread_mutex_unlock(&u->mu);
}

// A model whose greedy next token depends only on the current one (blocks
// zeroed, lm_head rows pointing at their predecessor's embedding): it writes
// <|python_start|>1+2<|python_end|>, and the engine must force
// <|output_start|>3<|output_end|> (mask 0) before the model ends the turn.
Test(engine, calculator_tool_forces_the_result) {
  nc_model_spec s;
  nc_session *p = make_ckpt(dir, SPEC_PLAIN, &s);
  nc_tok *t = test_tok();
  int32_t ps = nc_tok_special_id(t, "<|python_start|>"), pe = nc_tok_special_id(t, "<|python_end|>");
  int32_t os = nc_tok_special_id(t, "<|output_start|>"), oe = nc_tok_special_id(t, "<|output_end|>");
  int32_t end = nc_tok_special_id(t, "<|assistant_end|>");
  int32_t x = nc_tok_rank_of(t, "x", 1), one = nc_tok_rank_of(t, "1", 1), plus = nc_tok_rank_of(t, "+", 1),
          two = nc_tok_rank_of(t, "2", 1), three = nc_tok_rank_of(t, "3", 1);
  // chain: x -> ps -> 1 -> + -> 2 -> pe -> end; oe -> end
  // chain: y -> C3 -> A9 -> E2 -> 82 -> AC -> end ("é€" split over byte tokens)
  int32_t y = nc_tok_rank_of(t, "y", 1), c3 = nc_tok_rank_of(t, "\xc3", 1), a9 = nc_tok_rank_of(t, "\xa9", 1),
          e2 = nc_tok_rank_of(t, "\xe2", 1), b82 = nc_tok_rank_of(t, "\x82", 1), ac = nc_tok_rank_of(t, "\xac", 1);
  int32_t src[] = {x, ps, one, plus, two, pe, oe, y, c3, a9, e2, b82, ac},
          dst[] = {ps, one, plus, two, pe, end, end, c3, a9, e2, b82, ac, end};
  for (int k = 0; k < nc_session_count(p); k++) {
    const char *name = nc_session_name_at(p, k);
    nc_tensor *w = (nc_tensor *)nc_session_get(p, name);
    if (strstr(name, "c_proj")) memset(w->data, 0, (size_t)nc_tensor_numel(w) * sizeof(float));
  }
  const nc_tensor *wte = nc_session_get(p, "transformer.wte.weight");
  nc_tensor *lm = (nc_tensor *)nc_session_get(p, "lm_head.weight");
  int64_t C = s.model_dim;
  memset(lm->data, 0, (size_t)nc_tensor_numel(lm) * sizeof(float));
  for (size_t i = 0; i < sizeof src / sizeof src[0]; i++) {
    const float *w = (const float *)wte->data + src[i] * C;
    double ss = 0;
    for (int64_t c = 0; c < C; c++) ss += (double)w[c] * w[c];
    double rms = sqrt(ss / (double)C);
    float *row = (float *)lm->data + dst[i] * C;
    for (int64_t c = 0; c < C; c++) row[c] += (float)(10.0 * w[c] / rms / (double)C);
  }
  char d2[300];
  snprintf(d2, sizeof d2, "%s/rigged", dir);
  cr_assert_null(nc_model_ckpt_save(d2, 0, &s, p, NULL, NULL));
  char tp[512];
  snprintf(tp, sizeof tp, "%s/tokenizer.tiktoken", d2);
  cr_assert_null(nc_tok_save(t, tp));
  nc_engine *e = open_engine(d2, "cpu", 2);
  int32_t prompt[] = {nc_tok_bos_id(t), x};
  nc_gen_opts o = greedy(20);
  o.tools = true;
  nc_gen_result r;
  cr_assert_null(nc_engine_generate(e, prompt, 2, &o, &r));
  int32_t want[] = {ps, one, plus, two, pe, os, three, oe};
  uint8_t wmask[] = {1, 1, 1, 1, 1, 0, 0, 0};
  cr_assert_eq(r.tokens[0].len, 8, "%zu tokens", r.tokens[0].len);
  for (int i = 0; i < 8; i++) {
    cr_assert_eq(r.tokens[0].data[i], want[i], "token %d: %d, want %d", i, r.tokens[0].data[i], want[i]);
    cr_assert_eq((uint8_t)r.mask[0].data[i], wmask[i], "mask %d", i);
  }
  cr_assert_eq(r.finish[0], NC_FINISH_STOP);
  const char *wt = "<|python_start|>1+2<|python_end|><|output_start|>3<|output_end|>";
  cr_assert_eq(r.text[0].len, strlen(wt), "%.*s", (int)r.text[0].len, r.text[0].data);
  cr_assert(!memcmp(r.text[0].data, wt, strlen(wt)));
  nc_gen_result_free(&r);
  // tools off: nothing forced, the model ends after <|python_end|>
  o.tools = false;
  cr_assert_null(nc_engine_generate(e, prompt, 2, &o, &r));
  cr_assert_eq(r.tokens[0].len, 5);
  nc_gen_result_free(&r);
  // streaming: every event holds whole code points only
  utf8_sink u = {.n = 0};
  pthread_mutex_init(&u.mu, NULL);
  int32_t prompt2[] = {nc_tok_bos_id(t), y};
  uint64_t id;
  cr_assert_null(nc_engine_submit(e, prompt2, 2, &o, utf8_cb, &u, &id));
  for (int i = 0; i < 5000; i++) {
    pthread_mutex_lock(&u.mu);
    bool done = u.done;
    pthread_mutex_unlock(&u.mu);
    if (done) break;
    usleep(1000);
  }
  cr_assert(u.done);
  cr_assert(!u.partial, "an event ended inside a code point");
  cr_assert_str_eq(u.text, "\xc3\xa9\xe2\x82\xac");
  cr_assert_eq(u.nonempty, 2, "%d text events (one per completed character)", u.nonempty);
  pthread_mutex_destroy(&u.mu);
  nc_engine_close(e);
  nc_tok_free(t);
  nc_session_free(p);
}

static void expect_submit_error(nc_engine *e, const int32_t *ids, size_t n, const nc_gen_opts *o, const char *what) {
  uint64_t id;
  nc_status st = nc_engine_submit(e, ids, n, o, NULL, NULL, &id);
  cr_assert_not_null(st, "expected an error mentioning '%s'", what);
  cr_assert(strstr(nc_status_msg(st), what), "'%s' does not mention '%s'", nc_status_msg(st), what);
  nc_status_free(st);
}

Test(engine, bad_inputs_are_errors) {
  nc_model_spec s;
  nc_session *p = make_ckpt(dir, SPEC_PLAIN, &s);
  nc_engine_opts eo;
  nc_engine_opts_default(&eo);
  nc_engine *e;
  nc_status st = nc_engine_open(&eo, &e);  // no folder
  cr_assert_not_null(st);
  nc_status_free(st);
  eo.ckpt_dir = "/nonexistent/ckpt";
  st = nc_engine_open(&eo, &e);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "/nonexistent/ckpt"), "%s", nc_status_msg(st));
  nc_status_free(st);
  eo.ckpt_dir = dir;
  eo.tokenizer = "/nonexistent/tok.tiktoken";
  st = nc_engine_open(&eo, &e);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "tok.tiktoken"), "%s", nc_status_msg(st));
  nc_status_free(st);
  eo.tokenizer = NULL;
  eo.slots = 0;
  st = nc_engine_open(&eo, &e);
  cr_assert_not_null(st);
  nc_status_free(st);
  eo.slots = 2;
  eo.queue_max = 0;
  cr_assert_null(nc_engine_open(&eo, &e));
  cr_assert_str_eq(nc_engine_model_name(e), "nanochat-tplain");
  cr_assert_eq(nc_engine_max_seq(e), 64);
  cr_assert_eq(nc_engine_spec(e)->vocab_size, 320);
  int32_t ids[80] = {0};
  nc_gen_opts o;
  nc_gen_opts_default(&o);
  expect_submit_error(e, ids, 0, &o, "empty");
  expect_submit_error(e, ids, 65, &o, "context");
  ids[1] = 5000;
  expect_submit_error(e, ids, 2, &o, "vocabulary");
  ids[1] = 0;
  nc_gen_opts b = o;
  b.n = 3;
  expect_submit_error(e, ids, 2, &b, "n = 3");
  b = o, b.max_tokens = 0;
  expect_submit_error(e, ids, 2, &b, "max_tokens");
  b = o, b.temperature = -1;
  expect_submit_error(e, ids, 2, &b, "temperature");
  b = o, b.temperature = NAN;
  expect_submit_error(e, ids, 2, &b, "temperature");
  b = o, b.top_p = 0;
  expect_submit_error(e, ids, 2, &b, "top_p");
  b = o, b.top_k = -2;
  expect_submit_error(e, ids, 2, &b, "top_k");
  b = o, b.presence_penalty = 3;
  expect_submit_error(e, ids, 2, &b, "presence_penalty");
  b = o, b.frequency_penalty = -2.5;
  expect_submit_error(e, ids, 2, &b, "frequency_penalty");
  b = o, b.nstop = 1, b.stop[0] = "";
  expect_submit_error(e, ids, 2, &b, "stop string 0");
  b = o, b.nstop = 2, b.stop[0] = "ok", b.stop[1] = "a\xc3";
  expect_submit_error(e, ids, 2, &b, "stop string 1 is not valid UTF-8");
  b = o, b.nstop = 5;
  expect_submit_error(e, ids, 2, &b, "stop strings");
  expect_submit_error(e, ids, 2, &o, "queue full");
  nc_engine_close(e);
  // a tokenizer larger than the model's vocabulary
  nc_model_spec s2;
  char d2[300];
  snprintf(d2, sizeof d2, "%s/small", dir);
  const char *xml = "<model version=\"1\" name=\"v64\"><dims depth=\"1\" aspect_ratio=\"16\" head_dim=\"16\" "
                    "vocab_size=\"64\" sequence_len=\"16\"/><attention rope_base=\"10000\" window_pattern=\"L\"/>"
                    "<output softcap=\"15\"/></model>";
  nc_session *p2 = make_ckpt(d2, xml, &s2);
  eo.ckpt_dir = d2;
  st = nc_engine_open(&eo, &e);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "vocab_size"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_session_free(p2);
  nc_session_free(p);
}

// ---- many threads submitting and cancelling at once --------------------------------------
typedef struct {
  nc_engine *e;
  nc_ids *ids;
  int seed, finished, cancelled, late;
} storm_arg;

typedef struct {
  pthread_mutex_t mu;
  bool cancelled, finished;
  int n, nfinished;
  int late;  // events after cancel returned
} storm_req;

static void storm_cb(void *user, const nc_gen_event *ev) {
  storm_req *q = user;
  pthread_mutex_lock(&q->mu);
  if (q->cancelled) q->late++;
  if (ev->finish != NC_FINISH_NONE && ++q->nfinished == q->n) q->finished = true;
  pthread_mutex_unlock(&q->mu);
}

static void *storm_run(void *arg) {
  storm_arg *a = arg;
  unsigned x = (unsigned)a->seed * 2654435761u + 1;
  storm_req q[12];
  uint64_t id[12];
  for (int i = 0; i < 12; i++) {
    memset(&q[i], 0, sizeof q[i]);
    pthread_mutex_init(&q[i].mu, NULL);
    nc_gen_opts o;
    nc_gen_opts_default(&o);
    x = x * 1103515245u + 12345u;
    o.max_tokens = 1 + (int)((x >> 16) % 40);
    o.n = 1 + (int)((x >> 8) % 2);
    q[i].n = o.n;
    o.seeded = true;
    o.seed = x;
    cr_assert_null(nc_engine_submit(a->e, a->ids->data, a->ids->len, &o, storm_cb, &q[i], &id[i]));
    if ((x >> 20) % 3 == 0) {
      usleep((x >> 4) % 3000);
      nc_engine_cancel(a->e, id[i]);
      pthread_mutex_lock(&q[i].mu);
      q[i].cancelled = true;
      pthread_mutex_unlock(&q[i].mu);
    }
  }
  for (int i = 0; i < 12; i++) {
    for (int w = 0; w < 20000; w++) {
      pthread_mutex_lock(&q[i].mu);
      bool end = q[i].finished || q[i].cancelled;
      pthread_mutex_unlock(&q[i].mu);
      if (end) break;
      usleep(500);
    }
    pthread_mutex_lock(&q[i].mu);
    a->finished += q[i].finished;
    a->cancelled += q[i].cancelled && !q[i].finished;
    a->late += q[i].late;
    bool end = q[i].finished || q[i].cancelled;
    pthread_mutex_unlock(&q[i].mu);
    cr_assert(end, "request %d of thread %d never finished", i, a->seed);
  }
  for (int i = 0; i < 12; i++) pthread_mutex_destroy(&q[i].mu);
  return NULL;
}

Test(engine, concurrent_submit_and_cancel_storm) {
  nc_model_spec s;
  nc_session *p = make_ckpt(dir, SPEC_PLAIN, &s);
  nc_engine_opts eo;
  nc_engine_opts_default(&eo);
  eo.ckpt_dir = dir;
  eo.slots = 5;
  eo.queue_max = 100;
  eo.device.threads = 1;
  nc_engine *e;
  cr_assert_null(nc_engine_open(&eo, &e));
  nc_ids ids;
  prompt_of(nc_engine_tok(e), "storm", &ids);
  storm_arg a[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (storm_arg){.e = e, .ids = &ids, .seed = i + 1};
    cr_assert_eq(pthread_create(&th[i], NULL, storm_run, &a[i]), 0);
  }
  int fin = 0, late = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    fin += a[i].finished;
    late += a[i].late;
  }
  cr_assert_eq(late, 0, "events after nc_engine_cancel returned");
  cr_assert(fin > 0);
  nc_engine_stats st;
  for (int i = 0; i < 1000; i++) {  // the worker frees the rows right after the last events
    nc_engine_stats_get(e, &st);
    if (!st.active) break;
    usleep(1000);
  }
  cr_assert_eq(st.active, 0, "active %d queued %d finished %d", st.active, st.queued, fin);
  cr_assert_eq(st.queued, 0);
  nc_ids_free(&ids);
  nc_engine_close(e);
  nc_session_free(p);
}
