"""rpa.torch: rpa's calls as PyTorch operators (CPU tensors).

Two operators, registered by a small compiled library (librpa_torch.so,
python/ffi/rpa_torch_ops.cpp, shipped next to librpa.so) with
``TORCH_LIBRARY``, each with a fake (meta) kernel registered here so that
``torch.compile(fullgraph=True)`` traces them:

- ``torch.ops.rpa.attention``: the strided call (``rpa.attention`` of the
  NumPy package): any paged cache layout, described as element offsets and
  strides into ONE cache tensor, which is the op's mutated argument
  (``Tensor(a!)``) and is updated in place by the fused KV write.
- ``torch.ops.rpa.ragged_paged_attention``: upstream RPA v3's call over the
  combined cache ``[pages, page_size, 2*Hkv, D]`` (or 5-D with a packing
  axis), also updated in place.

The functions below, ``attention()`` and ``ragged_paged_attention()``, are
the same calls with the NumPy package's argument lists; they turn cache
views into (offset, strides) and None-valued options into the op's
arguments. Every dtype rpa takes goes through without a copy: q and out
float32, bfloat16 or float16; the cache (and k, v) also float8_e4m3fn and
float8_e5m2. Results are bitwise those of the NumPy call on the same inputs,
kernel set and thread count.

Threads: ``num_threads=None`` follows ``torch.get_num_threads()`` at each
call. Each calling thread has its own library context per (thread count,
kernel set), created on first use and freed when the thread exits.

Errors raise ValueError naming the argument, or carrying the library's
message (rpa_context_last_error) and status name for what the library
rejects; nothing is written then. The ops are for inference: they have no
autograd formula.
"""
import ctypes
import json
import os

import torch

from . import _api
from . import _lib

__all__ = ["attention", "ragged_paged_attention", "cache_views", "cache_view",
           "layout_view",
           "library_path", "op_info"]

_LIBNAME = "librpa_torch.so"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _build_note():
    """What the package's build recorded about the torch op (or None)."""
    try:
        with open(os.path.join(_HERE, "_build_info.json")) as f:
            return json.load(f).get("torch")
    except (OSError, ValueError):
        return None


def _find():
    env = os.environ.get("RPA_TORCH_LIBRARY")
    if env:
        return [("RPA_TORCH_LIBRARY", env)]
    # Next to the librpa the package loaded, so the two always match (the
    # shim's librpa.so.0 dependency resolves to that already loaded library).
    return [("next to librpa", os.path.join(os.path.dirname(_lib.library_path),
                                             _LIBNAME))]


def _load():
    note = _build_note()
    why = ""
    if note and not note.get("built"):
        why = f" It was not built when this package was installed: " \
              f"{note.get('reason', 'no reason recorded')}."
    handle, path = _lib.load_first(
        _find(), "rpa.torch: cannot find librpa_torch.so",
        "It is built by `pip install ./python` when torch (with its C++ "
        "headers) is importable by the Python running the build: install "
        "torch first, then `pip install --no-build-isolation ./python`, or "
        "set RPA_TORCH_PREFIX to torch's package directory "
        "(os.path.dirname(torch.__file__))." + why)
    built_for = note.get("torch_version") if note else None
    if built_for and built_for != torch.__version__ and \
            not os.environ.get("RPA_TORCH_LIBRARY"):
        raise ImportError(
            f"rpa.torch: {path} was built against torch {built_for}, but "
            f"torch {torch.__version__} is imported; torch's C++ ABI differs "
            "between versions: reinstall the package (`pip install "
            "--no-build-isolation ./python`) with this torch")
    version_fn = handle.rpa_torch_header_version
    version_fn.restype = ctypes.c_int
    if version_fn() != _lib.lib.rpa_version_number():
        raise ImportError(
            f"rpa.torch: {path} was built against rpa header version "
            f"{version_fn()}, the loaded librpa is {_lib.lib.rpa_version_number()}"
            f" ({_lib.library_path}); reinstall the package")
    torch.ops.load_library(path)
    return path


library_path = _load()


# ---- fake (meta) kernels: shapes and dtypes only, for torch.compile ------

def _attention_out(q, cache_view, head_dim_v, out_dtype):
    T, Hq, D = q.shape
    if len(cache_view) == 13:
        dv = cache_view[9]
    else:
        dv = head_dim_v if head_dim_v > 0 else D
    return q.new_empty((T, Hq, dv), dtype=q.dtype if out_dtype is None
                       else out_dtype)


@torch.library.register_fake("rpa::attention")
def _attention_fake(q, k, v, cache, cache_view, kv_lens, page_indices,
                    cu_q_lens, sm_scale=1.0, distribution=None, sinks=None,
                    k_scale=1.0, v_scale=1.0, q_scale=0.0, soft_cap=0.0,
                    sliding_window=0, causal=True, update_kv_cache=True,
                    head_dim_v=0, out_dtype=None, num_threads=0, isa=""):
    return _attention_out(q, cache_view, head_dim_v, out_dtype)


@torch.library.register_fake("rpa::attention_lse")
def _attention_lse_fake(q, k, v, cache, cache_view, kv_lens, page_indices,
                        cu_q_lens, sm_scale=1.0, distribution=None,
                        sinks=None, k_scale=1.0, v_scale=1.0, q_scale=0.0,
                        soft_cap=0.0, sliding_window=0, causal=True,
                        update_kv_cache=True, head_dim_v=0, out_dtype=None,
                        num_threads=0, isa=""):
    return (_attention_out(q, cache_view, head_dim_v, out_dtype),
            q.new_empty(q.shape[:2], dtype=torch.float32))


@torch.library.register_fake("rpa::ragged_paged_attention")
def _rpa_v3_fake(queries, keys, values, kv_cache, kv_lens, page_indices,
                 cu_q_lens, distribution=None, sm_scale=1.0,
                 sliding_window=None, soft_cap=None, q_scale=None,
                 k_scale=None, v_scale=None, use_causal_mask=True,
                 update_kv_cache=True, attention_sink=None, num_threads=0,
                 isa=""):
    return torch.empty_like(queries)


# ---- the calls -------------------------------------------------------------

_attention_op = torch.ops.rpa.attention.default
_attention_lse_op = torch.ops.rpa.attention_lse.default
_v3_op = torch.ops.rpa.ragged_paged_attention.default


def _root(t):
    return t if t._base is None else t._base


def _cache_base(k_cache, v_cache):
    """The tensor both views were made from (their common ._base), viewed in
    their dtype; ValueError when there is none."""
    base = _root(k_cache)
    if v_cache is not None and _root(v_cache) is not base:
        raise ValueError(
            "k_cache, v_cache: not views of one tensor (their ._base "
            "differ): pass the tensor that holds both as cache=")
    if base.dtype != k_cache.dtype:
        try:
            base = base.view(k_cache.dtype)
        except RuntimeError as e:
            raise ValueError(
                f"cache: the views' base tensor is {base.dtype} and cannot "
                f"be viewed as {k_cache.dtype} ({e}); pass cache=") from None
    return base


def _check_view(name, t, cache, root, compiling):
    if t.dim() != 4:
        raise ValueError(f"{name}: expected [num_pages, page_size, Hkv, D], "
                         f"got shape {tuple(t.shape)}")
    if t.dtype != cache.dtype:
        raise ValueError(f"{name}: dtype {t.dtype} differs from the cache "
                         f"tensor's {cache.dtype} (view the cache as "
                         f"{t.dtype})")
    if not compiling and _root(t) is not root and \
            t.untyped_storage().data_ptr() != \
            cache.untyped_storage().data_ptr():
        raise ValueError(f"{name}: is not a view of the cache tensor (another "
                         "storage)")
    st = t.stride()
    if st[3] != 1 and t.shape[3] > 1:
        raise ValueError(f"{name}: the last axis must be contiguous (stride "
                         f"{st[3]})")
    return st


def cache_view(k_cache, v_cache, cache):
    """The op's cache_view argument for views k_cache [num_pages, page_size,
    Hkv, D] and v_cache [num_pages, page_size, Hkv, Dv] (None: latent) of
    the tensor cache: element offsets into cache and element strides,
    ``[k_offset, num_pages, page_size, Hkv, D, k_page_stride, k_slot_stride,
    k_head_stride, v_offset, Dv, v_page_stride, v_slot_stride,
    v_head_stride]`` (the first 8 without v_cache). Serving code whose
    layout does not change computes it once and calls the op directly."""
    compiling = torch.compiler.is_compiling()
    root = _root(cache)
    ks = _check_view("k_cache", k_cache, cache, root, compiling)
    base = cache.storage_offset()
    view = [k_cache.storage_offset() - base, *k_cache.shape, ks[0], ks[1],
            ks[2]]
    if v_cache is not None:
        vs = _check_view("v_cache", v_cache, cache, root, compiling)
        if v_cache.shape[:3] != k_cache.shape[:3]:
            raise ValueError(f"v_cache: shape {tuple(v_cache.shape)} does not "
                             f"match k_cache's {tuple(k_cache.shape)} in "
                             "(pages, page_size, heads)")
        view += [v_cache.storage_offset() - base, v_cache.shape[3], vs[0],
                 vs[1], vs[2]]
    return view


def layout_view(cache, layout="combined", num_kv_heads=None,
                head_dim=None):
    """The op's cache_view for a contiguous cache tensor in one of the known
    layouts (those of cache_views()), from its shape alone: plain integer
    arithmetic, so it traces under torch.compile (where a view's
    storage_offset() of an intermediate view does not)."""
    sh = tuple(cache.shape)
    if layout == "combined":
        if len(sh) == 5:
            sh = (sh[0], sh[1], sh[2] * sh[3], sh[4])
        if len(sh) != 4:
            raise ValueError(f"cache: the combined layout is [pages, "
                             f"page_size, 2*Hkv, D] (or 5-D), got shape "
                             f"{tuple(cache.shape)}")
        P, ps, rows, Dc = sh
        H = rows // 2 if num_kv_heads is None else int(num_kv_heads)
        D = Dc if head_dim is None else int(head_dim)
        if H < 1 or 2 * H > rows or not 1 <= D <= Dc:
            raise ValueError(f"cache: shape {sh} cannot hold K and V of {H} "
                             f"heads of dim {D}")
        rs = rows * Dc
        return [0, P, ps, H, D, ps * rs, rs, 2 * Dc,
                Dc, D, ps * rs, rs, 2 * Dc]
    if len(sh) != 5:
        raise ValueError(f"cache: the {layout!r} layout is 5-D, got shape "
                         f"{sh}")
    if layout == "vllm":
        _, P, ps, H, Dc = sh
        page, slot, head, v_off = ps * H * Dc, H * Dc, Dc, P * ps * H * Dc
    elif layout == "flashinfer_nhd":
        P, _, ps, H, Dc = sh
        page, slot, head, v_off = 2 * ps * H * Dc, H * Dc, Dc, ps * H * Dc
    elif layout == "flashinfer_hnd":
        P, _, H, ps, Dc = sh
        page, slot, head, v_off = 2 * H * ps * Dc, Dc, ps * Dc, H * ps * Dc
    else:
        raise ValueError(f"layout: {layout!r} is not 'combined', 'vllm', "
                         "'flashinfer_nhd' or 'flashinfer_hnd'")
    D = Dc if head_dim is None else int(head_dim)
    return [0, P, ps, H, D, page, slot, head, v_off, D, page, slot, head]


def attention(q, k, v, k_cache, v_cache, kv_lens, page_indices, cu_q_lens, *,
              cache=None, cache_view=None, distribution=None, sm_scale=1.0,
              sliding_window=None, soft_cap=None, q_scale=None, k_scale=None,
              v_scale=None, causal=True, update_kv_cache=True, sinks=None,
              out_dtype=None, head_dim_v=None, return_lse=False,
              num_threads=None, isa=None):
    """The strided call on torch tensors: rpa.attention's arguments and
    semantics (see the NumPy package), with k_cache / v_cache views of one
    cache tensor, updated IN PLACE.

    q [T, Hq, D]; k [T, Hkv, D], v [T, Hkv, Dv] in the cache dtype (None
    when update_kv_cache is False; v None for a latent cache). k_cache
    [num_pages, page_size, Hkv, D] and v_cache [num_pages, page_size, Hkv,
    Dv]: views (any strides, last axis contiguous) of ``cache``, the whole
    contiguous tensor the op declares as mutated; cache=None takes the views'
    common ``._base``. Or, instead of the views (k_cache, v_cache None),
    cache= and cache_view=, the op's description of them (cache_view(),
    layout_view()): needed under torch.compile, where the offsets of views
    made inside the compiled code are not known. v_cache None:
    a latent (MLA) cache, values are the first head_dim_v elements of each
    key row. kv_lens [S], cu_q_lens [S + 1], page_indices [S * pages] or
    [S, pages], distribution [3] or None: int32 tensors.

    sliding_window, soft_cap, q_scale: None is off, otherwise > 0; k_scale,
    v_scale: None is 1. sinks: None or [Hq] float32. num_threads: None
    follows torch.get_num_threads(). Returns out [T, Hq, Dv] (out_dtype,
    default q's; rows past cu_q_lens[S] zero), and lse [T, Hq] float32 too
    with return_lse=True.
    """
    if cache_view is not None:
        if cache is None:
            raise ValueError("cache_view: given without cache=")
        view = cache_view
    else:
        if cache is None:
            cache = _cache_base(k_cache, v_cache)
        view = globals()["cache_view"](k_cache, v_cache, cache)
    if (sliding_window is None and soft_cap is None and q_scale is None
            and k_scale is None and v_scale is None and causal is True
            and update_kv_cache is True and head_dim_v is None
            and out_dtype is None and num_threads is None and isa is None
            and sinks is None and not return_lse):
        # The common call: fewer arguments for the op to convert.
        return _attention_op(q, k, v, cache, view, kv_lens, page_indices,
                             cu_q_lens, float(sm_scale), distribution)
    args = (
        q, k, v, cache, view, kv_lens, page_indices, cu_q_lens,
        float(sm_scale), distribution, sinks,
        1.0 if k_scale is None else float(k_scale),
        1.0 if v_scale is None else float(v_scale),
        _api._opt_positive("q_scale", q_scale),
        _api._opt_positive("soft_cap", soft_cap),
        _api._window(sliding_window), bool(causal), bool(update_kv_cache),
        0 if head_dim_v is None else int(head_dim_v), out_dtype,
        0 if num_threads is None else int(num_threads), isa or "")
    return _attention_lse_op(*args) if return_lse else _attention_op(*args)


def ragged_paged_attention(queries, keys, values, kv_cache, kv_lens,
                           page_indices, cu_q_lens, distribution, *,
                           sm_scale=1.0, sliding_window=None, soft_cap=None,
                           q_scale=None, k_scale=None, v_scale=None,
                           use_causal_mask=True, update_kv_cache=True,
                           attention_sink=None, num_threads=None, isa=None):
    """RPA v3's call (tpu-inference) on torch tensors: returns (output,
    kv_cache). Unlike upstream's functional JAX call, kv_cache is updated IN
    PLACE and returned itself (a torch tensor is mutable: no copy is made).
    kv_cache: contiguous [num_pages, page_size, 2*Hkv, Dc] (K of head h at
    row 2h, V at 2h+1) or [num_pages, page_size, 2*Hkv // packing, packing,
    Dc], Dc >= D (padding left alone). Other arguments as rpa's NumPy
    ragged_paged_attention."""
    if sliding_window is not None:
        sliding_window = _api._window(sliding_window)
    out = _v3_op(queries, keys, values, kv_cache, kv_lens, page_indices,
                 cu_q_lens, distribution, float(sm_scale), sliding_window,
                 None if soft_cap is None else float(soft_cap),
                 None if q_scale is None else float(q_scale),
                 None if k_scale is None else float(k_scale),
                 None if v_scale is None else float(v_scale),
                 bool(use_causal_mask), bool(update_kv_cache), attention_sink,
                 0 if num_threads is None else int(num_threads), isa or "")
    return out, kv_cache


def cache_views(kv_cache, layout="combined", num_kv_heads=None,
                head_dim=None):
    """(k_cache, v_cache) views of one torch cache tensor, as
    rpa.cache_views does for NumPy arrays: "combined" (upstream, also 5-D),
    "vllm" [2, pages, page_size, Hkv, D], "flashinfer_nhd" [pages, 2,
    page_size, Hkv, D], "flashinfer_hnd" [pages, 2, Hkv, page_size, D]. No
    copy."""
    c = kv_cache
    if layout == "combined":
        if c.dim() == 5:
            P, ps, cp, pk, D = c.shape
            c = c.view(P, ps, cp * pk, D)
        if c.dim() != 4:
            raise ValueError(f"kv_cache: the combined layout is [pages, "
                             f"page_size, 2*Hkv, D] (or 5-D), got shape "
                             f"{tuple(kv_cache.shape)}")
        H = c.shape[2] // 2 if num_kv_heads is None else int(num_kv_heads)
        D = c.shape[3] if head_dim is None else int(head_dim)
        if H < 1 or 2 * H > c.shape[2] or not 1 <= D <= c.shape[3]:
            raise ValueError(f"kv_cache: shape {tuple(c.shape)} cannot hold "
                             f"K and V of {H} heads of dim {D}")
        return c[:, :, 0:2 * H:2, :D], c[:, :, 1:2 * H:2, :D]
    if c.dim() != 5:
        raise ValueError(f"kv_cache: the {layout!r} layout is 5-D, got shape "
                         f"{tuple(c.shape)}")
    if layout == "vllm":
        if c.shape[0] != 2:
            raise ValueError(f"kv_cache: vLLM layout is [2, pages, page_size, "
                             f"Hkv, D], got shape {tuple(c.shape)}")
        k, v = c[0], c[1]
    elif layout in ("flashinfer_nhd", "flashinfer_hnd"):
        if c.shape[1] != 2:
            raise ValueError(f"kv_cache: FlashInfer layouts are [pages, 2, "
                             f"...], got shape {tuple(c.shape)}")
        k, v = c[:, 0], c[:, 1]
        if layout == "flashinfer_hnd":
            k, v = k.transpose(1, 2), v.transpose(1, 2)
    else:
        raise ValueError(f"layout: {layout!r} is not 'combined', 'vllm', "
                         "'flashinfer_nhd' or 'flashinfer_hnd'")
    if head_dim is not None:
        k, v = k[..., :int(head_dim)], v[..., :int(head_dim)]
    return k, v


def op_info():
    """Where the op library was loaded from and what the build recorded."""
    return {"library": library_path, "build": _build_note(),
            "torch": torch.__version__}
