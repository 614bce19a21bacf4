"""rpa-generate's GGUF reader and dequantization against PyPI's `gguf`: a
synthetic file with every metadata value type, arrays, a non-default
alignment and tensors of each supported type; and tensors of the real
model. The engine reports what it read with --inspect and writes a
dequantized tensor with --dump-tensor."""
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import reference  # noqa: E402
from test_generate import engine_path  # noqa: E402

import gguf  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

T = gguf.GGMLQuantizationType


def engine(args):
    p = subprocess.run([engine_path()] + args, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p


def reader_view(path):
    """What gguf.GGUFReader reads, in --inspect's form."""
    r = gguf.GGUFReader(path)
    meta = []
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue  # the header, not metadata
        t = int(f.types[0])
        item = {"key": f.name, "type": t}
        def val(i, et):
            part = f.parts[i]
            if et == gguf.GGUFValueType.STRING:
                return bytes(part).decode("utf-8")
            v = part[0].item()
            return bool(v) if et == gguf.GGUFValueType.BOOL else v
        if t == gguf.GGUFValueType.ARRAY:
            et = f.types[1]
            item.update(elem_type=int(et), count=len(f.data),
                        value=[val(i, et) for i in f.data])
        else:
            item["value"] = val(f.data[0], f.types[0])
        meta.append(item)
    tensors = [{"name": t.name, "type": int(t.tensor_type),
                "dims": [int(d) for d in t.shape],
                "offset": int(t.data_offset) - int(r.data_offset),
                "nbytes": int(t.n_bytes)} for t in r.tensors]
    return meta, tensors


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return np.float64(a) == np.float64(b) or (np.float32(a) == np.float32(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def check_inspect(path, tmp_path):
    out = tmp_path / "inspect.json"
    engine(["--model", str(path), "--inspect", "--json", str(out)])
    got = json.loads(out.read_text(encoding="utf-8"))
    meta, tensors = reader_view(str(path))
    assert [m["key"] for m in got["metadata"]] == [m["key"] for m in meta]
    for g, m in zip(got["metadata"], meta):
        assert g["type"] == m["type"], m["key"]
        assert same(g["value"], m["value"]), (m["key"], g["value"], m["value"])
        if "count" in m:
            assert g["count"] == m["count"] and g["elem_type"] == m["elem_type"]
    assert len(got["tensors"]) == len(tensors)
    for g, t in zip(got["tensors"], tensors):
        assert g["name"] == t["name"] and g["type"] == t["type"]
        assert g["dims"] == t["dims"] and g["nbytes"] == t["nbytes"]
        assert g["offset"] == t["offset"]
    assert got["alignment"] == gguf.GGUFReader(str(path)).alignment
    return got


def check_dequant(path, name, tmp_path):
    out = tmp_path / "t.bin"
    engine(["--model", str(path), "--dump-tensor", name, str(out)])
    r = gguf.GGUFReader(str(path))
    t = next(t for t in r.tensors if t.name == name)
    want = dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
    got = np.fromfile(out, dtype="<f4")
    assert got.tobytes() == want.tobytes(), name  # bitwise


def test_synthetic_file_every_type(tmp_path):
    path = tmp_path / "synthetic.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 250)
    w.add_int8("t.i8", -120)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -32000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 1 / 3)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo, wörld ✓")
    w.add_array("t.arr_int", [1, -2, 3])
    w.add_array("t.arr_float", [0.5, -1.25])
    w.add_array("t.arr_str", ["a", "", "ünï"])
    w.add_array("t.arr_bool", [True, False])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    w.add_tensor("f32", x)
    w.add_tensor("f16", rng.standard_normal((2, 64)).astype(np.float16))
    for name, q in (("q8_0", T.Q8_0), ("q4_1", T.Q4_1)):
        a = rng.standard_normal((4, 96)).astype(np.float32)
        w.add_tensor(name, quantize(a, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    got = check_inspect(path, tmp_path)
    assert got["alignment"] == 64
    for name in ("f32", "f16", "q8_0", "q4_1"):
        check_dequant(path, name, tmp_path)


def test_real_model_header_and_tensors(tmp_path):
    path = reference.model_path()
    got = check_inspect(path, tmp_path)
    assert got["version"] == 3 and got["alignment"] == 32
    assert len(got["tensors"]) == 272
    for name in ("blk.0.attn_q.weight", "blk.29.ffn_down.weight",
                 "output_norm.weight"):
        check_dequant(path, name, tmp_path)


def test_corrupted_headers_never_crash(tmp_path):
    """Random byte changes in the real file's header (metadata, string
    lengths, counts, tensor infos): the reader and the tokenizer either
    accept the file or exit with status 2 and a message, never a signal.
    The data section is left as a hole (a sparse file of the same size)."""
    path = reference.model_path()
    size = os.path.getsize(path)
    header_end = int(gguf.GGUFReader(path).data_offset)
    header = open(path, "rb").read(header_end)
    rng = np.random.default_rng(13)
    spots = [24, 200, 1000, 5000, header_end // 2, header_end - 2000,
             header_end - 100]
    f = tmp_path / "corrupt.gguf"
    outcomes = set()
    for trial in range(40):
        data = bytearray(header)
        for _ in range(int(rng.integers(1, 4))):
            at = int(spots[trial % len(spots)] + rng.integers(0, 64))
            data[at] = int(rng.integers(0, 256))
        with open(f, "wb") as out:
            out.write(data)
            out.truncate(size)
        mode = ["--inspect", "--json", str(tmp_path / "i.json")] if trial % 2 == 0 \
            else ["--tokenize", "--raw", "--prompt", "Hello, wörld 123"]
        p = subprocess.run([engine_path(), "--model", str(f)] + mode,
                           capture_output=True, text=True, errors="replace",
                           timeout=60)
        assert p.returncode in (0, 2), (trial, p.returncode, p.stderr[-500:])
        if p.returncode == 2:
            assert p.stderr.startswith("rpa-generate: "), p.stderr
        outcomes.add(p.returncode)
    assert outcomes == {0, 2}  # both kinds happened: the test reaches both
