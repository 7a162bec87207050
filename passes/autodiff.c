// Reverse-mode autodiff: one backward sweep over node ids (a topological
// order), accumulating adjoints, applying each op's gradient rule.
#include "passes/autodiff.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir/build.h"
#include "ir/rules.h"
#include "passes/pass.h"

// A gradient rule gets the node, its adjoint dy, and writes one adjoint per
// input into dx[] (NC_NONE = no gradient for that input).
typedef void (*nc_grad_fn)(nc_graph *g, nc_id y, nc_id dy, nc_id *dx);
#define GRAD(ID) static void nc_grad_##ID(nc_graph *g, nc_id y, nc_id dy, nc_id *dx)
#define IN(k) nc_graph_input_of(g, y, k)
#define NODE(id) nc_graph_node(g, id)

static nc_id zeros_like(nc_graph *g, nc_id x) { return nc_b_const_like(g, x, 0.0); }
static nc_id mul(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_MUL, a, b); }
static nc_id sub(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_SUB, a, b); }

#define NO_GRAD(ID) GRAD(ID) { (void)g; (void)y; (void)dy; (void)dx; }
NO_GRAD(INPUT)
NO_GRAD(PARAM)
NO_GRAD(CONST)
NO_GRAD(IOTA)
NO_GRAD(NOT)
NO_GRAD(AND)
NO_GRAD(OR)
NO_GRAD(EQ)
NO_GRAD(NE)
NO_GRAD(LT)
NO_GRAD(LE)
NO_GRAD(GT)
NO_GRAD(GE)
NO_GRAD(RMS_NORM_GRAD)
NO_GRAD(ATTENTION_GRAD)
NO_GRAD(SCATTER_ADD)
NO_GRAD(CROSS_ENTROPY_GRAD)

GRAD(NEG) { dx[0] = nc_op1(g, NC_OP_NEG, dy); }
GRAD(ABS) {
  nc_id x = IN(0), z = zeros_like(g, x);
  nc_id pos = nc_op3(g, NC_OP_WHERE, nc_op2(g, NC_OP_GT, x, z), dy, zeros_like(g, dy));
  dx[0] = nc_op3(g, NC_OP_WHERE, nc_op2(g, NC_OP_LT, x, z), nc_op1(g, NC_OP_NEG, dy), pos);
}
GRAD(RELU) {
  nc_id x = IN(0);
  dx[0] = nc_op3(g, NC_OP_WHERE, nc_op2(g, NC_OP_GT, x, zeros_like(g, x)), dy, zeros_like(g, dy));
}
GRAD(SQUARE) { dx[0] = mul(g, dy, nc_b_scale(g, IN(0), 2.0)); }
GRAD(TANH) {  // 1 - y^2
  dx[0] = mul(g, dy, sub(g, nc_b_const_like(g, y, 1.0), nc_op1(g, NC_OP_SQUARE, y)));
}
GRAD(EXP) { dx[0] = mul(g, dy, y); }
GRAD(LOG) { dx[0] = nc_op2(g, NC_OP_DIV, dy, IN(0)); }
GRAD(SQRT) { dx[0] = nc_op2(g, NC_OP_DIV, dy, nc_b_scale(g, y, 2.0)); }
GRAD(RSQRT) {  // d x^-1/2 = -1/2 y^3
  dx[0] = mul(g, dy, nc_b_scale(g, mul(g, y, nc_op1(g, NC_OP_SQUARE, y)), -0.5));
}
GRAD(SIN) { dx[0] = mul(g, dy, nc_op1(g, NC_OP_COS, IN(0))); }
GRAD(COS) { dx[0] = nc_op1(g, NC_OP_NEG, mul(g, dy, nc_op1(g, NC_OP_SIN, IN(0)))); }
GRAD(SIGMOID) { dx[0] = mul(g, dy, mul(g, y, sub(g, nc_b_const_like(g, y, 1.0), y))); }
GRAD(POWC) {
  double p = NODE(y)->fa[0];
  dx[0] = mul(g, dy, nc_b_scale(g, nc_b_powc(g, IN(0), p - 1), p));
}
GRAD(CAST) {
  nc_type xt = nc_type_of(g, IN(0));
  dx[0] = nc_dtype_is_float(xt.dtype) ? nc_b_cast(g, dy, xt.dtype) : NC_NONE;
}
GRAD(ADD) { dx[0] = dy, dx[1] = dy; }
GRAD(SUB) { dx[0] = dy, dx[1] = nc_op1(g, NC_OP_NEG, dy); }
GRAD(MUL) { dx[0] = mul(g, dy, IN(1)), dx[1] = mul(g, dy, IN(0)); }
GRAD(DIV) {
  nc_id b = IN(1);
  dx[0] = nc_op2(g, NC_OP_DIV, dy, b);
  dx[1] = nc_op1(g, NC_OP_NEG, nc_op2(g, NC_OP_DIV, mul(g, dy, y), b));
}
// max/min: ties send the whole gradient to the first input.
GRAD(MAX) {
  nc_id c = nc_op2(g, NC_OP_GE, IN(0), IN(1)), z = zeros_like(g, dy);
  dx[0] = nc_op3(g, NC_OP_WHERE, c, dy, z);
  dx[1] = nc_op3(g, NC_OP_WHERE, c, z, dy);
}
GRAD(MIN) {
  nc_id c = nc_op2(g, NC_OP_LE, IN(0), IN(1)), z = zeros_like(g, dy);
  dx[0] = nc_op3(g, NC_OP_WHERE, c, dy, z);
  dx[1] = nc_op3(g, NC_OP_WHERE, c, z, dy);
}
GRAD(WHERE) {
  nc_id c = IN(0), z = zeros_like(g, dy);
  dx[1] = nc_op3(g, NC_OP_WHERE, c, dy, z);
  dx[2] = nc_op3(g, NC_OP_WHERE, c, z, dy);
}

// dy of a reduction, reshaped to keepdim form and expanded to x's shape.
static nc_id unreduce(nc_graph *g, nc_id y, nc_id dy) {
  nc_id x = IN(0);
  const nc_node *n = NODE(y);
  nc_type xt = nc_type_of(g, x), kt = xt;
  for (int i = 0; i < xt.rank; i++)
    if (n->ia[0] & (INT64_C(1) << i)) kt.dim[i] = nc_dim_const(1);
  return nc_b_expand(g, nc_b_reshape(g, dy, kt), xt);
}
GRAD(REDUCE_SUM) { dx[0] = unreduce(g, y, dy); }
GRAD(REDUCE_MEAN) {
  nc_type xt = nc_type_of(g, IN(0));
  nc_dim n = nc_dim_const(1);
  for (int i = 0; i < xt.rank; i++)
    if (NODE(y)->ia[0] & (INT64_C(1) << i)) nc_dim_mul(n, xt.dim[i], &n);
  if (!nc_dim_is_const(n)) {  // mean over a symbolic axis: divide by the runtime count
    nc_id cnt = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_b_const_like(g, IN(0), 1.0), NODE(y)->ia[0], NODE(y)->ia[1]);
    dx[0] = unreduce(g, y, nc_op2(g, NC_OP_DIV, dy, cnt));
    return;
  }
  dx[0] = unreduce(g, y, nc_b_scale(g, dy, 1.0 / (double)n.c));
}
// max: the positions equal to the max share the gradient evenly (as
// torch.amax). Giving each tied position the whole dy would count it once per
// tie: not a subgradient (shifting all of x by t moves the max by t, not k*t).
GRAD(REDUCE_MAX) {
  nc_id x = IN(0), z = zeros_like(g, x);
  int64_t axes = NODE(y)->ia[0], keep = NODE(y)->ia[1];
  nc_id hit = nc_op2(g, NC_OP_EQ, x, unreduce(g, y, y));
  nc_id ones = nc_op3(g, NC_OP_WHERE, hit, nc_b_const_like(g, x, 1.0), z);
  nc_id cnt = nc_b_reduce(g, NC_OP_REDUCE_SUM, ones, axes, keep);
  dx[0] = nc_op3(g, NC_OP_WHERE, hit, unreduce(g, y, nc_op2(g, NC_OP_DIV, dy, cnt)), z);
}
GRAD(RMS_NORM) { dx[0] = nc_b_rms_norm_grad(g, IN(0), dy, NODE(y)->fa[0]); }

static int64_t last_axis(nc_graph *g, nc_id x) { return INT64_C(1) << (nc_type_of(g, x).rank - 1); }
GRAD(SOFTMAX) {  // y * (dy - sum(dy*y))
  nc_id s = nc_b_reduce(g, NC_OP_REDUCE_SUM, mul(g, dy, y), last_axis(g, y), true);
  dx[0] = mul(g, y, sub(g, dy, nc_b_expand_like(g, s, y)));
}
GRAD(LOG_SOFTMAX) {  // dy - softmax(x) * sum(dy)
  nc_id s = nc_b_reduce(g, NC_OP_REDUCE_SUM, dy, last_axis(g, y), true);
  dx[0] = sub(g, dy, mul(g, nc_op1(g, NC_OP_EXP, y), nc_b_expand_like(g, s, y)));
}
GRAD(ROPE) {  // a rotation: its transpose rotates the other way
  const nc_node *n = NODE(y);
  dx[0] = nc_b_rope(g, dy, n->nin > 1 ? IN(1) : NC_NONE, n->fa[0], !n->ia[0]);
}

// 2-D matmul gradients for op(a) @ op(b) with op = transpose when flagged.
static void mm2_grad(nc_graph *g, nc_id a, nc_id b, nc_id dy, bool ta, bool tb, nc_id *da, nc_id *db) {
  if (!ta && !tb) *da = nc_b_matmul(g, dy, b, 0, 1), *db = nc_b_matmul(g, a, dy, 1, 0);
  else if (!ta && tb) *da = nc_b_matmul(g, dy, b, 0, 0), *db = nc_b_matmul(g, dy, a, 1, 0);
  else if (ta && !tb) *da = nc_b_matmul(g, b, dy, 0, 1), *db = nc_b_matmul(g, a, dy, 0, 0);
  else *da = nc_b_matmul(g, b, dy, 1, 1), *db = nc_b_matmul(g, dy, a, 1, 1);
}
GRAD(MATMUL) {
  nc_id a = IN(0), b = IN(1);
  bool ta = NODE(y)->ia[0], tb = NODE(y)->ia[1];
  nc_type at = nc_type_of(g, a), yt = nc_type_of(g, dy);
  if (at.rank == 2) {
    mm2_grad(g, a, b, dy, ta, tb, &dx[0], &dx[1]);
    return;
  }
  // flatten leading dims: (...,M,K) -> (P,K)
  nc_dim p = nc_dim_const(1);
  for (int i = 0; i < at.rank - 1; i++) nc_dim_mul(p, at.dim[i], &p);
  nc_dim a2[2] = {p, at.dim[at.rank - 1]}, y2[2] = {p, yt.dim[yt.rank - 1]};
  nc_id af = nc_b_reshape_dims(g, a, 2, a2), dyf = nc_b_reshape_dims(g, dy, 2, y2), daf;
  mm2_grad(g, af, b, dyf, false, tb, &daf, &dx[1]);
  dx[0] = nc_b_reshape(g, daf, at);
}
GRAD(BMM) {
  nc_id a = IN(0), b = IN(1);
  bool ta = NODE(y)->ia[0], tb = NODE(y)->ia[1];
  if (!ta && !tb) dx[0] = nc_b_bmm(g, dy, b, 0, 1), dx[1] = nc_b_bmm(g, a, dy, 1, 0);
  else if (!ta && tb) dx[0] = nc_b_bmm(g, dy, b, 0, 0), dx[1] = nc_b_bmm(g, dy, a, 1, 0);
  else if (ta && !tb) dx[0] = nc_b_bmm(g, b, dy, 0, 1), dx[1] = nc_b_bmm(g, a, dy, 0, 0);
  else dx[0] = nc_b_bmm(g, b, dy, 1, 1), dx[1] = nc_b_bmm(g, dy, a, 1, 1);
}
GRAD(ATTENTION) {
  const nc_node *n = NODE(y);
  nc_id kvlen = n->nin > 3 ? IN(3) : NC_NONE;
  bool causal = n->ia[0];
  int64_t window = n->ia[1];
  double scale = n->fa[0];
  for (int w = 0; w < 3; w++)
    dx[w] = nc_b_attention_grad(g, IN(0), IN(1), IN(2), dy, kvlen, w, causal, window, scale);
}
GRAD(GATHER) { dx[0] = nc_b_scatter_add(g, IN(1), dy, nc_type_of(g, IN(0))); }
GRAD(CROSS_ENTROPY) {
  const nc_node *n = NODE(y);
  dx[0] = nc_b_cross_entropy_grad(g, IN(0), IN(1), dy, n->ia[0], (int)n->ia[1]);
}
GRAD(RESHAPE) { dx[0] = nc_b_reshape(g, dy, nc_type_of(g, IN(0))); }
GRAD(PERMUTE) {
  int64_t p = NODE(y)->ia[0];
  int r = nc_perm_rank(p), inv[NC_MAX_RANK];
  for (int i = 0; i < r; i++) inv[nc_perm_at(p, i)] = i;
  dx[0] = nc_b_permute(g, dy, inv, r);
}
GRAD(SLICE) {  // zero-pad back to the input's extent
  const nc_node *n = NODE(y);
  int axis = (int)n->ia[0];
  int64_t start = n->ia[1], end = n->ia[2];
  nc_type xt = nc_type_of(g, IN(0)), pt = xt;
  nc_id parts[3];
  int np = 0;
  if (start > 0) {
    pt.dim[axis] = nc_dim_const(start);
    parts[np++] = nc_const(g, 0.0, pt);
  }
  parts[np++] = dy;
  if (end < xt.dim[axis].c) {
    pt.dim[axis] = nc_dim_const(xt.dim[axis].c - end);
    parts[np++] = nc_const(g, 0.0, pt);
  }
  dx[0] = nc_b_concat(g, parts, np, axis);
}
GRAD(CONCAT) {
  int axis = (int)NODE(y)->ia[0], nin = NODE(y)->nin;  // NODE() goes stale as the graph grows
  int64_t off = 0;
  for (int k = 0; k < nin; k++) {
    int64_t len = nc_type_of(g, IN(k)).dim[axis].c;
    dx[k] = nc_b_slice(g, dy, axis, off, off + len);
    off += len;
  }
}
GRAD(EXPAND) {  // sum over the broadcast axes
  nc_type xt = nc_type_of(g, IN(0)), yt = nc_type_of(g, y);
  int off = yt.rank - xt.rank;
  int64_t axes = 0;
  for (int i = 0; i < yt.rank; i++)
    if (i < off || !nc_dim_eq(xt.dim[i - off], yt.dim[i])) axes |= INT64_C(1) << i;
  dx[0] = axes ? nc_b_reshape(g, nc_b_reduce(g, NC_OP_REDUCE_SUM, dy, axes, false), xt) : dy;
}

GRAD(SHIFT) { dx[0] = nc_b_shift(g, dy, (int)NODE(y)->ia[0], -NODE(y)->ia[1]); }

static const nc_grad_fn nc_grad_table[NC_OP_COUNT] = {
#define X(ID, NAME, MINI, MAXI, KIND, FLAGS, ATTRS, RULE) nc_grad_##ID,
#include "ir/ops.def"
#undef X
};

nc_status nc_autodiff(nc_graph *g, nc_id loss, nc_id seed, const nc_id *wrt, int n, nc_id *grads) {
  if (nc_graph_error(g)) return nc_errorf(NC_E_INVALID, "autodiff: the graph already has an error: %s", nc_status_msg(nc_graph_error(g)));
  uint32_t nn = nc_graph_nnodes(g);
  if (loss >= nn) return nc_errorf(NC_E_INVALID, "autodiff: loss node %u does not exist", loss);
  nc_type lt = nc_type_of(g, loss);
  if (!nc_dtype_is_float(lt.dtype)) return nc_errorf(NC_E_TYPE, "autodiff: loss must be floating point");
  if (seed == NC_NONE && lt.rank != 0) return nc_errorf(NC_E_TYPE, "autodiff: loss must be a scalar (or give a seed)");
  if (seed != NC_NONE) {
    if (seed >= nn) return nc_errorf(NC_E_INVALID, "autodiff: seed node %u does not exist", seed);
    nc_type st = nc_type_of(g, seed);
    if (!nc_type_eq(&st, &lt)) {
      char a[128], b[128];
      return nc_errorf(NC_E_TYPE, "autodiff: seed must have the loss's type %s, got %s",
                       nc_type_str(g, &lt, a, sizeof a), nc_type_str(g, &st, b, sizeof b));
    }
  }
  // A bad wrt id would otherwise get a silent zero gradient of a made-up type.
  for (int i = 0; i < n; i++)
    if (wrt[i] >= nn) return nc_errorf(NC_E_INVALID, "autodiff: wrt[%d] = node %u does not exist", i, wrt[i]);
  nc_id *adj = malloc(nn * sizeof *adj);
  unsigned char *need = calloc(nn, 1);
  if (!adj || !need) {
    free(adj);
    free(need);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  // Only nodes on a path from a wrt node to the loss need adjoints.
  for (int i = 0; i < n; i++)
    if (wrt[i] < nn) need[wrt[i]] = 1;
  for (uint32_t id = 0; id < nn; id++) {
    adj[id] = NC_NONE;
    const nc_node *nd = nc_graph_node(g, id);
    for (int k = 0; k < nd->nin && !need[id]; k++) need[id] = need[nc_graph_input_of(g, id, k)];
  }
  adj[loss] = seed != NC_NONE ? seed : nc_const(g, 1.0, lt);
  for (uint32_t id = loss + 1; id-- > 0;) {
    if (adj[id] == NC_NONE || !need[id]) continue;
    const nc_node *nd = nc_graph_node(g, id);
    nc_op op = nd->op;
    int nin = nd->nin;
    nc_id ins[NC_MAX_INPUTS], dx[NC_MAX_INPUTS];
    for (int k = 0; k < nin; k++) ins[k] = nc_graph_input_of(g, id, k), dx[k] = NC_NONE;
    nc_grad_table[op](g, id, adj[id], dx);  // may grow the graph: nd is stale after this
    for (int k = 0; k < nin; k++) {
      if (dx[k] == NC_NONE || !need[ins[k]]) continue;
      adj[ins[k]] = adj[ins[k]] == NC_NONE ? dx[k] : nc_op2(g, NC_OP_ADD, adj[ins[k]], dx[k]);
    }
    if (nc_graph_error(g)) break;
  }
  for (int i = 0; i < n; i++)
    grads[i] = wrt[i] < nn && adj[wrt[i]] != NC_NONE ? adj[wrt[i]] : nc_b_const_like(g, wrt[i], 0.0);
  free(adj);
  free(need);
  nc_status st = nc_graph_take_error(g);
  return st ? nc_status_prefix(st, "autodiff: ") : NC_OK;
}

// The pass: d(output "loss") / d(every param), added as outputs "grad/<name>".
nc_status nc_pass_autodiff(nc_graph **gp, nc_pass_ctx *ctx) {
  nc_graph *g = *gp;
  nc_id loss = NC_NONE;
  for (int k = 0; k < nc_graph_noutputs(g); k++)
    if (!strcmp(nc_graph_output_name(g, k), "loss")) loss = nc_graph_output(g, k);
  if (loss == NC_NONE) return nc_errorf(NC_E_INVALID, "the graph has no output named 'loss'");
  uint32_t nn = nc_graph_nnodes(g);
  nc_id *params = calloc(nn ? nn : 1, sizeof *params), *grads = calloc(nn ? nn : 1, sizeof *grads);
  if (!params || !grads) {
    free(params);
    free(grads);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  int np = 0;
  for (nc_id i = 0; i < nn; i++)
    if (nc_graph_node(g, i)->op == NC_OP_PARAM) params[np++] = i;
  nc_status st = nc_autodiff(g, loss, NC_NONE, params, np, grads);
  for (int i = 0; i < np && !st; i++) {
    const char *name = nc_node_name(g, params[i]);
    size_t len = strlen(name) + 6;
    char *out = malloc(len);
    if (!out) {
      st = nc_errorf(NC_E_NOMEM, "out of memory");
      break;
    }
    snprintf(out, len, "grad/%s", name);
    st = nc_graph_set_output(g, out, grads[i]);
    free(out);
  }
  free(params);
  free(grads);
  return st;
}
