"""Property-based checks (hypothesis) of random valid ragged batches against
the float64 oracle of the contract, on every kernel set this CPU runs; the
numerical edges of the contract (a NaN or an infinity makes NaN exactly the
rows that see it, on every set); and bad input that must raise, never
crash: wrong dtypes, empty batches, messages that name the argument."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rpa
from _batches import (BF16, E4M3, E5M2, F16, F32, Batch, bits, oracle,
                      rounds_weights)
from test_api import check_close, error_of, vmax

ISAS = rpa.kernel_sets()
HEADS = [(1, 1), (4, 2), (8, 2), (6, 3), (4, 1)]


@st.composite
def batches(draw):
    """A valid batch and the call's options."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    n_dec = draw(st.integers(0, 3))
    n_pre = draw(st.integers(0 if n_dec else 1, 3))
    seqs = [(1, draw(st.integers(1, 70))) for _ in range(n_dec)]
    for _ in range(n_pre):
        q = draw(st.integers(2, 20))
        seqs.append((q, q + draw(st.integers(0, 50))))
    hq, hkv = draw(st.sampled_from(HEADS))
    b = Batch(rng, seqs, num_q_heads=hq, num_kv_heads=hkv,
              head_dim=draw(st.sampled_from([8, 24, 40, 64, 72])),
              page_size=draw(st.sampled_from([1, 3, 8, 16])),
              q_dtype=draw(st.sampled_from([F32, BF16, F16])),
              kv_dtype=draw(st.sampled_from([F32, BF16, F16, E4M3, E5M2])),
              pad_tokens=draw(st.integers(0, 2)))
    kw = dict(sm_scale=draw(st.sampled_from([0.125, 0.3, 1.0])))
    if draw(st.booleans()):
        kw["soft_cap"] = draw(st.sampled_from([5.0, 30.0]))
    if draw(st.booleans()):
        kw["sliding_window"] = draw(st.integers(1, 40))
    if draw(st.booleans()):
        kw["sinks"] = rng.standard_normal(hq).astype(np.float32)
    isa = draw(st.sampled_from(ISAS))
    return b, kw, isa


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_random_batches_against_oracle(case):
    b, kw, isa = case
    cache = b.kv_cache.copy()
    kc, vc = rpa.cache_views(cache)
    out = rpa.attention(b.queries, b.keys, b.values, kc, vc, b.kv_lens,
                        b.page_indices, b.cu_q_lens,
                        distribution=b.distribution, isa=isa, **kw)
    exp = b.expected_cache()
    assert (bits(cache) == bits(exp)).all(), "the fused write"
    ref = oracle(b, cache, **kw)
    check_close(out[:b.num_tokens], ref, b.q_dtype, vmax(b, cache),
                f"{isa} {b.q_dtype}/{b.kv_dtype} {kw}",
                weights_bf16=rounds_weights(b.q_dtype, b.kv_dtype,
                                            kw.get("q_scale")))
    assert (out[b.num_tokens:] == 0).all()


# ---- NaN and infinity (docs/contract.md, section 6) -----------------------

def _user_batch():
    """bf16, 8/2 heads, D 64: a decode and a 5-token chunk."""
    rng = np.random.default_rng(5)
    return Batch(rng, [(1, 30), (5, 21)], num_q_heads=8, num_kv_heads=2,
                 head_dim=64, page_size=16, q_dtype=BF16, kv_dtype=BF16)


@pytest.mark.parametrize("isa", ISAS)
def test_nan_in_q_makes_exactly_its_row_nan(isa):
    b = _user_batch()
    b.queries[0, 0, 3] = np.nan  # the decode token, head 0
    kc, vc = rpa.cache_views(b.kv_cache.copy())
    out = rpa.attention(b.queries, b.keys, b.values, kc, vc, b.kv_lens,
                        b.page_indices, b.cu_q_lens, sm_scale=0.125, isa=isa,
                        out_dtype=F32)
    mask = np.zeros(out.shape[:2], bool)
    mask[0, 0] = True
    assert np.isnan(out[mask]).all()
    assert np.isfinite(out[:b.num_tokens][~mask[:b.num_tokens]]).all()


@pytest.mark.parametrize("isa", ISAS)
def test_inf_in_new_k_makes_nan_the_rows_that_see_it(isa):
    b = _user_batch()
    b.keys[1 + 2, 1, 0] = np.inf  # chunk token 2, KV head 1
    kc, vc = rpa.cache_views(b.kv_cache.copy())
    out, lse = rpa.attention(b.queries, b.keys, b.values, kc, vc, b.kv_lens,
                             b.page_indices, b.cu_q_lens, sm_scale=0.125,
                             return_lse=True, isa=isa, out_dtype=F32)
    sees = np.zeros(out.shape[:2], bool)
    sees[1 + 2:1 + 5, 4:8] = True  # chunk tokens 2..4, heads of KV head 1
    assert np.isnan(out[sees]).all() and np.isnan(lse[sees]).all()
    rest = ~sees[:b.num_tokens]
    assert np.isfinite(out[:b.num_tokens][rest]).all()
    assert np.isfinite(lse[:b.num_tokens][rest]).all()


# ---- bad input and edge shapes ---------------------------------------------

def test_float64_q_names_q():
    b = _user_batch()
    kc, vc = rpa.cache_views(b.kv_cache)
    e = error_of(rpa.attention, b.queries.astype(np.float64), b.keys,
                 b.values, kc, vc, b.kv_lens, b.page_indices, b.cu_q_lens)
    assert str(e).startswith("q:") and "float64" in str(e)


def test_empty_batch_is_an_empty_result():
    b = _user_batch()
    e = np.zeros((0, 8, 64), BF16)
    k = np.zeros((0, 2, 64), BF16)
    z = np.zeros((0,), np.int32)
    out, cache = rpa.ragged_paged_attention(e, k, k, b.kv_cache, z, z,
                                            np.zeros(1, np.int32), None)
    assert out.shape == (0, 8, 64)
    assert (bits(cache) == bits(b.kv_cache)).all()
    kc, vc = rpa.cache_views(b.kv_cache.copy())
    assert rpa.attention(e, k, k, kc, vc, z, z, np.zeros(1, np.int32)).shape \
        == (0, 8, 64)


def test_decreasing_cu_q_lens_with_a_hint_is_a_length_error():
    b = _user_batch()
    cu = np.array([0, 6, 1], np.int32)
    e = error_of(rpa.ragged_paged_attention, b.queries, b.keys, b.values,
                 b.kv_cache, np.array([30, 21], np.int32), b.page_indices,
                 cu, np.array([0, 2, 2], np.int32))
    assert e.status_name == "RPA_INVALID_LENGTHS" and "cu_q_lens" in str(e)


def test_a_written_page_another_sequence_reads_is_refused():
    b = _user_batch()
    pi = b.page_indices.copy().reshape(2, -1)
    pi[1, 0] = pi[0, 1]  # sequence 1 reads the page sequence 0 writes into
    e = error_of(rpa.ragged_paged_attention, b.queries, b.keys, b.values,
                 b.kv_cache, b.kv_lens, pi.reshape(-1), b.cu_q_lens,
                 b.distribution)
    assert e.status_name == "RPA_OVERLAP" and "sequence 0" in str(e)


@pytest.mark.parametrize("bad", ["int8", "float64", "complex64"])
def test_wrong_dtypes_raise(bad):
    b = _user_batch()
    args = list(b.call_args())
    for i in (0, 1, 2, 3):
        a = list(args)
        a[i] = np.asarray(a[i], dtype=np.float32).astype(bad)
        with pytest.raises((ValueError, TypeError)):
            rpa.ragged_paged_attention(*a)


def test_non_contiguous_and_read_only_inputs():
    b = _user_batch()
    kc, vc = rpa.cache_views(b.kv_cache.copy())
    qq = np.zeros((b.T, 8, 128), BF16)[:, :, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        rpa.attention(qq, b.keys, b.values, kc, vc, b.kv_lens,
                      b.page_indices, b.cu_q_lens)
    ro = b.kv_cache.copy()
    ro.flags.writeable = False
    rk, rv = rpa.cache_views(ro)
    with pytest.raises(ValueError, match="read-only"):
        rpa.attention(b.queries, b.keys, b.values, rk, rv, b.kv_lens,
                      b.page_indices, b.cu_q_lens)
    # read-only inputs that are only read are fine
    q = b.queries.copy()
    q.flags.writeable = False
    rpa.attention(q, b.keys, b.values, kc, vc, b.kv_lens, b.page_indices,
                  b.cu_q_lens)
