/* The online softmax of both steps, written once over a set's vocabulary
   (include the set's vec.h first). A row keeps its running max m, sum l and
   unnormalised output o (kernels.h); a step's logits raise m, rescale l and
   o by exp(m_old - m_new), and add their weights exp(s - m) to l.

   Non-finite input (kernels.h): each row adds s - s over its visible logits
   to l (0, or NaN for a non-finite logit) and never lets a masked key's
   weight touch o. */
#ifndef RPA_KERNELS_COMMON_SOFTMAX_H
#define RPA_KERNELS_COMMON_SOFTMAX_H

/* s = cap * tanh(s / cap) when cap > 0. */
static ALWAYS_INLINE vf soft_cap(vf s, float cap) {
  if (cap > 0.0f) s = vf_mul(vf_set1(cap), vf_tanh(vf_mul(s, vf_set1(1.0f / cap))));
  return s;
}

/* Row r's maximum rises to mt (> m): its sum and output rescale by
   exp(m - mt), unless it holds nothing yet. */
static ALWAYS_INLINE void raise_max(float *m, float *l, float *o, int Dv,
                                    float mt) {
  if (*l != 0.0f) {
    const float alpha = expf(*m - mt);
    *l *= alpha;
    scale_row(o, Dv, alpha);
  }
  *m = mt;
}

/* ---- rows step: one row's logits along the vector ---------------------- */

/* The softmax of NR rows over the step's n keys (every key visible):
   part[r * RPA_MAX_STEP_KEYS + c] holds VL-lane partial dot products of row
   r with key c, whose lanes sum to the logit (keys n.. of the last vector
   are ignored). Leaves the weights in p[r * RPA_MAX_STEP_KEYS + c]. In
   phases over all rows, so that the rows' chains (reduce, max, exp, sum)
   overlap instead of running one after another. */
static ALWAYS_INLINE void rows_softmax(const vf *part, float *p, const int NR,
                                       int n, float kmul, float cap, float *m,
                                       float *l, float *o, int ldo, int Dv) {
  enum { MK = RPA_MAX_STEP_KEYS };
  const int nb = (n + VL - 1) / VL;
  const vf neg_inf = vf_set1(-INFINITY);
  vf bad[4], mx[4], sum[4];
  for (int r = 0; r < NR; r++) {
    /* s - s: 0 for a finite logit, NaN for a non-finite one (a NaN or an
       infinity in q or K), which then poisons the row's sum */
    bad[r] = vf_zero();
    mx[r] = neg_inf;
    for (int b = 0; b < nb; b++) {
      const vm valid = vm_first(n - VL * b);
      vf x = vf_mul(vf_reduce_keys(part + r * MK + VL * b), vf_set1(kmul));
      bad[r] = vf_add(bad[r], vf_keep(valid, vf_sub(x, x)));
      x = vf_select(valid, soft_cap(x, cap), neg_inf);
      vf_store(p + r * MK + VL * b, x);
      mx[r] = vf_max(mx[r], x);
    }
  }
  for (int r = 0; r < NR; r++) {
    const float mt = vf_hmax(mx[r]);
    if (mt > m[r]) raise_max(m + r, l + r, o + (int64_t)r * ldo, Dv, mt);
  }
  for (int r = 0; r < NR; r++) {
    const vf mr = vf_set1(m[r]);
    sum[r] = bad[r];
    for (int b = 0; b < nb; b++) {
      const vf e = vf_exp_neg(vf_sub(vf_load(p + r * MK + VL * b), mr));
      vf_store(p + r * MK + VL * b, e);
      sum[r] = vf_add(sum[r], e);
    }
  }
  for (int r = 0; r < NR; r++) l[r] += vf_hsum(sum[r]);
}

/* ---- block step: rows along the vector, keys one after another --------- */

/* The softmax of rows [r0, r0 + VL) (those below `rows`) over the step's n
   keys c.., logits st[i][r0 ..] (i < n, row stride ldr), times `mul` when
   it is not 1. A masked step (causal and not every key visible) lets row r
   see key c + i when c + i <= pos[r] and, with a window, pos[r] - (c + i)
   < window. Leaves the weights in st, updates m and l, and rescales the o
   rows whose maximum rose (lazily: only those that hold something). */
static ALWAYS_INLINE void block_softmax(float *st, int ldr, int r0, int rows,
                                        const int32_t *pos, int64_t c, int n,
                                        int masked, int32_t window, float cap,
                                        float mul, float *m, float *l,
                                        float *o, int ldo, int Dv) {
  const vm live = vm_first(rows - r0);
  const vf neg_inf = vf_set1(-INFINITY);
  const vi pv = vi_load_first(pos + r0, rows - r0);
  vf mt = neg_inf;
  /* s - s over the visible logits: 0, or NaN where q or K held a NaN or an
     infinity; it poisons the row's sum */
  vf bad = vf_zero();
  for (int i = 0; i < n; i++) {
    float *sp = st + (int64_t)i * ldr + r0;
    vf s = vf_load(sp);
    if (mul != 1.0f) s = vf_mul(s, vf_set1(mul));
    vm vis = live;
    if (masked) {
      const vi key = vi_set1((int32_t)(c + i));
      vis = vm_and(vis, vm_le_i(key, pv));
      if (window > 0) vis = vm_and(vis, vm_lt_i(vi_sub(pv, key), vi_set1(window)));
    }
    bad = vf_add(bad, vf_keep(vis, vf_sub(s, s)));
    s = soft_cap(s, cap);
    if (masked) s = vf_select(vm_or(vis, vm_not(live)), s, neg_inf);
    vf_store(sp, s);
    mt = vf_max(mt, s);
  }
  const vf m_old = vf_load_first(m + r0, rows - r0);
  const vf m_new = vf_max(m_old, mt);
  /* rows with nothing visible yet keep m = -inf: use 0 to avoid NaN */
  const vf m_use = vf_keep(vm_ne(m_new, neg_inf), m_new);
  vf sum = vf_zero();
  for (int i = 0; i < n; i++) {
    float *sp = st + (int64_t)i * ldr + r0;
    const vf e = vf_exp_neg(vf_sub(vf_load(sp), m_use));
    vf_store(sp, e);
    sum = vf_add(sum, e);
  }
  const vf alpha = vf_exp_neg(vf_sub(m_old, m_use));
  const vf l_old = vf_load_first(l + r0, rows - r0);
  vf_store_first(l + r0, rows - r0, vf_fma(l_old, alpha, vf_add(sum, bad)));
  vf_store_first(m + r0, rows - r0, m_new);
  unsigned grow = vm_bits(vm_and(vm_and(vm_gt(m_new, m_old), vm_ne(l_old, vf_zero())), live));
  if (grow) {
    float al[VL];
    vf_store(al, alpha);
    while (grow) {
      const int b = __builtin_ctz(grow);
      grow &= grow - 1;
      scale_row(o + (int64_t)(r0 + b) * ldo, Dv, al[b]);
    }
  }
}

/* A masked (row, key) has weight 0, and a tiled P V multiplies it all the
   same: 0 times a NaN or an infinity in V would reach rows that do not see
   that key. On the steps a mask cuts (a few per item), a V with such a
   value takes this path, which adds each row's visible keys only (weights
   st[i][r]). Returns 0, having done nothing, when V is finite. */
static inline int block_pv_visible_only(const rpa_block *b, int64_t c, int n,
                                        const float *st, int ldr,
                                        const void *const *vrows, float *o,
                                        int ldo) {
  if (rpa_rows_finite(vrows, n, b->Dv, b->dtype)) return 0;
  for (int r = 0; r < b->rows; r++)
    for (int i = 0; i < n; i++) {
      const int64_t key = c + i, p = b->pos[r];
      if (key > p || (b->window > 0 && p - key >= b->window)) continue;
      const float w = st[(int64_t)i * ldr + r];
      float *orow = o + (int64_t)r * ldo;
      for (int d = 0; d < b->Dv; d++) orow[d] += w * rpa_widen(vrows[i], b->dtype, d);
    }
  return 1;
}

#endif
