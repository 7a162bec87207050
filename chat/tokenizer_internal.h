// Internals shared by the tokenizer's source files (not a public API).
#ifndef NC_CHAT_TOKENIZER_INTERNAL_H
#define NC_CHAT_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

#include "chat/tokenizer.h"

// ---- split regex (tokenizer_split.c) ---------------------------------------

// A compiled pattern: read-only after creation, shared by all threads.
typedef struct nc_tok_splitter {
  nc_tok_pattern pat;
  pcre2_code *code;
  bool jit;
} nc_tok_splitter;

// Per-thread matching state.
typedef struct {
  pcre2_match_data *md;
  pcre2_match_context *mc;
  pcre2_jit_stack *js;
} nc_tok_split_ctx;

nc_status nc_tok_splitter_new(nc_tok_pattern pat, nc_tok_splitter **out);
void nc_tok_splitter_free(nc_tok_splitter *s);
nc_status nc_tok_split_ctx_init(const nc_tok_splitter *s, nc_tok_split_ctx *c);
void nc_tok_split_ctx_free(nc_tok_split_ctx *c);
// Finds the next chunk at or after pos. Bytes between the previous chunk's
// end and *ms are invalid UTF-8 (no pattern alternative can match them).
// Returns false when no chunk remains.
bool nc_tok_split_next(const nc_tok_splitter *s, nc_tok_split_ctx *c, const uint8_t *text, size_t n, size_t pos,
                       size_t *ms, size_t *me);
// A position p (0 < p < n) where every pattern is guaranteed to start a new
// chunk: text[p-2] printable ASCII, text[p-1] == '\n', text[p] an ASCII
// letter or digit (tokenizer_split.c says why). Searches
// forward from 'from'; returns n if none.
size_t nc_tok_safe_boundary(const uint8_t *text, size_t n, size_t from);

// ---- hashing ----------------------------------------------------------------

// Fast hash for short byte strings (tokens, chunks); stable across runs.
static inline uint64_t nc_tok_hash(const void *p, size_t n) {
  const uint8_t *s = p;
  uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull);
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, s, 8);
    h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    s += 8;
    n -= 8;
  }
  if (n) {
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
  }
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ull;
  h ^= h >> 32;
  return h;
}

// ---- the tokenizer ----------------------------------------------------------

typedef struct {
  uint32_t h;  // upper hash bits (0 marks an empty slot: stored hashes are |1)
  int32_t id;
} nc_tok_slot;

struct nc_tok {
  nc_tok_pattern pat;
  nc_tok_splitter *split;
  size_t n_ranks, vocab_size;
  uint8_t *pool;      // all rank bytes back to back
  uint64_t *tok_off;  // rank -> offset in pool
  uint32_t *tok_len;  // rank -> length
  nc_tok_slot *map;   // open addressing, bytes -> rank
  size_t map_mask;
  int32_t byte_rank[256];
  size_t n_special;
  char **special_name;
  size_t *special_len;
  int32_t *special_id;
};

static inline uint32_t nc_tok_slot_hash(uint64_t h) { return (uint32_t)(h >> 32) | 1u; }

static inline int32_t nc_tok_lookup_h(const nc_tok *t, const uint8_t *b, size_t n, uint64_t h) {
  uint32_t hh = nc_tok_slot_hash(h);
  size_t i = (size_t)h & t->map_mask;
  for (;;) {
    const nc_tok_slot *s = &t->map[i];
    if (s->h == 0) return -1;
    if (s->h == hh && t->tok_len[s->id] == n && memcmp(t->pool + t->tok_off[s->id], b, n) == 0) return s->id;
    i = (i + 1) & t->map_mask;
  }
}

static inline int32_t nc_tok_lookup(const nc_tok *t, const uint8_t *b, size_t n) {
  return nc_tok_lookup_h(t, b, n, nc_tok_hash(b, n));
}

// ---- generic growable byte-string -> int64 map (training) ------------------

typedef struct {
  uint64_t h;
  uint64_t off;  // key offset in arena
  uint32_t len;
  uint32_t used;
  int64_t val;
} nc_tok_bslot;

typedef struct {
  nc_tok_bslot *slots;
  size_t mask, count;
  uint8_t *arena;
  size_t arena_len, arena_cap;
} nc_tok_bmap;

void nc_tok_bmap_init(nc_tok_bmap *m);
void nc_tok_bmap_free(nc_tok_bmap *m);
// Adds delta to key's value (inserting it with 0 first). NULL on OOM.
nc_tok_bslot *nc_tok_bmap_add(nc_tok_bmap *m, const uint8_t *key, size_t n, uint64_t h, int64_t delta);
nc_tok_bslot *nc_tok_bmap_find(const nc_tok_bmap *m, const uint8_t *key, size_t n, uint64_t h);

#endif
