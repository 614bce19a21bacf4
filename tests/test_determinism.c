/* Determinism: a sequence's output is bitwise the same whatever else is in
   the batch (alone, or beside other decodes and prefills, in any order) and
   whatever the thread count. Checked for the active kernel set (RPA_ISA). */
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "harness.h"

static rpa_context *make_ctx(int threads) {
  rpa_context_options o = rpa_context_options_default();
  o.num_threads = threads;
  rpa_context *ctx = NULL;
  if (rpa_context_create(&o, &ctx) != RPA_OK) return NULL;
  return ctx;
}

/* The batch: long and short decodes (split and not split), prefill chunks
   with and without a cached prefix, a short mixed chunk; 2 KV heads of
   group G (20: decode through the prefill step on some sets). Quick mode
   (valgrind, qemu) keeps every kind of sequence at shorter lengths: the
   2100-key decode still splits RPA_MAX_SPLITS ways, the 1100-key one two. */
static tb_config batch_config(rpa_dtype q, rpa_dtype kv, int32_t G,
                              int32_t *q_lens, int32_t *kv_lens) {
  static const int32_t ql[] = {1, 300, 1, 3, 1, 64, 1};
  static const int32_t kl[] = {5000, 300, 17, 900, 2100, 1000, 600};
  static const int32_t ql_quick[] = {1, 96, 1, 3, 1, 32, 1};
  static const int32_t kl_quick[] = {2100, 96, 17, 300, 1100, 400, 600};
  memcpy(q_lens, th_quick() ? ql_quick : ql, sizeof ql);
  memcpy(kv_lens, th_quick() ? kl_quick : kl, sizeof kl);
  tb_config c = tb_config_default();
  c.seed = 77;
  c.num_seqs = 7;
  c.q_lens = q_lens;
  c.kv_lens = kv_lens;
  c.num_q_heads = 2 * G;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  c.page_size = 16;
  c.shuffle_pages = 1;
  c.q_dtype = c.out_dtype = q;
  c.kv_dtype = kv;
  c.lse = 1;
  c.sinks = 1;
  return c;
}

static size_t out_row_bytes(const tb_batch *b) {
  return (size_t)b->args.out.token_stride * rpa_dtype_size(b->cfg.out_dtype);
}

/* Same batch, 1, 2 and 3 threads: identical bytes. */
static void thread_count_invariance(rpa_dtype q, rpa_dtype kv, int32_t G) {
  int32_t ql[7], kl[7];
  tb_config c = batch_config(q, kv, G, ql, kl);
  tb_batch b;
  CHECK(tb_make(&b, &c) == 0, "tb_make");
  unsigned char *first = NULL;
  const size_t bytes = out_row_bytes(&b) * (size_t)b.total_tokens;
  for (int threads = 1; threads <= 3; threads++) {
    rpa_context *ctx = make_ctx(threads);
    CHECK(ctx != NULL, "context");
    if (!ctx) break;
    tb_reset(&b);
    CHECK(rpa_attention(ctx, &b.args) == RPA_OK, "%s", rpa_context_last_error(ctx));
    if (!first) {
      first = malloc(bytes);
      memcpy(first, tb_data(&b.out), bytes);
    } else {
      CHECK(memcmp(first, tb_data(&b.out), bytes) == 0,
            "output with %d threads differs from 1 thread", threads);
    }
    rpa_context_destroy(ctx);
  }
  free(first);
  tb_free(&b);
}

/* Each sequence run alone (a batch of one, same buffers) gives the bytes it
   got inside the full batch; so does the batch with its hint given. */
static void batch_invariance(rpa_dtype q, rpa_dtype kv, int32_t G) {
  int32_t ql[7], kl[7];
  tb_config c = batch_config(q, kv, G, ql, kl);
  tb_batch b;
  CHECK(tb_make(&b, &c) == 0, "tb_make");
  rpa_context *ctx = make_ctx(2);
  CHECK(ctx && rpa_attention(ctx, &b.args) == RPA_OK, "full batch");
  const size_t row = out_row_bytes(&b);
  const size_t es_q = rpa_dtype_size(c.q_dtype), es_kv = rpa_dtype_size(c.kv_dtype);
  unsigned char *full = malloc(row * (size_t)b.total_tokens);
  memcpy(full, tb_data(&b.out), row * (size_t)b.total_tokens);
  for (int32_t i = 0; i < c.num_seqs; i++) {
    const int32_t q0 = b.cu_q_lens[i];
    int32_t cu[2] = {0, ql[i]}, kv_len[1] = {kl[i]};
    rpa_args one = b.args;
    one.num_tokens = ql[i];
    one.num_seqs = 1;
    one.cu_q_lens = cu;
    one.kv_lens = kv_len;
    one.page_indices = b.page_indices + (int64_t)i * b.args.pages_per_seq;
    one.distribution = NULL;
    one.q.data = (char *)b.args.q.data + (size_t)q0 * b.args.q.token_stride * es_q;
    one.k.data = (char *)b.args.k.data + (size_t)q0 * b.args.k.token_stride * es_kv;
    one.v.data = (char *)b.args.v.data + (size_t)q0 * b.args.v.token_stride * es_kv;
    one.out.data = (char *)b.args.out.data + (size_t)q0 * row;
    one.lse = b.args.lse + (int64_t)q0 * b.args.lse_token_stride;
    memset(one.out.data, 0, row * (size_t)ql[i]);
    CHECK(rpa_attention(ctx, &one) == RPA_OK, "%s", rpa_context_last_error(ctx));
    CHECK(memcmp(full + (size_t)q0 * row, one.out.data, row * (size_t)ql[i]) == 0,
          "sequence %d alone differs from inside the batch", (int)i);
  }
  free(full);
  rpa_context_destroy(ctx);
  tb_free(&b);
}

/* The decode prefetch choice (RPA_DECODE_PREFETCH: whole rows on every
   layout, or the first line of each and none where the hardware streams the
   slot) moves no value: identical bytes. 8 KV heads of 128, so a bf16 slot
   is one 4 KiB run, the case the two choices treat differently. */
static void prefetch_invariance(rpa_dtype q, rpa_dtype kv) {
  int32_t ql[7], kl[7];
  tb_config c = batch_config(q, kv, 4, ql, kl);
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  tb_batch b;
  CHECK(tb_make(&b, &c) == 0, "tb_make");
  const size_t bytes = out_row_bytes(&b) * (size_t)b.total_tokens;
  unsigned char *first = malloc(bytes);
  th_env saved = th_env_save("RPA_DECODE_PREFETCH");
  for (int pf = 0; pf <= 1; pf++) {
    setenv("RPA_DECODE_PREFETCH", pf ? "1" : "0", 1);
    rpa_context *ctx = make_ctx(2);
    CHECK(ctx != NULL, "context with RPA_DECODE_PREFETCH=%d", pf);
    if (!ctx) break;
    tb_reset(&b);
    CHECK(rpa_attention(ctx, &b.args) == RPA_OK, "%s", rpa_context_last_error(ctx));
    if (pf == 0)
      memcpy(first, tb_data(&b.out), bytes);
    else
      CHECK(memcmp(first, tb_data(&b.out), bytes) == 0,
            "RPA_DECODE_PREFETCH=1 output differs from =0");
    rpa_context_destroy(ctx);
  }
  th_env_restore(&saved);
  free(first);
  tb_free(&b);
}

int main(void) {
  static const rpa_dtype pairs[][2] = {
      {RPA_F32, RPA_F32}, {RPA_BF16, RPA_BF16}, {RPA_F16, RPA_FP8_E4M3}};
  static const int32_t groups[] = {4, 20};
  for (int gi = 0; gi < 2; gi++)
    for (int i = 0; i < 3; i++) {
      const int32_t G = groups[gi];
      /* quick mode: group 20 on the bf16 pair alone */
      if (th_quick() && G == 20 && pairs[i][1] != RPA_BF16) continue;
      char name[128];
      snprintf(name, sizeof name,
               "thread count does not change a bit (q %s, kv %s, group %d)",
               rpa_dtype_name(pairs[i][0]), rpa_dtype_name(pairs[i][1]), (int)G);
      TEST_CASE(name, thread_count_invariance(pairs[i][0], pairs[i][1], G));
      snprintf(name, sizeof name,
               "the rest of the batch does not change a bit (q %s, kv %s, group %d)",
               rpa_dtype_name(pairs[i][0]), rpa_dtype_name(pairs[i][1]), (int)G);
      TEST_CASE(name, batch_invariance(pairs[i][0], pairs[i][1], G));
    }
  for (int i = 1; i < 3; i++) {
    if (th_quick() && i == 2) continue; /* quick mode: the bf16 pair */
    char name[128];
    snprintf(name, sizeof name,
             "the decode prefetch choice does not change a bit (q %s, kv %s)",
             rpa_dtype_name(pairs[i][0]), rpa_dtype_name(pairs[i][1]));
    TEST_CASE(name, prefetch_invariance(pairs[i][0], pairs[i][1]));
  }
  return th_finish("test_determinism");
}
