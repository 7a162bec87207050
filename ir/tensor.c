#include "ir/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t nc_tensor_numel(const nc_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->shape[i];
  return n;
}

size_t nc_tensor_nbytes(const nc_tensor *t) { return (size_t)nc_tensor_numel(t) * nc_dtype_size(t->dtype); }

nc_status nc_tensor_alloc(nc_tensor *t, nc_dtype dtype, int rank, const int64_t *shape) {
  memset(t, 0, sizeof *t);
  if ((unsigned)dtype >= NC_DTYPE_COUNT) return nc_errorf(NC_E_INVALID, "tensor: invalid dtype %d", (int)dtype);
  if (rank < 0 || rank > NC_MAX_RANK) return nc_errorf(NC_E_INVALID, "tensor: rank %d out of range 0..%d", rank, NC_MAX_RANK);
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (shape[i] < 0 || shape[i] > NC_MAX_DIM) return nc_errorf(NC_E_INVALID, "tensor: dim %d has absurd extent %lld", i, (long long)shape[i]);
    if (shape[i] && n > NC_MAX_ELEMS / shape[i]) return nc_errorf(NC_E_NOMEM, "tensor: more than 2^48 elements");
    n *= shape[i];
  }
  t->dtype = dtype;
  t->rank = rank;
  for (int i = 0; i < rank; i++) t->shape[i] = shape[i];
  size_t bytes = (size_t)n * nc_dtype_size(dtype);
  t->data = calloc(bytes ? bytes : 1, 1);
  if (!t->data) return nc_errorf(NC_E_NOMEM, "tensor: cannot allocate %zu bytes", bytes);
  t->owned = true;
  return NC_OK;
}

nc_tensor nc_tensor_wrap(void *data, nc_dtype dtype, int rank, const int64_t *shape) {
  nc_tensor t;
  memset(&t, 0, sizeof t);
  t.dtype = dtype;
  t.rank = rank;
  for (int i = 0; i < rank && i < NC_MAX_RANK; i++) t.shape[i] = shape[i];
  t.data = data;
  return t;
}

void nc_tensor_free(nc_tensor *t) {
  if (t->owned) free(t->data);
  memset(t, 0, sizeof *t);
}

nc_status nc_tensor_clone(nc_tensor *dst, const nc_tensor *src) {
  NC_TRY(nc_tensor_alloc(dst, src->dtype, src->rank, src->shape));
  memcpy(dst->data, src->data, nc_tensor_nbytes(src));
  return NC_OK;
}

char *nc_tensor_type_str(const nc_tensor *t, char *buf, size_t n) {
  size_t o = (size_t)snprintf(buf, n, "%s[", nc_dtype_name(t->dtype));
  for (int i = 0; i < t->rank && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)t->shape[i]);
  if (o < n) snprintf(buf + o, n - o, "]");
  return buf;
}
