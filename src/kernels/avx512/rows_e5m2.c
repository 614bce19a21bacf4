/* The avx512 rows step for fp8 e5m2 K/V on widened f32 FMAs (rows.h). */
#include "rows.h"

void rpa_rows_e5m2__avx512(const rpa_rows_args *a) {
  rows_step_dt(a, RPA_FP8_E5M2, 1, a->kmul, 0);
}
