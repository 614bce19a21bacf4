/* The benchmark's counting of bytes and FLOPs (tools/bench/counting.c),
   against batches counted by hand from the definitions in counting.h. */
#include <math.h>
#include <stdint.h>

#include "counting.h"
#include "harness.h"

/* Sequences given as (q_len, kv_len) pairs; shapes and dtypes set after. */
typedef struct hand_batch {
  rpa_args a;
  int32_t cu[8], kv[8];
  float sinks[64];
  float lse[1];
  char v_rows; /* any address: marks a cache with separate V rows */
} hand_batch;

static void hand_make(hand_batch *h, int n, const int32_t *q_lens,
                      const int32_t *kv_lens) {
  memset(h, 0, sizeof *h);
  h->a = rpa_args_default();
  h->a.num_seqs = n;
  for (int i = 0; i < n; i++) {
    h->cu[i + 1] = h->cu[i] + q_lens[i];
    h->kv[i] = kv_lens[i];
  }
  h->a.cu_q_lens = h->cu;
  h->a.kv_lens = h->kv;
  h->a.num_tokens = h->cu[n];
  /* Hq 4, Hkv 1, D 64; q and out f32, KV bf16 */
  h->a.num_q_heads = 4;
  h->a.num_kv_heads = 1;
  h->a.head_dim = 64;
  h->a.q.dtype = h->a.out.dtype = RPA_F32;
  h->a.cache.dtype = RPA_BF16;
  h->a.cache.v = &h->v_rows;
}

static bench_count count_of(const hand_batch *h) {
  bench_count c;
  CHECK(bench_count_args(&h->a, &c) == 0, "count failed");
  return c;
}

/* One decode token over 100 positions, every term by hand. */
static void one_decode(void) {
  hand_batch h;
  hand_make(&h, 1, (int32_t[]){1}, (int32_t[]){100});
  const bench_count c = count_of(&h);
  CHECK(c.pairs == 100, "pairs %lld", (long long)c.pairs);
  CHECK(c.flops == 4 * 64 * 4 * 100, "flops %lld", (long long)c.flops);
  CHECK(c.kv_positions == 100, "positions %lld", (long long)c.kv_positions);
  /* 100 positions x 1 KV head x (K 64 + V 64) x 2 bytes */
  CHECK(c.kv_read_bytes == 25600, "kv read %lld", (long long)c.kv_read_bytes);
  CHECK(c.q_bytes == 1 * 4 * 64 * 4, "q %lld", (long long)c.q_bytes);
  CHECK(c.out_bytes == 1 * 4 * 64 * 4, "out %lld", (long long)c.out_bytes);
  CHECK(c.kv_write_bytes == 1 * 128 * 2, "kv write %lld",
        (long long)c.kv_write_bytes);
  CHECK(c.sink_bytes == 0, "sinks %lld", (long long)c.sink_bytes);
  CHECK(c.bytes == 25600 + 1024 + 1024 + 256, "bytes %lld", (long long)c.bytes);
}

/* Causal prefill counts the triangle only: 8 new tokens from position 0
   see 1 + 2 + ... + 8 = 36 keys; after a prefix of 6, 4 new tokens see
   7 + 8 + 9 + 10 = 34. Every position is read once either way. */
static void causal_triangle(void) {
  hand_batch h;
  hand_make(&h, 1, (int32_t[]){8}, (int32_t[]){8});
  bench_count c = count_of(&h);
  CHECK(c.pairs == 36, "fresh chunk pairs %lld", (long long)c.pairs);
  CHECK(c.flops == 4 * 64 * 4 * 36, "flops %lld", (long long)c.flops);
  CHECK(c.kv_positions == 8, "positions %lld", (long long)c.kv_positions);
  CHECK(c.q_bytes == 8 * 4 * 64 * 4, "q %lld", (long long)c.q_bytes);
  CHECK(c.kv_write_bytes == 8 * 128 * 2, "kv write %lld",
        (long long)c.kv_write_bytes);

  hand_make(&h, 1, (int32_t[]){4}, (int32_t[]){10});
  c = count_of(&h);
  CHECK(c.pairs == 34, "chunk after prefix pairs %lld", (long long)c.pairs);
  CHECK(c.kv_positions == 10, "positions %lld", (long long)c.kv_positions);
  CHECK(bench_seq_pairs(4, 10, 1, 0) == 34, "helper");

  /* non-causal: every query sees all 10 keys */
  h.a.causal = 0;
  c = count_of(&h);
  CHECK(c.pairs == 40, "non-causal pairs %lld", (long long)c.pairs);
  CHECK(c.kv_positions == 10, "positions %lld", (long long)c.kv_positions);

  /* a large chunk, against the closed form n (n + 1) / 2 */
  CHECK(bench_seq_pairs(2048, 2048, 1, 0) == 2048LL * 2049 / 2, "2048 chunk");
  CHECK(bench_seq_pairs(512, 2560, 1, 0) == 512LL * 2048 + 512LL * 513 / 2,
        "512 after 2048");
}

/* A sliding window W keeps keys with pos - c < W: it trims both the pairs
   and the positions read. */
static void windows(void) {
  hand_batch h;
  /* 4 new tokens at positions 6..9, W 3: each sees 3 keys; the union is
     positions 4..9 */
  hand_make(&h, 1, (int32_t[]){4}, (int32_t[]){10});
  h.a.sliding_window = 3;
  bench_count c = count_of(&h);
  CHECK(c.pairs == 12, "pairs %lld", (long long)c.pairs);
  CHECK(c.kv_positions == 6, "positions %lld", (long long)c.kv_positions);
  CHECK(c.kv_read_bytes == 6 * 128 * 2, "kv read %lld",
        (long long)c.kv_read_bytes);

  /* from position 0, W 3: 1, 2, 3, 3, 3 keys; all 5 positions read */
  hand_make(&h, 1, (int32_t[]){5}, (int32_t[]){5});
  h.a.sliding_window = 3;
  c = count_of(&h);
  CHECK(c.pairs == 12, "pairs %lld", (long long)c.pairs);
  CHECK(c.kv_positions == 5, "positions %lld", (long long)c.kv_positions);

  /* a decode at position 16383 with W 4096 reads 4096 positions */
  hand_make(&h, 1, (int32_t[]){1}, (int32_t[]){16384});
  h.a.sliding_window = 4096;
  c = count_of(&h);
  CHECK(c.pairs == 4096 && c.kv_positions == 4096, "decode window");

  /* a window wider than the sequence changes nothing */
  hand_make(&h, 1, (int32_t[]){4}, (int32_t[]){10});
  h.a.sliding_window = 1000;
  c = count_of(&h);
  CHECK(c.pairs == 34 && c.kv_positions == 10, "wide window");
}

/* Sinks add their array (Hq floats) and nothing else: no FLOPs. */
static void sinks(void) {
  hand_batch h;
  hand_make(&h, 1, (int32_t[]){4}, (int32_t[]){10});
  const bench_count plain = count_of(&h);
  h.a.sinks = h.sinks;
  const bench_count with = count_of(&h);
  CHECK(with.flops == plain.flops, "sinks add FLOPs");
  CHECK(with.sink_bytes == 4 * 4, "sink bytes %lld", (long long)with.sink_bytes);
  CHECK(with.bytes == plain.bytes + 16, "bytes %lld vs %lld",
        (long long)with.bytes, (long long)plain.bytes);
}

/* KV-share mode writes no K/V; the reads stay (now all from the cache). */
static void kv_share(void) {
  hand_batch h;
  hand_make(&h, 1, (int32_t[]){4}, (int32_t[]){10});
  const bench_count update = count_of(&h);
  h.a.update_kv_cache = 0;
  const bench_count share = count_of(&h);
  CHECK(share.kv_write_bytes == 0, "kv write %lld",
        (long long)share.kv_write_bytes);
  CHECK(share.kv_read_bytes == update.kv_read_bytes, "reads changed");
  CHECK(share.bytes == update.bytes - 4 * 128 * 2, "bytes %lld",
        (long long)share.bytes);
  CHECK(share.flops == update.flops, "flops changed");
}

/* A mixed batch is the sum of its sequences; dtypes scale each term. */
static void mixed_and_dtypes(void) {
  hand_batch h;
  /* decodes at kv 5 and 7, a fresh chunk of 3: pairs 5 + 7 + 6 */
  hand_make(&h, 3, (int32_t[]){1, 1, 3}, (int32_t[]){5, 7, 3});
  h.a.q.dtype = RPA_BF16;
  h.a.out.dtype = RPA_F16;
  h.a.cache.dtype = RPA_FP8_E4M3;
  const bench_count c = count_of(&h);
  CHECK(c.pairs == 18, "pairs %lld", (long long)c.pairs);
  CHECK(c.kv_positions == 15, "positions %lld", (long long)c.kv_positions);
  CHECK(c.kv_read_bytes == 15 * 128 * 1, "kv read %lld",
        (long long)c.kv_read_bytes);
  CHECK(c.q_bytes == 5 * 4 * 64 * 2, "q %lld", (long long)c.q_bytes);
  CHECK(c.out_bytes == 5 * 4 * 64 * 2, "out %lld", (long long)c.out_bytes);
  CHECK(c.kv_write_bytes == 5 * 128 * 1, "kv write %lld",
        (long long)c.kv_write_bytes);
  CHECK(c.flops == 4LL * 64 * 4 * 18, "flops %lld", (long long)c.flops);
}

/* GQA: KV bytes scale with Hkv, FLOPs with Hq. Dv != D: 2 (D + Dv) per
   pair and head. A latent cache reads one row of D per token. The lse is
   an output. */
static void heads_and_layouts(void) {
  hand_batch h;
  hand_make(&h, 1, (int32_t[]){1}, (int32_t[]){100});
  h.a.num_q_heads = 32;
  h.a.num_kv_heads = 8;
  h.a.head_dim = 128;
  bench_count c = count_of(&h);
  CHECK(c.kv_read_bytes == 100LL * 8 * 256 * 2, "gqa kv read %lld",
        (long long)c.kv_read_bytes);
  CHECK(c.flops == 4LL * 128 * 32 * 100, "gqa flops %lld", (long long)c.flops);

  hand_make(&h, 1, (int32_t[]){1}, (int32_t[]){100});
  h.a.num_kv_heads = 1;
  h.a.head_dim = 96;
  h.a.head_dim_v = 64;
  h.a.cache.v = NULL; /* latent: values are the first 64 of each 96 row */
  c = count_of(&h);
  CHECK(c.flops == 2LL * (96 + 64) * 4 * 100, "mla flops %lld",
        (long long)c.flops);
  CHECK(c.kv_read_bytes == 100LL * 96 * 2, "latent read %lld",
        (long long)c.kv_read_bytes);
  CHECK(c.kv_write_bytes == 96 * 2, "latent write %lld",
        (long long)c.kv_write_bytes);
  CHECK(c.out_bytes == 4 * 64 * 4, "out uses Dv: %lld", (long long)c.out_bytes);

  hand_make(&h, 1, (int32_t[]){2}, (int32_t[]){2});
  const int64_t without = count_of(&h).out_bytes;
  h.a.lse = h.lse;
  CHECK(count_of(&h).out_bytes == without + 2 * 4 * 4, "lse bytes");
}

/* Bad lengths are refused rather than counted. */
static void bad_lengths(void) {
  hand_batch h;
  bench_count c;
  hand_make(&h, 1, (int32_t[]){4}, (int32_t[]){3});
  CHECK(bench_count_args(&h.a, &c) == -1, "kv_len < q_len accepted");
  hand_make(&h, 1, (int32_t[]){0}, (int32_t[]){3});
  CHECK(bench_count_args(&h.a, &c) == -1, "q_len 0 accepted");
}

/* Which compute peak applies, and the roofline time. */
static void peaks_and_roofline(void) {
  CHECK(bench_peak_for(RPA_BF16, RPA_BF16, 1) == BENCH_PEAK_BF16_DOT, "bf16");
  CHECK(bench_peak_for(RPA_BF16, RPA_FP8_E4M3, 1) == BENCH_PEAK_BF16_DOT, "e4m3");
  CHECK(bench_peak_for(RPA_BF16, RPA_FP8_E5M2, 1) == BENCH_PEAK_BF16_DOT, "e5m2");
  CHECK(bench_peak_for(RPA_BF16, RPA_F16, 1) == BENCH_PEAK_F32_FMA, "f16 kv");
  CHECK(bench_peak_for(RPA_F32, RPA_BF16, 1) == BENCH_PEAK_F32_FMA, "f32 q");
  CHECK(bench_peak_for(RPA_BF16, RPA_BF16, 0) == BENCH_PEAK_F32_FMA, "no bf16");
  /* 1 GB at 50 GB/s = 20 ms beats 1 GFLOP at 100 GFLOP/s = 10 ms */
  CHECK(fabs(bench_roofline_s(1000000000, 1000000000, 50e9, 100e9) - 0.02) < 1e-12,
        "memory-bound roofline");
  CHECK(fabs(bench_roofline_s(1000000, 4000000000, 50e9, 100e9) - 0.04) < 1e-12,
        "compute-bound roofline");
}

/* A tree mask counts the pairs its bits let through; a shared prefix is
   read once for its group. */
static void trees_and_shared(void) {
  hand_batch h;
  /* 3 new tokens after 5 cached: a chain would see 6 + 7 + 8 = 21 keys;
     the tree {0}, {0, 1}, {0, 2} sees 6 + 7 + 7 = 20 */
  hand_make(&h, 1, (int32_t[]){3}, (int32_t[]){8});
  const int64_t offs[1] = {0};
  /* bits j * 3 + k: (0,0) (1,0) (1,1) (2,0) (2,2) = 0, 3, 4, 6, 8 */
  const uint8_t bits[2] = {(1u << 0) | (1u << 3) | (1u << 4) | (1u << 6), 1u};
  h.a.mask = bits;
  h.a.mask_offsets = offs;
  h.a.mask_bits = 9;
  bench_count c = count_of(&h);
  CHECK(c.pairs == 20, "tree pairs %lld", (long long)c.pairs);
  /* three decodes over 40, 50, 60 tokens, the first 32 shared by all: 150
     positions, 64 of them counted once */
  hand_make(&h, 3, (int32_t[]){1, 1, 1}, (int32_t[]){40, 50, 60});
  const int32_t len[1] = {32}, group[3] = {0, 0, 0};
  h.a.num_shared = 1;
  h.a.shared_len = len;
  h.a.shared_group = group;
  c = count_of(&h);
  CHECK(c.kv_positions == 150 - 64, "shared positions %lld",
        (long long)c.kv_positions);
  CHECK(c.pairs == 150, "shared pairs %lld (every pair is still computed)",
        (long long)c.pairs);
}

int main(void) {
  TEST_CASE("one decode", one_decode());
  TEST_CASE("trees and shared prefixes", trees_and_shared());
  TEST_CASE("causal triangle", causal_triangle());
  TEST_CASE("sliding windows", windows());
  TEST_CASE("sinks", sinks());
  TEST_CASE("KV-share mode", kv_share());
  TEST_CASE("mixed batch and dtypes", mixed_and_dtypes());
  TEST_CASE("heads, Dv, latent cache, lse", heads_and_layouts());
  TEST_CASE("bad lengths", bad_lengths());
  TEST_CASE("peaks and roofline", peaks_and_roofline());
  return th_finish("test_counting");
}
