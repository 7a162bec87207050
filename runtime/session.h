// A session: named host tensors (params, optimizer state, scalars) that a
// graph runs against. Inputs and params are bound by name from the session;
// an output named "new.<X>" replaces tensor X (in-place update semantics of
// a training step); any other output is stored under its own name.
#ifndef NC_RUNTIME_SESSION_H
#define NC_RUNTIME_SESSION_H

#include "ir/graph.h"
#include "ir/tensor.h"
#include "runtime/interp.h"

typedef struct nc_session nc_session;

nc_session *nc_session_new(void);
void nc_session_free(nc_session *s);
// Stores t under name, taking ownership of its buffer (replaces any old one).
nc_status nc_session_put(nc_session *s, const char *name, nc_tensor *t);
// Stores a copy of t.
nc_status nc_session_put_copy(nc_session *s, const char *name, const nc_tensor *t);
nc_status nc_session_put_scalar(nc_session *s, const char *name, float v);
const nc_tensor *nc_session_get(const nc_session *s, const char *name);
int nc_session_count(const nc_session *s);
const char *nc_session_name_at(const nc_session *s, int k);
// Runs g on the reference interpreter with every input/param bound from the
// session, then stores the outputs as described above.
nc_status nc_session_run(nc_session *s, const nc_graph *g);
// The same on a graph prepared for a device (runtime/exec.h). On a device
// that keeps tensors (nc_exec_keeps: OpenCL), the updated tensors (new.X)
// stay in the device's buffers: the entry keeps its host tensor (same shape,
// stale data) and nc_session_get reads the current value back first, after
// which the host copy is the current one again (and is uploaded by the next
// run, so writing into it through the returned pointer is safe). A run on
// another exec reads back what it needs the same way.
struct nc_exec;
nc_status nc_session_run_exec(nc_session *s, struct nc_exec *e);
// Reads back every tensor exec e holds on its device and forgets e (called
// by nc_exec_free; harmless when e holds nothing).
void nc_session_detach(nc_session *s, struct nc_exec *e);
// Reads back every tensor held on any device: afterwards every host copy is current.
nc_status nc_session_sync(nc_session *s);
// Zeroes tensor name where its current value lives: on the device that
// holds it (nc_exec_zero_kept; no transfer either way), else on the host.
nc_status nc_session_zero(nc_session *s, const char *name);
// Moves every tensor into one buffer that the session owns, 2 MiB aligned and
// backed by transparent huge pages where the OS allows it (Linux: madvise
// MADV_HUGEPAGE; only advice). Values, names and shapes are unchanged; the
// data pointers change (get them again). Decode streams every weight once per
// token: with 4 KiB pages each page costs a TLB miss and the prefetchers stop
// at its end; with 2 MiB pages the d8 step read its weights ~15-20 % faster on
// the Zen 3 VM (docs/performance.md). Reads back tensors held on a device first.
// Tensors put later have their own buffers as usual.
nc_status nc_session_pack(nc_session *s);
// How many tensors are held on a device now (tests, diagnostics).
int nc_session_on_device(const nc_session *s);

#endif
