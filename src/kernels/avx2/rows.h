/* The avx2 rows step's inner products, for ../common/rows.h: each
   rows_<dtype>.c instantiates the step for its dtypes (one translation
   unit each, so the set compiles in parallel and each file quickly), and
   rows.c dispatches (kernels.h: rows_begin, rows_step, rows_end).

   Dims go in blocks of 16. A bf16 block is read as one 256-bit load whose
   32-bit lanes hold dims (2i, 2i + 1): a shift gives the even dims, an AND
   the odd ones. Rows steps therefore work in a "blocked" dim order for
   bf16: within each whole 16-dim block, the even dims, then the odd ones;
   q is put in that order before an item's first step and o back after its
   last (rows_begin / rows_end). A dot product does not care, and P V only
   permutes o. Other dtypes, and dims past the last whole block, keep their
   natural order. QK holds NR x KB = 8 accumulators (NR rows, KB keys), P V
   RG x NB x 2 = 8. */
#ifndef RPA_KERNELS_AVX2_ROWS_H
#define RPA_KERNELS_AVX2_ROWS_H

#include "vec.h"

#define ROWS_GROUP_3 0
#include "../common/rows.h"

enum { MK = RPA_MAX_STEP_KEYS };

/* e4m3fn in decode: K and V widen to their f16 codes (magnitude << 7 under
   the sign: three integer operations), whose value is the fp8 value / 256,
   and are used in that scale: the logit scale takes the 256 back and o
   accumulates p V / 256 until decode_end multiplies it by 256. Both are
   exact (powers of two), so the results are bitwise those of widening to
   the true values. A step whose K or V bytes hold a NaN code (0x7f / 0xff)
   runs with the NaN fixed up in the codes (E4M3_NAN), the others skip that
   (E4M3_RAW). Pseudo dtypes for the specialisations below. */
#define E4M3_RAW ((rpa_dtype)0x41)
#define E4M3_NAN ((rpa_dtype)0x42)

/* e4m3 bytes (zero-extended in 16-bit lanes) -> their f16 codes: the sign
   bit at 7 moves to 15 by adding it to itself before the shift. 8 and 16
   lanes. */
static ALWAYS_INLINE __m128i e4m3_codes_raw8(__m128i b) {
  return _mm_slli_epi16(_mm_add_epi16(b, _mm_and_si128(b, _mm_set1_epi16(0x80))), 7);
}
static ALWAYS_INLINE __m256i e4m3_codes_raw16(__m256i b) {
  return _mm256_slli_epi16(
      _mm256_add_epi16(b, _mm256_and_si256(b, _mm256_set1_epi16(0x80))), 7);
}

/* 8 elements of a row widened in the decode scale (dt may be E4M3_*). */
static ALWAYS_INLINE __m256 dwiden8(const void *src, rpa_dtype dt) {
  if (dt == E4M3_RAW || dt == E4M3_NAN) {
    const __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)src));
    return _mm256_cvtph_ps(dt == E4M3_NAN ? e4m3_to_f16_codes(b) : e4m3_codes_raw8(b));
  }
  return vf_widen(src, dt);
}

/* The first count (1..8) elements so, zero past them. */
static inline __m256 dwiden8_part(const void *src, rpa_dtype dt, int count) {
  if (dt != E4M3_RAW && dt != E4M3_NAN) return vf_widen_first(src, dt, count);
  if (count >= 8) return dwiden8(src, dt);
  uint8_t tmp[16] = {0};
  memcpy(tmp, src, (size_t)count);
  return dwiden8(tmp, dt);
}

/* 16 whole bf16 elements as f32 in "pair" order: lo = elements 0, 2, .., 14,
   hi = elements 1, 3, .., 15 (one shift, one AND). */
static ALWAYS_INLINE void widen_bf16_pairs(const void *src, __m256 *lo,
                                           __m256 *hi) {
  const __m256i w = _mm256_loadu_si256((const __m256i *)src);
  *lo = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  *hi = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32((int)0xffff0000u)));
}

/* The 16 dims of a K or V row from dim d (a whole block), widened: the two
   8-lane halves in the set's decode order. */
static ALWAYS_INLINE void widen_block16(const void *row, int d, rpa_dtype dt,
                                        __m256 *lo, __m256 *hi) {
  if (dt == RPA_BF16) {
    widen_bf16_pairs((const uint16_t *)row + d, lo, hi);
  } else if (dt == E4M3_RAW || dt == E4M3_NAN || dt == RPA_FP8_E5M2) {
    const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(
        (const __m128i *)((const uint8_t *)row + d)));
    const __m256i h = dt == RPA_FP8_E5M2 ? _mm256_slli_epi16(b, 8)
                      : dt == E4M3_NAN   ? e4m3_to_f16_codes16(b)
                                         : e4m3_codes_raw16(b);
    *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
  } else {
    *lo = dwiden8(elem_at(row, dt, d), dt);
    *hi = dwiden8(elem_at(row, dt, d + 8), dt);
  }
}

/* Half h (0: lo, 1: hi) of widen_block16. */
static ALWAYS_INLINE __m256 widen_half16(const void *row, int d, int h,
                                         rpa_dtype dt) {
  if (dt == RPA_BF16) {
    const __m256i w = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + d));
    return _mm256_castsi256_ps(h ? _mm256_and_si256(w, _mm256_set1_epi32((int)0xffff0000u))
                                 : _mm256_slli_epi32(w, 16));
  }
  return dwiden8(elem_at(row, dt, d + 8 * h), dt);
}

/* part[r * MK + c0 + j] = the 8-lane partial dot products of q row r with
   key c0 + j, j < KB; keys at or past n repeat key n - 1 (their logits are
   masked later). NR * KB = 8 accumulators, in named variables (GCC keeps
   small arrays of vectors on the stack): per half block (8 dims), q of the
   NR rows in registers, then each key's 8 dims widened once and used by
   every row. */
#define QK_FMA(a, qv, kv) a = _mm256_fmadd_ps(qv, kv, a)
/* q vectors held in registers: without this GCC folds each q load into
   every FMA that uses it, and the loads, not the FMAs, set the pace */
#define KEEP2(a, b) __asm__("" : "+x"(a), "+x"(b))
#define KEEP4(a, b, c, d) __asm__("" : "+x"(a), "+x"(b), "+x"(c), "+x"(d))
static ALWAYS_INLINE void qk_keys(const float *q, int ld,
                                    const void *const *krows, int c0, int n,
                                    int D, rpa_dtype dt, const int NR,
                                    const int KB, __m256 *part) {
  const void *kr[8];
#pragma GCC unroll 8
  for (int j = 0; j < KB; j++) kr[j] = krows[c0 + j < n ? c0 + j : n - 1];
  const float *q0 = q, *q1 = q + (NR > 1 ? ld : 0), *q2 = q + (NR > 2 ? 2 * (int64_t)ld : 0),
              *q3 = q + (NR > 3 ? 3 * (int64_t)ld : 0);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
         a6 = a0, a7 = a0;
  const int dfull = D / 16 * 16;
  /* one half block: x = offset of the 8 dims in q, k(j) = key j's 8 dims */
#define QK_HALF(x, K)                                                         \
  do {                                                                        \
    if (NR == 4) {                                                            \
      __m256 v0 = _mm256_loadu_ps(q0 + (x)), v1 = _mm256_loadu_ps(q1 + (x)); \
      __m256 v2 = _mm256_loadu_ps(q2 + (x)), v3 = _mm256_loadu_ps(q3 + (x)); \
      KEEP4(v0, v1, v2, v3);                                                  \
      __m256 kv = K(0);                                                       \
      QK_FMA(a0, v0, kv); QK_FMA(a2, v1, kv); QK_FMA(a4, v2, kv); QK_FMA(a6, v3, kv); \
      kv = K(1);                                                              \
      QK_FMA(a1, v0, kv); QK_FMA(a3, v1, kv); QK_FMA(a5, v2, kv); QK_FMA(a7, v3, kv); \
    } else if (NR == 2) {                                                     \
      __m256 v0 = _mm256_loadu_ps(q0 + (x)), v1 = _mm256_loadu_ps(q1 + (x));  \
      KEEP2(v0, v1);                                                          \
      __m256 kv = K(0); QK_FMA(a0, v0, kv); QK_FMA(a4, v1, kv);               \
      kv = K(1); QK_FMA(a1, v0, kv); QK_FMA(a5, v1, kv);                      \
      kv = K(2); QK_FMA(a2, v0, kv); QK_FMA(a6, v1, kv);                      \
      kv = K(3); QK_FMA(a3, v0, kv); QK_FMA(a7, v1, kv);                      \
    } else {                                                                  \
      const __m256 v0 = _mm256_loadu_ps(q0 + (x));                            \
      QK_FMA(a0, v0, K(0)); QK_FMA(a1, v0, K(1)); QK_FMA(a2, v0, K(2));       \
      QK_FMA(a3, v0, K(3)); QK_FMA(a4, v0, K(4)); QK_FMA(a5, v0, K(5));       \
      QK_FMA(a6, v0, K(6)); QK_FMA(a7, v0, K(7));                             \
    }                                                                         \
  } while (0)
  for (int d = 0; d < dfull; d += 16) {
#define K_LO(j) widen_half16(kr[j], d, 0, dt)
#define K_HI(j) widen_half16(kr[j], d, 1, dt)
    QK_HALF(d, K_LO);
    QK_HALF(d + 8, K_HI);
#undef K_LO
#undef K_HI
  }
  for (int d = dfull; d < D; d += 8) { /* the tail, natural order */
#define K_TAIL(j) dwiden8_part(elem_at(kr[j], dt, d), dt, D - d)
    QK_HALF(d, K_TAIL);
#undef K_TAIL
  }
#undef QK_HALF
  /* accumulator i is row i / KB, key i % KB */
  __m256 *pr = part + c0;
  if (NR == 4) {
    pr[0] = a0, pr[1] = a1, pr[MK] = a2, pr[MK + 1] = a3;
    pr[2 * MK] = a4, pr[2 * MK + 1] = a5, pr[3 * MK] = a6, pr[3 * MK + 1] = a7;
  } else if (NR == 2) {
    pr[0] = a0, pr[1] = a1, pr[2] = a2, pr[3] = a3;
    pr[MK] = a4, pr[MK + 1] = a5, pr[MK + 2] = a6, pr[MK + 3] = a7;
  } else {
    pr[0] = a0, pr[1] = a1, pr[2] = a2, pr[3] = a3;
    pr[4] = a4, pr[5] = a5, pr[6] = a6, pr[7] = a7;
  }
}
#undef QK_FMA
#undef KEEP2
#undef KEEP4

/* o[RG rows][NB blocks of 16 dims from d] += sum_c p[r][c] V[c] over the
   step's n keys; RG * NB * 2 = 8 accumulators. */
static ALWAYS_INLINE void pv_blocks(float *o, int ldo, const float *p,
                                           const void *const *vrows, int n,
                                           int d, rpa_dtype dt, const int RG,
                                           const int NB) {
  __m256 acc[8];
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++)
#pragma GCC unroll 8
    for (int v = 0; v < 2 * NB; v++)
      acc[r * 2 * NB + v] = _mm256_loadu_ps(o + (int64_t)r * ldo + d + 8 * v);
  for (int c = 0; c < n; c++) {
    __m256 vv[8];
#pragma GCC unroll 4
    for (int b = 0; b < NB; b++) widen_block16(vrows[c], d + 16 * b, dt, &vv[2 * b], &vv[2 * b + 1]);
#pragma GCC unroll 4
    for (int r = 0; r < RG; r++) {
      const __m256 pb = _mm256_broadcast_ss(p + r * MK + c);
#pragma GCC unroll 8
      for (int v = 0; v < 2 * NB; v++)
        acc[r * 2 * NB + v] = _mm256_fmadd_ps(pb, vv[v], acc[r * 2 * NB + v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++)
#pragma GCC unroll 8
    for (int v = 0; v < 2 * NB; v++)
      _mm256_storeu_ps(o + (int64_t)r * ldo + d + 8 * v, acc[r * 2 * NB + v]);
}

/* The same for one natural 8-dim vector from d (the tail past the whole
   blocks), V read no further than Dv. */
static ALWAYS_INLINE void pv_tail(float *o, int ldo, const float *p,
                                         const void *const *vrows, int n, int d,
                                         int Dv, rpa_dtype dt, const int RG) {
  __m256 acc[4];
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++) acc[r] = _mm256_loadu_ps(o + (int64_t)r * ldo + d);
  for (int c = 0; c < n; c++) {
    const __m256 vv = dwiden8_part(elem_at(vrows[c], dt, d), dt, Dv - d);
#pragma GCC unroll 4
    for (int r = 0; r < RG; r++)
      acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + r * MK + c), vv, acc[r]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++) _mm256_storeu_ps(o + (int64_t)r * ldo + d, acc[r]);
}

static ALWAYS_INLINE void pv_all(float *o, int ldo, const float *p,
                                    const void *const *vrows, int n, int Dv,
                                    rpa_dtype dt, const int RG) {
  const int NB = 4 / RG; /* 16-dim blocks per pass */
  const int dfull = Dv / 16 * 16;
  int d = 0;
  for (; d + 16 * NB <= dfull; d += 16 * NB)
    pv_blocks(o, ldo, p, vrows, n, d, dt, RG, NB);
  for (; d < dfull; d += 16) pv_blocks(o, ldo, p, vrows, n, d, dt, RG, 1);
  for (; d < Dv; d += 8) pv_tail(o, ldo, p, vrows, n, d, Dv, dt, RG);
}

/* The set's products for ../common/rows.h. */
static ALWAYS_INLINE void rows_qk(const float *q, int ld, const rows_keys *k,
                                  const int NR, const int DOT, vf *part) {
  (void)DOT; /* no bf16 dot product in this set */
  const int KB = 8 / NR; /* keys per QK block */
  for (int c0 = 0; c0 < k->n; c0 += KB) {
    if (k->first)
#pragma GCC unroll 8
    for (int j = 0; j < KB; j++) {
      const int c = c0 + j;
      if (k->n_next > 0) {
        /* the rows the engine names next, whole, into L2: far enough
           ahead to hide the memory latency behind this step */
        prefetch_row(k->knext, c, k->n_next, k->kbytes, 0);
        prefetch_row(k->vnext, c, k->n_next, k->vbytes, 0);
      } else {
        /* none named (the hardware streams the slot's rows): this step's
           K 8 keys ahead and its V now, into L1 */
        prefetch_row(k->krows, c + 8, k->n, k->kbytes, 1);
        prefetch_row(k->vrows, c, k->n, k->vbytes, 1);
      }
    }
    qk_keys(q, ld, k->krows, c0, k->n, k->D, k->dt, NR, KB, part);
  }
}

static ALWAYS_INLINE void rows_pv(float *o, int ldo, const float *p,
                                  const rows_keys *k, const int NR,
                                  const int DOT) {
  (void)DOT;
  pv_all(o, ldo, p, k->vrows, k->n, k->Dv, k->dt, NR);
}

/* The step for each dtype (rows_<dtype>.c); e4m3 in its f16-code scale,
   with or without the NaN fix-up. */
void rpa_rows_f32__avx2(const rpa_rows_args *a);
void rpa_rows_bf16__avx2(const rpa_rows_args *a);
void rpa_rows_f16__avx2(const rpa_rows_args *a);
void rpa_rows_e4m3__avx2(const rpa_rows_args *a, int nan_codes);
void rpa_rows_e5m2__avx2(const rpa_rows_args *a);

#endif
