// The autotuner's OpenCL backend (runtime/tuner.h): one program per candidate
// (the prelude and the GEMM template with its knobs), timed with profiling
// events on its own in-order queue.
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ocl_device.h"
#include "runtime/tuner.h"
#include "support/buf.h"

typedef struct {
  cl_context ctx;
  cl_command_queue q;
  cl_device_id dev;
  int tc_mode;
  cl_mem a, b, c;
  size_t nc;
  struct nc_tu_ocl_prog {
    int variant;
    nc_ocl_knobs kn;
    cl_program prog;
    cl_kernel kern;
  } *progs;
  int nprogs, capprogs;
} nc_tu_ocl;

static void nc_tu_ocl_kernel(const nc_tune_backend *b, int variant, char *buf, size_t n) {
  const nc_tu_ocl *x = b->ctx;
  nc_tune_ocl_kernel(variant, x->tc_mode, buf, n);
}

static nc_status nc_tu_cl_err(cl_int e, const char *what) { return nc_errorf(NC_E_IO, "OpenCL %s failed (error %d)", what, (int)e); }

static void nc_tu_ocl_buffers_free(nc_tu_ocl *x) {
  if (x->a) clReleaseMemObject(x->a);
  if (x->b) clReleaseMemObject(x->b);
  if (x->c) clReleaseMemObject(x->c);
  x->a = x->b = x->c = NULL;
}

static nc_status nc_tu_ocl_prepare(nc_tune_backend *be, const nc_tune_shape *s, const float *a, size_t na, const float *bm, size_t nb,
                                   size_t nc) {
  (void)s;
  nc_tu_ocl *x = be->ctx;
  nc_tu_ocl_buffers_free(x);
  cl_int e1, e2, e3;
  x->a = clCreateBuffer(x->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, na * sizeof(float), (void *)a, &e1);
  x->b = clCreateBuffer(x->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nb * sizeof(float), (void *)bm, &e2);
  x->c = clCreateBuffer(x->ctx, CL_MEM_READ_WRITE, nc * sizeof(float), NULL, &e3);
  x->nc = nc;
  if (e1 != CL_SUCCESS || e2 != CL_SUCCESS || e3 != CL_SUCCESS) {
    nc_tu_ocl_buffers_free(x);
    return nc_tu_cl_err(e1 != CL_SUCCESS ? e1 : e2 != CL_SUCCESS ? e2 : e3, "clCreateBuffer (tuning operands)");
  }
  return NC_OK;
}

static nc_status nc_tu_ocl_prog(nc_tu_ocl *x, int variant, const nc_ocl_knobs *kn, cl_kernel *out) {
  for (int i = 0; i < x->nprogs; i++)
    if (x->progs[i].variant == variant && !memcmp(&x->progs[i].kn, kn, sizeof *kn)) {
      *out = x->progs[i].kern;
      return NC_OK;
    }
  if (x->nprogs == x->capprogs) {
    int cap = x->capprogs ? 2 * x->capprogs : 32;
    struct nc_tu_ocl_prog *p = realloc(x->progs, (size_t)cap * sizeof *p);
    if (!p) return nc_errorf(NC_E_NOMEM, "out of memory");
    x->progs = p, x->capprogs = cap;
  }
  nc_buf src;
  nc_buf_init(&src);
  nc_ocl_emit_prelude(&src);
  nc_ocl_emit_gemm(kn, variant, &src);
  if (src.oom) {
    nc_buf_free(&src);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  const char *text = src.data;
  cl_int err;
  cl_program prog = clCreateProgramWithSource(x->ctx, 1, &text, NULL, &err);
  nc_buf_free(&src);
  if (!prog || err != CL_SUCCESS) return nc_tu_cl_err(err, "clCreateProgramWithSource");
  err = clBuildProgram(prog, 1, &x->dev, "-cl-std=CL1.2", NULL, NULL);
  if (err != CL_SUCCESS) {
    clReleaseProgram(prog);
    return nc_tu_cl_err(err, "clBuildProgram (GEMM candidate)");
  }
  cl_kernel k = clCreateKernel(prog, nc_ocl_gemm_name(variant), &err);
  if (!k || err != CL_SUCCESS) {
    clReleaseProgram(prog);
    return nc_tu_cl_err(err, "clCreateKernel (GEMM candidate)");
  }
  x->progs[x->nprogs++] = (struct nc_tu_ocl_prog){variant, *kn, prog, k};
  *out = k;
  return NC_OK;
}

static nc_status nc_tu_ocl_run(nc_tune_backend *be, const nc_tune_shape *s, const void *knobs, int reps, double *sec, float *c) {
  nc_tu_ocl *x = be->ctx;
  const nc_ocl_knobs *kn = knobs;
  cl_kernel k = NULL;
  NC_TRY(nc_tu_ocl_prog(x, s->variant, kn, &k));
  cl_long args[5] = {s->m, s->n, s->k, s->m * s->k, s->k * s->n}, offs = 0;
  cl_int beta = 0, err = CL_SUCCESS;
  cl_mem bufs[3] = {x->a, x->b, x->c};
  for (int i = 0; i < 3 && err == CL_SUCCESS; i++) err = clSetKernelArg(k, (cl_uint)i, sizeof(cl_mem), &bufs[i]);
  for (int i = 0; i < 5 && err == CL_SUCCESS; i++) err = clSetKernelArg(k, (cl_uint)(3 + i), sizeof(cl_long), &args[i]);
  if (err == CL_SUCCESS) err = clSetKernelArg(k, 8, sizeof beta, &beta);
  for (int i = 0; i < 3 && err == CL_SUCCESS; i++) err = clSetKernelArg(k, (cl_uint)(9 + i), sizeof(cl_long), &offs);
  if (err != CL_SUCCESS) return nc_tu_cl_err(err, "clSetKernelArg (GEMM candidate)");
  size_t gws[3], lws[3];
  nc_ocl_gemm_geometry(kn, s->m, s->n, s->batch, gws, lws);
  // NaN: a candidate that skips part of C cannot pass on an earlier result
  // (a blocking write: PoCL's clEnqueueFillBuffer compiles a builtin kernel that leaks)
  memset(c, 0xff, x->nc * sizeof(float));
  err = clEnqueueWriteBuffer(x->q, x->c, CL_TRUE, 0, x->nc * sizeof(float), c, 0, NULL, NULL);
  if (err != CL_SUCCESS) return nc_tu_cl_err(err, "clEnqueueWriteBuffer (poisoning C)");
  double best = -1;
  for (int r = 0; r <= reps; r++) {
    cl_event ev = NULL;
    err = clEnqueueNDRangeKernel(x->q, k, 3, NULL, gws, lws, 0, NULL, &ev);
    if (err != CL_SUCCESS) return nc_tu_cl_err(err, "clEnqueueNDRangeKernel (GEMM candidate)");
    err = clWaitForEvents(1, &ev);
    cl_ulong t0 = 0, t1 = 0;
    if (err == CL_SUCCESS) err = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
    if (err == CL_SUCCESS) err = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
    clReleaseEvent(ev);
    if (err != CL_SUCCESS) return nc_tu_cl_err(err, "running a GEMM candidate");
    double dt = 1e-9 * (double)(t1 - t0);
    if (r > 0 && (best < 0 || dt < best)) best = dt;
  }
  *sec = best > 0 ? best : 1e-9;
  err = clEnqueueReadBuffer(x->q, x->c, CL_TRUE, 0, x->nc * sizeof(float), c, 0, NULL, NULL);
  if (err != CL_SUCCESS) return nc_tu_cl_err(err, "clEnqueueReadBuffer (GEMM candidate)");
  return NC_OK;
}

static void nc_tu_ocl_release(nc_tune_backend *be) {
  nc_tu_ocl *x = be->ctx;
  if (!x) return;
  nc_tu_ocl_buffers_free(x);
  for (int i = 0; i < x->nprogs; i++) {
    clReleaseKernel(x->progs[i].kern);
    clReleaseProgram(x->progs[i].prog);
  }
  free(x->progs);
  if (x->q) clReleaseCommandQueue(x->q);
  if (x->ctx) clReleaseContext(x->ctx);
  free(x);
  be->ctx = NULL;
}

// The device of `nanochat devices` index idx (runtime/ocl_device.c's order).
static bool nc_tu_ocl_find(int idx, cl_platform_id *plat, cl_device_id *dev) {
  cl_uint np = 0;
  if (clGetPlatformIDs(0, NULL, &np) != CL_SUCCESS || np == 0) return false;
  cl_platform_id plats[16];
  if (np > 16) np = 16;
  if (clGetPlatformIDs(np, plats, NULL) != CL_SUCCESS) return false;
  int n = 0;
  for (cl_uint p = 0; p < np; p++) {
    cl_uint nd = 0;
    cl_device_id devs[16];
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0) continue;
    if (nd > 16) nd = 16;
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, devs, NULL) != CL_SUCCESS) continue;
    for (cl_uint i = 0; i < nd; i++, n++)
      if (n == idx) {
        *plat = plats[p], *dev = devs[i];
        return true;
      }
  }
  return false;
}

nc_status nc_tune_backend_ocl(const nc_device *d, nc_tune_backend *out) {
  memset(out, 0, sizeof *out);
  nc_ocl_device_desc desc;
  NC_TRY(nc_ocl_select(d->select, &desc));
  nc_tu_ocl *x = calloc(1, sizeof *x);
  if (!x) return nc_errorf(NC_E_NOMEM, "out of memory");
  out->ctx = x;
  out->release = nc_tu_ocl_release;
  cl_platform_id plat;
  if (!nc_tu_ocl_find(desc.index, &plat, &x->dev)) {
    nc_tu_ocl_release(out);
    return nc_errorf(NC_E_IO, "tune: OpenCL device %d (%s) disappeared", desc.index, desc.name);
  }
  cl_int err;
  cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)plat, 0};
  x->ctx = clCreateContext(props, 1, &x->dev, NULL, NULL, &err);
  if (x->ctx && err == CL_SUCCESS) x->q = clCreateCommandQueue(x->ctx, x->dev, CL_QUEUE_PROFILING_ENABLE, &err);
  if (!x->ctx || !x->q || err != CL_SUCCESS) {
    nc_tu_ocl_release(out);
    return nc_tu_cl_err(err, "creating a context and queue for tuning");
  }
  nc_ocl_knobs def;
  nc_ocl_knobs_default(desc.gpu, &def);
  bool nvidia = strstr(desc.vendor, "NVIDIA") || strstr(desc.platform_vendor, "NVIDIA");
  if (d->matmul_bf16) {  // the register-staged kernel (the packed pipeline, tc_stages > 0, has no per-shape kernels)
    x->tc_mode = def.gemm_tc = nvidia ? 1 : 2;
    def.tc_stages = 0;
  }
  memcpy(out->defaults, &def, sizeof def);
  out->space = x->tc_mode ? &nc_ocl_tc_knob_space : &nc_ocl_gemm_knob_space;
  out->bf16 = x->tc_mode != 0;
  nc_tune_ocl_ids(&desc, out->device, sizeof out->device, out->driver, sizeof out->driver);
  out->kernel = nc_tu_ocl_kernel;
  out->prepare = nc_tu_ocl_prepare;
  out->run = nc_tu_ocl_run;
  return NC_OK;
}
