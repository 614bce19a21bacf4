"""Conformance with tpu-inference's references (vllm-project/tpu-inference,
the home of RPA v3), run on JAX's CPU backend; see _refs.py for how they are
loaded without a TPU.

- ref_ragged_paged_attention (v3/kernel.py): upstream's 5-D cache
  [P, ps, 2*Hkv // packing, packing, align(D, 128)], fused cache write,
  causal or not, sliding window, soft cap, q/k/v scales;
- ref_ragged_paged_attention_hd64 (v3/kernel_hd64.py): head dim 64, cache
  [P, ps, Hkv // packing, packing, 128] with K in lanes 0-63 and V in 64-127,
  and attention sinks;
- ref_mla_ragged_paged_attention (mla/v1/kernel.py): the latent (MLA) cache.

Checks, as in test_conformance_jax.py: the updated cache bit for bit; an
"exact" comparison with the reference run on the same values widened to
float32, so that it computes in float32 (tolerance u_out * |ref| + 2e-5 *
max|v|); and a "native" comparison in the given dtypes, whose tolerance adds
worst-case bounds of the reference's own roundings (listed at each test and
in python/README.md).

q_scale: the v3 and hd64 references quantize q / q_scale to the cache dtype,
as rpa does; widened to float32 they would not, so the exact comparisons use
queries for which q / q_scale is already a value of the cache dtype (q_scale
a power of two), where quantizing changes nothing. The MLA reference does not
quantize q at all (it takes q as already quantized and only multiplies the
logits by q_scale); it gets q / q_scale where rpa gets q.
"""
import os

import numpy as np
import pytest

import rpa
from _batches import (weights_slack, BF16, E4M3, E5M2, F16, F32, IO_DTYPES, KV_DTYPES,
                      Batch, bits, subnormal_step, unit_roundoff)
from _refs import (Unavailable, f32, load_tpu_inference,
                   logit_perturbation_bound, softmax_weights_bound, to_np)


def upstream():
    try:
        return load_tpu_inference()
    except Unavailable as e:
        if os.environ.get("RPA_REQUIRE_REFERENCES") == "1":
            pytest.fail(f"reference required but unavailable: {e}")
        pytest.skip(str(e))


def jnp_():
    import jax.numpy as jnp
    return jnp


PAGE_SIZE = 8
PAGES_PER_SEQ = 8


# Two fixed sets of (q_len, kv_len), decode and prefill chunks mixed: JAX
# runs the references op by op and compiles each op once per shape, so few
# distinct lengths keep the run short. Values, page placement (a random
# permutation of the pages) and the set used are random.
LENGTH_SETS = ([(1, 9), (1, 57), (5, 5), (16, 36), (16, 57)],
               [(1, 33), (1, 20), (16, 16), (5, 46), (5, 25)])


def make_batch(rng, q_dtype, kv_dtype, head_dim=128, num_q_heads=4,
               num_kv_heads=2):
    seqs = LENGTH_SETS[int(rng.integers(len(LENGTH_SETS)))]
    return Batch(rng, seqs, page_size=PAGE_SIZE, q_dtype=q_dtype,
                 kv_dtype=kv_dtype, pages_per_seq=PAGES_PER_SEQ,
                 pad_tokens=2, pad_seqs=1, head_dim=head_dim,
                 num_q_heads=num_q_heads, num_kv_heads=num_kv_heads)


def quantizable_queries(rng, b, q_scale):
    """Queries q with q / q_scale a value of the cache dtype (q_scale a
    power of two): quantizing them is exact."""
    x = rng.standard_normal(b.queries.shape).astype(np.float32)
    for _ in range(4):  # into values both dtypes hold
        x = x.astype(b.kv_dtype).astype(np.float32)
        x = x.astype(b.q_dtype).astype(np.float32)
    assert (x.astype(b.kv_dtype).astype(np.float32) == x).all()
    q = (x.astype(np.float64) * q_scale).astype(b.q_dtype)
    assert (q.astype(np.float64) == x.astype(np.float64) * q_scale).all()
    return q


def compare(got, ref, tol, what):
    err = np.abs(np.asarray(got, np.float64) - ref)
    bad = err > tol
    assert not bad.any(), (
        f"{what}: {bad.sum()} of {bad.size} values beyond tolerance; max "
        f"error {err.max():.3g}, max error / tolerance "
        f"{(err / tol).max():.3g}")


def packed(b, cache4, dtype, v3):
    """cache4 [P, ps, 2*Hkv, D] in upstream's 5-D padded shape, in dtype,
    the padding zero."""
    shape = v3.get_kv_cache_shape(b.num_pages, b.ps, b.Hkv, b.D,
                                  np.dtype(dtype))
    c = np.zeros(shape, dtype)
    c.reshape(shape[0], shape[1], -1, shape[-1])[:, :, :2 * b.Hkv,
                                                  :b.D] = cache4
    return c


def unpack(c5, b):
    return c5.reshape(c5.shape[0], c5.shape[1], -1,
                      c5.shape[-1])[:, :, :2 * b.Hkv, :b.D]


V3_FEATURES = {
    "plain": {},
    "window": dict(sliding_window=7),
    "soft_cap": dict(soft_cap=3.0),
    "kv_scales": dict(k_scale=0.8, v_scale=1.25),
    "q_scale": dict(q_scale=0.5),
    "non_causal": dict(use_causal_mask=False),
    "all": dict(sliding_window=12, soft_cap=4.0, k_scale=1.5, v_scale=0.5,
                q_scale=0.25),
}
V3_CASES = ([(q, kv, f) for q in IO_DTYPES for kv in KV_DTYPES
             for f in ("plain", "all")] +
            [(q, kv, f) for q, kv in ((BF16, BF16), (F32, E4M3), (F16, E5M2))
             for f in ("non_causal", "window", "soft_cap", "kv_scales",
                       "q_scale")])


def run_v3(v3, b, queries, keys, values, cache5, kw, sm_scale):
    jnp = jnp_()
    out, cache = v3.ref_ragged_paged_attention(
        jnp.asarray(queries), jnp.asarray(keys), jnp.asarray(values),
        jnp.asarray(cache5), jnp.asarray(b.kv_lens),
        jnp.asarray(b.page_indices), jnp.asarray(b.cu_q_lens),
        jnp.asarray(b.distribution), sm_scale=sm_scale, **kw)
    return out, np.asarray(cache)


@pytest.mark.parametrize("q_dtype,kv_dtype,feature", V3_CASES,
                         ids=[f"{q}-{kv}-{f}" for q, kv, f in V3_CASES])
def test_against_v3_reference(q_dtype, kv_dtype, feature):
    v3, _, _ = upstream()
    seed = (IO_DTYPES.index(q_dtype) * 100 + KV_DTYPES.index(kv_dtype) * 10 +
            list(V3_FEATURES).index(feature))
    rng = np.random.default_rng(seed)
    head_dim = 80 if feature == "all" else 128  # 80: lanes padded to 128
    b = make_batch(rng, q_dtype, kv_dtype, head_dim=head_dim)
    kw = dict(V3_FEATURES[feature])
    if "q_scale" in kw:
        b.queries = quantizable_queries(rng, b, kw["q_scale"])
    sm_scale = b.D ** -0.5
    cache5 = packed(b, b.kv_cache, kv_dtype, v3)
    args = list(b.call_args())
    args[3] = cache5
    out, new5 = rpa.ragged_paged_attention(*args, sm_scale=sm_scale, **kw)
    n = b.num_tokens
    got = out[:n]
    assert new5.shape == cache5.shape

    # exact: everything widened to float32 (packing 1, out_dtype float32)
    ref_out, ref_cache = run_v3(v3, b, f32(b.queries), f32(b.keys),
                                f32(b.values),
                                packed(b, f32(b.kv_cache), F32, v3), kw,
                                sm_scale)
    # the cache: rpa's == the reference's (narrowed back: lossless) ==
    # the independent scatter; upstream's padding rows and lanes are zero
    # in both (upstream writes zeros there, rpa leaves them alone)
    assert (bits(unpack(new5, b)) ==
            bits(unpack(ref_cache, b).astype(kv_dtype))).all()
    assert (bits(unpack(new5, b)) == bits(b.expected_cache())).all()
    pad = np.ones(new5.shape, bool)
    pad.reshape(pad.shape[0], pad.shape[1], -1, pad.shape[-1])[
        :, :, :2 * b.Hkv, :b.D] = False
    assert (bits(new5[pad]) == 0).all()
    ref = to_np(ref_out)
    vmax = float(np.abs(b.expected_cache()[:, :, 1::2].astype(
        np.float64)).max()) * kw.get("v_scale", 1.0)
    compare(got, ref, unit_roundoff(q_dtype) * np.abs(ref) + 2e-5 * vmax +
           weights_slack(q_dtype, kv_dtype, vmax, "q_scale" in kw),
            "exact")

    # native: the reference in the given dtypes. Its roundings: logits to
    # out_dtype (bfloat16 unless q is float32) right after the QK product,
    # then sm_scale, k_scale, q_scale, the soft cap (3 roundings) and the
    # mask in that dtype, softmax in that dtype; the weights to the cache
    # dtype; the PV product in the cache dtype; the result to out_dtype,
    # times v_scale in out_dtype. Its output is bfloat16 for float16 queries.
    ref_out, _ = run_v3(v3, b, b.queries, b.keys, b.values, cache5, kw,
                        sm_scale)
    ref = to_np(ref_out)
    out_dt = F32 if q_dtype == F32 else BF16
    u = unit_roundoff(out_dt)
    s = float(np.abs(np.asarray(ref_logits_bound(b, kw, sm_scale))).max())
    n_round = 2 + ("k_scale" in kw) + ("q_scale" in kw)
    if "soft_cap" in kw:
        n_round += 3
    delta = n_round * u * s
    n_keys = int(b.kv_lens.max())
    p_rel = u * (3 + n_keys)  # softmax in out_dtype: exp, sum, divide
    tol = (unit_roundoff(q_dtype) * np.abs(ref) + 2e-5 * vmax +
           weights_slack(q_dtype, kv_dtype, vmax, "q_scale" in kw) +
           (logit_perturbation_bound(delta) + p_rel +
            softmax_weights_bound(kv_dtype, n_keys)) * vmax +
           (unit_roundoff(kv_dtype) + 2 * u) * np.abs(ref))
    compare(got, ref, tol, "native")


def ref_logits_bound(b, kw, sm_scale):
    """max |logit| of the batch (before the cap, which only shrinks)."""
    q = b.queries.astype(np.float64)
    K = b.expected_cache()[:, :, 0::2].astype(np.float64).reshape(-1, b.D)
    s = np.abs(q.reshape(-1, b.D) @ K.T).max() * sm_scale
    return s * kw.get("k_scale", 1.0)


# ---- head dim 64, attention sinks -------------------------------------------

HD64_CASES = [(F32, F32), (BF16, BF16), (F32, E4M3), (F16, E5M2),
              (BF16, F16)]


@pytest.mark.parametrize("q_dtype,kv_dtype", HD64_CASES,
                         ids=[f"{q}-{kv}" for q, kv in HD64_CASES])
@pytest.mark.parametrize("feature", ["sinks", "sinks_all"])
def test_against_hd64_reference_with_sinks(q_dtype, kv_dtype, feature):
    _, hd64, _ = upstream()
    jnp = jnp_()
    rng = np.random.default_rng(HD64_CASES.index((q_dtype, kv_dtype)) + 50)
    b = make_batch(rng, q_dtype, kv_dtype, head_dim=64, num_q_heads=6,
                   num_kv_heads=3)
    kw = {}
    if feature == "sinks_all":
        kw = dict(sliding_window=10, soft_cap=5.0, k_scale=0.5, v_scale=2.0,
                  q_scale=0.5)
        b.queries = quantizable_queries(rng, b, kw["q_scale"])
    sinks = np.array([-1.0, 0.0, 2.0, 4.0, -np.inf, 0.5], np.float32)
    sm_scale = 0.125

    def layout(dtype, cache4):  # [P, ps, Hkv//pk, pk, 128]: K | V lanes
        shape = hd64.get_kv_cache_shape(b.num_pages, b.ps, b.Hkv, 64,
                                        np.dtype(dtype))
        c = np.zeros(shape, dtype)
        flat = c.reshape(shape[0], shape[1], -1, 128)
        flat[:, :, :b.Hkv, :64] = cache4[:, :, 0::2]
        flat[:, :, :b.Hkv, 64:] = cache4[:, :, 1::2]
        return c

    mine = layout(kv_dtype, b.kv_cache)
    flat = mine.reshape(mine.shape[0], mine.shape[1], -1, 128)
    out = rpa.attention(b.queries, b.keys, b.values, flat[:, :, :b.Hkv, :64],
                        flat[:, :, :b.Hkv, 64:], b.kv_lens, b.page_indices,
                        b.cu_q_lens, distribution=b.distribution,
                        sm_scale=sm_scale, sinks=sinks, **kw)
    got = out[:b.num_tokens]

    def run(q, k, v, cache):
        o, c = hd64.ref_ragged_paged_attention_hd64(
            jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
            jnp.asarray(cache), jnp.asarray(b.kv_lens),
            jnp.asarray(b.page_indices), jnp.asarray(b.cu_q_lens),
            jnp.asarray(b.distribution), jnp.asarray(sinks),
            sm_scale=sm_scale, **kw)
        return to_np(o.astype(jnp.float32)), np.asarray(c)

    ref, ref_cache = run(f32(b.queries), f32(b.keys), f32(b.values),
                         layout(F32, f32(b.kv_cache)))
    def heads(c):  # [P, ps, Hkv, 128] without the packing's padding heads
        return c.reshape(c.shape[0], c.shape[1], -1, 128)[:, :, :b.Hkv]
    assert (bits(heads(mine)) ==
            bits(heads(ref_cache).astype(kv_dtype))).all()
    assert (bits(mine) == bits(layout(kv_dtype, b.expected_cache()))).all()
    vmax = float(np.abs(b.expected_cache()[:, :, 1::2].astype(
        np.float64)).max()) * kw.get("v_scale", 1.0)
    compare(got, ref, unit_roundoff(q_dtype) * np.abs(ref) + 2e-5 * vmax +
           weights_slack(q_dtype, kv_dtype, vmax, "q_scale" in kw),
            "exact")
    # native: logits and softmax in float32; the weights rounded to the
    # cache dtype, the PV product in the cache dtype, then q's dtype, then
    # times v_scale in q's dtype.
    ref_n, _ = run(b.queries, b.keys, b.values, layout(kv_dtype, b.kv_cache))
    n_keys = int(b.kv_lens.max())
    tol = (2e-5 * vmax +
           weights_slack(q_dtype, kv_dtype, vmax, "q_scale" in kw) + softmax_weights_bound(kv_dtype, n_keys) * vmax +
           (unit_roundoff(kv_dtype) + 3 * unit_roundoff(q_dtype)) *
           np.abs(ref_n))
    compare(got, ref_n, tol, "native")


# ---- MLA ------------------------------------------------------------------

MLA_CASES = [(F32, F32, {}), (F32, E4M3, {}),
             (BF16, BF16, dict(sliding_window=9, soft_cap=6.0, k_scale=0.5,
                               v_scale=2.0, q_scale=0.5))]


@pytest.mark.parametrize("q_dtype,kv_dtype,kw", MLA_CASES,
                         ids=["f32", "e4m3", "bf16-all"])
def test_against_mla_reference(q_dtype, kv_dtype, kw):
    _, _, mla = upstream()
    jnp = jnp_()
    rng = np.random.default_rng(MLA_CASES.index((q_dtype, kv_dtype, kw)))
    L, R, Hq = 128, 64, 4  # R is padded to 128 lanes upstream
    b = make_batch(rng, q_dtype, kv_dtype, head_dim=L + R, num_q_heads=Hq,
                   num_kv_heads=1)
    q_scale = kw.get("q_scale")
    if q_scale:
        b.queries = quantizable_queries(rng, b, q_scale)
    new = b.keys[:, 0]  # [T, L + R]: kv_c | k_pe
    old = rng.standard_normal((b.num_pages, b.ps, L + R)).astype(kv_dtype)

    def layout(dtype):  # [P, ps // packing, packing, L + 128]
        c = np.zeros(mla.get_kv_cache_shape(b.num_pages, b.ps, L + 128,
                                            np.dtype(dtype)), dtype)
        c.reshape(b.num_pages, b.ps, -1)[:, :, :L + R] = old
        return c

    mine = layout(kv_dtype)
    rows = mine.reshape(b.num_pages, b.ps, 1, -1)[..., :L + R]
    sm_scale = 0.1
    out = rpa.attention(b.queries, new[:, None, :], None, rows, None,
                        b.kv_lens, b.page_indices, b.cu_q_lens,
                        distribution=b.distribution, head_dim_v=L,
                        sm_scale=sm_scale, **kw)
    got = out[:b.num_tokens]

    def run(q, new_kv, cache):
        if q_scale:  # the MLA reference takes q already quantized
            q = (q.astype(np.float64) / q_scale).astype(q.dtype)
        o, c = mla.ref_mla_ragged_paged_attention(
            jnp.asarray(q[:, :, :L]), jnp.asarray(q[:, :, L:]),
            jnp.asarray(new_kv[:, :L]), jnp.asarray(new_kv[:, L:]),
            jnp.asarray(cache), jnp.asarray(b.kv_lens),
            jnp.asarray(b.page_indices), jnp.asarray(b.cu_q_lens),
            jnp.asarray(b.distribution), sm_scale=sm_scale, **kw)
        return to_np(o.astype(jnp.float32)), np.asarray(c)

    ref, ref_cache = run(f32(b.queries), f32(new), layout(F32))
    assert (bits(mine.reshape(b.num_pages, b.ps, -1)) ==
            bits(ref_cache.reshape(b.num_pages, b.ps, -1).astype(
                kv_dtype))).all()
    vmax = float(np.abs(mine.astype(np.float64)).max()) * kw.get("v_scale",
                                                                 1.0)
    compare(got, ref, unit_roundoff(q_dtype) * np.abs(ref) + 2e-5 * vmax +
           weights_slack(q_dtype, kv_dtype, vmax, "q_scale" in kw),
            "exact")
    ref_n, _ = run(b.queries, new, layout(kv_dtype))
    n_keys = int(b.kv_lens.max())
    tol = (2e-5 * vmax +
           weights_slack(q_dtype, kv_dtype, vmax, "q_scale" in kw) + softmax_weights_bound(kv_dtype, n_keys) * vmax +
           (unit_roundoff(kv_dtype) + 3 * unit_roundoff(q_dtype)) *
           np.abs(ref_n))
    compare(got, ref_n, tol, "native")
