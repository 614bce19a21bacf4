/* The attention output of the active kernel set (RPA_ISA, default best)
   against the dense double-precision oracle, on random ragged batches and on
   hand-picked hard cases. Every case also checks the fused cache write
   (exactly the new slots change) and that nothing outside out's elements is
   written. Tolerances per output dtype: tb_tolerance() in batch.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "harness.h"

static rpa_context *ctx;

/* Runs one batch through the library and checks output, lse and cache. */
static void run_and_check(const tb_config *cfg, double extra_tol) {
  tb_batch b;
  char msg[512];
  if (tb_make(&b, cfg) != 0) {
    CHECK(0, "tb_make failed");
    tb_free(&b);
    return;
  }
  const int64_t rows = (int64_t)b.total_tokens * cfg->num_q_heads;
  const int32_t dv = cfg->head_dim_v ? cfg->head_dim_v : cfg->head_dim;
  double *out = malloc(sizeof(double) * (size_t)(rows * dv + 1));
  double *lse = malloc(sizeof(double) * (size_t)(rows + 1));
  tb_oracle(&b, out, lse);
  rpa_status st = rpa_attention(ctx, &b.args);
  CHECK(st == RPA_OK, "rpa_attention: %s: %s", rpa_status_string(st),
        rpa_context_last_error(ctx));
  if (st == RPA_OK) {
    const double tol = tb_tolerance(cfg) + extra_tol;
    CHECK(tb_check_output(&b, out, lse, tol, msg, sizeof msg) == 0, "%s", msg);
    CHECK(tb_check_cache(&b, msg, sizeof msg) == 0, "%s", msg);
  }
  free(out);
  free(lse);
  tb_free(&b);
}

/* Multiples of 16 and not: every kernel has a tail path for the last dims. */
static const int32_t head_dims[] = {64, 80, 128, 256, 8, 40, 72, 104, 24};
static const int32_t page_sizes[] = {1, 16, 128, 5, 7, 33};
static const rpa_dtype io_dtypes[] = {RPA_F32, RPA_BF16, RPA_F16};
static const rpa_dtype kv_dtypes[] = {RPA_F32, RPA_BF16, RPA_F16,
                                      RPA_FP8_E4M3, RPA_FP8_E5M2};
#define PICK(rng, arr) arr[tb_rand(rng) % (sizeof arr / sizeof arr[0])]

/* One random configuration. kind: 0 decode-only, 1 prefill-only, 2 mixed. */
static void random_case(uint64_t seed, int kind, int32_t *q_lens,
                        int32_t *kv_lens, tb_config *c) {
  uint64_t rng = seed * 7919 + 17;
  *c = tb_config_default();
  c->seed = seed;
  c->layout = (tb_layout)(tb_rand(&rng) % TB_LAYOUT_COUNT);
  c->head_dim = PICK(&rng, head_dims);
  /* 16, 20 and 64: decode of a large group runs through the prefill step
     on some sets (rpa_kernels.rows_block_min: avx2 from 16, avx512 from
     64) */
  static const int32_t groups[] = {1, 4, 8, 2, 16, 20, 64};
  if (c->layout == TB_LATENT) {
    c->num_kv_heads = 1;
    c->num_q_heads = tb_range(&rng, 1, 24); /* MLA: groups of up to 24 */
    if (c->head_dim < 24) c->head_dim = 24;
    c->head_dim_v = c->head_dim - 16; /* [kv_c | k_pe] with R = 16 */
  } else {
    c->num_kv_heads = tb_range(&rng, 1, 2);
    c->num_q_heads = c->num_kv_heads * PICK(&rng, groups);
    if (c->layout == TB_SEPARATE && tb_rand(&rng) % 2)
      c->head_dim_v = PICK(&rng, head_dims);
  }
  c->page_size = PICK(&rng, page_sizes);
  c->q_dtype = PICK(&rng, io_dtypes);
  c->out_dtype = PICK(&rng, io_dtypes);
  c->kv_dtype = PICK(&rng, kv_dtypes);
  c->shuffle_pages = tb_rand(&rng) % 4 != 0;
  c->extra_pages = tb_range(&rng, 0, 5);
  c->pages_per_seq = tb_rand(&rng) % 3 == 0 ? 64 : 0;
  c->pad = tb_rand(&rng) % 3 == 0 ? 3 : 0;
  c->pad_tokens = tb_range(&rng, 0, 2);
  c->causal = tb_rand(&rng) % 6 != 0;
  c->update = tb_rand(&rng) % 5 != 0;
  c->lse = tb_rand(&rng) % 2;
  c->sinks = tb_rand(&rng) % 4 == 0;
  if (tb_rand(&rng) % 4 == 0) c->soft_cap = (float)(2.0 + 30.0 * tb_uniform(&rng));
  if (tb_rand(&rng) % 5 == 0) c->q_scale = (float)(0.25 + 2.0 * tb_uniform(&rng));
  if (tb_rand(&rng) % 3 == 0) c->k_scale = (float)(0.5 + 1.5 * tb_uniform(&rng));
  if (tb_rand(&rng) % 3 == 0) c->v_scale = (float)(0.5 + 1.5 * tb_uniform(&rng));
  /* The ragged batch: cost kept near 4M multiply-adds per case. */
  const int32_t S = tb_range(&rng, 1, 6);
  c->num_seqs = S;
  const int64_t budget = 4000000 / ((int64_t)c->num_q_heads * c->head_dim);
  for (int32_t i = 0; i < S; i++) {
    const int k = kind == 2 ? (int)(tb_rand(&rng) % 2) : kind;
    int32_t kv = tb_range(&rng, 1, (int32_t)(budget / S > 2 ? budget / S : 2));
    if (kv > 3000) kv = 3000;
    int32_t ql = 1;
    if (k == 1) {
      ql = tb_range(&rng, 1, kv < 96 ? kv : 96);
      if (kv > (int32_t)(budget / S / ql)) kv = (int32_t)(budget / S / ql);
      if (kv < ql) kv = ql;
    }
    if (kind == 1 && ql == 1 && kv > 1) ql = 2;
    q_lens[i] = ql;
    kv_lens[i] = kv;
  }
  if (c->causal && tb_rand(&rng) % 3 == 0)
    c->sliding_window = tb_range(&rng, 1, 200);
  /* The distribution hint only where it describes the batch. */
  c->distribution = kind == 0 && tb_rand(&rng) % 2;
  /* Tree masks (speculative decoding) over a third of the causal batches. */
  c->tree = c->causal && tb_rand(&rng) % 3 == 0;
  c->q_lens = q_lens;
  c->kv_lens = kv_lens;
}

static void describe(const tb_config *c, char *buf, size_t n) {
  snprintf(buf, n,
           "seed %llu: S %d Hq %d Hkv %d D %d Dv %d ps %d %s q %s out %s kv %s "
           "causal %d W %d cap %.3g sinks %d qs %.3g ks %.3g vs %.3g upd %d",
           (unsigned long long)c->seed, (int)c->num_seqs, (int)c->num_q_heads,
           (int)c->num_kv_heads, (int)c->head_dim, (int)c->head_dim_v,
           (int)c->page_size, tb_layout_name(c->layout),
           rpa_dtype_name(c->q_dtype), rpa_dtype_name(c->out_dtype),
           rpa_dtype_name(c->kv_dtype), c->causal, (int)c->sliding_window,
           (double)c->soft_cap, c->sinks, (double)c->q_scale,
           (double)c->k_scale, (double)c->v_scale, c->update);
}

static void random_sweep(int kind, int count) {
  static const char *kinds[] = {"decode", "prefill", "mixed"};
  for (int n = 0; n < count; n++) {
    int32_t q_lens[8], kv_lens[8];
    tb_config c;
    char name[512];
    random_case((uint64_t)(kind * 100000 + n + 1), kind, q_lens, kv_lens, &c);
    char desc[400];
    describe(&c, desc, sizeof desc);
    snprintf(name, sizeof name, "random %s %s", kinds[kind], desc);
    TEST_CASE(name, run_and_check(&c, 0.0));
  }
}

/* Logits in [90, 100]: exp() of them overflows float32, so a softmax that
   forgets to subtract the running maximum returns inf or NaN. */
static void big_logits(void) {
  for (int qi = 0; qi < 3; qi++)
    for (int ki = 0; ki < 5; ki++) {
      int32_t q_lens[] = {1, 7, 3}, kv_lens[] = {40, 50, 3};
      tb_config c = tb_config_default();
      c.seed = (uint64_t)(qi * 5 + ki + 1);
      c.num_seqs = 3;
      c.q_lens = q_lens;
      c.kv_lens = kv_lens;
      c.q_dtype = c.out_dtype = io_dtypes[qi];
      c.kv_dtype = kv_dtypes[ki];
      c.big_logits = 1;
      c.sm_scale = 1.0f;
      c.lse = 1;
      c.head_dim = 64;
      c.page_size = 8;
      char name[96];
      snprintf(name, sizeof name, "logits 90..100 q %s kv %s",
               rpa_dtype_name(c.q_dtype), rpa_dtype_name(c.kv_dtype));
      /* logits of ~100 carry a float32 rounding of ~1e-5 each */
      TEST_CASE(name, run_and_check(&c, 2e-3));
    }
}

/* Sequences of 8k+ tokens: one decode and one chunk with a long prefix. */
static void long_sequences(void) {
  int32_t q_lens[] = {1, 16}, kv_lens[] = {8300, 8213};
  static const int32_t ps[] = {16, 128, 1};
  for (int i = 0; i < 3; i++) {
    tb_config c = tb_config_default();
    c.seed = 99 + (uint64_t)i;
    c.num_seqs = 2;
    c.q_lens = q_lens;
    c.kv_lens = kv_lens;
    c.num_q_heads = 8;
    c.num_kv_heads = 2;
    c.head_dim = 128;
    c.page_size = ps[i];
    c.shuffle_pages = 1;
    c.kv_dtype = i == 0 ? RPA_BF16 : RPA_F32;
    c.lse = 1;
    char name[64];
    snprintf(name, sizeof name, "8k+ tokens, page size %d", (int)ps[i]);
    TEST_CASE(name, run_and_check(&c, 0.0));
  }
}

/* A sliding window that starts and ends mid-page, decode and prefill, with
   sinks (gpt-oss style) and a soft cap (Gemma style). */
static void windows(void) {
  int32_t q_lens[] = {1, 37, 1, 60}, kv_lens[] = {100, 141, 21, 60};
  static const int32_t W[] = {1, 20, 33, 128};
  for (int i = 0; i < 4; i++) {
    tb_config c = tb_config_default();
    c.seed = 7 + (uint64_t)i;
    c.num_seqs = 4;
    c.q_lens = q_lens;
    c.kv_lens = kv_lens;
    c.num_q_heads = 8;
    c.num_kv_heads = 2;
    c.page_size = 16;
    c.shuffle_pages = 1;
    c.sliding_window = W[i];
    c.sinks = i % 2;
    c.soft_cap = i >= 2 ? 20.0f : 0.0f;
    c.lse = 1;
    char name[64];
    snprintf(name, sizeof name, "sliding window %d mid-page", (int)W[i]);
    TEST_CASE(name, run_and_check(&c, 0.0));
  }
}

/* Every cache layout with every KV dtype, GQA 4, mixed batch. */
static void layouts(void) {
  int32_t q_lens[] = {1, 5, 1, 9}, kv_lens[] = {33, 5, 70, 40};
  for (int l = 0; l < TB_LAYOUT_COUNT; l++)
    for (int k = 0; k < 5; k++) {
      tb_config c = tb_config_default();
      c.seed = 1000 + (uint64_t)(l * 5 + k);
      c.num_seqs = 4;
      c.q_lens = q_lens;
      c.kv_lens = kv_lens;
      c.layout = (tb_layout)l;
      c.num_kv_heads = l == TB_LATENT ? 1 : 2;
      c.num_q_heads = c.num_kv_heads * 4;
      c.head_dim = l == TB_LATENT ? 96 : 64;
      c.head_dim_v = l == TB_LATENT ? 64 : 0;
      c.kv_dtype = kv_dtypes[k];
      c.q_dtype = RPA_BF16;
      c.out_dtype = RPA_F32;
      c.page_size = 16;
      c.shuffle_pages = 1;
      char name[64];
      snprintf(name, sizeof name, "layout %s kv %s", tb_layout_name(c.layout),
               rpa_dtype_name(c.kv_dtype));
      TEST_CASE(name, run_and_check(&c, 0.0));
    }
}

/* Every fp8 code, as V of a single visible key (so each weight is exactly
   1): the output must be the code's value exactly. Catches a wrong entry in
   any kernel set's fp8 conversion. The non-finite codes (NaN, and e5m2's
   infinities) are left out of that run, then tried one at a time: the rows
   that see one are NaN throughout, the other KV head's rows stay exact. */
static int fp8_finite(rpa_dtype f, uint8_t code) {
  const float x = f == RPA_FP8_E4M3 ? rpa_fp8_e4m3_to_f32(code)
                                    : rpa_fp8_e5m2_to_f32(code);
  return isfinite(x);
}

static void fp8_every_code(void) {
  enum { HKV = 2, G = 4, D = 128, PS = 16 };
  const rpa_dtype fmts[] = {RPA_FP8_E4M3, RPA_FP8_E5M2};
  for (int f = 0; f < 2; f++)
    for (int bad = -1; bad < 256; bad++) { /* bad: the one non-finite code */
      if (bad >= 0 && fp8_finite(fmts[f], (uint8_t)bad)) continue;
      uint8_t k[PS][HKV][D], v[PS][HKV][D];
      uint16_t q[HKV * G][D];
      float out[HKV * G][D];
      memset(k, 0, sizeof k);
      memset(v, 0, sizeof v);
      memset(q, 0, sizeof q);
      for (int h = 0; h < HKV; h++)
        for (int d = 0; d < D; d++) {
          const uint8_t code = (uint8_t)(h * D + d);
          v[0][h][d] = fp8_finite(fmts[f], code) || code == bad ? code : 0;
          k[0][h][d] = (uint8_t)(d % 3 == 0 ? 0x38 : 0); /* finite */
        }
      int32_t cu[2] = {0, 1}, kv_len = 1, pages = 0;
      rpa_args a = rpa_args_default();
      a.num_tokens = 1;
      a.num_q_heads = HKV * G;
      a.num_kv_heads = HKV;
      a.head_dim = D;
      a.q = (rpa_tensor){q, RPA_BF16, HKV * G * D, D};
      a.out = (rpa_tensor){out, RPA_F32, HKV * G * D, D};
      a.cache.k = k;
      a.cache.v = v;
      a.cache.dtype = fmts[f];
      a.cache.num_pages = 1;
      a.cache.page_size = PS;
      a.cache.k_page_stride = a.cache.v_page_stride = PS * HKV * D;
      a.cache.k_slot_stride = a.cache.v_slot_stride = HKV * D;
      a.cache.k_head_stride = a.cache.v_head_stride = D;
      a.num_seqs = 1;
      a.cu_q_lens = cu;
      a.kv_lens = &kv_len;
      a.page_indices = &pages;
      a.pages_per_seq = 1;
      a.update_kv_cache = 0;
      char name[96];
      if (bad < 0)
        snprintf(name, sizeof name, "every finite fp8 %s code",
                 f == 0 ? "e4m3" : "e5m2");
      else
        snprintf(name, sizeof name, "fp8 %s code 0x%02x in V: its rows NaN",
                 f == 0 ? "e4m3" : "e5m2", bad);
      TEST_CASE(name, {
        rpa_status st = rpa_attention(ctx, &a);
        CHECK(st == RPA_OK, "rpa_attention: %s: %s", rpa_status_string(st),
              rpa_context_last_error(ctx));
        for (int r = 0; st == RPA_OK && r < HKV * G; r++) {
          const int poisoned = bad >= 0 && bad / D == r / G;
          for (int d = 0; d < D; d++) {
            const uint8_t code = v[0][r / G][d];
            const float want = f == 0 ? rpa_fp8_e4m3_to_f32(code) : rpa_fp8_e5m2_to_f32(code);
            const float got = out[r][d];
            CHECK(poisoned ? isnan(got) : got == want,
                  "row %d dim %d code 0x%02x: got %g, want %g", r, d, code,
                  got, poisoned ? NAN : want);
          }
        }
      });
    }
}

int main(void) {
  /* RPA_TEST_THREADS=n: n threads (scripts/test_reliability.sh runs the
     suite under ThreadSanitizer with 4, whatever the CPU count). */
  rpa_context_options opts = rpa_context_options_default();
  const char *threads = getenv("RPA_TEST_THREADS");
  if (threads && threads[0]) opts.num_threads = atoi(threads);
  rpa_status st = rpa_context_create(&opts, &ctx);
  if (st != RPA_OK) {
    fprintf(stderr, "context: %s\n", rpa_status_string(st));
    return 1;
  }
  printf("test_attention: kernel set %s\n", rpa_context_isa(ctx));
  const int n = th_quick() ? 12 : 120;
  fp8_every_code();
  big_logits();
  long_sequences();
  windows();
  layouts();
  random_sweep(0, n);
  random_sweep(1, n);
  random_sweep(2, n);
  rpa_context_destroy(ctx);
  return th_finish("test_attention");
}
