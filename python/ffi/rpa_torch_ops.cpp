// rpa's PyTorch operators: rpa::attention (the strided call) and
// rpa::ragged_paged_attention (upstream RPA v3's call, combined cache), for
// rpa.torch (python/rpa/torch.py loads this library with
// torch.ops.load_library and registers their fake kernels).
//
// A thin shim: each op checks its tensors (device, dtype, rank, strides, and
// that the cache views stay inside the cache tensor), fills one rpa_args
// with their data pointers and element strides (no copy, any dtype rpa
// takes) and calls rpa_attention from librpa. The cache is the op's mutated
// argument (`Tensor(a!)`), the whole tensor, and the K and V views are
// described by an element offset into it and their strides: so a K page and
// the neighbouring V page are two views of one buffer that never overlap,
// and torch.compile sees one in-place mutation of one graph input.
//
// Contexts: each calling thread keeps its own rpa_context per (thread
// count, kernel set), created on first use and destroyed when the thread
// exits. Thread count 0 follows torch's intra-op thread count
// (at::get_num_threads()) at the time of the call.
//
// Errors: a wrong argument raises ValueError (TORCH_CHECK_VALUE) naming it;
// what the library rejects raises ValueError with the library's message
// (rpa_context_last_error) and status name; an allocation failure in the
// library raises torch.OutOfMemoryError. Nothing is written then.
//
// Only <torch/library.h>-level headers: no <torch/extension.h>, no pybind,
// to keep the build short.
#include <ATen/core/Tensor.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <time.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "rpa.h"

namespace {

// ---- contexts --------------------------------------------------------------

struct ThreadContexts {
  struct Entry {
    int num_threads;
    std::string isa;
    rpa_context *ctx;
  };
  std::vector<Entry> entries;
  ~ThreadContexts() {
    for (auto &e : entries) rpa_context_destroy(e.ctx);
  }
};

thread_local ThreadContexts tl_contexts;

rpa_context *context_for(int64_t num_threads, c10::string_view isa_view) {
  TORCH_CHECK_VALUE(num_threads >= 0 && num_threads <= 4096,
                    "rpa: num_threads ", num_threads,
                    " must be 0 (torch's thread count) or in [1, 4096]");
  int n = num_threads == 0 ? at::get_num_threads() : (int)num_threads;
  if (n < 1) n = 1;
  std::string isa(isa_view.data(), isa_view.size());
  for (auto &e : tl_contexts.entries)
    if (e.num_threads == n && e.isa == isa) return e.ctx;
  rpa_context_options opts = rpa_context_options_default();
  opts.num_threads = n;
  opts.isa = isa.empty() ? nullptr : isa.c_str();
  rpa_context *ctx = nullptr;
  rpa_status st = rpa_context_create(&opts, &ctx);
  TORCH_CHECK_VALUE(st == RPA_OK, "rpa: rpa_context_create: ",
                    rpa_status_string(st), " (kernel set '",
                    isa.empty() ? "default" : isa, "', num_threads ", n, ")");
  tl_contexts.entries.push_back({n, isa, ctx});
  return ctx;
}

const char *status_name(rpa_status st) {
  switch (st) {
#define RPA_STATUS_NAME_(name, code, text) \
  case RPA_##name:                         \
    return "RPA_" #name;
    RPA_STATUS_MAP(RPA_STATUS_NAME_)
#undef RPA_STATUS_NAME_
  }
  return "RPA_UNKNOWN";
}

// Seconds the last rpa_attention call of this thread took (two clock reads
// around it): lets a benchmark tell the op's own cost from the library's.
thread_local double tl_last_call_seconds = 0.0;
// The worker-thread count of the context the last call used.
thread_local int tl_last_call_threads = 0;

double seconds_now() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void run(rpa_context *ctx, const rpa_args &a) {
  tl_last_call_threads = rpa_context_num_threads(ctx);
  double t0 = seconds_now();
  rpa_status st = rpa_attention(ctx, &a);
  tl_last_call_seconds = seconds_now() - t0;
  if (st == RPA_OK) return;
  const char *msg = rpa_context_last_error(ctx);
  if (!msg || !*msg) msg = rpa_status_string(st);
  if (st == RPA_OUT_OF_MEMORY)
    TORCH_CHECK_WITH(OutOfMemoryError, false, "rpa: ", msg, " [",
                     status_name(st), "]");
  TORCH_CHECK_VALUE(false, "rpa: ", msg, " [", status_name(st), "]");
}

// ---- argument checks -------------------------------------------------------

bool dtype_of(at::ScalarType t, rpa_dtype *out) {
  switch (t) {
    case at::kFloat: *out = RPA_F32; return true;
    case at::kBFloat16: *out = RPA_BF16; return true;
    case at::kHalf: *out = RPA_F16; return true;
    case at::kFloat8_e4m3fn: *out = RPA_FP8_E4M3; return true;
    case at::kFloat8_e5m2: *out = RPA_FP8_E5M2; return true;
    default: return false;
  }
}

rpa_dtype cache_dtype(const char *name, const at::Tensor &t) {
  rpa_dtype d;
  TORCH_CHECK_VALUE(dtype_of(t.scalar_type(), &d), "rpa: ", name, ": dtype ",
                    t.scalar_type(), " is not float32, bfloat16, float16, "
                    "float8_e4m3fn or float8_e5m2");
  return d;
}

rpa_dtype io_dtype(const char *name, at::ScalarType t) {
  rpa_dtype d;
  TORCH_CHECK_VALUE(dtype_of(t, &d) && (d == RPA_F32 || d == RPA_BF16 ||
                                        d == RPA_F16),
                    "rpa: ", name, ": dtype ", t,
                    " is not float32, bfloat16 or float16");
  return d;
}

void on_cpu(const char *name, const at::Tensor &t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "rpa: ", name,
                    ": must be a CPU tensor, got device ", t.device());
}

// A [T, H, D] tensor as an rpa_tensor: element strides, D contiguous.
rpa_tensor dense3(const char *name, const at::Tensor &t, rpa_dtype dt,
                  int64_t T, int64_t H, int64_t D) {
  on_cpu(name, t);
  TORCH_CHECK_VALUE(t.dim() == 3, "rpa: ", name, ": expected 3 dimensions [",
                    T, ", ", H, ", ", D, "], got ", t.sizes());
  TORCH_CHECK_VALUE(t.size(0) == T && t.size(1) == H && t.size(2) == D,
                    "rpa: ", name, ": expected shape [", T, ", ", H, ", ", D,
                    "], got ", t.sizes());
  for (int i = 0; i < 3; i++)
    TORCH_CHECK_VALUE(t.stride(i) >= 0 || t.size(i) <= 1, "rpa: ", name,
                      ": negative stride ", t.stride(i), " on axis ", i);
  TORCH_CHECK_VALUE(t.stride(2) == 1 || D <= 1, "rpa: ", name,
                    ": the last axis must be contiguous (stride ", t.stride(2),
                    ")");
  rpa_tensor r;
  r.data = t.data_ptr();
  r.dtype = dt;
  r.token_stride = T > 1 ? t.stride(0) : 0;
  r.head_stride = H > 1 ? t.stride(1) : 0;
  return r;
}

// A 1-D int32 tensor of n elements, contiguous.
const int32_t *i32(const char *name, const at::Tensor &t, int64_t n) {
  on_cpu(name, t);
  TORCH_CHECK_VALUE(t.scalar_type() == at::kInt, "rpa: ", name,
                    ": expected int32, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1, "rpa: ", name,
                    ": expected 1 dimension, got shape ", t.sizes());
  if (n >= 0)
    TORCH_CHECK_VALUE(t.size(0) == n, "rpa: ", name, ": expected ", n,
                      " elements, got ", t.size(0));
  TORCH_CHECK_VALUE(t.is_contiguous(), "rpa: ", name, ": must be contiguous");
  return t.data_ptr<int32_t>();
}

int32_t fits_i32(const char *name, int64_t v) {
  TORCH_CHECK_VALUE(v >= 0 && v <= std::numeric_limits<int32_t>::max(),
                    "rpa: ", name, ": ", v, " does not fit in int32");
  return (int32_t)v;
}

// The cache views, in elements of the cache tensor: 13 integers
//   [k_offset, num_pages, page_size, num_kv_heads, head_dim,
//    k_page_stride, k_slot_stride, k_head_stride,
//    v_offset, head_dim_v, v_page_stride, v_slot_stride, v_head_stride]
// or the first 8 alone for a latent (MLA) cache (no V view). One list, as
// converting each list argument from Python costs about a microsecond.
struct View {
  int64_t offset, dim, ps, ss, hs;
};

void check_view(const char *name, const View &w, int64_t pages,
                int64_t page_size, int64_t heads, int64_t numel) {
  TORCH_CHECK_VALUE(w.offset >= 0, "rpa: cache_view: negative ", name,
                    " offset ", w.offset);
  TORCH_CHECK_VALUE(w.dim >= 1, "rpa: cache_view: ", name, " head_dim ",
                    w.dim, " must be >= 1");
  TORCH_CHECK_VALUE(w.ps >= 0 && w.ss >= 0 && w.hs >= 0,
                    "rpa: cache_view: negative ", name, " stride (", w.ps,
                    ", ", w.ss, ", ", w.hs, ")");
  // Last element addressed, in 128 bits so that no product overflows.
  __int128 last = (__int128)w.offset + (__int128)(pages - 1) * w.ps +
                  (__int128)(page_size - 1) * w.ss +
                  (__int128)(heads - 1) * w.hs + (w.dim - 1);
  TORCH_CHECK_VALUE(last < (__int128)numel, "rpa: cache_view: the ", name,
                    " view reaches element ",
                    (int64_t)std::min<__int128>(
                        last, std::numeric_limits<int64_t>::max()),
                    " of a cache tensor of ", numel, " elements");
}

void zero_tail(at::Tensor &t, const at::Tensor &cu_q_lens, int64_t S) {
  // Rows past cu_q_lens[S] are padding: rpa does not write them; give them
  // zeros, as the NumPy call does. A bad cu_q_lens is left for the library
  // to report.
  int64_t T = t.size(0);
  int64_t end = cu_q_lens.data_ptr<int32_t>()[S];
  if (end >= 0 && end < T) t.narrow(0, end, T - end).zero_();
}

// ---- rpa::attention --------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> attention_impl(
    const at::Tensor &q, const std::optional<at::Tensor> &k,
    const std::optional<at::Tensor> &v, at::Tensor &cache,
    at::IntArrayRef cache_view, const at::Tensor &kv_lens,
    const at::Tensor &page_indices, const at::Tensor &cu_q_lens,
    double sm_scale, const std::optional<at::Tensor> &distribution,
    const std::optional<at::Tensor> &sinks, double k_scale, double v_scale,
    double q_scale, double soft_cap, int64_t sliding_window, bool causal,
    bool update_kv_cache, int64_t head_dim_v,
    std::optional<at::ScalarType> out_dtype, bool return_lse,
    int64_t num_threads, c10::string_view isa) {
  on_cpu("q", q);
  on_cpu("cache", cache);
  TORCH_CHECK_VALUE(q.dim() == 3, "rpa: q: expected [T, Hq, D], got shape ",
                    q.sizes());
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2);
  rpa_dtype qd = io_dtype("q", q.scalar_type());
  rpa_dtype cd = cache_dtype("cache", cache);
  TORCH_CHECK_VALUE(cache.is_contiguous(), "rpa: cache: must be contiguous "
                    "(the whole buffer that cache_view describes)");
  const size_t nv = cache_view.size();
  TORCH_CHECK_VALUE(nv == 13 || nv == 8,
                    "rpa: cache_view: expected 13 integers [k_offset, "
                    "num_pages, page_size, num_kv_heads, head_dim, "
                    "k_page_stride, k_slot_stride, k_head_stride, v_offset, "
                    "head_dim_v, v_page_stride, v_slot_stride, v_head_stride]"
                    " (or the first 8 for a latent cache), got ", nv);
  const int64_t P = cache_view[1], ps = cache_view[2], Hkv = cache_view[3];
  TORCH_CHECK_VALUE(P >= 1 && ps >= 1 && Hkv >= 1, "rpa: cache_view: "
                    "num_pages, page_size and num_kv_heads must be >= 1, got ",
                    P, ", ", ps, ", ", Hkv);
  const int64_t numel = cache.numel();
  View kw{cache_view[0], cache_view[4], cache_view[5], cache_view[6],
          cache_view[7]};
  check_view("K", kw, P, ps, Hkv, numel);
  TORCH_CHECK_VALUE(kw.dim == D, "rpa: cache_view: head_dim ", kw.dim,
                    " differs from q's ", D);
  const bool latent = nv == 8;
  int64_t Dv;
  View vw{};
  if (latent) {
    Dv = head_dim_v > 0 ? head_dim_v : D;
    TORCH_CHECK_VALUE(Dv <= D, "rpa: head_dim_v: ", Dv,
                      " exceeds head_dim ", D, " of a latent cache");
  } else {
    vw = View{cache_view[8], cache_view[9], cache_view[10], cache_view[11],
              cache_view[12]};
    check_view("V", vw, P, ps, Hkv, numel);
    Dv = vw.dim;
    TORCH_CHECK_VALUE(head_dim_v <= 0 || head_dim_v == Dv, "rpa: head_dim_v: ",
                      head_dim_v, " differs from the V view's head_dim ", Dv);
  }
  const int64_t S = kv_lens.dim() == 1 ? kv_lens.size(0) : -1;

  rpa_args a = rpa_args_default();
  a.num_tokens = fits_i32("q: T", T);
  a.num_q_heads = fits_i32("q: Hq", Hq);
  a.num_kv_heads = fits_i32("cache_view: num_kv_heads", Hkv);
  a.head_dim = fits_i32("q: D", D);
  a.head_dim_v = fits_i32("head_dim_v", Dv);
  a.q = dense3("q", q, qd, T, Hq, D);
  if (k.has_value()) {
    TORCH_CHECK_VALUE(k->scalar_type() == cache.scalar_type(), "rpa: k: dtype ",
                      k->scalar_type(), " differs from the cache's ",
                      cache.scalar_type());
    a.k = dense3("k", *k, cd, T, Hkv, D);
  } else {
    TORCH_CHECK_VALUE(!update_kv_cache,
                      "rpa: k: None while update_kv_cache is True");
    a.k.dtype = cd;
  }
  if (v.has_value()) {
    TORCH_CHECK_VALUE(!latent, "rpa: v: must be None with a latent cache "
                      "(no V view): values are part of each key row");
    TORCH_CHECK_VALUE(v->scalar_type() == cache.scalar_type(), "rpa: v: dtype ",
                      v->scalar_type(), " differs from the cache's ",
                      cache.scalar_type());
    a.v = dense3("v", *v, cd, T, Hkv, Dv);
  } else {
    TORCH_CHECK_VALUE(!update_kv_cache || latent,
                      "rpa: v: None while update_kv_cache is True");
    a.v.dtype = cd;
  }

  a.kv_lens = i32("kv_lens", kv_lens, -1);
  a.num_seqs = fits_i32("kv_lens: length", S);
  a.cu_q_lens = i32("cu_q_lens", cu_q_lens, S + 1);
  at::Tensor pi = page_indices;
  on_cpu("page_indices", pi);
  if (pi.dim() == 2) {
    TORCH_CHECK_VALUE(pi.size(0) == S, "rpa: page_indices: ", pi.size(0),
                      " rows for ", S, " sequences (len(kv_lens))");
    TORCH_CHECK_VALUE(pi.is_contiguous(),
                      "rpa: page_indices: must be contiguous");
    pi = pi.view({-1});
  }
  a.page_indices = i32("page_indices", pi, -1);
  const int64_t n_pi = pi.size(0);
  TORCH_CHECK_VALUE(S == 0 || n_pi % S == 0, "rpa: page_indices: ", n_pi,
                    " entries are not a multiple of the ", S,
                    " sequences (len(kv_lens))");
  a.pages_per_seq = S ? fits_i32("page_indices: pages per sequence", n_pi / S)
                      : 0;
  if (distribution.has_value())
    a.distribution = i32("distribution", *distribution, 3);
  if (sinks.has_value()) {
    on_cpu("sinks", *sinks);
    TORCH_CHECK_VALUE(sinks->scalar_type() == at::kFloat,
                      "rpa: sinks: expected float32, got ",
                      sinks->scalar_type());
    TORCH_CHECK_VALUE(sinks->dim() == 1 && sinks->size(0) == Hq &&
                          sinks->is_contiguous(),
                      "rpa: sinks: expected a contiguous [", Hq,
                      "] tensor, got shape ", sinks->sizes());
    a.sinks = sinks->data_ptr<float>();
  }
  a.sm_scale = (float)sm_scale;
  a.k_scale = (float)k_scale;
  a.v_scale = (float)v_scale;
  TORCH_CHECK_VALUE(q_scale >= 0 && soft_cap >= 0 && sliding_window >= 0,
                    "rpa: q_scale, soft_cap and sliding_window must be 0 "
                    "(off) or > 0, got ", q_scale, ", ", soft_cap, ", ",
                    sliding_window);
  a.q_scale = (float)q_scale;
  a.soft_cap = (float)soft_cap;
  a.sliding_window = (int32_t)std::min<int64_t>(
      sliding_window, std::numeric_limits<int32_t>::max());
  a.causal = causal ? 1 : 0;
  a.update_kv_cache = update_kv_cache ? 1 : 0;

  at::ScalarType ot = out_dtype.has_value() ? *out_dtype : q.scalar_type();
  rpa_dtype od = io_dtype("out_dtype", ot);
  at::Tensor out = at::detail::empty_cpu({T, Hq, Dv}, ot, false, std::nullopt);
  a.out.data = out.data_ptr();
  a.out.dtype = od;
  a.out.token_stride = Hq * Dv;
  a.out.head_stride = Dv;
  at::Tensor lse;
  if (return_lse) {
    lse = at::detail::empty_cpu({T, Hq}, at::kFloat, false, std::nullopt);
    a.lse = lse.data_ptr<float>();
    a.lse_token_stride = Hq;
    a.lse_head_stride = 1;
  }

  char *base = static_cast<char *>(cache.data_ptr());
  const int64_t item = (int64_t)cache.element_size();
  a.cache.dtype = cd;
  a.cache.num_pages = fits_i32("cache_view: num_pages", P);
  a.cache.page_size = fits_i32("cache_view: page_size", ps);
  a.cache.k = base + kw.offset * item;
  a.cache.k_page_stride = kw.ps;
  a.cache.k_slot_stride = kw.ss;
  a.cache.k_head_stride = kw.hs;
  if (!latent) {
    a.cache.v = base + vw.offset * item;
    a.cache.v_page_stride = vw.ps;
    a.cache.v_slot_stride = vw.ss;
    a.cache.v_head_stride = vw.hs;
  } else {
    a.cache.v = nullptr;
  }

  zero_tail(out, cu_q_lens, S);
  if (return_lse) zero_tail(lse, cu_q_lens, S);
  run(context_for(num_threads, isa), a);
  return {out, lse};
}

// The two registered forms: without and with the log-sum-exp (separate
// ops, so that the common one allocates and returns one tensor only).
#define ATTENTION_PARAMS                                                      \
  const at::Tensor &q, const std::optional<at::Tensor> &k,                    \
      const std::optional<at::Tensor> &v, at::Tensor &cache,                  \
      at::IntArrayRef cache_view, const at::Tensor &kv_lens,                  \
      const at::Tensor &page_indices, const at::Tensor &cu_q_lens,            \
      double sm_scale, const std::optional<at::Tensor> &distribution,         \
      const std::optional<at::Tensor> &sinks, double k_scale, double v_scale, \
      double q_scale, double soft_cap, int64_t sliding_window, bool causal,   \
      bool update_kv_cache, int64_t head_dim_v,                               \
      std::optional<at::ScalarType> out_dtype, int64_t num_threads,           \
      c10::string_view isa
#define ATTENTION_FORWARD(lse)                                              \
  q, k, v, cache, cache_view, kv_lens, page_indices, cu_q_lens, sm_scale,   \
      distribution, sinks, k_scale, v_scale, q_scale, soft_cap,             \
      sliding_window, causal, update_kv_cache, head_dim_v, out_dtype, lse,  \
      num_threads, isa

at::Tensor attention(ATTENTION_PARAMS) {
  return std::get<0>(attention_impl(ATTENTION_FORWARD(false)));
}

std::tuple<at::Tensor, at::Tensor> attention_lse(ATTENTION_PARAMS) {
  return attention_impl(ATTENTION_FORWARD(true));
}

// ---- rpa::ragged_paged_attention (upstream RPA v3) -------------------------

at::Tensor ragged_paged_attention(
    const at::Tensor &queries, const std::optional<at::Tensor> &keys,
    const std::optional<at::Tensor> &values, at::Tensor &kv_cache,
    const at::Tensor &kv_lens, const at::Tensor &page_indices,
    const at::Tensor &cu_q_lens, const std::optional<at::Tensor> &distribution,
    double sm_scale, std::optional<int64_t> sliding_window,
    std::optional<double> soft_cap, std::optional<double> q_scale,
    std::optional<double> k_scale, std::optional<double> v_scale,
    bool use_causal_mask, bool update_kv_cache,
    const std::optional<at::Tensor> &attention_sink, int64_t num_threads,
    c10::string_view isa) {
  on_cpu("kv_cache", kv_cache);
  TORCH_CHECK_VALUE(queries.dim() == 3,
                    "rpa: queries: expected [T, Hq, D], got shape ",
                    queries.sizes());
  const int64_t D = queries.size(2);
  TORCH_CHECK_VALUE(kv_cache.dim() == 4 || kv_cache.dim() == 5,
                    "rpa: kv_cache: expected [num_pages, page_size, 2*Hkv, D] "
                    "or [num_pages, page_size, 2*Hkv // packing, packing, D], "
                    "got shape ", kv_cache.sizes());
  TORCH_CHECK_VALUE(kv_cache.is_contiguous(),
                    "rpa: kv_cache: must be contiguous");
  const int64_t P = kv_cache.size(0), ps = kv_cache.size(1);
  const int64_t rows = kv_cache.dim() == 5 ? kv_cache.size(2) * kv_cache.size(3)
                                           : kv_cache.size(2);
  const int64_t Dc = kv_cache.size(-1);
  TORCH_CHECK_VALUE(Dc >= D, "rpa: kv_cache: last axis ", Dc,
                    " is smaller than the head dim ", D, " of queries");
  int64_t Hkv;
  if (keys.has_value()) {
    TORCH_CHECK_VALUE(keys->dim() == 3, "rpa: keys: expected [T, Hkv, D], "
                      "got shape ", keys->sizes());
    Hkv = keys->size(1);
  } else {
    TORCH_CHECK_VALUE(!update_kv_cache,
                      "rpa: keys: None while update_kv_cache is True");
    Hkv = rows / 2;
  }
  TORCH_CHECK_VALUE(Hkv >= 1 && 2 * Hkv <= rows, "rpa: kv_cache: ", rows,
                    " combined rows cannot hold K and V of ", Hkv, " heads");
  auto positive = [](const char *name, const auto &opt) -> double {
    if (!opt.has_value()) return 0.0;
    double x = (double)*opt;
    TORCH_CHECK_VALUE(x > 0 && x < std::numeric_limits<double>::infinity(),
                      "rpa: ", name, ": ", x,
                      " must be None (off) or > 0 and finite");
    return x;
  };
  double sw = positive("sliding_window", sliding_window);
  const int64_t rs = rows * Dc;
  std::vector<int64_t> view = {0,  P,  ps, Hkv,    D, ps * rs, rs, 2 * Dc,
                               Dc, D, ps * rs, rs, 2 * Dc};
  return attention(
      queries, keys, values, kv_cache, view, kv_lens, page_indices, cu_q_lens,
      sm_scale, distribution, attention_sink,
      k_scale.has_value() ? *k_scale : 1.0,
      v_scale.has_value() ? *v_scale : 1.0, positive("q_scale", q_scale),
      positive("soft_cap", soft_cap),
      (int64_t)std::min<double>(sw, std::numeric_limits<int32_t>::max()),
      use_causal_mask, update_kv_cache, 0, std::nullopt, num_threads, isa);
}

}  // namespace

#define ATTENTION_ARGS \
  "Tensor? k, Tensor? v, Tensor(a!) cache, int[] cache_view, "\
  "Tensor kv_lens, Tensor page_indices, Tensor cu_q_lens, "\
  "float sm_scale=1.0, Tensor? distribution=None, Tensor? sinks=None, "\
  "float k_scale=1.0, float v_scale=1.0, float q_scale=0.0, "\
  "float soft_cap=0.0, int sliding_window=0, bool causal=True, "\
  "bool update_kv_cache=True, int head_dim_v=0, ScalarType? out_dtype=None, "\
  "int num_threads=0, str isa=\"\")"

TORCH_LIBRARY(rpa, m) {
  m.def("attention(Tensor q, " ATTENTION_ARGS " -> Tensor");
  m.def("attention_lse(Tensor q, " ATTENTION_ARGS " -> (Tensor, Tensor)");
  m.def(
      "ragged_paged_attention(Tensor queries, Tensor? keys, Tensor? values, "
      "Tensor(a!) kv_cache, Tensor kv_lens, Tensor page_indices, "
      "Tensor cu_q_lens, Tensor? distribution=None, float sm_scale=1.0, "
      "int? sliding_window=None, float? soft_cap=None, float? q_scale=None, "
      "float? k_scale=None, float? v_scale=None, bool use_causal_mask=True, "
      "bool update_kv_cache=True, Tensor? attention_sink=None, "
      "int num_threads=0, str isa=\"\") -> Tensor");
}

TORCH_LIBRARY_IMPL(rpa, CPU, m) {
  m.impl("attention", &attention);
  m.impl("attention_lse", &attention_lse);
  m.impl("ragged_paged_attention", &ragged_paged_attention);
}

// How long the calling thread's last rpa_attention call took, in seconds
// (python/benchmarks/torch_overhead.py subtracts it from the op's time).
extern "C" __attribute__((visibility("default"))) double
rpa_torch_last_call_seconds(void) {
  return tl_last_call_seconds;
}

// The thread count of the context the calling thread's last call used.
extern "C" __attribute__((visibility("default"))) int
rpa_torch_last_call_threads(void) {
  return tl_last_call_threads;
}

// The library version the shim was built against, for rpa.torch to check.
extern "C" __attribute__((visibility("default"))) int
rpa_torch_header_version(void) {
  return RPA_VERSION_NUMBER;
}
