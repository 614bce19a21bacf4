/* The micro-kernels every tiled kernel set provides. The engine
   (src/engine.c) cuts work into tiles of up to RPA_TILE_KEYS keys taken from
   any pages; these functions do the arithmetic on one tile.

   Layouts (f32 unless noted; "rows" are query rows: tokens x heads of a GQA
   group; every row array has row stride `ld` elements):
     q   [rows][ld]       query rows, widened (and quantized) once per item
     kt  [D][16]          one K tile, transposed: keys along the vector
     s,p [rows][16]       logits / probabilities of the tile
     v   [16][ldv]        one V tile
     o   [rows][ldv]      the output accumulator
   Keys past n in a tile are zero in kt and v, so kernels may always work on
   16 keys. */
#ifndef RPA_KERNELS_TILE_H
#define RPA_KERNELS_TILE_H

#include <stdint.h>

#include "rpa.h"

#define RPA_TILE_KEYS 16

typedef struct rpa_tile_ops {
  const char *name;
  /* load_kt, load_v, qk, pv and exp_row: required unless both decode_step
     and prefill_step are given (the engine then never calls them). */
  /* kt[d][c] = widen(row_c[d]) * mul for c < n, 0 for n <= c < 16. */
  void (*load_kt)(float *kt, const void *const *rows, int n, int D,
                  rpa_dtype dtype, float mul);
  /* v[c][d] = widen(row_c[d]) * mul for c < n, 0 for n <= c < 16. */
  void (*load_v)(float *v, int ldv, const void *const *rows, int n, int Dv,
                 rpa_dtype dtype, float mul);
  /* s[r][c] = sum_d q[r][d] * kt[d][c] for r < rows, c < 16. */
  void (*qk)(float *s, const float *q, int ld, const float *kt, int rows,
             int D);
  /* o[r][d] += sum_c p[r][c] * v[c][d] for r < rows, d < Dv. */
  void (*pv)(float *o, int ldo, const float *p, const float *v, int ldv,
             int rows, int Dv);
  /* x[i] *= a for i < n. */
  void (*scale)(float *x, int n, float a);
  /* p[c] = exp(s[c] - m) for c < 16; returns the sum. */
  float (*exp_row)(float *p, const float *s, float m);
  /* dst[i] = narrow(src[i] * mul) for i < n, in dtype (f32, bf16, f16). */
  void (*store_row)(void *dst, rpa_dtype dtype, const float *src, int n,
                    float mul);
  /* dst[i] = widen(src[i]) for i < n (any dtype). */
  void (*load_row)(float *dst, const void *src, rpa_dtype dtype, int n);
  /* Optional (NULL: the engine uses the tile functions above). One fused
     decode step: `rows` query rows q [rows][ld] (zero past D) against
     n <= 32 keys that every row sees, logits scaled by kmul. K and V are
     read and widened in registers straight from their rows (no staging),
     then soft cap (cap > 0), online softmax update of m [rows], l [rows],
     and o [rows][ldo] += p v. The rows of the next tile (knext, vnext,
     n_next) are prefetched a key at a time, spread through the arithmetic.
     q and o are in the kernel's own dimension order: decode_order (given
     whenever decode_step is) puts rows into it (back = 0) before an item's
     first step and takes them out (back = 1) after its last. */
  void (*decode_step)(const float *q, int ld, int rows, float kmul,
                      const void *const *krows, const void *const *vrows,
                      int n, int D, int Dv, rpa_dtype dtype, float cap,
                      float *m, float *l, float *o, int ldo,
                      const void *const *knext, const void *const *vnext,
                      int n_next);
  void (*decode_order)(float *x, int ld, int rows, int n, rpa_dtype dtype,
                       int back);
  /* Optional (NULL: the tile functions above). Prefill / mixed items:
     prefill_begin writes the item's query rows transposed and scaled,
     qt[d][r] = q[r][d] * mul (ldr >= rows, a multiple of 16, padding rows
     zero). With bf16_pairs (q holds bf16 values exactly, K is bf16, D is
     even) qt instead holds q unscaled as bf16 pairs [D/2][ldr][2] and
     prefill_step uses vdpbf16ps on K's raw rows, scaling logits by mul.
     prefill_step then runs one tile of n <= 32 keys starting at key
     position c for `rows` rows whose positions are pos[r]: S^T = K Q^T with
     rows along the vector, mask (causal, window; none when full), soft cap,
     online softmax kept per row in m, l, and o [rows][ldo] += P V.
     kbuf [32][ldk], vbuf [32][ldo], st [32][ldr] are scratch. */
  void (*prefill_begin)(float *qt, int ldr, const float *q, int ld, int rows,
                        int D, float mul, int bf16_pairs);
  void (*prefill_step)(const float *qt, int bf16_pairs, float mul, int ldr,
                       int rows, const int32_t *pos,
                       int64_t c, int n, int full, int causal, int32_t window,
                       float cap, const void *const *krows,
                       const void *const *vrows, int D, int Dv, rpa_dtype dtype,
                       float *kbuf, int ldk, float *vbuf, float *st, float *m,
                       float *l, float *o, int ldo);
} rpa_tile_ops;

/* Portable C micro-kernels, compiled once per ISA folder. */
extern const rpa_tile_ops rpa_tile_ops_scalar;
extern const rpa_tile_ops rpa_tile_ops_avx2;
extern const rpa_tile_ops rpa_tile_ops_avx512;

#endif
