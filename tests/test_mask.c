/* Custom masks over the new tokens (rpa_args.mask: trees of draft tokens
   for speculative decoding), on the active kernel set (RPA_ISA):

   - random trees against the dense oracle (tb_oracle tests every (query,
     key) pair against the mask bits itself), with prefixes, windows, soft
     caps, sinks, GQA groups, page sizes, KV-share mode, every dtype; the
     cache write is checked too;
   - a mask that marks every earlier token (the causal triangle) gives what
     no mask gives (within the tolerance; bitwise on ref);
   - the result of a masked sequence does not depend on the batch around it
     or on the thread count (bitwise);
   - bad masks fail with the rule named and nothing written.

   test_attention's random sweep also puts trees in a third of its causal
   batches, over every layout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "harness.h"
#include "expect_error.h"

static rpa_context *ctx;

static int check_batch(tb_batch *b, char *msg, size_t len) {
  const tb_config *c = &b->cfg;
  const int64_t rows = (int64_t)b->total_tokens * c->num_q_heads;
  const int32_t dv = c->head_dim_v ? c->head_dim_v : c->head_dim;
  double *out = malloc(sizeof(double) * (size_t)(rows * dv + 1));
  double *lse = malloc(sizeof(double) * (size_t)(rows + 1));
  if (!out || !lse) abort();
  tb_oracle(b, out, lse);
  int bad = 0;
  rpa_status st = rpa_attention(ctx, &b->args);
  if (st != RPA_OK) {
    snprintf(msg, len, "rpa_attention: %s: %s", rpa_status_string(st),
             rpa_context_last_error(ctx));
    bad = 1;
  } else {
    bad = tb_check_output(b, out, lse, tb_tolerance(c), msg, len) != 0 ||
          tb_check_cache(b, msg, len) != 0;
  }
  free(out);
  free(lse);
  return bad;
}

static const rpa_dtype io[] = {RPA_F32, RPA_BF16, RPA_F16};
static const rpa_dtype kvt[] = {RPA_F32, RPA_BF16, RPA_F16, RPA_FP8_E4M3,
                                RPA_FP8_E5M2};
static const int32_t page_sizes[] = {1, 16, 5, 32};
static const int32_t dims[] = {64, 128, 40, 80};

/* A random tree batch: some decodes, some drafts (1..70 new tokens) over
   prefixes of 0..300 tokens. */
static void random_tree_config(uint64_t seed, int32_t *q_lens, int32_t *kv_lens,
                               tb_config *c) {
  uint64_t rng = seed * 104729 + 3;
  *c = tb_config_default();
  c->seed = seed;
  c->tree = 1;
  c->num_kv_heads = tb_range(&rng, 1, 2);
  c->num_q_heads = c->num_kv_heads * (int32_t[]){1, 4, 8, 2}[tb_rand(&rng) % 4];
  c->head_dim = dims[tb_rand(&rng) % 4];
  c->page_size = page_sizes[tb_rand(&rng) % 4];
  c->q_dtype = io[tb_rand(&rng) % 3];
  c->out_dtype = io[tb_rand(&rng) % 3];
  c->kv_dtype = kvt[tb_rand(&rng) % 5];
  c->shuffle_pages = 1;
  c->update = tb_rand(&rng) % 4 != 0;
  c->lse = 1;
  c->sinks = tb_rand(&rng) % 4 == 0;
  if (tb_rand(&rng) % 4 == 0) c->soft_cap = (float)(3.0 + 20.0 * tb_uniform(&rng));
  if (tb_rand(&rng) % 4 == 0) c->sliding_window = tb_range(&rng, 1, 120);
  const int32_t S = tb_range(&rng, 1, 6);
  c->num_seqs = S;
  for (int32_t i = 0; i < S; i++) {
    const int decode = tb_rand(&rng) % 4 == 0;
    q_lens[i] = decode ? 1 : tb_range(&rng, 2, 70);
    kv_lens[i] = q_lens[i] + (tb_rand(&rng) % 5 == 0 ? 0 : tb_range(&rng, 1, 300));
  }
  c->q_lens = q_lens;
  c->kv_lens = kv_lens;
}

static void random_trees(int n) {
  for (int k = 0; k < n; k++) {
    th_begin("random trees against the oracle");
    {
      int32_t q_lens[8], kv_lens[8];
      tb_config c;
      random_tree_config(1000 + (uint64_t)k, q_lens, kv_lens, &c);
      tb_batch b;
      char msg[512] = "";
      if (tb_make(&b, &c) != 0) {
        CHECK(0, "tb_make failed");
      } else {
        CHECK(b.args.mask != NULL, "the batch has no mask");
        CHECK(check_batch(&b, msg, sizeof msg) == 0, "case %d: %s", k, msg);
      }
      tb_free(&b);
    }
    th_end();
  }
}

/* The causal triangle as a mask equals no mask. */
static void triangle_is_causal(void) {
  th_begin("a full lower-triangle mask equals the causal call");
  {
    int32_t q_lens[3] = {17, 1, 40}, kv_lens[3] = {50, 9, 40};
    tb_config c = tb_config_default();
    c.seed = 77;
    c.num_seqs = 3;
    c.q_lens = q_lens;
    c.kv_lens = kv_lens;
    c.num_q_heads = 8;
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.page_size = 16;
    c.shuffle_pages = 1;
    c.q_dtype = c.out_dtype = RPA_F32;
    c.kv_dtype = RPA_BF16;
    tb_batch b;
    if (tb_make(&b, &c) != 0) {
      CHECK(0, "tb_make failed");
    } else {
      const size_t ob = b.out.bytes;
      unsigned char *plain = malloc(ob);
      CHECK(rpa_attention(ctx, &b.args) == RPA_OK, "plain: %s",
            rpa_context_last_error(ctx));
      memcpy(plain, tb_data(&b.out), ob);
      tb_reset(&b);
      /* sequence 0 and 2: the triangle; sequence 1 (a decode): none */
      int64_t offs[3] = {0, -1, 17 * 17 + 3};
      const int64_t bits = offs[2] + 40 * 40;
      uint8_t *m = calloc((size_t)bits / 8 + 1, 1);
      for (int s = 0; s < 3; s += 2)
        for (int32_t j = 0; j < q_lens[s]; j++)
          for (int32_t k = 0; k <= j; k++) {
            const int64_t x = offs[s] + (int64_t)j * q_lens[s] + k;
            m[x / 8] |= (uint8_t)(1u << (x % 8));
          }
      rpa_args a = b.args;
      a.mask = m;
      a.mask_offsets = offs;
      a.mask_bits = bits;
      CHECK(rpa_attention(ctx, &a) == RPA_OK, "masked: %s",
            rpa_context_last_error(ctx));
      /* f32 out: compare values */
      const float *x = (const float *)plain, *y = tb_data(&b.out);
      double worst = 0;
      for (size_t i = 0; i < ob / 4; i++) {
        const double d = fabs((double)x[i] - y[i]);
        if (d > worst || d != d) worst = d;
      }
      CHECK(worst <= 2e-6, "masked vs plain: max difference %g", worst);
      if (strcmp(rpa_context_isa(ctx), "ref") == 0)
        CHECK(memcmp(plain, tb_data(&b.out), ob) == 0,
              "ref: the triangle is not bitwise the causal call");
      free(m);
      free(plain);
    }
    tb_free(&b);
  }
  th_end();
}

/* One masked sequence alone, and as sequence 2 of a batch of 5, with 1 and
   2 threads: its output rows are the same bits. */
static void invariance(void) {
  th_begin("a masked sequence: bitwise the same alone, in a batch, any thread count");
  {
    int32_t ql[5] = {1, 9, 33, 1, 60}, kl[5] = {80, 20, 233, 7, 100};
    tb_config c = tb_config_default();
    c.seed = 5;
    c.num_seqs = 5;
    c.q_lens = ql;
    c.kv_lens = kl;
    c.num_q_heads = 8;
    c.num_kv_heads = 2;
    c.head_dim = 128;
    c.page_size = 16;
    c.q_dtype = c.out_dtype = c.kv_dtype = RPA_BF16;
    c.tree = 1;
    c.update = 0; /* the same call may run again */
    tb_batch b;
    const int made = tb_make(&b, &c) == 0;
    CHECK(made, "tb_make failed");
    CHECK(!made || b.mask_offsets[2] >= 0, "sequence 2 has no mask");
    if (made && b.mask_offsets[2] >= 0) {
    const int32_t Hq = 8, D = 128;
    const size_t row_bytes = (size_t)Hq * D * 2;
    const size_t seq_bytes = row_bytes * (size_t)ql[2];
    unsigned char *ref_rows = malloc(seq_bytes);
    const int64_t t0 = b.cu_q_lens[2];
    const char *out = tb_data(&b.out);
    CHECK(rpa_attention(ctx, &b.args) == RPA_OK, "batch: %s",
          rpa_context_last_error(ctx));
    memcpy(ref_rows, out + t0 * (int64_t)b.args.out.token_stride * 2, seq_bytes);
    /* alone: sequence 2's rows, lengths, pages and mask offset */
    rpa_args a = b.args;
    const int32_t cu[2] = {0, ql[2]};
    a.num_seqs = 1;
    a.cu_q_lens = cu;
    a.kv_lens = &b.kv_lens[2];
    a.page_indices = b.page_indices + 2 * (int64_t)b.args.pages_per_seq;
    a.mask_offsets = &b.mask_offsets[2];
    a.num_tokens = ql[2];
    a.q.data = (char *)a.q.data + t0 * a.q.token_stride * 2;
    a.k.data = (char *)a.k.data + t0 * a.k.token_stride * 2;
    a.v.data = (char *)a.v.data + t0 * a.v.token_stride * 2;
    a.out.data = (char *)a.out.data + t0 * a.out.token_stride * 2;
    a.lse = NULL;
    memset(tb_data(&b.out), 0, b.out.bytes);
    CHECK(rpa_attention(ctx, &a) == RPA_OK, "alone: %s",
          rpa_context_last_error(ctx));
    CHECK(memcmp(ref_rows, out + t0 * (int64_t)b.args.out.token_stride * 2,
                 seq_bytes) == 0,
          "alone differs from in the batch");
    rpa_context_options o = rpa_context_options_default();
    o.num_threads = 1;
    rpa_context *one = NULL;
    CHECK(rpa_context_create(&o, &one) == RPA_OK, "1-thread context");
    if (one) {
      memset(tb_data(&b.out), 0, b.out.bytes);
      CHECK(rpa_attention(one, &b.args) == RPA_OK, "1 thread: %s",
            rpa_context_last_error(one));
      CHECK(memcmp(ref_rows, out + t0 * (int64_t)b.args.out.token_stride * 2,
                   seq_bytes) == 0,
            "1 thread differs from %d", rpa_context_num_threads(ctx));
      rpa_context_destroy(one);
    }
    free(ref_rows);
    }
    tb_free(&b);
  }
  th_end();
}

/* A NaN in one new token's key poisons exactly the rows whose mask row
   marks that token, in its KV head's query heads (docs/contract.md,
   section 6), on every set alike. */
static void nan_in_a_draft(void) {
  th_begin("a NaN in a draft's key poisons exactly the tokens that see it");
  {
    int32_t ql[2] = {1, 24}, kl[2] = {10, 60};
    tb_config c = tb_config_default();
    c.seed = 21;
    c.num_seqs = 2;
    c.q_lens = ql;
    c.kv_lens = kl;
    c.num_q_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.page_size = 16;
    c.tree = 1;
    tb_batch b;
    const int made = tb_make(&b, &c) == 0;
    CHECK(made && b.mask_offsets[1] >= 0, "tb_make / no mask");
    if (made && b.mask_offsets[1] >= 0) {
      const int32_t bad = 7, q0 = b.cu_q_lens[1]; /* draft 7, KV head 1 */
      float *k = tb_data(&b.k);
      k[(int64_t)(q0 + bad) * b.args.k.token_stride + b.args.k.head_stride + 3] = NAN;
      CHECK(rpa_attention(ctx, &b.args) == RPA_OK, "%s", rpa_context_last_error(ctx));
      const float *out = tb_data(&b.out);
      for (int32_t j = 0; j < ql[1]; j++)
        for (int32_t n = 0; n < 4; n++) {
          const float x = out[(int64_t)(q0 + j) * b.args.out.token_stride +
                              n * b.args.out.head_stride];
          const int sees = n / 2 == 1 && j >= bad && tb_mask_sees(&b, 1, j, bad);
          CHECK(sees ? isnan(x) : isfinite(x),
                "token %d head %d: %g (sees the NaN: %d)", (int)j, (int)n,
                (double)x, sees);
        }
    }
    tb_free(&b);
  }
  th_end();
}

static void set_bit(uint8_t *m, int64_t x, int on) {
  if (on)
    m[x / 8] |= (uint8_t)(1u << (x % 8));
  else
    m[x / 8] &= (uint8_t)~(1u << (x % 8));
}

static void errors(void) {
  int32_t ql[2] = {6, 4}, kl[2] = {30, 4};
  tb_config c = tb_config_default();
  c.seed = 9;
  c.num_seqs = 2;
  c.q_lens = ql;
  c.kv_lens = kl;
  c.num_q_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.page_size = 8;
  tb_batch b;
  if (tb_make(&b, &c) != 0) {
    th_begin("error batch");
    CHECK(0, "tb_make failed");
    th_end();
    tb_free(&b);
    return;
  }
  int64_t offs[2] = {0, 40};
  uint8_t m[8] = {0};
  for (int s = 0; s < 2; s++)
    for (int32_t j = 0; j < ql[s]; j++) set_bit(m, offs[s] + j * ql[s] + j, 1);
  rpa_args a = b.args;
  a.mask = m;
  a.mask_offsets = offs;
  a.mask_bits = 64;
  th_begin("diagonal-only masks are accepted");
  tb_reset(&b);
  CHECK(rpa_attention(ctx, &a) == RPA_OK, "%s", rpa_context_last_error(ctx));
  th_end();

  set_bit(m, offs[0] + 2 * 6 + 4, 1); /* token 2 sees token 4 */
  expect_error(ctx, "mask: a token sees a later one", &b, &a, RPA_INVALID_PARAMETER,
               "sequence 0, new token 2 sees new token 4, a later position");
  set_bit(m, offs[0] + 2 * 6 + 4, 0);
  set_bit(m, offs[1] + 3 * 4 + 3, 0);
  expect_error(ctx, "mask: a token does not see itself", &b, &a,
               RPA_INVALID_PARAMETER, "sequence 1, new token 3 does not see itself");
  set_bit(m, offs[1] + 3 * 4 + 3, 1);
  rpa_args x = a;
  x.mask_bits = 55; /* sequence 1 needs bits [40, 56) */
  expect_error(ctx, "mask: bits past mask_bits", &b, &x, RPA_INVALID_PARAMETER,
               "run past mask_bits 55");
  int64_t bad_offs[2] = {0, -2};
  x = a;
  x.mask_offsets = bad_offs;
  expect_error(ctx, "mask: offset below -1", &b, &x, RPA_INVALID_PARAMETER,
               "sequence 1 has offset -2");
  x = a;
  x.mask_offsets = NULL;
  expect_error(ctx, "mask: no offsets", &b, &x, RPA_NULL_POINTER, "mask_offsets: NULL");
  x = a;
  x.causal = 0;
  expect_error(ctx, "mask: non-causal", &b, &x, RPA_INVALID_PARAMETER,
               "non-causal");
  x = a;
  x.mask_bits = -1;
  expect_error(ctx, "mask: negative mask_bits", &b, &x, RPA_INVALID_PARAMETER,
               "mask_bits: -1 is negative");
  x = a;
  x.mask = tb_data(&b.out); /* read while out is written */
  x.mask_bits = 8;
  int64_t zero_offs[2] = {-1, -1};
  x.mask_offsets = zero_offs;
  expect_error(ctx, "mask: overlaps out", &b, &x, RPA_OVERLAP, "out: overlaps mask");
  tb_free(&b);
}

int main(void) {
  ctx = th_context("test_mask");
  if (!ctx) return 1;
  random_trees(th_quick() ? 8 : 60);
  triangle_is_causal();
  invariance();
  nan_in_a_draft();
  errors();
  rpa_context_destroy(ctx);
  return th_finish("test_mask");
}
