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
// The same on a graph prepared for a device (runtime/exec.h).
struct nc_exec;
nc_status nc_session_run_exec(nc_session *s, struct nc_exec *e);

#endif
