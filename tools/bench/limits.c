/* Measuring the machine: CPU features, pinned thread teams, streaming read
   bandwidth, float32 FMA and bf16 dot peaks. See limits.h. */
#define _GNU_SOURCE /* pthread_setaffinity_np, sched_getaffinity, CPU_SET */
#include "limits.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define BENCH_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define BENCH_X86 0
#endif

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- CPU features -------------------------------------------------------- */

#if BENCH_X86
static unsigned long long xgetbv0(void) {
  unsigned int lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((unsigned long long)hi << 32) | lo;
}

/* Deterministic cache parameters (Intel leaf 4, AMD leaf 0x8000001D share
   the format): the largest level-3 data or unified cache. */
static long l3_from_leaf(unsigned int leaf) {
  long best = 0;
  for (unsigned int sub = 0; sub < 16; sub++) {
    unsigned int a, b, c, d;
    __cpuid_count(leaf, sub, a, b, c, d);
    const unsigned int type = a & 0x1f, level = (a >> 5) & 0x7;
    if (type == 0) break;
    if (level != 3 || (type != 1 && type != 3)) continue;
    const long ways = ((b >> 22) & 0x3ff) + 1, parts = ((b >> 12) & 0x3ff) + 1;
    const long line = (b & 0xfff) + 1, sets = (long)c + 1;
    if (ways * parts * line * sets > best) best = ways * parts * line * sets;
  }
  return best;
}
#endif

void bench_cpu_detect(bench_cpu *cpu) {
  memset(cpu, 0, sizeof *cpu);
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  cpu->online_cpus = n > 0 ? (int)n : 1;
  snprintf(cpu->brand, sizeof cpu->brand, "unknown CPU");
#if BENCH_X86
  unsigned int a, b, c, d;
  const unsigned int max_ext = __get_cpuid_max(0x80000000u, NULL);
  if (max_ext >= 0x80000004u) {
    unsigned int regs[12];
    for (unsigned int i = 0; i < 3; i++)
      __cpuid(0x80000002u + i, regs[4 * i], regs[4 * i + 1], regs[4 * i + 2],
              regs[4 * i + 3]);
    char raw[49];
    memcpy(raw, regs, 48);
    raw[48] = '\0';
    const char *s = raw;
    while (*s == ' ') s++;
    snprintf(cpu->brand, sizeof cpu->brand, "%s", s);
  }
  const unsigned int max_std = __get_cpuid_max(0, NULL);
  if (max_std >= 4) cpu->l3_bytes = l3_from_leaf(4);
  if (!cpu->l3_bytes && max_ext >= 0x8000001Du)
    cpu->l3_bytes = l3_from_leaf(0x8000001Du);
  if (max_std < 7 || !__get_cpuid(1, &a, &b, &c, &d)) return;
  const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
  if (!osxsave || !avx) return;
  const unsigned long long xcr0 = xgetbv0();
  const int ymm_state = (xcr0 & 0x6) == 0x6;                /* SSE, AVX */
  const int zmm_state = ymm_state && (xcr0 & 0xe0) == 0xe0; /* k, ZMM */
  __cpuid_count(7, 0, a, b, c, d);
  const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
  cpu->avx2_fma = ymm_state && avx2 && fma;
  cpu->avx512 = cpu->avx2_fma && zmm_state && avx512f;
  __cpuid_count(7, 1, a, b, c, d);
  cpu->avx512_bf16 = cpu->avx512 && ((a >> 5) & 1);
#endif
#ifdef _SC_LEVEL3_CACHE_SIZE
  if (!cpu->l3_bytes) {
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    cpu->l3_bytes = l3 > 0 ? l3 : 0;
  }
#endif
}

/* ---- pinning and teams ----------------------------------------------------- */

int bench_allowed_cpus(int *cpus, int max) {
  int n = 0;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int i = 0; i < CPU_SETSIZE && n < max; i++)
      if (CPU_ISSET(i, &set)) cpus[n++] = i;
#endif
  if (n == 0) {
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 0; i < (online > 0 ? online : 1) && n < max; i++) cpus[n++] = i;
  }
  return n;
}

int bench_pin_self(int cpu) {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % CPU_SETSIZE, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
#else
  (void)cpu;
  return -1;
#endif
}

void bench_advise_huge_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t page = 4096, start = ((uintptr_t)p + page - 1) & ~(page - 1);
  const uintptr_t end = ((uintptr_t)p + bytes) & ~(page - 1);
  if (end > start) (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

const char *bench_thp_mode(void) {
  static char mode[16] = "";
  if (mode[0]) return mode;
  snprintf(mode, sizeof mode, "unknown");
  FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  if (!f) return mode;
  char line[128];
  if (fgets(line, sizeof line, f)) { /* "always [madvise] never" */
    const char *open = strchr(line, '['), *close = open ? strchr(open, ']') : NULL;
    if (open && close && close - open - 1 < (long)sizeof mode)
      snprintf(mode, sizeof mode, "%.*s", (int)(close - open - 1), open + 1);
  }
  fclose(f);
  return mode;
}

typedef bench_team_fn team_fn;

typedef struct team {
  pthread_barrier_t start, stop;
  team_fn fn;
  void *arg;
} team;

typedef struct member {
  team *t;
  int index, cpu;
} member;

static void *member_main(void *p) {
  const member *m = p;
  bench_pin_self(m->cpu);
  pthread_barrier_wait(&m->t->start);
  m->t->fn(m->t->arg, m->index);
  pthread_barrier_wait(&m->t->stop);
  return NULL;
}

double bench_team_run(int threads, const int *cpus, int ncpus, team_fn fn,
                      void *arg) {
  enum { MAX_TEAM = 1024 };
  if (threads < 1 || threads > MAX_TEAM) return -1;
  team t = {.fn = fn, .arg = arg};
  pthread_t *ids = calloc((size_t)threads, sizeof *ids);
  member *ms = calloc((size_t)threads, sizeof *ms);
  if (!ids || !ms) {
    free(ids);
    free(ms);
    return -1;
  }
  pthread_barrier_init(&t.start, NULL, (unsigned)threads);
  pthread_barrier_init(&t.stop, NULL, (unsigned)threads);
  int started = 1;
  for (int i = 1; i < threads; i++, started++) {
    ms[i] = (member){&t, i, cpus[i % ncpus]};
    if (pthread_create(&ids[i], NULL, member_main, &ms[i]) != 0) break;
  }
  double elapsed = -1;
  if (started == threads) {
    pthread_barrier_wait(&t.start);
    const double t0 = now_s();
    fn(arg, 0);
    pthread_barrier_wait(&t.stop);
    elapsed = now_s() - t0;
  } else {
    /* cannot happen with fewer threads than the barrier expects; report */
    fprintf(stderr, "rpa-bench: could not start %d threads\n", threads);
    exit(1);
  }
  for (int i = 1; i < threads; i++) pthread_join(ids[i], NULL);
  pthread_barrier_destroy(&t.start);
  pthread_barrier_destroy(&t.stop);
  free(ids);
  free(ms);
  return elapsed;
}

/* ---- streaming read ---------------------------------------------------- */

/* Each sums n floats (n a multiple of 128, p 64-byte aligned) with
   independent accumulators, so the loads, not the adds, set the pace. */
#if BENCH_X86
__attribute__((target("avx512f"))) static float read_avx512(const float *p,
                                                            size_t n) {
  __m512 s[8];
  for (int j = 0; j < 8; j++) s[j] = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 128)
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
      s[j] = _mm512_add_ps(s[j], _mm512_load_ps(p + i + 16 * j));
  for (int j = 1; j < 8; j++) s[0] = _mm512_add_ps(s[0], s[j]);
  return _mm512_reduce_add_ps(s[0]);
}

__attribute__((target("avx2,fma"))) static float read_avx2(const float *p,
                                                           size_t n) {
  __m256 s[8];
  for (int j = 0; j < 8; j++) s[j] = _mm256_setzero_ps();
  for (size_t i = 0; i < n; i += 64)
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
      s[j] = _mm256_add_ps(s[j], _mm256_load_ps(p + i + 8 * j));
  for (int j = 1; j < 8; j++) s[0] = _mm256_add_ps(s[0], s[j]);
  float lanes[8];
  _mm256_storeu_ps(lanes, s[0]);
  float r = 0;
  for (int j = 0; j < 8; j++) r += lanes[j];
  return r;
}
#endif

static float read_portable(const float *p, size_t n) {
  float s[8] = {0};
  for (size_t i = 0; i < n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += p[i + j];
  float r = 0;
  for (int j = 0; j < 8; j++) r += s[j];
  return r;
}

typedef float (*read_fn)(const float *p, size_t n);

static read_fn best_read(const bench_cpu *cpu) {
#if BENCH_X86
  if (cpu->avx512) return read_avx512;
  if (cpu->avx2_fma) return read_avx2;
#else
  (void)cpu;
#endif
  return read_portable;
}

typedef struct read_job {
  float *buf;   /* [threads][slice] */
  size_t slice; /* floats per thread, a multiple of 128 */
  read_fn read;
  int fill;
  volatile float sink[64];
} read_job;

static void read_task(void *arg, int thread) {
  read_job *j = arg;
  float *p = j->buf + (size_t)thread * j->slice;
  if (j->fill) { /* first touch by the thread that reads it */
    for (size_t i = 0; i < j->slice; i++) p[i] = 1.0f;
    return;
  }
  j->sink[thread & 63] = j->read(p, j->slice);
}

double bench_read_pass(int threads, const int *cpus, int ncpus, void *buf,
                       size_t bytes, const bench_cpu *cpu) {
  read_job *rj = calloc(1, sizeof *rj);
  if (!rj) return -1;
  rj->buf = buf;
  rj->slice = bytes / sizeof(float) / (size_t)threads / 128 * 128;
  rj->read = best_read(cpu);
  const double t = bench_team_run(threads, cpus, ncpus, read_task, rj);
  const double moved = (double)rj->slice * sizeof(float) * threads;
  free(rj);
  return t > 0 ? moved / t / 1e9 : -1;
}

void bench_evict_caches(const void *buf, size_t buf_bytes, size_t bytes,
                        size_t *cursor) {
  static read_fn read = NULL;
  static volatile float sink;
  if (!read) {
    bench_cpu cpu;
    bench_cpu_detect(&cpu);
    read = best_read(&cpu);
  }
  const size_t chunk = (size_t)1 << 20; /* a multiple of 128 floats */
  if (buf_bytes < chunk) return;
  const size_t chunks = buf_bytes / chunk;
  for (size_t done = 0; done < bytes; done += chunk) {
    const size_t c = (*cursor)++ % chunks;
    sink = read((const float *)((const char *)buf + c * chunk),
                chunk / sizeof(float));
  }
  (void)sink;
}

/* ---- FMA and dot-product peaks -------------------------------------------- */

/* Each runs `iters` rounds of independent chains acc = acc * m + c (or acc
   += a . b in bf16 pairs) in registers and returns the FLOPs done. */
#if BENCH_X86
enum { CHAINS_512 = 16, CHAINS_256 = 12, CHAINS_BF16 = 24 };

__attribute__((target("avx512f"))) static double fma_avx512(long iters,
                                                            volatile float *sink) {
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
  __m512 acc[CHAINS_512];
  for (int j = 0; j < CHAINS_512; j++) acc[j] = _mm512_set1_ps((float)j);
  for (long i = 0; i < iters; i++)
#pragma GCC unroll 16
    for (int j = 0; j < CHAINS_512; j++) acc[j] = _mm512_fmadd_ps(acc[j], m, c);
  for (int j = 1; j < CHAINS_512; j++) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  *sink = _mm512_reduce_add_ps(acc[0]);
  return (double)iters * CHAINS_512 * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(long iters,
                                                           volatile float *sink) {
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
  __m256 acc[CHAINS_256];
  for (int j = 0; j < CHAINS_256; j++) acc[j] = _mm256_set1_ps((float)j);
  for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
    for (int j = 0; j < CHAINS_256; j++) acc[j] = _mm256_fmadd_ps(acc[j], m, c);
  for (int j = 1; j < CHAINS_256; j++) acc[0] = _mm256_add_ps(acc[0], acc[j]);
  float lanes[8];
  _mm256_storeu_ps(lanes, acc[0]);
  *sink = lanes[0] + lanes[7];
  return (double)iters * CHAINS_256 * 8 * 2;
}

/* vdpbf16ps: 16 float lanes, each adding two bf16 products: 64 FLOPs. */
__attribute__((target("avx512f,avx512bf16"))) static double dot_bf16(
    long iters, volatile float *sink) {
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f),
                                         _mm512_set1_ps(2e-3f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(3e-3f),
                                         _mm512_set1_ps(1e-3f));
  __m512 acc[CHAINS_BF16];
  for (int j = 0; j < CHAINS_BF16; j++) acc[j] = _mm512_set1_ps((float)j);
  for (long i = 0; i < iters; i++)
#pragma GCC unroll 24
    for (int j = 0; j < CHAINS_BF16; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  for (int j = 1; j < CHAINS_BF16; j++) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  *sink = _mm512_reduce_add_ps(acc[0]);
  return (double)iters * CHAINS_BF16 * 16 * 2 * 2;
}
#endif

static double fma_portable(long iters, volatile float *sink) {
  float acc[8];
  for (int j = 0; j < 8; j++) acc[j] = (float)j;
  for (long i = 0; i < iters; i++)
    for (int j = 0; j < 8; j++) acc[j] = acc[j] * 0.999999f + 1e-6f;
  *sink = acc[0] + acc[7];
  return (double)iters * 8 * 2;
}

typedef double (*peak_fn)(long iters, volatile float *sink);

typedef struct peak_job {
  peak_fn fn;
  long iters;
  double flops[1024]; /* per thread */
  volatile float sink[1024];
} peak_job;

static void peak_task(void *arg, int thread) {
  peak_job *j = arg;
  j->flops[thread] = j->fn(j->iters, &j->sink[thread]);
}

/* Best FLOP/s of a few trials of ~40 ms each, all threads at once. */
static double measure_peak(peak_fn fn, int threads, const int *cpus,
                           int ncpus) {
  peak_job *j = calloc(1, sizeof *j);
  if (!j) return 0;
  j->fn = fn;
  j->iters = 1 << 14;
  double t = bench_team_run(threads, cpus, ncpus, peak_task, j); /* calibrate */
  for (int k = 0; k < 8 && t < 0.01; k++) {
    j->iters *= 4;
    t = bench_team_run(threads, cpus, ncpus, peak_task, j);
  }
  if (t > 0) j->iters = (long)((double)j->iters * 0.04 / t) + 1;
  double best = 0;
  for (int trial = 0; trial < 5; trial++) {
    t = bench_team_run(threads, cpus, ncpus, peak_task, j);
    double flops = 0;
    for (int i = 0; i < threads; i++) flops += j->flops[i];
    if (t > 0 && flops / t > best) best = flops / t;
  }
  free(j);
  return best;
}

int bench_measure_limits(int threads, const int *cpus, int ncpus, void *buf,
                         size_t bytes, const bench_cpu *cpu,
                         bench_limits *out) {
  memset(out, 0, sizeof *out);
  out->threads = threads;
  if (threads < 1 || threads > 1024) return -1;

  /* bandwidth: each thread streams its own slice, 1 GiB in all by default */
  read_job *rj = calloc(1, sizeof *rj);
  if (!rj) return -1;
  rj->buf = buf;
  rj->slice = bytes / sizeof(float) / (size_t)threads / 128 * 128;
  rj->read = best_read(cpu);
  rj->fill = 1;
  if (bench_team_run(threads, cpus, ncpus, read_task, rj) < 0) {
    free(rj);
    return -1;
  }
  rj->fill = 0;
  const double moved = (double)rj->slice * sizeof(float) * threads;
  for (int trial = 0; trial < 7; trial++) {
    const double t = bench_team_run(threads, cpus, ncpus, read_task, rj);
    if (t > 0 && moved / t / 1e9 > out->read_gbps) out->read_gbps = moved / t / 1e9;
  }
  free(rj);

#if BENCH_X86
  if (cpu->avx2_fma) {
    out->f32_isa = "AVX2";
    out->f32_gflops = measure_peak(fma_avx2, threads, cpus, ncpus) / 1e9;
  }
  if (cpu->avx512) {
    const double g = measure_peak(fma_avx512, threads, cpus, ncpus) / 1e9;
    if (g >= out->f32_gflops) {
      out->f32_isa = "AVX-512";
      out->f32_gflops = g;
    }
  }
  if (cpu->avx512_bf16)
    out->bf16_gflops = measure_peak(dot_bf16, threads, cpus, ncpus) / 1e9;
#endif
  if (!out->f32_isa) {
    out->f32_isa = "portable C";
    out->f32_gflops = measure_peak(fma_portable, threads, cpus, ncpus) / 1e9;
  }
  return 0;
}
