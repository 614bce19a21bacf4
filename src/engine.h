/* The engine's pieces, shared by its two files: engine.c (the entry: plan,
   scratch, one path per work kind, merge and store) and walk.c (how an
   item walks its keys through the kernel set's two steps). */
#ifndef RPA_ENGINE_H
#define RPA_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "kernels/kernels.h"
#include "plan.h"

/* One thread's scratch: the rows of the item it runs. */
typedef struct thread_scratch {
  float *q;     /* [rows][ld] the item's query rows */
  float *o;     /* [rows][ldv] */
  float *m, *l; /* [rows] */
  int32_t *pos; /* [rows] query position of each row */
  float *qs;    /* the kernel set's block staging */
  float *work;  /* the kernel set's workspace */
  /* tree_walk: one token's G rows, [G][ld], [G][ldv], [G], [G] */
  float *tq, *to, *tm, *tl;
  /* a shared-prefix item finishing a member: [Hq][ldv], [Hq], [Hq] */
  float *fo, *fm, *fl;
} thread_scratch;

/* One call, as every item sees it. */
typedef struct job {
  const rpa_args *a;
  const rpa_batch_info *info;
  const rpa_kernels *k;
  rpa_work_item *items;
  thread_scratch *ts;   /* [threads] */
  float *partials;      /* [slots][RPA_MAX_SPLITS][Hq][2 + ldv] */
  _Atomic int *pending; /* [slots] parts not yet parked */
  rpa_cascade cs;       /* shared prefixes (when a->num_shared > 0) */
  int ld, ldv, ldr;     /* row strides of q, o, and block rows */
  float kmul;           /* logit scale: sm_scale * k_scale * q_scale */
  int bf16_ok;          /* the kernels may use the bf16 dot product */
  int hw_streams;       /* rows steps leave K/V prefetch to the hardware */
  int prefetch_rows;    /* rows steps prefetch whole rows (rpa_context) */
  size_t es;            /* cache element size */
} job;

/* Copies the new tokens [j0, j1) of sequence seq, KV heads [h0, h1), into
   their cache slots. */
void rpa_write_new_tokens(const job *jb, int32_t seq, int32_t j0, int32_t j1,
                          int32_t h0, int32_t h1);

/* Decode: the token's rows of KV heads [h0, h1) (G each, staged by
   rows_begin) walk keys [lo, hi) of sequence seq in rows steps. */
void rpa_walk_rows(const job *jb, thread_scratch *t, int32_t seq, int32_t h0,
                   int32_t h1, int64_t lo, int64_t hi);

/* A block of R rows in t (q rows and positions loaded) walks keys [lo, hi)
   of sequence seq, KV head h, in block steps; the rows hold positions
   pos_first..pos_last. */
void rpa_walk_block(const job *jb, thread_scratch *t, int R, int32_t seq,
                    int32_t h, int64_t lo, int64_t hi, int64_t pos_first,
                    int64_t pos_last);

/* Custom masks: tokens [j0, j1) of a prefill item (KV head h, rows loaded
   in t, the cached prefix already walked) take the new keys their mask
   rows mark. */
void rpa_walk_tree(const job *jb, thread_scratch *t, int32_t seq, int32_t h,
                   int32_t j0, int32_t j1);

#endif
