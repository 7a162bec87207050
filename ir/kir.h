// Kernel IR: the input of codegen. A kernel is a loop nest over buffers plus
// a schedule (which loop is parallel across threads, which is vectorized or
// unrolled). It is backend-neutral: the LLVM emitter (CPU) and the OpenCL
// emitter consume the same kernels; nothing LLVM- or OpenCL-specific appears
// here. Fused groups of graph nodes are lowered to kernels by passes/lower.c.
//
// Expressions and statements live in arrays owned by the kernel and are
// referred to by index (nc_kx, nc_ks). Index arithmetic is ordinary i64
// expressions over loop variables and kernel arguments (the bound sizes of the
// graph's symbols). Heavy ops (matmul, attention, ...) are template calls
// whose implementation each backend provides, with knobs from the autotuner.
#ifndef NC_IR_KIR_H
#define NC_IR_KIR_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/dtype.h"
#include "support/buf.h"

typedef int32_t nc_kx;  // expression handle
typedef int32_t nc_ks;  // statement handle
#define NC_KX_NONE (-1)
#define NC_KS_NONE (-1)

// Scalar operations (elementwise ops of the graph, plus integer index math).
#define NC_KOPS(X)                                                                                  \
  X(NEG, 1) X(ABS, 1) X(RELU, 1) X(SQUARE, 1) X(TANH, 1) X(EXP, 1) X(LOG, 1) X(SQRT, 1) X(RSQRT, 1) \
  X(SIGMOID, 1) X(SIN, 1) X(COS, 1) X(NOT, 1) X(POWC, 1)                                                                \
  X(ADD, 2) X(SUB, 2) X(MUL, 2) X(DIV, 2) X(MAX, 2) X(MIN, 2) X(AND, 2) X(OR, 2) X(EQ, 2) X(NE, 2)  \
  X(LT, 2) X(LE, 2) X(GT, 2) X(GE, 2) X(IDIV, 2) X(IMOD, 2)
typedef enum {
#define X(N, A) NC_KOP_##N,
  NC_KOPS(X)
#undef X
  NC_KOP_COUNT
} nc_kop;
const char *nc_kop_name(nc_kop op);
int nc_kop_arity(nc_kop op);

typedef enum {
  NC_KX_CONST,   // fval (float dtypes) or ival (integer dtypes, bool)
  NC_KX_ARG,     // i64 kernel argument number ival (a symbol's bound size)
  NC_KX_VAR,     // i64 loop variable number ival
  NC_KX_LOAD,    // buffer ival at element index a
  NC_KX_UNARY,   // op(a); POWC uses fval as the exponent
  NC_KX_BINARY,  // op(a, b)
  NC_KX_SELECT,  // a ? b : c   (a is bool)
  NC_KX_CAST,    // a converted to dtype
  NC_KX_ACC,     // the current value of accumulator ival
} nc_kx_kind;

typedef struct {
  nc_kx_kind kind;
  nc_dtype dtype;
  nc_kop op;
  nc_kx a, b, c;
  int64_t ival;
  double fval;
} nc_kexpr;

typedef enum {
  NC_KS_FOR,         // for var in [begin, end): body
  NC_KS_STORE,       // buf[index] = value
  NC_KS_ACC_INIT,    // acc = value
  NC_KS_ACC_UPDATE,  // acc = op(acc, value), op ADD or MAX
  NC_KS_CALL,        // a template (see nc_ktemplate)
} nc_ks_kind;

enum { NC_KSCHED_PARALLEL = 1, NC_KSCHED_VECTORIZE = 2, NC_KSCHED_UNROLL = 4 };

// NC_KT_MATMUL: bufs (A, B, C); args (batch, M, N, K, ta, tb, stride_a,
// stride_b, beta [, sym]): C[q] = op(A[q]) op(B[q]) (+ C[q] when beta), q <
// batch, A advancing stride_a and B stride_b elements per item (0: shared),
// C packed (M,N). Optional arg 9 `sym` (nargs 10) = 1 is a hint that every
// C[q] is symmetric (M == N): a backend may compute only the lower triangle
// and mirror it; ignoring the hint is always correct. Optional arg 10
// `epilogue` (nargs 11, sym then 0): 1 = ReLU^2: with bufs (A, B, C) C[q] =
// relu(product)^2; with bufs (A, B, C, D) C[q] = the product and D[q] =
// relu(product)^2 (D packed like C). A backend without the epilogue must
// reject such a call (the pattern is then switched off for it). 2 = addend:
// bufs (A, B, C, E), args 11 and 12 f32 constants alpha and beta: C[q] =
// alpha * product + beta * E[q] (E packed like C; with sym, E symmetric).
// Backends choose the algorithm per call from the bound sizes: the CPU GEMM
// (codegen/gemm.c) takes an unpacked "skinny" path for M <= 16 without ta
// (decode), the packed Goto/BLIS nest otherwise; same results up to rounding.
// NC_KT_ATTENTION (flash attention; only the OpenCL backend has it: the lowering
// emits it with nc_lower_opts.flash_attention, codegen/ocl_attn.h): args (B, Tq,
// Tk, Hq, Hkv, D, Dv, causal, window, mask, scale): scale an f32 constant, the
// rest i64. q (B,Tq,Hq,D), k (B,Tk,Hkv,D), v (B,Tk,Hkv,Dv), no kvlen (query i
// sits at position Tk - Tq + i). mask 0: forward, bufs (Q, K, V, O), O
// (B,Tq,Hq,Dv). mask > 0: backward, bufs (Q, K, V, dO) then the gradients the
// mask names, in this order: 1 dQ, 2 dK, 4 dV (shaped like q, k, v). Optional
// arg 11 (link): forward: 1 = also keep the rows' logsumexp for a backward;
// backward: the forward's node + 1; the last buffer holds that forward's output O
// (or a reshape of it), its statistics come from the forward (no statistics pass).
// NC_KT_SCATTER_ADD (only the OpenCL backend has it: nc_lower_opts.scatter_atomic,
// codegen/ocl_scatter.h): args (N, V, C), bufs (ids (N), src (N,C), out (V,C)): out
// = 0, then out[clamp(ids[i], 0, V-1), c] += src[i, c]; ids i32 or i64, f32 else.
typedef enum { NC_KT_MATMUL, NC_KT_ATTENTION, NC_KT_SCATTER_ADD, NC_KT_COUNT } nc_ktemplate;

#define NC_KCALL_MAX_ARGS 16
#define NC_KCALL_MAX_BUFS 8

typedef struct {
  nc_ks_kind kind;
  nc_ks next;            // next statement in the same block, NC_KS_NONE at the end
  // FOR
  int var;
  nc_kx begin, end;
  nc_ks body;            // first statement of the body
  unsigned sched;        // NC_KSCHED_* flags
  int vec, unroll;       // vector width / unroll factor when flagged
  // STORE: buf[index] = value; ACC_*: acc, op, value
  int buf, acc;
  nc_kx index, value;
  nc_kop op;
  // CALL
  nc_ktemplate tmpl;
  int nargs, ncbufs;
  nc_kx args[NC_KCALL_MAX_ARGS];
  int cbufs[NC_KCALL_MAX_BUFS];
} nc_kstmt;

#define NC_KERNEL_MAX_BUFS 32
#define NC_KERNEL_MAX_ARGS 16
#define NC_KERNEL_MAX_ACCS 16

typedef struct {
  char name[64];
  int nbufs;
  struct {
    char name[32];
    nc_dtype dtype;
    bool written;
  } bufs[NC_KERNEL_MAX_BUFS];
  int nargs;
  char args[NC_KERNEL_MAX_ARGS][16];  // symbol names
  int nvars;
  int naccs;
  nc_dtype accs[NC_KERNEL_MAX_ACCS];
  nc_ks body;
  nc_kexpr *x;
  int nx, capx;
  nc_kstmt *s;
  int ns, caps;
  bool oom;  // an allocation failed while building: the kernel is unusable
} nc_kernel;

void nc_kernel_init(nc_kernel *k, const char *name);
void nc_kernel_free(nc_kernel *k);
int nc_kernel_buf(nc_kernel *k, const char *name, nc_dtype dt, bool written);
int nc_kernel_arg(nc_kernel *k, const char *symbol);  // finds or adds
int nc_kernel_var(nc_kernel *k);
int nc_kernel_acc(nc_kernel *k, nc_dtype dt);

// Expression builders (simplify constants: x*1, x+0, c1+c2 fold for i64).
nc_kx nc_kx_const_f(nc_kernel *k, nc_dtype dt, double v);
nc_kx nc_kx_const_i(nc_kernel *k, nc_dtype dt, int64_t v);
nc_kx nc_kx_idx(nc_kernel *k, int64_t v);  // i64 constant
nc_kx nc_kx_arg(nc_kernel *k, int arg);
nc_kx nc_kx_var(nc_kernel *k, int var);
nc_kx nc_kx_load(nc_kernel *k, int buf, nc_kx index);
nc_kx nc_kx_unary(nc_kernel *k, nc_kop op, nc_kx a);
nc_kx nc_kx_powc(nc_kernel *k, nc_kx a, double p);
nc_kx nc_kx_binary(nc_kernel *k, nc_kop op, nc_kx a, nc_kx b);
nc_kx nc_kx_select(nc_kernel *k, nc_kx c, nc_kx a, nc_kx b);
nc_kx nc_kx_cast(nc_kernel *k, nc_kx a, nc_dtype dt);
nc_kx nc_kx_acc(nc_kernel *k, int acc);

// Statement builders. Blocks are singly linked lists; *tail points at the
// `next` (or `body`) slot to append to, so a builder appends in order.
nc_ks nc_ks_for(nc_kernel *k, nc_ks **tail, int var, nc_kx begin, nc_kx end);
nc_ks nc_ks_store(nc_kernel *k, nc_ks **tail, int buf, nc_kx index, nc_kx value);
nc_ks nc_ks_acc_init(nc_kernel *k, nc_ks **tail, int acc, nc_kx value);
nc_ks nc_ks_acc_update(nc_kernel *k, nc_ks **tail, int acc, nc_kop op, nc_kx value);
nc_ks nc_ks_call(nc_kernel *k, nc_ks **tail, nc_ktemplate t, const nc_kx *args, int nargs, const int *bufs, int nbufs);
// Slot for appending into a FOR body.
nc_ks *nc_ks_body_slot(nc_kernel *k, nc_ks loop);

const nc_kexpr *nc_kx_get(const nc_kernel *k, nc_kx x);
nc_kstmt *nc_ks_get(const nc_kernel *k, nc_ks s);

// Checks references, dtypes and arities (an internal-invariant verifier).
nc_status nc_kernel_verify(const nc_kernel *k);
// Readable dump (golden tests, --verbose).
void nc_kernel_print(const nc_kernel *k, nc_buf *out);
// Structural hash (for kernel caches).
uint64_t nc_kernel_hash(const nc_kernel *k);
const char *nc_ktemplate_name(nc_ktemplate t);
// True when the kernel is a single template call (no loop nest to emit).
bool nc_kernel_is_template(const nc_kernel *k);

#endif
