/* Coverage-guided fuzzing of the whole attention call (libFuzzer, with
   AddressSanitizer and UndefinedBehaviorSanitizer), and the same property
   check for the regression runner tests/test_fuzz_corpus.c.

   One input is a few dozen bytes that describe a complete call: shapes,
   ragged lengths, page tables, every cache layout with its strides, dtypes,
   every option, the v3 entry point, and now and then one rule broken on
   purpose. The harness allocates every buffer exactly as large as the
   arguments say (the last element's offset + 1, times the element size)
   with 64 guard bytes on each side: any access past a footprint is the
   library's (under ASan the guards are poisoned, so reads are caught too;
   without it the guards catch writes). Every gap inside a footprint (padded
   lanes and rows, unused slots and pages, padding tokens, stale slots of the
   new tokens) holds NaN bytes, so a kernel that reads one shows it.

   The property, for every input:
     - an error status (the same from the kernel set under test, from the
       reference and from rpa_validate), a message, and every buffer byte
       for byte as before; or
     - RPA_OK, and then: inputs unchanged; the cache equal, byte for byte, to
       the cache before with exactly the new tokens' K/V rows copied in (in
       both runs); out and lse equal to the reference's within tolerance,
       NaN where and only where the reference has NaN (the contract's quiet
       NaN), and every other byte of them untouched; no NaN at all unless a
       NaN or an infinity was planted.
   A violation prints what failed and aborts (libFuzzer then reports a crash
   and saves the input).

   Input layout (bytes past the end read as 0). Header, 32 bytes:
     0,1  seed of the buffer contents (bit 0 of byte 0 also: a latent
          cache's v.data NULL)
     2    bits 0-1 == 3: the v3 entry point
     3    >= 0x80: break rule (byte & 0x7f) % BRK_COUNT, with byte 4 its
          parameter
     5    num_seqs % 9
     6    Hkv = 1 + b % 8          7  G = 1 + b % 8 (Hkv * G capped at 8)
     8    head_dim (table or 1..160)
     9    head_dim_v: < 0xa0 same as D (odd: passed as 0); else table/1..160
     10   q dtype % 3     11 out dtype % 3     12 cache dtype % 5
     13   layout % 6 (combined, vllm, nhd, hnd, separate, latent)
     14   padding: bits 0-1 lanes, 2-3 rows/gap, 4-6 page, 7 separate order
     15   page_size (table or 1..64)
     16   bits 0-2 extra pages, 3-4 extra pages_per_seq, 5 shuffle pages,
          6 share read-only prefix pages, 7 NULL metadata when empty
     17   stride modes, 2 bits each: q, out, k, v (packed, padded,
          head-major, broadcast)
     18   padding tokens % 5
     19   sm_scale   20 k_scale (bits 0-2), v_scale (bits 3-5)
     21   q_scale (>= 0xa0 on)  22 soft_cap (>= 0xa0 on)
     23   bits 0-1 causal (0,1 on, 2 off, 3 on as 7); bits 2-7 window
     24   bit 0 update off, 1 update as -1, 2 sinks, 3 lse, 4-5 lse strides,
          6 distribution hint, 7 hint stops one sequence short
     25   sinks: bit 0 some heads -inf
     26   >= 0xc0: 1 + (b & 7) planted special values
     27   value range % 4
     28   bit 0 v3 opts NULL when default, 1 v3 k_scale 1 as 0, 2 v_scale 1
          as 0, 3 KV-share: k/v NULL, 4 KV-share: junk k/v descriptors,
          5 KV-share: random page table, 6 KV-share: V aliases K,
          7 no stale NaN in the new tokens' slots
     29   kernel set under test (index into the available ones)
     30   bit 0 tree masks on the multi-token sequences (not v3), 1 every
          other one left causal, 2 a token sees a later one, 3 the last
          token does not see itself, 4 mask_bits one short
     31   bit 0 shared-prefix groups (not v3): group 0's prefix is the
          pages byte 16 bit 6 shares, 1 not page aligned, 2 a few tokens
          too long; group 1's prefix a part of it; 3 sequences alternate
          between the groups and none
   Then num_seqs records of 3 bytes: q_len (< 0x60: 1; < 0xf0: 1..24; else
   1..64), prefix length (low byte; high byte < 0x80: % 48, < 0xe0: 0..511,
   else 1024..3071); the tokens are capped at 64 and an input whose work
   (q_len * kv_len * Hq * (D + Dv)) or memory is over the caps is skipped.
   Then the planted values, 4 bytes each: target (q, k,
   v, cache), kind (NaN, +inf, -inf, 64), position seed (2 bytes).
   tests/fuzz/make_seeds.py writes seeds in this layout. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpa.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FZ_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(FZ_ASAN)
#define FZ_ASAN 1
#endif
#ifdef FZ_ASAN
#include <sanitizer/asan_interface.h>
#define FZ_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define FZ_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define FZ_POISON(p, n) ((void)(p), (void)(n))
#define FZ_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The harness's own loops (filling buffers, comparing them) carry no
   coverage instrumentation in the libFuzzer build: the feedback comes from
   the library and from the harness's decisions, and per-byte comparison
   hooks would cost most of the time. */
#if defined(RPA_FUZZ_LIBFUZZER) && defined(__clang__)
#define FZ_NO_COV __attribute__((no_sanitize("coverage")))
#else
#define FZ_NO_COV
#endif

enum {
  FZ_HEADER = 32,
  FZ_MAX_SEQS = 8,
  FZ_MAX_TOKENS = 64,
  FZ_MAX_SPECIALS = 8,
  FZ_GUARD = 64,
  FZ_MAX_CTX = 8,
};
#define FZ_GUARD_BYTE 0xA5
#define FZ_OUT_BYTE 0x5C
#define FZ_WORK_CAP (1LL << 18)  /* q_len * kv_len * Hq * (D + Dv) */
#define FZ_BYTES_CAP (4LL << 20) /* all buffers together */

enum { L_COMBINED, L_VLLM, L_NHD, L_HND, L_SEPARATE, L_LATENT, L_COUNT };
static const char *const layout_names[L_COUNT] = {
    "combined", "vllm", "nhd", "hnd", "separate", "latent"};

enum {
  B_Q,
  B_K,
  B_V,
  B_OUT,
  B_LSE,
  B_CACHE,
  B_CACHE_V,
  B_CU,
  B_KVL,
  B_PAGES,
  B_SINKS,
  B_DIST,
  B_MASK,
  B_MASK_OFF,
  B_SH_LEN,
  B_SH_GROUP,
  B_COUNT
};
static const char *const buf_names[B_COUNT] = {
    "q",       "k",         "v",       "out",          "lse",   "cache",
    "cache_v", "cu_q_lens", "kv_lens", "page_indices", "sinks", "distribution",
    "mask",    "mask_offsets", "shared_len", "shared_group"};

/* Rules broken on purpose (header byte 3). */
enum {
  BRK_HEADS,
  BRK_TOKENS,
  BRK_HEAD_DIM,
  BRK_HEAD_DIM_V,
  BRK_Q_DTYPE,
  BRK_OUT_DTYPE,
  BRK_CACHE_DTYPE,
  BRK_K_DTYPE,
  BRK_V_DTYPE,
  BRK_NUM_SEQS,
  BRK_PAGE_SIZE,
  BRK_NUM_PAGES,
  BRK_PPS,
  BRK_NULL,
  BRK_SM_SCALE,
  BRK_K_SCALE,
  BRK_V_SCALE,
  BRK_Q_SCALE,
  BRK_SOFT_CAP,
  BRK_WINDOW,
  BRK_SINKS,
  BRK_DIST_RANGE,
  BRK_DIST_CONTRA,
  BRK_CU0,
  BRK_QLEN0,
  BRK_CU_PAST_T,
  BRK_KV_SHORT,
  BRK_PPS_SMALL,
  BRK_PAGE_RANGE,
  BRK_PAGE_SHARE,
  BRK_NEG_STRIDE,
  BRK_SELF_OVERLAP,
  BRK_KV_SAME_BASE,
  BRK_ALIAS,
  BRK_OVERFLOW,
  BRK_V3_NULL_CACHE,
  BRK_HUGE_DIMS,
  BRK_COUNT
};
static const char *const brk_names[BRK_COUNT] = {
    "heads",         "tokens",     "head_dim",    "head_dim_v",
    "q_dtype",       "out_dtype",  "cache_dtype", "k_dtype",
    "v_dtype",       "num_seqs",   "page_size",   "num_pages",
    "pages_per_seq", "null",       "sm_scale",    "k_scale",
    "v_scale",       "q_scale",    "soft_cap",    "window",
    "sinks",         "dist_range", "dist_contra", "cu0",
    "qlen0",         "cu_past_t",  "kv_short",    "pps_small",
    "page_range",    "page_share", "neg_stride",  "self_overlap",
    "kv_same_base",  "alias",      "overflow",    "v3_null_cache",
    "huge_dims"};

typedef struct fz_buf {
  unsigned char *mem;    /* guard | data | guard */
  size_t bytes;          /* data bytes: the footprint */
  unsigned char *before; /* the whole of mem before the call */
  unsigned char *fast;   /* the whole of mem after the call under test */
} fz_buf;

typedef struct fz_case {
  uint8_t h[FZ_HEADER];
  uint64_t rng;
  int v3, brk, brk_param;
  int32_t S, S_run; /* num_seqs, sequences computed (S') */
  int32_t q_len[FZ_MAX_SEQS], kv_len[FZ_MAX_SEQS], cu[FZ_MAX_SEQS + 1];
  int32_t Hq, Hkv, D, Dv, T, total_q, ps, P, pps;
  rpa_dtype qd, od, cd;
  int layout, update, valias;
  int n_specials, nonfinite_planted;
  int q_overflow; /* an infinite q clipped by q_scale: q.k may overflow */
  const uint8_t *specials;
  float qmax, kmax, vmax;
  int must_fail, nan_ok;
  int v3_null_cache, v3_opts_null, v3_k0, v3_v0, no_validate_cmp;
  fz_buf b[B_COUNT];
  rpa_args a;
} fz_case;

/* ---- small helpers ------------------------------------------------------ */

static uint64_t fz_rand(uint64_t *s) { /* splitmix64 */
  uint64_t x = (*s += 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static int32_t fz_below(uint64_t *s, int32_t n) { /* [0, n), n >= 1 */
  return (int32_t)(fz_rand(s) % (uint64_t)n);
}

static size_t esize(rpa_dtype d) { return rpa_dtype_size(d); }

FZ_NO_COV static void put(void *base, rpa_dtype d, int64_t i, float x) {
  switch (d) {
    case RPA_F32:
      ((float *)base)[i] = x;
      break;
    case RPA_BF16:
      ((uint16_t *)base)[i] = rpa_f32_to_bf16(x);
      break;
    case RPA_F16:
      ((uint16_t *)base)[i] = rpa_f32_to_f16(x);
      break;
    case RPA_FP8_E4M3:
      ((uint8_t *)base)[i] = rpa_f32_to_fp8_e4m3(x);
      break;
    case RPA_FP8_E5M2:
      ((uint8_t *)base)[i] = rpa_f32_to_fp8_e5m2(x);
      break;
  }
}

FZ_NO_COV static float get(const void *base, rpa_dtype d, int64_t i) {
  switch (d) {
    case RPA_F32:
      return ((const float *)base)[i];
    case RPA_BF16:
      return rpa_bf16_to_f32(((const uint16_t *)base)[i]);
    case RPA_F16:
      return rpa_f16_to_f32(((const uint16_t *)base)[i]);
    case RPA_FP8_E4M3:
      return rpa_fp8_e4m3_to_f32(((const uint8_t *)base)[i]);
    case RPA_FP8_E5M2:
      return rpa_fp8_e5m2_to_f32(((const uint8_t *)base)[i]);
  }
  return NAN;
}

/* A small value of the case's range, stored in dtype d; returns |stored|. */
FZ_NO_COV static float put_value(fz_case *z, void *base, rpa_dtype d,
                                 int64_t i) {
  static const float ranges[4] = {1.0f, 0.5f, 0.25f, 1.0f / 64};
  const float r = ranges[z->h[27] % 4];
  const float x = (float)(fz_below(&z->rng, 257) - 128) / 64.0f * r;
  put(base, d, i, x);
  return fabsf(get(base, d, i));
}

/* Bytes a tensor spans: (the last element's offset + 1) * element size, 0
   when a dimension is empty. Strides >= 0. */
FZ_NO_COV static int64_t span_of(const int64_t *dims, const int64_t *strides,
                                 int n, size_t es) {
  int64_t last = 0;
  for (int i = 0; i < n; i++)
    if (dims[i] <= 0) return 0;
  for (int i = 0; i < n; i++) last += (dims[i] - 1) * strides[i];
  return (last + 1) * (int64_t)es;
}

static int64_t span3(int64_t t, int64_t h, int64_t e, int64_t ts, int64_t hs,
                     size_t es) {
  const int64_t dims[3] = {t, h, e}, strides[3] = {ts, hs, 1};
  return span_of(dims, strides, 3, es);
}

static int64_t span_cache(const fz_case *z, int64_t page, int64_t slot,
                          int64_t head, int64_t e) {
  const int64_t dims[4] = {z->P, z->ps, z->Hkv, e};
  const int64_t strides[4] = {page, slot, head, 1};
  return span_of(dims, strides, 4, esize(z->cd));
}

static unsigned char *data_of(fz_case *z, int b) {
  return z->b[b].mem + FZ_GUARD;
}

static int buf_alloc(fz_case *z, int b, int64_t bytes, int fill) {
  fz_buf *x = &z->b[b];
  x->bytes = (size_t)bytes;
  const size_t whole = x->bytes + 2 * FZ_GUARD;
  x->mem = malloc(whole);
  x->before = malloc(whole);
  x->fast = malloc(whole);
  if (!x->mem || !x->before || !x->fast) return -1;
  memset(x->mem, FZ_GUARD_BYTE, whole);
  memset(x->mem + FZ_GUARD, fill, x->bytes);
  return 0;
}

static void bufs_free(fz_case *z) {
  for (int b = 0; b < B_COUNT; b++) {
    fz_buf *x = &z->b[b];
    if (x->mem) FZ_UNPOISON(x->mem, x->bytes + 2 * FZ_GUARD);
    free(x->mem);
    free(x->before);
    free(x->fast);
    x->mem = x->before = x->fast = NULL;
  }
}

/* Guards: poisoned for ASan while the library runs. */
static void guards_poison(fz_case *z, int on) {
  for (int b = 0; b < B_COUNT; b++) {
    fz_buf *x = &z->b[b];
    if (on) {
      FZ_POISON(x->mem, FZ_GUARD);
      FZ_POISON(x->mem + FZ_GUARD + x->bytes, FZ_GUARD);
    } else {
      FZ_UNPOISON(x->mem, x->bytes + 2 * FZ_GUARD);
    }
  }
}

/* Which buffer holds [p, p + len), and where. */
static int locate(const fz_case *z, const void *p, size_t len, int *buf,
                  size_t *off) {
  const uintptr_t a = (uintptr_t)p;
  for (int b = 0; b < B_COUNT; b++) {
    const uintptr_t d = (uintptr_t)(z->b[b].mem + FZ_GUARD);
    if (a >= d && a + len <= d + z->b[b].bytes) {
      *buf = b;
      *off = (size_t)(a - d);
      return 1;
    }
  }
  return 0;
}

/* ---- the kernel sets ------------------------------------------------------
 */

static rpa_context *g_ref;
static rpa_context *g_fast[FZ_MAX_CTX];
static char g_fast_name[FZ_MAX_CTX][48];
static int g_nfast = -1;

static int add_fast(const char *isa, const char *label) {
  rpa_context_options o = rpa_context_options_default();
  o.isa = isa;
  o.num_threads = 2; /* the pool and the split merge, on any machine */
  o.pin_threads = 0;
  o.log = 0;
  rpa_context *c = NULL;
  rpa_status st = rpa_context_create(&o, &c);
  if (st != RPA_OK) {
    fprintf(stderr, "fuzz_attention: context %s: %s\n", label,
            rpa_status_string(st));
    return -1;
  }
  if (g_nfast < FZ_MAX_CTX) {
    g_fast[g_nfast] = c;
    snprintf(g_fast_name[g_nfast], sizeof g_fast_name[0], "%s", label);
    g_nfast++;
  } else {
    rpa_context_destroy(c);
  }
  return 0;
}

/* The reference, and the kernel sets under test: the one RPA_ISA names
   when it is set, else every set this CPU runs, avx512 on both bf16
   prefill paths unless RPA_BF16_DOT is set. */
static int fz_init(void) {
  if (g_nfast >= 0) return g_nfast > 0 ? 0 : -1;
  g_nfast = 0;
  rpa_context_options o = rpa_context_options_default();
  o.isa = "ref";
  o.log = 0;
  if (rpa_context_create(&o, &g_ref) != RPA_OK) {
    fprintf(stderr, "fuzz_attention: no reference context\n");
    return -1;
  }
  const char *env = getenv("RPA_ISA");
  if (env && env[0]) {
    char label[48];
    snprintf(label, sizeof label, "%s (RPA_ISA)", env);
    return add_fast(NULL, label);
  }
  const char *dot = getenv("RPA_BF16_DOT");
  int rc = 0;
  for (int i = 1; rpa_isa_name(i); i++) {
    const char *isa = rpa_isa_name(i);
    if (!rpa_isa_available(isa)) continue;
    if (strcmp(isa, "avx512") == 0 && !(dot && dot[0])) {
      setenv("RPA_BF16_DOT", "0", 1);
      rc |= add_fast(isa, "avx512 (RPA_BF16_DOT=0)");
      setenv("RPA_BF16_DOT", "1", 1);
      rc |= add_fast(isa, "avx512 (RPA_BF16_DOT=1)");
      unsetenv("RPA_BF16_DOT");
    } else {
      rc |= add_fast(isa, isa);
    }
  }
  return rc == 0 && g_nfast > 0 ? 0 : -1;
}

#ifndef RPA_FUZZ_LIBFUZZER
/* Destroys the contexts (the regression runner, before it exits). */
static void fz_shutdown(void) {
  for (int i = 0; i < g_nfast; i++) rpa_context_destroy(g_fast[i]);
  rpa_context_destroy(g_ref);
  g_ref = NULL;
  g_nfast = -1;
}
#endif

/* ---- decoding an input into a call ----------------------------------------
 */

static const int32_t dim_table[26] = {1,  2,  3,  4,   5,   7,   8,   12, 15,
                                      16, 17, 24, 31,  32,  33,  48,  63, 64,
                                      65, 80, 96, 100, 127, 128, 129, 160};
static const int32_t ps_table[16] = {1,  2,  3,  4,  5, 7,  8,  11,
                                     16, 32, 64, 13, 6, 24, 48, 64};
static const int32_t window_table[24] = {1,  2,  3,  4,  5,  7,  8,  15,
                                         16, 17, 31, 32, 33, 63, 64, 100,
                                         1,  2,  3,  4,  8,  16, 32, 64};

static int32_t pick_dim(uint8_t b) {
  return b < 208 ? dim_table[b % 26] : 1 + b % 160;
}

/* Strides of a [T, H, E] tensor in one of four modes; broadcast (a zero
   stride) only for a tensor that is read. */
static void token_strides(fz_case *z, int mode, int written, int64_t T,
                          int64_t H, int64_t E, int64_t *ts, int64_t *hs) {
  switch (mode) {
    case 0:
      *hs = E;
      *ts = H * E;
      break;
    case 1:
      *hs = E + 1 + fz_below(&z->rng, 4);
      *ts = H * *hs + fz_below(&z->rng, 6);
      break;
    case 2: /* head-major [H, T, E] */
      *ts = E + fz_below(&z->rng, 4);
      *hs = (T > 0 ? T : 1) * *ts + fz_below(&z->rng, 3);
      break;
    default:
      if (written) {
        *hs = E;
        *ts = H * E + 7;
      } else if (fz_rand(&z->rng) & 1) {
        *ts = 0; /* every token reads row 0 */
        *hs = E;
      } else {
        *ts = H * E;
        *hs = 0; /* every head reads head 0 */
      }
      break;
  }
}

typedef struct cache_shape {
  int64_t kp, ks, kh, vp, vs, vh; /* strides (elements) */
  int64_t v_off;                  /* V's base from K's (shared buffer) */
  int shared;                     /* V in the K buffer */
} cache_shape;

static void cache_strides(fz_case *z, cache_shape *c) {
  const int64_t Hkv = z->Hkv, ps = z->ps, P = z->P;
  const uint8_t pad = z->h[14];
  const int64_t padW = pad & 3, padR = (pad >> 2) & 3, padP = (pad >> 4) & 7;
  const int64_t W = (z->D > z->Dv ? z->D : z->Dv) + padW;
  memset(c, 0, sizeof *c);
  c->shared = 1;
  switch (z->layout) {
    case L_COMBINED: { /* [P, ps, 2*Hkv (+ pad rows), W] */
      const int64_t rows = 2 * Hkv + padR;
      c->kh = c->vh = 2 * W;
      c->ks = c->vs = rows * W;
      c->kp = c->vp = ps * rows * W + padP;
      c->v_off = W;
      break;
    }
    case L_VLLM: /* [2, P, ps, Hkv, W] */
      c->kh = c->vh = W;
      c->ks = c->vs = Hkv * W;
      c->kp = c->vp = ps * Hkv * W + padP;
      c->v_off = P * c->kp + padR;
      break;
    case L_NHD: /* [P, 2, ps, Hkv, W] */
      c->kh = c->vh = W;
      c->ks = c->vs = Hkv * W;
      c->kp = c->vp = 2 * ps * Hkv * W + padP;
      c->v_off = ps * Hkv * W;
      break;
    case L_HND: /* [P, 2, Hkv, ps, W] */
      c->ks = c->vs = W;
      c->kh = c->vh = ps * W;
      c->kp = c->vp = 2 * Hkv * ps * W + padP;
      c->v_off = Hkv * ps * W;
      break;
    case L_SEPARATE: { /* two buffers, each NHD or HND order, padded rows */
      const int64_t wk = z->D + padW, wv = z->Dv + padR;
      c->shared = 0;
      if (pad & 0x80) {
        c->ks = wk;
        c->kh = ps * wk;
      } else {
        c->kh = wk;
        c->ks = Hkv * wk;
      }
      c->kp = ps * Hkv * wk + padP;
      if (fz_rand(&z->rng) & 1) {
        c->vs = wv;
        c->vh = ps * wv;
      } else {
        c->vh = wv;
        c->vs = Hkv * wv;
      }
      c->vp = ps * Hkv * wv + fz_below(&z->rng, 5);
      break;
    }
    default: /* latent: one row per (slot, head), V = its first Dv */
      c->kh = z->D + padW;
      c->ks = Hkv * c->kh;
      c->kp = ps * c->ks + padP;
      c->shared = 0;
      break;
  }
}

/* Builds the call an input describes. Returns 1 when built, 0 for an input
   that is skipped (over the work cap), -1 when memory ran out. */
FZ_NO_COV static int fz_build(fz_case *z, const uint8_t *data, size_t size) {
  memset(z, 0, sizeof *z);
  for (size_t i = 0; i < FZ_HEADER; i++) z->h[i] = i < size ? data[i] : 0;
  const uint8_t *h = z->h;
  z->rng = 0x2545f4914f6cdd1dull * (1 + h[0] + 256u * h[1]);
  z->v3 = (h[2] & 3) == 3;
  z->brk = h[3] >= 0x80 ? (h[3] & 0x7f) % BRK_COUNT : -1;
  z->brk_param = h[4];

  /* shape */
  z->S = h[5] % 9;
  z->Hkv = 1 + h[6] % 8;
  int32_t G = 1 + h[7] % 8;
  while (z->Hkv * G > 8) G--;
  z->Hq = z->Hkv * G;
  z->D = pick_dim(h[8]);
  z->Dv = h[9] < 0xa0 ? z->D : pick_dim((uint8_t)(h[9] * 7));
  z->qd = (rpa_dtype)(h[10] % 3);
  z->od = (rpa_dtype)(h[11] % 3);
  z->cd = (rpa_dtype)(h[12] % 5);
  z->layout = h[13] % L_COUNT;
  if (z->layout == L_LATENT && z->Dv > z->D) z->Dv = 1 + (z->Dv - 1) % z->D;
  if (z->v3) {
    z->layout = L_COMBINED;
    z->h[14] = 0; /* no padding */
    z->Dv = z->D;
    z->od = z->qd;
    z->h[17] = 0; /* contiguous tensors */
  }
  z->ps = h[15] < 128 ? ps_table[h[15] % 16] : 1 + h[15] % 64;

  /* flags and parameters */
  const uint8_t fl = h[24];
  z->update = !(fl & 1);
  /* V aliasing K (values are the keys' heads) needs a read-only cache */
  z->valias = !z->update && !z->v3 && (h[28] & 0x40) && z->layout != L_LATENT &&
              z->Dv <= z->D;
  const int dist_on = (fl >> 6) & 1;

  /* the ragged batch: at most 64 tokens */
  int32_t cu = 0;
  for (int32_t i = 0; i < z->S; i++) {
    const size_t o = FZ_HEADER + 3 * (size_t)i;
    const uint8_t r0 = o < size ? data[o] : 0;
    const uint8_t r1 = o + 1 < size ? data[o + 1] : 0;
    const uint8_t r2 = o + 2 < size ? data[o + 2] : 0;
    int32_t q = r0 < 0x60 ? 1 : r0 < 0xf0 ? 1 + r0 % 24 : 1 + r0 % 64;
    int32_t prefix = r2 < 0x80   ? r1 % 48
                     : r2 < 0xe0 ? r1 + 256 * (r2 & 1)
                                 : 1024 + (r1 + 256 * (r2 & 7));
    if (cu + q > FZ_MAX_TOKENS) q = FZ_MAX_TOKENS - cu;
    if (q < 1) {
      z->S = i;
      break;
    }
    z->q_len[i] = q;
    z->kv_len[i] = prefix + q;
    z->cu[i] = cu;
    cu += q;
  }
  z->cu[z->S] = cu;
  z->S_run = dist_on && (fl & 0x80) && z->S > 0 ? z->S - 1 : z->S;
  z->total_q = z->cu[z->S_run];
  z->T = cu + h[18] % 5;
  const size_t spec_at = FZ_HEADER + 3 * (size_t)(h[5] % 9);
  z->n_specials = h[26] >= 0xc0 ? 1 + (h[26] & 7) : 0;
  z->specials = spec_at < size ? data + spec_at : NULL;
  if (spec_at + 4 * (size_t)z->n_specials > size)
    z->n_specials = spec_at < size ? (int)((size - spec_at) / 4) : 0;

  int64_t work = 0;
  for (int32_t i = 0; i < z->S_run; i++)
    work += (int64_t)z->q_len[i] * z->kv_len[i] * z->Hq * (z->D + z->Dv);
  if (work > FZ_WORK_CAP) return 0;

  /* pages: each sequence's own, in pool order or shuffled */
  int32_t need[FZ_MAX_SEQS] = {0}, max_need = 0, sum_need = 0;
  for (int32_t i = 0; i < z->S_run; i++) {
    need[i] = (z->kv_len[i] + z->ps - 1) / z->ps;
    if (need[i] > max_need) max_need = need[i];
    sum_need += need[i];
  }
  z->pps = max_need + ((h[16] >> 3) & 3);
  z->P = sum_need + (h[16] & 7);

  cache_shape cs;
  cache_strides(z, &cs);
  const size_t ces = esize(z->cd);
  const int64_t k_span = span_cache(z, cs.kp, cs.ks, cs.kh, z->D);
  int64_t v_span = 0, cache_bytes = k_span, cache_v_bytes = 0;
  if (z->layout != L_LATENT) {
    v_span = span_cache(z, cs.vp, cs.vs, cs.vh, z->Dv);
    if (cs.shared) {
      const int64_t v_end = v_span ? cs.v_off * (int64_t)ces + v_span : 0;
      if (v_end > cache_bytes) cache_bytes = v_end;
    } else {
      cache_v_bytes = v_span;
    }
  }

  /* token tensors */
  const uint8_t sm = h[17];
  int64_t q_ts, q_hs, o_ts, o_hs, k_ts, k_hs, v_ts, v_hs;
  token_strides(z, sm & 3, 0, z->T, z->Hq, z->D, &q_ts, &q_hs);
  token_strides(z, (sm >> 2) & 3, 1, z->T, z->Hq, z->Dv, &o_ts, &o_hs);
  token_strides(z, (sm >> 4) & 3, 0, z->T, z->Hkv, z->D, &k_ts, &k_hs);
  token_strides(z, (sm >> 6) & 3, 0, z->T, z->Hkv, z->Dv, &v_ts, &v_hs);
  const int lse_on = !z->v3 && ((fl >> 3) & 1);
  int64_t l_ts = z->Hq, l_hs = 1;
  const int64_t Tn = z->T > 0 ? z->T : 1;
  switch ((fl >> 4) & 3) {
    case 1:
      l_ts = 1, l_hs = Tn;
      break;
    case 2:
      l_ts = z->Hq + 3, l_hs = 1;
      break;
    case 3:
      l_ts = 2, l_hs = 2 * Tn;
      break;
    default:
      break;
  }
  const int64_t dims_lse[2] = {z->T, z->Hq}, str_lse[2] = {l_ts, l_hs};
  /* byte 30: tree masks; byte 31: shared-prefix groups (not on v3) */
  const int trees = (h[30] & 1) && !z->v3, groups = (h[31] & 1) && !z->v3;
  int64_t mask_bits = 0;
  for (int32_t i = 0; trees && i < z->S_run; i++)
    if (z->q_len[i] > 1) mask_bits += (int64_t)z->q_len[i] * z->q_len[i];
  const int64_t sizes[B_COUNT] = {
      [B_Q] = span3(z->T, z->Hq, z->D, q_ts, q_hs, esize(z->qd)),
      [B_K] = span3(z->T, z->Hkv, z->D, k_ts, k_hs, ces),
      [B_V] = z->layout == L_LATENT
                  ? 0
                  : span3(z->T, z->Hkv, z->Dv, v_ts, v_hs, ces),
      [B_OUT] = span3(z->T, z->Hq, z->Dv, o_ts, o_hs, esize(z->od)),
      [B_LSE] = lse_on ? span_of(dims_lse, str_lse, 2, sizeof(float)) : 0,
      [B_CACHE] = cache_bytes,
      [B_CACHE_V] = cache_v_bytes,
      [B_CU] = 4 * ((int64_t)z->S + 1),
      [B_KVL] = 4 * (int64_t)z->S,
      [B_PAGES] = 4 * (int64_t)z->S * z->pps,
      [B_SINKS] = 4 * (int64_t)z->Hq,
      [B_DIST] = 12,
      [B_MASK] = trees ? (mask_bits + 7) / 8 : 0,
      [B_MASK_OFF] = trees ? 8 * (int64_t)z->S : 0,
      [B_SH_LEN] = groups ? 8 : 0,
      [B_SH_GROUP] = groups ? 4 * (int64_t)z->S : 0,
  };
  int64_t total = 0;
  for (int b = 0; b < B_COUNT; b++) total += sizes[b];
  if (total > FZ_BYTES_CAP) return 0;
  for (int b = 0; b < B_COUNT; b++)
    if (buf_alloc(z, b, sizes[b],
                  b == B_OUT || b == B_LSE ? FZ_OUT_BYTE : 0xFF))
      return -1;

  /* metadata */
  int32_t *cu_q = (int32_t *)data_of(z, B_CU);
  int32_t *kvl = (int32_t *)data_of(z, B_KVL);
  int32_t *pages = (int32_t *)data_of(z, B_PAGES);
  for (int32_t i = 0; i <= z->S; i++) cu_q[i] = z->cu[i];
  for (int32_t i = 0; i < z->S; i++) kvl[i] = z->kv_len[i];
  int32_t *pool = malloc(sizeof(int32_t) * ((size_t)z->P + 1));
  if (!pool) return -1;
  for (int32_t p = 0; p < z->P; p++) pool[p] = p;
  if (h[16] & 0x20)
    for (int32_t p = z->P - 1; p > 0; p--) {
      const int32_t j = fz_below(&z->rng, p + 1), t = pool[p];
      pool[p] = pool[j];
      pool[j] = t;
    }
  static const int32_t junk[4] = {-7, INT32_MAX, INT32_MIN, 1 << 30};
  int32_t next = 0;
  for (int32_t i = 0; i < z->S; i++)
    for (int32_t lp = 0; lp < z->pps; lp++)
      pages[(int64_t)i * z->pps + lp] = i < z->S_run && lp < need[i]
                                            ? pool[next++]
                                            : junk[fz_below(&z->rng, 4)];
  free(pool);
  if (!z->update && (h[28] & 0x20) && z->P > 0) { /* any sharing, read-only */
    for (int32_t i = 0; i < z->S_run; i++)
      for (int32_t lp = 0; lp < need[i]; lp++)
        pages[(int64_t)i * z->pps + lp] = fz_below(&z->rng, z->P);
  } else if (h[16] & 0x40) { /* share read-only full prefix pages */
    for (int32_t i = 1; i < z->S_run; i++) {
      const int32_t ro0 = (z->kv_len[0] - z->q_len[0]) / z->ps;
      const int32_t roi = (z->kv_len[i] - z->q_len[i]) / z->ps;
      for (int32_t lp = 0; lp < ro0 && lp < roi; lp++)
        pages[(int64_t)i * z->pps + lp] = pages[lp];
    }
  }
  /* sequences past the hint's mixed_end: never read, so junk */
  for (int32_t i = z->S_run; i < z->S; i++) {
    kvl[i] = junk[fz_below(&z->rng, 4)];
    cu_q[i + 1] = junk[fz_below(&z->rng, 4)];
  }
  int32_t *dist = (int32_t *)data_of(z, B_DIST);
  {
    int32_t d0 = 0, d1;
    while (d0 < z->S_run && z->q_len[d0] == 1) d0++;
    d1 = d0;
    while (d1 < z->S_run && z->q_len[d1] == z->q_len[d0]) d1++;
    d1 = d0 + fz_below(&z->rng, d1 - d0 + 1);
    dist[0] = d0;
    dist[1] = d1;
    dist[2] = z->S_run;
  }
  float *sinks = (float *)data_of(z, B_SINKS);
  for (int32_t n = 0; n < z->Hq; n++)
    sinks[n] = (h[25] & 1) && fz_below(&z->rng, 3) == 0
                   ? -INFINITY
                   : (float)(fz_below(&z->rng, 97) - 48) / 16.0f;

  /* contents: q and the new K/V of the computed tokens; the rest is NaN */
  unsigned char *qb = data_of(z, B_Q), *kb = data_of(z, B_K),
                *vb = data_of(z, B_V);
  for (int32_t t = 0; t < z->total_q; t++) {
    for (int32_t n = 0; n < z->Hq; n++)
      for (int32_t d = 0; d < z->D; d++) {
        const float m = put_value(z, qb, z->qd, t * q_ts + n * q_hs + d);
        if (m > z->qmax) z->qmax = m;
      }
    for (int32_t hh = 0; hh < z->Hkv; hh++) {
      for (int32_t d = 0; d < z->D; d++) {
        const float m = put_value(z, kb, z->cd, t * k_ts + hh * k_hs + d);
        if (m > z->kmax) z->kmax = m;
      }
      if (z->layout != L_LATENT)
        for (int32_t d = 0; d < z->Dv; d++) {
          const float m = put_value(z, vb, z->cd, t * v_ts + hh * v_hs + d);
          if (m > z->vmax) z->vmax = m;
        }
    }
  }
  /* the cache: every position a computed sequence sees holds a value;
     with the update on, its new tokens' slots hold stale NaN */
  unsigned char *ck = data_of(z, B_CACHE);
  unsigned char *cv = z->layout == L_LATENT ? NULL
                      : cs.shared           ? ck + cs.v_off * (int64_t)ces
                                            : data_of(z, B_CACHE_V);
  if (z->valias) {
    cv = ck;
    cs.vp = cs.kp, cs.vs = cs.ks, cs.vh = cs.kh;
  }
  for (int32_t i = 0; i < z->S_run; i++)
    for (int32_t c = 0; c < z->kv_len[i]; c++) {
      const int64_t page = pages[(int64_t)i * z->pps + c / z->ps];
      const int64_t slot = c % z->ps;
      for (int32_t hh = 0; hh < z->Hkv; hh++) {
        const int64_t ko = page * cs.kp + slot * cs.ks + hh * cs.kh;
        for (int32_t d = 0; d < z->D; d++) {
          const float m = put_value(z, ck, z->cd, ko + d);
          if (m > z->kmax) z->kmax = m;
        }
        if (cv && !z->valias) {
          const int64_t vo = page * cs.vp + slot * cs.vs + hh * cs.vh;
          for (int32_t d = 0; d < z->Dv; d++) {
            const float m = put_value(z, cv, z->cd, vo + d);
            if (m > z->vmax) z->vmax = m;
          }
        }
      }
    }
  if (z->update && !(h[28] & 0x80))
    for (int32_t i = 0; i < z->S_run; i++)
      for (int32_t c = z->kv_len[i] - z->q_len[i]; c < z->kv_len[i]; c++) {
        const int64_t page = pages[(int64_t)i * z->pps + c / z->ps];
        const int64_t slot = c % z->ps;
        for (int32_t hh = 0; hh < z->Hkv; hh++) {
          memset(ck + (page * cs.kp + slot * cs.ks + hh * cs.kh) * ces, 0xFF,
                 (size_t)z->D * ces);
          if (cv)
            memset(cv + (page * cs.vp + slot * cs.vs + hh * cs.vh) * ces, 0xFF,
                   (size_t)z->Dv * ces);
        }
      }
  if (!cv || z->valias) z->vmax = z->kmax;

  /* the arguments */
  static const float sm_table[12] = {0, 1,        0.5f, 0.125f, 0,    -0.75f,
                                     2, 0.03125f, 0,    0,      1.5f, 0.3f};
  static const float kv_scale_table[8] = {1, 1, 0.5f, 2, 0.25f, 3, 1, 0.75f};
  static const float q_scale_table[8] = {0.5f,   1,      0.01f, 4,
                                         0.001f, 0.125f, 2,     0.03f};
  static const float cap_table[6] = {0.5f, 1, 5, 20, 30, 50};
  rpa_args *a = &z->a;
  *a = rpa_args_default();
  a->num_tokens = z->T;
  a->num_q_heads = z->Hq;
  a->num_kv_heads = z->Hkv;
  a->head_dim = z->D;
  a->head_dim_v = z->Dv == z->D && (h[9] & 1) ? 0 : z->Dv;
  a->q = (rpa_tensor){qb, z->qd, q_ts, q_hs};
  a->out = (rpa_tensor){data_of(z, B_OUT), z->od, o_ts, o_hs};
  a->k = (rpa_tensor){kb, z->cd, k_ts, k_hs};
  a->v = (rpa_tensor){z->layout == L_LATENT && (h[0] & 1) ? NULL : vb, z->cd,
                      v_ts, v_hs};
  if (!z->update && (h[28] & 0x08)) {
    a->k.data = NULL;
    a->v.data = NULL;
  } else if (!z->update && !z->v3 && (h[28] & 0x10)) {
    /* KV-share mode: k and v are neither read nor checked */
    a->k.dtype = (rpa_dtype)77;
    a->k.token_stride = -3;
    a->v.dtype = (rpa_dtype)(z->cd ^ 1);
    a->v.head_stride = -1;
  }
  if (lse_on) {
    a->lse = (float *)data_of(z, B_LSE);
    a->lse_token_stride = l_ts;
    a->lse_head_stride = l_hs;
  }
  a->cache.k = ck;
  a->cache.v = cv;
  a->cache.dtype = z->cd;
  a->cache.num_pages = z->P;
  a->cache.page_size = z->ps;
  a->cache.k_page_stride = cs.kp;
  a->cache.k_slot_stride = cs.ks;
  a->cache.k_head_stride = cs.kh;
  a->cache.v_page_stride = cs.vp;
  a->cache.v_slot_stride = cs.vs;
  a->cache.v_head_stride = cs.vh;
  a->num_seqs = z->S;
  const int empty_null = z->S == 0 && (h[16] & 0x80);
  a->cu_q_lens = empty_null ? NULL : cu_q;
  a->kv_lens = empty_null ? NULL : kvl;
  a->page_indices =
      empty_null || (z->S * z->pps == 0 && (h[16] & 0x80)) ? NULL : pages;
  a->pages_per_seq = z->pps;
  a->distribution = dist_on ? dist : NULL;
  const float smv = sm_table[h[19] % 12];
  a->sm_scale = smv != 0 || h[19] % 12 == 4 ? smv : 1.0f / sqrtf((float)z->D);
  a->k_scale = kv_scale_table[h[20] & 7];
  a->v_scale = kv_scale_table[(h[20] >> 3) & 7];
  a->q_scale = h[21] >= 0xa0 ? q_scale_table[h[21] % 8] : 0.0f;
  a->soft_cap = h[22] >= 0xa0 ? cap_table[h[22] % 6] : 0.0f;
  const int causal_mode = h[23] & 3;
  a->causal = causal_mode == 2 ? 0 : causal_mode == 3 ? 7 : 1;
  const int w = h[23] >> 2;
  a->sliding_window = w >= 40 && a->causal ? window_table[w - 40] : 0;
  a->sinks = (fl & 4) ? sinks : NULL;
  a->update_kv_cache = z->update ? ((fl & 2) ? -1 : 1) : 0;
  if (z->v3) {
    z->v3_k0 = a->k_scale == 1.0f && (h[28] & 2);
    z->v3_v0 = a->v_scale == 1.0f && (h[28] & 4);
    z->v3_opts_null = (h[28] & 1) && a->sm_scale == 1.0f &&
                      a->sliding_window == 0 && a->soft_cap == 0.0f &&
                      a->q_scale == 0.0f && a->k_scale == 1.0f &&
                      a->v_scale == 1.0f && a->causal == 1 &&
                      a->update_kv_cache == 1 && !a->sinks;
  }
  if (trees) { /* random draft trees; bits 1-4 vary and break them */
    uint8_t *m = data_of(z, B_MASK);
    int64_t *off = (int64_t *)data_of(z, B_MASK_OFF);
    memset(m, 0, (size_t)sizes[B_MASK]);
    int64_t bit = 0, last = -1;
    for (int32_t i = 0; i < z->S; i++) off[i] = -1;
    for (int32_t i = 0; i < z->S_run; i++) {
      const int32_t ql = z->q_len[i];
      if (ql < 2) continue;
      if (!((h[30] & 2) && i % 2)) {
        off[i] = bit;
        last = i;
        int32_t parent[64];
        for (int32_t j = 0; j < ql; j++) {
          parent[j] = j == 0 || fz_below(&z->rng, 4) == 0 ? -1 : fz_below(&z->rng, j);
          for (int32_t k = j; k >= 0; k = parent[k]) {
            const int64_t x = bit + (int64_t)j * ql + k;
            m[x / 8] |= (uint8_t)(1u << (x % 8));
          }
        }
      }
      bit += (int64_t)ql * ql;
    }
    if (last >= 0 && (h[30] & 4)) { /* a token sees a later one */
      const int64_t x = off[last] + 1;
      m[x / 8] |= (uint8_t)(1u << (x % 8));
    }
    if (last >= 0 && (h[30] & 8)) { /* the last token does not see itself */
      const int64_t ql = z->q_len[last], x = off[last] + ql * ql - 1;
      m[x / 8] &= (uint8_t)~(1u << (x % 8));
    }
    a->mask = m;
    a->mask_offsets = off;
    a->mask_bits = mask_bits - ((h[30] & 16) ? 1 : 0);
  }
  if (groups) { /* the prefix pages sequence 0 shares with the others */
    int32_t *len = (int32_t *)data_of(z, B_SH_LEN);
    int32_t *grp = (int32_t *)data_of(z, B_SH_GROUP);
    int32_t minp = INT32_MAX;
    const int32_t ro0 = z->S_run > 0 ? (z->kv_len[0] - z->q_len[0]) / z->ps : 0;
    for (int32_t i = 0; i < z->S_run; i++) {
      const int32_t roi = (z->kv_len[i] - z->q_len[i]) / z->ps;
      const int32_t sh = roi < ro0 ? roi : ro0;
      minp = sh < minp ? sh : minp;
    }
    int32_t L = (h[16] & 0x40) && minp != INT32_MAX ? minp * z->ps : 0;
    if ((h[31] & 2) && L > 0) L -= fz_below(&z->rng, z->ps);
    if (h[31] & 4) L += 1 + fz_below(&z->rng, 4); /* likely too long */
    len[0] = L;
    len[1] = L > 0 ? fz_below(&z->rng, L + 1) : 0;
    for (int32_t i = 0; i < z->S; i++)
      grp[i] = i >= z->S_run ? 7 /* never read */
               : (h[31] & 8) ? (i % 3 == 2 ? -1 : i % 2) : 0;
    a->num_shared = 2;
    a->shared_len = len;
    a->shared_group = grp;
  }
  return 1;
}

/* ---- planted NaN / infinity / large values ---------------------------------
 */

static void plant_specials(fz_case *z) {
  const rpa_args *a = &z->a;
  if (z->total_q == 0 || z->S_run == 0) return;
  for (int s = 0; s < z->n_specials; s++) {
    const uint8_t *r = z->specials + 4 * s;
    const int target = r[0] % 4, kind = r[1] % 4;
    uint64_t pr = 0x51ed270b27u + r[2] + 256u * r[3];
    const float val = kind == 0   ? NAN
                      : kind == 1 ? INFINITY
                      : kind == 2 ? -INFINITY
                                  : 64.0f;
    const int64_t t = fz_below(&pr, z->total_q);
    const int64_t hh = fz_below(&pr, z->Hkv);
    const int latent = a->cache.v == NULL;
    if (target == 0) {
      const int64_t n = fz_below(&pr, z->Hq), d = fz_below(&pr, z->D);
      put(a->q.data, z->qd, t * a->q.token_stride + n * a->q.head_stride + d,
          val);
      if (kind == 3 && val > z->qmax) z->qmax = val;
      if ((kind == 1 || kind == 2) && a->q_scale > 0.0f) z->q_overflow = 1;
    } else if (target == 1 || (target == 2 && latent)) {
      if (!z->update) continue; /* k is not read */
      const int64_t d = fz_below(&pr, z->D);
      put(a->k.data, z->cd, t * a->k.token_stride + hh * a->k.head_stride + d,
          val);
      if (kind == 3 && val > z->kmax) z->kmax = val;
      if (kind == 3 && latent && val > z->vmax) z->vmax = val;
    } else if (target == 2) {
      if (!z->update) continue;
      const int64_t d = fz_below(&pr, z->Dv);
      put(a->v.data, z->cd, t * a->v.token_stride + hh * a->v.head_stride + d,
          val);
      if (kind == 3 && val > z->vmax) z->vmax = val;
    } else {
      const int32_t *pages = a->page_indices;
      const int32_t i = fz_below(&pr, z->S_run);
      const int64_t c = fz_below(&pr, z->kv_len[i]);
      const int64_t page = pages[(int64_t)i * z->pps + c / z->ps];
      const int64_t slot = c % z->ps;
      const int use_v = !latent && (fz_rand(&pr) & 1);
      const rpa_kv_cache *k = &a->cache;
      const int64_t d = fz_below(&pr, use_v ? z->Dv : z->D);
      if (use_v)
        put(k->v, z->cd,
            page * k->v_page_stride + slot * k->v_slot_stride +
                hh * k->v_head_stride + d,
            val);
      else
        put(k->k, z->cd,
            page * k->k_page_stride + slot * k->k_slot_stride +
                hh * k->k_head_stride + d,
            val);
      if (kind == 3 && val > z->kmax) z->kmax = val;
      if (kind == 3 && val > z->vmax) z->vmax = val;
    }
    if (kind < 3) z->nonfinite_planted++;
  }
}

/* ---- one rule broken on purpose ---------------------------------------------
 */

static void apply_break(fz_case *z) {
  rpa_args *a = &z->a;
  const int p = z->brk_param;
  const int latent = a->cache.v == NULL, upd = a->update_kv_cache != 0;
  const int32_t S_run = z->S_run, T = z->T, P = z->P;
  int32_t *cu = (int32_t *)data_of(z, B_CU);
  int32_t *kvl = (int32_t *)data_of(z, B_KVL);
  int32_t *pages = (int32_t *)data_of(z, B_PAGES);
  int32_t *dist = (int32_t *)data_of(z, B_DIST);
  float *sinks = (float *)data_of(z, B_SINKS);
  if (z->brk < 0) return;
  if (z->v3) {
    switch (z->brk) { /* not expressible through the v3 arguments */
      case BRK_HEAD_DIM_V:
      case BRK_OUT_DTYPE:
      case BRK_K_DTYPE:
      case BRK_V_DTYPE:
      case BRK_NEG_STRIDE:
      case BRK_SELF_OVERLAP:
      case BRK_KV_SAME_BASE:
      case BRK_OVERFLOW:
        z->brk = -1;
        return;
      default:
        break;
    }
    z->v3_opts_null = 0;
  } else if (z->brk == BRK_V3_NULL_CACHE) {
    z->brk = -1;
    return;
  }
  static const rpa_dtype bad_io[4] = {RPA_FP8_E4M3, RPA_FP8_E5M2, (rpa_dtype)5,
                                      (rpa_dtype)200};
  static const rpa_dtype bad_any[4] = {(rpa_dtype)5, (rpa_dtype)9,
                                       (rpa_dtype)255, (rpa_dtype)1000};
  int32_t max_need = 0;
  for (int32_t i = 0; i < S_run; i++) {
    const int32_t n = (z->kv_len[i] + z->ps - 1) / z->ps;
    if (n > max_need) max_need = n;
  }
  switch (z->brk) {
    case BRK_HEADS:
      if (p % 3 == 0)
        a->num_kv_heads = 0;
      else if (p % 3 == 1)
        a->num_q_heads = a->num_kv_heads > 1 ? a->num_q_heads + 1 : -1;
      else
        a->num_kv_heads = a->num_q_heads + 1;
      z->must_fail = 1;
      break;
    case BRK_TOKENS:
      a->num_tokens = -1 - p % 3;
      z->must_fail = 1;
      break;
    case BRK_HEAD_DIM: {
      static const int32_t bad[4] = {0, -1, 4097, INT32_MIN};
      a->head_dim = bad[p % 4];
      z->must_fail = 1;
      break;
    }
    case BRK_HEAD_DIM_V: {
      static const int32_t bad[3] = {-1, 4097, INT32_MIN};
      a->head_dim_v = latent && (p & 1) ? z->D + 1 + p % 3 : bad[p % 3];
      z->must_fail = 1;
      break;
    }
    case BRK_Q_DTYPE:
      a->q.dtype = bad_io[p % 4];
      z->must_fail = 1;
      break;
    case BRK_OUT_DTYPE:
      a->out.dtype = bad_io[p % 4];
      z->must_fail = 1;
      break;
    case BRK_CACHE_DTYPE:
      a->cache.dtype = bad_any[p % 4];
      z->must_fail = 1;
      break;
    case BRK_K_DTYPE:
      a->k.dtype = p & 0x80
                       ? bad_any[p % 4]
                       : (rpa_dtype)((z->cd + 1 + p % 4) % RPA_DTYPE_COUNT);
      z->must_fail = upd;
      break;
    case BRK_V_DTYPE:
      a->v.dtype = p & 0x80
                       ? bad_any[p % 4]
                       : (rpa_dtype)((z->cd + 1 + p % 4) % RPA_DTYPE_COUNT);
      z->must_fail = upd && !latent;
      break;
    case BRK_NUM_SEQS:
      a->num_seqs = -1 - p % 4;
      z->must_fail = 1;
      break;
    case BRK_PAGE_SIZE:
      a->cache.page_size = p & 1 ? 0 : -1 - p % 7;
      z->must_fail = 1;
      break;
    case BRK_NUM_PAGES:
      a->cache.num_pages = -1 - p % 5;
      z->must_fail = 1;
      break;
    case BRK_PPS:
      a->pages_per_seq = -1 - p % 5;
      z->must_fail = 1;
      break;
    case BRK_NULL:
      switch (p % 8) {
        case 0:
          a->q.data = NULL;
          z->must_fail = 1;
          break;
        case 1:
          a->out.data = NULL;
          z->must_fail = 1;
          break;
        case 2:
          if (z->v3)
            z->v3_null_cache = 1;
          else
            a->cache.k = NULL;
          z->must_fail = 1;
          break;
        case 3:
          a->k.data = NULL;
          z->must_fail = upd;
          break;
        case 4:
          a->v.data = NULL;
          z->must_fail = upd && !latent;
          break;
        case 5:
          a->cu_q_lens = NULL;
          z->must_fail = z->S > 0;
          break;
        case 6:
          a->kv_lens = NULL;
          z->must_fail = z->S > 0;
          break;
        default:
          a->page_indices = NULL;
          z->must_fail = (int64_t)z->S * z->pps > 0;
          break;
      }
      break;
    case BRK_SM_SCALE: {
      static const float bad[3] = {NAN, INFINITY, -INFINITY};
      a->sm_scale = bad[p % 3];
      z->must_fail = 1;
      break;
    }
    case BRK_K_SCALE:
    case BRK_V_SCALE: {
      /* 0 is None (1) in the v3 options, an error in rpa_args */
      static const float bad[5] = {-1.0f, NAN, INFINITY, -INFINITY, 0.0f};
      const float x = bad[p % (z->v3 ? 4 : 5)];
      if (z->brk == BRK_K_SCALE)
        a->k_scale = x, z->v3_k0 = 0;
      else
        a->v_scale = x, z->v3_v0 = 0;
      z->must_fail = 1;
      break;
    }
    case BRK_Q_SCALE: {
      static const float bad[4] = {-1.0f, NAN, INFINITY, -0.5f};
      a->q_scale = bad[p % 4];
      z->must_fail = 1;
      break;
    }
    case BRK_SOFT_CAP: {
      static const float bad[3] = {-1.0f, NAN, INFINITY};
      a->soft_cap = bad[p % 3];
      z->must_fail = 1;
      break;
    }
    case BRK_WINDOW:
      if (p & 1) {
        a->sliding_window = -1 - p % 5;
      } else {
        a->causal = 0;
        a->sliding_window = 1 + p % 8;
      }
      z->must_fail = 1;
      break;
    case BRK_SINKS:
      a->sinks = sinks;
      sinks[p % z->Hq] = p & 0x80 ? NAN : INFINITY;
      z->must_fail = 1;
      break;
    case BRK_DIST_RANGE:
      a->distribution = dist;
      switch (p % 4) {
        case 0:
          dist[0] = -1 - p % 3;
          break;
        case 1:
          dist[0] = dist[1] + 1;
          break;
        case 2:
          dist[1] = dist[2] + 1;
          break;
        default:
          dist[2] = z->S + 1 + p % 3;
          break;
      }
      z->must_fail = 1;
      break;
    case BRK_DIST_CONTRA:
      a->distribution = dist;
      for (int32_t i = 0; i < S_run; i++)
        if (z->q_len[i] > 1) { /* a prefill inside the decode range */
          dist[0] = dist[1] = dist[2] = S_run;
          z->must_fail = 1;
          break;
        }
      break;
    case BRK_CU0:
      if (S_run > 0) {
        cu[0] = 1 + p % 3;
        z->must_fail = 1;
      }
      break;
    case BRK_QLEN0:
      if (S_run > 0) {
        const int32_t i = p % S_run;
        cu[i + 1] = cu[i];
        z->must_fail = 1;
      }
      break;
    case BRK_CU_PAST_T:
      if (S_run > 0) {
        cu[S_run] = T + 1 + p % 3;
        z->must_fail = 1;
      }
      break;
    case BRK_KV_SHORT:
      if (S_run > 0) {
        const int32_t i = p % S_run;
        kvl[i] = z->q_len[i] - 1 - (p >> 4) % 3;
        z->must_fail = 1;
      }
      break;
    case BRK_PPS_SMALL:
      if (S_run > 0 && max_need >= 1) {
        a->pages_per_seq = max_need - 1;
        z->must_fail = 1;
      }
      break;
    case BRK_PAGE_RANGE:
      if (S_run > 0) {
        const int32_t i = p % S_run;
        const int32_t n = (z->kv_len[i] + z->ps - 1) / z->ps;
        const int32_t lp = (p >> 3) % n;
        pages[(int64_t)i * z->pps + lp] = p & 1 ? -1 - p % 3 : P + p % 3;
        z->must_fail = 1;
      }
      break;
    case BRK_PAGE_SHARE:
      if (S_run > 0) {
        /* another used entry takes sequence i's last page, which i writes */
        const int32_t i = p % S_run, lw = (z->kv_len[i] - 1) / z->ps;
        int32_t count = 0;
        for (int32_t j = 0; j < S_run; j++)
          count += (z->kv_len[j] + z->ps - 1) / z->ps - (j == i);
        if (count == 0) break;
        int32_t pick = (p >> 3) % count;
        for (int32_t j = 0; j < S_run; j++)
          for (int32_t lp = 0; lp < (z->kv_len[j] + z->ps - 1) / z->ps; lp++) {
            if (j == i && lp == lw) continue;
            if (pick-- == 0)
              pages[(int64_t)j * z->pps + lp] = pages[(int64_t)i * z->pps + lw];
          }
        z->must_fail = upd;
        z->nan_ok = 1; /* read-only, the entry now sees i's unused slots */
      }
      break;
    case BRK_NEG_STRIDE: {
      const int64_t x = -1 - (p >> 3) % 4;
      switch (p % 8) {
        case 0:
          a->q.token_stride = x;
          z->must_fail = 1;
          break;
        case 1:
          a->q.head_stride = x;
          z->must_fail = 1;
          break;
        case 2:
          a->out.head_stride = x;
          z->must_fail = 1;
          break;
        case 3:
          a->k.token_stride = x;
          z->must_fail = upd;
          break;
        case 4:
          a->v.head_stride = x;
          z->must_fail = upd && !latent;
          break;
        case 5:
          a->cache.k_slot_stride = x;
          z->must_fail = 1;
          break;
        case 6:
          a->cache.v_page_stride = x;
          z->must_fail = !latent;
          break;
        default:
          if (a->lse)
            a->lse_head_stride = x;
          else
            a->out.token_stride = x;
          z->must_fail = 1;
          break;
      }
      break;
    }
    case BRK_SELF_OVERLAP:
      if (p % 3 == 0 && z->Hq > 1 && T >= 1) {
        a->out.head_stride = z->Dv - 1;
        z->must_fail = 1;
      } else if (p % 3 == 1 && a->lse && z->Hq > 1 && T >= 1) {
        a->lse_head_stride = 0;
        z->must_fail = 1;
      } else if (p % 3 == 2 && upd && P >= 1 && z->ps > 1) {
        a->cache.k_slot_stride = 0;
        z->must_fail = 1;
      }
      break;
    case BRK_KV_SAME_BASE:
      if (upd && !latent && P >= 1) {
        a->cache.v = a->cache.k;
        z->must_fail = 1;
      }
      break;
    case BRK_ALIAS:
      if (T < 1) break;
      if (p % 4 == 0) {
        a->q.data = a->out.data;
        z->must_fail = 1;
      } else if (p % 4 == 1 && !z->v3) {
        a->lse = (float *)a->out.data;
        a->lse_token_stride = z->Hq;
        a->lse_head_stride = 1;
        z->must_fail = 1;
      } else if (p % 4 == 2 && upd && P >= 1) {
        a->k.data = a->cache.k;
        z->must_fail = 1;
      } else if (p % 4 == 3 && P >= 1) {
        a->out.data = a->cache.k;
        z->must_fail = 1;
      }
      break;
    case BRK_OVERFLOW:
      /* a stride whose footprint cannot be indexed; harmless (and valid)
         where its dimension is 1 or the tensor is empty */
      switch (p % 5) {
        case 0:
          a->q.token_stride = INT64_MAX;
          z->must_fail = T >= 2;
          break;
        case 1:
          a->cache.k_page_stride = INT64_MAX;
          z->must_fail = P >= 2;
          break;
        case 2:
          if (a->lse) {
            a->lse_head_stride = INT64_MAX;
            z->must_fail = T >= 1 && z->Hq >= 2;
          }
          break;
        case 3:
          a->out.head_stride = INT64_MAX;
          z->must_fail = T >= 1 && z->Hq >= 2;
          break;
        default:
          a->cache.k_slot_stride = INT64_MAX;
          z->must_fail = P >= 1 && z->ps >= 2;
          break;
      }
      break;
    case BRK_HUGE_DIMS:
      /* valid sizes far beyond memory, on a call whose tensors are all
         empty: nothing may be computed from them that overflows */
      a->num_tokens = 0;
      a->num_seqs = 0;
      a->cache.num_pages = 0;
      a->sinks = NULL;
      a->distribution = NULL;
      a->num_q_heads = a->num_kv_heads = 1 << (20 + p % 11);
      a->head_dim = 4096;
      a->head_dim_v = 0;
      a->cache.page_size = p & 0x80 ? INT32_MAX : 1 << (16 + (p >> 3) % 15);
      z->no_validate_cmp = z->v3; /* v3 computes its own strides */
      break;
    case BRK_V3_NULL_CACHE:
      z->v3_null_cache = 1;
      z->must_fail = 1;
      break;
    default:
      break;
  }
}

/* ---- running the call and checking the property
 * ------------------------------ */

static rpa_status fz_call(const fz_case *z, rpa_context *ctx) {
  const rpa_args *a = &z->a;
  if (!z->v3) return rpa_attention(ctx, a);
  rpa_v3_options o = rpa_v3_options_default();
  o.sm_scale = a->sm_scale;
  o.sliding_window = a->sliding_window;
  o.soft_cap = a->soft_cap;
  o.q_scale = a->q_scale;
  o.k_scale = z->v3_k0 ? 0.0f : a->k_scale;
  o.v_scale = z->v3_v0 ? 0.0f : a->v_scale;
  o.use_causal_mask = a->causal;
  o.update_kv_cache = a->update_kv_cache;
  o.attention_sink = a->sinks;
  return rpa_ragged_paged_attention_v3(
      ctx, a->q.data, a->k.data, a->v.data,
      z->v3_null_cache ? NULL : a->cache.k, a->kv_lens, a->page_indices,
      a->cu_q_lens, a->distribution, a->num_tokens, a->num_q_heads,
      a->num_kv_heads, a->head_dim, a->cache.num_pages, a->cache.page_size,
      a->num_seqs, a->pages_per_seq, a->q.dtype, a->cache.dtype,
      z->v3_opts_null ? NULL : &o, a->out.data);
}

static void fz_describe(const fz_case *z, const char *isa) {
  const rpa_args *a = &z->a;
  fprintf(stderr,
          "  case: %s entry, kernel set %s, break %s (must fail %d)\n"
          "  T %d, S %d (computed %d, %d tokens), Hq %d, Hkv %d, D %d, "
          "Dv %d (field %d)\n"
          "  q %s, out %s, cache %s, layout %s%s, page_size %d, pages %d, "
          "pages_per_seq %d\n"
          "  strides q (%lld, %lld) out (%lld, %lld) k (%lld, %lld) "
          "v (%lld, %lld) lse %s (%lld, %lld)\n"
          "  cache k (%lld, %lld, %lld) v (%lld, %lld, %lld) v-k %lld bytes\n"
          "  sm %g k %g v %g q %g cap %g causal %d window %d sinks %d "
          "update %d hint %s; planted %d (non-finite %d)\n",
          z->v3 ? "v3" : "rpa_attention", isa,
          z->brk >= 0 ? brk_names[z->brk] : "none", z->must_fail,
          (int)a->num_tokens, (int)a->num_seqs, (int)z->S_run, (int)z->total_q,
          (int)a->num_q_heads, (int)a->num_kv_heads, (int)a->head_dim,
          (int)z->Dv, (int)a->head_dim_v, rpa_dtype_name(z->qd),
          rpa_dtype_name(z->od), rpa_dtype_name(z->cd), layout_names[z->layout],
          z->valias ? " (V aliases K)" : "", (int)z->ps, (int)z->P, (int)z->pps,
          (long long)a->q.token_stride, (long long)a->q.head_stride,
          (long long)a->out.token_stride, (long long)a->out.head_stride,
          (long long)a->k.token_stride, (long long)a->k.head_stride,
          (long long)a->v.token_stride, (long long)a->v.head_stride,
          a->lse ? "on" : "off", (long long)a->lse_token_stride,
          (long long)a->lse_head_stride, (long long)a->cache.k_page_stride,
          (long long)a->cache.k_slot_stride, (long long)a->cache.k_head_stride,
          (long long)a->cache.v_page_stride, (long long)a->cache.v_slot_stride,
          (long long)a->cache.v_head_stride,
          a->cache.v
              ? (long long)((const char *)a->cache.v - (const char *)a->cache.k)
              : 0LL,
          (double)a->sm_scale, (double)a->k_scale, (double)a->v_scale,
          (double)a->q_scale, (double)a->soft_cap, (int)a->causal,
          (int)a->sliding_window, a->sinks != NULL, (int)a->update_kv_cache,
          a->distribution ? "on" : "off", z->n_specials, z->nonfinite_planted);
  for (int32_t i = 0; i < z->S && a->cu_q_lens && a->kv_lens; i++)
    fprintf(stderr, "  seq %d: q_len %d kv_len %d\n", (int)i,
            (int)(z->cu[i + 1] - z->cu[i]), (int)z->kv_len[i]);
}

static int violation(const fz_case *z, const char *isa, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int violation(const fz_case *z, const char *isa, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fuzz_attention: VIOLATION: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fz_describe(z, isa);
  return 1;
}

/* First differing byte of two whole buffers (guards included), or -1. */
FZ_NO_COV static long first_diff(const unsigned char *x, const unsigned char *y,
                                 size_t n) {
  if (memcmp(x, y, n) == 0) return -1;
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i]) return (long)i;
  return -1;
}

FZ_NO_COV static int is_quiet_nan(const unsigned char *p, rpa_dtype d) {
  uint32_t u32;
  uint16_t u16;
  switch (d) {
    case RPA_F32:
      memcpy(&u32, p, 4);
      return u32 == 0x7fc00000u;
    case RPA_BF16:
      memcpy(&u16, p, 2);
      return u16 == 0x7fc0u;
    case RPA_F16:
      memcpy(&u16, p, 2);
      return u16 == 0x7e00u;
    default:
      return 0;
  }
}

typedef struct tols {
  double base, weight, vmag, lse;
} tols;

/* How far the set under test may stray from the reference: output rounding
   (base), plus the logits' float32 summation order amplified by the softmax
   (weight, relative, times the size of the values), plus the bf16 softmax
   weights of vdpbf16ps. */
static tols tolerances(const fz_case *z) {
  const rpa_args *a = &z->a;
  tols t;
  const double qeff = z->qmax * (a->q_scale > 0.0f ? 1.125 : 1.0);
  const double L =
      fabs((double)a->sm_scale * a->k_scale) * z->D * qeff * z->kmax;
  double logit = L * 0x1p-24 * (4.0 * sqrt((double)z->D) + 8.0);
  if (a->soft_cap > 0.0f) logit += 1e-5 * a->soft_cap;
  const int bf16_dot =
      (z->cd == RPA_BF16 || z->cd == RPA_FP8_E4M3 || z->cd == RPA_FP8_E5M2) &&
      (z->qd == RPA_BF16 || a->q_scale > 0.0f);
  t.base = z->od == RPA_F32 ? 1e-3 : 2e-2;
  t.weight = 2.0 * logit + 2e-5 + (bf16_dot ? 4e-3 : 0.0);
  t.vmag = (double)a->v_scale * z->vmax;
  t.lse = 2.0 * logit + 1e-4 + (bf16_dot ? 4e-3 : 0.0);
  return t;
}

/* Compares the written elements of out (or lse) between the two runs and
   checks that every other byte, guards included, is untouched. */
FZ_NO_COV static int check_written(const fz_case *z, const char *isa, int b,
                                   rpa_dtype d, int64_t ts, int64_t hs,
                                   size_t base_off, int32_t rows, int32_t heads,
                                   int32_t width, const tols *t, int is_lse) {
  const fz_buf *x = &z->b[b];
  const size_t es = esize(d), whole = x->bytes + 2 * FZ_GUARD;
  const unsigned char *fa = x->fast + FZ_GUARD, *re = x->mem + FZ_GUARD;
  /* copies of both results with the written elements put back as before:
     they must equal the buffer before the call */
  unsigned char *cf = malloc(whole), *cr = malloc(whole);
  if (!cf || !cr) {
    free(cf);
    free(cr);
    return violation(z, isa, "harness: out of memory");
  }
  memcpy(cf, x->fast, whole);
  memcpy(cr, x->mem, whole);
  for (int32_t r = 0; r < rows; r++)
    for (int32_t n = 0; n < heads; n++)
      for (int32_t e = 0; e < width; e++) {
        const size_t off =
            FZ_GUARD + base_off + (size_t)((r * ts + n * hs + e) * (int64_t)es);
        memcpy(cf + off, x->before + off, es);
        memcpy(cr + off, x->before + off, es);
      }
  long at = first_diff(cf, x->before, whole);
  const int in_ref = at < 0;
  if (at < 0) at = first_diff(cr, x->before, whole);
  free(cf);
  free(cr);
  if (at >= 0)
    return violation(z, isa,
                     "%s: byte %ld (from the data start) outside the written "
                     "elements changed in the %s run: before 0x%02x, set "
                     "under test 0x%02x, reference 0x%02x",
                     buf_names[b], at - FZ_GUARD,
                     in_ref ? "reference" : "set under test", x->before[at],
                     x->fast[at], x->mem[at]);
  for (int32_t r = 0; r < rows; r++)
    for (int32_t n = 0; n < heads; n++) {
      int nan_f = 0, nan_r = 0, open_row = 0;
      for (int32_t e = 0; e < width; e++) {
        const size_t off =
            base_off + (size_t)((r * ts + n * hs + e) * (int64_t)es);
        const float vf = get(fa + off, d, 0), vr = get(re + off, d, 0);
        if (isnan(vf) != isnan(vr)) {
          /* The contract leaves a row open when its unscaled q.k
             overflows float32: the sets apply the logit scale at
             different points of the dot product. Only an infinite q
             clipped to the cache dtype's largest value by q_scale gets
             there here (planted finite values are small). */
          if (z->q_overflow) {
            open_row = 1;
            break;
          }
          return violation(z, isa,
                           "%s[%d, %d, %d]: NaN mismatch: set under test %g, "
                           "reference %g",
                           buf_names[b], (int)r, (int)n, (int)e, (double)vf,
                           (double)vr);
        }
        if (isnan(vf)) {
          if (!is_quiet_nan(fa + off, d) || !is_quiet_nan(re + off, d))
            return violation(z, isa,
                             "%s[%d, %d, %d]: NaN is not the contract's "
                             "quiet NaN with a clear sign",
                             buf_names[b], (int)r, (int)n, (int)e);
          if (!z->nonfinite_planted && !z->nan_ok)
            return violation(z, isa,
                             "%s[%d, %d, %d]: NaN, but no NaN or infinity "
                             "was planted in anything the row sees",
                             buf_names[b], (int)r, (int)n, (int)e);
          nan_f++;
          nan_r++;
          continue;
        }
        const double diff = fabs((double)vf - vr);
        const double tol = is_lse ? 1e-3 * (1.0 + fabs(vr)) + t->lse
                                  : t->base * (1.0 + fabs(vr) + t->vmag) +
                                        2.0 * t->weight * t->vmag;
        if (!(diff <= tol))
          return violation(z, isa,
                           "%s[%d, %d, %d]: set under test %.9g, reference "
                           "%.9g, difference %.3g > tolerance %.3g",
                           buf_names[b], (int)r, (int)n, (int)e, (double)vf,
                           (double)vr, diff, tol);
      }
      if (open_row) continue;
      if ((nan_f && nan_f != width) || (nan_r && nan_r != width))
        return violation(z, isa,
                         "%s row [%d, %d]: NaN in only some elements (%d and "
                         "%d of %d)",
                         buf_names[b], (int)r, (int)n, nan_f, nan_r,
                         (int)width);
    }
  return 0;
}

/* The property on one kernel set; returns 1 on a violation. The buffers
   are as built again afterwards. */
FZ_NO_COV static int fz_check(fz_case *z, rpa_context *fast, const char *isa) {
  const rpa_args *a = &z->a;
  for (int b = 0; b < B_COUNT; b++)
    memcpy(z->b[b].before, z->b[b].mem, z->b[b].bytes + 2 * FZ_GUARD);

  rpa_status stv = RPA_OK;
  const int validate = !z->v3_null_cache && !z->no_validate_cmp;
  if (validate) {
    guards_poison(z, 1);
    stv = rpa_validate(fast, a);
    guards_poison(z, 0);
    for (int b = 0; b < B_COUNT; b++) {
      const long at =
          first_diff(z->b[b].mem, z->b[b].before, z->b[b].bytes + 2 * FZ_GUARD);
      if (at >= 0)
        return violation(z, isa, "rpa_validate wrote %s (byte %ld)",
                         buf_names[b], at - FZ_GUARD);
    }
  }
  guards_poison(z, 1);
  const rpa_status stf = fz_call(z, fast);
  guards_poison(z, 0);
  const int msg_f = rpa_context_last_error(fast)[0] != '\0';
  for (int b = 0; b < B_COUNT; b++) {
    memcpy(z->b[b].fast, z->b[b].mem, z->b[b].bytes + 2 * FZ_GUARD);
    memcpy(z->b[b].mem, z->b[b].before, z->b[b].bytes + 2 * FZ_GUARD);
  }
  guards_poison(z, 1);
  const rpa_status str = fz_call(z, g_ref);
  guards_poison(z, 0);
  const int msg_r = rpa_context_last_error(g_ref)[0] != '\0';
  int bad = 0;
  if (getenv("RPA_FUZZ_VERBOSE"))
    fprintf(stderr, "  %s: %s %s\n", isa, rpa_status_string(stf),
            rpa_context_last_error(fast));

  if (stf != str) {
    bad = violation(z, isa, "status: set under test %s (%s), reference %s (%s)",
                    rpa_status_string(stf), rpa_context_last_error(fast),
                    rpa_status_string(str), rpa_context_last_error(g_ref));
    goto done;
  }
  if (validate && stv != stf) {
    bad = violation(z, isa, "rpa_validate says %s, the call %s (%s)",
                    rpa_status_string(stv), rpa_status_string(stf),
                    rpa_context_last_error(fast));
    goto done;
  }
  if (stf != RPA_OK) {
    if (!msg_f || !msg_r) {
      bad = violation(z, isa, "status %s without a message",
                      rpa_status_string(stf));
      goto done;
    }
    for (int b = 0; b < B_COUNT; b++) {
      const size_t n = z->b[b].bytes + 2 * FZ_GUARD;
      long at = first_diff(z->b[b].fast, z->b[b].before, n);
      if (at < 0) at = first_diff(z->b[b].mem, z->b[b].before, n);
      if (at >= 0) {
        bad = violation(z, isa, "status %s (%s) but %s changed (byte %ld)",
                        rpa_status_string(stf), rpa_context_last_error(fast),
                        buf_names[b], at - FZ_GUARD);
        goto done;
      }
    }
    goto done;
  }
  if (z->must_fail) {
    bad = violation(z, isa, "RPA_OK for a call that breaks rule '%s'",
                    brk_names[z->brk]);
    goto done;
  }
  if (msg_f || msg_r) {
    bad =
        violation(z, isa, "RPA_OK with an error message: '%s' / '%s'",
                  rpa_context_last_error(fast), rpa_context_last_error(g_ref));
    goto done;
  }
  /* inputs never change */
  for (int b = 0; b < B_COUNT; b++) {
    if (b == B_OUT || b == B_LSE || b == B_CACHE || b == B_CACHE_V) continue;
    const size_t n = z->b[b].bytes + 2 * FZ_GUARD;
    long at = first_diff(z->b[b].fast, z->b[b].before, n);
    if (at < 0) at = first_diff(z->b[b].mem, z->b[b].before, n);
    if (at >= 0) {
      bad = violation(z, isa, "input %s changed (byte %ld)", buf_names[b],
                      at - FZ_GUARD);
      goto done;
    }
  }

  const int32_t S_run = a->distribution ? a->distribution[2] : a->num_seqs;
  const int32_t total_q = S_run > 0 ? a->cu_q_lens[S_run] : 0;
  const int32_t Dv = a->head_dim_v ? a->head_dim_v : a->head_dim;

  /* the cache: before, plus exactly the new tokens' rows, bit for bit */
  {
    unsigned char *expect[2] = {NULL, NULL};
    const int cb[2] = {B_CACHE, B_CACHE_V};
    for (int c = 0; c < 2 && !bad; c++) {
      const size_t n = z->b[cb[c]].bytes + 2 * FZ_GUARD;
      expect[c] = malloc(n);
      if (!expect[c]) {
        bad = violation(z, isa, "harness: out of memory");
        break;
      }
      memcpy(expect[c], z->b[cb[c]].before, n);
    }
    const size_t es = esize(a->cache.dtype);
    const rpa_kv_cache *kc = &a->cache;
    for (int32_t i = 0; i < S_run && a->update_kv_cache && !bad; i++) {
      const int32_t q0 = a->cu_q_lens[i], ql = a->cu_q_lens[i + 1] - q0;
      for (int32_t j = 0; j < ql && !bad; j++) {
        const int64_t pos = (int64_t)a->kv_lens[i] - ql + j;
        const int64_t page = a->page_indices[(int64_t)i * a->pages_per_seq +
                                             pos / kc->page_size];
        const int64_t slot = pos % kc->page_size;
        for (int32_t hh = 0; hh < a->num_kv_heads && !bad; hh++) {
          for (int part = 0; part < 2; part++) {
            if (part == 1 && !kc->v) break;
            const char *base = part ? kc->v : kc->k;
            const int64_t off =
                part ? page * kc->v_page_stride + slot * kc->v_slot_stride +
                           hh * kc->v_head_stride
                     : page * kc->k_page_stride + slot * kc->k_slot_stride +
                           hh * kc->k_head_stride;
            const size_t len = (size_t)(part ? Dv : a->head_dim) * es;
            const rpa_tensor *src = part ? &a->v : &a->k;
            const char *from =
                (const char *)src->data +
                ((q0 + j) * src->token_stride + hh * src->head_stride) *
                    (int64_t)es;
            int where;
            size_t at;
            if (!locate(z, base + off * (int64_t)es, len, &where, &at) ||
                (where != B_CACHE && where != B_CACHE_V)) {
              bad =
                  violation(z, isa,
                            "harness: new token (seq %d, pos %lld, head "
                            "%d) has its %s row outside the cache",
                            (int)i, (long long)pos, (int)hh, part ? "V" : "K");
              break;
            }
            memcpy(expect[where == B_CACHE_V] + FZ_GUARD + at, from, len);
          }
        }
      }
    }
    for (int c = 0; c < 2 && !bad; c++) {
      const fz_buf *x = &z->b[cb[c]];
      const size_t n = x->bytes + 2 * FZ_GUARD;
      for (int run = 0; run < 2 && !bad; run++) {
        const unsigned char *got = run ? x->mem : x->fast;
        const long at = first_diff(got, expect[c], n);
        if (at >= 0)
          bad =
              violation(z, isa,
                        "%s after the %s: byte %ld is 0x%02x, expected "
                        "0x%02x (before 0x%02x)%s",
                        buf_names[cb[c]], run ? "reference" : "set under test",
                        at - FZ_GUARD, got[at], expect[c][at], x->before[at],
                        expect[c][at] == x->before[at]
                            ? ": a byte outside the new tokens' rows"
                            : ": a new token's row");
      }
    }
    free(expect[0]);
    free(expect[1]);
    if (bad) goto done;
  }

  /* out and lse: the written elements agree, nothing else changed */
  {
    const tols t = tolerances(z);
    for (int which = 0; which < 2 && !bad; which++) {
      const int b = which ? B_LSE : B_OUT;
      const void *ptr = which ? (const void *)a->lse : a->out.data;
      if (which && !a->lse) {
        /* lse off: its buffer must be untouched */
        const size_t n = z->b[b].bytes + 2 * FZ_GUARD;
        long at = first_diff(z->b[b].fast, z->b[b].before, n);
        if (at < 0) at = first_diff(z->b[b].mem, z->b[b].before, n);
        if (at >= 0)
          bad = violation(z, isa, "lse is off but its buffer changed");
        break;
      }
      const rpa_dtype d = which ? RPA_F32 : a->out.dtype;
      const size_t es = esize(d);
      const int64_t ts = which ? a->lse_token_stride : a->out.token_stride;
      const int64_t hs = which ? a->lse_head_stride : a->out.head_stride;
      const int32_t width = which ? 1 : Dv;
      int where = -1;
      size_t base_off = 0;
      if (total_q > 0 &&
          (!locate(z, ptr, es, &where, &base_off) || where != b)) {
        bad =
            violation(z, isa, "harness: %s is not in its buffer", buf_names[b]);
        break;
      }
      bad = check_written(z, isa, b, d, ts, hs, base_off, total_q,
                          a->num_q_heads, width, &t, which);
    }
  }

done:
  for (int b = 0; b < B_COUNT; b++)
    memcpy(z->b[b].mem, z->b[b].before, z->b[b].bytes + 2 * FZ_GUARD);
  return bad;
}

/* ---- entry points
 * -------------------------------------------------------------- */

/* Runs one input through the property: on the kernel set the input picks,
   or (all) on every one. Returns the number of violations. */
static int fz_run_input(const uint8_t *data, size_t size, int all) {
  if (fz_init() != 0) return 1;
  fz_case *z = calloc(1, sizeof *z);
  if (!z) return 0;
  int bad = 0;
  const int rc = fz_build(z, data, size);
  if (rc == 0 && getenv("RPA_FUZZ_VERBOSE"))
    fprintf(stderr, "  skipped: over the work or memory cap\n");
  if (rc > 0) {
    plant_specials(z);
    apply_break(z);
    const char *verbose = getenv("RPA_FUZZ_VERBOSE");
    if (verbose && verbose[0] == '1') fz_describe(z, all ? "all" : "one");
    if (all) {
      for (int i = 0; i < g_nfast; i++)
        bad += fz_check(z, g_fast[i], g_fast_name[i]);
    } else {
      const int i = z->h[29] % g_nfast;
      bad += fz_check(z, g_fast[i], g_fast_name[i]);
    }
  }
  bufs_free(z);
  free(z);
  return bad;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (fz_run_input(data, size, 0) != 0) abort();
  return 0;
}
