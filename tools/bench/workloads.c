/* Workload specs, the built-in list and workload files; see workloads.h. */
#include "workloads.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the built-in list ----------------------------------------------------- */

/* Head shapes of the models named (attention of one layer, one device). */
#define LLAMA3_8B "model=llama3-8b heads=32/8 dim=128 "
#define LLAMA3_70B_TP8 "model=llama3-70b-tp8 heads=8/1 dim=128 "
#define QWEN25_7B "model=qwen2.5-7b heads=28/4 dim=128 " /* GQA 7 */
#define GEMMA2_9B "model=gemma2-9b heads=16/8 dim=256 window=4096 softcap=50 "
#define GPT_OSS_20B "model=gpt-oss-20b heads=64/8 dim=64 window=128 sinks=1 "
#define FALCON_7B "model=falcon-7b heads=71/1 dim=64 " /* MQA */
/* A realistic spread of decode lengths: log-uniform over 128 .. 8k. */
#define SPREAD "128~8k"

static const bench_builtin builtins[] = {
    /* Llama-3-8B decode: batch x KV length */
    {"llama3-8b.decode.8x1k.bf16.p16", LLAMA3_8B "seqs=8*1:1k", 0},
    {"llama3-8b.decode.8x4k.bf16.p16", LLAMA3_8B "seqs=8*1:4k", 0},
    {"llama3-8b.decode.8x8k.bf16.p16", LLAMA3_8B "seqs=8*1:8k", 0},
    {"llama3-8b.decode.32x1k.bf16.p16", LLAMA3_8B "seqs=32*1:1k", 0},
    {"llama3-8b.decode.32x4k.bf16.p16", LLAMA3_8B "seqs=32*1:4k", 1},
    {"llama3-8b.decode.32x8k.bf16.p16", LLAMA3_8B "seqs=32*1:8k", 0},
    {"llama3-8b.decode.64x1k.bf16.p16", LLAMA3_8B "seqs=64*1:1k", 0},
    {"llama3-8b.decode.64x4k.bf16.p16", LLAMA3_8B "seqs=64*1:4k", 0},
    {"llama3-8b.decode.64x8k.bf16.p16", LLAMA3_8B "seqs=64*1:8k", 0},
    {"llama3-8b.decode.32xspread.bf16.p16", LLAMA3_8B "seqs=32*1:" SPREAD, 0},
    {"llama3-8b.decode.64xspread.bf16.p16", LLAMA3_8B "seqs=64*1:" SPREAD, 1},
    /* KV dtypes, page sizes, cache layouts, KV-share mode */
    {"llama3-8b.decode.32x4k.f32.p16", LLAMA3_8B "seqs=32*1:4k dtype=f32", 0},
    {"llama3-8b.decode.32x4k.f16.p16", LLAMA3_8B "seqs=32*1:4k dtype=f16", 0},
    {"llama3-8b.decode.32x4k.fp8.p16", LLAMA3_8B "seqs=32*1:4k kv=fp8", 1},
    {"llama3-8b.decode.32x4k.fp8e5m2.p16",
     LLAMA3_8B "seqs=32*1:4k kv=fp8_e5m2", 0},
    {"llama3-8b.decode.32x4k.bf16.p128", LLAMA3_8B "seqs=32*1:4k page=128", 0},
    {"llama3-8b.decode.32x4k.bf16.p1", LLAMA3_8B "seqs=32*1:4k page=1", 0},
    {"llama3-8b.decode.32x4k.bf16.p16.vllm",
     LLAMA3_8B "seqs=32*1:4k layout=vllm", 0},
    {"llama3-8b.decode.32x4k.bf16.p16.hnd", LLAMA3_8B "seqs=32*1:4k layout=hnd",
     0},
    {"llama3-8b.decode.32x4k.bf16.p16.kvshare",
     LLAMA3_8B "seqs=32*1:4k update=0", 0},
    /* Llama-3-8B prefill chunks, causal, with and without a cached prefix */
    {"llama3-8b.prefill.512.bf16.p16", LLAMA3_8B "seqs=512:512", 1},
    {"llama3-8b.prefill.2048.bf16.p16", LLAMA3_8B "seqs=2048:2048", 0},
    {"llama3-8b.prefill.512.prefix2k.bf16.p16", LLAMA3_8B "seqs=512:2560", 0},
    {"llama3-8b.prefill.2048.prefix6k.bf16.p16", LLAMA3_8B "seqs=2048:8k", 0},
    {"llama3-8b.prefill.2048.bf16.p128", LLAMA3_8B "seqs=2048:2048 page=128",
     0},
    {"llama3-8b.prefill.512.f32.p16", LLAMA3_8B "seqs=512:512 dtype=f32", 1},
    {"llama3-8b.prefill.2048.f32.p16", LLAMA3_8B "seqs=2048:2048 dtype=f32", 0},
    {"llama3-8b.prefill.512.fp8.p16", LLAMA3_8B "seqs=512:512 kv=fp8", 0},
    {"llama3-8b.prefill.512.f16.p16", LLAMA3_8B "seqs=512:512 dtype=f16", 0},
    /* Llama-3-8B mixed: decodes beside prefill chunks in one call */
    {"llama3-8b.mixed.30x1+2x512.bf16.p16",
     LLAMA3_8B "seqs=30*1:" SPREAD ",2*512:512", 1},
    {"llama3-8b.mixed.30x1+2x512.prefix2k.bf16.p16",
     LLAMA3_8B "seqs=30*1:" SPREAD ",2*512:2560", 0},
    {"llama3-8b.mixed.62x1+1x256.bf16.p16",
     LLAMA3_8B "seqs=62*1:" SPREAD ",256:1k", 0},
    /* Llama-3-70B per device under 8-way tensor parallelism */
    {"llama3-70b-tp8.decode.32x4k.bf16.p16", LLAMA3_70B_TP8 "seqs=32*1:4k", 1},
    {"llama3-70b-tp8.decode.64xspread.bf16.p16",
     LLAMA3_70B_TP8 "seqs=64*1:" SPREAD, 0},
    {"llama3-70b-tp8.prefill.2048.bf16.p16", LLAMA3_70B_TP8 "seqs=2048:2048",
     0},
    {"llama3-70b-tp8.mixed.30x1+2x512.bf16.p16",
     LLAMA3_70B_TP8 "seqs=30*1:" SPREAD ",2*512:512", 0},
    /* GQA 7 */
    {"qwen2.5-7b.decode.32x4k.bf16.p16", QWEN25_7B "seqs=32*1:4k", 0},
    {"qwen2.5-7b.prefill.512.bf16.p16", QWEN25_7B "seqs=512:512", 0},
    /* Gemma-style sliding window 4096 over 16k-token sequences, D 256 */
    {"gemma2-9b.decode.8x16k.swa4k.bf16.p16", GEMMA2_9B "seqs=8*1:16k", 0},
    {"gemma2-9b.prefill.512.at16k.swa4k.bf16.p16", GEMMA2_9B "seqs=512:16k",
     0},
    /* gpt-oss-style layer: D 64, attention sinks, window 128 */
    {"gpt-oss-20b.decode.32x4k.swa128.bf16.p16", GPT_OSS_20B "seqs=32*1:4k",
     0},
    {"gpt-oss-20b.prefill.2048.swa128.bf16.p16", GPT_OSS_20B "seqs=2048:2048",
     0},
    /* Shared prefixes (cascade): 64 decodes over one 4k prefix (a system
       prompt) and 0.5-2k tokens of their own, with the prefix named as a
       group and without */
    {"llama3-8b.decode.64x(4k+0.5~2k).shared.bf16.p16",
     LLAMA3_8B "seqs=64*1:4608~6144 shared=4096", 0},
    {"llama3-8b.decode.64x(4k+0.5~2k).unshared.bf16.p16",
     LLAMA3_8B "seqs=64*1:4608~6144", 0},
    /* Speculative decoding: 16 sequences verify 32 draft tokens over 2k
       cached tokens, the drafts a tree (each sees its ancestors) or a
       causal chain; the tree must cost about what the chain costs */
    {"llama3-8b.spec.16x32tree.at2k.bf16.p16",
     LLAMA3_8B "seqs=16*32:2080 tree=1", 0},
    {"llama3-8b.spec.16x32chain.at2k.bf16.p16", LLAMA3_8B "seqs=16*32:2080",
     0},
    {"llama3-8b.spec.4x256tree.bf16.p16", LLAMA3_8B "seqs=4*256:256 tree=1",
     0},
    {"llama3-8b.spec.4x256chain.bf16.p16", LLAMA3_8B "seqs=4*256:256", 0},
    /* MQA */
    {"falcon-7b.decode.32x2k.bf16.p16", FALCON_7B "seqs=32*1:2k", 0},
    {"falcon-7b.prefill.512.bf16.p16", FALCON_7B "seqs=512:512", 0},
};

const bench_builtin *bench_builtins(int *count) {
  *count = (int)(sizeof builtins / sizeof builtins[0]);
  return builtins;
}

/* ---- small helpers ---------------------------------------------------------- */

const char *bench_workload_kind(const bench_workload *w) {
  int decodes = 0;
  for (int32_t i = 0; i < w->num_seqs; i++) decodes += w->q_lens[i] == 1;
  return decodes == w->num_seqs ? "decode" : decodes == 0 ? "prefill" : "mixed";
}

const char *bench_layout_name(bench_layout layout) {
  switch (layout) {
    case BENCH_COMBINED: return "combined";
    case BENCH_VLLM: return "vllm";
    case BENCH_HND: return "hnd";
  }
  return "?";
}

static int fail(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
  return -1;
}

/* A whole number with an optional k (x1024) suffix, in [lo, hi]; *end is
   set past it. Returns 0 or -1. */
static int parse_count(const char *s, const char **end, long lo, long hi,
                       long *out) {
  if (!isdigit((unsigned char)*s)) return -1;
  errno = 0;
  char *e;
  long v = strtol(s, &e, 10);
  if (errno) return -1;
  if (*e == 'k' || *e == 'K') {
    if (v > hi / 1024) return -1;
    v *= 1024;
    e++;
  }
  if (v < lo || v > hi) return -1;
  *end = e;
  *out = v;
  return 0;
}

/* A whole value: the number must be the entire string. */
static int parse_whole(const char *s, long lo, long hi, long *out) {
  const char *end;
  return parse_count(s, &end, lo, hi, out) == 0 && *end == '\0' ? 0 : -1;
}

static int parse_dtype(const char *s, rpa_dtype *out) {
  static const struct {
    const char *name;
    rpa_dtype dtype;
  } names[] = {{"f32", RPA_F32},           {"bf16", RPA_BF16},
               {"f16", RPA_F16},           {"fp8", RPA_FP8_E4M3},
               {"fp8_e4m3", RPA_FP8_E4M3}, {"e4m3", RPA_FP8_E4M3},
               {"fp8_e5m2", RPA_FP8_E5M2}, {"e5m2", RPA_FP8_E5M2}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(s, names[i].name) == 0) {
      *out = names[i].dtype;
      return 0;
    }
  return -1;
}

static uint64_t fnv1a(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

static double uniform01(uint64_t *state) { /* splitmix64 -> [0, 1) */
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}

/* seqs=ITEMS: [N*]Q:KV[,...], KV a length or LO~HI. Two passes: count,
   then fill. Lengths drawn for LO~HI are seeded by the spec string. */
static int parse_seqs(const char *s, bench_workload *w, char *err, size_t len) {
  enum { MAX_SEQS = 1 << 20, MAX_LEN = 1 << 30 };
  for (int pass = 0; pass < 2; pass++) {
    uint64_t rng = fnv1a(s);
    int32_t n = 0;
    const char *p = s;
    for (;;) {
      const char *item = p, *e;
      long count = 1, q, lo, hi;
      if (parse_count(p, &e, 1, MAX_SEQS, &count) == 0 && *e == '*')
        p = e + 1;
      else
        count = 1;
      if (parse_count(p, &e, 1, MAX_LEN, &q) != 0 || *e != ':')
        return fail(err, len, "seqs: '%s': expected [N*]Q:KV", item);
      p = e + 1;
      if (parse_count(p, &e, 1, MAX_LEN, &lo) != 0)
        return fail(err, len, "seqs: '%s': KV must be a length or LO~HI",
                    item);
      hi = lo;
      if (*e == '~' && (parse_count(e + 1, &e, 1, MAX_LEN, &hi) != 0 || hi < lo))
        return fail(err, len, "seqs: '%s': LO~HI needs 1 <= LO <= HI", item);
      if (lo < q)
        return fail(err, len,
                    "seqs: '%s': KV (%ld) must be >= Q (%ld), the new tokens "
                    "are part of the sequence",
                    item, lo, q);
      if (*e != ',' && *e != '\0')
        return fail(err, len, "seqs: '%s': unexpected '%c'", item, *e);
      if (count > MAX_SEQS - n)
        return fail(err, len, "seqs: more than %d sequences", MAX_SEQS);
      for (long i = 0; i < count; i++, n++) {
        long kv = lo;
        if (hi > lo)
          kv = lround(exp(log((double)lo) +
                          uniform01(&rng) * (log((double)hi) - log((double)lo))));
        if (pass == 1) {
          w->q_lens[n] = (int32_t)q;
          w->kv_lens[n] = (int32_t)(kv < lo ? lo : kv > hi ? hi : kv);
        }
      }
      p = e;
      if (*p == '\0') break;
      p++;
    }
    if (pass == 0) {
      w->num_seqs = n;
      w->q_lens = calloc((size_t)n, sizeof(int32_t));
      w->kv_lens = calloc((size_t)n, sizeof(int32_t));
      if (!w->q_lens || !w->kv_lens) return fail(err, len, "out of memory");
    }
  }
  int64_t tokens = 0;
  for (int32_t i = 0; i < w->num_seqs; i++) tokens += w->q_lens[i];
  if (tokens > INT32_MAX / 2)
    return fail(err, len, "seqs: %lld new tokens in all, too many",
                (long long)tokens);
  return 0;
}

/* Copies a name or label; -1 when it does not fit. */
static int copy_text(char *dst, size_t cap, const char *src) {
  const size_t n = strlen(src);
  if (n >= cap) return -1;
  memcpy(dst, src, n + 1);
  return 0;
}

static int parse_flag(const char *v, int *out) {
  if (strcmp(v, "0") == 0 || strcmp(v, "1") == 0) {
    *out = v[0] == '1';
    return 0;
  }
  return -1;
}

/* ---- parsing a spec ------------------------------------------------------------ */

int bench_workload_parse(const char *name, const char *spec,
                         bench_workload *w, char *err, size_t err_len) {
  memset(w, 0, sizeof *w);
  w->page_size = 16;
  w->q_dtype = w->out_dtype = w->kv_dtype = RPA_BF16;
  w->causal = 1;
  w->update = 1;
  snprintf(w->model, sizeof w->model, "custom");
  if (copy_text(w->name, sizeof w->name, name ? name : "custom") != 0) {
    snprintf(err, err_len, "workload name longer than %zu characters",
             sizeof w->name - 1);
    return -1;
  }
  int have_out = 0, have_seqs = 0, have_heads = 0, have_dim = 0;
  char msg[200] = "";

  const char *p = spec;
  for (int word = 0;; word++) {
    while (isspace((unsigned char)*p)) p++;
    if (*p == '\0') break;
    const char *start = p;
    while (*p && !isspace((unsigned char)*p)) p++;
    char tok[512];
    if ((size_t)(p - start) >= sizeof tok) {
      fail(msg, sizeof msg, "a word longer than %zu characters", sizeof tok);
      goto bad;
    }
    memcpy(tok, start, (size_t)(p - start));
    tok[p - start] = '\0';
    char *eq = strchr(tok, '=');
    if (!eq) {
      if (word == 0 && !name) {
        if (copy_text(w->name, sizeof w->name, tok) != 0) {
          fail(msg, sizeof msg, "a name longer than %zu characters",
               sizeof w->name - 1);
          goto bad;
        }
        continue;
      }
      fail(msg, sizeof msg, "'%s': expected key=value", tok);
      goto bad;
    }
    *eq = '\0';
    const char *key = tok, *val = eq + 1;
    long v = 0;
    int ok = 1;
    if (strcmp(key, "seqs") == 0) {
      free(w->q_lens);
      free(w->kv_lens);
      w->q_lens = w->kv_lens = NULL;
      if (parse_seqs(val, w, msg, sizeof msg) != 0) goto bad;
      have_seqs = 1;
    } else if (strcmp(key, "heads") == 0) {
      const char *e;
      long hkv;
      ok = parse_count(val, &e, 1, 1 << 16, &v) == 0 && *e == '/' &&
           parse_whole(e + 1, 1, 1 << 16, &hkv) == 0 && v % hkv == 0;
      if (!ok) {
        fail(msg, sizeof msg,
             "heads=%s: expected HQ/HKV with HQ a multiple of HKV", val);
        goto bad;
      }
      w->num_q_heads = (int32_t)v;
      w->num_kv_heads = (int32_t)hkv;
      have_heads = 1;
    } else if (strcmp(key, "dim") == 0) {
      ok = parse_whole(val, 1, 4096, &v) == 0;
      w->head_dim = (int32_t)v;
      have_dim = 1;
    } else if (strcmp(key, "page") == 0) {
      ok = parse_whole(val, 1, 1 << 16, &v) == 0;
      w->page_size = (int32_t)v;
    } else if (strcmp(key, "window") == 0) {
      ok = parse_whole(val, 0, INT32_MAX, &v) == 0;
      w->window = (int32_t)v;
    } else if (strcmp(key, "q") == 0) {
      ok = parse_dtype(val, &w->q_dtype) == 0;
      if (ok && !have_out) w->out_dtype = w->q_dtype;
    } else if (strcmp(key, "out") == 0) {
      ok = parse_dtype(val, &w->out_dtype) == 0;
      have_out = 1;
    } else if (strcmp(key, "kv") == 0) {
      ok = parse_dtype(val, &w->kv_dtype) == 0;
    } else if (strcmp(key, "dtype") == 0) {
      ok = parse_dtype(val, &w->kv_dtype) == 0;
      w->q_dtype = w->out_dtype = w->kv_dtype;
    } else if (strcmp(key, "sinks") == 0) {
      ok = parse_flag(val, &w->sinks) == 0;
    } else if (strcmp(key, "causal") == 0) {
      ok = parse_flag(val, &w->causal) == 0;
    } else if (strcmp(key, "update") == 0) {
      ok = parse_flag(val, &w->update) == 0;
    } else if (strcmp(key, "shared") == 0) {
      ok = parse_whole(val, 0, INT32_MAX, &v) == 0;
      w->shared = (int32_t)v;
    } else if (strcmp(key, "tree") == 0) {
      ok = parse_flag(val, &w->tree) == 0;
    } else if (strcmp(key, "softcap") == 0) {
      char *e;
      w->soft_cap = strtof(val, &e);
      ok = *val && *e == '\0' && w->soft_cap >= 0 && isfinite(w->soft_cap);
    } else if (strcmp(key, "layout") == 0) {
      if (strcmp(val, "combined") == 0)
        w->layout = BENCH_COMBINED;
      else if (strcmp(val, "vllm") == 0)
        w->layout = BENCH_VLLM;
      else if (strcmp(val, "hnd") == 0)
        w->layout = BENCH_HND;
      else
        ok = 0;
    } else if (strcmp(key, "model") == 0) {
      ok = copy_text(w->model, sizeof w->model, val) == 0;
    } else if (strcmp(key, "name") == 0) {
      ok = copy_text(w->name, sizeof w->name, val) == 0;
    } else {
      fail(msg, sizeof msg,
           "unknown key '%s' (keys: seqs heads dim q out kv dtype page window "
           "sinks causal update tree shared softcap layout model name)",
           key);
      goto bad;
    }
    if (!ok) {
      fail(msg, sizeof msg, "bad value in %s=%s", key, val);
      goto bad;
    }
  }
  if (!have_seqs || !have_heads || !have_dim) {
    fail(msg, sizeof msg, "needs seqs=, heads= and dim=");
    goto bad;
  }
  if (w->q_dtype > RPA_F16 || w->out_dtype > RPA_F16) {
    fail(msg, sizeof msg, "q and out dtypes must be f32, bf16 or f16");
    goto bad;
  }
  if (w->window && !w->causal) {
    fail(msg, sizeof msg, "a sliding window needs causal=1");
    goto bad;
  }
  if (w->shared) {
    if (w->window) {
      fail(msg, sizeof msg, "shared= with a window is not supported here");
      goto bad;
    }
    if (w->shared % w->page_size) {
      fail(msg, sizeof msg, "shared=%d is not a multiple of page=%d",
           (int)w->shared, (int)w->page_size);
      goto bad;
    }
    for (int32_t i = 0; i < w->num_seqs; i++)
      if (w->kv_lens[i] - w->q_lens[i] < w->shared) {
        fail(msg, sizeof msg,
             "shared=%d: sequence %d has only %d cached tokens",
             (int)w->shared, (int)i, (int)(w->kv_lens[i] - w->q_lens[i]));
        goto bad;
      }
  }
  if (w->tree && !w->causal) {
    fail(msg, sizeof msg, "a tree mask needs causal=1");
    goto bad;
  }
  return 0;
bad:
  snprintf(err, err_len, "workload '%s': %s", w->name, msg);
  bench_workload_free(w);
  return -1;
}

void bench_workload_free(bench_workload *w) {
  free(w->q_lens);
  free(w->kv_lens);
  w->q_lens = w->kv_lens = NULL;
  w->num_seqs = 0;
}

int bench_workloads_read_file(const char *path, bench_workload **list,
                              int *count, char *err, size_t err_len) {
  FILE *f = fopen(path, "r");
  if (!f) return fail(err, err_len, "%s: %s", path, strerror(errno));
  char line[4096];
  int lineno = 0, rc = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    const char *s = line;
    while (isspace((unsigned char)*s)) s++;
    if (*s == '\0') continue;
    bench_workload w;
    char msg[300];
    if (bench_workload_parse(NULL, s, &w, msg, sizeof msg) != 0) {
      rc = fail(err, err_len, "%s:%d: %s", path, lineno, msg);
      break;
    }
    bench_workload *grown = realloc(*list, sizeof **list * (size_t)(*count + 1));
    if (!grown) {
      bench_workload_free(&w);
      rc = fail(err, err_len, "%s: out of memory", path);
      break;
    }
    *list = grown;
    (*list)[(*count)++] = w;
  }
  fclose(f);
  return rc;
}
