/* Results of the benchmark and their forms: the terminal table, the
   backend comparison, the headline against the project's targets, the JSON file
   and the roofline plot (gnuplot). */
#ifndef RPA_BENCH_REPORT_H
#define RPA_BENCH_REPORT_H

#include <stddef.h>
#include <stdio.h>

#include "counting.h"
#include "limits.h"
#include "paged_batch.h"
#include "workloads.h"

typedef struct bench_result {
  const bench_workload *w;
  const char *kind;          /* decode | prefill | mixed */
  char backend[32];          /* the kernel set that ran */
  int threads;
  size_t pool_bytes, used_bytes;
  bench_count count;
  /* timed calls after warm-up, in seconds */
  int reps;
  int warmup_sample; /* the one sample is the warm-up call (slower than the
                        budget, not repeated) */
  double t_median, t_min, t_max, t_p25, t_p75;
  /* against the limits measured in this run at this thread count */
  bench_peak_kind peak_kind;
  double peak_gbps, peak_gflops;
  double gbps, gflops, mbu, mfu, roofline_s, roofline_ratio;
  /* the reference check: checked 0 when not run (--no-check, or this
     backend is the reference itself) */
  int checked;
  bench_check check;
  /* the call failed: no timings */
  int failed;
  char error[256];
} bench_result;

/* Fills the rates and ratios of r from its timings and the limits. */
void bench_result_finish(bench_result *r, const bench_limits *lim);

void bench_print_limits(FILE *f, const bench_cpu *cpu, const bench_limits *lim,
                        size_t bw_bytes);
void bench_print_table(FILE *f, const bench_result *r, int n);
/* Time ratios of each backend against the first one of the list. */
void bench_print_comparison(FILE *f, const bench_result *r, int n,
                            char backends[][32], int num_backends);
/* Decode MBU, prefill MFU, mixed roofline ratio beside the project's targets,
   for each backend. */
void bench_print_headline(FILE *f, const bench_result *r, int n,
                          char backends[][32], int num_backends,
                          const bench_cpu *cpu);

/* Returns 0, or -1 with a message on stderr. */
int bench_write_json(const char *path, const bench_result *r, int n);
int bench_plot(const char *path, const bench_result *r, int n,
               const bench_limits *limits, int num_limits,
               const bench_cpu *cpu);

#endif
