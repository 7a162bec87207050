// Random valid graphs: see randgraph.h. Each op has a small generator that
// picks (or creates) inputs whose types satisfy the op's rule in ir/rules.c.
// Existing nodes are preferred as inputs so graphs are connected; a fresh
// input/param leaf of the exact needed type is made when none fits.
#include "tests/support/randgraph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/rules.h"

typedef struct {
  nc_graph *g;
  uint64_t rng;
  unsigned flags;
  int symB, symT;
  unsigned counter;  // makes leaf names unique
  int reuse_pct;     // chance to reuse an existing node of a fitting type
  bool failed;
} nc_rg;

uint64_t nc_test_rand_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static int rnd(nc_rg *r, int n) { return n <= 1 ? 0 : (int)(nc_test_rand_next(&r->rng) % (uint64_t)n); }
static bool chance(nc_rg *r, int pct) { return rnd(r, 100) < pct; }

// ---- names ------------------------------------------------------------------------
static const char *const nc_rg_names[] = {
    "tokens", "targets", "transformer.wte.weight", "transformer.h.0.attn.c_q.weight", "lm_head.weight",
    "with space", "quote\"d", "back\\slash", "new\nline", "tab\there", "cr\rlf", "ünïcödé", "日本語",
    "emoji 🙂", "<tag>&amp;", "'single'", "a=b{c}(d)%e [f]", "// not a comment", "x", "#hash,comma",
};
static const char *const nc_rg_ctrl_names[] = {"bell\x07", "del\x7f", "esc\x1b[0m", "soh\x01"};

static void nc_rg_name(nc_rg *r, char *out, size_t n) {
  const char *base = (r->flags & NC_RG_CONTROL_NAMES) && chance(r, 20)
                         ? nc_rg_ctrl_names[rnd(r, (int)(sizeof nc_rg_ctrl_names / sizeof *nc_rg_ctrl_names))]
                         : nc_rg_names[rnd(r, (int)(sizeof nc_rg_names / sizeof *nc_rg_names))];
  snprintf(out, n, "%s#%u", base, r->counter++);
}

// ---- types ------------------------------------------------------------------------
static nc_dim nc_rg_dim(nc_rg *r) {
  static const int64_t consts[] = {1, 2, 3, 4, 5, 8, 16, 64};
  nc_dim b = nc_dim_sym(r->symB), t = nc_dim_sym(r->symT), d;
  switch (rnd(r, 10)) {
    case 0: return b;
    case 1: return t;
    case 2: nc_dim_mul(b, t, &d); return d;
    case 3: nc_dim_mul(nc_dim_const(4), t, &d); return d;
    case 4: nc_dim_mul(b, b, &d); nc_dim_mul(d, t, &d); return d;  // B^2*T
    default: return nc_dim_const(consts[rnd(r, 8)]);
  }
}

static nc_dim nc_rg_cdim(nc_rg *r, int lo, int hi) { return nc_dim_const(lo + rnd(r, hi - lo + 1)); }

static nc_dtype nc_rg_float(nc_rg *r) {
  static const nc_dtype f[] = {NC_F32, NC_F32, NC_BF16, NC_F16};
  return f[rnd(r, 4)];
}
static nc_dtype nc_rg_num(nc_rg *r) {
  static const nc_dtype f[] = {NC_F32, NC_BF16, NC_F16, NC_I32, NC_I64, NC_U8};
  return f[rnd(r, 6)];
}
static nc_dtype nc_rg_int(nc_rg *r) { return chance(r, 70) ? NC_I32 : NC_I64; }

static nc_type nc_rg_type(nc_rg *r, nc_dtype dt, int minrank, int maxrank) {
  nc_type t;
  memset(&t, 0, sizeof t);
  t.dtype = dt;
  t.rank = (uint8_t)(minrank + rnd(r, maxrank - minrank + 1));
  for (int i = 0; i < t.rank; i++) t.dim[i] = nc_rg_dim(r);
  return t;
}

// ---- building -----------------------------------------------------------------------
static nc_id nc_rg_add(nc_rg *r, const nc_node_desc *d) {
  if (r->failed) return NC_NONE;
  for (int i = 0; i < d->nin; i++)
    if (d->in[i] == NC_NONE) return NC_NONE;
  nc_id id;
  nc_status st = nc_graph_add(r->g, d, &id);
  if (st) {
    fprintf(stderr, "randgraph: building %s failed: %s\n", nc_op_get(d->op)->name, nc_status_msg(st));
    nc_status_free(st);
    r->failed = true;
    return NC_NONE;
  }
  return id;
}

static nc_id nc_rg_leaf(nc_rg *r, nc_type t) {
  char name[128];
  nc_rg_name(r, name, sizeof name);
  nc_node_desc d;
  nc_node_desc_init(&d, chance(r, 50) ? NC_OP_INPUT : NC_OP_PARAM);
  d.str = name;
  d.type = t;
  return nc_rg_add(r, &d);
}

typedef bool (*nc_rg_pred)(const nc_type *t, const void *arg);

// A random existing node whose type satisfies pred (NC_NONE if none).
static nc_id nc_rg_pick(nc_rg *r, nc_rg_pred pred, const void *arg) {
  uint32_t n = nc_graph_nnodes(r->g);
  if (!n) return NC_NONE;
  uint32_t start = (uint32_t)rnd(r, (int)n);
  for (uint32_t k = 0; k < n; k++) {
    nc_id id = (start + k) % n;
    if (pred(&nc_graph_node(r->g, id)->type, arg)) return id;
  }
  return NC_NONE;
}

static bool nc_rg_same(const nc_type *t, const void *arg) { return nc_type_eq(t, arg); }

// A node of exactly type t: an existing one (often) or a fresh leaf.
static nc_id nc_rg_of_type(nc_rg *r, nc_type t) {
  if (chance(r, r->reuse_pct)) {
    nc_id id = nc_rg_pick(r, nc_rg_same, &t);
    if (id != NC_NONE) return id;
  }
  return nc_rg_leaf(r, t);
}

// An existing node satisfying pred (often) or a fresh leaf of type fallback.
static nc_id nc_rg_base(nc_rg *r, nc_rg_pred pred, const void *arg, nc_type fallback) {
  if (chance(r, r->reuse_pct)) {
    nc_id id = nc_rg_pick(r, pred, arg);
    if (id != NC_NONE) return id;
  }
  return nc_rg_leaf(r, fallback);
}

static const nc_type *nc_rg_t(nc_rg *r, nc_id id) { return &nc_graph_node(r->g, id)->type; }

// predicates; arg is an int (minimum rank) where used
static bool p_num(const nc_type *t, const void *a) { return t->dtype != NC_BOOL && t->rank >= *(const int *)a; }
static bool p_float(const nc_type *t, const void *a) { return nc_dtype_is_float(t->dtype) && t->rank >= *(const int *)a; }
static bool p_bool(const nc_type *t, const void *a) { (void)a; return t->dtype == NC_BOOL; }
static bool p_any(const nc_type *t, const void *a) { return t->rank >= *(const int *)a; }
static bool p_rope(const nc_type *t, const void *a) {
  (void)a;
  return nc_dtype_is_float(t->dtype) && t->rank == 4 && nc_dim_is_const(t->dim[3]) && t->dim[3].c % 2 == 0;
}
static bool p_q(const nc_type *t, const void *a) {
  (void)a;
  return nc_dtype_is_float(t->dtype) && t->rank == 4 && nc_dim_is_const(t->dim[2]);
}
static bool p_const_axis(const nc_type *t, const void *a) {
  (void)a;
  for (int i = 0; i < t->rank; i++)
    if (nc_dim_is_const(t->dim[i])) return true;
  return false;
}
static bool p_has_one(const nc_type *t, const void *a) {
  (void)a;
  for (int i = 0; i < t->rank; i++)
    if (t->dim[i].c == 1 && t->dim[i].e == 0) return true;
  return false;
}

static const int R0 = 0, R1 = 1, R2 = 2, R3 = 3;

static double nc_rg_value(nc_rg *r) {
  static const double special[] = {0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 5e-324, 1.7976931348623157e308,
                                   3.141592653589793, -2.5e-8, 1e22, 0.1};
  switch (rnd(r, 8)) {
    case 0: return NAN;
    case 1: return chance(r, 50) ? INFINITY : -INFINITY;
    case 2: {
      uint64_t bits = nc_test_rand_next(&r->rng);
      double v;
      memcpy(&v, &bits, 8);
      return isnan(v) ? NAN : v;  // NaN payloads do not survive "nan"
    }
    default: return special[rnd(r, (int)(sizeof special / sizeof *special))];
  }
}

static nc_id nc_rg_simple(nc_rg *r, nc_op op, int nin, nc_id a, nc_id b, nc_id c) {
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  d.nin = nin;
  d.in[0] = a;
  d.in[1] = b;
  d.in[2] = c;
  return nc_rg_add(r, &d);
}

static void nc_rg_swap_last2(nc_type *t) {
  nc_dim x = t->dim[t->rank - 1];
  t->dim[t->rank - 1] = t->dim[t->rank - 2];
  t->dim[t->rank - 2] = x;
}

// ---- per-op generators ------------------------------------------------------------------
static nc_id nc_rg_op(nc_rg *r, nc_op op) {
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  switch (op) {
    case NC_OP_INPUT:
    case NC_OP_PARAM: {
      char name[128];
      nc_rg_name(r, name, sizeof name);
      d.str = name;
      d.type = nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 0, chance(r, 10) ? 6 : 4);
      return nc_rg_add(r, &d);
    }
    case NC_OP_CONST:
      d.fa[0] = nc_rg_value(r);
      d.type = nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 0, 3);
      return nc_rg_add(r, &d);
    case NC_OP_IOTA:
      d.type = nc_rg_type(r, nc_rg_num(r), 1, 4);
      d.ia[0] = rnd(r, d.type.rank);
      return nc_rg_add(r, &d);
    case NC_OP_NEG: case NC_OP_ABS: case NC_OP_RELU: case NC_OP_SQUARE:
      return nc_rg_simple(r, op, 1, nc_rg_base(r, p_num, &R0, nc_rg_type(r, nc_rg_num(r), 0, 4)), 0, 0);
    case NC_OP_TANH: case NC_OP_EXP: case NC_OP_LOG: case NC_OP_SQRT: case NC_OP_RSQRT: case NC_OP_SIGMOID: case NC_OP_SIN: case NC_OP_COS:
      return nc_rg_simple(r, op, 1, nc_rg_base(r, p_float, &R0, nc_rg_type(r, nc_rg_float(r), 0, 4)), 0, 0);
    case NC_OP_POWC:
      d.nin = 1;
      d.in[0] = nc_rg_base(r, p_float, &R0, nc_rg_type(r, nc_rg_float(r), 0, 4));
      d.fa[0] = chance(r, 50) ? 2.0 : nc_rg_value(r);
      return nc_rg_add(r, &d);
    case NC_OP_NOT:
      return nc_rg_simple(r, op, 1, nc_rg_base(r, p_bool, NULL, nc_rg_type(r, NC_BOOL, 0, 4)), 0, 0);
    case NC_OP_CAST: {
      nc_id x = nc_rg_base(r, p_any, &R0, nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 0, 4));
      if (x == NC_NONE) return NC_NONE;
      d.nin = 1;
      d.in[0] = x;
      d.type = *nc_rg_t(r, x);
      d.type.dtype = (nc_dtype)rnd(r, NC_DTYPE_COUNT);
      return nc_rg_add(r, &d);
    }
    case NC_OP_ADD: case NC_OP_SUB: case NC_OP_MUL: case NC_OP_DIV: case NC_OP_MAX: case NC_OP_MIN: {
      nc_id x = nc_rg_base(r, p_num, &R0, nc_rg_type(r, nc_rg_num(r), 0, 4));
      if (x == NC_NONE) return NC_NONE;
      nc_id y = chance(r, 10) ? x : nc_rg_of_type(r, *nc_rg_t(r, x));
      return chance(r, 50) ? nc_rg_simple(r, op, 2, x, y, 0) : nc_rg_simple(r, op, 2, y, x, 0);
    }
    case NC_OP_AND: case NC_OP_OR: {
      nc_id x = nc_rg_base(r, p_bool, NULL, nc_rg_type(r, NC_BOOL, 0, 4));
      if (x == NC_NONE) return NC_NONE;
      return nc_rg_simple(r, op, 2, x, nc_rg_of_type(r, *nc_rg_t(r, x)), 0);
    }
    case NC_OP_EQ: case NC_OP_NE: case NC_OP_LT: case NC_OP_LE: case NC_OP_GT: case NC_OP_GE: {
      nc_id x = nc_rg_base(r, p_any, &R0, nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 0, 4));
      if (x == NC_NONE) return NC_NONE;
      return nc_rg_simple(r, op, 2, x, nc_rg_of_type(r, *nc_rg_t(r, x)), 0);
    }
    case NC_OP_WHERE: {
      nc_id a = nc_rg_base(r, p_any, &R0, nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 0, 4));
      if (a == NC_NONE) return NC_NONE;
      nc_type ct = *nc_rg_t(r, a);
      ct.dtype = NC_BOOL;
      return nc_rg_simple(r, op, 3, nc_rg_of_type(r, ct), a, nc_rg_of_type(r, *nc_rg_t(r, a)));
    }
    case NC_OP_REDUCE_SUM: case NC_OP_REDUCE_MAX: case NC_OP_REDUCE_MEAN: {
      bool mean = op == NC_OP_REDUCE_MEAN;
      nc_id x = mean ? nc_rg_base(r, p_float, &R1, nc_rg_type(r, nc_rg_float(r), 1, 4))
                     : nc_rg_base(r, p_num, &R1, nc_rg_type(r, nc_rg_num(r), 1, 4));
      if (x == NC_NONE) return NC_NONE;
      int rank = nc_rg_t(r, x)->rank;
      d.nin = 1;
      d.in[0] = x;
      d.ia[0] = 1 + rnd(r, (1 << rank) - 1);
      d.ia[1] = chance(r, 50);
      return nc_rg_add(r, &d);
    }
    case NC_OP_RMS_NORM: case NC_OP_RMS_NORM_GRAD: {
      static const double eps[] = {1.1920928955078125e-07, 1e-5, 1e-6, 0.5};
      nc_id x = nc_rg_base(r, p_float, &R1, nc_rg_type(r, nc_rg_float(r), 1, 4));
      if (x == NC_NONE) return NC_NONE;
      d.nin = op == NC_OP_RMS_NORM ? 1 : 2;
      d.in[0] = x;
      if (d.nin == 2) d.in[1] = nc_rg_of_type(r, *nc_rg_t(r, x));
      d.fa[0] = eps[rnd(r, 4)];
      return nc_rg_add(r, &d);
    }
    case NC_OP_SOFTMAX: case NC_OP_LOG_SOFTMAX:
      return nc_rg_simple(r, op, 1, nc_rg_base(r, p_float, &R1, nc_rg_type(r, nc_rg_float(r), 1, 4)), 0, 0);
    case NC_OP_ROPE: {
      nc_dim dims[4] = {nc_rg_dim(r), nc_rg_dim(r), nc_rg_cdim(r, 1, 4), nc_dim_const(2 * (1 + rnd(r, 8)))};
      nc_id x = nc_rg_base(r, p_rope, NULL, nc_type_make(nc_rg_float(r), 4, dims));
      d.nin = chance(r, 40) ? 2 : 1;
      d.in[0] = x;
      if (d.nin == 2) d.in[1] = nc_rg_of_type(r, nc_type_make(NC_I32, 0, NULL));
      static const double base[] = {10000, 500000, 1.5, 1e300};
      d.fa[0] = base[rnd(r, 4)];
      d.ia[0] = chance(r, 30);
      return nc_rg_add(r, &d);
    }
    case NC_OP_MATMUL: {
      bool ta = chance(r, 25), tb = chance(r, 40);
      nc_id a = nc_rg_base(r, p_float, &R2, nc_rg_type(r, nc_rg_float(r), 2, ta ? 2 : 4));
      if (a == NC_NONE) return NC_NONE;
      const nc_type *at = nc_rg_t(r, a);
      if (at->rank != 2) ta = false;
      nc_dim k = ta ? at->dim[0] : at->dim[at->rank - 1], n = nc_rg_dim(r);
      nc_dim bd[2] = {tb ? n : k, tb ? k : n};
      d.nin = 2;
      d.in[0] = a;
      d.in[1] = nc_rg_of_type(r, nc_type_make(at->dtype, 2, bd));
      d.ia[0] = ta;
      d.ia[1] = tb;
      return nc_rg_add(r, &d);
    }
    case NC_OP_BMM: {
      bool ta = chance(r, 30), tb = chance(r, 30);
      nc_id a = nc_rg_base(r, p_float, &R3, nc_rg_type(r, nc_rg_float(r), 3, 4));
      if (a == NC_NONE) return NC_NONE;
      nc_type bt = *nc_rg_t(r, a);
      int rk = bt.rank;
      nc_dim k = ta ? bt.dim[rk - 2] : bt.dim[rk - 1];
      bt.dim[rk - 2] = k;
      bt.dim[rk - 1] = nc_rg_dim(r);
      if (tb) nc_rg_swap_last2(&bt);
      d.nin = 2;
      d.in[0] = a;
      d.in[1] = nc_rg_of_type(r, bt);
      d.ia[0] = ta;
      d.ia[1] = tb;
      return nc_rg_add(r, &d);
    }
    case NC_OP_ATTENTION: case NC_OP_ATTENTION_GRAD: {
      nc_dim qd[4] = {nc_rg_dim(r), nc_rg_dim(r), nc_dim_const(1 + rnd(r, 4) * 2), nc_rg_cdim(r, 1, 16)};
      nc_id q = nc_rg_base(r, p_q, NULL, nc_type_make(nc_rg_float(r), 4, qd));
      if (q == NC_NONE) return NC_NONE;
      nc_type qt = *nc_rg_t(r, q);
      int64_t hq = qt.dim[2].c, hkv = hq;
      while (chance(r, 50) && hkv % 2 == 0) hkv /= 2;
      nc_dim tk = chance(r, 50) ? qt.dim[1] : nc_rg_dim(r), dv = chance(r, 50) ? qt.dim[3] : nc_rg_cdim(r, 1, 16);
      nc_dim kd[4] = {qt.dim[0], tk, nc_dim_const(hkv), qt.dim[3]}, vd[4] = {qt.dim[0], tk, nc_dim_const(hkv), dv};
      nc_dim od[4] = {qt.dim[0], qt.dim[1], qt.dim[2], dv};
      d.in[0] = q;
      d.in[1] = nc_rg_of_type(r, nc_type_make(qt.dtype, 4, kd));
      d.in[2] = nc_rg_of_type(r, nc_type_make(qt.dtype, 4, vd));
      d.nin = 3;
      int slot = 0;
      if (op == NC_OP_ATTENTION_GRAD) {
        d.in[d.nin++] = nc_rg_of_type(r, nc_type_make(qt.dtype, 4, od));
        d.ia[slot++] = rnd(r, 3);  // wrt
      }
      if (chance(r, 40)) d.in[d.nin++] = nc_rg_of_type(r, nc_type_make(NC_I32, 0, NULL));
      d.ia[slot] = chance(r, 70);          // causal
      d.ia[slot + 1] = chance(r, 70) ? 0 : rnd(r, 1000);  // window
      d.fa[0] = chance(r, 50) ? 0.125 : 1.0 / (1 + rnd(r, 100));
      return nc_rg_add(r, &d);
    }
    case NC_OP_GATHER: {
      nc_dim td[2] = {nc_rg_cdim(r, 1, 1000), nc_rg_dim(r)};
      d.nin = 2;
      d.in[0] = nc_rg_of_type(r, nc_type_make(chance(r, 80) ? nc_rg_float(r) : nc_rg_num(r), 2, td));
      d.in[1] = nc_rg_base(r, p_any, &R0, nc_rg_type(r, nc_rg_int(r), 0, 4));
      if (d.in[1] != NC_NONE) {
        const nc_type *it = nc_rg_t(r, d.in[1]);
        if ((it->dtype != NC_I32 && it->dtype != NC_I64) || it->rank > 5) d.in[1] = nc_rg_leaf(r, nc_rg_type(r, nc_rg_int(r), 0, 4));
      }
      return nc_rg_add(r, &d);
    }
    case NC_OP_SCATTER_ADD: {
      nc_type ids = nc_rg_type(r, nc_rg_int(r), 0, 3);
      nc_dim od[2] = {nc_rg_cdim(r, 1, 100), nc_rg_dim(r)};
      d.type = nc_type_make(nc_rg_float(r), 2, od);
      nc_type src = ids;
      src.dtype = d.type.dtype;
      src.dim[src.rank++] = od[1];
      d.nin = 2;
      d.in[0] = nc_rg_of_type(r, ids);
      d.in[1] = nc_rg_of_type(r, src);
      return nc_rg_add(r, &d);
    }
    case NC_OP_CROSS_ENTROPY: case NC_OP_CROSS_ENTROPY_GRAD: {
      static const int64_t ign[] = {-1, -100, 0, 5, INT64_MIN, INT64_MAX};
      nc_id lg = nc_rg_base(r, p_float, &R1, nc_rg_type(r, nc_rg_float(r), 1, 4));
      if (lg == NC_NONE) return NC_NONE;
      nc_type tt = *nc_rg_t(r, lg);
      tt.dim[--tt.rank] = (nc_dim){0, 0};
      tt.dtype = nc_rg_int(r);
      d.nin = 2;
      d.in[0] = lg;
      d.in[1] = nc_rg_of_type(r, tt);
      d.ia[0] = ign[rnd(r, 6)];
      d.ia[1] = rnd(r, 3);
      if (op == NC_OP_CROSS_ENTROPY_GRAD) {
        nc_type lt = d.ia[1] == 0 ? tt : nc_type_make(NC_F32, 0, NULL);
        lt.dtype = NC_F32;
        d.in[d.nin++] = nc_rg_of_type(r, lt);
      }
      return nc_rg_add(r, &d);
    }
    case NC_OP_RESHAPE: {
      nc_id x = nc_rg_base(r, p_any, &R0, nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 0, 4));
      if (x == NC_NONE) return NC_NONE;
      nc_type t = *nc_rg_t(r, x);
      int how = rnd(r, 4);
      if (how == 0 || t.rank == 0) {  // flatten (or scalar -> [1])
        nc_dim n;
        if (!nc_type_numel(&t, &n)) return NC_NONE;
        t = nc_type_make(t.dtype, 1, &n);
      } else if (how == 1 && t.rank >= 2) {  // merge two adjacent dims
        int i = rnd(r, t.rank - 1);
        nc_dim m;
        if (!nc_dim_mul(t.dim[i], t.dim[i + 1], &m)) return NC_NONE;
        t.dim[i] = m;
        for (int j = i + 1; j + 1 < t.rank; j++) t.dim[j] = t.dim[j + 1];
        t.dim[--t.rank] = (nc_dim){0, 0};
      } else if (t.rank < NC_MAX_RANK) {  // insert a 1, or split an even constant dim
        int i = rnd(r, t.rank + 1);
        nc_dim a = nc_dim_const(1), b = i < t.rank ? t.dim[i] : nc_dim_const(1);
        if (i < t.rank && nc_dim_is_const(b) && b.c % 2 == 0) a = nc_dim_const(2), b.c /= 2;
        else if (i == t.rank) b = (nc_dim){0, 0};
        for (int j = t.rank; j > i; j--) t.dim[j] = t.dim[j - 1];
        t.dim[i] = a;
        if (i < t.rank) t.dim[i + 1] = b;
        t.rank++;
      }
      d.nin = 1;
      d.in[0] = x;
      d.type = t;
      return nc_rg_add(r, &d);
    }
    case NC_OP_PERMUTE: {
      nc_id x = nc_rg_base(r, p_any, &R0, nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 1, 6));
      if (x == NC_NONE) return NC_NONE;
      int rank = nc_rg_t(r, x)->rank, perm[NC_MAX_RANK];
      for (int i = 0; i < rank; i++) perm[i] = i;
      for (int i = rank - 1; i > 0; i--) {
        int j = rnd(r, i + 1), s = perm[i];
        perm[i] = perm[j];
        perm[j] = s;
      }
      d.nin = 1;
      d.in[0] = x;
      d.ia[0] = nc_perm_encode(perm, rank);
      return nc_rg_add(r, &d);
    }
    case NC_OP_SLICE: case NC_OP_CONCAT: {
      nc_type fb = nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 0, 3);
      fb.dim[fb.rank++] = nc_rg_cdim(r, 1, 9);
      nc_id x = nc_rg_base(r, p_const_axis, NULL, fb);
      if (x == NC_NONE) return NC_NONE;
      nc_type t = *nc_rg_t(r, x);
      int axes[NC_MAX_RANK], na = 0;
      for (int i = 0; i < t.rank; i++)
        if (nc_dim_is_const(t.dim[i])) axes[na++] = i;
      int axis = axes[rnd(r, na)];
      d.ia[0] = axis;
      d.nin = 1;
      d.in[0] = x;
      if (op == NC_OP_SLICE) {
        int64_t n = t.dim[axis].c, s = rnd(r, (int)(n > 1000 ? 1000 : n));
        d.ia[1] = s;
        d.ia[2] = s + 1 + rnd(r, (int)(n - s > 1000 ? 1000 : n - s));
      } else {
        int more = rnd(r, 4);
        for (int k = 0; k < more; k++) {
          nc_type u = t;
          u.dim[axis] = nc_rg_cdim(r, 1, 5);
          d.in[d.nin++] = chance(r, 30) ? x : nc_rg_of_type(r, u);
        }
      }
      return nc_rg_add(r, &d);
    }
    case NC_OP_EXPAND: {
      nc_type fb = nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 0, 3);
      if (fb.rank) fb.dim[rnd(r, fb.rank)] = nc_dim_const(1);
      nc_id x = nc_rg_base(r, p_has_one, NULL, fb);
      if (x == NC_NONE) return NC_NONE;
      nc_type xt = *nc_rg_t(r, x), t;
      memset(&t, 0, sizeof t);
      t.dtype = xt.dtype;
      int extra = rnd(r, NC_MAX_RANK - xt.rank + 1);
      if (extra > 2) extra = 2;
      for (int i = 0; i < extra; i++) t.dim[t.rank++] = nc_rg_dim(r);
      for (int i = 0; i < xt.rank; i++) {
        bool one = xt.dim[i].c == 1 && xt.dim[i].e == 0;
        t.dim[t.rank++] = one && chance(r, 70) ? nc_rg_dim(r) : xt.dim[i];
      }
      d.nin = 1;
      d.in[0] = x;
      d.type = t;
      return nc_rg_add(r, &d);
    }
    case NC_OP_SHIFT: {
      nc_id x = nc_rg_base(r, p_any, &R1, nc_rg_type(r, (nc_dtype)rnd(r, NC_DTYPE_COUNT), 1, 4));
      if (x == NC_NONE) return NC_NONE;
      d.nin = 1;
      d.in[0] = x;
      d.ia[0] = rnd(r, nc_rg_t(r, x)->rank);
      d.ia[1] = chance(r, 80) ? rnd(r, 7) - 3 : (chance(r, 50) ? NC_MAX_DIM : -NC_MAX_DIM);
      return nc_rg_add(r, &d);
    }
    case NC_OP_COUNT: break;
  }
  return NC_NONE;
}

nc_graph *nc_test_random_graph_ex(uint64_t seed, int target_nodes, unsigned flags) {
  nc_rg r;
  memset(&r, 0, sizeof r);
  r.rng = seed * 0x2545F4914F6CDD1Dull + 1;
  r.flags = flags;
  r.reuse_pct = flags & NC_RG_DEEP ? 90 : 65;
  char gname[128];
  nc_rg_name(&r, gname, sizeof gname);
  r.g = nc_graph_new(gname);
  if (!r.g) return NULL;
  nc_status st = nc_graph_sym(r.g, chance(&r, 50) ? "B" : "batch_B", &r.symB);
  if (!st) st = nc_graph_sym(r.g, "T", &r.symT);
  if (!st && chance(&r, 30)) st = nc_graph_sym(r.g, "unused_S2", NULL);
  if (st) {
    fprintf(stderr, "randgraph: %s\n", nc_status_msg(st));
    nc_status_free(st);
    nc_graph_free(r.g);
    return NULL;
  }
  // the first NC_OP_COUNT choices cover every op, in a shuffled order
  int order[NC_OP_COUNT];
  for (int i = 0; i < NC_OP_COUNT; i++) order[i] = i;
  for (int i = NC_OP_COUNT - 1; i > 0; i--) {
    int j = rnd(&r, i + 1), s = order[i];
    order[i] = order[j];
    order[j] = s;
  }
  int covered = target_nodes >= NC_OP_COUNT ? NC_OP_COUNT : 0;
  for (int step = 0; !r.failed; step++) {
    if (step >= covered && (int)nc_graph_nnodes(r.g) >= target_nodes) break;
    if (step > 8 * target_nodes + 2 * NC_OP_COUNT) break;  // cannot happen; guards a bug
    nc_op op = step < covered ? (nc_op)order[step] : (nc_op)rnd(&r, NC_OP_COUNT);
    nc_rg_op(&r, op);
  }
  // 1 to 4 named outputs, mostly late nodes
  int nout = 1 + rnd(&r, 4);
  uint32_t n = nc_graph_nnodes(r.g);
  for (int k = 0; k < nout && n && !r.failed; k++) {
    char oname[128];
    nc_rg_name(&r, oname, sizeof oname);
    nc_id id = chance(&r, 70) ? n - 1 - (uint32_t)rnd(&r, (int)(n < 8 ? n : 8)) : (uint32_t)rnd(&r, (int)n);
    if ((st = nc_graph_set_output(r.g, oname, id))) {
      fprintf(stderr, "randgraph: output: %s\n", nc_status_msg(st));
      nc_status_free(st);
      r.failed = true;
    }
  }
  if (!r.failed && (st = nc_graph_verify(r.g))) {
    fprintf(stderr, "randgraph: verify: %s\n", nc_status_msg(st));
    nc_status_free(st);
    r.failed = true;
  }
  if (r.failed) {
    fprintf(stderr, "randgraph: seed %llu target %d failed\n", (unsigned long long)seed, target_nodes);
    nc_graph_free(r.g);
    return NULL;
  }
  return r.g;
}

nc_graph *nc_test_random_graph(uint64_t seed, int target_nodes) {
  return nc_test_random_graph_ex(seed, target_nodes, 0);
}
