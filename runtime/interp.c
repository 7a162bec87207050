// The reference interpreter: driver (feeds, symbol binding, liveness,
// dispatch), leaves and layout ops. Elementwise ops, reductions, contractions
// and embeddings are in interp_ops.c; norms, softmax, rope, attention and
// losses in interp_nn.c.
//
// Semantics decided here (beyond the comments of ir/ops.def):
// - Symbols bind from feeds: a feed dim that is a single symbol with
//   coefficient 1 binds it; other symbolic dims are checked after all feeds
//   bound. A symbol must bind to a size >= 1 (no empty tensors).
// - Only nodes the requested ids depend on are evaluated; a needed input/param
//   must be fed; feeds of unneeded leaves are still type-checked. Values are
//   freed after their last use. input/param values alias the feed (no copy);
//   results handed back are always owned copies.
// - Floats are computed in double and rounded to the node's dtype once
//   (nc_elem_set; bf16/f16 go through f32, as every backend does). Reductions,
//   matmul/bmm, norms, softmax, attention and losses accumulate in double.
// - Integers: exact int64 arithmetic with two's-complement wraparound to the
//   dtype (neg/abs/square/add/sub/mul of i32/u8 wrap; INT_MIN / -1 wraps to
//   INT_MIN). Integer division truncates toward zero; division by zero is a
//   runtime error. Float division by zero follows IEEE (inf/NaN).
// - const: the value rounded to the dtype (ints: truncated, saturated).
//   iota: the index along `axis`, wrapped to integer dtypes (u8: index % 256).
// - cast: float->int truncates toward zero and saturates, NaN->0;
//   int->int wraps (like C and PyTorch); ->bool is `!= 0` (NaN -> true);
//   bool->x is 0/1.
// - relu/abs/neg/square also on ints; relu(NaN) = NaN. max/min propagate
//   NaN (binary and reduce_max).
// - softmax/log_softmax of a row that is all -inf give NaN (as PyTorch).
// - attention: the keys a query sees form one contiguous range
//   [max(0, p-window+1) if window>0 else 0, min(kvlen, p+1) if causal else
//   kvlen) with p = kvlen - Tq + i. The window mask applies with or without
//   causal. A query with no key outputs zeros (and gets zero gradients).
//   kvlen outside [1, Tk], or kvlen < Tq when causal, is a runtime error.
// - cross_entropy: ignored positions give 0 and do not count; mean over zero
//   counted positions is 0 (PyTorch gives NaN; we never want NaN from a fully
//   masked micro-batch). A target outside [0, V) that is not ignore_index is a
//   runtime error. cross_entropy_grad for mean divides by the same count
//   (zero rows everywhere when the count is 0).
// - gather/scatter_add: an id outside [0, V) is a runtime error. scatter_add
//   accumulates in double (floats) or wrapping int64 (ints).
#include "runtime/interp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/buf.h"
#include "ir/rules.h"
#include "runtime/interp_impl.h"

static const nc_interp_fn nc_interp_table[NC_OP_COUNT] = {
#define X(ID, NAME, MINI, MAXI, KIND, FLAGS, ATTRS, RULE) nc_interp_##ID,
#include "ir/ops.def"
#undef X
};

// ---- leaves -------------------------------------------------------------------
NC_INTERP_FN(INPUT) {
  c->out->data = c->feed->data;  // aliases the feed; the driver copies results
  c->out->owned = false;
  return NC_OK;
}

NC_INTERP_FN(PARAM) { return nc_interp_INPUT(c); }

NC_INTERP_FN(CONST) {
  int64_t n = nc_tensor_numel(c->out);
  for (int64_t i = 0; i < n; i++) nc_elem_set(c->out->data, c->out->dtype, (size_t)i, c->n->fa[0]);
  return NC_OK;
}

NC_INTERP_FN(IOTA) {
  nc_tensor *o = c->out;
  int64_t st[NC_MAX_RANK], n = nc_tensor_numel(o);
  nc_interp_strides(o, st);
  int axis = (int)c->n->ia[0];
  for (int64_t i = 0; i < n; i++) {
    int64_t v = (i / st[axis]) % o->shape[axis];
    if (nc_dtype_is_float(o->dtype)) nc_elem_set(o->data, o->dtype, (size_t)i, (double)v);
    else nc_interp_set_wrap(o->data, o->dtype, (size_t)i, v);
  }
  return NC_OK;
}

// ---- layout ---------------------------------------------------------------------
// out[idx] = in[sum idx[d] * stride[d]], iterating out in row-major order.
static void nc_interp_gather_strided(const nc_tensor *in, nc_tensor *out, const int64_t *stride,
                                     int64_t base) {
  size_t es = nc_dtype_size(out->dtype);
  int64_t n = nc_tensor_numel(out);
  nc_interp_iter it;
  nc_interp_iter_init(&it, out->rank, out->shape, stride);
  const char *src = in->data;
  char *dst = out->data;
  for (int64_t i = 0; i < n; i++) {
    memcpy(dst + (size_t)i * es, src + (size_t)(base + it.off) * es, es);
    nc_interp_iter_next(&it);
  }
}

NC_INTERP_FN(RESHAPE) {
  memcpy(c->out->data, c->in[0]->data, nc_tensor_nbytes(c->out));
  return NC_OK;
}

NC_INTERP_FN(PERMUTE) {
  const nc_tensor *x = c->in[0];
  int64_t xs[NC_MAX_RANK], st[NC_MAX_RANK];
  nc_interp_strides(x, xs);
  for (int i = 0; i < x->rank; i++) st[i] = xs[nc_perm_at(c->n->ia[0], i)];
  nc_interp_gather_strided(x, c->out, st, 0);
  return NC_OK;
}

NC_INTERP_FN(SLICE) {
  const nc_tensor *x = c->in[0];
  int64_t xs[NC_MAX_RANK];
  nc_interp_strides(x, xs);
  nc_interp_gather_strided(x, c->out, xs, c->n->ia[1] * xs[c->n->ia[0]]);
  return NC_OK;
}

NC_INTERP_FN(CONCAT) {
  nc_tensor *o = c->out;
  int axis = (int)c->n->ia[0];
  size_t es = nc_dtype_size(o->dtype);
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; d++) outer *= o->shape[d];
  for (int d = axis + 1; d < o->rank; d++) inner *= o->shape[d];
  int64_t orow = o->shape[axis] * inner, at = 0;  // elements per outer row of out
  for (int k = 0; k < c->n->nin; k++) {
    const nc_tensor *x = c->in[k];
    int64_t xrow = x->shape[axis] * inner;
    for (int64_t r = 0; r < outer; r++)
      memcpy((char *)o->data + (size_t)(r * orow + at) * es, (const char *)x->data + (size_t)(r * xrow) * es,
             (size_t)xrow * es);
    at += xrow;
  }
  return NC_OK;
}

NC_INTERP_FN(EXPAND) {
  const nc_tensor *x = c->in[0];
  nc_tensor *o = c->out;
  int64_t xs[NC_MAX_RANK], st[NC_MAX_RANK];
  nc_interp_strides(x, xs);
  int off = o->rank - x->rank;
  for (int d = 0; d < o->rank; d++) {
    int xd = d - off;
    st[d] = (xd < 0 || x->shape[xd] == 1) ? 0 : xs[xd];
  }
  nc_interp_gather_strided(x, o, st, 0);
  return NC_OK;
}

// ---- the driver -------------------------------------------------------------------
typedef struct {
  const nc_graph *g;
  uint32_t nn;
  int64_t syms[NC_MAX_SYMS];
  const char *bound_by[NC_MAX_SYMS];  // the feed that bound symbol k (NULL = unbound)
  const nc_tensor **feed;             // per node: the fed value of an input/param
  nc_tensor *vals;                    // per node: its value while live
  uint32_t *last;                     // per node: id of its last consumer (UINT32_MAX: kept)
  uint8_t *need;
} nc_interp_state;

static void nc_interp_state_free(nc_interp_state *s) {
  if (s->vals)
    for (uint32_t i = 0; i < s->nn; i++) nc_tensor_free(&s->vals[i]);
  free(s->vals);
  free(s->feed);
  free(s->last);
  free(s->need);
}

static const char *nc_leaf_kind(const nc_node *n) { return n->op == NC_OP_INPUT ? "input" : "param"; }

// k if d is exactly one symbol with coefficient 1, else -1.
static int nc_dim_single_sym(nc_dim d) {
  if (d.c != 1 || d.e == 0) return -1;
  for (int k = 0; k < NC_MAX_SYMS; k++)
    if (d.e == (uint64_t)1 << (4 * k)) return k;
  return -1;
}

// Evaluates d under the binding; -1 if a symbol is unbound (*unbound = it),
// -2 if the value exceeds NC_MAX_ELEMS.
static int64_t nc_dim_value(const nc_interp_state *s, nc_dim d, int *unbound) {
  int64_t v = d.c;
  for (int k = 0; k < NC_MAX_SYMS; k++) {
    for (uint64_t e = (d.e >> (4 * k)) & 15; e > 0; e--) {
      if (!s->bound_by[k]) {
        *unbound = k;
        return -1;
      }
      if (s->syms[k] > NC_MAX_ELEMS / v) return -2;
      v *= s->syms[k];
    }
  }
  return v;
}

// " (B=2, T=7)" for the symbols bound so far, into buf.
static void nc_binding_str(const nc_interp_state *s, char *buf, size_t n) {
  size_t o = 0;
  buf[0] = 0;
  for (int k = 0; k < nc_graph_nsyms(s->g) && o < n; k++) {
    if (!s->bound_by[k]) continue;
    o += (size_t)snprintf(buf + o, n - o, "%s%s=%lld", o ? ", " : " (", nc_graph_sym_name(s->g, k),
                          (long long)s->syms[k]);
  }
  if (o && o < n) snprintf(buf + o, n - o, ")");
}

// The graph's inputs and params by name (open addressing; an input wins over a
// param of the same name, as the lookup order of nc_graph_find_leaf), so that
// binding the ~100 feeds of a decode step costs no scan of the graph per feed.
typedef struct {
  uint32_t mask;  // capacity - 1 (a power of two), 0: no index (few feeds: nc_graph_find_leaf)
  nc_id *slot;    // NC_NONE: empty
} nc_leaf_index;

static uint32_t nc_leaf_hash(const char *name) { return (uint32_t)nc_hash_bytes(NC_HASH_SEED, name, strlen(name)); }

static nc_status nc_leaf_index_build(const nc_graph *g, uint32_t nn, nc_leaf_index *x) {
  uint32_t nl = 0, cap = 16;
  for (uint32_t i = 0; i < nn; i++) {
    nc_op op = nc_graph_node(g, i)->op;
    nl += op == NC_OP_INPUT || op == NC_OP_PARAM;
  }
  while (cap < 2 * nl + 2) cap *= 2;
  x->slot = malloc(cap * sizeof *x->slot);
  if (!x->slot) return nc_errorf(NC_E_NOMEM, "out of memory");
  for (uint32_t i = 0; i < cap; i++) x->slot[i] = NC_NONE;
  x->mask = cap - 1;
  for (uint32_t i = 0; i < nn; i++) {
    nc_op op = nc_graph_node(g, i)->op;
    if (op != NC_OP_INPUT && op != NC_OP_PARAM) continue;
    const char *name = nc_node_name(g, i);
    uint32_t h = nc_leaf_hash(name) & x->mask;
    while (x->slot[h] != NC_NONE && strcmp(nc_node_name(g, x->slot[h]), name)) h = (h + 1) & x->mask;
    if (x->slot[h] == NC_NONE || (op == NC_OP_INPUT && nc_graph_node(g, x->slot[h])->op == NC_OP_PARAM)) x->slot[h] = i;
  }
  return NC_OK;
}

static nc_id nc_leaf_index_find(const nc_graph *g, const nc_leaf_index *x, const char *name) {
  if (!x->mask) {
    nc_id id = nc_graph_find_leaf(g, NC_OP_INPUT, name);
    return id != NC_NONE ? id : nc_graph_find_leaf(g, NC_OP_PARAM, name);
  }
  for (uint32_t h = nc_leaf_hash(name) & x->mask; x->slot[h] != NC_NONE; h = (h + 1) & x->mask)
    if (!strcmp(nc_node_name(g, x->slot[h]), name)) return x->slot[h];
  return NC_NONE;
}

static nc_status nc_interp_bind_feeds(nc_interp_state *s, const nc_feed *feeds, int nfeeds, const nc_leaf_index *x);

static nc_status nc_interp_bind(nc_interp_state *s, const nc_feed *feeds, int nfeeds) {
  nc_leaf_index x = {0};
  if (nfeeds > 8) NC_TRY(nc_leaf_index_build(s->g, s->nn, &x));
  nc_status st = nc_interp_bind_feeds(s, feeds, nfeeds, &x);
  free(x.slot);
  return st;
}

static nc_status nc_interp_bind_feeds(nc_interp_state *s, const nc_feed *feeds, int nfeeds, const nc_leaf_index *x) {
  const nc_graph *g = s->g;
  for (int f = 0; f < nfeeds; f++) {
    const char *name = feeds[f].name;
    if (!name) return nc_errorf(NC_E_INVALID, "feed %d has no name", f);
    const nc_tensor *v = feeds[f].value;
    if (!v || !v->data) return nc_errorf(NC_E_INVALID, "feed '%s' has no value", name);
    nc_id id = nc_leaf_index_find(g, x, name);
    if (id == NC_NONE)
      return nc_errorf(NC_E_INVALID, "feed '%s' names no input or param of graph '%s'", name, nc_graph_name(g));
    if (s->feed[id]) return nc_errorf(NC_E_INVALID, "feed '%s' is given twice", name);
    s->feed[id] = v;
    const nc_node *n = nc_graph_node(g, id);
    char want[200], got[200];
    if (v->dtype != n->type.dtype || v->rank != n->type.rank)
      return nc_errorf(NC_E_TYPE, "%s '%s': expected %s, got %s", nc_leaf_kind(n), name,
                       nc_type_str(g, &n->type, want, sizeof want), nc_tensor_type_str(v, got, sizeof got));
    for (int d = 0; d < v->rank; d++) {
      int k = nc_dim_single_sym(n->type.dim[d]);
      if (k < 0) continue;
      if (v->shape[d] < 1)
        return nc_errorf(NC_E_INVALID, "%s '%s': symbol %s would be %lld from its dim %d (must be >= 1)",
                         nc_leaf_kind(n), name, nc_graph_sym_name(g, k), (long long)v->shape[d], d);
      if (!s->bound_by[k]) {
        s->bound_by[k] = name;
        s->syms[k] = v->shape[d];
      } else if (s->syms[k] != v->shape[d]) {
        return nc_errorf(NC_E_TYPE, "%s is %lld from '%s' but %lld from '%s'", nc_graph_sym_name(g, k),
                         (long long)s->syms[k], s->bound_by[k], (long long)v->shape[d], name);
      }
    }
  }
  // every fed extent must now match its declared dim
  for (uint32_t id = 0; id < s->nn; id++) {
    const nc_tensor *v = s->feed[id];
    if (!v) continue;
    const nc_node *n = nc_graph_node(g, id);
    const char *name = nc_node_name(g, id);
    for (int d = 0; d < v->rank; d++) {
      int unbound = -1;
      int64_t want = nc_dim_value(s, n->type.dim[d], &unbound);
      char dims[96];
      if (want == -1)
        return nc_errorf(NC_E_INVALID, "%s '%s': symbol %s in dim %d (%s) is not bound by any feed",
                         nc_leaf_kind(n), name, nc_graph_sym_name(g, unbound), d,
                         nc_dim_str(g, n->type.dim[d], dims, sizeof dims));
      if (want != v->shape[d]) {
        char wt[200], gt[200], bind[200] = "";
        bool symbolic = false;
        for (int e = 0; e < n->type.rank; e++) symbolic |= !nc_dim_is_const(n->type.dim[e]);
        if (symbolic) nc_binding_str(s, bind, sizeof bind);
        return nc_errorf(NC_E_TYPE, "%s '%s': expected %s%s, got %s", nc_leaf_kind(n), name,
                         nc_type_str(g, &n->type, wt, sizeof wt), bind, nc_tensor_type_str(v, gt, sizeof gt));
      }
    }
  }
  return NC_OK;
}

// Marks needed nodes, checks their feeds and symbols, computes last uses.
static nc_status nc_interp_plan(nc_interp_state *s, const nc_id *ids, int n) {
  const nc_graph *g = s->g;
  for (int i = 0; i < n; i++) s->need[ids[i]] = 1;
  for (uint32_t id = s->nn; id-- > 0;) {
    if (!s->need[id]) continue;
    const nc_node *nd = nc_graph_node(g, id);
    for (int k = 0; k < nd->nin; k++) s->need[nc_graph_input_of(g, id, k)] = 1;
  }
  for (uint32_t id = 0; id < s->nn; id++) {
    const nc_node *nd = nc_graph_node(g, id);
    if (s->need[id] && (nd->op == NC_OP_INPUT || nd->op == NC_OP_PARAM) && !s->feed[id])
      return nc_errorf(NC_E_INVALID, "%s '%s' is not fed", nc_leaf_kind(nd), nc_node_name(g, id));
  }
  for (uint32_t id = 0; id < s->nn; id++) {
    if (!s->need[id]) continue;
    const nc_node *nd = nc_graph_node(g, id);
    int64_t numel = 1;
    for (int d = 0; d < nd->type.rank; d++) {
      int unbound = -1;
      int64_t v = nc_dim_value(s, nd->type.dim[d], &unbound);
      if (v == -1)
        return nc_errorf(NC_E_INVALID, "node %%%u (%s): symbol %s is not bound (no feed has it as a whole dim)", id,
                         nc_op_get(nd->op)->name, nc_graph_sym_name(g, unbound));
      if (v == -2 || numel > NC_MAX_ELEMS / v)
        return nc_errorf(NC_E_NOMEM, "node %%%u (%s): more than 2^48 elements under this binding", id,
                         nc_op_get(nd->op)->name);
      numel *= v;
    }
  }
  for (uint32_t id = 0; id < s->nn; id++) {
    s->last[id] = 0;
    if (!s->need[id]) continue;
    for (int k = 0; k < nc_graph_node(g, id)->nin; k++) s->last[nc_graph_input_of(g, id, k)] = id;
  }
  for (int i = 0; i < n; i++) s->last[ids[i]] = UINT32_MAX;
  return NC_OK;
}

static nc_status nc_interp_node(nc_interp_state *s, nc_id id) {
  const nc_graph *g = s->g;
  const nc_node *nd = nc_graph_node(g, id);
  const nc_tensor *in[NC_MAX_INPUTS];
  for (int k = 0; k < nd->nin; k++) in[k] = &s->vals[nc_graph_input_of(g, id, k)];
  nc_tensor *out = &s->vals[id];
  int64_t shape[NC_MAX_RANK];
  for (int d = 0; d < nd->type.rank; d++) {
    int unbound;
    shape[d] = nc_dim_value(s, nd->type.dim[d], &unbound);
  }
  if (nd->op == NC_OP_INPUT || nd->op == NC_OP_PARAM) *out = nc_tensor_wrap(NULL, nd->type.dtype, nd->type.rank, shape);
  else NC_TRY(nc_status_prefix(nc_tensor_alloc(out, nd->type.dtype, nd->type.rank, shape), "node %%%u (%s): ", id,
                               nc_op_get(nd->op)->name));
  nc_interp_call c = {g, nd, id, in, out, s->feed[id]};
  nc_status st = nc_interp_table[nd->op](&c);
  if (st) return nc_status_prefix(st, "node %%%u (%s): ", id, nc_op_get(nd->op)->name);
  return NC_OK;
}

nc_status nc_interp_eval(const nc_graph *g, const nc_feed *feeds, int nfeeds, const nc_id *ids, int n,
                         nc_tensor *values) {
  if (!g) return nc_errorf(NC_E_INVALID, "interp: graph is NULL");
  if (n < 0 || nfeeds < 0 || (n > 0 && (!ids || !values)) || (nfeeds > 0 && !feeds))
    return nc_errorf(NC_E_INVALID, "interp: bad arguments");
  for (int i = 0; i < n; i++) memset(&values[i], 0, sizeof values[i]);
  nc_interp_state s;
  memset(&s, 0, sizeof s);
  s.g = g;
  s.nn = nc_graph_nnodes(g);
  for (int i = 0; i < n; i++)
    if (ids[i] >= s.nn)
      return nc_errorf(NC_E_INVALID, "interp: node %%%u does not exist (graph '%s' has %u nodes)", ids[i],
                       nc_graph_name(g), s.nn);
  size_t nn = s.nn ? s.nn : 1;
  s.vals = calloc(nn, sizeof *s.vals);
  s.feed = calloc(nn, sizeof *s.feed);
  s.last = calloc(nn, sizeof *s.last);
  s.need = calloc(nn, sizeof *s.need);
  nc_status st = NC_OK;
  if (!s.vals || !s.feed || !s.last || !s.need) st = nc_errorf(NC_E_NOMEM, "interp: out of memory");
  if (!st) st = nc_interp_bind(&s, feeds, nfeeds);
  if (!st) st = nc_interp_plan(&s, ids, n);
  for (uint32_t id = 0; !st && id < s.nn; id++) {
    if (!s.need[id]) continue;
    st = nc_interp_node(&s, id);
    const nc_node *nd = nc_graph_node(g, id);
    for (int k = 0; !st && k < nd->nin; k++) {
      nc_id in = nc_graph_input_of(g, id, k);
      if (s.last[in] == id) nc_tensor_free(&s.vals[in]);
    }
  }
  for (int i = 0; !st && i < n; i++) {
    nc_tensor *v = &s.vals[ids[i]];
    bool again = false;
    for (int j = i + 1; j < n; j++) again |= ids[j] == ids[i];
    if (v->owned && !again) {
      values[i] = *v;
      memset(v, 0, sizeof *v);
    } else {
      st = nc_tensor_clone(&values[i], v);
    }
  }
  if (st)
    for (int i = 0; i < n; i++) nc_tensor_free(&values[i]);
  nc_interp_state_free(&s);
  return st;
}

nc_status nc_interp_run(const nc_graph *g, const nc_feed *feeds, int nfeeds, nc_tensor *outputs) {
  if (!g) return nc_errorf(NC_E_INVALID, "interp: graph is NULL");
  int n = nc_graph_noutputs(g);
  nc_id ids[64] = {0}, *p = ids;
  if (n > 64 && !(p = malloc((size_t)n * sizeof *p))) return nc_errorf(NC_E_NOMEM, "interp: out of memory");
  for (int k = 0; k < n; k++) p[k] = nc_graph_output(g, k);
  nc_status st = nc_interp_eval(g, feeds, nfeeds, p, n, outputs);
  if (p != ids) free(p);
  return st;
}

nc_status nc_feeds_bind(const nc_graph *g, const nc_feed *feeds, int nfeeds, int64_t syms[NC_MAX_SYMS],
                        const nc_tensor **per_node) {
  nc_interp_state s;
  memset(&s, 0, sizeof s);
  s.g = g;
  s.nn = nc_graph_nnodes(g);
  s.feed = calloc(s.nn ? s.nn : 1, sizeof *s.feed);
  if (!s.feed) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_status st = nc_interp_bind(&s, feeds, nfeeds);
  if (!st) {
    for (int k = 0; k < nc_graph_nsyms(g); k++)
      if (!s.bound_by[k]) {
        st = nc_errorf(NC_E_INVALID, "symbol %s is not bound by any feed", nc_graph_sym_name(g, k));
        break;
      }
    for (int k = 0; k < NC_MAX_SYMS; k++) syms[k] = s.bound_by[k] ? s.syms[k] : 0;
    if (per_node) memcpy(per_node, s.feed, s.nn * sizeof *s.feed);
  }
  free(s.feed);
  return st;
}
