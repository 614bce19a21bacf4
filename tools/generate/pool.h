/* A small persistent pthread pool: run(fn, arg) calls fn(arg, i, n) on
   every worker i of n (the caller is worker 0) and returns when all are
   done. Work splits are decided by the callee from (i, n) alone. */
#ifndef GEN_POOL_H
#define GEN_POOL_H

#include <pthread.h>

typedef void (*pool_fn)(void *arg, int worker, int num_workers);

typedef struct pool {
  int n;
  pthread_t *threads;
  pthread_mutex_t mu;
  pthread_cond_t start_cv, done_cv;
  pool_fn fn;
  void *arg;
  unsigned long generation;
  int pending;
  int quit;
} pool;

int pool_init(pool *p, int num_threads); /* 0 or -1 */
void pool_run(pool *p, pool_fn fn, void *arg);
void pool_free(pool *p);

#endif
