#include "tests/support/model_util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *nc_test_path(char *buf, size_t n, const char *rel) {
  const char *root = getenv("NC_SOURCE_DIR");
  snprintf(buf, n, "%s/%s", root ? root : ".", rel);
  return buf;
}

void nc_test_load_st(const char *rel, nc_tensor_list *out) {
  char path[1024];
  nc_tensor_list_init(out);
  nc_status st = nc_safetensors_read(nc_test_path(path, sizeof path, rel), out, NULL);
  cr_assert_null(st, "loading %s: %s", rel, nc_status_msg(st));
}

double nc_test_rel_err(const nc_tensor *a, const nc_tensor *b) {
  cr_assert_eq(a->rank, b->rank, "rank %d vs %d", a->rank, b->rank);
  for (int i = 0; i < a->rank; i++) cr_assert_eq(a->shape[i], b->shape[i], "dim %d: %lld vs %lld", i, (long long)a->shape[i], (long long)b->shape[i]);
  double maxdiff = 0, maxb = 0;
  int64_t n = nc_tensor_numel(a);
  for (int64_t i = 0; i < n; i++) {
    double x = nc_elem_get(a->data, a->dtype, (size_t)i), y = nc_elem_get(b->data, b->dtype, (size_t)i);
    if (isnan(x) || isnan(y)) return INFINITY;
    maxdiff = fmax(maxdiff, fabs(x - y));
    maxb = fmax(maxb, fabs(y));
  }
  return maxdiff / fmax(maxb, 1e-12);
}

void nc_test_session_load(nc_session *s, const nc_tensor_list *l, const char *strip_prefix) {
  size_t pl = strip_prefix ? strlen(strip_prefix) : 0;
  for (size_t i = 0; i < l->len; i++) {
    const char *name = l->items[i].name;
    if (pl && strncmp(name, strip_prefix, pl)) continue;
    nc_status st = nc_session_put_copy(s, name + pl, &l->items[i].t);
    cr_assert_null(st, "%s", nc_status_msg(st));
  }
}
