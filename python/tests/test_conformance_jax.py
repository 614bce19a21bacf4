"""Conformance with JAX's own reference implementation of ragged paged
attention: jax.experimental.pallas.ops.tpu.ragged_paged_attention
.ref_ragged_paged_attention, run on JAX's CPU backend.

That reference is RPA v2's: combined cache [P, ps, 2*Hkv, D], always causal,
no cache write (the cache must already hold the new tokens), no sinks, no
q_scale. Each random ragged batch runs through rpa.ragged_paged_attention;
then

1. the updated cache must equal, bit for bit, the input cache with the new
   tokens scattered to their slots (computed here independently);
2. "exact" comparison: JAX's reference on the same values widened to float32
   (lossless for every dtype here), so that it computes in float32
   throughout. rpa gets the native dtypes. Tolerance: rpa rounds once to the
   output dtype, so |rpa - ref| <= u_out * |ref| + 2e-5 * max|v| (u_out: unit
   roundoff of the output dtype; 2e-5 covers float32 accumulation-order
   differences);
3. "native" comparison: the reference on the native dtypes. It then rounds
   intermediates that rpa keeps in float32 (documented in python/README.md):
   the softmax weights to the value dtype before the PV product (the cache
   dtype, e.g. fp8, or q's dtype when v_scale is given), the PV product to
   that dtype, k * k_scale and v * v_scale to q's dtype. The tolerance is
   the sum of the worst-case bounds of each of those roundings (see
   native_tolerance) on top of (2).
"""
import os

import numpy as np
import pytest

import rpa
from _batches import (weights_slack, BF16, E4M3, E5M2, F16, F32, IO_DTYPES, KV_DTYPES,
                      Batch, bits, unit_roundoff)
from _refs import (Unavailable, f32, jax_v2, logit_perturbation_bound,
                   qk_abs_max, softmax_weights_bound, to_np)


def need(loader):
    try:
        return loader()
    except Unavailable as e:
        if os.environ.get("RPA_REQUIRE_REFERENCES") == "1":
            pytest.fail(f"reference required but unavailable: {e}")
        pytest.skip(str(e))


# A few fixed shapes, so that JAX's eager ops compile once per shape.
DECODE_KV = (9, 33, 57)
PREFILL_Q = (5, 16)
PREFILL_EXTRA = (0, 20, 41)
PAGE_SIZE = 8
PAGES_PER_SEQ = 8  # ceil(57 / 8)


def make_batch(rng, q_dtype, kv_dtype, **kw):
    seqs = [(1, int(rng.choice(DECODE_KV))) for _ in range(3)]
    for _ in range(3):
        q = int(rng.choice(PREFILL_Q))
        seqs.append((q, q + int(rng.choice(PREFILL_EXTRA))))
    kw.setdefault("num_q_heads", 4)
    kw.setdefault("num_kv_heads", 2)
    kw.setdefault("head_dim", 32)
    return Batch(rng, seqs, page_size=PAGE_SIZE, q_dtype=q_dtype,
                 kv_dtype=kv_dtype, pages_per_seq=PAGES_PER_SEQ,
                 pad_tokens=2, **kw)


FEATURES = {
    "plain": {},
    "window": dict(sliding_window=7),
    "soft_cap": dict(soft_cap=3.0),
    "kv_scales": dict(k_scale=0.8, v_scale=1.25),
    "all": dict(sliding_window=12, soft_cap=4.0, k_scale=1.5, v_scale=0.5),
}


def run_reference(b, cache, queries, kw, sm_scale):
    import jax.numpy as jnp
    ref = jax_v2()
    S = len(b.kv_lens)
    out = ref(jnp.asarray(queries), jnp.asarray(cache),
              jnp.asarray(b.kv_lens), jnp.asarray(b.page_indices.reshape(S, -1)),
              jnp.asarray(b.cu_q_lens),
              jnp.asarray(np.array([b.num_seqs], np.int32)),
              sm_scale=sm_scale, **kw)
    return to_np(out.astype(jnp.float32))


def native_tolerance(b, cache, kw, sm_scale, ref):
    """Worst-case effect of the reference's own roundings (module doc, 3)."""
    q_dt, kv_dt = b.q_dtype, b.kv_dtype
    vmax = float(np.abs(cache[:, :, 1::2].astype(np.float64)).max())
    vmax *= kw.get("v_scale", 1.0)
    p_dtype = q_dt if "v_scale" in kw else kv_dt  # what p is rounded to
    n_keys = int(b.kv_lens.max())
    t = softmax_weights_bound(p_dtype, n_keys) * vmax
    t += unit_roundoff(p_dtype) * np.abs(ref)      # PV product in p_dtype
    t += unit_roundoff(q_dt) * np.abs(ref)         # cast to q's dtype
    if "v_scale" in kw:
        t += unit_roundoff(q_dt) * vmax            # v * v_scale -> q dtype
    if "k_scale" in kw:                            # k * k_scale -> q dtype
        delta = (unit_roundoff(q_dt) * sm_scale * kw["k_scale"] *
                 qk_abs_max(b, cache))
        t += logit_perturbation_bound(delta) * vmax
    return t


def compare(got, ref, tol, what):
    err = np.abs(got.astype(np.float64) - ref)
    bad = err > tol
    assert not bad.any(), (
        f"{what}: {bad.sum()} of {bad.size} values beyond tolerance; max "
        f"error {err.max():.3g}, max error / tolerance "
        f"{(err / tol).max():.3g}")
    return float((err / tol).max())


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("kv_dtype", KV_DTYPES, ids=str)
@pytest.mark.parametrize("q_dtype", IO_DTYPES, ids=str)
def test_against_jax_reference(q_dtype, kv_dtype, feature):
    need(jax_v2)
    seed = (IO_DTYPES.index(q_dtype) * 100 + KV_DTYPES.index(kv_dtype) * 10 +
            list(FEATURES).index(feature))
    rng = np.random.default_rng(seed)
    b = make_batch(rng, q_dtype, kv_dtype)
    kw = FEATURES[feature]
    sm_scale = b.D ** -0.5
    out, cache = rpa.ragged_paged_attention(*b.call_args(),
                                            sm_scale=sm_scale, **kw)
    n = b.num_tokens
    # 1. the fused write
    expected = b.expected_cache()
    assert (bits(cache) == bits(expected)).all()
    assert (out[n:] == 0).all()
    got = out[:n]
    vmax = float(np.abs(expected[:, :, 1::2].astype(np.float64)).max())
    vmax *= kw.get("v_scale", 1.0)
    # 2. exact: the reference in float32 on the same values
    ref = run_reference(b, f32(expected), f32(b.queries), kw, sm_scale)
    compare(got, ref, unit_roundoff(q_dtype) * np.abs(ref) + 2e-5 * vmax +
           weights_slack(q_dtype, kv_dtype, vmax, "q_scale" in kw),
            "exact")
    # 3. native: the reference in the given dtypes
    ref_native = run_reference(b, expected, b.queries, kw, sm_scale)
    tol = (unit_roundoff(q_dtype) * np.abs(ref_native) + 2e-5 * vmax +
           weights_slack(q_dtype, kv_dtype, vmax, "q_scale" in kw) +
           native_tolerance(b, expected, kw, sm_scale, ref_native))
    compare(got, ref_native, tol, "native")


@pytest.mark.parametrize("dtypes", [(BF16, BF16), (F32, E4M3)], ids=str)
def test_against_jax_reference_llama_heads(dtypes):
    """Head dim 128, 8 query heads on 1 KV head (MQA), page size 16."""
    need(jax_v2)
    rng = np.random.default_rng(7)
    q_dtype, kv_dtype = dtypes
    seqs = [(1, 40), (1, 17), (12, 12), (9, 50)]
    b = Batch(rng, seqs, num_q_heads=8, num_kv_heads=1, head_dim=128,
              page_size=16, q_dtype=q_dtype, kv_dtype=kv_dtype)
    out, cache = rpa.ragged_paged_attention(*b.call_args(),
                                            sm_scale=128 ** -0.5,
                                            sliding_window=20)
    assert (bits(cache) == bits(b.expected_cache())).all()
    ref = run_reference(b, f32(cache), f32(b.queries),
                        dict(sliding_window=20), 128 ** -0.5)
    vmax = float(np.abs(cache.astype(np.float64)).max())
    compare(out[:b.num_tokens], ref,
            unit_roundoff(q_dtype) * np.abs(ref) + 2e-5 * vmax +
           weights_slack(q_dtype, kv_dtype, vmax, False), "exact")
