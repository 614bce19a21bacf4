/* rpa-demo: runs one built-in mixed serving batch (decodes beside a prefill
   chunk, Llama-3-8B head shape) through the library and reports what it did,
   how long it took, and whether it matches the dense oracle.
   --list-isas prints the kernel sets this machine can run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--list-isas") == 0) {
    for (int i = 0; rpa_isa_name(i); i++)
      if (rpa_isa_available(rpa_isa_name(i))) printf("%s\n", rpa_isa_name(i));
    return 0;
  }
  enum { S = 17 };
  int32_t q_lens[S], kv_lens[S];
  for (int i = 0; i < S - 1; i++) {
    q_lens[i] = 1;
    kv_lens[i] = 512 + 97 * i;
  }
  q_lens[S - 1] = 128;
  kv_lens[S - 1] = 384; /* a chunk of 128 after a cached prefix of 256 */
  tb_config c = tb_config_default();
  c.seed = 1;
  c.num_seqs = S;
  c.q_lens = q_lens;
  c.kv_lens = kv_lens;
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.page_size = 16;
  c.shuffle_pages = 1;
  c.extra_pages = 64;
  c.q_dtype = c.out_dtype = c.kv_dtype = RPA_BF16;
  tb_batch b;
  if (tb_make(&b, &c) != 0) {
    fprintf(stderr, "rpa-demo: out of memory\n");
    return 1;
  }
  rpa_context *ctx;
  rpa_status st = rpa_context_create(NULL, &ctx);
  if (st != RPA_OK) {
    fprintf(stderr, "rpa-demo: %s\n", rpa_status_string(st));
    return 1;
  }
  printf("rpa-demo: mixed batch of %d decodes (KV 512..%d) + 1 prefill chunk "
         "of 128 tokens after 256 cached\n",
         S - 1, (int)kv_lens[S - 2]);
  printf("  Hq 32, Hkv 8, D 128, bf16 q/KV/out, page size 16, %d pages "
         "shuffled, kernel set %s\n",
         (int)b.num_pages, rpa_context_isa(ctx));
  const double t0 = now_s();
  st = rpa_attention(ctx, &b.args);
  const double t1 = now_s();
  if (st != RPA_OK) {
    fprintf(stderr, "rpa-demo: %s: %s\n", rpa_status_string(st),
            rpa_context_last_error(ctx));
    return 1;
  }
  const int64_t rows = (int64_t)b.total_tokens * c.num_q_heads;
  double *out = malloc(sizeof(double) * (size_t)(rows * c.head_dim));
  double *lse = malloc(sizeof(double) * (size_t)rows);
  char msg[256];
  tb_oracle(&b, out, lse);
  const int ok = tb_check_output(&b, out, lse, tb_tolerance(&c),
                                 msg, sizeof msg) == 0 &&
                 tb_check_cache(&b, msg, sizeof msg) == 0;
  printf("  one call: %.2f ms; output and cache %s\n", 1e3 * (t1 - t0),
         ok ? "match the double-precision oracle" : msg);
  free(out);
  free(lse);
  tb_free(&b);
  rpa_context_destroy(ctx);
  return ok ? 0 : 1;
}
