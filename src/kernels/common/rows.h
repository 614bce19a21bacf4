/* The rows step (kernels.h: rows_step), written once over a set's
   vocabulary: include the set's vec.h, define ROWS_GROUP_3 (1 if the set
   runs groups of 3 rows, else 0), include this file, and define the set's
   two inner products (declared here):

     static void rows_qk(const float *q, int ld, const rows_keys *k,
                         const int NR, const int DOT, vf *part);
       part[r * RPA_MAX_STEP_KEYS + c] for r < NR and every key c < k->n:
       VL-lane partial dot products of q row r (in the set's rows order)
       and key c, whose lanes sum to the logit; issues k's prefetches;
     static void rows_pv(float *o, int ldo, const float *p,
                         const rows_keys *k, const int NR, const int DOT);
       o[r] += sum_c p[r * RPA_MAX_STEP_KEYS + c] V[c] for r < NR, c < n.

   (both always inlined, NR and DOT constants). DOT is the step's choice
   of the bf16 dot product (a set without one is only called with 0).

   Memory-bound: each K/V row is read once, widened in registers and used
   by every query row of the group. The partials of VL keys are summed in
   one transpose-reduce (vf_reduce_keys), with no horizontal sum per key,
   then the softmax (softmax.h) and P V. Every (row, key) accumulator sees
   the same sequence of FMAs whatever the row grouping, so a row's result
   does not depend on its neighbours. */
#ifndef RPA_KERNELS_COMMON_ROWS_H
#define RPA_KERNELS_COMMON_ROWS_H

#include "softmax.h"

/* The keys of one step, and what to prefetch while it computes. */
typedef struct rows_keys {
  const void *const *krows, *const *vrows;
  int n, D, Dv;
  rpa_dtype dt; /* a constant in each copy of the step */
  /* the rows the engine names next (rpa_rows_args), and how much of each
     to fetch: whole rows, or the first line */
  const void *const *knext, *const *vnext;
  int n_next, knext_bytes, vnext_bytes;
  int kbytes, vbytes; /* of this step's rows */
  int first;          /* the step's first row group (later ones find this
                         step's rows in cache and prefetch nothing next) */
} rows_keys;

/* Prefetches `bytes` of row i (i < n) with hint L1 or L2. */
static ALWAYS_INLINE void prefetch_row(const void *const *rows, int i, int n,
                                       int bytes, const int l1) {
  if (i >= n) return;
  const char *p = rows[i];
  for (int b = 0; b < bytes; b += 64) {
    if (l1)
      prefetch_l1(p + b);
    else
      prefetch_l2(p + b);
  }
}

/* The set's inner products (see the top of this file). */
static ALWAYS_INLINE void rows_qk(const float *q, int ld, const rows_keys *k,
                                  const int NR, const int DOT, vf *part);
static ALWAYS_INLINE void rows_pv(float *o, int ldo, const float *p,
                                  const rows_keys *k, const int NR,
                                  const int DOT);

/* NR rows from row r of the step's rows, with the logit scale kmul. */
static ALWAYS_INLINE void rows_group(const rpa_rows_args *a, const rows_keys *k,
                                     int r, float kmul, const int NR,
                                     const int DOT) {
  enum { MK = RPA_MAX_STEP_KEYS };
  __attribute__((aligned(64))) vf part[4 * MK];
  __attribute__((aligned(64))) float p[4 * MK];
  const float *q = a->q + (int64_t)r * a->ld;
  float *o = a->o + (int64_t)r * a->ldo;
  rows_qk(q, a->ld, k, NR, DOT, part);
  /* the last vector's keys past n: zero partials (never stale lanes) */
  const int nv = (k->n + VL - 1) / VL * VL;
  for (int i = 0; i < NR; i++)
    for (int c = k->n; c < nv; c++) part[i * MK + c] = vf_zero();
  rows_softmax(part, p, NR, k->n, kmul, a->cap, a->m + r, a->l + r, o, a->ldo,
               a->Dv);
  rows_pv(o, a->ldo, p, k, NR, DOT);
}

/* The step for dtype dt (a constant after inlining; a set may pass a
   pseudo dtype of its own that its products understand, with es the bytes
   per element), every row, in groups of 4, (3,) 2 and 1. */
static ALWAYS_INLINE void rows_step_dt(const rpa_rows_args *a, rpa_dtype dt,
                                       int es, float kmul, const int DOT) {
  rows_keys k;
  k.krows = a->krows;
  k.vrows = a->vrows;
  k.n = a->n;
  k.D = a->D;
  k.Dv = a->Dv;
  k.dt = dt;
  k.knext = a->knext;
  k.vnext = a->vnext;
  k.n_next = a->n_next;
  k.knext_bytes = a->next_whole ? a->D * es : 64;
  k.vnext_bytes = a->next_whole ? a->Dv * es : 64;
  k.kbytes = a->D * es;
  k.vbytes = a->Dv * es;
  k.first = 1;
  int r = 0;
#define ROWS(NR)                               \
  for (; r + NR <= a->rows; r += NR, k.first = 0) \
    rows_group(a, &k, r, kmul, NR, DOT);
  ROWS(4)
#if ROWS_GROUP_3
  ROWS(3) /* groups of 3, 7, 11: one pass fewer over the step than 2 + 1 */
#endif
  ROWS(2)
  ROWS(1)
#undef ROWS
}

#endif
