/* AVX-512 micro-kernels (F, BW, DQ, VL, VBMI, BF16). See ../tile.h for the
   layouts. Every dtype widens in registers: bf16 by a shift (or a shift and
   a mask, for a pair of dims), f16 by vcvtph2ps, fp8 in decode through a
   128-entry vpermi2b lookup of its bf16 bits, and elsewhere through f16
   (e5m2 is the top byte of an f16; e4m3fn's bits shifted into an f16 give
   the value / 256, exactly). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../../internal.h"
#include "../convert.h"
#include "../tile.h"

enum { K = RPA_TILE_KEYS };

static inline uint32_t rpa_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

/* 16 elements (or the first `count`) of a row, widened to f32. */
static inline __m512 widen16(const void *src, rpa_dtype dt, int count) {
  const __mmask16 m = count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1);
  switch (dt) {
    case RPA_F32:
      return _mm512_maskz_loadu_ps(m, src);
    case RPA_BF16: {
      const __m256i h = _mm256_maskz_loadu_epi16(m, src);
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case RPA_F16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src));
    case RPA_FP8_E5M2: {
      const __m256i b = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, src));
      return _mm512_cvtph_ps(_mm256_slli_epi16(b, 8));
    }
    case RPA_FP8_E4M3:
    default: {
      const __m256i b = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, src));
      const __m256i mag = _mm256_and_si256(b, _mm256_set1_epi16(0x7f));
      const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8);
      __m256i h = _mm256_or_si256(sign, _mm256_slli_epi16(mag, 7));
      const __mmask16 nan = _mm256_cmpeq_epi16_mask(mag, _mm256_set1_epi16(0x7f));
      h = _mm256_mask_mov_epi16(h, nan, _mm256_set1_epi16(0x7e00));
      return _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(256.0f));
    }
  }
}

static inline const void *advance(const void *p, rpa_dtype dt, int elems) {
  static const unsigned char size[RPA_DTYPE_COUNT] = {4, 2, 2, 1, 1};
  return (const char *)p + (size_t)elems * size[dt];
}

static void scale(float *x, int n, float a) {
  const __m512 va = _mm512_set1_ps(a);
  int i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), va));
  for (; i < n; i++) x[i] *= a;
}

/* exp(x) for x <= 0 within ~1 ulp; 0 below -87.3 and for -inf. */
static inline __m512 exp_neg16(__m512 x) {
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_scalef_ps(p, n);
  return _mm512_maskz_mov_ps((__mmask16)~tiny, p);
}

static void store_row(void *dst, rpa_dtype dt, const float *src, int n,
                      float mul) {
  const __m512 vm = _mm512_set1_ps(mul);
  for (int i = 0; i < n; i += 16) {
    const int cnt = n - i < 16 ? n - i : 16;
    const __mmask16 m = cnt == 16 ? (__mmask16)0xffff : (__mmask16)((1u << cnt) - 1);
    const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + i), vm);
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

static void load_row(float *dst, const void *src, rpa_dtype dt, int n) {
  for (int i = 0; i < n; i += 16) {
    const int cnt = n - i < 16 ? n - i : 16;
    const __mmask16 m = cnt == 16 ? (__mmask16)0xffff : (__mmask16)((1u << cnt) - 1);
    _mm512_mask_storeu_ps(dst + i, m, widen16(advance(src, dt, i), dt, cnt));
  }
}

/* Sums each of 16 vectors: lane k of the result is the sum of v[k]. */
static inline __m512 reduce16(const __m512 *v) {
  __m512 w[8], x[4], y[2];
  for (int i = 0; i < 8; i++) /* 256-bit halves: key 2i | key 2i+1 */
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
  for (int i = 0; i < 4; i++) /* 128-bit lane L holds key 4i + L */
    x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xdd));
  for (int i = 0; i < 2; i++)
    y[i] = _mm512_add_ps(_mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0xee));
  const __m512 z = _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88),
                                 _mm512_shuffle_ps(y[0], y[1], 0xdd));
  /* element 4L + j of z is key 4j + L */
  const __m512i idx = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1,
                                       12, 8, 4, 0);
  return _mm512_permutexvar_ps(idx, z);
}

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|). */
static inline __m512 tanh16(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 e = exp_neg16(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
  const __m512 t = _mm512_div_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e),
                                 _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign));
}

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* 16 elements of a row widened to f32; dt is a constant after inlining. */
static ALWAYS_INLINE __m512 widen_full(const void *src, rpa_dtype dt) {
  switch (dt) {
    case RPA_F32: return _mm512_loadu_ps(src);
    case RPA_BF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)src)), 16));
    case RPA_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src));
    default: return widen16(src, dt, 16);
  }
}

/* fp8 -> bf16 bits by magnitude (7 bits): [format][low byte, high byte]
   [128]. Generated from the definitions in convert.h; every fp8 value is a
   bf16 value exactly (NaN -> 0x7fc0, e5m2 infinity -> 0x7f80). */
static const uint8_t fp8_bf16_lut[2][2][128] __attribute__((aligned(64))) = {
    {/* e4m3fn */
     {0x00, 0x00, 0x80, 0xc0, 0x00, 0x20, 0x40, 0x60, 0x80, 0x90, 0xa0, 0xb0,
      0xc0, 0xd0, 0xe0, 0xf0, 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70,
      0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x00, 0x10, 0x20, 0x30,
      0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0,
      0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0,
      0xc0, 0xd0, 0xe0, 0xf0, 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70,
      0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x00, 0x10, 0x20, 0x30,
      0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0,
      0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0,
      0xc0, 0xd0, 0xe0, 0xf0, 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70,
      0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xc0},
     {0x00, 0x3b, 0x3b, 0x3b, 0x3c, 0x3c, 0x3c, 0x3c, 0x3c, 0x3c, 0x3c, 0x3c,
      0x3c, 0x3c, 0x3c, 0x3c, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d,
      0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3e, 0x3e, 0x3e, 0x3e,
      0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e,
      0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f,
      0x3f, 0x3f, 0x3f, 0x3f, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40,
      0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x41, 0x41, 0x41, 0x41,
      0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41,
      0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
      0x42, 0x42, 0x42, 0x42, 0x43, 0x43, 0x43, 0x43, 0x43, 0x43, 0x43, 0x43,
      0x43, 0x43, 0x43, 0x43, 0x43, 0x43, 0x43, 0x7f},
    },
    {/* e5m2 */
     {0x00, 0x80, 0x00, 0x40, 0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60,
      0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0,
      0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60,
      0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0,
      0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60,
      0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0,
      0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60,
      0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0,
      0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60,
      0x80, 0xa0, 0xc0, 0xe0, 0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0,
      0x00, 0x20, 0x40, 0x60, 0x80, 0xc0, 0xc0, 0xc0},
     {0x00, 0x37, 0x38, 0x38, 0x38, 0x38, 0x38, 0x38, 0x39, 0x39, 0x39, 0x39,
      0x39, 0x39, 0x39, 0x39, 0x3a, 0x3a, 0x3a, 0x3a, 0x3a, 0x3a, 0x3a, 0x3a,
      0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x3c, 0x3c, 0x3c, 0x3c,
      0x3c, 0x3c, 0x3c, 0x3c, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d, 0x3d,
      0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3f, 0x3f, 0x3f, 0x3f,
      0x3f, 0x3f, 0x3f, 0x3f, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40,
      0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x42, 0x42, 0x42, 0x42,
      0x42, 0x42, 0x42, 0x42, 0x43, 0x43, 0x43, 0x43, 0x43, 0x43, 0x43, 0x43,
      0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x45, 0x45, 0x45, 0x45,
      0x45, 0x45, 0x45, 0x45, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46, 0x46,
      0x47, 0x47, 0x47, 0x47, 0x7f, 0x7f, 0x7f, 0x7f},
    },
};

/* The four 64-byte tables of one fp8 format, in registers. */
typedef struct fp8_lut {
  __m512i lo0, lo1, hi0, hi1;
} fp8_lut;

static ALWAYS_INLINE int is_fp8(rpa_dtype dt) {
  return dt == RPA_FP8_E4M3 || dt == RPA_FP8_E5M2;
}

static ALWAYS_INLINE fp8_lut fp8_lut_load(rpa_dtype dt) {
  const int f = dt == RPA_FP8_E5M2;
  fp8_lut t;
  t.lo0 = _mm512_load_si512(fp8_bf16_lut[f][0]);
  t.lo1 = _mm512_load_si512(fp8_bf16_lut[f][0] + 64);
  t.hi0 = _mm512_load_si512(fp8_bf16_lut[f][1]);
  t.hi1 = _mm512_load_si512(fp8_bf16_lut[f][1] + 64);
  return t;
}

/* 64 fp8 bytes -> the low and the high bytes of their bf16 bits: two
   128-entry lookups (vpermi2b) on the magnitude, the sign ORed back. */
static ALWAYS_INLINE void fp8_to_bf16_bytes(__m512i x, const fp8_lut *t,
                                            __m512i *lo, __m512i *hi) {
  *lo = _mm512_permutex2var_epi8(t->lo0, x, t->lo1);
  *hi = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(t->hi0, x, t->hi1),
                                  x, _mm512_set1_epi8((char)0x80), 0xf8);
}

/* Byte indices into (lo, hi) that build the f32 bits of values j, j+4,
   j+8, ... of a 64-value block: bytes 2 and 3 of each lane (bytes 0 and 1
   are zeroed by the mask; an fp8 value has no more mantissa than bf16). */
#define G4(i, j) 0, 0, (uint8_t)(4 * (i) + (j)), (uint8_t)(64 + 4 * (i) + (j))
#define G16(j) G4(0, j), G4(1, j), G4(2, j), G4(3, j), G4(4, j), G4(5, j), \
    G4(6, j), G4(7, j), G4(8, j), G4(9, j), G4(10, j), G4(11, j), G4(12, j), \
    G4(13, j), G4(14, j), G4(15, j)
static const uint8_t fp8_gather[4][64] __attribute__((aligned(64))) = {
    {G16(0)}, {G16(1)}, {G16(2)}, {G16(3)}};
#undef G16
#undef G4

/* ---- fused decode step ---------------------------------------------------

   Memory-bound: each K/V row is read once from wherever it lives, widened in
   registers and used by every query row of the GQA group. Per key, the rows'
   partial dot products stay as 16-lane vectors; the 16 keys' vectors of a
   row are then summed in one transpose-reduce tree, so there is no
   horizontal sum per key.

   Widening costs as little as the dtype allows because decode items work in
   a "blocked" dimension order: a bf16 row is used as the [even | odd] dims
   of each 32-dim block (one shift, one AND for 32 values), an fp8 row as
   [dims j mod 4, j = 0..3] of each 64-dim block (two table lookups, then a
   byte gather per 16 values). Dims past the last whole block, and f32 / f16
   rows, keep their order. q is put in this order before an item's first
   tile and o back after its last (decode_order); a dot product does not
   care, and p V only permutes o. */

/* Dims per block and 16-lane vectors per block (1: natural order). */
static ALWAYS_INLINE int block_vecs(rpa_dtype dt) {
  return dt == RPA_BF16 ? 2 : is_fp8(dt) ? 4 : 1;
}

/* The block of row at dim d (d a multiple of 16 * block_vecs, whole). */
static ALWAYS_INLINE void widen_block(const void *row, int d, rpa_dtype dt,
                                      const fp8_lut *lut, __m512 *out) {
  if (dt == RPA_BF16) {
    const __m512i w = _mm512_loadu_si512((const uint16_t *)row + d);
    out[0] = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    out[1] = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xffff0000u)));
  } else if (is_fp8(dt)) {
    __m512i lo, hi;
    fp8_to_bf16_bytes(_mm512_loadu_si512((const uint8_t *)row + d), lut, &lo, &hi);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
      out[j] = _mm512_castsi512_ps(_mm512_maskz_permutex2var_epi8(
          (__mmask64)0xccccccccccccccccull, lo, _mm512_load_si512(fp8_gather[j]), hi));
  } else {
    out[0] = widen_full(advance(row, dt, d), dt);
  }
}

/* Rows of x between natural and blocked order (back: blocked -> natural):
   blocked element 16 v + lane of a block is natural element vb * lane + v. */
static void decode_order(float *x, int ld, int rows, int n, rpa_dtype dt,
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

/* Prefetches row i of a tile into L2: `bytes` from each pointer. */
static ALWAYS_INLINE void prefetch_row(const void *const *rows, int i, int n,
                                       int bytes, const int hint) {
  if (i >= n) return;
  const char *p = rows[i];
  for (int b = 0; b < bytes; b += 64)
    if (hint == _MM_HINT_T0)
      _mm_prefetch(p + b, _MM_HINT_T0);
    else
      _mm_prefetch(p + b, _MM_HINT_T1);
}

/* Logit partials: part[r * 32 + c0 + j] = 16-lane partial dot products of
   q row r (blocked order, zero past D) with key c0 + j, for j < KB (keys at
   or past n give 0). */
static ALWAYS_INLINE void decode_qk(const float *q, int ld,
                                    const void *const *krows, int c0, int n,
                                    int D, rpa_dtype dt, const fp8_lut *lut,
                                    const int NR, const int KB, __m512 *part) {
  const int vb = block_vecs(dt), bd = 16 * vb;
  const int dfull = D / bd * bd;
  __m512 acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < NR * KB; i++) acc[i] = _mm512_setzero_ps();
  const int nk = n - c0 < KB ? n - c0 : KB;
  /* acc[r][j] += q[r] . K[c0 + j] over the whole block at d */
#define QK_KEY(j, d)                                                          \
  do {                                                                        \
    __m512 kv[4];                                                             \
    widen_block(krows[c0 + (j)], (d), dt, lut, kv);                           \
    _Pragma("GCC unroll 8") for (int r = 0; r < NR; r++)                      \
    _Pragma("GCC unroll 4") for (int v = 0; v < vb; v++)                      \
      acc[r * KB + (j)] = _mm512_fmadd_ps(                                    \
          _mm512_loadu_ps(q + (int64_t)r * ld + (d) + 16 * v), kv[v],         \
          acc[r * KB + (j)]);                                                 \
  } while (0)
  for (int d = 0; d < dfull; d += bd) {
    if (nk == KB) { /* the common case: every key of the block is real */
#pragma GCC unroll 16
      for (int j = 0; j < KB; j++) QK_KEY(j, d);
    } else {
      for (int j = 0; j < nk; j++) QK_KEY(j, d);
    }
  }
#undef QK_KEY
  for (int d = dfull; d < D; d += 16) /* the tail, natural order */
    for (int j = 0; j < nk; j++) {
      const __m512 kv = widen16(advance(krows[c0 + j], dt, d), dt, D - d);
      for (int r = 0; r < NR; r++)
        acc[r * KB + j] = _mm512_fmadd_ps(_mm512_loadu_ps(q + (int64_t)r * ld + d), kv,
                                          acc[r * KB + j]);
    }
#pragma GCC unroll 8
  for (int r = 0; r < NR; r++)
#pragma GCC unroll 16
    for (int j = 0; j < KB; j++) part[r * 32 + c0 + j] = acc[r * KB + j];
}

/* o[RG rows][NV vectors from d] += p[r][c] v_c for c < n; the vectors are
   whole blocks from d (tail = 0) or one natural vector (tail = 1). */
static ALWAYS_INLINE void decode_pv_run(float *o, int ldo, const float *p,
                                        const void *const *vrows, int n, int d,
                                        int Dv, rpa_dtype dt, const fp8_lut *lut,
                                        const int RG, const int NV, int tail) {
  const int vb = tail ? 1 : block_vecs(dt);
  __m512 acc[4][4];
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[r][v] = _mm512_loadu_ps(o + (int64_t)r * ldo + d + 16 * v);
  for (int c = 0; c < n; c++) {
    __m512 vv[4];
    if (tail)
      vv[0] = widen16(advance(vrows[c], dt, d), dt, Dv - d);
    else
#pragma GCC unroll 4
      for (int b = 0; b < NV; b += vb) widen_block(vrows[c], d + 16 * b, dt, lut, vv + b);
#pragma GCC unroll 4
    for (int r = 0; r < RG; r++) {
      const __m512 pb = _mm512_set1_ps(p[r * 32 + c]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(pb, vv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) _mm512_storeu_ps(o + (int64_t)r * ldo + d + 16 * v, acc[r][v]);
}

/* o[RG rows] += P V over all of Dv: 64 dims at a time, then what is left. */
static ALWAYS_INLINE void decode_pv(float *o, int ldo, const float *p,
                                    const void *const *vrows, int n, int Dv,
                                    rpa_dtype dt, const fp8_lut *lut,
                                    const int RG) {
  const int vb = block_vecs(dt), bd = 16 * vb;
  const int dfull = Dv / bd * bd;
  int d = 0;
  for (; d + 64 <= dfull; d += 64) decode_pv_run(o, ldo, p, vrows, n, d, Dv, dt, lut, RG, 4, 0);
  if (vb <= 2) /* whole blocks of 16 or 32 dims left */
    for (; d < dfull; d += bd) decode_pv_run(o, ldo, p, vrows, n, d, Dv, dt, lut, RG, vb, 0);
  for (; d < Dv; d += 16) decode_pv_run(o, ldo, p, vrows, n, d, Dv, dt, lut, RG, 1, 1);
}

/* One tile of n <= 32 keys for NR <= 4 query rows; p and part hold 32
   keys per row. */
static ALWAYS_INLINE void decode_rows(const float *q, int ld, float kmul,
                                      const int NR, const void *const *krows,
                                      const void *const *vrows, int n, int D,
                                      int Dv, rpa_dtype dt, float cap, float *m,
                                      float *l, float *o, int ldo,
                                      const void *const *knext,
                                      const void *const *vnext, int n_next) {
  __attribute__((aligned(64))) __m512 part[4 * 32];
  __attribute__((aligned(64))) float p[4 * 32];
  const int es = (int)rpa_dtype_size(dt);
  fp8_lut lut;
  if (is_fp8(dt)) lut = fp8_lut_load(dt);
  const int KB = 16 / NR; /* keys per QK block: NR x KB accumulators */
  const int halves = n > 16 ? 2 : 1;
  for (int c0 = 0; c0 < 16 * halves; c0 += KB) {
#pragma GCC unroll 16
    for (int j = 0; j < KB; j++) {
      const int c = c0 + j;
      /* the next tile: the first line of each row; the hardware's
         adjacent-line and stream prefetchers fetch the rest, and fewer
         software prefetches leave fill buffers to demand misses (measured:
         GQA-4 decode over 2 KV heads, 48% of the read bandwidth against 43%
         when every line is prefetched) */
      prefetch_row(knext, c, n_next, 64, _MM_HINT_T1);
      prefetch_row(vnext, c, n_next, 64, _MM_HINT_T1);
      /* this tile's rows a block ahead (K) or now (V) into L1 */
      prefetch_row(krows, c + KB, n, D * es, _MM_HINT_T0);
      prefetch_row(vrows, c, n, Dv * es, _MM_HINT_T0);
    }
    decode_qk(q, ld, krows, c0, n, D, dt, &lut, NR, KB, part);
  }
  const int n1 = n - 16; /* keys in the second half */
  const __mmask16 valid0 = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
  const __mmask16 valid1 = n1 >= 16 ? (__mmask16)0xffff
                           : n1 <= 0 ? (__mmask16)0 : (__mmask16)((1u << n1) - 1);
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  for (int r = 0; r < NR; r++) {
    __m512 s[2];
    for (int h = 0; h < halves; h++) {
      s[h] = _mm512_mul_ps(reduce16(part + r * 32 + 16 * h), _mm512_set1_ps(kmul));
      if (cap > 0.0f)
        s[h] = _mm512_mul_ps(_mm512_set1_ps(cap),
                             tanh16(_mm512_mul_ps(s[h], _mm512_set1_ps(1.0f / cap))));
    }
    s[0] = _mm512_mask_mov_ps(neg_inf, valid0, s[0]);
    s[1] = halves == 2 ? _mm512_mask_mov_ps(neg_inf, valid1, s[1]) : neg_inf;
    const float mt = _mm512_reduce_max_ps(_mm512_max_ps(s[0], s[1]));
    if (mt > m[r]) {
      if (l[r] != 0.0f) {
        const float alpha = expf(m[r] - mt);
        l[r] *= alpha;
        scale(o + (int64_t)r * ldo, Dv, alpha);
      }
      m[r] = mt;
    }
    const __m512 mr = _mm512_set1_ps(m[r]);
    const __m512 e0 = exp_neg16(_mm512_sub_ps(s[0], mr));
    _mm512_store_ps(p + r * 32, e0);
    __m512 sum = e0;
    if (halves == 2) {
      const __m512 e1 = exp_neg16(_mm512_sub_ps(s[1], mr));
      _mm512_store_ps(p + r * 32 + 16, e1);
      sum = _mm512_add_ps(sum, e1);
    }
    l[r] += _mm512_reduce_add_ps(sum);
  }
  const int RG = NR < 4 ? NR : 4;
  for (int g = 0; g < NR; g += RG)
    decode_pv(o + (int64_t)g * ldo, ldo, p + g * 32, vrows, n, Dv, dt, &lut, RG);
}

static ALWAYS_INLINE void decode_step_dt(const float *q, int ld, int rows,
                                         float kmul, const void *const *krows,
                                         const void *const *vrows, int n, int D,
                                         int Dv, rpa_dtype dt, float cap,
                                         float *m, float *l, float *o, int ldo,
                                         const void *const *knext,
                                         const void *const *vnext, int n_next) {
  int r = 0; /* the first row group prefetches the next tile */
#define ROWS(NR)                                                              \
  for (; r + NR <= rows; r += NR, n_next = 0)                                 \
    decode_rows(q + (int64_t)r * ld, ld, kmul, NR, krows, vrows, n, D, Dv,    \
                dt, cap, m + r, l + r, o + (int64_t)r * ldo, ldo, knext,      \
                vnext, n_next);

  ROWS(4)
  ROWS(2)
  ROWS(1)
#undef ROWS
}

static void decode_step(const float *q, int ld, int rows, float kmul,
                        const void *const *krows, const void *const *vrows,
                        int n, int D, int Dv, rpa_dtype dt, float cap, float *m,
                        float *l, float *o, int ldo, const void *const *knext,
                        const void *const *vnext, int n_next) {
  switch (dt) { /* one specialised copy per dtype */
#define CASE(T)                                                               \
  case T:                                                                     \
    decode_step_dt(q, ld, rows, kmul, krows, vrows, n, D, Dv, T, cap, m, l,   \
                   o, ldo, knext, vnext, n_next);                             \
    break;
    CASE(RPA_F32)
    CASE(RPA_BF16)
    CASE(RPA_F16)
    CASE(RPA_FP8_E4M3)
    CASE(RPA_FP8_E5M2)
#undef CASE
  }
}

/* ---- prefill step ---------------------------------------------------------

   Compute-bound: rows of the item lie along the vector (S^T = K Q^T), so the
   K tile needs no transpose (keys are broadcast from a widened row-major
   copy), and the online softmax is vertical: a row's max, sum and rescale
   are lane-wise, with no horizontal reduction at all. */

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

static void prefill_begin(float *qt, int ldr, const float *q, int ld, int rows,
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

static void prefill_step(const float *qt, int pairs, float mul, int ldr,
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
    for (int i = 0; i < n; i++) {
      float *sp = st + (int64_t)i * ldr + r0;
      __m512 s = _mm512_loadu_ps(sp);
      if (pairs) s = _mm512_mul_ps(s, _mm512_set1_ps(mul));
      if (cap > 0.0f)
        s = _mm512_mul_ps(_mm512_set1_ps(cap), tanh16(_mm512_mul_ps(s, _mm512_set1_ps(1.0f / cap))));
      if (!full && causal) {
        const __m512i key = _mm512_set1_epi32((int)(c + i));
        __mmask16 vis = _mm512_cmple_epi32_mask(key, pv_);
        if (window > 0)
          vis &= _mm512_cmplt_epi32_mask(_mm512_sub_epi32(pv_, key), _mm512_set1_epi32(window));
        s = _mm512_mask_mov_ps(neg_inf, vis, s);
      }
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
    _mm512_mask_storeu_ps(l + r0, live, _mm512_fmadd_ps(l_old, alpha, sum));
    _mm512_mask_storeu_ps(m + r0, live, m_new);
    /* lazy rescale: only rows whose maximum rose and that hold something */
    __mmask16 grow = _mm512_cmp_ps_mask(m_new, m_old, _CMP_GT_OQ) &
                     _mm512_cmp_ps_mask(l_old, _mm512_setzero_ps(), _CMP_NEQ_OQ) & live;
    __attribute__((aligned(64))) float al[16];
    _mm512_store_ps(al, alpha);
    while (grow) {
      const int b = __builtin_ctz(grow);
      grow &= (__mmask16)(grow - 1);
      scale(o + (int64_t)(r0 + b) * ldo, Dv, al[b]);
    }
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

const rpa_tile_ops rpa_tile_ops_avx512 = {
    /* every item takes decode_step or prefill_step: no tile functions */
    "avx512", NULL, NULL, NULL, NULL, scale, NULL, store_row, load_row,
    decode_step, decode_order, prefill_begin, prefill_step,
};
