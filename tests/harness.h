/* A minimal test harness: named cases, CHECKs inside them, one summary line
   per program ("<program>: N passed, N failed") that the test runner sums. */
#ifndef RPA_TEST_HARNESS_H
#define RPA_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpa.h"

static int th_passed, th_failed, th_case_failures;
static const char *th_case_name = "";

/* An environment variable as it was, put back by th_env_restore after a
   test has set it. */
typedef struct th_env {
  const char *name;
  char *was; /* NULL: it was not set */
} th_env;

static inline th_env th_env_save(const char *name) {
  const char *v = getenv(name);
  th_env e = {name, v ? strdup(v) : NULL};
  return e;
}

static inline void th_env_restore(th_env *e) {
  if (e->was) {
    setenv(e->name, e->was, 1);
    free(e->was);
    e->was = NULL;
  } else {
    unsetenv(e->name);
  }
}

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

/* The program's context: RPA_TEST_THREADS threads (scripts/test_reliability.sh
   sets it under ThreadSanitizer), else all CPUs; the kernel set RPA_ISA
   names, else the best. Prints the set. NULL on failure. */
static inline rpa_context *th_context(const char *program) {
  rpa_context_options opts = rpa_context_options_default();
  const char *threads = getenv("RPA_TEST_THREADS");
  if (threads && threads[0]) opts.num_threads = atoi(threads);
  rpa_context *ctx = NULL;
  const rpa_status st = rpa_context_create(&opts, &ctx);
  if (st != RPA_OK) {
    fprintf(stderr, "%s: context: %s\n", program, rpa_status_string(st));
    return NULL;
  }
  printf("%s: kernel set %s\n", program, rpa_context_isa(ctx));
  return ctx;
}

static inline int th_finish(const char *program) {
  printf("%s: %d passed, %d failed\n", program, th_passed, th_failed);
  return th_failed ? 1 : 0;
}

#endif
