// Pretraining data: document streams from shard files, on-the-fly
// tokenization (a BOS before every document), nanochat's BOS-aligned best-fit
// packing into (B, T+1) rows, exact resume, sharding by rank (docs/data.md).
//
// Shard formats (one path = one shard; the order of paths is the read order):
//   - plain text: a document per paragraph: consecutive non-blank lines, each
//     with its newline (the blank lines between paragraphs belong to none; a
//     paragraph over 1 MiB is cut at a line end);
//   - JSONL: one JSON object per line with a "text" string (blank lines are
//     ignored); chosen by the name (.jsonl .json .ndjson) or, for other
//     names, when the first line is an object with a "text" string;
//   - either gzipped (zlib reads .gz and plain files alike).
//
// Malformed input — bad JSON, missing/non-string "text", invalid UTF-8, an
// empty shard (no document), an unreadable or truncated gzip — is an error
// naming "file:line: what" (an invalid UTF-8 byte is named file:line:col),
// or, with skip_bad, a counted skip
// (nc_loader_skipped; an empty or unreadable shard is skipped as a whole).
// If every shard is empty/skipped the loader reports that instead of looping.
//
// Sharding by rank: the documents of one epoch are numbered 0,1,2,... in read
// order across all shards; rank r of world W takes documents r, r+W, r+2W...
// So the ranks partition every epoch's documents exactly.
#ifndef NC_DATA_LOADER_H
#define NC_DATA_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "chat/tokenizer.h"
#include "support/status.h"

// ---- document streams (data/docs.c) ---------------------------------------

// Where a document starts: shard index, uncompressed byte offset of its first
// line, 1-based line number of that line.
typedef struct {
  int32_t file;
  int64_t offset;
  int64_t line;
} nc_doc_pos;

// A sequential reader over shards, one pass (no epochs), no sharding.
typedef struct nc_docstream nc_docstream;
nc_status nc_docstream_open(const char *const *paths, int npaths, bool skip_bad, nc_docstream **out);
// Next document (text, len, start position). *text = NULL at the end of the
// last shard. The text stays valid until the next call. Documents are valid
// UTF-8 (checked); malformed input is an error or, with skip_bad, skipped.
nc_status nc_docstream_next(nc_docstream *s, const char **text, size_t *len, nc_doc_pos *pos);
// Where the next document read will start (a document read from there is the
// next one nc_docstream_next returns; at the end: {npaths, 0, 1}).
void nc_docstream_tell(const nc_docstream *s, nc_doc_pos *pos);
// Repositions so the next document read is the one starting at pos (as
// returned by nc_docstream_next). Cheap for plain files; gzip files are
// decompressed from the start (or from the current point when seeking forward).
nc_status nc_docstream_seek(nc_docstream *s, const nc_doc_pos *pos);
// Malformed lines / documents / shards skipped so far (skip_bad only).
int64_t nc_docstream_skipped(const nc_docstream *s);
// The first skip's message ("" if none): what and where.
const char *nc_docstream_first_skip(const nc_docstream *s);
void nc_docstream_close(nc_docstream *s);

// ---- the packing loader ----------------------------------------------------

typedef struct {
  const char *const *paths;  // shards, read in this order every epoch
  int npaths;
  const nc_tok *tok;  // borrowed; must have a BOS (nc_tok_bos_id >= 0)
  int64_t B, T;       // batch rows, sequence length (rows hold T+1 tokens)
  int rank, world;    // 0 <= rank < world (world 0 is taken as 1)
  bool skip_bad;      // skip malformed input instead of failing
  int buffer_docs;    // documents kept for best-fit (0 = 1000, nanochat's)
} nc_loader_opts;

typedef struct nc_loader nc_loader;

nc_status nc_loader_open(const nc_loader_opts *o, nc_loader **out);
// Next (B,T) batch into caller arrays of B*T int32 each: inputs[b*T+t] =
// row_b[t], targets[b*T+t] = row_b[t+1]. Every row of T+1 tokens starts with
// BOS and is filled as nanochat: repeatedly take the largest buffered
// document that fits the remaining space (first such in buffer order); if
// none fits, take the shortest (first such) and crop it to fill the row
// exactly (the cropped tail is dropped). The buffer is refilled in batches of
// 128 documents whenever it holds fewer than buffer_docs. Infinite epochs.
nc_status nc_loader_next(nc_loader *l, int32_t *inputs, int32_t *targets);
// Exact resume state as a JSON object (caller frees with free()):
// {"version":1,"epoch","file","offset","line","doc","skipped","rank","world",
//  "T","buffer":[[epoch,file,offset,line,tokens],...]} — the read position
// and the start positions (and token counts) of the buffered documents in
// buffer order, re-read and re-tokenized on restore, so the state stays small
// (~25 bytes per buffered document).
nc_status nc_loader_state_json(const nc_loader *l, char **json);
// Restores a state from nc_loader_state_json of a loader opened with the same
// shards, T, rank, world and tokenizer: the next batches are identical to the
// uninterrupted run's (the rows do not depend on B, so B may differ: rows
// continue in the same order). A T/rank/world mismatch, a changed shard or
// tokenizer (token counts differ) or a bad field is an error naming it; a
// failed restore leaves the loader as it was.
nc_status nc_loader_restore(nc_loader *l, const char *json);
// Epoch of the next document to be read (0-based); malformed items skipped in
// one pass over the shards (skip_bad; counted once, not again every epoch);
// since open: documents tokenized, their tokens, tokens emitted into rows,
// tokens cropped away, rows.
int64_t nc_loader_epoch(const nc_loader *l);
int64_t nc_loader_skipped(const nc_loader *l);
typedef struct {
  int64_t docs_read, doc_tokens, row_tokens, cropped_tokens, rows;
} nc_loader_stats;
void nc_loader_get_stats(const nc_loader *l, nc_loader_stats *out);
void nc_loader_close(nc_loader *l);

// ---- validation batches ----------------------------------------------------

// A fixed, deterministic set of (B,T) batches from validation shards: the
// loader above over ONE pass of the shards (no second epoch: after the last
// document the buffer is just drained, with the same best-fit packing), at
// most max_batches batches (0 = until the documents run out; a last batch
// that the remaining documents cannot fill is dropped). Reset-able.
typedef struct nc_evalset nc_evalset;
nc_status nc_evalset_open(const nc_loader_opts *o, int64_t max_batches, nc_evalset **out);
// Fills the next batch; *done = true (arrays untouched) when the set is over.
nc_status nc_evalset_next(nc_evalset *e, int32_t *inputs, int32_t *targets, bool *done);
// Starts over: the same batches again.
nc_status nc_evalset_reset(nc_evalset *e);
void nc_evalset_close(nc_evalset *e);

#endif
