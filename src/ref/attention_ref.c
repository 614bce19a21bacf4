/* The reference backend: the contract written as plain loops. Slow on
   purpose; every fast kernel is tested against it. Float32 accumulation
   throughout; one thread. */
#include <math.h>

#include "../internal.h"

/* Element (token t, head h, dim d) of a [T, H, D] tensor. */
static int64_t tensor_index(const rpa_tensor *x, int64_t t, int64_t h) {
  return t * x->token_stride + h * x->head_stride;
}

/* Start of cache row (logical token c, kv head h) of sequence seq, for K
   (which = 0) or V (which = 1). */
static int64_t cache_index(const rpa_args *a, int32_t seq, int64_t c,
                           int64_t h, int which) {
  const rpa_slot s = rpa_slot_of(a, seq, c);
  return which == 0 ? rpa_k_offset(&a->cache, s, h)
                    : rpa_v_offset(&a->cache, s, h);
}

/* Fused cache update, defined as a plain copy: new token j of sequence i
   goes to logical position kv_len - q_len + j. Same dtype, so exact. */
static void write_cache(const rpa_args *a, const rpa_batch_info *info) {
  const size_t es = rpa_dtype_size(a->cache.dtype);
  for (int32_t i = 0; i < info->num_seqs; i++) {
    const int32_t q0 = a->cu_q_lens[i], q_len = a->cu_q_lens[i + 1] - q0;
    const int32_t kv_len = a->kv_lens[i];
    for (int32_t j = 0; j < q_len; j++) {
      const int64_t pos = (int64_t)kv_len - q_len + j;
      for (int32_t h = 0; h < a->num_kv_heads; h++) {
        char *kdst = (char *)a->cache.k + cache_index(a, i, pos, h, 0) * es;
        const char *ksrc = (const char *)a->k.data +
                           tensor_index(&a->k, q0 + j, h) * es;
        for (size_t b = 0; b < (size_t)a->head_dim * es; b++) kdst[b] = ksrc[b];
        if (info->latent) continue;
        char *vdst = (char *)a->cache.v + cache_index(a, i, pos, h, 1) * es;
        const char *vsrc = (const char *)a->v.data +
                           tensor_index(&a->v, q0 + j, h) * es;
        for (size_t b = 0; b < (size_t)info->head_dim_v * es; b++)
          vdst[b] = vsrc[b];
      }
    }
  }
}

/* Steps 2-4 of the contract for one (query, key) pair. A logit that is not
   finite before the soft cap (a NaN or an infinity in q or in the key)
   poisons the row: *poison becomes 1. */
static float logit(const rpa_args *a, const float *q, int32_t seq, int64_t c,
                   int32_t kvh, float scale, int *poison) {
  const void *kbase = a->cache.k;
  const int64_t k0 = cache_index(a, seq, c, kvh, 0);
  float s = 0.0f;
  for (int32_t d = 0; d < a->head_dim; d++)
    s += q[d] * rpa_load_f32(kbase, a->cache.dtype, k0 + d);
  s *= scale;
  if (!isfinite(s)) *poison = 1;
  if (a->soft_cap > 0.0f) s = a->soft_cap * tanhf(s / a->soft_cap);
  return s;
}

/* Whether a custom mask hides key c from new token j of sequence seq: a
   masked sequence's new token sees new token k (position prefix + k) only
   where its row of the mask says so. */
static int hidden(const rpa_args *a, int32_t seq, int32_t q_len,
                  int32_t kv_len, int32_t j, int64_t c) {
  const int64_t prefix = (int64_t)kv_len - q_len;
  return rpa_has_mask(a, seq) && c >= prefix &&
         !rpa_mask_bit(a, seq, q_len, j, (int32_t)(c - prefix));
}

rpa_status rpa_ref_attention(rpa_context *ctx, const rpa_args *a,
                             const rpa_batch_info *info) {
  const int32_t D = a->head_dim, Dv = info->head_dim_v, G = info->group;
  float *scratch = rpa_scratch(ctx, sizeof(float) * ((size_t)D + Dv));
  if (!scratch)
    return rpa_fail(ctx, RPA_OUT_OF_MEMORY, "scratch: %zu bytes",
                    sizeof(float) * ((size_t)D + Dv));
  float *q = scratch;       /* [D]  the query row, widened (and quantized) */
  float *acc = scratch + D; /* [Dv] sum of p * v */

  if (a->update_kv_cache) write_cache(a, info);

  const float q_scale = a->q_scale > 0.0f ? a->q_scale : 1.0f;
  const float scale = a->sm_scale * a->k_scale * q_scale;
  const void *vbase = info->latent ? a->cache.k : a->cache.v;

  for (int32_t i = 0; i < info->num_seqs; i++) {
    const int32_t q0 = a->cu_q_lens[i], q_len = a->cu_q_lens[i + 1] - q0;
    const int32_t kv_len = a->kv_lens[i];
    for (int32_t j = 0; j < q_len; j++) {
      const int64_t pos = (int64_t)kv_len - q_len + j;
      /* Visible keys [lo, hi). */
      int64_t lo = 0, hi = kv_len;
      if (a->causal) {
        hi = pos + 1;
        if (a->sliding_window > 0 && pos - a->sliding_window + 1 > 0)
          lo = pos - a->sliding_window + 1;
      }
      for (int32_t n = 0; n < a->num_q_heads; n++) {
        const int32_t kvh = n / G;
        const int64_t qi = tensor_index(&a->q, q0 + j, n);
        for (int32_t d = 0; d < D; d++) {
          const float x = rpa_load_f32(a->q.data, a->q.dtype, qi + d);
          q[d] = a->q_scale > 0.0f
                     ? rpa_quantize_q(x, a->q_scale, a->cache.dtype)
                     : x;
        }
        /* Pass 1: the maximum logit (the sink included). */
        int poison = 0;
        float m = a->sinks ? a->sinks[n] : -INFINITY;
        for (int64_t c = lo; c < hi; c++) {
          if (hidden(a, i, q_len, kv_len, j, c)) continue;
          const float s = logit(a, q, i, c, kvh, scale, &poison);
          if (s > m) m = s;
        }
        /* Pass 2: exponentials, their sum and the weighted values. */
        float l = a->sinks ? expf(a->sinks[n] - m) : 0.0f;
        for (int32_t d = 0; d < Dv; d++) acc[d] = 0.0f;
        for (int64_t c = lo; c < hi; c++) {
          if (hidden(a, i, q_len, kv_len, j, c)) continue;
          const float p = expf(logit(a, q, i, c, kvh, scale, &poison) - m);
          const int64_t v0 = cache_index(a, i, c, kvh, 1);
          l += p;
          for (int32_t d = 0; d < Dv; d++)
            acc[d] += p * rpa_load_f32(vbase, a->cache.dtype, v0 + d);
        }
        /* A NaN or an infinity the row met (in a logit, or in a value of a
           key it sees, which leaves acc non-finite) makes the whole row
           NaN, its lse too. */
        if (!isfinite(l)) poison = 1;
        for (int32_t d = 0; d < Dv; d++)
          if (!isfinite(acc[d])) poison = 1;
        const float inv = a->v_scale / l;
        const int64_t oi = tensor_index(&a->out, q0 + j, n);
        for (int32_t d = 0; d < Dv; d++)
          rpa_store_f32(a->out.data, a->out.dtype, oi + d,
                        poison ? NAN : acc[d] * inv);
        if (a->lse)
          a->lse[(int64_t)(q0 + j) * a->lse_token_stride +
                 (int64_t)n * a->lse_head_stride] = poison ? NAN : m + logf(l);
      }
    }
  }
  return RPA_OK;
}
