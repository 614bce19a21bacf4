#include "pool.h"

#include <stdlib.h>

typedef struct worker_arg {
  pool *p;
  int index;
} worker_arg;

static void *worker_main(void *v) {
  worker_arg *wa = v;
  pool *p = wa->p;
  const int index = wa->index;
  free(wa);
  unsigned long seen = 0;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    while (!p->quit && p->generation == seen)
      pthread_cond_wait(&p->start_cv, &p->mu);
    if (p->quit) {
      pthread_mutex_unlock(&p->mu);
      return NULL;
    }
    seen = p->generation;
    pool_fn fn = p->fn;
    void *arg = p->arg;
    pthread_mutex_unlock(&p->mu);
    fn(arg, index, p->n);
    pthread_mutex_lock(&p->mu);
    if (--p->pending == 0) pthread_cond_signal(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
  }
}

int pool_init(pool *p, int num_threads) {
  p->n = num_threads < 1 ? 1 : num_threads;
  p->threads = calloc((size_t)p->n, sizeof *p->threads);
  if (!p->threads) return -1;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->start_cv, NULL);
  pthread_cond_init(&p->done_cv, NULL);
  p->generation = 0;
  p->pending = 0;
  p->quit = 0;
  for (int i = 1; i < p->n; i++) {
    worker_arg *wa = malloc(sizeof *wa);
    if (!wa) return -1;
    wa->p = p;
    wa->index = i;
    if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
      free(wa);
      p->n = i; /* run with the ones that started */
      break;
    }
  }
  return 0;
}

void pool_run(pool *p, pool_fn fn, void *arg) {
  if (p->n == 1) {
    fn(arg, 0, 1);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->arg = arg;
  p->pending = p->n - 1;
  p->generation++;
  pthread_cond_broadcast(&p->start_cv);
  pthread_mutex_unlock(&p->mu);
  fn(arg, 0, p->n);
  pthread_mutex_lock(&p->mu);
  while (p->pending > 0) pthread_cond_wait(&p->done_cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

void pool_free(pool *p) {
  if (!p->threads) return;
  pthread_mutex_lock(&p->mu);
  p->quit = 1;
  pthread_cond_broadcast(&p->start_cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
  free(p->threads);
  p->threads = NULL;
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->start_cv);
  pthread_cond_destroy(&p->done_cv);
}
