/* rpa_merge_states: two partial attention results over disjoint key sets
   into the result over their union (docs/contract.md, section 16), with
   the weights the engine merges its partial states by (state.h), here on
   normalised rows and their log-sum-exp. One pass, one thread: it reads
   and writes each element once. */
#include <math.h>

#include "convert.h"
#include "internal.h"
#include "state.h"

static float lse_at(const rpa_attn_state *s, int64_t t, int64_t h) {
  return s->lse[t * s->lse_token_stride + h * s->lse_head_stride];
}

static int64_t row_at(const rpa_attn_state *s, int64_t t, int64_t h) {
  return t * s->out.token_stride + h * s->out.head_stride;
}

/* The merged row, in float32, into dst (which may be a's or b's row). */
static void merge_row(const rpa_attn_state *a, const rpa_attn_state *b,
                      const rpa_attn_state *dst, int64_t t, int64_t h,
                      int32_t D) {
  const float sa = lse_at(a, t, h), sb = lse_at(b, t, h);
  const int64_t ra = row_at(a, t, h), rb = row_at(b, t, h),
                rd = row_at(dst, t, h);
  float *dl = dst->lse + t * dst->lse_token_stride + h * dst->lse_head_stride;
  const float m = sa > sb ? sa : sb;
  int bad = isnan(sa) || isnan(sb) || m == INFINITY;
  if (!bad && m == -INFINITY) { /* both key sets empty */
    for (int32_t d = 0; d < D; d++) rpa_store_f32(dst->out.data, dst->out.dtype, rd + d, 0.0f);
    *dl = -INFINITY;
    return;
  }
  float fa = 0.0f, fb = 0.0f, w = 0.0f;
  if (!bad) { /* a normalised state is one with l = 1, or 0 when empty */
    float wa, wb;
    rpa_merge_weights(sa, sa == -INFINITY ? 0.0f : 1.0f, sb,
                      sb == -INFINITY ? 0.0f : 1.0f, &wa, &wb);
    w = wa + wb;
    fa = wa / w;
    fb = wb / w;
  }
  /* One pass: each element read before its slot is written (dst may be a
     or b). A state with weight that holds a non-finite element poisons the
     row, which is then written again as NaN; a state without weight (lse
     -inf) is not read. Both terms always, in the same order, so a and b
     swap bitwise. */
  for (int32_t d = 0; d < D && !bad; d++) {
    const float va = fa != 0.0f ? rpa_load_f32(a->out.data, a->out.dtype, ra + d) : 0.0f;
    const float vb = fb != 0.0f ? rpa_load_f32(b->out.data, b->out.dtype, rb + d) : 0.0f;
    bad = !isfinite(va) || !isfinite(vb);
    rpa_store_f32(dst->out.data, dst->out.dtype, rd + d, va * fa + vb * fb);
  }
  if (bad) {
    for (int32_t d = 0; d < D; d++) rpa_store_f32(dst->out.data, dst->out.dtype, rd + d, NAN);
    *dl = NAN;
    return;
  }
  *dl = m + logf(w);
}

rpa_status rpa_merge_states(rpa_context *ctx, int32_t num_tokens,
                            int32_t num_heads, int32_t head_dim,
                            const rpa_attn_state *a, const rpa_attn_state *b,
                            const rpa_attn_state *dst) {
  if (!ctx) return RPA_NULL_POINTER;
  const rpa_status st =
      rpa_validate_merge(ctx, num_tokens, num_heads, head_dim, a, b, dst);
  if (st != RPA_OK) return st;
  for (int64_t t = 0; t < num_tokens; t++)
    for (int64_t h = 0; h < num_heads; h++) merge_row(a, b, dst, t, h, head_dim);
  return RPA_OK;
}
