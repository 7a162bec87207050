// The autotuner's OpenCL backend (runtime/tuner.h): one program per candidate
// (the prelude and the GEMM template with its knobs), timed with profiling
// events on its own in-order queue. With --precision bf16: the pipelined bf16
// GEMM the device compiles by default (tc_stages > 0: mma.sync, or wgmma on
// Hopper; emulated, gemm_tc 2, off NVIDIA) over bf16 operands read in place as
// the bf16 model's are (k-contiguous copies, and on wgmma the MN-major originals
// where the runtime reads them so), with the runtime's split-K choice; the time is
// the GEMM's plus the split sum's. Packing f32 operands is not part of it.
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/tune.h"
#include "ir/dtype.h"
#include "runtime/ocl_impl.h"
#include "runtime/tuner.h"
#include "support/buf.h"

typedef struct {
  cl_context ctx;
  cl_command_queue q;
  cl_device_id dev;
  int tc_mode;
  bool packed;            // the pipelined bf16 GEMM (knob space ocl.gemm_bf16p)
  int ncu;                // compute units (the split-K choice)
  char devname[128];
  cl_mem a, b, c;         // packed: a, b are the k-contiguous bf16 copies (M x K8, N x K8 per batch)
  cl_mem an, bn, part;    // packed: the MN-major bf16 originals (ta: (K, M); !tb: (K, N)), split-K partial sums
  size_t nc, part_bytes;
  struct nc_tu_ocl_prog {
    int variant;          // packed: 100 + the kernel's variant flags
    nc_ocl_knobs kn;
    cl_program prog;
    cl_kernel kern, sum;  // sum: the split-K sum (packed)
  } *progs;
  int nprogs, capprogs;
} nc_tu_ocl;

static void nc_tu_ocl_kernel(const nc_tune_backend *b, int variant, char *buf, size_t n) {
  const nc_tu_ocl *x = b->ctx;
  if (x->packed) nc_tune_ocl_pkernel(variant, x->tc_mode, buf, n);
  else nc_tune_ocl_kernel(variant, x->tc_mode, buf, n);
}

static nc_status nc_tu_cl_err(cl_int e, const char *what) { return nc_errorf(NC_E_IO, "OpenCL %s failed (error %d)", what, (int)e); }

static void nc_tu_ocl_buffers_free(nc_tu_ocl *x) {
  if (x->a) clReleaseMemObject(x->a);
  if (x->b) clReleaseMemObject(x->b);
  if (x->c) clReleaseMemObject(x->c);
  if (x->an) clReleaseMemObject(x->an);
  if (x->bn) clReleaseMemObject(x->bn);
  if (x->part) clReleaseMemObject(x->part);
  x->a = x->b = x->c = x->an = x->bn = x->part = NULL;
  x->part_bytes = 0;
}

static int64_t nc_tu_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

static nc_status nc_tu_ocl_upload(nc_tu_ocl *x, cl_mem *out, const uint16_t *h, size_t n) {
  cl_int e;
  *out = clCreateBuffer(x->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, (n ? n : 1) * 2, (void *)h, &e);
  if (!*out || e != CL_SUCCESS) {
    *out = NULL;
    return nc_tu_cl_err(e, "clCreateBuffer (bf16 tuning operands)");
  }
  return NC_OK;
}

// The bf16 operands of shape s: A as M x K8 and B as N x K8 per batch (k contiguous, K8 = K rounded up
// to 8, zero-padded), and the MN-major originals the wgmma kernel reads in place (A (K, M) when
// transposed, B (K, N) when not).
static nc_status nc_tu_ocl_prepare_bf16(nc_tu_ocl *x, const nc_tune_shape *s, const float *a, const float *b, size_t nc) {
  bool ta = s->variant & 2, tb = s->variant & 1;
  int64_t M = s->m, N = s->n, K = s->k, B = s->batch, K8 = nc_tu_up(K, 8);
  size_t nak = (size_t)(B * M * K8), nbk = (size_t)(B * N * K8), nan_ = ta ? (size_t)(B * M * K) : 0, nbn = !tb ? (size_t)(B * N * K) : 0;
  uint16_t *h = calloc(nak + nbk + nan_ + nbn + 1, 2);
  if (!h) return nc_errorf(NC_E_NOMEM, "out of memory for the bf16 tuning operands");
  uint16_t *hak = h, *hbk = h + nak, *han = hbk + nbk, *hbn = han + nan_;
  for (int64_t q = 0; q < B; q++)
    for (int64_t i = 0; i < M; i++)
      for (int64_t k = 0; k < K; k++) hak[(q * M + i) * K8 + k] = nc_f32_to_bf16(a[q * M * K + (ta ? k * M + i : i * K + k)]);
  for (int64_t q = 0; q < B; q++)
    for (int64_t j = 0; j < N; j++)
      for (int64_t k = 0; k < K; k++) hbk[(q * N + j) * K8 + k] = nc_f32_to_bf16(b[q * K * N + (tb ? j * K + k : k * N + j)]);
  for (size_t i = 0; i < nan_; i++) han[i] = nc_f32_to_bf16(a[i]);
  for (size_t i = 0; i < nbn; i++) hbn[i] = nc_f32_to_bf16(b[i]);
  nc_status st = nc_tu_ocl_upload(x, &x->a, hak, nak);
  if (!st) st = nc_tu_ocl_upload(x, &x->b, hbk, nbk);
  if (!st && nan_) st = nc_tu_ocl_upload(x, &x->an, han, nan_);
  if (!st && nbn) st = nc_tu_ocl_upload(x, &x->bn, hbn, nbn);
  free(h);
  cl_int e = CL_SUCCESS;
  if (!st) x->c = clCreateBuffer(x->ctx, CL_MEM_READ_WRITE, nc * sizeof(float), NULL, &e);
  if (!st && (!x->c || e != CL_SUCCESS)) st = nc_tu_cl_err(e, "clCreateBuffer (tuning C)");
  x->nc = nc;
  if (st) nc_tu_ocl_buffers_free(x);
  return st;
}

static nc_status nc_tu_ocl_prepare(nc_tune_backend *be, const nc_tune_shape *s, const float *a, size_t na, const float *bm, size_t nb,
                                   size_t nc) {
  nc_tu_ocl *x = be->ctx;
  nc_tu_ocl_buffers_free(x);
  if (x->packed) return nc_tu_ocl_prepare_bf16(x, s, a, bm, nc);
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
  bool packed = variant >= 100;  // the pipelined kernel of flags variant - 100, the pack kernels and the split sum
  if (packed) {
    nc_ocl_emit_gemm_packed(kn, &src);
    if (variant > 100) nc_ocl_emit_gemm_packed_kernel(kn, variant - 100, &src);
  } else {
    nc_ocl_emit_gemm(kn, variant, &src);
  }
  if (src.oom) {
    nc_buf_free(&src);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  const char *text = src.data;
  cl_int err;
  cl_program prog = clCreateProgramWithSource(x->ctx, 1, &text, NULL, &err);
  nc_buf_free(&src);
  if (!prog || err != CL_SUCCESS) return nc_tu_cl_err(err, "clCreateProgramWithSource");
  bool wg = packed && kn->tc_wg && kn->gemm_tc == 1;  // the wgmma route: hidden instructions, patched PTX
  const char *opts = wg ? "-cl-std=CL1.2 -DNC_WG_HIDE" : "-cl-std=CL1.2";
  err = clBuildProgram(prog, 1, &x->dev, opts, NULL, NULL);
  if (err != CL_SUCCESS) {
    clReleaseProgram(prog);
    return nc_tu_cl_err(err, "clBuildProgram (GEMM candidate)");
  }
  if (wg) NC_TRY(nc_ocl_wgmma_rebuild(x->ctx, x->dev, x->devname, &prog, opts));
  char kname[48];
  if (packed) nc_ocl_gemm_packed_name(kn, variant - 100, kname, sizeof kname);
  else snprintf(kname, sizeof kname, "%s", nc_ocl_gemm_name(variant));
  cl_kernel k = clCreateKernel(prog, kname, &err), sum = NULL;
  if (k && err == CL_SUCCESS && packed) sum = clCreateKernel(prog, "nc_splitk_sum", &err);
  if (!k || err != CL_SUCCESS) {
    if (k) clReleaseKernel(k);
    clReleaseProgram(prog);
    return nc_tu_cl_err(err, "clCreateKernel (GEMM candidate)");
  }
  x->progs[x->nprogs++] = (struct nc_tu_ocl_prog){variant, *kn, prog, k, sum};
  *out = k;
  return NC_OK;
}

// Device time of one profiled command (seconds).
static nc_status nc_tu_ocl_evtime(cl_event ev, double *sec) {
  cl_ulong t0 = 0, t1 = 0;
  cl_int err = clWaitForEvents(1, &ev);
  if (err == CL_SUCCESS) err = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
  if (err == CL_SUCCESS) err = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
  clReleaseEvent(ev);
  if (err != CL_SUCCESS) return nc_tu_cl_err(err, "running a GEMM candidate");
  *sec = 1e-9 * (double)(t1 - t0);
  return NC_OK;
}

// The pipelined GEMM on the prepared bf16 operands as runtime/ocl_launch.c launches it for bf16
// buffers (nc_oc_launch_packed: in place, MN-major on wgmma, zero-filled partial tiles, split-K),
// into an f32 C.
static nc_status nc_tu_ocl_run_packed(nc_tu_ocl *x, const nc_tune_shape *s, const nc_ocl_knobs *kn, int reps, double *sec, float *c) {
  bool ta = s->variant & 2, tb = s->variant & 1, wg = kn->tc_wg != 0;
  int64_t M = s->m, N = s->n, K = s->k, B = s->batch, K8 = nc_tu_up(K, 8);
  int64_t Mp = nc_tu_up(M, kn->tc_bm), Np = nc_tu_up(N, kn->tc_bn), Kp = nc_tu_up(K, kn->tc_bk > 32 ? kn->tc_bk : 32);
  bool mA = wg && ta && M % 8 == 0 && nc_ocl_gemm_variant_ok(kn, NC_OCL_GEMMP_AMN);
  bool mB = wg && !tb && N % 8 == 0 && nc_ocl_gemm_variant_ok(kn, NC_OCL_GEMMP_BMN);
  if (mA && mB && !nc_ocl_gemm_variant_ok(kn, NC_OCL_GEMMP_AMN | NC_OCL_GEMMP_BMN)) mA = false;
  bool zf = M % kn->tc_bm || N % kn->tc_bn || K != Kp;
  int flags = (zf ? NC_OCL_GEMMP_ZFILL : 0) | (mA ? NC_OCL_GEMMP_AMN : 0) | (mB ? NC_OCL_GEMMP_BMN : 0);
  cl_kernel k = NULL;
  NC_TRY(nc_tu_ocl_prog(x, 100 + flags, kn, &k));
  cl_kernel sum = NULL;  // the split sum of k's program
  for (int i = 0; i < x->nprogs && !sum; i++)
    if (x->progs[i].kern == k) sum = x->progs[i].sum;
  int64_t tiles = (Mp / kn->tc_bm) * (Np / kn->tc_bn) * B, nkt = Kp / kn->tc_bk;
  int64_t splits = nc_ocl_splitk_choose(tiles, nkt, x->ncu, M * N * B, (int64_t)kn->tc_bm * kn->tc_bn * kn->tc_bk);
  if (splits > nkt) splits = nkt;
  if (splits < 1) splits = 1;
  int64_t kt_per = (nkt + splits - 1) / splits;
  splits = (nkt + kt_per - 1) / kt_per;
  cl_int err = CL_SUCCESS;
  size_t pbytes = (size_t)(splits * B * M * N) * 4;
  if (splits > 1 && x->part_bytes < pbytes) {
    if (x->part) clReleaseMemObject(x->part);
    x->part = clCreateBuffer(x->ctx, CL_MEM_READ_WRITE, pbytes, NULL, &err);
    x->part_bytes = x->part && err == CL_SUCCESS ? pbytes : 0;
    if (!x->part_bytes) return nc_tu_cl_err(err, "clCreateBuffer (split-K partial sums)");
  }
  cl_mem A = mA ? x->an : x->a, Bm = mB ? x->bn : x->b, C = splits > 1 ? x->part : x->c;
  cl_long la[5] = {M, N, Kp, mA ? K * M : M * K8, mB ? K * N : N * K8}, zero = 0, ktp = kt_per, lda = mA ? M : K8, ldb = mB ? N : K8, Kv = K;
  cl_int beta = 0, spl = (cl_int)splits;
  cl_uint ai = 0;
  err |= clSetKernelArg(k, ai++, sizeof A, &A);
  err |= clSetKernelArg(k, ai++, sizeof Bm, &Bm);
  err |= clSetKernelArg(k, ai++, sizeof C, &C);
  for (int i = 0; i < 5; i++) err |= clSetKernelArg(k, ai++, sizeof(cl_long), &la[i]);
  err |= clSetKernelArg(k, ai++, sizeof beta, &beta);
  for (int i = 0; i < 3; i++) err |= clSetKernelArg(k, ai++, sizeof zero, &zero);
  err |= clSetKernelArg(k, ai++, sizeof ktp, &ktp);
  err |= clSetKernelArg(k, ai++, sizeof spl, &spl);
  err |= clSetKernelArg(k, ai++, sizeof lda, &lda);
  err |= clSetKernelArg(k, ai++, sizeof ldb, &ldb);
  err |= clSetKernelArg(k, ai++, sizeof Kv, &Kv);
  cl_long MN = M * N;
  cl_int cb = 0;
  if (splits > 1) {
    if (!sum) return nc_errorf(NC_E_INTERNAL, "tune: the split-K sum kernel is missing");
    ai = 0;
    err |= clSetKernelArg(sum, ai++, sizeof x->part, &x->part);
    err |= clSetKernelArg(sum, ai++, sizeof x->c, &x->c);
    err |= clSetKernelArg(sum, ai++, sizeof MN, &MN);
    err |= clSetKernelArg(sum, ai++, sizeof spl, &spl);
    err |= clSetKernelArg(sum, ai++, sizeof beta, &beta);
    err |= clSetKernelArg(sum, ai++, sizeof zero, &zero);
    err |= clSetKernelArg(sum, ai++, sizeof cb, &cb);
  }
  if (err != CL_SUCCESS) return nc_tu_cl_err(err, "clSetKernelArg (bf16 GEMM candidate)");
  size_t lx = wg ? (size_t)(2 * kn->tc_bm) : (size_t)(32 * (kn->tc_bm / kn->tc_wm) * (kn->tc_bn / kn->tc_wn));
  size_t gws[3] = {(size_t)(Np / kn->tc_bn) * lx, (size_t)(Mp / kn->tc_bm), (size_t)(B * splits)}, lws[3] = {lx, 1, 1};
  size_t g2[2] = {(size_t)nc_tu_up(MN, 256), (size_t)B}, l2[2] = {256, 1};
  memset(c, 0xff, x->nc * sizeof(float));  // NaN (see nc_tu_ocl_run)
  err = clEnqueueWriteBuffer(x->q, x->c, CL_TRUE, 0, x->nc * sizeof(float), c, 0, NULL, NULL);
  if (err != CL_SUCCESS) return nc_tu_cl_err(err, "clEnqueueWriteBuffer (poisoning C)");
  double best = -1;
  for (int r = 0; r <= reps; r++) {
    cl_event ev = NULL, ev2 = NULL;
    err = clEnqueueNDRangeKernel(x->q, k, 3, NULL, gws, lws, 0, NULL, &ev);
    if (err == CL_SUCCESS && splits > 1) err = clEnqueueNDRangeKernel(x->q, sum, 2, NULL, g2, l2, 0, NULL, &ev2);
    if (err != CL_SUCCESS) {
      if (ev) clReleaseEvent(ev);
      return nc_tu_cl_err(err, "clEnqueueNDRangeKernel (bf16 GEMM candidate)");
    }
    double t1 = 0, t2 = 0;
    NC_TRY(nc_tu_ocl_evtime(ev, &t1));
    if (ev2) NC_TRY(nc_tu_ocl_evtime(ev2, &t2));
    if (r > 0 && (best < 0 || t1 + t2 < best)) best = t1 + t2;
  }
  *sec = best > 0 ? best : 1e-9;
  err = clEnqueueReadBuffer(x->q, x->c, CL_TRUE, 0, x->nc * sizeof(float), c, 0, NULL, NULL);
  if (err != CL_SUCCESS) return nc_tu_cl_err(err, "clEnqueueReadBuffer (GEMM candidate)");
  return NC_OK;
}

static nc_status nc_tu_ocl_run(nc_tune_backend *be, const nc_tune_shape *s, const void *knobs, int reps, double *sec, float *c) {
  nc_tu_ocl *x = be->ctx;
  const nc_ocl_knobs *kn = knobs;
  if (x->packed) return nc_tu_ocl_run_packed(x, s, kn, reps, sec, c);
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
    if (x->progs[i].sum) clReleaseKernel(x->progs[i].sum);
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
  snprintf(x->devname, sizeof x->devname, "%s", desc.name);
  cl_uint cu = 0;
  clGetDeviceInfo(x->dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
  x->ncu = cu > 0 ? (int)cu : 1;
  if (d->matmul_bf16) {  // the pipelined kernel, with the defaults runtime/ocl_device.c compiles (emulated off NVIDIA)
    x->tc_mode = nvidia ? 1 : 2;
    x->packed = true;
    if (nvidia) {
      def.gemm_tc = 1;
      cl_uint ccmaj = 0;
      if (clGetDeviceInfo(x->dev, 0x4000 /* CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV */, sizeof ccmaj, &ccmaj, NULL) != CL_SUCCESS) ccmaj = 0;
      const char *we = getenv("NC_OCL_WGMMA");
      if (ccmaj == 9 && !(we && !strcmp(we, "0"))) {
        nc_ocl_knobs w = def;
        nc_ocl_wgmma_default(&w);
        if (!nc_ocl_tc_check(&w)) def = w;
      }
    } else {
      nc_ocl_tcp_emulated_default(desc.gpu, &def);
    }
  }
  memcpy(out->defaults, &def, sizeof def);
  out->space = x->packed ? &nc_ocl_tcp_knob_space : x->tc_mode ? &nc_ocl_tc_knob_space : &nc_ocl_gemm_knob_space;
  out->bf16 = x->tc_mode != 0;
  nc_tune_ocl_ids(&desc, out->device, sizeof out->device, out->driver, sizeof out->driver);
  out->kernel = nc_tu_ocl_kernel;
  out->prepare = nc_tu_ocl_prepare;
  out->run = nc_tu_ocl_run;
  return NC_OK;
}
