"""Loading librpa and its C declarations (ctypes).

The structures below mirror include/rpa.h field for field; the C header is
the authority. Where the library is looked for, in order:

1. the file named by the environment variable RPA_LIBRARY;
2. librpa.so inside this package (what `pip install ./python` ships);
3. the repository's build/ directory (python/rpa/../../build/librpa.so), for
   use straight from a checkout after `cmake -S . -B build && cmake --build
   build`.

At load the library must match this file: rpa_version() must be
EXPECTED_VERSION and rpa_abi_struct_size() must give each structure's
ctypes size (check_abi), or the import fails with AbiMismatchError naming
what differs, rather than passing misshapen structures to C.
"""
import ctypes
import os
import threading

import ml_dtypes
import numpy as np

__all__ = ["lib", "library_path", "DTYPES", "dtype_code", "RpaTensor",
           "RpaKvCache", "RpaArgs", "RpaContextOptions", "RpaV3Options",
           "STATUS_NAMES", "context", "EXPECTED_VERSION", "MIRRORS",
           "AbiMismatchError", "check_abi"]

# The library version this package's declarations were written against
# (include/rpa.h's RPA_VERSION_*, CMakeLists.txt's project()).
EXPECTED_VERSION = "0.1.0"

_HERE = os.path.dirname(os.path.abspath(__file__))
_LIBNAME = "librpa.so"


def _candidates():
    env = os.environ.get("RPA_LIBRARY")
    if env:
        return [("RPA_LIBRARY", env)]
    return [
        ("package", os.path.join(_HERE, _LIBNAME)),
        ("repository build/", os.path.join(_HERE, "..", "..", "build", _LIBNAME)),
    ]


def load_first(candidates, missing, advice):
    """The first existing file of candidates [(where, path)], loaded with
    ctypes: (CDLL, absolute path); else ImportError: `missing`, every place
    looked at, then `advice`."""
    tried = []
    for where, path in candidates:
        if os.path.isfile(path):
            return ctypes.CDLL(os.path.abspath(path)), os.path.abspath(path)
        tried.append(f"{where}: {path}")
    raise ImportError(f"{missing} (looked at " + "; ".join(tried) + "). " +
                      advice)


lib, library_path = load_first(
    _candidates(), "rpa: cannot find librpa.so",
    "Install the package with `pip install ./python` from the repository, "
    "build the library with `cmake -S . -B build && cmake --build build`, "
    "or set RPA_LIBRARY to the library's path.")

# ---- dtypes ---------------------------------------------------------------

RPA_F32, RPA_BF16, RPA_F16, RPA_FP8_E4M3, RPA_FP8_E5M2 = range(5)

DTYPES = {
    np.dtype(np.float32): RPA_F32,
    np.dtype(ml_dtypes.bfloat16): RPA_BF16,
    np.dtype(np.float16): RPA_F16,
    np.dtype(ml_dtypes.float8_e4m3fn): RPA_FP8_E4M3,
    np.dtype(ml_dtypes.float8_e5m2): RPA_FP8_E5M2,
}


def dtype_code(name, dtype):
    code = DTYPES.get(np.dtype(dtype))
    if code is None:
        raise ValueError(
            f"{name}: dtype {np.dtype(dtype)} is not one of float32, bfloat16, "
            "float16, float8_e4m3fn, float8_e5m2 (use ml_dtypes for the "
            "narrow ones)")
    return code


# ---- structures (include/rpa.h) ------------------------------------------

_i32, _i64, _f32 = ctypes.c_int32, ctypes.c_int64, ctypes.c_float
_p = ctypes.c_void_p


class RpaTensor(ctypes.Structure):
    _fields_ = [("data", _p), ("dtype", ctypes.c_int),
                ("token_stride", _i64), ("head_stride", _i64)]


class RpaKvCache(ctypes.Structure):
    _fields_ = [("k", _p), ("v", _p), ("dtype", ctypes.c_int),
                ("num_pages", _i32), ("page_size", _i32),
                ("k_page_stride", _i64), ("k_slot_stride", _i64),
                ("k_head_stride", _i64),
                ("v_page_stride", _i64), ("v_slot_stride", _i64),
                ("v_head_stride", _i64)]


class RpaArgs(ctypes.Structure):
    _fields_ = [
        ("num_tokens", _i32), ("num_q_heads", _i32), ("num_kv_heads", _i32),
        ("head_dim", _i32), ("head_dim_v", _i32),
        ("q", RpaTensor), ("k", RpaTensor), ("v", RpaTensor),
        ("out", RpaTensor),
        ("lse", _p), ("lse_token_stride", _i64), ("lse_head_stride", _i64),
        ("cache", RpaKvCache),
        ("num_seqs", _i32), ("cu_q_lens", _p), ("kv_lens", _p),
        ("page_indices", _p), ("pages_per_seq", _i32), ("distribution", _p),
        ("q_scale", _f32), ("sm_scale", _f32), ("k_scale", _f32),
        ("v_scale", _f32), ("soft_cap", _f32),
        ("causal", _i32), ("sliding_window", _i32), ("sinks", _p),
        ("update_kv_cache", _i32),
        ("mask", _p), ("mask_offsets", _p), ("mask_bits", _i64),
        ("num_shared", _i32), ("shared_len", _p), ("shared_group", _p),
    ]


class RpaContextOptions(ctypes.Structure):
    _fields_ = [("num_threads", ctypes.c_int), ("isa", ctypes.c_char_p),
                ("log", ctypes.c_int), ("pin_threads", ctypes.c_int)]


class RpaV3Options(ctypes.Structure):
    _fields_ = [("sm_scale", _f32), ("sliding_window", _i32),
                ("soft_cap", _f32), ("q_scale", _f32), ("k_scale", _f32),
                ("v_scale", _f32), ("use_causal_mask", _i32),
                ("update_kv_cache", _i32), ("attention_sink", _p)]


class RpaAttnState(ctypes.Structure):
    _fields_ = [("out", RpaTensor), ("lse", _p), ("lse_token_stride", _i64),
                ("lse_head_stride", _i64)]


# Each mirror by its C name, as rpa_abi_struct_size() takes it.
MIRRORS = {
    "rpa_args": RpaArgs,
    "rpa_tensor": RpaTensor,
    "rpa_kv_cache": RpaKvCache,
    "rpa_context_options": RpaContextOptions,
    "rpa_v3_options": RpaV3Options,
    "rpa_attn_state": RpaAttnState,
}


class AbiMismatchError(ImportError):
    """The loaded librpa is not the one these declarations describe."""


def check_abi(handle, path, mirrors=None, expected_version=None):
    """Raises AbiMismatchError unless the library `handle` (loaded from
    `path`) reports `expected_version` (default EXPECTED_VERSION) and, for
    every C name -> ctypes.Structure in `mirrors` (default MIRRORS), the
    structure's ctypes size."""
    mirrors = MIRRORS if mirrors is None else mirrors
    expected = EXPECTED_VERSION if expected_version is None else expected_version
    hint = ("the Python package and the C library come from different "
            "versions of include/rpa.h: rebuild the library, or reinstall "
            "the package with `pip install ./python`")
    try:
        version_fn = handle.rpa_version
        size_fn = handle.rpa_abi_struct_size
    except AttributeError:
        raise AbiMismatchError(
            f"rpa: {path} has no rpa_version() or rpa_abi_struct_size() "
            f"(a build from before version {expected}); {hint}") from None
    version_fn.restype = ctypes.c_char_p
    version_fn.argtypes = []
    size_fn.restype = ctypes.c_size_t
    size_fn.argtypes = [ctypes.c_char_p]
    got = (version_fn() or b"").decode()
    if got != expected:
        raise AbiMismatchError(
            f"rpa: {path} is version {got!r}, this package expects "
            f"{expected!r}; {hint}")
    for name, mirror in mirrors.items():
        c_size = size_fn(name.encode())
        py_size = ctypes.sizeof(mirror)
        if c_size != py_size:
            c_text = (f"{c_size} bytes" if c_size else
                      "unknown (rpa_abi_struct_size() returned 0)")
            raise AbiMismatchError(
                f"rpa: struct {name} is {py_size} bytes in the package's "
                f"ctypes mirror ({mirror.__name__}) but {c_text} in {path}; "
                f"{hint}")


check_abi(lib, library_path)


_ctx_p = ctypes.c_void_p

lib.rpa_status_string.restype = ctypes.c_char_p
lib.rpa_status_string.argtypes = [ctypes.c_int]
lib.rpa_context_options_default.restype = RpaContextOptions
lib.rpa_context_options_default.argtypes = []
lib.rpa_context_create.restype = ctypes.c_int
lib.rpa_context_create.argtypes = [ctypes.POINTER(RpaContextOptions),
                                   ctypes.POINTER(_ctx_p)]
lib.rpa_context_destroy.restype = None
lib.rpa_context_destroy.argtypes = [_ctx_p]
lib.rpa_context_last_error.restype = ctypes.c_char_p
lib.rpa_context_last_error.argtypes = [_ctx_p]
lib.rpa_context_isa.restype = ctypes.c_char_p
lib.rpa_context_isa.argtypes = [_ctx_p]
lib.rpa_context_num_threads.restype = ctypes.c_int
lib.rpa_context_num_threads.argtypes = [_ctx_p]
lib.rpa_isa_available.restype = ctypes.c_int
lib.rpa_isa_available.argtypes = [ctypes.c_char_p]
lib.rpa_isa_name.restype = ctypes.c_char_p
lib.rpa_isa_name.argtypes = [ctypes.c_int]
lib.rpa_args_default.restype = RpaArgs
lib.rpa_args_default.argtypes = []
lib.rpa_attention.restype = ctypes.c_int
lib.rpa_attention.argtypes = [_ctx_p, ctypes.POINTER(RpaArgs)]
lib.rpa_validate.restype = ctypes.c_int
lib.rpa_validate.argtypes = [_ctx_p, ctypes.POINTER(RpaArgs)]
lib.rpa_merge_states.restype = ctypes.c_int
lib.rpa_merge_states.argtypes = [_ctx_p, _i32, _i32, _i32,
                                 ctypes.POINTER(RpaAttnState),
                                 ctypes.POINTER(RpaAttnState),
                                 ctypes.POINTER(RpaAttnState)]
lib.rpa_version_number.restype = ctypes.c_int
lib.rpa_version_number.argtypes = []

STATUS_NAMES = {
    0: "RPA_OK", 1: "RPA_NULL_POINTER", 2: "RPA_INVALID_SHAPE",
    3: "RPA_INVALID_DTYPE", 4: "RPA_INVALID_STRIDE", 5: "RPA_INVALID_LENGTHS",
    6: "RPA_INVALID_PAGES", 7: "RPA_INVALID_PARAMETER",
    8: "RPA_INVALID_DISTRIBUTION", 9: "RPA_OVERLAP", 10: "RPA_OVERFLOW",
    11: "RPA_OUT_OF_MEMORY", 12: "RPA_UNSUPPORTED",
}


# ---- contexts: one per thread and per (num_threads, isa) ------------------

class _Context:
    """Owns one rpa_context; destroyed with the object."""

    def __init__(self, num_threads, isa):
        opts = lib.rpa_context_options_default()
        opts.num_threads = int(num_threads)
        self._isa = isa.encode() if isa else None  # keep alive for the call
        opts.isa = self._isa
        handle = _ctx_p()
        st = lib.rpa_context_create(ctypes.byref(opts), ctypes.byref(handle))
        if st != 0:
            msg = lib.rpa_status_string(st).decode()
            what = f"kernel set {isa!r}" if isa else "the context"
            raise ValueError(f"rpa_context_create: {msg} ({what}, "
                             f"num_threads={num_threads})")
        self.handle = handle
        self._destroy = lib.rpa_context_destroy

    def __del__(self):
        h = getattr(self, "handle", None)
        if h:
            self._destroy(h)
            self.handle = None


_local = threading.local()


def context(num_threads=None, isa=None):
    """The calling thread's context for these options (created on first use).

    A context serves one thread at a time (it holds scratch memory and the
    last error message), so each Python thread gets its own; they are freed
    when the thread's storage is collected."""
    n = 0 if num_threads is None else int(num_threads)
    if n < 0:
        raise ValueError(f"num_threads: {num_threads} is negative")
    cache = getattr(_local, "contexts", None)
    if cache is None:
        cache = _local.contexts = {}
    key = (n, isa or "")
    ctx = cache.get(key)
    if ctx is None:
        ctx = cache[key] = _Context(n, isa)
    return ctx
