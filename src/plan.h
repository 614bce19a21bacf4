/* Planning: a validated batch cut into work items (plan.c). */
#ifndef RPA_PLAN_H
#define RPA_PLAN_H

#include <stdatomic.h>
#include <stdint.h>

#include "internal.h"

enum {
  RPA_MAX_SPLITS = 4,    /* decode KV splits per sequence */
  RPA_SPLIT_MIN = 512,   /* keys per split at least */
  RPA_ROWS_TARGET = 128, /* query rows (tokens x group) per prefill item */
};

typedef struct rpa_work_item {
  int32_t seq;
  int32_t head;   /* KV head, or -1: all heads (decode) */
  int32_t j0, j1; /* query tokens [j0, j1) of the sequence */
  int32_t c0, c1; /* keys [c0, c1) (decode: the split; prefill: the union of
                     the rows' visible ranges) */
  int32_t split;  /* split index; slot of the partials */
  int32_t slot;   /* decode sequence slot for split partials, -1: none */
  int32_t splits; /* number of splits of this sequence */
  int32_t group;  /* -1, or a shared-prefix item: group `group`'s prefix
                     keys [c0, c1) for its members [j0, j1) (indices into
                     rpa_cascade.members), KV head `head`; seq is the
                     group's first member */
  int64_t cost;   /* estimated nanoseconds on one thread */
} rpa_work_item;

/* Shared prefixes (rpa_args.shared_*): the decode members of each group
   that reads its prefix once, and where each member parks its part. */
typedef struct rpa_cascade {
  int32_t *members;     /* [S] decode members, group by group, in order */
  int32_t *group_start; /* [num_shared + 1] into members; a group of fewer
                           than 2 decode members is left out (empty) */
  int32_t *slot;        /* [S] a member's split slot */
  int32_t *splits;      /* [S] its partials: its own splits + the prefix */
  int members_per_item; /* decode members per shared-prefix item */
} rpa_cascade;

/* Whether sequence i reads its prefix through its group. */
static inline int rpa_cascaded(const rpa_args *a, const rpa_cascade *cs,
                               int32_t i) {
  if (a->num_shared <= 0 || a->shared_group[i] < 0) return 0;
  const int32_t g = a->shared_group[i];
  return a->cu_q_lens[i + 1] - a->cu_q_lens[i] == 1 && a->shared_len[g] > 0 &&
         cs->group_start[g + 1] > cs->group_start[g];
}

/* Visible keys [lo, hi) of query position pos in a sequence of kv_len. */
void rpa_visible(const rpa_args *a, int64_t pos, int32_t kv_len, int64_t *lo,
                 int64_t *hi);

/* Query tokens per prefill item for a GQA group. */
int rpa_block_tokens(int group);

/* Upper bound of the item count, and the decode sequences that may split. */
int64_t rpa_plan_bound(const rpa_args *a, const rpa_batch_info *info,
                       int64_t *slots);

/* Groups the decode members of each shared prefix into cs (its arrays
   allocated by the caller: S, num_shared + 1, S, S entries). */
void rpa_plan_groups(const rpa_args *a, const rpa_batch_info *info,
                     rpa_cascade *cs);

/* Fills items (at most rpa_plan_bound of them), longest first, and the
   pending split count of every split slot; split boundaries fall on
   multiples of step_keys. Returns the item count. A cascaded decode
   member's slot also waits for its prefix, one part per KV head. */
int rpa_plan(const rpa_args *a, const rpa_batch_info *info, int step_keys,
             const rpa_cascade *cs, rpa_work_item *items, _Atomic int *pending);

#endif
