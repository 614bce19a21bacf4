/* Bad input: every violated rule returns its own status, the context's
   last error names the argument (and, for per-sequence rules, the
   sequence), and nothing is written: the cache, out and lse (guard bytes
   included) and every input are bit-identical to before the call. After a
   failure, a correct call on the same context succeeds and clears the
   message. */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batch.h"
#include "harness.h"

/* ctx: the context the cases use; main_ctx, the one main creates (a forked
   child switches ctx to a context of its own). */
static rpa_context *ctx, *main_ctx;

/* The valid batch every case breaks in exactly one way: a decode, a prefill
   chunk with a cached prefix and a mixed sequence; page size 4, shuffled
   pages, spare page-table entries, padded token rows, lse and sinks on. */
enum { S = 3, PPS = 5, NPAD = 8 };
static const int32_t QL[S] = {1, 5, 3};
static const int32_t KL[S] = {7, 13, 10};
static tb_batch G;

/* Working copies of the metadata a case may break. */
static struct {
  int32_t cu[S + 1 + NPAD];
  int32_t kv[S + NPAD];
  int32_t pt[S * PPS + NPAD];
  int32_t dist[3];
  float sinks[16];
} W;

/* A fresh copy of the valid arguments, over fresh copies of the metadata. */
static rpa_args fresh(void) {
  memcpy(W.cu, G.cu_q_lens, sizeof(int32_t) * (S + 1));
  memcpy(W.kv, G.kv_lens, sizeof(int32_t) * S);
  memcpy(W.pt, G.page_indices, sizeof(int32_t) * S * PPS);
  memcpy(W.sinks, G.sinks, sizeof(float) * (size_t)G.args.num_q_heads);
  W.dist[0] = W.dist[1] = W.dist[2] = 0;
  rpa_args a = G.args;
  a.cu_q_lens = W.cu;
  a.kv_lens = W.kv;
  a.page_indices = W.pt;
  a.sinks = W.sinks;
  return a;
}

/* ---- snapshots: every buffer a call could write -------------------------- */

typedef struct region {
  const char *name;
  const unsigned char *p;
  size_t n;
  unsigned char *copy;
} region;

enum { MAX_REGIONS = 16 };
static region regs[MAX_REGIONS];
static int nregs;
/* One more region a case arranged (a shared allocation). */
static const void *extra_p;
static size_t extra_n;

static void snap_add(const char *name, const void *p, size_t n) {
  if (nregs == MAX_REGIONS || !p || n == 0) return;
  region *r = &regs[nregs++];
  r->name = name;
  r->p = p;
  r->n = n;
  r->copy = malloc(n);
  if (r->copy) memcpy(r->copy, p, n);
}

static void snap_buf(const char *name, const tb_buffer *b) {
  snap_add(name, b->mem, b->bytes + 2 * TB_GUARD);
}

static void snap_take(void) {
  nregs = 0;
  snap_buf("cache", &G.cache);
  snap_buf("out", &G.out);
  snap_buf("lse", &G.lse);
  snap_buf("q", &G.q);
  snap_buf("k", &G.k);
  snap_buf("v", &G.v);
  snap_add("metadata", &W, sizeof W);
  snap_add("extra", extra_p, extra_n);
}

/* CHECKs every region is bit-identical to its snapshot; frees them. */
static void snap_check(void) {
  for (int i = 0; i < nregs; i++) {
    region *r = &regs[i];
    CHECK(r->copy != NULL, "snapshot of %s: out of memory", r->name);
    if (r->copy && memcmp(r->copy, r->p, r->n) != 0) {
      size_t at = 0;
      while (at < r->n && r->copy[at] == r->p[at]) at++;
      CHECK(0,
            "%s was written by a failing call (first changed byte %zu of "
            "%zu, guards included)",
            r->name, at, r->n);
    }
    free(r->copy);
    r->copy = NULL;
  }
  nregs = 0;
}

/* ---- message checks ------------------------------------------------------ */

static int ident_char(char c) {
  return isalnum((unsigned char)c) || c == '_';
}

/* word occurs in msg, not as part of a longer identifier ("k" does not match
   inside "cache.k" or "kv_lens"). */
static int has_word(const char *msg, const char *word) {
  const size_t n = strlen(word);
  for (const char *p = msg; (p = strstr(p, word)) != NULL; p++) {
    const int before = p == msg || !(ident_char(p[-1]) || p[-1] == '.');
    const int after = !ident_char(p[n]);
    if (before && after) return 1;
  }
  return 0;
}

/* "sequence N" with exactly this N. */
static int names_sequence(const char *msg, int seq) {
  char want[32];
  snprintf(want, sizeof want, "sequence %d", seq);
  const size_t n = strlen(want);
  for (const char *p = msg; (p = strstr(p, want)) != NULL; p++)
    if (!isdigit((unsigned char)p[n])) return 1;
  return 0;
}

static int cache_untouched(void) {
  return memcmp(G.cache.mem, G.cache_before.mem,
                G.cache.bytes + 2 * TB_GUARD) == 0;
}

/* After a failure, the valid call on the same context succeeds and clears
   the message; then every buffer goes back to its initial state. */
static void good_call_after_failure(void) {
  const rpa_status st = rpa_attention(ctx, &G.args);
  CHECK(st == RPA_OK, "valid call after a failure: %s (%s)",
        rpa_status_string(st), rpa_context_last_error(ctx));
  CHECK(strcmp(rpa_context_last_error(ctx), "") == 0,
        "valid call after a failure left the message \"%s\"",
        rpa_context_last_error(ctx));
  tb_reset(&G);
}

/* The call with args a must fail with status want, name the argument name
   (and also2, a substring, when not NULL) and sequence seq (when >= 0), and
   write nothing. rpa_validate must agree with rpa_attention. */
static void expect_fail(const rpa_args *a, rpa_status want, const char *name,
                        const char *also2, int seq) {
  snap_take();
  const rpa_status vst = rpa_validate(ctx, a);
  char vmsg[512];
  snprintf(vmsg, sizeof vmsg, "%s", rpa_context_last_error(ctx));
  const rpa_status st = rpa_attention(ctx, a);
  const char *msg = rpa_context_last_error(ctx);
  if (getenv("RPA_TEST_VERBOSE"))
    fprintf(stderr, "[%s] %s: %s\n", th_case_name, rpa_status_string(st), msg);
  CHECK(st == want, "status %d (%s), want %d (%s); message \"%s\"", (int)st,
        rpa_status_string(st), (int)want, rpa_status_string(want), msg);
  CHECK(vst == st, "rpa_validate says %s, rpa_attention %s",
        rpa_status_string(vst), rpa_status_string(st));
  CHECK(msg && msg[0] != '\0', "empty error message");
  CHECK(strcmp(vmsg, msg) == 0,
        "rpa_validate's message \"%s\" differs from rpa_attention's \"%s\"",
        vmsg, msg);
  if (msg && name)
    CHECK(has_word(msg, name), "message \"%s\" does not name \"%s\"", msg,
          name);
  if (msg && also2)
    CHECK(strstr(msg, also2) != NULL, "message \"%s\" does not mention \"%s\"",
          msg, also2);
  if (msg && seq >= 0)
    CHECK(names_sequence(msg, seq),
          "message \"%s\" does not say \"sequence %d\"", msg, seq);
  snap_check();
  good_call_after_failure();
}

/* The call with args a must succeed with an empty message (and in KV-share
   mode leave the cache alone). Buffers are reset afterwards. */
static void expect_ok(const rpa_args *a) {
  const rpa_status st = rpa_attention(ctx, a);
  CHECK(st == RPA_OK, "status %s, want success; message \"%s\"",
        rpa_status_string(st), rpa_context_last_error(ctx));
  CHECK(strcmp(rpa_context_last_error(ctx), "") == 0,
        "success left the message \"%s\"", rpa_context_last_error(ctx));
  CHECK(rpa_validate(ctx, a) == RPA_OK, "rpa_validate disagrees");
  if (!a->update_kv_cache)
    CHECK(cache_untouched(), "KV-share mode wrote the cache");
  tb_reset(&G);
}

/* One test case per broken rule: a fresh copy of the valid arguments, one
   thing broken by setup, then the expectation. */
#define FAIL(title, setup, want, arg, also, seq)              \
  do {                                                        \
    rpa_args a = fresh();                                     \
    setup;                                                    \
    TEST_CASE(title, expect_fail(&a, want, arg, also, seq));  \
  } while (0)

#define PASS(title, setup)                  \
  do {                                      \
    rpa_args a = fresh();                   \
    setup;                                  \
    TEST_CASE(title, expect_ok(&a));        \
  } while (0)

/* ---- the valid batch ----------------------------------------------------- */

static int make_batch(void) {
  tb_config c = tb_config_default();
  c.seed = 2024;
  c.num_seqs = S;
  c.q_lens = QL;
  c.kv_lens = KL;
  c.num_q_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.page_size = 4;
  c.extra_pages = 2;
  c.pages_per_seq = PPS;
  c.shuffle_pages = 1;
  c.pad_tokens = 2;
  c.layout = TB_COMBINED;
  c.lse = 1;
  c.sinks = 1;
  return tb_make(&G, &c);
}

static void valid_batch_passes(void) {
  char msg[256];
  CHECK(G.args.pages_per_seq == PPS, "pages_per_seq %d",
        (int)G.args.pages_per_seq);
  CHECK(rpa_validate(ctx, &G.args) == RPA_OK, "validate: %s",
        rpa_context_last_error(ctx));
  const int64_t rows = (int64_t)G.total_tokens * G.args.num_q_heads;
  double *out = malloc(sizeof(double) * (size_t)(rows * G.args.head_dim));
  double *lse = malloc(sizeof(double) * (size_t)rows);
  CHECK(out && lse, "out of memory");
  if (out && lse) {
    tb_oracle(&G, out, lse);
    const rpa_status st = rpa_attention(ctx, &G.args);
    CHECK(st == RPA_OK, "attention: %s", rpa_context_last_error(ctx));
    CHECK(strcmp(rpa_context_last_error(ctx), "") == 0,
          "message after success");
    CHECK(tb_check_cache(&G, msg, sizeof msg) == 0, "%s", msg);
    CHECK(tb_check_output(&G, out, lse, tb_tolerance(&G.cfg), msg,
                          sizeof msg) == 0,
          "%s", msg);
  }
  free(out);
  free(lse);
  tb_reset(&G);
}

/* ---- NULL pointers ------------------------------------------------------- */

static void null_ctx(void) {
  snap_take();
  CHECK(rpa_attention(NULL, &G.args) == RPA_NULL_POINTER,
        "attention(NULL ctx)");
  CHECK(rpa_validate(NULL, &G.args) == RPA_NULL_POINTER, "validate(NULL ctx)");
  CHECK(rpa_attention(NULL, NULL) == RPA_NULL_POINTER, "attention(NULL, NULL)");
  const char *m = rpa_context_last_error(NULL);
  CHECK(m != NULL, "last_error(NULL) is NULL");
  snap_check();
}

static void null_required(void) {
  /* k and v are optional in KV-share mode; with update on they are not. */
  FAIL("q.data = NULL", a.q.data = NULL,
       RPA_NULL_POINTER, "q.data", NULL, -1);
  FAIL("out.data = NULL", a.out.data = NULL,
       RPA_NULL_POINTER, "out.data", NULL, -1);
  FAIL("cache.k = NULL", a.cache.k = NULL,
       RPA_NULL_POINTER, "cache.k", NULL, -1);
  FAIL("k.data = NULL", a.k.data = NULL,
       RPA_NULL_POINTER, "k.data", NULL, -1);
  FAIL("v.data = NULL", a.v.data = NULL,
       RPA_NULL_POINTER, "v.data", NULL, -1);
  FAIL("cu_q_lens = NULL", a.cu_q_lens = NULL,
       RPA_NULL_POINTER, "cu_q_lens", NULL, -1);
  FAIL("kv_lens = NULL", a.kv_lens = NULL,
       RPA_NULL_POINTER, "kv_lens", NULL, -1);
  FAIL("page_indices = NULL", a.page_indices = NULL,
       RPA_NULL_POINTER, "page_indices", NULL, -1);
}

/* KV-share mode: k and v may be NULL; the call succeeds, writes out and
   leaves the cache bit-identical. */
static void share_mode_null_kv_ok(void) {
  rpa_args a = fresh();
  a.update_kv_cache = 0;
  a.k.data = NULL;
  a.v.data = NULL;
  a.k.dtype = (rpa_dtype)77; /* not looked at either */
  const rpa_status st = rpa_attention(ctx, &a);
  CHECK(st == RPA_OK, "%s: %s", rpa_status_string(st),
        rpa_context_last_error(ctx));
  CHECK(strcmp(rpa_context_last_error(ctx), "") == 0, "message after success");
  CHECK(cache_untouched(), "KV-share mode wrote the cache");
  CHECK(memcmp(G.out.mem, G.out_before.mem, G.out.bytes + 2 * TB_GUARD) != 0,
        "KV-share mode did not write out");
  tb_reset(&G);
}

/* ---- shapes -------------------------------------------------------------- */

static void shapes(void) {
  FAIL("num_q_heads = 3", a.num_q_heads = 3,
       RPA_INVALID_SHAPE, "num_q_heads", NULL, -1);
  FAIL("num_q_heads = 0", a.num_q_heads = 0,
       RPA_INVALID_SHAPE, "num_q_heads", NULL, -1);
  FAIL("num_kv_heads = 0", a.num_kv_heads = 0,
       RPA_INVALID_SHAPE, "num_kv_heads", NULL, -1);
  FAIL("num_kv_heads = -2", a.num_kv_heads = -2,
       RPA_INVALID_SHAPE, "num_kv_heads", NULL, -1);
  FAIL("head_dim = 0", a.head_dim = 0,
       RPA_INVALID_SHAPE, "head_dim", NULL, -1);
  FAIL("head_dim = 4097", a.head_dim = 4097,
       RPA_INVALID_SHAPE, "head_dim", NULL, -1);
  FAIL("head_dim_v = -1", a.head_dim_v = -1,
       RPA_INVALID_SHAPE, "head_dim_v", NULL, -1);
  FAIL("head_dim_v = 4097", a.head_dim_v = 4097,
       RPA_INVALID_SHAPE, "head_dim_v", NULL, -1);
  FAIL("num_tokens = -1", a.num_tokens = -1,
       RPA_INVALID_SHAPE, "num_tokens", NULL, -1);
  /* latent cache (v NULL): values are the head of each key row, so they
     cannot be longer than it */
  FAIL("cache.v = NULL; head_dim_v = 65", a.cache.v = NULL; a.head_dim_v = 65,
       RPA_INVALID_SHAPE, "head_dim_v", NULL, -1);
}

/* ---- dtypes -------------------------------------------------------------- */

static void dtypes(void) {
  FAIL("q.dtype = RPA_FP8_E4M3", a.q.dtype = RPA_FP8_E4M3,
       RPA_INVALID_DTYPE, "q.dtype", NULL, -1);
  FAIL("q.dtype = RPA_FP8_E5M2", a.q.dtype = RPA_FP8_E5M2,
       RPA_INVALID_DTYPE, "q.dtype", NULL, -1);
  FAIL("q.dtype = (rpa_dtype)RPA_DTYPE_COUNT",
       a.q.dtype = (rpa_dtype)RPA_DTYPE_COUNT,
       RPA_INVALID_DTYPE, "q.dtype", NULL, -1);
  FAIL("out.dtype = RPA_FP8_E5M2", a.out.dtype = RPA_FP8_E5M2,
       RPA_INVALID_DTYPE, "out.dtype", NULL, -1);
  FAIL("out.dtype = (rpa_dtype)77", a.out.dtype = (rpa_dtype)77,
       RPA_INVALID_DTYPE, "out.dtype", NULL, -1);
  FAIL("cache.dtype = (rpa_dtype)RPA_DTYPE_COUNT",
       a.cache.dtype = (rpa_dtype)RPA_DTYPE_COUNT,
       RPA_INVALID_DTYPE, "cache.dtype", NULL, -1);
  FAIL("k.dtype = RPA_BF16", a.k.dtype = RPA_BF16,
       RPA_INVALID_DTYPE, "k.dtype", NULL, -1);
  FAIL("v.dtype = RPA_F16", a.v.dtype = RPA_F16,
       RPA_INVALID_DTYPE, "v.dtype", NULL, -1);
}

/* ---- lengths ------------------------------------------------------------- */

static void lengths(void) {
  FAIL("cu_q_lens[0] = 1", W.cu[0] = 1,
       RPA_INVALID_LENGTHS, "cu_q_lens", NULL, -1);
  FAIL("cu_q_lens[2] = cu_q_lens[1] (sequence 1: q_len 0)", W.cu[2] = W.cu[1],
       RPA_INVALID_LENGTHS, "cu_q_lens", NULL, 1);
  FAIL("cu_q_lens[3] = cu_q_lens[2] - 2 (decreasing at sequence 2)",
       W.cu[3] = W.cu[2] - 2,
       RPA_INVALID_LENGTHS, "cu_q_lens", NULL, 2);
  FAIL("num_tokens = cu_q_lens[S] - 1 (cu_q_lens[S] > num_tokens)",
       a.num_tokens = W.cu[S] - 1,
       RPA_INVALID_LENGTHS, "cu_q_lens", NULL, 2);
  FAIL("cu_q_lens[S] = num_tokens + 1", W.cu[S] = a.num_tokens + 1,
       RPA_INVALID_LENGTHS, "cu_q_lens", NULL, 2);
  FAIL("kv_lens[1] = QL[1] - 1 (kv_len < q_len)", W.kv[1] = QL[1] - 1,
       RPA_INVALID_LENGTHS, "kv_lens", NULL, 1);
  FAIL("kv_lens[2] = -1", W.kv[2] = -1,
       RPA_INVALID_LENGTHS, "kv_lens", NULL, 2);
  FAIL("num_seqs = -1", a.num_seqs = -1,
       RPA_INVALID_LENGTHS, "num_seqs", NULL, -1);
}

/* ---- pages --------------------------------------------------------------- */

static void pages(void) {
  /* sequence 1 (kv_len 13, page size 4) needs 4 pages */
  FAIL("pages_per_seq = 3", a.pages_per_seq = 3,
       RPA_INVALID_PAGES, "pages_per_seq", NULL, 1);
  FAIL("pages_per_seq = -1", a.pages_per_seq = -1,
       RPA_INVALID_PAGES, "pages_per_seq", NULL, -1);
  FAIL("page_indices[2 * PPS + 1] = cache.num_pages (used, == num_pages)",
       W.pt[2 * PPS + 1] = a.cache.num_pages,
       RPA_INVALID_PAGES, "page_indices", NULL, 2);
  FAIL("page_indices[1 * PPS + 0] = -1 (used, negative)",
       W.pt[1 * PPS + 0] = -1,
       RPA_INVALID_PAGES, "page_indices", NULL, 1);
  FAIL("page_indices[1 * PPS + 3] = INT32_MIN (last used page of seq 1)",
       W.pt[1 * PPS + 3] = INT32_MIN,
       RPA_INVALID_PAGES, "page_indices", NULL, 1);
  FAIL("cache.page_size = 0", a.cache.page_size = 0,
       RPA_INVALID_PAGES, "cache.page_size", NULL, -1);
  FAIL("cache.num_pages = -1", a.cache.num_pages = -1,
       RPA_INVALID_PAGES, "cache.num_pages", NULL, -1);
}

/* Entries past ceil(kv_len / page_size) are never read: garbage is fine. */
static void unused_page_entries_ignored(void) {
  rpa_args a = fresh();
  /* used pages: seq 0: 2, seq 1: 4, seq 2: 3 (of PPS = 5) */
  W.pt[0 * PPS + 2] = INT32_MIN;
  W.pt[0 * PPS + 3] = -1;
  W.pt[0 * PPS + 4] = INT32_MAX;
  W.pt[1 * PPS + 4] = a.cache.num_pages;
  W.pt[2 * PPS + 3] = -123456;
  W.pt[2 * PPS + 4] = 1 << 30;
  expect_ok(&a);
}

/* ---- parameters ---------------------------------------------------------- */

static void parameters(void) {
  FAIL("sliding_window = -1", a.sliding_window = -1,
       RPA_INVALID_PARAMETER, "sliding_window", NULL, -1);
  FAIL("sliding_window = 4; causal = 0", a.sliding_window = 4; a.causal = 0,
       RPA_INVALID_PARAMETER, "sliding_window", NULL, -1);
  FAIL("soft_cap = -1.0f", a.soft_cap = -1.0f,
       RPA_INVALID_PARAMETER, "soft_cap", NULL, -1);
  FAIL("soft_cap = NAN", a.soft_cap = NAN,
       RPA_INVALID_PARAMETER, "soft_cap", NULL, -1);
  FAIL("soft_cap = INFINITY", a.soft_cap = INFINITY,
       RPA_INVALID_PARAMETER, "soft_cap", NULL, -1);
  FAIL("sm_scale = NAN", a.sm_scale = NAN,
       RPA_INVALID_PARAMETER, "sm_scale", NULL, -1);
  FAIL("sm_scale = INFINITY", a.sm_scale = INFINITY,
       RPA_INVALID_PARAMETER, "sm_scale", NULL, -1);
  FAIL("sm_scale = -INFINITY", a.sm_scale = -INFINITY,
       RPA_INVALID_PARAMETER, "sm_scale", NULL, -1);
  FAIL("k_scale = 0.0f", a.k_scale = 0.0f,
       RPA_INVALID_PARAMETER, "k_scale", NULL, -1);
  FAIL("k_scale = -1.0f", a.k_scale = -1.0f,
       RPA_INVALID_PARAMETER, "k_scale", NULL, -1);
  FAIL("k_scale = INFINITY", a.k_scale = INFINITY,
       RPA_INVALID_PARAMETER, "k_scale", NULL, -1);
  FAIL("v_scale = NAN", a.v_scale = NAN,
       RPA_INVALID_PARAMETER, "v_scale", NULL, -1);
  FAIL("v_scale = 0.0f", a.v_scale = 0.0f,
       RPA_INVALID_PARAMETER, "v_scale", NULL, -1);
  FAIL("q_scale = -0.5f", a.q_scale = -0.5f,
       RPA_INVALID_PARAMETER, "q_scale", NULL, -1);
  FAIL("q_scale = NAN", a.q_scale = NAN,
       RPA_INVALID_PARAMETER, "q_scale", NULL, -1);
  FAIL("sinks[2] = NAN", W.sinks[2] = NAN,
       RPA_INVALID_PARAMETER, "sinks", NULL, -1);
  FAIL("sinks[0] = INFINITY", W.sinks[0] = INFINITY,
       RPA_INVALID_PARAMETER, "sinks", NULL, -1);
}

/* A -inf sink means "no sink" for that head: allowed. */
static void minus_inf_sink_ok(void) {
  rpa_args a = fresh();
  W.sinks[1] = -INFINITY;
  W.sinks[3] = -INFINITY;
  expect_ok(&a);
}

/* ---- distribution -------------------------------------------------------- */

static void set_dist(rpa_args *a, int32_t d0, int32_t d1, int32_t d2) {
  W.dist[0] = d0;
  W.dist[1] = d1;
  W.dist[2] = d2;
  a->distribution = W.dist;
}

static void distribution_bad(void) {
  /* the batch: sequence 0 decode, 1 a chunk of 5, 2 a chunk of 3 */
  FAIL("distribution (2, 1, 3) (decreasing)", set_dist(&a, 2, 1, 3),
       RPA_INVALID_DISTRIBUTION, "distribution", NULL, -1);
  FAIL("distribution (1, 3, 2) (decreasing)", set_dist(&a, 1, 3, 2),
       RPA_INVALID_DISTRIBUTION, "distribution", NULL, -1);
  FAIL("distribution (-1, 0, 3)", set_dist(&a, -1, 0, 3),
       RPA_INVALID_DISTRIBUTION, "distribution", NULL, -1);
  FAIL("distribution (1, 2, 4) (mixed_end > num_seqs)", set_dist(&a, 1, 2, 4),
       RPA_INVALID_DISTRIBUTION, "distribution", NULL, -1);
  FAIL("distribution (2, 2, 3) (sequence 1 (q_len 5) as a decode)",
       set_dist(&a, 2, 2, 3),
       RPA_INVALID_DISTRIBUTION, "distribution", NULL, 1);
  FAIL("distribution (3, 3, 3)", set_dist(&a, 3, 3, 3),
       RPA_INVALID_DISTRIBUTION, "distribution", NULL, 1);
  FAIL("distribution (1, 3, 3) (prefill sizes 5 and 3)", set_dist(&a, 1, 3, 3),
       RPA_INVALID_DISTRIBUTION, "distribution", NULL, 2);
  FAIL("distribution (0, 2, 3) (prefill sizes 1 and 5)", set_dist(&a, 0, 2, 3),
       RPA_INVALID_DISTRIBUTION, "distribution", NULL, 1);
}

static void distribution_good(void) {
  PASS("distribution (1, 2, 3)", set_dist(&a, 1, 2, 3));
  PASS("distribution (1, 1, 3)", set_dist(&a, 1, 1, 3));
  PASS("distribution (0, 0, 3)", set_dist(&a, 0, 0, 3));
  PASS("distribution (0, 1, 3) (a prefill range of one decode)",
       set_dist(&a, 0, 1, 3));
}

/* ---- pages the fused write touches ---------------------------------------

   The batch: page size 4; sequence 0 (kv 7) writes logical page 1, sequence
   1 (kv 13) logical pages 2 and 3, sequence 2 (kv 10) logical pages 1, 2. */
static void written_pages(void) {
  FAIL("sequence 2 reads the page sequence 0 writes",
       W.pt[2 * PPS + 0] = W.pt[0 * PPS + 1],
       RPA_OVERLAP, "page_indices", "sequence 0", 2);
  FAIL("sequences 1 and 2 write into one page",
       W.pt[2 * PPS + 2] = W.pt[1 * PPS + 3],
       RPA_OVERLAP, "page_indices", "sequence 2", 1);
  FAIL("sequence 1 reads, at logical page 0, the page it writes at 3",
       W.pt[1 * PPS + 0] = W.pt[1 * PPS + 3],
       RPA_OVERLAP, "page_indices", "logical page 3", 1);
  FAIL("sequence 0 reads the page sequence 1 writes (not its last page)",
       W.pt[0 * PPS + 0] = W.pt[1 * PPS + 2],
       RPA_OVERLAP, "page_indices", "sequence 1", 0);
  PASS("a read-only page shared by two sequences (prefix caching)",
       W.pt[2 * PPS + 0] = W.pt[1 * PPS + 0]);
  PASS("KV-share mode: a page shared by every sequence",
       W.pt[2 * PPS + 0] = W.pt[0 * PPS + 1];
       W.pt[1 * PPS + 0] = W.pt[0 * PPS + 1]; a.update_kv_cache = 0);
}

/* A broken length is reported as such even with a distribution hint whose
   check would fail first on the broken batch. */
static void lengths_before_distribution(void) {
  FAIL("cu_q_lens (0, 6, 6, ..) with distribution (1, 1, 3)",
       set_dist(&a, 1, 1, 3); W.cu[1] = 6,
       RPA_INVALID_LENGTHS, "cu_q_lens", NULL, 1);
}

/* Sequences past mixed_end are not part of the call: their garbage lengths
   and pages do not fail, and their rows of out and lse are not written. */
static void past_mixed_end_ignored(void) {
  rpa_args a = fresh();
  set_dist(&a, 1, 2, 2);
  const int32_t r0 = W.cu[2], r1 = W.cu[3]; /* sequence 2's rows */
  W.cu[3] = 9999;
  W.kv[2] = -5;
  for (int p = 0; p < PPS; p++) W.pt[2 * PPS + p] = -1;
  const rpa_status st = rpa_attention(ctx, &a);
  CHECK(st == RPA_OK, "%s: %s", rpa_status_string(st),
        rpa_context_last_error(ctx));
  CHECK(strcmp(rpa_context_last_error(ctx), "") == 0, "message after success");
  const size_t row = (size_t)a.out.token_stride * sizeof(float);
  const unsigned char *o = tb_data(&G.out), *ob = tb_data(&G.out_before);
  CHECK(memcmp(o + row * (size_t)r0, ob + row * (size_t)r0,
               row * (size_t)(r1 - r0)) == 0,
        "out rows of a sequence past mixed_end were written");
  CHECK(memcmp(o, ob, row * (size_t)r0) != 0,
        "out rows of sequences 0, 1 not written");
  const float *l = (const float *)tb_data(&G.lse);
  int lse_clean = 1;
  const int64_t Hq = a.num_q_heads;
  for (int64_t i = r0 * Hq; i < r1 * Hq; i++) {
    uint32_t bits;
    memcpy(&bits, &l[i], 4);
    if (bits != 0x5C5C5C5Cu) lse_clean = 0;
  }
  CHECK(lse_clean, "lse rows of a sequence past mixed_end were written");
  tb_reset(&G);
}

/* ---- strides ------------------------------------------------------------- */

static void strides(void) {
  FAIL("q.token_stride = -1", a.q.token_stride = -1,
       RPA_INVALID_STRIDE, "q", NULL, -1);
  FAIL("q.head_stride = -64", a.q.head_stride = -64,
       RPA_INVALID_STRIDE, "q", NULL, -1);
  FAIL("out.head_stride = -64", a.out.head_stride = -64,
       RPA_INVALID_STRIDE, "out", NULL, -1);
  FAIL("k.token_stride = -128", a.k.token_stride = -128,
       RPA_INVALID_STRIDE, "k", NULL, -1);
  FAIL("v.head_stride = -1", a.v.head_stride = -1,
       RPA_INVALID_STRIDE, "v", NULL, -1);
  FAIL("cache.k_page_stride = -cache.k_page_stride",
       a.cache.k_page_stride = -a.cache.k_page_stride,
       RPA_INVALID_STRIDE, "cache.k", NULL, -1);
  FAIL("cache.v_slot_stride = -1", a.cache.v_slot_stride = -1,
       RPA_INVALID_STRIDE, "cache.v", NULL, -1);
  FAIL("lse_token_stride = -4", a.lse_token_stride = -4,
       RPA_INVALID_STRIDE, "lse", NULL, -1);
  /* written tensors whose distinct elements share memory */
  FAIL("out.head_stride = 1 (head_dim 64)", a.out.head_stride = 1,
       RPA_INVALID_STRIDE, "out", NULL, -1);
  FAIL("out.token_stride = 0", a.out.token_stride = 0,
       RPA_INVALID_STRIDE, "out", NULL, -1);
  FAIL("out.token_stride = 2 * 64 (Hq = 4 heads need 256)",
       a.out.token_stride = 2 * 64,
       RPA_INVALID_STRIDE, "out", NULL, -1);
  FAIL("lse_head_stride = 0", a.lse_head_stride = 0,
       RPA_INVALID_STRIDE, "lse", NULL, -1);
  FAIL("lse_token_stride = 2 (Hq = 4)", a.lse_token_stride = 2,
       RPA_INVALID_STRIDE, "lse", NULL, -1);
  /* the cache is written when update is on */
  FAIL("cache.k_head_stride = 0 (2 KV heads on one row)",
       a.cache.k_head_stride = 0,
       RPA_INVALID_STRIDE, "cache.k", NULL, -1);
  FAIL("cache.k_slot_stride = 64 (slots overlap heads)",
       a.cache.k_slot_stride = 64,
       RPA_INVALID_STRIDE, "cache.k", NULL, -1);
  FAIL("cache.v_page_stride = cache.v_slot_stride (pages overlap)",
       a.cache.v_page_stride = a.cache.v_slot_stride,
       RPA_INVALID_STRIDE, "cache.v", NULL, -1);
}

/* A cache that is only read may alias itself. */
static void overlapping_cache_read_only_ok(void) {
  rpa_args a = fresh();
  a.update_kv_cache = 0;
  a.cache.k_head_stride = 0;
  a.cache.v_page_stride = a.cache.v_slot_stride;
  expect_ok(&a);
}

/* ---- overlap ------------------------------------------------------------- */

static void overlaps(void) {
  const size_t f = sizeof(float);
  FAIL("out.data = q.data (in place)", a.out.data = a.q.data,
       RPA_OVERLAP, "out", "q", -1);
  FAIL("out.data = q.data + 100 * f (partly)",
       a.out.data = (char *)a.q.data + 100 * f,
       RPA_OVERLAP, "out", "q", -1);
  FAIL("out.data = cache.k + 512 * f", a.out.data = (char *)a.cache.k + 512 * f,
       RPA_OVERLAP, "out", "cache", -1);
  FAIL("lse = out.data + 3", a.lse = (float *)a.out.data + 3,
       RPA_OVERLAP, "lse", "out", -1);
  FAIL("lse = q.data + 7", a.lse = (float *)a.q.data + 7,
       RPA_OVERLAP, "lse", "q", -1);
  FAIL("v.data = out.data + 64 * f", a.v.data = (char *)a.out.data + 64 * f,
       RPA_OVERLAP, "out", "v", -1);
  /* metadata inside written buffers (copied there first, so it is valid) */
  FAIL("page_indices inside out", {
    int32_t *table = (int32_t *)tb_data(&G.out) + 300;
    memcpy(table, W.pt, sizeof(int32_t) * S * PPS);
    a.page_indices = table;
  }, RPA_OVERLAP, "out", "page_indices", -1);
  FAIL("cu_q_lens inside the cache", {
    int32_t *cu = (int32_t *)tb_data(&G.cache) + 1000;
    memcpy(cu, W.cu, sizeof(int32_t) * (S + 1));
    a.cu_q_lens = cu;
  }, RPA_OVERLAP, "cache", "cu_q_lens", -1);
  FAIL("sinks inside lse", {
    float *sk = (float *)tb_data(&G.lse) + 5;
    memcpy(sk, W.sinks, sizeof(float) * (size_t)a.num_q_heads);
    a.sinks = sk;
  }, RPA_OVERLAP, "lse", "sinks", -1);
}

/* The cache and the new keys in one shared allocation: k's first rows lie in
   the cache's last page. */
static void cache_overlaps_k(void) {
  const size_t cache_bytes = G.cache.bytes, k_bytes = G.k.bytes;
  const size_t shift = 4096; /* bytes of k inside the cache */
  unsigned char *arena = malloc(cache_bytes + k_bytes);
  CHECK(arena != NULL, "out of memory");
  if (!arena) return;
  memset(arena, 0, cache_bytes + k_bytes);
  memcpy(arena, tb_data(&G.cache), cache_bytes);
  memcpy(arena + cache_bytes - shift, tb_data(&G.k), k_bytes);
  rpa_args a = fresh();
  const int64_t D = a.head_dim;
  a.cache.k = arena;
  a.cache.v = arena + (size_t)D * sizeof(float); /* combined layout */
  a.k.data = arena + cache_bytes - shift;
  extra_p = arena;
  extra_n = cache_bytes + k_bytes;
  expect_fail(&a, RPA_OVERLAP, "k", "cache", -1);
  /* and the new values inside the cache */
  a = fresh();
  a.cache.k = arena;
  a.cache.v = arena + (size_t)D * sizeof(float);
  a.v.data = arena + cache_bytes / 2;
  expect_fail(&a, RPA_OVERLAP, "v", "cache", -1);
  extra_p = NULL;
  extra_n = 0;
  free(arena);
}

/* K and V of the cache may interleave (the combined layout) but not share
   elements while the update writes both: the new V would overwrite the new
   K. */
static void cache_k_v_alias(void) {
  rpa_args a = fresh();
  a.cache.v = a.cache.k;
  expect_fail(&a, RPA_OVERLAP, "cache.v", "cache.k", -1);
}

/* ---- overflow ------------------------------------------------------------ */

static void overflow(void) {
  FAIL("cache.num_pages = INT32_MAX; cache.k_page_stride = INT64_MAX / 8",
       a.cache.num_pages = INT32_MAX; a.cache.k_page_stride = INT64_MAX / 8,
       RPA_OVERFLOW, "cache.k", NULL, -1);
  FAIL("cache.num_pages = INT32_MAX; cache.v_page_stride = INT64_MAX / 2",
       a.cache.num_pages = INT32_MAX; a.cache.v_page_stride = INT64_MAX / 2,
       RPA_OVERFLOW, "cache.v", NULL, -1);
  /* elements fit in int64, bytes do not */
  FAIL("cache elements fit int64, bytes do not", {
    a.cache.num_pages = INT32_MAX;
    a.cache.k_page_stride = a.cache.v_page_stride = INT64_MAX / INT32_MAX;
  }, RPA_OVERFLOW, "cache", NULL, -1);
  FAIL("q.token_stride = INT64_MAX / 4", a.q.token_stride = INT64_MAX / 4,
       RPA_OVERFLOW, "q", NULL, -1);
  FAIL("out.token_stride = INT64_MAX / 8", a.out.token_stride = INT64_MAX / 8,
       RPA_OVERFLOW, "out", NULL, -1);
  FAIL("lse_token_stride = INT64_MAX / 3", a.lse_token_stride = INT64_MAX / 3,
       RPA_OVERFLOW, "lse", NULL, -1);
}

/* A page table of num_seqs * pages_per_seq int32 entries beyond any address
   space. The distribution limits the call to sequence 0, so the only arrays
   read lie inside ours; the size alone must be refused. */
static void page_table_overflow(void) {
  rpa_args a = fresh();
  a.num_seqs = INT32_MAX;
  a.pages_per_seq = INT32_MAX;
  set_dist(&a, 1, 1, 1);
  expect_fail(&a, RPA_OVERFLOW, "pages_per_seq", NULL, -1);
}

/* Runs fn in a child process, so that a validator that crashes on it (or
   stops under a sanitizer) fails this case instead of ending the program.
   The child has no worker threads, so it uses its own one-thread context. */
static void isolated(void (*fn)(void)) {
  fflush(stdout);
  fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) { /* no fork: run in place */
    fn();
    return;
  }
  if (pid == 0) {
    /* main_ctx (the parent's) stays as it is: its threads are gone here */
    rpa_context_options o = rpa_context_options_default();
    o.num_threads = 1;
    o.pin_threads = 0;
    o.log = 0;
    if (rpa_context_create(&o, &ctx) != RPA_OK) _exit(3);
    fn();
    fflush(stderr);
    _exit(th_case_failures ? 1 : 0);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  if (WIFSIGNALED(status))
    CHECK(0, "the case crashed in its child process (signal %d)",
          WTERMSIG(status));
  else
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the case failed in its child process (exit status %d: failed "
          "checks or a sanitizer report, see above)",
          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* ---- statuses ------------------------------------------------------------ */

static void status_strings(void) {
  const char *s[13];
  for (int i = 0; i <= 12; i++) {
    s[i] = rpa_status_string((rpa_status)i);
    CHECK(s[i] && s[i][0] != '\0', "status %d: empty string", i);
    CHECK(s[i] && strcmp(s[i], "unknown status") != 0, "status %d: unknown", i);
  }
  for (int i = 0; i <= 12; i++)
    for (int j = i + 1; j <= 12; j++)
      CHECK(!s[i] || !s[j] || strcmp(s[i], s[j]) != 0,
            "statuses %d and %d share \"%s\"", i, j, s[i]);
  CHECK(strcmp(rpa_status_string((rpa_status)999), "unknown status") == 0,
        "999: \"%s\"", rpa_status_string((rpa_status)999));
  CHECK(strcmp(rpa_status_string((rpa_status)13), "unknown status") == 0,
        "13: \"%s\"", rpa_status_string((rpa_status)13));
}

int main(void) {
  if (rpa_context_create(NULL, &main_ctx) != RPA_OK) {
    fprintf(stderr, "test_validation: cannot create a context\n");
    return 1;
  }
  ctx = main_ctx;
  if (make_batch() != 0) {
    fprintf(stderr, "test_validation: tb_make failed\n");
    tb_free(&G);
    rpa_context_destroy(main_ctx);
    return 1;
  }
  TEST_CASE("status strings", status_strings());
  TEST_CASE("valid batch passes", valid_batch_passes());
  TEST_CASE("NULL ctx", null_ctx());
  TEST_CASE("NULL args", expect_fail(NULL, RPA_NULL_POINTER, "args", NULL, -1));
  null_required();
  TEST_CASE("KV-share: NULL k and v allowed", share_mode_null_kv_ok());
  shapes();
  dtypes();
  lengths();
  pages();
  TEST_CASE("unused page-table entries ignored", unused_page_entries_ignored());
  parameters();
  TEST_CASE("-inf sink allowed", minus_inf_sink_ok());
  distribution_bad();
  distribution_good();
  lengths_before_distribution();
  written_pages();
  TEST_CASE("sequences past mixed_end ignored", past_mixed_end_ignored());
  strides();
  TEST_CASE("read-only cache may alias itself",
            overlapping_cache_read_only_ok());
  overlaps();
  TEST_CASE("cache overlaps new k / v (shared allocation)", cache_overlaps_k());
  TEST_CASE("cache K and V share elements under update", cache_k_v_alias());
  PASS("cache K and V share elements, KV-share mode (read only)",
       a.cache.v = a.cache.k; a.update_kv_cache = 0);
  overflow();
  /* last: a validator that misses this computes sizes with signed overflow */
  TEST_CASE("page table size overflow", isolated(page_table_overflow));
  tb_free(&G);
  rpa_context_destroy(main_ctx);
  return th_finish("test_validation");
}
