/* The engine behind every fast kernel set: plan (plan.c), then the fused
   pipeline below, one path per work kind, the arithmetic in the context's
   kernel set (kernels/kernels.h).

   An item walks its keys in steps cut straight from the pages (any page
   size; a step may span pages), locating the next step's rows while the
   current one computes and prefetching them. New tokens' K/V are copied
   into their cache slots at the start of the item and read straight from
   the k/v inputs, never back from the cache. Causal steps above the
   diagonal and steps left of a sliding window are never visited.

   run_item: write the item's new tokens -> load its query rows -> walk the
   keys (decode or prefill) -> merge decode splits -> normalise and store. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "internal.h"
#include "kernels/kernels.h"
#include "plan.h"
#include "threadpool.h"

enum {
  MAXK = RPA_MAX_STEP_KEYS,
  PREFETCH_HEADS = 8, /* decode: prefetch distance, in head steps */
};

/* Where each key of a step comes from: its row of KV head 0 and the
   stride from head to head (elements). */
typedef struct key_rows {
  int n;
  const char *kbase[MAXK], *vbase[MAXK];
  int64_t khs[MAXK], vhs[MAXK];
} key_rows;

typedef struct thread_scratch {
  float *q;       /* [rows][ld] the item's query rows */
  float *o;       /* [rows][ldv] */
  float *m, *l;   /* [rows] */
  float *qs;      /* the kernel set's prefill staging */
  float *work;    /* the kernel set's workspace */
  int32_t *pos;   /* [rows] query position of each row */
  float *tq, *to; /* tree_walk: one token's G rows [G][ld], [G][ldv], */
  float *tm, *tl; /* [G] */
  float *fo, *fm, *fl; /* a shared-prefix item finishing a member: [Hq] */
} thread_scratch;

typedef struct job {
  const rpa_args *a;
  const rpa_batch_info *info;
  const rpa_kernels *k;
  rpa_work_item *items;
  thread_scratch *ts;
  float *partials;      /* [slots][RPA_MAX_SPLITS][Hq][2 + ldv] */
  _Atomic int *pending; /* [slots] splits not yet finished */
  int ld, ldv, ldr;
  float kmul;           /* logit scale: sm_scale * k_scale * q_scale */
  int bf16_ok;          /* the kernels may use the bf16 dot product */
  int hw_streams;       /* decode leaves K/V prefetch to the hardware */
  int prefetch_rows;    /* decode prefetches whole rows (rpa_context) */
  size_t es;            /* cache element size */
  rpa_cascade cs;       /* shared prefixes (when a->num_shared > 0) */
} job;

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* ---- the cache write and the key rows ----------------------------------- */

/* Copies the new tokens [j0, j1) of sequence seq, KV heads [h0, h1), into
   their cache slots. */
static void write_new_tokens(const job *jb, int32_t seq, int32_t j0, int32_t j1,
                             int32_t h0, int32_t h1) {
  const rpa_args *a = jb->a;
  const rpa_kv_cache *c = &a->cache;
  const int32_t q0 = a->cu_q_lens[seq], q_len = a->cu_q_lens[seq + 1] - q0;
  const int64_t prefix = (int64_t)a->kv_lens[seq] - q_len;
  const size_t es = jb->es;
  for (int32_t j = j0; j < j1; j++) {
    const int64_t t = q0 + j;
    const rpa_slot s = rpa_slot_of(a, seq, prefix + j);
    for (int32_t h = h0; h < h1; h++) {
      memcpy((char *)c->k + rpa_k_offset(c, s, h) * (int64_t)es,
             (const char *)a->k.data +
                 (t * a->k.token_stride + h * a->k.head_stride) * (int64_t)es,
             (size_t)a->head_dim * es);
      if (jb->info->latent) continue;
      memcpy((char *)c->v + rpa_v_offset(c, s, h) * (int64_t)es,
             (const char *)a->v.data +
                 (t * a->v.token_stride + h * a->v.head_stride) * (int64_t)es,
             (size_t)jb->info->head_dim_v * es);
    }
  }
}

/* The item's share of the fused cache write, before any compute: a decode
   sequence's token is written by its last split (the one that reads it),
   a prefill item writes its own tokens of its own KV head. */
static void write_item_tokens(const job *jb, const rpa_work_item *w) {
  if (!jb->a->update_kv_cache) return;
  if (w->head < 0) {
    if (w->c1 == jb->a->kv_lens[w->seq])
      write_new_tokens(jb, w->seq, w->j0, w->j1, 0, jb->a->num_kv_heads);
  } else {
    write_new_tokens(jb, w->seq, w->j0, w->j1, w->head, w->head + 1);
  }
}

/* Locates keys [c, c + n) of sequence seq: the cache, or (new tokens with
   update on) the k/v inputs. */
static void locate_keys(const job *jb, key_rows *kr, int32_t seq, int64_t c,
                        int n) {
  const rpa_args *a = jb->a;
  const rpa_kv_cache *kc = &a->cache;
  const int32_t q0 = a->cu_q_lens[seq], q_len = a->cu_q_lens[seq + 1] - q0;
  const int64_t prefix = (int64_t)a->kv_lens[seq] - q_len;
  const int64_t es = (int64_t)jb->es;
  const int latent = jb->info->latent;
  const char *vc = latent ? kc->k : kc->v;
  const int64_t v_hs = latent ? kc->k_head_stride : kc->v_head_stride;
  kr->n = n;
  for (int i = 0; i < n; i++) {
    const int64_t key = c + i;
    if (a->update_kv_cache && key >= prefix) {
      const int64_t tok = q0 + key - prefix;
      kr->kbase[i] = (const char *)a->k.data + tok * a->k.token_stride * es;
      kr->khs[i] = a->k.head_stride;
      if (latent) {
        kr->vbase[i] = kr->kbase[i];
        kr->vhs[i] = kr->khs[i];
      } else {
        kr->vbase[i] = (const char *)a->v.data + tok * a->v.token_stride * es;
        kr->vhs[i] = a->v.head_stride;
      }
    } else {
      const rpa_slot s = rpa_slot_of(a, seq, key);
      kr->kbase[i] = (const char *)kc->k + rpa_k_offset(kc, s, 0) * es;
      kr->khs[i] = kc->k_head_stride;
      kr->vbase[i] = vc + rpa_v_offset(kc, s, 0) * es;
      kr->vhs[i] = v_hs;
    }
  }
}

/* Locates the step of up to `step` keys from c, clipped to hi (none when
   c >= hi). */
static void locate_step(const job *jb, key_rows *kr, int32_t seq, int64_t c,
                        int step, int64_t hi) {
  kr->n = 0;
  if (c < hi) locate_keys(jb, kr, seq, c, (int)(hi - c < step ? hi - c : step));
}

/* Row pointers of KV head h of the located keys. */
static void head_rows(const job *jb, const key_rows *kr, int32_t h,
                      const void **krow, const void **vrow) {
  const int64_t es = (int64_t)jb->es;
  for (int i = 0; i < kr->n; i++) {
    krow[i] = kr->kbase[i] + h * kr->khs[i] * es;
    vrow[i] = kr->vbase[i] + h * kr->vhs[i] * es;
  }
}

/* Prefetches KV head h of the located keys (the next step). */
static void prefetch_head(const job *jb, const key_rows *kr, int32_t h) {
  const int64_t kb = (int64_t)jb->a->head_dim * (int64_t)jb->es;
  const int64_t vb =
      jb->info->latent ? 0 : (int64_t)jb->info->head_dim_v * (int64_t)jb->es;
  const void *krow[MAXK], *vrow[MAXK];
  head_rows(jb, kr, h, krow, vrow);
  for (int i = 0; i < kr->n; i++) {
    for (int64_t b = 0; b < kb; b += 64)
      __builtin_prefetch((const char *)krow[i] + b, 0, 2);
    for (int64_t b = 0; b < vb; b += 64)
      __builtin_prefetch((const char *)vrow[i] + b, 0, 2);
  }
}

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

/* Widens the item's query rows once, quantized by q_scale when asked: row
   (h - h0) * R + (jj - j0) * G + g; zero from D to ld. */
static void load_query_rows(const job *jb, const rpa_work_item *w,
                            thread_scratch *t, int32_t h0, int32_t h1) {
  const rpa_args *a = jb->a;
  const int32_t G = jb->info->group;
  const int R = (w->j1 - w->j0) * G;
  const int32_t q0 = a->cu_q_lens[w->seq];
  for (int32_t h = h0; h < h1; h++)
    for (int32_t jj = w->j0; jj < w->j1; jj++)
      for (int32_t g = 0; g < G; g++)
        load_query_row(jb, q0 + jj, h * G + g,
                       t->q + (int64_t)((h - h0) * R + (jj - w->j0) * G + g) *
                                  jb->ld);
}

static void init_state(const job *jb, thread_scratch *t, int rows) {
  for (int r = 0; r < rows; r++) {
    t->m[r] = -INFINITY;
    t->l[r] = 0.0f;
  }
  memset(t->o, 0, sizeof(float) * (size_t)rows * jb->ldv);
}

/* ---- decode: all heads of one token, keys [c0, c1) seen by every row ---- */

static void decode_walk(const job *jb, const rpa_work_item *w,
                        thread_scratch *t, int32_t h0, int32_t h1) {
  const rpa_args *a = jb->a;
  const rpa_kernels *k = jb->k;
  const int R = jb->info->group, step = k->decode_keys;
  key_rows cur, next;
  rpa_decode_step_args s;
  s.ld = jb->ld;
  s.rows = R;
  s.kmul = jb->kmul;
  s.cap = a->soft_cap;
  s.D = a->head_dim;
  s.Dv = jb->info->head_dim_v;
  s.dtype = a->cache.dtype;
  s.ldo = jb->ldv;
  s.work = t->work;
  s.next_whole = jb->prefetch_rows;
  s.bf16_ok = jb->bf16_ok;
  const void *krow[MAXK], *vrow[MAXK], *kn[MAXK], *vn[MAXK];
  s.krows = krow;
  s.vrows = vrow;
  s.knext = kn;
  s.vnext = vn;
  const int64_t lo = w->c0, hi = w->c1;
  locate_step(jb, &next, w->seq, lo, step, hi);
  for (int64_t c = lo; c < hi; c += step) {
    cur = next; /* the pipeline: locate the next step's rows */
    locate_step(jb, &next, w->seq, c + step, step, hi);
    s.n = cur.n;
    for (int32_t h = h0; h < h1; h++) {
      const int r0 = (h - h0) * R;
      head_rows(jb, &cur, h, krow, vrow);
      /* Prefetch what comes PREFETCH_HEADS head steps later: a later head
         of this step, or past the last head, a head of the next step;
         nothing where the hardware streams the slot's rows. */
      const int32_t ph = h + PREFETCH_HEADS;
      if (jb->hw_streams) {
        s.n_next = 0;
      } else if (ph < h1) {
        head_rows(jb, &cur, ph, kn, vn);
        s.n_next = cur.n;
      } else {
        head_rows(jb, &next, h0 + (ph - h1) % (h1 - h0), kn, vn);
        s.n_next = next.n;
      }
      s.q = t->q + (int64_t)r0 * jb->ld;
      s.m = t->m + r0;
      s.l = t->l + r0;
      s.o = t->o + (int64_t)r0 * jb->ldv;
      k->decode_step(&s);
    }
  }
}

/* A prefill block of R rows in t (q rows and positions loaded), staged by
   the set, walks keys [lo, hi) of sequence seq, KV head h, into t's state.
   Rows hold positions pos_first..pos_last; a step every row sees whole (no
   causal or window cut) runs unmasked. */
static void walk_block(const job *jb, thread_scratch *t, int R, int32_t seq,
                       int32_t h, int64_t lo, int64_t hi, int64_t pos_first,
                       int64_t pos_last) {
  const rpa_args *a = jb->a;
  const rpa_kernels *k = jb->k;
  rpa_prefill_item it;
  it.q = t->q;
  it.ld = jb->ld;
  it.qs = t->qs;
  it.ldr = jb->ldr;
  it.rows = R;
  it.pos = t->pos;
  it.D = a->head_dim;
  it.Dv = jb->info->head_dim_v;
  it.dtype = a->cache.dtype;
  it.kmul = jb->kmul;
  it.cap = a->soft_cap;
  it.causal = a->causal;
  it.window = a->sliding_window;
  it.bf16_ok = jb->bf16_ok;
  k->prefill_begin(&it);
  const void *krow[MAXK], *vrow[MAXK];
  rpa_prefill_step_args s;
  s.item = &it;
  s.krows = krow;
  s.vrows = vrow;
  s.m = t->m;
  s.l = t->l;
  s.o = t->o;
  s.ldo = jb->ldv;
  s.work = t->work;
  const int step = k->prefill_keys;
  const int window = a->causal && a->sliding_window > 0;
  key_rows cur, next;
  locate_step(jb, &next, seq, lo, step, hi);
  for (int64_t c = lo; c < hi; c += step) {
    cur = next; /* the pipeline: fetch the next step's rows */
    locate_step(jb, &next, seq, c + step, step, hi);
    prefetch_head(jb, &next, h);
    /* Does every row see every key of this step? */
    int full = 1;
    if (a->causal) {
      if (c + cur.n - 1 > pos_first) full = 0;
      if (window && pos_last - c >= a->sliding_window) full = 0;
    }
    head_rows(jb, &cur, h, krow, vrow);
    s.c = c;
    s.n = cur.n;
    s.full = full;
    k->prefill_step(&s);
  }
}

/* A decode item of a large GQA group (rpa_kernels.decode_block_rows): per
   KV head, the token's G rows walk the item's keys as one prefill block,
   rows along the vector, so each K/V row is widened once for all G rows
   rather than once per group of the decode step's rows. Every key of a
   decode item is visible to every row (plan_decode clips the window), so
   no step is masked. Same state layout as decode_walk. */
static void decode_walk_blocks(const job *jb, const rpa_work_item *w,
                               thread_scratch *t, int32_t h0, int32_t h1) {
  const int32_t G = jb->info->group;
  const int32_t pos = jb->a->kv_lens[w->seq] - 1;
  for (int r = 0; r < G; r++) t->pos[r] = pos;
  for (int32_t h = h0; h < h1; h++) {
    const int r0 = (h - h0) * G;
    thread_scratch th = *t;
    th.q = t->q + (int64_t)r0 * jb->ld;
    th.o = t->o + (int64_t)r0 * jb->ldv;
    th.m = t->m + r0;
    th.l = t->l + r0;
    walk_block(jb, &th, G, w->seq, h, w->c0, w->c1, pos, pos);
  }
}

/* ---- custom masks: each token's marked new keys ------------------------ */

/* The new keys token jj of item w sees under its sequence's mask, after
   the block has walked the prefix (prefill_walk): per token, the set's
   decode kernel over the gathered rows of the keys its mask row marks (G
   rows: what decode steps are built for), into a state of its own, then
   merged into the token's rows of the block like a decode split. Keys in
   increasing order, so the result depends on the sequence alone. */
static void tree_walk(const job *jb, const rpa_work_item *w, thread_scratch *t,
                      int64_t prefix) {
  const rpa_args *a = jb->a;
  const rpa_kernels *k = jb->k;
  const int32_t G = jb->info->group, kv_len = a->kv_lens[w->seq];
  const int32_t Dv = jb->info->head_dim_v;
  const int32_t q_len = a->cu_q_lens[w->seq + 1] - a->cu_q_lens[w->seq];
  const int step = k->decode_keys, ld = jb->ld, ldv = jb->ldv;
  const void *krow[MAXK], *vrow[MAXK];
  key_rows kr, one;
  rpa_decode_step_args s;
  s.ld = ld;
  s.rows = G;
  s.kmul = jb->kmul;
  s.cap = a->soft_cap;
  s.D = a->head_dim;
  s.Dv = Dv;
  s.dtype = a->cache.dtype;
  s.ldo = ldv;
  s.work = t->work;
  s.krows = krow;
  s.vrows = vrow;
  s.knext = s.vnext = NULL;
  s.n_next = 0;
  s.next_whole = 0;
  s.bf16_ok = jb->bf16_ok;
  s.q = t->tq;
  s.m = t->tm;
  s.l = t->tl;
  s.o = t->to;
  for (int32_t jj = w->j0; jj < w->j1; jj++) {
    const int r0 = (jj - w->j0) * G;
    memcpy(t->tq, t->q + (int64_t)r0 * ld, sizeof(float) * (size_t)G * ld);
    k->decode_begin(t->tq, ld, G, a->head_dim, a->cache.dtype, jb->bf16_ok);
    for (int g = 0; g < G; g++) {
      t->tm[g] = -INFINITY;
      t->tl[g] = 0.0f;
    }
    memset(t->to, 0, sizeof(float) * (size_t)G * ldv);
    int64_t rlo, rhi;
    rpa_visible(a, prefix + jj, kv_len, &rlo, &rhi);
    kr.n = 0;
    for (int32_t kk = 0; kk <= jj; kk++) {
      if (prefix + kk >= rlo && rpa_mask_bit(a, w->seq, q_len, jj, kk)) {
        locate_keys(jb, &one, w->seq, prefix + kk, 1);
        kr.kbase[kr.n] = one.kbase[0];
        kr.vbase[kr.n] = one.vbase[0];
        kr.khs[kr.n] = one.khs[0];
        kr.vhs[kr.n] = one.vhs[0];
        kr.n++;
      }
      if (kr.n > 0 && (kr.n == step || kk == jj)) {
        head_rows(jb, &kr, w->head, krow, vrow);
        s.n = kr.n;
        k->decode_step(&s);
        kr.n = 0;
      }
    }
    k->decode_end(t->to, ldv, G, Dv, a->cache.dtype, jb->bf16_ok);
    /* Merge (the NaN rule holds: a non-finite part leaves l or o so). */
    for (int g = 0; g < G; g++) {
      const int r = r0 + g;
      const float m1 = t->m[r], m2 = t->tm[g];
      const float mm = m1 > m2 ? m1 : m2;
      const float f1 = t->l[r] == 0.0f ? 0.0f : expf(m1 - mm);
      const float f2 = expf(m2 - mm);
      float *o = t->o + (int64_t)r * ldv;
      const float *o2 = t->to + (int64_t)g * ldv;
      for (int32_t d = 0; d < Dv; d++) o[d] = o[d] * f1 + o2[d] * f2;
      t->l[r] = t->l[r] * f1 + t->tl[g] * f2;
      t->m[r] = mm;
    }
  }
}

/* ---- prefill: one KV head, a block of tokens x the group, masked -------- */

static void prefill_walk(const job *jb, const rpa_work_item *w,
                         thread_scratch *t) {
  const rpa_args *a = jb->a;
  const int32_t G = jb->info->group;
  const int R = (w->j1 - w->j0) * G;
  const int32_t q_len = a->cu_q_lens[w->seq + 1] - a->cu_q_lens[w->seq];
  const int64_t prefix = (int64_t)a->kv_lens[w->seq] - q_len;
  for (int r = 0; r < R; r++) t->pos[r] = (int32_t)(prefix + w->j0 + r / G);
  const int masked = rpa_has_mask(a, w->seq);
  const int64_t lo = w->c0;
  /* Under a custom mask the block walks the cached prefix only; each token
     then takes the new keys its mask row marks (tree_walk). */
  const int64_t hi = masked && w->c1 > prefix ? (prefix > lo ? prefix : lo)
                                              : w->c1;
  walk_block(jb, t, R, w->seq, w->head, lo, hi, prefix + w->j0,
             prefix + w->j1 - 1);
  if (masked) tree_walk(jb, w, t, prefix);
}

/* ---- decode splits and the final store ---------------------------------- */

/* Parks rows [0, rows) of (m, l, o) as rows [r0, r0 + rows) of split
   `split` of decode slot `slot`. */
static void park_rows(const job *jb, int32_t slot, int32_t split, int r0,
                      const float *m, const float *l, const float *o,
                      int rows) {
  const int32_t Hq = jb->a->num_q_heads, Dv = jb->info->head_dim_v;
  const int ldv = jb->ldv;
  const int64_t stride = 2 + ldv;
  float *part = jb->partials +
                ((int64_t)slot * RPA_MAX_SPLITS + split) * Hq * stride +
                (int64_t)r0 * stride;
  for (int r = 0; r < rows; r++) {
    part[r * stride] = m[r];
    part[r * stride + 1] = l[r];
    memcpy(part + r * stride + 2, o + (int64_t)r * ldv,
           sizeof(float) * (size_t)Dv);
  }
}

/* One part of a slot is parked: 1 if it was the last. */
static int arrive(const job *jb, int32_t slot) {
  return atomic_fetch_sub_explicit(&jb->pending[slot], 1,
                                   memory_order_acq_rel) == 1;
}

/* Merges every parked split of w's slot, in split order, into t. */
static void merge_parked(const job *jb, const rpa_work_item *w,
                         thread_scratch *t, int rows) {
  const int32_t Hq = jb->a->num_q_heads, Dv = jb->info->head_dim_v;
  const int ldv = jb->ldv;
  const int64_t stride = 2 + ldv;
  const float *base = jb->partials + (int64_t)w->slot * RPA_MAX_SPLITS * Hq * stride;
  for (int r = 0; r < rows; r++) {
    float mm = -INFINITY;
    for (int s = 0; s < w->splits; s++) {
      const float ms = base[(int64_t)s * Hq * stride + r * stride];
      mm = ms > mm ? ms : mm;
    }
    float ll = 0.0f;
    float *o = t->o + (int64_t)r * ldv;
    memset(o, 0, sizeof(float) * (size_t)Dv);
    for (int s = 0; s < w->splits; s++) {
      const float *ps = base + (int64_t)s * Hq * stride + r * stride;
      if (ps[1] == 0.0f) continue;
      const float f = expf(ps[0] - mm);
      ll += ps[1] * f;
      for (int32_t d = 0; d < Dv; d++) o[d] += ps[2 + d] * f;
    }
    t->m[r] = mm;
    t->l[r] = ll;
  }
}

/* Parks this split's (m, l, o); the part that arrives last merges all of
   them, in split order, into t. Returns 1 if this item is that one. */
static int merge_splits(const job *jb, const rpa_work_item *w,
                        thread_scratch *t, int rows) {
  park_rows(jb, w->slot, w->split, 0, t->m, t->l, t->o, rows);
  if (!arrive(jb, w->slot)) return 0;
  merge_parked(jb, w, t, rows);
  return 1;
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

/* The sink joins the denominator; rows are normalised, scaled by v_scale
   and stored, with their log-sum-exp when asked. */
static void store_rows(const job *jb, const rpa_work_item *w,
                       thread_scratch *t, int32_t h0, int32_t h1) {
  const rpa_args *a = jb->a;
  const int32_t G = jb->info->group;
  const int R = (w->j1 - w->j0) * G;
  const int32_t q0 = a->cu_q_lens[w->seq];
  const int64_t os = (int64_t)rpa_dtype_size(a->out.dtype);
  for (int32_t h = h0; h < h1; h++)
    for (int32_t jj = w->j0; jj < w->j1; jj++)
      for (int32_t g = 0; g < G; g++) {
        const int r = (h - h0) * R + (jj - w->j0) * G + g;
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
        const int poisoned = row_poisoned(o, jb->info->head_dim_v, ll);
        if (poisoned)
          for (int32_t d = 0; d < jb->info->head_dim_v; d++) o[d] = NAN;
        jb->k->store_row((char *)a->out.data + e * os, a->out.dtype, o,
                         jb->info->head_dim_v,
                         poisoned ? 1.0f : alpha / ll * a->v_scale);
        if (a->lse)
          a->lse[(int64_t)(q0 + jj) * a->lse_token_stride +
                 (int64_t)n * a->lse_head_stride] =
              poisoned ? NAN : mm + logf(ll);
      }
}

/* ---- shared prefixes ----------------------------------------------------- */

/* A shared-prefix item: KV head h of group g's prefix keys, read once for
   the rows of members [j0, j1) (their G query rows each), walked as a
   prefill block whose rows all see every key (but a sliding window's
   edge); each member's rows are then parked as the last split of its slot,
   and a member whose other parts are all in is merged and stored here. */
static void run_cascade(const job *jb, const rpa_work_item *w,
                        thread_scratch *t) {
  const rpa_args *a = jb->a;
  const int32_t G = jb->info->group, h = w->head;
  const int32_t *mem = jb->cs.members;
  const int nm = w->j1 - w->j0, R = nm * G;
  int32_t pos_min = INT32_MAX, pos_max = 0;
  for (int mi = 0; mi < nm; mi++) {
    const int32_t seq = mem[w->j0 + mi], pos = a->kv_lens[seq] - 1;
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
  walk_block(jb, t, R, w->seq, h, lo, w->c1, pos_min, pos_max);
  for (int mi = 0; mi < nm; mi++) {
    const int32_t seq = mem[w->j0 + mi];
    const int32_t slot = jb->cs.slot[seq], splits = jb->cs.splits[seq];
    const int r0 = mi * G;
    park_rows(jb, slot, splits - 1, h * G, t->m + r0, t->l + r0,
              t->o + (int64_t)r0 * jb->ldv, G);
    if (!arrive(jb, slot)) continue;
    rpa_work_item wf = {0};
    wf.seq = seq;
    wf.head = -1;
    wf.j0 = 0;
    wf.j1 = 1;
    wf.slot = slot;
    wf.splits = splits;
    wf.group = -1;
    thread_scratch tf = *t;
    tf.m = t->fm;
    tf.l = t->fl;
    tf.o = t->fo;
    merge_parked(jb, &wf, &tf, a->num_q_heads);
    store_rows(jb, &wf, &tf, 0, a->num_kv_heads);
  }
}

static void run_item(void *arg, int index, int thread) {
  const job *jb = arg;
  const rpa_work_item *w = &jb->items[index];
  thread_scratch *t = &jb->ts[thread];
  if (w->group >= 0) {
    run_cascade(jb, w, t);
    return;
  }
  const int decode = w->head < 0;
  const int32_t h0 = decode ? 0 : w->head;
  const int32_t h1 = decode ? jb->a->num_kv_heads : w->head + 1;
  const int rows = (w->j1 - w->j0) * jb->info->group * (h1 - h0);
  write_item_tokens(jb, w);
  load_query_rows(jb, w, t, h0, h1);
  init_state(jb, t, rows);
  const int blocks = decode && jb->k->decode_block_rows > 0 &&
                     jb->info->group >= jb->k->decode_block_rows;
  if (blocks) {
    decode_walk_blocks(jb, w, t, h0, h1);
  } else if (decode) {
    jb->k->decode_begin(t->q, jb->ld, rows, jb->a->head_dim, jb->a->cache.dtype,
                        jb->bf16_ok);
    decode_walk(jb, w, t, h0, h1);
    jb->k->decode_end(t->o, jb->ldv, rows, jb->info->head_dim_v, jb->a->cache.dtype,
                      jb->bf16_ok);
  } else {
    prefill_walk(jb, w, t);
  }
  if (w->slot >= 0 && !merge_splits(jb, w, t, rows)) return;
  store_rows(jb, w, t, h0, h1);
}

/* ---- entry -------------------------------------------------------------- */

rpa_status rpa_engine_attention(rpa_context *ctx, const rpa_args *a,
                                const rpa_batch_info *info) {
  const rpa_kernels *k = ctx->backend->kernels;
  int64_t slots;
  const int64_t max_items = rpa_plan_bound(a, info, &slots);
  if (max_items > INT32_MAX)
    return rpa_fail(ctx, RPA_OVERFLOW,
                    "num_tokens: %lld work items, more than one call can plan",
                    (long long)max_items);
  const int threads = ctx->num_threads;
  job jb;
  jb.a = a;
  jb.info = info;
  jb.k = k;
  jb.ld = round_up(a->head_dim, 16);
  jb.ldv = round_up(info->head_dim_v, 16);
  jb.es = rpa_dtype_size(a->cache.dtype);
  const int bq = rpa_block_tokens(info->group);
  int rows_max = a->num_q_heads;
  if (info->max_q_len > 1) {
    const int pr = (info->max_q_len < bq ? info->max_q_len : bq) * info->group;
    if (pr > rows_max) rows_max = pr;
  }
  const int cascade = a->num_shared > 0;
  if (cascade && bq * info->group > rows_max) rows_max = bq * info->group;
  jb.ldr = round_up(rows_max, 16);
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
     prefetches only compete with it for fill buffers (measured on the Zen 5
     host, bf16 decode, combined layout: 56% of the read bandwidth with them,
     66% without). */
  jb.prefetch_rows = ctx->prefetch_rows;
  {
    const int64_t hs = a->cache.k_head_stride, ss = a->cache.k_slot_stride;
    jb.hw_streams = !jb.prefetch_rows &&
                    (int64_t)a->head_dim * (int64_t)jb.es >= 256 && hs < ss &&
                    a->num_kv_heads * hs * (int64_t)jb.es >= 2048;
  }

  /* Scratch: plan + split partials + per-thread rows and workspace, one
     block. */
  const size_t rows_floats = (size_t)rows_max * (jb.ld + jb.ldv + 3) +
                             (size_t)info->group * (jb.ld + jb.ldv + 2) +
                             (cascade ? (size_t)a->num_q_heads * (jb.ldv + 2) : 0);
  const size_t per_thread =
      align64(sizeof(float) * rows_floats) +
      align64(sizeof(float) * rpa_kernel_staging_floats(jb.ld, jb.ldr)) +
      align64(sizeof(float) * rpa_kernel_workspace_floats(jb.ld, jb.ldv, jb.ldr));
  const size_t plan_bytes = align64(sizeof(rpa_work_item) * (size_t)max_items);
  const size_t part_bytes = align64(sizeof(float) * (size_t)slots * RPA_MAX_SPLITS *
                                    a->num_q_heads * (2 + jb.ldv));
  const size_t pend_bytes = align64(sizeof(_Atomic int) * (size_t)(slots + 1));
  const size_t ts_bytes = align64(sizeof(thread_scratch) * (size_t)threads);
  /* shared prefixes: members [S], group starts [K + 1], slot [S],
     splits [S] */
  const int64_t S = info->num_seqs, K = cascade ? a->num_shared : 0;
  const size_t cs_ints = cascade ? (size_t)(3 * S + K + 1) : 0;
  const size_t cs_bytes = align64(sizeof(int32_t) * cs_ints);
  const size_t total = plan_bytes + part_bytes + pend_bytes + ts_bytes +
                       cs_bytes + per_thread * (size_t)threads;
  char *mem = rpa_scratch(ctx, total);
  if (!mem) return rpa_fail(ctx, RPA_OUT_OF_MEMORY, "scratch: %zu bytes", total);
  jb.items = (rpa_work_item *)mem;
  jb.partials = (float *)(mem + plan_bytes);
  jb.pending = (_Atomic int *)(mem + plan_bytes + part_bytes);
  jb.ts = (thread_scratch *)(mem + plan_bytes + part_bytes + pend_bytes);
  char *tmem = mem + plan_bytes + part_bytes + pend_bytes + ts_bytes + cs_bytes;
  if (cascade) {
    int32_t *ci = (int32_t *)(mem + plan_bytes + part_bytes + pend_bytes + ts_bytes);
    jb.cs.members = ci;
    jb.cs.group_start = ci + S;
    jb.cs.slot = ci + S + K + 1;
    jb.cs.splits = jb.cs.slot + S;
    rpa_plan_groups(a, info, &jb.cs);
  }
  for (int i = 0; i < threads; i++) {
    char *p = tmem + per_thread * (size_t)i;
    thread_scratch *t = &jb.ts[i];
    float *f = (float *)p;
    t->q = f;
    f += (size_t)rows_max * jb.ld;
    t->o = f;
    f += (size_t)rows_max * jb.ldv;
    t->m = f;
    f += rows_max;
    t->l = f;
    f += rows_max;
    t->pos = (int32_t *)f;
    f += rows_max;
    t->tq = f;
    f += (size_t)info->group * jb.ld;
    t->to = f;
    f += (size_t)info->group * jb.ldv;
    t->tm = f;
    f += info->group;
    t->tl = f;
    f += info->group;
    t->fo = t->fm = t->fl = NULL;
    if (cascade) {
      t->fo = f;
      f += (size_t)a->num_q_heads * jb.ldv;
      t->fm = f;
      f += a->num_q_heads;
      t->fl = f;
    }
    p += align64(sizeof(float) * rows_floats);
    t->qs = (float *)p;
    p += align64(sizeof(float) * rpa_kernel_staging_floats(jb.ld, jb.ldr));
    t->work = (float *)p;
  }

  const int n = rpa_plan(a, info, k->decode_keys, cascade ? &jb.cs : NULL,
                         jb.items, jb.pending);
  int64_t cost = 0;
  for (int i = 0; i < n; i++) cost += jb.items[i].cost;
  /* Tiny calls stay on the caller's thread: waking workers costs more. */
  const int use = cost < 20000 ? 1 : threads;
  rpa_pool_run(ctx->pool, use, n, run_item, &jb);
  return RPA_OK;
}
