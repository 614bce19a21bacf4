/* rpa-bench: the library against the machine's own limits.

   Measures the streaming read bandwidth and the FMA / bf16 dot peaks with
   the kernel's thread count, pinned; runs named serving workloads (or the
   user's) over page pools far larger than the last-level cache; reports per
   case the median and spread of timed calls, GB/s, GFLOP/s, MBU, MFU and
   time / roofline time, checks the output against the reference backend on
   a sample, and ends with the headline against the project's speed
   targets. See --help. */
#include <fnmatch.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "counting.h"
#include "explain.h"
#include "limits.h"
#include "paged_batch.h"
#include "report.h"
#include "rpa.h"
#include "workloads.h"

enum { MAX_BACKENDS = 8, MAX_CPUS = 1024 };

typedef struct options {
  int list, all, quiet, check, flush, huge_pages, threads, max_reps, warmup;
  int explain; /* rounds of --explain, 0: off */
  double budget_s, check_gflop;
  size_t bw_bytes, pool_bytes;
  const char *backends, *json, *plot;
  const char **cases; /* patterns */
  int num_cases;
  const char **specs; /* --workload */
  int num_specs;
  const char **files; /* --workloads */
  int num_files;
} options;

static void usage(FILE *f) {
  fprintf(f,
"usage: rpa-bench [options]\n"
"Benchmarks rpa_attention against this machine's limits, measured in the\n"
"same run with the same thread count (threads pinned).\n"
"\n"
"what to run (default: the default suite, the cases --list marks with *):\n"
"  --list               list the built-in workloads and exit\n"
"  --all                every built-in workload\n"
"  --case PATTERN       built-ins whose name matches (a glob, or a substring);\n"
"                       repeatable\n"
"  --workload SPEC      a workload of your own, e.g.\n"
"                       \"mine seqs=30*1:128~8k,2*512:512 heads=32/8 dim=128 kv=fp8\"\n"
"                       (keys: seqs heads dim q out kv dtype page window sinks\n"
"                       causal update softcap layout model); repeatable\n"
"  --workloads FILE     workloads from a file, one SPEC per line, # comments\n"
"how:\n"
"  --backend LIST       comma list of kernel sets: ref, best, or any that\n"
"                       --list shows as available (default best); the first\n"
"                       is the baseline of the time ratios\n"
"  --threads N          threads of the kernel and of the limits (default: the\n"
"                       CPUs this process may use); ref always runs one\n"
"  --reps N             at most N timed calls per case (default 30)\n"
"  --budget SECONDS     stop timing a case after this long, at least one\n"
"                       call (default 1)\n"
"  --warmup N           untimed calls first (default 1)\n"
"  --no-check           skip the check against the reference backend\n"
"  --check-gflop G      reference sample size per sequence (default 0.1)\n"
"  --no-flush           do not evict the caches before each timed call\n"
"  --no-huge-pages      no transparent huge pages for the bandwidth buffer\n"
"                       and the page pools (asked for by default)\n"
"  --bw-mb N            bandwidth buffer, MiB (default 1024)\n"
"  --pool-mb N          smallest page pool, MiB (default 512)\n"
"  --explain[=ROUNDS]   for each decode and mixed case, also time (alternating\n"
"                       with the kernel's calls, ROUNDS rounds, default 5): a\n"
"                       read of its K/V bytes in the engine's order, the same\n"
"                       bytes in the best order, the kernel on cache-resident\n"
"                       K/V, a mixed case as two calls; and MBU against a read\n"
"                       limit taken before each call (see tools/bench/explain.h)\n"
"output:\n"
"  --json FILE          one object per case and backend\n"
"  --plot FILE.png      roofline plot (gnuplot)\n"
"  --quiet              no progress lines on stderr\n");
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_int(const char *opt, const char *s, long lo, long hi,
                     long *out) {
  char *end;
  const long v = s ? strtol(s, &end, 10) : 0;
  if (!s || !*s || *end || v < lo || v > hi) {
    fprintf(stderr, "rpa-bench: %s needs a whole number in [%ld, %ld], got '%s'\n",
            opt, lo, hi, s ? s : "");
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_real(const char *opt, const char *s, double lo, double hi,
                      double *out) {
  char *end;
  const double v = s ? strtod(s, &end) : 0;
  if (!s || !*s || *end || !(v >= lo && v <= hi)) {
    fprintf(stderr, "rpa-bench: %s needs a number in [%g, %g], got '%s'\n", opt,
            lo, hi, s ? s : "");
    return -1;
  }
  *out = v;
  return 0;
}

/* Returns 0 to run, 1 to exit successfully (help), -1 on a bad option. */
static int parse_options(int argc, char **argv, options *o) {
  *o = (options){.check = 1, .flush = 1, .huge_pages = 1, .max_reps = 30, .warmup = 1,
                 .budget_s = 1.0, .check_gflop = 0.1,
                 .bw_bytes = (size_t)1024 << 20, .pool_bytes = (size_t)512 << 20,
                 .backends = "best"};
  o->cases = calloc((size_t)argc, sizeof *o->cases);
  o->specs = calloc((size_t)argc, sizeof *o->specs);
  o->files = calloc((size_t)argc, sizeof *o->files);
  if (!o->cases || !o->specs || !o->files) return -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    long n;
    double x;
#define TAKES_VALUE                                                     \
  do {                                                                  \
    if (!v) {                                                           \
      fprintf(stderr, "rpa-bench: %s needs a value (see --help)\n", a); \
      return -1;                                                        \
    }                                                                   \
    i++;                                                                \
  } while (0)
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 1;
    } else if (!strcmp(a, "--list")) {
      o->list = 1;
    } else if (!strcmp(a, "--all")) {
      o->all = 1;
    } else if (!strcmp(a, "--quiet")) {
      o->quiet = 1;
    } else if (!strcmp(a, "--no-check")) {
      o->check = 0;
    } else if (!strcmp(a, "--no-flush")) {
      o->flush = 0;
    } else if (!strcmp(a, "--no-huge-pages")) {
      o->huge_pages = 0;
    } else if (!strcmp(a, "--explain")) {
      o->explain = 5;
    } else if (!strncmp(a, "--explain=", 10)) {
      if (parse_int("--explain", a + 10, 3, 1000, &n)) return -1;
      o->explain = (int)n;
    } else if (!strcmp(a, "--case")) {
      TAKES_VALUE;
      o->cases[o->num_cases++] = v;
    } else if (!strcmp(a, "--workload")) {
      TAKES_VALUE;
      o->specs[o->num_specs++] = v;
    } else if (!strcmp(a, "--workloads")) {
      TAKES_VALUE;
      o->files[o->num_files++] = v;
    } else if (!strcmp(a, "--backend")) {
      TAKES_VALUE;
      o->backends = v;
    } else if (!strcmp(a, "--json")) {
      TAKES_VALUE;
      o->json = v;
    } else if (!strcmp(a, "--plot")) {
      TAKES_VALUE;
      o->plot = v;
    } else if (!strcmp(a, "--threads")) {
      TAKES_VALUE;
      if (parse_int(a, v, 1, MAX_CPUS, &n)) return -1;
      o->threads = (int)n;
    } else if (!strcmp(a, "--reps")) {
      TAKES_VALUE;
      if (parse_int(a, v, 1, 100000, &n)) return -1;
      o->max_reps = (int)n;
    } else if (!strcmp(a, "--warmup")) {
      TAKES_VALUE;
      if (parse_int(a, v, 0, 1000, &n)) return -1;
      o->warmup = (int)n;
    } else if (!strcmp(a, "--budget")) {
      TAKES_VALUE;
      if (parse_real(a, v, 0, 3600, &x)) return -1;
      o->budget_s = x;
    } else if (!strcmp(a, "--check-gflop")) {
      TAKES_VALUE;
      if (parse_real(a, v, 1e-6, 1e4, &x)) return -1;
      o->check_gflop = x;
    } else if (!strcmp(a, "--bw-mb")) {
      TAKES_VALUE;
      if (parse_int(a, v, 64, 1 << 20, &n)) return -1;
      o->bw_bytes = (size_t)n << 20;
    } else if (!strcmp(a, "--pool-mb")) {
      TAKES_VALUE;
      if (parse_int(a, v, 0, 1 << 20, &n)) return -1;
      o->pool_bytes = (size_t)n << 20;
    } else {
      fprintf(stderr, "rpa-bench: unknown option '%s' (see --help)\n", a);
      return -1;
    }
#undef TAKES_VALUE
  }
  return 0;
}

static void free_options(options *o) {
  free(o->cases);
  free(o->specs);
  free(o->files);
}

/* Counts a workload without building it (for --list). */
static void count_workload(const bench_workload *w, bench_count *c) {
  int32_t *cu = calloc((size_t)w->num_seqs + 1, sizeof(int32_t));
  if (!cu) {
    *c = (bench_count){0};
    return;
  }
  for (int32_t i = 0; i < w->num_seqs; i++) cu[i + 1] = cu[i] + w->q_lens[i];
  rpa_args a = rpa_args_default();
  static char dummy;
  a.num_q_heads = w->num_q_heads;
  a.num_kv_heads = w->num_kv_heads;
  a.head_dim = w->head_dim;
  a.q.dtype = w->q_dtype;
  a.out.dtype = w->out_dtype;
  a.cache.dtype = w->kv_dtype;
  a.cache.v = &dummy; /* separate V rows: not a latent cache */
  a.num_seqs = w->num_seqs;
  a.cu_q_lens = cu;
  a.kv_lens = w->kv_lens;
  a.causal = w->causal;
  a.sliding_window = w->window;
  a.sinks = w->sinks ? (const float *)&dummy : NULL;
  a.update_kv_cache = w->update;
  bench_count_args(&a, c);
  free(cu);
}

static int glob_or_substring(const char *pattern, const char *name) {
  if (strpbrk(pattern, "*?[")) return fnmatch(pattern, name, 0) == 0;
  return strstr(name, pattern) != NULL;
}

static void list_builtins(void) {
  int n;
  const bench_builtin *b = bench_builtins(&n);
  printf("built-in workloads (* = the default suite; KV MiB: the visible cache "
         "read once):\n");
  printf("  %-46s %-7s %-10s %5s %7s %9s %9s\n", "name", "kind", "Hq/Hkv x D",
         "seqs", "tokens", "KV MiB", "GFLOP");
  for (int i = 0; i < n; i++) {
    bench_workload w;
    char err[300];
    if (bench_workload_parse(b[i].name, b[i].spec, &w, err, sizeof err)) {
      printf("  %s: %s\n", b[i].name, err);
      continue;
    }
    bench_count c;
    count_workload(&w, &c);
    char shape[32];
    snprintf(shape, sizeof shape, "%d/%dx%d", w.num_q_heads, w.num_kv_heads,
             w.head_dim);
    int64_t tokens = 0;
    for (int32_t s = 0; s < w.num_seqs; s++) tokens += w.q_lens[s];
    printf("%c %-46s %-7s %-10s %5d %7lld %9.1f %9.2f\n",
           b[i].in_default ? '*' : ' ', b[i].name, bench_workload_kind(&w),
           shape, w.num_seqs, (long long)tokens,
           (double)c.kv_read_bytes / (1 << 20), (double)c.flops / 1e9);
    bench_workload_free(&w);
  }
  printf("kernel sets in this build:");
  for (int i = 0; rpa_isa_name(i); i++)
    printf(" %s%s", rpa_isa_name(i),
           rpa_isa_available(rpa_isa_name(i)) ? "" : " (not on this CPU)");
  printf("\n");
}

/* The workloads to run, in order. Returns the count, or -1. */
static int select_workloads(const options *o, bench_workload **out) {
  bench_workload *list = NULL;
  int n = 0;
  char err[400];
  int nb;
  const bench_builtin *b = bench_builtins(&nb);
  const int custom = o->num_specs > 0 || o->num_files > 0;
  for (int i = 0; i < nb; i++) {
    int take = o->all || (!custom && o->num_cases == 0 && b[i].in_default);
    for (int c = 0; c < o->num_cases; c++)
      take |= glob_or_substring(o->cases[c], b[i].name);
    if (!take) continue;
    bench_workload *grown = realloc(list, sizeof *list * (size_t)(n + 1));
    if (!grown) goto fail;
    list = grown;
    if (bench_workload_parse(b[i].name, b[i].spec, &list[n], err, sizeof err)) {
      fprintf(stderr, "rpa-bench: built-in %s\n", err);
      goto fail;
    }
    n++;
  }
  for (int c = 0; c < o->num_cases; c++) {
    int matched = 0;
    for (int i = 0; i < nb; i++) matched |= glob_or_substring(o->cases[c], b[i].name);
    if (!matched) {
      fprintf(stderr, "rpa-bench: --case '%s' matches no built-in workload "
                      "(see --list)\n", o->cases[c]);
      goto fail;
    }
  }
  for (int s = 0; s < o->num_specs; s++) {
    bench_workload *grown = realloc(list, sizeof *list * (size_t)(n + 1));
    if (!grown) goto fail;
    list = grown;
    if (bench_workload_parse(NULL, o->specs[s], &list[n], err, sizeof err)) {
      fprintf(stderr, "rpa-bench: --workload: %s\n", err);
      goto fail;
    }
    n++;
  }
  for (int f = 0; f < o->num_files; f++)
    if (bench_workloads_read_file(o->files[f], &list, &n, err, sizeof err)) {
      fprintf(stderr, "rpa-bench: --workloads %s\n", err);
      goto fail;
    }
  if (n == 0) {
    fprintf(stderr, "rpa-bench: no workload selected\n");
    goto fail;
  }
  *out = list;
  return n;
fail:
  for (int i = 0; i < n; i++) bench_workload_free(&list[i]);
  free(list);
  return -1;
}

/* One backend: a context with its kernel set and thread count. */
typedef struct backend {
  char name[32]; /* as resolved: "best" becomes the kernel set it picked */
  rpa_context *ctx;
  int threads;
} backend;

static void list_available(FILE *f) {
  fprintf(f, "available here: ref, best");
  for (int i = 0; rpa_isa_name(i); i++)
    if (strcmp(rpa_isa_name(i), "ref") && rpa_isa_available(rpa_isa_name(i)))
      fprintf(f, ", %s", rpa_isa_name(i));
  fputc('\n', f);
}

static int open_backends(const char *list, int threads, backend *bs) {
  int n = 0;
  const char *p = list;
  while (*p) {
    const size_t len = strcspn(p, ",");
    if (len == 0 || len >= sizeof bs[0].name || n == MAX_BACKENDS) {
      fprintf(stderr, "rpa-bench: --backend '%s': expected a comma list of up "
                      "to %d names\n", list, MAX_BACKENDS);
      return -1;
    }
    char name[32];
    memcpy(name, p, len);
    name[len] = '\0';
    p += len + (p[len] == ',');
    rpa_context_options o = rpa_context_options_default();
    /* the reference is the contract as plain loops, on one thread */
    o.num_threads = strcmp(name, "ref") == 0 ? 1 : threads;
    o.isa = name;
    o.log = 0;
    const rpa_status st = rpa_context_create(&o, &bs[n].ctx);
    if (st != RPA_OK) {
      fprintf(stderr, "rpa-bench: --backend %s: %s; ", name,
              st == RPA_UNSUPPORTED ? "unknown, or not supported by this CPU"
                                    : rpa_status_string(st));
      list_available(stderr);
      return -1;
    }
    snprintf(bs[n].name, sizeof bs[n].name, "%s", rpa_context_isa(bs[n].ctx));
    bs[n].threads = rpa_context_num_threads(bs[n].ctx);
    int duplicate = 0;
    for (int i = 0; i < n; i++) duplicate |= !strcmp(bs[i].name, bs[n].name);
    if (duplicate) { /* "best" and the set it picks, named twice */
      fprintf(stderr, "rpa-bench: --backend %s is %s, already in the list: "
                      "run once\n", name, bs[n].name);
      rpa_context_destroy(bs[n].ctx);
      bs[n].ctx = NULL;
      continue;
    }
    n++;
  }
  if (n == 0) {
    fprintf(stderr, "rpa-bench: --backend: empty list; ");
    list_available(stderr);
    return -1;
  }
  return n;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The q-th quantile (0..1) of sorted values, linearly interpolated. */
static double quantile(const double *sorted, int n, double q) {
  const double pos = q * (n - 1);
  const int lo = (int)pos;
  const int hi = lo + 1 < n ? lo + 1 : lo;
  return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
}

static void progress(const options *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void progress(const options *o, const char *fmt, ...) {
  if (o->quiet) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fflush(stderr);
}

typedef struct evictor {
  const void *buf;
  size_t buf_bytes, bytes, cursor;
} evictor;

/* Times one backend on a built batch: warm-up, then calls until max_reps or
   the budget, at least one. Each timed call starts with cold caches. */
static void time_backend(const options *o, const backend *be, bench_batch *b,
                         evictor *ev, bench_result *r) {
  double *times = malloc(sizeof(double) * (size_t)o->max_reps);
  if (!times) {
    r->failed = 1;
    snprintf(r->error, sizeof r->error, "out of memory");
    return;
  }
  /* NaN everywhere: a kernel that writes nothing cannot pass the check */
  memset(b->out, 0xff, (size_t)b->num_tokens * (size_t)b->args.num_q_heads *
                           (size_t)b->args.head_dim *
                           rpa_dtype_size(b->args.out.dtype));
  double warm_s = 0;
  for (int i = 0; i < o->warmup; i++) {
    const double t0 = now_s();
    const rpa_status st = rpa_attention(be->ctx, &b->args);
    warm_s = now_s() - t0;
    if (st != RPA_OK) {
      r->failed = 1;
      snprintf(r->error, sizeof r->error, "%s: %s", rpa_status_string(st),
               rpa_context_last_error(be->ctx));
      free(times);
      return;
    }
  }
  const double start = now_s();
  int reps = 0;
  /* A call slower than the whole budget (the reference backend takes
     seconds) is not repeated: its warm-up is its one sample, since what a
     first call pays extra (cold caches, first touch) is noise against
     seconds. This keeps the default suite bounded for any backend. */
  if (o->warmup > 0 && warm_s >= o->budget_s) {
    times[reps++] = warm_s;
    r->warmup_sample = 1;
  }
  while (!r->warmup_sample && reps < o->max_reps &&
         (reps == 0 || now_s() - start < o->budget_s)) {
    if (o->flush) bench_evict_caches(ev->buf, ev->buf_bytes, ev->bytes, &ev->cursor);
    const double t0 = now_s();
    const rpa_status st = rpa_attention(be->ctx, &b->args);
    const double t1 = now_s();
    if (st != RPA_OK) {
      r->failed = 1;
      snprintf(r->error, sizeof r->error, "%s: %s", rpa_status_string(st),
               rpa_context_last_error(be->ctx));
      free(times);
      return;
    }
    times[reps++] = t1 - t0;
  }
  qsort(times, (size_t)reps, sizeof(double), cmp_double);
  r->reps = reps;
  r->t_min = times[0];
  r->t_max = times[reps - 1];
  r->t_median = quantile(times, reps, 0.5);
  r->t_p25 = quantile(times, reps, 0.25);
  r->t_p75 = quantile(times, reps, 0.75);
  free(times);
}

int main(int argc, char **argv) {
  options o;
  const int parsed = parse_options(argc, argv, &o);
  if (parsed != 0) {
    free_options(&o);
    return parsed > 0 ? 0 : 2;
  }
  if (o.list) {
    list_builtins();
    free_options(&o);
    return 0;
  }
#ifndef __OPTIMIZE__
  fprintf(stderr, "rpa-bench: warning: built without optimisation; the "
                  "measured peaks are too low\n");
#endif

  /* the machine, pinned: the caller is thread 0 on the first CPU, as the
     library's pool expects (it pins worker i to CPU i) */
  bench_cpu cpu;
  bench_cpu_detect(&cpu);
  int cpus[MAX_CPUS];
  const int ncpus = bench_allowed_cpus(cpus, MAX_CPUS);
  if (o.threads == 0) o.threads = ncpus;
  bench_pin_self(cpus[0]);

  bench_workload *wl = NULL;
  const int num_wl = select_workloads(&o, &wl);
  backend bs[MAX_BACKENDS];
  memset(bs, 0, sizeof bs);
  const int num_bs = num_wl < 0 ? -1 : open_backends(o.backends, o.threads, bs);
  rpa_context *ref = NULL;
  int status = 0;
  bench_result *results = NULL;
  bench_explain *explained = NULL; /* --explain: per decode / mixed result */
  const char **explained_names = NULL;
  int num_explained = 0;
  void *bw_buf = NULL;
  if (num_wl < 0 || num_bs < 0) {
    status = 2;
    goto done;
  }
  if (o.check) {
    rpa_context_options ro = rpa_context_options_default();
    ro.num_threads = 1;
    ro.isa = "ref";
    ro.log = 0;
    if (rpa_context_create(&ro, &ref) != RPA_OK) {
      fprintf(stderr, "rpa-bench: cannot create the reference context\n");
      status = 1;
      goto done;
    }
  }

  printf("rpa-bench: %s, %d CPU%s usable, L3 %ld MiB, AVX2+FMA %s, AVX-512 %s, "
         "AVX512-BF16 %s\n",
         cpu.brand, ncpus, ncpus == 1 ? "" : "s", cpu.l3_bytes >> 20,
         cpu.avx2_fma ? "yes" : "no", cpu.avx512 ? "yes" : "no",
         cpu.avx512_bf16 ? "yes" : "no");
  printf("rpa %d.%d.%d; backends:", RPA_VERSION_MAJOR, RPA_VERSION_MINOR,
         RPA_VERSION_PATCH);
  for (int i = 0; i < num_bs; i++)
    printf(" %s (%d thread%s)", bs[i].name, bs[i].threads,
           bs[i].threads == 1 ? "" : "s");
  printf("; %d workload%s; huge pages %s (THP mode: %s)\n\n", num_wl,
         num_wl == 1 ? "" : "s", o.huge_pages ? "asked for" : "off",
         bench_thp_mode());
  if (o.threads > ncpus)
    fprintf(stderr, "rpa-bench: warning: %d threads on %d usable CPUs\n",
            o.threads, ncpus);

  /* limits, once per distinct thread count */
  if (posix_memalign(&bw_buf, (size_t)1 << 21, o.bw_bytes) != 0) {
    fprintf(stderr, "rpa-bench: cannot allocate the %zu MiB bandwidth buffer\n",
            o.bw_bytes >> 20);
    status = 1;
    goto done;
  }
  if (o.huge_pages) bench_advise_huge_pages(bw_buf, o.bw_bytes);
  bench_limits limits[MAX_BACKENDS];
  int num_limits = 0;
  for (int i = 0; i < num_bs; i++) {
    int found = -1;
    for (int l = 0; l < num_limits; l++)
      if (limits[l].threads == bs[i].threads) found = l;
    if (found < 0) {
      progress(&o, "rpa-bench: measuring the limits with %d thread%s...\n",
               bs[i].threads, bs[i].threads == 1 ? "" : "s");
      if (bench_measure_limits(bs[i].threads, cpus, ncpus, bw_buf, o.bw_bytes,
                               &cpu, &limits[num_limits]) != 0) {
        fprintf(stderr, "rpa-bench: cannot measure the limits\n");
        status = 1;
        goto done;
      }
      bench_print_limits(stdout, &cpu, &limits[num_limits], o.bw_bytes);
      fflush(stdout);
      num_limits++;
    }
  }

  /* the cases */
  results = calloc((size_t)num_wl * (size_t)num_bs, sizeof *results);
  if (!results) {
    fprintf(stderr, "rpa-bench: out of memory\n");
    status = 1;
    goto done;
  }
  const long l3 = cpu.l3_bytes > 0 ? cpu.l3_bytes : 32L << 20;
  evictor ev = {bw_buf, o.bw_bytes, 0, 0};
  ev.bytes = (size_t)(8 * l3) > ((size_t)64 << 20) ? (size_t)(8 * l3)
                                                    : (size_t)64 << 20;
  if (ev.bytes > o.bw_bytes / 2) ev.bytes = o.bw_bytes / 2;
  int num_results = 0;
  if (o.explain) {
    explained = calloc((size_t)num_wl * (size_t)num_bs, sizeof *explained);
    explained_names = calloc((size_t)num_wl * (size_t)num_bs, sizeof *explained_names);
  }
  if (o.explain && (!explained || !explained_names)) {
    fprintf(stderr, "rpa-bench: out of memory\n");
    status = 1;
    goto done;
  }
  const double suite_start = now_s();
  for (int c = 0; c < num_wl; c++) {
    const bench_workload *w = &wl[c];
    bench_batch batch;
    char err[256];
    progress(&o, "rpa-bench: [%d/%d] %s: building the batch...\n", c + 1,
             num_wl, w->name);
    const double build_start = now_s();
    if (bench_batch_make(&batch, w, o.pool_bytes, o.huge_pages, (uint64_t)c + 1,
                         err, sizeof err) != 0) {
      fprintf(stderr, "rpa-bench: %s: %s\n", w->name, err);
      for (int i = 0; i < num_bs; i++) {
        bench_result *r = &results[num_results++];
        r->w = w;
        r->kind = bench_workload_kind(w);
        snprintf(r->backend, sizeof r->backend, "%.31s", bs[i].name);
        r->threads = bs[i].threads;
        r->failed = 1;
        snprintf(r->error, sizeof r->error, "%s", err);
      }
      status = 1;
      continue;
    }
    progress(&o, "  pool %zu MiB, %zu MiB in use, built in %.1f s\n",
             batch.cache_bytes >> 20, batch.used_cache_bytes >> 20,
             now_s() - build_start);
    bench_count count;
    bench_count_args(&batch.args, &count);
    for (int i = 0; i < num_bs; i++) {
      bench_result *r = &results[num_results++];
      r->w = w;
      r->kind = bench_workload_kind(w);
      snprintf(r->backend, sizeof r->backend, "%.31s", bs[i].name);
      r->threads = bs[i].threads;
      r->pool_bytes = batch.cache_bytes;
      r->used_bytes = batch.used_cache_bytes;
      r->count = count;
      const double t0 = now_s();
      time_backend(&o, &bs[i], &batch, &ev, r);
      if (r->failed) {
        progress(&o, "  %s: FAILED: %s\n", bs[i].name, r->error);
        status = 1;
        continue;
      }
      progress(&o, "  %s: %d timed call%s in %.1f s, median %.3f ms\n",
               bs[i].name, r->reps, r->reps == 1 ? "" : "s", now_s() - t0,
               1e3 * r->t_median);
      if (ref && strcmp(bs[i].name, "ref") != 0) {
        const double t1 = now_s();
        bench_check_sample(ref, &batch, o.check_gflop * 1e9, &r->check);
        r->checked = 1;
        if (!r->check.ok) status = 1;
        progress(&o, "  %s vs ref: %s, %s (%.1f s)\n", bs[i].name,
                 r->check.ok ? "match" : "MISMATCH", r->check.note,
                 now_s() - t1);
      }
      /* after the check: (c) rewrites some cached positions */
      if (o.explain && strcmp(r->kind, "prefill") != 0) {
        const double t2 = now_s();
        bench_explain *e = &explained[num_explained];
        explained_names[num_explained++] = w->name;
        bench_explain_case(bs[i].ctx, &batch, bs[i].threads, cpus, ncpus, bw_buf,
                           o.bw_bytes, &cpu, (size_t)(l3 / 4), o.explain, e);
        progress(&o, "  %s explained in %.1f s%s%s\n", bs[i].name, now_s() - t2,
                 e->ok ? "" : ": ", e->ok ? "" : e->note);
      }
    }
    bench_batch_free(&batch);
  }
  const double suite_s = now_s() - suite_start;

  /* limits again: the machine drifts; ratios use the best seen in the run */
  for (int l = 0; l < num_limits; l++) {
    bench_limits again;
    progress(&o, "rpa-bench: measuring the limits again (%d thread%s)...\n",
             limits[l].threads, limits[l].threads == 1 ? "" : "s");
    if (bench_measure_limits(limits[l].threads, cpus, ncpus, bw_buf, o.bw_bytes,
                             &cpu, &again) != 0)
      continue;
    printf("limits again at the end, %d thread%s: read %.1f GB/s, f32 %.1f "
           "GFLOP/s, bf16 %.1f GFLOP/s (start: %.1f, %.1f, %.1f); ratios use "
           "the higher\n",
           again.threads, again.threads == 1 ? "" : "s", again.read_gbps,
           again.f32_gflops, again.bf16_gflops, limits[l].read_gbps,
           limits[l].f32_gflops, limits[l].bf16_gflops);
    if (again.read_gbps > limits[l].read_gbps) limits[l].read_gbps = again.read_gbps;
    if (again.f32_gflops > limits[l].f32_gflops)
      limits[l].f32_gflops = again.f32_gflops;
    if (again.bf16_gflops > limits[l].bf16_gflops)
      limits[l].bf16_gflops = again.bf16_gflops;
  }
  for (int i = 0; i < num_results; i++) {
    int l = 0;
    for (int k = 0; k < num_limits; k++)
      if (limits[k].threads == results[i].threads) l = k;
    bench_result_finish(&results[i], &limits[l]);
  }

  printf("\n%d case%s in %.0f s; each timed call starts with the caches "
         "flushed (%zu MiB read)%s; page pools >= %zu MiB, shuffled\n\n",
         num_wl, num_wl == 1 ? "" : "s", suite_s, ev.bytes >> 20,
         o.flush ? "" : " [disabled: --no-flush]", o.pool_bytes >> 20);
  bench_print_table(stdout, results, num_results);
  char names[MAX_BACKENDS][32];
  for (int i = 0; i < num_bs; i++) memcpy(names[i], bs[i].name, sizeof names[i]);
  bench_print_comparison(stdout, results, num_results, names, num_bs);
  bench_print_headline(stdout, results, num_results, names, num_bs, &cpu);
  if (o.explain) bench_print_explain(stdout, explained_names, explained, num_explained);
  /* Each context's scratch only grows, so what it holds now is the peak
     over every case it ran (rpa_context_scratch_bytes). */
  for (int i = 0; i < num_bs; i++)
    printf("library scratch memory, %s: %.2f MiB peak over the suite (page "
           "pools: caller's memory, not counted)\n",
           bs[i].name, (double)rpa_context_scratch_bytes(bs[i].ctx) / (1 << 20));
  fflush(stdout);

  if (o.json) {
    if (bench_write_json(o.json, results, num_results) != 0)
      status = 1;
    else
      progress(&o, "rpa-bench: wrote %s\n", o.json);
  }
  if (o.plot) {
    if (bench_plot(o.plot, results, num_results, limits, num_limits, &cpu) != 0)
      status = 1;
    else
      progress(&o, "rpa-bench: wrote %s\n", o.plot);
  }

done:
  free(explained);
  free(explained_names);
  free(results);
  free(bw_buf);
  rpa_context_destroy(ref);
  for (int i = 0; i < MAX_BACKENDS; i++) rpa_context_destroy(bs[i].ctx);
  for (int i = 0; i < num_wl; i++) bench_workload_free(&wl[i]);
  free(wl);
  free_options(&o);
  return status;
}
