// The nanochat GPT, built as a graph from a model spec (docs/model.md).
#ifndef NC_MODELS_GPT_H
#define NC_MODELS_GPT_H

#include <stdbool.h>

#include "frontend/spec.h"
#include "ir/graph.h"

// How a parameter is initialized (nanochat's schemes).
typedef enum { NC_INIT_ZEROS, NC_INIT_NORMAL, NC_INIT_UNIFORM, NC_INIT_CONST, NC_INIT_LINSPACE } nc_init_kind;

// Which optimizer group a parameter belongs to (nanochat's MuonAdamW groups).
typedef enum {
  NC_GROUP_LM_HEAD,
  NC_GROUP_WTE,
  NC_GROUP_VALUE_EMBEDS,
  NC_GROUP_RESID_LAMBDAS,
  NC_GROUP_X0_LAMBDAS,
  NC_GROUP_SMEAR_BACKOUT,  // "scalars": smear gate/lambda and backout lambda
  NC_GROUP_MUON,           // every 2-D block matrix
  NC_GROUP_COUNT
} nc_param_group;

const char *nc_param_group_name(nc_param_group g);

typedef struct {
  char name[128];      // nanochat state_dict name (or an optimizer state name)
  int rank;
  int64_t shape[2];
  nc_param_group group;
  nc_init_kind init;
  double a, b;         // normal: std a; uniform: [a, b]; const: a; linspace: a -> b over the elements
} nc_param_desc;

// Lists the model's parameters in a fixed order (the state_dict order used
// by checkpoints). Returns the count; *out is malloc'ed.
nc_status nc_gpt_params(const nc_model_spec *s, nc_param_desc **out, int *n);

typedef struct {
  bool with_loss;      // add input "targets" (B,T) and output "loss"
  bool with_logits;    // add output "logits" (B,T,V)
  int64_t batch, seq;  // concrete sizes, or 0 for the symbols B and T
} nc_gpt_opts;

// Builds the forward graph: input "tokens" i32 (B,T), params by name,
// outputs "logits" and/or "loss" (mean cross-entropy, ignore index -1).
nc_status nc_gpt_build(const nc_model_spec *s, const nc_gpt_opts *o, nc_graph **out);

#endif
