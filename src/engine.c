/* The engine behind every fast kernel set: plan the batch into work items
   (plan.c), carve the call's scratch, then run the items on the thread
   pool, one path per work kind, the arithmetic in the context's kernel set
   (kernels/kernels.h) and the walks over the keys in walk.c.

   Every path: write the item's new tokens into the cache -> load its query
   rows -> walk its keys -> merge decode parts -> normalise and store. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "engine.h"
#include "state.h"
#include "threadpool.h"

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* ---- the item's rows ----------------------------------------------------- */

/* Query row (token tok, query head n), widened (and quantized), into dst;
   zero from D to ld. */
static void load_query_row(const job *jb, int64_t tok, int32_t n, float *dst) {
  const rpa_args *a = jb->a;
  const int32_t D = a->head_dim;
  const int64_t qes = (int64_t)rpa_dtype_size(a->q.dtype);
  const int64_t e = tok * a->q.token_stride + (int64_t)n * a->q.head_stride;
  jb->k->load_row(dst, (const char *)a->q.data + e * qes, a->q.dtype, D);
  if (a->q_scale > 0.0f)
    for (int32_t d = 0; d < D; d++)
      dst[d] = rpa_quantize_q(dst[d], a->q_scale, a->cache.dtype);
  for (int d = D; d < jb->ld; d++) dst[d] = 0.0f;
}

/* Tokens [j0, j1) of sequence seq, KV heads [h0, h1): their query rows,
   widened once, row (h - h0) * R + (jj - j0) * G + g (R rows per head). */
static void load_query_rows(const job *jb, thread_scratch *t, int32_t seq,
                            int32_t j0, int32_t j1, int32_t h0, int32_t h1) {
  const int32_t G = jb->info->group;
  const int R = (j1 - j0) * G;
  const int32_t q0 = jb->a->cu_q_lens[seq];
  for (int32_t h = h0; h < h1; h++)
    for (int32_t jj = j0; jj < j1; jj++)
      for (int32_t g = 0; g < G; g++)
        load_query_row(jb, q0 + jj, h * G + g,
                       t->q + (int64_t)((h - h0) * R + (jj - j0) * G + g) * jb->ld);
}

static void init_state(const job *jb, thread_scratch *t, int rows) {
  for (int r = 0; r < rows; r++) {
    t->m[r] = -INFINITY;
    t->l[r] = 0.0f;
  }
  memset(t->o, 0, sizeof(float) * (size_t)rows * jb->ldv);
}

/* A row that met a NaN or an infinity in its q row or in the K or V row of
   a key it sees: the kernels leave its sum or some of its accumulator
   non-finite (kernels.h). Such a row is stored as NaN throughout, its lse
   too, on every kernel set alike (docs/contract.md, section 6). */
static int row_poisoned(const float *o, int32_t Dv, float l) {
  /* non-finite: all exponent bits set, so adding one more carries into the
     sign bit; an OR over the row (which the compiler vectorizes) */
  uint32_t acc = 0;
  for (int32_t d = 0; d < Dv; d++) {
    uint32_t u;
    memcpy(&u, o + d, sizeof u);
    acc |= (u & 0x7f800000u) + 0x00800000u;
  }
  return !isfinite(l) || (acc & 0x80000000u) != 0;
}

/* Tokens [j0, j1) of sequence seq, KV heads [h0, h1), rows as
   load_query_rows lays them out: the sink joins the denominator; rows are
   normalised, scaled by v_scale and stored, with their log-sum-exp when
   asked. */
static void store_rows(const job *jb, thread_scratch *t, int32_t seq,
                       int32_t j0, int32_t j1, int32_t h0, int32_t h1) {
  const rpa_args *a = jb->a;
  const int32_t G = jb->info->group, Dv = jb->info->head_dim_v;
  const int R = (j1 - j0) * G;
  const int32_t q0 = a->cu_q_lens[seq];
  const int64_t os = (int64_t)rpa_dtype_size(a->out.dtype);
  for (int32_t h = h0; h < h1; h++)
    for (int32_t jj = j0; jj < j1; jj++)
      for (int32_t g = 0; g < G; g++) {
        const int r = (h - h0) * R + (jj - j0) * G + g;
        const int32_t n = h * G + g;
        float mm = t->m[r], ll = t->l[r], alpha = 1.0f;
        if (a->sinks) {
          const float sink = a->sinks[n];
          const float m2 = sink > mm ? sink : mm;
          alpha = expf(mm - m2);
          ll = ll * alpha + expf(sink - m2);
          mm = m2;
        }
        const int64_t e = (int64_t)(q0 + jj) * a->out.token_stride +
                          (int64_t)n * a->out.head_stride;
        float *o = t->o + (int64_t)r * jb->ldv;
        const int poisoned = row_poisoned(o, Dv, ll);
        if (poisoned)
          for (int32_t d = 0; d < Dv; d++) o[d] = NAN;
        jb->k->store_row((char *)a->out.data + e * os, a->out.dtype, o, Dv,
                         poisoned ? 1.0f : alpha / ll * a->v_scale);
        if (a->lse)
          a->lse[(int64_t)(q0 + jj) * a->lse_token_stride +
                 (int64_t)n * a->lse_head_stride] =
              poisoned ? NAN : mm + logf(ll);
      }
}

/* ---- decode parts: parked, then merged by the last to arrive ------------- */

/* Parks rows [0, rows) of (m, l, o) as rows [r0, r0 + rows) of part `part`
   of slot `slot`. */
static void park_rows(const job *jb, int32_t slot, int32_t part, int r0,
                      const float *m, const float *l, const float *o,
                      int rows) {
  const int32_t Hq = jb->a->num_q_heads, Dv = jb->info->head_dim_v;
  const int64_t stride = 2 + jb->ldv;
  float *p = jb->partials + ((int64_t)slot * RPA_MAX_SPLITS + part) * Hq * stride +
             (int64_t)r0 * stride;
  for (int r = 0; r < rows; r++) {
    p[r * stride] = m[r];
    p[r * stride + 1] = l[r];
    memcpy(p + r * stride + 2, o + (int64_t)r * jb->ldv, sizeof(float) * (size_t)Dv);
  }
}

/* One part of a slot is parked: 1 if it was the last. */
static int arrive(const job *jb, int32_t slot) {
  return atomic_fetch_sub_explicit(&jb->pending[slot], 1,
                                   memory_order_acq_rel) == 1;
}

/* Folds the `parts` parked parts of slot, in part order, into t's rows
   [0, rows): the result depends on the sequence alone. */
static void merge_parked(const job *jb, int32_t slot, int32_t parts,
                         thread_scratch *t, int rows) {
  const int32_t Hq = jb->a->num_q_heads, Dv = jb->info->head_dim_v;
  const int64_t stride = 2 + jb->ldv;
  const float *base = jb->partials + (int64_t)slot * RPA_MAX_SPLITS * Hq * stride;
  init_state(jb, t, rows);
  for (int32_t s = 0; s < parts; s++)
    for (int r = 0; r < rows; r++) {
      const float *p = base + (int64_t)s * Hq * stride + r * stride;
      rpa_fold_state(&t->m[r], &t->l[r], t->o + (int64_t)r * jb->ldv, p[0],
                     p[1], p + 2, Dv);
    }
}

/* ---- one path per work kind ---------------------------------------------- */

/* RPA_WORK_DECODE, RPA_WORK_DECODE_BLOCK: one split of a decode token, all
   KV heads. The split that reads the new token (the last) writes it. */
static void run_decode(const job *jb, const rpa_work_item *w,
                       thread_scratch *t) {
  const rpa_args *a = jb->a;
  const int32_t Hkv = a->num_kv_heads, G = jb->info->group;
  const int rows = a->num_q_heads;
  if (a->update_kv_cache && w->c1 == a->kv_lens[w->seq])
    rpa_write_new_tokens(jb, w->seq, 0, 1, 0, Hkv);
  load_query_rows(jb, t, w->seq, 0, 1, 0, Hkv);
  init_state(jb, t, rows);
  if (w->kind == RPA_WORK_DECODE_BLOCK) {
    /* per KV head, the group's G rows walk the split as one block, each
       K/V row widened once for all of them; every key of a decode split is
       visible to every row (plan.c clips the window), so no step is
       masked */
    const int32_t pos = a->kv_lens[w->seq] - 1;
    for (int r = 0; r < G; r++) t->pos[r] = pos;
    for (int32_t h = 0; h < Hkv; h++) {
      thread_scratch th = *t;
      th.q = t->q + (int64_t)h * G * jb->ld;
      th.o = t->o + (int64_t)h * G * jb->ldv;
      th.m = t->m + h * G;
      th.l = t->l + h * G;
      rpa_walk_block(jb, &th, G, w->seq, h, w->c0, w->c1, pos, pos);
    }
  } else {
    jb->k->rows_begin(t->q, jb->ld, rows, a->head_dim, a->cache.dtype, jb->bf16_ok);
    rpa_walk_rows(jb, t, w->seq, 0, Hkv, w->c0, w->c1);
    jb->k->rows_end(t->o, jb->ldv, rows, jb->info->head_dim_v, a->cache.dtype,
                    jb->bf16_ok);
  }
  if (w->decode.slot >= 0) { /* the last part to arrive merges them all */
    park_rows(jb, w->decode.slot, w->decode.split, 0, t->m, t->l, t->o, rows);
    if (!arrive(jb, w->decode.slot)) return;
    merge_parked(jb, w->decode.slot, w->decode.parts, t, rows);
  }
  store_rows(jb, t, w->seq, 0, 1, 0, Hkv);
}

/* RPA_WORK_PREFILL: one KV head, tokens [j0, j1) x the group as one block. */
static void run_prefill(const job *jb, const rpa_work_item *w,
                        thread_scratch *t) {
  const rpa_args *a = jb->a;
  const int32_t G = jb->info->group, h = w->prefill.head;
  const int32_t j0 = w->prefill.j0, j1 = w->prefill.j1;
  const int R = (j1 - j0) * G;
  const int32_t q_len = a->cu_q_lens[w->seq + 1] - a->cu_q_lens[w->seq];
  const int64_t prefix = (int64_t)a->kv_lens[w->seq] - q_len;
  if (a->update_kv_cache) rpa_write_new_tokens(jb, w->seq, j0, j1, h, h + 1);
  load_query_rows(jb, t, w->seq, j0, j1, h, h + 1);
  init_state(jb, t, R);
  for (int r = 0; r < R; r++) t->pos[r] = (int32_t)(prefix + j0 + r / G);
  /* Under a custom mask the block walks the cached prefix only; each token
     then takes the new keys its mask row marks. */
  const int tree = rpa_has_mask(a, w->seq);
  const int64_t hi = tree && w->c1 > prefix ? (prefix > w->c0 ? prefix : w->c0)
                                            : w->c1;
  rpa_walk_block(jb, t, R, w->seq, h, w->c0, hi, prefix + j0, prefix + j1 - 1);
  if (tree) rpa_walk_tree(jb, t, w->seq, h, j0, j1);
  store_rows(jb, t, w->seq, j0, j1, h, h + 1);
}

/* RPA_WORK_SHARED_PREFIX: KV head h of group g's prefix keys, read once for
   the rows of members [m0, m1) (their G query rows each), walked as one
   block whose rows all see every key (but a sliding window's edge); each
   member's rows are then parked as the last part of its slot, and a member
   whose other parts are all in is merged and stored here. */
static void run_shared_prefix(const job *jb, const rpa_work_item *w,
                              thread_scratch *t) {
  const rpa_args *a = jb->a;
  const int32_t G = jb->info->group, h = w->shared.head;
  const int32_t *mem = jb->cs.members + w->shared.m0;
  const int nm = w->shared.m1 - w->shared.m0, R = nm * G;
  int32_t pos_min = INT32_MAX, pos_max = 0;
  for (int mi = 0; mi < nm; mi++) {
    const int32_t seq = mem[mi], pos = a->kv_lens[seq] - 1;
    pos_min = pos < pos_min ? pos : pos_min;
    pos_max = pos > pos_max ? pos : pos_max;
    for (int32_t g = 0; g < G; g++) {
      load_query_row(jb, a->cu_q_lens[seq], h * G + g,
                     t->q + (int64_t)(mi * G + g) * jb->ld);
      t->pos[mi * G + g] = pos;
    }
  }
  init_state(jb, t, R);
  /* every key of the prefix precedes every row; a window may cut the
     oldest keys for some rows (and all of them for every row) */
  int64_t lo = w->c0;
  if (a->causal && a->sliding_window > 0 && pos_min - a->sliding_window + 1 > lo)
    lo = pos_min - a->sliding_window + 1;
  rpa_walk_block(jb, t, R, w->seq, h, lo, w->c1, pos_min, pos_max);
  for (int mi = 0; mi < nm; mi++) {
    const int32_t seq = mem[mi];
    const int32_t slot = jb->cs.slot[seq], parts = jb->cs.parts[seq];
    const int r0 = mi * G;
    park_rows(jb, slot, parts - 1, h * G, t->m + r0, t->l + r0,
              t->o + (int64_t)r0 * jb->ldv, G);
    if (!arrive(jb, slot)) continue;
    thread_scratch tf = *t; /* the member's Hq rows, apart from the block's */
    tf.m = t->fm;
    tf.l = t->fl;
    tf.o = t->fo;
    merge_parked(jb, slot, parts, &tf, a->num_q_heads);
    store_rows(jb, &tf, seq, 0, 1, 0, a->num_kv_heads);
  }
}

static void run_item(void *arg, int index, int thread) {
  const job *jb = arg;
  const rpa_work_item *w = &jb->items[index];
  thread_scratch *t = &jb->ts[thread];
  switch (w->kind) {
    case RPA_WORK_DECODE:
    case RPA_WORK_DECODE_BLOCK: run_decode(jb, w, t); break;
    case RPA_WORK_PREFILL: run_prefill(jb, w, t); break;
    case RPA_WORK_SHARED_PREFIX: run_shared_prefix(jb, w, t); break;
  }
}

/* ---- scratch: one arena, carved once to size it and once to use it ------ */

/* With base NULL an arena only counts. */
typedef struct arena {
  char *base;
  size_t used;
} arena;

static void *take(arena *ar, size_t bytes) {
  char *p = ar->base ? ar->base + ar->used : NULL;
  ar->used += align64(bytes);
  return p;
}

static float *take_floats(arena *ar, size_t n) {
  return take(ar, sizeof(float) * n);
}

/* Everything a call needs beside the caller's buffers: the plan, the parked
   decode parts and their counters, the shared-prefix tables, and per
   thread the rows of its item, the set's block staging and workspace. It
   grows with the query rows and sequences of the call, never with KV
   length. */
static void carve(job *jb, arena *ar, const rpa_plan_needs *nd, int threads) {
  const rpa_args *a = jb->a;
  const int32_t G = jb->info->group, Hq = a->num_q_heads;
  const int64_t S = jb->info->num_seqs;
  jb->items = take(ar, sizeof(rpa_work_item) * (size_t)nd->items);
  jb->partials = take_floats(ar, (size_t)nd->slots * RPA_MAX_SPLITS * Hq * (2 + jb->ldv));
  jb->pending = take(ar, sizeof(_Atomic int) * (size_t)(nd->slots + 1));
  if (a->num_shared > 0) {
    jb->cs.members = take(ar, sizeof(int32_t) * (size_t)S);
    jb->cs.group_start = take(ar, sizeof(int32_t) * (size_t)(a->num_shared + 1));
    jb->cs.slot = take(ar, sizeof(int32_t) * (size_t)S);
    jb->cs.parts = take(ar, sizeof(int32_t) * (size_t)S);
  }
  jb->ts = take(ar, sizeof(thread_scratch) * (size_t)threads);
  const size_t rows = (size_t)nd->rows;
  for (int i = 0; i < threads; i++) {
    thread_scratch counted, *t = ar->base ? &jb->ts[i] : &counted;
    t->q = take_floats(ar, rows * jb->ld);
    t->o = take_floats(ar, rows * jb->ldv);
    t->m = take_floats(ar, rows);
    t->l = take_floats(ar, rows);
    t->pos = take(ar, sizeof(int32_t) * rows);
    t->qs = take_floats(ar, rpa_kernel_staging_floats(jb->ld, jb->ldr));
    t->work = take_floats(ar, rpa_kernel_workspace_floats(jb->ld, jb->ldv, jb->ldr));
    t->tq = take_floats(ar, (size_t)G * jb->ld);
    t->to = take_floats(ar, (size_t)G * jb->ldv);
    t->tm = take_floats(ar, (size_t)G);
    t->tl = take_floats(ar, (size_t)G);
    t->fo = t->fm = t->fl = NULL;
    if (a->num_shared > 0) {
      t->fo = take_floats(ar, (size_t)Hq * jb->ldv);
      t->fm = take_floats(ar, (size_t)Hq);
      t->fl = take_floats(ar, (size_t)Hq);
    }
  }
}

/* ---- entry -------------------------------------------------------------- */

rpa_status rpa_engine_attention(rpa_context *ctx, const rpa_args *a,
                                const rpa_batch_info *info) {
  const rpa_kernels *k = ctx->backend->kernels;
  const rpa_plan_needs nd = rpa_plan_needs_of(a, info);
  if (nd.items > INT32_MAX)
    return rpa_fail(ctx, RPA_OVERFLOW,
                    "num_tokens: %lld work items, more than one call can plan",
                    (long long)nd.items);
  const int threads = ctx->num_threads;
  job jb;
  memset(&jb, 0, sizeof jb);
  jb.a = a;
  jb.info = info;
  jb.k = k;
  jb.ld = round_up(a->head_dim, 16);
  jb.ldv = round_up(info->head_dim_v, 16);
  jb.ldr = round_up(nd.rows, 16);
  jb.es = rpa_dtype_size(a->cache.dtype);
  const float qs = a->q_scale > 0.0f ? a->q_scale : 1.0f;
  jb.kmul = a->sm_scale * a->k_scale * qs;
  /* The bf16 dot product is exact on q x K when q holds bf16 values: a
     bf16 q, or q quantized to an fp8 or bf16 cache dtype. */
  const int q_bf16_exact = a->q_scale > 0.0f
                               ? a->cache.dtype != RPA_F32 && a->cache.dtype != RPA_F16
                               : a->q.dtype == RPA_BF16;
  jb.bf16_ok = ctx->bf16_dot && q_bf16_exact;
  /* Decode prefetch, by the context's choice for this CPU (cpu.c). With
     prefetch_rows, the whole K and V rows of a later head step, on every
     layout. Without it, the first line of each, and none where a slot's
     heads' K rows lie side by side over 2 KiB or more in rows of 256 bytes
     or more: the hardware prefetcher streams those runs, and software
     prefetches only compete with it for fill buffers (docs/performance.md). */
  jb.prefetch_rows = ctx->prefetch_rows;
  {
    const int64_t hs = a->cache.k_head_stride, ss = a->cache.k_slot_stride;
    jb.hw_streams = !jb.prefetch_rows &&
                    (int64_t)a->head_dim * (int64_t)jb.es >= 256 && hs < ss &&
                    a->num_kv_heads * hs * (int64_t)jb.es >= 2048;
  }

  arena ar = {NULL, 0};
  carve(&jb, &ar, &nd, threads);
  ar.base = rpa_scratch(ctx, ar.used);
  if (!ar.base) return rpa_fail(ctx, RPA_OUT_OF_MEMORY, "scratch: %zu bytes", ar.used);
  ar.used = 0;
  carve(&jb, &ar, &nd, threads);
  if (a->num_shared > 0) rpa_plan_groups(a, info, &jb.cs);

  const rpa_plan_shape shape = {k->rows_keys, k->rows_block_min};
  const int n = rpa_plan(a, info, &shape, a->num_shared > 0 ? &jb.cs : NULL,
                         jb.items, jb.pending);
  int64_t cost = 0;
  for (int i = 0; i < n; i++) cost += jb.items[i].cost;
  /* Tiny calls stay on the caller's thread: waking workers costs more. */
  const int use = cost < 20000 ? 1 : threads;
  rpa_pool_run(ctx->pool, use, n, run_item, &jb);
  return RPA_OK;
}
