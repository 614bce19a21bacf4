/* Portable C micro-kernels (see ../tile.h). Written so that compilers
   vectorize the inner loops; src/kernels/avx2/ compiles this same file with
   AVX2 flags. */
#include <math.h>

#include "../../internal.h"
#include "../convert.h"
#include "../tile.h"

#ifndef RPA_TILE_OPS_NAME
#define RPA_TILE_OPS_NAME rpa_tile_ops_scalar
#define RPA_TILE_OPS_LABEL "scalar"
#endif

enum { K = RPA_TILE_KEYS };

static void load_kt(float *kt, const void *const *rows, int n, int D,
                    rpa_dtype dt, float mul) {
  for (int c = 0; c < n; c++)
    for (int d = 0; d < D; d++) kt[d * K + c] = rpa_widen(rows[c], dt, d) * mul;
  for (int c = n; c < K; c++)
    for (int d = 0; d < D; d++) kt[d * K + c] = 0.0f;
}

static void load_v(float *v, int ldv, const void *const *rows, int n, int Dv,
                   rpa_dtype dt, float mul) {
  for (int c = 0; c < n; c++) {
    float *dst = v + (int64_t)c * ldv;
    switch (dt) {
      case RPA_F32:
        for (int d = 0; d < Dv; d++) dst[d] = ((const float *)rows[c])[d] * mul;
        break;
      case RPA_BF16:
        for (int d = 0; d < Dv; d++)
          dst[d] = rpa_widen_bf16(((const uint16_t *)rows[c])[d]) * mul;
        break;
      default:
        for (int d = 0; d < Dv; d++) dst[d] = rpa_widen(rows[c], dt, d) * mul;
        break;
    }
  }
  for (int c = n; c < K; c++)
    for (int d = 0; d < Dv; d++) v[(int64_t)c * ldv + d] = 0.0f;
}

static void qk(float *s, const float *q, int ld, const float *kt, int rows,
               int D) {
  for (int r = 0; r < rows; r++) {
    float acc[K] = {0};
    const float *qr = q + (int64_t)r * ld;
    for (int d = 0; d < D; d++) {
      const float x = qr[d];
      for (int c = 0; c < K; c++) acc[c] += x * kt[d * K + c];
    }
    for (int c = 0; c < K; c++) s[r * K + c] = acc[c];
  }
}

static void pv(float *o, int ldo, const float *p, const float *v, int ldv,
               int rows, int Dv) {
  for (int r = 0; r < rows; r++) {
    float *orow = o + (int64_t)r * ldo;
    for (int c = 0; c < K; c++) {
      const float x = p[r * K + c];
      if (x == 0.0f) continue; /* masked keys and the zero tail */
      const float *vr = v + (int64_t)c * ldv;
      for (int d = 0; d < Dv; d++) orow[d] += x * vr[d];
    }
  }
}

static void scale(float *x, int n, float a) {
  for (int i = 0; i < n; i++) x[i] *= a;
}

/* exp(x) for x <= 0 within ~1 ulp: 2^n * e^r with |r| <= ln2/2, a degree-6
   polynomial; exp(-inf) and anything below -87.3 (subnormal results) is 0. */
static inline float exp_neg(float x) {
  const float xc = x < -87.3f ? -87.3f : x;
  const float n = floorf(xc * 1.44269504f + 0.5f);
  float r = xc - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-06f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float two_n = rpa_bits_to_f32((uint32_t)((int32_t)n + 127) << 23);
  return x < -87.3f ? 0.0f : p * two_n;
}

static float exp_row(float *p, const float *s, float m) {
  float sum = 0.0f;
  for (int c = 0; c < K; c++) {
    p[c] = exp_neg(s[c] - m);
    sum += p[c];
  }
  return sum;
}

static void store_row(void *dst, rpa_dtype dt, const float *src, int n,
                      float mul) {
  switch (dt) {
    case RPA_F32:
      for (int i = 0; i < n; i++) ((float *)dst)[i] = src[i] * mul;
      break;
    case RPA_BF16:
      for (int i = 0; i < n; i++)
        ((uint16_t *)dst)[i] = rpa_f32_to_bf16(src[i] * mul);
      break;
    default:
      for (int i = 0; i < n; i++)
        ((uint16_t *)dst)[i] = rpa_f32_to_f16(src[i] * mul);
      break;
  }
}

static void load_row(float *dst, const void *src, rpa_dtype dt, int n) {
  for (int i = 0; i < n; i++) dst[i] = rpa_widen(src, dt, i);
}

const rpa_tile_ops RPA_TILE_OPS_NAME = {
    RPA_TILE_OPS_LABEL, load_kt, load_v, qk, pv, scale, exp_row, store_row,
    load_row, NULL, NULL, NULL, NULL,
};
