/* Concurrency: distinct contexts used at the same time by distinct threads
   are independent (rpa.h, "Thread safety"). NT threads, each with its own
   context (1 or 2 worker threads), run mixed batches at the same time over
   ONE shared page pool, each call's sequences on their own page ids. Every
   result must be bitwise the serial result of the same batch on a fresh
   context with the same kernel set and thread count: out and lse of every
   call, every page of the shared pool, and the pool's guard bytes.

   A round: the main thread builds NT x CALLS batches (tests/batch.h) with
   one cache geometry, runs each serially on a fresh context (its own
   cache), lays all their initial pages side by side in the shared pool and
   remaps their page tables; then the NT threads, released together by a
   barrier, run their CALLS calls against the pool; the main thread
   compares. Rounds change the geometry (dtype, layout, page size). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "harness.h"

enum { NT = 4, CALLS = 3, MAX_ROUNDS = 4 };

typedef struct call {
  tb_batch b;
  rpa_args args;       /* b.args moved onto the shared pool */
  int32_t *pages;      /* b's page table, shifted by first_page */
  int32_t first_page;  /* where b's pages start in the pool */
  unsigned char *want_out, *want_lse, *want_cache; /* the serial run */
  rpa_status got;
} call;

typedef struct round_geometry {
  rpa_dtype kv;
  tb_layout layout; /* page-major layouts only: a page is one block */
  int32_t page_size, num_kv_heads, head_dim;
} round_geometry;

static const round_geometry geometries[MAX_ROUNDS] = {
    {RPA_F32, TB_COMBINED, 16, 2, 64},
    {RPA_BF16, TB_HND, 32, 2, 128},
    {RPA_FP8_E4M3, TB_COMBINED, 16, 1, 64},
    {RPA_F16, TB_HND, 8, 2, 64},
};

static call calls[NT][CALLS];
static unsigned char *pool_mem; /* guard | pages | guard */
static size_t pool_bytes;
static pthread_barrier_t start_line, finish_line;
static int rounds;
static int thread_ctx_ok[NT];

static int threads_of(int t) { return 1 + t % 2; }

static rpa_context *make_ctx(int threads) {
  rpa_context_options o = rpa_context_options_default();
  o.num_threads = threads;
  rpa_context *ctx = NULL;
  return rpa_context_create(&o, &ctx) == RPA_OK ? ctx : NULL;
}

/* A mixed batch: decodes long enough to split (1100 and 2100 keys: 2 and 4
   splits), a short decode, a prefill chunk with a cached prefix, a short
   mixed chunk; lengths and dtypes of q/out vary with the call. */
static int make_call(call *c, const round_geometry *g, int round, int t,
                     int k) {
  static const rpa_dtype q_types[] = {RPA_F32, RPA_BF16, RPA_F16};
  int32_t ql[5] = {1, 24 + 8 * k, 1, 3, 1};
  int32_t kl[5] = {1100 + 37 * t, 80 + 24 + 8 * k + 11 * round, 40 + t,
                   3 + 5 * k, 2100 - 50 * k};
  tb_config cfg = tb_config_default();
  cfg.seed = 1000u + 100u * (unsigned)round + 10u * (unsigned)t + (unsigned)k;
  cfg.num_seqs = 5;
  cfg.q_lens = ql;
  cfg.kv_lens = kl;
  cfg.num_kv_heads = g->num_kv_heads;
  cfg.num_q_heads = 4 * g->num_kv_heads;
  cfg.head_dim = g->head_dim;
  cfg.page_size = g->page_size;
  cfg.extra_pages = 2;
  cfg.shuffle_pages = 1;
  cfg.layout = g->layout;
  cfg.kv_dtype = g->kv;
  cfg.q_dtype = cfg.out_dtype = q_types[(t + k) % 3];
  cfg.lse = 1;
  cfg.sinks = k == 1;
  cfg.soft_cap = k == 2 ? 30.0f : 0.0f;
  return tb_make(&c->b, &cfg);
}

static size_t page_bytes(const tb_batch *b) {
  return (size_t)b->args.cache.k_page_stride * rpa_dtype_size(b->cfg.kv_dtype);
}

static unsigned char *pool_data(void) { return pool_mem + TB_GUARD; }

static unsigned char *dup_bytes(const void *p, size_t n) {
  unsigned char *d = malloc(n ? n : 1);
  if (d) memcpy(d, p, n);
  return d;
}

/* Builds the round's batches, their serial results and the shared pool. */
static int prepare_round(int round) {
  const round_geometry *g = &geometries[round % MAX_ROUNDS];
  int32_t total_pages = 0;
  for (int t = 0; t < NT; t++)
    for (int k = 0; k < CALLS; k++) {
      call *c = &calls[t][k];
      memset(c, 0, sizeof *c);
      if (make_call(c, g, round, t, k) != 0) return -1;
      c->first_page = total_pages;
      total_pages += c->b.num_pages;
      if (c->b.cache.bytes != (size_t)c->b.num_pages * page_bytes(&c->b))
        return -1; /* not a page-major layout */
      /* the serial run: a fresh context, the batch's own cache */
      rpa_context *ctx = make_ctx(threads_of(t));
      if (!ctx) return -1;
      const rpa_status st = rpa_attention(ctx, &c->b.args);
      CHECK(st == RPA_OK, "serial run (thread %d call %d): %s", t, k,
            rpa_context_last_error(ctx));
      rpa_context_destroy(ctx);
      if (st != RPA_OK) return -1;
      if (round == 0 && !th_quick()) { /* the serial run is right, too */
        const tb_batch *b = &c->b;
        const size_t rows = (size_t)b->total_tokens * b->cfg.num_q_heads;
        double *o = malloc(sizeof(double) * rows * b->cfg.head_dim);
        double *l = malloc(sizeof(double) * rows);
        char msg[256];
        if (!o || !l) return -1;
        tb_oracle(b, o, l);
        CHECK(tb_check_output(b, o, l, tb_tolerance(&b->cfg), msg, sizeof msg) == 0,
              "serial run against the oracle (thread %d call %d): %s", t, k, msg);
        CHECK(tb_check_cache(b, msg, sizeof msg) == 0, "serial cache: %s", msg);
        free(o);
        free(l);
      }
      c->want_out = dup_bytes(c->b.out.mem, c->b.out.bytes + 2 * TB_GUARD);
      c->want_lse = dup_bytes(c->b.lse.mem, c->b.lse.bytes + 2 * TB_GUARD);
      c->want_cache = dup_bytes(tb_data(&c->b.cache), c->b.cache.bytes);
      if (!c->want_out || !c->want_lse || !c->want_cache) return -1;
      tb_reset(&c->b); /* out and lse as before the call */
    }

  /* The shared pool: every call's initial pages at its first_page. */
  const size_t pb = page_bytes(&calls[0][0].b);
  pool_bytes = (size_t)total_pages * pb;
  pool_mem = malloc(pool_bytes + 2 * TB_GUARD);
  if (!pool_mem) return -1;
  memset(pool_mem, TB_GUARD_BYTE, pool_bytes + 2 * TB_GUARD);
  for (int t = 0; t < NT; t++)
    for (int k = 0; k < CALLS; k++) {
      call *c = &calls[t][k];
      const rpa_args *a = &c->b.args;
      unsigned char *base = pool_data() + (size_t)c->first_page * pb;
      memcpy(base, tb_data(&c->b.cache_before), c->b.cache.bytes);
      const size_t n = (size_t)a->num_seqs * a->pages_per_seq;
      c->pages = malloc(sizeof(int32_t) * (n ? n : 1));
      if (!c->pages) return -1;
      for (size_t i = 0; i < n; i++)
        c->pages[i] = a->page_indices[i] >= 0 ? a->page_indices[i] + c->first_page
                                              : a->page_indices[i];
      c->args = *a;
      const char *own = (const char *)a->cache.k;
      c->args.cache.k = pool_data();
      c->args.cache.v = a->cache.v ? (char *)pool_data() + ((const char *)a->cache.v - own)
                                   : NULL;
      c->args.cache.num_pages = total_pages;
      c->args.page_indices = c->pages;
    }
  return 0;
}

/* Compares the round's results with the serial runs; frees the round. */
static void check_round(int round) {
  const size_t pb = page_bytes(&calls[0][0].b);
  for (int t = 0; t < NT; t++)
    for (int k = 0; k < CALLS; k++) {
      call *c = &calls[t][k];
      CHECK(c->got == RPA_OK, "round %d thread %d call %d: %s", round, t, k,
            rpa_status_string(c->got));
      CHECK(memcmp(c->want_out, c->b.out.mem, c->b.out.bytes + 2 * TB_GUARD) == 0,
            "round %d thread %d call %d: out differs from the serial run", round, t, k);
      CHECK(memcmp(c->want_lse, c->b.lse.mem, c->b.lse.bytes + 2 * TB_GUARD) == 0,
            "round %d thread %d call %d: lse differs from the serial run", round, t, k);
      CHECK(memcmp(c->want_cache, pool_data() + (size_t)c->first_page * pb,
                   c->b.cache.bytes) == 0,
            "round %d thread %d call %d: its pages differ from the serial run",
            round, t, k);
    }
  int guards = 1;
  for (size_t i = 0; i < TB_GUARD; i++)
    guards &= pool_mem[i] == TB_GUARD_BYTE &&
              pool_mem[TB_GUARD + pool_bytes + i] == TB_GUARD_BYTE;
  CHECK(guards, "round %d: the shared pool's guard bytes changed", round);
}

static void free_round(void) {
  for (int t = 0; t < NT; t++)
    for (int k = 0; k < CALLS; k++) {
      call *c = &calls[t][k];
      free(c->want_out);
      free(c->want_lse);
      free(c->want_cache);
      free(c->pages);
      tb_free(&c->b);
      memset(c, 0, sizeof *c);
    }
  free(pool_mem);
  pool_mem = NULL;
}

static void *thread_main(void *arg) {
  const int t = (int)(size_t)arg;
  rpa_context *ctx = make_ctx(threads_of(t)); /* one context for all rounds */
  thread_ctx_ok[t] = ctx != NULL;
  for (int r = 0; r < rounds; r++) {
    pthread_barrier_wait(&start_line);
    for (int k = 0; k < CALLS; k++)
      calls[t][k].got = ctx ? rpa_attention(ctx, &calls[t][k].args) : RPA_OUT_OF_MEMORY;
    pthread_barrier_wait(&finish_line);
  }
  rpa_context_destroy(ctx);
  return NULL;
}

static void concurrent_rounds(void) {
  pthread_t th[NT];
  int started = 0, ok = 1;
  pthread_barrier_init(&start_line, NULL, NT + 1);
  pthread_barrier_init(&finish_line, NULL, NT + 1);
  for (int t = 0; t < NT; t++) {
    if (pthread_create(&th[t], NULL, thread_main, (void *)(size_t)t) != 0) break;
    started++;
  }
  CHECK(started == NT, "pthread_create");
  if (started != NT) abort(); /* the barriers would never open */
  for (int r = 0; r < rounds; r++) {
    char name[160];
    const round_geometry *g = &geometries[r % MAX_ROUNDS];
    snprintf(name, sizeof name,
             "round %d (kv %s, %s, page size %d): %d threads x %d calls at once "
             "on one page pool, bitwise the serial runs",
             r, rpa_dtype_name(g->kv), tb_layout_name(g->layout), (int)g->page_size,
             NT, CALLS);
    th_begin(name);
    const int prepared = ok && prepare_round(r) == 0;
    CHECK(prepared, "round %d: building the batches", r);
    if (!prepared) ok = 0;
    /* the threads run even after a failure, on nothing, to reach the end */
    if (!prepared)
      for (int t = 0; t < NT; t++)
        for (int k = 0; k < CALLS; k++) calls[t][k].args = rpa_args_default();
    pthread_barrier_wait(&start_line);
    pthread_barrier_wait(&finish_line);
    if (prepared) check_round(r);
    free_round();
    th_end();
  }
  th_begin("threads and their contexts");
  for (int t = 0; t < NT; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < NT; t++) CHECK(thread_ctx_ok[t], "thread %d: context", t);
  pthread_barrier_destroy(&start_line);
  pthread_barrier_destroy(&finish_line);
  th_end();
}

int main(void) {
  rounds = th_quick() ? 2 : MAX_ROUNDS;
  concurrent_rounds(); /* one case per round, then the threads' */
  {
    rpa_context *ctx = make_ctx(1);
    printf("test_concurrency: kernel set %s: %d threads x %d rounds x %d calls = %d "
           "concurrent calls, %s\n",
           ctx ? rpa_context_isa(ctx) : "?", NT, rounds, CALLS, NT * rounds * CALLS,
           th_failed ? "NOT all bitwise equal to the serial runs"
                     : "all bitwise equal to the serial runs");
    rpa_context_destroy(ctx);
  }
  return th_finish("test_concurrency");
}
