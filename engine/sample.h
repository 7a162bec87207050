// Token sampling for the engine: penalties, temperature, top-k, top-p, and a
// small seeded PRNG owned by each sample (reproducible per seed, whatever
// else runs in the batch).
#ifndef NC_ENGINE_SAMPLE_H
#define NC_ENGINE_SAMPLE_H

#include <stdint.h>

typedef struct {
  uint64_t s[4];  // xoshiro256** state
} nc_srng;

// Seeds from (seed, stream): samples of one request use streams 0..n-1.
void nc_srng_seed(nc_srng *r, uint64_t seed, uint64_t stream);
uint64_t nc_srng_next(nc_srng *r);
double nc_srng_uniform(nc_srng *r);  // [0, 1), 53 bits

typedef struct {
  double temperature;  // <= 0: argmax
  int top_k;           // 0 = off
  double top_p;        // >= 1 = off
  double presence_penalty, frequency_penalty;
} nc_sample_params;

// Picks a token among ids 0..n-1 of logits (modified in place by the
// penalties; counts[i] = times token i was generated so far, may be NULL).
// scratch: n ints and n floats of workspace.
int32_t nc_sample_pick(float *logits, int32_t n, const int32_t *counts, const nc_sample_params *p, nc_srng *rng,
                       int32_t *scratch_idx, float *scratch_p);

#endif
