"""rpa.jax: upstream RPA v3's call as a jittable JAX op on CPU.

``ragged_paged_attention(queries, keys, values, kv_cache, kv_lens,
page_indices, cu_q_lens, distribution, *, ...)`` -> ``(out,
updated_kv_cache)`` takes the argument names, shapes, dtypes and return
value of tpu-inference's RPA v3 kernel (and the keywords of rpa's NumPy
``ragged_paged_attention``), and runs rpa's C library through an XLA FFI
custom call registered for the CPU platform (python/ffi/rpa_jax_ffi.c, a
C handler on XLA's FFI C API, shipped as librpa_jax.so next to librpa.so).

- It works under ``jax.jit``. The cache result aliases the cache argument:
  with the cache donated (``jax.jit(f, donate_argnums=...)``) the fused KV
  write goes into the caller's buffer and no copy of the cache is made;
  without donation XLA copies the cache first, so the call stays functional.
- Results are bitwise those of the NumPy call on the same inputs, kernel set
  and thread count.
- ``return_lse=True`` adds the float32 log-sum-exp of every row, and
  ``out_dtype`` sets the output's dtype: a partial state to merge
  (``merge_states``, ``merge_across``).
- Sharded: inside ``jax.shard_map`` each device runs the op on its shard
  (heads split: tensor parallel, bitwise the one-device call);
  ``shard_attention`` is one device's slice of every sequence's keys
  (context parallel), see rpa.context_parallel and docs/integration.md.
- ``jax.vmap`` is refused (the batch is already ragged: put more sequences
  in it). There is no autodiff: the op is for inference.
- Errors: a shape or static argument that is wrong raises ValueError when
  the call is traced; what the library rejects at run time (lengths, page
  indices, distribution: values only known then) raises JAX's runtime error
  carrying the library's message and status name.

Contexts: the handler keeps a pool of rpa contexts, one per call running at
the same time (XLA may call from several threads), created on first use and
freed at process exit. ``num_threads`` (None: all CPUs) and ``isa`` (None:
RPA_ISA, else the best set) choose the context, as in ``rpa.attention``.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from . import _api
from . import _lib

__all__ = ["ragged_paged_attention", "shard_attention", "merge_states",
           "merge_across", "library_path"]

_TARGET = "rpa_ragged_paged_attention"
_IO = (jnp.float32, jnp.bfloat16, jnp.float16)
_KV = (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float8_e4m3fn,
       jnp.float8_e5m2)
_LIBNAME = "librpa_jax.so"


def _find():
    env = os.environ.get("RPA_JAX_LIBRARY")
    if env:
        return [("RPA_JAX_LIBRARY", env)]
    # Next to the librpa the package loaded, so the two always match (the
    # handler's librpa.so.0 dependency resolves to that already loaded one).
    return [("next to librpa", os.path.join(os.path.dirname(_lib.library_path),
                                             _LIBNAME))]


def _why_not_built():
    import json
    try:
        with open(os.path.join(os.path.dirname(__file__),
                               "_build_info.json")) as f:
            note = json.load(f).get("jax") or {}
    except (OSError, ValueError):
        return ""
    if note.get("built"):
        return ""
    return (f" It was not built when this package was installed: "
            f"{note.get('reason', 'no reason recorded')}.")


_handler_lib, library_path = _lib.load_first(
    _find(), "rpa.jax: cannot find librpa_jax.so",
    "It is built when jaxlib's FFI headers are found at install "
    "time: `pip install --no-build-isolation ./python` in an environment "
    "with jax, or RPA_JAX_INCLUDE_DIR=<jax.ffi.include_dir()> pip install "
    "./python; from a checkout, configure CMake with "
    "-DRPA_JAX_INCLUDE_DIR=<jax.ffi.include_dir()>." + _why_not_built())
jax.ffi.register_ffi_target(
    _TARGET, jax.ffi.pycapsule(_handler_lib.rpa_jax_ragged_paged_attention),
    platform="cpu")


def _static_real(name, value, default=None):
    if value is None:
        return default
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"{name}: must be a Python number (a static "
                         "argument), not a traced value")
    return _api._real(name, value)


def _static_positive(name, value):
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"{name}: must be a Python number (a static "
                         "argument), not a traced value")
    return _api._opt_positive(name, value)


def _shape_of(name, x, ndim):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape "
                         f"{tuple(x.shape)}")
    return x


def _int32(name, x, ndims=(1,)):
    x = jnp.asarray(x)
    if x.dtype != jnp.int32:
        raise ValueError(f"{name}: expected int32, got dtype {x.dtype}")
    if x.ndim not in ndims:
        raise ValueError(f"{name}: expected {' or '.join(map(str, ndims))} "
                         f"dimension(s), got shape {tuple(x.shape)}")
    return x


def ragged_paged_attention(queries, keys, values, kv_cache, kv_lens,
                           page_indices, cu_q_lens, distribution, *,
                           sm_scale=1.0, sliding_window=None, soft_cap=None,
                           mask_value=None, q_scale=None, k_scale=None,
                           v_scale=None, use_causal_mask=True,
                           update_kv_cache=True, attention_sink=None,
                           num_threads=None, isa=None, out_dtype=None,
                           return_lse=False):
    """RPA v3's call as a JAX op: returns (out, updated_kv_cache), and with
    return_lse=True (out, updated_kv_cache, lse).

    queries [T, Hq, D] (float32, bfloat16, float16); keys, values [T, Hkv,
    D] in the cache dtype (None when update_kv_cache is False); kv_cache
    [num_pages, page_size, 2*Hkv, Dc] or upstream's 5-D [num_pages,
    page_size, 2*Hkv // packing, packing, Dc] (Dc >= D; padded rows and
    lanes are left alone, more rows than upstream's padding of keys' Hkv
    heads raise ValueError); kv_lens [max_num_seqs], page_indices
    [max_num_seqs * pages_per_seq] (or 2-D), cu_q_lens [max_num_seqs + 1],
    distribution [3] or None: int32.

    out is [T, Hq, D] in queries' dtype (rows past the computed sequences
    are zero); updated_kv_cache has kv_cache's shape and dtype and aliases
    it (donate kv_cache to update it in place).

    sm_scale, sliding_window, soft_cap, q_scale, k_scale, v_scale,
    use_causal_mask, update_kv_cache: as upstream (static Python values;
    None is off). mask_value: upstream fills masked scores with it (default
    the dtype's lowest value); rpa leaves masked keys out of the softmax
    exactly, which is what any value that low gives, so only None or a value
    <= -1e30 is accepted. attention_sink: None or [Hq] float32 logits in the
    softmax denominator. num_threads, isa: which library context runs it.

    out_dtype: None (queries' dtype, as upstream) or float32, bfloat16,
    float16 (the output is rounded once, to it). return_lse: also return
    the float32 log-sum-exp [T, Hq] of every row
    (natural log, the sink included, as rpa.attention's), -inf on padding
    rows: the state rpa.merge_states and the sharded merge
    (rpa.jax.merge_states) combine across key sets.
    """
    if mask_value is not None:
        mv = _static_real("mask_value", mask_value)
        if not mv <= -1e30:
            raise ValueError(f"mask_value: {mask_value!r}; rpa leaves masked "
                             "keys out of the softmax exactly, which matches "
                             "upstream only for a mask value far below every "
                             "score: pass None or a value <= -1e30")
    update = bool(update_kv_cache)
    queries = _shape_of("queries", queries, 3)
    if queries.dtype not in _IO:
        raise ValueError(f"queries: dtype {queries.dtype} is not float32, "
                         "bfloat16 or float16")
    T, Hq, D = (int(n) for n in queries.shape)
    out_dtype = queries.dtype if out_dtype is None else jnp.dtype(out_dtype)
    if out_dtype not in _IO:
        raise ValueError(f"out_dtype: {out_dtype} is not float32, bfloat16 "
                         "or float16")
    kv_cache = jnp.asarray(kv_cache)
    if kv_cache.ndim not in (4, 5):
        raise ValueError(f"kv_cache: expected [num_pages, page_size, 2*Hkv, "
                         f"D] or [num_pages, page_size, 2*Hkv // packing, "
                         f"packing, D], got shape {tuple(kv_cache.shape)}")
    if kv_cache.dtype not in _KV:
        raise ValueError(f"kv_cache: dtype {kv_cache.dtype} is not float32, "
                         "bfloat16, float16, float8_e4m3fn or float8_e5m2")
    rows = (kv_cache.shape[2] * kv_cache.shape[3] if kv_cache.ndim == 5
            else kv_cache.shape[2])
    if kv_cache.shape[-1] < D:
        raise ValueError(f"kv_cache: last axis {kv_cache.shape[-1]} is "
                         f"smaller than the head dim {D} of queries")
    if keys is None or values is None:
        if update:
            raise ValueError("keys, values: None while update_kv_cache is "
                             "True")
        hkv = rows // 2
        keys = values = jnp.zeros((0,), kv_cache.dtype)
    else:
        keys = _shape_of("keys", keys, 3)
        values = _shape_of("values", values, 3)
        hkv = _api._v3_kv_heads(kv_cache.shape, kv_cache.dtype.itemsize,
                                int(keys.shape[1]), int(values.shape[1]))
        for name, x in (("keys", keys), ("values", values)):
            if tuple(x.shape) != (T, hkv, D):
                raise ValueError(f"{name}: shape {tuple(x.shape)}, expected "
                                 f"{(T, hkv, D)}")
            if x.dtype != kv_cache.dtype:
                raise ValueError(f"{name}: dtype {x.dtype} differs from the "
                                 f"cache's {kv_cache.dtype}")
    if hkv < 1 or 2 * hkv > rows:
        raise ValueError(f"kv_cache: {rows} combined rows cannot hold K and "
                         f"V of {hkv} heads")
    kv_lens = _int32("kv_lens", kv_lens)
    S = int(kv_lens.shape[0])
    cu_q_lens = _int32("cu_q_lens", cu_q_lens)
    if tuple(cu_q_lens.shape) != (S + 1,):
        raise ValueError(f"cu_q_lens: shape {tuple(cu_q_lens.shape)}, "
                         f"expected {(S + 1,)}")
    page_indices = _int32("page_indices", page_indices, (1, 2))
    if page_indices.ndim == 2 and page_indices.shape[0] != S:
        raise ValueError(f"page_indices: {page_indices.shape[0]} rows for "
                         f"{S} sequences (len(kv_lens))")
    if S and page_indices.size % S:
        raise ValueError(f"page_indices: {page_indices.size} entries are not "
                         f"a multiple of the {S} sequences (len(kv_lens))")
    if distribution is None:
        distribution = jnp.zeros((0,), jnp.int32)
    else:
        distribution = _int32("distribution", distribution)
        if tuple(distribution.shape) != (3,):
            raise ValueError(f"distribution: shape "
                             f"{tuple(distribution.shape)}, expected (3,)")
    if attention_sink is None:
        sinks = jnp.zeros((0,), jnp.float32)
    else:
        sinks = jnp.asarray(attention_sink, jnp.float32)
        if tuple(sinks.shape) != (Hq,):
            raise ValueError(f"attention_sink: shape {tuple(sinks.shape)}, "
                             f"expected {(Hq,)}")
    if isinstance(sliding_window, jax.core.Tracer):
        raise ValueError("sliding_window: must be a Python integer (a static "
                         "argument), not a traced value")
    n = 0 if num_threads is None else int(num_threads)
    if n < 0:
        raise ValueError(f"num_threads: {num_threads} is negative")
    if isa is not None and not isinstance(isa, str):
        raise ValueError(f"isa: expected a kernel set name, got {isa!r}")

    attrs = dict(
        sm_scale=np.float32(_static_real("sm_scale", sm_scale)),
        soft_cap=np.float32(_static_positive("soft_cap", soft_cap)),
        q_scale=np.float32(_static_positive("q_scale", q_scale)),
        k_scale=np.float32(_static_real("k_scale", k_scale, 1.0)),
        v_scale=np.float32(_static_real("v_scale", v_scale, 1.0)),
        sliding_window=np.int32(_api._window(sliding_window)),
        causal=np.int32(1 if use_causal_mask else 0),
        update_kv_cache=np.int32(1 if update else 0),
        num_kv_heads=np.int32(hkv),
        num_threads=np.int32(n),
        isa=isa or "")

    results = (jax.ShapeDtypeStruct(queries.shape, out_dtype),
               jax.ShapeDtypeStruct(kv_cache.shape, kv_cache.dtype))
    if return_lse:
        results += (jax.ShapeDtypeStruct((T, Hq), jnp.float32),)
    call = jax.ffi.ffi_call(_TARGET, results, input_output_aliases={3: 1})

    @jax.custom_batching.custom_vmap
    def op(*arrays):
        return call(*arrays, **attrs)

    @op.def_vmap
    def _refuse(axis_size, in_batched, *arrays):
        raise ValueError(
            "rpa.jax.ragged_paged_attention: jax.vmap is not supported; the "
            "batch is already ragged (put more sequences in one call: "
            "cu_q_lens, kv_lens, page_indices)")

    return op(queries, keys, values, kv_cache, kv_lens, page_indices,
              cu_q_lens, distribution, sinks)


def shard_attention(queries, keys, values, kv_cache, kv_lens, page_indices,
                    cu_q_lens, distribution, shard_start, shard_end, *,
                    sm_scale=1.0, sliding_window=None, soft_cap=None,
                    q_scale=None, k_scale=None, v_scale=None,
                    update_kv_cache=True, num_threads=None, isa=None):
    """One device's share of a context-parallel step: the attention of every
    query row over this device's slice of the keys, as a partial state.
    Returns (out float32 [T, Hq, D], updated kv_cache, lse float32 [T,
    Hq]); rows that see no key of the slice have out 0 and lse -inf. Merge
    the devices' states with merge_states (after a collective, e.g.
    jax.lax.all_gather inside jax.shard_map) into the attention over every
    key.

    queries, keys, values, kv_lens, cu_q_lens, distribution: the whole
    batch's (the same on every device), as for ragged_paged_attention.
    kv_cache: this device's cache (4-D combined or 5-D packed);
    page_indices [S, pps] (or flat): its page table, position c of sequence
    i at local position c - shard_start[i]; shard_start, shard_end [S]
    int32: the positions [start, end) of each sequence this device holds.
    The slices of a sequence must partition [0, kv_len). The new tokens
    whose positions lie in the slice are written into its pages (with
    update_kv_cache; keys, values may be None otherwise); donate kv_cache
    to have that happen in place.

    Two calls of the op: the rows whose own position is in the slice, as the
    last tokens of the slice (a causal call, the window as given); the rows
    past it, each a one-token sequence over the keys of the slice it sees
    (read-only; with a sliding window through a page-size-1 view of the
    same cache). rpa.context_parallel's docstring has the details. Sinks
    are not taken: merge them once (merge_states(..., sinks=)).
    """
    from .context_parallel import _plan, _taker
    queries = _shape_of("queries", queries, 3)
    T = int(queries.shape[0])
    kv_cache = jnp.asarray(kv_cache)
    kv_lens = _int32("kv_lens", kv_lens)
    S = int(kv_lens.shape[0])
    page_indices = _int32("page_indices", page_indices, (1, 2))
    if S == 0 or page_indices.size % S:
        raise ValueError(f"page_indices: {page_indices.size} entries for {S} "
                         "sequences")
    page_indices = page_indices.reshape(S, -1)
    cu_q_lens = _int32("cu_q_lens", cu_q_lens)
    start = _int32("shard_start", shard_start)
    end = _int32("shard_end", shard_end)
    for name, x, n in (("cu_q_lens", cu_q_lens, S + 1),
                       ("shard_start", start, S), ("shard_end", end, S)):
        if tuple(x.shape) != (n,):
            raise ValueError(f"{name}: shape {tuple(x.shape)}, expected "
                             f"{(n,)}")
    n_seqs = (jnp.int32(S) if distribution is None
              else _int32("distribution", distribution)[2])
    window = _api._window(sliding_window) or None
    ps = int(kv_cache.shape[1])
    p = _plan(jnp, T, kv_lens, cu_q_lens, n_seqs, start, end, page_indices,
              ps, window)
    common = dict(sm_scale=sm_scale, soft_cap=soft_cap, q_scale=q_scale,
                  k_scale=k_scale, v_scale=v_scale, num_threads=num_threads,
                  isa=isa, out_dtype=jnp.float32, return_lse=True)
    update = bool(update_kv_cache)
    src = p["own_src"]
    take = _taker(jnp)
    own_out, kv_cache, own_lse = ragged_paged_attention(
        take(queries, src), take(keys, src) if update else None,
        take(values, src) if update else None, kv_cache, p["own_kv_lens"],
        p["own_pages"], p["own_cu"], p["own_dist"],
        sliding_window=sliding_window, update_kv_cache=update, **common)
    shape = kv_cache.shape
    if window is not None:  # the page-size-1 view: page id page * ps + slot
        kv_cache = kv_cache.reshape((shape[0] * ps, 1) + shape[2:])
    later_out, kv_cache, later_lse = ragged_paged_attention(
        queries, None, None, kv_cache, p["later_kv_lens"], p["later_pages"],
        p["later_cu"], None, update_kv_cache=False, **common)
    kv_cache = kv_cache.reshape(shape)
    own, later = p["own"], p["later"]
    own_out, own_lse = take(own_out, p["own_dst"]), take(own_lse,
                                                          p["own_dst"])
    out = jnp.where(own[:, None, None], own_out,
                    jnp.where(later[:, None, None], later_out, 0.0))
    lse = jnp.where(own[:, None], own_lse,
                    jnp.where(later[:, None], later_lse, -jnp.inf))
    return out, kv_cache, lse


def _merge(o, lses, sinks, out_dtype, reduce_max, reduce_sum):
    """docs/contract.md section 16's merge over N states, the N being what
    reduce_max / reduce_sum reduce over (an axis, or devices)."""
    m = reduce_max(lses)                      # NaN if any lse is NaN
    if sinks is not None:
        m = jnp.maximum(m, sinks)
    safe_m = jnp.where(jnp.isfinite(m), m, 0.0)
    w = jnp.where(lses == -jnp.inf, 0.0, jnp.exp(lses - safe_m))
    total = reduce_sum(w)
    if sinks is not None:
        total = total + jnp.where(sinks == -jnp.inf, 0.0,
                                  jnp.exp(sinks - safe_m))
    f = w / jnp.where(total > 0, total, 1.0)
    weighted = (f > 0)[..., None]
    out = reduce_sum(jnp.where(weighted, o * f[..., None], 0.0))
    # a state with weight whose out row is not finite: the row is NaN
    broken = jnp.any(weighted & ~jnp.isfinite(o), axis=-1)
    bad = (jnp.isnan(m) | (m == jnp.inf) |
           (reduce_sum(broken.astype(jnp.float32)) > 0))
    empty = m == -jnp.inf
    out = jnp.where(bad[..., None], jnp.nan,
                    jnp.where(empty[..., None], 0.0, out))
    lse = jnp.where(bad, jnp.nan,
                    jnp.where(empty, -jnp.inf, safe_m + jnp.log(total)))
    return out.astype(out_dtype), lse


def _merge_args(out, lse, sinks, out_dtype, state_ndim, shapes):
    """Checked and converted (float32 out and lse, sinks, out_dtype)."""
    out = jnp.asarray(out)
    lse = jnp.asarray(lse, jnp.float32)
    if out.ndim != state_ndim + 1 or lse.shape != out.shape[:-1]:
        raise ValueError(f"{shapes}: got shapes {tuple(out.shape)}, "
                         f"{tuple(lse.shape)}")
    out_dtype = out.dtype if out_dtype is None else jnp.dtype(out_dtype)
    if out_dtype not in _IO:
        raise ValueError(f"out_dtype: {out_dtype} is not float32, bfloat16 "
                         "or float16")
    if sinks is not None:
        sinks = jnp.asarray(sinks, jnp.float32)
        if sinks.shape != (out.shape[-2],):
            raise ValueError(f"sinks: shape {tuple(sinks.shape)}, expected "
                             f"{(out.shape[-2],)}")
    return out.astype(jnp.float32), lse, sinks, out_dtype


def merge_states(outs, lses, *, sinks=None, out_dtype=None):
    """Merges attention states over disjoint key sets, stacked on axis 0
    (as jax.lax.all_gather stacks the devices' shard_attention results):
    outs [N, T, H, Dv], lses [N, T, H] float32 (-inf: an empty set).
    Returns (out [T, H, Dv] in out_dtype (default outs' dtype), lse [T, H]
    float32): the state over the union, in float32, rounded once, by
    docs/contract.md section 16's rule over N states: m = max lse, w_i =
    exp(lse_i - m), out = sum_i out_i * w_i / sum w, lse = m + log(sum w);
    a state without weight is not read; every set empty: out 0, lse -inf;
    a NaN lse, m = +inf, or a non-finite out row with weight: a NaN row. It
    agrees with rpa.merge_states to float32 rounding (not bitwise: XLA's
    exp and log are its own). sinks [H] float32: attention sinks, merged
    once, as a key of logit sinks[h] whose value row is zero."""
    args = _merge_args(outs, lses, sinks, out_dtype, 3,
                       "outs [N, T, H, Dv] and lses [N, T, H]")
    return _merge(*args, lambda x: jnp.max(x, axis=0),
                  lambda x: jnp.sum(x, axis=0))


def merge_across(out, lse, axis_name, *, sinks=None, out_dtype=None):
    """merge_states over the devices of a mesh axis, inside jax.shard_map:
    each device passes its own state (out [T, H, Dv], lse [T, H], e.g. its
    shard_attention result) and gets the merged one, the same on every
    device of the axis (jax.lax.pmax and psum: an all-reduce of [T, H, Dv]
    float32, no gathered copy of every state). Same rules and sinks as
    merge_states; agrees with it to float32 rounding."""
    args = _merge_args(out, lse, sinks, out_dtype, 2,
                       "out [T, H, Dv] and lse [T, H]")
    return _merge(*args, lambda x: jax.lax.pmax(x, axis_name),
                  lambda x: jax.lax.psum(x, axis_name))
