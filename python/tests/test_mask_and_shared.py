"""Tree masks (speculative decoding) through rpa.attention's ``mask``:
random trees of drafts against the float64 oracle (a dense visibility test
per pair) on every kernel set, and bad masks refused with the rule named.
Shared prefixes (``shared_len``/``shared_group``, cascade attention): the
same result as without them, and as the oracle; bad groups refused."""
import numpy as np
import pytest

import rpa
from _batches import BF16, F32, Batch, oracle
from test_api import check_close, vmax


def random_tree(rng, n):
    """[n, n] bool: token j hangs under a random earlier token (or starts a
    tree), and sees its ancestors and itself."""
    parent = [-1] + [int(rng.integers(-1, j)) for j in range(1, n)]
    m = np.zeros((n, n), bool)
    for j in range(n):
        k = j
        while k >= 0:
            m[j, k] = True
            k = parent[k]
    return m


@pytest.mark.parametrize("isa", rpa.kernel_sets())
@pytest.mark.parametrize("dtype", [F32, BF16])
def test_tree_masks_against_oracle(isa, dtype):
    rng = np.random.default_rng(31)
    seqs = [(1, 30), (9, 40), (24, 24), (5, 77), (17, 60)]
    b = Batch(rng, seqs, q_dtype=dtype, kv_dtype=dtype, num_q_heads=8,
              num_kv_heads=2, head_dim=64)
    masks = [None if q == 1 or i == 3 else random_tree(rng, q)
             for i, (q, _) in enumerate(seqs)]
    cache = b.kv_cache.copy()
    k_cache, v_cache = rpa.cache_views(cache)
    out = rpa.attention(b.queries, b.keys, b.values, k_cache, v_cache,
                        b.kv_lens, b.page_indices, b.cu_q_lens,
                        sm_scale=0.125, mask=masks, isa=isa)
    ref = oracle(b, b.expected_cache(), sm_scale=0.125, mask=masks)
    check_close(out[:b.num_tokens], ref, dtype, vmax(b, cache), "tree",
                weights_bf16=dtype == BF16)
    # and it differs from plain causal (the mask did something)
    plain = oracle(b, b.expected_cache(), sm_scale=0.125)
    assert np.abs(plain - ref).max() > 1e-3


def test_bad_masks():
    rng = np.random.default_rng(2)
    b = Batch(rng, [(4, 10), (3, 3)], q_dtype=F32, kv_dtype=F32)
    cache = b.kv_cache.copy()
    kc, vc = rpa.cache_views(cache)
    args = (b.queries, b.keys, b.values, kc, vc, b.kv_lens, b.page_indices,
            b.cu_q_lens)
    eye = [np.eye(4, dtype=bool), np.eye(3, dtype=bool)]
    rpa.attention(*args, mask=eye)  # the diagonal alone is fine
    later = [eye[0].copy(), eye[1]]
    later[0][1, 3] = True
    with pytest.raises(rpa.RPAError, match="new token 1 sees new token 3, "
                       "a later position") as e:
        rpa.attention(*args, mask=later)
    assert e.value.status_name == "RPA_INVALID_PARAMETER"
    no_self = [eye[0], eye[1].copy()]
    no_self[1][2, 2] = False
    with pytest.raises(rpa.RPAError, match="new token 2 does not see itself"):
        rpa.attention(*args, mask=no_self)
    with pytest.raises(ValueError, match=r"mask\[0\]: shape"):
        rpa.attention(*args, mask=[np.eye(3, dtype=bool), None])
    with pytest.raises(ValueError, match="1 entries for 2 sequences"):
        rpa.attention(*args, mask=[None])
    with pytest.raises(ValueError, match="dtype"):
        rpa.attention(*args, mask=[np.eye(4), None])
    with pytest.raises(rpa.RPAError, match="non-causal"):
        rpa.attention(*args, mask=eye, causal=False)


@pytest.mark.parametrize("isa", rpa.kernel_sets())
def test_shared_prefix_equals_plain_call(isa):
    """16 decodes sharing a 96-token prefix (their page tables point at the
    same pages), plus one sequence of no group: the same output as without
    the groups (to float32 rounding), and as the oracle."""
    rng = np.random.default_rng(8)
    seqs = [(1, 96 + 8 + 5 * i) for i in range(16)] + [(1, 50)]
    b = Batch(rng, seqs, q_dtype=F32, kv_dtype=BF16, num_q_heads=8,
              num_kv_heads=2, head_dim=64, page_size=8)
    pi = b.page_indices.reshape(len(seqs), -1)
    pi[1:16, :12] = pi[0, :12]  # 96 tokens = 12 pages
    b.page_indices = pi.reshape(-1)
    cache = b.kv_cache.copy()
    kc, vc = rpa.cache_views(cache)
    args = (b.queries, None, None, kc, vc, b.kv_lens, b.page_indices,
            b.cu_q_lens)
    groups = np.array([0] * 16 + [-1], np.int32)
    plain = rpa.attention(*args, update_kv_cache=False, sm_scale=0.1,
                          isa=isa)
    shared = rpa.attention(*args, update_kv_cache=False, sm_scale=0.1,
                           isa=isa, shared_len=np.array([96], np.int32),
                           shared_group=groups)
    assert np.abs(plain - shared).max() <= 2e-6
    ref = oracle(b, cache, sm_scale=0.1)
    check_close(shared[:b.num_tokens], ref, F32, vmax(b, cache), "shared")
    bad = b.page_indices.copy().reshape(len(seqs), -1)
    bad[3, 2] = bad[16, 0]
    with pytest.raises(rpa.RPAError, match="sequence 3's logical page 2"):
        rpa.attention(b.queries, None, None, kc, vc, b.kv_lens,
                      bad.reshape(-1), b.cu_q_lens, update_kv_cache=False,
                      shared_len=np.array([96], np.int32),
                      shared_group=groups)
    with pytest.raises(ValueError, match="both or neither"):
        rpa.attention(*args, update_kv_cache=False,
                      shared_len=np.array([96], np.int32))
