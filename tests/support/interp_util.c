// Test helpers for the reference interpreter (see interp_util.h).
#include "tests/support/interp_util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Everything the helpers allocate is released by nct_cleanup (the .fini of
// each test suite); each Criterion test runs in its own process.
#define NCT_POOL 4096
static struct {
  void *p;
  bool graph;
} nct_pool[NCT_POOL];
static int nct_npool;

static void nct_track(void *p, bool graph) {
  cr_assert(nct_npool < NCT_POOL, "nct: too many tracked allocations");
  nct_pool[nct_npool].p = p;
  nct_pool[nct_npool++].graph = graph;
}

void nct_cleanup(void) {
  while (nct_npool > 0) {
    nct_npool--;
    if (nct_pool[nct_npool].graph) nc_graph_free(nct_pool[nct_npool].p);
    else free(nct_pool[nct_npool].p);
  }
}

nc_tensor nct_keep(nc_tensor t) {
  if (t.owned && t.data) nct_track(t.data, false);
  t.owned = false;
  return t;
}

nc_graph *nct_graph(void) {
  nc_graph *g = nc_graph_new("t");
  cr_assert(g != NULL, "out of memory");
  nct_track(g, true);
  return g;
}

nc_type nct_type(nc_graph *g, nc_dtype dt, const char *dims) {
  nc_dim d[NC_MAX_RANK];
  int rank = 0;
  const char *s = dims;
  while (*s) {
    cr_assert(rank < NC_MAX_RANK, "nct_type: too many dims in '%s'", dims);
    nc_dim cur = nc_dim_const(1);
    for (;;) {  // factors separated by '*'
      nc_dim f;
      if (*s >= '0' && *s <= '9') {
        f = nc_dim_const(strtoll(s, (char **)&s, 10));
      } else {
        char name[64];
        size_t n = 0;
        while (*s && *s != ',' && *s != '*' && n + 1 < sizeof name) name[n++] = *s++;
        name[n] = 0;
        int k;
        nc_status st = nc_graph_sym(g, name, &k);
        cr_assert(st == NC_OK, "nct_type: %s", nc_status_msg(st));
        f = nc_dim_sym(k);
      }
      cr_assert(nc_dim_mul(cur, f, &cur), "nct_type: overflow in '%s'", dims);
      if (*s != '*') break;
      s++;
    }
    d[rank++] = cur;
    if (*s == ',') s++;
  }
  return nc_type_make(dt, rank, d);
}

static void nct_set_attrs(nc_node_desc *d, const char *attrs) {
  if (!attrs) return;
  nc_attr_spec specs[NC_MAX_ATTRS];
  int ns = nc_op_attr_specs(d->op, specs);
  const char *s = attrs;
  while (*s) {
    while (*s == ' ') s++;
    if (!*s) break;
    const char *eq = strchr(s, '=');
    cr_assert(eq != NULL, "nct_op: attribute without '=' in '%s'", attrs);
    const nc_attr_spec *a = NULL;
    for (int i = 0; i < ns; i++)
      if (strlen(specs[i].name) == (size_t)(eq - s) && !strncmp(specs[i].name, s, (size_t)(eq - s))) a = &specs[i];
    cr_assert(a != NULL, "nct_op: unknown attribute in '%s' for %s", attrs, nc_op_get(d->op)->name);
    const char *v = eq + 1, *end = v;
    while (*end && *end != ' ') end++;
    char val[64];
    size_t n = (size_t)(end - v) < sizeof val - 1 ? (size_t)(end - v) : sizeof val - 1;
    memcpy(val, v, n);
    val[n] = 0;
    switch (a->type) {
      case NC_ATTR_FLOAT: d->fa[a->slot] = strtod(val, NULL); break;
      case NC_ATTR_ENUM: {
        int64_t idx = -1;
        for (int j = 0; j < a->nenum; j++)
          if (!strcmp(a->enums[j], val)) idx = j;
        if (idx < 0) idx = strtoll(val, NULL, 10);
        d->ia[a->slot] = idx;
        break;
      }
      case NC_ATTR_AXES:
      case NC_ATTR_PERM: {
        int list[NC_MAX_RANK + 2], cnt = 0;
        for (char *p = val; *p;) {
          list[cnt++] = (int)strtol(p, &p, 10);
          if (*p == ',') p++;
          else break;
        }
        if (a->type == NC_ATTR_PERM) {
          d->ia[a->slot] = nc_perm_encode(list, cnt);
        } else {
          int64_t m = 0;
          for (int j = 0; j < cnt; j++) m |= INT64_C(1) << list[j];
          d->ia[a->slot] = m;
        }
        break;
      }
      default: d->ia[a->slot] = strtoll(val, NULL, 10); break;
    }
    s = end;
  }
}

nc_status nct_try_op(nc_graph *g, nc_op op, const nc_type *t, const char *attrs, int nin, const nc_id *in,
                     nc_id *out) {
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  nct_set_attrs(&d, attrs);
  d.nin = nin;
  for (int i = 0; i < nin; i++) d.in[i] = in[i];
  if (t) d.type = *t;
  return nc_graph_add(g, &d, out);
}

static nc_id nct_opv(nc_graph *g, nc_op op, const nc_type *t, const char *attrs, int nin, va_list ap) {
  nc_id in[NC_MAX_INPUTS], out = NC_NONE;
  cr_assert(nin <= NC_MAX_INPUTS);
  for (int i = 0; i < nin; i++) in[i] = va_arg(ap, nc_id);
  nc_status st = nct_try_op(g, op, t, attrs, nin, in, &out);
  if (st) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nc_status_msg(st));
    nc_status_free(st);
    cr_assert(0, "building %s failed: %s", nc_op_get(op)->name, msg);
  }
  return out;
}

nc_id nct_op(nc_graph *g, nc_op op, const char *attrs, int nin, ...) {
  va_list ap;
  va_start(ap, nin);
  nc_id id = nct_opv(g, op, NULL, attrs, nin, ap);
  va_end(ap);
  return id;
}

nc_id nct_opd(nc_graph *g, nc_op op, nc_type t, const char *attrs, int nin, ...) {
  va_list ap;
  va_start(ap, nin);
  nc_id id = nct_opv(g, op, &t, attrs, nin, ap);
  va_end(ap);
  return id;
}

static nc_id nct_leaf(nc_graph *g, nc_op op, const char *name, nc_dtype dt, const char *dims) {
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  d.str = name;
  d.type = nct_type(g, dt, dims);
  nc_id id;
  nc_status st = nc_graph_add(g, &d, &id);
  cr_assert(st == NC_OK, "leaf %s: %s", name, nc_status_msg(st));
  return id;
}

nc_id nct_in(nc_graph *g, const char *name, nc_dtype dt, const char *dims) {
  return nct_leaf(g, NC_OP_INPUT, name, dt, dims);
}
nc_id nct_param(nc_graph *g, const char *name, nc_dtype dt, const char *dims) {
  return nct_leaf(g, NC_OP_PARAM, name, dt, dims);
}

nc_id nct_const(nc_graph *g, double v, nc_dtype dt, const char *dims) {
  nc_id id = nc_const(g, v, nct_type(g, dt, dims));
  cr_assert(id != NC_NONE, "const: %s", nc_status_msg(nc_graph_error(g)));
  return id;
}

// ---- tensors ------------------------------------------------------------------
static int nct_parse_shape(const char *shape, int64_t *dims) {
  int rank = 0;
  for (const char *s = shape; *s;) {
    dims[rank++] = strtoll(s, (char **)&s, 10);
    if (*s == ',') s++;
    else break;
  }
  return rank;
}

nc_tensor nct_tensor(nc_dtype dt, const char *shape, const double *vals) {
  int64_t dims[NC_MAX_RANK];
  int rank = nct_parse_shape(shape, dims);
  nc_tensor t;
  nc_status st = nc_tensor_alloc(&t, dt, rank, dims);
  cr_assert(st == NC_OK, "tensor: %s", nc_status_msg(st));
  if (vals)
    for (int64_t i = 0; i < nc_tensor_numel(&t); i++) nct_set(&t, i, vals[i]);
  return nct_keep(t);
}

nc_tensor nct_scalar_i32(int32_t v) { return nct_tensor(NC_I32, "", (const double[]){v}); }

uint64_t nct_rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double nct_uniform(uint64_t *s) { return (double)(nct_rng_next(s) >> 11) * 0x1p-53; }
int64_t nct_randint(uint64_t *s, int64_t lo, int64_t hi) { return lo + (int64_t)(nct_rng_next(s) % (uint64_t)(hi - lo)); }

nc_tensor nct_rand_shape(nc_dtype dt, int rank, const int64_t *shape, uint64_t *s, double lo, double hi) {
  nc_tensor t;
  nc_status st = nc_tensor_alloc(&t, dt, rank, shape);
  cr_assert(st == NC_OK, "tensor: %s", nc_status_msg(st));
  for (int64_t i = 0; i < nc_tensor_numel(&t); i++) nct_set(&t, i, lo + (hi - lo) * nct_uniform(s));
  return nct_keep(t);
}

nc_tensor nct_rand(nc_dtype dt, const char *shape, uint64_t *s, double lo, double hi) {
  int64_t dims[NC_MAX_RANK];
  int rank = nct_parse_shape(shape, dims);
  return nct_rand_shape(dt, rank, dims, s, lo, hi);
}

nc_tensor nct_rand_ids(nc_dtype dt, const char *shape, uint64_t *s, int64_t lo, int64_t hi) {
  nc_tensor t = nct_tensor(dt, shape, NULL);
  for (int64_t i = 0; i < nc_tensor_numel(&t); i++) nc_elem_set_i64(t.data, dt, (size_t)i, nct_randint(s, lo, hi));
  return t;
}

double nct_get(const nc_tensor *t, int64_t i) { return nc_elem_get(t->data, t->dtype, (size_t)i); }
void nct_set(nc_tensor *t, int64_t i, double v) {
  if (nc_dtype_is_float(t->dtype)) nc_elem_set(t->data, t->dtype, (size_t)i, v);
  else nc_elem_set_i64(t->data, t->dtype, (size_t)i, (int64_t)v);
}

// ---- evaluation ------------------------------------------------------------------
nc_status nct_eval_fv(const nc_graph *g, nc_id id, nc_tensor *out, const nc_feed *feeds, int nfeeds) {
  return nc_interp_eval(g, feeds, nfeeds, &id, 1, out);
}

static int nct_collect(va_list ap, nc_feed *feeds) {
  int n = 0;
  for (;;) {
    const char *name = va_arg(ap, const char *);
    if (!name) break;
    cr_assert(n < 32, "too many feeds");
    feeds[n].name = name;
    feeds[n].value = va_arg(ap, const nc_tensor *);
    n++;
  }
  return n;
}

nc_status nct_eval_st(const nc_graph *g, nc_id id, nc_tensor *out, ...) {
  nc_feed feeds[32];
  va_list ap;
  va_start(ap, out);
  int n = nct_collect(ap, feeds);
  va_end(ap);
  return nct_eval_fv(g, id, out, feeds, n);
}

nc_tensor nct_eval(const nc_graph *g, nc_id id, ...) {
  nc_feed feeds[32];
  va_list ap;
  va_start(ap, id);
  int n = nct_collect(ap, feeds);
  va_end(ap);
  nc_tensor out;
  nc_status st = nct_eval_fv(g, id, &out, feeds, n);
  if (st) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nc_status_msg(st));
    nc_status_free(st);
    cr_assert(0, "interp failed: %s", msg);
  }
  return nct_keep(out);
}

// ---- comparisons ---------------------------------------------------------------------
static bool nct_near(double got, double want, double atol, double rtol) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want;
  return fabs(got - want) <= atol + rtol * fabs(want);
}

void nct_expect_vals(const nc_tensor *t, const double *want, int64_t n, double atol, double rtol, const char *file,
                     int line) {
  int64_t have = nc_tensor_numel(t);
  cr_assert(have == n, "%s:%d: tensor has %lld elements, expected %lld", file, line, (long long)have, (long long)n);
  int bad = 0;
  for (int64_t i = 0; i < n && bad < 5; i++) {
    double g = nct_get(t, i);
    if (!nct_near(g, want[i], atol, rtol)) {
      bad++;
      cr_expect(0, "%s:%d: element %lld: got %.9g, want %.9g", file, line, (long long)i, g, want[i]);
    }
  }
}

void nct_expect_close(const nc_tensor *got, const nc_tensor *want, double atol, double rtol, const char *file,
                      int line) {
  char a[128], b[128];
  bool same = got->rank == want->rank;
  for (int d = 0; same && d < got->rank; d++) same = got->shape[d] == want->shape[d];
  cr_assert(same, "%s:%d: shapes differ: %s vs %s", file, line, nc_tensor_type_str(got, a, sizeof a),
            nc_tensor_type_str(want, b, sizeof b));
  int bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < nc_tensor_numel(got); i++) {
    double g = nct_get(got, i), w = nct_get(want, i);
    if (!nct_near(g, w, atol, rtol)) {
      if (bad++ < 5) cr_expect(0, "%s:%d: element %lld: got %.9g, want %.9g", file, line, (long long)i, g, w);
      if (fabs(g - w) > worst) worst = fabs(g - w);
    }
  }
  if (bad > 5) cr_expect(0, "%s:%d: %d elements differ (worst abs diff %g)", file, line, bad, worst);
}

void nct_expect_shape(const nc_tensor *t, nc_dtype dt, const char *shape, const char *file, int line) {
  int64_t dims[NC_MAX_RANK];
  int rank = nct_parse_shape(shape, dims);
  bool ok = t->dtype == dt && t->rank == rank;
  for (int d = 0; ok && d < rank; d++) ok = t->shape[d] == dims[d];
  char s[128];
  cr_expect(ok, "%s:%d: got %s, want %s[%s]", file, line, nc_tensor_type_str(t, s, sizeof s), nc_dtype_name(dt),
            shape);
}

void nct_expect_error(nc_status st, const char *words, const char *file, int line) {
  cr_assert(st != NC_OK, "%s:%d: expected an error mentioning '%s', got success", file, line, words);
  const char *msg = nc_status_msg(st);
  char buf[256];
  snprintf(buf, sizeof buf, "%s", words);
  for (char *w = strtok(buf, "|"); w; w = strtok(NULL, "|"))
    cr_expect(strstr(msg, w) != NULL, "%s:%d: error '%s' does not mention '%s'", file, line, msg, w);
  nc_status_free(st);
}

// ---- one-op graphs ----------------------------------------------------------------------
nc_id nct_in_like(nc_graph *g, const char *name, const nc_tensor *t) {
  nc_dim d[NC_MAX_RANK];
  for (int i = 0; i < t->rank; i++) d[i] = nc_dim_const(t->shape[i]);
  nc_node_desc desc;
  nc_node_desc_init(&desc, NC_OP_INPUT);
  desc.str = name;
  desc.type = nc_type_make(t->dtype, t->rank, d);
  nc_id id;
  nc_status st = nc_graph_add(g, &desc, &id);
  cr_assert(st == NC_OK, "input %s: %s", name, nc_status_msg(st));
  return id;
}

nc_status nct_apply_st(nc_op op, nc_dtype decl_dt, const char *decl_dims, const char *attrs, int nin,
                       const nc_tensor *const *ins, nc_tensor *out) {
  nc_graph *g = nc_graph_new("t");
  cr_assert(g != NULL, "out of memory");
  nc_id in[NC_MAX_INPUTS], id = NC_NONE;
  nc_feed feeds[NC_MAX_INPUTS];
  char names[NC_MAX_INPUTS][8];
  for (int i = 0; i < nin; i++) {
    snprintf(names[i], sizeof names[i], "x%d", i);
    in[i] = nct_in_like(g, names[i], ins[i]);
    feeds[i] = (nc_feed){names[i], ins[i]};
  }
  nc_type t;
  if (decl_dims) t = nct_type(g, decl_dt, decl_dims);
  nc_status st = nct_try_op(g, op, decl_dims ? &t : NULL, attrs, nin, in, &id);
  if (!st) st = nct_eval_fv(g, id, out, feeds, nin);
  nc_graph_free(g);
  return st;
}

nc_tensor nct_apply(nc_op op, nc_dtype decl_dt, const char *decl_dims, const char *attrs, int nin,
                    const nc_tensor *const *ins) {
  nc_tensor out;
  nc_status st = nct_apply_st(op, decl_dt, decl_dims, attrs, nin, ins, &out);
  if (st) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nc_status_msg(st));
    nc_status_free(st);
    cr_assert(0, "%s failed: %s", nc_op_get(op)->name, msg);
  }
  return nct_keep(out);
}
