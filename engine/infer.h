// The model side of the engine: the prefill and decode graphs of a spec
// (models/gpt.h, nc_gpt_build_infer) compiled once for a device, and a host
// KV cache of up to rows_max sequences ("rows"). Active rows are always
// 0..nrows-1 (a removed row is replaced by the last one), so the decode
// graph reads the cache in place: per layer a buffer (rows, Hkv, Tcap, D)
// whose Tcap (the longest row rounded up to 16 positions up to 128, 32 up
// to 512, 64 beyond; at most max_seq) grows and shrinks with the
// longest row. Not thread-safe: one thread (the engine's worker) drives it.
#ifndef NC_ENGINE_INFER_H
#define NC_ENGINE_INFER_H

#include <stdint.h>

#include "frontend/spec.h"
#include "runtime/exec.h"
#include "runtime/session.h"
#include "support/status.h"

typedef struct nc_infer nc_infer;

// params: every parameter of the spec by name (kept by reference: it must
// outlive the nc_infer). max_seq: positions per row (0 = the spec's sequence_len).
nc_status nc_infer_new(const nc_model_spec *s, const nc_session *params, const nc_device *d, int rows_max,
                       int64_t max_seq, nc_infer **out);
void nc_infer_free(nc_infer *m);

int nc_infer_rows(const nc_infer *m);
int nc_infer_rows_max(const nc_infer *m);
int64_t nc_infer_max_seq(const nc_infer *m);
int64_t nc_infer_row_len(const nc_infer *m, int row);  // tokens in the row's cache
int64_t nc_infer_vocab(const nc_infer *m);
int64_t nc_infer_tcap(const nc_infer *m);     // positions per row the cache holds now

// Runs the prompt (n tokens, 1 <= n <= max_seq) as a batch of one and adds
// ncopies rows (nrows .. nrows+ncopies-1) holding its cache (nanochat's
// batch-1 prefill cloned into n samples). logits (V floats) receives the
// last position's logits.
nc_status nc_infer_prefill(nc_infer *m, const int32_t *tokens, int64_t n, int ncopies, float *logits);
// Several prompts in one prefill run (a batch of count rows, the shorter ones
// padded at the end): prompt i (lens[i] tokens) gets ncopies[i] new rows, in
// order after the existing ones; logits receives count x V floats (row i:
// the last position of prompt i). The rows hold what nc_infer_prefill of each
// prompt alone gives, up to float reassociation in the batched kernels.
nc_status nc_infer_prefill_batch(nc_infer *m, int count, const int32_t *const *prompts, const int64_t *lens,
                                 const int *ncopies, float *logits);
// One decode step: tokens[r] goes at position row_len(r) of every active row
// (each row_len must be < max_seq); logits receives nrows x V floats.
nc_status nc_infer_decode(nc_infer *m, const int32_t *tokens, float *logits);
// Drops row r; the last row (if another) moves into r. Returns the old index
// of the row that now sits at r (-1 if none moved).
int nc_infer_remove(nc_infer *m, int row);
void nc_infer_clear(nc_infer *m);  // drops every row
// The compiled plans (for profiles): 0 prefill, 1 decode, 2 decode of one
// row (GEMV form; NULL on the interpreter).
nc_exec *nc_infer_exec(nc_infer *m, int which);

#endif
