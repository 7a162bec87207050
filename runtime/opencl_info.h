// OpenCL platform and device discovery. Machines often expose several
// platforms (PoCL on the CPU next to a GPU driver): devices are chosen by
// type, index or name, never as "platform 0".
#ifndef NC_RUNTIME_OPENCL_INFO_H
#define NC_RUNTIME_OPENCL_INFO_H

#include <stdint.h>

#include "support/status.h"

#define NC_CL_MAX_DEVICES 32

typedef struct {
  int platform_index, device_index;  // within the platform
  char platform[128], vendor[128], name[128], version[128], driver[64];
  int is_gpu, is_cpu;
  uint32_t compute_units;
  uint64_t global_mem, local_mem;
} nc_cl_device_info;

// Lists every device of every platform (0 devices is not an error: *n = 0).
nc_status nc_cl_list_devices(nc_cl_device_info *out, int max, int *n);

#endif
