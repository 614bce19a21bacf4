/* The avx2 rows step for fp8 e4m3 K/V (rows.h). Its codes are the values /
   256: the logit scale takes the 256 back here, and rows_end the output's;
   a step whose rows hold a NaN code runs with the NaN fix-up. */
#include "rows.h"

void rpa_rows_e4m3__avx2(const rpa_rows_args *a, int nan_codes) {
  if (nan_codes)
    rows_step_dt(a, E4M3_NAN, 1, a->kmul * 256.0f, 0);
  else
    rows_step_dt(a, E4M3_RAW, 1, a->kmul * 256.0f, 0);
}
