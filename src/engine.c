/* The tiled engine behind every fast kernel set: plan -> fused pipeline.

   Plan (distribution-aware). Each sequence is classified by its own q_len:
   - decode (q_len 1): one work item per KV split; an item computes all
     query heads of the token, so each K/V byte is loaded once for its whole
     GQA group (and the whole slot row of all heads is read contiguously).
     The visible keys are split into at most MAX_SPLITS chunks of at least
     SPLIT_MIN keys; partial (max, sum, acc) are merged in split order by
     whichever item finishes last, so the result depends on the sequence
     alone, never on the batch or the thread count.
   - prefill / mixed chunk (q_len > 1): one item per (KV head, block of
     query tokens); the block's rows are the G query heads of each token.
   Items are sorted by estimated cost, longest first, and handed out by an
   atomic counter: one long prefill beside many decodes keeps every thread
   busy.

   Pipeline. An item walks its keys in tiles of 16 cut straight from the
   pages (any page size; a tile may span pages), prefetching the next tile's
   rows while the current one computes. New tokens' K/V are copied into
   their cache slots at the start of the item and read straight from the
   k/v inputs, never back from the cache. Causal tiles above the diagonal
   and tiles left of a sliding window are never visited. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels/tile.h"
#include "threadpool.h"

enum {
  MAX_SPLITS = 4,      /* decode KV splits per sequence */
  SPLIT_MIN = 512,     /* keys per split at least */
  ROWS_TARGET = 128,   /* query rows (tokens x group) per prefill item */
  TK = RPA_TILE_KEYS,
  TK_ROWWISE = 32,     /* keys per prefill_step and fused decode step */
  PREFETCH_HEADS = 8,  /* decode: prefetch distance, in head steps */
};

typedef struct work_item {
  int32_t seq;
  int32_t head;   /* KV head, or -1: all heads (decode) */
  int32_t j0, j1; /* query tokens [j0, j1) of the sequence */
  int32_t c0, c1; /* keys [c0, c1) (decode split; prefill: whole range) */
  int32_t split;  /* split index; slot of the partials */
  int32_t slot;   /* decode sequence slot for split partials, -1: none */
  int32_t splits; /* number of splits of this sequence */
  int64_t cost;
} work_item;

typedef struct thread_scratch {
  float *q, *s, *p, *o, *m, *l, *kt, *v;
  float *qt, *st; /* prefill_step: q transposed [ld][ldr], S^T [16][ldr] */
  int32_t *pos;   /* query position of each row */
  const char *kbase[TK_ROWWISE], *vbase[TK_ROWWISE];
  int64_t khs[TK_ROWWISE], vhs[TK_ROWWISE]; /* head stride per key's source */
} thread_scratch;

typedef struct job {
  const rpa_args *a;
  const rpa_batch_info *info;
  const rpa_tile_ops *ops;
  work_item *items;
  thread_scratch *ts;
  float *partials;          /* [slots][MAX_SPLITS][Hq][2 + ldv] */
  _Atomic int *pending;     /* [slots] splits not yet finished */
  int ld, ldv, ldr, rows_max;
  float kmul;               /* logit scale, folded into the K tile */
  int q_bf16_exact;         /* the query rows are bf16 values exactly */
  int bf16_dot;             /* prefill bf16 x bf16 on vdpbf16ps */
  int hw_streams;           /* decode leaves K/V prefetch to the hardware */
  size_t es;                /* cache element size */
} job;

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* ---- planning ----------------------------------------------------------- */

/* Visible keys of query position pos: [lo, hi). */
static void visible(const rpa_args *a, int64_t pos, int32_t kv_len, int64_t *lo,
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
  int64_t n = keys / SPLIT_MIN;
  if (n < 1) n = 1;
  if (n > MAX_SPLITS) n = MAX_SPLITS;
  return (int)n;
}

static int block_tokens(int group) {
  int b = ROWS_TARGET / group;
  return b < 1 ? 1 : b;
}

/* Upper bound of the item count, for the scratch size. */
static int64_t count_items(const rpa_args *a, const rpa_batch_info *info,
                           int64_t *slots) {
  int64_t n = 0;
  *slots = 0;
  const int bq = block_tokens(info->group);
  for (int32_t i = 0; i < info->num_seqs; i++) {
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    if (q_len == 1) {
      n += MAX_SPLITS;
      *slots += 1;
    } else {
      n += (int64_t)a->num_kv_heads * ((q_len + bq - 1) / bq);
    }
  }
  return n;
}

static int cmp_cost(const void *x, const void *y) {
  const work_item *a = x, *b = y;
  if (a->cost != b->cost) return a->cost > b->cost ? -1 : 1;
  if (a->seq != b->seq) return a->seq < b->seq ? -1 : 1;
  if (a->head != b->head) return a->head < b->head ? -1 : 1;
  if (a->j0 != b->j0) return a->j0 < b->j0 ? -1 : 1;
  return a->split < b->split ? -1 : (a->split > b->split);
}

static int plan(const rpa_args *a, const rpa_batch_info *info, work_item *items,
                _Atomic int *pending) {
  int n = 0, slot = 0;
  const int bq = block_tokens(info->group);
  const int64_t kv_bytes =
      (int64_t)a->num_kv_heads * (a->head_dim + info->head_dim_v) *
      (int64_t)rpa_dtype_size(a->cache.dtype);
  for (int32_t i = 0; i < info->num_seqs; i++) {
    const int32_t q_len = a->cu_q_lens[i + 1] - a->cu_q_lens[i];
    const int32_t kv_len = a->kv_lens[i];
    if (q_len == 1) {
      int64_t lo, hi;
      visible(a, kv_len - 1, kv_len, &lo, &hi);
      const int splits = decode_splits(hi - lo);
      const int64_t chunk = round_up((int)((hi - lo + splits - 1) / splits), TK);
      int made = 0;
      for (int s = 0; s < splits; s++) {
        const int64_t c0 = lo + s * chunk;
        if (c0 >= hi) break;
        const int64_t c1 = c0 + chunk < hi ? c0 + chunk : hi;
        work_item *w = &items[n++];
        w->seq = i;
        w->head = -1;
        w->j0 = 0;
        w->j1 = 1;
        w->c0 = (int32_t)c0;
        w->c1 = (int32_t)c1;
        w->split = s;
        w->cost = (c1 - c0) * kv_bytes / 16; /* ~16 B/ns per thread */
        made++;
      }
      for (int k = n - made; k < n; k++) {
        items[k].slot = made > 1 ? slot : -1;
        items[k].splits = made;
      }
      if (made > 1) atomic_init(&pending[slot++], made);
    } else {
      const int64_t prefix = (int64_t)kv_len - q_len;
      for (int32_t j0 = 0; j0 < q_len; j0 += bq) {
        const int32_t j1 = j0 + bq < q_len ? j0 + bq : q_len;
        int64_t lo0, hi0, lo1, hi1;
        visible(a, prefix + j0, kv_len, &lo0, &hi0);
        visible(a, prefix + j1 - 1, kv_len, &lo1, &hi1);
        const int64_t keys = (hi1 - lo0);
        for (int32_t h = 0; h < a->num_kv_heads; h++) {
          work_item *w = &items[n++];
          w->seq = i;
          w->head = h;
          w->j0 = j0;
          w->j1 = j1;
          w->c0 = (int32_t)lo0;
          w->c1 = (int32_t)hi1;
          w->split = 0;
          w->slot = -1;
          w->splits = 1;
          /* ~100 flop/ns per thread */
          w->cost = 4 * keys * (j1 - j0) * info->group *
                    (a->head_dim + info->head_dim_v) / 2 / 100;
        }
      }
    }
  }
  qsort(items, (size_t)n, sizeof *items, cmp_cost);
  return n;
}

/* ---- the pipeline ------------------------------------------------------- */

/* Copies the new tokens [j0, j1) of sequence seq, KV heads [h0, h1), into
   their cache slots. */
static void write_new_tokens(const job *jb, int32_t seq, int32_t j0, int32_t j1,
                             int32_t h0, int32_t h1) {
  const rpa_args *a = jb->a;
  const rpa_kv_cache *c = &a->cache;
  const int32_t q0 = a->cu_q_lens[seq], q_len = a->cu_q_lens[seq + 1] - q0;
  const int64_t prefix = (int64_t)a->kv_lens[seq] - q_len;
  const int32_t *pages = a->page_indices + (int64_t)seq * a->pages_per_seq;
  const size_t es = jb->es;
  for (int32_t j = j0; j < j1; j++) {
    const int64_t pos = prefix + j, t = q0 + j;
    const int64_t page = pages[pos / c->page_size], slot = pos % c->page_size;
    for (int32_t h = h0; h < h1; h++) {
      memcpy((char *)c->k + (page * c->k_page_stride + slot * c->k_slot_stride +
                             h * c->k_head_stride) * es,
             (const char *)a->k.data +
                 (t * a->k.token_stride + h * a->k.head_stride) * es,
             (size_t)a->head_dim * es);
      if (jb->info->latent) continue;
      memcpy((char *)c->v + (page * c->v_page_stride + slot * c->v_slot_stride +
                             h * c->v_head_stride) * es,
             (const char *)a->v.data +
                 (t * a->v.token_stride + h * a->v.head_stride) * es,
             (size_t)jb->info->head_dim_v * es);
    }
  }
}

/* Where keys [c, c + n) of sequence seq come from: the cache, or (new tokens
   with update on) the k/v inputs. Fills per-key base pointers (head 0) and
   head strides. */
static void locate_keys(const job *jb, thread_scratch *t, int32_t seq,
                        int64_t c, int n) {
  const rpa_args *a = jb->a;
  const rpa_kv_cache *kc = &a->cache;
  const int32_t q0 = a->cu_q_lens[seq], q_len = a->cu_q_lens[seq + 1] - q0;
  const int64_t prefix = (int64_t)a->kv_lens[seq] - q_len;
  const int32_t *pages = a->page_indices + (int64_t)seq * a->pages_per_seq;
  const size_t es = jb->es;
  const char *kc_base = kc->k;
  const char *vc_base = jb->info->latent ? kc->k : kc->v;
  const int64_t vps = jb->info->latent ? kc->k_page_stride : kc->v_page_stride;
  const int64_t vss = jb->info->latent ? kc->k_slot_stride : kc->v_slot_stride;
  const int64_t vhs = jb->info->latent ? kc->k_head_stride : kc->v_head_stride;
  for (int i = 0; i < n; i++) {
    const int64_t key = c + i;
    if (a->update_kv_cache && key >= prefix) {
      const int64_t tok = q0 + key - prefix;
      t->kbase[i] = (const char *)a->k.data + tok * a->k.token_stride * (int64_t)es;
      t->khs[i] = a->k.head_stride;
      if (jb->info->latent) {
        t->vbase[i] = t->kbase[i];
        t->vhs[i] = t->khs[i];
      } else {
        t->vbase[i] = (const char *)a->v.data + tok * a->v.token_stride * (int64_t)es;
        t->vhs[i] = a->v.head_stride;
      }
    } else {
      const int64_t page = pages[key / kc->page_size], slot = key % kc->page_size;
      t->kbase[i] = kc_base + (page * kc->k_page_stride + slot * kc->k_slot_stride) * (int64_t)es;
      t->khs[i] = kc->k_head_stride;
      t->vbase[i] = vc_base + (page * vps + slot * vss) * (int64_t)es;
      t->vhs[i] = vhs;
    }
  }
}

/* Prefetches heads [h0, h1) of the keys located in t (the next tile). */
static void prefetch_keys(const job *jb, const thread_scratch *t, int n,
                          int32_t h0, int32_t h1) {
  const int64_t kb = (int64_t)jb->a->head_dim * (int64_t)jb->es;
  const int64_t vb = jb->info->latent ? 0 : (int64_t)jb->info->head_dim_v * (int64_t)jb->es;
  for (int i = 0; i < n; i++)
    for (int32_t h = h0; h < h1; h++) {
      const char *k = t->kbase[i] + h * t->khs[i] * (int64_t)jb->es;
      const char *v = t->vbase[i] + h * t->vhs[i] * (int64_t)jb->es;
      for (int64_t b = 0; b < kb; b += 64) __builtin_prefetch(k + b, 0, 2);
      for (int64_t b = 0; b < vb; b += 64) __builtin_prefetch(v + b, 0, 2);
    }
}

static void run_item(void *arg, int index, int thread) {
  const job *jb = arg;
  const work_item *w = &jb->items[index];
  const rpa_args *a = jb->a;
  const rpa_batch_info *info = jb->info;
  const rpa_tile_ops *ops = jb->ops;
  thread_scratch *t = &jb->ts[thread];
  const int32_t G = info->group, D = a->head_dim, Dv = info->head_dim_v;
  const int ld = jb->ld, ldv = jb->ldv;
  const int32_t seq = w->seq;
  const int32_t q0 = a->cu_q_lens[seq], q_len = a->cu_q_lens[seq + 1] - q0;
  const int32_t kv_len = a->kv_lens[seq];
  const int64_t prefix = (int64_t)kv_len - q_len;
  const int32_t h0 = w->head < 0 ? 0 : w->head;
  const int32_t h1 = w->head < 0 ? a->num_kv_heads : w->head + 1;
  const int R = (w->j1 - w->j0) * G; /* rows per KV head */
  const int rows = R * (h1 - h0);
  const size_t es = jb->es;

  /* The fused cache update: this item's new tokens, before any compute. */
  if (a->update_kv_cache) {
    if (w->head < 0) {
      if (w->c1 == kv_len) /* the last split holds the new token */
        write_new_tokens(jb, seq, w->j0, w->j1, h0, h1);
    } else {
      write_new_tokens(jb, seq, w->j0, w->j1, h0, h1);
    }
  }

  /* Query rows, widened once: row (h - h0) * R + jj * G + g. */
  for (int32_t h = h0; h < h1; h++)
    for (int32_t jj = w->j0; jj < w->j1; jj++)
      for (int32_t g = 0; g < G; g++) {
        float *dst = t->q + (int64_t)((h - h0) * R + (jj - w->j0) * G + g) * ld;
        const int64_t e = (int64_t)(q0 + jj) * a->q.token_stride +
                          (int64_t)(h * G + g) * a->q.head_stride;
        ops->load_row(dst, (const char *)a->q.data + e * (int64_t)rpa_dtype_size(a->q.dtype),
                      a->q.dtype, D);
        if (a->q_scale > 0.0f)
          for (int32_t d = 0; d < D; d++)
            dst[d] = rpa_quantize_q(dst[d], a->q_scale, a->cache.dtype);
        for (int d = D; d < ld; d++) dst[d] = 0.0f; /* kernels read whole vectors */
      }
  /* Decode items take the fused step when the ISA has one: every key of
     the item's range is visible to its single token, so no mask. */
  const int fused = w->head < 0 && ops->decode_step != NULL;
  const int rowwise = w->head >= 0 && ops->prefill_step != NULL;
  int pairs = 0; /* prefill on vdpbf16ps */
  if (fused) ops->decode_order(t->q, ld, rows, D, a->cache.dtype, 0);
  if (rowwise) {
    pairs = jb->bf16_dot && jb->q_bf16_exact && a->cache.dtype == RPA_BF16 && D % 2 == 0;
    ops->prefill_begin(t->qt, jb->ldr, t->q, ld, rows, D, jb->kmul, pairs);
    for (int r = 0; r < rows; r++) t->pos[r] = (int32_t)(prefix + w->j0 + r / G);
  }
  for (int r = 0; r < rows; r++) {
    t->m[r] = -INFINITY;
    t->l[r] = 0.0f;
  }
  memset(t->o, 0, sizeof(float) * (size_t)rows * ldv);

  /* Keys this item visits: the union of its rows' visible ranges. */
  int64_t lo = w->c0, hi = w->c1;
  const int64_t pos_first = prefix + w->j0, pos_last = prefix + w->j1 - 1;
  const int window = a->causal && a->sliding_window > 0;

  const void *krow[TK_ROWWISE], *vrow[TK_ROWWISE];
  int next_n = 0; /* keys of the next tile, located in t */
  const int step = rowwise || fused ? TK_ROWWISE : TK; /* keys per tile */
  if (lo < hi) locate_keys(jb, t, seq, lo, (int)(hi - lo < step ? hi - lo : step));
  for (int64_t c = lo; c < hi; c += step) {
    const int n = (int)(hi - c < step ? hi - c : step);
    const char *kb[TK_ROWWISE], *vb[TK_ROWWISE];
    int64_t khs[TK_ROWWISE], vhs[TK_ROWWISE];
    memcpy(kb, t->kbase, sizeof kb);
    memcpy(vb, t->vbase, sizeof vb);
    memcpy(khs, t->khs, sizeof khs);
    memcpy(vhs, t->vhs, sizeof vhs);
    if (c + step < hi) { /* the pipeline: locate and prefetch the next tile */
      const int nn = (int)(hi - c - step < step ? hi - c - step : step);
      locate_keys(jb, t, seq, c + step, nn);
      next_n = nn;
    } else {
      next_n = 0;
    }
    /* Does every row see every key of this tile? */
    int full = n == step;
    if (a->causal) {
      if (c + n - 1 > pos_first) full = 0;
      if (window && pos_last - c >= a->sliding_window) full = 0;
    }
    for (int32_t h = h0; h < h1; h++) {
      float *q = t->q + (int64_t)(h - h0) * R * ld;
      float *o = t->o + (int64_t)(h - h0) * R * ldv;
      float *m = t->m + (h - h0) * R, *l = t->l + (h - h0) * R;
      for (int i = 0; i < n; i++) {
        krow[i] = kb[i] + h * khs[i] * (int64_t)es;
        vrow[i] = vb[i] + h * vhs[i] * (int64_t)es;
      }
      /* The pipeline: this head's rows of the next tile are fetched while
         this head's current tile computes. */
      if (rowwise) {
        prefetch_keys(jb, t, next_n, h, h + 1);
        ops->prefill_step(t->qt, pairs, jb->kmul, jb->ldr, R, t->pos, c, n,
                          full, a->causal,
                          a->sliding_window, a->soft_cap, krow, vrow, D, Dv,
                          a->cache.dtype, t->kt, ld, t->v, t->st, m, l, o, ldv);
        continue;
      }
      if (fused) {
        /* Prefetch what comes next: the next head's rows of this tile, or
           after the last head, the first head's rows of the next tile. */
        const void *kn[TK_ROWWISE], *vn[TK_ROWWISE];
        int nn = n;
        const int32_t ph = h + PREFETCH_HEADS; /* head to prefetch */
        if (jb->hw_streams) {
          nn = 0;
        } else if (ph < h1) {
          for (int i = 0; i < n; i++) {
            kn[i] = kb[i] + ph * khs[i] * (int64_t)es;
            vn[i] = vb[i] + ph * vhs[i] * (int64_t)es;
          }
        } else {
          const int32_t nh = h0 + (ph - h1) % (h1 - h0);
          nn = next_n;
          for (int i = 0; i < next_n; i++) {
            kn[i] = t->kbase[i] + nh * t->khs[i] * (int64_t)es;
            vn[i] = t->vbase[i] + nh * t->vhs[i] * (int64_t)es;
          }
        }
        ops->decode_step(q, ld, R, jb->kmul, krow, vrow, n, D, Dv, a->cache.dtype,
                         a->soft_cap, m, l, o, ldv, kn, vn, nn);
        continue;
      }
      prefetch_keys(jb, t, next_n, h, h + 1);
      ops->load_kt(t->kt, krow, n, D, a->cache.dtype, jb->kmul);
      ops->qk(t->s, q, ld, t->kt, R, D);
      if (a->soft_cap > 0.0f) {
        const float cap = a->soft_cap, inv = 1.0f / a->soft_cap;
        for (int i = 0; i < R * TK; i++) t->s[i] = cap * tanhf(t->s[i] * inv);
      }
      if (!full)
        for (int r = 0; r < R; r++) {
          const int64_t pos = prefix + w->j0 + r / G;
          float *s = t->s + r * TK;
          for (int i = 0; i < TK; i++) {
            const int64_t key = c + i;
            int vis = i < n;
            if (a->causal) {
              if (key > pos) vis = 0;
              if (window && pos - key >= a->sliding_window) vis = 0;
            }
            if (!vis) s[i] = -INFINITY;
          }
        }
      /* Online softmax, rescaling a row only when its maximum rises. */
      for (int r = 0; r < R; r++) {
        float *s = t->s + r * TK, *p = t->p + r * TK;
        float mt = s[0];
        for (int i = 1; i < TK; i++) mt = s[i] > mt ? s[i] : mt;
        if (mt == -INFINITY) {
          memset(p, 0, sizeof(float) * TK);
          continue;
        }
        if (mt > m[r]) {
          if (l[r] != 0.0f) {
            const float alpha = expf(m[r] - mt);
            l[r] *= alpha;
            ops->scale(o + (int64_t)r * ldv, Dv, alpha);
          }
          m[r] = mt;
        }
        l[r] += ops->exp_row(p, s, m[r]);
      }
      ops->load_v(t->v, ldv, vrow, n, Dv, a->cache.dtype, 1.0f);
      ops->pv(o, ldv, t->p, t->v, ldv, R, Dv);
    }
  }
  if (fused) ops->decode_order(t->o, ldv, rows, Dv, a->cache.dtype, 1);

  /* Split partials: park them; the last split to finish merges in order. */
  const int32_t Hq = a->num_q_heads;
  if (w->slot >= 0) {
    const int64_t stride = 2 + ldv;
    float *part = jb->partials + ((int64_t)w->slot * MAX_SPLITS + w->split) * Hq * stride;
    for (int r = 0; r < rows; r++) {
      part[r * stride] = t->m[r];
      part[r * stride + 1] = t->l[r];
      memcpy(part + r * stride + 2, t->o + (int64_t)r * ldv, sizeof(float) * (size_t)Dv);
    }
    if (atomic_fetch_sub_explicit(&jb->pending[w->slot], 1, memory_order_acq_rel) != 1)
      return;
    /* Last one: merge splits 0, 1, ... into t->m, t->l, t->o. */
    const float *base = jb->partials + (int64_t)w->slot * MAX_SPLITS * Hq * stride;
    const int splits = w->splits;
    for (int r = 0; r < rows; r++) {
      float mm = -INFINITY;
      for (int s = 0; s < splits; s++) {
        const float ms = base[(int64_t)s * Hq * stride + r * stride];
        mm = ms > mm ? ms : mm;
      }
      float ll = 0.0f;
      float *o = t->o + (int64_t)r * ldv;
      memset(o, 0, sizeof(float) * (size_t)Dv);
      for (int s = 0; s < splits; s++) {
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

  /* Finalize: the sink joins the denominator; normalize; store. */
  const size_t os = rpa_dtype_size(a->out.dtype);
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
        ops->store_row((char *)a->out.data + e * (int64_t)os, a->out.dtype,
                       t->o + (int64_t)r * ldv, Dv, alpha / ll * a->v_scale);
        if (a->lse)
          a->lse[(int64_t)(q0 + jj) * a->lse_token_stride +
                 (int64_t)n * a->lse_head_stride] = mm + logf(ll);
      }
}

/* ---- entry -------------------------------------------------------------- */

rpa_status rpa_engine_attention(rpa_context *ctx, const rpa_args *a,
                                const rpa_batch_info *info) {
  const rpa_tile_ops *ops = ctx->kernels->ops;
  int64_t slots;
  const int64_t max_items = count_items(a, info, &slots);
  if (max_items > INT32_MAX)
    return rpa_fail(ctx, RPA_OVERFLOW,
                    "num_tokens: %lld work items, more than one call can plan",
                    (long long)max_items);
  const int threads = ctx->num_threads;
  job jb;
  jb.a = a;
  jb.info = info;
  jb.ops = ops;
  jb.ld = round_up(a->head_dim, 16);
  jb.ldv = round_up(info->head_dim_v, 16);
  jb.es = rpa_dtype_size(a->cache.dtype);
  const int bq = block_tokens(info->group);
  int rows_max = a->num_q_heads;
  if (info->max_q_len > 1) {
    const int pr = (info->max_q_len < bq ? info->max_q_len : bq) * info->group;
    if (pr > rows_max) rows_max = pr;
  }
  jb.rows_max = rows_max;
  const float qs = a->q_scale > 0.0f ? a->q_scale : 1.0f;
  jb.kmul = a->sm_scale * a->k_scale * qs;
  jb.bf16_dot = ctx->bf16_dot;
  /* A slot whose heads' K rows lie side by side over 2 KiB or more, in rows
     of 256 bytes or more, is read as long runs the hardware prefetcher
     streams; software prefetches of the next tile then only compete with it
     for fill buffers (measured on bf16 decode, combined layout: 56% of the
     read bandwidth with them, 66% without). Shorter rows (fp8, small heads)
     and scattered heads (HND, one KV head) keep them. */
  {
    const int64_t hs = a->cache.k_head_stride, ss = a->cache.k_slot_stride;
    jb.hw_streams = (int64_t)a->head_dim * (int64_t)jb.es >= 256 && hs < ss &&
                    a->num_kv_heads * hs * (int64_t)jb.es >= 2048;
  }
  jb.q_bf16_exact = a->q_scale > 0.0f
                        ? a->cache.dtype != RPA_F32 && a->cache.dtype != RPA_F16
                        : a->q.dtype == RPA_BF16;

  /* Scratch: plan + split partials + per-thread tiles, one block. */
  jb.ldr = round_up(rows_max, 16);
  const size_t per_thread = align64(
      sizeof(float) * ((size_t)rows_max * (jb.ld + 2 * TK + jb.ldv + 3) +
                       (size_t)jb.ld * TK_ROWWISE + (size_t)TK_ROWWISE * jb.ldv +
                       (size_t)jb.ld * jb.ldr + (size_t)TK_ROWWISE * jb.ldr) +
      64 * 5);
  const size_t plan_bytes = align64(sizeof(work_item) * (size_t)max_items);
  const size_t part_bytes = align64(sizeof(float) * (size_t)slots * MAX_SPLITS *
                                    a->num_q_heads * (2 + jb.ldv));
  const size_t pend_bytes = align64(sizeof(_Atomic int) * (size_t)(slots + 1));
  const size_t ts_bytes = align64(sizeof(thread_scratch) * (size_t)threads);
  const size_t total = plan_bytes + part_bytes + pend_bytes + ts_bytes +
                       per_thread * (size_t)threads;
  char *mem = rpa_scratch(ctx, total);
  if (!mem) return rpa_fail(ctx, RPA_OUT_OF_MEMORY, "scratch: %zu bytes", total);
  jb.items = (work_item *)mem;
  jb.partials = (float *)(mem + plan_bytes);
  jb.pending = (_Atomic int *)(mem + plan_bytes + part_bytes);
  jb.ts = (thread_scratch *)(mem + plan_bytes + part_bytes + pend_bytes);
  char *tmem = mem + plan_bytes + part_bytes + pend_bytes + ts_bytes;
  for (int i = 0; i < threads; i++) {
    float *f = (float *)(tmem + per_thread * (size_t)i);
    thread_scratch *t = &jb.ts[i];
    t->q = f;
    f += (size_t)rows_max * jb.ld;
    t->o = f;
    f += (size_t)rows_max * jb.ldv;
    t->kt = f;
    f += (size_t)jb.ld * TK_ROWWISE; /* kt [D][16], or prefill's K tile [32][ld] */
    t->v = f;
    f += (size_t)TK_ROWWISE * jb.ldv;
    t->s = f;
    f += (size_t)rows_max * TK;
    t->p = f;
    f += (size_t)rows_max * TK;
    t->m = f;
    f += rows_max;
    t->l = f;
    f += rows_max;
    t->qt = f;
    f += (size_t)jb.ld * jb.ldr;
    t->st = f;
    f += (size_t)TK_ROWWISE * jb.ldr;
    t->pos = (int32_t *)f;
  }

  const int n = plan(a, info, jb.items, jb.pending);
  int64_t cost = 0;
  for (int i = 0; i < n; i++) cost += jb.items[i].cost;
  /* Tiny calls stay on the caller's thread: waking workers costs more. */
  const int use = cost < 20000 ? 1 : threads;
  rpa_pool_run(ctx->pool, use, n, run_item, &jb);
  return RPA_OK;
}
