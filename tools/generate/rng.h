/* splitmix64: the one pseudo-random generator of rpa-generate (the page
   shuffle of --shuffle-pages, each request's sampling stream). Small,
   seedable with any value, and the same on every platform. */
#ifndef GEN_RNG_H
#define GEN_RNG_H

#include <stdint.h>

static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

#endif
