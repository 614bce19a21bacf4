/* A prompt to token ids: see prompt.h. */
#include "prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char default_system[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/* Ids go out in order; text is held until the next id (or the end), so
   the text between two special tokens is tokenized as one string, as the
   model's own tokenizer splits a string at its special tokens only. */
typedef struct encoder {
  const tokenizer *tk;
  int32_t **ids;
  int64_t *n, *cap;
  char *text; /* pending text, not 0-terminated */
  size_t len, text_cap;
  char *err;
  size_t errlen;
} encoder;

static int oom(encoder *e) {
  snprintf(e->err, e->errlen, "out of memory");
  return -1;
}

static int enc_text(encoder *e, const char *s, size_t len) {
  if (e->len + len > e->text_cap) {
    size_t nc = (e->len + len) * 2 + 64;
    char *p = realloc(e->text, nc);
    if (!p) return oom(e);
    e->text = p;
    e->text_cap = nc;
  }
  memcpy(e->text + e->len, s, len);
  e->len += len;
  return 0;
}

static int enc_flush(encoder *e) {
  if (e->len == 0) return 0;
  if (tokenizer_encode(e->tk, e->text, e->len, e->ids, e->n, e->cap, e->err,
                       e->errlen) < 0)
    return -1;
  e->len = 0;
  return 0;
}

static int enc_id(encoder *e, int32_t id) {
  if (enc_flush(e) != 0) return -1;
  return tokenizer_push_id(e->ids, e->n, e->cap, id) != 0 ? oom(e) : 0;
}

/* "<|id:N|>" at s[0..len) (which starts with "<|id:"): N in *id and the
   length written in *mlen; -1 with a message if malformed or out of
   range. */
static int parse_explicit_id(encoder *e, const char *s, size_t len,
                             int32_t *id, size_t *mlen) {
  size_t i = 5, digits = 0;
  long long v = 0;
  while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 10) {
    v = v * 10 + (s[i] - '0');
    i++;
    digits++;
  }
  if (digits == 0 || digits == 10 || i + 1 >= len || s[i] != '|' ||
      s[i + 1] != '>') {
    snprintf(e->err, e->errlen, "'%.*s': a token id is written <|id:N|>, "
             "N a decimal id (with --special)", (int)(len < 24 ? len : 24), s);
    return -1;
  }
  if (v >= e->tk->n_vocab) {
    snprintf(e->err, e->errlen, "<|id:%lld|>: the vocabulary has ids 0 to "
             "%d", v, e->tk->n_vocab - 1);
    return -1;
  }
  *id = (int32_t)v;
  *mlen = i + 2;
  return 0;
}

/* The longest control token written at s[0..len): its id and length, or
   -1 if none starts there. */
static int32_t match_control(const tokenizer *tk, const char *s, size_t len,
                             size_t *mlen) {
  int32_t best = -1;
  *mlen = 0;
  for (int32_t k = 0; k < tk->n_control; k++) {
    const gguf_str t = tk->tokens[tk->control_ids[k]];
    if (t.len > *mlen && t.len <= len && memcmp(s, t.ptr, t.len) == 0) {
      best = tk->control_ids[k];
      *mlen = t.len;
    }
  }
  return best;
}

/* Text given by the user: with special, its special tokens and <|id:N|>
   become ids, the rest stays text. */
static int enc_user_text(encoder *e, const char *s, int special) {
  const size_t len = strlen(s);
  if (!special) return enc_text(e, s, len);
  size_t start = 0, i = 0;
  while (i < len) {
    int32_t id;
    size_t m;
    if (len - i >= 5 && memcmp(s + i, "<|id:", 5) == 0) {
      if (parse_explicit_id(e, s + i, len - i, &id, &m) != 0) return -1;
    } else if ((id = match_control(e->tk, s + i, len - i, &m)) < 0) {
      i++;
      continue;
    }
    if (enc_text(e, s + start, i - start) != 0 || enc_id(e, id) != 0)
      return -1;
    i += m;
    start = i;
  }
  return enc_text(e, s + start, len - start);
}

/* One turn of the template: <|im_start|>ROLE\nTEXT<|im_end|>\n. */
static int enc_turn(encoder *e, const char *role, const char *text,
                    int special) {
  if (enc_id(e, e->tk->im_start_id) != 0 || enc_text(e, role, strlen(role)) != 0 ||
      enc_text(e, "\n", 1) != 0 || enc_user_text(e, text, special) != 0 ||
      enc_id(e, e->tk->im_end_id) != 0)
    return -1;
  return enc_text(e, "\n", 1);
}

int prompt_encode(const tokenizer *tk, const prompt_format *pf,
                  const char *text, int32_t **ids, int64_t *n, int64_t *cap,
                  char *err, size_t errlen) {
  encoder e = {tk, ids, n, cap, NULL, 0, 0, err, errlen};
  int rc;
  if (pf->raw) {
    rc = enc_user_text(&e, text, pf->special);
  } else if (tk->im_start_id < 0 || tk->im_end_id < 0) {
    snprintf(err, errlen, "the vocabulary has no <|im_start|>/<|im_end|>: "
             "use --raw");
    rc = -1;
  } else {
    const char *sys = pf->system ? pf->system : default_system;
    rc = enc_turn(&e, "system", sys, pf->special) != 0 ||
         enc_turn(&e, "user", text, pf->special) != 0 ||
         enc_id(&e, tk->im_start_id) != 0 ||
         enc_text(&e, "assistant\n", 10) != 0 ? -1 : 0;
  }
  if (rc == 0) rc = enc_flush(&e);
  free(e.text);
  return rc;
}
