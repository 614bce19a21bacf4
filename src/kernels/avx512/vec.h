/* The avx512 vocabulary (F, BW, DQ, VL, VBMI, BF16): 16 float lanes. Every
   vector set names the same operations the same way (avx2/vec.h), so the
   shared steps in ../common/ read the same on every ISA; this file says
   how AVX-512 does each one.

   Widening: bf16 by a shift, f16 by vcvtph2ps, fp8 through f16 (e5m2 is
   the top byte of an f16; e4m3fn's bits shifted into an f16 give the value
   / 256, exactly). Tails are masked loads, which read nothing past the
   mask. */
#ifndef RPA_KERNELS_AVX512_VEC_H
#define RPA_KERNELS_AVX512_VEC_H

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../../convert.h"
#include "../../internal.h"
#include "../kernels.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* The set's step sizes (kernels.h): 32 keys per step; a decode group of 64
   rows or more runs as blocks. */
#define RPA_AVX512_ROWS_KEYS 32
#define RPA_AVX512_BLOCK_KEYS 32
#define RPA_AVX512_ROWS_BLOCK_MIN 64

enum { VL = 16 }; /* float lanes */
typedef __m512 vf;    /* VL floats */
typedef __m512i vi;   /* VL int32 */
typedef __mmask16 vm; /* a lane mask, bit i for lane i */

static ALWAYS_INLINE vf vf_zero(void) { return _mm512_setzero_ps(); }
static ALWAYS_INLINE vf vf_set1(float x) { return _mm512_set1_ps(x); }
static ALWAYS_INLINE vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
static ALWAYS_INLINE void vf_store(float *p, vf x) { _mm512_storeu_ps(p, x); }
static ALWAYS_INLINE vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static ALWAYS_INLINE vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static ALWAYS_INLINE vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
/* max(a, b); b where either is NaN */
static ALWAYS_INLINE vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }
/* a * b + c, one rounding */
static ALWAYS_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }

/* Lanes [0, n) (n clamped to 0..VL). */
static ALWAYS_INLINE vm vm_first(int n) {
  return n >= VL ? (vm)0xffff : n <= 0 ? (vm)0 : (vm)((1u << n) - 1);
}
static ALWAYS_INLINE vm vm_and(vm a, vm b) { return (vm)(a & b); }
static ALWAYS_INLINE vm vm_or(vm a, vm b) { return (vm)(a | b); }
static ALWAYS_INLINE vm vm_not(vm a) { return (vm)~a; }
/* Bit i set where lane i is. */
static ALWAYS_INLINE unsigned vm_bits(vm a) { return (unsigned)a; }
/* Ordered comparisons: false where either lane is NaN. */
static ALWAYS_INLINE vm vm_gt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
static ALWAYS_INLINE vm vm_ne(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_OQ); }
/* m ? a : b, and m ? a : 0. */
static ALWAYS_INLINE vf vf_select(vm m, vf a, vf b) { return _mm512_mask_mov_ps(b, m, a); }
static ALWAYS_INLINE vf vf_keep(vm m, vf a) { return _mm512_maskz_mov_ps(m, a); }

/* The first n lanes of p (n clamped to 0..VL), zero past them; nothing
   past them is read or written. */
static ALWAYS_INLINE vf vf_load_first(const float *p, int n) {
  return _mm512_maskz_loadu_ps(vm_first(n), p);
}
static ALWAYS_INLINE void vf_store_first(float *p, int n, vf x) {
  _mm512_mask_storeu_ps(p, vm_first(n), x);
}
static ALWAYS_INLINE vi vi_load_first(const int32_t *p, int n) {
  return _mm512_maskz_loadu_epi32(vm_first(n), p);
}
static ALWAYS_INLINE vi vi_set1(int32_t x) { return _mm512_set1_epi32(x); }
static ALWAYS_INLINE vi vi_sub(vi a, vi b) { return _mm512_sub_epi32(a, b); }
/* a <= b, a < b (signed). */
static ALWAYS_INLINE vm vm_le_i(vi a, vi b) { return _mm512_cmple_epi32_mask(a, b); }
static ALWAYS_INLINE vm vm_lt_i(vi a, vi b) { return _mm512_cmplt_epi32_mask(a, b); }

static ALWAYS_INLINE void prefetch_l1(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }
static ALWAYS_INLINE void prefetch_l2(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T1); }

/* Element `elems` of a row of dtype dt. */
static ALWAYS_INLINE const void *elem_at(const void *p, rpa_dtype dt, int elems) {
  static const unsigned char size[RPA_DTYPE_COUNT] = {4, 2, 2, 1, 1};
  return (const char *)p + (size_t)elems * size[dt];
}

/* The first n (1..VL) elements of a row widened to f32, zero past them;
   reads no byte past element n - 1. */
static inline vf vf_widen_first(const void *src, rpa_dtype dt, int n) {
  const __mmask16 m = vm_first(n);
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

/* VL whole elements of a row widened to f32; dt a constant after
   inlining. */
static ALWAYS_INLINE vf vf_widen(const void *src, rpa_dtype dt) {
  switch (dt) {
    case RPA_F32: return _mm512_loadu_ps(src);
    case RPA_BF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)src)), 16));
    case RPA_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src));
    default: return vf_widen_first(src, dt, VL);
  }
}

/* x[i] *= a for i < n. */
static inline void scale_row(float *x, int n, float a) {
  const vf va = vf_set1(a);
  int i = 0;
  for (; i + VL <= n; i += VL) vf_store(x + i, vf_mul(vf_load(x + i), va));
  for (; i < n; i++) x[i] *= a;
}

/* exp(x) for x <= 0 within ~1 ulp: 2^n e^r with |r| <= ln2 / 2, a degree-6
   polynomial; 0 below -87.3 and for -inf; NaN stays NaN. */
static ALWAYS_INLINE vf vf_exp_neg(vf x) {
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

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|). */
static ALWAYS_INLINE vf vf_tanh(vf x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 e = vf_exp_neg(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
  const __m512 t = _mm512_div_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e),
                                 _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign));
}

/* The transpose-reduce: lane k of the result is the sum of v[k]'s lanes,
   for VL vectors (a fixed tree, the same for every call). */
static ALWAYS_INLINE vf vf_reduce_keys(const vf *v) {
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

static ALWAYS_INLINE float vf_hmax(vf v) { return _mm512_reduce_max_ps(v); }
static ALWAYS_INLINE float vf_hsum(vf v) { return _mm512_reduce_add_ps(v); }

#endif
