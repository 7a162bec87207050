// The inference engine: a checkpoint compiled once into prefill and decode
// plans over a preallocated KV cache, nanochat's sampling and calculator
// tool, and continuous batching (requests join and leave the shared decode
// batch between steps). Used by `nanochat chat`, `nanochat serve`, RL and the
// generative evals. docs/engine.md describes it.
//
// THREADING: nc_engine_open starts one worker thread that owns the model.
// nc_engine_submit / nc_engine_cancel may be called from any thread. Event
// callbacks run on the worker thread, in order per request, and must return
// quickly (copy the text, signal your own thread). A callback may call
// nc_engine_submit, nc_engine_cancel and nc_engine_stats_get, never
// nc_engine_generate* or nc_engine_close (they wait for the worker).
#ifndef NC_ENGINE_ENGINE_H
#define NC_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/tokenizer.h"
#include "frontend/spec.h"
#include "runtime/exec.h"
#include "runtime/session.h"
#include "support/buf.h"
#include "support/status.h"

#define NC_GEN_MAX_STOP 4

// Sampling options of one request (OpenAI's names where they exist).
typedef struct {
  double temperature;        // 0 = greedy (argmax); default 1.0
  int top_k;                 // 0 = off (default)
  double top_p;              // 1.0 = off (default)
  double presence_penalty;   // OpenAI semantics over this sample's generated tokens; default 0
  double frequency_penalty;  // default 0
  int max_tokens;            // per sample; default 256
  int n;                     // samples; nanochat's batch-1 prefill cloned into n rows; default 1
  bool seeded;               // with the same seed, prompt and options the output is identical
  uint64_t seed;
  int nstop;                 // stop strings (UTF-8), matched on the decoded text, not emitted
  const char *stop[NC_GEN_MAX_STOP];
  bool tools;                // calculator tool live (default true)
} nc_gen_opts;
void nc_gen_opts_default(nc_gen_opts *o);

typedef enum {
  NC_FINISH_NONE = 0,    // more events follow for this sample
  NC_FINISH_STOP,        // <|assistant_end|>, <|bos|> or a stop string
  NC_FINISH_LENGTH,      // max_tokens or the model's context reached
  NC_FINISH_CANCELLED,   // never delivered: cancel means no further events
  NC_FINISH_ERROR,
} nc_finish;
const char *nc_finish_name(nc_finish f);  // "stop", "length", "cancelled", "error"

// One event: new text of one sample and/or its end.
typedef struct {
  uint64_t req;              // the request id nc_engine_submit returned
  int sample;                // 0..n-1
  const char *text;          // new UTF-8 text (whole code points only; may be empty), not NUL-terminated
  size_t len;
  nc_finish finish;          // != NONE: the last event of this sample
  int64_t prompt_tokens;     // usage of this sample so far
  int64_t completion_tokens;
  const char *error;         // finish == NC_FINISH_ERROR: what went wrong
} nc_gen_event;
typedef void (*nc_gen_cb)(void *user, const nc_gen_event *ev);

typedef struct {
  const char *ckpt_dir;      // a checkpoint folder (chat/model_io.h)
  int64_t step;              // -1: the latest
  const char *tokenizer;     // tokenizer rank file; NULL: <ckpt_dir>/tokenizer.tiktoken
  nc_device device;          // cpu (default) or interp
  int slots;                 // rows of the decode batch (concurrent sequences); default 16
  int queue_max;             // requests waiting for a slot before submit refuses; default 64
  int64_t max_seq;           // KV cache length per row; 0 = the spec's sequence length
  const char *precision;     // "fp32" | "bf16" (--precision): overrides the checkpoint spec's <precision>; NULL: keep it
} nc_engine_opts;
void nc_engine_opts_default(nc_engine_opts *o);

typedef struct nc_engine nc_engine;
nc_status nc_engine_open(const nc_engine_opts *o, nc_engine **out);
// Cancels every request (no more events), joins the worker, frees everything.
void nc_engine_close(nc_engine *e);

const nc_tok *nc_engine_tok(const nc_engine *e);
const nc_model_spec *nc_engine_spec(const nc_engine *e);
const char *nc_engine_model_name(const nc_engine *e);  // e.g. "nanochat-d8" (from the checkpoint)
int64_t nc_engine_max_seq(const nc_engine *e);

// Queues a request for the prompt (token ids, e.g. from
// nc_tok_render_for_completion). *id identifies it in events. Fails with a
// message and no events when the prompt is empty or too long for the cache
// (NC_E_INVALID) or the queue is full (NC_E_UNSUPPORTED with "queue full").
nc_status nc_engine_submit(nc_engine *e, const int32_t *prompt, size_t n, const nc_gen_opts *o, nc_gen_cb cb,
                           void *user, uint64_t *id);
// Drops the request and frees its slot before returning; no callback for it
// runs after this returns. Unknown or finished ids are ignored.
void nc_engine_cancel(nc_engine *e, uint64_t id);

typedef struct {
  int queued, active, slots;  // requests waiting, sequences decoding, batch rows
} nc_engine_stats;
void nc_engine_stats_get(nc_engine *e, nc_engine_stats *s);

// Replaces the model's weights with the same-named tensors of src (same
// shapes), between decode steps (RL updates the policy it samples from).
nc_status nc_engine_set_params(nc_engine *e, const nc_session *src);

// Blocking convenience over submit: the n completions as token ids
// (terminal token excluded) and their texts. Caller frees with
// nc_gen_result_free.
typedef struct {
  int n;
  nc_ids *tokens;        // per sample
  nc_buf *text;          // per sample
  nc_buf *mask;          // per sample: a byte per token, 1 sampled, 0 forced (calculator output)
  nc_finish *finish;     // per sample
  int64_t prompt_tokens;
} nc_gen_result;
nc_status nc_engine_generate(nc_engine *e, const int32_t *prompt, size_t n, const nc_gen_opts *o, nc_gen_result *out);
void nc_gen_result_free(nc_gen_result *r);
// nc_engine_generate that also streams the events to cb (may be NULL) while
// it waits (the chat REPL prints them and keeps the tokens for its history).
nc_status nc_engine_generate_stream(nc_engine *e, const int32_t *prompt, size_t n, const nc_gen_opts *o, nc_gen_cb cb,
                                    void *user, nc_gen_result *out);

// cpu device: prints the kernels of the prefill and decode plans that took
// the most time so far (to stderr; nc_exec_profile_print), then where the
// worker's time went: admissions (prefill and first tokens) and, by rows in
// the step, the decode step (nc_infer_decode), the per-row work after it
// (sampling, tokens, stop strings, events) and dropping finished rows.
void nc_engine_profile_print(nc_engine *e, int top);

#endif
