// The OpenCL device's profile summed by op (NC_PROFILE, nc_ocl_profile_print): where
// the kernel time goes when a plan has thousands of small kernels, and how far each
// op's loop kernels are from the memory bandwidth (bytes of their buffers / time).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ocl_impl.h"

double nc_oc_kernel_bytes(const nc_graph *g, const nc_plan_kernel *pk, const int64_t *syms) {
  double bytes = 0;
  for (int b = 0; b < pk->k.nbufs; b++) {
    nc_id id = pk->buf_node[b];
    bool dup = false;  // a node bound to two buffers is counted once
    for (int e = 0; e < b && !dup; e++) dup = pk->buf_node[e] == id;
    if (dup || id == NC_NONE) continue;
    const nc_node *nd = nc_graph_node(g, id);
    double n = (double)nc_dtype_size(nd->type.dtype);
    for (int d = 0; d < nd->type.rank; d++) n *= (double)nc_dim_eval(nd->type.dim[d], syms);
    bytes += n;
  }
  return bytes;
}

// The op of a plan kernel's name: "k123_add" -> "add".
static const char *nc_oc_op_of(const char *name) {
  if (name[0] != 'k') return name;
  const char *s = name + 1;
  while (*s >= '0' && *s <= '9') s++;
  return (s > name + 1 && *s == '_') ? s + 1 : name;
}

typedef struct {
  const char *op;
  int kind;  // 0 loop, 1 row, 2 whole-buffer reduction, 3 GEMM, 4 attention, 5 other template
  double sec, bytes;
  int64_t calls;
  int kernels;
} nc_oc_oprow;

static int nc_oc_oprow_cmp(const void *a, const void *b) {
  double x = ((const nc_oc_oprow *)a)->sec, y = ((const nc_oc_oprow *)b)->sec;
  return x < y ? 1 : x > y ? -1 : 0;
}

void nc_oc_profile_by_op(const nc_ocl *c, const nc_plan *p, int top, FILE *f) {
  if (!c->profile || c->nk <= 0) return;
  nc_oc_oprow *rows = calloc((size_t)c->nk, sizeof *rows);
  if (!rows) return;
  int nr = 0;
  double total = 0, lsec = 0, lbytes = 0;
  int64_t lcalls = 0;
  for (int q = 0; q < c->nk; q++) {
    if (!c->kcalls[q]) continue;
    const nc_ocl_launch *L = &c->launch[q];
    int kind = L->gemm ? 3 : L->attn ? 4 : L->scatter ? 5 : L->reduce_wg ? 2 : L->row_wg ? 1 : 0;
    const char *op = nc_oc_op_of(p->kernels[q].k.name);
    total += c->ksec[q];
    if (kind < 3) lsec += c->ksec[q], lbytes += c->kbytes_sum[q], lcalls += c->kcalls[q];
    int r = 0;
    while (r < nr && !(rows[r].kind == kind && !strcmp(rows[r].op, op))) r++;
    if (r == nr) rows[nr++] = (nc_oc_oprow){.op = op, .kind = kind};
    rows[r].sec += c->ksec[q];
    rows[r].bytes += c->kbytes_sum[q];
    rows[r].calls += c->kcalls[q];
    rows[r].kernels++;
  }
  qsort(rows, (size_t)nr, sizeof *rows, nc_oc_oprow_cmp);
  static const char *kinds[] = {"loop", "rows", "reduce", "gemm", "attention", "template"};
  fprintf(f, "opencl profile by op: %d ops; loop/row/reduction kernels %.3f ms (%.1f%%) in %lld calls, %.2f GB at %.1f GB/s\n", nr,
          lsec * 1e3, total > 0 ? 100 * lsec / total : 0.0, (long long)lcalls, lbytes * 1e-9, lsec > 0 ? lbytes / lsec * 1e-9 : 0.0);
  fprintf(f, "  %10s %6s %8s %7s %10s %8s  %-9s %s\n", "ms", "%", "calls", "kernels", "GB", "GB/s", "kind", "op");
  for (int r = 0; r < nr && r < top; r++) {
    const nc_oc_oprow *o = &rows[r];
    if (o->kind < 3)
      fprintf(f, "  %10.3f %5.1f%% %8lld %7d %10.3f %8.1f  %-9s %s\n", o->sec * 1e3, total > 0 ? 100 * o->sec / total : 0.0,
              (long long)o->calls, o->kernels, o->bytes * 1e-9, o->sec > 0 ? o->bytes / o->sec * 1e-9 : 0.0, kinds[o->kind], o->op);
    else
      fprintf(f, "  %10.3f %5.1f%% %8lld %7d %10s %8s  %-9s %s\n", o->sec * 1e3, total > 0 ? 100 * o->sec / total : 0.0,
              (long long)o->calls, o->kernels, "-", "-", kinds[o->kind], o->op);
  }
  free(rows);
}
