/* The avx2 vocabulary (AVX2 + FMA + F16C): 8 float lanes. Every vector set
   names the same operations the same way (avx512/vec.h), so the shared
   steps in ../common/ read the same on every ISA; this file says how AVX2
   does each one.

   Widening. bf16 is the top half of an f32 (a shift), f16 goes through
   vcvtph2ps, fp8 through f16: e5m2 is the top byte of an f16, and e4m3fn's
   magnitude shifted left by 7 into an f16 is its value / 256 exactly
   (subnormals included), NaN (S.1111.111) mapped to the f16 quiet NaN of
   the same sign so that the f32 result has the scalar bits (convert.h).

   Tails. Rows are exact-size allocations: the last elements of a row whose
   length is not a whole vector are loaded with vmaskmov (4-byte elements)
   or copied through a small zeroed buffer (2- and 1-byte elements), never
   read past the end. */
#ifndef RPA_KERNELS_AVX2_VEC_H
#define RPA_KERNELS_AVX2_VEC_H

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../../convert.h"
#include "../../internal.h"
#include "../kernels.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* The set's step sizes (kernels.h): rows steps of 32 keys (4 reductions of
   8), block steps of 30 (5 S^T tiles of 6 keys); a decode group of 16 rows
   or more runs as blocks. */
#define RPA_AVX2_ROWS_KEYS 32
#define RPA_AVX2_BLOCK_KEYS 30
#define RPA_AVX2_ROWS_BLOCK_MIN 16

enum { VL = 8 }; /* float lanes */
typedef __m256 vf;  /* VL floats */
typedef __m256i vi; /* VL int32 */
typedef __m256 vm;  /* a lane mask: all ones or zero per lane */

static ALWAYS_INLINE vf vf_zero(void) { return _mm256_setzero_ps(); }
static ALWAYS_INLINE vf vf_set1(float x) { return _mm256_set1_ps(x); }
static ALWAYS_INLINE vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
static ALWAYS_INLINE void vf_store(float *p, vf x) { _mm256_storeu_ps(p, x); }
static ALWAYS_INLINE vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static ALWAYS_INLINE vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static ALWAYS_INLINE vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
/* max(a, b); b where either is NaN */
static ALWAYS_INLINE vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }
/* a * b + c, one rounding */
static ALWAYS_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }

/* Lanes [0, n) (n clamped to 0..VL). */
static ALWAYS_INLINE vi vi_first(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}
static ALWAYS_INLINE vm vm_first(int n) { return _mm256_castsi256_ps(vi_first(n)); }
static ALWAYS_INLINE vm vm_and(vm a, vm b) { return _mm256_and_ps(a, b); }
static ALWAYS_INLINE vm vm_or(vm a, vm b) { return _mm256_or_ps(a, b); }
static ALWAYS_INLINE vm vm_not(vm a) {
  return _mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
}
/* Bit i set where lane i is. */
static ALWAYS_INLINE unsigned vm_bits(vm a) { return (unsigned)_mm256_movemask_ps(a); }
/* Ordered comparisons: false where either lane is NaN. */
static ALWAYS_INLINE vm vm_gt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
static ALWAYS_INLINE vm vm_ne(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_NEQ_OQ); }
/* m ? a : b, and m ? a : 0. */
static ALWAYS_INLINE vf vf_select(vm m, vf a, vf b) { return _mm256_blendv_ps(b, a, m); }
static ALWAYS_INLINE vf vf_keep(vm m, vf a) { return _mm256_and_ps(m, a); }

/* The first n lanes of p (n clamped to 0..VL), zero past them; nothing
   past them is read or written. */
static ALWAYS_INLINE vf vf_load_first(const float *p, int n) {
  return _mm256_maskload_ps(p, vi_first(n));
}
static ALWAYS_INLINE void vf_store_first(float *p, int n, vf x) {
  _mm256_maskstore_ps(p, vi_first(n), x);
}
static ALWAYS_INLINE vi vi_load_first(const int32_t *p, int n) {
  return _mm256_maskload_epi32((const int *)p, vi_first(n));
}
static ALWAYS_INLINE vi vi_set1(int32_t x) { return _mm256_set1_epi32(x); }
static ALWAYS_INLINE vi vi_sub(vi a, vi b) { return _mm256_sub_epi32(a, b); }
/* a <= b, a < b (signed). */
static ALWAYS_INLINE vm vm_le_i(vi a, vi b) {
  return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(a, b), _mm256_set1_epi32(-1)));
}
static ALWAYS_INLINE vm vm_lt_i(vi a, vi b) { return _mm256_castsi256_ps(_mm256_cmpgt_epi32(b, a)); }

static ALWAYS_INLINE void prefetch_l1(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }
static ALWAYS_INLINE void prefetch_l2(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T1); }

/* Element `elems` of a row of dtype dt. */
static ALWAYS_INLINE const void *elem_at(const void *p, rpa_dtype dt, int elems) {
  const size_t es = dt == RPA_F32 ? 4 : dt == RPA_BF16 || dt == RPA_F16 ? 2 : 1;
  return (const char *)p + (size_t)elems * es;
}

/* Eight f16 codes (in 16-bit lanes) of e4m3fn bytes b (the byte in the low
   half of each 16-bit lane): sign | magnitude << 7, NaN -> sign | 0x7e00.
   Their f16 value is the fp8 value / 256. */
static ALWAYS_INLINE __m128i e4m3_to_f16_codes(__m128i b) {
  const __m128i sign = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8);
  const __m128i mag = _mm_and_si128(b, _mm_set1_epi16(0x7f));
  const __m128i h = _mm_or_si128(sign, _mm_slli_epi16(mag, 7));
  const __m128i nan = _mm_cmpeq_epi16(mag, _mm_set1_epi16(0x7f));
  return _mm_blendv_epi8(h, _mm_or_si128(sign, _mm_set1_epi16(0x7e00)), nan);
}

/* The same for 16 bytes at once (16-bit lanes of a 256-bit vector). */
static ALWAYS_INLINE __m256i e4m3_to_f16_codes16(__m256i b) {
  const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8);
  const __m256i mag = _mm256_and_si256(b, _mm256_set1_epi16(0x7f));
  const __m256i h = _mm256_or_si256(sign, _mm256_slli_epi16(mag, 7));
  const __m256i nan = _mm256_cmpeq_epi16(mag, _mm256_set1_epi16(0x7f));
  return _mm256_blendv_epi8(h, _mm256_or_si256(sign, _mm256_set1_epi16(0x7e00)), nan);
}

/* VL whole elements of a row widened to f32; dt a constant after
   inlining. */
static ALWAYS_INLINE vf vf_widen(const void *src, rpa_dtype dt) {
  switch (dt) {
    case RPA_F32:
      return _mm256_loadu_ps((const float *)src);
    case RPA_BF16:
      return _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)src)), 16));
    case RPA_F16:
      return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)src));
    case RPA_FP8_E5M2: {
      const __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)src));
      return _mm256_cvtph_ps(_mm_slli_epi16(b, 8));
    }
    case RPA_FP8_E4M3:
    default: {
      const __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)src));
      return _mm256_mul_ps(_mm256_cvtph_ps(e4m3_to_f16_codes(b)), _mm256_set1_ps(256.0f));
    }
  }
}

/* The first n (1..VL) elements of a row widened, zero past them; reads no
   byte past element n - 1. */
static inline vf vf_widen_first(const void *src, rpa_dtype dt, int n) {
  if (n >= VL) return vf_widen(src, dt);
  if (dt == RPA_F32) return vf_load_first((const float *)src, n);
  const size_t es = dt == RPA_BF16 || dt == RPA_F16 ? 2 : 1;
  uint8_t tmp[16] = {0};
  memcpy(tmp, src, (size_t)n * es);
  return vf_widen(tmp, dt);
}

/* x[i] *= a for i < n. */
static inline void scale_row(float *x, int n, float a) {
  const vf va = vf_set1(a);
  int i = 0;
  for (; i + VL <= n; i += VL) vf_store(x + i, vf_mul(vf_load(x + i), va));
  if (i < n) vf_store_first(x + i, n - i, vf_mul(vf_load_first(x + i, n - i), va));
}

/* exp(x) for x <= 0 to ~1 ulp: 2^k e^r with |r| <= ln2 / 2, a degree-6
   polynomial; 0 below -87.3 (subnormal results) and for -inf; NaN stays
   NaN; x > 0 (only in a row already poisoned) is taken as 0. */
static ALWAYS_INLINE vf vf_exp_neg(vf x) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  const __m256 tiny = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  /* min / max return their second operand when one is NaN */
  x = _mm256_min_ps(_mm256_setzero_ps(), x);
  x = _mm256_max_ps(lo, x);
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  /* 2^k for k in [-126, 0] (NaN lanes: any bits, p is NaN there) */
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  p = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(tiny, p);
}

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|). */
static ALWAYS_INLINE vf vf_tanh(vf x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 ax = _mm256_andnot_ps(sign, x);
  const __m256 e = vf_exp_neg(_mm256_mul_ps(ax, _mm256_set1_ps(-2.0f)));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
  return _mm256_or_ps(t, _mm256_and_ps(x, sign));
}

/* The transpose-reduce: lane k of the result is the sum of v[k]'s lanes,
   for VL vectors (a fixed tree, the same for every call). */
static ALWAYS_INLINE vf vf_reduce_keys(const vf *v) {
  const __m256 t0 = _mm256_hadd_ps(v[0], v[1]);
  const __m256 t1 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 t2 = _mm256_hadd_ps(v[4], v[5]);
  const __m256 t3 = _mm256_hadd_ps(v[6], v[7]);
  /* 128-bit half h of u0 holds, per lane k < 4, half h of v[k] summed */
  const __m256 u0 = _mm256_hadd_ps(t0, t1);
  const __m256 u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                       _mm256_permute2f128_ps(u0, u1, 0x31));
}

static ALWAYS_INLINE float vf_hmax(vf v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

static ALWAYS_INLINE float vf_hsum(vf v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

#endif
