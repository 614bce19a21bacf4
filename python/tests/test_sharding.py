"""rpa sharded like a distributed engine shards it: by heads (tensor
parallel) and by keys (context parallel), on several devices and processes.

In this process (one CPU device):
- context parallel through NumPy: rpa.context_parallel.shard_attention on
  every device's slice, merged with rpa.merge_states, equals the unsplit
  rpa.attention to float32 rounding, for random slices (the cut anywhere:
  among the new tokens, empty devices, every key on one device) with causal
  masks and sliding windows across the cuts, soft caps, scales, sinks and a
  latent cache; the new tokens land in the right device's pages, bit for
  bit; bad slices are refused;
- rpa.jax.shard_attention equals the NumPy slice call bit for bit;
  rpa.jax.merge_states agrees with rpa.merge_states and keeps its rules
  (empty sets, NaN rows, sinks).

In a worker process with four CPU devices (_spmd_worker.py;
--xla_force_host_platform_device_count must be set before JAX starts, so
not in this process):
- tensor parallel: rpa.jax.ragged_paged_attention inside jax.shard_map,
  heads, caches and sinks sharded, the cache donated: out and cache equal
  the single-device call's (run here) BIT FOR BIT, for every dtype pair and
  decode, prefill and mixed batches, every kernel set, 4-D and 5-D caches;
  each device's cache buffer stays in place;
- context parallel (and both at once on a 2 x 2 mesh): shard_attention per
  device, all_gather and merge_states inside shard_map: the merged result
  equals the unsplit call to float32 rounding, each device's partial state
  equals the NumPy slice call bit for bit, its cache holds its new tokens.

In two worker processes with two CPU devices each, joined by
jax.distributed.initialize over 127.0.0.1 with gloo collectives: the same
steps over the four devices of both equal the single-process results, and
every TCP socket of the workers is on loopback.
"""
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import rpa
import rpa.jax as rj
from rpa import context_parallel as cp
from _batches import (BF16, E4M3, E5M2, F16, F32, IO_DTYPES, KV_DTYPES,
                      Batch, bits, weights_slack)
from _shards import CPBatch

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "_spmd_worker.py")
ISAS = rpa.kernel_sets()


def name(dt):
    return np.dtype(dt).name


# ---- context parallel, NumPy ---------------------------------------------

def unsplit(b, **kw):
    """The unsplit call: (out float32, lse, the cache after it)."""
    cache = b.cache.copy()
    kc, vc = rpa.cache_views(cache, "combined")
    out, lse = rpa.attention(b.q, b.k, b.v, kc, vc, b.kv_lens, b.pages,
                             b.cu_q_lens, out_dtype=np.float32,
                             return_lse=True, **kw)
    return out, lse, cache


def numpy_slices(b, **kw):
    """Every device's state through rpa.context_parallel, on copies of the
    device caches: ([out], [lse], [cache])."""
    outs, lses, caches = [], [], []
    for d in range(b.n_dev):
        cache = b.dev_cache[d].copy()
        kc, vc = rpa.cache_views(cache, "combined")
        o, l = cp.shard_attention(b.q, b.k, b.v, kc, vc, b.kv_lens,
                                  b.dev_pages[d], b.cu_q_lens, b.start[d],
                                  b.end[d], **kw)
        outs.append(o)
        lses.append(l)
        caches.append(cache)
    return outs, lses, caches


def merge_all(outs, lses):
    out, lse = outs[0], lses[0]
    for o, l in zip(outs[1:], lses[1:]):
        out, lse = rpa.merge_states(out, lse, o, l)
    return out, lse


def tolerance(b, kw):
    """Float32 rounding: 2^-20 of the largest value a row can average (plus
    the avx512 set's bf16 weights where they apply), and the same relative
    to the lse."""
    vmax = max(float(np.abs(x.astype(np.float32)).max()) for x in b.vals)
    vmax *= kw.get("v_scale") or 1.0
    slack = weights_slack(b.q_dtype, b.kv_dtype, vmax,
                          bool(kw.get("q_scale")))
    return 2.0 ** -20 * vmax + slack


def check_merged(b, out, lse, ref, ref_lse, kw, what):
    n = int(b.cu_q_lens[-1])
    tol = tolerance(b, kw)
    err = np.abs(out[:n].astype(np.float32) - ref[:n])
    assert err.max() <= tol, (f"{what}: out differs by {err.max():.3g} > "
                              f"{tol:.3g}")
    lerr = np.abs(lse[:n] - ref_lse[:n])
    ltol = 2.0 ** -20 * (1 + np.abs(ref_lse[:n]))
    assert (lerr <= ltol).all(), f"{what}: lse differs by {lerr.max():.3g}"


SPLITS = ["random", "in_new", "empty_ends", "one"]
MASKS = {"causal": {}, "window3": dict(sliding_window=3),
         "window11": dict(sliding_window=11),
         "window40": dict(sliding_window=40)}


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("split", SPLITS)
def test_numpy_slices_merge_to_the_unsplit_call(split, mask):
    rng = np.random.default_rng(SPLITS.index(split) * 10 + list(MASKS).index(
        mask))
    for trial in range(6):
        q_lens = [1, 1, int(rng.integers(2, 9)), 16, int(rng.integers(1, 30))]
        kv_lens = [int(rng.integers(1, 70)), 40, 30, 16 + int(rng.integers(
            0, 40)), 0]
        kv_lens[4] = q_lens[4] + int(rng.integers(0, 30))
        b = CPBatch(rng, q_lens, kv_lens, 4, q_dtype=BF16, kv_dtype=BF16,
                    cuts=split)
        kw = dict(sm_scale=0.3, **MASKS[mask])
        ref, ref_lse, ref_cache = unsplit(b, **kw)
        expected = [b.expected_dev_cache(d) for d in range(4)]
        outs, lses, caches = numpy_slices(b, **kw)
        out, lse = merge_all(outs, lses)
        check_merged(b, out, lse, ref, ref_lse, kw, f"trial {trial}")
        for d in range(4):
            assert np.array_equal(bits(caches[d]), bits(expected[d])), (
                f"trial {trial}: device {d}'s cache")
        # the rows a device does not see are the empty state
        for d in range(4):
            seen = np.isfinite(lses[d][:, 0])
            assert (outs[d][~seen] == 0).all()


@pytest.mark.parametrize("q_dtype,kv_dtype", [
    (F32, F32), (F16, F16), (BF16, E4M3), (F32, E5M2), (F16, BF16)],
    ids=lambda d: name(d))
def test_numpy_slices_dtypes_and_features(q_dtype, kv_dtype):
    rng = np.random.default_rng(KV_DTYPES.index(kv_dtype) * 3 +
                                IO_DTYPES.index(q_dtype))
    for kw in (dict(sm_scale=0.25),
               dict(sm_scale=0.25, sliding_window=7, soft_cap=3.0,
                    k_scale=1.5, v_scale=0.5, q_scale=0.5)):
        b = CPBatch(rng, [1, 5, 12], [50, 20, 37], 3, q_dtype=q_dtype,
                    kv_dtype=kv_dtype, Hq=6, Hkv=3, D=24, page_size=4)
        ref, ref_lse, _ = unsplit(b, **kw)
        outs, lses, _ = numpy_slices(b, **kw)
        out, lse = merge_all(outs, lses)
        check_merged(b, out, lse, ref, ref_lse, kw, str(kw))


def test_numpy_sinks_merge_once():
    rng = np.random.default_rng(4)
    b = CPBatch(rng, [1, 9], [33, 25], 3)
    sinks = rng.uniform(-1, 3, b.Hq).astype(np.float32)
    kw = dict(sm_scale=0.3, sliding_window=10)
    ref, ref_lse, _ = unsplit(b, sinks=sinks, **kw)
    outs, lses, _ = numpy_slices(b, **kw)
    out, lse = cp.merge_sinks(*merge_all(outs, lses), sinks)
    check_merged(b, out, lse, ref, ref_lse, kw, "sinks")
    plain, _, _ = unsplit(b, **kw)
    assert np.abs(plain - ref).max() > 1e-3  # the sinks matter here


def test_numpy_latent_cache():
    """MLA: values are the first Dv elements of each key row."""
    rng = np.random.default_rng(9)
    S, Hq, D, Dv, ps, N = 3, 4, 24, 16, 4, 3
    q_lens, kv_lens = [1, 6, 2], [30, 19, 7]
    keys = [rng.standard_normal((L, 1, D)).astype(np.float32)
            for L in kv_lens]
    cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    T = int(cu[-1])
    q = rng.standard_normal((T, Hq, D)).astype(np.float32)
    k = np.concatenate([keys[i][kv_lens[i] - q_lens[i]:] for i in range(S)])
    pps = 8
    pages = rng.permutation(S * pps).astype(np.int32).reshape(S, pps)
    cache = np.zeros((S * pps, ps, 1, D), np.float32)
    for i in range(S):
        for c in range(kv_lens[i] - q_lens[i]):
            cache[pages[i, c // ps], c % ps] = keys[i][c]
    kvl = np.array(kv_lens, np.int32)
    kw = dict(sm_scale=0.2, head_dim_v=Dv, sliding_window=9)
    ref, ref_lse = rpa.attention(q, k, None, cache.copy(), None, kvl, pages,
                                 cu, return_lse=True, **kw)
    bounds = [[0, 11, 20, 30], [0, 15, 15, 19], [0, 0, 6, 7]]
    outs, lses = [], []
    for d in range(N):
        start = np.array([b[d] for b in bounds], np.int32)
        end = np.array([b[d + 1] for b in bounds], np.int32)
        dcache = np.zeros_like(cache)
        for i in range(S):
            for c in range(start[i], min(end[i], kv_lens[i] - q_lens[i])):
                lc = c - start[i]
                dcache[pages[i, lc // ps], lc % ps] = keys[i][c]
        o, l = cp.shard_attention(q, k, None, dcache, None, kvl, pages, cu,
                                  start, end, **kw)
        outs.append(o)
        lses.append(l)
    out, lse = merge_all(outs, lses)
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-6)
    np.testing.assert_allclose(lse, ref_lse, rtol=0, atol=2e-6)


def test_numpy_bad_slices():
    rng = np.random.default_rng(5)
    b = CPBatch(rng, [1, 4], [20, 12], 2)
    kc, vc = rpa.cache_views(b.dev_cache[0], "combined")
    args = (b.q, b.k, b.v, kc, vc, b.kv_lens, b.dev_pages[0], b.cu_q_lens)
    with pytest.raises(ValueError, match=r"sequence 1: slice \[5, 4\)"):
        cp.shard_attention(*args, np.array([0, 5], np.int32),
                           np.array([3, 4], np.int32))
    with pytest.raises(ValueError, match=r"sequence 0: slice \[0, 21\)"):
        cp.shard_attention(*args, np.array([0, 0], np.int32),
                           np.array([21, 4], np.int32))
    with pytest.raises(ValueError, match="shard_end: 1 entries"):
        cp.shard_attention(*args, np.array([0, 0], np.int32),
                           np.array([3], np.int32))
    # a sliding window needs pages of consecutive slots (the page-size-1 view)
    hnd = np.zeros((b.dev_cache.shape[1], 2, b.Hkv, b.ps, b.D), np.float32)
    kh, vh = rpa.cache_views(hnd, "flashinfer_hnd")
    with pytest.raises(ValueError, match="k_cache: .* page-size-1 view"):
        cp.shard_attention(b.q, b.k, b.v, kh, vh, b.kv_lens, b.dev_pages[0],
                           b.cu_q_lens, np.zeros(2, np.int32),
                           np.array([3, 2], np.int32), sliding_window=2)
    # (without a window that layout works: no view is needed)
    cp.shard_attention(b.q, b.k, b.v, kh, vh, b.kv_lens, b.dev_pages[0],
                       b.cu_q_lens, np.zeros(2, np.int32),
                       np.array([3, 2], np.int32))


# ---- context parallel, rpa.jax on one device ------------------------------

@pytest.mark.parametrize("mask,kv_dtype,split", [
    ("causal", E4M3, "random"), ("window11", BF16, "in_new")],
    ids=["causal-e4m3-random", "window11-bf16-in_new"])
def test_jax_slice_equals_numpy_slice(mask, kv_dtype, split):
    """On one device, under jit (the worker's tests do it on four)."""
    rng = np.random.default_rng(31)
    kw = dict(sm_scale=0.3, soft_cap=5.0, **MASKS[mask])
    b = CPBatch(rng, [1, 7, 20, 1], [44, 30, 33, 9], 4, q_dtype=BF16,
                kv_dtype=kv_dtype, cuts=split)
    outs, lses, caches = numpy_slices(b, **kw)
    dist = np.array([0, 0, b.S], np.int32)
    f = jax.jit(lambda *a: rj.shard_attention(*a, **kw))
    for d in range(4):
        o, c, l = f(b.q, b.k, b.v, b.dev_cache[d], b.kv_lens,
                    b.dev_pages[d], b.cu_q_lens, dist, b.start[d],
                    b.end[d])
        assert np.array_equal(bits(np.asarray(o)), bits(outs[d])), d
        assert np.array_equal(bits(np.asarray(l)), bits(lses[d])), d
        assert np.array_equal(bits(np.asarray(c)), bits(caches[d])), d


def test_jax_merge_states():
    rng = np.random.default_rng(8)
    N, T, H, Dv = 3, 6, 4, 16
    outs = rng.standard_normal((N, T, H, Dv)).astype(np.float32)
    lses = rng.uniform(-4, 4, (N, T, H)).astype(np.float32)
    lses[0, 0, :] = -np.inf            # one empty state
    lses[:, 1, 0] = -np.inf            # every state empty
    outs[2, 2, 1, 3] = np.nan          # weighted NaN: the row is NaN
    lses[1, 3, 2] = np.nan             # NaN lse: NaN row
    outs[0, 0, :, :] = np.inf          # an empty state is not read
    merge = jax.jit(rj.merge_states, static_argnames=("out_dtype",))
    out, lse = merge(outs, lses)
    out, lse = np.asarray(out), np.asarray(lse)
    want, want_lse = outs[0], lses[0]
    for i in range(1, N):
        want, want_lse = rpa.merge_states(want, want_lse, outs[i], lses[i])
    assert np.array_equal(np.isnan(out), np.isnan(want))
    assert np.array_equal(np.isnan(lse), np.isnan(want_lse))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(out[ok], want[ok], rtol=0, atol=2e-6)
    ok = ~np.isnan(want_lse)
    np.testing.assert_allclose(lse[ok], want_lse[ok], rtol=0, atol=2e-6)
    assert (out[1, 0] == 0).all() and lse[1, 0] == -np.inf
    # sinks: one more state of zero values and logit sinks[h]
    sinks = rng.uniform(-1, 1, H).astype(np.float32)
    s_out, s_lse = merge(outs, lses, sinks=sinks, out_dtype=jnp.bfloat16)
    w_out, w_lse = cp.merge_sinks(want, want_lse, sinks, out_dtype=BF16)
    assert np.asarray(s_out).dtype == BF16
    ok = ~np.isnan(w_lse)
    np.testing.assert_allclose(np.asarray(s_lse)[ok], w_lse[ok], atol=2e-6)
    diff = np.abs(np.asarray(s_out).astype(np.float32) -
                  w_out.astype(np.float32))[ok]
    assert diff.max() <= 2.0 ** -8 * np.abs(w_out.astype(np.float32))[ok].max()
    with pytest.raises(ValueError, match="sinks: shape"):
        rj.merge_states(outs, lses, sinks=sinks[:2])
    with pytest.raises(ValueError, match=r"outs \[N, T, H, Dv\]"):
        rj.merge_states(outs[0], lses)


# ---- the worker processes -------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(tmp, cases, inputs, devices, processes=1, timeout=300):
    """Writes the cases, starts the worker processes (their own sessions),
    waits at most timeout seconds in all, and kills whatever is left."""
    with open(tmp / "cases.pkl", "wb") as f:
        pickle.dump(cases, f)
    for c in cases:
        with open(tmp / (c["name"] + ".in.pkl"), "wb") as f:
            pickle.dump(inputs[c["name"]], f)
    cmd = [sys.executable, WORKER, str(tmp), "--devices", str(devices),
           "--timeout", str(timeout + 30)]
    if processes > 1:
        cmd += ["--num-processes", str(processes), "--port", str(free_port())]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs, logs = [], []
    try:
        for i in range(processes):
            log = open(tmp / f"worker{i}.log", "wb")
            logs.append(log)
            extra = ["--process-id", str(i)] if processes > 1 else []
            procs.append(subprocess.Popen(cmd + extra, stdout=log,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in logs:
            log.close()
    text = "\n".join(f"--- worker {i} (exit {p.returncode}):\n" +
                     (tmp / f"worker{i}.log").read_text(errors="replace")[-4000:]
                     for i, p in enumerate(procs))
    assert all(p.returncode == 0 for p in procs), text
    results = {}
    for c in cases:
        with open(tmp / (c["name"] + ".out.pkl"), "rb") as f:
            results[c["name"]] = pickle.load(f)
    return results, text


# tensor parallel cases: every dtype pair x {decode, prefill, mixed}, on 4
# devices (Hkv 4: one KV head each), plus features, layouts, kernel sets
TP_KINDS = ["decode", "prefill", "mixed"]
TP_CASES = ([dict(name=f"tp-{name(q)}-{name(kv)}-{kind}", q=q, kv=kv,
                  kind=kind, mesh=4, kw={}) for q in IO_DTYPES
             for kv in KV_DTYPES for kind in TP_KINDS] +
            [dict(name="tp-all-features", q=BF16, kv=BF16, kind="mixed",
                  mesh=4, sinks=True, plain_jit=True,
                  kw=dict(sliding_window=9, soft_cap=4.0, k_scale=1.5,
                          v_scale=0.5, q_scale=0.25)),
             dict(name="tp-non-causal", q=F16, kv=F16, kind="mixed", mesh=2,
                  kw=dict(use_causal_mask=False)),
             dict(name="tp-5d-cache", q=BF16, kv=E4M3, kind="mixed", mesh=2,
                  kw={}, five_d=True, plain_jit=True)] +
            [dict(name=f"tp-isa-{isa}", q=F32, kv=BF16, kind="mixed", mesh=4,
                  kw=dict(isa=isa, num_threads=1)) for isa in ISAS])


def tp_batch(case):
    rng = np.random.default_rng(zlib.crc32(case["name"].encode()))
    kind = case["kind"]
    if kind == "decode":
        seqs = [(1, int(rng.integers(1, 70))) for _ in range(5)]
        dist = (5, 5, 5)
    elif kind == "prefill":
        seqs = [(8, 8 + int(rng.integers(0, 40))) for _ in range(3)]
        dist = (0, 3, 3)
    else:
        seqs = ([(1, int(rng.integers(1, 50))) for _ in range(2)] +
                [(6, 6 + int(rng.integers(0, 30))) for _ in range(2)] +
                [(q, q + int(rng.integers(0, 30)))
                 for q in rng.integers(1, 14, 2)])
        dist = (2, 4, 6)
    b = Batch(rng, seqs, num_q_heads=8, num_kv_heads=4, head_dim=32,
              q_dtype=case["q"], kv_dtype=case["kv"], pad_tokens=2,
              pad_seqs=1)
    cache = b.kv_cache
    if case.get("five_d"):  # upstream's [P, ps, 2*Hkv // packing, packing, D]
        pk = 4 // np.dtype(case["kv"]).itemsize
        cache = cache.reshape(cache.shape[:2] + (2 * b.Hkv // pk, pk, b.D))
    kw = dict(sm_scale=b.D ** -0.5, **case["kw"])
    x = dict(q=b.queries, k=b.keys, v=b.values, cache=cache,
             kv_lens=b.kv_lens, pages=b.page_indices, cu=b.cu_q_lens,
             dist=np.array(dist, np.int32), sinks=None)
    if case.get("sinks"):
        x["sinks"] = rng.uniform(-1, 2, b.Hq).astype(np.float32)
    return x, kw


# context parallel cases, on a ("tp", "cp") mesh
CP_CASES = [
    dict(name="cp-f32-f32-causal", q=F32, kv=F32, mesh=(1, 4), kw={}),
    dict(name="cp-bf16-bf16-window", q=BF16, kv=BF16, mesh=(1, 4),
         kw=dict(sliding_window=10), cuts="in_new"),
    dict(name="cp-f16-e5m2-empty", q=F16, kv=E5M2, mesh=(1, 4), kw={},
         cuts="empty_ends"),
    dict(name="cp-bf16-e4m3-window-one", q=BF16, kv=E4M3, mesh=(1, 4),
         kw=dict(sliding_window=25), cuts="one"),
    dict(name="cp-f32-f16-features", q=F32, kv=F16, mesh=(1, 4), sinks=True,
         kw=dict(sliding_window=6, soft_cap=3.0, k_scale=1.25, v_scale=0.75,
                 q_scale=0.5)),
    dict(name="tpcp-bf16-bf16-window-sinks", q=BF16, kv=BF16, mesh=(2, 2),
         sinks=True, kw=dict(sliding_window=13)),
]


def cp_batch(case):
    rng = np.random.default_rng(zlib.crc32(case["name"].encode()))
    tp, n = case["mesh"]
    q_lens = [1, 1, int(rng.integers(2, 10)), 16, 5]
    kv_lens = [int(rng.integers(1, 80)), 60, 40, 16 + int(rng.integers(0, 50)),
               30]
    b = CPBatch(rng, q_lens, kv_lens, n, Hq=4 * tp, Hkv=2 * tp, D=32,
                q_dtype=case["q"], kv_dtype=case["kv"],
                cuts=case.get("cuts", "random"))
    kw = dict(sm_scale=b.D ** -0.5, **case["kw"])
    x = dict(q=b.q, k=b.k, v=b.v, dev_cache=b.dev_cache,
             dev_pages=b.dev_pages, start=b.start, end=b.end,
             kv_lens=b.kv_lens, cu=b.cu_q_lens,
             dist=np.array([0, 0, b.S], np.int32), sinks=None)
    if case.get("sinks"):
        x["sinks"] = rng.uniform(-1, 2, b.Hq).astype(np.float32)
    return b, x, kw


def worker_cases(tp_cases, cp_cases):
    cases, inputs, refs = [], {}, {}
    for c in tp_cases:
        x, kw = tp_batch(c)
        cases.append(dict(name=c["name"], kind="tp", mesh=(c["mesh"],),
                          kwargs=kw, plain_jit=c.get("plain_jit", False)))
        inputs[c["name"]] = x
        refs[c["name"]] = (x, kw)
    for c in cp_cases:
        b, x, kw = cp_batch(c)
        cases.append(dict(name=c["name"], kind="cp", mesh=c["mesh"],
                          kwargs=kw))
        inputs[c["name"]] = x
        refs[c["name"]] = (b, x, kw)
    return cases, inputs, refs


@pytest.fixture(scope="module")
def spmd(tmp_path_factory):
    """One worker process, four CPU devices, every case."""
    tmp = tmp_path_factory.mktemp("spmd")
    cases, inputs, refs = worker_cases(TP_CASES, CP_CASES)
    t0 = time.monotonic()
    results, log = run_workers(tmp, cases, inputs, devices=4)
    print(f"\nworker: {len(cases)} cases in {time.monotonic() - t0:.1f} s")
    return results, refs


def check_tp(res, x, kw, what):
    step = jax.jit(lambda *a: rj.ragged_paged_attention(
        *a[:8], attention_sink=a[8] if len(a) > 8 else None, **kw))
    args = [x["q"], x["k"], x["v"], x["cache"], x["kv_lens"], x["pages"],
            x["cu"], x["dist"]] + ([x["sinks"]] if x["sinks"] is not None
                                   else [])
    want_out, want_cache = step(*args)
    assert res["out"].dtype == np.asarray(want_out).dtype
    assert np.array_equal(bits(res["out"]), bits(np.asarray(want_out))), (
        f"{what}: out differs from the single-device call in "
        f"{int((res['out'] != np.asarray(want_out)).sum())} elements")
    assert np.array_equal(bits(res["cache"]), bits(np.asarray(want_cache))), (
        f"{what}: the cache differs from the single-device call's")
    assert not np.array_equal(bits(res["cache"]), bits(x["cache"]))
    if "plain_out" in res:  # plain jit on the sharded arrays: gathered
        assert np.array_equal(bits(res["plain_out"]), bits(res["out"]))
        assert np.array_equal(bits(res["plain_cache"]), bits(res["cache"]))
    assert res["donated"] and res["in_place"], (
        f"{what}: a device's cache moved (donated: {res['donated']}, in "
        f"place: {res['in_place']})")


@pytest.mark.parametrize("case", TP_CASES, ids=[c["name"] for c in TP_CASES])
def test_tensor_parallel_equals_one_device(spmd, case):
    results, refs = spmd
    res = results[case["name"]]
    assert res["devices"] == 4 and res["processes"] == 1
    assert ("plain_out" in res) == bool(case.get("plain_jit"))
    x, kw = refs[case["name"]]
    check_tp(res, x, kw, case["name"])


def check_cp(res, b, x, kw, what):
    sinks = x["sinks"]
    ref, ref_lse, _ = unsplit(b, sinks=sinks, **kw)
    outs, lses, caches = numpy_slices(b, **kw)
    for d in range(b.n_dev):
        assert np.array_equal(bits(res["parts"][d]), bits(outs[d])), (
            f"{what}: device {d}'s state differs from the NumPy slice call")
        assert np.array_equal(bits(res["part_lse"][d]), bits(lses[d])), (
            f"{what}: device {d}'s lse differs from the NumPy slice call")
        assert np.array_equal(bits(res["cache"][d]),
                              bits(b.expected_dev_cache(d))), (
            f"{what}: device {d}'s cache does not hold its new tokens")
        assert np.array_equal(bits(caches[d]), bits(res["cache"][d]))
    check_merged(b, res["out"], res["lse"], ref, ref_lse, kw, what)
    assert res["donated"] and res["in_place"], what


@pytest.mark.parametrize("case", CP_CASES, ids=[c["name"] for c in CP_CASES])
def test_context_parallel_merges_to_the_unsplit_call(spmd, case):
    results, refs = spmd
    b, x, kw = refs[case["name"]]
    check_cp(results[case["name"]], b, x, kw, case["name"])


# two processes, two devices each: the same steps on the four devices of a
# mesh across both, joined over loopback
MP_TP = [c for c in TP_CASES if c["name"] in (
    "tp-bfloat16-float8_e4m3fn-mixed", "tp-float32-float32-prefill",
    "tp-all-features")]
MP_CP = [c for c in CP_CASES if c["name"] in (
    "cp-bf16-bf16-window", "tpcp-bf16-bf16-window-sinks")]
assert len(MP_TP) == 3 and len(MP_CP) == 2


def loopback(addr):
    host = addr.split(":")[0]
    return host in ("0100007F", "00000000000000000000000001000000",
                    "0000000000000000FFFF00000100007F")


def test_two_processes_equal_one(tmp_path):
    cases, inputs, refs = worker_cases(MP_TP, MP_CP)
    t0 = time.monotonic()
    results, log = run_workers(tmp_path, cases, inputs, devices=2,
                               processes=2)
    print(f"\ntwo processes: {len(cases)} cases in "
          f"{time.monotonic() - t0:.1f} s")
    assert "connected to 3 peer ranks" in log  # gloo joined all four
    for c in MP_TP:
        res = results[c["name"]]
        assert res["devices"] == 4 and res["processes"] == 2
        x, kw = refs[c["name"]]
        check_tp(res, x, kw, c["name"] + ", two processes")
    for c in MP_CP:
        res = results[c["name"]]
        assert res["devices"] == 4 and res["processes"] == 2
        b, x, kw = refs[c["name"]]
        check_cp(res, b, x, kw, c["name"] + ", two processes")
    for i in range(2):
        with open(tmp_path / f"sockets.{i}.pkl", "rb") as f:
            socks = pickle.load(f)
        assert socks, f"process {i}: no TCP socket seen"
        for table, local, remote in socks:
            assert loopback(local), f"process {i}: {table} local {local}"
            assert loopback(remote) or remote.split(":")[1] == "0000", (
                f"process {i}: {table} remote {remote}")
