// Memory planning: invariants on random graphs and on the GPT training step,
// golden plan dumps of small hand-built graphs, errors.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/train.h"
#include "passes/memplan.h"
#include "tests/support/model_util.h"
#include "tests/support/randgraph.h"

// ---- an independent checker ------------------------------------------------------

// Materialized nodes that consumer c reads: reachable from its inputs through
// non-materialized non-leaf nodes (plain recursion; slow but obviously right).
static void reads_of(const nc_graph *g, const bool *mat, nc_id v, bool *out, bool *visited) {
  if (visited[v]) return;
  visited[v] = true;
  if (mat[v]) {
    out[v] = true;
    return;
  }
  const nc_node *nd = nc_graph_node(g, v);
  if (nc_op_get(nd->op)->kind == NC_KIND_LEAF) return;
  for (int k = 0; k < nd->nin; k++) reads_of(g, mat, nc_graph_input_of(g, v, k), out, visited);
}

static int64_t align_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

// Checks every promise of the plan. mat/outp: the materialized and output
// sets the plan was built for (NULL = the defaults).
static void check_plan(const nc_graph *g, const nc_memplan *p, const bool *mat_in, const bool *outp_in) {
  uint32_t n = nc_graph_nnodes(g);
  bool *mat = calloc(n + 1, 1), *outp = calloc(n + 1, 1), *rd = calloc(n + 1, 1), *vis = calloc(n + 1, 1);
  uint32_t *last = calloc(n + 1, sizeof *last);
  for (nc_id i = 0; i < n; i++)
    mat[i] = mat_in ? mat_in[i] : nc_op_get(nc_graph_node(g, i)->op)->kind != NC_KIND_LEAF;
  if (outp_in) memcpy(outp, outp_in, n);
  else
    for (int k = 0; k < nc_graph_noutputs(g); k++) outp[nc_graph_output(g, k)] = true;
  // Liveness, recomputed.
  for (nc_id i = 0; i < n; i++) last[i] = i;
  for (nc_id c = 0; c < n; c++) {
    if (!mat[c]) continue;
    memset(rd, 0, n);
    memset(vis, 0, n);
    const nc_node *cn = nc_graph_node(g, c);
    for (int k = 0; k < cn->nin; k++) reads_of(g, mat, nc_graph_input_of(g, c, k), rd, vis);
    for (nc_id v = 0; v < n; v++)
      if (rd[v]) last[v] = c;
  }
  int nb = 0;
  int64_t total = 0;
  const int64_t A = p->align;
  cr_assert_eq(A, 64);
  for (nc_id i = 0; i < n; i++) {
    const nc_membuf *m = nc_memplan_find(p, i);
    cr_assert_eq(m != NULL, mat[i], "node %u: in arena %d, materialized %d", i, m != NULL, mat[i]);
    if (!m) continue;
    nb++;
    cr_assert_eq(m->node, i);
    cr_assert_eq(m->def, i);
    cr_assert_eq(m->output, outp[i]);
    cr_assert_eq(m->last, outp[i] ? NC_MEMPLAN_END : last[i], "node %u: last %u, want %u", i, m->last, last[i]);
    cr_assert_eq(m->offset % A, 0, "node %u: offset %lld not aligned", i, (long long)m->offset);
    cr_assert(m->offset >= 0 && m->offset + m->size <= p->arena_size);
    cr_assert_gt(m->size, 0);
    total += align_up(m->size, A);
    if (m->inplace_of != NC_NONE) {
      const nc_node *cn = nc_graph_node(g, i);
      cr_assert(nc_op_get(cn->op)->flags & NC_OPF_INPLACE, "node %u in place but op %s is not INPLACE", i,
                nc_op_get(cn->op)->name);
      cr_assert_eq(m->inplace_of, nc_graph_input_of(g, i, 0));
      const nc_membuf *src = nc_memplan_find(p, m->inplace_of);
      cr_assert_not_null(src);
      cr_assert(!src->output, "node %u overwrites output %u", i, src->node);
      cr_assert_eq(src->last, i, "node %u overwrites %u, which is still read later", i, src->node);
      cr_assert_eq(src->size, m->size);
      cr_assert_eq(src->offset, m->offset);
      cr_assert(nc_op_get(nc_graph_node(g, src->node)->op)->kind != NC_KIND_LEAF ||
                nc_graph_node(g, src->node)->op == NC_OP_CONST || nc_graph_node(g, src->node)->op == NC_OP_IOTA);
    }
  }
  cr_assert_eq(nb, p->nbufs);
  cr_assert_eq(total, p->total_size);
  // No two buffers alive at the same time share a byte, except a buffer and
  // the one written in place over it, which meet at exactly one time step.
  for (int a = 0; a < p->nbufs; a++)
    for (int b = a + 1; b < p->nbufs; b++) {
      const nc_membuf *x = &p->bufs[a], *y = &p->bufs[b];
      bool time = x->def <= y->last && y->def <= x->last;
      bool mem = x->offset < y->offset + y->size && y->offset < x->offset + x->size;
      if (!time || !mem) continue;
      cr_assert(y->inplace_of == x->node && x->last == y->def,
                "buffers %%%u [%u,%u] @%lld+%lld and %%%u [%u,%u] @%lld+%lld overlap", x->node, x->def, x->last,
                (long long)x->offset, (long long)x->size, y->node, y->def, y->last, (long long)y->offset,
                (long long)y->size);
    }
  // Bounds: live peak (recomputed: an in-place pair counts once) <= arena <= total.
  int64_t peak = 0;
  for (uint32_t t = 0; t <= n; t++) {
    int64_t live = 0;
    for (int b = 0; b < p->nbufs; b++) {
      const nc_membuf *m = &p->bufs[b];
      uint32_t e = m->last == NC_MEMPLAN_END ? n : m->last;
      if (m->def > t || t > e) continue;
      bool handed_over = false;  // dies at t into a buffer written in place over it
      if (e == t)
        for (int c = b + 1; c < p->nbufs; c++)
          if (p->bufs[c].inplace_of == m->node && p->bufs[c].def == t) handed_over = true;
      if (!handed_over) live += align_up(m->size, A);
    }
    if (live > peak) peak = live;
  }
  cr_assert_eq(peak, p->live_peak);
  cr_assert_leq(p->live_peak, p->arena_size);
  cr_assert_leq(p->arena_size, p->total_size);
  free(mat);
  free(outp);
  free(rd);
  free(vis);
  free(last);
}

static nc_memplan *plan_of(const nc_graph *g, const nc_memplan_opts *o) {
  nc_memplan *p = NULL;
  nc_status st = nc_memplan_build(g, o, &p);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return p;
}

static char *dump_of(const nc_memplan *p) {
  nc_buf b;
  nc_buf_init(&b);
  nc_memplan_dump(p, &b);
  return nc_buf_take(&b);
}

// ---- golden dumps ----------------------------------------------------------------------

static nc_type f32(int64_t a, int64_t b) {
  nc_dim d[2] = {nc_dim_const(a), nc_dim_const(b)};
  return nc_type_make(NC_F32, 2, d);
}

// MLP chain: matmul -> relu -> square (both in place) -> matmul.
Test(memplan, golden_mlp_inplace_chain) {
  nc_graph *g = nc_graph_new("mlp");
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", f32(2, 16));
  nc_id w1 = nc_leaf(g, NC_OP_PARAM, "w1", f32(16, 32));
  nc_id h = nc_op2(g, NC_OP_MATMUL, x, w1);
  nc_id r = nc_op1(g, NC_OP_RELU, h);
  nc_id s = nc_op1(g, NC_OP_SQUARE, r);
  nc_id w2 = nc_leaf(g, NC_OP_PARAM, "w2", f32(32, 16));
  nc_id y = nc_op2(g, NC_OP_MATMUL, s, w2);
  cr_assert_null(nc_graph_set_output(g, "y", y));
  cr_assert_null(nc_graph_error(g));
  nc_memplan *p = plan_of(g, NULL);
  check_plan(g, p, NULL, NULL);
  char *text = dump_of(p);
  cr_assert_str_eq(text,
                   "memplan \"mlp\": 4 buffers, arena 384 B, total 896 B, live peak 384 B, 2 in place, best-fit, "
                   "align 64\n"
                   "%2 matmul f32[2,32] 256 B [2,3] @0\n"
                   "%3 relu f32[2,32] 256 B [3,4] @0 inplace of %2\n"
                   "%4 square f32[2,32] 256 B [4,6] @0 inplace of %3\n"
                   "%6 matmul f32[2,16] 128 B [6,end] @256 output\n");
  free(text);
  nc_memplan_free(p);
  // Without in-place reuse the chain needs offsets of its own.
  nc_memplan_opts o;
  nc_memplan_opts_init(&o);
  o.inplace = false;
  p = plan_of(g, &o);
  check_plan(g, p, NULL, NULL);
  text = dump_of(p);
  cr_assert_str_eq(text,
                   "memplan \"mlp\": 4 buffers, arena 512 B, total 896 B, live peak 512 B, 0 in place, best-fit, "
                   "align 64\n"
                   "%2 matmul f32[2,32] 256 B [2,3] @0\n"
                   "%3 relu f32[2,32] 256 B [3,4] @256\n"
                   "%4 square f32[2,32] 256 B [4,6] @0\n"
                   "%6 matmul f32[2,16] 128 B [6,end] @256 output\n");
  free(text);
  nc_memplan_free(p);
  nc_graph_free(g);
}

// Ops that cannot work in place: offsets are reused once a buffer is dead.
Test(memplan, golden_offset_reuse) {
  nc_graph *g = nc_graph_new("norms");
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", f32(4, 16));
  nc_id w1 = nc_leaf(g, NC_OP_PARAM, "w1", f32(16, 64));
  nc_id h = nc_op2(g, NC_OP_MATMUL, x, w1);
  nc_id sm = nc_op1(g, NC_OP_SOFTMAX, h);
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_RMS_NORM);
  d.nin = 1;
  d.in[0] = sm;
  d.fa[0] = 1e-6;
  nc_id rn = nc_build(g, &d);
  nc_id w2 = nc_leaf(g, NC_OP_PARAM, "w2", f32(64, 16));
  nc_id y = nc_op2(g, NC_OP_MATMUL, rn, w2);
  cr_assert_null(nc_graph_set_output(g, "y", y));
  cr_assert_null(nc_graph_error(g));
  nc_memplan *p = plan_of(g, NULL);
  check_plan(g, p, NULL, NULL);
  char *text = dump_of(p);
  cr_assert_str_eq(text,
                   "memplan \"norms\": 4 buffers, arena 2048 B, total 3328 B, live peak 2048 B, 0 in place, "
                   "best-fit, align 64\n"
                   "%2 matmul f32[4,64] 1024 B [2,3] @0\n"
                   "%3 softmax f32[4,64] 1024 B [3,4] @1024\n"
                   "%4 rms_norm f32[4,64] 1024 B [4,6] @0\n"
                   "%6 matmul f32[4,16] 256 B [6,end] @1024 output\n");
  free(text);
  nc_memplan_free(p);
  nc_graph_free(g);
}

// Fusion decides what is materialized: a fused shift reads %1 at other
// indices, so add may not overwrite %1; outputs are never overwritten.
Test(memplan, golden_fused_and_outputs) {
  nc_graph *g = nc_graph_new("fused");
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", f32(4, 8));
  nc_id e = nc_op1(g, NC_OP_EXP, x);
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_SHIFT);
  d.nin = 1;
  d.in[0] = e;
  d.ia[0] = 1;
  d.ia[1] = 1;
  nc_id sh = nc_build(g, &d);
  nc_id a = nc_op2(g, NC_OP_ADD, e, sh);
  nc_id ng = nc_op1(g, NC_OP_NEG, a);
  nc_id th = nc_op1(g, NC_OP_TANH, ng);
  nc_id sg = nc_op1(g, NC_OP_SIGMOID, th);
  cr_assert_null(nc_graph_set_output(g, "t", th));
  cr_assert_null(nc_graph_set_output(g, "s", sg));
  cr_assert_null(nc_graph_error(g));
  cr_assert_eq(sh, 2);
  bool mat[7] = {false, true, false, true, true, true, true};
  nc_memplan_opts o;
  nc_memplan_opts_init(&o);
  o.materialized = mat;
  nc_memplan *p = plan_of(g, &o);
  check_plan(g, p, mat, NULL);
  char *text = dump_of(p);
  cr_assert_str_eq(text,
                   "memplan \"fused\": 5 buffers, arena 256 B, total 640 B, live peak 256 B, 2 in place, best-fit, "
                   "align 64\n"
                   "%1 exp f32[4,8] 128 B [1,3] @0\n"
                   "%3 add f32[4,8] 128 B [3,4] @128\n"
                   "%4 neg f32[4,8] 128 B [4,5] @128 inplace of %3\n"
                   "%5 tanh f32[4,8] 128 B [5,end] @128 inplace of %4 output\n"
                   "%6 sigmoid f32[4,8] 128 B [6,end] @0 output\n");
  free(text);
  nc_memplan_free(p);
  // Materializing the shift too: add reads %1 and %2 directly and may take %1.
  mat[2] = true;
  p = plan_of(g, &o);
  check_plan(g, p, mat, NULL);
  cr_assert_eq(nc_memplan_find(p, a)->inplace_of, e);
  nc_memplan_free(p);
  nc_graph_free(g);
}

// ---- random graphs --------------------------------------------------------------------------

static void bind_small(const nc_graph *g, int64_t syms[NC_MAX_SYMS], uint64_t *rs) {
  for (int k = 0; k < NC_MAX_SYMS; k++) syms[k] = k < nc_graph_nsyms(g) ? 1 + (int64_t)(nc_test_rand_next(rs) % 3) : 0;
}

Test(memplan, random_graph_invariants) {
  int nplans = 0, ninplace = 0, nbufs = 0;
  int64_t arena = 0, total = 0;
  for (uint64_t seed = 1; seed <= 120; seed++) {
    nc_graph *g = nc_test_random_graph_ex(seed, 30 + (int)(seed % 7) * 25, seed % 2 ? NC_RG_DEEP : 0);
    cr_assert_not_null(g);
    uint64_t rs = seed * 7919;
    int64_t syms[NC_MAX_SYMS];
    bind_small(g, syms, &rs);
    uint32_t n = nc_graph_nnodes(g);
    nc_memplan_opts o;
    nc_memplan_opts_init(&o);
    o.syms = syms;
    o.nsyms = NC_MAX_SYMS;
    // 1: defaults. 2: a random fused subset (outputs and some consts kept).
    // 3: extra outputs chosen by the caller, no in-place.
    bool *mat = calloc(n, 1), *outp = calloc(n, 1);
    for (int variant = 0; variant < 3; variant++) {
      o.materialized = NULL;
      o.outputs = NULL;
      o.inplace = variant != 2;
      if (variant >= 1) {
        for (int k = 0; k < nc_graph_noutputs(g); k++) outp[nc_graph_output(g, k)] = true;
        for (nc_id i = 0; i < n; i++) {
          nc_op op = nc_graph_node(g, i)->op;
          bool leaf = nc_op_get(op)->kind == NC_KIND_LEAF;
          if (variant == 2 && !leaf && nc_test_rand_next(&rs) % 8 == 0) outp[i] = true;
          mat[i] = leaf ? (op == NC_OP_CONST || op == NC_OP_IOTA) && nc_test_rand_next(&rs) % 4 == 0
                        : outp[i] || nc_test_rand_next(&rs) % 10 < 6;
        }
        o.materialized = mat;
        o.outputs = variant == 2 ? outp : NULL;
      }
      nc_memplan *p = plan_of(g, &o);
      check_plan(g, p, o.materialized, o.outputs);
      ninplace += p->ninplace;
      nbufs += p->nbufs;
      arena += p->arena_size;
      total += p->total_size;
      nc_memplan_free(p);
      nplans++;
    }
    free(mat);
    free(outp);
    nc_graph_free(g);
  }
  cr_assert_eq(nplans, 360);
  cr_log_info("random graphs: %d buffers, %d in place, arena/total %.3f", nbufs, ninplace, (double)arena / (double)total);
  cr_assert_gt(ninplace, 50);
}

// ---- the GPT training step --------------------------------------------------------------------

Test(memplan, tiny_training_step) {
  char path[1024];
  nc_model_spec s;
  nc_status st = nc_spec_load(nc_test_path(path, sizeof path, "models/specs/tiny.xml"), &s);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {0};
  to.model.batch = 2;
  to.model.seq = 16;
  to.kind = NC_TRAIN_STEP;
  nc_graph *g = NULL;
  st = nc_train_build(&s, &oc, &to, &g);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_memplan *p = plan_of(g, NULL);
  check_plan(g, p, NULL, NULL);
  cr_log_info("memplan tiny train step (B=2, T=16): %u nodes, %d buffers, arena %lld B, total %lld B (%.1f%%), "
              "live peak %lld B, %d in place, %s",
              nc_graph_nnodes(g), p->nbufs, (long long)p->arena_size, (long long)p->total_size,
              100.0 * (double)p->arena_size / (double)p->total_size, (long long)p->live_peak, p->ninplace,
              p->strategy);
  fprintf(stderr,
          "memplan tiny train step (B=2, T=16): %u nodes, %d buffers, arena %lld B, total %lld B (%.1f%%), "
          "live peak %lld B, %d in place, %s\n",
          nc_graph_nnodes(g), p->nbufs, (long long)p->arena_size, (long long)p->total_size,
          100.0 * (double)p->arena_size / (double)p->total_size, (long long)p->live_peak, p->ninplace, p->strategy);
  cr_assert_lt(p->arena_size, p->total_size / 2, "reuse should at least halve the memory");
  cr_assert_gt(p->ninplace, 0);
  nc_memplan *q;
  nc_memplan_opts o;
  nc_memplan_opts_init(&o);
  o.inplace = false;
  q = plan_of(g, &o);
  check_plan(g, q, NULL, NULL);
  fprintf(stderr, "  without in-place: arena %lld B, live peak %lld B\n", (long long)q->arena_size,
          (long long)q->live_peak);
  nc_memplan_free(q);
  nc_memplan_free(p);
  nc_graph_free(g);
}

// ---- errors and helpers -----------------------------------------------------------------------

static nc_graph *symbolic_graph(void) {
  nc_graph *g = nc_graph_new("sym");
  int B, T;
  cr_assert_null(nc_graph_sym(g, "B", &B));
  cr_assert_null(nc_graph_sym(g, "T", &T));
  nc_dim bb, d[2] = {nc_dim_sym(B), nc_dim_sym(T)};
  cr_assert(nc_dim_mul(d[0], d[0], &bb));
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, d));
  nc_id y = nc_op1(g, NC_OP_EXP, x);
  nc_dim d2[2] = {bb, d[1]};
  nc_id z = nc_leaf(g, NC_OP_INPUT, "z", nc_type_make(NC_F32, 2, d2));
  nc_id w = nc_op1(g, NC_OP_TANH, z);
  cr_assert_null(nc_graph_set_output(g, "y", y));
  cr_assert_null(nc_graph_set_output(g, "w", w));
  cr_assert_null(nc_graph_error(g));
  return g;
}

static void expect_error(const nc_graph *g, const nc_memplan_opts *o, nc_code code, const char *needle) {
  nc_memplan *p = (nc_memplan *)1;
  nc_status st = nc_memplan_build(g, o, &p);
  cr_assert_not_null(st, "expected an error containing \"%s\"", needle);
  cr_assert_eq(nc_status_code(st), code, "%s", nc_status_msg(st));
  cr_assert(strstr(nc_status_msg(st), needle), "\"%s\" lacks \"%s\"", nc_status_msg(st), needle);
  cr_assert_null(p);
  nc_status_free(st);
}

Test(memplan, errors) {
  nc_graph *g = symbolic_graph();
  nc_memplan_opts o;
  nc_memplan_opts_init(&o);
  expect_error(g, &o, NC_E_INVALID, "symbol B is not bound");
  int64_t syms[2] = {3, 0};
  o.syms = syms;
  o.nsyms = 2;
  expect_error(g, &o, NC_E_INVALID, "symbol T is not bound");
  syms[1] = -2;
  expect_error(g, &o, NC_E_INVALID, "symbol T is bound to -2");
  syms[0] = INT64_C(1) << 30;
  syms[1] = INT64_C(1) << 30;
  expect_error(g, &o, NC_E_NOMEM, "absurd");   // B^2 overflows the extent limit
  syms[0] = INT64_C(1) << 25;
  syms[1] = INT64_C(1) << 24;
  expect_error(g, &o, NC_E_NOMEM, "absurd");   // 2^49 elements
  syms[0] = 2;
  syms[1] = 3;
  o.align = 48;
  expect_error(g, &o, NC_E_INVALID, "alignment 48");
  o.align = 64;
  bool mat[4] = {true, true, false, true};
  o.materialized = mat;
  expect_error(g, &o, NC_E_INVALID, "inputs and params live outside the arena");
  mat[0] = false;
  mat[3] = false;
  expect_error(g, &o, NC_E_INVALID, "output node %3 (tanh) is not materialized");
  mat[3] = true;
  nc_memplan *p = plan_of(g, &o);
  cr_assert_eq(p->nbufs, 2);
  cr_assert_eq(nc_memplan_find(p, 3)->size, 2 * 2 * 3 * 4);
  cr_assert_null(nc_memplan_find(p, 0));
  cr_assert_null(nc_memplan_find(p, 99));
  nc_memplan_free(p);
  nc_graph_free(g);
  // An empty graph has an empty plan.
  g = nc_graph_new("empty");
  p = plan_of(g, NULL);
  cr_assert_eq(p->nbufs, 0);
  cr_assert_eq(p->arena_size, 0);
  nc_memplan_free(p);
  nc_graph_free(g);
}

Test(memplan, bindings_and_cli_dump) {
  nc_graph *g = symbolic_graph();
  int64_t syms[NC_MAX_SYMS];
  cr_assert_null(nc_memplan_parse_bindings(g, "B=2, T=3", syms));
  cr_assert_eq(syms[0], 2);
  cr_assert_eq(syms[1], 3);
  const char *bad[] = {"X=2", "B", "B=0", "B=x", "B=2,B=2", "B=2x", "B=99999999999999999999", "=3"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    nc_status st = nc_memplan_parse_bindings(g, bad[i], syms);
    cr_assert_not_null(st, "\"%s\" accepted", bad[i]);
    nc_status_free(st);
  }
  cr_assert_null(nc_memplan_parse_bindings(g, "B=2,T=3", syms));
  nc_buf b;
  nc_buf_init(&b);
  cr_assert_null(nc_memplan_dump_graph(g, syms, NC_MAX_SYMS, &b));
  cr_assert_str_eq(b.data,
                   "memplan \"sym\": 2 buffers, arena 128 B, total 128 B, live peak 128 B, 0 in place, best-fit, "
                   "align 64\n"
                   "%1 exp f32[2,3] 24 B [1,end] @0 output\n"
                   "%3 tanh f32[4,3] 48 B [3,end] @64 output\n");
  nc_buf_free(&b);
  // Unbound: the error comes back from the CLI helper too.
  cr_assert_null(nc_memplan_parse_bindings(g, "T=3", syms));
  nc_buf_init(&b);
  nc_status st = nc_memplan_dump_graph(g, syms, NC_MAX_SYMS, &b);
  cr_assert_not_null(st);
  nc_status_free(st);
  nc_buf_free(&b);
  nc_graph_free(g);
}
