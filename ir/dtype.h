// Element types of the IR and the scalar conversions every layer shares.
#ifndef NC_IR_DTYPE_H
#define NC_IR_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  NC_F32,
  NC_BF16,
  NC_F16,
  NC_I32,
  NC_I64,
  NC_U8,
  NC_BOOL,
  NC_DTYPE_COUNT
} nc_dtype;

const char *nc_dtype_name(nc_dtype t);          // "f32", "bf16", ...
bool nc_dtype_parse(const char *s, size_t n, nc_dtype *out);
size_t nc_dtype_size(nc_dtype t);               // bytes per element
bool nc_dtype_is_float(nc_dtype t);
bool nc_dtype_is_int(nc_dtype t);               // i32, i64, u8 (not bool)

// bf16 / f16 <-> f32, round to nearest even; NaN stays NaN.
uint16_t nc_f32_to_bf16(float f);
float nc_bf16_to_f32(uint16_t h);
uint16_t nc_f32_to_f16(float f);
float nc_f16_to_f32(uint16_t h);

// Reads element i of a buffer of dtype t as double / writes it back with the
// dtype's rounding (integers: truncation toward zero, saturating).
double nc_elem_get(const void *buf, nc_dtype t, size_t i);
void nc_elem_set(void *buf, nc_dtype t, size_t i, double v);
int64_t nc_elem_get_i64(const void *buf, nc_dtype t, size_t i);
void nc_elem_set_i64(void *buf, nc_dtype t, size_t i, int64_t v);

#endif
