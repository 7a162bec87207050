// The data-parallel world over MPI (dist.h).
#include "pipeline/dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ocl_device.h"

#ifdef NC_HAVE_MPI
#include <mpi.h>

static nc_status nc_mpi_err(int rc, const char *what) {
  if (rc == MPI_SUCCESS) return NC_OK;
  char msg[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(rc, msg, &n);
  return nc_errorf(NC_E_IO, "MPI %s failed: %.*s", what, n, msg);
}
#endif

bool nc_dist_available(void) {
#ifdef NC_HAVE_MPI
  return true;
#else
  return false;
#endif
}

nc_status nc_dist_init(nc_dist *d) {
  d->rank = 0, d->world = 1, d->mpi = false;
  bool launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
  if (!launched) return NC_OK;
#ifdef NC_HAVE_MPI
  // Open MPI's default MPI_Ireduce for large messages between 2 ranks (libnbc)
  // is 10-30x slower than its blocking MPI_Reduce here (16 MB: 0.25-0.65 s vs
  // 0.02-0.03 s); the binomial tree is on par. Chosen unless the user set it
  // (docs/distributed.md). Other MPIs ignore the variable.
  if (getenv("OMPI_COMM_WORLD_SIZE")) setenv("OMPI_MCA_coll_libnbc_ireduce_algorithm", "2", 0);
  int provided = 0;
  NC_TRY(nc_mpi_err(MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided), "init"));
  d->mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &d->world);
  return NC_OK;
#else
  const char *n = getenv("OMPI_COMM_WORLD_SIZE");
  if (n && atoi(n) > 1)
    return nc_errorf(NC_E_UNSUPPORTED, "launched as %s ranks by mpirun, but this nanochat was built without MPI (install libopenmpi-dev and rebuild)", n);
  return NC_OK;
#endif
}

void nc_dist_finalize(nc_dist *d) {
#ifdef NC_HAVE_MPI
  if (d->mpi) MPI_Finalize();
#endif
  d->mpi = false;
}

nc_status nc_dist_allreduce_f32(const nc_dist *d, float *buf, size_t n) {
  if (d->world <= 1) return NC_OK;
#ifdef NC_HAVE_MPI
  for (size_t off = 0; off < n; off += INT_MAX / 2) {  // counts are ints
    size_t c = n - off < INT_MAX / 2 ? n - off : INT_MAX / 2;
    NC_TRY(nc_mpi_err(MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "allreduce"));
  }
  return NC_OK;
#else
  (void)buf, (void)n;
  return nc_errorf(NC_E_UNSUPPORTED, "allreduce over %d ranks without MPI", d->world);
#endif
}

nc_status nc_dist_allreduce_f64(const nc_dist *d, double *buf, size_t n) {
  if (d->world <= 1) return NC_OK;
#ifdef NC_HAVE_MPI
  return nc_mpi_err(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "allreduce");
#else
  (void)buf, (void)n;
  return nc_errorf(NC_E_UNSUPPORTED, "allreduce over %d ranks without MPI", d->world);
#endif
}

nc_status nc_dist_barrier(const nc_dist *d) {
  if (d->world <= 1) return NC_OK;
#ifdef NC_HAVE_MPI
  return nc_mpi_err(MPI_Barrier(MPI_COMM_WORLD), "barrier");
#else
  return nc_errorf(NC_E_UNSUPPORTED, "barrier over %d ranks without MPI", d->world);
#endif
}

nc_status nc_dist_bcast_i32(const nc_dist *d, int32_t *buf, size_t n, int root) {
  if (d->world <= 1) return NC_OK;
  if (n > INT_MAX) return nc_errorf(NC_E_INTERNAL, "dist bcast: %zu elements exceed MPI's int count", n);
#ifdef NC_HAVE_MPI
  return nc_mpi_err(MPI_Bcast(buf, (int)n, MPI_INT32_T, root, MPI_COMM_WORLD), "bcast");
#else
  (void)buf, (void)root;
  return nc_errorf(NC_E_UNSUPPORTED, "bcast over %d ranks without MPI", d->world);
#endif
}

nc_status nc_dist_local(const nc_dist *d, int *local_rank, int *local_size) {
  *local_rank = 0, *local_size = 1;
  if (d->world <= 1) return NC_OK;
  const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK"), *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (lr && ls && atoi(ls) > 0) {
    *local_rank = atoi(lr), *local_size = atoi(ls);
    return NC_OK;
  }
#ifdef NC_HAVE_MPI
  MPI_Comm node;  // the ranks sharing this node's memory
  NC_TRY(nc_mpi_err(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node), "comm_split_type"));
  MPI_Comm_rank(node, local_rank);
  MPI_Comm_size(node, local_size);
  MPI_Comm_free(&node);
  return NC_OK;
#else
  return nc_errorf(NC_E_UNSUPPORTED, "local rank over %d ranks without MPI", d->world);
#endif
}

nc_status nc_dist_pick_device(const nc_dist *d, nc_device *dev, char *note, size_t cap) {
  if (note && cap) note[0] = 0;
  if (!d || d->world <= 1 || dev->kind != NC_DEV_OPENCL || (dev->select[0] && strcmp(dev->select, "gpu"))) return NC_OK;
  int lr, ls;
  NC_TRY(nc_dist_local(d, &lr, &ls));
  int gpus[64], ngpu = 0;  // indices (`nanochat devices` order) of the GPUs
  for (int i = 0; i < 64; i++) {
    char sel[16];
    snprintf(sel, sizeof sel, "%d", i);
    nc_ocl_device_desc dd;
    nc_status st = nc_ocl_select(sel, &dd);
    if (st) {  // past the last device
      nc_status_free(st);
      break;
    }
    if (dd.gpu) gpus[ngpu++] = i;
  }
  if (!ngpu) {
    if (!dev->select[0]) return NC_OK;  // "opencl": no GPU, the first device for every rank
    char seen[512] = "";
    for (int i = 0; i < 8; i++) {  // what this rank does see (an MPI process may see less than `nanochat devices`)
      char sel[16];
      snprintf(sel, sizeof sel, "%d", i);
      nc_ocl_device_desc dd;
      nc_status st = nc_ocl_select(sel, &dd);
      if (st) {
        nc_status_free(st);
        break;
      }
      size_t l = strlen(seen);
      snprintf(seen + l, sizeof seen - l, "%sopencl:%d %s | %s", i ? "; " : "", i, dd.platform, dd.name);
    }
    return nc_errorf(NC_E_INVALID, "--device opencl:gpu: rank %d found no OpenCL GPU (it sees: %s; `nanochat devices` lists the devices)",
                     d->rank, seen[0] ? seen : "no OpenCL device at all");
  }
  int pick = gpus[lr % ngpu];
  snprintf(dev->select, sizeof dev->select, "%d", pick);
  snprintf(dev->name, sizeof dev->name, "opencl:%d", pick);
  if (note && cap)
    snprintf(note, cap, "rank %d (local rank %d of %d on this node): %s, GPU %d of %d%s", d->rank, lr, ls, dev->name, lr % ngpu, ngpu,
             ls > ngpu ? " (more ranks than GPUs here: GPUs are shared)" : "");
  return NC_OK;
}

void nc_dist_before_init(const nc_device *dev) {
  bool launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
  if (launched && dev && dev->kind == NC_DEV_OPENCL) (void)nc_ocl_available();  // loads the OpenCL platforms now
}

void nc_dist_abort(const nc_dist *d, int code) {
#ifdef NC_HAVE_MPI
  if (d->mpi) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  (void)d;
  exit(code);
}

// ---- nonblocking collectives ---------------------------------------------------

struct nc_dist_reqs {
  int n;
  unsigned char *pending;  // world of one: completed at once, reported by waitany
#ifdef NC_HAVE_MPI
  MPI_Request *h;
#endif
};

nc_status nc_dist_reqs_new(int slots, nc_dist_reqs **out) {
  nc_dist_reqs *r = calloc(1, sizeof *r);
  if (r) r->pending = calloc((size_t)(slots > 0 ? slots : 1), 1);
#ifdef NC_HAVE_MPI
  if (r) r->h = malloc(sizeof(MPI_Request) * (size_t)(slots > 0 ? slots : 1));
  if (r && r->h)
    for (int i = 0; i < slots; i++) r->h[i] = MPI_REQUEST_NULL;
  if (r && !r->h) r->pending = (free(r->pending), NULL);
#endif
  if (!r || !r->pending) {
    free(r);
    return nc_errorf(NC_E_NOMEM, "dist: out of memory for %d requests", slots);
  }
  r->n = slots;
  *out = r;
  return NC_OK;
}

void nc_dist_reqs_free(nc_dist_reqs *r) {
  if (!r) return;
#ifdef NC_HAVE_MPI
  free(r->h);
#endif
  free(r->pending);
  free(r);
}

static nc_status nc_dist_slot(const nc_dist_reqs *r, int slot, size_t n, const char *what) {
  if (slot < 0 || slot >= r->n || r->pending[slot]) return nc_errorf(NC_E_INTERNAL, "dist %s: request slot %d is busy or out of range", what, slot);
  if (n > INT_MAX) return nc_errorf(NC_E_INTERNAL, "dist %s: %zu elements exceed MPI's int count", what, n);
  return NC_OK;
}

#ifdef NC_HAVE_MPI
#define NC_DIST_START(d, r, slot, what, call)                  \
  do {                                                         \
    r->pending[slot] = 1;                                      \
    if ((d)->world <= 1) return NC_OK;                         \
    nc_status st_ = nc_mpi_err((call), what);                  \
    if (st_) r->pending[slot] = 0;                             \
    return st_;                                                \
  } while (0)
#else
#define NC_DIST_START(d, r, slot, what, call)                                                  \
  do {                                                                                         \
    r->pending[slot] = 1;                                                                      \
    if ((d)->world <= 1) return NC_OK;                                                         \
    r->pending[slot] = 0;                                                                      \
    return nc_errorf(NC_E_UNSUPPORTED, "%s over %d ranks without MPI", what, (d)->world);      \
  } while (0)
#endif

nc_status nc_dist_iallreduce_f32(const nc_dist *d, float *buf, size_t n, nc_dist_reqs *r, int slot) {
  NC_TRY(nc_dist_slot(r, slot, n, "iallreduce"));
  NC_DIST_START(d, r, slot, "iallreduce", MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r->h[slot]));
}

nc_status nc_dist_iallreduce_f64(const nc_dist *d, double *buf, size_t n, nc_dist_reqs *r, int slot) {
  NC_TRY(nc_dist_slot(r, slot, n, "iallreduce"));
  NC_DIST_START(d, r, slot, "iallreduce", MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &r->h[slot]));
}

nc_status nc_dist_ireduce_f32(const nc_dist *d, float *buf, size_t n, int root, nc_dist_reqs *r, int slot) {
  NC_TRY(nc_dist_slot(r, slot, n, "ireduce"));
  if (root < 0 || root >= d->world) return nc_errorf(NC_E_INTERNAL, "dist ireduce: root %d outside 0..%d", root, d->world - 1);
  NC_DIST_START(d, r, slot, "ireduce",
                MPI_Ireduce(d->rank == root ? MPI_IN_PLACE : buf, d->rank == root ? buf : NULL, (int)n, MPI_FLOAT, MPI_SUM, root,
                            MPI_COMM_WORLD, &r->h[slot]));
}

nc_status nc_dist_ibcast_f32(const nc_dist *d, float *buf, size_t n, int root, nc_dist_reqs *r, int slot) {
  NC_TRY(nc_dist_slot(r, slot, n, "ibcast"));
  if (root < 0 || root >= d->world) return nc_errorf(NC_E_INTERNAL, "dist ibcast: root %d outside 0..%d", root, d->world - 1);
  NC_DIST_START(d, r, slot, "ibcast", MPI_Ibcast(buf, (int)n, MPI_FLOAT, root, MPI_COMM_WORLD, &r->h[slot]));
}

nc_status nc_dist_progress(nc_dist_reqs *r, int *done) {
  int n = 0;
#ifdef NC_HAVE_MPI
  for (int i = 0; i < r->n; i++) {
    if (r->h[i] == MPI_REQUEST_NULL) continue;
    int flag = 0;
    NC_TRY(nc_mpi_err(MPI_Test(&r->h[i], &flag, MPI_STATUS_IGNORE), "test"));
    n += flag != 0;
  }
#endif
  if (done) *done = n;
  return NC_OK;
}

nc_status nc_dist_waitany(nc_dist_reqs *r, int *slot) {
  *slot = -1;
  for (int i = 0; i < r->n; i++)  // completed already (nc_dist_progress, or a world of one)
#ifdef NC_HAVE_MPI
    if (r->pending[i] && r->h[i] == MPI_REQUEST_NULL) {
#else
    if (r->pending[i]) {
#endif
      r->pending[i] = 0;
      *slot = i;
      return NC_OK;
    }
#ifdef NC_HAVE_MPI
  bool any_mpi = false;
  for (int i = 0; i < r->n && !any_mpi; i++) any_mpi = r->h[i] != MPI_REQUEST_NULL;
  if (any_mpi) {
    int idx = MPI_UNDEFINED;
    NC_TRY(nc_mpi_err(MPI_Waitany(r->n, r->h, &idx, MPI_STATUS_IGNORE), "waitany"));
    if (idx != MPI_UNDEFINED) {
      r->pending[idx] = 0;
      *slot = idx;
      return NC_OK;
    }
  }
#endif
  return NC_OK;
}

nc_status nc_dist_waitall(nc_dist_reqs *r) {
  for (int k;;) {
    NC_TRY(nc_dist_waitany(r, &k));
    if (k < 0) return NC_OK;
  }
}

// ---- optimizer sharding plan ---------------------------------------------------

nc_status nc_dist_partition(const int64_t *numel, int n, int world, int64_t small_below, int *owner) {
  if (world < 1) return nc_errorf(NC_E_INVALID, "partition over %d ranks", world);
  int64_t *load = calloc((size_t)world, sizeof *load);  // elements per rank
  if (!load) return nc_errorf(NC_E_NOMEM, "partition: out of memory for %d ranks", world);
  for (int i = 0; i < n; i++) owner[i] = numel[i] < small_below ? -1 : -2;
  for (;;) {  // largest unassigned tensor first (ties: the lower index)
    int best = -1;
    for (int i = 0; i < n; i++)
      if (owner[i] == -2 && (best < 0 || numel[i] > numel[best])) best = i;
    if (best < 0) break;
    int r = 0;
    for (int k = 1; k < world; k++)
      if (load[k] < load[r]) r = k;
    owner[best] = r;
    load[r] += numel[best];
  }
  free(load);
  return NC_OK;
}
