/* Byte-level BPE (GPT-2 style) from a GGUF file's tokenizer.ggml.tokens and
   tokenizer.ggml.merges, with the "smollm" pre-tokenizer: every number
   character (\p{N}) is a piece of its own, then GPT-2's split
     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
   runs over the pieces between them. This is what llama.cpp's "smollm"
   pre-tokenizer and the model's Hugging Face tokenizer (Digits with
   individual digits, then ByteLevel) do. Special tokens written in the
   text ("<|im_end|>") are plain text here; prompt.c recognises them where
   asked and inserts them by id. Pieces longer than 1024 bytes are cut (see
   bpe_piece). */
#ifndef GEN_TOKENIZER_H
#define GEN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct tokenizer {
  int32_t n_vocab;
  gguf_str *tokens;
  int32_t *token_type; /* 1 normal, 3 control, ... (GGUF's token_type) */
  /* Open-addressing tables: token string -> id, "left right" -> rank. */
  uint32_t vocab_cap, merge_cap;
  int32_t *vocab_slots;
  int32_t *merge_slots;
  gguf_str *merges;
  int32_t n_merges;
  int32_t bos_id, eos_id;
  int32_t im_start_id, im_end_id; /* -1 when the vocabulary lacks them */
  int32_t *control_ids; /* the control tokens (token_type 3), not empty */
  int32_t n_control;
  uint16_t byte_to_cp[256]; /* GPT-2's byte -> printable code point map */
  int16_t cp_to_byte[324];  /* and back (code points < 324), -1 if none */
} tokenizer;

int tokenizer_init(tokenizer *tk, const gguf_file *f, char *err, size_t errlen);
void tokenizer_free(tokenizer *tk);
/* Appends the ids of text[0..len) to *ids (growing it); returns the new
   count, or -1 (out of memory, or a byte sequence the vocabulary cannot
   express, with a message in err). */
int64_t tokenizer_encode(const tokenizer *tk, const char *text, size_t len,
                         int32_t **ids, int64_t *n, int64_t *cap, char *err,
                         size_t errlen);
/* Appends one id to *ids (growing it): 0, or -1 when out of memory. */
int tokenizer_push_id(int32_t **ids, int64_t *n, int64_t *cap, int32_t id);
/* The bytes of one token, written to buf: control tokens give nothing,
   or with special their text as written ("<|im_end|>"). Returns the number
   of bytes written (at most bufcap). */
size_t tokenizer_decode_token(const tokenizer *tk, int32_t id, int special,
                              char *buf, size_t bufcap);

#endif
