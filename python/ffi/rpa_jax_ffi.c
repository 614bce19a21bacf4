/* rpa's XLA FFI handler: upstream RPA v3's call as an XLA custom call on the
   CPU platform, for rpa.jax (python/rpa/jax.py registers it).

   Written against XLA's FFI C API (xla/ffi/api/c_api.h from
   jax.ffi.include_dir()), so the only language here is C. XLA passes one
   call frame per call: buffers (arguments and results) in the order rpa.jax
   lists them, and attributes by name. The handler

   - answers XLA's metadata query (the FFI API version it was built for);
   - checks what it is given (count, dtypes, ranks) and turns the buffers
     into one rpa_args, with the combined cache [P, page_size, C, Dc] (or the
     5-D [P, page_size, C/packing, packing, Dc], whose packing axis folds
     into C) as strided K and V views, so upstream's padded rows (C > 2*Hkv)
     and lanes (Dc > D) are skipped, as the NumPy call does;
   - runs rpa_attention on a context from a pool, and on an error returns
     the library's message as an XLA INVALID_ARGUMENT error.

   The cache result aliases the cache argument (rpa.jax passes
   input_output_aliases), so XLA hands the handler one buffer for both and
   the fused KV write goes straight into it: XLA copies the input there
   first unless the caller donated the input, in which case nothing is
   copied.

   Contexts: an rpa_context serves one call at a time, and XLA may run the
   op from several of its threads at once. Idle contexts wait in a pool keyed
   by (num_threads, kernel set); a call takes a matching one or creates one,
   and puts it back when done. So there are as many contexts as calls ever
   ran at the same time, each used by one thread at a time, and no context
   per XLA worker thread that ran the op once. The pool is freed at process
   exit. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "rpa.h"
#include "xla/ffi/api/c_api.h"

#if defined(__GNUC__)
#define RPA_JAX_EXPORT __attribute__((visibility("default")))
#else
#define RPA_JAX_EXPORT
#endif

/* The buffers, in rpa.jax's order. */
enum {
  ARG_QUERIES, ARG_KEYS, ARG_VALUES, ARG_KV_CACHE, ARG_KV_LENS,
  ARG_PAGE_INDICES, ARG_CU_Q_LENS, ARG_DISTRIBUTION, ARG_SINKS, NUM_ARGS
};
enum { RET_OUT, RET_KV_CACHE, NUM_RETS };

/* ---- errors ------------------------------------------------------------- */

static XLA_FFI_Error *make_error(const XLA_FFI_Api *api, XLA_FFI_Error_Code code,
                                 const char *msg) {
  XLA_FFI_Error_Create_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_Error_Create_Args_STRUCT_SIZE;
  a.message = msg;
  a.errc = code;
  return api->XLA_FFI_Error_Create(&a);
}

#define FAIL(...)                                                   \
  do {                                                              \
    char msg_[512];                                                 \
    snprintf(msg_, sizeof msg_, "rpa.jax: " __VA_ARGS__);           \
    return make_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, msg_); \
  } while (0)

/* ---- the context pool --------------------------------------------------- */

typedef struct pooled {
  rpa_context *ctx;
  int num_threads;
  char isa[32];
  struct pooled *next;
} pooled;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pooled *pool_idle;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_free_all(void) {
  pthread_mutex_lock(&pool_lock);
  pooled *p = pool_idle;
  pool_idle = NULL;
  pthread_mutex_unlock(&pool_lock);
  while (p) {
    pooled *next = p->next;
    rpa_context_destroy(p->ctx);
    free(p);
    p = next;
  }
}

static void pool_init(void) { atexit(pool_free_all); }

/* A context for (num_threads, isa): an idle one from the pool, else a new
   one. NULL with *status set when none can be made. */
static pooled *pool_take(int num_threads, const char *isa, rpa_status *status) {
  pthread_once(&pool_once, pool_init);
  pthread_mutex_lock(&pool_lock);
  for (pooled **pp = &pool_idle; *pp; pp = &(*pp)->next) {
    if ((*pp)->num_threads == num_threads && strcmp((*pp)->isa, isa) == 0) {
      pooled *p = *pp;
      *pp = p->next;
      pthread_mutex_unlock(&pool_lock);
      return p;
    }
  }
  pthread_mutex_unlock(&pool_lock);
  pooled *p = calloc(1, sizeof *p);
  if (!p) {
    *status = RPA_OUT_OF_MEMORY;
    return NULL;
  }
  p->num_threads = num_threads;
  snprintf(p->isa, sizeof p->isa, "%s", isa);
  rpa_context_options o = rpa_context_options_default();
  o.num_threads = num_threads;
  o.isa = p->isa[0] ? p->isa : NULL;
  *status = rpa_context_create(&o, &p->ctx);
  if (*status != RPA_OK) {
    free(p);
    return NULL;
  }
  return p;
}

static void pool_give_back(pooled *p) {
  pthread_mutex_lock(&pool_lock);
  p->next = pool_idle;
  pool_idle = p;
  pthread_mutex_unlock(&pool_lock);
}

/* ---- attributes --------------------------------------------------------- */

typedef struct attrs {
  float sm_scale, soft_cap, q_scale, k_scale, v_scale;
  int32_t sliding_window, causal, update_kv_cache, num_kv_heads, num_threads;
  char isa[32];
} attrs;

static int name_is(const XLA_FFI_ByteSpan *n, const char *s) {
  size_t len = strlen(s);
  return n->len == len && memcmp(n->ptr, s, len) == 0;
}

/* Reads every attribute; each one rpa.jax sends must be present exactly
   once with its type, and no other may appear. NULL or an error. */
static XLA_FFI_Error *read_attrs(const XLA_FFI_Api *api,
                                 const XLA_FFI_Attrs *in, attrs *out) {
  static const char *const f32_names[] = {"sm_scale", "soft_cap", "q_scale",
                                          "k_scale", "v_scale"};
  static const char *const s32_names[] = {"sliding_window", "causal",
                                          "update_kv_cache", "num_kv_heads",
                                          "num_threads"};
  float *f32_fields[] = {&out->sm_scale, &out->soft_cap, &out->q_scale,
                         &out->k_scale, &out->v_scale};
  int32_t *s32_fields[] = {&out->sliding_window, &out->causal,
                           &out->update_kv_cache, &out->num_kv_heads,
                           &out->num_threads};
  enum { NF = 5, NS = 5 };
  int seen[NF + NS + 1] = {0};
  for (int64_t i = 0; i < in->size; i++) {
    const XLA_FFI_ByteSpan *n = in->names[i];
    int hit = 0;
    for (int j = 0; j < NF && !hit; j++) {
      if (!name_is(n, f32_names[j])) continue;
      const XLA_FFI_Scalar *s = in->attrs[i];
      if (in->types[i] != XLA_FFI_AttrType_SCALAR ||
          s->dtype != XLA_FFI_DataType_F32)
        FAIL("attribute %s must be a float32 scalar", f32_names[j]);
      memcpy(f32_fields[j], s->value, sizeof(float));
      seen[j]++;
      hit = 1;
    }
    for (int j = 0; j < NS && !hit; j++) {
      if (!name_is(n, s32_names[j])) continue;
      const XLA_FFI_Scalar *s = in->attrs[i];
      if (in->types[i] != XLA_FFI_AttrType_SCALAR ||
          s->dtype != XLA_FFI_DataType_S32)
        FAIL("attribute %s must be an int32 scalar", s32_names[j]);
      memcpy(s32_fields[j], s->value, sizeof(int32_t));
      seen[NF + j]++;
      hit = 1;
    }
    if (!hit && name_is(n, "isa")) {
      const XLA_FFI_ByteSpan *s = in->attrs[i];
      if (in->types[i] != XLA_FFI_AttrType_STRING)
        FAIL("attribute isa must be a string");
      if (s->len >= sizeof out->isa)
        FAIL("attribute isa: %zu characters, at most %zu", s->len,
             sizeof out->isa - 1);
      memcpy(out->isa, s->ptr, s->len);
      out->isa[s->len] = '\0';
      seen[NF + NS]++;
      hit = 1;
    }
    if (!hit)
      FAIL("unknown attribute %.*s", (int)(n->len > 64 ? 64 : n->len), n->ptr);
  }
  for (int j = 0; j < NF + NS + 1; j++) {
    if (seen[j] != 1) {
      const char *what = j < NF ? f32_names[j]
                         : j < NF + NS ? s32_names[j - NF] : "isa";
      FAIL("attribute %s given %d times, expected once", what, seen[j]);
    }
  }
  return NULL;
}

/* ---- buffers ------------------------------------------------------------ */

static int rpa_dtype_of(XLA_FFI_DataType t, rpa_dtype *out) {
  switch (t) {
    case XLA_FFI_DataType_F32: *out = RPA_F32; return 1;
    case XLA_FFI_DataType_BF16: *out = RPA_BF16; return 1;
    case XLA_FFI_DataType_F16: *out = RPA_F16; return 1;
    case XLA_FFI_DataType_F8E4M3FN: *out = RPA_FP8_E4M3; return 1;
    case XLA_FFI_DataType_F8E5M2: *out = RPA_FP8_E5M2; return 1;
    default: return 0;
  }
}

static int64_t numel(const XLA_FFI_Buffer *b) {
  int64_t n = 1;
  for (int64_t i = 0; i < b->rank; i++) n *= b->dims[i];
  return n;
}

/* A contiguous int32 vector (any rank: page_indices may be 2-D). */
static XLA_FFI_Error *int32_vec(const XLA_FFI_Api *api, const XLA_FFI_Buffer *b,
                                const char *name, const int32_t **data,
                                int64_t *n) {
  if (b->dtype != XLA_FFI_DataType_S32) FAIL("%s must be int32", name);
  *n = numel(b);
  *data = *n ? (const int32_t *)b->data : NULL;
  return NULL;
}

static int64_t elem_size(rpa_dtype t) { return (int64_t)rpa_dtype_size(t); }

/* ---- the handler -------------------------------------------------------- */

static XLA_FFI_Error *metadata(const XLA_FFI_Api *api,
                               XLA_FFI_Metadata_Extension *ext) {
  if (ext->extension_base.struct_size < XLA_FFI_Metadata_Extension_STRUCT_SIZE ||
      ext->metadata->struct_size < XLA_FFI_Metadata_STRUCT_SIZE)
    FAIL("XLA's metadata structures are older than the FFI headers this "
         "handler was built with");
  XLA_FFI_Metadata *m = ext->metadata;
  memset(&m->api_version, 0, sizeof m->api_version);
  m->api_version.struct_size = XLA_FFI_Api_Version_STRUCT_SIZE;
  m->api_version.major_version = XLA_FFI_API_MAJOR;
  m->api_version.minor_version = XLA_FFI_API_MINOR;
  m->traits = 0;
  if (m->struct_size >= offsetof(XLA_FFI_Metadata, state_type_id) +
                            sizeof m->state_type_id)
    m->state_type_id.type_id = 0; /* stateless */
  return NULL;
}

RPA_JAX_EXPORT XLA_FFI_Error *rpa_jax_ragged_paged_attention(
    XLA_FFI_CallFrame *frame);

XLA_FFI_Error *rpa_jax_ragged_paged_attention(XLA_FFI_CallFrame *frame) {
  const XLA_FFI_Api *api = frame->api;
  if (frame->struct_size < XLA_FFI_CallFrame_STRUCT_SIZE)
    FAIL("XLA's call frame is older than the FFI headers this handler was "
         "built with");
  if (frame->extension_start &&
      frame->extension_start->type == XLA_FFI_Extension_Metadata)
    return metadata(api, (XLA_FFI_Metadata_Extension *)frame->extension_start);
  if (frame->stage != XLA_FFI_ExecutionStage_EXECUTE)
    FAIL("called at execution stage %d, only EXECUTE is handled",
         (int)frame->stage);
  if (frame->args.size != NUM_ARGS || frame->rets.size != NUM_RETS)
    FAIL("%lld arguments and %lld results, expected %d and %d",
         (long long)frame->args.size, (long long)frame->rets.size, NUM_ARGS,
         NUM_RETS);
  for (int i = 0; i < NUM_ARGS; i++)
    if (frame->args.types[i] != XLA_FFI_ArgType_BUFFER)
      FAIL("argument %d is not a buffer", i);
  for (int i = 0; i < NUM_RETS; i++)
    if (frame->rets.types[i] != XLA_FFI_RetType_BUFFER)
      FAIL("result %d is not a buffer", i);
  XLA_FFI_Buffer *const *arg = (XLA_FFI_Buffer *const *)frame->args.args;
  XLA_FFI_Buffer *const *ret = (XLA_FFI_Buffer *const *)frame->rets.rets;

  attrs at;
  memset(&at, 0, sizeof at);
  XLA_FFI_Error *err = read_attrs(api, &frame->attrs, &at);
  if (err) return err;

  /* queries [T, Hq, D] and out, its twin. */
  const XLA_FFI_Buffer *q = arg[ARG_QUERIES], *out = ret[RET_OUT];
  rpa_dtype q_dt, out_dt, kv_dt;
  if (q->rank != 3) FAIL("queries must be 3-D [T, Hq, D], got rank %lld",
                         (long long)q->rank);
  if (!rpa_dtype_of(q->dtype, &q_dt) || !rpa_dtype_of(out->dtype, &out_dt) ||
      out_dt != q_dt || out->rank != 3 || out->dims[0] != q->dims[0] ||
      out->dims[1] != q->dims[1] || out->dims[2] != q->dims[2])
    FAIL("the output must be a [T, Hq, D] array of queries' dtype");
  const int64_t T = q->dims[0], Hq = q->dims[1], D = q->dims[2];
  const int64_t Hkv = at.num_kv_heads;

  /* The cache: [P, ps, C, Dc] or [P, ps, C/packing, packing, Dc]. */
  const XLA_FFI_Buffer *cin = arg[ARG_KV_CACHE], *cout = ret[RET_KV_CACHE];
  if (cin->rank != 4 && cin->rank != 5)
    FAIL("kv_cache must be 4-D or 5-D, got rank %lld", (long long)cin->rank);
  if (!rpa_dtype_of(cin->dtype, &kv_dt))
    FAIL("kv_cache: dtype is not float32, bfloat16, float16, float8_e4m3fn "
         "or float8_e5m2");
  if (cout->dtype != cin->dtype || cout->rank != cin->rank)
    FAIL("the cache result must match kv_cache's dtype and shape");
  for (int64_t i = 0; i < cin->rank; i++)
    if (cout->dims[i] != cin->dims[i])
      FAIL("the cache result must match kv_cache's dtype and shape");
  const int64_t P = cin->dims[0], ps = cin->dims[1];
  const int64_t C = cin->rank == 5 ? cin->dims[2] * cin->dims[3] : cin->dims[2];
  const int64_t Dc = cin->dims[cin->rank - 1];
  if (Hkv < 1 || 2 * Hkv > C)
    FAIL("kv_cache: %lld combined rows cannot hold K and V of %lld heads",
         (long long)C, (long long)Hkv);
  /* Upstream pads the 2*Hkv rows up to a multiple of the packing (the
     dtype's elements per 32-bit word, or the 5-D packing axis where
     larger); rows for another head past that are more heads than the keys
     have, refused as rpa.jax refuses them at trace time. */
  int64_t packing = 4 / elem_size(kv_dt);
  if (cin->rank == 5 && cin->dims[3] > packing) packing = cin->dims[3];
  const int64_t padded = (2 * Hkv + packing - 1) / packing * packing;
  if (C - padded >= 2)
    FAIL("kv_cache: %lld combined rows hold K and V of %lld KV heads, more "
         "than the %lld of keys (upstream pads the %lld rows only up to a "
         "multiple of the packing, %lld)",
         (long long)C, (long long)(C / 2), (long long)Hkv,
         (long long)(2 * Hkv), (long long)packing);
  if (D > Dc)
    FAIL("kv_cache: last axis %lld is smaller than the head dim %lld of "
         "queries", (long long)Dc, (long long)D);
  if (P > INT32_MAX || ps > INT32_MAX || T > INT32_MAX || Hq > INT32_MAX ||
      D > INT32_MAX)
    FAIL("a dimension exceeds int32");

  /* keys, values [T, Hkv, D] in the cache dtype; empty when not given. */
  const XLA_FFI_Buffer *k = arg[ARG_KEYS], *v = arg[ARG_VALUES];
  const int have_kv = numel(k) > 0 || numel(v) > 0;
  if (have_kv) {
    for (int i = 0; i < 2; i++) {
      const XLA_FFI_Buffer *b = i ? v : k;
      const char *name = i ? "values" : "keys";
      rpa_dtype t;
      if (!rpa_dtype_of(b->dtype, &t) || t != kv_dt)
        FAIL("%s: dtype differs from kv_cache's", name);
      if (b->rank != 3 || b->dims[0] != T || b->dims[1] != Hkv ||
          b->dims[2] != D)
        FAIL("%s must be [%lld, %lld, %lld]", name, (long long)T,
             (long long)Hkv, (long long)D);
    }
  } else if (at.update_kv_cache) {
    FAIL("keys and values are empty while update_kv_cache is True");
  }

  const int32_t *kv_lens, *page_indices, *cu_q_lens, *distribution;
  int64_t S, n_pi, n_cu, n_dist;
  if ((err = int32_vec(api, arg[ARG_KV_LENS], "kv_lens", &kv_lens, &S)) ||
      (err = int32_vec(api, arg[ARG_PAGE_INDICES], "page_indices",
                       &page_indices, &n_pi)) ||
      (err = int32_vec(api, arg[ARG_CU_Q_LENS], "cu_q_lens", &cu_q_lens,
                       &n_cu)) ||
      (err = int32_vec(api, arg[ARG_DISTRIBUTION], "distribution",
                       &distribution, &n_dist)))
    return err;
  if (S > INT32_MAX) FAIL("kv_lens: too many sequences");
  if (n_cu != S + 1)
    FAIL("cu_q_lens has %lld entries for %lld sequences, expected %lld",
         (long long)n_cu, (long long)S, (long long)(S + 1));
  if (n_dist != 0 && n_dist != 3)
    FAIL("distribution has %lld entries, expected 3", (long long)n_dist);
  if (S > 0 && n_pi % S)
    FAIL("page_indices: %lld entries are not a multiple of the %lld "
         "sequences", (long long)n_pi, (long long)S);
  const int64_t pages_per_seq = S > 0 ? n_pi / S : 0;
  if (pages_per_seq > INT32_MAX) FAIL("page_indices: too many pages");

  const XLA_FFI_Buffer *sinks = arg[ARG_SINKS];
  if (numel(sinks) != 0 &&
      (sinks->dtype != XLA_FFI_DataType_F32 || numel(sinks) != Hq))
    FAIL("attention_sink must be float32 [%lld]", (long long)Hq);

  /* The cache result is the cache argument's buffer (see the top of this
     file); anything else would leave the result unwritten. */
  if (cout->data != cin->data)
    FAIL("XLA passed the cache result in its own buffer although it aliases "
         "kv_cache (input_output_aliases={3: 1} is required)");
  void *cache = cout->data;

  rpa_args a = rpa_args_default();
  a.num_tokens = (int32_t)T;
  a.num_q_heads = (int32_t)Hq;
  a.num_kv_heads = (int32_t)Hkv;
  a.head_dim = (int32_t)D;
  a.head_dim_v = (int32_t)D;
  a.q = (rpa_tensor){q->data, q_dt, Hq * D, D};
  a.out = (rpa_tensor){out->data, q_dt, Hq * D, D};
  a.k = (rpa_tensor){have_kv ? k->data : NULL, kv_dt, Hkv * D, D};
  a.v = (rpa_tensor){have_kv ? v->data : NULL, kv_dt, Hkv * D, D};
  a.cache.k = cache;
  a.cache.v = (char *)cache + Dc * elem_size(kv_dt);
  a.cache.dtype = kv_dt;
  a.cache.num_pages = (int32_t)P;
  a.cache.page_size = (int32_t)ps;
  a.cache.k_page_stride = a.cache.v_page_stride = ps * C * Dc;
  a.cache.k_slot_stride = a.cache.v_slot_stride = C * Dc;
  a.cache.k_head_stride = a.cache.v_head_stride = 2 * Dc;
  a.num_seqs = (int32_t)S;
  a.cu_q_lens = cu_q_lens;
  a.kv_lens = kv_lens;
  a.page_indices = page_indices;
  a.pages_per_seq = (int32_t)pages_per_seq;
  a.distribution = n_dist ? distribution : NULL;
  a.q_scale = at.q_scale;
  a.sm_scale = at.sm_scale;
  a.k_scale = at.k_scale;
  a.v_scale = at.v_scale;
  a.soft_cap = at.soft_cap;
  a.causal = at.causal;
  a.sliding_window = at.sliding_window;
  a.sinks = numel(sinks) ? (const float *)sinks->data : NULL;
  a.update_kv_cache = at.update_kv_cache;

  rpa_status st;
  pooled *p = pool_take(at.num_threads, at.isa, &st);
  if (!p)
    FAIL("rpa_context_create: %s (kernel set '%s', num_threads=%d)",
         rpa_status_string(st), at.isa[0] ? at.isa : "default",
         (int)at.num_threads);
  st = rpa_attention(p->ctx, &a);
  if (st != RPA_OK) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s: %s", rpa_status_string(st),
             rpa_context_last_error(p->ctx));
    pool_give_back(p);
    return make_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, msg);
  }
  pool_give_back(p);

  /* Rows past the last computed sequence are padding: zero, as the NumPy
     call leaves them (XLA's result buffer starts uninitialised). */
  int64_t n_done = n_dist ? distribution[2] : S;
  int64_t rows = S > 0 ? cu_q_lens[n_done] : 0;
  if (rows < T)
    memset((char *)out->data + rows * Hq * D * elem_size(q_dt), 0,
           (size_t)((T - rows) * Hq * D * elem_size(q_dt)));
  return NULL;
}
