/* TEST-ONLY: tests/emu/avx512_ops.c on the real AVX-512 instructions
   (rpa_emu_ops_native). CMake compiles this file alone with the AVX-512
   -m flags; tests/test_emu_avx512.c calls it only where the CPU and the OS
   run AVX-512 F/BW/DQ/VL/VBMI/BF16. */
#define RPA_EMU_OPS_NATIVE 1
#include "avx512_ops.c"
