/* The block step (kernels.h: block_begin, block_step), written once over a
   set's vocabulary: include the set's vec.h and define its tile shape
   first:
     BLOCK_QK_KEYS  keys per S^T tile        BLOCK_QK_VECS  row vectors per tile
     BLOCK_PV_ROWS  rows per P V tile        BLOCK_PV_VECS  dim vectors per tile
     BLOCK_V_DIRECT 1: f32 V rows of whole vectors are read where they lie;
                    0: V is always widened into the workspace (cache rows a
                    slot stride apart can share L1 sets and miss on every
                    tile)
   BLOCK_QK_VECS * (BLOCK_QK_KEYS + 1) and BLOCK_PV_ROWS * BLOCK_PV_VECS +
   BLOCK_PV_VECS + 1 must fit the set's vector registers.

   Compute-bound. Query rows lie along the vector for S^T = K Q^T: q is
   staged once per block transposed and scaled, qt [D][ldr], and an S^T tile
   runs down the dims with K broadcast from f32 rows (the cache rows
   themselves for f32, else widened once per step). The online softmax is
   then vertical (softmax.h): a row's max, sum and rescale are lane-wise
   over the keys of the step, with no horizontal reduction. O += P V runs
   a tile of rows x dims over the keys, P broadcast from S^T, V from f32
   rows.

   Every (row, key) logit and every (row, dim) output element sees the
   same sequence of FMAs whatever tile it falls in, so a row's result does
   not depend on its neighbours. */
#ifndef RPA_KERNELS_COMMON_BLOCK_H
#define RPA_KERNELS_COMMON_BLOCK_H

#include "softmax.h"

/* dst[i][0 .. cols) = widen(rows[i][0 .. cols)), zero from cols to the next
   whole vector. */
static ALWAYS_INLINE void widen_rows_dt(float *dst, int ld,
                                        const void *const *rows, int n,
                                        int cols, rpa_dtype dt) {
  for (int i = 0; i < n; i++) {
    float *out = dst + (int64_t)i * ld;
    int d = 0;
    for (; d + VL <= cols; d += VL) vf_store(out + d, vf_widen(elem_at(rows[i], dt, d), dt));
    if (d < cols) vf_store(out + d, vf_widen_first(elem_at(rows[i], dt, d), dt, cols - d));
  }
}

static void widen_rows(float *dst, int ld, const void *const *rows, int n,
                       int cols, rpa_dtype dt) {
  switch (dt) { /* one copy per dtype */
    case RPA_F32: widen_rows_dt(dst, ld, rows, n, cols, RPA_F32); break;
    case RPA_BF16: widen_rows_dt(dst, ld, rows, n, cols, RPA_BF16); break;
    case RPA_F16: widen_rows_dt(dst, ld, rows, n, cols, RPA_F16); break;
    case RPA_FP8_E4M3: widen_rows_dt(dst, ld, rows, n, cols, RPA_FP8_E4M3); break;
    case RPA_FP8_E5M2: widen_rows_dt(dst, ld, rows, n, cols, RPA_FP8_E5M2); break;
  }
}

/* qt[d][r] = q[r][d] * mul for d < D, zero for rows past `rows` up to ldr. */
static void block_stage_rows(const rpa_block *b) {
  float *qt = (float *)b->qs;
  for (int d = 0; d < b->D; d++) {
    float *dst = qt + (int64_t)d * b->ldr;
    for (int r = 0; r < b->rows; r++) dst[r] = b->q[(int64_t)r * b->ld + d] * b->kmul;
    for (int r = b->rows; r < b->ldr; r++) dst[r] = 0.0f;
  }
}

/* st[c0 + i][16..: row vectors rv0 ..] = sum_d kp[c0 + i][d] qt[d][..] for
   NK keys x NV row vectors. */
static ALWAYS_INLINE void block_qk_tile(float *st, int ldr, const float *qt,
                                        const float *const *kp, int D, int c0,
                                        int rv0, const int NK, const int NV) {
  vf acc[BLOCK_QK_KEYS][BLOCK_QK_VECS];
#pragma GCC unroll 8
  for (int i = 0; i < NK; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) acc[i][j] = vf_zero();
  const float *qb = qt + (int64_t)rv0 * VL;
  const float *kb[BLOCK_QK_KEYS];
#pragma GCC unroll 8
  for (int i = 0; i < NK; i++) kb[i] = kp[c0 + i];
  for (int d = 0; d < D; d++) {
    vf qv[BLOCK_QK_VECS];
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) qv[j] = vf_load(qb + (int64_t)d * ldr + VL * j);
#pragma GCC unroll 8
    for (int i = 0; i < NK; i++) {
      const vf kv = vf_set1(kb[i][d]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; j++) acc[i][j] = vf_fma(kv, qv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < NK; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++)
      vf_store(st + (int64_t)(c0 + i) * ldr + (int64_t)(rv0 + j) * VL, acc[i][j]);
}

/* S^T for the n keys of kp (padded to whole tiles with repeats of the last
   key: st has room for them, and they are never read) and every row vector
   of the block. */
static void block_qk(float *st, int ldr, const float *qt, const float *const *kp,
                     int n, int D, int rows) {
  const int nrv = (rows + VL - 1) / VL;
  for (int rv0 = 0; rv0 < nrv; rv0 += BLOCK_QK_VECS) {
    const int nv = nrv - rv0 < BLOCK_QK_VECS ? nrv - rv0 : BLOCK_QK_VECS;
    for (int c0 = 0; c0 < n; c0 += BLOCK_QK_KEYS)
      switch (nv) { /* the tile's row vectors, a constant in each copy */
#define QK_TILE(NV) \
  case NV: block_qk_tile(st, ldr, qt, kp, D, c0, rv0, BLOCK_QK_KEYS, NV); break;
        QK_TILE(1)
#if BLOCK_QK_VECS > 1
        QK_TILE(2)
#endif
#if BLOCK_QK_VECS > 2
        QK_TILE(3)
#endif
#if BLOCK_QK_VECS > 3
        QK_TILE(4)
#endif
#undef QK_TILE
        default: break;
      }
  }
}

/* o[r0 + i][d0 + VL v ..] += sum_c st[c][r0 + i] vp[c][d0 + VL v ..] for
   i < RG, v < NV, c < n. */
static ALWAYS_INLINE void block_pv_tile(float *o, int ldo, const float *st,
                                        int ldr, int r0, const float *const *vp,
                                        int n, int d0, const int RG, const int NV) {
  vf acc[BLOCK_PV_ROWS][BLOCK_PV_VECS];
#pragma GCC unroll 8
  for (int i = 0; i < RG; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[i][v] = vf_load(o + (int64_t)(r0 + i) * ldo + d0 + VL * v);
  const float *sp = st + r0;
  for (int c = 0; c < n; c++) {
    vf vv[BLOCK_PV_VECS];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) vv[v] = vf_load(vp[c] + d0 + VL * v);
#pragma GCC unroll 8
    for (int i = 0; i < RG; i++) {
      const vf pb = vf_set1(sp[(int64_t)c * ldr + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[i][v] = vf_fma(pb, vv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < RG; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) vf_store(o + (int64_t)(r0 + i) * ldo + d0 + VL * v, acc[i][v]);
}

/* RG rows from r0, every dim: tiles of BLOCK_PV_VECS vectors, then one
   vector at a time. */
static ALWAYS_INLINE void block_pv_rows(float *o, int ldo, const float *st,
                                        int ldr, int r0, const float *const *vp,
                                        int n, int dvv, const int RG) {
  int d0 = 0;
  for (; d0 + VL * BLOCK_PV_VECS <= dvv; d0 += VL * BLOCK_PV_VECS)
    block_pv_tile(o, ldo, st, ldr, r0, vp, n, d0, RG, BLOCK_PV_VECS);
  for (; d0 < dvv; d0 += VL) block_pv_tile(o, ldo, st, ldr, r0, vp, n, d0, RG, 1);
}

/* O += P V for every row: tiles of BLOCK_PV_ROWS rows, then the rows left
   as one tile. */
static void block_pv(float *o, int ldo, const float *st, int ldr, int rows,
                     const float *const *vp, int n, int Dv) {
  const int dvv = (Dv + VL - 1) / VL * VL;
  int r = 0;
  for (; r + BLOCK_PV_ROWS <= rows; r += BLOCK_PV_ROWS)
    block_pv_rows(o, ldo, st, ldr, r, vp, n, dvv, BLOCK_PV_ROWS);
  switch (rows - r) { /* the rows left, a constant in each copy */
#define PV_ROWS(RG) \
  case RG: block_pv_rows(o, ldo, st, ldr, r, vp, n, dvv, RG); break;
#if BLOCK_PV_ROWS > 7
    PV_ROWS(7)
#endif
#if BLOCK_PV_ROWS > 6
    PV_ROWS(6)
#endif
#if BLOCK_PV_ROWS > 5
    PV_ROWS(5)
#endif
#if BLOCK_PV_ROWS > 4
    PV_ROWS(4)
#endif
#if BLOCK_PV_ROWS > 3
    PV_ROWS(3)
#endif
#if BLOCK_PV_ROWS > 2
    PV_ROWS(2)
#endif
    PV_ROWS(1)
#undef PV_ROWS
    default: break;
  }
}

/* The f32 block step: K and V as f32 rows (the cache rows where they are
   f32 and whole, else widened once into the workspace), S^T, the vertical
   softmax, P V. Workspace: K [32][ld], V [32][ldo], S^T [32][ldr]. */
static void block_step_f32(const rpa_block_args *a) {
  const rpa_block *b = a->block;
  const int ldr = b->ldr, rows = b->rows, D = b->D, Dv = b->Dv;
  const int ldk = b->ld, ldo = a->ldo, n = a->n;
  const rpa_dtype dt = b->dtype;
  float *kbuf = a->work;                 /* [32][ld] */
  float *vbuf = kbuf + 32 * (size_t)ldk; /* [32][ldo] */
  float *st = vbuf + 32 * (size_t)ldo;   /* [32][ldr] */
  const float *kp[RPA_MAX_STEP_KEYS + BLOCK_QK_KEYS], *vp[RPA_MAX_STEP_KEYS];
  const int direct_k = dt == RPA_F32;
  const int direct_v = BLOCK_V_DIRECT && dt == RPA_F32 && Dv % VL == 0;
  if (!direct_k) widen_rows(kbuf, ldk, a->krows, n, D, dt);
  if (!direct_v) widen_rows(vbuf, ldo, a->vrows, n, Dv, dt);
  for (int i = 0; i < n; i++) {
    kp[i] = direct_k ? (const float *)a->krows[i] : kbuf + (int64_t)i * ldk;
    vp[i] = direct_v ? (const float *)a->vrows[i] : vbuf + (int64_t)i * ldo;
  }
  for (int i = n; i < RPA_MAX_STEP_KEYS + BLOCK_QK_KEYS; i++) kp[i] = kp[n - 1];

  block_qk(st, ldr, (const float *)b->qs, kp, n, D, rows);
  const int masked = !a->full && b->causal;
  for (int r0 = 0; r0 < rows; r0 += VL)
    block_softmax(st, ldr, r0, rows, b->pos, a->c, n, masked, b->window, b->cap,
                  1.0f, a->m, a->l, a->o, ldo, Dv);
  if (masked && block_pv_visible_only(b, a->c, n, st, ldr, a->vrows, a->o, ldo))
    return;
  block_pv(a->o, ldo, st, ldr, rows, vp, n, Dv);
}

#endif
