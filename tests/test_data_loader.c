// The pretraining data layer (data/loader.h): document streams over plain /
// JSONL / gzip shards with positions, nanochat's BOS-aligned best-fit packing
// checked against an independent simulation and against token accounting,
// exact resume, sharding by rank, validation batches, and malformed input
// (each reported with file:line, or skipped and counted with the flag).
//
// The tokenizer is the 256 single bytes + nanochat specials, so a document's
// tokens are BOS (256) followed by its bytes: the oracle needs no BPE.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "data/loader.h"
#include "tests/support/tok_util.h"

#define BOS 256

static char g_dir[512];

static void mk_dir(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/nc_test_data_XXXXXX");
  cr_assert(mkdtemp(g_dir), "mkdtemp");
}

static void rm_dir(void) {
  if (!g_dir[0]) return;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  (void)!system(cmd);
  g_dir[0] = 0;
}

TestSuite(data_loader, .init = mk_dir, .fini = rm_dir);

static const char *path_of(const char *name) {
  static char p[8][700];
  static int k;
  char *r = p[k++ % 8];
  snprintf(r, 700, "%s/%s", g_dir, name);
  return r;
}

static bool g_raw;  // put() writes bytes as they are even for .gz names

static const char *put(const char *name, const void *data, size_t n) {
  const char *p = path_of(name);
  size_t l = strlen(p);
  if (!g_raw && l > 3 && !strcmp(p + l - 3, ".gz")) {
    gzFile g = gzopen(p, "wb");
    cr_assert(g);
    if (n) cr_assert(gzwrite(g, data, (unsigned)n) == (int)n);
    gzclose(g);
  } else {
    FILE *f = fopen(p, "wb");
    cr_assert(f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
  }
  return p;
}
static const char *puts_(const char *name, const char *s) { return put(name, s, strlen(s)); }

// ---- document streams ------------------------------------------------------

typedef struct {
  char text[256];
  nc_doc_pos pos;
} got_doc;

static int read_all(nc_docstream *s, got_doc *out, int max) {
  int n = 0;
  for (;;) {
    const char *t;
    size_t len;
    nc_doc_pos p;
    nc_status st = nc_docstream_next(s, &t, &len, &p);
    cr_assert(st == NC_OK, "%s", nc_status_msg(st));
    if (!t) return n;
    cr_assert(n < max);
    cr_assert(len < sizeof out[n].text);
    memcpy(out[n].text, t, len);
    out[n].text[len] = 0;
    out[n].pos = p;
    n++;
  }
}

Test(data_loader, docstream_formats_and_positions) {
  const char *txt = "\n\nfirst para\nline two\n\n\n  \nsecond\n\nthird\n";
  const char *jsonl = "{\"text\":\"alpha\"}\n\n{\"text\":\"be\\u00e9ta\",\"id\":2}\n";
  const char *paths[] = {puts_("a.txt", txt), puts_("b.jsonl", jsonl), puts_("c.txt.gz", txt),
                         puts_("d.jsonl.gz", jsonl), puts_("e.data", jsonl)};  // e: sniffed as JSONL
  nc_docstream *s;
  cr_assert(nc_docstream_open(paths, 5, false, &s) == NC_OK);
  got_doc d[32];
  int n = read_all(s, d, 32);
  cr_assert_eq(n, 3 + 2 + 3 + 2 + 2);
  for (int f = 0; f < 2; f++) {  // plain and gzipped give the same documents and positions
    got_doc *t = d + f * 5, *j = d + 3 + f * 5;
    cr_assert_str_eq(t[0].text, "first para\nline two\n");
    cr_assert_str_eq(t[1].text, "second\n");
    cr_assert_str_eq(t[2].text, "third\n");
    cr_assert_eq(t[0].pos.line, 3);
    cr_assert_eq(t[0].pos.offset, 2);
    cr_assert_eq(t[1].pos.line, 8);
    cr_assert_eq(t[2].pos.line, 10);
    cr_assert_eq(t[0].pos.file, 2 * f);
    cr_assert_str_eq(j[0].text, "alpha");
    cr_assert_str_eq(j[1].text, "be\xc3\xa9ta");
    cr_assert_eq(j[1].pos.line, 3);
    cr_assert_eq(j[1].pos.offset, 18);
  }
  cr_assert_str_eq(d[10].text, "alpha");
  cr_assert_eq(d[11].pos.file, 4);
  // Seeking to any recorded position gives that document again; tell matches.
  for (int i = n - 1; i >= 0; i--) {
    cr_assert(nc_docstream_seek(s, &d[i].pos) == NC_OK);
    nc_doc_pos t;
    nc_docstream_tell(s, &t);
    cr_assert(t.file == d[i].pos.file && t.offset == d[i].pos.offset && t.line == d[i].pos.line);
    const char *t2;
    size_t l2;
    nc_doc_pos p2;
    cr_assert(nc_docstream_next(s, &t2, &l2, &p2) == NC_OK && t2);
    cr_assert(l2 == strlen(d[i].text) && !memcmp(t2, d[i].text, l2), "doc %d after seek", i);
    cr_assert(p2.file == d[i].pos.file && p2.line == d[i].pos.line);
  }
  nc_docstream_close(s);
  // A tell after reading is where the next document starts.
  cr_assert(nc_docstream_open(paths, 1, false, &s) == NC_OK);
  const char *t;
  size_t len;
  nc_doc_pos p, tell;
  cr_assert(nc_docstream_next(s, &t, &len, &p) == NC_OK);
  nc_docstream_tell(s, &tell);
  cr_assert(nc_docstream_next(s, &t, &len, &p) == NC_OK && t && !strcmp(t, "second\n"));
  cr_assert(nc_docstream_seek(s, &tell) == NC_OK);
  cr_assert(nc_docstream_next(s, &t, &len, &p) == NC_OK && t && !strcmp(t, "second\n"));
  nc_docstream_close(s);
}

// ---- a corpus of identifiable documents ------------------------------------

typedef struct {
  char **text;
  int n;
} corpus;

// Documents "dNNNN:" + letters, lengths from lo to hi bytes (seeded), written
// as JSONL shards of per_shard documents each (gz when gz).
static corpus make_corpus(int ndocs, int lo, int hi, uint64_t seed, int per_shard, bool gz, const char **paths,
                          int *npaths) {
  corpus c = {calloc((size_t)ndocs, sizeof(char *)), ndocs};
  uint64_t s = seed;
  *npaths = 0;
  char *buf = malloc((size_t)per_shard * (size_t)(hi + 64) + 1);
  size_t bl = 0;
  for (int i = 0; i < ndocs; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    int len = lo + (int)((s >> 33) % (uint64_t)(hi - lo + 1));
    if (len < 6) len = 6;
    char *t = malloc((size_t)len + 1);
    snprintf(t, 7, "d%04d:", i);
    for (int k = 6; k < len; k++) t[k] = (char)('a' + (k * 7 + i) % 26);
    t[len] = 0;
    c.text[i] = t;
    bl += (size_t)sprintf(buf + bl, "{\"text\":\"%s\"}\n", t);
    if ((i + 1) % per_shard == 0 || i + 1 == ndocs) {
      char name[64];
      snprintf(name, sizeof name, "shard_%03d.jsonl%s", *npaths, gz ? ".gz" : "");
      const char *p = put(name, buf, bl);
      paths[*npaths] = strdup(p);
      (*npaths)++;
      bl = 0;
    }
  }
  free(buf);
  return c;
}

static void free_corpus(corpus *c, const char **paths, int np) {
  for (int i = 0; i < c->n; i++) free(c->text[i]);
  free(c->text);
  for (int i = 0; i < np; i++) free((void *)paths[i]);
}

// The oracle: nanochat's best-fit written out independently, on token lists.
typedef struct {
  int32_t *ids;
  int n;
} olist;

typedef struct {
  const corpus *c;
  int next;  // next document index (epochs wrap)
  int rank, world;
  olist buf[4096];
  int nbuf, bufsize;
} oracle;

static void oracle_refill(oracle *o) {
  while (o->nbuf < o->bufsize) {
    for (int k = 0; k < 128; k++) {
      int d;
      do {
        d = o->next;
        o->next = (o->next + 1) % o->c->n;
      } while (d % o->world != o->rank);
      const char *t = o->c->text[d];
      int n = (int)strlen(t);
      olist l = {malloc(sizeof(int32_t) * (size_t)(n + 1)), n + 1};
      l.ids[0] = BOS;
      for (int i = 0; i < n; i++) l.ids[i + 1] = (unsigned char)t[i];
      cr_assert(o->nbuf < 4096);
      o->buf[o->nbuf++] = l;
    }
  }
}

static void oracle_row(oracle *o, int32_t *row, int cap) {
  int pos = 0;
  while (pos < cap) {
    oracle_refill(o);
    int rem = cap - pos, best = -1;
    for (int i = 0; i < o->nbuf; i++)
      if (o->buf[i].n <= rem && (best < 0 || o->buf[i].n > o->buf[best].n)) best = i;
    int take = best;
    if (take < 0) {
      take = 0;
      for (int i = 1; i < o->nbuf; i++)
        if (o->buf[i].n < o->buf[take].n) take = i;
    }
    olist l = o->buf[take];
    memmove(o->buf + take, o->buf + take + 1, sizeof(olist) * (size_t)(o->nbuf - take - 1));
    o->nbuf--;
    int n = l.n < rem ? l.n : rem;
    memcpy(row + pos, l.ids, sizeof(int32_t) * (size_t)n);
    pos += n;
    free(l.ids);
  }
}

static void oracle_free(oracle *o) {
  for (int i = 0; i < o->nbuf; i++) free(o->buf[i].ids);
}

static nc_loader *open_loader(const char **paths, int np, const nc_tok *tok, int64_t B, int64_t T, int rank,
                              int world, int bufdocs, bool skip) {
  nc_loader_opts o = {.paths = paths, .npaths = np, .tok = tok, .B = B, .T = T, .rank = rank, .world = world,
                      .skip_bad = skip, .buffer_docs = bufdocs};
  nc_loader *l = NULL;
  nc_status st = nc_loader_open(&o, &l);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  return l;
}

static void next_ok(nc_loader *l, int32_t *in, int32_t *tg) {
  nc_status st = nc_loader_next(l, in, tg);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
}

// Doc index of a row segment starting with BOS "dNNNN:", or -1 if too short.
static int seg_doc(const int32_t *seg, int n) {
  if (n < 7) return -1;
  char id[5];
  for (int i = 0; i < 4; i++) id[i] = (char)seg[2 + i];
  id[4] = 0;
  return atoi(id);
}

Test(data_loader, bestfit_matches_oracle_and_accounts_for_every_token) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  const char *paths[64];
  int np;
  corpus c = make_corpus(100, 6, 150, 7, 15, true, paths, &np);
  const int64_t B = 3, T = 64;
  nc_loader *l = open_loader(paths, np, tok, B, T, 0, 1, 50, false);
  oracle o = {.c = &c, .rank = 0, .world = 1, .bufsize = 50};
  int32_t in[3 * 64], tg[3 * 64], row[65], want[65];
  int64_t whole_tokens = 0, crop_tokens = 0, rows = 0;
  int *seen = calloc((size_t)c.n, sizeof(int));
  for (int bt = 0; bt < 40; bt++) {  // ~1 epoch of 100 documents (7,800 tokens)
    next_ok(l, in, tg);
    for (int b = 0; b < B; b++) {
      memcpy(row, in + b * T, sizeof(int32_t) * T);
      row[T] = tg[b * T + T - 1];
      for (int t = 0; t + 1 < T; t++) cr_assert_eq(tg[b * T + t], in[b * T + t + 1], "targets = inputs shifted");
      oracle_row(&o, want, (int)T + 1);
      cr_assert(!memcmp(row, want, sizeof row), "batch %d row %d differs from the oracle", bt, b);
      cr_assert_eq(row[0], BOS, "every row starts with BOS");
      rows++;
      // Segments: every one but the last is a whole document; the last may be cropped.
      int start = 0;
      for (int t = 1; t <= T + 1; t++) {
        if (t <= T && row[t] != BOS) continue;
        int n = t - start, d = seg_doc(row + start, n);
        bool last = t == T + 1;
        if (d >= 0) {
          int full = (int)strlen(c.text[d]) + 1;
          for (int k = 1; k < n; k++) cr_assert_eq(row[start + k], (unsigned char)c.text[d][k - 1]);
          if (!last) cr_assert_eq(n, full, "a document in the middle of a row is whole");
          if (n == full) whole_tokens += n;
          else crop_tokens += n;
          seen[d]++;
        } else {
          crop_tokens += n;  // a crop shorter than the id
          cr_assert(last, "short segments only at the end of a row");
        }
        start = t;
      }
    }
  }
  cr_assert_eq(whole_tokens + crop_tokens, rows * (T + 1), "every row token comes from a document");
  // No document is used more often than it was read (reads wrap around the
  // 100 documents in order).
  nc_loader_stats s;
  nc_loader_get_stats(l, &s);
  for (int d = 0; d < c.n; d++) {
    int reads = (int)(s.docs_read / c.n) + (d < s.docs_read % c.n);
    cr_assert(seen[d] <= reads, "doc %d used %d times, read %d times", d, seen[d], reads);
  }
  cr_assert_eq(s.rows, rows);
  cr_assert_eq(s.row_tokens, rows * (T + 1));
  // Tokenized = emitted + cropped away + still buffered.
  cr_assert(s.doc_tokens >= s.row_tokens + s.cropped_tokens);
  cr_assert(nc_loader_epoch(l) >= 1);
  oracle_free(&o);
  free(seen);
  nc_loader_close(l);
  free_corpus(&c, paths, np);
  nc_tok_free(tok);
}

Test(data_loader, long_documents_are_cropped_only_when_nothing_fits) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  const char *paths[8];
  int np;
  corpus c = make_corpus(20, 100, 200, 3, 20, false, paths, &np);  // every doc longer than a row
  nc_loader *l = open_loader(paths, np, tok, 2, 32, 0, 1, 0, false);
  oracle o = {.c = &c, .world = 1, .bufsize = 1000};
  int32_t in[64], tg[64], want[33];
  for (int bt = 0; bt < 10; bt++) {
    next_ok(l, in, tg);
    for (int b = 0; b < 2; b++) {
      oracle_row(&o, want, 33);
      cr_assert(!memcmp(in + b * 32, want, 32 * sizeof(int32_t)) && tg[b * 32 + 31] == want[32]);
      cr_assert_eq(in[b * 32], BOS);
    }
  }
  nc_loader_stats s;
  nc_loader_get_stats(l, &s);
  cr_assert(s.cropped_tokens > 0);
  oracle_free(&o);
  nc_loader_close(l);
  free_corpus(&c, paths, np);
  nc_tok_free(tok);
}

static void check_resume(bool gz, int world, int rank, int per_shard, int warm, int bufdocs) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  const char *paths[64];
  int np;
  corpus c = make_corpus(160, 6, 90, 11 + (uint64_t)world, per_shard, gz, paths, &np);
  const int64_t B = 2, T = 48;
  nc_loader *a = open_loader(paths, np, tok, B, T, rank, world, bufdocs, false);
  int32_t in[96], tg[96], in2[96], tg2[96];
  for (int i = 0; i < warm; i++) next_ok(a, in, tg);
  char *state;
  cr_assert(nc_loader_state_json(a, &state) == NC_OK);
  nc_loader *b = open_loader(paths, np, tok, B, T, rank, world, bufdocs, false);
  nc_status st = nc_loader_restore(b, state);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  for (int i = 0; i < 25; i++) {
    next_ok(a, in, tg);
    next_ok(b, in2, tg2);
    cr_assert(!memcmp(in, in2, sizeof in) && !memcmp(tg, tg2, sizeof tg), "batch %d after resume differs", i);
  }
  cr_assert_eq(nc_loader_epoch(a), nc_loader_epoch(b));
  // Rows do not depend on B: a B=1 loader restored from the state gives the
  // same rows, one per batch.
  nc_loader *c1 = open_loader(paths, np, tok, 1, T, rank, world, bufdocs, false);
  cr_assert(nc_loader_restore(c1, state) == NC_OK);
  nc_loader *a2 = open_loader(paths, np, tok, B, T, rank, world, bufdocs, false);
  cr_assert(nc_loader_restore(a2, state) == NC_OK);
  for (int i = 0; i < 5; i++) {
    next_ok(a2, in, tg);
    for (int r = 0; r < B; r++) {
      next_ok(c1, in2, tg2);
      cr_assert(!memcmp(in + r * T, in2, T * sizeof(int32_t)) && !memcmp(tg + r * T, tg2, T * sizeof(int32_t)),
                "B=1 row %d", i * (int)B + r);
    }
  }
  nc_loader_close(c1);
  nc_loader_close(a2);
  // States are equal too (a resumed loader saves the same state).
  char *sa, *sb;
  cr_assert(nc_loader_state_json(a, &sa) == NC_OK && nc_loader_state_json(b, &sb) == NC_OK);
  cr_assert_str_eq(sa, sb);
  free(sa);
  free(sb);
  free(state);
  nc_loader_close(a);
  nc_loader_close(b);
  free_corpus(&c, paths, np);
  nc_tok_free(tok);
}

Test(data_loader, resume_gives_identical_batches) {
  check_resume(false, 1, 0, 50, 3, 30);   // plain JSONL, mid-epoch
  check_resume(true, 1, 0, 40, 17, 30);   // gzip, past an epoch boundary
  check_resume(true, 3, 2, 25, 9, 20);    // a rank of 3
  check_resume(false, 1, 0, 160, 0, 0);   // fresh state, default buffer
}

Test(data_loader, resume_from_text_shards) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  char txt[20000];
  size_t n = 0;
  const char *xs = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
  for (int i = 0; i < 200; i++) n += (size_t)sprintf(txt + n, "para %d %.*s\nmore %d\n\n", i, i % 37, xs, i);
  const char *paths[] = {put("t1.txt", txt, n), put("t2.txt.gz", txt, n)};
  nc_loader *a = open_loader(paths, 2, tok, 2, 40, 0, 1, 16, false);
  int32_t in[80], tg[80], in2[80], tg2[80];
  for (int i = 0; i < 60; i++) next_ok(a, in, tg);  // into the gzip shard
  char *state;
  cr_assert(nc_loader_state_json(a, &state) == NC_OK);
  nc_loader *b = open_loader(paths, 2, tok, 2, 40, 0, 1, 16, false);
  cr_assert(nc_loader_restore(b, state) == NC_OK);
  for (int i = 0; i < 80; i++) {
    next_ok(a, in, tg);
    next_ok(b, in2, tg2);
    cr_assert(!memcmp(in, in2, sizeof in) && !memcmp(tg, tg2, sizeof tg), "batch %d", i);
  }
  free(state);
  nc_loader_close(a);
  nc_loader_close(b);
  nc_tok_free(tok);
}

static void expect_restore_error(nc_loader *l, const char *state, const char *needle) {
  nc_status st = nc_loader_restore(l, state);
  cr_assert(st != NC_OK, "restore of %s succeeded", state);
  cr_assert(strstr(nc_status_msg(st), needle), "'%s' lacks '%s'", nc_status_msg(st), needle);
  nc_status_free(st);
}

Test(data_loader, bad_states_are_rejected) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  const char *paths[8];
  int np;
  corpus c = make_corpus(30, 6, 40, 5, 30, false, paths, &np);
  nc_loader *l = open_loader(paths, np, tok, 2, 16, 0, 1, 8, false);
  nc_loader *twin = open_loader(paths, np, tok, 2, 16, 0, 1, 8, false);
  int32_t in[32], tg[32], in2[32], tg2[32];
  next_ok(l, in, tg);
  next_ok(twin, in, tg);
  char *good;
  cr_assert(nc_loader_state_json(l, &good) == NC_OK);
  expect_restore_error(l, "{", "bad JSON");
  expect_restore_error(l, "[]", "not a JSON object");
  expect_restore_error(l, "{\"version\":2}", "\"version\"");
  nc_loader *l2 = open_loader(paths, np, tok, 2, 17, 0, 1, 8, false);
  expect_restore_error(l2, good, "T = 16");
  nc_loader *l3 = open_loader(paths, np, tok, 2, 16, 1, 2, 8, false);
  expect_restore_error(l3, good, "rank 0 of 1");
  // A buffered document whose token count changed: the shards changed.
  char *bad = strdup(good);
  char *b = strstr(bad, "\"buffer\":[[");
  cr_assert(b);
  char *end = strchr(b, ']');
  // Make the last number (tokens) of the first entry 9999.
  char *comma = end;
  while (*comma != ',') comma--;
  char fixed[4096];
  snprintf(fixed, sizeof fixed, "%.*s,9999%s", (int)(comma - bad), bad, end);
  expect_restore_error(l, fixed, "tokens");
  // Failed restores change nothing: the same batches as an untouched twin.
  for (int i = 0; i < 6; i++) {
    next_ok(l, in, tg);
    next_ok(twin, in2, tg2);
    cr_assert(!memcmp(in, in2, sizeof in) && !memcmp(tg, tg2, sizeof tg), "batch %d after failed restores", i);
  }
  nc_loader_close(twin);
  free(bad);
  free(good);
  nc_loader_close(l);
  nc_loader_close(l2);
  nc_loader_close(l3);
  free_corpus(&c, paths, np);
  nc_tok_free(tok);
}

Test(data_loader, ranks_partition_the_documents) {
  // Every document is exactly T+1 tokens, so each row is one whole document
  // in read order: rank r's rows must be documents r, r+W, r+2W, ...
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  const char *paths[16];
  int np;
  const int W = 3, N = 40;
  corpus c = make_corpus(N, 20, 20, 1, 7, true, paths, &np);  // 6 shards, 20 bytes each (+BOS = 21 = T+1)
  int owner[40];
  for (int i = 0; i < N; i++) owner[i] = -1;
  for (int r = 0; r < W; r++) {
    nc_loader_opts o = {.paths = paths, .npaths = np, .tok = tok, .B = 1, .T = 20, .rank = r, .world = W};
    nc_evalset *e;
    cr_assert(nc_evalset_open(&o, 0, &e) == NC_OK);
    int32_t in[20], tg[20];
    bool done = false;
    int k = 0;
    for (;;) {
      cr_assert(nc_evalset_next(e, in, tg, &done) == NC_OK);
      if (done) break;
      int d = seg_doc(in, 20);
      cr_assert_eq(d, r + k * W, "rank %d row %d is doc %d", r, k, d);
      cr_assert_eq(owner[d], -1);
      owner[d] = r;
      k++;
    }
    cr_assert_eq(k, (N - r + W - 1) / W);
    nc_evalset_close(e);
  }
  for (int i = 0; i < N; i++) cr_assert_eq(owner[i], i % W);
  cr_assert(nc_loader_open(&(nc_loader_opts){.paths = paths, .npaths = np, .tok = tok, .B = 1, .T = 8, .rank = 3,
                                             .world = 3},
                           &(nc_loader *){0}) != NC_OK);
  free_corpus(&c, paths, np);
  nc_tok_free(tok);
}

Test(data_loader, evalset_is_fixed_and_resettable) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  const char *paths[8];
  int np;
  corpus c = make_corpus(60, 6, 50, 9, 30, true, paths, &np);
  nc_loader_opts o = {.paths = paths, .npaths = np, .tok = tok, .B = 2, .T = 32};
  nc_evalset *e;
  cr_assert(nc_evalset_open(&o, 0, &e) == NC_OK);
  int32_t in[64], tg[64], first[64];
  int64_t total = 0, nb = 0;
  bool done;
  for (;;) {
    cr_assert(nc_evalset_next(e, in, tg, &done) == NC_OK);
    if (done) break;
    if (nb == 0) memcpy(first, in, sizeof in);
    nb++;
    total += 64;
  }
  // One pass only: at most the corpus' tokens, and most of them.
  int64_t corpus_tokens = 0;
  for (int i = 0; i < c.n; i++) corpus_tokens += (int64_t)strlen(c.text[i]) + 1;
  cr_assert(nb * 66 <= corpus_tokens, "%lld batches from %lld tokens", (long long)nb, (long long)corpus_tokens);
  cr_assert(nb * 66 + 2 * 66 + 200 >= corpus_tokens / 2, "too few batches: %lld", (long long)nb);
  cr_assert(nc_evalset_next(e, in, tg, &done) == NC_OK && done);  // stays done
  cr_assert(nc_evalset_reset(e) == NC_OK);
  cr_assert(nc_evalset_next(e, in, tg, &done) == NC_OK && !done);
  cr_assert(!memcmp(in, first, sizeof in), "reset gives the same first batch");
  nc_evalset_close(e);
  cr_assert(nc_evalset_open(&o, 2, &e) == NC_OK);
  int k = 0;
  while (nc_evalset_next(e, in, tg, &done) == NC_OK && !done) k++;
  cr_assert_eq(k, 2);
  nc_evalset_close(e);
  (void)total;
  free_corpus(&c, paths, np);
  nc_tok_free(tok);
}

// ---- malformed input -------------------------------------------------------

// Loads [good shard, bad shard, good shard]: without skip_bad the first batch
// fails with needle in the message; with it, batches come and skips counted.
static void check_bad(const char *name, const void *bad, size_t n, const char *needle, int64_t want_skips) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  const char *good1 = puts_("good1.jsonl", "{\"text\":\"good one\"}\n{\"text\":\"good two\"}\n");
  const char *bp = put(name, bad, n);
  const char *good2 = puts_("good2.txt", "good three\n\ngood four\n");
  const char *paths[] = {good1, bp, good2};
  nc_loader *l = open_loader(paths, 3, tok, 1, 8, 0, 1, 4, false);
  int32_t in[8], tg[8];
  nc_status st = NC_OK;
  for (int i = 0; i < 8 && !st; i++) st = nc_loader_next(l, in, tg);
  cr_assert(st != NC_OK, "%s: no error", name);
  char want[1024];
  snprintf(want, sizeof want, "%s%s", bp, needle);
  cr_assert(strstr(nc_status_msg(st), want), "'%s' lacks '%s'", nc_status_msg(st), want);
  nc_status_free(st);
  nc_loader_close(l);
  l = open_loader(paths, 3, tok, 1, 8, 0, 1, 4, true);
  for (int i = 0; i < 8; i++) next_ok(l, in, tg);
  cr_assert_eq(nc_loader_skipped(l), want_skips, "%s: skips %lld", name, (long long)nc_loader_skipped(l));
  nc_loader_close(l);
  nc_tok_free(tok);
}

Test(data_loader, malformed_input_named_and_skippable) {
  const char *j1 = "{\"text\":\"ok\"}\n{\"text\": \"broken\n{\"text\":\"ok2\"}\n";
  check_bad("badjson.jsonl", j1, strlen(j1), ":2:", 1);
  const char *j2 = "{\"text\":\"ok\"}\n\n{\"txt\":\"no text\"}\n{\"text\":5}\n";
  check_bad("notext.jsonl", j2, strlen(j2), ":3: no \"text\" field", 2);
  const char *j3 = "{\"text\":\"ok\"}\n{\"text\":\"bad \xff byte\"}\n";
  check_bad("utf8.jsonl", j3, strlen(j3), ":2:14: invalid UTF-8", 1);
  const char *t1 = "para one\n\npara two\nbad \xc3( here\n\npara three\n";
  check_bad("utf8.txt", t1, strlen(t1), ":4:5: invalid UTF-8", 1);
  check_bad("empty.txt", "", 0, ": empty shard", 1);
  check_bad("blank.jsonl", "\n\n  \n", 5, ": empty shard", 1);
  // A truncated gzip file: the documents before the damage come, then an error.
  char big[40000];
  size_t n = 0;
  for (int i = 0; i < 100; i++) n += (size_t)sprintf(big + n, "{\"text\":\"document %d %d\"}\n", i, i * 7919);
  uLongf cl = compressBound(n) + 64;
  unsigned char *gzbuf = malloc(cl);
  // gzip-wrapped deflate via a temporary gz file, then cut.
  const char *full = put("full.jsonl.gz", big, n);
  FILE *f = fopen(full, "rb");
  size_t gl = fread(gzbuf, 1, cl, f);
  fclose(f);
  g_raw = true;
  check_bad("trunc.jsonl.gz", gzbuf, gl / 2, ":47: truncated gzip file (unexpected end of file)", 1);
  // Garbage after a valid gzip header: corrupt data.
  memset(gzbuf + 20, 0x55, gl - 40);
  check_bad("corrupt.jsonl.gz", gzbuf, gl, ":1: unreadable gzip data", 1);
  g_raw = false;
  free(gzbuf);
}

Test(data_loader, unreadable_and_empty_inputs) {
  nc_tok *tok = nc_tok_test_small(NULL, 0);
  nc_loader *l = NULL;
  const char *missing[] = {path_of("nope.jsonl")};
  nc_loader_opts o = {.paths = missing, .npaths = 1, .tok = tok, .B = 1, .T = 8};
  int32_t in[8], tg[8];
  cr_assert(nc_loader_open(&o, &l) == NC_OK);  // files are opened lazily
  nc_status st = nc_loader_next(l, in, tg);
  cr_assert(st && strstr(nc_status_msg(st), "nope.jsonl: cannot open"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_loader_close(l);
  // With skip_bad, every shard bad: a clear error instead of an endless loop.
  const char *two[] = {missing[0], puts_("e.txt", "\n\n")};
  o = (nc_loader_opts){.paths = two, .npaths = 2, .tok = tok, .B = 1, .T = 8, .skip_bad = true};
  cr_assert(nc_loader_open(&o, &l) == NC_OK);
  st = nc_loader_next(l, in, tg);
  cr_assert(st && strstr(nc_status_msg(st), "no documents in the 2 shard(s)"), "%s", nc_status_msg(st));
  cr_assert(strstr(nc_status_msg(st), "cannot open"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_loader_close(l);
  // A directory, bad options.
  const char *dir[] = {g_dir};
  o = (nc_loader_opts){.paths = dir, .npaths = 1, .tok = tok, .B = 1, .T = 8};
  cr_assert(nc_loader_open(&o, &l) == NC_OK);
  st = nc_loader_next(l, in, tg);
  cr_assert(st && strstr(nc_status_msg(st), "is a directory"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_loader_close(l);
  o = (nc_loader_opts){.paths = dir, .npaths = 1, .tok = tok, .B = 0, .T = 8};
  st = nc_loader_open(&o, &l);
  cr_assert(st && strstr(nc_status_msg(st), "out of range"));
  nc_status_free(st);
  o = (nc_loader_opts){.paths = dir, .npaths = 0, .tok = tok, .B = 1, .T = 8};
  st = nc_loader_open(&o, &l);
  cr_assert(st && strstr(nc_status_msg(st), "no shard files"));
  nc_status_free(st);
  nc_tok *plain;
  const uint8_t *toks[256];
  size_t lens[256];
  static uint8_t bytes[256];
  for (int b = 0; b < 256; b++) bytes[b] = (uint8_t)b, toks[b] = &bytes[b], lens[b] = 1;
  cr_assert(nc_tok_new(toks, lens, 256, NC_TOK_PAT_GPT2, NULL, NULL, 0, &plain) == NC_OK);
  o = (nc_loader_opts){.paths = dir, .npaths = 1, .tok = plain, .B = 1, .T = 8};
  st = nc_loader_open(&o, &l);
  cr_assert(st && strstr(nc_status_msg(st), "no BOS"));
  nc_status_free(st);
  nc_tok_free(plain);
  nc_tok_free(tok);
}
