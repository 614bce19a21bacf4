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

int64_t rpa_plan_bound(const rpa_args *a, const rpa_batch_info *info,
                       int64_t *slots) {
  int64_t n = 0, decodes = 0;
  *slots = 0;
  const int bq = rpa_block_tokens(info->group);
  for (int32_t i = 0; i < info->num_seqs; i++) {
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    if (q_len == 1) {
      n += RPA_MAX_SPLITS;
      *slots += 1;
      decodes++;
    } else {
      n += (int64_t)a->num_kv_heads * ((q_len + bq - 1) / bq);
    }
  }
  /* shared-prefix items: per KV head, a block of members at a time */
  if (a->num_shared > 0)
    n += (int64_t)a->num_kv_heads * (decodes / bq + a->num_shared);
  return n;
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

static int cmp_cost(const void *x, const void *y) {
  const rpa_work_item *a = x, *b = y;
  if (a->cost != b->cost) return a->cost > b->cost ? -1 : 1;
  if (a->seq != b->seq) return a->seq < b->seq ? -1 : 1;
  if (a->head != b->head) return a->head < b->head ? -1 : 1;
  if (a->j0 != b->j0) return a->j0 < b->j0 ? -1 : 1;
  if (a->group != b->group) return a->group < b->group ? -1 : 1;
  return a->split < b->split ? -1 : (a->split > b->split);
}

/* The split items of decode sequence i; returns how many. */
static int plan_decode(const rpa_args *a, int32_t i, int64_t step_keys,
                       int64_t kv_bytes, int cascaded, rpa_work_item *items) {
  const int32_t kv_len = a->kv_lens[i];
  int64_t lo, hi;
  rpa_visible(a, kv_len - 1, kv_len, &lo, &hi);
  /* a cascaded member's prefix comes from its group's items; one partial
     slot is kept for it */
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
    w->seq = i;
    w->head = -1;
    w->j0 = 0;
    w->j1 = 1;
    w->c0 = (int32_t)c0;
    w->c1 = (int32_t)c1;
    w->split = s;
    w->group = -1;
    w->cost = (c1 - c0) * kv_bytes / 16; /* ~16 B/ns per thread */
  }
  return made;
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
    const int64_t keys = hi1 - lo0;
    for (int32_t h = 0; h < a->num_kv_heads; h++) {
      rpa_work_item *w = &items[n++];
      w->seq = i;
      w->head = h;
      w->j0 = j0;
      w->j1 = j1;
      w->c0 = (int32_t)lo0;
      w->c1 = (int32_t)hi1;
      w->split = 0;
      w->slot = -1;
      w->splits = 1;
      w->group = -1;
      /* ~100 flop/ns per thread */
      w->cost = 4 * keys * (j1 - j0) * info->group *
                (a->head_dim + info->head_dim_v) / 2 / 100;
    }
  }
  return n;
}

int rpa_plan(const rpa_args *a, const rpa_batch_info *info, int step_keys,
             const rpa_cascade *cs, rpa_work_item *items,
             _Atomic int *pending) {
  int n = 0, slot = 0;
  const int64_t kv_bytes =
      (int64_t)a->num_kv_heads * (a->head_dim + info->head_dim_v) *
      (int64_t)rpa_dtype_size(a->cache.dtype);
  for (int32_t i = 0; i < info->num_seqs; i++) {
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    if (q_len != 1) {
      n += plan_prefill(a, info, i, items + n);
      continue;
    }
    const int cascaded = cs && rpa_cascaded(a, cs, i);
    const int made = plan_decode(a, i, step_keys, kv_bytes, cascaded, items + n);
    /* a cascaded member parks its prefix part as one split more, written
       by its group's items, one per KV head */
    const int parts = made + cascaded;
    for (int k = n; k < n + made; k++) {
      items[k].slot = parts > 1 ? slot : -1;
      items[k].splits = parts;
    }
    if (cascaded) {
      cs->slot[i] = slot;
      cs->splits[i] = parts;
    }
    if (parts > 1)
      atomic_init(&pending[slot++], made + (cascaded ? a->num_kv_heads : 0));
    n += made;
  }
  /* Shared prefixes: per group, per block of members, per KV head, one
     item over the prefix's keys for all those members' rows. */
  for (int32_t g = 0; cs && g < a->num_shared; g++) {
    const int32_t m0 = cs->group_start[g], m1 = cs->group_start[g + 1];
    for (int32_t b = m0; b < m1; b += cs->members_per_item) {
      const int32_t e = b + cs->members_per_item < m1 ? b + cs->members_per_item : m1;
      for (int32_t h = 0; h < a->num_kv_heads; h++) {
        rpa_work_item *w = &items[n++];
        w->seq = cs->members[m0];
        w->head = h;
        w->j0 = b;
        w->j1 = e;
        w->c0 = 0;
        w->c1 = a->shared_len[g];
        w->split = 0;
        w->slot = -1;
        w->splits = 0;
        w->group = g;
        w->cost = 4 * (int64_t)a->shared_len[g] * (e - b) * info->group *
                  (a->head_dim + info->head_dim_v) / 2 / 100;
      }
    }
  }
  qsort(items, (size_t)n, sizeof *items, cmp_cost);
  return n;
}
