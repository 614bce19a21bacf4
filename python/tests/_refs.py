"""The upstream reference implementations the conformance tests compare with,
and the rounding bounds their tolerances are built from.

- JAX's own: jax.experimental.pallas.ops.tpu.ragged_paged_attention
  .ref_ragged_paged_attention (RPA v2's reference), from the jax wheel.
- tpu-inference's (vllm-project/tpu-inference, the RPA v3 home):
  ref_ragged_paged_attention (v3/kernel.py), ref_ragged_paged_attention_hd64
  (v3/kernel_hd64.py, the head-dim-64 variant, the one with attention sinks)
  and ref_mla_ragged_paged_attention (mla/v1/kernel.py).

tpu-inference as a package cannot be imported here: its __init__ imports
vllm, and it pins jax 0.11.2 (Python >= 3.12) and libtpu. Its reference
functions themselves are plain jax.numpy. So the test stage installs the
wheel with --no-deps, and load_tpu_inference() imports just the three kernel
modules (and their util.py) from it by registering empty parent packages in
sys.modules, so that no package __init__ runs; the one import they make that
pulls in vllm and torch (tuned_block_sizes_hd64, the TPU block-size tables,
unused by the reference) is replaced by a stub. The reference code that runs
is upstream's, unmodified.
"""
import importlib
import importlib.util
import os
import sys
import types

import ml_dtypes
import numpy as np

from _batches import F32, subnormal_step, unit_roundoff


class Unavailable(Exception):
    pass


def jax_v2():
    try:
        import jax  # noqa: F401
        from jax.experimental.pallas.ops.tpu import ragged_paged_attention
    except ImportError as e:
        raise Unavailable(f"jax's ragged_paged_attention: {e}")
    return ragged_paged_attention.ref_ragged_paged_attention


_TPU_INFERENCE = None


def load_tpu_inference():
    """(v3 kernel module, hd64 module, mla v1 module) from tpu-inference."""
    global _TPU_INFERENCE
    if _TPU_INFERENCE is not None:
        return _TPU_INFERENCE
    try:
        import jax  # noqa: F401
    except ImportError as e:
        raise Unavailable(f"jax: {e}")
    spec = importlib.util.find_spec("tpu_inference")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("tpu-inference is not installed (pip install "
                          "--no-deps -r python/requirements-upstream.txt)")
    root = list(spec.submodule_search_locations)[0]
    packages = ["tpu_inference", "tpu_inference.kernels",
                "tpu_inference.kernels.ragged_paged_attention",
                "tpu_inference.kernels.ragged_paged_attention.v3",
                "tpu_inference.kernels.mla",
                "tpu_inference.kernels.mla.v1"]
    for name in packages:
        if name in sys.modules and getattr(sys.modules[name], "__file__",
                                           None):
            continue  # the real package is already imported
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(root, *name.split(".")[1:])]
        sys.modules[name] = m
    stub = ("tpu_inference.kernels.ragged_paged_attention.v3."
            "tuned_block_sizes_hd64")
    if stub not in sys.modules:
        m = types.ModuleType(stub)
        m.get_tuned_block_sizes = None  # TPU tuning tables: not used here
        sys.modules[stub] = m
    try:
        v3 = importlib.import_module(
            "tpu_inference.kernels.ragged_paged_attention.v3.kernel")
        hd64 = importlib.import_module(
            "tpu_inference.kernels.ragged_paged_attention.v3.kernel_hd64")
        mla = importlib.import_module("tpu_inference.kernels.mla.v1.kernel")
    except Exception as e:  # noqa: BLE001 - any failure means unavailable
        raise Unavailable(f"tpu-inference's kernel modules: "
                          f"{type(e).__name__}: {e}")
    _TPU_INFERENCE = (v3, hd64, mla)
    return _TPU_INFERENCE


def to_np(x):
    return np.asarray(x).astype(np.float64)


def f32(a):
    """Lossless widening (every rpa dtype fits in float32 exactly)."""
    return np.asarray(a).astype(np.float32)


# ---- rounding bounds --------------------------------------------------------

def softmax_weights_bound(dtype, n_keys):
    """Bound on sum_k |p_k - round(p_k)| * |v_k| / max|v| when the softmax
    weights p (sum 1) are rounded to dtype: u * sum p_k for the relative
    part, plus half a subnormal step for each of n_keys weights that may be
    tiny."""
    return unit_roundoff(dtype) + n_keys * subnormal_step(dtype)


def logit_perturbation_bound(delta):
    """A perturbation of at most delta in every logit of a row changes each
    softmax weight by a factor in [e^-2delta, e^2delta], so the output by at
    most (e^(2 delta) - 1) * max|v|."""
    return float(np.expm1(2 * delta))


def max_abs_qk(b, q, k_cache_rows):
    """max over the batch of sum_d |q_d| |k_d| (for logit rounding bounds)."""
    return float((np.abs(q) @ np.abs(k_cache_rows).T).max())


def qk_abs_max(b, cache, q=None):
    q = (b.queries if q is None else q).astype(np.float64)
    c = cache.astype(np.float64)
    K = c[:, :, 0::2].reshape(-1, b.D)
    Q = q.reshape(-1, b.D)
    return float((np.abs(Q) @ np.abs(K).T).max())


def dtype_name(d):
    return str(ml_dtypes.finfo(d).dtype) if d != F32 else "float32"
