/* The block manager: which pages of the paged KV cache are free, which a
   sequence holds, and how many are promised to admitted requests.

   A request is admitted only once its worst case (prompt + the tokens it
   may generate) can be reserved; its pages are then handed out as its
   tokens need them (bm_grow, which cannot fail for a reserved request) and
   all come back when it ends (bm_release). Free pages are a stack: page 0
   goes out first, or a shuffled order with --shuffle-pages. */
#ifndef GEN_BLOCKS_H
#define GEN_BLOCKS_H

#include <stdint.h>

typedef struct block_manager {
  int32_t num_pages, page_size;
  int32_t *free_list, n_free; /* a stack: the next page is free_list[n_free-1] */
  int32_t reserved;           /* pages promised to admitted requests */
  int32_t peak_used;          /* the most pages held at once */
} block_manager;

/* A sequence's pages: pages[0 .. n_pages) in token order, room for cap. */
typedef struct page_list {
  int32_t *pages;
  int32_t n_pages, cap;
} page_list;

/* 0, or -1 when out of memory. shuffle != 0 hands pages out in an order
   drawn from seed. */
int bm_init(block_manager *bm, int32_t num_pages, int32_t page_size,
            int shuffle, uint64_t seed);
void bm_free(block_manager *bm);

/* Pages that hold `tokens` tokens. */
int32_t bm_pages_for(const block_manager *bm, int64_t tokens);
/* Reserves n pages if they are not promised to others: 1, else 0. */
int bm_try_reserve(block_manager *bm, int32_t n);
/* Gives pl the pages its first `tokens` slots need: 0, or -1 when that is
   more than pl->cap or than the free pages (a wrong reservation: an
   internal error, never the case for an admitted request). */
int bm_grow(block_manager *bm, page_list *pl, int64_t tokens);
/* Takes back all of pl's pages and a reservation of `reserved` pages. */
void bm_release(block_manager *bm, page_list *pl, int32_t reserved);

#endif
