#include "runtime/session.h"

#include "runtime/exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

typedef struct {
  char *name;
  nc_tensor t;
  nc_exec *dev;  // non-NULL: the current value is in this exec's device buffer (t is stale)
} nc_sess_entry;

struct nc_session {
  nc_sess_entry *e;
  int n, cap;
  nc_exec **bound;  // execs that keep tensors and ran on this session (their nc_exec_session is this one)
  int nbound, capbound;
  void *arena;  // nc_session_pack: the tensors' buffer (they wrap it), freed with the session
};

nc_session *nc_session_new(void) { return calloc(1, sizeof(nc_session)); }

void nc_session_free(nc_session *s) {
  if (!s) return;
  for (int i = 0; i < s->nbound; i++) nc_exec_set_session(s->bound[i], NULL);  // they forget it (nothing to read back into)
  free(s->bound);
  for (int i = 0; i < s->n; i++) {
    free(s->e[i].name);
    nc_tensor_free(&s->e[i].t);
  }
  free(s->e);
  free(s->arena);
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
    s->e[k].dev = NULL;
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
  s->e[s->n].dev = NULL;
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

// Makes entry k's host copy current (reads it back from the device holding it).
static nc_status nc_sess_fetch(const nc_session *s, int k) {
  nc_sess_entry *en = &s->e[k];
  if (!en->dev) return NC_OK;
  nc_status st = nc_exec_read_kept(en->dev, en->name, &en->t);
  if (st) return nc_status_prefix(st, "reading '%s' back from the device: ", en->name);
  en->dev = NULL;
  return NC_OK;
}

const nc_tensor *nc_session_get(const nc_session *s, const char *name) {
  int k = nc_sess_find(s, name);
  if (k < 0) return NULL;
  nc_status st = nc_sess_fetch(s, k);
  if (st) {  // a device that fails a read: report it, the caller sees a missing tensor
    fprintf(stderr, "nc_session_get: %s\n", nc_status_msg(st));
    nc_status_free(st);
    return NULL;
  }
  return &s->e[k].t;
}

void nc_session_detach(nc_session *s, nc_exec *e) {
  for (int k = 0; k < s->n; k++) {
    if (s->e[k].dev != e) continue;
    nc_status st = nc_sess_fetch(s, k);
    if (st) {
      fprintf(stderr, "nc_session_detach: %s\n", nc_status_msg(st));
      nc_status_free(st);
      s->e[k].dev = NULL;
    }
  }
  for (int i = 0; i < s->nbound; i++)
    if (s->bound[i] == e) s->bound[i--] = s->bound[--s->nbound];
  if (nc_exec_session(e) == s) nc_exec_set_session(e, NULL);
}

nc_status nc_session_sync(nc_session *s) {
  for (int k = 0; k < s->n; k++) NC_TRY(nc_sess_fetch(s, k));
  return NC_OK;
}

nc_status nc_session_zero(nc_session *s, const char *name) {
  int k = nc_sess_find(s, name);
  if (k < 0) return nc_errorf(NC_E_INVALID, "session: no tensor '%s' to zero", name);
  if (s->e[k].dev) return nc_exec_zero_kept(s->e[k].dev, name);
  if (s->e[k].t.data) memset(s->e[k].t.data, 0, nc_tensor_nbytes(&s->e[k].t));
  return NC_OK;
}

// 2 MiB: the x86-64 huge page. Every tensor starts on a 64-byte line.
#define NC_SESS_HUGE ((size_t)2 << 20)

nc_status nc_session_pack(nc_session *s) {
  NC_TRY(nc_session_sync(s));  // every host copy current (nothing left on a device)
  size_t total = 0;
  for (int k = 0; k < s->n; k++) total += (nc_tensor_nbytes(&s->e[k].t) + 63) / 64 * 64;
  size_t bytes = (total + NC_SESS_HUGE - 1) / NC_SESS_HUGE * NC_SESS_HUGE;
  if (!bytes) return NC_OK;
  char *a = aligned_alloc(NC_SESS_HUGE, bytes);
  if (!a) return nc_errorf(NC_E_NOMEM, "out of memory packing the session's %zu bytes", total);
#ifdef MADV_HUGEPAGE
  madvise(a, bytes, MADV_HUGEPAGE);  // advice only: without transparent huge pages the copy still works
#endif
  size_t off = 0;
  for (int k = 0; k < s->n; k++) {
    nc_tensor *t = &s->e[k].t;
    size_t nb = nc_tensor_nbytes(t);
    if (nb) memcpy(a + off, t->data, nb);
    nc_tensor w = nc_tensor_wrap(a + off, t->dtype, t->rank, t->shape);
    nc_tensor_free(t);  // its own buffer, or (wrapping the previous arena) nothing
    *t = w;
    off += (nb + 63) / 64 * 64;
  }
  free(s->arena);
  s->arena = a;
  return NC_OK;
}

int nc_session_on_device(const nc_session *s) {
  int n = 0;
  for (int k = 0; k < s->n; k++) n += s->e[k].dev != NULL;
  return n;
}

int nc_session_count(const nc_session *s) { return s->n; }
const char *nc_session_name_at(const nc_session *s, int k) { return k >= 0 && k < s->n ? s->e[k].name : NULL; }

static nc_status nc_session_run_any(nc_session *s, const nc_graph *g, const nc_graph *fg, nc_exec *e) {
  uint32_t nn = nc_graph_nnodes(fg);
  int nout = nc_graph_noutputs(g);
  bool keeps = e && nc_exec_keeps(e);
  nc_feed *feeds = malloc((nn ? nn : 1) * sizeof *feeds);
  int *fent = malloc((nn ? nn : 1) * sizeof *fent);  // per feed: its session entry
  bool *ondev = calloc(nn ? nn : 1, sizeof *ondev);
  int *keep = malloc((nout ? (size_t)nout : 1) * sizeof *keep);
  nc_tensor *outs = calloc(nout ? (size_t)nout : 1, sizeof *outs);
  nc_status st = NC_OK;
  if (!feeds || !outs || !fent || !ondev || !keep) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  if (keeps && nc_exec_session(e) != s) {  // e held another session's tensors: give them back
    if (nc_exec_session(e)) nc_session_detach(nc_exec_session(e), e);
    if (s->nbound == s->capbound) {
      int cap = s->capbound ? 2 * s->capbound : 4;
      nc_exec **b = realloc(s->bound, (size_t)cap * sizeof *b);
      if (!b) {
        st = nc_errorf(NC_E_NOMEM, "out of memory");
        goto done;
      }
      s->bound = b, s->capbound = cap;
    }
    s->bound[s->nbound++] = e;
    nc_exec_set_session(e, s);
  }
  int nf = 0;
  for (nc_id i = 0; i < nn; i++) {
    const char *name = nc_node_name(fg, i);
    if (!name) continue;
    int k = nc_sess_find(s, name);
    if (k < 0) continue;
    if (s->e[k].dev && s->e[k].dev != e && (st = nc_sess_fetch(s, k))) goto done;  // held by another exec
    ondev[nf] = s->e[k].dev != NULL;
    fent[nf] = k;
    feeds[nf++] = (nc_feed){name, &s->e[k].t};
  }
  for (int k = 0; k < nout; k++) {  // new.X of a fed X may stay on the device
    keep[k] = -1;
    const char *name = nc_graph_output_name(g, k);
    if (!keeps || strncmp(name, "new.", 4)) continue;
    for (int f = 0; f < nf && keep[k] < 0; f++)
      if (!strcmp(feeds[f].name, name + 4)) keep[k] = f;
  }
  if (keeps) st = nc_exec_run_kept(e, feeds, nf, ondev, keep, outs);
  else st = e ? nc_exec_run(e, feeds, nf, outs) : nc_interp_run(g, feeds, nf, outs);
  if (st) goto done;
  for (int k = 0; k < nout && !st; k++) {
    if (keeps && keep[k] >= 0) {
      s->e[fent[keep[k]]].dev = e;
      continue;
    }
    const char *name = nc_graph_output_name(g, k);
    if (!strncmp(name, "new.", 4)) name += 4;
    st = nc_session_put(s, name, &outs[k]);
  }
done:
  if (outs)
    for (int k = 0; k < nout; k++) nc_tensor_free(&outs[k]);
  free(outs);
  free(feeds);
  free(fent);
  free(ondev);
  free(keep);
  return st;
}

nc_status nc_session_run(nc_session *s, const nc_graph *g) { return nc_session_run_any(s, g, g, NULL); }

nc_status nc_session_run_exec(nc_session *s, nc_exec *e) {
  return nc_session_run_any(s, nc_exec_graph(e), nc_exec_feed_graph(e), e);
}
