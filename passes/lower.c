// Fusion decisions and lowering of graph nodes to kernel IR.
#include "passes/lower.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/rules.h"
#include "passes/memplan.h"
#include "passes/pass.h"

#include "passes/lower_impl.h"

static bool nc_lw_opaque_unsupported(nc_op op) {
  switch (op) {
    case NC_OP_RMS_NORM: case NC_OP_RMS_NORM_GRAD: case NC_OP_SOFTMAX: case NC_OP_LOG_SOFTMAX:
    case NC_OP_ROPE:
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
nc_kx nc_lw_dim(nc_lw *w, nc_dim d) {
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
int nc_lw_buf(nc_lw *w, nc_id n, bool written) {
  for (int b = 0; b < w->k->nbufs; b++)
    if (w->pk->buf_node[b] == n) return b;
  char name[32];
  snprintf(name, sizeof name, "t%u", n);
  int b = nc_kernel_buf(w->k, name, nc_type_of(w->g, n).dtype, written);
  if (b < NC_KERNEL_MAX_BUFS) w->pk->buf_node[b] = n;
  return b;
}

static int nc_lw_row_deps(nc_lw *w, nc_id n, nc_id *out, int max);
static nc_ks *nc_lw_row_prologue(nc_lw *w, nc_ks *tail, const nc_id *deps, int nd, const nc_kx *lead);

static nc_kx nc_lw_clamp(nc_lw *w, nc_kx i, int64_t lo, nc_kx hi_incl) {
  return nc_kx_binary(w->k, NC_KOP_MIN, nc_kx_binary(w->k, NC_KOP_MAX, i, nc_kx_idx(w->k, lo)), hi_incl);
}

// The value of node n at multi-index idx (rank of n), inlining unmaterialized nodes.
nc_kx nc_lw_emit(nc_lw *w, nc_id n, const nc_kx *idx, bool root) {
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
  if (n == w->sub_node) {
    r = w->sub_val;
    goto done;
  }
  if (w->rowfused && w->rowfused[n] && !w->p->materialized[n]) {
    for (int q = 0; q < w->nrow; q++)
      if (w->row_node[q] == n) r = w->row_val[q];
    if (r == NC_KX_NONE) {
      w->st = nc_errorf(NC_E_INTERNAL, "lowering: row reduction %%%u is not computed in kernel %s", n, k->name);
      r = nc_kx_idx(k, 0);
    }
    goto done;
  }
  if (!root && w->p->materialized[n] && w->p->stored_by[n] != w->pk->node) {
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

// True when node n is known to be a symmetric matrix (batch of): X X^T,
// X^T X, A A with A symmetric, elementwise combinations of those and splats.
static bool nc_lw_symmetric(const nc_graph *g, nc_id n, int depth) {
  const nc_node *nd = nc_graph_node(g, n);
  if (depth > 8 || nd->type.rank < 2 || !nc_dim_eq(nd->type.dim[nd->type.rank - 1], nd->type.dim[nd->type.rank - 2]))
    return false;
  switch (nd->op) {
    case NC_OP_CONST: return true;
    case NC_OP_EXPAND: {  // a splat: every element equal
      nc_type it = nc_type_of(g, nc_graph_input_of(g, n, 0));
      for (int i = 0; i < it.rank; i++)
        if (!nc_dim_eq(it.dim[i], nc_dim_const(1))) return false;
      return true;
    }
    case NC_OP_MATMUL:
    case NC_OP_BMM: {
      nc_id a = nc_graph_input_of(g, n, 0), b = nc_graph_input_of(g, n, 1);
      if (a != b) return false;
      if (nd->ia[0] != nd->ia[1]) return true;  // X X^T, X^T X
      return !nd->ia[0] && nc_lw_symmetric(g, a, depth + 1);  // A A, A symmetric
    }
    default: break;
  }
  if (nc_op_get(nd->op)->kind != NC_KIND_ELEMWISE || nd->op == NC_OP_WHERE) return false;
  for (int q = 0; q < nd->nin; q++)
    if (!nc_lw_symmetric(g, nc_graph_input_of(g, n, q), depth + 1)) return false;
  return true;
}

// The node whose buffer holds reshape (chain) n's elements in its order.
static nc_id nc_lw_reshape_base(const nc_graph *g, nc_id n) {
  while (nc_graph_node(g, n)->op == NC_OP_RESHAPE) n = nc_graph_input_of(g, n, 0);
  return n;
}

// A splat operand: a constant, or an expand of a single element.
static bool nc_lw_splat(const nc_graph *g, nc_id n) {
  const nc_node *nd = nc_graph_node(g, n);
  if (nd->op == NC_OP_CONST) return true;
  if (nd->op != NC_OP_EXPAND) return false;
  nc_type it = nc_type_of(g, nc_graph_input_of(g, n, 0));
  for (int i = 0; i < it.rank; i++)
    if (!nc_dim_eq(it.dim[i], nc_dim_const(1))) return false;
  return true;
}

// Matrices known to be polynomials of one Gram matrix G = X X^T or X^T X
// (NC_PATTERN_POLAR_GRAM's products: passes/pass.h): G itself, the identity
// cast(iota(r-2) == iota(r-1)) (a polynomial of every G), sums, differences
// and constant multiples of polynomials of G, and products of two of them.
// Such matrices are symmetric and commute, so their products are symmetric.
// memo per node: 0 unknown, 1 none, 2 the identity (times c), 3 + G.
static uint32_t nc_lw_polybase(const nc_graph *g, nc_id n, uint32_t *memo) {
  if (memo[n]) return memo[n];
  memo[n] = 1;
  const nc_node *nd = nc_graph_node(g, n);
  nc_type t = nd->type;
  int r = t.rank;
  if (r < 2 || !nc_dim_eq(t.dim[r - 1], t.dim[r - 2])) return 1;
  uint32_t res = 1, pa, pb;
  nc_id a = nd->nin > 0 ? nc_graph_input_of(g, n, 0) : NC_NONE, b = nd->nin > 1 ? nc_graph_input_of(g, n, 1) : NC_NONE;
  switch (nd->op) {
    case NC_OP_CAST: {  // cast(eq(iota(r-2), iota(r-1))): the identity
      const nc_node *e = nc_graph_node(g, a);
      if (e->op != NC_OP_EQ) break;
      const nc_node *i0 = nc_graph_node(g, nc_graph_input_of(g, a, 0)), *i1 = nc_graph_node(g, nc_graph_input_of(g, a, 1));
      if (i0->op == NC_OP_IOTA && i1->op == NC_OP_IOTA && i0->type.rank == r && i1->type.rank == r &&
          ((i0->ia[0] == r - 2 && i1->ia[0] == r - 1) || (i0->ia[0] == r - 1 && i1->ia[0] == r - 2)))
        res = 2;
      break;
    }
    case NC_OP_MATMUL:
    case NC_OP_BMM:
      if (nc_type_of(g, a).rank != r || nc_type_of(g, b).rank != r) break;  // no folded batch dims
      if (a == b && nd->ia[0] != nd->ia[1]) {
        res = 3 + n;  // a Gram matrix
        break;
      }
      // transposes do not matter: polynomials of G are symmetric
      pa = nc_lw_polybase(g, a, memo), pb = nc_lw_polybase(g, b, memo);
      if (pa > 1 && pb > 1 && (pa == pb || pa == 2 || pb == 2)) res = pa == 2 ? pb : pa;
      break;
    case NC_OP_ADD:
    case NC_OP_SUB:
      pa = nc_lw_polybase(g, a, memo), pb = nc_lw_polybase(g, b, memo);
      if (pa > 1 && pb > 1 && (pa == pb || pa == 2 || pb == 2)) res = pa == 2 ? pb : pa;
      break;
    case NC_OP_NEG: res = nc_lw_polybase(g, a, memo); break;
    case NC_OP_MUL:
      if (nc_lw_splat(g, b)) res = nc_lw_polybase(g, a, memo);
      else if (nc_lw_splat(g, a)) res = nc_lw_polybase(g, b, memo);
      break;
    case NC_OP_DIV:
      if (nc_lw_splat(g, b)) res = nc_lw_polybase(g, a, memo);
      break;
    default: break;
  }
  return memo[n] = res;
}

// True when n is a product or combination of polynomials of one Gram matrix.
static bool nc_lw_poly_symmetric(const nc_graph *g, nc_id n) {
  uint32_t nn = nc_graph_nnodes(g);
  uint32_t *memo = calloc(nn ? nn : 1, sizeof *memo);
  if (!memo) return false;  // no hint: the full product, still correct
  bool r = nc_lw_polybase(g, n, memo) > 1;
  free(memo);
  return r;
}

// The GEMM addend of a kernel (NC_PATTERN_GEMM_ADD): the kernel's node
// root = alpha * n + beta * e.
typedef struct {
  nc_id root, m, e;  // root = alpha * m + beta * e
  double alpha, beta;
} nc_lw_addend;

// The matmul template call of node n. relu2 != NC_NONE (NC_PATTERN_RELU2_EPILOGUE):
// the GEMM's epilogue also computes relu2 = square(relu(n)), stored beside
// n's product (D) or, with `single`, instead of it (n itself never stored).
// add != NULL: the GEMM computes add->root instead (n never stored).
static nc_status nc_lw_matmul(nc_lw *w, nc_id n, nc_id relu2, bool single, const nc_lw_addend *add) {
  const nc_node *nd = nc_graph_node(w->g, n);
  nc_id a = nc_graph_input_of(w->g, n, 0), b = nc_graph_input_of(w->g, n, 1);
  nc_type at = nc_type_of(w->g, a), bt = nc_type_of(w->g, b), yt = nd->type;
  bool ta = nd->ia[0], tb = nd->ia[1];
  nc_id out = add ? add->root : single ? relu2 : n;
  // an unmaterialized reshape operand: its input's buffer (NC_PATTERN_RESHAPE_VIEW)
  nc_id av = w->p->materialized[a] ? a : nc_lw_reshape_base(w->g, a), bv = w->p->materialized[b] ? b : nc_lw_reshape_base(w->g, b);
  int bufs[4] = {nc_lw_buf(w, av, false), nc_lw_buf(w, bv, false), nc_lw_buf(w, out, true), 0};
  int nbufs = 3;
  if (relu2 != NC_NONE && !single) bufs[nbufs++] = nc_lw_buf(w, relu2, true);
  if (add) bufs[nbufs++] = nc_lw_buf(w, add->e, false);
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
  // a symmetric result (Muon's X X^T and A A) gets the hint arg 9: the
  // GEMM may compute the lower triangle and mirror it
  bool sym = relu2 == NC_NONE && w->sym_ok && yt.dtype == NC_F32 &&
             (nc_lw_symmetric(w->g, out, 0) || nc_lw_poly_symmetric(w->g, out));
  nc_kx args[13] = {batch, M, N, K, nc_kx_idx(k, ta), nc_kx_idx(k, tb), sa, sb, nc_kx_idx(k, 0), nc_kx_idx(k, sym),
                    nc_kx_idx(k, add ? 2 : 1), NC_KX_NONE, NC_KX_NONE};
  if (add) args[11] = nc_kx_const_f(k, NC_F32, add->alpha), args[12] = nc_kx_const_f(k, NC_F32, add->beta);
  nc_ks *tail = &k->body;
  nc_ks_call(k, &tail, NC_KT_MATMUL, args, add ? 13 : relu2 != NC_NONE ? 11 : sym ? 10 : 9, bufs, nbufs);
  return NC_OK;
}

static nc_status nc_lw_scatter_add(nc_lw *w, nc_id n) {
  // for c (parallel): { for v: out[v, c] = 0; for i over ids: out[ids[i], c] += src[i, c] }
  // Both loops sit inside one parallel loop over the columns, so each thread
  // zeroes and accumulates the same columns: no thread reads what another writes.
  // With a constant column count that is a multiple of NC_LW_SCATTER_COLS
  // (embeddings: n_embd), the parallel loop runs over blocks of that many
  // columns (one cache line) and each row's block is a vectorized inner loop:
  // for cb (parallel): { for v: for c in cb: out[v, c] = 0; for i: for c in cb:
  // out[ids[i], c] += src[i, c] }. Column by column, every access of the zeroing
  // and of the sum strode by a whole row (d4: 7 ms a step for a 2048 x 256
  // gradient into 8192 x 256). Each element sums over i in the same order
  // either way. NC_PATTERN_SCATTER_BLOCKS switches the blocks off.
  nc_kernel *k = w->k;
  nc_id ids = nc_graph_input_of(w->g, n, 0), src = nc_graph_input_of(w->g, n, 1);
  nc_type ot = nc_type_of(w->g, n), it = nc_type_of(w->g, ids);
  int ob = nc_lw_buf(w, n, true);
  nc_ks *tail = &k->body;
  bool blocks = w->scatter_blocks && nc_dim_is_const(ot.dim[1]) && ot.dim[1].c % NC_LW_SCATTER_COLS == 0;
  int cv = nc_kernel_var(k);
  nc_kx C = nc_lw_dim(w, ot.dim[1]);
  nc_ks lc = nc_ks_for(k, &tail, cv, nc_kx_idx(k, 0),
                       blocks ? nc_kx_idx(k, ot.dim[1].c / NC_LW_SCATTER_COLS) : nc_lw_dim(w, ot.dim[1]));
  k->s[lc].sched |= NC_KSCHED_PARALLEL;
  nc_ks *body = nc_ks_body_slot(k, lc);
  nc_kx c = nc_kx_var(k, cv);
  int vv = nc_kernel_var(k);
  nc_ks lv = nc_ks_for(k, &body, vv, nc_kx_idx(k, 0), nc_lw_dim(w, ot.dim[0]));
  nc_ks *zb = nc_ks_body_slot(k, lv);
  nc_kx c0 = c;  // the first column of the block
  int zv = -1, av = -1;
  if (blocks) {
    c0 = nc_kx_binary(k, NC_KOP_MUL, c, nc_kx_idx(k, NC_LW_SCATTER_COLS));
    zv = nc_kernel_var(k);
    nc_ks lz = nc_ks_for(k, &zb, zv, nc_kx_idx(k, 0), nc_kx_idx(k, NC_LW_SCATTER_COLS));
    k->s[lz].sched |= NC_KSCHED_VECTORIZE, k->s[lz].vec = NC_LW_SCATTER_COLS;
    zb = nc_ks_body_slot(k, lz);
    c = nc_kx_binary(k, NC_KOP_ADD, c0, nc_kx_var(k, zv));
  }
  nc_ks_store(k, &zb, ob, nc_kx_binary(k, NC_KOP_ADD, nc_kx_binary(k, NC_KOP_MUL, nc_kx_var(k, vv), C), c),
              nc_kx_const_f(k, ot.dtype, 0));
  nc_kx iidx[NC_MAX_RANK];
  body = nc_lw_loops(w, body, &it, (1ull << it.rank) - 1, iidx, false);
  if (blocks) {  // the block's columns innermost (the ids loops are not vectorized then)
    for (nc_ks s2 = lv; s2 != NC_KS_NONE; s2 = k->s[s2].next)
      if (s2 != lv && k->s[s2].kind == NC_KS_FOR)
        for (nc_ks s3 = s2; s3 != NC_KS_NONE; s3 = k->s[s3].kind == NC_KS_FOR ? k->s[s3].body : NC_KS_NONE)
          if (k->s[s3].kind == NC_KS_FOR) k->s[s3].sched &= ~(unsigned)NC_KSCHED_VECTORIZE;
    av = nc_kernel_var(k);
    nc_ks la = nc_ks_for(k, &body, av, nc_kx_idx(k, 0), nc_kx_idx(k, NC_LW_SCATTER_COLS));
    k->s[la].sched |= NC_KSCHED_VECTORIZE, k->s[la].vec = NC_LW_SCATTER_COLS;
    body = nc_ks_body_slot(k, la);
    c = nc_kx_binary(k, NC_KOP_ADD, c0, nc_kx_var(k, av));
  }
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

// scatter_add as one NC_KT_SCATTER_ADD call (nc_lower_opts.scatter_atomic): f32
// src and out, i32 or i64 ids; false: the loop nest above.
static bool nc_lw_scatter_call_ok(const nc_graph *g, nc_id n) {
  nc_dtype it = nc_type_of(g, nc_graph_input_of(g, n, 0)).dtype;
  return nc_graph_node(g, n)->type.dtype == NC_F32 && nc_type_of(g, nc_graph_input_of(g, n, 1)).dtype == NC_F32 &&
         (it == NC_I32 || it == NC_I64) && nc_graph_node(g, n)->type.rank == 2;
}

static nc_status nc_lw_scatter_call(nc_lw *w, nc_id n) {
  nc_kernel *k = w->k;
  nc_id ids = nc_graph_input_of(w->g, n, 0), src = nc_graph_input_of(w->g, n, 1);
  nc_type ot = nc_type_of(w->g, n), it = nc_type_of(w->g, ids);
  int bufs[3] = {nc_lw_buf(w, ids, false), nc_lw_buf(w, src, false), nc_lw_buf(w, n, true)};
  nc_kx N = nc_kx_idx(k, 1);
  for (int d = 0; d < it.rank; d++) N = nc_kx_binary(k, NC_KOP_MUL, N, nc_lw_dim(w, it.dim[d]));
  nc_kx args[3] = {N, nc_lw_dim(w, ot.dim[0]), nc_lw_dim(w, ot.dim[1])};
  nc_ks *tail = &k->body;
  nc_ks_call(k, &tail, NC_KT_SCATTER_ADD, args, 3, bufs, 3);
  return NC_OK;
}

// The logit at (row idx[0..rank), v): a buffer load, or the inlined chain.
static nc_kx nc_lw_ce_logit(nc_lw *w, nc_id lg, const nc_kx *idx, int rank, nc_kx v) {
  nc_kx li[NC_MAX_RANK + 1];
  memcpy(li, idx, sizeof(nc_kx) * (size_t)rank);
  li[rank] = v;
  return nc_lw_emit(w, lg, li, false);
}

// The cross-entropy pattern (reduction none): one kernel over rows of the
// logits, parallel over rows: max, then the sum of exp(x - max), then the
// loss from the target's logit; the gradient writes (softmax - onehot) * dloss
// in a third pass. Logits are read from their buffer, targets inlined.
// With an epilogue (NC_PATTERN_SOFTCAP_CE, gradient only): the kernel computes
// node epi, an elementwise chain over the gradient (under reshapes), instead
// of the gradient itself: the gradient's value is substituted into the chain
// in the last pass and epi is stored at the same flat index. Logits that are
// not materialized (the softcap chain) are recomputed inline in every pass.
static nc_status nc_lw_cross_entropy(nc_lw *w, nc_id n, bool grad, nc_id epi) {
  nc_kernel *k = w->k;
  const nc_node *nd = nc_graph_node(w->g, n);
  if (nd->ia[1] != 0)
    return nc_errorf(NC_E_UNSUPPORTED, "%s with reduction %s: decompose first", nc_op_get(nd->op)->name,
                     nd->ia[1] == 1 ? "sum" : "mean");
  nc_id lg = nc_graph_input_of(w->g, n, 0), tg = nc_graph_input_of(w->g, n, 1);
  nc_type lt = nc_type_of(w->g, lg), tt = nc_type_of(w->g, tg), ot = nd->type;
  int64_t ignore = nd->ia[0];
  int ob = nc_lw_buf(w, epi != NC_NONE ? epi : n, true);
  nc_kx idx[NC_MAX_RANK + 1];
  nc_ks *tail = nc_lw_loops(w, &k->body, &tt, (1ull << tt.rank) - 1, idx, true);
  for (nc_ks s2 = k->body; s2 != NC_KS_NONE; s2 = k->s[s2].kind == NC_KS_FOR ? k->s[s2].body : NC_KS_NONE)
    if (k->s[s2].kind == NC_KS_FOR) k->s[s2].sched &= ~(unsigned)NC_KSCHED_VECTORIZE;
  nc_kx V = nc_lw_dim(w, lt.dim[lt.rank - 1]);
  nc_kx row = nc_kx_binary(k, NC_KOP_MUL, tt.rank ? nc_lw_flatten(w, &tt, idx) : nc_kx_idx(k, 0), V);
  // row values as f32, the loss's dtype
  #define XV(var) nc_kx_cast(k, nc_lw_ce_logit(w, lg, idx, tt.rank, nc_kx_var(k, var)), NC_F32)
  nc_id fw = grad && w->p->extra_read ? w->p->extra_read[n] : NC_NONE;
  if (fw != NC_NONE) {  // NC_PATTERN_CE_LSE: lse = loss + the target's logit, one sweep
    nc_kx t = nc_kx_cast(k, nc_lw_emit(w, tg, idx, false), NC_I64);
    nc_kx valid = nc_kx_binary(k, NC_KOP_NE, t, nc_kx_idx(k, ignore));
    nc_kx tc = nc_lw_clamp(w, t, 0, nc_kx_binary(k, NC_KOP_SUB, V, nc_kx_idx(k, 1)));
    nc_kx zero = nc_kx_const_f(k, NC_F32, 0);
    nc_kx picked = nc_kx_cast(k, nc_lw_ce_logit(w, lg, idx, tt.rank, tc), NC_F32);
    nc_kx loss = nc_kx_load(k, nc_lw_buf(w, fw, false), tt.rank ? nc_lw_flatten(w, &tt, idx) : nc_kx_idx(k, 0));
    nc_kx lse = nc_kx_binary(k, NC_KOP_ADD, nc_kx_cast(k, loss, NC_F32), picked);
    nc_kx dlv = nc_kx_select(k, valid, nc_kx_cast(k, nc_lw_emit(w, nc_graph_input_of(w->g, n, 2), idx, false), NC_F32), zero);
    int v3 = nc_kernel_var(k);
    nc_ks l3 = nc_ks_for(k, &tail, v3, nc_kx_idx(k, 0), V);
    k->s[l3].sched |= NC_KSCHED_VECTORIZE, k->s[l3].vec = 16;
    nc_ks *b3 = nc_ks_body_slot(k, l3);
    nc_kx p = nc_kx_binary(k, NC_KOP_MUL, nc_kx_unary(k, NC_KOP_EXP, nc_kx_binary(k, NC_KOP_SUB, XV(v3), lse)), dlv);
    nc_kx hot = nc_kx_binary(k, NC_KOP_EQ, nc_kx_var(k, v3), t);
    nc_kx gval = nc_kx_cast(k, nc_kx_select(k, hot, nc_kx_binary(k, NC_KOP_SUB, p, dlv), p), ot.dtype);
    if (epi != NC_NONE) {
      nc_id top = epi;
      while (nc_graph_node(w->g, top)->op == NC_OP_RESHAPE) top = nc_graph_input_of(w->g, top, 0);
      idx[tt.rank] = nc_kx_var(k, v3);
      w->sub_node = n, w->sub_val = gval;
      gval = nc_lw_emit(w, top, idx, top == epi);
      w->sub_node = NC_NONE;
    }
    nc_ks_store(k, &b3, ob, nc_kx_binary(k, NC_KOP_ADD, row, nc_kx_var(k, v3)), gval);
    return NC_OK;
  }
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
    nc_kx picked = nc_kx_cast(k, nc_lw_ce_logit(w, lg, idx, tt.rank, tc), NC_F32);
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
    nc_kx gval = nc_kx_cast(k, gv, ot.dtype);
    if (epi != NC_NONE) {  // the epilogue at the gradient's index, below any reshapes
      nc_id top = epi;
      while (nc_graph_node(w->g, top)->op == NC_OP_RESHAPE) top = nc_graph_input_of(w->g, top, 0);
      idx[tt.rank] = nc_kx_var(k, v3);
      w->sub_node = n, w->sub_val = gval;
      gval = nc_lw_emit(w, top, idx, top == epi);
      w->sub_node = NC_NONE;
    }
    nc_ks_store(k, &b3, ob, nc_kx_binary(k, NC_KOP_ADD, row, nc_kx_var(k, v3)), gval);
  }
  #undef XV
  return NC_OK;
}

// Accumulator dtype of a reduction over dt: bf16/f16 sums accumulate in f32
// and round once at the end (the interpreter's one rounding per node).
static nc_dtype nc_lw_acc_dtype(nc_dtype dt) { return dt == NC_BF16 || dt == NC_F16 ? NC_F32 : dt; }

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
  nc_id deps[NC_KERNEL_MAX_ACCS];
  int ndeps = nc_lw_row_deps(w, n, deps, NC_KERNEL_MAX_ACCS - 1);
  if (ndeps < 0) return nc_errorf(NC_E_UNSUPPORTED, "lowering node %%%u: too many fused row reductions", n);
  if (ndeps > 0) {
    if (axes != (1ull << (xt.rank - 1)))
      return nc_errorf(NC_E_INTERNAL, "lowering node %%%u: fused row reductions under a reduction of other axes", n);
    tail = nc_lw_row_prologue(w, tail, deps, ndeps, idx);
  }
  bool is_max = nd->op == NC_OP_REDUCE_MAX;
  nc_dtype ad = nc_lw_acc_dtype(xt.dtype);
  int acc = nc_kernel_acc(k, ad);
  nc_kx init = nc_dtype_is_float(ad) ? nc_kx_const_f(k, ad, is_max ? -INFINITY : 0.0)
                                      : nc_kx_const_i(k, ad, is_max ? INT64_MIN : 0);
  nc_ks_acc_init(k, &tail, acc, init);
  nc_ks *after = tail;  // statements after the reduction loops go here
  nc_ks *inner = nc_lw_loops(w, tail, &xt, axes, idx, false);
  nc_kx v = nc_lw_emit(w, x, idx, false);
  if (ad != xt.dtype) v = nc_kx_cast(k, v, ad);
  nc_ks_acc_update(k, &inner, acc, is_max ? NC_KOP_MAX : NC_KOP_ADD, v);
  // find the end of the block that holds acc_init: append the store there
  while (*after != NC_KS_NONE) after = &k->s[*after].next;
  nc_kx val = nc_kx_acc(k, acc);
  if (nd->op == NC_OP_REDUCE_MEAN) {
    nc_kx cnt = nc_kx_idx(k, 1);
    for (int i = 0; i < xt.rank; i++)
      if (axes & (1ull << i)) cnt = nc_kx_binary(k, NC_KOP_MUL, cnt, nc_lw_dim(w, xt.dim[i]));
    val = nc_kx_binary(k, NC_KOP_DIV, val, nc_kx_cast(k, cnt, ad));
  }
  if (ad != xt.dtype) val = nc_kx_cast(k, val, xt.dtype);
  nc_kx oidx[NC_MAX_RANK];
  int o = 0;
  for (int i = 0; i < xt.rank; i++) {
    if (!(axes & (1ull << i))) oidx[o++] = idx[i];
    else if (keep) oidx[o++] = nc_kx_idx(k, 0);
  }
  nc_ks_store(k, &after, ob, nc_lw_flatten(w, &yt, oidx), val);
  return NC_OK;
}

// The row reductions (NC_PATTERN_NORM_ROPE) that node n's inlined tree needs,
// in id order (a reduction's input may need earlier ones).
static int nc_lw_row_deps(nc_lw *w, nc_id n, nc_id *out, int max) {
  if (!w->rowfused) return 0;
  nc_id stack[256];
  int sp = 0, no = 0;
  const nc_node *nd = nc_graph_node(w->g, n);
  for (int q = 0; q < nd->nin && sp < 256; q++) stack[sp++] = nc_graph_input_of(w->g, n, q);
  while (sp > 0) {
    nc_id v = stack[--sp];
    if (w->p->materialized[v] && w->p->stored_by[v] != n) continue;
    if (w->rowfused[v] && !w->p->materialized[v]) {
      bool seen = false;
      for (int q = 0; q < no; q++) seen |= out[q] == v;
      if (seen) continue;
      if (no == max) return -1;
      out[no++] = v;
    }
    const nc_node *vn = nc_graph_node(w->g, v);
    for (int q = 0; q < vn->nin; q++) {
      if (sp == 256) return -1;
      stack[sp++] = nc_graph_input_of(w->g, v, q);
    }
  }
  for (int i = 1; i < no; i++)  // insertion sort by id
    for (int j = i; j > 0 && out[j] < out[j - 1]; j--) {
      nc_id t = out[j];
      out[j] = out[j - 1], out[j - 1] = t;
    }
  return no;
}

// Inside the loops over a row's leading indices lead[]: computes each row
// reduction of deps[] into an accumulator (one sweep of the last axis each).
static nc_ks *nc_lw_row_prologue(nc_lw *w, nc_ks *tail, const nc_id *deps, int nd, const nc_kx *lead) {
  nc_kernel *k = w->k;
  for (int q = 0; q < nd; q++) {
    const nc_node *rn = nc_graph_node(w->g, deps[q]);
    nc_id x = nc_graph_input_of(w->g, deps[q], 0);
    nc_type xt = nc_type_of(w->g, x);
    bool is_max = rn->op == NC_OP_REDUCE_MAX;
    nc_dtype ad = nc_lw_acc_dtype(xt.dtype);
    int acc = nc_kernel_acc(k, ad);
    nc_ks_acc_init(k, &tail, acc, nc_kx_const_f(k, ad, is_max ? -INFINITY : 0.0));
    nc_kx idx[NC_MAX_RANK];
    memcpy(idx, lead, sizeof(nc_kx) * (size_t)(xt.rank - 1));
    int v = nc_kernel_var(k);
    nc_ks l = nc_ks_for(k, &tail, v, nc_kx_idx(k, 0), nc_lw_dim(w, xt.dim[xt.rank - 1]));
    if (l != NC_KS_NONE) k->s[l].sched |= NC_KSCHED_VECTORIZE, k->s[l].vec = 16;
    nc_ks *body = nc_ks_body_slot(k, l);
    idx[xt.rank - 1] = nc_kx_var(k, v);
    nc_ks_acc_update(k, &body, acc, is_max ? NC_KOP_MAX : NC_KOP_ADD, nc_kx_cast(k, nc_lw_emit(w, x, idx, false), ad));
    nc_kx val = nc_kx_acc(k, acc);
    if (rn->op == NC_OP_REDUCE_MEAN) val = nc_kx_binary(k, NC_KOP_DIV, val, nc_kx_cast(k, nc_lw_dim(w, xt.dim[xt.rank - 1]), ad));
    if (ad != xt.dtype) val = nc_kx_cast(k, val, xt.dtype);
    w->row_node[w->nrow] = deps[q];
    w->row_val[w->nrow++] = val;
  }
  return tail;
}

static void nc_lw_novec(nc_kernel *k) {
  for (nc_ks s = k->body; s != NC_KS_NONE; s = k->s[s].kind == NC_KS_FOR ? k->s[s].body : NC_KS_NONE)
    if (k->s[s].kind == NC_KS_FOR) k->s[s].sched &= ~(unsigned)NC_KSCHED_VECTORIZE;
}

static nc_status nc_lw_elementwise(nc_lw *w, nc_id n);

// A materialized concat (NC_PATTERN_CONCAT_NESTS): one parallel loop nest per
// input over the input's shape, storing its (inlined) values at the output
// index shifted along the axis. Falls back to the select chain when row
// reductions are fused in.
static nc_status nc_lw_concat(nc_lw *w, nc_id n) {
  nc_kernel *k = w->k;
  const nc_node *nd = nc_graph_node(w->g, n);
  nc_type t = nd->type;
  if (nc_lw_row_deps(w, n, (nc_id[NC_KERNEL_MAX_ACCS]){0}, NC_KERNEL_MAX_ACCS) != 0 || t.rank == 0) return nc_lw_elementwise(w, n);
  int axis = (int)nd->ia[0];
  int ob = nc_lw_buf(w, n, true);
  int64_t off = 0;
  for (int q = 0; q < nd->nin && !w->st; q++) {
    nc_id in = nc_graph_input_of(w->g, n, q);
    nc_type it = nc_type_of(w->g, in);
    nc_kx idx[NC_MAX_RANK], oidx[NC_MAX_RANK];
    nc_ks *tail = &k->body;
    while (*tail != NC_KS_NONE) tail = &nc_ks_get(k, *tail)->next;
    tail = nc_lw_loops(w, tail, &it, (1ull << it.rank) - 1, idx, true);
    memcpy(oidx, idx, sizeof(nc_kx) * (size_t)t.rank);
    oidx[axis] = nc_kx_binary(k, NC_KOP_ADD, idx[axis], nc_kx_idx(k, off));
    nc_kx v = nc_lw_emit(w, in, idx, false);
    nc_ks_store(k, &tail, ob, nc_lw_flatten(w, &t, oidx), v);
    off += it.dim[axis].c;
  }
  return NC_OK;
}

static nc_status nc_lw_elementwise(nc_lw *w, nc_id n) {
  nc_kernel *k = w->k;
  nc_type t = nc_type_of(w->g, n);
  int ob = nc_lw_buf(w, n, true);
  nc_kx idx[NC_MAX_RANK];
  nc_id deps[NC_KERNEL_MAX_ACCS];
  int nd = nc_lw_row_deps(w, n, deps, NC_KERNEL_MAX_ACCS);
  if (nd < 0) return nc_errorf(NC_E_UNSUPPORTED, "lowering node %%%u: too many fused row reductions", n);
  nc_ks *tail;
  if (nd > 0 && t.rank > 0) {  // one kernel per row: the row's reductions, then its elements
    tail = nc_lw_loops(w, &k->body, &t, (1ull << (t.rank - 1)) - 1, idx, true);
    nc_lw_novec(k);
    tail = nc_lw_row_prologue(w, tail, deps, nd, idx);
    tail = nc_lw_loops(w, tail, &t, 1ull << (t.rank - 1), idx, false);
  } else {
    if (nd > 0) return nc_errorf(NC_E_INTERNAL, "lowering node %%%u: row reductions in a scalar kernel", n);
    tail = nc_lw_loops(w, &k->body, &t, (1ull << t.rank) - 1, idx, true);
  }
  nc_kx v = nc_lw_emit(w, n, idx, true);
  nc_ks_store(k, &tail, ob, nc_lw_flatten(w, &t, idx), v);
  for (nc_id m = 0; w->hosts && m < n; m++)  // the outputs this kernel computes too (same shape, same index)
    if (w->p->stored_by[m] == n) {
      nc_type mt = nc_type_of(w->g, m);
      nc_ks_store(k, &tail, nc_lw_buf(w, m, true), nc_lw_flatten(w, &mt, idx), nc_lw_emit(w, m, idx, true));
    }
  return NC_OK;
}

void nc_plan_free(nc_plan *p) {
  if (!p) return;
  for (int i = 0; i < p->nkernels; i++) nc_kernel_free(&p->kernels[i].k);
  free(p->kernels);
  free(p->materialized);
  free(p->stored_by);
  free(p->extra_read);
  free(p);
}

// The softcap + cross-entropy pattern (NC_PATTERN_SOFTCAP_CE), a fusion
// decision after the default one:
// 1. the cheap tail of the elementwise chain that computes the logits of a
//    row cross-entropy (softcap * tanh(x / softcap): the multiply) is not
//    materialized: the row kernels recompute it in each pass (the tanh is
//    materialized: recomputing it five times costs more than reading it,
//    on the CPU; with transc (SOFTCAP_CE in patterns_force: the OpenCL device,
//    bound by the logits' bytes) the tanh is recomputed too, so the row
//    kernels read the lm_head's output itself);
// 2. a cross_entropy_grad whose single consumer starts an elementwise chain of
//    its shape (the softcap's backward, then reshapes) is computed inside the
//    kernel of that chain's materialized end: the full softmax is never
//    written, only the logits' gradient.
// Returns per node the gradient fused into it (NC_NONE if none); NULL = OOM.
static bool nc_lw_same_dims(const nc_type *a, const nc_type *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (!nc_dim_eq(a->dim[i], b->dim[i])) return false;
  return true;
}

static nc_id *nc_lw_softcap_ce(const nc_graph *g, nc_plan *p, const uint32_t *uses, bool transc) {
  uint32_t nn = nc_graph_nnodes(g);
  nc_id *epi = malloc((nn ? nn : 1) * sizeof *epi), *cons = malloc((nn ? nn : 1) * sizeof *cons);
  unsigned char *forced = calloc(nn ? nn : 1, 1);
  if (!epi || !cons || !forced) {
    free(epi), free(cons), free(forced);
    return NULL;
  }
  for (nc_id i = 0; i < nn; i++) epi[i] = cons[i] = NC_NONE;
  for (int k = 0; k < nc_graph_noutputs(g); k++) forced[nc_graph_output(g, k)] = 1;
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    for (int q = 0; q < nd->nin; q++) {
      nc_id in = nc_graph_input_of(g, i, q);
      cons[in] = i;  // the last consumer (the only one when uses == 1)
      if (nd->op == NC_OP_MATMUL || nd->op == NC_OP_BMM || nd->op == NC_OP_SCATTER_ADD || nd->op == NC_OP_ATTENTION ||
          nd->op == NC_OP_ATTENTION_GRAD)
        forced[in] = 1;  // read as whole buffers
    }
  }
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if ((nd->op != NC_OP_CROSS_ENTROPY && nd->op != NC_OP_CROSS_ENTROPY_GRAD) || nd->ia[1] != 0) continue;
    nc_id x = nc_graph_input_of(g, i, 0);
    nc_type xt = nc_type_of(g, x);
    // 1. the logits' elementwise chain (a short walk: at most 16 nodes)
    nc_id stack[16];
    int sp = 0;
    stack[sp++] = x;
    while (sp > 0) {
      nc_id a = stack[--sp];
      const nc_node *an = nc_graph_node(g, a);
      nc_type at = an->type;
      if (forced[a] || nc_op_get(an->op)->kind != NC_KIND_ELEMWISE || !nc_type_eq(&at, &xt)) continue;
      // transcendental ops (the softcap's tanh) stay materialized: computed
      // once and read back is cheaper here than recomputed in 5 sweeps
      bool cheap = an->op == NC_OP_NEG || an->op == NC_OP_ABS || an->op == NC_OP_ADD || an->op == NC_OP_SUB ||
                   an->op == NC_OP_MUL || an->op == NC_OP_MAX || an->op == NC_OP_MIN || an->op == NC_OP_CAST ||
                   an->op == NC_OP_WHERE || an->op == NC_OP_SQUARE || an->op == NC_OP_RELU ||
                   (transc && (an->op == NC_OP_DIV || an->op == NC_OP_TANH));
      if (!cheap) continue;
      p->materialized[a] = 0;
      for (int q = 0; q < an->nin && sp < 16; q++) stack[sp++] = nc_graph_input_of(g, a, q);
    }
    if (nd->op != NC_OP_CROSS_ENTROPY_GRAD || forced[i] || uses[i] != 1) continue;
    // 2. the gradient's consumer chain: elementwise ops of its shape, then reshapes
    nc_id cur = i;
    bool reshaped = false;
    for (;;) {
      nc_id c = cons[cur];
      const nc_node *cn = nc_graph_node(g, c);
      nc_type ct = cn->type;
      if (cn->op == NC_OP_RESHAPE) reshaped = true;
      else if (reshaped || nc_op_get(cn->op)->kind != NC_KIND_ELEMWISE || !nc_lw_same_dims(&ct, &nd->type)) break;
      if (p->materialized[c] || forced[c]) {
        if (epi[c] == NC_NONE) {  // one gradient per kernel (others are read from their buffers)
          epi[c] = i;
          p->materialized[i] = 0;
        }
        break;
      }
      if (uses[c] != 1) break;
      cur = c;
    }
  }
  free(cons);
  free(forced);
  return epi;
}

// The row-reduction pattern (NC_PATTERN_NORM_ROPE): a reduction over the
// last axis with keepdim (rms_norm's mean of squares, the mean in its
// gradient) is computed inside the kernels of its consumers, one row at a
// time, when every path from it to a kernel is row-preserving (elementwise
// ops, an expand of the last axis) and ends in an elementwise kernel or a
// reduction over the last axis of the same rows. The row-constant nodes on
// those paths (eps added, rsqrt, the broadcast) lose their buffers. With
// rope_inline (patterns_force), the reduction's input loses its buffer too
// when it is the rope rotation of a QK-norm: norm + rotation become one
// kernel per row (measured slower on this CPU: the rotation is then
// recomputed in every sweep, 2x forward and 3x backward).
// Returns per node 1 if fused (NULL = OOM).
static unsigned char *nc_lw_rowfuse(const nc_graph *g, nc_plan *p, bool rope_inline) {
  uint32_t nn = nc_graph_nnodes(g);
  unsigned char *fused = calloc(nn ? nn : 1, 1), *forced = calloc(nn ? nn : 1, 1), *path = calloc(nn ? nn : 1, 1);
  uint32_t *cstart = calloc((size_t)nn + 1, sizeof *cstart), *cidx = NULL, *fill = calloc((size_t)nn + 1, sizeof *fill);
  nc_id *stack = malloc((nn ? nn : 1) * sizeof *stack), *touched = malloc((nn ? nn : 1) * sizeof *touched);
  uint32_t ne = 0;
  for (nc_id i = 0; i < nn; i++) ne += (uint32_t)nc_graph_node(g, i)->nin;
  cidx = malloc((ne ? ne : 1) * sizeof *cidx);
  if (!fused || !forced || !path || !cstart || !fill || !stack || !touched || !cidx) {
    free(fused), free(forced), free(path), free(cstart), free(cidx), free(fill), free(stack), free(touched);
    return NULL;
  }
  for (int k = 0; k < nc_graph_noutputs(g); k++) forced[nc_graph_output(g, k)] = 1;
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    nc_kind kind = nc_op_get(nd->op)->kind;
    for (int q = 0; q < nd->nin; q++) {
      nc_id in = nc_graph_input_of(g, i, q);
      cstart[in + 1]++;
      if (kind == NC_KIND_OPAQUE && nd->op != NC_OP_CROSS_ENTROPY && nd->op != NC_OP_CROSS_ENTROPY_GRAD) forced[in] = 1;
    }
  }
  for (nc_id i = 0; i < nn; i++) cstart[i + 1] += cstart[i];
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    for (int q = 0; q < nd->nin; q++) {
      nc_id in = nc_graph_input_of(g, i, q);
      cidx[cstart[in] + fill[in]++] = i;
    }
  }
  for (nc_id r = 0; r < nn; r++) {
    const nc_node *rn = nc_graph_node(g, r);
    if (nc_op_get(rn->op)->kind != NC_KIND_REDUCE || forced[r] || !rn->ia[1]) continue;
    nc_id x = nc_graph_input_of(g, r, 0);
    nc_type xt = nc_type_of(g, x), rt = rn->type;
    if (xt.rank < 1 || (uint64_t)rn->ia[0] != (1ull << (xt.rank - 1))) continue;
    // walk the consumers: row-preserving paths up to valid kernels
    int sp = 0, nt = 0;
    bool ok = true;
    stack[sp++] = r;
    path[r] = 1, touched[nt++] = r;
    while (sp > 0 && ok) {
      nc_id v = stack[--sp];
      for (uint32_t e = cstart[v]; e < cstart[v + 1] && ok; e++) {
        nc_id c = cidx[e];
        if (path[c]) continue;
        const nc_node *cn = nc_graph_node(g, c);
        nc_type ct = cn->type;
        nc_kind kind = nc_op_get(cn->op)->kind;
        bool row_shape = nc_lw_same_dims(&ct, &rt), full_shape = nc_lw_same_dims(&ct, &xt);
        if (kind == NC_KIND_REDUCE) {  // a host if it reduces the same rows' last axis
          nc_type it = nc_type_of(g, nc_graph_input_of(g, c, 0));
          ok = nc_lw_same_dims(&it, &xt) && (uint64_t)cn->ia[0] == (1ull << (xt.rank - 1));
        } else if (kind == NC_KIND_ELEMWISE && (row_shape || full_shape)) {
          if (!forced[c] && (row_shape || !p->materialized[c])) {  // on the path: inlined
            path[c] = 1, touched[nt++] = c, stack[sp++] = c;
          }  // else a host: an elementwise kernel over the same rows
        } else if (cn->op == NC_OP_EXPAND && full_shape && !forced[c]) {
          nc_type it = nc_type_of(g, v);
          ok = nc_lw_same_dims(&it, &rt);
          if (ok) path[c] = 1, touched[nt++] = c, stack[sp++] = c;
        } else {
          ok = false;
        }
      }
    }
    if (ok) {
      fused[r] = 1;
      for (int t = 0; t < nt; t++) p->materialized[touched[t]] = 0;
      // the reduction's input: a multi-use map (the rotation) is recomputed
      // in each consumer instead of written once and read back
      nc_id in = x;
      while (!p->materialized[in] && nc_op_get(nc_graph_node(g, in)->op)->kind == NC_KIND_ELEMWISE &&
             nc_graph_node(g, in)->nin == 1)
        in = nc_graph_input_of(g, in, 0);
      const nc_node *inn = nc_graph_node(g, in);
      nc_kind ik = nc_op_get(inn->op)->kind;
      nc_type int_ = inn->type;
      if (rope_inline && p->materialized[in] && !forced[in] && (inn->op == NC_OP_CONCAT) && ik == NC_KIND_INJECTIVE &&
          nc_lw_same_dims(&int_, &xt) && cstart[in + 1] - cstart[in] <= 4) {
        bool clean = true;  // its own inlined tree computes no row reductions
        int sp2 = 0;
        stack[sp2++] = in;
        while (sp2 > 0 && clean) {
          nc_id v = stack[--sp2];
          const nc_node *vn = nc_graph_node(g, v);
          for (int q = 0; q < vn->nin && clean; q++) {
            nc_id u = nc_graph_input_of(g, v, q);
            if (fused[u] || nc_op_get(nc_graph_node(g, u)->op)->kind == NC_KIND_REDUCE) clean = false;
            else if (!p->materialized[u] && sp2 < (int)nn) stack[sp2++] = u;
          }
        }
        if (clean) p->materialized[in] = 0;
      }
    }
    for (int t = 0; t < nt; t++) path[touched[t]] = 0;
  }
  free(forced), free(path), free(cstart), free(cidx), free(fill), free(stack), free(touched);
  return fused;
}

// The update-group pattern (NC_PATTERN_UPDATE_GROUP): see passes/pass.h.
// Returns false on OOM.
static bool nc_lw_tree_has_rowfused(const nc_graph *g, const nc_plan *p, const unsigned char *rowfused, nc_id x, int depth) {
  if (!rowfused || depth > 64) return rowfused != NULL;
  const nc_node *nd = nc_graph_node(g, x);
  for (int q = 0; q < nd->nin; q++) {
    nc_id u = nc_graph_input_of(g, x, q);
    if (p->materialized[u]) continue;
    if (rowfused[u] || nc_lw_tree_has_rowfused(g, p, rowfused, u, depth + 1)) return true;
  }
  return false;
}

static bool nc_lw_update_group(const nc_graph *g, nc_plan *p, const uint32_t *uses, const nc_id *epi,
                               const unsigned char *rowfused) {
  uint32_t nn = nc_graph_nnodes(g);
  nc_id *cons = malloc((nn ? nn : 1) * sizeof *cons);
  unsigned char *outp = calloc(nn ? nn : 1, 1);
  uint32_t *cstart = calloc((size_t)nn + 1, sizeof *cstart), *fill = calloc((size_t)nn + 1, sizeof *fill), *cidx = NULL;
  uint32_t ne = 0;
  for (nc_id i = 0; i < nn; i++) ne += (uint32_t)nc_graph_node(g, i)->nin;
  cidx = malloc((ne ? ne : 1) * sizeof *cidx);
  if (!cons || !outp || !cstart || !fill || !cidx) {
    free(cons), free(outp), free(cstart), free(fill), free(cidx);
    return false;
  }
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    for (int q = 0; q < nd->nin; q++) cstart[nc_graph_input_of(g, i, q) + 1]++;
  }
  for (nc_id i = 0; i < nn; i++) cstart[i + 1] += cstart[i];
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    for (int q = 0; q < nd->nin; q++) {
      nc_id in = nc_graph_input_of(g, i, q);
      cidx[cstart[in] + fill[in]++] = i;
    }
  }
  for (nc_id i = 0; i < nn; i++) cons[i] = NC_NONE;
  for (int k = 0; k < nc_graph_noutputs(g); k++) outp[nc_graph_output(g, k)] = 1;
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    for (int q = 0; q < nd->nin; q++) cons[nc_graph_input_of(g, i, q)] = i;
  }
  // an elementwise root lowered by nc_lw_elementwise
  #define NC_PLAIN_ROOT(x) (nc_op_get(nc_graph_node(g, x)->op)->kind == NC_KIND_ELEMWISE && (!epi || epi[x] == NC_NONE))
  for (nc_id m = 0; m < nn; m++) {
    const nc_node *md = nc_graph_node(g, m);
    if (!outp[m] || !p->materialized[m] || uses[m] != 1 || md->type.rank < 1 || !NC_PLAIN_ROOT(m)) continue;
    nc_id c = cons[m];
    while (c != NC_NONE && !p->materialized[c]) {  // up an inlined elementwise chain of m's shape
      nc_type ct = nc_graph_node(g, c)->type;
      if (nc_op_get(nc_graph_node(g, c)->op)->kind != NC_KIND_ELEMWISE || !nc_lw_same_dims(&ct, &md->type) || uses[c] != 1) {
        c = NC_NONE;
        break;
      }
      c = cons[c];
    }
    if (c == NC_NONE || p->stored_by[c] != NC_NONE || !NC_PLAIN_ROOT(c)) continue;
    nc_type rt = nc_graph_node(g, c)->type;
    if (!nc_lw_same_dims(&rt, &md->type)) continue;
    p->stored_by[m] = c;
    // m's own stored nodes move with it
    for (nc_id q = 0; q < m; q++)
      if (p->stored_by[q] == m) p->stored_by[q] = c;
  }
  #undef NC_PLAIN_ROOT
  unsigned char *hosted = calloc(nn ? nn : 1, 1);
  if (!hosted) {
    free(cons), free(outp), free(cstart), free(fill), free(cidx);
    return false;
  }
  for (nc_id i = 0; i < nn; i++)
    if (p->stored_by[i] != NC_NONE) hosted[p->stored_by[i]] = 1;
  // a non-output elementwise node read only by one group's kernel (through
  // its stored nodes) is recomputed there instead of materialized
  for (nc_id x = nn; x-- > 0;) {
    const nc_node *xd = nc_graph_node(g, x);
    if (outp[x] || !p->materialized[x] || nc_op_get(xd->op)->kind != NC_KIND_ELEMWISE || (epi && epi[x] != NC_NONE) ||
        p->stored_by[x] != NC_NONE)
      continue;
    nc_id host = NC_NONE;
    bool ok = true;
    for (uint32_t e = cstart[x]; e < cstart[x + 1] && ok; e++) {
      nc_id c = cidx[e];  // the kernel that reads x: up c's inlined single-use chain
      while (!p->materialized[c] && uses[c] == 1) c = cons[c];
      nc_id h = !p->materialized[c] ? NC_NONE : p->stored_by[c] != NC_NONE ? p->stored_by[c] : c;
      if (h == NC_NONE || !hosted[h]) ok = false;
      else if (host == NC_NONE) host = h;
      else ok = host == h;
    }
    if (ok && host != NC_NONE && !nc_lw_tree_has_rowfused(g, p, rowfused, x, 0)) p->materialized[x] = 0;
  }
  free(cons), free(outp), free(cstart), free(fill), free(cidx), free(hosted);
  return true;
}

// x = m or m * c (c a constant splat): m, the factor. NC_NONE when x is not.
static nc_id nc_lw_scaled(const nc_graph *g, nc_id x, const uint32_t *uses, const unsigned char *outp, double *f) {
  const nc_node *nd = nc_graph_node(g, x);
  *f = 1;
  if (nd->op != NC_OP_MUL) return x;
  if (uses[x] != 1 || outp[x]) return NC_NONE;
  for (int q = 0; q < 2; q++) {
    const nc_node *c = nc_graph_node(g, nc_graph_input_of(g, x, q));
    if (c->op == NC_OP_CONST) {
      *f = c->fa[0];
      return nc_graph_input_of(g, x, 1 - q);
    }
  }
  return NC_NONE;
}

// The GEMM addend (NC_PATTERN_GEMM_ADD): root = add(alpha m, beta e) with m
// a f32 matmul/bmm read only here and e materialized, of root's dims.
// add[root] gets the pattern; m loses its buffer. Returns NULL on OOM.
static nc_lw_addend *nc_lw_gemm_add(const nc_graph *g, nc_plan *p, const uint32_t *uses, const nc_id *epi,
                                    const nc_id *relu2) {
  uint32_t nn = nc_graph_nnodes(g);
  nc_lw_addend *add = malloc((nn ? nn : 1) * sizeof *add);
  unsigned char *outp = calloc(nn ? nn : 1, 1), *hosts = calloc(nn ? nn : 1, 1);
  if (!add || !outp || !hosts) {
    free(add), free(outp), free(hosts);
    return NULL;
  }
  for (nc_id i = 0; i < nn; i++) add[i].root = NC_NONE;
  for (int k = 0; k < nc_graph_noutputs(g); k++) outp[nc_graph_output(g, k)] = 1;
  for (nc_id i = 0; i < nn; i++)
    if (p->stored_by[i] != NC_NONE) hosts[p->stored_by[i]] = 1;
  for (nc_id r = 0; r < nn; r++) {
    const nc_node *rn = nc_graph_node(g, r);
    if (rn->op != NC_OP_ADD || rn->type.dtype != NC_F32 || !p->materialized[r] || p->stored_by[r] != NC_NONE || hosts[r] ||
        (epi && epi[r] != NC_NONE) || (relu2 && relu2[r] != NC_NONE))
      continue;
    for (int q = 0; q < 2; q++) {
      double alpha, beta;
      nc_id m = nc_lw_scaled(g, nc_graph_input_of(g, r, q), uses, outp, &alpha);
      nc_id e = nc_lw_scaled(g, nc_graph_input_of(g, r, 1 - q), uses, outp, &beta);
      if (m == NC_NONE || e == NC_NONE || m == e) continue;
      const nc_node *mn = nc_graph_node(g, m);
      nc_type et = nc_type_of(g, e);
      if ((mn->op != NC_OP_MATMUL && mn->op != NC_OP_BMM) || mn->type.dtype != NC_F32 || uses[m] != 1 || outp[m] ||
          hosts[m] || (relu2 && relu2[m] != NC_NONE) || !p->materialized[e] || p->stored_by[e] != NC_NONE ||
          et.dtype != NC_F32 || !nc_lw_same_dims(&et, &rn->type) || nc_graph_node(g, e)->op == NC_OP_CONST)
        continue;
      add[r] = (nc_lw_addend){r, m, e, alpha, beta};
      p->materialized[m] = 0;
      break;
    }
  }
  free(outp), free(hosts);
  return add;
}

// The ReLU^2 epilogue (NC_PATTERN_RELU2_EPILOGUE): for s = square(r), r =
// relu(u), u a f32 matmul/bmm. Sets relu2[u] = s when u's GEMM also stores s
// (u read elsewhere: the backward; r then recomputed by its readers as
// relu(u)), or relu2[s] = u when s's kernel is u's GEMM (u and r read only
// through s: neither is stored). Returns NULL on OOM.
static nc_id *nc_lw_relu2(const nc_graph *g, nc_plan *p, const uint32_t *uses, const nc_id *epi) {
  uint32_t nn = nc_graph_nnodes(g);
  nc_id *relu2 = malloc((nn ? nn : 1) * sizeof *relu2);
  unsigned char *outp = calloc(nn ? nn : 1, 1), *bad_r = calloc(nn ? nn : 1, 1), *hosts = calloc(nn ? nn : 1, 1);
  if (!relu2 || !outp || !bad_r || !hosts) {
    free(relu2), free(outp), free(bad_r), free(hosts);
    return NULL;
  }
  for (nc_id i = 0; i < nn; i++) relu2[i] = NC_NONE;
  for (int k = 0; k < nc_graph_noutputs(g); k++) outp[nc_graph_output(g, k)] = 1;
  for (nc_id i = 0; i < nn; i++) {
    if (p->stored_by[i] != NC_NONE) hosts[p->stored_by[i]] = 1;
    // a relu read by something that needs it in memory (a GEMM, a row kernel) keeps its buffer
    const nc_node *nd = nc_graph_node(g, i);
    nc_kind kind = nc_op_get(nd->op)->kind;
    if (kind != NC_KIND_ELEMWISE && kind != NC_KIND_REDUCE)
      for (int q = 0; q < nd->nin; q++) bad_r[nc_graph_input_of(g, i, q)] = 1;
  }
  for (nc_id s = 0; s < nn; s++) {
    const nc_node *sn = nc_graph_node(g, s);
    if (sn->op != NC_OP_SQUARE || sn->type.dtype != NC_F32 || !p->materialized[s] || p->stored_by[s] != NC_NONE ||
        hosts[s] || (epi && epi[s] != NC_NONE))
      continue;
    nc_id r = nc_graph_input_of(g, s, 0);
    if (nc_graph_node(g, r)->op != NC_OP_RELU || outp[r] || bad_r[r] || p->stored_by[r] != NC_NONE || hosts[r]) continue;
    nc_id u = nc_graph_input_of(g, r, 0);
    const nc_node *un = nc_graph_node(g, u);
    if ((un->op != NC_OP_MATMUL && un->op != NC_OP_BMM) || un->type.dtype != NC_F32 || hosts[u] || relu2[u] != NC_NONE ||
        nc_lw_symmetric(g, u, 0))
      continue;
    if (uses[u] == 1 && !outp[u] && uses[r] == 1) {  // u read only through s: s's kernel is the GEMM
      relu2[s] = u;
      p->materialized[u] = 0;
    } else {
      relu2[u] = s;
      p->stored_by[s] = u;
    }
    p->materialized[r] = 0;
  }
  free(outp), free(bad_r), free(hosts);
  return relu2;
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
  if (!(p->stored_by = malloc((nn ? nn : 1) * sizeof *p->stored_by))) {
    free(uses);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  for (nc_id i = 0; i < nn; i++) p->stored_by[i] = NC_NONE;
  bool view = (!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_RESHAPE_VIEW));
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
      // kernel reads the logits' buffer. A GEMM reads a reshape's input buffer
      // (NC_PATTERN_RESHAPE_VIEW): the reshape is not copied.
      if ((nd->op == NC_OP_MATMUL || nd->op == NC_OP_BMM) && view) p->materialized[nc_lw_reshape_base(g, in)] = 1;
      else if (nd->op == NC_OP_MATMUL || nd->op == NC_OP_BMM || nd->op == NC_OP_SCATTER_ADD ||
          ((nd->op == NC_OP_CROSS_ENTROPY || nd->op == NC_OP_CROSS_ENTROPY_GRAD) && q == 0) ||
          ((nd->op == NC_OP_ATTENTION && q < 3) || (nd->op == NC_OP_ATTENTION_GRAD && q < 4)))
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
  bool esrc = (!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_EXPAND_SOURCE));
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    bool map = nd->op == NC_OP_EXPAND || nd->op == NC_OP_RESHAPE || nd->op == NC_OP_PERMUTE ||
               nd->op == NC_OP_SLICE || nd->op == NC_OP_CAST;
    nc_id in0 = nd->nin ? nc_graph_input_of(g, i, 0) : NC_NONE;
    cheap[i] = nd->op == NC_OP_CONST || nd->op == NC_OP_IOTA || (map && (p->materialized[in0] || cheap[in0]));
    if (esrc && nd->op == NC_OP_EXPAND && !cheap[i] && !p->materialized[i] && uses[i] > 1 && uses[in0] == 1) {  // NC_PATTERN_EXPAND_SOURCE
      p->materialized[in0] = 1;
      cheap[i] = 1;
    }
    if (nd->op == NC_OP_INPUT || nd->op == NC_OP_PARAM || nc_op_get(nd->op)->kind == NC_KIND_REDUCE ||
        nd->op == NC_OP_MATMUL || nd->op == NC_OP_BMM || nd->op == NC_OP_SCATTER_ADD || nd->op == NC_OP_CROSS_ENTROPY ||
        nd->op == NC_OP_CROSS_ENTROPY_GRAD || nd->op == NC_OP_ATTENTION || nd->op == NC_OP_ATTENTION_GRAD ||
        (!cheap[i] && uses[i] > 1) ||
        (o && !o->fuse && !cheap[i]))
      p->materialized[i] = 1;
    if (p->materialized[i]) cheap[i] = 0;
  }
  free(cheap);
  if (o && o->fuse && (o->patterns_force & NC_PATTERN_RECOMPUTE) && !(o->patterns_off & NC_PATTERN_RECOMPUTE) && !nc_lw_recompute(g, p)) {
    free(uses);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  if ((!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_CE_LSE))) {  // cross_entropy_grad -> its forward
    for (nc_id i = 0; i < nn; i++) {
      const nc_node *nd = nc_graph_node(g, i);
      if (nd->op != NC_OP_CROSS_ENTROPY_GRAD || nd->ia[1] != 0) continue;
      for (nc_id f = 0; f < i; f++) {
        const nc_node *fd = nc_graph_node(g, f);
        if (fd->op != NC_OP_CROSS_ENTROPY || !p->materialized[f] || fd->ia[0] != nd->ia[0] || fd->ia[1] != 0 ||
            fd->type.dtype != NC_F32 || nc_graph_input_of(g, f, 0) != nc_graph_input_of(g, i, 0) ||
            nc_graph_input_of(g, f, 1) != nc_graph_input_of(g, i, 1))
          continue;
        if (!p->extra_read) {
          if (!(p->extra_read = malloc(nn * sizeof *p->extra_read))) {
            free(uses);
            nc_plan_free(p);
            return nc_errorf(NC_E_NOMEM, "out of memory");
          }
          for (nc_id q = 0; q < nn; q++) p->extra_read[q] = NC_NONE;
        }
        p->extra_read[i] = f;
        break;
      }
    }
  }
  nc_id *epi = NULL;
  if ((!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_SOFTCAP_CE)) && !(epi = nc_lw_softcap_ce(g, p, uses, o && (o->patterns_force & NC_PATTERN_SOFTCAP_CE)))) {
    free(uses);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  if (epi && p->extra_read)  // a gradient computed in its epilogue's kernel reads the loss rows there
    for (nc_id i = 0; i < nn; i++)
      if (epi[i] != NC_NONE && p->extra_read[epi[i]] != NC_NONE) p->extra_read[i] = p->extra_read[epi[i]];
  unsigned char *rowfused = NULL;
  if ((!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_NORM_ROPE)) && !(rowfused = nc_lw_rowfuse(g, p, o && (o->patterns_force & NC_PATTERN_NORM_ROPE)))) {
    free(epi);
    free(uses);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  if ((!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_UPDATE_GROUP)) && !nc_lw_update_group(g, p, uses, epi, rowfused)) {
    free(epi);
    free(rowfused);
    free(uses);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  nc_id *relu2 = NULL;
  if ((!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_RELU2_EPILOGUE)) && !(relu2 = nc_lw_relu2(g, p, uses, epi))) {
    free(epi);
    free(rowfused);
    free(uses);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  nc_lw_addend *gadd = NULL;
  if ((!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_GEMM_ADD)) && !(gadd = nc_lw_gemm_add(g, p, uses, epi, relu2))) {
    free(epi);
    free(rowfused);
    free(relu2);
    free(uses);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  free(uses);
  bool flash = o && o->flash_attention;
  if (flash) nc_lw_flash_group(g, p);
  unsigned char *hosts = NULL;  // per node: its kernel stores other nodes too
  if ((flash && !nc_lw_flash_link(g, p)) || !(hosts = calloc(nn ? nn : 1, 1))) {
    free(epi);
    free(rowfused);
    free(relu2);
    free(gadd);
    nc_plan_free(p);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  for (nc_id i = 0; i < nn; i++)
    if (p->stored_by[i] != NC_NONE && !(relu2 && relu2[p->stored_by[i]] == i)) hosts[p->stored_by[i]] = 1;
  nc_status st = NC_OK;
  for (nc_id i = 0; i < nn && !st; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (!p->materialized[i] || nd->op == NC_OP_INPUT || nd->op == NC_OP_PARAM || p->stored_by[i] != NC_NONE) continue;
    nc_plan_kernel *pk = &p->kernels[p->nkernels++];
    char name[64];
    bool fl = flash && (nd->op == NC_OP_ATTENTION || nd->op == NC_OP_ATTENTION_GRAD) && nc_lw_flash_ok(g, i);
    if (fl) snprintf(name, sizeof name, "k%u_flash_%s", i, nc_op_get(nd->op)->name);
    else if (epi && epi[i] != NC_NONE) snprintf(name, sizeof name, "k%u_ce_grad_epilogue", i);
    else if (relu2 && relu2[i] != NC_NONE) snprintf(name, sizeof name, "k%u_matmul_relu2", i);
    else if (gadd && gadd[i].root == i) snprintf(name, sizeof name, "k%u_matmul_add", i);
    else if (hosts && hosts[i]) snprintf(name, sizeof name, "k%u_update_group", i);
    else snprintf(name, sizeof name, "k%u_%s", i, nc_op_get(nd->op)->name);
    nc_kernel_init(&pk->k, name);
    pk->node = i;
    for (int b = 0; b < NC_KERNEL_MAX_BUFS; b++) pk->buf_node[b] = NC_NONE;
    nc_lw w = {g, p, pk, &pk->k, 0, NC_OK, NC_NONE, NC_KX_NONE, rowfused, !(o && (o->patterns_off & NC_PATTERN_SYMMETRIC_GEMM)),
               hosts[i], 0, {0}, {0}, !(o && (o->patterns_off & NC_PATTERN_SCATTER_BLOCKS))};
    if (fl) st = nc_lw_flash(&w, i);
    else if (relu2 && relu2[i] != NC_NONE && nd->op == NC_OP_SQUARE) st = nc_lw_matmul(&w, relu2[i], i, true, NULL);
    else if (gadd && gadd[i].root == i) st = nc_lw_matmul(&w, gadd[i].m, NC_NONE, false, &gadd[i]);
    else if (nd->op == NC_OP_MATMUL || nd->op == NC_OP_BMM) st = nc_lw_matmul(&w, i, relu2 ? relu2[i] : NC_NONE, false, NULL);
    else if (nd->op == NC_OP_SCATTER_ADD && o && o->scatter_atomic && nc_lw_scatter_call_ok(g, i)) st = nc_lw_scatter_call(&w, i);
    else if (nd->op == NC_OP_SCATTER_ADD) st = nc_lw_scatter_add(&w, i);
    else if (epi && epi[i] != NC_NONE) st = nc_lw_cross_entropy(&w, epi[i], true, i);
    else if (nd->op == NC_OP_CROSS_ENTROPY) st = nc_lw_cross_entropy(&w, i, false, NC_NONE);
    else if (nd->op == NC_OP_CROSS_ENTROPY_GRAD) st = nc_lw_cross_entropy(&w, i, true, NC_NONE);
    else if (nd->op == NC_OP_ATTENTION || nd->op == NC_OP_ATTENTION_GRAD) st = nc_lw_attention(&w, i);
    else if (nc_op_get(nd->op)->kind == NC_KIND_REDUCE) st = nc_lw_reduce(&w, i);
    else if (nd->op == NC_OP_CONCAT && !hosts[i] && (!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_CONCAT_NESTS)))
      st = nc_lw_concat(&w, i);
    else st = nc_lw_elementwise(&w, i);
    if (!st) st = w.st;
    if (!st) st = nc_kernel_verify(&pk->k);
    if (st) st = nc_status_prefix(st, "lowering node %%%u (%s): ", i, nc_op_get(nd->op)->name);
  }
  free(epi);
  free(rowfused);
  free(relu2);
  free(gadd);
  free(hosts);
  if (!st && (!o || o->fuse) && !(o && (o->patterns_off & NC_PATTERN_UPDATE_BATCH))) st = nc_plan_batch_updates(g, p);
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
  mo.extra_read = p->extra_read;
  nc_id *exec = NULL;
  bool grouped = false;
  for (nc_id i = 0; i < nn && p->stored_by && !grouped; i++) grouped = p->stored_by[i] != NC_NONE;
  if (grouped) {  // nodes stored by another node's kernel are computed (and read their inputs) there
    if (!(exec = malloc(nn * sizeof *exec))) {
      free(mat);
      return nc_errorf(NC_E_NOMEM, "out of memory");
    }
    for (nc_id i = 0; i < nn; i++) exec[i] = p->stored_by[i] != NC_NONE ? p->stored_by[i] : i;
    mo.exec_at = exec;
  }
  nc_status st = nc_memplan_build(g, &mo, out);
  free(exec);
  free(mat);
  return st;
}
