// Probe of Hopper's wgmma from NVIDIA's OpenCL (issue 5; docs/opencl.md "The wgmma kernel").
// On the first NVIDIA GPU it reports: the device's compute capability and local memory,
// whether a work-group gets more than 48 KiB of __local (static and as a kernel argument),
// whether the OpenCL compiler accepts -cl-nv-arch sm_90a with wgmma inline PTX (route A),
// and whether the PTX of a program built with the wgmma instructions hidden in comments can
// be patched (sm_90a, instructions restored: nc_ocl_ptx_unhide) and loaded with
// clCreateProgramWithBinary (route B). Then it checks and times GEMM kernels over packed
// bf16 operands (C = A @ B^T, A M x K and B N x K, k contiguous) built by the project's
// emitters: the wgmma kernel under the knob sets given, and the mma.sync kernel for scale,
// each against a CPU reference (exact small case, sampled outputs on the large ones).
// Usage: wgmma_probe [--reps N] [--out DIR] [KNOBS...] [-- SHAPES...]
//   KNOBS: "wg:BM,BN,BK,STAGES,WG" (the wgmma kernel) or "mma:BM,BN,WM,WN,BK,STAGES"
//   SHAPES: "LABEL:M:N:K"
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/ocl_emit.h"

#ifndef CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV
#define CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV 0x4000
#define CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV 0x4001
#define CL_DEVICE_REGISTERS_PER_BLOCK_NV 0x4002
#endif

static cl_device_id dev;
static cl_context ctx;
static cl_command_queue q;
static const char *outdir = NULL;

static void save(const char *name, const char *text, size_t n) {
  if (!outdir) return;
  char p[512];
  snprintf(p, sizeof p, "%s/%s", outdir, name);
  FILE *f = fopen(p, "wb");
  if (f) fwrite(text, 1, n, f), fclose(f);
}

static void print_log(cl_program p, const char *what) {
  size_t n = 0;
  clGetProgramBuildInfo(p, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
  char *log = calloc(n + 1, 1);
  if (!log) return;
  clGetProgramBuildInfo(p, dev, CL_PROGRAM_BUILD_LOG, n, log, NULL);
  printf("---- build log (%s), %zu bytes:\n%.4000s\n----\n", what, n, log);
  free(log);
}

// The program's first binary (PTX text on NVIDIA), malloc'd, NUL-terminated.
static char *get_ptx(cl_program p, size_t *len) {
  size_t sz = 0;
  if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof sz, &sz, NULL) != CL_SUCCESS || !sz) return NULL;
  unsigned char *b = calloc(sz + 1, 1);
  if (!b) return NULL;
  if (clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof b, &b, NULL) != CL_SUCCESS) return free(b), NULL;
  *len = strlen((char *)b);
  return (char *)b;
}

static cl_program build_src(const char *src, const char *opts, cl_int *err, const char *what) {
  size_t len = strlen(src);
  cl_program p = clCreateProgramWithSource(ctx, 1, &src, &len, err);
  if (!p) return NULL;
  *err = clBuildProgram(p, 1, &dev, opts, NULL, NULL);
  printf("build %s [%s]: %d\n", what, opts, *err);
  if (*err != CL_SUCCESS || strstr(opts, "verbose")) print_log(p, what);
  if (*err != CL_SUCCESS) {
    clReleaseProgram(p);
    return NULL;
  }
  return p;
}

// Route B: build with the Hopper instructions hidden, patch the PTX, load it as a binary.
static cl_program build_hidden(const char *src, const char *opts, const char *what, bool keep) {
  char o2[512];
  snprintf(o2, sizeof o2, "%s -DNC_WG_HIDE", opts);
  cl_int err;
  cl_program p = build_src(src, o2, &err, what);
  if (!p) return NULL;
  size_t len = 0;
  char *ptx = get_ptx(p, &len);
  clReleaseProgram(p);
  if (!ptx) return printf("%s: no PTX binary\n", what), NULL;
  bool changed;
  char *pt = nc_ocl_ptx_unhide(ptx, len, &changed);
  if (keep) save("hidden.ptx", ptx, len), save("patched.ptx", pt, strlen(pt));
  char head[200];
  snprintf(head, sizeof head, "%s", ptx);
  for (char *c = head; *c; c++)
    if (*c == '\n') *c = '|';
  printf("%s: PTX %zu bytes, head: %.160s; markers restored: %d\n", what, len, head, changed);
  free(ptx);
  size_t pl = strlen(pt) + 1;
  const unsigned char *bp = (const unsigned char *)pt;
  cl_int bst = 0;
  p = clCreateProgramWithBinary(ctx, 1, &dev, &pl, &bp, &bst, &err);
  printf("%s: clCreateProgramWithBinary %d (binary status %d)\n", what, err, bst);
  free(pt);
  if (!p) return NULL;
  err = clBuildProgram(p, 1, &dev, opts, NULL, NULL);
  printf("%s: clBuildProgram(patched PTX) %d\n", what, err);
  print_log(p, what);
  if (err != CL_SUCCESS) return clReleaseProgram(p), NULL;
  return p;
}

static void local_mem_probe(void) {
  cl_ulong lm = 0;
  clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lm, &lm, NULL);
  printf("CL_DEVICE_LOCAL_MEM_SIZE %llu\n", (unsigned long long)lm);
  const char *src =
      "__kernel void st64(__global float *o) { __local float s[16384]; int i = get_local_id(0);\n"
      "  for (int j = i; j < 16384; j += 256) s[j] = j; barrier(CLK_LOCAL_MEM_FENCE); o[i] = s[16383 - i]; }\n"
      "__kernel void dyn(__global float *o, __local float *s, int n) { int i = get_local_id(0);\n"
      "  for (int j = i; j < n; j += 256) s[j] = j; barrier(CLK_LOCAL_MEM_FENCE); o[i] = s[n - 1 - i]; }\n";
  cl_int err;
  cl_program p = build_src(src, "-cl-std=CL1.2", &err, "64 KiB static __local");
  if (!p) {
    src = strstr(src, "__kernel void dyn");
    p = build_src(src, "-cl-std=CL1.2", &err, "dynamic __local only");
  }
  if (!p) return;
  cl_mem o = clCreateBuffer(ctx, CL_MEM_READ_WRITE, 4096, NULL, &err);
  size_t g = 256;
  cl_kernel k = clCreateKernel(p, "st64", &err);
  if (k) {
    clSetKernelArg(k, 0, sizeof o, &o);
    err = clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &g, 0, NULL, NULL);
    cl_int e2 = clFinish(q);
    float v = -1;
    clEnqueueReadBuffer(q, o, CL_TRUE, 0, 4, &v, 0, NULL, NULL);
    printf("static 64 KiB __local: launch %d finish %d o[0]=%g (want 16383)\n", err, e2, v);
    clReleaseKernel(k);
  }
  k = clCreateKernel(p, "dyn", &err);
  int sizes[] = {48 * 1024, 64 * 1024, 100 * 1024, 200 * 1024};
  for (int i = 0; k && i < 4; i++) {
    int n = sizes[i] / 4;
    clSetKernelArg(k, 0, sizeof o, &o);
    cl_int e1 = clSetKernelArg(k, 1, (size_t)sizes[i], NULL);
    clSetKernelArg(k, 2, sizeof n, &n);
    err = clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &g, 0, NULL, NULL);
    cl_int e2 = clFinish(q);
    float v = -1;
    clEnqueueReadBuffer(q, o, CL_TRUE, 0, 4, &v, 0, NULL, NULL);
    printf("dynamic __local %d bytes: setarg %d launch %d finish %d o[0]=%g (want %d)\n", sizes[i], e1, err, e2, v, n - 1);
  }
  if (k) clReleaseKernel(k);
  clReleaseMemObject(o);
  clReleaseProgram(p);
}

static uint16_t f2bf(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static float bf2f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

typedef struct {
  char name[64];
  nc_ocl_knobs kn;
  cl_program prog;
  cl_kernel k;
} variant;

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

// C = A @ B^T for one shape with one variant: returns the median ms, *err the worst sampled error.
static double run_gemm(variant *v, long M, long N, long K, int reps, bool full, double *worst, uint64_t seed) {
  int BM = v->kn.tc_bm, BN = v->kn.tc_bn, BK = v->kn.tc_bk;
  long Mp = (M + BM - 1) / BM * BM, Np = (N + BN - 1) / BN * BN, Kp = (K + BK - 1) / BK * BK;
  uint16_t *A = calloc((size_t)(Mp * Kp), 2), *B = calloc((size_t)(Np * Kp), 2);
  float *C = calloc((size_t)(M * N), 4);
  if (!A || !B || !C) return printf("out of host memory\n"), -1;
  uint64_t s = seed;
  for (long i = 0; i < M; i++)
    for (long k = 0; k < K; k++) s = s * 6364136223846793005ull + 1442695040888963407ull, A[i * Kp + k] = f2bf((float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1));
  for (long i = 0; i < N; i++)
    for (long k = 0; k < K; k++) s = s * 6364136223846793005ull + 1442695040888963407ull, B[i * Kp + k] = f2bf((float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1));
  cl_int err;
  cl_mem dA = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, (size_t)(Mp * Kp) * 2, A, &err);
  cl_mem dB = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, (size_t)(Np * Kp) * 2, B, &err);
  cl_mem dC = clCreateBuffer(ctx, CL_MEM_READ_WRITE, (size_t)(M * N) * 4, NULL, &err);
  cl_long la[] = {M, N, Kp, 0, 0};
  cl_int beta = 0, splits = 1;
  cl_long oa = 0, ob = 0, oc = 0, ktp = Kp / BK;
  cl_kernel k = v->k;
  int a = 0;
  clSetKernelArg(k, a++, sizeof dA, &dA);
  clSetKernelArg(k, a++, sizeof dB, &dB);
  clSetKernelArg(k, a++, sizeof dC, &dC);
  for (int i = 0; i < 5; i++) clSetKernelArg(k, a++, sizeof(cl_long), &la[i]);
  clSetKernelArg(k, a++, sizeof beta, &beta);
  clSetKernelArg(k, a++, sizeof oa, &oa);
  clSetKernelArg(k, a++, sizeof ob, &ob);
  clSetKernelArg(k, a++, sizeof oc, &oc);
  clSetKernelArg(k, a++, sizeof ktp, &ktp);
  clSetKernelArg(k, a++, sizeof splits, &splits);
  cl_long lda = Kp, ldb = Kp, Kv = Kp;  // packed operands (rows of Kp, zero-padded); C f32
  clSetKernelArg(k, a++, sizeof lda, &lda);
  clSetKernelArg(k, a++, sizeof ldb, &ldb);
  err = clSetKernelArg(k, a++, sizeof Kv, &Kv);
  size_t lx = v->kn.tc_wg ? (size_t)(2 * BM) : (size_t)(32 * (BM / v->kn.tc_wm) * (BN / v->kn.tc_wn));
  size_t gws[3] = {(size_t)(Np / BN) * lx, (size_t)(Mp / BM), 1}, lws[3] = {lx, 1, 1};
  double t[64];
  if (reps > 63) reps = 63;
  float nanv = NAN;
  clEnqueueFillBuffer(q, dC, &nanv, 4, 0, (size_t)(M * N) * 4, 0, NULL, NULL);  // poison: every element must be written
  for (int r = 0; r <= reps && err == CL_SUCCESS; r++) {
    cl_event ev;
    err = clEnqueueNDRangeKernel(q, k, 3, NULL, gws, lws, 0, NULL, &ev);
    if (err != CL_SUCCESS) break;
    err = clWaitForEvents(1, &ev);
    cl_ulong t0 = 0, t1 = 0;
    clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
    clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
    clReleaseEvent(ev);
    t[r] = (double)(t1 - t0) * 1e-6;
    if (r == 0 && full) err = clEnqueueReadBuffer(q, dC, CL_TRUE, 0, (size_t)(M * N) * 4, C, 0, NULL, NULL);
    for (long i = 0; r == 0 && !full && i < 256 && err == CL_SUCCESS; i++) {  // the sampled outputs only
      long m = (long)((uint64_t)i * 2654435761u % (uint64_t)M), n = (long)((uint64_t)i * 40503u % (uint64_t)N);
      if (i == 255) m = M - 1, n = N - 1;
      err = clEnqueueReadBuffer(q, dC, CL_TRUE, (size_t)(m * N + n) * 4, 4, C + m * N + n, 0, NULL, NULL);
    }
  }
  double med = -1;
  *worst = INFINITY;
  if (err == CL_SUCCESS) {
    qsort(t + 1, (size_t)reps, sizeof *t, cmpd);
    med = reps ? t[1 + reps / 2] : t[0];
    double w = 0;
    long ns = full ? M * N : 256;
    for (long i = 0; i < ns; i++) {
      long m = full ? i / N : (long)((uint64_t)i * 2654435761u % (uint64_t)M), n = full ? i % N : (long)((uint64_t)i * 40503u % (uint64_t)N);
      if (!full && i == ns - 1) m = M - 1, n = N - 1;
      double ref = 0, mag = 0;
      for (long kk = 0; kk < K; kk++) {
        double x = (double)bf2f(A[m * Kp + kk]) * bf2f(B[n * Kp + kk]);
        ref += x, mag += fabs(x);
      }
      double e = fabs(C[m * N + n] - ref) / (mag > 0 ? mag : 1);
      if (!(e <= w)) w = e;  // NaN counts
      if (isnan(C[m * N + n])) w = INFINITY;
    }
    *worst = w;
  } else {
    printf("  %s: OpenCL error %d\n", v->name, err);
  }
  clReleaseMemObject(dA), clReleaseMemObject(dB), clReleaseMemObject(dC);
  free(A), free(B), free(C);
  return med;
}

int main(int argc, char **argv) {
  int reps = 10, nv = 0, ns = 0;
  const char *vs[32], *shapes[32];
  bool after = false, emu = false;
  int force_route = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--route") && i + 1 < argc) force_route = atoi(argv[++i]);  // 1 or 2: skip the probes, use that route
    else if (!strcmp(argv[i], "--emulate")) emu = true;  // any device, the kernels' scalar emulation (gemm_tc 2)
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--out") && i + 1 < argc) outdir = argv[++i];
    else if (!strcmp(argv[i], "--")) after = true;
    else if (after && ns < 32) shapes[ns++] = argv[i];
    else if (nv < 32) vs[nv++] = argv[i];
  }
  cl_platform_id plats[8];
  cl_uint np = 0;
  clGetPlatformIDs(8, plats, &np);
  cl_platform_id plat = NULL;
  for (cl_uint i = 0; i < np && !plat; i++) {
    cl_uint nd = 0;
    if (clGetDeviceIDs(plats[i], emu ? CL_DEVICE_TYPE_ALL : CL_DEVICE_TYPE_GPU, 1, &dev, &nd) == CL_SUCCESS && nd) plat = plats[i];
  }
  if (!plat) return printf("no OpenCL GPU\n"), 1;
  char name[256] = "", drv[128] = "", ver[128] = "", cver[128] = "";
  clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name, name, NULL);
  clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof drv, drv, NULL);
  clGetDeviceInfo(dev, CL_DEVICE_VERSION, sizeof ver, ver, NULL);
  clGetDeviceInfo(dev, CL_DEVICE_OPENCL_C_VERSION, sizeof cver, cver, NULL);
  cl_uint ccmaj = 0, ccmin = 0, regs = 0, cus = 0;
  clGetDeviceInfo(dev, CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, sizeof ccmaj, &ccmaj, NULL);
  clGetDeviceInfo(dev, CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV, sizeof ccmin, &ccmin, NULL);
  clGetDeviceInfo(dev, CL_DEVICE_REGISTERS_PER_BLOCK_NV, sizeof regs, &regs, NULL);
  clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
  printf("device %s | driver %s | %s | %s | compute capability %u.%u | %u regs/block | %u CUs\n", name, drv, ver, cver, ccmaj, ccmin, regs, cus);
  cl_int err;
  ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
  q = clCreateCommandQueue(ctx, dev, CL_QUEUE_PROFILING_ENABLE, &err);
  if (!emu && !force_route) local_mem_probe();

  // the tiny wgmma kernel: 64x64 block, k-step 64, 2 slots
  nc_ocl_knobs kt;
  nc_ocl_knobs_default(true, &kt);
  kt.gemm_tc = 1, kt.tc_bm = 64, kt.tc_bn = 64, kt.tc_bk = 64, kt.tc_stages = 2, kt.tc_wg = 1;
  nc_buf src;
  nc_buf_init(&src);
  nc_ocl_emit_prelude(&src);
  nc_ocl_emit_gemm_wgmma(&kt, 0, &src);
  save("wgmma_tiny.cl", src.data, src.len);
  int route = emu ? 3 : force_route;  // 1: -cl-nv-arch sm_90a, 2: patched PTX, 3: emulated
  cl_program pa = emu || force_route ? NULL : build_src(src.data, "-cl-std=CL1.2 -cl-nv-arch sm_90a", &err, "route A: -cl-nv-arch sm_90a");
  if (pa) {
    size_t len = 0;
    char *ptx = get_ptx(pa, &len);
    if (ptx) {
      save("routeA.ptx", ptx, len);
      printf("route A PTX head: %.120s\n", ptx);
      free(ptx);
    }
    route = 1;
    clReleaseProgram(pa);
  }
  cl_program pb = emu || force_route ? NULL : build_hidden(src.data, "-cl-std=CL1.2", "route B: hidden + patched PTX", true);
  if (pb) {
    if (!route) route = 2;
    clReleaseProgram(pb);
  }
  nc_buf_free(&src);
  printf("ROUTE %d (%s)\n", route, route == 1 ? "-cl-nv-arch sm_90a" : route == 2 ? "patched PTX" : route == 3 ? "emulated" : "wgmma not reachable");

  variant V[32];
  int n = 0;
  for (int i = 0; i < nv; i++) {
    variant *v = &V[n];
    memset(v, 0, sizeof *v);
    nc_ocl_knobs_default(true, &v->kn);
    v->kn.gemm_tc = emu ? 2 : 1;
    int a[6] = {0};
    bool wg = !strncmp(vs[i], "wg:", 3);
    if (wg && sscanf(vs[i] + 3, "%d,%d,%d,%d,%d", &a[0], &a[1], &a[2], &a[3], &a[4]) == 5) {
      if (!route) continue;
      v->kn.tc_bm = a[0], v->kn.tc_bn = a[1], v->kn.tc_bk = a[2], v->kn.tc_stages = a[3], v->kn.tc_wg = a[4];
      nc_status st = nc_ocl_wgmma_check(&v->kn);
      if (st) { printf("%s: %s\n", vs[i], nc_status_msg(st)); nc_status_free(st); continue; }
    } else if (!wg && sscanf(vs[i] + 4, "%d,%d,%d,%d,%d,%d", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5]) == 6) {
      v->kn.tc_bm = a[0], v->kn.tc_bn = a[1], v->kn.tc_wm = a[2], v->kn.tc_wn = a[3], v->kn.tc_bk = a[4], v->kn.tc_stages = a[5];
      nc_status st = nc_ocl_tc_check(&v->kn);
      if (st) { printf("%s: %s\n", vs[i], nc_status_msg(st)); nc_status_free(st); continue; }
    } else {
      printf("bad knob set '%s'\n", vs[i]);
      continue;
    }
    snprintf(v->name, sizeof v->name, "%s", vs[i]);
    nc_buf_init(&src);
    nc_ocl_emit_prelude(&src);
    if (wg) nc_ocl_emit_gemm_wgmma(&v->kn, 0, &src);
    else nc_ocl_emit_gemm_packed(&v->kn, &src);
    if (emu) v->prog = build_src(src.data, "-cl-std=CL1.2", &err, v->name);
    else if (!wg || route == 1) v->prog = build_src(src.data, wg ? "-cl-std=CL1.2 -cl-nv-arch sm_90a -cl-nv-verbose" : "-cl-std=CL1.2 -cl-nv-verbose", &err, v->name);
    else v->prog = build_hidden(src.data, "-cl-std=CL1.2 -cl-nv-verbose", v->name, false);
    nc_buf_free(&src);
    if (!v->prog) continue;
    v->k = clCreateKernel(v->prog, wg ? "nc_gemm_wgmma" : "nc_gemm_bf16p", &err);
    if (!v->k) { printf("%s: clCreateKernel %d\n", v->name, err); continue; }
    n++;
  }
  // exactness on small shapes first (every element), then the timed shapes (sampled)
  const char *small[] = {"one_tile:64:64:64", "edges:200:136:200", "multi:256:512:320"};
  printf("%-28s %-18s %8s %8s %10s %s\n", "variant", "shape", "ms", "TFLOP/s", "worst err", "");
  for (int i = 0; i < n; i++) {
    for (int s = 0; s < 3 + ns; s++) {
      const char *sh = s < 3 ? small[s] : shapes[s - 3];
      char label[64];
      long M, N, K;
      if (sscanf(sh, "%63[^:]:%ld:%ld:%ld", label, &M, &N, &K) != 4) continue;
      double worst = INFINITY;
      double ms = run_gemm(&V[i], M, N, K, s < 3 ? 1 : reps, s < 3, &worst, 7 + (uint64_t)s);
      printf("%-28s %-18s %8.3f %8.1f %10.2g %s\n", V[i].name, label, ms, ms > 0 ? 2.0 * M * N * K / ms * 1e-9 : 0, worst,
             worst > 1e-5 ? "WRONG" : "ok");
      fflush(stdout);
    }
  }
  return 0;
}
