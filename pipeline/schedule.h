// nanochat's training horizon, batch size and schedules (NANOCHAT.md §2):
// the number of steps from a target param:data ratio, the auto total batch
// size (Power Lines), gradient accumulation to fit the device batch, the LR
// multiplier (warmup, flat, linear warmdown to a final fraction), the Muon
// momentum and weight-decay schedules, and the per-group learning rates and
// weight decays (scaled by model width and batch size).
#ifndef NC_PIPELINE_SCHEDULE_H
#define NC_PIPELINE_SCHEDULE_H

#include <stdbool.h>
#include <stdint.h>

#include "frontend/spec.h"
#include "models/gpt.h"
#include "support/status.h"

// Parameters counted for the horizon ("scaling params"): block matrices plus
// lm_head, not the embeddings or value embeddings.
int64_t nc_sched_scaling_params(const nc_model_spec *s);
// Model FLOPs per token at sequence length T: 6 x matmul weights (incl.
// lm_head) + 12 x layers x heads x head_dim x min(window, T).
double nc_sched_flops_per_token(const nc_model_spec *s, int64_t T);

typedef struct {
  // inputs (0 / negative = unset)
  int64_t num_iterations;     // > 0 wins
  double target_flops;        // > 0 next
  double param_data_ratio;    // else this (nanochat default 12)
  int64_t total_batch;        // tokens per optimizer step; <= 0: auto (Power Lines)
  int64_t device_batch, seq;  // rows per micro-step, tokens per row
  int world;                  // data-parallel ranks (1)
  // outputs
  int64_t steps, batch_tokens, grad_accum;
  double tokens, flops;       // whole run
  double batch_lr_scale;      // sqrt(batch_tokens / 2^19)
  double muon_wd;             // 0.28 * sqrt(B/2^19) * (D_ref / D)
} nc_horizon;
// Fills the outputs. Errors name the flag when the batch does not divide
// into device_batch x seq x world micro-steps or a result is out of range.
nc_status nc_horizon_compute(const nc_model_spec *s, nc_horizon *h);

typedef struct {
  int64_t steps;
  int64_t warmup_steps;   // 40
  double warmdown_ratio;  // 0.65
  double final_lr_frac;   // 0.05
  double init_lr_frac;    // 1.0 (SFT: 0.8)
  int64_t momentum_ramp;  // 400 steps 0.85 -> 0.97
  double momentum_start, momentum_peak, momentum_end;  // 0.85, 0.97, 0.90 (end of warmdown)
  bool muon_wd_cosine;    // Muon weight decay follows a cosine to 0 over the run
} nc_sched;
void nc_sched_defaults(nc_sched *s, int64_t steps);
double nc_sched_lr_mult(const nc_sched *s, int64_t step);   // step is 0-based
double nc_sched_momentum(const nc_sched *s, int64_t step);
double nc_sched_wd_mult(const nc_sched *s, int64_t step);   // multiplies the Muon weight decay

// Base learning rates and weight decays per optimizer group (nanochat's
// table; lm_head/wte/value-embeds scaled by (C/768)^-0.5; all scaled by
// batch_lr_scale; scalars fixed). muon_wd is the Muon group's decay.
typedef struct {
  double embedding_lr, unembedding_lr, matrix_lr, scalar_lr;  // 0.3, 0.008, 0.02, 0.5
} nc_lr_cfg;
void nc_lr_cfg_defaults(nc_lr_cfg *c);
void nc_group_rates(const nc_model_spec *s, const nc_lr_cfg *c, double batch_lr_scale, double muon_wd,
                    double lr[NC_GROUP_COUNT], double wd[NC_GROUP_COUNT]);

#endif
