// The pass manager. A pass is a function over the graph registered in the
// pass table (passes/passes.def). Graph nodes are immutable (hash-consed), so
// a pass that rewrites builds a new graph and replaces *g (freeing the old).
//
// The manager runs a pipeline of named passes and, per its context, verifies
// the graph after each pass (always on in tests), dumps the text IR before or
// after a named pass, stops after the N-th pass, and times every pass.
#ifndef NC_PASSES_PASS_H
#define NC_PASSES_PASS_H

#include <stdbool.h>
#include <stdio.h>

#include "ir/graph.h"

typedef struct nc_pass_ctx nc_pass_ctx;

// Named fusion patterns, each with its own off switch (nc_pass_ctx.patterns_off).
// CROSS_ENTROPY: decompose keeps per-row cross_entropy (and its gradient) for
// the lowering's row kernel (one pass for max, one for the sum of exps, the
// target's logit read directly; the gradient in one more pass) instead of
// generic primitives.
enum { NC_PATTERN_CROSS_ENTROPY = 1 };
typedef nc_status (*nc_pass_fn)(nc_graph **g, nc_pass_ctx *ctx);

typedef struct {
  const char *name;
  const char *summary;
  nc_pass_fn run;
} nc_pass_info;

#define NC_MAX_PIPELINE 64

struct nc_pass_ctx {
  bool verify;              // verify after each pass (and before the first)
  const char *dump_before;  // pass name, or "*" for every pass; NULL = none
  const char *dump_after;
  FILE *dump_to;            // where dumps go (stderr if NULL)
  int stop_after;           // run passes [0, stop_after]; -1 = all
  bool timing;              // print per-pass timing to dump_to at the end
  unsigned patterns_off;    // NC_PATTERN_* bits: named fusion patterns switched off
  // filled in by nc_pass_run_pipeline:
  int nrun;
  double seconds[NC_MAX_PIPELINE];
  const char *ran[NC_MAX_PIPELINE];
};

void nc_pass_ctx_init(nc_pass_ctx *ctx);
int nc_pass_count(void);
const nc_pass_info *nc_pass_at(int k);
const nc_pass_info *nc_pass_find(const char *name);  // NULL if unknown
// Runs the named passes in order. An unknown name is an error naming it.
nc_status nc_pass_run_pipeline(nc_graph **g, const char *const *names, int n, nc_pass_ctx *ctx);
// Parses "a,b,c" into names (pointers into a copy owned by *storage).
nc_status nc_pass_split_list(const char *list, char **storage, const char **names, int *n);

// ---- the passes (one function each) ------------------------------------------
#define P(NAME, SUMMARY) nc_status nc_pass_##NAME(nc_graph **g, nc_pass_ctx *ctx);
#include "passes/passes.def"
#undef P

#endif
