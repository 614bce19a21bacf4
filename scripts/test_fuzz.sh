#!/usr/bin/env bash
# Coverage-guided fuzzing of the whole attention call: libFuzzer with
# AddressSanitizer + UndefinedBehaviorSanitizer (clang, -DRPA_FUZZ=ON, built
# in build-fuzz/), for RPA_FUZZ_SECONDS seconds (60) in one process, on a
# copy of the seed corpus tests/fuzz/corpus. The harness is
# tests/fuzz/fuzz_attention.c; every input must either fail validation
# leaving everything untouched, or agree with the reference kernel set.
#
# Prints the executions run and the corpus size at the end, then
# "   fuzz: 1 passed, 0 failed", or on a crash "   fuzz: 0 passed, 1 failed"
# with the crashing input copied into tests/fuzz/regressions/ (where
# test_fuzz_corpus replays it in every build from then on). When clang or
# its libFuzzer runtime cannot be used it prints "== fuzz: NOT RUN (why)" and
# counts as failed too: CI must not pass without fuzzing. RPA_FUZZ_BUILD_DIR
# overrides the build directory.
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${RPA_FUZZ_SECONDS:-60}
jobs=$(nproc 2>/dev/null || echo 2)
dir=${RPA_FUZZ_BUILD_DIR:-build-fuzz}
run=$dir/run

not_run() {
  echo "== fuzz: NOT RUN ($1)"
  echo "   fuzz: 0 passed, 1 failed"
  exit 1
}

case $secs in
  '' | *[!0-9]*) not_run "RPA_FUZZ_SECONDS='$secs' is not a whole number of seconds" ;;
esac
command -v clang >/dev/null || not_run "clang is not installed"
command -v cmake >/dev/null || not_run "cmake is not installed"

# libFuzzer's runtime: a trivial harness must link.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
  'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
  'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; return n > 9999; }' \
  >"$probe/probe.c"
clang -fsanitize=fuzzer,address,undefined "$probe/probe.c" -o "$probe/probe" \
  >"$probe/log" 2>&1 ||
  not_run "clang $(clang -dumpversion 2>/dev/null) cannot link -fsanitize=fuzzer: $(head -c 200 "$probe/log" | tr '\n' ' ') (scripts/setup.sh installs libclang-rt-14-dev)"

echo "== fuzz (libFuzzer + ASan + UBSan, $secs s)"
if ! { cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DRPA_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$dir.log" 2>&1 &&
  cmake --build "$dir" --target fuzz_attention -j"$jobs" >>"$dir.log" 2>&1; }; then
  tail -30 "$dir.log"
  not_run "building $dir failed, see $dir.log"
fi

# A fresh copy of the seeds: new inputs go there, never into the source tree.
rm -rf "$run"
mkdir -p "$run/corpus" "$run/artifacts"
cp tests/fuzz/corpus/* "$run/corpus/"
seeds=$(find "$run/corpus" -type f | wc -l)

ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$dir/fuzz_attention" -max_total_time="$secs" -max_len=256 -timeout=30 \
  -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$run/artifacts/" \
  "$run/corpus" >"$run/fuzz.log" 2>&1
rc=$?

final_stat() { grep -E "^stat::$1:" "$run/fuzz.log" | tail -1 | grep -oE '[0-9]+$'; }
execs=$(final_stat number_of_executed_units)
per_sec=$(final_stat average_exec_per_sec)
cov=$(grep -oE 'cov: [0-9]+' "$run/fuzz.log" | tail -1 | grep -oE '[0-9]+')
size=$(find "$run/corpus" -type f | wc -l)
echo "   fuzz: ${execs:-?} executions in at most $secs s (${per_sec:-?}/s), corpus" \
  "$seeds -> $size inputs, coverage ${cov:-?} edges (log: $run/fuzz.log)"

artifact=$(find "$run/artifacts" -type f | head -1)
if [ "$rc" -eq 0 ] && [ -z "$artifact" ] && [ -n "$execs" ]; then
  echo "   fuzz: 1 passed, 0 failed"
  exit 0
fi
grep -E "VIOLATION|  case:|^  [A-Za-z]|ERROR: |runtime error|SUMMARY" "$run/fuzz.log" |
  head -30 | sed 's/^/   /'
if [ -n "$artifact" ]; then
  mkdir -p tests/fuzz/regressions
  saved=tests/fuzz/regressions/$(basename "$artifact")
  cp "$artifact" "$saved"
  echo "   fuzz: the input is saved as $saved"
  echo "   fuzz: reproduce with $dir/fuzz_attention $saved"
else
  echo "   fuzz: the fuzzer stopped (exit $rc) without an input to save; see $run/fuzz.log"
fi
echo "   fuzz: 0 passed, 1 failed"
exit 1
