#!/usr/bin/env bash
# Reliability checks (docs/testing.md), two stages:
#   1. ThreadSanitizer: a clang -fsanitize=thread build (build-tsan) runs the
#      engine's multi-threaded tests (test_determinism, test_attention in
#      quick mode, test_concurrency) with contexts of 4 threads whatever
#      the CPU count; any report stops the program (halt_on_error=1);
#   2. allocation faults: test_alloc_faults of the gcc build (build-gcc,
#      built here if missing) fails each allocation of the library in turn.
# Prints a "== ..." header per stage and, per program, one line
# "   NAME: N passed, M failed" (a crash or a sanitizer report after the
# summary counts as a failure; program output is shown indented with "| ",
# so it never reads as a summary line), then "reliability: N passed, M
# failed". scripts/test.sh runs it and sums the indented lines.
# Environment: RPA_TSAN_BUILD, RPA_GCC_BUILD (build folders), RPA_RELIABILITY
# ("tsan", "faults" or "all", the default).
set -uo pipefail
cd "$(dirname "$0")/.."

JOBS=$(nproc 2>/dev/null || echo 2)
TSAN_DIR=${RPA_TSAN_BUILD:-build-tsan}
GCC_DIR=${RPA_GCC_BUILD:-build-gcc}
STAGES=${RPA_RELIABILITY:-all}
passed=0
failed=0

count() { # name, passed, failed
  echo "   $1: $2 passed, $3 failed"
  passed=$((passed + $2))
  failed=$((failed + $3))
}

run_program() { # name, command...
  local name=$1
  shift
  local log rc line p f
  log=$("$@" 2>&1)
  rc=$?
  line=$(printf '%s\n' "$log" | grep -E "^$name: [0-9]+ passed, [0-9]+ failed$" | tail -1)
  # the program's own figure lines
  printf '%s\n' "$log" | grep -E "^$name: " | grep -vE "^$name: [0-9]+ passed" | sed 's/^/   | /'
  if [ -z "$line" ]; then
    printf '%s\n' "$log" | tail -40 | sed 's/^/   | /'
    echo "   ($name: no summary line, exit $rc)"
    count "$name" 0 1
    return
  fi
  p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed$/\1/')
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1 # a sanitizer report or a crash after the summary
  fi
  if [ "$f" -ne 0 ]; then
    printf '%s\n' "$log" | grep -E -A12 "WARNING: ThreadSanitizer|FAIL|ERROR|SUMMARY" |
      head -60 | sed 's/^/   | /'
    echo "   ($name: exit $rc)"
  fi
  count "$name" "$p" "$f"
}

build() { # dir, targets, cmake args...
  local dir=$1 targets=$2
  shift 2
  local t args=()
  for t in $targets; do args+=(--target "$t"); done
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.log" 2>&1 &&
    cmake --build "$dir" -j"$JOBS" "${args[@]}" >>"$dir.log" 2>&1 || {
    tail -40 "$dir.log" | sed 's/^/   | /'
    return 1
  }
}

# Can clang's TSan runtime build and run a threaded program here? Sets
# TSAN_WRAP (a command prefix: empty, or setarch -R where the runtime
# cannot map its shadow under this kernel's address randomisation), or
# TSAN_WHY to why not.
tsan_probe() {
  TSAN_WRAP=()
  TSAN_WHY=""
  command -v clang >/dev/null || {
    TSAN_WHY="clang not installed"
    return 1
  }
  local dir
  dir=$(mktemp -d) || return 1
  cat >"$dir/probe.c" <<'EOF'
#include <pthread.h>
static int x;
static void *f(void *a) { (void)a; __atomic_fetch_add(&x, 1, __ATOMIC_SEQ_CST); return 0; }
int main(void) {
  pthread_t t;
  if (pthread_create(&t, 0, f, 0)) return 1;
  __atomic_fetch_add(&x, 1, __ATOMIC_SEQ_CST);
  pthread_join(t, 0);
  return x == 2 ? 0 : 1;
}
EOF
  local why=""
  if ! clang -fsanitize=thread -pthread "$dir/probe.c" -o "$dir/probe" >"$dir/log" 2>&1; then
    why="clang -fsanitize=thread does not link: $(grep -m1 -iE 'error|cannot' "$dir/log")"
  elif ! "$dir/probe" >"$dir/log" 2>&1; then
    if setarch "$(uname -m)" -R "$dir/probe" >/dev/null 2>&1; then
      TSAN_WRAP=(setarch "$(uname -m)" -R)
    else
      why="the TSan runtime does not run here: $(head -c 200 "$dir/log" | tr '\n' ' ')"
    fi
  fi
  rm -rf "$dir"
  TSAN_WHY=$why
  [ -z "$why" ]
}

tsan_stage() {
  if ! tsan_probe; then
    echo "== ThreadSanitizer: NOT RUN ($TSAN_WHY)"
    count tsan 0 1
    return
  fi
  echo "== ThreadSanitizer (clang)${TSAN_WRAP[*]:+, under ${TSAN_WRAP[*]}}"
  if ! build "$TSAN_DIR" "test_determinism test_attention test_concurrency" \
    -DCMAKE_C_COMPILER=clang -DRPA_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
    echo "   (ThreadSanitizer build failed: $TSAN_DIR.log)"
    count tsan-build 0 1
    return
  fi
  local env=(env TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 RPA_TEST_THREADS=4)
  run_program test_determinism "${TSAN_WRAP[@]}" "${env[@]}" "$TSAN_DIR/test_determinism"
  run_program test_attention "${TSAN_WRAP[@]}" "${env[@]}" RPA_TEST_QUICK=1 "$TSAN_DIR/test_attention"
  run_program test_concurrency "${TSAN_WRAP[@]}" "${env[@]}" RPA_TEST_QUICK=1 "$TSAN_DIR/test_concurrency"
}

faults_stage() {
  echo "== allocation faults (gcc, test_alloc_faults)"
  if ! build "$GCC_DIR" test_alloc_faults -DCMAKE_C_COMPILER=gcc; then
    echo "   (gcc build failed: $GCC_DIR.log)"
    count alloc-faults-build 0 1
    return
  fi
  run_program test_alloc_faults "$GCC_DIR/test_alloc_faults"
}

case $STAGES in
  tsan) tsan_stage ;;
  faults) faults_stage ;;
  *) tsan_stage; faults_stage ;;
esac
echo "reliability: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
