// The default pretraining corpus, built from text that Debian packages install
// (scripts/setup.sh): the King James Bible (bible-kjv-text, read with the
// `bible` program when present), the GNU Collaborative International
// Dictionary of English (dict-gcide) and the Jargon File (dict-jargon),
// dictzip files read as gzip, and the fortunes (%-separated). Documents are
// cleaned to plain English text, deduplicated, shuffled deterministically and
// written as gzipped JSONL shards {"text": ...}: shard_00000.jsonl.gz ...
// with the last shard the validation shard (as nanochat's). docs/data.md.
#ifndef NC_DATA_CORPUS_H
#define NC_DATA_CORPUS_H

#include <stdint.h>

#include "support/status.h"

typedef struct {
  const char *out_dir;        // created if missing
  const char *dictd_dir;      // NULL = /usr/share/dictd
  const char *fortunes_dir;   // NULL = /usr/share/games/fortunes
  const char *bible_cmd;      // NULL = "bible" (skipped with a note if absent)
  int64_t shard_bytes;        // uncompressed text per training shard (0 = 1 MiB)
  double val_fraction;        // documents for the val shard (0 = 0.02)
  uint64_t seed;              // shuffle seed (0 = 42)
  int64_t max_bytes;          // stop after this much text in total (0 = all)
  // Optional progress lines ("source: N documents, M bytes").
  void (*log)(void *ctx, const char *line);
  void *log_ctx;
} nc_corpus_opts;

typedef struct {
  int64_t docs, bytes, train_shards, val_docs, val_bytes;
  int64_t per_source_docs[4], per_source_bytes[4];  // bible, gcide, jargon, fortunes
} nc_corpus_summary;

// Builds the corpus; an error if no source could be read at all. Each shard
// is written atomically. The same inputs and options give identical files.
nc_status nc_corpus_build(const nc_corpus_opts *o, nc_corpus_summary *out);

#endif
