// BPE training, nanochat's algorithm (rustbpe):
//  1. Documents (each capped at doc_cap characters, stopping after max_chars)
//     are split with the pattern; unique chunks are counted by several
//     threads, each into its own table, merged at the end.
//  2. Each unique chunk becomes a word of byte ids with its count. Pair counts
//     and, per pair, the words that contain it are built once.
//  3. Repeatedly take the pair with the highest count (ties: the smaller pair
//     (a, b)) from a max-heap with lazy invalidation (a popped entry whose
//     count is stale is pushed back with the current count), merge it in the
//     words that contain it, and apply the pair-count deltas incrementally.
// The result depends only on the chunk counts, so it is the same for any
// thread count and input order of equal documents: byte-identical files.
//
// One divergence from rustbpe, for tiktoken-valid output: if a merge would
// create a byte string that is already a token (possible when two merge paths
// reach the same bytes), the existing id is reused and no new rank is spent
// (rustbpe would emit a duplicate token, which tiktoken rejects).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat/tokenizer_internal.h"

void nc_tok_train_opts_default(nc_tok_train_opts *o) {
  memset(o, 0, sizeof *o);
  o->vocab_size = 32768;
  o->max_chars = 2000000000ull;
  o->doc_cap = 10000;
  o->threads = 0;
  o->pattern = NC_TOK_PAT_NANOCHAT;
}

// ---- 1. chunk counting -----------------------------------------------------------

typedef struct {
  const nc_tok_splitter *split;
  const uint8_t *arena;
  const size_t *doc_off;  // doc i is arena[doc_off[i] .. doc_off[i+1])
  size_t first, last;     // docs [first, last)
  nc_tok_bmap *counts;
  nc_status st;
} nc_count_job;

static void *nc_count_run(void *arg) {
  nc_count_job *j = arg;
  nc_tok_split_ctx c;
  j->st = nc_tok_split_ctx_init(j->split, &c);
  if (j->st) return NULL;
  for (size_t d = j->first; d < j->last && !j->st; d++) {
    const uint8_t *s = j->arena + j->doc_off[d];
    size_t n = j->doc_off[d + 1] - j->doc_off[d], pos = 0, ms, me;
    while (pos < n && nc_tok_split_next(j->split, &c, s, n, pos, &ms, &me)) {
      if (!nc_tok_bmap_add(j->counts, s + ms, me - ms, nc_tok_hash(s + ms, me - ms), 1)) {
        j->st = nc_errorf(NC_E_NOMEM, "out of memory counting chunks");
        break;
      }
      pos = me;
    }
  }
  nc_tok_split_ctx_free(&c);
  return NULL;
}

// Counts one batch of documents with up to nt threads, each into counts[k].
static nc_status nc_count_batch(const nc_tok_splitter *split, const uint8_t *arena, const size_t *doc_off,
                                size_t ndocs, int nt, nc_tok_bmap *counts) {
  nc_count_job jobs[64];
  pthread_t th[64];
  bool started[64] = {0};
  if (nt > 64) nt = 64;
  if ((size_t)nt > ndocs) nt = ndocs ? (int)ndocs : 1;
  // Contiguous ranges of roughly equal bytes.
  size_t total = doc_off[ndocs], d = 0;
  for (int k = 0; k < nt; k++) {
    size_t target = total / (size_t)nt * (size_t)(k + 1), first = d;
    if (k == nt - 1) d = ndocs;
    else
      while (d < ndocs && doc_off[d + 1] <= target) d++;
    jobs[k] = (nc_count_job){split, arena, doc_off, first, d, &counts[k], NC_OK};
  }
  for (int k = 1; k < nt; k++) started[k] = pthread_create(&th[k], NULL, nc_count_run, &jobs[k]) == 0;
  nc_count_run(&jobs[0]);
  for (int k = 1; k < nt; k++) {
    if (started[k]) pthread_join(th[k], NULL);
    else nc_count_run(&jobs[k]);
  }
  nc_status st = NC_OK;
  for (int k = 0; k < nt; k++) {
    if (!st) st = jobs[k].st;
    else nc_status_free(jobs[k].st);
  }
  return st;
}

// Characters (code points; an invalid byte counts as one) and the byte length
// of the first cap characters.
static size_t nc_utf8_prefix(const uint8_t *s, size_t n, uint64_t cap, uint64_t *nchars) {
  uint64_t c = 0;
  for (size_t i = 0; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) {
      if (c == cap) {
        *nchars = c;
        return i;
      }
      c++;
    }
  }
  *nchars = c;
  return n;
}

// ---- 2./3. merging -------------------------------------------------------------------

typedef struct {
  uint32_t *d;
  uint32_t n, cap;
} nc_u32v;

static bool nc_u32v_push(nc_u32v *v, uint32_t x) {
  if (v->n == v->cap) {
    uint32_t cap = v->cap ? v->cap * 2 : 4;
    uint32_t *d = realloc(v->d, cap * sizeof *d);
    if (!d) return false;
    v->d = d;
    v->cap = cap;
  }
  v->d[v->n++] = x;
  return true;
}

typedef struct {
  int64_t count;
  uint64_t key;  // a << 32 | b
} nc_merge_he;

typedef struct {
  // pairs
  uint64_t *pkey;
  int64_t *pcount;
  nc_u32v *ppos;    // words that may contain the pair (a superset)
  uint64_t *pstamp; // last merge step that queued the pair
  size_t npairs, pcap;
  uint32_t *slot;   // open addressing: pair index + 1 (0 = empty)
  size_t smask;
  // heap
  nc_merge_he *heap;
  size_t hn, hcap;
  bool oom;
} nc_pairs;

static inline uint64_t nc_mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

static bool nc_pairs_grow_slots(nc_pairs *p) {
  size_t cap = p->slot ? (p->smask + 1) * 2 : 4096;
  uint32_t *ns = calloc(cap, sizeof *ns);
  if (!ns) return false;
  for (size_t i = 0; i < p->npairs; i++) {
    size_t j = nc_mix64(p->pkey[i]) & (cap - 1);
    while (ns[j]) j = (j + 1) & (cap - 1);
    ns[j] = (uint32_t)i + 1;
  }
  free(p->slot);
  p->slot = ns;
  p->smask = cap - 1;
  return true;
}

// Index of pair key, inserting it (count 0) if absent; SIZE_MAX on OOM.
static size_t nc_pairs_get(nc_pairs *p, uint64_t key) {
  if (p->slot) {
    size_t j = nc_mix64(key) & p->smask;
    for (; p->slot[j]; j = (j + 1) & p->smask)
      if (p->pkey[p->slot[j] - 1] == key) return p->slot[j] - 1;
  }
  if ((!p->slot || (p->npairs + 1) * 2 > p->smask + 1) && !nc_pairs_grow_slots(p)) return SIZE_MAX;
  if (p->npairs == p->pcap) {
    size_t cap = p->pcap ? p->pcap * 2 : 4096;
    uint64_t *k = realloc(p->pkey, cap * sizeof *k);
    if (k) p->pkey = k;
    int64_t *c = realloc(p->pcount, cap * sizeof *c);
    if (c) p->pcount = c;
    nc_u32v *v = realloc(p->ppos, cap * sizeof *v);
    if (v) p->ppos = v;
    uint64_t *s = realloc(p->pstamp, cap * sizeof *s);
    if (s) p->pstamp = s;
    if (!k || !c || !v || !s) return SIZE_MAX;
    p->pcap = cap;
  }
  size_t i = p->npairs++;
  p->pkey[i] = key;
  p->pcount[i] = 0;
  p->ppos[i] = (nc_u32v){0};
  p->pstamp[i] = 0;
  size_t j = nc_mix64(key) & p->smask;
  while (p->slot[j]) j = (j + 1) & p->smask;
  p->slot[j] = (uint32_t)i + 1;
  return i;
}

static inline bool nc_he_before(nc_merge_he a, nc_merge_he b) {
  return a.count > b.count || (a.count == b.count && a.key < b.key);
}

static void nc_heap_push(nc_pairs *p, int64_t count, uint64_t key) {
  if (p->hn == p->hcap) {
    size_t cap = p->hcap ? p->hcap * 2 : 4096;
    nc_merge_he *h = realloc(p->heap, cap * sizeof *h);
    if (!h) {
      p->oom = true;
      return;
    }
    p->heap = h;
    p->hcap = cap;
  }
  nc_merge_he e = {count, key};
  size_t i = p->hn++;
  while (i > 0) {
    size_t up = (i - 1) / 2;
    if (!nc_he_before(e, p->heap[up])) break;
    p->heap[i] = p->heap[up];
    i = up;
  }
  p->heap[i] = e;
}

static nc_merge_he nc_heap_pop(nc_pairs *p) {
  nc_merge_he top = p->heap[0], e = p->heap[--p->hn];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= p->hn) break;
    if (c + 1 < p->hn && nc_he_before(p->heap[c + 1], p->heap[c])) c++;
    if (!nc_he_before(p->heap[c], e)) break;
    p->heap[i] = p->heap[c];
    i = c;
  }
  p->heap[i] = e;
  return top;
}

static void nc_pairs_free(nc_pairs *p) {
  for (size_t i = 0; i < p->npairs; i++) free(p->ppos[i].d);
  free(p->pkey);
  free(p->pcount);
  free(p->ppos);
  free(p->pstamp);
  free(p->slot);
  free(p->heap);
}

#define NC_KEY(a, b) ((uint64_t)(a) << 32 | (uint32_t)(b))

typedef struct {
  uint32_t *ids;    // all words back to back
  size_t *off;      // word w at ids[off[w] .. off[w] + len[w])
  uint32_t *len;
  int64_t *count;
  size_t n;
} nc_words;

typedef struct {
  nc_pairs *p;
  size_t step;
  nc_u32v queued;  // pairs that gained occurrences this step
  uint32_t word;
  uint32_t local[64];  // pairs this word was already appended to (dedupe)
  int nlocal;
} nc_delta_ctx;

static void nc_delta(nc_delta_ctx *c, uint32_t a, uint32_t b, int64_t d) {
  nc_pairs *p = c->p;
  size_t i = nc_pairs_get(p, NC_KEY(a, b));
  if (i == SIZE_MAX) {
    p->oom = true;
    return;
  }
  p->pcount[i] += d;
  if (d <= 0) return;
  for (int k = 0; k < c->nlocal; k++)
    if (c->local[k] == i) return;
  if (c->nlocal < 64) c->local[c->nlocal++] = (uint32_t)i;
  if (!nc_u32v_push(&p->ppos[i], c->word)) p->oom = true;
  if (p->pstamp[i] != c->step) {
    p->pstamp[i] = c->step;
    if (!nc_u32v_push(&c->queued, (uint32_t)i)) p->oom = true;
  }
}

// Merges every non-overlapping (a, b) left to right in word w, in place,
// applying pair-count deltas weighted by the word's count.
static void nc_word_merge(nc_words *W, nc_delta_ctx *c, uint32_t w, uint32_t a, uint32_t b, uint32_t nid) {
  uint32_t *ids = W->ids + W->off[w];
  uint32_t n = W->len[w], o = 0;
  int64_t cnt = W->count[w];
  c->word = w;
  c->nlocal = 0;
  for (uint32_t i = 0; i < n;) {
    if (i + 1 < n && ids[i] == a && ids[i + 1] == b) {
      if (o > 0) {
        nc_delta(c, ids[o - 1], a, -cnt);
        nc_delta(c, ids[o - 1], nid, cnt);
      }
      nc_delta(c, a, b, -cnt);
      if (i + 2 < n) {
        nc_delta(c, b, ids[i + 2], -cnt);
        nc_delta(c, nid, ids[i + 2], cnt);
      }
      ids[o++] = nid;
      i += 2;
    } else {
      ids[o++] = ids[i++];
    }
  }
  W->len[w] = o;
}

typedef struct {
  nc_tok_bmap bytes;  // token bytes -> id (duplicate detection)
  uint8_t *pool;
  size_t pool_len, pool_cap;
  size_t *off, *len;  // per id
  size_t n, cap;
} nc_vocab;

static bool nc_vocab_add(nc_vocab *v, const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 1024;
    size_t *o = realloc(v->off, cap * sizeof *o);
    if (o) v->off = o;
    size_t *l = realloc(v->len, cap * sizeof *l);
    if (l) v->len = l;
    if (!o || !l) return false;
    v->cap = cap;
  }
  if (v->pool_len + al + bl > v->pool_cap) {
    size_t cap = v->pool_cap ? v->pool_cap * 2 : 65536;
    while (cap < v->pool_len + al + bl) cap *= 2;
    uint8_t *p = realloc(v->pool, cap);
    if (!p) return false;
    v->pool = p;
    v->pool_cap = cap;
  }
  uint8_t *dst = v->pool + v->pool_len;
  memcpy(dst, a, al);  // a and b never point into pool (the caller copies first)
  if (bl) memcpy(dst + al, b, bl);
  v->off[v->n] = v->pool_len;
  v->len[v->n] = al + bl;
  v->pool_len += al + bl;
  if (!nc_tok_bmap_add(&v->bytes, dst, al + bl, nc_tok_hash(dst, al + bl), (int64_t)v->n)) return false;
  v->n++;
  return true;
}

static nc_status nc_train_merges(nc_words *W, size_t n_merges, const nc_tok_train_opts *o, nc_vocab *V) {
  nc_pairs P = {0};
  nc_delta_ctx C = {.p = &P};
  nc_status st = NC_OK;
  // single bytes
  for (int i = 0; i < 256; i++) {
    uint8_t b = (uint8_t)i;
    if (!nc_vocab_add(V, &b, 1, NULL, 0)) return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  // initial pair counts and positions
  for (size_t w = 0; w < W->n; w++) {
    const uint32_t *ids = W->ids + W->off[w];
    for (uint32_t i = 0; i + 1 < W->len[w]; i++) {
      size_t k = nc_pairs_get(&P, NC_KEY(ids[i], ids[i + 1]));
      if (k == SIZE_MAX) {
        P.oom = true;
        break;
      }
      P.pcount[k] += W->count[w];
      nc_u32v *pos = &P.ppos[k];
      if ((pos->n == 0 || pos->d[pos->n - 1] != w) && !nc_u32v_push(pos, (uint32_t)w)) P.oom = true;
    }
  }
  for (size_t k = 0; k < P.npairs; k++)
    if (P.pcount[k] > 0) nc_heap_push(&P, P.pcount[k], P.pkey[k]);
  size_t done = 0, step = 0;
  while (done < n_merges && P.hn > 0 && !P.oom) {
    nc_merge_he top = nc_heap_pop(&P);
    size_t pi = nc_pairs_get(&P, top.key);
    if (pi == SIZE_MAX) {
      P.oom = true;
      break;
    }
    int64_t cur = P.pcount[pi];
    if (top.count != cur) {  // stale: counts only fall after a pair's entry is pushed
      if (cur > 0) nc_heap_push(&P, cur, top.key);
      continue;
    }
    if (cur <= 0) break;
    uint32_t a = (uint32_t)(top.key >> 32), b = (uint32_t)top.key;
    // The new token's bytes; reuse an existing id for bytes already in the vocab.
    size_t al = V->len[a], bl = V->len[b];
    uint8_t tmp[512], *cat = al + bl <= sizeof tmp ? tmp : malloc(al + bl);
    if (!cat) {
      P.oom = true;
      break;
    }
    memcpy(cat, V->pool + V->off[a], al);
    memcpy(cat + al, V->pool + V->off[b], bl);
    nc_tok_bslot *ex = nc_tok_bmap_find(&V->bytes, cat, al + bl, nc_tok_hash(cat, al + bl));
    uint32_t nid;
    if (ex) {
      nid = (uint32_t)ex->val;
    } else {
      nid = (uint32_t)V->n;
      if (!nc_vocab_add(V, cat, al, cat + al, bl)) P.oom = true;
      done++;
    }
    if (cat != tmp) free(cat);
    if (P.oom) break;
    step++;
    C.step = step;
    C.queued.n = 0;
    nc_u32v pos = P.ppos[pi];  // detach: (a, b) itself never gains occurrences here
    P.ppos[pi] = (nc_u32v){0};
    for (uint32_t k = 0; k < pos.n && !P.oom; k++) nc_word_merge(W, &C, pos.d[k], a, b, nid);
    free(pos.d);
    for (uint32_t k = 0; k < C.queued.n; k++) {
      uint32_t q = C.queued.d[k];
      if (P.pcount[q] > 0) nc_heap_push(&P, P.pcount[q], P.pkey[q]);
    }
    if (o->progress && (done % 1000 == 0 || done == n_merges) && !ex)
      o->progress(o->progress_ctx, "merges", done, n_merges);
  }
  if (P.oom) st = nc_errorf(NC_E_NOMEM, "out of memory during BPE merges");
  free(C.queued.d);
  nc_pairs_free(&P);
  return st;
}

// ---- driver -------------------------------------------------------------------------

#define NC_BATCH_DOCS 8192
#define NC_BATCH_BYTES ((size_t)32 << 20)

nc_status nc_tok_train(nc_tok_doc_next next, void *ctx, const nc_tok_train_opts *o, nc_tok **out) {
  *out = NULL;
  nc_tok_train_opts defaults;
  if (!o) nc_tok_train_opts_default(&defaults), o = &defaults;
  size_t min_vocab = 256 + NC_TOK_N_NANOCHAT_SPECIALS;
  if (o->vocab_size < min_vocab)
    return nc_errorf(NC_E_INVALID, "vocab size %zu is too small: needs at least 256 bytes + %d special tokens = %zu",
                     o->vocab_size, NC_TOK_N_NANOCHAT_SPECIALS, min_vocab);
  if (o->vocab_size > (size_t)1 << 30) return nc_errorf(NC_E_INVALID, "vocab size %zu is too large", o->vocab_size);
  if (o->doc_cap == 0) return nc_errorf(NC_E_INVALID, "doc cap must be positive");
  int nt = o->threads;
  if (nt <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    nt = c < 1 ? 1 : c > 64 ? 64 : (int)c;
  }
  if (nt > 64) nt = 64;
  nc_tok_splitter *split = NULL;
  NC_TRY(nc_tok_splitter_new(o->pattern, &split));
  nc_tok_bmap counts[64];
  for (int k = 0; k < nt; k++) nc_tok_bmap_init(&counts[k]);
  nc_words W = {0};
  nc_vocab V = {0};
  nc_tok_bmap_init(&V.bytes);
  nc_buf arena;
  nc_buf_init(&arena);
  size_t *doc_off = malloc((NC_BATCH_DOCS + 1) * sizeof *doc_off);
  nc_status st = doc_off ? NC_OK : nc_errorf(NC_E_NOMEM, "out of memory");
  uint64_t nchars = 0, ndocs_total = 0;
  bool stop = false;
  while (!st && !stop) {
    // Gather a batch, then count it in parallel.
    size_t nd = 0;
    arena.len = 0;
    doc_off[0] = 0;
    while (nd < NC_BATCH_DOCS && arena.len < NC_BATCH_BYTES) {
      const char *doc;
      size_t len;
      st = next(ctx, &doc, &len);
      if (st || !doc) {
        stop = true;
        break;
      }
      uint64_t dc;
      size_t keep = nc_utf8_prefix((const uint8_t *)doc, len, o->doc_cap, &dc);
      nc_buf_put(&arena, doc, keep);
      doc_off[++nd] = arena.len;
      nchars += dc;
      ndocs_total++;
      if (nchars > o->max_chars) {  // as nanochat: the doc that crosses the limit is kept
        stop = true;
        break;
      }
    }
    if (arena.oom) st = nc_errorf(NC_E_NOMEM, "out of memory reading documents");
    if (!st && nd) st = nc_count_batch(split, (const uint8_t *)arena.data, doc_off, nd, nt, counts);
    if (o->progress) o->progress(o->progress_ctx, "characters", nchars, o->max_chars);
  }
  // Merge the per-thread tables into the first.
  for (int k = 1; k < nt && !st; k++) {
    if (!counts[k].slots) continue;
    for (size_t i = 0; i <= counts[k].mask; i++) {
      nc_tok_bslot *s = &counts[k].slots[i];
      if (s->used && !nc_tok_bmap_add(&counts[0], counts[k].arena + s->off, s->len, s->h, s->val)) {
        st = nc_errorf(NC_E_NOMEM, "out of memory merging chunk counts");
        break;
      }
    }
    nc_tok_bmap_free(&counts[k]);
  }
  if (!st && counts[0].count == 0)
    st = nc_errorf(NC_E_INVALID, "empty corpus: %llu documents gave no text to train on",
                   (unsigned long long)ndocs_total);
  if (!st) {
    // Words: unique chunks of two or more bytes (single bytes hold no pairs).
    size_t total = 0, nw = 0;
    for (size_t i = 0; i <= counts[0].mask; i++)
      if (counts[0].slots[i].used && counts[0].slots[i].len >= 2) total += counts[0].slots[i].len, nw++;
    W.ids = malloc((total ? total : 1) * sizeof *W.ids);
    W.off = malloc((nw ? nw : 1) * sizeof *W.off);
    W.len = malloc((nw ? nw : 1) * sizeof *W.len);
    W.count = malloc((nw ? nw : 1) * sizeof *W.count);
    if (!W.ids || !W.off || !W.len || !W.count || nw > UINT32_MAX) st = nc_errorf(NC_E_NOMEM, "out of memory (words)");
    size_t at = 0;
    for (size_t i = 0; !st && i <= counts[0].mask; i++) {
      nc_tok_bslot *s = &counts[0].slots[i];
      if (!s->used || s->len < 2) continue;
      W.off[W.n] = at;
      W.len[W.n] = s->len;
      W.count[W.n] = s->val;
      for (uint32_t k = 0; k < s->len; k++) W.ids[at++] = counts[0].arena[s->off + k];
      W.n++;
    }
    nc_tok_bmap_free(&counts[0]);
    if (o->progress) o->progress(o->progress_ctx, "unique chunks", W.n, W.n);
  }
  if (!st) st = nc_train_merges(&W, o->vocab_size - min_vocab, o, &V);
  if (!st) {
    const uint8_t **toks = malloc(V.n * sizeof *toks);
    if (!toks) st = nc_errorf(NC_E_NOMEM, "out of memory");
    for (size_t i = 0; !st && i < V.n; i++) toks[i] = V.pool + V.off[i];
    if (!st)
      st = nc_tok_new(toks, V.len, V.n, o->pattern, nc_tok_nanochat_specials, NULL, NC_TOK_N_NANOCHAT_SPECIALS, out);
    free(toks);
  }
  for (int k = 0; k < nt; k++) nc_tok_bmap_free(&counts[k]);
  free(W.ids);
  free(W.off);
  free(W.len);
  free(W.count);
  nc_tok_bmap_free(&V.bytes);
  free(V.pool);
  free(V.off);
  free(V.len);
  nc_buf_free(&arena);
  free(doc_off);
  nc_tok_splitter_free(split);
  return st;
}

typedef struct {
  const char *const *docs;
  const size_t *lens;
  size_t n, i;
} nc_docs_iter;

static nc_status nc_docs_next(void *ctx, const char **doc, size_t *len) {
  nc_docs_iter *it = ctx;
  if (it->i >= it->n) {
    *doc = NULL;
    *len = 0;
    return NC_OK;
  }
  *doc = it->docs[it->i];
  *len = it->lens ? it->lens[it->i] : strlen(it->docs[it->i]);
  it->i++;
  return NC_OK;
}

nc_status nc_tok_train_docs(const char *const *docs, const size_t *lens, size_t n, const nc_tok_train_opts *o,
                            nc_tok **out) {
  nc_docs_iter it = {docs, lens, n, 0};
  return nc_tok_train(nc_docs_next, &it, o, out);
}
