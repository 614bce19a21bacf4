"""Context parallelism: one device's share of the keys, as a state to merge.

An engine that splits a long sequence's keys across devices gives each
device a contiguous slice ``[start_i, end_i)`` of every sequence ``i``'s
positions, held in that device's own pages (local position ``c - start_i``
in its page table). Every device computes, for every query row, the
attention over the keys of its slice that the row may see, as a partial
state (float32 out, lse); merging the devices' states (``rpa.merge_states``;
in JAX ``rpa.jax.merge_across`` inside shard_map, or ``rpa.jax.merge_states``
after a gather) gives the attention over all keys, to float32 rounding. The slices of a sequence must partition
``[0, kv_len_i)``; a slice may be empty (``start == end``).

rpa's contract puts a sequence's new tokens at the end of its keys, so a
slice that holds earlier keys cannot be given the queries as they are. Per
device and sequence, with query positions ``p`` in ``[kv_len - q_len,
kv_len)``, each query row is one of three kinds:

- **own** (``start <= p < end``): the row's own position lies in the slice.
  Such rows are the last positions of the slice, so one ordinary causal
  call over the slice (kv_len ``end - start``, these rows as the new tokens)
  gives them exactly the causal mask and sliding window, and writes their
  K/V into the slice's pages.
- **later** (``p >= end``): the row sees every key of the slice causally,
  and with a sliding window ``W`` those from ``max(start, p - W + 1)`` on.
  Each such row is a one-token sequence over exactly those keys (a one-token
  sequence sees all its keys) in a second, read-only (KV-share) call. With a
  window its first key need not start a page, so that call reads the cache
  through a page-size-1 view of the same buffer (page id ``page * page_size
  + slot``; no copy) and a per-row table of at most ``W`` entries. (NumPy
  passes only the later rows; JAX, with static shapes, passes every row,
  the others as one-key stand-ins whose results are dropped.)
- **none** (``p < start``, or a window that ends before the slice): no key
  of the slice is visible: the empty state, out 0 and lse ``-inf``, the
  identity of the merge.

Attention sinks join the softmax denominator once, not once per device:
pass them to the merge (a sink is a key of logit ``sinks[h]`` whose value
row is zero), not to the devices' calls.

``_plan`` computes both calls' arguments with NumPy or jax.numpy (``xp``),
so rpa.jax.shard_attention builds them under jit from traced lengths.
"""
import numpy as np

from . import _api

__all__ = ["shard_attention", "merge_sinks"]


def _partition(xp, first):
    """A stable partition, the True entries of the bool vector first:
    (src, dst), src[r] the entry at place r, dst[i] the place of entry i
    (cumsums and a scatter, no sort)."""
    n = first.shape[0]
    i32 = xp.int32
    dst = xp.where(first, xp.cumsum(first) - 1,
                   xp.sum(first) + xp.cumsum(~first) - 1).astype(i32)
    every = xp.arange(n, dtype=i32)
    if xp is np:
        src = np.empty(n, np.int32)
        src[dst] = every
    else:
        src = xp.zeros(n, i32).at[dst].set(every, unique_indices=True)
    return src, dst


def _count_le(xp, bounds, x):
    """For each x, how many of the non-decreasing bounds are <= it
    (searchsorted, side "right"; jax.numpy's compare_all method compiles
    faster than its default loop)."""
    if xp is np:
        return np.searchsorted(bounds, x, side="right")
    return xp.searchsorted(bounds, x, side="right", method="compare_all")


def _taker(xp):
    """a[idx] for indices known to be in bounds (jax.numpy: without the
    wrap-around of negative indices and the clamping, which cost compile
    time)."""
    if xp is np:
        return lambda a, idx: a[idx]
    return lambda a, idx: a.at[idx].get(mode="promise_in_bounds",
                                        wrap_negative_indices=False)


def _plan(xp, T, kv_lens, cu_q_lens, n_seqs, start, end, page_indices,
          page_size, window):
    """The own and later calls of one device, from int32 arrays: kv_lens,
    start, end [S], cu_q_lens [S + 1], page_indices [S, pps]; n_seqs the
    number of computed sequences (distribution[2] or S); window None or
    W > 0. Returns a dict of index arrays (int32, and bool row kinds)."""
    S = kv_lens.shape[0]
    pps = page_indices.shape[1]
    i32 = xp.int32
    take = _taker(xp)
    n_seqs = xp.clip(n_seqs, 0, S)
    rows = xp.arange(T, dtype=i32)
    computed = xp.arange(S, dtype=i32) < n_seqs
    # cu_q_lens held at cu[n_seqs] past the computed sequences: q_len 0
    cu = take(cu_q_lens, xp.minimum(xp.arange(S + 1, dtype=i32), n_seqs))
    q_len = cu[1:] - cu[:-1]
    first_pos = kv_lens - q_len
    s = xp.where(computed, start, 0)
    e = xp.where(computed, end, 0)

    # per query row: its sequence, position and kind on this device
    sid = xp.minimum(_count_le(xp, cu[1:], rows), S - 1).astype(i32)
    valid = rows < cu[S]
    pos = take(kv_lens - cu[1:], sid) + rows
    s_r, e_r = take(s, sid), take(e, sid)
    own = valid & (s_r <= pos) & (pos < e_r)
    lo = s_r if window is None else xp.maximum(s_r, pos - window + 1)
    later = valid & (pos >= e_r) & (lo < e_r)

    # own call: the sequences with own rows first (distribution (0, 0, n)),
    # each with kv_len end - start and its own rows as the new tokens
    own_from = xp.maximum(s, first_pos)
    n_own = xp.where(computed, xp.maximum(e - own_from, 0), 0)
    order, rank = _partition(xp, n_own > 0)
    cu_own = xp.concatenate([xp.zeros(1, i32),
                             xp.cumsum(take(n_own, order)).astype(i32)])
    num_own = xp.sum(n_own > 0).astype(i32)
    first_row = cu[:-1] + own_from - first_pos
    j = xp.minimum(_count_le(xp, cu_own[1:], rows), S - 1)
    own_src = xp.clip(take(take(first_row, order) - cu_own[:-1], j) + rows,
                      0, T - 1)
    own_dst = xp.clip(take(take(cu_own, rank) - first_row, sid) + rows,
                      0, T - 1)

    # later call: every row a one-token sequence (cu_q_lens 0, 1, ..., T):
    # a later row over the keys of the slice it sees, any other row a
    # stand-in of one key at page 0 (computed and dropped: cheaper than
    # compacting the later rows)
    later_kv = xp.where(later, e_r - lo, 1)
    if window is None:
        later_pages = xp.where(later[:, None], take(page_indices, sid), 0)
    else:
        width = min(int(window), pps * page_size)
        x = (lo - s_r)[:, None] + xp.arange(width, dtype=i32)
        x = xp.clip(x, 0, pps * page_size - 1)
        later_pages = xp.where(
            later[:, None],
            take(page_indices.reshape(-1), sid[:, None] * pps +
                 x // page_size) * page_size + x % page_size, 0)
    return dict(
        own=own, later=later,
        own_src=own_src.astype(i32), own_dst=own_dst.astype(i32),
        own_kv_lens=take(e - s, order).astype(i32),
        own_pages=take(page_indices, order),
        own_cu=cu_own,
        own_dist=xp.stack([xp.zeros((), i32), xp.zeros((), i32), num_own]),
        later_kv_lens=later_kv.astype(i32),
        later_pages=later_pages.astype(i32),
        later_cu=xp.arange(T + 1, dtype=i32))


def _token_view(name, cache):
    """[P, ps, H, D] -> [P * ps, 1, H, D], the same memory (page id: page *
    ps + slot); needs the pages to be consecutive slots."""
    P, ps = cache.shape[:2]
    sp, ss = cache.strides[:2]
    if sp != ps * ss:
        raise ValueError(
            f"{name}: a sliding window across slices reads the cache "
            f"through a page-size-1 view, which needs each page to be "
            f"page_size consecutive slots (page stride {sp} bytes, slot "
            f"stride {ss}): the combined and vLLM layouts are")
    # through unsigned integers of the same size: as_strided goes through
    # the array interface, which has no name for the fp8 dtypes
    raw = cache.view(np.dtype(f"u{cache.dtype.itemsize}"))
    return np.lib.stride_tricks.as_strided(
        raw, (P * ps, 1) + cache.shape[2:],
        (ss, ss) + cache.strides[2:]).view(cache.dtype)


def shard_attention(q, k, v, k_cache, v_cache, kv_lens, page_indices,
                    cu_q_lens, shard_start, shard_end, *, distribution=None,
                    sm_scale=1.0, sliding_window=None, soft_cap=None,
                    q_scale=None, k_scale=None, v_scale=None,
                    update_kv_cache=True, head_dim_v=None, num_threads=None,
                    isa=None):
    """This device's partial attention state over its slice of the keys:
    returns (out float32 [T, Hq, Dv], lse float32 [T, Hq]), to merge with
    the other devices' (rpa.merge_states) into the attention over every key.

    q [T, Hq, D], k, v [T, Hkv, D|Dv]: every query row and new token of the
    batch (the same on every device); kv_lens [S], cu_q_lens [S + 1],
    distribution: the whole batch's, as for rpa.attention. k_cache,
    v_cache: this device's cache (views as for rpa.attention; v_cache None:
    latent); page_indices [S, pps] (or flat): this device's page table,
    where position c of sequence i sits at local position c -
    shard_start[i]; shard_start, shard_end [S] int32: the positions
    [start, end) of each sequence this device holds (start == end: none).

    With update_kv_cache the new tokens whose positions lie in this slice
    are written into its pages (k, v may be None otherwise). The sliding
    window, soft cap and scales are the whole call's; sinks are not taken
    here: merge them once (merge_sinks). See the module's docstring for
    how each row is computed.
    """
    q = np.asarray(q)
    T, Hq = q.shape[0], q.shape[1]
    kv_lens = _api._int32("kv_lens", kv_lens)
    S = kv_lens.shape[0]
    cu_q_lens = _api._int32("cu_q_lens", cu_q_lens)
    pages = np.asarray(page_indices)
    pages = _api._int32("page_indices", pages, pages.ndim)
    if S and pages.size % S:
        raise ValueError(f"page_indices: {pages.size} entries are not a "
                         f"multiple of the {S} sequences")
    pages = pages.reshape(S, -1) if S else pages.reshape(0, 0)
    start = _api._int32("shard_start", shard_start)
    end = _api._int32("shard_end", shard_end)
    for name, x, n in (("cu_q_lens", cu_q_lens, S + 1),
                       ("shard_start", start, S), ("shard_end", end, S)):
        if x.shape[0] != n:
            raise ValueError(f"{name}: {x.shape[0]} entries, expected {n}")
    n_seqs = S if distribution is None else int(np.asarray(distribution)[2])
    if not 0 <= n_seqs <= S:
        raise ValueError(f"distribution: {n_seqs} sequences computed of {S}")
    ps = int(k_cache.shape[1])
    cap = pages.shape[1] * ps
    for i in range(n_seqs):
        if not 0 <= start[i] <= end[i] <= kv_lens[i] or end[i] - start[i] > cap:
            raise ValueError(
                f"sequence {i}: slice [{start[i]}, {end[i]}) of kv_len "
                f"{kv_lens[i]} is not 0 <= start <= end <= kv_len with at "
                f"most {cap} positions (the page table's)")
    window = _api._window(sliding_window) or None
    if window is not None:  # the later rows' page-size-1 view of the cache
        views = (_token_view("k_cache", k_cache),
                 None if v_cache is None else _token_view("v_cache", v_cache))
    Dv = head_dim_v or (v_cache.shape[3] if v_cache is not None
                        else q.shape[2])
    out = np.zeros((T, Hq, Dv), np.float32)
    lse = np.full((T, Hq), -np.inf, np.float32)
    if n_seqs == 0:
        return out, lse
    p = _plan(np, T, kv_lens, cu_q_lens, n_seqs, start, end, pages, ps,
              window)
    common = dict(sm_scale=sm_scale, soft_cap=soft_cap, q_scale=q_scale,
                  k_scale=k_scale, v_scale=v_scale, out_dtype=np.float32,
                  head_dim_v=head_dim_v, return_lse=True,
                  num_threads=num_threads, isa=isa)
    src = p["own_src"]
    num = int(p["own_dist"][2])
    if num:
        n_rows = int(p["own_cu"][num])
        kk = vv = None
        if update_kv_cache:
            kk = np.asarray(k)[src]
            vv = None if v_cache is None else np.asarray(v)[src]
        o, l = _api.attention(
            q[src], kk, vv, k_cache, v_cache, p["own_kv_lens"][:num],
            np.ascontiguousarray(p["own_pages"][:num]), p["own_cu"][:num + 1],
            sliding_window=sliding_window, update_kv_cache=update_kv_cache,
            **common)
        own = p["own"]
        out[own] = o[:n_rows][p["own_dst"][own]]
        lse[own] = l[:n_rows][p["own_dst"][own]]

    sel = np.flatnonzero(p["later"])
    if sel.size:  # NumPy compacts: only the later rows
        n = sel.size
        kc, vc = (k_cache, v_cache) if window is None else views
        o, l = _api.attention(
            q[sel], None, None, kc, vc, p["later_kv_lens"][sel],
            np.ascontiguousarray(p["later_pages"][sel]),
            np.arange(n + 1, dtype=np.int32), update_kv_cache=False,
            **common)
        out[sel] = o
        lse[sel] = l
    return out, lse


def merge_sinks(out, lse, sinks, *, out_dtype=None):
    """Merges attention sinks [Hq] (float32 logits) into a merged state
    (out [T, Hq, Dv], lse [T, Hq]): a sink is one more key, of logit
    sinks[h] and a zero value row, so it is merged once, after the slices.
    Returns (out, lse) as rpa.merge_states does."""
    out = np.asarray(out)
    sinks = np.asarray(sinks, np.float32)
    T, Hq = out.shape[0], out.shape[1]
    if sinks.shape != (Hq,):
        raise ValueError(f"sinks: shape {sinks.shape}, expected {(Hq,)}")
    zero = np.zeros(out.shape, out.dtype)
    return _api.merge_states(out, lse, zero,
                             np.broadcast_to(sinks, (T, Hq)).copy(),
                             out_dtype=out_dtype)
