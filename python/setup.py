"""Build hook: compiles librpa with CMake and ships it inside the package.

`pip install ./python` (from a checkout) runs CMake on the repository root
(the directory above this file), builds only the shared library target
`rpa` in setuptools' temporary build directory, and copies the library into
the wheel as rpa/librpa.so. Extra CMake arguments: RPA_CMAKE_ARGS.

rpa.jax's XLA FFI handler, librpa_jax.so, is built and shipped too when
jaxlib's FFI headers are found: $RPA_JAX_INCLUDE_DIR, else
jax.ffi.include_dir() of the Python running this build (an environment with
jax and `pip install --no-build-isolation ./python`).

rpa.torch's operator library, librpa_torch.so (python/ffi/rpa_torch_ops.cpp,
C++ on torch's headers), is built and shipped when torch is found:
$RPA_TORCH_PREFIX (torch's package directory, os.path.dirname(torch.__file__)),
else the torch that the Python running this build imports (again
`pip install --no-build-isolation ./python` in an environment with torch);
it needs a C++20 compiler ($CXX, else c++).

Without them the package installs without rpa.jax / rpa.torch. pip shows a
build's output only with -v, so what was built and why not is also written
into the package (rpa/_build_info.json): `python -m rpa` prints it and
`import rpa.jax` / `import rpa.torch` raise ImportError saying it. With
RPA_REQUIRE_JAX=1 or RPA_REQUIRE_TORCH=1 the install fails instead, with the
reason on pip's screen.

With --no-build-isolation pip installs no build requirements: the
environment needs setuptools >= 70.1 (or the `wheel` package); in a fresh
virtual environment `pip install "setuptools>=70.1"` first.

Where there is no source tree or no cmake, an already built library is
shipped instead: $RPA_LIBRARY, else <repo>/build/librpa.so. Failing those,
the package installs without a library and looks for one at import time
(RPA_LIBRARY, then the package directory, then <repo>/build/).
"""
import json
import os
import shlex
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class BinaryDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform."""

    def has_ext_modules(self):
        return True


def _log(msg):
    print(f"rpa setup: {msg}", file=sys.stderr, flush=True)


# What was built of the optional parts, and why not: written into the
# package as rpa/_build_info.json.
BUILD_INFO = {"jax": {"built": False, "reason": "not attempted"},
              "torch": {"built": False, "reason": "not attempted"}}


def _not_built(part, reason):
    BUILD_INFO[part] = {"built": False, "reason": reason}
    _log(f"rpa.{part} NOT BUILT: {reason}")
    if os.environ.get(f"RPA_REQUIRE_{part.upper()}") == "1":
        raise RuntimeError(f"rpa setup: RPA_REQUIRE_{part.upper()}=1 but "
                           f"rpa.{part} cannot be built: {reason}")


def _check_bdist_wheel():
    """setuptools < 70.1 takes bdist_wheel from the wheel package, which pip
    does not install under --no-build-isolation: say so plainly."""
    try:
        import setuptools.command.bdist_wheel  # noqa: F401 (>= 70.1)
        return
    except ImportError:
        pass
    try:
        import wheel  # noqa: F401
    except ImportError:
        import setuptools
        raise RuntimeError(
            f"rpa setup: setuptools {setuptools.__version__} builds wheels "
            "only with the `wheel` package, which is not installed (pip "
            "installs no build requirements under --no-build-isolation): "
            "run `pip install \"setuptools>=70.1\"` (or `pip install wheel`) "
            "first") from None


def _jax_include_dir():
    """jaxlib's FFI headers, or None (with the reason recorded)."""
    env = os.environ.get("RPA_JAX_INCLUDE_DIR")
    if env:
        if not os.path.isfile(os.path.join(env, "xla", "ffi", "api",
                                           "c_api.h")):
            raise RuntimeError(f"rpa setup: RPA_JAX_INCLUDE_DIR={env} holds "
                               "no xla/ffi/api/c_api.h")
        return env
    try:
        import jax.ffi
        return jax.ffi.include_dir()
    except Exception as e:  # no jax here (pip's isolated build, say)
        _not_built("jax", f"jaxlib's FFI headers not found (import jax.ffi: "
                   f"{e}); install jax (tested: jax==0.10.2) and then `pip "
                   "install --no-build-isolation ./python`, or set "
                   "RPA_JAX_INCLUDE_DIR to what jax.ffi.include_dir() prints")
        return None


def _torch_config():
    """(torch package dir, version, cxx11 abi flag) or None (reason
    recorded). $RPA_TORCH_PREFIX names the directory; otherwise this Python's
    torch."""
    prefix = os.environ.get("RPA_TORCH_PREFIX")
    if prefix:
        if not os.path.isfile(os.path.join(prefix, "include", "torch",
                                           "library.h")):
            raise RuntimeError(f"rpa setup: RPA_TORCH_PREFIX={prefix} holds "
                               "no include/torch/library.h (pass "
                               "os.path.dirname(torch.__file__))")
    try:
        import torch
    except Exception as e:
        if prefix:
            raise RuntimeError(f"rpa setup: RPA_TORCH_PREFIX is set but torch "
                               f"cannot be imported to read its version and "
                               f"ABI: {e}") from None
        _not_built("torch", f"torch not importable by the Python running the "
                   f"build (import torch: {e}); install torch (tested: "
                   "torch==2.15.0) and then `pip install --no-build-isolation "
                   "./python`")
        return None
    prefix = prefix or os.path.dirname(torch.__file__)
    if not os.path.isfile(os.path.join(prefix, "include", "torch",
                                       "library.h")):
        _not_built("torch", f"torch {torch.__version__} at {prefix} has no C++ "
                   "headers (include/torch/library.h)")
        return None
    return prefix, torch.__version__, int(torch.compiled_with_cxx11_abi())


def _build_torch_ops(lib, out_dir):
    """Compiles python/ffi/rpa_torch_ops.cpp against torch and lib (the
    librpa.so just built) into out_dir/librpa_torch.so; its path or None."""
    cfg = _torch_config()
    if cfg is None:
        return None
    prefix, version, abi = cfg
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        _not_built("torch", "no C++ compiler ($CXX, c++ or g++)")
        return None
    out = os.path.join(out_dir, "librpa_torch.so")
    cmd = [cxx, "-std=c++20", "-O2", "-fPIC", "-shared", "-fvisibility=hidden",
           f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
           "-I", os.path.join(ROOT, "include"),
           "-isystem", os.path.join(prefix, "include"),
           os.path.join(HERE, "ffi", "rpa_torch_ops.cpp"), "-o", out,
           "-L", os.path.dirname(lib), "-lrpa",
           "-L", os.path.join(prefix, "lib"), "-ltorch_cpu", "-lc10",
           # librpa.so.0 is the one rpa loads first (next to this library);
           # torch's libraries are loaded by `import torch` before this.
           "-Wl,-rpath,$ORIGIN", "-Wl,--no-undefined"]
    _log(" ".join(shlex.quote(c) for c in cmd))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-6000:])
        _not_built("torch", f"compiling python/ffi/rpa_torch_ops.cpp against "
                   f"torch {version} failed (exit {r.returncode}; run `pip "
                   "install -v` to see the compiler's messages)")
        return None
    BUILD_INFO["torch"] = {"built": True, "torch_version": version,
                           "torch_prefix": prefix}
    return out


def _cmake_build(build_temp):
    bdir = os.path.join(os.path.abspath(build_temp), "cmake-rpa")
    os.makedirs(bdir, exist_ok=True)
    configure = ["cmake", "-S", ROOT, "-B", bdir,
                 "-DCMAKE_BUILD_TYPE=Release", "-DRPA_WERROR=OFF"]
    jax_inc = _jax_include_dir()
    targets = ["rpa"]
    if jax_inc:
        configure.append(f"-DRPA_JAX_INCLUDE_DIR={jax_inc}")
        targets.append("rpa_jax")
        BUILD_INFO["jax"] = {"built": True, "include_dir": jax_inc}
    configure += shlex.split(os.environ.get("RPA_CMAKE_ARGS", ""))
    build = ["cmake", "--build", bdir, "--target", *targets,
             "-j", str(os.cpu_count() or 2)]
    for cmd in (configure, build):
        _log(" ".join(cmd))
        r = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stdout[-6000:])
            raise RuntimeError(f"rpa setup: `{' '.join(cmd)}` failed "
                               f"(exit {r.returncode})")
    lib = os.path.join(bdir, "librpa.so")
    if not os.path.exists(lib):
        raise RuntimeError(f"rpa setup: CMake built no {lib}")
    return lib


def _prebuilt():
    env = os.environ.get("RPA_LIBRARY")
    if env:
        if not os.path.isfile(env):
            raise RuntimeError(f"rpa setup: RPA_LIBRARY={env} is not a file")
        return env
    lib = os.path.join(ROOT, "build", "librpa.so")
    return lib if os.path.exists(lib) else None


class build_py_with_lib(build_py):
    def run(self):
        _check_bdist_wheel()
        super().run()
        try:
            self._build_native()
        finally:
            self._write_build_info()

    def _write_build_info(self):
        dest = os.path.join(self.build_lib, "rpa", "_build_info.json")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w") as f:
            json.dump(BUILD_INFO, f, indent=1)
        for part, info in BUILD_INFO.items():
            _log(f"rpa.{part}: " + ("built" if info.get("built") else
                                    f"NOT BUILT ({info.get('reason')})"))

    def _build_native(self):
        source_tree = (os.path.isfile(os.path.join(ROOT, "CMakeLists.txt"))
                       and os.path.isfile(os.path.join(ROOT, "include",
                                                       "rpa.h")))
        if source_tree and shutil.which("cmake"):
            lib = _cmake_build(self.get_finalized_command("build").build_temp)
        else:
            lib = _prebuilt()
            why = "no source tree" if not source_tree else "no cmake"
            if lib is None:
                _log(f"{why} and no prebuilt library: installing without "
                     "librpa.so (set RPA_LIBRARY at run time)")
                for part in BUILD_INFO:
                    _not_built(part, f"{why} and no prebuilt librpa.so")
                return
            _log(f"{why}: shipping the prebuilt {lib}")
        dest = os.path.join(self.build_lib, "rpa", "librpa.so")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(os.path.realpath(lib), dest)
        _log(f"shipping {os.path.realpath(lib)} as rpa/librpa.so")
        handler = os.path.join(os.path.dirname(lib), "librpa_jax.so")
        if os.path.exists(handler):
            shutil.copyfile(handler, os.path.join(os.path.dirname(dest),
                                                  "librpa_jax.so"))
            _log(f"shipping {handler} as rpa/librpa_jax.so (rpa.jax)")
        elif BUILD_INFO["jax"]["built"] or BUILD_INFO["jax"]["reason"] == \
                "not attempted":
            _not_built("jax", f"no librpa_jax.so next to {lib} (a prebuilt "
                       "library without the handler)")
        ops = _build_torch_ops(dest, os.path.dirname(dest))
        if ops:
            _log(f"built {ops} (rpa.torch)")


setup(distclass=BinaryDistribution, cmdclass={"build_py": build_py_with_lib})
