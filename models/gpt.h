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

// ---- inference graphs (the engine, docs/engine.md) ------------------------------
// PREFILL: the forward pass over a prompt. Inputs "tokens" i32 (B,T) and
//   "last" i32 (B,1) (the flat row b*T+t of the position whose logits are
//   wanted, normally T-1). Outputs "logits" (B,V) at that position, "emb"
//   (B,C) its normed token embedding (before smear; the next step's smear
//   input), and per layer i "k.<i>", "v.<i>" (B,T,Hkv,D): the keys (after
//   rope, norm, qk scale) and values (with value embeddings) to cache.
// DECODE: one new token per row over a KV cache, each row at its own
//   position. Symbols B (rows) and T (cache length). Inputs "tokens" i32
//   (B,1); "rope_cos", "rope_sin" f32 (B,D/2): cos/sin of pos*base^(-2j/D)
//   at the row's position pos; "prev_emb" f32 (B,C) (smear only): the
//   previous token's "emb"; per layer i "k_cache.<i>", "v_cache.<i>" f32
//   (B,Hkv,T,D); per distinct window W of the layers "mask.<W>" f32 (B,T)
//   (W = 0: the full context): 0 where cached key j is visible to the new
//   query at pos (j < pos and, for W > 0, j > pos - W), -1e30 where not.
//   The new token always sees itself. Outputs "logits" (B,V), "emb" (B,C),
//   "k.<i>", "v.<i>" (B,1,Hkv,D) (write them at cache position pos).
// DECODE_GEMV: DECODE with the linear layers as reductions over (O,B,C)
//   instead of matmuls: faster for a batch of one row on the CPU (no GEMM
//   packing of every weight per step), slower for many rows.
typedef enum { NC_GPT_PREFILL, NC_GPT_DECODE, NC_GPT_DECODE_GEMV } nc_gpt_infer_mode;
nc_status nc_gpt_build_infer(const nc_model_spec *s, nc_gpt_infer_mode mode, nc_graph **out);

#endif
