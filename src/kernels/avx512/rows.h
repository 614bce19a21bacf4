/* The avx512 rows step's inner products, for ../common/rows.h: each
   rows_<dtype>.c instantiates the step for its dtype (one translation unit
   each, so the set compiles in parallel and each file quickly), and rows.c
   dispatches (kernels.h: rows_begin, rows_step, rows_end).

   Widening costs as little as the dtype allows because rows steps work in
   a "blocked" dimension order: a bf16 row is used as the [even | odd] dims
   of each 32-dim block (one shift, one AND for 32 values), an fp8 row as
   [dims j mod 4, j = 0..3] of each 64-dim block (two table lookups, then a
   byte gather per 16 values). Dims past the last whole block, and f32 / f16
   rows, keep their order. q is put in this order before an item's first
   step and o back after its last (rows_order); a dot product does not
   care, and p V only permutes o.

   Where q holds bf16 values and the context allows it (bf16_ok), bf16 and
   fp8 rows run on vdpbf16ps instead: q is staged as bf16 (natural order
   for a bf16 cache, fp8_words order for fp8), K is used as loaded (bf16) or
   as bf16 words (fp8), and P V pairs two keys' V rows against bf16 weight
   pairs, which leaves o in an order of its own that rows_end takes back.
   The fp8 tables (vpermi2b lookups of the bf16 bits) are built at start-up
   from the scalar definitions (../fp8_lut.c). */
#ifndef RPA_KERNELS_AVX512_ROWS_H
#define RPA_KERNELS_AVX512_ROWS_H

#include "vec.h"
#include "../fp8_lut.h"

#define ROWS_GROUP_3 1
#include "../common/rows.h"

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
  t.lo0 = _mm512_load_si512(rpa_fp8_bf16_lut[f][0]);
  t.lo1 = _mm512_load_si512(rpa_fp8_bf16_lut[f][0] + 64);
  t.hi0 = _mm512_load_si512(rpa_fp8_bf16_lut[f][1]);
  t.hi1 = _mm512_load_si512(rpa_fp8_bf16_lut[f][1] + 64);
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
    out[0] = vf_widen(elem_at(row, dt, d), dt);
  }
}

/* 64 fp8 values as bf16 words, exactly: a holds values 16k + i and b
   values 16k + 8 + i (k < 4, i < 8), at word 8k + i; the order q is staged
   in for vdpbf16ps on an fp8 cache (rows_begin). */
static ALWAYS_INLINE void fp8_words(const void *row, int d, const fp8_lut *lut,
                                    __m512i *a, __m512i *b) {
  __m512i lo, hi;
  fp8_to_bf16_bytes(_mm512_loadu_si512((const uint8_t *)row + d), lut, &lo, &hi);
  *a = _mm512_unpacklo_epi8(lo, hi);
  *b = _mm512_unpackhi_epi8(lo, hi);
}

/* 64 dims of a bf16 or fp8 row from d as two vectors of bf16 words: bf16
   as loaded, fp8 in fp8_words order (the vdpbf16ps operands of QK and P V). */
static ALWAYS_INLINE void dot_words64(const void *row, int d, rpa_dtype dt,
                                      const fp8_lut *lut, __m512i *a, __m512i *b) {
  if (is_fp8(dt)) {
    fp8_words(row, d, lut, a, b);
  } else {
    *a = _mm512_loadu_si512((const uint16_t *)row + d);
    *b = _mm512_loadu_si512((const uint16_t *)row + d + 32);
  }
}

/* A key's prefetches, while a step computes: the next rows the engine
   names into L2 (whole, or the first line of each where the engine says so:
   next_whole = 0; the hardware's adjacent-line and stream prefetchers fetch
   the rest, and fewer software prefetches leave fill buffers to demand
   misses), by the step's first row group only, and this step's rows into
   L1, K some keys ahead and V now. */
static ALWAYS_INLINE void key_prefetch(const rows_keys *k, int c, int ahead) {
  if (k->first) {
    prefetch_row(k->knext, c, k->n_next, k->knext_bytes, 0);
    prefetch_row(k->vnext, c, k->n_next, k->vnext_bytes, 0);
  }
  prefetch_row(k->krows, c + ahead, k->n, k->kbytes, 1);
  prefetch_row(k->vrows, c, k->n, k->vbytes, 1);
}

/* Logit partials: part[r * 32 + c0 + j] = 16-lane partial dot products of
   q row r (blocked order, zero past D) with key c0 + j, for j < KB (keys at
   or past n give 0). */
static ALWAYS_INLINE void decode_qk(const float *q, int ld,
                                    const void *const *krows, int c0, int n,
                                    int D, rpa_dtype dt, const fp8_lut *lut,
                                    const int NR, const int KB, const int DOT,
                                    __m512 *part) {
  const int vb = block_vecs(dt), bd = 16 * vb;
  const int dfull = D / bd * bd;
  __m512 acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < NR * KB; i++) acc[i] = _mm512_setzero_ps();
  const int nk = n - c0 < KB ? n - c0 : KB;
  if (DOT && is_fp8(dt)) {
    /* fp8 K on vdpbf16ps: each 64-dim block as two vectors of bf16 words
       (fp8_words), against q staged in that order */
    for (int d = 0; d < dfull; d += 64) {
#pragma GCC unroll 16
      for (int j = 0; j < KB; j++) {
        if (j >= nk) break;
        __m512i ka, kb;
        fp8_words(krows[c0 + j], d, lut, &ka, &kb);
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
          const uint16_t *qr = (const uint16_t *)(q + (int64_t)r * ld) + d;
          acc[r * KB + j] = _mm512_dpbf16_ps(acc[r * KB + j], (__m512bh)ka,
                                             (__m512bh)_mm512_loadu_si512(qr));
          acc[r * KB + j] = _mm512_dpbf16_ps(acc[r * KB + j], (__m512bh)kb,
                                             (__m512bh)_mm512_loadu_si512(qr + 32));
        }
      }
    }
  } else if (DOT) {
    /* bf16 q (staged as bf16 in natural order below dfull, rows_begin)
       and bf16 K on vdpbf16ps: lane i of a 32-dim block adds the exact
       products of dims 2i and 2i + 1, so K is used as loaded, with no
       widening, and one instruction does what two FMAs do */
    for (int d = 0; d < dfull; d += 32) {
      __m512bh qv[4];
#pragma GCC unroll 4
      for (int r = 0; r < NR; r++) {
        qv[r] = (__m512bh)_mm512_loadu_si512((const uint16_t *)(q + (int64_t)r * ld) + d);
        __asm__("" : "+v"(qv[r])); /* held in a register (see below) */
      }
#pragma GCC unroll 16
      for (int j = 0; j < KB; j++) {
        if (j >= nk) break;
        const __m512bh kv =
            (__m512bh)_mm512_loadu_si512((const uint16_t *)krows[c0 + j] + d);
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++)
          acc[r * KB + j] = _mm512_dpbf16_ps(acc[r * KB + j], qv[r], kv);
      }
    }
  } else {
  /* acc[r][j] += q[r] . K[c0 + j] over the whole block at d; Q(r, v) is
     row r's vector v of the block, from memory (Q_MEM) or from registers
     (Q_REG) */
#define Q_MEM(r, v) _mm512_loadu_ps(q + (int64_t)(r) * ld + d + 16 * (v))
#define Q_REG(r, v) qv[(r) * vb + (v)]
#define QK_KEY(j, Q)                                                          \
  do {                                                                        \
    __m512 kv[4];                                                             \
    widen_block(krows[c0 + (j)], d, dt, lut, kv);                             \
    _Pragma("GCC unroll 8") for (int r = 0; r < NR; r++)                      \
    _Pragma("GCC unroll 4") for (int v = 0; v < vb; v++)                      \
      acc[r * KB + (j)] = _mm512_fmadd_ps(Q(r, v), kv[v], acc[r * KB + (j)]); \
  } while (0)
  for (int d = 0; d < dfull; d += bd) {
    if (nk == KB && NR * vb <= 8) {
      /* the common case: every key of the block is real, and the rows' q
         vectors of the block fit in registers next to the accumulators.
         Held there (the empty asm): folded into every FMA as a memory
         operand they make the loads, not the FMAs, set the pace (a CPU with
         one 512-bit load a cycle, AMD Zen 4, then runs QK at half the FMA
         rate) */
      __m512 qv[8];
#pragma GCC unroll 8
      for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < vb; v++) {
          Q_REG(r, v) = Q_MEM(r, v);
          __asm__("" : "+v"(Q_REG(r, v)));
        }
#pragma GCC unroll 16
      for (int j = 0; j < KB; j++) QK_KEY(j, Q_REG);
    } else if (nk == KB) {
#pragma GCC unroll 16
      for (int j = 0; j < KB; j++) QK_KEY(j, Q_MEM);
    } else {
      for (int j = 0; j < nk; j++) QK_KEY(j, Q_MEM);
    }
  }
#undef QK_KEY
#undef Q_MEM
#undef Q_REG
  }
  for (int d = dfull; d < D; d += 16) /* the tail, natural order, f32 q */
    for (int j = 0; j < nk; j++) {
      const __m512 kv = vf_widen_first(elem_at(krows[c0 + j], dt, d), dt, D - d);
      for (int r = 0; r < NR; r++)
        acc[r * KB + j] = _mm512_fmadd_ps(_mm512_loadu_ps(q + (int64_t)r * ld + d), kv,
                                          acc[r * KB + j]);
    }
#pragma GCC unroll 8
  for (int r = 0; r < NR; r++)
#pragma GCC unroll 16
    for (int j = 0; j < KB; j++) part[r * 32 + c0 + j] = acc[r * KB + j];
}

/* QK of a whole tile on vdpbf16ps with every q vector in a register, for
   bf16 or fp8 K and D = 32 DB (DB 2 or 4): part[r * 32 + c] for c < n.
   The loop nest of decode_qk, keys inside dims, reloads
   q for every block of keys, and past 16 accumulators the compiler spills;
   here q is loaded once per tile and each key's row accumulators stay in
   registers. Interleaves the step's prefetches, a key at a time. */
static ALWAYS_INLINE void decode_qk_qreg(const float *q, int ld,
                                         const rows_keys *k, rpa_dtype dt,
                                         const fp8_lut *lut, const int NR,
                                         const int DB, __m512 *part) {
  const void *const *krows = k->krows;
  const int n = k->n;
  __m512bh qv[16];
#pragma GCC unroll 4
  for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
    for (int b = 0; b < DB; b++)
      qv[r * DB + b] =
          (__m512bh)_mm512_loadu_si512((const uint16_t *)(q + (int64_t)r * ld) + 32 * b);
  for (int c = 0; c < n; c++) {
    key_prefetch(k, c, 4);
    __m512 a[4];
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) a[r] = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int b = 0; b < DB; b += 2) {
      __m512i k0, k1;
      dot_words64(krows[c], 32 * b, dt, lut, &k0, &k1);
#pragma GCC unroll 4
      for (int r = 0; r < NR; r++) {
        a[r] = _mm512_dpbf16_ps(a[r], qv[r * DB + b], (__m512bh)k0);
        a[r] = _mm512_dpbf16_ps(a[r], qv[r * DB + b + 1], (__m512bh)k1);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) part[r * 32 + c] = a[r];
  }
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
      vv[0] = vf_widen_first(elem_at(vrows[c], dt, d), dt, Dv - d);
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

/* P V on vdpbf16ps: o[RG rows][NV vectors from d] += the key pairs
   (c, c + 1) of pb[r] (bf16 weights, 32 keys per row) times V rows c and
   c + 1 interleaved (unpacklo / unpackhi of the two rows' bf16 words), in
   an order rows_end takes back: for bf16 V (NV = 2 per 32-dim block),
   lane 4k + t of the lo vector holds dim 8k + t of the block, of the hi
   vector dim 8k + 4 + t; for fp8 V (NV = 4, one 64-dim block of
   fp8_words), vector v's lane 4k + t holds dim 16k + 4v + t. An odd last
   key is paired with a zero row at weight 0. */
static ALWAYS_INLINE void decode_pv_dot_run(float *o, int ldo, const uint16_t *pb,
                                            const void *const *vrows, int n,
                                            int d, rpa_dtype dt, const fp8_lut *lut,
                                            const int RG, const int NV) {
  __m512 acc[4][4];
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[r][v] = _mm512_loadu_ps(o + (int64_t)r * ldo + d + 16 * v);
  for (int c = 0; c < n; c += 2) {
    __m512i x[2], y[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    if (NV == 4) {
      dot_words64(vrows[c], d, dt, lut, &x[0], &x[1]);
      if (c + 1 < n) dot_words64(vrows[c + 1], d, dt, lut, &y[0], &y[1]);
    } else { /* one 32-dim block of bf16 V */
      x[0] = _mm512_loadu_si512((const uint16_t *)vrows[c] + d);
      if (c + 1 < n) y[0] = _mm512_loadu_si512((const uint16_t *)vrows[c + 1] + d);
    }
    __m512bh vv[4];
#pragma GCC unroll 2
    for (int b = 0; b < NV / 2; b++) {
      vv[2 * b] = (__m512bh)_mm512_unpacklo_epi16(x[b], y[b]);
      vv[2 * b + 1] = (__m512bh)_mm512_unpackhi_epi16(x[b], y[b]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < RG; r++) {
      uint32_t pair;
      memcpy(&pair, pb + r * 32 + c, sizeof pair);
      const __m512bh pw = (__m512bh)_mm512_set1_epi32((int)pair);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], pw, vv[v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < RG; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) _mm512_storeu_ps(o + (int64_t)r * ldo + d + 16 * v, acc[r][v]);
}

/* o[RG rows] += P V over all of Dv on vdpbf16ps with the bf16 weights pb:
   whole blocks (32 dims of bf16 V, 64 of fp8), then the tail (natural
   order) with the f32 weights p. */
static ALWAYS_INLINE void decode_pv_dot(float *o, int ldo, const uint16_t *pb,
                                        const float *p, const void *const *vrows,
                                        int n, int Dv, rpa_dtype dt,
                                        const fp8_lut *lut, const int RG) {
  int d = 0;
  if (is_fp8(dt)) {
    for (; d + 64 <= Dv; d += 64) decode_pv_dot_run(o, ldo, pb, vrows, n, d, dt, lut, RG, 4);
  } else {
    const int dfull = Dv / 32 * 32;
    for (; d + 64 <= dfull; d += 64) decode_pv_dot_run(o, ldo, pb, vrows, n, d, dt, lut, RG, 4);
    for (; d < dfull; d += 32) decode_pv_dot_run(o, ldo, pb, vrows, n, d, dt, lut, RG, 2);
  }
  for (; d < Dv; d += 16) decode_pv_run(o, ldo, p, vrows, n, d, Dv, dt, lut, RG, 1, 1);
}

/* The set's products for ../common/rows.h. */
static ALWAYS_INLINE void rows_qk(const float *q, int ld, const rows_keys *k,
                                  const int NR, const int DOT, vf *part) {
  const rpa_dtype dt = k->dt;
  fp8_lut lut;
  if (is_fp8(dt)) lut = fp8_lut_load(dt);
  if (DOT && k->D == 128) {
    decode_qk_qreg(q, ld, k, dt, &lut, NR, 4, part);
  } else if (DOT && k->D == 64) {
    decode_qk_qreg(q, ld, k, dt, &lut, NR, 2, part);
  } else {
    /* keys per QK block, a divisor of 32: NR x KB <= 16 accumulators */
    const int KB = NR == 3 ? 4 : 16 / NR;
    for (int c0 = 0; c0 < k->n; c0 += KB) {
#pragma GCC unroll 16
      for (int j = 0; j < KB; j++) key_prefetch(k, c0 + j, KB);
      decode_qk(q, ld, k->krows, c0, k->n, k->D, dt, &lut, NR, KB, DOT, part);
    }
  }
}

static ALWAYS_INLINE void rows_pv(float *o, int ldo, const float *p,
                                  const rows_keys *k, const int NR,
                                  const int DOT) {
  const rpa_dtype dt = k->dt;
  fp8_lut lut;
  if (is_fp8(dt)) lut = fp8_lut_load(dt);
  if (!DOT) {
    decode_pv(o, ldo, p, k->vrows, k->n, k->Dv, dt, &lut, NR);
    return;
  }
  /* the weights rounded to bf16 for vdpbf16ps, keys 0..31 in order (keys
     past n weigh 0) */
  __attribute__((aligned(64))) uint16_t pb[4 * 32];
#pragma GCC unroll 4
  for (int r = 0; r < NR; r++) {
    const __m512 e0 = _mm512_loadu_ps(p + r * 32);
    const __m512 e1 = k->n > 16 ? _mm512_loadu_ps(p + r * 32 + 16) : _mm512_setzero_ps();
    _mm512_store_si512(pb + r * 32, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
  }
  decode_pv_dot(o, ldo, pb, p, k->vrows, k->n, k->Dv, dt, &lut, NR);
}

/* The step for each dtype (rows_<dtype>.c), on widened f32 FMAs or, with
   _dot, on vdpbf16ps. */
void rpa_rows_f32__avx512(const rpa_rows_args *a);
void rpa_rows_f16__avx512(const rpa_rows_args *a);
void rpa_rows_bf16__avx512(const rpa_rows_args *a);
void rpa_rows_bf16_dot__avx512(const rpa_rows_args *a);
void rpa_rows_e4m3__avx512(const rpa_rows_args *a);
void rpa_rows_e4m3_dot__avx512(const rpa_rows_args *a);
void rpa_rows_e5m2__avx512(const rpa_rows_args *a);
void rpa_rows_e5m2_dot__avx512(const rpa_rows_args *a);

#endif
