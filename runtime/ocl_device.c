// The OpenCL device (see runtime/ocl_device.h).
#include "runtime/ocl_device.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/ocl_attn.h"
#include "codegen/ocl_scatter.h"
#include "codegen/tune.h"
#include "passes/memplan.h"
#include "runtime/kir_eval.h"
#include "runtime/ocl_cache.h"
#include "runtime/ocl_impl.h"
#include "runtime/ocl_tune.h"
#include "runtime/plan_run.h"
#include "support/clock.h"

// ---- discovery and selection ---------------------------------------------------


static void nc_oc_str(cl_platform_id p, cl_device_id d, cl_uint what, char *buf, size_t n) {
  buf[0] = 0;
  if (d) clGetDeviceInfo(d, what, n - 1, buf, NULL);
  else clGetPlatformInfo(p, what, n - 1, buf, NULL);
  buf[n - 1] = 0;
}

// Every device, in runtime/opencl_info.c's order (the `nanochat devices` list).
static int nc_oc_enumerate(nc_oc_dev *out, int max) {
  cl_uint np = 0;
  if (clGetPlatformIDs(0, NULL, &np) != CL_SUCCESS || np == 0) return 0;
  cl_platform_id plats[16];
  if (np > 16) np = 16;
  if (clGetPlatformIDs(np, plats, NULL) != CL_SUCCESS) return 0;
  int n = 0;
  for (cl_uint p = 0; p < np; p++) {
    cl_uint nd = 0;
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0) continue;
    cl_device_id devs[16];
    if (nd > 16) nd = 16;
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, devs, NULL) != CL_SUCCESS) continue;
    for (cl_uint i = 0; i < nd && n < max; i++) {
      nc_oc_dev *o = &out[n];
      memset(o, 0, sizeof *o);
      o->plat = plats[p];
      o->dev = devs[i];
      o->d.index = n;
      nc_oc_str(plats[p], NULL, CL_PLATFORM_NAME, o->d.platform, sizeof o->d.platform);
      nc_oc_str(plats[p], NULL, CL_PLATFORM_VERSION, o->d.platform_version, sizeof o->d.platform_version);
      nc_oc_str(plats[p], NULL, CL_PLATFORM_VENDOR, o->d.platform_vendor, sizeof o->d.platform_vendor);
      nc_oc_str(plats[p], devs[i], CL_DEVICE_NAME, o->d.name, sizeof o->d.name);
      nc_oc_str(plats[p], devs[i], CL_DEVICE_VENDOR, o->d.vendor, sizeof o->d.vendor);
      nc_oc_str(plats[p], devs[i], CL_DEVICE_VERSION, o->d.version, sizeof o->d.version);
      nc_oc_str(plats[p], devs[i], CL_DRIVER_VERSION, o->d.driver, sizeof o->d.driver);
      clGetDeviceInfo(devs[i], CL_DEVICE_TYPE, sizeof o->type, &o->type, NULL);
      o->d.gpu = (o->type & CL_DEVICE_TYPE_GPU) != 0;
      n++;
    }
  }
  return n;
}

static bool nc_oc_contains_ci(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (const char *h = hay; *h; h++) {
    size_t i = 0;
    while (i < n && h[i] && tolower((unsigned char)h[i]) == tolower((unsigned char)needle[i])) i++;
    if (i == n) return true;
  }
  return n == 0;
}

static nc_status nc_oc_pick(const char *sel, nc_oc_dev *out) {
  nc_oc_dev devs[64];
  int n = nc_oc_enumerate(devs, 64);
  if (!sel) sel = "";
  if (n == 0)
    return nc_errorf(NC_E_UNSUPPORTED, "--device opencl%s%s: no OpenCL device found (install an ICD, e.g. pocl-opencl-icd; "
                     "`nanochat devices` lists them)", *sel ? ":" : "", sel);
  int pick = -1;
  if (!*sel) {
    for (int i = 0; i < n && pick < 0; i++)
      if (devs[i].type & CL_DEVICE_TYPE_GPU) pick = i;
    for (int i = 0; i < n && pick < 0; i++)
      if (devs[i].type & CL_DEVICE_TYPE_ACCELERATOR) pick = i;
    if (pick < 0) pick = 0;
  } else if (strspn(sel, "0123456789") == strlen(sel)) {
    long v = strtol(sel, NULL, 10);
    if (strlen(sel) > 6 || v >= n)
      return nc_errorf(NC_E_INVALID, "--device opencl:%s: no such device (there %s %d: opencl:0..%d; `nanochat devices` lists them)",
                       sel, n == 1 ? "is" : "are", n, n - 1);
    pick = (int)v;
  } else if (!strcmp(sel, "gpu") || !strcmp(sel, "cpu")) {
    cl_device_type want = !strcmp(sel, "gpu") ? CL_DEVICE_TYPE_GPU : CL_DEVICE_TYPE_CPU;
    for (int i = 0; i < n && pick < 0; i++)
      if (devs[i].type & want) pick = i;
    if (pick < 0) return nc_errorf(NC_E_INVALID, "--device opencl:%s: no OpenCL %s device (`nanochat devices` lists them)", sel, sel);
  } else {
    for (int i = 0; i < n && pick < 0; i++) {
      char both[400];
      snprintf(both, sizeof both, "%s | %s | %s", devs[i].d.platform, devs[i].d.platform_vendor, devs[i].d.name);
      if (nc_oc_contains_ci(both, sel)) pick = i;
    }
    if (pick < 0) {
      char list[1024] = "";
      for (int i = 0; i < n; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%d: %s | %s | %s", i ? "; " : "", i, devs[i].d.platform, devs[i].d.platform_vendor,
                 devs[i].d.name);
      }
      return nc_errorf(NC_E_INVALID, "--device opencl:%s: no OpenCL device's platform, vendor or name contains '%s' (devices: %s)", sel, sel, list);
    }
  }
  *out = devs[pick];
  return NC_OK;
}

nc_status nc_ocl_select(const char *sel, nc_ocl_device_desc *out) {
  nc_oc_dev d;
  NC_TRY(nc_oc_pick(sel, &d));
  *out = d.d;
  return NC_OK;
}

bool nc_ocl_available(void) {
  nc_oc_dev devs[4];
  return nc_oc_enumerate(devs, 4) > 0;
}

const char *nc_oc_errname(cl_int e) {
  switch (e) {
    case CL_DEVICE_NOT_FOUND: return "CL_DEVICE_NOT_FOUND";
    case CL_OUT_OF_RESOURCES: return "CL_OUT_OF_RESOURCES";
    case CL_OUT_OF_HOST_MEMORY: return "CL_OUT_OF_HOST_MEMORY";
    case CL_MEM_OBJECT_ALLOCATION_FAILURE: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case CL_BUILD_PROGRAM_FAILURE: return "CL_BUILD_PROGRAM_FAILURE";
    case CL_INVALID_VALUE: return "CL_INVALID_VALUE";
    case CL_INVALID_BINARY: return "CL_INVALID_BINARY";
    case CL_INVALID_KERNEL_ARGS: return "CL_INVALID_KERNEL_ARGS";
    case CL_INVALID_WORK_GROUP_SIZE: return "CL_INVALID_WORK_GROUP_SIZE";
    case CL_INVALID_WORK_ITEM_SIZE: return "CL_INVALID_WORK_ITEM_SIZE";
    case CL_INVALID_GLOBAL_WORK_SIZE: return "CL_INVALID_GLOBAL_WORK_SIZE";
    case CL_INVALID_BUFFER_SIZE: return "CL_INVALID_BUFFER_SIZE";
    case CL_INVALID_ARG_SIZE: return "CL_INVALID_ARG_SIZE";
    case CL_INVALID_ARG_VALUE: return "CL_INVALID_ARG_VALUE";
    case CL_INVALID_KERNEL_NAME: return "CL_INVALID_KERNEL_NAME";
    case CL_INVALID_COMMAND_QUEUE: return "CL_INVALID_COMMAND_QUEUE";
    case CL_INVALID_MEM_OBJECT: return "CL_INVALID_MEM_OBJECT";
    case CL_INVALID_OPERATION: return "CL_INVALID_OPERATION";
    default: return "CL error";
  }
}

// ---- the compiled plan -----------------------------------------------------------


static nc_status nc_oc_rb_after(nc_ocl *c, const nc_graph *g, const nc_plan *p, int q, const int64_t *syms, const nc_tensor **fed);
static nc_status nc_oc_rb_wait(nc_ocl *c);
static void nc_oc_rb_free(nc_ocl *c);

void nc_ocl_free(nc_ocl *c) {
  if (!c) return;
  if (c->q) clFinish(c->q);
  nc_oc_rb_free(c);  // before the context: pinned buffers, the read queue
  if (c->mem)
    for (uint32_t i = 0; i < c->nnodes; i++)
      if (c->mem[i]) clReleaseMemObject(c->mem[i]);
  if (c->arena) clReleaseMemObject(c->arena);
  nc_memplan_free(c->mp);
  free(c->view);
  free(c->off);
  if (c->kern)
    for (int i = 0; i < c->nuniq; i++)
      if (c->kern[i]) clReleaseKernel(c->kern[i]);
  for (int v = 0; v < 8; v++)
    if (c->gemm[v]) clReleaseKernel(c->gemm[v]);
  for (int i = 0; c->tuned_kern && i < c->ntuned; i++)
    if (c->tuned_kern[i]) clReleaseKernel(c->tuned_kern[i]);
  free(c->tuned_kern);
  for (int i = 0; c->tuned_pv && i < c->ntuned; i++)
    for (int f = 0; f < NC_OCL_GEMMP_NVAR; f++)
      if (c->tuned_pv[i][f]) clReleaseKernel(c->tuned_pv[i][f]);
  free(c->tuned_pv);
  free(c->tuned);
  cl_kernel pks[6] = {c->pack_k, c->pack_t, c->pack_kh, c->pack_th, c->gemm_p, c->splitk_sum};
  for (int v = 0; v < 6; v++)
    if (pks[v]) clReleaseKernel(pks[v]);
  for (int f = 1; f < NC_OCL_GEMMP_NVAR; f++)
    if (c->gemm_pv[f]) clReleaseKernel(c->gemm_pv[f]);
  if (c->packed) clReleaseMemObject(c->packed);
  if (c->partial) clReleaseMemObject(c->partial);
  for (int i = 0; i < c->nattn; i++) {
    cl_kernel ak[3] = {c->attn[i].fwd, c->attn[i].dq, c->attn[i].dkdv};
    for (int v = 0; v < 3; v++) {
      if (ak[v]) clReleaseKernel(ak[v]);
      for (int j = 0; j < c->attn[i].nfsets; j++)
        if (c->attn[i].tk[j][v]) clReleaseKernel(c->attn[i].tk[j][v]);
    }
  }
  if (c->attn_st) clReleaseMemObject(c->attn_st);
  for (int i = 0; i < c->nattn_lse; i++)
    if (c->attn_lse[i].buf) clReleaseMemObject(c->attn_lse[i].buf);
  free(c->attn_lse);
  if (c->attn_di) clReleaseKernel(c->attn_di);
  for (int v = 0; v < 2; v++)
    if (c->scatter[v]) clReleaseKernel(c->scatter[v]);
  if (c->attn_pack) clReleaseKernel(c->attn_pack);
  if (c->attn_pk) clReleaseMemObject(c->attn_pk);
  if (c->prog) clReleaseProgram(c->prog);
  if (c->q) clReleaseCommandQueue(c->q);
  if (c->ctx) clReleaseContext(c->ctx);
  free(c->uniq);
  free(c->launch);
  free(c->kern);
  free(c->used);
  free(c->kept);
  free(c->mem);
  free(c->memsz);
  free(c->ksec);
  free(c->kcalls);
  free(c->kflop);
  free(c->kitems);
  free(c->kflops_sum);
  free(c->kbytes);
  free(c->kbytes_sum);
  free(c->ev);
  free(c->ev0);
  free(c);
}

static nc_status nc_oc_build_log(nc_ocl *c, cl_program prog, cl_int err) {
  size_t n = 0;
  clGetProgramBuildInfo(prog, c->dev.dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
  char *log = malloc(n + 1);
  if (log) {
    log[0] = 0;
    clGetProgramBuildInfo(prog, c->dev.dev, CL_PROGRAM_BUILD_LOG, n, log, NULL);
    log[n] = 0;
  }
  nc_status st = nc_errorf(NC_E_INTERNAL, "OpenCL program build failed on %s (%s, %d): %.3000s", c->dev.d.name, nc_oc_errname(err),
                           (int)err, log ? log : "(no build log)");
  free(log);
  return st;
}

// The wgmma GEMM's route to sm_90a: NVIDIA's OpenCL compiler targets plain sm_90 (ptxas
// refuses wgmma there, also with -cl-nv-arch sm_90a), so the program is built with those
// instructions hidden in PTX comments (-DNC_WG_HIDE), and its PTX (the program binary on
// NVIDIA) is patched (instructions restored, .target sm_90a: nc_ocl_ptx_unhide) and
// built again from that binary. *p is replaced by the patched program.
static nc_status nc_oc_ptx_unhide(nc_ocl *c, cl_program *p, const char *opts) {
  size_t sz = 0;
  cl_int err = clGetProgramInfo(*p, CL_PROGRAM_BINARY_SIZES, sizeof sz, &sz, NULL);
  unsigned char *b = err == CL_SUCCESS && sz ? calloc(sz + 1, 1) : NULL;
  if (!b || clGetProgramInfo(*p, CL_PROGRAM_BINARIES, sizeof b, &b, NULL) != CL_SUCCESS) {
    free(b);
    clReleaseProgram(*p);
    return nc_errorf(NC_E_UNSUPPORTED, "OpenCL wgmma GEMM on %s: the driver gives no program binary (PTX) to patch", c->dev.d.name);
  }
  bool changed = false;
  char *ptx = nc_ocl_ptx_unhide((const char *)b, strnlen((const char *)b, sz), &changed);
  free(b);
  clReleaseProgram(*p);
  *p = NULL;
  if (!ptx) return nc_errorf(NC_E_NOMEM, "out of memory");
  if (!changed || !strstr(ptx, ".target sm_90a")) {
    free(ptx);
    return nc_errorf(NC_E_UNSUPPORTED, "OpenCL wgmma GEMM on %s: the program binary is not PTX for sm_90 with the hidden wgmma instructions", c->dev.d.name);
  }
  size_t len = strlen(ptx) + 1;
  const unsigned char *bp = (const unsigned char *)ptx;
  cl_int bst = CL_SUCCESS;
  cl_program q = clCreateProgramWithBinary(c->ctx, 1, &c->dev.dev, &len, &bp, &bst, &err);
  free(ptx);
  if (!q || err != CL_SUCCESS || bst != CL_SUCCESS) {
    if (q) clReleaseProgram(q);
    return nc_errorf(NC_E_UNSUPPORTED, "OpenCL wgmma GEMM on %s: clCreateProgramWithBinary of the patched PTX failed (%s, binary status %d)", c->dev.d.name,
                     nc_oc_errname(err), (int)bst);
  }
  err = clBuildProgram(q, 1, &c->dev.dev, opts, NULL, NULL);
  if (err != CL_SUCCESS) {
    nc_status st = nc_oc_build_log(c, q, err);
    clReleaseProgram(q);
    return st;
  }
  *p = q;
  return NC_OK;
}

nc_status nc_ocl_wgmma_rebuild(cl_context ctx, cl_device_id dev, const char *devname, cl_program *p, const char *opts) {
  nc_ocl *c = calloc(1, sizeof *c);
  if (!c) return nc_errorf(NC_E_NOMEM, "out of memory");
  c->ctx = ctx, c->dev.dev = dev;
  snprintf(c->dev.d.name, sizeof c->dev.d.name, "%s", devname);
  nc_status st = nc_oc_ptx_unhide(c, p, opts);
  free(c);
  return st;
}

// Whether the program has the GEMM kernel variant f (NC_OCL_GEMMP_*): 0 always; the others with bf16 GEMMs
// (need_gemm: by GEMM variant, codegen/ocl_emit.h), the MN-major ones only for the forms that read such
// an operand (nn: B; tn: A and B; tt: A) and on the wgmma kernel (nc_ocl_gemm_variant_ok).
static bool nc_oc_pv_wanted(const nc_ocl_knobs *k, const bool *need_gemm, int f) {
  int b = NC_OCL_GEMM_BF16, mn = f & (NC_OCL_GEMMP_AMN | NC_OCL_GEMMP_BMN);
  if (!f) return true;
  if (!(need_gemm[b] || need_gemm[b | 1] || need_gemm[b | 2] || need_gemm[b | 3])) return false;
  if (!nc_ocl_gemm_variant_ok(k, f)) return false;
  return mn == 0 || need_gemm[b | (mn == NC_OCL_GEMMP_BMN ? 0 : mn == NC_OCL_GEMMP_AMN ? 3 : 2)];
}

// The variants of the pipelined GEMM the tuned knob set of entry i needs: those of the forms (ta, tb)
// of the entries that share its kernels, over the buffers the program has (need_gemm).
static void nc_oc_tuned_need(const nc_ocl *c, int i, const bool *need_gemm, bool need[8]) {
  for (int v = 0; v < 8; v++) need[v] = false;
  for (int j = 0; j < c->ntuned; j++)
    if (c->tuned[j].set == c->tuned[i].set) {
      int v = c->tuned[j].variant & 3;
      need[v] = need_gemm[v], need[v | NC_OCL_GEMM_BF16] = need_gemm[v | NC_OCL_GEMM_BF16];
    }
}

// The tuned pipelined GEMMs (runtime/ocl_tune.h): each distinct knob set's variants as nc_gemmp_t<set>_f<flags>.
static nc_status nc_oc_tuned_emit_packed(const nc_ocl *c, const bool *need_gemm, nc_buf *src) {
  for (int i = 0; i < c->ntuned; i++) {
    if (!c->tuned[i].packed || c->tuned[i].set != i) continue;
    bool need[8];
    nc_oc_tuned_need(c, i, need_gemm, need);
    for (int f = 0; f < NC_OCL_GEMMP_NVAR; f++) {
      if (!nc_oc_pv_wanted(&c->tuned[i].knobs, need, f)) continue;
      char nm[64];
      snprintf(nm, sizeof nm, "%s_f%d", c->tuned[i].name, f);
      NC_TRY(nc_ocl_emit_gemm_packed_named(&c->tuned[i].knobs, f, nm, src));
    }
  }
  return NC_OK;
}

// Builds from the cached binary (when valid) or from source (then caches it).
static nc_status nc_oc_program(nc_ocl *c, const char *src, const char *opts) {
  const char *parts[] = {src, opts, c->dev.d.platform, c->dev.d.platform_version, c->dev.d.name, c->dev.d.version, c->dev.d.driver};
  c->key = nc_ocl_cache_key(parts, 7);
  void *bin = NULL;
  size_t binsz = 0;
  nc_ocl_cache_get(c->key, &bin, &binsz);
  cl_int err;
  if (bin) {
    const unsigned char *bp = bin;
    cl_int bst = CL_SUCCESS;
    cl_program p = clCreateProgramWithBinary(c->ctx, 1, &c->dev.dev, &binsz, &bp, &bst, &err);
    if (p && err == CL_SUCCESS && bst == CL_SUCCESS && clBuildProgram(p, 1, &c->dev.dev, opts, NULL, NULL) == CL_SUCCESS) {
      c->prog = p;
      c->cache_hit = true;
    } else if (p) {
      clReleaseProgram(p);  // the driver refused the entry: rebuild from source below
    }
    free(bin);
    if (c->prog) return NC_OK;
  }
  size_t len = strlen(src);
  cl_program p = clCreateProgramWithSource(c->ctx, 1, &src, &len, &err);
  if (!p || err != CL_SUCCESS) return NC_CL_ERR(err, "clCreateProgramWithSource");
  err = clBuildProgram(p, 1, &c->dev.dev, opts, NULL, NULL);
  if (err != CL_SUCCESS) {
    nc_status st = nc_oc_build_log(c, p, err);
    clReleaseProgram(p);
    return st;
  }
  if (strstr(opts, "-DNC_WG_HIDE")) NC_TRY(nc_oc_ptx_unhide(c, &p, opts));  // the wgmma GEMM (codegen/ocl_gemm.c)
  c->prog = p;
  size_t sz = 0;
  if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof sz, &sz, NULL) == CL_SUCCESS && sz > 0) {
    unsigned char *b = malloc(sz);
    if (b && clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof b, &b, NULL) == CL_SUCCESS) {
      nc_status st = nc_ocl_cache_put(c->key, b, sz);
      nc_status_free(st);  // a cache that cannot be written only costs time
    }
    free(b);
  }
  return NC_OK;
}

// An on/off switch from the environment: unset or empty gives dflt, "0" false, "1"
// true; anything else is an error naming the variable and what 0 and 1 mean.
static nc_status nc_oc_env_switch(const char *name, bool dflt, const char *means, bool *out) {
  const char *e = getenv(name);
  *out = dflt;
  if (!e || !*e) return NC_OK;
  if (strcmp(e, "0") && strcmp(e, "1")) return nc_errorf(NC_E_INVALID, "%s='%s': want %s", name, e, means);
  *out = e[0] == '1';
  return NC_OK;
}

nc_status nc_ocl_compile(const nc_plan *p, const nc_ocl_opts *o, nc_ocl **out) {
  *out = NULL;
  double t0 = nc_clock_now();
  nc_ocl *c = calloc(1, sizeof *c);
  if (!c) return nc_errorf(NC_E_NOMEM, "out of memory");
  nc_status st = nc_oc_pick(o ? o->select : NULL, &c->dev);
  if (st) {
    free(c);
    return st;
  }
  c->profile = o && o->profile;
  c->verbose = o && o->verbose;
  if (o && o->knobs) c->knobs = *o->knobs;
  else nc_ocl_knobs_default(c->dev.d.gpu, &c->knobs);
  // bf16 matmuls: tensor cores on NVIDIA; elsewhere the portable fp32 GEMM
  // (an explicit gemm_tc knob wins: 2 emulates the bf16 kernel anywhere)
  bool nvidia = strstr(c->dev.d.vendor, "NVIDIA") || strstr(c->dev.d.platform_vendor, "NVIDIA");
  if (o && o->matmul_bf16 && c->knobs.gemm_tc == 0 && nvidia) c->knobs.gemm_tc = 1;
  if ((st = nc_ocl_knobs_check(&c->knobs))) goto fail;
  if (c->knobs.gemm_tc == 1 && !nvidia) {
    st = nc_errorf(NC_E_UNSUPPORTED, "OpenCL knob gemm_tc=1 (mma.sync tensor cores) needs an NVIDIA device, not %s | %s (use 2 to emulate)",
                   c->dev.d.platform, c->dev.d.name);
    goto fail;
  }
  // Hopper (compute capability 9.x): the wgmma GEMM by default (nc_ocl_wgmma_default;
  // NC_OCL_WGMMA=0 keeps mma.sync); the mma.sync defaults again if it does not build.
  bool wg_auto = false;
  nc_ocl_knobs mma_knobs = c->knobs;  // what the mma.sync fallback uses
  bool wgmma_on, scatter_on;
  if ((st = nc_oc_env_switch("NC_OCL_WGMMA", true, "0 (mma.sync) or 1 (wgmma where the device has it)", &wgmma_on)) ||
      (st = nc_oc_env_switch("NC_OCL_SCATTER", true, "0 (scatter_add as a loop kernel) or 1 (float atomics, the default)", &scatter_on)))
    goto fail;  // (NC_OCL_SCATTER itself is read by the lowering: nc_device_scatter_atomic)
  if (c->knobs.gemm_tc == 1 && c->knobs.tc_stages > 0) {
    cl_uint ccmaj = 0;
    if (clGetDeviceInfo(c->dev.dev, 0x4000 /* CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV */, sizeof ccmaj, &ccmaj, NULL) != CL_SUCCESS) ccmaj = 0;
    if (c->knobs.tc_wg && ccmaj != 9) {
      st = nc_errorf(NC_E_UNSUPPORTED, "OpenCL knob tc_wg=%d (wgmma) needs an NVIDIA compute capability 9.x device, not %s (%u.x; use gemm_tc 2 to emulate)",
                     c->knobs.tc_wg, c->dev.d.name, ccmaj);
      goto fail;
    }
    if (!(o && o->knobs) && ccmaj == 9 && wgmma_on) {
      nc_ocl_knobs w = c->knobs;
      nc_ocl_wgmma_default(&w);
      if (!nc_ocl_tc_check(&w)) mma_knobs = c->knobs, c->knobs = w, wg_auto = true;
    }
  }
  cl_int err;
  cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)c->dev.plat, 0};
  c->ctx = clCreateContext(props, 1, &c->dev.dev, NULL, NULL, &err);
  if (!c->ctx || err != CL_SUCCESS) {
    st = NC_CL_ERR(err, "clCreateContext");
    goto fail;
  }
  c->q = clCreateCommandQueue(c->ctx, c->dev.dev, c->profile ? CL_QUEUE_PROFILING_ENABLE : 0, &err);
  if (!c->q || err != CL_SUCCESS) {
    st = NC_CL_ERR(err, "clCreateCommandQueue");
    goto fail;
  }
  c->nk = p->nkernels;
  c->nnodes = p->nnodes;
  size_t nk1 = (size_t)(c->nk > 0 ? c->nk : 1), nn1 = c->nnodes ? c->nnodes : 1;
  c->uniq = calloc(nk1, sizeof *c->uniq);
  c->launch = calloc(nk1, sizeof *c->launch);
  c->kern = calloc(nk1, sizeof *c->kern);
  c->used = calloc(nn1, 1);
  c->kept = calloc(nn1, 1);
  c->mem = calloc(nn1, sizeof *c->mem);
  c->memsz = calloc(nn1, sizeof *c->memsz);
  c->view = calloc(nn1, sizeof *c->view);
  c->off = calloc(nn1, sizeof *c->off);
  c->ksec = calloc(nk1, sizeof *c->ksec);
  c->kcalls = calloc(nk1, sizeof *c->kcalls);
  c->ev = calloc(nk1, sizeof *c->ev);
  c->ev0 = calloc(nk1, sizeof *c->ev0);
  c->kflop = calloc(nk1, sizeof *c->kflop);
  c->kitems = calloc(nk1, sizeof *c->kitems);
  c->kflops_sum = calloc(nk1, sizeof *c->kflops_sum);
  c->kbytes = calloc(nk1, sizeof *c->kbytes);
  c->kbytes_sum = calloc(nk1, sizeof *c->kbytes_sum);
  uint64_t *uhash = calloc(nk1, sizeof *uhash);
  bool *wgt = calloc(nk1, sizeof *wgt), retry = false;  // kernels emitted with a tuned row_wg / reduce_wg
  nc_buf src, tmp;
  nc_buf_init(&src);
  nc_buf_init(&tmp);
  if (!c->uniq || !c->launch || !c->kern || !c->used || !c->kept || !c->mem || !c->memsz || !c->ksec || !c->kcalls || !c->ev || !c->ev0 || !uhash || !wgt || !c->kflop || !c->kitems || !c->view || !c->off ||
      !c->kflops_sum || !c->kbytes || !c->kbytes_sum) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto fail_bufs;
  }
  nc_ocl_emit_prelude(&src);
  bool need_gemm[8] = {false}, rows_read = false;
  // one OpenCL kernel per distinct code: kernels that differ only in their buffers share it
  for (int q = 0; q < c->nk && !st; q++) {
    const nc_plan_kernel *pk = &p->kernels[q];
    for (int b = 0; b < pk->k.nbufs; b++)
      if (pk->buf_node[b] < c->nnodes) c->used[pk->buf_node[b]] = 1;
    tmp.len = 0;
    st = nc_ocl_emit_kernel(&pk->k, "nck", &c->knobs, &tmp, &c->launch[q]);
    if (st) break;
    // a row kernel whose row-length bucket has a tuned row_wg (ocl.loop class=row, runtime/ocl_tune.h), a
    // whole-buffer reduction whose element-count bucket has a tuned reduce_wg (class=reduce): emitted
    // again with a copy of the knobs (the work-group size is in its source)
    const nc_ocl_knobs *kq = &c->knobs;
    nc_ocl_knobs krow;
    if ((c->launch[q].row_wg || c->launch[q].reduce_wg) && (!(o && o->knobs) || o->knobs_tuned) && !(o && o->wg_untuned)) {
      if (!rows_read) {
        size_t mw = 0;
        clGetDeviceInfo(c->dev.dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof mw, &mw, NULL);
        int max_wg = mw > 0 && mw < 1024 ? (int)mw : 1024;
        nc_ocl_wg_collect(&c->dev.d, &c->knobs, NC_OCL_LOOP_ROW, max_wg, c->row_wg_tuned);
        nc_ocl_wg_collect(&c->dev.d, &c->knobs, NC_OCL_LOOP_REDUCE, max_wg, c->reduce_wg_tuned);
        rows_read = true;
      }
      bool row = c->launch[q].row_wg != 0;
      int w = row ? c->row_wg_tuned[nc_ocl_row_slot(nc_ocl_row_bucket(nc_ocl_row_cols(&pk->k, c->launch[q].ncollapse)))]
                  : c->reduce_wg_tuned[nc_ocl_row_slot(nc_ocl_row_bucket(nc_ocl_reduce_items(&pk->k, &c->launch[q])))];
      if (w) {
        krow = c->knobs, kq = &krow;
        if (row) krow.row_wg = w, c->row_tuned_kernels++;
        else krow.reduce_wg = w, c->reduce_tuned_kernels++;
        wgt[q] = true;
        tmp.len = 0;
        if ((st = nc_ocl_emit_kernel(&pk->k, "nck", kq, &tmp, &c->launch[q]))) break;
      }
    }
    if (c->launch[q].gemm) {
      c->uniq[q] = -1;
      need_gemm[c->launch[q].gemm_variant] = true;
      continue;
    }
    if (c->launch[q].scatter) {  // scatter_add: the two kernels of codegen/ocl_scatter.h
      c->uniq[q] = -1;
      c->any_scatter = true;
      continue;
    }
    if (c->launch[q].attn) {  // flash attention: one kernel set per padded head-dim pair
      c->uniq[q] = -1;
      int a = 0;
      while (a < c->nattn && (c->attn[a].dp != c->launch[q].attn_dp || c->attn[a].dvp != c->launch[q].attn_dvp)) a++;
      if (a == c->nattn) {
        if (a == 4) {
          st = nc_errorf(NC_E_UNSUPPORTED, "kernel %s: more than 4 attention head-dim pairs in one plan", pk->k.name);
          break;
        }
        c->attn[a].dp = c->launch[q].attn_dp, c->attn[a].dvp = c->launch[q].attn_dvp, c->nattn++;
      }
      continue;
    }
    // the first line names the IR kernel: hash the code only
    const char *code = tmp.data ? strchr(tmp.data, '\n') : NULL;
    uint64_t h = code ? nc_hash_bytes(NC_HASH_SEED, code, strlen(code)) : 0;
    int u = -1;
    for (int i = 0; i < c->nuniq && u < 0; i++)
      if (uhash[i] == h) u = i;
    if (u < 0) {
      u = c->nuniq++;
      uhash[u] = h;
      char name[32];
      snprintf(name, sizeof name, "nck%d", u);
      st = nc_ocl_emit_kernel(&pk->k, name, kq, &src, &c->launch[q]);
    }
    c->uniq[q] = u;
  }
  const char *dbg = getenv("NC_DEBUG");
  if (!st && rows_read && dbg && atoi(dbg) >= 1)
    fprintf(stderr, "opencl: %d row kernels and %d reductions emitted with a tuned work-group\n", c->row_tuned_kernels, c->reduce_tuned_kernels);
  if (!st && c->nuniq && (!(o && o->knobs) || o->knobs_tuned))  // tuned loop work-groups by size bucket (runtime/ocl_tune.h)
    nc_ocl_wg_collect(&c->dev.d, &c->knobs, NC_OCL_LOOP_ELEMENTWISE, 0, c->loop_wg_tuned);
  bool packed = c->knobs.gemm_tc && c->knobs.tc_stages > 0, any_gemm = false;
  for (int v = 0; v < 8 && !st; v++) {
    any_gemm |= need_gemm[v];
    if (need_gemm[v] && !packed) nc_ocl_emit_gemm(&c->knobs, v, &src);
  }
  if (!st && any_gemm && (!(o && o->knobs) || o->knobs_tuned)) {  // per-shape GEMMs from the tuning database (runtime/ocl_tune.h)
    if (!(c->tuned = calloc(NC_OCL_MAX_TUNED, sizeof *c->tuned))) st = nc_errorf(NC_E_NOMEM, "out of memory");
    else c->ntuned = nc_ocl_tuned_collect(&c->dev.d, &c->knobs, need_gemm, c->tuned, NC_OCL_MAX_TUNED);
    if (!st) st = nc_ocl_tuned_emit(c->tuned, c->ntuned, &src);
  }
  if (!st && c->nattn) {  // flash attention: tensor cores with the bf16 GEMM on NVIDIA (gemm_tc 1), emulated with 2, else fp32
    // (before gemm_at: kept when the wgmma GEMM is re-emitted as mma.sync below)
    c->attn_tc = c->knobs.gemm_tc;
    nc_ocl_attn_blocks_of(c->attn_tc, &c->attn_bl);
    const char *fe = getenv("NC_OCL_FA");
    bool fa_given = (fe && *fe) || (o && o->attn_blocks);
    if (o && o->attn_blocks) {  // checked at each head-dim pair of the plan (local memory, accumulators)
      for (int a = 0; a < c->nattn && !st; a++) st = nc_ocl_attn_blocks_check(c->attn_tc, c->attn[a].dp, c->attn[a].dvp, o->attn_blocks);
      c->attn_bl = *o->attn_blocks;
    } else if (fe && *fe) st = nc_ocl_attn_blocks_parse(fe, c->attn_tc, &c->attn_bl);
    if (!st) st = nc_oc_env_switch("NC_OCL_FA_STATS", false, "1 (the backward recomputes the statistics) or 0 (it reads the forward's)", &c->attn_stats_force);
    if (!st) {
      nc_ocl_emit_attn_common(c->attn_tc, &c->attn_bl, &src);
      for (int a = 0; a < c->nattn; a++) {
        nc_ocl_emit_attn(c->attn_tc, c->attn[a].dp, c->attn[a].dvp, &src);
        // per-shape blocks from the tuning database (runtime/ocl_tune.h; not with explicit blocks or knobs)
        if (!fa_given && (!(o && o->knobs) || o->knobs_tuned))
          c->attn[a].nft = nc_ocl_flash_collect(&c->dev.d, c->attn_tc, c->attn[a].dp, c->attn[a].dvp, &c->attn_bl, c->attn[a].ft,
                                                NC_OCL_MAX_TUNED_FLASH, &c->attn[a].nfsets);
        for (int j = 0; j < c->attn[a].nft; j++) {  // one kernel set per distinct blocks
          bool first = true;
          for (int i = 0; i < j && first; i++) first = c->attn[a].ft[i].set != c->attn[a].ft[j].set;
          if (first) nc_ocl_emit_attn_set(c->attn_tc, c->attn[a].dp, c->attn[a].dvp, &c->attn[a].ft[j].bl, &c->attn_bl, c->attn[a].ft[j].set, &src);
        }
      }
    }
  }
  if (!st && c->any_scatter) nc_ocl_emit_scatter(nvidia, &src);
  size_t gemm_at = src.len;  // where the GEMM kernels start (re-emitted if the wgmma ones do not build)
  // bf16 GEMMs: also the variants with zero-filled copies (operands in place over partial tiles) and bf16 C
  if (!st && packed && any_gemm) {
    nc_ocl_emit_gemm_packed(&c->knobs, &src);
    for (int f = 1; f < NC_OCL_GEMMP_NVAR; f++)
      if (nc_oc_pv_wanted(&c->knobs, need_gemm, f)) nc_ocl_emit_gemm_packed_kernel(&c->knobs, f, &src);
    st = nc_oc_tuned_emit_packed(c, need_gemm, &src);
  }
  bool tuned_wg = false;  // a tuned pipelined GEMM on the wgmma kernel (built as the default one is)
  for (int i = 0; packed && i < c->ntuned; i++) tuned_wg |= c->tuned[i].knobs.tc_wg != 0;
  if (!(packed && any_gemm)) c->knobs.tc_wg = 0, wg_auto = false;
  {
    cl_uint cu = 0;
    clGetDeviceInfo(c->dev.dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    c->ncu = cu > 0 ? (int)cu : 1;
    bool direct = true;
    if (!st) st = nc_oc_env_switch("NC_OCL_GEMM_DIRECT", true, "1 (bf16 operands read in place where possible, the default) or 0 (always packed)", &direct);
    c->direct_off = !direct;
    const char *sk = getenv("NC_OCL_SPLITK");
    if (!st && sk && *sk) {
      char *end;
      long v = strtol(sk, &end, 10);
      if (*end || v < 1 || v > 64) st = nc_errorf(NC_E_INVALID, "NC_OCL_SPLITK='%s': want a number of K splits in 1..64", sk);
      else c->splitk_force = (int)v;
    }
  }
  if (!st && (src.oom || tmp.oom)) st = nc_errorf(NC_E_NOMEM, "out of memory emitting OpenCL C");
  if (st) goto fail_bufs;
  if (c->verbose) fprintf(stderr, "// OpenCL program for %s | %s\n%s", c->dev.d.platform, c->dev.d.name, src.data ? src.data : "");
  {  // NC_OCL_BUILD_OPTS: extra OpenCL build options (experiments: -cl-nv-maxrregcount=N, -DNC_MMA_Q=); part of the cache key
    char bo[320] = "-cl-std=CL1.2";
    const char *xo = getenv("NC_OCL_BUILD_OPTS");
    if (xo && *xo) {
      if (strlen(xo) > 250 || strpbrk(xo, "\n\r")) st = nc_errorf(NC_E_INVALID, "NC_OCL_BUILD_OPTS: over 250 characters or a line break");
      else snprintf(bo + strlen(bo), sizeof bo - strlen(bo), " %s", xo);
    }
    if (!st && (c->knobs.tc_wg || tuned_wg) && c->knobs.gemm_tc == 1) snprintf(bo + strlen(bo), sizeof bo - strlen(bo), " -DNC_WG_HIDE");
    if (!st) st = nc_oc_program(c, src.data ? src.data : "", bo);
    if (st && wg_auto) {  // the driver refused the wgmma route: the mma.sync kernel instead
      if (c->verbose) fprintf(stderr, "// OpenCL: the wgmma GEMM did not build (%s); using mma.sync\n", nc_status_msg(st));
      nc_status_free(st);
      c->knobs = mma_knobs, wg_auto = false;
      c->ntuned = 0;  // (tuned on the wgmma defaults: cut with the GEMM kernels)
      src.len = gemm_at;
      nc_ocl_emit_gemm_packed(&c->knobs, &src);
      for (int f = 1; f < NC_OCL_GEMMP_NVAR; f++)
        if (nc_oc_pv_wanted(&c->knobs, need_gemm, f)) nc_ocl_emit_gemm_packed_kernel(&c->knobs, f, &src);
      char *hide = strstr(bo, " -DNC_WG_HIDE");
      if (hide) *hide = 0;
      st = src.oom ? nc_errorf(NC_E_NOMEM, "out of memory emitting OpenCL C") : nc_oc_program(c, src.data ? src.data : "", bo);
    }
    if (!st && getenv("NC_OCL_BUILD_LOG") && !c->cache_hit) {  // the driver's log of a successful build (-cl-nv-verbose: registers, spills)
      size_t n = 0;
      clGetProgramBuildInfo(c->prog, c->dev.dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
      char *log = n ? malloc(n + 1) : NULL;
      if (log && clGetProgramBuildInfo(c->prog, c->dev.dev, CL_PROGRAM_BUILD_LOG, n, log, NULL) == CL_SUCCESS) {
        log[n] = 0;
        fprintf(stderr, "// OpenCL build log (%s):\n%s\n", bo, log);
      }
      free(log);
    }
    if (st) goto fail_bufs;
  }
  for (int u = 0; u < c->nuniq && !st; u++) {
    char name[32];
    snprintf(name, sizeof name, "nck%d", u);
    c->kern[u] = clCreateKernel(c->prog, name, &err);
    if (!c->kern[u] || err != CL_SUCCESS) st = NC_CL_ERR(err, "clCreateKernel");
  }
  // A tuned row_wg or reduce_wg was timed on a synthetic kernel (runtime/tuner_flash.c): a plan kernel
  // that cannot take it (CL_KERNEL_WORK_GROUP_SIZE: its registers or local memory) would fail at launch.
  // The plan is then built again without the tuned row and reduction work-groups, with a warning.
  const char *lim = getenv("NC_OCL_TEST_KERNEL_WG");  // test hook: a lower limit for every kernel
  for (int q = 0; q < c->nk && !st && !retry; q++) {
    size_t wg = c->launch[q].reduce_wg ? (size_t)c->launch[q].reduce_wg : (size_t)c->launch[q].row_wg, kmax = 0;
    if (!wgt[q] || c->uniq[q] < 0 ||
        clGetKernelWorkGroupInfo(c->kern[c->uniq[q]], c->dev.dev, CL_KERNEL_WORK_GROUP_SIZE, sizeof kmax, &kmax, NULL) != CL_SUCCESS)
      continue;
    if (lim && atoi(lim) > 0 && (size_t)atoi(lim) < kmax) kmax = (size_t)atoi(lim);
    if (wg <= kmax) continue;
    fprintf(stderr, "opencl: kernel %s takes at most %zu work-items per group on %s, not the tuned %s %zu (tuning database): "
            "building the plan without tuned row and reduction work-groups\n", p->kernels[q].k.name, kmax, c->dev.d.name,
            c->launch[q].reduce_wg ? "reduce_wg" : "row_wg", wg);
    retry = true;
  }
  for (int v = 0; v < 8 && !st && !packed; v++)
    if (need_gemm[v]) {
      c->gemm[v] = clCreateKernel(c->prog, nc_ocl_gemm_name(v), &err);
      if (!c->gemm[v] || err != CL_SUCCESS) st = NC_CL_ERR(err, "clCreateKernel(gemm)");
    }
  if (!st && c->ntuned && !(c->tuned_kern = calloc((size_t)c->ntuned, sizeof *c->tuned_kern))) st = nc_errorf(NC_E_NOMEM, "out of memory");
  if (!st && c->ntuned && packed && !(c->tuned_pv = calloc((size_t)c->ntuned, sizeof *c->tuned_pv))) st = nc_errorf(NC_E_NOMEM, "out of memory");
  for (int i = 0; i < c->ntuned && !st && packed; i++) {  // the pipelined GEMM's tuned variants
    bool need[8];
    nc_oc_tuned_need(c, i, need_gemm, need);
    for (int f = 0; f < NC_OCL_GEMMP_NVAR && !st; f++) {
      if (!nc_oc_pv_wanted(&c->tuned[i].knobs, need, f)) continue;
      char nm[64];
      snprintf(nm, sizeof nm, "%s_f%d", c->tuned[i].name, f);
      c->tuned_pv[i][f] = clCreateKernel(c->prog, nm, &err);
      if (!c->tuned_pv[i][f] || err != CL_SUCCESS) st = NC_CL_ERR(err, nm);
    }
  }
  for (int i = 0; i < c->ntuned && !st && !packed; i++) {
    c->tuned_kern[i] = clCreateKernel(c->prog, c->tuned[i].name, &err);
    if (!c->tuned_kern[i] || err != CL_SUCCESS) st = NC_CL_ERR(err, "clCreateKernel(tuned gemm)");
  }
  if (!st && packed && any_gemm) {
    const char *names[6] = {"nc_pack_k", "nc_pack_t", c->knobs.tc_wg ? "nc_gemm_wgmma" : "nc_gemm_bf16p", "nc_splitk_sum", "nc_pack_kh", "nc_pack_th"};
    cl_kernel *ks[6] = {&c->pack_k, &c->pack_t, &c->gemm_p, &c->splitk_sum, &c->pack_kh, &c->pack_th};
    for (int v = 0; v < 6 && !st; v++) {
      *ks[v] = clCreateKernel(c->prog, names[v], &err);
      if (!*ks[v] || err != CL_SUCCESS) st = NC_CL_ERR(err, names[v]);
    }
    c->gemm_pv[0] = c->gemm_p;
    for (int f = 1; f < NC_OCL_GEMMP_NVAR && !st; f++) {
      if (!nc_oc_pv_wanted(&c->knobs, need_gemm, f)) continue;
      char nm[48];
      nc_ocl_gemm_packed_name(&c->knobs, f, nm, sizeof nm);
      c->gemm_pv[f] = clCreateKernel(c->prog, nm, &err);
      if (!c->gemm_pv[f] || err != CL_SUCCESS) st = NC_CL_ERR(err, nm);
    }
  }
  for (int a = 0; a < c->nattn && !st; a++) {
    char nm[64];
    const char *what[3] = {"fwd", "dq", "dkdv"};
    cl_kernel *ks[3] = {&c->attn[a].fwd, &c->attn[a].dq, &c->attn[a].dkdv};
    for (int v = 0; v < 3 && !st; v++) {
      nc_ocl_attn_name(what[v], c->attn[a].dp, c->attn[a].dvp, nm, sizeof nm);
      *ks[v] = clCreateKernel(c->prog, nm, &err);
      if (!*ks[v] || err != CL_SUCCESS) st = NC_CL_ERR(err, nm);
      for (int j = 0; j < c->attn[a].nfsets && !st; j++) {  // the tuned block sets
        nc_ocl_attn_name_set(what[v], c->attn[a].dp, c->attn[a].dvp, j, nm, sizeof nm);
        c->attn[a].tk[j][v] = clCreateKernel(c->prog, nm, &err);
        if (!c->attn[a].tk[j][v] || err != CL_SUCCESS) st = NC_CL_ERR(err, nm);
      }
    }
  }
  if (!st && c->nattn && c->attn_tc) {
    c->attn_pack = clCreateKernel(c->prog, "nc_fa_pack", &err);
    if (!c->attn_pack || err != CL_SUCCESS) st = NC_CL_ERR(err, "nc_fa_pack");
  }
  for (int v = 0; v < 2 && !st && c->any_scatter; v++) {
    const char *nm = v ? "nc_scatter_add_i64" : "nc_scatter_add_i32";
    c->scatter[v] = clCreateKernel(c->prog, nm, &err);
    if (!c->scatter[v] || err != CL_SUCCESS) st = NC_CL_ERR(err, nm);
  }
  if (!st && c->nattn) {
    c->attn_di = clCreateKernel(c->prog, "nc_fa_di", &err);
    if (!c->attn_di || err != CL_SUCCESS) st = NC_CL_ERR(err, "nc_fa_di");
  }
fail_bufs:
  free(uhash);
  free(wgt);
  nc_buf_free(&src);
  nc_buf_free(&tmp);
  if (st) goto fail;
  if (retry) {
    nc_ocl_free(c);
    nc_ocl_opts o2 = o ? *o : (nc_ocl_opts){0};
    o2.wg_untuned = true;
    return nc_ocl_compile(p, &o2, out);
  }
  c->compile_s = nc_clock_now() - t0;
  *out = c;
  return NC_OK;
fail:
  nc_ocl_free(c);
  return st;
}

// Makes node i's device buffer hold bytes (reallocating when the size changed).
static nc_status nc_oc_buffer(nc_ocl *c, uint32_t i, size_t bytes) {
  if (bytes == 0) bytes = 4;
  if (c->mem[i] && c->memsz[i] == bytes) return NC_OK;
  c->kept[i] = 0;
  if (c->mem[i]) clReleaseMemObject(c->mem[i]);
  c->mem[i] = NULL;
  c->memsz[i] = 0;
  cl_int err;
  c->mem[i] = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  if (!c->mem[i] || err != CL_SUCCESS) {
    c->mem[i] = NULL;
    return nc_errorf(NC_E_NOMEM, "OpenCL: cannot allocate %zu bytes on %s for node %%%u (%s)", bytes, c->dev.d.name, i, nc_oc_errname(err));
  }
  c->memsz[i] = bytes;
  return NC_OK;
}

static size_t nc_oc_round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

// Lays the non-leaf buffers out in one arena (passes/memplan.h, as the CPU
// device does) when the symbol sizes changed; views point into it.
static nc_status nc_oc_arena(nc_ocl *c, const nc_graph *g, const nc_plan *p, const int64_t *syms) {
  if (c->mp && !memcmp(c->syms, syms, sizeof c->syms)) return NC_OK;
  nc_memplan_free(c->mp);
  c->mp = NULL;
  NC_TRY(nc_plan_memplan(g, p, syms, &c->mp));
  size_t need = (size_t)c->mp->arena_size;
  if (need < 64) need = 64;
  if (!c->arena || c->arena_bytes != need) {
    if (c->arena) clReleaseMemObject(c->arena);
    c->arena = NULL;
    c->arena_bytes = 0;
    cl_int err;
    c->arena = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, need, NULL, &err);
    if (!c->arena || err != CL_SUCCESS) {
      c->arena = NULL;
      nc_memplan_free(c->mp);
      c->mp = NULL;
      return nc_errorf(NC_E_NOMEM, "OpenCL: cannot allocate the %zu-byte arena on %s (%s)", need, c->dev.d.name, nc_oc_errname(err));
    }
    c->arena_bytes = need;
  }
  for (uint32_t i = 0; i < c->nnodes; i++) {
    const nc_membuf *mb = nc_memplan_find(c->mp, i);
    if (!mb) continue;
    size_t es = nc_dtype_size(mb->dtype);
    if (mb->offset % (int64_t)es) return nc_errorf(NC_E_INTERNAL, "node %%%u: arena offset %lld not a multiple of its element size", i, (long long)mb->offset);
    c->view[i] = c->arena;
    c->off[i] = (cl_long)(mb->offset / (int64_t)es);
  }
  memcpy(c->syms, syms, sizeof c->syms);
  return NC_OK;
}

// Makes *buf hold at least bytes (exactly that much when it grows: on a full
// device every byte counts; it only grows during a plan's first runs).

static nc_status nc_oc_launch(nc_ocl *c, int q, const nc_plan_kernel *pk, const int64_t *args) {
  const nc_kernel *k = &pk->k;
  const nc_ocl_launch *L = &c->launch[q];
  cl_event *evp = c->profile ? &c->ev[q] : NULL;
  cl_int err = CL_SUCCESS;
  if (L->attn) return nc_oc_launch_attn(c, q, pk, args, evp);
  if (L->scatter) return nc_oc_launch_scatter(c, q, pk, args, evp);
  if (L->gemm) {
    const nc_kstmt *s = &k->s[k->body];
    int64_t v[9];
    for (int i = 0; i < 9; i++) v[i] = nc_kernel_eval_index(k, s->args[i], args);
    int64_t batch = v[0], M = v[1], N = v[2], K = v[3];
    if (batch <= 0 || M <= 0 || N <= 0) return NC_OK;
    c->kflop[q] = 2.0 * (double)batch * (double)M * (double)N * (double)K;
    if (c->gemm_p) return nc_oc_launch_packed(c, q, pk, v, L->gemm_variant, evp);
    cl_kernel kk = c->gemm[L->gemm_variant];
    const nc_ocl_knobs *tkn = NULL;  // a GEMM tuned for exactly this shape (runtime/ocl_tune.h)
    for (int i = 0; i < c->ntuned && !tkn; i++)
      if (c->tuned[i].variant == L->gemm_variant && c->tuned[i].batch == batch && c->tuned[i].m == M && c->tuned[i].n == N && c->tuned[i].k == K)
        kk = c->tuned_kern[i], tkn = &c->tuned[i].knobs;
    cl_long a[5] = {M, N, K, v[6], v[7]};
    cl_int beta = v[8] != 0;
    for (int i = 0; i < 3 && err == CL_SUCCESS; i++) err = clSetKernelArg(kk, (cl_uint)i, sizeof(cl_mem), &c->view[pk->buf_node[s->cbufs[i]]]);
    for (int i = 0; i < 5 && err == CL_SUCCESS; i++) err = clSetKernelArg(kk, (cl_uint)(3 + i), sizeof(cl_long), &a[i]);
    if (err == CL_SUCCESS) err = clSetKernelArg(kk, 8, sizeof beta, &beta);
    for (int i = 0; i < 3 && err == CL_SUCCESS; i++) err = clSetKernelArg(kk, (cl_uint)(9 + i), sizeof(cl_long), &c->off[pk->buf_node[s->cbufs[i]]]);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg(gemm)");
    const nc_ocl_knobs *kn = tkn ? tkn : &c->knobs;
    size_t lx = (size_t)(kn->gemm_tn / kn->gemm_wn), ly = (size_t)(kn->gemm_tm / kn->gemm_wm);
    size_t gx = (size_t)((N + kn->gemm_tn - 1) / kn->gemm_tn) * lx;
    size_t gy = (size_t)((M + kn->gemm_tm - 1) / kn->gemm_tm) * ly;
    if (kn->gemm_tc) {  // bf16: one work-group of warps per tc_bm x tc_bn tile
      lx = (size_t)(32 * (kn->tc_bm / kn->tc_wm) * (kn->tc_bn / kn->tc_wn)), ly = 1;
      gx = (size_t)((N + kn->tc_bn - 1) / kn->tc_bn) * lx;
      gy = (size_t)((M + kn->tc_bm - 1) / kn->tc_bm);
    }
    size_t gws[3] = {gx, gy, (size_t)batch}, lws[3] = {lx, ly, 1};
    err = clEnqueueNDRangeKernel(c->q, kk, 3, NULL, gws, lws, 0, NULL, evp);
    if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel(gemm)");
    return NC_OK;
  }
  int64_t total = 1;
  for (int i = 0; i < L->ncollapse; i++) {
    int64_t ext = nc_kernel_eval_index(k, L->end[i], args) - nc_kernel_eval_index(k, L->begin[i], args);
    total *= ext > 0 ? ext : 0;
  }
  if (total <= 0) return NC_OK;
  c->kitems[q] = total;
  cl_kernel kk = c->kern[c->uniq[q]];
  cl_uint ai = 0;
  for (int b = 0; b < k->nbufs && err == CL_SUCCESS; b++) err = clSetKernelArg(kk, ai++, sizeof(cl_mem), &c->view[pk->buf_node[b]]);
  for (int a = 0; a < k->nargs && err == CL_SUCCESS; a++) {
    cl_long v = args[a];
    err = clSetKernelArg(kk, ai++, sizeof v, &v);
  }
  cl_long tv = total;
  if (err == CL_SUCCESS) err = clSetKernelArg(kk, ai++, sizeof tv, &tv);
  for (int b = 0; b < k->nbufs && err == CL_SUCCESS; b++) err = clSetKernelArg(kk, ai++, sizeof(cl_long), &c->off[pk->buf_node[b]]);
  if (err != CL_SUCCESS) return NC_CL_ERR(err, "clSetKernelArg");
  size_t wg = L->reduce_wg ? (size_t)L->reduce_wg : L->row_wg ? (size_t)L->row_wg : L->ncollapse ? (size_t)c->knobs.loop_wg : 1;
  if (!L->reduce_wg && !L->row_wg && L->ncollapse) {  // a tuned work-group for this size bucket (ocl.loop, runtime/ocl_tune.h)
    int bk = nc_ocl_loop_bucket(total);
    size_t kmax = 0;  // the tuned size was timed on a synthetic kernel: only where this kernel can take it
    if (bk < NC_OCL_LOOP_BUCKETS && c->loop_wg_tuned[bk] &&
        clGetKernelWorkGroupInfo(kk, c->dev.dev, CL_KERNEL_WORK_GROUP_SIZE, sizeof kmax, &kmax, NULL) == CL_SUCCESS &&
        (size_t)c->loop_wg_tuned[bk] <= kmax)
      wg = (size_t)c->loop_wg_tuned[bk], c->loop_tuned_calls++;
  }
  size_t gws = L->reduce_wg ? wg : L->row_wg ? (size_t)total * wg : nc_oc_round_up((size_t)total, wg);
  if (L->reduce_wg) c->kitems[q] = (int64_t)wg;
  err = clEnqueueNDRangeKernel(c->q, kk, 1, NULL, &gws, &wg, 0, NULL, evp);
  if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueNDRangeKernel");
  return NC_OK;
}

nc_status nc_ocl_run(nc_ocl *c, const nc_graph *g, const nc_plan *p, const nc_feed *feeds, int nfeeds, nc_tensor *outputs) {
  return nc_ocl_run_kept(c, g, p, feeds, nfeeds, NULL, NULL, outputs);
}

static nc_id nc_oc_leaf(const nc_graph *g, const char *name) {
  nc_id id = nc_graph_find_leaf(g, NC_OP_PARAM, name);
  return id != NC_NONE ? id : nc_graph_find_leaf(g, NC_OP_INPUT, name);
}

nc_status nc_ocl_read_leaf(nc_ocl *c, uint32_t id, void *dst, size_t bytes) {
  if (id >= c->nnodes || !c->mem[id] || !c->kept[id] || c->memsz[id] < bytes)
    return nc_errorf(NC_E_INTERNAL, "OpenCL: node %%%u holds no kept value of %zu bytes on %s", id, bytes, c->dev.d.name);
  if (!bytes) return NC_OK;
  cl_int err = clEnqueueReadBuffer(c->q, c->mem[id], CL_TRUE, 0, bytes, dst, 0, NULL, NULL);
  if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueReadBuffer(kept)");
  return NC_OK;
}

nc_status nc_ocl_run_kept(nc_ocl *c, const nc_graph *g, const nc_plan *p, const nc_feed *feeds, int nfeeds, const bool *on_device,
                          int *keep, nc_tensor *outputs) {
  uint32_t nn = nc_graph_nnodes(g);
  int nout = nc_graph_noutputs(g);
  for (int k = 0; k < nout; k++) memset(&outputs[k], 0, sizeof outputs[k]);
  if (nn != c->nnodes || p->nkernels != c->nk) return nc_errorf(NC_E_INTERNAL, "OpenCL plan run with another graph or plan");
  int64_t syms[NC_MAX_SYMS];
  const nc_tensor **fed = calloc(nn ? nn : 1, sizeof *fed);
  unsigned char *ondev = calloc(nn ? nn : 1, 1);
  nc_id *fnode = calloc(nfeeds > 0 ? (size_t)nfeeds : 1, sizeof *fnode);
  if (!fed || !ondev || !fnode) {
    free(fed), free(ondev), free(fnode);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  nc_status st = nc_feeds_bind(g, feeds, nfeeds, syms, fed);
  for (int f = 0; f < nfeeds && !st; f++) {
    fnode[f] = nc_oc_leaf(g, feeds[f].name);
    if (on_device && on_device[f]) {
      if (fnode[f] == NC_NONE || !c->kept[fnode[f]])
        st = nc_errorf(NC_E_INTERNAL, "feed '%s': marked as held on %s, which holds no value for it", feeds[f].name, c->dev.d.name);
      else ondev[fnode[f]] = 1;
    }
  }
  if (!st) st = nc_oc_arena(c, g, p, syms);
  for (nc_id i = 0; i < nn && !st; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    bool leaf = nd->op == NC_OP_INPUT || nd->op == NC_OP_PARAM;
    if (!c->used[i] && !(p->materialized[i] && !leaf)) continue;
    if (leaf && !fed[i]) {
      if (c->used[i]) st = nc_errorf(NC_E_INVALID, "%s '%s' is not fed", nd->op == NC_OP_INPUT ? "input" : "param", nc_node_name(g, i));
      continue;
    }
    if (!leaf) continue;  // in the arena
    size_t bytes = nc_dtype_size(nd->type.dtype);
    for (int d = 0; d < nd->type.rank; d++) bytes *= (size_t)nc_dim_eval(nd->type.dim[d], syms);
    if (ondev[i]) {  // kept there by an earlier run
      if (!c->mem[i] || c->memsz[i] != (bytes ? bytes : 4)) {
        st = nc_errorf(NC_E_INTERNAL, "%s '%s': the kept device copy has another size", nd->op == NC_OP_INPUT ? "input" : "param", nc_node_name(g, i));
        break;
      }
      c->view[i] = c->mem[i];
      c->off[i] = 0;
      continue;
    }
    if ((st = nc_oc_buffer(c, i, bytes))) break;
    c->view[i] = c->mem[i];
    c->off[i] = 0;
    c->kept[i] = 0;
    if (bytes) {
      cl_int err = clEnqueueWriteBuffer(c->q, c->mem[i], CL_FALSE, 0, bytes, fed[i]->data, 0, NULL, NULL);
      if (err != CL_SUCCESS) st = NC_CL_ERR(err, "clEnqueueWriteBuffer");
    }
  }
  for (int q = 0; q < c->nk && !st; q++) {
    const nc_plan_kernel *pk = &p->kernels[q];
    int64_t args[NC_KERNEL_MAX_ARGS];
    for (int a = 0; a < pk->k.nargs; a++) {
      int s = nc_graph_sym_find(g, pk->k.args[a], strlen(pk->k.args[a]));
      args[a] = s >= 0 ? syms[s] : 0;
    }
    if (c->profile && !c->launch[q].gemm && !c->launch[q].attn) c->kbytes[q] = nc_oc_kernel_bytes(g, pk, syms);
    st = nc_oc_launch(c, q, pk, args);
    if (!st && c->rb) st = nc_oc_rb_after(c, g, p, q, syms, fed);  // reads of the outputs this kernel finished
    if (st) st = nc_status_prefix(st, "kernel %s: ", pk->k.name);
  }
  // fed outputs whose current value is on the device, then the kept outputs' copies
  for (int k = 0; k < nout && !st; k++) {
    nc_id id = nc_graph_output(g, k);
    if (!fed[id] || !ondev[id]) continue;
    if ((st = nc_tensor_clone(&outputs[k], fed[id]))) break;
    size_t bytes = nc_tensor_nbytes(&outputs[k]);
    cl_int err = bytes ? clEnqueueReadBuffer(c->q, c->mem[id], CL_FALSE, 0, bytes, outputs[k].data, 0, NULL, NULL) : CL_SUCCESS;
    if (err != CL_SUCCESS) st = NC_CL_ERR(err, "clEnqueueReadBuffer(kept output)");
  }
  for (int k = 0; keep && k < nout && !st; k++) {
    if (keep[k] < 0) continue;
    nc_id id = nc_graph_output(g, k), leaf = keep[k] < nfeeds ? fnode[keep[k]] : NC_NONE;
    const nc_node *nd = nc_graph_node(g, id);
    size_t bytes = nc_dtype_size(nd->type.dtype);
    for (int d = 0; d < nd->type.rank; d++) bytes *= (size_t)nc_dim_eval(nd->type.dim[d], syms);
    if (leaf == NC_NONE || fed[id] || !c->view[id] || !c->mem[leaf] || c->memsz[leaf] != (bytes ? bytes : 4) ||
        nc_graph_node(g, leaf)->type.dtype != nd->type.dtype) {
      keep[k] = -1;  // returned as usual below
      continue;
    }
    if (bytes) {
      cl_int err = clEnqueueCopyBuffer(c->q, c->view[id], c->mem[leaf], (size_t)c->off[id] * nc_dtype_size(nd->type.dtype), 0, bytes, 0, NULL, NULL);
      if (err != CL_SUCCESS) st = NC_CL_ERR(err, "clEnqueueCopyBuffer(kept output)");
    }
    c->kept[leaf] = 1;
  }
  if (c->rb) {  // report the reads as they land (always waits for all of them)
    nc_status rs = nc_oc_rb_wait(c);
    if (!st) st = rs;
    else nc_status_free(rs);
  }
  cl_int ferr = clFinish(c->q);
  if (!st && ferr != CL_SUCCESS) st = NC_CL_ERR(ferr, "clFinish (a kernel failed)");
  if (c->profile) {
    c->last_run_s = 0;
    for (int q = 0; q < c->nk; q++) {
      if (!c->ev[q]) continue;
      cl_ulong t0 = 0, t1 = 0;
      if (clGetEventProfilingInfo(c->ev0[q] ? c->ev0[q] : c->ev[q], CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL) == CL_SUCCESS &&
          clGetEventProfilingInfo(c->ev[q], CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL) == CL_SUCCESS && t1 >= t0) {
        double s = 1e-9 * (double)(t1 - t0);
        c->ksec[q] += s;
        c->kcalls[q]++;
        c->kflops_sum[q] += c->kflop[q];
        c->kbytes_sum[q] += c->kbytes[q];
        c->last_run_s += s;
      }
      clReleaseEvent(c->ev[q]);
      c->ev[q] = NULL;
      if (c->ev0[q]) clReleaseEvent(c->ev0[q]);
      c->ev0[q] = NULL;
    }
  }
  for (int k = 0; k < nout && !st; k++) {
    nc_id id = nc_graph_output(g, k);
    if (keep && keep[k] >= 0) continue;  // kept on the device
    if (fed[id] && ondev[id]) continue;  // read back above
    if (fed[id]) {
      st = nc_tensor_clone(&outputs[k], fed[id]);
      continue;
    }
    const nc_node *nd = nc_graph_node(g, id);
    if (!c->view[id]) {
      st = nc_errorf(NC_E_UNSUPPORTED, "output '%s': not computed by any OpenCL kernel", nc_graph_output_name(g, k));
      break;
    }
    int64_t shape[NC_MAX_RANK];
    for (int d = 0; d < nd->type.rank; d++) shape[d] = nc_dim_eval(nd->type.dim[d], syms);
    if ((st = nc_tensor_alloc(&outputs[k], nd->type.dtype, nd->type.rank, shape))) break;
    size_t bytes = (size_t)nc_tensor_numel(&outputs[k]) * nc_dtype_size(nd->type.dtype);
    if (bytes) {
      size_t at = (size_t)c->off[id] * nc_dtype_size(nd->type.dtype);
      cl_int err = clEnqueueReadBuffer(c->q, c->view[id], CL_TRUE, at, bytes, outputs[k].data, 0, NULL, NULL);
      if (err != CL_SUCCESS) st = NC_CL_ERR(err, "clEnqueueReadBuffer");
    }
  }
  if (st)
    for (int k = 0; k < nout; k++) nc_tensor_free(&outputs[k]);
  free(fed);
  free(ondev);
  free(fnode);
  return st;
}

const nc_ocl_device_desc *nc_ocl_device(const nc_ocl *c) { return &c->dev.d; }
double nc_ocl_compile_seconds(const nc_ocl *c) { return c->compile_s; }
bool nc_ocl_cache_hit(const nc_ocl *c) { return c->cache_hit; }
uint64_t nc_ocl_program_key(const nc_ocl *c) { return c->key; }
int nc_ocl_unique_kernels(const nc_ocl *c) {
  int n = c->nuniq;
  for (int v = 0; v < 8; v++) n += c->gemm[v] != NULL;
  for (int f = 0; f < NC_OCL_GEMMP_NVAR; f++) n += c->gemm_pv[f] != NULL;
  return n;
}
double nc_ocl_last_run_seconds(const nc_ocl *c) { return c->last_run_s; }
const nc_ocl_knobs *nc_ocl_knobs_used(const nc_ocl *c) { return &c->knobs; }

void nc_ocl_profile_print(const nc_ocl *c, const nc_plan *p, int top, FILE *f) {
  if (!c->profile) {
    fprintf(f, "opencl profile: off (run with --verbose or NC_DEBUG=1)\n");
    return;
  }
  double total = 0;
  int *order = malloc(sizeof(int) * (size_t)(c->nk > 0 ? c->nk : 1));
  if (!order) return;
  for (int q = 0; q < c->nk; q++) order[q] = q, total += c->ksec[q];
  for (int i = 1; i < c->nk; i++)  // insertion sort by time, descending
    for (int j = i; j > 0 && c->ksec[order[j]] > c->ksec[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  double gs = 0, gf = 0;
  for (int q = 0; q < c->nk; q++)
    if (c->launch[q].gemm) gs += c->ksec[q], gf += c->kflops_sum[q];
  fprintf(f, "opencl profile on %s: %.3f ms of kernels over all runs; GEMMs %.3f ms (%.1f%%) at %.2f TFLOP/s\n", c->dev.d.name,
          total * 1e3, gs * 1e3, total > 0 ? 100 * gs / total : 0.0, gs > 0 ? gf / gs * 1e-12 : 0.0);
  for (int i = 0; i < c->nk && i < top; i++) {
    int q = order[i];
    if (c->kcalls[q] == 0) break;
    char what[64];
    if (c->launch[q].gemm)
      snprintf(what, sizeof what, "gemm %s%s, %.1f GFLOP/s%s", nc_ocl_gemm_name(c->launch[q].gemm_variant) + 8, c->knobs.gemm_tc ? " bf16" : "",
               c->ksec[q] > 0 ? c->kflops_sum[q] / c->ksec[q] * 1e-9 : 0.0,
               c->kitems[q] == 3 ? ", A B in place" : c->kitems[q] == 1 ? ", A in place" : c->kitems[q] == 2 ? ", B in place" : "");
    else if (c->launch[q].attn)  // FA2's flop count (nc_oc_launch_attn)
      snprintf(what, sizeof what, "flash attention %s, %.1f GFLOP/s", c->attn_tc == 1 ? "mma.sync" : c->attn_tc ? "bf16 emulated" : "fp32",
               c->ksec[q] > 0 ? c->kflops_sum[q] / c->ksec[q] * 1e-9 : 0.0);
    else
      snprintf(what, sizeof what, c->launch[q].row_wg ? "%lld rows" : "%lld work-items", (long long)c->kitems[q]);
    fprintf(f, "  %8.3f ms %5.1f%%  %6lld calls  %s (%s)\n", c->ksec[q] * 1e3, total > 0 ? 100 * c->ksec[q] / total : 0,
            (long long)c->kcalls[q], p->kernels[q].k.name, what);
  }
  free(order);
  nc_oc_profile_by_op(c, p, top, f);
}

int nc_ocl_tuned_count(const nc_ocl *c) { return c->ntuned; }

int64_t nc_ocl_tuned_calls(const nc_ocl *c) { return c->tuned_calls; }
int64_t nc_ocl_flash_tuned_calls(const nc_ocl *c) { return c->attn_tuned_calls; }
int64_t nc_ocl_loop_tuned_calls(const nc_ocl *c) { return c->loop_tuned_calls; }
int nc_ocl_row_tuned_kernels(const nc_ocl *c) { return c->row_tuned_kernels; }
int nc_ocl_reduce_tuned_kernels(const nc_ocl *c) { return c->reduce_tuned_kernels; }
const nc_ocl_launch *nc_ocl_kernel_launch(const nc_ocl *c, int q) { return q >= 0 && q < c->nk ? &c->launch[q] : NULL; }
int nc_ocl_flash_tuned_sets(const nc_ocl *c) {
  int n = 0;
  for (int a = 0; a < c->nattn; a++) n += c->attn[a].nfsets;
  return n;
}

bool nc_ocl_gemm_knobs_for(const nc_ocl *c, int variant, int64_t batch, int64_t m, int64_t n, int64_t k, nc_ocl_knobs *out) {
  for (int i = 0; i < c->ntuned; i++)
    if ((c->tuned[i].packed ? c->tuned[i].variant == (variant & 3) : c->tuned[i].variant == variant) && c->tuned[i].batch == batch &&
        c->tuned[i].m == m && c->tuned[i].n == n && c->tuned[i].k == k) {
      *out = c->tuned[i].knobs;
      return true;
    }
  *out = c->knobs;
  return false;
}

// ---- readback during a run, pinned host memory, fills (the data-parallel overlap) --------

typedef struct {
  cl_mem buf;
  void *ptr;
} nc_oc_pinned;

struct nc_oc_rb {
  nc_status (*fn)(void *ctx, int output, const nc_tensor *value);  // NULL: no readback
  void *ctx;
  void **dst;            // per output: where its value goes (NULL: nowhere)
  int nout;
  int *when;             // per output: the plan kernel after which it is final (computed at the first run)
  cl_event *ev;          // per output: its read in flight this run
  int *order;            // outputs whose reads are in flight, in enqueue order
  int n;
  const nc_graph *g;     // the graph of the run in progress
  int64_t syms[NC_MAX_SYMS];
  cl_command_queue q2;   // the reads
  nc_oc_pinned *pinned;
  int npinned, cappinned;
};

static nc_status nc_oc_rb_get(nc_ocl *c) {
  if (!c->rb && !(c->rb = calloc(1, sizeof *c->rb))) return nc_errorf(NC_E_NOMEM, "out of memory");
  return NC_OK;
}

static void nc_oc_rb_clear(struct nc_oc_rb *r) {
  free(r->dst), free(r->when), free(r->ev), free(r->order);
  r->dst = NULL, r->when = NULL, r->ev = NULL, r->order = NULL;
  r->fn = NULL, r->ctx = NULL, r->nout = 0, r->n = 0;
}

nc_status nc_ocl_set_readback(nc_ocl *c, nc_status (*fn)(void *ctx, int output, const nc_tensor *value), void *ctx,
                              void *const *dst, int nout) {
  if (!fn) {
    if (c->rb) nc_oc_rb_clear(c->rb);
    return NC_OK;
  }
  NC_TRY(nc_oc_rb_get(c));
  struct nc_oc_rb *r = c->rb;
  nc_oc_rb_clear(r);
  size_t n1 = (size_t)(nout > 0 ? nout : 1);
  r->dst = calloc(n1, sizeof *r->dst);
  r->ev = calloc(n1, sizeof *r->ev);
  r->order = calloc(n1, sizeof *r->order);
  if (!r->dst || !r->ev || !r->order) {
    nc_oc_rb_clear(r);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  for (int k = 0; k < nout; k++) r->dst[k] = dst ? dst[k] : NULL;
  if (!r->q2) {
    cl_int err = CL_SUCCESS;
    r->q2 = clCreateCommandQueue(c->ctx, c->dev.dev, 0, &err);
    if (!r->q2 || err != CL_SUCCESS) {
      r->q2 = NULL;
      nc_oc_rb_clear(r);
      return NC_CL_ERR(err, "clCreateCommandQueue(readback)");
    }
  }
  r->fn = fn, r->ctx = ctx, r->nout = nout;
  return NC_OK;
}

// After kernel q is enqueued: the outputs it finishes are read into their
// destinations on the second queue, once the kernels so far have run.
static nc_status nc_oc_rb_after(nc_ocl *c, const nc_graph *g, const nc_plan *p, int q, const int64_t *syms, const nc_tensor **fed) {
  struct nc_oc_rb *r = c->rb;
  if (!r->fn) return NC_OK;
  int nout = nc_graph_noutputs(g);
  if (nout != r->nout) return nc_errorf(NC_E_INTERNAL, "OpenCL readback set for %d outputs, the graph has %d", r->nout, nout);
  if (q == 0) {  // a new run
    r->n = 0, r->g = g;
    memcpy(r->syms, syms, sizeof r->syms);
    if (!r->when) {
      if (!(r->when = malloc(sizeof(int) * (size_t)(nout > 0 ? nout : 1)))) return nc_errorf(NC_E_NOMEM, "out of memory");
      nc_plan_output_kernels(g, p, r->when);
    }
  }
  cl_event mark = NULL;
  nc_status st = NC_OK;
  for (int k = 0; k < nout && !st; k++) {
    if (r->when[k] != q || !r->dst[k]) continue;
    nc_id id = nc_graph_output(g, k);
    if (fed[id] || !c->view[id]) continue;  // a leaf, or nothing on the device: not reported
    const nc_node *nd = nc_graph_node(g, id);
    size_t es = nc_dtype_size(nd->type.dtype), bytes = es;
    for (int d = 0; d < nd->type.rank; d++) bytes *= (size_t)nc_dim_eval(nd->type.dim[d], syms);
    if (!bytes) continue;
    cl_int err = CL_SUCCESS;
    if (!mark) {
      err = clEnqueueMarkerWithWaitList(c->q, 0, NULL, &mark);
      if (err == CL_SUCCESS) err = clFlush(c->q);  // the marker must reach the device for the other queue to wait on it
      if (err != CL_SUCCESS) {
        st = NC_CL_ERR(err, "clEnqueueMarkerWithWaitList(readback)");
        break;
      }
    }
    err = clEnqueueReadBuffer(r->q2, c->view[id], CL_FALSE, (size_t)c->off[id] * es, bytes, r->dst[k], 1, &mark, &r->ev[k]);
    if (err != CL_SUCCESS) {
      st = NC_CL_ERR(err, "clEnqueueReadBuffer(readback)");
      break;
    }
    r->order[r->n++] = k;
  }
  if (mark) {
    cl_int err = clFlush(r->q2);
    if (!st && err != CL_SUCCESS) st = NC_CL_ERR(err, "clFlush(readback)");
    clReleaseEvent(mark);
  }
  return st;
}

// After the last kernel: reports each read as it lands, ticks between polls;
// every read in flight has finished when it returns.
static nc_status nc_oc_rb_wait(nc_ocl *c) {
  struct nc_oc_rb *r = c->rb;
  if (!r->fn || !r->n) return NC_OK;
  nc_status st = NC_OK;
  cl_int err = clFlush(c->q);
  if (err != CL_SUCCESS) st = NC_CL_ERR(err, "clFlush");
  for (int i = 0; i < r->n;) {
    int k = r->order[i];
    cl_int s = CL_COMPLETE;
    if (!st) {
      err = clGetEventInfo(r->ev[k], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof s, &s, NULL);
      if (err != CL_SUCCESS) st = NC_CL_ERR(err, "clGetEventInfo(readback)");
      else if (s < 0) st = nc_errorf(NC_E_INTERNAL, "OpenCL readback of output '%s' failed (%d)", nc_graph_output_name(r->g, k), (int)s);
    }
    if (st) {  // stop reporting; still wait for every read in flight
      clWaitForEvents(1, &r->ev[k]);
      s = CL_COMPLETE;
    }
    if (s != CL_COMPLETE) {
      st = r->fn(r->ctx, -1, NULL);  // the device is still busy: the caller's communication moves
      continue;
    }
    clReleaseEvent(r->ev[k]);
    r->ev[k] = NULL;
    i++;
    if (st) continue;
    const nc_node *nd = nc_graph_node(r->g, nc_graph_output(r->g, k));
    int64_t shape[NC_MAX_RANK];
    for (int d = 0; d < nd->type.rank; d++) shape[d] = nc_dim_eval(nd->type.dim[d], r->syms);
    nc_tensor v = nc_tensor_wrap(r->dst[k], nd->type.dtype, nd->type.rank, shape);
    st = r->fn(r->ctx, k, &v);
  }
  r->n = 0;
  return st;
}

nc_status nc_ocl_host_alloc(nc_ocl *c, size_t bytes, void **out) {
  *out = NULL;
  NC_TRY(nc_oc_rb_get(c));
  struct nc_oc_rb *r = c->rb;
  if (r->npinned == r->cappinned) {
    int cap = r->cappinned ? 2 * r->cappinned : 4;
    nc_oc_pinned *pn = realloc(r->pinned, sizeof *pn * (size_t)cap);
    if (!pn) return nc_errorf(NC_E_NOMEM, "out of memory");
    r->pinned = pn, r->cappinned = cap;
  }
  cl_int err = CL_SUCCESS;
  cl_mem b = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, bytes ? bytes : 4, NULL, &err);
  if (!b || err != CL_SUCCESS) return nc_errorf(NC_E_NOMEM, "OpenCL: no %zu bytes of pinned host memory on %s: %s (%d)", bytes, c->dev.d.name, nc_oc_errname(err), (int)err);
  void *ptr = clEnqueueMapBuffer(c->q, b, CL_TRUE, CL_MAP_READ | CL_MAP_WRITE, 0, bytes ? bytes : 4, 0, NULL, NULL, &err);
  if (!ptr || err != CL_SUCCESS) {
    clReleaseMemObject(b);
    return NC_CL_ERR(err, "clEnqueueMapBuffer(pinned)");
  }
  r->pinned[r->npinned++] = (nc_oc_pinned){b, ptr};
  *out = ptr;
  return NC_OK;
}

void nc_ocl_host_free(nc_ocl *c, void *p) {
  struct nc_oc_rb *r = c->rb;
  for (int i = 0; r && p && i < r->npinned; i++) {
    if (r->pinned[i].ptr != p) continue;
    clEnqueueUnmapMemObject(c->q, r->pinned[i].buf, p, 0, NULL, NULL);
    clFinish(c->q);
    clReleaseMemObject(r->pinned[i].buf);
    r->pinned[i] = r->pinned[--r->npinned];
    return;
  }
}

nc_status nc_ocl_zero_leaf(nc_ocl *c, uint32_t id) {
  if (id >= c->nnodes || !c->mem[id] || !c->kept[id])
    return nc_errorf(NC_E_INTERNAL, "OpenCL: node %%%u holds no kept value on %s to zero", id, c->dev.d.name);
  unsigned char zero = 0;
  cl_int err = clEnqueueFillBuffer(c->q, c->mem[id], &zero, 1, 0, c->memsz[id], 0, NULL, NULL);
  if (err != CL_SUCCESS) return NC_CL_ERR(err, "clEnqueueFillBuffer(zero)");
  return NC_OK;
}

static void nc_oc_rb_free(nc_ocl *c) {
  struct nc_oc_rb *r = c->rb;
  if (!r) return;
  if (r->q2) clFinish(r->q2);
  for (int i = 0; i < r->npinned; i++) {
    clEnqueueUnmapMemObject(c->q, r->pinned[i].buf, r->pinned[i].ptr, 0, NULL, NULL);
    clFinish(c->q);
    clReleaseMemObject(r->pinned[i].buf);
  }
  free(r->pinned);
  if (r->q2) clReleaseCommandQueue(r->q2);
  nc_oc_rb_clear(r);
  free(r);
  c->rb = NULL;
}
