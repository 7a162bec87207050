// Conversation data (data/sft.h): mixtures with per-source epochs and a
// seeded shuffle, nanochat's SFT best-fit packing that pads (BOS inputs,
// target -1) instead of cropping, masks from the rendered conversations,
// exact resume, ranks, and malformed conversation files (file:line, skip).
//
// Tokenizer: the 256 bytes + nanochat specials (BOS 256, <|user_start|> 257
// ...), so rendered conversations are easy to predict.
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/sft.h"
#include "tests/support/tok_util.h"

#define BOS 256

static char g_dir[512];
static void mk_dir(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/nc_test_sft_XXXXXX");
  cr_assert(mkdtemp(g_dir));
}
static void rm_dir(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  (void)!system(cmd);
}
TestSuite(data_sft, .init = mk_dir, .fini = rm_dir);

static const char *put(const char *name, const char *s, size_t n, bool raw) {
  static char p[8][700];
  static int k;
  char *r = p[k++ % 8];
  snprintf(r, 700, "%s/%s", g_dir, name);
  size_t l = strlen(r);
  if (!raw && l > 3 && !strcmp(r + l - 3, ".gz")) {
    gzFile g = gzopen(r, "wb");
    if (n) gzwrite(g, s, (unsigned)n);
    gzclose(g);
  } else {
    FILE *f = fopen(r, "wb");
    if (n) fwrite(s, 1, n, f);
    fclose(f);
  }
  return r;
}
static const char *puts_(const char *name, const char *s) { return put(name, s, strlen(s), false); }

// n conversations "q<tag><i>" -> "a<tag><i>" + filler of varying length.
static char *convs(char tag, int n, int seed) {
  size_t cap = (size_t)n * 400 + 1;
  char *s = malloc(cap);
  size_t l = 0;
  for (int i = 0; i < n; i++) {
    int fill = (i * 37 + seed * 11) % 60;
    l += (size_t)snprintf(s + l, cap - l,
                          "{\"messages\":[{\"role\":\"user\",\"content\":\"q%c%d\"},{\"role\":\"assistant\",\"content\":"
                          "\"a%c%d %.*s\"}]}\n",
                          tag, i, tag, i, fill, "..........................................................................");
  }
  return s;
}

static nc_sft_mix *open_mix(const nc_sft_source *src, int n, uint64_t seed, bool skip) {
  nc_sft_mix_opts o = {src, n, seed, skip};
  nc_sft_mix *m = NULL;
  nc_status st = nc_sft_mix_open(&o, &m);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  return m;
}

Test(data_sft, mixture_epochs_and_shuffle) {
  char *a = convs('A', 5, 1), *b = convs('B', 3, 2);
  const char *pa = puts_("a.jsonl", a), *pb = puts_("b.jsonl.gz", b);
  nc_sft_source src[] = {{pa, 2}, {pb, 0}};
  nc_sft_mix *m = open_mix(src, 2, 42, false);
  cr_assert_eq(nc_sft_mix_len(m), 13);
  cr_assert_eq(nc_sft_mix_source_len(m, 0), 5);
  cr_assert_eq(nc_sft_mix_source_len(m, 1), 3);
  int count[2][5] = {{0}};
  char order1[13][16];
  for (int64_t i = 0; i < 13; i++) {
    const char *j;
    size_t n;
    int s;
    int64_t line;
    cr_assert(nc_sft_mix_get(m, i, &j, &n, &s, &line) == NC_OK);
    const char *q = strstr(j, "\"q");
    cr_assert(q);
    int tag = q[2] == 'A' ? 0 : 1, idx = atoi(q + 3);
    cr_assert_eq(tag, s);
    cr_assert_eq(line, idx + 1, "line numbers are 1-based source lines");
    count[tag][idx]++;
    snprintf(order1[i], 16, "%c%d", q[2], idx);
  }
  for (int i = 0; i < 5; i++) cr_assert_eq(count[0][i], 2, "source A (epochs 2) entry %d", i);
  for (int i = 0; i < 3; i++) cr_assert_eq(count[1][i], 1);
  // Same seed: same order; another seed: another order.
  nc_sft_mix *m2 = open_mix(src, 2, 42, false), *m3 = open_mix(src, 2, 7, false);
  int same = 1, diff = 0;
  for (int64_t i = 0; i < 13; i++) {
    const char *j2, *j3;
    size_t n2, n3;
    nc_sft_mix_get(m2, i, &j2, &n2, NULL, NULL);
    nc_sft_mix_get(m3, i, &j3, &n3, NULL, NULL);
    char o2[16], o3[16];
    snprintf(o2, 16, "%c%d", strstr(j2, "\"q")[2], atoi(strstr(j2, "\"q") + 3));
    snprintf(o3, 16, "%c%d", strstr(j3, "\"q")[2], atoi(strstr(j3, "\"q") + 3));
    same &= !strcmp(o2, order1[i]);
    diff += !!strcmp(o3, order1[i]);
  }
  cr_assert(same);
  cr_assert(diff > 0);
  // Not the unshuffled order.
  int unshuffled = 1;
  for (int i = 0; i < 5; i++) unshuffled &= order1[i][0] == 'A' && atoi(order1[i] + 1) == i;
  cr_assert(!unshuffled);
  cr_assert(nc_sft_mix_get(m, 13, &(const char *){0}, &(size_t){0}, NULL, NULL) != NC_OK);
  nc_sft_mix_close(m);
  nc_sft_mix_close(m2);
  nc_sft_mix_close(m3);
  free(a);
  free(b);
}

// Oracle: nanochat's SFT best-fit with padding, on rendered conversations.
typedef struct {
  nc_tok_rendered r[256];
  int n;
} obuf;

static void oracle_batch(const nc_sft_mix *m, const nc_tok *tok, int64_t *cursor, obuf *ob, int bufsize, int B, int T,
                         int world, int32_t *in, int32_t *tg, int64_t *consumed_tokens, int64_t *trained) {
  int cap = T + 1;
  int32_t row[1024];
  uint8_t mask[1024];
  for (int b = 0; b < B; b++) {
    int pos = 0;
    while (pos < cap) {
      while (ob->n < bufsize) {
        const char *j;
        size_t n;
        nc_sft_mix_get(m, *cursor, &j, &n, NULL, NULL);
        nc_tok_rendered r = {0};
        cr_assert(nc_tok_render_conversation(tok, j, n, (size_t)cap, &r) == NC_OK);
        ob->r[ob->n++] = r;
        *cursor = (*cursor + world) % nc_sft_mix_len(m);
      }
      int best = -1;
      for (int i = 0; i < ob->n; i++)
        if ((int)ob->r[i].len <= cap - pos && (best < 0 || ob->r[i].len > ob->r[best].len)) best = i;
      if (best < 0) {
        for (; pos < cap; pos++) row[pos] = BOS, mask[pos] = 0;
        break;
      }
      nc_tok_rendered r = ob->r[best];
      memmove(ob->r + best, ob->r + best + 1, sizeof(nc_tok_rendered) * (size_t)(ob->n - best - 1));
      ob->n--;
      memcpy(row + pos, r.ids, r.len * sizeof(int32_t));
      memcpy(mask + pos, r.mask, r.len);
      pos += (int)r.len;
      *consumed_tokens += (int64_t)r.len;
      for (size_t k = 0; k < r.len; k++) *trained += r.mask[k];
      nc_tok_rendered_free(&r);
    }
    for (int t = 0; t < T; t++) {
      in[b * T + t] = row[t];
      tg[b * T + t] = mask[t + 1] ? row[t + 1] : -1;
    }
  }
}

Test(data_sft, packing_pads_and_masks_as_nanochat) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  char *a = convs('A', 40, 3), *b = convs('B', 25, 4);
  // A multi-part assistant message with a python_output part (mask 0).
  const char *tool =
      "{\"messages\":[{\"role\":\"system\",\"content\":\"sys\"},{\"role\":\"user\",\"content\":\"2+2?\"},"
      "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"calc \"},{\"type\":\"python\",\"text\":"
      "\"2+2\"},{\"type\":\"python_output\",\"text\":\"4\"},{\"type\":\"text\",\"text\":\" #### 4\"}]}]}\n";
  const char *pa = puts_("a.jsonl", a), *pb = puts_("b.jsonl", b), *pt = puts_("t.jsonl", tool);
  nc_sft_source src[] = {{pa, 1}, {pb, 2}, {pt, 3}};
  nc_sft_mix *m = open_mix(src, 3, 5, false);
  const int B = 3, T = 96, bufsize = 10;
  nc_sft_loader_opts o = {.mix = m, .tok = tok, .B = B, .T = T, .buffer_convs = bufsize};
  nc_sft_loader *l;
  cr_assert(nc_sft_loader_open(&o, &l) == NC_OK);
  obuf ob = {.n = 0};
  int64_t cursor = 0, want_tokens = 0, want_trained = 0;
  int32_t in[3 * 96], tg[3 * 96], win[3 * 96], wtg[3 * 96];
  int64_t pads = 0;
  for (int bt = 0; bt < 30; bt++) {
    nc_status st = nc_sft_loader_next(l, in, tg);
    cr_assert(st == NC_OK, "%s", nc_status_msg(st));
    oracle_batch(m, tok, &cursor, &ob, bufsize, B, T, 1, win, wtg, &want_tokens, &want_trained);
    cr_assert(!memcmp(in, win, sizeof in), "batch %d inputs differ from the oracle", bt);
    cr_assert(!memcmp(tg, wtg, sizeof tg), "batch %d targets differ from the oracle", bt);
    for (int r = 0; r < B; r++) {
      cr_assert_eq(in[r * T], BOS, "rows start with BOS");
      // Trailing padding: BOS inputs whose targets are all -1.
      int t = T - 1;
      while (t > 0 && in[r * T + t] == BOS && tg[r * T + t] == -1 && tg[r * T + t - 1] == -1) t--;
      pads += T - 1 - t;
      for (int k = 0; k < T; k++)
        cr_assert(tg[r * T + k] == -1 || (tg[r * T + k] >= 0 && tg[r * T + k] < 265), "target %d", tg[r * T + k]);
    }
  }
  nc_sft_loader_stats s;
  nc_sft_loader_get_stats(l, &s);
  cr_assert_eq(s.tokens, want_tokens, "no token lost or duplicated");
  cr_assert_eq(s.rows * (T + 1), s.tokens + s.pad_tokens, "every row cell is a conversation token or padding");
  cr_assert_eq(s.trained_targets, want_trained, "trained targets = sum of the consumed masks");
  cr_assert(s.pad_tokens > 0 && pads > 0);
  int64_t ones = 0;
  // Count of non-ignored targets in the last batch matches its masks (spot check).
  for (int k = 0; k < B * T; k++) ones += tg[k] >= 0;
  cr_assert(ones > 0);
  cr_assert(nc_sft_loader_epoch(l) >= 1, "30 batches pass the 99-entry mixture");
  cr_assert(nc_sft_loader_progress(l) > 1.0);
  for (int i = 0; i < ob.n; i++) nc_tok_rendered_free(&ob.r[i]);
  nc_sft_loader_close(l);
  nc_sft_mix_close(m);
  free(a);
  free(b);
  nc_tok_free(tok);
}

Test(data_sft, python_output_tokens_are_not_trained) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  const char *tool =
      "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"python\","
      "\"text\":\"1+1\"},{\"type\":\"python_output\",\"text\":\"2\"},{\"type\":\"text\",\"text\":\"ok\"}]}]}\n";
  nc_sft_source src[] = {{puts_("t.jsonl", tool), 1}};
  nc_sft_mix *m = open_mix(src, 1, 1, false);
  // Rendered: bos us q ue as ps 1 + 1 pe os 2 oe o k ae = 17 tokens; a row of 17 holds exactly one.
  nc_sft_loader_opts o = {.mix = m, .tok = tok, .B = 1, .T = 16};
  nc_sft_loader *l;
  cr_assert(nc_sft_loader_open(&o, &l) == NC_OK);
  int32_t in[16], tg[16];
  cr_assert(nc_sft_loader_next(l, in, tg) == NC_OK);
  // ids: 256 bos, 257 user_start, 258 user_end, 259 assistant_start, 260 assistant_end,
  // 261 python_start, 262 python_end, 263 output_start, 264 output_end
  const int32_t want_in[16] = {256, 257, 'q', 258, 259, 261, '1', '+', '1', 262, 263, '2', 264, 'o', 'k'};
  // 16 tokens (the last, 260 = assistant_end, is in[15]), then one BOS of padding.
  const int32_t want_tg[16] = {-1, -1, -1, -1, 261, '1', '+', '1', 262, -1, -1, -1, 'o', 'k', 260, -1};
  for (int t = 0; t < 15; t++) cr_assert_eq(in[t], want_in[t], "input %d", t);
  cr_assert_eq(in[15], 260);
  for (int t = 0; t < 16; t++) cr_assert_eq(tg[t], want_tg[t], "target %d: %d", t, tg[t]);
  nc_sft_loader_close(l);
  nc_sft_mix_close(m);
  nc_tok_free(tok);
}

Test(data_sft, resume_and_ranks) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  char *a = convs('A', 50, 7);
  nc_sft_source src[] = {{puts_("a.jsonl.gz", a), 2}};
  nc_sft_mix *m = open_mix(src, 1, 3, false);
  for (int world = 1; world <= 2; world++) {
    nc_sft_loader_opts o = {.mix = m, .tok = tok, .B = 2, .T = 64, .rank = world - 1, .world = world,
                            .buffer_convs = 12};
    nc_sft_loader *x, *y;
    cr_assert(nc_sft_loader_open(&o, &x) == NC_OK);
    int32_t i1[128], t1[128], i2[128], t2[128];
    for (int k = 0; k < 13; k++) cr_assert(nc_sft_loader_next(x, i1, t1) == NC_OK);
    char *state;
    cr_assert(nc_sft_loader_state_json(x, &state) == NC_OK);
    cr_assert(nc_sft_loader_open(&o, &y) == NC_OK);
    nc_status st = nc_sft_loader_restore(y, state);
    cr_assert(st == NC_OK, "%s", nc_status_msg(st));
    for (int k = 0; k < 20; k++) {
      cr_assert(nc_sft_loader_next(x, i1, t1) == NC_OK && nc_sft_loader_next(y, i2, t2) == NC_OK);
      cr_assert(!memcmp(i1, i2, sizeof i1) && !memcmp(t1, t2, sizeof t1), "world %d batch %d", world, k);
    }
    cr_assert_eq(nc_sft_loader_consumed(x), nc_sft_loader_consumed(y));
    // A state for another T or rank is refused.
    nc_sft_loader_opts o2 = o;
    o2.T = 65;
    nc_sft_loader *z;
    cr_assert(nc_sft_loader_open(&o2, &z) == NC_OK);
    st = nc_sft_loader_restore(z, state);
    cr_assert(st && strstr(nc_status_msg(st), "T = 64"), "%s", nc_status_msg(st));
    nc_status_free(st);
    st = nc_sft_loader_restore(z, "{\"version\":1}");
    cr_assert(st && strstr(nc_status_msg(st), "\"entries\""), "%s", nc_status_msg(st));
    nc_status_free(st);
    nc_sft_loader_close(z);
    free(state);
    nc_sft_loader_close(x);
    nc_sft_loader_close(y);
  }
  // Ranks render disjoint entries: with one-conversation rows (T+1 = a
  // conversation's length is not guaranteed), check the cursors instead.
  nc_sft_loader_opts o0 = {.mix = m, .tok = tok, .B = 1, .T = 64, .rank = 0, .world = 2, .buffer_convs = 4};
  nc_sft_loader_opts o1 = o0;
  o1.rank = 1;
  nc_sft_loader *r0, *r1;
  cr_assert(nc_sft_loader_open(&o0, &r0) == NC_OK && nc_sft_loader_open(&o1, &r1) == NC_OK);
  int32_t in[64], tg[64];
  cr_assert(nc_sft_loader_next(r0, in, tg) == NC_OK && nc_sft_loader_next(r1, in, tg) == NC_OK);
  char *s0, *s1;
  nc_sft_loader_state_json(r0, &s0);
  nc_sft_loader_state_json(r1, &s1);
  json_t *j0 = json_loads(s0, 0, NULL), *j1 = json_loads(s1, 0, NULL);
  json_t *b0 = json_object_get(j0, "buffer"), *b1 = json_object_get(j1, "buffer");
  for (size_t i = 0; i < json_array_size(b0); i++) cr_assert_eq(json_integer_value(json_array_get(b0, i)) % 2, 0);
  for (size_t i = 0; i < json_array_size(b1); i++) cr_assert_eq(json_integer_value(json_array_get(b1, i)) % 2, 1);
  json_decref(j0);
  json_decref(j1);
  free(s0);
  free(s1);
  nc_sft_loader_close(r0);
  nc_sft_loader_close(r1);
  nc_sft_mix_close(m);
  free(a);
  nc_tok_free(tok);
}

static void expect_bad(const char *name, const char *content, size_t n, bool raw, const char *needle,
                       int64_t want_skips, int64_t want_good) {
  const char *p = put(name, content, n, raw);
  nc_sft_source src[] = {{p, 1}};
  nc_sft_mix_opts o = {src, 1, 1, false};
  nc_sft_mix *m = NULL;
  nc_status st = nc_sft_mix_open(&o, &m);
  cr_assert(st != NC_OK, "%s: accepted", name);
  char want[1024];
  snprintf(want, sizeof want, "%s%s", p, needle);
  cr_assert(strstr(nc_status_msg(st), want), "'%s' lacks '%s'", nc_status_msg(st), want);
  nc_status_free(st);
  o.skip_bad = true;
  // With a good second source so the mixture is never empty.
  nc_sft_source two[] = {{p, 1}, {puts_("good.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}\n"), 1}};
  o.sources = two;
  o.nsources = 2;
  st = nc_sft_mix_open(&o, &m);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  cr_assert_eq(nc_sft_mix_skipped(m), want_skips, "%s: %lld skips", name, (long long)nc_sft_mix_skipped(m));
  cr_assert_eq(nc_sft_mix_source_len(m, 0), want_good, "%s: %lld good", name, (long long)nc_sft_mix_source_len(m, 0));
  nc_sft_mix_close(m);
}

Test(data_sft, malformed_conversations) {
  const char *ok = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}";
  char buf[4096];
  snprintf(buf, sizeof buf, "%s\n{\"messages\": [\n%s\n", ok, ok);
  expect_bad("badjson.jsonl", buf, strlen(buf), false, ":2:", 1, 2);
  snprintf(buf, sizeof buf, "%s\n\n{\"msgs\":[]}\n", ok);
  expect_bad("nomsgs.jsonl", buf, strlen(buf), false, ":3: field \"messages\"", 1, 1);
  snprintf(buf, sizeof buf, "%s\n{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}\n", ok);
  expect_bad("order.jsonl", buf, strlen(buf), false, ":2: messages[0] has role \"assistant\" but should be \"user\"", 1,
             1);
  snprintf(buf, sizeof buf, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":"
                            "[{\"type\":\"code\",\"text\":\"1\"}]}]}\n%s\n", ok);
  expect_bad("part.jsonl", buf, strlen(buf), false, ":1: messages[1].content[0]: unknown part type \"code\"", 1, 1);
  snprintf(buf, sizeof buf, "{\"messages\":[{\"role\":\"user\",\"content\":[\"x\"]}]}\n");
  expect_bad("usercontent.jsonl", buf, strlen(buf), false, ":1: messages[0] (user): \"content\" must be a string", 2,
             0);
  snprintf(buf, sizeof buf, "%s\n{\"messages\":[{\"role\":\"user\",\"content\":\"bad \xfe\"}]}\n", ok);
  expect_bad("utf8.jsonl", buf, strlen(buf), false, ":2:44: invalid UTF-8", 1, 1);
  expect_bad("empty.jsonl", "", 0, false, ": no conversations in this source", 1, 0);
  expect_bad("missing.jsonl.gz", NULL, 0, true, "", 1, 0);  // empty file named .gz: read as empty
  // A folder, a missing file.
  nc_sft_source dir[] = {{g_dir, 1}};
  nc_sft_mix *dm;
  nc_status dst = nc_sft_mix_open(&(nc_sft_mix_opts){dir, 1, 1, false}, &dm);
  cr_assert(dst && strstr(nc_status_msg(dst), "is a directory"), "%s", nc_status_msg(dst));
  nc_status_free(dst);
  nc_sft_source nof[] = {{"/nonexistent/x.jsonl", 1}};
  dst = nc_sft_mix_open(&(nc_sft_mix_opts){nof, 1, 1, false}, &dm);
  cr_assert(dst && strstr(nc_status_msg(dst), "/nonexistent/x.jsonl: cannot open"), "%s", nc_status_msg(dst));
  nc_status_free(dst);
  // Truncated gzip: the lines before the damage are kept with skip_bad.
  char big[20000];
  size_t n = 0;
  for (int i = 0; i < 150; i++) n += (size_t)sprintf(big + n, "%s\n", ok);
  const char *full = put("full.jsonl.gz", big, n, false);
  FILE *f = fopen(full, "rb");
  static char gz[20000];
  size_t gl = fread(gz, 1, sizeof gz, f);
  fclose(f);
  cr_assert(gl > 100);
  const char *p = put("trunc.jsonl.gz", gz, gl / 2, true);
  nc_sft_source src[] = {{p, 1}};
  nc_sft_mix *m;
  nc_status st = nc_sft_mix_open(&(nc_sft_mix_opts){src, 1, 1, false}, &m);
  cr_assert(st && strstr(nc_status_msg(st), "truncated gzip file"), "%s", nc_status_msg(st));
  cr_assert(strstr(nc_status_msg(st), p));
  nc_status_free(st);
}
