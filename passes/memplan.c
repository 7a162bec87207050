// Memory planning (passes/memplan.h): liveness, in-place reuse, greedy-by-size
// offsets in one arena.
#include "passes/memplan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nc_memplan_opts_init(nc_memplan_opts *o) {
  memset(o, 0, sizeof *o);
  o->inplace = true;
  o->align = 64;
}

static bool nc_is_external(nc_op op) { return op == NC_OP_INPUT || op == NC_OP_PARAM; }

// Concrete extent of d under the bindings, with overflow and binding checks.
static nc_status nc_memplan_eval_dim(const nc_graph *g, nc_id id, nc_dim d, const nc_memplan_opts *o,
                                     int64_t *out) {
  int64_t v = d.c;
  for (int k = 0; k < NC_MAX_SYMS; k++) {
    unsigned e = (unsigned)(d.e >> (4 * k)) & 15;
    if (!e) continue;
    if (k >= o->nsyms || !o->syms || o->syms[k] <= 0) {
      const char *name = k < nc_graph_nsyms(g) ? nc_graph_sym_name(g, k) : "?";
      if (o->syms && k < o->nsyms && o->syms[k] < 0)
        return nc_errorf(NC_E_INVALID, "memplan: symbol %s is bound to %lld (node %%%u uses it)", name,
                         (long long)o->syms[k], id);
      return nc_errorf(NC_E_INVALID, "memplan: symbol %s is not bound (node %%%u %s uses it)", name, id,
                       nc_op_get(nc_graph_node(g, id)->op)->name);
    }
    for (; e > 0; e--)
      if (__builtin_mul_overflow(v, o->syms[k], &v) || v > NC_MAX_DIM)
        return nc_errorf(NC_E_NOMEM, "memplan: node %%%u has an absurd extent under the bindings", id);
  }
  *out = v;
  return NC_OK;
}

static nc_status nc_memplan_size(const nc_graph *g, nc_id id, const nc_memplan_opts *o, nc_membuf *b) {
  const nc_node *nd = nc_graph_node(g, id);
  b->dtype = nd->type.dtype;
  b->rank = nd->type.rank;
  int64_t numel = 1;
  for (int i = 0; i < nd->type.rank; i++) {
    NC_TRY(nc_memplan_eval_dim(g, id, nd->type.dim[i], o, &b->dims[i]));
    if (__builtin_mul_overflow(numel, b->dims[i], &numel) || numel > NC_MAX_ELEMS)
      return nc_errorf(NC_E_NOMEM, "memplan: node %%%u (%s) has an absurd element count under the bindings", id,
                       nc_op_get(nd->op)->name);
  }
  int64_t bytes;
  if (__builtin_mul_overflow(numel, (int64_t)nc_dtype_size(nd->type.dtype), &bytes) ||
      bytes > NC_MEMPLAN_MAX_BYTES)
    return nc_errorf(NC_E_NOMEM, "memplan: node %%%u (%s) needs an absurd %lld elements of %s", id,
                     nc_op_get(nd->op)->name, (long long)numel, nc_dtype_name(nd->type.dtype));
  b->size = bytes;
  return NC_OK;
}

// ---- liveness ---------------------------------------------------------------------

// Scratch of the liveness walk. A materialized consumer c reads every
// materialized node reachable from its inputs through non-materialized
// (fused) nodes. "Same index" tracks whether a path only crosses
// elementwise nodes, so that element i of the result reads element i of the
// buffer: the condition for writing the result over that buffer.
typedef struct {
  const nc_graph *g;
  const bool *mat;
  uint32_t *seen_same, *seen_other;  // stamp (consumer id + 1) per (node, path kind)
  nc_id *stack;                      // (node << 1 | same) pairs
  uint32_t *last;                    // per node
  bool *in0_other;                   // per consumer: its input 0 is also read at other indices
  const nc_id *exec_at;              // per node: where its kernel runs (NULL = itself)
} nc_live;

static void nc_live_consumer(nc_live *L, nc_id c) {
  const nc_graph *g = L->g;
  const nc_node *cn = nc_graph_node(g, c);
  uint32_t stamp = c + 1;
  size_t sp = 0;
  bool c_elem = nc_op_get(cn->op)->kind == NC_KIND_ELEMWISE;
  for (int k = 0; k < cn->nin; k++) {
    nc_id in = nc_graph_input_of(g, c, k);
    L->stack[sp++] = (in << 1) | (c_elem ? 1u : 0u);
  }
  nc_id in0 = cn->nin ? nc_graph_input_of(g, c, 0) : NC_NONE;
  while (sp > 0) {
    nc_id e = L->stack[--sp];
    nc_id v = e >> 1;
    bool same = e & 1;
    uint32_t *seen = same ? L->seen_same : L->seen_other;
    if (seen[v] == stamp) continue;
    seen[v] = stamp;
    if (L->mat[v]) {
      uint32_t at = L->exec_at ? L->exec_at[c] : c;  // a node computed by a later kernel reads there
      if (at > L->last[v]) L->last[v] = at;
      if (v == in0 && !same) L->in0_other[c] = true;
      continue;
    }
    const nc_node *vn = nc_graph_node(g, v);
    if (nc_op_get(vn->op)->kind == NC_KIND_LEAF) continue;  // outside the arena, or computed inline
    bool v_elem = nc_op_get(vn->op)->kind == NC_KIND_ELEMWISE;
    for (int k = 0; k < vn->nin; k++) {
      nc_id in = nc_graph_input_of(g, v, k);
      L->stack[sp++] = (in << 1) | (same && v_elem ? 1u : 0u);
    }
  }
}

// ---- placement ----------------------------------------------------------------------

// An allocation: a chain of buffers sharing bytes in place, from def of its
// first to last of its final member.
typedef struct {
  int64_t size;  // aligned
  uint32_t def, last;
  int root;      // index of the first buffer
  int64_t offset;
} nc_alloc;

static int nc_alloc_cmp(const void *pa, const void *pb) {
  const nc_alloc *a = pa, *b = pb;
  if (a->size != b->size) return a->size > b->size ? -1 : 1;
  if (a->def != b->def) return a->def < b->def ? -1 : 1;
  return (a->root > b->root) - (a->root < b->root);
}

static bool nc_alloc_overlap(const nc_alloc *a, const nc_alloc *b) { return a->def <= b->last && b->def <= a->last; }

// Greedy by size: allocations in decreasing size; each goes into a gap
// between the already-placed allocations whose lifetimes overlap its own
// (best_fit: the smallest gap that fits; else the lowest), or after the
// highest of them. placed[] is kept sorted by offset. Returns the arena size.
static int64_t nc_place(nc_alloc *al, int n, bool best_fit, int *placed) {
  int np = 0;
  int64_t arena = 0;
  for (int i = 0; i < n; i++) {
    nc_alloc *a = &al[i];
    int64_t prev_end = 0, best = -1, best_gap = INT64_MAX;
    for (int j = 0; j < np; j++) {
      const nc_alloc *q = &al[placed[j]];
      if (!nc_alloc_overlap(a, q)) continue;
      int64_t gap = q->offset - prev_end;
      if (gap >= a->size && gap < best_gap) {
        best = prev_end;
        best_gap = gap;
        if (!best_fit) break;
      }
      if (q->offset + q->size > prev_end) prev_end = q->offset + q->size;
    }
    a->offset = best >= 0 ? best : prev_end;
    if (a->offset + a->size > arena) arena = a->offset + a->size;
    int pos = np;
    while (pos > 0 && al[placed[pos - 1]].offset > a->offset) pos--;
    memmove(&placed[pos + 1], &placed[pos], (size_t)(np - pos) * sizeof *placed);
    placed[pos] = i;
    np++;
  }
  return arena;
}

// ---- build ------------------------------------------------------------------------------

void nc_memplan_free(nc_memplan *p) {
  if (!p) return;
  free(p->bufs);
  free(p->index);
  free(p);
}

const nc_membuf *nc_memplan_find(const nc_memplan *p, nc_id node) {
  if (!p || node >= p->nnodes || p->index[node] < 0) return NULL;
  return &p->bufs[p->index[node]];
}

nc_status nc_memplan_build(const nc_graph *g, const nc_memplan_opts *opts, nc_memplan **out) {
  if (!g || !out) return nc_errorf(NC_E_INVALID, "memplan: %s is NULL", g ? "out" : "graph");
  *out = NULL;
  nc_memplan_opts def;
  if (!opts) {
    nc_memplan_opts_init(&def);
    opts = &def;
  }
  int64_t align = opts->align;
  if (align < 1 || (align & (align - 1)) || align > (1 << 20))
    return nc_errorf(NC_E_INVALID, "memplan: alignment %lld is not a power of two in [1, 2^20]", (long long)align);
  uint32_t n = nc_graph_nnodes(g);
  size_t nn = n ? n : 1;
  nc_status st = NC_OK;
  nc_memplan *p = calloc(1, sizeof *p);
  bool *mat = calloc(nn, sizeof *mat), *outp = calloc(nn, sizeof *outp), *in0_other = calloc(nn, sizeof(bool));
  uint32_t *last = calloc(nn, sizeof *last), *seen_same = calloc(nn, sizeof *last),
           *seen_other = calloc(nn, sizeof *last);
  nc_id *stack = NULL;
  nc_alloc *al = NULL, *al2 = NULL;
  int *root = NULL, *placed = NULL, *alloc_of = NULL;
  int64_t *diff = NULL;
  if (!p || !mat || !outp || !in0_other || !last || !seen_same || !seen_other) goto oom;
  p->nnodes = n;
  p->align = align;
  snprintf(p->graph_name, sizeof p->graph_name, "%s", nc_graph_name(g) ? nc_graph_name(g) : "");
  p->index = malloc(nn * sizeof *p->index);
  if (!p->index) goto oom;

  // Which nodes live in the arena, and which are outputs.
  size_t edges = 0;
  for (nc_id i = 0; i < n; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    bool leaf = nc_op_get(nd->op)->kind == NC_KIND_LEAF;
    mat[i] = opts->materialized ? opts->materialized[i] : !leaf;
    if (mat[i] && nc_is_external(nd->op)) {
      st = nc_errorf(NC_E_INVALID, "memplan: node %%%u (%s \"%s\") is marked materialized, but inputs and params "
                     "live outside the arena", i, nc_op_get(nd->op)->name, nc_node_name(g, i));
      goto done;
    }
    edges += nd->nin;
  }
  if (opts->outputs) {
    for (nc_id i = 0; i < n; i++) outp[i] = opts->outputs[i];
  } else {
    for (int k = 0; k < nc_graph_noutputs(g); k++) outp[nc_graph_output(g, k)] = true;
  }
  for (nc_id i = 0; i < n; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (outp[i] && !mat[i] && nc_op_get(nd->op)->kind != NC_KIND_LEAF) {
      st = nc_errorf(NC_E_INVALID, "memplan: output node %%%u (%s) is not materialized", i,
                     nc_op_get(nd->op)->name);
      goto done;
    }
  }

  // Buffers and their sizes.
  int nb = 0;
  for (nc_id i = 0; i < n; i++) nb += mat[i];
  p->bufs = calloc(nb ? (size_t)nb : 1, sizeof *p->bufs);
  if (!p->bufs) goto oom;
  p->nbufs = nb;
  for (nc_id i = 0, b = 0; i < n; i++) {
    p->index[i] = -1;
    if (!mat[i]) continue;
    nc_membuf *m = &p->bufs[b];
    m->node = i;
    m->op = nc_graph_node(g, i)->op;
    m->inplace_of = NC_NONE;
    m->output = outp[i];
    if ((st = nc_memplan_size(g, i, opts, m))) goto done;
    p->index[i] = (int32_t)b++;
  }

  // Liveness: one walk per materialized consumer, in id order.
  stack = malloc((edges + 1) * 2 * sizeof *stack);  // each (node, kind) is pushed at most once per in-edge
  if (!stack) goto oom;
  for (nc_id i = 0; i < n; i++) last[i] = i;
  nc_live L = {g, mat, seen_same, seen_other, stack, last, in0_other, opts->exec_at};
  for (nc_id c = 0; c < n; c++)
    if (mat[c]) nc_live_consumer(&L, c);
  for (nc_id c = 0; opts->extra_read && c < n; c++) {  // reads the graph does not show
    nc_id v = opts->extra_read[c];
    if (v == NC_NONE || v >= n || !mat[v]) continue;
    uint32_t at = opts->exec_at ? opts->exec_at[c] : c;
    if (at > last[v]) last[v] = at;
    in0_other[c] = true;  // never in place: c reads v at other indices
  }
  if (opts->exec_at)  // hosts of other nodes' computations: no in place (flagged like other-index reads)
    for (nc_id c = 0; c < n; c++)
      if (opts->exec_at[c] != c && opts->exec_at[c] < n) in0_other[opts->exec_at[c]] = true;
  for (int b = 0; b < nb; b++) {
    nc_membuf *m = &p->bufs[b];
    // a node written by an earlier node's kernel (the relu2 epilogue) is live from there
    m->def = opts->exec_at && opts->exec_at[m->node] < m->node ? opts->exec_at[m->node] : m->node;
    m->last = m->output ? NC_MEMPLAN_END : last[m->node];
  }

  // In place: c writes over its input 0 (chains follow: root[] is the first buffer).
  root = malloc((nb ? (size_t)nb : 1) * sizeof *root);
  if (!root) goto oom;
  for (int b = 0; b < nb; b++) {
    nc_membuf *m = &p->bufs[b];
    root[b] = b;
    const nc_node *cn = nc_graph_node(g, m->node);
    if (!opts->inplace || !(nc_op_get(cn->op)->flags & NC_OPF_INPLACE) || cn->nin < 1) continue;
    // a kernel that computes other nodes too reads more than its input 0's element
    if (opts->exec_at && (opts->exec_at[m->node] != m->node || in0_other[m->node])) continue;
    nc_id a = nc_graph_input_of(g, m->node, 0);
    int ab = p->index[a];
    if (ab < 0) continue;  // a leaf, or fused away
    const nc_membuf *src = &p->bufs[ab];
    if (src->output || src->last != m->node || src->size != m->size || in0_other[m->node]) continue;
    m->inplace_of = a;
    root[b] = root[ab];
    p->ninplace++;
  }

  // Allocations: one per chain, in order of the chain's root.
  alloc_of = malloc((nb ? (size_t)nb : 1) * sizeof *alloc_of);
  al = calloc(nb ? (size_t)nb : 1, sizeof *al);
  al2 = calloc(nb ? (size_t)nb : 1, sizeof *al2);
  placed = malloc((nb ? (size_t)nb : 1) * sizeof *placed);
  if (!alloc_of || !al || !al2 || !placed) goto oom;
  int na = 0;
  for (int b = 0; b < nb; b++) {
    const nc_membuf *m = &p->bufs[b];
    int64_t asz = (m->size + align - 1) & ~(align - 1);
    if (__builtin_add_overflow(p->total_size, asz, &p->total_size) || p->total_size > INT64_MAX / 4) {
      st = nc_errorf(NC_E_NOMEM, "memplan: the buffers add up to an absurd size (at node %%%u)", m->node);
      goto done;
    }
    if (root[b] == b) {
      alloc_of[b] = na;
      al[na++] = (nc_alloc){asz, m->def, m->last, b, 0};
    } else {
      alloc_of[b] = alloc_of[root[b]];
      al[alloc_of[b]].last = m->last;  // a chain member starts where the previous one dies
    }
  }
  qsort(al, (size_t)na, sizeof *al, nc_alloc_cmp);
  memcpy(al2, al, (size_t)na * sizeof *al);
  int64_t best = nc_place(al, na, true, placed);
  int64_t first = nc_place(al2, na, false, placed);
  p->strategy = "best-fit";
  if (first < best) {
    memcpy(al, al2, (size_t)na * sizeof *al);
    p->strategy = "first-fit";
    best = first;
  }
  p->arena_size = best;
  if (p->arena_size > NC_MEMPLAN_MAX_BYTES) {
    st = nc_errorf(NC_E_NOMEM, "memplan: the arena would need an absurd %lld bytes", (long long)p->arena_size);
    goto done;
  }
  for (int i = 0; i < na; i++) alloc_of[al[i].root] = i;  // root -> sorted position
  for (int b = 0; b < nb; b++) p->bufs[b].offset = al[alloc_of[root[b]]].offset;

  // Live peak: sweep the allocations' intervals over time (outputs to n).
  diff = calloc((size_t)n + 2, sizeof *diff);
  if (!diff) goto oom;
  for (int i = 0; i < na; i++) {
    uint32_t e = al[i].last == NC_MEMPLAN_END ? n : al[i].last;
    diff[al[i].def] += al[i].size;
    diff[e + 1] -= al[i].size;
  }
  int64_t live = 0;
  for (uint32_t t = 0; t <= n; t++) {
    live += diff[t];
    if (live > p->live_peak) p->live_peak = live;
  }
  goto done;
oom:
  st = nc_errorf(NC_E_NOMEM, "memplan: out of memory (graph of %u nodes)", n);
done:
  free(mat);
  free(outp);
  free(in0_other);
  free(last);
  free(seen_same);
  free(seen_other);
  free(stack);
  free(al);
  free(al2);
  free(root);
  free(placed);
  free(alloc_of);
  free(diff);
  if (st) {
    nc_memplan_free(p);
    return st;
  }
  *out = p;
  return NC_OK;
}

// ---- text ---------------------------------------------------------------------------------

void nc_memplan_dump(const nc_memplan *p, nc_buf *out) {
  nc_buf_puts(out, "memplan \"");
  for (const char *s = p->graph_name; *s; s++) {
    if (*s == '"' || *s == '\\') nc_buf_printf(out, "\\%c", *s);
    else if ((unsigned char)*s < 0x20) nc_buf_printf(out, "\\x%02x", (unsigned char)*s);
    else nc_buf_put(out, s, 1);
  }
  nc_buf_printf(out, "\": %d buffers, arena %lld B, total %lld B, live peak %lld B, %d in place, %s, align %lld\n",
                p->nbufs, (long long)p->arena_size, (long long)p->total_size, (long long)p->live_peak, p->ninplace,
                p->strategy ? p->strategy : "none", (long long)p->align);
  for (int b = 0; b < p->nbufs; b++) {
    const nc_membuf *m = &p->bufs[b];
    nc_buf_printf(out, "%%%u %s %s[", m->node, nc_op_get(m->op)->name, nc_dtype_name(m->dtype));
    for (int i = 0; i < m->rank; i++) nc_buf_printf(out, i ? ",%lld" : "%lld", (long long)m->dims[i]);
    nc_buf_printf(out, "] %lld B [%u,", (long long)m->size, m->def);
    if (m->last == NC_MEMPLAN_END) nc_buf_puts(out, "end]");
    else nc_buf_printf(out, "%u]", m->last);
    nc_buf_printf(out, " @%lld", (long long)m->offset);
    if (m->inplace_of != NC_NONE) nc_buf_printf(out, " inplace of %%%u", m->inplace_of);
    if (m->output) nc_buf_puts(out, " output");
    nc_buf_puts(out, "\n");
  }
}

nc_status nc_memplan_parse_bindings(const nc_graph *g, const char *text, int64_t syms[NC_MAX_SYMS]) {
  for (int k = 0; k < NC_MAX_SYMS; k++) syms[k] = 0;
  const char *s = text ? text : "";
  while (*s) {
    while (*s == ' ' || *s == ',') s++;
    if (!*s) break;
    const char *name = s;
    while (*s && *s != '=' && *s != ',' && *s != ' ') s++;
    size_t len = (size_t)(s - name);
    while (*s == ' ') s++;
    if (*s != '=' || len == 0)
      return nc_errorf(NC_E_PARSE, "bindings \"%s\": expected NAME=SIZE at offset %d", text, (int)(name - text));
    int k = nc_graph_sym_find(g, name, len);
    if (k < 0)
      return nc_errorf(NC_E_INVALID, "bindings \"%s\": graph \"%s\" has no symbol %.*s", text, nc_graph_name(g),
                       (int)len, name);
    s++;
    while (*s == ' ') s++;
    int64_t v = 0;
    const char *digits = s;
    while (*s >= '0' && *s <= '9') {
      if (v > NC_MAX_DIM / 10) return nc_errorf(NC_E_INVALID, "bindings \"%s\": %.*s is too large", text, (int)len, name);
      v = v * 10 + (*s++ - '0');
    }
    if (s == digits || v < 1 || v > NC_MAX_DIM || (*s && *s != ',' && *s != ' '))
      return nc_errorf(NC_E_INVALID, "bindings \"%s\": %.*s needs a size in [1, 2^40]", text, (int)len, name);
    if (syms[k]) return nc_errorf(NC_E_INVALID, "bindings \"%s\": %.*s is bound twice", text, (int)len, name);
    syms[k] = v;
  }
  return NC_OK;
}

nc_status nc_memplan_dump_graph(const nc_graph *g, const int64_t *syms, int nsyms, nc_buf *out) {
  nc_memplan_opts o;
  nc_memplan_opts_init(&o);
  o.syms = syms;
  o.nsyms = nsyms;
  nc_memplan *p;
  NC_TRY(nc_memplan_build(g, &o, &p));
  nc_memplan_dump(p, out);
  nc_memplan_free(p);
  return NC_OK;
}
