/* What rpa-generate writes: see report.h. */
#include "report.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- JSON values ------------------------------------------------------------ */

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

/* ---- the run's results -------------------------------------------------------- */

run_figures report_figures(const sched_stats *st, const forward_ctx *fc,
                           const block_manager *bm, double load_s,
                           int threads, const char *isa) {
  run_figures fg;
  fg.st = st;
  fg.load_s = load_s;
  fg.prefill_tps = st->prefill_step_s > 0 ? st->prefill_tokens / st->prefill_step_s : 0;
  fg.decode_tps = st->decode_only_s > 0 ? st->decode_only_tokens / st->decode_only_s : 0;
  fg.generated_tps = st->run_s > 0 ? st->generated_tokens / st->run_s : 0;
  fg.attn_share = fc->total_seconds > 0 ? fc->attn_seconds / fc->total_seconds : 0;
  fg.step_ms = st->steps ? 1e3 * fc->total_seconds / st->steps : 0.0;
  fg.peak_pages = bm->peak_used;
  fg.num_pages = bm->num_pages;
  fg.page_size = bm->page_size;
  fg.threads = threads;
  fg.isa = isa;
  return fg;
}

void report_print(FILE *f, const request *reqs, int n, int quiet,
                  const run_figures *fg) {
  const sched_stats *st = fg->st;
  if (!quiet) {
    for (int i = 0; i < n; i++) {
      fprintf(f, "--- request %d (%lld prompt tokens, %lld generated, %s)\n", i,
              (long long)reqs[i].n_prompt,
              (long long)(reqs[i].n_ids - reqs[i].n_prompt), reqs[i].finish);
      fprintf(f, "%s\n", reqs[i].completion ? reqs[i].completion : "");
    }
  }
  fprintf(f, "rpa-generate: %d requests, %ld steps (%ld mixed decode+prefill), "
          "%.2f s (model load %.2f s), %d threads, rpa kernel set %s\n", n,
          st->steps, st->mixed_steps, st->run_s, fg->load_s, fg->threads, fg->isa);
  fprintf(f, "  prefill: %ld tokens, %.1f tokens/s over the steps holding "
          "prefill\n", st->prefill_tokens, fg->prefill_tps);
  fprintf(f, "  decode: %ld tokens, %.1f tokens/s over the decode-only steps\n",
          st->decode_tokens, fg->decode_tps);
  fprintf(f, "  step time: %.1f ms mean, attention (rpa_attention) %.1f%%, the "
          "rest %.1f%%\n", fg->step_ms, 100 * fg->attn_share,
          100 * (1 - fg->attn_share));
  fprintf(f, "  pages: peak %d of %d (page size %d)\n", fg->peak_pages,
          fg->num_pages, fg->page_size);
  fprintf(f, "total: %ld tokens generated in %.2f s, %.1f tokens/s (%d "
          "request%s, the model load not counted)\n", st->generated_tokens,
          st->run_s, fg->generated_tps, n, n == 1 ? "" : "s");
}

void report_json(FILE *f, const request *reqs, int n, const run_figures *fg) {
  const sched_stats *st = fg->st;
  fprintf(f, "{\"requests\": [\n");
  for (int i = 0; i < n; i++) {
    const request *r = &reqs[i];
    fprintf(f, "  {\"prompt\": ");
    json_str(f, r->text, strlen(r->text));
    fprintf(f, ", \"arrival_step\": %d, \"prompt_ids\": ", r->arrival);
    json_ids(f, r->ids, r->n_prompt);
    fprintf(f, ", \"completion\": ");
    json_str(f, r->completion ? r->completion : "", r->completion_len);
    fprintf(f, ", \"token_ids\": ");
    json_ids(f, r->ids + r->n_prompt, r->n_ids - r->n_prompt);
    fprintf(f, ", \"finish\": \"%s\"}%s\n", r->finish, i + 1 < n ? "," : "");
  }
  fprintf(f, "], \"stats\": {\"steps\": %ld, \"mixed_steps\": %ld, "
          "\"prefill_tokens\": %ld, \"decode_tokens\": %ld, "
          "\"generated_tokens\": %ld, "
          "\"prefill_tokens_per_s\": %.3f, \"decode_tokens_per_s\": %.3f, "
          "\"generated_tokens_per_s\": %.3f, "
          "\"attention_share\": %.5f, \"step_ms_mean\": %.3f, "
          "\"run_s\": %.3f, \"load_s\": %.3f, \"peak_pages\": %d, "
          "\"num_pages\": %d, \"page_size\": %d, \"threads\": %d, "
          "\"isa\": \"%s\"}}\n",
          st->steps, st->mixed_steps, st->prefill_tokens, st->decode_tokens,
          st->generated_tokens, fg->prefill_tps, fg->decode_tps,
          fg->generated_tps, fg->attn_share, fg->step_ms, st->run_s,
          fg->load_s, fg->peak_pages, fg->num_pages, fg->page_size,
          fg->threads, fg->isa);
}

void report_prompt_ids(FILE *f, const request *reqs, int n) {
  fprintf(f, "{\"requests\": [\n");
  for (int i = 0; i < n; i++) {
    fprintf(f, "  {\"prompt\": ");
    json_str(f, reqs[i].text, strlen(reqs[i].text));
    fprintf(f, ", \"prompt_ids\": ");
    json_ids(f, reqs[i].ids, reqs[i].n_prompt);
    fprintf(f, "}%s\n", i + 1 < n ? "," : "");
  }
  fprintf(f, "]}\n");
}

/* ---- --inspect ---------------------------------------------------------------- */

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

void report_inspect(FILE *f, const gguf_file *gf) {
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
