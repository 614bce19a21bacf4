/* rpa-bench --explain (explain.h). */
#include "explain.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "counting.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EXPLAIN_X86 1
#else
#define EXPLAIN_X86 0
#endif

/* The engine's decode splits, as src/plan.c cuts them: at most 4 splits of
   at least 512 keys, on multiples of its 32-key steps. Mirrored here (the
   bench sees only the public API) so that read (a) walks the same order. */
enum { SPLITS_MAX = 4, SPLIT_MIN = 512, STEP_KEYS = 32, STREAMS = 4 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- reading bytes --------------------------------------------------------- */

/* Sums n bytes from p (any alignment) as 32-byte vectors: every line is
   loaded, nothing is kept. n is a multiple of 4. */
#if EXPLAIN_X86
__attribute__((target("avx2"))) static float sum_avx2(const char *p, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps((const float *)(p + i)));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps((const float *)(p + i + 32)));
  }
  for (; i + 32 <= n; i += 32) s0 = _mm256_add_ps(s0, _mm256_loadu_ps((const float *)(p + i)));
  float lanes[8], r = 0;
  _mm256_storeu_ps(lanes, _mm256_add_ps(s0, s1));
  for (int j = 0; j < 8; j++) r += lanes[j];
  for (; i + 4 <= n; i += 4) {
    float x;
    memcpy(&x, p + i, 4);
    r += x;
  }
  return r;
}
#endif

static float sum_portable(const char *p, size_t n) {
  float s[8] = {0};
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int j = 0; j < 8; j++) {
      float x;
      memcpy(&x, p + i + 4 * j, 4);
      s[j] += x;
    }
  for (; i + 4 <= n; i += 4) {
    float x;
    memcpy(&x, p + i, 4);
    s[0] += x;
  }
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

typedef float (*sum_fn)(const char *p, size_t n);

static sum_fn pick_sum(const bench_cpu *cpu) {
#if EXPLAIN_X86
  if (cpu->avx2_fma) return sum_avx2;
#else
  (void)cpu;
#endif
  return sum_portable;
}

/* ---- the call's geometry ----------------------------------------------------- */

typedef struct geometry {
  const rpa_args *a;
  int32_t S;        /* sequences computed */
  size_t es;        /* cache element size */
  size_t kbytes, vbytes; /* one K row, one V row (0: latent) */
} geometry;

static void geometry_of(const rpa_args *a, geometry *g) {
  g->a = a;
  g->S = a->distribution ? a->distribution[2] : a->num_seqs;
  g->es = rpa_dtype_size(a->cache.dtype);
  const int32_t dv = a->head_dim_v ? a->head_dim_v : a->head_dim;
  g->kbytes = (size_t)a->head_dim * g->es;
  g->vbytes = a->cache.v ? (size_t)dv * g->es : 0;
}

/* The keys [lo, hi) some query of sequence s sees. */
static void visible_keys(const geometry *g, int32_t s, int64_t *lo, int64_t *hi) {
  const rpa_args *a = g->a;
  const int64_t q_len = a->cu_q_lens[s + 1] - a->cu_q_lens[s];
  const int64_t kv_len = a->kv_lens[s];
  *lo = 0;
  *hi = kv_len;
  if (a->causal && a->sliding_window > 0) {
    const int64_t first = kv_len - q_len - a->sliding_window + 1;
    if (first > 0) *lo = first;
  }
}

static const char *k_row(const geometry *g, int32_t s, int64_t key, int32_t h) {
  const rpa_kv_cache *c = &g->a->cache;
  const int64_t page = g->a->page_indices[(int64_t)s * g->a->pages_per_seq + key / c->page_size];
  const int64_t e = page * c->k_page_stride + (key % c->page_size) * c->k_slot_stride +
                    h * c->k_head_stride;
  return (const char *)c->k + e * (int64_t)g->es;
}

static const char *v_row(const geometry *g, int32_t s, int64_t key, int32_t h) {
  const rpa_kv_cache *c = &g->a->cache;
  const int64_t page = g->a->page_indices[(int64_t)s * g->a->pages_per_seq + key / c->page_size];
  const int64_t e = page * c->v_page_stride + (key % c->page_size) * c->v_slot_stride +
                    h * c->v_head_stride;
  return (const char *)c->v + e * (int64_t)g->es;
}

/* ---- (a): the engine's order --------------------------------------------------- */

typedef struct order_item {
  int32_t seq;
  int64_t c0, c1;
} order_item;

typedef struct order_job {
  const geometry *g;
  order_item *items;
  int n;
  _Atomic int next;
  sum_fn sum;
  volatile float sink[64];
} order_job;

static int cmp_item_len(const void *x, const void *y) {
  const order_item *a = x, *b = y;
  const int64_t la = a->c1 - a->c0, lb = b->c1 - b->c0;
  return la > lb ? -1 : la < lb;
}

/* The items: each sequence's visible keys in the engine's decode splits
   (a prefill chunk's keys read once, as one item), longest first. */
static order_item *order_items(const geometry *g, int *n_out) {
  order_item *items = malloc(sizeof *items * (size_t)g->S * SPLITS_MAX + 1);
  int n = 0;
  if (!items) return NULL;
  for (int32_t s = 0; s < g->S; s++) {
    int64_t lo, hi;
    visible_keys(g, s, &lo, &hi);
    const int64_t keys = hi - lo;
    int64_t splits = keys / SPLIT_MIN;
    if (splits < 1) splits = 1;
    if (splits > SPLITS_MAX) splits = SPLITS_MAX;
    const int64_t per = (keys + splits - 1) / splits;
    const int64_t chunk = (per + STEP_KEYS - 1) / STEP_KEYS * STEP_KEYS;
    for (int64_t c0 = lo; c0 < hi; c0 += chunk)
      items[n++] = (order_item){s, c0, c0 + chunk < hi ? c0 + chunk : hi};
  }
  qsort(items, (size_t)n, sizeof *items, cmp_item_len);
  *n_out = n;
  return items;
}

static void order_task(void *arg, int thread) {
  order_job *j = arg;
  const geometry *g = j->g;
  const int32_t H = g->a->num_kv_heads;
  float acc = 0;
  for (;;) {
    const int i = atomic_fetch_add(&j->next, 1);
    if (i >= j->n) break;
    const order_item *it = &j->items[i];
    for (int64_t c0 = it->c0; c0 < it->c1; c0 += STEP_KEYS) {
      const int64_t c1 = c0 + STEP_KEYS < it->c1 ? c0 + STEP_KEYS : it->c1;
      for (int32_t h = 0; h < H; h++) {
        for (int64_t c = c0; c < c1; c++) acc += j->sum(k_row(g, it->seq, c, h), g->kbytes);
        if (g->vbytes)
          for (int64_t c = c0; c < c1; c++) acc += j->sum(v_row(g, it->seq, c, h), g->vbytes);
      }
    }
  }
  j->sink[thread & 63] = acc;
}

/* ---- (b): whole pages in address order, several in flight ---------------- */

typedef struct range {
  const char *p;
  size_t n;
} range;

typedef struct best_job {
  range *r;      /* sorted by address */
  int *first;    /* [threads + 1]: thread t reads ranges [first[t], first[t+1]) */
  sum_fn sum;
  volatile float sink[64];
} best_job;

static int cmp_range(const void *x, const void *y) {
  const range *a = x, *b = y;
  return a->p < b->p ? -1 : a->p > b->p;
}

/* Adds to r the address range(s) of the K and V rows of slots [s0, s1) of
   physical page `page`, every KV head: one range where K and V interleave
   (upstream's layout, FlashInfer's HND), two where they lie apart. */
static int page_ranges(const geometry *g, int64_t page, int64_t s0, int64_t s1,
                       range *r) {
  const rpa_kv_cache *c = &g->a->cache;
  const int64_t es = (int64_t)g->es, H = g->a->num_kv_heads;
  const char *k0 = (const char *)c->k +
                   (page * c->k_page_stride + s0 * c->k_slot_stride) * es;
  const char *k1 = (const char *)c->k +
                   (page * c->k_page_stride + (s1 - 1) * c->k_slot_stride +
                    (H - 1) * c->k_head_stride) * es + g->kbytes;
  if (!g->vbytes) {
    r[0] = (range){k0, (size_t)(k1 - k0)};
    return 1;
  }
  const char *v0 = (const char *)c->v +
                   (page * c->v_page_stride + s0 * c->v_slot_stride) * es;
  const char *v1 = (const char *)c->v +
                   (page * c->v_page_stride + (s1 - 1) * c->v_slot_stride +
                    (H - 1) * c->v_head_stride) * es + g->vbytes;
  if (v0 <= k1 && k0 <= v1) { /* they overlap: one range */
    const char *lo = k0 < v0 ? k0 : v0, *hi = k1 > v1 ? k1 : v1;
    r[0] = (range){lo, (size_t)(hi - lo)};
    return 1;
  }
  r[0] = (range){k0, (size_t)(k1 - k0)};
  r[1] = (range){v0, (size_t)(v1 - v0)};
  return 2;
}

/* Every page of every sequence's visible keys, merged where they overlap
   (a page two sequences read is read once), sorted by address. */
static range *best_ranges(const geometry *g, int *n_out) {
  const int32_t ps = g->a->cache.page_size;
  int64_t cap = 0;
  for (int32_t s = 0; s < g->S; s++) {
    int64_t lo, hi;
    visible_keys(g, s, &lo, &hi);
    cap += 2 * ((hi - 1) / ps - lo / ps + 1);
  }
  range *r = malloc(sizeof *r * (size_t)(cap + 1));
  if (!r) return NULL;
  int n = 0;
  for (int32_t s = 0; s < g->S; s++) {
    int64_t lo, hi;
    visible_keys(g, s, &lo, &hi);
    for (int64_t lp = lo / ps; lp * ps < hi; lp++) {
      const int64_t s0 = lp * ps < lo ? lo - lp * ps : 0;
      const int64_t s1 = (lp + 1) * ps > hi ? hi - lp * ps : ps;
      const int64_t page =
          g->a->page_indices[(int64_t)s * g->a->pages_per_seq + lp];
      n += page_ranges(g, page, s0, s1, r + n);
    }
  }
  qsort(r, (size_t)n, sizeof *r, cmp_range);
  int m = 0;
  for (int i = 0; i < n; i++) {
    if (m > 0 && r[i].p <= r[m - 1].p + r[m - 1].n) {
      const char *end = r[i].p + r[i].n;
      if (end > r[m - 1].p + r[m - 1].n) r[m - 1].n = (size_t)(end - r[m - 1].p);
      continue;
    }
    r[m++] = r[i];
  }
  *n_out = m;
  return r;
}

static void best_task(void *arg, int thread) {
  best_job *j = arg;
  const int lo = j->first[thread], hi = j->first[thread + 1];
  enum { CHUNK = 512 };
  float acc = 0;
  /* STREAMS ranges at a time, CHUNK bytes of each in turn */
  for (int r0 = lo; r0 < hi; r0 += STREAMS) {
    const int k = hi - r0 < STREAMS ? hi - r0 : STREAMS;
    size_t off = 0, most = 0;
    for (int i = 0; i < k; i++) most = j->r[r0 + i].n > most ? j->r[r0 + i].n : most;
    for (; off < most; off += CHUNK)
      for (int i = 0; i < k; i++) {
        const range *x = &j->r[r0 + i];
        if (off < x->n)
          acc += j->sum(x->p + off, (x->n - off < CHUNK ? x->n - off : CHUNK) & ~(size_t)3);
      }
  }
  j->sink[thread & 63] = acc;
}

/* Splits the sorted ranges into `threads` runs of about equal bytes. */
static void share_ranges(const range *r, int n, int threads, int *first) {
  size_t total = 0;
  for (int i = 0; i < n; i++) total += r[i].n;
  first[0] = 0;
  int t = 1;
  size_t run = 0;
  for (int i = 0; i < n && t < threads; i++) {
    run += r[i].n;
    if (run >= total / (size_t)threads * (size_t)t) first[t++] = i + 1;
  }
  for (; t <= threads; t++) first[t] = n;
}

/* ---- sub-calls --------------------------------------------------------------- */

/* The call restricted to sequences [s0, s1): token rows rebased, the
   metadata arrays offset (cu_q_lens rebuilt into cu). Needs no mask and no
   shared prefixes. */
static rpa_args sub_call(const rpa_args *a, int32_t s0, int32_t s1, int32_t *cu) {
  rpa_args b = *a;
  const int64_t t0 = a->cu_q_lens[s0];
  for (int32_t i = s0; i <= s1; i++) cu[i - s0] = (int32_t)(a->cu_q_lens[i] - t0);
  b.num_seqs = s1 - s0;
  b.cu_q_lens = cu;
  b.kv_lens = a->kv_lens + s0;
  b.page_indices = a->page_indices + (int64_t)s0 * a->pages_per_seq;
  b.distribution = NULL;
  b.num_tokens = a->num_tokens - (int32_t)t0;
  const size_t qs = rpa_dtype_size(a->q.dtype), os = rpa_dtype_size(a->out.dtype),
               ks = rpa_dtype_size(a->cache.dtype);
  b.q.data = (char *)a->q.data + t0 * a->q.token_stride * (int64_t)qs;
  b.out.data = (char *)a->out.data + t0 * a->out.token_stride * (int64_t)os;
  if (a->k.data) b.k.data = (char *)a->k.data + t0 * a->k.token_stride * (int64_t)ks;
  if (a->v.data) b.v.data = (char *)a->v.data + t0 * a->v.token_stride * (int64_t)ks;
  if (a->lse) b.lse = a->lse + t0 * a->lse_token_stride;
  return b;
}

static double timed_call(rpa_context *ctx, const rpa_args *a, int *failed) {
  const double t0 = now_s();
  if (rpa_attention(ctx, a) != RPA_OK) *failed = 1;
  return now_s() - t0;
}

int bench_explain_case(rpa_context *ctx, bench_batch *b, int threads,
                       const int *cpus, int ncpus, void *bw_buf,
                       size_t bw_bytes, const bench_cpu *cpu,
                       size_t hot_bytes, int rounds, bench_explain *e) {
  memset(e, 0, sizeof *e);
  const rpa_args *a = &b->args;
  if (a->mask || a->num_shared > 0) {
    snprintf(e->note, sizeof e->note, "not explained: masks / shared prefixes");
    return -1;
  }
  geometry g;
  geometry_of(a, &g);
  bench_count count;
  bench_count_args(a, &count);
  e->kv_bytes = (double)count.kv_read_bytes;
  e->call_bytes = (double)count.bytes;
  /* the decodes that lead the batch, and whether the rest are chunks */
  int32_t d = 0;
  while (d < g.S && a->cu_q_lens[d + 1] - a->cu_q_lens[d] == 1) d++;
  int split = d > 0 && d < g.S;
  for (int32_t s = d; s < g.S && split; s++)
    if (a->cu_q_lens[s + 1] - a->cu_q_lens[s] == 1) split = 0;

  order_job *oj = calloc(1, sizeof *oj);
  best_job *bj = calloc(1, sizeof *bj);
  int nr = 0;
  range *ranges = best_ranges(&g, &nr);
  int *first = calloc((size_t)threads + 1, sizeof *first);
  /* cu_q_lens of the sub-calls: the decodes, the chunks, the hot decodes */
  int32_t *cu = malloc(sizeof(int32_t) * 3 * ((size_t)g.S + 1));
  int32_t *hot_kv = malloc(sizeof(int32_t) * ((size_t)g.S + 1));
  double *t_call = calloc((size_t)rounds, sizeof(double)),
         *t_lim = calloc((size_t)rounds, sizeof(double)),
         *ratio = calloc((size_t)rounds, sizeof(double)),
         *t_a = calloc((size_t)rounds, sizeof(double)),
         *t_b = calloc((size_t)rounds, sizeof(double)),
         *t_split = calloc((size_t)rounds, sizeof(double));
  int rc = -1, failed = 0;
  if (!oj || !bj || !ranges || !first || !cu || !hot_kv || !t_call || !t_lim ||
      !ratio || !t_a || !t_b || !t_split) {
    snprintf(e->note, sizeof e->note, "out of memory");
    goto out;
  }
  oj->g = &g;
  oj->sum = pick_sum(cpu);
  oj->items = order_items(&g, &oj->n);
  if (!oj->items) {
    snprintf(e->note, sizeof e->note, "out of memory");
    goto out;
  }
  bj->r = ranges;
  bj->first = first;
  bj->sum = oj->sum;
  share_ranges(ranges, nr, threads, first);

  /* the mixed case as two calls: its decodes, then its chunks */
  const rpa_args dec = split ? sub_call(a, 0, d, cu) : *a;
  const rpa_args chunks = split ? sub_call(a, d, g.S, cu + g.S + 1) : *a;

  /* the limit's pass reads a quarter of the buffer (>= 8x the LLC) */
  size_t lim_bytes = bw_bytes / 4;
  const size_t llc8 = (size_t)(cpu->l3_bytes > 0 ? cpu->l3_bytes : 32L << 20) * 8;
  if (lim_bytes < llc8 && llc8 <= bw_bytes) lim_bytes = llc8;
  for (int r = 0; r < rounds; r++) {
    /* each read leaves the caches holding other bytes: every measure
       starts cold */
    t_lim[r] = bench_read_pass(threads, cpus, ncpus, bw_buf, lim_bytes, cpu);
    t_call[r] = timed_call(ctx, a, &failed);
    ratio[r] = t_lim[r] > 0 ? e->call_bytes / t_call[r] / (t_lim[r] * 1e9) : 0;
    atomic_store(&oj->next, 0);
    t_a[r] = bench_team_run(threads, cpus, ncpus, order_task, oj);
    t_b[r] = bench_team_run(threads, cpus, ncpus, best_task, bj);
    if (split) {
      bench_read_pass(threads, cpus, ncpus, bw_buf, lim_bytes, cpu);
      t_split[r] = timed_call(ctx, &dec, &failed);
      bench_read_pass(threads, cpus, ncpus, bw_buf, lim_bytes, cpu);
      t_split[r] += timed_call(ctx, &chunks, &failed);
    }
    if (failed) {
      snprintf(e->note, sizeof e->note, "a call failed: %s",
               rpa_context_last_error(ctx));
      goto out;
    }
  }
  e->rounds = rounds;
  e->kernel_s = median(t_call, rounds);
  e->limit_gbps = median(t_lim, rounds);
  e->mbu = median(ratio, rounds);
  e->read_order_s = median(t_a, rounds);
  e->read_best_s = median(t_b, rounds);
  if (split) e->split_s = median(t_split, rounds);

  /* (c): the leading decodes on a few sequences, K/V clamped to fit
     hot_bytes, called repeatedly without a flush */
  if (d > 0) {
    const int32_t m = d < 2 * threads ? d : 2 * threads;
    const double per_key = (double)a->num_kv_heads * (double)(g.kbytes + g.vbytes);
    int64_t keep = (int64_t)((double)hot_bytes / (per_key * m));
    if (keep < STEP_KEYS) keep = STEP_KEYS;
    rpa_args hot = sub_call(a, 0, m, cu + 2 * ((size_t)g.S + 1));
    for (int32_t s = 0; s < m; s++)
      hot_kv[s] = a->kv_lens[s] < keep ? a->kv_lens[s] : (int32_t)keep;
    hot.kv_lens = hot_kv;
    geometry hg;
    geometry_of(&hot, &hg);
    double bytes = 0;
    for (int32_t s = 0; s < m; s++) {
      int64_t lo, hi;
      visible_keys(&hg, s, &lo, &hi);
      bytes += per_key * (double)(hi - lo);
    }
    for (int i = 0; i < 3; i++) timed_call(ctx, &hot, &failed);
    enum { HOT_CALLS = 101 };
    double t_hot[HOT_CALLS];
    int n = 0;
    const double start = now_s();
    while (n < HOT_CALLS && (n < 11 || now_s() - start < 0.5))
      t_hot[n++] = timed_call(ctx, &hot, &failed);
    if (failed) {
      snprintf(e->note, sizeof e->note, "a call failed: %s",
               rpa_context_last_error(ctx));
      goto out;
    }
    e->hot_gbps = bytes / median(t_hot, n) / 1e9;
    /* the decodes' share of the case's K/V */
    double dec_bytes = 0;
    for (int32_t s = 0; s < d; s++) {
      int64_t lo, hi;
      visible_keys(&g, s, &lo, &hi);
      dec_bytes += per_key * (double)(hi - lo);
    }
    e->hot_s = dec_bytes / (e->hot_gbps * 1e9);
  }
  e->ok = 1;
  rc = 0;
out:
  if (oj) free(oj->items);
  free(oj);
  free(bj);
  free(ranges);
  free(first);
  free(cu);
  free(hot_kv);
  free(t_call);
  free(t_lim);
  free(ratio);
  free(t_a);
  free(t_b);
  free(t_split);
  return rc;
}

void bench_print_explain(FILE *f, const char *const *names,
                         const bench_explain *e, int n) {
  fprintf(f,
          "\nexplain: each column measured in the same run, alternating with the "
          "kernel's calls (medians of the rounds);\n"
          "  MBU against a read limit taken before each call; (a) the call's K/V "
          "bytes read in the engine's order,\n"
          "  (b) the same bytes whole pages in address order, %d in flight per "
          "thread; (c) the kernel with its K/V\n"
          "  resident in cache, projected to the case's decode bytes (the "
          "arithmetic alone); mixed: decodes and\n"
          "  chunks as two calls against the one call.\n\n",
          STREAMS);
  fprintf(f, "%-44s %9s %8s %6s %9s %9s %9s %8s %8s %8s %8s\n", "case",
          "kernel ms", "limit", "MBU", "(a) ms", "(b) ms", "(c) ms",
          "k/(b)", "(a)/(b)", "k/(c)", "2 calls");
  for (int i = 0; i < n; i++) {
    if (!e[i].ok) {
      fprintf(f, "%-44.44s %s\n", names[i], e[i].note);
      continue;
    }
    char c[16] = "n/a", kc[16] = "n/a", two[16] = "n/a";
    if (e[i].hot_s > 0) {
      snprintf(c, sizeof c, "%.2f", 1e3 * e[i].hot_s);
      snprintf(kc, sizeof kc, "%.2fx", e[i].kernel_s / e[i].hot_s);
    }
    if (e[i].split_s > 0) snprintf(two, sizeof two, "%.2fx", e[i].split_s / e[i].kernel_s);
    fprintf(f, "%-44.44s %9.2f %6.1fGB %5.0f%% %9.2f %9.2f %9s %7.2fx %7.2fx %8s %8s\n",
            names[i], 1e3 * e[i].kernel_s, e[i].limit_gbps, 100 * e[i].mbu,
            1e3 * e[i].read_order_s, 1e3 * e[i].read_best_s, c,
            e[i].kernel_s / e[i].read_best_s,
            e[i].read_order_s / e[i].read_best_s, kc, two);
  }
  fprintf(f, "  k/(b): the kernel's time over reading its bytes in the best "
             "order; (a)/(b): what the engine's order costs a\n"
             "  plain read; k/(c): the kernel over its arithmetic alone; 2 calls: "
             "the two calls' time over the one call's.\n");
}
