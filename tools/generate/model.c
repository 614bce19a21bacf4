/* Llama forward pass: see model.h. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- dequantization (block layouts as in ggml and gguf-py's quants.py) */

static float f16_to_f32(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return rpa_f16_to_f32(h);
}

/* n elements of a tensor of the given type into out; -1 if the type is not
   one of F32, F16, Q4_1, Q8_0. */
static int dequantize(uint32_t type, const uint8_t *src, uint64_t n,
                      float *out) {
  switch (type) {
  case GGML_T_F32:
    memcpy(out, src, 4 * n);
    return 0;
  case GGML_T_F16:
    for (uint64_t i = 0; i < n; i++) out[i] = f16_to_f32(src + 2 * i);
    return 0;
  case GGML_T_Q4_1:
    /* 20-byte blocks of 32: f16 scale d, f16 minimum m, 16 bytes whose low
       nibbles are elements 0..15 and high nibbles 16..31; x = q * d + m. */
    for (uint64_t b = 0; b < n / 32; b++) {
      const uint8_t *blk = src + 20 * b;
      const float d = f16_to_f32(blk), mn = f16_to_f32(blk + 2);
      float *o = out + 32 * b;
      for (int j = 0; j < 16; j++) {
        o[j] = (float)(blk[4 + j] & 0x0F) * d + mn;
        o[j + 16] = (float)(blk[4 + j] >> 4) * d + mn;
      }
    }
    return 0;
  case GGML_T_Q8_0:
    /* 34-byte blocks of 32: f16 scale d, 32 int8; x = q * d. */
    for (uint64_t b = 0; b < n / 32; b++) {
      const uint8_t *blk = src + 34 * b;
      const float d = f16_to_f32(blk);
      for (int j = 0; j < 32; j++)
        out[32 * b + (uint64_t)j] = (float)(int8_t)blk[2 + j] * d;
    }
    return 0;
  default:
    return -1;
  }
}

int tensor_dequantize(const gguf_tensor *t, float *out) {
  const uint64_t n = t->dims[0] * t->dims[1] * t->dims[2] * t->dims[3];
  if (!t->data) return -1;
  return dequantize(t->type, t->data, n, out);
}

/* Loads tensor name, which must have exactly the given shape (dims[0]
   innermost), as float32. */
static float *load_tensor(const gguf_file *f, const char *name, uint64_t d0,
                          uint64_t d1, char *err, size_t errlen) {
  const gguf_tensor *t = gguf_find_tensor(f, name);
  if (!t) {
    snprintf(err, errlen, "tensor '%s' is missing", name);
    return NULL;
  }
  if (t->dims[0] != d0 || t->dims[1] != d1 || t->dims[2] != 1 ||
      t->dims[3] != 1) {
    snprintf(err, errlen, "tensor '%s' has shape [%llu, %llu, %llu, %llu], "
             "expected [%llu, %llu]", name, (unsigned long long)t->dims[0],
             (unsigned long long)t->dims[1], (unsigned long long)t->dims[2],
             (unsigned long long)t->dims[3], (unsigned long long)d0,
             (unsigned long long)d1);
    return NULL;
  }
  if (t->type != GGML_T_F32 && t->type != GGML_T_F16 &&
      t->type != GGML_T_Q4_1 && t->type != GGML_T_Q8_0) {
    snprintf(err, errlen, "tensor '%s' has type %s (ggml type %u), which is "
             "not supported (F32, F16, Q4_1, Q8_0 are)", name,
             ggml_type_name(t->type), t->type);
    return NULL;
  }
  float *out = malloc(sizeof(float) * d0 * d1);
  if (!out) {
    snprintf(err, errlen, "out of memory loading '%s'", name);
    return NULL;
  }
  (void)dequantize(t->type, t->data, d0 * d1, out);
  return out;
}

static int get_u32(const gguf_file *f, const char *key, int32_t *out,
                   char *err, size_t errlen) {
  uint32_t v;
  if (gguf_get_u32(f, key, &v) != 0 || v == 0 || v > (1u << 24)) {
    snprintf(err, errlen, "metadata '%s' is missing or out of range", key);
    return -1;
  }
  *out = (int32_t)v;
  return 0;
}

int model_load(model *m, const gguf_file *f, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  gguf_str arch;
  if (gguf_get_str(f, "general.architecture", &arch) != 0 ||
      !gguf_str_eq(arch, "llama")) {
    snprintf(err, errlen, "general.architecture must be \"llama\"");
    return -1;
  }
  if (get_u32(f, "llama.block_count", &m->n_layer, err, errlen) ||
      get_u32(f, "llama.embedding_length", &m->dim, err, errlen) ||
      get_u32(f, "llama.attention.head_count", &m->n_head, err, errlen) ||
      get_u32(f, "llama.attention.head_count_kv", &m->n_kv_head, err, errlen) ||
      get_u32(f, "llama.feed_forward_length", &m->ffn_dim, err, errlen) ||
      get_u32(f, "llama.context_length", &m->ctx_len, err, errlen))
    return -1;
  if (m->dim % m->n_head != 0 || m->n_head % m->n_kv_head != 0) {
    snprintf(err, errlen, "head counts %d/%d do not divide width %d",
             m->n_head, m->n_kv_head, m->dim);
    return -1;
  }
  m->head_dim = m->dim / m->n_head;
  uint32_t rope_dims;
  if (gguf_get_u32(f, "llama.rope.dimension_count", &rope_dims) == 0 &&
      (int32_t)rope_dims != m->head_dim) {
    snprintf(err, errlen, "partial RoPE (%u of %d dims) is not supported",
             rope_dims, m->head_dim);
    return -1;
  }
  if (m->head_dim % 8 != 0 || m->dim % 8 != 0 || m->ffn_dim % 8 != 0) {
    snprintf(err, errlen, "widths must be multiples of 8");
    return -1;
  }
  if (gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &m->eps) != 0)
    m->eps = 1e-5f;
  if (gguf_get_f32(f, "llama.rope.freq_base", &m->rope_base) != 0)
    m->rope_base = 10000.0f;
  const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
  if (!emb) {
    snprintf(err, errlen, "tensor 'token_embd.weight' is missing");
    return -1;
  }
  m->n_vocab = (int32_t)emb->dims[1];
  const uint64_t D = (uint64_t)m->dim, KV = (uint64_t)(m->n_kv_head * m->head_dim),
                 F = (uint64_t)m->ffn_dim;
  m->tok_embd = load_tensor(f, "token_embd.weight", D, (uint64_t)m->n_vocab, err, errlen);
  if (!m->tok_embd) return -1;
  m->out_norm = load_tensor(f, "output_norm.weight", D, 1, err, errlen);
  if (!m->out_norm) goto fail;
  if (gguf_find_tensor(f, "output.weight")) {
    m->output = load_tensor(f, "output.weight", D, (uint64_t)m->n_vocab, err, errlen);
    if (!m->output) goto fail;
  } else {
    m->output = m->tok_embd; /* tied embeddings */
  }
  m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
  if (!m->layers) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  char name[96];
  for (int32_t l = 0; l < m->n_layer; l++) {
    layer_weights *w = &m->layers[l];
#define LOAD(field, tname, d0, d1)                                           \
    snprintf(name, sizeof name, "blk.%d." tname ".weight", (int)l);          \
    if (!(w->field = load_tensor(f, name, d0, d1, err, errlen))) goto fail;
    LOAD(attn_norm, "attn_norm", D, 1)
    LOAD(ffn_norm, "ffn_norm", D, 1)
    LOAD(wq, "attn_q", D, D)
    LOAD(wk, "attn_k", D, KV)
    LOAD(wv, "attn_v", D, KV)
    LOAD(wo, "attn_output", D, D)
    LOAD(w_gate, "ffn_gate", D, F)
    LOAD(w_up, "ffn_up", D, F)
    LOAD(w_down, "ffn_down", F, D)
#undef LOAD
  }
  m->rope_freq = malloc(sizeof(double) * (size_t)(m->head_dim / 2));
  if (!m->rope_freq) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  for (int32_t i = 0; i < m->head_dim / 2; i++)
    m->rope_freq[i] = pow((double)m->rope_base, -2.0 * i / m->head_dim);
  return 0;
fail:
  model_free(m);
  return -1;
}

void model_free(model *m) {
  if (m->output != m->tok_embd) free(m->output);
  free(m->tok_embd);
  free(m->out_norm);
  if (m->layers) {
    for (int32_t l = 0; l < m->n_layer; l++) {
      layer_weights *w = &m->layers[l];
      free(w->attn_norm); free(w->ffn_norm); free(w->wq); free(w->wk);
      free(w->wv); free(w->wo); free(w->w_gate); free(w->w_up);
      free(w->w_down);
    }
  }
  free(m->layers);
  free(m->rope_freq);
  memset(m, 0, sizeof *m);
}

int kv_cache_init(kv_cache *c, const model *m, int32_t num_pages,
                  int32_t page_size) {
  c->num_pages = num_pages;
  c->page_size = page_size;
  c->layer = calloc((size_t)m->n_layer, sizeof *c->layer);
  if (!c->layer) return -1;
  const size_t n = (size_t)num_pages * (size_t)page_size * 2 *
                   (size_t)m->n_kv_head * (size_t)m->head_dim;
  for (int32_t l = 0; l < m->n_layer; l++) {
    c->layer[l] = calloc(n, sizeof(float));
    if (!c->layer[l]) return -1;
  }
  return 0;
}

void kv_cache_free(kv_cache *c, const model *m) {
  if (c->layer)
    for (int32_t l = 0; l < m->n_layer; l++) free(c->layer[l]);
  free(c->layer);
  c->layer = NULL;
}

/* ---- matmul: out[t][o] = sum_i w[o][i] * x[t][i] -----------------------
   Each (t, o) is summed in 8 lanes (lane j takes i = j mod 8, in order of
   i), and the lanes are added in one fixed tree. Tiles of 4 tokens by 2
   outputs reuse the loads but do exactly the same arithmetic per output,
   so the result of a row never depends on the tile it fell in, on the
   batch or on the thread split (outputs are split between threads). */

enum { LANES = 8, TT = 4, TO = 2 };

/* Eight float lanes (GCC/clang vector extension): lane-wise IEEE
   arithmetic, exactly the scalar operations, in one AVX register or two
   SSE ones. Loads go through memcpy, so no alignment is assumed. */
typedef float v8 __attribute__((vector_size(32)));

/* Vectors never cross a function boundary by value (that would change the
   ABI between the clones): loads are a macro, the reduction takes a
   pointer. */
#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(v8))

static inline float reduce8(const v8 *v) {
  const v8 a = *v;
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* On x86 an AVX2 clone (chosen at load by the CPU) runs the same
   arithmetic in 8-wide registers; no FMA (-ffp-contract=off and no "fma"
   target), so both clones give the same bits. */
#if defined(__x86_64__) && defined(__GNUC__)
#define GEN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GEN_CLONES
#endif

/* A full tile: TT tokens by TO rows, the weights loaded once per TT tokens. */
GEN_CLONES static void dot_tile_full(const float *w, const float *x, int n_in,
                                     float *out, int out_stride) {
  v8 acc[TT][TO];
  memset(acc, 0, sizeof acc);
  for (int i = 0; i < n_in; i += LANES) {
    v8 w0, w1;
    LOAD8(w0, w + i);
    LOAD8(w1, w + (size_t)n_in + i);
    for (int t = 0; t < TT; t++) {
      v8 xv;
      LOAD8(xv, x + (size_t)t * n_in + i);
      acc[t][0] += w0 * xv;
      acc[t][1] += w1 * xv;
    }
  }
  for (int t = 0; t < TT; t++)
    for (int o = 0; o < TO; o++)
      out[(size_t)t * out_stride + o] = reduce8(&acc[t][o]);
}

/* One token against one row: the same arithmetic as a tile's (t, o). */
GEN_CLONES static float dot_1x1(const float *w, const float *x, int n_in) {
  v8 a = {0};
  for (int i = 0; i < n_in; i += LANES) {
    v8 wv, xv;
    LOAD8(wv, w + i);
    LOAD8(xv, x + i);
    a += wv * xv;
  }
  return reduce8(&a);
}

/* One token against TO rows (a decode step's tokens, or the last tokens
   of a step): the same arithmetic again, the x row read once. */
GEN_CLONES static void dot_1x2(const float *w, const float *x, int n_in,
                               float *out) {
  v8 a = {0}, b = {0};
  for (int i = 0; i < n_in; i += LANES) {
    v8 xv, w0, w1;
    LOAD8(xv, x + i);
    LOAD8(w0, w + i);
    LOAD8(w1, w + (size_t)n_in + i);
    a += w0 * xv;
    b += w1 * xv;
  }
  out[0] = reduce8(&a);
  out[1] = reduce8(&b);
}

/* out[t][o] for the nt tokens and no rows of a tile. Every (t, o) is summed
   in 8 lanes (lane j takes i = j mod 8, in order of i) and the lanes are
   added in one fixed tree, whichever function does it, so a row's result
   never depends on the tile it fell in, on the batch or on the thread
   split (outputs are split between threads). */
static void dot_tile(const float *w, const float *x, int n_in, int nt, int no,
                     float *out, int out_stride) {
  if (nt == TT && no == TO) {
    dot_tile_full(w, x, n_in, out, out_stride);
    return;
  }
  for (int t = 0; t < nt; t++) {
    if (no == TO)
      dot_1x2(w, x + (size_t)t * n_in, n_in, out + (size_t)t * out_stride);
    else
      for (int o = 0; o < no; o++)
        out[(size_t)t * out_stride + o] =
            dot_1x1(w + (size_t)o * n_in, x + (size_t)t * n_in, n_in);
  }
}

typedef struct matmul_job {
  const float *w, *x;
  float *out;
  int n_tok, n_in, n_out;
} matmul_job;

static void matmul_worker(void *arg, int worker, int n_workers) {
  const matmul_job *j = arg;
  /* Outputs split in whole tiles. */
  const int tiles = (j->n_out + TO - 1) / TO;
  const int lo = (int)((long)tiles * worker / n_workers) * TO;
  int hi = (int)((long)tiles * (worker + 1) / n_workers) * TO;
  if (hi > j->n_out) hi = j->n_out;
  for (int t = 0; t < j->n_tok; t += TT) {
    const int nt = j->n_tok - t < TT ? j->n_tok - t : TT;
    for (int o = lo; o < hi; o += TO) {
      const int no = hi - o < TO ? hi - o : TO;
      dot_tile(j->w + (size_t)o * j->n_in, j->x + (size_t)t * j->n_in,
               j->n_in, nt, no, j->out + (size_t)t * j->n_out + o, j->n_out);
    }
  }
}

static void matmul(pool *p, const float *w, const float *x, float *out,
                   int n_tok, int n_in, int n_out) {
  matmul_job j = {w, x, out, n_tok, n_in, n_out};
  pool_run(p, matmul_worker, &j);
}

/* ---- the other per-row operations ------------------------------------- */

static void rmsnorm(const float *x, const float *w, float *out, int n,
                    float eps) {
  double ss = 0.0;
  for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
  const float scale = (float)(1.0 / sqrt(ss / n + (double)eps));
  for (int i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
}

/* RoPE on adjacent pairs (x[2i], x[2i+1]): llama.cpp's "normal" mode,
   which is what its GGUF conversion's permutation of the Q/K rows of a
   Hugging Face Llama checkpoint expects. */
static void rope(float *v, int n_heads, int head_dim, int32_t pos,
                 const double *freq) {
  for (int i = 0; i < head_dim / 2; i++) {
    const double a = (double)pos * freq[i];
    const float c = (float)cos(a), s = (float)sin(a);
    for (int h = 0; h < n_heads; h++) {
      float *p = v + (size_t)h * head_dim + 2 * i;
      const float x0 = p[0], x1 = p[1];
      p[0] = x0 * c - x1 * s;
      p[1] = x0 * s + x1 * c;
    }
  }
}

static int grow(forward_ctx *fc, int32_t T) {
  if (T <= fc->cap_tokens) return 0;
  const model *m = fc->m;
  const size_t n = (size_t)T;
  float **bufs[] = {&fc->x, &fc->h, &fc->q, &fc->k, &fc->v, &fc->att,
                    &fc->gate, &fc->up};
  const size_t widths[] = {(size_t)m->dim, (size_t)m->dim, (size_t)m->dim,
                           (size_t)(m->n_kv_head * m->head_dim),
                           (size_t)(m->n_kv_head * m->head_dim),
                           (size_t)m->dim, (size_t)m->ffn_dim,
                           (size_t)m->ffn_dim};
  for (int i = 0; i < 8; i++) {
    free(*bufs[i]);
    *bufs[i] = malloc(sizeof(float) * n * widths[i]);
    if (!*bufs[i]) {
      fc->cap_tokens = 0;
      return -1;
    }
  }
  fc->cap_tokens = T;
  return 0;
}

void forward_free(forward_ctx *fc) {
  free(fc->x); free(fc->h); free(fc->q); free(fc->k); free(fc->v);
  free(fc->att); free(fc->gate); free(fc->up);
  fc->x = fc->h = fc->q = fc->k = fc->v = fc->att = fc->gate = fc->up = NULL;
  fc->cap_tokens = 0;
}

int forward(forward_ctx *fc, const batch *b, char *err, size_t errlen) {
  const double t_start = now_s();
  const model *m = fc->m;
  const int T = b->num_tokens, D = m->dim, HD = m->head_dim;
  const int KVD = m->n_kv_head * HD, F = m->ffn_dim;
  if (grow(fc, T) != 0) {
    snprintf(err, errlen, "out of memory (batch of %d tokens)", T);
    return -1;
  }
  for (int t = 0; t < T; t++) {
    if (b->tokens[t] < 0 || b->tokens[t] >= m->n_vocab) {
      snprintf(err, errlen, "token id %d out of range", b->tokens[t]);
      return -1;
    }
    memcpy(fc->x + (size_t)t * D, m->tok_embd + (size_t)b->tokens[t] * D,
           sizeof(float) * (size_t)D);
  }
  rpa_args a = rpa_args_default();
  a.num_tokens = T;
  a.num_q_heads = m->n_head;
  a.num_kv_heads = m->n_kv_head;
  a.head_dim = HD;
  a.q = (rpa_tensor){fc->q, RPA_F32, D, HD};
  a.k = (rpa_tensor){fc->k, RPA_F32, KVD, HD};
  a.v = (rpa_tensor){fc->v, RPA_F32, KVD, HD};
  a.out = (rpa_tensor){fc->att, RPA_F32, D, HD};
  a.cache.dtype = RPA_F32;
  a.cache.num_pages = fc->cache->num_pages;
  a.cache.page_size = fc->cache->page_size;
  a.cache.k_page_stride = a.cache.v_page_stride =
      (int64_t)fc->cache->page_size * 2 * KVD;
  a.cache.k_slot_stride = a.cache.v_slot_stride = 2 * KVD;
  a.cache.k_head_stride = a.cache.v_head_stride = 2 * HD;
  a.num_seqs = b->num_seqs;
  a.cu_q_lens = b->cu_q_lens;
  a.kv_lens = b->kv_lens;
  a.page_indices = b->page_indices;
  a.pages_per_seq = b->pages_per_seq;
  a.sm_scale = (float)(1.0 / sqrt((double)HD));
  for (int l = 0; l < m->n_layer; l++) {
    const layer_weights *w = &m->layers[l];
    for (int t = 0; t < T; t++)
      rmsnorm(fc->x + (size_t)t * D, w->attn_norm, fc->h + (size_t)t * D, D,
              m->eps);
    matmul(fc->threads, w->wq, fc->h, fc->q, T, D, D);
    matmul(fc->threads, w->wk, fc->h, fc->k, T, D, KVD);
    matmul(fc->threads, w->wv, fc->h, fc->v, T, D, KVD);
    for (int t = 0; t < T; t++) {
      rope(fc->q + (size_t)t * D, m->n_head, HD, b->positions[t], m->rope_freq);
      rope(fc->k + (size_t)t * KVD, m->n_kv_head, HD, b->positions[t],
           m->rope_freq);
    }
    /* One call: writes this step's K/V into their pages, then attends. */
    a.cache.k = fc->cache->layer[l];
    a.cache.v = fc->cache->layer[l] + HD;
    const double t0 = now_s();
    rpa_status st = rpa_attention(fc->rpa, &a);
    fc->attn_seconds += now_s() - t0;
    if (st != RPA_OK) {
      snprintf(err, errlen, "rpa_attention (layer %d): %s: %s", l,
               rpa_status_string(st), rpa_context_last_error(fc->rpa));
      return -1;
    }
    matmul(fc->threads, w->wo, fc->att, fc->h, T, D, D);
    for (size_t i = 0; i < (size_t)T * D; i++) fc->x[i] += fc->h[i];
    for (int t = 0; t < T; t++)
      rmsnorm(fc->x + (size_t)t * D, w->ffn_norm, fc->h + (size_t)t * D, D,
              m->eps);
    matmul(fc->threads, w->w_gate, fc->h, fc->gate, T, D, F);
    matmul(fc->threads, w->w_up, fc->h, fc->up, T, D, F);
    for (size_t i = 0; i < (size_t)T * F; i++) {
      const float g = fc->gate[i];
      fc->gate[i] = (g / (1.0f + expf(-g))) * fc->up[i]; /* SwiGLU */
    }
    matmul(fc->threads, w->w_down, fc->gate, fc->h, T, F, D);
    for (size_t i = 0; i < (size_t)T * D; i++) fc->x[i] += fc->h[i];
  }
  /* Final norm and the vocabulary projection, only for the wanted rows. */
  for (int r = 0; r < b->n_logits; r++)
    rmsnorm(fc->x + (size_t)b->logit_rows[r] * D, m->out_norm,
            fc->h + (size_t)r * D, D, m->eps);
  matmul(fc->threads, m->output, fc->h, b->logits, b->n_logits, D, m->n_vocab);
  fc->total_seconds += now_s() - t_start;
  return 0;
}
