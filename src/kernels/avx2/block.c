/* The avx2 block step (kernels.h: block_begin, block_step): the shared
   step of ../common/block.h on 8 lanes. An S^T tile of 6 keys x 16 rows
   holds 12 accumulators, 2 q vectors and 1 broadcast K element (15 of the
   16 ymm registers); a P V tile 6 rows x 16 dims. */
#include "vec.h"

#define BLOCK_QK_KEYS 6
#define BLOCK_QK_VECS 2
#define BLOCK_PV_ROWS 6
#define BLOCK_PV_VECS 2
#define BLOCK_V_DIRECT 0
#include "../common/block.h"

_Static_assert((RPA_AVX2_BLOCK_KEYS + BLOCK_QK_KEYS - 1) / BLOCK_QK_KEYS * BLOCK_QK_KEYS <=
                   RPA_MAX_STEP_KEYS,
               "a step's S^T tiles fit the workspace");

void rpa_block_begin__avx2(const rpa_block *b);
void rpa_block_begin__avx2(const rpa_block *b) { block_stage_rows(b); }

void rpa_block_step__avx2(const rpa_block_args *a);
void rpa_block_step__avx2(const rpa_block_args *a) {
  if (a->n > 0) block_step_f32(a);
}
