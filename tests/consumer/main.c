/* A user of the installed library: one real attention call small enough to
   work out by hand, checked, and the version and ABI entry points. Prints
   what it found; exits 1 on any mismatch.

   The batch: one sequence, a prefill of T = 4 new tokens into an empty
   cache (kv_len 4), 2 query heads sharing 1 KV head, head_dim 8, pages of 2
   slots at pages {2, 0} of 3, f32 throughout. Every key is the same vector,
   so every score in a row is equal and the softmax weights are uniform over
   the keys a token sees: with the causal mask token t sees keys 0..t, and
   its output is the mean of v_0..v_t. With v_j[d] = j + d / 8 that mean is
   t / 2 + d / 8, whatever q is. No libm here: what the library needs must
   come with it (pkg-config's Libs.private, the CMake targets). */
#include <stdio.h>
#include <string.h>

#include <rpa.h>

enum { T = 4, HQ = 2, HKV = 1, D = 8, PAGE = 2, PAGES = 3 };

static int failures;

static void expect(int ok, const char *what) {
  if (!ok) {
    printf("consumer: MISMATCH: %s\n", what);
    failures++;
  }
}

int main(void) {
  printf("consumer: rpa_version() %s, rpa_version_number() %d, header %d\n",
         rpa_version(), rpa_version_number(), RPA_VERSION_NUMBER);
  expect(rpa_version_number() == RPA_VERSION_NUMBER,
         "library and header versions");
  expect(rpa_abi_struct_size("rpa_args") == sizeof(rpa_args),
         "sizeof(rpa_args) in the library and here");
  expect(rpa_abi_struct_size("no_such_struct") == 0, "unknown struct name");

  rpa_context *ctx = NULL;
  rpa_status st = rpa_context_create(NULL, &ctx);
  if (st != RPA_OK) {
    printf("consumer: rpa_context_create: %s\n", rpa_status_string(st));
    return 1;
  }

  static float q[T][HQ][D], k[T][HKV][D], v[T][HKV][D], out[T][HQ][D];
  static float k_cache[PAGES][PAGE][HKV][D], v_cache[PAGES][PAGE][HKV][D];
  for (int t = 0; t < T; t++)
    for (int d = 0; d < D; d++) {
      for (int h = 0; h < HQ; h++)
        q[t][h][d] = (float)(t + 1) * 0.25f - (float)(h * d) * 0.1f;
      k[t][0][d] = 0.5f - (float)d * 0.125f;
      v[t][0][d] = (float)t + (float)d / 8.0f;
    }
  memset(out, 0, sizeof out);
  const int32_t cu_q_lens[2] = {0, T}, kv_lens[1] = {T}, pages[2] = {2, 0};

  rpa_args a = rpa_args_default();
  a.num_tokens = T;
  a.num_q_heads = HQ;
  a.num_kv_heads = HKV;
  a.head_dim = D;
  a.q = (rpa_tensor){q, RPA_F32, HQ * D, D};
  a.k = (rpa_tensor){k, RPA_F32, HKV * D, D};
  a.v = (rpa_tensor){v, RPA_F32, HKV * D, D};
  a.out = (rpa_tensor){out, RPA_F32, HQ * D, D};
  a.cache = (rpa_kv_cache){k_cache, v_cache, RPA_F32, PAGES, PAGE,
                           PAGE * HKV * D, HKV * D, D,
                           PAGE * HKV * D, HKV * D, D};
  a.num_seqs = 1;
  a.cu_q_lens = cu_q_lens;
  a.kv_lens = kv_lens;
  a.page_indices = pages;
  a.pages_per_seq = 2;
  a.sm_scale = 0.35355339f; /* 1 / sqrt(D) */
  st = rpa_attention(ctx, &a);
  if (st != RPA_OK) {
    printf("consumer: rpa_attention: %s: %s\n", rpa_status_string(st),
           rpa_context_last_error(ctx));
    rpa_context_destroy(ctx);
    return 1;
  }

  double worst = 0.0;
  for (int t = 0; t < T; t++)
    for (int h = 0; h < HQ; h++)
      for (int d = 0; d < D; d++) {
        const double want = t / 2.0 + d / 8.0;
        const double diff = out[t][h][d] - want;
        const double err = diff < 0 ? -diff : diff;
        if (err > worst) worst = err;
      }
  expect(worst <= 1e-5, "out against t/2 + d/8");
  /* the fused update put token t at page pages[t / PAGE], slot t % PAGE */
  int cache_ok = 1;
  for (int t = 0; t < T; t++)
    cache_ok &= memcmp(k_cache[pages[t / PAGE]][t % PAGE][0], k[t][0],
                       sizeof k[t][0]) == 0 &&
                memcmp(v_cache[pages[t / PAGE]][t % PAGE][0], v[t][0],
                       sizeof v[t][0]) == 0;
  expect(cache_ok, "new K/V in their pages");
  printf("consumer: kernel set %s, %d threads: out[3][1] = %.4f %.4f ... %.4f "
         "(want 1.5000 1.6250 ... 2.3750), max error %.2g\n",
         rpa_context_isa(ctx), rpa_context_num_threads(ctx), out[3][1][0],
         out[3][1][1], out[3][1][D - 1], worst);
  rpa_context_destroy(ctx);
  printf("consumer: %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
