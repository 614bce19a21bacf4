/* One workload made real: a page pool far larger than the last-level cache
   with a shuffled page table, as a serving engine's would be, the queries,
   new K/V and outputs, and the rpa_args that describe them. Lean on
   purpose: one copy of everything, no guards, no snapshot of the cache
   (the fused update rewrites the same values at every call, so repeated
   calls are valid), pool pages no sequence uses are never touched. */
#ifndef RPA_BENCH_PAGED_BATCH_H
#define RPA_BENCH_PAGED_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "rpa.h"
#include "workloads.h"

typedef struct bench_batch {
  rpa_args args;
  int32_t num_tokens;     /* T = sum of q_lens */
  int32_t num_pages;      /* pages in the pool */
  int32_t pages_per_seq;
  int32_t *cu_q_lens;     /* [S + 1] */
  int32_t *kv_lens;       /* [S] */
  int32_t *page_indices;  /* [S * pages_per_seq], a shuffle of the pool */
  float *sinks;           /* [Hq] or NULL */
  uint8_t *mask;          /* tree workloads: the packed mask bits, */
  int64_t *mask_offsets;  /* [S] (-1: causal) */
  int32_t shared_len[1];  /* shared workloads: the one group's prefix, */
  int32_t *shared_group;  /* [S], all 0 */
  void *q;                /* [T, Hq, D]   q dtype */
  void *k, *v;            /* [T, Hkv, D]  kv dtype: the new tokens' K/V */
  void *out;              /* [T, Hq, D]   out dtype */
  void *cache;            /* the pool, in the workload's layout */
  size_t cache_bytes;     /* the whole pool */
  size_t used_cache_bytes; /* pages some sequence owns */
} bench_batch;

/* Builds the batch for w with a pool of at least min_pool_bytes (in
   transparent huge pages when huge_pages and the system allows). Returns 0,
   or -1 with a message in err (out of memory, sizes overflow). */
int bench_batch_make(bench_batch *b, const bench_workload *w,
                     size_t min_pool_bytes, int huge_pages, uint64_t seed,
                     char *err, size_t err_len);
void bench_batch_free(bench_batch *b);

/* The reference check on a sample: for a few sequences of the batch (the
   first, the longest, the last, the first prefill chunk), the last `rows`
   query rows, rebuilt as a one-sequence batch over the same cache, run on
   the reference context `ref`, and compared with what the kernel under test
   left in b->out. rows is chosen so each sample costs at most
   max_sample_flops. The fused update in the sample rewrites the same
   values. */
typedef struct bench_check {
  int ok;                /* 1 match, 0 mismatch or failure */
  int seqs, rows;        /* the sample: sequences and query rows checked */
  double max_abs_err;
  double tolerance;
  char note[160];        /* a human summary, or why it failed */
} bench_check;

int bench_check_sample(rpa_context *ref, const bench_batch *b,
                       double max_sample_flops, bench_check *out);

/* Absolute tolerance (outputs are O(1)) for the narrowest of the dtypes. */
double bench_tolerance(rpa_dtype q, rpa_dtype kv, rpa_dtype out);

#endif
