// The autotuner's OpenCL templates besides the GEMMs (runtime/tuner.h): the flash-attention blocks
// (knob space ocl.flash) and the loop kernels' work-groups (ocl.loop: class loop, row, reduce).
//
// Flash attention: per distinct attention call of the step (batch, lengths, heads, head dims, causal,
// window), a graph of that attention and its three gradients is compiled for the device as
// runtime/exec.c would (one forward call that keeps its logsumexp, one backward call), with the
// candidate's blocks for every call (nc_ocl_opts.attn_blocks), and run on a profiling queue: the time
// is the device time of all its kernels (bf16 packing, forward, Di, dQ, dK/dV). The default blocks'
// outputs are the reference (checked against the interpreter when the shape is small); every
// candidate's four outputs must match them within the mode's rounding (bf16 tiles 2e-2, fp32 1e-4,
// relative to each output's largest magnitude).
//
// The loop space's work-groups (ocl.loop): per bucket of a class (elementwise loop kernels by
// work-items, row kernels by row length, whole-buffer reductions by element count), a synthetic kernel
// of the bucket's size is timed with each candidate of the class's knob (loop_wg, row_wg,
// reduce_wg); see nc_tf_wg_shape.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/ocl_emit.h"
#include "codegen/tune.h"
#include "ir/build.h"
#include "passes/pass.h"
#include "runtime/kir_eval.h"
#include "runtime/ocl_device.h"
#include "runtime/ocl_tune.h"
#include "runtime/tuner.h"
#include "support/clock.h"

// ---- shapes of a plan -----------------------------------------------------------
nc_status nc_tune_plan_flash(const nc_graph *g, const nc_plan *p, const int64_t *syms, nc_tune_flash_shape **out, int *n) {
  *out = NULL;
  *n = 0;
  nc_tune_flash_shape *v = calloc((size_t)p->nkernels + 1, sizeof *v);
  if (!v) return nc_errorf(NC_E_NOMEM, "out of memory");
  int cnt = 0;
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (!nc_kernel_is_template(k)) continue;
    const nc_kstmt *s = nc_ks_get(k, k->body);
    if (s->tmpl != NC_KT_ATTENTION || s->nargs < 11) continue;
    int64_t args[NC_KERNEL_MAX_ARGS], x[10];
    nc_tune_bind_args(g, k, syms, args);
    for (int a = 0; a < 10; a++) x[a] = nc_kernel_eval_index(k, s->args[a], args);
    nc_tune_flash_shape t = {.s = {.batch = x[0], .tq = x[1], .tk = x[2], .hq = x[3], .hkv = x[4], .causal = x[7] != 0, .window = x[8]},
                             .d = x[5], .dv = x[6], .scale = k->x[s->args[10]].fval};
    if (t.s.batch < 1 || t.s.tq < 1 || t.s.tk < 1 || t.s.hq < 1 || t.s.hkv < 1 || t.s.hq % t.s.hkv || t.d < 1 || t.dv < 1) continue;
    int j = 0;
    while (j < cnt && !(!memcmp(&v[j].s, &t.s, sizeof t.s) && v[j].d == t.d && v[j].dv == t.dv)) j++;
    if (j == cnt) v[cnt++] = t;
    if (x[9]) v[j].bwd++;  // a backward call (the gradients of one attention)
    else v[j].count++;
  }
  *out = v;
  *n = cnt;
  return NC_OK;
}

nc_status nc_tune_plan_buckets(const nc_graph *g, const nc_plan *p, const int64_t *syms, bool gpu, nc_ocl_loop_class cls, nc_tune_wg_shape **out,
                               int *n) {
  *out = NULL;
  *n = 0;
  nc_ocl_knobs kn;
  nc_ocl_knobs_default(gpu, &kn);
  nc_tune_wg_shape *v = calloc(NC_OCL_WG_SLOTS, sizeof *v);
  nc_buf tmp;
  nc_buf_init(&tmp);
  if (!v) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_status st = NC_OK;
  int cnt = 0;
  for (int i = 0; i < p->nkernels && !st; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (nc_kernel_is_template(k)) continue;
    nc_ocl_launch L;
    tmp.len = 0;
    if ((st = nc_ocl_emit_kernel(k, "nck", &kn, &tmp, &L))) break;
    bool want = cls == NC_OCL_LOOP_ROW ? L.row_wg != 0 : cls == NC_OCL_LOOP_REDUCE ? L.reduce_wg != 0 : L.ncollapse && !L.row_wg && !L.reduce_wg;
    if (!want) continue;
    int64_t args[NC_KERNEL_MAX_ARGS], outer = 1, cols = 0;  // outer: the collapsed iterations (work-items, rows)
    nc_tune_bind_args(g, k, syms, args);
    for (int c = 0; c < L.ncollapse; c++) {
      int64_t ext = nc_kernel_eval_index(k, L.end[c], args) - nc_kernel_eval_index(k, L.begin[c], args);
      outer *= ext > 0 ? ext : 0;
    }
    int b;
    if (cls == NC_OCL_LOOP_ROW) {
      nc_ks last = k->body;  // the row's length with the symbols bound: its longest loop
      for (int c = 1; c < L.ncollapse; c++) last = k->s[last].body;
      for (nc_ks s = k->s[last].body; s != NC_KS_NONE; s = k->s[s].next)
        if (k->s[s].kind == NC_KS_FOR) {
          int64_t ext = nc_kernel_eval_index(k, k->s[s].end, args) - nc_kernel_eval_index(k, k->s[s].begin, args);
          if (ext > cols) cols = ext;
        }
      if (outer < 1 || cols < 1) continue;
      b = nc_ocl_row_bucket(nc_ocl_row_cols(k, L.ncollapse));
    } else if (cls == NC_OCL_LOOP_REDUCE) {  // the reduced elements, symbols bound
      outer = nc_kernel_eval_index(k, L.reduce_end, args) - nc_kernel_eval_index(k, L.reduce_begin, args);
      if (outer < 1) continue;
      b = nc_ocl_row_bucket(nc_ocl_reduce_items(k, &L));
    } else {
      if (outer < 1) continue;
      b = nc_ocl_loop_bucket(outer);
    }
    if (b >= NC_OCL_LOOP_BUCKETS) continue;
    int j = 0;
    while (j < cnt && v[j].bucket != b) j++;
    if (j == cnt) v[cnt++] = (nc_tune_wg_shape){.bucket = b};
    v[j].count++;
    int64_t *big = cls == NC_OCL_LOOP_ROW ? &v[j].rows : &v[j].items;
    if (outer > *big) *big = outer;
    if (cols > v[j].cols) v[j].cols = cols;
  }
  nc_buf_free(&tmp);
  if (st) {
    free(v);
    return st;
  }
  *out = v;
  *n = cnt;
  return NC_OK;
}

// ---- evaluation -----------------------------------------------------------------
typedef struct {
  nc_graph *g;          // the graph as lowered (what nc_ocl_run takes)
  nc_plan *p;
  nc_ocl_knobs kn;      // the device defaults with the bf16 mode asked for
  const char *select;
  nc_feed feeds[4];
  nc_tensor in[4];
  int nin, nout;
  nc_tensor ref[4], got[4];
} nc_tf_case;

static void nc_tf_outs_free(nc_tensor *t, int n) {
  for (int i = 0; i < n; i++) nc_tensor_free(&t[i]);
  memset(t, 0, (size_t)n * sizeof *t);
}

static void nc_tf_case_free(nc_tf_case *x) {
  nc_tf_outs_free(x->ref, 4);
  nc_tf_outs_free(x->got, 4);
  for (int i = 0; i < x->nin; i++) nc_tensor_free(&x->in[i]);
  nc_plan_free(x->p);
  nc_graph_free(x->g);
  memset(x, 0, sizeof *x);
}

// Lowers g0 (borrowed) for the OpenCL device dev, as runtime/exec.c does; random inputs.
static nc_status nc_tf_case_init(nc_tf_case *x, const nc_graph *g0, const nc_device *dev, const nc_ocl_knobs *kn, uint64_t seed) {
  x->kn = *kn;
  x->select = dev->select;
  NC_TRY(nc_graph_copy(g0, &x->g));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.patterns_off = nc_device_patterns_off(dev);
  ctx.patterns_force = nc_device_patterns_force(dev);
  const char *passes[] = {"decompose", "dce"};
  NC_TRY(nc_pass_run_pipeline(&x->g, passes, 2, &ctx));
  nc_lower_opts lo = nc_device_lower_opts(dev, &ctx);
  NC_TRY(nc_plan_build(x->g, &lo, &x->p));
  x->nout = nc_graph_noutputs(x->g);
  uint64_t r = seed | 1;
  for (int i = 0; i < x->nin; i++) {
    nc_tensor *t = &x->in[i];
    for (int64_t j = 0; j < nc_tensor_numel(t); j++) {
      r ^= r << 13, r ^= r >> 7, r ^= r << 17;
      ((float *)t->data)[j] = (float)((double)(r >> 11) * 0x1p-53 * 2 - 1) * (i < 2 ? 2.0f : 1.0f);
    }
  }
  return NC_OK;
}

static nc_status nc_tf_input(nc_tf_case *x, nc_graph *g, const char *name, int rank, const int64_t *shape, nc_id *id) {
  nc_dim d[4];
  for (int i = 0; i < rank; i++) d[i] = nc_dim_const(shape[i]);
  *id = nc_leaf(g, NC_OP_INPUT, name, nc_type_make(NC_F32, rank, d));
  NC_TRY(nc_tensor_alloc(&x->in[x->nin], NC_F32, rank, shape));
  x->feeds[x->nin] = (nc_feed){name, &x->in[x->nin]};
  x->nin++;
  return NC_OK;
}

// Compiles x with knobs kn and flash blocks bl (NULL: the defaults).
static nc_status nc_tf_compile(nc_tf_case *x, const nc_ocl_knobs *kn, const nc_ocl_attn_blocks *bl, nc_ocl **c) {
  nc_ocl_opts oo = {.select = x->select, .profile = true, .knobs = kn, .attn_blocks = bl};
  return nc_ocl_compile(x->p, &oo, c);
}

// One warm-up and reps timed runs: *sec the fastest run's device time; outputs into x->got.
static nc_status nc_tf_time(nc_tf_case *x, nc_ocl *c, int reps, double *sec) {
  *sec = INFINITY;
  for (int r = 0; r <= reps; r++) {
    nc_tf_outs_free(x->got, 4);
    NC_TRY(nc_ocl_run(c, x->g, x->p, x->feeds, x->nin, x->got));
    double t = nc_ocl_last_run_seconds(c);
    if (r > 0 && t < *sec) *sec = t;
  }
  return NC_OK;
}

// The default (cdef, fastest *td so far) against the best candidate (cbest, *tb) in 3 interleaved pairs:
// the candidate is kept when it wins at least 2 and its fastest run beats the default's by 2 % (else
// *is_def); *td and *tb take the fastest runs seen.
static nc_status nc_tf_confirm(nc_tf_case *x, nc_ocl *cdef, nc_ocl *cbest, int reps, double *td, double *tb, bool *is_def) {
  int wins = 0;
  for (int rep = 0; rep < 3; rep++) {
    double a, b;
    NC_TRY(nc_tf_time(x, cdef, reps, &a));
    NC_TRY(nc_tf_time(x, cbest, reps, &b));
    if (a < *td) *td = a;
    if (b < *tb) *tb = b;
    wins += b < a;
  }
  *is_def = wins < 2 || !(*tb < *td * 0.98);
  return NC_OK;
}

// Largest |got - ref| / largest |ref| over the outputs (NaN-safe: NaN gives +inf).
static double nc_tf_err(const nc_tensor *got, const nc_tensor *ref, int n) {
  double worst = 0;
  for (int k = 0; k < n; k++) {
    int64_t m = nc_tensor_numel(&ref[k]);
    if (nc_tensor_numel(&got[k]) != m) return INFINITY;
    const float *a = got[k].data, *b = ref[k].data;
    double dmax = 0, rmax = 1e-30;
    for (int64_t i = 0; i < m; i++) {
      double d = fabs((double)a[i] - (double)b[i]);
      if (!(d <= dmax)) dmax = isnan(d) ? INFINITY : d;
      if (fabs((double)b[i]) > rmax) rmax = fabs((double)b[i]);
    }
    if (!(dmax / rmax <= worst)) worst = dmax / rmax;
  }
  return worst;
}

static void nc_tf_date(char *buf, size_t n) {
  time_t now = time(NULL);
  struct tm tmv;
  gmtime_r(&now, &tmv);
  strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tmv);
}

static nc_status nc_tf_record(nc_tunedb *db, const char *device, const char *driver, const nc_knob_space *sp, const void *knobs,
                              nc_tune_result *res) {
  nc_tune_entry e;
  memset(&e, 0, sizeof e);
  snprintf(e.device, sizeof e.device, "%s", device);
  snprintf(e.driver, sizeof e.driver, "%s", driver);
  snprintf(e.kernel, sizeof e.kernel, "%s", res->kernel);
  snprintf(e.shape, sizeof e.shape, "%s", res->shape);
  nc_tune_entry_set_knobs(&e, sp, knobs);
  e.time_us = res->best_us;
  e.default_time_us = res->default_us;
  nc_tf_date(e.date, sizeof e.date);
  NC_TRY(nc_tunedb_put(db, &e));
  res->tuned = true;
  return NC_OK;
}

// The device's default knobs with the bf16 mode: mma.sync on NVIDIA, emulated elsewhere (tests).
static nc_status nc_tf_device(const nc_tune_opts *o, nc_ocl_device_desc *d, nc_ocl_knobs *kn, char *device, char *driver) {
  NC_TRY(nc_ocl_select(o->dev.select, d));
  nc_ocl_knobs_default(d->gpu, kn);
  bool nvidia = strstr(d->vendor, "NVIDIA") || strstr(d->platform_vendor, "NVIDIA");
  if (o->dev.matmul_bf16) kn->gemm_tc = nvidia ? 1 : 2;
  nc_tune_ocl_ids(d, device, 192, driver, 192);
  return NC_OK;
}

// ---- flash attention --------------------------------------------------------------
static nc_status nc_tf_flash_shape(const nc_tune_flash_shape *fs, const nc_tune_opts *o, const nc_ocl_knobs *kn0, double deadline,
                                   nc_tunedb *db, const char *device, const char *driver, nc_tune_result *res) {
  const nc_knob_space *sp = &nc_ocl_flash_knob_space;
  nc_tf_case x;
  memset(&x, 0, sizeof x);
  nc_ocl *cdef = NULL, *cbest = NULL;
  nc_ocl_flash_knobs *tried = NULL;
  int ntried = 0;
  nc_status st = NC_OK;
  nc_graph *g = nc_graph_new("tune_flash");
  if (!g) return nc_errorf(NC_E_NOMEM, "out of memory");
  {
    int64_t sq[4] = {fs->s.batch, fs->s.tq, fs->s.hq, fs->d}, sk[4] = {fs->s.batch, fs->s.tk, fs->s.hkv, fs->d};
    int64_t sv[4] = {fs->s.batch, fs->s.tk, fs->s.hkv, fs->dv}, so[4] = {fs->s.batch, fs->s.tq, fs->s.hq, fs->dv};
    nc_id q, k, v, dout;
    if ((st = nc_tf_input(&x, g, "q", 4, sq, &q)) || (st = nc_tf_input(&x, g, "k", 4, sk, &k)) || (st = nc_tf_input(&x, g, "v", 4, sv, &v)) ||
        (st = nc_tf_input(&x, g, "dout", 4, so, &dout)))
      goto done;
    st = nc_graph_set_output(g, "o", nc_b_attention(g, q, k, v, NC_NONE, fs->s.causal, fs->s.window, fs->scale));
    const char *names[3] = {"dq", "dk", "dv"};
    for (int w = 0; w < 3 && !st; w++)
      st = nc_graph_set_output(g, names[w], nc_b_attention_grad(g, q, k, v, dout, NC_NONE, w, fs->s.causal, fs->s.window, fs->scale));
    if (st || (st = nc_graph_error(g))) {
      st = nc_errorf(nc_status_code(st), "tune: the attention graph of %s: %s", res->shape, nc_status_msg(st));
      goto done;
    }
  }
  if ((st = nc_tf_case_init(&x, g, &o->dev, kn0, (o->seed ? o->seed : 0x5eedull) + (uint64_t)fs->s.tq))) goto done;
  int tc = kn0->gemm_tc, dp = nc_ocl_attn_pad(fs->d), dvp = nc_ocl_attn_pad(fs->dv);
  nc_ocl_flash_knobs def, best, cur;
  nc_ocl_flash_knobs_default(tc, dp, dvp, &def);
  // the default: the reference (against the interpreter when the shape is small)
  double work = (double)fs->s.batch * (double)fs->s.hq * (double)fs->s.tq * (double)fs->s.tk * (double)(fs->d + fs->dv);
  double tol = tc ? 2e-2 : 1e-4, td, tb, t;
  int reps = work > 1e10 ? 3 : 5;
  if ((st = nc_tf_compile(&x, kn0, &def.bl, &cdef)) || (st = nc_tf_time(&x, cdef, reps, &td))) goto done;
  memcpy(x.ref, x.got, sizeof x.ref), memset(x.got, 0, sizeof x.got);
  if (work <= 5e7) {
    nc_tensor want[4] = {0};
    if ((st = nc_interp_run(x.g, x.feeds, x.nin, want))) goto done;
    double e = nc_tf_err(x.ref, want, x.nout);
    nc_tf_outs_free(want, 4);
    if (!(e <= tol)) {
      st = nc_errorf(NC_E_INTERNAL, "%s %s: the default blocks give a wrong result (%.3g of the interpreter, tolerance %.3g)", res->kernel, res->shape, e, tol);
      goto done;
    }
  }
  best = def, tb = td;
  res->tried = 1;
  int cap = 64;
  if (!(tried = malloc((size_t)cap * sizeof *tried))) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  tried[ntried++] = def;
  uint64_t r = (o->seed ? o->seed : 0x5eedull) ^ 0xf1a5ull;
  bool improved = true;
  while (improved && nc_clock_now() < deadline) {
    improved = false;
    int moves[NC_KNOB_MAX * NC_KNOB_MAX_SEARCH][2], nm = 0;
    for (int i = 0; i < sp->nknobs; i++)
      for (int v = 0; v < sp->knobs[i].nsearch; v++)
        if (sp->knobs[i].search[v] != nc_knob_get(sp, &best, i)) moves[nm][0] = i, moves[nm][1] = sp->knobs[i].search[v], nm++;
    for (int i = nm - 1; i > 0; i--) {
      r ^= r << 13, r ^= r >> 7, r ^= r << 17;
      int j = (int)(r % (uint64_t)(i + 1)), t0 = moves[i][0], t1 = moves[i][1];
      moves[i][0] = moves[j][0], moves[i][1] = moves[j][1], moves[j][0] = t0, moves[j][1] = t1;
    }
    for (int mv = 0; mv < nm && nc_clock_now() < deadline; mv++) {
      cur = best;
      nc_knob_set(sp, &cur, moves[mv][0], moves[mv][1]);
      nc_status cst = nc_knob_check(sp, &cur);
      if (cst) {
        nc_status_free(cst);
        res->invalid++;
        continue;
      }
      bool seen = false;
      for (int i = 0; i < ntried && !seen; i++) seen = !memcmp(&tried[i].bl, &cur.bl, sizeof cur.bl);
      if (seen) continue;
      if (ntried == cap) {
        nc_ocl_flash_knobs *p = realloc(tried, (size_t)(cap *= 2) * sizeof *p);
        if (!p) {
          st = nc_errorf(NC_E_NOMEM, "out of memory");
          goto done;
        }
        tried = p;
      }
      tried[ntried++] = cur;
      res->tried++;
      char kb[128];
      nc_knob_format(sp, &cur, kb, sizeof kb);
      nc_ocl *c = NULL;
      nc_status rs = nc_tf_compile(&x, kn0, &cur.bl, &c);
      if (!rs) rs = nc_tf_time(&x, c, reps, &t);
      if (rs) {  // a candidate the device cannot build or run: rejected, not fatal
        nc_tune_progress(o, "  rejected %s: %s\n", kb, nc_status_msg(rs));
        nc_status_free(rs);
        nc_ocl_free(c);
        res->rejected++;
        continue;
      }
      if (o->break_candidates) ((float *)x.got[0].data)[0] = NAN;
      double e = nc_tf_err(x.got, x.ref, x.nout);
      if (!(e <= tol)) {
        nc_tune_progress(o, "  rejected %s: wrong result (%.3g of the default's outputs, tolerance %.3g)\n", kb, e, tol);
        nc_ocl_free(c);
        res->rejected++;
        continue;
      }
      nc_tune_progress(o, "  %s: %.1f us (best so far %.1f us)\n", kb, 1e6 * t, 1e6 * tb);
      if (t < tb * 0.99) {
        nc_ocl_free(cbest);
        cbest = c, best = cur, tb = t, improved = true;
        break;
      }
      nc_ocl_free(c);
    }
  }
  bool is_def = !memcmp(&best.bl, &def.bl, sizeof def.bl);
  if (!is_def && (st = nc_tf_confirm(&x, cdef, cbest, reps, &td, &tb, &is_def))) goto done;
  if (is_def) best = def, tb = td;
  res->default_us = 1e6 * td;
  res->best_us = 1e6 * tb;
  res->is_default = is_def;
  nc_knob_format(sp, &best, res->knobs, sizeof res->knobs);
  st = nc_tf_record(db, device, driver, sp, &best, res);
done:
  nc_ocl_free(cdef);
  nc_ocl_free(cbest);
  free(tried);
  nc_tf_case_free(&x);
  nc_graph_free(g);
  return st;
}

nc_status nc_tune_flash_run(const nc_tune_flash_shape *shapes, int n, const nc_tune_opts *o, nc_tunedb *db, nc_tune_result *res) {
  if (o->dev.kind != NC_DEV_OPENCL) return nc_errorf(NC_E_INVALID, "tune: flash attention is an OpenCL template (device '%s')", nc_device_name(&o->dev));
  double t0 = nc_clock_now(), deadline = t0 + (o->budget_s > 0 ? o->budget_s : 0);
  nc_ocl_device_desc d;
  nc_ocl_knobs kn;
  char device[192], driver[192];
  NC_TRY(nc_tf_device(o, &d, &kn, device, driver));
  nc_tune_progress(o, "tuning %d flash-attention shapes (mode %d) on %s, budget %.1f s\n", n, kn.gemm_tc, device, o->budget_s);
  // largest work first
  int *ord = malloc((size_t)(n > 0 ? n : 1) * sizeof *ord);
  if (!ord) return nc_errorf(NC_E_NOMEM, "out of memory");
  for (int i = 0; i < n; i++) ord[i] = i;
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0; j--) {
      const nc_tune_flash_shape *a = &shapes[ord[j - 1]], *b = &shapes[ord[j]];
      double wa = (double)a->count * a->s.batch * a->s.hq * a->s.tq * a->s.tk, wb = (double)b->count * b->s.batch * b->s.hq * b->s.tq * b->s.tk;
      if (wa >= wb) break;
      int t = ord[j];
      ord[j] = ord[j - 1], ord[j - 1] = t;
    }
  nc_status st = NC_OK;
  for (int ii = 0; ii < n && !st; ii++) {
    const nc_tune_flash_shape *fs = &shapes[ord[ii]];
    nc_tune_result *r = &res[ord[ii]];
    memset(r, 0, sizeof *r);
    nc_ocl_flash_signature(kn.gemm_tc, nc_ocl_attn_pad(fs->d), nc_ocl_attn_pad(fs->dv), r->kernel, sizeof r->kernel);
    nc_ocl_flash_shape_str(&fs->s, r->shape, sizeof r->shape);
    double now = nc_clock_now();
    if (now >= deadline) {
      nc_tune_progress(o, "[flash %d/%d] %s %s: budget spent, skipped\n", ii + 1, n, r->kernel, r->shape);
      continue;
    }
    st = nc_tf_flash_shape(fs, o, &kn, now + (deadline - now) / (n - ii), db, device, driver, r);
    if (!st)
      nc_tune_progress(o, "[flash %d/%d] %s %s x%d: default %.1f us, best %.1f us (%.2fx) %s%s; %d tried, %d rejected, %d invalid (%.1f s)\n", ii + 1,
                     n, r->kernel, r->shape, fs->count, r->default_us, r->best_us, r->default_us / r->best_us, r->is_default ? "default: " : "",
                     r->knobs, r->tried, r->rejected, r->invalid, nc_clock_now() - now);
  }
  free(ord);
  return st;
}

// ---- the loop space's work-groups (ocl.loop: class loop, row, reduce) -----------------------
// Per bucket a synthetic kernel of the bucket's largest size (the class's case below), compiled with
// the default and each candidate value of the class's knob, device time fastest of 5 runs after a
// warm-up, its output checked; the fastest valid one then faces the default in 3 interleaved pairs
// (kept when it wins 2 and by 2 %, as for the other spaces).
//   loop: y = a*b + a over the items; every search value of loop_wg (chosen per launch: the source
//     does not change, a candidate's build is a binary-cache hit); output equal to the default's
//     within 1e-6 of its largest magnitude.
//   row: an RMSNorm of rows x cols (the plan's row kernels are norms, softmaxes and the
//     cross-entropy's rows: a sum or a max over the row, then an elementwise pass), rows capped so
//     the input stays <= 2^24 floats; row_wg is in the source (a build each), so the candidates are
//     the search values and half and twice the default where those are below 32 (PoCL's 4), up to the
//     row length rounded up to a power of two (at least 32); a row's sum changes with the work-group's
//     summation order: within 1e-5 of the default's output.
//   reduce: y = sum(x) over the items (x positive, as in the step's sums of squares: the loss's
//     mean, the gradient and Muon norms), capped at 2^25; reduce_wg is in the source (a build
//     each): the search values and half and twice the default below 32, up to the item count
//     rounded up to a power of two (at least 32); the default's and every candidate's output within
//     1e-4 of the double-precision sum (relative): fp32 sums of up to 2^20 positive values per
//     work-item round to ~3e-5; a lost partial sum (1/1024 of the total or more) fails it.
#define NC_TF_REDUCE_MAX ((int64_t)1 << 25)

static nc_status nc_tf_wg_case(nc_ocl_loop_class cls, const nc_tune_wg_shape *ws, nc_tf_case *x, nc_graph *g, const nc_tune_opts *o,
                               const nc_ocl_knobs *kn0, int64_t *top) {
  nc_id a, b;
  nc_status st;
  *top = 1024;
  if (cls == NC_OCL_LOOP_ELEMENTWISE) {
    int64_t items = ws->items;
    if ((st = nc_tf_input(x, g, "a", 1, &items, &a)) || (st = nc_tf_input(x, g, "b", 1, &items, &b))) return st;
    NC_TRY(nc_graph_set_output(g, "y", nc_op2(g, NC_OP_ADD, nc_op2(g, NC_OP_MUL, a, b), a)));
  } else if (cls == NC_OCL_LOOP_ROW) {
    int64_t cols = ws->cols < 1 ? 1 : ws->cols > ((int64_t)1 << 22) ? (int64_t)1 << 22 : ws->cols;
    int64_t rows = ws->rows < 1 ? 1 : ws->rows, cap = ((int64_t)1 << 24) / cols;
    if (rows > cap) rows = cap > 0 ? cap : 1;
    int64_t shape[2] = {rows, cols};
    NC_TRY(nc_tf_input(x, g, "x", 2, shape, &a));
    NC_TRY(nc_graph_set_output(g, "y", nc_b_rms_norm(g, a, 1e-6)));
    for (*top = 32; *top < cols && *top < 1024;) *top *= 2;
  } else {
    int64_t items = ws->items < 1 ? 1 : ws->items > NC_TF_REDUCE_MAX ? NC_TF_REDUCE_MAX : ws->items;
    NC_TRY(nc_tf_input(x, g, "x", 1, &items, &a));
    NC_TRY(nc_graph_set_output(g, "y", nc_b_reduce(g, NC_OP_REDUCE_SUM, a, 1, false)));
    for (*top = 32; *top < items && *top < 1024;) *top *= 2;
  }
  NC_TRY(nc_graph_error(g));
  NC_TRY(nc_tf_case_init(x, g, &o->dev, kn0, 0x100ull << cls));
  if (cls == NC_OCL_LOOP_REDUCE) {  // positive values; the reference: their sum in double precision
    float *v = x->in[0].data;
    double sum = 0;
    for (int64_t i = 0; i < nc_tensor_numel(&x->in[0]); i++) v[i] = fabsf(v[i]), sum += v[i];
    int64_t one = 1;
    NC_TRY(nc_tensor_alloc(&x->ref[0], NC_F32, 0, &one));
    ((float *)x->ref[0].data)[0] = (float)sum;
  }
  return NC_OK;
}

static nc_status nc_tf_wg_shape(nc_ocl_loop_class cls, const nc_tune_wg_shape *ws, const nc_tune_opts *o, const nc_ocl_knobs *kn0, double deadline,
                                nc_tunedb *db, const char *device, const char *driver, nc_tune_result *res) {
  static const char *knob[3] = {"loop_wg", "row_wg", "reduce_wg"};
  const double tols[3] = {1e-6, 1e-5, 1e-4};
  const nc_knob_space *sp = &nc_ocl_loop_knob_space;
  int iw = nc_knob_find(sp, knob[cls]);
  double tol = tols[cls];
  nc_tf_case x;
  memset(&x, 0, sizeof x);
  nc_ocl *cdef = NULL, *cbest = NULL;
  nc_status st = NC_OK;
  nc_graph *g = nc_graph_new("tune_wg");
  if (!g) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_ocl_knobs def = *kn0, best;
  def.reduce_wg = nc_ocl_reduce_wg_of(kn0);  // the work-group the default gives, recorded as such
  best = def;
  int64_t top;
  if ((st = nc_tf_wg_case(cls, ws, &x, g, o, &def, &top))) goto done;
  double td, tb;
  int reps = 5, dv = nc_knob_get(sp, &def, iw);
  if ((st = nc_tf_compile(&x, &def, NULL, &cdef)) || (st = nc_tf_time(&x, cdef, reps, &td))) goto done;
  if (cls == NC_OCL_LOOP_REDUCE) {  // the default against the double-precision sum too
    double e = nc_tf_err(x.got, x.ref, x.nout);
    if (!(e <= tol)) {
      st = nc_errorf(NC_E_INTERNAL, "%s %s: the default reduce_wg=%d gives a wrong sum (%.3g of the double-precision sum, tolerance %.3g)", res->kernel,
                     res->shape, dv, e, tol);
      goto done;
    }
  } else {
    memcpy(x.ref, x.got, sizeof x.ref), memset(x.got, 0, sizeof x.got);
  }
  tb = td;
  res->tried = 1;
  int cand[NC_KNOB_MAX_SEARCH + 2], nc = 0;
  for (int v = 0; v < sp->knobs[iw].nsearch; v++) cand[nc++] = sp->knobs[iw].search[v];
  if (cls != NC_OCL_LOOP_ELEMENTWISE && dv / 2 < 32 && dv / 2 >= 1) cand[nc++] = dv / 2;  // below the search values (PoCL's defaults)
  if (cls != NC_OCL_LOOP_ELEMENTWISE && dv * 2 < 32) cand[nc++] = dv * 2;
  for (int v = 0; v < nc && nc_clock_now() < deadline; v++) {
    nc_ocl_knobs cur = def;
    nc_knob_set(sp, &cur, iw, cand[v]);
    if (cand[v] == dv || cand[v] > top) continue;
    nc_status cst = nc_knob_check(sp, &cur);
    if (cst) {
      nc_status_free(cst);
      res->invalid++;
      continue;
    }
    res->tried++;
    nc_ocl *c = NULL;
    double t;
    nc_status rst = nc_tf_compile(&x, &cur, NULL, &c);
    if (!rst) rst = nc_tf_time(&x, c, reps, &t);
    if (rst) {  // a candidate the device cannot build or run (work-group too large): rejected, not fatal
      nc_tune_progress(o, "  rejected %s=%d: %s\n", knob[cls], cand[v], nc_status_msg(rst));
      nc_status_free(rst);
      nc_ocl_free(c);
      res->rejected++;
      continue;
    }
    if (o->break_candidates) ((float *)x.got[0].data)[0] = NAN;
    double e = nc_tf_err(x.got, x.ref, x.nout);
    if (!(e <= tol)) {
      nc_tune_progress(o, "  rejected %s=%d: wrong result (%.3g of the %s, tolerance %.3g)\n", knob[cls], cand[v], e,
                     cls == NC_OCL_LOOP_REDUCE ? "double-precision sum" : "default's output", tol);
      nc_ocl_free(c);
      res->rejected++;
      continue;
    }
    nc_tune_progress(o, "  %s=%d: %.1f us (best so far %.1f us)\n", knob[cls], cand[v], 1e6 * t, 1e6 * tb);
    if (t < tb * 0.99) {
      nc_ocl_free(cbest);
      cbest = c, best = cur, tb = t;
    } else nc_ocl_free(c);
  }
  bool is_def = nc_knob_get(sp, &best, iw) == dv;
  if (!is_def && (st = nc_tf_confirm(&x, cdef, cbest, reps, &td, &tb, &is_def))) goto done;
  if (is_def) best = def, tb = td;
  res->default_us = 1e6 * td;
  res->best_us = 1e6 * tb;
  res->is_default = is_def;
  snprintf(res->knobs, sizeof res->knobs, "%s=%d", knob[cls], nc_knob_get(sp, &best, iw));
  st = nc_tf_record(db, device, driver, sp, &best, res);
done:
  nc_ocl_free(cdef);
  nc_ocl_free(cbest);
  nc_tf_case_free(&x);
  nc_graph_free(g);
  return st;
}

nc_status nc_tune_wg_run(nc_ocl_loop_class cls, const nc_tune_wg_shape *shapes, int n, const nc_tune_opts *o, nc_tunedb *db, nc_tune_result *res) {
  static const char *tag[3] = {"loop", "row", "reduce"}, *what[3] = {"loop", "row", "reduction"},
                    *by[3] = {"size", "row-length", "element-count"};
  if (o->dev.kind != NC_DEV_OPENCL) return nc_errorf(NC_E_INVALID, "tune: the %s work-groups are OpenCL knobs (device '%s')", what[cls], nc_device_name(&o->dev));
  double deadline = nc_clock_now() + (o->budget_s > 0 ? o->budget_s : 0);
  nc_ocl_device_desc d;
  nc_ocl_knobs kn;
  char device[192], driver[192];
  NC_TRY(nc_tf_device(o, &d, &kn, device, driver));
  nc_tune_progress(o, "tuning the %s work-group of %d %s buckets on %s, budget %.1f s\n", what[cls], n, by[cls], device, o->budget_s);
  nc_status st = NC_OK;
  for (int i = 0; i < n && !st; i++) {  // (the caller orders the buckets: most launches first)
    nc_tune_result *r = &res[i];
    memset(r, 0, sizeof *r);
    nc_ocl_loop_signature(cls, r->kernel, sizeof r->kernel);
    if (cls == NC_OCL_LOOP_ROW) nc_ocl_row_shape_str(shapes[i].bucket, r->shape, sizeof r->shape);
    else if (cls == NC_OCL_LOOP_REDUCE) nc_ocl_reduce_shape_str(shapes[i].bucket, r->shape, sizeof r->shape);
    else snprintf(r->shape, sizeof r->shape, "items=2^%d", shapes[i].bucket);
    double now = nc_clock_now();
    if (now >= deadline) {
      nc_tune_progress(o, "[%s %d/%d] %s %s: budget spent, skipped\n", tag[cls], i + 1, n, r->kernel, r->shape);
      continue;
    }
    st = nc_tf_wg_shape(cls, &shapes[i], o, &kn, now + (deadline - now) / (n - i), db, device, driver, r);
    char at[64];
    if (cls == NC_OCL_LOOP_ROW) snprintf(at, sizeof at, "%lld x %lld", (long long)shapes[i].rows, (long long)shapes[i].cols);
    else snprintf(at, sizeof at, "%lld items", (long long)shapes[i].items);
    if (!st)
      nc_tune_progress(o, "[%s %d/%d] %s %s x%d (timed at %s): default %.1f us, best %.1f us (%.2fx) %s%s; %d tried, %d rejected\n", tag[cls], i + 1, n,
                     r->kernel, r->shape, shapes[i].count, at, r->default_us, r->best_us, r->default_us / r->best_us, r->is_default ? "default: " : "",
                     r->knobs, r->tried, r->rejected);
  }
  return st;
}
