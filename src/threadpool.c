#define _GNU_SOURCE /* pthread_setaffinity_np, CPU_SET */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* Spin this many rounds before sleeping: about 50-100 us, enough to keep
   workers hot between the layers of one serving step. */
enum { SPIN_ROUNDS = 20000 };

typedef struct worker {
  rpa_pool *pool;
  int index;
  pthread_t thread;
} worker;

struct rpa_pool {
  int threads;
  worker *workers;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  _Atomic unsigned generation; /* bumped per job */
  _Atomic int next;            /* next task index */
  _Atomic int running;         /* workers still in the current job */
  _Atomic int stop;
  /* the current job */
  rpa_task_fn task;
  void *arg;
  int n, use;
};

static void work(rpa_pool *p, int thread) {
  for (;;) {
    int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
    if (i >= p->n) break;
    p->task(p->arg, i, thread);
  }
}

static void *worker_main(void *arg) {
  worker *w = arg;
  rpa_pool *p = w->pool;
  unsigned seen = 0;
  for (;;) {
    unsigned g;
    int spins = 0;
    while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
           !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
      if (++spins < SPIN_ROUNDS) {
        CPU_RELAX();
        continue;
      }
      pthread_mutex_lock(&p->mutex);
      while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->wake, &p->mutex);
      pthread_mutex_unlock(&p->mutex);
    }
    if (atomic_load(&p->stop)) return NULL;
    seen = g;
    if (w->index < p->use) work(p, w->index);
    atomic_fetch_sub_explicit(&p->running, 1, memory_order_release);
  }
}

rpa_pool *rpa_pool_create(int threads, int pin) {
  rpa_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->threads = threads < 1 ? 1 : threads;
  pthread_mutex_init(&p->mutex, NULL);
  pthread_cond_init(&p->wake, NULL);
  if (p->threads > 1) {
    p->workers = calloc((size_t)p->threads, sizeof(worker));
    if (!p->workers) {
      rpa_pool_destroy(p);
      return NULL;
    }
    for (int i = 1; i < p->threads; i++) {
      p->workers[i].pool = p;
      p->workers[i].index = i;
      if (pthread_create(&p->workers[i].thread, NULL, worker_main,
                         &p->workers[i]) != 0) {
        p->threads = i; /* destroy joins the ones that started */
        rpa_pool_destroy(p);
        return NULL;
      }
#if defined(__linux__)
      if (pin) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(i % CPU_SETSIZE, &set);
        (void)pthread_setaffinity_np(p->workers[i].thread, sizeof set, &set);
      }
#else
      (void)pin;
#endif
    }
  }
  return p;
}

void rpa_pool_destroy(rpa_pool *p) {
  if (!p) return;
  if (p->workers) {
    pthread_mutex_lock(&p->mutex);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    for (int i = 1; i < p->threads; i++) pthread_join(p->workers[i].thread, NULL);
    free(p->workers);
  }
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->mutex);
  free(p);
}

void rpa_pool_run(rpa_pool *p, int use, int n, rpa_task_fn task, void *arg) {
  if (use > p->threads) use = p->threads;
  if (use > n) use = n;
  if (use <= 1) {
    for (int i = 0; i < n; i++) task(arg, i, 0);
    return;
  }
  p->task = task;
  p->arg = arg;
  p->n = n;
  p->use = use;
  atomic_store_explicit(&p->next, 0, memory_order_relaxed);
  atomic_store_explicit(&p->running, p->threads - 1, memory_order_relaxed);
  pthread_mutex_lock(&p->mutex);
  atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mutex);
  work(p, 0);
  while (atomic_load_explicit(&p->running, memory_order_acquire) > 0) CPU_RELAX();
}
