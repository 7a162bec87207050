// Graphs compiled for a device and run by name: the runtime's device
// interface. "interp" runs the reference interpreter; "cpu" decomposes,
// fuses, lowers and JIT-compiles the graph once (plans are reused for every
// call, whatever the symbol sizes); "eval" runs the lowered kernels on the
// kernel-IR evaluator (for testing lowering); "opencl[:SEL]" runs the same
// plans as OpenCL C on an OpenCL device (runtime/ocl_device.h: SEL is an
// index, gpu/cpu or a name substring).
#ifndef NC_RUNTIME_EXEC_H
#define NC_RUNTIME_EXEC_H

#include "ir/graph.h"
#include "passes/lower.h"
#include "passes/pass.h"
#include "runtime/interp.h"

typedef enum { NC_DEV_INTERP, NC_DEV_CPU, NC_DEV_EVAL, NC_DEV_OPENCL } nc_device_kind;

typedef struct {
  nc_device_kind kind;
  int threads;     // cpu: 0 = one per core
  bool avx2_only;  // cpu: AVX2 code even on AVX-512 machines
  bool verbose;    // print generated kernels (opencl: also per-kernel timings)
  char select[64];  // opencl: the device selector after "opencl:" ("" = first GPU, else first device)
  char name[80];    // opencl: "opencl" or "opencl:<select>" (nc_device_name)
  bool matmul_bf16; // opencl: matmuls in bf16 with fp32 accumulation (tensor cores on NVIDIA); false = fp32
} nc_device;

// "interp", "cpu", "cpu:avx2", "eval", "opencl", "opencl:N", "opencl:gpu",
// "opencl:cpu", "opencl:<name substring>". threads is left at 0 (set it after).
nc_status nc_device_parse(const char *s, nc_device *out);
const char *nc_device_name(const nc_device *d);
// The matmul precision ("bf16" | "fp32"; --precision): bf16 rounds the GEMM
// operands to bf16 and accumulates in fp32 (tensor cores on NVIDIA OpenCL
// devices, the fp32 GEMM elsewhere); the graph and its buffers stay fp32.
// NC_OCL_MATMUL=bf16|fp32 overrides it; NC_OCL_TC=BM,BN,WM,WN,BK[,MODE] sets
// the bf16 kernel's knobs (codegen/ocl_emit.h).
nc_status nc_device_set_precision(nc_device *d, const char *s);

// The fusion patterns (passes/pass.h NC_PATTERN_*) switched off when
// compiling for d: NC_PATTERNS_OFF, plus those the OpenCL emitter lacks.
unsigned nc_device_patterns_off(const nc_device *d);
// The patterns forced when compiling for d (NC_PATTERN_FLASH_ATTENTION on OpenCL
// unless switched off); nc_lower_opts.flash_attention is on exactly when that bit is.
unsigned nc_device_patterns_force(const nc_device *d);
// Whether scatter_add lowers to the float-atomic template call for d
// (nc_lower_opts.scatter_atomic): on OpenCL unless NC_OCL_SCATTER=0.
bool nc_device_scatter_atomic(const nc_device *d);
// The lowering options of a compilation for d (NULL: no device, the CPU's
// defaults) after decompose ran with ctx: ctx's patterns off, its forced
// SOFTCAP_CE and FLASH_ATTENTION bits, the device's scatter_add form.
nc_lower_opts nc_device_lower_opts(const nc_device *d, const nc_pass_ctx *ctx);

typedef struct nc_exec nc_exec;

// Prepares g (copied: the caller keeps g) for device d.
nc_status nc_exec_new(const nc_graph *g, const nc_device *d, nc_exec **out);
void nc_exec_free(nc_exec *e);
// outputs[k] receives output k of the graph (owned), as nc_interp_run.
nc_status nc_exec_run(nc_exec *e, const nc_feed *feeds, int nfeeds, nc_tensor *outputs);
const nc_graph *nc_exec_graph(const nc_exec *e);  // the graph as given (outputs, names)
// A progress hook for the following runs (cpu and eval devices; overlapping
// communication with a run, pipeline/trainer.c): nc_exec_run calls, on the
// calling thread, hook(ctx, k, value) as soon as output k is final (right
// after the last kernel that writes it; value is a view valid during the
// call only) and hook(ctx, -1, NULL) after every kernel. An error from the
// hook stops the run. hook NULL removes it. Other devices: NC_E_UNSUPPORTED.
typedef nc_status (*nc_exec_hook)(void *ctx, int output, const nc_tensor *value);
nc_status nc_exec_set_hook(nc_exec *e, nc_exec_hook hook, void *ctx);
// As nc_exec_set_hook, and on OpenCL too, with destinations: dst (one
// pointer per output, copied; NULL entries: not reported) receives output k
// as soon as it is final, then hook(ctx, k, view of dst[k]) is called. cpu,
// eval: copied right after the kernel that finishes it, ticks after every
// kernel. opencl: a non-blocking read on a second queue enqueued right after
// that kernel (dst from nc_exec_host_alloc is pinned: the copy runs under
// the following kernels at full speed); once every kernel is enqueued the
// run reports each read as it lands and ticks (hook(ctx, -1, NULL)) between
// polls of the device, so communication progresses while it computes;
// outputs no kernel writes are not reported there. hook NULL removes it.
// The data-parallel overlap (pipeline/trainer.c, docs/distributed.md).
nc_status nc_exec_set_hook_into(nc_exec *e, nc_exec_hook hook, void *ctx, void *const *dst);
// The kernel after which output k is final (0-based, in run order; -1: no
// kernel writes it); -2 on devices without plans (interp).
int nc_exec_output_kernel(nc_exec *e, int k);
// Host memory for transfers with e's device: page-locked on OpenCL (a mapped
// CL_MEM_ALLOC_HOST_PTR buffer of e's context), plain elsewhere; zeroed.
// Give it back with nc_exec_host_free before freeing e.
nc_status nc_exec_host_alloc(nc_exec *e, size_t bytes, void **out);
void nc_exec_host_free(nc_exec *e, void *p);
// Zeroes the device copy of leaf `name` that e keeps (nc_exec_keeps), on
// the device (before e's next run).
nc_status nc_exec_zero_kept(nc_exec *e, const char *name);
// The graph whose inputs/params nc_exec_run binds (passes may have dropped
// unused ones): feed exactly the leaves of this graph.
const nc_graph *nc_exec_feed_graph(const nc_exec *e);
double nc_exec_compile_seconds(const nc_exec *e);
int nc_exec_nkernels(const nc_exec *e);
// Device residency (opencl; NC_OCL_RESIDENT=0 turns it off): a run can leave
// the tensors it updates (output "new.X" of a fed leaf X) in the device's
// buffer of X instead of reading them back, and later runs use them there
// without uploading. runtime/session.c drives this (nc_session_get reads a
// tensor back when the host asks for it); other callers never see it.
bool nc_exec_keeps(const nc_exec *e);
// As nc_exec_run; feeds f with on_device[f] are not uploaded (the device's
// copy of that leaf, kept by an earlier run, is current); output k with
// keep[k] = f >= 0 (feed f, a leaf of the same type) is copied into feed f's
// device buffer and not returned (outputs[k] stays empty). keep[k] is set to
// -1 where that was not possible (the output was returned as usual).
nc_status nc_exec_run_kept(nc_exec *e, const nc_feed *feeds, int nfeeds, const bool *on_device, int *keep, nc_tensor *outputs);
// Reads the device copy of leaf `name` into t (allocated with its shape).
nc_status nc_exec_read_kept(nc_exec *e, const char *name, nc_tensor *t);
// The session whose tensors this exec holds (runtime/session.c); freeing the
// exec first reads them back into it.
struct nc_session *nc_exec_session(const nc_exec *e);
void nc_exec_set_session(nc_exec *e, struct nc_session *s);
// cpu, opencl: prints the kernels that took the most time so far (to stderr;
// opencl times kernels only with --verbose, NC_DEBUG>=1 or NC_PROFILE set, and
// prints its top 20 when freed with --verbose or NC_DEBUG>=2).
void nc_exec_profile_print(const nc_exec *e, int top);
// cpu: trace the kernel launches of the following runs; write them as Chrome
// trace JSON (an error on other devices).
nc_status nc_exec_trace_start(nc_exec *e);
nc_status nc_exec_trace_write(nc_exec *e, const char *path);

#endif
