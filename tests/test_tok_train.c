// BPE trainer: identical merges to a naive reference trainer (recount every
// pair each merge), determinism across thread counts, byte-exact round trip
// of random bytes, the document options, file inputs and error cases.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "chat/tokenizer_internal.h"
#include "tests/support/tok_util.h"

// ---- a small corpus: the tokenizer test texts plus generated sentences ------
static char *corpus_docs[64];
static size_t corpus_lens[64];
static size_t corpus_n;

static void load_corpus(void) {
  const char *names[] = {"english.txt", "code.txt", "cjk.txt", "numbers.txt", "contractions.txt", "mixed.txt"};
  corpus_n = 0;
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/tests/data/tok/%s", nc_tok_test_source_dir(), names[i]);
    corpus_docs[corpus_n] = nc_tok_test_slurp(p, &corpus_lens[corpus_n]);
    corpus_n++;
  }
  // Generated text with a skewed word distribution (deterministic LCG).
  static const char *words[] = {"the", "cat", "sat", "on", "mat", "and", "then", "there", "were", "three",
                                "thin", "things", "that", "thought", "otherwise", "123", "4567", "!", "?", "tokenizer"};
  uint32_t s = 12345;
  for (int d = 0; d < 8; d++) {
    nc_buf b;
    nc_buf_init(&b);
    for (int w = 0; w < 600; w++) {
      s = s * 1103515245u + 12345u;
      uint32_t r = (s >> 16) % 400;
      int k = r < 100 ? 0 : r < 160 ? 1 : r < 200 ? 2 : (int)(r % 20);
      nc_buf_printf(&b, "%s%s", w ? (w % 17 ? " " : "\n") : "", words[k]);
    }
    corpus_lens[corpus_n] = b.len;
    corpus_docs[corpus_n++] = nc_buf_take(&b);
  }
}

static void free_corpus(void) {
  for (size_t i = 0; i < corpus_n; i++) free(corpus_docs[i]);
  corpus_n = 0;
}

TestSuite(tok_train, .init = load_corpus, .fini = free_corpus);

// ---- the naive reference ------------------------------------------------------
typedef struct {
  uint32_t *ids;
  size_t len;
  int64_t count;
} ref_word;

typedef struct {
  uint64_t key;
  int64_t count;
} ref_pair;

static int ref_pair_cmp(const void *a, const void *b) {
  uint64_t x = ((const ref_pair *)a)->key, y = ((const ref_pair *)b)->key;
  return x < y ? -1 : x > y;
}

// Returns the reference vocabulary (token bytes per id) in *out_tok/out_len.
static size_t ref_train(size_t n_merges, nc_tok_pattern pat, uint8_t ***out_tok, size_t **out_len) {
  nc_tok_splitter *sp;
  cr_assert(nc_tok_splitter_new(pat, &sp) == NC_OK);
  nc_tok_split_ctx c;
  cr_assert(nc_tok_split_ctx_init(sp, &c) == NC_OK);
  nc_tok_bmap counts;
  nc_tok_bmap_init(&counts);
  for (size_t d = 0; d < corpus_n; d++) {
    const uint8_t *s = (const uint8_t *)corpus_docs[d];
    size_t n = corpus_lens[d], pos = 0, ms, me;
    while (nc_tok_split_next(sp, &c, s, n, pos, &ms, &me)) {
      nc_tok_bmap_add(&counts, s + ms, me - ms, nc_tok_hash(s + ms, me - ms), 1);
      pos = me;
    }
  }
  nc_tok_split_ctx_free(&c);
  nc_tok_splitter_free(sp);
  ref_word *words = calloc(counts.count, sizeof *words);
  size_t nw = 0;
  for (size_t i = 0; i <= counts.mask; i++) {
    nc_tok_bslot *s = &counts.slots[i];
    if (!s->used) continue;
    words[nw].ids = malloc(s->len * sizeof(uint32_t));
    for (uint32_t k = 0; k < s->len; k++) words[nw].ids[k] = counts.arena[s->off + k];
    words[nw].len = s->len;
    words[nw].count = s->val;
    nw++;
  }
  nc_tok_bmap_free(&counts);
  size_t cap = 256 + n_merges;
  uint8_t **tok = calloc(cap, sizeof *tok);
  size_t *tl = calloc(cap, sizeof *tl);
  for (int b = 0; b < 256; b++) tok[b] = malloc(1), tok[b][0] = (uint8_t)b, tl[b] = 1;
  size_t nv = 256;
  size_t maxpairs = 0;
  for (size_t w = 0; w < nw; w++) maxpairs += words[w].len;
  ref_pair *pairs = malloc((maxpairs + 1) * sizeof *pairs);
  while (nv < cap) {
    size_t np = 0;
    for (size_t w = 0; w < nw; w++)
      for (size_t i = 0; i + 1 < words[w].len; i++)
        pairs[np++] = (ref_pair){(uint64_t)words[w].ids[i] << 32 | words[w].ids[i + 1], words[w].count};
    if (!np) break;
    qsort(pairs, np, sizeof *pairs, ref_pair_cmp);
    uint64_t best = 0;
    int64_t bestc = 0;
    for (size_t i = 0; i < np;) {
      size_t j = i;
      int64_t sum = 0;
      while (j < np && pairs[j].key == pairs[i].key) sum += pairs[j++].count;
      if (sum > bestc) bestc = sum, best = pairs[i].key;  // ascending keys: first max = smallest pair
      i = j;
    }
    uint32_t a = (uint32_t)(best >> 32), b = (uint32_t)best;
    size_t nl = tl[a] + tl[b];
    uint8_t *nb = malloc(nl);
    memcpy(nb, tok[a], tl[a]);
    memcpy(nb + tl[a], tok[b], tl[b]);
    uint32_t nid = (uint32_t)nv;
    for (size_t v = 0; v < nv; v++)
      if (tl[v] == nl && !memcmp(tok[v], nb, nl)) nid = (uint32_t)v;
    if (nid == nv) tok[nv] = nb, tl[nv] = nl, nv++;
    else free(nb);
    for (size_t w = 0; w < nw; w++) {
      size_t o = 0;
      for (size_t i = 0; i < words[w].len;) {
        if (i + 1 < words[w].len && words[w].ids[i] == a && words[w].ids[i + 1] == b) words[w].ids[o++] = nid, i += 2;
        else words[w].ids[o++] = words[w].ids[i++];
      }
      words[w].len = o;
    }
  }
  free(pairs);
  for (size_t w = 0; w < nw; w++) free(words[w].ids);
  free(words);
  *out_tok = tok;
  *out_len = tl;
  return nv;
}

static nc_tok *train(size_t vocab, int threads, nc_tok_pattern pat) {
  nc_tok_train_opts o;
  nc_tok_train_opts_default(&o);
  o.vocab_size = vocab;
  o.threads = threads;
  o.pattern = pat;
  nc_tok *t = NULL;
  nc_status st = nc_tok_train_docs((const char *const *)corpus_docs, corpus_lens, corpus_n, &o, &t);
  cr_assert(st == NC_OK, "train: %s", nc_status_msg(st));
  return t;
}

Test(tok_train, same_merges_as_naive_reference) {
  const size_t merges = 300;
  nc_tok_pattern pats[] = {NC_TOK_PAT_NANOCHAT, NC_TOK_PAT_GPT2};
  for (int pi = 0; pi < 2; pi++) {
    uint8_t **rt;
    size_t *rl;
    size_t rn = ref_train(merges, pats[pi], &rt, &rl);
    cr_assert_eq(rn, 256 + merges, "reference made %zu tokens", rn);
    nc_tok *t = train(256 + merges + NC_TOK_N_NANOCHAT_SPECIALS, 2, pats[pi]);
    cr_assert_eq(nc_tok_n_ranks(t), rn);
    for (size_t i = 0; i < rn; i++) {
      size_t l;
      const uint8_t *b = nc_tok_token(t, (int32_t)i, &l);
      cr_assert(l == rl[i] && !memcmp(b, rt[i], l), "pattern %s: merge %zu differs: got '%.*s', reference '%.*s'",
                nc_tok_pattern_name(pats[pi]), i, (int)l, b, (int)rl[i], rt[i]);
      free(rt[i]);
    }
    free(rt);
    free(rl);
    nc_tok_free(t);
  }
}

static char *tmp_path(const char *name) {
  static char p[8][1024];
  static int k;
  char *r = p[k++ % 8];
  snprintf(r, 1024, "%s/tok_test_%ld_%s", nc_tok_test_build_dir(), (long)getpid(), name);
  return r;
}

Test(tok_train, deterministic_across_threads_byte_identical_files) {
  nc_tok *a = train(256 + 400 + 9, 1, NC_TOK_PAT_NANOCHAT);
  nc_tok *b = train(256 + 400 + 9, 2, NC_TOK_PAT_NANOCHAT);
  nc_tok *c = train(256 + 400 + 9, 2, NC_TOK_PAT_NANOCHAT);
  char *pa = tmp_path("a.tiktoken"), *pb = tmp_path("b.tiktoken"), *pc = tmp_path("c.tiktoken");
  cr_assert(nc_tok_save(a, pa) == NC_OK);
  cr_assert(nc_tok_save(b, pb) == NC_OK);
  cr_assert(nc_tok_save(c, pc) == NC_OK);
  size_t la, lb, lc;
  char *da = nc_tok_test_slurp(pa, &la), *db = nc_tok_test_slurp(pb, &lb), *dc = nc_tok_test_slurp(pc, &lc);
  cr_assert(la == lb && !memcmp(da, db, la), "1 thread and 2 threads give different rank files");
  cr_assert(la == lc && !memcmp(da, dc, la), "two runs give different rank files");
  // The saved tokenizer loads back with the same vocabulary and specials.
  nc_tok *r = NULL;
  nc_status st = nc_tok_load(pa, &r);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  cr_assert_eq(nc_tok_vocab_size(r), 256 + 400 + 9);
  cr_assert_eq(nc_tok_special_id(r, "<|bos|>"), 256 + 400);
  cr_assert_eq(nc_tok_special_id(r, "<|output_end|>"), 256 + 400 + 8);
  cr_assert_eq(nc_tok_get_pattern(r), NC_TOK_PAT_NANOCHAT);
  free(da), free(db), free(dc);
  char side[1100];
  const char *ps[] = {pa, pb, pc};
  for (int i = 0; i < 3; i++) {
    unlink(ps[i]);
    snprintf(side, sizeof side, "%s.json", ps[i]);
    unlink(side);
  }
  nc_tok_free(a), nc_tok_free(b), nc_tok_free(c), nc_tok_free(r);
}

Test(tok_train, random_bytes_round_trip) {
  nc_tok *t = train(256 + 500 + 9, 0, NC_TOK_PAT_NANOCHAT);
  uint64_t s = 0x243F6A8885A308D3ull;
  uint8_t buf[2048];
  for (int iter = 0; iter < 400; iter++) {
    size_t n = 1 + (size_t)(iter * 37 % 2000);
    for (size_t i = 0; i < n; i++) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      // Mix of fully random bytes, ASCII text and UTF-8-ish lead/continuation bytes.
      uint8_t r = (uint8_t)(s >> 24);
      buf[i] = iter % 3 == 0 ? r : iter % 3 == 1 ? (uint8_t)(" etaoinshrd\n\t0123.,'"[r % 20]) : (uint8_t)(0x80 + r % 0x78);
    }
    nc_ids ids = {0};
    cr_assert(nc_tok_encode(t, buf, n, NULL, &ids) == NC_OK);
    nc_buf back;
    nc_buf_init(&back);
    cr_assert(nc_tok_decode(t, ids.data, ids.len, &back) == NC_OK);
    cr_assert(back.len == n && !memcmp(back.data, buf, n), "round trip failed at iteration %d (%zu bytes)", iter, n);
    // The streaming decoder gives the same bytes, and only whole UTF-8
    // sequences while the text is valid UTF-8.
    nc_tok_stream ds;
    nc_tok_stream_init(&ds);
    nc_buf sb;
    nc_buf_init(&sb);
    for (size_t i = 0; i < ids.len; i++) cr_assert(nc_tok_stream_push(t, &ds, ids.data[i], &sb) == NC_OK);
    nc_tok_stream_flush(&ds, &sb);
    cr_assert(sb.len == n && !memcmp(sb.data, buf, n), "stream decode differs at iteration %d", iter);
    nc_buf_free(&sb);
    nc_buf_free(&back);
    nc_ids_free(&ids);
  }
  nc_tok_free(t);
}

Test(tok_train, doc_cap_and_max_chars) {
  nc_tok_train_opts o;
  nc_tok_train_opts_default(&o);
  o.vocab_size = 256 + 9 + 50;
  o.doc_cap = 5;  // only "hello" of every document is seen
  const char *docs[] = {"hello world world world", "hello world world world"};
  nc_tok *t = NULL;
  cr_assert(nc_tok_train_docs(docs, NULL, 2, &o, &t) == NC_OK);
  cr_assert_geq(nc_tok_rank_of(t, "hello", 5), 0);
  cr_assert_eq(nc_tok_rank_of(t, " world", 6), -1);
  cr_assert_eq(nc_tok_n_ranks(t), 256 + 4, "only h-e-l-l-o merges exist");
  nc_tok_free(t);
  // max_chars: the document that crosses the limit is the last one read.
  nc_tok_train_opts_default(&o);
  o.vocab_size = 256 + 9 + 50;
  o.max_chars = 3;
  const char *docs2[] = {"abcd", "xyzw"};
  cr_assert(nc_tok_train_docs(docs2, NULL, 2, &o, &t) == NC_OK);
  cr_assert_geq(nc_tok_rank_of(t, "abcd", 4), 0);
  cr_assert_eq(nc_tok_rank_of(t, "xy", 2), -1);
  nc_tok_free(t);
}

Test(tok_train, errors) {
  nc_tok_train_opts o;
  nc_tok_train_opts_default(&o);
  nc_tok *t = NULL;
  const char *docs[] = {"some text"};
  o.vocab_size = 256 + 8;
  nc_status st = nc_tok_train_docs(docs, NULL, 1, &o, &t);
  cr_assert(st && strstr(nc_status_msg(st), "too small"), "%s", nc_status_msg(st));
  nc_status_free(st);
  o.vocab_size = 1000;
  st = nc_tok_train_docs(docs, NULL, 0, &o, &t);
  cr_assert(st && strstr(nc_status_msg(st), "empty corpus"), "%s", nc_status_msg(st));
  nc_status_free(st);
  const char *empty[] = {"", ""};
  st = nc_tok_train_docs(empty, NULL, 2, &o, &t);
  cr_assert(st && strstr(nc_status_msg(st), "empty corpus"), "%s", nc_status_msg(st));
  nc_status_free(st);
  cr_assert_null(t);
}

// Fewer distinct pairs than merges asked for: training stops early, cleanly.
Test(tok_train, stops_when_no_pairs_remain) {
  nc_tok_train_opts o;
  nc_tok_train_opts_default(&o);
  o.vocab_size = 5000;
  const char *docs[] = {"ab ab ab"};
  nc_tok *t = NULL;
  cr_assert(nc_tok_train_docs(docs, NULL, 1, &o, &t) == NC_OK);
  cr_assert_lt(nc_tok_n_ranks(t), 300);
  cr_assert_eq(nc_tok_special_id(t, "<|bos|>"), (int32_t)nc_tok_n_ranks(t));
  nc_tok_free(t);
}

static void write_file(const char *path, const char *data, bool gz) {
  if (gz) {
    gzFile g = gzopen(path, "wb");
    cr_assert(g);
    gzwrite(g, data, (unsigned)strlen(data));
    gzclose(g);
  } else {
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fputs(data, f);
    fclose(f);
  }
}

static int collect_docs(const char *const *paths, size_t n, char out[][256], nc_status *st_out) {
  nc_tok_docfile *f = NULL;
  nc_status st = nc_tok_docfile_open(paths, n, &f);
  int k = 0;
  while (!st) {
    const char *d;
    size_t l;
    st = nc_tok_docfile_next(f, &d, &l);
    if (st || !d) break;
    snprintf(out[k++], 256, "%.*s", (int)l, d);
  }
  nc_tok_docfile_close(f);
  *st_out = st;
  return k;
}

Test(tok_train, document_files) {
  char *txt = tmp_path("in.txt"), *jl = tmp_path("in.jsonl.gz"), *bad = tmp_path("bad.jsonl");
  write_file(txt, "para one\nline two\n\n\npara two\nend", false);
  write_file(jl, "{\"text\": \"first doc\"}\n\n{\"text\": \"second\\ndoc\", \"id\": 2}\n", true);
  write_file(bad, "{\"text\": \"ok\"}\n{\"text\": oops}\n", false);
  char docs[8][256];
  nc_status st;
  const char *p1[] = {txt, jl};
  int n = collect_docs(p1, 2, docs, &st);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  cr_assert_eq(n, 4);
  cr_assert_str_eq(docs[0], "para one\nline two\n\n\n");
  cr_assert_str_eq(docs[1], "para two\nend");
  cr_assert_str_eq(docs[2], "first doc");
  cr_assert_str_eq(docs[3], "second\ndoc");
  const char *p2[] = {bad};
  n = collect_docs(p2, 1, docs, &st);
  cr_assert_eq(n, 1);
  cr_assert(st && strstr(nc_status_msg(st), "bad.jsonl:2: bad JSON"), "%s", nc_status_msg(st));
  nc_status_free(st);
  const char *p3[] = {"/nonexistent/dir/file.txt"};
  n = collect_docs(p3, 1, docs, &st);
  cr_assert(st && strstr(nc_status_msg(st), "cannot open"), "%s", nc_status_msg(st));
  nc_status_free(st);
  // Training straight from the files.
  nc_tok_docfile *f = NULL;
  cr_assert(nc_tok_docfile_open(p1, 2, &f) == NC_OK);
  nc_tok_train_opts o;
  nc_tok_train_opts_default(&o);
  o.vocab_size = 256 + 9 + 20;
  nc_tok *t = NULL;
  st = nc_tok_train(nc_tok_docfile_next, f, &o, &t);
  cr_assert(st == NC_OK, "%s", nc_status_msg(st));
  cr_assert_geq(nc_tok_rank_of(t, "para", 4), 0);
  nc_tok_free(t);
  nc_tok_docfile_close(f);
  unlink(txt), unlink(jl), unlink(bad);
}
