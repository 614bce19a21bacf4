"""Build hook: compiles librpa with CMake and ships it inside the package.

`pip install ./python` (from a checkout) runs CMake on the repository root
(the directory above this file), builds only the shared library target
`rpa` in setuptools' temporary build directory, and copies the library into
the wheel as rpa/librpa.so. Extra CMake arguments: RPA_CMAKE_ARGS.

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


def _cmake_build(build_temp):
    bdir = os.path.join(os.path.abspath(build_temp), "cmake-rpa")
    os.makedirs(bdir, exist_ok=True)
    configure = ["cmake", "-S", ROOT, "-B", bdir,
                 "-DCMAKE_BUILD_TYPE=Release", "-DRPA_WERROR=OFF"]
    configure += shlex.split(os.environ.get("RPA_CMAKE_ARGS", ""))
    build = ["cmake", "--build", bdir, "--target", "rpa",
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


setup(distclass=BinaryDistribution, cmdclass={"build_py": build_py_with_lib})
