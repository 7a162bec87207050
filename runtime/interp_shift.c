// Reference interpreter: shift (zero-filled translation along one axis).
#include <string.h>

#include "runtime/interp_impl.h"

NC_INTERP_FN(SHIFT) {
  const nc_tensor *x = c->in[0];
  nc_tensor *y = c->out;
  int axis = (int)c->n->ia[0];
  int64_t amount = c->n->ia[1];
  // view as (outer, n, inner): y[o, t, i] = x[o, t - amount, i]
  int64_t outer = 1, inner = 1, n = x->shape[axis];
  for (int i = 0; i < axis; i++) outer *= x->shape[i];
  for (int i = axis + 1; i < x->rank; i++) inner *= x->shape[i];
  size_t es = nc_dtype_size(x->dtype), row = (size_t)inner * es;
  const char *src = x->data;
  char *dst = y->data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t t = 0; t < n; t++) {
      int64_t s = t - amount;
      char *d = dst + ((size_t)(o * n + t)) * row;
      if (s < 0 || s >= n) memset(d, 0, row);
      else memcpy(d, src + ((size_t)(o * n + s)) * row, row);
    }
  return NC_OK;
}
