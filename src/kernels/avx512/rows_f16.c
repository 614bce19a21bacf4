/* The avx512 rows step for f16 K/V (rows.h). */
#include "rows.h"

void rpa_rows_f16__avx512(const rpa_rows_args *a) {
  rows_step_dt(a, RPA_F16, 2, a->kmul, 0);
}
