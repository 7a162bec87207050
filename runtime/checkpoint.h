// nanochat-style checkpoint folders (nanochat/checkpoint_manager.py), with
// safetensors instead of torch pickles:
//   <dir>/model_{step:06d}.safetensors        model tensors (state_dict names)
//   <dir>/optim_{step:06d}_rank{r}.safetensors optimizer state of rank r
//   <dir>/meta_{step:06d}.json                JSON object with at least "step"
// Every file is written atomically (safetensors.h); meta is written LAST, so a
// step counts as a checkpoint only once its meta file and model file exist.
// Readers ignore temporary files and steps without meta. See docs/checkpoints.md.
#ifndef NC_RUNTIME_CHECKPOINT_H
#define NC_RUNTIME_CHECKPOINT_H

#include <stdint.h>

#include "runtime/safetensors.h"
#include "support/status.h"

struct json_t;  // jansson's json_t

// Largest meta file we read (meta is a small JSON object).
#define NC_CHECKPOINT_MAX_META (64u << 20)
// Steps are 0 .. NC_CHECKPOINT_MAX_STEP.
#define NC_CHECKPOINT_MAX_STEP INT64_C(999999999999)

typedef enum { NC_CKPT_MODEL, NC_CKPT_META, NC_CKPT_OPTIM } nc_ckpt_file;

// "<dir>/model_000123.safetensors" etc. (malloc'd; rank only for OPTIM).
// NULL on allocation failure or a step/rank out of range.
char *nc_checkpoint_path(const char *dir, nc_ckpt_file kind, int64_t step, int rank);

// Creates dir (and its parents) when missing.
nc_status nc_checkpoint_mkdir(const char *dir);

// ---- saving (in this order; with several ranks: every rank saves its optim,
// barrier, then rank 0 saves model and meta) --------------------------------------
// Model file; it gets the metadata {"format": "pt"} that Hugging Face tools expect.
nc_status nc_checkpoint_save_model(const char *dir, int64_t step, const nc_tensor_list *model);
nc_status nc_checkpoint_save_optim(const char *dir, int64_t step, int rank, const nc_tensor_list *optim);
// meta_json must be a JSON object whose "step" equals step; it is written as
// given (validated, not reformatted). The _obj form dumps with indent 2.
nc_status nc_checkpoint_save_meta(const char *dir, int64_t step, const char *meta_json);
nc_status nc_checkpoint_save_meta_obj(const char *dir, int64_t step, const struct json_t *meta);
// Single-process convenience: mkdir, model, optim of rank 0 (when optim is not
// NULL), then meta.
nc_status nc_checkpoint_save(const char *dir, int64_t step, const nc_tensor_list *model, const nc_tensor_list *optim,
                             const char *meta_json);

// ---- discovery and loading ---------------------------------------------------
// Largest step with both meta_{step}.json and model_{step}.safetensors present
// (file names must be exactly nanochat's; temp files and others are ignored).
// *step = -1 when the folder holds no complete checkpoint (or does not exist).
nc_status nc_checkpoint_find_latest(const char *dir, int64_t *step);

// Appends the model tensors to *model (nc_safetensors_read rules).
nc_status nc_checkpoint_load_model(const char *dir, int64_t step, nc_tensor_list *model);
nc_status nc_checkpoint_load_optim(const char *dir, int64_t step, int rank, nc_tensor_list *optim);
// Reads and validates meta: valid UTF-8 JSON object, integer "step" equal to
// step. *meta gets a new reference (json_decref it) / *text a malloc'd string.
nc_status nc_checkpoint_load_meta(const char *dir, int64_t step, struct json_t **meta);
nc_status nc_checkpoint_load_meta_text(const char *dir, int64_t step, char **text);
// step < 0 loads the latest complete step (*step_out gets it; may be NULL).
// meta and optim may be NULL (not loaded). Nothing is appended on error.
nc_status nc_checkpoint_load(const char *dir, int64_t step, int rank, nc_tensor_list *model, nc_tensor_list *optim,
                             struct json_t **meta, int64_t *step_out);

#endif
