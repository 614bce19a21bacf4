/* What one rpa_attention call must move and compute, as defined below (the
   README states it for users), and the roofline time that follows.

   Bytes that must move:
     every visible K/V position read once: the union of the keys any query of
     the sequence sees (a sliding window trims it), for all KV heads, K and V
     rows (a latent cache, cache.v == NULL, reads only the K row), wherever
     the kernel takes them from (the cache, or the new k / v inputs);
     + q read, + out written (and lse when requested), + the sink array;
     + the new K/V written into the cache (none in KV-share mode).
     Not counted: re-reads, page tables, padding rows.
   Useful FLOPs:
     2 * (D + Dv) * Hq * visible (query, key) pairs, i.e. 4 * D * Hq * pairs
     when Dv = D (QK^T and PV, 2 FLOPs per multiply-add). Masked pairs do not
     count: causal prefill counts the triangle only. Sinks add none. */
#ifndef RPA_BENCH_COUNTING_H
#define RPA_BENCH_COUNTING_H

#include <stdint.h>

#include "rpa.h"

typedef struct bench_count {
  int64_t pairs;          /* visible (query, key) pairs, per query head */
  int64_t kv_positions;   /* visible K/V positions (token slots), summed */
  int64_t kv_read_bytes;  /* kv_positions * Hkv * (D + Dv) * kv size */
  int64_t q_bytes;        /* tokens * Hq * D * q size */
  int64_t out_bytes;      /* tokens * Hq * Dv * out size, + lse */
  int64_t kv_write_bytes; /* new tokens' K/V into the cache (0: KV-share) */
  int64_t sink_bytes;     /* Hq float32 sinks, when given */
  int64_t bytes;          /* the sum of the five above */
  int64_t flops;          /* 2 * (D + Dv) * Hq * pairs */
} bench_count;

/* Counts the call args describes; reads only shapes, dtypes, lengths and
   flags (no tensor data). Returns 0, or -1 when the lengths are invalid
   (q_len < 1, kv_len < q_len) or a dtype is unknown. */
int bench_count_args(const rpa_args *args, bench_count *out);

/* Visible (query, key) pairs of one sequence: its new tokens sit at
   positions kv_len - q_len .. kv_len - 1; causal (window 0: none) or not. */
int64_t bench_seq_pairs(int64_t q_len, int64_t kv_len, int causal,
                        int64_t window);
/* Visible K/V positions of one sequence: the union over its queries. */
int64_t bench_seq_kv_positions(int64_t q_len, int64_t kv_len, int causal,
                               int64_t window);

/* Whether a case's products may run on vdpbf16ps: the CPU has it and both
   operands are bf16 or widen to bf16 exactly (bf16 q with bf16 or fp8 KV).
   The report then takes the higher of that peak and the float32 FMA peak
   (bench_result_finish); float32 FMA alone otherwise. */
typedef enum bench_peak_kind {
  BENCH_PEAK_F32_FMA = 0,
  BENCH_PEAK_BF16_DOT = 1,
} bench_peak_kind;

bench_peak_kind bench_peak_for(rpa_dtype q_dtype, rpa_dtype kv_dtype,
                               int cpu_has_bf16_dot);

/* Roofline time in seconds: max(bytes / bandwidth, flops / peak), with
   bandwidth in bytes/s and peak in FLOP/s. */
double bench_roofline_s(int64_t bytes, int64_t flops, double bytes_per_s,
                        double flops_per_s);

#endif
