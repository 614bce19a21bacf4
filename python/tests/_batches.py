"""Random ragged batches, the expected cache after the fused write, and a
float64 oracle of the contract (docs/contract.md), for the tests."""
import ml_dtypes
import numpy as np

F32 = np.dtype(np.float32)
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
E5M2 = np.dtype(ml_dtypes.float8_e5m2)
IO_DTYPES = [F32, BF16, F16]
KV_DTYPES = [F32, BF16, F16, E4M3, E5M2]


def unit_roundoff(dtype):
    """Half the distance from 1 to the next value: the relative error of one
    rounding to nearest (normal range)."""
    return float(ml_dtypes.finfo(dtype).eps) / 2


def rounds_weights(q_dtype, kv_dtype, q_scale=False):
    """Whether rpa may run these rows on vdpbf16ps, with the softmax weights
    rounded to bf16 before they meet V (upstream's reference rounds them to
    the value dtype too): q holds bf16 values (a bf16 q, or q quantized by
    q_scale) and the cache is bf16, or fp8 (decode)."""
    return (kv_dtype in (BF16, E4M3, E5M2) and
            (q_dtype == BF16 or bool(q_scale)))


def weights_slack(q_dtype, kv_dtype, vmax, q_scale=False):
    """rpa's own rounding beyond float32 (rounds_weights): each weight then
    carries 2^-9 relative error, so an output moves by at most
    2^-9 * max|v|; allowed twice that."""
    if rounds_weights(q_dtype, kv_dtype, q_scale):
        return 2.0 ** -8 * vmax
    return 0.0


def subnormal_step(dtype):
    """Half the smallest subnormal spacing: the absolute error floor of one
    rounding near zero."""
    return float(ml_dtypes.finfo(dtype).smallest_subnormal) / 2


def random_lengths(rng, num_decode, num_prefill, max_q=24, max_ctx=60):
    """(q_len, kv_len) pairs: decodes first, then prefill / mixed chunks."""
    seqs = []
    for _ in range(num_decode):
        seqs.append((1, int(rng.integers(1, max_ctx + 1))))
    for _ in range(num_prefill):
        q = int(rng.integers(2, max_q + 1))
        seqs.append((q, q + int(rng.integers(0, max_ctx + 1))))
    return seqs


class Batch:
    """A ragged batch over upstream's combined cache [P, ps, 2*Hkv, D]."""

    def __init__(self, rng, seqs, *, num_q_heads=4, num_kv_heads=2,
                 head_dim=32, page_size=8, q_dtype=F32, kv_dtype=F32,
                 pad_tokens=0, pad_seqs=0, spare_pages=3, value_scale=1.0,
                 pages_per_seq=None):
        self.seqs = list(seqs)
        S = len(seqs)
        self.Hq, self.Hkv, self.D, self.ps = (num_q_heads, num_kv_heads,
                                              head_dim, page_size)
        self.q_dtype, self.kv_dtype = np.dtype(q_dtype), np.dtype(kv_dtype)
        q_lens = [q for q, _ in seqs]
        kv = [k for _, k in seqs]
        self.num_seqs = S
        self.pages_per_seq = max([-(-k // page_size) for k in kv] + [1])
        if pages_per_seq is not None:
            assert pages_per_seq >= self.pages_per_seq
            self.pages_per_seq = pages_per_seq
        P = S * self.pages_per_seq + spare_pages
        self.num_pages = P
        T = sum(q_lens) + pad_tokens
        self.T = T
        max_seqs = S + pad_seqs
        cu = np.zeros(max_seqs + 1, np.int32)
        cu[1:S + 1] = np.cumsum(q_lens)
        cu[S + 1:] = cu[S]
        self.cu_q_lens = cu
        self.kv_lens = np.zeros(max_seqs, np.int32)
        self.kv_lens[:S] = kv
        # Distinct physical pages in a random order; unused entries point at
        # page 0 (valid, so that references which gather whole rows work).
        perm = rng.permutation(P).astype(np.int32)
        pi = np.zeros((max_seqs, self.pages_per_seq), np.int32)
        n = 0
        for i, k in enumerate(kv):
            used = -(-k // page_size)
            pi[i, :used] = perm[n:n + used]
            n += used
        self.page_indices = pi.reshape(-1)
        num_decode = 0
        while num_decode < S and q_lens[num_decode] == 1:
            num_decode += 1
        self.distribution = np.array([num_decode, num_decode, S], np.int32)
        g = lambda *shape: rng.standard_normal(shape).astype(np.float32)
        self.queries = g(T, self.Hq, self.D).astype(self.q_dtype)
        self.keys = g(T, self.Hkv, self.D).astype(self.kv_dtype)
        self.values = (g(T, self.Hkv, self.D) * value_scale).astype(
            self.kv_dtype)
        self.kv_cache = (g(P, page_size, 2 * self.Hkv, self.D) *
                         value_scale).astype(self.kv_dtype)

    @property
    def num_tokens(self):
        return int(self.cu_q_lens[self.num_seqs])

    def positions(self, i):
        q_len, kv_len = self.seqs[i]
        return kv_len - q_len + np.arange(q_len)

    def slot(self, i, pos):
        page = self.page_indices[i * self.pages_per_seq + pos // self.ps]
        return int(page), int(pos % self.ps)

    def expected_cache(self, cache=None):
        """The cache after the fused write (a new array)."""
        c = np.array(self.kv_cache if cache is None else cache, copy=True)
        for i in range(self.num_seqs):
            q0 = int(self.cu_q_lens[i])
            for j, pos in enumerate(self.positions(i)):
                p, s = self.slot(i, pos)
                c[p, s, 0:2 * self.Hkv:2] = self.keys[q0 + j]
                c[p, s, 1:2 * self.Hkv:2] = self.values[q0 + j]
        return c

    def call_args(self):
        return (self.queries, self.keys, self.values, self.kv_cache,
                self.kv_lens, self.page_indices, self.cu_q_lens,
                self.distribution)


def quantize_q(q, q_scale, kv_dtype):
    fi = ml_dtypes.finfo(kv_dtype)
    x = np.clip(q.astype(np.float32) / np.float32(q_scale), float(fi.min),
                float(fi.max))
    return x.astype(kv_dtype).astype(np.float64)


def oracle(b, cache, *, sm_scale=1.0, sliding_window=None, soft_cap=None,
           q_scale=None, k_scale=None, v_scale=None, causal=True, sinks=None,
           lse=False, mask=None):
    """Float64 oracle over a cache that already holds the new tokens.
    Returns out [num_tokens, Hq, D] (float64) and, with lse, [num_tokens,
    Hq]."""
    G = b.Hq // b.Hkv
    T = b.num_tokens
    out = np.zeros((T, b.Hq, b.D))
    lse_out = np.zeros((T, b.Hq))
    c = cache.astype(np.float64)
    scale = sm_scale * (k_scale or 1.0) * (q_scale or 1.0)
    for i in range(b.num_seqs):
        q_len, kv_len = b.seqs[i]
        q0 = int(b.cu_q_lens[i])
        pages = b.page_indices[i * b.pages_per_seq:(i + 1) * b.pages_per_seq]
        rows = c[pages].reshape(-1, 2 * b.Hkv, b.D)[:kv_len]
        K, V = rows[:, 0::2], rows[:, 1::2]  # [kv_len, Hkv, D]
        q = b.queries[q0:q0 + q_len]
        q = (quantize_q(q, q_scale, b.kv_dtype) if q_scale
             else q.astype(np.float64))
        for n in range(b.Hq):
            h = n // G
            s = q[:, n, :] @ K[:, h, :].T * scale  # [q_len, kv_len]
            if soft_cap:
                s = soft_cap * np.tanh(s / soft_cap)
            pos = b.positions(i)[:, None]
            col = np.arange(kv_len)[None, :]
            vis = np.ones_like(s, bool)
            if causal:
                vis = col <= pos
                if sliding_window:
                    vis &= pos - col < sliding_window
                if mask is not None and mask[i] is not None:
                    vis[:, kv_len - q_len:] &= mask[i]
            s = np.where(vis, s, -np.inf)
            m = s.max(axis=1, keepdims=True)
            if sinks is not None:
                m = np.maximum(m, sinks[n])
            p = np.exp(s - m)
            l = p.sum(axis=1, keepdims=True)
            if sinks is not None:
                l = l + np.exp(sinks[n] - m)
            out[q0:q0 + q_len, n] = (p @ V[:, h, :]) / l * (v_scale or 1.0)
            lse_out[q0:q0 + q_len, n] = (m + np.log(l))[:, 0]
    return (out, lse_out) if lse else out


def bits(a):
    """The bytes of an array, for bit-exact comparison (NaN-safe)."""
    return np.ascontiguousarray(a).view(np.uint8)
