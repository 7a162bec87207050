// One model being trained: the compiled training step (and, with gradient
// accumulation, the accumulate graph), the compiled forward graphs for
// evaluation (mean loss) and greedy sampling (logits), all run against one
// session holding params, optimizer state and accumulators. Graphs are built
// with symbolic B and T and compiled once (runtime/exec.h). Used by
// base-train, mid-train, sft and rl.
#ifndef NC_PIPELINE_TRAINER_H
#define NC_PIPELINE_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "chat/tokenizer.h"
#include "data/loader.h"
#include "frontend/spec.h"
#include "models/train.h"
#include "runtime/exec.h"
#include "pipeline/dist.h"
#include "runtime/session.h"

// Fills one (B,T) micro-batch: inputs and targets, B*T int32 each.
typedef nc_status (*nc_batch_fn)(void *ctx, int32_t *inputs, int32_t *targets);

typedef struct {
  const nc_model_spec *spec;  // borrowed
  nc_optim_cfg oc;
  nc_device device;
  int64_t B, T;               // micro-batch rows and tokens per row
  int64_t grad_accum;         // micro-batches per optimizer step and rank (>= 1)
  const nc_dist *dist;        // data parallel over MPI ranks (NULL or world 1: one process)
  int64_t bucket_elems;       // data parallel: most gradient/param elements per collective (a larger
                              // tensor goes alone); 0: 1/16 of all params, within 4K..4M
  bool no_overlap;            // data parallel: reduce the gradients only after the backward pass (default:
                              // each bucket as soon as backward has finished it: cpu, eval and opencl)
} nc_trainer_opts;

typedef struct nc_trainer nc_trainer;
// sess (borrowed) must hold the params; missing optimizer state is created
// zero-filled. On OpenCL with accumulation or data parallel, the session's
// params (and, data parallel, this rank's grad.<param>) become views of the
// trainer's pinned host buffers (nc_exec_host_alloc) until nc_trainer_free,
// which gives the session its own copies back: free the trainer before the
// session.
nc_status nc_trainer_open(const nc_trainer_opts *o, nc_session *sess, nc_trainer **out);
void nc_trainer_free(nc_trainer *t);
double nc_trainer_compile_seconds(const nc_trainer *t);

// One optimizer step over grad_accum micro-batches from next(); step is
// 1-based (AdamW bias correction). *loss = mean micro-batch loss.
// Data parallel (world W > 1), with the optimizer sharded ZeRO-2 style
// (docs/distributed.md): every rank reads the same W x grad_accum
// micro-batches from next() and computes the gradients of every W-th one
// (rank r: micro-batches r, r+W, ...) through the accumulate graph. Params
// of fewer than 1024 elements are replicated: their gradients are
// all-reduced and every rank updates them. Every larger param has one owner
// rank (nc_dist_partition): its gradient is reduced to the owner only, the
// owner's optimizer-only graph (its params alone) applies the mean and holds
// their optimizer state, and the owner broadcasts the updated param.
// Reductions and broadcasts go in buckets of nonblocking collectives. The
// step thus equals one process accumulating all W x grad_accum micro-batches,
// up to float reassociation, and every rank ends with the same params.
nc_status nc_trainer_step(nc_trainer *t, nc_batch_fn next, void *ctx, const double lr[NC_GROUP_COUNT],
                          const double wd[NC_GROUP_COUNT], double momentum, int64_t step, double *loss);

// One optimizer step on a weighted sum of micro-batch gradients:
// grad = sum_k w_k * d(mean CE of batch k)/d(params). Batches may differ in
// shape (symbolic B, T). Used by RL (REINFORCE: w_k = advantage x tokens /
// all tokens). Needs a trainer opened with grad_accum >= 2 (the accumulate
// graph). Host-side: each batch's gradient comes from the accumulate graph
// with zeroed accumulators and is summed with its weight; the batch with the
// largest |w| goes last through the step graph with grad_scale = w.
typedef struct {
  const int32_t *inputs, *targets;  // (B,T)
  int64_t B, T;
  double weight;
} nc_wbatch;
nc_status nc_trainer_step_weighted(nc_trainer *t, const nc_wbatch *b, int n, const double lr[NC_GROUP_COUNT],
                                   const double wd[NC_GROUP_COUNT], double momentum, int64_t step);

// Data parallel with sharded optimizer state (world > 1): this rank's
// optimizer state (its own params' and the replicated small params') to/from
// <dir>/optim_<step>_rank<r>.safetensors; loading checks that the checkpoint
// was saved by as many ranks (chat/model_io.h). Single process: nothing to do
// (the state goes with nc_model_ckpt_save).
bool nc_trainer_sharded(const nc_trainer *t);
nc_status nc_trainer_save_optim(const nc_trainer *t, const char *dir, int64_t step);
nc_status nc_trainer_load_optim(nc_trainer *t, const char *dir, int64_t step);
// Data parallel: where this rank's step time went since the trainer opened.
typedef struct {
  double compute_s;   // forward + backward of its micro-batches (and reading every micro-batch)
  double pack_s;      // copying gradients and params to and from the flat buffer
  double wait_s;      // blocked in collectives: communication not hidden behind other work
  double apply_s;     // its optimizer graph
  double hook_s;      // of pack_s: copying gradients out of the backward pass as they became final (overlap)
  int64_t collectives, steps;
  int64_t early;      // gradient reductions issued while the backward pass still ran (overlap)
} nc_trainer_dp_stats;
void nc_trainer_dp_stats_get(const nc_trainer *t, nc_trainer_dp_stats *out);

// Mean cross-entropy (nats, ignore index -1) of one batch of any (B,T), and
// the number of counted targets.
nc_status nc_trainer_loss(nc_trainer *t, const int32_t *inputs, const int32_t *targets, int64_t B, int64_t T,
                          double *mean, int64_t *count);

// Validation bits per byte over an evalset, as nanochat's loss_eval: summed
// nats over targets whose token has a byte length > 0, divided by ln 2 x the
// summed byte lengths. token_bytes has one entry per vocabulary id.
nc_status nc_trainer_bpb(nc_trainer *t, nc_evalset *set, const int32_t *token_bytes, int64_t vocab, double *bpb);

// Greedy continuation of prompt (batch 1, full forward per token, for
// samples during training): appends up to max_new ids to out, stopping after
// stop_id (not appended) when it is >= 0.
nc_status nc_trainer_greedy(nc_trainer *t, const int32_t *prompt, size_t n, int max_new, int32_t stop_id, nc_ids *out);

#endif
