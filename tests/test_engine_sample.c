// Token sampling (engine/sample.h) against hand-computed distributions:
// argmax and its ties, temperature, top-k, top-p, penalties, extreme
// temperatures, and seeded streams.
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "engine/sample.h"

static int32_t idx[16];
static float prob[16];

static int32_t pick(const float *lg, int32_t n, const int32_t *counts, nc_sample_params p, nc_srng *r) {
  float tmp[16];
  memcpy(tmp, lg, (size_t)n * sizeof *tmp);
  return nc_sample_pick(tmp, n, counts, &p, r, idx, prob);
}

Test(sample, argmax_and_ties) {
  nc_srng r;
  nc_srng_seed(&r, 1, 0);
  float lg[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  nc_sample_params g = {.temperature = 0, .top_p = 1};
  cr_assert_eq(pick(lg, 5, NULL, g, &r), 1);  // lowest id among equal maxima
  g.top_k = 1;
  g.temperature = 1;
  for (int i = 0; i < 50; i++) {
    int32_t t = pick(lg, 5, NULL, g, &r);
    cr_assert(t == 1 || t == 3);
  }
  nc_sample_params tiny = {.temperature = 1e-300, .top_p = 1};
  float lg2[4] = {0.1f, 0.3f, 0.2f, -5.0f};
  for (int i = 0; i < 20; i++) cr_assert_eq(pick(lg2, 4, NULL, tiny, &r), 1);
  nc_sample_params smallp = {.temperature = 1, .top_p = 1e-9};
  for (int i = 0; i < 20; i++) cr_assert_eq(pick(lg2, 4, NULL, smallp, &r), 1);
}

// Frequencies of N draws against the expected probabilities (5 sigma).
static void check_freq(const float *lg, int32_t n, nc_sample_params p, const double *want) {
  nc_srng r;
  nc_srng_seed(&r, 42, 3);
  int cnt[16] = {0};
  const int N = 40000;
  for (int i = 0; i < N; i++) cnt[pick(lg, n, NULL, p, &r)]++;
  for (int32_t k = 0; k < n; k++) {
    double sd = sqrt(N * want[k] * (1 - want[k])) + 1;
    cr_assert(fabs(cnt[k] - N * want[k]) <= 5 * sd, "token %d: %d draws, expected %.1f", k, cnt[k], N * want[k]);
  }
}

Test(sample, temperature_top_k_top_p_distributions) {
  float lg[4] = {1.0f, 2.0f, 0.0f, 3.0f};
  // softmax at T = 1: e^1, e^2, e^0, e^3 over their sum
  double z = exp(1) + exp(2) + exp(0) + exp(3);
  double full[4] = {exp(1) / z, exp(2) / z, exp(0) / z, exp(3) / z};
  check_freq(lg, 4, (nc_sample_params){.temperature = 1, .top_p = 1}, full);
  // T = 2: logits halved
  double z2 = exp(0.5) + exp(1) + exp(0) + exp(1.5);
  double t2[4] = {exp(0.5) / z2, exp(1) / z2, exp(0) / z2, exp(1.5) / z2};
  check_freq(lg, 4, (nc_sample_params){.temperature = 2, .top_p = 1}, t2);
  // top-k 2: tokens 3 and 1 only
  double zk = exp(2) + exp(3);
  double k2[4] = {0, exp(2) / zk, 0, exp(3) / zk};
  check_freq(lg, 4, (nc_sample_params){.temperature = 1, .top_k = 2, .top_p = 1}, k2);
  // top-p 0.9: p sorted = .644, .237, .087, .032 -> the first three reach 0.9
  double zp = exp(3) + exp(2) + exp(1);
  double p9[4] = {exp(1) / zp, exp(2) / zp, 0, exp(3) / zp};
  check_freq(lg, 4, (nc_sample_params){.temperature = 1, .top_p = 0.9}, p9);
  // top-p 0.5: the most likely token alone
  double p5[4] = {0, 0, 0, 1};
  check_freq(lg, 4, (nc_sample_params){.temperature = 1, .top_p = 0.5}, p5);
}

Test(sample, penalties_follow_openai) {
  nc_srng r;
  nc_srng_seed(&r, 7, 0);
  float lg[3] = {2.0f, 1.5f, 0.0f};
  int32_t counts[3] = {3, 0, 0};
  // presence 0.6: token 0 -> 1.4 < 1.5
  nc_sample_params p = {.temperature = 0, .top_p = 1, .presence_penalty = 0.6};
  cr_assert_eq(pick(lg, 3, counts, p, &r), 1);
  // frequency 0.1 x 3 = 0.3: 1.7 > 1.5
  p = (nc_sample_params){.temperature = 0, .top_p = 1, .frequency_penalty = 0.1};
  cr_assert_eq(pick(lg, 3, counts, p, &r), 0);
  // frequency 0.2 x 3 = 0.6: 1.4 < 1.5
  p.frequency_penalty = 0.2;
  cr_assert_eq(pick(lg, 3, counts, p, &r), 1);
  // negative penalties favour repeats
  float lg2[3] = {1.0f, 1.5f, 0.0f};
  p = (nc_sample_params){.temperature = 0, .top_p = 1, .presence_penalty = -1};
  cr_assert_eq(pick(lg2, 3, counts, p, &r), 0);
}

Test(sample, seeded_streams) {
  nc_srng a, b, c;
  nc_srng_seed(&a, 123, 0);
  nc_srng_seed(&b, 123, 0);
  nc_srng_seed(&c, 123, 1);
  bool differ = false;
  for (int i = 0; i < 100; i++) {
    uint64_t x = nc_srng_next(&a), y = nc_srng_next(&b), z = nc_srng_next(&c);
    cr_assert_eq(x, y);
    differ |= x != z;
  }
  cr_assert(differ, "stream 1 differs from stream 0");
  for (int i = 0; i < 1000; i++) {
    double u = nc_srng_uniform(&a);
    cr_assert(u >= 0 && u < 1);
  }
}

// The whole-vocabulary draw (no top-k, no top-p) takes a vectorised path
// (blocks of 16 ids, a polynomial exp): frequencies over 40 ids, spread
// logits, -inf (masked) ids and a tail that is not a whole block, against
// softmax in double.
static void check_freq_big(const float *lg, int32_t n, double temp, uint64_t seed) {
  enum { NMAX = 64 };
  int32_t bidx[NMAX];
  float bprob[NMAX], tmp[NMAX];
  double want[NMAX], z = 0, mx = -INFINITY;
  for (int32_t k = 0; k < n; k++) mx = fmax(mx, lg[k]);
  for (int32_t k = 0; k < n; k++) z += (want[k] = exp((lg[k] - mx) / temp));
  nc_srng r;
  nc_srng_seed(&r, seed, 0);
  int cnt[NMAX] = {0};
  const int N = 60000;
  nc_sample_params p = {.temperature = temp, .top_p = 1};
  for (int i = 0; i < N; i++) {
    memcpy(tmp, lg, (size_t)n * sizeof *tmp);
    int32_t t = nc_sample_pick(tmp, n, NULL, &p, &r, bidx, bprob);
    cr_assert(t >= 0 && t < n);
    cnt[t]++;
  }
  for (int32_t k = 0; k < n; k++) {
    double w = want[k] / z, sd = sqrt(N * w * (1 - w)) + 1;
    cr_assert(fabs(cnt[k] - N * w) <= 5 * sd, "n %d T %g token %d: %d draws, expected %.1f", n, temp, k, cnt[k], N * w);
    if (w == 0) cr_assert_eq(cnt[k], 0, "token %d has probability 0 but was drawn", k);
  }
}

Test(sample, whole_vocabulary_path) {
  float lg[40];
  for (int k = 0; k < 40; k++) lg[k] = (float)((k * 7) % 11) * 0.45f - 2.0f + (k == 21 ? 1.5f : 0);
  check_freq_big(lg, 40, 1.0, 5);
  check_freq_big(lg, 40, 0.5, 6);
  check_freq_big(lg, 33, 3.0, 7);  // two blocks and a tail of one
  lg[3] = lg[17] = lg[32] = -INFINITY;  // masked ids are never drawn
  lg[5] = -200.0f;                      // exp underflows to 0
  check_freq_big(lg, 40, 1.0, 8);
  // tiny temperature: one of the maxima (12, 25, 38), each with probability 1/3
  nc_srng r;
  nc_srng_seed(&r, 9, 0);
  nc_sample_params tiny = {.temperature = 1e-300, .top_p = 1};
  float big[40];
  for (int k = 0; k < 40; k++) big[k] = (float)(k % 13);
  int32_t bidx[40];
  float bprob[40];
  int seen[3] = {0};
  for (int i = 0; i < 60; i++) {
    float tmp[40];
    memcpy(tmp, big, sizeof tmp);
    int32_t t = nc_sample_pick(tmp, 40, NULL, &tiny, &r, bidx, bprob);
    cr_assert(t == 12 || t == 25 || t == 38, "tiny temperature drew %d", t);
    seen[(t - 12) / 13]++;
  }
  cr_assert(seen[0] && seen[1] && seen[2], "every maximum is drawn");
}

// Draws near the boundaries: every id of a uniform distribution over 4096
// ids is reachable and the counts stay within 5 sigma of uniform per block.
Test(sample, whole_vocabulary_uniform_4096) {
  enum { N = 4096 };
  static float lg[N], tmp[N], bprob[N];
  static int32_t bidx[N];
  static int cnt[N];
  for (int k = 0; k < N; k++) lg[k] = 0.25f;
  nc_srng r;
  nc_srng_seed(&r, 11, 0);
  nc_sample_params p = {.temperature = 0.7, .top_p = 1};
  const int D = 40000;
  for (int i = 0; i < D; i++) {
    memcpy(tmp, lg, sizeof tmp);
    int32_t t = nc_sample_pick(tmp, N, NULL, &p, &r, bidx, bprob);
    cr_assert(t >= 0 && t < N);
    cnt[t]++;
  }
  for (int b = 0; b < N; b += 256) {  // 16 groups of 256 ids
    int c = 0;
    for (int k = b; k < b + 256; k++) c += cnt[k];
    double w = 256.0 / N, sd = sqrt(D * w * (1 - w));
    cr_assert(fabs(c - D * w) <= 5 * sd, "ids %d..%d: %d draws, expected %.0f", b, b + 255, c, D * w);
  }
}

// Draw by draw against softmax in double with the same uniform number (a copy
// of the generator): the vectorised exp is accurate to ~1e-7, so the token
// differs only when the uniform falls within that of a boundary (never, in
// practice); an exp off by 1e-3 would differ in ~1% of the draws.
Test(sample, whole_vocabulary_matches_double_draws) {
  enum { N = 53 };
  float lg[N], tmp[N], bprob[N];
  int32_t bidx[N];
  for (int k = 0; k < N; k++) lg[k] = (float)((k * 37) % 23) * 0.37f - 4.0f;
  nc_srng r;
  nc_srng_seed(&r, 21, 0);
  int differ = 0;
  for (int i = 0; i < 20000; i++) {
    double temp = 0.3 + (i % 7) * 0.4;
    nc_srng copy = r;
    double u = nc_srng_uniform(&copy), z = 0, mx = -INFINITY, w[N];
    for (int k = 0; k < N; k++) mx = fmax(mx, lg[k]);
    for (int k = 0; k < N; k++) z += (w[k] = exp(((double)lg[k] - mx) / temp));
    int32_t want = N - 1;
    double acc = 0;
    for (int k = 0; k < N; k++)
      if (u * z < (acc += w[k])) {
        want = k;
        break;
      }
    memcpy(tmp, lg, sizeof tmp);
    nc_sample_params p = {.temperature = temp, .top_p = 1};
    differ += nc_sample_pick(tmp, N, NULL, &p, &r, bidx, bprob) != want;
  }
  cr_assert(differ <= 2, "%d of 20000 draws differ from the double-precision draw", differ);
}
