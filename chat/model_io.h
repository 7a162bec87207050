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
// Fills sess with freshly initialized params (nanochat's init, seeded).
nc_status nc_model_init_session(const nc_model_spec *s, uint64_t seed, nc_session *sess);

#endif
