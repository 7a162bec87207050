// Sampling (engine/sample.h).
#include "engine/sample.h"

#include <math.h>
#include <stdlib.h>

static uint64_t nc_splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void nc_srng_seed(nc_srng *r, uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (0xd1b54a32d192ed03ull * (stream + 1));
  for (int i = 0; i < 4; i++) r->s[i] = nc_splitmix(&x);
}

static uint64_t nc_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t nc_srng_next(nc_srng *r) {
  uint64_t *s = r->s, res = nc_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = nc_rotl(s[3], 45);
  return res;
}

double nc_srng_uniform(nc_srng *r) { return (double)(nc_srng_next(r) >> 11) * 0x1.0p-53; }

// Sorts idx[0..n) by p[idx] descending (ties: lower id first), heap-free
// insertion for small n, qsort_r otherwise.
static int nc_cmp_desc(const void *a, const void *b, void *ctx) {
  const float *p = ctx;
  int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
  if (p[i] > p[j]) return -1;
  if (p[i] < p[j]) return 1;
  return i < j ? -1 : i > j;
}

// Moves the k largest of idx[0..n) (by v) to the front (unordered): quickselect.
static void nc_select_top(int32_t *idx, int32_t n, int32_t k, const float *v) {
  int32_t lo = 0, hi = n - 1;
  while (lo < hi) {
    float pivot = v[idx[(lo + hi) / 2]];
    int32_t i = lo, j = hi;
    while (i <= j) {
      while (v[idx[i]] > pivot) i++;
      while (v[idx[j]] < pivot) j--;
      if (i <= j) {
        int32_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        i++;
        j--;
      }
    }
    if (k - 1 <= j) hi = j;
    else if (k - 1 >= i) lo = i;
    else break;
  }
}

int32_t nc_sample_pick(float *logits, int32_t n, const int32_t *counts, const nc_sample_params *p, nc_srng *rng,
                       int32_t *idx, float *prob) {
  if (counts && (p->presence_penalty != 0 || p->frequency_penalty != 0))
    for (int32_t i = 0; i < n; i++)
      if (counts[i] > 0)
        logits[i] -= (float)(p->presence_penalty + p->frequency_penalty * (double)counts[i]);
  if (p->temperature <= 0) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  int32_t m = n;
  for (int32_t i = 0; i < n; i++) idx[i] = i;
  if (p->top_k > 0 && p->top_k < n) {
    nc_select_top(idx, n, p->top_k, logits);
    m = p->top_k;
  }
  float mx = -INFINITY;
  for (int32_t i = 0; i < m; i++) mx = fmaxf(mx, logits[idx[i]]);
  double sum = 0;
  float inv_t = (float)(1.0 / p->temperature);
  for (int32_t i = 0; i < m; i++) {
    float d = logits[idx[i]] - mx;
    float e = d == 0 ? 1.0f : expf(d * inv_t);  // <= 1: no overflow; the max is 1 even when inv_t is inf
    prob[idx[i]] = e;
    sum += e;
  }
  if (p->top_p > 0 && p->top_p < 1) {
    // nucleus: the smallest set of most likely tokens whose mass reaches top_p
    qsort_r(idx, (size_t)m, sizeof *idx, nc_cmp_desc, prob);
    double acc = 0, want = p->top_p * sum;
    int32_t keep = 0;
    while (keep < m) {
      acc += prob[idx[keep++]];
      if (acc >= want) break;
    }
    m = keep;
    sum = acc;
  }
  double u = nc_srng_uniform(rng) * sum, acc = 0;
  for (int32_t i = 0; i < m; i++) {
    acc += prob[idx[i]];
    if (u < acc) return idx[i];
  }
  return idx[m - 1];
}
