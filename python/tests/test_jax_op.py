"""rpa.jax: upstream's call as a jitted JAX op (an XLA FFI custom call).

- Under jax.jit, outputs and updated caches equal the NumPy call's bit for
  bit, on every kernel set, 1 and 2 threads, both cache shapes (4-D and
  upstream's padded 5-D), every dtype pair.
- Against tpu-inference's v3 reference within the "exact" tolerance of
  test_conformance_tpu_inference.py (the reference widened to float32).
- A decode loop of jitted steps with the cache donated: the cache buffer
  keeps its address through every step, each step equals the NumPy loop's.
- No copy with donation: a call's time does not grow with the cache's size
  (and the same measurement, without donation, does see XLA's copy).
- Errors: wrong shapes and static arguments raise ValueError at trace time;
  what the library rejects at run time raises with the library's message;
  vmap and grad are refused.
- Calls from several Python threads at once (the handler's context pool).
"""
import functools
import threading
import time

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import rpa  # noqa: E402
import rpa.jax as rj  # noqa: E402
from _batches import (BF16, E4M3, E5M2, F16, F32, IO_DTYPES, KV_DTYPES,  # noqa: E402
                      Batch, bits, random_lengths, unit_roundoff,
                      weights_slack)
from test_conformance_tpu_inference import (compare, make_batch, packed,  # noqa: E402
                                            run_v3, unpack, upstream)
from _refs import f32, to_np  # noqa: E402

ISAS = rpa.kernel_sets()


def jitted(**kw):
    return jax.jit(functools.partial(rj.ragged_paged_attention, **kw))


def as_jax(args):
    return [None if a is None else jnp.asarray(a) for a in args]


def assert_bitwise(got, want, what):
    got = np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    assert np.array_equal(bits(got), bits(want)), (
        f"{what}: {int((bits(got) != bits(want)).sum())} elements differ")


FEATURES = {
    "plain": {},
    "all": dict(sliding_window=9, soft_cap=4.0, k_scale=1.5, v_scale=0.5,
                q_scale=0.25),
    "non_causal": dict(use_causal_mask=False),
}
CASES = ([(q, kv, "plain") for q in IO_DTYPES for kv in KV_DTYPES] +
         [(BF16, BF16, "all"), (F32, E4M3, "all"), (F16, F16, "non_causal")])


@pytest.mark.parametrize("q_dtype,kv_dtype,feature", CASES,
                         ids=[f"{q}-{kv}-{f}" for q, kv, f in CASES])
def test_equals_numpy_call(q_dtype, kv_dtype, feature):
    rng = np.random.default_rng(KV_DTYPES.index(kv_dtype) * 10 +
                                IO_DTYPES.index(q_dtype))
    b = Batch(rng, random_lengths(rng, 3, 3), q_dtype=q_dtype,
              kv_dtype=kv_dtype, pad_tokens=3, pad_seqs=1, head_dim=40)
    kw = dict(sm_scale=b.D ** -0.5, **FEATURES[feature])
    if feature == "all":
        kw["attention_sink"] = rng.standard_normal(b.Hq).astype(np.float32)
    for isa in ISAS:
        for threads in (1, 2):
            args = b.call_args()
            want_out, want_cache = rpa.ragged_paged_attention(
                *args, num_threads=threads, isa=isa, **kw)
            got_out, got_cache = jitted(num_threads=threads, isa=isa, **kw)(
                *as_jax(args))
            what = f"{isa}, {threads} threads"
            assert_bitwise(got_out, want_out, f"out ({what})")
            assert_bitwise(got_cache, want_cache, f"cache ({what})")
    # the inputs were not touched (not donated: XLA copied the cache)
    assert_bitwise(np.asarray(jnp.asarray(b.kv_cache)), b.kv_cache, "input")


def test_upstream_padded_5d_cache_and_no_distribution():
    v3, _, _ = upstream()
    rng = np.random.default_rng(7)
    b = make_batch(rng, BF16, E4M3, head_dim=80)  # lanes padded to 128
    cache5 = packed(b, b.kv_cache, E4M3, v3)
    args = list(b.call_args())
    args[3] = cache5
    kw = dict(sm_scale=b.D ** -0.5, soft_cap=5.0)
    want_out, want_cache = rpa.ragged_paged_attention(*args, **kw)
    got_out, got_cache = jitted(**kw)(*as_jax(args))
    assert_bitwise(got_out, want_out, "out")
    assert_bitwise(got_cache, want_cache, "cache")
    assert (bits(unpack(np.asarray(got_cache), b)) ==
            bits(b.expected_cache())).all()
    # distribution None: computed by the library (over every sequence of
    # kv_lens, so the padding sequence is cut off), same answer
    S = b.num_seqs
    args[4], args[5] = b.kv_lens[:S], b.page_indices[:S * b.pages_per_seq]
    args[6], args[7] = b.cu_q_lens[:S + 1], None
    got_out2, _ = jitted(**kw)(*as_jax(args))
    assert_bitwise(got_out2, want_out, "out, distribution None")


REF_CASES = [(F32, F32, "plain"), (BF16, BF16, "all"), (F16, E5M2, "plain"),
             (BF16, E4M3, "non_causal")]


@pytest.mark.parametrize("q_dtype,kv_dtype,feature", REF_CASES,
                         ids=[f"{q}-{kv}-{f}" for q, kv, f in REF_CASES])
def test_against_v3_reference(q_dtype, kv_dtype, feature):
    """The "exact" check of test_conformance_tpu_inference.py: the reference
    on the same values widened to float32, tolerance u_out * |ref| + 2e-5 *
    max|v| (+ the bf16-weights slack where it applies)."""
    v3, _, _ = upstream()
    rng = np.random.default_rng(100 + REF_CASES.index(
        (q_dtype, kv_dtype, feature)))
    b = make_batch(rng, q_dtype, kv_dtype, head_dim=128)
    kw = {k: v for k, v in FEATURES[feature].items() if k != "q_scale"}
    sm_scale = b.D ** -0.5
    cache5 = packed(b, b.kv_cache, kv_dtype, v3)
    args = list(b.call_args())
    args[3] = cache5
    out, new5 = jitted(sm_scale=sm_scale, **kw)(*as_jax(args))
    ref_out, ref_cache = run_v3(v3, b, f32(b.queries), f32(b.keys),
                                f32(b.values),
                                packed(b, f32(b.kv_cache), F32, v3), kw,
                                sm_scale)
    assert (bits(unpack(np.asarray(new5), b)) ==
            bits(unpack(ref_cache, b).astype(kv_dtype))).all()
    ref = to_np(ref_out)
    vmax = float(np.abs(b.expected_cache()[:, :, 1::2].astype(
        np.float64)).max()) * kw.get("v_scale", 1.0)
    compare(np.asarray(out)[:b.num_tokens], ref,
            unit_roundoff(q_dtype) * np.abs(ref) + 2e-5 * vmax +
            weights_slack(q_dtype, kv_dtype, vmax), "exact")


def decode_batch(rng, num_seqs, ctx, page_size=16, pages=None, Hq=8, Hkv=2,
                 D=64, dtype=BF16):
    """num_seqs sequences of ctx tokens each, room for `steps` more."""
    pages_per_seq = -(-(ctx + 8) // page_size)
    P = pages if pages is not None else num_seqs * pages_per_seq
    perm = rng.permutation(P)[:num_seqs * pages_per_seq].astype(np.int32)
    cache = rng.standard_normal((P, page_size, 2 * Hkv, D)).astype(dtype)
    return dict(cache=cache, page_indices=perm, pages_per_seq=pages_per_seq,
                Hq=Hq, Hkv=Hkv, D=D, dtype=dtype, num_seqs=num_seqs, ctx=ctx)


def step_inputs(rng, d, step):
    S, Hq, Hkv, D = d["num_seqs"], d["Hq"], d["Hkv"], d["D"]
    g = lambda *s: rng.standard_normal(s).astype(np.float32)
    q = g(S, Hq, D).astype(d["dtype"])
    k = g(S, Hkv, D).astype(d["dtype"])
    v = g(S, Hkv, D).astype(d["dtype"])
    kv_lens = np.full(S, d["ctx"] + step + 1, np.int32)
    cu = np.arange(S + 1, dtype=np.int32)
    dist = np.array([S, S, S], np.int32)
    return q, k, v, kv_lens, cu, dist


def test_decode_loop_with_donation():
    rng = np.random.default_rng(11)
    d = decode_batch(rng, num_seqs=6, ctx=37)
    step = jax.jit(functools.partial(rj.ragged_paged_attention,
                                     sm_scale=0.125),
                   donate_argnums=(3,))
    cache_np = d["cache"].copy()
    cache_j = jnp.asarray(d["cache"])
    pi = d["page_indices"]
    addr = cache_j.unsafe_buffer_pointer()
    for i in range(5):
        q, k, v, kv_lens, cu, dist = step_inputs(rng, d, i)
        want_out, cache_np = rpa.ragged_paged_attention(
            q, k, v, cache_np, kv_lens, pi, cu, dist, sm_scale=0.125,
            inplace=True)
        prev = cache_j
        out, cache_j = step(*as_jax([q, k, v]), cache_j,
                            *as_jax([kv_lens, pi, cu, dist]))
        assert prev.is_deleted(), f"step {i}: the donated cache is alive"
        assert cache_j.unsafe_buffer_pointer() == addr, (
            f"step {i}: the cache moved (copied)")
        assert_bitwise(out, want_out, f"out, step {i}")
    assert_bitwise(cache_j, cache_np, "cache after the loop")


def median_call_seconds(fn, make_cache, args, reps):
    """Median time of fn(cache, ...) over reps calls, each on a fresh-enough
    cache (the donated one is handed back in)."""
    cache = make_cache()
    out = fn(args[0], args[1], args[2], cache, *args[3:])  # compile
    jax.block_until_ready(out)
    cache = out[1]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn(args[0], args[1], args[2], cache, *args[3:])
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        cache = out[1]
    return float(np.median(times))


def test_donated_call_does_not_copy_the_cache():
    """One decode step over a small cache and over one with 512x the pages
    (256 MiB; the step reads the same few pages in both). Donated, the call
    costs the same (median of 15, within 2x + 1 ms); not donated, XLA copies
    the cache first, and the same measurement sees that."""
    rng = np.random.default_rng(3)
    small = decode_batch(rng, num_seqs=4, ctx=60, D=128, Hq=8, Hkv=2)
    P = small["cache"].shape[0]
    big_pages = 512 * P
    q, k, v, kv_lens, cu, dist = step_inputs(rng, small, 0)
    args = as_jax([q, k, v, kv_lens, small["page_indices"], cu, dist])
    f = functools.partial(rj.ragged_paged_attention, sm_scale=0.1,
                          num_threads=1)
    donated = jax.jit(f, donate_argnums=(3,))
    kept = jax.jit(f)
    shape_small = small["cache"].shape
    shape_big = (big_pages,) + shape_small[1:]
    mk = lambda shape: (lambda: jnp.zeros(shape, BF16))
    t_small = median_call_seconds(donated, mk(shape_small), args, 15)
    t_big = median_call_seconds(donated, mk(shape_big), args, 15)
    t_copy = median_call_seconds(kept, mk(shape_big), args, 5)
    big_bytes = np.prod(shape_big) * 2
    print(f"\ndonated call: {t_small * 1e6:.0f} us ({np.prod(shape_small) * 2 >> 10} "
          f"KiB cache), {t_big * 1e6:.0f} us ({big_bytes >> 20} MiB cache); "
          f"not donated: {t_copy * 1e3:.1f} ms")
    assert t_big <= 2 * t_small + 1e-3, (
        f"donated call over a 512x larger cache: {t_big * 1e3:.2f} ms vs "
        f"{t_small * 1e3:.2f} ms (a copy?)")
    assert t_copy > 3 * t_big + 2e-3, (
        f"the copy without donation went unseen ({t_copy * 1e3:.2f} ms vs "
        f"{t_big * 1e3:.2f} ms): the measurement cannot tell")


def small_batch(rng=None):
    rng = rng or np.random.default_rng(5)
    return Batch(rng, random_lengths(rng, 2, 2), q_dtype=BF16, kv_dtype=BF16,
                 head_dim=32)


def test_trace_time_errors():
    b = small_batch()
    args = as_jax(b.call_args())
    f = rj.ragged_paged_attention

    def bad(i, value, msg, **kw):
        a = list(args)
        a[i] = value
        with pytest.raises(ValueError, match=msg):
            jax.jit(functools.partial(f, **kw))(*a)

    bad(0, args[0][0], "queries: expected 3 dimensions")
    bad(0, args[0].astype(jnp.int32), "queries: dtype int32")
    bad(1, args[1][:, :, :5], r"keys: shape")
    # the KV head count: keys disagreeing with values and the cache are
    # named as keys; a cache of more heads than keys is refused
    bad(1, args[1][:, :1], "keys: 1 KV heads, but values has 2")
    bad(3, jnp.concatenate([args[3], args[3]], axis=2),
        "kv_cache: 8 combined rows hold K and V of 4 KV heads, more than "
        "the 2 of keys")
    bad(2, args[2].astype(jnp.float32), "values: dtype float32 differs")
    bad(3, args[3][0], "kv_cache: expected")
    bad(3, args[3][..., :8], "kv_cache: last axis 8 is smaller")
    bad(4, args[4].astype(jnp.float32), "kv_lens: expected int32")
    bad(6, args[6][:-1], "cu_q_lens: shape")
    bad(7, args[7][:2], r"distribution: shape")
    bad(5, args[5][:-1], "page_indices: .* not a multiple")
    bad(0, args[0], "soft_cap: -1.0 must be", soft_cap=-1.0)
    bad(0, args[0], "sliding_window: 0 must be", sliding_window=0)
    bad(0, args[0], "mask_value", mask_value=-1.0)
    bad(0, args[0], "attention_sink: shape",
        attention_sink=np.zeros(3, np.float32))
    a = list(args)
    a[1] = a[2] = None
    with pytest.raises(ValueError, match="None while update_kv_cache"):
        f(*a)
    with pytest.raises(ValueError, match="sm_scale: must be a Python number"):
        jax.jit(lambda s, *x: f(*x, sm_scale=s))(0.5, *args)
    # a mask value that low is what rpa does anyway: accepted, same answer
    o1, _ = jax.jit(functools.partial(f, mask_value=-3.0e38))(*args)
    o2, _ = jax.jit(f)(*args)
    assert_bitwise(o1, np.asarray(o2), "mask_value")


def test_handler_refuses_more_heads_than_keys(monkeypatch):
    """The FFI handler checks the cache's rows against num_kv_heads itself,
    for a call that gets past rpa.jax's trace-time check (switched off
    here)."""
    b = small_batch()
    args = as_jax(b.call_args())
    args[3] = jnp.concatenate([args[3], args[3]], axis=2)  # 8 rows, Hkv 2
    monkeypatch.setattr(rj._api, "_v3_kv_heads",
                        lambda shape, itemsize, keys, values: keys)
    with pytest.raises(Exception, match="kv_cache: 8 combined rows hold K "
                       "and V of 4 KV heads, more than the 2 of keys"):
        jax.block_until_ready(jax.jit(rj.ragged_paged_attention)(*args))


def test_run_time_errors_carry_the_library_message():
    b = small_batch()
    f = jax.jit(rj.ragged_paged_attention)

    def bad(i, value, msg):
        a = as_jax(b.call_args())
        a[i] = jnp.asarray(value)
        with pytest.raises(Exception, match=msg) as e:
            jax.block_until_ready(f(*a))
        assert "rpa.jax" not in str(e.value) or "INVALID_ARGUMENT" in str(
            e.value)
        # and the NumPy call says the same
        args = list(b.call_args())
        args[i] = np.asarray(value)
        with pytest.raises(rpa.RPAError) as e2:
            rpa.ragged_paged_attention(*args)
        assert e2.value.message in str(e.value)

    pi = b.page_indices.copy()
    pi[0] = b.num_pages + 5
    bad(5, pi, "page")
    kv = b.kv_lens.copy()
    kv[0] = 0
    bad(4, kv, "kv_len")
    bad(7, np.array([0, 0, b.num_seqs + 1], np.int32), "distribution")
    # the library rejects a non-finite sm_scale (a static attribute)
    a = as_jax(b.call_args())
    with pytest.raises(Exception, match="sm_scale"):
        jax.block_until_ready(jax.jit(functools.partial(
            rj.ragged_paged_attention, sm_scale=float("inf")))(*a))


def test_vmap_and_grad_are_refused():
    b = small_batch()
    args = as_jax(b.call_args())
    stacked = [jnp.stack([a, a]) for a in args]
    with pytest.raises(ValueError, match="vmap is not supported"):
        jax.vmap(rj.ragged_paged_attention)(*stacked)
    with pytest.raises(Exception):
        jax.grad(lambda q: rj.ragged_paged_attention(
            q, *args[1:])[0].astype(jnp.float32).sum())(args[0])


def test_calls_from_several_threads():
    """Four Python threads call the jitted op at once, many times; XLA runs
    the handlers concurrently, each on its own pooled context."""
    rng = np.random.default_rng(21)
    batches = [Batch(rng, random_lengths(rng, 3, 2), q_dtype=F32,
                     kv_dtype=BF16, head_dim=48) for _ in range(4)]
    f = jitted(sm_scale=0.2, num_threads=1)
    want = [rpa.ragged_paged_attention(*bb.call_args(), sm_scale=0.2,
                                       num_threads=1) for bb in batches]
    inputs = [as_jax(bb.call_args()) for bb in batches]
    jax.block_until_ready(f(*inputs[0]))
    errors = []

    def worker(i):
        try:
            for _ in range(20):
                out, cache = f(*inputs[i])
                jax.block_until_ready(out)
                if not (np.array_equal(bits(np.asarray(out)), bits(want[i][0]))
                        and np.array_equal(bits(np.asarray(cache)),
                                           bits(want[i][1]))):
                    errors.append(f"thread {i}: result differs")
                    return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {i}: {e}")

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
