/* The Llama forward pass over one ragged batch, with rpa for attention.
   Weights are dequantized to float32 at load. Every token row goes through
   the same code with the same summation order whatever the batch holds and
   however many threads split it, so a sequence's logits do not depend on
   its neighbours (batch invariance; rpa guarantees the same for attention). */
#ifndef GEN_MODEL_H
#define GEN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "pool.h"
#include "rpa.h"

typedef struct layer_weights {
  float *attn_norm, *ffn_norm;
  float *wq, *wk, *wv, *wo;     /* [out][in] */
  float *w_gate, *w_up, *w_down;
} layer_weights;

typedef struct model {
  int32_t n_layer, dim, n_head, n_kv_head, head_dim, ffn_dim, n_vocab;
  int32_t ctx_len;
  float eps, rope_base;
  float *tok_embd;  /* [vocab][dim] */
  float *output;    /* [vocab][dim]: tok_embd when tied */
  float *out_norm;
  layer_weights *layers;
  double *rope_freq; /* [head_dim / 2] */
} model;

/* All elements of t as float32 into out (t's element count); -1 if its type
   is not F32, F16, Q4_1 or Q8_0. */
int tensor_dequantize(const gguf_tensor *t, float *out);

int model_load(model *m, const gguf_file *f, char *err, size_t errlen);
void model_free(model *m);

/* The paged KV cache of every layer: float32, upstream's combined layout
   [pages][page_size][2 * Hkv][D] (K of head h is row 2h, V row 2h + 1). */
typedef struct kv_cache {
  int32_t num_pages, page_size;
  float **layer; /* [n_layer] */
} kv_cache;

int kv_cache_init(kv_cache *c, const model *m, int32_t num_pages,
                  int32_t page_size);
void kv_cache_free(kv_cache *c, const model *m);

/* One step's ragged batch, as rpa takes it: tokens of sequence s are rows
   cu_q_lens[s] .. cu_q_lens[s+1] of tokens/positions. */
typedef struct batch {
  int32_t num_tokens, num_seqs, pages_per_seq;
  const int32_t *tokens, *positions;
  const int32_t *cu_q_lens, *kv_lens, *page_indices;
  /* Rows whose logits are wanted, and where they go ([n_logits][vocab]). */
  int32_t n_logits;
  const int32_t *logit_rows;
  float *logits;
} batch;

typedef struct forward_ctx {
  const model *m;
  kv_cache *cache;
  rpa_context *rpa;
  pool *threads;
  /* Scratch, grown to the largest batch seen. */
  int32_t cap_tokens;
  float *x, *h, *q, *k, *v, *att, *gate, *up;
  double attn_seconds, total_seconds; /* accumulated */
} forward_ctx;

/* 0, or -1 with a message (an rpa error, or out of memory). */
int forward(forward_ctx *fc, const batch *b, char *err, size_t errlen);
void forward_free(forward_ctx *fc);

#endif
