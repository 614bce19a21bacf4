/* Partial attention states and their merge: the one place that combines
   two softmaxes over disjoint key sets. The engine folds decode splits,
   shared-prefix parts and tree-mask parts with it; rpa_merge_states
   (merge.c) uses the same weights on normalised rows and their log-sum-exp.

   The state of one query row over a set of keys: running max m, sum
   l = sum exp(s - m) and the unnormalised output o = sum exp(s - m) v. The
   union of two sets has max m = max(m1, m2) and weights f_i = exp(m_i - m):
   l = l1 f1 + l2 f2, o = o1 f1 + o2 f2. A state with l == 0 saw no key and
   weighs nothing; a NaN anywhere propagates into l or o (the engine then
   stores the row as NaN). */
#ifndef RPA_STATE_H
#define RPA_STATE_H

#include <math.h>
#include <string.h>

/* The union's max, and the weights of states (m1, l1) and (m2, l2). */
static inline float rpa_merge_weights(float m1, float l1, float m2, float l2,
                                      float *f1, float *f2) {
  const float m = m1 > m2 ? m1 : m2;
  *f1 = l1 == 0.0f ? 0.0f : expf(m1 - m);
  *f2 = l2 == 0.0f ? 0.0f : expf(m2 - m);
  return m;
}

/* Folds state (m2, l2, o2) into (m, l, o), rows of n values. */
static inline void rpa_fold_state(float *m, float *l, float *o, float m2,
                                  float l2, const float *o2, int n) {
  if (l2 == 0.0f) return; /* no key: nothing to add */
  if (*l == 0.0f) {       /* nothing yet: take the part as it is */
    *m = m2;
    *l = l2;
    memcpy(o, o2, sizeof(float) * (size_t)n);
    return;
  }
  float f1, f2;
  const float mm = rpa_merge_weights(*m, *l, m2, l2, &f1, &f2);
  for (int d = 0; d < n; d++) o[d] = o[d] * f1 + o2[d] * f2;
  *l = *l * f1 + l2 * f2;
  *m = mm;
}

#endif
