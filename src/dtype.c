/* Scalar dtype conversions: the exact definitions the library uses
   (widening lives in convert.h, inline, for the portable kernels too). Fast
   kernels convert in SIMD and are tested against these. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "convert.h"
#include "internal.h"

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

float rpa_bf16_to_f32(uint16_t bits) { return rpa_widen_bf16(bits); }

uint16_t rpa_f32_to_bf16(float value) {
  uint32_t u = f32_bits(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, force quiet */
    return (uint16_t)((u >> 16) | 0x0040u);
  /* Round to nearest even on the 16 dropped bits; overflow carries into
     the exponent and gives infinity, as it should. */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float rpa_f16_to_f32(uint16_t h) { return rpa_widen_f16(h); }

/* Generic round-to-nearest-even encoder for small binary formats.
   ebits/mbits: field widths. fn: e4m3fn-style (no infinity, the all-ones
   exponent holds normal numbers except mantissa all ones, which is NaN).
   Overflow: infinity, or NaN for fn formats. */
static uint32_t encode_small(float value, int ebits, int mbits, int fn) {
  const uint32_t sign = (f32_bits(value) >> 31) << (ebits + mbits);
  const int bias = (1 << (ebits - 1)) - 1;
  const uint32_t exp_ones = (1u << ebits) - 1u;
  const uint32_t mant_ones = (1u << mbits) - 1u;
  const uint32_t nan = fn ? (exp_ones << mbits) | mant_ones
                          : (exp_ones << mbits) | (1u << (mbits - 1));
  const uint32_t overflow = fn ? nan : exp_ones << mbits;
  /* largest exponent of a finite number, unbiased */
  const int emax = fn ? (int)exp_ones - bias : (int)exp_ones - 1 - bias;
  const int emin = 1 - bias;
  if (isnan(value)) return sign | nan;
  double a = fabs((double)value);
  if (a == 0.0) return sign;
  if (isinf(value)) return sign | overflow;
  int ex;
  (void)frexp(a, &ex);
  int e = ex - 1; /* a in [2^e, 2^(e+1)) */
  if (e < emin) e = emin;
  /* scaled is exact: a has 24 significant bits and the scale is 2^k */
  double r = nearbyint(ldexp(a, mbits - e));
  if (r >= ldexp(1.0, mbits + 1)) { /* rounding carried into the exponent */
    e += 1;
    r = ldexp(1.0, mbits);
  }
  if (e > emax) return sign | overflow;
  uint32_t m = (uint32_t)r;
  if (m < (1u << mbits)) return sign | m; /* subnormal (e == emin) */
  uint32_t field = (uint32_t)(e + bias);
  uint32_t code = (field << mbits) | (m - (1u << mbits));
  if (fn && code == ((exp_ones << mbits) | mant_ones)) return sign | nan;
  return sign | code;
}

uint16_t rpa_f32_to_f16(float value) {
  const uint32_t x = f32_bits(value);
  const uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: inf */
  if (a >= 0x38800000u) { /* normal: rebias 127 -> 15, round 13 bits RNE */
    const uint32_t r = a - 0x38000000u + 0xfffu + ((a >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
  }
  /* subnormal or zero: the value in units of 2^-24, rounded to even (the
     scaling is exact; 1024 correctly becomes the smallest normal) */
  const float v = rpa_bits_to_f32(a) * 0x1p24f;
  return (uint16_t)(sign | (uint32_t)nearbyintf(v));
}

/* The generic encoder's f16 answer, kept as a cross-check for the tests. */
uint16_t rpa_f32_to_f16_generic(float value);
uint16_t rpa_f32_to_f16_generic(float value) {
  return (uint16_t)encode_small(value, 5, 10, 0);
}

float rpa_fp8_e4m3_to_f32(uint8_t b) { return rpa_widen_e4m3(b); }

uint8_t rpa_f32_to_fp8_e4m3(float value) {
  return (uint8_t)encode_small(value, 4, 3, 1);
}

float rpa_fp8_e5m2_to_f32(uint8_t b) { return rpa_widen_e5m2(b); }

uint8_t rpa_f32_to_fp8_e5m2(float value) {
  return (uint8_t)encode_small(value, 5, 2, 0);
}

float rpa_load_f32(const void *base, rpa_dtype dtype, int64_t i) {
  return rpa_widen(base, dtype, i);
}

void rpa_store_f32(void *base, rpa_dtype dtype, int64_t i, float v) {
  switch (dtype) {
    case RPA_F32: ((float *)base)[i] = v; return;
    case RPA_BF16: ((uint16_t *)base)[i] = rpa_f32_to_bf16(v); return;
    case RPA_F16: ((uint16_t *)base)[i] = rpa_f32_to_f16(v); return;
    case RPA_FP8_E4M3: ((uint8_t *)base)[i] = rpa_f32_to_fp8_e4m3(v); return;
    case RPA_FP8_E5M2: ((uint8_t *)base)[i] = rpa_f32_to_fp8_e5m2(v); return;
  }
}

float rpa_dtype_max(rpa_dtype dtype) {
  switch (dtype) {
    case RPA_F32: return FLT_MAX;
    case RPA_BF16: return rpa_bf16_to_f32(0x7f7f);
    case RPA_F16: return 65504.0f;
    case RPA_FP8_E4M3: return 448.0f;
    case RPA_FP8_E5M2: return 57344.0f;
  }
  return 0.0f;
}

float rpa_quantize_q(float x, float q_scale, rpa_dtype kv_dtype) {
  const float max = rpa_dtype_max(kv_dtype);
  float y = x / q_scale;
  if (y > max) y = max; /* NaN compares false and stays NaN */
  if (y < -max) y = -max;
  switch (kv_dtype) {
    case RPA_F32: return y;
    case RPA_BF16: return rpa_bf16_to_f32(rpa_f32_to_bf16(y));
    case RPA_F16: return rpa_f16_to_f32(rpa_f32_to_f16(y));
    case RPA_FP8_E4M3: return rpa_fp8_e4m3_to_f32(rpa_f32_to_fp8_e4m3(y));
    case RPA_FP8_E5M2: return rpa_fp8_e5m2_to_f32(rpa_f32_to_fp8_e5m2(y));
  }
  return y;
}

const char *rpa_dtype_name(rpa_dtype dtype) {
  switch (dtype) {
    case RPA_F32: return "f32";
    case RPA_BF16: return "bf16";
    case RPA_F16: return "f16";
    case RPA_FP8_E4M3: return "fp8_e4m3";
    case RPA_FP8_E5M2: return "fp8_e5m2";
  }
  return "invalid";
}

size_t rpa_dtype_size(rpa_dtype dtype) {
  switch (dtype) {
    case RPA_F32: return 4;
    case RPA_BF16:
    case RPA_F16: return 2;
    case RPA_FP8_E4M3:
    case RPA_FP8_E5M2: return 1;
  }
  return 0;
}

rpa_status rpa_convert(const void *src, rpa_dtype src_dtype, void *dst,
                       rpa_dtype dst_dtype, size_t n) {
  if (rpa_dtype_size(src_dtype) == 0 || rpa_dtype_size(dst_dtype) == 0)
    return RPA_INVALID_DTYPE;
  if (n == 0) return RPA_OK;
  if (!src || !dst) return RPA_NULL_POINTER;
  for (size_t i = 0; i < n; i++)
    rpa_store_f32(dst, dst_dtype, (int64_t)i,
                  rpa_load_f32(src, src_dtype, (int64_t)i));
  return RPA_OK;
}
