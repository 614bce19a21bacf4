"""Build hook: compiles librpa with CMake and ships it inside the package.

`pip install ./python` (from a checkout) runs CMake on the repository root
(the directory above this file), builds only the shared library target
`rpa` in setuptools' temporary build directory, and copies the library into
the wheel as rpa/librpa.so. Extra CMake arguments: RPA_CMAKE_ARGS.

rpa.jax's XLA FFI handler, librpa_jax.so, is built and shipped too when
jaxlib's FFI headers are found: $RPA_JAX_INCLUDE_DIR, else
jax.ffi.include_dir() of the Python running this build (an environment with
jax and `pip install --no-build-isolation ./python`). Without them the
package installs without rpa.jax, and says so.

Where there is no source tree or no cmake, an already built library is
shipped instead: $RPA_LIBRARY, else <repo>/build/librpa.so. Failing those,
the package installs without a library and looks for one at import time
(RPA_LIBRARY, then the package directory, then <repo>/build/).
"""
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


def _jax_include_dir():
    """jaxlib's FFI headers, or None (with the reason logged)."""
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
        _log(f"building without rpa.jax: jaxlib's FFI headers not found "
             f"(import jax.ffi: {e}); set RPA_JAX_INCLUDE_DIR or install "
             "with --no-build-isolation where jax is installed")
        return None


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
        super().run()
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


setup(distclass=BinaryDistribution, cmdclass={"build_py": build_py_with_lib})
