/* CPU features, checked with CPUID and, for AVX state, XGETBV (the OS must
   save the wide registers, not only the CPU have them). */
#ifndef RPA_CPU_H
#define RPA_CPU_H

typedef struct rpa_cpu {
  int avx2_fma; /* AVX2 + FMA + F16C, OS saves YMM */
  int avx512;   /* AVX-512 F, BW, DQ, VL, VBMI, BF16; OS saves ZMM, opmasks */
  int bf16_dot_fast; /* vdpbf16ps outruns widening to f32 + FMA (see cpu.c) */
  int prefetch_rows; /* decode prefetches whole K/V rows on every layout */
} rpa_cpu;

/* Detected once; thread-safe. */
const rpa_cpu *rpa_cpu_features(void);

#endif
