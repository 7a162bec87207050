// --precision P, shared by every command that builds a model graph (bench
// train, base-train, mid-train, sft, forward, chat, serve, eval, rl): the
// model's compute precision, "fp32" or "bf16" (nanochat's mixed precision:
// docs/model-spec.md). It overrides the spec's or checkpoint's <precision>
// where the model is loaded; on OpenCL, bf16 also asks for the tensor-core
// GEMM on NVIDIA devices (nc_device.matmul_bf16).
#ifndef NC_CLI_PRECISION_H
#define NC_CLI_PRECISION_H

#include "frontend/spec.h"
#include "runtime/exec.h"

#define NC_CLI_PRECISION_USAGE "      --precision P            fp32 or bf16 (bf16 activations and matmuls, fp32 weights; default: the model's)\n"

// 0 when value is fp32 or bf16; else prints "nanochat CMD: --precision ..." and returns 2.
int nc_cli_precision_check(const char *cmd, const char *value);
// Applies a checked value (NULL: nothing) to a spec and a device.
void nc_cli_precision_apply(const char *value, nc_model_spec *s, nc_device *d);

#endif
