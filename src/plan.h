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
  int64_t cost;   /* estimated nanoseconds on one thread */
} rpa_work_item;

/* Visible keys [lo, hi) of query position pos in a sequence of kv_len. */
void rpa_visible(const rpa_args *a, int64_t pos, int32_t kv_len, int64_t *lo,
                 int64_t *hi);

/* Query tokens per prefill item for a GQA group. */
int rpa_block_tokens(int group);

/* Upper bound of the item count, and the decode sequences that may split. */
int64_t rpa_plan_bound(const rpa_args *a, const rpa_batch_info *info,
                       int64_t *slots);

/* Fills items (at most rpa_plan_bound of them), longest first, and the
   pending split count of every split slot; split boundaries fall on
   multiples of step_keys. Returns the item count. */
int rpa_plan(const rpa_args *a, const rpa_batch_info *info, int step_keys,
             rpa_work_item *items, _Atomic int *pending);

#endif
