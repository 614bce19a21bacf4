/* Table, comparison, headline, JSON and roofline plot; see report.h. */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void bench_result_finish(bench_result *r, const bench_limits *lim) {
  const int bf16 = lim->bf16_gflops > 0;
  r->peak_kind = bench_peak_for(r->w->q_dtype, r->w->kv_dtype, bf16);
  r->peak_gbps = lim->read_gbps;
  /* bf16 work may run on either instruction (rpa picks by CPU): its peak is
     the faster of the two, so a kernel never looks better for using the
     slower one. */
  if (r->peak_kind == BENCH_PEAK_BF16_DOT && lim->f32_gflops >= lim->bf16_gflops)
    r->peak_kind = BENCH_PEAK_F32_FMA;
  r->peak_gflops = r->peak_kind == BENCH_PEAK_BF16_DOT ? lim->bf16_gflops
                                                        : lim->f32_gflops;
  if (r->failed || r->t_median <= 0) return;
  r->gbps = (double)r->count.bytes / r->t_median / 1e9;
  r->gflops = (double)r->count.flops / r->t_median / 1e9;
  r->mbu = r->peak_gbps > 0 ? r->gbps / r->peak_gbps : 0;
  r->mfu = r->peak_gflops > 0 ? r->gflops / r->peak_gflops : 0;
  r->roofline_s = bench_roofline_s(r->count.bytes, r->count.flops,
                                   r->peak_gbps * 1e9, r->peak_gflops * 1e9);
  r->roofline_ratio = r->roofline_s > 0 ? r->t_median / r->roofline_s : 0;
}

void bench_print_limits(FILE *f, const bench_cpu *cpu, const bench_limits *lim,
                        size_t bw_bytes) {
  char label[96];
  fprintf(f, "limits measured now, %d thread%s pinned:\n", lim->threads,
          lim->threads == 1 ? "" : "s");
  snprintf(label, sizeof label, "streaming read (%zu MiB buffer, %.0fx the L3)",
           bw_bytes >> 20,
           cpu->l3_bytes ? (double)bw_bytes / (double)cpu->l3_bytes : 0.0);
  fprintf(f, "  %-44s %8.1f GB/s\n", label, lim->read_gbps);
  snprintf(label, sizeof label, "float32 FMA peak (%s)", lim->f32_isa);
  fprintf(f, "  %-44s %8.1f GFLOP/s\n", label, lim->f32_gflops);
  if (lim->bf16_gflops > 0)
    fprintf(f, "  %-44s %8.1f GFLOP/s\n", "bf16 dot peak (vdpbf16ps)",
            lim->bf16_gflops);
  else
    fprintf(f, "  %-44s %8s (no AVX512-BF16)\n", "bf16 dot peak (vdpbf16ps)",
            "n/a");
}

static void format_check(const bench_result *r, char *buf, size_t len) {
  if (r->failed)
    snprintf(buf, len, "FAILED: %s", r->error);
  else if (!r->checked)
    snprintf(buf, len, strcmp(r->backend, "ref") == 0 ? "(is the reference)"
                                                      : "not checked");
  else
    snprintf(buf, len, "%s %s (err %.1e)", r->check.ok ? "ok" : "MISMATCH",
             r->check.note, r->check.max_abs_err);
}

void bench_print_table(FILE *f, const bench_result *r, int n) {
  int width = 4;
  for (int i = 0; i < n; i++) {
    const int l = (int)strlen(r[i].w->name);
    if (l > width) width = l;
  }
  fprintf(f, "%3s  %-*s %-7s %3s %4s %10s %5s %7s %8s %6s %6s %6s  %s\n", "#",
          width, "case", "backend", "thr", "reps", "median ms", "IQR%",
          "GB/s", "GFLOP/s", "MBU", "MFU", "xroof", "reference check");
  for (int i = 0; i < n; i++) {
    const bench_result *x = &r[i];
    char check[320];
    format_check(x, check, sizeof check);
    if (x->failed) {
      fprintf(f, "%3d  %-*s %-7s %3d  %s\n", i + 1, width, x->w->name,
              x->backend, x->threads, check);
      continue;
    }
    char reps[16], iqr[16] = "-";
    snprintf(reps, sizeof reps, "%d%s", x->reps, x->warmup_sample ? "w" : "");
    if (x->reps >= 4)
      snprintf(iqr, sizeof iqr, "%.1f", 100 * (x->t_p75 - x->t_p25) / x->t_median);
    fprintf(f,
            "%3d  %-*s %-7s %3d %4s %10.3f %5s %7.1f %8.1f %5.1f%% %5.1f%% %6.2f  "
            "%s\n",
            i + 1, width, x->w->name, x->backend, x->threads, reps,
            1e3 * x->t_median, iqr, x->gbps, x->gflops, 100 * x->mbu,
            100 * x->mfu, x->roofline_ratio, check);
  }
  fprintf(f,
          "bytes and FLOPs as counting.h counts them; MBU against the streaming "
          "read, MFU against the f32 FMA peak,\nor for bf16 q with bf16/fp8 KV "
          "the bf16 dot peak where the CPU has it and it is higher; xroof =\n"
          "time / roofline time; reps 1w: a call slower than the time budget, "
          "timed once (its warm-up call).\n");
}

void bench_print_comparison(FILE *f, const bench_result *r, int n,
                            char backends[][32], int num_backends) {
  if (num_backends < 2) return;
  fprintf(f, "\ntime of %s / time of each other backend (x faster than %s):\n",
          backends[0], backends[0]);
  for (int i = 0; i < n; i++) {
    if (strcmp(r[i].backend, backends[0]) != 0 || r[i].failed) continue;
    fprintf(f, "  %-46s", r[i].w->name);
    for (int j = 0; j < n; j++)
      if (j != i && r[j].w == r[i].w && !r[j].failed && r[j].t_median > 0)
        fprintf(f, "  %s %.2fx", r[j].backend, r[i].t_median / r[j].t_median);
    fputc('\n', f);
  }
}

/* ---- headline --------------------------------------------------------------- */

typedef enum group { DECODE, DECODE_ONE_TOKEN_PAGES, PREFILL_BF16, PREFILL_F32,
                     MIXED, NUM_GROUPS } group;

/* MBU is the measure of memory-bound decode only: a decode whose roofline
   is compute-bound (MQA with many query heads, say) is left out of it. */
static int memory_bound(const bench_result *r) {
  return r->peak_gbps > 0 && r->peak_gflops > 0 &&
         (double)r->count.bytes / r->peak_gbps >=
             (double)r->count.flops / r->peak_gflops;
}

static int in_group(const bench_result *r, group g) {
  const bench_workload *w = r->w;
  const int decode = !strcmp(r->kind, "decode") && w->kv_dtype != RPA_F32 &&
                     memory_bound(r);
  switch (g) {
    case DECODE: return decode && w->page_size >= 16;
    case DECODE_ONE_TOKEN_PAGES: return decode && w->page_size == 1;
    case PREFILL_BF16: /* trees: their own row (tree_vs_chain) */
      return !strcmp(r->kind, "prefill") && w->q_dtype == RPA_BF16 &&
             w->kv_dtype == RPA_BF16 && !w->tree;
    case PREFILL_F32:
      return !strcmp(r->kind, "prefill") && w->q_dtype == RPA_F32 &&
             w->kv_dtype == RPA_F32 && !w->tree;
    case MIXED: return !strcmp(r->kind, "mixed");
    default: return 0;
  }
}

static double metric(const bench_result *r, group g) {
  return g == MIXED ? r->roofline_ratio : g <= DECODE_ONE_TOKEN_PAGES ? r->mbu : r->mfu;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Twins: each case whose name holds `word` against the case named the
   same with `twin_word` instead (same backend): the worst of time / twin's
   time (or, inverted, twin's / its), over the run's pairs; 0 pairs: -1. */
static double twin_ratio(const bench_result *r, int n, const char *backend,
                         const char *word, const char *twin_word, int inverted,
                         int *pairs) {
  double worst = -1;
  *pairs = 0;
  for (int i = 0; i < n; i++) {
    const char *t = strstr(r[i].w->name, word);
    if (strcmp(r[i].backend, backend) || !t || r[i].failed) continue;
    char twin[sizeof r[i].w->name];
    snprintf(twin, sizeof twin, "%.*s%s%s", (int)(t - r[i].w->name),
             r[i].w->name, twin_word, t + strlen(word));
    for (int j = 0; j < n; j++) {
      if (strcmp(r[j].backend, backend) || strcmp(r[j].w->name, twin) ||
          r[j].failed || !(r[j].t_median > 0) || !(r[i].t_median > 0))
        continue;
      const double x = inverted ? r[j].t_median / r[i].t_median
                                : r[i].t_median / r[j].t_median;
      /* worst: the largest time ratio, or the smallest speed-up */
      if (worst < 0 || (inverted ? x < worst : x > worst)) worst = x;
      (*pairs)++;
    }
  }
  return worst;
}

/* Tree masks against causal chains of the same length (target 1.2x), and
   shared prefixes against the same batch without the group (a speed-up). */
static void twin_rows(FILE *f, const bench_result *r, int n,
                      const char *backend) {
  int pairs;
  double x = twin_ratio(r, n, backend, "tree", "chain", 0, &pairs);
  if (pairs)
    fprintf(f, "  %-42s %6.2fx  target <= 1.20x  %s (worst of %d pair%s)\n",
            "tree mask time / causal chain time", x,
            x <= 1.20 ? "met" : "not met", pairs, pairs == 1 ? "" : "s");
  x = twin_ratio(r, n, backend, ".shared.", ".unshared.", 1, &pairs);
  if (pairs)
    fprintf(f, "  %-42s %6.2fx  (least of %d pair%s; bytes count the prefix "
            "once)\n",
            "shared prefix: unshared time / shared time", x, pairs,
            pairs == 1 ? "" : "s");
}

void bench_print_headline(FILE *f, const bench_result *r, int n,
                          char backends[][32], int num_backends,
                          const bench_cpu *cpu) {
  static const struct {
    const char *label;
    double target;
    int lower_is_better;
  } targets[NUM_GROUPS] = {
      {"decode MBU (bf16/f16/fp8 KV, page >= 16)", 0.85, 0},
      {"decode MBU (page size 1)", 0.70, 0},
      {"prefill MFU, bf16 (of the best bf16 peak)", 0.70, 0},
      {"prefill MFU, f32 (of the f32 peak)", 0.75, 0},
      {"mixed time / roofline time", 1.15, 1},
  };
  double *values = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
  if (!values) return;
  for (int b = 0; b < num_backends; b++) {
    int threads = 0;
    for (int i = 0; i < n; i++)
      if (!strcmp(r[i].backend, backends[b])) threads = r[i].threads;
    fprintf(f,
            "\nheadline: %s, %d thread%s (targets from docs/performance.md; a row is met "
            "when every case in it is; decode rows: memory-bound cases)\n",
            backends[b], threads, threads == 1 ? "" : "s");
    for (int g = 0; g < NUM_GROUPS; g++) {
      int count = 0, failed = 0;
      for (int i = 0; i < n; i++) {
        if (strcmp(r[i].backend, backends[b]) || !in_group(&r[i], (group)g))
          continue;
        if (r[i].failed)
          failed++;
        else
          values[count++] = metric(&r[i], (group)g);
      }
      if (count == 0 && failed == 0) {
        if (g != DECODE_ONE_TOKEN_PAGES)
          fprintf(f, "  %-42s    n/a  (no such case in this run)\n",
                  targets[g].label);
        continue;
      }
      qsort(values, (size_t)count, sizeof(double), cmp_double);
      const int lower = targets[g].lower_is_better;
      const double median =
          count == 0       ? 0
          : count % 2 == 1 ? values[count / 2]
                           : 0.5 * (values[count / 2 - 1] + values[count / 2]);
      const double worst = count ? (lower ? values[count - 1] : values[0]) : 0;
      const int met = failed == 0 && count > 0 &&
                      (lower ? worst <= targets[g].target
                             : worst >= targets[g].target);
      char value[32], tgt[32], spread[64] = "";
      if (g == MIXED) {
        snprintf(value, sizeof value, "%.2fx", median);
        snprintf(tgt, sizeof tgt, "<= %.2fx", targets[g].target);
      } else {
        snprintf(value, sizeof value, "%.1f%%", 100 * median);
        snprintf(tgt, sizeof tgt, ">= %.0f%%", 100 * targets[g].target);
      }
      if (count > 1)
        snprintf(spread, sizeof spread, " (median of %d, worst %.3g%s)", count,
                 g == MIXED ? worst : 100 * worst, g == MIXED ? "x" : "%");
      if (failed)
        snprintf(spread + strlen(spread), sizeof spread - strlen(spread),
                 " %d failed", failed);
      fprintf(f, "  %-42s %7s  target %-9s %s%s\n", targets[g].label, value,
              tgt, met ? "met" : "not met", spread);
    }
    twin_rows(f, r, n, backends[b]);
    if (!cpu->avx512_bf16)
      fprintf(f, "  (no AVX512-BF16 here: bf16 MFU is against the f32 peak)\n");
  }
  free(values);
}

/* ---- JSON ------------------------------------------------------------------ */

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    const unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

static void json_number(FILE *f, double x) {
  if (isfinite(x))
    fprintf(f, "%.6g", x);
  else
    fputs("null", f);
}

int bench_write_json(const char *path, const bench_result *r, int n) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "rpa-bench: --json %s: %s\n", path, strerror(errno));
    return -1;
  }
  fputs("[\n", f);
  for (int i = 0; i < n; i++) {
    const bench_result *x = &r[i];
    const bench_workload *w = x->w;
    int64_t tokens = 0;
    for (int32_t s = 0; s < w->num_seqs; s++) tokens += w->q_lens[s];
    fputs("  {\"name\": ", f);
    json_string(f, w->name);
    fputs(", \"kind\": ", f);
    json_string(f, x->kind);
    fputs(", \"model\": ", f);
    json_string(f, w->model);
    fprintf(f, ", \"threads\": %d, \"backend\": ", x->threads);
    json_string(f, x->backend);
    fprintf(f,
            ",\n   \"q_dtype\": \"%s\", \"kv_dtype\": \"%s\", \"out_dtype\": "
            "\"%s\", \"num_q_heads\": %d, \"num_kv_heads\": %d, \"head_dim\": "
            "%d, \"page_size\": %d, \"layout\": \"%s\",\n   \"num_seqs\": %d, "
            "\"num_tokens\": %lld, \"sliding_window\": %d, \"sinks\": %s, "
            "\"soft_cap\": ",
            rpa_dtype_name(w->q_dtype), rpa_dtype_name(w->kv_dtype),
            rpa_dtype_name(w->out_dtype), w->num_q_heads, w->num_kv_heads,
            w->head_dim, w->page_size, bench_layout_name(w->layout),
            w->num_seqs, (long long)tokens, w->window,
            w->sinks ? "true" : "false");
    json_number(f, w->soft_cap);
    fprintf(f,
            ", \"update_kv_cache\": %s, \"pool_bytes\": %zu, "
            "\"used_cache_bytes\": %zu,\n   \"bytes\": %lld, \"flops\": %lld, "
            "\"pairs\": %lld, \"reps\": %d, \"warmup_sample\": %s",
            w->update ? "true" : "false", x->pool_bytes, x->used_bytes,
            (long long)x->count.bytes, (long long)x->count.flops,
            (long long)x->count.pairs, x->reps,
            x->warmup_sample ? "true" : "false");
    const struct {
      const char *key;
      double value;
    } nums[] = {
        {"time_us_median", 1e6 * x->t_median}, {"time_us_min", 1e6 * x->t_min},
        {"time_us_max", 1e6 * x->t_max},       {"time_us_p25", 1e6 * x->t_p25},
        {"time_us_p75", 1e6 * x->t_p75},       {"gbps", x->gbps},
        {"gflops", x->gflops},                 {"peak_gbps", x->peak_gbps},
        {"peak_gflops", x->peak_gflops},       {"mbu", x->mbu},
        {"mfu", x->mfu},                       {"roofline_us", 1e6 * x->roofline_s},
        {"roofline_ratio", x->roofline_ratio},
    };
    for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
      fprintf(f, "%s\"%s\": ", k % 5 == 0 ? ",\n   " : ", ", nums[k].key);
      if (x->failed)
        fputs("null", f);
      else
        json_number(f, nums[k].value);
    }
    fprintf(f, ",\n   \"peak_kind\": \"%s\", \"matches_reference\": %s",
            x->peak_kind == BENCH_PEAK_BF16_DOT ? "bf16_dot" : "f32_fma",
            !x->checked ? "null" : x->check.ok ? "true" : "false");
    fputs(", \"check\": ", f);
    char check[320];
    format_check(x, check, sizeof check);
    json_string(f, check);
    fputs(", \"max_abs_err\": ", f);
    if (x->checked)
      json_number(f, x->check.max_abs_err);
    else
      fputs("null", f);
    fputs(", \"error\": ", f);
    if (x->failed)
      json_string(f, x->error);
    else
      fputs("null", f);
    fprintf(f, "}%s\n", i + 1 < n ? "," : "");
  }
  fputs("]\n", f);
  if (fclose(f) != 0) {
    fprintf(stderr, "rpa-bench: --json %s: %s\n", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* ---- roofline plot (gnuplot) -------------------------------------------------- */

/* The best PNG terminal the installed gnuplot has: pngcairo, else png. */
static const char *png_terminal(void) {
  FILE *p = popen("gnuplot -e 'set terminal' 2>&1", "r");
  if (!p) return NULL;
  char line[256];
  int cairo = 0, png = 0;
  while (fgets(line, sizeof line, p)) {
    char word[64];
    if (sscanf(line, " %63s", word) != 1) continue;
    cairo |= strcmp(word, "pngcairo") == 0;
    png |= strcmp(word, "png") == 0;
  }
  if (pclose(p) != 0 && !cairo && !png) return NULL;
  return cairo ? "pngcairo" : png ? "png" : NULL;
}

/* Names go into gnuplot's double-quoted strings: keep them plain. */
static void plot_label(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) fputc(*s == '"' || *s == '\\' || *s == '\n' ? '_' : *s, f);
  fputc('"', f);
}

int bench_plot(const char *path, const bench_result *r, int n,
               const bench_limits *limits, int num_limits,
               const bench_cpu *cpu) {
  const char *term = png_terminal();
  if (!term) {
    fprintf(stderr,
            "rpa-bench: --plot needs gnuplot with a png terminal (Debian "
            "package gnuplot-nox; scripts/setup.sh installs it)\n");
    return -1;
  }
  double ai_lo = 1e30, ai_hi = 0, y_lo = 1e30, y_hi = 0;
  for (int i = 0; i < n; i++) {
    if (r[i].failed || r[i].count.bytes <= 0 || r[i].gflops <= 0) continue;
    const double ai = (double)r[i].count.flops / (double)r[i].count.bytes;
    if (ai < ai_lo) ai_lo = ai;
    if (ai > ai_hi) ai_hi = ai;
    if (r[i].gflops < y_lo) y_lo = r[i].gflops;
    if (r[i].gflops > y_hi) y_hi = r[i].gflops;
  }
  for (int l = 0; l < num_limits; l++) {
    const double top = limits[l].bf16_gflops > limits[l].f32_gflops
                           ? limits[l].bf16_gflops
                           : limits[l].f32_gflops;
    if (top > y_hi) y_hi = top;
    const double ridge = top / limits[l].read_gbps;
    if (ridge > ai_hi) ai_hi = ridge;
    if (limits[l].f32_gflops / limits[l].read_gbps < ai_lo)
      ai_lo = limits[l].f32_gflops / limits[l].read_gbps;
  }
  if (ai_hi <= 0) ai_lo = 0.1, ai_hi = 1000, y_lo = 1, y_hi = 1000;
  FILE *probe = fopen(path, "wb"); /* a clear message for a bad path */
  if (!probe) {
    fprintf(stderr, "rpa-bench: --plot %s: %s\n", path, strerror(errno));
    return -1;
  }
  fclose(probe);
  /* gnuplot writes to stdout only if `set output` failed: keep it off */
  FILE *g = popen("gnuplot > /dev/null", "w");
  if (!g) {
    fprintf(stderr, "rpa-bench: --plot: cannot run gnuplot: %s\n",
            strerror(errno));
    return -1;
  }
  fprintf(g, "set terminal %s size 1400,900 %s\n", term,
          strcmp(term, "pngcairo") == 0 ? "font ',11'" : "");
  fprintf(g, "set output ");
  plot_label(g, path);
  fprintf(g, "\nset title ");
  char title[256];
  snprintf(title, sizeof title,
           "rpa-bench roofline: %s, limits measured in this run", cpu->brand);
  plot_label(g, title);
  fprintf(g,
          "\nset logscale xy\nset samples 4000\nset grid xtics ytics mxtics mytics lc rgb "
          "'#dddddd'\nset xlabel 'arithmetic intensity (useful FLOP per byte "
          "that must move)'\nset ylabel 'GFLOP/s achieved'\nset key bottom right "
          "box opaque\nset xrange [%g:%g]\nset yrange [%g:%g]\n"
          "roof(x, bw, peak) = bw * x < peak ? bw * x : peak\n",
          ai_lo / 4, ai_hi * 4, y_lo / 4, y_hi * 2);
  /* one data block per backend: name, intensity, GFLOP/s */
  char seen[64][32];
  int num_seen = 0;
  for (int i = 0; i < n && num_seen < 64; i++) {
    int known = 0;
    for (int s = 0; s < num_seen; s++) known |= !strcmp(seen[s], r[i].backend);
    if (known) continue;
    snprintf(seen[num_seen], sizeof seen[0], "%s", r[i].backend);
    /* label "#row name", placed at y * factor: factors alternate above and
       below the point so that cases at the same spot stay readable */
    static const double factor[4] = {1.10, 0.91, 1.22, 0.82};
    fprintf(g, "$b%d << EOD\n", num_seen);
    for (int j = 0, k = 0; j < n; j++) {
      if (strcmp(r[j].backend, r[i].backend) || r[j].failed || r[j].gflops <= 0)
        continue;
      char label[128];
      snprintf(label, sizeof label, "#%d %s", j + 1, r[j].w->name);
      plot_label(g, label);
      fprintf(g, " %g %g %g\n",
              (double)r[j].count.flops / (double)r[j].count.bytes, r[j].gflops,
              factor[k++ % 4]);
    }
    fprintf(g, "EOD\n");
    num_seen++;
  }
  static const char *const colors[6] = {"#2ca02c", "#9467bd", "#ff7f0e",
                                        "#17becf", "#8c564b", "#e377c2"};
  fprintf(g, "plot ");
  for (int l = 0; l < num_limits; l++) {
    const bench_limits *lim = &limits[l];
    fprintf(g,
            "roof(x, %g, %g) with lines lw 2 dt %d lc rgb '#1f77b4' title "
            "'f32 FMA roof (%s), %d thr: %.0f GFLOP/s, %.1f GB/s', ",
            lim->read_gbps, lim->f32_gflops, l + 1, lim->f32_isa, lim->threads,
            lim->f32_gflops, lim->read_gbps);
    if (lim->bf16_gflops > 0)
      fprintf(g,
              "roof(x, %g, %g) with lines lw 2 dt %d lc rgb '#d62728' title "
              "'bf16 dot roof, %d thr: %.0f GFLOP/s', ",
              lim->read_gbps, lim->bf16_gflops, l + 1, lim->threads,
              lim->bf16_gflops);
  }
  for (int s = 0; s < num_seen; s++)
    fprintf(g,
            "$b%d using 2:3 with points pt %d ps 1.8 lc rgb '%s' title '%s', "
            "$b%d using 2:($3*$4):1 with labels left offset 0.8,0 font ',8' "
            "notitle%s",
            s, 7 + 2 * s, colors[s % 6], seen[s], s,
            s + 1 < num_seen ? ", " : "\n");
  if (num_seen == 0) fprintf(g, "NaN notitle\n");
  const int rc = pclose(g);
  if (rc != 0) {
    fprintf(stderr, "rpa-bench: --plot: gnuplot failed (status %d)\n", rc);
    return -1;
  }
  return 0;
}
