// A direct evaluator of kernel IR: runs a kernel's loop nest on host buffers.
// Slow and simple: it checks lowering (kernels vs the graph interpreter) and
// the backends (compiled kernels vs this evaluator) on small shapes.
#ifndef NC_RUNTIME_KIR_EVAL_H
#define NC_RUNTIME_KIR_EVAL_H

#include "ir/kir.h"

// bufs[i]: the kernel's buffer i; args[i]: the value of argument i.
nc_status nc_kernel_eval(const nc_kernel *k, void *const *bufs, const int64_t *args);
// Value of an i64 expression that depends only on kernel arguments (template
// call arguments, loop bounds).
int64_t nc_kernel_eval_index(const nc_kernel *k, nc_kx x, const int64_t *args);

#endif
