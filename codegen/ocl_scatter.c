// scatter_add on OpenCL (codegen/ocl_scatter.h).
#include "codegen/ocl_scatter.h"

static const char nc_scatter_src[] =
    "// scatter_add (codegen/ocl_scatter.c): out[clamp(ids[i]), c] += src[i, c], float atomics\n"
    "inline void nc_sc_add(__global float *p, float v) {\n"
    "#if NC_SC_NV\n"
    "  asm volatile(\"red.global.add.f32 [%0], %1;\" :: \"l\"((ulong)p), \"f\"(v) : \"memory\");\n"
    "#else\n"
    "  volatile __global int *q = (volatile __global int *)p;\n"
    "  int old = *q, was;\n"
    "  do {\n"
    "    was = old;\n"
    "    old = atomic_cmpxchg(q, was, as_int(as_float(was) + v));\n"
    "  } while (old != was);\n"
    "#endif\n"
    "}\n"
    "#define NC_SC_KERNEL(name, IT) \\\n"
    "__kernel void name(__global const IT *ids, long oi, __global const float *src, long os, __global float *out, long oo, \\\n"
    "                   long N, long V, long C) { \\\n"
    "  const long e = get_global_id(0); \\\n"
    "  if (e >= N * C) return; \\\n"
    "  const long i = e / C, c = e - i * C; \\\n"
    "  long id = (long)ids[oi + i]; \\\n"
    "  id = id < 0 ? 0 : id >= V ? V - 1 : id; \\\n"
    "  nc_sc_add(out + oo + id * C + c, src[os + e]); \\\n"
    "}\n"
    "NC_SC_KERNEL(nc_scatter_add_i32, int)\n"
    "NC_SC_KERNEL(nc_scatter_add_i64, long)\n"
    "#undef NC_SC_KERNEL\n\n";

void nc_ocl_emit_scatter(bool nvidia, nc_buf *out) {
  nc_buf_printf(out, "#define NC_SC_NV %d\n", nvidia ? 1 : 0);
  nc_buf_puts(out, nc_scatter_src);
}
