/* A minimal test harness: named cases, CHECKs inside them, one summary line
   per program ("<program>: N passed, N failed") that the test runner sums. */
#ifndef RPA_TEST_HARNESS_H
#define RPA_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int th_passed, th_failed, th_case_failures;
static const char *th_case_name = "";

/* Quick mode (RPA_TEST_QUICK=1) shrinks random sweeps for sanitizer and
   valgrind runs; every kind of case still runs. */
static inline int th_quick(void) {
  const char *q = getenv("RPA_TEST_QUICK");
  return q && q[0] == '1';
}

#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      if (th_case_failures++ < 5) {                                       \
        fprintf(stderr, "FAIL [%s] %s:%d: ", th_case_name, __FILE__,      \
                __LINE__);                                                \
        fprintf(stderr, __VA_ARGS__);                                     \
        fputc('\n', stderr);                                              \
      }                                                                   \
    }                                                                     \
  } while (0)

static inline void th_begin(const char *name) {
  th_case_name = name;
  th_case_failures = 0;
}

static inline void th_end(void) {
  if (th_case_failures)
    th_failed++;
  else
    th_passed++;
}

#define TEST_CASE(name, body) \
  do {                        \
    th_begin(name);           \
    body;                     \
    th_end();                 \
  } while (0)

static inline int th_finish(const char *program) {
  printf("%s: %d passed, %d failed\n", program, th_passed, th_failed);
  return th_failed ? 1 : 0;
}

#endif
