/* How an item walks its keys (engine.h): in steps cut straight from the
   pages (any page size; a step may span pages), locating the next step's
   rows while the current one computes and prefetching them, through the
   kernel set's rows step (decode, tree masks) or block step (prefill,
   shared prefixes, large decode groups). New tokens' K/V are read straight
   from the k/v inputs, never back from the cache. */
#include <math.h>
#include <string.h>

#include "engine.h"
#include "state.h"

enum {
  MAXK = RPA_MAX_STEP_KEYS,
  PREFETCH_HEADS = 8, /* rows walk: prefetch distance, in head steps */
};

/* Where each key of a step comes from: its row of KV head 0 and the
   stride from head to head (elements). */
typedef struct key_rows {
  int n;
  const char *kbase[MAXK], *vbase[MAXK];
  int64_t khs[MAXK], vhs[MAXK];
} key_rows;

/* ---- the cache write and the key rows ----------------------------------- */

void rpa_write_new_tokens(const job *jb, int32_t seq, int32_t j0, int32_t j1,
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

/* The fields of a rows step that stay the same over a walk. */
static rpa_rows_args rows_args(const job *jb, thread_scratch *t, int rows) {
  const rpa_args *a = jb->a;
  rpa_rows_args s;
  memset(&s, 0, sizeof s);
  s.ld = jb->ld;
  s.rows = rows;
  s.kmul = jb->kmul;
  s.cap = a->soft_cap;
  s.D = a->head_dim;
  s.Dv = jb->info->head_dim_v;
  s.dtype = a->cache.dtype;
  s.ldo = jb->ldv;
  s.work = t->work;
  s.next_whole = jb->prefetch_rows;
  s.bf16_ok = jb->bf16_ok;
  return s;
}

/* ---- rows: a decode token's G rows per KV head, every key visible ------- */

void rpa_walk_rows(const job *jb, thread_scratch *t, int32_t seq, int32_t h0,
                   int32_t h1, int64_t lo, int64_t hi) {
  const rpa_kernels *k = jb->k;
  const int R = jb->info->group, step = k->rows_keys;
  key_rows cur, next;
  rpa_rows_args s = rows_args(jb, t, R);
  const void *krow[MAXK], *vrow[MAXK], *kn[MAXK], *vn[MAXK];
  s.krows = krow;
  s.vrows = vrow;
  s.knext = kn;
  s.vnext = vn;
  locate_step(jb, &next, seq, lo, step, hi);
  for (int64_t c = lo; c < hi; c += step) {
    cur = next; /* the pipeline: locate the next step's rows */
    locate_step(jb, &next, seq, c + step, step, hi);
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
      k->rows_step(&s);
    }
  }
}

/* ---- block: rows along a key walk, under the causal / window mask ------- */

void rpa_walk_block(const job *jb, thread_scratch *t, int R, int32_t seq,
                    int32_t h, int64_t lo, int64_t hi, int64_t pos_first,
                    int64_t pos_last) {
  const rpa_args *a = jb->a;
  const rpa_kernels *k = jb->k;
  rpa_block b;
  b.q = t->q;
  b.ld = jb->ld;
  b.qs = t->qs;
  b.ldr = jb->ldr;
  b.rows = R;
  b.pos = t->pos;
  b.D = a->head_dim;
  b.Dv = jb->info->head_dim_v;
  b.dtype = a->cache.dtype;
  b.kmul = jb->kmul;
  b.cap = a->soft_cap;
  b.causal = a->causal;
  b.window = a->sliding_window;
  b.bf16_ok = jb->bf16_ok;
  k->block_begin(&b);
  const void *krow[MAXK], *vrow[MAXK];
  rpa_block_args s;
  s.block = &b;
  s.krows = krow;
  s.vrows = vrow;
  s.m = t->m;
  s.l = t->l;
  s.o = t->o;
  s.ldo = jb->ldv;
  s.work = t->work;
  const int step = k->block_keys;
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
    k->block_step(&s);
  }
}

/* ---- tree: each token's marked new keys, under a custom mask ------------ */

/* Per token, the rows step over the gathered rows of the keys its mask row
   marks (G rows: what rows steps are built for), into a state of its own,
   then folded into the token's rows of the block like a decode split. Keys
   in increasing order, so the result depends on the sequence alone. */
void rpa_walk_tree(const job *jb, thread_scratch *t, int32_t seq, int32_t h,
                   int32_t j0, int32_t j1) {
  const rpa_args *a = jb->a;
  const rpa_kernels *k = jb->k;
  const int32_t G = jb->info->group, kv_len = a->kv_lens[seq];
  const int32_t Dv = jb->info->head_dim_v;
  const int32_t q_len = a->cu_q_lens[seq + 1] - a->cu_q_lens[seq];
  const int64_t prefix = (int64_t)kv_len - q_len;
  const int step = k->rows_keys, ld = jb->ld, ldv = jb->ldv;
  const void *krow[MAXK], *vrow[MAXK];
  key_rows kr, one;
  rpa_rows_args s = rows_args(jb, t, G);
  s.krows = krow;
  s.vrows = vrow;
  s.next_whole = 0;
  s.q = t->tq;
  s.m = t->tm;
  s.l = t->tl;
  s.o = t->to;
  for (int32_t jj = j0; jj < j1; jj++) {
    const int r0 = (jj - j0) * G;
    memcpy(t->tq, t->q + (int64_t)r0 * ld, sizeof(float) * (size_t)G * ld);
    k->rows_begin(t->tq, ld, G, a->head_dim, a->cache.dtype, jb->bf16_ok);
    for (int g = 0; g < G; g++) {
      t->tm[g] = -INFINITY;
      t->tl[g] = 0.0f;
    }
    memset(t->to, 0, sizeof(float) * (size_t)G * ldv);
    int64_t rlo, rhi;
    rpa_visible(a, prefix + jj, kv_len, &rlo, &rhi);
    kr.n = 0;
    for (int32_t kk = 0; kk <= jj; kk++) {
      if (prefix + kk >= rlo && rpa_mask_bit(a, seq, q_len, jj, kk)) {
        locate_keys(jb, &one, seq, prefix + kk, 1);
        kr.kbase[kr.n] = one.kbase[0];
        kr.vbase[kr.n] = one.vbase[0];
        kr.khs[kr.n] = one.khs[0];
        kr.vhs[kr.n] = one.vhs[0];
        kr.n++;
      }
      if (kr.n > 0 && (kr.n == step || kk == jj)) {
        head_rows(jb, &kr, h, krow, vrow);
        s.n = kr.n;
        k->rows_step(&s);
        kr.n = 0;
      }
    }
    k->rows_end(t->to, ldv, G, Dv, a->cache.dtype, jb->bf16_ok);
    for (int g = 0; g < G; g++)
      rpa_fold_state(&t->m[r0 + g], &t->l[r0 + g], t->o + (int64_t)(r0 + g) * ldv,
                     t->tm[g], t->tl[g], t->to + (int64_t)g * ldv, Dv);
  }
}
