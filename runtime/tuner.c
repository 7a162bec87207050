// The autotuner's search and its CPU backend (runtime/tuner.h).
#include "runtime/tuner.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/gemm.h"
#include "codegen/gemm_bf16.h"
#include "codegen/jit.h"
#include "ir/dtype.h"
#include "runtime/cpu.h"
#include "runtime/kir_eval.h"
#include "runtime/threadpool.h"
#include "support/clock.h"



// ---- shapes of a plan ---------------------------------------------------------
void nc_tune_bind_args(const nc_graph *g, const nc_kernel *k, const int64_t *syms, int64_t *args) {
  for (int a = 0; a < k->nargs; a++) {
    int s = nc_graph_sym_find(g, k->args[a], strlen(k->args[a]));
    args[a] = s >= 0 ? syms[s] : 0;
  }
}

nc_status nc_tune_plan_shapes(const nc_graph *g, const nc_plan *p, const int64_t *syms, bool cpu_variants, nc_tune_shape **out, int *n) {
  *out = NULL;
  *n = 0;
  nc_tune_shape *v = calloc((size_t)p->nkernels + 1, sizeof *v);
  if (!v) return nc_errorf(NC_E_NOMEM, "out of memory");
  int cnt = 0;
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (!nc_kernel_is_template(k)) continue;
    int64_t args[NC_KERNEL_MAX_ARGS];
    nc_tune_bind_args(g, k, syms, args);
    const nc_kstmt *s = nc_ks_get(k, k->body);
    if (s->tmpl != NC_KT_MATMUL) continue;  // flash attention, scatter_add: not GEMMs
    int64_t x[11] = {0};
    for (int a = 0; a < s->nargs && a < 11; a++) x[a] = nc_kernel_eval_index(k, s->args[a], args);
    bool bf = k->bufs[s->cbufs[0]].dtype == NC_BF16;
    int ta = x[4] ? 1 : 0, tb = x[5] ? 1 : 0, sym = x[9] ? 1 : 0, gv;
    if (cpu_variants)  // as runtime/cpu.c's launch picks the variant
      gv = bf ? 8 + ta * 2 + tb : x[10] == 1 ? 16 + ta * 2 + tb : x[10] == 2 ? 20 + sym * 4 + ta * 2 + tb : sym * 4 + ta * 2 + tb;
    else if (k->bufs[s->cbufs[0]].dtype != NC_F32 || x[10] != 0) continue;  // OpenCL: the plain fp32 GEMM
    else gv = ta * 2 + tb;
    nc_tune_shape t = {.variant = gv, .batch = x[0], .m = x[1], .n = x[2], .k = x[3], .count = 1};
    if (t.batch < 1 || t.m < 1 || t.n < 1 || t.k < 1) continue;
    int j = 0;
    while (j < cnt && !(v[j].variant == t.variant && v[j].batch == t.batch && v[j].m == t.m && v[j].n == t.n && v[j].k == t.k)) j++;
    if (j < cnt) v[j].count++;
    else v[cnt++] = t;
  }
  *out = v;
  *n = cnt;
  return NC_OK;
}

// ---- the reference: sampled positions of C in double --------------------------
typedef struct {
  int64_t q, i, j;
  double ref, bound;  // value and sum |a||b| (the rounding scale)
} nc_tu_sample;

static uint64_t nc_tu_rand(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return *s >> 17;
}

static float nc_tu_op(const float *x, bool bf16) { return bf16 ? nc_bf16_to_f32(nc_f32_to_bf16(*x)) : *x; }

// A(q, i, kk) and B(q, kk, j) of op(A) / op(B) with contiguous batch items.
static double nc_tu_a(const nc_tune_shape *s, const float *a, int64_t q, int64_t i, int64_t kk, bool bf16) {
  bool ta = s->variant & 2;
  return nc_tu_op(&a[q * s->m * s->k + (ta ? kk * s->m + i : i * s->k + kk)], bf16);
}
static double nc_tu_b(const nc_tune_shape *s, const float *b, int64_t q, int64_t kk, int64_t j, bool bf16) {
  bool tb = s->variant & 1;
  return nc_tu_op(&b[q * s->k * s->n + (tb ? j * s->k + kk : kk * s->n + j)], bf16);
}

// e: the addend shapes' E (contiguous like C), else NULL.
static int nc_tu_samples(const nc_tune_shape *s, const float *a, const float *b, const float *e, bool bf16, uint64_t seed,
                         nc_tu_sample *out, int max) {
  int n = 0;
  uint64_t r = seed ^ 0x9e3779b97f4a7c15ull;
  int64_t M = s->m, N = s->n, B = s->batch;
  int64_t fixed[][2] = {{0, 0}, {M - 1, N - 1}, {0, N - 1}, {M - 1, 0}};
  for (int t = 0; t < max; t++) {
    int64_t q = t < 4 ? (t == 1 ? B - 1 : 0) : (int64_t)(nc_tu_rand(&r) % (uint64_t)B), i, j;
    if (t < 4) i = fixed[t][0], j = fixed[t][1];
    else if (t < max / 8) i = M - 1, j = (int64_t)(nc_tu_rand(&r) % (uint64_t)N);        // the last row
    else if (t < max / 4) i = (int64_t)(nc_tu_rand(&r) % (uint64_t)M), j = N - 1;        // the last column
    else i = (int64_t)(nc_tu_rand(&r) % (uint64_t)M), j = (int64_t)(nc_tu_rand(&r) % (uint64_t)N);
    double acc = 0, bound = 0;
    for (int64_t kk = 0; kk < s->k; kk++) {
      double x = nc_tu_a(s, a, q, i, kk, bf16), y = nc_tu_b(s, b, q, kk, j, bf16);
      acc += x * y, bound += fabs(x * y);
    }
    if (e) {  // C = alpha p + beta E
      double ev = e[q * M * N + i * N + j];
      acc = NC_TUNE_ADDEND_ALPHA * acc + NC_TUNE_ADDEND_BETA * ev;
      bound = fabs(NC_TUNE_ADDEND_ALPHA) * bound + fabs(NC_TUNE_ADDEND_BETA * ev);
    }
    out[n++] = (nc_tu_sample){q, i, j, acc, bound};
  }
  return n;
}

// Worst |C - ref| / tolerance over the samples (> 1: wrong). bf16_out: C was
// rounded to bf16 on store (relative 2^-9, allowed 2^-8). ReLU^2 shapes also
// check D = relu(p)^2 (after C in c), its tolerance the first-order 2|p| tol.
static double nc_tu_check(const nc_tune_shape *s, const float *c, bool bf16_out, const nc_tu_sample *sm, int n) {
  double worst = 0;
  size_t nc = (size_t)(s->batch * s->m * s->n);
  for (int t = 0; t < n; t++) {
    size_t at = (size_t)(sm[t].q * s->m * s->n + sm[t].i * s->n + sm[t].j);
    double got = c[at], ref = sm[t].ref;
    double tol = 1e-5 * sm[t].bound + 1e-6 + (bf16_out ? fabs(ref) / 256 : 0);
    double e = isfinite(got) ? fabs(got - ref) / tol : INFINITY;
    if (e > worst) worst = e;
    if (nc_tune_variant_epi(s->variant) == 1) {
      double r = ref > 0 ? ref : 0, gd = c[nc + at], td = 2 * fabs(ref) * tol + tol * tol + 1e-6;
      double ed = isfinite(gd) ? fabs(gd - r * r) / td : INFINITY;
      if (ed > worst) worst = ed;
    }
  }
  return worst;
}

// ---- the search ---------------------------------------------------------------
static double nc_tu_flops(const nc_tune_shape *s) { return 2.0 * (double)s->batch * (double)s->m * (double)s->n * (double)s->k; }

static int nc_tu_cmp_work(const void *x, const void *y) {
  const nc_tune_shape *a = x, *b = y;
  double wa = nc_tu_flops(a) * a->count, wb = nc_tu_flops(b) * b->count;
  return wa < wb ? 1 : wa > wb ? -1 : 0;
}

// Operands for shape s: uniform in [-1, 1); symmetric GEMMs get B = A with A
// symmetric where C = op(A) op(A) needs it.
static void nc_tu_operands(const nc_tune_shape *s, float *a, float *b, uint64_t seed) {
  uint64_t r = seed;
  size_t na = (size_t)(s->batch * s->m * s->k), nb = (size_t)(s->batch * s->k * s->n);
  for (size_t i = 0; i < na; i++) a[i] = (float)((double)(nc_tu_rand(&r) % 2000001) / 1e6 - 1.0);
  for (size_t i = 0; i < nb; i++) b[i] = (float)((double)(nc_tu_rand(&r) % 2000001) / 1e6 - 1.0);
  if (!nc_tune_variant_sym(s->variant)) return;
  bool ta = s->variant & 2, tb = s->variant & 1;
  if (ta == tb && s->m == s->k)  // C = A A or A^T A^T: A symmetric
    for (int64_t q = 0; q < s->batch; q++)
      for (int64_t i = 0; i < s->m; i++)
        for (int64_t j = 0; j < i; j++) a[q * s->m * s->m + j * s->m + i] = a[q * s->m * s->m + i * s->m + j];
  memcpy(b, a, na * sizeof *a);
}

typedef struct {
  char k[256];
} nc_tu_knobs;

void nc_tune_progress(const nc_tune_opts *o, const char *fmt, ...) {
  if (!o->progress) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(o->progress, fmt, ap);
  va_end(ap);
  fflush(o->progress);
}

// Times knobs on the prepared shape and checks its output. *sec < 0: wrong
// (rejected); an error from the backend is returned.
static nc_status nc_tu_eval(nc_tune_backend *be, const nc_tune_shape *s, const void *knobs, bool corrupt, float *c, size_t nc,
                            const nc_tu_sample *sm, int nsm, int reps, double *sec, double *err) {
  NC_TRY(be->run(be, s, knobs, reps, sec, c));
  if (corrupt) c[nc - 1] += 1.0f + fabsf(c[nc - 1]);
  *err = nc_tu_check(s, c, be->bf16_out, sm, nsm);
  if (!(*err <= 1.0)) *sec = -1;
  return NC_OK;
}

static nc_status nc_tu_shape(nc_tune_backend *be, const nc_tune_shape *s, const nc_tune_opts *o, double deadline, nc_tunedb *db,
                             nc_tune_result *res) {
  const nc_knob_space *sp = be->space;
  size_t na = (size_t)(s->batch * s->m * s->k), nb = (size_t)(s->batch * s->k * s->n), nc = (size_t)(s->batch * s->m * s->n);
  int epi = nc_tune_variant_epi(s->variant);
  size_t ne = epi == 2 ? nc : 0;
  if (epi == 1) nc *= 2;  // C then D
  float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c = malloc(nc * sizeof *c), *ev = ne ? malloc(ne * sizeof *ev) : NULL;
  enum { NSAMPLES = 256 };
  nc_tu_sample *sm = malloc(NSAMPLES * sizeof *sm);
  nc_tu_knobs *tried = NULL;
  int ntried = 0, captried = 0;
  nc_status st = NC_OK;
  if (!a || !b || !c || !sm || (ne && !ev)) {
    st = nc_errorf(NC_E_NOMEM, "out of memory for a %lldx%lldx%lld GEMM", (long long)s->m, (long long)s->n, (long long)s->k);
    goto done;
  }
  uint64_t seed = o->seed ? o->seed : 0x5eedull;
  nc_tu_operands(s, a, b, seed + (uint64_t)s->m * 31 + (uint64_t)s->n * 17 + (uint64_t)s->k);
  if (ne) {  // E: uniform in [-1, 1), symmetric with sym (the GEMM's contract)
    uint64_t r = seed ^ 0xe5eedull;
    for (size_t i = 0; i < ne; i++) ev[i] = (float)((double)(nc_tu_rand(&r) % 2000001) / 1e6 - 1.0);
    if (nc_tune_variant_sym(s->variant) && s->m == s->n)
      for (int64_t q = 0; q < s->batch; q++)
        for (int64_t i = 0; i < s->m; i++)
          for (int64_t j = 0; j < i; j++) ev[q * s->m * s->m + j * s->m + i] = ev[q * s->m * s->m + i * s->m + j];
  }
  int nsm = nc_tu_samples(s, a, b, ev, be->bf16, seed, sm, NSAMPLES);
  if (epi && !be->prepare_e) {
    st = nc_errorf(NC_E_UNSUPPORTED, "%s %s: this backend has no GEMM epilogues", res->kernel, res->shape);
    goto done;
  }
  if ((st = be->prepare(be, s, a, na, b, nb, nc))) goto done;
  if (ne && (st = be->prepare_e(be, ev, ne))) goto done;
  // reps: enough for ~20 ms of timing per candidate, at least 2
  double est = nc_tu_flops(s) / 50e9;
  int reps = est > 0.01 ? 2 : est > 0.002 ? 4 : 8;
  nc_tu_knobs best, cur;
  memset(&best, 0, sizeof best);
  memcpy(best.k, be->defaults, sp->size);
  double best_t, err;
  if ((st = nc_tu_eval(be, s, best.k, false, c, nc, sm, nsm, reps, &best_t, &err))) goto done;
  if (best_t < 0) {
    st = nc_errorf(NC_E_INTERNAL, "%s %s: the default knobs give a wrong result (error %.3g x tolerance)", res->kernel, res->shape, err);
    goto done;
  }
  res->tried = 1;
  if (!(tried = malloc(64 * sizeof *tried))) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  captried = 64;
  tried[ntried++] = best;
  double first_default = best_t;
  // the same move order for every shape of a variant: candidates compiled for
  // one shape are timed on the next at no compile cost
  uint64_t r = seed ^ ((uint64_t)s->variant * 0x9e3779b97f4a7c15ull);
  bool improved = true;
  while (improved && nc_clock_now() < deadline) {
    improved = false;
    // every single-knob change of best, in a random order
    int moves[NC_KNOB_MAX * NC_KNOB_MAX_SEARCH][2], nm = 0;
    for (int i = 0; i < sp->nknobs; i++)
      for (int v = 0; v < sp->knobs[i].nsearch; v++)
        if (sp->knobs[i].search[v] != nc_knob_get(sp, best.k, i)) moves[nm][0] = i, moves[nm][1] = sp->knobs[i].search[v], nm++;
    for (int i = nm - 1; i > 0; i--) {
      int j = (int)(nc_tu_rand(&r) % (uint64_t)(i + 1)), t0 = moves[i][0], t1 = moves[i][1];
      moves[i][0] = moves[j][0], moves[i][1] = moves[j][1], moves[j][0] = t0, moves[j][1] = t1;
    }
    for (int mv = 0; mv < nm && nc_clock_now() < deadline; mv++) {
      cur = best;
      nc_knob_set(sp, cur.k, moves[mv][0], moves[mv][1]);
      nc_status cst = nc_knob_check(sp, cur.k);
      if (cst) {
        nc_status_free(cst);
        res->invalid++;
        continue;
      }
      bool seen = false;
      for (int t = 0; t < ntried && !seen; t++) seen = !memcmp(tried[t].k, cur.k, sp->size);
      if (seen) continue;
      if (ntried == captried) {
        int cap = captried ? 2 * captried : 64;
        nc_tu_knobs *p = realloc(tried, (size_t)cap * sizeof *p);
        if (!p) {
          st = nc_errorf(NC_E_NOMEM, "out of memory");
          goto done;
        }
        tried = p, captried = cap;
      }
      tried[ntried++] = cur;
      double t;
      if ((st = nc_tu_eval(be, s, cur.k, o->break_candidates, c, nc, sm, nsm, reps, &t, &err))) {
        // a candidate the device cannot build or run (resources): rejected, not fatal
        char kb[256];
        nc_knob_format(sp, cur.k, kb, sizeof kb);
        nc_tune_progress(o, "  rejected %s: %s\n", kb, nc_status_msg(st));
        nc_status_free(st);
        st = NC_OK;
        res->tried++, res->rejected++;
        continue;
      }
      res->tried++;
      if (t < 0) {
        char kb[256];
        nc_knob_format(sp, cur.k, kb, sizeof kb);
        nc_tune_progress(o, "  rejected %s: wrong result (error %.3g x tolerance)\n", kb, err);
        res->rejected++;
        continue;
      }
      if (t < best_t * 0.99) {
        best = cur, best_t = t, improved = true;
        break;  // new neighbourhood
      }
    }
  }
  // the default and the winner again, interleaved (the machine's load shifts)
  bool is_def = !memcmp(best.k, be->defaults, sp->size);
  double td = first_default, tb = best_t;
  if (!is_def) {  // kept when it wins at least 2 of 3 interleaved pairs and the fastest runs by 2 %
    int wins = 0;
    for (int rep = 0; rep < 3; rep++) {
      double x, y;
      if ((st = nc_tu_eval(be, s, be->defaults, false, c, nc, sm, nsm, reps, &x, &err))) goto done;
      if ((st = nc_tu_eval(be, s, best.k, false, c, nc, sm, nsm, reps, &y, &err))) goto done;
      if (x > 0 && x < td) td = x;
      if (y > 0 && y < tb) tb = y;
      wins += y > 0 && y < x;
    }
    if (wins < 2 || !(tb < td * 0.98)) is_def = true, tb = td;
  }
  if (is_def) memcpy(best.k, be->defaults, sp->size);
  res->default_us = 1e6 * td;
  res->best_us = 1e6 * tb;
  res->is_default = is_def;
  nc_knob_format(sp, best.k, res->knobs, sizeof res->knobs);
  nc_tune_entry e;
  memset(&e, 0, sizeof e);
  snprintf(e.device, sizeof e.device, "%s", be->device);
  snprintf(e.driver, sizeof e.driver, "%s", be->driver);
  snprintf(e.kernel, sizeof e.kernel, "%s", res->kernel);
  snprintf(e.shape, sizeof e.shape, "%s", res->shape);
  nc_tune_entry_set_knobs(&e, sp, best.k);
  e.time_us = res->best_us;
  e.default_time_us = res->default_us;
  time_t now = time(NULL);
  struct tm tmv;
  gmtime_r(&now, &tmv);
  strftime(e.date, sizeof e.date, "%Y-%m-%dT%H:%M:%SZ", &tmv);
  if ((st = nc_tunedb_put(db, &e))) goto done;
  res->tuned = true;
done:
  free(a);
  free(b);
  free(c);
  free(ev);
  free(sm);
  free(tried);
  return st;
}

nc_status nc_tune_run(const nc_tune_shape *shapes, int n, const nc_tune_opts *o, nc_tunedb *db, nc_tune_result *res) {
  double t0 = nc_clock_now(), deadline = t0 + (o->budget_s > 0 ? o->budget_s : 0);
  nc_tune_backend be;
  memset(&be, 0, sizeof be);
  if (o->dev.kind == NC_DEV_CPU) NC_TRY(nc_tune_backend_cpu(&o->dev, o->wall_time, &be));
  else if (o->dev.kind == NC_DEV_OPENCL) NC_TRY(nc_tune_backend_ocl(&o->dev, &be));
  else return nc_errorf(NC_E_INVALID, "tune: device '%s' has no tunable kernels (use cpu, cpu:avx2 or opencl[:N])", nc_device_name(&o->dev));
  nc_tune_shape *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
  if (!order) {
    be.release(&be);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  memcpy(order, shapes, (size_t)n * sizeof *order);
  qsort(order, (size_t)n, sizeof *order, nc_tu_cmp_work);
  nc_tune_progress(o, "tuning %d GEMM shapes on %s (%s), budget %.1f s\n", n, be.device, be.driver, o->budget_s);
  nc_status st = NC_OK;
  for (int i = 0; i < n && !st; i++) {
    int ri = 0;  // results in the caller's order
    while (ri < n && !(shapes[ri].variant == order[i].variant && shapes[ri].batch == order[i].batch && shapes[ri].m == order[i].m &&
                       shapes[ri].n == order[i].n && shapes[ri].k == order[i].k && shapes[ri].count == order[i].count))
      ri++;
    nc_tune_result *r = &res[ri];
    memset(r, 0, sizeof *r);
    if (be.select) be.select(&be, order[i].variant);  // the variant's space and defaults (CPU: fp32 or bf16)
    be.kernel(&be, order[i].variant, r->kernel, sizeof r->kernel);
    nc_tune_shape_str(order[i].batch, order[i].m, order[i].n, order[i].k, r->shape, sizeof r->shape);
    double now = nc_clock_now();
    if (now >= deadline) {
      nc_tune_progress(o, "[%d/%d] %s %s: budget spent, skipped\n", i + 1, n, r->kernel, r->shape);
      continue;
    }
    double share = (deadline - now) / (n - i);
    st = nc_tu_shape(&be, &order[i], o, now + share, db, r);
    if (!st)
      nc_tune_progress(o, "[%d/%d] %s %s x%d: default %.1f us, best %.1f us (%.2fx) %s%s; %d tried, %d rejected (%.1f s)\n", i + 1, n,
                     r->kernel, r->shape, order[i].count, r->default_us, r->best_us, r->best_us > 0 ? r->default_us / r->best_us : 0,
                     r->is_default ? "default: " : "", r->knobs, r->tried, r->rejected, nc_clock_now() - now);
  }
  free(order);
  be.release(&be);
  return st;
}

// ---- the CPU backend ------------------------------------------------------------
// Every GEMM variant of runtime/cpu.h: fp32 (plain, symmetric, ReLU^2, addend: one
// compiled function per (ta, tb, knobs), the epilogue switched in its argument block,
// as the executor runs it) and bf16 buffers (codegen/gemm_bf16.c with bf16 memory).
typedef struct {
  nc_jit *jit;
  nc_pool *pool;
  int nthreads;
  bool bf16_ok;        // the CPU runs the bf16 GEMM (AVX512_BF16, not avx2_only)
  nc_gemm_knobs def32, def16;  // the executor's defaults (runtime/cpu_jit.c)
  const float *a, *b;  // the prepared operands (owned by the search)
  const float *e;      // the addend's E (owned by the search)
  uint16_t *a16, *b16; // bf16 shapes: the operands in bf16 (as the bf16 model's buffers)
  float *c;            // C (fp32), C then D (ReLU^2), or bf16 C (uint16_t) of the prepared shape
  size_t nc;           // floats the search reads back
  struct nc_tu_cfn {
    int code;  // nc_cpu_gemm_code of the variant
    nc_gemm_knobs kn;
    nc_gemm_fn fn;
  } *fns;
  int nfns, capfns;
  float *work;
  size_t work_size;
  float *cw;  // bf16 shapes with K > kc: the fp32 shadow of C (nc_gemm_args.cw), as the executor passes it
  size_t cw_size;  // floats
  bool wall;  // time with the wall clock instead of the tasks' thread CPU time
  double *tcpu;
} nc_tu_cpu;

typedef struct {
  nc_gemm_fn fn;
  nc_gemm_args a;
  int nthreads;
  double *tcpu;  // per task: its thread's CPU time in the call
} nc_tu_cpu_task;

static double nc_tu_thread_now(void) {  // the calling thread's CPU time
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void nc_tu_cpu_task_run(void *ctx, int task, int thread) {
  nc_tu_cpu_task *t = ctx;
  (void)thread;
  double t0 = nc_tu_thread_now();
  t->fn(&t->a, task, t->nthreads);
  t->tcpu[task] = nc_tu_thread_now() - t0;
}

static void nc_tu_cpu_kernel(const nc_tune_backend *b, int variant, char *buf, size_t n) {
  const nc_tu_cpu *x = b->ctx;
  const nc_gemm_knobs *d = (const nc_gemm_knobs *)b->defaults;
  nc_tune_cpu_kernel(variant, d->vw, x->nthreads, buf, n);
}

// The space and defaults of variant's function: the bf16 GEMM's for bf16 buffers.
static void nc_tu_cpu_select(nc_tune_backend *b, int variant) {
  nc_tu_cpu *x = b->ctx;
  bool bf = nc_tune_variant_bf16(variant);
  const nc_gemm_knobs *d = bf ? &x->def16 : &x->def32;
  memcpy(b->defaults, d, sizeof *d);
  b->space = bf ? &nc_gemm_bf16_knob_space : &nc_gemm_knob_space;
  b->bf16 = b->bf16_out = bf;
}

static nc_status nc_tu_cpu_prepare(nc_tune_backend *b, const nc_tune_shape *s, const float *a, size_t na, const float *bm, size_t nb,
                                   size_t nc) {
  nc_tu_cpu *x = b->ctx;
  x->a = a, x->b = bm, x->nc = nc, x->e = NULL;
  free(x->c), free(x->a16), free(x->b16);
  x->a16 = x->b16 = NULL;
  x->c = aligned_alloc(64, (nc * sizeof(float) + 63) / 64 * 64);
  if (!x->c) return nc_errorf(NC_E_NOMEM, "out of memory");
  if (!nc_tune_variant_bf16(s->variant)) return NC_OK;
  if (!x->bf16_ok) return nc_errorf(NC_E_UNSUPPORTED, "tune: this CPU has no AVX512_BF16: the bf16 GEMM cannot run here");
  x->a16 = malloc(na * sizeof *x->a16), x->b16 = malloc(nb * sizeof *x->b16);
  if (!x->a16 || !x->b16) return nc_errorf(NC_E_NOMEM, "out of memory");
  for (size_t i = 0; i < na; i++) x->a16[i] = nc_f32_to_bf16(a[i]);
  for (size_t i = 0; i < nb; i++) x->b16[i] = nc_f32_to_bf16(bm[i]);
  return NC_OK;
}

static nc_status nc_tu_cpu_prepare_e(nc_tune_backend *b, const float *e, size_t ne) {
  (void)ne;
  ((nc_tu_cpu *)b->ctx)->e = e;
  return NC_OK;
}

static nc_status nc_tu_cpu_fn(nc_tu_cpu *x, int variant, const nc_gemm_knobs *kn, nc_gemm_fn *out) {
  int code = nc_cpu_gemm_code(variant);
  for (int i = 0; i < x->nfns; i++)
    if (x->fns[i].code == code && !memcmp(&x->fns[i].kn, kn, sizeof *kn)) {
      *out = x->fns[i].fn;
      return NC_OK;
    }
  if (x->nfns == x->capfns) {
    int cap = x->capfns ? 2 * x->capfns : 32;
    struct nc_tu_cfn *p = realloc(x->fns, (size_t)cap * sizeof *p);
    if (!p) return nc_errorf(NC_E_NOMEM, "out of memory");
    x->fns = p, x->capfns = cap;
  }
  char name[48];
  snprintf(name, sizeof name, "nc_tune_gemm_%d", x->nfns);
  bool bf = nc_tune_variant_bf16(variant);
  nc_gemm_spec gs = {.name = name, .ta = (variant >> 1) & 1, .tb = variant & 1, .knobs = *kn, .bf16_io = bf};
  NC_TRY(bf ? nc_gemm_bf16_compile(x->jit, &gs, out) : nc_gemm_compile(x->jit, &gs, out));
  x->fns[x->nfns++] = (struct nc_tu_cfn){code, *kn, *out};
  return NC_OK;
}

static nc_status nc_tu_cpu_run(nc_tune_backend *b, const nc_tune_shape *s, const void *knobs, int reps, double *sec, float *c) {
  nc_tu_cpu *x = b->ctx;
  const nc_gemm_knobs *kn = knobs;
  bool bf = nc_tune_variant_bf16(s->variant);
  int epi = nc_tune_variant_epi(s->variant);
  nc_gemm_fn fn;
  NC_TRY(nc_tu_cpu_fn(x, s->variant, kn, &fn));
  size_t ws = bf ? nc_gemm_bf16_workspace_size(kn, x->nthreads) : nc_gemm_workspace_size(kn, x->nthreads);
  if (ws > x->work_size) {
    free(x->work);
    x->work_size = 0;
    if (!(x->work = aligned_alloc(64, (ws + 63) / 64 * 64))) return nc_errorf(NC_E_NOMEM, "out of memory for the GEMM workspace");
    x->work_size = ws;
  }
  bool ta = s->variant & 2, tb = s->variant & 1;
  nc_tu_cpu_task t;
  memset(&t, 0, sizeof t);
  t.fn = fn;
  t.tcpu = x->tcpu;
  // as the executor does (runtime/cpu.c): small launches run on one thread
  double work = (double)s->batch * (double)s->m * (double)s->n * (double)s->k;
  t.nthreads = work < (double)NC_CPU_SERIAL_WORK_DEFAULT ? 1 : x->nthreads;
  size_t ncell = (size_t)(s->batch * s->m * s->n);
  t.a = (nc_gemm_args){.a = bf ? (const float *)x->a16 : x->a, .b = bf ? (const float *)x->b16 : x->b, .c = x->c, .m = s->m,
                       .n = s->n, .k = s->k, .lda = ta ? s->m : s->k, .ldb = tb ? s->k : s->n, .ldc = s->n, .batch = s->batch,
                       .stride_a = s->m * s->k, .stride_b = s->k * s->n, .stride_c = s->m * s->n, .alpha = 1.0f, .beta = 0.0f,
                       .work = x->work, .sym = nc_tune_variant_sym(s->variant)};
  if (epi == 1) t.a.relu2 = 1, t.a.d = x->c + ncell;  // the training form: p kept in C, relu(p)^2 into D
  if (epi == 2) t.a.e = x->e, t.a.alpha = NC_TUNE_ADDEND_ALPHA, t.a.beta = NC_TUNE_ADDEND_BETA;
  if (bf && s->k > kn->kc) {  // as the executor's launch (runtime/cpu.c)
    if (ncell > x->cw_size) {
      free(x->cw);
      x->cw_size = 0;
      if (!(x->cw = malloc(ncell * sizeof *x->cw)))
        return nc_errorf(NC_E_NOMEM, "out of memory for the fp32 accumulator of a bf16 GEMM (%zu floats)", ncell);
      x->cw_size = ncell;
    }
    t.a.cw = x->cw;
  }
  // NaN (fp32 and bf16 alike): a candidate that skips part of C cannot pass on an earlier result
  memset(x->c, 0xff, x->nc * sizeof *x->c);
  // the split the executor's launch would run (runtime/cpu.c): dynamic where it is (never for bf16)
  size_t slen = bf ? 0 : nc_gemm_sync_want(kn, t.nthreads, s->batch, s->m, s->n, t.a.sym);
  int64_t *sync = slen ? calloc(slen, sizeof *sync) : NULL;
  if (slen && !sync) return nc_errorf(NC_E_NOMEM, "out of memory for the GEMM's sync words");
  t.a.sync = sync;
  double best = INFINITY;
  for (int r = 0; r <= reps; r++) {
    if (sync) memset(sync, 0, slen * sizeof *sync);
    double t0 = nc_clock_now();
    nc_status st = nc_pool_run(x->pool, t.nthreads, nc_tu_cpu_task_run, &t);
    if (st) {
      free(sync);
      return st;
    }
    // the critical path in CPU time: the slowest task's own thread CPU time,
    // which leaves out what other processes on a loaded machine take (and
    // still shows a badly balanced split)
    double dt = nc_clock_now() - t0;
    if (!x->wall) {
      dt = 0;
      for (int i = 0; i < t.nthreads; i++) dt = t.tcpu[i] > dt ? t.tcpu[i] : dt;
    }
    if (r > 0 && dt < best) best = dt;
  }
  free(sync);
  *sec = best;
  if (bf) {
    const uint16_t *h = (const uint16_t *)x->c;
    for (size_t i = 0; i < ncell; i++) c[i] = nc_bf16_to_f32(h[i]);
  } else {
    memcpy(c, x->c, x->nc * sizeof *c);
  }
  return NC_OK;
}

static void nc_tu_cpu_release(nc_tune_backend *b) {
  nc_tu_cpu *x = b->ctx;
  if (!x) return;
  nc_pool_free(x->pool);
  nc_jit_free(x->jit);
  free(x->fns);
  free(x->c);
  free(x->a16);
  free(x->b16);
  free(x->work);
  free(x->cw);
  free(x->tcpu);
  free(x);
  b->ctx = NULL;
}

nc_status nc_tune_backend_cpu(const nc_device *d, bool wall, nc_tune_backend *out) {
  memset(out, 0, sizeof *out);
  nc_tu_cpu *x = calloc(1, sizeof *x);
  if (!x) return nc_errorf(NC_E_NOMEM, "out of memory");
  out->ctx = x;
  x->wall = wall;
  out->release = nc_tu_cpu_release;
  nc_jit_options jo = {.avx2_only = d->avx2_only};
  nc_status st = nc_jit_create(&jo, &x->jit);
  if (!st) st = nc_pool_new(d->threads > 0 ? d->threads : nc_pool_default_threads(), &x->pool);
  if (st) {
    nc_tu_cpu_release(out);
    return nc_status_prefix(st, "tune on %s: ", nc_device_name(d));
  }
  x->nthreads = nc_pool_nthreads(x->pool);
  if (!(x->tcpu = calloc((size_t)x->nthreads, sizeof *x->tcpu))) {
    nc_tu_cpu_release(out);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  const nc_host_cpu *hc = nc_jit_cpu(x->jit);
  x->def32 = nc_gemm_knobs_default(hc);  // as runtime/cpu_jit.c
  x->def16 = nc_gemm_bf16_knobs_default(hc);
  x->bf16_ok = !d->avx2_only && nc_gemm_bf16_supported(hc);
  out->select = nc_tu_cpu_select;
  nc_tu_cpu_select(out, 0);
  nc_tune_cpu_ids(hc, out->device, sizeof out->device, out->driver, sizeof out->driver);
  out->kernel = nc_tu_cpu_kernel;
  out->prepare = nc_tu_cpu_prepare;
  out->prepare_e = nc_tu_cpu_prepare_e;
  out->run = nc_tu_cpu_run;
  return NC_OK;
}
