/* TEST-ONLY: an emulation, in plain C and AVX2, of the AVX-512 intrinsics
   (F, BW, DQ, VL, VBMI, BF16) that src/kernels/avx512/ uses, so that the
   avx512 kernel set can be built and tested on a CPU without AVX-512
   (-DRPA_EMULATE=avx512, tests/emu/avx512_emu_kernels.h). Never part of a
   build a user gets.

   Each emu_<intrinsic> gives the bits Intel's manual (SDM pseudo-code,
   Intrinsics Guide) gives for the instruction behind it, on every input:
   lane orders of the shuffles, permutes and unpacks (per 128-bit lane
   where the instruction works per lane); masked loads and stores touch no
   byte of a masked-off element (they read row tails next to the end of a
   buffer); vdpbf16ps and the bf16 conversions with their own DAZ / FTZ /
   round-to-nearest-even rules (MXCSR not consulted); vcvtph2ps,
   vcvtps2ph, vrndscaleps (M = 0), vmaxps and vcmpps as the host's AVX /
   F16C forms of the same instruction, which compute the same thing per
   lane (and follow MXCSR as the AVX-512 forms do). Where the compiler's
   header defines an intrinsic as a sequence (_mm512_reduce_add_ps,
   _mm512_reduce_max_ps), the emulation follows GCC's sequence, so its
   result is bitwise that of a gcc-built native binary. tests/
   test_emu_avx512.c checks all of this, and on a CPU with AVX-512 also
   compares every function with the real instruction.

   The types are GNU vector types of the native sizes, so the casts the
   kernels write ((__m512bh)x, (__m512i)y, (__m256i)z) keep working. With
   RPA_EMU_AVX512_RENAME defined, the native names (__m512, _mm512_add_ps,
   ...) are macros for these, for code written against <immintrin.h>; an
   AVX-512 intrinsic not emulated here then fails to compile (an
   always_inline target mismatch), it is never silently native.

   Speed: gcc keeps 64-byte vectors in memory when AVX-512 is off, so the
   emulated set runs several times slower than native code; it is for
   tests only. */
#ifndef RPA_TESTS_EMU_AVX512_EMU_H
#define RPA_TESTS_EMU_AVX512_EMU_H

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "tests/emu/avx512_emu.h needs -mavx2 -mfma -mf16c"
#endif

#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every function here is EMU_INLINE or EMU_CALL. The ones with loops or
   wide bodies are called, not inlined (EMU_CALL): the kernels unroll and
   inline heavily, and inlined copies of these made a kernel file take
   minutes longer to compile. */
#define EMU_INLINE static inline
#define EMU_CALL static __attribute__((noinline, unused))

/* ---- types --------------------------------------------------------------- */

typedef float emu_m512 __attribute__((vector_size(64), aligned(64), may_alias));
typedef long long emu_m512i __attribute__((vector_size(64), aligned(64), may_alias));
typedef short emu_m512bh __attribute__((vector_size(64), aligned(64), may_alias));
typedef short emu_m256bh __attribute__((vector_size(32), aligned(32), may_alias));

/* Unsigned element views for integer arithmetic (wrapping, no UB). */
typedef uint32_t emu_v16su __attribute__((vector_size(64)));
typedef uint16_t emu_v32hu __attribute__((vector_size(64)));
typedef uint64_t emu_v8du __attribute__((vector_size(64)));

/* A 512-bit value seen as lanes or as two 256-bit halves (C11 allows
   reading a union member other than the one last written). */
typedef union emu_v512 {
  emu_m512 ps;
  emu_m512i si;
  emu_m512bh bh;
  __m256 ps2[2];
  __m256i si2[2];
  __m128i si4[4];
  float f32[16];
  uint32_t u32[16];
  int32_t i32[16];
  uint16_t u16[32];
  uint8_t u8[64];
} emu_v512;

typedef union emu_v256 {
  __m256i si;
  __m256 ps;
  emu_m256bh bh;
  __m128i si2[2];
  int16_t i16[16];
  uint16_t u16[16];
  uint8_t u8[32];
} emu_v256;

typedef union emu_v128 {
  __m128i si;
  uint8_t u8[16];
} emu_v128;

#define EMU_PS(x) ((emu_v512){.ps = (x)})
#define EMU_SI(x) ((emu_v512){.si = (x)})
#define EMU_BH(x) ((emu_v512){.bh = (x)})

/* The fault the instruction would raise: an aligned load or store
   (vmovaps, vmovdqa32) on an address that is not 64-byte aligned is #GP. */
EMU_INLINE void emu_check_aligned64(const void *p, const char *what) {
  if ((uintptr_t)p & 63) {
    fprintf(stderr, "avx512 emulation: %s on %p, not 64-byte aligned (#GP on hardware)\n",
            what, p);
    abort();
  }
}

/* ---- loads and stores ---------------------------------------------------- */

EMU_INLINE emu_m512 emu_mm512_loadu_ps(const void *p) {
  emu_m512 r;
  memcpy(&r, p, 64);
  return r;
}

EMU_INLINE emu_m512i emu_mm512_loadu_si512(const void *p) {
  emu_m512i r;
  memcpy(&r, p, 64);
  return r;
}

EMU_INLINE emu_m512i emu_mm512_load_si512(const void *p) {
  emu_check_aligned64(p, "_mm512_load_si512");
  return emu_mm512_loadu_si512(p);
}

EMU_INLINE void emu_mm512_storeu_ps(void *p, emu_m512 a) { memcpy(p, &a, 64); }

EMU_INLINE void emu_mm512_storeu_si512(void *p, emu_m512i a) { memcpy(p, &a, 64); }

EMU_INLINE void emu_mm512_store_ps(void *p, emu_m512 a) {
  emu_check_aligned64(p, "_mm512_store_ps");
  memcpy(p, &a, 64);
}

EMU_INLINE void emu_mm512_store_si512(void *p, emu_m512i a) {
  emu_check_aligned64(p, "_mm512_store_si512");
  memcpy(p, &a, 64);
}

/* Masked moves of n elements of `size` bytes between memory and a register
   image: element i only where bit i of k is set; the bytes of the other
   elements are neither read nor written (the instructions suppress faults
   on them, and the kernels rely on it to read the tail of a row that ends
   next to unmapped memory). */
EMU_INLINE void emu_load_masked(void *dst, const void *src, uint64_t k, int n,
                                   int size) {
  if (n == 64 ? k == ~(uint64_t)0 : k == ((uint64_t)1 << n) - 1) {
    memcpy(dst, src, (size_t)n * (size_t)size);
    return;
  }
  for (int i = 0; i < n; i++)
    if (k >> i & 1)
      memcpy((char *)dst + i * size, (const char *)src + i * size, (size_t)size);
}

EMU_INLINE void emu_store_masked(void *dst, const void *src, uint64_t k, int n,
                                    int size) {
  if (n == 64 ? k == ~(uint64_t)0 : k == ((uint64_t)1 << n) - 1) {
    memcpy(dst, src, (size_t)n * (size_t)size);
    return;
  }
  for (int i = 0; i < n; i++)
    if (k >> i & 1)
      memcpy((char *)dst + i * size, (const char *)src + i * size, (size_t)size);
}

/* vmovups zmm{k}{z}: element i from p where k[i], else 0. */
EMU_INLINE emu_m512 emu_mm512_maskz_loadu_ps(__mmask16 k, const void *p) {
  emu_v512 r = {.u32 = {0}};
  emu_load_masked(&r, p, k, 16, 4);
  return r.ps;
}

/* vmovdqu32 zmm{k}{z}. */
EMU_INLINE emu_m512i emu_mm512_maskz_loadu_epi32(__mmask16 k, const void *p) {
  emu_v512 r = {.u32 = {0}};
  emu_load_masked(&r, p, k, 16, 4);
  return r.si;
}

/* vmovdqu16 zmm{k}{z}: 32 words. */
EMU_INLINE emu_m512i emu_mm512_maskz_loadu_epi16(__mmask32 k, const void *p) {
  emu_v512 r = {.u32 = {0}};
  emu_load_masked(&r, p, k, 32, 2);
  return r.si;
}

/* vmovdqu16 ymm{k}{z} (AVX512VL+BW): 16 words. */
EMU_INLINE __m256i emu_mm256_maskz_loadu_epi16(__mmask16 k, const void *p) {
  emu_v256 r = {.u16 = {0}};
  emu_load_masked(&r, p, k, 16, 2);
  return r.si;
}

/* vmovdqu8 xmm{k}{z} (AVX512VL+BW): 16 bytes. */
EMU_INLINE __m128i emu_mm_maskz_loadu_epi8(__mmask16 k, const void *p) {
  emu_v128 r = {.u8 = {0}};
  emu_load_masked(&r, p, k, 16, 1);
  return r.si;
}

/* vmovups m512{k}. */
EMU_INLINE void emu_mm512_mask_storeu_ps(void *p, __mmask16 k, emu_m512 a) {
  emu_store_masked(p, &a, k, 16, 4);
}

/* vmovdqu16 m256{k} (AVX512VL+BW). */
EMU_INLINE void emu_mm256_mask_storeu_epi16(void *p, __mmask16 k, __m256i a) {
  emu_store_masked(p, &a, k, 16, 2);
}

/* ---- set, cast, move ------------------------------------------------------- */

EMU_INLINE emu_m512 emu_mm512_setzero_ps(void) { return (emu_m512){0}; }
EMU_INLINE emu_m512i emu_mm512_setzero_si512(void) { return (emu_m512i){0}; }

EMU_INLINE emu_m512 emu_mm512_set1_ps(float a) {
  return (emu_m512){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a};
}

EMU_INLINE emu_m512i emu_mm512_set1_epi32(int a) {
  emu_v512 r;
  for (int i = 0; i < 16; i++) r.i32[i] = a;
  return r.si;
}

EMU_INLINE emu_m512i emu_mm512_set1_epi16(short a) {
  emu_v512 r;
  for (int i = 0; i < 32; i++) r.u16[i] = (uint16_t)a;
  return r.si;
}

EMU_INLINE emu_m512i emu_mm512_set1_epi8(char a) {
  emu_v512 r;
  memset(r.u8, (unsigned char)a, 64);
  return r.si;
}

/* _mm512_set_*: the first argument is the highest element. */
EMU_INLINE emu_m512i emu_mm512_set_epi32(int e15, int e14, int e13, int e12, int e11,
                                            int e10, int e9, int e8, int e7, int e6,
                                            int e5, int e4, int e3, int e2, int e1,
                                            int e0) {
  const emu_v512 r = {.i32 = {e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, e11, e12,
                              e13, e14, e15}};
  return r.si;
}

EMU_INLINE emu_m512i emu_mm512_set_epi16(
    short e31, short e30, short e29, short e28, short e27, short e26, short e25,
    short e24, short e23, short e22, short e21, short e20, short e19, short e18,
    short e17, short e16, short e15, short e14, short e13, short e12, short e11,
    short e10, short e9, short e8, short e7, short e6, short e5, short e4, short e3,
    short e2, short e1, short e0) {
  const short e[32] = {e0,  e1,  e2,  e3,  e4,  e5,  e6,  e7,  e8,  e9,  e10,
                       e11, e12, e13, e14, e15, e16, e17, e18, e19, e20, e21,
                       e22, e23, e24, e25, e26, e27, e28, e29, e30, e31};
  emu_v512 r;
  memcpy(r.u16, e, sizeof e);
  return r.si;
}

EMU_INLINE emu_m512i emu_mm512_castps_si512(emu_m512 a) { return (emu_m512i)a; }
EMU_INLINE emu_m512 emu_mm512_castsi512_ps(emu_m512i a) { return (emu_m512)a; }

/* Element i of a where k[i], else of src (merge) or 0 (zeroing). */
EMU_CALL emu_m512 emu_mm512_mask_mov_ps(emu_m512 src, __mmask16 k, emu_m512 a) {
  emu_v512 r = EMU_PS(src);
  const emu_v512 x = EMU_PS(a);
  for (int i = 0; i < 16; i++)
    if (k >> i & 1) r.u32[i] = x.u32[i];
  return r.ps;
}

EMU_INLINE emu_m512 emu_mm512_maskz_mov_ps(__mmask16 k, emu_m512 a) {
  return emu_mm512_mask_mov_ps(emu_mm512_setzero_ps(), k, a);
}

/* vmovdqu16 ymm{k} (AVX512VL+BW). */
EMU_CALL __m256i emu_mm256_mask_mov_epi16(__m256i src, __mmask16 k, __m256i a) {
  emu_v256 r = {.si = src};
  const emu_v256 x = {.si = a};
  for (int i = 0; i < 16; i++)
    if (k >> i & 1) r.u16[i] = x.u16[i];
  return r.si;
}

/* ---- float arithmetic ------------------------------------------------------ */

/* add, sub, mul, div: IEEE operations in the MXCSR rounding mode, as
   vaddps & co. (GCC's own header writes them as these vector operators, so
   -ffp-contract=fast may fuse them into FMAs as it may natively). */
EMU_INLINE emu_m512 emu_mm512_add_ps(emu_m512 a, emu_m512 b) { return a + b; }
EMU_INLINE emu_m512 emu_mm512_sub_ps(emu_m512 a, emu_m512 b) { return a - b; }
EMU_INLINE emu_m512 emu_mm512_mul_ps(emu_m512 a, emu_m512 b) { return a * b; }
EMU_INLINE emu_m512 emu_mm512_div_ps(emu_m512 a, emu_m512 b) { return a / b; }

EMU_INLINE emu_m512 emu_mm512_maskz_sub_ps(__mmask16 k, emu_m512 a, emu_m512 b) {
  return emu_mm512_maskz_mov_ps(k, a - b);
}

/* vfmadd: a * b + c with one rounding (the host's FMA, per half). */
EMU_INLINE emu_m512 emu_mm512_fmadd_ps(emu_m512 a, emu_m512 b, emu_m512 c) {
  const emu_v512 x = EMU_PS(a), y = EMU_PS(b), z = EMU_PS(c);
  emu_v512 r;
  r.ps2[0] = _mm256_fmadd_ps(x.ps2[0], y.ps2[0], z.ps2[0]);
  r.ps2[1] = _mm256_fmadd_ps(x.ps2[1], y.ps2[1], z.ps2[1]);
  return r.ps;
}

/* vfnmadd: -(a * b) + c with one rounding. */
EMU_INLINE emu_m512 emu_mm512_fnmadd_ps(emu_m512 a, emu_m512 b, emu_m512 c) {
  const emu_v512 x = EMU_PS(a), y = EMU_PS(b), z = EMU_PS(c);
  emu_v512 r;
  r.ps2[0] = _mm256_fnmadd_ps(x.ps2[0], y.ps2[0], z.ps2[0]);
  r.ps2[1] = _mm256_fnmadd_ps(x.ps2[1], y.ps2[1], z.ps2[1]);
  return r.ps;
}

/* vmaxps: a[i] > b[i] ? a[i] : b[i] (so b when either is NaN, and b for
   two zeros), the host's vmaxps per half. */
EMU_INLINE emu_m512 emu_mm512_max_ps(emu_m512 a, emu_m512 b) {
  const emu_v512 x = EMU_PS(a), y = EMU_PS(b);
  emu_v512 r;
  r.ps2[0] = _mm256_max_ps(x.ps2[0], y.ps2[0]);
  r.ps2[1] = _mm256_max_ps(x.ps2[1], y.ps2[1]);
  return r.ps;
}

/* The sign bit cleared (vpandd, as GCC's header does it). */
EMU_INLINE emu_m512 emu_mm512_abs_ps(emu_m512 a) {
  return (emu_m512)((emu_v16su)a & 0x7fffffffu);
}

/* ---- integer arithmetic and logic ------------------------------------------ */

EMU_INLINE emu_m512i emu_mm512_add_epi32(emu_m512i a, emu_m512i b) {
  return (emu_m512i)((emu_v16su)a + (emu_v16su)b);
}
EMU_INLINE emu_m512i emu_mm512_sub_epi32(emu_m512i a, emu_m512i b) {
  return (emu_m512i)((emu_v16su)a - (emu_v16su)b);
}
EMU_INLINE emu_m512i emu_mm512_add_epi16(emu_m512i a, emu_m512i b) {
  return (emu_m512i)((emu_v32hu)a + (emu_v32hu)b);
}
EMU_INLINE emu_m512i emu_mm512_and_si512(emu_m512i a, emu_m512i b) { return a & b; }
EMU_INLINE emu_m512i emu_mm512_or_si512(emu_m512i a, emu_m512i b) { return a | b; }

/* vpord zmm{k}: a | b where k[i], else src. */
EMU_INLINE emu_m512i emu_mm512_mask_or_epi32(emu_m512i src, __mmask16 k, emu_m512i a,
                                                emu_m512i b) {
  return emu_mm512_castps_si512(emu_mm512_mask_mov_ps(
      emu_mm512_castsi512_ps(src), k, emu_mm512_castsi512_ps(a | b)));
}

/* vpslld / vpsrld: counts above 31 give 0. */
EMU_INLINE emu_m512i emu_mm512_slli_epi32(emu_m512i a, unsigned int n) {
  if (n > 31) return emu_mm512_setzero_si512();
  return (emu_m512i)((emu_v16su)a << n);
}
EMU_INLINE emu_m512i emu_mm512_srli_epi32(emu_m512i a, unsigned int n) {
  if (n > 31) return emu_mm512_setzero_si512();
  return (emu_m512i)((emu_v16su)a >> n);
}

/* vpternlogd: bit j of the result is bit (a_j << 2 | b_j << 1 | c_j) of
   imm (the SDM's table index). */
EMU_CALL emu_m512i emu_mm512_ternarylogic_epi32(emu_m512i a, emu_m512i b,
                                                     emu_m512i c, int imm) {
  const emu_v8du x = (emu_v8du)a, y = (emu_v8du)b, z = (emu_v8du)c;
  emu_v8du r = {0};
  for (int t = 0; t < 8; t++)
    if (imm >> t & 1) r |= (t & 4 ? x : ~x) & (t & 2 ? y : ~y) & (t & 1 ? z : ~z);
  return (emu_m512i)r;
}

/* ---- compares -------------------------------------------------------------- */

/* vcmpps with predicate p (0..31): the host's vcmpps per half, whose 32
   predicates are the same (a switch, so p stays an immediate). */
#define EMU_CMP_CASE(P)                                                      \
  case P:                                                                    \
    lo = _mm256_movemask_ps(_mm256_cmp_ps(x.ps2[0], y.ps2[0], P));           \
    hi = _mm256_movemask_ps(_mm256_cmp_ps(x.ps2[1], y.ps2[1], P));           \
    break;
EMU_CALL __mmask16 emu_mm512_cmp_ps_mask(emu_m512 a, emu_m512 b, int p) {
  const emu_v512 x = EMU_PS(a), y = EMU_PS(b);
  int lo = 0, hi = 0;
  switch (p & 31) {
    EMU_CMP_CASE(0) EMU_CMP_CASE(1) EMU_CMP_CASE(2) EMU_CMP_CASE(3)
    EMU_CMP_CASE(4) EMU_CMP_CASE(5) EMU_CMP_CASE(6) EMU_CMP_CASE(7)
    EMU_CMP_CASE(8) EMU_CMP_CASE(9) EMU_CMP_CASE(10) EMU_CMP_CASE(11)
    EMU_CMP_CASE(12) EMU_CMP_CASE(13) EMU_CMP_CASE(14) EMU_CMP_CASE(15)
    EMU_CMP_CASE(16) EMU_CMP_CASE(17) EMU_CMP_CASE(18) EMU_CMP_CASE(19)
    EMU_CMP_CASE(20) EMU_CMP_CASE(21) EMU_CMP_CASE(22) EMU_CMP_CASE(23)
    EMU_CMP_CASE(24) EMU_CMP_CASE(25) EMU_CMP_CASE(26) EMU_CMP_CASE(27)
    EMU_CMP_CASE(28) EMU_CMP_CASE(29) EMU_CMP_CASE(30) EMU_CMP_CASE(31)
  }
  return (__mmask16)(lo | hi << 8);
}
#undef EMU_CMP_CASE

/* vpcmpd (signed dwords): bit i = a[i] OP b[i]. */
EMU_CALL __mmask16 emu_mm512_cmpge_epi32_mask(emu_m512i a, emu_m512i b) {
  const emu_v512 x = EMU_SI(a), y = EMU_SI(b);
  unsigned m = 0;
  for (int i = 0; i < 16; i++) m |= (unsigned)(x.i32[i] >= y.i32[i]) << i;
  return (__mmask16)m;
}
EMU_INLINE __mmask16 emu_mm512_cmple_epi32_mask(emu_m512i a, emu_m512i b) {
  return emu_mm512_cmpge_epi32_mask(b, a);
}
EMU_INLINE __mmask16 emu_mm512_cmplt_epi32_mask(emu_m512i a, emu_m512i b) {
  return (__mmask16)~emu_mm512_cmpge_epi32_mask(a, b);
}

/* vpcmpeqw ymm -> k (AVX512VL+BW): 16 words. */
EMU_CALL __mmask16 emu_mm256_cmpeq_epi16_mask(__m256i a, __m256i b) {
  const emu_v256 x = {.si = a}, y = {.si = b};
  unsigned m = 0;
  for (int i = 0; i < 16; i++) m |= (unsigned)(x.u16[i] == y.u16[i]) << i;
  return (__mmask16)m;
}

/* ---- shuffles, permutes, unpacks ------------------------------------------- */

/* vshuff32x4: 128-bit lane 0 and 1 of the result are lanes imm[1:0] and
   imm[3:2] of a, lanes 2 and 3 are lanes imm[5:4] and imm[7:6] of b. */
EMU_CALL emu_m512 emu_mm512_shuffle_f32x4(emu_m512 a, emu_m512 b, int imm) {
  const emu_v512 x = EMU_PS(a), y = EMU_PS(b);
  emu_v512 r;
  r.si4[0] = x.si4[imm & 3];
  r.si4[1] = x.si4[imm >> 2 & 3];
  r.si4[2] = y.si4[imm >> 4 & 3];
  r.si4[3] = y.si4[imm >> 6 & 3];
  return r.ps;
}

/* vshufps, within each 128-bit lane L: elements a[imm[1:0]], a[imm[3:2]],
   b[imm[5:4]], b[imm[7:6]] of that lane. */
EMU_CALL emu_m512 emu_mm512_shuffle_ps(emu_m512 a, emu_m512 b, int imm) {
  const emu_v512 x = EMU_PS(a), y = EMU_PS(b);
  emu_v512 r;
  for (int l = 0; l < 4; l++) {
    r.u32[4 * l + 0] = x.u32[4 * l + (imm & 3)];
    r.u32[4 * l + 1] = x.u32[4 * l + (imm >> 2 & 3)];
    r.u32[4 * l + 2] = y.u32[4 * l + (imm >> 4 & 3)];
    r.u32[4 * l + 3] = y.u32[4 * l + (imm >> 6 & 3)];
  }
  return r.ps;
}

/* vpermps: element i is a[idx[i] mod 16]. */
EMU_CALL emu_m512 emu_mm512_permutexvar_ps(emu_m512i idx, emu_m512 a) {
  const emu_v512 ix = EMU_SI(idx), x = EMU_PS(a);
  emu_v512 r;
  for (int i = 0; i < 16; i++) r.u32[i] = x.u32[ix.u32[i] & 15];
  return r.ps;
}

/* vpermi2ps / vpermt2ps: element i is (idx[i] bit 4 ? b : a)[idx[i] mod 16]. */
EMU_CALL emu_m512 emu_mm512_permutex2var_ps(emu_m512 a, emu_m512i idx, emu_m512 b) {
  const emu_v512 ix = EMU_SI(idx), x = EMU_PS(a), y = EMU_PS(b);
  emu_v512 r;
  for (int i = 0; i < 16; i++) {
    const uint32_t j = ix.u32[i];
    r.u32[i] = (j & 16 ? y.u32 : x.u32)[j & 15];
  }
  return r.ps;
}

/* vpermi2w / vpermt2w: word i is (idx[i] bit 5 ? b : a)[idx[i] mod 32]. */
EMU_CALL emu_m512i emu_mm512_permutex2var_epi16(emu_m512i a, emu_m512i idx,
                                                     emu_m512i b) {
  const emu_v512 ix = EMU_SI(idx), x = EMU_SI(a), y = EMU_SI(b);
  emu_v512 r;
  for (int i = 0; i < 32; i++) {
    const uint16_t j = ix.u16[i];
    r.u16[i] = (j & 32 ? y.u16 : x.u16)[j & 31];
  }
  return r.si;
}

/* vpermi2b / vpermt2b (VBMI): byte i is (idx[i] bit 6 ? b : a)[idx[i] mod
   64]; the masked form zeroes the bytes whose bit of k is clear. */
EMU_CALL emu_m512i emu_mm512_maskz_permutex2var_epi8(__mmask64 k, emu_m512i a,
                                                          emu_m512i idx, emu_m512i b) {
  const emu_v512 ix = EMU_SI(idx), x = EMU_SI(a), y = EMU_SI(b);
  emu_v512 r;
  for (int i = 0; i < 64; i++) {
    const uint8_t j = ix.u8[i];
    r.u8[i] = k >> i & 1 ? (j & 64 ? y.u8 : x.u8)[j & 63] : 0;
  }
  return r.si;
}

EMU_INLINE emu_m512i emu_mm512_permutex2var_epi8(emu_m512i a, emu_m512i idx,
                                                    emu_m512i b) {
  return emu_mm512_maskz_permutex2var_epi8(~(__mmask64)0, a, idx, b);
}

/* vpunpck{l,h}{bw,wd}: per 128-bit lane, the low (high) 8 bytes / 4 words
   of a and b interleaved, a first; the host's AVX2 forms work per 128-bit
   lane the same way. */
#define EMU_UNPACK(NAME, HOST)                                                 \
  EMU_INLINE emu_m512i NAME(emu_m512i a, emu_m512i b) {                     \
    const emu_v512 x = EMU_SI(a), y = EMU_SI(b);                               \
    emu_v512 r;                                                                \
    r.si2[0] = HOST(x.si2[0], y.si2[0]);                                       \
    r.si2[1] = HOST(x.si2[1], y.si2[1]);                                       \
    return r.si;                                                               \
  }
EMU_UNPACK(emu_mm512_unpacklo_epi8, _mm256_unpacklo_epi8)
EMU_UNPACK(emu_mm512_unpackhi_epi8, _mm256_unpackhi_epi8)
EMU_UNPACK(emu_mm512_unpacklo_epi16, _mm256_unpacklo_epi16)
EMU_UNPACK(emu_mm512_unpackhi_epi16, _mm256_unpackhi_epi16)
#undef EMU_UNPACK

/* ---- conversions ----------------------------------------------------------- */

/* vpmovzxwd: 16 words zero-extended to dwords. */
EMU_INLINE emu_m512i emu_mm512_cvtepu16_epi32(__m256i a) {
  const emu_v256 x = {.si = a};
  emu_v512 r;
  r.si2[0] = _mm256_cvtepu16_epi32(x.si2[0]);
  r.si2[1] = _mm256_cvtepu16_epi32(x.si2[1]);
  return r.si;
}

/* vpmovdw: each dword truncated to its low word. */
EMU_CALL __m256i emu_mm512_cvtepi32_epi16(emu_m512i a) {
  const emu_v512 x = EMU_SI(a);
  emu_v256 r;
  for (int i = 0; i < 16; i++) r.u16[i] = (uint16_t)x.u32[i];
  return r.si;
}

/* vcvtph2ps: exact (the host's F16C vcvtph2ps per 8 halves). */
EMU_INLINE emu_m512 emu_mm512_cvtph_ps(__m256i a) {
  const emu_v256 x = {.si = a};
  emu_v512 r;
  r.ps2[0] = _mm256_cvtph_ps(x.si2[0]);
  r.ps2[1] = _mm256_cvtph_ps(x.si2[1]);
  return r.ps;
}

/* vcvtps2ph with imm8 rounding control (imm[1:0] the mode, imm[2] MXCSR's
   mode instead, imm[7:3] ignored): the host's F16C vcvtps2ph per 8 floats,
   with the same imm8 (a switch, so it stays an immediate). */
#define EMU_CVTPS_PH_CASE(I)                                                   \
  case I:                                                                      \
    r.si2[0] = _mm256_cvtps_ph(x.ps2[0], I);                                   \
    r.si2[1] = _mm256_cvtps_ph(x.ps2[1], I);                                   \
    break;
EMU_CALL __m256i emu_mm512_cvtps_ph(emu_m512 a, int imm) {
  const emu_v512 x = EMU_PS(a);
  emu_v256 r;
  switch (imm & 7) {
    EMU_CVTPS_PH_CASE(0) EMU_CVTPS_PH_CASE(1) EMU_CVTPS_PH_CASE(2)
    EMU_CVTPS_PH_CASE(3) EMU_CVTPS_PH_CASE(4) EMU_CVTPS_PH_CASE(5)
    EMU_CVTPS_PH_CASE(6) EMU_CVTPS_PH_CASE(7)
  }
  return r.si;
}
#undef EMU_CVTPS_PH_CASE

/* The SDM's convert_fp32_to_bfloat16 (VCVTNEPS2BF16): zero or denormal ->
   a zero of its sign (DAZ); infinity -> its top half; NaN -> its top half
   with the quiet bit (bit 6) set; otherwise round to nearest even by the
   integer add of 0x7fff + bit 16. MXCSR is not consulted. */
EMU_INLINE uint16_t emu_cvtne_f32_bf16(uint32_t x) {
  const uint32_t exp = x & 0x7f800000u, man = x & 0x007fffffu;
  if (exp == 0) return (uint16_t)(x >> 16 & 0x8000u);
  if (exp == 0x7f800000u) return (uint16_t)(x >> 16 | (man ? 0x40u : 0u));
  return (uint16_t)((x + 0x7fffu + (x >> 16 & 1u)) >> 16);
}

/* vcvtne2ps2bf16: words 0-15 from b, 16-31 from a. */
EMU_CALL emu_m512bh emu_mm512_cvtne2ps_pbh(emu_m512 a, emu_m512 b) {
  const emu_v512 x = EMU_PS(a), y = EMU_PS(b);
  emu_v512 r;
  for (int i = 0; i < 16; i++) {
    r.u16[i] = emu_cvtne_f32_bf16(y.u32[i]);
    r.u16[16 + i] = emu_cvtne_f32_bf16(x.u32[i]);
  }
  return r.bh;
}

/* vcvtneps2bf16 zmm -> ymm. */
EMU_CALL emu_m256bh emu_mm512_cvtneps_pbh(emu_m512 a) {
  const emu_v512 x = EMU_PS(a);
  emu_v256 r;
  for (int i = 0; i < 16; i++) r.u16[i] = emu_cvtne_f32_bf16(x.u32[i]);
  return r.bh;
}

/* ---- vdpbf16ps ------------------------------------------------------------- */

/* One step of VDPBF16PS on 8 lanes: acc + x * y as "an FP32 FMA with DAZ
   in, FTZ out and round to nearest even; MXCSR neither consulted nor
   updated" (SDM; the BF16 numerics paper 338302: a three-way FP32 FMA with
   DAZ and FTZ on):
   - NaN: the first NaN operand in the order x (src1), y (src2), acc,
     quieted (x86's NaN priority, as the SDM's FMA NaN table gives it);
     inf * 0 and inf - inf give the default NaN 0xffc00000, as the host's
     FMA does;
   - DAZ: a denormal x, y or acc is a zero of its sign;
   - the exact x * y + acc rounded once to nearest even (the host's FMA in
     the default MXCSR mode);
   - FTZ: a result that is tiny (nonzero and below 2^-126 after rounding to
     24 bits with an unbounded exponent, SDM Vol. 1 4.9.1.5) becomes a zero
     of its sign. The host's result r is rounded at denormal precision, so
     tininess is decided on the same FMA with y and acc scaled by 2^64
     (exact, and no overflow where the result is tiny): |that| < 2^-62.
   The host's FMA rounds in MXCSR's mode, with MXCSR's FTZ and DAZ: this is
   exact with the default MXCSR (nearest even, neither flag), which rpa
   never changes. */
EMU_INLINE __m256 emu_dpbf16_step(__m256 acc, __m256 x, __m256 y) {
  const __m256i expmask = _mm256_set1_epi32(0x7f800000);
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
  const __m256i quiet = _mm256_set1_epi32(0x00400000);
  /* DAZ: exponent field 0 -> keep the sign only */
#define EMU_DAZ(v)                                                           \
  _mm256_castsi256_ps(_mm256_blendv_epi8(                                    \
      _mm256_castps_si256(v), _mm256_and_si256(_mm256_castps_si256(v), sign), \
      _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), expmask),  \
                         _mm256_setzero_si256())))
  const __m256 xd = EMU_DAZ(x), yd = EMU_DAZ(y), cd = EMU_DAZ(acc);
#undef EMU_DAZ
  __m256 r = _mm256_fmadd_ps(xd, yd, cd);
  const __m256 two64 = _mm256_set1_ps(0x1p64f);
  const __m256 rs = _mm256_fmadd_ps(xd, _mm256_mul_ps(yd, two64), _mm256_mul_ps(cd, two64));
  const __m256 absrs = _mm256_castsi256_ps(
      _mm256_andnot_si256(sign, _mm256_castps_si256(rs)));
  const __m256 tiny = _mm256_cmp_ps(absrs, _mm256_set1_ps(0x1p-62f), _CMP_LT_OQ);
  r = _mm256_blendv_ps(r, _mm256_and_ps(r, _mm256_castsi256_ps(sign)), tiny);
  /* NaN operands, the last applied wins: acc, then y, then x */
  const __m256i qa = _mm256_or_si256(_mm256_castps_si256(acc), quiet);
  const __m256i qy = _mm256_or_si256(_mm256_castps_si256(y), quiet);
  const __m256i qx = _mm256_or_si256(_mm256_castps_si256(x), quiet);
  r = _mm256_blendv_ps(r, _mm256_castsi256_ps(qa), _mm256_cmp_ps(acc, acc, _CMP_UNORD_Q));
  r = _mm256_blendv_ps(r, _mm256_castsi256_ps(qy), _mm256_cmp_ps(y, y, _CMP_UNORD_Q));
  r = _mm256_blendv_ps(r, _mm256_castsi256_ps(qx), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  return r;
}

/* Lanes of v that DAZ or the NaN order act on as an operand: NaN, or
   nonzero and below 2^-126 in magnitude. */
EMU_INLINE __m256 emu_nan_or_denormal(__m256 v) {
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
  return _mm256_and_ps(_mm256_cmp_ps(a, _mm256_set1_ps(0x1p-126f), _CMP_NGE_UQ),
                       _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ));
}

/* Lanes of a result that FTZ may act on: nonzero and at most 2^-126 in
   magnitude (at 2^-126 the exact result may have been tiny). */
EMU_INLINE __m256 emu_maybe_tiny(__m256 v) {
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
  return _mm256_and_ps(_mm256_cmp_ps(a, _mm256_set1_ps(0x1p-126f), _CMP_LE_OQ),
                       _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_OQ));
}

/* 1 if a bf16 word of w (16 per 256 bits) is a NaN or a denormal. */
EMU_INLINE int emu_bf16_special(__m256i w) {
  const __m256i t = _mm256_and_si256(w, _mm256_set1_epi16(0x7fff));
  const __m256i den = _mm256_and_si256(_mm256_cmpgt_epi16(_mm256_set1_epi16(0x0080), t),
                                       _mm256_cmpgt_epi16(t, _mm256_setzero_si256()));
  const __m256i nan = _mm256_cmpgt_epi16(t, _mm256_set1_epi16(0x7f80));
  const __m256i any = _mm256_or_si256(den, nan);
  return !_mm256_testz_si256(any, any);
}

/* vdpbf16ps: lane i += a.bf16[2i+1] * b.bf16[2i+1], then += a.bf16[2i] *
   b.bf16[2i] (the SDM's order: the odd pair first), each a step above; a
   bf16 widens exactly by a 16-bit shift. Where no operand is a NaN or a
   denormal and no step's result is nonzero and at most 2^-126 in
   magnitude, DAZ, FTZ and the NaN order change nothing (a larger result is
   not tiny; a zero is the signed zero FTZ would give; a NaN from inf * 0
   or inf - inf in the first step is the default NaN, which the second
   passes on), so two plain FMAs give the same bits; otherwise each step
   takes emu_dpbf16_step. */
EMU_CALL emu_m512 emu_mm512_dpbf16_ps(emu_m512 acc, emu_m512bh a, emu_m512bh b) {
  const emu_v512 c = EMU_PS(acc), x = EMU_BH(a), y = EMU_BH(b);
  const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
  emu_v512 r;
  for (int h = 0; h < 2; h++) {
    const __m256i xv = x.si2[h], yv = y.si2[h];
    const __m256 x1 = _mm256_castsi256_ps(_mm256_and_si256(xv, hi));
    const __m256 y1 = _mm256_castsi256_ps(_mm256_and_si256(yv, hi));
    const __m256 x0 = _mm256_castsi256_ps(_mm256_slli_epi32(xv, 16));
    const __m256 y0 = _mm256_castsi256_ps(_mm256_slli_epi32(yv, 16));
    if (!emu_bf16_special(xv) && !emu_bf16_special(yv) &&
        !_mm256_movemask_ps(emu_nan_or_denormal(c.ps2[h]))) {
      const __m256 s1 = _mm256_fmadd_ps(x1, y1, c.ps2[h]);
      const __m256 s2 = _mm256_fmadd_ps(x0, y0, s1);
      if (!_mm256_movemask_ps(_mm256_or_ps(emu_maybe_tiny(s1), emu_maybe_tiny(s2)))) {
        r.ps2[h] = s2;
        continue;
      }
    }
    r.ps2[h] = emu_dpbf16_step(emu_dpbf16_step(c.ps2[h], x1, y1), x0, y0);
  }
  return r.ps;
}

/* ---- vrndscaleps, vscalefps ------------------------------------------------ */

/* vroundps with the immediate's low 4 bits (a switch, so it stays an
   immediate): vrndscaleps with M = 0 is the same operation. */
#define EMU_ROUND_CASE(I)                                                      \
  case I:                                                                      \
    return _mm256_round_ps(x, I);
EMU_INLINE __m256 emu_round8(__m256 x, int imm) {
  switch (imm & 15) {
    EMU_ROUND_CASE(0) EMU_ROUND_CASE(1) EMU_ROUND_CASE(2) EMU_ROUND_CASE(3)
    EMU_ROUND_CASE(4) EMU_ROUND_CASE(5) EMU_ROUND_CASE(6) EMU_ROUND_CASE(7)
    EMU_ROUND_CASE(8) EMU_ROUND_CASE(9) EMU_ROUND_CASE(10) EMU_ROUND_CASE(11)
    EMU_ROUND_CASE(12) EMU_ROUND_CASE(13) EMU_ROUND_CASE(14) EMU_ROUND_CASE(15)
  }
  return x; /* not reached */
}
#undef EMU_ROUND_CASE

/* vrndscaleps: 2^-M * round(2^M * x) in the mode of imm[2:0], M = imm[7:4]
   (the SDM's RoundToIntegerSP). 2^M x and the scaling back are exact; |x|
   >= 2^23 is an integer already and returned as is (2^M x could overflow
   in float where the SDM's scaling does not); NaNs come out quiet from
   vroundps. */
EMU_CALL emu_m512 emu_mm512_roundscale_ps(emu_m512 a, int imm) {
  const emu_v512 x = EMU_PS(a);
  const int m = imm >> 4 & 15;
  emu_v512 r;
  for (int h = 0; h < 2; h++) {
    const __m256 v = x.ps2[h];
    if (m == 0) {
      r.ps2[h] = emu_round8(v, imm);
      continue;
    }
    const __m256 up = _mm256_set1_ps((float)(1u << m)), down = _mm256_set1_ps(1.0f / (float)(1u << m));
    const __m256 scaled = _mm256_mul_ps(emu_round8(_mm256_mul_ps(v, up), imm), down);
    const __m256 big = _mm256_cmp_ps(
        _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), _mm256_set1_ps(0x1p23f), _CMP_NLT_UQ);
    r.ps2[h] = _mm256_blendv_ps(scaled, emu_round8(v, imm), big);
  }
  return r.ps;
}

/* vscalefps on one element: a * 2^floor(b) with one rounding, and the
   special cases of the SDM's Table 5-30 (VSCALEFPS/SD/PS/SS Special Cases;
   MXCSR.DAZ assumed off, as rpa leaves it):
     b NaN: QNaN(a) if a is a NaN, else QNaN(b);
     a SNaN: QNaN(a); a QNaN: +INF if b = +inf, +0 if b = -inf, else a;
     a = +-inf: the default NaN if b = -inf, else a;
     a = +-0: the default NaN if b = +inf, else a;
     otherwise b = +inf: +-INF, b = -inf: +-0 (the sign of a), b finite:
     the product, computed exactly in double (|floor(b)| clamped to 400,
     past which every float result has over- or underflowed) and rounded to
     float once. */
EMU_CALL float emu_scalef1(float a, float b) {
  uint32_t ua, ub;
  memcpy(&ua, &a, 4);
  memcpy(&ub, &b, 4);
  const int a_nan = (ua & 0x7fffffffu) > 0x7f800000u, b_nan = (ub & 0x7fffffffu) > 0x7f800000u;
  const int b_inf = (ub & 0x7fffffffu) == 0x7f800000u, b_neg = (int)(ub >> 31);
  uint32_t r;
  float f;
  if (b_nan) {
    r = (a_nan ? ua : ub) | 0x00400000u;
  } else if (a_nan) {
    if (!(ua & 0x00400000u)) r = ua | 0x00400000u; /* SNaN */
    else if (b_inf) r = b_neg ? 0u : 0x7f800000u;
    else r = ua;
  } else if ((ua & 0x7fffffffu) == 0x7f800000u) {
    r = b_inf && b_neg ? 0xffc00000u : ua;
  } else if ((ua & 0x7fffffffu) == 0) {
    r = b_inf && !b_neg ? 0xffc00000u : ua;
  } else if (b_inf) {
    r = (ua & 0x80000000u) | (b_neg ? 0u : 0x7f800000u);
  } else {
    float fb = __builtin_floorf(b);
    fb = fb > 400.0f ? 400.0f : fb < -400.0f ? -400.0f : fb;
    const uint64_t bits = (uint64_t)(1023 + (int)fb) << 52;
    double p;
    memcpy(&p, &bits, 8);
    f = (float)((double)a * p);
    return f;
  }
  memcpy(&f, &r, 4);
  return f;
}

/* vscalefps: lanes with a finite b (the kernels' case) in vector form,
   the same arithmetic as emu_scalef1 (exact double product, one rounding
   by vcvtpd2ps; a NaN a stays itself, quieted, through both); any lane
   with a NaN or infinite b takes emu_scalef1 for the whole vector. */
EMU_CALL emu_m512 emu_mm512_scalef_ps(emu_m512 a, emu_m512 b) {
  const emu_v512 x = EMU_PS(a), y = EMU_PS(b);
  emu_v512 r;
  int special = 0;
  for (int h = 0; h < 2; h++)
    special |= _mm256_movemask_ps(_mm256_cmp_ps(
        _mm256_andnot_ps(_mm256_set1_ps(-0.0f), y.ps2[h]), _mm256_set1_ps(__builtin_inff()),
        _CMP_NLT_UQ));
  if (special) {
    for (int i = 0; i < 16; i++) r.f32[i] = emu_scalef1(x.f32[i], y.f32[i]);
    return r.ps;
  }
  for (int h = 0; h < 2; h++) {
    __m256 fb = _mm256_floor_ps(y.ps2[h]);
    fb = _mm256_min_ps(_mm256_max_ps(fb, _mm256_set1_ps(-400.0f)), _mm256_set1_ps(400.0f));
    const __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(fb), _mm256_set1_epi32(1023));
    __m128 out[2];
    for (int q = 0; q < 2; q++) {
      const __m128i eq = q ? _mm256_extracti128_si256(e, 1) : _mm256_castsi256_si128(e);
      const __m256d p2 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_cvtepi32_epi64(eq), 52));
      const __m128 aq = q ? _mm256_extractf128_ps(x.ps2[h], 1) : _mm256_castps256_ps128(x.ps2[h]);
      out[q] = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(aq), p2));
    }
    r.ps2[h] = _mm256_set_m128(out[1], out[0]);
  }
  return r.ps;
}

/* ---- horizontal reductions (GCC's header sequences) ------------------------- */

/* _mm512_reduce_add_ps as GCC's avx512fintrin.h writes it: the high 256
   bits plus the low, then the high 128 of that plus the low, then lanes
   (0 + 2) and (1 + 3), then those two. (clang's header uses a
   reassociating reduction of the same tree shape.) */
EMU_CALL float emu_mm512_reduce_add_ps(emu_m512 a) {
  const emu_v512 x = EMU_PS(a);
  float t3[8], t6[4];
  for (int j = 0; j < 8; j++) t3[j] = x.f32[8 + j] + x.f32[j];
  for (int j = 0; j < 4; j++) t6[j] = t3[4 + j] + t3[j];
  return (t6[0] + t6[2]) + (t6[1] + t6[3]);
}

/* maxps on one element: x > y ? x : y. */
EMU_INLINE float emu_maxps1(float x, float y) { return x > y ? x : y; }

/* _mm512_reduce_max_ps as GCC's header writes it, with vmaxps operand
   order at each step: max(high, low) of 256 and of 128 bits, then
   max(t, t shuffled 2,3,0,1), then max(t, t shuffled 1,0,1,0), lane 0. */
EMU_CALL float emu_mm512_reduce_max_ps(emu_m512 a) {
  const emu_v512 x = EMU_PS(a);
  float t3[8], t6[4];
  for (int j = 0; j < 8; j++) t3[j] = emu_maxps1(x.f32[8 + j], x.f32[j]);
  for (int j = 0; j < 4; j++) t6[j] = emu_maxps1(t3[4 + j], t3[j]);
  return emu_maxps1(emu_maxps1(t6[0], t6[2]), emu_maxps1(t6[1], t6[3]));
}

/* ---- the native names ------------------------------------------------------ */

#ifdef RPA_EMU_AVX512_RENAME
/* Code written against <immintrin.h> gets the emulation: the types and
   every emulated intrinsic by its native name. (#undef first: GCC's header
   defines some intrinsics as macros when not optimising.) */
#define __m512 emu_m512
#define __m512i emu_m512i
#define __m512bh emu_m512bh
#define __m256bh emu_m256bh
#undef _mm512_loadu_ps
#define _mm512_loadu_ps emu_mm512_loadu_ps
#undef _mm512_loadu_si512
#define _mm512_loadu_si512 emu_mm512_loadu_si512
#undef _mm512_load_si512
#define _mm512_load_si512 emu_mm512_load_si512
#undef _mm512_storeu_ps
#define _mm512_storeu_ps emu_mm512_storeu_ps
#undef _mm512_storeu_si512
#define _mm512_storeu_si512 emu_mm512_storeu_si512
#undef _mm512_store_ps
#define _mm512_store_ps emu_mm512_store_ps
#undef _mm512_store_si512
#define _mm512_store_si512 emu_mm512_store_si512
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps emu_mm512_maskz_loadu_ps
#undef _mm512_maskz_loadu_epi32
#define _mm512_maskz_loadu_epi32 emu_mm512_maskz_loadu_epi32
#undef _mm512_maskz_loadu_epi16
#define _mm512_maskz_loadu_epi16 emu_mm512_maskz_loadu_epi16
#undef _mm256_maskz_loadu_epi16
#define _mm256_maskz_loadu_epi16 emu_mm256_maskz_loadu_epi16
#undef _mm_maskz_loadu_epi8
#define _mm_maskz_loadu_epi8 emu_mm_maskz_loadu_epi8
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps emu_mm512_mask_storeu_ps
#undef _mm256_mask_storeu_epi16
#define _mm256_mask_storeu_epi16 emu_mm256_mask_storeu_epi16
#undef _mm512_setzero_ps
#define _mm512_setzero_ps emu_mm512_setzero_ps
#undef _mm512_setzero_si512
#define _mm512_setzero_si512 emu_mm512_setzero_si512
#undef _mm512_set1_ps
#define _mm512_set1_ps emu_mm512_set1_ps
#undef _mm512_set1_epi32
#define _mm512_set1_epi32 emu_mm512_set1_epi32
#undef _mm512_set1_epi16
#define _mm512_set1_epi16 emu_mm512_set1_epi16
#undef _mm512_set1_epi8
#define _mm512_set1_epi8 emu_mm512_set1_epi8
#undef _mm512_set_epi32
#define _mm512_set_epi32 emu_mm512_set_epi32
#undef _mm512_set_epi16
#define _mm512_set_epi16 emu_mm512_set_epi16
#undef _mm512_castps_si512
#define _mm512_castps_si512 emu_mm512_castps_si512
#undef _mm512_castsi512_ps
#define _mm512_castsi512_ps emu_mm512_castsi512_ps
#undef _mm512_mask_mov_ps
#define _mm512_mask_mov_ps emu_mm512_mask_mov_ps
#undef _mm512_maskz_mov_ps
#define _mm512_maskz_mov_ps emu_mm512_maskz_mov_ps
#undef _mm256_mask_mov_epi16
#define _mm256_mask_mov_epi16 emu_mm256_mask_mov_epi16
#undef _mm512_add_ps
#define _mm512_add_ps emu_mm512_add_ps
#undef _mm512_sub_ps
#define _mm512_sub_ps emu_mm512_sub_ps
#undef _mm512_mul_ps
#define _mm512_mul_ps emu_mm512_mul_ps
#undef _mm512_div_ps
#define _mm512_div_ps emu_mm512_div_ps
#undef _mm512_maskz_sub_ps
#define _mm512_maskz_sub_ps emu_mm512_maskz_sub_ps
#undef _mm512_fmadd_ps
#define _mm512_fmadd_ps emu_mm512_fmadd_ps
#undef _mm512_fnmadd_ps
#define _mm512_fnmadd_ps emu_mm512_fnmadd_ps
#undef _mm512_max_ps
#define _mm512_max_ps emu_mm512_max_ps
#undef _mm512_abs_ps
#define _mm512_abs_ps emu_mm512_abs_ps
#undef _mm512_add_epi32
#define _mm512_add_epi32 emu_mm512_add_epi32
#undef _mm512_sub_epi32
#define _mm512_sub_epi32 emu_mm512_sub_epi32
#undef _mm512_add_epi16
#define _mm512_add_epi16 emu_mm512_add_epi16
#undef _mm512_and_si512
#define _mm512_and_si512 emu_mm512_and_si512
#undef _mm512_or_si512
#define _mm512_or_si512 emu_mm512_or_si512
#undef _mm512_mask_or_epi32
#define _mm512_mask_or_epi32 emu_mm512_mask_or_epi32
#undef _mm512_slli_epi32
#define _mm512_slli_epi32 emu_mm512_slli_epi32
#undef _mm512_srli_epi32
#define _mm512_srli_epi32 emu_mm512_srli_epi32
#undef _mm512_ternarylogic_epi32
#define _mm512_ternarylogic_epi32 emu_mm512_ternarylogic_epi32
#undef _mm512_cmp_ps_mask
#define _mm512_cmp_ps_mask emu_mm512_cmp_ps_mask
#undef _mm512_cmpge_epi32_mask
#define _mm512_cmpge_epi32_mask emu_mm512_cmpge_epi32_mask
#undef _mm512_cmple_epi32_mask
#define _mm512_cmple_epi32_mask emu_mm512_cmple_epi32_mask
#undef _mm512_cmplt_epi32_mask
#define _mm512_cmplt_epi32_mask emu_mm512_cmplt_epi32_mask
#undef _mm256_cmpeq_epi16_mask
#define _mm256_cmpeq_epi16_mask emu_mm256_cmpeq_epi16_mask
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4 emu_mm512_shuffle_f32x4
#undef _mm512_shuffle_ps
#define _mm512_shuffle_ps emu_mm512_shuffle_ps
#undef _mm512_permutexvar_ps
#define _mm512_permutexvar_ps emu_mm512_permutexvar_ps
#undef _mm512_permutex2var_ps
#define _mm512_permutex2var_ps emu_mm512_permutex2var_ps
#undef _mm512_permutex2var_epi16
#define _mm512_permutex2var_epi16 emu_mm512_permutex2var_epi16
#undef _mm512_permutex2var_epi8
#define _mm512_permutex2var_epi8 emu_mm512_permutex2var_epi8
#undef _mm512_maskz_permutex2var_epi8
#define _mm512_maskz_permutex2var_epi8 emu_mm512_maskz_permutex2var_epi8
#undef _mm512_unpacklo_epi8
#define _mm512_unpacklo_epi8 emu_mm512_unpacklo_epi8
#undef _mm512_unpackhi_epi8
#define _mm512_unpackhi_epi8 emu_mm512_unpackhi_epi8
#undef _mm512_unpacklo_epi16
#define _mm512_unpacklo_epi16 emu_mm512_unpacklo_epi16
#undef _mm512_unpackhi_epi16
#define _mm512_unpackhi_epi16 emu_mm512_unpackhi_epi16
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32 emu_mm512_cvtepu16_epi32
#undef _mm512_cvtepi32_epi16
#define _mm512_cvtepi32_epi16 emu_mm512_cvtepi32_epi16
#undef _mm512_cvtph_ps
#define _mm512_cvtph_ps emu_mm512_cvtph_ps
#undef _mm512_cvtps_ph
#define _mm512_cvtps_ph emu_mm512_cvtps_ph
#undef _mm512_cvtne2ps_pbh
#define _mm512_cvtne2ps_pbh emu_mm512_cvtne2ps_pbh
#undef _mm512_cvtneps_pbh
#define _mm512_cvtneps_pbh emu_mm512_cvtneps_pbh
#undef _mm512_dpbf16_ps
#define _mm512_dpbf16_ps emu_mm512_dpbf16_ps
#undef _mm512_roundscale_ps
#define _mm512_roundscale_ps emu_mm512_roundscale_ps
#undef _mm512_scalef_ps
#define _mm512_scalef_ps emu_mm512_scalef_ps
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps emu_mm512_reduce_add_ps
#undef _mm512_reduce_max_ps
#define _mm512_reduce_max_ps emu_mm512_reduce_max_ps
#endif /* RPA_EMU_AVX512_RENAME */

#endif
