/* The fp8 -> bf16 lookup table (see fp8_lut.h), computed from the scalar
   widening that defines the dtypes. */
#include "fp8_lut.h"

#include <string.h>

#include "../convert.h"

uint8_t rpa_fp8_bf16_lut[2][2][128] __attribute__((aligned(64)));

void rpa_fp8_lut_init(void) {
  for (int code = 0; code < 128; code++) {
    const float v[2] = {rpa_widen_e4m3((uint8_t)code),
                        rpa_widen_e5m2((uint8_t)code)};
    for (int f = 0; f < 2; f++) {
      uint32_t u;
      memcpy(&u, &v[f], sizeof u);
      /* exact by construction: fp8 has at most 3 mantissa bits; NaN is
         made the canonical quiet bf16 NaN */
      const uint16_t b = v[f] != v[f] ? 0x7fc0u : (uint16_t)(u >> 16);
      rpa_fp8_bf16_lut[f][0][code] = (uint8_t)(b & 0xffu);
      rpa_fp8_bf16_lut[f][1][code] = (uint8_t)(b >> 8);
    }
  }
}
