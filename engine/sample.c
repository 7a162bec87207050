// Sampling (engine/sample.h).
#include "engine/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

// ---- the plain temperature draw (no top-k, no top-p): the whole vocabulary ----
// Four lanes of GNU C vectors (SSE on x86-64, NEON on arm64); unaligned loads
// through memcpy.
typedef float nc_v4f __attribute__((vector_size(16)));
typedef int32_t nc_v4i __attribute__((vector_size(16)));
#define NC_SB 16  // elements per block of the draw's scan

static inline nc_v4f nc_v4_load(const float *p) {
  nc_v4f v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline nc_v4f nc_v4_splat(float x) { return (nc_v4f){x, x, x, x}; }
static inline nc_v4f nc_v4_as_f(nc_v4i x) {
  nc_v4f v;
  memcpy(&v, &x, sizeof v);
  return v;
}
static inline nc_v4i nc_v4_as_i(nc_v4f x) {
  nc_v4i v;
  memcpy(&v, &x, sizeof v);
  return v;
}
// m ? a : b, lane by lane (m: all ones or zero, from a comparison)
static inline nc_v4f nc_v4_sel(nc_v4i m, nc_v4f a, nc_v4f b) {
  return nc_v4_as_f((nc_v4_as_i(a) & m) | (nc_v4_as_i(b) & ~m));
}

// exp(x) of 4 lanes, x <= 0 (the logits minus their max, scaled): Cephes'
// expf (x = n ln2 + r, |r| <= ln2/2, degree-7 polynomial; ~1 ulp); x below
// -87.3 (or -inf) gives 0, NaN gives NaN.
static inline nc_v4f nc_v4_exp(nc_v4f x) {
  const nc_v4f magic = nc_v4_splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  nc_v4i under = x < nc_v4_splat(-87.3f);
  nc_v4f xc = nc_v4_sel(under, nc_v4_splat(-87.3f), x);  // (NaN compares false: stays NaN)
  nc_v4f t = xc * nc_v4_splat(1.44269504088896341f) + magic;
  nc_v4f n = t - magic;
  nc_v4f r = xc - n * nc_v4_splat(0.693359375f) + n * nc_v4_splat(2.12194440e-4f);
  nc_v4f q = nc_v4_splat(1.9875691500E-4f);
  q = q * r + nc_v4_splat(1.3981999507E-3f);
  q = q * r + nc_v4_splat(8.3334519073E-3f);
  q = q * r + nc_v4_splat(4.1665795894E-2f);
  q = q * r + nc_v4_splat(1.6666665459E-1f);
  q = q * r + nc_v4_splat(5.0000001201E-1f);
  q = q * (r * r) + r + nc_v4_splat(1.0f);
  nc_v4i e = (nc_v4_as_i(t) - 0x4B400000 + 127) << 23;  // 2^n, n >= -126 after the clamp
  return nc_v4_as_f(nc_v4_as_i(q * nc_v4_as_f(e)) & ~under);
}

static inline float nc_v4_hsum(nc_v4f v) { return (v[0] + v[2]) + (v[1] + v[3]); }

// exp((l - max) / T) of 4 logits; the max itself (d == 0) is exactly 1, also when 1/T is inf
static inline nc_v4f nc_v4_prob(const float *l, nc_v4f vm, nc_v4f vt) {
  nc_v4f d = nc_v4_load(l) - vm;
  return nc_v4_sel(d == nc_v4_splat(0), nc_v4_splat(1), nc_v4_exp(d * vt));
}

// Samples from softmax(logits / T) over all n ids: prob[i] = exp((l_i - max) / T),
// and the draw scans blocks of NC_SB by their sums (the same float sums, in the
// same order, that make the total, so a draw below the total always lands in a
// block), then the block's elements. No index array, no sort.
static int32_t nc_sample_full(const float *logits, int32_t n, double temperature, nc_srng *rng, float *prob) {
  const int32_t nv = n / NC_SB * NC_SB;
  nc_v4f mv = nc_v4_splat(-INFINITY);
  for (int32_t i = 0; i + 4 <= n; i += 4) {
    nc_v4f x = nc_v4_load(logits + i);
    mv = nc_v4_sel(x > mv, x, mv);
  }
  float mx = fmaxf(fmaxf(mv[0], mv[1]), fmaxf(mv[2], mv[3]));
  for (int32_t i = n / 4 * 4; i < n; i++) mx = fmaxf(mx, logits[i]);
  float inv_t = (float)(1.0 / temperature);
  nc_v4f vm = nc_v4_splat(mx), vt = nc_v4_splat(inv_t);
  double sum = 0;
  for (int32_t i = 0; i < nv; i += NC_SB) {
    nc_v4f e[4];
    for (int k = 0; k < 4; k++) e[k] = nc_v4_prob(logits + i + 4 * k, vm, vt);
    memcpy(prob + i, e, sizeof e);
    sum += nc_v4_hsum((e[0] + e[1]) + (e[2] + e[3]));
  }
  for (int32_t i = nv; i < n; i++) {
    float d = logits[i] - mx;
    prob[i] = d == 0 ? 1.0f : expf(d * inv_t);
    sum += prob[i];
  }
  double u = nc_srng_uniform(rng) * sum, acc = 0;
  int32_t last = -1;  // the last id with a nonzero probability so far
  for (int32_t i = 0; i < nv; i += NC_SB) {
    const float *q = prob + i;
    float bs = nc_v4_hsum((nc_v4_load(q) + nc_v4_load(q + 4)) + (nc_v4_load(q + 8) + nc_v4_load(q + 12)));
    if (u >= acc + bs) {
      acc += bs;
      for (int32_t j = i + NC_SB - 1; bs > 0 && j >= i; j--)
        if (prob[j] > 0) {
          last = j;
          break;
        }
      continue;
    }
    for (int32_t j = i; j < i + NC_SB; j++) {  // the draw lands in this block
      if (prob[j] > 0) last = j;
      acc += prob[j];
      if (u < acc) return j;
    }
    return last;  // (rounding: the elementwise sum fell short of the block's sum)
  }
  for (int32_t i = nv; i < n; i++) {
    if (prob[i] > 0) last = i;
    acc += prob[i];
    if (u < acc) return i;
  }
  return last >= 0 ? last : n - 1;
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
  if (p->top_k <= 0 || p->top_k >= n) {
    if (!(p->top_p > 0 && p->top_p < 1)) return nc_sample_full(logits, n, p->temperature, rng, prob);
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
