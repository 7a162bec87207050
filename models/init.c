#include "models/init.h"

#include <math.h>
#include <string.h>

void nc_rng_seed(nc_rng *r, uint64_t seed) { r->s = seed; }

uint64_t nc_rng_next(nc_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double nc_rng_uniform(nc_rng *r) { return (double)(nc_rng_next(r) >> 11) * 0x1.0p-53; }

double nc_rng_normal(nc_rng *r) {
  double u1 = nc_rng_uniform(r), u2 = nc_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

nc_status nc_gpt_init(const nc_param_desc *ps, int np, uint64_t seed, nc_tensor *out) {
  for (int i = 0; i < np; i++) memset(&out[i], 0, sizeof out[i]);
  for (int i = 0; i < np; i++) {
    const nc_param_desc *d = &ps[i];
    nc_status st = nc_tensor_alloc(&out[i], NC_F32, d->rank, d->shape);
    if (st) {
      for (int k = 0; k < i; k++) nc_tensor_free(&out[k]);
      return nc_status_prefix(st, "init %s: ", d->name);
    }
    nc_rng r;
    nc_rng_seed(&r, seed * 0x100000001b3ull + (uint64_t)i);
    float *x = out[i].data;
    int64_t n = nc_tensor_numel(&out[i]);
    for (int64_t j = 0; j < n; j++) {
      switch (d->init) {
        case NC_INIT_ZEROS: x[j] = 0; break;
        case NC_INIT_NORMAL: x[j] = (float)(d->a * nc_rng_normal(&r)); break;
        case NC_INIT_UNIFORM: x[j] = (float)(d->a + (d->b - d->a) * nc_rng_uniform(&r)); break;
        case NC_INIT_CONST: x[j] = (float)d->a; break;
        case NC_INIT_LINSPACE: x[j] = (float)(n > 1 ? d->a + (d->b - d->a) * (double)j / (double)(n - 1) : d->a); break;
      }
    }
  }
  return NC_OK;
}
