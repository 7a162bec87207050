// The training-step graph: forward, autodiff, AdamW and Muon updates.
#include "models/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/build.h"
#include "passes/autodiff.h"
#include "passes/pass.h"

const double nc_polar_express_coeffs[5][3] = {
    {8.156554524902461, -22.48329292557795, 15.878769915207462},
    {4.042929935166739, -2.808917465908714, 0.5000178451051316},
    {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
    {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
    {2.3465413258596377, -1.7097828382687081, 0.42323551169305323},
};
static const double nc_quintic_ns[3] = {3.4445, -4.7750, 2.0315};

void nc_optim_defaults(nc_optim_cfg *c) {
  memset(c, 0, sizeof *c);
  static const double betas[NC_GROUP_COUNT][2] = {
      [NC_GROUP_LM_HEAD] = {0.8, 0.96},       [NC_GROUP_WTE] = {0.8, 0.995},
      [NC_GROUP_VALUE_EMBEDS] = {0.8, 0.995}, [NC_GROUP_RESID_LAMBDAS] = {0.8, 0.95},
      [NC_GROUP_X0_LAMBDAS] = {0.96, 0.95},   [NC_GROUP_SMEAR_BACKOUT] = {0.8, 0.95},
      [NC_GROUP_MUON] = {0, 0}};
  for (int i = 0; i < NC_GROUP_COUNT; i++) {
    c->adamw[i].beta1 = betas[i][0];
    c->adamw[i].beta2 = betas[i][1];
    c->adamw[i].eps = 1e-10;
  }
  c->ns_steps = 5;
  c->polar_express = true;
  c->normuon = true;
  c->normuon_beta2 = 0.9;
  c->cautious_wd = true;
  const char *off = getenv("NC_PATTERNS_OFF");  // the runtime's switch of the named patterns
  c->polar_gram = !(off && (strtoul(off, NULL, 0) & NC_PATTERN_POLAR_GRAM));
  c->muon_stack = !(off && (strtoul(off, NULL, 0) & NC_PATTERN_MUON_STACK));
}

typedef struct {
  nc_graph *g;
  const nc_optim_cfg *oc;
  nc_status st;
} nc_tb;

static nc_id nc_tb_scalar(nc_tb *t, const char *prefix, const char *group) {
  char name[96];
  snprintf(name, sizeof name, "%s.%s", prefix, group);
  return nc_leaf(t->g, NC_OP_INPUT, name, nc_type_make(NC_F32, 0, NULL));
}

// Optimizer state "<what>.<param>", e.g. adamw.exp_avg.lm_head.weight.
static nc_id nc_tb_state(nc_tb *t, const char *param, const char *what, nc_type type) {
  char name[160];
  snprintf(name, sizeof name, "%s.%s", what, param);
  return nc_leaf(t->g, NC_OP_INPUT, name, type);
}

static void nc_tb_output(nc_tb *t, const char *name, nc_id v) {
  if (t->st) return;
  if (nc_graph_error(t->g)) {
    t->st = nc_graph_take_error(t->g);
    return;
  }
  char out[192];
  snprintf(out, sizeof out, "new.%.180s", name);
  t->st = nc_graph_set_output(t->g, out, v);
}

// s (a scalar node) broadcast to x's type
static nc_id bc(nc_graph *g, nc_id s, nc_id x) { return nc_b_expand_like(g, s, x); }
static nc_id add(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_ADD, a, b); }
static nc_id sub(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_SUB, a, b); }
static nc_id mul(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_MUL, a, b); }
static nc_id dvd(nc_graph *g, nc_id a, nc_id b) { return nc_op2(g, NC_OP_DIV, a, b); }
// lerp(a, b, w) = a + w (b - a), w a compile-time constant
static nc_id lerpc(nc_graph *g, nc_id a, nc_id b, double w) { return add(g, a, nc_b_scale(g, sub(g, b, a), w)); }

// AdamW (nanochat): p *= 1 - lr*wd; m = lerp(m, g, 1-b1); v = lerp(v, g^2, 1-b2);
// p -= (lr/bc1) * m / (sqrt(v/bc2) + eps)
static void nc_tb_adamw(nc_tb *t, const nc_param_desc *d, nc_id p, nc_id grad) {
  nc_graph *g = t->g;
  const nc_adamw_cfg *c = &t->oc->adamw[d->group];
  const char *grp = nc_param_group_name(d->group);
  nc_type pt = nc_type_of(g, p);
  nc_id lr = bc(g, nc_tb_scalar(t, "lr", grp), p), wd = bc(g, nc_tb_scalar(t, "wd", grp), p);
  nc_id bc1 = bc(g, nc_tb_scalar(t, "bc1", grp), p), bc2 = bc(g, nc_tb_scalar(t, "bc2", grp), p);
  nc_id m = nc_tb_state(t, d->name, "adamw.exp_avg", pt), v = nc_tb_state(t, d->name, "adamw.exp_avg_sq", pt);
  nc_id one = nc_b_const_like(g, p, 1.0);
  nc_id p1 = mul(g, p, sub(g, one, mul(g, lr, wd)));
  nc_id m1 = lerpc(g, m, grad, 1.0 - c->beta1);
  nc_id v1 = lerpc(g, v, nc_op1(g, NC_OP_SQUARE, grad), 1.0 - c->beta2);
  nc_id denom = add(g, nc_op1(g, NC_OP_SQRT, dvd(g, v1, bc2)), nc_b_const_like(g, p, c->eps));
  nc_id p2 = sub(g, p1, mul(g, dvd(g, lr, bc1), dvd(g, m1, denom)));
  char name[180];
  nc_tb_output(t, d->name, p2);
  snprintf(name, sizeof name, "adamw.exp_avg.%s", d->name);
  nc_tb_output(t, name, m1);
  snprintf(name, sizeof name, "adamw.exp_avg_sq.%s", d->name);
  nc_tb_output(t, name, v1);
}

// Frobenius norm of a matrix (of each matrix of a stack (G, r, c)) over the
// last two axes, broadcast back to x's type.
static nc_id nc_fro_like(nc_graph *g, nc_id x) {
  int r = nc_type_of(g, x).rank;
  int64_t axes = (INT64_C(1) << (r - 1)) | (INT64_C(1) << (r - 2));
  nc_id ss = nc_b_reduce(g, NC_OP_REDUCE_SUM, nc_op1(g, NC_OP_SQUARE, x), axes, true);
  return bc(g, nc_op1(g, NC_OP_SQRT, ss), x);
}

// a b of matrices, or of stacks of them (rank 3: one batched GEMM)
static nc_id mm(nc_graph *g, nc_id a, nc_id b, bool ta, bool tb) {
  return nc_type_of(g, a).rank == 3 ? nc_b_bmm(g, a, b, ta, tb) : nc_b_matmul(g, a, b, ta, tb);
}

// The Gram form of iterations first.. of the loop below (NC_PATTERN_POLAR_GRAM)
// for a non-square x, (m, n) with m < n (wide; tall: x^T): with A0 = X0 X0^T
// (m, m) every B_i = a_i I + b_i A_i + c_i A_i^2 is a polynomial of A0, so
// X_{i+1} = B_i X_i = Q_{i+1} X0 with Q_{i+1} = B_i Q_i and
// A_{i+1} = X_{i+1} X_{i+1}^T = B_i A_i B_i. The loop runs on (m, m) matrices
// and X0 is multiplied once at the end. All products are of polynomials of
// A0 (symmetric, commuting: the lowering's symmetric hint, passes/lower.c).
// Precision: Q maps a tiny singular value s to ~(prod a_i) s, so |Q| ~ prod
// a_i while its action on the large ones is ~1, and fp32 rounding in Q costs
// ~eps prod a_i relative per row of the result (NorMuon then normalizes the
// rows). Over all 5 Polar Express steps prod a_i ~ 950 and the tiny-model
// fixtures of tests/test_model_parity.c move from 1e-5 to 7e-3; from the
// third step (prod 30) they stay at the X form's 1e-5..1e-4. So the first
// NC_POLAR_GRAM_FROM steps run in the X form: for n = 4m (the MLP matrices)
// 72 % of the X form's FLOPs (23.5 vs 32.5 m^3 with symmetric products).
#define NC_POLAR_GRAM_FROM 2
static nc_id nc_tb_polar_gram(nc_tb *t, nc_id x0, bool tall, int first) {
  nc_graph *g = t->g;
  nc_id a = tall ? mm(g, x0, x0, true, false) : mm(g, x0, x0, false, true);  // (m, m), or (G, m, m) stacked
  nc_type at = nc_type_of(g, a);
  nc_node_desc d;
  nc_id io[2];
  for (int ax = 0; ax < 2; ax++) {
    nc_node_desc_init(&d, NC_OP_IOTA);
    d.type = at;
    d.type.dtype = NC_I32;
    d.ia[0] = at.rank - 2 + ax;
    io[ax] = nc_build(g, &d);
  }
  nc_id eye = nc_b_cast(g, nc_op2(g, NC_OP_EQ, io[0], io[1]), NC_F32);  // I (m, m)
  nc_id q = NC_NONE;
  for (int i = first; i < t->oc->ns_steps; i++) {
    const double *abc = t->oc->polar_express ? nc_polar_express_coeffs[i < 5 ? i : 4] : nc_quintic_ns;
    // B' = b A + c A A; B = a I + B'
    nc_id bp = add(g, nc_b_scale(g, a, abc[1]), nc_b_scale(g, mm(g, a, a, false, false), abc[2]));
    q = q == NC_NONE ? add(g, nc_b_scale(g, eye, abc[0]), bp)                 // Q1 = B0
                     : add(g, nc_b_scale(g, q, abc[0]), mm(g, bp, q, false, false));  // B Q
    if (i + 1 == t->oc->ns_steps) break;
    nc_id c = add(g, nc_b_scale(g, a, abc[0]), mm(g, bp, a, false, false));  // B A
    a = add(g, nc_b_scale(g, c, abc[0]), mm(g, c, bp, false, false));        // B A B
  }
  return tall ? mm(g, x0, q, false, false) : mm(g, q, x0, false, false);
}

// Orthogonalization: X / (|X|_F * 1.01 + 1e-6), then ns_steps iterations of
// X <- aX + X(bA + cA^2), A = X^T X (tall) or X <- aX + (bA + cA^2)X, A = X X^T (wide).
static nc_id nc_tb_orthogonalize(nc_tb *t, nc_id gmat, int64_t rows, int64_t cols) {
  nc_graph *g = t->g;
  nc_id x = dvd(g, gmat, add(g, nc_b_scale(g, nc_fro_like(g, gmat), 1.01), nc_b_const_like(g, gmat, 1e-6)));
  bool tall = rows > cols;
  for (int i = 0; i < t->oc->ns_steps; i++) {
    if (i == NC_POLAR_GRAM_FROM && rows != cols && t->oc->polar_gram) return nc_tb_polar_gram(t, x, tall, i);
    const double *abc = t->oc->polar_express ? nc_polar_express_coeffs[i < 5 ? i : 4] : nc_quintic_ns;
    nc_id a = tall ? mm(g, x, x, true, false) : mm(g, x, x, false, true);
    nc_id bmat = add(g, nc_b_scale(g, a, abc[1]), nc_b_scale(g, mm(g, a, a, false, false), abc[2]));
    nc_id xb = tall ? mm(g, x, bmat, false, false) : mm(g, bmat, x, false, false);
    x = add(g, nc_b_scale(g, x, abc[0]), xb);
  }
  return x;
}

// Muon (nanochat HEAD): Nesterov momentum, orthogonalization, optional
// NorMuon, update with aspect-ratio LR scaling and (cautious) weight decay.
// Its momentum: returns the Nesterov gradient to orthogonalize, *buf_out the
// new momentum buffer.
static nc_id nc_tb_muon_momentum(nc_tb *t, const nc_param_desc *d, nc_id p, nc_id grad, nc_id *buf_out) {
  nc_graph *g = t->g;
  nc_type pt = nc_type_of(g, p);
  nc_id mu = bc(g, nc_tb_scalar(t, "momentum", "muon"), p);
  nc_id one = nc_b_const_like(g, p, 1.0);
  nc_id buf = nc_tb_state(t, d->name, "muon.momentum", pt);
  // buf = lerp(buf, g, 1 - mu); g = lerp(g, buf, mu)
  nc_id buf1 = add(g, buf, mul(g, sub(g, one, mu), sub(g, grad, buf)));
  *buf_out = buf1;
  return add(g, grad, mul(g, mu, sub(g, buf1, grad)));
}

// Orthogonalizes the Nesterov gradients gn[k] of the Muon params ps[idx[k]],
// k < n, into u[k]. With muon_stack (NC_PATTERN_MUON_STACK), same-shaped
// ones (two or more) are stacked into one (G, rows, cols) tensor and run
// through the iteration together (every product one batched GEMM: the
// threads split whole matrices, one launch per product for the group, as
// nanochat stacks them); u[k] are slices of the result.
// At most this many matrices a stack: the concat's kernel reads up to three
// buffers per member (gradient, momentum, accumulator; NC_KERNEL_MAX_BUFS 32).
#define NC_MUON_STACK_MAX 8
static void nc_tb_orthogonalize_all(nc_tb *t, const nc_param_desc *ps, const int *idx, const nc_id *gn, int n, nc_id *u) {
  nc_graph *g = t->g;
  unsigned char *done = calloc((size_t)n + 1, 1);
  nc_id *parts = malloc(((size_t)n + 1) * sizeof *parts);
  int *mem = malloc(((size_t)n + 1) * sizeof *mem);
  if (!done || !parts || !mem) {
    if (!t->st) t->st = nc_errorf(NC_E_NOMEM, "out of memory");
    free(done), free(parts), free(mem);
    return;
  }
  for (int k = 0; k < n; k++) {
    if (done[k]) continue;
    int64_t rows = ps[idx[k]].shape[0], cols = ps[idx[k]].shape[1];
    int nm = 0;
    for (int j = k; j < n && t->oc->muon_stack && nm < NC_MUON_STACK_MAX; j++)
      if (!done[j] && ps[idx[j]].shape[0] == rows && ps[idx[j]].shape[1] == cols) mem[nm++] = j;
    if (nm < 2) {
      u[k] = nc_tb_orthogonalize(t, gn[k], rows, cols);
      done[k] = 1;
      continue;
    }
    nc_dim d3[3] = {nc_dim_const(1), nc_dim_const(rows), nc_dim_const(cols)};
    for (int m = 0; m < nm; m++) parts[m] = nc_b_reshape_dims(g, gn[mem[m]], 3, d3);
    nc_id us = nc_tb_orthogonalize(t, nc_b_concat(g, parts, nm, 0), rows, cols);  // (G, rows, cols)
    nc_dim d2[2] = {nc_dim_const(rows), nc_dim_const(cols)};
    for (int m = 0; m < nm; m++) {
      u[mem[m]] = nc_b_reshape_dims(g, nc_b_slice(g, us, 0, m, m + 1), 2, d2);
      done[mem[m]] = 1;
    }
  }
  free(done), free(parts), free(mem);
}

// The rest of Muon's update of param d from its orthogonalized u.
static void nc_tb_muon_finish(nc_tb *t, const nc_param_desc *d, nc_id p, nc_id u, nc_id buf1) {
  nc_graph *g = t->g;
  int64_t rows = d->shape[0], cols = d->shape[1];
  nc_type pt = nc_type_of(g, p);
  char name[180];
  if (t->oc->normuon) {
    // factored second moment over the longer side: per row if rows >= cols
    int red = rows >= cols ? 1 : 0;  // axis reduced
    int64_t red_size = red ? cols : rows;
    nc_type vt = pt;
    vt.dim[red] = nc_dim_const(1);
    nc_id second = nc_tb_state(t, d->name, "muon.second_momentum", vt);
    nc_id vmean = nc_b_reduce(g, NC_OP_REDUCE_MEAN, nc_op1(g, NC_OP_SQUARE, u), INT64_C(1) << red, true);
    nc_id vnorm = nc_op1(g, NC_OP_SQRT, nc_b_scale(g, nc_b_reduce(g, NC_OP_REDUCE_SUM, vmean, 3, true), (double)red_size));
    nc_id second1 = lerpc(g, second, vmean, 1.0 - t->oc->normuon_beta2);
    nc_id step = nc_op1(g, NC_OP_RSQRT, nc_op2(g, NC_OP_MAX, second1, nc_b_const_like(g, second1, 1e-10)));
    nc_id scaled = mul(g, nc_b_scale(g, vmean, (double)red_size), nc_op1(g, NC_OP_SQUARE, step));
    nc_id vnew = nc_op1(g, NC_OP_SQRT, nc_b_reduce(g, NC_OP_REDUCE_SUM, scaled, 3, true));
    nc_id ratio = dvd(g, vnorm, nc_op2(g, NC_OP_MAX, vnew, nc_b_const_like(g, vnew, 1e-10)));  // (1,1)
    nc_id fscale = mul(g, step, bc(g, ratio, step));
    u = mul(g, u, bc(g, fscale, u));
    snprintf(name, sizeof name, "muon.second_momentum.%s", d->name);
    nc_tb_output(t, name, second1);
  }
  double aspect = sqrt(fmax(1.0, (double)rows / (double)cols));
  nc_id lr = nc_b_scale(g, bc(g, nc_tb_scalar(t, "lr", "muon"), p), aspect);
  nc_id wd = bc(g, nc_tb_scalar(t, "wd", "muon"), p);
  nc_id decay = mul(g, mul(g, lr, wd), p);
  if (t->oc->cautious_wd) {
    nc_id agree = nc_op2(g, NC_OP_GE, mul(g, u, p), nc_b_const_like(g, p, 0.0));
    decay = nc_op3(g, NC_OP_WHERE, agree, decay, nc_b_const_like(g, p, 0.0));
  }
  nc_id p1 = sub(g, sub(g, p, mul(g, lr, u)), decay);
  nc_tb_output(t, d->name, p1);
  snprintf(name, sizeof name, "muon.momentum.%s", d->name);
  nc_tb_output(t, name, buf1);
}

nc_status nc_train_build(const nc_model_spec *s, const nc_optim_cfg *oc, const nc_train_opts *o, nc_graph **out) {
  *out = NULL;
  if (o->only && o->kind != NC_TRAIN_APPLY)
    return nc_errorf(NC_E_INVALID, "building the training step of '%s': a param subset needs the optimizer-only (APPLY) graph", s->name);
  nc_gpt_opts mo = o->model;
  mo.with_loss = true;
  nc_graph *g;
  if (o->kind == NC_TRAIN_APPLY) {
    if (!(g = nc_graph_new("optimizer"))) return nc_errorf(NC_E_NOMEM, "out of memory");
  } else {
    NC_TRY(nc_gpt_build(s, &mo, &g));
  }
  nc_param_desc *ps;
  int np;
  nc_status st = nc_gpt_params(s, &ps, &np);
  if (st) {
    nc_graph_free(g);
    return st;
  }
  nc_id *pid = malloc((size_t)np * sizeof *pid), *grads = malloc((size_t)np * sizeof *grads);
  nc_tb t = {g, oc, NC_OK};
  if (!pid || !grads) {
    t.st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  if (o->kind == NC_TRAIN_APPLY) {  // params and their gradients as leaves: the optimizer alone
    int kept = 0;
    for (int i = 0; i < np; i++)
      if (!o->only || o->only(&ps[i], o->only_ctx)) ps[kept++] = ps[i];
    if (kept == 0) {
      t.st = nc_errorf(NC_E_INVALID, "the param subset of the optimizer graph selects none of the %d params", np);
      goto done;
    }
    np = kept;
    for (int i = 0; i < np; i++) {
      nc_dim dims[2] = {nc_dim_const(ps[i].shape[0]), nc_dim_const(ps[i].shape[1])};
      nc_type ty = nc_type_make(NC_F32, ps[i].rank, dims);
      char name[160];
      snprintf(name, sizeof name, "grad.%s", ps[i].name);
      pid[i] = nc_leaf(g, NC_OP_PARAM, ps[i].name, ty);
      grads[i] = nc_leaf(g, NC_OP_INPUT, name, ty);
    }
  } else {
    for (int i = 0; i < np; i++) {
      pid[i] = nc_graph_find_leaf(g, NC_OP_PARAM, ps[i].name);
      if (pid[i] == NC_NONE) {
        t.st = nc_errorf(NC_E_INTERNAL, "param '%s' is not in the model graph", ps[i].name);
        goto done;
      }
    }
    nc_id loss = nc_graph_output(g, nc_graph_noutputs(g) - 1);
    if ((t.st = nc_autodiff(g, loss, NC_NONE, pid, np, grads))) goto done;
  }
  nc_id gscale = o->kind != NC_TRAIN_ACCUMULATE ? nc_leaf(g, NC_OP_INPUT, "grad_scale", nc_type_make(NC_F32, 0, NULL)) : NC_NONE;
  // Muon's params: momentum, then all orthogonalizations (same shapes
  // stacked), then the updates; outputs in param order as ever
  nc_id *gn = malloc(((size_t)np + 1) * sizeof *gn), *buf1 = malloc(((size_t)np + 1) * sizeof *buf1);
  nc_id *u = malloc(((size_t)np + 1) * sizeof *u);
  int *midx = malloc(((size_t)np + 1) * sizeof *midx), nmuon = 0;
  if (!gn || !buf1 || !u || !midx) t.st = nc_errorf(NC_E_NOMEM, "out of memory");
  for (int i = 0; i < np && !t.st; i++) {
    nc_id p = pid[i], gr = grads[i];
    if (o->kind == NC_TRAIN_ACCUMULATE || (o->kind == NC_TRAIN_STEP && o->with_acc)) {
      char name[160];
      snprintf(name, sizeof name, "acc.%s", ps[i].name);
      gr = add(g, nc_leaf(g, NC_OP_INPUT, name, nc_type_of(g, p)), gr);
      if (o->kind == NC_TRAIN_ACCUMULATE) {
        nc_tb_output(&t, name, gr);
        continue;
      }
    }
    grads[i] = gr = mul(g, gr, bc(g, gscale, gr));
    if (ps[i].group == NC_GROUP_MUON) {
      gn[nmuon] = nc_tb_muon_momentum(&t, &ps[i], p, gr, &buf1[nmuon]);
      midx[nmuon++] = i;
    }
  }
  if (!t.st && o->kind != NC_TRAIN_ACCUMULATE) {
    nc_tb_orthogonalize_all(&t, ps, midx, gn, nmuon, u);
    for (int i = 0, k = 0; i < np && !t.st; i++) {
      if (ps[i].group != NC_GROUP_MUON) nc_tb_adamw(&t, &ps[i], pid[i], grads[i]);
      else {
        nc_tb_muon_finish(&t, &ps[i], pid[i], u[k], buf1[k]);
        k++;
      }
    }
  }
  free(gn), free(buf1), free(u), free(midx);
  if (!t.st && nc_graph_error(g)) t.st = nc_graph_take_error(g);
done:
  free(pid);
  free(grads);
  free(ps);
  if (t.st) {
    nc_graph_free(g);
    return nc_status_prefix(t.st, "building the training step of '%s': ", s->name);
  }
  *out = g;
  return NC_OK;
}

nc_status nc_train_state_descs(const nc_model_spec *s, const nc_optim_cfg *oc, nc_param_desc **out, int *n) {
  return nc_train_state_descs_only(s, oc, NULL, NULL, out, n);
}

nc_status nc_train_state_descs_only(const nc_model_spec *s, const nc_optim_cfg *oc, nc_param_pred only, void *ctx,
                                    nc_param_desc **out, int *n) {
  nc_param_desc *ps;
  int np;
  NC_TRY(nc_gpt_params(s, &ps, &np));
  int kept = 0;
  for (int i = 0; i < np; i++)
    if (!only || only(&ps[i], ctx)) ps[kept++] = ps[i];
  np = kept;
  nc_param_desc *st = calloc((size_t)np * 2 + 1, sizeof *st);
  if (!st) {
    free(ps);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  int k = 0;
  for (int i = 0; i < np; i++) {
    const nc_param_desc *p = &ps[i];
    bool muon = p->group == NC_GROUP_MUON;
    for (int j = 0; j < (muon ? (oc->normuon ? 2 : 1) : 2); j++) {
      nc_param_desc *d = &st[k++];
      *d = *p;
      d->init = NC_INIT_ZEROS;
      const char *what = muon ? (j ? "muon.second_momentum" : "muon.momentum") : (j ? "adamw.exp_avg_sq" : "adamw.exp_avg");
      if ((size_t)snprintf(d->name, sizeof d->name, "%s.%.100s", what, p->name) >= sizeof d->name) {
        free(ps);
        free(st);
        return nc_errorf(NC_E_INVALID, "param name too long for its optimizer state: %s", p->name);
      }
      if (muon && j) d->shape[p->shape[0] >= p->shape[1] ? 1 : 0] = 1;
    }
  }
  free(ps);
  *out = st;
  *n = k;
  return NC_OK;
}

void nc_train_scalars(const nc_optim_cfg *oc, const double lr[NC_GROUP_COUNT], const double wd[NC_GROUP_COUNT],
                      double momentum, int64_t step, double grad_scale, nc_train_scalar out[NC_TRAIN_NSCALARS]) {
  int k = 0;
  for (int g = 0; g < NC_GROUP_COUNT; g++) {
    const char *gn = nc_param_group_name((nc_param_group)g);
    snprintf(out[k].name, sizeof out[k].name, "lr.%s", gn);
    out[k++].value = (float)lr[g];
    snprintf(out[k].name, sizeof out[k].name, "wd.%s", gn);
    out[k++].value = (float)wd[g];
    snprintf(out[k].name, sizeof out[k].name, "bc1.%s", gn);
    out[k++].value = (float)(1.0 - pow(oc->adamw[g].beta1, (double)step));
    snprintf(out[k].name, sizeof out[k].name, "bc2.%s", gn);
    out[k++].value = (float)(1.0 - pow(oc->adamw[g].beta2, (double)step));
  }
  snprintf(out[k].name, sizeof out[k].name, "momentum.muon");
  out[k++].value = (float)momentum;
  snprintf(out[k].name, sizeof out[k].name, "grad_scale");
  out[k++].value = (float)grad_scale;
}
