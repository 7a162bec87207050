// Chat evals as nanochat's chat_eval.py: categorical MMLU / ARC (logits at
// the last prompt position restricted to the answer letters), generative
// GSM8K and SpellingBee ("#### N" through the engine, calculator live),
// HumanEval (code run by eval/runner.h), and ChatCORE. docs/eval.md.
#ifndef NC_EVAL_CHAT_H
#define NC_EVAL_CHAT_H

#include <stdbool.h>
#include <stdint.h>

#include "eval/forward.h"
#include "support/status.h"

// nanochat's render_mc: "Multiple Choice question: Q\n- c1=A\n...\n\nRespond
// only with the letter of the correct answer." appended to out.
void nc_chat_render_mc(const char *question, const char *const *letters, const char *const *choices, int n, nc_buf *out);
// Index of the largest of logits[ids[k]] (the first on ties).
int nc_chat_pick_letter(const float *logits, const int32_t *ids, int n);
// nanochat's HumanEval program: prompt imports + "\n\n" + the first fenced
// code block of the completion (or all of it) + "\n\n" + test + "\ncheck(entry)".
void nc_chat_humaneval_program(const char *prompt, const char *completion, const char *test, const char *entry, nc_buf *out);
// ChatCORE baseline of a task: 0.25 for the 4-way multiple-choice tasks, 0 otherwise.
double nc_chat_baseline(const char *task);

typedef struct {
  const char *ckpt;
  int64_t step;
  const char *tokenizer;   // NULL: <ckpt>/tokenizer.tiktoken
  const char *data;        // folder with mmlu/, gsm8k/, humaneval/, arc/ (default ../shared/data/eval)
  const char *tasks;       // comma-separated: ARC-Easy,ARC-Challenge,MMLU,GSM8K,HumanEval,SpellingBee (NULL: all)
  int64_t max_per_task;    // <= 0: all
  int num_samples;         // -n (default 1)
  double temperature;      // -t (default 0)
  int top_k;               // -k (default 50)
  int max_tokens;          // -m (default 512)
  int batch;               // categorical batch (default 8)
  nc_device device;
  const char *words;       // SpellingBee word list (NULL: /usr/share/dict/words)
  bool progress;
  int rank, world;         // problems i with i % world == rank (nanochat's striding); world <= 1: all
  const char *precision;   // "fp32" | "bf16" (--precision): overrides the checkpoint's <precision>; NULL: keep it
} nc_chat_eval_opts;
void nc_chat_eval_opts_default(nc_chat_eval_opts *o);

typedef struct {
  char task[32];
  int64_t n, passed;
  double acc, centered, seconds;
  bool skipped;
  char note[256];
} nc_chat_result;

// Runs the tasks; *chatcore = mean centered accuracy over the tasks run
// (complete = every one of nanochat's six ran).
nc_status nc_chat_eval_run(const nc_chat_eval_opts *o, nc_chat_result **res, int *n, double *chatcore, bool *complete);
// Adds the counts (n, passed) of npart results from other ranks (matched by
// task name; skipped ones ignored) into res and recomputes acc, centered
// (seconds: the maximum), *chatcore and *complete as nc_chat_eval_run does.
nc_status nc_chat_results_merge(nc_chat_result *res, int nres, const nc_chat_result *part, int npart, double *chatcore,
                                bool *complete);

#endif
