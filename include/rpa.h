/*
 * rpa: ragged paged attention for LLM serving, in C.
 *
 * One call computes one layer's attention for every token a serving engine
 * schedules in one step: decode sequences (one new token each) and prefill
 * chunks (many new tokens each), ragged, over a paged KV cache, with grouped
 * query heads, and writes the new tokens' K/V into their pages in the same
 * pass (the "fused KV-cache update").
 *
 * Conventions of this header:
 *  - Every call returns an rpa_status; results come back through *_out
 *    pointers. RPA_OK is 0.
 *  - No pointer passed in is kept after the call returns.
 *  - Strides are counted in ELEMENTS of the tensor's dtype, never bytes. The
 *    innermost (head_dim) axis of every tensor is contiguous (stride 1).
 *  - Shapes are written outermost first: q [T, Hq, D] means token, head, dim.
 *  - Thread safety: a context may be used by one thread at a time (it owns
 *    scratch memory and the last error message). Distinct contexts are
 *    independent and may be used concurrently.
 */
#ifndef RPA_H
#define RPA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define RPA_API
#elif defined(__GNUC__)
#define RPA_API __attribute__((visibility("default")))
#else
#define RPA_API
#endif

#define RPA_VERSION_MAJOR 0
#define RPA_VERSION_MINOR 1
#define RPA_VERSION_PATCH 0

/* ------------------------------------------------------------------------ */
/* Status codes: one list generates the enum and the strings.               */

#define RPA_STATUS_MAP(X)                                                     \
  X(OK, 0, "success")                                                         \
  X(NULL_POINTER, 1, "a required pointer is NULL")                            \
  X(INVALID_SHAPE, 2, "a tensor shape is invalid")                            \
  X(INVALID_DTYPE, 3, "a dtype is invalid or not allowed here")               \
  X(INVALID_STRIDE, 4, "a stride or memory layout is invalid")                \
  X(INVALID_LENGTHS, 5, "query or KV lengths are inconsistent")               \
  X(INVALID_PAGES, 6, "page table or page ids are invalid")                   \
  X(INVALID_PARAMETER, 7, "an attention parameter is out of range")           \
  X(INVALID_DISTRIBUTION, 8, "the distribution contradicts the batch")        \
  X(OVERLAP, 9, "an output overlaps an input or another output")              \
  X(OVERFLOW, 10, "a size overflows 64-bit indexing")                         \
  X(OUT_OF_MEMORY, 11, "memory allocation failed")                            \
  X(UNSUPPORTED, 12, "not supported by this build or CPU")

typedef enum rpa_status {
#define RPA_STATUS_ENUM_(name, code, text) RPA_##name = code,
  RPA_STATUS_MAP(RPA_STATUS_ENUM_)
#undef RPA_STATUS_ENUM_
} rpa_status;

/* A static, human-readable string for a status ("unknown status" if out of
   range). */
RPA_API const char *rpa_status_string(rpa_status status);

/* ------------------------------------------------------------------------ */
/* Data types.                                                              */

typedef enum rpa_dtype {
  RPA_F32 = 0,       /* IEEE binary32 */
  RPA_BF16 = 1,      /* bfloat16: 1 sign, 8 exponent, 7 mantissa bits */
  RPA_F16 = 2,       /* IEEE binary16 */
  RPA_FP8_E4M3 = 3,  /* fp8 e4m3fn: no infinities, max 448, NaN = S.1111.111 */
  RPA_FP8_E5M2 = 4,  /* fp8 e5m2: IEEE-like, with infinities */
} rpa_dtype;

#define RPA_DTYPE_COUNT 5

RPA_API const char *rpa_dtype_name(rpa_dtype dtype); /* "f32", "bf16", ... */
RPA_API size_t rpa_dtype_size(rpa_dtype dtype);      /* bytes; 0 if invalid */

/* Conversions used everywhere in the library. Narrowing rounds to nearest,
   ties to even. NaN stays NaN. Values beyond the largest finite value become
   infinity in f16, bf16 and e5m2 and NaN in e4m3fn (which has no infinity),
   as ml_dtypes and PyTorch do. Widening is exact. */
RPA_API float rpa_bf16_to_f32(uint16_t bits);
RPA_API uint16_t rpa_f32_to_bf16(float value);
RPA_API float rpa_f16_to_f32(uint16_t bits);
RPA_API uint16_t rpa_f32_to_f16(float value);
RPA_API float rpa_fp8_e4m3_to_f32(uint8_t bits);
RPA_API uint8_t rpa_f32_to_fp8_e4m3(float value);
RPA_API float rpa_fp8_e5m2_to_f32(uint8_t bits);
RPA_API uint8_t rpa_f32_to_fp8_e5m2(float value);

/* Convert n values between any two dtypes (through float32). */
RPA_API rpa_status rpa_convert(const void *src, rpa_dtype src_dtype, void *dst,
                               rpa_dtype dst_dtype, size_t n);

/* ------------------------------------------------------------------------ */
/* Context: owns the thread pool, the kernel choice and scratch memory.     */

typedef struct rpa_context rpa_context;

typedef struct rpa_context_options {
  /* Worker threads, the caller's included. 0: the number of online CPUs. */
  int num_threads;
  /* Kernel set: NULL or "" for the environment variable RPA_ISA, and when
     that is unset too, the best one this CPU supports. Names: "ref" (the
     plain-loop reference, one thread), "scalar" (the tiled engine in
     portable C), "avx2", "avx512"; "best" picks the fastest. */
  const char *isa;
  /* Print the kernel choice to stderr: 1 yes, 0 no, -1 follow RPA_LOG=1. */
  int log;
  /* Pin worker thread i to CPU i (the calling thread is never moved):
     1 yes, 0 no, -1 when num_threads <= online CPUs. */
  int pin_threads;
} rpa_context_options;

/* The defaults: every field 0 / NULL, log and pin_threads -1. */
RPA_API rpa_context_options rpa_context_options_default(void);

/* opts may be NULL (defaults). RPA_UNSUPPORTED if the requested kernel set is
   unknown or this CPU cannot run it. The environment variable RPA_BF16_DOT
   (0 or 1; RPA_INVALID_PARAMETER otherwise) overrides the avx512 set's
   choice, made by CPU vendor, of vdpbf16ps or widened float32 FMAs for
   bf16 prefill; see docs/design.md. */
RPA_API rpa_status rpa_context_create(const rpa_context_options *opts,
                                      rpa_context **ctx_out);
/* NULL is allowed. */
RPA_API void rpa_context_destroy(rpa_context *ctx);

/* The message of the last failed call on ctx: names the argument and, for
   per-sequence rules, the sequence. "" after a successful call. The string
   lives until the next call on ctx. */
RPA_API const char *rpa_context_last_error(const rpa_context *ctx);
/* The kernel set in use ("ref", "avx2", "avx512", ...). */
RPA_API const char *rpa_context_isa(const rpa_context *ctx);
RPA_API int rpa_context_num_threads(const rpa_context *ctx);
/* Bytes of scratch the context holds: the peak any call on it has needed
   (plan, split-KV partials, per-thread tiles). It grows with the number of
   query tokens and sequences in a call, never with KV length. */
RPA_API size_t rpa_context_scratch_bytes(const rpa_context *ctx);
/* 1 if this build and CPU can run the named kernel set, else 0. */
RPA_API int rpa_isa_available(const char *isa);
/* The kernel sets compiled in, by index from 0 (reference first); NULL past
   the end. Pair with rpa_isa_available() to list what runs here. */
RPA_API const char *rpa_isa_name(int index);

/* ------------------------------------------------------------------------ */
/* The attention call.                                                      */

/* A dense [T, H, D] tensor: token stride and head stride in elements; the D
   axis is contiguous. Negative strides are not allowed. */
typedef struct rpa_tensor {
  void *data;
  rpa_dtype dtype;
  int64_t token_stride;
  int64_t head_stride;
} rpa_tensor;

/* The paged KV cache: num_pages pages of page_size token slots; a slot holds
   num_kv_heads rows of head_dim elements for K and as many rows of head_dim_v
   for V. Element (page p, slot s, head h, dim d) of K is
     k[p * k_page_stride + s * k_slot_stride + h * k_head_stride + d],
   and likewise for V. Some layouts, for Hkv heads of D elements:
     upstream RPA combined [pages, page_size, 2*Hkv, D] (K of head h is row 2h,
       V is row 2h+1): k = base, v = base + D,
       page stride page_size*2*Hkv*D, slot stride 2*Hkv*D, head stride 2*D;
     vLLM [2, pages, page_size, Hkv, D]: k = base, v = base + pages*page_size*Hkv*D,
       page stride page_size*Hkv*D, slot stride Hkv*D, head stride D;
     FlashInfer HND [pages, 2, Hkv, page_size, D]: v = k + Hkv*page_size*D,
       page stride 2*Hkv*page_size*D, slot stride D, head stride page_size*D.
   Latent (MLA) cache: v = NULL. Values are then the first head_dim_v
   elements of each key row (DeepSeek MLA: a row is [kv_c (Lkv) | k_pe (R)],
   head_dim = Lkv + R, head_dim_v = Lkv, num_kv_heads = 1). */
typedef struct rpa_kv_cache {
  void *k;
  void *v;
  rpa_dtype dtype;
  int32_t num_pages;
  int32_t page_size;
  int64_t k_page_stride, k_slot_stride, k_head_stride;
  int64_t v_page_stride, v_slot_stride, v_head_stride;
} rpa_kv_cache;

/* Everything one call needs. Build it with rpa_args_default() and set the
   fields; the defaults give causal attention with all options off. */
typedef struct rpa_args {
  /* Shape. head_dim_v 0 means head_dim. */
  int32_t num_tokens;   /* T: rows of q, k, v and out */
  int32_t num_q_heads;  /* Hq, a multiple of Hkv */
  int32_t num_kv_heads; /* Hkv */
  int32_t head_dim;     /* D of q and k */
  int32_t head_dim_v;   /* D of v and out */

  /* Tensors. q [T, Hq, D]: f32, bf16 or f16. k [T, Hkv, D] and
     v [T, Hkv, Dv]: the new tokens' keys and values, in the cache dtype
     (v NULL for a latent cache; both may be NULL when update_kv_cache is 0).
     out [T, Hq, Dv]: f32, bf16 or f16. Rows past cu_q_lens[num_seqs] are
     padding: not read, not written. */
  rpa_tensor q;
  rpa_tensor k;
  rpa_tensor v;
  rpa_tensor out;
  /* Optional log-sum-exp of each (token, query head) row, natural log,
     float32, at lse[t * lse_token_stride + h * lse_head_stride]. NULL: not
     written. With sinks, the sink is part of the sum. */
  float *lse;
  int64_t lse_token_stride;
  int64_t lse_head_stride;

  rpa_kv_cache cache;

  /* Ragged batch metadata (int32, as upstream). */
  int32_t num_seqs;              /* S */
  const int32_t *cu_q_lens;      /* [S + 1] prefix sums, cu_q_lens[0] = 0 */
  const int32_t *kv_lens;        /* [S] lengths including the new tokens */
  const int32_t *page_indices;   /* [S * pages_per_seq] */
  int32_t pages_per_seq;
  /* Optional [3] (decode_end, prefill_end, mixed_end), upstream's hint.
     Checked against the batch when given; never required, and sequences
     never need sorting. NULL: computed. */
  const int32_t *distribution;

  /* Parameters, in the order they act (docs/contract.md, section 6). */
  float q_scale;        /* 0: off. > 0: q -> clip(q / q_scale) in KV dtype */
  float sm_scale;       /* default 1; callers usually pass 1/sqrt(D) */
  float k_scale;        /* default 1 */
  float v_scale;        /* default 1 */
  float soft_cap;       /* 0: off. > 0: s = c * tanh(s / c) */
  int32_t causal;       /* default 1. 0: every query sees [0, kv_len) */
  int32_t sliding_window; /* 0: off. W > 0: causal and pos - c < W */
  const float *sinks;   /* optional [Hq] float32 logits joining the softmax
                           denominator only */
  int32_t update_kv_cache; /* default 1. 0: KV-share mode, read-only cache */

  /* Optional custom masks over the new tokens (speculative decoding: the
     new tokens form a tree of drafts, each seeing its ancestors). NULL:
     none. Sequence i with mask_offsets[i] >= 0 has a q_len x q_len bit
     matrix at bits [mask_offsets[i], mask_offsets[i] + q_len * q_len) of
     mask, row-major: bit mask_offsets[i] + j * q_len + k set means new
     token j sees new token k. Bit b of the buffer is bit b % 8 (least
     significant first) of byte b / 8 (numpy.packbits(bitorder="little")).
     Every new token sees the cached prefix as a causal token does (and the
     sliding window still applies), and of the new tokens only those its
     row marks: itself always, never a later one (k > j). mask_offsets[i]
     = -1: sequence i is plainly causal. Needs causal = 1. mask_bits: the
     bits the mask buffer holds. */
  const uint8_t *mask;
  const int64_t *mask_offsets; /* [num_seqs] */
  int64_t mask_bits;

  /* Optional shared prefixes (cascade attention). When sequences begin with
     the same cached tokens in the same pages (a system prompt, a few-shot
     block, beam search), name them as a group: num_shared groups,
     shared_len[g] tokens of group g's prefix, shared_group[i] sequence i's
     group or -1. The decode sequences of a group then read the prefix's K/V
     once per call for the whole group (instead of once each), and merge
     that partial softmax with their own tokens'. The result is that of the
     call without groups, to float32 rounding. Every member's page table
     must hold the same pages for the prefix, the prefix must be cached
     (shared_len[g] <= kv_len - q_len) and no member may write into one of
     its pages. 0 / NULL: none. */
  int32_t num_shared;
  const int32_t *shared_len;   /* [num_shared] */
  const int32_t *shared_group; /* [num_seqs] */
} rpa_args;

RPA_API rpa_args rpa_args_default(void);

/* Validates every rule of the contract, then writes the new K/V into their
   pages (when update_kv_cache) and computes out (and lse). On any error
   nothing is written and rpa_context_last_error() says why. */
RPA_API rpa_status rpa_attention(rpa_context *ctx, const rpa_args *args);

/* Validation alone: the same checks as rpa_attention, nothing computed. */
RPA_API rpa_status rpa_validate(rpa_context *ctx, const rpa_args *args);

/* ------------------------------------------------------------------------ */
/* Merging attention states.                                                */

/* A partial attention result over some set of keys: out [T, H, Dv] (f32,
   bf16 or f16; last axis contiguous) and its float32 log-sum-exp at
   lse[t * lse_token_stride + h * lse_head_stride], as rpa_attention gives
   them with args.lse set. A row whose key set is empty has lse -inf (its
   out is then ignored). */
typedef struct rpa_attn_state {
  rpa_tensor out;
  float *lse;
  int64_t lse_token_stride;
  int64_t lse_head_stride;
} rpa_attn_state;

/* dst = the result over the union of the two disjoint key sets of a and b
   (docs/contract.md, section 16): per row, m = max(lse_a, lse_b),
   w_a = exp(lse_a - m), w_b = exp(lse_b - m), out = out_a * (w_a / w) +
   out_b * (w_b / w) with w = w_a + w_b, lse = m + log(w), in float32,
   rounded once to dst's dtype. Symmetric in a and b (bitwise). Both lse
   -inf: out 0, lse -inf. A row that meets a NaN, a +inf lse, or a
   non-finite out element of a state with weight is NaN throughout (lse
   too). dst may be a or b exactly (the same data, dtype and strides) for an
   in-place merge; otherwise no written view may overlap another view. All
   of dst is validated before anything is written; on error nothing is. */
RPA_API rpa_status rpa_merge_states(rpa_context *ctx, int32_t num_tokens,
                                    int32_t num_heads, int32_t head_dim,
                                    const rpa_attn_state *a,
                                    const rpa_attn_state *b,
                                    const rpa_attn_state *dst);

/* ------------------------------------------------------------------------ */
/* Upstream-compatible convenience: RPA v3's arguments, combined layout.    */

/* Upstream's optional arguments; NaN / 0 mean "None" as noted. */
typedef struct rpa_v3_options {
  float sm_scale;          /* default 1 */
  int32_t sliding_window;  /* 0: None */
  float soft_cap;          /* 0: None */
  float q_scale, k_scale, v_scale; /* 0: None */
  int32_t use_causal_mask; /* default 1 */
  int32_t update_kv_cache; /* default 1 */
  const float *attention_sink; /* [Hq] or NULL */
} rpa_v3_options;

RPA_API rpa_v3_options rpa_v3_options_default(void);

/* queries [T, Hq, D] (q_dtype), keys / values [T, Hkv, D] and the combined
   cache [num_pages, page_size, 2*Hkv, D] (kv_dtype), all contiguous; out
   [T, Hq, D] in q_dtype. opts may be NULL. */
RPA_API rpa_status rpa_ragged_paged_attention_v3(
    rpa_context *ctx, const void *queries, const void *keys,
    const void *values, void *kv_cache, const int32_t *kv_lens,
    const int32_t *page_indices, const int32_t *cu_q_lens,
    const int32_t *distribution, int32_t num_tokens, int32_t num_q_heads,
    int32_t num_kv_heads, int32_t head_dim, int32_t num_pages,
    int32_t page_size, int32_t num_seqs, int32_t pages_per_seq,
    rpa_dtype q_dtype, rpa_dtype kv_dtype, const rpa_v3_options *opts,
    void *out);

/* ------------------------------------------------------------------------ */
/* Version and ABI checks.                                                  */

/* This header's version as one number, MAJOR * 10000 + MINOR * 100 + PATCH:
   compare with rpa_version_number() to catch a header and a library from
   different releases. */
#define RPA_VERSION_NUMBER \
  (RPA_VERSION_MAJOR * 10000 + RPA_VERSION_MINOR * 100 + RPA_VERSION_PATCH)

/* The library's version, "MAJOR.MINOR.PATCH" (a static string). */
RPA_API const char *rpa_version(void);
/* The library's version as MAJOR * 10000 + MINOR * 100 + PATCH. */
RPA_API int rpa_version_number(void);
/* sizeof, in this build of the library, of the public structure named:
   "rpa_args", "rpa_tensor", "rpa_kv_cache", "rpa_context_options" or
   "rpa_v3_options"; 0 for any other name and for NULL. Bindings that copy
   these structures instead of compiling this header compare their sizes
   with these when they load the library. */
RPA_API size_t rpa_abi_struct_size(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* RPA_H */
