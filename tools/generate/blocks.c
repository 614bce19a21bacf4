/* The block manager: see blocks.h. */
#include "blocks.h"

#include <stdlib.h>

#include "rng.h"

int bm_init(block_manager *bm, int32_t num_pages, int32_t page_size,
            int shuffle, uint64_t seed) {
  bm->num_pages = num_pages;
  bm->page_size = page_size;
  bm->n_free = num_pages;
  bm->reserved = 0;
  bm->peak_used = 0;
  bm->free_list = malloc(sizeof(int32_t) * (size_t)num_pages);
  if (!bm->free_list) return -1;
  /* The stack pops from the end: page 0 first unless shuffled. */
  for (int32_t i = 0; i < num_pages; i++) bm->free_list[i] = num_pages - 1 - i;
  if (shuffle) {
    uint64_t s = seed ^ 0x5eedULL;
    for (int32_t i = num_pages - 1; i > 0; i--) {
      int32_t j = (int32_t)(splitmix64(&s) % (uint64_t)(i + 1));
      int32_t t = bm->free_list[i];
      bm->free_list[i] = bm->free_list[j];
      bm->free_list[j] = t;
    }
  }
  return 0;
}

void bm_free(block_manager *bm) {
  free(bm->free_list);
  bm->free_list = NULL;
}

int32_t bm_pages_for(const block_manager *bm, int64_t tokens) {
  return (int32_t)((tokens + bm->page_size - 1) / bm->page_size);
}

int bm_try_reserve(block_manager *bm, int32_t n) {
  if (bm->reserved + n > bm->num_pages) return 0;
  bm->reserved += n;
  return 1;
}

int bm_grow(block_manager *bm, page_list *pl, int64_t tokens) {
  const int32_t need = bm_pages_for(bm, tokens);
  if (need > pl->cap || need - pl->n_pages > bm->n_free) return -1;
  while (pl->n_pages < need) pl->pages[pl->n_pages++] = bm->free_list[--bm->n_free];
  const int32_t used = bm->num_pages - bm->n_free;
  if (used > bm->peak_used) bm->peak_used = used;
  return 0;
}

void bm_release(block_manager *bm, page_list *pl, int32_t reserved) {
  /* Back in reverse, so a request's pages are reused in its order. */
  while (pl->n_pages > 0) bm->free_list[bm->n_free++] = pl->pages[--pl->n_pages];
  bm->reserved -= reserved;
}
