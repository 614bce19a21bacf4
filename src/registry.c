/* The registry of backends: the reference first, then the engine with each
   kernel set from the most portable to the fastest. A set appears only
   where it was compiled (x86 sets on x86) and is offered only where the CPU
   and the OS can run it. */
#include <pthread.h>
#include <string.h>

#include "cpu.h"
#include "internal.h"
#include "kernels/fp8_lut.h"
#include "kernels/kernels.h"

static int runs_always(void) { return 1; }
#if RPA_HAVE_X86_KERNELS
static int runs_avx2(void) { return rpa_cpu_features()->avx2_fma; }
#if RPA_EMULATE_AVX512
/* TEST-ONLY build (-DRPA_EMULATE=avx512): the avx512 set is AVX2 code that
   emulates its AVX-512 instructions (tests/emu/avx512_emu.h), so it runs
   wherever avx2 does; rpa_backend_best() never picks it. */
static int runs_avx512(void) { return rpa_cpu_features()->avx2_fma; }
#else
static int runs_avx512(void) { return rpa_cpu_features()->avx512; }
#endif
#endif

static const rpa_backend backends[] = {
    {"ref", runs_always, rpa_ref_attention, NULL},
    {"scalar", runs_always, rpa_engine_attention, &rpa_kernels_scalar},
#if RPA_HAVE_X86_KERNELS
    {"avx2", runs_avx2, rpa_engine_attention, &rpa_kernels_avx2},
    {"avx512", runs_avx512, rpa_engine_attention, &rpa_kernels_avx512},
#endif
};
enum { NUM_BACKENDS = sizeof backends / sizeof backends[0] };

/* Tables the kernels read, built once before any backend is handed out. */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static void build_tables(void) { rpa_fp8_lut_init(); }

int rpa_backend_count(void) { return NUM_BACKENDS; }

const rpa_backend *rpa_backend_at(int index) {
  if (index < 0 || index >= NUM_BACKENDS) return NULL;
  pthread_once(&tables_once, build_tables);
  return &backends[index];
}

const rpa_backend *rpa_backend_find(const char *name) {
  for (int i = 0; i < NUM_BACKENDS; i++)
    if (strcmp(backends[i].name, name) == 0) return rpa_backend_at(i);
  return NULL;
}

const rpa_backend *rpa_backend_best(void) {
  const rpa_backend *best = NULL;
  for (int i = 0; i < NUM_BACKENDS; i++) {
#if RPA_EMULATE_AVX512
    if (strcmp(backends[i].name, "avx512") == 0) continue; /* emulated */
#endif
    if (backends[i].runs_here()) best = rpa_backend_at(i);
  }
  return best;
}

const char *rpa_isa_name(int index) {
  const rpa_backend *b = rpa_backend_at(index);
  return b ? b->name : NULL;
}

int rpa_isa_available(const char *isa) {
  const rpa_backend *b = isa ? rpa_backend_find(isa) : NULL;
  return b && b->runs_here();
}
