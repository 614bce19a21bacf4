"""rpa.transformers: rpa as the attention of Hugging Face transformers'
continuous batching on CPU (``generate_batch``, ``ContinuousBatchingManager``).

    import rpa.transformers
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation="sdpa")
    rpa.transformers.enable(model)          # registers NAME and selects it
    outputs = model.generate_batch(prompts, generation_config)

What it does, through transformers' own extension points: ``register()``
adds an attention function under ``NAME`` to ``AttentionInterface`` (and
the flash mask function under the same name to ``AttentionMaskInterface``);
``enable(model)`` checks that the model can use it and sets the model's
attention implementation to ``NAME``. Continuous batching then calls the
function per layer with the step's ``cu_seq_lens_q`` / ``cu_seq_lens_k``,
``read_index`` / ``write_index`` and its ``PagedAttentionCache``, and the
function runs rpa's op (``torch.ops.rpa.attention``) over transformers' own
cache tensor:

- rpa's fused write puts the new K/V into their slots: transformers'
  ``cache.update`` (``index_copy_`` into the cache, then an ``index_select``
  of every cached token of the layer) is not called; no K/V is repeated for
  the query groups and no mask is built.
- The cache is described by its blocks: transformers keeps one flat tensor
  holding, per block, each layer's K page then V page. For layer i the K
  view starts at that layer's K page of block 0 and the V view at its V
  page, both with page stride = the block stride, so block b is rpa's page
  b and a K page never overlaps a V page.
- The page table (and rpa's cu_q_lens / kv_lens) is derived once per step
  from the first row of each page in ``read_index`` (``write_index`` when
  the step reads no cache), and shared by all layers of the step.
- Padded sequences (q_len 0, which transformers makes when it pads the
  batch for compilation or graphs) are dropped from the call; rpa's
  contract keeps q_len >= 1. Padded query rows come back as zeros.
- Sinks (``s_aux``) and soft-capping are passed to rpa.

Quirks that transformers 5.23 forces, and why:

- The name contains "flash": continuous batching accepts only
  "paged|eager", "sdpa" or a name containing "flash".
- ``enable()`` sets ``model.config._attn_implementation`` itself instead of
  calling ``model.set_attn_implementation(NAME)`` or passing
  ``attn_implementation=NAME`` to ``from_pretrained``: for a name containing
  "flash" both go on to import flash-attn or fetch a hub kernel of that
  name, and fail. For the same reason ``transformers serve`` cannot select
  rpa (it passes its ``--attn-implementation`` to ``from_pretrained``).
- Sliding-window layers are refused (ValueError from ``enable``): their
  continuous-batching cache is a ring buffer (slot = position % window)
  in which a chunk's later tokens overwrite keys its earlier tokens still
  need, so the attention must read the cache before the write, which rpa's
  fused write does not do. Use "sdpa" for such models.
- CPU only; the CUDA/XPU decode fast path (``block_table``) never reaches
  it on CPU and is refused if it does.
"""
import weakref

import numpy as np
import torch

from . import torch as _rt

__all__ = ["NAME", "register", "enable", "attention_forward", "stats"]

NAME = "rpa_flash"

_op = torch.ops.rpa.attention.default

# Counters, for tests and benchmarks: layer calls, steps derived (one per
# step and cache allocator) and steps that held a chunk continuing a prefill.
stats = {"calls": 0, "steps": 0, "chunked_steps": 0}

# Per cache allocator: the derived step (page table, lengths) and the
# per-layer cache views. Weak keys: nothing outlives transformers' cache.
_steps = weakref.WeakKeyDictionary()
_views = weakref.WeakKeyDictionary()


def register():
    """Registers NAME with transformers' AttentionInterface and
    AttentionMaskInterface (idempotent). Returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import (AttentionMaskInterface,
                                            flash_attention_mask)
    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, flash_attention_mask)
    return NAME


def enable(model):
    """Registers NAME and makes it the attention implementation of model
    (a transformers PreTrainedModel on CPU), for continuous batching.
    Raises ValueError when the model cannot use it (device, sliding-window
    layers), naming why."""
    register()
    device = getattr(model, "device", None)
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"rpa.transformers: the model is on {device}; rpa "
                         "runs on CPU tensors")
    config = model.config.get_text_config()
    from transformers.generation.continuous_batching.cache import (
        group_layers_by_attn_type)
    groups = group_layers_by_attn_type(config)
    if set(groups) != {"full_attention"}:
        raise ValueError(
            "rpa.transformers: the model has sliding-window layers "
            f"({sorted(groups)}); transformers' continuous batching keeps "
            "them in a ring buffer whose new tokens overwrite keys that "
            "earlier tokens of the same chunk still need, so rpa's fused KV "
            "write cannot serve them: use attn_implementation='sdpa'")
    if not getattr(model, "_supports_attention_backend", True):
        raise ValueError(f"rpa.transformers: {type(model).__name__} does not "
                         "dispatch its attention through AttentionInterface")
    # Not model.set_attn_implementation(NAME): for a name containing
    # "flash" it imports flash-attn or fetches a hub kernel (see above).
    model.config._attn_implementation = NAME
    return model


class _Step:
    """rpa's batch metadata of one step of one cache allocator."""
    __slots__ = ("key", "cu_q_lens", "kv_lens", "page_indices")


def _derive_step(allocator, cu_q, cu_k, read_index, write_index):
    # In NumPy over zero-copy views of the step's (small, CPU) index
    # tensors: the same arithmetic in torch is ~35 small ops at a few us
    # each, which showed in short steps.
    ps = allocator.tokens_per_page
    bps = allocator.block_physical_stride
    cu_q = cu_q.numpy().astype(np.int64)
    cu_k = cu_k.numpy().astype(np.int64)
    q_lens = cu_q[1:] - cu_q[:-1]
    kv_lens = cu_k[1:] - cu_k[:-1]
    if read_index.numel():
        src, starts = read_index.numpy(), cu_k[:-1]
    else:  # no cache read this step: every sequence starts at 0, q = kv
        src, starts = write_index.numpy(), cu_q[:-1]
    keep = q_lens > 0  # padded sequences (q_len 0) are left out
    if not keep.all():
        q_lens, kv_lens, starts = q_lens[keep], kv_lens[keep], starts[keep]
    stats["steps"] += 1
    if ((q_lens > 1) & (kv_lens > q_lens)).any():
        stats["chunked_steps"] += 1
    s = _Step()
    cu = np.zeros(q_lens.size + 1, dtype=np.int32)
    cu[1:] = np.cumsum(q_lens)
    s.cu_q_lens = torch.from_numpy(cu)
    s.kv_lens = torch.from_numpy(kv_lens.astype(np.int32))
    pps = max(int(kv_lens.max() + ps - 1) // ps if kv_lens.size else 1, 1)
    offs = np.arange(pps, dtype=np.int64) * ps
    used = offs[None, :] < kv_lens[:, None]
    rows = np.where(used, starts[:, None] + offs[None, :], 0)
    pages = np.where(used, src[rows] // bps, 0)
    s.page_indices = torch.from_numpy(
        np.ascontiguousarray(pages, dtype=np.int32).reshape(-1))
    return s


def _step_for(allocator, kwargs):
    """The step's metadata, derived by the first layer that asks and reused
    by the others: the step's index tensors are the same objects for every
    layer, and are kept referenced so their identity cannot be reused."""
    cu_q = kwargs["cu_seq_lens_q"]
    cu_k = kwargs["cu_seq_lens_k"]
    if isinstance(cu_k, dict):
        cu_k = cu_k[allocator.layer_type]
    read = kwargs["read_index"][allocator.index]
    write = kwargs["write_index"][allocator.index]
    s = _steps.get(allocator)
    if s is not None:
        k = s.key
        if k[0] is cu_q and k[1] is cu_k and k[2] is read and k[3] is write:
            return s
    s = _derive_step(allocator, cu_q, cu_k, read, write)
    s.key = (cu_q, cu_k, read, write)
    _steps[allocator] = s
    return s


def _layer_view(allocator, layer_idx):
    """(cache tensor, cache_view) of one layer: K pages of layer i at rows
    2*i*ps + b*bps + s of the flat [rows, Hkv, D] cache, V pages ps rows
    further; page stride = the block stride."""
    per = _views.get(allocator)
    if per is None:
        per = _views[allocator] = {}
    v = per.get(layer_idx)
    if v is None:
        cache = allocator.cache_tensor  # [tokens, 2, Hkv, D], contiguous
        H, D = allocator.num_key_value_heads, allocator.head_dim
        ps, bps = allocator.tokens_per_page, allocator.block_physical_stride
        i = allocator.layer_indices.index(layer_idx)
        row = H * D
        num_pages = (cache.shape[0] * 2) // bps
        page = bps * row
        v = per[layer_idx] = (cache, [2 * i * ps * row, num_pages, ps, H, D,
                                      page, row, D,
                                      (2 * i + 1) * ps * row, D, page, row,
                                      D])
    return v


def attention_forward(module, query, key, value, attention_mask,
                      dropout=0.0, scaling=None, sliding_window=None,
                      softcap=None, s_aux=None, **kwargs):
    """The attention function registered as NAME: query [1, Hq, T, D], key
    and value [1, Hkv, T, D] (the new tokens, after RoPE), with the
    continuous-batching kwargs. Returns ([1, T, Hq, D], None)."""
    cache = kwargs.get("cache")
    if cache is None or not hasattr(cache, "layer_to_allocator"):
        raise ValueError(
            f"rpa.transformers: {NAME!r} serves transformers' continuous "
            "batching only (generate_batch, ContinuousBatchingManager): this "
            "call has no paged cache; use 'sdpa' for other generation")
    if kwargs.get("block_table") is not None:
        raise ValueError("rpa.transformers: the block-table decode path "
                         "(CUDA/XPU only) is not supported")
    if dropout:
        raise ValueError("rpa.transformers: dropout is not supported "
                         "(inference only)")
    layer_idx = module.layer_idx
    allocator = cache.layer_to_allocator[layer_idx]
    if allocator.layer_type != "full_attention":
        raise ValueError(
            f"rpa.transformers: layer {layer_idx} is a "
            f"{allocator.layer_type} layer, whose ring-buffer cache rpa's "
            "fused write cannot serve (see rpa.transformers.enable)")
    stats["calls"] += 1
    step = _step_for(allocator, kwargs)
    tensor, view = _layer_view(allocator, layer_idx)
    q = query[0].transpose(0, 1)
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    D = q.shape[-1]
    sm_scale = float(scaling) if scaling is not None else D ** -0.5
    sinks = None if s_aux is None else s_aux.detach().to(
        torch.float32).contiguous()
    out = _op(q, k, v, tensor, view, step.kv_lens, step.page_indices,
              step.cu_q_lens, sm_scale, None, sinks, 1.0, 1.0, 0.0,
              float(softcap) if softcap else 0.0, 0, True, True)
    return out.unsqueeze(0), None


