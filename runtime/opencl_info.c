#define CL_TARGET_OPENCL_VERSION 120
#include "runtime/opencl_info.h"

#include <CL/cl.h>
#include <stdio.h>
#include <string.h>

static void nc_cl_str(cl_platform_id p, cl_device_id d, cl_uint what, char *buf, size_t n) {
  buf[0] = 0;
  if (d) clGetDeviceInfo(d, what, n - 1, buf, NULL);
  else clGetPlatformInfo(p, what, n - 1, buf, NULL);
  buf[n - 1] = 0;
}

nc_status nc_cl_list_devices(nc_cl_device_info *out, int max, int *n) {
  *n = 0;
  cl_uint np = 0;
  cl_int err = clGetPlatformIDs(0, NULL, &np);
  if (err == -1001 /* CL_PLATFORM_NOT_FOUND_KHR: no ICD */ || np == 0) return NC_OK;
  if (err != CL_SUCCESS) return nc_errorf(NC_E_UNSUPPORTED, "OpenCL: clGetPlatformIDs failed (%d)", err);
  cl_platform_id plats[16];
  if (np > 16) np = 16;
  clGetPlatformIDs(np, plats, NULL);
  for (cl_uint p = 0; p < np; p++) {
    cl_uint nd = 0;
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0) continue;
    cl_device_id devs[16];
    if (nd > 16) nd = 16;
    clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, devs, NULL);
    for (cl_uint d = 0; d < nd && *n < max; d++) {
      nc_cl_device_info *o = &out[(*n)++];
      memset(o, 0, sizeof *o);
      o->platform_index = (int)p;
      o->device_index = (int)d;
      nc_cl_str(plats[p], NULL, CL_PLATFORM_NAME, o->platform, sizeof o->platform);
      nc_cl_str(plats[p], devs[d], CL_DEVICE_VENDOR, o->vendor, sizeof o->vendor);
      nc_cl_str(plats[p], devs[d], CL_DEVICE_NAME, o->name, sizeof o->name);
      nc_cl_str(plats[p], devs[d], CL_DEVICE_VERSION, o->version, sizeof o->version);
      nc_cl_str(plats[p], devs[d], CL_DRIVER_VERSION, o->driver, sizeof o->driver);
      cl_device_type type = 0;
      clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
      o->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
      o->is_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
      cl_uint cu = 0;
      clGetDeviceInfo(devs[d], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
      o->compute_units = cu;
      cl_ulong gm = 0, lm = 0;
      clGetDeviceInfo(devs[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gm, &gm, NULL);
      clGetDeviceInfo(devs[d], CL_DEVICE_LOCAL_MEM_SIZE, sizeof lm, &lm, NULL);
      o->global_mem = gm;
      o->local_mem = lm;
    }
  }
  return NC_OK;
}
