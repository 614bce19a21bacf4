/* The avx2 decode step (kernels.h: decode_begin, decode_step, decode_end).

   Memory-bound: each K/V row is read once, widened in registers and used by
   every query row of the GQA group. Per (row, key) the dot product stays an
   8-lane partial sum until the step's keys are done; the partials of 8 keys
   are then summed in one transpose-reduce (reduce8), so there is no
   horizontal sum per key.

   Dims go in blocks of 16. A bf16 block is read as one 256-bit load whose
   32-bit lanes hold dims (2i, 2i + 1): a shift gives the even dims, an AND
   the odd ones. Decode items therefore work in a "blocked" dim order for
   bf16: within each whole 16-dim block, the even dims, then the odd ones;
   q is put in that order before an item's first step and o back after its
   last (decode_begin / decode_end). A dot product does not care, and P V
   only permutes o. Other dtypes, and dims past the last whole block, keep
   their natural order.

   Every (row, key) accumulator sees the same sequence of FMAs whatever the
   row grouping, so a row's result does not depend on its neighbours. */
#include "math_avx2.h"

enum { DK = RPA_AVX2_DECODE_KEYS };

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
  return widen8_full(src, dt);
}

/* The first count (1..8) elements so, zero past them. */
static inline __m256 dwiden8_part(const void *src, rpa_dtype dt, int count) {
  if (dt != E4M3_RAW && dt != E4M3_NAN) return widen8_part(src, dt, count);
  if (count >= 8) return dwiden8(src, dt);
  uint8_t tmp[16] = {0};
  memcpy(tmp, src, (size_t)count);
  return dwiden8(tmp, dt);
}

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
static void decode_order(float *x, int ld, int rows, int n, rpa_dtype dt,
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
    *lo = dwiden8(advance2(row, dt, d), dt);
    *hi = dwiden8(advance2(row, dt, d + 8), dt);
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
  return dwiden8(advance2(row, dt, d + 8 * h), dt);
}

/* Prefetches `bytes` of row i (i < n) with hint T0 or T1. */
static ALWAYS_INLINE void prefetch_row(const void *const *rows, int i, int n,
                                       int bytes, const int t0) {
  if (i >= n) return;
  const char *p = rows[i];
  for (int b = 0; b < bytes; b += 64) {
    if (t0)
      _mm_prefetch(p + b, _MM_HINT_T0);
    else
      _mm_prefetch(p + b, _MM_HINT_T1);
  }
}

/* part[r * DK + c0 + j] = the 8-lane partial dot products of q row r with
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
static ALWAYS_INLINE void decode_qk(const float *q, int ld,
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
#define K_TAIL(j) dwiden8_part(advance2(kr[j], dt, d), dt, D - d)
    QK_HALF(d, K_TAIL);
#undef K_TAIL
  }
#undef QK_HALF
  /* accumulator i is row i / KB, key i % KB */
  __m256 *pr = part + c0;
  if (NR == 4) {
    pr[0] = a0, pr[1] = a1, pr[DK] = a2, pr[DK + 1] = a3;
    pr[2 * DK] = a4, pr[2 * DK + 1] = a5, pr[3 * DK] = a6, pr[3 * DK + 1] = a7;
  } else if (NR == 2) {
    pr[0] = a0, pr[1] = a1, pr[2] = a2, pr[3] = a3;
    pr[DK] = a4, pr[DK + 1] = a5, pr[DK + 2] = a6, pr[DK + 3] = a7;
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
static ALWAYS_INLINE void decode_pv_blocks(float *o, int ldo, const float *p,
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
      const __m256 pb = _mm256_broadcast_ss(p + r * DK + c);
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
static ALWAYS_INLINE void decode_pv_tail(float *o, int ldo, const float *p,
                                         const void *const *vrows, int n, int d,
                                         int Dv, rpa_dtype dt, const int RG) {
  __m256 acc[4];
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++) acc[r] = _mm256_loadu_ps(o + (int64_t)r * ldo + d);
  for (int c = 0; c < n; c++) {
    const __m256 vv = dwiden8_part(advance2(vrows[c], dt, d), dt, Dv - d);
#pragma GCC unroll 4
    for (int r = 0; r < RG; r++)
      acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + r * DK + c), vv, acc[r]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++) _mm256_storeu_ps(o + (int64_t)r * ldo + d, acc[r]);
}

static ALWAYS_INLINE void decode_pv(float *o, int ldo, const float *p,
                                    const void *const *vrows, int n, int Dv,
                                    rpa_dtype dt, const int RG) {
  const int NB = 4 / RG; /* 16-dim blocks per pass */
  const int dfull = Dv / 16 * 16;
  int d = 0;
  for (; d + 16 * NB <= dfull; d += 16 * NB)
    decode_pv_blocks(o, ldo, p, vrows, n, d, dt, RG, NB);
  for (; d < dfull; d += 16) decode_pv_blocks(o, ldo, p, vrows, n, d, dt, RG, 1);
  for (; d < Dv; d += 8) decode_pv_tail(o, ldo, p, vrows, n, d, Dv, dt, RG);
}

/* One step of n <= 32 keys for NR (4, 2 or 1) query rows. */
static ALWAYS_INLINE void decode_rows(const float *q, int ld, float kmul,
                                      const int NR, const void *const *krows,
                                      const void *const *vrows, int n, int D,
                                      int Dv, rpa_dtype dt, float cap, float *m,
                                      float *l, float *o, int ldo,
                                      const void *const *knext,
                                      const void *const *vnext, int n_next) {
  __attribute__((aligned(32))) __m256 part[4 * DK];
  __attribute__((aligned(32))) float p[4 * DK];
  const int es = dt == RPA_F32 ? 4 : dt == RPA_BF16 || dt == RPA_F16 ? 2 : 1;
  const int KB = 8 / NR; /* keys per QK block */
  for (int c0 = 0; c0 < n; c0 += KB) {
#pragma GCC unroll 8
    for (int j = 0; j < KB; j++) {
      const int c = c0 + j;
      if (n_next > 0) {
        /* the rows the engine names next, whole, into L2: far enough
           ahead to hide the memory latency behind this step */
        prefetch_row(knext, c, n_next, D * es, 0);
        prefetch_row(vnext, c, n_next, Dv * es, 0);
      } else if (n_next == 0) {
        /* none named (the hardware streams the slot's rows): this step's
           K 8 keys ahead and its V now, into L1 */
        prefetch_row(krows, c + 8, n, D * es, 1);
        prefetch_row(vrows, c, n, Dv * es, 1);
      }
    }
    decode_qk(q, ld, krows, c0, n, D, dt, NR, KB, part);
  }
  const int nb = (n + 7) / 8;
  /* keys past n within the last 8: zero partials (never NaN garbage) */
  for (int r = 0; r < NR; r++)
    for (int c = (n + KB - 1) / KB * KB; c < nb * 8; c++) part[r * DK + c] = _mm256_setzero_ps();
  /* The softmax in phases over all NR rows, so that the rows' chains
     (reduce, max, exp, sum) overlap instead of running one after another. */
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  const __m256 vk = _mm256_set1_ps(kmul);
  __m256 bad[4], mx[4], sum[4];
  float mt[4];
  for (int r = 0; r < NR; r++) {
    /* s - s: 0 for a finite logit, NaN for a non-finite one (a NaN or an
       infinity in q or K), which then poisons the row's sum (kernels.h) */
    bad[r] = _mm256_setzero_ps();
    mx[r] = neg_inf;
    for (int b = 0; b < nb; b++) {
      const __m256 valid = _mm256_castsi256_ps(lane_mask8(n - 8 * b));
      __m256 x = _mm256_mul_ps(reduce8(part + r * DK + 8 * b), vk);
      bad[r] = _mm256_add_ps(bad[r], _mm256_and_ps(valid, _mm256_sub_ps(x, x)));
      if (cap > 0.0f)
        x = _mm256_mul_ps(_mm256_set1_ps(cap),
                          tanh8(_mm256_mul_ps(x, _mm256_set1_ps(1.0f / cap))));
      x = _mm256_blendv_ps(neg_inf, x, valid);
      _mm256_store_ps(p + r * DK + 8 * b, x);
      mx[r] = _mm256_max_ps(mx[r], x);
    }
  }
  for (int r = 0; r < NR; r++) mt[r] = hmax8(mx[r]);
  for (int r = 0; r < NR; r++)
    if (mt[r] > m[r]) {
      if (l[r] != 0.0f) {
        const float alpha = expf(m[r] - mt[r]);
        l[r] *= alpha;
        scale_row8(o + (int64_t)r * ldo, Dv, alpha);
      }
      m[r] = mt[r];
    }
  for (int r = 0; r < NR; r++) {
    const __m256 mr = _mm256_set1_ps(m[r]);
    sum[r] = bad[r];
    for (int b = 0; b < nb; b++) {
      const __m256 e = exp_neg8(_mm256_sub_ps(_mm256_load_ps(p + r * DK + 8 * b), mr));
      _mm256_store_ps(p + r * DK + 8 * b, e);
      sum[r] = _mm256_add_ps(sum[r], e);
    }
  }
  for (int r = 0; r < NR; r++) l[r] += hsum8(sum[r]);
  decode_pv(o, ldo, p, vrows, n, Dv, dt, NR);
}

static ALWAYS_INLINE void decode_step_dt(const rpa_rows_args *a,
                                         rpa_dtype dt) {
  const void *const *knext = a->knext, *const *vnext = a->vnext;
  int n_next = a->n_next;
  /* e4m3 codes are the values / 256: the logit scale takes it back */
  const float kmul = dt == E4M3_RAW || dt == E4M3_NAN ? a->kmul * 256.0f : a->kmul;
  /* the first row group prefetches; later ones (n_next < 0) find the
     rows in L1 */
  int r = 0;
#define ROWS(NR)                                                             \
  for (; r + NR <= a->rows; r += NR, n_next = -1)                            \
    decode_rows(a->q + (int64_t)r * a->ld, a->ld, kmul, NR, a->krows,        \
                a->vrows, a->n, a->D, a->Dv, dt, a->cap, a->m + r, a->l + r, \
                a->o + (int64_t)r * a->ldo, a->ldo, knext, vnext, n_next);
  ROWS(4)
  ROWS(2)
  ROWS(1)
#undef ROWS
}

void rpa_rows_step__avx2(const rpa_rows_args *a);
void rpa_rows_step__avx2(const rpa_rows_args *a) {
  if (a->n <= 0) return;
  switch (a->dtype) { /* one specialised copy per dtype */
    case RPA_F32: decode_step_dt(a, RPA_F32); break;
    case RPA_BF16: decode_step_dt(a, RPA_BF16); break;
    case RPA_F16: decode_step_dt(a, RPA_F16); break;
    case RPA_FP8_E4M3:
      if (e4m3_rows_nan(a->krows, a->n, a->D) || e4m3_rows_nan(a->vrows, a->n, a->Dv))
        decode_step_dt(a, E4M3_NAN);
      else
        decode_step_dt(a, E4M3_RAW);
      break;
    case RPA_FP8_E5M2: decode_step_dt(a, RPA_FP8_E5M2); break;
  }
}

void rpa_rows_begin__avx2(float *q, int ld, int rows, int D, rpa_dtype dt,
                            int bf16_ok);
void rpa_rows_begin__avx2(float *q, int ld, int rows, int D, rpa_dtype dt,
                            int bf16_ok) {
  (void)bf16_ok; /* no bf16 dot product in this set */
  decode_order(q, ld, rows, D, dt, 0);
}

void rpa_rows_end__avx2(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                          int bf16_ok);
void rpa_rows_end__avx2(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                          int bf16_ok) {
  (void)bf16_ok;
  decode_order(o, ldo, rows, Dv, dt, 1);
  if (dt == RPA_FP8_E4M3) /* o accumulated p V / 256 (see E4M3_RAW) */
    for (int r = 0; r < rows; r++) scale_row8(o + (int64_t)r * ldo, Dv, 256.0f);
}
