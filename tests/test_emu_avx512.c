/* TEST-ONLY: the AVX-512 emulation of tests/emu/avx512_emu.h (the
   -DRPA_EMULATE=avx512 flavour) against Intel's manual, and, on a CPU with
   AVX-512, against the real instructions.

   Each emulated intrinsic is an op of tests/emu/avx512_ops.c, called through
   its native name as the emulated kernels call it. For every op:
   - a reference written from the manual's pseudo-code (SDM, Intrinsics
     Guide) on each element, on edge values (zeros, denormals, infinities,
     NaNs, rounding ties, overflow) and random ones, every immediate the
     op takes, random and edge masks; results compared bit for bit;
   - known answers worked out by hand where the reference alone could share
     a misreading (vdpbf16ps's order and FTZ boundary, the bf16 rounding
     ties, GCC's reduction trees, vscalefps's special cases);
   - masked loads and stores next to inaccessible pages (PROT_NONE) on both
     sides: a byte of a masked-off element touched is a caught SIGSEGV;
   - an aligned load on a misaligned address aborts, as the instruction
     faults;
   - where CPUID and XGETBV say the CPU and OS run AVX-512 F, BW, DQ, VL,
     VBMI and BF16: the same inputs through the real instructions
     (avx512_ops_native.c), compared bit for bit with the emulation;
     elsewhere the program says that this part did not run, and why.
   Ops whose NaN operand order is the compiler's choice natively too
   (vector + and * are commutative to gcc, vfmadd's 132/213/231 forms)
   accept any of the input NaNs, quieted, when several are NaN. */
/* MAP_ANONYMOUS (glibc declares it under _DEFAULT_SOURCE, not POSIX 2008) */
#define _DEFAULT_SOURCE 1
#include <cpuid.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "emu/avx512_ops.h"
#include "harness.h"

/* ---- bits ---------------------------------------------------------------- */

static float f_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint32_t u_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static uint32_t rd32(const uint8_t *p, int i) {
  uint32_t v;
  memcpy(&v, p + 4 * i, 4);
  return v;
}
static void wr32(uint8_t *p, int i, uint32_t v) { memcpy(p + 4 * i, &v, 4); }
static uint16_t rd16(const uint8_t *p, int i) {
  uint16_t v;
  memcpy(&v, p + 2 * i, 2);
  return v;
}
static void wr16(uint8_t *p, int i, uint16_t v) { memcpy(p + 2 * i, &v, 2); }
static int nan32(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }
static uint32_t quiet32(uint32_t u) { return u | 0x00400000u; }

/* ---- random and edge values ------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dull;
}
static uint32_t rnd32(void) { return (uint32_t)(rnd64() >> 32); }
static int rnd_below(int n) { return (int)(rnd64() % (uint64_t)n); }

/* f32 bit patterns at the edges: zeros, denormals, the normal range's ends,
   bf16 and f16 rounding ties and near-ties, overflow, infinities, quiet and
   signalling NaNs with payloads, integers near 2^23, the f16 range. */
static const uint32_t f32_edges[] = {
    0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007fffff, 0x807fffff, 0x00400000,
    0x00800000, 0x80800000, 0x00808000, 0x00818000, 0x3f800000, 0xbf800000, 0x3f808000,
    0x3f818000, 0x3f807fff, 0x3f808001, 0x3f80ffff, 0x7f7fffff, 0xff7fffff, 0x7f7f8000,
    0x7f7f7fff, 0x7f7f0000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001,
    0xff800001, 0x7fbfffff, 0x7fffffff, 0x7fa12345, 0xffe54321, 0x40490fdb, 0xc2f6e979,
    0x4b000000, 0x4b000001, 0xcb7fffff, 0x4affffff, 0x3f000000, 0x3fc00000, 0x40200000,
    0xbfc00000, 0xc0200000, 0xbec00000, 0x3ecccccd, 0x477fe000, 0x477ff000, 0x477fefff,
    0x477ff001, 0xc77ff000, 0x38800000, 0x387fc000, 0x387fe000, 0x33800000, 0x33000000,
    0x33000001, 0xb3000000, 0x33c00000, 0x01000000, 0x7f000000, 0xfe800000, 0x3b800000,
    0x42fe0000, 0xc2fe0000, 0xc3160000, 0x43160000, 0x5f000000, 0xdf000000, 0x4f000000,
};
enum { N_F32_EDGES = sizeof f32_edges / sizeof f32_edges[0] };

static uint32_t rnd_f32(void) {
  switch (rnd_below(6)) {
    case 0:
    case 1: return f32_edges[rnd_below(N_F32_EDGES)];
    case 2: return rnd32();
    case 3: /* a bf16 tie or near tie */
      return (rnd32() & 0xffff0000u) | (uint32_t[]){0x8000, 0x7fff, 0x8001, 0, 0xffff}[rnd_below(5)];
    default: /* moderate: sign, exponent 2^-30 .. 2^30 */
      return (rnd32() & 0x80000000u) | (uint32_t)(97 + rnd_below(61)) << 23 | (rnd32() & 0x7fffffu);
  }
}

/* bf16 words at the edges: zeros, denormals, small normals whose products
   are tiny, normals, large values, infinities, NaNs. */
static const uint16_t bf16_edges[] = {
    0x0000, 0x8000, 0x0001, 0x807f, 0x0040, 0x0080, 0x8080, 0x00c0, 0x0100, 0x1f80, 0x3f80,
    0xbf80, 0x4000, 0xc040, 0x3f81, 0x3fff, 0x7f7f, 0xff7f, 0x7f00, 0x7f80, 0xff80, 0x7fc0,
    0xffc0, 0x7f81, 0xff81, 0x7fa0, 0x2000, 0x2080, 0x1000, 0x0f80, 0x1980, 0x1a00, 0x9a00,
};
static uint16_t rnd_bf16(void) {
  switch (rnd_below(5)) {
    case 0: return bf16_edges[rnd_below((int)(sizeof bf16_edges / 2))];
    case 1: return (uint16_t)rnd32();
    case 2: /* small: products near 2^-126, where FTZ acts */
      return (uint16_t)((rnd32() & 0x8000u) | (uint32_t)(56 + rnd_below(16)) << 7 | (rnd32() & 0x7fu));
    default: /* moderate exponents */
      return (uint16_t)((rnd32() & 0x8000u) | (uint32_t)(112 + rnd_below(32)) << 7 | (rnd32() & 0x7fu));
  }
}

static const uint16_t f16_edges[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0200, 0x0400,
                                     0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7c01, 0x7d00, 0x7e00,
                                     0x7fff, 0xfe01, 0x3c00, 0xbc00, 0x3555, 0x3bff, 0x3c01};

/* Dwords at the edges of the signed and unsigned ranges. */
static uint32_t rnd_int32(void) {
  static const uint32_t e[] = {0, 1, 2, 31, 32, 33, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe};
  return rnd_below(2) ? e[rnd_below((int)(sizeof e / 4))] : rnd32();
}

static uint64_t rnd_mask(void) {
  switch (rnd_below(5)) {
    case 0: return 0;
    case 1: return ~(uint64_t)0;
    case 2: return (1ull << rnd_below(64)) - 1; /* a prefix, as the kernels' tails */
    default: return rnd64();
  }
}

/* ---- the references (the manual's pseudo-code, element by element) ------ */

typedef void (*ref_fn)(const emu_op_in *in, emu_op_out *o);
#define REF(name) static void ref_##name(const emu_op_in *in, emu_op_out *o)
#define UNUSED_OUT (void)o

/* memory */
REF(loadu) { memcpy(o->v, in->src, 64); }
REF(storeu) {
  UNUSED_OUT;
  memcpy(in->dst, in->a, 64);
}
static void masked_load(uint8_t *v, const void *src, uint64_t k, int n, int size) {
  memset(v, 0, 64);
  for (int i = 0; i < n; i++)
    if (k >> i & 1) memcpy(v + i * size, (const uint8_t *)src + i * size, (size_t)size);
}
REF(maskz_loadu_d) { masked_load(o->v, in->src, in->k & 0xffff, 16, 4); }
REF(maskz_loadu_w32) { masked_load(o->v, in->src, in->k & 0xffffffff, 32, 2); }
REF(maskz_loadu_w16) { masked_load(o->v, in->src, in->k & 0xffff, 16, 2); }
REF(maskz_loadu_b16) { masked_load(o->v, in->src, in->k & 0xffff, 16, 1); }
REF(mask_storeu_d) {
  UNUSED_OUT;
  for (int i = 0; i < 16; i++)
    if (in->k >> i & 1) memcpy((uint8_t *)in->dst + 4 * i, in->a + 4 * i, 4);
}
REF(mask_storeu_w16) {
  UNUSED_OUT;
  for (int i = 0; i < 16; i++)
    if (in->k >> i & 1) memcpy((uint8_t *)in->dst + 2 * i, in->a + 2 * i, 2);
}

/* set, cast, move */
REF(zero) {
  (void)in;
  memset(o->v, 0, 64);
}
REF(set1_d) {
  for (int i = 0; i < 16; i++) memcpy(o->v + 4 * i, in->a, 4);
}
REF(set1_w) {
  for (int i = 0; i < 32; i++) memcpy(o->v + 2 * i, in->a, 2);
}
REF(set1_b) { memset(o->v, in->a[0], 64); }
REF(copy_a) { memcpy(o->v, in->a, 64); } /* set_epi32/16 (element i = e_i), casts */
REF(mask_mov_ps) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, in->k >> i & 1 ? rd32(in->a, i) : rd32(in->b, i));
}
REF(maskz_mov_ps) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, in->k >> i & 1 ? rd32(in->a, i) : 0);
}
REF(mm256_mask_mov_epi16) {
  for (int i = 0; i < 16; i++) wr16(o->v, i, in->k >> i & 1 ? rd16(in->a, i) : rd16(in->b, i));
}

/* float arithmetic: x86's NaN rule (the first NaN operand, quieted), the
   default NaN 0xffc00000 for an invalid operation, else the IEEE result */
static uint32_t arith(int op, uint32_t a, uint32_t b) {
  if (nan32(a)) return quiet32(a);
  if (nan32(b)) return quiet32(b);
  const float x = f_of(a), y = f_of(b);
  const float r = op == 0 ? x + y : op == 1 ? x - y : op == 2 ? x * y : x / y;
  return r != r ? 0xffc00000u : u_of(r);
}
#define ARITH_REF(name, op)                                                     \
  REF(name) {                                                                   \
    for (int i = 0; i < 16; i++) wr32(o->v, i, arith(op, rd32(in->a, i), rd32(in->b, i))); \
  }
ARITH_REF(add_ps, 0)
ARITH_REF(sub_ps, 1)
ARITH_REF(mul_ps, 2)
ARITH_REF(div_ps, 3)
REF(maskz_sub_ps) {
  for (int i = 0; i < 16; i++)
    wr32(o->v, i, in->k >> i & 1 ? arith(1, rd32(in->a, i), rd32(in->b, i)) : 0);
}
static uint32_t fma_ref(uint32_t a, uint32_t b, uint32_t c, int negate) {
  if (nan32(a)) return quiet32(a);
  if (nan32(b)) return quiet32(b);
  if (nan32(c)) return quiet32(c);
  const float r = fmaf(negate ? -f_of(a) : f_of(a), f_of(b), f_of(c));
  return r != r ? 0xffc00000u : u_of(r);
}
REF(fmadd_ps) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, fma_ref(rd32(in->a, i), rd32(in->b, i), rd32(in->c, i), 0));
}
REF(fnmadd_ps) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, fma_ref(rd32(in->a, i), rd32(in->b, i), rd32(in->c, i), 1));
}
/* MAX(SRC1, SRC2): IF SRC1 > SRC2 THEN SRC1 ELSE SRC2 (SRC2 as it is,
   also a NaN or the other zero) */
REF(max_ps) {
  for (int i = 0; i < 16; i++) {
    const uint32_t a = rd32(in->a, i), b = rd32(in->b, i);
    wr32(o->v, i, f_of(a) > f_of(b) ? a : b);
  }
}
REF(abs_ps) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, rd32(in->a, i) & 0x7fffffffu);
}

/* integer */
REF(add_epi32) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, rd32(in->a, i) + rd32(in->b, i));
}
REF(sub_epi32) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, rd32(in->a, i) - rd32(in->b, i));
}
REF(add_epi16) {
  for (int i = 0; i < 32; i++) wr16(o->v, i, (uint16_t)(rd16(in->a, i) + rd16(in->b, i)));
}
REF(and_si512) {
  for (int i = 0; i < 64; i++) o->v[i] = in->a[i] & in->b[i];
}
REF(or_si512) {
  for (int i = 0; i < 64; i++) o->v[i] = in->a[i] | in->b[i];
}
REF(mask_or_epi32) {
  for (int i = 0; i < 16; i++)
    wr32(o->v, i, in->k >> i & 1 ? rd32(in->a, i) | rd32(in->b, i) : rd32(in->c, i));
}
/* VPSLLD/VPSRLD: IF COUNT > 31 THEN 0 */
REF(slli_epi32) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, in->imm > 31 ? 0 : rd32(in->a, i) << in->imm);
}
REF(srli_epi32) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, in->imm > 31 ? 0 : rd32(in->a, i) >> in->imm);
}
/* VPTERNLOGD: bit j = imm8[(a_j << 2) + (b_j << 1) + c_j] */
REF(ternarylogic_epi32) {
  for (int i = 0; i < 16; i++) {
    const uint32_t a = rd32(in->a, i), b = rd32(in->b, i), c = rd32(in->c, i);
    uint32_t r = 0;
    for (int j = 0; j < 32; j++) {
      const int idx = (int)((a >> j & 1) << 2 | (b >> j & 1) << 1 | (c >> j & 1));
      r |= (uint32_t)(in->imm >> idx & 1) << j;
    }
    wr32(o->v, i, r);
  }
}

/* compares: the SDM's predicate table for VCMPPS, imm8[3:0] (imm8[4] only
   chooses signalling or quiet: the same result); columns GT, LT, EQ, UNORDERED */
static const uint8_t cmp_table[16][4] = {
    {0, 0, 1, 0}, {0, 1, 0, 0}, {0, 1, 1, 0}, {0, 0, 0, 1}, /* EQ_OQ LT_OS LE_OS UNORD_Q */
    {1, 1, 0, 1}, {1, 0, 1, 1}, {1, 0, 0, 1}, {1, 1, 1, 0}, /* NEQ_UQ NLT_US NLE_US ORD_Q */
    {0, 0, 1, 1}, {0, 1, 0, 1}, {0, 1, 1, 1}, {0, 0, 0, 0}, /* EQ_UQ NGE_US NGT_US FALSE_OQ */
    {1, 1, 0, 0}, {1, 0, 1, 0}, {1, 0, 0, 0}, {1, 1, 1, 1}, /* NEQ_OQ GE_OS GT_OS TRUE_UQ */
};
REF(cmp_ps_mask) {
  o->k = 0;
  for (int i = 0; i < 16; i++) {
    const float a = f_of(rd32(in->a, i)), b = f_of(rd32(in->b, i));
    const int rel = isnan(a) || isnan(b) ? 3 : a > b ? 0 : a < b ? 1 : 2;
    o->k |= (uint64_t)cmp_table[in->imm & 15][rel] << i;
  }
}
REF(cmpge_epi32_mask) {
  o->k = 0;
  for (int i = 0; i < 16; i++) o->k |= (uint64_t)((int32_t)rd32(in->a, i) >= (int32_t)rd32(in->b, i)) << i;
}
REF(cmple_epi32_mask) {
  o->k = 0;
  for (int i = 0; i < 16; i++) o->k |= (uint64_t)((int32_t)rd32(in->a, i) <= (int32_t)rd32(in->b, i)) << i;
}
REF(cmplt_epi32_mask) {
  o->k = 0;
  for (int i = 0; i < 16; i++) o->k |= (uint64_t)((int32_t)rd32(in->a, i) < (int32_t)rd32(in->b, i)) << i;
}
REF(mm256_cmpeq_epi16_mask) {
  o->k = 0;
  for (int i = 0; i < 16; i++) o->k |= (uint64_t)(rd16(in->a, i) == rd16(in->b, i)) << i;
}

/* shuffles: VSHUFF32x4: dest lanes Select4(SRC1, imm[1:0]), Select4(SRC1,
   imm[3:2]), Select4(SRC2, imm[5:4]), Select4(SRC2, imm[7:6]); VSHUFPS the
   same per element within each 128-bit lane */
REF(shuffle_f32x4) {
  for (int l = 0; l < 4; l++) {
    const uint8_t *src = l < 2 ? in->a : in->b;
    memcpy(o->v + 16 * l, src + 16 * (in->imm >> (2 * l) & 3), 16);
  }
}
REF(shuffle_ps) {
  for (int l = 0; l < 4; l++)
    for (int j = 0; j < 4; j++) {
      const uint8_t *src = j < 2 ? in->a : in->b;
      wr32(o->v, 4 * l + j, rd32(src, 4 * l + (in->imm >> (2 * j) & 3)));
    }
}
/* VPERMPS: dest[i] = src[idx[i][3:0]]; VPERMI2PS: idx[i][4] picks the table */
REF(permutexvar_ps) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, rd32(in->a, (int)(rd32(in->b, i) & 15)));
}
REF(permutex2var_ps) {
  for (int i = 0; i < 16; i++) {
    const uint32_t j = rd32(in->b, i);
    wr32(o->v, i, rd32(j >> 4 & 1 ? in->c : in->a, (int)(j & 15)));
  }
}
REF(permutex2var_epi16) {
  for (int i = 0; i < 32; i++) {
    const uint16_t j = rd16(in->b, i);
    wr16(o->v, i, rd16(j >> 5 & 1 ? in->c : in->a, j & 31));
  }
}
static void permb(const emu_op_in *in, emu_op_out *o, uint64_t k) {
  for (int i = 0; i < 64; i++) {
    const uint8_t j = in->b[i];
    o->v[i] = k >> i & 1 ? (j >> 6 & 1 ? in->c : in->a)[j & 63] : 0;
  }
}
REF(permutex2var_epi8) { permb(in, o, ~(uint64_t)0); }
REF(maskz_permutex2var_epi8) { permb(in, o, in->k); }
/* VPUNPCKL/HBW, WD: per 128-bit lane, INTERLEAVE of the low (high) halves,
   SRC1 first */
static void unpack(const emu_op_in *in, emu_op_out *o, int size, int high) {
  const int per = 8 / size; /* elements taken from each half-lane */
  for (int l = 0; l < 4; l++)
    for (int j = 0; j < per; j++) {
      const int from = 16 * l + (high ? 8 : 0) + j * size;
      memcpy(o->v + 16 * l + 2 * j * size, in->a + from, (size_t)size);
      memcpy(o->v + 16 * l + (2 * j + 1) * size, in->b + from, (size_t)size);
    }
}
REF(unpacklo_epi8) { unpack(in, o, 1, 0); }
REF(unpackhi_epi8) { unpack(in, o, 1, 1); }
REF(unpacklo_epi16) { unpack(in, o, 2, 0); }
REF(unpackhi_epi16) { unpack(in, o, 2, 1); }

/* conversions */
REF(cvtepu16_epi32) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, rd16(in->a, i));
}
REF(cvtepi32_epi16) {
  for (int i = 0; i < 16; i++) wr16(o->v, i, (uint16_t)rd32(in->a, i));
}
/* f16 -> f32, exactly; a NaN keeps its payload, quieted */
static uint32_t f16_to_f32(uint16_t h) {
  const uint32_t s = (uint32_t)(h >> 15) << 31, e = h >> 10 & 31, m = h & 1023u;
  if (e == 31) return s | 0x7f800000u | (m ? 0x00400000u | m << 13 : 0);
  const float mag = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(1024 + m), (int)e - 25);
  return s | u_of(mag);
}
REF(cvtph_ps) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, f16_to_f32(rd16(in->a, i)));
}
/* f32 -> f16 in rounding mode rc (0 nearest even, 1 down, 2 up, 3 toward
   zero), on the exact value: overflow to infinity or the largest finite by
   the mode; a NaN keeps its top payload bits, quieted */
static uint16_t f32_to_f16(uint32_t u, int rc) {
  const uint16_t s = (uint16_t)(u >> 16 & 0x8000u);
  if ((u & 0x7f800000u) == 0x7f800000u)
    return (uint16_t)(s | 0x7c00u | ((u & 0x7fffffu) ? 0x200u | (u >> 13 & 0x3ffu) : 0));
  const double x = (double)f_of(u);
  if (x == 0) return s;
  int e;
  frexp(x, &e); /* |x| in [2^(e-1), 2^e) */
  const int q = e - 1 < -14 ? -24 : e - 1 - 10; /* the f16 spacing at x: 2^q */
  const double t = ldexp(x, -q);
  const double r = rc == 0 ? nearbyint(t) : rc == 1 ? floor(t) : rc == 2 ? ceil(t) : trunc(t);
  const double v = fabs(ldexp(r, q));
  if (v > 65504.0) {
    const int to_inf = rc == 0 || (rc == 1 && s) || (rc == 2 && !s);
    return (uint16_t)(s | (to_inf ? 0x7c00u : 0x7bffu));
  }
  if (v == 0) return s;
  int ve;
  frexp(v, &ve);
  if (ve - 1 < -14) return (uint16_t)(s | (uint16_t)ldexp(v, 24)); /* denormal */
  return (uint16_t)(s | (uint16_t)((ve - 1 + 15) << 10) | ((uint16_t)ldexp(v, 10 - (ve - 1)) & 1023u));
}
/* VCVTPS2PH imm8: [1:0] the mode, [2] MXCSR.RC instead (nearest even here),
   [7:3] ignored */
REF(cvtps_ph) {
  const int rc = in->imm & 4 ? 0 : in->imm & 3;
  for (int i = 0; i < 16; i++) wr16(o->v, i, f32_to_f16(rd32(in->a, i), rc));
}
/* convert_fp32_to_bfloat16 (SDM, VCVTNEPS2BF16) */
static uint16_t bf16_of(uint32_t x) {
  const uint32_t e = x >> 23 & 0xff, hi = x >> 16, lo = x & 0xffff;
  if (e == 0) return (uint16_t)(hi & 0x8000u);         /* zero or denormal: signed zero */
  if (e == 0xff) return (uint16_t)(x & 0x7fffffu ? hi | 0x40u : hi); /* NaN quieted; inf */
  const int up = lo > 0x8000u || (lo == 0x8000u && (hi & 1)); /* nearest, ties to even */
  return (uint16_t)(hi + (uint32_t)up);
}
REF(cvtne2ps_pbh) {
  for (int i = 0; i < 16; i++) {
    wr16(o->v, i, bf16_of(rd32(in->b, i)));
    wr16(o->v, 16 + i, bf16_of(rd32(in->a, i)));
  }
}
REF(cvtneps_pbh) {
  for (int i = 0; i < 16; i++) wr16(o->v, i, bf16_of(rd32(in->a, i)));
}
/* One VDPBF16PS step: the first NaN of x, y, acc, quieted; otherwise the
   host's vfmadd231ss run with MXCSR = 0x9fc0 (FTZ, DAZ, every exception
   masked, round to nearest even): the "FP32 FMA with DAZ in, FTZ out" of
   the manual, on the host's own DAZ and FTZ logic rather than the
   emulation's. */
static uint32_t dp_step(uint32_t acc, uint32_t x, uint32_t y) {
  if (nan32(x)) return quiet32(x);
  if (nan32(y)) return quiet32(y);
  if (nan32(acc)) return quiet32(acc);
  float a = f_of(acc);
  const float fx = f_of(x), fy = f_of(y);
  unsigned int old;
  const unsigned int csr = 0x9fc0;
  __asm__ volatile(
      "vstmxcsr %[old]\n\t"
      "vldmxcsr %[csr]\n\t"
      "vfmadd231ss %[y], %[x], %[a]\n\t"
      "vldmxcsr %[old]"
      : [a] "+x"(a), [old] "=m"(old)
      : [x] "x"(fx), [y] "x"(fy), [csr] "m"(csr));
  return u_of(a);
}
/* VDPBF16PS: the odd pair (bf16 2i+1) first, then the even one */
REF(dpbf16_ps) {
  for (int i = 0; i < 16; i++) {
    const uint32_t a = rd32(in->a, i), b = rd32(in->b, i);
    uint32_t acc = rd32(in->c, i);
    acc = dp_step(acc, a & 0xffff0000u, b & 0xffff0000u);
    acc = dp_step(acc, a << 16, b << 16);
    wr32(o->v, i, acc);
  }
}
/* VRNDSCALEPS: 2^-M Round(2^M x) in mode imm[1:0] (imm[2]: MXCSR's,
   nearest even here), M = imm[7:4], computed in double (exact); NaNs
   quieted */
REF(roundscale_ps) {
  const int m = in->imm >> 4 & 15, rc = in->imm & 4 ? 0 : in->imm & 3;
  for (int i = 0; i < 16; i++) {
    const uint32_t u = rd32(in->a, i);
    if (nan32(u)) {
      wr32(o->v, i, quiet32(u));
      continue;
    }
    const double t = ldexp((double)f_of(u), m);
    const double r = rc == 0 ? nearbyint(t) : rc == 1 ? floor(t) : rc == 2 ? ceil(t) : trunc(t);
    wr32(o->v, i, u_of((float)ldexp(r, -m)));
  }
}
/* VSCALEFPS: the SDM's Table 5-30 special cases, then src1 * 2^floor(src2)
   rounded once (scalbnf, exact up to its one rounding) */
static uint32_t scalef_ref(uint32_t a, uint32_t b) {
  const int a_nan = nan32(a), b_nan = nan32(b);
  const int a_inf = (a & 0x7fffffffu) == 0x7f800000u, b_inf = (b & 0x7fffffffu) == 0x7f800000u;
  const int a_zero = (a & 0x7fffffffu) == 0;
  const int b_pos_inf = b == 0x7f800000u, b_neg_inf = b == 0xff800000u;
  if (b_nan) return quiet32(a_nan ? a : b);
  if (a_nan) {
    if (!(a & 0x00400000u)) return quiet32(a); /* SNaN */
    return b_pos_inf ? 0x7f800000u : b_neg_inf ? 0u : a;
  }
  if (a_inf) return b_neg_inf ? 0xffc00000u : a;
  if (a_zero) return b_pos_inf ? 0xffc00000u : a;
  if (b_inf) return (a & 0x80000000u) | (b_pos_inf ? 0x7f800000u : 0u);
  const float fb = floorf(f_of(b));
  const int n = fb > 1000.0f ? 1000 : fb < -1000.0f ? -1000 : (int)fb;
  return u_of(scalbnf(f_of(a), n));
}
REF(scalef_ps) {
  for (int i = 0; i < 16; i++) wr32(o->v, i, scalef_ref(rd32(in->a, i), rd32(in->b, i)));
}
/* GCC's _mm512_reduce_add_ps: (hi 256 + lo 256), (hi 128 + lo 128), then
   (e0 + e2) + (e1 + e3) */
REF(reduce_add_ps) {
  float v[16];
  memcpy(v, in->a, 64);
  for (int w = 8; w >= 4; w /= 2)
    for (int j = 0; j < w; j++) v[j] = v[j + w] + v[j];
  o->f = (v[0] + v[2]) + (v[1] + v[3]);
}
/* GCC's _mm512_reduce_max_ps: max_ps(hi, lo) twice, max_ps(t, t[2,3,0,1]),
   max_ps(t, t[1,0,1,0]), element 0; max_ps(x, y) = x > y ? x : y */
static float maxps(float x, float y) { return x > y ? x : y; }
REF(reduce_max_ps) {
  float v[16];
  memcpy(v, in->a, 64);
  for (int w = 8; w >= 4; w /= 2)
    for (int j = 0; j < w; j++) v[j] = maxps(v[j + w], v[j]);
  o->f = maxps(maxps(v[0], v[2]), maxps(v[1], v[3]));
}

/* ---- checks ------------------------------------------------------------------ */

/* Input kinds. */
enum { G_F32, G_BITS, G_INT, G_BF16, G_F16, G_SCALEF, G_REDUCE };
/* Flags: memory source / destination (aligned or any offset), immediate
   range, NaN freedom (see the top). */
enum {
  F_SRC = 1, F_DST = 2, F_ALIGNED = 4, F_IMM256 = 8, F_IMM32 = 16,
  F_NAN_ANY_OF_INPUTS = 32, F_NAN_ANY = 64
};

typedef struct check {
  const char *name;
  ref_fn ref;
  int gen, flags;
} check;

static const check checks[] = {
    {"_mm512_loadu_ps", ref_loadu, G_BITS, F_SRC},
    {"_mm512_loadu_si512", ref_loadu, G_BITS, F_SRC},
    {"_mm512_load_si512", ref_loadu, G_BITS, F_SRC | F_ALIGNED},
    {"_mm512_storeu_ps", ref_storeu, G_BITS, F_DST},
    {"_mm512_storeu_si512", ref_storeu, G_BITS, F_DST},
    {"_mm512_store_ps", ref_storeu, G_BITS, F_DST | F_ALIGNED},
    {"_mm512_store_si512", ref_storeu, G_BITS, F_DST | F_ALIGNED},
    {"_mm512_maskz_loadu_ps", ref_maskz_loadu_d, G_BITS, F_SRC},
    {"_mm512_maskz_loadu_epi32", ref_maskz_loadu_d, G_BITS, F_SRC},
    {"_mm512_maskz_loadu_epi16", ref_maskz_loadu_w32, G_BITS, F_SRC},
    {"_mm256_maskz_loadu_epi16", ref_maskz_loadu_w16, G_BITS, F_SRC},
    {"_mm_maskz_loadu_epi8", ref_maskz_loadu_b16, G_BITS, F_SRC},
    {"_mm512_mask_storeu_ps", ref_mask_storeu_d, G_BITS, F_DST},
    {"_mm256_mask_storeu_epi16", ref_mask_storeu_w16, G_BITS, F_DST},
    {"_mm512_setzero_ps", ref_zero, G_BITS, 0},
    {"_mm512_setzero_si512", ref_zero, G_BITS, 0},
    {"_mm512_set1_ps", ref_set1_d, G_F32, 0},
    {"_mm512_set1_epi32", ref_set1_d, G_INT, 0},
    {"_mm512_set1_epi16", ref_set1_w, G_BITS, 0},
    {"_mm512_set1_epi8", ref_set1_b, G_BITS, 0},
    {"_mm512_set_epi32", ref_copy_a, G_INT, 0},
    {"_mm512_set_epi16", ref_copy_a, G_BITS, 0},
    {"_mm512_castps_si512", ref_copy_a, G_F32, 0},
    {"_mm512_castsi512_ps", ref_copy_a, G_BITS, 0},
    {"_mm512_mask_mov_ps", ref_mask_mov_ps, G_F32, 0},
    {"_mm512_maskz_mov_ps", ref_maskz_mov_ps, G_F32, 0},
    {"_mm256_mask_mov_epi16", ref_mm256_mask_mov_epi16, G_BITS, 0},
    {"_mm512_add_ps", ref_add_ps, G_F32, F_NAN_ANY_OF_INPUTS},
    {"_mm512_sub_ps", ref_sub_ps, G_F32, 0},
    {"_mm512_mul_ps", ref_mul_ps, G_F32, F_NAN_ANY_OF_INPUTS},
    {"_mm512_div_ps", ref_div_ps, G_F32, 0},
    {"_mm512_maskz_sub_ps", ref_maskz_sub_ps, G_F32, 0},
    {"_mm512_fmadd_ps", ref_fmadd_ps, G_F32, F_NAN_ANY_OF_INPUTS},
    {"_mm512_fnmadd_ps", ref_fnmadd_ps, G_F32, F_NAN_ANY_OF_INPUTS},
    {"_mm512_max_ps", ref_max_ps, G_F32, 0},
    {"_mm512_abs_ps", ref_abs_ps, G_F32, 0},
    {"_mm512_add_epi32", ref_add_epi32, G_INT, 0},
    {"_mm512_sub_epi32", ref_sub_epi32, G_INT, 0},
    {"_mm512_add_epi16", ref_add_epi16, G_BITS, 0},
    {"_mm512_and_si512", ref_and_si512, G_BITS, 0},
    {"_mm512_or_si512", ref_or_si512, G_BITS, 0},
    {"_mm512_mask_or_epi32", ref_mask_or_epi32, G_BITS, 0},
    {"_mm512_slli_epi32", ref_slli_epi32, G_INT, F_IMM256},
    {"_mm512_srli_epi32", ref_srli_epi32, G_INT, F_IMM256},
    {"_mm512_ternarylogic_epi32", ref_ternarylogic_epi32, G_BITS, F_IMM256},
    {"_mm512_cmp_ps_mask", ref_cmp_ps_mask, G_F32, F_IMM32},
    {"_mm512_cmpge_epi32_mask", ref_cmpge_epi32_mask, G_INT, 0},
    {"_mm512_cmple_epi32_mask", ref_cmple_epi32_mask, G_INT, 0},
    {"_mm512_cmplt_epi32_mask", ref_cmplt_epi32_mask, G_INT, 0},
    {"_mm256_cmpeq_epi16_mask", ref_mm256_cmpeq_epi16_mask, G_INT, 0},
    {"_mm512_shuffle_f32x4", ref_shuffle_f32x4, G_BITS, F_IMM256},
    {"_mm512_shuffle_ps", ref_shuffle_ps, G_BITS, F_IMM256},
    {"_mm512_permutexvar_ps", ref_permutexvar_ps, G_BITS, 0},
    {"_mm512_permutex2var_ps", ref_permutex2var_ps, G_BITS, 0},
    {"_mm512_permutex2var_epi16", ref_permutex2var_epi16, G_BITS, 0},
    {"_mm512_permutex2var_epi8", ref_permutex2var_epi8, G_BITS, 0},
    {"_mm512_maskz_permutex2var_epi8", ref_maskz_permutex2var_epi8, G_BITS, 0},
    {"_mm512_unpacklo_epi8", ref_unpacklo_epi8, G_BITS, 0},
    {"_mm512_unpackhi_epi8", ref_unpackhi_epi8, G_BITS, 0},
    {"_mm512_unpacklo_epi16", ref_unpacklo_epi16, G_BITS, 0},
    {"_mm512_unpackhi_epi16", ref_unpackhi_epi16, G_BITS, 0},
    {"_mm512_cvtepu16_epi32", ref_cvtepu16_epi32, G_BITS, 0},
    {"_mm512_cvtepi32_epi16", ref_cvtepi32_epi16, G_INT, 0},
    {"_mm512_cvtph_ps", ref_cvtph_ps, G_F16, 0},
    {"_mm512_cvtps_ph", ref_cvtps_ph, G_F32, F_IMM256},
    {"_mm512_cvtne2ps_pbh", ref_cvtne2ps_pbh, G_F32, 0},
    {"_mm512_cvtneps_pbh", ref_cvtneps_pbh, G_F32, 0},
    {"_mm512_dpbf16_ps", ref_dpbf16_ps, G_BF16, 0},
    {"_mm512_roundscale_ps", ref_roundscale_ps, G_F32, F_IMM256},
    {"_mm512_scalef_ps", ref_scalef_ps, G_SCALEF, 0},
    {"_mm512_reduce_add_ps", ref_reduce_add_ps, G_REDUCE, F_NAN_ANY},
    {"_mm512_reduce_max_ps", ref_reduce_max_ps, G_REDUCE, 0},
};
enum { N_CHECKS = sizeof checks / sizeof checks[0] };

static void gen(emu_op_in *in, int kind) {
  memset(in, 0, sizeof *in);
  for (int i = 0; i < 16; i++) {
    switch (kind) {
      case G_F32:
        wr32(in->a, i, rnd_f32());
        wr32(in->b, i, rnd_f32());
        wr32(in->c, i, rnd_f32());
        break;
      case G_INT:
        wr32(in->a, i, rnd_int32());
        wr32(in->b, i, rnd_below(4) ? rnd_int32() : rd32(in->a, i)); /* equal sometimes */
        wr32(in->c, i, rnd_int32());
        break;
      case G_BF16:
        wr32(in->a, i, (uint32_t)rnd_bf16() << 16 | rnd_bf16());
        wr32(in->b, i, (uint32_t)rnd_bf16() << 16 | rnd_bf16());
        /* the accumulator: edges, random, or small (near 2^-126) */
        wr32(in->c, i, rnd_below(3) ? rnd_f32()
                                    : (rnd32() & 0x80000000u) | (uint32_t)rnd_below(4) << 23 |
                                          (rnd32() & 0x7fffffu));
        break;
      case G_F16: {
        const int n = (int)(sizeof f16_edges / 2);
        wr16(in->a, i, rnd_below(2) ? f16_edges[rnd_below(n)] : (uint16_t)rnd32());
        wr16(in->a, 16 + i, (uint16_t)rnd32());
        break;
      }
      case G_SCALEF: {
        static const float b_edges[] = {0.0f, -0.0f, 0.5f, -0.5f, 0.999f, -0.001f, 1e30f,
                                        -1e30f, 127.0f, -126.0f, -149.0f, -150.0f, 149.0f,
                                        300.0f, -300.0f, 1e-40f, -1e-40f};
        wr32(in->a, i, rnd_f32());
        const int r = rnd_below(5);
        const float b = r == 0 ? b_edges[rnd_below((int)(sizeof b_edges / 4))]
                        : r == 1 ? (float)(rnd_below(321) - 160)
                        : r == 2 ? (float)(rnd_below(6401) - 3200) / 20.0f
                                 : f_of(rnd_f32());
        wr32(in->b, i, u_of(b));
        break;
      }
      case G_REDUCE: { /* moderate values with cancellation, and edges */
        const int r = rnd_below(8);
        const float v = r == 0 ? f_of(f32_edges[rnd_below(N_F32_EDGES)])
                               : ldexpf((float)((int)(rnd32() % 2000001) - 1000000), rnd_below(40) - 20);
        wr32(in->a, i, u_of(v));
        break;
      }
      default: /* G_BITS */
        wr32(in->a, i, rnd32());
        wr32(in->b, i, rnd32());
        wr32(in->c, i, rnd32());
    }
  }
  in->k = rnd_mask();
}

/* Where an op reads and writes memory: a source and a destination at an
   offset (0 or 64 where the op needs alignment), the destination's bytes
   around the 64 it may write set to a pattern, so that a write outside
   them shows. */
typedef struct run_mem {
  _Alignas(64) uint8_t src[192];
  _Alignas(64) uint8_t dst[192];
} run_mem;

static void run(emu_op_fn fn, const emu_op_in *in0, int flags, int off, emu_op_out *o,
                run_mem *m) {
  emu_op_in in = *in0;
  memset(m->src, 0xa5, sizeof m->src);
  memcpy(m->src + off, in.c, 64);
  for (int i = 0; i < (int)sizeof m->dst; i++) m->dst[i] = (uint8_t)(in.b[i % 64] ^ 0x5a);
  in.src = flags & F_SRC ? m->src + off : NULL;
  in.dst = flags & F_DST ? m->dst + off : NULL;
  memset(o, 0, sizeof *o);
  fn(&in, o);
}

/* Does got match want? Bitwise, but with F_NAN_ANY_OF_INPUTS an element
   where two or more inputs are NaN may be any of them, quieted, and with
   F_NAN_ANY a NaN reduction result any NaN. */
static int nan_any_input_ok(uint32_t got, const emu_op_in *in, int i) {
  const uint32_t x[3] = {rd32(in->a, i), rd32(in->b, i), rd32(in->c, i)};
  int nans = 0, hit = 0;
  for (int j = 0; j < 3; j++)
    if (nan32(x[j])) {
      nans++;
      hit |= got == quiet32(x[j]);
    }
  return nans >= 2 && hit;
}
static int same(const emu_op_out *got, const emu_op_out *want, const run_mem *mg,
                const run_mem *mw, const emu_op_in *in, int flags, char *why, size_t whylen) {
  if (got->k != want->k) {
    snprintf(why, whylen, "mask 0x%llx, want 0x%llx", (unsigned long long)got->k,
             (unsigned long long)want->k);
    return 0;
  }
  if (u_of(got->f) != u_of(want->f) &&
      !(flags & F_NAN_ANY && isnan(got->f) && isnan(want->f))) {
    snprintf(why, whylen, "result 0x%08x, want 0x%08x", u_of(got->f), u_of(want->f));
    return 0;
  }
  for (int i = 0; i < 16; i++) {
    const uint32_t g = rd32(got->v, i), w = rd32(want->v, i);
    if (g != w && !(flags & F_NAN_ANY_OF_INPUTS && nan_any_input_ok(g, in, i))) {
      snprintf(why, whylen, "dword %d: 0x%08x, want 0x%08x (inputs 0x%08x 0x%08x 0x%08x)", i, g,
               w, rd32(in->a, i), rd32(in->b, i), rd32(in->c, i));
      return 0;
    }
  }
  if (memcmp(mg->dst, mw->dst, sizeof mg->dst) != 0) {
    for (int i = 0; i < (int)sizeof mg->dst; i++)
      if (mg->dst[i] != mw->dst[i]) {
        snprintf(why, whylen, "memory byte %d: 0x%02x, want 0x%02x", i, mg->dst[i], mw->dst[i]);
        break;
      }
    return 0;
  }
  return 1;
}

static const check *find_check(const char *name) {
  for (int i = 0; i < N_CHECKS; i++)
    if (strcmp(checks[i].name, name) == 0) return &checks[i];
  return NULL;
}

/* Runs an op (a) and what it is compared with (b) on the same inputs:
   every immediate it takes with `per_imm` inputs each, or `n` inputs. */
static void compare_op(const char *name, emu_op_fn a, emu_op_fn b, const check *c, int n,
                       int per_imm, const char *b_is) {
  static run_mem ma, mb;
  const int imms = c->flags & F_IMM256 ? 256 : c->flags & F_IMM32 ? 32 : 1;
  const int per = imms > 1 ? per_imm : n;
  for (int imm = 0; imm < imms; imm++)
    for (int t = 0; t < per; t++) {
      emu_op_in in;
      gen(&in, c->gen);
      in.imm = imm;
      const int off = c->flags & F_ALIGNED ? 64 : rnd_below(65);
      emu_op_out oa, ob;
      run(a, &in, c->flags, off, &oa, &ma);
      run(b, &in, c->flags, off, &ob, &mb);
      char why[200];
      if (!same(&oa, &ob, &ma, &mb, &in, c->flags, why, sizeof why)) {
        CHECK(0, "%s imm 0x%02x mask 0x%llx offset %d: %s (against %s)", name, imm,
              (unsigned long long)in.k, off, why, b_is);
        return;
      }
    }
}

/* ---- known answers, by hand from the manual ---------------------------------- */

static const emu_op *op_named(const emu_op *table, const char *name) {
  for (int i = 0; i < rpa_emu_ops_count; i++)
    if (strcmp(table[i].name, name) == 0) return &table[i];
  fprintf(stderr, "no op %s\n", name);
  exit(2);
}

/* One lane of dpbf16: acc + (a_hi, a_lo) . (b_hi, b_lo), in lane 5 (the
   others zero). */
static uint32_t dp1(const emu_op *table, uint32_t acc, uint16_t ahi, uint16_t alo, uint16_t bhi,
                    uint16_t blo) {
  emu_op_in in;
  memset(&in, 0, sizeof in);
  wr32(in.c, 5, acc);
  wr32(in.a, 5, (uint32_t)ahi << 16 | alo);
  wr32(in.b, 5, (uint32_t)bhi << 16 | blo);
  emu_op_out o;
  memset(&o, 0, sizeof o);
  op_named(table, "_mm512_dpbf16_ps")->fn(&in, &o);
  return rd32(o.v, 5);
}

static void known_answers(const emu_op *t, const char *who) {
  char name[96];
  snprintf(name, sizeof name, "known answers: vdpbf16ps (%s)", who);
  th_begin(name);
  {
    static const struct {
      uint32_t acc;
      uint16_t ahi, alo, bhi, blo;
      uint32_t want;
      const char *what;
    } k[] = {
        /* 1 + 2^-24 rounds to 1 (tie, even), then - 2^-24: the odd pair
           first, each step rounded; even first or one rounding gives 1.0 */
        {0x3f800000, 0x3980, 0xb980, 0x3980, 0x3980, 0x3f7fffff, "odd pair first, rounded per step"},
        /* 2^-126 - 2^-151 rounds (24 bits, unbounded exponent) to 2^-126:
           not tiny, kept */
        {0x00800000, 0x1980, 0, 0x9a00, 0, 0x00800000, "FTZ: tiny after rounding only"},
        /* 2^-126 - 2^-150 is tiny (exact below 2^-126): flushed to +0 */
        {0x00800000, 0x1a00, 0, 0x9a00, 0, 0x00000000, "FTZ: a tiny result is +0"},
        /* -2^-126 + 2^-150 is tiny: -0, and -0 + (-0 * 0) stays -0 */
        {0x80800000, 0x9a00, 0x8000, 0x9a00, 0, 0x80000000, "FTZ: -0 for a tiny negative"},
        {0x00000000, 0x2000, 0, 0x2000, 0, 0x00800000, "2^-63 * 2^-63 = 2^-126 is normal"},
        {0x00000000, 0x1c80, 0, 0x1c80, 0, 0x00000000, "FTZ: 2^-70 * 2^-70 -> +0"},
        /* the first step's 2^-127 is flushed before the second adds 2^-125
           (kept, it would give 1.25 * 2^-125) */
        {0x00000000, 0x2000, 0x2080, 0x1f80, 0x2000, 0x01000000, "FTZ on the first step's result"},
        {0x00000001, 0, 0, 0, 0, 0x00000000, "DAZ on the accumulator"},
        {0x80000001, 0, 0, 0, 0, 0x00000000, "DAZ: -0 + 0 = +0"},
        {0x3f800000, 0, 0x0001, 0, 0x7f00, 0x3f800000, "DAZ on a bf16 input"},
        {0x7fc00001, 0x7f81, 0x3f80, 0x3f80, 0x3f80, 0x7fc10000, "NaN: src1 before acc"},
        {0x3f800000, 0x3f80, 0x7fa0, 0xffc1, 0x3f80, 0x7fe00000, "NaN: src1 (even) beats acc NaN"},
        {0x3f800000, 0x3f80, 0x3f80, 0xffc1, 0x7f81, 0x7fc10000, "NaN: src2 (even) beats acc NaN"},
        {0x00000000, 0x7f80, 0, 0x0000, 0, 0xffc00000, "inf * 0: default NaN"},
        {0x7f7fffff, 0x7f7f, 0, 0x3f80, 0, 0x7f800000, "overflow to +inf"},
        {0xff800000, 0x7180, 0, 0x7180, 0, 0xff800000, "2^200 + -inf: fused, no overflow"},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
      const uint32_t got = dp1(t, k[i].acc, k[i].ahi, k[i].alo, k[i].bhi, k[i].blo);
      CHECK(got == k[i].want, "%s: 0x%08x, want 0x%08x", k[i].what, got, k[i].want);
    }
  }
  th_end();

  snprintf(name, sizeof name, "known answers: bf16, f16 conversions (%s)", who);
  th_begin(name);
  {
    static const uint32_t x[] = {0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001, 0x7f7fffff,
                                 0xff7fffff, 0x007fffff, 0x807fffff, 0x00800000, 0x7f800001,
                                 0xffa12345, 0x7fffffff, 0x7f800000, 0x40490fdb};
    static const uint16_t want[] = {0x3f80, 0x3f82, 0x3f80, 0x3f81, 0x7f80, 0xff80, 0x0000,
                                    0x8000, 0x0080, 0x7fc0, 0xffe1, 0x7fff, 0x7f80, 0x4049};
    emu_op_in in;
    memset(&in, 0, sizeof in);
    for (int i = 0; i < 14; i++) wr32(in.a, i, x[i]);
    emu_op_out o;
    memset(&o, 0, sizeof o);
    op_named(t, "_mm512_cvtneps_pbh")->fn(&in, &o);
    for (int i = 0; i < 14; i++)
      CHECK(rd16(o.v, i) == want[i], "cvtneps 0x%08x: 0x%04x, want 0x%04x", x[i], rd16(o.v, i),
            want[i]);
    /* f32 -> f16: nearest even (imm 8 as the kernels pass it) and toward
       zero (imm 3) */
    static const uint32_t h[] = {0x477fe000, 0x477ff000, 0x33000000, 0x33000001, 0x33800000,
                                 0x3f800000, 0x7f800001, 0xffa12345, 0x38800000, 0xc77ff000};
    static const uint16_t want_rne[] = {0x7bff, 0x7c00, 0x0000, 0x0001, 0x0001,
                                        0x3c00, 0x7e00, 0xff09, 0x0400, 0xfc00};
    static const uint16_t want_rz[] = {0x7bff, 0x7bff, 0x0000, 0x0000, 0x0001,
                                       0x3c00, 0x7e00, 0xff09, 0x0400, 0xfbff};
    memset(&in, 0, sizeof in);
    for (int i = 0; i < 10; i++) wr32(in.a, i, h[i]);
    for (int r = 0; r < 2; r++) {
      in.imm = r ? 3 : 8;
      memset(&o, 0, sizeof o);
      op_named(t, "_mm512_cvtps_ph")->fn(&in, &o);
      for (int i = 0; i < 10; i++) {
        const uint16_t w = r ? want_rz[i] : want_rne[i];
        CHECK(rd16(o.v, i) == w, "cvtps_ph imm %d 0x%08x: 0x%04x, want 0x%04x", in.imm, h[i],
              rd16(o.v, i), w);
      }
    }
    /* every f16 value to f32, against the IEEE decoding */
    for (int base = 0; base < 65536; base += 16) {
      memset(&in, 0, sizeof in);
      for (int i = 0; i < 16; i++) wr16(in.a, i, (uint16_t)(base + i));
      memset(&o, 0, sizeof o);
      op_named(t, "_mm512_cvtph_ps")->fn(&in, &o);
      for (int i = 0; i < 16; i++)
        CHECK(rd32(o.v, i) == f16_to_f32((uint16_t)(base + i)), "cvtph 0x%04x: 0x%08x",
              base + i, rd32(o.v, i));
    }
    CHECK(f16_to_f32(0x7c01) == 0x7fc02000 && f16_to_f32(0x0001) == 0x33800000 &&
              f16_to_f32(0x03ff) == 0x387fc000,
          "the f16 reference itself");
  }
  th_end();

  snprintf(name, sizeof name, "known answers: GCC's reduction trees (%s)", who);
  th_begin(name);
  {
    emu_op_in in;
    emu_op_out o;
    /* 2^24 + 1 rounds to 2^24 in the (0, 8) pair, 1 - 2^24 is exact in (4,
       12): their sum is 1; in order, or pairwise otherwise, it is 2 */
    memset(&in, 0, sizeof in);
    wr32(in.a, 0, u_of(16777216.0f));
    wr32(in.a, 8, u_of(1.0f));
    wr32(in.a, 4, u_of(-16777216.0f));
    wr32(in.a, 12, u_of(1.0f));
    memset(&o, 0, sizeof o);
    op_named(t, "_mm512_reduce_add_ps")->fn(&in, &o);
    CHECK(o.f == 1.0f, "reduce_add tree: %g, want 1", (double)o.f);
    /* max: all -0 but element 0 +0: max_ps keeps its second operand on
       equal zeros, and GCC's operand order ends on -0 */
    memset(&in, 0, sizeof in);
    for (int i = 1; i < 16; i++) wr32(in.a, i, 0x80000000u);
    memset(&o, 0, sizeof o);
    op_named(t, "_mm512_reduce_max_ps")->fn(&in, &o);
    CHECK(u_of(o.f) == 0x80000000u, "reduce_max zeros: 0x%08x, want -0", u_of(o.f));
    /* a NaN in element 1 is dropped by the tree, one in element 3 comes out */
    for (int lane = 1; lane <= 3; lane += 2) {
      memset(&in, 0, sizeof in);
      for (int i = 0; i < 16; i++) wr32(in.a, i, i == lane ? 0x7fc00000u : u_of(1.0f));
      memset(&o, 0, sizeof o);
      op_named(t, "_mm512_reduce_max_ps")->fn(&in, &o);
      const uint32_t want = lane == 1 ? u_of(1.0f) : 0x7fc00000u;
      CHECK(u_of(o.f) == want, "reduce_max NaN in %d: 0x%08x, want 0x%08x", lane, u_of(o.f), want);
    }
  }
  th_end();

  snprintf(name, sizeof name, "known answers: vscalefps, vrndscaleps (%s)", who);
  th_begin(name);
  {
    static const struct {
      uint32_t a, b, want;
    } s[] = {
        {0x7fc00001, 0x7f800000, 0x7f800000}, /* QNaN, +inf: +INF (Table 5-30) */
        {0x7fc00001, 0xff800000, 0x00000000}, /* QNaN, -inf: +0 */
        {0x7f800001, 0x7f800000, 0x7fc00001}, /* SNaN: QNaN(src1) */
        {0x3f800000, 0xffc00002, 0xffc00002}, /* QNaN(src2) */
        {0x7fc00003, 0x7fc00004, 0x7fc00003}, /* QNaN(src1) */
        {0x00000000, 0x7f800000, 0xffc00000}, /* 0 * 2^inf */
        {0x80000000, 0xff800000, 0x80000000},
        {0x7f800000, 0xff800000, 0xffc00000}, /* inf * 2^-inf */
        {0xff800000, 0x7f800000, 0xff800000},
        {0xff800000, 0x40400000, 0xff800000},
        {0xc0400000, 0x7f800000, 0xff800000}, /* -3 * 2^inf */
        {0xc0400000, 0xff800000, 0x80000000},
        {0x3fc00000, 0xc2ff0000, 0x00300000}, /* 1.5 * 2^floor(-127.5) = 2^-128 + 2^-129 */
        {0x3f800001, 0xc3150000, 0x00000001}, /* (1 + 2^-23) 2^-149 */
        {0x3fc00000, 0xc3160000, 0x00000001}, /* 1.5 * 2^-150 rounds up */
        {0x3f800000, 0xc3160000, 0x00000000}, /* 2^-150: tie to even 0 */
        {0x40400000, 0x42fe0000, 0x7f800000}, /* 3 * 2^127 overflows */
        {0x3f800000, 0x3f7fbe77, 0x3f800000}, /* floor(0.999) = 0 */
        {0x3f800000, 0xba83126f, 0x3f000000}, /* floor(-0.001) = -1 */
        {0x3f800000, 0x80000000, 0x3f800000}, /* floor(-0) = -0 */
        {0x3f800000, 0x80000001, 0x3f000000}, /* a negative denormal floors to -1 */
        {0x00000001, 0x43150000, 0x3f800000}, /* 2^-149 * 2^149 */
        {0x3f800000, 0x7149f2ca, 0x7f800000}, /* 2^1e30 */
        {0x3f800000, 0xf149f2ca, 0x00000000},
    };
    emu_op_in in;
    emu_op_out o;
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
      memset(&in, 0, sizeof in);
      wr32(in.a, (int)i % 16, s[i].a);
      wr32(in.b, (int)i % 16, s[i].b);
      memset(&o, 0, sizeof o);
      op_named(t, "_mm512_scalef_ps")->fn(&in, &o);
      CHECK(rd32(o.v, (int)i % 16) == s[i].want, "scalef(0x%08x, 0x%08x): 0x%08x, want 0x%08x",
            s[i].a, s[i].b, rd32(o.v, (int)i % 16), s[i].want);
    }
    static const struct {
      int imm;
      float x, want;
    } r[] = {
        {0x08, 2.5f, 2.0f},   {0x08, 3.5f, 4.0f},    {0x08, -2.5f, -2.0f},
        {0x08, -0.4f, -0.0f}, {0x19, 1.3f, 1.0f},    {0x19, -1.3f, -1.5f},
        {0xf0, 3e38f, 3e38f}, {0x22, 0.1f, 0.25f},   {0x0b, -1.7f, -1.0f},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
      memset(&in, 0, sizeof in);
      wr32(in.a, 3, u_of(r[i].x));
      in.imm = r[i].imm;
      memset(&o, 0, sizeof o);
      op_named(t, "_mm512_roundscale_ps")->fn(&in, &o);
      CHECK(rd32(o.v, 3) == u_of(r[i].want), "roundscale(%g, 0x%02x): %g, want %g", (double)r[i].x,
            r[i].imm, (double)f_of(rd32(o.v, 3)), (double)r[i].want);
    }
    memset(&in, 0, sizeof in);
    wr32(in.a, 0, 0x7f800001u);
    in.imm = 0x08;
    memset(&o, 0, sizeof o);
    op_named(t, "_mm512_roundscale_ps")->fn(&in, &o);
    CHECK(rd32(o.v, 0) == 0x7fc00001u, "roundscale SNaN: 0x%08x", rd32(o.v, 0));
  }
  th_end();
}

/* ---- masked loads and stores next to inaccessible pages ---------------------- */

static sigjmp_buf fault_jmp;
static volatile sig_atomic_t fault_seen;
static void on_fault(int sig) {
  (void)sig;
  fault_seen = 1;
  siglongjmp(fault_jmp, 1);
}

/* Runs an op; 1 if it faulted (SIGSEGV or SIGBUS caught). */
static int faults(emu_op_fn fn, const emu_op_in *in, emu_op_out *o) {
  fault_seen = 0;
  if (sigsetjmp(fault_jmp, 1) == 0) fn(in, o);
  return fault_seen;
}

/* [guard][data][guard], the guards PROT_NONE: an element n bytes before the
   data's end is read or written with its mask bit set, the elements past the
   end (or before the start) with their bits clear; touching one faults. */
static void guard_pages(void) {
  th_begin("masked loads/stores touch no masked-off byte (guard pages)");
  const long pg = sysconf(_SC_PAGESIZE);
  uint8_t *map = mmap(NULL, (size_t)(3 * pg), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(map != MAP_FAILED, "mmap");
  if (map == MAP_FAILED) {
    th_end();
    return;
  }
  CHECK(mprotect(map, (size_t)pg, PROT_NONE) == 0 &&
            mprotect(map + 2 * pg, (size_t)pg, PROT_NONE) == 0,
        "mprotect");
  uint8_t *data = map + pg, *end = map + 2 * pg;
  for (long i = 0; i < pg; i++) data[i] = (uint8_t)(i * 7 + 3);
  struct sigaction sa, old_segv, old_bus;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fault;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
  static const struct {
    const char *name;
    int n, size, store;
  } ops[] = {
      {"_mm512_maskz_loadu_ps", 16, 4, 0},    {"_mm512_maskz_loadu_epi32", 16, 4, 0},
      {"_mm512_maskz_loadu_epi16", 32, 2, 0}, {"_mm256_maskz_loadu_epi16", 16, 2, 0},
      {"_mm_maskz_loadu_epi8", 16, 1, 0},     {"_mm512_mask_storeu_ps", 16, 4, 1},
      {"_mm256_mask_storeu_epi16", 16, 2, 1},
  };
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
    const emu_op *op = op_named(rpa_emu_ops_emulated, ops[o].name);
    const check *c = find_check(ops[o].name);
    for (int n = 0; n <= ops[o].n; n++)
      for (int side = 0; side < 2; side++) {
        /* side 0: elements 0..n-1 end at the data's end, n.. lie past it;
           side 1: elements n.. start at the data's start, 0..n-1 before it */
        uint8_t *p = side == 0 ? end - n * ops[o].size : data - n * ops[o].size;
        const uint64_t all = ops[o].n == 64 ? ~0ull : (1ull << ops[o].n) - 1;
        const uint64_t inside = side == 0 ? (1ull << n) - 1 : all & ~((1ull << n) - 1);
        for (int t = 0; t < 4; t++) {
          emu_op_in in;
          gen(&in, G_BITS);
          in.k = t == 0 ? inside : rnd64() & inside;
          in.src = p;
          in.dst = p;
          emu_op_out got, want;
          memset(&got, 0, sizeof got);
          memset(&want, 0, sizeof want);
          uint8_t before[64];
          uint8_t *lo = side == 0 ? end - 64 : data; /* the page's bytes the op may change */
          memcpy(before, lo, 64);
          const int faulted = faults(op->fn, &in, &got);
          CHECK(!faulted, "%s: %d elements %s the page, mask 0x%llx: a masked-off byte was touched",
                ops[o].name, n, side ? "after the start of" : "before the end of",
                (unsigned long long)in.k);
          if (faulted) continue;
          if (ops[o].store) {
            uint8_t after[64];
            memcpy(after, lo, 64);
            memcpy(lo, before, 64);
            c->ref(&in, &want);
            CHECK(memcmp(after, lo, 64) == 0, "%s: stored bytes differ (n %d, side %d)",
                  ops[o].name, n, side);
            memcpy(lo, before, 64);
          } else {
            c->ref(&in, &want);
            CHECK(memcmp(got.v, want.v, 64) == 0, "%s: loaded values differ (n %d, side %d)",
                  ops[o].name, n, side);
          }
        }
      }
  }
  sigaction(SIGSEGV, &old_segv, NULL);
  sigaction(SIGBUS, &old_bus, NULL);
  munmap(map, (size_t)(3 * pg));
  th_end();
}

/* An aligned load or store on a misaligned address: the instruction faults
   (#GP); the emulation aborts. Checked in a child process. */
static void misaligned_faults(void) {
  th_begin("aligned loads/stores on a misaligned address abort, as they fault");
  static const char *const names[] = {"_mm512_load_si512", "_mm512_store_ps", "_mm512_store_si512"};
  for (int i = 0; i < 3; i++) {
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
      (void)!freopen("/dev/null", "w", stderr);
      static _Alignas(64) uint8_t buf[192];
      emu_op_in in;
      memset(&in, 0, sizeof in);
      in.src = buf + 4;
      in.dst = buf + 4;
      emu_op_out o;
      op_named(rpa_emu_ops_emulated, names[i])->fn(&in, &o);
      _exit(0);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork/wait");
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
          "%s on a misaligned address did not abort (status 0x%x)", names[i], status);
  }
  th_end();
}

/* ---- the CPU ---------------------------------------------------------------- */

/* NULL if the CPU and OS run AVX-512 F, BW, DQ, VL, VBMI and BF16, else why not. */
static const char *no_avx512_why(void) {
  unsigned a, b, c, d;
  if (__get_cpuid_max(0, 0) < 7) return "no CPUID leaf 7";
  __cpuid_count(7, 0, a, b, c, d);
  if (!(b >> 16 & 1)) return "this CPU lacks AVX-512 F";
  if (!(b >> 17 & 1) || !(b >> 30 & 1) || !(b >> 31 & 1)) return "this CPU lacks AVX-512 DQ, BW or VL";
  if (!(c >> 1 & 1)) return "this CPU lacks AVX-512 VBMI";
  __cpuid_count(7, 1, a, b, c, d);
  if (!(a >> 5 & 1)) return "this CPU lacks AVX-512 BF16";
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c >> 27 & 1)) return "no OSXSAVE";
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  (void)hi;
  if ((lo & 0xe6) != 0xe6) return "the OS does not save the ZMM and opmask state";
  return NULL;
}

int main(void) {
  /* every op has a reference, in the same order in both tables */
  th_begin("every emulated intrinsic has an op and a reference");
  CHECK(rpa_emu_ops_count == N_CHECKS, "%d ops, %d references", rpa_emu_ops_count, N_CHECKS);
  for (int i = 0; i < rpa_emu_ops_count; i++) {
    CHECK(find_check(rpa_emu_ops_emulated[i].name) != NULL, "%s: no reference",
          rpa_emu_ops_emulated[i].name);
    CHECK(strcmp(rpa_emu_ops_emulated[i].name, rpa_emu_ops_native[i].name) == 0,
          "tables differ at %d", i);
  }
  th_end();

  /* the emulation against the manual's pseudo-code, op by op */
  for (int i = 0; i < rpa_emu_ops_count; i++) {
    const emu_op *op = &rpa_emu_ops_emulated[i];
    const check *c = find_check(op->name);
    if (!c) continue;
    char name[96];
    snprintf(name, sizeof name, "%s: emulation = manual", op->name);
    th_begin(name);
    compare_op(op->name, op->fn, c->ref, c, 4000, 24, "the manual's pseudo-code");
    th_end();
  }
  known_answers(rpa_emu_ops_emulated, "emulation");
  guard_pages();
  misaligned_faults();

  /* the emulation against the real instructions */
  const char *why = no_avx512_why();
  if (why) {
    printf("test_emu_avx512: hardware comparison NOT RUN: %s (it runs on CPUs with AVX-512 "
           "F/BW/DQ/VL/VBMI/BF16, e.g. AMD Zen 4/5, Intel Sapphire Rapids)\n",
           why);
  } else {
    printf("test_emu_avx512: comparing the emulation with this CPU's AVX-512 instructions\n");
    for (int i = 0; i < rpa_emu_ops_count; i++) {
      const emu_op *op = &rpa_emu_ops_emulated[i];
      const check *c = find_check(op->name);
      if (!c) continue;
      char name[96];
      snprintf(name, sizeof name, "%s: emulation = hardware", op->name);
      th_begin(name);
      compare_op(op->name, op->fn, rpa_emu_ops_native[i].fn, c, 20000, 64, "the hardware");
      th_end();
    }
    known_answers(rpa_emu_ops_native, "hardware");
  }
  return th_finish("test_emu_avx512");
}
