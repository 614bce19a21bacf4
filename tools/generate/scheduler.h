/* The continuous-batching scheduler: requests arrive at their step, are
   admitted first come first served once the block manager can reserve
   their worst case, and every step packs all running decodes, then prefill
   chunks in admission order up to a token budget, into ONE ragged batch
   for the model (one rpa_attention call per layer). Each sampled row's
   token goes back to its request until EOS, the token limit or the
   context ends it. */
#ifndef GEN_SCHEDULER_H
#define GEN_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "blocks.h"
#include "model.h"
#include "tokenizer.h"

enum req_state { REQ_WAITING, REQ_PREFILL, REQ_DECODE, REQ_DONE };

typedef struct request {
  int index;
  const char *text; /* the prompt as given (not owned) */
  int32_t arrival;  /* the step from which it may be admitted */
  int32_t *ids;     /* prompt ids, then the generated ones */
  int64_t n_prompt, n_ids, cap_ids;
  int32_t n_computed; /* tokens whose K/V are in the cache */
  page_list pages;
  int32_t reserved_pages;
  int32_t limit; /* n_prompt + the tokens it may generate */
  enum req_state state;
  const char *finish; /* "eos", "length", "context" */
  uint64_t rng;       /* its own sampling stream */
  char *completion;   /* the generated tokens' bytes, 0-terminated */
  size_t completion_len;
} request;

typedef struct sched_config {
  int32_t max_tokens; /* generated tokens per request, at most */
  int32_t chunk;      /* token budget of one step */
  int32_t context;    /* the longest sequence */
  double temperature, top_p;
  uint64_t seed;
  int ignore_eos; /* EOS does not end a request: it runs to max_tokens */
  int special;    /* control tokens show in a completion as written */
  int progress;   /* a progress line on stderr after every step */
  FILE *dump;     /* every sampled row's logits, or NULL */
  int32_t dump_first; /* dump only requests 0 .. dump_first-1 (0: all) */
} sched_config;

typedef struct sched_stats {
  long steps, mixed_steps;  /* mixed: decodes and prefill in one batch */
  long prefill_tokens;      /* prompt tokens run through the model */
  long decode_tokens;       /* generated tokens fed back */
  long generated_tokens;    /* tokens sampled, over all requests */
  long decode_only_tokens;  /* tokens of the steps holding no prefill */
  double prefill_step_s;    /* time of the steps holding prefill */
  double decode_only_s;     /* time of the other steps */
  double run_s;             /* the whole run, first step to last */
} sched_stats;

/* Sets each request's limit, page reservation and sampling stream (reqs[i]
   needs index, ids and n_prompt set). 0, or -1 with a message when a
   prompt leaves no room in the context or a request could never fit in
   the cache. */
int sched_prepare(request *reqs, int n, const sched_config *cfg,
                  const block_manager *bm, char *err, size_t errlen);

/* Runs every request to its end. 0, or with a message in err: 2 when out
   of memory, 3 when a step failed. */
int sched_run(request *reqs, int n, const sched_config *cfg,
              block_manager *bm, forward_ctx *fc, const tokenizer *tk,
              sched_stats *st, char *err, size_t errlen);

void request_free(request *r);

#endif
