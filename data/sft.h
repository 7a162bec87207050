// Conversation data for midtraining, SFT and RL (docs/data.md).
//
// A source is a JSONL file (optionally .gz) of conversations, one per line:
//   {"messages":[{"role":"system|user|assistant","content": "text" |
//     [{"type":"text|python|python_output","text":"..."}, ...]}, ...]}
// (nanochat's format; a leading system message is merged into the first user
// message; user/assistant strictly alternate, starting with user; user
// content is a string). Every line is checked when the
// mixture opens: bad JSON, no "messages" array, a bad role / content / part,
// broken alternation, invalid UTF-8 — an error "file:line: what", or with
// skip_bad a counted skip. A source without any conversation is an error
// (or skipped). Blank lines are ignored.
//
// A mixture lists sources with per-source epochs (a source with epochs 3
// appears three times, as nanochat's TaskMixture lists a task three times);
// the combined list of (source, line) entries is shuffled deterministically
// with the seed (Fisher-Yates driven by splitmix64; not Python's Random, so
// the order differs from nanochat's but is stable across machines).
// Conversations are rendered with nc_tok_render_conversation when used.
#ifndef NC_DATA_SFT_H
#define NC_DATA_SFT_H

#include <stdbool.h>
#include <stdint.h>

#include "chat/tokenizer.h"
#include "support/status.h"

typedef struct {
  const char *path;
  int epochs;  // times each conversation appears (0 = 1)
} nc_sft_source;

typedef struct {
  const nc_sft_source *sources;
  int nsources;
  uint64_t seed;  // shuffle seed (nanochat uses 42)
  bool skip_bad;
} nc_sft_mix_opts;

// The conversations of a mixture, held in memory (raw JSON lines).
typedef struct nc_sft_mix nc_sft_mix;
nc_status nc_sft_mix_open(const nc_sft_mix_opts *o, nc_sft_mix **out);
// Entries after epochs and shuffle.
int64_t nc_sft_mix_len(const nc_sft_mix *m);
// Conversation JSON of entry i (0 <= i < len) in shuffled order; valid while
// the mixture lives. source / line (each optional) get where it came from
// (source index into the options' sources, 1-based line) for messages.
nc_status nc_sft_mix_get(const nc_sft_mix *m, int64_t i, const char **json, size_t *len, int *source,
                         int64_t *line);
const char *nc_sft_mix_source_path(const nc_sft_mix *m, int source);
// Number of conversations per source before epochs, lines skipped (skip_bad).
int64_t nc_sft_mix_source_len(const nc_sft_mix *m, int source);
int64_t nc_sft_mix_skipped(const nc_sft_mix *m);
void nc_sft_mix_close(nc_sft_mix *m);

// ---- nanochat's SFT packing ------------------------------------------------

typedef struct {
  const nc_sft_mix *mix;  // borrowed
  const nc_tok *tok;      // borrowed; needs BOS and nanochat's chat specials
  int64_t B, T;           // rows hold T+1 tokens
  int rank, world;        // rank r renders entries r, r+W, ... (world 0 = 1)
  int buffer_convs;       // best-fit buffer (0 = 100, nanochat's)
  bool skip_bad;          // a conversation that fails to render is skipped
} nc_sft_loader_opts;

typedef struct nc_sft_loader nc_sft_loader;
nc_status nc_sft_loader_open(const nc_sft_loader_opts *o, nc_sft_loader **out);
// Next (B,T) batch (arrays of B*T int32). Each row of T+1 tokens takes the
// largest buffered conversation that fits the remaining space (first such in
// buffer order) until none fits; then the rest of the row is PADDED with BOS
// (never cropped). Conversations are rendered with max_tokens = T+1 so every
// one fits an empty row. inputs[b*T+t] = row[t]; targets[b*T+t] = row[t+1],
// or -1 where the rendered mask of row[t+1] is 0 and at every padded target
// position. Infinite epochs over the mixture (per rank, as nanochat's cursor).
nc_status nc_sft_loader_next(nc_sft_loader *l, int32_t *inputs, int32_t *targets);
// Epochs completed by the cursor (0 during the first pass over the mixture),
// conversations consumed into rows by this rank, and the fraction of the
// mixture consumed (nanochat's progress for "1 epoch" runs) in [0, inf).
int64_t nc_sft_loader_epoch(const nc_sft_loader *l);
int64_t nc_sft_loader_consumed(const nc_sft_loader *l);
double nc_sft_loader_progress(const nc_sft_loader *l);
int64_t nc_sft_loader_skipped(const nc_sft_loader *l);
typedef struct {
  int64_t rows, tokens, pad_tokens, trained_targets;
} nc_sft_loader_stats;
void nc_sft_loader_get_stats(const nc_sft_loader *l, nc_sft_loader_stats *out);
// Exact resume state (caller free()s): {"version":1,"cursor","epoch",
// "consumed","skipped","buffer":[entry,...]}. Restore on a loader opened with
// the same mixture, tokenizer, B, T, rank and world gives identical batches.
nc_status nc_sft_loader_state_json(const nc_sft_loader *l, char **json);
nc_status nc_sft_loader_restore(nc_sft_loader *l, const char *json);
void nc_sft_loader_close(nc_sft_loader *l);

#endif
