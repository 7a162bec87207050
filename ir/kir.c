// Kernel IR storage, builders, verifier, printer, hash.
#include "ir/kir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const nc_kop_names[] = {
#define X(N, A) #N,
    NC_KOPS(X)
#undef X
};
static const int nc_kop_arities[] = {
#define X(N, A) A,
    NC_KOPS(X)
#undef X
};

const char *nc_kop_name(nc_kop op) { return (unsigned)op < NC_KOP_COUNT ? nc_kop_names[op] : "?"; }
int nc_kop_arity(nc_kop op) { return (unsigned)op < NC_KOP_COUNT ? nc_kop_arities[op] : 0; }
const char *nc_ktemplate_name(nc_ktemplate t) { return t == NC_KT_MATMUL ? "matmul" : t == NC_KT_ATTENTION ? "attention" : t == NC_KT_SCATTER_ADD ? "scatter_add" : "?"; }

bool nc_kernel_is_template(const nc_kernel *k) {
  return k->body != NC_KS_NONE && k->s[k->body].kind == NC_KS_CALL && k->s[k->body].next == NC_KS_NONE;
}

void nc_kernel_init(nc_kernel *k, const char *name) {
  memset(k, 0, sizeof *k);
  snprintf(k->name, sizeof k->name, "%s", name);
  k->body = NC_KS_NONE;
}

void nc_kernel_free(nc_kernel *k) {
  free(k->x);
  free(k->s);
  memset(k, 0, sizeof *k);
}

int nc_kernel_buf(nc_kernel *k, const char *name, nc_dtype dt, bool written) {
  if (k->nbufs >= NC_KERNEL_MAX_BUFS) {
    k->oom = true;
    return 0;
  }
  int b = k->nbufs++;
  snprintf(k->bufs[b].name, sizeof k->bufs[b].name, "%s", name);
  k->bufs[b].dtype = dt;
  k->bufs[b].written = written;
  return b;
}

int nc_kernel_arg(nc_kernel *k, const char *symbol) {
  for (int i = 0; i < k->nargs; i++)
    if (!strcmp(k->args[i], symbol)) return i;
  if (k->nargs >= NC_KERNEL_MAX_ARGS) {
    k->oom = true;
    return 0;
  }
  snprintf(k->args[k->nargs], sizeof k->args[0], "%s", symbol);
  return k->nargs++;
}

int nc_kernel_var(nc_kernel *k) { return k->nvars++; }

int nc_kernel_acc(nc_kernel *k, nc_dtype dt) {
  if (k->naccs >= NC_KERNEL_MAX_ACCS) {
    k->oom = true;
    return 0;
  }
  k->accs[k->naccs] = dt;
  return k->naccs++;
}

static nc_kx nc_kx_new(nc_kernel *k, nc_kexpr e) {
  if (k->nx == k->capx) {
    int cap = k->capx ? 2 * k->capx : 64;
    nc_kexpr *p = realloc(k->x, (size_t)cap * sizeof *p);
    if (!p) {
      k->oom = true;
      return 0;
    }
    k->x = p;
    k->capx = cap;
  }
  k->x[k->nx] = e;
  return k->nx++;
}

static nc_kexpr nc_kx_blank(nc_kx_kind kind, nc_dtype dt) {
  nc_kexpr e;
  memset(&e, 0, sizeof e);
  e.kind = kind;
  e.dtype = dt;
  e.a = e.b = e.c = NC_KX_NONE;
  return e;
}

const nc_kexpr *nc_kx_get(const nc_kernel *k, nc_kx x) { return x >= 0 && x < k->nx ? &k->x[x] : NULL; }

nc_kx nc_kx_const_f(nc_kernel *k, nc_dtype dt, double v) {
  nc_kexpr e = nc_kx_blank(NC_KX_CONST, dt);
  e.fval = v;
  e.ival = (int64_t)v;
  return nc_kx_new(k, e);
}

nc_kx nc_kx_const_i(nc_kernel *k, nc_dtype dt, int64_t v) {
  nc_kexpr e = nc_kx_blank(NC_KX_CONST, dt);
  e.ival = v;
  e.fval = (double)v;
  return nc_kx_new(k, e);
}

nc_kx nc_kx_idx(nc_kernel *k, int64_t v) { return nc_kx_const_i(k, NC_I64, v); }

nc_kx nc_kx_arg(nc_kernel *k, int arg) {
  nc_kexpr e = nc_kx_blank(NC_KX_ARG, NC_I64);
  e.ival = arg;
  return nc_kx_new(k, e);
}

nc_kx nc_kx_var(nc_kernel *k, int var) {
  nc_kexpr e = nc_kx_blank(NC_KX_VAR, NC_I64);
  e.ival = var;
  return nc_kx_new(k, e);
}

nc_kx nc_kx_load(nc_kernel *k, int buf, nc_kx index) {
  nc_kexpr e = nc_kx_blank(NC_KX_LOAD, k->bufs[buf].dtype);
  e.ival = buf;
  e.a = index;
  return nc_kx_new(k, e);
}

nc_kx nc_kx_unary(nc_kernel *k, nc_kop op, nc_kx a) {
  nc_kexpr e = nc_kx_blank(NC_KX_UNARY, k->x[a].dtype);
  e.op = op;
  e.a = a;
  return nc_kx_new(k, e);
}

nc_kx nc_kx_powc(nc_kernel *k, nc_kx a, double p) {
  nc_kx x = nc_kx_unary(k, NC_KOP_POWC, a);
  if (!k->oom) k->x[x].fval = p;
  return x;
}

static bool nc_kx_is_iconst(const nc_kernel *k, nc_kx x, int64_t *v) {
  if (k->x[x].kind != NC_KX_CONST || k->x[x].dtype != NC_I64) return false;
  *v = k->x[x].ival;
  return true;
}

// Structural equality of two i64 index expressions (small trees).
static bool nc_kx_same(const nc_kernel *k, nc_kx a, nc_kx b, int depth) {
  if (a == b) return true;
  if (depth > 16 || a < 0 || b < 0) return false;
  const nc_kexpr *x = &k->x[a], *y = &k->x[b];
  if (x->kind != y->kind || x->dtype != y->dtype || x->op != y->op || x->ival != y->ival) return false;
  switch (x->kind) {
    case NC_KX_CONST: return x->fval == y->fval || x->dtype == NC_I64;
    case NC_KX_ARG: case NC_KX_VAR: return true;
    case NC_KX_BINARY: return nc_kx_same(k, x->a, y->a, depth + 1) && nc_kx_same(k, x->b, y->b, depth + 1);
    default: return false;
  }
}

nc_kx nc_kx_binary(nc_kernel *k, nc_kop op, nc_kx a, nc_kx b) {
  if (k->oom) return 0;
  // (x / y) * y + x % y = x: what re-flattening an unflattened index gives
  if (op == NC_KOP_ADD && k->x[a].kind == NC_KX_BINARY && k->x[a].op == NC_KOP_MUL && k->x[b].kind == NC_KX_BINARY &&
      k->x[b].op == NC_KOP_IMOD) {
    const nc_kexpr *m = &k->x[a], *r = &k->x[b];
    const nc_kexpr *d = &k->x[m->a];
    if (d->kind == NC_KX_BINARY && d->op == NC_KOP_IDIV && nc_kx_same(k, d->a, r->a, 0) && nc_kx_same(k, d->b, r->b, 0) &&
        nc_kx_same(k, m->b, r->b, 0))
      return r->a;
  }
  int64_t va = 0, vb = 0;
  bool ca = nc_kx_is_iconst(k, a, &va), cb = nc_kx_is_iconst(k, b, &vb);
  // fold the index arithmetic that lowering produces in bulk
  if (ca && cb) {
    switch (op) {
      case NC_KOP_ADD: return nc_kx_idx(k, va + vb);
      case NC_KOP_SUB: return nc_kx_idx(k, va - vb);
      case NC_KOP_MUL: return nc_kx_idx(k, va * vb);
      case NC_KOP_IDIV: if (vb) return nc_kx_idx(k, va / vb); break;
      case NC_KOP_IMOD: if (vb) return nc_kx_idx(k, va % vb); break;
      default: break;
    }
  }
  if (op == NC_KOP_ADD && ca && va == 0) return b;
  if ((op == NC_KOP_ADD || op == NC_KOP_SUB) && cb && vb == 0) return a;
  if (op == NC_KOP_MUL && ((ca && va == 1) || (cb && vb == 1))) return ca && va == 1 ? b : a;
  if (op == NC_KOP_MUL && ((ca && va == 0) || (cb && vb == 0))) return nc_kx_idx(k, 0);
  if (op == NC_KOP_IDIV && cb && vb == 1) return a;
  if (op == NC_KOP_IMOD && cb && vb == 1) return nc_kx_idx(k, 0);
  bool cmp = op == NC_KOP_EQ || op == NC_KOP_NE || op == NC_KOP_LT || op == NC_KOP_LE || op == NC_KOP_GT || op == NC_KOP_GE;
  nc_kexpr e = nc_kx_blank(NC_KX_BINARY, cmp ? NC_BOOL : k->x[a].dtype);
  e.op = op;
  e.a = a;
  e.b = b;
  return nc_kx_new(k, e);
}

nc_kx nc_kx_select(nc_kernel *k, nc_kx c, nc_kx a, nc_kx b) {
  nc_kexpr e = nc_kx_blank(NC_KX_SELECT, k->x[a].dtype);
  e.a = c;
  e.b = a;
  e.c = b;
  return nc_kx_new(k, e);
}

nc_kx nc_kx_cast(nc_kernel *k, nc_kx a, nc_dtype dt) {
  if (!k->oom && k->x[a].dtype == dt) return a;
  nc_kexpr e = nc_kx_blank(NC_KX_CAST, dt);
  e.a = a;
  return nc_kx_new(k, e);
}

nc_kx nc_kx_acc(nc_kernel *k, int acc) {
  nc_kexpr e = nc_kx_blank(NC_KX_ACC, k->accs[acc]);
  e.ival = acc;
  return nc_kx_new(k, e);
}

// ---- statements -------------------------------------------------------------------
nc_kstmt *nc_ks_get(const nc_kernel *k, nc_ks s) { return s >= 0 && s < k->ns ? &k->s[s] : NULL; }

static nc_ks nc_ks_new(nc_kernel *k, nc_ks **tail, nc_kstmt st) {
  // *tail may point into k->s, which realloc can move: remember it as an offset
  ptrdiff_t off = -1;
  if (*tail >= (nc_ks *)k->s && *tail < (nc_ks *)(k->s + k->ns)) off = (char *)*tail - (char *)k->s;
  if (k->ns == k->caps) {
    int cap = k->caps ? 2 * k->caps : 32;
    nc_kstmt *p = realloc(k->s, (size_t)cap * sizeof *p);
    if (!p) {
      k->oom = true;
      return NC_KS_NONE;
    }
    k->s = p;
    k->caps = cap;
  }
  if (off >= 0) *tail = (nc_ks *)((char *)k->s + off);
  st.next = NC_KS_NONE;
  nc_ks id = k->ns;
  k->s[k->ns++] = st;
  **tail = id;
  *tail = &k->s[id].next;
  return id;
}

static nc_kstmt nc_ks_blank(nc_ks_kind kind) {
  nc_kstmt s;
  memset(&s, 0, sizeof s);
  s.kind = kind;
  s.body = NC_KS_NONE;
  s.begin = s.end = s.index = s.value = NC_KX_NONE;
  return s;
}

nc_ks nc_ks_for(nc_kernel *k, nc_ks **tail, int var, nc_kx begin, nc_kx end) {
  nc_kstmt s = nc_ks_blank(NC_KS_FOR);
  s.var = var;
  s.begin = begin;
  s.end = end;
  return nc_ks_new(k, tail, s);
}

nc_ks nc_ks_store(nc_kernel *k, nc_ks **tail, int buf, nc_kx index, nc_kx value) {
  nc_kstmt s = nc_ks_blank(NC_KS_STORE);
  s.buf = buf;
  s.index = index;
  s.value = value;
  return nc_ks_new(k, tail, s);
}

nc_ks nc_ks_acc_init(nc_kernel *k, nc_ks **tail, int acc, nc_kx value) {
  nc_kstmt s = nc_ks_blank(NC_KS_ACC_INIT);
  s.acc = acc;
  s.value = value;
  return nc_ks_new(k, tail, s);
}

nc_ks nc_ks_acc_update(nc_kernel *k, nc_ks **tail, int acc, nc_kop op, nc_kx value) {
  nc_kstmt s = nc_ks_blank(NC_KS_ACC_UPDATE);
  s.acc = acc;
  s.op = op;
  s.value = value;
  return nc_ks_new(k, tail, s);
}

nc_ks nc_ks_call(nc_kernel *k, nc_ks **tail, nc_ktemplate t, const nc_kx *args, int nargs, const int *bufs, int nbufs) {
  nc_kstmt s = nc_ks_blank(NC_KS_CALL);
  s.tmpl = t;
  s.nargs = nargs > NC_KCALL_MAX_ARGS ? NC_KCALL_MAX_ARGS : nargs;
  s.ncbufs = nbufs > NC_KCALL_MAX_BUFS ? NC_KCALL_MAX_BUFS : nbufs;
  memcpy(s.args, args, (size_t)s.nargs * sizeof *args);
  memcpy(s.cbufs, bufs, (size_t)s.ncbufs * sizeof *bufs);
  if (nargs > NC_KCALL_MAX_ARGS || nbufs > NC_KCALL_MAX_BUFS) k->oom = true;
  return nc_ks_new(k, tail, s);
}

nc_ks *nc_ks_body_slot(nc_kernel *k, nc_ks loop) { return &k->s[loop].body; }

// ---- verify -----------------------------------------------------------------------
static nc_status nc_kx_check(const nc_kernel *k, nc_kx x, const char *where) {
  if (x < 0 || x >= k->nx) return nc_errorf(NC_E_INTERNAL, "kernel %s: %s refers to missing expression %d", k->name, where, x);
  const nc_kexpr *e = &k->x[x];
  nc_kx kids[3] = {e->a, e->b, e->c};
  int need = e->kind == NC_KX_LOAD || e->kind == NC_KX_UNARY || e->kind == NC_KX_CAST ? 1
             : e->kind == NC_KX_BINARY ? 2 : e->kind == NC_KX_SELECT ? 3 : 0;
  for (int i = 0; i < need; i++)
    if (kids[i] < 0 || kids[i] >= x)  // operands precede users: expressions form a DAG
      return nc_errorf(NC_E_INTERNAL, "kernel %s: expression %d has a bad operand %d", k->name, x, kids[i]);
  switch (e->kind) {
    case NC_KX_ARG: if (e->ival < 0 || e->ival >= k->nargs) return nc_errorf(NC_E_INTERNAL, "kernel %s: arg %lld out of range", k->name, (long long)e->ival); break;
    case NC_KX_VAR: if (e->ival < 0 || e->ival >= k->nvars) return nc_errorf(NC_E_INTERNAL, "kernel %s: var %lld out of range", k->name, (long long)e->ival); break;
    case NC_KX_ACC: if (e->ival < 0 || e->ival >= k->naccs) return nc_errorf(NC_E_INTERNAL, "kernel %s: acc %lld out of range", k->name, (long long)e->ival); break;
    case NC_KX_LOAD:
      if (e->ival < 0 || e->ival >= k->nbufs) return nc_errorf(NC_E_INTERNAL, "kernel %s: buffer %lld out of range", k->name, (long long)e->ival);
      if (k->x[e->a].dtype != NC_I64) return nc_errorf(NC_E_INTERNAL, "kernel %s: load index must be i64", k->name);
      break;
    case NC_KX_UNARY:
    case NC_KX_BINARY:
      if (nc_kop_arity(e->op) != (e->kind == NC_KX_UNARY ? 1 : 2))
        return nc_errorf(NC_E_INTERNAL, "kernel %s: %s has the wrong arity", k->name, nc_kop_name(e->op));
      if (e->kind == NC_KX_BINARY && k->x[e->a].dtype != k->x[e->b].dtype)
        return nc_errorf(NC_E_INTERNAL, "kernel %s: %s operands differ in dtype (expr %d)", k->name, nc_kop_name(e->op), x);
      break;
    case NC_KX_SELECT:
      if (k->x[e->a].dtype != NC_BOOL || k->x[e->b].dtype != k->x[e->c].dtype)
        return nc_errorf(NC_E_INTERNAL, "kernel %s: select types are wrong (expr %d)", k->name, x);
      break;
    default: break;
  }
  return NC_OK;
}

static nc_status nc_ks_check(const nc_kernel *k, nc_ks s, int depth) {
  if (depth > 64) return nc_errorf(NC_E_INTERNAL, "kernel %s: loops nested too deeply", k->name);
  for (int guard = 0; s != NC_KS_NONE; s = k->s[s].next, guard++) {
    if (s < 0 || s >= k->ns || guard > k->ns) return nc_errorf(NC_E_INTERNAL, "kernel %s: bad statement link %d", k->name, s);
    const nc_kstmt *t = &k->s[s];
    switch (t->kind) {
      case NC_KS_FOR:
        if (t->var < 0 || t->var >= k->nvars) return nc_errorf(NC_E_INTERNAL, "kernel %s: loop var out of range", k->name);
        NC_TRY(nc_kx_check(k, t->begin, "loop begin"));
        NC_TRY(nc_kx_check(k, t->end, "loop end"));
        NC_TRY(nc_ks_check(k, t->body, depth + 1));
        break;
      case NC_KS_STORE:
        if (t->buf < 0 || t->buf >= k->nbufs || !k->bufs[t->buf].written)
          return nc_errorf(NC_E_INTERNAL, "kernel %s: store to a buffer that is not an output", k->name);
        NC_TRY(nc_kx_check(k, t->index, "store index"));
        NC_TRY(nc_kx_check(k, t->value, "store value"));
        if (k->x[t->value].dtype != k->bufs[t->buf].dtype)
          return nc_errorf(NC_E_INTERNAL, "kernel %s: store of %s into %s buffer '%s'", k->name,
                           nc_dtype_name(k->x[t->value].dtype), nc_dtype_name(k->bufs[t->buf].dtype), k->bufs[t->buf].name);
        break;
      case NC_KS_ACC_INIT:
      case NC_KS_ACC_UPDATE:
        if (t->acc < 0 || t->acc >= k->naccs) return nc_errorf(NC_E_INTERNAL, "kernel %s: acc out of range", k->name);
        NC_TRY(nc_kx_check(k, t->value, "accumulator value"));
        if (k->x[t->value].dtype != k->accs[t->acc]) return nc_errorf(NC_E_INTERNAL, "kernel %s: accumulator dtype mismatch", k->name);
        break;
      case NC_KS_CALL:
        for (int i = 0; i < t->nargs; i++) NC_TRY(nc_kx_check(k, t->args[i], "call argument"));
        for (int i = 0; i < t->ncbufs; i++)
          if (t->cbufs[i] < 0 || t->cbufs[i] >= k->nbufs) return nc_errorf(NC_E_INTERNAL, "kernel %s: call buffer out of range", k->name);
        break;
    }
  }
  return NC_OK;
}

nc_status nc_kernel_verify(const nc_kernel *k) {
  if (k->oom) return nc_errorf(NC_E_NOMEM, "kernel %s: out of memory (or a fixed limit) while building", k->name);
  return nc_ks_check(k, k->body, 0);
}

// ---- print ---------------------------------------------------------------------------
static void nc_kx_print(const nc_kernel *k, nc_kx x, nc_buf *b) {
  const nc_kexpr *e = &k->x[x];
  char f[32];
  switch (e->kind) {
    case NC_KX_CONST:
      if (nc_dtype_is_float(e->dtype)) {
        nc_fmt_double(f, e->fval);
        nc_buf_printf(b, "%s", f);
      } else {
        nc_buf_printf(b, "%lld", (long long)e->ival);
      }
      if (e->dtype != NC_I64 && e->dtype != NC_F32) nc_buf_printf(b, ":%s", nc_dtype_name(e->dtype));
      break;
    case NC_KX_ARG: nc_buf_printf(b, "%s", k->args[e->ival]); break;
    case NC_KX_VAR: nc_buf_printf(b, "i%lld", (long long)e->ival); break;
    case NC_KX_ACC: nc_buf_printf(b, "acc%lld", (long long)e->ival); break;
    case NC_KX_LOAD:
      nc_buf_printf(b, "%s[", k->bufs[e->ival].name);
      nc_kx_print(k, e->a, b);
      nc_buf_puts(b, "]");
      break;
    case NC_KX_UNARY:
      nc_buf_printf(b, "%s(", nc_kop_name(e->op));
      nc_kx_print(k, e->a, b);
      if (e->op == NC_KOP_POWC) {
        nc_fmt_double(f, e->fval);
        nc_buf_printf(b, ", %s", f);
      }
      nc_buf_puts(b, ")");
      break;
    case NC_KX_BINARY: {
      const char *sym = e->op == NC_KOP_ADD ? " + " : e->op == NC_KOP_SUB ? " - " : e->op == NC_KOP_MUL ? "*"
                        : e->op == NC_KOP_IDIV ? " / " : e->op == NC_KOP_IMOD ? " % " : NULL;
      if (sym && e->dtype == NC_I64) {
        nc_buf_puts(b, "(");
        nc_kx_print(k, e->a, b);
        nc_buf_puts(b, sym);
        nc_kx_print(k, e->b, b);
        nc_buf_puts(b, ")");
      } else {
        nc_buf_printf(b, "%s(", nc_kop_name(e->op));
        nc_kx_print(k, e->a, b);
        nc_buf_puts(b, ", ");
        nc_kx_print(k, e->b, b);
        nc_buf_puts(b, ")");
      }
      break;
    }
    case NC_KX_SELECT:
      nc_buf_puts(b, "select(");
      nc_kx_print(k, e->a, b);
      nc_buf_puts(b, ", ");
      nc_kx_print(k, e->b, b);
      nc_buf_puts(b, ", ");
      nc_kx_print(k, e->c, b);
      nc_buf_puts(b, ")");
      break;
    case NC_KX_CAST:
      nc_buf_printf(b, "%s(", nc_dtype_name(e->dtype));
      nc_kx_print(k, e->a, b);
      nc_buf_puts(b, ")");
      break;
  }
}

static void nc_ks_print(const nc_kernel *k, nc_ks s, int indent, nc_buf *b) {
  for (; s != NC_KS_NONE; s = k->s[s].next) {
    const nc_kstmt *t = &k->s[s];
    nc_buf_printf(b, "%*s", indent, "");
    switch (t->kind) {
      case NC_KS_FOR:
        nc_buf_printf(b, "for i%d in [", t->var);
        nc_kx_print(k, t->begin, b);
        nc_buf_puts(b, ", ");
        nc_kx_print(k, t->end, b);
        nc_buf_puts(b, ")");
        if (t->sched & NC_KSCHED_PARALLEL) nc_buf_puts(b, " parallel");
        if (t->sched & NC_KSCHED_VECTORIZE) nc_buf_printf(b, " vectorize(%d)", t->vec);
        if (t->sched & NC_KSCHED_UNROLL) nc_buf_printf(b, " unroll(%d)", t->unroll);
        nc_buf_puts(b, " {\n");
        nc_ks_print(k, t->body, indent + 2, b);
        nc_buf_printf(b, "%*s}\n", indent, "");
        break;
      case NC_KS_STORE:
        nc_buf_printf(b, "%s[", k->bufs[t->buf].name);
        nc_kx_print(k, t->index, b);
        nc_buf_puts(b, "] = ");
        nc_kx_print(k, t->value, b);
        nc_buf_puts(b, "\n");
        break;
      case NC_KS_ACC_INIT:
        nc_buf_printf(b, "acc%d = ", t->acc);
        nc_kx_print(k, t->value, b);
        nc_buf_puts(b, "\n");
        break;
      case NC_KS_ACC_UPDATE:
        nc_buf_printf(b, "acc%d = %s(acc%d, ", t->acc, nc_kop_name(t->op), t->acc);
        nc_kx_print(k, t->value, b);
        nc_buf_puts(b, ")\n");
        break;
      case NC_KS_CALL:
        nc_buf_printf(b, "call %s(", nc_ktemplate_name(t->tmpl));
        for (int i = 0; i < t->ncbufs; i++) nc_buf_printf(b, "%s%s", i ? ", " : "", k->bufs[t->cbufs[i]].name);
        for (int i = 0; i < t->nargs; i++) {
          nc_buf_puts(b, ", ");
          nc_kx_print(k, t->args[i], b);
        }
        nc_buf_puts(b, ")\n");
        break;
    }
  }
}

void nc_kernel_print(const nc_kernel *k, nc_buf *b) {
  nc_buf_printf(b, "kernel %s(", k->name);
  for (int i = 0; i < k->nbufs; i++)
    nc_buf_printf(b, "%s%s %s%s", i ? ", " : "", k->bufs[i].written ? "out" : "in", nc_dtype_name(k->bufs[i].dtype), "*"),
        nc_buf_printf(b, "%s", k->bufs[i].name);
  for (int i = 0; i < k->nargs; i++) nc_buf_printf(b, ", i64 %s", k->args[i]);
  nc_buf_puts(b, ") {\n");
  for (int i = 0; i < k->naccs; i++) nc_buf_printf(b, "  %s acc%d\n", nc_dtype_name(k->accs[i]), i);
  nc_ks_print(k, k->body, 2, b);
  nc_buf_puts(b, "}\n");
}

uint64_t nc_kernel_hash(const nc_kernel *k) {
  nc_buf b;
  nc_buf_init(&b);
  nc_kernel_print(k, &b);
  uint64_t h = nc_hash_bytes(NC_HASH_SEED, b.data ? b.data : "", b.len);
  nc_buf_free(&b);
  return h;
}
