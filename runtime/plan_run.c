#include "runtime/plan_run.h"

#include <stdlib.h>
#include <string.h>

#include "passes/memplan.h"
#include "runtime/kir_eval.h"

struct nc_plan_mem {
  int64_t syms[NC_MAX_SYMS];
  bool valid;
  nc_memplan *mp;
  void *arena;
};

nc_plan_mem *nc_plan_mem_new(void) { return calloc(1, sizeof(nc_plan_mem)); }

void nc_plan_mem_free(nc_plan_mem *m) {
  if (!m) return;
  nc_memplan_free(m->mp);
  free(m->arena);
  free(m);
}

int64_t nc_plan_mem_arena_bytes(const nc_plan_mem *m) { return m && m->mp ? m->mp->arena_size : 0; }

// (Re)plans the arena when the symbol sizes changed.
static nc_status nc_plan_mem_prepare(nc_plan_mem *m, const nc_graph *g, const nc_plan *p, const int64_t *syms) {
  if (m->valid && !memcmp(m->syms, syms, sizeof m->syms)) return NC_OK;
  nc_memplan_free(m->mp);
  free(m->arena);
  m->mp = NULL;
  m->arena = NULL;
  m->valid = false;
  nc_status st = nc_plan_memplan(g, p, syms, &m->mp);
  if (st) return st;
  size_t bytes = (size_t)(m->mp->arena_size + 63) / 64 * 64;
  m->arena = aligned_alloc(64, bytes ? bytes : 64);
  if (!m->arena) return nc_errorf(NC_E_NOMEM, "cannot allocate the %zu-byte arena", bytes);
  memcpy(m->syms, syms, sizeof m->syms);
  m->valid = true;
  return NC_OK;
}

nc_status nc_kernel_runner_eval(void *ctx, int ki, const nc_kernel *k, void *const *bufs, const int64_t *args) {
  (void)ctx;
  (void)ki;
  return nc_kernel_eval(k, bufs, args);
}

nc_status nc_plan_run(const nc_graph *g, const nc_plan *p, nc_kernel_runner run, void *ctx, const nc_feed *feeds,
                      int nfeeds, nc_tensor *outputs) {
  return nc_plan_run_mem(g, p, NULL, run, ctx, feeds, nfeeds, outputs);
}

nc_status nc_plan_run_mem(const nc_graph *g, const nc_plan *p, nc_plan_mem *mem, nc_kernel_runner run, void *ctx,
                          const nc_feed *feeds, int nfeeds, nc_tensor *outputs) {
  return nc_plan_run_hooked(g, p, mem, run, ctx, NULL, feeds, nfeeds, outputs);
}

void nc_plan_output_kernels(const nc_graph *g, const nc_plan *p, int *out) {
  for (int k = 0; k < nc_graph_noutputs(g); k++) {
    nc_id id = nc_graph_output(g, k);
    nc_id host = p->stored_by && id < p->nnodes && p->stored_by[id] != NC_NONE ? p->stored_by[id] : id;
    out[k] = -1;
    for (int q = 0; q < p->nkernels; q++)
      if (p->kernels[q].node == host || p->kernels[q].node == id) out[k] = q;
  }
}

// Calls the hook for the outputs that became final after kernel q (-1: before the first).
static nc_status nc_plan_hook_fire(const nc_plan_hook *h, const int *when, int nout, int q, const nc_graph *g,
                                   const nc_tensor **fed, const nc_tensor *vals) {
  for (int k = 0; k < nout; k++) {
    if (when[k] != q) continue;
    nc_id id = nc_graph_output(g, k);
    NC_TRY(h->fn(h->ctx, k, fed[id] ? fed[id] : &vals[id]));
  }
  return q >= 0 ? h->fn(h->ctx, -1, NULL) : NC_OK;
}

nc_status nc_plan_run_hooked(const nc_graph *g, const nc_plan *p, nc_plan_mem *mem, nc_kernel_runner run, void *ctx,
                             const nc_plan_hook *hook, const nc_feed *feeds, int nfeeds, nc_tensor *outputs) {
  uint32_t nn = nc_graph_nnodes(g);
  int nout = nc_graph_noutputs(g);
  for (int k = 0; k < nout; k++) memset(&outputs[k], 0, sizeof outputs[k]);
  int64_t syms[NC_MAX_SYMS];
  const nc_tensor **fed = calloc(nn ? nn : 1, sizeof *fed);
  nc_tensor *vals = calloc(nn ? nn : 1, sizeof *vals);
  nc_status st = NC_OK;
  if (!fed || !vals) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  if ((st = nc_feeds_bind(g, feeds, nfeeds, syms, fed))) goto done;
  if (mem && (st = nc_plan_mem_prepare(mem, g, p, syms))) goto done;
  for (nc_id i = 0; i < nn && !st; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    if (nd->op == NC_OP_INPUT || nd->op == NC_OP_PARAM) {
      if (!fed[i] && p->materialized[i]) {
        bool used = false;  // an unfed leaf is fine if no kernel reads it
        for (int q = 0; q < p->nkernels && !used; q++)
          for (int b = 0; b < p->kernels[q].k.nbufs; b++) used |= p->kernels[q].buf_node[b] == i;
        if (used) st = nc_errorf(NC_E_INVALID, "%s '%s' is not fed", nd->op == NC_OP_INPUT ? "input" : "param", nc_node_name(g, i));
      }
      continue;
    }
    if (!p->materialized[i]) continue;
    int64_t shape[NC_MAX_RANK];
    for (int d = 0; d < nd->type.rank; d++) shape[d] = nc_dim_eval(nd->type.dim[d], syms);
    if (mem) {  // a view into the arena
      const nc_membuf *mb = nc_memplan_find(mem->mp, i);
      if (!mb) st = nc_errorf(NC_E_INTERNAL, "node %%%u has no place in the memory plan", i);
      else vals[i] = nc_tensor_wrap((char *)mem->arena + mb->offset, nd->type.dtype, nd->type.rank, shape);
    } else {
      st = nc_tensor_alloc(&vals[i], nd->type.dtype, nd->type.rank, shape);
    }
  }
  int *when = NULL;  // hook: per output, the kernel after which it is final
  if (!st && hook && hook->fn) {
    if (!(when = malloc(sizeof(int) * (size_t)(nout ? nout : 1)))) st = nc_errorf(NC_E_NOMEM, "out of memory");
    else nc_plan_output_kernels(g, p, when), st = nc_plan_hook_fire(hook, when, nout, -1, g, fed, vals);
  }
  for (int q = 0; q < p->nkernels && !st; q++) {
    const nc_plan_kernel *pk = &p->kernels[q];
    void *bufs[NC_KERNEL_MAX_BUFS];
    int64_t args[NC_KERNEL_MAX_ARGS];
    for (int b = 0; b < pk->k.nbufs; b++) {
      nc_id n = pk->buf_node[b];
      bufs[b] = fed[n] ? fed[n]->data : vals[n].data;
    }
    for (int a = 0; a < pk->k.nargs; a++) {
      int s = nc_graph_sym_find(g, pk->k.args[a], strlen(pk->k.args[a]));
      args[a] = s >= 0 ? syms[s] : 0;
    }
    st = run(ctx, q, &pk->k, bufs, args);
    if (st) st = nc_status_prefix(st, "kernel %s: ", pk->k.name);
    if (!st && when) st = nc_plan_hook_fire(hook, when, nout, q, g, fed, vals);
  }
  free(when);
  for (int k = 0; k < nout && !st; k++) {
    nc_id id = nc_graph_output(g, k);
    st = nc_tensor_clone(&outputs[k], fed[id] ? fed[id] : &vals[id]);
  }
  if (st)
    for (int k = 0; k < nout; k++) nc_tensor_free(&outputs[k]);
done:
  if (vals)
    for (uint32_t i = 0; i < nn; i++) nc_tensor_free(&vals[i]);
  free(vals);
  free(fed);
  return st;
}
