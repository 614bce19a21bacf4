"""Batches split for sharded calls: by heads (tensor parallel) and by keys
(context parallel), with the unsplit batch they came from.

A context-parallel batch keeps every sequence's keys and values by
position (the cached prefix and the new tokens), an unsplit cache holding
the prefix (rpa's usual call), and for each of N devices its own cache and
page table holding its slice [start, end) of every sequence at local
positions c - start. Only the cached positions are stored before the call;
the new tokens are written by the calls.
"""
import numpy as np

from _batches import F32


def normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(dtype)


def cut_points(rng, kv_len, n_dev, q_len, kind="random"):
    """N - 1 cuts in [0, kv_len] (equal cuts: an empty device), as N + 1
    bounds from 0 to kv_len. kind: "random" (anywhere), "in_new" (a cut
    among the new tokens), "empty_ends" (the first and last device empty),
    "one" (every key on one random device)."""
    if kind == "random":
        cuts = np.sort(rng.integers(0, kv_len + 1, n_dev - 1))
    elif kind == "in_new":
        first = kv_len - q_len
        lo = first + 1 if q_len > 1 else first
        cuts = np.sort(np.concatenate([
            rng.integers(lo, kv_len + 1, 1),
            rng.integers(0, kv_len + 1, n_dev - 2)]))
    elif kind == "empty_ends":
        inner = np.sort(rng.integers(0, kv_len + 1, n_dev - 3))
        cuts = np.concatenate([[0], inner, [kv_len]])
    elif kind == "one":
        d = int(rng.integers(0, n_dev))
        cuts = np.array([0] * d + [kv_len] * (n_dev - 1 - d))
    else:
        raise ValueError(kind)
    return np.concatenate([[0], cuts, [kv_len]]).astype(np.int32)


class CPBatch:
    """q_lens, kv_lens: per sequence; every device gets pages for its slice
    (capacity cap_tokens each); page tables are random permutations."""

    def __init__(self, rng, q_lens, kv_lens, n_dev, *, Hq=4, Hkv=2, D=32,
                 page_size=8, q_dtype=F32, kv_dtype=F32, pad_tokens=2,
                 cuts="random", cut_kinds=None):
        q_lens = np.asarray(q_lens, np.int32)
        kv_lens = np.asarray(kv_lens, np.int32)
        S = len(q_lens)
        self.S, self.n_dev, self.Hq, self.Hkv, self.D = S, n_dev, Hq, Hkv, D
        self.ps = ps = page_size
        self.q_lens, self.kv_lens = q_lens, kv_lens
        self.cu_q_lens = np.concatenate([[0], np.cumsum(q_lens)]).astype(
            np.int32)
        T = int(self.cu_q_lens[-1]) + pad_tokens
        self.T = T
        self.q_dtype, self.kv_dtype = q_dtype, kv_dtype
        # K/V by position, per sequence (cache dtype)
        self.keys = [normal(rng, (int(L), Hkv, D), kv_dtype) for L in kv_lens]
        self.vals = [normal(rng, (int(L), Hkv, D), kv_dtype) for L in kv_lens]
        self.q = normal(rng, (T, Hq, D), q_dtype)
        self.k = np.zeros((T, Hkv, D), kv_dtype)
        self.v = np.zeros((T, Hkv, D), kv_dtype)
        for i in range(S):
            a, n = int(kv_lens[i] - q_lens[i]), int(q_lens[i])
            r = self.cu_q_lens[i]
            self.k[r:r + n] = self.keys[i][a:]
            self.v[r:r + n] = self.vals[i][a:]
        # the unsplit cache
        pps = -(-int(kv_lens.max()) // ps)
        self.pps = pps
        P = S * pps + 1
        self.pages = rng.permutation(P)[:S * pps].astype(np.int32).reshape(
            S, pps)
        self.cache = normal(rng, (P, ps, 2 * Hkv, D), kv_dtype)  # garbage
        for i in range(S):
            a = int(kv_lens[i] - q_lens[i])
            self._store(self.cache, self.pages[i], 0, self.keys[i][:a],
                        self.vals[i][:a])
        # the slices: bounds[d] .. bounds[d + 1] per sequence
        kinds = cut_kinds or [cuts] * S
        self.bounds = np.stack([
            cut_points(rng, int(kv_lens[i]), n_dev, int(q_lens[i]), kinds[i])
            for i in range(S)])                      # [S, n_dev + 1]
        self.start = np.ascontiguousarray(self.bounds[:, :-1].T)  # [N, S]
        self.end = np.ascontiguousarray(self.bounds[:, 1:].T)
        longest = int((self.end - self.start).max())
        dpps = max(1, -(-longest // ps))
        self.dev_pps = dpps
        dP = S * dpps + 2
        self.dev_pages = np.stack([
            rng.permutation(dP)[:S * dpps].astype(np.int32).reshape(S, dpps)
            for _ in range(n_dev)])                   # [N, S, dpps]
        self.dev_cache = normal(rng, (n_dev, dP, ps, 2 * Hkv, D), kv_dtype)
        for d in range(n_dev):
            for i in range(S):
                s, e = int(self.start[d, i]), int(self.end[d, i])
                a = int(kv_lens[i] - q_lens[i])
                hi = min(e, a)  # cached positions of the slice
                if hi > s:
                    self._store(self.dev_cache[d], self.dev_pages[d, i], 0,
                                self.keys[i][s:hi], self.vals[i][s:hi])

    def _store(self, cache, page_row, local0, keys, vals):
        ps = self.ps
        for j in range(len(keys)):
            c = local0 + j
            cache[page_row[c // ps], c % ps, 0::2] = keys[j]
            cache[page_row[c // ps], c % ps, 1::2] = vals[j]

    def expected_dev_cache(self, d):
        """Device d's cache once the new tokens of its slice are written."""
        c = self.dev_cache[d].copy()
        for i in range(self.S):
            s, e = int(self.start[d, i]), int(self.end[d, i])
            a = int(self.kv_lens[i] - self.q_lens[i])
            lo = max(s, a)
            if e > lo:
                self._store(c, self.dev_pages[d, i], lo - s,
                            self.keys[i][lo:e], self.vals[i][lo:e])
        return c
