/* The avx512 prefill step (kernels.h: prefill_begin, prefill_step).

   Compute-bound: rows of the item lie along the vector (S^T = K Q^T), so the
   K tile needs no transpose (keys are broadcast from a widened row-major
   copy), and the online softmax is vertical: a row's max, sum and rescale
   are lane-wise, with no horizontal reduction at all. With the bf16 dot
   product allowed (rpa_block.bf16_ok) and bf16 K, both products run
   on vdpbf16ps: q staged as bf16 pairs, V packed into key pairs per step,
   the softmax weights rounded to bf16. */
#include "math_avx512.h"

/* dst[i][0 .. ld) = widen(rows[i][0 .. cols)), zero past cols; ld is a
   multiple of 16. */
static ALWAYS_INLINE void widen_rows_dt(float *dst, int ld,
                                        const void *const *rows, int n,
                                        int cols, rpa_dtype dt) {
  for (int i = 0; i < n; i++) {
    float *out = dst + (int64_t)i * ld;
    int d = 0;
    for (; d + 16 <= cols; d += 16) _mm512_storeu_ps(out + d, widen_full(advance(rows[i], dt, d), dt));
    if (d < cols) _mm512_storeu_ps(out + d, widen16(advance(rows[i], dt, d), dt, cols - d));
    for (d = (cols + 15) / 16 * 16; d < ld; d += 16) _mm512_storeu_ps(out + d, _mm512_setzero_ps());
  }
}

static void widen_rows(float *dst, int ld, const void *const *rows, int n,
                       int cols, rpa_dtype dt) {
  switch (dt) {
    case RPA_F32: widen_rows_dt(dst, ld, rows, n, cols, RPA_F32); break;
    case RPA_BF16: widen_rows_dt(dst, ld, rows, n, cols, RPA_BF16); break;
    case RPA_F16: widen_rows_dt(dst, ld, rows, n, cols, RPA_F16); break;
    default: widen_rows_dt(dst, ld, rows, n, cols, dt); break;
  }
}

static void stage_queries(float *qt, int ldr, const float *q, int ld, int rows,
                          int D, float mul, int bf16_pairs) {
  if (bf16_pairs) { /* [D/2][ldr][2] bf16, unscaled; exact by contract */
    uint16_t *qp = (uint16_t *)qt;
    for (int d2 = 0; d2 < D / 2; d2++) {
      uint16_t *dst = qp + (int64_t)d2 * ldr * 2;
      for (int r = 0; r < rows; r++) {
        dst[2 * r] = (uint16_t)(rpa_bits(q[(int64_t)r * ld + 2 * d2]) >> 16);
        dst[2 * r + 1] = (uint16_t)(rpa_bits(q[(int64_t)r * ld + 2 * d2 + 1]) >> 16);
      }
      for (int r = rows; r < ldr; r++) dst[2 * r] = dst[2 * r + 1] = 0;
    }
    return;
  }
  for (int d = 0; d < D; d++) {
    float *dst = qt + (int64_t)d * ldr;
    for (int r = 0; r < rows; r++) dst[r] = q[(int64_t)r * ld + d] * mul;
    for (int r = rows; r < ldr; r++) dst[r] = 0.0f;
  }
}

/* st[c0 + i][rv0*16 + 16 j ..] = sum_d kp[c0 + i][d] * qt[d][..] for
   NK keys x NV row vectors (kp: f32 K rows). */
static ALWAYS_INLINE void prefill_qk_block(float *st, int ldr, const float *qt,
                                           const float *const *kp, int D,
                                           int c0, int rv0, const int NK,
                                           const int NV) {
  __m512 acc[4][4];
#pragma GCC unroll 4
  for (int i = 0; i < NK; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_ps();
  const float *qb = qt + rv0 * 16;
  const float *kb[4];
#pragma GCC unroll 4
  for (int i = 0; i < NK; i++) kb[i] = kp[c0 + i];
  for (int d = 0; d < D; d++) {
    __m512 qv[4];
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) qv[j] = _mm512_loadu_ps(qb + (int64_t)d * ldr + 16 * j);
#pragma GCC unroll 4
    for (int i = 0; i < NK; i++) {
      const __m512 kv = _mm512_set1_ps(kb[i][d]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; j++) acc[i][j] = _mm512_fmadd_ps(kv, qv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < NK; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++)
      _mm512_storeu_ps(st + (int64_t)(c0 + i) * ldr + rv0 * 16 + 16 * j, acc[i][j]);
}

/* The same on vdpbf16ps: qt as bf16 pairs, K pairs broadcast straight from
   the bf16 K rows (no widening). */
static ALWAYS_INLINE void prefill_qk_block_bf16(float *st, int ldr,
                                                const uint32_t *qp,
                                                const void *const *krows, int D,
                                                int c0, int rv0, const int NK,
                                                const int NV) {
  __m512 acc[4][4];
#pragma GCC unroll 4
  for (int i = 0; i < NK; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_ps();
  const uint32_t *kr[4];
#pragma GCC unroll 4
  for (int i = 0; i < NK; i++) kr[i] = (const uint32_t *)krows[c0 + i];
  for (int d2 = 0; d2 < D / 2; d2++) {
    __m512bh qv[4];
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++)
      qv[j] = (__m512bh)_mm512_loadu_si512(qp + (int64_t)d2 * ldr + rv0 * 16 + 16 * j);
#pragma GCC unroll 4
    for (int i = 0; i < NK; i++) {
      uint32_t kpair;
      memcpy(&kpair, kr[i] + d2, sizeof kpair);
      const __m512bh kv = (__m512bh)_mm512_set1_epi32((int)kpair);
#pragma GCC unroll 4
      for (int j = 0; j < NV; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], qv[j], kv);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < NK; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++)
      _mm512_storeu_ps(st + (int64_t)(c0 + i) * ldr + rv0 * 16 + 16 * j, acc[i][j]);
}

/* o[4 rows][NV x 16 from d0] += sum_c st[c][r] vp[c][..] (p transposed;
   vp: f32 V rows). */
static ALWAYS_INLINE void prefill_pv_block(float *o, int ldo, const float *st,
                                           int ldr, int r0,
                                           const float *const *vp, int n,
                                           int d0, const int NV) {
  __m512 acc[4][4];
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) acc[i][j] = _mm512_loadu_ps(o + (int64_t)(r0 + i) * ldo + d0 + 16 * j);
  for (int c = 0; c < n; c++) {
    __m512 vv[4];
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) vv[j] = _mm512_loadu_ps(vp[c] + d0 + 16 * j);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
      const __m512 pb = _mm512_set1_ps(st[(int64_t)c * ldr + r0 + i]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; j++) acc[i][j] = _mm512_fmadd_ps(pb, vv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) _mm512_storeu_ps(o + (int64_t)(r0 + i) * ldo + d0 + 16 * j, acc[i][j]);
}

/* PV on vdpbf16ps: o[4 rows][NV x 16 from d0] += sum over key pairs of
   pp[pair][r] (two bf16 weights) . vp[pair][..] (two bf16 V rows
   interleaved). */
static ALWAYS_INLINE void prefill_pv_block_bf16(float *o, int ldo,
                                                const uint32_t *pp, int ldr,
                                                int r0, const uint32_t *vp,
                                                int npairs, int d0, const int NV) {
  __m512 acc[4][4];
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) acc[i][j] = _mm512_loadu_ps(o + (int64_t)(r0 + i) * ldo + d0 + 16 * j);
  for (int c2 = 0; c2 < npairs; c2++) {
    __m512bh vv[4];
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++)
      vv[j] = (__m512bh)_mm512_loadu_si512(vp + (int64_t)c2 * ldo + d0 + 16 * j);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
      const __m512bh pb = (__m512bh)_mm512_set1_epi32((int)pp[(int64_t)c2 * ldr + r0 + i]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], pb, vv[j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) _mm512_storeu_ps(o + (int64_t)(r0 + i) * ldo + d0 + 16 * j, acc[i][j]);
}

/* vp[c/2][d] = (V[c][d], V[c+1][d]) as bf16 pairs, zero past n and Dv. */
static void pack_v_pairs(uint32_t *vp, int ldo, const void *const *vrows, int n,
                         int Dv) {
  const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                          39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(16));
  for (int c = 0; c < n; c += 2) {
    uint32_t *dst = vp + (int64_t)(c / 2) * ldo;
    for (int d0 = 0; d0 < ldo; d0 += 32) {
      const int left = Dv - d0;
      const __mmask32 m = left >= 32 ? (__mmask32)0xffffffffu
                          : left <= 0 ? 0 : (__mmask32)((1u << left) - 1);
      const __m512i a = _mm512_maskz_loadu_epi16(m, (const uint16_t *)vrows[c] + d0);
      const __m512i b = c + 1 < n ? _mm512_maskz_loadu_epi16(m, (const uint16_t *)vrows[c + 1] + d0)
                                  : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + d0, _mm512_permutex2var_epi16(a, lo_idx, b));
      if (d0 + 16 < ldo)
        _mm512_storeu_si512(dst + d0 + 16, _mm512_permutex2var_epi16(a, hi_idx, b));
    }
  }
}

static void step(const float *qt, int pairs, float mul, int ldr,
                 int rows, const int32_t *pos,
                         int64_t c, int n, int full, int causal, int32_t window,
                         float cap, const void *const *krows,
                         const void *const *vrows, int D, int Dv, rpa_dtype dt,
                         float *kbuf, int ldk, float *vbuf, float *st, float *m,
                         float *l, float *o, int ldo) {
  /* K and V tiles as f32 rows: f32 rows as they lie (V whole vectors
     only), others widened once (row-major, zero past D); on the bf16 path
     V is packed into key pairs instead. */
  const float *kp[32], *vp[32];
  if (!pairs) {
    const int direct_k = dt == RPA_F32, direct_v = dt == RPA_F32 && Dv % 16 == 0;
    if (!direct_k) widen_rows(kbuf, ldk, krows, n, D, dt);
    if (!direct_v) widen_rows(vbuf, ldo, vrows, n, Dv, dt);
    for (int i = 0; i < n; i++) {
      kp[i] = direct_k ? (const float *)krows[i] : kbuf + (int64_t)i * ldk;
      vp[i] = direct_v ? (const float *)vrows[i] : vbuf + (int64_t)i * ldo;
    }
  } else {
    pack_v_pairs((uint32_t *)vbuf, ldo, vrows, n, Dv);
  }
  const int nrv = (rows + 15) / 16;
  if (pairs) {
    const uint32_t *qp = (const uint32_t *)qt;
    for (int rv0 = 0; rv0 < nrv; rv0 += 4) {
      const int nv = nrv - rv0 < 4 ? nrv - rv0 : 4;
      int c0 = 0;
      if (nv == 4) {
        for (; c0 + 4 <= n; c0 += 4) prefill_qk_block_bf16(st, ldr, qp, krows, D, c0, rv0, 4, 4);
        for (; c0 < n; c0++) prefill_qk_block_bf16(st, ldr, qp, krows, D, c0, rv0, 1, 4);
      } else {
        for (; c0 < n; c0++)
          for (int j = 0; j < nv; j++) prefill_qk_block_bf16(st, ldr, qp, krows, D, c0, rv0 + j, 1, 1);
      }
    }
  }
  /* S^T: keys in blocks of 4, row vectors in blocks of 4. */
  for (int rv0 = 0; !pairs && rv0 < nrv; rv0 += 4) {
    const int nv = nrv - rv0 < 4 ? nrv - rv0 : 4;
    int c0 = 0;
    if (nv == 4) {
      for (; c0 + 4 <= n; c0 += 4) prefill_qk_block(st, ldr, qt, kp, D, c0, rv0, 4, 4);
      for (; c0 < n; c0++) prefill_qk_block(st, ldr, qt, kp, D, c0, rv0, 1, 4);
    } else {
      for (; c0 < n; c0++)
        for (int j = 0; j < nv; j++) prefill_qk_block(st, ldr, qt, kp, D, c0, rv0 + j, 1, 1);
    }
  }
  /* Vertical online softmax per 16 rows. */
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  for (int j = 0; j < nrv; j++) {
    const int r0 = j * 16;
    const int cnt = rows - r0 < 16 ? rows - r0 : 16;
    const __mmask16 live = cnt == 16 ? (__mmask16)0xffff : (__mmask16)((1u << cnt) - 1);
    const __m512i pv_ = _mm512_maskz_loadu_epi32(live, pos + r0);
    __m512 mt = neg_inf;
    /* s - s over the visible logits: 0, or NaN where q or K held a NaN or
       an infinity; it poisons the row's sum (kernels.h) */
    __m512 bad = _mm512_setzero_ps();
    for (int i = 0; i < n; i++) {
      float *sp = st + (int64_t)i * ldr + r0;
      __m512 s = _mm512_loadu_ps(sp);
      if (pairs) s = _mm512_mul_ps(s, _mm512_set1_ps(mul));
      __mmask16 vis = live;
      if (!full && causal) {
        const __m512i key = _mm512_set1_epi32((int)(c + i));
        vis &= _mm512_cmple_epi32_mask(key, pv_);
        if (window > 0)
          vis &= _mm512_cmplt_epi32_mask(_mm512_sub_epi32(pv_, key), _mm512_set1_epi32(window));
      }
      bad = _mm512_add_ps(bad, _mm512_maskz_sub_ps(vis, s, s));
      if (cap > 0.0f)
        s = _mm512_mul_ps(_mm512_set1_ps(cap), tanh16(_mm512_mul_ps(s, _mm512_set1_ps(1.0f / cap))));
      if (!full && causal) s = _mm512_mask_mov_ps(neg_inf, vis | (__mmask16)~live, s);
      _mm512_storeu_ps(sp, s);
      mt = _mm512_max_ps(mt, s);
    }
    const __m512 m_old = _mm512_maskz_loadu_ps(live, m + r0);
    const __m512 m_new = _mm512_max_ps(m_old, mt);
    /* rows with nothing visible yet keep m = -inf: use 0 to avoid NaN */
    const __mmask16 seen = _mm512_cmp_ps_mask(m_new, neg_inf, _CMP_NEQ_OQ);
    const __m512 m_use = _mm512_maskz_mov_ps(seen, m_new);
    __m512 sum = _mm512_setzero_ps();
    for (int i = 0; i < n; i++) {
      float *sp = st + (int64_t)i * ldr + r0;
      const __m512 e = exp_neg16(_mm512_sub_ps(_mm512_loadu_ps(sp), m_use));
      _mm512_storeu_ps(sp, e);
      sum = _mm512_add_ps(sum, e);
    }
    const __m512 alpha = exp_neg16(_mm512_sub_ps(m_old, m_use));
    const __m512 l_old = _mm512_maskz_loadu_ps(live, l + r0);
    _mm512_mask_storeu_ps(l + r0, live, _mm512_fmadd_ps(l_old, alpha, _mm512_add_ps(sum, bad)));
    _mm512_mask_storeu_ps(m + r0, live, m_new);
    /* lazy rescale: only rows whose maximum rose and that hold something */
    __mmask16 grow = _mm512_cmp_ps_mask(m_new, m_old, _CMP_GT_OQ) &
                     _mm512_cmp_ps_mask(l_old, _mm512_setzero_ps(), _CMP_NEQ_OQ) & live;
    __attribute__((aligned(64))) float al[16];
    _mm512_store_ps(al, alpha);
    while (grow) {
      const int b = __builtin_ctz(grow);
      grow &= (__mmask16)(grow - 1);
      scale_row(o + (int64_t)(r0 + b) * ldo, Dv, al[b]);
    }
  }
  /* A masked (row, key) has weight 0, and the blocked P V below multiplies
     it all the same: 0 times a NaN or an infinity in V would reach rows that
     do not see that key. On the steps a mask cuts (a few per item), a V with
     such a value takes a path that adds each row's visible keys only. */
  if (!full && causal && !rpa_rows_finite(vrows, n, Dv, dt)) {
    for (int r = 0; r < rows; r++)
      for (int i = 0; i < n; i++) {
        const int64_t key = c + i;
        if (key > pos[r] || (window > 0 && pos[r] - key >= window)) continue;
        const float p = st[(int64_t)i * ldr + r];
        float *orow = o + (int64_t)r * ldo;
        for (int d = 0; d < Dv; d++) orow[d] += p * rpa_widen(vrows[i], dt, d);
      }
    return;
  }
  const int dv16 = (Dv + 15) / 16 * 16;
  if (pairs) { /* weights to bf16 pairs in place: pp[c/2][r] over st */
    uint32_t *pp = (uint32_t *)st;
    const int npairs = (n + 1) / 2;
    for (int c2 = 0; c2 < npairs; c2++)
      for (int r0 = 0; r0 < nrv * 16; r0 += 16) {
        const __m512 a = _mm512_loadu_ps(st + (int64_t)(2 * c2) * ldr + r0);
        const __m512 b = 2 * c2 + 1 < n ? _mm512_loadu_ps(st + (int64_t)(2 * c2 + 1) * ldr + r0)
                                        : _mm512_setzero_ps();
        const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
        const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b));
        _mm512_storeu_si512(pp + (int64_t)c2 * ldr + r0, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
      }
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      int d0 = 0;
      for (; d0 + 64 <= dv16; d0 += 64)
        prefill_pv_block_bf16(o, ldo, pp, ldr, r, (const uint32_t *)vbuf, npairs, d0, 4);
      for (; d0 < dv16; d0 += 16)
        prefill_pv_block_bf16(o, ldo, pp, ldr, r, (const uint32_t *)vbuf, npairs, d0, 1);
    }
    for (; r < rows; r++)
      for (int d0 = 0; d0 < dv16; d0 += 16) {
        __m512 acc = _mm512_loadu_ps(o + (int64_t)r * ldo + d0);
        for (int c2 = 0; c2 < npairs; c2++)
          acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_set1_epi32((int)pp[(int64_t)c2 * ldr + r]),
                                 (__m512bh)_mm512_loadu_si512((const uint32_t *)vbuf + (int64_t)c2 * ldo + d0));
        _mm512_storeu_ps(o + (int64_t)r * ldo + d0, acc);
      }
    return;
  }
  /* O += P V, 4 rows x 64 dims at a time. */
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    int d0 = 0;
    for (; d0 + 64 <= dv16; d0 += 64) prefill_pv_block(o, ldo, st, ldr, r, vp, n, d0, 4);
    for (; d0 < dv16; d0 += 16) prefill_pv_block(o, ldo, st, ldr, r, vp, n, d0, 1);
  }
  for (; r < rows; r++)
    for (int d0 = 0; d0 < dv16; d0 += 16) {
      __m512 acc = _mm512_loadu_ps(o + (int64_t)r * ldo + d0);
      for (int i = 0; i < n; i++)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(st[(int64_t)i * ldr + r]),
                              _mm512_loadu_ps(vp[i] + d0), acc);
      _mm512_storeu_ps(o + (int64_t)r * ldo + d0, acc);
    }
}

/* The bf16 dot product serves when q holds bf16 values exactly, K is bf16
   and dims pair up. */
static int use_pairs(const rpa_block *it) {
  return it->bf16_ok && it->dtype == RPA_BF16 && it->D % 2 == 0;
}

void rpa_block_begin__avx512(const rpa_block *it);
void rpa_block_begin__avx512(const rpa_block *it) {
  stage_queries(it->qs, it->ldr, it->q, it->ld, it->rows, it->D, it->kmul,
                use_pairs(it));
}

void rpa_block_step__avx512(const rpa_block_args *a);
void rpa_block_step__avx512(const rpa_block_args *a) {
  const rpa_block *it = a->block;
  const int ldk = it->ld, ldo = a->ldo;
  float *kbuf = a->work;                   /* [32][ld] */
  float *vbuf = kbuf + 32 * (size_t)ldk;   /* [32][ldo] */
  float *st = vbuf + 32 * (size_t)ldo;     /* [32][ldr] */
  step(it->qs, use_pairs(it), it->kmul, it->ldr, it->rows, it->pos, a->c, a->n,
       a->full, it->causal, it->window, it->cap, a->krows, a->vrows, it->D,
       it->Dv, it->dtype, kbuf, ldk, vbuf, st, a->m, a->l, a->o, ldo);
}
