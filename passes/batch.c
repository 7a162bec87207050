// The update-batch pattern (NC_PATTERN_UPDATE_BATCH, passes/pass.h): a pass
// over a finished plan that merges optimizer-update kernels with identical
// code (the same update of same-shaped parameters of a group) into one
// kernel, their loop nests side by side: one launch. docs/runtime.md has the
// rules (hoisting to the first member, sinking to the last).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/lower.h"

// Copies kernel src's statements to the end of dst's body: buffers mapped by
// graph node (pk_src -> pk_dst, shared nodes share a buffer), symbol
// arguments by name, loop variables and accumulators renumbered.
typedef struct {
  nc_kernel *d;
  const nc_kernel *s;
  int bufmap[NC_KERNEL_MAX_BUFS], argmap[NC_KERNEL_MAX_ARGS];
  int var_off, acc_off;
  nc_kx *xmap;  // per source expression: its copy, or NC_KX_NONE
} nc_lw_copy;

static nc_kx nc_lw_copy_x(nc_lw_copy *c, nc_kx x) {
  if (x == NC_KX_NONE) return NC_KX_NONE;
  if (c->xmap[x] != NC_KX_NONE) return c->xmap[x];
  const nc_kexpr *e = nc_kx_get(c->s, x);
  nc_kernel *d = c->d;
  nc_kx r;
  switch (e->kind) {
    case NC_KX_CONST: r = nc_dtype_is_float(e->dtype) ? nc_kx_const_f(d, e->dtype, e->fval) : nc_kx_const_i(d, e->dtype, e->ival); break;
    case NC_KX_ARG: r = nc_kx_arg(d, c->argmap[e->ival]); break;
    case NC_KX_VAR: r = nc_kx_var(d, c->var_off + (int)e->ival); break;
    case NC_KX_ACC: r = nc_kx_acc(d, c->acc_off + (int)e->ival); break;
    case NC_KX_LOAD: r = nc_kx_load(d, c->bufmap[e->ival], nc_lw_copy_x(c, e->a)); break;
    case NC_KX_UNARY:
      r = e->op == NC_KOP_POWC ? nc_kx_powc(d, nc_lw_copy_x(c, e->a), e->fval) : nc_kx_unary(d, e->op, nc_lw_copy_x(c, e->a));
      break;
    case NC_KX_BINARY: r = nc_kx_binary(d, e->op, nc_lw_copy_x(c, e->a), nc_lw_copy_x(c, e->b)); break;
    case NC_KX_SELECT: r = nc_kx_select(d, nc_lw_copy_x(c, e->a), nc_lw_copy_x(c, e->b), nc_lw_copy_x(c, e->c)); break;
    case NC_KX_CAST: r = nc_kx_cast(d, nc_lw_copy_x(c, e->a), e->dtype); break;
    default: r = nc_kx_idx(d, 0); d->oom = true; break;
  }
  return c->xmap[x] = r;
}

static void nc_lw_copy_s(nc_lw_copy *c, nc_ks s, nc_ks **tail) {
  nc_kernel *d = c->d;
  for (; s != NC_KS_NONE; s = nc_ks_get(c->s, s)->next) {
    const nc_kstmt t = *nc_ks_get(c->s, s);
    switch (t.kind) {
      case NC_KS_FOR: {
        nc_ks l = nc_ks_for(d, tail, c->var_off + t.var, nc_lw_copy_x(c, t.begin), nc_lw_copy_x(c, t.end));
        if (l == NC_KS_NONE) return;
        nc_kstmt *ls = nc_ks_get(d, l);
        ls->sched = t.sched, ls->vec = t.vec, ls->unroll = t.unroll;
        nc_ks *body = nc_ks_body_slot(d, l);
        nc_lw_copy_s(c, t.body, &body);
        break;
      }
      case NC_KS_STORE: nc_ks_store(d, tail, c->bufmap[t.buf], nc_lw_copy_x(c, t.index), nc_lw_copy_x(c, t.value)); break;
      case NC_KS_ACC_INIT: nc_ks_acc_init(d, tail, c->acc_off + t.acc, nc_lw_copy_x(c, t.value)); break;
      case NC_KS_ACC_UPDATE: nc_ks_acc_update(d, tail, c->acc_off + t.acc, t.op, nc_lw_copy_x(c, t.value)); break;
      default: d->oom = true; return;  // templates are never batched
    }
  }
}

// Appends kernel pk_src after pk_dst's statements; false when it does not fit
// (buffers, arguments, accumulators, 64 loop variables) or memory ran out.
static bool nc_lw_append(nc_plan_kernel *pk_dst, const nc_plan_kernel *pk_src) {
  nc_kernel *d = &pk_dst->k;
  const nc_kernel *s = &pk_src->k;
  int newb = 0;
  for (int b = 0; b < s->nbufs; b++) {
    bool found = false;
    for (int q = 0; q < d->nbufs && !found; q++) found = pk_dst->buf_node[q] == pk_src->buf_node[b];
    newb += !found;
  }
  int newa = 0;
  for (int a = 0; a < s->nargs; a++) {
    bool found = false;
    for (int q = 0; q < d->nargs && !found; q++) found = !strcmp(d->args[q], s->args[a]);
    newa += !found;
  }
  if (d->nbufs + newb > NC_KERNEL_MAX_BUFS || d->nargs + newa > NC_KERNEL_MAX_ARGS || d->naccs + s->naccs > NC_KERNEL_MAX_ACCS ||
      d->nvars + s->nvars > 64)
    return false;
  nc_lw_copy c = {d, s, {0}, {0}, d->nvars, d->naccs, malloc(((size_t)s->nx + 1) * sizeof(nc_kx))};
  if (!c.xmap) return false;
  for (int i = 0; i < s->nx; i++) c.xmap[i] = NC_KX_NONE;
  for (int b = 0; b < s->nbufs; b++) {
    int q = 0;
    while (q < d->nbufs && pk_dst->buf_node[q] != pk_src->buf_node[b]) q++;
    if (q == d->nbufs) {
      q = nc_kernel_buf(d, s->bufs[b].name, s->bufs[b].dtype, s->bufs[b].written);
      pk_dst->buf_node[q] = pk_src->buf_node[b];
    }
    c.bufmap[b] = q;
  }
  for (int a = 0; a < s->nargs; a++) c.argmap[a] = nc_kernel_arg(d, s->args[a]);
  for (int v = 0; v < s->nvars; v++) nc_kernel_var(d);
  for (int a = 0; a < s->naccs; a++) nc_kernel_acc(d, s->accs[a]);
  nc_ks *tail = &d->body;
  while (*tail != NC_KS_NONE) tail = &nc_ks_get(d, *tail)->next;
  nc_lw_copy_s(&c, s->body, &tail);
  free(c.xmap);
  return !d->oom;
}

// A kernel that may be batched: one parallel loop nest (no serial statement
// every thread would run), writing at least one graph output.
static bool nc_lw_batchable(const nc_plan_kernel *pk, const unsigned char *outp) {
  const nc_kernel *k = &pk->k;
  if (nc_kernel_is_template(k) || k->body == NC_KS_NONE) return false;
  const nc_kstmt *t = nc_ks_get(k, k->body);
  if (t->next != NC_KS_NONE || t->kind != NC_KS_FOR || !(t->sched & NC_KSCHED_PARALLEL)) return false;
  for (int b = 0; b < k->nbufs; b++)
    if (k->bufs[b].written && outp[pk->buf_node[b]]) return true;
  return false;
}

// Can kernel j run at position P? Everything it reads is written before P,
// nothing reads what it writes before P+1, and it shares no written node with
// the kernels already in the batch (bs: per node, 1 read, 2 written by the batch).
static bool nc_lw_batch_ok(const nc_plan_kernel *pk, int64_t P, const int64_t *prod, const int64_t *minread,
                           const unsigned char *bs) {
  const nc_kernel *k = &pk->k;
  for (int b = 0; b < k->nbufs; b++) {
    nc_id n = pk->buf_node[b];
    if (k->bufs[b].written ? (minread[n] <= P || bs[n]) : (prod[n] >= P || bs[n] == 2)) return false;
  }
  return true;
}

nc_status nc_plan_batch_updates(const nc_graph *g, nc_plan *p) {
  uint32_t nn = nc_graph_nnodes(g);
  int nk = p->nkernels;
  int64_t *prod = malloc((nn ? nn : 1) * sizeof *prod), *minread = malloc((nn ? nn : 1) * sizeof *minread);
  uint64_t *key = calloc(nk ? (size_t)nk : 1, sizeof *key);
  unsigned char *outp = calloc(nn ? nn : 1, 1), *bs = calloc(nn ? nn : 1, 1), *gone = calloc(nk ? (size_t)nk : 1, 1);
  int *mem = malloc((nk ? (size_t)nk : 1) * sizeof *mem);
  nc_status st = NC_OK;
  if (!prod || !minread || !key || !outp || !bs || !gone || !mem) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  for (int k = 0; k < nc_graph_noutputs(g); k++) outp[nc_graph_output(g, k)] = 1;
  // positions are the kernels' node ids (the plan runs in id order)
  for (nc_id i = 0; i < nn; i++) prod[i] = -1, minread[i] = INT64_MAX;
  for (int q = 0; q < nk; q++) {
    const nc_plan_kernel *pk = &p->kernels[q];
    for (int b = 0; b < pk->k.nbufs; b++) {
      nc_id n = pk->buf_node[b];
      if (pk->k.bufs[b].written) prod[n] = pk->node;
      else if ((int64_t)pk->node < minread[n]) minread[n] = pk->node;
    }
    if (!nc_lw_batchable(pk, outp)) continue;
    nc_kernel canon = pk->k;  // positional names, as the CPU backend's code sharing
    snprintf(canon.name, sizeof canon.name, "k");
    for (int b = 0; b < canon.nbufs; b++) snprintf(canon.bufs[b].name, sizeof canon.bufs[b].name, "b%d", b);
    key[q] = nc_kernel_hash(&canon) | 1;  // 0: not batchable
  }
  for (int pass = 0; pass < 2; pass++) {  // 0: join the first member (hoist), 1: the last (sink)
    for (int h0 = 0; h0 < nk; h0++) {
      int h = pass ? nk - 1 - h0 : h0;
      if (!key[h] || gone[h]) continue;
      nc_plan_kernel *host = &p->kernels[h];
      int64_t P = host->node;
      int nm = 0;
      for (int b = 0; b < host->k.nbufs; b++) bs[host->buf_node[b]] = host->k.bufs[b].written ? 2 : (bs[host->buf_node[b]] ? bs[host->buf_node[b]] : 1);
      for (int j0 = h0 + 1; j0 < nk; j0++) {
        int j = pass ? nk - 1 - j0 : j0;
        if (key[j] != key[h] || gone[j] || !nc_lw_batch_ok(&p->kernels[j], P, prod, minread, bs)) continue;
        nc_plan_kernel *pj = &p->kernels[j];
        bool reads_batch = false;  // a batch member must not read what j writes
        for (int b = 0; b < pj->k.nbufs; b++)
          if (pj->k.bufs[b].written && bs[pj->buf_node[b]]) reads_batch = true;
        if (reads_batch || !nc_lw_append(host, pj)) {
          if (host->k.oom) {
            st = nc_errorf(NC_E_NOMEM, "out of memory batching kernel %s", pj->k.name);
            goto done;
          }
          continue;
        }
        mem[nm++] = j;
        gone[j] = 1;
        for (int b = 0; b < pj->k.nbufs; b++) {
          nc_id n = pj->buf_node[b];
          if (pj->k.bufs[b].written) prod[n] = P, bs[n] = 2;
          else {
            if (P < minread[n]) minread[n] = P;
            if (!bs[n]) bs[n] = 1;
          }
        }
      }
      for (uint32_t b = 0; b < (uint32_t)host->k.nbufs; b++) bs[host->buf_node[b]] = 0;
      if (!nm) continue;
      key[h] = 0;  // a batch is not batched again
      snprintf(host->k.name, sizeof host->k.name, "k%u_update_batch%d", host->node, nm + 1);
      for (int m = 0; m < nm; m++) {  // the members' nodes are computed by the host's kernel now
        nc_id mn = p->kernels[mem[m]].node;
        for (nc_id i = 0; i < nn; i++)
          if (p->stored_by[i] == mn) p->stored_by[i] = host->node;
        p->stored_by[mn] = host->node;
      }
      if ((st = nc_kernel_verify(&host->k))) goto done;
    }
  }
  int w = 0;  // drop the members' kernels
  for (int q = 0; q < nk; q++) {
    if (gone[q]) {
      nc_kernel_free(&p->kernels[q].k);
      continue;
    }
    if (w != q) p->kernels[w] = p->kernels[q];
    w++;
  }
  p->nkernels = w;
done:
  free(prod), free(minread), free(key), free(outp), free(bs), free(gone), free(mem);
  return st;
}
