/* Dtype conversions: bf16, f16, fp8 e4m3fn and fp8 e5m2 against an
   independent model of each format written here from its definition (sign,
   exponent, mantissa; subnormals; infinities; NaN), plus rpa_convert,
   rpa_dtype_size and rpa_dtype_name.

   The model never calls the library: decoding is ldexp in double, encoding
   is a nearest-value search over the table of every representable value with
   ties broken toward the even code. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "rpa.h"

/* Kept in src/dtype.c as a cross-check of the hand-written f16 encoder. */
uint16_t rpa_f32_to_f16_generic(float value);

/* ------------------------------------------------------------------------ */
/* Helpers.                                                                 */

static uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float bitsf(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* splitmix64: a fixed, portable random stream. */
static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rng_next(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform wrappers so every format has the same signature. */
static uint32_t enc_bf16(float x) { return rpa_f32_to_bf16(x); }
static float dec_bf16(uint32_t c) { return rpa_bf16_to_f32((uint16_t)c); }
static uint32_t enc_f16(float x) { return rpa_f32_to_f16(x); }
static float dec_f16(uint32_t c) { return rpa_f16_to_f32((uint16_t)c); }
static uint32_t enc_e4m3(float x) { return rpa_f32_to_fp8_e4m3(x); }
static float dec_e4m3(uint32_t c) { return rpa_fp8_e4m3_to_f32((uint8_t)c); }
static uint32_t enc_e5m2(float x) { return rpa_f32_to_fp8_e5m2(x); }
static float dec_e5m2(uint32_t c) { return rpa_fp8_e5m2_to_f32((uint8_t)c); }

typedef struct fmt {
  const char *name;
  rpa_dtype dtype;
  int ebits, mbits;
  int fn; /* e4m3fn style: no infinity, NaN only S.1111.111 */
  uint32_t (*enc)(float);
  float (*dec)(uint32_t);
  /* Known constants of the format, to check the model itself. */
  double max_finite;
  double min_subnormal;
} fmt;

static const fmt FORMATS[] = {
    {"bf16", RPA_BF16, 8, 7, 0, enc_bf16, dec_bf16, 0x1.fep127, 0x1p-133},
    {"f16", RPA_F16, 5, 10, 0, enc_f16, dec_f16, 65504.0, 0x1p-24},
    {"e4m3fn", RPA_FP8_E4M3, 4, 3, 1, enc_e4m3, dec_e4m3, 448.0, 0x1p-9},
    {"e5m2", RPA_FP8_E5M2, 5, 2, 0, enc_e5m2, dec_e5m2, 57344.0, 0x1p-16},
};
#define NFORMATS ((int)(sizeof FORMATS / sizeof FORMATS[0]))

static uint32_t f_ncodes(const fmt *f) { return 1u << (1 + f->ebits + f->mbits); }
static uint32_t f_sign(const fmt *f) { return 1u << (f->ebits + f->mbits); }
static uint32_t f_emask(const fmt *f) { return (1u << f->ebits) - 1u; }
static uint32_t f_mmask(const fmt *f) { return (1u << f->mbits) - 1u; }
static int f_bias(const fmt *f) { return (1 << (f->ebits - 1)) - 1; }

/* The largest positive finite code. Positive codes 0..this are ordered by
   value; the next code is infinity (IEEE-like) or NaN (fn). */
static uint32_t f_max_code(const fmt *f) {
  return f->fn ? ((f_emask(f) << f->mbits) | f_mmask(f)) - 1u
               : (f_emask(f) << f->mbits) - 1u;
}

static int ref_is_nan(const fmt *f, uint32_t code) {
  uint32_t e = (code >> f->mbits) & f_emask(f), m = code & f_mmask(f);
  if (f->fn) return e == f_emask(f) && m == f_mmask(f);
  return e == f_emask(f) && m != 0;
}

/* The value of a code, from the format definition. */
static double ref_decode(const fmt *f, uint32_t code) {
  const int neg = (code & f_sign(f)) != 0;
  const uint32_t e = (code >> f->mbits) & f_emask(f), m = code & f_mmask(f);
  double v;
  if (ref_is_nan(f, code)) return NAN;
  if (!f->fn && e == f_emask(f))
    v = INFINITY;
  else if (e == 0) /* subnormal: 0.m * 2^(1 - bias) */
    v = ldexp((double)m, 1 - f_bias(f) - f->mbits);
  else /* normal: 1.m * 2^(e - bias) */
    v = ldexp((double)((1u << f->mbits) | m), (int)e - f_bias(f) - f->mbits);
  return neg ? -v : v;
}

/* Table of the positive finite values, codes 0..f_max_code. */
static double ref_table[0x8000];

static void build_table(const fmt *f) {
  for (uint32_t c = 0; c <= f_max_code(f); c++) ref_table[c] = ref_decode(f, c);
}

/* The model's encoder (build_table(f) first). Round to nearest, ties to the
   even code; values at or past max + ulp/2 round into the code after the max
   (infinity, or NaN in e4m3fn) unless the tie goes to an even max. */
static uint32_t ref_encode(const fmt *f, float x) {
  const uint32_t sign = (fbits(x) >> 31) ? f_sign(f) : 0u;
  const uint32_t maxc = f_max_code(f);
  const double a = fabs((double)x);
  const double top_ulp = ref_table[maxc] - ref_table[maxc - 1];
  uint32_t lo, hi, mid;
  if (isnan(x)) return sign | (f_emask(f) << f->mbits) | f_mmask(f);
  if (a >= ref_table[maxc] + top_ulp / 2) {
    if (a == ref_table[maxc] + top_ulp / 2 && (maxc & 1u) == 0) return sign | maxc;
    return sign | (maxc + 1u);
  }
  /* largest lo with table[lo] <= a */
  lo = 0;
  hi = maxc + 1u;
  while (hi - lo > 1) {
    mid = lo + (hi - lo) / 2;
    if (ref_table[mid] <= a)
      lo = mid;
    else
      hi = mid;
  }
  if (ref_table[lo] == a || lo == maxc) return sign | lo;
  hi = lo + 1u;
  {
    const double dlo = a - ref_table[lo], dhi = ref_table[hi] - a; /* exact */
    if (dlo < dhi) return sign | lo;
    if (dhi < dlo) return sign | hi;
    return sign | ((lo & 1u) ? hi : lo);
  }
}

/* An encoder result matches the model: NaN-ness for NaN codes (any NaN
   code of the format is accepted), the exact code otherwise. */
static int code_matches(const fmt *f, uint32_t got, uint32_t want) {
  if (ref_is_nan(f, want)) return ref_is_nan(f, got);
  return got == want;
}

/* ------------------------------------------------------------------------ */
/* Dtype-generic element access for rpa_convert.                            */

static uint32_t elem_bits(const void *buf, rpa_dtype dt, size_t i) {
  const unsigned char *p = (const unsigned char *)buf;
  switch (dt) {
    case RPA_F32: {
      uint32_t u;
      memcpy(&u, p + 4 * i, 4);
      return u;
    }
    case RPA_BF16:
    case RPA_F16: {
      uint16_t u;
      memcpy(&u, p + 2 * i, 2);
      return u;
    }
    case RPA_FP8_E4M3:
    case RPA_FP8_E5M2: return p[i];
  }
  return 0;
}

static float decode_any(rpa_dtype dt, uint32_t bits) {
  switch (dt) {
    case RPA_F32: return bitsf(bits);
    case RPA_BF16: return rpa_bf16_to_f32((uint16_t)bits);
    case RPA_F16: return rpa_f16_to_f32((uint16_t)bits);
    case RPA_FP8_E4M3: return rpa_fp8_e4m3_to_f32((uint8_t)bits);
    case RPA_FP8_E5M2: return rpa_fp8_e5m2_to_f32((uint8_t)bits);
  }
  return 0.0f;
}

static uint32_t encode_any(rpa_dtype dt, float x) {
  switch (dt) {
    case RPA_F32: return fbits(x);
    case RPA_BF16: return rpa_f32_to_bf16(x);
    case RPA_F16: return rpa_f32_to_f16(x);
    case RPA_FP8_E4M3: return rpa_f32_to_fp8_e4m3(x);
    case RPA_FP8_E5M2: return rpa_f32_to_fp8_e5m2(x);
  }
  return 0;
}

/* Same value: both NaN, or the same bits. */
static int same_elem(rpa_dtype dt, uint32_t got, uint32_t want) {
  if (isnan(decode_any(dt, want))) return isnan(decode_any(dt, got)) != 0;
  return got == want;
}

/* ------------------------------------------------------------------------ */

/* The model itself agrees with the known constants of each format, and
   its positive finite values are strictly increasing in code order. */
static void model_self_check(void) {
  for (int fi = 0; fi < NFORMATS; fi++) {
    const fmt *f = &FORMATS[fi];
    const uint32_t maxc = f_max_code(f);
    CHECK(ref_decode(f, maxc) == f->max_finite, "%s max %a", f->name,
          ref_decode(f, maxc));
    CHECK(ref_decode(f, 1) == f->min_subnormal, "%s min sub %a", f->name,
          ref_decode(f, 1));
    CHECK(f->fn ? ref_is_nan(f, maxc + 1u) : isinf(ref_decode(f, maxc + 1u)),
          "%s code after max", f->name);
    for (uint32_t c = 0; c < maxc; c++)
      CHECK(ref_decode(f, c) < ref_decode(f, c + 1u), "%s order at %#x",
            f->name, (unsigned)c);
  }
}

/* 1. Decoding every bit pattern equals the model, bit-exact (signed zeros
   included) for non-NaN patterns, and a NaN for NaN patterns. */
static void decode_all_patterns(void) {
  for (int fi = 0; fi < NFORMATS; fi++) {
    const fmt *f = &FORMATS[fi];
    for (uint32_t c = 0; c < f_ncodes(f); c++) {
      const float got = f->dec(c);
      const double want = ref_decode(f, c);
      if (ref_is_nan(f, c)) {
        CHECK(isnan(got), "%s decode(%#x) = %a, want NaN", f->name,
              (unsigned)c, (double)got);
      } else {
        CHECK((double)(float)want == want, "%s model %#x not a float",
              f->name, (unsigned)c);
        CHECK(fbits(got) == fbits((float)want),
              "%s decode(%#x) = %a (bits %08x), want %a (bits %08x)",
              f->name, (unsigned)c, (double)got, (unsigned)fbits(got), want,
              (unsigned)fbits((float)want));
      }
    }
  }
  /* e5m2 is the top byte of an f16. */
  for (uint32_t b = 0; b < 256; b++) {
    const float x = rpa_fp8_e5m2_to_f32((uint8_t)b);
    const float y = rpa_f16_to_f32((uint16_t)(b << 8));
    CHECK(isnan(x) ? isnan(y) != 0 : fbits(x) == fbits(y),
          "e5m2 %#x vs f16 %#x", (unsigned)b, (unsigned)(b << 8));
  }
}

/* 2. encode(decode(c)) == c for every non-NaN pattern (-0, subnormals,
   infinities included); NaN patterns decode to NaN and re-encode to a
   NaN pattern of the same format. Also: every f32 NaN (quiet, signaling,
   either sign, any payload) encodes to a NaN pattern. */
static void round_trip_and_nan(void) {
  static const uint32_t f32_nans[] = {
      0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu,
      0xffffffffu, 0x7f80ffffu, 0x7f810000u, 0x7fa00000u, 0xff801000u,
      0x7f800100u, 0x7f802000u};
  for (int fi = 0; fi < NFORMATS; fi++) {
    const fmt *f = &FORMATS[fi];
    for (uint32_t c = 0; c < f_ncodes(f); c++) {
      const uint32_t back = f->enc(f->dec(c));
      if (ref_is_nan(f, c))
        CHECK(ref_is_nan(f, back), "%s NaN %#x re-encodes to %#x", f->name,
              (unsigned)c, (unsigned)back);
      else
        CHECK(back == c, "%s round trip %#x -> %a -> %#x", f->name,
              (unsigned)c, (double)f->dec(c), (unsigned)back);
    }
    for (size_t k = 0; k < sizeof f32_nans / sizeof f32_nans[0]; k++) {
      const uint32_t got = f->enc(bitsf(f32_nans[k]));
      CHECK(ref_is_nan(f, got), "%s encode(NaN %08x) = %#x, not NaN",
            f->name, (unsigned)f32_nans[k], (unsigned)got);
    }
    CHECK(ref_is_nan(f, f->enc(NAN)), "%s encode(NAN)", f->name);
    CHECK(ref_is_nan(f, f->enc(-NAN)), "%s encode(-NAN)", f->name);
  }
}

/* 3. Round to nearest, ties to even: for every pair of consecutive finite
   values a < b (both signs, 0 and the smallest subnormal included), the
   exact midpoint encodes to the one with the even code, and the floats
   just beside it encode to the nearer of a and b. */
static void round_nearest_even_midpoints(void) {
  for (int fi = 0; fi < NFORMATS; fi++) {
    const fmt *f = &FORMATS[fi];
    const uint32_t maxc = f_max_code(f);
    for (uint32_t c = 0; c < maxc; c++) {
      for (int neg = 0; neg < 2; neg++) {
        const uint32_t s = neg ? f_sign(f) : 0u;
        const uint32_t ca = s | c, cb = s | (c + 1u);
        const double a = neg ? -ref_decode(f, c) : ref_decode(f, c);
        const double b = neg ? -ref_decode(f, c + 1u) : ref_decode(f, c + 1u);
        const double mid = (a + b) / 2;
        const float midf = (float)mid;
        const uint32_t even = (c & 1u) ? cb : ca;
        const float ta = nextafterf(midf, (float)a);
        const float tb = nextafterf(midf, (float)b);
        uint32_t got;
        CHECK((double)midf == mid, "%s midpoint %a not a float", f->name, mid);
        got = f->enc(midf);
        CHECK(got == even, "%s encode(tie %a) = %#x, want %#x", f->name,
              (double)midf, (unsigned)got, (unsigned)even);
        got = f->enc(ta);
        CHECK(got == ca, "%s encode(%a, below tie) = %#x, want %#x", f->name,
              (double)ta, (unsigned)got, (unsigned)ca);
        got = f->enc(tb);
        CHECK(got == cb, "%s encode(%a, above tie) = %#x, want %#x", f->name,
              (double)tb, (unsigned)got, (unsigned)cb);
      }
    }
  }
}

/* 4. Overflow. bf16, f16, e5m2: max + ulp/2 (the tie, max's code is odd)
   and above give infinity of the right sign, just below it gives max.
   e4m3fn: 448 stays, 464 (the tie, 448's code is even) gives 448, anything
   above 464 gives NaN (no infinity), as ml_dtypes / PyTorch. f32
   infinities give infinity (NaN for e4m3fn). */
static void overflow(void) {
  for (int fi = 0; fi < NFORMATS; fi++) {
    const fmt *f = &FORMATS[fi];
    const uint32_t maxc = f_max_code(f);
    const double mx = ref_decode(f, maxc);
    const double ulp = mx - ref_decode(f, maxc - 1u);
    const double tie = mx + ulp / 2;
    CHECK((double)(float)tie == tie, "%s overflow tie %a not a float",
          f->name, tie);
    for (int neg = 0; neg < 2; neg++) {
      const uint32_t s = neg ? f_sign(f) : 0u;
      const float sg = neg ? -1.0f : 1.0f;
      const float tief = sg * (float)tie;
      const uint32_t inf_code = s | (f_emask(f) << f->mbits);
      const float below = nextafterf(tief, 0.0f);
      const float above = nextafterf(tief, sg * INFINITY);
      const float beyond[] = {above, sg * (float)(mx + ulp), sg * 1e6f,
                              sg * 1e30f, sg * FLT_MAX, sg * INFINITY};
      uint32_t got = f->enc(sg * (float)mx);
      CHECK(got == (s | maxc), "%s encode(%a) = %#x, want max %#x", f->name,
            (double)(sg * (float)mx), (unsigned)got, (unsigned)(s | maxc));
      got = f->enc(below);
      CHECK(got == (s | maxc), "%s encode(%a, below tie) = %#x, want %#x",
            f->name, (double)below, (unsigned)got, (unsigned)(s | maxc));
      got = f->enc(tief);
      if (f->fn)
        CHECK(got == (s | maxc), "%s encode(tie %a) = %#x, want %#x",
              f->name, (double)tief, (unsigned)got, (unsigned)(s | maxc));
      else
        CHECK(got == inf_code, "%s encode(tie %a) = %#x, want inf %#x",
              f->name, (double)tief, (unsigned)got, (unsigned)inf_code);
      for (size_t k = 0; k < sizeof beyond / sizeof beyond[0]; k++) {
        if (fabsf(beyond[k]) <= fabsf(tief)) continue; /* not beyond */
        got = f->enc(beyond[k]);
        if (f->fn)
          CHECK(ref_is_nan(f, got), "%s encode(%a) = %#x, want NaN",
                f->name, (double)beyond[k], (unsigned)got);
        else
          CHECK(got == inf_code, "%s encode(%a) = %#x, want inf %#x",
                f->name, (double)beyond[k], (unsigned)got,
                (unsigned)inf_code);
      }
    }
  }
  /* The e4m3fn numbers spelled out. */
  CHECK(rpa_f32_to_fp8_e4m3(448.0f) == 0x7e, "e4m3 448 -> %#x",
        (unsigned)rpa_f32_to_fp8_e4m3(448.0f));
  CHECK(rpa_f32_to_fp8_e4m3(-448.0f) == 0xfe, "e4m3 -448 -> %#x",
        (unsigned)rpa_f32_to_fp8_e4m3(-448.0f));
  CHECK(rpa_f32_to_fp8_e4m3(464.0f) == 0x7e, "e4m3 464 -> %#x",
        (unsigned)rpa_f32_to_fp8_e4m3(464.0f));
  CHECK(rpa_f32_to_fp8_e4m3(-464.0f) == 0xfe, "e4m3 -464 -> %#x",
        (unsigned)rpa_f32_to_fp8_e4m3(-464.0f));
  {
    static const float big[] = {465.0f, 480.0f, 512.0f, 1e6f, INFINITY};
    for (size_t k = 0; k < sizeof big / sizeof big[0]; k++) {
      const uint32_t p = rpa_f32_to_fp8_e4m3(big[k]);
      const uint32_t n = rpa_f32_to_fp8_e4m3(-big[k]);
      CHECK((p & 0x7fu) == 0x7fu, "e4m3 %g -> %#x, want NaN",
            (double)big[k], (unsigned)p);
      CHECK((n & 0x7fu) == 0x7fu, "e4m3 -%g -> %#x, want NaN",
            (double)big[k], (unsigned)n);
    }
  }
  CHECK(rpa_f32_to_f16(65519.0f) == 0x7bff, "f16 65519 -> %#x",
        (unsigned)rpa_f32_to_f16(65519.0f));
  CHECK(rpa_f32_to_f16(65520.0f) == 0x7c00, "f16 65520 -> %#x",
        (unsigned)rpa_f32_to_f16(65520.0f));
  CHECK(rpa_f32_to_fp8_e5m2(61440.0f) == 0x7c, "e5m2 61440 -> %#x",
        (unsigned)rpa_f32_to_fp8_e5m2(61440.0f));
  CHECK(rpa_f32_to_bf16(FLT_MAX) == 0x7f80, "bf16 FLT_MAX -> %#x",
        (unsigned)rpa_f32_to_bf16(FLT_MAX));
  CHECK(rpa_f32_to_bf16(-INFINITY) == 0xff80, "bf16 -inf -> %#x",
        (unsigned)rpa_f32_to_bf16(-INFINITY));
}

/* 5. Underflow: below half the smallest subnormal gives a zero of the
   input's sign; exactly half ties to even (zero); just above half gives
   the smallest subnormal. */
static void underflow(void) {
  for (int fi = 0; fi < NFORMATS; fi++) {
    const fmt *f = &FORMATS[fi];
    const float smin = (float)ref_decode(f, 1);
    for (int neg = 0; neg < 2; neg++) {
      const uint32_t s = neg ? f_sign(f) : 0u;
      const float sg = neg ? -1.0f : 1.0f;
      const float half = sg * smin / 2;
      const float to_zero[] = {sg * 0.0f, sg * FLT_TRUE_MIN, sg * FLT_MIN,
                               sg * smin / 4, nextafterf(half, 0.0f), half};
      const float to_min[] = {nextafterf(half, sg), sg * smin * 0.75f,
                              sg * smin, nextafterf(sg * smin * 1.5f, 0.0f)};
      for (size_t k = 0; k < sizeof to_zero / sizeof to_zero[0]; k++) {
        uint32_t got;
        if (fabsf(to_zero[k]) > smin / 2) continue; /* FLT_MIN for bf16 */
        got = f->enc(to_zero[k]);
        CHECK(got == s, "%s encode(%a) = %#x, want signed zero %#x", f->name,
              (double)to_zero[k], (unsigned)got, (unsigned)s);
      }
      for (size_t k = 0; k < sizeof to_min / sizeof to_min[0]; k++) {
        const uint32_t got = f->enc(to_min[k]);
        CHECK(got == (s | 1u), "%s encode(%a) = %#x, want %#x", f->name,
              (double)to_min[k], (unsigned)got, (unsigned)(s | 1u));
      }
      {
        const uint32_t got = f->enc(sg * smin * 1.5f); /* tie 1|2 -> 2 */
        CHECK(got == (s | 2u), "%s encode(%a) = %#x, want %#x", f->name,
              (double)(sg * smin * 1.5f), (unsigned)got, (unsigned)(s | 2u));
      }
    }
  }
}

/* Random f32 inputs (arbitrary bit patterns, and representable values with
   random low bits, both signs) encode exactly as the model's
   nearest-even search says; the f16 encoder agrees with the library's
   generic encoder on the same inputs. */
static void random_encode_vs_model(void) {
  const int n = th_quick() ? 20000 : 1000000;
  for (int fi = 0; fi < NFORMATS; fi++) {
    const fmt *f = &FORMATS[fi];
    const uint32_t maxc = f_max_code(f);
    build_table(f);
    for (int i = 0; i < n; i++) {
      const uint64_t r = rng_next();
      uint32_t u = (uint32_t)r;
      float x;
      uint32_t got, want;
      if (i & 1) {
        /* a representable value (or the code past max) plus random bits
           below the format's last mantissa bit, any sign */
        const uint32_t c = (uint32_t)(r >> 32) % (maxc + 2u);
        const float v = c <= maxc ? (float)ref_table[c]
                                  : (float)(2 * ref_table[maxc] - ref_table[maxc - 1]);
        const uint32_t low = (1u << (23 - f->mbits + 1)) - 1u;
        u = (fbits(v) ^ (u & low)) | (u & 0x80000000u);
        if (isinf(bitsf(u)) || isnan(bitsf(u))) u = fbits(v);
      }
      x = bitsf(u);
      if (isnan(x)) continue;
      got = f->enc(x);
      want = ref_encode(f, x);
      CHECK(code_matches(f, got, want), "%s encode(%a, bits %08x) = %#x, want %#x",
            f->name, (double)x, (unsigned)u, (unsigned)got, (unsigned)want);
      if (f->dtype == RPA_F16) {
        const uint32_t g = rpa_f32_to_f16_generic(x);
        CHECK(g == got, "f16 generic(%a) = %#x, fast = %#x", (double)x,
              (unsigned)g, (unsigned)got);
      }
    }
  }
}

/* 6a. rpa_convert between every pair of dtypes, for several lengths
   (tails), equals the scalar functions element by element (f32 -> src ->
   dst, where src -> dst is decode then encode), and writes nothing past n. */
static void convert_all_pairs(void) {
  enum { NMAX = 211, GUARD = 16 };
  static const size_t lens[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, NMAX};
  static const float special[] = {
      0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 1.5f, 3.0f, 448.0f, 464.0f,
      465.0f, -480.0f, 57344.0f, 61440.0f, 65504.0f, 65520.0f, -65536.0f,
      1e6f, -1e30f, FLT_MAX, -FLT_MAX, FLT_MIN, FLT_TRUE_MIN, 0x1p-9f,
      0x1p-10f, 0x1p-16f, 0x1p-17f, 0x1p-24f, 0x1p-25f, 0x1p-133f,
      0x1p-134f, 1.0f / 3.0f, -2.0f / 3.0f, 1.00390625f, 1.0009765625f,
      INFINITY, -INFINITY, NAN, -NAN};
  const size_t nspecial = sizeof special / sizeof special[0];
  float *vals = malloc(NMAX * sizeof(float));
  unsigned char *src = malloc(NMAX * 4 + GUARD);
  unsigned char *dst = malloc(NMAX * 4 + GUARD);
  CHECK(vals && src && dst, "malloc");
  if (vals && src && dst) {
    for (size_t i = 0; i < NMAX; i++) {
      if (i < nspecial) {
        vals[i] = special[i];
      } else {
        const uint64_t r = rng_next();
        /* mostly moderate magnitudes, some arbitrary bit patterns */
        vals[i] = (r & 3u) ? (float)ldexp((double)(int32_t)(r >> 32),
                                          (int)((r >> 8) & 31u) - 40)
                           : bitsf((uint32_t)(r >> 32));
      }
    }
    for (int sd = 0; sd < RPA_DTYPE_COUNT; sd++) {
      for (int dd = 0; dd < RPA_DTYPE_COUNT; dd++) {
        const rpa_dtype sdt = (rpa_dtype)sd, ddt = (rpa_dtype)dd;
        const size_t ss = rpa_dtype_size(sdt), ds = rpa_dtype_size(ddt);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
          const size_t n = lens[li];
          rpa_status st;
          memset(src, 0xa5, NMAX * 4 + GUARD);
          memset(dst, 0x5a, NMAX * 4 + GUARD);
          st = rpa_convert(vals, RPA_F32, src, sdt, n);
          CHECK(st == RPA_OK, "convert f32->%s n=%zu: %d", rpa_dtype_name(sdt),
                n, (int)st);
          for (size_t i = 0; i < n; i++) {
            const uint32_t got = elem_bits(src, sdt, i);
            const uint32_t want = encode_any(sdt, vals[i]);
            CHECK(same_elem(sdt, got, want),
                  "convert f32->%s [%zu] %a: %#x, want %#x",
                  rpa_dtype_name(sdt), i, (double)vals[i], (unsigned)got,
                  (unsigned)want);
          }
          for (size_t b = n * ss; b < NMAX * 4 + GUARD; b++)
            CHECK(src[b] == 0xa5, "convert f32->%s n=%zu wrote byte %zu",
                  rpa_dtype_name(sdt), n, b);
          st = rpa_convert(src, sdt, dst, ddt, n);
          CHECK(st == RPA_OK, "convert %s->%s n=%zu: %d", rpa_dtype_name(sdt),
                rpa_dtype_name(ddt), n, (int)st);
          for (size_t i = 0; i < n; i++) {
            const uint32_t sb = elem_bits(src, sdt, i);
            const uint32_t got = elem_bits(dst, ddt, i);
            const uint32_t want = encode_any(ddt, decode_any(sdt, sb));
            CHECK(same_elem(ddt, got, want),
                  "convert %s->%s [%zu] src %#x: %#x, want %#x",
                  rpa_dtype_name(sdt), rpa_dtype_name(ddt), i, (unsigned)sb,
                  (unsigned)got, (unsigned)want);
          }
          for (size_t b = n * ds; b < NMAX * 4 + GUARD; b++)
            CHECK(dst[b] == 0x5a, "convert %s->%s n=%zu wrote byte %zu",
                  rpa_dtype_name(sdt), rpa_dtype_name(ddt), n, b);
        }
      }
    }
  }
  free(vals);
  free(src);
  free(dst);
}

/* 6b. The chain f32 -> bf16 -> f16 on a small array, spelled out. */
static void convert_chain_f32_bf16_f16(void) {
  const float in[6] = {1.0f, -2.5f, 3.14159265f, 1e-3f, 70000.0f, -0.0f};
  uint16_t b[6], h[6];
  CHECK(rpa_convert(in, RPA_F32, b, RPA_BF16, 6) == RPA_OK, "f32->bf16");
  CHECK(rpa_convert(b, RPA_BF16, h, RPA_F16, 6) == RPA_OK, "bf16->f16");
  for (int i = 0; i < 6; i++) {
    CHECK(b[i] == rpa_f32_to_bf16(in[i]), "bf16[%d] %#x", i, (unsigned)b[i]);
    CHECK(h[i] == rpa_f32_to_f16(rpa_bf16_to_f32(b[i])), "f16[%d] %#x", i,
          (unsigned)h[i]);
  }
  CHECK(b[0] == 0x3f80 && h[0] == 0x3c00, "1.0: %#x %#x", (unsigned)b[0],
        (unsigned)h[0]);
  CHECK(b[1] == 0xc020 && h[1] == 0xc100, "-2.5: %#x %#x", (unsigned)b[1],
        (unsigned)h[1]);
  CHECK(b[2] == 0x4049 && h[2] == 0x4248, "pi: %#x %#x", (unsigned)b[2],
        (unsigned)h[2]);
  /* 70000 fits bf16 (70144) but not f16 */
  CHECK(b[4] == 0x4789 && h[4] == 0x7c00, "70000: %#x %#x", (unsigned)b[4],
        (unsigned)h[4]);
  CHECK(b[5] == 0x8000 && h[5] == 0x8000, "-0: %#x %#x", (unsigned)b[5],
        (unsigned)h[5]);
}

/* 6c. rpa_convert argument checks: an invalid dtype on either side is
   RPA_INVALID_DTYPE; n == 0 is OK (NULL pointers allowed, nothing
   written); NULL src or dst with n > 0 is RPA_NULL_POINTER. */
static void convert_arguments(void) {
  const rpa_dtype bad[] = {(rpa_dtype)RPA_DTYPE_COUNT, (rpa_dtype)99,
                           (rpa_dtype)-1};
  float a[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  float b[4] = {9.0f, 9.0f, 9.0f, 9.0f};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    for (int d = 0; d < RPA_DTYPE_COUNT; d++) {
      rpa_status st = rpa_convert(a, bad[k], b, (rpa_dtype)d, 1);
      CHECK(st == RPA_INVALID_DTYPE, "bad src dtype %d -> %d: %d",
            (int)bad[k], d, (int)st);
      st = rpa_convert(a, (rpa_dtype)d, b, bad[k], 1);
      CHECK(st == RPA_INVALID_DTYPE, "%d -> bad dst dtype %d: %d", d,
            (int)bad[k], (int)st);
    }
  }
  CHECK(b[0] == 9.0f, "invalid dtype wrote output");
  for (int s = 0; s < RPA_DTYPE_COUNT; s++) {
    for (int d = 0; d < RPA_DTYPE_COUNT; d++) {
      rpa_status st = rpa_convert(a, (rpa_dtype)s, b, (rpa_dtype)d, 0);
      CHECK(st == RPA_OK, "n=0 %d->%d: %d", s, d, (int)st);
      st = rpa_convert(NULL, (rpa_dtype)s, NULL, (rpa_dtype)d, 0);
      CHECK(st == RPA_OK, "n=0 NULL %d->%d: %d", s, d, (int)st);
      st = rpa_convert(NULL, (rpa_dtype)s, b, (rpa_dtype)d, 1);
      CHECK(st == RPA_NULL_POINTER, "NULL src %d->%d: %d", s, d, (int)st);
      st = rpa_convert(a, (rpa_dtype)s, NULL, (rpa_dtype)d, 1);
      CHECK(st == RPA_NULL_POINTER, "NULL dst %d->%d: %d", s, d, (int)st);
      st = rpa_convert(NULL, (rpa_dtype)s, NULL, (rpa_dtype)d, 3);
      CHECK(st == RPA_NULL_POINTER, "NULL both %d->%d: %d", s, d, (int)st);
    }
  }
  CHECK(b[0] == 9.0f && b[1] == 9.0f && b[2] == 9.0f && b[3] == 9.0f,
        "n=0 or NULL call wrote output");
}

/* 6d. rpa_dtype_size and rpa_dtype_name for every dtype, and an invalid
   one (size 0, a name that is none of the valid ones). */
static void dtype_size_and_name(void) {
  static const size_t sizes[RPA_DTYPE_COUNT] = {4, 2, 2, 1, 1};
  static const char *const names[RPA_DTYPE_COUNT] = {
      "f32", "bf16", "f16", "fp8_e4m3", "fp8_e5m2"};
  const rpa_dtype bad[] = {(rpa_dtype)RPA_DTYPE_COUNT, (rpa_dtype)99,
                           (rpa_dtype)-1};
  for (int d = 0; d < RPA_DTYPE_COUNT; d++) {
    const char *nm = rpa_dtype_name((rpa_dtype)d);
    CHECK(rpa_dtype_size((rpa_dtype)d) == sizes[d], "size(%d) = %zu", d,
          rpa_dtype_size((rpa_dtype)d));
    CHECK(nm && strcmp(nm, names[d]) == 0, "name(%d) = %s", d,
          nm ? nm : "(null)");
  }
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    const char *nm = rpa_dtype_name(bad[k]);
    CHECK(rpa_dtype_size(bad[k]) == 0, "size(bad %d) = %zu", (int)bad[k],
          rpa_dtype_size(bad[k]));
    CHECK(nm != NULL, "name(bad %d) is NULL", (int)bad[k]);
    for (int d = 0; nm && d < RPA_DTYPE_COUNT; d++)
      CHECK(strcmp(nm, names[d]) != 0, "name(bad %d) = %s", (int)bad[k], nm);
  }
}

int main(void) {
  TEST_CASE("model_self_check", model_self_check());
  TEST_CASE("decode_all_patterns", decode_all_patterns());
  TEST_CASE("round_trip_and_nan", round_trip_and_nan());
  TEST_CASE("round_nearest_even_midpoints", round_nearest_even_midpoints());
  TEST_CASE("overflow", overflow());
  TEST_CASE("underflow", underflow());
  TEST_CASE("random_encode_vs_model", random_encode_vs_model());
  TEST_CASE("convert_all_pairs", convert_all_pairs());
  TEST_CASE("convert_chain_f32_bf16_f16", convert_chain_f32_bf16_f16());
  TEST_CASE("convert_arguments", convert_arguments());
  TEST_CASE("dtype_size_and_name", dtype_size_and_name());

  return th_finish("test_dtype");
}
