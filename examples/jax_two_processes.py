"""Tensor parallel across two processes, joined by JAX's own multi-process
runtime over loopback.

    python examples/jax_two_processes.py

starts two copies of itself (--process 0 and 1), each owning two CPU
devices. They meet through jax.distributed.initialize at 127.0.0.1 on a
free port, with gloo collectives for CPU arrays, and run one decode step of
rpa.jax inside jax.shard_map over the four devices of both: q and KV heads
split four ways, each process computing its devices' heads. Process 0
gathers the output from both (a cross-process collective) and checks it
against the same step on one of its devices: bit for bit. The parent waits
at most 120 s and kills what is left (a worker ends itself after
150 s); exits 1 if a check fails.
"""
import functools
import os
import signal
import socket
import subprocess
import sys


def launch():
    with socket.socket() as s:               # a free port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # stopped from outside (SIGTERM): still stop the workers, below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    procs = [subprocess.Popen([sys.executable, __file__, "--process", str(i),
                               str(port)], start_new_session=True)
             for i in range(2)]
    try:
        codes = [p.wait(timeout=120) for p in procs]
    except subprocess.TimeoutExpired:
        codes = ["timed out"]
    finally:
        for p in procs:
            if p.poll() is None:            # its own session: all of it
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    print("ok" if codes == [0, 0] else f"FAILED (exit codes {codes})")
    return 0 if codes == [0, 0] else 1


def worker(pid, port):
    signal.alarm(150)   # never outlive the parent's wait by much
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=2")
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import ml_dtypes
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec as P

    addr = f"127.0.0.1:{port}"
    jax.distributed.initialize(coordinator_address=addr,
                               coordinator_bind_address=addr,
                               num_processes=2, process_id=pid,
                               initialization_timeout=60)
    # gloo listens where the host name resolves; name loopback instead
    # (jax 0.10.2 offers no public setting: its CPU client factory is
    # replaced before the first use of a device)
    from jax._src import distributed, xla_bridge
    from jax._src.lib import _jax
    xla_bridge.register_backend_factory(
        "cpu", lambda: xla_bridge.make_cpu_client(
            collectives=_jax.make_gloo_tcp_collectives(
                distributed_client=distributed.global_state.client,
                hostname="127.0.0.1")),
        priority=0, fail_quietly=False)
    import rpa.jax

    Hq, Hkv, D, ps, S, ctx = 16, 4, 64, 16, 3, 50
    pps = -(-(ctx + 1) // ps)
    rng = np.random.default_rng(0)           # the same data in both
    bf16 = ml_dtypes.bfloat16
    full = dict(
        q=rng.standard_normal((S, Hq, D)).astype(bf16),
        k=rng.standard_normal((S, Hkv, D)).astype(bf16),
        v=rng.standard_normal((S, Hkv, D)).astype(bf16),
        cache=rng.standard_normal((S * pps, ps, 2 * Hkv, D)).astype(bf16),
        kv_lens=np.full(S, ctx + 1, np.int32),
        pages=rng.permutation(S * pps).astype(np.int32),
        cu=np.arange(S + 1, dtype=np.int32))
    mesh = jax.make_mesh((4,), ("tp",))      # devices of both processes
    heads, rows, meta = P(None, "tp", None), P(None, None, "tp", None), P()
    specs = dict(q=heads, k=heads, v=heads, cache=rows, kv_lens=meta,
                 pages=meta, cu=meta)
    # each process supplies its own devices' shards of the global arrays
    args = [jax.make_array_from_callback(
        full[n].shape, NamedSharding(mesh, specs[n]),
        lambda idx, n=n: full[n][idx]) for n in specs]
    attend = functools.partial(rpa.jax.ragged_paged_attention,
                               distribution=None, sm_scale=D ** -0.5)
    step = jax.jit(jax.shard_map(attend, mesh=mesh,
                                 in_specs=tuple(specs.values()),
                                 out_specs=(heads, rows)))
    out, cache = step(*args)
    mine = sorted(s.index[1].start for s in out.addressable_shards)
    print(f"process {pid}: devices {[d.id for d in jax.local_devices()]} "
          f"computed q heads {', '.join(f'{h}-{h + Hq // 4 - 1}' for h in mine)}"
          f" of {Hq}", flush=True)
    out = multihost_utils.process_allgather(out, tiled=True)
    ok = True
    if pid == 0:
        ref, _ = jax.jit(attend)(*full.values())  # one device, this process
        ok = bool((np.asarray(out).view(np.uint16) ==
                   np.asarray(ref).view(np.uint16)).all())
        print(f"process 0: both processes' heads gathered, bitwise the "
              f"one-device call: {ok}", flush=True)
    jax.distributed.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--process":
        sys.exit(worker(int(sys.argv[2]), int(sys.argv[3])))
    sys.exit(launch())
