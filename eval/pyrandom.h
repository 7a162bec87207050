// Python's random.Random reproduced exactly: MT19937 seeded from an integer
// as CPython does (init_by_array over the 32-bit words of |seed|),
// getrandbits, _randbelow (rejection over getrandbits(n.bit_length())), and
// the shuffle and sample algorithms of Lib/random.py (CPython 3.11). nanochat
// draws CORE's few-shot examples with Random(1234 + idx).sample(...) and
// shuffles each task with Random(1337).shuffle(...); these reproduce them.
#ifndef NC_EVAL_PYRANDOM_H
#define NC_EVAL_PYRANDOM_H

#include <stdint.h>

#include "support/status.h"

typedef struct {
  uint32_t mt[624];
  int mti;
} nc_pyrandom;

// random.Random(seed) for a non-negative integer seed below 2^64.
void nc_pyrandom_seed(nc_pyrandom *r, uint64_t seed);
uint32_t nc_pyrandom_u32(nc_pyrandom *r);
// getrandbits(k), 0 <= k <= 32.
uint32_t nc_pyrandom_getrandbits(nc_pyrandom *r, int k);
// _randbelow(n), n < 2^32 (0 for n == 0).
uint32_t nc_pyrandom_randbelow(nc_pyrandom *r, uint32_t n);
// random.random(): 53-bit float in [0, 1).
double nc_pyrandom_random(nc_pyrandom *r);
// Random.shuffle(x) on an index array.
void nc_pyrandom_shuffle(nc_pyrandom *r, int64_t *x, int64_t n);
// Random.sample(population, k) where population[i] = pop[i]; out gets k items.
// Errors when k > n (as Python's ValueError).
nc_status nc_pyrandom_sample(nc_pyrandom *r, const int64_t *pop, int64_t n, int64_t k, int64_t *out);

#endif
