// The compiled training step and evaluation graphs of one model (trainer.h).
#include "pipeline/trainer.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/model_io.h"
#include "models/gpt.h"
#include "support/clock.h"

// Params with fewer elements are replicated across ranks (nanochat: AdamW
// tensors < 1024 elements are all-reduced, not sharded).
#define NC_TR_SMALL 1024
#define NC_TR_BUCKET (INT64_C(1) << 22)

// Data parallel: one nonblocking collective over tensors with the same
// owner, packed in flat[off .. off+n).
typedef struct {
  int root;          // owner rank; -1: replicated (all-reduced, everyone applies)
  int first, count;  // tensors order[first .. first+count)
  size_t off, n;
  int32_t ready;     // the accumulate graph's kernel after which its last gradient is final
} nc_tr_bucket;

struct nc_trainer {
  nc_trainer_opts o;
  nc_session *sess;
  nc_graph *g_step, *g_acc, *g_loss, *g_logits;  // g_step: this rank's optimizer-only graph when data parallel
  nc_exec *x_step, *x_acc, *x_loss, *x_logits;
  bool dp;               // data parallel: accumulate, reduce to owners, apply, broadcast
  int *owner;            // dp: per param, its rank (-1: replicated)
  int *order;            // dp: param indices, bucket by bucket
  nc_tr_bucket *buckets;
  int nbuckets;
  nc_dist_reqs *reqs;    // dp: one slot per bucket, and one for the loss sums
  float *flat;           // dp: every gradient, bucket by bucket (from nc_exec_host_alloc: pinned on OpenCL); this
                         // rank's grad.<param> are views of it (the reductions land where the optimizer reads)
  float *pflat;          // the params, laid out as flat (pinned on OpenCL, where the session's params are views of
                         // it: broadcasts land in them, uploads and reads run at full speed); NULL: not pinned
  size_t total;          // elements of flat
  void **dst;            // dp overlap: per output of the accumulate graph, where the hook's read puts it
  nc_param_desc *state;  // dp: the optimizer state this rank holds
  int nstate;
  nc_trainer_dp_stats stats;  // dp
  int64_t *numel;        // dp: per param
  size_t *poff;          // dp: per param, its offset in flat
  int *pbucket;          // dp: per param, its bucket
  int *acc_out;          // dp: per output of the accumulate graph, its param (-1: another output)
  int *left;             // dp overlap: per bucket, gradients not yet in flat this step
  int issued;            // dp: buckets issued this step (they go in bucket order)
  bool overlap;          // dp: buckets issued from the accumulate graph's run hook (backward)
  nc_param_desc *params;
  int nparams;
  int32_t *in, *tg;  // (B,T) micro-batch staging
  double compile_s;
};

static int nc_tr_index(const nc_trainer *t, const char *name) {
  for (int i = 0; i < t->nparams; i++)
    if (!strcmp(t->params[i].name, name)) return i;
  return -1;
}

// The params this rank updates: its own and the replicated ones.
static bool nc_tr_mine(const nc_param_desc *p, void *ctx) {
  const nc_trainer *t = ctx;
  int i = nc_tr_index(t, p->name);
  return i >= 0 && (t->owner[i] < 0 || t->owner[i] == t->o.dist->rank);
}

static nc_status nc_tr_put_i32(nc_session *s, const char *name, const int32_t *v, int64_t B, int64_t T) {
  nc_tensor t;
  int64_t shape[2] = {B, T};
  NC_TRY(nc_tensor_alloc(&t, NC_I32, 2, shape));
  memcpy(t.data, v, (size_t)(B * T) * sizeof(int32_t));
  return nc_session_put(s, name, &t);
}

static nc_status nc_tr_zero(nc_session *s, const char *name, const nc_param_desc *d, bool only_missing) {
  const nc_tensor *have = nc_session_get(s, name);
  if (have && only_missing) return NC_OK;
  if (have && have->data) {
    memset(have->data, 0, nc_tensor_nbytes(have));
    return NC_OK;
  }
  nc_tensor z;
  NC_TRY(nc_tensor_alloc(&z, NC_F32, d->rank, d->shape));
  return nc_session_put(s, name, &z);
}

// Data parallel: who owns which param (nc_dist_partition), and the buffers
// of the collectives. The buckets come once the accumulate graph exists
// (nc_tr_buckets).
static nc_status nc_tr_plan(nc_trainer *t) {
  int n = t->nparams, W = t->o.dist->world;
  int64_t total = 0;
  t->numel = malloc(sizeof(int64_t) * (size_t)n);
  t->owner = malloc(sizeof(int) * (size_t)n);
  t->order = malloc(sizeof(int) * (size_t)n);
  t->buckets = calloc((size_t)n, sizeof *t->buckets);  // at most one per tensor
  t->poff = malloc(sizeof(size_t) * (size_t)n);
  t->pbucket = malloc(sizeof(int) * (size_t)n);
  t->left = malloc(sizeof(int) * (size_t)n);
  if (!t->numel || !t->owner || !t->order || !t->buckets || !t->poff || !t->pbucket || !t->left)
    return nc_errorf(NC_E_NOMEM, "trainer: out of memory for the sharding plan");
  for (int i = 0; i < n; i++) {
    t->numel[i] = t->params[i].rank == 2 ? t->params[i].shape[0] * t->params[i].shape[1] : t->params[i].shape[0];
    total += t->numel[i];
    if (t->numel[i] > INT_MAX)
      return nc_errorf(NC_E_UNSUPPORTED, "trainer: param '%s' has %lld elements, more than one MPI collective carries", t->params[i].name,
                       (long long)t->numel[i]);
  }
  NC_TRY(nc_dist_partition(t->numel, n, W, NC_TR_SMALL, t->owner));
  t->total = (size_t)total;
  return NC_OK;
}

// Data parallel: the buckets, in the order the backward pass finishes their
// gradients. ready[i] = the accumulate graph's kernel after which gradient
// new.acc.<param i> is final (devices without run hooks: the reverse param
// order, as backward ends with the first layers); rank 0's values are
// broadcast, so every rank builds the same buckets even if its plan differs.
// Each owner (and the replicated params) fills its own open bucket in ready
// order, closed at bucket_elems; buckets go in the order of their last
// gradient, their tensors laid out in flat one bucket after the other.
static nc_status nc_tr_buckets(nc_trainer *t) {
  int n = t->nparams, W = t->o.dist->world;
  int64_t cap = t->o.bucket_elems, total = 0;
  for (int i = 0; i < n; i++) total += t->numel[i];
  if (cap <= 0) cap = total / 16 < 4096 ? 4096 : total / 16 > NC_TR_BUCKET ? NC_TR_BUCKET : total / 16;  // ~16 buckets
  const nc_graph *ga = nc_exec_graph(t->x_acc);
  int nout = nc_graph_noutputs(ga);
  int32_t *ready = malloc(sizeof(int32_t) * (size_t)n);
  int *sorted = malloc(sizeof(int) * (size_t)n), *open = malloc(sizeof(int) * (size_t)(W + 1)), *perm = malloc(sizeof(int) * (size_t)n);
  int64_t *fill = calloc((size_t)n, sizeof *fill);
  t->acc_out = malloc(sizeof(int) * (size_t)(nout > 0 ? nout : 1));
  nc_status st = ready && sorted && open && perm && fill && t->acc_out ? NC_OK : nc_errorf(NC_E_NOMEM, "trainer: out of memory for the buckets");
  bool hooks = !st && nc_exec_output_kernel(t->x_acc, 0) != -2;
  for (int i = 0; i < n && !st; i++) ready[i] = hooks ? -1 : n - 1 - i;
  for (int k = 0; k < nout && !st; k++) {
    const char *name = nc_graph_output_name(ga, k);
    t->acc_out[k] = strncmp(name, "new.acc.", 8) ? -1 : nc_tr_index(t, name + 8);
    if (hooks && t->acc_out[k] >= 0) ready[t->acc_out[k]] = nc_exec_output_kernel(t->x_acc, k);
  }
  if (!st) st = nc_dist_bcast_i32(t->o.dist, ready, (size_t)n, 0);
  if (!st) {
    for (int i = 0; i < n; i++) sorted[i] = i;
    for (int i = 1; i < n; i++)  // by ready kernel, then index (insertion sort: ~100 params)
      for (int j = i; j > 0 && (ready[sorted[j]] < ready[sorted[j - 1]] || (ready[sorted[j]] == ready[sorted[j - 1]] && sorted[j] < sorted[j - 1])); j--) {
        int x = sorted[j];
        sorted[j] = sorted[j - 1], sorted[j - 1] = x;
      }
    for (int r = 0; r <= W; r++) open[r] = -1;
    t->nbuckets = 0;
    for (int j = 0; j < n; j++) {
      int i = sorted[j], r = t->owner[i] + 1, b = open[r];
      if (b < 0 || fill[b] + t->numel[i] > cap) {
        b = open[r] = t->nbuckets++;
        t->buckets[b] = (nc_tr_bucket){.root = t->owner[i]};
      }
      fill[b] += t->numel[i];
      t->buckets[b].ready = ready[i];
      t->pbucket[i] = b;
    }
    // bucket order: by the ready kernel of their last gradient (then creation)
    for (int b = 0; b < t->nbuckets; b++) perm[b] = b;
    for (int b = 1; b < t->nbuckets; b++)
      for (int j = b; j > 0 && t->buckets[perm[j]].ready < t->buckets[perm[j - 1]].ready; j--) {
        int x = perm[j];
        perm[j] = perm[j - 1], perm[j - 1] = x;
      }
    nc_tr_bucket *nb = calloc((size_t)(t->nbuckets > 0 ? t->nbuckets : 1), sizeof *nb);
    int *rank_of = malloc(sizeof(int) * (size_t)(t->nbuckets > 0 ? t->nbuckets : 1));
    if (!nb || !rank_of) st = nc_errorf(NC_E_NOMEM, "trainer: out of memory for the buckets");
    int k = 0;
    size_t off = 0;
    for (int q = 0; q < t->nbuckets && !st; q++) {
      int b = perm[q];
      rank_of[b] = q;
      nb[q] = t->buckets[b];
      nb[q].first = k, nb[q].count = 0, nb[q].off = off, nb[q].n = 0;
      for (int j = 0; j < n; j++) {
        int i = sorted[j];
        if (t->pbucket[i] != b) continue;
        t->order[k++] = i;
        t->poff[i] = off;
        nb[q].count++, nb[q].n += (size_t)t->numel[i], off += (size_t)t->numel[i];
      }
    }
    for (int i = 0; i < n && !st; i++) t->pbucket[i] = rank_of[t->pbucket[i]];
    if (!st) memcpy(t->buckets, nb, sizeof *nb * (size_t)t->nbuckets);
    free(nb), free(rank_of);
  }
  free(ready), free(sorted), free(open), free(perm), free(fill);
  if (!st) st = nc_dist_reqs_new(t->nbuckets + 1, &t->reqs);
  return st;
}

// The host buffers of the transfers, from the accumulate graph's device
// (nc_exec_host_alloc: pinned on OpenCL). Data parallel: flat, with this
// rank's grad.<param> as views of it. OpenCL (data parallel or with
// accumulation): pflat, with the session's params as views of it, so reads
// and uploads of params run from pinned memory and (data parallel) the
// broadcasts land in the params themselves. nc_trainer_free gives the
// session its own copies back.
static nc_status nc_tr_buffers(nc_trainer *t) {
  int n = t->nparams;
  bool pin = t->x_acc && nc_exec_keeps(t->x_acc);
  for (int i = 0; i < n && pin; i++) {
    const nc_tensor *x = nc_session_get(t->sess, t->params[i].name);
    pin = x && x->data && x->dtype == NC_F32;
  }
  if (!t->dp && !pin) return NC_OK;
  if (!t->dp) {  // one param after the other
    if (!(t->poff = malloc(sizeof(size_t) * (size_t)(n > 0 ? n : 1)))) return nc_errorf(NC_E_NOMEM, "trainer: out of memory");
    size_t off = 0;
    for (int i = 0; i < n; i++) t->poff[i] = off, off += (size_t)nc_tensor_numel(nc_session_get(t->sess, t->params[i].name));
    t->total = off;
  }
  size_t bytes = sizeof(float) * (t->total > 0 ? t->total : 1);
  void *mem = NULL;
  char name[160];
  if (t->dp) {
    NC_TRY(nc_exec_host_alloc(t->x_acc, bytes, &mem));
    t->flat = mem;
    for (int i = 0; i < n; i++) {  // this rank's gradients: where its reductions land
      if (!nc_tr_mine(&t->params[i], t)) continue;
      snprintf(name, sizeof name, "grad.%s", t->params[i].name);
      const nc_tensor *g = nc_session_get(t->sess, name);
      if (!g || nc_tensor_numel(g) != t->numel[i]) return nc_errorf(NC_E_INTERNAL, "trainer: '%s' is missing", name);
      nc_tensor w = nc_tensor_wrap(t->flat + t->poff[i], NC_F32, g->rank, g->shape);
      NC_TRY(nc_session_put(t->sess, name, &w));
    }
    const nc_graph *ga = nc_exec_graph(t->x_acc);
    int nout = nc_graph_noutputs(ga);
    if (!(t->dst = calloc((size_t)(nout > 0 ? nout : 1), sizeof *t->dst))) return nc_errorf(NC_E_NOMEM, "trainer: out of memory");
    for (int k = 0; k < nout; k++)
      if (t->acc_out[k] >= 0) t->dst[k] = t->flat + t->poff[t->acc_out[k]];
  }
  if (pin) {
    NC_TRY(nc_exec_host_alloc(t->x_acc, bytes, &mem));
    t->pflat = mem;
    for (int i = 0; i < n; i++) {
      const nc_tensor *x = nc_session_get(t->sess, t->params[i].name);
      memcpy(t->pflat + t->poff[i], x->data, nc_tensor_nbytes(x));
      nc_tensor w = nc_tensor_wrap(t->pflat + t->poff[i], NC_F32, x->rank, x->shape);
      NC_TRY(nc_session_put(t->sess, t->params[i].name, &w));
    }
  }
  return NC_OK;
}

// Before the buffers go: every session tensor that is a view of them gets
// its own copy of its current value.
static void nc_tr_unpin(nc_trainer *t) {
  char name[160];
  for (int i = 0; i < t->nparams && (t->flat || t->pflat); i++)
    for (int g = 0; g < 2; g++) {
      snprintf(name, sizeof name, "%s%s", g ? "grad." : "", t->params[i].name);
      const nc_tensor *x = nc_session_get(t->sess, name);
      if (!x || !x->data || x->owned) continue;
      const float *d = x->data;
      bool in = (t->flat && d >= t->flat && d < t->flat + t->total) || (t->pflat && d >= t->pflat && d < t->pflat + t->total);
      if (!in) continue;
      nc_status st = nc_session_put_copy(t->sess, name, x);
      if (st) {
        fprintf(stderr, "trainer: keeping '%s': %s\n", name, nc_status_msg(st));
        nc_status_free(st);
      }
    }
  if (t->x_acc) {
    if (t->flat) nc_exec_host_free(t->x_acc, t->flat);
    if (t->pflat) nc_exec_host_free(t->x_acc, t->pflat);
  } else {
    free(t->flat);
  }
  t->flat = t->pflat = NULL;
}

nc_status nc_trainer_open(const nc_trainer_opts *o, nc_session *sess, nc_trainer **out) {
  if (o->B < 1 || o->T < 1 || o->grad_accum < 1)
    return nc_errorf(NC_E_INVALID, "trainer: batch %lld x %lld with %lld micro-steps", (long long)o->B, (long long)o->T,
                     (long long)o->grad_accum);
  nc_trainer *t = calloc(1, sizeof *t);
  if (!t) return nc_errorf(NC_E_NOMEM, "trainer: out of memory");
  t->o = *o;
  t->sess = sess;
  nc_status st = NC_OK;
  t->in = malloc((size_t)(o->B * o->T) * sizeof(int32_t));
  t->tg = malloc((size_t)(o->B * o->T) * sizeof(int32_t));
  if (!t->in || !t->tg) st = nc_errorf(NC_E_NOMEM, "trainer: out of memory for a %lld x %lld batch", (long long)o->B, (long long)o->T);
  if (!st) st = nc_gpt_params(o->spec, &t->params, &t->nparams);
  for (int i = 0; i < t->nparams && !st; i++)
    if (!nc_session_get(sess, t->params[i].name)) st = nc_errorf(NC_E_INVALID, "trainer: the session lacks param '%s'", t->params[i].name);
  t->dp = o->dist && o->dist->world > 1;
  if (!st && t->dp) st = nc_tr_plan(t);
  // optimizer state: all of it, or (data parallel) this rank's share only
  nc_param_desc *sd = NULL;
  int ns = 0;
  if (!st) st = nc_train_state_descs_only(o->spec, &o->oc, t->dp ? nc_tr_mine : NULL, t, &sd, &ns);
  for (int i = 0; i < ns && !st; i++) st = nc_tr_zero(sess, sd[i].name, &sd[i], true);
  if (t->dp) t->state = sd, t->nstate = ns;
  else free(sd);
  bool any_mine = !t->dp;
  for (int i = 0; t->dp && !st && i < t->nparams; i++) any_mine |= nc_tr_mine(&t->params[i], t);
  nc_train_opts to = {.kind = t->dp ? NC_TRAIN_APPLY : NC_TRAIN_STEP, .with_acc = o->grad_accum > 1,
                      .only = t->dp ? nc_tr_mine : NULL, .only_ctx = t};
  if (!st && any_mine) st = nc_train_build(o->spec, &o->oc, &to, &t->g_step);
  if (!st && any_mine) st = nc_exec_new(t->g_step, &o->device, &t->x_step);
  for (int i = 0; t->dp && i < t->nparams && !st; i++) {
    if (!nc_tr_mine(&t->params[i], t)) continue;
    char name[160];
    snprintf(name, sizeof name, "grad.%s", t->params[i].name);
    st = nc_tr_zero(sess, name, &t->params[i], false);
  }
  if (!st && (o->grad_accum > 1 || t->dp)) {
    nc_train_opts ta = {.kind = NC_TRAIN_ACCUMULATE};
    st = nc_train_build(o->spec, &o->oc, &ta, &t->g_acc);
    if (!st) st = nc_exec_new(t->g_acc, &o->device, &t->x_acc);
    for (int i = 0; i < t->nparams && !st; i++) {
      char name[160];
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      st = nc_tr_zero(sess, name, &t->params[i], false);
    }
  }
  if (!st && t->dp) st = nc_tr_buckets(t);  // in the order backward finishes the gradients
  if (!st && t->dp) t->overlap = !o->no_overlap && nc_exec_output_kernel(t->x_acc, 0) != -2;
  if (!st) st = nc_tr_buffers(t);
  nc_gpt_opts lo = {.with_loss = true};
  if (!st) st = nc_gpt_build(o->spec, &lo, &t->g_loss);
  if (!st) st = nc_exec_new(t->g_loss, &o->device, &t->x_loss);
  nc_gpt_opts go = {.with_logits = true};
  if (!st) st = nc_gpt_build(o->spec, &go, &t->g_logits);
  if (!st) st = nc_exec_new(t->g_logits, &o->device, &t->x_logits);
  if (st) {
    nc_trainer_free(t);
    return st;
  }
  t->compile_s = (t->x_step ? nc_exec_compile_seconds(t->x_step) : 0) + (t->x_acc ? nc_exec_compile_seconds(t->x_acc) : 0) +
                 nc_exec_compile_seconds(t->x_loss) + nc_exec_compile_seconds(t->x_logits);
  *out = t;
  return NC_OK;
}

void nc_trainer_free(nc_trainer *t) {
  if (!t) return;
  nc_tr_unpin(t);
  nc_exec_free(t->x_step), nc_exec_free(t->x_acc), nc_exec_free(t->x_loss), nc_exec_free(t->x_logits);
  nc_graph_free(t->g_step), nc_graph_free(t->g_acc), nc_graph_free(t->g_loss), nc_graph_free(t->g_logits);
  free(t->params);
  free(t->dst);
  free(t->owner), free(t->order), free(t->buckets), free(t->state);
  free(t->numel), free(t->poff), free(t->pbucket), free(t->acc_out), free(t->left);
  nc_dist_reqs_free(t->reqs);
  free(t->in);
  free(t->tg);
  free(t);
}

double nc_trainer_compile_seconds(const nc_trainer *t) { return t->compile_s; }

static float nc_tr_scalar(const nc_session *s, const char *name) {
  const nc_tensor *x = nc_session_get(s, name);
  return x && x->data ? *(const float *)x->data : NAN;
}

// Copies tensor <prefix><param> of every param of bucket b to (to_flat) or
// from base (flat or pflat), in flat's layout; nothing to copy where the
// tensor is a view of base there.
static nc_status nc_tr_pack(nc_trainer *t, const nc_tr_bucket *b, const char *prefix, bool to_flat, float *base) {
  double t0 = nc_clock_now();
  char name[160];
  size_t off = b->off;
  for (int j = b->first; j < b->first + b->count; j++) {
    const nc_param_desc *p = &t->params[t->order[j]];
    snprintf(name, sizeof name, "%s%s", prefix, p->name);
    const nc_tensor *x = nc_session_get(t->sess, name);
    if (!x || !x->data || x->dtype != NC_F32) return nc_errorf(NC_E_INTERNAL, "data parallel: tensor '%s' is missing", name);
    size_t n = (size_t)nc_tensor_numel(x);
    if (x->data == (void *)(base + off)) {
    } else if (to_flat) {
      memcpy(base + off, x->data, n * sizeof(float));
    } else {
      memcpy(x->data, base + off, n * sizeof(float));
    }
    off += n;
    NC_TRY(nc_dist_progress(t->reqs, NULL));  // the collectives in flight move between copies (and device reads)
  }
  t->stats.pack_s += nc_clock_now() - t0;
  return NC_OK;
}

static nc_status nc_tr_wait(nc_trainer *t, int *slot) {
  double t0 = nc_clock_now();
  nc_status st = nc_dist_waitany(t->reqs, slot);
  t->stats.wait_s += nc_clock_now() - t0;
  return st;
}

// Starts bucket b's reduction (its gradients are in flat): to its owner, or
// to every rank when replicated.
static nc_status nc_tr_issue(nc_trainer *t, int b) {
  const nc_tr_bucket *bk = &t->buckets[b];
  float *buf = t->flat + bk->off;
  const nc_dist *d = t->o.dist;
  t->stats.collectives++;
  return bk->root < 0 ? nc_dist_iallreduce_f32(d, buf, bk->n, t->reqs, b) : nc_dist_ireduce_f32(d, buf, bk->n, bk->root, t->reqs, b);
}

// The accumulate graph's run hook during a rank's last micro-batch: each
// final gradient goes to flat, and every bucket whose gradients are all
// there is issued (in bucket order, the same on every rank); between kernels
// the collectives in flight progress.
static nc_status nc_tr_hook(void *ctx, int k, const nc_tensor *v) {
  nc_trainer *t = ctx;
  if (k < 0) return t->issued > 0 ? nc_dist_progress(t->reqs, NULL) : NC_OK;
  int i = t->acc_out[k];
  if (i < 0) return NC_OK;
  double t0 = nc_clock_now();
  if (!v->data || v->dtype != NC_F32 || nc_tensor_numel(v) != t->numel[i])
    return nc_errorf(NC_E_INTERNAL, "data parallel: gradient of '%s' has the wrong shape", t->params[i].name);
  if (v->data != (void *)(t->flat + t->poff[i])) memcpy(t->flat + t->poff[i], v->data, sizeof(float) * (size_t)t->numel[i]);
  t->left[t->pbucket[i]]--;
  nc_status st = NC_OK;
  while (!st && t->issued < t->nbuckets && t->left[t->issued] == 0) {
    st = nc_tr_issue(t, t->issued++);
    if (!st) t->stats.early++;
  }
  t->stats.pack_s += nc_clock_now() - t0;
  t->stats.hook_s += nc_clock_now() - t0;
  return st;
}

// After the gradients: the loss sums all-reduced, this rank's buckets
// unpacked to grad.<param> as they complete, its optimizer graph with
// grad_scale, then every owner broadcasts its updated params. Every bucket
// has been issued. Any error leaves collectives in flight: the caller ends
// the job.
static nc_status nc_tr_dp_finish(nc_trainer *t, double sums[2], double gscale, const double lr[NC_GROUP_COUNT],
                                 const double wd[NC_GROUP_COUNT], double momentum, int64_t step) {
  const nc_dist *d = t->o.dist;
  NC_TRY(nc_dist_iallreduce_f64(d, sums, 2, t->reqs, t->nbuckets));
  t->stats.collectives++;
  // the buckets this rank applies are unpacked as they complete; reductions
  // rooted at other ranks may still be in flight while this rank applies
  int need = 1;  // the loss sums
  for (int b = 0; b < t->nbuckets; b++) need += t->buckets[b].root < 0 || t->buckets[b].root == d->rank;
  while (need > 0) {
    int k;
    NC_TRY(nc_tr_wait(t, &k));
    if (k < 0) return nc_errorf(NC_E_INTERNAL, "data parallel: %d reductions never completed", need);
    bool mine = k == t->nbuckets || t->buckets[k].root < 0 || t->buckets[k].root == d->rank;
    need -= mine;
    if (mine && k < t->nbuckets) NC_TRY(nc_tr_pack(t, &t->buckets[k], "grad.", false, t->flat));
  }
  // this rank's optimizer graph: its own params and the replicated ones
  if (t->x_step) {
    nc_train_scalar sc[NC_TRAIN_NSCALARS];
    nc_train_scalars(&t->o.oc, lr, wd, momentum, step, gscale, sc);
    for (int i = 0; i < NC_TRAIN_NSCALARS; i++) NC_TRY(nc_session_put_scalar(t->sess, sc[i].name, sc[i].value));
    double ta = nc_clock_now();
    NC_TRY(nc_session_run_exec(t->sess, t->x_step));
    t->stats.apply_s += nc_clock_now() - ta;
  }
  {  // the reductions this rank only sent to must finish before flat is reused
    double tw = nc_clock_now();
    NC_TRY(nc_dist_waitall(t->reqs));
    t->stats.wait_s += nc_clock_now() - tw;
  }
  // every owner broadcasts its updated params, bucket by bucket: with pflat
  // straight from and into the params' own memory (the receivers' host
  // copies made current first, so that no later read from a device
  // overwrites what arrives)
  float *pbuf = t->pflat ? t->pflat : t->flat;
  for (int b = 0; b < t->nbuckets && t->pflat; b++) {
    const nc_tr_bucket *bk = &t->buckets[b];
    for (int j = bk->first; bk->root >= 0 && bk->root != d->rank && j < bk->first + bk->count; j++)
      if (!nc_session_get(t->sess, t->params[t->order[j]].name)) return nc_errorf(NC_E_INTERNAL, "data parallel: param '%s' is missing", t->params[t->order[j]].name);
  }
  for (int b = 0; b < t->nbuckets; b++) {
    const nc_tr_bucket *bk = &t->buckets[b];
    if (bk->root < 0) continue;
    if (bk->root == d->rank) NC_TRY(nc_tr_pack(t, bk, "", true, pbuf));
    NC_TRY(nc_dist_ibcast_f32(d, pbuf + bk->off, bk->n, bk->root, t->reqs, b));
    t->stats.collectives++;
  }
  for (int k;;) {
    NC_TRY(nc_tr_wait(t, &k));
    if (k < 0) break;
    if (t->buckets[k].root != d->rank) NC_TRY(nc_tr_pack(t, &t->buckets[k], "", false, pbuf));
  }
  return NC_OK;
}

static nc_status nc_trainer_step_dp(nc_trainer *t, nc_batch_fn next, void *ctx, const double lr[NC_GROUP_COUNT],
                                     const double wd[NC_GROUP_COUNT], double momentum, int64_t step, double *loss) {
  const nc_dist *d = t->o.dist;
  int64_t K = t->o.grad_accum, M = K * d->world, last = (K - 1) * d->world + d->rank;  // this rank's last micro-batch
  char name[160];
  for (int i = 0; i < t->nparams; i++) {  // where the accumulators are (on the device after an overlapped step)
    snprintf(name, sizeof name, "acc.%s", t->params[i].name);
    NC_TRY(nc_session_zero(t->sess, name));
  }
  t->issued = 0;
  for (int b = 0; b < t->nbuckets; b++) t->left[b] = t->buckets[b].count;
  double sums[2] = {0, 0}, t0 = nc_clock_now(), hook0 = t->stats.hook_s;  // loss sum, micro-batches
  for (int64_t m = 0; m < M; m++) {
    NC_TRY(next(ctx, t->in, t->tg));  // every rank reads every micro-batch: the same stream everywhere
    if (m % d->world != d->rank) continue;
    NC_TRY(nc_tr_put_i32(t->sess, "tokens", t->in, t->o.B, t->o.T));
    NC_TRY(nc_tr_put_i32(t->sess, "targets", t->tg, t->o.B, t->o.T));
    bool hook = t->overlap && m == last;  // 1. gradients: reduced while backward still runs
    if (hook) NC_TRY(nc_exec_set_hook_into(t->x_acc, nc_tr_hook, t, t->dst));  // gradients land in flat
    nc_status st = nc_session_run_exec(t->sess, t->x_acc);
    if (hook) nc_status_free(nc_exec_set_hook_into(t->x_acc, NULL, NULL, NULL));
    NC_TRY(st);
    sums[0] += nc_tr_scalar(t->sess, "loss"), sums[1] += 1;
  }
  t->stats.compute_s += nc_clock_now() - t0 - (t->stats.hook_s - hook0);
  t->stats.steps++;
  // without the hook (or for gradients it did not see): each bucket packed
  // and issued in turn, the next one packed while the last one travels
  for (; t->issued < t->nbuckets; t->issued++) {
    NC_TRY(nc_tr_pack(t, &t->buckets[t->issued], "acc.", true, t->flat));
    NC_TRY(nc_tr_issue(t, t->issued));
  }
  NC_TRY(nc_tr_dp_finish(t, sums, 1.0 / (double)M, lr, wd, momentum, step));
  *loss = sums[0] / sums[1];
  if (!isfinite(*loss)) return nc_errorf(NC_E_INVALID, "training diverged at step %lld: loss is %g", (long long)step, *loss);
  return NC_OK;
}

// Data-parallel weighted step: this rank's sum_k w_k g_k (every batch through
// the accumulate graph) into flat, summed over the ranks into the owners'
// grad.<param>, applied with grad_scale 1. A step happens when some rank has
// a nonzero weight (decided together).
static nc_status nc_trainer_step_weighted_dp(nc_trainer *t, const nc_wbatch *b, int n, const double lr[NC_GROUP_COUNT],
                                             const double wd[NC_GROUP_COUNT], double momentum, int64_t step) {
  double nonzero = 0;
  for (int k = 0; k < n; k++) nonzero += b[k].weight != 0;
  NC_TRY(nc_dist_allreduce_f64(t->o.dist, &nonzero, 1));
  if (nonzero == 0) return NC_OK;  // every weight of every rank is zero: no gradient, no step
  size_t total = t->buckets[t->nbuckets - 1].off + t->buckets[t->nbuckets - 1].n;
  memset(t->flat, 0, sizeof(float) * total);
  char name[160];
  double t0 = nc_clock_now();
  for (int k = 0; k < n; k++) {
    if (b[k].weight == 0) continue;
    for (int i = 0; i < t->nparams; i++) {
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      NC_TRY(nc_tr_zero(t->sess, name, &t->params[i], false));
    }
    NC_TRY(nc_tr_put_i32(t->sess, "tokens", b[k].inputs, b[k].B, b[k].T));
    NC_TRY(nc_tr_put_i32(t->sess, "targets", b[k].targets, b[k].B, b[k].T));
    NC_TRY(nc_session_run_exec(t->sess, t->x_acc));
    float w = (float)b[k].weight;
    for (int i = 0; i < t->nparams; i++) {
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      const nc_tensor *g = nc_session_get(t->sess, name);
      if (!g || !g->data || nc_tensor_numel(g) != t->numel[i]) return nc_errorf(NC_E_INTERNAL, "weighted step: '%s' is missing", name);
      const float *gv = g->data;
      float *dst = t->flat + t->poff[i];
      for (int64_t j = 0; j < t->numel[i]; j++) dst[j] += w * gv[j];
    }
  }
  t->stats.compute_s += nc_clock_now() - t0;
  t->stats.steps++;
  for (t->issued = 0; t->issued < t->nbuckets; t->issued++) NC_TRY(nc_tr_issue(t, t->issued));
  double sums[2] = {0, 0};
  NC_TRY(nc_tr_dp_finish(t, sums, 1.0, lr, wd, momentum, step));
  for (int i = 0; i < t->nparams; i++) {  // the accumulators start from zero again
    snprintf(name, sizeof name, "acc.%s", t->params[i].name);
    NC_TRY(nc_tr_zero(t->sess, name, &t->params[i], false));
  }
  return NC_OK;
}

bool nc_trainer_sharded(const nc_trainer *t) { return t->dp; }

nc_status nc_trainer_save_optim(const nc_trainer *t, const char *dir, int64_t step) {
  if (!t->dp) return NC_OK;
  return nc_model_ckpt_save_optim_rank(dir, step, t->o.dist->rank, t->sess, t->state, t->nstate);
}

nc_status nc_trainer_load_optim(nc_trainer *t, const char *dir, int64_t step) {
  if (!t->dp) return NC_OK;
  return nc_model_ckpt_load_optim_rank(dir, step, t->o.dist->rank, t->o.dist->world, t->sess, t->state, t->nstate);
}

void nc_trainer_dp_stats_get(const nc_trainer *t, nc_trainer_dp_stats *out) { *out = t->stats; }

nc_status nc_trainer_step(nc_trainer *t, nc_batch_fn next, void *ctx, const double lr[NC_GROUP_COUNT],
                          const double wd[NC_GROUP_COUNT], double momentum, int64_t step, double *loss) {
  if (t->dp) return nc_trainer_step_dp(t, next, ctx, lr, wd, momentum, step, loss);
  int64_t K = t->o.grad_accum;
  nc_train_scalar sc[NC_TRAIN_NSCALARS];
  nc_train_scalars(&t->o.oc, lr, wd, momentum, step, 1.0 / (double)K, sc);
  for (int i = 0; i < NC_TRAIN_NSCALARS; i++) NC_TRY(nc_session_put_scalar(t->sess, sc[i].name, sc[i].value));
  double sum = 0;
  for (int64_t k = 0; k < K; k++) {
    NC_TRY(next(ctx, t->in, t->tg));
    NC_TRY(nc_tr_put_i32(t->sess, "tokens", t->in, t->o.B, t->o.T));
    NC_TRY(nc_tr_put_i32(t->sess, "targets", t->tg, t->o.B, t->o.T));
    NC_TRY(nc_session_run_exec(t->sess, k + 1 < K ? t->x_acc : t->x_step));
    sum += nc_tr_scalar(t->sess, "loss");
  }
  if (K > 1)  // the accumulators start from zero for the next step
    for (int i = 0; i < t->nparams; i++) {
      char name[160];
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      NC_TRY(nc_tr_zero(t->sess, name, &t->params[i], false));
    }
  *loss = sum / (double)K;
  if (!isfinite(*loss)) return nc_errorf(NC_E_INVALID, "training diverged at step %lld: loss is %g", (long long)step, *loss);
  return NC_OK;
}

nc_status nc_trainer_step_weighted(nc_trainer *t, const nc_wbatch *b, int n, const double lr[NC_GROUP_COUNT],
                                   const double wd[NC_GROUP_COUNT], double momentum, int64_t step) {
  if (t->dp) return nc_trainer_step_weighted_dp(t, b, n, lr, wd, momentum, step);
  if (!t->x_acc) return nc_errorf(NC_E_INTERNAL, "weighted step: the trainer has no accumulate graph (grad_accum < 2)");
  int last = -1;
  for (int k = 0; k < n; k++)
    if (b[k].weight != 0 && (last < 0 || fabs(b[k].weight) > fabs(b[last].weight))) last = k;
  if (last < 0) return NC_OK;  // every weight is zero: no gradient, no step
  char name[160];
  float **total = calloc((size_t)t->nparams, sizeof *total);
  nc_status st = total ? NC_OK : nc_errorf(NC_E_NOMEM, "weighted step: out of memory");
  for (int i = 0; i < t->nparams && !st; i++) {
    const nc_tensor *p = nc_session_get(t->sess, t->params[i].name);
    if (!(total[i] = calloc((size_t)nc_tensor_numel(p), sizeof(float)))) st = nc_errorf(NC_E_NOMEM, "weighted step: out of memory");
  }
  for (int k = 0; k < n && !st; k++) {
    if (k == last || b[k].weight == 0) continue;
    for (int i = 0; i < t->nparams && !st; i++) {
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      st = nc_tr_zero(t->sess, name, &t->params[i], false);
    }
    if (!st) st = nc_tr_put_i32(t->sess, "tokens", b[k].inputs, b[k].B, b[k].T);
    if (!st) st = nc_tr_put_i32(t->sess, "targets", b[k].targets, b[k].B, b[k].T);
    if (!st) st = nc_session_run_exec(t->sess, t->x_acc);
    for (int i = 0; i < t->nparams && !st; i++) {
      snprintf(name, sizeof name, "acc.%s", t->params[i].name);
      const nc_tensor *g = nc_session_get(t->sess, name);
      const float *gv = g->data;
      for (int64_t j = 0, m = nc_tensor_numel(g); j < m; j++) total[i][j] += (float)b[k].weight * gv[j];
    }
  }
  // the last batch through the step graph: (acc + g_last) * w_last = sum_k w_k g_k
  double wl = b[last].weight;
  for (int i = 0; i < t->nparams && !st; i++) {
    snprintf(name, sizeof name, "acc.%s", t->params[i].name);
    const nc_tensor *a = nc_session_get(t->sess, name);
    float *av = a->data;
    for (int64_t j = 0, m = nc_tensor_numel(a); j < m; j++) av[j] = (float)(total[i][j] / wl);
  }
  nc_train_scalar sc[NC_TRAIN_NSCALARS];
  nc_train_scalars(&t->o.oc, lr, wd, momentum, step, wl, sc);
  for (int i = 0; i < NC_TRAIN_NSCALARS && !st; i++) st = nc_session_put_scalar(t->sess, sc[i].name, sc[i].value);
  if (!st) st = nc_tr_put_i32(t->sess, "tokens", b[last].inputs, b[last].B, b[last].T);
  if (!st) st = nc_tr_put_i32(t->sess, "targets", b[last].targets, b[last].B, b[last].T);
  if (!st) st = nc_session_run_exec(t->sess, t->x_step);
  for (int i = 0; i < t->nparams && !st; i++) {
    snprintf(name, sizeof name, "acc.%s", t->params[i].name);
    st = nc_tr_zero(t->sess, name, &t->params[i], false);
  }
  for (int i = 0; total && i < t->nparams; i++) free(total[i]);
  free(total);
  return st;
}

nc_status nc_trainer_loss(nc_trainer *t, const int32_t *inputs, const int32_t *targets, int64_t B, int64_t T,
                          double *mean, int64_t *count) {
  NC_TRY(nc_tr_put_i32(t->sess, "tokens", inputs, B, T));
  NC_TRY(nc_tr_put_i32(t->sess, "targets", targets, B, T));
  NC_TRY(nc_session_run_exec(t->sess, t->x_loss));
  int64_t c = 0;
  for (int64_t i = 0; i < B * T; i++) c += targets[i] >= 0;
  *mean = nc_tr_scalar(t->sess, "loss");
  *count = c;
  return NC_OK;
}

nc_status nc_trainer_bpb(nc_trainer *t, nc_evalset *set, const int32_t *token_bytes, int64_t vocab, double *bpb) {
  NC_TRY(nc_evalset_reset(set));
  double nats = 0, bytes = 0;
  for (;;) {
    bool done = false;
    NC_TRY(nc_evalset_next(set, t->in, t->tg, &done));
    if (done) break;
    int64_t n = t->o.B * t->o.T;
    for (int64_t i = 0; i < n; i++) {  // targets without bytes (specials) do not count
      int32_t y = t->tg[i];
      if (y < 0 || y >= vocab || token_bytes[y] <= 0) t->tg[i] = -1;
      else bytes += token_bytes[y];
    }
    double mean;
    int64_t count;
    NC_TRY(nc_trainer_loss(t, t->in, t->tg, t->o.B, t->o.T, &mean, &count));
    if (count) nats += mean * (double)count;
  }
  if (bytes <= 0) return nc_errorf(NC_E_INVALID, "bits per byte: the validation set has no scored tokens");
  *bpb = nats / (M_LN2 * bytes);
  return NC_OK;
}

nc_status nc_trainer_greedy(nc_trainer *t, const int32_t *prompt, size_t n, int max_new, int32_t stop_id, nc_ids *out) {
  int64_t Tmax = t->o.spec->sequence_len;
  int32_t *seq = malloc(sizeof(int32_t) * (size_t)Tmax);
  if (!seq) return nc_errorf(NC_E_NOMEM, "greedy: out of memory");
  if ((int64_t)n > Tmax) n = (size_t)Tmax;
  memcpy(seq, prompt, n * sizeof(int32_t));
  int64_t len = (int64_t)n, V = t->o.spec->vocab_size;
  nc_status st = NC_OK;
  for (int k = 0; k < max_new && len < Tmax && !st; k++) {
    st = nc_tr_put_i32(t->sess, "tokens", seq, 1, len);
    if (!st) st = nc_session_run_exec(t->sess, t->x_logits);
    const nc_tensor *lg = st ? NULL : nc_session_get(t->sess, "logits");
    if (!st && (!lg || nc_tensor_numel(lg) != len * V)) st = nc_errorf(NC_E_INTERNAL, "greedy: logits missing");
    if (st) break;
    const float *row = (const float *)lg->data + (len - 1) * V;
    int32_t best = 0;
    for (int64_t v = 1; v < V; v++)
      if (row[v] > row[best]) best = (int32_t)v;
    if (best == stop_id) break;
    seq[len++] = best;
    st = nc_ids_push(out, best);
  }
  free(seq);
  return st;
}
