/* Bytes and FLOPs of one call; see counting.h for the definitions. */
#include "counting.h"

/* sum_{n=1}^{m} min(n, w): the keys seen by queries at positions 0 .. m-1
   under a window w (w = 0: no window, every earlier key). */
static int64_t window_prefix_sum(int64_t m, int64_t w) {
  if (w <= 0 || m <= w) return m * (m + 1) / 2;
  return w * (w + 1) / 2 + (m - w) * w;
}

int64_t bench_seq_pairs(int64_t q_len, int64_t kv_len, int causal,
                        int64_t window) {
  if (!causal) return q_len * kv_len;
  /* query j at pos = kv_len - q_len + j sees min(pos + 1, window) keys */
  const int64_t first = kv_len - q_len;
  return window_prefix_sum(kv_len, window) - window_prefix_sum(first, window);
}

int64_t bench_seq_kv_positions(int64_t q_len, int64_t kv_len, int causal,
                               int64_t window) {
  if (!causal || window <= 0) return kv_len;
  /* the first query (pos = kv_len - q_len) sees back to pos - window + 1;
     the last sees up to kv_len - 1 */
  int64_t lo = kv_len - q_len - window + 1;
  if (lo < 0) lo = 0;
  return kv_len - lo;
}

int bench_count_args(const rpa_args *a, bench_count *c) {
  *c = (bench_count){0};
  const int64_t Hq = a->num_q_heads, Hkv = a->num_kv_heads;
  const int64_t D = a->head_dim, Dv = a->head_dim_v ? a->head_dim_v : D;
  const int64_t qs = (int64_t)rpa_dtype_size(a->q.dtype);
  const int64_t os = (int64_t)rpa_dtype_size(a->out.dtype);
  const int64_t ks = (int64_t)rpa_dtype_size(a->cache.dtype);
  if (!qs || !os || !ks) return -1;
  const int causal = a->causal != 0;
  const int64_t window = causal ? a->sliding_window : 0;
  /* elements of one token's K/V for all KV heads; a latent cache holds one
     row per token whose first Dv elements are the values */
  const int64_t kv_row = a->cache.v ? Hkv * (D + Dv) : Hkv * D;

  int64_t tokens = 0;
  for (int32_t i = 0; i < a->num_seqs; i++) {
    const int64_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    const int64_t kv_len = a->kv_lens[i];
    if (q_len < 1 || kv_len < q_len) return -1;
    tokens += q_len;
    if (a->mask && a->mask_offsets[i] >= 0) {
      /* a tree: each token sees the prefix (window applied) and the new
         tokens its mask row marks */
      const int64_t prefix = kv_len - q_len;
      for (int64_t j = 0; j < q_len; j++) {
        const int64_t pos = prefix + j;
        const int64_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        c->pairs += prefix > lo ? prefix - lo : 0;
        for (int64_t k = 0; k <= j; k++) {
          const int64_t x = a->mask_offsets[i] + j * q_len + k;
          c->pairs += prefix + k >= lo && ((a->mask[x / 8] >> (x % 8)) & 1);
        }
      }
    } else {
      c->pairs += bench_seq_pairs(q_len, kv_len, causal, window);
    }
    c->kv_positions += bench_seq_kv_positions(q_len, kv_len, causal, window);
  }
  /* A shared prefix moves once per call: each member's count of it goes,
     its group's one count comes (members see all of it: no window). */
  for (int32_t g = 0; g < a->num_shared && !window; g++) {
    int members = 0;
    for (int32_t i = 0; i < a->num_seqs; i++) members += a->shared_group[i] == g;
    if (members > 1) c->kv_positions -= (int64_t)(members - 1) * a->shared_len[g];
  }
  c->kv_read_bytes = c->kv_positions * kv_row * ks;
  c->q_bytes = tokens * Hq * D * qs;
  c->out_bytes = tokens * Hq * Dv * os;
  if (a->lse) c->out_bytes += tokens * Hq * (int64_t)sizeof(float);
  c->kv_write_bytes = a->update_kv_cache ? tokens * kv_row * ks : 0;
  c->sink_bytes = a->sinks ? Hq * (int64_t)sizeof(float) : 0;
  c->bytes = c->kv_read_bytes + c->q_bytes + c->out_bytes +
             c->kv_write_bytes + c->sink_bytes;
  c->flops = 2 * (D + Dv) * Hq * c->pairs;
  return 0;
}

bench_peak_kind bench_peak_for(rpa_dtype q_dtype, rpa_dtype kv_dtype,
                               int cpu_has_bf16_dot) {
  const int kv_widens_to_bf16 = kv_dtype == RPA_BF16 ||
                                kv_dtype == RPA_FP8_E4M3 ||
                                kv_dtype == RPA_FP8_E5M2;
  if (cpu_has_bf16_dot && q_dtype == RPA_BF16 && kv_widens_to_bf16)
    return BENCH_PEAK_BF16_DOT;
  return BENCH_PEAK_F32_FMA;
}

double bench_roofline_s(int64_t bytes, int64_t flops, double bytes_per_s,
                        double flops_per_s) {
  const double t_mem = bytes_per_s > 0 ? (double)bytes / bytes_per_s : 0.0;
  const double t_cmp = flops_per_s > 0 ? (double)flops / flops_per_s : 0.0;
  return t_mem > t_cmp ? t_mem : t_cmp;
}
