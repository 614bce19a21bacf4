/* The public call: status strings, default arguments, validate -> the
   context's backend, and upstream's v3 convenience call. The context lives
   in context.c, the backends in registry.c. */
#include <string.h>

#include "internal.h"

const char *rpa_status_string(rpa_status status) {
  switch (status) {
#define RPA_STATUS_STRING_(name, code, text) \
  case RPA_##name:                           \
    return text;
    RPA_STATUS_MAP(RPA_STATUS_STRING_)
#undef RPA_STATUS_STRING_
  }
  return "unknown status";
}

/* ---- the call ---------------------------------------------------------- */

rpa_args rpa_args_default(void) {
  rpa_args a;
  memset(&a, 0, sizeof a);
  a.sm_scale = 1.0f;
  a.k_scale = 1.0f;
  a.v_scale = 1.0f;
  a.causal = 1;
  a.update_kv_cache = 1;
  return a;
}

rpa_status rpa_validate(rpa_context *ctx, const rpa_args *args) {
  if (!ctx) return RPA_NULL_POINTER;
  ctx->error[0] = '\0';
  rpa_batch_info info;
  return rpa_validate_args(ctx, args, &info);
}

rpa_status rpa_attention(rpa_context *ctx, const rpa_args *args) {
  if (!ctx) return RPA_NULL_POINTER;
  ctx->error[0] = '\0';
  rpa_batch_info info;
  rpa_status st = rpa_validate_args(ctx, args, &info);
  if (st != RPA_OK) return st;
  if (info.num_seqs == 0) return RPA_OK;
  return ctx->backend->attention(ctx, args, &info);
}

/* ---- upstream v3 convenience -------------------------------------------- */

rpa_v3_options rpa_v3_options_default(void) {
  rpa_v3_options o;
  memset(&o, 0, sizeof o);
  o.sm_scale = 1.0f;
  o.use_causal_mask = 1;
  o.update_kv_cache = 1;
  return o;
}

rpa_status rpa_ragged_paged_attention_v3(
    rpa_context *ctx, const void *queries, const void *keys,
    const void *values, void *kv_cache, const int32_t *kv_lens,
    const int32_t *page_indices, const int32_t *cu_q_lens,
    const int32_t *distribution, int32_t num_tokens, int32_t num_q_heads,
    int32_t num_kv_heads, int32_t head_dim, int32_t num_pages,
    int32_t page_size, int32_t num_seqs, int32_t pages_per_seq,
    rpa_dtype q_dtype, rpa_dtype kv_dtype, const rpa_v3_options *opts,
    void *out) {
  if (!ctx) return RPA_NULL_POINTER;
  const rpa_v3_options o = opts ? *opts : rpa_v3_options_default();
  rpa_args a = rpa_args_default();
  a.num_tokens = num_tokens;
  a.num_q_heads = num_q_heads;
  a.num_kv_heads = num_kv_heads;
  a.head_dim = head_dim;
  const int64_t D = head_dim, Hq = num_q_heads, Hkv = num_kv_heads;
  a.q = (rpa_tensor){(void *)queries, q_dtype, Hq * D, D};
  a.out = (rpa_tensor){out, q_dtype, Hq * D, D};
  a.k = (rpa_tensor){(void *)keys, kv_dtype, Hkv * D, D};
  a.v = (rpa_tensor){(void *)values, kv_dtype, Hkv * D, D};
  /* Combined cache [pages, page_size, 2*Hkv, D]: K of head h is row 2h.
     (NULL would read as a latent cache, so it is refused here.) */
  if (!kv_cache) return rpa_fail(ctx, RPA_NULL_POINTER, "kv_cache: NULL");
  a.cache.k = kv_cache;
  a.cache.v =
      (char *)kv_cache + (D > 0 ? D : 0) * (int64_t)rpa_dtype_size(kv_dtype);
  a.cache.dtype = kv_dtype;
  a.cache.num_pages = num_pages;
  a.cache.page_size = page_size;
  /* Sizes that are not positive are refused by validation; until then
     they give stride 0. 2 * Hkv * D fits int64, times page_size may not. */
  const int64_t slot = Hkv > 0 && D > 0 ? 2 * Hkv * D : 0;
  if (slot > 0 && page_size > INT64_MAX / slot)
    return rpa_fail(ctx, RPA_OVERFLOW,
                    "kv_cache: the page stride page_size * 2 * num_kv_heads "
                    "* head_dim = %d * 2 * %d * %d does not fit int64",
                    (int)page_size, (int)num_kv_heads, (int)head_dim);
  a.cache.k_page_stride = a.cache.v_page_stride =
      page_size > 0 ? (int64_t)page_size * slot : 0;
  a.cache.k_slot_stride = a.cache.v_slot_stride = slot;
  a.cache.k_head_stride = a.cache.v_head_stride = 2 * D;
  a.num_seqs = num_seqs;
  a.cu_q_lens = cu_q_lens;
  a.kv_lens = kv_lens;
  a.page_indices = page_indices;
  a.pages_per_seq = pages_per_seq;
  a.distribution = distribution;
  a.sm_scale = o.sm_scale;
  a.sliding_window = o.sliding_window;
  a.soft_cap = o.soft_cap;
  a.q_scale = o.q_scale;
  a.k_scale = o.k_scale != 0.0f ? o.k_scale : 1.0f;
  a.v_scale = o.v_scale != 0.0f ? o.v_scale : 1.0f;
  a.causal = o.use_causal_mask;
  a.update_kv_cache = o.update_kv_cache;
  a.sinks = o.attention_sink;
  return rpa_attention(ctx, &a);
}
