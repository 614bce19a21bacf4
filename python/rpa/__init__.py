"""rpa: ragged paged attention on CPU, over the C library librpa.

Two calls:

- ``ragged_paged_attention(queries, keys, values, kv_cache, kv_lens,
  page_indices, cu_q_lens, distribution, *, ...)`` -> ``(output,
  updated_kv_cache)``: the argument list and return value of the RPA v3
  kernel of vllm-project/tpu-inference, with upstream's combined cache
  layout. Functional like upstream: kv_cache is not modified, the updated
  cache is a new array (``inplace=True`` writes into kv_cache instead).
- ``attention(q, k, v, k_cache, v_cache, kv_lens, page_indices, cu_q_lens,
  *, ...)`` -> ``out`` (or ``(out, lse)``): any strided layout, updated in
  place; ``cache_views()`` turns upstream's, vLLM's and FlashInfer's buffers
  into the (k_cache, v_cache) views it takes; ``v_cache=None`` is a latent
  (MLA) cache.
- ``merge_states(out_a, lse_a, out_b, lse_b)`` -> ``(out, lse)``: two
  results over disjoint key sets combined into the result over their union.

Arrays are NumPy arrays; bfloat16 and the fp8 types come from ml_dtypes
(``ml_dtypes.bfloat16``, ``float8_e4m3fn``, ``float8_e5m2``). Bad input
raises ValueError (``RPAError`` carrying the library's message).

Threads: each Python thread gets its own library context (created on first
use, per num_threads), and the GIL is released during the computation, so
calls from several threads run concurrently. Two calls must not write the
same arrays (out, or the cache when it is updated in place) at once.
"""
from ._api import (RPAError, attention, cache_views, get_kv_cache_shape,
                   merge_states, ragged_paged_attention)
from ._lib import library_path
from ._lib import lib as _lib_handle

__version__ = "0.1.0"

__all__ = ["ragged_paged_attention", "attention", "cache_views",
           "get_kv_cache_shape", "merge_states", "RPAError", "library_path", "kernel_sets",
           "kernel_set"]


def kernel_sets():
    """The kernel sets compiled into the library that this CPU can run
    (reference first)."""
    names = []
    i = 0
    while True:
        n = _lib_handle.rpa_isa_name(i)
        if n is None:
            return names
        if _lib_handle.rpa_isa_available(n):
            names.append(n.decode())
        i += 1


def kernel_set(num_threads=None):
    """The kernel set a call from this thread uses (RPA_ISA or the best)."""
    from ._lib import context
    return _lib_handle.rpa_context_isa(context(num_threads).handle).decode()
