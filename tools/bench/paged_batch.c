/* Building a benchmark batch, and the sampled reference check. */
#include "paged_batch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counting.h"
#include "limits.h"

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void *alloc_aligned(size_t bytes) {
  void *p = NULL;
  /* 2 MiB alignment so the big buffers can sit in huge pages */
  const size_t align = bytes >= ((size_t)1 << 21) ? (size_t)1 << 21 : 64;
  if (posix_memalign(&p, align, bytes ? bytes : 64) != 0) return NULL;
  return p;
}

/* Fills n elements of dtype at dst with values uniform in [-1, 1):
   a table of 4096 such values (through the library's own rounding), picked
   by a fast random stream, so hundreds of MB fill in about a second and no
   two pages are alike. */
typedef struct filler {
  unsigned char table[4096 * 4];
  size_t size; /* element bytes */
  uint64_t state;
} filler;

static void filler_init(filler *f, rpa_dtype dtype, uint64_t seed) {
  float values[4096];
  f->state = seed * 0x2545f4914f6cdd1dull + 1;
  for (int i = 0; i < 4096; i++)
    values[i] = (float)((double)(splitmix(&f->state) >> 11) * 0x1p-52 - 1.0);
  f->size = rpa_dtype_size(dtype);
  rpa_convert(values, RPA_F32, f->table, dtype, 4096);
}

static void filler_fill(filler *f, void *dst, size_t n) {
  uint64_t x = f->state | 1;
  size_t i = 0;
  switch (f->size) {
    case 1: {
      uint8_t *d = dst;
      const uint8_t *t = f->table;
      for (; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        d[i] = t[x & 4095];
      }
      break;
    }
    case 2: {
      uint16_t *d = dst;
      uint16_t t[4096];
      memcpy(t, f->table, sizeof t);
      for (; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        d[i] = t[x & 4095];
      }
      break;
    }
    default: {
      float *d = dst;
      float t[4096];
      memcpy(t, f->table, sizeof t);
      for (; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        d[i] = t[x & 4095];
      }
      break;
    }
  }
  f->state = x;
}

void bench_batch_free(bench_batch *b) {
  free(b->cu_q_lens);
  free(b->kv_lens);
  free(b->page_indices);
  free(b->sinks);
  free(b->mask);
  free(b->mask_offsets);
  free(b->shared_group);
  free(b->q);
  free(b->k);
  free(b->v);
  free(b->out);
  free(b->cache);
  memset(b, 0, sizeof *b);
}

int bench_batch_make(bench_batch *b, const bench_workload *w,
                     size_t min_pool_bytes, int huge_pages, uint64_t seed,
                     char *err, size_t err_len) {
  memset(b, 0, sizeof *b);
  const int64_t S = w->num_seqs, Hq = w->num_q_heads, Hkv = w->num_kv_heads;
  const int64_t D = w->head_dim, ps = w->page_size;
  const size_t qs = rpa_dtype_size(w->q_dtype), os = rpa_dtype_size(w->out_dtype);
  const size_t ks = rpa_dtype_size(w->kv_dtype);

  /* lengths and the page table */
  b->cu_q_lens = calloc((size_t)S + 1, sizeof(int32_t));
  b->kv_lens = calloc((size_t)S, sizeof(int32_t));
  if (!b->cu_q_lens || !b->kv_lens) goto oom;
  int64_t used_pages = 0, max_pages = 1;
  for (int64_t i = 0; i < S; i++) {
    b->cu_q_lens[i + 1] = b->cu_q_lens[i] + w->q_lens[i];
    b->kv_lens[i] = w->kv_lens[i];
    const int64_t pages = (w->kv_lens[i] + ps - 1) / ps;
    /* a shared prefix's pages are owned once, by sequence 0 */
    used_pages += pages - (i > 0 ? w->shared / ps : 0);
    if (pages > max_pages) max_pages = pages;
  }
  b->num_tokens = b->cu_q_lens[S];
  b->pages_per_seq = (int32_t)max_pages;

  /* one page: K and V of every KV head for page_size tokens */
  const int64_t page_elems = ps * Hkv * 2 * D;
  const int64_t page_bytes = page_elems * (int64_t)ks;
  int64_t pool_pages = (int64_t)(min_pool_bytes / (size_t)page_bytes);
  if (pool_pages < used_pages) pool_pages = used_pages;
  if (pool_pages > INT32_MAX || S * max_pages > INT32_MAX) {
    snprintf(err, err_len, "the page pool needs more than 2^31 pages");
    bench_batch_free(b);
    return -1;
  }
  b->num_pages = (int32_t)pool_pages;
  b->cache_bytes = (size_t)(pool_pages * page_bytes);
  b->used_cache_bytes = (size_t)(used_pages * page_bytes);

  /* Shuffled page table: sequences own a random subset of the pool in a
     random order, as after hours of serving. Unused slots hold -1. */
  uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 7;
  int32_t *perm = malloc(sizeof(int32_t) * (size_t)pool_pages);
  b->page_indices = malloc(sizeof(int32_t) * (size_t)(S * max_pages));
  if (!perm || !b->page_indices) {
    free(perm);
    goto oom;
  }
  for (int64_t i = 0; i < pool_pages; i++) perm[i] = (int32_t)i;
  for (int64_t i = pool_pages - 1; i > 0; i--) {
    const int64_t j = (int64_t)(splitmix(&rng) % (uint64_t)(i + 1));
    const int32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  int64_t next = 0;
  for (int64_t i = 0; i < S; i++)
    for (int64_t p = 0; p < max_pages; p++)
      b->page_indices[i * max_pages + p] =
          i > 0 && p < w->shared / ps ? b->page_indices[p]
          : p < (w->kv_lens[i] + ps - 1) / ps ? perm[next++] : -1;
  free(perm);

  /* dense q [T, Hq, D], k / v [T, Hkv, D], out [T, Hq, D] */
  const int64_t T = b->num_tokens;
  b->q = alloc_aligned((size_t)(T * Hq * D) * qs);
  b->k = alloc_aligned((size_t)(T * Hkv * D) * ks);
  b->v = alloc_aligned((size_t)(T * Hkv * D) * ks);
  b->out = alloc_aligned((size_t)(T * Hq * D) * os);
  b->cache = alloc_aligned(b->cache_bytes);
  if (!b->q || !b->k || !b->v || !b->out || !b->cache) goto oom;
  if (huge_pages) bench_advise_huge_pages(b->cache, b->cache_bytes);
  filler f;
  filler_init(&f, w->q_dtype, seed + 1);
  filler_fill(&f, b->q, (size_t)(T * Hq * D));
  filler_init(&f, w->kv_dtype, seed + 2);
  filler_fill(&f, b->k, (size_t)(T * Hkv * D));
  filler_fill(&f, b->v, (size_t)(T * Hkv * D));
  memset(b->out, 0, (size_t)(T * Hq * D) * os);
  if (w->sinks) {
    b->sinks = malloc(sizeof(float) * (size_t)Hq);
    if (!b->sinks) goto oom;
    for (int64_t h = 0; h < Hq; h++)
      b->sinks[h] = (float)(4.0 * (double)(splitmix(&rng) >> 11) * 0x1p-53 - 2.0);
  }

  /* Cache strides (elements) of each layout; K of page p, slot s, head h
     at k + p*page + s*slot + h*head, V likewise from v. */
  int64_t page, slot, head, v_off;
  switch (w->layout) {
    case BENCH_VLLM: /* [2, P, ps, Hkv, D] */
      slot = Hkv * D, page = ps * slot, head = D, v_off = pool_pages * page;
      break;
    case BENCH_HND: /* [P, 2, Hkv, ps, D] */
      slot = D, head = ps * D, page = 2 * Hkv * ps * D, v_off = Hkv * ps * D;
      break;
    case BENCH_COMBINED: /* [P, ps, 2*Hkv, D], K row 2h, V row 2h+1 */
    default:
      slot = 2 * Hkv * D, page = ps * slot, head = 2 * D, v_off = D;
      break;
  }
  /* Fill the pages sequences own with random values (the rest stay
     untouched: never read, never faulted in). In the vLLM layout a page's
     K and V lie in two blocks of page_elems / 2. */
  filler_init(&f, w->kv_dtype, seed + 3);
  char *base = b->cache;
  for (int64_t i = 0; i < S * max_pages; i++) {
    const int32_t p = b->page_indices[i];
    if (p < 0) continue;
    if (w->layout == BENCH_VLLM) {
      filler_fill(&f, base + (size_t)(p * page) * ks, (size_t)page);
      filler_fill(&f, base + (size_t)(v_off + p * page) * ks, (size_t)page);
    } else {
      filler_fill(&f, base + (size_t)(p * page) * ks, (size_t)page_elems);
    }
  }

  rpa_args *a = &b->args;
  *a = rpa_args_default();
  a->num_tokens = (int32_t)T;
  a->num_q_heads = (int32_t)Hq;
  a->num_kv_heads = (int32_t)Hkv;
  a->head_dim = (int32_t)D;
  a->q = (rpa_tensor){b->q, w->q_dtype, Hq * D, D};
  a->k = (rpa_tensor){b->k, w->kv_dtype, Hkv * D, D};
  a->v = (rpa_tensor){b->v, w->kv_dtype, Hkv * D, D};
  a->out = (rpa_tensor){b->out, w->out_dtype, Hq * D, D};
  a->cache.k = base;
  a->cache.v = base + (size_t)v_off * ks;
  a->cache.dtype = w->kv_dtype;
  a->cache.num_pages = b->num_pages;
  a->cache.page_size = (int32_t)ps;
  a->cache.k_page_stride = a->cache.v_page_stride = page;
  a->cache.k_slot_stride = a->cache.v_slot_stride = slot;
  a->cache.k_head_stride = a->cache.v_head_stride = head;
  a->num_seqs = (int32_t)S;
  a->cu_q_lens = b->cu_q_lens;
  a->kv_lens = b->kv_lens;
  a->page_indices = b->page_indices;
  a->pages_per_seq = b->pages_per_seq;
  a->sm_scale = 1.0f / sqrtf((float)D);
  a->soft_cap = w->soft_cap;
  a->causal = w->causal;
  a->sliding_window = w->window;
  a->sinks = b->sinks;
  a->update_kv_cache = w->update;
  if (w->shared) {
    b->shared_group = calloc((size_t)(S > 0 ? S : 1), sizeof(int32_t));
    if (!b->shared_group) goto oom;
    b->shared_len[0] = w->shared;
    a->num_shared = 1;
    a->shared_len = b->shared_len;
    a->shared_group = b->shared_group;
  }
  if (w->tree) {
    /* Every multi-token sequence: a random tree of drafts. Token j > 0
       hangs under a random one of the 8 tokens before it (drafts branch
       near their parent), and sees its ancestors and itself. */
    int64_t bits = 0;
    b->mask_offsets = malloc(sizeof(int64_t) * (size_t)(S > 0 ? S : 1));
    if (!b->mask_offsets) goto oom;
    for (int64_t i = 0; i < S; i++) {
      const int64_t ql = b->cu_q_lens[i + 1] - b->cu_q_lens[i];
      b->mask_offsets[i] = ql > 1 ? bits : -1;
      if (ql > 1) bits += ql * ql;
    }
    b->mask = calloc((size_t)(bits / 8 + 1), 1);
    int32_t *parent = malloc(sizeof(int32_t) * (size_t)(T > 0 ? T : 1));
    if (!b->mask || !parent) {
      free(parent);
      goto oom;
    }
    for (int64_t i = 0; i < S; i++) {
      const int64_t ql = b->cu_q_lens[i + 1] - b->cu_q_lens[i];
      if (ql < 2) continue;
      for (int64_t j = 0; j < ql; j++) {
        const int64_t back = j < 8 ? j : 8;
        parent[j] = j == 0 ? -1
                           : (int32_t)(j - 1 - (int64_t)(splitmix(&rng) % (uint64_t)back));
        for (int64_t k = j; k >= 0; k = parent[k]) {
          const int64_t x = b->mask_offsets[i] + j * ql + k;
          b->mask[x / 8] |= (uint8_t)(1u << (x % 8));
        }
      }
    }
    free(parent);
    a->mask = b->mask;
    a->mask_offsets = b->mask_offsets;
    a->mask_bits = bits;
  }
  return 0;
oom:
  snprintf(err, err_len, "out of memory building the batch");
  bench_batch_free(b);
  return -1;
}

/* ---- the reference check ---------------------------------------------------- */

static double dtype_tolerance(rpa_dtype d) {
  switch (d) {
    case RPA_F32: return 2e-4;  /* float32 sums in another order */
    case RPA_F16: return 2e-3;  /* 2^-11 relative rounding of O(1) values */
    default: return 1.2e-2;     /* bf16 and fp8 (which widen to bf16): 2^-8 */
  }
}

double bench_tolerance(rpa_dtype q, rpa_dtype kv, rpa_dtype out) {
  double t = dtype_tolerance(q);
  if (dtype_tolerance(kv) > t) t = dtype_tolerance(kv);
  if (dtype_tolerance(out) > t) t = dtype_tolerance(out);
  return t;
}

int bench_check_sample(rpa_context *ref, const bench_batch *b,
                       double max_sample_flops, bench_check *r) {
  memset(r, 0, sizeof *r);
  const rpa_args *a = &b->args;
  const int32_t S = a->num_seqs, Hq = a->num_q_heads;
  const int64_t D = a->head_dim;
  const size_t qs = rpa_dtype_size(a->q.dtype), os = rpa_dtype_size(a->out.dtype);
  const size_t ks = rpa_dtype_size(a->cache.dtype);
  r->tolerance = bench_tolerance(a->q.dtype, a->cache.dtype, a->out.dtype);

  /* the sample: first, longest, first multi-token, last (distinct) */
  int32_t pick[4], n = 0, longest = 0, chunk = -1;
  for (int32_t i = 0; i < S; i++) {
    if (a->kv_lens[i] > a->kv_lens[longest]) longest = i;
    if (chunk < 0 && a->cu_q_lens[i + 1] - a->cu_q_lens[i] > 1) chunk = i;
  }
  const int32_t wanted[4] = {0, longest, chunk, S - 1};
  for (int k = 0; k < 4; k++) {
    int seen = wanted[k] < 0;
    for (int j = 0; j < n; j++) seen |= pick[j] == wanted[k];
    if (!seen) pick[n++] = wanted[k];
  }

  int32_t max_rows = 1;
  for (int k = 0; k < n; k++) {
    const int32_t q_len = a->cu_q_lens[pick[k] + 1] - a->cu_q_lens[pick[k]];
    if (q_len > max_rows) max_rows = q_len;
  }
  float *want = malloc(sizeof(float) * (size_t)max_rows * (size_t)(Hq * D));
  float *got = malloc(sizeof(float) * (size_t)max_rows * (size_t)(Hq * D));
  void *out = malloc((size_t)max_rows * (size_t)(Hq * D) * os);
  if (!want || !got || !out) {
    snprintf(r->note, sizeof r->note, "out of memory");
    free(want);
    free(got);
    free(out);
    return -1;
  }

  r->ok = 1;
  for (int k = 0; k < n && r->ok; k++) {
    const int32_t i = pick[k];
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    const int32_t kv_len = a->kv_lens[i];
    /* The last rows see the most keys: keep as many as the budget allows. */
    const int64_t keys = bench_seq_kv_positions(1, kv_len, a->causal,
                                                a->sliding_window);
    const double row_flops = 4.0 * (double)D * Hq * (double)keys;
    int32_t rows = (int32_t)(max_sample_flops / row_flops);
    if (rows < 1) rows = 1;
    /* a tree is checked whole: its first rows are not a causal prefix */
    const int masked = a->mask && a->mask_offsets[i] >= 0;
    if (rows > q_len || masked) rows = q_len;
    const int64_t row0 = a->cu_q_lens[i] + q_len - rows; /* first row kept */

    /* One sequence: its last `rows` new tokens, the same pages; the tokens
       before them were written into the cache by the kernel's calls. */
    rpa_args s = *a;
    int32_t cu[2] = {0, rows}, kv[1] = {kv_len};
    s.num_tokens = rows;
    s.num_seqs = 1;
    s.cu_q_lens = cu;
    s.kv_lens = kv;
    s.page_indices = a->page_indices + (int64_t)i * a->pages_per_seq;
    s.distribution = NULL;
    s.lse = NULL;
    s.mask_offsets = a->mask ? a->mask_offsets + i : NULL;
    s.num_shared = 0; /* the same result by definition: one sequence alone */
    s.q.data = (char *)a->q.data + (size_t)(row0 * a->q.token_stride) * qs;
    s.k.data = (char *)a->k.data + (size_t)(row0 * a->k.token_stride) * ks;
    s.v.data = (char *)a->v.data + (size_t)(row0 * a->v.token_stride) * ks;
    s.out = (rpa_tensor){out, a->out.dtype, (int64_t)Hq * D, D};
    const rpa_status st = rpa_attention(ref, &s);
    if (st != RPA_OK) {
      snprintf(r->note, sizeof r->note, "reference failed on seq %d: %s",
               (int)i, rpa_context_last_error(ref));
      r->ok = 0;
      break;
    }
    const size_t count = (size_t)rows * (size_t)(Hq * D);
    rpa_convert(out, a->out.dtype, want, RPA_F32, count);
    rpa_convert((char *)a->out.data + (size_t)(row0 * a->out.token_stride) * os,
                a->out.dtype, got, RPA_F32, count);
    for (size_t e = 0; e < count; e++) {
      const double d = fabs((double)got[e] - (double)want[e]);
      if (!(d <= r->tolerance)) { /* NaN fails too */
        if (r->ok)
          snprintf(r->note, sizeof r->note,
                   "seq %d row %lld head %lld dim %lld: %g, reference %g",
                   (int)i, (long long)(row0 + (int64_t)(e / (size_t)(Hq * D))),
                   (long long)((int64_t)(e / (size_t)D) % Hq),
                   (long long)(e % (size_t)D), (double)got[e], (double)want[e]);
        r->ok = 0;
      }
      if (d > r->max_abs_err || isnan(d)) r->max_abs_err = d;
    }
    r->seqs++;
    r->rows += rows;
  }
  if (r->ok)
    snprintf(r->note, sizeof r->note, "%d seq%s, %d row%s", r->seqs,
             r->seqs == 1 ? "" : "s", r->rows, r->rows == 1 ? "" : "s");
  free(want);
  free(got);
  free(out);
  return 0;
}
