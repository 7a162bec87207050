#include "ir/dtype.h"

#include <math.h>
#include <string.h>

static const char *const nc_dtype_names[NC_DTYPE_COUNT] = {"f32", "bf16", "f16", "i32",
                                                           "i64", "u8",   "bool"};
static const size_t nc_dtype_sizes[NC_DTYPE_COUNT] = {4, 2, 2, 4, 8, 1, 1};

const char *nc_dtype_name(nc_dtype t) {
  return (unsigned)t < NC_DTYPE_COUNT ? nc_dtype_names[t] : "?";
}

bool nc_dtype_parse(const char *s, size_t n, nc_dtype *out) {
  for (int i = 0; i < NC_DTYPE_COUNT; i++) {
    if (strlen(nc_dtype_names[i]) == n && memcmp(s, nc_dtype_names[i], n) == 0) {
      *out = (nc_dtype)i;
      return true;
    }
  }
  return false;
}

size_t nc_dtype_size(nc_dtype t) { return (unsigned)t < NC_DTYPE_COUNT ? nc_dtype_sizes[t] : 0; }
bool nc_dtype_is_float(nc_dtype t) { return t == NC_F32 || t == NC_BF16 || t == NC_F16; }
bool nc_dtype_is_int(nc_dtype t) { return t == NC_I32 || t == NC_I64 || t == NC_U8; }

uint16_t nc_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float nc_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t nc_f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);   // NaN
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // overflow -> inf (round included)
  if (a < 0x38800000u) {                                    // subnormal or zero in f16
    if (a < 0x33000000u) return (uint16_t)sign;             // rounds to zero
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                               // 14 + (113 - e) - 1
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
  uint32_t lo = r & 0x1fffu;
  r >>= 13;
  if (lo > 0x1000u || (lo == 0x1000u && (r & 1))) r++;
  return (uint16_t)(sign | r);
}

float nc_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ffu, u;
  if (e == 0) {
    if (m == 0) u = sign;
    else {  // subnormal: normalize
      int sh = 0;
      while (!(m & 0x400u)) m <<= 1, sh++;
      m &= 0x3ffu;
      u = sign | ((uint32_t)(113 - sh) << 23) | (m << 13);
    }
  } else if (e == 31) {
    u = sign | 0x7f800000u | (m << 13);
  } else {
    u = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

double nc_elem_get(const void *buf, nc_dtype t, size_t i) {
  switch (t) {
    case NC_F32: return ((const float *)buf)[i];
    case NC_BF16: return nc_bf16_to_f32(((const uint16_t *)buf)[i]);
    case NC_F16: return nc_f16_to_f32(((const uint16_t *)buf)[i]);
    case NC_I32: return ((const int32_t *)buf)[i];
    case NC_I64: return (double)((const int64_t *)buf)[i];
    case NC_U8: return ((const uint8_t *)buf)[i];
    case NC_BOOL: return ((const uint8_t *)buf)[i] != 0;
    default: return 0;
  }
}

static int64_t nc_sat(double v, double lo, double hi) {
  if (isnan(v)) return 0;
  if (v <= lo) return (int64_t)lo;
  if (v >= hi) return (int64_t)hi;
  return (int64_t)v;
}

void nc_elem_set(void *buf, nc_dtype t, size_t i, double v) {
  switch (t) {
    case NC_F32: ((float *)buf)[i] = (float)v; break;
    case NC_BF16: ((uint16_t *)buf)[i] = nc_f32_to_bf16((float)v); break;
    case NC_F16: ((uint16_t *)buf)[i] = nc_f32_to_f16((float)v); break;
    case NC_I32: ((int32_t *)buf)[i] = (int32_t)nc_sat(v, -2147483648.0, 2147483647.0); break;
    case NC_I64: ((int64_t *)buf)[i] = nc_sat(v, -9223372036854775808.0, 9223372036854774784.0); break;
    case NC_U8: ((uint8_t *)buf)[i] = (uint8_t)nc_sat(v, 0, 255); break;
    case NC_BOOL: ((uint8_t *)buf)[i] = v != 0; break;
    default: break;
  }
}

int64_t nc_elem_get_i64(const void *buf, nc_dtype t, size_t i) {
  switch (t) {
    case NC_I32: return ((const int32_t *)buf)[i];
    case NC_I64: return ((const int64_t *)buf)[i];
    case NC_U8: return ((const uint8_t *)buf)[i];
    case NC_BOOL: return ((const uint8_t *)buf)[i] != 0;
    default: return (int64_t)nc_elem_get(buf, t, i);
  }
}

void nc_elem_set_i64(void *buf, nc_dtype t, size_t i, int64_t v) {
  switch (t) {
    case NC_I32: ((int32_t *)buf)[i] = (int32_t)(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v); break;
    case NC_I64: ((int64_t *)buf)[i] = v; break;
    case NC_U8: ((uint8_t *)buf)[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); break;
    case NC_BOOL: ((uint8_t *)buf)[i] = v != 0; break;
    default: nc_elem_set(buf, t, i, (double)v); break;
  }
}
