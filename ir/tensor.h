// Host tensors: a dtype, a concrete shape and a contiguous row-major buffer.
// Used by the reference interpreter, the runtime's host side, checkpoints and
// tests.
#ifndef NC_IR_TENSOR_H
#define NC_IR_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/graph.h"

typedef struct {
  nc_dtype dtype;
  int rank;
  int64_t shape[NC_MAX_RANK];
  void *data;    // numel * nc_dtype_size(dtype) bytes, row-major
  bool owned;    // data was allocated by nc_tensor_alloc
} nc_tensor;

// Allocates a zero-filled tensor (rejects absurd sizes with a clear error).
nc_status nc_tensor_alloc(nc_tensor *t, nc_dtype dtype, int rank, const int64_t *shape);
// Wraps caller-owned memory (not freed by nc_tensor_free).
nc_tensor nc_tensor_wrap(void *data, nc_dtype dtype, int rank, const int64_t *shape);
void nc_tensor_free(nc_tensor *t);
int64_t nc_tensor_numel(const nc_tensor *t);
size_t nc_tensor_nbytes(const nc_tensor *t);
// Deep copy (dst gets its own buffer).
nc_status nc_tensor_clone(nc_tensor *dst, const nc_tensor *src);
// "f32[2,3]" into buf.
char *nc_tensor_type_str(const nc_tensor *t, char *buf, size_t n);

#endif
