// Memory planning: one arena per compiled plan (per shape bucket).
//
// An analysis, not a graph rewrite: given a graph, the nodes whose values
// live in memory ("materialized"; by default every non-leaf node, later the
// fusion pass decides), concrete sizes for the graph's symbols, and the graph
// outputs, it assigns every materialized node a byte range of one arena:
//
//   nc_memplan_opts o;
//   nc_memplan_opts_init(&o);
//   o.syms = (int64_t[]){2, 16};   // syms[k] = size of symbol k (B, T, ...)
//   o.nsyms = 2;
//   nc_memplan *plan;
//   NC_TRY(nc_memplan_build(g, &o, &plan));
//   ... plan->arena_size, nc_memplan_find(plan, id)->offset ...
//   nc_memplan_free(plan);
//
// Execution order is node id order (a topological order); a materialized
// node's kernel runs at time = its id. Non-materialized nodes are computed
// inside the kernels of the materialized nodes that use them (fusion), so a
// buffer is read at the time of every materialized node that reaches it
// through non-materialized nodes. Each buffer lives over [def, last]: def =
// its node id, last = the last time it is read (NC_MEMPLAN_END for graph
// outputs, which must survive the whole plan). Two buffers whose intervals
// intersect never share bytes, except in place: an INPLACE op writes over
// its input 0 when that input dies at this node, has the same byte size, is
// not a graph output, and every read of it by this node is at the same
// element index (directly, or through fused elementwise ops only).
//
// Offsets come from greedy-by-size placement (docs/runtime.md): buffers
// sorted by size (largest first), each placed in the best-fitting gap among
// the already-placed buffers whose lifetimes intersect its own; the smaller
// arena of best-fit and first-fit is kept. Leaves (inputs, params) live
// outside the arena.
#ifndef NC_PASSES_MEMPLAN_H
#define NC_PASSES_MEMPLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/graph.h"
#include "support/buf.h"

#define NC_MEMPLAN_END UINT32_MAX  // "last" of a graph output: alive to the end
#define NC_MEMPLAN_MAX_BYTES (INT64_C(1) << 50)  // larger single buffers or arenas are absurd

typedef struct {
  const int64_t *syms;        // syms[k] = size of symbol k; 0 = unbound
  int nsyms;                  // entries in syms
  const bool *materialized;   // per node id (nnodes entries); NULL = every non-leaf node
  const bool *outputs;        // per node id; NULL = the graph's outputs
  bool inplace;               // allow in-place reuse (default true)
  const nc_id *exec_at;       // per node id: the node whose kernel computes it (a multi-output
                              // kernel); NULL = each its own. Reads count at that position, and
                              // such kernels never write in place.
  int64_t align;              // offset alignment, a power of two (default 64)
  const nc_id *extra_read;    // per node id: a materialized node its kernel also reads beyond
                              // its graph inputs (NC_PATTERN_CE_LSE), or NC_NONE; NULL = none
} nc_memplan_opts;

void nc_memplan_opts_init(nc_memplan_opts *o);

typedef struct {
  nc_id node;
  nc_op op;
  nc_dtype dtype;
  int rank;
  int64_t dims[NC_MAX_RANK];  // concrete shape under the bindings
  int64_t size;        // bytes: element count * dtype size
  uint32_t def, last;  // liveness in node ids; last = NC_MEMPLAN_END for outputs
  int64_t offset;      // in the arena; a multiple of align
  nc_id inplace_of;    // the node whose buffer this one takes over, or NC_NONE
  bool output;
} nc_membuf;

typedef struct {
  char graph_name[64];  // for the dump (truncated)
  int nbufs;
  nc_membuf *bufs;      // one per materialized node, in id order
  int32_t *index;       // node id -> index into bufs, or -1
  uint32_t nnodes;
  int64_t align;
  int64_t arena_size;   // high-water mark: bytes the arena needs
  int64_t total_size;   // sum of the aligned sizes of all buffers (no reuse at all)
  int64_t live_peak;    // max over time of the live bytes (aligned; a lower bound on any arena)
  int ninplace;         // buffers placed over their input 0
  const char *strategy; // "best-fit" or "first-fit": the placement kept
} nc_memplan;

// Errors: a symbol used by a materialized node is unbound (names it and the
// node), a size overflows or exceeds NC_MEMPLAN_MAX_BYTES, an input/param
// marked materialized, a graph output that is not materialized, bad align.
nc_status nc_memplan_build(const nc_graph *g, const nc_memplan_opts *o, nc_memplan **out);
void nc_memplan_free(nc_memplan *plan);
const nc_membuf *nc_memplan_find(const nc_memplan *plan, nc_id node);  // NULL if not in the arena

// One header line, then one line per buffer in id order (shapes concrete):
//   memplan "g": 3 buffers, arena 256 B, total 384 B, live peak 256 B, 1 in place, best-fit, align 64
//   %3 relu f32[2,16] 128 B [3,5] @0 inplace of %2
// (last is "end" for outputs, which end with " output").
void nc_memplan_dump(const nc_memplan *plan, nc_buf *out);

// For the CLI (`nanochat graph dump --after memplan`): parses bindings like
// "B=2,T=16" into syms[NC_MAX_SYMS] (unknown names, bad or repeated values
// are errors; symbols left out stay 0, unbound, which nc_memplan_build
// reports only if a materialized node uses them).
nc_status nc_memplan_parse_bindings(const nc_graph *g, const char *text, int64_t syms[NC_MAX_SYMS]);
// Builds a plan with default options for the given bindings and dumps it.
nc_status nc_memplan_dump_graph(const nc_graph *g, const int64_t *syms, int nsyms, nc_buf *out);

#endif
