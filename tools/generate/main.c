/* rpa-generate: a small serving engine for a GGUF Llama model (made for
   SmolLM2-135M-Instruct) with rpa as its attention backend.

   Requests (--prompt, --prompts FILE) arrive at given steps; a block
   manager hands out KV pages on demand and takes them back when a sequence
   ends; every step packs all running decodes plus prefill chunks up to a
   token budget into ONE ragged batch, run through the model with one
   rpa_attention call per layer (the fused KV write included). Admission
   waits when the pages a request may need are not free. See README.md,
   "rpa-generate". */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "model.h"
#include "pool.h"
#include "rpa.h"
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
  int raw, shuffle_pages, tokenize_only, quiet, inspect;
  const char *dump_tensor, *dump_tensor_path;
} options;

static void usage(void) {
  printf(
      "usage: rpa-generate --model FILE [--prompt TEXT]... [--prompts FILE]\n"
      "  --model FILE        GGUF Llama model (SmolLM2-135M-Instruct Q4_1)\n"
      "  --prompt TEXT       a request (repeatable)\n"
      "  --prompts FILE      one request a line; a line \"@N TEXT\" arrives at\n"
      "                      step N (default 0)\n"
      "  --max-tokens N      tokens to generate per request (default 64)\n"
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
      "  --raw               no chat template: the prompt is the whole text\n"
      "  --json FILE         write requests, completions and figures as JSON\n"
      "  --dump-logits FILE  write every sampled row's logits (binary: per row\n"
      "                      int32 request, index, token, vocab; float32 logits)\n"
      "  --dump-first N      dump only the first N requests' rows\n"
      "  --tokenize          only tokenize the prompts (ids in --json)\n"
      "  --inspect           only print the file's metadata and tensor infos\n"
      "                      as JSON (to --json FILE or stdout)\n"
      "  --dump-tensor NAME FILE  only write tensor NAME dequantized (float32)\n"
      "  --quiet             no progress line, no completions on stdout\n");
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

static void read_prompts_file(options *o, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "rpa-generate: cannot open prompts file '%s': %s\n", path,
            strerror(errno));
    exit(2);
  }
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
    else if (!strcmp(a, "--raw")) o->raw = 1;
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
    die("%s", "no requests: give --prompt or --prompts");
}

/* ---- requests ------------------------------------------------------------ */

enum req_state { WAITING, PREFILL, DECODE, DONE };

typedef struct request {
  int index;
  const char *text;
  int32_t arrival;
  int32_t *ids; /* prompt ids, then the generated ones */
  int64_t n_prompt, n_ids, cap_ids;
  int32_t n_computed; /* tokens whose K/V are in the cache */
  int32_t *pages;
  int32_t n_pages, reserved_pages;
  int32_t limit; /* n_prompt + tokens it may generate */
  enum req_state state;
  const char *finish; /* "eos", "length", "context" */
  uint64_t rng;
  char *completion;
  size_t completion_len;
} request;

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int push_ids(request *r, const int32_t *ids, int64_t n) {
  if (r->n_ids + n > r->cap_ids) {
    int64_t nc = (r->n_ids + n) * 2 + 16;
    int32_t *p = realloc(r->ids, sizeof(int32_t) * (size_t)nc);
    if (!p) return -1;
    r->ids = p;
    r->cap_ids = nc;
  }
  memcpy(r->ids + r->n_ids, ids, sizeof(int32_t) * (size_t)n);
  r->n_ids += n;
  return 0;
}

/* Tokenizes text into r->ids; with the chat template (a documented subset
   of the model's: the default system message, one user turn, the
   assistant's generation prompt):
     <|im_start|>system\nYou are a helpful AI assistant named SmolLM,
     trained by Hugging Face<|im_end|>\n<|im_start|>user\nTEXT<|im_end|>\n
     <|im_start|>assistant\n
   The special tokens go in by id; the text between them is tokenized. */
static int encode_prompt(const tokenizer *tk, request *r, const char *text,
                         int raw, char *err, size_t errlen) {
  if (raw) {
    return tokenizer_encode(tk, text, strlen(text), &r->ids, &r->n_ids,
                            &r->cap_ids, err, errlen) < 0 ? -1 : 0;
  }
  if (tk->im_start_id < 0 || tk->im_end_id < 0) {
    snprintf(err, errlen, "the vocabulary has no <|im_start|>/<|im_end|>: "
             "use --raw");
    return -1;
  }
  const char *sys = "system\nYou are a helpful AI assistant named SmolLM, "
                    "trained by Hugging Face";
  const char *parts[3] = {sys, NULL, "assistant\n"};
  for (int p = 0; p < 3; p++) {
    if (push_ids(r, &tk->im_start_id, 1) != 0) goto oom;
    if (p == 1) {
      if (tokenizer_encode(tk, "user\n", 5, &r->ids, &r->n_ids, &r->cap_ids,
                           err, errlen) < 0 ||
          tokenizer_encode(tk, text, strlen(text), &r->ids, &r->n_ids,
                           &r->cap_ids, err, errlen) < 0)
        return -1;
    } else if (tokenizer_encode(tk, parts[p], strlen(parts[p]), &r->ids,
                                &r->n_ids, &r->cap_ids, err, errlen) < 0) {
      return -1;
    }
    if (p < 2) {
      if (push_ids(r, &tk->im_end_id, 1) != 0) goto oom;
      if (tokenizer_encode(tk, "\n", 1, &r->ids, &r->n_ids, &r->cap_ids, err,
                           errlen) < 0)
        return -1;
    }
  }
  return 0;
oom:
  snprintf(err, errlen, "out of memory");
  return -1;
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

/* ---- JSON ----------------------------------------------------------------- */

/* A JSON string; bytes that are not valid UTF-8 (a token may end inside a
   character) become U+FFFD, so the file always parses. */
static void json_str(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  size_t i = 0;
  const uint8_t *u = (const uint8_t *)s;
  while (i < n) {
    uint8_t c = u[i];
    if (c == '"' || c == '\\') { fputc('\\', f); fputc(c, f); i++; continue; }
    if (c < 0x20) { fprintf(f, "\\u%04x", c); i++; continue; }
    if (c < 0x80) { fputc(c, f); i++; continue; }
    size_t len = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    int ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; k++) ok = (u[i + k] & 0xC0) == 0x80;
    if (ok) {
      fwrite(u + i, 1, len, f);
      i += len;
    } else {
      fputs("\\ufffd", f);
      i++;
    }
  }
  fputc('"', f);
}

static void json_ids(FILE *f, const int32_t *ids, int64_t n) {
  fputc('[', f);
  for (int64_t i = 0; i < n; i++) fprintf(f, i ? ",%d" : "%d", ids[i]);
  fputc(']', f);
}

/* ---- the block manager ------------------------------------------------------ */

typedef struct block_manager {
  int32_t num_pages, page_size;
  int32_t *free_list, n_free;
  int32_t reserved; /* pages promised to admitted requests */
  int32_t peak_used;
} block_manager;

static int32_t pages_for(const block_manager *bm, int64_t tokens) {
  return (int32_t)((tokens + bm->page_size - 1) / bm->page_size);
}

/* Gives r the pages its first `tokens` slots need. Never fails for an
   admitted request: admission reserved its worst case. */
static void bm_grow(block_manager *bm, request *r, int64_t tokens) {
  const int32_t need = pages_for(bm, tokens);
  while (r->n_pages < need) {
    r->pages[r->n_pages++] = bm->free_list[--bm->n_free];
  }
  const int32_t used = bm->num_pages - bm->n_free;
  if (used > bm->peak_used) bm->peak_used = used;
}

static void bm_release(block_manager *bm, request *r) {
  /* Back in reverse, so a request's pages are reused in its order. */
  while (r->n_pages > 0) bm->free_list[bm->n_free++] = r->pages[--r->n_pages];
  bm->reserved -= r->reserved_pages;
  r->reserved_pages = 0;
}

/* ---- --inspect and --dump-tensor ---------------------------------------------- */

static void json_scalar(FILE *f, uint32_t type, const uint8_t *p) {
  switch (type) {
  case GGUF_T_U8: fprintf(f, "%u", p[0]); break;
  case GGUF_T_I8: fprintf(f, "%d", (int8_t)p[0]); break;
  case GGUF_T_BOOL: fprintf(f, p[0] ? "true" : "false"); break;
  case GGUF_T_U16: { uint16_t v; memcpy(&v, p, 2); fprintf(f, "%u", v); break; }
  case GGUF_T_I16: { int16_t v; memcpy(&v, p, 2); fprintf(f, "%d", v); break; }
  case GGUF_T_U32: { uint32_t v; memcpy(&v, p, 4); fprintf(f, "%u", v); break; }
  case GGUF_T_I32: { int32_t v; memcpy(&v, p, 4); fprintf(f, "%d", v); break; }
  case GGUF_T_U64: { uint64_t v; memcpy(&v, p, 8); fprintf(f, "%llu", (unsigned long long)v); break; }
  case GGUF_T_I64: { int64_t v; memcpy(&v, p, 8); fprintf(f, "%lld", (long long)v); break; }
  /* JSON has no NaN or infinity: those print as null. */
  case GGUF_T_F32: {
    float v;
    memcpy(&v, p, 4);
    if (isfinite(v)) fprintf(f, "%.9g", (double)v);
    else fprintf(f, "null");
    break;
  }
  case GGUF_T_F64: {
    double v;
    memcpy(&v, p, 8);
    if (isfinite(v)) fprintf(f, "%.17g", v);
    else fprintf(f, "null");
    break;
  }
  default: fprintf(f, "null");
  }
}

static size_t scalar_bytes(uint32_t type) {
  switch (type) {
  case GGUF_T_U8: case GGUF_T_I8: case GGUF_T_BOOL: return 1;
  case GGUF_T_U16: case GGUF_T_I16: return 2;
  case GGUF_T_U32: case GGUF_T_I32: case GGUF_T_F32: return 4;
  default: return 8;
  }
}

static void inspect(const gguf_file *gf, FILE *f) {
  fprintf(f, "{\"version\": %u, \"alignment\": %llu, \"metadata\": [\n",
          gf->version, (unsigned long long)gf->alignment);
  for (uint64_t i = 0; i < gf->n_kv; i++) {
    const gguf_kv *kv = &gf->kvs[i];
    fprintf(f, "  {\"key\": ");
    json_str(f, kv->key.ptr, kv->key.len);
    fprintf(f, ", \"type\": %u", kv->type);
    if (kv->type == GGUF_T_ARRAY) {
      fprintf(f, ", \"elem_type\": %u, \"count\": %llu, \"value\": [",
              kv->elem_type, (unsigned long long)kv->count);
      for (uint64_t k = 0; k < kv->count; k++) {
        if (k) fputc(',', f);
        if (kv->elem_type == GGUF_T_STRING) {
          gguf_str s = gguf_array_str(kv, k);
          json_str(f, s.ptr, s.len);
        } else {
          json_scalar(f, kv->elem_type, kv->data + k * scalar_bytes(kv->elem_type));
        }
      }
      fputc(']', f);
    } else if (kv->type == GGUF_T_STRING) {
      gguf_str s;
      memcpy(&s.len, kv->data, 8);
      fprintf(f, ", \"value\": ");
      json_str(f, (const char *)kv->data + 8, s.len);
    } else {
      fprintf(f, ", \"value\": ");
      json_scalar(f, kv->type, kv->data);
    }
    fprintf(f, "}%s\n", i + 1 < gf->n_kv ? "," : "");
  }
  fprintf(f, "], \"tensors\": [\n");
  for (uint64_t i = 0; i < gf->n_tensors; i++) {
    const gguf_tensor *t = &gf->tensors[i];
    fprintf(f, "  {\"name\": ");
    json_str(f, t->name.ptr, t->name.len);
    fprintf(f, ", \"type\": %u, \"dims\": [", t->type);
    for (uint32_t d = 0; d < t->n_dims; d++)
      fprintf(f, d ? ", %llu" : "%llu", (unsigned long long)t->dims[d]);
    fprintf(f, "], \"offset\": %llu, \"nbytes\": %llu}%s\n",
            (unsigned long long)t->offset, (unsigned long long)t->nbytes,
            i + 1 < gf->n_tensors ? "," : "");
  }
  fprintf(f, "]}\n");
}

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
  if (!f) die("cannot write '%s'", path);
  fwrite(buf, sizeof(float), n, f);
  fclose(f);
  free(buf);
  return 0;
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv) {
  options o;
  parse_args(&o, argc, argv);
  char err[1024];
  gguf_file gf;
  if (gguf_open(&gf, o.model_path, err, sizeof err) != 0) die("%s", err);
  if (o.inspect) {
    FILE *jf = o.json_path ? fopen(o.json_path, "w") : stdout;
    if (!jf) die("cannot write '%s'", o.json_path);
    inspect(&gf, jf);
    if (jf != stdout) fclose(jf);
    gguf_close(&gf);
    return 0;
  }
  if (o.dump_tensor) {
    int rc = dump_tensor(&gf, o.dump_tensor, o.dump_tensor_path);
    gguf_close(&gf);
    return rc;
  }
  tokenizer tk;
  if (tokenizer_init(&tk, &gf, err, sizeof err) != 0) die("%s", err);

  request *reqs = calloc((size_t)o.n_prompts, sizeof *reqs);
  if (!reqs) die("%s", "out of memory");
  for (int i = 0; i < o.n_prompts; i++) {
    request *r = &reqs[i];
    r->index = i;
    r->text = o.prompts[i].text;
    r->arrival = o.prompts[i].arrival;
    if (encode_prompt(&tk, r, r->text, o.raw, err, sizeof err) != 0) {
      fprintf(stderr, "rpa-generate: request %d: %s\n", i, err);
      return 2;
    }
    r->n_prompt = r->n_ids;
    if (r->n_prompt == 0) {
      fprintf(stderr, "rpa-generate: request %d: the prompt has no tokens\n", i);
      return 2;
    }
  }
  if (o.tokenize_only) {
    FILE *jf = o.json_path ? fopen(o.json_path, "w") : stdout;
    if (!jf) die("cannot write '%s'", o.json_path);
    fprintf(jf, "{\"requests\": [\n");
    for (int i = 0; i < o.n_prompts; i++) {
      fprintf(jf, "  {\"prompt\": ");
      json_str(jf, reqs[i].text, strlen(reqs[i].text));
      fprintf(jf, ", \"prompt_ids\": ");
      json_ids(jf, reqs[i].ids, reqs[i].n_prompt);
      fprintf(jf, "}%s\n", i + 1 < o.n_prompts ? "," : "");
    }
    fprintf(jf, "]}\n");
    if (jf != stdout) fclose(jf);
    return 0;
  }

  model m;
  const double t_load = now_s();
  if (model_load(&m, &gf, err, sizeof err) != 0) die("%s", err);
  if (m.n_vocab != tk.n_vocab) {
    snprintf(err, sizeof err, "the embedding has %d rows, the vocabulary %d "
             "tokens", m.n_vocab, tk.n_vocab);
    die("%s", err);
  }
  const double load_s = now_s() - t_load;
  const int32_t context = o.context ? (o.context < m.ctx_len ? o.context : m.ctx_len)
                                    : m.ctx_len;
  block_manager bm = {o.pages, o.page_size, NULL, o.pages, 0, 0};
  bm.free_list = malloc(sizeof(int32_t) * (size_t)o.pages);
  if (!bm.free_list) die("%s", "out of memory");
  /* The stack pops from the end: page 0 first unless shuffled. */
  for (int32_t i = 0; i < o.pages; i++) bm.free_list[i] = o.pages - 1 - i;
  if (o.shuffle_pages) {
    uint64_t s = o.seed ^ 0x5eedULL;
    for (int32_t i = o.pages - 1; i > 0; i--) {
      int32_t j = (int32_t)(splitmix64(&s) % (uint64_t)(i + 1));
      int32_t t = bm.free_list[i];
      bm.free_list[i] = bm.free_list[j];
      bm.free_list[j] = t;
    }
  }
  int32_t max_pages_per_seq = 1;
  for (int i = 0; i < o.n_prompts; i++) {
    request *r = &reqs[i];
    if (r->n_prompt >= context) {
      fprintf(stderr, "rpa-generate: request %d: the prompt is %lld tokens, "
              "the context is %d (it needs room for one new token)\n", i,
              (long long)r->n_prompt, context);
      return 2;
    }
    int64_t lim = r->n_prompt + o.max_tokens;
    r->limit = (int32_t)(lim < context ? lim : context);
    /* The last generated token is never fed back, so the cache holds at
       most limit - 1 tokens. */
    r->reserved_pages = pages_for(&bm, r->limit - 1);
    if (r->reserved_pages > o.pages) {
      fprintf(stderr, "rpa-generate: request %d needs up to %d pages (%d "
              "tokens), the cache has %d: raise --pages or lower "
              "--max-tokens\n", i, r->reserved_pages, r->limit - 1, o.pages);
      return 2;
    }
    if (r->reserved_pages > max_pages_per_seq) max_pages_per_seq = r->reserved_pages;
    r->pages = malloc(sizeof(int32_t) * (size_t)r->reserved_pages);
    if (!r->pages) die("%s", "out of memory");
    r->rng = o.seed * 0x100000001B3ull + (uint64_t)i;
    (void)splitmix64(&r->rng);
    r->state = WAITING;
  }

  kv_cache cache;
  if (kv_cache_init(&cache, &m, o.pages, o.page_size) != 0)
    die("%s", "out of memory (KV cache: lower --pages)");
  rpa_context_options copt = rpa_context_options_default();
  copt.num_threads = o.threads;
  copt.pin_threads = 0; /* the matmul threads share these CPUs */
  rpa_context *rctx;
  rpa_status st = rpa_context_create(&copt, &rctx);
  if (st != RPA_OK) die("rpa_context_create: %s", rpa_status_string(st));
  pool threads;
  if (pool_init(&threads, o.threads) != 0) die("%s", "cannot start threads");
  forward_ctx fc;
  memset(&fc, 0, sizeof fc);
  fc.m = &m;
  fc.cache = &cache;
  fc.rpa = rctx;
  fc.threads = &threads;

  FILE *dump = NULL;
  if (o.dump_logits_path && !(dump = fopen(o.dump_logits_path, "wb")))
    die("cannot write '%s'", o.dump_logits_path);

  const int S = o.n_prompts;
  int32_t *order = malloc(sizeof(int32_t) * (size_t)S); /* admission order */
  int32_t *b_tokens = malloc(sizeof(int32_t) * (size_t)(o.chunk + S));
  int32_t *b_pos = malloc(sizeof(int32_t) * (size_t)(o.chunk + S));
  int32_t *b_cu = malloc(sizeof(int32_t) * (size_t)(S + 1));
  int32_t *b_kv = malloc(sizeof(int32_t) * (size_t)S);
  int32_t *b_req = malloc(sizeof(int32_t) * (size_t)S);
  int32_t *b_qlen = malloc(sizeof(int32_t) * (size_t)S);
  int32_t *b_pages = malloc(sizeof(int32_t) * (size_t)S * (size_t)max_pages_per_seq);
  int32_t *b_lrows = malloc(sizeof(int32_t) * (size_t)S);
  int32_t *b_lreq = malloc(sizeof(int32_t) * (size_t)S);
  float *logits = malloc(sizeof(float) * (size_t)S * (size_t)m.n_vocab);
  cand *scratch = malloc(sizeof(cand) * (size_t)m.n_vocab);
  if (!order || !b_tokens || !b_pos || !b_cu || !b_kv || !b_req || !b_qlen ||
      !b_pages || !b_lrows || !b_lreq || !logits || !scratch)
    die("%s", "out of memory");

  int n_admitted = 0, n_done = 0, next_wait = 0;
  int32_t step = 0;
  long prefill_tokens = 0, decode_tokens = 0, decode_only_tokens = 0;
  long mixed_steps = 0, steps = 0;
  double prefill_step_s = 0.0, decode_only_s = 0.0;
  const double t_run = now_s();
  char piece[256];
  while (n_done < S) {
    /* Admission, first come first served: a request waits until the pages
       it may need (prompt + max tokens) are not promised to others. */
    while (next_wait < S && reqs[next_wait].arrival <= step &&
           bm.reserved + reqs[next_wait].reserved_pages <= bm.num_pages) {
      request *r = &reqs[next_wait++];
      bm.reserved += r->reserved_pages;
      r->state = PREFILL;
      order[n_admitted++] = r->index;
    }
    /* The batch: every running decode, then prefill chunks in admission
       order up to the token budget. */
    int32_t T = 0, ns = 0, np = 0;
    int n_prefill_seqs = 0, n_decode_seqs = 0;
    b_cu[0] = 0;
    for (int pass = 0; pass < 2; pass++) {
      for (int a = 0; a < n_admitted; a++) {
        request *r = &reqs[order[a]];
        int32_t q;
        if (pass == 0 && r->state == DECODE) q = 1;
        else if (pass == 1 && r->state == PREFILL && T < o.chunk) {
          q = (int32_t)(r->n_prompt - r->n_computed);
          if (q > o.chunk - T) q = o.chunk - T;
        } else continue;
        bm_grow(&bm, r, r->n_computed + q);
        for (int32_t k = 0; k < q; k++) {
          b_tokens[T + k] = r->ids[r->n_computed + k];
          b_pos[T + k] = r->n_computed + k;
        }
        T += q;
        b_req[ns] = r->index;
        b_qlen[ns] = q;
        b_kv[ns] = r->n_computed + q;
        b_cu[ns + 1] = T;
        for (int32_t p = 0; p < max_pages_per_seq; p++)
          b_pages[(size_t)ns * max_pages_per_seq + p] = p < r->n_pages ? r->pages[p] : 0;
        /* Logits when this is the sequence's last known token. */
        if (r->n_computed + q == r->n_ids) {
          b_lrows[np] = T - 1;
          b_lreq[np] = r->index;
          np++;
        }
        if (pass == 0) n_decode_seqs++;
        else n_prefill_seqs++;
        ns++;
      }
    }
    if (ns == 0) {
      if (next_wait < S && reqs[next_wait].arrival > step) {
        step = reqs[next_wait].arrival; /* idle until the next arrival */
        continue;
      }
      fprintf(stderr, "rpa-generate: internal error: nothing to run\n");
      return 3;
    }
    batch b = {T, ns, max_pages_per_seq, b_tokens, b_pos, b_cu, b_kv, b_pages,
               np, b_lrows, logits};
    const double ts = now_s();
    if (forward(&fc, &b, err, sizeof err) != 0) {
      fprintf(stderr, "rpa-generate: step %d: %s\n", step, err);
      return 3;
    }
    const double dt = now_s() - ts;
    steps++;
    if (n_prefill_seqs > 0) {
      prefill_step_s += dt;
      if (n_decode_seqs > 0) mixed_steps++;
    } else {
      decode_only_s += dt;
      decode_only_tokens += T;
    }
    for (int32_t s = 0; s < ns; s++) {
      request *r = &reqs[b_req[s]];
      if (r->state == PREFILL) prefill_tokens += b_qlen[s];
      else decode_tokens += b_qlen[s];
      r->n_computed += b_qlen[s];
      if (r->state == PREFILL && r->n_computed == r->n_prompt) r->state = DECODE;
    }
    for (int32_t k = 0; k < np; k++) {
      request *r = &reqs[b_lreq[k]];
      const float *row = logits + (size_t)k * m.n_vocab;
      int32_t tok = sample(row, m.n_vocab, o.temperature, o.top_p, &r->rng, scratch);
      if (dump && (o.dump_first == 0 || r->index < o.dump_first)) {
        int32_t hdr[4] = {r->index, (int32_t)(r->n_ids - r->n_prompt), tok, m.n_vocab};
        fwrite(hdr, sizeof hdr, 1, dump);
        fwrite(row, sizeof(float), (size_t)m.n_vocab, dump);
      }
      if (push_ids(r, &tok, 1) != 0) die("%s", "out of memory");
      size_t pl = tokenizer_decode_token(&tk, tok, piece, sizeof piece);
      char *c = realloc(r->completion, r->completion_len + pl + 1);
      if (!c) die("%s", "out of memory");
      r->completion = c;
      memcpy(c + r->completion_len, piece, pl);
      r->completion_len += pl;
      c[r->completion_len] = 0;
      if (tok == tk.eos_id) r->finish = "eos";
      else if (r->n_ids >= r->limit)
        r->finish = r->n_ids - r->n_prompt >= o.max_tokens ? "length" : "context";
      if (r->finish) {
        r->state = DONE;
        bm_release(&bm, r);
        n_done++;
      }
    }
    step++;
    if (!o.quiet) {
      fprintf(stderr, "\rstep %d: batch %d tokens (%d decode, %d prefill seqs), "
              "running %d, waiting %d, done %d/%d, pages %d/%d   ", step, T,
              n_decode_seqs, n_prefill_seqs, n_admitted - n_done,
              S - n_admitted, n_done, S, bm.num_pages - bm.n_free, bm.num_pages);
      fflush(stderr);
    }
  }
  const double run_s = now_s() - t_run;
  if (!o.quiet) fprintf(stderr, "\n");
  if (dump) fclose(dump);

  const double prefill_tps = prefill_step_s > 0 ? prefill_tokens / prefill_step_s : 0;
  const double decode_tps = decode_only_s > 0 ? decode_only_tokens / decode_only_s : 0;
  const double attn_share = fc.total_seconds > 0 ? fc.attn_seconds / fc.total_seconds : 0;
  if (!o.quiet) {
    for (int i = 0; i < S; i++) {
      printf("--- request %d (%lld prompt tokens, %lld generated, %s)\n", i,
             (long long)reqs[i].n_prompt,
             (long long)(reqs[i].n_ids - reqs[i].n_prompt), reqs[i].finish);
      printf("%s\n", reqs[i].completion ? reqs[i].completion : "");
    }
  }
  printf("rpa-generate: %d requests, %ld steps (%ld mixed decode+prefill), "
         "%.2f s (model load %.2f s), %d threads, rpa kernel set %s\n", S,
         steps, mixed_steps, run_s, load_s, o.threads, rpa_context_isa(rctx));
  printf("  prefill: %ld tokens, %.1f tokens/s over the steps holding prefill\n",
         prefill_tokens, prefill_tps);
  printf("  decode: %ld tokens, %.1f tokens/s over the decode-only steps\n",
         decode_tokens, decode_tps);
  printf("  step time: %.1f ms mean, attention (rpa_attention) %.1f%%, the "
         "rest %.1f%%\n", steps ? 1e3 * fc.total_seconds / steps : 0.0,
         100 * attn_share, 100 * (1 - attn_share));
  printf("  pages: peak %d of %d (page size %d)\n", bm.peak_used, bm.num_pages,
         bm.page_size);
  if (o.json_path) {
    FILE *jf = fopen(o.json_path, "w");
    if (!jf) die("cannot write '%s'", o.json_path);
    fprintf(jf, "{\"requests\": [\n");
    for (int i = 0; i < S; i++) {
      request *r = &reqs[i];
      fprintf(jf, "  {\"prompt\": ");
      json_str(jf, r->text, strlen(r->text));
      fprintf(jf, ", \"arrival_step\": %d, \"prompt_ids\": ", r->arrival);
      json_ids(jf, r->ids, r->n_prompt);
      fprintf(jf, ", \"completion\": ");
      json_str(jf, r->completion ? r->completion : "", r->completion_len);
      fprintf(jf, ", \"token_ids\": ");
      json_ids(jf, r->ids + r->n_prompt, r->n_ids - r->n_prompt);
      fprintf(jf, ", \"finish\": \"%s\"}%s\n", r->finish, i + 1 < S ? "," : "");
    }
    fprintf(jf, "], \"stats\": {\"steps\": %ld, \"mixed_steps\": %ld, "
            "\"prefill_tokens\": %ld, \"decode_tokens\": %ld, "
            "\"prefill_tokens_per_s\": %.3f, \"decode_tokens_per_s\": %.3f, "
            "\"attention_share\": %.5f, \"step_ms_mean\": %.3f, "
            "\"run_s\": %.3f, \"peak_pages\": %d, \"num_pages\": %d, "
            "\"page_size\": %d, \"threads\": %d, \"isa\": \"%s\"}}\n",
            steps, mixed_steps, prefill_tokens, decode_tokens, prefill_tps,
            decode_tps, attn_share, steps ? 1e3 * fc.total_seconds / steps : 0.0,
            run_s, bm.peak_used, bm.num_pages, bm.page_size, o.threads,
            rpa_context_isa(rctx));
    fclose(jf);
  }
  for (int i = 0; i < S; i++) {
    free(reqs[i].ids);
    free(reqs[i].pages);
    free(reqs[i].completion);
    free(o.prompts[i].text);
  }
  free(reqs);
  free(o.prompts);
  free(order); free(b_tokens); free(b_pos); free(b_cu); free(b_kv);
  free(b_req); free(b_qlen); free(b_pages); free(b_lrows); free(b_lreq);
  free(logits); free(scratch); free(bm.free_list);
  forward_free(&fc);
  pool_free(&threads);
  rpa_context_destroy(rctx);
  kv_cache_free(&cache, &m);
  model_free(&m);
  tokenizer_free(&tk);
  gguf_close(&gf);
  return 0;
}
