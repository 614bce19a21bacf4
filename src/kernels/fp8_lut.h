/* fp8 -> bf16 bits by magnitude, for table lookups in SIMD kernels:
   rpa_fp8_bf16_lut[format][byte][code] with format 0 = e4m3fn, 1 = e5m2,
   byte 0 = the low and 1 = the high byte of the bf16 bits of the fp8 value
   with code (7 bits, sign cleared). Every fp8 value is a bf16 value exactly
   (NaN -> 0x7fc0, e5m2 infinity -> 0x7f80). Built from the scalar
   definitions (src/convert.h) by rpa_fp8_lut_init(), which the kernel
   registry runs once before any set is used. */
#ifndef RPA_KERNELS_FP8_LUT_H
#define RPA_KERNELS_FP8_LUT_H

#include <stdint.h>

extern uint8_t rpa_fp8_bf16_lut[2][2][128];

void rpa_fp8_lut_init(void);

#endif
