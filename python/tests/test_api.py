"""Unit tests of the Python package: results against a float64 oracle of the
contract, every dtype, the cache semantics (functional copy, inplace,
KV-share), the strided call with other layouts, errors, threads.

Tolerance against the float64 oracle: the library accumulates in float32
and rounds once to the output dtype, so |rpa - oracle| <= u_out * |oracle| +
1e-5 * max|v| (u_out the unit roundoff of the output dtype; 1e-5 covers
float32 accumulation over these short rows with margin). Where q and the
cache are bf16 (or q_scale quantizes q to a bf16 cache), prefill rows run
on vdpbf16ps with the softmax weights rounded to bf16 before they meet V, as
upstream's reference rounds them to the value dtype: each weight carries
2^-9 relative error, so those checks allow 2^-8 * max|v| more."""
import threading
import zlib

import ml_dtypes
import numpy as np
import pytest

import rpa
from _batches import (BF16, E4M3, E5M2, F16, F32, IO_DTYPES, KV_DTYPES,
                      Batch, bits, oracle, random_lengths, rounds_weights,
                      unit_roundoff)


def check_close(out, ref, out_dtype, vmax, what="", weights_bf16=False):
    out = np.asarray(out, dtype=np.float64)
    tol = unit_roundoff(out_dtype) * np.abs(ref) + 1e-5 * vmax
    if weights_bf16:
        tol = tol + 2.0 ** -8 * vmax
    err = np.abs(out - ref)
    bad = err > tol
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} values off; "
                           f"max error {err.max():.3g}")


def vmax(b, cache, v_scale=None):
    return float(np.abs(cache.astype(np.float64)).max()) * (v_scale or 1.0)


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


# ---- results -------------------------------------------------------------

@pytest.mark.parametrize("q_dtype", IO_DTYPES, ids=str)
@pytest.mark.parametrize("kv_dtype", KV_DTYPES, ids=str)
def test_dtypes_against_oracle(rng, q_dtype, kv_dtype):
    b = Batch(rng, random_lengths(rng, 3, 3), q_dtype=q_dtype,
              kv_dtype=kv_dtype, pad_tokens=3, pad_seqs=2)
    out, cache = rpa.ragged_paged_attention(*b.call_args(), sm_scale=0.2)
    assert out.dtype == q_dtype and out.shape == (b.T, b.Hq, b.D)
    assert cache.dtype == kv_dtype and cache.shape == b.kv_cache.shape
    exp = b.expected_cache()
    assert (bits(cache) == bits(exp)).all()
    check_close(out[:b.num_tokens], oracle(b, exp, sm_scale=0.2), q_dtype,
                vmax(b, exp), f"{q_dtype}/{kv_dtype}",
                weights_bf16=rounds_weights(q_dtype, kv_dtype))
    assert (out[b.num_tokens:] == 0).all()  # padding rows


FEATURES = {
    "plain": {},
    "window": dict(sliding_window=5),
    "window1": dict(sliding_window=1),
    "soft_cap": dict(soft_cap=2.0),
    "scales": dict(k_scale=0.7, v_scale=1.3),
    "q_scale": dict(q_scale=0.05),
    "sinks": dict(sinks=np.array([-1.0, 0.5, 3.0, -np.inf], np.float32)),
    "non_causal": dict(causal=False),
    "all": dict(sliding_window=9, soft_cap=3.0, k_scale=1.1, v_scale=0.9,
                q_scale=0.5,
                sinks=np.array([0.0, 1.0, 2.0, -3.0], np.float32)),
}


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("kv_dtype", [BF16, E4M3], ids=str)
def test_features_against_oracle(rng, feature, kv_dtype):
    kw = dict(FEATURES[feature])
    b = Batch(rng, random_lengths(rng, 4, 3), kv_dtype=kv_dtype)
    v3 = dict(kw)
    if "sinks" in v3:
        v3["attention_sink"] = v3.pop("sinks")
    if "causal" in v3:
        v3["use_causal_mask"] = v3.pop("causal")
    out, cache = rpa.ragged_paged_attention(*b.call_args(), sm_scale=0.3,
                                            **v3)
    ref = oracle(b, cache, sm_scale=0.3, **kw)
    check_close(out[:b.num_tokens], ref, F32,
                vmax(b, cache, kw.get("v_scale")), feature,
                weights_bf16=rounds_weights(b.q_dtype, kv_dtype, "q_scale" in kw))


@pytest.mark.parametrize("hq,hkv,d", [(8, 1, 64), (6, 3, 80), (4, 4, 128),
                                      (2, 1, 240)])
def test_heads_and_head_dims(rng, hq, hkv, d):
    b = Batch(rng, random_lengths(rng, 2, 2, max_q=10, max_ctx=30),
              num_q_heads=hq, num_kv_heads=hkv, head_dim=d, page_size=16,
              kv_dtype=BF16, q_dtype=BF16)
    out, cache = rpa.ragged_paged_attention(*b.call_args(),
                                            sm_scale=d ** -0.5)
    check_close(out[:b.num_tokens], oracle(b, cache, sm_scale=d ** -0.5),
                BF16, vmax(b, cache), weights_bf16=True)


def test_lse_and_out_argument(rng):
    b = Batch(rng, random_lengths(rng, 2, 2))
    kc, vc = rpa.cache_views(b.expected_cache())
    sinks = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    out = np.full((b.T, b.Hq, b.D), 7.0, np.float32)
    got, lse = rpa.attention(b.queries, None, None, kc, vc, b.kv_lens,
                             b.page_indices, b.cu_q_lens, sm_scale=0.25,
                             update_kv_cache=False, sinks=sinks, out=out,
                             return_lse=True)
    assert got is out
    ref, ref_lse = oracle(b, b.expected_cache(), sm_scale=0.25, sinks=sinks,
                          lse=True)
    check_close(out[:b.num_tokens], ref, F32, vmax(b, kc))
    np.testing.assert_allclose(lse[:b.num_tokens], ref_lse, rtol=1e-5,
                               atol=1e-5)


# ---- cache semantics ------------------------------------------------------

def test_functional_cache_leaves_input_alone(rng):
    b = Batch(rng, random_lengths(rng, 3, 2), kv_dtype=E5M2)
    before = b.kv_cache.copy()
    out, cache = rpa.ragged_paged_attention(*b.call_args())
    assert cache is not b.kv_cache
    assert (bits(b.kv_cache) == bits(before)).all()
    assert (bits(cache) == bits(b.expected_cache())).all()


def test_inplace_updates_the_given_cache(rng):
    b = Batch(rng, random_lengths(rng, 3, 2), kv_dtype=BF16)
    exp = b.expected_cache()
    out1, _ = rpa.ragged_paged_attention(*b.call_args())
    cache = b.kv_cache
    out2, got = rpa.ragged_paged_attention(*b.call_args(), inplace=True)
    assert got is cache
    assert (bits(cache) == bits(exp)).all()
    assert (bits(out1) == bits(out2)).all()


def test_kv_share_mode_reads_only(rng):
    b = Batch(rng, random_lengths(rng, 3, 2), kv_dtype=F16)
    b.kv_cache = b.expected_cache()  # the new tokens are already there
    before = b.kv_cache.copy()
    b.kv_cache.flags.writeable = False  # nothing may write it
    out, cache = rpa.ragged_paged_attention(*b.call_args(),
                                            update_kv_cache=False)
    assert cache is b.kv_cache
    assert (bits(cache) == bits(before)).all()
    # keys / values may be left out
    out2, _ = rpa.ragged_paged_attention(b.queries, None, None, b.kv_cache,
                                         b.kv_lens, b.page_indices,
                                         b.cu_q_lens, b.distribution,
                                         update_kv_cache=False)
    assert (bits(out) == bits(out2)).all()
    check_close(out[:b.num_tokens], oracle(b, before), F32, vmax(b, before))


def test_only_distribution_sequences_are_computed(rng):
    b = Batch(rng, random_lengths(rng, 2, 3))
    b.distribution[2] = 3  # the last two sequences are not part of the call
    out, cache = rpa.ragged_paged_attention(*b.call_args())
    n = int(b.cu_q_lens[3])
    assert (out[n:] == 0).all()
    full = b.expected_cache()
    b.num_seqs = 3
    part = b.expected_cache()
    assert (bits(cache) == bits(part)).all()
    assert not (bits(cache) == bits(full)).all()


def test_five_d_and_padded_cache(rng):
    """Upstream's 5-D [P, ps, 2*Hkv // packing, packing, D] folds; padding
    rows (2*Hkv aligned up to the packing) and lanes (D aligned to 128) are
    ignored and left untouched."""
    b = Batch(rng, random_lengths(rng, 2, 2), num_kv_heads=1, head_dim=48,
              kv_dtype=E4M3)
    out4, cache4 = rpa.ragged_paged_attention(*b.call_args())
    P, ps = b.num_pages, b.ps
    padded = rng.standard_normal((P, ps, 1, 4, 128)).astype(E4M3)
    padded[:, :, 0, :2, :48] = b.kv_cache
    before = padded.copy()
    args = list(b.call_args())
    args[3] = padded
    out5, cache5 = rpa.ragged_paged_attention(*args)
    assert cache5.shape == padded.shape
    assert (bits(out5) == bits(out4)).all()
    assert (bits(cache5[:, :, 0, :2, :48]) == bits(cache4)).all()
    untouched = np.ones(padded.shape, bool)
    untouched[:, :, 0, :2, :48] = False
    assert (bits(cache5)[untouched] == bits(before)[untouched]).all()


# ---- the strided call and other layouts -----------------------------------

@pytest.mark.parametrize("layout", ["vllm", "flashinfer_nhd",
                                    "flashinfer_hnd", "separate"])
def test_layouts_equal_combined(rng, layout):
    b = Batch(rng, random_lengths(rng, 3, 3), kv_dtype=BF16, q_dtype=BF16)
    ref_out, ref_cache = rpa.ragged_paged_attention(*b.call_args(),
                                                    sm_scale=0.2,
                                                    sliding_window=6)
    K = b.kv_cache[:, :, 0::2]  # [P, ps, Hkv, D]
    V = b.kv_cache[:, :, 1::2]
    if layout == "vllm":
        buf = np.stack([K, V])  # [2, P, ps, Hkv, D]
    elif layout == "flashinfer_nhd":
        buf = np.stack([K, V], axis=1)  # [P, 2, ps, Hkv, D]
    elif layout == "flashinfer_hnd":
        buf = np.stack([K.transpose(0, 2, 1, 3), V.transpose(0, 2, 1, 3)],
                       axis=1)  # [P, 2, Hkv, ps, D]
    if layout == "separate":
        kc, vc = np.ascontiguousarray(K), np.ascontiguousarray(V)
    else:
        kc, vc = rpa.cache_views(buf, layout)
        assert np.shares_memory(kc, buf) and np.shares_memory(vc, buf)
    out = rpa.attention(b.queries, b.keys, b.values, kc, vc, b.kv_lens,
                        b.page_indices.reshape(len(b.kv_lens), -1),
                        b.cu_q_lens, distribution=b.distribution,
                        sm_scale=0.2, sliding_window=6)
    assert (bits(out) == bits(ref_out)).all()
    assert (bits(kc) == bits(ref_cache[:, :, 0::2])).all()
    assert (bits(vc) == bits(ref_cache[:, :, 1::2])).all()


def test_strided_inputs(rng):
    """q, k, v and out as strided views (token and head strides that are not
    the dense ones)."""
    b = Batch(rng, random_lengths(rng, 2, 2), kv_dtype=F16, q_dtype=F16)
    ref_out, ref_cache = rpa.ragged_paged_attention(*b.call_args())
    big_q = np.zeros((b.T, b.Hq * 2, b.D + 8), F16)
    big_q[:, ::2, 4:4 + b.D] = b.queries
    q = big_q[:, ::2, 4:4 + b.D]
    kv_new = np.zeros((b.T, 2, b.Hkv, b.D), F16)  # fused QKV-like buffer
    kv_new[:, 0], kv_new[:, 1] = b.keys, b.values
    big_out = np.zeros((b.T, b.Hq, 2 * b.D), F16)
    out = big_out[:, :, b.D:]
    cache = b.kv_cache.copy()
    kc, vc = rpa.cache_views(cache)
    got = rpa.attention(q, kv_new[:, 0], kv_new[:, 1], kc, vc, b.kv_lens,
                        b.page_indices, b.cu_q_lens, out=out)
    assert got is out
    assert (bits(out) == bits(ref_out)).all()
    assert (big_out[:, :, :b.D] == 0).all()
    assert (bits(cache) == bits(ref_cache)).all()


def test_latent_cache_against_oracle(rng):
    """MLA: one latent row per token [kv_c (Lkv) | k_pe (R)], values are
    kv_c. Checked against the oracle with K = row and V = row[:Lkv]."""
    L, R, Hq = 32, 16, 4
    b = Batch(rng, random_lengths(rng, 2, 2), num_q_heads=Hq,
              num_kv_heads=1, head_dim=L + R, kv_dtype=BF16)
    latent = rng.standard_normal((b.num_pages, b.ps, 1, L + R)).astype(BF16)
    new = b.keys  # [T, 1, L + R]
    out = rpa.attention(b.queries, new, None, latent, None, b.kv_lens,
                        b.page_indices, b.cu_q_lens, head_dim_v=L,
                        sm_scale=0.2)
    assert out.shape == (b.T, Hq, L)
    # the oracle's combined cache: K = latent row, V = latent row (first L)
    comb = np.concatenate([latent, latent], axis=2)
    ref = oracle(b, comb, sm_scale=0.2)[:, :, :L]
    check_close(out[:b.num_tokens], ref, F32, vmax(b, latent))
    for i in range(b.num_seqs):
        for j, pos in enumerate(b.positions(i)):
            p, s = b.slot(i, pos)
            assert (bits(latent[p, s, 0]) ==
                    bits(new[b.cu_q_lens[i] + j, 0])).all()


# ---- errors ---------------------------------------------------------------

def error_of(fn, *args, **kw):
    with pytest.raises(ValueError) as e:
        fn(*args, **kw)
    return e.value


def test_library_errors_carry_the_message(rng):
    b = Batch(rng, [(1, 5), (4, 3)])  # sequence 1: q_len 4 > kv_len 3
    before = b.kv_cache.copy()
    e = error_of(rpa.ragged_paged_attention, *b.call_args(), inplace=True)
    assert isinstance(e, rpa.RPAError)
    assert e.status_name == "RPA_INVALID_LENGTHS"
    assert "kv_lens: sequence 1 has kv_len 3 < q_len 4" in str(e)
    assert (bits(b.kv_cache) == bits(before)).all()  # nothing written


def test_bad_page_and_distribution(rng):
    b = Batch(rng, random_lengths(rng, 2, 2))
    b.page_indices[b.pages_per_seq] = b.num_pages  # sequence 1, page 0
    e = error_of(rpa.ragged_paged_attention, *b.call_args())
    assert e.status_name == "RPA_INVALID_PAGES"
    assert "page_indices: sequence 1" in str(e)
    b = Batch(rng, [(3, 9), (1, 4)])
    b.distribution = np.array([1, 1, 2], np.int32)  # seq 0 is no decode
    e = error_of(rpa.ragged_paged_attention, *b.call_args())
    assert e.status_name == "RPA_INVALID_DISTRIBUTION"
    assert "sequence 0" in str(e)


@pytest.mark.parametrize("kw,needle", [
    (dict(sliding_window=0), "sliding_window"),
    (dict(sliding_window=-3), "sliding_window"),
    (dict(sliding_window=2.5), "sliding_window"),
    (dict(soft_cap=0.0), "soft_cap"),
    (dict(soft_cap=-1.0), "soft_cap"),
    (dict(soft_cap=float("nan")), "soft_cap"),
    (dict(q_scale=0.0), "q_scale"),
    (dict(q_scale=-2.0), "q_scale"),
    (dict(k_scale=0.0), "k_scale"),
    (dict(v_scale=-1.0), "v_scale"),
    (dict(sm_scale=float("inf")), "sm_scale"),
    (dict(attention_sink=np.array([0, 0, float("nan"), 0], np.float32)),
     "sinks"),
    (dict(attention_sink=np.zeros(3, np.float32)), "sinks"),
    (dict(use_causal_mask=False, sliding_window=4), "sliding_window"),
])
def test_bad_parameters(rng, kw, needle):
    b = Batch(rng, random_lengths(rng, 1, 1))
    e = error_of(rpa.ragged_paged_attention, *b.call_args(), **kw)
    assert needle in str(e)


def test_bad_arrays(rng):
    b = Batch(rng, random_lengths(rng, 1, 2))
    args = list(b.call_args())

    def err(i, value, **kw):
        a = list(args)
        a[i] = value
        return str(error_of(rpa.ragged_paged_attention, *a, **kw))

    assert "queries" in err(0, b.queries[0])
    assert "float64" in err(0, b.queries.astype(np.float64))
    assert "k.dtype" in err(1, b.keys.astype(BF16))  # library's message
    assert "keys" in err(1, None)
    assert "k:" in err(1, b.keys[:, :, :-1])
    assert "cu_q_lens" in err(6, b.cu_q_lens[:-1])
    assert "cu_q_lens" in err(6, b.cu_q_lens.astype(np.float32))
    assert "page_indices" in err(5, b.page_indices[:-1])
    assert "distribution" in err(7, b.distribution[:2])
    assert "int32" in err(4, b.kv_lens.astype(np.int64) + 2 ** 40)
    ro = b.kv_cache.copy()
    ro.flags.writeable = False
    assert "read-only" in err(3, ro, inplace=True)
    # out overlapping q: the library's overlap check
    q = b.queries.copy()
    e = error_of(rpa.ragged_paged_attention, q, *args[1:], out=q)
    assert e.status_name == "RPA_OVERLAP"


def test_strided_call_errors(rng):
    b = Batch(rng, random_lengths(rng, 1, 1))
    kc, vc = rpa.cache_views(b.kv_cache)
    base = (b.kv_lens, b.page_indices, b.cu_q_lens)
    # last axis not contiguous
    qq = np.zeros((b.T, b.Hq, 2 * b.D), F32)[:, :, ::2]
    assert "contiguous" in str(error_of(rpa.attention, qq, b.keys, b.values,
                                        kc, vc, *base))
    # byte strides that are not a multiple of the item size
    odd = np.ndarray(b.queries.shape, np.float32, buffer=np.zeros(
        b.queries.nbytes * 2, np.uint8), offset=0,
        strides=(b.Hq * b.D * 4 + 2, b.D * 4, 4))
    assert "multiple of the item size" in str(error_of(
        rpa.attention, odd, b.keys, b.values, kc, vc, *base))
    # negative strides: the library says so
    e = error_of(rpa.attention, b.queries[::-1], b.keys[::-1],
                 b.values[::-1], kc, vc, *base)
    assert "strides must be >= 0" in str(e)
    # a latent cache takes no v
    assert "latent" in str(error_of(rpa.attention, b.queries, b.keys,
                                    b.values, kc, None, *base))
    # mismatched cache halves
    assert "v_cache" in str(error_of(rpa.attention, b.queries, b.keys,
                                     b.values, kc, vc.astype(BF16), *base))
    assert "layout" in str(error_of(rpa.cache_views, b.kv_cache, "nope"))


def test_kv_head_errors_name_the_argument(rng):
    """Keys, values and the cache disagreeing on the KV head count: the
    message names the argument that disagrees with the other two and gives
    both counts; an in-place cache that cannot be written is named kv_cache
    (the argument), not the k_cache view made of it. Nothing is written."""
    b = Batch(rng, random_lengths(rng, 1, 2), num_q_heads=8, num_kv_heads=4)
    args = list(b.call_args())
    before = b.kv_cache.copy()

    def err(i, value, **kw):
        a = list(args)
        a[i] = value
        return str(error_of(rpa.ragged_paged_attention, *a, **kw))

    e = err(1, b.keys[:, :2], inplace=True)
    assert e.startswith("keys: 2 KV heads, but values has 4"), e
    assert "8 combined rows hold K and V of 4" in e
    e = err(2, b.values[:, :2], inplace=True)
    assert e.startswith("values: 2 KV heads, but keys has 4"), e
    assert (bits(b.kv_cache) == bits(before)).all()
    ro = b.kv_cache.copy()
    ro.flags.writeable = False
    e = err(3, ro, inplace=True)
    assert e.startswith("kv_cache: the array is read-only"), e
    assert "inplace=True" in e
    # not written, so a read-only cache is fine in KV-share mode and for the
    # functional call
    rpa.ragged_paged_attention(*args[:3], ro, *args[4:], inplace=True,
                               update_kv_cache=False)
    rpa.ragged_paged_attention(*args[:3], ro, *args[4:])


@pytest.mark.parametrize("kv_dtype,hkv,rows,accepted", [
    (F32, 8, 32, False),   # a cache of 16 heads against keys of 8
    (F32, 2, 5, True),     # a last row that holds no head is left alone
    (F32, 2, 6, False),    # float32 packs one element per word: no padding
    (BF16, 3, 6, True),
    (BF16, 3, 8, False),   # 2*3 rows are already a multiple of 2
    (BF16, 1, 4, False),   # two heads' rows against one head's keys
    (E4M3, 1, 4, True),    # upstream's padding of 2 rows to the packing 4
    (E4M3, 1, 8, False),
    (E4M3, 3, 8, True),
    (E5M2, 3, 12, False),
], ids=str)
def test_cache_with_more_heads_than_keys(rng, kv_dtype, hkv, rows, accepted):
    """A combined cache's 2*Hkv rows may be padded up to a multiple of the
    packing (upstream's layout): those calls equal the unpadded one. More
    rows mean more heads than the keys have, a layout bug: ValueError naming
    kv_cache with both counts, and nothing written."""
    b = Batch(rng, random_lengths(rng, 1, 2), num_q_heads=2 * hkv,
              num_kv_heads=hkv, kv_dtype=kv_dtype)
    want_out, want_cache = rpa.ragged_paged_attention(*b.call_args())
    padded = rng.standard_normal(b.kv_cache.shape[:2] + (rows, b.D)).astype(
        kv_dtype)
    padded[:, :, :2 * hkv] = b.kv_cache
    before = padded.copy()
    args = list(b.call_args())
    args[3] = padded
    if accepted:
        out, cache = rpa.ragged_paged_attention(*args, inplace=True)
        assert (bits(out) == bits(want_out)).all()
        assert (bits(cache[:, :, :2 * hkv]) == bits(want_cache)).all()
        assert (bits(cache[:, :, 2 * hkv:]) ==
                bits(before[:, :, 2 * hkv:])).all()
        return
    e = str(error_of(rpa.ragged_paged_attention, *args, inplace=True))
    assert e.startswith(f"kv_cache: {rows} combined rows hold K and V of "
                        f"{rows // 2} KV heads, more than the {hkv} of "
                        "keys"), e
    assert (bits(padded) == bits(before)).all()
    e = str(error_of(rpa.cache_views, padded, num_kv_heads=hkv))
    assert f"more than the {hkv} of num_kv_heads" in e, e


def test_strided_cache_with_more_heads_than_k(rng):
    """attention() takes Hkv from k_cache: views of 16 heads against keys of
    8 (a combined buffer's two halves passed as if separate, say) name
    k_cache and both counts; fewer heads in the cache name k."""
    b = Batch(rng, random_lengths(rng, 1, 2), num_q_heads=16, num_kv_heads=8)
    base = (b.kv_lens, b.page_indices, b.cu_q_lens)
    wide = np.concatenate([b.kv_cache, b.kv_cache], axis=2)  # 32 rows
    kc, vc = rpa.cache_views(wide)  # 16 heads each
    before = wide.copy()
    e = str(error_of(rpa.attention, b.queries, b.keys, b.values, kc, vc,
                     *base))
    assert e.startswith("k_cache: 16 KV heads, more than the 8 of k"), e
    assert (bits(wide) == bits(before)).all()
    kc, vc = rpa.cache_views(b.kv_cache)
    e = str(error_of(rpa.attention, b.queries, np.concatenate(
        [b.keys, b.keys], axis=1), b.values, kc, vc, *base))
    assert e.startswith("k: expected shape"), e


# ---- threads --------------------------------------------------------------

def test_threads_are_independent(rng):
    """Each thread has its own context: concurrent calls give the results of
    sequential ones, and one thread's error does not leak into another's."""
    batches = [Batch(rng, random_lengths(rng, 3, 3), kv_dtype=BF16)
               for _ in range(4)]
    expected = [rpa.ragged_paged_attention(*b.call_args(), num_threads=1)
                for b in batches]
    bad = Batch(rng, [(2, 1)])
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = rpa.ragged_paged_attention(
                    *batches[i].call_args())
                with pytest.raises(rpa.RPAError, match="kv_len 1 < q_len 2"):
                    rpa.ragged_paged_attention(*bad.call_args())
        except BaseException as ex:  # noqa: B902 - reported below
            errors.append(ex)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (o1, c1), (o2, c2) in zip(expected, (results[i] for i in range(4))):
        np.testing.assert_allclose(o1, o2, rtol=1e-6, atol=1e-6)
        assert (bits(c1) == bits(c2)).all()


def test_kernel_sets_listed():
    sets = rpa.kernel_sets()
    assert sets and sets[0] == "ref"
    assert rpa.kernel_set() in sets


# ---- the ctypes declarations follow include/rpa.h -------------------------

def header_fields(struct):
    """Field names of `typedef struct NAME { ... } NAME;` in include/rpa.h,
    in order (multi-declarator lines split, comments dropped)."""
    import os
    import re
    path = os.path.join(os.path.dirname(__file__), "..", "..", "include",
                        "rpa.h")
    if not os.path.isfile(path):
        pytest.skip("include/rpa.h is not beside the tests")
    text = open(path).read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (struct, struct),
                     text, re.S).group(1)
    names = []
    for decl in body.split(";"):
        decl = decl.strip()
        if not decl:
            continue
        decl = re.sub(r"^(const\s+)?\w+\s*\**", "", decl)  # the type
        for d in decl.split(","):
            names.append(d.strip().lstrip("*").strip())
    return names


@pytest.mark.parametrize("struct,cls", [
    ("rpa_args", "RpaArgs"), ("rpa_tensor", "RpaTensor"),
    ("rpa_kv_cache", "RpaKvCache"),
    ("rpa_context_options", "RpaContextOptions")])
def test_ctypes_structs_match_header(struct, cls):
    from rpa import _lib
    fields = [f[0] for f in getattr(_lib, cls)._fields_]
    assert fields == header_fields(struct)


# ---- every kernel set this CPU runs ----------------------------------------

@pytest.mark.parametrize("isa", rpa.kernel_sets())
@pytest.mark.parametrize("kv_dtype", [BF16, E4M3], ids=str)
def test_every_kernel_set_against_oracle(rng, isa, kv_dtype):
    b = Batch(rng, random_lengths(rng, 4, 4), kv_dtype=kv_dtype,
              q_dtype=BF16, num_q_heads=8, num_kv_heads=2, head_dim=64)
    kw = dict(sliding_window=20, soft_cap=4.0, k_scale=0.9, v_scale=1.1,
              q_scale=0.5, sinks=np.linspace(-2, 2, 8).astype(np.float32))
    cache = b.kv_cache.copy()
    kc, vc = rpa.cache_views(cache)
    out, lse = rpa.attention(b.queries, b.keys, b.values, kc, vc, b.kv_lens,
                             b.page_indices, b.cu_q_lens,
                             distribution=b.distribution, sm_scale=0.125,
                             return_lse=True, isa=isa, **kw)
    assert (bits(cache) == bits(b.expected_cache())).all()
    ref, ref_lse = oracle(b, cache, sm_scale=0.125, lse=True, **kw)
    check_close(out[:b.num_tokens], ref, BF16, vmax(b, cache, 1.1), isa,
                weights_bf16=rounds_weights(BF16, kv_dtype, True))
    np.testing.assert_allclose(lse[:b.num_tokens], ref_lse, rtol=1e-5,
                               atol=1e-4)
