// The OpenCL device: a plan (passes/lower.h) compiled to one OpenCL program
// (codegen/ocl_emit.h) for one device, and run on it: device buffers per
// materialized node, kept across runs while the symbol sizes stay the same;
// feeds uploaded and outputs read back per run, except what a session keeps
// on the device (nc_ocl_run_kept: a training step's params and optimizer
// state); one in-order queue; kernel timings from profiling events when asked.
//
// Devices are chosen by a selector, in the order `nanochat devices` lists
// them (platforms in ICD order, then their devices):
//   ""            the first GPU, else the first accelerator, else the first device
//   "N"           device N of that list
//   "gpu" | "cpu" the first device of that type
//   other text    the first device whose "platform | platform vendor | name"
//                 contains it, in any case ("nvidia", "pocl", "h100")
#ifndef NC_RUNTIME_OCL_DEVICE_H
#define NC_RUNTIME_OCL_DEVICE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "codegen/ocl_attn.h"
#include "codegen/ocl_emit.h"
#include "passes/lower.h"
#include "runtime/interp.h"

typedef struct {
  int index;  // in `nanochat devices` order
  char platform[128], platform_vendor[128], name[128], vendor[128], version[128], platform_version[128], driver[64];
  bool gpu;
} nc_ocl_device_desc;

// Resolves a selector (see above) without opening the device.
nc_status nc_ocl_select(const char *sel, nc_ocl_device_desc *out);
// True when at least one OpenCL device exists (tests skip otherwise).
bool nc_ocl_available(void);

typedef struct {
  const char *select;          // device selector (NULL = "")
  bool verbose;                // print the program source and build log to stderr
  bool profile;                // time every kernel with profiling events
  const nc_ocl_knobs *knobs;   // NULL: the device's defaults
  bool knobs_tuned;            // with knobs: still take per-shape knobs from the tuning database (tests: the
                               // emulated pipelined GEMM, gemm_tc 2, off NVIDIA); default false: explicit knobs only
  bool matmul_bf16;            // GEMMs in bf16 (fp32 accumulation) on tensor cores when the device is NVIDIA
                               // (knobs.gemm_tc = 1); elsewhere the fp32 GEMM. Default false: exact fp32.
  const nc_ocl_attn_blocks *attn_blocks;  // flash-attention blocks for every call (the tuner's candidates;
                               // checked, tuned blocks off); NULL: the mode's defaults, NC_OCL_FA, the database
  bool wg_untuned;             // no tuned row_wg / reduce_wg from the database (nc_ocl_compile builds the plan
                               // again this way when a plan kernel cannot take a tuned work-group)
} nc_ocl_opts;

typedef struct nc_ocl nc_ocl;

// Opens the device and builds the plan's program (through the binary cache).
nc_status nc_ocl_compile(const nc_plan *p, const nc_ocl_opts *o, nc_ocl **out);
void nc_ocl_free(nc_ocl *c);
// Runs the plan over g (the graph p was built from): binds the symbols from
// the feeds, outputs[k] receives output k (owned), as nc_interp_run.
nc_status nc_ocl_run(nc_ocl *c, const nc_graph *g, const nc_plan *p, const nc_feed *feeds, int nfeeds, nc_tensor *outputs);

// Device residency (runtime/exec.h nc_exec_run_kept): feeds f with
// on_device[f] are not uploaded (their leaf buffer holds the value a kept
// output left there; an error if it does not); output k with keep[k] = f >= 0
// is copied on the device into feed f's leaf buffer after the kernels and not
// read back (outputs[k] stays empty); keep[k] becomes -1 where that is not
// possible (another type or size, the output is itself a fed leaf, the leaf
// has no device buffer) and the output is returned as usual.
nc_status nc_ocl_run_kept(nc_ocl *c, const nc_graph *g, const nc_plan *p, const nc_feed *feeds, int nfeeds, const bool *on_device,
                          int *keep, nc_tensor *outputs);
// Reads leaf node id's device buffer (bytes, all of it) into dst.
nc_status nc_ocl_read_leaf(nc_ocl *c, uint32_t id, void *dst, size_t bytes);

const nc_ocl_device_desc *nc_ocl_device(const nc_ocl *c);
double nc_ocl_compile_seconds(const nc_ocl *c);
bool nc_ocl_cache_hit(const nc_ocl *c);  // the program came from the binary cache
uint64_t nc_ocl_program_key(const nc_ocl *c);
int nc_ocl_unique_kernels(const nc_ocl *c);  // loop kernels with distinct code (+ GEMM variants)
// Per-kernel device time summed over all runs (profile on): the top kernels to f.
void nc_ocl_profile_print(const nc_ocl *c, const nc_plan *p, int top, FILE *f);
// Total device time of the kernels of the last run, in seconds (profile on; else 0).
double nc_ocl_last_run_seconds(const nc_ocl *c);
// The knobs the program was built with (gemm_tc says which GEMM runs).
const nc_ocl_knobs *nc_ocl_knobs_used(const nc_ocl *c);
// GEMMs tuned for this device (the tuning database, runtime/tunedb.h): how
// many the program holds, and the knobs a GEMM launch of variant (ta*2 + tb;
// the pipelined GEMM's entries match by form, over f32 or bf16 buffers) and
// this shape runs with (true: from the database).
int nc_ocl_tuned_count(const nc_ocl *c);
// Launches so far that ran a tuned pipelined bf16 GEMM kernel (per-shape knobs from the database).
int64_t nc_ocl_tuned_calls(const nc_ocl *c);
// Flash-attention calls that ran tuned blocks, loop-kernel launches that ran a tuned work-group
// (space ocl.flash / ocl.loop, runtime/ocl_tune.h), since the compilation.
int64_t nc_ocl_flash_tuned_calls(const nc_ocl *c);
int64_t nc_ocl_loop_tuned_calls(const nc_ocl *c);
// Kernels of the plan emitted with a tuned row work-group (ocl.loop class=row; launch row_wg).
int nc_ocl_row_tuned_kernels(const nc_ocl *c);
// Kernels of the plan emitted with a tuned reduction work-group (ocl.loop class=reduce; launch reduce_wg).
int nc_ocl_reduce_tuned_kernels(const nc_ocl *c);
// How plan kernel q is launched (its work-groups: row_wg, reduce_wg), or NULL.
const nc_ocl_launch *nc_ocl_kernel_launch(const nc_ocl *c, int q);
// Tuned flash-attention block sets in the program (all head-dim pairs).
int nc_ocl_flash_tuned_sets(const nc_ocl *c);
bool nc_ocl_gemm_knobs_for(const nc_ocl *c, int variant, int64_t batch, int64_t m, int64_t n, int64_t k, nc_ocl_knobs *out);
// The pipelined / wgmma GEMM's split-K count (runtime/ocl_launch.c; NC_OCL_SPLITK overrides it) for
// `tiles` block tiles (all batches), nkt k-steps, ncu compute units, mn output elements (all batches)
// and tile_macs = tc_bm * tc_bn * tc_bk: 1 when the tiles alone fill two work-groups per compute unit
// or there are fewer than 8 k-steps, else the count in 1..min(16, nkt / 4) with the fewest waves of
// k-steps (ceil(tiles * s / slots) * ceil(nkt / s)) plus the split sum's traffic.
int64_t nc_ocl_splitk_choose(int64_t tiles, int64_t nkt, int ncu, int64_t mn, int64_t tile_macs);

// ---- readback during a run, pinned host memory, fills (the data-parallel overlap) ----
// Output k with dst[k] != NULL (dst: nout pointers, copied; NULL turns it
// off) is read into dst[k] during the following runs by a non-blocking read
// on a second queue, enqueued right after the last kernel that writes it and
// waiting for that kernel (an event marker), so the copy runs under the
// kernels that follow. Once every kernel is enqueued the run polls the reads
// in order: fn(ctx, k, view of dst[k]) as soon as output k's read has
// completed, fn(ctx, -1, NULL) between polls (the caller's communication
// progresses while the device computes). Outputs no kernel writes (fed
// leaves) are not reported. An error from fn is returned after the reads in
// flight have finished.
nc_status nc_ocl_set_readback(nc_ocl *c, nc_status (*fn)(void *ctx, int output, const nc_tensor *value), void *ctx,
                              void *const *dst, int nout);
// Page-locked host memory of this device's context (a CL_MEM_ALLOC_HOST_PTR
// buffer, mapped): reads and writes between it and the device run at full
// speed and asynchronously. Valid until nc_ocl_host_free or nc_ocl_free.
nc_status nc_ocl_host_alloc(nc_ocl *c, size_t bytes, void **out);
void nc_ocl_host_free(nc_ocl *c, void *p);
// Zeroes leaf node id's kept device copy (non-blocking, before the next run).
nc_status nc_ocl_zero_leaf(nc_ocl *c, uint32_t id);

#endif
