/* The context: kernel choice, thread pool, scratch memory and the last
   error message. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "internal.h"
#include "kernels/kernels.h"
#include "threadpool.h"

rpa_status rpa_fail(rpa_context *ctx, rpa_status status, const char *fmt,
                    ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
  }
  return status;
}

/* ---- context ----------------------------------------------------------- */

rpa_context_options rpa_context_options_default(void) {
  rpa_context_options o;
  memset(&o, 0, sizeof o);
  o.log = -1;
  o.pin_threads = -1;
  return o;
}

/* A 0|1 environment override: *flag keeps its value where name is unset
   or empty; 0 for anything but "0" or "1". */
static int env_flag(const char *name, int *flag) {
  const char *v = getenv(name);
  if (!v || !v[0]) return 1;
  if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0) return 0;
  *flag = v[0] == '1';
  return 1;
}

rpa_status rpa_context_create(const rpa_context_options *opts,
                              rpa_context **ctx_out) {
  if (!ctx_out) return RPA_NULL_POINTER;
  *ctx_out = NULL;
  rpa_context_options o = opts ? *opts : rpa_context_options_default();
  if (o.num_threads < 0) return RPA_INVALID_PARAMETER;

  const char *isa = o.isa && o.isa[0] ? o.isa : getenv("RPA_ISA");
  const rpa_backend *backend;
  if (isa && isa[0] && strcmp(isa, "best") != 0) {
    backend = rpa_backend_find(isa);
    if (!backend || !backend->runs_here()) return RPA_UNSUPPORTED;
  } else {
    backend = rpa_backend_best();
  }

  /* RPA_BF16_DOT=0|1 and RPA_DECODE_PREFETCH=0|1 override the CPU's choice
     of bf16 arithmetic and of decode prefetch. */
  int bf16_dot = rpa_cpu_features()->bf16_dot_fast;
  int prefetch_rows = rpa_cpu_features()->prefetch_rows;
  if (!env_flag("RPA_BF16_DOT", &bf16_dot) ||
      !env_flag("RPA_DECODE_PREFETCH", &prefetch_rows))
    return RPA_INVALID_PARAMETER;

  rpa_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return RPA_OUT_OF_MEMORY;
  ctx->bf16_dot = bf16_dot;
  ctx->prefetch_rows = prefetch_rows;
  if (o.num_threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o.num_threads = n > 0 ? (int)n : 1;
  }
  ctx->num_threads = o.num_threads;
  ctx->backend = backend;
  if (backend->kernels) { /* the engine runs on the pool */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const int pin = o.pin_threads < 0 ? o.num_threads <= cpus : o.pin_threads;
    ctx->pool = rpa_pool_create(o.num_threads, pin);
    if (!ctx->pool) {
      free(ctx);
      return RPA_OUT_OF_MEMORY;
    }
  }
  if (o.log < 0) {
    const char *env = getenv("RPA_LOG");
    ctx->log = env && strcmp(env, "1") == 0;
  } else {
    ctx->log = o.log != 0;
  }
#if RPA_EMULATE_AVX512
  const int emulated = strcmp(backend->name, "avx512") == 0;
#else
  const int emulated = 0;
#endif
  if (ctx->log)
    fprintf(stderr, "rpa: kernel set %s%s (%s), %d thread(s)%s%s\n", backend->name,
            emulated ? " EMULATED on AVX2 (test-only build, -DRPA_EMULATE=avx512; slow)"
                     : "",
            isa && isa[0] ? "forced" : "best for this CPU", ctx->num_threads,
            !backend->kernels || !backend->kernels->has_bf16_dot ? ""
            : ctx->bf16_dot ? ", bf16 on vdpbf16ps"
                            : ", bf16 widened to f32 FMAs",
            !backend->kernels ? ""
            : ctx->prefetch_rows ? ", decode prefetches whole rows"
                                 : ", decode leaves long slots to the hardware prefetcher");
  *ctx_out = ctx;
  return RPA_OK;
}

void rpa_context_destroy(rpa_context *ctx) {
  if (!ctx) return;
  rpa_pool_destroy(ctx->pool);
  free(ctx->scratch);
  free(ctx);
}

const char *rpa_context_last_error(const rpa_context *ctx) {
  return ctx ? ctx->error : "ctx: NULL";
}

const char *rpa_context_isa(const rpa_context *ctx) {
  return ctx ? ctx->backend->name : "";
}

int rpa_context_num_threads(const rpa_context *ctx) {
  return ctx ? ctx->num_threads : 0;
}

size_t rpa_context_scratch_bytes(const rpa_context *ctx) {
  return ctx ? ctx->scratch_bytes : 0;
}

void *rpa_scratch(rpa_context *ctx, size_t bytes) {
  if (bytes <= ctx->scratch_bytes) return ctx->scratch;
  size_t n = (bytes + 63) & ~(size_t)63;
  void *p = NULL;
  if (posix_memalign(&p, 64, n) != 0) return NULL;
  free(ctx->scratch);
  ctx->scratch = p;
  ctx->scratch_bytes = n;
  return p;
}

