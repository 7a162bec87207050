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

#include "runtime/exec.h"
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
// root's buf to every rank (blocking).
nc_status nc_dist_bcast_i32(const nc_dist *d, int32_t *buf, size_t n, int root);
// This rank's place among the ranks of its node: Open MPI's
// OMPI_COMM_WORLD_LOCAL_RANK/_SIZE, else MPI_Comm_split_type(MPI_COMM_TYPE_SHARED).
nc_status nc_dist_local(const nc_dist *d, int *local_rank, int *local_size);
// One GPU per rank: with more than one rank, `--device opencl` and
// `opencl:gpu` become opencl:<index> of this node's GPU number
// (local rank mod GPUs), in `nanochat devices` order. An explicit index or
// name, other devices and a world of one stay as given. note (may be NULL)
// gets a line saying what was picked ("" when nothing changed).
nc_status nc_dist_pick_device(const nc_dist *d, nc_device *dev, char *note, size_t cap);
// Call before nc_dist_init with the command's device: under an MPI launcher
// with an OpenCL device, loads the OpenCL platforms before MPI_Init. (On the
// 2-GPU H100 machine, ranks that enumerated OpenCL after MPI_Init saw no GPU
// while the same binary outside mpirun saw both; the cause is not confirmed,
// docs/distributed.md. Loading the platforms first rules MPI_Init out.)
void nc_dist_before_init(const nc_device *dev);
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
// Lets pending collectives progress without blocking (Open MPI's nonblocking
// collectives move only inside MPI calls): call it between pieces of work.
// *done (may be NULL) gets how many completed now.
nc_status nc_dist_progress(nc_dist_reqs *r, int *done);
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
