/* AVX-512 micro-kernels. */
#define RPA_TILE_OPS_NAME rpa_tile_ops_avx512
#define RPA_TILE_OPS_LABEL "avx512"
#include "../scalar/tile_portable.c"
