// Python's random.Random (MT19937, CPython's seeding and Lib/random.py's
// shuffle/sample). See pyrandom.h.
#include "eval/pyrandom.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NC_MT_N 624
#define NC_MT_M 397

static void nc_mt_init_genrand(nc_pyrandom *r, uint32_t s) {
  r->mt[0] = s;
  for (int i = 1; i < NC_MT_N; i++)
    r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
  r->mti = NC_MT_N;
}

// CPython's init_by_array (_randommodule.c), the reference MT19937 one.
static void nc_mt_init_by_array(nc_pyrandom *r, const uint32_t *key, int keylen) {
  nc_mt_init_genrand(r, 19650218u);
  int i = 1, j = 0;
  for (int k = NC_MT_N > keylen ? NC_MT_N : keylen; k; k--) {
    r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
    i++, j++;
    if (i >= NC_MT_N) r->mt[0] = r->mt[NC_MT_N - 1], i = 1;
    if (j >= keylen) j = 0;
  }
  for (int k = NC_MT_N - 1; k; k--) {
    r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
    i++;
    if (i >= NC_MT_N) r->mt[0] = r->mt[NC_MT_N - 1], i = 1;
  }
  r->mt[0] = 0x80000000u;
  r->mti = NC_MT_N;
}

void nc_pyrandom_seed(nc_pyrandom *r, uint64_t seed) {
  // CPython: the key is the 32-bit words of |seed|, least significant first;
  // seed 0 gives the one-word key [0].
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  nc_mt_init_by_array(r, key, key[1] ? 2 : 1);
}

uint32_t nc_pyrandom_u32(nc_pyrandom *r) {
  static const uint32_t mag01[2] = {0u, 0x9908b0dfu};
  uint32_t y;
  if (r->mti >= NC_MT_N) {
    int kk;
    for (kk = 0; kk < NC_MT_N - NC_MT_M; kk++) {
      y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
      r->mt[kk] = r->mt[kk + NC_MT_M] ^ (y >> 1) ^ mag01[y & 1u];
    }
    for (; kk < NC_MT_N - 1; kk++) {
      y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
      r->mt[kk] = r->mt[kk + (NC_MT_M - NC_MT_N)] ^ (y >> 1) ^ mag01[y & 1u];
    }
    y = (r->mt[NC_MT_N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
    r->mt[NC_MT_N - 1] = r->mt[NC_MT_M - 1] ^ (y >> 1) ^ mag01[y & 1u];
    r->mti = 0;
  }
  y = r->mt[r->mti++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= (y >> 18);
  return y;
}

uint32_t nc_pyrandom_getrandbits(nc_pyrandom *r, int k) {
  if (k <= 0) return 0;
  return nc_pyrandom_u32(r) >> (32 - k);
}

uint32_t nc_pyrandom_randbelow(nc_pyrandom *r, uint32_t n) {
  if (!n) return 0;
  int k = 0;
  for (uint32_t v = n; v; v >>= 1) k++;  // n.bit_length()
  uint32_t x = nc_pyrandom_getrandbits(r, k);
  while (x >= n) x = nc_pyrandom_getrandbits(r, k);
  return x;
}

double nc_pyrandom_random(nc_pyrandom *r) {
  uint32_t a = nc_pyrandom_u32(r) >> 5, b = nc_pyrandom_u32(r) >> 6;
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

void nc_pyrandom_shuffle(nc_pyrandom *r, int64_t *x, int64_t n) {
  for (int64_t i = n - 1; i >= 1; i--) {
    int64_t j = nc_pyrandom_randbelow(r, (uint32_t)(i + 1));
    int64_t t = x[i];
    x[i] = x[j];
    x[j] = t;
  }
}

nc_status nc_pyrandom_sample(nc_pyrandom *r, const int64_t *pop, int64_t n, int64_t k, int64_t *out) {
  if (k < 0 || k > n) return nc_errorf(NC_E_INVALID, "sample: k = %lld is larger than the population (%lld)", (long long)k, (long long)n);
  if (n >= (int64_t)UINT32_MAX) return nc_errorf(NC_E_UNSUPPORTED, "sample: population of %lld is too large", (long long)n);
  int64_t setsize = 21;
  if (k > 5) setsize += (int64_t)pow(4.0, ceil(log((double)(k * 3)) / log(4.0)));
  if (n <= setsize) {
    int64_t *pool = malloc((size_t)(n ? n : 1) * sizeof *pool);
    if (!pool) return nc_errorf(NC_E_NOMEM, "sample: out of memory");
    memcpy(pool, pop, (size_t)n * sizeof *pool);
    for (int64_t i = 0; i < k; i++) {
      int64_t j = nc_pyrandom_randbelow(r, (uint32_t)(n - i));
      out[i] = pool[j];
      pool[j] = pool[n - i - 1];
    }
    free(pool);
  } else {
    uint8_t *sel = calloc((size_t)(n + 7) / 8, 1);
    if (!sel) return nc_errorf(NC_E_NOMEM, "sample: out of memory");
    for (int64_t i = 0; i < k; i++) {
      int64_t j = nc_pyrandom_randbelow(r, (uint32_t)n);
      while (sel[j >> 3] & (1u << (j & 7))) j = nc_pyrandom_randbelow(r, (uint32_t)n);
      sel[j >> 3] |= (uint8_t)(1u << (j & 7));
      out[i] = pop[j];
    }
    free(sel);
  }
  return NC_OK;
}
