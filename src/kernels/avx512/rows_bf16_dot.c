/* The avx512 rows step for bf16 K/V on vdpbf16ps (rows.h). */
#include "rows.h"

void rpa_rows_bf16_dot__avx512(const rpa_rows_args *a) {
  rows_step_dt(a, RPA_BF16, 2, a->kmul, 1);
}
