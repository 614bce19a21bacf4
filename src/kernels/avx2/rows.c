/* The avx2 rows step (kernels.h: rows_begin, rows_step, rows_end): the
   dispatch by dtype to the step's copies (rows_<dtype>.c), and the staging
   of q and o in the set's rows order (rows.h). */
#include "rows.h"

/* Whether any of the n rows of `bytes` e4m3 bytes holds a NaN code. */
static int e4m3_rows_nan(const void *const *rows, int n, int bytes) {
  const __m256i m7f = _mm256_set1_epi8(0x7f);
  __m256i any = _mm256_setzero_si256();
  int tail = 0;
  for (int i = 0; i < n; i++) {
    const uint8_t *r = rows[i];
    int b = 0;
    for (; b + 32 <= bytes; b += 32) {
      const __m256i x = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(r + b)), m7f);
      any = _mm256_or_si256(any, _mm256_cmpeq_epi8(x, m7f));
    }
    for (; b < bytes; b++) tail |= (r[b] & 0x7f) == 0x7f;
  }
  return tail || !_mm256_testz_si256(any, any);
}

/* bf16 rows between natural and blocked order (back: blocked -> natural). */
static void rows_order(float *x, int ld, int rows, int n, rpa_dtype dt,
                         int back) {
  if (dt != RPA_BF16) return;
  for (int r = 0; r < rows; r++)
    for (int d = 0; d + 16 <= n; d += 16) {
      float *blk = x + (int64_t)r * ld + d;
      const __m256 a = _mm256_loadu_ps(blk), b = _mm256_loadu_ps(blk + 8);
      __m256 lo, hi;
      if (!back) { /* a0 a2 .. b6 | a1 a3 .. b7 */
        lo = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
        hi = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xdd)), 0xd8));
      } else { /* a = even dims, b = odd dims */
        const __m256 u = _mm256_unpacklo_ps(a, b), v = _mm256_unpackhi_ps(a, b);
        lo = _mm256_permute2f128_ps(u, v, 0x20);
        hi = _mm256_permute2f128_ps(u, v, 0x31);
      }
      _mm256_storeu_ps(blk, lo);
      _mm256_storeu_ps(blk + 8, hi);
    }
}

void rpa_rows_step__avx2(const rpa_rows_args *a);
void rpa_rows_step__avx2(const rpa_rows_args *a) {
  if (a->n <= 0) return;
  switch (a->dtype) { /* one specialised copy per dtype */
    case RPA_F32: rpa_rows_f32__avx2(a); break;
    case RPA_BF16: rpa_rows_bf16__avx2(a); break;
    case RPA_F16: rpa_rows_f16__avx2(a); break;
    case RPA_FP8_E4M3:
      rpa_rows_e4m3__avx2(a, e4m3_rows_nan(a->krows, a->n, a->D) ||
                                 e4m3_rows_nan(a->vrows, a->n, a->Dv));
      break;
    case RPA_FP8_E5M2: rpa_rows_e5m2__avx2(a); break;
  }
}

void rpa_rows_begin__avx2(float *q, int ld, int rows, int D, rpa_dtype dt,
                          int bf16_ok);
void rpa_rows_begin__avx2(float *q, int ld, int rows, int D, rpa_dtype dt,
                          int bf16_ok) {
  (void)bf16_ok; /* no bf16 dot product in this set */
  rows_order(q, ld, rows, D, dt, 0);
}

void rpa_rows_end__avx2(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                        int bf16_ok);
void rpa_rows_end__avx2(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                        int bf16_ok) {
  (void)bf16_ok;
  rows_order(o, ldo, rows, Dv, dt, 1);
  if (dt == RPA_FP8_E4M3) /* o accumulated p V / 256 (see E4M3_RAW) */
    for (int r = 0; r < rows; r++) scale_row(o + (int64_t)r * ldo, Dv, 256.0f);
}
