/* Widening of every dtype to float32: the one scalar definition, inline so
   that portable kernels vectorise it. dtype.c's public conversions and the
   reference backend call these; SIMD kernels are tested against them. */
#ifndef RPA_CONVERT_H
#define RPA_CONVERT_H

#include <stdint.h>
#include <string.h>

#include "rpa.h"

static inline float rpa_bits_to_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline float rpa_widen_bf16(uint16_t h) {
  return rpa_bits_to_f32((uint32_t)h << 16);
}

static inline float rpa_widen_f16(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0x1f) return rpa_bits_to_f32(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    const float v = (float)mant * 0x1p-24f;
    return sign ? -v : v;
  }
  return rpa_bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline float rpa_widen_e4m3(uint8_t b) {
  const uint32_t sign = (uint32_t)(b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xfu, mant = b & 0x7u;
  if (exp == 0xf && mant == 0x7) return rpa_bits_to_f32(sign | 0x7fc00000u);
  if (exp == 0) {
    const float v = (float)mant * 0x1p-9f;
    return sign ? -v : v;
  }
  return rpa_bits_to_f32(sign | ((exp + 120u) << 23) | (mant << 20));
}

static inline float rpa_widen_e5m2(uint8_t b) {
  return rpa_widen_f16((uint16_t)((uint16_t)b << 8));
}

static inline float rpa_widen(const void *p, rpa_dtype dt, int64_t i) {
  switch (dt) {
    case RPA_F32: return ((const float *)p)[i];
    case RPA_BF16: return rpa_widen_bf16(((const uint16_t *)p)[i]);
    case RPA_F16: return rpa_widen_f16(((const uint16_t *)p)[i]);
    case RPA_FP8_E4M3: return rpa_widen_e4m3(((const uint8_t *)p)[i]);
    case RPA_FP8_E5M2: return rpa_widen_e5m2(((const uint8_t *)p)[i]);
  }
  return 0.0f;
}

/* 1 if none of rows[i][0 .. n) (i < count) is a NaN or an infinity. */
static inline int rpa_rows_finite(const void *const *rows, int count, int n,
                                  rpa_dtype dt) {
  for (int i = 0; i < count; i++) {
    const void *p = rows[i];
    int bad = 0; /* exponent all ones, on the bits */
    switch (dt) {
      case RPA_F32:
        for (int j = 0; j < n; j++) {
          uint32_t u;
          memcpy(&u, (const char *)p + 4 * (size_t)j, 4);
          bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
        break;
      case RPA_BF16:
        for (int j = 0; j < n; j++)
          bad |= (((const uint16_t *)p)[j] & 0x7f80u) == 0x7f80u;
        break;
      case RPA_F16:
        for (int j = 0; j < n; j++)
          bad |= (((const uint16_t *)p)[j] & 0x7c00u) == 0x7c00u;
        break;
      case RPA_FP8_E4M3: /* no infinities; NaN is S.1111.111 */
        for (int j = 0; j < n; j++)
          bad |= (((const uint8_t *)p)[j] & 0x7fu) == 0x7fu;
        break;
      case RPA_FP8_E5M2:
        for (int j = 0; j < n; j++)
          bad |= (((const uint8_t *)p)[j] & 0x7cu) == 0x7cu;
        break;
    }
    if (bad) return 0;
  }
  return 1;
}

#endif
