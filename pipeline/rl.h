// Reinforcement learning as nanochat's chat_rl ("GRPO" reduced to
// REINFORCE): for each question several samples from the current model (the
// calculator live), reward 1 when the final "#### N" matches the reference,
// advantage = reward - mean reward of the question (no std, no KL, no ratio
// clipping), token-level loss -sum(A * logp) / (sampled tokens of the step)
// over the sampled tokens only (prompt and forced tool output masked), LR
// decaying linearly to 0, no weight decay; pass@k on held-out questions.
#ifndef NC_PIPELINE_RL_H
#define NC_PIPELINE_RL_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "pipeline/trainer.h"
#include "runtime/exec.h"
#include "support/status.h"

typedef struct {
  const char *init_dir;        // SFT checkpoint folder (latest step)
  const char *out_dir;         // chatrl_checkpoints/<tag>
  const char *tokenizer_path;  // NULL: <init_dir>/tokenizer.tiktoken
  const char *const *train_paths;  // conversations whose last assistant message ends with "#### N"
  int ntrain;
  const char *const *val_paths;
  int nval;
  int64_t steps;               // optimizer steps (default: one pass over the questions)
  int examples_per_step;       // questions per step (nanochat 16)
  int samples;                 // samples per question (nanochat 16)
  int max_new_tokens;          // per sample (nanochat 256)
  double temperature;          // 1.0
  int top_k;                   // 50
  double lr_frac;              // multiplies nanochat's base LRs (0.05)
  int64_t eval_every;          // steps between pass@k evaluations (0: only at the end)
  int eval_examples;           // held-out questions per evaluation
  int eval_k;                  // samples per held-out question (pass@1 .. pass@k)
  int64_t save_every;
  nc_device device;
  const nc_dist *dist;         // data parallel (mpirun): each rank samples every world-th question of a
                               // step, gradients summed over the ranks, rank 0 writes (NULL: one process)
  uint64_t seed;
  bool overwrite;
  bool quiet;
  const char *precision;       // "fp32" | "bf16" (--precision): overrides the checkpoint's <precision>; NULL: keep it
} nc_rl_opts;
void nc_rl_opts_default(nc_rl_opts *o);

typedef struct {
  int64_t steps;
  double mean_reward;          // over the last step's samples
  double pass1, passk;         // last evaluation
  double seconds;
} nc_rl_result;

nc_status nc_rl_train(const nc_rl_opts *o, nc_rl_result *res);

// The training batches of one question's samples (exposed for tests):
// advantages A_j = reward_j - mean(reward); the samples sharing a nonzero
// advantage form one batch of rows prompt + sample (inputs) and the next
// tokens (targets), targets -1 on the prompt, on forced tool tokens (mask 0)
// and on padding (pad). Each batch's weight is A x its trained targets; after
// the step's questions, divide every weight by nc_rl_batches.tokens (the
// step's trained targets): the weighted step then minimizes
// -sum(A * log p) / tokens, nanochat's token-level REINFORCE loss.
typedef struct {
  nc_wbatch *b;
  int n, cap;
  int64_t tokens;  // trained targets so far
} nc_rl_batches;
nc_status nc_rl_question_batches(nc_rl_batches *bs, const nc_ids *prompt, const nc_gen_result *res, const double *reward,
                                 int32_t pad);
void nc_rl_batches_free(nc_rl_batches *bs);

#endif
