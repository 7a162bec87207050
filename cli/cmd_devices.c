// nanochat devices: the host CPU as LLVM sees it and every OpenCL device.
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "codegen/host.h"
#include "runtime/ocl_device.h"
#include "runtime/opencl_info.h"

int nc_cmd_devices(int argc, char **argv) {
  if (argc > 1) {
    bool help = !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h");
    fprintf(help ? stdout : stderr,
            "usage: nanochat devices\n\nLists the devices nanochat-c can run on: the host CPU (as LLVM\n"
            "describes it) and every OpenCL platform/device, with the index to pass\n"
            "as --device opencl:N. Other OpenCL selectors: opencl (the first GPU, else\n"
            "the first device; marked *), opencl:gpu, opencl:cpu, opencl:<part of the\n"
            "platform or device name>.\n");
    return help ? 0 : 2;
  }
  nc_host_cpu cpu;
  nc_status st = nc_host_cpu_query(&cpu);
  if (st) {
    printf("cpu        (unavailable: %s)\n", nc_status_msg(st));
    nc_status_free(st);
  } else {
    printf("cpu        %s (%s), LLVM %s, avx2=%s avx512f=%s avx512bf16=%s fma=%s\n", cpu.cpu, cpu.triple,
           cpu.llvm_version, cpu.avx2 ? "yes" : "no", cpu.avx512f ? "yes" : "no", cpu.avx512bf16 ? "yes" : "no",
           cpu.fma ? "yes" : "no");
  }
  nc_cl_device_info devs[NC_CL_MAX_DEVICES];
  int n = 0;
  st = nc_cl_list_devices(devs, NC_CL_MAX_DEVICES, &n);
  if (st) {
    printf("opencl     (unavailable: %s)\n", nc_status_msg(st));
    nc_status_free(st);
    return 0;
  }
  if (n == 0) printf("opencl     no platforms (install an ICD, e.g. pocl-opencl-icd)\n");
  nc_ocl_device_desc def;
  int def_index = -1;
  st = n ? nc_ocl_select("", &def) : NC_OK;
  if (n && !st) def_index = def.index;
  nc_status_free(st);
  for (int i = 0; i < n; i++)
    printf("opencl:%-2d%s %s | %s | %s, %u CUs, %.1f GiB, %s, driver %s\n", i, i == def_index ? "*" : " ", devs[i].platform, devs[i].name,
           devs[i].is_gpu ? "GPU" : devs[i].is_cpu ? "CPU" : "other", devs[i].compute_units,
           (double)devs[i].global_mem / (1024.0 * 1024 * 1024), devs[i].version, devs[i].driver);
  return 0;
}
