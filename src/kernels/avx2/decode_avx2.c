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
  } else if (dt == RPA_FP8_E4M3 || dt == RPA_FP8_E5M2) {
    const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(
        (const __m128i *)((const uint8_t *)row + d)));
    __m256i h;
    if (dt == RPA_FP8_E5M2) {
      h = _mm256_slli_epi16(b, 8);
      *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
      *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
    } else {
      h = e4m3_to_f16_codes16(b);
      const __m256 s = _mm256_set1_ps(256.0f);
      *lo = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), s);
      *hi = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), s);
    }
  } else {
    *lo = widen8_full(advance2(row, dt, d), dt);
    *hi = widen8_full(advance2(row, dt, d + 8), dt);
  }
}

/* Prefetches the first `lines` 64-byte lines of row i (i < n) with hint
   T0 or T1: straight-line code for rows of up to 4 lines. */
static ALWAYS_INLINE void prefetch_row(const void *const *rows, int i, int n,
                                       int lines, const int t0) {
  if (i >= n) return;
  const char *p = rows[i];
#define PF(off)                                \
  do {                                         \
    if (t0)                                    \
      _mm_prefetch(p + (off), _MM_HINT_T0);    \
    else                                       \
      _mm_prefetch(p + (off), _MM_HINT_T1);    \
  } while (0)
  PF(0);
  if (lines > 1) PF(64);
  if (lines > 2) PF(128);
  if (lines > 3) PF(192);
  for (int b = 4; b < lines; b++) PF(64 * b);
#undef PF
}

/* part[r * DK + c] = the 8-lane partial dot products of q row r with key
   c, for NR rows and one key. 8 accumulator chains (8 / NR per row, taking
   the half blocks of 8 dims in turn) keep both FMA pipes busy; q comes
   from L1 as the FMAs' memory operand, so each 16-dim block of the key is
   one load and its widening, then 2 * NR FMAs. The chains are summed in a
   fixed order, the same for every row grouping. */
static ALWAYS_INLINE void decode_qk1(const float *q, int ld, const void *krow,
                                     int D, rpa_dtype dt, const int NR,
                                     __m256 *part) {
  enum { A = 8 };
  const int per = A / NR; /* chains per row: 2, 4 or 8 */
  __m256 acc[A];
#pragma GCC unroll 8
  for (int i = 0; i < A; i++) acc[i] = _mm256_setzero_ps();
  const float *qp[4];
  for (int r = 0; r < NR; r++) qp[r] = q + (int64_t)r * ld;
  const int dfull = D / 16 * 16;
  /* one 16-dim block from d into chains j and j + 1 of each row */
#define QK_BLOCK(d, j)                                                     \
  do {                                                                     \
    __m256 lo, hi;                                                         \
    widen_block16(krow, d, dt, &lo, &hi);                                  \
    for (int r = 0; r < NR; r++) {                                         \
      acc[r * per + (j)] = _mm256_fmadd_ps(_mm256_loadu_ps(qp[r] + (d)), lo, \
                                           acc[r * per + (j)]);            \
      acc[r * per + (j) + 1] = _mm256_fmadd_ps(                            \
          _mm256_loadu_ps(qp[r] + (d) + 8), hi, acc[r * per + (j) + 1]);   \
    }                                                                      \
  } while (0)
  const int U = per / 2; /* blocks per round: every chain once */
  int d = 0;
  for (; d + 16 * U <= dfull; d += 16 * U) {
    QK_BLOCK(d, 0);
    if (U > 1) QK_BLOCK(d + 16, 2);
    if (U > 2) {
      QK_BLOCK(d + 32, 4);
      QK_BLOCK(d + 48, 6);
    }
  }
  for (; d < dfull; d += 16) QK_BLOCK(d, 0);
#undef QK_BLOCK
  for (; d < D; d += 8) { /* the tail, natural order */
    const __m256 kv = widen8_part(advance2(krow, dt, d), dt, D - d);
    for (int r = 0; r < NR; r++)
      acc[r * per] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (int64_t)r * ld + d),
                                     kv, acc[r * per]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < NR; r++) {
    __m256 *a = acc + r * per;
    if (per == 8) {
      a[0] = _mm256_add_ps(a[0], a[4]), a[1] = _mm256_add_ps(a[1], a[5]);
      a[2] = _mm256_add_ps(a[2], a[6]), a[3] = _mm256_add_ps(a[3], a[7]);
    }
    if (per >= 4) a[0] = _mm256_add_ps(a[0], a[2]), a[1] = _mm256_add_ps(a[1], a[3]);
    part[r * DK] = _mm256_add_ps(a[0], a[1]);
  }
}

/* o[RG rows][NB blocks of 16 dims from d] += sum_c p[r][c] V[c] over the
   step's n keys; RG * NB * 2 = 8 accumulators. */
static ALWAYS_INLINE void decode_pv_blocks(float *o, int ldo, const __m256 *pb,
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
#pragma GCC unroll 8
      for (int v = 0; v < 2 * NB; v++)
        acc[r * 2 * NB + v] = _mm256_fmadd_ps(pb[r * DK + c], vv[v], acc[r * 2 * NB + v]);
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
static ALWAYS_INLINE void decode_pv_tail(float *o, int ldo, const __m256 *pb,
                                         const void *const *vrows, int n, int d,
                                         int Dv, rpa_dtype dt, const int RG) {
  __m256 acc[4];
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++) acc[r] = _mm256_loadu_ps(o + (int64_t)r * ldo + d);
  for (int c = 0; c < n; c++) {
    const __m256 vv = widen8_part(advance2(vrows[c], dt, d), dt, Dv - d);
#pragma GCC unroll 4
    for (int r = 0; r < RG; r++)
      acc[r] = _mm256_fmadd_ps(pb[r * DK + c], vv, acc[r]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++) _mm256_storeu_ps(o + (int64_t)r * ldo + d, acc[r]);
}

static ALWAYS_INLINE void decode_pv(float *o, int ldo, const __m256 *pb,
                                    const void *const *vrows, int n, int Dv,
                                    rpa_dtype dt, const int RG) {
  const int NB = 4 / RG; /* 16-dim blocks per pass */
  const int dfull = Dv / 16 * 16;
  int d = 0;
  for (; d + 16 * NB <= dfull; d += 16 * NB)
    decode_pv_blocks(o, ldo, pb, vrows, n, d, dt, RG, NB);
  for (; d < dfull; d += 16) decode_pv_blocks(o, ldo, pb, vrows, n, d, dt, RG, 1);
  for (; d < Dv; d += 8) decode_pv_tail(o, ldo, pb, vrows, n, d, Dv, dt, RG);
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
  const int klines = (D * es + 63) / 64, vlines = (Dv * es + 63) / 64;
  for (int c = 0; c < n; c++) {
    {
      if (n_next > 0) {
        /* the rows the engine names next, whole, into L2: far enough
           ahead to hide the memory latency behind this step */
        prefetch_row(knext, c, n_next, klines, 0);
        prefetch_row(vnext, c, n_next, vlines, 0);
      } else if (n_next == 0) {
        /* none named (the hardware streams the slot's rows): this step's
           K 8 keys ahead and its V now, into L1 */
        prefetch_row(krows, c + 8, n, klines, 1);
        prefetch_row(vrows, c, n, vlines, 1);
      }
    }
    decode_qk1(q, ld, krows[c], D, dt, NR, part + c);
  }
  const int nb = (n + 7) / 8;
  /* keys past n within the last 8: zero partials (never NaN garbage) */
  for (int r = 0; r < NR; r++)
    for (int c = n; c < nb * 8; c++) part[r * DK + c] = _mm256_setzero_ps();
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
  /* each weight broadcast once, then the FMAs' memory operand in P V */
  for (int r = 0; r < NR; r++)
    for (int c = 0; c < n; c++) part[r * DK + c] = _mm256_broadcast_ss(p + r * DK + c);
  decode_pv(o, ldo, part, vrows, n, Dv, dt, NR);
}

static ALWAYS_INLINE void decode_step_dt(const rpa_decode_step_args *a,
                                         rpa_dtype dt) {
  const void *const *knext = a->knext, *const *vnext = a->vnext;
  int n_next = a->n_next;
  /* the first row group prefetches; later ones (n_next < 0) find the
     rows in L1 */
  int r = 0;
#define ROWS(NR)                                                             \
  for (; r + NR <= a->rows; r += NR, n_next = -1)                            \
    decode_rows(a->q + (int64_t)r * a->ld, a->ld, a->kmul, NR, a->krows,     \
                a->vrows, a->n, a->D, a->Dv, dt, a->cap, a->m + r, a->l + r, \
                a->o + (int64_t)r * a->ldo, a->ldo, knext, vnext, n_next);
  ROWS(4)
  ROWS(2)
  ROWS(1)
#undef ROWS
}

void rpa_decode_step__avx2(const rpa_decode_step_args *a);
void rpa_decode_step__avx2(const rpa_decode_step_args *a) {
  if (a->n <= 0) return;
  switch (a->dtype) { /* one specialised copy per dtype */
    case RPA_F32: decode_step_dt(a, RPA_F32); break;
    case RPA_BF16: decode_step_dt(a, RPA_BF16); break;
    case RPA_F16: decode_step_dt(a, RPA_F16); break;
    case RPA_FP8_E4M3: decode_step_dt(a, RPA_FP8_E4M3); break;
    case RPA_FP8_E5M2: decode_step_dt(a, RPA_FP8_E5M2); break;
  }
}

void rpa_decode_begin__avx2(float *q, int ld, int rows, int D, rpa_dtype dt);
void rpa_decode_begin__avx2(float *q, int ld, int rows, int D, rpa_dtype dt) {
  decode_order(q, ld, rows, D, dt, 0);
}

void rpa_decode_end__avx2(float *o, int ldo, int rows, int Dv, rpa_dtype dt);
void rpa_decode_end__avx2(float *o, int ldo, int rows, int Dv, rpa_dtype dt) {
  decode_order(o, ldo, rows, Dv, dt, 1);
}
