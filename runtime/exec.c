#include "runtime/exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "passes/lower.h"
#include "passes/pass.h"
#include "runtime/cpu.h"
#include "runtime/ocl_device.h"
#include "runtime/plan_run.h"
#include "runtime/session.h"
#include "support/clock.h"

// Fusion patterns the OpenCL emitter lowers (passes/pass.h NC_PATTERN_*):
// every pattern that lowers to loop nests and the matmul template (tested in
// tests/test_ocl.c against the interpreter). A pattern added later stays off
// on OpenCL until it is added here.
#define NC_OCL_PATTERNS_OK                                                                                       \
  (NC_PATTERN_CROSS_ENTROPY | NC_PATTERN_ATTENTION | NC_PATTERN_SOFTCAP_CE | NC_PATTERN_NORM_ROPE |              \
   NC_PATTERN_SYMMETRIC_GEMM | NC_PATTERN_UPDATE_GROUP | NC_PATTERN_FLASH_ATTENTION | NC_PATTERN_BF16_GEMM |    \
   NC_PATTERN_RESHAPE_VIEW | NC_PATTERN_RECOMPUTE)

unsigned nc_device_patterns_off(const nc_device *d) {
  const char *off = getenv("NC_PATTERNS_OFF");
  unsigned bits = off ? (unsigned)strtoul(off, NULL, 0) : 0;
  return d->kind == NC_DEV_OPENCL ? bits | ~(unsigned)NC_OCL_PATTERNS_OK : bits;
}

// OpenCL: flash attention, the softcap's tanh recomputed in the cross-entropy
// row kernels (SOFTCAP_CE forced: a GPU is bound by the logits' bytes, not the tanh),
// and relu/neg/abs recomputed by their elementwise readers (RECOMPUTE)
unsigned nc_device_patterns_force(const nc_device *d) {
  unsigned off = nc_device_patterns_off(d);
  if (d->kind != NC_DEV_OPENCL) return 0;
  unsigned f = !(off & (NC_PATTERN_FLASH_ATTENTION | NC_PATTERN_ATTENTION)) ? NC_PATTERN_FLASH_ATTENTION : 0;
  f |= off & NC_PATTERN_RECOMPUTE ? 0 : NC_PATTERN_RECOMPUTE;
  return f | (off & NC_PATTERN_SOFTCAP_CE ? 0 : NC_PATTERN_SOFTCAP_CE);
}

bool nc_device_scatter_atomic(const nc_device *d) {
  const char *e = getenv("NC_OCL_SCATTER");
  return d->kind == NC_DEV_OPENCL && !(e && !strcmp(e, "0"));
}

nc_lower_opts nc_device_lower_opts(const nc_device *d, const nc_pass_ctx *ctx) {
  return (nc_lower_opts){.fuse = true,
                         .patterns_off = ctx->patterns_off,
                         .patterns_force = ctx->patterns_force & (NC_PATTERN_SOFTCAP_CE | NC_PATTERN_RECOMPUTE),
                         .flash_attention = (ctx->patterns_force & NC_PATTERN_FLASH_ATTENTION) != 0,
                         .scatter_atomic = d && nc_device_scatter_atomic(d)};
}

struct nc_exec {
  nc_device dev;
  nc_graph *g;        // a copy of the caller's graph
  nc_graph *lowered;  // decomposed + dce'd (cpu, eval)
  nc_plan *plan;
  nc_cpu *cpu;
  nc_ocl *ocl;
  nc_plan_mem *mem;
  double compile_s;
  nc_plan_hook hook;  // cpu, eval: nc_exec_set_hook
  nc_exec_hook ufn;   // nc_exec_set_hook_into: the caller's hook, its context and destinations
  void *uctx;
  void **dst;
  int *out_kernel;    // per output: the kernel after which it is final (lazily)
  bool keep;              // opencl: device residency on (NC_OCL_RESIDENT != 0)
  struct nc_session *sess;  // the session whose tensors this exec holds on its device
};

nc_status nc_device_parse(const char *s, nc_device *out) {
  memset(out, 0, sizeof *out);
  if (!strcmp(s, "interp")) out->kind = NC_DEV_INTERP;
  else if (!strcmp(s, "cpu")) out->kind = NC_DEV_CPU;
  else if (!strcmp(s, "cpu:avx2")) out->kind = NC_DEV_CPU, out->avx2_only = true;
  else if (!strcmp(s, "eval")) out->kind = NC_DEV_EVAL;
  else if (!strcmp(s, "opencl") || !strncmp(s, "opencl:", 7)) {
    const char *sel = s[6] ? s + 7 : "";
    if (s[6] && !*sel) return nc_errorf(NC_E_INVALID, "device '%s': empty OpenCL selector (opencl:N, opencl:gpu, opencl:cpu, opencl:<name>)", s);
    if (strlen(sel) >= sizeof out->select)
      return nc_errorf(NC_E_INVALID, "device '%.80s...': OpenCL selector longer than %zu bytes", s, sizeof out->select - 1);
    out->kind = NC_DEV_OPENCL;
    snprintf(out->select, sizeof out->select, "%s", sel);
    snprintf(out->name, sizeof out->name, "%s", s);
  } else {
    return nc_errorf(NC_E_INVALID, "unknown device '%s' (cpu, cpu:avx2, interp, eval, opencl, opencl:N|gpu|cpu|<name>)", s);
  }
  return NC_OK;
}

nc_status nc_device_set_precision(nc_device *d, const char *s) {
  if (!strcmp(s, "bf16")) d->matmul_bf16 = true;
  else if (!strcmp(s, "fp32")) d->matmul_bf16 = false;
  else return nc_errorf(NC_E_INVALID, "matmul precision '%s': want bf16 or fp32", s);
  return NC_OK;
}

const char *nc_device_name(const nc_device *d) {
  switch (d->kind) {
    case NC_DEV_INTERP: return "interp";
    case NC_DEV_CPU: return d->avx2_only ? "cpu:avx2" : "cpu";
    case NC_DEV_EVAL: return "eval";
    case NC_DEV_OPENCL: return d->name[0] ? d->name : "opencl";
  }
  return "?";
}

void nc_exec_free(nc_exec *e) {
  if (!e) return;
  if (e->sess) nc_session_detach(e->sess, e);  // the session gets its tensors back first
  if (e->ocl && (e->dev.verbose || (getenv("NC_DEBUG") && atoi(getenv("NC_DEBUG")) >= 2))) nc_ocl_profile_print(e->ocl, e->plan, 20, stderr);
  nc_ocl_free(e->ocl);
  nc_cpu_free(e->cpu);
  nc_plan_mem_free(e->mem);
  free(e->out_kernel);
  free(e->dst);
  nc_plan_free(e->plan);
  nc_graph_free(e->lowered);
  nc_graph_free(e->g);
  free(e);
}

nc_status nc_exec_new(const nc_graph *g, const nc_device *d, nc_exec **out) {
  *out = NULL;
  double t0 = nc_clock_now();
  nc_exec *e = calloc(1, sizeof *e);
  if (!e) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_status cst = nc_graph_copy(g, &e->g);
  if (cst) {
    free(e);
    return cst;
  }
  e->dev = *d;
  nc_status st = NC_OK;
  if (d->kind != NC_DEV_INTERP) {
    st = nc_graph_copy(g, &e->lowered);
    nc_pass_ctx ctx;
    nc_pass_ctx_init(&ctx);
    // NC_PATTERNS_OFF (bit values of NC_PATTERN_*); on OpenCL only the patterns its
    // emitter lowers, and attention through the flash template unless switched off
    ctx.patterns_off = nc_device_patterns_off(d);
    ctx.patterns_force |= nc_device_patterns_force(d);
    const char *passes[] = {"decompose", "dce"};
    if (!st) st = nc_pass_run_pipeline(&e->lowered, passes, 2, &ctx);
    nc_lower_opts lo = nc_device_lower_opts(d, &ctx);
    if (!st) st = nc_plan_build(e->lowered, &lo, &e->plan);
    if (!st && !(e->mem = nc_plan_mem_new())) st = nc_errorf(NC_E_NOMEM, "out of memory");
    if (!st && d->kind == NC_DEV_CPU) {
      nc_cpu_opts co = {.threads = d->threads, .avx2_only = d->avx2_only, .verbose = d->verbose};
      st = nc_cpu_compile(e->plan, &co, &e->cpu);
    }
    if (!st && d->kind == NC_DEV_OPENCL) {
      nc_ocl_knobs kn;
      // kernel timings: --verbose, NC_DEBUG>=1 or NC_PROFILE (what nc_exec_profile_print reports)
      const char *dbg = getenv("NC_DEBUG");
      bool prof = d->verbose || (dbg && atoi(dbg) >= 1) || getenv("NC_PROFILE");
      nc_ocl_opts oo = {.select = d->select, .verbose = d->verbose, .profile = prof, .matmul_bf16 = d->matmul_bf16};
      // NC_OCL_MATMUL=bf16|fp32 overrides the device's matmul precision
      const char *mp = getenv("NC_OCL_MATMUL");
      if (mp && *mp) {
        nc_device dd = *d;
        st = nc_device_set_precision(&dd, mp);
        if (st) st = nc_status_prefix(st, "NC_OCL_MATMUL: ");
        oo.matmul_bf16 = dd.matmul_bf16;
      }
      const char *ks = getenv("NC_OCL_KNOBS"), *ts = getenv("NC_OCL_TC");
      if (!st && ((ks && *ks) || (ts && *ts))) {
        nc_ocl_device_desc dd;
        st = nc_ocl_select(d->select, &dd);
        if (!st) {
          nc_ocl_knobs_default(dd.gpu, &kn);
          if (ks && *ks && (st = nc_ocl_knobs_parse(ks, &kn))) st = nc_status_prefix(st, "NC_OCL_KNOBS: ");
          if (!st && ts && *ts && (st = nc_ocl_tc_parse(ts, &kn))) st = nc_status_prefix(st, "NC_OCL_TC: ");
          oo.knobs = &kn;
        }
      }
      if (!st) st = nc_ocl_compile(e->plan, &oo, &e->ocl);
      const char *rs = getenv("NC_OCL_RESIDENT");
      e->keep = !(rs && !strcmp(rs, "0"));
      if (!st && d->verbose)
        fprintf(stderr, "opencl: %s | %s: %d kernels, %d distinct, program %s in %.3f s\n", nc_ocl_device(e->ocl)->platform,
                nc_ocl_device(e->ocl)->name, e->plan->nkernels, nc_ocl_unique_kernels(e->ocl),
                nc_ocl_cache_hit(e->ocl) ? "from the cache" : "built", nc_ocl_compile_seconds(e->ocl));
    }
  }
  if (st) {
    nc_exec_free(e);
    return nc_status_prefix(st, "preparing '%s' for device %s: ", nc_graph_name(g), nc_device_name(d));
  }
  e->compile_s = nc_clock_now() - t0;
  *out = e;
  return NC_OK;
}

nc_status nc_exec_run(nc_exec *e, const nc_feed *feeds, int nfeeds, nc_tensor *outputs) {
  if (e->sess) nc_session_detach(e->sess, e);  // a plain run uploads every feed: give kept tensors back first
  switch (e->dev.kind) {
    case NC_DEV_INTERP: return nc_interp_run(e->g, feeds, nfeeds, outputs);
    case NC_DEV_EVAL: return nc_plan_run_hooked(e->lowered, e->plan, e->mem, nc_kernel_runner_eval, NULL, &e->hook, feeds, nfeeds, outputs);
    case NC_DEV_CPU: return nc_plan_run_hooked(e->lowered, e->plan, e->mem, nc_cpu_runner, e->cpu, &e->hook, feeds, nfeeds, outputs);
    case NC_DEV_OPENCL: return nc_ocl_run(e->ocl, e->lowered, e->plan, feeds, nfeeds, outputs);
  }
  return nc_errorf(NC_E_INTERNAL, "bad device");
}

bool nc_exec_keeps(const nc_exec *e) { return e->dev.kind == NC_DEV_OPENCL && e->ocl && e->keep; }

nc_status nc_exec_run_kept(nc_exec *e, const nc_feed *feeds, int nfeeds, const bool *on_device, int *keep, nc_tensor *outputs) {
  if (!nc_exec_keeps(e)) {
    for (int f = 0; on_device && f < nfeeds; f++)
      if (on_device[f]) return nc_errorf(NC_E_INTERNAL, "feed '%s': marked on the device of %s, which keeps nothing", feeds[f].name, nc_device_name(&e->dev));
    for (int k = 0; keep && k < nc_graph_noutputs(e->g); k++) keep[k] = -1;
    return nc_exec_run(e, feeds, nfeeds, outputs);
  }
  return nc_ocl_run_kept(e->ocl, e->lowered, e->plan, feeds, nfeeds, on_device, keep, outputs);
}

nc_status nc_exec_read_kept(nc_exec *e, const char *name, nc_tensor *t) {
  nc_id id = nc_graph_find_leaf(e->lowered ? e->lowered : e->g, NC_OP_PARAM, name);
  if (id == NC_NONE) id = nc_graph_find_leaf(e->lowered ? e->lowered : e->g, NC_OP_INPUT, name);
  if (id == NC_NONE || !e->ocl) return nc_errorf(NC_E_INTERNAL, "tensor '%s' is not held on device %s", name, nc_device_name(&e->dev));
  return nc_ocl_read_leaf(e->ocl, id, t->data, nc_tensor_nbytes(t));
}

struct nc_session *nc_exec_session(const nc_exec *e) { return e->sess; }
void nc_exec_set_session(nc_exec *e, struct nc_session *s) { e->sess = s; }

const nc_graph *nc_exec_graph(const nc_exec *e) { return e->g; }

nc_status nc_exec_set_hook(nc_exec *e, nc_exec_hook hook, void *ctx) {
  if (hook && e->dev.kind == NC_DEV_OPENCL)
    return nc_errorf(NC_E_UNSUPPORTED, "run hooks on %s need destinations for the outputs (nc_exec_set_hook_into)", nc_device_name(&e->dev));
  if (hook && e->dev.kind != NC_DEV_CPU && e->dev.kind != NC_DEV_EVAL)
    return nc_errorf(NC_E_UNSUPPORTED, "run hooks need the cpu, eval or opencl device (this is %s)", nc_device_name(&e->dev));
  free(e->dst);
  e->dst = NULL, e->ufn = NULL, e->uctx = NULL;
  e->hook.fn = hook, e->hook.ctx = hook ? ctx : NULL;
  return NC_OK;
}

// cpu, eval: output k copied to its destination, then the caller's hook on that copy.
static nc_status nc_exec_hook_copy(void *ctx, int k, const nc_tensor *v) {
  nc_exec *e = ctx;
  if (k < 0) return e->ufn(e->uctx, -1, NULL);
  if (!e->dst[k]) return NC_OK;
  memcpy(e->dst[k], v->data, nc_tensor_nbytes(v));
  nc_tensor w = nc_tensor_wrap(e->dst[k], v->dtype, v->rank, v->shape);
  return e->ufn(e->uctx, k, &w);
}

nc_status nc_exec_set_hook_into(nc_exec *e, nc_exec_hook hook, void *ctx, void *const *dst) {
  if (hook && e->dev.kind != NC_DEV_CPU && e->dev.kind != NC_DEV_EVAL && e->dev.kind != NC_DEV_OPENCL)
    return nc_errorf(NC_E_UNSUPPORTED, "run hooks need the cpu, eval or opencl device (this is %s)", nc_device_name(&e->dev));
  int nout = nc_graph_noutputs(e->g);
  if (e->ocl) return nc_ocl_set_readback(e->ocl, hook, ctx, dst, nout);
  NC_TRY(nc_exec_set_hook(e, NULL, NULL));
  if (!hook) return NC_OK;
  if (!(e->dst = calloc((size_t)(nout > 0 ? nout : 1), sizeof *e->dst))) return nc_errorf(NC_E_NOMEM, "out of memory");
  for (int k = 0; k < nout; k++) e->dst[k] = dst ? dst[k] : NULL;
  e->ufn = hook, e->uctx = ctx;
  e->hook.fn = nc_exec_hook_copy, e->hook.ctx = e;
  return NC_OK;
}

nc_status nc_exec_host_alloc(nc_exec *e, size_t bytes, void **out) {
  if (e->ocl) {
    NC_TRY(nc_ocl_host_alloc(e->ocl, bytes, out));
    memset(*out, 0, bytes);
    return NC_OK;
  }
  if (!(*out = calloc(bytes ? bytes : 1, 1))) return nc_errorf(NC_E_NOMEM, "out of memory for %zu bytes of host memory", bytes);
  return NC_OK;
}

void nc_exec_host_free(nc_exec *e, void *p) {
  if (e->ocl) nc_ocl_host_free(e->ocl, p);
  else free(p);
}

nc_status nc_exec_zero_kept(nc_exec *e, const char *name) {
  nc_id id = e->lowered ? nc_graph_find_leaf(e->lowered, NC_OP_PARAM, name) : NC_NONE;
  if (id == NC_NONE && e->lowered) id = nc_graph_find_leaf(e->lowered, NC_OP_INPUT, name);
  if (id == NC_NONE || !e->ocl) return nc_errorf(NC_E_INTERNAL, "tensor '%s' is not held on device %s", name, nc_device_name(&e->dev));
  return nc_ocl_zero_leaf(e->ocl, id);
}

int nc_exec_output_kernel(nc_exec *e, int k) {
  if ((e->dev.kind != NC_DEV_CPU && e->dev.kind != NC_DEV_EVAL && e->dev.kind != NC_DEV_OPENCL) || !e->plan) return -2;
  if (k < 0 || k >= nc_graph_noutputs(e->lowered)) return -1;
  if (!e->out_kernel) {  // computed once: the plan never changes
    if (!(e->out_kernel = malloc(sizeof(int) * (size_t)nc_graph_noutputs(e->lowered)))) return -1;
    nc_plan_output_kernels(e->lowered, e->plan, e->out_kernel);
  }
  return e->out_kernel[k];
}
const nc_graph *nc_exec_feed_graph(const nc_exec *e) { return e->lowered ? e->lowered : e->g; }
double nc_exec_compile_seconds(const nc_exec *e) { return e->compile_s; }
int nc_exec_nkernels(const nc_exec *e) { return e->plan ? e->plan->nkernels : 0; }

void nc_exec_profile_print(const nc_exec *e, int top) {
  if (e->cpu) nc_cpu_profile_print(e->cpu, e->plan, top, stderr);
  if (e->ocl) nc_ocl_profile_print(e->ocl, e->plan, top, stderr);
}

nc_status nc_exec_trace_start(nc_exec *e) {
  if (!e->cpu) return nc_errorf(NC_E_UNSUPPORTED, "tracing needs the cpu device (this is %s)", nc_device_name(&e->dev));
  nc_cpu_trace_start(e->cpu);
  return NC_OK;
}

nc_status nc_exec_trace_write(nc_exec *e, const char *path) {
  if (!e->cpu) return nc_errorf(NC_E_UNSUPPORTED, "tracing needs the cpu device (this is %s)", nc_device_name(&e->dev));
  return nc_cpu_trace_write(e->cpu, e->plan, path);
}
