// Fusion decisions and lowering of graph nodes to kernel IR.
#include "passes/lower.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/rules.h"
#include "passes/memplan.h"

typedef struct {
  const nc_graph *g;
  nc_plan *p;
  nc_plan_kernel *pk;  // the kernel being built
  nc_kernel *k;
  int depth;
  nc_status st;
} nc_lw;

static bool nc_lw_opaque_unsupported(nc_op op) {
  switch (op) {
    case NC_OP_RMS_NORM: case NC_OP_RMS_NORM_GRAD: case NC_OP_SOFTMAX: case NC_OP_LOG_SOFTMAX:
    case NC_OP_ROPE: case NC_OP_ATTENTION: case NC_OP_ATTENTION_GRAD:
      return true;
    default: return false;
  }
}

static nc_kop nc_lw_kop(nc_op op) {
  switch (op) {
#define M(N) case NC_OP_##N: return NC_KOP_##N;
    M(NEG) M(ABS) M(RELU) M(SQUARE) M(TANH) M(EXP) M(LOG) M(SQRT) M(RSQRT) M(SIGMOID) M(SIN) M(COS) M(NOT) M(POWC)
    M(ADD) M(SUB) M(MUL) M(DIV) M(MAX) M(MIN) M(AND) M(OR) M(EQ) M(NE) M(LT) M(LE) M(GT) M(GE)
#undef M
    default: return NC_KOP_COUNT;
  }
}

// A dim as an i64 expression over the kernel's symbol arguments.
static nc_kx nc_lw_dim(nc_lw *w, nc_dim d) {
  nc_kx x = nc_kx_idx(w->k, d.c);
  for (int s = 0; s < NC_MAX_SYMS; s++)
    for (uint64_t e = (d.e >> (4 * s)) & 15; e > 0; e--)
      x = nc_kx_binary(w->k, NC_KOP_MUL, x, nc_kx_arg(w->k, nc_kernel_arg(w->k, nc_graph_sym_name(w->g, s))));
  return x;
}

// a divides b as monomials: coefficient and every symbol's exponent.
static bool nc_lw_divides(nc_dim a, nc_dim b) {
  if (a.c <= 0 || b.c % a.c) return false;
  for (int s = 0; s < NC_MAX_SYMS; s++)
    if (((a.e >> (4 * s)) & 15) > ((b.e >> (4 * s)) & 15)) return false;
  return true;
}

// Row-major flat index of idx[] in a tensor of type t.
static nc_kx nc_lw_flatten(nc_lw *w, const nc_type *t, const nc_kx *idx) {
  nc_kx f = nc_kx_idx(w->k, 0);
  for (int i = 0; i < t->rank; i++) f = nc_kx_binary(w->k, NC_KOP_ADD, nc_kx_binary(w->k, NC_KOP_MUL, f, nc_lw_dim(w, t->dim[i])), idx[i]);
  return f;
}

// The kernel buffer holding materialized node n (added on first use).
static int nc_lw_buf(nc_lw *w, nc_id n, bool written) {
  for (int b = 0; b < w->k->nbufs; b++)
    if (w->pk->buf_node[b] == n) return b;
  char name[32];
  snprintf(name, sizeof name, "t%u", n);
  int b = nc_kernel_buf(w->k, name, nc_type_of(w->g, n).dtype, written);
  if (b < NC_KERNEL_MAX_BUFS) w->pk->buf_node[b] = n;
  return b;
}

static nc_kx nc_lw_clamp(nc_lw *w, nc_kx i, int64_t lo, nc_kx hi_incl) {
  return nc_kx_binary(w->k, NC_KOP_MIN, nc_kx_binary(w->k, NC_KOP_MAX, i, nc_kx_idx(w->k, lo)), hi_incl);
}

// The value of node n at multi-index idx (rank of n), inlining unmaterialized nodes.
static nc_kx nc_lw_emit(nc_lw *w, nc_id n, const nc_kx *idx, bool root) {
  nc_kernel *k = w->k;
  const nc_node *nd = nc_graph_node(w->g, n);
  nc_type t = nd->type;
  if (w->st) return nc_kx_idx(k, 0);
  if (++w->depth > 512) {
    w->st = nc_errorf(NC_E_UNSUPPORTED, "lowering: fused expression deeper than 512 nodes at node %%%u", n);
    return nc_kx_idx(k, 0);
  }
  nc_kx r = NC_KX_NONE, in_idx[NC_MAX_RANK];
  nc_id in0 = nd->nin ? nc_graph_input_of(w->g, n, 0) : NC_NONE;
  nc_type it = in0 != NC_NONE ? nc_type_of(w->g, in0) : t;
  if (!root && w->p->materialized[n]) {
    r = nc_kx_load(k, nc_lw_buf(w, n, false), nc_lw_flatten(w, &t, idx));
    goto done;
  }
  switch (nd->op) {
    case NC_OP_CONST:
      r = nc_dtype_is_float(t.dtype) ? nc_kx_const_f(k, t.dtype, nd->fa[0]) : nc_kx_const_i(k, t.dtype, (int64_t)nd->fa[0]);
      break;
    case NC_OP_IOTA: r = nc_kx_cast(k, idx[nd->ia[0]], t.dtype); break;
    case NC_OP_CAST: r = nc_kx_cast(k, nc_lw_emit(w, in0, idx, false), t.dtype); break;
    case NC_OP_WHERE: {
      nc_kx c = nc_lw_emit(w, in0, idx, false);
      nc_kx a = nc_lw_emit(w, nc_graph_input_of(w->g, n, 1), idx, false);
      nc_kx b = nc_lw_emit(w, nc_graph_input_of(w->g, n, 2), idx, false);
      r = nc_kx_select(k, c, a, b);
      break;
    }
    case NC_OP_EXPAND: {
      int off = t.rank - it.rank;
      for (int i = 0; i < it.rank; i++)
        in_idx[i] = nc_dim_eq(it.dim[i], t.dim[off + i]) ? idx[off + i] : nc_kx_idx(k, 0);
      r = nc_lw_emit(w, in0, in_idx, false);
      break;
    }
    case NC_OP_RESHAPE: {
      // Split both shapes into groups of consecutive dims with equal products
      // ((B*T, V) <- (B, T, V): {B*T}<->{B,T}, {V}<->{V}); within a group the
      // output index is flattened and unflattened into the input's dims, so
      // dims that map one to one get no division at all.
      int o = 0, q = 0;
      while (o < t.rank || q < it.rank) {
        int o0 = o, q0 = q;
        nc_dim po = nc_dim_const(1), pq = nc_dim_const(1);
        if (o < t.rank) nc_dim_mul(po, t.dim[o++], &po);
        if (q < it.rank) nc_dim_mul(pq, it.dim[q++], &pq);
        while (!nc_dim_eq(po, pq)) {
          if (o < t.rank && nc_lw_divides(po, pq)) nc_dim_mul(po, t.dim[o++], &po);
          else if (q < it.rank && nc_lw_divides(pq, po)) nc_dim_mul(pq, it.dim[q++], &pq);
          else if (o < t.rank) nc_dim_mul(po, t.dim[o++], &po);
          else if (q < it.rank) nc_dim_mul(pq, it.dim[q++], &pq);
          else break;
        }
        if (o - o0 == 1 && q - q0 == 1) {
          in_idx[q0] = idx[o0];
          continue;
        }
        nc_kx flat = nc_kx_idx(k, 0);
        for (int i = o0; i < o; i++) flat = nc_kx_binary(k, NC_KOP_ADD, nc_kx_binary(k, NC_KOP_MUL, flat, nc_lw_dim(w, t.dim[i])), idx[i]);
        for (int i = q - 1; i >= q0; i--) {
          nc_kx d = nc_lw_dim(w, it.dim[i]);
          in_idx[i] = i > q0 ? nc_kx_binary(k, NC_KOP_IMOD, flat, d) : flat;
          if (i > q0) flat = nc_kx_binary(k, NC_KOP_IDIV, flat, d);
        }
      }
      r = nc_lw_emit(w, in0, in_idx, false);
      break;
    }
    case NC_OP_PERMUTE:
      for (int i = 0; i < t.rank; i++) in_idx[nc_perm_at(nd->ia[0], i)] = idx[i];
      r = nc_lw_emit(w, in0, in_idx, false);
      break;
    case NC_OP_SLICE:
      memcpy(in_idx, idx, sizeof(nc_kx) * (size_t)t.rank);
      in_idx[nd->ia[0]] = nc_kx_binary(k, NC_KOP_ADD, idx[nd->ia[0]], nc_kx_idx(k, nd->ia[1]));
      r = nc_lw_emit(w, in0, in_idx, false);
      break;
    case NC_OP_SHIFT: {
      int axis = (int)nd->ia[0];
      nc_kx n_ax = nc_lw_dim(w, t.dim[axis]);
      nc_kx src = nc_kx_binary(k, NC_KOP_SUB, idx[axis], nc_kx_idx(k, nd->ia[1]));
      nc_kx ok = nc_kx_binary(k, NC_KOP_AND, nc_kx_binary(k, NC_KOP_GE, src, nc_kx_idx(k, 0)), nc_kx_binary(k, NC_KOP_LT, src, n_ax));
      memcpy(in_idx, idx, sizeof(nc_kx) * (size_t)t.rank);
      in_idx[axis] = nc_lw_clamp(w, src, 0, nc_kx_binary(k, NC_KOP_SUB, n_ax, nc_kx_idx(k, 1)));
      nc_kx v = nc_lw_emit(w, in0, in_idx, false);
      nc_kx zero = nc_dtype_is_float(t.dtype) ? nc_kx_const_f(k, t.dtype, 0) : nc_kx_const_i(k, t.dtype, 0);
      r = nc_kx_select(k, ok, v, zero);
      break;
    }
    case NC_OP_CONCAT: {
      int axis = (int)nd->ia[0];
      int64_t off = 0;
      for (int q = 0; q < nd->nin; q++) {
        nc_id in = nc_graph_input_of(w->g, n, q);
        int64_t len = nc_type_of(w->g, in).dim[axis].c;
        memcpy(in_idx, idx, sizeof(nc_kx) * (size_t)t.rank);
        // clamped so the branches a select does not take still load in bounds
        in_idx[axis] = nc_lw_clamp(w, nc_kx_binary(k, NC_KOP_SUB, idx[axis], nc_kx_idx(k, off)), 0, nc_kx_idx(k, len - 1));
        nc_kx v = nc_lw_emit(w, in, in_idx, false);
        r = q == 0 ? v : nc_kx_select(k, nc_kx_binary(k, NC_KOP_LT, idx[axis], nc_kx_idx(k, off)), r, v);
        off += len;
      }
      break;
    }
    case NC_OP_GATHER: {  // table (V,C), ids (...) -> (...,C)
      nc_id ids = nc_graph_input_of(w->g, n, 1);
      nc_kx id = nc_kx_cast(k, nc_lw_emit(w, ids, idx, false), NC_I64);
      // ids are validated where they enter (token inputs); clamping keeps a bad one in bounds
      id = nc_lw_clamp(w, id, 0, nc_kx_binary(k, NC_KOP_SUB, nc_lw_dim(w, it.dim[0]), nc_kx_idx(k, 1)));
      in_idx[0] = id;
      in_idx[1] = idx[t.rank - 1];
      r = nc_lw_emit(w, in0, in_idx, false);
      break;
    }
    default: {
      nc_kop op = nc_lw_kop(nd->op);
      if (op == NC_KOP_COUNT) {
        w->st = nc_errorf(NC_E_UNSUPPORTED, "lowering: node %%%u (%s) cannot be inlined", n, nc_op_get(nd->op)->name);
        r = nc_kx_idx(k, 0);
        break;
      }
      if (nc_kop_arity(op) == 1) {
        nc_kx a = nc_lw_emit(w, in0, idx, false);
        r = op == NC_KOP_POWC ? nc_kx_powc(k, a, nd->fa[0]) : nc_kx_unary(k, op, a);
      } else {
        nc_kx a = nc_lw_emit(w, in0, idx, false);
        nc_kx b = nc_lw_emit(w, nc_graph_input_of(w->g, n, 1), idx, false);
        r = nc_kx_binary(k, op, a, b);
      }
    }
  }
done:
  w->depth--;
  return r;
}

// for-loops over dims of t (those selected by mask); fills idx[] with loop vars.
static nc_ks *nc_lw_loops(nc_lw *w, nc_ks *tail, const nc_type *t, uint64_t mask, nc_kx *idx, bool parallel_outer) {
  bool first = true;
  nc_ks last = NC_KS_NONE;
  for (int i = 0; i < t->rank; i++) {
    if (!(mask & (1ull << i))) continue;
    int v = nc_kernel_var(w->k);
    nc_ks l = nc_ks_for(w->k, &tail, v, nc_kx_idx(w->k, 0), nc_lw_dim(w, t->dim[i]));
    if (first && parallel_outer && l != NC_KS_NONE) nc_ks_get(w->k, l)->sched |= NC_KSCHED_PARALLEL;
    first = false;
    last = l;
    idx[i] = nc_kx_var(w->k, v);
    tail = nc_ks_body_slot(w->k, l);
  }
  if (last != NC_KS_NONE && t->rank > 0) {
    nc_kstmt *s = nc_ks_get(w->k, last);
    s->sched |= NC_KSCHED_VECTORIZE;
    s->vec = 16;
  }
  return tail;
}

static nc_status nc_lw_matmul(nc_lw *w, nc_id n) {
  const nc_node *nd = nc_graph_node(w->g, n);
  nc_id a = nc_graph_input_of(w->g, n, 0), b = nc_graph_input_of(w->g, n, 1);
  nc_type at = nc_type_of(w->g, a), bt = nc_type_of(w->g, b), yt = nd->type;
  bool ta = nd->ia[0], tb = nd->ia[1];
  int bufs[3] = {nc_lw_buf(w, a, false), nc_lw_buf(w, b, false), nc_lw_buf(w, n, true)};
  nc_kernel *k = w->k;
  int r = yt.rank;
  // batch = product of leading dims of y; M, N from y; K from a
  nc_kx batch = nc_kx_idx(k, 1);
  for (int i = 0; i < r - 2; i++) batch = nc_kx_binary(k, NC_KOP_MUL, batch, nc_lw_dim(w, yt.dim[i]));
  nc_kx M = nc_lw_dim(w, yt.dim[r - 2]), N = nc_lw_dim(w, yt.dim[r - 1]);
  nc_kx K = nc_lw_dim(w, ta ? at.dim[at.rank - 2] : at.dim[at.rank - 1]);
  bool bmm = nd->op == NC_OP_BMM;
  if (!bmm) {  // matmul: fold a's leading dims into M, b shared
    M = nc_kx_binary(k, NC_KOP_MUL, batch, M);
    batch = nc_kx_idx(k, 1);
  }
  nc_kx sa = nc_kx_binary(k, NC_KOP_MUL, M, K);
  nc_kx sb = bmm ? nc_kx_binary(k, NC_KOP_MUL, K, N) : nc_kx_idx(k, 0);
  (void)bt;
  nc_kx args[9] = {batch, M, N, K, nc_kx_idx(k, ta), nc_kx_idx(k, tb), sa, sb, nc_kx_idx(k, 0)};
  nc_ks *tail = &k->body;
  nc_ks_call(k, &tail, NC_KT_MATMUL, args, 9, bufs, 3);
  return NC_OK;
}

static nc_status nc_lw_scatter_add(nc_lw *w, nc_id n) {
  // for c (parallel): { for v: out[v, c] = 0; for i over ids: out[ids[i], c] += src[i, c] }
  // Both loops sit inside one parallel loop over the columns, so each thread
  // zeroes and accumulates the same columns: no thread reads what another writes.
  nc_kernel *k = w->k;
  nc_id ids = nc_graph_input_of(w->g, n, 0), src = nc_graph_input_of(w->g, n, 1);
  nc_type ot = nc_type_of(w->g, n), it = nc_type_of(w->g, ids);
  int ob = nc_lw_buf(w, n, true);
  nc_ks *tail = &k->body;
  int cv = nc_kernel_var(k);
  nc_ks lc = nc_ks_for(k, &tail, cv, nc_kx_idx(k, 0), nc_lw_dim(w, ot.dim[1]));
  k->s[lc].sched |= NC_KSCHED_PARALLEL;
  nc_ks *body = nc_ks_body_slot(k, lc);
  nc_kx C = nc_lw_dim(w, ot.dim[1]), c = nc_kx_var(k, cv);
  int vv = nc_kernel_var(k);
  nc_ks lv = nc_ks_for(k, &body, vv, nc_kx_idx(k, 0), nc_lw_dim(w, ot.dim[0]));
  nc_ks *zb = nc_ks_body_slot(k, lv);
  nc_ks_store(k, &zb, ob, nc_kx_binary(k, NC_KOP_ADD, nc_kx_binary(k, NC_KOP_MUL, nc_kx_var(k, vv), C), c),
              nc_kx_const_f(k, ot.dtype, 0));
  nc_kx iidx[NC_MAX_RANK];
  body = nc_lw_loops(w, body, &it, (1ull << it.rank) - 1, iidx, false);
  nc_kx id = nc_kx_cast(k, nc_lw_emit(w, ids, iidx, false), NC_I64);
  id = nc_lw_clamp(w, id, 0, nc_kx_binary(k, NC_KOP_SUB, nc_lw_dim(w, ot.dim[0]), nc_kx_idx(k, 1)));
  nc_kx sidx[NC_MAX_RANK];
  memcpy(sidx, iidx, sizeof(nc_kx) * (size_t)it.rank);
  sidx[it.rank] = c;
  nc_kx v = nc_lw_emit(w, src, sidx, false);
  nc_kx oi = nc_kx_binary(k, NC_KOP_ADD, nc_kx_binary(k, NC_KOP_MUL, id, C), c);
  nc_ks_store(k, &body, ob, oi, nc_kx_binary(k, NC_KOP_ADD, nc_kx_load(k, ob, oi), v));
  return NC_OK;
}

// The cross-entropy pattern (reduction none): one kernel over rows of the
// logits, parallel over rows: max, then the sum of exp(x - max), then the
// loss from the target's logit; the gradient writes (softmax - onehot) * dloss
// in a third pass. Logits are read from their buffer, targets inlined.
static nc_status nc_lw_cross_entropy(nc_lw *w, nc_id n, bool grad) {
  nc_kernel *k = w->k;
  const nc_node *nd = nc_graph_node(w->g, n);
  if (nd->ia[1] != 0)
    return nc_errorf(NC_E_UNSUPPORTED, "%s with reduction %s: decompose first", nc_op_get(nd->op)->name,
                     nd->ia[1] == 1 ? "sum" : "mean");
  nc_id lg = nc_graph_input_of(w->g, n, 0), tg = nc_graph_input_of(w->g, n, 1);
  nc_type lt = nc_type_of(w->g, lg), tt = nc_type_of(w->g, tg), ot = nd->type;
  int64_t ignore = nd->ia[0];
  int ob = nc_lw_buf(w, n, true), lb = nc_lw_buf(w, lg, false);
  nc_kx idx[NC_MAX_RANK];
  nc_ks *tail = nc_lw_loops(w, &k->body, &tt, (1ull << tt.rank) - 1, idx, true);
  for (nc_ks s2 = k->body; s2 != NC_KS_NONE; s2 = k->s[s2].kind == NC_KS_FOR ? k->s[s2].body : NC_KS_NONE)
    if (k->s[s2].kind == NC_KS_FOR) k->s[s2].sched &= ~(unsigned)NC_KSCHED_VECTORIZE;
  nc_kx V = nc_lw_dim(w, lt.dim[lt.rank - 1]);
  nc_kx row = nc_kx_binary(k, NC_KOP_MUL, tt.rank ? nc_lw_flatten(w, &tt, idx) : nc_kx_idx(k, 0), V);
  // row values as f32, the loss's dtype
  #define XV(var) nc_kx_cast(k, nc_kx_load(k, lb, nc_kx_binary(k, NC_KOP_ADD, row, nc_kx_var(k, var))), NC_F32)
  int am = nc_kernel_acc(k, NC_F32), as = nc_kernel_acc(k, NC_F32);
  nc_ks_acc_init(k, &tail, am, nc_kx_const_f(k, NC_F32, -INFINITY));
  int v1 = nc_kernel_var(k);
  nc_ks l1 = nc_ks_for(k, &tail, v1, nc_kx_idx(k, 0), V);
  k->s[l1].sched |= NC_KSCHED_VECTORIZE, k->s[l1].vec = 16;
  nc_ks *b1 = nc_ks_body_slot(k, l1);
  nc_ks_acc_update(k, &b1, am, NC_KOP_MAX, XV(v1));
  nc_ks_acc_init(k, &tail, as, nc_kx_const_f(k, NC_F32, 0));
  int v2 = nc_kernel_var(k);
  nc_ks l2 = nc_ks_for(k, &tail, v2, nc_kx_idx(k, 0), V);
  k->s[l2].sched |= NC_KSCHED_VECTORIZE, k->s[l2].vec = 16;
  nc_ks *b2 = nc_ks_body_slot(k, l2);
  nc_ks_acc_update(k, &b2, as, NC_KOP_ADD, nc_kx_unary(k, NC_KOP_EXP, nc_kx_binary(k, NC_KOP_SUB, XV(v2), nc_kx_acc(k, am))));
  nc_kx t = nc_kx_cast(k, nc_lw_emit(w, tg, idx, false), NC_I64);
  nc_kx valid = nc_kx_binary(k, NC_KOP_NE, t, nc_kx_idx(k, ignore));
  nc_kx tc = nc_lw_clamp(w, t, 0, nc_kx_binary(k, NC_KOP_SUB, V, nc_kx_idx(k, 1)));
  nc_kx zero = nc_kx_const_f(k, NC_F32, 0);
  if (!grad) {
    nc_kx picked = nc_kx_cast(k, nc_kx_load(k, lb, nc_kx_binary(k, NC_KOP_ADD, row, tc)), NC_F32);
    nc_kx lse = nc_kx_binary(k, NC_KOP_ADD, nc_kx_acc(k, am), nc_kx_unary(k, NC_KOP_LOG, nc_kx_acc(k, as)));
    nc_kx loss = nc_kx_select(k, valid, nc_kx_binary(k, NC_KOP_SUB, lse, picked), zero);
    nc_ks_store(k, &tail, ob, tt.rank ? nc_lw_flatten(w, &tt, idx) : nc_kx_idx(k, 0), loss);
  } else {
    nc_id dl = nc_graph_input_of(w->g, n, 2);
    nc_kx scale = nc_kx_select(k, valid, nc_kx_binary(k, NC_KOP_DIV, nc_lw_emit(w, dl, idx, false), nc_kx_acc(k, as)), zero);
    nc_kx dlv = nc_kx_select(k, valid, nc_lw_emit(w, dl, idx, false), zero);
    int v3 = nc_kernel_var(k);
    nc_ks l3 = nc_ks_for(k, &tail, v3, nc_kx_idx(k, 0), V);
    k->s[l3].sched |= NC_KSCHED_VECTORIZE, k->s[l3].vec = 16;
    nc_ks *b3 = nc_ks_body_slot(k, l3);
    nc_kx p = nc_kx_binary(k, NC_KOP_MUL, nc_kx_unary(k, NC_KOP_EXP, nc_kx_binary(k, NC_KOP_SUB, XV(v3), nc_kx_acc(k, am))), scale);
    nc_kx hot = nc_kx_binary(k, NC_KOP_EQ, nc_kx_var(k, v3), t);
    nc_kx gv = nc_kx_select(k, hot, nc_kx_binary(k, NC_KOP_SUB, p, dlv), p);
    nc_ks_store(k, &b3, ob, nc_kx_binary(k, NC_KOP_ADD, row, nc_kx_var(k, v3)), nc_kx_cast(k, gv, ot.dtype));
  }
  #undef XV
  return NC_OK;
}

static nc_status nc_lw_reduce(nc_lw *w, nc_id n) {
  nc_kernel *k = w->k;
  const nc_node *nd = nc_graph_node(w->g, n);
  nc_id x = nc_graph_input_of(w->g, n, 0);
  nc_type xt = nc_type_of(w->g, x), yt = nd->type;
  uint64_t axes = (uint64_t)nd->ia[0];
  bool keep = nd->ia[1];
  int ob = nc_lw_buf(w, n, true);
  nc_kx idx[NC_MAX_RANK];
  nc_ks *tail = nc_lw_loops(w, &k->body, &xt, ((1ull << xt.rank) - 1) & ~axes, idx, true);
  // the output's innermost loop is not the fastest-moving input axis when the
  // reduced axes are inner: leave vectorization to the reduction loop
  for (nc_ks s = k->body; s != NC_KS_NONE; s = k->s[s].kind == NC_KS_FOR ? k->s[s].body : NC_KS_NONE)
    if (k->s[s].kind == NC_KS_FOR) k->s[s].sched &= ~(unsigned)NC_KSCHED_VECTORIZE;
  bool is_max = nd->op == NC_OP_REDUCE_MAX;
  int acc = nc_kernel_acc(k, xt.dtype);
  nc_kx init = nc_dtype_is_float(xt.dtype) ? nc_kx_const_f(k, xt.dtype, is_max ? -INFINITY : 0.0)
                                            : nc_kx_const_i(k, xt.dtype, is_max ? INT64_MIN : 0);
  nc_ks_acc_init(k, &tail, acc, init);
  nc_ks *after = tail;  // statements after the reduction loops go here
  nc_ks *inner = nc_lw_loops(w, tail, &xt, axes, idx, false);
  nc_kx v = nc_lw_emit(w, x, idx, false);
  nc_ks_acc_update(k, &inner, acc, is_max ? NC_KOP_MAX : NC_KOP_ADD, v);
  // find the end of the block that holds acc_init: append the store there
  while (*after != NC_KS_NONE) after = &k->s[*after].next;
  nc_kx val = nc_kx_acc(k, acc);
  if (nd->op == NC_OP_REDUCE_MEAN) {
    nc_kx cnt = nc_kx_idx(k, 1);
    for (int i = 0; i < xt.rank; i++)
      if (axes & (1ull << i)) cnt = nc_kx_binary(k, NC_KOP_MUL, cnt, nc_lw_dim(w, xt.dim[i]));
    val = nc_kx_binary(k, NC_KOP_DIV, val, nc_kx_cast(k, cnt, xt.dtype));
  }
  nc_kx oidx[NC_MAX_RANK];
  int o = 0;
  for (int i = 0; i < xt.rank; i++) {
    if (!(axes & (1ull << i))) oidx[o++] = idx[i];
    else if (keep) oidx[o++] = nc_kx_idx(k, 0);
  }
  nc_ks_store(k, &after, ob, nc_lw_flatten(w, &yt, oidx), val);
  return NC_OK;
}

static nc_status nc_lw_elementwise(nc_lw *w, nc_id n) {
  nc_kernel *k = w->k;
  nc_type t = nc_type_of(w->g, n);
  int ob = nc_lw_buf(w, n, true);
  nc_kx idx[NC_MAX_RANK];
  nc_ks *tail = nc_lw_loops(w, &k->body, &t, (1ull << t.rank) - 1, idx, true);
  nc_kx v = nc_lw_emit(w, n, idx, true);
  nc_ks_store(k, &tail, ob, nc_lw_flatten(w, &t, idx), v);
  return NC_OK;
}

void nc_plan_free(nc_plan *p) {
  if (!p) return;
  for (int i = 0; i < p->nkernels; i++) nc_kernel_free(&p->kernels[i].k);
  free(p->kernels);
  free(p->materialized);
  free(p);
}

nc_status nc_plan_build(const nc_graph *g, const nc_lower_opts *o, nc_plan **out) {
  *out = NULL;
  uint32_t nn = nc_graph_nnodes(g);
  nc_plan *p = calloc(1, sizeof *p);
  uint32_t *uses = calloc(nn ? nn : 1, sizeof *uses);
  if (!p || !uses || !(p->materialized = calloc(nn ? nn : 1, 1)) || !(p->kernels = calloc(nn ? nn : 1, sizeof *p->kernels))) {
    free(uses);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  p->nnodes = nn;
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (nc_lw_opaque_unsupported(nd->op)) {
      free(uses);
      nc_plan_free(p);
      return nc_errorf(NC_E_UNSUPPORTED, "node %%%u (%s) has no loop-nest lowering: run the decompose pass first", i,
                       nc_op_get(nd->op)->name);
    }
    for (int q = 0; q < nd->nin; q++) {
      nc_id in = nc_graph_input_of(g, i, q);
      uses[in]++;
      // contractions and scatter_add read whole buffers; the cross-entropy row
      // kernel reads the logits' buffer
      if (nd->op == NC_OP_MATMUL || nd->op == NC_OP_BMM || nd->op == NC_OP_SCATTER_ADD ||
          ((nd->op == NC_OP_CROSS_ENTROPY || nd->op == NC_OP_CROSS_ENTROPY_GRAD) && q == 0))
        p->materialized[in] = 1;
    }
  }
  for (int k = 0; k < nc_graph_noutputs(g); k++) p->materialized[nc_graph_output(g, k)] = 1;
  // A node is cheap to recompute in every consumer when it is a constant or
  // an iota, or a pure index map (expand, reshape, permute, slice) or a cast
  // of something materialized or cheap: those never get their own buffer.
  unsigned char *cheap = calloc(nn ? nn : 1, 1);
  if (!cheap) {
    free(uses);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    bool map = nd->op == NC_OP_EXPAND || nd->op == NC_OP_RESHAPE || nd->op == NC_OP_PERMUTE ||
               nd->op == NC_OP_SLICE || nd->op == NC_OP_CAST;
    nc_id in0 = nd->nin ? nc_graph_input_of(g, i, 0) : NC_NONE;
    cheap[i] = nd->op == NC_OP_CONST || nd->op == NC_OP_IOTA || (map && (p->materialized[in0] || cheap[in0]));
    if (nd->op == NC_OP_INPUT || nd->op == NC_OP_PARAM || nc_op_get(nd->op)->kind == NC_KIND_REDUCE ||
        nd->op == NC_OP_MATMUL || nd->op == NC_OP_BMM || nd->op == NC_OP_SCATTER_ADD || nd->op == NC_OP_CROSS_ENTROPY ||
        nd->op == NC_OP_CROSS_ENTROPY_GRAD || (!cheap[i] && uses[i] > 1) ||
        (o && !o->fuse && !cheap[i]))
      p->materialized[i] = 1;
    if (p->materialized[i]) cheap[i] = 0;
  }
  free(cheap);
  free(uses);
  nc_status st = NC_OK;
  for (nc_id i = 0; i < nn && !st; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (!p->materialized[i] || nd->op == NC_OP_INPUT || nd->op == NC_OP_PARAM) continue;
    nc_plan_kernel *pk = &p->kernels[p->nkernels++];
    char name[64];
    snprintf(name, sizeof name, "k%u_%s", i, nc_op_get(nd->op)->name);
    nc_kernel_init(&pk->k, name);
    pk->node = i;
    for (int b = 0; b < NC_KERNEL_MAX_BUFS; b++) pk->buf_node[b] = NC_NONE;
    nc_lw w = {g, p, pk, &pk->k, 0, NC_OK};
    if (nd->op == NC_OP_MATMUL || nd->op == NC_OP_BMM) st = nc_lw_matmul(&w, i);
    else if (nd->op == NC_OP_SCATTER_ADD) st = nc_lw_scatter_add(&w, i);
    else if (nd->op == NC_OP_CROSS_ENTROPY) st = nc_lw_cross_entropy(&w, i, false);
    else if (nd->op == NC_OP_CROSS_ENTROPY_GRAD) st = nc_lw_cross_entropy(&w, i, true);
    else if (nc_op_get(nd->op)->kind == NC_KIND_REDUCE) st = nc_lw_reduce(&w, i);
    else st = nc_lw_elementwise(&w, i);
    if (!st) st = w.st;
    if (!st) st = nc_kernel_verify(&pk->k);
    if (st) st = nc_status_prefix(st, "lowering node %%%u (%s): ", i, nc_op_get(nd->op)->name);
  }
  if (st) {
    nc_plan_free(p);
    return st;
  }
  *out = p;
  return NC_OK;
}

void nc_plan_print(const nc_graph *g, const nc_plan *p, nc_buf *out) {
  int nm = 0;
  for (uint32_t i = 0; i < p->nnodes; i++) nm += p->materialized[i];
  nc_buf_printf(out, "// plan: %d kernels, %d materialized of %u nodes\n", p->nkernels, nm, p->nnodes);
  for (int i = 0; i < p->nkernels; i++) {
    const nc_plan_kernel *pk = &p->kernels[i];
    char tb[160];
    nc_type t = nc_type_of(g, pk->node);
    nc_buf_printf(out, "// %%%u -> %s\n", pk->node, nc_type_str(g, &t, tb, sizeof tb));
    nc_kernel_print(&pk->k, out);
  }
}

nc_status nc_plan_memplan(const nc_graph *g, const nc_plan *p, const int64_t *syms, nc_memplan **out) {
  uint32_t nn = nc_graph_nnodes(g);
  bool *mat = calloc(nn ? nn : 1, sizeof *mat);
  if (!mat) return nc_errorf(NC_E_NOMEM, "out of memory");
  for (nc_id i = 0; i < nn; i++) {
    nc_op op = nc_graph_node(g, i)->op;
    mat[i] = p->materialized[i] && op != NC_OP_INPUT && op != NC_OP_PARAM;
  }
  nc_memplan_opts mo;
  nc_memplan_opts_init(&mo);
  mo.syms = syms;
  mo.nsyms = NC_MAX_SYMS;
  mo.materialized = mat;
  nc_status st = nc_memplan_build(g, &mo, out);
  free(mat);
  return st;
}
