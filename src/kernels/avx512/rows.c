/* The avx512 rows step (kernels.h: rows_begin, rows_step, rows_end): the
   dispatch by dtype to the step's copies (rows_<dtype>.c), and the staging
   of q and o in the set's rows order (rows.h). */
#include "rows.h"

/* Rows of x between natural and blocked order (back: blocked -> natural):
   blocked element 16 v + lane of a block is natural element vb * lane + v. */
static void rows_order(float *x, int ld, int rows, int n, rpa_dtype dt,
                         int back) {
  const int vb = block_vecs(dt), bd = 16 * vb, sh = vb == 2 ? 1 : 2;
  if (vb == 1) return;
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __m512i idx[4];
  for (int v = 0; v < vb; v++) {
    const __m512i i = _mm512_add_epi32(lane, _mm512_set1_epi32(16 * v));
    idx[v] = back /* natural i sits at (i % vb) * 16 + i / vb */
                 ? _mm512_add_epi32(_mm512_slli_epi32(_mm512_and_si512(i, _mm512_set1_epi32(vb - 1)), 4),
                                    _mm512_srli_epi32(i, sh))
                 : _mm512_add_epi32(_mm512_slli_epi32(lane, sh), _mm512_set1_epi32(v));
  }
  /* permutes, not gathers: gathers are microcoded on CPUs with the GDS
     mitigation, and this runs on every decode call */
  __mmask16 hi[4];
  for (int v = 0; v < vb; v++)
    hi[v] = _mm512_cmpge_epi32_mask(idx[v], _mm512_set1_epi32(32));
  for (int r = 0; r < rows; r++)
    for (int d0 = 0; d0 + bd <= n; d0 += bd) {
      float *blk = x + (int64_t)r * ld + d0;
      const __m512 a = _mm512_loadu_ps(blk), b = _mm512_loadu_ps(blk + 16);
      if (vb == 2) {
        const __m512 o0 = _mm512_permutex2var_ps(a, idx[0], b);
        const __m512 o1 = _mm512_permutex2var_ps(a, idx[1], b);
        _mm512_storeu_ps(blk, o0);
        _mm512_storeu_ps(blk + 16, o1);
      } else {
        const __m512 c = _mm512_loadu_ps(blk + 32), e = _mm512_loadu_ps(blk + 48);
        __m512 o[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
          o[v] = _mm512_mask_mov_ps(_mm512_permutex2var_ps(a, idx[v], b), hi[v],
                                    _mm512_permutex2var_ps(c, idx[v], e));
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) _mm512_storeu_ps(blk + 16 * v, o[v]);
      }
    }
}

void rpa_rows_step__avx512(const rpa_rows_args *a);
void rpa_rows_step__avx512(const rpa_rows_args *a) {
  if (a->n <= 0) return;
  switch (a->dtype) { /* one specialised copy per dtype (rows_<dtype>.c) */
    case RPA_F32: rpa_rows_f32__avx512(a); break;
    case RPA_F16: rpa_rows_f16__avx512(a); break;
    case RPA_BF16:
      if (a->bf16_ok)
        rpa_rows_bf16_dot__avx512(a);
      else
        rpa_rows_bf16__avx512(a);
      break;
    case RPA_FP8_E4M3:
      if (a->bf16_ok)
        rpa_rows_e4m3_dot__avx512(a);
      else
        rpa_rows_e4m3__avx512(a);
      break;
    case RPA_FP8_E5M2:
      if (a->bf16_ok)
        rpa_rows_e5m2_dot__avx512(a);
      else
        rpa_rows_e5m2__avx512(a);
      break;
  }
}

/* Does an item of these rows run on vdpbf16ps (rows_step's CASE_DOT)? */
static int on_dot(rpa_dtype dt, int bf16_ok) {
  return bf16_ok && (dt == RPA_BF16 || is_fp8(dt));
}

void rpa_rows_begin__avx512(float *q, int ld, int rows, int D, rpa_dtype dt,
                              int bf16_ok);
void rpa_rows_begin__avx512(float *q, int ld, int rows, int D, rpa_dtype dt,
                              int bf16_ok) {
  if (!on_dot(dt, bf16_ok)) {
    rows_order(q, ld, rows, D, dt, 0);
    return;
  }
  /* the vdpbf16ps path: each row's dims below the last whole block (32 for
     a bf16 cache, 64 for fp8) as bf16 over the start of the row, a block at
     a time, each read before its bytes are written; the tail stays f32. q
     holds bf16 values, so keeping the high half of each f32 is exact. bf16:
     natural order; fp8: the order of fp8_words, [the low 8 dims of each 16 |
     the high 8]. */
  const int bd = dt == RPA_BF16 ? 32 : 64;
  const int dfull = D / bd * bd;
  for (int r = 0; r < rows; r++) {
    float *x = q + (int64_t)r * ld;
    uint16_t *w = (uint16_t *)x;
    for (int d = 0; d < dfull; d += bd) {
      __m256i h[4];
      for (int k = 0; k < bd / 16; k++)
        h[k] = _mm512_cvtepi32_epi16(
            _mm512_srli_epi32(_mm512_castps_si512(_mm512_loadu_ps(x + d + 16 * k)), 16));
      if (bd == 32) {
        _mm256_storeu_si256((__m256i *)(w + d), h[0]);
        _mm256_storeu_si256((__m256i *)(w + d + 16), h[1]);
      } else {
        for (int k = 0; k < 4; k++) {
          _mm_storeu_si128((__m128i *)(w + d + 8 * k), _mm256_castsi256_si128(h[k]));
          _mm_storeu_si128((__m128i *)(w + d + 32 + 8 * k), _mm256_extracti128_si256(h[k], 1));
        }
      }
    }
  }
}

void rpa_rows_end__avx512(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                            int bf16_ok);
void rpa_rows_end__avx512(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                            int bf16_ok) {
  if (!on_dot(dt, bf16_ok)) {
    rows_order(o, ldo, rows, Dv, dt, 1);
    return;
  }
  if (is_fp8(dt)) {
    /* decode_pv_dot_run's fp8 order: vector v of a 64-dim block holds dims
       16k + 4v + t at lane 4k + t; natural vector k takes 4-lane chunk k of
       each v (a 4 x 4 transpose of 128-bit chunks) */
    for (int r = 0; r < rows; r++)
      for (int d = 0; d + 64 <= Dv; d += 64) {
        float *blk = o + (int64_t)r * ldo + d;
        const __m512 v0 = _mm512_loadu_ps(blk), v1 = _mm512_loadu_ps(blk + 16),
                     v2 = _mm512_loadu_ps(blk + 32), v3 = _mm512_loadu_ps(blk + 48);
        const __m512 t0 = _mm512_shuffle_f32x4(v0, v1, 0x44); /* v0.0 v0.1 v1.0 v1.1 */
        const __m512 t1 = _mm512_shuffle_f32x4(v2, v3, 0x44);
        const __m512 t2 = _mm512_shuffle_f32x4(v0, v1, 0xee); /* v0.2 v0.3 v1.2 v1.3 */
        const __m512 t3 = _mm512_shuffle_f32x4(v2, v3, 0xee);
        _mm512_storeu_ps(blk, _mm512_shuffle_f32x4(t0, t1, 0x88));
        _mm512_storeu_ps(blk + 16, _mm512_shuffle_f32x4(t0, t1, 0xdd));
        _mm512_storeu_ps(blk + 32, _mm512_shuffle_f32x4(t2, t3, 0x88));
        _mm512_storeu_ps(blk + 48, _mm512_shuffle_f32x4(t2, t3, 0xdd));
      }
    return;
  }
  /* the vdpbf16ps order of each whole 32-dim block (decode_pv_dot_run):
     16-lane vectors lo, hi hold dims [0-3 | 8-11 | 16-19 | 24-27] and
     [4-7 | 12-15 | 20-23 | 28-31]; natural order interleaves their 4-lane
     chunks */
  const __m512i i0 = _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
  const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(8));
  const int dfull = Dv / 32 * 32;
  for (int r = 0; r < rows; r++)
    for (int d = 0; d < dfull; d += 32) {
      float *blk = o + (int64_t)r * ldo + d;
      const __m512 lo = _mm512_loadu_ps(blk), hi = _mm512_loadu_ps(blk + 16);
      _mm512_storeu_ps(blk, _mm512_permutex2var_ps(lo, i0, hi));
      _mm512_storeu_ps(blk + 16, _mm512_permutex2var_ps(lo, i1, hi));
    }
}
