/* One serving step through rpa: one layer's attention for a batch that
   mixes a decode token and a prefill chunk, over a paged bf16 cache, with
   the new tokens' K/V written into their pages by the same call.

   The batch (Llama-3-8B's heads: 32 query heads over 8 KV heads of 128):
     sequence 0: a decode, 1 new token after 39 cached (kv_len 40, 3 pages);
     sequence 1: a prefill chunk, 8 new tokens after 8 cached (kv_len 16).
   The cache is upstream's combined layout [pages][page_size][2 * Hkv][D]:
   K of KV head h is row 2h of a slot, V row 2h + 1.

   It prints one output row and where the new tokens landed, and checks
   every output row against a plain double-precision loop. Exits 0 when
   everything matches, 1 otherwise.

   Build: with CMake in this repository (target example_serving_step), or
   against the installed package:
     cc -std=c11 -O2 examples/serving_step.c $(pkg-config --cflags --libs rpa) -lm */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <rpa.h>

enum { HQ = 32, HKV = 8, G = HQ / HKV, D = 128 }; /* heads, group, head dim */
enum { PAGES = 10, PAGE = 16, PPS = 3 };         /* pages, slots, per seq */
enum { SEQS = 2, T = 9 };                        /* sequences, new tokens */

static const int32_t cu_q_lens[SEQS + 1] = {0, 1, 9}; /* rows of each seq */
static const int32_t kv_lens[SEQS] = {40, 16};        /* cached + new */
/* PPS entries per sequence; only the first ceil(kv_len / PAGE) are read,
   the rest (sequence 1's two zeros) is padding. */
static const int32_t page_indices[SEQS * PPS] = {7, 2, 9, 4, 0, 0};

static uint16_t cache[PAGES][PAGE][2 * HKV][D];     /* bf16 codes */
static uint16_t q[T][HQ][D], k[T][HKV][D], v[T][HKV][D], out[T][HQ][D];

/* Deterministic values in [-1, 1), as bf16. */
static uint32_t seed = 12345;
static uint16_t next_bf16(void) {
  seed = seed * 1664525u + 1013904223u;
  return rpa_f32_to_bf16((float)(seed >> 8) / 8388608.0f - 1.0f);
}
static void fill(uint16_t *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = next_bf16();
}

/* The cache slot of position pos of sequence s. */
static uint16_t (*slot_of(int s, int pos))[D] {
  return cache[page_indices[s * PPS + pos / PAGE]][pos % PAGE];
}

/* Query row (token t of sequence s, query head n) over keys 0..pos, read
   from the cache after the call, in double precision; returns the largest
   difference from rpa's output row. */
static double check_row(int s, int t, int n, int pos) {
  const int h = n / G; /* the KV head of query head n */
  double w[PPS * PAGE], sum = 0.0, mx = -INFINITY, diff = 0.0;
  for (int c = 0; c <= pos; c++) {
    double dot = 0.0;
    for (int d = 0; d < D; d++)
      dot += (double)rpa_bf16_to_f32(q[t][n][d]) *
             (double)rpa_bf16_to_f32(slot_of(s, c)[2 * h][d]);
    w[c] = dot / sqrt((double)D);
    if (w[c] > mx) mx = w[c];
  }
  for (int c = 0; c <= pos; c++) sum += (w[c] = exp(w[c] - mx));
  for (int d = 0; d < D; d++) {
    double o = 0.0;
    for (int c = 0; c <= pos; c++)
      o += w[c] * (double)rpa_bf16_to_f32(slot_of(s, c)[2 * h + 1][d]);
    const double e = fabs(o / sum - (double)rpa_bf16_to_f32(out[t][n][d]));
    if (e > diff) diff = e;
  }
  return diff;
}

int main(void) {
  /* The cached prefix (and, until the call, stale slots) and the step's
     new tokens: queries, keys and values as the model's projections (with
     RoPE applied) would give them. */
  fill(&cache[0][0][0][0], sizeof cache / sizeof(uint16_t));
  fill(&q[0][0][0], sizeof q / sizeof(uint16_t));
  fill(&k[0][0][0], sizeof k / sizeof(uint16_t));
  fill(&v[0][0][0], sizeof v / sizeof(uint16_t));

  rpa_context *ctx = NULL;
  rpa_status st = rpa_context_create(NULL, &ctx); /* best set, all CPUs */
  if (st != RPA_OK) {
    fprintf(stderr, "rpa_context_create: %s\n", rpa_status_string(st));
    return 1;
  }

  rpa_args a = rpa_args_default(); /* causal, fused cache write on */
  a.num_tokens = T;
  a.num_q_heads = HQ;
  a.num_kv_heads = HKV;
  a.head_dim = D;
  a.q = (rpa_tensor){q, RPA_BF16, HQ * D, D}; /* data, dtype, strides */
  a.k = (rpa_tensor){k, RPA_BF16, HKV * D, D};
  a.v = (rpa_tensor){v, RPA_BF16, HKV * D, D};
  a.out = (rpa_tensor){out, RPA_BF16, HQ * D, D};
  a.cache.k = &cache[0][0][0][0]; /* K of head h: row 2h */
  a.cache.v = &cache[0][0][1][0]; /* V of head h: row 2h + 1 */
  a.cache.dtype = RPA_BF16;
  a.cache.num_pages = PAGES;
  a.cache.page_size = PAGE;
  a.cache.k_page_stride = a.cache.v_page_stride = PAGE * 2 * HKV * D;
  a.cache.k_slot_stride = a.cache.v_slot_stride = 2 * HKV * D;
  a.cache.k_head_stride = a.cache.v_head_stride = 2 * D;
  a.num_seqs = SEQS;
  a.cu_q_lens = cu_q_lens;
  a.kv_lens = kv_lens;
  a.page_indices = page_indices;
  a.pages_per_seq = PPS;
  a.sm_scale = 1.0f / sqrtf((float)D);

  st = rpa_attention(ctx, &a);
  if (st != RPA_OK) {
    fprintf(stderr, "rpa_attention: %s: %s\n", rpa_status_string(st),
            rpa_context_last_error(ctx));
    rpa_context_destroy(ctx);
    return 1;
  }
  printf("rpa %s, kernel set %s, %d thread(s)\n", rpa_version(),
         rpa_context_isa(ctx), rpa_context_num_threads(ctx));
  rpa_context_destroy(ctx);

  printf("decode token (sequence 0, position 39), query head 0, out[0..3]:");
  for (int d = 0; d < 4; d++) printf(" %.4f", rpa_bf16_to_f32(out[0][0][d]));
  printf("\n");

  /* The fused write: each new token's K and V rows are now in its slot. */
  int written = 0;
  for (int s = 0; s < SEQS; s++)
    for (int t = cu_q_lens[s]; t < cu_q_lens[s + 1]; t++) {
      const int pos = kv_lens[s] - (cu_q_lens[s + 1] - t);
      int ok = 1;
      for (int h = 0; h < HKV; h++)
        ok &= !memcmp(slot_of(s, pos)[2 * h], k[t][h], sizeof k[t][h]) &&
              !memcmp(slot_of(s, pos)[2 * h + 1], v[t][h], sizeof v[t][h]);
      written += ok;
    }
  printf("cache: %d of %d new tokens' K/V in their slots (sequence 0: page "
         "%d slot %d; sequence 1: page %d slots 8..15)\n",
         written, T, page_indices[2], 39 % PAGE, page_indices[3]);

  /* Every output row against the double-precision loop. Values are in
     [-1, 1), so rounding stays below 2^-9 (the bf16 output) + 2^-8 (the
     softmax weights, where avx512 rounds them to bf16 for vdpbf16ps). */
  double worst = 0.0;
  for (int s = 0; s < SEQS; s++)
    for (int t = cu_q_lens[s]; t < cu_q_lens[s + 1]; t++)
      for (int n = 0; n < HQ; n++) {
        const double e = check_row(s, t, n, kv_lens[s] - (cu_q_lens[s + 1] - t));
        if (e > worst) worst = e;
      }
  printf("all %d output rows against a double-precision loop: max |diff| "
         "%.2e\n", T * HQ, worst);

  const int ok = written == T && worst < 1e-2;
  printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
