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

__all__ = ["ragged_paged_attention", "library_path"]

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
                           num_threads=None, isa=None):
    """RPA v3's call as a JAX op: returns (out, updated_kv_cache).

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

    call = jax.ffi.ffi_call(
        _TARGET,
        (jax.ShapeDtypeStruct(queries.shape, queries.dtype),
         jax.ShapeDtypeStruct(kv_cache.shape, kv_cache.dtype)),
        input_output_aliases={3: 1})

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
