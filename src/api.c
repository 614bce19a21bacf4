/* The public entry points: status strings, the context, validate -> plan ->
   dispatch, and upstream's v3 convenience call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "internal.h"
#include "kernels/tile.h"
#include "threadpool.h"

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

rpa_status rpa_fail(rpa_context *ctx, rpa_status status, const char *fmt,
                    ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
  }
  return status;
}

/* ---- kernel sets ------------------------------------------------------- */

/* Reference entries first; a faster set later in the list wins when the CPU
   can run it. */
static const rpa_kernel_set *const kernel_sets[] = {
    &rpa_kernels_ref,
    &rpa_kernels_scalar,
    &rpa_kernels_avx2,
    &rpa_kernels_avx512,
};
enum { NUM_KERNEL_SETS = sizeof kernel_sets / sizeof kernel_sets[0] };

static int kernel_set_runs_here(const rpa_kernel_set *k) {
  return k->runs_here();
}

static const rpa_kernel_set *find_kernel_set(const char *name) {
  for (int i = 0; i < NUM_KERNEL_SETS; i++)
    if (strcmp(kernel_sets[i]->name, name) == 0) return kernel_sets[i];
  return NULL;
}

const char *rpa_isa_name(int index) {
  return index >= 0 && index < NUM_KERNEL_SETS ? kernel_sets[index]->name
                                                : NULL;
}

int rpa_isa_available(const char *isa) {
  const rpa_kernel_set *k = isa ? find_kernel_set(isa) : NULL;
  return k && kernel_set_runs_here(k);
}

/* ---- context ----------------------------------------------------------- */

rpa_context_options rpa_context_options_default(void) {
  rpa_context_options o;
  memset(&o, 0, sizeof o);
  o.log = -1;
  o.pin_threads = -1;
  return o;
}

rpa_status rpa_context_create(const rpa_context_options *opts,
                              rpa_context **ctx_out) {
  if (!ctx_out) return RPA_NULL_POINTER;
  *ctx_out = NULL;
  rpa_context_options o = opts ? *opts : rpa_context_options_default();
  if (o.num_threads < 0) return RPA_INVALID_PARAMETER;

  const char *isa = o.isa && o.isa[0] ? o.isa : getenv("RPA_ISA");
  const rpa_kernel_set *kernels = NULL;
  if (isa && isa[0] && strcmp(isa, "best") != 0) {
    kernels = find_kernel_set(isa);
    if (!kernels || !kernel_set_runs_here(kernels)) return RPA_UNSUPPORTED;
  } else {
    for (int i = 0; i < NUM_KERNEL_SETS; i++)
      if (kernel_set_runs_here(kernel_sets[i])) kernels = kernel_sets[i];
  }

  /* RPA_BF16_DOT=0|1 overrides the CPU's choice of bf16 prefill arithmetic. */
  const char *dot = getenv("RPA_BF16_DOT");
  int bf16_dot = rpa_cpu_features()->bf16_dot_fast;
  if (dot && dot[0]) {
    if (strcmp(dot, "0") != 0 && strcmp(dot, "1") != 0) return RPA_INVALID_PARAMETER;
    bf16_dot = dot[0] == '1';
  }

  rpa_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return RPA_OUT_OF_MEMORY;
  ctx->bf16_dot = bf16_dot;
  if (o.num_threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o.num_threads = n > 0 ? (int)n : 1;
  }
  ctx->num_threads = o.num_threads;
  ctx->kernels = kernels;
  if (kernels->ops) { /* tiled sets run on the pool */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const int pin = o.pin_threads < 0 ? o.num_threads <= cpus : o.pin_threads;
    ctx->pool = rpa_pool_create(o.num_threads, pin);
    if (!ctx->pool) {
      free(ctx);
      return RPA_OUT_OF_MEMORY;
    }
  }
  if (o.log < 0) {
    const char *env = getenv("RPA_LOG");
    ctx->log = env && strcmp(env, "1") == 0;
  } else {
    ctx->log = o.log != 0;
  }
  if (ctx->log)
    fprintf(stderr, "rpa: kernel set %s (%s), %d thread(s)%s\n", kernels->name,
            isa && isa[0] ? "forced" : "best for this CPU", ctx->num_threads,
            !kernels->ops || !kernels->ops->prefill_begin ? ""
            : ctx->bf16_dot ? ", bf16 prefill on vdpbf16ps"
                            : ", bf16 prefill widened to f32 FMAs");
  *ctx_out = ctx;
  return RPA_OK;
}

void rpa_context_destroy(rpa_context *ctx) {
  if (!ctx) return;
  rpa_pool_destroy(ctx->pool);
  free(ctx->scratch);
  free(ctx);
}

const char *rpa_context_last_error(const rpa_context *ctx) {
  return ctx ? ctx->error : "ctx: NULL";
}

const char *rpa_context_isa(const rpa_context *ctx) {
  return ctx ? ctx->kernels->name : "";
}

int rpa_context_num_threads(const rpa_context *ctx) {
  return ctx ? ctx->num_threads : 0;
}

size_t rpa_context_scratch_bytes(const rpa_context *ctx) {
  return ctx ? ctx->scratch_bytes : 0;
}

void *rpa_scratch(rpa_context *ctx, size_t bytes) {
  if (bytes <= ctx->scratch_bytes) return ctx->scratch;
  size_t n = (bytes + 63) & ~(size_t)63;
  void *p = NULL;
  if (posix_memalign(&p, 64, n) != 0) return NULL;
  free(ctx->scratch);
  ctx->scratch = p;
  ctx->scratch_bytes = n;
  return p;
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
  return ctx->kernels->attention(ctx, args, &info);
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
  a.cache.v = (char *)kv_cache + D * rpa_dtype_size(kv_dtype);
  a.cache.dtype = kv_dtype;
  a.cache.num_pages = num_pages;
  a.cache.page_size = page_size;
  a.cache.k_page_stride = a.cache.v_page_stride = (int64_t)page_size * 2 * Hkv * D;
  a.cache.k_slot_stride = a.cache.v_slot_stride = 2 * Hkv * D;
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
