"""rpa from NumPy: one serving step (a decode and a prefill chunk) through
upstream's call on the combined cache, then the same step through the
strided call on vLLM's cache layout.

    pip install ./python          # from the repository root
    python examples/python_numpy.py

Prints the kernel set, one output row and the checks; exits 1 if one fails.
"""
import sys

import ml_dtypes
import numpy as np

import rpa

bf16 = ml_dtypes.bfloat16
Hq, Hkv, D, P, ps = 32, 8, 128, 64, 16   # Llama-3-8B heads; 64 pages of 16
G = Hq // Hkv
rng = np.random.default_rng(0)

# The batch: sequence 0 decodes (1 new token, 40 in all), sequence 1
# prefills a chunk (8 new tokens after 8 cached). 3 pages per sequence;
# only the first ceil(kv_len / ps) of a row are read (sequence 1's two
# zeros are padding).
cu_q_lens = np.array([0, 1, 9], np.int32)
kv_lens = np.array([40, 16], np.int32)
page_indices = np.array([7, 2, 9, 4, 0, 0], np.int32)
distribution = np.array([1, 1, 2], np.int32)  # decode_end, prefill_end, end
q = rng.standard_normal((9, Hq, D)).astype(bf16)   # RoPE already applied
k = rng.standard_normal((9, Hkv, D)).astype(bf16)
v = rng.standard_normal((9, Hkv, D)).astype(bf16)
# The cached prefix (every slot filled; the new tokens' slots get overwritten)
cache = rng.standard_normal((P, ps, 2 * Hkv, D)).astype(bf16)
prefix = cache.copy()


def slot(seq, pos):
    """(page, slot) of position pos of sequence seq."""
    return page_indices[seq * 3 + pos // ps], pos % ps


def reference(kv_cache, seq, t, n, pos):
    """Output row of query (token t, head n) at position pos, in float64,
    from a combined cache that holds every key 0..pos."""
    h = n // G
    rows = [kv_cache[slot(seq, c)] for c in range(pos + 1)]
    keys = np.array([r[2 * h] for r in rows], np.float64)
    vals = np.array([r[2 * h + 1] for r in rows], np.float64)
    s = keys @ q[t, n].astype(np.float64) * D ** -0.5
    w = np.exp(s - s.max())
    return w @ vals / w.sum()


failures = 0


def check(ok, what):
    global failures
    print(("ok    " if ok else "FAIL  ") + what)
    failures += not ok


print(f"rpa {rpa.__version__}, kernel set {rpa.kernel_set()}, "
      f"library {rpa.library_path}")

# 1. Upstream's call (tpu-inference's RPA v3 arguments), combined layout
#    [pages, page_size, 2 * Hkv, D]: K of head h is row 2h, V row 2h + 1.
#    Functional like upstream: a new cache comes back (a copy of the whole
#    cache, updated), the input is left alone.
out, new_cache = rpa.ragged_paged_attention(
    q, k, v, cache, kv_lens, page_indices, cu_q_lens, distribution,
    sm_scale=D ** -0.5)
print("decode token, query head 0, out[:4]:", out[0, 0, :4].astype(np.float32))
check(new_cache is not cache and (cache == prefix).all(),
      "functional call: the input cache is unchanged")
new_rows = [(0, 0, 39)] + [(1, t, 8 + t - 1) for t in range(1, 9)]
check(all((new_cache[slot(s, p)][0::2] == k[t]).all() and
          (new_cache[slot(s, p)][1::2] == v[t]).all() for s, t, p in new_rows),
      "the 9 new tokens' K/V are in their slots of the returned cache")
worst = max(np.abs(reference(new_cache, s, t, n, p) -
                   out[t, n].astype(np.float64)).max()
            for s, t, p in new_rows for n in range(Hq))
# Rounding: the bf16 output (2^-9 relative) and, where avx512 runs bf16 on
# vdpbf16ps, the softmax weights rounded to bf16 (2^-8 * max|v|).
vmax = max(np.abs(prefix[:, :, 1::2].astype(np.float32)).max(),
           np.abs(v.astype(np.float32)).max())
check(worst < 2 ** -7 * vmax,
      f"every output row against float64: max |diff| {worst:.1e}")

# inplace=True writes into the cache given and returns it: no copy. This is
# what an engine wants in its serving loop.
out2, same = rpa.ragged_paged_attention(
    q, k, v, cache, kv_lens, page_indices, cu_q_lens, distribution,
    sm_scale=D ** -0.5, inplace=True)
check(same is cache and (cache.view(np.uint16) == new_cache.view(np.uint16)).all()
      and (out2.view(np.uint16) == out.view(np.uint16)).all(),
      "inplace=True: the same cache object, updated, the same output")

# 2. The strided call on vLLM's layout [2, pages, page_size, Hkv, D]:
#    cache_views gives K and V views without a copy, and rpa.attention
#    updates them in place (any strided layout works the same way).
vllm_cache = np.stack([prefix[:, :, 0::2], prefix[:, :, 1::2]])
k_cache, v_cache = rpa.cache_views(vllm_cache, "vllm")
out3, lse = rpa.attention(q, k, v, k_cache, v_cache, kv_lens, page_indices,
                          cu_q_lens, sm_scale=D ** -0.5, return_lse=True)
check((out3.view(np.uint16) == out.view(np.uint16)).all(),
      "vLLM layout through rpa.attention: bitwise the same output")
check((vllm_cache[0] == new_cache[:, :, 0::2]).all() and
      (vllm_cache[1] == new_cache[:, :, 1::2]).all(),
      "vLLM layout: the cache buffer itself holds the new tokens")
print(f"log-sum-exp of the decode token's 32 heads: {lse[0].min():.2f} .. "
      f"{lse[0].max():.2f}")

sys.exit(1 if failures else 0)
