/* Shared prefixes (cascade attention: rpa_args.num_shared, shared_len,
   shared_group) on the active kernel set (RPA_ISA):

   - random groups of decode sequences over one prefix each (the members'
     page tables point at the same physical pages), beside sequences of no
     group and prefill chunks in a group, against the dense oracle, and
     against the same call without the groups;
   - bitwise the same on a second run and with 1 thread;
   - bad groups fail with the rule named and nothing written. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "harness.h"
#include "expect_error.h"

static rpa_context *ctx;

enum { MAXS = 48 };

typedef struct groups {
  int32_t num;
  int32_t len[4];
  int32_t of[MAXS];
} groups;

/* Points every member's first pages at its group's first member's pages,
   so that they hold the same prefix. */
static void share_pages(tb_batch *b, const groups *gr) {
  const int32_t pps = b->args.pages_per_seq, ps = b->cfg.page_size;
  for (int32_t g = 0; g < gr->num; g++) {
    int32_t first = -1;
    for (int32_t i = 0; i < b->cfg.num_seqs; i++) {
      if (gr->of[i] != g) continue;
      if (first < 0) {
        first = i;
        continue;
      }
      for (int32_t p = 0; p < (gr->len[g] + ps - 1) / ps; p++)
        b->page_indices[i * pps + p] = b->page_indices[first * pps + p];
    }
  }
}

static void attach(rpa_args *a, const groups *gr) {
  a->num_shared = gr->num;
  a->shared_len = gr->len;
  a->shared_group = gr->of;
}

/* A random batch with groups; returns 0 when made. */
static int random_batch(uint64_t seed, tb_batch *b, groups *gr, int32_t *ql,
                        int32_t *kl) {
  uint64_t rng = seed * 7717 + 1;
  tb_config c = tb_config_default();
  static const rpa_dtype kv[] = {RPA_F32, RPA_BF16, RPA_F16, RPA_FP8_E4M3};
  static const rpa_dtype io[] = {RPA_F32, RPA_BF16};
  static const int32_t pss[] = {16, 1, 8, 32};
  c.seed = seed;
  c.num_kv_heads = tb_range(&rng, 1, 2);
  c.num_q_heads = c.num_kv_heads * (int32_t[]){1, 4, 8, 20}[tb_rand(&rng) % 4];
  c.head_dim = (int32_t[]){64, 128, 40}[tb_rand(&rng) % 3];
  c.page_size = pss[tb_rand(&rng) % 4];
  c.kv_dtype = kv[tb_rand(&rng) % 4];
  c.q_dtype = c.out_dtype = io[tb_rand(&rng) % 2];
  c.shuffle_pages = 1;
  c.update = tb_rand(&rng) % 4 != 0;
  c.lse = 1;
  c.sinks = tb_rand(&rng) % 4 == 0;
  if (tb_rand(&rng) % 4 == 0) c.soft_cap = 20.0f;
  if (tb_rand(&rng) % 4 == 0) c.sliding_window = tb_range(&rng, 20, 400);
  const int32_t ps = c.page_size;
  gr->num = tb_range(&rng, 1, 3);
  for (int32_t g = 0; g < gr->num; g++) {
    gr->len[g] = tb_range(&rng, 0, 600);
    if (tb_rand(&rng) % 2) gr->len[g] = gr->len[g] / ps * ps;
  }
  const int32_t S = tb_range(&rng, 3, MAXS);
  c.num_seqs = S;
  for (int32_t i = 0; i < S; i++) {
    const int32_t g = tb_rand(&rng) % 5 == 0 ? -1 : (int32_t)(tb_rand(&rng) % (uint64_t)gr->num);
    const int prefill = tb_rand(&rng) % 8 == 0;
    ql[i] = prefill ? tb_range(&rng, 2, 20) : 1;
    int32_t cached = tb_range(&rng, 0, 300);
    if (g >= 0) {
      /* cached past the prefix's last page, so no write lands in it */
      const int32_t edge = (gr->len[g] + ps - 1) / ps * ps;
      cached += edge;
    }
    kl[i] = cached + ql[i];
    gr->of[i] = g;
  }
  c.q_lens = ql;
  c.kv_lens = kl;
  if (tb_make(b, &c) != 0) return -1;
  share_pages(b, gr);
  tb_reset(b);
  return 0;
}

static void random_groups(int n) {
  for (int k = 0; k < n; k++) {
    th_begin("random shared prefixes against the oracle and the plain call");
    tb_batch b;
    groups gr;
    int32_t ql[MAXS], kl[MAXS];
    char msg[512];
    if (random_batch(500 + (uint64_t)k, &b, &gr, ql, kl) != 0) {
      CHECK(0, "tb_make failed");
    } else {
      const int64_t rows = (int64_t)b.total_tokens * b.cfg.num_q_heads;
      const int32_t D = b.cfg.head_dim;
      double *out = malloc(sizeof(double) * (size_t)(rows * D + 1));
      double *lse = malloc(sizeof(double) * (size_t)(rows + 1));
      tb_oracle(&b, out, lse);
      rpa_args a = b.args;
      attach(&a, &gr);
      rpa_status st = rpa_attention(ctx, &a);
      CHECK(st == RPA_OK, "case %d: %s: %s", k, rpa_status_string(st),
            rpa_context_last_error(ctx));
      if (st == RPA_OK) {
        CHECK(tb_check_output(&b, out, lse, tb_tolerance(&b.cfg), msg,
                              sizeof msg) == 0,
              "case %d: %s", k, msg);
        CHECK(tb_check_cache(&b, msg, sizeof msg) == 0, "case %d: %s", k, msg);
      }
      free(out);
      free(lse);
    }
    tb_free(&b);
    th_end();
  }
}

/* 24 decodes over one 512-token prefix: bitwise the same twice and with one
   thread; equal to the call without the group within float32 rounding. */
static void determinism(void) {
  th_begin("shared prefix: bitwise repeatable, thread-invariant, = the plain call");
  int32_t ql[24], kl[24];
  for (int i = 0; i < 24; i++) ql[i] = 1, kl[i] = 512 + 16 + 37 * i;
  tb_config c = tb_config_default();
  c.seed = 3;
  c.num_seqs = 24;
  c.q_lens = ql;
  c.kv_lens = kl;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  c.page_size = 16;
  c.shuffle_pages = 1;
  c.q_dtype = c.out_dtype = RPA_F32;
  c.kv_dtype = RPA_BF16;
  c.update = 0;
  tb_batch b;
  groups gr = {1, {512}, {0}};
  if (tb_make(&b, &c) == 0) {
    share_pages(&b, &gr);
    const size_t ob = b.out.bytes;
    unsigned char *plain = malloc(ob), *first = malloc(ob);
    CHECK(rpa_attention(ctx, &b.args) == RPA_OK, "plain");
    memcpy(plain, tb_data(&b.out), ob);
    rpa_args a = b.args;
    attach(&a, &gr);
    CHECK(rpa_attention(ctx, &a) == RPA_OK, "%s", rpa_context_last_error(ctx));
    memcpy(first, tb_data(&b.out), ob);
    CHECK(rpa_attention(ctx, &a) == RPA_OK, "again");
    CHECK(memcmp(first, tb_data(&b.out), ob) == 0, "second run differs");
    rpa_context_options o = rpa_context_options_default();
    o.num_threads = 1;
    rpa_context *one = NULL;
    if (rpa_context_create(&o, &one) == RPA_OK) {
      CHECK(rpa_attention(one, &a) == RPA_OK, "1 thread");
      CHECK(memcmp(first, tb_data(&b.out), ob) == 0, "1 thread differs");
      rpa_context_destroy(one);
    }
    const float *x = (const float *)plain, *y = (const float *)first;
    double worst = 0;
    for (size_t i = 0; i < ob / 4; i++) {
      const double d = fabs((double)x[i] - y[i]);
      if (d > worst || d != d) worst = d;
    }
    CHECK(worst <= 2e-6, "grouped vs plain: max difference %g", worst);
    free(plain);
    free(first);
  } else {
    CHECK(0, "tb_make failed");
  }
  tb_free(&b);
  th_end();
}


static void errors(void) {
  int32_t ql[3] = {1, 1, 1}, kl[3] = {40, 50, 33};
  tb_config c = tb_config_default();
  c.seed = 8;
  c.num_seqs = 3;
  c.q_lens = ql;
  c.kv_lens = kl;
  c.num_q_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.page_size = 8;
  tb_batch b;
  if (tb_make(&b, &c) != 0) {
    th_begin("error batch");
    CHECK(0, "tb_make failed");
    th_end();
    tb_free(&b);
    return;
  }
  groups gr = {1, {16}, {0, 0, -1}};
  share_pages(&b, &gr);
  tb_reset(&b);
  rpa_args a = b.args;
  attach(&a, &gr);
  th_begin("a valid group is accepted");
  CHECK(rpa_attention(ctx, &a) == RPA_OK, "%s", rpa_context_last_error(ctx));
  th_end();

  rpa_args x = a;
  int32_t too_long[1] = {40};
  x.shared_len = too_long;
  expect_error(ctx, "prefix longer than a member's cached tokens", &b, &x,
               RPA_INVALID_LENGTHS,
               "group 0's prefix of 40 tokens is longer than sequence 0's 39 "
               "cached tokens");
  int32_t neg[1] = {-1};
  x = a;
  x.shared_len = neg;
  expect_error(ctx, "negative prefix", &b, &x, RPA_INVALID_LENGTHS,
               "group 0 has -1 tokens");
  int32_t bad_group[3] = {0, 1, -1};
  x = a;
  x.shared_group = bad_group;
  expect_error(ctx, "group out of range", &b, &x, RPA_INVALID_PARAMETER,
               "sequence 1 is in group 1");
  x = a;
  x.num_shared = -2;
  expect_error(ctx, "negative num_shared", &b, &x, RPA_INVALID_PARAMETER,
               "num_shared: -2");
  x = a;
  x.shared_group = NULL;
  expect_error(ctx, "no groups", &b, &x, RPA_NULL_POINTER, "shared_group: NULL");
  /* a member writes into the prefix's last page: a prefix of 33 tokens
     spans pages 0..4; sequence 0 (kv_len 40) writes position 39, page 4 */
  int32_t l33[1] = {33}, all3[3] = {0, 0, 0};
  x = a;
  x.shared_len = l33;
  x.shared_group = all3;
  expect_error(ctx, "a member writes into a page of the prefix", &b, &x,
               RPA_OVERLAP, "a page of group 0's shared prefix");
  /* pages that differ: sequence 1's page 1 is its own again */
  const int32_t pps = b.args.pages_per_seq;
  const int32_t saved = b.page_indices[pps + 1];
  b.page_indices[pps + 1] = b.page_indices[2 * pps + 3];
  expect_error(ctx, "members' prefix pages differ", &b, &a, RPA_INVALID_PAGES,
               "sequence 1's logical page 1 is physical page");
  b.page_indices[pps + 1] = saved;
  x = a;
  x.shared_group = (const int32_t *)tb_data(&b.out);
  int32_t zero_len[1] = {0};
  x.shared_len = zero_len;
  memset(tb_data(&b.out_before), 0xff, 12); /* group ids -1: valid */
  tb_reset(&b);
  expect_error(ctx, "groups overlap out", &b, &x, RPA_OVERLAP,
               "out: overlaps shared_group");
  tb_free(&b);
}

int main(void) {
  ctx = th_context("test_cascade");
  if (!ctx) return 1;
  random_groups(th_quick() ? 8 : 50);
  determinism();
  errors();
  rpa_context_destroy(ctx);
  return th_finish("test_cascade");
}
