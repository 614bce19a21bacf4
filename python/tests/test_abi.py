"""The load-time check that the library matches the package's ctypes
declarations: the sizes agree for this build, and the check refuses a
library whose version or structure sizes differ (a mismatched build must be
an import error, not memory corruption)."""
import ctypes
import os
import re

import pytest

import rpa
from rpa import _lib

STRUCTS = ["rpa_args", "rpa_tensor", "rpa_kv_cache", "rpa_context_options",
           "rpa_v3_options", "rpa_attn_state"]


def test_every_public_struct_has_a_mirror():
    assert sorted(_lib.MIRRORS) == sorted(STRUCTS)


@pytest.mark.parametrize("name", STRUCTS)
def test_mirror_size_matches_library(name):
    c_size = _lib.lib.rpa_abi_struct_size(name.encode())
    assert c_size > 0, f"library does not know {name}"
    assert ctypes.sizeof(_lib.MIRRORS[name]) == c_size


def test_unknown_struct_is_size_zero():
    assert _lib.lib.rpa_abi_struct_size(b"rpa_no_such_struct") == 0
    assert _lib.lib.rpa_abi_struct_size(None) == 0


def test_versions_agree():
    version = _lib.lib.rpa_version().decode()
    assert version == _lib.EXPECTED_VERSION == rpa.__version__
    major, minor, patch = (int(x) for x in version.split("."))
    assert _lib.lib.rpa_version_number() == major * 10000 + minor * 100 + patch
    pyproject = os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")
    if os.path.exists(pyproject):
        with open(pyproject) as f:
            m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
        assert m and m.group(1) == version


def test_check_passes_on_this_build():
    _lib.check_abi(_lib.lib, _lib.library_path)


def test_check_refuses_a_wrong_struct_size():
    class ShortArgs(ctypes.Structure):  # rpa_args without its last field
        _fields_ = _lib.RpaArgs._fields_[:-1]

    real = _lib.lib.rpa_abi_struct_size(b"rpa_args")
    wrong = ctypes.sizeof(ShortArgs)
    assert wrong != real
    mirrors = dict(_lib.MIRRORS, rpa_args=ShortArgs)
    with pytest.raises(ImportError) as e:
        _lib.check_abi(_lib.lib, "librpa-under-test", mirrors=mirrors)
    msg = str(e.value)
    assert isinstance(e.value, _lib.AbiMismatchError)
    assert "rpa_args" in msg and f"{wrong} bytes" in msg and f"{real} bytes" in msg


def test_check_refuses_a_struct_the_library_does_not_know():
    class Extra(ctypes.Structure):
        _fields_ = [("x", ctypes.c_int)]

    with pytest.raises(_lib.AbiMismatchError, match="rpa_future_struct"):
        _lib.check_abi(_lib.lib, "librpa-under-test",
                       mirrors={"rpa_future_struct": Extra})


def test_check_refuses_another_version(monkeypatch):
    monkeypatch.setattr(_lib, "EXPECTED_VERSION", "99.0.0")
    with pytest.raises(_lib.AbiMismatchError, match="99.0.0"):
        _lib.check_abi(_lib.lib, "librpa-under-test")


def test_check_refuses_a_library_without_the_entry_points():
    class OldLibrary:  # a librpa from before rpa_version() existed
        pass

    with pytest.raises(_lib.AbiMismatchError, match="rpa_version"):
        _lib.check_abi(OldLibrary(), "old-librpa.so")
