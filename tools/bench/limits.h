/* The machine's own limits, measured in the same run as the kernel, with the
   same number of threads, each pinned to its CPU: streaming read bandwidth
   over a buffer far larger than the last-level cache, the float32 FMA peak
   and the bf16 dot-product (vdpbf16ps) peak. CPU features come from CPUID
   and XGETBV; the ISA-specific loops are compiled with function target
   attributes, so the tool builds and runs on any x86-64 (and elsewhere,
   with portable loops) and reports a missing feature as n/a. */
#ifndef RPA_BENCH_LIMITS_H
#define RPA_BENCH_LIMITS_H

#include <stddef.h>

typedef struct bench_cpu {
  char brand[64];
  int avx2_fma;     /* AVX2 + FMA, with the OS saving YMM state */
  int avx512;       /* AVX-512 F, with the OS saving ZMM state */
  int avx512_bf16;  /* AVX512-BF16: vdpbf16ps */
  long l3_bytes;    /* last-level cache one core sees; 0: unknown */
  int online_cpus;
} bench_cpu;

void bench_cpu_detect(bench_cpu *cpu);

/* The CPUs this process may run on, in order; returns how many (>= 1) and
   fills cpus[0 .. max-1]. Thread i of a team runs on cpus[i % count]. */
int bench_allowed_cpus(int *cpus, int max);

/* Pins the calling thread to one CPU; 0 on success. */
int bench_pin_self(int cpu);

typedef struct bench_limits {
  int threads;
  double read_gbps;      /* streaming read, GB/s (1e9 bytes/s) */
  double f32_gflops;     /* float32 FMA peak, GFLOP/s: the faster of the
                            AVX-512 and AVX2 loops (some cores run 512-bit
                            FMAs at half rate) */
  const char *f32_isa;   /* the loop that gave it: "AVX-512", "AVX2" or
                            "portable C" */
  double bf16_gflops;    /* vdpbf16ps peak; 0 when the CPU lacks it */
} bench_limits;

/* Measures all three with `threads` pinned threads (thread i on cpus[i]).
   buf: a 64-byte aligned buffer of `bytes` (far larger than the LLC) that
   the team fills first; its contents are overwritten. Returns 0, or -1 if
   threads cannot be started. */
int bench_measure_limits(int threads, const int *cpus, int ncpus, void *buf,
                         size_t bytes, const bench_cpu *cpu,
                         bench_limits *out);

/* Runs fn(arg, i) on `threads` threads at once: thread 0 is the caller
   (pinned to cpus[0] by main), thread i > 0 a new thread pinned to
   cpus[i % ncpus]. Returns the wall time from the common start to the last
   thread's end, or -1 if threads cannot be started. */
typedef void (*bench_team_fn)(void *arg, int thread);
double bench_team_run(int threads, const int *cpus, int ncpus, bench_team_fn fn,
                      void *arg);

/* One streaming read of the first `bytes` of buf (64-byte aligned, already
   filled by bench_measure_limits), each of `threads` pinned threads its own
   slice: GB/s, or -1. About what one sample of the read limit costs, so it
   can be interleaved with a kernel's calls. */
double bench_read_pass(int threads, const int *cpus, int ncpus, void *buf,
                       size_t bytes, const bench_cpu *cpu);

/* Asks the kernel for transparent huge pages over [p, p + bytes) (Linux
   madvise; a hint, a no-op elsewhere). */
void bench_advise_huge_pages(void *p, size_t bytes);
/* The system's transparent huge page mode ("always", "madvise", "never"),
   or "unknown". */
const char *bench_thp_mode(void);

/* Reads `bytes` of buf from offset *cursor on (wrapping), on the calling
   thread, to push a kernel's working set out of the caches; advances
   *cursor. */
void bench_evict_caches(const void *buf, size_t buf_bytes, size_t bytes,
                        size_t *cursor);

#endif
