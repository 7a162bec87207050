// Model checkpoints: nanochat-style folders (runtime/checkpoint.h) holding the
// GPT's params under nanochat's state_dict names, optimizer state, and a meta
// JSON with nanochat's model_config plus our full spec ("spec_xml").
#ifndef NC_CHAT_MODEL_IO_H
#define NC_CHAT_MODEL_IO_H

#include <stdbool.h>
#include <stdint.h>

#include "frontend/spec.h"
#include "models/train.h"
#include "runtime/session.h"

// Saves the spec's params from sess (and, when oc != NULL, the optimizer
// state of nc_train_state_descs) as step `step`. extra_json (may be NULL) is
// a JSON object whose keys are merged into meta (e.g. loop state).
nc_status nc_model_ckpt_save(const char *dir, int64_t step, const nc_model_spec *s, const nc_session *sess,
                             const nc_optim_cfg *oc, const char *extra_json);
// Loads step (or the latest when step < 0): the spec from meta, the params
// (checked name by name, shape by shape against the spec) and, when oc !=
// NULL, the optimizer state into sess.
nc_status nc_model_ckpt_load(const char *dir, int64_t step, nc_model_spec *s, nc_session *sess,
                             const nc_optim_cfg *oc, int64_t *step_out);
// ---- data parallel with sharded optimizer state (docs/distributed.md) ----------
// Every rank saves the optimizer state it owns (state: a subset of
// nc_train_state_descs) as optim_<step>_rank<rank>.safetensors; after a
// barrier, rank 0 saves model and meta with nc_model_ckpt_save_sharded, whose
// meta records "optim_world": world. nc_model_ckpt_load with oc != NULL
// refuses such a checkpoint (its state is spread over world files).
nc_status nc_model_ckpt_save_optim_rank(const char *dir, int64_t step, int rank, const nc_session *sess,
                                        const nc_param_desc *state, int n);
nc_status nc_model_ckpt_save_sharded(const char *dir, int64_t step, const nc_model_spec *s, const nc_session *sess, int world,
                                     const char *extra_json);
// Loads rank's file into sess: exactly the tensors of state, shapes checked.
// The checkpoint must have been saved by `world` ranks (meta "optim_world",
// absent: 1), else an error naming both world sizes.
nc_status nc_model_ckpt_load_optim_rank(const char *dir, int64_t step, int rank, int world, nc_session *sess,
                                        const nc_param_desc *state, int n);

// Fills sess with freshly initialized params (nanochat's init, seeded).
nc_status nc_model_init_session(const nc_model_spec *s, uint64_t seed, nc_session *sess);

#endif
