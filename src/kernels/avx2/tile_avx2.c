/* The portable micro-kernels compiled for AVX2 + FMA + F16C (this folder's
   compile flags say so in CMakeLists.txt). */
#define RPA_TILE_OPS_NAME rpa_tile_ops_avx2
#define RPA_TILE_OPS_LABEL "avx2"
#include "../scalar/tile_portable.c"
