/* The avx512 kernel set: its table, and the row helpers. The steps are in
   rows.c (decode) and block.c (prefill). */
#include "vec.h"

void rpa_store_row__avx512(void *dst, rpa_dtype dt, const float *src, int n,
                           float mul);
void rpa_store_row__avx512(void *dst, rpa_dtype dt, const float *src, int n,
                           float mul) {
  const __m512 vmul = _mm512_set1_ps(mul);
  for (int i = 0; i < n; i += 16) {
    const int cnt = n - i < 16 ? n - i : 16;
    const __mmask16 m = cnt == 16 ? (__mmask16)0xffff : (__mmask16)((1u << cnt) - 1);
    const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + i), vmul);
    if (dt == RPA_F32) {
      _mm512_mask_storeu_ps((float *)dst + i, m, x);
    } else if (dt == RPA_BF16) {
      /* round to nearest even on the bits, as rpa_f32_to_bf16 (NaN quiet) */
      const __m512i u = _mm512_castps_si512(x);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      __m512i rnd = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
      const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
      rnd = _mm512_mask_or_epi32(rnd, nan, u, _mm512_set1_epi32(0x00400000));
      _mm256_mask_storeu_epi16((uint16_t *)dst + i, m,
                               _mm512_cvtepi32_epi16(_mm512_srli_epi32(rnd, 16)));
    } else {
      _mm256_mask_storeu_epi16((uint16_t *)dst + i, m,
                               _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
}

void rpa_load_row__avx512(float *dst, const void *src, rpa_dtype dt, int n);
void rpa_load_row__avx512(float *dst, const void *src, rpa_dtype dt, int n) {
  for (int i = 0; i < n; i += 16) {
    const int cnt = n - i < 16 ? n - i : 16;
    const __mmask16 m = cnt == 16 ? (__mmask16)0xffff : (__mmask16)((1u << cnt) - 1);
    _mm512_mask_storeu_ps(dst + i, m, vf_widen_first(elem_at(src, dt, i), dt, cnt));
  }
}

void rpa_scale__avx512(float *x, int n, float a);
void rpa_scale__avx512(float *x, int n, float a) { scale_row(x, n, a); }

void rpa_rows_begin__avx512(float *q, int ld, int rows, int D, rpa_dtype dt,
                            int bf16_ok);
void rpa_rows_step__avx512(const rpa_rows_args *a);
void rpa_rows_end__avx512(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                          int bf16_ok);
void rpa_block_begin__avx512(const rpa_block *b);
void rpa_block_step__avx512(const rpa_block_args *a);

const rpa_kernels rpa_kernels_avx512 = {
    .name = "avx512",
    .rows_keys = RPA_AVX512_ROWS_KEYS,
    .block_keys = RPA_AVX512_BLOCK_KEYS,
    .has_bf16_dot = 1,
    .rows_block_min = RPA_AVX512_ROWS_BLOCK_MIN,
    .rows_begin = rpa_rows_begin__avx512,
    .rows_step = rpa_rows_step__avx512,
    .rows_end = rpa_rows_end__avx512,
    .block_begin = rpa_block_begin__avx512,
    .block_step = rpa_block_step__avx512,
    .load_row = rpa_load_row__avx512,
    .store_row = rpa_store_row__avx512,
    .scale = rpa_scale__avx512,
};
