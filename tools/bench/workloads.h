/* Workloads: one serving step of one attention layer, described by a short
   spec of key=value words, the same for the built-in list, the command line
   (--workload) and workload files (--workloads FILE):

     [NAME] seqs=ITEMS heads=HQ/HKV dim=D [q=DT] [out=DT] [kv=DT] [dtype=DT]
            [page=N] [window=W] [sinks=0|1] [causal=0|1] [update=0|1]
            [softcap=C] [layout=combined|vllm|hnd] [model=LABEL]

   ITEMS is a comma list of [N*]Q:KV: N sequences (default 1) of Q new
   tokens each, KV tokens in all (cached prefix + new); KV may be LO~HI for
   lengths drawn log-uniformly (deterministically) in [LO, HI]. Numbers take
   a k suffix (x1024). DT: f32, bf16, f16, fp8 (= fp8_e4m3), fp8_e5m2;
   dtype= sets q, out and kv at once, q= sets out too unless out= is given.
   Defaults: q/out/kv bf16, page 16, causal, update on, combined layout.
   Example: "my-mix seqs=30*1:128~8k,2*512:512 heads=32/8 dim=128 kv=fp8" */
#ifndef RPA_BENCH_WORKLOADS_H
#define RPA_BENCH_WORKLOADS_H

#include <stddef.h>
#include <stdint.h>

#include "rpa.h"

typedef enum bench_layout {
  BENCH_COMBINED, /* upstream RPA: [pages, page_size, 2*Hkv, D] */
  BENCH_VLLM,     /* vLLM: [2, pages, page_size, Hkv, D] */
  BENCH_HND,      /* FlashInfer HND: [pages, 2, Hkv, page_size, D] */
} bench_layout;

typedef struct bench_workload {
  char name[96];
  char model[32];
  int32_t num_seqs;
  int32_t *q_lens;  /* [num_seqs] new tokens */
  int32_t *kv_lens; /* [num_seqs] all tokens, new ones included */
  int32_t num_q_heads, num_kv_heads, head_dim;
  int32_t page_size;
  rpa_dtype q_dtype, out_dtype, kv_dtype;
  bench_layout layout;
  int causal, sinks, update;
  int tree; /* the new tokens of each multi-token sequence: a random tree of
               drafts, each seeing its ancestors (rpa_args.mask) */
  int32_t window;
  int32_t shared; /* every sequence's first `shared` tokens: one prefix in
                     the same pages, named as a group (rpa_args.shared_*) */
  float soft_cap;
} bench_workload;

/* "decode" (every q_len 1), "prefill" (every q_len > 1) or "mixed". */
const char *bench_workload_kind(const bench_workload *w);
const char *bench_layout_name(bench_layout layout);

/* Parses a spec (see above). name may be NULL: the spec's first word
   without '=' is the name then, else "custom". Returns 0, or -1 with a
   message in err. Free with bench_workload_free. */
int bench_workload_parse(const char *name, const char *spec,
                         bench_workload *w, char *err, size_t err_len);
void bench_workload_free(bench_workload *w);

/* The built-in workloads; in_default marks the default suite (make bench). */
typedef struct bench_builtin {
  const char *name;
  const char *spec;
  int in_default;
} bench_builtin;

const bench_builtin *bench_builtins(int *count);

/* Reads a workload file: one spec per line, '#' starts a comment, blank
   lines skipped. Appends to *list (realloc'd), *count updated. Returns 0,
   or -1 with "FILE:LINE: reason" in err. */
int bench_workloads_read_file(const char *path, bench_workload **list,
                              int *count, char *err, size_t err_len);

#endif
