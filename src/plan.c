/* Planning (distribution-aware). Each sequence is classified by its own
   q_len:
   - decode (q_len 1): one work item per KV split; an item computes all
     query heads of the token, so each K/V byte is loaded once for its whole
     GQA group (and the whole slot row of all heads is read contiguously).
     The visible keys are split into at most RPA_MAX_SPLITS chunks of at
     least RPA_SPLIT_MIN keys; the engine merges partial (max, sum, acc) in
     split order, so the result depends on the sequence alone, never on the
     batch or the thread count.
   - prefill / mixed chunk (q_len > 1): one item per (KV head, block of
     query tokens); the block's rows are the G query heads of each token.
   Items are sorted by estimated cost, longest first, and handed out by an
   atomic counter: one long prefill beside many decodes keeps every thread
   busy. */
#include "plan.h"

#include <stdlib.h>

void rpa_visible(const rpa_args *a, int64_t pos, int32_t kv_len, int64_t *lo,
                 int64_t *hi) {
  *lo = 0;
  *hi = kv_len;
  if (a->causal) {
    *hi = pos + 1;
    if (a->sliding_window > 0 && pos - a->sliding_window + 1 > 0)
      *lo = pos - a->sliding_window + 1;
  }
}

static int decode_splits(int64_t keys) {
  int64_t n = keys / RPA_SPLIT_MIN;
  if (n < 1) n = 1;
  if (n > RPA_MAX_SPLITS) n = RPA_MAX_SPLITS;
  return (int)n;
}

int rpa_block_tokens(int group) {
  const int b = RPA_ROWS_TARGET / group;
  return b < 1 ? 1 : b;
}

rpa_plan_needs rpa_plan_needs_of(const rpa_args *a,
                                 const rpa_batch_info *info) {
  rpa_plan_needs nd = {0, 0, a->num_q_heads};
  int64_t decodes = 0;
  const int bq = rpa_block_tokens(info->group);
  for (int32_t i = 0; i < info->num_seqs; i++) {
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    if (q_len == 1) {
      nd.items += RPA_MAX_SPLITS;
      nd.slots += 1;
      decodes++;
    } else {
      nd.items += (int64_t)a->num_kv_heads * ((q_len + bq - 1) / bq);
    }
  }
  /* a prefill item holds a block of tokens x the group */
  if (info->max_q_len > 1) {
    const int rows = (info->max_q_len < bq ? info->max_q_len : bq) * info->group;
    if (rows > nd.rows) nd.rows = rows;
  }
  /* shared-prefix items: per KV head, a block of members at a time */
  if (a->num_shared > 0) {
    nd.items += (int64_t)a->num_kv_heads * (decodes / bq + a->num_shared);
    if (bq * info->group > nd.rows) nd.rows = bq * info->group;
  }
  return nd;
}

void rpa_plan_groups(const rpa_args *a, const rpa_batch_info *info,
                     rpa_cascade *cs) {
  const int32_t K = a->num_shared, S = info->num_seqs;
  int32_t *gs = cs->group_start;
  cs->members_per_item = rpa_block_tokens(info->group);
  for (int32_t g = 0; g <= K; g++) gs[g] = 0;
  for (int32_t i = 0; i < S; i++) { /* gs[g + 1]: group g's decode members */
    const int32_t g = a->shared_group[i];
    if (g >= 0 && a->cu_q_lens[i + 1] - a->cu_q_lens[i] == 1) gs[g + 1]++;
  }
  /* gs[g + 1] becomes where group g starts, or -1 - that for a group left
     out (one member alone shares nothing, nor does an empty prefix) */
  int32_t start = 0;
  for (int32_t g = 0; g < K; g++) {
    const int32_t count = gs[g + 1];
    const int kept = count >= 2 && a->shared_len[g] > 0;
    gs[g + 1] = kept ? start : -1 - start;
    if (kept) start += count;
  }
  /* each member moves its group's mark on by one: to where the group ends,
     that is where the next one starts */
  for (int32_t i = 0; i < S; i++) {
    const int32_t g = a->shared_group[i];
    if (g >= 0 && gs[g + 1] >= 0 && a->cu_q_lens[i + 1] - a->cu_q_lens[i] == 1)
      cs->members[gs[g + 1]++] = i;
  }
  for (int32_t g = 0; g < K; g++)
    if (gs[g + 1] < 0) gs[g + 1] = -1 - gs[g + 1];
}

/* The fields that tell two items of one sequence apart, in a fixed order:
   the sort is then the same on every run whatever qsort does with ties. */
static void item_key(const rpa_work_item *w, int32_t key[4]) {
  key[0] = (int32_t)w->kind;
  switch (w->kind) {
    case RPA_WORK_DECODE:
    case RPA_WORK_DECODE_BLOCK:
      key[1] = w->decode.split, key[2] = key[3] = 0;
      break;
    case RPA_WORK_PREFILL:
      key[1] = w->prefill.head, key[2] = w->prefill.j0, key[3] = 0;
      break;
    case RPA_WORK_SHARED_PREFIX:
      key[1] = w->shared.group, key[2] = w->shared.head, key[3] = w->shared.m0;
      break;
  }
}

static int cmp_cost(const void *x, const void *y) {
  const rpa_work_item *a = x, *b = y;
  if (a->cost != b->cost) return a->cost > b->cost ? -1 : 1;
  if (a->seq != b->seq) return a->seq < b->seq ? -1 : 1;
  int32_t ka[4], kb[4];
  item_key(a, ka);
  item_key(b, kb);
  for (int i = 0; i < 4; i++)
    if (ka[i] != kb[i]) return ka[i] < kb[i] ? -1 : 1;
  return 0;
}

/* The split items of decode sequence i; returns how many. */
static int plan_decode(const rpa_args *a, int32_t i,
                       const rpa_plan_shape *shape, rpa_work_kind kind,
                       int64_t kv_bytes, int cascaded, rpa_work_item *items) {
  const int32_t kv_len = a->kv_lens[i];
  const int64_t step_keys = shape->rows_keys;
  int64_t lo, hi;
  rpa_visible(a, kv_len - 1, kv_len, &lo, &hi);
  /* a cascaded member's prefix comes from its group's items; one part is
     kept for it */
  if (cascaded && lo < a->shared_len[a->shared_group[i]])
    lo = a->shared_len[a->shared_group[i]];
  int splits = decode_splits(hi - lo);
  if (cascaded && splits == RPA_MAX_SPLITS) splits--;
  const int64_t per = (hi - lo + splits - 1) / splits;
  const int64_t chunk = (per + step_keys - 1) / step_keys * step_keys;
  int made = 0;
  for (int s = 0; s < splits; s++) {
    const int64_t c0 = lo + s * chunk;
    if (c0 >= hi) break;
    const int64_t c1 = c0 + chunk < hi ? c0 + chunk : hi;
    rpa_work_item *w = &items[made++];
    w->kind = kind;
    w->seq = i;
    w->c0 = (int32_t)c0;
    w->c1 = (int32_t)c1;
    w->decode.split = s;
    w->cost = (c1 - c0) * kv_bytes / 16; /* ~16 B/ns per thread */
  }
  return made;
}

/* Estimated nanoseconds of `keys` keys for `rows` query rows (~100 flop/ns
   per thread). */
static int64_t block_cost(const rpa_args *a, const rpa_batch_info *info,
                          int64_t keys, int64_t rows) {
  return 4 * keys * rows * (a->head_dim + info->head_dim_v) / 2 / 100;
}

/* The items of prefill sequence i; returns how many. */
static int plan_prefill(const rpa_args *a, const rpa_batch_info *info,
                        int32_t i, rpa_work_item *items) {
  const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
  const int32_t kv_len = a->kv_lens[i];
  const int64_t prefix = (int64_t)kv_len - q_len;
  const int bq = rpa_block_tokens(info->group);
  int n = 0;
  for (int32_t j0 = 0; j0 < q_len; j0 += bq) {
    const int32_t j1 = j0 + bq < q_len ? j0 + bq : q_len;
    int64_t lo0, hi0, lo1, hi1;
    rpa_visible(a, prefix + j0, kv_len, &lo0, &hi0);
    rpa_visible(a, prefix + j1 - 1, kv_len, &lo1, &hi1);
    for (int32_t h = 0; h < a->num_kv_heads; h++) {
      rpa_work_item *w = &items[n++];
      w->kind = RPA_WORK_PREFILL;
      w->seq = i;
      w->c0 = (int32_t)lo0;
      w->c1 = (int32_t)hi1;
      w->prefill.head = h;
      w->prefill.j0 = j0;
      w->prefill.j1 = j1;
      w->cost = block_cost(a, info, hi1 - lo0, (int64_t)(j1 - j0) * info->group);
    }
  }
  return n;
}

/* Shared prefixes: per group, per block of members, per KV head, one item
   over the prefix's keys for all those members' rows. Returns how many. */
static int plan_shared(const rpa_args *a, const rpa_batch_info *info,
                       const rpa_cascade *cs, rpa_work_item *items) {
  int n = 0;
  for (int32_t g = 0; g < a->num_shared; g++) {
    const int32_t m0 = cs->group_start[g], m1 = cs->group_start[g + 1];
    for (int32_t b = m0; b < m1; b += cs->members_per_item) {
      const int32_t e = b + cs->members_per_item < m1 ? b + cs->members_per_item : m1;
      for (int32_t h = 0; h < a->num_kv_heads; h++) {
        rpa_work_item *w = &items[n++];
        w->kind = RPA_WORK_SHARED_PREFIX;
        w->seq = cs->members[m0];
        w->c0 = 0;
        w->c1 = a->shared_len[g];
        w->shared.head = h;
        w->shared.group = g;
        w->shared.m0 = b;
        w->shared.m1 = e;
        w->cost = block_cost(a, info, a->shared_len[g], (int64_t)(e - b) * info->group);
      }
    }
  }
  return n;
}

int rpa_plan(const rpa_args *a, const rpa_batch_info *info,
             const rpa_plan_shape *shape, const rpa_cascade *cs,
             rpa_work_item *items, _Atomic int *pending) {
  int n = 0, slot = 0;
  const int64_t kv_bytes =
      (int64_t)a->num_kv_heads * (a->head_dim + info->head_dim_v) *
      (int64_t)rpa_dtype_size(a->cache.dtype);
  const rpa_work_kind decode_kind =
      shape->rows_block_min > 0 && info->group >= shape->rows_block_min
          ? RPA_WORK_DECODE_BLOCK
          : RPA_WORK_DECODE;
  for (int32_t i = 0; i < info->num_seqs; i++) {
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    if (q_len != 1) {
      n += plan_prefill(a, info, i, items + n);
      continue;
    }
    const int cascaded = cs && rpa_cascaded(a, cs, i);
    const int made =
        plan_decode(a, i, shape, decode_kind, kv_bytes, cascaded, items + n);
    /* a cascaded member parks its prefix part as one split more, written
       by its group's items, one per KV head */
    const int parts = made + cascaded;
    for (int k = n; k < n + made; k++) {
      items[k].decode.slot = parts > 1 ? slot : -1;
      items[k].decode.parts = parts;
    }
    if (cascaded) {
      cs->slot[i] = slot;
      cs->parts[i] = parts;
    }
    if (parts > 1)
      atomic_init(&pending[slot++], made + (cascaded ? a->num_kv_heads : 0));
    n += made;
  }
  if (cs) n += plan_shared(a, info, cs, items + n);
  qsort(items, (size_t)n, sizeof *items, cmp_cost);
  return n;
}
