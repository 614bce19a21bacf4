/* The avx2 prefill step (kernels.h: prefill_begin, prefill_step).

   Compute-bound. Query rows lie along the vector for S^T = K Q^T: q is
   staged once per item transposed and scaled, qt [D][ldr], and a 6-key x
   16-row register tile (12 accumulators, 2 q vectors, 1 broadcast K
   element: 15 of the 16 ymm registers) runs down the dims with K
   broadcast from f32 rows (the cache rows themselves for f32, else widened
   once per step). The online softmax is then vertical: a row's max, sum
   and rescale are lane-wise over the keys of the step, with no horizontal
   reduction, and the maximum's rescale of o is lazy (only rows whose
   maximum rose and that hold something). O += P V runs a 6-row x 16-dim
   tile over the keys, P broadcast from S^T, V from f32 rows.

   Every (row, key) logit and every (row, dim) output element sees the
   same sequence of FMAs whatever tile it falls in. */
#include "math_avx2.h"

enum {
  PK = RPA_AVX2_PREFILL_KEYS, /* a multiple of TK, at most 32 */
  TK = 6,  /* keys per S^T tile */
  TR = 6,  /* rows per P V tile */
};

/* dst[i][0 .. cols) = widen(rows[i][0 .. cols)), zero from cols to the next
   multiple of 8. */
static ALWAYS_INLINE void widen_rows_dt(float *dst, int ld,
                                        const void *const *rows, int n,
                                        int cols, rpa_dtype dt) {
  for (int i = 0; i < n; i++) {
    float *out = dst + (int64_t)i * ld;
    int d = 0;
    for (; d + 8 <= cols; d += 8) _mm256_storeu_ps(out + d, widen8_full(advance2(rows[i], dt, d), dt));
    if (d < cols) _mm256_storeu_ps(out + d, widen8_part(advance2(rows[i], dt, d), dt, cols - d));
  }
}

static void widen_rows(float *dst, int ld, const void *const *rows, int n,
                       int cols, rpa_dtype dt) {
  switch (dt) {
    case RPA_F32: widen_rows_dt(dst, ld, rows, n, cols, RPA_F32); break;
    case RPA_BF16: widen_rows_dt(dst, ld, rows, n, cols, RPA_BF16); break;
    case RPA_F16: widen_rows_dt(dst, ld, rows, n, cols, RPA_F16); break;
    case RPA_FP8_E4M3: widen_rows_dt(dst, ld, rows, n, cols, RPA_FP8_E4M3); break;
    case RPA_FP8_E5M2: widen_rows_dt(dst, ld, rows, n, cols, RPA_FP8_E5M2); break;
  }
}

/* st[c][r0 .. r0 + 16) = sum_d kp[c][d] qt[d][r0 ..] for the TK keys of kp
   (all TK stored: st has room for 32 keys, and a step's spare keys past n
   are never read). */
static ALWAYS_INLINE void qk_tile(float *st, int ldr, const float *qt,
                                  const float *const *kp, int D, int r0) {
  __m256 acc[TK][2];
#pragma GCC unroll 6
  for (int i = 0; i < TK; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  const float *qb = qt + r0;
  const float *k0 = kp[0], *k1 = kp[1], *k2 = kp[2], *k3 = kp[3], *k4 = kp[4],
              *k5 = kp[5];
  for (int d = 0; d < D; d++) {
    const __m256 q0 = _mm256_loadu_ps(qb + (int64_t)d * ldr);
    const __m256 q1 = _mm256_loadu_ps(qb + (int64_t)d * ldr + 8);
    __m256 kv;
#define KEY(i, kr)                                       \
  kv = _mm256_broadcast_ss(kr + d);                      \
  acc[i][0] = _mm256_fmadd_ps(kv, q0, acc[i][0]);        \
  acc[i][1] = _mm256_fmadd_ps(kv, q1, acc[i][1]);
    KEY(0, k0) KEY(1, k1) KEY(2, k2) KEY(3, k3) KEY(4, k4) KEY(5, k5)
#undef KEY
  }
#pragma GCC unroll 6
  for (int i = 0; i < TK; i++) {
    _mm256_storeu_ps(st + (int64_t)i * ldr + r0, acc[i][0]);
    _mm256_storeu_ps(st + (int64_t)i * ldr + r0 + 8, acc[i][1]);
  }
}

/* o[r0 + i][d0 + 8 v ..] += sum_c st[c][r0 + i] vp[c][d0 + 8 v ..] for
   i < RG, v < NV, c < n. */
static ALWAYS_INLINE void pv_tile(float *o, int ldo, const float *st, int ldr,
                                  int r0, const float *const *vp, int n, int d0,
                                  const int RG, const int NV) {
  __m256 acc[TR][2];
#pragma GCC unroll 6
  for (int i = 0; i < RG; i++)
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) acc[i][v] = _mm256_loadu_ps(o + (int64_t)(r0 + i) * ldo + d0 + 8 * v);
  const float *sp = st + r0;
  for (int c = 0; c < n; c++) {
    __m256 vv[2];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) vv[v] = _mm256_loadu_ps(vp[c] + d0 + 8 * v);
#pragma GCC unroll 6
    for (int i = 0; i < RG; i++) {
      const __m256 pb = _mm256_broadcast_ss(sp + (int64_t)c * ldr + i);
#pragma GCC unroll 2
      for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(pb, vv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < RG; i++)
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) _mm256_storeu_ps(o + (int64_t)(r0 + i) * ldo + d0 + 8 * v, acc[i][v]);
}

static ALWAYS_INLINE void pv_rows(float *o, int ldo, const float *st, int ldr,
                                  int r0, const float *const *vp, int n,
                                  int dv8, const int RG) {
  int d0 = 0;
  for (; d0 + 16 <= dv8; d0 += 16) pv_tile(o, ldo, st, ldr, r0, vp, n, d0, RG, 2);
  if (d0 < dv8) pv_tile(o, ldo, st, ldr, r0, vp, n, d0, RG, 1);
}

/* O += P V for all rows: tiles of TR rows, then the rows left. */
static void pv_all(float *o, int ldo, const float *st, int ldr, int rows,
                   const float *const *vp, int n, int Dv) {
  const int dv8 = (Dv + 7) / 8 * 8;
  int r = 0;
  for (; r + TR <= rows; r += TR) pv_rows(o, ldo, st, ldr, r, vp, n, dv8, TR);
  switch (rows - r) {
    case 5: pv_rows(o, ldo, st, ldr, r, vp, n, dv8, 5); break;
    case 4: pv_rows(o, ldo, st, ldr, r, vp, n, dv8, 4); break;
    case 3: pv_rows(o, ldo, st, ldr, r, vp, n, dv8, 3); break;
    case 2: pv_rows(o, ldo, st, ldr, r, vp, n, dv8, 2); break;
    case 1: pv_rows(o, ldo, st, ldr, r, vp, n, dv8, 1); break;
    default: break;
  }
}

/* The vertical online softmax of one 8-row vector j over the step's keys:
   st[i][8j ..] becomes the weights; m, l updated, o rows rescaled. */
static ALWAYS_INLINE void softmax_rows(float *st, int ldr, int j, int rows,
                                       const int32_t *pos, int64_t c, int n,
                                       int masked, int32_t window, float cap,
                                       float *m, float *l, float *o, int ldo,
                                       int Dv) {
  const int r0 = 8 * j;
  const __m256i live_i = lane_mask8(rows - r0);
  const __m256 live = _mm256_castsi256_ps(live_i);
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  const __m256i pv = _mm256_maskload_epi32(pos + r0, live_i);
  const __m256i wv = _mm256_set1_epi32(window);
  __m256 mt = neg_inf;
  /* s - s over the visible logits: 0, or NaN where q or K held a NaN or an
     infinity; it poisons the row's sum (kernels.h) */
  __m256 bad = _mm256_setzero_ps();
  for (int i = 0; i < n; i++) {
    float *sp = st + (int64_t)i * ldr + r0;
    __m256 s = _mm256_loadu_ps(sp);
    __m256 vis = live;
    if (masked) {
      const __m256i key = _mm256_set1_epi32((int)(c + i));
      __m256i seen = _mm256_andnot_si256(_mm256_cmpgt_epi32(key, pv), live_i);
      if (window > 0)
        seen = _mm256_and_si256(seen, _mm256_cmpgt_epi32(wv, _mm256_sub_epi32(pv, key)));
      vis = _mm256_castsi256_ps(seen);
    }
    bad = _mm256_add_ps(bad, _mm256_and_ps(vis, _mm256_sub_ps(s, s)));
    if (cap > 0.0f)
      s = _mm256_mul_ps(_mm256_set1_ps(cap), tanh8(_mm256_mul_ps(s, _mm256_set1_ps(1.0f / cap))));
    if (masked) s = _mm256_blendv_ps(neg_inf, s, _mm256_or_ps(vis, _mm256_xor_ps(live, _mm256_castsi256_ps(_mm256_set1_epi32(-1)))));
    _mm256_storeu_ps(sp, s);
    mt = _mm256_max_ps(mt, s);
  }
  const __m256 m_old = _mm256_maskload_ps(m + r0, live_i);
  const __m256 m_new = _mm256_max_ps(m_old, mt);
  /* rows with nothing visible yet keep m = -inf: use 0 to avoid NaN */
  const __m256 m_use = _mm256_and_ps(_mm256_cmp_ps(m_new, neg_inf, _CMP_NEQ_OQ), m_new);
  __m256 sum = _mm256_setzero_ps();
  for (int i = 0; i < n; i++) {
    float *sp = st + (int64_t)i * ldr + r0;
    const __m256 e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(sp), m_use));
    _mm256_storeu_ps(sp, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 alpha = exp_neg8(_mm256_sub_ps(m_old, m_use));
  const __m256 l_old = _mm256_maskload_ps(l + r0, live_i);
  _mm256_maskstore_ps(l + r0, live_i, _mm256_fmadd_ps(l_old, alpha, _mm256_add_ps(sum, bad)));
  _mm256_maskstore_ps(m + r0, live_i, m_new);
  /* lazy rescale: only rows whose maximum rose and that hold something */
  const __m256 grow_v = _mm256_and_ps(
      _mm256_and_ps(_mm256_cmp_ps(m_new, m_old, _CMP_GT_OQ),
                    _mm256_cmp_ps(l_old, _mm256_setzero_ps(), _CMP_NEQ_OQ)),
      live);
  unsigned grow = (unsigned)_mm256_movemask_ps(grow_v);
  if (grow) {
    __attribute__((aligned(32))) float al[8];
    _mm256_store_ps(al, alpha);
    while (grow) {
      const int b = __builtin_ctz(grow);
      grow &= grow - 1;
      scale_row8(o + (int64_t)(r0 + b) * ldo, Dv, al[b]);
    }
  }
}

static void step(const rpa_block *it, const rpa_block_args *a) {
  const int ldr = it->ldr, rows = it->rows, D = it->D, Dv = it->Dv;
  const int ldk = it->ld, ldo = a->ldo, n = a->n;
  const rpa_dtype dt = it->dtype;
  float *kbuf = a->work;                  /* [32][ld] */
  float *vbuf = kbuf + 32 * (size_t)ldk;  /* [32][ldo] */
  float *st = vbuf + 32 * (size_t)ldo;    /* [32][ldr] */
  const float *kp[PK + TK], *vp[PK];
  /* K and V as f32 rows: f32 K rows as they lie, others widened once per
     step. V is always copied (widened) into vbuf: P V reads the step's V
     rows once per 6-row tile, and cache rows a slot stride apart (often a
     multiple of 4 KiB) would share a few L1 sets and miss on every tile
     (measured: 7% of the step on 8 KiB slots) */
  const int direct_k = dt == RPA_F32;
  if (!direct_k) widen_rows(kbuf, ldk, a->krows, n, D, dt);
  widen_rows(vbuf, ldo, a->vrows, n, Dv, dt);
  for (int i = 0; i < n; i++) {
    kp[i] = direct_k ? (const float *)a->krows[i] : kbuf + (int64_t)i * ldk;
    vp[i] = vbuf + (int64_t)i * ldo;
  }
  for (int i = n; i < PK + TK; i++) kp[i] = kp[n - 1]; /* a tile's spare keys */

  /* S^T, 16-row chunks outer (their q stays in L1), key tiles inner. */
  const float *qt = (const float *)it->qs;
  for (int r0 = 0; r0 < rows; r0 += 16)
    for (int c0 = 0; c0 < n; c0 += TK)
      qk_tile(st + (int64_t)c0 * ldr, ldr, qt, kp + c0, D, r0);

  const int masked = !a->full && it->causal;
  for (int j = 0; j < (rows + 7) / 8; j++)
    softmax_rows(st, ldr, j, rows, it->pos, a->c, n, masked, it->window, it->cap,
                 a->m, a->l, a->o, ldo, Dv);

  /* A masked (row, key) has weight 0, and the tiled P V below multiplies it
     all the same: 0 times a NaN or an infinity in V would reach rows that do
     not see that key. On the steps a mask cuts (a few per item), a V with
     such a value takes a path that adds each row's visible keys only. */
  if (masked && !rpa_rows_finite(a->vrows, n, Dv, dt)) {
    for (int r = 0; r < rows; r++)
      for (int i = 0; i < n; i++) {
        const int64_t key = a->c + i, p = it->pos[r];
        if (key > p || (it->window > 0 && p - key >= it->window)) continue;
        const float w = st[(int64_t)i * ldr + r];
        float *orow = a->o + (int64_t)r * ldo;
        for (int d = 0; d < Dv; d++) orow[d] += w * rpa_widen(a->vrows[i], dt, d);
      }
    return;
  }
  pv_all(a->o, ldo, st, ldr, rows, vp, n, Dv);
}

/* Transposes an 8 x 8 block held in r[0..7] (rows in, columns out). */
static ALWAYS_INLINE void transpose8(__m256 *r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

void rpa_block_begin__avx2(const rpa_block *it);
void rpa_block_begin__avx2(const rpa_block *it) {
  /* qt[d][r] = q[r][d] * kmul for d < D, zero for rows past it->rows; q
     rows are zero from D to ld (a multiple of 16), so whole 8 x 8 blocks
     read nothing past a row */
  float *qt = (float *)it->qs;
  const int ld = it->ld, ldr = it->ldr, rows = it->rows, D = it->D;
  const __m256 vm = _mm256_set1_ps(it->kmul);
  for (int r0 = 0; r0 < ldr; r0 += 8)
    for (int d0 = 0; d0 < D; d0 += 8) {
      __m256 b[8];
      for (int i = 0; i < 8; i++)
        b[i] = r0 + i < rows ? _mm256_mul_ps(_mm256_loadu_ps(it->q + (int64_t)(r0 + i) * ld + d0), vm)
                             : _mm256_setzero_ps();
      transpose8(b);
      const int nd = D - d0 < 8 ? D - d0 : 8;
      for (int i = 0; i < nd; i++) _mm256_storeu_ps(qt + (int64_t)(d0 + i) * ldr + r0, b[i]);
    }
}

void rpa_block_step__avx2(const rpa_block_args *a);
void rpa_block_step__avx2(const rpa_block_args *a) {
  if (a->n <= 0) return;
  step(a->block, a);
}
