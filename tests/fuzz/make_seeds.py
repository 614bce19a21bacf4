#!/usr/bin/env python3
"""Writes the seed corpus of the fuzzing harness (tests/fuzz/corpus/).

Each seed is one input in the byte layout described at the top of
tests/fuzz/fuzz_attention.c: a 32-byte header, 3 bytes per sequence, then
4 bytes per planted value. The seeds are chosen to start the fuzzer on every
entry point, layout, dtype, option and broken rule; the fuzzer mutates from
there. Run from anywhere: python3 tests/fuzz/make_seeds.py
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

DIM_TABLE = [1, 2, 3, 4, 5, 7, 8, 12, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64,
             65, 80, 96, 100, 127, 128, 129, 160]
PS_TABLE = [1, 2, 3, 4, 5, 7, 8, 11, 16, 32, 64, 13, 6, 24, 48, 64]
LAYOUTS = ["combined", "vllm", "nhd", "hnd", "separate", "latent"]
DTYPES = ["f32", "bf16", "f16", "e4m3", "e5m2"]
BREAKS = ["heads", "tokens", "head_dim", "head_dim_v", "q_dtype", "out_dtype",
          "cache_dtype", "k_dtype", "v_dtype", "num_seqs", "page_size",
          "num_pages", "pages_per_seq", "null", "sm_scale", "k_scale",
          "v_scale", "q_scale", "soft_cap", "window", "sinks", "dist_range",
          "dist_contra", "cu0", "qlen0", "cu_past_t", "kv_short", "pps_small",
          "page_range", "page_share", "neg_stride", "self_overlap",
          "kv_same_base", "alias", "overflow", "v3_null_cache", "huge_dims"]
WINDOWS = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 100]


def pick_dim(b):
    return DIM_TABLE[b % 26] if b < 208 else 1 + b % 160


def dim_byte(d):
    return DIM_TABLE.index(d)


def dimv_byte(dv):
    for b in range(0xA0, 0x100):
        if pick_dim((b * 7) & 0xFF) == dv:
            return b
    raise ValueError(dv)


def seq_record(q_len, prefix):
    if q_len == 1:
        r0 = 0
    elif q_len <= 24:
        r0 = 0x60 + ((q_len - 1 - 0x60 % 24) % 24)
    else:
        r0 = next(b for b in range(0xF0, 0x100) if 1 + b % 64 == q_len)
    if prefix < 48:
        r1, r2 = prefix, 0
    elif prefix < 512:
        r1, r2 = prefix & 255, 0x80 | (prefix >> 8)
    else:
        assert 1024 <= prefix < 1024 + 2048
        r1, r2 = (prefix - 1024) & 255, 0xE0 | ((prefix - 1024) >> 8)
    return bytes([r0, r1, r2])


def seed(seqs=((1, 10),), seed=1, v3=False, brk=None, brk_param=0, hkv=1,
         g=1, d=16, dv=None, q="f32", out="f32", cache="f32",
         layout="combined", pad=0, ps=4, pages=0, strides=0, pad_tokens=0,
         sm=0, kscale=0, vscale=0, qscale=None, cap=None, causal=1,
         window=0, update=True, update_neg=False, sinks=False, lse=False,
         lse_mode=0, dist=False, dist_short=False, sinks_ninf=False,
         specials=(), value_range=0, misc=0, isa=0, tree=0, shared=0):
    h = bytearray(32)
    h[0], h[1] = seed & 255, seed >> 8
    h[2] = 3 if v3 else 0
    h[3] = 0x80 + BREAKS.index(brk) if brk else 0
    h[4] = brk_param
    h[5] = len(seqs)
    h[6] = hkv - 1
    h[7] = g - 1
    h[8] = dim_byte(d)
    h[9] = 0 if dv is None else (1 if dv == "field" else dimv_byte(dv))
    h[10] = DTYPES.index(q)
    h[11] = DTYPES.index(out)
    h[12] = DTYPES.index(cache)
    h[13] = LAYOUTS.index(layout)
    h[14] = pad
    h[15] = PS_TABLE.index(ps)
    h[16] = pages
    h[17] = strides
    h[18] = pad_tokens
    h[19] = sm
    h[20] = kscale | (vscale << 3)
    h[21] = 0 if qscale is None else 0xA0 + qscale
    h[22] = 0 if cap is None else 0xA2 + cap  # 0xa2 % 6 == 0
    mode = {1: 0, 0: 2, 7: 3}[causal]
    h[23] = mode | (((40 + WINDOWS.index(window)) << 2) if window else 0)
    h[24] = ((0 if update else 1) | (2 if update_neg else 0) |
             (4 if sinks else 0) | (8 if lse else 0) | (lse_mode << 4) |
             (0x40 if dist else 0) | (0x80 if dist_short else 0))
    h[25] = 1 if sinks_ninf else 0
    h[26] = 0xC0 + len(specials) - 1 if specials else 0
    h[27] = value_range
    h[28] = misc
    h[29] = isa
    h[30] = tree
    h[31] = shared
    body = b"".join(seq_record(ql, pre) for ql, pre in seqs)
    tail = b"".join(bytes([t, k, p & 255, p >> 8]) for t, k, p in specials)
    return bytes(h) + body + tail


MIX = ((1, 37), (20, 0), (9, 55), (1, 0))
SEEDS = {
    "decode-f32": seed(),
    "mixed-bf16": seed(MIX, 2, hkv=2, g=4, d=64, q="bf16", cache="bf16",
                       ps=8, pages=0x23, pad_tokens=2),
    "vllm-fp8e4m3": seed(MIX, 3, hkv=2, g=2, d=32, q="f16", out="f16",
                         cache="e4m3", layout="vllm", ps=16, pad=0x15),
    "nhd-e5m2": seed(((3, 5), (1, 17)), 4, hkv=4, g=2, d=8, q="bf16",
                     out="bf16", cache="e5m2", layout="nhd", ps=3),
    "hnd-padded": seed(((7, 9), (2, 0)), 5, hkv=2, g=3, d=33, cache="f16",
                       layout="hnd", ps=5, pad=0x3F),
    "separate-dv": seed(((5, 12), (1, 40)), 6, hkv=2, d=24, dv=17,
                        q="f16", cache="bf16", layout="separate", ps=7,
                        pad=0x9E),
    "latent-mla": seed(((4, 20), (1, 33)), 7, hkv=1, g=8, d=80, dv=64,
                       q="bf16", out="bf16", cache="bf16", layout="latent",
                       ps=16),
    "decode-splits": seed(((1, 2100),), 8, d=8, cache="bf16", ps=64),
    "decode-splits-2": seed(((1, 1100), (1, 1500)), 9, d=4, g=2, ps=32),
    "qscale-e4m3": seed(MIX[:3], 10, hkv=1, g=4, d=32, q="bf16",
                        cache="e4m3", qscale=2, ps=8),
    "qscale-bf16": seed(MIX[:3], 11, d=16, q="f32", cache="bf16", qscale=0,
                        ps=4),
    "softcap-window": seed(((12, 30), (1, 40)), 12, hkv=2, g=2, d=16,
                           cap=2, window=8, ps=8, sm=1),
    "noncausal": seed(((6, 6), (3, 10)), 13, d=15, causal=0, ps=4),
    "causal-7": seed(((6, 6),), 14, d=7, causal=7, update_neg=True, ps=2),
    "sinks": seed(MIX, 15, hkv=2, g=2, d=16, sinks=True, sinks_ninf=True,
                  ps=8),
    "lse-strides": seed(MIX, 16, hkv=1, g=3, d=12, lse=True, lse_mode=1,
                        ps=8),
    "lse-strided-2": seed(((4, 3),), 17, g=2, d=5, lse=True, lse_mode=3,
                          pad_tokens=3, ps=1),
    "dist-short": seed(((1, 9), (1, 4), (8, 8), (8, 0), (3, 7)), 18, d=16,
                       dist=True, dist_short=True, ps=4),
    "dist-full": seed(((1, 9), (4, 4), (4, 8)), 19, d=16, dist=True, ps=4),
    "share-random": seed(MIX, 20, d=16, update=False, misc=0x20, ps=4),
    "share-valias": seed(MIX, 21, d=32, update=False, misc=0x40,
                         layout="hnd", ps=8),
    "share-null-kv": seed(MIX, 22, d=16, update=False, misc=0x08, ps=4),
    "share-junk-kv": seed(MIX, 23, d=16, update=False, misc=0x10,
                          layout="separate", ps=4),
    "v3-basic": seed(MIX, 24, v3=True, hkv=2, g=2, d=32, q="bf16",
                     cache="bf16", ps=8),
    "v3-null-opts": seed(((1, 5), (4, 0)), 25, v3=True, d=16, ps=4,
                         misc=0x01),
    "v3-scale0": seed(((2, 5),), 26, v3=True, d=16, ps=4, misc=0x06,
                      cap=1, sinks=True, qscale=5, cache="e4m3"),
    "empty-null": seed((), 27, pages=0x80, pad_tokens=3),
    "empty-pages": seed((), 28, pages=0x07, d=4),
    "padded-rows": seed(((3, 3), (2, 2)), 29, d=16, pad_tokens=4,
                        strides=0x55, ps=2),
    "broadcast-q": seed(((4, 4), (1, 9)), 30, d=16, g=2, strides=0x03,
                        ps=4),
    "head-major": seed(((4, 4), (1, 9)), 31, hkv=2, g=2, d=16,
                       strides=0xAA, ps=4),
    "share-prefix": seed(((1, 40), (5, 33), (1, 45)), 32, d=8, pages=0x40,
                         ps=8),
    "shuffled-pages": seed(MIX, 33, d=8, pages=0x3D, ps=4),
    "nan-cache": seed(MIX, 34, d=16, ps=8,
                      specials=((3, 0, 77), (3, 0, 901))),
    "inf-v": seed(MIX, 35, d=16, ps=8, layout="nhd",
                  specials=((2, 1, 5), (1, 2, 600), (0, 3, 31))),
    "odd-dims": seed(((3, 8), (1, 2)), 36, hkv=3, g=2, d=17, dv=33,
                     layout="separate", ps=3),
    "page-size-1": seed(((5, 6),), 37, d=3, ps=1),
    "page-size-64": seed(((17, 70), (1, 100)), 38, d=8, ps=64, cache="f16"),
    "wide-heads": seed(((2, 3),), 39, hkv=1, g=8, d=160, dv=128, ps=16),
    "tiny-range": seed(MIX, 40, d=16, value_range=3, cache="e4m3"),
    "brk-heads": seed(MIX, 41, brk="heads", brk_param=1, hkv=2, g=2),
    "brk-null": seed(MIX, 42, brk="null", brk_param=3),
    "brk-dist": seed(MIX, 43, brk="dist_contra", dist=True),
    "brk-page-share": seed(MIX, 44, brk="page_share", brk_param=9),
    "brk-page-share-ro": seed(MIX, 45, brk="page_share", brk_param=9,
                              update=False),
    "brk-neg-stride": seed(MIX, 46, brk="neg_stride", brk_param=5),
    "brk-alias": seed(MIX, 47, brk="alias", brk_param=3),
    "brk-overflow": seed(MIX, 48, brk="overflow", brk_param=1),
    "brk-v3-null-cache": seed(MIX, 49, v3=True, brk="v3_null_cache"),
    "brk-kv-short": seed(MIX, 50, brk="kv_short", brk_param=2),
    "brk-self-overlap": seed(MIX, 51, brk="self_overlap", g=2,
                             brk_param=0),
    "brk-kv-same-base": seed(MIX, 52, brk="kv_same_base"),
    "brk-sinks": seed(MIX, 53, brk="sinks", g=2, brk_param=0x81),
    "brk-window": seed(MIX, 54, brk="window", brk_param=2),
    "tree-masks": seed(((1, 30), (12, 20), (7, 0), (24, 9)), 59, hkv=2, g=2,
                       d=16, ps=4, tree=0x01),
    "tree-half-window": seed(((9, 40), (1, 5), (16, 16)), 60, d=16, ps=8,
                             window=7, tree=0x03),
    "tree-later": seed(((6, 3), (5, 5)), 61, d=8, ps=4, tree=0x05),
    "tree-no-self": seed(((6, 3),), 62, d=8, ps=4, tree=0x09),
    "shared-prefix-groups": seed(((1, 40), (1, 33), (1, 45), (3, 36),
                                  (1, 50)), 63, hkv=2, g=4, d=16,
                                 pages=0x40, ps=8, cache="bf16", shared=0x01),
    "shared-unaligned-two": seed(((1, 41), (1, 47), (1, 60), (1, 44)), 64,
                                 d=8, pages=0x40, ps=8, shared=0x0B,
                                 update=False),
    "shared-too-long": seed(((1, 16), (1, 24)), 65, d=8, pages=0x40, ps=8,
                            shared=0x05),
    # (seeds that crash belong in tests/fuzz/regressions/, not here)
    "brk-huge-dims": seed(MIX, 58, brk="huge_dims", brk_param=0x05),
    "brk-head-dim-v": seed(MIX, 55, brk="head_dim_v", layout="latent",
                           d=32, dv=16, brk_param=1),
}


def main():
    out = os.path.join(HERE, "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    total = sum(len(d) for d in SEEDS.values())
    print(f"make_seeds: {len(SEEDS)} seeds, {total} bytes in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
