/* Validation of every rule of the contract, before anything is written.
   Each failure names the argument and, for per-sequence rules, the
   sequence. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

/* ---- checked 64-bit arithmetic ----------------------------------------- */

static int mul_ok(int64_t a, int64_t b, int64_t *out) {
  /* a, b >= 0 */
  if (a != 0 && b > INT64_MAX / a) return 0;
  *out = a * b;
  return 1;
}

static int add_ok(int64_t a, int64_t b, int64_t *out) {
  if (b > INT64_MAX - a) return 0;
  *out = a + b;
  return 1;
}

/* A strided tensor: dims[i] with strides[i] (elements), innermost dim
   contiguous. Its footprint in bytes is [base, base + span). */
typedef struct view {
  const char *name;
  const void *base;
  int64_t span; /* bytes; 0 = empty */
} view;

enum { MAX_DIMS = 4 };

/* Computes the footprint of a tensor with n dims; returns 0 on overflow.
   Empty tensors (any dim 0) have span 0. */
static int footprint(const int64_t *dims, const int64_t *strides, int n,
                     size_t esize, int64_t *span) {
  int64_t last = 0; /* index of the last element */
  for (int i = 0; i < n; i++) {
    if (dims[i] == 0) {
      *span = 0;
      return 1;
    }
  }
  for (int i = 0; i < n; i++) {
    int64_t t;
    if (!mul_ok(dims[i] - 1, strides[i], &t) || !add_ok(last, t, &last))
      return 0;
  }
  int64_t elems;
  if (!add_ok(last, 1, &elems)) return 0;
  if (!mul_ok(elems, (int64_t)esize, span)) return 0;
  /* the footprint must also fit in the address space */
  if ((uint64_t)*span > (uint64_t)SIZE_MAX) return 0;
  return 1;
}

/* Distinct indices map to distinct elements: sorted by stride, each stride
   is at least the extent of all smaller-stride dims. Dims of size 1 do not
   matter. A sufficient condition, the one BLAS-like libraries use. */
static int non_overlapping(const int64_t *dims, const int64_t *strides, int n) {
  int idx[MAX_DIMS], m = 0;
  for (int i = 0; i < n; i++)
    if (dims[i] == 0) return 1; /* no elements, nothing can overlap */
  for (int i = 0; i < n; i++)
    if (dims[i] > 1) idx[m++] = i;
  for (int i = 1; i < m; i++) /* insertion sort by stride */
    for (int j = i; j > 0 && strides[idx[j]] < strides[idx[j - 1]]; j--) {
      int t = idx[j];
      idx[j] = idx[j - 1];
      idx[j - 1] = t;
    }
  int64_t extent = 1; /* elements covered by the inner dims */
  for (int i = 0; i < m; i++) {
    int64_t s = strides[idx[i]];
    if (s < extent) return 0;
    /* footprint() has bounded a non-empty tensor; checked all the same */
    if (s > (INT64_MAX - extent) / (dims[idx[i]] - 1)) return 0;
    extent = s * (dims[idx[i]] - 1) + extent;
  }
  return 1;
}

static int views_overlap(const view *a, const view *b) {
  if (a->span == 0 || b->span == 0 || !a->base || !b->base) return 0;
  uintptr_t a0 = (uintptr_t)a->base, b0 = (uintptr_t)b->base;
  return a0 < b0 + (uintptr_t)b->span && b0 < a0 + (uintptr_t)a->span;
}

static int address_ok(const void *base, int64_t span) {
  return (uintptr_t)base <= UINTPTR_MAX - (uintptr_t)span;
}

static int is_io_dtype(rpa_dtype d) {
  return d == RPA_F32 || d == RPA_BF16 || d == RPA_F16;
}

static int is_dtype(rpa_dtype d) { return rpa_dtype_size(d) != 0; }

/* Checks a [T, H, D] tensor's strides and computes its view. */
static rpa_status check_tensor(rpa_context *ctx, const char *name,
                               const rpa_tensor *t, int64_t tokens,
                               int64_t heads, int64_t dim, int written,
                               view *out) {
  if (t->token_stride < 0 || t->head_stride < 0)
    return rpa_fail(ctx, RPA_INVALID_STRIDE,
                    "%s: strides must be >= 0 (token_stride %lld, "
                    "head_stride %lld)",
                    name, (long long)t->token_stride,
                    (long long)t->head_stride);
  const int64_t dims[3] = {tokens, heads, dim};
  const int64_t strides[3] = {t->token_stride, t->head_stride, 1};
  out->name = name;
  out->base = t->data;
  if (!footprint(dims, strides, 3, rpa_dtype_size(t->dtype), &out->span) ||
      !address_ok(t->data, out->span))
    return rpa_fail(ctx, RPA_OVERFLOW,
                    "%s: [%lld, %lld, %lld] with strides (%lld, %lld, 1) "
                    "overflows the address space",
                    name, (long long)tokens, (long long)heads, (long long)dim,
                    (long long)t->token_stride, (long long)t->head_stride);
  if (written && !non_overlapping(dims, strides, 3))
    return rpa_fail(ctx, RPA_INVALID_STRIDE,
                    "%s: strides (%lld, %lld, 1) make distinct elements of "
                    "[%lld, %lld, %lld] overlap",
                    name, (long long)t->token_stride,
                    (long long)t->head_stride, (long long)tokens,
                    (long long)heads, (long long)dim);
  return RPA_OK;
}

static rpa_status check_cache_part(rpa_context *ctx, const char *name,
                                   const void *base, const rpa_kv_cache *c,
                                   int64_t page_stride, int64_t slot_stride,
                                   int64_t head_stride, int64_t heads,
                                   int64_t dim, int written, view *out) {
  if (page_stride < 0 || slot_stride < 0 || head_stride < 0)
    return rpa_fail(ctx, RPA_INVALID_STRIDE,
                    "%s: strides must be >= 0 (page %lld, slot %lld, head "
                    "%lld)",
                    name, (long long)page_stride, (long long)slot_stride,
                    (long long)head_stride);
  const int64_t dims[4] = {c->num_pages, c->page_size, heads, dim};
  const int64_t strides[4] = {page_stride, slot_stride, head_stride, 1};
  out->name = name;
  out->base = base;
  if (!footprint(dims, strides, 4, rpa_dtype_size(c->dtype), &out->span) ||
      !address_ok(base, out->span))
    return rpa_fail(ctx, RPA_OVERFLOW,
                    "%s: %d pages of %d slots overflow the address space",
                    name, (int)c->num_pages, (int)c->page_size);
  if (written && !non_overlapping(dims, strides, 4))
    return rpa_fail(ctx, RPA_INVALID_STRIDE,
                    "%s: strides (page %lld, slot %lld, head %lld, 1) make "
                    "distinct cache elements overlap",
                    name, (long long)page_stride, (long long)slot_stride,
                    (long long)head_stride);
  return RPA_OK;
}

/* K and V in one buffer (upstream's combined layout, FlashInfer's HND):
   allowed when their strides are equal and V's rows fall in the gaps
   between K's rows. The V row of (page 0, slot 0, head 0) sits `delta`
   elements from K's; with the lattice of K row starts non-overlapping, the
   K rows nearest to it are the largest lattice point <= delta (greedy
   digits by descending stride) and the next one in address order. */
static int kv_interleave_ok(const rpa_kv_cache *c, int64_t heads, int64_t D,
                            int64_t Dv) {
  if (c->k_page_stride != c->v_page_stride ||
      c->k_slot_stride != c->v_slot_stride ||
      c->k_head_stride != c->v_head_stride)
    return 0;
  const size_t es = rpa_dtype_size(c->dtype);
  ptrdiff_t bytes = (const char *)c->v - (const char *)c->k;
  if (bytes % (ptrdiff_t)es != 0) return 0;
  int64_t delta = bytes / (ptrdiff_t)es, first = D, second = Dv;
  if (delta < 0) { /* measure K's rows from V's instead */
    delta = -delta;
    first = Dv;
    second = D;
  }
  int64_t dims[3] = {c->num_pages, c->page_size, heads};
  int64_t strides[3] = {c->k_page_stride, c->k_slot_stride, c->k_head_stride};
  for (int i = 0; i < 3; i++) /* sort by descending stride */
    for (int j = i + 1; j < 3; j++)
      if (strides[j] > strides[i]) {
        int64_t t = strides[i];
        strides[i] = strides[j];
        strides[j] = t;
        t = dims[i];
        dims[i] = dims[j];
        dims[j] = t;
      }
  int64_t digit[3], x = 0, rem = delta;
  for (int i = 0; i < 3; i++) {
    digit[i] = strides[i] > 0 ? rem / strides[i] : 0;
    if (digit[i] > dims[i] - 1) digit[i] = dims[i] - 1;
    x += digit[i] * strides[i];
    rem -= digit[i] * strides[i];
  }
  if (delta < x + first) return 0; /* V's row starts inside K's row x */
  for (int i = 2; i >= 0; i--) {   /* the next K row start after x */
    if (dims[i] > 1 && digit[i] < dims[i] - 1) {
      int64_t next = x + strides[i];
      for (int j = i + 1; j < 3; j++) next -= digit[j] * strides[j];
      return next >= delta + second;
    }
  }
  return 1; /* x is the last K row */
}

static int finite_positive(float x) { return isfinite(x) && x > 0.0f; }

/* ---- rpa_attention's arguments, section by section -----------------------

   docs/contract.md, section 13, "The order of validation", numbers every
   rule and groups them into sections. Each function below checks one
   section (the Sequences section: one group of its rules), in the table's
   order, and returns its first failure; rpa_validate_args calls them in the
   contract's order. What a section learns that a later one needs (the page
   table's length, S', the mask's size, the buffers' footprints) is passed
   on explicitly. */

static int updates(const rpa_args *a) { return a->update_kv_cache != 0; }

static int is_latent(const rpa_args *a) { return a->cache.v == NULL; }

/* Dv: head_dim_v, or head_dim where head_dim_v is 0. */
static int32_t value_dim(const rpa_args *a) {
  return a->head_dim_v ? a->head_dim_v : a->head_dim;
}

/* Shape, rules 2-7: token, head and head-dim counts. */
static rpa_status check_shape(rpa_context *ctx, const rpa_args *a) {
  if (a->num_tokens < 0)
    return rpa_fail(ctx, RPA_INVALID_SHAPE, "num_tokens: %d is negative",
                    (int)a->num_tokens);
  if (a->num_q_heads < 1 || a->num_kv_heads < 1)
    return rpa_fail(ctx, RPA_INVALID_SHAPE,
                    "num_q_heads (%d) and num_kv_heads (%d) must be >= 1",
                    (int)a->num_q_heads, (int)a->num_kv_heads);
  if (a->num_q_heads % a->num_kv_heads != 0)
    return rpa_fail(ctx, RPA_INVALID_SHAPE,
                    "num_q_heads: %d is not a multiple of num_kv_heads %d",
                    (int)a->num_q_heads, (int)a->num_kv_heads);
  if (a->head_dim < 1 || a->head_dim > RPA_MAX_HEAD_DIM)
    return rpa_fail(ctx, RPA_INVALID_SHAPE, "head_dim: %d is outside [1, %d]",
                    (int)a->head_dim, RPA_MAX_HEAD_DIM);
  const int32_t dv = value_dim(a);
  if (dv < 1 || dv > RPA_MAX_HEAD_DIM)
    return rpa_fail(ctx, RPA_INVALID_SHAPE, "head_dim_v: %d is outside [1, %d]",
                    (int)a->head_dim_v, RPA_MAX_HEAD_DIM);
  if (is_latent(a) && dv > a->head_dim)
    return rpa_fail(ctx, RPA_INVALID_SHAPE,
                    "head_dim_v: %d exceeds head_dim %d, but cache.v is NULL "
                    "(latent cache: values are the head of each key row)",
                    (int)dv, (int)a->head_dim);
  return RPA_OK;
}

/* Dtypes, rules 8-12: q and out are f32, bf16 or f16; new keys and values
   come in the cache's dtype. */
static rpa_status check_dtypes(rpa_context *ctx, const rpa_args *a) {
  if (!is_io_dtype(a->q.dtype))
    return rpa_fail(ctx, RPA_INVALID_DTYPE,
                    "q.dtype: %d is not f32, bf16 or f16", (int)a->q.dtype);
  if (!is_io_dtype(a->out.dtype))
    return rpa_fail(ctx, RPA_INVALID_DTYPE,
                    "out.dtype: %d is not f32, bf16 or f16", (int)a->out.dtype);
  if (!is_dtype(a->cache.dtype))
    return rpa_fail(ctx, RPA_INVALID_DTYPE, "cache.dtype: %d is not a dtype",
                    (int)a->cache.dtype);
  if (updates(a) && a->k.dtype != a->cache.dtype)
    return rpa_fail(ctx, RPA_INVALID_DTYPE,
                    "k.dtype: %s differs from cache.dtype %s (new keys come "
                    "in the cache's dtype)",
                    rpa_dtype_name(a->k.dtype), rpa_dtype_name(a->cache.dtype));
  if (updates(a) && !is_latent(a) && a->v.dtype != a->cache.dtype)
    return rpa_fail(ctx, RPA_INVALID_DTYPE,
                    "v.dtype: %s differs from cache.dtype %s (new values "
                    "come in the cache's dtype)",
                    rpa_dtype_name(a->v.dtype), rpa_dtype_name(a->cache.dtype));
  return RPA_OK;
}

/* Batch sizes, rules 13-17; *table_len = num_seqs * pages_per_seq, the page
   table's entries. */
static rpa_status check_batch_sizes(rpa_context *ctx, const rpa_args *a,
                                    int64_t *table_len) {
  if (a->num_seqs < 0)
    return rpa_fail(ctx, RPA_INVALID_LENGTHS, "num_seqs: %d is negative",
                    (int)a->num_seqs);
  if (a->cache.page_size < 1)
    return rpa_fail(ctx, RPA_INVALID_PAGES, "cache.page_size: %d is < 1",
                    (int)a->cache.page_size);
  if (a->cache.num_pages < 0)
    return rpa_fail(ctx, RPA_INVALID_PAGES, "cache.num_pages: %d is negative",
                    (int)a->cache.num_pages);
  if (a->pages_per_seq < 0)
    return rpa_fail(ctx, RPA_INVALID_PAGES, "pages_per_seq: %d is negative",
                    (int)a->pages_per_seq);
  if (!mul_ok(a->num_seqs, a->pages_per_seq, table_len))
    return rpa_fail(ctx, RPA_OVERFLOW, "num_seqs * pages_per_seq overflows");
  return RPA_OK;
}

/* Required pointers, rules 18-21, in that order. */
static rpa_status check_pointers(rpa_context *ctx, const rpa_args *a,
                                 int64_t table_len) {
  if (!a->q.data) return rpa_fail(ctx, RPA_NULL_POINTER, "q.data: NULL");
  if (!a->out.data) return rpa_fail(ctx, RPA_NULL_POINTER, "out.data: NULL");
  if (!a->cache.k) return rpa_fail(ctx, RPA_NULL_POINTER, "cache.k: NULL");
  if (updates(a) && !a->k.data)
    return rpa_fail(ctx, RPA_NULL_POINTER,
                    "k.data: NULL while update_kv_cache is on");
  if (updates(a) && !is_latent(a) && !a->v.data)
    return rpa_fail(ctx, RPA_NULL_POINTER,
                    "v.data: NULL while update_kv_cache is on");
  if (a->num_seqs > 0 && (!a->cu_q_lens || !a->kv_lens))
    return rpa_fail(ctx, RPA_NULL_POINTER, "%s: NULL with num_seqs %d",
                    a->cu_q_lens ? "kv_lens" : "cu_q_lens", (int)a->num_seqs);
  if (table_len > 0 && !a->page_indices)
    return rpa_fail(ctx, RPA_NULL_POINTER, "page_indices: NULL");
  return RPA_OK;
}

/* Parameters, rules 22-29: scales, soft cap, window and sinks. */
static rpa_status check_parameters(rpa_context *ctx, const rpa_args *a) {
  if (!isfinite(a->sm_scale))
    return rpa_fail(ctx, RPA_INVALID_PARAMETER, "sm_scale: %g is not finite",
                    (double)a->sm_scale);
  if (!finite_positive(a->k_scale))
    return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                    "k_scale: %g must be finite and > 0", (double)a->k_scale);
  if (!finite_positive(a->v_scale))
    return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                    "v_scale: %g must be finite and > 0", (double)a->v_scale);
  if (a->q_scale != 0.0f && !finite_positive(a->q_scale))
    return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                    "q_scale: %g must be 0 (off) or finite and > 0",
                    (double)a->q_scale);
  if (a->soft_cap != 0.0f && !finite_positive(a->soft_cap))
    return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                    "soft_cap: %g must be 0 (off) or finite and > 0",
                    (double)a->soft_cap);
  if (a->sliding_window < 0)
    return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                    "sliding_window: %d must be 0 (off) or > 0",
                    (int)a->sliding_window);
  if (a->sliding_window > 0 && !a->causal)
    return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                    "sliding_window: %d given with non-causal attention "
                    "(a window needs causal)",
                    (int)a->sliding_window);
  if (a->sinks)
    for (int32_t h = 0; h < a->num_q_heads; h++)
      if (isnan(a->sinks[h]) || a->sinks[h] == INFINITY)
        return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                        "sinks: head %d is %g (NaN and +inf are not logits; "
                        "-inf means no sink)",
                        (int)h, (double)a->sinks[h]);
  return RPA_OK;
}

/* Distribution, rule 30; *seqs = S', the sequences the call covers:
   distribution[2] when a distribution is given, else num_seqs. */
static rpa_status check_distribution(rpa_context *ctx, const rpa_args *a,
                                     int32_t *seqs) {
  const int32_t *dist = a->distribution;
  *seqs = a->num_seqs;
  if (!dist) return RPA_OK;
  if (dist[0] < 0 || dist[0] > dist[1] || dist[1] > dist[2] ||
      dist[2] > a->num_seqs)
    return rpa_fail(ctx, RPA_INVALID_DISTRIBUTION,
                    "distribution: (%d, %d, %d) must satisfy 0 <= "
                    "decode_end <= prefill_end <= mixed_end <= num_seqs %d",
                    (int)dist[0], (int)dist[1], (int)dist[2], (int)a->num_seqs);
  *seqs = dist[2];
  return RPA_OK;
}

/* Sequences, rule 31 once, then rules 32-36 for each sequence in turn: its
   lengths and the page ids it uses. Fills the batch's totals into info. */
static rpa_status check_lengths(rpa_context *ctx, const rpa_args *a,
                                int32_t seqs, rpa_batch_info *info) {
  if (seqs > 0 && a->cu_q_lens[0] != 0)
    return rpa_fail(ctx, RPA_INVALID_LENGTHS, "cu_q_lens[0]: %d is not 0",
                    (int)a->cu_q_lens[0]);
  int64_t total_kv = 0;
  int32_t num_decode = 0, max_q = 0;
  for (int32_t i = 0; i < seqs; i++) {
    const int32_t q0 = a->cu_q_lens[i], q1 = a->cu_q_lens[i + 1];
    const int32_t kv = a->kv_lens[i];
    if (q1 <= q0)
      return rpa_fail(ctx, RPA_INVALID_LENGTHS,
                      "cu_q_lens: sequence %d has q_len %lld (cu_q_lens[%d] "
                      "= %d, cu_q_lens[%d] = %d); each sequence needs "
                      "q_len >= 1",
                      (int)i, (long long)q1 - q0, (int)i, (int)q0, (int)i + 1,
                      (int)q1);
    if (q1 > a->num_tokens)
      return rpa_fail(ctx, RPA_INVALID_LENGTHS,
                      "cu_q_lens: sequence %d ends at token %d, past "
                      "num_tokens %d",
                      (int)i, (int)q1, (int)a->num_tokens);
    const int32_t q_len = q1 - q0;
    if (kv < q_len)
      return rpa_fail(ctx, RPA_INVALID_LENGTHS,
                      "kv_lens: sequence %d has kv_len %d < q_len %d "
                      "(kv_len includes the new tokens)",
                      (int)i, (int)kv, (int)q_len);
    const int64_t pages =
        ((int64_t)kv + a->cache.page_size - 1) / a->cache.page_size;
    if (pages > a->pages_per_seq)
      return rpa_fail(ctx, RPA_INVALID_PAGES,
                      "pages_per_seq: sequence %d needs %lld pages for "
                      "kv_len %d at page_size %d, more than pages_per_seq %d",
                      (int)i, (long long)pages, (int)kv,
                      (int)a->cache.page_size, (int)a->pages_per_seq);
    const int32_t *row = a->page_indices + (int64_t)i * a->pages_per_seq;
    for (int64_t p = 0; p < pages; p++)
      if (row[p] < 0 || row[p] >= a->cache.num_pages)
        return rpa_fail(ctx, RPA_INVALID_PAGES,
                        "page_indices: sequence %d, logical page %lld is "
                        "physical page %d, outside [0, num_pages %d)",
                        (int)i, (long long)p, (int)row[p],
                        (int)a->cache.num_pages);
    total_kv += kv;
    num_decode += q_len == 1;
    if (q_len > max_q) max_q = q_len;
  }
  info->num_decode = num_decode;
  info->max_q_len = max_q;
  info->total_q = seqs > 0 ? a->cu_q_lens[seqs] : 0;
  info->total_kv = total_kv;
  return RPA_OK;
}

/* Sequences, rules 37-38 for each sequence in turn: the distribution hint
   against the lengths. Checked once every length is known to be sound, so
   that a broken length is reported as such. */
static rpa_status check_hint(rpa_context *ctx, const rpa_args *a,
                             int32_t seqs) {
  const int32_t *dist = a->distribution;
  for (int32_t i = 0; dist && i < seqs; i++) {
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    if (i < dist[0] && q_len != 1)
      return rpa_fail(ctx, RPA_INVALID_DISTRIBUTION,
                      "distribution: sequence %d is in the decode range "
                      "[0, %d) but has q_len %d",
                      (int)i, (int)dist[0], (int)q_len);
    if (i >= dist[0] && i < dist[1]) {
      const int32_t first = a->cu_q_lens[dist[0] + 1] - a->cu_q_lens[dist[0]];
      if (q_len != first)
        return rpa_fail(ctx, RPA_INVALID_DISTRIBUTION,
                        "distribution: sequence %d is in the prefill range "
                        "[%d, %d) of fixed chunk size %d but has q_len %d",
                        (int)i, (int)dist[0], (int)dist[1], (int)first,
                        (int)q_len);
    }
  }
  return RPA_OK;
}

/* Sequences, rules M1-M3 once and M4-M7 for each sequence in turn: a custom
   mask lies in its buffer, marks the diagonal and nothing above it.
   *mask_bytes: the mask's size (0 without one). */
static rpa_status check_mask(rpa_context *ctx, const rpa_args *a, int32_t seqs,
                             int64_t *mask_bytes) {
  *mask_bytes = 0;
  if (!a->mask) return RPA_OK;
  if (!a->causal)
    return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                    "mask: given with non-causal attention (a custom mask "
                    "refines the causal one)");
  if (seqs > 0 && !a->mask_offsets)
    return rpa_fail(ctx, RPA_NULL_POINTER,
                    "mask_offsets: NULL while mask is given");
  if (a->mask_bits < 0)
    return rpa_fail(ctx, RPA_INVALID_PARAMETER, "mask_bits: %lld is negative",
                    (long long)a->mask_bits);
  *mask_bytes = a->mask_bits / 8 + (a->mask_bits % 8 != 0);
  if (!address_ok(a->mask, *mask_bytes))
    return rpa_fail(ctx, RPA_OVERFLOW,
                    "mask: %lld bits overflow the address space",
                    (long long)a->mask_bits);
  for (int32_t i = 0; i < seqs; i++) {
    const int64_t off = a->mask_offsets[i];
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    if (off == -1) continue;
    if (off < 0)
      return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                      "mask_offsets: sequence %d has offset %lld (-1 for "
                      "no mask, else >= 0)",
                      (int)i, (long long)off);
    const int64_t bits = (int64_t)q_len * q_len;
    if (off > a->mask_bits - bits)
      return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                      "mask: sequence %d's %d x %d bits at offset %lld "
                      "run past mask_bits %lld",
                      (int)i, (int)q_len, (int)q_len, (long long)off,
                      (long long)a->mask_bits);
    for (int32_t j = 0; j < q_len; j++) {
      if (!rpa_mask_bit(a, i, q_len, j, j))
        return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                        "mask: sequence %d, new token %d does not see "
                        "itself (every row must mark its own token)",
                        (int)i, (int)j);
      for (int32_t k = j + 1; k < q_len; k++)
        if (rpa_mask_bit(a, i, q_len, j, k))
          return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                          "mask: sequence %d, new token %d sees new token "
                          "%d, a later position than its own",
                          (int)i, (int)j, (int)k);
    }
  }
  return RPA_OK;
}

/* Sequences, rules C1-C3 once and C4-C7 for each sequence in turn: a shared
   prefix is cached, in the same pages for every member, and never
   written. */
static rpa_status check_shared(rpa_context *ctx, const rpa_args *a,
                               int32_t seqs) {
  if (a->num_shared < 0)
    return rpa_fail(ctx, RPA_INVALID_PARAMETER, "num_shared: %d is negative",
                    (int)a->num_shared);
  if (a->num_shared > 0 && (!a->shared_len || (seqs > 0 && !a->shared_group)))
    return rpa_fail(ctx, RPA_NULL_POINTER, "%s: NULL with num_shared %d",
                    a->shared_len ? "shared_group" : "shared_len",
                    (int)a->num_shared);
  for (int32_t g = 0; g < a->num_shared; g++)
    if (a->shared_len[g] < 0)
      return rpa_fail(ctx, RPA_INVALID_LENGTHS,
                      "shared_len: group %d has %d tokens", (int)g,
                      (int)a->shared_len[g]);
  for (int32_t i = 0; a->num_shared > 0 && i < seqs; i++) {
    const int32_t g = a->shared_group[i];
    if (g == -1) continue;
    if (g < 0 || g >= a->num_shared)
      return rpa_fail(ctx, RPA_INVALID_PARAMETER,
                      "shared_group: sequence %d is in group %d, not -1 or in "
                      "[0, num_shared %d)",
                      (int)i, (int)g, (int)a->num_shared);
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    const int32_t cached = a->kv_lens[i] - q_len, L = a->shared_len[g];
    if (L > cached)
      return rpa_fail(ctx, RPA_INVALID_LENGTHS,
                      "shared_len: group %d's prefix of %d tokens is longer "
                      "than sequence %d's %d cached tokens (kv_len - q_len)",
                      (int)g, (int)L, (int)i, (int)cached);
    const int64_t ps = a->cache.page_size;
    const int64_t pages = (L + ps - 1) / ps;
    if (updates(a) && cached < pages * ps)
      return rpa_fail(ctx, RPA_OVERLAP,
                      "shared_len: sequence %d writes its token at position "
                      "%d into logical page %lld, a page of group %d's shared "
                      "prefix (%d tokens)",
                      (int)i, (int)cached, (long long)(cached / ps), (int)g,
                      (int)L);
    int32_t prev = i - 1;
    while (prev >= 0 && a->shared_group[prev] != g) prev--;
    if (prev < 0) continue;
    const int32_t *row = a->page_indices + (int64_t)i * a->pages_per_seq;
    const int32_t *ref = a->page_indices + (int64_t)prev * a->pages_per_seq;
    for (int64_t p = 0; p < pages; p++)
      if (row[p] != ref[p])
        return rpa_fail(ctx, RPA_INVALID_PAGES,
                        "shared_group: sequence %d's logical page %lld is "
                        "physical page %d, but group %d's prefix has page %d "
                        "there (sequence %d)",
                        (int)i, (long long)p, (int)row[p], (int)g, (int)ref[p],
                        (int)prev);
  }
  return RPA_OK;
}

/* Sequences, rule 38a (with update): pages the fused write touches must
   not be read by another sequence of the call, nor written twice: items run
   on several threads, so such a read would see the old or the new token by
   timing. Every (physical page, writer) pair is listed and sorted; each
   page a sequence reads is looked up in the list. Costs O(pages read x
   log(pages written)), never O(num_pages). Lengths and page ids are
   already valid. */
typedef struct written_page {
  int32_t page, seq;
  int64_t logical;
} written_page;

static int cmp_written(const void *x, const void *y) {
  const written_page *a = x, *b = y;
  if (a->page != b->page) return a->page < b->page ? -1 : 1;
  if (a->seq != b->seq) return a->seq < b->seq ? -1 : 1;
  return a->logical < b->logical ? -1 : (a->logical > b->logical);
}

static const written_page *find_written(const written_page *w, int64_t n,
                                        int32_t page) {
  int64_t lo = 0, hi = n; /* first entry with w.page >= page */
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (w[mid].page < page)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && w[lo].page == page ? &w[lo] : NULL;
}

static rpa_status check_written_pages(rpa_context *ctx, const rpa_args *a,
                                      int32_t seqs) {
  const int32_t ps = a->cache.page_size;
  int64_t n = 0;
  for (int32_t i = 0; i < seqs; i++) {
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    const int64_t first = ((int64_t)a->kv_lens[i] - q_len) / ps;
    n += ((int64_t)a->kv_lens[i] - 1) / ps - first + 1;
  }
  if (n == 0 || !ctx) return RPA_OK;
  written_page *w = rpa_scratch(ctx, sizeof(written_page) * (size_t)n);
  if (!w)
    return rpa_fail(ctx, RPA_OUT_OF_MEMORY, "scratch: %zu bytes",
                    sizeof(written_page) * (size_t)n);
  int64_t k = 0;
  for (int32_t i = 0; i < seqs; i++) {
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    const int32_t *row = a->page_indices + (int64_t)i * a->pages_per_seq;
    const int64_t first = ((int64_t)a->kv_lens[i] - q_len) / ps;
    for (int64_t lp = first; lp <= ((int64_t)a->kv_lens[i] - 1) / ps; lp++) {
      w[k].page = row[lp];
      w[k].seq = i;
      w[k].logical = lp;
      k++;
    }
  }
  qsort(w, (size_t)n, sizeof *w, cmp_written);
  for (int64_t j = 1; j < n; j++)
    if (w[j].page == w[j - 1].page)
      return rpa_fail(
          ctx, RPA_OVERLAP,
          "page_indices: sequence %d (logical page %lld) and sequence %d "
          "(logical page %lld) both write new tokens into physical page %d "
          "in this call; a page the call writes must belong to one logical "
          "page of one sequence",
          (int)w[j - 1].seq, (long long)w[j - 1].logical, (int)w[j].seq,
          (long long)w[j].logical, (int)w[j].page);
  for (int32_t i = 0; i < seqs; i++) {
    const int32_t *row = a->page_indices + (int64_t)i * a->pages_per_seq;
    const int64_t pages = ((int64_t)a->kv_lens[i] + ps - 1) / ps;
    for (int64_t lp = 0; lp < pages; lp++) {
      const written_page *hit = find_written(w, n, row[lp]);
      if (hit && (hit->seq != i || hit->logical != lp))
        return rpa_fail(
            ctx, RPA_OVERLAP,
            "page_indices: sequence %d reads physical page %d (its logical "
            "page %lld), which sequence %d writes new tokens into in this "
            "call (logical page %lld); the read would depend on thread "
            "timing",
            (int)i, (int)row[lp], (long long)lp, (int)hit->seq,
            (long long)hit->logical);
    }
  }
  return RPA_OK;
}

/* The footprint of every tensor of the call, as the layout rules compute
   them and the overlap rules compare them. A tensor the call does not use
   keeps span 0. */
typedef struct call_views {
  view q, k, v, out, ck, cv, lse;
  int64_t table_bytes; /* page_indices */
} call_views;

/* Layouts, rules 39-46: each tensor's strides, then its footprint, then
   (written tensors) self-overlap; then the page table's byte size. */
static rpa_status check_layouts(rpa_context *ctx, const rpa_args *a,
                                int64_t table_len, call_views *w) {
  const int64_t T = a->num_tokens, Hq = a->num_q_heads, Hkv = a->num_kv_heads,
                D = a->head_dim, dv = value_dim(a);
  const int update = updates(a), latent = is_latent(a);
  rpa_status st;
  w->k = (view){"k", NULL, 0};
  w->v = (view){"v", NULL, 0};
  w->cv = (view){"cache.v", NULL, 0};
  w->lse = (view){"lse", NULL, 0};
  if ((st = check_tensor(ctx, "q", &a->q, T, Hq, D, 0, &w->q))) return st;
  if ((st = check_tensor(ctx, "out", &a->out, T, Hq, dv, 1, &w->out)))
    return st;
  if (update && (st = check_tensor(ctx, "k", &a->k, T, Hkv, D, 0, &w->k)))
    return st;
  if (update && !latent &&
      (st = check_tensor(ctx, "v", &a->v, T, Hkv, dv, 0, &w->v)))
    return st;
  if ((st = check_cache_part(ctx, "cache.k", a->cache.k, &a->cache,
                             a->cache.k_page_stride, a->cache.k_slot_stride,
                             a->cache.k_head_stride, Hkv, D, update, &w->ck)))
    return st;
  if (!latent &&
      (st = check_cache_part(ctx, "cache.v", a->cache.v, &a->cache,
                             a->cache.v_page_stride, a->cache.v_slot_stride,
                             a->cache.v_head_stride, Hkv, dv, update, &w->cv)))
    return st;
  if (a->lse) {
    if (a->lse_token_stride < 0 || a->lse_head_stride < 0)
      return rpa_fail(ctx, RPA_INVALID_STRIDE, "lse: strides must be >= 0");
    const int64_t dims[2] = {T, Hq};
    const int64_t strides[2] = {a->lse_token_stride, a->lse_head_stride};
    if (!footprint(dims, strides, 2, sizeof(float), &w->lse.span) ||
        !address_ok(a->lse, w->lse.span))
      return rpa_fail(ctx, RPA_OVERFLOW, "lse: [%lld, %lld] overflows",
                      (long long)T, (long long)Hq);
    if (!non_overlapping(dims, strides, 2))
      return rpa_fail(ctx, RPA_INVALID_STRIDE,
                      "lse: strides (%lld, %lld) make distinct elements "
                      "overlap",
                      (long long)a->lse_token_stride,
                      (long long)a->lse_head_stride);
    w->lse.base = a->lse;
  }
  if (!mul_ok(table_len, 4, &w->table_bytes) ||
      !address_ok(a->page_indices, w->table_bytes))
    return rpa_fail(ctx, RPA_OVERFLOW,
                    "pages_per_seq: num_seqs %d * pages_per_seq %d entries "
                    "overflow the address space",
                    (int)a->num_seqs, (int)a->pages_per_seq);
  return RPA_OK;
}

/* Overlaps, rules 47-48: a written cache's K and V overlap only as an
   interleave; then out, lse and (with update) the cache parts each against
   every other buffer, the metadata arrays included. The two cache parts may
   interleave with each other (upstream's combined layout). */
static rpa_status check_overlaps(rpa_context *ctx, const rpa_args *a,
                                 int64_t mask_bytes, const call_views *w) {
  const int update = updates(a);
  const int64_t Hq = a->num_q_heads;
  const view meta[8] = {
      {"cu_q_lens", a->cu_q_lens, ((int64_t)a->num_seqs + 1) * 4},
      {"kv_lens", a->kv_lens, (int64_t)a->num_seqs * 4},
      {"page_indices", a->page_indices, w->table_bytes},
      {"sinks", a->sinks, a->sinks ? Hq * 4 : 0},
      {"mask", a->mask, a->mask ? mask_bytes : 0},
      {"mask_offsets", a->mask ? a->mask_offsets : NULL,
       a->mask ? (int64_t)a->num_seqs * 8 : 0},
      {"shared_len", a->num_shared > 0 ? a->shared_len : NULL,
       (int64_t)a->num_shared * 4},
      {"shared_group", a->num_shared > 0 ? a->shared_group : NULL,
       a->num_shared > 0 ? (int64_t)a->num_seqs * 4 : 0}};
  if (update && !is_latent(a) && views_overlap(&w->ck, &w->cv) &&
      !kv_interleave_ok(&a->cache, a->num_kv_heads, a->head_dim, value_dim(a)))
    return rpa_fail(ctx, RPA_OVERLAP,
                    "cache.v: its rows overlap cache.k's rows, and the fused "
                    "update writes both (K and V may share a buffer only "
                    "interleaved, with equal strides)");
  const view *written[4] = {&w->out, &w->lse, update ? &w->ck : NULL,
                            update ? &w->cv : NULL};
  const view *all[15] = {&w->q,    &w->k,    &w->v,    &w->out,  &w->ck,
                         &w->cv,   &w->lse,  &meta[0], &meta[1], &meta[2],
                         &meta[3], &meta[4], &meta[5], &meta[6], &meta[7]};
  for (int i = 0; i < 4; i++) {
    if (!written[i]) continue;
    for (int r = 0; r < 15; r++) {
      const view *other = all[r];
      if (other == written[i]) continue;
      if ((written[i] == &w->ck && other == &w->cv) ||
          (written[i] == &w->cv && other == &w->ck))
        continue;
      if (views_overlap(written[i], other))
        return rpa_fail(ctx, RPA_OVERLAP, "%s: overlaps %s", written[i]->name,
                        other->name);
    }
  }
  return RPA_OK;
}

/* Every rule of docs/contract.md section 13, in its order (rule 1: args is
   not NULL, here); the first failure is returned and info is filled only on
   success. */
rpa_status rpa_validate_args(rpa_context *ctx, const rpa_args *a,
                             rpa_batch_info *info) {
  rpa_status st;
  if (!a) return rpa_fail(ctx, RPA_NULL_POINTER, "args: NULL");
  int64_t table_len = 0, mask_bytes = 0;
  int32_t seqs;
  rpa_batch_info b;
  call_views views;
  if ((st = check_shape(ctx, a))) return st;
  if ((st = check_dtypes(ctx, a))) return st;
  if ((st = check_batch_sizes(ctx, a, &table_len))) return st;
  if ((st = check_pointers(ctx, a, table_len))) return st;
  if ((st = check_parameters(ctx, a))) return st;
  if ((st = check_distribution(ctx, a, &seqs))) return st;
  if ((st = check_lengths(ctx, a, seqs, &b))) return st;
  if ((st = check_hint(ctx, a, seqs))) return st;
  if ((st = check_mask(ctx, a, seqs, &mask_bytes))) return st;
  if ((st = check_shared(ctx, a, seqs))) return st;
  if (updates(a) && (st = check_written_pages(ctx, a, seqs))) return st;
  if ((st = check_layouts(ctx, a, table_len, &views))) return st;
  if ((st = check_overlaps(ctx, a, mask_bytes, &views))) return st;
  b.num_seqs = seqs;
  b.group = a->num_q_heads / a->num_kv_heads;
  b.head_dim_v = value_dim(a);
  b.latent = is_latent(a);
  *info = b;
  return RPA_OK;
}

/* ---- rpa_merge_states ------------------------------------------------------ */

/* One state's views; name is "a", "b" or "dst", out_name and lse_name its
   parts as messages name them; written: dst. */
static rpa_status check_state(rpa_context *ctx, const char *name,
                              const char *out_name, const char *lse_name,
                              const rpa_attn_state *s, int64_t T, int64_t H,
                              int64_t D, int written, view *out, view *lse) {
  if (!s) return rpa_fail(ctx, RPA_NULL_POINTER, "%s: NULL", name);
  if (!is_io_dtype(s->out.dtype))
    return rpa_fail(ctx, RPA_INVALID_DTYPE,
                    "%s: dtype %d, must be f32, bf16 or f16", out_name,
                    (int)s->out.dtype);
  const int empty = T == 0;
  if (!s->out.data && !empty)
    return rpa_fail(ctx, RPA_NULL_POINTER, "%s: NULL", out_name);
  if (!s->lse && !empty)
    return rpa_fail(ctx, RPA_NULL_POINTER, "%s: NULL", lse_name);
  rpa_status st = check_tensor(ctx, out_name, &s->out, T, H, D, written, out);
  if (st != RPA_OK) return st;
  lse->name = lse_name;
  lse->base = s->lse;
  lse->span = 0;
  if (s->lse_token_stride < 0 || s->lse_head_stride < 0)
    return rpa_fail(ctx, RPA_INVALID_STRIDE, "%s: strides must be >= 0",
                    lse_name);
  const int64_t dims[2] = {T, H};
  const int64_t strides[2] = {s->lse_token_stride, s->lse_head_stride};
  if (!footprint(dims, strides, 2, sizeof(float), &lse->span) ||
      !address_ok(s->lse, lse->span))
    return rpa_fail(ctx, RPA_OVERFLOW, "%s: [%lld, %lld] overflows", lse_name,
                    (long long)T, (long long)H);
  if (written && !non_overlapping(dims, strides, 2))
    return rpa_fail(ctx, RPA_INVALID_STRIDE,
                    "%s: strides (%lld, %lld) make distinct elements overlap",
                    lse_name, (long long)s->lse_token_stride,
                    (long long)s->lse_head_stride);
  return RPA_OK;
}

static int same_tensor(const rpa_tensor *x, const rpa_tensor *y) {
  return x->data == y->data && x->dtype == y->dtype &&
         x->token_stride == y->token_stride && x->head_stride == y->head_stride;
}

rpa_status rpa_validate_merge(rpa_context *ctx, int32_t T, int32_t H,
                              int32_t D, const rpa_attn_state *a,
                              const rpa_attn_state *b,
                              const rpa_attn_state *dst) {
  if (T < 0 || H <= 0 || D <= 0)
    return rpa_fail(ctx, RPA_INVALID_SHAPE,
                    "num_tokens %d, num_heads %d, head_dim %d: need "
                    "num_tokens >= 0 and the others > 0",
                    (int)T, (int)H, (int)D);
  view ao, al, bo, bl, dout, dl;
  rpa_status st = check_state(ctx, "a", "a.out", "a.lse", a, T, H, D, 0, &ao, &al);
  if (st == RPA_OK)
    st = check_state(ctx, "b", "b.out", "b.lse", b, T, H, D, 0, &bo, &bl);
  if (st == RPA_OK)
    st = check_state(ctx, "dst", "dst.out", "dst.lse", dst, T, H, D, 1, &dout, &dl);
  if (st != RPA_OK) return st;
  /* dst may be one of the inputs exactly: every element is then read before
     it is written. Any other overlap of a written view is refused. */
  const int out_is_a = same_tensor(&dst->out, &a->out),
            out_is_b = same_tensor(&dst->out, &b->out);
  const int lse_is_a = dst->lse == a->lse &&
                       dst->lse_token_stride == a->lse_token_stride &&
                       dst->lse_head_stride == a->lse_head_stride;
  const int lse_is_b = dst->lse == b->lse &&
                       dst->lse_token_stride == b->lse_token_stride &&
                       dst->lse_head_stride == b->lse_head_stride;
  const view *others[4] = {&ao, &bo, &al, &bl};
  const int skip_out[4] = {out_is_a, out_is_b, 0, 0};
  const int skip_lse[4] = {0, 0, lse_is_a, lse_is_b};
  for (int i = 0; i < 4; i++) {
    if (!skip_out[i] && views_overlap(&dout, others[i]))
      return rpa_fail(ctx, RPA_OVERLAP,
                      "dst.out overlaps %s (dst may be an input only "
                      "exactly: the same data, dtype and strides)",
                      others[i]->name);
    if (!skip_lse[i] && views_overlap(&dl, others[i]))
      return rpa_fail(ctx, RPA_OVERLAP,
                      "dst.lse overlaps %s (dst may be an input only "
                      "exactly: the same data and strides)",
                      others[i]->name);
  }
  if (views_overlap(&dout, &dl))
    return rpa_fail(ctx, RPA_OVERLAP, "dst.out overlaps dst.lse");
  return RPA_OK;
}
