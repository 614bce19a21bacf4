/* The dense oracle and the checks on outputs and cache; see batch.h. The
   oracle shares nothing with the library but the scalar dtype conversions,
   which test_dtype checks over every bit pattern. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"

static double load(const void *p, rpa_dtype dt, int64_t i) {
  switch (dt) {
    case RPA_F32: return ((const float *)p)[i];
    case RPA_BF16: return rpa_bf16_to_f32(((const uint16_t *)p)[i]);
    case RPA_F16: return rpa_f16_to_f32(((const uint16_t *)p)[i]);
    case RPA_FP8_E4M3: return rpa_fp8_e4m3_to_f32(((const uint8_t *)p)[i]);
    case RPA_FP8_E5M2: return rpa_fp8_e5m2_to_f32(((const uint8_t *)p)[i]);
  }
  return NAN;
}

/* Contract step 1: q -> clip(q / q_scale), rounded to the KV dtype. */
static double quantize(float x, float qs, rpa_dtype kv) {
  static const float max[] = {3.40282347e38f, 3.38953139e38f, 65504.0f,
                              448.0f, 57344.0f};
  float y = x / qs;
  if (y > max[kv]) y = max[kv];
  if (y < -max[kv]) y = -max[kv];
  switch (kv) {
    case RPA_BF16: return rpa_bf16_to_f32(rpa_f32_to_bf16(y));
    case RPA_F16: return rpa_f16_to_f32(rpa_f32_to_f16(y));
    case RPA_FP8_E4M3: return rpa_fp8_e4m3_to_f32(rpa_f32_to_fp8_e4m3(y));
    case RPA_FP8_E5M2: return rpa_fp8_e5m2_to_f32(rpa_f32_to_fp8_e5m2(y));
    default: return y;
  }
}

/* Element index of cache row (physical page, slot, head). */
static int64_t cache_elem(const rpa_kv_cache *c, int v, int32_t page,
                          int32_t slot, int32_t h) {
  if (v)
    return page * c->v_page_stride + slot * c->v_slot_stride +
           h * c->v_head_stride;
  return page * c->k_page_stride + slot * c->k_slot_stride +
         h * c->k_head_stride;
}

void tb_oracle(const tb_batch *b, double *out, double *lse) {
  const tb_config *c = &b->cfg;
  const rpa_args *a = &b->args;
  const int32_t Hq = c->num_q_heads, Hkv = c->num_kv_heads, D = c->head_dim;
  const int32_t Dv = c->head_dim_v ? c->head_dim_v : D, G = Hq / Hkv;
  const int32_t ps = c->page_size;
  const rpa_dtype kd = c->kv_dtype;
  const int latent = c->layout == TB_LATENT;
  /* cache_before's data has the same layout as the cache */
  const char *before = (const char *)tb_data(&b->cache_before);
  const size_t ks = rpa_dtype_size(kd);
  const char *kbase = before;
  const char *vbase = latent ? before
                             : before + ((const char *)a->cache.v -
                                         (const char *)a->cache.k);
  const double scale = (double)a->sm_scale * a->k_scale *
                       (c->q_scale > 0 ? c->q_scale : 1.0f);
  (void)ks;

  for (int32_t i = 0; i < c->num_seqs; i++) {
    const int32_t q0 = b->cu_q_lens[i], ql = b->q_lens[i], kl = b->kv_lens[i];
    const int32_t prefix = kl - ql;
    /* gather K [kl, Hkv, D] and V [kl, Hkv, Dv] of this sequence */
    double *K = malloc(sizeof(double) * (size_t)kl * Hkv * D);
    double *V = malloc(sizeof(double) * (size_t)kl * Hkv * Dv);
    double *s = malloc(sizeof(double) * (size_t)kl);
    double *q = malloc(sizeof(double) * (size_t)D);
    if (!K || !V || !s || !q) abort();
    for (int32_t t = 0; t < kl; t++) {
      const int32_t page = b->page_indices[(int64_t)i * a->pages_per_seq + t / ps];
      for (int32_t h = 0; h < Hkv; h++) {
        const int from_input = c->update && t >= prefix;
        for (int32_t d = 0; d < D; d++)
          K[((int64_t)t * Hkv + h) * D + d] =
              from_input
                  ? load(a->k.data, kd, (int64_t)(q0 + t - prefix) * a->k.token_stride +
                                            h * a->k.head_stride + d)
                  : load(kbase, kd, cache_elem(&a->cache, 0, page, t % ps, h) + d);
        for (int32_t d = 0; d < Dv; d++) {
          double x;
          if (latent)
            x = K[((int64_t)t * Hkv + h) * D + d];
          else if (from_input)
            x = load(a->v.data, kd, (int64_t)(q0 + t - prefix) * a->v.token_stride +
                                        h * a->v.head_stride + d);
          else
            x = load(vbase, kd, cache_elem(&a->cache, 1, page, t % ps, h) + d);
          V[((int64_t)t * Hkv + h) * Dv + d] = x;
        }
      }
    }
    for (int32_t j = 0; j < ql; j++) {
      const int64_t pos = prefix + j;
      for (int32_t n = 0; n < Hq; n++) {
        const int32_t h = n / G;
        for (int32_t d = 0; d < D; d++) {
          float x = (float)load(a->q.data, c->q_dtype,
                                (int64_t)(q0 + j) * a->q.token_stride +
                                    n * a->q.head_stride + d);
          q[d] = c->q_scale > 0 ? quantize(x, c->q_scale, kd) : x;
        }
        double m = b->sinks ? b->sinks[n] : -INFINITY;
        for (int32_t t = 0; t < kl; t++) {
          int visible = 1;
          if (c->causal) {
            visible = t <= pos;
            if (c->sliding_window > 0 && pos - t >= c->sliding_window)
              visible = 0;
            if (visible && t >= prefix && !tb_mask_sees(b, i, j, t - prefix))
              visible = 0;
          }
          if (!visible) {
            s[t] = NAN; /* masked: out of the softmax entirely */
            continue;
          }
          double dot = 0;
          for (int32_t d = 0; d < D; d++) dot += q[d] * K[((int64_t)t * Hkv + h) * D + d];
          dot *= scale;
          if (c->soft_cap > 0) dot = c->soft_cap * tanh(dot / c->soft_cap);
          s[t] = dot;
          if (dot > m) m = dot;
        }
        double l = b->sinks ? exp(b->sinks[n] - m) : 0.0;
        double *o = out + ((int64_t)(q0 + j) * Hq + n) * Dv;
        for (int32_t d = 0; d < Dv; d++) o[d] = 0;
        for (int32_t t = 0; t < kl; t++) {
          if (isnan(s[t])) continue;
          const double p = exp(s[t] - m);
          l += p;
          for (int32_t d = 0; d < Dv; d++) o[d] += p * V[((int64_t)t * Hkv + h) * Dv + d];
        }
        for (int32_t d = 0; d < Dv; d++) o[d] = o[d] / l * c->v_scale;
        lse[(int64_t)(q0 + j) * Hq + n] = m + log(l);
      }
    }
    free(K);
    free(V);
    free(s);
    free(q);
  }
}

static int guards_ok(const tb_buffer *x) {
  for (size_t i = 0; i < TB_GUARD; i++)
    if (x->mem[i] != TB_GUARD_BYTE || x->mem[TB_GUARD + x->bytes + i] != TB_GUARD_BYTE)
      return 0;
  return 1;
}

int tb_check_output(const tb_batch *b, const double *out, const double *lse,
                    double tol, char *msg, size_t msg_len) {
  const tb_config *c = &b->cfg;
  const rpa_args *a = &b->args;
  const int32_t Hq = c->num_q_heads, Dv = c->head_dim_v ? c->head_dim_v : c->head_dim;
  const size_t os = rpa_dtype_size(c->out_dtype);
  if (!guards_ok(&b->out)) {
    snprintf(msg, msg_len, "out: guard bytes changed");
    return 1;
  }
  unsigned char *written = calloc(b->out.bytes + 1, 1);
  if (!written) abort();
  const double vs = c->v_scale > 1 ? c->v_scale : 1.0;
  int bad = 0;
  for (int32_t t = 0; t < b->total_tokens && !bad; t++)
    for (int32_t n = 0; n < Hq && !bad; n++)
      for (int32_t d = 0; d < Dv; d++) {
        const int64_t e = t * a->out.token_stride + n * a->out.head_stride + d;
        memset(written + e * (int64_t)os, 1, os);
        const double got = load(a->out.data, c->out_dtype, e);
        const double want = out[((int64_t)t * Hq + n) * Dv + d];
        if (!(fabs(got - want) <= tol * vs)) {
          snprintf(msg, msg_len,
                   "out[token %d, head %d, dim %d] = %.7g, oracle %.7g "
                   "(|diff| %.3g > tol %.3g)",
                   (int)t, (int)n, (int)d, got, want, fabs(got - want), tol * vs);
          bad = 1;
          break;
        }
      }
  const unsigned char *now = tb_data(&b->out), *was = tb_data(&b->out_before);
  for (size_t i = 0; i < b->out.bytes && !bad; i++)
    if (!written[i] && now[i] != was[i]) {
      snprintf(msg, msg_len,
               "out: byte %zu outside the written elements changed", i);
      bad = 1;
    }
  free(written);
  if (bad) return 1;
  if (c->lse) {
    const float *l = tb_data(&b->lse);
    for (int32_t t = 0; t < b->total_tokens; t++)
      for (int32_t n = 0; n < Hq; n++) {
        const double got = l[(int64_t)t * Hq + n], want = lse[(int64_t)t * Hq + n];
        if (!(fabs(got - want) <= 1e-3 + 1e-5 * fabs(want))) {
          snprintf(msg, msg_len, "lse[token %d, head %d] = %.7g, oracle %.7g",
                   (int)t, (int)n, got, want);
          return 1;
        }
      }
    /* padded rows of lse stay untouched */
    const unsigned char *lb = (const unsigned char *)(l + (int64_t)b->total_tokens * Hq);
    for (size_t i = 0; i < (size_t)c->pad_tokens * Hq * sizeof(float); i++)
      if (lb[i] != 0x5C) {
        snprintf(msg, msg_len, "lse: a padded row was written");
        return 1;
      }
  }
  return 0;
}

int tb_check_cache(const tb_batch *b, char *msg, size_t msg_len) {
  const tb_config *c = &b->cfg;
  const rpa_args *a = &b->args;
  const size_t ks = rpa_dtype_size(c->kv_dtype);
  const size_t total = b->cache.bytes + 2 * TB_GUARD;
  unsigned char *expect = malloc(total);
  if (!expect) abort();
  memcpy(expect, b->cache_before.mem, total);
  const int32_t Hkv = c->num_kv_heads, D = c->head_dim;
  const int32_t Dv = c->head_dim_v ? c->head_dim_v : D, ps = c->page_size;
  unsigned char *data = expect + TB_GUARD;
  const ptrdiff_t v_off = c->layout == TB_LATENT
                              ? 0
                              : (const char *)a->cache.v - (const char *)a->cache.k;
  if (c->update)
    for (int32_t i = 0; i < c->num_seqs; i++)
      for (int32_t j = 0; j < b->q_lens[i]; j++) {
        const int32_t pos = b->kv_lens[i] - b->q_lens[i] + j;
        const int32_t page = b->page_indices[(int64_t)i * a->pages_per_seq + pos / ps];
        const int32_t tok = b->cu_q_lens[i] + j;
        for (int32_t h = 0; h < Hkv; h++) {
          memcpy(data + cache_elem(&a->cache, 0, page, pos % ps, h) * (int64_t)ks,
                 (const char *)a->k.data +
                     (tok * a->k.token_stride + h * a->k.head_stride) * (int64_t)ks,
                 (size_t)D * ks);
          if (c->layout == TB_LATENT) continue;
          memcpy(data + v_off + cache_elem(&a->cache, 1, page, pos % ps, h) * (int64_t)ks,
                 (const char *)a->v.data +
                     (tok * a->v.token_stride + h * a->v.head_stride) * (int64_t)ks,
                 (size_t)Dv * ks);
        }
      }
  int bad = 0;
  for (size_t i = 0; i < total; i++)
    if (expect[i] != b->cache.mem[i]) {
      long off = (long)i - TB_GUARD;
      snprintf(msg, msg_len,
               "cache: byte %ld (of %zu) is 0x%02x, expected 0x%02x%s", off,
               b->cache.bytes, b->cache.mem[i], expect[i],
               off < 0 || (size_t)off >= b->cache.bytes ? " (guard)" : "");
      bad = 1;
      break;
    }
  free(expect);
  return bad;
}
