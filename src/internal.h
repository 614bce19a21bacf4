/* Internal declarations shared by the api, the planner and the kernels. */
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

typedef struct rpa_context rpa_context;

/* One kernel set. attention() runs on validated arguments and must write
   the cache (when asked) and out; it may use ctx's scratch. */
typedef struct rpa_tile_ops rpa_tile_ops;

typedef struct rpa_kernel_set {
  const char *name;
  /* 1 if this CPU (and OS) can run it */
  int (*runs_here)(void);
  rpa_status (*attention)(rpa_context *ctx, const rpa_args *args,
                          const rpa_batch_info *info);
  const rpa_tile_ops *ops; /* micro-kernels of a tiled set, else NULL */
} rpa_kernel_set;

struct rpa_pool;

struct rpa_context {
  int num_threads;
  struct rpa_pool *pool;
  int log;
  const rpa_kernel_set *kernels;
  int bf16_dot; /* prefill bf16 x bf16 on vdpbf16ps (else widened, FMAs) */
  void *scratch;
  size_t scratch_bytes;
  char error[RPA_ERROR_CAP];
};

/* Records a formatted message in ctx->error and returns status. */
rpa_status rpa_fail(rpa_context *ctx, rpa_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Scratch of at least bytes, 64-byte aligned, owned by ctx. NULL on OOM. */
void *rpa_scratch(rpa_context *ctx, size_t bytes);

/* Full validation of args; fills info on success. */
rpa_status rpa_validate_args(rpa_context *ctx, const rpa_args *args,
                             rpa_batch_info *info);

/* Kernel sets, reference first. */
extern const rpa_kernel_set rpa_kernels_ref;
extern const rpa_kernel_set rpa_kernels_scalar;
extern const rpa_kernel_set rpa_kernels_avx2;
extern const rpa_kernel_set rpa_kernels_avx512;

/* The tiled engine (engine.c), driven by ctx->kernels->ops. */
rpa_status rpa_engine_attention(rpa_context *ctx, const rpa_args *args,
                                const rpa_batch_info *info);

/* The reference attention: the definition in code. */
rpa_status rpa_ref_attention(rpa_context *ctx, const rpa_args *args,
                             const rpa_batch_info *info);

#endif /* RPA_INTERNAL_H */
