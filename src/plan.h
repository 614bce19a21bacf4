/* Planning: a validated batch cut into work items of explicit kinds
   (plan.c), which the engine runs (engine.c). */
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

/* What an item computes, and so which path of the engine runs it. */
typedef enum rpa_work_kind {
  /* One decode token, every KV head, one split [c0, c1) of its keys; the
     kernel set's rows step, a KV head at a time. */
  RPA_WORK_DECODE,
  /* The same, for a GQA group of at least the set's rows_block_min rows:
     per KV head the group's rows walk the keys as one block (block step),
     so each K/V row is widened once for the whole group. */
  RPA_WORK_DECODE_BLOCK,
  /* One KV head, query tokens [j0, j1) x the group as one block, keys
     [c0, c1) under the causal / window mask; under a custom mask the block
     walks the cached prefix and each token its marked new keys. */
  RPA_WORK_PREFILL,
  /* One KV head of shared prefix `group` (keys [c0, c1)) for members
     [m0, m1) of rpa_cascade.members, all their rows as one block; each
     member's part is parked as the last split of its decode slot. */
  RPA_WORK_SHARED_PREFIX,
} rpa_work_kind;

typedef struct rpa_work_item {
  rpa_work_kind kind;
  int32_t seq;    /* the sequence (shared prefix: the group's first member) */
  int32_t c0, c1; /* keys [c0, c1) */
  int64_t cost;   /* estimated nanoseconds on one thread */
  union {
    struct {         /* RPA_WORK_DECODE, RPA_WORK_DECODE_BLOCK */
      int32_t split; /* index of this split among the sequence's parts */
      int32_t parts; /* the sequence's parts: its splits (+ a shared prefix) */
      int32_t slot;  /* slot of the parked parts, -1 when parts == 1 */
    } decode;
    struct { /* RPA_WORK_PREFILL */
      int32_t head;
      int32_t j0, j1; /* query tokens of the sequence */
    } prefill;
    struct { /* RPA_WORK_SHARED_PREFIX */
      int32_t head;
      int32_t group;
      int32_t m0, m1; /* members, indices into rpa_cascade.members */
    } shared;
  };
} rpa_work_item;

/* Shared prefixes (rpa_args.shared_*): the decode members of each group
   that reads its prefix once, and where each member parks its part. */
typedef struct rpa_cascade {
  int32_t *members;     /* [S] decode members, group by group, in order */
  int32_t *group_start; /* [num_shared + 1] into members; a group of fewer
                           than 2 decode members is left out (empty) */
  int32_t *slot;        /* [S] a member's split slot */
  int32_t *parts;       /* [S] its parts: its own splits + the prefix */
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

/* What the kernel set asks of the plan. */
typedef struct rpa_plan_shape {
  int rows_keys;      /* keys per rows step: decode splits fall on multiples */
  int rows_block_min; /* decode groups of this many rows run as blocks; 0:
                         never */
} rpa_plan_shape;

/* What running a plan needs, known before it is made: its items at most,
   the decode slots of parked parts, and the most query rows one item
   holds. */
typedef struct rpa_plan_needs {
  int64_t items;
  int64_t slots;
  int rows;
} rpa_plan_needs;

rpa_plan_needs rpa_plan_needs_of(const rpa_args *a, const rpa_batch_info *info);

/* Groups the decode members of each shared prefix into cs (its arrays
   allocated by the caller: S, num_shared + 1, S, S entries). */
void rpa_plan_groups(const rpa_args *a, const rpa_batch_info *info,
                     rpa_cascade *cs);

/* Fills items (at most rpa_plan_needs_of().items), longest first, and the
   pending part count of every slot; split boundaries fall on multiples of
   shape->rows_keys. Returns the item count. A cascaded decode member's
   slot also waits for its prefix, one part per KV head. */
int rpa_plan(const rpa_args *a, const rpa_batch_info *info,
             const rpa_plan_shape *shape, const rpa_cascade *cs,
             rpa_work_item *items, _Atomic int *pending);

#endif
