// Parameter initialization (nanochat's schemes) with a portable PRNG, so the
// same seed gives the same weights on every machine.
#ifndef NC_MODELS_INIT_H
#define NC_MODELS_INIT_H

#include <stdint.h>

#include "ir/tensor.h"
#include "models/gpt.h"

typedef struct {
  uint64_t s;
} nc_rng;

void nc_rng_seed(nc_rng *r, uint64_t seed);
uint64_t nc_rng_next(nc_rng *r);     // splitmix64
double nc_rng_uniform(nc_rng *r);    // [0, 1)
double nc_rng_normal(nc_rng *r);     // N(0, 1), Box-Muller

// Allocates and fills one f32 tensor per param, in nc_gpt_params order. Each
// param draws from its own stream (seed, index) so adding a param does not
// change the others.
nc_status nc_gpt_init(const nc_param_desc *ps, int np, uint64_t seed, nc_tensor *out);

#endif
