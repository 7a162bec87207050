// Attention lowering: online-softmax loop nests (NC_PATTERN_ATTENTION) and the
// flash-attention template call (NC_PATTERN_FLASH_ATTENTION, OpenCL). Split
// from passes/lower.c; shares its state through passes/lower_impl.h.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/rules.h"
#include "passes/lower_impl.h"
#include "passes/pass.h"

// ---- the attention pattern (NC_PATTERN_ATTENTION) ---------------------------------
// attention and attention_grad lowered as loop nests with an online softmax:
// per query row a running max m, a running sum l of exp(s - m) and (forward)
// the output row rescaled as m grows, so the (B,H,Tq,Tk) scores are never
// materialized. Only the keys a row can see are visited: [lo, hi) with
// pos = kvlen - Tq + i, lo = max(0, pos - window + 1) when windowed, hi =
// min(kvlen, pos + 1) when causal. The backward recomputes each row's
// statistics (lse = m + log l and, for dq/dk, Di = sum_j p_ij dp_ij) in a
// first sweep, then sweeps again for the gradient; dk/dv are parallel over
// (batch, kv head) so each thread owns the key rows it accumulates into.
typedef struct {
  nc_kernel *k;
  nc_kx Tq, Tk, Hq, Hkv, D, Dv, G, kvlen, scale;
  bool causal;
  int64_t window;
  int qb, kb, vb, db;  // buffers: q, k, v, dout (-1 in the forward)
  int m, l, dd, s, mn, al, p, dp, lse, di;  // accumulators
} nc_at;

#define AT_ADD(x, y) nc_kx_binary(k, NC_KOP_ADD, x, y)
#define AT_SUB(x, y) nc_kx_binary(k, NC_KOP_SUB, x, y)
#define AT_MUL(x, y) nc_kx_binary(k, NC_KOP_MUL, x, y)
#define AT_F32(buf, i) nc_kx_cast(k, nc_kx_load(k, buf, i), NC_F32)

// ((b*T + t)*H + h)*D: the first element of row (b, t, h) of a (B,T,H,D) tensor
static nc_kx nc_at_row(nc_kernel *k, nc_kx b, nc_kx T, nc_kx t, nc_kx H, nc_kx h, nc_kx D) {
  return AT_MUL(AT_ADD(AT_MUL(AT_ADD(AT_MUL(b, T), t), H), h), D);
}

static nc_ks nc_at_loop(nc_kernel *k, nc_ks **tail, int *var, nc_kx lo, nc_kx hi, bool vec) {
  *var = nc_kernel_var(k);
  nc_ks l = nc_ks_for(k, tail, *var, lo, hi);
  if (vec && l != NC_KS_NONE) k->s[l].sched |= NC_KSCHED_VECTORIZE, k->s[l].vec = 16;
  return l;
}

// acc = sum_d a[ra + d] * b[rb + d], d < n
static void nc_at_dot(nc_at *a, nc_ks **tail, int acc, int ba, nc_kx ra, int bb, nc_kx rb, nc_kx n) {
  nc_kernel *k = a->k;
  nc_ks_acc_init(k, tail, acc, nc_kx_const_f(k, NC_F32, 0));
  int d;
  nc_ks l = nc_at_loop(k, tail, &d, nc_kx_idx(k, 0), n, true);
  nc_ks *b = nc_ks_body_slot(k, l);
  nc_kx dv = nc_kx_var(k, d);
  nc_ks_acc_update(k, &b, acc, NC_KOP_ADD, AT_MUL(AT_F32(ba, AT_ADD(ra, dv)), AT_F32(bb, AT_ADD(rb, dv))));
}

// buf[row + d] = value(d) for d < n (value built by the caller from the var)
static nc_ks *nc_at_rowloop(nc_at *a, nc_ks **tail, nc_kx n, nc_kx *dvar) {
  nc_kernel *k = a->k;
  int d;
  nc_ks l = nc_at_loop(k, tail, &d, nc_kx_idx(k, 0), n, true);
  *dvar = nc_kx_var(k, d);
  return nc_ks_body_slot(k, l);
}

// The keys row i sees: [lo, hi).
static void nc_at_range(nc_at *a, nc_kx i, nc_kx *lo, nc_kx *hi) {
  nc_kernel *k = a->k;
  nc_kx pos = AT_ADD(AT_SUB(a->kvlen, a->Tq), i);
  *lo = nc_kx_idx(k, 0);
  if (a->window > 0) *lo = nc_kx_binary(k, NC_KOP_MAX, *lo, AT_ADD(AT_SUB(pos, nc_kx_idx(k, a->window)), nc_kx_idx(k, 1)));
  *hi = nc_kx_binary(k, NC_KOP_MIN, a->kvlen, a->Tk);
  if (a->causal) *hi = nc_kx_binary(k, NC_KOP_MIN, *hi, AT_ADD(pos, nc_kx_idx(k, 1)));
}

// One online-softmax step for score sv (f32, scaled): m, l (and o rescaled by
// the caller with al) updated; leaves al and p.
static void nc_at_online(nc_at *a, nc_ks **tail, nc_kx sv) {
  nc_kernel *k = a->k;
  nc_ks_acc_init(k, tail, a->mn, nc_kx_binary(k, NC_KOP_MAX, nc_kx_acc(k, a->m), sv));
  nc_ks_acc_init(k, tail, a->al, nc_kx_unary(k, NC_KOP_EXP, AT_SUB(nc_kx_acc(k, a->m), nc_kx_acc(k, a->mn))));
  nc_ks_acc_init(k, tail, a->p, nc_kx_unary(k, NC_KOP_EXP, AT_SUB(sv, nc_kx_acc(k, a->mn))));
  nc_ks_acc_init(k, tail, a->l, AT_ADD(AT_MUL(nc_kx_acc(k, a->l), nc_kx_acc(k, a->al)), nc_kx_acc(k, a->p)));
}

// Row statistics of query row (b, i, h): lse and (with_d) Di = sum_j p_ij (do_i . v_j).
static void nc_at_stats(nc_at *a, nc_ks **tail, nc_kx b, nc_kx i, nc_kx h, bool with_d) {
  nc_kernel *k = a->k;
  nc_kx hk = nc_kx_binary(k, NC_KOP_IDIV, h, a->G), lo, hi;
  nc_kx qrow = nc_at_row(k, b, a->Tq, i, a->Hq, h, a->D), orow = nc_at_row(k, b, a->Tq, i, a->Hq, h, a->Dv);
  nc_at_range(a, i, &lo, &hi);
  nc_ks_acc_init(k, tail, a->m, nc_kx_const_f(k, NC_F32, -INFINITY));
  nc_ks_acc_init(k, tail, a->l, nc_kx_const_f(k, NC_F32, 0));
  if (with_d) nc_ks_acc_init(k, tail, a->dd, nc_kx_const_f(k, NC_F32, 0));
  int j;
  nc_ks lj = nc_at_loop(k, tail, &j, lo, hi, false);
  nc_ks *bj = nc_ks_body_slot(k, lj);
  nc_kx jv = nc_kx_var(k, j);
  nc_at_dot(a, &bj, a->s, a->qb, qrow, a->kb, nc_at_row(k, b, a->Tk, jv, a->Hkv, hk, a->D), a->D);
  nc_at_online(a, &bj, AT_MUL(nc_kx_acc(k, a->s), a->scale));
  if (with_d) {
    nc_at_dot(a, &bj, a->dp, a->db, orow, a->vb, nc_at_row(k, b, a->Tk, jv, a->Hkv, hk, a->Dv), a->Dv);
    nc_ks_acc_init(k, &bj, a->dd, AT_ADD(AT_MUL(nc_kx_acc(k, a->dd), nc_kx_acc(k, a->al)),
                                        AT_MUL(nc_kx_acc(k, a->p), nc_kx_acc(k, a->dp))));
  }
  nc_ks_acc_init(k, &bj, a->m, nc_kx_acc(k, a->mn));
  nc_ks_acc_init(k, tail, a->lse, AT_ADD(nc_kx_acc(k, a->m), nc_kx_unary(k, NC_KOP_LOG, nc_kx_acc(k, a->l))));
  if (with_d) nc_ks_acc_init(k, tail, a->di, nc_kx_binary(k, NC_KOP_DIV, nc_kx_acc(k, a->dd), nc_kx_acc(k, a->l)));
}

// In a loop over keys j of row (b, i, h) after nc_at_stats: p (and with ds:
// ds = p (dp - Di) scale in acc dp) for key j.
static void nc_at_prob(nc_at *a, nc_ks **tail, nc_kx b, nc_kx i, nc_kx h, nc_kx j, bool with_ds) {
  nc_kernel *k = a->k;
  nc_kx hk = nc_kx_binary(k, NC_KOP_IDIV, h, a->G);
  nc_kx qrow = nc_at_row(k, b, a->Tq, i, a->Hq, h, a->D), orow = nc_at_row(k, b, a->Tq, i, a->Hq, h, a->Dv);
  nc_at_dot(a, tail, a->s, a->qb, qrow, a->kb, nc_at_row(k, b, a->Tk, j, a->Hkv, hk, a->D), a->D);
  nc_ks_acc_init(k, tail, a->p, nc_kx_unary(k, NC_KOP_EXP, AT_SUB(AT_MUL(nc_kx_acc(k, a->s), a->scale), nc_kx_acc(k, a->lse))));
  if (!with_ds) return;
  nc_at_dot(a, tail, a->dp, a->db, orow, a->vb, nc_at_row(k, b, a->Tk, j, a->Hkv, hk, a->Dv), a->Dv);
  nc_ks_acc_init(k, tail, a->dp, AT_MUL(AT_MUL(nc_kx_acc(k, a->p), AT_SUB(nc_kx_acc(k, a->dp), nc_kx_acc(k, a->di))), a->scale));
}

// ---- flash attention (nc_lower_opts.flash_attention, OpenCL) ----------------------
// An f32 attention / attention_grad without kvlen whose head dims are constants
// <= NC_FLASH_MAX_D becomes one NC_KT_ATTENTION call (ir/kir.h).
bool nc_lw_flash_ok(const nc_graph *g, nc_id n) {
  const nc_node *nd = nc_graph_node(g, n);
  if (!(nd->op == NC_OP_ATTENTION && nd->nin == 3) && !(nd->op == NC_OP_ATTENTION_GRAD && nd->nin == 4)) return false;
  if (nd->type.dtype != NC_F32) return false;
  for (int q = 0; q < nd->nin; q++)
    if (nc_type_of(g, nc_graph_input_of(g, n, q)).dtype != NC_F32) return false;
  nc_type qt = nc_type_of(g, nc_graph_input_of(g, n, 0)), kt = nc_type_of(g, nc_graph_input_of(g, n, 1));
  nc_type vt = nc_type_of(g, nc_graph_input_of(g, n, 2));
  if (qt.rank != 4 || kt.rank != 4 || vt.rank != 4) return false;
  for (int d = 2; d < 4; d++)
    if (!nc_dim_is_const(qt.dim[d]) || !nc_dim_is_const(kt.dim[d]) || !nc_dim_is_const(vt.dim[d])) return false;
  if (kt.dim[2].c <= 0 || qt.dim[2].c % kt.dim[2].c || qt.dim[3].c > NC_FLASH_MAX_D || vt.dim[3].c > NC_FLASH_MAX_D) return false;
  return true;
}

// The attention_grad nodes of one attention (same inputs and attributes, wrt q,
// k, v) are computed by one call: the first one's kernel stores the others.
void nc_lw_flash_group(const nc_graph *g, nc_plan *p) {
  uint32_t nn = nc_graph_nnodes(g);
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *a = nc_graph_node(g, i);
    if (a->op != NC_OP_ATTENTION_GRAD || p->stored_by[i] != NC_NONE || !nc_lw_flash_ok(g, i)) continue;
    unsigned have = 1u << a->ia[0];
    for (nc_id j = i + 1; j < nn && have != 7; j++) {
      const nc_node *b = nc_graph_node(g, j);
      if (b->op != NC_OP_ATTENTION_GRAD || p->stored_by[j] != NC_NONE || (have & (1u << b->ia[0])) || b->ia[1] != a->ia[1] ||
          b->ia[2] != a->ia[2] || b->fa[0] != a->fa[0] || !nc_lw_flash_ok(g, j))
        continue;
      bool same = true;
      for (int q = 0; q < 4; q++) same &= nc_graph_input_of(g, i, q) == nc_graph_input_of(g, j, q);
      if (!same) continue;
      p->stored_by[j] = i;
      have |= 1u << b->ia[0];
    }
  }
}

bool nc_lw_flash_link(const nc_graph *g, nc_plan *p) {
  uint32_t nn = nc_graph_nnodes(g);
  for (nc_id i = 0; i < nn; i++) {
    const nc_node *a = nc_graph_node(g, i);
    if (a->op != NC_OP_ATTENTION_GRAD || p->stored_by[i] != NC_NONE || !p->materialized[i] || !nc_lw_flash_ok(g, i)) continue;
    if (p->extra_read && p->extra_read[i] != NC_NONE) continue;
    for (nc_id f = 0; f < i; f++) {
      const nc_node *fd = nc_graph_node(g, f);
      if (fd->op != NC_OP_ATTENTION || !p->materialized[f] || !nc_lw_flash_ok(g, f) || fd->fa[0] != a->fa[0] ||
          fd->ia[0] != a->ia[1] || fd->ia[1] != a->ia[2])
        continue;
      bool same = true;
      for (int q = 0; q < 3; q++) same &= nc_graph_input_of(g, f, q) == nc_graph_input_of(g, i, q);
      if (!same) continue;
      if (!p->extra_read) {
        if (!(p->extra_read = malloc((nn ? nn : 1) * sizeof *p->extra_read))) return false;
        for (nc_id q = 0; q < nn; q++) p->extra_read[q] = NC_NONE;
      }
      // O's values: a materialized reshape of it (the same elements in the same order,
      // kept for the output projection's weight gradient anyway) rather than O itself,
      // which then need not stay alive through the forward
      nc_id src = f;
      for (nc_id r = f + 1; r < i && src == f; r++)
        if (nc_graph_node(g, r)->op == NC_OP_RESHAPE && p->materialized[r] && nc_graph_input_of(g, r, 0) == f) src = r;
      p->extra_read[i] = src;
      break;
    }
  }
  return true;
}

// The flash forward whose statistics the backward host n reads (through its
// output or a reshape of it, p->extra_read[n]), or NC_NONE.
static nc_id nc_lw_flash_fwd_of(const nc_graph *g, const nc_plan *p, nc_id n) {
  nc_id src = p->extra_read && nc_graph_node(g, n)->op == NC_OP_ATTENTION_GRAD ? p->extra_read[n] : NC_NONE;
  if (src != NC_NONE && nc_graph_node(g, src)->op == NC_OP_RESHAPE) src = nc_graph_input_of(g, src, 0);
  return src != NC_NONE && nc_graph_node(g, src)->op == NC_OP_ATTENTION ? src : NC_NONE;
}

// Whether some backward reads forward f's statistics.
static bool nc_lw_flash_has_bwd(const nc_graph *g, const nc_plan *p, nc_id f) {
  for (nc_id j = f + 1; p->extra_read && j < p->nnodes; j++)
    if (nc_lw_flash_fwd_of(g, p, j) == f) return true;
  return false;
}

nc_status nc_lw_flash(nc_lw *w, nc_id n) {
  nc_kernel *k = w->k;
  const nc_graph *g = w->g;
  const nc_node *nd = nc_graph_node(g, n);
  bool grad = nd->op == NC_OP_ATTENTION_GRAD;
  nc_id qn = nc_graph_input_of(g, n, 0), kn = nc_graph_input_of(g, n, 1), vn = nc_graph_input_of(g, n, 2);
  nc_type qt = nc_type_of(g, qn), kt = nc_type_of(g, kn), vt = nc_type_of(g, vn);
  int bufs[8] = {nc_lw_buf(w, qn, false), nc_lw_buf(w, kn, false), nc_lw_buf(w, vn, false), 0, 0, 0, 0}, nb = 3;
  int64_t mask = 0;
  if (!grad) {
    bufs[nb++] = nc_lw_buf(w, n, true);
  } else {
    bufs[nb++] = nc_lw_buf(w, nc_graph_input_of(g, n, 3), false);
    nc_id by[3] = {NC_NONE, NC_NONE, NC_NONE};  // the group's nodes by wrt
    by[nd->ia[0]] = n;
    for (nc_id j = n + 1; j < w->p->nnodes; j++)
      if (w->p->stored_by[j] == n && nc_graph_node(g, j)->op == NC_OP_ATTENTION_GRAD) by[nc_graph_node(g, j)->ia[0]] = j;
    for (int r = 0; r < 3; r++)
      if (by[r] != NC_NONE) bufs[nb++] = nc_lw_buf(w, by[r], true), mask |= 1 << r;
  }
  // arg 11 (link): forward: 1 = also store the rows' logsumexp for a backward that
  // reads it; backward: the forward's node + 1, whose statistics the forward stored
  // (no statistics pass), and the last buffer holds its output O (or a reshape of it)
  int64_t link = 0;
  if (!grad) {
    link = nc_lw_flash_has_bwd(g, w->p, n);
  } else {
    nc_id f = nc_lw_flash_fwd_of(g, w->p, n);
    if (f != NC_NONE) bufs[nb++] = nc_lw_buf(w, w->p->extra_read[n], false), link = (int64_t)f + 1;
  }
  int64_t causal = grad ? nd->ia[1] : nd->ia[0], window = grad ? nd->ia[2] : nd->ia[1];
  nc_kx args[12] = {nc_lw_dim(w, qt.dim[0]), nc_lw_dim(w, qt.dim[1]), nc_lw_dim(w, kt.dim[1]), nc_lw_dim(w, qt.dim[2]),
                    nc_lw_dim(w, kt.dim[2]), nc_lw_dim(w, qt.dim[3]), nc_lw_dim(w, vt.dim[3]), nc_kx_idx(k, causal),
                    nc_kx_idx(k, window), nc_kx_idx(k, mask), nc_kx_const_f(k, NC_F32, nd->fa[0]), nc_kx_idx(k, link)};
  nc_ks *tail = &k->body;
  nc_ks_call(k, &tail, NC_KT_ATTENTION, args, 12, bufs, nb);
  return NC_OK;
}

nc_status nc_lw_attention(nc_lw *w, nc_id n) {
  nc_kernel *k = w->k;
  const nc_node *nd = nc_graph_node(w->g, n);
  bool grad = nd->op == NC_OP_ATTENTION_GRAD;
  int wrt = grad ? (int)nd->ia[0] : -1;
  nc_id qn = nc_graph_input_of(w->g, n, 0), kn = nc_graph_input_of(w->g, n, 1), vn = nc_graph_input_of(w->g, n, 2);
  int nbase = grad ? 4 : 3;
  nc_id kvn = nd->nin > nbase ? nc_graph_input_of(w->g, n, nbase) : NC_NONE;
  nc_type qt = nc_type_of(w->g, qn), kt = nc_type_of(w->g, kn), vt = nc_type_of(w->g, vn);
  if (!nc_dim_is_const(qt.dim[2]) || !nc_dim_is_const(kt.dim[2]) || kt.dim[2].c <= 0 || qt.dim[2].c % kt.dim[2].c)
    return nc_errorf(NC_E_UNSUPPORTED, "attention pattern: head counts must be constants with Hq %% Hkv == 0");
  nc_at a = {.k = k, .causal = grad ? nd->ia[1] : nd->ia[0], .window = grad ? nd->ia[2] : nd->ia[1]};
  int ob = nc_lw_buf(w, n, true);
  a.qb = nc_lw_buf(w, qn, false), a.kb = nc_lw_buf(w, kn, false), a.vb = nc_lw_buf(w, vn, false);
  a.db = grad ? nc_lw_buf(w, nc_graph_input_of(w->g, n, 3), false) : -1;
  nc_kx B = nc_lw_dim(w, qt.dim[0]);
  a.Tq = nc_lw_dim(w, qt.dim[1]), a.Hq = nc_lw_dim(w, qt.dim[2]), a.D = nc_lw_dim(w, qt.dim[3]);
  a.Tk = nc_lw_dim(w, kt.dim[1]), a.Hkv = nc_lw_dim(w, kt.dim[2]), a.Dv = nc_lw_dim(w, vt.dim[3]);
  a.G = nc_kx_idx(k, qt.dim[2].c / kt.dim[2].c);
  a.scale = nc_kx_const_f(k, NC_F32, nd->fa[0]);
  nc_kx none[1] = {nc_kx_idx(k, 0)};
  a.kvlen = kvn != NC_NONE ? nc_kx_cast(k, nc_lw_emit(w, kvn, none, false), NC_I64) : a.Tk;
  int *accs[] = {&a.m, &a.l, &a.dd, &a.s, &a.mn, &a.al, &a.p, &a.dp, &a.lse, &a.di};
  for (size_t q = 0; q < sizeof accs / sizeof *accs; q++) *accs[q] = nc_kernel_acc(k, NC_F32);
  nc_ks *tail = &k->body;
  int bh, iv, jv;
  nc_kx zero = nc_kx_const_f(k, NC_F32, 0), d;
  if (wrt == -1 || wrt == 0) {  // one row of the output (or of dq) per (b, h, i)
    nc_ks l0 = nc_at_loop(k, &tail, &bh, nc_kx_idx(k, 0), AT_MUL(B, a.Hq), false);
    k->s[l0].sched |= NC_KSCHED_PARALLEL;
    nc_ks *t0 = nc_ks_body_slot(k, l0);
    nc_kx b = nc_kx_binary(k, NC_KOP_IDIV, nc_kx_var(k, bh), a.Hq), h = nc_kx_binary(k, NC_KOP_IMOD, nc_kx_var(k, bh), a.Hq);
    nc_ks li = nc_at_loop(k, &t0, &iv, nc_kx_idx(k, 0), a.Tq, false);
    nc_ks *ti = nc_ks_body_slot(k, li);
    nc_kx i = nc_kx_var(k, iv), hk = nc_kx_binary(k, NC_KOP_IDIV, h, a.G), lo, hi;
    nc_at_range(&a, i, &lo, &hi);
    if (wrt == -1) {
      nc_kx orow = nc_at_row(k, b, a.Tq, i, a.Hq, h, a.Dv), qrow = nc_at_row(k, b, a.Tq, i, a.Hq, h, a.D);
      nc_ks *z = nc_at_rowloop(&a, &ti, a.Dv, &d);
      nc_ks_store(k, &z, ob, AT_ADD(orow, d), zero);
      nc_ks_acc_init(k, &ti, a.m, nc_kx_const_f(k, NC_F32, -INFINITY));
      nc_ks_acc_init(k, &ti, a.l, zero);
      nc_ks lj = nc_at_loop(k, &ti, &jv, lo, hi, false);
      nc_ks *tj = nc_ks_body_slot(k, lj);
      nc_kx j = nc_kx_var(k, jv);
      nc_at_dot(&a, &tj, a.s, a.qb, qrow, a.kb, nc_at_row(k, b, a.Tk, j, a.Hkv, hk, a.D), a.D);
      nc_at_online(&a, &tj, AT_MUL(nc_kx_acc(k, a.s), a.scale));
      nc_kx vrow = nc_at_row(k, b, a.Tk, j, a.Hkv, hk, a.Dv);
      nc_ks *u = nc_at_rowloop(&a, &tj, a.Dv, &d);
      nc_kx oi = AT_ADD(orow, d);
      nc_ks_store(k, &u, ob, oi, AT_ADD(AT_MUL(nc_kx_load(k, ob, oi), nc_kx_acc(k, a.al)),
                                        AT_MUL(nc_kx_acc(k, a.p), AT_F32(a.vb, AT_ADD(vrow, d)))));
      nc_ks_acc_init(k, &tj, a.m, nc_kx_acc(k, a.mn));
      nc_ks *f = nc_at_rowloop(&a, &ti, a.Dv, &d);
      oi = AT_ADD(orow, d);
      nc_ks_store(k, &f, ob, oi, nc_kx_binary(k, NC_KOP_DIV, nc_kx_load(k, ob, oi), nc_kx_acc(k, a.l)));
    } else {
      nc_kx qrow = nc_at_row(k, b, a.Tq, i, a.Hq, h, a.D);
      nc_at_stats(&a, &ti, b, i, h, true);
      nc_ks *z = nc_at_rowloop(&a, &ti, a.D, &d);
      nc_ks_store(k, &z, ob, AT_ADD(qrow, d), zero);
      nc_ks lj = nc_at_loop(k, &ti, &jv, lo, hi, false);
      nc_ks *tj = nc_ks_body_slot(k, lj);
      nc_kx j = nc_kx_var(k, jv);
      nc_at_prob(&a, &tj, b, i, h, j, true);
      nc_kx krow = nc_at_row(k, b, a.Tk, j, a.Hkv, hk, a.D);
      nc_ks *u = nc_at_rowloop(&a, &tj, a.D, &d);
      nc_kx oi = AT_ADD(qrow, d);
      nc_ks_store(k, &u, ob, oi, AT_ADD(nc_kx_load(k, ob, oi), AT_MUL(nc_kx_acc(k, a.dp), AT_F32(a.kb, AT_ADD(krow, d)))));
    }
  } else {  // dk / dv: parallel over (b, kv head); every query row of its G heads adds into its key rows
    nc_kx Dout = wrt == 1 ? a.D : a.Dv;
    nc_ks l0 = nc_at_loop(k, &tail, &bh, nc_kx_idx(k, 0), AT_MUL(B, a.Hkv), false);
    k->s[l0].sched |= NC_KSCHED_PARALLEL;
    nc_ks *t0 = nc_ks_body_slot(k, l0);
    nc_kx b = nc_kx_binary(k, NC_KOP_IDIV, nc_kx_var(k, bh), a.Hkv), hk = nc_kx_binary(k, NC_KOP_IMOD, nc_kx_var(k, bh), a.Hkv);
    int zj;
    nc_ks lz = nc_at_loop(k, &t0, &zj, nc_kx_idx(k, 0), a.Tk, false);
    nc_ks *tz = nc_ks_body_slot(k, lz);
    nc_ks *z = nc_at_rowloop(&a, &tz, Dout, &d);
    nc_ks_store(k, &z, ob, AT_ADD(nc_at_row(k, b, a.Tk, nc_kx_var(k, zj), a.Hkv, hk, Dout), d), zero);
    int gv;
    nc_ks lg = nc_at_loop(k, &t0, &gv, nc_kx_idx(k, 0), a.G, false);
    nc_ks *tg = nc_ks_body_slot(k, lg);
    nc_kx h = AT_ADD(AT_MUL(hk, a.G), nc_kx_var(k, gv));
    nc_ks li = nc_at_loop(k, &tg, &iv, nc_kx_idx(k, 0), a.Tq, false);
    nc_ks *ti = nc_ks_body_slot(k, li);
    nc_kx i = nc_kx_var(k, iv), lo, hi;
    nc_at_range(&a, i, &lo, &hi);
    nc_at_stats(&a, &ti, b, i, h, wrt == 1);
    nc_ks lj = nc_at_loop(k, &ti, &jv, lo, hi, false);
    nc_ks *tj = nc_ks_body_slot(k, lj);
    nc_kx j = nc_kx_var(k, jv);
    nc_at_prob(&a, &tj, b, i, h, j, wrt == 1);
    nc_kx orow = nc_at_row(k, b, a.Tk, j, a.Hkv, hk, Dout);
    // dv_j += p do_i; dk_j += ds q_i
    nc_kx src = wrt == 1 ? nc_at_row(k, b, a.Tq, i, a.Hq, h, a.D) : nc_at_row(k, b, a.Tq, i, a.Hq, h, a.Dv);
    nc_kx coef = nc_kx_acc(k, wrt == 1 ? a.dp : a.p);
    nc_ks *u = nc_at_rowloop(&a, &tj, Dout, &d);
    nc_kx oi = AT_ADD(orow, d);
    nc_ks_store(k, &u, ob, oi, AT_ADD(nc_kx_load(k, ob, oi), AT_MUL(coef, AT_F32(wrt == 1 ? a.qb : a.db, AT_ADD(src, d)))));
  }
  return NC_OK;
}
#undef AT_ADD
#undef AT_SUB
#undef AT_MUL
#undef AT_F32
