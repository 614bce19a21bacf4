/* Random ragged batches with guard bytes; see batch.h. */
#include "batch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t tb_rand(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double tb_uniform(uint64_t *s) { return (double)(tb_rand(s) >> 11) * 0x1p-53; }

int32_t tb_range(uint64_t *s, int32_t lo, int32_t hi) {
  return lo + (int32_t)(tb_rand(s) % (uint64_t)(hi - lo + 1));
}

const char *tb_layout_name(tb_layout l) {
  static const char *names[] = {"combined", "vllm", "separate", "hnd",
                                "latent"};
  return l < TB_LAYOUT_COUNT ? names[l] : "?";
}

tb_config tb_config_default(void) {
  tb_config c;
  memset(&c, 0, sizeof c);
  c.num_q_heads = 4;
  c.num_kv_heads = 1;
  c.head_dim = 64;
  c.page_size = 16;
  c.q_dtype = c.out_dtype = c.kv_dtype = RPA_F32;
  c.layout = TB_COMBINED;
  c.causal = 1;
  c.update = 1;
  c.k_scale = c.v_scale = 1.0f;
  return c;
}

static int buf_alloc(tb_buffer *x, size_t bytes) {
  x->bytes = bytes;
  x->mem = malloc(bytes + 2 * TB_GUARD);
  if (!x->mem) return -1;
  memset(x->mem, TB_GUARD_BYTE, bytes + 2 * TB_GUARD);
  return 0;
}

static void buf_free(tb_buffer *x) {
  free(x->mem);
  x->mem = NULL;
}

static void buf_copy(tb_buffer *dst, const tb_buffer *src) {
  if (buf_alloc(dst, src->bytes) == 0)
    memcpy(dst->mem, src->mem, src->bytes + 2 * TB_GUARD);
}

/* Fills n elements spaced by stride... simpler: fills a whole buffer with
   random values of dtype in [lo, hi). */
static void fill(uint64_t *rng, void *p, rpa_dtype dt, size_t n, double lo,
                 double hi) {
  for (size_t i = 0; i < n; i++) {
    float x = (float)(lo + (hi - lo) * tb_uniform(rng));
    switch (dt) {
      case RPA_F32: ((float *)p)[i] = x; break;
      case RPA_BF16: ((uint16_t *)p)[i] = rpa_f32_to_bf16(x); break;
      case RPA_F16: ((uint16_t *)p)[i] = rpa_f32_to_f16(x); break;
      case RPA_FP8_E4M3: ((uint8_t *)p)[i] = rpa_f32_to_fp8_e4m3(x); break;
      case RPA_FP8_E5M2: ((uint8_t *)p)[i] = rpa_f32_to_fp8_e5m2(x); break;
    }
  }
}

/* Random trees of draft tokens: new token j > 0 hangs under a random
   earlier one (or, one time in six, starts a tree of its own), and sees its
   ancestors and itself. Each sequence's bits start a few bits past the
   previous one's, so offsets are not byte aligned. */
static int make_trees(tb_batch *b, uint64_t *rng) {
  const int32_t S = b->cfg.num_seqs;
  b->mask_offsets = malloc(sizeof(int64_t) * (size_t)(S > 0 ? S : 1));
  if (!b->mask_offsets) return -1;
  int64_t bits = 0;
  int32_t prefills = 0;
  for (int32_t i = 0; i < S; i++) {
    const int32_t ql = b->q_lens[i];
    b->mask_offsets[i] = -1;
    if (ql > 1 && prefills++ % 3 != 2) {
      bits += tb_range(rng, 0, 5);
      b->mask_offsets[i] = bits;
      bits += (int64_t)ql * ql;
    }
  }
  b->mask_bits = bits;
  b->mask = calloc((size_t)(bits / 8 + 1), 1);
  if (!b->mask) return -1;
  for (int32_t i = 0; i < S; i++) {
    if (b->mask_offsets[i] < 0) continue;
    const int32_t ql = b->q_lens[i];
    int32_t *parent = malloc(sizeof(int32_t) * (size_t)ql);
    if (!parent) return -1;
    for (int32_t j = 0; j < ql; j++) {
      parent[j] = j == 0 || tb_range(rng, 0, 5) == 0 ? -1 : tb_range(rng, 0, j - 1);
      for (int32_t k = j; k >= 0; k = parent[k]) {
        const int64_t bit = b->mask_offsets[i] + (int64_t)j * ql + k;
        b->mask[bit / 8] |= (uint8_t)(1u << (bit % 8));
      }
    }
    free(parent);
  }
  return 0;
}

int tb_make(tb_batch *b, const tb_config *cfg) {
  memset(b, 0, sizeof *b);
  b->cfg = *cfg;
  tb_config *c = &b->cfg;
  uint64_t rng = c->seed * 0x2545f4914f6cdd1dull + 1;
  const int32_t S = c->num_seqs, Hq = c->num_q_heads, Hkv = c->num_kv_heads;
  const int32_t D = c->head_dim, Dv = c->head_dim_v ? c->head_dim_v : D;
  const int32_t ps = c->page_size;
  if (c->layout != TB_SEPARATE && c->layout != TB_LATENT && Dv != D) return -1;
  if (c->layout == TB_LATENT && (Hkv != 1 || Dv > D)) return -1;

  b->q_lens = calloc((size_t)S + 1, sizeof(int32_t));
  b->kv_lens = calloc((size_t)S + 1, sizeof(int32_t));
  b->cu_q_lens = calloc((size_t)S + 1, sizeof(int32_t));
  if (!b->q_lens || !b->kv_lens || !b->cu_q_lens) return -1;
  int32_t need_pages = 0, max_pages = 0;
  for (int32_t i = 0; i < S; i++) {
    b->q_lens[i] = c->q_lens[i];
    b->kv_lens[i] = c->kv_lens[i];
    b->cu_q_lens[i + 1] = b->cu_q_lens[i] + c->q_lens[i];
    int32_t p = (c->kv_lens[i] + ps - 1) / ps;
    need_pages += p;
    if (p > max_pages) max_pages = p;
  }
  const int32_t pps = c->pages_per_seq > max_pages ? c->pages_per_seq : max_pages;
  b->total_tokens = b->cu_q_lens[S];
  const int32_t T = b->total_tokens + c->pad_tokens;
  const int32_t P = need_pages + c->extra_pages;
  b->num_pages = P;

  /* Page table: a permutation of the pool (shuffled or in order); unused
     entries hold -7 to prove they are never read. */
  int32_t *perm = malloc(sizeof(int32_t) * ((size_t)P + 1));
  b->page_indices = malloc(sizeof(int32_t) * ((size_t)S * pps + 1));
  if (!perm || !b->page_indices) return -1;
  for (int32_t i = 0; i < P; i++) perm[i] = i;
  if (c->shuffle_pages)
    for (int32_t i = P - 1; i > 0; i--) {
      int32_t j = tb_range(&rng, 0, i), t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
  int32_t next = 0;
  for (int32_t i = 0; i < S; i++)
    for (int32_t p = 0; p < pps; p++)
      b->page_indices[(int64_t)i * pps + p] =
          p < (b->kv_lens[i] + ps - 1) / ps ? perm[next++] : -7;
  free(perm);

  /* Queries, new K/V, output (and lse), each [T, H, D] with padding. */
  const size_t qs = rpa_dtype_size(c->q_dtype), os = rpa_dtype_size(c->out_dtype),
               ks = rpa_dtype_size(c->kv_dtype);
  const int64_t q_hs = D + c->pad, q_ts = (int64_t)Hq * q_hs + c->pad;
  const int64_t o_hs = Dv + c->pad, o_ts = (int64_t)Hq * o_hs + c->pad;
  const int64_t k_hs = D + c->pad, k_ts = (int64_t)Hkv * k_hs + c->pad;
  const int64_t v_hs = Dv + c->pad, v_ts = (int64_t)Hkv * v_hs + c->pad;
  if (buf_alloc(&b->q, (size_t)(T * q_ts) * qs) ||
      buf_alloc(&b->out, (size_t)(T * o_ts) * os) ||
      buf_alloc(&b->k, (size_t)(T * k_ts) * ks) ||
      buf_alloc(&b->v, (size_t)(T * v_ts) * ks) ||
      buf_alloc(&b->lse, sizeof(float) * (size_t)T * Hq))
    return -1;
  if (c->big_logits) {
    fill(&rng, tb_data(&b->q), c->q_dtype, b->q.bytes / qs, 1.0, 1.0);
  } else {
    fill(&rng, tb_data(&b->q), c->q_dtype, b->q.bytes / qs, -1.0, 1.0);
  }
  if (c->big_logits)
    fill(&rng, tb_data(&b->k), c->kv_dtype, b->k.bytes / ks, 90.0 / D,
         100.0 / D);
  else
    fill(&rng, tb_data(&b->k), c->kv_dtype, b->k.bytes / ks, -1.0, 1.0);
  fill(&rng, tb_data(&b->v), c->kv_dtype, b->v.bytes / ks, -1.0, 1.0);
  memset(tb_data(&b->out), 0x5C, b->out.bytes);
  memset(tb_data(&b->lse), 0x5C, b->lse.bytes);

  /* The cache, in the chosen layout, filled with random valid values. */
  int64_t kp, kslot, kh, vp, vslot, vh, v_off; /* strides, v offset (elems) */
  int64_t elems;
  switch (c->layout) {
    case TB_COMBINED:
      kslot = vslot = 2 * (int64_t)Hkv * D;
      kp = vp = ps * kslot;
      kh = vh = 2 * (int64_t)D;
      v_off = D;
      elems = P * kp;
      break;
    case TB_VLLM:
      kslot = vslot = (int64_t)Hkv * D;
      kp = vp = ps * kslot;
      kh = vh = D;
      v_off = P * kp;
      elems = 2 * P * kp;
      break;
    case TB_SEPARATE:
      kh = D + 3;
      vh = Dv + 5;
      kslot = Hkv * kh;
      vslot = Hkv * vh;
      kp = ps * kslot;
      vp = ps * vslot;
      v_off = P * kp + 11; /* V region after K, a gap between */
      elems = v_off + P * vp;
      break;
    case TB_HND:
      kslot = vslot = D;
      kh = vh = (int64_t)ps * D;
      kp = vp = 2 * (int64_t)Hkv * ps * D;
      v_off = (int64_t)Hkv * ps * D;
      elems = P * kp;
      break;
    case TB_LATENT:
    default:
      kslot = vslot = D;
      kp = vp = (int64_t)ps * D;
      kh = vh = 0;
      v_off = 0;
      elems = P * kp;
      break;
  }
  if (buf_alloc(&b->cache, (size_t)elems * ks)) return -1;
  if (c->big_logits)
    fill(&rng, tb_data(&b->cache), c->kv_dtype, (size_t)elems, 90.0 / D,
         100.0 / D);
  else
    fill(&rng, tb_data(&b->cache), c->kv_dtype, (size_t)elems, -1.0, 1.0);
  buf_copy(&b->cache_before, &b->cache);
  buf_copy(&b->out_before, &b->out);
  if (!b->cache_before.mem || !b->out_before.mem) return -1;

  if (c->sinks) {
    b->sinks = malloc(sizeof(float) * (size_t)Hq);
    if (!b->sinks) return -1;
    for (int32_t h = 0; h < Hq; h++)
      b->sinks[h] = (float)(-2.0 + 4.0 * tb_uniform(&rng));
  }
  if (c->tree && make_trees(b, &rng) != 0) return -1;
  if (c->distribution) {
    /* The hint is only valid when the batch happens to be sorted the way it
       describes; the test chooses batches for which (d, d, S) holds with d
       the number of leading decodes. */
    int32_t d = 0;
    while (d < S && b->q_lens[d] == 1) d++;
    b->dist[0] = d;
    b->dist[1] = d;
    b->dist[2] = S;
  }

  rpa_args *a = &b->args;
  *a = rpa_args_default();
  a->num_tokens = T;
  a->num_q_heads = Hq;
  a->num_kv_heads = Hkv;
  a->head_dim = D;
  a->head_dim_v = c->head_dim_v;
  a->q = (rpa_tensor){tb_data(&b->q), c->q_dtype, q_ts, q_hs};
  a->out = (rpa_tensor){tb_data(&b->out), c->out_dtype, o_ts, o_hs};
  a->k = (rpa_tensor){tb_data(&b->k), c->kv_dtype, k_ts, k_hs};
  a->v = c->layout == TB_LATENT
             ? (rpa_tensor){NULL, c->kv_dtype, 0, 0}
             : (rpa_tensor){tb_data(&b->v), c->kv_dtype, v_ts, v_hs};
  if (c->lse) {
    a->lse = tb_data(&b->lse);
    a->lse_token_stride = Hq;
    a->lse_head_stride = 1;
  }
  char *base = tb_data(&b->cache);
  a->cache.k = base;
  a->cache.v = c->layout == TB_LATENT ? NULL : base + v_off * (int64_t)ks;
  a->cache.dtype = c->kv_dtype;
  a->cache.num_pages = P;
  a->cache.page_size = ps;
  a->cache.k_page_stride = kp;
  a->cache.k_slot_stride = kslot;
  a->cache.k_head_stride = kh;
  a->cache.v_page_stride = vp;
  a->cache.v_slot_stride = vslot;
  a->cache.v_head_stride = vh;
  a->num_seqs = S;
  a->cu_q_lens = b->cu_q_lens;
  a->kv_lens = b->kv_lens;
  a->page_indices = b->page_indices;
  a->pages_per_seq = pps;
  a->distribution = c->distribution ? b->dist : NULL;
  a->q_scale = c->q_scale;
  a->sm_scale = c->sm_scale != 0.0f ? c->sm_scale : 1.0f / sqrtf((float)D);
  a->k_scale = c->k_scale;
  a->v_scale = c->v_scale;
  a->soft_cap = c->soft_cap;
  a->causal = c->causal;
  a->sliding_window = c->sliding_window;
  a->sinks = b->sinks;
  a->update_kv_cache = c->update;
  if (b->mask) {
    a->mask = b->mask;
    a->mask_offsets = b->mask_offsets;
    a->mask_bits = b->mask_bits;
  }
  return 0;
}

int tb_mask_sees(const tb_batch *b, int32_t i, int32_t j, int32_t k) {
  if (!b->mask || b->mask_offsets[i] < 0) return 1;
  const int64_t bit = b->mask_offsets[i] + (int64_t)j * b->q_lens[i] + k;
  return (b->mask[bit / 8] >> (bit % 8)) & 1;
}

void tb_free(tb_batch *b) {
  free(b->mask);
  free(b->mask_offsets);
  free(b->q_lens);
  free(b->kv_lens);
  free(b->cu_q_lens);
  free(b->page_indices);
  free(b->sinks);
  buf_free(&b->q);
  buf_free(&b->k);
  buf_free(&b->v);
  buf_free(&b->out);
  buf_free(&b->lse);
  buf_free(&b->cache);
  buf_free(&b->cache_before);
  buf_free(&b->out_before);
}

void tb_reset(tb_batch *b) {
  memcpy(b->cache.mem, b->cache_before.mem, b->cache.bytes + 2 * TB_GUARD);
  memcpy(b->out.mem, b->out_before.mem, b->out.bytes + 2 * TB_GUARD);
  memset(tb_data(&b->lse), 0x5C, b->lse.bytes);
}

double tb_tolerance(const tb_config *c) {
  double tol;
  switch (c->out_dtype) {
    case RPA_BF16: tol = 1.2e-2; break; /* 2^-8 relative rounding of O(1) */
    case RPA_F16: tol = 2e-3; break;    /* 2^-11 */
    default: tol = 2e-4; break;         /* float32 sums over long rows */
  }
  /* Fast kernels multiply bf16 q by bf16 (or fp8) K, and the softmax
     weights rounded to bf16 by V, on vdpbf16ps (as upstream's reference
     rounds the weights to the value dtype): each weight carries 2^-9
     relative error. */
  const int kv_bf16_exact = c->kv_dtype == RPA_BF16 || c->kv_dtype == RPA_FP8_E4M3 ||
                            c->kv_dtype == RPA_FP8_E5M2;
  if (kv_bf16_exact && (c->q_dtype == RPA_BF16 || c->q_scale > 0.0f)) tol += 4e-3;
  return tol;
}
