// Graphs compiled for a device and run by name: the runtime's device
// interface. "interp" runs the reference interpreter; "cpu" decomposes,
// fuses, lowers and JIT-compiles the graph once (plans are reused for every
// call, whatever the symbol sizes); "eval" runs the lowered kernels on the
// kernel-IR evaluator (for testing lowering). OpenCL devices come next.
#ifndef NC_RUNTIME_EXEC_H
#define NC_RUNTIME_EXEC_H

#include "ir/graph.h"
#include "runtime/interp.h"

typedef enum { NC_DEV_INTERP, NC_DEV_CPU, NC_DEV_EVAL } nc_device_kind;

typedef struct {
  nc_device_kind kind;
  int threads;     // cpu: 0 = one per core
  bool avx2_only;  // cpu: AVX2 code even on AVX-512 machines
  bool verbose;    // print generated kernels
} nc_device;

// "interp", "cpu", "cpu:avx2", "eval". threads is left at 0 (set it after).
nc_status nc_device_parse(const char *s, nc_device *out);
const char *nc_device_name(const nc_device *d);

typedef struct nc_exec nc_exec;

// Prepares g (copied: the caller keeps g) for device d.
nc_status nc_exec_new(const nc_graph *g, const nc_device *d, nc_exec **out);
void nc_exec_free(nc_exec *e);
// outputs[k] receives output k of the graph (owned), as nc_interp_run.
nc_status nc_exec_run(nc_exec *e, const nc_feed *feeds, int nfeeds, nc_tensor *outputs);
const nc_graph *nc_exec_graph(const nc_exec *e);  // the graph as given (outputs, names)
// The graph whose inputs/params nc_exec_run binds (passes may have dropped
// unused ones): feed exactly the leaves of this graph.
const nc_graph *nc_exec_feed_graph(const nc_exec *e);
double nc_exec_compile_seconds(const nc_exec *e);
int nc_exec_nkernels(const nc_exec *e);
// cpu: prints the kernels that took the most time so far (to stderr).
void nc_exec_profile_print(const nc_exec *e, int top);
// cpu: trace the kernel launches of the following runs; write them as Chrome
// trace JSON (an error on other devices).
nc_status nc_exec_trace_start(nc_exec *e);
nc_status nc_exec_trace_write(nc_exec *e, const char *path);

#endif
