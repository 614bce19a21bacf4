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

#endif
