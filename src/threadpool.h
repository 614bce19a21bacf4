/* A persistent thread pool: workers are created once per context, spin
   briefly then sleep between calls, and run tasks handed out by an atomic
   counter. The calling thread works too. No allocation per call. */
#ifndef RPA_THREADPOOL_H
#define RPA_THREADPOOL_H

typedef struct rpa_pool rpa_pool;

/* task(arg, index, thread) for index in [0, n); thread in [0, threads). */
typedef void (*rpa_task_fn)(void *arg, int index, int thread);

/* threads includes the caller. pin: pin worker i to CPU i (i >= 1). Returns
   NULL on failure. */
rpa_pool *rpa_pool_create(int threads, int pin);
void rpa_pool_destroy(rpa_pool *pool);
/* Runs task over [0, n) on up to `use` threads (<= pool size); returns when
   all are done. */
void rpa_pool_run(rpa_pool *pool, int use, int n, rpa_task_fn task, void *arg);

#endif
