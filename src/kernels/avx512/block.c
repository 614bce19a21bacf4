/* The avx512 block step (kernels.h: block_begin, block_step): the shared
   f32 step of ../common/block.h on 16 lanes (S^T tiles of 4 keys x 64
   rows, P V tiles of 4 rows x 64 dims), and beside it the same step on
   vdpbf16ps for bf16 K and V where the bf16 dot product is allowed
   (rpa_block.bf16_ok): q staged as bf16 pairs, V packed into key pairs per
   step, the softmax weights rounded to bf16. */
#include "vec.h"

#define BLOCK_QK_KEYS 4
#define BLOCK_QK_VECS 4
#define BLOCK_PV_ROWS 4
#define BLOCK_PV_VECS 4
#define BLOCK_V_DIRECT 1
#include "../common/block.h"

_Static_assert(RPA_AVX512_BLOCK_KEYS % BLOCK_QK_KEYS == 0,
               "a step's S^T tiles fit the workspace");

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

/* qp[d2][r] = (q[r][2 d2], q[r][2 d2 + 1]) as a bf16 pair, unscaled (q
   holds bf16 values exactly, by contract), zero for rows past `rows`. */
static void stage_pairs(const rpa_block *b) {
  uint32_t *qp = (uint32_t *)b->qs;
  for (int d2 = 0; d2 < b->D / 2; d2++) {
    uint32_t *dst = qp + (int64_t)d2 * b->ldr;
    for (int r = 0; r < b->rows; r++) {
      const float *qr = b->q + (int64_t)r * b->ld + 2 * d2;
      dst[r] = f32_bits(qr[0]) >> 16 | (f32_bits(qr[1]) & 0xffff0000u);
    }
    for (int r = b->rows; r < b->ldr; r++) dst[r] = 0;
  }
}

/* st[c0 + i][rows of vectors rv0 ..] = q . K[c0 + i] for NK keys x NV row
   vectors on vdpbf16ps: q staged as bf16 pairs, K pairs broadcast straight
   from the bf16 K rows (no widening). */
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

/* The step on vdpbf16ps. Workspace: V pairs [16][ldo], S^T [32][ldr]
   (then the weight pairs over it). */
static void block_step_dot(const rpa_block_args *a) {
  const rpa_block *b = a->block;
  const int ldr = b->ldr, rows = b->rows, D = b->D, Dv = b->Dv;
  const int ldo = a->ldo, n = a->n;
  float *vbuf = a->work + 32 * (size_t)b->ld; /* as block_step_f32's V */
  float *st = vbuf + 32 * (size_t)ldo;
  pack_v_pairs((uint32_t *)vbuf, ldo, a->vrows, n, Dv);
  const uint32_t *qp = (const uint32_t *)b->qs;
  const int nrv = (rows + 15) / 16;
  for (int rv0 = 0; rv0 < nrv; rv0 += 4) {
    const int nv = nrv - rv0 < 4 ? nrv - rv0 : 4;
    int c0 = 0;
    if (nv == 4) {
      for (; c0 + 4 <= n; c0 += 4) prefill_qk_block_bf16(st, ldr, qp, a->krows, D, c0, rv0, 4, 4);
      for (; c0 < n; c0++) prefill_qk_block_bf16(st, ldr, qp, a->krows, D, c0, rv0, 1, 4);
    } else {
      for (; c0 < n; c0++)
        for (int j = 0; j < nv; j++) prefill_qk_block_bf16(st, ldr, qp, a->krows, D, c0, rv0 + j, 1, 1);
    }
  }
  const int masked = !a->full && b->causal;
  for (int r0 = 0; r0 < rows; r0 += VL)
    block_softmax(st, ldr, r0, rows, b->pos, a->c, n, masked, b->window, b->cap,
                  b->kmul, a->m, a->l, a->o, ldo, Dv);
  if (masked && block_pv_visible_only(b, a->c, n, st, ldr, a->vrows, a->o, ldo))
    return;
  /* weights to bf16 pairs in place: pp[c/2][r] over st */
  const int dv16 = (Dv + 15) / 16 * 16;
  uint32_t *pp = (uint32_t *)st;
  const int npairs = (n + 1) / 2;
  for (int c2 = 0; c2 < npairs; c2++)
    for (int r0 = 0; r0 < nrv * 16; r0 += 16) {
      const __m512 x = _mm512_loadu_ps(st + (int64_t)(2 * c2) * ldr + r0);
      const __m512 y = 2 * c2 + 1 < n ? _mm512_loadu_ps(st + (int64_t)(2 * c2 + 1) * ldr + r0)
                                      : _mm512_setzero_ps();
      const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x));
      const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(y));
      _mm512_storeu_si512(pp + (int64_t)c2 * ldr + r0, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  const uint32_t *vp = (const uint32_t *)vbuf;
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    int d0 = 0;
    for (; d0 + 64 <= dv16; d0 += 64) prefill_pv_block_bf16(a->o, ldo, pp, ldr, r, vp, npairs, d0, 4);
    for (; d0 < dv16; d0 += 16) prefill_pv_block_bf16(a->o, ldo, pp, ldr, r, vp, npairs, d0, 1);
  }
  for (; r < rows; r++)
    for (int d0 = 0; d0 < dv16; d0 += 16) {
      __m512 acc = _mm512_loadu_ps(a->o + (int64_t)r * ldo + d0);
      for (int c2 = 0; c2 < npairs; c2++)
        acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_set1_epi32((int)pp[(int64_t)c2 * ldr + r]),
                               (__m512bh)_mm512_loadu_si512(vp + (int64_t)c2 * ldo + d0));
      _mm512_storeu_ps(a->o + (int64_t)r * ldo + d0, acc);
    }
}

/* The bf16 dot product serves when q holds bf16 values exactly, K is bf16
   and dims pair up. */
static int use_pairs(const rpa_block *b) {
  return b->bf16_ok && b->dtype == RPA_BF16 && b->D % 2 == 0;
}

void rpa_block_begin__avx512(const rpa_block *b);
void rpa_block_begin__avx512(const rpa_block *b) {
  if (use_pairs(b))
    stage_pairs(b);
  else
    block_stage_rows(b);
}

void rpa_block_step__avx512(const rpa_block_args *a);
void rpa_block_step__avx512(const rpa_block_args *a) {
  if (a->n <= 0) return;
  if (use_pairs(a->block))
    block_step_dot(a);
  else
    block_step_f32(a);
}
