/* The `avx2` set: the portable kernels compiled for AVX2 + FMA + F16C (this
   folder's compile flags, in CMakeLists.txt). */
#define RPA_KSUFFIX avx2
#define RPA_KLABEL "avx2"
#define RPA_KTABLE rpa_kernels_avx2
#include "../scalar/kernels_scalar.c"
