/* One case of a call that must fail (include after harness.h and
   batch.h): the status wanted, a message that holds `needle`, and out and
   the cache exactly as they were. */
#ifndef RPA_TEST_EXPECT_ERROR_H
#define RPA_TEST_EXPECT_ERROR_H

#include <string.h>

static inline void expect_error(rpa_context *ctx, const char *name,
                                tb_batch *b, const rpa_args *a,
                                rpa_status want, const char *needle) {
  th_begin(name);
  tb_reset(b);
  const rpa_status st = rpa_attention(ctx, a);
  const char *msg = rpa_context_last_error(ctx);
  CHECK(st == want, "status %s, expected %s (%s)", rpa_status_string(st),
        rpa_status_string(want), msg);
  CHECK(strstr(msg, needle) != NULL, "message \"%s\" lacks \"%s\"", msg,
        needle);
  CHECK(memcmp(tb_data(&b->out), tb_data(&b->out_before), b->out.bytes) == 0,
        "out written");
  CHECK(memcmp(tb_data(&b->cache), tb_data(&b->cache_before),
               b->cache.bytes) == 0,
        "cache written");
  th_end();
}

#endif
