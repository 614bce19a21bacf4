"""Context parallel: each device holds a slice of every sequence's keys.

    python examples/context_parallel.py

Four devices each hold the positions [start, end) of every sequence in
their own pages (local position c - start). A step runs on every device
over its slice, giving a partial state (float32 out, lse) per query row,
and the states merge into the attention over all keys. Here the slices
are uneven, one device holds nothing of the prefill, and a cut falls
among the prefill's new tokens; the layer has a sliding window, which
crosses the cuts.

The same step is computed two ways and checked against the unsplit call
(to float32 rounding): NumPy (rpa.context_parallel.shard_attention per
device, rpa.merge_states), and JAX on four CPU devices (jax.shard_map:
rpa.jax.shard_attention per device, rpa.jax.merge_across, an all-reduce).
Exits 1 if a check fails.
"""
import os
import sys

N = 4
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={N}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import rpa  # noqa: E402
import rpa.jax  # noqa: E402
from rpa import context_parallel  # noqa: E402

bf16 = ml_dtypes.bfloat16
Hq, Hkv, D, ps, window = 8, 2, 64, 16, 48
q_lens = np.array([1, 24], np.int32)      # a decode and a prefill chunk
kv_lens = np.array([300, 90], np.int32)   # 299 and 66 tokens cached
# bounds[i]: sequence i's cuts, device d holds [bounds[i][d], bounds[i][d+1])
bounds = np.array([[0, 70, 180, 240, 300],    # the decode's window: 2 slices
                   [0, 30, 30, 75, 90]],      # device 1: nothing; device 2
                  np.int32)                   # holds 9 of the 24 new tokens
start, end = bounds[:, :-1].T.copy(), bounds[:, 1:].T.copy()  # [N, S]
S = len(q_lens)
cu_q_lens = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
T = int(cu_q_lens[-1])
rng = np.random.default_rng(0)
# K and V of every position of every sequence; q, k, v of the new tokens
keys = [rng.standard_normal((n, Hkv, D)).astype(bf16) for n in kv_lens]
vals = [rng.standard_normal((n, Hkv, D)).astype(bf16) for n in kv_lens]
q = rng.standard_normal((T, Hq, D)).astype(bf16)
k = np.concatenate([keys[i][kv_lens[i] - q_lens[i]:] for i in range(S)])
v = np.concatenate([vals[i][kv_lens[i] - q_lens[i]:] for i in range(S)])


def store(cache, pages, i, lo, hi, base):
    """Positions [lo, hi) of sequence i into cache slots (local: c - base)."""
    for c in range(lo, hi):
        page, slot = pages[(c - base) // ps], (c - base) % ps
        cache[page, slot, 0::2], cache[page, slot, 1::2] = keys[i][c], vals[i][c]


# The unsplit cache (the reference) and each device's own cache and pages.
pps = -(-int(kv_lens.max()) // ps)
pages = np.arange(S * pps, dtype=np.int32).reshape(S, pps)
cache = np.zeros((S * pps, ps, 2 * Hkv, D), bf16)
dev_pps = -(-int((end - start).max()) // ps)
dev_pages = np.stack([np.arange(S * dev_pps, dtype=np.int32).reshape(S, dev_pps)
                      for _ in range(N)])
dev_cache = np.zeros((N, S * dev_pps, ps, 2 * Hkv, D), bf16)
for i in range(S):
    first_new = int(kv_lens[i] - q_lens[i])  # the new tokens: the calls write
    store(cache, pages[i], i, 0, first_new, 0)
    for d in range(N):
        store(dev_cache[d], dev_pages[d, i], i, start[d, i],
              min(end[d, i], first_new), start[d, i])

kw = dict(sm_scale=D ** -0.5, sliding_window=window)
kc, vc = rpa.cache_views(cache, "combined")
ref, ref_lse = rpa.attention(q, k, v, kc, vc, kv_lens, pages, cu_q_lens,
                             out_dtype=np.float32, return_lse=True, **kw)


def report(name, out, lse):
    err = float(np.abs(np.asarray(out, np.float32) - ref).max())
    lerr = float(np.abs(np.asarray(lse) - ref_lse).max())
    ok = err < 1e-5 and lerr < 1e-5
    print(f"{name}: max |out - unsplit| {err:.2g}, max |lse - unsplit| "
          f"{lerr:.2g}: {'ok' if ok else 'TOO FAR'}")
    return ok


# NumPy: one call per device on its own cache (updated in place), merged.
np_caches = dev_cache.copy()
out = lse = None
for d in range(N):
    kd, vd = rpa.cache_views(np_caches[d], "combined")
    o, l = context_parallel.shard_attention(
        q, k, v, kd, vd, kv_lens, dev_pages[d], cu_q_lens, start[d], end[d],
        **kw)
    print(f"device {d}: rows with keys here: {int(np.isfinite(l[:, 0]).sum())}"
          f" of {T}")
    out, lse = (o, l) if out is None else rpa.merge_states(out, lse, o, l)
ok = report("NumPy, rpa.merge_states", out, lse)

# JAX: the same in one SPMD program; the device caches donated.
mesh = jax.make_mesh((N,), ("cp",))
rep, mine = P(), P("cp")


def step(q, k, v, cache, pages, start, end, kv_lens, cu_q_lens):
    o, cache, l = rpa.jax.shard_attention(
        q, k, v, cache, kv_lens, pages[0], cu_q_lens, None, start[0], end[0],
        **kw)
    o, l = rpa.jax.merge_across(o, l, "cp")   # every device: the result
    return o, l, cache


sharded = jax.jit(jax.shard_map(
    step, mesh=mesh, in_specs=(rep, rep, rep, mine, mine, mine, mine, rep, rep),
    out_specs=(rep, rep, mine)), donate_argnums=(3,))
args = [jax.device_put(x, NamedSharding(mesh, s)) for x, s in zip(
    (q, k, v, dev_cache.reshape((-1,) + dev_cache.shape[2:]), dev_pages,
     start, end, kv_lens, cu_q_lens), (rep,) * 3 + (mine,) * 4 + (rep,) * 2)]
out, lse, caches = sharded(*args)
ok &= report("JAX, shard_map and merge_across", out, lse)
same = np.array_equal(np.asarray(caches).view(np.uint16),
                      np_caches.reshape(caches.shape).view(np.uint16))
print(f"device caches after the step (new tokens written) equal NumPy's: "
      f"{same}")
ok &= same
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
