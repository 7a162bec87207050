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
// ATTENTION: decompose keeps f32 attention and attention_grad (causal,
// sliding-window, kvlen) for the lowering's online-softmax loop nests
// (passes/lower.c): one sweep over the visible keys per query row, the
// (B,H,Tq,Tk) scores never materialized. Applied where it wins on the CPU:
// query lengths known to be at most NC_ATTN_LOOP_MAX_TQ (decode, short
// chunks); for longer or symbolic ones (training) the GEMM decomposition is
// faster here (docs/performance.md) unless patterns_force has the bit.
// SOFTCAP_CE (a lowering decision: nc_lower_opts.patterns_off): the cheap
// tail of the logits' elementwise chain (softcap * tanh(x / softcap): the
// multiply; the tanh stays materialized, computed once, unless patterns_force
// has the bit, as on OpenCL, where the div and tanh are recomputed too) is recomputed inside
// the cross-entropy row kernels instead of materialized, and
// cross_entropy_grad is computed inside the kernel of its elementwise
// consumer chain (the softcap's backward): one kernel reads the tanh and
// writes the raw logits' gradient, the softmax never materialized.
// NORM_ROPE (lowering): a keepdim reduction over the last axis (rms_norm's
// mean of squares, and the mean in its gradient) is computed inside its
// consumers' kernels row by row, with the row constants after it (eps,
// rsqrt, broadcast) inlined: norm (+ scale) is one kernel per row, forward
// and backward. With the bit in nc_lower_opts.patterns_force the rope
// rotation feeding a QK-norm is recomputed there too rather than
// materialized (rotation + norm in one kernel per row; slower on this CPU,
// docs/runtime.md).
#define NC_ATTN_LOOP_MAX_TQ 64
// SYMMETRIC_GEMM (lowering): a matmul whose result is known symmetric (X X^T,
// X^T X, A A of a symmetric A: Muon's Polar Express iterations) carries the
// hint arg 9 = 1 on its matmul call; the CPU GEMM then computes only the
// lower-triangle tiles and mirrors them (about half the FLOPs).
// UPDATE_GROUP (lowering): an elementwise output whose only consumer chain
// ends in another elementwise kernel of its shape (the optimizer's moment
// updates feeding the parameter update) is computed and stored by that
// kernel: one kernel per parameter writes the parameter and its optimizer
// state (AdamW: p, m, v), the scaled gradient recomputed inline.
// UPDATE_BATCH (lowering): optimizer-update kernels (one parallel loop nest
// writing a graph output) whose code is identical up to buffer names -- the
// same update of same-shaped parameters of a group -- run as one kernel:
// their loop nests side by side, one launch. A kernel joins the first one's
// launch when everything it reads is computed before it (momentum updates),
// or the last one's when nothing reads what it writes before that (the
// parameter updates); members never read each other's outputs.
// GEMM_ADD (lowering): y = alpha * matmul(a, b) + beta * e (alpha, beta
// constants, e computed before: Muon's Polar Express sums a X + B X and
// b A + c A A) is one GEMM that reads e as the addend (NC_KT_MATMUL arg 10 =
// 2); the product is never stored on its own.
// RELU2_EPILOGUE (lowering): s = square(relu(u)) of a matmul u (the MLP's
// c_fc, ReLU^2) is computed in the GEMM's store (the template's epilogue,
// NC_KT_MATMUL arg 10): when u is needed elsewhere (the backward reads it)
// the GEMM writes u and s, relu(u) is never stored (its readers recompute
// max(u, 0)); when u is read only through s, the GEMM writes s alone.
// BF16_GEMM (decompose): a matmul/bmm on bf16 operands stays whole for a
// backend GEMM over bf16 buffers (CPU: codegen/gemm_bf16.c, AVX512_BF16).
// Off (OpenCL, or a CPU without AVX512_BF16: NC_PATTERNS_OFF=256), it becomes
// cast(matmul(f32(a), f32(b)), bf16): the same values (the operands are exact
// bf16, the fp32-accumulated product is rounded once) through the f32 GEMM.
enum {
  NC_PATTERN_CROSS_ENTROPY = 1,
  NC_PATTERN_ATTENTION = 2,
  NC_PATTERN_SOFTCAP_CE = 4,
  NC_PATTERN_NORM_ROPE = 8,
  NC_PATTERN_SYMMETRIC_GEMM = 16,
  NC_PATTERN_UPDATE_GROUP = 32,
  NC_PATTERN_RELU2_EPILOGUE = 64,
  NC_PATTERN_UPDATE_BATCH = 128,
  NC_PATTERN_BF16_GEMM = 256,
  NC_PATTERN_GEMM_ADD = 512,
  // POLAR_GRAM (graph building, models/train.c: nc_optim_cfg.polar_gram, read
  // from NC_PATTERNS_OFF by nc_optim_defaults): from its third step on, Polar
  // Express of a non-square (m x n, m < n) Muon matrix runs on the m x m Gram
  // matrix A = X X^T: Q <- (aI + bA + cA^2) Q and A <- B A B (every factor a
  // polynomial of that A, so all symmetric and commuting), X = Q X once at
  // the end: the same iteration in exact arithmetic, 72 % of the FLOPs for
  // n = 4m (the first two steps stay in X form for fp32 precision). With
  // SYMMETRIC_GEMM the lowering knows products of polynomials of one Gram
  // matrix are symmetric (passes/lower.c nc_lw_polybase).
  NC_PATTERN_POLAR_GRAM = 1024,
  // RESHAPE_VIEW (lowering): a matmul/bmm operand that is a reshape (chain)
  // of a node is read from that node's buffer (a reshape keeps the row-major
  // order): the reshape gets no copy kernel of its own.
  NC_PATTERN_RESHAPE_VIEW = 2048,
  // CONCAT_NESTS (lowering): a materialized concat is one kernel with a
  // parallel loop nest per input, each storing its input's (inlined) values
  // into its slab, instead of a select chain that evaluates every input at
  // every element (rope's halves; Muon's stacked matrices, MUON_STACK).
  NC_PATTERN_CONCAT_NESTS = 8192,
  // MUON_STACK (graph building, models/train.c: nc_optim_cfg.muon_stack, read
  // from NC_PATTERNS_OFF by nc_optim_defaults): same-shaped Muon matrices are
  // stacked (concat of their Nesterov gradients, G x rows x cols) and
  // orthogonalized together: each Polar Express product is one batched GEMM
  // (threads split whole matrices), the per-matrix norms one reduction
  // parallel over the stack; each update reads its slice of the result.
  NC_PATTERN_MUON_STACK = 16384,
  // CE_LSE (lowering): cross_entropy_grad whose forward cross_entropy (same
  // logits, targets, ignore index) is materialized takes each row's
  // logsumexp as loss + the target's logit from the forward's output instead
  // of recomputing it: one sweep over the row (exp(x - lse) - onehot) instead
  // of three (max, sum of exp, gradient). nc_plan.extra_read keeps the loss
  // rows alive until the gradient's kernel.
  NC_PATTERN_CE_LSE = 32768,
  // FLASH_ATTENTION (decompose + lowering; force-only: applied only with the bit in
  // patterns_force, which the OpenCL device sets): f32 attention / attention_grad
  // without kvlen and with head dims <= 128 stay whole at any length and lower to
  // the flash-attention template (nc_lower_opts.flash_attention, codegen/ocl_attn.h);
  // nothing (Tq,Tk)-sized is materialized. NC_PATTERNS_OFF=4096 (or 2) switches it off.
  NC_PATTERN_FLASH_ATTENTION = 4096,
  // RECOMPUTE (lowering, force-only: applied only with the bit in patterns_force,
  // which the OpenCL device sets): a relu/neg/abs of a materialized node whose
  // readers are all elementwise is recomputed by each of them, not stored
  // (passes/lower_recompute.c). NC_PATTERNS_OFF=65536 switches it off.
  NC_PATTERN_RECOMPUTE = 65536,
  // SCATTER_BLOCKS (lowering): a scatter_add loop nest (the embedding's
  // gradient, where scatter_add is not one atomic call) whose column count is a
  // constant multiple of 16 runs parallel over blocks of 16 columns with the
  // block's columns innermost (contiguous, vectorized), not column by column
  // with every access a row apart. The same sums in the same order.
  NC_PATTERN_SCATTER_BLOCKS = 131072,
  // EXPAND_SOURCE (lowering): an expand (broadcast) with several readers whose
  // input is a computed node read only by it gets no buffer of its own: the
  // smaller input is materialized instead and every reader indexes it through
  // the expand (rope's cos/sin tables: (T, 64) stored, not (B, T, H, 64) with a
  // cos per element).
  NC_PATTERN_EXPAND_SOURCE = 524288,
};
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
  unsigned patterns_force;  // NC_PATTERN_* bits applied even where their cost rule says no (off wins)
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
