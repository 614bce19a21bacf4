/* The avx2 kernel set (AVX2 + FMA + F16C): its table, and the row helpers.
   The steps are in rows.c (decode) and block.c (prefill). */
#include "vec.h"

/* Eight f32 -> bf16 codes, round to nearest even on the bits as
   rpa_f32_to_bf16 does (a NaN keeps its sign and is made quiet). */
static inline __m128i f32_to_bf16_8(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rnd = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  const __m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
  const __m256i b = _mm256_srli_epi32(_mm256_blendv_epi8(rnd, q, nan), 16);
  return _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
}

/* 8 (or the last cnt < 8) values of src * mul narrowed to dt at dst. */
static ALWAYS_INLINE void store8(void *dst, rpa_dtype dt, const float *src,
                                 __m256 vmul, int cnt) {
  const __m256i m = vi_first(cnt);
  const __m256 x = _mm256_mul_ps(cnt == 8 ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, m), vmul);
  if (dt == RPA_F32) {
    if (cnt == 8)
      _mm256_storeu_ps((float *)dst, x);
    else
      _mm256_maskstore_ps((float *)dst, m, x);
    return;
  }
  const __m128i h = dt == RPA_BF16
                        ? f32_to_bf16_8(x)
                        : _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (cnt == 8) {
    _mm_storeu_si128((__m128i *)dst, h);
  } else {
    uint16_t tmp[8];
    _mm_storeu_si128((__m128i *)tmp, h);
    memcpy(dst, tmp, sizeof(uint16_t) * (size_t)cnt);
  }
}

static ALWAYS_INLINE void store_row_dt(void *dst, rpa_dtype dt, const float *src,
                                       int n, float mul) {
  const __m256 vmul = _mm256_set1_ps(mul);
  const size_t es = dt == RPA_F32 ? 4 : 2;
  int i = 0;
  for (; i + 8 <= n; i += 8) store8((char *)dst + (size_t)i * es, dt, src + i, vmul, 8);
  if (i < n) store8((char *)dst + (size_t)i * es, dt, src + i, vmul, n - i);
}

void rpa_store_row__avx2(void *dst, rpa_dtype dt, const float *src, int n,
                         float mul);
void rpa_store_row__avx2(void *dst, rpa_dtype dt, const float *src, int n,
                         float mul) {
  switch (dt) { /* out is f32, bf16 or f16 */
    case RPA_BF16: store_row_dt(dst, RPA_BF16, src, n, mul); break;
    case RPA_F16: store_row_dt(dst, RPA_F16, src, n, mul); break;
    default: store_row_dt(dst, RPA_F32, src, n, mul); break;
  }
}

static ALWAYS_INLINE void load_row_dt(float *dst, const void *src, rpa_dtype dt,
                                      int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, vf_widen(elem_at(src, dt, i), dt));
  if (i < n)
    vf_store_first(dst + i, n - i, vf_widen_first(elem_at(src, dt, i), dt, n - i));
}

void rpa_load_row__avx2(float *dst, const void *src, rpa_dtype dt, int n);
void rpa_load_row__avx2(float *dst, const void *src, rpa_dtype dt, int n) {
  switch (dt) {
    case RPA_F32: load_row_dt(dst, src, RPA_F32, n); break;
    case RPA_BF16: load_row_dt(dst, src, RPA_BF16, n); break;
    case RPA_F16: load_row_dt(dst, src, RPA_F16, n); break;
    case RPA_FP8_E4M3: load_row_dt(dst, src, RPA_FP8_E4M3, n); break;
    case RPA_FP8_E5M2: load_row_dt(dst, src, RPA_FP8_E5M2, n); break;
  }
}

void rpa_scale__avx2(float *x, int n, float a);
void rpa_scale__avx2(float *x, int n, float a) { scale_row(x, n, a); }

void rpa_rows_begin__avx2(float *q, int ld, int rows, int D, rpa_dtype dt,
                          int bf16_ok);
void rpa_rows_step__avx2(const rpa_rows_args *a);
void rpa_rows_end__avx2(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                        int bf16_ok);
void rpa_block_begin__avx2(const rpa_block *b);
void rpa_block_step__avx2(const rpa_block_args *a);

const rpa_kernels rpa_kernels_avx2 = {
    .name = "avx2",
    .rows_keys = RPA_AVX2_ROWS_KEYS,
    .block_keys = RPA_AVX2_BLOCK_KEYS,
    .has_bf16_dot = 0,
    .rows_block_min = RPA_AVX2_ROWS_BLOCK_MIN,
    .rows_begin = rpa_rows_begin__avx2,
    .rows_step = rpa_rows_step__avx2,
    .rows_end = rpa_rows_end__avx2,
    .block_begin = rpa_block_begin__avx2,
    .block_step = rpa_block_step__avx2,
    .load_row = rpa_load_row__avx2,
    .store_row = rpa_store_row__avx2,
    .scale = rpa_scale__avx2,
};
