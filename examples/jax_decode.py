"""rpa from JAX: a decode loop of jitted steps with the cache donated, so
that every step's KV write lands in the same buffer (no copy of the cache).

    pip install --no-build-isolation ./python   # next to jax (README, JAX)
    python examples/jax_decode.py

rpa.jax is a CPU op. Prints the cache's address at every step and checks
that it never moves; exits 1 if a check fails.
"""
import functools
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import rpa.jax  # noqa: E402

Hq, Hkv, D, ps = 32, 8, 128, 16          # Llama-3-8B heads, pages of 16
S, cached, steps = 4, 100, 5             # 4 sequences, 100 tokens cached
pps = -(-(cached + steps) // ps)         # pages per sequence: room to grow
P = S * pps
rng = np.random.default_rng(0)

# Each sequence's pages, shuffled over the pool (row i: sequence i's pages).
page_indices = jnp.asarray(rng.permutation(P).astype(np.int32))
cache = jnp.asarray(rng.standard_normal((P, ps, 2 * Hkv, D)), jnp.bfloat16)
cu_q_lens = jnp.arange(S + 1, dtype=jnp.int32)    # one new token each
distribution = jnp.array([S, S, S], jnp.int32)    # all of them decodes

# Argument 3 is the cache: donated, the op's cache result aliases it.
step = jax.jit(functools.partial(rpa.jax.ragged_paged_attention,
                                 sm_scale=D ** -0.5),
               donate_argnums=(3,))

addr = cache.unsafe_buffer_pointer()
ok = True
for i in range(steps):
    kv_lens = jnp.full((S,), cached + i + 1, jnp.int32)
    q = jnp.asarray(rng.standard_normal((S, Hq, D)), jnp.bfloat16)
    k = jnp.asarray(rng.standard_normal((S, Hkv, D)), jnp.bfloat16)
    v = jnp.asarray(rng.standard_normal((S, Hkv, D)), jnp.bfloat16)
    before = cache
    out, cache = step(q, k, v, cache, kv_lens, page_indices, cu_q_lens,
                      distribution)
    # The new token of sequence 0 (position cached + i) is in its slot.
    pos = cached + i
    page, slot = int(page_indices[pos // ps]), pos % ps
    written = bool((cache[page, slot, 0::2] == k[0]).all() &
                   (cache[page, slot, 1::2] == v[0]).all())
    same = cache.unsafe_buffer_pointer() == addr
    print(f"step {i}: kv_len {cached + i + 1}, out {out.shape} "
          f"{out.dtype}, cache at {cache.unsafe_buffer_pointer():#x} "
          f"({'same buffer' if same else 'MOVED'}), donated input deleted: "
          f"{before.is_deleted()}, new K/V in page {page} slot {slot}: "
          f"{written}")
    ok &= same and before.is_deleted() and written
    ok &= bool(jnp.isfinite(out.astype(jnp.float32)).all())

print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
