// Tokenizer core: construction, the bytes->rank table, encoding (tiktoken's
// rank-based merge over each regex chunk), decoding and streaming decode.
//
// Hot path: split (PCRE2 JIT) -> whole-chunk lookup (most chunks are one
// token) -> per-call chunk cache -> byte-pair merge. Large inputs are cut at
// safe boundaries (nc_tok_safe_boundary) and encoded by several threads.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat/tokenizer_internal.h"

const char *const nc_tok_nanochat_specials[NC_TOK_N_NANOCHAT_SPECIALS] = {
    "<|bos|>",           "<|user_start|>", "<|user_end|>",     "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>",  "<|python_end|>", "<|output_start|>", "<|output_end|>",
};

// ---- id lists -----------------------------------------------------------------

void nc_ids_free(nc_ids *v) {
  free(v->data);
  memset(v, 0, sizeof *v);
}

static bool nc_ids_reserve(nc_ids *v, size_t extra) {
  if (v->len + extra <= v->cap) return true;
  size_t cap = v->cap ? v->cap : 64;
  while (cap < v->len + extra) cap *= 2;
  int32_t *d = realloc(v->data, cap * sizeof *d);
  if (!d) return false;
  v->data = d;
  v->cap = cap;
  return true;
}

nc_status nc_ids_push(nc_ids *v, int32_t id) {
  if (!nc_ids_reserve(v, 1)) return nc_errorf(NC_E_NOMEM, "out of memory (token ids)");
  v->data[v->len++] = id;
  return NC_OK;
}

nc_status nc_ids_append(nc_ids *v, const int32_t *ids, size_t n) {
  if (!n) return NC_OK;
  if (!nc_ids_reserve(v, n)) return nc_errorf(NC_E_NOMEM, "out of memory (token ids)");
  memcpy(v->data + v->len, ids, n * sizeof *ids);
  v->len += n;
  return NC_OK;
}

// ---- construction -------------------------------------------------------------

void nc_tok_free(nc_tok *t) {
  if (!t) return;
  nc_tok_splitter_free(t->split);
  free(t->pool);
  free(t->tok_off);
  free(t->tok_len);
  free(t->map);
  for (size_t i = 0; i < t->n_special; i++) free(t->special_name[i]);
  free(t->special_name);
  free(t->special_len);
  free(t->special_id);
  free(t);
}

static char *nc_strdup_n(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) memcpy(d, s, n), d[n] = 0;
  return d;
}

nc_status nc_tok_new(const uint8_t *const *tokens, const size_t *lens, size_t n_ranks, nc_tok_pattern pat,
                     const char *const *special_names, const int32_t *special_ids, size_t n_special, nc_tok **out) {
  *out = NULL;
  if (n_ranks == 0) return nc_errorf(NC_E_INVALID, "tokenizer has no tokens");
  if (n_ranks + n_special > (size_t)INT32_MAX / 2) return nc_errorf(NC_E_INVALID, "tokenizer too large");
  nc_tok *t = calloc(1, sizeof *t);
  if (!t) return nc_errorf(NC_E_NOMEM, "out of memory");
  t->pat = pat;
  t->n_ranks = n_ranks;
  nc_status st = nc_tok_splitter_new(pat, &t->split);
  if (st) goto fail;
  size_t total = 0;
  for (size_t i = 0; i < n_ranks; i++) {
    if (lens[i] == 0 || lens[i] > UINT32_MAX) {
      st = nc_errorf(NC_E_INVALID, "token of rank %zu is empty or too long", i);
      goto fail;
    }
    total += lens[i];
  }
  size_t cap = 16;
  while (cap < n_ranks * 2) cap *= 2;
  t->pool = malloc(total ? total : 1);
  t->tok_off = malloc(n_ranks * sizeof *t->tok_off);
  t->tok_len = malloc(n_ranks * sizeof *t->tok_len);
  t->map = calloc(cap, sizeof *t->map);
  if (!t->pool || !t->tok_off || !t->tok_len || !t->map) {
    st = nc_errorf(NC_E_NOMEM, "out of memory (%zu tokens)", n_ranks);
    goto fail;
  }
  t->map_mask = cap - 1;
  for (int b = 0; b < 256; b++) t->byte_rank[b] = -1;
  size_t off = 0;
  for (size_t i = 0; i < n_ranks; i++) {
    memcpy(t->pool + off, tokens[i], lens[i]);
    t->tok_off[i] = off;
    t->tok_len[i] = (uint32_t)lens[i];
    off += lens[i];
    uint64_t h = nc_tok_hash(tokens[i], lens[i]);
    int32_t prev = nc_tok_lookup_h(t, tokens[i], lens[i], h);
    if (prev >= 0) {
      st = nc_errorf(NC_E_PARSE, "duplicate token: ranks %d and %zu have the same bytes", prev, i);
      goto fail;
    }
    size_t j = (size_t)h & t->map_mask;
    while (t->map[j].h) j = (j + 1) & t->map_mask;
    t->map[j].h = nc_tok_slot_hash(h);
    t->map[j].id = (int32_t)i;
    if (lens[i] == 1) t->byte_rank[tokens[i][0]] = (int32_t)i;
  }
  for (int b = 0; b < 256; b++)
    if (t->byte_rank[b] < 0) {
      st = nc_errorf(NC_E_INVALID, "byte-level BPE needs all 256 single-byte tokens; byte 0x%02x has none", b);
      goto fail;
    }
  t->vocab_size = n_ranks;
  if (n_special) {
    t->special_name = calloc(n_special, sizeof *t->special_name);
    t->special_len = calloc(n_special, sizeof *t->special_len);
    t->special_id = calloc(n_special, sizeof *t->special_id);
    if (!t->special_name || !t->special_len || !t->special_id) {
      st = nc_errorf(NC_E_NOMEM, "out of memory");
      goto fail;
    }
  }
  for (size_t i = 0; i < n_special; i++) {
    int64_t id = special_ids ? special_ids[i] : (int64_t)(n_ranks + i);
    size_t len = strlen(special_names[i]);
    if (len == 0) {
      st = nc_errorf(NC_E_INVALID, "special token %zu has an empty name", i);
      goto fail;
    }
    if (id < (int64_t)n_ranks || id > INT32_MAX / 2) {
      st = nc_errorf(NC_E_INVALID, "special token %s: id %lld collides with the %zu mergeable ranks",
                     special_names[i], (long long)id, n_ranks);
      goto fail;
    }
    for (size_t k = 0; k < i; k++) {
      if (t->special_id[k] == id) {
        st = nc_errorf(NC_E_INVALID, "special tokens %s and %s share id %lld", t->special_name[k], special_names[i],
                       (long long)id);
        goto fail;
      }
      if (!strcmp(t->special_name[k], special_names[i])) {
        st = nc_errorf(NC_E_INVALID, "special token %s declared twice", special_names[i]);
        goto fail;
      }
    }
    t->special_name[i] = nc_strdup_n(special_names[i], len);
    if (!t->special_name[i]) {
      st = nc_errorf(NC_E_NOMEM, "out of memory");
      goto fail;
    }
    t->special_len[i] = len;
    t->special_id[i] = (int32_t)id;
    t->n_special = i + 1;
    if ((size_t)id + 1 > t->vocab_size) t->vocab_size = (size_t)id + 1;
  }
  *out = t;
  return NC_OK;
fail:
  nc_tok_free(t);
  return st;
}

size_t nc_tok_n_ranks(const nc_tok *t) { return t->n_ranks; }
size_t nc_tok_vocab_size(const nc_tok *t) { return t->vocab_size; }
nc_tok_pattern nc_tok_get_pattern(const nc_tok *t) { return t->pat; }
size_t nc_tok_n_special(const nc_tok *t) { return t->n_special; }
const char *nc_tok_special_name(const nc_tok *t, size_t i) { return i < t->n_special ? t->special_name[i] : NULL; }
int32_t nc_tok_special_id_at(const nc_tok *t, size_t i) { return i < t->n_special ? t->special_id[i] : -1; }

int32_t nc_tok_special_id(const nc_tok *t, const char *name) {
  for (size_t i = 0; i < t->n_special; i++)
    if (!strcmp(t->special_name[i], name)) return t->special_id[i];
  return -1;
}

int32_t nc_tok_bos_id(const nc_tok *t) {
  int32_t id = nc_tok_special_id(t, "<|bos|>");
  return id >= 0 ? id : nc_tok_special_id(t, "<|endoftext|>");
}

static int nc_tok_special_index(const nc_tok *t, int32_t id) {
  for (size_t i = 0; i < t->n_special; i++)
    if (t->special_id[i] == id) return (int)i;
  return -1;
}

bool nc_tok_is_special(const nc_tok *t, int32_t id) { return id >= 0 && nc_tok_special_index(t, id) >= 0; }

const uint8_t *nc_tok_token(const nc_tok *t, int32_t id, size_t *len) {
  if (id >= 0 && (size_t)id < t->n_ranks) {
    *len = t->tok_len[id];
    return t->pool + t->tok_off[id];
  }
  int k = id >= 0 ? nc_tok_special_index(t, id) : -1;
  if (k < 0) {
    *len = 0;
    return NULL;
  }
  *len = t->special_len[k];
  return (const uint8_t *)t->special_name[k];
}

void nc_tok_token_bytes(const nc_tok *t, int32_t *out) {
  for (size_t i = 0; i < t->vocab_size; i++) out[i] = i < t->n_ranks ? (int32_t)t->tok_len[i] : 0;
}

int32_t nc_tok_rank_of(const nc_tok *t, const void *bytes, size_t n) {
  return n ? nc_tok_lookup(t, bytes, n) : -1;
}

// ---- byte-pair merge ------------------------------------------------------------

#define NC_RANK_NONE INT32_MAX

static inline int32_t nc_pair_rank(const nc_tok *t, const uint8_t *s, size_t a, size_t b) {
  int32_t r = nc_tok_lookup(t, s + a, b - a);
  return r < 0 ? NC_RANK_NONE : r;
}

// tiktoken's byte_pair_merge for short chunks: parts in an array, repeatedly
// merge the lowest-ranked adjacent pair (leftmost on ties). O(n*m) but cache
// friendly; ids[] receives the final tokens.
#define NC_SMALL_CHUNK 128
static size_t nc_bpe_small(const nc_tok *t, const uint8_t *s, size_t n, int32_t *ids) {
  uint32_t start[NC_SMALL_CHUNK + 1];
  int32_t rank[NC_SMALL_CHUNK];
  size_t m = n;
  for (size_t k = 0; k < n; k++) {
    start[k] = (uint32_t)k;
    ids[k] = t->byte_rank[s[k]];
    rank[k] = k + 1 < n ? nc_pair_rank(t, s, k, k + 2) : NC_RANK_NONE;
  }
  start[n] = (uint32_t)n;
  for (;;) {
    int32_t best = NC_RANK_NONE;
    size_t bi = 0;
    for (size_t k = 0; k + 1 < m; k++)
      if (rank[k] < best) best = rank[k], bi = k;
    if (best == NC_RANK_NONE) break;
    // merge parts bi and bi+1
    ids[bi] = best;
    memmove(&start[bi + 1], &start[bi + 2], (m - bi - 1) * sizeof *start);
    memmove(&ids[bi + 1], &ids[bi + 2], (m - bi - 2) * sizeof *ids);
    memmove(&rank[bi + 1], &rank[bi + 2], (m - bi - 2) * sizeof *rank);
    m--;
    rank[bi] = bi + 1 < m ? nc_pair_rank(t, s, start[bi], start[bi + 2]) : NC_RANK_NONE;
    if (bi > 0) rank[bi - 1] = nc_pair_rank(t, s, start[bi - 1], start[bi + 1]);
  }
  return m;
}

// Long chunks (long whitespace runs, base64 blobs): the same merge order with a
// min-heap keyed (rank, position) over a linked list, O(n log n). A heap entry
// is live iff its part is alive and still has that pair rank (pair byte
// strings only grow, and ranks are unique per byte string).
typedef struct {
  int32_t rank;
  uint32_t pos;
} nc_bpe_he;

static inline bool nc_he_less(nc_bpe_he a, nc_bpe_he b) {
  return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void nc_he_push(nc_bpe_he *h, size_t *n, nc_bpe_he e) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!nc_he_less(e, h[p])) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = e;
}

static nc_bpe_he nc_he_pop(nc_bpe_he *h, size_t *n) {
  nc_bpe_he top = h[0], e = h[--(*n)];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && nc_he_less(h[c + 1], h[c])) c++;
    if (!nc_he_less(h[c], e)) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = e;
  return top;
}

static nc_status nc_bpe_large(const nc_tok *t, const uint8_t *s, size_t n, nc_ids *out) {
  uint32_t *nxt = malloc(n * sizeof *nxt), *prv = malloc(n * sizeof *prv);
  int32_t *id = malloc(n * sizeof *id), *pr = malloc(n * sizeof *pr);
  nc_bpe_he *heap = malloc(2 * n * sizeof *heap);
  nc_status st = NC_OK;
  if (!nxt || !prv || !id || !pr || !heap) {
    st = nc_errorf(NC_E_NOMEM, "out of memory (chunk of %zu bytes)", n);
    goto done;
  }
  size_t hn = 0;
  for (size_t k = 0; k < n; k++) {
    nxt[k] = (uint32_t)(k + 1);
    prv[k] = (uint32_t)(k - 1);  // wraps for k = 0; never read there
    id[k] = t->byte_rank[s[k]];
    pr[k] = k + 1 < n ? nc_pair_rank(t, s, k, k + 2) : NC_RANK_NONE;
    if (pr[k] != NC_RANK_NONE) nc_he_push(heap, &hn, (nc_bpe_he){pr[k], (uint32_t)k});
  }
  while (hn) {
    nc_bpe_he e = nc_he_pop(heap, &hn);
    size_t p = e.pos;
    if (id[p] < 0 || pr[p] != e.rank) continue;  // stale
    size_t q = nxt[p];
    id[p] = e.rank;
    id[q] = -1;  // dead
    nxt[p] = nxt[q];
    if (nxt[p] < n) prv[nxt[p]] = (uint32_t)p;
    size_t after = nxt[p];
    pr[p] = after < n ? nc_pair_rank(t, s, p, after < n ? nxt[after] : n) : NC_RANK_NONE;
    if (pr[p] != NC_RANK_NONE) nc_he_push(heap, &hn, (nc_bpe_he){pr[p], (uint32_t)p});
    if (p > 0) {
      size_t pp = prv[p];
      pr[pp] = nc_pair_rank(t, s, pp, nxt[p]);
      if (pr[pp] != NC_RANK_NONE) nc_he_push(heap, &hn, (nc_bpe_he){pr[pp], (uint32_t)pp});
    }
    // The heap holds at most one live entry per part plus stale ones; bound it.
    if (hn + 2 >= 2 * n) {
      size_t w = 0;
      for (size_t r = 0; r < hn; r++)
        if (id[heap[r].pos] >= 0 && pr[heap[r].pos] == heap[r].rank) heap[w++] = heap[r];
      hn = 0;
      for (size_t r = 0; r < w; r++) nc_he_push(heap, &hn, heap[r]);
    }
  }
  for (size_t k = 0; k < n; k = nxt[k]) {
    st = nc_ids_push(out, id[k]);
    if (st) break;
  }
done:
  free(nxt);
  free(prv);
  free(id);
  free(pr);
  free(heap);
  return st;
}

// ---- chunk cache -----------------------------------------------------------------

// Direct-mapped cache of multi-token chunks for one encode call (one thread):
// frequent words that are not single tokens skip the merge loop.
#define NC_CACHE_SLOTS 4096
#define NC_CACHE_KEY 24
#define NC_CACHE_TOK 8
typedef struct {
  uint64_t h;
  uint8_t len, ntok;
  uint8_t key[NC_CACHE_KEY];
  int32_t ids[NC_CACHE_TOK];
} nc_cache_slot;

typedef struct {
  const nc_tok *t;
  nc_cache_slot *cache;  // NULL for small inputs
  nc_tok_split_ctx split;
} nc_enc_state;

static nc_status nc_enc_chunk(nc_enc_state *es, const uint8_t *s, size_t n, nc_ids *out) {
  const nc_tok *t = es->t;
  if (n == 1) return nc_ids_push(out, t->byte_rank[s[0]]);
  uint64_t h = nc_tok_hash(s, n);
  int32_t r = nc_tok_lookup_h(t, s, n, h);
  if (r >= 0) return nc_ids_push(out, r);
  nc_cache_slot *cs = NULL;
  if (es->cache && n <= NC_CACHE_KEY) {
    cs = &es->cache[(h >> 7) & (NC_CACHE_SLOTS - 1)];
    if (cs->h == h && cs->len == n && memcmp(cs->key, s, n) == 0) return nc_ids_append(out, cs->ids, cs->ntok);
  }
  if (n > NC_SMALL_CHUNK) return nc_bpe_large(t, s, n, out);
  int32_t ids[NC_SMALL_CHUNK];
  size_t m = nc_bpe_small(t, s, n, ids);
  if (cs && m <= NC_CACHE_TOK) {
    cs->h = h;
    cs->len = (uint8_t)n;
    cs->ntok = (uint8_t)m;
    memcpy(cs->key, s, n);
    memcpy(cs->ids, ids, m * sizeof *ids);
  }
  return nc_ids_append(out, ids, m);
}

// Ordinary text: regex chunks, and the bytes between them (invalid UTF-8) one
// token each.
static nc_status nc_enc_ordinary(nc_enc_state *es, const uint8_t *s, size_t n, nc_ids *out) {
  const nc_tok *t = es->t;
  size_t pos = 0, ms, me;
  while (pos < n) {
    bool found = nc_tok_split_next(t->split, &es->split, s, n, pos, &ms, &me);
    if (!found) ms = me = n;
    for (size_t k = pos; k < ms; k++) NC_TRY(nc_ids_push(out, t->byte_rank[s[k]]));
    if (!found) break;
    NC_TRY(nc_enc_chunk(es, s + ms, me - ms, out));
    pos = me;
  }
  return NC_OK;
}

// Finds the first special token at or after pos (longest name wins at a
// position). Returns its index or -1.
static int nc_find_special(const nc_tok *t, const uint8_t *s, size_t n, size_t pos, size_t *at) {
  if (!t->n_special) return -1;
  for (size_t p = pos; p < n; p++) {
    int best = -1;
    for (size_t k = 0; k < t->n_special; k++) {
      size_t l = t->special_len[k];
      if ((uint8_t)t->special_name[k][0] == s[p] && l <= n - p && memcmp(s + p, t->special_name[k], l) == 0 &&
          (best < 0 || l > t->special_len[best]))
        best = (int)k;
    }
    if (best >= 0) {
      *at = p;
      return best;
    }
  }
  return -1;
}

static nc_status nc_enc_segment(nc_enc_state *es, const uint8_t *s, size_t n, nc_tok_special_mode mode,
                                nc_ids *out) {
  if (mode == NC_TOK_SPECIAL_ORDINARY || !es->t->n_special) return nc_enc_ordinary(es, s, n, out);
  size_t pos = 0, at;
  for (;;) {
    int k = nc_find_special(es->t, s, n, pos, &at);
    if (k < 0) return nc_enc_ordinary(es, s + pos, n - pos, out);
    if (mode == NC_TOK_SPECIAL_DISALLOW)
      return nc_errorf(NC_E_INVALID, "text contains the special token %s at byte %zu (not allowed here)",
                       es->t->special_name[k], at);
    NC_TRY(nc_enc_ordinary(es, s + pos, at - pos, out));
    NC_TRY(nc_ids_push(out, es->t->special_id[k]));
    pos = at + es->t->special_len[k];
  }
}

static nc_status nc_enc_state_init(nc_enc_state *es, const nc_tok *t, size_t n) {
  memset(es, 0, sizeof *es);
  es->t = t;
  NC_TRY(nc_tok_split_ctx_init(t->split, &es->split));
  if (n >= 4096) es->cache = calloc(NC_CACHE_SLOTS, sizeof *es->cache);  // optional: NULL just means no cache
  return NC_OK;
}

static void nc_enc_state_free(nc_enc_state *es) {
  nc_tok_split_ctx_free(&es->split);
  free(es->cache);
}

typedef struct {
  const nc_tok *t;
  const uint8_t *s;
  size_t n;
  nc_tok_special_mode mode;
  nc_ids ids;
  nc_status st;
} nc_enc_job;

static void *nc_enc_job_run(void *arg) {
  nc_enc_job *j = arg;
  nc_enc_state es;
  j->st = nc_enc_state_init(&es, j->t, j->n);
  if (!j->st) j->st = nc_enc_segment(&es, j->s, j->n, j->mode, &j->ids);
  nc_enc_state_free(&es);
  return NULL;
}

#define NC_ENC_MIN_PER_THREAD (256 * 1024)
#define NC_ENC_MAX_THREADS 16

nc_status nc_tok_encode(const nc_tok *t, const void *text, size_t n, const nc_tok_encode_opts *opts, nc_ids *out) {
  nc_tok_special_mode mode = opts ? opts->special : NC_TOK_SPECIAL_ORDINARY;
  int want = opts ? opts->threads : 0;
  const uint8_t *s = text;
  if (want <= 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    want = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
  }
  if (want > NC_ENC_MAX_THREADS) want = NC_ENC_MAX_THREADS;
  if ((size_t)want > n / NC_ENC_MIN_PER_THREAD) want = (int)(n / NC_ENC_MIN_PER_THREAD);
  // A special token with a newline inside could straddle a safe boundary.
  if (mode != NC_TOK_SPECIAL_ORDINARY)
    for (size_t k = 0; k < t->n_special; k++)
      if (memchr(t->special_name[k], '\n', t->special_len[k])) want = 1;
  if (want <= 1) {
    nc_enc_state es;
    NC_TRY(nc_enc_state_init(&es, t, n));
    nc_status st = nc_enc_segment(&es, s, n, mode, out);
    nc_enc_state_free(&es);
    return st;
  }
  nc_enc_job jobs[NC_ENC_MAX_THREADS];
  pthread_t th[NC_ENC_MAX_THREADS];
  bool started[NC_ENC_MAX_THREADS] = {0};
  int nj = 0;
  size_t begin = 0;
  for (int k = 0; k < want && begin < n; k++) {
    size_t end = k == want - 1 ? n : nc_tok_safe_boundary(s, n, n / (size_t)want * (size_t)(k + 1));
    if (end <= begin) continue;
    jobs[nj] = (nc_enc_job){t, s + begin, end - begin, mode, {0}, NC_OK};
    nj++;
    begin = end;
  }
  for (int k = 1; k < nj; k++) started[k] = pthread_create(&th[k], NULL, nc_enc_job_run, &jobs[k]) == 0;
  nc_enc_job_run(&jobs[0]);
  for (int k = 1; k < nj; k++) {
    if (started[k]) pthread_join(th[k], NULL);
    else nc_enc_job_run(&jobs[k]);  // could not start a thread: do it here
  }
  nc_status st = NC_OK;
  for (int k = 0; k < nj; k++) {
    if (!st && jobs[k].st) st = jobs[k].st, jobs[k].st = NC_OK;
    if (!st) st = nc_ids_append(out, jobs[k].ids.data, jobs[k].ids.len);
    nc_status_free(jobs[k].st);
    nc_ids_free(&jobs[k].ids);
  }
  return st;
}

// ---- decoding ----------------------------------------------------------------------

nc_status nc_tok_decode(const nc_tok *t, const int32_t *ids, size_t n, nc_buf *out) {
  for (size_t i = 0; i < n; i++) {
    size_t len;
    const uint8_t *b = nc_tok_token(t, ids[i], &len);
    if (!b) return nc_errorf(NC_E_INVALID, "token %zu: unknown id %d (vocabulary has %zu)", i, ids[i], t->vocab_size);
    nc_buf_put(out, b, len);
  }
  if (out->oom) return nc_errorf(NC_E_NOMEM, "out of memory (decoded text)");
  return NC_OK;
}

void nc_tok_stream_init(nc_tok_stream *s) { memset(s, 0, sizeof *s); }

// Length a UTF-8 lead byte announces (0: not a lead byte that can start a
// valid sequence).
static int nc_utf8_seq_len(uint8_t c) {
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

nc_status nc_tok_stream_push(const nc_tok *t, nc_tok_stream *s, int32_t id, nc_buf *out) {
  size_t len;
  const uint8_t *b = nc_tok_token(t, id, &len);
  if (!b) return nc_errorf(NC_E_INVALID, "unknown token id %d", id);
  // Work on held bytes + this token; emit all but a trailing incomplete (yet
  // still possibly valid) sequence.
  size_t total = (size_t)s->nheld + len;
  size_t keep_from = total;
  // Look at most 3 bytes back for a lead byte whose sequence is unfinished.
  for (size_t back = 1; back <= 3 && back <= total; back++) {
    size_t i = total - back;
    uint8_t c = i < (size_t)s->nheld ? s->held[i] : b[i - s->nheld];
    if ((c & 0xC0) == 0x80) continue;  // continuation: keep looking for the lead
    int need = nc_utf8_seq_len(c);
    if (need > (int)back) keep_from = i;
    break;
  }
  uint8_t tail[4];
  size_t ntail = total - keep_from;
  for (size_t i = keep_from; i < total; i++) tail[i - keep_from] = i < (size_t)s->nheld ? s->held[i] : b[i - s->nheld];
  size_t emit = keep_from;
  size_t from_held = emit < (size_t)s->nheld ? emit : (size_t)s->nheld;
  nc_buf_put(out, s->held, from_held);
  if (emit > (size_t)s->nheld) nc_buf_put(out, b, emit - s->nheld);
  memcpy(s->held, tail, ntail);
  s->nheld = (int)ntail;
  return out->oom ? nc_errorf(NC_E_NOMEM, "out of memory") : NC_OK;
}

void nc_tok_stream_flush(nc_tok_stream *s, nc_buf *out) {
  nc_buf_put(out, s->held, (size_t)s->nheld);
  s->nheld = 0;
}
