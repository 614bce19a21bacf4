/* rpa-generate: a small serving engine for a GGUF Llama model (made for
   SmolLM2-135M-Instruct) with rpa as its attention backend.

   This file reads the options and wires the parts together: the GGUF file
   (gguf.c), the tokenizer (tokenizer.c) and the prompts' ids (prompt.c),
   the model and its paged KV cache (model.c), the block manager
   (blocks.c) and the continuous-batching scheduler (scheduler.c) that
   runs every request, one rpa_attention call per layer per step, and what
   it writes (report.c). See docs/generate.md. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blocks.h"
#include "gguf.h"
#include "model.h"
#include "pool.h"
#include "prompt.h"
#include "report.h"
#include "rpa.h"
#include "scheduler.h"
#include "tokenizer.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *fmt, const char *a) {
  fprintf(stderr, "rpa-generate: ");
  fprintf(stderr, fmt, a);
  fprintf(stderr, "\n");
  exit(2);
}

/* ---- options ------------------------------------------------------------ */

typedef struct prompt_in {
  char *text;
  int32_t arrival; /* the step from which it may be admitted */
} prompt_in;

typedef struct options {
  const char *model_path, *json_path, *dump_logits_path;
  int32_t dump_first; /* dump only requests 0 .. dump_first-1 (0: all) */
  prompt_in *prompts;
  int n_prompts, cap_prompts;
  int32_t max_tokens, threads, chunk, pages, page_size, context;
  uint64_t seed;
  double temperature, top_p;
  prompt_format format;
  int ignore_eos, shuffle_pages, tokenize_only, quiet, inspect;
  const char *dump_tensor, *dump_tensor_path;
} options;

static void usage(void) {
  printf(
      "usage: rpa-generate --model FILE [--prompt TEXT]... [--prompts FILE]\n"
      "                    [--prompt-file FILE]...\n"
      "  --model FILE        GGUF Llama model (SmolLM2-135M-Instruct Q4_1)\n"
      "  --prompt TEXT       a request (repeatable)\n"
      "  --prompts FILE      one request a line; a line \"@N TEXT\" arrives at\n"
      "                      step N (default 0)\n"
      "  --prompt-file FILE  one request: the whole file, newlines included\n"
      "                      (repeatable)\n"
      "  --system TEXT       the chat template's system message (default: the\n"
      "                      model's, \"You are a helpful AI assistant named\n"
      "                      SmolLM, trained by Hugging Face\")\n"
      "  --raw               no chat template: the prompt is the whole text\n"
      "  --special           special tokens in a prompt: <|im_start|>,\n"
      "                      <|im_end|>, <|endoftext|> (any control token of\n"
      "                      the vocabulary) written literally are their ids,\n"
      "                      and <|id:N|> is token N; with --raw, a whole\n"
      "                      conversation can be written. Completions show\n"
      "                      the control tokens generated (<|im_end|>)\n"
      "  --max-tokens N      tokens to generate per request (default 64)\n"
      "  --ignore-eos        EOS does not end a request: each generates\n"
      "                      exactly --max-tokens (unless the context ends)\n"
      "  --threads N         threads for the matmuls and rpa (default 2)\n"
      "  --temperature T     0 (default): greedy; > 0: sampled\n"
      "  --top-p P           nucleus sampling mass (default 1)\n"
      "  --seed S            sampling seed (default 1); request i draws from\n"
      "                      its own stream seeded by (S, i)\n"
      "  --chunk N           token budget of one step (default 256): all\n"
      "                      decodes, then prefill chunks up to N tokens\n"
      "  --pages N           KV pages (default 512), --page-size N (16)\n"
      "  --context N         longest sequence (default: the model's, 8192)\n"
      "  --shuffle-pages     hand out pages in a shuffled order\n"
      "  --json FILE         write requests, completions and figures as JSON\n"
      "  --dump-logits FILE  write every sampled row's logits (binary: per row\n"
      "                      int32 request, index, token, vocab; float32 logits)\n"
      "  --dump-first N      dump only the first N requests' rows\n"
      "  --tokenize          only tokenize the prompts (ids in --json)\n"
      "  --inspect           only print the file's metadata and tensor infos\n"
      "                      as JSON (to --json FILE or stdout)\n"
      "  --dump-tensor NAME FILE  only write tensor NAME dequantized (float32)\n"
      "  --quiet             no progress line, no completions on stdout\n"
      "The last line on stdout is the total: \"total: N tokens generated in\n"
      "S s, R tokens/s ...\". See docs/generate.md.\n");
}

static long parse_int(const char *s, const char *opt, long lo, long hi) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > hi) {
    fprintf(stderr, "rpa-generate: %s wants an integer in [%ld, %ld], got "
            "'%s'\n", opt, lo, hi, s);
    exit(2);
  }
  return v;
}

static double parse_double(const char *s, const char *opt, double lo,
                           double hi) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || end == s || !(v >= lo && v <= hi)) {
    fprintf(stderr, "rpa-generate: %s wants a number in [%g, %g], got '%s'\n",
            opt, lo, hi, s);
    exit(2);
  }
  return v;
}

static void add_prompt(options *o, const char *text, size_t len,
                       int32_t arrival) {
  if (o->n_prompts == o->cap_prompts) {
    o->cap_prompts = o->cap_prompts ? 2 * o->cap_prompts : 16;
    o->prompts = realloc(o->prompts, sizeof *o->prompts * (size_t)o->cap_prompts);
    if (!o->prompts) die("%s", "out of memory");
  }
  char *t = malloc(len + 1);
  if (!t) die("%s", "out of memory");
  memcpy(t, text, len);
  t[len] = 0;
  o->prompts[o->n_prompts].text = t;
  o->prompts[o->n_prompts].arrival = arrival;
  o->n_prompts++;
}

/* The file, opened to read; exits with a message naming what it is when
   it cannot be. */
static FILE *open_input(const char *path, const char *what) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "rpa-generate: cannot open %s '%s': %s\n", what, path,
            strerror(errno));
    exit(2);
  }
  return f;
}

static void read_prompts_file(options *o, const char *path) {
  FILE *f = open_input(path, "prompts file");
  char *line = NULL;
  size_t cap = 0;
  long n;
  int lineno = 0;
  while ((n = (long)getline(&line, &cap, f)) >= 0) {
    lineno++;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    const char *text = line;
    int32_t arrival = 0;
    if (line[0] == '@') {
      char *end;
      long a = strtol(line + 1, &end, 10);
      if (end == line + 1 || (*end != ' ' && *end != '\t') || a < 0 ||
          a > 1000000) {
        fprintf(stderr, "rpa-generate: %s:%d: '@N TEXT' needs a step N in "
                "[0, 1000000] and a space\n", path, lineno);
        exit(2);
      }
      arrival = (int32_t)a;
      text = end + 1;
    }
    if (*text == 0) {
      fprintf(stderr, "rpa-generate: %s:%d: empty prompt\n", path, lineno);
      exit(2);
    }
    add_prompt(o, text, strlen(text), arrival);
  }
  free(line);
  fclose(f);
}

/* --prompt-file: the whole file is one request, its bytes as they are (a
   conversation written with --raw --special ends with the assistant's
   "<|im_start|>assistant\n", its last newline included). */
static void read_prompt_file(options *o, const char *path) {
  FILE *f = open_input(path, "prompt file");
  char *text = NULL;
  size_t len = 0, cap = 0, got;
  do {
    if (len + 4096 > cap) {
      cap = 2 * cap + 4096;
      char *p = realloc(text, cap);
      if (!p) die("%s", "out of memory");
      text = p;
    }
    got = fread(text + len, 1, cap - len, f);
    len += got;
  } while (got > 0);
  const int failed = ferror(f);
  fclose(f);
  if (failed) die("cannot read prompt file '%s'", path);
  if (len == 0) die("%s: empty prompt", path);
  if (memchr(text, 0, len)) die("%s: the prompt holds a NUL byte", path);
  add_prompt(o, text, len, 0);
  free(text);
}

static void parse_args(options *o, int argc, char **argv) {
  memset(o, 0, sizeof *o);
  o->max_tokens = 64;
  o->threads = 2;
  o->chunk = 256;
  o->pages = 512;
  o->page_size = 16;
  o->seed = 1;
  o->temperature = 0.0;
  o->top_p = 1.0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV                                                                 \
  do {                                                                        \
    if (!v) die("%s needs a value", a);                                       \
    i++;                                                                      \
  } while (0)
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); exit(0); }
    else if (!strcmp(a, "--model")) { NEEDV; o->model_path = v; }
    else if (!strcmp(a, "--prompt")) {
      NEEDV;
      if (*v == 0) die("%s", "--prompt: empty prompt");
      add_prompt(o, v, strlen(v), 0);
    }
    else if (!strcmp(a, "--prompts")) { NEEDV; read_prompts_file(o, v); }
    else if (!strcmp(a, "--prompt-file")) { NEEDV; read_prompt_file(o, v); }
    else if (!strcmp(a, "--system")) { NEEDV; o->format.system = v; }
    else if (!strcmp(a, "--max-tokens")) { NEEDV; o->max_tokens = (int32_t)parse_int(v, a, 1, 1 << 20); }
    else if (!strcmp(a, "--threads")) { NEEDV; o->threads = (int32_t)parse_int(v, a, 1, 256); }
    else if (!strcmp(a, "--chunk")) { NEEDV; o->chunk = (int32_t)parse_int(v, a, 1, 1 << 20); }
    else if (!strcmp(a, "--pages")) { NEEDV; o->pages = (int32_t)parse_int(v, a, 1, 1 << 20); }
    else if (!strcmp(a, "--page-size")) { NEEDV; o->page_size = (int32_t)parse_int(v, a, 1, 4096); }
    else if (!strcmp(a, "--context")) { NEEDV; o->context = (int32_t)parse_int(v, a, 2, 1 << 24); }
    else if (!strcmp(a, "--seed")) { NEEDV; o->seed = (uint64_t)parse_int(v, a, 0, 0x7fffffffL); }
    else if (!strcmp(a, "--temperature")) { NEEDV; o->temperature = parse_double(v, a, 0.0, 100.0); }
    else if (!strcmp(a, "--top-p")) { NEEDV; o->top_p = parse_double(v, a, 1e-6, 1.0); }
    else if (!strcmp(a, "--json")) { NEEDV; o->json_path = v; }
    else if (!strcmp(a, "--dump-logits")) { NEEDV; o->dump_logits_path = v; }
    else if (!strcmp(a, "--dump-first")) { NEEDV; o->dump_first = (int32_t)parse_int(v, a, 1, 1 << 20); }
    else if (!strcmp(a, "--shuffle-pages")) o->shuffle_pages = 1;
    else if (!strcmp(a, "--raw")) o->format.raw = 1;
    else if (!strcmp(a, "--special")) o->format.special = 1;
    else if (!strcmp(a, "--ignore-eos")) o->ignore_eos = 1;
    else if (!strcmp(a, "--tokenize")) o->tokenize_only = 1;
    else if (!strcmp(a, "--quiet")) o->quiet = 1;
    else if (!strcmp(a, "--inspect")) o->inspect = 1;
    else if (!strcmp(a, "--dump-tensor")) {
      NEEDV;
      o->dump_tensor = v;
      if (i + 1 >= argc) die("%s needs NAME FILE", a);
      o->dump_tensor_path = argv[++i];
    }
    else die("unknown option '%s' (see --help)", a);
#undef NEEDV
  }
  if (!o->model_path) die("%s", "--model FILE is required (see --help)");
  if (o->n_prompts == 0 && !o->inspect && !o->dump_tensor)
    die("%s", "no requests: give --prompt, --prompts or --prompt-file");
  if (o->format.raw && o->format.system)
    die("%s", "--system is the chat template's system message: it does not "
        "go with --raw (write the system turn in the prompt, with --special)");
}

static void options_free(options *o) {
  for (int i = 0; i < o->n_prompts; i++) free(o->prompts[i].text);
  free(o->prompts);
}

/* ---- the modes ------------------------------------------------------------ */

/* --json FILE, or stdout where the mode writes there without one; NULL
   with a message when it cannot be opened. */
static FILE *json_open(const char *path) {
  FILE *f = path ? fopen(path, "w") : stdout;
  if (!f)
    fprintf(stderr, "rpa-generate: cannot write '%s': %s\n", path,
            strerror(errno));
  return f;
}

/* 0, or 2 with a message when the file could not be written. */
static int json_close(FILE *f, const char *path) {
  if (f == stdout) return fflush(f) == 0 ? 0 : 2;
  if (fclose(f) != 0) {
    fprintf(stderr, "rpa-generate: cannot write '%s'\n", path);
    return 2;
  }
  return 0;
}

/* The JSON-only modes, to --json FILE or stdout: --inspect (gf given, the
   file's metadata and tensor infos) or --tokenize (the prompts' ids). */
static int write_json_mode(const char *path, const gguf_file *gf,
                           const request *reqs, int n) {
  FILE *f = json_open(path);
  if (!f) return 2;
  if (gf) report_inspect(f, gf);
  else report_prompt_ids(f, reqs, n);
  return json_close(f, path);
}

/* --dump-tensor NAME FILE: one tensor, dequantized to float32. */
static int dump_tensor(const gguf_file *gf, const char *name, const char *path) {
  const gguf_tensor *t = gguf_find_tensor(gf, name);
  if (!t) {
    fprintf(stderr, "rpa-generate: no tensor '%s'\n", name);
    return 2;
  }
  const uint64_t n = t->dims[0] * t->dims[1] * t->dims[2] * t->dims[3];
  float *buf = malloc(sizeof(float) * n);
  if (!buf) die("%s", "out of memory");
  if (tensor_dequantize(t, buf) != 0) {
    fprintf(stderr, "rpa-generate: tensor '%s' has type %s (ggml type %u), "
            "which is not supported (F32, F16, Q4_1, Q8_0 are)\n", name,
            ggml_type_name(t->type), t->type);
    free(buf);
    return 2;
  }
  FILE *f = fopen(path, "wb");
  const int ok = f && fwrite(buf, sizeof(float), n, f) == n;
  free(buf);
  if (!f || fclose(f) != 0 || !ok) {
    fprintf(stderr, "rpa-generate: cannot write '%s'\n", path);
    return 2;
  }
  return 0;
}

/* Every prompt's request, its ids tokenized, into *out (which the caller
   frees, also on failure): 0, or 2 with a message. */
static int make_requests(const options *o, const tokenizer *tk,
                         request **out) {
  request *reqs = *out = calloc((size_t)o->n_prompts, sizeof *reqs);
  if (!reqs) die("%s", "out of memory");
  char err[1024];
  for (int i = 0; i < o->n_prompts; i++) {
    request *r = &reqs[i];
    r->index = i;
    r->text = o->prompts[i].text;
    r->arrival = o->prompts[i].arrival;
    if (prompt_encode(tk, &o->format, r->text, &r->ids, &r->n_ids,
                      &r->cap_ids, err, sizeof err) != 0) {
      fprintf(stderr, "rpa-generate: request %d: %s\n", i, err);
      return 2;
    }
    r->n_prompt = r->n_ids;
    if (r->n_prompt == 0) {
      fprintf(stderr, "rpa-generate: request %d: the prompt has no tokens\n", i);
      return 2;
    }
  }
  return 0;
}

/* Loads the model and runs every request through the scheduler, then
   writes the completions and figures: 0, 2 (bad input, out of memory) or
   3 (a step failed), with a message. */
static int run_model(const options *o, const gguf_file *gf,
                     const tokenizer *tk, request *reqs) {
  char err[1024];
  model m;
  const double t_load = now_s();
  if (model_load(&m, gf, err, sizeof err) != 0) {
    fprintf(stderr, "rpa-generate: %s\n", err);
    return 2;
  }
  const double load_s = now_s() - t_load;
  int rc = 2;
  block_manager bm = {0};
  kv_cache cache = {0};
  rpa_context *rctx = NULL;
  pool threads = {0};
  forward_ctx fc;
  memset(&fc, 0, sizeof fc);
  FILE *dump = NULL;
  if (m.n_vocab != tk->n_vocab) {
    fprintf(stderr, "rpa-generate: the embedding has %d rows, the "
            "vocabulary %d tokens\n", m.n_vocab, tk->n_vocab);
    goto out;
  }
  sched_config cfg = {
      .max_tokens = o->max_tokens, .chunk = o->chunk,
      .context = o->context && o->context < m.ctx_len ? o->context : m.ctx_len,
      .temperature = o->temperature, .top_p = o->top_p, .seed = o->seed,
      .ignore_eos = o->ignore_eos, .special = o->format.special,
      .progress = !o->quiet,
      .dump_first = o->dump_first};
  if (bm_init(&bm, o->pages, o->page_size, o->shuffle_pages, o->seed) != 0) {
    fprintf(stderr, "rpa-generate: out of memory\n");
    goto out;
  }
  if (sched_prepare(reqs, o->n_prompts, &cfg, &bm, err, sizeof err) != 0) {
    fprintf(stderr, "rpa-generate: %s\n", err);
    goto out;
  }
  if (kv_cache_init(&cache, &m, o->pages, o->page_size) != 0) {
    fprintf(stderr, "rpa-generate: out of memory (KV cache: lower --pages)\n");
    goto out;
  }
  rpa_context_options copt = rpa_context_options_default();
  copt.num_threads = o->threads;
  copt.pin_threads = 0; /* the matmul threads share these CPUs */
  rpa_status st = rpa_context_create(&copt, &rctx);
  if (st != RPA_OK) {
    fprintf(stderr, "rpa-generate: rpa_context_create: %s\n",
            rpa_status_string(st));
    goto out;
  }
  if (pool_init(&threads, o->threads) != 0) {
    fprintf(stderr, "rpa-generate: cannot start threads\n");
    goto out;
  }
  fc.m = &m;
  fc.cache = &cache;
  fc.rpa = rctx;
  fc.threads = &threads;
  if (o->dump_logits_path && !(dump = fopen(o->dump_logits_path, "wb"))) {
    fprintf(stderr, "rpa-generate: cannot write '%s': %s\n",
            o->dump_logits_path, strerror(errno));
    goto out;
  }
  cfg.dump = dump;

  sched_stats stats;
  rc = sched_run(reqs, o->n_prompts, &cfg, &bm, &fc, tk, &stats, err,
                 sizeof err);
  if (rc != 0) {
    fprintf(stderr, "rpa-generate: %s\n", err);
    goto out;
  }
  if (dump && fclose(dump) != 0) {
    fprintf(stderr, "rpa-generate: cannot write '%s'\n", o->dump_logits_path);
    dump = NULL;
    rc = 2;
    goto out;
  }
  dump = NULL;
  const run_figures fg = report_figures(&stats, &fc, &bm, load_s, o->threads,
                                        rpa_context_isa(rctx));
  report_print(stdout, reqs, o->n_prompts, o->quiet, &fg);
  if (o->json_path) {
    FILE *f = json_open(o->json_path);
    if (!f) {
      rc = 2;
      goto out;
    }
    report_json(f, reqs, o->n_prompts, &fg);
    rc = json_close(f, o->json_path);
  }
out:
  if (dump) fclose(dump);
  forward_free(&fc);
  pool_free(&threads);
  if (rctx) rpa_context_destroy(rctx);
  kv_cache_free(&cache, &m);
  bm_free(&bm);
  model_free(&m);
  return rc;
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv) {
  options o;
  parse_args(&o, argc, argv);
  char err[1024];
  gguf_file gf;
  if (gguf_open(&gf, o.model_path, err, sizeof err) != 0) die("%s", err);
  int rc;
  tokenizer tk;
  if (o.inspect) {
    rc = write_json_mode(o.json_path, &gf, NULL, 0);
  } else if (o.dump_tensor) {
    rc = dump_tensor(&gf, o.dump_tensor, o.dump_tensor_path);
  } else if (tokenizer_init(&tk, &gf, err, sizeof err) != 0) {
    fprintf(stderr, "rpa-generate: %s\n", err);
    rc = 2;
  } else {
    request *reqs = NULL;
    rc = make_requests(&o, &tk, &reqs);
    if (rc == 0)
      rc = o.tokenize_only ? write_json_mode(o.json_path, NULL, reqs, o.n_prompts)
                           : run_model(&o, &gf, &tk, reqs);
    for (int i = 0; i < o.n_prompts; i++) request_free(&reqs[i]);
    free(reqs);
    tokenizer_free(&tk);
  }
  gguf_close(&gf);
  options_free(&o);
  return rc;
}
