/* The fuzzing harness as a regression test: every file of the seed corpus
   (tests/fuzz/corpus) and of the crashes found (tests/fuzz/regressions)
   goes through the harness's property check, on every kernel set this CPU
   runs (or the one RPA_ISA names). Directories may be given as arguments;
   the defaults come from the source tree. One case per file. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_attention.c"
#include "harness.h"

#ifndef RPA_FUZZ_SOURCE_DIR
#define RPA_FUZZ_SOURCE_DIR "."
#endif

static int cmp_names(const void *x, const void *y) {
  return strcmp(*(char *const *)x, *(char *const *)y);
}

static int skip_name(const char *name) {
  const size_t n = strlen(name);
  return name[0] == '.' || (n >= 3 && strcmp(name + n - 3, ".md") == 0);
}

/* Runs every file of dir; returns how many there were, -1 if dir cannot be
   read. */
static int run_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  char **names = NULL;
  size_t count = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (skip_name(e->d_name)) continue;
    if (count == cap) {
      cap = cap ? 2 * cap : 64;
      char **grown = realloc(names, cap * sizeof *names);
      if (!grown) break;
      names = grown;
    }
    names[count] = malloc(strlen(e->d_name) + 1);
    if (!names[count]) break;
    strcpy(names[count++], e->d_name);
  }
  closedir(d);
  qsort(names, count, sizeof *names, cmp_names);
  for (size_t i = 0; i < count; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    TEST_CASE(names[i], {
      FILE *f = fopen(path, "rb");
      CHECK(f != NULL, "cannot open %s", path);
      if (f) {
        uint8_t buf[4096];
        const size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        /* quick mode (sanitizers, valgrind): the set the input picks */
        CHECK(fz_run_input(buf, n, !th_quick()) == 0,
              "%s: the property fails (see above)", path);
      }
    });
    free(names[i]);
  }
  free(names);
  return (int)count;
}

int main(int argc, char **argv) {
  const char *defaults[2] = {RPA_FUZZ_SOURCE_DIR "/tests/fuzz/corpus",
                             RPA_FUZZ_SOURCE_DIR "/tests/fuzz/regressions"};
  const char *const *dirs = argc > 1 ? (const char *const *)argv + 1 : defaults;
  const int ndirs = argc > 1 ? argc - 1 : 2;
  int files = 0;
  TEST_CASE("kernel sets", { CHECK(fz_init() == 0, "no context"); });
  for (int i = 0; i < ndirs; i++) {
    const int n = run_dir(dirs[i]);
    /* the seed corpus must be there; regressions may be empty */
    if (n < 0 && (argc > 1 || i == 0))
      TEST_CASE(dirs[i], { CHECK(0, "cannot read directory %s", dirs[i]); });
    if (n > 0) files += n;
  }
  if (files == 0)
    TEST_CASE("corpus", { CHECK(0, "no input files found"); });
  else
    printf("test_fuzz_corpus: %d inputs on %d kernel set(s) against ref\n",
           files, g_nfast);
  fz_shutdown();
  return th_finish("test_fuzz_corpus");
}
