/* rpa_merge_states: attention over two disjoint key sets, merged, equals
   attention over their union; the merge is symmetric bitwise, an empty
   state (lse -inf) is the identity, in place equals out of place, NaN and
   infinities poison exactly their rows, and bad arguments fail with the
   argument named and nothing written.

   The key sets come from the library itself: a decode batch (q_len 1 sees
   all kv_len keys) run over the first half of each sequence's pages (kv_len
   L / 2) and over the second half (the page table shifted by L / 2 tokens),
   against the same batch over all L keys. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "harness.h"

static rpa_context *ctx;

enum { S = 5, HQ = 8, HKV = 2, D = 64, PS = 16 };
static const int32_t KL[S] = {64, 32, 160, 96, 32}; /* multiples of 2 * PS */

typedef struct run {
  float *out, *lse; /* [S, HQ, D], [S, HQ] */
} run;

static void run_alloc(run *r) {
  r->out = calloc((size_t)S * HQ * D, sizeof(float));
  r->lse = calloc((size_t)S * HQ, sizeof(float));
}
static void run_free(run *r) {
  free(r->out);
  free(r->lse);
}

static rpa_attn_state state_of(const run *r, rpa_dtype dt) {
  rpa_attn_state s;
  s.out = (rpa_tensor){r->out, dt, HQ * D, D};
  s.lse = r->lse;
  s.lse_token_stride = HQ;
  s.lse_head_stride = 1;
  return s;
}

/* full, first half, second half of every sequence's keys. */
static int three_runs(run *full, run *a, run *b, rpa_dtype kv) {
  int32_t q_lens[S], kv_lens[S];
  for (int i = 0; i < S; i++) q_lens[i] = 1, kv_lens[i] = KL[i];
  tb_config c = tb_config_default();
  c.seed = 11;
  c.num_seqs = S;
  c.q_lens = q_lens;
  c.kv_lens = kv_lens;
  c.num_q_heads = HQ;
  c.num_kv_heads = HKV;
  c.head_dim = D;
  c.page_size = PS;
  c.shuffle_pages = 1;
  c.kv_dtype = kv;
  c.update = 0;
  c.lse = 1;
  tb_batch bt;
  if (tb_make(&bt, &c) != 0) return 1;
  rpa_args x = bt.args;
  x.out.data = full->out;
  x.out.dtype = RPA_F32;
  x.out.token_stride = HQ * D;
  x.out.head_stride = D;
  x.lse = full->lse;
  x.lse_token_stride = HQ;
  x.lse_head_stride = 1;
  int bad = rpa_attention(ctx, &x) != RPA_OK;
  int32_t half[S], shifted[S * 16];
  const int32_t pps = bt.args.pages_per_seq;
  for (int i = 0; i < S; i++) {
    half[i] = KL[i] / 2;
    for (int p = 0; p < pps; p++) {
      const int32_t src = p + half[i] / PS;
      shifted[i * pps + p] = bt.args.page_indices[i * pps + (src < pps ? src : 0)];
    }
  }
  x.kv_lens = half;
  x.distribution = NULL;
  x.out.data = a->out;
  x.lse = a->lse;
  bad |= rpa_attention(ctx, &x) != RPA_OK;
  x.page_indices = shifted;
  x.out.data = b->out;
  x.lse = b->lse;
  bad |= rpa_attention(ctx, &x) != RPA_OK;
  if (bad) fprintf(stderr, "attention: %s\n", rpa_context_last_error(ctx));
  tb_free(&bt);
  return bad;
}

/* Largest |x[i] - y[i]|; NaN counts as infinitely far. (A plain loop with
   a branch: gcc 12's aarch64 vectoriser fails on an fmax reduction here.) */
static double max_abs_diff(const float *x, const float *y, int n) {
  double worst = 0;
  for (int i = 0; i < n; i++) {
    const double d = fabs((double)x[i] - y[i]);
    if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
  }
  return worst;
}

static void merge_equals_union(rpa_dtype kv) {
  run full, a, b, m;
  run_alloc(&full), run_alloc(&a), run_alloc(&b), run_alloc(&m);
  CHECK(three_runs(&full, &a, &b, kv) == 0, "the three runs");
  const rpa_attn_state sa = state_of(&a, RPA_F32), sb = state_of(&b, RPA_F32),
                       sm = state_of(&m, RPA_F32);
  CHECK(rpa_merge_states(ctx, S, HQ, D, &sa, &sb, &sm) == RPA_OK, "%s",
        rpa_context_last_error(ctx));
  const double worst = max_abs_diff(m.out, full.out, S * HQ * D),
               worst_lse = max_abs_diff(m.lse, full.lse, S * HQ);
  CHECK(worst < 2e-6, "out differs from the union by %g", worst);
  CHECK(worst_lse < 2e-6, "lse differs from the union by %g", worst_lse);
  /* the halves really differ from the union (the test can fail) */
  const double spread = max_abs_diff(a.out, full.out, S * HQ * D);
  CHECK(spread > 1e-3, "first half equals the union (%g): a vacuous test", spread);
  run_free(&full), run_free(&a), run_free(&b), run_free(&m);
}

/* symmetric, identity, in place, bf16 rounding once */
static void algebra(void) {
  run full, a, b, ab, ba, e;
  run_alloc(&full), run_alloc(&a), run_alloc(&b), run_alloc(&ab), run_alloc(&ba), run_alloc(&e);
  CHECK(three_runs(&full, &a, &b, RPA_BF16) == 0, "the three runs");
  rpa_attn_state sa = state_of(&a, RPA_F32), sb = state_of(&b, RPA_F32);
  const rpa_attn_state sab = state_of(&ab, RPA_F32), sba = state_of(&ba, RPA_F32);
  CHECK(rpa_merge_states(ctx, S, HQ, D, &sa, &sb, &sab) == RPA_OK, "a+b");
  CHECK(rpa_merge_states(ctx, S, HQ, D, &sb, &sa, &sba) == RPA_OK, "b+a");
  CHECK(memcmp(ab.out, ba.out, sizeof(float) * S * HQ * D) == 0 &&
            memcmp(ab.lse, ba.lse, sizeof(float) * S * HQ) == 0,
        "merge is not symmetric bitwise");
  /* an empty state: lse -inf, out NaN (never read) */
  for (int i = 0; i < S * HQ * D; i++) e.out[i] = NAN;
  for (int i = 0; i < S * HQ; i++) e.lse[i] = -INFINITY;
  const rpa_attn_state se = state_of(&e, RPA_F32);
  run id;
  run_alloc(&id);
  const rpa_attn_state sid = state_of(&id, RPA_F32);
  CHECK(rpa_merge_states(ctx, S, HQ, D, &se, &sb, &sid) == RPA_OK, "empty+b");
  CHECK(memcmp(id.out, b.out, sizeof(float) * S * HQ * D) == 0 &&
            memcmp(id.lse, b.lse, sizeof(float) * S * HQ) == 0,
        "an empty state is not the identity");
  /* both empty: 0 and -inf */
  CHECK(rpa_merge_states(ctx, S, HQ, D, &se, &se, &sid) == RPA_OK, "empty+empty");
  int ok = 1;
  for (int i = 0; i < S * HQ * D; i++) ok &= id.out[i] == 0.0f && !signbit(id.out[i]);
  for (int i = 0; i < S * HQ; i++) ok &= id.lse[i] == -INFINITY;
  CHECK(ok, "two empty states do not give 0 and -inf");
  /* bf16 dst: the f32 merge rounded once */
  uint16_t *o16 = calloc((size_t)S * HQ * D, 2);
  float *l16 = calloc((size_t)S * HQ, sizeof(float));
  rpa_attn_state s16 = {{o16, RPA_BF16, HQ * D, D}, l16, HQ, 1};
  CHECK(rpa_merge_states(ctx, S, HQ, D, &sa, &sb, &s16) == RPA_OK, "bf16 dst");
  ok = 1;
  for (int i = 0; i < S * HQ * D; i++) ok &= o16[i] == rpa_f32_to_bf16(ab.out[i]);
  CHECK(ok, "bf16 dst is not the f32 merge rounded once");
  CHECK(memcmp(l16, ab.lse, sizeof(float) * S * HQ) == 0, "bf16 dst lse");
  /* in place, into a */
  CHECK(rpa_merge_states(ctx, S, HQ, D, &sa, &sb, &sa) == RPA_OK, "in place: %s",
        rpa_context_last_error(ctx));
  CHECK(memcmp(a.out, ab.out, sizeof(float) * S * HQ * D) == 0 &&
            memcmp(a.lse, ab.lse, sizeof(float) * S * HQ) == 0,
        "in place differs from out of place");
  free(o16), free(l16);
  run_free(&full), run_free(&a), run_free(&b), run_free(&ab), run_free(&ba), run_free(&e), run_free(&id);
}

/* NaN / inf: exactly the rows that meet them */
static void non_finite(void) {
  run full, a, b, m;
  run_alloc(&full), run_alloc(&a), run_alloc(&b), run_alloc(&m);
  CHECK(three_runs(&full, &a, &b, RPA_F32) == 0, "the three runs");
  a.lse[0 * HQ + 3] = NAN;       /* row (0, 3) */
  b.lse[1 * HQ + 0] = INFINITY;  /* row (1, 0) */
  a.out[(2 * HQ + 5) * D + 7] = INFINITY; /* row (2, 5), a has weight */
  /* row (3, 1): b empty, its NaN out ignored */
  b.lse[3 * HQ + 1] = -INFINITY;
  b.out[(3 * HQ + 1) * D + 2] = NAN;
  const rpa_attn_state sa = state_of(&a, RPA_F32), sb = state_of(&b, RPA_F32),
                       sm = state_of(&m, RPA_F32);
  CHECK(rpa_merge_states(ctx, S, HQ, D, &sa, &sb, &sm) == RPA_OK, "merge");
  for (int t = 0; t < S; t++)
    for (int h = 0; h < HQ; h++) {
      const int want_nan = (t == 0 && h == 3) || (t == 1 && h == 0) || (t == 2 && h == 5);
      int nans = isnan(m.lse[t * HQ + h]);
      for (int d = 0; d < D; d++) nans += isnan(m.out[(t * HQ + h) * D + d]);
      CHECK(nans == (want_nan ? D + 1 : 0), "row (%d, %d): %d NaN", t, h, nans);
    }
  /* the row whose empty state held NaN is the other state's row */
  CHECK(memcmp(m.out + (3 * HQ + 1) * D, a.out + (3 * HQ + 1) * D, sizeof(float) * D) == 0 &&
            m.lse[3 * HQ + 1] == a.lse[3 * HQ + 1],
        "an empty state's NaN leaked");
  run_free(&full), run_free(&a), run_free(&b), run_free(&m);
}

static void bad_arguments(void) {
  run a, b, m;
  run_alloc(&a), run_alloc(&b), run_alloc(&m);
  for (int i = 0; i < S * HQ; i++) a.lse[i] = b.lse[i] = 0.0f;
  for (int i = 0; i < S * HQ * D; i++) m.out[i] = 42.0f;
  rpa_attn_state sa = state_of(&a, RPA_F32), sb = state_of(&b, RPA_F32),
                 sm = state_of(&m, RPA_F32);
  struct {
    const char *name;
    rpa_status want;
    const char *says;
  } cases[] = {
      {"NULL ctx", RPA_NULL_POINTER, NULL},
      {"NULL a", RPA_NULL_POINTER, "a: NULL"},
      {"negative heads", RPA_INVALID_SHAPE, "num_heads"},
      {"fp8 dst", RPA_INVALID_DTYPE, "dst.out"},
      {"NULL b.lse", RPA_NULL_POINTER, "b.lse"},
      {"negative lse stride", RPA_INVALID_STRIDE, "dst.lse"},
      {"self-overlapping dst", RPA_INVALID_STRIDE, "dst.out"},
      {"dst over a, shifted", RPA_OVERLAP, "a.out"},
      {"dst.lse in b.out", RPA_OVERLAP, "b.out"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    rpa_attn_state x = sa, y = sb, z = sm;
    int32_t H = HQ;
    rpa_context *c = ctx;
    const rpa_attn_state *px = &x;
    switch (i) {
      case 0: c = NULL; break;
      case 1: px = NULL; break;
      case 2: H = -1; break;
      case 3: z.out.dtype = RPA_FP8_E4M3; break;
      case 4: y.lse = NULL; break;
      case 5: z.lse_head_stride = -1; break;
      case 6: z.out.head_stride = 1; break;
      case 7: z.out = x.out, z.out.data = (float *)x.out.data + 1; break;
      case 8: z.lse = y.out.data; break;
    }
    const rpa_status st = rpa_merge_states(c, S, H, D, px, &y, &z);
    CHECK(st == cases[i].want, "%s: status %d, want %d", cases[i].name, (int)st,
          (int)cases[i].want);
    if (cases[i].says)
      CHECK(strstr(rpa_context_last_error(ctx), cases[i].says) != NULL,
            "%s: message '%s' does not name %s", cases[i].name,
            rpa_context_last_error(ctx), cases[i].says);
  }
  int untouched = 1;
  for (int i = 0; i < S * HQ * D; i++) untouched &= m.out[i] == 42.0f;
  CHECK(untouched, "a failed merge wrote");
  /* an empty merge needs no data */
  rpa_attn_state none = {{NULL, RPA_F32, 0, 0}, NULL, 0, 0};
  CHECK(rpa_merge_states(ctx, 0, HQ, D, &none, &none, &none) == RPA_OK,
        "empty merge: %s", rpa_context_last_error(ctx));
  run_free(&a), run_free(&b), run_free(&m);
}

int main(void) {
  if (rpa_context_create(NULL, &ctx) != RPA_OK) return 1;
  TEST_CASE("merge equals the union, f32 cache", merge_equals_union(RPA_F32));
  TEST_CASE("merge equals the union, bf16 cache", merge_equals_union(RPA_BF16));
  TEST_CASE("symmetry, identity, in place, bf16 dst", algebra());
  TEST_CASE("NaN and infinities", non_finite());
  TEST_CASE("bad arguments", bad_arguments());
  rpa_context_destroy(ctx);
  return th_finish("test_merge");
}
