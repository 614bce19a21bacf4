"""Tensor parallel: rpa.jax inside jax.shard_map, heads split over devices.

    python examples/jax_tensor_parallel.py

Four CPU devices (--xla_force_host_platform_device_count, set before JAX
starts) stand for four accelerators. Each device holds a quarter of the
query heads and of the KV heads, and the cache rows of its KV heads; the
attention needs nothing from the other devices, so the shard_map body is
the plain call on local shapes. The cache is donated: every device's fused
KV write lands in its own cache buffer. Each step is checked against the
same step on one device: bit for bit. Exits 1 if a check fails.
"""
import functools
import os
import sys

N = 4
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={N}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import rpa.jax  # noqa: E402

Hq, Hkv, D, ps = 32, 8, 128, 16          # per device: 8 q heads, 2 KV heads
S, cached, steps = 4, 100, 3             # 4 sequences decoding
pps = -(-(cached + steps) // ps)
num_pages = S * pps
rng = np.random.default_rng(0)

mesh = jax.make_mesh((N,), ("tp",))
heads = P(None, "tp", None)        # q, k, v and out [T, H, D]: H split
rows = P(None, None, "tp", None)   # cache [pages, ps, 2*Hkv, D]: K and V of
#                                    head h are rows 2h, 2h+1, so a block of
#                                    rows is a block of KV heads
meta = P()                         # lengths and page tables: every device


def put(x, spec):
    return jax.device_put(x, NamedSharding(mesh, spec))


attend = functools.partial(rpa.jax.ragged_paged_attention, sm_scale=D ** -0.5)
sharded = jax.jit(jax.shard_map(
    attend, mesh=mesh, in_specs=(heads, heads, heads, rows) + (meta,) * 4,
    out_specs=(heads, rows)), donate_argnums=(3,))
one_device = jax.jit(attend)

# The cache, allocated by XLA on the devices (as an engine allocates it).
shape = (num_pages, ps, 2 * Hkv, D)
cache = jax.jit(lambda key: jax.random.normal(key, shape, jnp.bfloat16),
                out_shardings=NamedSharding(mesh, rows))(jax.random.key(0))
ref_cache = jnp.array(np.asarray(cache))          # the same, on one device
addrs = [s.data.unsafe_buffer_pointer() for s in cache.addressable_shards]
page_indices = put(rng.permutation(num_pages).astype(np.int32), meta)
cu_q_lens = put(np.arange(S + 1, dtype=np.int32), meta)
distribution = put(np.array([S, S, S], np.int32), meta)

ok = True
for i in range(steps):
    kv_lens = put(np.full(S, cached + i + 1, np.int32), meta)
    q, k, v = (rng.standard_normal((S, h, D)).astype(jnp.bfloat16)
               for h in (Hq, Hkv, Hkv))
    out, cache = sharded(put(q, heads), put(k, heads), put(v, heads), cache,
                         kv_lens, page_indices, cu_q_lens, distribution)
    ref_out, ref_cache = one_device(q, k, v, ref_cache, kv_lens,
                                    page_indices, cu_q_lens, distribution)
    same = bool((np.asarray(out).view(np.uint16) ==
                 np.asarray(ref_out).view(np.uint16)).all())
    in_place = [s.data.unsafe_buffer_pointer()
                for s in cache.addressable_shards] == addrs
    print(f"step {i}: out {out.shape} split as {out.sharding.spec}, "
          f"bitwise the one-device call: {same}, every device's cache in "
          f"its own buffer: {in_place}")
    ok &= same and in_place
same_cache = bool((np.asarray(cache).view(np.uint16) ==
                   np.asarray(ref_cache).view(np.uint16)).all())
print(f"caches after {steps} steps equal: {same_cache}")
ok &= same_cache
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
