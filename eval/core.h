// CORE (DCLM's eval bundle as nanochat's core_eval.py / base_eval.py use it):
// core.yaml task list, eval_meta_data.csv random baselines, JSONL(.gz) task
// files, nanochat's prompt rendering, few-shot sampling and seeds, scoring,
// centered accuracy and the CORE mean. docs/eval.md.
#ifndef NC_EVAL_CORE_H
#define NC_EVAL_CORE_H

#include <stdbool.h>
#include <stdint.h>

#include "chat/tokenizer.h"
#include "support/buf.h"
#include "support/status.h"

typedef enum { NC_CORE_MC, NC_CORE_SCHEMA, NC_CORE_LM } nc_core_type;
const char *nc_core_type_name(nc_core_type t);  // "multiple_choice" "schema" "language_modeling"

typedef struct {
  char label[96];
  char uri[256];        // dataset_uri, relative to <bundle>/eval_data
  int num_fewshot;      // num_fewshot[0]
  nc_core_type type;
  char delim[64];       // continuation_delimiter (default " ")
  double baseline;      // random baseline in percent (eval_meta_data.csv); NAN if unknown
  int line;             // where the task starts in core.yaml
} nc_core_task;

typedef struct {
  nc_core_task *tasks;
  int n;
} nc_core_config;
void nc_core_config_free(nc_core_config *c);

// core.yaml: {icl_tasks: [{label, dataset_uri, num_fewshot: [k],
// icl_task_type, continuation_delimiter?, ...}]}. Errors "file:line: what".
nc_status nc_core_yaml_parse(const char *text, size_t len, const char *filename, nc_core_config *out);
// eval_meta_data.csv: fills each task's baseline from the "Eval Task" and
// "Random baseline" columns (RFC 4180 quoting). Errors "file:line: what".
nc_status nc_core_baselines_parse(const char *text, size_t len, const char *filename, nc_core_config *cfg);
// Both files of a bundle folder.
nc_status nc_core_config_load(const char *bundle, nc_core_config *out);

// One example of a task file.
typedef struct {
  char *query;          // mc
  char **choices;       // mc
  char *context;        // lm
  char **ctx_options;   // schema
  char *continuation;   // schema, lm
  int nchoices;         // mc: choices, schema: context options
  int gold;
} nc_core_item;
typedef struct {
  nc_core_item *items;
  int64_t n;
} nc_core_data;
void nc_core_data_free(nc_core_data *d);
// Reads a JSONL task file (gzip-compressed when it starts with the gzip magic)
// of the given type. Errors "file:line: what".
nc_status nc_core_data_load(const char *path, nc_core_type type, nc_core_data *out);
// nanochat: random.Random(1337).shuffle(data), then data[:max] (max <= 0: all).
nc_status nc_core_data_shuffle(nc_core_data *d, int64_t max);

// The prompts of example idx (nanochat's Jinja templates, few-shot examples
// drawn with random.Random(1234 + idx).sample over the other items): mc: one
// per choice; schema: one per context option; lm: [without, with] the
// continuation. *prompts has *n buffers (free each, then the array).
nc_status nc_core_render(const nc_core_task *t, const nc_core_data *d, int64_t idx, nc_buf **prompts, int *n);

// Token sequences of one example (bos prepended) and each sequence's
// continuation span [start, end): nanochat's batch_sequences_{mc,schema,lm}
// (common prefix / common suffix / the prompt without the continuation).
typedef struct {
  nc_ids *seqs;
  int n;
  int64_t *start, *end;
} nc_core_seqs;
void nc_core_seqs_free(nc_core_seqs *s);
nc_status nc_core_tokenize(const nc_tok *tok, nc_core_type type, nc_buf *prompts, int n, nc_core_seqs *out);
// Crops sequences longer than max_len from the left (nanochat, for models
// with a maximum length), shifting start/end.
void nc_core_crop(nc_core_seqs *s, int64_t max_len);

// ---- scoring (fed with per-position losses / argmax predictions) -----------
// losses[i][p]: cross-entropy of sequence i predicting token p+1 at position p.
// The choice whose mean loss over positions [start-1, end-1) is lowest
// (the first one on ties, as Python's list.index(min)).
int nc_core_pick_lowest(const double *const *losses, const int64_t *start, const int64_t *end, int n);
// lm: the argmax predictions at [start-1, end-1) equal tokens [start, end).
bool nc_core_lm_correct(const int32_t *pred, const int32_t *tokens, int64_t start, int64_t end);
// (acc - b/100) / (1 - b/100), b the random baseline in percent.
double nc_core_centered(double acc, double baseline_pct);

// Mean of losses[p] over positions [start-1, end-1) (NAN when empty, as torch's
// mean of nothing); nc_core_pick_lowest compares these.
double nc_core_mean_loss(const double *losses, int64_t start, int64_t end);

// ---- running CORE on a model (eval/core_run.c) -------------------------------------
struct nc_evalfwd;
// One scored example (nc_core_opts.on_example): mc/schema: the mean
// cross-entropy of each choice and the pick; lm: n = 0, pick = -1.
typedef struct {
  const char *label;
  nc_core_type type;
  int64_t idx;             // index in the shuffled (truncated) data
  int n;                   // choices
  const double *mean_ce;   // n entries
  int pick, gold;
  bool correct;
} nc_core_example;
typedef struct {
  const char *bundle;      // folder with core.yaml, eval_meta_data.csv, eval_data/
  const char *tasks;       // comma-separated labels, NULL = every task of core.yaml
  int64_t max_per_task;    // <= 0: all (nanochat's base_eval); training uses 500
  int batch;               // sequences per forward pass (default 32)
  int64_t batch_tokens;    // padded tokens per forward pass (default 8192)
  int64_t max_len;         // longer sequences are cropped from the left (0: 10 x sequence_len)
  int verbose;             // print rendered prompts of the first examples of each task
  bool progress;           // progress lines on stderr
  // the rank's share (nanochat: range(rank, len(data), world)): world <= 1 runs every example
  int rank, world;
  // false (default): the shared path: mc choices whose continuation lies within
  // one token after the common prefix are scored from one forward pass over
  // the prefix; rows sorted by length into batches; the lm_head only at the
  // scored positions. true: the reference path (every choice's whole
  // sequence, logits at every position, examples batched in file order).
  bool unshared;
  // called for every scored example, in index order (NULL: none)
  void (*on_example)(void *ctx, const nc_core_example *ex);
  void *ctx;
  int64_t chunk;           // shared path: examples rendered and sorted together (default 512)
  // shared path, choices whose continuation is longer than one token: 0 auto (on for
  // every device but opencl, whose engine cache is re-uploaded at each decode step),
  // 1 on, -1 off. On: the prefix is run once through the engine's prefill plan
  // (engine/infer.h) into a KV cache cloned for those choices, and their continuation
  // tokens go through decode steps (16 rows at a time). Off: a whole row per choice.
  int kv_cache;
} nc_core_opts;
typedef struct {
  char label[96];
  nc_core_type type;
  int num_fewshot;
  int64_t n, correct;
  double acc, centered, baseline, seconds;
  int64_t tokens;          // tokens forwarded: padded batch rows, plus the KV cache's prefill and decode tokens
  bool skipped;            // task file missing: not part of CORE
  char note[320];
} nc_core_result;
// Evaluates the tasks; *core = mean centered accuracy over the tasks run
// (NAN if none). *res has *nres entries (skipped tasks included).
nc_status nc_core_run(struct nc_evalfwd *f, const nc_core_opts *o, nc_core_result **res, int *nres, double *core);
// Adds the counts (n, correct) of npart results from other ranks (same task
// labels; missing or skipped labels there are ignored) into res, and
// recomputes acc, centered (seconds: the maximum) and *core as nc_core_run
// does. Merging every rank's part gives the 1-rank result.
nc_status nc_core_results_merge(nc_core_result *res, int nres, const nc_core_result *part, int npart, double *core);
// Bits per byte of text files (plain text, JSONL with "text", optionally .gz):
// documents tokenized with bos prepended, concatenated, cut into rows of
// seq+1 tokens; sum of nats over targets whose token has bytes / (ln 2 * bytes).
nc_status nc_eval_bpb(struct nc_evalfwd *f, const char *const *files, int nfiles, int64_t max_tokens, int batch, bool progress,
                      double *bpb, int64_t *ntokens);

#endif
