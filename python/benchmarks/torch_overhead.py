"""What one eager rpa.torch call costs on top of the library call itself.

A one-token decode (1 sequence, 32 query / 8 KV heads of dim 128, bf16,
kv_len 1, page size 16: where fixed costs show most), called through

- torch.ops.rpa.attention (the op, cache_view computed once),
- rpa.torch.attention (the Python wrapper over views of the cache),
- torch.ops.rpa.ragged_paged_attention (upstream's v3 call),
- rpa.ragged_paged_attention (the NumPy call, inplace=True, for scale),

each timed per call, median of many; the shim times its own rpa_attention
call (two clock reads around it), so "overhead" is the op's time minus the
library's time within the same calls.

    python python/benchmarks/torch_overhead.py [--reps N] [--threads N]
"""
import argparse
import ctypes
import statistics
import time

import ml_dtypes
import torch

import rpa
import rpa.torch as rt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    shim = ctypes.CDLL(rt.library_path)
    shim.rpa_torch_last_call_seconds.restype = ctypes.c_double
    Hq, Hkv, D, ps = 32, 8, 128, 16
    bf = torch.bfloat16
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, Hq, D, generator=g).to(bf)
    k = torch.randn(1, Hkv, D, generator=g).to(bf)
    v = torch.randn(1, Hkv, D, generator=g).to(bf)
    cache = torch.zeros(1, ps, 2 * Hkv, D, dtype=bf)
    kv_lens = torch.tensor([1], dtype=torch.int32)
    pi = torch.tensor([0], dtype=torch.int32)
    cu = torch.tensor([0, 1], dtype=torch.int32)
    kc, vc = rt.cache_views(cache)
    view = rt.cache_view(kc, vc, cache)
    op = torch.ops.rpa.attention.default
    v3 = torch.ops.rpa.ragged_paged_attention.default
    np_args = [x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
               for x in (q, k, v, cache)]
    calls = {
        "torch.ops.rpa.attention": lambda: op(q, k, v, cache, view, kv_lens,
                                              pi, cu, 0.088),
        "rpa.torch.attention": lambda: rt.attention(
            q, k, v, kc, vc, kv_lens, pi, cu, cache=cache, sm_scale=0.088),
        "torch.ops.rpa.ragged_paged_attention": lambda: v3(
            q, k, v, cache, kv_lens, pi, cu, None, 0.088),
        "numpy rpa.ragged_paged_attention": lambda: rpa.ragged_paged_attention(
            *np_args, kv_lens.numpy(), pi.numpy(), cu.numpy(), None,
            sm_scale=0.088, inplace=True,
            num_threads=torch.get_num_threads()),
    }
    print(f"rpa {rpa.__version__}, kernel set {rpa.kernel_set()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; one-token "
          f"bf16 decode, median of {a.reps} calls")
    for name, fn in calls.items():
        for _ in range(300):
            fn()
        total, lib = [], []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            fn()
            total.append(time.perf_counter() - t0)
            lib.append(shim.rpa_torch_last_call_seconds())
        t = statistics.median(total) * 1e6
        if name.startswith("numpy"):
            print(f"{name:40s} {t:7.1f} us per call")
        else:
            c = statistics.median(lib) * 1e6
            print(f"{name:40s} {t:7.1f} us per call, library {c:5.1f} us, "
                  f"overhead {t - c:5.1f} us")


if __name__ == "__main__":
    main()
