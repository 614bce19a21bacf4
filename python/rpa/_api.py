"""The Python calls over rpa_attention (see the package docstring)."""
import ctypes
import math
import numbers

import numpy as np

from . import _lib
from ._lib import lib

_IO_DTYPES = (_lib.RPA_F32, _lib.RPA_BF16, _lib.RPA_F16)
_I32_MIN, _I32_MAX = -(2 ** 31), 2 ** 31 - 1


class RPAError(ValueError):
    """A call rejected by the library. ``str(err)`` is the library's message
    (rpa_context_last_error); ``err.status`` is the rpa_status code and
    ``err.status_name`` its name (e.g. ``"RPA_INVALID_LENGTHS"``)."""

    def __init__(self, status, message):
        self.status = int(status)
        self.status_name = _lib.STATUS_NAMES.get(self.status, "RPA_UNKNOWN")
        self.message = message
        super().__init__(f"{message} [{self.status_name}]")


# ---- argument conversion --------------------------------------------------

def _ptr(a):
    return None if a is None else a.ctypes.data


def _strides(name, a):
    """Element strides of ndarray a (bytes / itemsize); the last axis must be
    contiguous. Axes of extent <= 1 get stride 0 (never stepped)."""
    item = a.itemsize
    if a.size == 0:  # nothing is addressed: C-order strides of the shape
        out, step = [], 1
        for n in reversed(a.shape):
            out.append(step if n > 1 else 0)
            step *= max(int(n), 1)
        out.reverse()
        if out and a.shape[-1] > 1:
            out[-1] = 1
        return out
    out = []
    for i, (s, n) in enumerate(zip(a.strides, a.shape)):
        if n <= 1:
            out.append(0)
            continue
        if s % item:
            raise ValueError(f"{name}: byte stride {s} of axis {i} is not a "
                             f"multiple of the item size {item}")
        out.append(s // item)
    if a.ndim and a.shape[-1] > 1 and out[-1] != 1:
        raise ValueError(f"{name}: the last axis must be contiguous (its "
                         f"stride is {a.strides[-1]} bytes, the item size "
                         f"{item})")
    return out


def _array(name, x, ndim, writable=False):
    if writable:
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{name}: must be a numpy.ndarray (it is written "
                             f"in place), not {type(x).__name__}")
        if not x.flags.writeable:
            raise ValueError(f"{name}: the array is read-only but is written")
        a = x
    else:
        a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape "
                         f"{a.shape}")
    return a


def _int32(name, x, ndim=1):
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integers (int32), got dtype "
                         f"{a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape "
                         f"{a.shape}")
    if a.dtype != np.int32:
        if a.size and (int(a.min()) < _I32_MIN or int(a.max()) > _I32_MAX):
            raise ValueError(f"{name}: values do not fit in int32")
        a = a.astype(np.int32)
    return np.ascontiguousarray(a)


def _opt_positive(name, value, what="None (off) or > 0"):
    """None -> 0.0 (the C library's "off"); else a float that must be > 0."""
    if value is None:
        return 0.0
    v = _real(name, value)
    if not (v > 0.0) or math.isinf(v):
        raise ValueError(f"{name}: {value!r} must be {what} and finite")
    return v


def _real(name, value):
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    return float(value)


def _window(value):
    if value is None:
        return 0
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"sliding_window: expected an integer or None, got "
                         f"{value!r}")
    w = int(value)
    if w <= 0:
        raise ValueError(f"sliding_window: {w} must be None (off) or > 0")
    return min(w, _I32_MAX)  # a window past any length changes nothing


def _check_shape(name, a, expected):
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got "
                         f"{tuple(a.shape)}")


def _raise(ctx, status):
    msg = lib.rpa_context_last_error(ctx.handle).decode(errors="replace")
    if not msg:
        msg = lib.rpa_status_string(status).decode()
    if status == 11:  # RPA_OUT_OF_MEMORY
        raise MemoryError(msg)
    raise RPAError(status, msg)


# ---- the strided call -----------------------------------------------------

def attention(q, k, v, k_cache, v_cache, kv_lens, page_indices, cu_q_lens, *,
              distribution=None, sm_scale=1.0, sliding_window=None,
              soft_cap=None, q_scale=None, k_scale=None, v_scale=None,
              causal=True, update_kv_cache=True, sinks=None, out=None,
              out_dtype=None, head_dim_v=None, return_lse=False,
              num_threads=None, isa=None, mask=None, shared_len=None,
              shared_group=None):
    """Ragged paged attention over any strided cache layout; the cache is
    updated IN PLACE.

    q [T, Hq, D] (float32, bfloat16, float16); new keys k [T, Hkv, D] and
    values v [T, Hkv, Dv] in the cache dtype (both may be None when
    update_kv_cache is False; v is None for a latent cache).

    k_cache [num_pages, page_size, Hkv, D] and v_cache [num_pages, page_size,
    Hkv, Dv]: numpy arrays or views with any strides (the last axis
    contiguous), in one dtype (float32, bfloat16, float16, float8_e4m3fn,
    float8_e5m2). Views express every layout without a copy: see
    cache_views(). v_cache None is a latent (MLA) cache: values are the first
    Dv = head_dim_v elements of each key row.

    kv_lens [S], cu_q_lens [S + 1], page_indices [S * pages_per_seq] or
    [S, pages_per_seq] (int32); distribution [3] or None.

    sliding_window, soft_cap and q_scale are None for off and must be > 0
    otherwise; k_scale and v_scale None mean 1. sinks: None or [Hq] float32
    logits that join the softmax denominator (-inf: no sink).

    mask: None, or one entry per sequence (len(kv_lens)): None (causal) or a
    boolean [q_len, q_len] array whose [j, k] says whether new token j sees
    new token k (speculative decoding: a tree of drafts, each seeing its
    ancestors). Each row must mark its own token and no later one; every
    new token sees the cached prefix as usual. Needs causal=True.

    shared_len [K], shared_group [S] (int32, both or neither): shared
    prefixes (cascade attention). Sequence i belongs to group shared_group[i]
    (-1: none), whose first shared_len[g] cached tokens are the same pages
    for every member; decode members then read them once per call for the
    group. Same result as without, to float32 rounding.

    Returns out [T, Hq, Dv] (a new array in out_dtype, default q's dtype,
    rows past cu_q_lens[S] zero; or the given ``out``, written in place), and
    with return_lse=True the pair (out, lse) with lse [T, Hq] float32, the
    natural-log log-sum-exp of each row (rows past cu_q_lens[S] are 0).

    Bad input raises ValueError (RPAError for what the library rejects, with
    its message); nothing is written then.
    """
    update = bool(update_kv_cache)
    q = _array("q", q, 3)
    if _lib.dtype_code("q", q.dtype) not in _IO_DTYPES:
        raise ValueError(f"q: dtype {q.dtype} is not float32, bfloat16 or "
                         "float16")
    T, Hq, D = q.shape
    latent = v_cache is None
    k_cache = _array("k_cache", k_cache, 4, writable=update)
    if not latent:
        v_cache = _array("v_cache", v_cache, 4, writable=update)
    P, page_size, Hkv, Dk = k_cache.shape
    if Dk != D:
        raise ValueError(f"k_cache: head dim {Dk} differs from q's {D} "
                         f"(slice a padded cache: k_cache[..., :{D}])")
    if latent:
        if v is not None:
            raise ValueError("v: must be None with a latent cache "
                             "(v_cache None): values are part of each key row")
        if head_dim_v is None:
            head_dim_v = out.shape[2] if out is not None else D
        Dv = int(head_dim_v)
        if not 1 <= Dv <= D:
            raise ValueError(f"head_dim_v: {Dv} must be in [1, head_dim {D}] "
                             "for a latent cache")
    else:
        if v_cache.shape[:3] != (P, page_size, Hkv):
            raise ValueError(f"v_cache: shape {v_cache.shape} does not match "
                             f"k_cache's {k_cache.shape} in (pages, "
                             "page_size, heads)")
        Dv = v_cache.shape[3]
        if head_dim_v is not None and int(head_dim_v) != Dv:
            raise ValueError(f"head_dim_v: {head_dim_v} differs from "
                             f"v_cache's last axis {Dv}")
        if v_cache.dtype != k_cache.dtype:
            raise ValueError(f"v_cache: dtype {v_cache.dtype} differs from "
                             f"k_cache's {k_cache.dtype} (one cache dtype)")
    cache_dtype = _lib.dtype_code("k_cache", k_cache.dtype)

    if k is not None:
        k = _array("k", k, 3)
        if k.shape[1] < Hkv:
            raise ValueError(f"k_cache: {Hkv} KV heads, more than the "
                             f"{k.shape[1]} of k (a cache with more heads "
                             "than the new keys is a layout bug, e.g. a "
                             "combined [pages, page_size, 2*Hkv, D] buffer "
                             "passed without cache_views())")
        _check_shape("k", k, (T, Hkv, D))
    elif update:
        raise ValueError("k: None while update_kv_cache is True")
    if v is not None:
        v = _array("v", v, 3)
        _check_shape("v", v, (T, Hkv, Dv))
    elif update and not latent:
        raise ValueError("v: None while update_kv_cache is True")

    kv_lens = _int32("kv_lens", kv_lens)
    S = kv_lens.shape[0]
    cu_q_lens = _int32("cu_q_lens", cu_q_lens)
    _check_shape("cu_q_lens", cu_q_lens, (S + 1,))
    pi = np.asarray(page_indices)
    if pi.ndim == 2:
        if pi.shape[0] != S:
            raise ValueError(f"page_indices: {pi.shape[0]} rows for {S} "
                             "sequences (len(kv_lens))")
        pages_per_seq = pi.shape[1]
        page_indices = _int32("page_indices", pi, 2).reshape(-1)
    else:
        page_indices = _int32("page_indices", pi)
        n = page_indices.shape[0]
        if S == 0:
            pages_per_seq = 0
        elif n % S:
            raise ValueError(f"page_indices: {n} entries are not a multiple "
                             f"of the {S} sequences (len(kv_lens))")
        else:
            pages_per_seq = n // S
    if distribution is not None:
        distribution = _int32("distribution", distribution)
        _check_shape("distribution", distribution, (3,))
    if sinks is not None:
        sinks = np.ascontiguousarray(np.asarray(sinks), dtype=np.float32)
        _check_shape("sinks", sinks, (Hq,))

    mask_bits, mask_offsets = _pack_masks(mask, cu_q_lens, S)
    if (shared_len is None) != (shared_group is None):
        raise ValueError("shared_len and shared_group: give both or neither")
    if shared_len is not None:
        shared_len = _int32("shared_len", shared_len)
        shared_group = _int32("shared_group", shared_group)
        _check_shape("shared_group", shared_group, (S,))

    if out is None:
        od = q.dtype if out_dtype is None else np.dtype(out_dtype)
        if _lib.dtype_code("out_dtype", od) not in _IO_DTYPES:
            raise ValueError(f"out_dtype: {od} is not float32, bfloat16 or "
                             "float16")
        out = np.zeros((T, Hq, Dv), dtype=od)
    else:
        out = _array("out", out, 3, writable=True)
        _check_shape("out", out, (T, Hq, Dv))
        if out_dtype is not None and np.dtype(out_dtype) != out.dtype:
            raise ValueError(f"out_dtype: {np.dtype(out_dtype)} differs from "
                             f"out's dtype {out.dtype}")
    lse = np.zeros((T, Hq), dtype=np.float32) if return_lse else None

    a = lib.rpa_args_default()
    a.num_tokens, a.num_q_heads, a.num_kv_heads = T, Hq, Hkv
    a.head_dim, a.head_dim_v = D, Dv

    def tensor(field, name, x):
        st = _strides(name, x)
        field.data = _ptr(x)
        field.dtype = _lib.dtype_code(name, x.dtype)
        field.token_stride, field.head_stride = st[0], st[1]

    tensor(a.q, "q", q)
    tensor(a.out, "out", out)
    if k is not None:
        tensor(a.k, "k", k)
    else:
        a.k.dtype = cache_dtype
    if v is not None:
        tensor(a.v, "v", v)
    else:
        a.v.dtype = cache_dtype
    if lse is not None:
        a.lse = _ptr(lse)
        a.lse_token_stride, a.lse_head_stride = Hq, 1

    c = a.cache
    c.dtype = cache_dtype
    c.num_pages, c.page_size = P, page_size
    ks = _strides("k_cache", k_cache)
    c.k = _ptr(k_cache)
    c.k_page_stride, c.k_slot_stride, c.k_head_stride = ks[0], ks[1], ks[2]
    if not latent:
        vs = _strides("v_cache", v_cache)
        c.v = _ptr(v_cache)
        c.v_page_stride, c.v_slot_stride, c.v_head_stride = vs[0], vs[1], vs[2]
    else:
        c.v = None

    a.num_seqs = S
    a.cu_q_lens = _ptr(cu_q_lens)
    a.kv_lens = _ptr(kv_lens)
    a.page_indices = _ptr(page_indices)
    a.pages_per_seq = pages_per_seq
    a.distribution = _ptr(distribution)

    a.sm_scale = _real("sm_scale", sm_scale)
    a.k_scale = 1.0 if k_scale is None else _real("k_scale", k_scale)
    a.v_scale = 1.0 if v_scale is None else _real("v_scale", v_scale)
    a.q_scale = _opt_positive("q_scale", q_scale)
    a.soft_cap = _opt_positive("soft_cap", soft_cap)
    a.sliding_window = _window(sliding_window)
    a.causal = 1 if causal else 0
    a.sinks = _ptr(sinks)
    a.update_kv_cache = 1 if update else 0
    if shared_len is not None:
        a.num_shared = shared_len.shape[0]
        a.shared_len = _ptr(shared_len) if shared_len.size else None
        a.shared_group = _ptr(shared_group) if shared_group.size else None
    if mask_bits is not None:
        a.mask = _ptr(mask_bits)
        a.mask_offsets = _ptr(mask_offsets)
        a.mask_bits = mask_bits.size * 8

    ctx = _lib.context(num_threads, isa)
    # ctypes releases the GIL for the call; every array above stays
    # referenced by a local until it returns.
    st = lib.rpa_attention(ctx.handle, ctypes.byref(a))
    if st != 0:
        _raise(ctx, st)
    return (out, lse) if return_lse else out


def _pack_masks(mask, cu_q_lens, S):
    """Per-sequence boolean [q_len, q_len] masks (or None) -> the packed
    bits (little-endian within a byte) and their bit offsets, -1 for None;
    (None, None) without masks."""
    if mask is None:
        return None, None
    mask = list(mask)
    if len(mask) != S:
        raise ValueError(f"mask: {len(mask)} entries for {S} sequences "
                         "(len(kv_lens))")
    offsets = np.full(max(S, 1), -1, np.int64)
    parts, bits = [], 0
    for i, m in enumerate(mask):
        if m is None:
            continue
        m = np.asarray(m)
        if m.dtype != np.bool_:
            raise ValueError(f"mask[{i}]: dtype {m.dtype}, expected bool")
        q_len = int(cu_q_lens[i + 1]) - int(cu_q_lens[i])
        if m.shape != (q_len, q_len):
            raise ValueError(f"mask[{i}]: shape {m.shape}, expected "
                             f"{(q_len, q_len)} (q_len {q_len})")
        offsets[i] = bits
        parts.append(m.reshape(-1))
        bits += m.size
    flat = np.concatenate(parts) if parts else np.zeros(0, np.bool_)
    packed = np.packbits(flat, bitorder="little")
    if packed.size == 0:
        packed = np.zeros(1, np.uint8)
    return packed, offsets


# ---- merging attention states --------------------------------------------

def _state(name, out, lse, T, H, D, writable=False):
    out = _array(f"{name} out", out, 3, writable)
    if _lib.dtype_code(f"{name} out", out.dtype) not in _IO_DTYPES:
        raise ValueError(f"{name} out: dtype {out.dtype} is not float32, "
                         f"bfloat16 or float16")
    _check_shape(f"{name} out", out, (T, H, D))
    lse = _array(f"{name} lse", lse, 2, writable)
    if lse.dtype != np.float32:
        raise ValueError(f"{name} lse: dtype {lse.dtype}, must be float32")
    _check_shape(f"{name} lse", lse, (T, H))
    s = _lib.RpaAttnState()
    os_ = _strides(f"{name} out", out)
    s.out = _lib.RpaTensor(_ptr(out), _lib.dtype_code(f"{name} out", out.dtype),
                           os_[0], os_[1])
    ls = _strides(f"{name} lse", lse)
    s.lse = _ptr(lse)
    s.lse_token_stride, s.lse_head_stride = ls[0], ls[1]
    return out, lse, s


def merge_states(out_a, lse_a, out_b, lse_b, *, out=None, lse=None,
                 out_dtype=None):
    """The attention result over the union of two disjoint key sets, from
    each set's result: out_* [T, H, Dv] (float32, bfloat16, float16) and
    lse_* [T, H] float32, as ``attention(..., return_lse=True)`` returns
    them (lse -inf: an empty set). Returns (out, lse): new arrays (out in
    out_dtype, default out_a's dtype), or the given ``out``/``lse``, written
    in place (they may be out_a/lse_a or out_b/lse_b themselves). In float32,
    rounded once; symmetric in a and b; NaN rows as the contract says
    (docs/contract.md, section 16)."""
    a_out = _array("out_a", out_a, 3)
    T, H, D = (int(n) for n in a_out.shape)
    a_out, a_lse, sa = _state("a", a_out, lse_a, T, H, D)
    b_out, b_lse, sb = _state("b", out_b, lse_b, T, H, D)
    if out is None:
        out = np.empty((T, H, D), dtype=a_out.dtype if out_dtype is None
                       else np.dtype(out_dtype))
    elif out_dtype is not None and np.dtype(out_dtype) != out.dtype:
        raise ValueError(f"out: dtype {out.dtype} differs from out_dtype "
                         f"{np.dtype(out_dtype)}")
    if lse is None:
        lse = np.empty((T, H), dtype=np.float32)
    out, lse, sd = _state("dst", out, lse, T, H, D, writable=True)
    ctx = _lib.context()
    st = lib.rpa_merge_states(ctx.handle, T, H, D, ctypes.byref(sa),
                              ctypes.byref(sb), ctypes.byref(sd))
    if st != 0:
        _raise(ctx, st)
    return out, lse


# ---- layouts --------------------------------------------------------------

def cache_views(kv_cache, layout="combined", num_kv_heads=None, head_dim=None):
    """(k_cache, v_cache) views [num_pages, page_size, Hkv, D] of one cache
    buffer, for attention(). No copy: writes through the views land in
    kv_cache. Layouts:

    - "combined": upstream RPA v3 [pages, page_size, 2*Hkv, D] (K of head h
      is row 2h, V row 2h+1); also the 5-D [pages, page_size,
      2*Hkv // packing, packing, D], whose packing axis is folded. Padded
      rows or lanes (upstream aligns 2*Hkv to the packing and D to 128) are
      cut off when num_kv_heads / head_dim are given; more rows than the
      padding of num_kv_heads heads raise ValueError.
    - "vllm": [2, pages, page_size, Hkv, D] (K = kv_cache[0], V = [1]).
    - "flashinfer_nhd": [pages, 2, page_size, Hkv, D].
    - "flashinfer_hnd": [pages, 2, Hkv, page_size, D].
    """
    if not isinstance(kv_cache, np.ndarray):
        raise ValueError("kv_cache: must be a numpy.ndarray")
    c = kv_cache
    if layout == "combined":
        c = _fold_packing(c)
        if c.ndim != 4:
            raise ValueError(f"kv_cache: the combined layout is 4-D [pages, "
                             f"page_size, 2*Hkv, D] (or 5-D with a packing "
                             f"axis), got shape {kv_cache.shape}")
        rows, packing = _combined_rows(kv_cache.shape, kv_cache.itemsize)
        if num_kv_heads is None:
            H = rows // 2  # an odd last row is padding
            if H < 1:
                raise ValueError(f"kv_cache: {rows} combined rows cannot "
                                 "hold K and V of one head")
        else:
            H = int(num_kv_heads)
            _check_combined_rows(rows, packing, H, "num_kv_heads")
        D = c.shape[3] if head_dim is None else int(head_dim)
        if not 1 <= D <= c.shape[3]:
            raise ValueError(f"head_dim: {D} exceeds the cache's last axis "
                             f"{c.shape[3]}")
        return c[:, :, 0:2 * H:2, :D], c[:, :, 1:2 * H:2, :D]
    if layout == "vllm":
        if c.ndim != 5 or c.shape[0] != 2:
            raise ValueError(f"kv_cache: vLLM layout is [2, pages, page_size, "
                             f"Hkv, D], got shape {c.shape}")
        k, v = c[0], c[1]
    elif layout == "flashinfer_nhd":
        if c.ndim != 5 or c.shape[1] != 2:
            raise ValueError(f"kv_cache: FlashInfer NHD layout is [pages, 2, "
                             f"page_size, Hkv, D], got shape {c.shape}")
        k, v = c[:, 0], c[:, 1]
    elif layout == "flashinfer_hnd":
        if c.ndim != 5 or c.shape[1] != 2:
            raise ValueError(f"kv_cache: FlashInfer HND layout is [pages, 2, "
                             f"Hkv, page_size, D], got shape {c.shape}")
        k, v = c[:, 0].transpose(0, 2, 1, 3), c[:, 1].transpose(0, 2, 1, 3)
    else:
        raise ValueError(f"layout: {layout!r} is not 'combined', 'vllm', "
                         "'flashinfer_nhd' or 'flashinfer_hnd'")
    if head_dim is not None:
        k, v = k[..., :int(head_dim)], v[..., :int(head_dim)]
    return k, v


def _fold_packing(c):
    """[P, ps, C/packing, packing, D] -> a VIEW [P, ps, C, D]; 4-D as is."""
    if c.ndim != 5:
        return c
    P, ps, cp, pk, D = c.shape
    r = c.reshape(P, ps, cp * pk, D)
    if r.size and not np.may_share_memory(r, c):
        raise ValueError(f"kv_cache: the strides {c.strides} of the 5-D "
                         "cache do not let its packing axis fold into the "
                         "head axis without a copy")
    return r


def _combined_rows(shape, itemsize):
    """(C, packing) of a combined cache of this shape, 4-D [P, ps, C, D] or
    5-D [P, ps, C // packing, packing, D]: its rows, and the multiple
    upstream pads 2*Hkv rows up to, the dtype's elements per 32-bit word
    (float32 1, 16-bit 2, 8-bit 4) or the 5-D packing axis where larger."""
    packing = max(1, 4 // itemsize)
    if len(shape) == 5:
        return shape[2] * shape[3], max(packing, shape[3])
    return shape[2], packing


def _spare_heads(rows, packing, hkv):
    """Whole heads' worth of rows a combined cache of `rows` rows has past
    K and V of hkv heads and upstream's padding of them (2*hkv rows rounded
    up to a multiple of the packing); -1 when it cannot hold the hkv heads.
    A single row past the padding holds no head: it is left alone."""
    if 2 * hkv > rows:
        return -1
    padded = -(-2 * hkv // packing) * packing  # 2*hkv rounded up
    return max(rows - padded, 0) // 2


def _check_combined_rows(rows, packing, hkv, source):
    """A combined cache's rows hold K and V of the hkv heads `source` gives,
    with at most upstream's padding past them. Rows for more heads than
    that are a layout bug (another model's cache, another layout), not
    padding: such a cache is refused, not read in part."""
    spare = _spare_heads(rows, packing, hkv)
    if hkv < 1 or spare < 0:
        raise ValueError(f"kv_cache: {rows} combined rows cannot hold K and "
                         f"V of the {hkv} KV heads of {source}")
    if spare > 0:
        raise ValueError(f"kv_cache: {rows} combined rows hold K and V of "
                         f"{rows // 2} KV heads, more than the {hkv} of "
                         f"{source} (upstream pads the {2 * hkv} rows only "
                         f"up to a multiple of the packing, {packing})")


def _v3_kv_heads(cache_shape, itemsize, keys_heads, values_heads):
    """Hkv of upstream's call: the head count of keys (of values when keys
    is None; None when both are), checked against values and against the
    combined cache of cache_shape (_check_combined_rows). When keys and
    values differ, the one the cache disagrees with too is named."""
    if keys_heads is None and values_heads is None:
        return None
    rows, packing = _combined_rows(cache_shape, itemsize)
    if keys_heads is not None and values_heads is not None and \
            keys_heads != values_heads:
        def fits(h):
            return h >= 1 and _spare_heads(rows, packing, h) == 0
        name, h, other, oh = (
            ("keys", keys_heads, "values", values_heads)
            if fits(values_heads) and not fits(keys_heads)
            else ("values", values_heads, "keys", keys_heads))
        raise ValueError(f"{name}: {h} KV heads, but {other} has {oh} "
                         f"(kv_cache's {rows} combined rows hold K and V of "
                         f"{rows // 2})")
    source, hkv = (("keys", keys_heads) if keys_heads is not None
                   else ("values", values_heads))
    _check_combined_rows(rows, packing, hkv, source)
    return hkv


def get_kv_cache_shape(num_pages, page_size, num_kv_heads, head_dim):
    """Shape of the combined cache rpa expects: [pages, page_size, 2*Hkv, D]
    (no padding needed: any head_dim, any Hkv)."""
    return (int(num_pages), int(page_size), 2 * int(num_kv_heads),
            int(head_dim))


# ---- upstream's call ------------------------------------------------------

def ragged_paged_attention(queries, keys, values, kv_cache, kv_lens,
                           page_indices, cu_q_lens, distribution, *,
                           sm_scale=1.0, sliding_window=None, soft_cap=None,
                           q_scale=None, k_scale=None, v_scale=None,
                           use_causal_mask=True, update_kv_cache=True,
                           attention_sink=None, num_threads=None, isa=None,
                           out=None, inplace=False):
    """RPA v3's call (vllm-project/tpu-inference,
    tpu_inference/kernels/ragged_paged_attention/v3/kernel.py) on CPU.

    queries [T, Hq, D]; keys, values [T, Hkv, D] in the cache dtype;
    kv_cache [num_pages, page_size, 2*Hkv, Dc] (K of head h at row 2h, V at
    2h+1) or upstream's 5-D [num_pages, page_size, 2*Hkv // packing, packing,
    Dc]; Hkv is keys' head count. Upstream's padding, rows past 2*Hkv up to
    a multiple of the packing (2 for 16-bit, 4 for 8-bit dtypes) and lanes
    past D (Dc >= D), is left alone; rows for more heads than keys past
    that padding raise ValueError. kv_lens [max_num_seqs], page_indices
    [max_num_seqs * pages_per_seq], cu_q_lens [max_num_seqs + 1],
    distribution [3] (decode_end, prefill_end, mixed_end) or None; only the
    first distribution[2] sequences are computed.

    Returns (output, updated_kv_cache) as upstream does. output is a new
    [T, Hq, D] array in queries' dtype (rows past cu_q_lens[num_seqs] are
    zero), or ``out`` written in place. The cache is treated functionally,
    like a JAX array: kv_cache is NOT modified; the updated cache is a new
    array of the same shape (a copy, then the fused update written into the
    copy). inplace=True writes the update into kv_cache itself (a numpy array)
    and returns it, saving the copy. With update_kv_cache=False nothing is
    written and kv_cache itself is returned.

    num_threads: worker threads of the library (None: all CPUs); isa: the
    kernel set (None: RPA_ISA, else the best), as in attention().
    """
    if keys is None and update_kv_cache:
        raise ValueError("keys: None while update_kv_cache is True")
    if update_kv_cache and not inplace:
        cache = np.array(kv_cache, copy=True, order="C")
    else:
        cache = kv_cache
        if update_kv_cache and not isinstance(cache, np.ndarray):
            raise ValueError("kv_cache: inplace=True needs a numpy.ndarray")
        if update_kv_cache and not cache.flags.writeable:
            raise ValueError("kv_cache: the array is read-only, but "
                             "inplace=True writes the update into it")
        if not isinstance(cache, np.ndarray):
            cache = np.asarray(cache)
    queries = np.asarray(queries)
    if queries.ndim != 3:
        raise ValueError(f"queries: expected [T, Hq, D], got shape "
                         f"{queries.shape}")
    D = queries.shape[2]
    if keys is not None:
        keys = np.asarray(keys)
        if keys.ndim != 3:
            raise ValueError(f"keys: expected [T, Hkv, D], got shape "
                             f"{keys.shape}")
    if values is not None:
        values = np.asarray(values)
        if values.ndim != 3:
            raise ValueError(f"values: expected [T, Hkv, D], got shape "
                             f"{values.shape}")
    if cache.ndim not in (4, 5):
        raise ValueError(f"kv_cache: expected [num_pages, page_size, 2*Hkv, "
                         f"D] or [num_pages, page_size, 2*Hkv // packing, "
                         f"packing, D], got shape {cache.shape}")
    if cache.shape[-1] < D:
        raise ValueError(f"kv_cache: last axis {cache.shape[-1]} is smaller "
                         f"than the head dim {D} of queries")
    hkv = _v3_kv_heads(cache.shape, cache.itemsize,
                       None if keys is None else keys.shape[1],
                       None if values is None else values.shape[1])
    kc, vc = cache_views(cache, "combined", num_kv_heads=hkv, head_dim=D)
    output = attention(queries, keys, values, kc, vc, kv_lens, page_indices,
                       cu_q_lens, distribution=distribution,
                       sm_scale=sm_scale, sliding_window=sliding_window,
                       soft_cap=soft_cap, q_scale=q_scale, k_scale=k_scale,
                       v_scale=v_scale, causal=use_causal_mask,
                       update_kv_cache=update_kv_cache, sinks=attention_sink,
                       out=out, num_threads=num_threads, isa=isa)
    return output, cache
