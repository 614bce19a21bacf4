/* Random ragged batches for tests and tools: every buffer the library
   touches, with guard bytes, in any cache layout; and the dense oracle. */
#ifndef RPA_TEST_BATCH_H
#define RPA_TEST_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "rpa.h"

typedef enum tb_layout {
  TB_COMBINED, /* upstream: [P, ps, 2*Hkv, D], K row 2h, V row 2h+1 */
  TB_VLLM,     /* vLLM: [2, P, ps, Hkv, D] */
  TB_SEPARATE, /* two buffers [P, ps, Hkv, Dpad], head rows padded */
  TB_HND,      /* FlashInfer HND: [P, 2, Hkv, ps, D] */
  TB_LATENT,   /* MLA: [P, ps, D], V = first Dv of each row, Hkv = 1 */
  TB_LAYOUT_COUNT
} tb_layout;

const char *tb_layout_name(tb_layout l);

typedef struct tb_config {
  uint64_t seed;
  int32_t num_seqs;
  const int32_t *q_lens;  /* [num_seqs] */
  const int32_t *kv_lens; /* [num_seqs] */
  int32_t num_q_heads, num_kv_heads, head_dim, head_dim_v; /* Dv 0: D */
  int32_t page_size;
  int32_t extra_pages;    /* free pages in the pool beyond those used */
  int32_t pages_per_seq;  /* 0: the minimum */
  int shuffle_pages;      /* random physical page order */
  rpa_dtype q_dtype, out_dtype, kv_dtype;
  tb_layout layout;
  int32_t pad;            /* extra elements in q/out token and head strides */
  int32_t pad_tokens;     /* padded rows past cu_q_lens[S] */
  int causal;
  int32_t sliding_window;
  float soft_cap, q_scale, k_scale, v_scale, sm_scale; /* sm 0: 1/sqrt(D) */
  int sinks, update, lse, distribution; /* distribution: pass the hint */
  int big_logits;         /* q = 1, k in [1.41, 1.56]: logits ~ 90..100 */
  int tree;               /* random tree masks (rpa_args.mask) over the new
                             tokens of each sequence with q_len > 1, but
                             every third such sequence, which stays causal */
} tb_config;

/* Defaults: causal, update on, f32 everywhere, combined layout. */
tb_config tb_config_default(void);

typedef struct tb_buffer {
  unsigned char *mem; /* guard | data | guard */
  size_t bytes;       /* data bytes */
} tb_buffer;

enum { TB_GUARD = 64 };
#define TB_GUARD_BYTE 0xA5

typedef struct tb_batch {
  tb_config cfg;
  rpa_args args;
  int32_t *q_lens, *kv_lens, *cu_q_lens, *page_indices, dist[3];
  float *sinks;
  uint8_t *mask;          /* cfg.tree: the packed bits, */
  int64_t *mask_offsets;  /* [S], -1: causal */
  int64_t mask_bits;
  int32_t num_pages, total_tokens; /* total_tokens: cu_q_lens[S] */
  tb_buffer q, k, v, out, lse, cache, cache_before, out_before;
} tb_batch;

/* Builds a batch; returns 0 on success. Free with tb_free. */
int tb_make(tb_batch *b, const tb_config *cfg);
void tb_free(tb_batch *b);
/* Restores cache and out to their contents before any call. */
void tb_reset(tb_batch *b);
/* Pointer to the data part of a buffer. */
static inline void *tb_data(const tb_buffer *x) { return x->mem + TB_GUARD; }

/* Whether new token j of sequence i sees new token k under the batch's tree
   mask (1 without one). Reads the bits itself, not through the library. */
int tb_mask_sees(const tb_batch *b, int32_t i, int32_t j, int32_t k);
/* Dense oracle in double precision: gathers each sequence's K/V into plain
   arrays (cached prefix from the cache as it was, new rows from k/v or, in
   KV-share mode, from the cache) and applies the textbook softmax, with
   every mask (causal, window, tree) as a dense visibility test per pair.
   out [total_tokens, Hq, Dv], lse [total_tokens, Hq]. */
void tb_oracle(const tb_batch *b, double *out, double *lse);

/* Compares the library's out (and lse) with the oracle. Also checks that
   every byte of out outside the written elements, and every guard, is
   unchanged. Returns 0 when all holds; else writes a reason to msg. */
int tb_check_output(const tb_batch *b, const double *out, const double *lse,
                    double tol, char *msg, size_t msg_len);

/* Checks the cache: exactly the new tokens' slots changed (to the new K/V,
   bit for bit), all else, guards included, is unchanged; in KV-share mode
   nothing changed. Returns 0 when all holds. */
int tb_check_cache(const tb_batch *b, char *msg, size_t msg_len);

/* Absolute tolerance of a batch's outputs (they are O(1)): set by the output
   dtype, widened where fast kernels round softmax weights to bf16. */
double tb_tolerance(const tb_config *cfg);

/* Small deterministic RNG. */
uint64_t tb_rand(uint64_t *state);
double tb_uniform(uint64_t *state); /* [0, 1) */
int32_t tb_range(uint64_t *state, int32_t lo, int32_t hi); /* [lo, hi] */

#endif
