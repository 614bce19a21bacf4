/* The tiled kernel sets: the engine plus each ISA's micro-kernels. */
#include "cpu.h"
#include "internal.h"
#include "kernels/tile.h"

static int runs_always(void) { return 1; }
static int runs_avx2(void) { return rpa_cpu_features()->avx2_fma; }
static int runs_avx512(void) { return rpa_cpu_features()->avx512; }

const rpa_kernel_set rpa_kernels_scalar = {"scalar", runs_always,
                                           rpa_engine_attention,
                                           &rpa_tile_ops_scalar};
const rpa_kernel_set rpa_kernels_avx2 = {"avx2", runs_avx2,
                                         rpa_engine_attention,
                                         &rpa_tile_ops_avx2};
const rpa_kernel_set rpa_kernels_avx512 = {"avx512", runs_avx512,
                                           rpa_engine_attention,
                                           &rpa_tile_ops_avx512};
