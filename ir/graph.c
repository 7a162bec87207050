// Graph storage: node arena, edges, interned strings, symbols, outputs, the
// hash-consing table, hashing and verification.
#include "ir/graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/rules.h"
#include "support/buf.h"

struct nc_graph {
  char *name;
  nc_node *nodes;
  uint32_t nnodes, capnodes;
  nc_id *edges;
  uint32_t nedges, capedges;
  char **strs;  // interned strings; index 0 unused so 0 means "none"
  uint32_t nstrs, capstrs;
  char *syms[NC_MAX_SYMS];
  int nsyms;
  struct nc_out {
    char *name;
    nc_id id;
  } *outs;
  int nouts, capouts;
  uint32_t *htab;  // open addressing: node id + 1, 0 = empty
  uint32_t hcap;
  nc_status err;   // sticky error of the builder helpers
};

// ---- op table -------------------------------------------------------------
static const nc_op_info nc_op_table[NC_OP_COUNT] = {
#define X(ID, NAME, MINI, MAXI, KIND, FLAGS, ATTRS, RULE) \
  {NAME, MINI, MAXI, NC_KIND_##KIND, FLAGS, ATTRS},
#define DECL NC_OPF_DECL
#define INPLACE NC_OPF_INPLACE
#define DIFF NC_OPF_DIFF
#include "ir/ops.def"
#undef DECL
#undef INPLACE
#undef DIFF
#undef X
};

typedef nc_status (*nc_rule_fn)(const nc_graph *, const nc_node_desc *, const nc_type *const *,
                                nc_type *);
static const nc_rule_fn nc_rule_table[NC_OP_COUNT] = {
#define X(ID, NAME, MINI, MAXI, KIND, FLAGS, ATTRS, RULE) nc_rule_##RULE,
#include "ir/ops.def"
#undef X
};

const nc_op_info *nc_op_get(nc_op op) {
  return (unsigned)op < NC_OP_COUNT ? &nc_op_table[op] : NULL;
}

nc_op nc_op_lookup(const char *name, size_t len) {
  for (int i = 0; i < NC_OP_COUNT; i++)
    if (strlen(nc_op_table[i].name) == len && memcmp(nc_op_table[i].name, name, len) == 0)
      return (nc_op)i;
  return NC_OP_COUNT;
}

const char *nc_kind_name(nc_kind k) {
  static const char *const names[] = {"leaf", "elemwise", "broadcast", "injective", "reduce", "opaque"};
  return (unsigned)k < 6 ? names[k] : "?";
}

int nc_op_attr_specs(nc_op op, nc_attr_spec specs[NC_MAX_ATTRS]) {
  const char *s = nc_op_table[op].attrs;
  int n = 0, islot = 0, fslot = 0;
  while (*s && n < NC_MAX_ATTRS) {
    while (*s == ' ') s++;
    if (!*s) break;
    nc_attr_spec *a = &specs[n++];
    memset(a, 0, sizeof *a);
    size_t k = 0;
    while (*s && *s != ':' && k + 1 < sizeof a->name) a->name[k++] = *s++;
    if (*s == ':') s++;
    if (!strncmp(s, "axes", 4)) a->type = NC_ATTR_AXES, s += 4;
    else if (!strncmp(s, "perm", 4)) a->type = NC_ATTR_PERM, s += 4;
    else if (*s == 'i') a->type = NC_ATTR_INT, s++;
    else if (*s == 'f') a->type = NC_ATTR_FLOAT, s++;
    else if (*s == 'b') a->type = NC_ATTR_BOOL, s++;
    else if (*s == 's') a->type = NC_ATTR_STR, s++;
    else if (*s == 'e') {
      a->type = NC_ATTR_ENUM;
      s += 2;  // "e("
      while (*s && *s != ')' && a->nenum < NC_MAX_ENUM) {
        size_t j = 0;
        while (*s && *s != '|' && *s != ')' && j + 1 < sizeof a->enums[0]) a->enums[a->nenum][j++] = *s++;
        a->nenum++;
        if (*s == '|') s++;
      }
      if (*s == ')') s++;
    }
    a->slot = a->type == NC_ATTR_FLOAT ? fslot++ : islot++;
    if (*s == '=') {
      s++;
      a->has_default = true;
      const char *e = s;
      while (*e && *e != ' ') e++;
      if (a->type == NC_ATTR_FLOAT) a->fdefault = strtod(s, NULL);
      else if (a->type == NC_ATTR_ENUM) {
        for (int j = 0; j < a->nenum; j++)
          if (strlen(a->enums[j]) == (size_t)(e - s) && !strncmp(a->enums[j], s, (size_t)(e - s)))
            a->idefault = j;
      } else a->idefault = strtoll(s, NULL, 10);
      s = e;
    }
  }
  return n;
}

// ---- dims and types ---------------------------------------------------------
bool nc_dim_mul(nc_dim a, nc_dim b, nc_dim *out) {
  if (a.c <= 0 || b.c <= 0 || a.c > NC_MAX_ELEMS / b.c) return false;
  nc_dim r = {a.c * b.c, 0};
  for (int k = 0; k < NC_MAX_SYMS; k++) {
    uint64_t ea = (a.e >> (4 * k)) & 15, eb = (b.e >> (4 * k)) & 15;
    if (ea + eb > 15) return false;
    r.e |= (ea + eb) << (4 * k);
  }
  *out = r;
  return true;
}

int64_t nc_dim_eval(nc_dim d, const int64_t *syms) {
  int64_t v = d.c;
  for (int k = 0; k < NC_MAX_SYMS; k++)
    for (uint64_t ek = (d.e >> (4 * k)) & 15; ek > 0; ek--) v *= syms[k];
  return v;
}

bool nc_shape_eq(const nc_type *a, const nc_type *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (!nc_dim_eq(a->dim[i], b->dim[i])) return false;
  return true;
}

bool nc_type_eq(const nc_type *a, const nc_type *b) { return a->dtype == b->dtype && nc_shape_eq(a, b); }

bool nc_type_numel(const nc_type *t, nc_dim *out) {
  nc_dim n = nc_dim_const(1);
  for (int i = 0; i < t->rank; i++)
    if (!nc_dim_mul(n, t->dim[i], &n)) return false;
  *out = n;
  return true;
}

nc_type nc_type_make(nc_dtype dt, int rank, const nc_dim *dims) {
  nc_type t;
  memset(&t, 0, sizeof t);
  t.dtype = dt;
  t.rank = (uint8_t)rank;
  for (int i = 0; i < rank && i < NC_MAX_RANK; i++) t.dim[i] = dims[i];
  return t;
}

char *nc_dim_str(const nc_graph *g, nc_dim d, char *buf, size_t n) {
  size_t o = 0;
  buf[0] = 0;
  if (d.c != 1 || d.e == 0) o += (size_t)snprintf(buf + o, n - o, "%lld", (long long)d.c);
  for (int k = 0; k < NC_MAX_SYMS && o < n; k++) {
    unsigned ek = (d.e >> (4 * k)) & 15;
    if (!ek) continue;
    const char *nm = g && k < g->nsyms ? g->syms[k] : "?";
    o += (size_t)snprintf(buf + o, n - o, "%s%s", o ? "*" : "", nm);
    if (ek > 1 && o < n) o += (size_t)snprintf(buf + o, n - o, "^%u", ek);
  }
  return buf;
}

char *nc_type_str(const nc_graph *g, const nc_type *t, char *buf, size_t n) {
  size_t o = (size_t)snprintf(buf, n, "%s[", nc_dtype_name(t->dtype));
  for (int i = 0; i < t->rank && o < n; i++) {
    char d[96];
    o += (size_t)snprintf(buf + o, n - o, "%s%s", i ? "," : "", nc_dim_str(g, t->dim[i], d, sizeof d));
  }
  if (o < n) snprintf(buf + o, n - o, "]");
  return buf;
}

// ---- graph lifetime -----------------------------------------------------------
nc_graph *nc_graph_new(const char *name) {
  nc_graph *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  g->name = strdup(name ? name : "graph");
  g->nstrs = 1;  // slot 0 = no string
  g->capstrs = 16;
  g->strs = calloc(g->capstrs, sizeof *g->strs);
  g->hcap = 64;
  g->htab = calloc(g->hcap, sizeof *g->htab);
  if (!g->name || !g->strs || !g->htab) {
    nc_graph_free(g);
    return NULL;
  }
  return g;
}

void nc_graph_free(nc_graph *g) {
  if (!g) return;
  free(g->name);
  free(g->nodes);
  free(g->edges);
  for (uint32_t i = 0; i < g->nstrs; i++) free(g->strs[i]);
  free(g->strs);
  for (int i = 0; i < g->nsyms; i++) free(g->syms[i]);
  for (int i = 0; i < g->nouts; i++) free(g->outs[i].name);
  free(g->outs);
  free(g->htab);
  nc_status_free(g->err);
  free(g);
}

const char *nc_graph_name(const nc_graph *g) { return g->name; }

static bool nc_ident_ok(const char *s, size_t n) {
  if (n == 0 || n > 63) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

int nc_graph_sym_find(const nc_graph *g, const char *name, size_t len) {
  for (int k = 0; k < g->nsyms; k++)
    if (strlen(g->syms[k]) == len && !memcmp(g->syms[k], name, len)) return k;
  return -1;
}

nc_status nc_graph_sym(nc_graph *g, const char *name, int *index) {
  size_t len = strlen(name);
  int k = nc_graph_sym_find(g, name, len);
  if (k < 0) {
    if (!nc_ident_ok(name, len))
      return nc_errorf(NC_E_INVALID, "symbol name '%s' is not an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 chars)", name);
    if (g->nsyms >= NC_MAX_SYMS)
      return nc_errorf(NC_E_INVALID, "too many symbols: '%s' would be number %d (at most %d)", name, g->nsyms + 1, NC_MAX_SYMS);
    if (!(g->syms[g->nsyms] = strdup(name))) return nc_errorf(NC_E_NOMEM, "out of memory");
    k = g->nsyms++;
  }
  if (index) *index = k;
  return NC_OK;
}

int nc_graph_nsyms(const nc_graph *g) { return g->nsyms; }
const char *nc_graph_sym_name(const nc_graph *g, int k) { return k >= 0 && k < g->nsyms ? g->syms[k] : NULL; }

static int64_t nc_graph_intern(nc_graph *g, const char *s) {
  for (uint32_t i = 1; i < g->nstrs; i++)
    if (!strcmp(g->strs[i], s)) return i;
  if (g->nstrs == g->capstrs) {
    char **p = realloc(g->strs, 2 * g->capstrs * sizeof *p);
    if (!p) return -1;
    g->strs = p;
    g->capstrs *= 2;
  }
  if (!(g->strs[g->nstrs] = strdup(s))) return -1;
  return g->nstrs++;
}

const char *nc_graph_str(const nc_graph *g, int64_t sid) {
  return sid > 0 && (uint64_t)sid < g->nstrs ? g->strs[sid] : NULL;
}

// ---- nodes --------------------------------------------------------------------
uint32_t nc_graph_nnodes(const nc_graph *g) { return g->nnodes; }
const nc_node *nc_graph_node(const nc_graph *g, nc_id id) { return id < g->nnodes ? &g->nodes[id] : NULL; }
nc_id nc_graph_input_of(const nc_graph *g, nc_id id, int k) {
  if (id >= g->nnodes || k < 0 || k >= g->nodes[id].nin) return NC_NONE;
  return g->edges[g->nodes[id].in_off + (uint32_t)k];
}

const char *nc_node_name(const nc_graph *g, nc_id id) {
  const nc_node *n = nc_graph_node(g, id);
  if (!n || (n->op != NC_OP_INPUT && n->op != NC_OP_PARAM)) return NULL;
  return nc_graph_str(g, n->ia[0]);
}

nc_type nc_type_of(const nc_graph *g, nc_id id) {
  const nc_node *n = nc_graph_node(g, id);
  nc_type t;
  memset(&t, 0, sizeof t);
  return n ? n->type : t;
}

void nc_node_desc_init(nc_node_desc *d, nc_op op) {
  memset(d, 0, sizeof *d);
  d->op = op;
  nc_attr_spec specs[NC_MAX_ATTRS];
  int n = (unsigned)op < NC_OP_COUNT ? nc_op_attr_specs(op, specs) : 0;
  for (int i = 0; i < n; i++) {
    if (!specs[i].has_default) continue;
    if (specs[i].type == NC_ATTR_FLOAT) d->fa[specs[i].slot] = specs[i].fdefault;
    else d->ia[specs[i].slot] = specs[i].idefault;
  }
}

static uint64_t nc_node_hash(const nc_graph *g, const nc_node *n, const nc_id *ins,
                             const char *str) {
  uint64_t h = nc_hash_u64(NC_HASH_SEED, (uint64_t)n->op);
  h = nc_hash_u64(h, (uint64_t)n->type.dtype);
  h = nc_hash_u64(h, n->type.rank);
  for (int i = 0; i < n->type.rank; i++) {
    h = nc_hash_u64(h, (uint64_t)n->type.dim[i].c);
    h = nc_hash_u64(h, n->type.dim[i].e);
  }
  // String attributes hash by content (below), not by their interned index,
  // which depends on the order strings entered the graph.
  nc_attr_spec specs[NC_MAX_ATTRS];
  int ns = nc_op_attr_specs(n->op, specs);
  for (int i = 0; i < NC_MAX_IATTR; i++) {
    bool is_str = false;
    for (int k = 0; k < ns; k++) is_str |= specs[k].type == NC_ATTR_STR && specs[k].slot == i;
    h = nc_hash_u64(h, is_str ? 0 : (uint64_t)n->ia[i]);
  }
  for (int i = 0; i < NC_MAX_FATTR; i++) {
    uint64_t u;
    memcpy(&u, &n->fa[i], 8);
    h = nc_hash_u64(h, u);
  }
  if (str) h = nc_hash_bytes(h, str, strlen(str));
  h = nc_hash_u64(h, n->nin);
  for (int i = 0; i < n->nin; i++) h = nc_hash_u64(h, g->nodes[ins[i]].hash);
  return h;
}

// Structural equality of a candidate (not yet stored) with node id.
static bool nc_node_same(const nc_graph *g, const nc_node *a, const nc_id *ins, nc_id id) {
  const nc_node *b = &g->nodes[id];
  if (a->hash != b->hash || a->op != b->op || a->nin != b->nin || !nc_type_eq(&a->type, &b->type))
    return false;
  if (memcmp(a->ia, b->ia, sizeof a->ia) || memcmp(a->fa, b->fa, sizeof a->fa)) return false;
  return a->nin == 0 || memcmp(ins, g->edges + b->in_off, a->nin * sizeof *ins) == 0;
}

static nc_id nc_htab_find(const nc_graph *g, const nc_node *n, const nc_id *ins) {
  uint32_t mask = g->hcap - 1;
  for (uint32_t i = (uint32_t)n->hash & mask;; i = (i + 1) & mask) {
    uint32_t v = g->htab[i];
    if (!v) return NC_NONE;
    if (nc_node_same(g, n, ins, v - 1)) return v - 1;
  }
}

static bool nc_htab_insert(nc_graph *g, nc_id id) {
  if (2 * (g->nnodes + 1) > g->hcap) {
    uint32_t ncap = g->hcap * 2;
    uint32_t *t = calloc(ncap, sizeof *t);
    if (!t) return false;
    for (uint32_t i = 0; i < g->hcap; i++) {
      if (!g->htab[i]) continue;
      uint32_t j = (uint32_t)g->nodes[g->htab[i] - 1].hash & (ncap - 1);
      while (t[j]) j = (j + 1) & (ncap - 1);
      t[j] = g->htab[i];
    }
    free(g->htab);
    g->htab = t;
    g->hcap = ncap;
  }
  uint32_t j = (uint32_t)g->nodes[id].hash & (g->hcap - 1);
  while (g->htab[j]) j = (j + 1) & (g->hcap - 1);
  g->htab[j] = id + 1;
  return true;
}

// Checks the attributes of a description against the op's schema (the parts
// that do not depend on shapes; rules check the rest).
static nc_status nc_check_attrs(const nc_graph *g, const nc_node_desc *d, const char *opname) {
  nc_attr_spec specs[NC_MAX_ATTRS];
  int n = nc_op_attr_specs(d->op, specs);
  bool iused[NC_MAX_IATTR] = {0}, fused[NC_MAX_FATTR] = {0};
  for (int i = 0; i < n; i++) {
    const nc_attr_spec *a = &specs[i];
    if (a->type == NC_ATTR_FLOAT) {
      fused[a->slot] = true;
      continue;
    }
    iused[a->slot] = true;
    int64_t v = d->ia[a->slot];
    if (a->type == NC_ATTR_BOOL && v != 0 && v != 1)
      return nc_errorf(NC_E_INVALID, "%s: attribute %s must be 0 or 1, got %lld", opname, a->name, (long long)v);
    if (a->type == NC_ATTR_ENUM && (v < 0 || v >= a->nenum))
      return nc_errorf(NC_E_INVALID, "%s: attribute %s out of range (%lld)", opname, a->name, (long long)v);
    if (a->type == NC_ATTR_STR && !d->str && !nc_graph_str(g, v))
      return nc_errorf(NC_E_INVALID, "%s: attribute %s (a string) is missing", opname, a->name);
  }
  for (int i = 0; i < NC_MAX_IATTR; i++)
    if (!iused[i] && d->ia[i])
      return nc_errorf(NC_E_INVALID, "%s: unused integer attribute slot %d is set", opname, i);
  for (int i = 0; i < NC_MAX_FATTR; i++)
    if (!fused[i] && d->fa[i] != 0)
      return nc_errorf(NC_E_INVALID, "%s: unused float attribute slot %d is set", opname, i);
  return NC_OK;
}

static nc_status nc_check_type_sane(const nc_graph *g, const nc_type *t, const char *what) {
  if ((unsigned)t->dtype >= NC_DTYPE_COUNT) return nc_errorf(NC_E_TYPE, "%s: invalid dtype %d", what, (int)t->dtype);
  if (t->rank > NC_MAX_RANK) return nc_errorf(NC_E_TYPE, "%s: rank %d exceeds the maximum %d", what, t->rank, NC_MAX_RANK);
  uint64_t symmask = g->nsyms >= NC_MAX_SYMS ? ~0ull : ((1ull << (4 * g->nsyms)) - 1);
  for (int i = 0; i < t->rank; i++) {
    nc_dim d = t->dim[i];
    if (d.c < 1 || d.c > NC_MAX_DIM)
      return nc_errorf(NC_E_TYPE, "%s: dimension %d has extent %lld (must be 1..2^40)", what, i, (long long)d.c);
    if (d.e & ~symmask) return nc_errorf(NC_E_TYPE, "%s: dimension %d uses an undeclared symbol", what, i);
  }
  for (int i = t->rank; i < NC_MAX_RANK; i++)
    if (t->dim[i].c || t->dim[i].e) return nc_errorf(NC_E_TYPE, "%s: dims beyond the rank are set", what);
  nc_dim numel;
  if (!nc_type_numel(t, &numel) || numel.c > NC_MAX_ELEMS)
    return nc_errorf(NC_E_TYPE, "%s: element count overflows (more than 2^48 elements)", what);
  return NC_OK;
}

// Builds the candidate node (without storing it): arity, attributes, rule.
static nc_status nc_node_build(const nc_graph *g, const nc_node_desc *d, nc_node *n, nc_id limit) {
  if ((unsigned)d->op >= NC_OP_COUNT) return nc_errorf(NC_E_INVALID, "unknown op id %d", (int)d->op);
  const nc_op_info *info = &nc_op_table[d->op];
  if (d->nin < info->min_inputs || d->nin > info->max_inputs) {
    if (info->min_inputs == info->max_inputs)
      return nc_errorf(NC_E_INVALID, "%s takes %d input%s, got %d", info->name, info->min_inputs,
                       info->min_inputs == 1 ? "" : "s", d->nin);
    return nc_errorf(NC_E_INVALID, "%s takes %d to %d inputs, got %d", info->name, info->min_inputs,
                     info->max_inputs, d->nin);
  }
  const nc_type *intypes[NC_MAX_INPUTS];
  for (int i = 0; i < d->nin; i++) {
    if (d->in[i] >= limit)
      return nc_errorf(NC_E_INVALID, "%s: input %d refers to node %u, which does not exist before it",
                       info->name, i, d->in[i]);
    intypes[i] = &g->nodes[d->in[i]].type;
  }
  NC_TRY(nc_check_attrs(g, d, info->name));
  memset(n, 0, sizeof *n);
  n->op = d->op;
  n->nin = (uint8_t)d->nin;
  memcpy(n->ia, d->ia, sizeof n->ia);
  memcpy(n->fa, d->fa, sizeof n->fa);
  if (info->flags & NC_OPF_DECL) {
    NC_TRY(nc_status_prefix(nc_check_type_sane(g, &d->type, info->name), "declared type of "));
    n->type = d->type;
  }
  NC_TRY(nc_rule_table[d->op](g, d, intypes, &n->type));
  NC_TRY(nc_check_type_sane(g, &n->type, info->name));
  return NC_OK;
}

nc_status nc_graph_add(nc_graph *g, const nc_node_desc *d, nc_id *out) {
  if (out) *out = NC_NONE;
  nc_node n;
  NC_TRY(nc_node_build(g, d, &n, g->nnodes));
  // string attribute: intern (slot of the one STR attribute)
  const char *str = NULL;
  nc_attr_spec specs[NC_MAX_ATTRS];
  int ns = nc_op_attr_specs(d->op, specs);
  for (int i = 0; i < ns; i++) {
    if (specs[i].type != NC_ATTR_STR) continue;
    if (d->str) {
      size_t len = strlen(d->str);
      if (len == 0 || len > 4096)
        return nc_errorf(NC_E_INVALID, "%s: name must have 1 to 4096 bytes", nc_op_table[d->op].name);
      long bad = nc_utf8_invalid_at(d->str, len);
      if (bad >= 0)
        return nc_errorf(NC_E_INVALID, "%s: name has invalid UTF-8 at byte %ld", nc_op_table[d->op].name, bad);
      int64_t sid = nc_graph_intern(g, d->str);
      if (sid < 0) return nc_errorf(NC_E_NOMEM, "out of memory");
      n.ia[specs[i].slot] = sid;
    }
    str = nc_graph_str(g, n.ia[specs[i].slot]);
  }
  n.hash = nc_node_hash(g, &n, d->in, str);
  nc_id found = nc_htab_find(g, &n, d->in);
  if (found != NC_NONE) {
    if (out) *out = found;
    return NC_OK;
  }
  // an input or param name must not be declared twice with different types
  if (d->op == NC_OP_INPUT || d->op == NC_OP_PARAM) {
    for (nc_op o = NC_OP_INPUT; o <= NC_OP_PARAM; o++) {
      nc_id prev = nc_graph_find_leaf(g, o, str);
      if (prev != NC_NONE) {
        char a[160], b[160];
        return nc_errorf(NC_E_TYPE, "%s '%s' is already declared as %s %s, now as %s %s",
                         nc_op_table[d->op].name, str, nc_op_table[o].name,
                         nc_type_str(g, &g->nodes[prev].type, a, sizeof a), nc_op_table[d->op].name,
                         nc_type_str(g, &n.type, b, sizeof b));
      }
    }
  }
  if (g->nnodes >= NC_MAX_NODES) return nc_errorf(NC_E_NOMEM, "graph has too many nodes (%u)", g->nnodes);
  if (g->nnodes == g->capnodes) {
    uint32_t cap = g->capnodes ? 2 * g->capnodes : 64;
    nc_node *p = realloc(g->nodes, cap * sizeof *p);
    if (!p) return nc_errorf(NC_E_NOMEM, "out of memory");
    g->nodes = p;
    g->capnodes = cap;
  }
  if (g->nedges + n.nin > g->capedges) {
    uint32_t cap = g->capedges ? 2 * g->capedges : 128;
    while (cap < g->nedges + n.nin) cap *= 2;
    nc_id *p = realloc(g->edges, cap * sizeof *p);
    if (!p) return nc_errorf(NC_E_NOMEM, "out of memory");
    g->edges = p;
    g->capedges = cap;
  }
  n.in_off = g->nedges;
  if (n.nin) memcpy(g->edges + g->nedges, d->in, n.nin * sizeof *d->in);  // edges may be NULL
  g->nedges += n.nin;
  nc_id id = g->nnodes;
  g->nodes[g->nnodes++] = n;
  if (!nc_htab_insert(g, id)) {
    g->nnodes--;
    g->nedges -= n.nin;
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  if (out) *out = id;
  return NC_OK;
}

nc_id nc_graph_find_leaf(const nc_graph *g, nc_op op, const char *name) {
  if (!name) return NC_NONE;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const nc_node *n = &g->nodes[i];
    if (n->op == op && !strcmp(g->strs[n->ia[0]], name)) return i;
  }
  return NC_NONE;
}

// ---- outputs ------------------------------------------------------------------
nc_status nc_graph_set_output(nc_graph *g, const char *name, nc_id id) {
  size_t len = strlen(name);
  if (len == 0 || len > 4096) return nc_errorf(NC_E_INVALID, "output name must have 1 to 4096 bytes");
  long bad = nc_utf8_invalid_at(name, len);
  if (bad >= 0) return nc_errorf(NC_E_INVALID, "output name has invalid UTF-8 at byte %ld", bad);
  if (id >= g->nnodes) return nc_errorf(NC_E_INVALID, "output '%s' refers to node %u, which does not exist", name, id);
  for (int i = 0; i < g->nouts; i++)
    if (!strcmp(g->outs[i].name, name)) return nc_errorf(NC_E_INVALID, "output '%s' is declared twice", name);
  if (g->nouts == g->capouts) {
    int cap = g->capouts ? 2 * g->capouts : 8;
    struct nc_out *p = realloc(g->outs, (size_t)cap * sizeof *p);
    if (!p) return nc_errorf(NC_E_NOMEM, "out of memory");
    g->outs = p;
    g->capouts = cap;
  }
  if (!(g->outs[g->nouts].name = strdup(name))) return nc_errorf(NC_E_NOMEM, "out of memory");
  g->outs[g->nouts++].id = id;
  return NC_OK;
}

int nc_graph_noutputs(const nc_graph *g) { return g->nouts; }
nc_id nc_graph_output(const nc_graph *g, int k) { return k >= 0 && k < g->nouts ? g->outs[k].id : NC_NONE; }
const char *nc_graph_output_name(const nc_graph *g, int k) { return k >= 0 && k < g->nouts ? g->outs[k].name : NULL; }

// ---- hashing and verification ---------------------------------------------------
uint64_t nc_graph_hash(const nc_graph *g) {
  uint64_t h = nc_hash_bytes(NC_HASH_SEED, g->name, strlen(g->name));
  h = nc_hash_u64(h, (uint64_t)g->nsyms);
  for (int k = 0; k < g->nsyms; k++) h = nc_hash_bytes(h, g->syms[k], strlen(g->syms[k]) + 1);
  h = nc_hash_u64(h, g->nnodes);
  for (uint32_t i = 0; i < g->nnodes; i++) h = nc_hash_u64(h, g->nodes[i].hash);
  h = nc_hash_u64(h, (uint64_t)g->nouts);
  for (int i = 0; i < g->nouts; i++) {
    h = nc_hash_bytes(h, g->outs[i].name, strlen(g->outs[i].name) + 1);
    h = nc_hash_u64(h, g->outs[i].id);
  }
  return h;
}

nc_status nc_graph_verify(const nc_graph *g) {
  for (int k = 0; k < g->nsyms; k++) {
    if (!nc_ident_ok(g->syms[k], strlen(g->syms[k])))
      return nc_errorf(NC_E_INVALID, "verify: symbol %d '%s' is not an identifier", k, g->syms[k]);
    if (nc_graph_sym_find(g, g->syms[k], strlen(g->syms[k])) != k)
      return nc_errorf(NC_E_INVALID, "verify: symbol '%s' declared twice", g->syms[k]);
  }
  for (nc_id id = 0; id < g->nnodes; id++) {
    const nc_node *n = &g->nodes[id];
    if ((unsigned)n->op >= NC_OP_COUNT) return nc_errorf(NC_E_INVALID, "verify: node %%%u has invalid op %d", id, (int)n->op);
    nc_node_desc d;
    memset(&d, 0, sizeof d);
    d.op = n->op;
    d.nin = n->nin;
    if (n->in_off + n->nin > g->nedges) return nc_errorf(NC_E_INVALID, "verify: node %%%u inputs out of range", id);
    if (n->nin) memcpy(d.in, g->edges + n->in_off, n->nin * sizeof(nc_id));
    memcpy(d.ia, n->ia, sizeof d.ia);
    memcpy(d.fa, n->fa, sizeof d.fa);
    d.type = n->type;
    nc_node chk;
    // inputs must precede the node: this is what makes the graph acyclic
    nc_status st = nc_node_build(g, &d, &chk, id);
    if (st) return nc_status_prefix(st, "verify: node %%%u (%s): ", id, nc_op_table[n->op].name);
    if (!nc_type_eq(&chk.type, &n->type))
      return nc_errorf(NC_E_TYPE, "verify: node %%%u (%s): stored type differs from its rule's", id, nc_op_table[n->op].name);
    const char *str = NULL;
    nc_attr_spec specs[NC_MAX_ATTRS];
    int ns = nc_op_attr_specs(n->op, specs);
    for (int i = 0; i < ns; i++)
      if (specs[i].type == NC_ATTR_STR) {
        str = nc_graph_str(g, n->ia[specs[i].slot]);
        if (!str) return nc_errorf(NC_E_INVALID, "verify: node %%%u has no name", id);
      }
    if (nc_node_hash(g, n, g->edges + n->in_off, str) != n->hash)
      return nc_errorf(NC_E_INTERNAL, "verify: node %%%u hash is stale", id);
    if (nc_htab_find(g, n, g->edges + n->in_off) != id)
      return nc_errorf(NC_E_INVALID, "verify: node %%%u duplicates an earlier node (hash-consing broken)", id);
  }
  for (int i = 0; i < g->nouts; i++) {
    if (g->outs[i].id >= g->nnodes)
      return nc_errorf(NC_E_INVALID, "verify: output '%s' refers to missing node %u", g->outs[i].name, g->outs[i].id);
    for (int j = 0; j < i; j++)
      if (!strcmp(g->outs[i].name, g->outs[j].name))
        return nc_errorf(NC_E_INVALID, "verify: output '%s' declared twice", g->outs[i].name);
  }
  return NC_OK;
}

// ---- builder helpers ---------------------------------------------------------------
nc_status nc_graph_error(const nc_graph *g) { return g->err; }
nc_status nc_graph_take_error(nc_graph *g) {
  nc_status st = g->err;
  g->err = NC_OK;
  return st;
}

nc_id nc_build(nc_graph *g, const nc_node_desc *d) {
  if (g->err) return NC_NONE;
  for (int i = 0; i < d->nin; i++)
    if (d->in[i] == NC_NONE) {
      g->err = nc_errorf(NC_E_INVALID, "%s: input %d is missing", nc_op_table[d->op].name, i);
      return NC_NONE;
    }
  nc_id id;
  nc_status st = nc_graph_add(g, d, &id);
  if (st) {
    g->err = st;
    return NC_NONE;
  }
  return id;
}

nc_id nc_leaf(nc_graph *g, nc_op op, const char *name, nc_type type) {
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  d.str = name;
  d.type = type;
  return nc_build(g, &d);
}

nc_id nc_const(nc_graph *g, double value, nc_type type) {
  nc_node_desc d;
  nc_node_desc_init(&d, NC_OP_CONST);
  d.fa[0] = value;
  d.type = type;
  return nc_build(g, &d);
}

static nc_id nc_opn(nc_graph *g, nc_op op, int n, nc_id a, nc_id b, nc_id c) {
  nc_node_desc d;
  nc_node_desc_init(&d, op);
  d.nin = n;
  d.in[0] = a;
  d.in[1] = b;
  d.in[2] = c;
  return nc_build(g, &d);
}

nc_id nc_op1(nc_graph *g, nc_op op, nc_id a) { return nc_opn(g, op, 1, a, 0, 0); }
nc_id nc_op2(nc_graph *g, nc_op op, nc_id a, nc_id b) { return nc_opn(g, op, 2, a, b, 0); }
nc_id nc_op3(nc_graph *g, nc_op op, nc_id a, nc_id b, nc_id c) { return nc_opn(g, op, 3, a, b, c); }

void nc_node_desc_from(const nc_graph *g, nc_id id, nc_node_desc *d) {
  const nc_node *n = &g->nodes[id];
  memset(d, 0, sizeof *d);
  d->op = n->op;
  d->nin = n->nin;
  if (n->nin) memcpy(d->in, g->edges + n->in_off, n->nin * sizeof(nc_id));
  memcpy(d->ia, n->ia, sizeof d->ia);
  memcpy(d->fa, n->fa, sizeof d->fa);
  d->type = n->type;
  nc_attr_spec specs[NC_MAX_ATTRS];
  int ns = nc_op_attr_specs(n->op, specs);
  for (int i = 0; i < ns; i++)
    if (specs[i].type == NC_ATTR_STR) {
      d->str = nc_graph_str(g, n->ia[specs[i].slot]);
      d->ia[specs[i].slot] = 0;
    }
}

nc_graph *nc_graph_new_like(const nc_graph *g) {
  nc_graph *h = nc_graph_new(g->name);
  if (!h) return NULL;
  for (int k = 0; k < g->nsyms; k++) {
    nc_status st = nc_graph_sym(h, g->syms[k], NULL);
    if (st) {
      nc_status_free(st);
      nc_graph_free(h);
      return NULL;
    }
  }
  return h;
}

nc_status nc_graph_copy(const nc_graph *g, nc_graph **out) {
  *out = NULL;
  nc_graph *h = nc_graph_new_like(g);
  if (!h) return nc_errorf(NC_E_NOMEM, "out of memory copying graph '%s'", g->name);
  nc_status st = NC_OK;
  for (nc_id i = 0; i < nc_graph_nnodes(g) && !st; i++) {
    nc_node_desc d;
    nc_node_desc_from(g, i, &d);
    nc_id id;
    st = nc_graph_add(h, &d, &id);
    if (!st && id != i) st = nc_errorf(NC_E_INTERNAL, "copying graph '%s': node %%%u became %%%u", g->name, i, id);
  }
  for (int k = 0; k < nc_graph_noutputs(g) && !st; k++)
    st = nc_graph_set_output(h, nc_graph_output_name(g, k), nc_graph_output(g, k));
  if (st) {
    nc_graph_free(h);
    return st;
  }
  *out = h;
  return NC_OK;
}
