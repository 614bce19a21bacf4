/* Allocation faults: every allocation the library makes is made to fail,
   one at a time, and the library must fail cleanly, leak nothing, write
   nothing, and keep working afterwards.

   This executable is linked with
     -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign,
     --wrap=aligned_alloc,--wrap=free,--wrap=pthread_create
   so every call of those functions from the objects linked in (the library
   rpa_static, the test helpers and this file) reaches the __wrap_ functions
   below. While `armed` is set, the wrappers number the calls 0, 1, 2, ...
   and fail call number fail_at (NULL, ENOMEM, or EAGAIN for
   pthread_create). They also count live blocks and live threads, so a leak
   on any path shows.

   The allocations of src/ (grep malloc calloc realloc posix_memalign
   aligned_alloc strdup pthread_create), each reached below:
     context.c   rpa_context_create  calloc: the context
     threadpool.c rpa_pool_create    calloc: the pool
     threadpool.c rpa_pool_create    calloc: the worker array (threads > 1)
     threadpool.c rpa_pool_create    pthread_create: worker 1 .. threads-1
     context.c   rpa_scratch         posix_memalign, the one scratch block,
                                     grown on demand by its three callers:
       validate.c check_written_pages  (the pages the fused write touches)
       engine.c   rpa_engine_attention (plan, split partials, thread tiles)
       ref/attention_ref.c rpa_ref_attention (a query row and accumulator)
   strdup, realloc and aligned_alloc are not used by src/ (strdup would
   escape the wrapping: it allocates inside libc).

   The sequence, per kernel set: create a context (3 threads) -> call 1, a
   mixed batch (decodes with 1100 and 2100 keys, split 2 and 4 ways, a
   short decode, a prefill chunk with a cached prefix) -> call 2, a bigger
   batch that must grow scratch -> destroy. For k = 0, 1, 2, ...: run it
   with call k failing, until a run reaches no call k. A failed create must
   return RPA_OUT_OF_MEMORY with *ctx_out NULL; a failed attention call
   RPA_OUT_OF_MEMORY, with out, lse and the cache untouched (guards too);
   then, disarmed, the same call again must succeed and match the oracle
   and the expected cache; after destroy the live blocks and threads are
   back where they were. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "harness.h"

/* ---- the wrappers ------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
void __real_free(void *p);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t align, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n);
void __wrap_free(void *p);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);

typedef enum fault_kind {
  F_MALLOC, F_CALLOC, F_REALLOC, F_POSIX_MEMALIGN, F_ALIGNED_ALLOC,
  F_PTHREAD_CREATE, F_KINDS
} fault_kind;

static const char *const kind_names[F_KINDS] = {
    "malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc",
    "pthread_create"};

static _Atomic int armed;
static _Atomic long calls_seen; /* numbered calls while armed */
static long fail_at = -1;
static _Atomic int failed_kind = -1;
static size_t failed_size;
static _Atomic long live_blocks, live_threads;

/* 1 if this call (numbered while armed) is the one to fail. */
static int should_fail(fault_kind kind, size_t size) {
  if (!atomic_load(&armed)) return 0;
  const long n = atomic_fetch_add(&calls_seen, 1);
  if (n != fail_at) return 0;
  atomic_store(&failed_kind, (int)kind);
  failed_size = size;
  return 1;
}

void *__wrap_malloc(size_t n) {
  if (should_fail(F_MALLOC, n)) return NULL;
  void *p = __real_malloc(n);
  if (p) atomic_fetch_add(&live_blocks, 1);
  return p;
}

void *__wrap_calloc(size_t n, size_t size) {
  if (should_fail(F_CALLOC, n * size)) return NULL;
  void *p = __real_calloc(n, size);
  if (p) atomic_fetch_add(&live_blocks, 1);
  return p;
}

void *__wrap_realloc(void *p, size_t n) {
  if (should_fail(F_REALLOC, n)) return NULL;
  void *q = __real_realloc(p, n);
  if (!p && q) atomic_fetch_add(&live_blocks, 1);
  if (p && !q && n == 0) atomic_fetch_sub(&live_blocks, 1);
  return q;
}

int __wrap_posix_memalign(void **p, size_t align, size_t n) {
  if (should_fail(F_POSIX_MEMALIGN, n)) return ENOMEM;
  const int rc = __real_posix_memalign(p, align, n);
  if (rc == 0) atomic_fetch_add(&live_blocks, 1);
  return rc;
}

void *__wrap_aligned_alloc(size_t align, size_t n) {
  if (should_fail(F_ALIGNED_ALLOC, n)) return NULL;
  void *p = __real_aligned_alloc(align, n);
  if (p) atomic_fetch_add(&live_blocks, 1);
  return p;
}

void __wrap_free(void *p) {
  if (p) atomic_fetch_sub(&live_blocks, 1);
  __real_free(p);
}

/* Threads are counted from their start to the return of their function, so
   a worker the pool forgets to join still counts. */
typedef struct trampoline {
  void *(*fn)(void *);
  void *arg;
} trampoline;

static void *thread_start(void *arg) {
  trampoline t = *(trampoline *)arg;
  __real_free(arg);
  void *r = t.fn(t.arg);
  atomic_fetch_sub(&live_threads, 1);
  return r;
}

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg) {
  if (should_fail(F_PTHREAD_CREATE, 0)) return EAGAIN;
  trampoline *tr = __real_malloc(sizeof *tr); /* not counted: freed by the thread */
  if (!tr) return EAGAIN;
  tr->fn = fn;
  tr->arg = arg;
  atomic_fetch_add(&live_threads, 1);
  const int rc = __real_pthread_create(t, attr, thread_start, tr);
  if (rc != 0) {
    atomic_fetch_sub(&live_threads, 1);
    __real_free(tr);
  }
  return rc;
}

/* ---- the batches -------------------------------------------------------- */

typedef struct checked_batch {
  tb_batch b;
  double *out, *lse; /* the oracle */
} checked_batch;

static int make_batch(checked_batch *cb, int big) {
  static const int32_t ql1[] = {1, 40, 1, 1};
  static const int32_t kl1[] = {1100, 140, 2100, 33};
  static const int32_t ql2[] = {1, 150, 1, 1, 7, 1, 1, 90};
  static const int32_t kl2[] = {2100, 400, 1500, 50, 7, 2600, 700, 300};
  tb_config c = tb_config_default();
  c.seed = big ? 902 : 901;
  c.num_seqs = big ? 8 : 4;
  c.q_lens = big ? ql2 : ql1;
  c.kv_lens = big ? kl2 : kl1;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.page_size = 8; /* call 2 writes 37 pages: validation's scratch grows too */
  c.shuffle_pages = 1;
  c.q_dtype = c.out_dtype = RPA_BF16;
  c.kv_dtype = RPA_BF16;
  c.lse = 1;
  c.sinks = big;
  memset(cb, 0, sizeof *cb);
  if (tb_make(&cb->b, &c) != 0) return -1;
  const size_t rows = (size_t)cb->b.total_tokens * c.num_q_heads;
  cb->out = malloc(sizeof(double) * rows * c.head_dim);
  cb->lse = malloc(sizeof(double) * rows);
  if (!cb->out || !cb->lse) return -1;
  tb_oracle(&cb->b, cb->out, cb->lse);
  return 0;
}

static void free_batch(checked_batch *cb) {
  free(cb->out);
  free(cb->lse);
  tb_free(&cb->b);
}

/* Out, lse and cache exactly as before any call, guards included. */
static int untouched(const tb_batch *b) {
  int ok = memcmp(b->out.mem, b->out_before.mem, b->out.bytes + 2 * TB_GUARD) == 0 &&
           memcmp(b->cache.mem, b->cache_before.mem, b->cache.bytes + 2 * TB_GUARD) == 0;
  const unsigned char *l = tb_data(&b->lse);
  for (size_t i = 0; ok && i < b->lse.bytes; i++) ok = l[i] == 0x5C;
  return ok;
}

static int correct(const checked_batch *cb, char *msg, size_t n) {
  return tb_check_output(&cb->b, cb->out, cb->lse, tb_tolerance(&cb->b.cfg), msg, n) == 0 &&
         tb_check_cache(&cb->b, msg, n) == 0;
}

/* ---- the sequence --------------------------------------------------------- */

typedef struct tally {
  long points;            /* numbered calls of a clean run */
  long injected;          /* faults injected */
  long per_kind[F_KINDS];
  long in_create, in_call1, in_call2;
} tally;

static void arm(long k) {
  atomic_store(&calls_seen, 0);
  atomic_store(&failed_kind, -1);
  fail_at = k;
  atomic_store(&armed, 1);
}

static void disarm(void) { atomic_store(&armed, 0); }
/* Checks between the steps allocate too: they run unarmed, numbering
   paused. */
static void pause_arm(void) { atomic_store(&armed, 0); }
static void resume_arm(void) { atomic_store(&armed, 1); }

static int fault_hit(void) { return atomic_load(&failed_kind) >= 0; }

/* One attention call of the sequence. Returns 1 if the fault came in it
   (and all checks after it were made). */
static int armed_call(rpa_context *ctx, checked_batch *cb, const char *isa,
                      long k, const char *which) {
  char msg[256];
  tb_reset(&cb->b);
  const int before = fault_hit();
  const rpa_status st = rpa_attention(ctx, &cb->b.args);
  if (before || !fault_hit()) {
    const int was_armed = atomic_load(&armed);
    pause_arm();
    CHECK(st == RPA_OK, "[%s k=%ld] %s: %s", isa, k, which, rpa_context_last_error(ctx));
    if (st == RPA_OK)
      CHECK(correct(cb, msg, sizeof msg), "[%s k=%ld] %s: %s", isa, k, which, msg);
    if (was_armed) resume_arm();
    return 0;
  }
  disarm();
  CHECK(st == RPA_OUT_OF_MEMORY, "[%s k=%ld] %s with a failed %s: status %s (%s)",
        isa, k, which, kind_names[failed_kind], rpa_status_string(st),
        rpa_context_last_error(ctx));
  CHECK(untouched(&cb->b), "[%s k=%ld] %s failed but wrote out, lse or the cache",
        isa, k, which);
  /* the context still works */
  const rpa_status again = rpa_attention(ctx, &cb->b.args);
  CHECK(again == RPA_OK, "[%s k=%ld] %s again, disarmed: %s", isa, k, which,
        rpa_context_last_error(ctx));
  if (again == RPA_OK)
    CHECK(correct(cb, msg, sizeof msg), "[%s k=%ld] %s again: %s", isa, k, which, msg);
  return 1;
}

/* Runs the sequence with call k failing. Returns 0 when no call k came. */
static int run_sequence(const char *isa, long k, checked_batch *b1,
                        checked_batch *b2, tally *ta) {
  const long blocks0 = atomic_load(&live_blocks);
  rpa_context_options o = rpa_context_options_default();
  o.num_threads = 3;
  o.isa = isa;
  o.pin_threads = 0;
  static char sentinel;
  rpa_context *ctx = (rpa_context *)(void *)&sentinel; /* create must clear it */
  arm(k);
  const rpa_status st = rpa_context_create(&o, &ctx);
  int where = 0; /* 1 create, 2 call 1, 3 call 2 */
  if (fault_hit()) {
    disarm();
    where = 1;
    CHECK(st == RPA_OUT_OF_MEMORY && ctx == NULL,
          "[%s k=%ld] create with a failed %s: status %s, ctx %p", isa, k,
          kind_names[failed_kind], rpa_status_string(st), (void *)ctx);
    if (st == RPA_OK) rpa_context_destroy(ctx);
  } else {
    CHECK(st == RPA_OK && ctx, "[%s k=%ld] create: %s", isa, k, rpa_status_string(st));
    if (st == RPA_OK && ctx) {
      if (armed_call(ctx, b1, isa, k, "call 1")) where = 2;
      const size_t scratch1 = rpa_context_scratch_bytes(ctx);
      if (armed_call(ctx, b2, isa, k, "call 2")) where = 3;
      const size_t scratch2 = rpa_context_scratch_bytes(ctx);
      rpa_context_destroy(ctx); /* frees only: never numbered */
      disarm();
      CHECK(scratch2 > scratch1, "[%s k=%ld] call 2 did not grow scratch (%zu -> %zu bytes)",
            isa, k, scratch1, scratch2);
    }
  }
  const int hit = fault_hit();
  disarm();
  CHECK(atomic_load(&live_blocks) == blocks0,
        "[%s k=%ld] %ld block(s) leaked (fault in %s)", isa, k,
        atomic_load(&live_blocks) - blocks0, hit ? kind_names[failed_kind] : "none");
  CHECK(atomic_load(&live_threads) == 0, "[%s k=%ld] %ld thread(s) still running",
        isa, k, atomic_load(&live_threads));
  if (!hit) {
    ta->points = atomic_load(&calls_seen);
    return 0;
  }
  ta->injected++;
  ta->per_kind[failed_kind]++;
  if (where == 1) ta->in_create++;
  if (where == 2) ta->in_call1++;
  if (where == 3) ta->in_call2++;
  if (getenv("RPA_TEST_VERBOSE"))
    printf("  %s k=%ld: %s(%zu bytes) failed in %s\n", isa, k,
           kind_names[failed_kind], failed_size,
           where == 1 ? "create" : where == 2 ? "call 1" : "call 2");
  return 1;
}

static long total_points, total_injected;

static void fault_sweep(const char *isa) {
  checked_batch b1, b2;
  CHECK(make_batch(&b1, 0) == 0 && make_batch(&b2, 1) == 0, "batches");
  tally ta;
  memset(&ta, 0, sizeof ta);
  long k = 0;
  while (run_sequence(isa, k, &b1, &b2, &ta) && k < 1000) k++;
  CHECK(k < 1000, "[%s] still failing after 1000 points", isa);
  CHECK(ta.points == ta.injected, "[%s] %ld points but %ld faults injected", isa,
        ta.points, ta.injected);
  /* what the list at the top says each set reaches */
  const int engine = strcmp(isa, "ref") != 0;
  CHECK(ta.per_kind[F_CALLOC] == (engine ? 3 : 1), "[%s] %ld callocs", isa,
        ta.per_kind[F_CALLOC]);
  CHECK(ta.per_kind[F_PTHREAD_CREATE] == (engine ? 2 : 0), "[%s] %ld pthread_creates",
        isa, ta.per_kind[F_PTHREAD_CREATE]);
  CHECK(ta.in_call1 == 2, "[%s] %ld scratch points in call 1 (validation, then the %s)",
        isa, ta.in_call1, engine ? "engine" : "reference");
  CHECK(ta.in_call2 >= 1, "[%s] call 2 allocated nothing", isa);
  printf("test_alloc_faults: %-6s %ld allocation points (create %ld, call 1 %ld, "
         "call 2 %ld; calloc %ld, pthread_create %ld, posix_memalign %ld), %ld "
         "faults injected\n",
         isa, ta.points, ta.in_create, ta.in_call1, ta.in_call2, ta.per_kind[F_CALLOC],
         ta.per_kind[F_PTHREAD_CREATE], ta.per_kind[F_POSIX_MEMALIGN], ta.injected);
  total_points += ta.points;
  total_injected += ta.injected;
  free_batch(&b1);
  free_batch(&b2);
}

int main(void) {
  int sets = 0;
  for (int i = 0; rpa_isa_name(i); i++) {
    const char *isa = rpa_isa_name(i);
    if (!rpa_isa_available(isa)) continue;
    char name[96];
    snprintf(name, sizeof name, "every allocation fails cleanly, one at a time (%s)", isa);
    TEST_CASE(name, fault_sweep(isa));
    sets++;
  }
  printf("test_alloc_faults: %d kernel sets, %ld allocation points, %ld faults "
         "injected, %s\n",
         sets, total_points, total_injected,
         th_failed ? "NOT all failed cleanly" : "every one failed cleanly");
  return th_finish("test_alloc_faults");
}
