/* Shared vector maths of the avx512 set (F, BW, DQ, VL, VBMI, BF16):
   widening every dtype in registers, exp and tanh, the 16-key
   transpose-reduce, and the fp8 -> bf16 lookup. bf16 widens by a shift (or
   a shift and a mask, for a pair of dims), f16 by vcvtph2ps, fp8 in decode
   through a 128-entry vpermi2b lookup of its bf16 bits (the table is built
   at start-up from the scalar definitions, src/kernels/fp8_lut.c), and
   elsewhere through f16 (e5m2 is the top byte of an f16; e4m3fn's bits
   shifted into an f16 give the value / 256, exactly). */
#ifndef RPA_KERNELS_AVX512_MATH_H
#define RPA_KERNELS_AVX512_MATH_H

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../../convert.h"
#include "../../internal.h"
#include "../fp8_lut.h"
#include "../kernels.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

static inline uint32_t rpa_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

/* 16 elements (or the first `count`) of a row, widened to f32. */
static inline __m512 widen16(const void *src, rpa_dtype dt, int count) {
  const __mmask16 m = count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1);
  switch (dt) {
    case RPA_F32:
      return _mm512_maskz_loadu_ps(m, src);
    case RPA_BF16: {
      const __m256i h = _mm256_maskz_loadu_epi16(m, src);
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case RPA_F16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src));
    case RPA_FP8_E5M2: {
      const __m256i b = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, src));
      return _mm512_cvtph_ps(_mm256_slli_epi16(b, 8));
    }
    case RPA_FP8_E4M3:
    default: {
      const __m256i b = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, src));
      const __m256i mag = _mm256_and_si256(b, _mm256_set1_epi16(0x7f));
      const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8);
      __m256i h = _mm256_or_si256(sign, _mm256_slli_epi16(mag, 7));
      const __mmask16 nan = _mm256_cmpeq_epi16_mask(mag, _mm256_set1_epi16(0x7f));
      h = _mm256_mask_mov_epi16(h, nan, _mm256_set1_epi16(0x7e00));
      return _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(256.0f));
    }
  }
}

static inline const void *advance(const void *p, rpa_dtype dt, int elems) {
  static const unsigned char size[RPA_DTYPE_COUNT] = {4, 2, 2, 1, 1};
  return (const char *)p + (size_t)elems * size[dt];
}

/* x[i] *= a for i < n. */
static inline void scale_row(float *x, int n, float a) {
  const __m512 va = _mm512_set1_ps(a);
  int i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), va));
  for (; i < n; i++) x[i] *= a;
}

/* exp(x) for x <= 0 within ~1 ulp; 0 below -87.3 and for -inf. */
static inline __m512 exp_neg16(__m512 x) {
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
  x = _mm512_max_ps(_mm512_set1_ps(-87.3f), x); /* NaN stays NaN */
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_scalef_ps(p, n);
  return _mm512_maskz_mov_ps((__mmask16)~tiny, p);
}


/* Sums each of 16 vectors: lane k of the result is the sum of v[k]. */
static inline __m512 reduce16(const __m512 *v) {
  __m512 w[8], x[4], y[2];
  for (int i = 0; i < 8; i++) /* 256-bit halves: key 2i | key 2i+1 */
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
  for (int i = 0; i < 4; i++) /* 128-bit lane L holds key 4i + L */
    x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xdd));
  for (int i = 0; i < 2; i++)
    y[i] = _mm512_add_ps(_mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0xee));
  const __m512 z = _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88),
                                 _mm512_shuffle_ps(y[0], y[1], 0xdd));
  /* element 4L + j of z is key 4j + L */
  const __m512i idx = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1,
                                       12, 8, 4, 0);
  return _mm512_permutexvar_ps(idx, z);
}

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|). */
static inline __m512 tanh16(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 e = exp_neg16(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
  const __m512 t = _mm512_div_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e),
                                 _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign));
}

/* 16 elements of a row widened to f32; dt is a constant after inlining. */
static ALWAYS_INLINE __m512 widen_full(const void *src, rpa_dtype dt) {
  switch (dt) {
    case RPA_F32: return _mm512_loadu_ps(src);
    case RPA_BF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)src)), 16));
    case RPA_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src));
    default: return widen16(src, dt, 16);
  }
}


/* The four 64-byte tables of one fp8 format, in registers. */
typedef struct fp8_lut {
  __m512i lo0, lo1, hi0, hi1;
} fp8_lut;

static ALWAYS_INLINE int is_fp8(rpa_dtype dt) {
  return dt == RPA_FP8_E4M3 || dt == RPA_FP8_E5M2;
}

static ALWAYS_INLINE fp8_lut fp8_lut_load(rpa_dtype dt) {
  const int f = dt == RPA_FP8_E5M2;
  fp8_lut t;
  t.lo0 = _mm512_load_si512(rpa_fp8_bf16_lut[f][0]);
  t.lo1 = _mm512_load_si512(rpa_fp8_bf16_lut[f][0] + 64);
  t.hi0 = _mm512_load_si512(rpa_fp8_bf16_lut[f][1]);
  t.hi1 = _mm512_load_si512(rpa_fp8_bf16_lut[f][1] + 64);
  return t;
}

/* 64 fp8 bytes -> the low and the high bytes of their bf16 bits: two
   128-entry lookups (vpermi2b) on the magnitude, the sign ORed back. */
static ALWAYS_INLINE void fp8_to_bf16_bytes(__m512i x, const fp8_lut *t,
                                            __m512i *lo, __m512i *hi) {
  *lo = _mm512_permutex2var_epi8(t->lo0, x, t->lo1);
  *hi = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(t->hi0, x, t->hi1),
                                  x, _mm512_set1_epi8((char)0x80), 0xf8);
}


#endif
