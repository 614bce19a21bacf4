"""rpa.torch: the PyTorch operators (python/ffi/rpa_torch_ops.cpp).

- rpa::ragged_paged_attention equals the NumPy call bit for bit (output and
  updated cache) on every q dtype x cache dtype, with features, on every
  kernel set and 1 and 2 threads; the cache is updated in place.
- rpa::attention over vLLM's, FlashInfer's (NHD, HND) and upstream's
  layouts, through views of one cache tensor, equals the NumPy strided call
  bit for bit on every dtype pair; latent (MLA) caches; the log-sum-exp.
- torch.library.opcheck passes on the three ops.
- torch.compile(fullgraph=True) over a decode loop: no graph break, the
  cache keeps its data pointer and is updated in place, no copy of it in
  the generated code, results equal to eager.
- Thread count: None follows torch.get_num_threads(); num_threads sets it.
- Errors raise ValueError with the library's message; nothing is written.
- Calls from several Python threads at once.
"""
import ctypes
import threading

import ml_dtypes
import numpy as np
import pytest
import torch

import rpa
import rpa.torch as rt
from _batches import (BF16, E4M3, E5M2, F16, F32, IO_DTYPES, KV_DTYPES,
                      Batch, bits, random_lengths)

ISAS = rpa.kernel_sets()
TORCH_DTYPES = {F32: torch.float32, BF16: torch.bfloat16, F16: torch.float16,
                E4M3: torch.float8_e4m3fn, E5M2: torch.float8_e5m2}
_SHIM = ctypes.CDLL(rt.library_path)
_SHIM.rpa_torch_last_call_threads.restype = ctypes.c_int


def to_torch(a):
    """A torch tensor holding the same bytes as the NumPy array a."""
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    if a.dtype in TORCH_DTYPES:
        if a.dtype in (F32, F16):
            return torch.from_numpy(a.copy())
        raw = torch.from_numpy(a.view(np.uint8 if a.itemsize == 1
                                      else np.int16).copy())
        return raw.view(TORCH_DTYPES[a.dtype])
    return torch.from_numpy(a.copy())


def to_np(t):
    """The NumPy (ml_dtypes) array with the bytes of tensor t."""
    t = t.detach().contiguous()
    for np_dt, t_dt in TORCH_DTYPES.items():
        if t.dtype == t_dt:
            if np_dt in (F32, F16):
                return t.numpy()
            raw = t.view(torch.uint8 if t.element_size() == 1
                         else torch.int16).numpy()
            return raw.view(np_dt)
    return t.numpy()


def assert_bitwise(got, want, what):
    got = to_np(got) if isinstance(got, torch.Tensor) else np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype, (
        f"{what}: {got.shape} {got.dtype} vs {want.shape} {want.dtype}")
    diff = int((bits(got) != bits(want)).sum())
    assert diff == 0, f"{what}: {diff} bytes differ"


FEATURES = {
    "plain": {},
    "all": dict(sliding_window=9, soft_cap=4.0, k_scale=1.5, v_scale=0.5,
                q_scale=0.25),
    "non_causal": dict(use_causal_mask=False),
}
V3_CASES = ([(q, kv, "plain") for q in IO_DTYPES for kv in KV_DTYPES] +
            [(BF16, BF16, "all"), (F32, E4M3, "all"),
             (F16, F16, "non_causal")])


@pytest.mark.parametrize("q_dtype,kv_dtype,feature", V3_CASES,
                         ids=[f"{q}-{kv}-{f}" for q, kv, f in V3_CASES])
def test_v3_equals_numpy_call(q_dtype, kv_dtype, feature):
    rng = np.random.default_rng(KV_DTYPES.index(kv_dtype) * 10 +
                                IO_DTYPES.index(q_dtype))
    b = Batch(rng, random_lengths(rng, 3, 3), q_dtype=q_dtype,
              kv_dtype=kv_dtype, pad_tokens=3, pad_seqs=1, head_dim=40)
    kw = dict(sm_scale=b.D ** -0.5, **FEATURES[feature])
    if feature == "all":
        kw["attention_sink"] = rng.standard_normal(b.Hq).astype(np.float32)
    tkw = dict(kw)
    if "attention_sink" in kw:
        tkw["attention_sink"] = torch.from_numpy(kw["attention_sink"])
    for isa in ISAS:
        for threads in (1, 2):
            args = b.call_args()
            want_out, want_cache = rpa.ragged_paged_attention(
                *args, num_threads=threads, isa=isa, **kw)
            targs = [to_torch(a) for a in args]
            cache = targs[3]
            ptr = cache.data_ptr()
            got_out, got_cache = rt.ragged_paged_attention(
                *targs, num_threads=threads, isa=isa, **tkw)
            what = f"{isa}, {threads} threads"
            assert got_cache is cache and cache.data_ptr() == ptr, what
            assert_bitwise(got_out, want_out, f"out ({what})")
            assert_bitwise(got_cache, want_cache, f"cache ({what})")


LAYOUTS = ["combined", "vllm", "flashinfer_nhd", "flashinfer_hnd"]


def layout_buffer(b, layout):
    """b's cache contents in the given layout (a new NumPy array)."""
    c = b.kv_cache  # [P, ps, 2*Hkv, D]
    k, v = c[:, :, 0::2], c[:, :, 1::2]
    if layout == "combined":
        return c.copy()
    if layout == "vllm":
        return np.ascontiguousarray(np.stack([k, v]))
    if layout == "flashinfer_nhd":
        return np.ascontiguousarray(np.stack([k, v], axis=1))
    return np.ascontiguousarray(
        np.stack([k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)], axis=1))


STRIDED_CASES = [(q, kv, lay) for q in IO_DTYPES for kv in KV_DTYPES
                 for lay in LAYOUTS]


@pytest.mark.parametrize("q_dtype,kv_dtype,layout", STRIDED_CASES,
                         ids=[f"{q}-{kv}-{lay}" for q, kv, lay in STRIDED_CASES])
def test_strided_layouts_equal_numpy_call(q_dtype, kv_dtype, layout):
    rng = np.random.default_rng(STRIDED_CASES.index(
        (q_dtype, kv_dtype, layout)))
    b = Batch(rng, random_lengths(rng, 2, 2), q_dtype=q_dtype,
              kv_dtype=kv_dtype, pad_tokens=2, head_dim=32)
    buf = layout_buffer(b, layout)
    want_buf = buf.copy()
    wk, wv = rpa.cache_views(want_buf, layout)
    meta = (b.kv_lens, b.page_indices, b.cu_q_lens)
    want_out, want_lse = rpa.attention(
        b.queries, b.keys, b.values, wk, wv, *meta, sm_scale=b.D ** -0.5,
        return_lse=True)
    tbuf = to_torch(buf)
    tk, tv = rt.cache_views(tbuf, layout)
    tmeta = [to_torch(m) for m in meta]
    q, k, v = (to_torch(x) for x in (b.queries, b.keys, b.values))
    got = rt.attention(q, k, v, tk, tv, *tmeta, sm_scale=b.D ** -0.5)
    assert_bitwise(got, want_out, "out")
    assert_bitwise(tbuf, want_buf, "cache")
    # layout_view() describes the same views from the shape alone
    assert rt.layout_view(tbuf, layout) == rt.cache_view(tk, tv, tbuf)
    # with the log-sum-exp, and cache= given: the same output again
    tbuf2 = to_torch(buf)
    tk2, tv2 = rt.cache_views(tbuf2, layout)
    got2, lse = rt.attention(q, k, v, tk2, tv2, *tmeta, cache=tbuf2,
                             sm_scale=b.D ** -0.5, return_lse=True)
    assert_bitwise(got2, want_out, "out (return_lse)")
    assert_bitwise(lse, want_lse, "lse")


def test_latent_cache_and_out_dtype():
    rng = np.random.default_rng(5)
    b = Batch(rng, random_lengths(rng, 2, 2), q_dtype=BF16, kv_dtype=BF16,
              num_q_heads=4, num_kv_heads=1, head_dim=48)
    Dv = 32
    cache = b.kv_cache[:, :, :1, :].copy()  # one latent row per slot
    want_cache = cache.copy()
    want = rpa.attention(b.queries, b.keys[:, :1], None, want_cache, None,
                         b.kv_lens, b.page_indices, b.cu_q_lens,
                         sm_scale=0.1, head_dim_v=Dv, out_dtype=np.float32)
    tcache = to_torch(cache)
    got = rt.attention(to_torch(b.queries), to_torch(b.keys[:, :1]), None,
                       tcache, None, to_torch(b.kv_lens),
                       to_torch(b.page_indices), to_torch(b.cu_q_lens),
                       sm_scale=0.1, head_dim_v=Dv, out_dtype=torch.float32)
    assert got.shape == (b.T, b.Hq, Dv) and got.dtype == torch.float32
    assert_bitwise(got, want, "out")
    assert_bitwise(tcache, want_cache, "cache")


def small_case(dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    Hq, Hkv, D, P, ps = 4, 2, 32, 8, 4
    q = torch.randn(5, Hq, D, generator=g).to(dtype)
    k = torch.randn(5, Hkv, D, generator=g).to(dtype)
    v = torch.randn(5, Hkv, D, generator=g).to(dtype)
    cache = torch.randn(P, ps, 2 * Hkv, D, generator=g).to(dtype)
    kv_lens = torch.tensor([6, 4], dtype=torch.int32)
    page_indices = torch.tensor([3, 5, 1, 0], dtype=torch.int32)
    cu = torch.tensor([0, 1, 5], dtype=torch.int32)
    return q, k, v, cache, kv_lens, page_indices, cu


def test_opcheck():
    q, k, v, cache, kv_lens, pi, cu = small_case()
    view = rt.cache_view(*rt.cache_views(cache), cache)
    torch.library.opcheck(torch.ops.rpa.attention.default,
                          (q, k, v, cache, view, kv_lens, pi, cu, 0.2))
    torch.library.opcheck(torch.ops.rpa.attention_lse.default,
                          (q, k, v, cache, view, kv_lens, pi, cu, 0.2),
                          {"sliding_window": 3})
    torch.library.opcheck(torch.ops.rpa.ragged_paged_attention.default,
                          (q, k, v, cache, kv_lens, pi, cu, None, 0.2))


def test_compile_decode_loop_in_place_no_graph_break():
    from torch._inductor.utils import run_and_get_code
    Hq, Hkv, D, P, ps, steps = 4, 2, 32, 64, 4, 6
    g = torch.Generator().manual_seed(1)
    base = torch.randn(P, ps, 2 * Hkv, D, generator=g)
    pi = torch.randperm(P, generator=g).to(torch.int32)[:8]
    qs = [torch.randn(1, Hq, D, generator=g) for _ in range(steps)]
    ks = [torch.randn(1, Hkv, D, generator=g) for _ in range(steps)]
    vs = [torch.randn(1, Hkv, D, generator=g) for _ in range(steps)]
    cu = torch.tensor([0, 1], dtype=torch.int32)

    def step(q, k, v, cache, kv_lens, page_indices, cu_q_lens):
        out = rt.attention(q, k, v, None, None, kv_lens, page_indices,
                           cu_q_lens, cache=cache,
                           cache_view=rt.layout_view(cache, "combined"),
                           sm_scale=D ** -0.5)
        return out * 2.0

    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    eager_cache, comp_cache = base.clone(), base.clone()
    ptr = comp_cache.data_ptr()
    codes = []
    for i in range(steps):
        kv_lens = torch.tensor([9 + i], dtype=torch.int32)
        want = step(qs[i], ks[i], vs[i], eager_cache, kv_lens, pi, cu)
        got, code = run_and_get_code(compiled, qs[i], ks[i], vs[i],
                                     comp_cache, kv_lens, pi, cu)
        codes += code
        assert torch.equal(got, want), f"step {i}"
        assert torch.equal(comp_cache, eager_cache), f"cache, step {i}"
        assert comp_cache.data_ptr() == ptr
    src = "\n".join(codes)
    assert "torch.ops.rpa.attention.default" in src
    # the op runs on the caller's cache: no clone / copy of it anywhere
    for bad in ("clone", "copy_", "aten.copy"):
        assert bad not in src, f"{bad!r} in the generated code:\n{src}"


def test_threads_follow_torch():
    q, k, v, cache, kv_lens, pi, cu = small_case()
    old = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            rt.ragged_paged_attention(q, k, v, cache.clone(), kv_lens, pi, cu,
                                      None)
            assert _SHIM.rpa_torch_last_call_threads() == n
        rt.ragged_paged_attention(q, k, v, cache.clone(), kv_lens, pi, cu,
                                  None, num_threads=3)
        assert _SHIM.rpa_torch_last_call_threads() == 3
    finally:
        torch.set_num_threads(old)


def test_errors_carry_the_message_and_write_nothing():
    q, k, v, cache, kv_lens, pi, cu = small_case()
    before = cache.clone()
    with pytest.raises(ValueError, match=r"RPA_INVALID_PAGES"):
        rt.ragged_paged_attention(q, k, v, cache, kv_lens + 100, pi, cu, None)
    with pytest.raises(ValueError, match=r"RPA_INVALID_LENGTHS"):
        rt.ragged_paged_attention(q, k, v, cache, kv_lens,
                                  pi, torch.tensor([0, 0, 5], dtype=torch.int32),
                                  None)
    with pytest.raises(ValueError, match=r"kv_lens: expected int32"):
        rt.ragged_paged_attention(q, k, v, cache, kv_lens.long(), pi, cu, None)
    with pytest.raises(ValueError, match=r"k: dtype"):
        rt.ragged_paged_attention(q, k.float(), v, cache, kv_lens, pi, cu,
                                  None)
    with pytest.raises(ValueError, match=r"q: dtype"):
        rt.ragged_paged_attention(q.to(torch.float8_e4m3fn), k, v, cache,
                                  kv_lens, pi, cu, None)
    with pytest.raises(ValueError, match=r"sliding_window"):
        rt.ragged_paged_attention(q, k, v, cache, kv_lens, pi, cu, None,
                                  sliding_window=0)
    with pytest.raises(ValueError, match=r"must be contiguous"):
        rt.ragged_paged_attention(q, k, v, cache.transpose(0, 1), kv_lens, pi,
                                  cu, None)
    view = rt.cache_view(*rt.cache_views(cache), cache)
    bad = list(view)
    bad[1] += 1  # one page more than the tensor holds
    with pytest.raises(ValueError, match=r"reaches element"):
        torch.ops.rpa.attention(q, k, v, cache, bad, kv_lens, pi, cu)
    with pytest.raises(ValueError, match=r"13 integers"):
        torch.ops.rpa.attention(q, k, v, cache, view[:5], kv_lens, pi, cu)
    other = cache.clone()
    with pytest.raises(ValueError, match=r"not a view of the cache"):
        rt.attention(q, k, v, *rt.cache_views(other), kv_lens, pi, cu,
                     cache=cache)
    with pytest.raises(ValueError, match=r"isa|kernel set"):
        rt.ragged_paged_attention(q, k, v, cache, kv_lens, pi, cu, None,
                                  isa="no-such-set")
    assert torch.equal(cache, before)


def test_threads_at_once():
    cases = [small_case(seed=s) for s in range(4)]
    want = [rt.ragged_paged_attention(*c[:3], c[3].clone(), *c[4:], None)[0]
            for c in cases]
    got = [None] * 4
    errors = []

    def work(i):
        try:
            c = cases[i]
            for _ in range(20):
                got[i] = rt.ragged_paged_attention(*c[:3], c[3].clone(),
                                                   *c[4:], None)[0]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    for g, w in zip(got, want):
        assert torch.equal(g, w)
