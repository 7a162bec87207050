// nanochat's BOS-aligned best-fit pretraining loader (data/loader.h) with
// exact resume: the state is the read position plus the start positions of
// the buffered documents, which restore re-reads and re-tokenizes.
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/loader.h"

#define NC_LOADER_REFILL 128  // documents tokenized per refill (nanochat's tokenizer_batch_size)

typedef struct {
  int32_t *ids;
  int64_t n;
  nc_doc_pos pos;
  int64_t epoch;
} nc_bdoc;

struct nc_loader {
  char **paths;
  int npaths;
  const nc_tok *tok;
  int64_t B, T;
  int rank, world;
  bool skip_bad;
  int buffer_docs;
  int32_t bos;
  bool one_epoch;  // evaluation: no second pass, the buffer drains
  bool exhausted;  // one_epoch: the shards are read
  nc_docstream *ds;
  int64_t epoch;      // epoch of the next document read
  int64_t doc;        // index within the epoch of the next document read
  int64_t skip_base;  // skips counted before the current docstream (restore)
  int64_t skip_pass;  // skips of the first pass (counted once, not every epoch)
  nc_bdoc *buf;
  int64_t nbuf, capbuf;
  nc_loader_stats stats;
  int32_t *row;  // (T+1)
};

static nc_status nc_tokenize_doc(const nc_loader *l, const char *text, size_t len, nc_bdoc *d) {
  nc_ids ids = {0};
  nc_status st = nc_ids_push(&ids, l->bos);
  nc_tok_encode_opts eo = {NC_TOK_SPECIAL_ORDINARY, 1};
  if (!st) st = nc_tok_encode(l->tok, text, len, &eo, &ids);
  if (st) {
    nc_ids_free(&ids);
    return st;
  }
  d->ids = ids.data;
  d->n = (int64_t)ids.len;
  return NC_OK;
}

static nc_status nc_loader_push(nc_loader *l, nc_bdoc d) {
  if (l->nbuf == l->capbuf) {
    int64_t cap = l->capbuf ? l->capbuf * 2 : 256;
    nc_bdoc *b = realloc(l->buf, (size_t)cap * sizeof *b);
    if (!b) {
      free(d.ids);
      return nc_errorf(NC_E_NOMEM, "out of memory (document buffer)");
    }
    l->buf = b;
    l->capbuf = cap;
  }
  l->buf[l->nbuf++] = d;
  return NC_OK;
}

// Reads the next document of this rank into the buffer; *got = false when a
// one-epoch loader has read everything.
static nc_status nc_loader_read_one(nc_loader *l, bool *got) {
  *got = false;
  bool wrapped = false;
  for (;;) {
    const char *text;
    size_t len;
    nc_doc_pos pos;
    NC_TRY(nc_docstream_next(l->ds, &text, &len, &pos));
    if (!text) {
      if (l->doc == 0) {
        const char *why = nc_docstream_first_skip(l->ds);
        return nc_errorf(NC_E_INVALID, "no documents in the %d shard(s)%s%s", l->npaths, *why ? "; first skip: " : "",
                         why);
      }
      if (l->one_epoch) {
        l->exhausted = true;
        return NC_OK;
      }
      if (wrapped)
        return nc_errorf(NC_E_INVALID, "rank %d of %d gets no documents: the shards hold only %lld per epoch",
                         l->rank, l->world, (long long)l->doc);
      wrapped = true;
      if (l->epoch == 0) l->skip_pass = l->skip_base + nc_docstream_skipped(l->ds);
      l->epoch++;
      l->doc = 0;
      nc_doc_pos start = {0, 0, 1};
      NC_TRY(nc_docstream_seek(l->ds, &start));
      continue;
    }
    int64_t k = l->doc++;
    if (k % l->world != l->rank) continue;
    nc_bdoc d = {.pos = pos, .epoch = l->epoch};
    nc_status st = nc_tokenize_doc(l, text, len, &d);
    if (st) return nc_status_prefix(st, "%s:%lld: ", l->paths[pos.file], (long long)pos.line);
    l->stats.docs_read++;
    l->stats.doc_tokens += d.n;
    NC_TRY(nc_loader_push(l, d));
    *got = true;
    return NC_OK;
  }
}

static nc_status nc_loader_refill(nc_loader *l) {
  while (l->nbuf < l->buffer_docs && !l->exhausted) {
    for (int i = 0; i < NC_LOADER_REFILL && !l->exhausted; i++) {
      bool got;
      NC_TRY(nc_loader_read_one(l, &got));
    }
  }
  return NC_OK;
}

static void nc_loader_take(nc_loader *l, int64_t i, nc_bdoc *d) {
  *d = l->buf[i];
  memmove(l->buf + i, l->buf + i + 1, (size_t)(l->nbuf - i - 1) * sizeof *l->buf);
  l->nbuf--;
}

// Fills one row of T+1 tokens; *done = true when a one-epoch loader ran dry.
static nc_status nc_loader_fill_row(nc_loader *l, int32_t *row, bool *done) {
  const int64_t cap = l->T + 1;
  int64_t pos = 0;
  *done = false;
  while (pos < cap) {
    NC_TRY(nc_loader_refill(l));
    if (l->nbuf == 0) {
      *done = true;
      return NC_OK;
    }
    int64_t remaining = cap - pos, best = -1, best_len = 0;
    for (int64_t i = 0; i < l->nbuf; i++) {
      int64_t n = l->buf[i].n;
      if (n <= remaining && n > best_len) best = i, best_len = n;
    }
    nc_bdoc d;
    if (best >= 0) {
      nc_loader_take(l, best, &d);
      memcpy(row + pos, d.ids, (size_t)d.n * sizeof *row);
      pos += d.n;
    } else {
      int64_t shortest = 0;
      for (int64_t i = 1; i < l->nbuf; i++)
        if (l->buf[i].n < l->buf[shortest].n) shortest = i;
      nc_loader_take(l, shortest, &d);
      memcpy(row + pos, d.ids, (size_t)remaining * sizeof *row);
      l->stats.cropped_tokens += d.n - remaining;
      pos += remaining;
    }
    free(d.ids);
  }
  l->stats.row_tokens += cap;
  l->stats.rows++;
  return NC_OK;
}

static nc_status nc_loader_batch(nc_loader *l, int32_t *inputs, int32_t *targets, bool *done) {
  const int64_t T = l->T;
  *done = false;
  for (int64_t b = 0; b < l->B; b++) {
    NC_TRY(nc_loader_fill_row(l, l->row, done));
    if (*done) return NC_OK;
    memcpy(inputs + b * T, l->row, (size_t)T * sizeof *inputs);
    memcpy(targets + b * T, l->row + 1, (size_t)T * sizeof *targets);
  }
  return NC_OK;
}

static nc_status nc_loader_open_ex(const nc_loader_opts *o, bool one_epoch, nc_loader **out) {
  *out = NULL;
  if (!o || !o->tok) return nc_errorf(NC_E_INVALID, "loader: no tokenizer");
  if (o->npaths <= 0 || !o->paths) return nc_errorf(NC_E_INVALID, "loader: no shard files");
  if (o->B < 1 || o->T < 1 || o->B > (1 << 20) || o->T > (1 << 24))
    return nc_errorf(NC_E_INVALID, "loader: batch %lld x %lld is out of range (B >= 1, T >= 1)", (long long)o->B,
                     (long long)o->T);
  int world = o->world > 0 ? o->world : 1;
  if (o->rank < 0 || o->rank >= world)
    return nc_errorf(NC_E_INVALID, "loader: rank %d is out of range for world size %d", o->rank, world);
  if (o->buffer_docs < 0) return nc_errorf(NC_E_INVALID, "loader: buffer_docs %d < 0", o->buffer_docs);
  int32_t bos = nc_tok_bos_id(o->tok);
  if (bos < 0) return nc_errorf(NC_E_INVALID, "loader: the tokenizer has no BOS token (<|bos|> or <|endoftext|>)");
  nc_loader *l = calloc(1, sizeof *l);
  if (!l) return nc_errorf(NC_E_NOMEM, "out of memory");
  l->tok = o->tok;
  l->B = o->B;
  l->T = o->T;
  l->rank = o->rank;
  l->world = world;
  l->skip_bad = o->skip_bad;
  l->buffer_docs = o->buffer_docs ? o->buffer_docs : 1000;
  l->bos = bos;
  l->one_epoch = one_epoch;
  l->npaths = o->npaths;
  l->paths = calloc((size_t)o->npaths, sizeof *l->paths);
  l->row = malloc((size_t)(o->T + 1) * sizeof *l->row);
  nc_status st = (!l->paths || !l->row) ? nc_errorf(NC_E_NOMEM, "out of memory") : NC_OK;
  for (int i = 0; !st && i < o->npaths; i++) {
    l->paths[i] = o->paths[i] ? strdup(o->paths[i]) : NULL;
    if (!l->paths[i]) st = nc_errorf(NC_E_INVALID, "loader: shard path %d is missing", i);
  }
  if (!st) st = nc_docstream_open((const char *const *)l->paths, l->npaths, l->skip_bad, &l->ds);
  if (st) {
    nc_loader_close(l);
    return st;
  }
  *out = l;
  return NC_OK;
}

nc_status nc_loader_open(const nc_loader_opts *o, nc_loader **out) { return nc_loader_open_ex(o, false, out); }

nc_status nc_loader_next(nc_loader *l, int32_t *inputs, int32_t *targets) {
  bool done;
  NC_TRY(nc_loader_batch(l, inputs, targets, &done));
  if (done) return nc_errorf(NC_E_INTERNAL, "loader ran out of documents");
  return NC_OK;
}

int64_t nc_loader_epoch(const nc_loader *l) { return l->epoch; }
int64_t nc_loader_skipped(const nc_loader *l) {
  return l->epoch > 0 ? l->skip_pass : l->skip_base + nc_docstream_skipped(l->ds);
}
void nc_loader_get_stats(const nc_loader *l, nc_loader_stats *out) { *out = l->stats; }

static void nc_loader_clear_buffer(nc_loader *l) {
  for (int64_t i = 0; i < l->nbuf; i++) free(l->buf[i].ids);
  l->nbuf = 0;
}

void nc_loader_close(nc_loader *l) {
  if (!l) return;
  nc_loader_clear_buffer(l);
  free(l->buf);
  nc_docstream_close(l->ds);
  if (l->paths)
    for (int i = 0; i < l->npaths; i++) free(l->paths[i]);
  free(l->paths);
  free(l->row);
  free(l);
}

// ---- state -----------------------------------------------------------------

nc_status nc_loader_state_json(const nc_loader *l, char **json) {
  *json = NULL;
  nc_doc_pos p;
  nc_docstream_tell(l->ds, &p);
  json_t *o = json_object(), *buf = json_array();
  if (!o || !buf) {
    json_decref(o);
    json_decref(buf);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  json_object_set_new(o, "version", json_integer(1));
  json_object_set_new(o, "epoch", json_integer(l->epoch));
  json_object_set_new(o, "file", json_integer(p.file));
  json_object_set_new(o, "offset", json_integer(p.offset));
  json_object_set_new(o, "line", json_integer(p.line));
  json_object_set_new(o, "doc", json_integer(l->doc));
  json_object_set_new(o, "skipped", json_integer(nc_loader_skipped(l)));
  json_object_set_new(o, "rank", json_integer(l->rank));
  json_object_set_new(o, "world", json_integer(l->world));
  json_object_set_new(o, "T", json_integer(l->T));
  for (int64_t i = 0; i < l->nbuf; i++) {
    const nc_bdoc *d = &l->buf[i];
    json_array_append_new(buf, json_pack("[IiIII]", (json_int_t)d->epoch, (int)d->pos.file, (json_int_t)d->pos.offset,
                                         (json_int_t)d->pos.line, (json_int_t)d->n));
  }
  json_object_set_new(o, "buffer", buf);
  *json = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return *json ? NC_OK : nc_errorf(NC_E_NOMEM, "out of memory");
}

static nc_status nc_state_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out) {
  json_t *v = json_object_get(o, key);
  if (!json_is_integer(v)) return nc_errorf(NC_E_PARSE, "loader state: field \"%s\" (an integer) is missing", key);
  int64_t x = json_integer_value(v);
  if (x < lo || x > hi)
    return nc_errorf(NC_E_INVALID, "loader state: field \"%s\" = %lld is out of range [%lld, %lld]", key, (long long)x,
                     (long long)lo, (long long)hi);
  *out = x;
  return NC_OK;
}

typedef struct {
  nc_doc_pos pos;
  int64_t epoch, n, slot;
} nc_rdoc;

static int nc_rdoc_cmp(const void *a, const void *b) {
  const nc_rdoc *x = a, *y = b;
  if (x->pos.file != y->pos.file) return x->pos.file < y->pos.file ? -1 : 1;
  if (x->pos.offset != y->pos.offset) return x->pos.offset < y->pos.offset ? -1 : 1;
  return x->slot < y->slot ? -1 : x->slot > y->slot;
}

static nc_status nc_loader_restore_parsed(nc_loader *l, json_t *o) {
  int64_t version = 0, epoch = 0, file = 0, offset = 0, line = 0, doc = 0, skipped = 0, rank = 0, world = 0, T = 0;
  NC_TRY(nc_state_int(o, "version", 1, 1, &version));
  NC_TRY(nc_state_int(o, "epoch", 0, INT64_MAX, &epoch));
  NC_TRY(nc_state_int(o, "file", 0, l->npaths, &file));
  NC_TRY(nc_state_int(o, "offset", 0, INT64_MAX, &offset));
  NC_TRY(nc_state_int(o, "line", 1, INT64_MAX, &line));
  NC_TRY(nc_state_int(o, "doc", 0, INT64_MAX, &doc));
  NC_TRY(nc_state_int(o, "skipped", 0, INT64_MAX, &skipped));
  NC_TRY(nc_state_int(o, "rank", 0, INT32_MAX, &rank));
  NC_TRY(nc_state_int(o, "world", 1, INT32_MAX, &world));
  NC_TRY(nc_state_int(o, "T", 1, INT64_MAX, &T));
  if (rank != l->rank || world != l->world)
    return nc_errorf(NC_E_INVALID, "loader state is for rank %lld of %lld, this loader is rank %d of %d",
                     (long long)rank, (long long)world, l->rank, l->world);
  if (T != l->T)
    return nc_errorf(NC_E_INVALID, "loader state is for T = %lld, this loader has T = %lld", (long long)T,
                     (long long)l->T);
  json_t *buf = json_object_get(o, "buffer");
  if (!json_is_array(buf)) return nc_errorf(NC_E_PARSE, "loader state: field \"buffer\" (an array) is missing");
  size_t nb = json_array_size(buf);
  nc_rdoc *rd = calloc(nb ? nb : 1, sizeof *rd);
  nc_bdoc *docs = calloc(nb ? nb : 1, sizeof *docs);
  nc_docstream *ds = NULL;
  nc_status st = (!rd || !docs) ? nc_errorf(NC_E_NOMEM, "out of memory") : NC_OK;
  for (size_t i = 0; !st && i < nb; i++) {
    json_int_t e, off, ln, n;
    int f;
    if (json_unpack(json_array_get(buf, i), "[IiIII]", &e, &f, &off, &ln, &n) != 0 || e < 0 || f < 0 ||
        f >= l->npaths || off < 0 || ln < 1 || n < 1)
      st = nc_errorf(NC_E_PARSE, "loader state: buffer[%zu] is not [epoch, file, offset, line, tokens] in range", i);
    else
      rd[i] = (nc_rdoc){{f, off, ln}, e, n, (int64_t)i};
  }
  // Re-read the buffered documents in file order (forward seeks only).
  qsort(rd, nb, sizeof *rd, nc_rdoc_cmp);
  if (!st && nb) st = nc_docstream_open((const char *const *)l->paths, l->npaths, false, &ds);
  for (size_t i = 0; !st && i < nb; i++) {
    const char *text;
    size_t len;
    nc_doc_pos got;
    st = nc_docstream_seek(ds, &rd[i].pos);
    if (!st) st = nc_docstream_next(ds, &text, &len, &got);
    if (!st && (!text || got.file != rd[i].pos.file || got.offset != rd[i].pos.offset))
      st = nc_errorf(NC_E_INVALID, "loader state: no document at %s:%lld (byte %lld); did the shards change?",
                     l->paths[rd[i].pos.file], (long long)rd[i].pos.line, (long long)rd[i].pos.offset);
    nc_bdoc d = {.pos = rd[i].pos, .epoch = rd[i].epoch};
    if (!st) st = nc_tokenize_doc(l, text, len, &d);
    if (!st && d.n != rd[i].n) {
      st = nc_errorf(NC_E_INVALID, "loader state: the document at %s:%lld has %lld tokens, the state says %lld; did "
                     "the shards or the tokenizer change?", l->paths[d.pos.file], (long long)d.pos.line,
                     (long long)d.n, (long long)rd[i].n);
      free(d.ids);
    }
    if (!st) docs[rd[i].slot] = d;
  }
  nc_docstream_close(ds);
  // The read position, in a fresh stream swapped in only on success.
  nc_doc_pos p = {(int32_t)file, offset, line};
  nc_docstream *main_ds = NULL;
  if (!st) st = nc_docstream_open((const char *const *)l->paths, l->npaths, l->skip_bad, &main_ds);
  if (!st) st = nc_docstream_seek(main_ds, &p);
  if (st) {
    nc_docstream_close(main_ds);
    for (size_t i = 0; i < nb; i++) free(docs[i].ids);
    free(docs);
    free(rd);
    return st;
  }
  // Commit.
  nc_docstream_close(l->ds);
  l->ds = main_ds;
  nc_loader_clear_buffer(l);
  for (size_t i = 0; i < nb; i++) {
    st = nc_loader_push(l, docs[i]);
    if (st) {
      for (size_t k = i + 1; k < nb; k++) free(docs[k].ids);
      break;
    }
  }
  free(docs);
  free(rd);
  NC_TRY(st);
  l->epoch = epoch;
  l->doc = doc;
  l->exhausted = false;
  l->skip_base = skipped - nc_docstream_skipped(l->ds);
  l->skip_pass = skipped;
  return NC_OK;
}

nc_status nc_loader_restore(nc_loader *l, const char *json) {
  json_error_t err;
  json_t *o = json ? json_loads(json, 0, &err) : NULL;
  if (!o) return nc_errorf(NC_E_PARSE, "loader state: bad JSON:%d:%d: %s", json ? err.line : 0, json ? err.column : 0,
                           json ? err.text : "no state");
  nc_status st = json_is_object(o) ? nc_loader_restore_parsed(l, o)
                                   : nc_errorf(NC_E_PARSE, "loader state: not a JSON object");
  json_decref(o);
  return st;
}

// ---- validation batches ----------------------------------------------------

struct nc_evalset {
  nc_loader_opts opts;
  int64_t max_batches, served;
  bool done;
  nc_loader *l;
};

nc_status nc_evalset_open(const nc_loader_opts *o, int64_t max_batches, nc_evalset **out) {
  *out = NULL;
  if (max_batches < 0) return nc_errorf(NC_E_INVALID, "evalset: max_batches %lld < 0", (long long)max_batches);
  nc_evalset *e = calloc(1, sizeof *e);
  if (!e) return nc_errorf(NC_E_NOMEM, "out of memory");
  e->max_batches = max_batches;
  nc_status st = nc_loader_open_ex(o, true, &e->l);
  if (st) {
    free(e);
    return st;
  }
  e->opts = *o;
  e->opts.paths = (const char *const *)e->l->paths;  // the loader's own copies
  *out = e;
  return NC_OK;
}

nc_status nc_evalset_next(nc_evalset *e, int32_t *inputs, int32_t *targets, bool *done) {
  *done = false;
  if (e->done || (e->max_batches && e->served >= e->max_batches)) {
    *done = true;
    return NC_OK;
  }
  // Pack into scratch so a batch that cannot be completed leaves the arrays untouched.
  size_t n = (size_t)(e->opts.B * e->opts.T);
  int32_t *in = malloc(n * sizeof *in), *tg = malloc(n * sizeof *tg);
  nc_status st = (!in || !tg) ? nc_errorf(NC_E_NOMEM, "out of memory") : NC_OK;
  bool dry = false;
  if (!st) st = nc_loader_batch(e->l, in, tg, &dry);
  if (!st && dry) e->done = *done = true;
  if (!st && !dry) {
    memcpy(inputs, in, n * sizeof *in);
    memcpy(targets, tg, n * sizeof *tg);
    e->served++;
  }
  free(in);
  free(tg);
  return st;
}

nc_status nc_evalset_reset(nc_evalset *e) {
  nc_loader *l;
  NC_TRY(nc_loader_open_ex(&e->opts, true, &l));
  nc_loader *old = e->l;
  e->l = l;
  e->opts.paths = (const char *const *)l->paths;
  nc_loader_close(old);
  e->served = 0;
  e->done = false;
  return NC_OK;
}

void nc_evalset_close(nc_evalset *e) {
  if (!e) return;
  nc_loader_close(e->l);
  free(e);
}
