"""rpa.merge_states: two attention results over disjoint key sets merged
equal one attention call over their union; against a float64 NumPy model;
symmetric, in place, NaN rows, bad arguments."""
import ml_dtypes
import numpy as np
import pytest

import rpa

rng = np.random.default_rng(7)


def _decode_halves(L=64, S=3, Hq=4, Hkv=2, D=32, ps=16):
    """attention over all L keys, and over the first and second halves."""
    P = S * L // ps
    kc = rng.standard_normal((P, ps, Hkv, D), dtype=np.float32)
    vc = rng.standard_normal((P, ps, Hkv, D), dtype=np.float32)
    q = rng.standard_normal((S, Hq, D), dtype=np.float32)
    pages = rng.permutation(P).astype(np.int32).reshape(S, L // ps)
    cu = np.arange(S + 1, dtype=np.int32)
    common = dict(update_kv_cache=False, sm_scale=D ** -0.5, return_lse=True)
    full = rpa.attention(q, None, None, kc, vc, np.full(S, L, np.int32),
                         pages, cu, **common)
    half = np.full(S, L // 2, np.int32)
    a = rpa.attention(q, None, None, kc, vc, half, pages, cu, **common)
    shifted = np.concatenate([pages[:, L // 2 // ps:], pages[:, :L // 2 // ps]], 1)
    b = rpa.attention(q, None, None, kc, vc, half, np.ascontiguousarray(shifted),
                      cu, **common)
    return full, a, b


def test_merge_equals_the_union():
    (fo, fl), (ao, al), (bo, bl) = _decode_halves()
    out, lse = rpa.merge_states(ao, al, bo, bl)
    np.testing.assert_allclose(out, fo, rtol=0, atol=2e-6)
    np.testing.assert_allclose(lse, fl, rtol=0, atol=2e-6)
    assert np.abs(ao - fo).max() > 1e-3  # the halves differ from the union


def test_against_numpy_and_symmetric():
    T, H, D = 7, 5, 24
    oa, ob = (rng.standard_normal((T, H, D), dtype=np.float32) for _ in "ab")
    la, lb = (rng.uniform(-5, 5, (T, H)).astype(np.float32) for _ in "ab")
    la[0, 0] = -np.inf
    out, lse = rpa.merge_states(oa, la, ob, lb)
    m = np.maximum(la, lb).astype(np.float64)
    wa, wb = np.exp(la - m), np.exp(lb - m)
    want = (oa * wa[..., None] + ob * wb[..., None]) / (wa + wb)[..., None]
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lse, m + np.log(wa + wb), rtol=0, atol=1e-6)
    assert np.array_equal(out[0, 0], ob[0, 0]) and lse[0, 0] == lb[0, 0]
    out2, lse2 = rpa.merge_states(ob, lb, oa, la)
    assert out.tobytes() == out2.tobytes() and lse.tobytes() == lse2.tobytes()


def test_in_place_bf16_and_nan_rows():
    T, H, D = 4, 3, 16
    oa = rng.standard_normal((T, H, D)).astype(ml_dtypes.bfloat16)
    ob = rng.standard_normal((T, H, D)).astype(ml_dtypes.bfloat16)
    la = rng.uniform(-2, 2, (T, H)).astype(np.float32)
    lb = rng.uniform(-2, 2, (T, H)).astype(np.float32)
    lb[1, 2] = np.nan
    want, want_lse = rpa.merge_states(oa, la, ob, lb)
    assert want.dtype == ml_dtypes.bfloat16
    nan_rows = np.isnan(want.astype(np.float32)).any(-1)
    assert nan_rows.sum() == 1 and nan_rows[1, 2]
    assert np.isnan(want.astype(np.float32)[1, 2]).all() and np.isnan(want_lse[1, 2])
    out, lse = rpa.merge_states(oa, la, ob, lb, out=oa, lse=la)
    assert out is oa and lse is la
    assert oa.tobytes() == want.tobytes() and la.tobytes() == want_lse.tobytes()


def test_bad_arguments():
    o = np.zeros((2, 3, 8), np.float32)
    l = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="b out: expected shape"):
        rpa.merge_states(o, l, o[:1], l)
    with pytest.raises(ValueError, match="a lse: dtype"):
        rpa.merge_states(o, l.astype(np.float64), o, l)
    ro = np.zeros_like(o)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rpa.merge_states(o, l, o, l, out=ro)
    flat = np.zeros(2 * 3 * 8 + 1, np.float32)
    a_out, shifted = flat[:-1].reshape(2, 3, 8), flat[1:].reshape(2, 3, 8)
    with pytest.raises(rpa.RPAError, match="dst.out overlaps a.out"):
        rpa.merge_states(a_out, l, o, l, out=shifted)
