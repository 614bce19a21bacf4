/* A request's prompt text to token ids: the chat template, and special
   tokens written in the text.

   With the template (the default), the text is one user turn after a
   system message, then the assistant's generation prompt, as the model's
   own template writes a conversation of one user message:
     <|im_start|>system\nSYSTEM<|im_end|>\n<|im_start|>user\nTEXT<|im_end|>\n
     <|im_start|>assistant\n
   SYSTEM is the model's default ("You are a helpful AI assistant named
   SmolLM, trained by Hugging Face") or --system's. The template's special
   tokens go in by id; the text between two of them is tokenized as one
   string. Raw (--raw): the text alone.

   With special (--special), the text (and SYSTEM) may hold special tokens:
   each control token of the vocabulary written literally (<|im_start|>,
   <|im_end|>, <|endoftext|>, ...) is its id, the longest where several
   match; <|id:N|> is token N, any id of the vocabulary. This is how a
   user writes a whole conversation (several turns, or a system message of
   their own) with --raw, or gives ids directly. Without it they are plain
   text, as a chat user's message must be. */
#ifndef GEN_PROMPT_H
#define GEN_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef struct prompt_format {
  int raw;            /* no chat template */
  int special;        /* special tokens and <|id:N|> in the text */
  const char *system; /* the template's system message; NULL: the default */
} prompt_format;

/* Appends the ids of text to *ids (growing it). 0, or -1 with a message in
   err (a malformed or out-of-range <|id:N|>, a vocabulary without the
   template's tokens, bytes the vocabulary cannot express, out of memory). */
int prompt_encode(const tokenizer *tk, const prompt_format *pf,
                  const char *text, int32_t **ids, int64_t *n, int64_t *cap,
                  char *err, size_t errlen);

#endif
