// The training step as one graph: forward + loss + backward (autodiff) +
// optimizer update (AdamW for embeddings, lm_head and scalars; Muon for the
// block matrices), as nanochat's MuonAdamW. docs/model.md has the formulas.
//
// Graph interface (all by name):
//   inputs  tokens, targets                  i32 (B,T)
//           <param>                          every model param (f32)
//           adamw.exp_avg.<param>, adamw.exp_avg_sq.<param>   AdamW state
//           muon.momentum.<param> [, muon.second_momentum.<param> (NorMuon)]
//           lr.<group>, wd.<group>           f32 scalars, per optimizer group
//           bc1.<group>, bc2.<group>         AdamW bias corrections 1-beta^t
//           momentum.muon                    Muon momentum
//           grad_scale                       multiplies the gradients (1/K)
//           acc.<param>   (accumulate only)  gradient accumulated so far
//   outputs loss                             f32 scalar
//           new.<name>                       updated param / state tensor
//           (accumulate graph: new.acc.<param> = acc + grad instead)
// Learning rates, momentum and weight decay are runtime scalars: schedules
// never recompile. Gradient accumulation: run the accumulate graph on K-1
// micro-batches, then the step graph with with_acc = true on the last.
#ifndef NC_MODELS_TRAIN_H
#define NC_MODELS_TRAIN_H

#include <stdbool.h>

#include "models/gpt.h"

typedef struct {
  double beta1, beta2, eps;
} nc_adamw_cfg;

typedef struct {
  nc_adamw_cfg adamw[NC_GROUP_COUNT];  // AdamW groups (all but NC_GROUP_MUON)
  int ns_steps;                        // orthogonalization iterations (5)
  bool polar_express;                  // Polar Express coefficients (else quintic Newton-Schulz)
  bool normuon;                        // NorMuon factored second moment
  double normuon_beta2;                // 0.9 in nanochat HEAD
  bool cautious_wd;                    // decay only where update and param agree in sign
  bool polar_gram;                     // non-square matrices' Polar Express in Gram form
                                       // (NC_PATTERN_POLAR_GRAM; same math, fewer FLOPs)
  bool muon_stack;                     // same-shaped Muon matrices orthogonalized as one
                                       // stack: batched GEMMs (NC_PATTERN_MUON_STACK)
} nc_optim_cfg;

// nanochat HEAD's settings: betas/eps per group, Polar Express, NorMuon and
// cautious weight decay on; polar_gram and muon_stack on unless NC_PATTERNS_OFF
// has bit 1024 or 16384.
void nc_optim_defaults(nc_optim_cfg *c);

// APPLY: the optimizer update alone, for gradients computed elsewhere (data
// parallel: accumulated, then averaged across ranks): inputs the params,
// optimizer state, scalars and grad.<param> (the gradient sum; grad_scale
// multiplies it); outputs new.<name> as STEP, no loss.
typedef enum { NC_TRAIN_STEP, NC_TRAIN_ACCUMULATE, NC_TRAIN_APPLY } nc_train_kind;

// Selects a subset of the params (by their desc from nc_gpt_params).
typedef bool (*nc_param_pred)(const nc_param_desc *p, void *ctx);

typedef struct {
  nc_gpt_opts model;     // batch/seq (0 = symbolic); loss is always on
  nc_train_kind kind;
  bool with_acc;         // step graph: add acc.<param> inputs to the gradients
  // APPLY only: the params this graph updates (NULL: all); the others are
  // neither inputs nor outputs. Optimizer sharding builds one rank's share
  // this way (pipeline/trainer.c, docs/distributed.md). Selecting no param
  // is an error.
  nc_param_pred only;
  void *only_ctx;
} nc_train_opts;

nc_status nc_train_build(const nc_model_spec *s, const nc_optim_cfg *oc, const nc_train_opts *o, nc_graph **out);

// Lists the optimizer state tensors (zero-initialized) for the params of s:
// adamw.exp_avg.<p>, adamw.exp_avg_sq.<p>, muon.momentum.<p> and, with
// NorMuon, muon.second_momentum.<p> ((rows,1) if rows >= cols, else (1,cols)).
nc_status nc_train_state_descs(const nc_model_spec *s, const nc_optim_cfg *oc, nc_param_desc **out, int *n);
// The same for the params that only selects (NULL: all).
nc_status nc_train_state_descs_only(const nc_model_spec *s, const nc_optim_cfg *oc, nc_param_pred only, void *ctx,
                                    nc_param_desc **out, int *n);

// The runtime scalars of one optimizer step (nanochat's schedules are the
// caller's business): lr and wd per group, AdamW bias corrections for step t
// (1-based), Muon momentum, gradient scale. Writes (name, value) pairs.
typedef struct {
  char name[48];
  float value;
} nc_train_scalar;
#define NC_TRAIN_NSCALARS (4 * NC_GROUP_COUNT + 2)
void nc_train_scalars(const nc_optim_cfg *oc, const double lr[NC_GROUP_COUNT], const double wd[NC_GROUP_COUNT],
                      double momentum, int64_t step, double grad_scale, nc_train_scalar out[NC_TRAIN_NSCALARS]);

// The Polar Express coefficient triples (a, b, c), 5 of them.
extern const double nc_polar_express_coeffs[5][3];

#endif
