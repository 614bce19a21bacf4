/* The avx2 rows step for f32 K/V (rows.h). */
#include "rows.h"

void rpa_rows_f32__avx2(const rpa_rows_args *a) { rows_step_dt(a, RPA_F32, 4, a->kmul, 0); }
