/* Numerical edges, the same on the context's kernel set (RPA_ISA) as on the
   reference: a NaN or an infinity in q, in a new K/V row or in the cache
   makes NaN exactly the rows that see it (their whole output and their lse)
   and no other row, never another sequence's; huge logits, all-equal
   logits and values at the fp8 limits stay finite and match the reference.

   Each case builds a batch (a decode, a 5-token chunk and a second decode,
   8/2 heads, D 64, page 16), plants one value, runs the reference and the
   kernel set on the same inputs, and compares: the NaN pattern must equal
   the one the contract predicts (the test computes which rows see the
   planted value), finite values must agree within the batch's tolerance. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "harness.h"
#include "internal.h"

static rpa_context *ctx, *ref_ctx;

enum { S = 3 };
static const int32_t QL[S] = {1, 5, 1};
static const int32_t KL[S] = {40, 37, 30};

typedef enum where { IN_Q, IN_NEW_K, IN_NEW_V, IN_CACHE_K, IN_CACHE_V } where;

typedef struct plant {
  where at;
  int32_t seq, pos;  /* sequence, and its token position (for q: the token
                        j of the sequence's new tokens is pos - prefix) */
  int32_t head, dim; /* q head for IN_Q, else KV head */
  float value;
} plant;

typedef struct numerics_case {
  const char *name;
  rpa_dtype q_dtype, kv_dtype;
  int32_t window;
  float sm_scale; /* 0: the default */
  int zero_q;     /* all logits equal */
  float v_fill;   /* != 0: every V element is +-v_fill (fp8 limits) */
  int has_plant;
  plant p;
} numerics_case;

static void *q_elem(tb_batch *b, int32_t t, int32_t h, int32_t d) {
  const rpa_args *a = &b->args;
  const int64_t e = t * a->q.token_stride + h * a->q.head_stride + d;
  return (char *)tb_data(&b->q) + e * (int64_t)rpa_dtype_size(a->q.dtype);
}

/* Writes value, converted to dtype, at element e of base. */
static void put(void *base, rpa_dtype dt, int64_t e, float value) {
  rpa_store_f32(base, dt, e, value);
}

static void plant_value(tb_batch *b, const plant *p) {
  rpa_args *a = &b->args;
  const rpa_dtype kd = a->cache.dtype;
  const int32_t q0 = b->cu_q_lens[p->seq];
  const int32_t prefix = b->kv_lens[p->seq] - b->q_lens[p->seq];
  const int32_t t = q0 + p->pos - prefix; /* the token, for new rows */
  switch (p->at) {
    case IN_Q:
      put(q_elem(b, t, p->head, 0), a->q.dtype, p->dim, p->value);
      break;
    case IN_NEW_K:
      put(tb_data(&b->k), kd,
          t * a->k.token_stride + p->head * a->k.head_stride + p->dim, p->value);
      break;
    case IN_NEW_V:
      put(tb_data(&b->v), kd,
          t * a->v.token_stride + p->head * a->v.head_stride + p->dim, p->value);
      break;
    case IN_CACHE_K:
    case IN_CACHE_V: {
      const rpa_slot s = rpa_slot_of(a, p->seq, p->pos);
      const int64_t off = p->at == IN_CACHE_K ? rpa_k_offset(&a->cache, s, p->head)
                                              : rpa_v_offset(&a->cache, s, p->head);
      void *part = p->at == IN_CACHE_K ? a->cache.k : a->cache.v;
      const int64_t rel = (const char *)part - (const char *)tb_data(&b->cache);
      put(part, kd, off + p->dim, p->value);
      put(b->cache_before.mem + TB_GUARD + rel, kd, off + p->dim, p->value);
      break;
    }
  }
}

/* Does row (token t of sequence seq, q head n) see the planted value? */
static int sees(const tb_batch *b, const numerics_case *c, int32_t seq,
                int32_t j, int32_t n) {
  const plant *p = &c->p;
  if (!c->has_plant || seq != p->seq) return 0;
  const int32_t prefix = b->kv_lens[seq] - b->q_lens[seq];
  const int32_t pos = prefix + j;
  if (p->at == IN_Q) return pos == p->pos && n == p->head;
  const int32_t G = b->args.num_q_heads / b->args.num_kv_heads;
  if (n / G != p->head) return 0;
  if (p->pos > pos) return 0; /* causal */
  if (c->window > 0 && pos - p->pos >= c->window) return 0;
  return 1;
}

static void run_case(const numerics_case *c) {
  th_begin(c->name);
  {
    tb_config cfg = tb_config_default();
    cfg.seed = 77;
    cfg.num_seqs = S;
    cfg.q_lens = QL;
    cfg.kv_lens = KL;
    cfg.num_q_heads = 8;
    cfg.num_kv_heads = 2;
    cfg.head_dim = 64;
    cfg.page_size = 16;
    cfg.shuffle_pages = 1;
    cfg.q_dtype = c->q_dtype;
    cfg.kv_dtype = c->kv_dtype;
    cfg.out_dtype = RPA_F32;
    cfg.sliding_window = c->window;
    cfg.sm_scale = c->sm_scale;
    cfg.lse = 1;
    tb_batch b;
    CHECK(tb_make(&b, &cfg) == 0, "tb_make");
    rpa_args *a = &b.args;
    const int32_t Hq = a->num_q_heads, Dv = a->head_dim;
    if (c->zero_q) memset(tb_data(&b.q), 0, b.q.bytes);
    if (c->v_fill != 0.0f) { /* every V element at +-v_fill */
      const int64_t nv = (int64_t)(b.v.bytes / rpa_dtype_size(a->cache.dtype));
      for (int64_t i = 0; i < nv; i++)
        put(tb_data(&b.v), a->cache.dtype, i, i % 3 ? c->v_fill : -c->v_fill);
      for (int32_t s = 0; s < S; s++)
        for (int32_t pos = 0; pos < b.kv_lens[s]; pos++)
          for (int32_t h = 0; h < a->num_kv_heads; h++)
            for (int32_t d = 0; d < Dv; d++) {
              plant pl = {IN_CACHE_V, s, pos, h, d,
                          (pos + d) % 3 ? c->v_fill : -c->v_fill};
              plant_value(&b, &pl);
            }
    }
    if (c->has_plant) plant_value(&b, &c->p);
    float *ref_out = malloc(b.out.bytes), *ref_lse = malloc(b.lse.bytes);
    rpa_status st = rpa_attention(ref_ctx, a);
    CHECK(st == RPA_OK, "ref: %s", rpa_context_last_error(ref_ctx));
    memcpy(ref_out, tb_data(&b.out), b.out.bytes);
    memcpy(ref_lse, tb_data(&b.lse), b.lse.bytes);
    tb_reset(&b);
    st = rpa_attention(ctx, a);
    CHECK(st == RPA_OK, "%s: %s", rpa_context_isa(ctx), rpa_context_last_error(ctx));
    const float *out = tb_data(&b.out), *lse = tb_data(&b.lse);
    const double tol = tb_tolerance(&cfg) * (c->v_fill != 0.0f ? c->v_fill : 1.0);
    int bad_pattern = 0, bad_ref = 0, bad_value = 0;
    for (int32_t s = 0; s < S; s++)
      for (int32_t j = 0; j < b.q_lens[s]; j++)
        for (int32_t n = 0; n < Hq; n++) {
          const int64_t t = b.cu_q_lens[s] + j;
          const int want_nan = sees(&b, c, s, j, n);
          const int64_t r = t * a->out.token_stride + n * a->out.head_stride;
          const int64_t li = t * a->lse_token_stride + n * a->lse_head_stride;
          for (int32_t d = 0; d < Dv; d++) {
            const float got = out[r + d], want = ref_out[r + d];
            if (want_nan != !!isnan(want)) bad_ref++;
            if (want_nan != !!isnan(got)) {
              if (bad_pattern++ < 3)
                fprintf(stderr, "  seq %d token %d head %d dim %d: got %g, "
                        "contract says %s\n", (int)s, (int)j, (int)n, (int)d,
                        (double)got, want_nan ? "NaN" : "finite");
            } else if (!want_nan && !(fabs(got - want) <= tol)) {
              bad_value++;
            }
          }
          if (want_nan != !!isnan(lse[li]) || want_nan != !!isnan(ref_lse[li]))
            bad_pattern++;
        }
    CHECK(bad_ref == 0, "the reference's NaN pattern differs from the "
          "contract's in %d elements", bad_ref);
    CHECK(bad_pattern == 0, "%s: NaN pattern differs in %d elements",
          rpa_context_isa(ctx), bad_pattern);
    CHECK(bad_value == 0, "%s: %d finite elements off the reference by > %g",
          rpa_context_isa(ctx), bad_value, tol);
    free(ref_out);
    free(ref_lse);
    tb_free(&b);
  }
  th_end();
}

int main(void) {
  if (rpa_context_create(NULL, &ctx) != RPA_OK) return 1;
  rpa_context_options o = rpa_context_options_default();
  o.isa = "ref";
  if (rpa_context_create(&o, &ref_ctx) != RPA_OK) return 1;
  printf("test_numerics: kernel set %s\n", rpa_context_isa(ctx));
  const rpa_dtype B = RPA_BF16, F = RPA_F32, E4 = RPA_FP8_E4M3, E5 = RPA_FP8_E5M2;
  /* sequences: 0 decode (kv 40), 1 chunk of 5 at positions 32..36, 2 decode
     (kv 30); positions in the plants are the sequence's own */
  const numerics_case cases[] = {
      {"clean batch", B, B, 0, 0, 0, 0, 0, {0}},
      {"NaN in q (decode token, head 0)", B, B, 0, 0, 0, 0, 1,
       {IN_Q, 0, 39, 0, 3, NAN}},
      {"+inf in q (chunk token 1, head 5)", B, B, 0, 0, 0, 0, 1,
       {IN_Q, 1, 33, 5, 0, INFINITY}},
      {"+inf in a new K row (chunk token 2, KV head 1)", B, B, 0, 0, 0, 0, 1,
       {IN_NEW_K, 1, 34, 1, 7, INFINITY}},
      {"NaN in a new V row (chunk token 3, KV head 0): earlier tokens clean",
       B, B, 0, 0, 0, 0, 1, {IN_NEW_V, 1, 35, 0, 1, NAN}},
      {"-inf in a new V row (chunk token 1), f32", F, F, 0, 0, 0, 0, 1,
       {IN_NEW_V, 1, 33, 1, 60, -INFINITY}},
      {"NaN in cached K (decode 2, position 3)", B, B, 0, 0, 0, 0, 1,
       {IN_CACHE_K, 2, 3, 0, 0, NAN}},
      {"-inf in cached V (decode 0, position 10)", B, B, 0, 0, 0, 0, 1,
       {IN_CACHE_V, 0, 10, 1, 63, -INFINITY}},
      {"-inf in cached K, f32 (logit -inf)", F, F, 0, 0, 0, 0, 1,
       {IN_CACHE_K, 0, 20, 0, 5, -INFINITY}},
      {"NaN in cached K of the chunk's prefix", F, B, 0, 0, 0, 0, 1,
       {IN_CACHE_K, 1, 31, 1, 2, NAN}},
      {"NaN in cached V left of a window of 8: nobody sees it", B, B, 8, 0, 0,
       0, 1, {IN_CACHE_V, 2, 0, 0, 0, NAN}},
      {"NaN in cached V inside a window of 8", B, B, 8, 0, 0, 0, 1,
       {IN_CACHE_V, 1, 30, 1, 9, NAN}},
      {"NaN in fp8 e4m3 cached V", B, E4, 0, 0, 0, 0, 1,
       {IN_CACHE_V, 1, 5, 0, 4, NAN}},
      {"+inf in fp8 e5m2 new K", B, E5, 0, 0, 0, 0, 1,
       {IN_NEW_K, 1, 36, 1, 4, INFINITY}},
      {"logits of 1e30 after scaling", F, F, 0, 1e29f, 0, 0, 0, {0}},
      {"all-equal logits (q = 0)", B, B, 0, 0, 1, 0, 0, {0}},
      {"V at the e4m3 limit (+-448)", B, E4, 0, 0, 0, 448.0f, 0, {0}},
      {"V at the e5m2 limit (+-57344)", F, E5, 0, 0, 0, 57344.0f, 0, {0}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
  rpa_context_destroy(ctx);
  rpa_context_destroy(ref_ctx);
  return th_finish("test_numerics");
}
