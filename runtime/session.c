#include "runtime/session.h"

#include "runtime/exec.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  char *name;
  nc_tensor t;
} nc_sess_entry;

struct nc_session {
  nc_sess_entry *e;
  int n, cap;
};

nc_session *nc_session_new(void) { return calloc(1, sizeof(nc_session)); }

void nc_session_free(nc_session *s) {
  if (!s) return;
  for (int i = 0; i < s->n; i++) {
    free(s->e[i].name);
    nc_tensor_free(&s->e[i].t);
  }
  free(s->e);
  free(s);
}

static int nc_sess_find(const nc_session *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->e[i].name, name)) return i;
  return -1;
}

nc_status nc_session_put(nc_session *s, const char *name, nc_tensor *t) {
  int k = nc_sess_find(s, name);
  if (k >= 0) {
    nc_tensor_free(&s->e[k].t);
    s->e[k].t = *t;
    memset(t, 0, sizeof *t);
    return NC_OK;
  }
  if (s->n == s->cap) {
    int cap = s->cap ? 2 * s->cap : 64;
    nc_sess_entry *p = realloc(s->e, (size_t)cap * sizeof *p);
    if (!p) return nc_errorf(NC_E_NOMEM, "out of memory");
    s->e = p;
    s->cap = cap;
  }
  char *nm = strdup(name);
  if (!nm) return nc_errorf(NC_E_NOMEM, "out of memory");
  s->e[s->n].name = nm;
  s->e[s->n].t = *t;
  s->n++;
  memset(t, 0, sizeof *t);
  return NC_OK;
}

nc_status nc_session_put_copy(nc_session *s, const char *name, const nc_tensor *t) {
  nc_tensor c;
  NC_TRY(nc_tensor_clone(&c, t));
  nc_status st = nc_session_put(s, name, &c);
  if (st) nc_tensor_free(&c);
  return st;
}

nc_status nc_session_put_scalar(nc_session *s, const char *name, float v) {
  nc_tensor t;
  NC_TRY(nc_tensor_alloc(&t, NC_F32, 0, NULL));
  *(float *)t.data = v;
  nc_status st = nc_session_put(s, name, &t);
  if (st) nc_tensor_free(&t);
  return st;
}

const nc_tensor *nc_session_get(const nc_session *s, const char *name) {
  int k = nc_sess_find(s, name);
  return k >= 0 ? &s->e[k].t : NULL;
}

int nc_session_count(const nc_session *s) { return s->n; }
const char *nc_session_name_at(const nc_session *s, int k) { return k >= 0 && k < s->n ? s->e[k].name : NULL; }

static nc_status nc_session_run_any(nc_session *s, const nc_graph *g, const nc_graph *fg, nc_exec *e) {
  uint32_t nn = nc_graph_nnodes(fg);
  int nout = nc_graph_noutputs(g);
  nc_feed *feeds = malloc((nn ? nn : 1) * sizeof *feeds);
  nc_tensor *outs = calloc(nout ? (size_t)nout : 1, sizeof *outs);
  nc_status st = NC_OK;
  if (!feeds || !outs) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  int nf = 0;
  for (nc_id i = 0; i < nn; i++) {
    const char *name = nc_node_name(fg, i);
    if (!name) continue;
    const nc_tensor *t = nc_session_get(s, name);
    if (t) feeds[nf++] = (nc_feed){name, t};
  }
  if ((st = e ? nc_exec_run(e, feeds, nf, outs) : nc_interp_run(g, feeds, nf, outs))) goto done;
  for (int k = 0; k < nout && !st; k++) {
    const char *name = nc_graph_output_name(g, k);
    if (!strncmp(name, "new.", 4)) name += 4;
    st = nc_session_put(s, name, &outs[k]);
  }
done:
  if (outs)
    for (int k = 0; k < nout; k++) nc_tensor_free(&outs[k]);
  free(outs);
  free(feeds);
  return st;
}

nc_status nc_session_run(nc_session *s, const nc_graph *g) { return nc_session_run_any(s, g, g, NULL); }

nc_status nc_session_run_exec(nc_session *s, nc_exec *e) {
  return nc_session_run_any(s, nc_exec_graph(e), nc_exec_feed_graph(e), e);
}
