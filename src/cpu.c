#include "cpu.h"

#include <pthread.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
  unsigned int lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((unsigned long long)hi << 32) | lo;
}

static rpa_cpu detect(void) {
  rpa_cpu c = {0, 0, 0, 0};
  unsigned int a, b, cx, d;
  if (!__get_cpuid(1, &a, &b, &cx, &d)) return c;
  const int osxsave = (cx >> 27) & 1, fma = (cx >> 12) & 1, f16c = (cx >> 29) & 1;
  const int avx = (cx >> 28) & 1;
  if (!osxsave || !avx) return c;
  const unsigned long long xcr0 = xgetbv0();
  const int ymm_ok = (xcr0 & 0x6) == 0x6;           /* SSE and AVX state */
  const int zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM hi */
  if (__get_cpuid_max(0, 0) < 7) return c;
  __cpuid_count(7, 0, a, b, cx, d);
  const int avx2 = (b >> 5) & 1;
  const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1,
            vl = (b >> 31) & 1;
  c.avx2_fma = ymm_ok && avx2 && fma && f16c;
  const int vbmi = (cx >> 1) & 1;
  __cpuid_count(7, 1, a, b, cx, d);
  const int bf16 = (a >> 5) & 1;
  /* the avx512 kernel set uses vdpbf16ps and vpermi2b throughout */
  c.avx512 = c.avx2_fma && zmm_ok && f && dq && bw && vl && vbmi && bf16;
  /* vdpbf16ps does two multiply-adds per lane. AMD (Zen 4, Zen 5) issues
     it at the FMA rate, so it doubles bf16 throughput there; Intel issues
     it at most at half the FMA rate (measured: 0.5 per cycle against two
     FMAs on a Sapphire-Rapids-class host), where widening bf16 to f32 and
     using FMAs is faster. */
  unsigned int v0, v1, v2, v3;
  __cpuid(0, v0, v1, v2, v3);
  const int amd = v1 == 0x68747541u && v3 == 0x69746e65u && v2 == 0x444d4163u; /* AuthenticAMD */
  c.bf16_dot_fast = c.avx512 && amd;
  /* Decode's software prefetch (engine.c, decode_walk). On Zen 4 (family
     0x19 with AVX-512; Zen 3 has none) prefetching the whole K and V rows of
     a later head step, on every layout, was measured faster than leaving
     long contiguous slots to the hardware prefetcher: bf16 decode 32 x 4k,
     2 threads, combined layout 37 -> 26 ms, vLLM layout 49 -> 33 ms, Qwen
     28/4 heads 28 -> 23 ms. On the Zen 5 host measured before, the hardware
     alone streamed those slots faster (68% against 52% of the read
     bandwidth), and on the Zen 3 host (avx2) software prefetch of the next
     step made decode slower in every distance and hint tried; other CPUs
     keep that choice until measured. */
  __cpuid(1, v0, v1, v2, v3);
  const unsigned int base = (v0 >> 8) & 0xf;
  const unsigned int family = base == 0xf ? base + ((v0 >> 20) & 0xff) : base;
  c.prefetch_rows = amd && family == 0x19 && c.avx512;
  return c;
}
#else
static rpa_cpu detect(void) {
  rpa_cpu c = {0, 0, 0, 0};
  return c;
}
#endif

static rpa_cpu features;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static void init(void) { features = detect(); }

const rpa_cpu *rpa_cpu_features(void) {
  pthread_once(&once, init);
  return &features;
}
