/* TEST-ONLY: the ops of avx512_ops.h, written with the native intrinsic
   names. Compiled twice: with RPA_EMU_OPS_NATIVE (and the AVX-512 -m
   flags, tests/emu/avx512_ops_native.c) they are the real instructions,
   rpa_emu_ops_native; otherwise every name is the emulation's
   (RPA_EMU_AVX512_RENAME, as in the emulated kernels), rpa_emu_ops_emulated.
   An op with an immediate switches over every value it takes, so each
   case is a constant as the native intrinsic needs. */
#include <string.h>

#include "avx512_ops.h"

#ifdef RPA_EMU_OPS_NATIVE
#include <immintrin.h>
#define OPS_TABLE rpa_emu_ops_native
#else
#define RPA_EMU_AVX512_RENAME 1
#include "avx512_emu.h"
#define OPS_TABLE rpa_emu_ops_emulated
#endif

#define LPS(p) _mm512_loadu_ps(p)
#define LSI(p) _mm512_loadu_si512(p)
#define L256(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define SPS(x) _mm512_storeu_ps(o->v, x)
#define SSI(x) _mm512_storeu_si512(o->v, x)
#define S256(x) _mm256_storeu_si256((__m256i *)(void *)o->v, x)
#define OP(name) \
  static void op_##name(const emu_op_in *in, __attribute__((unused)) emu_op_out *o)

/* Immediates 0x00 .. 0xff (and 0x00 .. 0x1f) as constant cases. */
#define HEX16(F, H)                                                           \
  F(0x##H##0) F(0x##H##1) F(0x##H##2) F(0x##H##3) F(0x##H##4) F(0x##H##5)     \
  F(0x##H##6) F(0x##H##7) F(0x##H##8) F(0x##H##9) F(0x##H##a) F(0x##H##b)     \
  F(0x##H##c) F(0x##H##d) F(0x##H##e) F(0x##H##f)
#define IMM256(F)                                                             \
  HEX16(F, 0) HEX16(F, 1) HEX16(F, 2) HEX16(F, 3) HEX16(F, 4) HEX16(F, 5)     \
  HEX16(F, 6) HEX16(F, 7) HEX16(F, 8) HEX16(F, 9) HEX16(F, a) HEX16(F, b)     \
  HEX16(F, c) HEX16(F, d) HEX16(F, e) HEX16(F, f)
#define IMM32(F) HEX16(F, 0) HEX16(F, 1)

/* ---- memory ---- */
OP(loadu_ps) { SPS(_mm512_loadu_ps(in->src)); }
OP(loadu_si512) { SSI(_mm512_loadu_si512(in->src)); }
OP(load_si512) { SSI(_mm512_load_si512(in->src)); }
OP(storeu_ps) { _mm512_storeu_ps(in->dst, LPS(in->a)); }
OP(storeu_si512) { _mm512_storeu_si512(in->dst, LSI(in->a)); }
OP(store_ps) { _mm512_store_ps(in->dst, LPS(in->a)); }
OP(store_si512) { _mm512_store_si512(in->dst, LSI(in->a)); }
OP(maskz_loadu_ps) { SPS(_mm512_maskz_loadu_ps((__mmask16)in->k, in->src)); }
OP(maskz_loadu_epi32) { SSI(_mm512_maskz_loadu_epi32((__mmask16)in->k, in->src)); }
OP(maskz_loadu_epi16) { SSI(_mm512_maskz_loadu_epi16((__mmask32)in->k, in->src)); }
OP(mm256_maskz_loadu_epi16) { S256(_mm256_maskz_loadu_epi16((__mmask16)in->k, in->src)); }
OP(mm_maskz_loadu_epi8) {
  _mm_storeu_si128((__m128i *)(void *)o->v, _mm_maskz_loadu_epi8((__mmask16)in->k, in->src));
}
OP(mask_storeu_ps) { _mm512_mask_storeu_ps(in->dst, (__mmask16)in->k, LPS(in->a)); }
OP(mm256_mask_storeu_epi16) {
  _mm256_mask_storeu_epi16(in->dst, (__mmask16)in->k, L256(in->a));
}

/* ---- set, cast, move ---- */
OP(setzero_ps) { (void)in; SPS(_mm512_setzero_ps()); }
OP(setzero_si512) { (void)in; SSI(_mm512_setzero_si512()); }
OP(set1_ps) {
  float f;
  memcpy(&f, in->a, 4);
  SPS(_mm512_set1_ps(f));
}
OP(set1_epi32) {
  int x;
  memcpy(&x, in->a, 4);
  SSI(_mm512_set1_epi32(x));
}
OP(set1_epi16) {
  short x;
  memcpy(&x, in->a, 2);
  SSI(_mm512_set1_epi16(x));
}
OP(set1_epi8) { SSI(_mm512_set1_epi8((char)in->a[0])); }
OP(set_epi32) {
  int e[16];
  memcpy(e, in->a, sizeof e);
  SSI(_mm512_set_epi32(e[15], e[14], e[13], e[12], e[11], e[10], e[9], e[8], e[7], e[6],
                       e[5], e[4], e[3], e[2], e[1], e[0]));
}
OP(set_epi16) {
  short e[32];
  memcpy(e, in->a, sizeof e);
  SSI(_mm512_set_epi16(e[31], e[30], e[29], e[28], e[27], e[26], e[25], e[24], e[23],
                       e[22], e[21], e[20], e[19], e[18], e[17], e[16], e[15], e[14],
                       e[13], e[12], e[11], e[10], e[9], e[8], e[7], e[6], e[5], e[4],
                       e[3], e[2], e[1], e[0]));
}
OP(castps_si512) { SSI(_mm512_castps_si512(LPS(in->a))); }
OP(castsi512_ps) { SPS(_mm512_castsi512_ps(LSI(in->a))); }
OP(mask_mov_ps) { SPS(_mm512_mask_mov_ps(LPS(in->b), (__mmask16)in->k, LPS(in->a))); }
OP(maskz_mov_ps) { SPS(_mm512_maskz_mov_ps((__mmask16)in->k, LPS(in->a))); }
OP(mm256_mask_mov_epi16) {
  S256(_mm256_mask_mov_epi16(L256(in->b), (__mmask16)in->k, L256(in->a)));
}

/* ---- float arithmetic ---- */
OP(add_ps) { SPS(_mm512_add_ps(LPS(in->a), LPS(in->b))); }
OP(sub_ps) { SPS(_mm512_sub_ps(LPS(in->a), LPS(in->b))); }
OP(mul_ps) { SPS(_mm512_mul_ps(LPS(in->a), LPS(in->b))); }
OP(div_ps) { SPS(_mm512_div_ps(LPS(in->a), LPS(in->b))); }
OP(maskz_sub_ps) { SPS(_mm512_maskz_sub_ps((__mmask16)in->k, LPS(in->a), LPS(in->b))); }
OP(fmadd_ps) { SPS(_mm512_fmadd_ps(LPS(in->a), LPS(in->b), LPS(in->c))); }
OP(fnmadd_ps) { SPS(_mm512_fnmadd_ps(LPS(in->a), LPS(in->b), LPS(in->c))); }
OP(max_ps) { SPS(_mm512_max_ps(LPS(in->a), LPS(in->b))); }
OP(abs_ps) { SPS(_mm512_abs_ps(LPS(in->a))); }

/* ---- integer arithmetic and logic ---- */
OP(add_epi32) { SSI(_mm512_add_epi32(LSI(in->a), LSI(in->b))); }
OP(sub_epi32) { SSI(_mm512_sub_epi32(LSI(in->a), LSI(in->b))); }
OP(add_epi16) { SSI(_mm512_add_epi16(LSI(in->a), LSI(in->b))); }
OP(and_si512) { SSI(_mm512_and_si512(LSI(in->a), LSI(in->b))); }
OP(or_si512) { SSI(_mm512_or_si512(LSI(in->a), LSI(in->b))); }
OP(mask_or_epi32) {
  SSI(_mm512_mask_or_epi32(LSI(in->c), (__mmask16)in->k, LSI(in->a), LSI(in->b)));
}
OP(slli_epi32) { SSI(_mm512_slli_epi32(LSI(in->a), (unsigned)in->imm)); }
OP(srli_epi32) { SSI(_mm512_srli_epi32(LSI(in->a), (unsigned)in->imm)); }
OP(ternarylogic_epi32) {
  const __m512i a = LSI(in->a), b = LSI(in->b), c = LSI(in->c);
  switch (in->imm & 255) {
#define C(I)                                       \
  case I:                                          \
    SSI(_mm512_ternarylogic_epi32(a, b, c, I));    \
    break;
    IMM256(C)
#undef C
  }
}

/* ---- compares ---- */
OP(cmp_ps_mask) {
  const __m512 a = LPS(in->a), b = LPS(in->b);
  switch (in->imm & 31) {
#define C(I)                                 \
  case I:                                    \
    o->k = _mm512_cmp_ps_mask(a, b, I);      \
    break;
    IMM32(C)
#undef C
  }
}
OP(cmpge_epi32_mask) { o->k = _mm512_cmpge_epi32_mask(LSI(in->a), LSI(in->b)); }
OP(cmple_epi32_mask) { o->k = _mm512_cmple_epi32_mask(LSI(in->a), LSI(in->b)); }
OP(cmplt_epi32_mask) { o->k = _mm512_cmplt_epi32_mask(LSI(in->a), LSI(in->b)); }
OP(mm256_cmpeq_epi16_mask) { o->k = _mm256_cmpeq_epi16_mask(L256(in->a), L256(in->b)); }

/* ---- shuffles, permutes, unpacks ---- */
OP(shuffle_f32x4) {
  const __m512 a = LPS(in->a), b = LPS(in->b);
  switch (in->imm & 255) {
#define C(I)                                   \
  case I:                                      \
    SPS(_mm512_shuffle_f32x4(a, b, I));        \
    break;
    IMM256(C)
#undef C
  }
}
OP(shuffle_ps) {
  const __m512 a = LPS(in->a), b = LPS(in->b);
  switch (in->imm & 255) {
#define C(I)                                 \
  case I:                                    \
    SPS(_mm512_shuffle_ps(a, b, I));         \
    break;
    IMM256(C)
#undef C
  }
}
OP(permutexvar_ps) { SPS(_mm512_permutexvar_ps(LSI(in->b), LPS(in->a))); }
OP(permutex2var_ps) { SPS(_mm512_permutex2var_ps(LPS(in->a), LSI(in->b), LPS(in->c))); }
OP(permutex2var_epi16) {
  SSI(_mm512_permutex2var_epi16(LSI(in->a), LSI(in->b), LSI(in->c)));
}
OP(permutex2var_epi8) { SSI(_mm512_permutex2var_epi8(LSI(in->a), LSI(in->b), LSI(in->c))); }
OP(maskz_permutex2var_epi8) {
  SSI(_mm512_maskz_permutex2var_epi8((__mmask64)in->k, LSI(in->a), LSI(in->b), LSI(in->c)));
}
OP(unpacklo_epi8) { SSI(_mm512_unpacklo_epi8(LSI(in->a), LSI(in->b))); }
OP(unpackhi_epi8) { SSI(_mm512_unpackhi_epi8(LSI(in->a), LSI(in->b))); }
OP(unpacklo_epi16) { SSI(_mm512_unpacklo_epi16(LSI(in->a), LSI(in->b))); }
OP(unpackhi_epi16) { SSI(_mm512_unpackhi_epi16(LSI(in->a), LSI(in->b))); }

/* ---- conversions ---- */
OP(cvtepu16_epi32) { SSI(_mm512_cvtepu16_epi32(L256(in->a))); }
OP(cvtepi32_epi16) { S256(_mm512_cvtepi32_epi16(LSI(in->a))); }
OP(cvtph_ps) { SPS(_mm512_cvtph_ps(L256(in->a))); }
OP(cvtps_ph) {
  const __m512 a = LPS(in->a);
  switch (in->imm & 255) {
#define C(I)                           \
  case I:                              \
    S256(_mm512_cvtps_ph(a, I));       \
    break;
    IMM256(C)
#undef C
  }
}
OP(cvtne2ps_pbh) { SSI((__m512i)_mm512_cvtne2ps_pbh(LPS(in->a), LPS(in->b))); }
OP(cvtneps_pbh) { S256((__m256i)_mm512_cvtneps_pbh(LPS(in->a))); }
OP(dpbf16_ps) {
  SPS(_mm512_dpbf16_ps(LPS(in->c), (__m512bh)LSI(in->a), (__m512bh)LSI(in->b)));
}
OP(roundscale_ps) {
  const __m512 a = LPS(in->a);
  switch (in->imm & 255) {
#define C(I)                              \
  case I:                                 \
    SPS(_mm512_roundscale_ps(a, I));      \
    break;
    IMM256(C)
#undef C
  }
}
OP(scalef_ps) { SPS(_mm512_scalef_ps(LPS(in->a), LPS(in->b))); }
OP(reduce_add_ps) { o->f = _mm512_reduce_add_ps(LPS(in->a)); }
OP(reduce_max_ps) { o->f = _mm512_reduce_max_ps(LPS(in->a)); }

/* The table: the intrinsic's name and its op. */
#define E(name, op) {name, op_##op},
const emu_op OPS_TABLE[] = {
    E("_mm512_loadu_ps", loadu_ps)
    E("_mm512_loadu_si512", loadu_si512)
    E("_mm512_load_si512", load_si512)
    E("_mm512_storeu_ps", storeu_ps)
    E("_mm512_storeu_si512", storeu_si512)
    E("_mm512_store_ps", store_ps)
    E("_mm512_store_si512", store_si512)
    E("_mm512_maskz_loadu_ps", maskz_loadu_ps)
    E("_mm512_maskz_loadu_epi32", maskz_loadu_epi32)
    E("_mm512_maskz_loadu_epi16", maskz_loadu_epi16)
    E("_mm256_maskz_loadu_epi16", mm256_maskz_loadu_epi16)
    E("_mm_maskz_loadu_epi8", mm_maskz_loadu_epi8)
    E("_mm512_mask_storeu_ps", mask_storeu_ps)
    E("_mm256_mask_storeu_epi16", mm256_mask_storeu_epi16)
    E("_mm512_setzero_ps", setzero_ps)
    E("_mm512_setzero_si512", setzero_si512)
    E("_mm512_set1_ps", set1_ps)
    E("_mm512_set1_epi32", set1_epi32)
    E("_mm512_set1_epi16", set1_epi16)
    E("_mm512_set1_epi8", set1_epi8)
    E("_mm512_set_epi32", set_epi32)
    E("_mm512_set_epi16", set_epi16)
    E("_mm512_castps_si512", castps_si512)
    E("_mm512_castsi512_ps", castsi512_ps)
    E("_mm512_mask_mov_ps", mask_mov_ps)
    E("_mm512_maskz_mov_ps", maskz_mov_ps)
    E("_mm256_mask_mov_epi16", mm256_mask_mov_epi16)
    E("_mm512_add_ps", add_ps)
    E("_mm512_sub_ps", sub_ps)
    E("_mm512_mul_ps", mul_ps)
    E("_mm512_div_ps", div_ps)
    E("_mm512_maskz_sub_ps", maskz_sub_ps)
    E("_mm512_fmadd_ps", fmadd_ps)
    E("_mm512_fnmadd_ps", fnmadd_ps)
    E("_mm512_max_ps", max_ps)
    E("_mm512_abs_ps", abs_ps)
    E("_mm512_add_epi32", add_epi32)
    E("_mm512_sub_epi32", sub_epi32)
    E("_mm512_add_epi16", add_epi16)
    E("_mm512_and_si512", and_si512)
    E("_mm512_or_si512", or_si512)
    E("_mm512_mask_or_epi32", mask_or_epi32)
    E("_mm512_slli_epi32", slli_epi32)
    E("_mm512_srli_epi32", srli_epi32)
    E("_mm512_ternarylogic_epi32", ternarylogic_epi32)
    E("_mm512_cmp_ps_mask", cmp_ps_mask)
    E("_mm512_cmpge_epi32_mask", cmpge_epi32_mask)
    E("_mm512_cmple_epi32_mask", cmple_epi32_mask)
    E("_mm512_cmplt_epi32_mask", cmplt_epi32_mask)
    E("_mm256_cmpeq_epi16_mask", mm256_cmpeq_epi16_mask)
    E("_mm512_shuffle_f32x4", shuffle_f32x4)
    E("_mm512_shuffle_ps", shuffle_ps)
    E("_mm512_permutexvar_ps", permutexvar_ps)
    E("_mm512_permutex2var_ps", permutex2var_ps)
    E("_mm512_permutex2var_epi16", permutex2var_epi16)
    E("_mm512_permutex2var_epi8", permutex2var_epi8)
    E("_mm512_maskz_permutex2var_epi8", maskz_permutex2var_epi8)
    E("_mm512_unpacklo_epi8", unpacklo_epi8)
    E("_mm512_unpackhi_epi8", unpackhi_epi8)
    E("_mm512_unpacklo_epi16", unpacklo_epi16)
    E("_mm512_unpackhi_epi16", unpackhi_epi16)
    E("_mm512_cvtepu16_epi32", cvtepu16_epi32)
    E("_mm512_cvtepi32_epi16", cvtepi32_epi16)
    E("_mm512_cvtph_ps", cvtph_ps)
    E("_mm512_cvtps_ph", cvtps_ph)
    E("_mm512_cvtne2ps_pbh", cvtne2ps_pbh)
    E("_mm512_cvtneps_pbh", cvtneps_pbh)
    E("_mm512_dpbf16_ps", dpbf16_ps)
    E("_mm512_roundscale_ps", roundscale_ps)
    E("_mm512_scalef_ps", scalef_ps)
    E("_mm512_reduce_add_ps", reduce_add_ps)
    E("_mm512_reduce_max_ps", reduce_max_ps)
};
#undef E

#ifndef RPA_EMU_OPS_NATIVE
const int rpa_emu_ops_count = (int)(sizeof rpa_emu_ops_emulated / sizeof rpa_emu_ops_emulated[0]);
#endif
