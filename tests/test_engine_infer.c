// The engine's prefill + decode plans over the KV cache (engine/infer.h)
// against the oracle: the full forward graph (nc_gpt_build) on the
// reference interpreter, at every position, with rows at different
// positions in one decode batch, rows leaving (the last row moves), the
// cache growing (by chunks of 16 positions up to 128) and shrinking again; tiny (plain) and
// tiny-all (sliding windows, value embeddings, smear, backout, lambdas);
// prompts of different lengths prefilled together (nc_infer_prefill_batch).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/model_io.h"
#include "engine/infer.h"
#include "models/gpt.h"
#include "tests/support/model_util.h"

static nc_model_spec spec(const char *name, int seq) {
  char rel[128], path[1024];
  snprintf(rel, sizeof rel, "models/specs/%s.xml", name);
  nc_model_spec s;
  nc_status st = nc_spec_load(nc_test_path(path, sizeof path, rel), &s);
  cr_assert_null(st, "%s", nc_status_msg(st));
  if (seq) {
    s.sequence_len = seq;
    cr_assert_null(nc_spec_finalize(&s));
  }
  return s;
}

static uint64_t rng_next(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

// Initialized params with every all-zero tensor (c_proj, lm_head...) made
// random, so every path of the model matters.
static nc_session *params(const nc_model_spec *s) {
  nc_session *p = nc_session_new();
  cr_assert_null(nc_model_init_session(s, 7, p));
  uint64_t x = 88172645463325252ull;
  for (int k = 0; k < nc_session_count(p); k++) {
    nc_tensor *t = (nc_tensor *)nc_session_get(p, nc_session_name_at(p, k));
    float *d = t->data;
    int64_t n = nc_tensor_numel(t);
    bool zero = true;
    for (int64_t i = 0; i < n; i++) zero &= d[i] == 0;
    if (!zero) continue;
    for (int64_t i = 0; i < n; i++) d[i] = (float)((double)(rng_next(&x) % 2001) / 1000.0 - 1.0) * 0.1f;
  }
  return p;
}

// Full-forward logits (1,T,V) of tokens on the interpreter.
static nc_tensor full_logits(const nc_model_spec *s, nc_session *p, const int32_t *tok, int64_t T) {
  nc_graph *g;
  nc_gpt_opts o = {.with_logits = true};
  cr_assert_null(nc_gpt_build(s, &o, &g));
  nc_tensor tt = nc_tensor_wrap((void *)tok, NC_I32, 2, (int64_t[]){1, T});
  int n = nc_session_count(p);
  nc_feed *f = calloc((size_t)n + 1, sizeof *f);
  for (int k = 0; k < n; k++) f[k] = (nc_feed){nc_session_name_at(p, k), nc_session_get(p, nc_session_name_at(p, k))};
  f[n] = (nc_feed){"tokens", &tt};
  nc_tensor out;
  nc_status st = nc_interp_run(g, f, n + 1, &out);
  cr_assert_null(st, "%s", nc_status_msg(st));
  free(f);
  nc_graph_free(g);
  return out;
}

static double err_at(const float *got, const nc_tensor *full, int64_t t, int64_t V) {
  const float *want = (const float *)full->data + t * V;
  double md = 0, mw = 1e-6;
  for (int64_t v = 0; v < V; v++) {
    if (isnan(got[v])) return INFINITY;
    md = fmax(md, fabs((double)got[v] - want[v]));
    mw = fmax(mw, fabs((double)want[v]));
  }
  return md / mw;
}

typedef struct {
  int32_t tok[200];
  int64_t n, prompt;
  nc_tensor full;
  int64_t pos;  // next position to feed
  bool live;
} seq_t;

// Runs the scenario: three sequences prefilled at different lengths, decoded
// together; the first leaves early (the last row moves into its place).
static char tcaps[256];  // the cache lengths the last scenario went through

// batched: the three prompts go through one nc_infer_prefill_batch (padded
// to the longest) instead of three nc_infer_prefill calls.
static void scenario_ex(const char *name, int seqlen, const char *device, int64_t n0, int64_t n1, int64_t n2,
                        int64_t prompt0, double tol, bool batched) {
  nc_model_spec s = spec(name, seqlen);
  nc_session *p = params(&s);
  nc_device d;
  cr_assert_null(nc_device_parse(device, &d));
  d.threads = 2;
  nc_infer *m;
  nc_status st = nc_infer_new(&s, p, &d, 4, 0, &m);
  cr_assert_null(st, "%s", nc_status_msg(st));
  int64_t V = s.vocab_size;
  uint64_t x = 12345;
  int64_t last_tcap = nc_infer_tcap(m);
  snprintf(tcaps, sizeof tcaps, "%lld", (long long)last_tcap);
  seq_t q[3];
  int64_t lens[3] = {n0, n1, n2}, prompts[3] = {prompt0, 1, 5};
  for (int i = 0; i < 3; i++) {
    q[i].n = lens[i];
    q[i].prompt = prompts[i];
    for (int64_t t = 0; t < q[i].n; t++) q[i].tok[t] = (int32_t)(rng_next(&x) % (uint64_t)V);
    q[i].full = full_logits(&s, p, q[i].tok, q[i].n);
  }
  float *lg = malloc((size_t)(4 * V) * sizeof(float));
  int rowseq[4];  // row -> sequence
  if (batched) {
    const int32_t *pr[3] = {q[0].tok, q[1].tok, q[2].tok};
    int64_t pl[3] = {q[0].prompt, q[1].prompt, q[2].prompt};
    int cp[3] = {1, 1, 1};
    st = nc_infer_prefill_batch(m, 3, pr, pl, cp, lg);
    cr_assert_null(st, "%s", nc_status_msg(st));
  }
  for (int i = 0; i < 3; i++) {
    if (!batched) {
      st = nc_infer_prefill(m, q[i].tok, q[i].prompt, 1, lg);
      cr_assert_null(st, "%s", nc_status_msg(st));
    }
    double e = err_at(lg + (batched ? i * V : 0), &q[i].full, q[i].prompt - 1, V);
    cr_assert(e < tol, "%s/%s: prefill of sequence %d%s: rel err %g", name, device, i, batched ? " (batched)" : "", e);
    q[i].pos = q[i].prompt;
    q[i].live = true;
    rowseq[i] = i;
  }
  cr_assert_eq(nc_infer_rows(m), 3);
  int steps = 0;
  while (nc_infer_rows(m) > 0) {
    // rows whose sequence is exhausted leave first
    for (int r = 0; r < nc_infer_rows(m);) {
      seq_t *sq = &q[rowseq[r]];
      bool leave = sq->pos >= sq->n || (rowseq[r] == 0 && steps == 4);
      if (!leave) {
        r++;
        continue;
      }
      sq->live = false;
      int moved = nc_infer_remove(m, r);
      if (moved >= 0) rowseq[r] = rowseq[moved];
      else r++;
    }
    int B = nc_infer_rows(m);
    if (!B) break;
    int32_t toks[4];
    for (int r = 0; r < B; r++) {
      seq_t *sq = &q[rowseq[r]];
      cr_assert_eq(nc_infer_row_len(m, r), sq->pos);
      toks[r] = sq->tok[sq->pos];
    }
    st = nc_infer_decode(m, toks, lg);
    cr_assert_null(st, "%s", nc_status_msg(st));
    if (nc_infer_tcap(m) != last_tcap) {
      last_tcap = nc_infer_tcap(m);
      snprintf(tcaps + strlen(tcaps), sizeof tcaps - strlen(tcaps), " %lld", (long long)last_tcap);
    }
    for (int r = 0; r < B; r++) {
      seq_t *sq = &q[rowseq[r]];
      double e = err_at(lg + r * V, &sq->full, sq->pos, V);
      cr_assert(e < tol, "%s/%s: sequence %d position %lld (step %d, row %d): rel err %g", name, device, rowseq[r],
                (long long)sq->pos, steps, r, e);
      sq->pos++;
    }
    steps++;
  }
  for (int i = 0; i < 3; i++) nc_tensor_free(&q[i].full);
  free(lg);
  nc_infer_free(m);
  nc_session_free(p);
}

static void scenario(const char *name, int seqlen, const char *device, int64_t n0, int64_t n1, int64_t n2,
                     int64_t prompt0, double tol) {
  scenario_ex(name, seqlen, device, n0, n1, n2, prompt0, tol, false);
}

Test(engine_infer, tiny_interp_matches_full_forward) { scenario("tiny", 0, "interp", 16, 12, 16, 3, 1e-4); }

Test(engine_infer, tiny_all_interp_matches_full_forward) { scenario("tiny-all", 0, "interp", 16, 9, 14, 3, 1e-4); }

// 160 positions: a 70-token prompt makes the cache grow from 16 to 80
// positions (a reallocation and a relayout of the rows already there), the
// cache shrinks back to 16 when that row leaves (the others are at 5 and 9)
// and grows again in chunks of 16 (within the allocation) as they go on;
// windows of 8 slide over most of it.
Test(engine_infer, tiny_all_cache_growth_interp) {
  scenario("tiny-all", 160, "interp", 100, 40, 70, 70, 1e-4);
  cr_assert_str_eq(tcaps, "16 80 16 32 48 64 80");
}

Test(engine_infer, tiny_all_cpu_matches_full_forward) { scenario("tiny-all", 80, "cpu", 80, 20, 70, 3, 2e-4); }

// Prompts of 11, 1 and 5 tokens in one prefill (padded to 11), then decoded
// together: every prefill row and every later step against the full forward.
Test(engine_infer, batched_prefill_matches_full_forward) {
  scenario_ex("tiny-all", 0, "interp", 16, 9, 14, 11, 1e-4, true);
  scenario_ex("tiny-all", 80, "cpu", 60, 20, 70, 11, 2e-4, true);
}

Test(engine_infer, batched_prefill_bad_inputs_are_errors) {
  nc_model_spec s = spec("tiny", 0);
  nc_session *p = params(&s);
  nc_device d;
  cr_assert_null(nc_device_parse("interp", &d));
  nc_infer *m;
  cr_assert_null(nc_infer_new(&s, p, &d, 3, 0, &m));
  float lg[64 * 3];
  int32_t a[4] = {1, 2, 3, 4}, b[2] = {5, 99};  // 99: outside the vocabulary (64)
  const int32_t *pr[2] = {a, b};
  int64_t n[2] = {4, 2};
  int cp[2] = {1, 1};
  nc_status st = nc_infer_prefill_batch(m, 0, pr, n, cp, lg);
  cr_assert(st && strstr(nc_status_msg(st), "0 prompts"), "%s", st ? nc_status_msg(st) : "no error");
  nc_status_free(st);
  st = nc_infer_prefill_batch(m, 2, pr, n, cp, lg);
  cr_assert(st && strstr(nc_status_msg(st), "vocabulary"), "%s", st ? nc_status_msg(st) : "no error");
  nc_status_free(st);
  b[1] = 6;
  cp[1] = 0;
  st = nc_infer_prefill_batch(m, 2, pr, n, cp, lg);
  cr_assert(st && strstr(nc_status_msg(st), "copies"), "%s", st ? nc_status_msg(st) : "no error");
  nc_status_free(st);
  cp[1] = 3;  // 4 rows, 3 free
  st = nc_infer_prefill_batch(m, 2, pr, n, cp, lg);
  cr_assert(st && strstr(nc_status_msg(st), "4 rows wanted"), "%s", st ? nc_status_msg(st) : "no error");
  nc_status_free(st);
  n[0] = 17;  // longer than the cache (16)
  cp[1] = 1;
  st = nc_infer_prefill_batch(m, 2, pr, n, cp, lg);
  cr_assert(st && strstr(nc_status_msg(st), "1..16"), "%s", st ? nc_status_msg(st) : "no error");
  nc_status_free(st);
  cr_assert_eq(nc_infer_rows(m), 0, "a failed prefill adds no row");
  n[0] = 4;
  cp[0] = 2;  // prompt a twice, b once: rows 0, 1 (a) and 2 (b)
  cr_assert_null(nc_infer_prefill_batch(m, 2, pr, n, cp, lg));
  cr_assert_eq(nc_infer_rows(m), 3);
  cr_assert_eq(nc_infer_row_len(m, 0), 4);
  cr_assert_eq(nc_infer_row_len(m, 1), 4);
  cr_assert_eq(nc_infer_row_len(m, 2), 2);
  float one[64];
  nc_infer_clear(m);
  cr_assert_null(nc_infer_prefill(m, b, 2, 1, one));  // b alone: the same logits as its batched row
  for (int v = 0; v < 64; v++) cr_assert_float_eq(one[v], lg[64 + v], 1e-5f * (1 + fabsf(one[v])), "id %d", v);
  nc_infer_free(m);
  nc_session_free(p);
}

Test(engine_infer, bad_inputs_are_errors) {
  nc_model_spec s = spec("tiny", 0);
  nc_session *p = params(&s);
  nc_device d;
  cr_assert_null(nc_device_parse("interp", &d));
  nc_infer *m;
  nc_status bad = nc_infer_new(&s, p, &d, 0, 0, &m);
  cr_assert_not_null(bad);
  cr_assert(strstr(nc_status_msg(bad), "rows 0"), "%s", nc_status_msg(bad));
  nc_status_free(bad);
  cr_assert_null(nc_infer_new(&s, p, &d, 2, 0, &m));
  float lg[64 * 2];
  int32_t toks[20] = {0};
  nc_status st = nc_infer_prefill(m, toks, 0, 1, lg);
  cr_assert_not_null(st);
  nc_status_free(st);
  st = nc_infer_prefill(m, toks, 17, 1, lg);  // longer than the cache (16)
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "1..16"), "%s", nc_status_msg(st));
  nc_status_free(st);
  toks[1] = 64;  // outside the vocabulary
  st = nc_infer_prefill(m, toks, 2, 1, lg);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "vocabulary"), "%s", nc_status_msg(st));
  nc_status_free(st);
  toks[1] = 3;
  st = nc_infer_prefill(m, toks, 2, 3, lg);  // 3 rows of 2
  cr_assert_not_null(st);
  nc_status_free(st);
  cr_assert_null(nc_infer_prefill(m, toks, 16, 1, lg));
  st = nc_infer_decode(m, toks, lg);  // the row is full
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "full"), "%s", nc_status_msg(st));
  nc_status_free(st);
  cr_assert_eq(nc_infer_remove(m, 5), -1);
  cr_assert_eq(nc_infer_remove(m, 0), -1);
  cr_assert_eq(nc_infer_rows(m), 0);
  nc_infer_free(m);
  nc_session_free(p);
}

// Every parallel kernel on both threads, however small (NC_CPU_SERIAL_WORK=0):
// the default runs this tiny model's kernels on the calling thread alone.
Test(engine_infer, tiny_all_cpu_always_parallel) {
  cr_assert_eq(setenv("NC_CPU_SERIAL_WORK", "0", 1), 0);
  scenario("tiny-all", 40, "cpu", 30, 12, 20, 3, 2e-4);
}

// The one-row GEMV decode plan still runs where it is built (not on the CPU):
// the kernel IR evaluator.
Test(engine_infer, tiny_all_eval_matches_full_forward) { scenario("tiny-all", 0, "eval", 12, 6, 10, 3, 2e-4); }

Test(engine_infer, bad_serial_work_env_is_an_error) {
  nc_model_spec s = spec("tiny", 0);
  nc_session *p = params(&s);
  nc_device d;
  cr_assert_null(nc_device_parse("cpu", &d));
  static const char *bad[] = {"abc", "-5", "12x"};
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(setenv("NC_CPU_SERIAL_WORK", bad[i], 1), 0);
    nc_infer *m = NULL;
    nc_status st = nc_infer_new(&s, p, &d, 2, 0, &m);
    cr_assert_not_null(st, "NC_CPU_SERIAL_WORK=%s accepted", bad[i]);
    cr_assert(strstr(nc_status_msg(st), "NC_CPU_SERIAL_WORK") && strstr(nc_status_msg(st), bad[i]), "%s",
              nc_status_msg(st));
    nc_status_free(st);
    cr_assert_null(m);
  }
  nc_session_free(p);
}

// The cache's capacity (Tcap) is the longest row rounded up to 16 positions
// up to 128, to 32 up to 512 and to 64 beyond, capped at max_seq; a decode
// step after a long prompt keeps it, dropping the row shrinks it once the
// rows left need at most half.
Test(engine_infer, cache_capacity_chunks) {
  nc_model_spec s = spec("tiny", 700);
  nc_session *p = params(&s);
  nc_device d;
  cr_assert_null(nc_device_parse("interp", &d));
  nc_infer *m;
  cr_assert_null(nc_infer_new(&s, p, &d, 2, 0, &m));
  cr_assert_eq(nc_infer_tcap(m), 16);
  static int32_t toks[700];
  float *lg = malloc(sizeof(float) * 2 * (size_t)s.vocab_size);
  cr_assert_not_null(lg);
  const int64_t cases[][2] = {{3, 16}, {15, 16}, {16, 32}, {127, 128}, {128, 160}, {200, 224}, {511, 512}, {512, 576},
                              {600, 640}, {699, 700}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    nc_infer_clear(m);
    cr_assert_null(nc_infer_prefill(m, toks, cases[i][0], 1, lg));
    cr_assert_eq(nc_infer_tcap(m), cases[i][1], "prompt %lld: capacity %lld, want %lld", (long long)cases[i][0],
                 (long long)nc_infer_tcap(m), (long long)cases[i][1]);
  }
  // a short row joins the 699-token one; the long row leaves: 5 positions need 16
  cr_assert_null(nc_infer_prefill(m, toks, 4, 1, lg));
  cr_assert_eq(nc_infer_remove(m, 0), 1);
  int32_t next[2] = {1, 1};
  cr_assert_null(nc_infer_decode(m, next, lg));
  cr_assert_eq(nc_infer_tcap(m), 16);
  cr_assert_eq(nc_infer_row_len(m, 0), 5);
  free(lg);
  nc_infer_free(m);
  nc_session_free(p);
}

// nc_session_pack (the engine keeps its weights in one buffer of huge pages):
// every tensor keeps its name, shape and values, the buffer is 2 MiB aligned
// and each tensor 64-byte aligned; the CPU plans give bit-identical logits
// from packed and unpacked weights (batch 1, the skinny GEMM's M = 1 path,
// and 3 rows); tensors put after a pack, and a second pack, work as before.
Test(engine_infer, packed_session_same_values_and_logits) {
  nc_model_spec s = spec("tiny-all", 40);
  nc_session *a = params(&s), *b = params(&s);
  cr_assert_null(nc_session_pack(b));
  cr_assert_eq(nc_session_count(a), nc_session_count(b));
  for (int k = 0; k < nc_session_count(a); k++) {
    const char *name = nc_session_name_at(a, k);
    const nc_tensor *x = nc_session_get(a, name), *y = nc_session_get(b, name);
    cr_assert_not_null(y, "%s lost by the pack", name);
    cr_assert_eq(x->rank, y->rank);
    cr_assert_eq(nc_tensor_nbytes(x), nc_tensor_nbytes(y));
    cr_assert(!memcmp(x->data, y->data, nc_tensor_nbytes(x)), "%s changed by the pack", name);
    cr_assert_eq((uintptr_t)y->data % 64, 0, "%s is not 64-byte aligned", name);
    if (k == 0) cr_assert_eq((uintptr_t)y->data % ((uintptr_t)2 << 20), 0, "the packed buffer is not 2 MiB aligned");
  }
  nc_device d;
  cr_assert_null(nc_device_parse("cpu", &d));
  d.threads = 2;
  nc_infer *ma, *mb;
  cr_assert_null(nc_infer_new(&s, a, &d, 3, 0, &ma));
  cr_assert_null(nc_infer_new(&s, b, &d, 3, 0, &mb));
  int64_t V = s.vocab_size;
  float *la = malloc(sizeof(float) * 3 * (size_t)V), *lb = malloc(sizeof(float) * 3 * (size_t)V);
  cr_assert(la && lb);
  int32_t prompt[7] = {3, 1, 4, 1, 5, 9, 2}, tok[3] = {6, 5, 3};
  for (int rows = 1; rows <= 3; rows += 2) {
    nc_infer_clear(ma);
    nc_infer_clear(mb);
    cr_assert_null(nc_infer_prefill(ma, prompt, 7, rows, la));
    cr_assert_null(nc_infer_prefill(mb, prompt, 7, rows, lb));
    cr_assert(!memcmp(la, lb, sizeof(float) * (size_t)V), "prefill logits differ");
    for (int step = 0; step < 4; step++) {
      cr_assert_null(nc_infer_decode(ma, tok, la));
      cr_assert_null(nc_infer_decode(mb, tok, lb));
      cr_assert(!memcmp(la, lb, sizeof(float) * (size_t)(rows * V)), "%d rows, step %d: logits differ", rows, step);
    }
  }
  nc_infer_free(ma);
  nc_infer_free(mb);
  // a tensor put after the pack has its own buffer; a second pack takes it in too
  cr_assert_null(nc_session_put_scalar(b, "extra", 2.5f));
  cr_assert_null(nc_session_pack(b));
  cr_assert_eq(*(const float *)nc_session_get(b, "extra")->data, 2.5f);
  for (int k = 0; k < nc_session_count(a); k++) {
    const char *name = nc_session_name_at(a, k);
    const nc_tensor *x = nc_session_get(a, name), *y = nc_session_get(b, name);
    cr_assert(!memcmp(x->data, y->data, nc_tensor_nbytes(x)), "%s changed by the second pack", name);
  }
  free(la);
  free(lb);
  nc_session_free(a);
  nc_session_free(b);
}
