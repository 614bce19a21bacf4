/* The continuous-batching scheduler: see scheduler.h. */
#include "scheduler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rng.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- sampling ------------------------------------------------------------- */

typedef struct cand {
  float p;
  int32_t id;
} cand;

static int cand_cmp(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->p != y->p) return x->p > y->p ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

/* Greedy: the first id of the largest logit. Otherwise softmax(logits / T)
   in double, the smallest set of most likely tokens whose mass reaches
   top_p, one draw from the request's own stream. */
static int32_t sample(const float *logits, int32_t n, double temperature,
                      double top_p, uint64_t *rng, cand *scratch) {
  int32_t best = 0;
  for (int32_t i = 1; i < n; i++)
    if (logits[i] > logits[best]) best = i;
  if (temperature <= 0.0) return best;
  double sum = 0.0;
  for (int32_t i = 0; i < n; i++) {
    double e = exp(((double)logits[i] - (double)logits[best]) / temperature);
    scratch[i].p = (float)e;
    scratch[i].id = i;
    sum += e;
  }
  qsort(scratch, (size_t)n, sizeof *scratch, cand_cmp);
  double mass = 0.0;
  int32_t keep = 0;
  while (keep < n) {
    mass += scratch[keep].p / sum;
    keep++;
    if (mass >= top_p) break;
  }
  double kept = 0.0;
  for (int32_t i = 0; i < keep; i++) kept += scratch[i].p;
  const double u = (double)(splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0);
  double acc = 0.0;
  for (int32_t i = 0; i < keep; i++) {
    acc += scratch[i].p / kept;
    if (u < acc) return scratch[i].id;
  }
  return scratch[keep - 1].id;
}

/* ---- requests ------------------------------------------------------------- */

int sched_prepare(request *reqs, int n, const sched_config *cfg,
                  const block_manager *bm, char *err, size_t errlen) {
  for (int i = 0; i < n; i++) {
    request *r = &reqs[i];
    if (r->n_prompt >= cfg->context) {
      snprintf(err, errlen, "request %d: the prompt is %lld tokens, the "
               "context is %d (it needs room for one new token)", i,
               (long long)r->n_prompt, cfg->context);
      return -1;
    }
    int64_t lim = r->n_prompt + cfg->max_tokens;
    r->limit = (int32_t)(lim < cfg->context ? lim : cfg->context);
    /* The last generated token is never fed back, so the cache holds at
       most limit - 1 tokens. */
    r->reserved_pages = bm_pages_for(bm, r->limit - 1);
    if (r->reserved_pages > bm->num_pages) {
      snprintf(err, errlen, "request %d needs up to %d pages (%d tokens), "
               "the cache has %d: raise --pages or lower --max-tokens", i,
               r->reserved_pages, r->limit - 1, bm->num_pages);
      return -1;
    }
    r->pages.pages = malloc(sizeof(int32_t) * (size_t)r->reserved_pages);
    if (!r->pages.pages) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    r->pages.n_pages = 0;
    r->pages.cap = r->reserved_pages;
    r->rng = cfg->seed * 0x100000001B3ull + (uint64_t)i;
    (void)splitmix64(&r->rng);
    r->state = REQ_WAITING;
  }
  return 0;
}

void request_free(request *r) {
  free(r->ids);
  free(r->pages.pages);
  free(r->completion);
}

/* ---- one step -------------------------------------------------------------- */

/* The buffers of one step's batch, sized for its largest: every request
   at once, with chunk prefill tokens besides its decodes. */
typedef struct step_buffers {
  int32_t pages_per_seq;
  int32_t *order; /* request indices in admission order */
  int32_t *tokens, *pos, *cu, *kv, *req, *qlen, *pages, *lrows, *lreq;
  float *logits;
  cand *scratch;
} step_buffers;

static void buffers_free(step_buffers *b) {
  free(b->order); free(b->tokens); free(b->pos); free(b->cu); free(b->kv);
  free(b->req); free(b->qlen); free(b->pages); free(b->lrows); free(b->lreq);
  free(b->logits); free(b->scratch);
}

static int buffers_init(step_buffers *b, const request *reqs, int S,
                        int32_t chunk, int32_t n_vocab) {
  b->pages_per_seq = 1;
  for (int i = 0; i < S; i++)
    if (reqs[i].reserved_pages > b->pages_per_seq)
      b->pages_per_seq = reqs[i].reserved_pages;
  const size_t s = (size_t)S;
  b->order = malloc(sizeof(int32_t) * s);
  b->tokens = malloc(sizeof(int32_t) * ((size_t)chunk + s));
  b->pos = malloc(sizeof(int32_t) * ((size_t)chunk + s));
  b->cu = malloc(sizeof(int32_t) * (s + 1));
  b->kv = malloc(sizeof(int32_t) * s);
  b->req = malloc(sizeof(int32_t) * s);
  b->qlen = malloc(sizeof(int32_t) * s);
  b->pages = malloc(sizeof(int32_t) * s * (size_t)b->pages_per_seq);
  b->lrows = malloc(sizeof(int32_t) * s);
  b->lreq = malloc(sizeof(int32_t) * s);
  b->logits = malloc(sizeof(float) * s * (size_t)n_vocab);
  b->scratch = malloc(sizeof(cand) * (size_t)n_vocab);
  if (!b->order || !b->tokens || !b->pos || !b->cu || !b->kv || !b->req ||
      !b->qlen || !b->pages || !b->lrows || !b->lreq || !b->logits ||
      !b->scratch) {
    buffers_free(b);
    return -1;
  }
  return 0;
}

/* What one step holds, counted for the progress line and the figures. */
typedef struct step_shape {
  int32_t T, ns, np; /* tokens, sequences, rows whose logits are wanted */
  int n_prefill_seqs, n_decode_seqs;
} step_shape;

/* Packs the step's batch into b: every running decode, then prefill chunks
   in admission order up to the token budget. Gives each sequence the pages
   its new tokens need. 0, or -1 (a wrong page reservation). */
static int build_batch(request *reqs, int n_admitted, int32_t chunk,
                       block_manager *bm, step_buffers *b, step_shape *sh) {
  const int32_t P = b->pages_per_seq;
  int32_t T = 0, ns = 0, np = 0;
  sh->n_prefill_seqs = sh->n_decode_seqs = 0;
  b->cu[0] = 0;
  for (int pass = 0; pass < 2; pass++) {
    for (int a = 0; a < n_admitted; a++) {
      request *r = &reqs[b->order[a]];
      int32_t q;
      if (pass == 0 && r->state == REQ_DECODE) q = 1;
      else if (pass == 1 && r->state == REQ_PREFILL && T < chunk) {
        q = (int32_t)(r->n_prompt - r->n_computed);
        if (q > chunk - T) q = chunk - T;
      } else continue;
      if (bm_grow(bm, &r->pages, r->n_computed + q) != 0) return -1;
      for (int32_t k = 0; k < q; k++) {
        b->tokens[T + k] = r->ids[r->n_computed + k];
        b->pos[T + k] = r->n_computed + k;
      }
      T += q;
      b->req[ns] = r->index;
      b->qlen[ns] = q;
      b->kv[ns] = r->n_computed + q;
      b->cu[ns + 1] = T;
      for (int32_t p = 0; p < P; p++)
        b->pages[(size_t)ns * P + p] = p < r->pages.n_pages ? r->pages.pages[p] : 0;
      /* Logits when this is the sequence's last known token. */
      if (r->n_computed + q == r->n_ids) {
        b->lrows[np] = T - 1;
        b->lreq[np] = r->index;
        np++;
      }
      if (pass == 0) sh->n_decode_seqs++;
      else sh->n_prefill_seqs++;
      ns++;
    }
  }
  sh->T = T;
  sh->ns = ns;
  sh->np = np;
  return 0;
}

/* Appends the sampled token to r: its id, its bytes to the completion, and
   whether it ends the request. 0, or -1 when out of memory. */
static int append_token(request *r, const tokenizer *tk, int32_t tok,
                        const sched_config *cfg) {
  char piece[256];
  if (tokenizer_push_id(&r->ids, &r->n_ids, &r->cap_ids, tok) != 0) return -1;
  size_t pl = tokenizer_decode_token(tk, tok, cfg->special, piece,
                                     sizeof piece);
  char *c = realloc(r->completion, r->completion_len + pl + 1);
  if (!c) return -1;
  r->completion = c;
  memcpy(c + r->completion_len, piece, pl);
  r->completion_len += pl;
  c[r->completion_len] = 0;
  if (tok == tk->eos_id && !cfg->ignore_eos) r->finish = "eos";
  else if (r->n_ids >= r->limit)
    r->finish = r->n_ids - r->n_prompt >= cfg->max_tokens ? "length" : "context";
  return 0;
}

/* After the step's forward pass: counts it, moves each sequence on by the
   tokens it ran (a prefill that reached its prompt's end now decodes). */
static void account_step(request *reqs, const step_buffers *b,
                         const step_shape *sh, double dt, sched_stats *st) {
  st->steps++;
  if (sh->n_prefill_seqs > 0) {
    st->prefill_step_s += dt;
    if (sh->n_decode_seqs > 0) st->mixed_steps++;
  } else {
    st->decode_only_s += dt;
    st->decode_only_tokens += sh->T;
  }
  for (int32_t s = 0; s < sh->ns; s++) {
    request *r = &reqs[b->req[s]];
    if (r->state == REQ_PREFILL) st->prefill_tokens += b->qlen[s];
    else st->decode_tokens += b->qlen[s];
    r->n_computed += b->qlen[s];
    if (r->state == REQ_PREFILL && r->n_computed == r->n_prompt)
      r->state = REQ_DECODE;
  }
}

/* Samples a token from each logits row of the step (dumping the row if
   asked) and gives it to its request; a request that ends gives its pages
   back. Returns how many ended, or -1 when out of memory. */
static int sample_rows(request *reqs, const step_buffers *b,
                       const step_shape *sh, const sched_config *cfg,
                       block_manager *bm, const tokenizer *tk, int32_t n_vocab,
                       sched_stats *st) {
  int ended = 0;
  for (int32_t k = 0; k < sh->np; k++) {
    request *r = &reqs[b->lreq[k]];
    const float *row = b->logits + (size_t)k * n_vocab;
    int32_t tok = sample(row, n_vocab, cfg->temperature, cfg->top_p, &r->rng,
                         b->scratch);
    if (cfg->dump && (cfg->dump_first == 0 || r->index < cfg->dump_first)) {
      int32_t hdr[4] = {r->index, (int32_t)(r->n_ids - r->n_prompt), tok,
                        n_vocab};
      fwrite(hdr, sizeof hdr, 1, cfg->dump);
      fwrite(row, sizeof(float), (size_t)n_vocab, cfg->dump);
    }
    if (append_token(r, tk, tok, cfg) != 0) return -1;
    st->generated_tokens++;
    if (r->finish) {
      r->state = REQ_DONE;
      bm_release(bm, &r->pages, r->reserved_pages);
      r->reserved_pages = 0;
      ended++;
    }
  }
  return ended;
}

/* ---- the loop ------------------------------------------------------------- */

int sched_run(request *reqs, int n, const sched_config *cfg,
              block_manager *bm, forward_ctx *fc, const tokenizer *tk,
              sched_stats *st, char *err, size_t errlen) {
  const int32_t n_vocab = fc->m->n_vocab;
  memset(st, 0, sizeof *st);
  step_buffers b;
  if (buffers_init(&b, reqs, n, cfg->chunk, n_vocab) != 0) {
    snprintf(err, errlen, "out of memory");
    return 2;
  }
  int rc = 0;
  int n_admitted = 0, n_done = 0, next_wait = 0;
  int32_t step = 0;
  const double t_run = now_s();
  while (n_done < n) {
    /* Admission, first come first served: a request waits until the pages
       it may need (prompt + max tokens) are not promised to others. */
    while (next_wait < n && reqs[next_wait].arrival <= step &&
           bm_try_reserve(bm, reqs[next_wait].reserved_pages)) {
      request *r = &reqs[next_wait++];
      r->state = REQ_PREFILL;
      b.order[n_admitted++] = r->index;
    }
    step_shape sh;
    if (build_batch(reqs, n_admitted, cfg->chunk, bm, &b, &sh) != 0) {
      snprintf(err, errlen, "internal error: step %d: a sequence needs more "
               "pages than were reserved for it", step);
      rc = 3;
      break;
    }
    if (sh.ns == 0) {
      if (next_wait < n && reqs[next_wait].arrival > step) {
        step = reqs[next_wait].arrival; /* idle until the next arrival */
        continue;
      }
      snprintf(err, errlen, "internal error: nothing to run");
      rc = 3;
      break;
    }
    batch bt = {sh.T, sh.ns, b.pages_per_seq, b.tokens, b.pos, b.cu, b.kv,
                b.pages, sh.np, b.lrows, b.logits};
    const double ts = now_s();
    char ferr[512];
    if (forward(fc, &bt, ferr, sizeof ferr) != 0) {
      snprintf(err, errlen, "step %d: %s", step, ferr);
      rc = 3;
      break;
    }
    account_step(reqs, &b, &sh, now_s() - ts, st);
    const int ended = sample_rows(reqs, &b, &sh, cfg, bm, tk, n_vocab, st);
    if (ended < 0) {
      snprintf(err, errlen, "out of memory");
      rc = 2;
      break;
    }
    n_done += ended;
    step++;
    if (cfg->progress) {
      fprintf(stderr, "\rstep %d: batch %d tokens (%d decode, %d prefill "
              "seqs), running %d, waiting %d, done %d/%d, pages %d/%d   ",
              step, sh.T, sh.n_decode_seqs, sh.n_prefill_seqs,
              n_admitted - n_done, n - n_admitted, n_done, n,
              bm->num_pages - bm->n_free, bm->num_pages);
      fflush(stderr);
    }
  }
  st->run_s = now_s() - t_run;
  if (cfg->progress) fprintf(stderr, "\n");
  buffers_free(&b);
  return rc;
}
