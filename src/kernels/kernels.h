/* The kernel interface: what a kernel set gives the engine.

   The engine (src/engine.c) cuts every work item into steps over a few keys
   cut straight from the pages, and calls the set's kernels for the
   arithmetic. Two kernels, named by what they compute:
   - the rows step: a few query rows against a step of keys that every row
     sees (no mask). Decode tokens run on it (the G rows of a GQA group
     against each step of their KV head), and so does each token of a
     custom (tree) mask over the keys its mask row marks.
   - the block step: a block of query rows against a step of keys, under
     the causal / sliding-window mask of each row's position. Prefill
     chunks run on it (a block of tokens x the group, one KV head), and so
     do shared prefixes and decode tokens of a large GQA group.
   Both keep an online softmax per query row: running max m, running sum l
   and the unnormalised output o (f32, row stride ldo), which the engine
   initialises (m = -inf, l = 0, o = 0), merges across decode splits and
   normalises at the end.

   Rows. The engine hands each item's query rows as f32 rows q [rows][ld]
   (widened, and quantized by q_scale when asked), zero from D to ld; ld and
   ldo are multiples of 16. A row is (token jj, head g of the group):
   r = jj * G + g within one KV head.

   Keys. A step gets its keys as row pointers krows[i] / vrows[i] (i < n):
   the K and V rows of the step's KV head, wherever they live (a cache slot,
   or the k/v input for a new token). Rows are dense in the cache dtype.
   n <= the set's keys per step, and the engine calls with fewer only for a
   range's last step.

   Staging. A set may keep an item's query rows in an order or layout of
   its own (rows step: q and o permuted into a "blocked" dim order, or o in
   a power-of-two scale; block step: q transposed, or as bf16 pairs):
   rows_begin / block_begin stage them once per item, rows_end puts o back
   into natural order and scale. Where a set has no such layout these are
   plain copies or nothing.

   Non-finite input. A row whose q row, or the K or V row of a key it sees,
   holds a NaN or an infinity must leave its sum l or some element of its
   o non-finite, and no other row may be touched by it: the engine then
   stores the row as NaN (docs/contract.md). So a step adds s - s over each
   row's visible logits to its l (0, or NaN for a non-finite logit), uses
   every key the row sees in P V, even at weight 0 (0 * inf is NaN), and
   never multiplies a key the row does not see into its o.

   Scratch. Each thread owns a workspace of rpa_kernel_workspace_floats()
   floats, 64-byte aligned, that a step may use as it likes (a K tile
   transposed, widened V rows, logits); nothing in it lives across steps.

   Every entry of every set is a function: a set fills each one, with
   portable C (src/kernels/scalar/) where it has nothing faster. */
#ifndef RPA_KERNELS_KERNELS_H
#define RPA_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "rpa.h"

/* The most keys any set takes per step: sizes per-step arrays. */
#define RPA_MAX_STEP_KEYS 32

/* One rows step: rows query rows against n keys that every row sees. */
typedef struct rpa_rows_args {
  const float *q; /* [rows][ld], staged by rows_begin */
  int ld;
  int rows;
  float kmul;     /* logit scale: sm_scale * k_scale * q_scale */
  float cap;      /* soft cap, 0: none */
  const void *const *krows, *const *vrows;
  int n;
  int D, Dv;
  rpa_dtype dtype; /* of the K/V rows */
  float *m, *l;    /* [rows] */
  float *o;        /* [rows][ldo], in the set's rows order */
  int ldo;
  /* The rows to fetch next (this tile's next head, or the next tile), to
     prefetch while this step computes; n_next = 0: none. next_whole: all of
     each row, else its first line may do (the hardware's adjacent-line
     prefetch fetches the rest); a set may always fetch whole rows. */
  const void *const *knext, *const *vnext;
  int n_next;
  int next_whole;
  /* as rpa_block.bf16_ok, and as given to rows_begin */
  int bf16_ok;
  float *work;     /* the thread's workspace */
} rpa_rows_args;

/* A block of query rows: what block_begin stages and every block step of
   it reads. */
typedef struct rpa_block {
  const float *q;  /* [rows][ld] natural rows */
  int ld;
  void *qs;        /* staging: rpa_kernel_staging_floats() floats */
  int ldr;         /* rows rounded up to 16 */
  int rows;
  const int32_t *pos; /* [rows] query position of each row */
  int D, Dv;
  rpa_dtype dtype;
  float kmul;
  float cap;
  int causal;
  int32_t window;
  /* q holds bf16 values exactly and the context allows the bf16 dot
     product (vdpbf16ps or a matrix unit) for bf16 K and V: a set may use
     it, with the softmax weights rounded to bf16 (docs/contract.md). */
  int bf16_ok;
} rpa_block;

/* One block step: keys [c, c + n) for every row of the block. full: every
   row sees every key (no mask needed). */
typedef struct rpa_block_args {
  const rpa_block *block;
  int64_t c;
  int n;
  int full;
  const void *const *krows, *const *vrows;
  float *m, *l, *o;
  int ldo;
  float *work;
} rpa_block_args;

typedef struct rpa_kernels {
  const char *name;
  int rows_keys;    /* keys per rows step, <= RPA_MAX_STEP_KEYS */
  int block_keys;   /* keys per block step, <= RPA_MAX_STEP_KEYS */
  int has_bf16_dot; /* both steps honour bf16_ok */
  /* A decode token whose GQA group has at least this many query rows per
     KV head runs through block_begin / block_step instead (one block of
     the group's rows per KV head); 0: never. */
  int rows_block_min;
  /* q rows into the set's rows order (natural: nothing to do); bf16_ok as
     in rpa_rows_args (the set may stage q as bf16 then). */
  void (*rows_begin)(float *q, int ld, int rows, int D, rpa_dtype dtype,
                     int bf16_ok);
  void (*rows_step)(const rpa_rows_args *a);
  /* o rows from the set's rows order back to natural order; bf16_ok as
     given to rows_begin. */
  void (*rows_end)(float *o, int ldo, int rows, int Dv, rpa_dtype dtype,
                   int bf16_ok);
  void (*block_begin)(const rpa_block *b);
  void (*block_step)(const rpa_block_args *a);
  /* dst[i] = widen(src[i]) for i < n (any dtype). */
  void (*load_row)(float *dst, const void *src, rpa_dtype dtype, int n);
  /* dst[i] = narrow(src[i] * mul) for i < n, dtype f32, bf16 or f16. */
  void (*store_row)(void *dst, rpa_dtype dtype, const float *src, int n,
                    float mul);
  /* x[i] *= a for i < n. */
  void (*scale)(float *x, int n, float a);
} rpa_kernels;

/* Workspace and staging sizes, in floats, for any set. */
static inline size_t rpa_kernel_workspace_floats(int ld, int ldv, int ldr) {
  const size_t K = RPA_MAX_STEP_KEYS;
  return K * (size_t)ld + K * (size_t)ldv + 2 * K * (size_t)ldr;
}
static inline size_t rpa_kernel_staging_floats(int ld, int ldr) {
  return (size_t)ld * (size_t)ldr;
}

/* The sets, each in its folder: scalar/ (portable C), avx2/ and avx512/
   (x86 only). */
extern const rpa_kernels rpa_kernels_scalar;
#if RPA_HAVE_X86_KERNELS
extern const rpa_kernels rpa_kernels_avx2;
extern const rpa_kernels rpa_kernels_avx512;
#endif

#endif
