/* Internal declarations shared by the api, the context, validation, the
   engine and the reference. */
#ifndef RPA_INTERNAL_H
#define RPA_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "rpa.h"

/* Largest head dim accepted: bounds per-thread scratch (a few rows of D). */
#define RPA_MAX_HEAD_DIM 4096

#define RPA_ERROR_CAP 512

/* Element loads and stores for any dtype (the reference's vocabulary). */
float rpa_load_f32(const void *base, rpa_dtype dtype, int64_t index);
void rpa_store_f32(void *base, rpa_dtype dtype, int64_t index, float value);
/* Largest finite value of a dtype. */
float rpa_dtype_max(rpa_dtype dtype);
/* The q_scale step of the contract: clip(x / q_scale) rounded to the KV
   dtype, returned widened to float32. */
float rpa_quantize_q(float x, float q_scale, rpa_dtype kv_dtype);

/* What validation learns about a batch, used by planning and kernels. */
typedef struct rpa_batch_info {
  int32_t num_seqs;      /* sequences computed: distribution[2] or num_seqs */
  int32_t group;         /* G = Hq / Hkv */
  int32_t head_dim_v;    /* resolved (never 0) */
  int32_t latent;        /* cache.v == NULL: V is the head of each K row */
  int32_t num_decode;    /* sequences with q_len == 1 */
  int32_t max_q_len;
  int64_t total_q;       /* cu_q_lens[num_seqs] */
  int64_t total_kv;      /* sum of kv_lens */
} rpa_batch_info;

/* Where logical position pos of sequence seq lives in the paged cache. */
typedef struct rpa_slot {
  int64_t page, slot;
} rpa_slot;

static inline rpa_slot rpa_slot_of(const rpa_args *a, int32_t seq,
                                   int64_t pos) {
  const int32_t ps = a->cache.page_size;
  rpa_slot s;
  s.page = a->page_indices[(int64_t)seq * a->pages_per_seq + pos / ps];
  s.slot = pos % ps;
  return s;
}

/* Element offsets of the K row and the V row of KV head h at slot s (a
   latent cache, v == NULL, reads V from K's rows). */
static inline int64_t rpa_k_offset(const rpa_kv_cache *c, rpa_slot s,
                                   int64_t h) {
  return s.page * c->k_page_stride + s.slot * c->k_slot_stride +
         h * c->k_head_stride;
}
static inline int64_t rpa_v_offset(const rpa_kv_cache *c, rpa_slot s,
                                   int64_t h) {
  if (!c->v) return rpa_k_offset(c, s, h);
  return s.page * c->v_page_stride + s.slot * c->v_slot_stride +
         h * c->v_head_stride;
}

/* Custom masks (rpa_args.mask): whether sequence seq has one, and whether
   its new token j sees its new token k (q_len new tokens). */
static inline int rpa_has_mask(const rpa_args *a, int32_t seq) {
  return a->mask && a->mask_offsets[seq] >= 0;
}
static inline int rpa_mask_bit(const rpa_args *a, int32_t seq, int32_t q_len,
                               int32_t j, int32_t k) {
  const int64_t b = a->mask_offsets[seq] + (int64_t)j * q_len + k;
  return (a->mask[b >> 3] >> (b & 7)) & 1;
}

typedef struct rpa_context rpa_context;
struct rpa_kernels;

/* A backend of the registry (registry.c): the reference, or the engine
   driving one kernel set. attention() runs on validated arguments and must
   write the cache (when asked) and out; it may use ctx's scratch. */
typedef struct rpa_backend {
  const char *name;
  int (*runs_here)(void); /* 1 if this CPU (and OS) can run it */
  rpa_status (*attention)(rpa_context *ctx, const rpa_args *args,
                          const rpa_batch_info *info);
  const struct rpa_kernels *kernels; /* the engine's set; ref: none */
} rpa_backend;

struct rpa_pool;

struct rpa_context {
  int num_threads;
  struct rpa_pool *pool; /* engine backends only */
  int log;
  const rpa_backend *backend;
  int bf16_dot; /* bf16 x bf16 on the bf16 dot product (RPA_BF16_DOT) */
  int prefetch_rows; /* decode: software prefetch of whole rows, every layout */
  void *scratch;
  size_t scratch_bytes;
  char error[RPA_ERROR_CAP];
};

/* Records a formatted message in ctx->error and returns status
   (context.c). */
rpa_status rpa_fail(rpa_context *ctx, rpa_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Scratch of at least bytes, 64-byte aligned, owned by ctx. NULL on OOM. */
void *rpa_scratch(rpa_context *ctx, size_t bytes);

/* Validation of rpa_merge_states' arguments (validate.c). */
rpa_status rpa_validate_merge(rpa_context *ctx, int32_t num_tokens,
                              int32_t num_heads, int32_t head_dim,
                              const rpa_attn_state *a, const rpa_attn_state *b,
                              const rpa_attn_state *dst);

/* Full validation of args; fills info on success (validate.c). */
rpa_status rpa_validate_args(rpa_context *ctx, const rpa_args *args,
                             rpa_batch_info *info);

/* The registry (registry.c): backends by name, reference first; the last
   one this CPU runs is the best. */
int rpa_backend_count(void);
const rpa_backend *rpa_backend_at(int index);
const rpa_backend *rpa_backend_find(const char *name);
const rpa_backend *rpa_backend_best(void);

/* The tiled engine (engine.c), driven by ctx->backend->kernels. */
rpa_status rpa_engine_attention(rpa_context *ctx, const rpa_args *args,
                                const rpa_batch_info *info);

/* The reference attention: the definition in code (ref/attention_ref.c). */
rpa_status rpa_ref_attention(rpa_context *ctx, const rpa_args *args,
                             const rpa_batch_info *info);

#endif /* RPA_INTERNAL_H */
