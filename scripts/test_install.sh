#!/usr/bin/env bash
# Installs a build of rpa into a temporary prefix and builds tests/consumer
# against it every way a C user would:
#   - CMake's find_package(rpa) with rpa::rpa (shared) and rpa::rpa_static;
#   - the version file's rule (same major version accepted, the next refused);
#   - pkg-config, shared (`pkg-config --cflags --libs rpa`) and static
#     (`pkg-config --static --libs rpa`);
#   - add_subdirectory() of this source tree, where rpa's warnings, -Werror
#     and tests must stay out of the parent project.
# Each consumer runs one small attention call it checks by hand.
#
# Usage: scripts/test_install.sh BUILD_DIR
# Prints one line per check, then "install: N passed, M failed"; exits 1 if
# any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -ne 1 ] || [ ! -f "$1/CMakeCache.txt" ]; then
  echo "usage: scripts/test_install.sh BUILD_DIR (a configured and built rpa build)" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
JOBS=$(nproc 2>/dev/null || echo 2)

cache_value() { # name: a value from the build's CMakeCache.txt
  sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt" | head -1
}
cc=$(cache_value CMAKE_C_COMPILER)
cc=${cc:-cc}
libdir_rel=$(cache_value CMAKE_INSTALL_LIBDIR)
libdir_rel=${libdir_rel:-lib}

work=$(mktemp -d "${TMPDIR:-/tmp}/rpa-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
libdir=$prefix/$libdir_rel
main_c=$root/tests/consumer/main.c

passed=0
failed=0
n=0
check() { # description, command...: one line, the log's tail on failure
  local what=$1
  shift
  n=$((n + 1))
  local log=$work/check$n.log
  if "$@" >"$log" 2>&1; then
    echo "   ok    $what"
    passed=$((passed + 1))
  else
    echo "   FAIL  $what"
    tail -25 "$log" | sed 's/^/         /'
    failed=$((failed + 1))
  fi
}

# (Outputs are captured, then searched from a here-string: `cmd | grep -q`
# fails under pipefail when grep stops reading early.)
needed() { # binary: its DT_NEEDED entries, one a line
  local dyn
  dyn=$(readelf -d "$1") || return 1
  printf '%s\n' "$dyn" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

needs_librpa() { # binary: 0 if it has a DT_NEEDED librpa.so.N
  local libs
  libs=$(needed "$1") || return 2
  echo "$1 needs: $(echo $libs)"
  [[ $'\n'"$libs"$'\n' == *$'\n'librpa.so.* ]]
}

installed_files() {
  cmake --install "$build" --prefix "$prefix" || return 1
  local missing=0 f
  for f in include/rpa.h "$libdir_rel/librpa.a" "$libdir_rel/librpa.so" \
    "$libdir_rel/cmake/rpa/rpaConfig.cmake" \
    "$libdir_rel/cmake/rpa/rpaConfigVersion.cmake" \
    "$libdir_rel/cmake/rpa/rpaTargets.cmake" "$libdir_rel/pkgconfig/rpa.pc"; do
    [ -e "$prefix/$f" ] || { echo "missing: $f"; missing=1; }
  done
  [ "$missing" -eq 0 ]
}

shared_soname() { # librpa.so -> librpa.so.MAJOR, the SONAME, API exported
  local dyn soname syms
  dyn=$(readelf -d "$libdir/librpa.so") || return 1
  soname=$(printf '%s\n' "$dyn" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  echo "SONAME: $soname"
  syms=$(readelf --dyn-syms -W "$libdir/librpa.so") || return 1
  [[ "$soname" =~ ^librpa\.so\.[0-9]+$ ]] && [ -e "$libdir/$soname" ] &&
    [ -L "$libdir/librpa.so" ] &&
    grep -qw rpa_version <<<"$syms" &&
    grep -qw rpa_abi_struct_size <<<"$syms"
}

consumer_cmake() { # dir, extra cmake args...: configure, build, run
  local dir=$1
  shift
  cmake -S "$root/tests/consumer" -B "$dir" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_BUILD_TYPE=Release "$@" &&
    cmake --build "$dir" -j"$JOBS" &&
    "$dir/consumer"
}

find_package_shared() {
  consumer_cmake "$work/fp-shared" -DCMAKE_PREFIX_PATH="$prefix" || return 1
  needs_librpa "$work/fp-shared/consumer"
}

find_package_static() {
  consumer_cmake "$work/fp-static" -DCMAKE_PREFIX_PATH="$prefix" \
    -DRPA_CONSUMER_STATIC=ON || return 1
  needs_librpa "$work/fp-static/consumer"
  [ $? -eq 1 ]
}

version_rule() { # this major.minor is found; the next major is refused
  local v major minor
  v=$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")$/\1/p' \
    "$libdir/cmake/rpa/rpaConfigVersion.cmake")
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%.*}
  echo "package version $v"
  cmake -S "$root/tests/consumer" -B "$work/fp-ver-ok" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_PREFIX_PATH="$prefix" -DRPA_CONSUMER_VERSION="$major.$minor" ||
    return 1
  if cmake -S "$root/tests/consumer" -B "$work/fp-ver-next" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" \
    -DRPA_CONSUMER_VERSION="$((major + 1)).0"; then
    echo "find_package(rpa $((major + 1)).0) accepted version $v"
    return 1
  fi
}

pkg_config_shared() {
  export PKG_CONFIG_PATH=$libdir/pkgconfig
  pkg-config --modversion rpa || return 1
  local flags
  flags=$(pkg-config --cflags --libs rpa) || return 1
  echo "pkg-config --cflags --libs rpa: $flags"
  # shellcheck disable=SC2086
  "$cc" -o "$work/pc-shared" "$main_c" $flags &&
    needs_librpa "$work/pc-shared" &&
    LD_LIBRARY_PATH=$libdir "$work/pc-shared"
}

pkg_config_static() {
  export PKG_CONFIG_PATH=$libdir/pkgconfig
  local cflags libs
  cflags=$(pkg-config --cflags rpa) && libs=$(pkg-config --static --libs rpa) ||
    return 1
  echo "pkg-config --static --libs rpa: $libs"
  # Libs.private must bring what librpa.a needs.
  [[ " $libs " == *" -lm "* && " $libs " == *" -pthread "* ]] || {
    echo "Libs.private lacks -lm or -pthread"
    return 1
  }
  # The same flags, with -lrpa bound to the archive, not the shared library.
  libs=$(echo " $libs " | sed 's/ -lrpa / -l:librpa.a /')
  # shellcheck disable=SC2086
  "$cc" -o "$work/pc-static" "$main_c" $cflags $libs &&
    { needs_librpa "$work/pc-static"; [ $? -eq 1 ]; } &&
    "$work/pc-static"
}

add_subdirectory_parent() {
  local dir=$work/subdir
  consumer_cmake "$dir" -DRPA_CONSUMER_SUBDIR="$root" \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON || return 1
  local cmds=$dir/compile_commands.json
  # the parent's own file is compiled with none of rpa's warning flags
  local all mine lib help
  all=$(grep -F '"command"' "$cmds") || return 1
  mine=$(printf '%s\n' "$all" | grep -F "tests/consumer/main.c")
  lib=$(printf '%s\n' "$all" | grep -F "/src/")
  echo "main.c: $mine"
  if grep -qE -- '-Werror|-Wshadow|-Wextra|-fsanitize' <<<"$mine"; then
    echo "rpa's flags leaked into the parent's main.c"
    return 1
  fi
  # rpa's own files get its warnings, but not -Werror (RPA_WERROR is off
  # below a parent)
  grep -q -- '-Wshadow' <<<"$lib" || {
    echo "rpa's sources lost their warning flags"
    return 1
  }
  if grep -q -- '-Werror' <<<"$lib"; then
    echo "-Werror is on for rpa below a parent project"
    return 1
  fi
  # and neither its tests nor its tools are defined there
  help=$(cmake --build "$dir" --target help) || return 1
  if grep -qE 'test_api|rpa-bench' <<<"$help"; then
    echo "rpa's tests or tools are built below a parent project"
    return 1
  fi
}

echo "install: $build into a temporary prefix (libdir $libdir_rel, cc $cc)"
check "cmake --install puts header, libraries, CMake and pkg-config files in place" installed_files
if [ "$failed" -eq 0 ]; then
  check "librpa.so: a symlink to its SONAME librpa.so.MAJOR, exporting the API" shared_soname
  check "find_package(rpa) + rpa::rpa: builds, runs, needs librpa.so" find_package_shared
  check "find_package(rpa) + rpa::rpa_static: builds, runs, no librpa.so" find_package_static
  check "find_package(rpa MAJOR.MINOR) accepted, next major refused" version_rule
  if command -v pkg-config >/dev/null; then
    check "pkg-config --cflags --libs rpa (shared): builds, runs" pkg_config_shared
    check "pkg-config --static --libs rpa (librpa.a): builds, runs" pkg_config_static
  else
    echo "   FAIL  pkg-config checks: pkg-config is not installed (scripts/setup.sh installs it)"
    failed=$((failed + 2))
  fi
fi
check "add_subdirectory(rpa): no flags or tests leak into the parent, consumer runs" add_subdirectory_parent
echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
