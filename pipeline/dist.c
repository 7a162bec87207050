// The data-parallel world over MPI (dist.h).
#include "pipeline/dist.h"

#include <limits.h>
#include <stdlib.h>

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

void nc_dist_abort(const nc_dist *d, int code) {
#ifdef NC_HAVE_MPI
  if (d->mpi) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  (void)d;
  exit(code);
}
