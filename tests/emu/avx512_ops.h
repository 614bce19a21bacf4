/* TEST-ONLY: every AVX-512 intrinsic that tests/emu/avx512_emu.h emulates,
   behind one calling convention, so tests/test_emu_avx512.c can run each on
   the same inputs three ways: the manual's pseudo-code (its references),
   the emulation, and (on a CPU with AVX-512) the real instruction.
   tests/emu/avx512_ops.c is written against the native intrinsic names and
   compiled twice: as rpa_emu_ops_emulated (the names renamed to the
   emulation, as the kernels are in the emulation flavour) and as
   rpa_emu_ops_native (with the AVX-512 -m flags; called only where CPUID
   and XGETBV say the CPU and OS run AVX-512 F/BW/DQ/VL/VBMI/BF16). */
#ifndef RPA_TESTS_EMU_AVX512_OPS_H
#define RPA_TESTS_EMU_AVX512_OPS_H

#include <stdint.h>

/* Operands: up to three 512-bit vectors (a, b, c; a 256- or 128-bit
   operand is the low bytes), a mask, an immediate, a memory source and a
   memory destination. */
typedef struct emu_op_in {
  _Alignas(64) uint8_t a[64];
  _Alignas(64) uint8_t b[64];
  _Alignas(64) uint8_t c[64];
  uint64_t k;
  int imm;
  const void *src; /* loads */
  void *dst;       /* stores (64-byte aligned where the op needs it) */
} emu_op_in;

/* Results: a vector (its low bytes for narrower ones), a mask or a float. */
typedef struct emu_op_out {
  _Alignas(64) uint8_t v[64];
  uint64_t k;
  float f;
} emu_op_out;

typedef void (*emu_op_fn)(const emu_op_in *in, emu_op_out *out);

typedef struct emu_op {
  const char *name; /* the intrinsic */
  emu_op_fn fn;
} emu_op;

/* Both tables list the same ops in the same order. */
extern const emu_op rpa_emu_ops_emulated[];
extern const emu_op rpa_emu_ops_native[];
extern const int rpa_emu_ops_count;

#endif
