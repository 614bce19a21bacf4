/* Every kernel of every kernel set this CPU runs, called directly (not
   through the engine) against a double-precision model: decode steps and
   prefill steps over key counts below, at and above the set's step, head
   dims that are not multiples of 16, every cache dtype, masks, soft cap and
   the bf16 dot product; the row helpers at every length up to 40; the fp8
   lookup table. Every buffer a kernel touches has guard bytes after it (and
   each K/V row is its own allocation, so a sanitizer sees over-reads); a
   kernel that writes past its buffer, or a workspace larger than the
   interface promises, fails the case. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "harness.h"
#include "internal.h"
#include "kernels/fp8_lut.h"
#include "kernels/kernels.h"

enum { GUARD = 64 };
static const unsigned char GUARD_BYTE = 0xa5;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

/* A buffer of n bytes followed by GUARD guard bytes, 64-byte aligned. */
static void *galloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n + GUARD) != 0) abort();
  memset((char *)p + n, GUARD_BYTE, GUARD);
  return p;
}
static int guard_ok(const void *p, size_t n) {
  for (size_t i = 0; i < GUARD; i++)
    if (((const unsigned char *)p)[n + i] != GUARD_BYTE) return 0;
  return 1;
}

static int round16(int x) { return (x + 15) / 16 * 16; }

/* n random rows of `cols` values in dtype, each its own allocation (exactly
   cols elements, then the guard); vals holds the widened values. */
typedef struct rows {
  int n, cols;
  rpa_dtype dt;
  void **row;
  double *vals; /* [n][cols] */
} rows;

static rows make_rows(int n, int cols, rpa_dtype dt, double amp) {
  rows r = {n, cols, dt, malloc(sizeof(void *) * (size_t)(n ? n : 1)),
            malloc(sizeof(double) * (size_t)(n * cols + 1))};
  const size_t es = rpa_dtype_size(dt);
  for (int i = 0; i < n; i++) {
    r.row[i] = galloc((size_t)cols * es);
    for (int d = 0; d < cols; d++) {
      rpa_store_f32(r.row[i], dt, d, (float)(urand() * amp));
      r.vals[(size_t)i * cols + d] = rpa_load_f32(r.row[i], dt, d);
    }
  }
  return r;
}
static int rows_guard_ok(const rows *r) {
  for (int i = 0; i < r->n; i++)
    if (!guard_ok(r->row[i], (size_t)r->cols * rpa_dtype_size(r->dt))) return 0;
  return 1;
}
static void free_rows(rows *r) {
  for (int i = 0; i < r->n; i++) free(r->row[i]);
  free(r->row);
  free(r->vals);
}

/* The model: row r's output over keys c with vis(r, c), logits
   q.k * kmul, soft cap. Writes out[Dv]; returns 0 if no key is visible. */
static int model_row(const double *q, int D, const rows *K, const rows *V,
                     int Dv, double kmul, double cap, const int32_t *pos_r,
                     int causal, int32_t window, double *out) {
  double m = -INFINITY, l = 0.0;
  double *s = malloc(sizeof(double) * (size_t)(K->n + 1));
  for (int c = 0; c < K->n; c++) {
    int vis = 1;
    if (pos_r && causal) {
      if (c > *pos_r) vis = 0;
      if (window > 0 && *pos_r - c >= window) vis = 0;
    }
    if (!vis) {
      s[c] = -INFINITY;
      continue;
    }
    double x = 0.0;
    for (int d = 0; d < D; d++) x += q[d] * K->vals[(size_t)c * D + d];
    x *= kmul;
    if (cap > 0.0) x = cap * tanh(x / cap);
    s[c] = x;
    if (x > m) m = x;
  }
  for (int d = 0; d < Dv; d++) out[d] = 0.0;
  if (m == -INFINITY) {
    free(s);
    return 0;
  }
  for (int c = 0; c < K->n; c++) {
    if (s[c] == -INFINITY) continue;
    const double p = exp(s[c] - m);
    l += p;
    for (int d = 0; d < Dv; d++) out[d] += p * V->vals[(size_t)c * Dv + d];
  }
  for (int d = 0; d < Dv; d++) out[d] /= l;
  free(s);
  return 1;
}

/* What one case of a step kernel gets. */
typedef struct step_case {
  int rows, D, Dv, nkeys;
  rpa_dtype dt;
  float cap;
  /* prefill only */
  int causal;
  int32_t window;
  int bf16_ok;
} step_case;

typedef struct item_bufs {
  int ld, ldo, ldr;
  float *q, *o, *m, *l, *qs, *work;
  size_t qb, ob, rb, qsb, wb;
  double *qd; /* [rows][D] the query values */
} item_bufs;

static item_bufs make_item(const step_case *sc, int bf16_q) {
  item_bufs b;
  b.ld = round16(sc->D);
  b.ldo = round16(sc->Dv);
  b.ldr = round16(sc->rows);
  b.qb = sizeof(float) * (size_t)sc->rows * b.ld;
  b.ob = sizeof(float) * (size_t)sc->rows * b.ldo;
  b.rb = sizeof(float) * (size_t)sc->rows;
  b.qsb = sizeof(float) * rpa_kernel_staging_floats(b.ld, b.ldr);
  b.wb = sizeof(float) * rpa_kernel_workspace_floats(b.ld, b.ldo, b.ldr);
  b.q = galloc(b.qb);
  b.o = galloc(b.ob);
  b.m = galloc(b.rb);
  b.l = galloc(b.rb);
  b.qs = galloc(b.qsb);
  b.work = galloc(b.wb);
  b.qd = malloc(sizeof(double) * (size_t)sc->rows * sc->D);
  for (int r = 0; r < sc->rows; r++) {
    for (int d = 0; d < b.ld; d++) {
      float x = d < sc->D ? (float)urand() : 0.0f;
      if (bf16_q) x = rpa_bf16_to_f32(rpa_f32_to_bf16(x));
      b.q[(size_t)r * b.ld + d] = x;
      if (d < sc->D) b.qd[(size_t)r * sc->D + d] = x;
    }
    b.m[r] = -INFINITY;
    b.l[r] = 0.0f;
  }
  memset(b.o, 0, b.ob);
  return b;
}

static int item_guards_ok(const item_bufs *b) {
  return guard_ok(b->q, b->qb) && guard_ok(b->o, b->ob) &&
         guard_ok(b->m, b->rb) && guard_ok(b->l, b->rb) &&
         guard_ok(b->qs, b->qsb) && guard_ok(b->work, b->wb);
}

static void free_item(item_bufs *b) {
  free(b->q);
  free(b->o);
  free(b->m);
  free(b->l);
  free(b->qs);
  free(b->work);
  free(b->qd);
}

/* Compares o / l of every row with the model; returns the worst error. */
static double compare_rows(const step_case *sc, const item_bufs *b,
                           const rows *K, const rows *V, double kmul,
                           const int32_t *pos, int *bad_l) {
  double worst = 0.0;
  double *ref = malloc(sizeof(double) * (size_t)sc->Dv);
  *bad_l = 0;
  for (int r = 0; r < sc->rows; r++) {
    const int any = model_row(b->qd + (size_t)r * sc->D, sc->D, K, V, sc->Dv,
                              kmul, sc->cap, pos ? pos + r : NULL, sc->causal,
                              sc->window, ref);
    if (!any) {
      if (b->l[r] != 0.0f) *bad_l = 1;
      continue;
    }
    if (!(b->l[r] > 0.0f)) {
      *bad_l = 1;
      continue;
    }
    for (int d = 0; d < sc->Dv; d++) {
      const double got = b->o[(size_t)r * b->ldo + d] / b->l[r];
      const double e = fabs(got - ref[d]);
      if (!(e <= worst)) worst = e; /* NaN propagates as the worst */
    }
  }
  free(ref);
  return worst;
}

/* bf16_weights: the step rounds the softmax weights to bf16 before P V
   (the bf16 dot product: decode on bf16 and fp8 rows, prefill on bf16) */
static double tolerance(int bf16_weights) { return bf16_weights ? 2e-2 : 2e-4; }

static void run_decode_case(const rpa_kernels *k, const step_case *sc) {
  char name[160];
  snprintf(name, sizeof name,
           "%s decode rows=%d D=%d Dv=%d keys=%d %s cap=%g bf16_ok=%d", k->name,
           sc->rows, sc->D, sc->Dv, sc->nkeys, rpa_dtype_name(sc->dt),
           (double)sc->cap, sc->bf16_ok);
  th_begin(name);
    rows K = make_rows(sc->nkeys, sc->D, sc->dt, 1.0);
    rows V = make_rows(sc->nkeys, sc->Dv, sc->dt, 1.0);
    item_bufs b = make_item(sc, sc->bf16_ok);
    const float kmul = 0.3f;
    k->rows_begin(b.q, b.ld, sc->rows, sc->D, sc->dt, sc->bf16_ok);
    rpa_rows_args a;
    a.q = b.q;
    a.ld = b.ld;
    a.rows = sc->rows;
    a.kmul = kmul;
    a.cap = sc->cap;
    a.D = sc->D;
    a.Dv = sc->Dv;
    a.dtype = sc->dt;
    a.m = b.m;
    a.l = b.l;
    a.o = b.o;
    a.ldo = b.ldo;
    a.work = b.work;
    a.bf16_ok = sc->bf16_ok;
    const int step = k->rows_keys;
    for (int c = 0; c < sc->nkeys; c += step) {
      const int n = sc->nkeys - c < step ? sc->nkeys - c : step;
      const int nn = sc->nkeys - c - n < step ? sc->nkeys - c - n : step;
      a.krows = (const void *const *)K.row + c;
      a.vrows = (const void *const *)V.row + c;
      a.n = n;
      a.knext = (const void *const *)K.row + c + n;
      a.vnext = (const void *const *)V.row + c + n;
      a.n_next = nn;
      a.next_whole = (c / step) & 1; /* both prefetch shapes */
      k->rows_step(&a);
    }
    k->rows_end(b.o, b.ldo, sc->rows, sc->Dv, sc->dt, sc->bf16_ok);
    int bad_l;
    const double err = compare_rows(sc, &b, &K, &V, kmul, NULL, &bad_l);
    CHECK(!bad_l, "a row's sum is wrong");
    CHECK(err <= tolerance(sc->bf16_ok && k->has_bf16_dot && sc->dt != RPA_F32 &&
                           sc->dt != RPA_F16),
          "max error %g", err);
    CHECK(item_guards_ok(&b), "a kernel wrote past a buffer");
    CHECK(rows_guard_ok(&K) && rows_guard_ok(&V), "a kernel wrote into K/V");
    free_item(&b);
    free_rows(&K);
    free_rows(&V);
  th_end();
}

/* A prefill item of `tokens` tokens x G rows at the end of a sequence of
   nkeys keys (positions nkeys - tokens ..), walked in steps as the engine
   walks them: keys [lo, hi) of the union of the rows' visible ranges. */
static void run_prefill_case(const rpa_kernels *k, const step_case *sc,
                             int G) {
  char name[200];
  snprintf(name, sizeof name,
           "%s prefill rows=%d (G=%d) D=%d Dv=%d keys=%d %s cap=%g causal=%d "
           "window=%d bf16_ok=%d",
           k->name, sc->rows, G, sc->D, sc->Dv, sc->nkeys,
           rpa_dtype_name(sc->dt), (double)sc->cap, sc->causal,
           (int)sc->window, sc->bf16_ok);
  th_begin(name);
    const int tokens = sc->rows / G;
    rows K = make_rows(sc->nkeys, sc->D, sc->dt, 1.0);
    rows V = make_rows(sc->nkeys, sc->Dv, sc->dt, 1.0);
    const int bf16_q = sc->bf16_ok;
    item_bufs b = make_item(sc, bf16_q);
    int32_t *pos = galloc(sizeof(int32_t) * (size_t)sc->rows);
    const int prefix = sc->nkeys - tokens;
    for (int r = 0; r < sc->rows; r++) pos[r] = prefix + r / G;
    const float kmul = 0.3f;
    rpa_block it;
    it.q = b.q;
    it.ld = b.ld;
    it.qs = b.qs;
    it.ldr = b.ldr;
    it.rows = sc->rows;
    it.pos = pos;
    it.D = sc->D;
    it.Dv = sc->Dv;
    it.dtype = sc->dt;
    it.kmul = kmul;
    it.cap = sc->cap;
    it.causal = sc->causal;
    it.window = sc->window;
    it.bf16_ok = sc->bf16_ok;
    k->block_begin(&it);
    int64_t lo = 0, hi = sc->nkeys;
    if (sc->causal) {
      hi = prefix + tokens; /* the last row sees up to its own position */
      if (sc->window > 0 && prefix - sc->window + 1 > 0)
        lo = prefix - sc->window + 1;
    }
    rpa_block_args a;
    a.block = &it;
    a.m = b.m;
    a.l = b.l;
    a.o = b.o;
    a.ldo = b.ldo;
    a.work = b.work;
    const int step = k->block_keys;
    for (int64_t c = lo; c < hi; c += step) {
      const int n = (int)(hi - c < step ? hi - c : step);
      int full = 1;
      if (sc->causal) {
        if (c + n - 1 > prefix) full = 0;
        if (sc->window > 0 && prefix + tokens - 1 - c >= sc->window) full = 0;
      }
      a.c = c;
      a.n = n;
      a.full = full;
      a.krows = (const void *const *)K.row + c;
      a.vrows = (const void *const *)V.row + c;
      k->block_step(&a);
    }
    int bad_l;
    const double err = compare_rows(sc, &b, &K, &V, kmul, pos, &bad_l);
    CHECK(!bad_l, "a row's sum is wrong");
    CHECK(err <= tolerance(sc->bf16_ok && k->has_bf16_dot && sc->dt == RPA_BF16),
          "max error %g", err);
    CHECK(item_guards_ok(&b) && guard_ok(pos, sizeof(int32_t) * (size_t)sc->rows),
          "a kernel wrote past a buffer");
    CHECK(rows_guard_ok(&K) && rows_guard_ok(&V), "a kernel wrote into K/V");
    free(pos);
    free_item(&b);
    free_rows(&K);
    free_rows(&V);
  th_end();
}

static const int head_dims[] = {8, 40, 64, 72, 80, 104, 128};
static const rpa_dtype dtypes[] = {RPA_F32, RPA_BF16, RPA_F16, RPA_FP8_E4M3,
                                   RPA_FP8_E5M2};
enum { NUM_DIMS = sizeof head_dims / sizeof head_dims[0], NUM_DT = 5 };

static void test_steps(const rpa_kernels *k) {
  const int quick = th_quick();
  /* key counts below, at and above one step, and several steps */
  const int ds = k->rows_keys, ps = k->block_keys;
  const int dkeys[] = {1, ds - 1, ds, ds + 1, 3 * ds + 5};
  const int decode_rows[] = {1, 3, 4, 5, 8};
  for (int di = 0; di < NUM_DIMS; di++)
    for (int t = 0; t < NUM_DT; t++)
      for (int ki = 0; ki < 5; ki++) {
        if (quick && (ki + di + t) % 3) continue;
        step_case sc = {0};
        sc.D = head_dims[di];
        sc.Dv = (di + ki) % 4 == 3 ? head_dims[(di + 2) % NUM_DIMS] : sc.D;
        sc.dt = dtypes[t];
        sc.nkeys = dkeys[ki];
        sc.rows = decode_rows[(di + t + ki) % 5];
        sc.cap = ki == 2 ? 5.0f : 0.0f;
        run_decode_case(k, &sc);
        if (sc.dt == RPA_BF16 || sc.dt == RPA_FP8_E4M3 || sc.dt == RPA_FP8_E5M2) {
          sc.bf16_ok = 1; /* q in bf16 values: the dot-product path */
          run_decode_case(k, &sc);
        }
      }
  /* prefill: tokens x G rows at the end of the keys; causal, window,
     non-causal; f32 and bf16 q (bf16_ok) */
  const int pkeys[] = {1, ps - 1, ps, ps + 1, 2 * ps + 7, 5 * ps + 3};
  const int groups[] = {1, 4, 7};
  for (int di = 0; di < NUM_DIMS; di++)
    for (int t = 0; t < NUM_DT; t++)
      for (int ki = 0; ki < 6; ki++) {
        if (quick && (ki + di + t) % 3) continue;
        const int G = groups[(di + ki) % 3];
        step_case sc = {0};
        sc.D = head_dims[di];
        sc.Dv = (di + t) % 5 == 4 ? head_dims[(di + 3) % NUM_DIMS] : sc.D;
        sc.dt = dtypes[t];
        sc.nkeys = pkeys[ki];
        int tokens = 1 + (ki * 7 + di) % 9;
        if (tokens > sc.nkeys) tokens = sc.nkeys;
        sc.rows = tokens * G;
        sc.causal = (ki + t) % 4 != 3;
        sc.window = sc.causal && ki % 3 == 1 ? 1 + sc.nkeys / 3 : 0;
        sc.cap = di % 3 == 1 ? 5.0f : 0.0f;
        sc.bf16_ok = 0;
        run_prefill_case(k, &sc, G);
        if (sc.dt == RPA_BF16 || (ki % 2 == 0 && t >= 3)) {
          sc.bf16_ok = 1; /* q in bf16 values: the dot-product path */
          run_prefill_case(k, &sc, G);
        }
      }
}

static void test_row_helpers(const rpa_kernels *k) {
  char name[96];
  snprintf(name, sizeof name, "%s load_row / store_row / scale, n = 1..40",
           k->name);
  th_begin(name);
    for (int n = 1; n <= 40; n++)
      for (int t = 0; t < NUM_DT; t++) {
        const rpa_dtype dt = dtypes[t];
        const size_t es = rpa_dtype_size(dt);
        void *src = galloc((size_t)n * es);
        for (int i = 0; i < n; i++)
          rpa_store_f32(src, dt, i, (float)(urand() * 100.0));
        float *dst = galloc(sizeof(float) * (size_t)n);
        k->load_row(dst, src, dt, n);
        for (int i = 0; i < n; i++) {
          const float want = rpa_load_f32(src, dt, i);
          CHECK(memcmp(&dst[i], &want, sizeof want) == 0,
                "load_row %s n=%d [%d]: %g, want %g", rpa_dtype_name(dt), n, i,
                (double)dst[i], (double)want);
        }
        CHECK(guard_ok(dst, sizeof(float) * (size_t)n), "load_row overran");
        if (dt == RPA_F32 || dt == RPA_BF16 || dt == RPA_F16) {
          void *out = galloc((size_t)n * es);
          k->store_row(out, dt, dst, n, 0.75f);
          for (int i = 0; i < n; i++) {
            float want;
            const float x = dst[i] * 0.75f;
            want = dt == RPA_F32    ? x
                   : dt == RPA_BF16 ? rpa_bf16_to_f32(rpa_f32_to_bf16(x))
                                    : rpa_f16_to_f32(rpa_f32_to_f16(x));
            const float got = rpa_load_f32(out, dt, i);
            CHECK(memcmp(&got, &want, sizeof want) == 0,
                  "store_row %s n=%d [%d]: %g, want %g", rpa_dtype_name(dt), n,
                  i, (double)got, (double)want);
          }
          CHECK(guard_ok(out, (size_t)n * es), "store_row overran");
          free(out);
        }
        k->scale(dst, n, 2.0f);
        for (int i = 0; i < n; i++)
          CHECK(dst[i] == 2.0f * rpa_load_f32(src, dt, i), "scale [%d]", i);
        CHECK(guard_ok(dst, sizeof(float) * (size_t)n), "scale overran");
        free(src);
        free(dst);
      }
  th_end();
}

static void test_table(const rpa_kernels *k) {
  char name[96];
  snprintf(name, sizeof name, "%s: every entry set, step sizes in range",
           k->name);
  th_begin(name);
    CHECK(k->rows_begin && k->rows_step && k->rows_end &&
              k->block_begin && k->block_step && k->load_row &&
              k->store_row && k->scale,
          "an entry is NULL");
    CHECK(k->rows_keys >= 1 && k->rows_keys <= RPA_MAX_STEP_KEYS,
          "decode_keys %d", k->rows_keys);
    CHECK(k->block_keys >= 1 && k->block_keys <= RPA_MAX_STEP_KEYS,
          "prefill_keys %d", k->block_keys);
  th_end();
}

static void test_fp8_lut(void) {
  th_begin("fp8 lookup table: the bf16 bits of every fp8 magnitude");
    rpa_backend_at(0); /* the registry builds the tables */
    for (int f = 0; f < 2; f++)
      for (int code = 0; code < 128; code++) {
        const float v = f ? rpa_widen_e5m2((uint8_t)code)
                          : rpa_widen_e4m3((uint8_t)code);
        const uint16_t want = isnan(v) ? 0x7fc0 : rpa_f32_to_bf16(v);
        const uint16_t got = (uint16_t)(rpa_fp8_bf16_lut[f][0][code] |
                                        rpa_fp8_bf16_lut[f][1][code] << 8);
        CHECK(got == want, "format %d code %d: 0x%04x, want 0x%04x", f, code,
              got, want);
        CHECK(isnan(v) || rpa_bf16_to_f32(got) == v,
              "format %d code %d is not exact", f, code);
      }
  th_end();
}

int main(void) {
  test_fp8_lut();
  int sets = 0;
  for (int i = 0; i < rpa_backend_count(); i++) {
    const rpa_backend *b = rpa_backend_at(i);
    if (!b->kernels) continue; /* the reference has no kernels */
    const char *only = getenv("RPA_ISA");
    if (only && only[0] && strcmp(only, "best") != 0 && strcmp(only, b->name))
      continue;
    if (!b->runs_here()) {
      printf("test_kernels: kernel set %s not run: this CPU cannot run it\n",
             b->name);
      continue;
    }
    sets++;
    test_table(b->kernels);
    test_row_helpers(b->kernels);
    test_steps(b->kernels);
  }
  printf("test_kernels: %d kernel set(s) tested\n", sets);
  return th_finish("test_kernels");
}
