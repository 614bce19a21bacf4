"""What one jitted rpa.jax call costs on top of the NumPy call.

Two decode steps, each run both ways in alternation (so drift on a shared
machine hits both alike), median of many calls per way:

- one token: 1 sequence, 32 query / 8 KV heads of dim 128, bf16, kv_len 1
  (where fixed costs show most);
- 32 x 1k: 32 sequences of 1024 cached tokens, same heads, page size 16.

NumPy: rpa.ragged_paged_attention(..., inplace=True) (the cache updated in
place, no copy). JAX: jax.jit(rpa.jax.ragged_paged_attention,
donate_argnums=3) with the cache handed back in each step, timed to
block_until_ready. Both with the same kernel set and thread count.

    python python/benchmarks/jax_overhead.py [--reps N] [--threads N]
"""
import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

import rpa
import rpa.jax as rj

BF16 = ml_dtypes.bfloat16


def decode_case(rng, num_seqs, ctx, Hq=32, Hkv=8, D=128, ps=16):
    pps = -(-(ctx + 1) // ps)
    P = num_seqs * pps
    cache = rng.standard_normal((P, ps, 2 * Hkv, D), np.float32).astype(BF16)
    g = lambda *s: rng.standard_normal(s, np.float32).astype(BF16)
    return dict(q=g(num_seqs, Hq, D), k=g(num_seqs, Hkv, D),
                v=g(num_seqs, Hkv, D), cache=cache,
                kv_lens=np.full(num_seqs, ctx + 1, np.int32),
                page_indices=rng.permutation(P).astype(np.int32),
                cu=np.arange(num_seqs + 1, dtype=np.int32),
                dist=np.array([num_seqs] * 3, np.int32))


def run(name, c, reps, threads):
    kw = dict(sm_scale=0.088, num_threads=threads)
    np_cache = c["cache"].copy()
    np_args = lambda: (c["q"], c["k"], c["v"], np_cache, c["kv_lens"],
                       c["page_indices"], c["cu"], c["dist"])
    step = jax.jit(functools.partial(rj.ragged_paged_attention, **kw),
                   donate_argnums=(3,))
    small = [jnp.asarray(c[n]) for n in ("q", "k", "v")]
    meta = [jnp.asarray(c[n]) for n in ("kv_lens", "page_indices", "cu",
                                        "dist")]
    state = {"cache": jnp.asarray(c["cache"])}

    def jax_call():
        out, state["cache"] = step(*small, state["cache"], *meta)
        jax.block_until_ready((out, state["cache"]))

    def np_call():
        rpa.ragged_paged_attention(*np_args(), inplace=True, **kw)

    for f in (jax_call, np_call):  # compile, warm caches and contexts
        for _ in range(5):
            f()
    t_np, t_jax = [], []
    for _ in range(reps):
        for f, ts in ((np_call, t_np), (jax_call, t_jax)):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    m_np, m_jax = statistics.median(t_np), statistics.median(t_jax)
    print(f"{name:10s} numpy {m_np * 1e6:9.1f} us   jax {m_jax * 1e6:9.1f} us"
          f"   jax - numpy {(m_jax - m_np) * 1e6:+8.1f} us   "
          f"jax / numpy {m_jax / m_np:5.2f}x   (median of {reps} each)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"rpa {rpa.__version__}, kernel set {rpa.kernel_set(a.threads)}, "
          f"jax {jax.__version__}, threads {a.threads or 'all CPUs'}")
    run("one token", decode_case(rng, 1, 0), a.reps, a.threads)
    run("32 x 1k", decode_case(rng, 32, 1024), max(a.reps // 3, 20),
        a.threads)


if __name__ == "__main__":
    main()
