// The evaluation forward pass: a checkpoint's GPT compiled once with output
// "logits" over symbolic (B,T) for a device (runtime/exec.h), run on padded
// batches of token sequences. Per position it yields the cross-entropy of
// the next token and the argmax prediction (CORE, bpb), or the logits of
// chosen positions (categorical chat evals).
#ifndef NC_EVAL_FORWARD_H
#define NC_EVAL_FORWARD_H

#include <stdint.h>

#include "chat/tokenizer.h"
#include "frontend/spec.h"
#include "runtime/exec.h"

typedef struct nc_evalfwd nc_evalfwd;

// Loads ckpt (step < 0: the latest) and its tokenizer (tok_path NULL:
// <ckpt>/tokenizer.tiktoken) and compiles the logits graph for dev.
nc_status nc_evalfwd_open(const char *ckpt, int64_t step, const char *tok_path, const nc_device *dev, nc_evalfwd **out);
void nc_evalfwd_free(nc_evalfwd *f);
// --precision: "fp32" | "bf16" overrides the checkpoint's <precision>
// (rebuilds the graph; before the first forward pass only).
nc_status nc_evalfwd_set_precision(nc_evalfwd *f, const char *precision);
const nc_tok *nc_evalfwd_tok(const nc_evalfwd *f);
const nc_model_spec *nc_evalfwd_spec(const nc_evalfwd *f);
double nc_evalfwd_compile_seconds(const nc_evalfwd *f);

// Runs nseq sequences (lengths lens[i] >= 1) right-padded with pad to the
// longest (rounded up to a multiple of 16) as one batch. Outputs (either may
// be NULL), per sequence i and position from[i] <= p < to[i] (from/to NULL:
// every position; others are left untouched):
//   loss[i][p]  cross-entropy of seqs[i][p+1] given the prefix (NAN at the last position)
//   pred[i][p]  argmax of the logits (the first maximum)
// loss[i] and pred[i] must hold lens[i] entries.
nc_status nc_evalfwd_run(nc_evalfwd *f, const int32_t *const *seqs, const int64_t *lens, int nseq, int32_t pad,
                         const int64_t *from, const int64_t *to, double **loss, int32_t **pred);
// Same batch, but copies the logits at position pos[i] of sequence i into
// logits[i] (vocab_size floats each).
nc_status nc_evalfwd_logits_at(nc_evalfwd *f, const int32_t *const *seqs, const int64_t *lens, int nseq, int32_t pad,
                               const int64_t *pos, float **logits);

// Logits at chosen positions only (CORE's shared path): the same padded
// batch runs through a second plan, compiled on first use, whose lm_head sees
// only the gathered positions (the checkpoint's graph with an input
// "positions" i32 (P) of flat rows b*T+t picked from the final normed (B,T,C);
// symbolic B, T, P: one plan for every batch). Position k is
// (prow[k], ppos[k]) with 0 <= ppos[k] < lens[prow[k]]; logits receives
// npos x vocab_size floats. Token and position buffers are kept and grown,
// not allocated per call.
nc_status nc_evalfwd_gather(nc_evalfwd *f, const int32_t *const *seqs, const int64_t *lens, int nseq, int32_t pad, int npos,
                            const int *prow, const int64_t *ppos, float *logits);

// The engine's prefill/decode plans (engine/infer.h) over this checkpoint's
// parameters on the same device, with rows KV-cache rows of max_seq positions;
// created on first use, recreated when rows or max_seq change, owned by f.
struct nc_infer;
nc_status nc_evalfwd_infer(nc_evalfwd *f, int rows, int64_t max_seq, struct nc_infer **out);
const nc_device *nc_evalfwd_device(const nc_evalfwd *f);

// Per-position cross-entropy and argmax of one logits row (double accumulation).
double nc_logits_ce(const float *row, int64_t v, int32_t target);
int32_t nc_logits_argmax(const float *row, int64_t v);

#endif
