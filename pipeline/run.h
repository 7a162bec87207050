// A training run of one stage, as nanochat's scripts: base training on
// pretraining shards (base_train.py), midtraining and SFT on conversation
// mixtures (mid_train.py, chat_sft.py). Horizon, batch, LR/momentum/WD
// schedules, validation bits per byte, greedy samples, checkpoints with the
// whole loop state (params, optimizer state, loader position, loss history)
// and exact resume, a progress line, and a loss-curve PNG in the checkpoint
// folder. docs/training.md describes the run folders and flags.
#ifndef NC_PIPELINE_RUN_H
#define NC_PIPELINE_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "data/sft.h"
#include "pipeline/dist.h"
#include "pipeline/schedule.h"
#include "runtime/exec.h"

typedef enum { NC_STAGE_BASE, NC_STAGE_MID, NC_STAGE_SFT } nc_stage;
const char *nc_stage_name(nc_stage s);     // "base", "mid", "sft"
const char *nc_stage_folder(nc_stage s);   // "base_checkpoints", "mid_checkpoints", "chatsft_checkpoints"

typedef struct {
  nc_stage stage;
  const char *out_dir;         // this stage's checkpoint folder
  const char *spec_path;       // base: the model spec (ignored on resume: the checkpoint's spec wins)
  const char *init_dir;        // mid/sft: the previous stage's checkpoint folder (latest step)
  const char *tokenizer_path;  // tokenizer rank file (copied into out_dir as tokenizer.tiktoken)
  // base: pretraining shards; mid/sft: conversation sources (train and val)
  const char *const *train_paths;
  int ntrain;
  const char *const *val_paths;
  int nval;
  const nc_sft_source *sources, *val_sources;
  int nsources, nval_sources;
  nc_horizon h;                // inputs: num_iterations, target_flops, param_data_ratio, total_batch, device_batch, seq
  nc_lr_cfg lr;
  double weight_decay;         // Muon weight decay; < 0: nanochat's formula (base) / 0 (mid, sft)
  int64_t warmup_steps;        // < 0: the stage's default
  double warmdown_ratio, final_lr_frac, init_lr_frac;  // < 0: the stage's default
  int64_t eval_every;          // steps between val bpb (0: only at the end)
  int64_t eval_batches;        // batches of the val set (0: all)
  int64_t sample_every;        // steps between greedy samples (0: only at the end)
  int64_t save_every;          // steps between checkpoints (0: only at the end)
  bool resume;                 // continue from out_dir's latest (or resume_step) checkpoint
  int64_t resume_step;         // -1: latest
  bool overwrite;              // a fresh run may replace the checkpoints already in out_dir (else an error)
  double time_budget_s;        // > 0 and no num_iterations: the steps that fit this many seconds, measured on
                               // the first 3 steps (the horizon is then fixed and saved for resumes)
  int64_t stop_after;          // > 0: stop (without the final save) after this step: for tests of resume
  nc_device device;
  const char *precision;       // "fp32" | "bf16" (--precision): overrides the spec's / checkpoint's <precision>; NULL: keep it
  const nc_dist *dist;         // data-parallel ranks (NULL: one process); rank 0 evaluates, samples and saves
  uint64_t seed;               // init seed (base) and SFT shuffle seed
  bool skip_bad;
  bool quiet;                  // no progress line (log lines only)
} nc_run_opts;
void nc_run_opts_default(nc_run_opts *o, nc_stage stage);

typedef struct {
  int64_t steps;
  bool stopped;                // --stop-after ended the run early (no final save)
  double final_loss;           // smoothed train loss
  double val_bpb, min_val_bpb;
  double unigram_bpb;          // base: a unigram model of the training tokens seen, on the same val set
  double tokens, seconds, tokens_per_s, mfu;
  int64_t params, scaling_params;
  char spec_name[64];
} nc_run_result;

nc_status nc_run_train(const nc_run_opts *o, nc_run_result *res);

#endif
