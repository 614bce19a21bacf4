/* TEST-ONLY: what the avx512 kernel files are compiled with in the
   emulation flavour (cmake -DRPA_EMULATE=avx512, which passes
   `-include tests/emu/avx512_emu_kernels.h` and AVX2 flags for
   the files of src/kernels/avx512/): every AVX-512 type and intrinsic they name is
   the AVX2 emulation of tests/emu/avx512_emu.h, so the set runs on any
   AVX2 host and gives the bits it gives on AVX-512 hardware. */
#ifndef RPA_TESTS_EMU_AVX512_EMU_KERNELS_H
#define RPA_TESTS_EMU_AVX512_EMU_KERNELS_H

#define RPA_EMU_AVX512_RENAME 1
#include "avx512_emu.h"

/* The kernels hold some vectors in registers with an empty asm statement,
   __asm__("" : "+v"(x)): a 64-byte operand has no register without
   AVX-512, so the compilers reject it. The statement computes nothing (it
   only steers register allocation), and here it becomes a no-op: __asm__
   is a function-like macro from this point on. The system headers the
   kernel files include are included first, so their own uses of __asm__
   (symbol redirects) are not touched; a header first included after this
   point that uses __asm__(...) in a declaration fails to compile rather
   than silently lose its redirect (((void)0) is no declarator part). A
   kernel-side macro for the barrier (math_avx512.h) would make this
   unnecessary. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __clang__
#pragma clang diagnostic ignored "-Wkeyword-macro"
#endif
#define __asm__(...) ((void)0)

#endif
