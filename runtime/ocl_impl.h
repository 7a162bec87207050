// Internal to the OpenCL device (runtime/ocl_device.c, runtime/ocl_launch.c): the
// compiled plan's state and the template launches. Not for other modules: they use
// runtime/ocl_device.h.
#ifndef NC_RUNTIME_OCL_IMPL_H
#define NC_RUNTIME_OCL_IMPL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include "codegen/ocl_attn.h"
#include "passes/memplan.h"
#include "runtime/ocl_device.h"
#include "runtime/ocl_tune.h"
#include "runtime/plan_run.h"

typedef struct {
  cl_platform_id plat;
  cl_device_id dev;
  nc_ocl_device_desc d;
  cl_device_type type;
} nc_oc_dev;

// The name of an OpenCL error code, for messages.
const char *nc_oc_errname(cl_int e);
#define NC_CL_ERR(err, what) nc_errorf(NC_E_INTERNAL, "OpenCL %s failed: %s (%d)", what, nc_oc_errname(err), (int)(err))

struct nc_ocl {
  nc_oc_dev dev;
  cl_context ctx;
  cl_command_queue q;
  cl_program prog;
  nc_ocl_knobs knobs;
  int nk;                  // plan kernels
  int *uniq;               // per plan kernel: its unique kernel (loop kernels) or -1 (GEMM)
  nc_ocl_launch *launch;   // per plan kernel
  int nuniq;
  cl_kernel *kern;         // per unique kernel
  cl_kernel gemm[8];       // the portable and register-staged GEMMs by variant (ta*2 + tb, + NC_OCL_GEMM_BF16)
  nc_ocl_tuned_gemm *tuned;  // per-shape GEMMs from the tuning database (runtime/ocl_tune.h)
  cl_kernel *tuned_kern;
  cl_kernel (*tuned_pv)[NC_OCL_GEMMP_NVAR];  // per tuned entry of the pipelined GEMM: its kernel by variant flags
  int ntuned;
  int64_t tuned_calls;     // launches that ran a tuned pipelined GEMM (nc_ocl_tuned_calls)
  // the pipelined bf16 GEMM (knobs.tc_stages > 0): pack kernels, the GEMM, the split-K sum,
  // and their scratch buffers (grown on demand)
  cl_kernel pack_k, pack_t, pack_kh, pack_th, gemm_p, splitk_sum;
  cl_kernel gemm_pv[NC_OCL_GEMMP_NVAR];  // the GEMM kernel by variant flags (NC_OCL_GEMMP_*; [0] is gemm_p; the others only with bf16 GEMMs)
  bool direct_off;         // NC_OCL_GEMM_DIRECT=0: bf16 operands are packed even where the kernel could read them in place
  cl_mem packed, partial;
  size_t packed_bytes, partial_bytes;
  // flash attention (codegen/ocl_attn.h): kernels per padded head-dim pair, the mode
  // (0 fp32, 1 mma.sync, 2 emulated bf16) and the backward's (lse, Di) scratch
  struct {
    int dp, dvp;
    cl_kernel fwd, dq, dkdv;
    nc_ocl_tuned_flash ft[NC_OCL_MAX_TUNED_FLASH];  // per-shape tuned blocks (runtime/ocl_tune.h) and their kernels by set
    int nft, nfsets;
    cl_kernel tk[NC_OCL_MAX_TUNED_FLASH][3];  // fwd, dq, dkdv of set j
  } attn[4];
  int64_t attn_tuned_calls;  // attention calls that ran tuned blocks (nc_ocl_flash_tuned_calls)
  int loop_wg_tuned[NC_OCL_WG_SLOTS];  // > 0: the tuned work-group of elementwise loop kernels by size bucket
  int64_t loop_tuned_calls;  // loop-kernel launches that ran a tuned work-group (nc_ocl_loop_tuned_calls)
  int row_wg_tuned[NC_OCL_ROW_SLOTS];  // > 0: the tuned row_wg of row kernels by row-length bucket (nc_ocl_row_slot)
  int row_tuned_kernels;  // plan kernels emitted with a tuned row_wg (nc_ocl_row_tuned_kernels)
  int reduce_wg_tuned[NC_OCL_WG_SLOTS];  // > 0: the tuned reduce_wg of whole-buffer reductions by element-count bucket
  int reduce_tuned_kernels;  // plan kernels emitted with a tuned reduce_wg (nc_ocl_reduce_tuned_kernels)
  int nattn, attn_tc;
  cl_mem attn_st;
  size_t attn_st_bytes;
  nc_ocl_attn_blocks attn_bl;  // block sizes (NC_OCL_FA overrides the mode's defaults)
  // per forward call whose backward reads its statistics (call arg 11): the rows'
  // logsumexp, then room for the backward's Di, (2, B*Hq*Tq) f32, keyed by the
  // forward's node (the backward's last buffer is that node's output O)
  struct nc_oc_lse { nc_id node; cl_mem buf; size_t bytes; } *attn_lse;
  int nattn_lse;
  bool attn_stats_force;   // NC_OCL_FA_STATS=1: the backward recomputes the statistics anyway
  cl_kernel attn_di;       // Di = rowsum(dO * O) into a backward's statistics
  bool any_scatter;        // scatter_add calls (codegen/ocl_scatter.h): their kernels by ids type
  cl_kernel scatter[2];    // i32, i64
  cl_kernel attn_pack;     // bf16 modes: q, k, v, dO packed to padded bf16 rows first
  cl_mem attn_pk;
  size_t attn_pk_bytes;
  int ncu;                 // compute units (split-K aims at 2 work-groups per unit)
  int splitk_force;        // NC_OCL_SPLITK: > 0 forces that many splits (1: none)
  bool profile, verbose, cache_hit;
  uint64_t key;
  double compile_s;
  // per node: the device buffer that holds it and its element offset there.
  // Leaves (inputs, params) have their own buffers; every other materialized
  // node is a view into one arena laid out by the memory planner.
  uint32_t nnodes;
  unsigned char *used;     // node is read or written by some kernel
  unsigned char *kept;     // leaf node: its buffer holds a value a kept output left there
  cl_mem *mem;             // per node: its own buffer (leaves)
  size_t *memsz;
  cl_mem *view;            // per node: the buffer holding it (its own or the arena)
  cl_long *off;            // per node: element offset into view[i]
  cl_mem arena;
  size_t arena_bytes;
  nc_memplan *mp;          // for syms
  int64_t syms[NC_MAX_SYMS];
  // profile
  double *ksec;            // per plan kernel: device seconds over all runs
  int64_t *kcalls;
  double *kflop;           // per plan kernel (GEMM): flops of its last launch
  int64_t *kitems;         // per plan kernel (loops): work-items of its last launch (packed GEMMs: operands read in place, 1 A, 2 B)
  double *kflops_sum;      // per plan kernel: flops of the timed calls
  double *kbytes;          // per plan kernel (loops): bytes of the buffers it reads or writes, at its last launch
  double *kbytes_sum;      // per plan kernel: kbytes of the timed calls
  double last_run_s;
  cl_event *ev;            // per plan kernel, last run
  cl_event *ev0;           // per plan kernel: the first of several commands (packed GEMM), last run
  // readback during a run (nc_ocl_set_readback), pinned host memory (nc_ocl_host_alloc)
  struct nc_oc_rb *rb;
};

// The template launches (runtime/ocl_launch.c), each enqueueing plan kernel q's
// commands on c's queue; evp (profiling) receives the last command's event.
// The tensor-core GEMM over packed or in-place operands; v: the call's arguments
// (batch, M, N, K, ta, tb, sa, sb, beta), variant: ta*2 + tb (+ NC_OCL_GEMM_BF16).
nc_status nc_oc_launch_packed(nc_ocl *c, int q, const nc_plan_kernel *pk, const int64_t *v, int variant, cl_event *evp);
// scatter_add with float atomics (codegen/ocl_scatter.h); args: the kernel's arguments.
nc_status nc_oc_launch_scatter(nc_ocl *c, int q, const nc_plan_kernel *pk, const int64_t *args, cl_event *evp);
// Flash attention, forward or backward (codegen/ocl_attn.h); args: the kernel's arguments.
nc_status nc_oc_launch_attn(nc_ocl *c, int q, const nc_plan_kernel *pk, const int64_t *args, cl_event *evp);

// Profiling (runtime/ocl_profile.c): the bytes of the buffers plan kernel pk reads or
// writes, each counted once at its whole size under syms (an upper bound of its traffic);
// and the profile summed by op (the kernel name without its "k<N>_" prefix), the top
// rows with their share, calls, bytes and GB/s, after nc_ocl_profile_print's kernels.
double nc_oc_kernel_bytes(const nc_graph *g, const nc_plan_kernel *pk, const int64_t *syms);
void nc_oc_profile_by_op(const nc_ocl *c, const nc_plan *p, int top, FILE *f);

// The wgmma GEMM's second build (runtime/ocl_device.c): *p, built from source with -DNC_WG_HIDE, is
// replaced by the program of its patched PTX (instructions restored, sm_90a); on error *p is released
// and NULL. For programs outside a plan (the autotuner's candidates, runtime/tuner_ocl.c).
nc_status nc_ocl_wgmma_rebuild(cl_context ctx, cl_device_id dev, const char *devname, cl_program *p, const char *opts);

#endif
