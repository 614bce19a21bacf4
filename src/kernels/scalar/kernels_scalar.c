/* The portable kernel set: plain C for every entry of the interface
   (../kernels.h), written so that compilers vectorise the inner loops; the
   set every CPU runs, and the one the engine has on ARM today.

   A step of 16 keys stages them: K transposed and scaled, kt [D][16], then
   S = Q K^T for the rows, the mask, the online softmax, V widened into
   v [16][ldo] and O += P V. Keys past n are zero in kt and v. */
#include <math.h>
#include <string.h>

#include "../../convert.h"
#include "../../internal.h"
#include "../kernels.h"

enum { K = 16 };

/* kt[d][c] = widen(row_c[d]) * mul for c < n, 0 for n <= c < 16. */
static void load_kt(float *kt, const void *const *rows, int n, int D,
                    rpa_dtype dt, float mul) {
  for (int c = 0; c < n; c++)
    for (int d = 0; d < D; d++) kt[d * K + c] = rpa_widen(rows[c], dt, d) * mul;
  for (int c = n; c < K; c++)
    for (int d = 0; d < D; d++) kt[d * K + c] = 0.0f;
}

/* v[c][d] = widen(row_c[d]) for c < n, 0 for n <= c < 16. */
static void load_v(float *v, int ldv, const void *const *rows, int n, int Dv,
                   rpa_dtype dt) {
  for (int c = 0; c < n; c++) {
    float *dst = v + (int64_t)c * ldv;
    switch (dt) {
      case RPA_F32:
        for (int d = 0; d < Dv; d++) dst[d] = ((const float *)rows[c])[d];
        break;
      case RPA_BF16:
        for (int d = 0; d < Dv; d++)
          dst[d] = rpa_widen_bf16(((const uint16_t *)rows[c])[d]);
        break;
      default:
        for (int d = 0; d < Dv; d++) dst[d] = rpa_widen(rows[c], dt, d);
        break;
    }
  }
  for (int c = n; c < K; c++)
    for (int d = 0; d < Dv; d++) v[(int64_t)c * ldv + d] = 0.0f;
}

/* s[r][c] = sum_d q[r][d] * kt[d][c] for r < rows, c < 16. */
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

/* o[r][d] += sum_c p[r][c] * v[c][d] for r < rows, d < Dv, over the keys
   row r sees (s[r][c] > -inf): a masked key's V never meets the row, not
   even as 0 * V (a NaN or an infinity there would reach it). */
static void pv(float *o, int ldo, const float *s, const float *p,
               const float *v, int ldv, int rows, int Dv) {
  for (int r = 0; r < rows; r++) {
    float *orow = o + (int64_t)r * ldo;
    for (int c = 0; c < K; c++) {
      const float x = p[r * K + c];
      if (s[r * K + c] == -INFINITY) continue; /* masked, and the tail */
      const float *vr = v + (int64_t)c * ldv;
      for (int d = 0; d < Dv; d++) orow[d] += x * vr[d];
    }
  }
}

void rpa_scale__scalar(float *x, int n, float a);
void rpa_scale__scalar(float *x, int n, float a) {
  for (int i = 0; i < n; i++) x[i] *= a;
}

/* exp(x) for x <= 0 within ~1 ulp: 2^n * e^r with |r| <= ln2/2, a degree-6
   polynomial; exp(-inf) and anything below -87.3 (subnormal results) is 0. */
static inline float exp_neg(float x) {
  if (x != x) return x;      /* NaN stays NaN */
  if (x > 0.0f) x = 0.0f;    /* only in a row already poisoned */
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

/* p[c] = exp(s[c] - m) for c < 16; returns the sum. */
static float exp_row(float *p, const float *s, float m) {
  float sum = 0.0f;
  for (int c = 0; c < K; c++) {
    p[c] = exp_neg(s[c] - m);
    sum += p[c];
  }
  return sum;
}

/* The step both work kinds share: rows R of q against keys [c, c + n).
   it == NULL (decode): every key is visible; else rows see keys by it's
   mask unless full. */
static void tile_step(const float *q, int ld, int R, float kmul, float cap,
                      const void *const *krows, const void *const *vrows,
                      int n, int D, int Dv, rpa_dtype dt,
                      const rpa_block *it, int64_t c, int full,
                      float *m, float *l, float *o, int ldo, float *work) {
  float *kt = work;                        /* [D][16] */
  float *v = kt + (size_t)K * ld;          /* [16][ldo] */
  float *s = v + (size_t)K * ldo;          /* [R][16] */
  float *p = s + (size_t)K * R;            /* [R][16] */
  load_kt(kt, krows, n, D, dt, kmul);
  qk(s, q, ld, kt, R, D);
  /* Per row, s - s over its visible logits: 0, or NaN where q or K held a
     NaN or an infinity; added to the row's sum, it poisons the row
     (kernels.h). Masked logits then become -inf. */
  const int masked = it && !full && it->causal;
  float *bad = p; /* [R], p's first column until the softmax writes it */
  for (int r = 0; r < R; r++) {
    float *sr = s + r * K;
    const int64_t pos = masked ? it->pos[r] : 0;
    float b = 0.0f;
    for (int i = 0; i < n; i++) {
      const int64_t key = c + i;
      if (masked && (key > pos || (it->window > 0 && pos - key >= it->window))) {
        sr[i] = -INFINITY;
        continue;
      }
      b += sr[i] - sr[i];
      if (cap > 0.0f) sr[i] = cap * tanhf(sr[i] * (1.0f / cap));
    }
    for (int i = n; i < K; i++) sr[i] = -INFINITY;
    bad[r * K] = b;
  }
  /* Online softmax, rescaling a row only when its maximum rises. */
  for (int r = 0; r < R; r++) {
    float *sr = s + r * K, *pr = p + r * K;
    const float b = pr[0];
    float mt = sr[0];
    for (int i = 1; i < K; i++) mt = sr[i] > mt ? sr[i] : mt;
    if (mt == -INFINITY) {
      memset(pr, 0, sizeof(float) * K);
      l[r] += b;
      continue;
    }
    if (mt > m[r]) {
      if (l[r] != 0.0f) {
        const float alpha = expf(m[r] - mt);
        l[r] *= alpha;
        rpa_scale__scalar(o + (int64_t)r * ldo, Dv, alpha);
      }
      m[r] = mt;
    }
    l[r] += exp_row(pr, sr, m[r]) + b;
  }
  load_v(v, ldo, vrows, n, Dv, dt);
  pv(o, ldo, s, p, v, ldo, R, Dv);
}

/* Prefetches `bytes` of each of the rows into the caches. */
static void prefetch_rows(const void *const *rows, int n, int64_t bytes) {
  for (int i = 0; i < n; i++)
    for (int64_t b = 0; b < bytes; b += 64)
      __builtin_prefetch((const char *)rows[i] + b, 0, 2);
}


void rpa_rows_begin__scalar(float *q, int ld, int rows, int D, rpa_dtype dt,
                         int bf16_ok);
void rpa_rows_begin__scalar(float *q, int ld, int rows, int D, rpa_dtype dt,
                         int bf16_ok) {
  (void)q, (void)ld, (void)rows, (void)D, (void)dt, (void)bf16_ok; /* natural */
}

void rpa_rows_end__scalar(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                       int bf16_ok);
void rpa_rows_end__scalar(float *o, int ldo, int rows, int Dv, rpa_dtype dt,
                       int bf16_ok) {
  (void)o, (void)ldo, (void)rows, (void)Dv, (void)dt, (void)bf16_ok; /* natural */
}

void rpa_rows_step__scalar(const rpa_rows_args *a);
void rpa_rows_step__scalar(const rpa_rows_args *a) {
  const int64_t es = (int64_t)rpa_dtype_size(a->dtype);
  prefetch_rows(a->knext, a->n_next, a->D * es);
  prefetch_rows(a->vnext, a->n_next, a->Dv * es);
  tile_step(a->q, a->ld, a->rows, a->kmul, a->cap, a->krows, a->vrows, a->n,
            a->D, a->Dv, a->dtype, NULL, 0, 1, a->m, a->l, a->o, a->ldo,
            a->work);
}

void rpa_block_begin__scalar(const rpa_block *it);
void rpa_block_begin__scalar(const rpa_block *it) {
  (void)it; /* steps read the natural rows */
}

void rpa_block_step__scalar(const rpa_block_args *a);
void rpa_block_step__scalar(const rpa_block_args *a) {
  const rpa_block *it = a->block;
  tile_step(it->q, it->ld, it->rows, it->kmul, it->cap, a->krows, a->vrows,
            a->n, it->D, it->Dv, it->dtype, it, a->c, a->full, a->m, a->l,
            a->o, a->ldo, a->work);
}

void rpa_store_row__scalar(void *dst, rpa_dtype dt, const float *src, int n,
                      float mul);
void rpa_store_row__scalar(void *dst, rpa_dtype dt, const float *src, int n,
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

void rpa_load_row__scalar(float *dst, const void *src, rpa_dtype dt, int n);
void rpa_load_row__scalar(float *dst, const void *src, rpa_dtype dt, int n) {
  for (int i = 0; i < n; i++) dst[i] = rpa_widen(src, dt, i);
}

const rpa_kernels rpa_kernels_scalar = {
    .name = "scalar",
    .rows_keys = K,
    .block_keys = K,
    .has_bf16_dot = 0,
    .rows_begin = rpa_rows_begin__scalar,
    .rows_step = rpa_rows_step__scalar,
    .rows_end = rpa_rows_end__scalar,
    .block_begin = rpa_block_begin__scalar,
    .block_step = rpa_block_step__scalar,
    .load_row = rpa_load_row__scalar,
    .store_row = rpa_store_row__scalar,
    .scale = rpa_scale__scalar,
};
