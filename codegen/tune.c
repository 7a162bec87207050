// Knob spaces: generic access to the templates' knob tables (codegen/tune.h).
#include "codegen/tune.h"

#include <stdio.h>
#include <string.h>

const nc_knob_space *nc_knob_space_find(const char *name) {
  const nc_knob_space *all[] = {&nc_gemm_knob_space, &nc_gemm_bf16_knob_space, &nc_ocl_gemm_knob_space, &nc_ocl_tc_knob_space, &nc_ocl_tcp_knob_space, &nc_ocl_flash_knob_space,
                                &nc_ocl_loop_knob_space};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (name && !strcmp(all[i]->name, name)) return all[i];
  return NULL;
}

int nc_knob_find(const nc_knob_space *s, const char *name) {
  for (int i = 0; i < s->nknobs; i++)
    if (!strcmp(s->knobs[i].name, name)) return i;
  return -1;
}

int nc_knob_get(const nc_knob_space *s, const void *knobs, int i) {
  int v;
  memcpy(&v, (const char *)knobs + s->knobs[i].offset, sizeof v);
  return v;
}

void nc_knob_set(const nc_knob_space *s, void *knobs, int i, int v) { memcpy((char *)knobs + s->knobs[i].offset, &v, sizeof v); }

nc_status nc_knob_check(const nc_knob_space *s, const void *knobs) {
  for (int i = 0; i < s->nknobs; i++) {
    int v = nc_knob_get(s, knobs, i);
    if (v < s->knobs[i].min || v > s->knobs[i].max)
      return nc_errorf(NC_E_INVALID, "%s knob %s=%d: must be in %d..%d", s->name, s->knobs[i].name, v, s->knobs[i].min,
                       s->knobs[i].max);
  }
  return s->check ? s->check(knobs) : NC_OK;
}

void nc_knob_format(const nc_knob_space *s, const void *knobs, char *buf, size_t n) {
  size_t at = 0;
  if (n) buf[0] = 0;
  for (int i = 0; i < s->nknobs && at < n; i++) {
    if (!s->knobs[i].nsearch) continue;
    int w = snprintf(buf + at, n - at, "%s%s=%d", at ? " " : "", s->knobs[i].name, nc_knob_get(s, knobs, i));
    if (w < 0) break;
    at += (size_t)w;
  }
}
