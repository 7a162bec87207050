// The basic passes: verify and dead-code elimination.
#include <stdlib.h>
#include <string.h>

#include "passes/pass.h"

nc_status nc_pass_verify(nc_graph **g, nc_pass_ctx *ctx) { return nc_graph_verify(*g); }

// Keeps the nodes that some output depends on, in their original order.
nc_status nc_pass_dce(nc_graph **g, nc_pass_ctx *ctx) {
  const nc_graph *src = *g;
  uint32_t n = nc_graph_nnodes(src);
  unsigned char *live = calloc(n ? n : 1, 1);
  nc_id *map = malloc((n ? n : 1) * sizeof *map);
  nc_graph *dst = nc_graph_new_like(src);
  nc_status st = NC_OK;
  if (!live || !map || !dst) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  for (int k = 0; k < nc_graph_noutputs(src); k++) live[nc_graph_output(src, k)] = 1;
  for (uint32_t i = n; i-- > 0;) {  // inputs have smaller ids: one backward sweep
    if (!live[i]) continue;
    for (int k = 0; k < nc_graph_node(src, i)->nin; k++) live[nc_graph_input_of(src, i, k)] = 1;
  }
  for (uint32_t i = 0; i < n && !st; i++) {
    map[i] = NC_NONE;
    if (!live[i]) continue;
    nc_node_desc d;
    nc_node_desc_from(src, i, &d);
    for (int k = 0; k < d.nin; k++) d.in[k] = map[d.in[k]];
    st = nc_graph_add(dst, &d, &map[i]);
  }
  for (int k = 0; k < nc_graph_noutputs(src) && !st; k++)
    st = nc_graph_set_output(dst, nc_graph_output_name(src, k), map[nc_graph_output(src, k)]);
  if (!st) {
    nc_graph_free(*g);
    *g = dst;
    dst = NULL;
  }
done:
  free(live);
  free(map);
  nc_graph_free(dst);
  return st;
}
