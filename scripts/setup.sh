#!/usr/bin/env bash
# Installs what building, testing and benchmarking need, from Debian's
# packages, when it is missing. Idempotent; run by the Makefile targets.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v gcc >/dev/null || need+=(gcc)
command -v clang >/dev/null || need+=(clang)
# clang's ThreadSanitizer runtime (scripts/test_reliability.sh)
if command -v clang >/dev/null &&
  [ ! -e "$(clang -print-file-name="libclang_rt.tsan-$(uname -m).a")" ]; then
  need+=(libclang-rt-14-dev)
fi
# clang's libFuzzer runtime (scripts/test_fuzz.sh); with clang itself too
if ! command -v clang >/dev/null ||
  [ ! -e "$(clang -print-file-name="libclang_rt.fuzzer-$(uname -m).a")" ]; then
  need+=(libclang-rt-14-dev)
fi
command -v valgrind >/dev/null || need+=(valgrind)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v make >/dev/null || need+=(make)
command -v pkg-config >/dev/null || need+=(pkg-config)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# The aarch64 stage of scripts/test.sh (an x86-64 host cross-compiles and
# runs the tests under qemu-user). Best effort: without these that stage
# says NOT RUN.
cross=()
if [ "$(uname -m)" = x86_64 ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || cross+=(gcc-aarch64-linux-gnu)
  [ -e /usr/aarch64-linux-gnu/lib/libc.so ] || cross+=(libc6-dev-arm64-cross)
  command -v qemu-aarch64 >/dev/null || cross+=(qemu-user)
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
updated=0
apt_install() { # packages...
  if [ "$updated" -eq 0 ]; then
    $SUDO apt-get update -qq
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} from Debian's packages"
  apt_install "${need[@]}"
fi
if [ ${#cross[@]} -gt 0 ]; then
  echo "setup: installing ${cross[*]} (aarch64 cross build) from Debian's packages"
  apt_install "${cross[@]}" ||
    echo "setup: could not install ${cross[*]}: the aarch64 stage will not run"
fi
