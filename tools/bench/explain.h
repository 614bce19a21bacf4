/* rpa-bench --explain: where a decode or mixed call loses time, measured
   in the same run as the call and alternating with its timed calls, so
   that a neighbour's load on a shared host moves both sides alike.

   Per case:
   - the kernel's time, and its MBU against a read limit interleaved with
     its calls (limit, call, limit, call, ...; the median of the per-pair
     ratios);
   - (a) a read-only pass over exactly the K/V bytes the call reads, in the
     engine's order (per decode split of 32-key steps, a KV head at a
     time: each head's K rows, then its V rows), on the same pinned
     threads;
   - (b) the same bytes in the best order the machine allows: each page's
     bytes in address order, whole, four pages in flight per thread;
   - (c) the arithmetic alone: the kernel on the same heads, dims, dtype and
     layout with its K/V resident in cache (a few of the case's decode
     sequences, clamped to fit the last-level cache, called repeatedly
     without flushing), projected to the case's bytes;
   - for a mixed case, the same decodes and chunks as two calls (decodes,
     then chunks), against the one call.
   The kernel's time against (b) says how far it is from the memory; (a)
   against (b) what its access order costs; (c) what its arithmetic costs
   with no memory in the way. */
#ifndef RPA_BENCH_EXPLAIN_H
#define RPA_BENCH_EXPLAIN_H

#include <stdio.h>

#include "limits.h"
#include "paged_batch.h"
#include "rpa.h"

typedef struct bench_explain {
  int ok;              /* 0: not measured (see note) */
  char note[160];
  int rounds;          /* interleaved rounds measured */
  double kv_bytes;     /* the K/V bytes the call reads */
  double call_bytes;   /* every byte the call must move (counting.h) */
  double kernel_s;     /* median of the call's interleaved times */
  double limit_gbps;   /* median of the interleaved read limits */
  double mbu;          /* median over rounds of (call_bytes / t) / limit */
  double read_order_s; /* (a) */
  double read_best_s;  /* (b) */
  double hot_s;        /* (c), projected; 0: not measured */
  double hot_gbps;     /* (c): K/V GB/s of the hot calls */
  double split_s;      /* mixed: decodes + chunks as two calls; 0: n/a */
} bench_explain;

/* Measures e for the batch b on ctx (already warmed up), with `threads`
   pinned threads on cpus (as the library's pool pins its own), reading the
   limit from bw_buf (bw_bytes, filled by bench_measure_limits) and using
   hot_bytes of K/V for (c). rounds: interleaved rounds (>= 3). Returns 0,
   or -1 with e->note set (out of memory, a failed call). */
int bench_explain_case(rpa_context *ctx, bench_batch *b, int threads,
                       const int *cpus, int ncpus, void *bw_buf,
                       size_t bw_bytes, const bench_cpu *cpu,
                       size_t hot_bytes, int rounds, bench_explain *e);

/* The table of explained cases: one row per (case name, result). */
void bench_print_explain(FILE *f, const char *const *names,
                         const bench_explain *e, int n);

#endif
