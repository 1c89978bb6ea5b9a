/* kernels/pool.h — a persistent pool of worker threads for the CPU kernels.
 *
 * Life cycle: pool_new -> pool_run (any number of times, from one thread at a time) -> pool_free.
 * Workers spin briefly then sleep on a futex-like condition between jobs, so a decode step
 * (hundreds of small jobs per token) does not pay a thread wake-up per matmul.
 * The default thread count is the number of CPUs in this process's affinity mask
 * (sched_getaffinity), so a rank bound to 2 cores by mpirun/srun uses 2 threads.
 */
#ifndef SAMPAN_POOL_H
#define SAMPAN_POOL_H

typedef struct pool pool;

/* fn(arg, ith, nth) is called once per thread, ith in [0, nth). */
typedef void (*pool_fn)(void *arg, int ith, int nth);

int pool_default_threads(void);
/* n_threads <= 0 means pool_default_threads(). Returns NULL on failure. */
pool *pool_new(int n_threads);
int pool_size(const pool *p);
/* Runs fn on all threads (the caller is thread 0) and returns when all are done. */
void pool_run(pool *p, pool_fn fn, void *arg);
void pool_free(pool *p);

#endif
