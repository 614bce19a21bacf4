/* Byte-level BPE tokenizer: see tokenizer.h. */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"

static uint32_t hash_bytes(const char *p, size_t n) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (uint8_t)p[i];
    h *= 16777619u;
  }
  return h;
}

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < r[mid][0]) hi = mid;
    else if (cp > r[mid][1]) lo = mid + 1;
    else return 1;
  }
  return 0;
}

static int is_letter(uint32_t cp) {
  return in_ranges(unicode_letters,
                   sizeof unicode_letters / sizeof unicode_letters[0], cp);
}
static int is_number(uint32_t cp) {
  return in_ranges(unicode_numbers,
                   sizeof unicode_numbers / sizeof unicode_numbers[0], cp);
}
/* \s of the Unicode regex engines: the White_Space property. */
static int is_space(uint32_t cp) {
  return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Decodes one UTF-8 code point at s[0..n); invalid bytes decode as
   themselves (one byte, code point 0xFFFD-like class "other"), which keeps
   every byte in some piece, as the byte-level model needs. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
  uint8_t b = s[0];
  size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3
               : (b >> 3) == 30 ? 4 : 0;
  if (len == 0 || len > n) {
    *cp = 0xFFFD;
    return 1;
  }
  uint32_t v = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu)
               : (b & 0x07u);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) {
      *cp = 0xFFFD;
      return 1;
    }
    v = (v << 6) | (s[i] & 0x3Fu);
  }
  *cp = v;
  return len;
}

static size_t utf8_put(uint32_t cp, char *out) {
  if (cp < 0x80) { out[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  out[0] = (char)(0xE0 | (cp >> 12));
  out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[2] = (char)(0x80 | (cp & 0x3F));
  return 3;
}

static int32_t vocab_lookup(const tokenizer *tk, const char *p, size_t n) {
  uint32_t mask = tk->vocab_cap - 1, h = hash_bytes(p, n) & mask;
  for (;;) {
    int32_t id = tk->vocab_slots[h];
    if (id < 0) return -1;
    if (tk->tokens[id].len == n && memcmp(tk->tokens[id].ptr, p, n) == 0)
      return id;
    h = (h + 1) & mask;
  }
}

/* The rank of merging a and b (the merge "a b"), or -1. */
static int32_t merge_rank(const tokenizer *tk, const char *a, size_t na,
                          const char *b, size_t nb) {
  char key[512];
  if (na + nb + 1 > sizeof key) return -1;
  memcpy(key, a, na);
  key[na] = ' ';
  memcpy(key + na + 1, b, nb);
  size_t n = na + nb + 1;
  uint32_t mask = tk->merge_cap - 1, h = hash_bytes(key, n) & mask;
  for (;;) {
    int32_t r = tk->merge_slots[h];
    if (r < 0) return -1;
    if (tk->merges[r].len == n && memcmp(tk->merges[r].ptr, key, n) == 0)
      return r;
    h = (h + 1) & mask;
  }
}

static uint32_t pow2_at_least(uint64_t n) {
  uint32_t c = 1;
  while (c < n) c <<= 1;
  return c;
}

int tokenizer_init(tokenizer *tk, const gguf_file *f, char *err,
                   size_t errlen) {
  memset(tk, 0, sizeof *tk);
  gguf_str model;
  if (gguf_get_str(f, "tokenizer.ggml.model", &model) != 0 ||
      !gguf_str_eq(model, "gpt2")) {
    snprintf(err, errlen, "tokenizer.ggml.model must be \"gpt2\" (byte-level "
             "BPE); this file's is missing or another kind");
    return -1;
  }
  gguf_str pre;
  if (gguf_get_str(f, "tokenizer.ggml.pre", &pre) == 0 &&
      !gguf_str_eq(pre, "smollm") && !gguf_str_eq(pre, "gpt2"))
    fprintf(stderr, "rpa-generate: warning: pre-tokenizer \"%.*s\" is "
            "treated as \"smollm\"\n", (int)pre.len, pre.ptr);
  const gguf_kv *tok = gguf_find_kv(f, "tokenizer.ggml.tokens");
  const gguf_kv *mer = gguf_find_kv(f, "tokenizer.ggml.merges");
  if (!tok || tok->type != GGUF_T_ARRAY || tok->elem_type != GGUF_T_STRING ||
      tok->count == 0 || tok->count > (1u << 24) || !mer ||
      mer->type != GGUF_T_ARRAY || mer->elem_type != GGUF_T_STRING ||
      mer->count > (1u << 24)) {
    snprintf(err, errlen, "tokenizer.ggml.tokens / tokenizer.ggml.merges "
             "are missing or not string arrays");
    return -1;
  }
  tk->n_vocab = (int32_t)tok->count;
  tk->n_merges = (int32_t)mer->count;
  tk->tokens = malloc(sizeof *tk->tokens * tok->count);
  tk->token_type = malloc(sizeof *tk->token_type * tok->count);
  tk->merges = malloc(sizeof *tk->merges * (mer->count ? mer->count : 1));
  tk->vocab_cap = pow2_at_least(tok->count * 2);
  tk->merge_cap = pow2_at_least(mer->count * 2 + 2);
  tk->vocab_slots = malloc(sizeof(int32_t) * tk->vocab_cap);
  tk->merge_slots = malloc(sizeof(int32_t) * tk->merge_cap);
  if (!tk->tokens || !tk->token_type || !tk->merges || !tk->vocab_slots ||
      !tk->merge_slots) {
    snprintf(err, errlen, "out of memory (tokenizer)");
    tokenizer_free(tk);
    return -1;
  }
  memset(tk->vocab_slots, 0xFF, sizeof(int32_t) * tk->vocab_cap);
  memset(tk->merge_slots, 0xFF, sizeof(int32_t) * tk->merge_cap);
  const gguf_kv *types = gguf_find_kv(f, "tokenizer.ggml.token_type");
  int have_types = types && types->type == GGUF_T_ARRAY &&
                   types->elem_type == GGUF_T_I32 && types->count == tok->count;
  for (int32_t i = 0; i < tk->n_vocab; i++) {
    tk->tokens[i] = gguf_array_str(tok, (uint64_t)i);
    int32_t t = 1;
    if (have_types) memcpy(&t, types->data + 4 * (size_t)i, 4);
    tk->token_type[i] = t;
    uint32_t mask = tk->vocab_cap - 1,
             h = hash_bytes(tk->tokens[i].ptr, tk->tokens[i].len) & mask;
    while (tk->vocab_slots[h] >= 0) {
      if (vocab_lookup(tk, tk->tokens[i].ptr, tk->tokens[i].len) >= 0) break;
      h = (h + 1) & mask;
    }
    if (tk->vocab_slots[h] < 0) tk->vocab_slots[h] = i; /* first one wins */
  }
  for (int32_t r = 0; r < tk->n_merges; r++) {
    tk->merges[r] = gguf_array_str(mer, (uint64_t)r);
    uint32_t mask = tk->merge_cap - 1,
             h = hash_bytes(tk->merges[r].ptr, tk->merges[r].len) & mask;
    int dup = 0;
    while (tk->merge_slots[h] >= 0) {
      gguf_str o = tk->merges[tk->merge_slots[h]];
      if (o.len == tk->merges[r].len &&
          memcmp(o.ptr, tk->merges[r].ptr, o.len) == 0) {
        dup = 1; /* the lower rank is kept */
        break;
      }
      h = (h + 1) & mask;
    }
    if (!dup) tk->merge_slots[h] = r;
  }
  /* GPT-2's byte <-> code point map: printable Latin-1 bytes are
     themselves, the others get 256, 257, ... in byte order. */
  for (int i = 0; i < 324; i++) tk->cp_to_byte[i] = -1;
  int next = 256;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) ||
               (b >= 174 && b <= 255);
    tk->byte_to_cp[b] = (uint16_t)(keep ? b : next++);
    tk->cp_to_byte[tk->byte_to_cp[b]] = (int16_t)b;
  }
  uint32_t v;
  tk->bos_id = gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &v) == 0 ? (int32_t)v : -1;
  tk->eos_id = gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &v) == 0 ? (int32_t)v : -1;
  if (tk->bos_id >= tk->n_vocab) tk->bos_id = -1;
  if (tk->eos_id >= tk->n_vocab) tk->eos_id = -1;
  tk->im_start_id = vocab_lookup(tk, "<|im_start|>", 12);
  tk->im_end_id = vocab_lookup(tk, "<|im_end|>", 10);
  /* The control tokens, for prompt.c to find written in a prompt. */
  for (int pass = 0; pass < 2; pass++) {
    tk->n_control = 0;
    for (int32_t i = 0; i < tk->n_vocab; i++) {
      if (tk->token_type[i] != 3 || tk->tokens[i].len == 0) continue;
      if (pass == 1) tk->control_ids[tk->n_control] = i;
      tk->n_control++;
    }
    if (pass == 0 &&
        !(tk->control_ids = malloc(sizeof(int32_t) * (size_t)(tk->n_control + 1)))) {
      snprintf(err, errlen, "out of memory (tokenizer)");
      tokenizer_free(tk);
      return -1;
    }
  }
  return 0;
}

void tokenizer_free(tokenizer *tk) {
  free(tk->tokens);
  free(tk->token_type);
  free(tk->merges);
  free(tk->vocab_slots);
  free(tk->merge_slots);
  free(tk->control_ids);
  memset(tk, 0, sizeof *tk);
}

int tokenizer_push_id(int32_t **ids, int64_t *n, int64_t *cap, int32_t id) {
  if (*n == *cap) {
    int64_t nc = *cap ? *cap * 2 : 64;
    int32_t *p = realloc(*ids, sizeof(int32_t) * (size_t)nc);
    if (!p) return -1;
    *ids = p;
    *cap = nc;
  }
  (*ids)[(*n)++] = id;
  return 0;
}

/* BPE over one pre-token (raw bytes): map the bytes to GPT-2 code points,
   start from one symbol per byte, and merge the adjacent pair of lowest
   rank until none is in the merge list. */
static int bpe_piece(const tokenizer *tk, const uint8_t *p, size_t n,
                     int32_t **ids, int64_t *cnt, int64_t *cap, char *err,
                     size_t errlen) {
  enum { MAXB = 1024 };
  char text[MAXB * 3];
  size_t start[MAXB + 1], len[MAXB];
  if (n > MAXB) {
    /* A longer piece (thousands of letters or of one punctuation mark
       with no space) is cut into pieces of at most MAXB bytes at UTF-8
       boundaries, which bounds the quadratic merge loop; its tokens may
       then differ, at the cuts only, from those of one BPE over the whole
       piece. Ordinary text never has pieces that long. */
    size_t cut = MAXB;
    while (cut > 1 && (p[cut] & 0xC0) == 0x80) cut--;
    if (bpe_piece(tk, p, cut, ids, cnt, cap, err, errlen) != 0) return -1;
    return bpe_piece(tk, p + cut, n - cut, ids, cnt, cap, err, errlen);
  }
  size_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    start[i] = pos;
    len[i] = utf8_put(tk->byte_to_cp[p[i]], text + pos);
    pos += len[i];
  }
  size_t nsym = n;
  for (;;) {
    int32_t best = -1;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < nsym; i++) {
      int32_t r = merge_rank(tk, text + start[i], len[i], text + start[i + 1],
                             len[i + 1]);
      if (r >= 0 && (best < 0 || r < best)) {
        best = r;
        bi = i;
      }
    }
    if (best < 0) break;
    len[bi] += len[bi + 1]; /* symbols are contiguous in text */
    for (size_t i = bi + 1; i + 1 < nsym; i++) {
      start[i] = start[i + 1];
      len[i] = len[i + 1];
    }
    nsym--;
  }
  for (size_t i = 0; i < nsym; i++) {
    int32_t id = vocab_lookup(tk, text + start[i], len[i]);
    if (id < 0) {
      snprintf(err, errlen, "the vocabulary has no token for a piece of the "
               "text (%zu bytes)", len[i]);
      return -1;
    }
    if (tokenizer_push_id(ids, cnt, cap, id) != 0) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
  }
  return 0;
}

/* Applies GPT-2's split to s[0..n) (a piece with no number characters, or
   one number character), calling bpe_piece on each match. */
static int split_gpt2(const tokenizer *tk, const uint8_t *s, size_t n,
                      int32_t **ids, int64_t *cnt, int64_t *cap, char *err,
                      size_t errlen) {
  size_t i = 0;
  while (i < n) {
    uint32_t c, c2 = 0;
    size_t l = utf8_next(s + i, n - i, &c), l2 = 0;
    if (i + l < n) l2 = utf8_next(s + i + l, n - i - l, &c2);
    size_t j = i; /* the match is s[i..j) */
    /* 's 't 're 've 'm 'll 'd */
    if (c == '\'' && i + 1 < n) {
      uint8_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') j = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
               (a == 'l' && b == 'l')) j = i + 3;
    }
    if (j == i) {
      /* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' */
      size_t k = i;
      uint32_t head = c;
      size_t headlen = l;
      if (c == ' ' && l2 > 0 && !is_space(c2)) {
        k = i + l; /* the optional space, then the run */
        head = c2;
        headlen = l2;
      }
      int cls = is_letter(head) ? 1 : is_number(head) ? 2
                : !is_space(head) ? 3 : 0;
      if (cls != 0) {
        j = k + headlen;
        while (j < n) {
          uint32_t d;
          size_t dl = utf8_next(s + j, n - j, &d);
          int dc = is_letter(d) ? 1 : is_number(d) ? 2 : !is_space(d) ? 3 : 0;
          if (dc != cls) break;
          j += dl;
        }
      }
    }
    if (j == i) {
      /* '\s+(?!\S)' then '\s+': a whitespace run; when something follows
         it, its last character is left to start the next match. */
      size_t last = i, k = i;
      while (k < n) {
        uint32_t d;
        size_t dl = utf8_next(s + k, n - k, &d);
        if (!is_space(d)) break;
        last = k;
        k += dl;
      }
      if (k == n) j = n;         /* a run at the end: all of it */
      else if (last > i) j = last; /* leave the last one to what follows */
      else j = k;                /* a single whitespace before text */
    }
    if (bpe_piece(tk, s + i, j - i, ids, cnt, cap, err, errlen) != 0) return -1;
    i = j;
  }
  return 0;
}

int64_t tokenizer_encode(const tokenizer *tk, const char *text, size_t len,
                         int32_t **ids, int64_t *n, int64_t *cap, char *err,
                         size_t errlen) {
  const uint8_t *s = (const uint8_t *)text;
  size_t i = 0, seg = 0;
  while (i < len) {
    uint32_t c;
    size_t l = utf8_next(s + i, len - i, &c);
    if (is_number(c)) {
      if (seg < i && split_gpt2(tk, s + seg, i - seg, ids, n, cap, err, errlen))
        return -1;
      if (split_gpt2(tk, s + i, l, ids, n, cap, err, errlen)) return -1;
      seg = i + l;
    }
    i += l;
  }
  if (seg < len && split_gpt2(tk, s + seg, len - seg, ids, n, cap, err, errlen))
    return -1;
  return *n;
}

size_t tokenizer_decode_token(const tokenizer *tk, int32_t id, int special,
                              char *buf, size_t bufcap) {
  if (id < 0 || id >= tk->n_vocab) return 0;
  gguf_str t = tk->tokens[id];
  if (tk->token_type[id] == 3) {
    const size_t n = special ? (t.len < bufcap ? t.len : bufcap) : 0;
    memcpy(buf, t.ptr, n);
    return n;
  }
  const uint8_t *p = (const uint8_t *)t.ptr;
  size_t i = 0, o = 0;
  while (i < t.len && o < bufcap) {
    uint32_t cp;
    size_t l = utf8_next(p + i, t.len - i, &cp);
    if (cp < 324 && tk->cp_to_byte[cp] >= 0) buf[o++] = (char)tk->cp_to_byte[cp];
    else {
      /* Not a byte-level symbol (a user-defined token): its text as is. */
      for (size_t b = 0; b < l && o < bufcap; b++) buf[o++] = (char)p[i + b];
    }
    i += l;
  }
  return o;
}
