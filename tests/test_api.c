/* The context, kernel-set selection, and upstream's v3 convenience call. */
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "harness.h"

/* Context options: thread count kept, forced kernel set honoured, an unknown
   one refused with RPA_UNSUPPORTED, the environment variable obeyed. */
static void context_options(void) {
  rpa_context *ctx = NULL;
  rpa_context_options o = rpa_context_options_default();
  o.num_threads = 3;
  o.isa = "ref";
  o.log = 0;
  CHECK(rpa_context_create(&o, &ctx) == RPA_OK, "create");
  CHECK(ctx && rpa_context_num_threads(ctx) == 3, "threads");
  CHECK(ctx && strcmp(rpa_context_isa(ctx), "ref") == 0, "isa");
  CHECK(ctx && strcmp(rpa_context_last_error(ctx), "") == 0, "fresh error");
  rpa_context_destroy(ctx);
  ctx = (rpa_context *)1;
  o.isa = "no-such-isa";
  CHECK(rpa_context_create(&o, &ctx) == RPA_UNSUPPORTED, "unknown isa");
  CHECK(ctx == NULL, "ctx_out cleared on failure");
  o.isa = NULL;
  o.num_threads = -1;
  CHECK(rpa_context_create(&o, &ctx) == RPA_INVALID_PARAMETER, "threads < 0");
  /* the environment overrides take 0 or 1 only */
  static const char *const overrides[] = {"RPA_BF16_DOT", "RPA_DECODE_PREFETCH"};
  for (int i = 0; i < 2; i++) {
    th_env saved = th_env_save(overrides[i]);
    static const char *const bad[] = {"yes", "2", " 1"};
    for (int b = 0; b < 3; b++) {
      setenv(overrides[i], bad[b], 1);
      ctx = (rpa_context *)1;
      CHECK(rpa_context_create(NULL, &ctx) == RPA_INVALID_PARAMETER, "%s=%s",
            overrides[i], bad[b]);
      CHECK(ctx == NULL, "ctx_out cleared on failure");
    }
    for (int v = 0; v <= 1; v++) {
      setenv(overrides[i], v ? "1" : "0", 1);
      CHECK(rpa_context_create(NULL, &ctx) == RPA_OK, "%s=%d", overrides[i], v);
      rpa_context_destroy(ctx);
    }
    th_env_restore(&saved);
  }
  CHECK(rpa_context_create(NULL, NULL) == RPA_NULL_POINTER, "NULL ctx_out");
  CHECK(rpa_context_create(NULL, &ctx) == RPA_OK, "defaults");
  CHECK(rpa_context_num_threads(ctx) >= 1, "default threads");
  rpa_context_destroy(ctx);
  rpa_context_destroy(NULL);
  CHECK(rpa_isa_available("ref") == 1, "ref available");
  CHECK(rpa_isa_available("no-such-isa") == 0, "bogus unavailable");
  CHECK(rpa_isa_available(NULL) == 0, "NULL unavailable");
  /* RPA_ISA is read when options leave isa unset */
  const char *saved = getenv("RPA_ISA");
  char keep[64] = "";
  if (saved) snprintf(keep, sizeof keep, "%s", saved);
  setenv("RPA_ISA", "no-such-isa", 1);
  CHECK(rpa_context_create(NULL, &ctx) == RPA_UNSUPPORTED, "RPA_ISA bogus");
  setenv("RPA_ISA", "ref", 1);
  CHECK(rpa_context_create(NULL, &ctx) == RPA_OK, "RPA_ISA=ref");
  CHECK(strcmp(rpa_context_isa(ctx), "ref") == 0, "RPA_ISA=ref honoured");
  rpa_context_destroy(ctx);
  if (saved)
    setenv("RPA_ISA", keep, 1);
  else
    unsetenv("RPA_ISA");
}

/* An empty batch (num_seqs 0) succeeds and writes nothing. */
static void empty_batch(void) {
  rpa_context *ctx;
  CHECK(rpa_context_create(NULL, &ctx) == RPA_OK, "create");
  float q[8] = {0}, out[8], cache[8] = {0};
  memset(out, 0x7f, sizeof out);
  rpa_args a = rpa_args_default();
  a.num_tokens = 1;
  a.num_q_heads = a.num_kv_heads = 1;
  a.head_dim = 8;
  a.q = (rpa_tensor){q, RPA_F32, 8, 8};
  a.out = (rpa_tensor){out, RPA_F32, 8, 8};
  a.k = a.v = (rpa_tensor){q, RPA_F32, 8, 8};
  a.update_kv_cache = 0;
  a.cache = (rpa_kv_cache){cache, NULL, RPA_F32, 1, 1, 8, 8, 8, 0, 0, 0};
  CHECK(rpa_attention(ctx, &a) == RPA_OK, "%s", rpa_context_last_error(ctx));
  unsigned char expect[sizeof out];
  memset(expect, 0x7f, sizeof expect);
  CHECK(memcmp(out, expect, sizeof out) == 0, "out written for an empty batch");
  rpa_context_destroy(ctx);
}

/* rpa_ragged_paged_attention_v3 on upstream's combined layout gives bitwise
   what the strided call gives, and updates the cache the same way. */
static void v3_matches_strided(rpa_dtype qd, rpa_dtype kd) {
  rpa_context *ctx;
  CHECK(rpa_context_create(NULL, &ctx) == RPA_OK, "create");
  int32_t q_lens[] = {1, 1, 12, 5}, kv_lens[] = {30, 17, 12, 40};
  tb_config c = tb_config_default();
  c.seed = 5;
  c.num_seqs = 4;
  c.q_lens = q_lens;
  c.kv_lens = kv_lens;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  c.page_size = 16;
  c.shuffle_pages = 1;
  c.q_dtype = c.out_dtype = qd;
  c.kv_dtype = kd;
  c.sliding_window = 9;
  c.soft_cap = 30.0f;
  c.sinks = 1;
  c.distribution = 1;
  tb_batch b;
  CHECK(tb_make(&b, &c) == 0, "tb_make");
  const rpa_args *a = &b.args;
  CHECK(rpa_attention(ctx, a) == RPA_OK, "%s", rpa_context_last_error(ctx));
  const size_t out_bytes = b.out.bytes;
  unsigned char *want_out = malloc(out_bytes), *want_cache = malloc(b.cache.bytes);
  memcpy(want_out, tb_data(&b.out), out_bytes);
  memcpy(want_cache, tb_data(&b.cache), b.cache.bytes);
  tb_reset(&b);
  rpa_v3_options o = rpa_v3_options_default();
  o.sm_scale = a->sm_scale;
  o.sliding_window = a->sliding_window;
  o.soft_cap = a->soft_cap;
  o.attention_sink = a->sinks;
  rpa_status st = rpa_ragged_paged_attention_v3(
      ctx, a->q.data, a->k.data, a->v.data, a->cache.k, a->kv_lens,
      a->page_indices, a->cu_q_lens, a->distribution, a->num_tokens,
      a->num_q_heads, a->num_kv_heads, a->head_dim, a->cache.num_pages,
      a->cache.page_size, a->num_seqs, a->pages_per_seq, qd, kd, &o,
      tb_data(&b.out));
  CHECK(st == RPA_OK, "v3: %s", rpa_context_last_error(ctx));
  CHECK(memcmp(want_out, tb_data(&b.out), out_bytes) == 0, "v3 output differs");
  CHECK(memcmp(want_cache, tb_data(&b.cache), b.cache.bytes) == 0,
        "v3 cache differs");
  /* and its errors are the strided call's errors */
  st = rpa_ragged_paged_attention_v3(
      ctx, a->q.data, a->k.data, a->v.data, NULL, a->kv_lens, a->page_indices,
      a->cu_q_lens, a->distribution, a->num_tokens, a->num_q_heads,
      a->num_kv_heads, a->head_dim, a->cache.num_pages, a->cache.page_size,
      a->num_seqs, a->pages_per_seq, qd, kd, &o, tb_data(&b.out));
  CHECK(st == RPA_NULL_POINTER, "v3 NULL cache");
  CHECK(strstr(rpa_context_last_error(ctx), "kv_cache") != NULL, "message");
  /* a page stride that does not fit int64 (2^30 slots of 2 * 2^16 * 2^16
     elements) is refused before anything is read, nothing written */
  memcpy(want_out, tb_data(&b.out), out_bytes);
  memcpy(want_cache, tb_data(&b.cache), b.cache.bytes);
  st = rpa_ragged_paged_attention_v3(
      ctx, a->q.data, a->k.data, a->v.data, a->cache.k, a->kv_lens,
      a->page_indices, a->cu_q_lens, a->distribution, a->num_tokens, 1 << 16,
      1 << 16, 1 << 16, a->cache.num_pages, 1 << 30, a->num_seqs,
      a->pages_per_seq, qd, kd, &o, tb_data(&b.out));
  CHECK(st == RPA_OVERFLOW, "v3 page stride overflow: status %d", (int)st);
  CHECK(strstr(rpa_context_last_error(ctx), "page stride") != NULL,
        "message: %s", rpa_context_last_error(ctx));
  CHECK(memcmp(want_out, tb_data(&b.out), out_bytes) == 0 &&
            memcmp(want_cache, tb_data(&b.cache), b.cache.bytes) == 0,
        "v3 overflow wrote");
  free(want_out);
  free(want_cache);
  tb_free(&b);
  rpa_context_destroy(ctx);
}

/* The library's scratch does not grow with KV length: the same batch shape
   at 600 and at 9000 cached tokens per sequence needs the same scratch. */
static size_t scratch_for(int32_t kv, int32_t chunk) {
  int32_t q_lens[3] = {1, 1, chunk}, kv_lens[3] = {kv, kv / 2, kv};
  tb_config c = tb_config_default();
  c.seed = 3;
  c.num_seqs = 3;
  c.q_lens = q_lens;
  c.kv_lens = kv_lens;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.page_size = 16;
  tb_batch b;
  size_t bytes = 0;
  rpa_context *ctx;
  if (tb_make(&b, &c) == 0 && rpa_context_create(NULL, &ctx) == RPA_OK) {
    if (rpa_attention(ctx, &b.args) == RPA_OK) bytes = rpa_context_scratch_bytes(ctx);
    rpa_context_destroy(ctx);
  }
  tb_free(&b);
  return bytes;
}

static void scratch_independent_of_kv_length(void) {
  const size_t a = scratch_for(600, 40), b = scratch_for(9000, 40);
  CHECK(a > 0 || strcmp(getenv("RPA_ISA") ? getenv("RPA_ISA") : "", "ref") == 0,
        "no scratch reported");
  CHECK(a == b, "scratch %zu bytes at KV 600, %zu at KV 9000", a, b);
  CHECK(rpa_context_scratch_bytes(NULL) == 0, "NULL context");
}

/* rpa_version() and rpa_version_number() agree with the header's
   RPA_VERSION_*; rpa_abi_struct_size() gives sizeof of each public
   structure by its name and 0 for anything else. */
static void version_and_abi_sizes(void) {
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", RPA_VERSION_MAJOR, RPA_VERSION_MINOR,
           RPA_VERSION_PATCH);
  const char *v = rpa_version();
  CHECK(v && strcmp(v, want) == 0, "rpa_version() \"%s\", header %s",
        v ? v : "(null)", want);
  CHECK(rpa_version_number() == RPA_VERSION_NUMBER,
        "rpa_version_number() %d, header %d", rpa_version_number(),
        RPA_VERSION_NUMBER);
  CHECK(RPA_VERSION_NUMBER == RPA_VERSION_MAJOR * 10000 +
                                  RPA_VERSION_MINOR * 100 + RPA_VERSION_PATCH,
        "RPA_VERSION_NUMBER");
  static const struct {
    const char *name;
    size_t size;
  } want_sizes[] = {
      {"rpa_args", sizeof(rpa_args)},
      {"rpa_tensor", sizeof(rpa_tensor)},
      {"rpa_kv_cache", sizeof(rpa_kv_cache)},
      {"rpa_context_options", sizeof(rpa_context_options)},
      {"rpa_v3_options", sizeof(rpa_v3_options)},
  };
  for (size_t i = 0; i < sizeof want_sizes / sizeof want_sizes[0]; i++) {
    const size_t got = rpa_abi_struct_size(want_sizes[i].name);
    CHECK(got == want_sizes[i].size, "%s: %zu bytes, sizeof %zu",
          want_sizes[i].name, got, want_sizes[i].size);
  }
  const char *unknown[] = {"", "rpa_context", "RPA_ARGS", "rpa_args ", "rpa_"};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
    CHECK(rpa_abi_struct_size(unknown[i]) == 0, "\"%s\" is not a struct",
          unknown[i]);
  CHECK(rpa_abi_struct_size(NULL) == 0, "NULL name");
}

int main(void) {
  TEST_CASE("scratch does not grow with KV length", scratch_independent_of_kv_length());
  TEST_CASE("version and ABI struct sizes", version_and_abi_sizes());
  TEST_CASE("context options and kernel-set selection", context_options());
  TEST_CASE("empty batch writes nothing", empty_batch());
  TEST_CASE("v3 convenience == strided call (f32, f32)", v3_matches_strided(RPA_F32, RPA_F32));
  TEST_CASE("v3 convenience == strided call (bf16, fp8)",
            v3_matches_strided(RPA_BF16, RPA_FP8_E4M3));
  return th_finish("test_api");
}
