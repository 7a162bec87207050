#include "cli/precision.h"

#include <stdio.h>
#include <string.h>

int nc_cli_precision_check(const char *cmd, const char *value) {
  nc_model_spec s;
  nc_spec_defaults(&s);
  nc_status st = nc_spec_set_precision(&s, value, "--precision");
  if (!st) return 0;
  fprintf(stderr, "nanochat %s: %s\n", cmd, nc_status_msg(st));
  nc_status_free(st);
  return 2;
}

void nc_cli_precision_apply(const char *value, nc_model_spec *s, nc_device *d) {
  if (!value) return;
  if (s) nc_status_free(nc_spec_set_precision(s, value, "--precision"));  // checked before: cannot fail
  if (d && d->kind == NC_DEV_OPENCL) d->matmul_bf16 = !strcmp(value, "bf16");
}
