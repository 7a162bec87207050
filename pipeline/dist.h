// The data-parallel world: ranks launched by `mpirun -np N nanochat ...`
// (Open MPI, or any MPI the build found through CMake's FindMPI). Without
// MPI in the build, or when not launched by mpirun, the world is one rank
// and every collective is the identity. MPI itself is process-wide state;
// this module is its only user.
#ifndef NC_PIPELINE_DIST_H
#define NC_PIPELINE_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

// ---- nonblocking collectives (overlap: docs/distributed.md) ---------------------
// A fixed set of request slots. Every rank must start the same collectives in
// the same order (MPI's rule). A buffer must not be touched until its slot
// has completed (nc_dist_waitany / nc_dist_waitall). With a world of one every
// collective is the identity and completes at once. Counts are at most INT_MAX.
typedef struct nc_dist_reqs nc_dist_reqs;
nc_status nc_dist_reqs_new(int slots, nc_dist_reqs **out);
void nc_dist_reqs_free(nc_dist_reqs *r);
// In-place sums over the ranks into every rank's buf.
nc_status nc_dist_iallreduce_f32(const nc_dist *d, float *buf, size_t n, nc_dist_reqs *r, int slot);
nc_status nc_dist_iallreduce_f64(const nc_dist *d, double *buf, size_t n, nc_dist_reqs *r, int slot);
// Sum over the ranks into root's buf (the other ranks' buf is only read).
nc_status nc_dist_ireduce_f32(const nc_dist *d, float *buf, size_t n, int root, nc_dist_reqs *r, int slot);
// root's buf to every rank's buf.
nc_status nc_dist_ibcast_f32(const nc_dist *d, float *buf, size_t n, int root, nc_dist_reqs *r, int slot);
// Waits for one pending slot to complete: *slot gets it, or -1 when none is pending.
nc_status nc_dist_waitany(nc_dist_reqs *r, int *slot);
nc_status nc_dist_waitall(nc_dist_reqs *r);

// ---- optimizer sharding (ZeRO-2 style, docs/distributed.md) ---------------------
// Assigns n tensors of numel[i] elements to world ranks: tensors with fewer
// than small_below elements get owner -1 (replicated: all-reduced, updated by
// every rank, as nanochat's small AdamW tensors); the others, whole, to the
// rank with the fewest elements so far, largest tensors first (ties: the
// lower index and the lower rank), so every rank derives the same plan.
nc_status nc_dist_partition(const int64_t *numel, int n, int world, int64_t small_below, int *owner);

#endif
