// Internals of the reference interpreter shared by runtime/interp*.c: the
// per-op call record, one function per row of ir/ops.def, and small helpers
// (strided iteration, float64 staging, integer wraparound).
//
// The list of nc_interp_<ID> declarations below is written out by hand on
// purpose: runtime/interp.c builds its dispatch table by expanding ir/ops.def
// with `nc_interp_##ID`, so a new op row without a declared function here is a
// compile error (undeclared identifier), not a silent gap.
#ifndef NC_RUNTIME_INTERP_IMPL_H
#define NC_RUNTIME_INTERP_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/graph.h"
#include "ir/tensor.h"

// One evaluation of one node. `out` is already typed (dtype, rank, concrete
// shape) and, except for input/param, allocated and zero-filled. Errors are
// returned without a node prefix; the driver prefixes "node %id (op): ".
typedef struct {
  const nc_graph *g;
  const nc_node *n;
  nc_id id;
  const nc_tensor *const *in;  // values of the node's inputs, n->nin of them
  nc_tensor *out;
  const nc_tensor *feed;       // input/param: the fed tensor
} nc_interp_call;

typedef nc_status (*nc_interp_fn)(const nc_interp_call *c);

#define NC_INTERP_FN(ID) nc_status nc_interp_##ID(const nc_interp_call *c)
// leaves and layout (interp.c)
NC_INTERP_FN(INPUT);
NC_INTERP_FN(PARAM);
NC_INTERP_FN(CONST);
NC_INTERP_FN(IOTA);
NC_INTERP_FN(RESHAPE);
NC_INTERP_FN(PERMUTE);
NC_INTERP_FN(SLICE);
NC_INTERP_FN(CONCAT);
NC_INTERP_FN(EXPAND);
NC_INTERP_FN(SHIFT);  // runtime/interp_shift.c
// elementwise, reductions, contractions, embeddings (interp_ops.c)
NC_INTERP_FN(NEG);
NC_INTERP_FN(ABS);
NC_INTERP_FN(RELU);
NC_INTERP_FN(SQUARE);
NC_INTERP_FN(TANH);
NC_INTERP_FN(EXP);
NC_INTERP_FN(LOG);
NC_INTERP_FN(SQRT);
NC_INTERP_FN(RSQRT);
NC_INTERP_FN(SIGMOID);
NC_INTERP_FN(SIN);
NC_INTERP_FN(COS);
NC_INTERP_FN(POWC);
NC_INTERP_FN(NOT);
NC_INTERP_FN(CAST);
NC_INTERP_FN(ADD);
NC_INTERP_FN(SUB);
NC_INTERP_FN(MUL);
NC_INTERP_FN(DIV);
NC_INTERP_FN(MAX);
NC_INTERP_FN(MIN);
NC_INTERP_FN(AND);
NC_INTERP_FN(OR);
NC_INTERP_FN(EQ);
NC_INTERP_FN(NE);
NC_INTERP_FN(LT);
NC_INTERP_FN(LE);
NC_INTERP_FN(GT);
NC_INTERP_FN(GE);
NC_INTERP_FN(WHERE);
NC_INTERP_FN(REDUCE_SUM);
NC_INTERP_FN(REDUCE_MAX);
NC_INTERP_FN(REDUCE_MEAN);
NC_INTERP_FN(MATMUL);
NC_INTERP_FN(BMM);
NC_INTERP_FN(GATHER);
NC_INTERP_FN(SCATTER_ADD);
// normalization, softmax, rotary, attention, losses (interp_nn.c)
NC_INTERP_FN(RMS_NORM);
NC_INTERP_FN(RMS_NORM_GRAD);
NC_INTERP_FN(SOFTMAX);
NC_INTERP_FN(LOG_SOFTMAX);
NC_INTERP_FN(ROPE);
NC_INTERP_FN(ATTENTION);
NC_INTERP_FN(ATTENTION_GRAD);
NC_INTERP_FN(CROSS_ENTROPY);
NC_INTERP_FN(CROSS_ENTROPY_GRAD);

// ---- helpers (interp_ops.c) --------------------------------------------------
// Reads a whole tensor as float64 (*out malloc'ed; caller frees).
nc_status nc_interp_load_f64(const nc_tensor *t, double **out);
// Writes v[0..numel) into out, rounding each value to out's dtype once.
void nc_interp_store_f64(nc_tensor *out, const double *v);
// Writes an integer with two's-complement wraparound to the dtype (bool: != 0).
void nc_interp_set_wrap(void *buf, nc_dtype t, size_t i, int64_t v);
// Reads a scalar i32/i64 input (kvlen, pos0).
int64_t nc_interp_scalar_i64(const nc_tensor *t);

// Walks a row-major index space of `shape`, keeping `off` = sum idx[d]*stride[d].
typedef struct {
  int rank;
  int64_t shape[NC_MAX_RANK], stride[NC_MAX_RANK], idx[NC_MAX_RANK];
  int64_t off;
} nc_interp_iter;

static inline void nc_interp_iter_init(nc_interp_iter *it, int rank, const int64_t *shape,
                                       const int64_t *stride) {
  it->rank = rank;
  for (int d = 0; d < rank; d++) {
    it->shape[d] = shape[d];
    it->stride[d] = stride[d];
    it->idx[d] = 0;
  }
  it->off = 0;
}

static inline void nc_interp_iter_next(nc_interp_iter *it) {
  for (int d = it->rank - 1; d >= 0; d--) {
    it->off += it->stride[d];
    if (++it->idx[d] < it->shape[d]) return;
    it->off -= it->stride[d] * it->shape[d];
    it->idx[d] = 0;
  }
}

// Row-major strides of a tensor's shape (in elements).
static inline void nc_interp_strides(const nc_tensor *t, int64_t *st) {
  int64_t s = 1;
  for (int d = t->rank - 1; d >= 0; d--) {
    st[d] = s;
    s *= t->shape[d];
  }
}

#endif
