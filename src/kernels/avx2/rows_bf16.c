/* The avx2 rows step for bf16 K/V (rows.h). */
#include "rows.h"

void rpa_rows_bf16__avx2(const rpa_rows_args *a) { rows_step_dt(a, RPA_BF16, 2, a->kmul, 0); }
