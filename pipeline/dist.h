// The data-parallel world: ranks launched by `mpirun -np N nanochat ...`
// (Open MPI, or any MPI the build found through CMake's FindMPI). Without
// MPI in the build, or when not launched by mpirun, the world is one rank
// and every collective is the identity. MPI itself is process-wide state;
// this module is its only user.
#ifndef NC_PIPELINE_DIST_H
#define NC_PIPELINE_DIST_H

#include <stdbool.h>
#include <stddef.h>

#include "support/status.h"

typedef struct {
  int rank, world;
  bool mpi;  // MPI was initialized (and must be finalized)
} nc_dist;

// Joins the world when launched by an MPI launcher (environment variables
// OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK), else a world of one.
nc_status nc_dist_init(nc_dist *d);
void nc_dist_finalize(nc_dist *d);
bool nc_dist_available(void);  // built with MPI

// In-place sums over the ranks. Errors name the collective.
nc_status nc_dist_allreduce_f32(const nc_dist *d, float *buf, size_t n);
nc_status nc_dist_allreduce_f64(const nc_dist *d, double *buf, size_t n);
nc_status nc_dist_barrier(const nc_dist *d);
// Ends every rank of the job (MPI_Abort) with this exit code.
void nc_dist_abort(const nc_dist *d, int code);

#endif
