/* What rpa-generate writes: each completion and the run's figures on
   stdout, the results as JSON (--json), the prompt ids alone (--tokenize),
   and the GGUF file's metadata and tensor infos (--inspect). */
#ifndef GEN_REPORT_H
#define GEN_REPORT_H

#include <stdio.h>

#include "blocks.h"
#include "gguf.h"
#include "model.h"
#include "scheduler.h"

/* The figures of a finished run, derived once for stdout and the JSON. */
typedef struct run_figures {
  const sched_stats *st;
  double load_s;        /* reading and dequantizing the model */
  double prefill_tps;   /* prefill tokens / time of the steps holding prefill */
  double decode_tps;    /* tokens / time of the decode-only steps */
  double generated_tps; /* generated tokens / the whole run */
  double attn_share;    /* rpa_attention's share of the forward passes */
  double step_ms;       /* mean step time */
  int32_t peak_pages, num_pages, page_size;
  int threads;
  const char *isa; /* rpa's kernel set */
} run_figures;

run_figures report_figures(const sched_stats *st, const forward_ctx *fc,
                           const block_manager *bm, double load_s,
                           int threads, const char *isa);

/* Each request's completion (unless quiet), then the figures; the last
   line is the total: "total: N tokens generated in S s, R tokens/s". */
void report_print(FILE *f, const request *reqs, int n, int quiet,
                  const run_figures *fg);
/* The requests and figures as one JSON object. */
void report_json(FILE *f, const request *reqs, int n, const run_figures *fg);
/* Each request's prompt and prompt ids as JSON (--tokenize). */
void report_prompt_ids(FILE *f, const request *reqs, int n);
/* The file's header, metadata and tensor infos as JSON (--inspect). */
void report_inspect(FILE *f, const gguf_file *gf);

#endif
