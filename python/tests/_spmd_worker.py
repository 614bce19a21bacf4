"""Runs sharded rpa.jax steps on a mesh of CPU devices, for test_sharding.py.

Started as its own process (the device count is fixed when JAX's CPU
backend starts, so it cannot change inside the pytest process):

    python _spmd_worker.py DIR --devices N
    python _spmd_worker.py DIR --devices N --process-id I --num-processes M \\
        --port PORT

DIR holds cases.pkl (a list of cases: name, kind "tp" or "cp", mesh shape,
static keywords) and the inputs of each; the worker writes
DIR/<name>.out.pkl for each case (process 0 only when there are several).
With several processes, each owns N devices of a global mesh, joined by
jax.distributed.initialize over 127.0.0.1 (coordinator and gloo CPU
collectives both bound to loopback), and reports the addresses of its TCP
sockets.

- "tp": tensor parallel, rpa.jax.ragged_paged_attention inside
  jax.shard_map, q/k/v heads, the cache's combined rows (axis 2), the sinks
  and the output sharded over the mesh axis "tp"; the cache donated. Saves
  out, the cache, and whether each device's cache buffer stayed in place.
- "cp": context parallel (and tensor parallel: a ("tp", "cp") mesh), each
  device's slice of the keys through rpa.jax.shard_attention, the states
  merged over "cp" with rpa.jax.merge_across (an all-reduce; sinks
  there). Saves the merged out and lse, each device's partial state and
  its cache.
"""
import argparse
import gc
import os
import pickle
import signal
import sys
import time


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--devices", type=int, required=True)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=600)
    return ap.parse_args()


ARGS = parse()
signal.alarm(ARGS.timeout)  # ends this process even if the test is gone
# before jax is imported: this process's CPU devices
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count="
                           f"{ARGS.devices}").strip()
os.environ["JAX_PLATFORMS"] = "cpu"


import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

MULTI = ARGS.num_processes > 1
if MULTI:
    from jax._src import distributed as _dist  # noqa: E402
    from jax._src import xla_bridge as _xb  # noqa: E402
    from jax._src.lib import _jax  # noqa: E402

    addr = f"127.0.0.1:{ARGS.port}"
    jax.distributed.initialize(
        coordinator_address=addr, coordinator_bind_address=addr,
        num_processes=ARGS.num_processes, process_id=ARGS.process_id,
        initialization_timeout=60, heartbeat_timeout_seconds=20,
        shutdown_timeout_seconds=30)

    # JAX builds its CPU client with gloo collectives on the address the
    # host name resolves to; name 127.0.0.1 so they listen on loopback
    # (jax 0.10.2 has no public setting for it).
    def _cpu_client():
        return _xb.make_cpu_client(collectives=_jax.make_gloo_tcp_collectives(
            distributed_client=_dist.global_state.client,
            hostname="127.0.0.1"))

    _xb.register_backend_factory("cpu", _cpu_client, priority=0,
                                 fail_quietly=False)

import rpa.jax as rj  # noqa: E402

from jax.experimental import multihost_utils  # noqa: E402


def put(mesh, spec, a, owned=False):
    """A global array from the full NumPy one. owned: copied into buffers of
    XLA's own; on CPU a 64-byte aligned NumPy array may otherwise be used in
    place (zero copy), and such a buffer cannot be donated (XLA copies
    it), as an engine's cache, allocated by XLA, always can."""
    a = np.asarray(a)
    x = jax.make_array_from_callback(a.shape, NamedSharding(mesh, spec),
                                     lambda idx: a[idx])
    return jax.jit(jnp.copy)(x) if owned else x


def fetch(x):
    if MULTI:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def mesh_of(shape, names):
    n = int(np.prod(shape))
    devs = np.array(jax.devices()[:n]).reshape(shape)
    return jax.sharding.Mesh(devs, names)


def local_addresses(arr):
    """(device, buffer address) of this process's shards of arr. The shard
    objects are collected at once: a buffer still referenced when the step
    runs cannot be donated (XLA would copy it)."""
    got = sorted((str(s.device), s.data.unsafe_buffer_pointer())
                 for s in arr.addressable_shards)
    gc.collect()
    return got


def run_tp(case, x):
    mesh = mesh_of((case["mesh"][0],), ("tp",))
    heads = P(None, "tp", None)
    cache_spec = P(None, None, "tp", *([None] * (x["cache"].ndim - 3)))
    rep = P()
    kw = case["kwargs"]
    has_sinks = x.get("sinks") is not None

    def body(q, k, v, cache, kv_lens, pages, cu, dist, *sinks):
        return rj.ragged_paged_attention(
            q, k, v, cache, kv_lens, pages, cu, dist,
            attention_sink=sinks[0] if sinks else None, **kw)

    in_specs = (heads, heads, heads, cache_spec, rep, rep, rep, rep)
    if has_sinks:
        in_specs += (P("tp"),)
    step = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=in_specs,
                                 out_specs=(heads, cache_spec)),
                   donate_argnums=(3,))
    specs = dict(q=heads, k=heads, v=heads, cache=cache_spec, kv_lens=rep,
                 pages=rep, cu=rep, dist=rep, sinks=P("tp"))
    names = ["q", "k", "v", "cache", "kv_lens", "pages", "cu", "dist"]
    if has_sinks:
        names.append("sinks")
    args = [put(mesh, specs[n], x[n], owned=n == "cache") for n in names]
    # the op under plain jit on the same sharded arrays (no shard_map):
    # it has no partitioning rule, so XLA gathers its inputs; still right
    res = {}
    if case.get("plain_jit"):
        plain_out, plain_cache = jax.jit(body)(*args)
        res = dict(plain_out=fetch(plain_out), plain_cache=fetch(plain_cache))
    before = local_addresses(args[3])
    out, cache = step(*args)
    jax.block_until_ready((out, cache))
    return dict(res, out=fetch(out), cache=fetch(cache),
                in_place=local_addresses(cache) == before,
                donated=args[3].is_deleted())


def run_cp(case, x):
    tp, cp = case["mesh"]
    mesh = mesh_of((tp, cp), ("tp", "cp"))
    kw = case["kwargs"]
    heads = P(None, "tp", None)
    rep = P()
    cache_spec = P("cp", None, "tp", None)
    has_sinks = x.get("sinks") is not None
    n_dev, dP = x["dev_cache"].shape[:2]
    cache = x["dev_cache"].reshape((n_dev * dP,) + x["dev_cache"].shape[2:])

    def body(q, k, v, cache, pages, start, end, kv_lens, cu, dist, *sinks):
        out, cache, lse = rj.shard_attention(
            q, k, v, cache, kv_lens, pages[0], cu, dist, start[0], end[0],
            **kw)
        merged, merged_lse = rj.merge_across(
            out, lse, "cp", sinks=sinks[0] if sinks else None)
        return merged, merged_lse, cache, out[None], lse[None]

    in_specs = (heads, heads, heads, cache_spec, P("cp", None, None),
                P("cp", None), P("cp", None), rep, rep, rep)
    if has_sinks:
        in_specs += (P("tp"),)
    out_specs = (heads, P(None, "tp"), cache_spec, P("cp", None, "tp", None),
                 P("cp", None, "tp"))
    step = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=in_specs,
                                 out_specs=out_specs), donate_argnums=(3,))
    vals = [x["q"], x["k"], x["v"], cache, x["dev_pages"], x["start"],
            x["end"], x["kv_lens"], x["cu"], x["dist"]]
    if has_sinks:
        vals.append(x["sinks"])
    args = [put(mesh, s, a, owned=i == 3)
            for i, (s, a) in enumerate(zip(in_specs, vals))]
    before = local_addresses(args[3])
    res = step(*args)
    jax.block_until_ready(res)
    merged, merged_lse, cache, parts, part_lse = (fetch(r) for r in res)
    return dict(out=merged, lse=merged_lse,
                cache=cache.reshape(x["dev_cache"].shape),
                parts=parts, part_lse=part_lse,
                in_place=local_addresses(res[2]) == before,
                donated=args[3].is_deleted())


def sockets():
    """(local, remote) IPv4/IPv6 addresses of this process's TCP sockets."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[9] in inodes:
                found.append((table, f[1], f[2]))
    return found


def main():
    with open(os.path.join(ARGS.dir, "cases.pkl"), "rb") as f:
        cases = pickle.load(f)
    runs = {"tp": run_tp, "cp": run_cp}
    for case in cases:
        with open(os.path.join(ARGS.dir, case["name"] + ".in.pkl"), "rb") as f:
            x = pickle.load(f)
        t0 = time.monotonic()
        res = runs[case["kind"]](case, x)
        print(f"{case['name']}: {time.monotonic() - t0:.2f} s", flush=True)
        res["devices"] = jax.device_count()
        res["processes"] = jax.process_count()
        if ARGS.process_id == 0:
            with open(os.path.join(ARGS.dir, case["name"] + ".out.pkl"),
                      "wb") as f:
                pickle.dump(res, f)
    if MULTI:
        with open(os.path.join(ARGS.dir,
                               f"sockets.{ARGS.process_id}.pkl"), "wb") as f:
            pickle.dump(sockets(), f)
        jax.distributed.shutdown()
    print(f"worker {ARGS.process_id}: {len(cases)} cases on "
          f"{jax.device_count()} devices", flush=True)


if __name__ == "__main__":
    sys.exit(main())
