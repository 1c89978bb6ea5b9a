/* kernels/cpu/pool.c — the persistent worker pool behind pool.h.
 *
 * One job at a time: pool_run publishes (fn, arg), bumps the generation counter `gen` and runs
 * thread 0's share itself; workers notice the new generation, run their share and count
 * themselves into `done`; the caller returns when `done` reaches nth - 1.
 *
 * Invariants:
 *  1. `gen` only grows; a worker runs job g exactly once, after it has seen gen == g.
 *  2. fn/arg are written before `gen` is bumped (release) and read after it is seen (acquire).
 *  3. A worker waits in two stages: it spins on `gen` for up to POOL_SPIN_NS (a decode step
 *     issues jobs microseconds apart, and a futex wake costs more than the job), then sleeps in
 *     futex_wait(gen). It counts itself in `n_sleeping` before sleeping; pool_run only makes the
 *     wake syscall when that count is non-zero. Both sides use sequentially consistent
 *     read-modify-writes before reading the other's variable, so either the sleeper sees the new
 *     gen in futex_wait or the caller sees the sleeper (no lost wake-up).
 *  4. pool_free sets `stop` and bumps gen; workers exit instead of running a job.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POOL_PAUSE() _mm_pause()
#else
#define POOL_PAUSE() ((void)0)
#endif

#define POOL_SPIN_NS 200000     /* how long an idle worker polls before sleeping */
#define POOL_PAUSE_NS 30000     /* ... of which it pause-spins; then it polls with sched_yield
                                   so that on an oversubscribed machine it gives up its CPU */
#define POOL_YIELD_SPINS 1000   /* caller: pause-spins (~30 ns each) before it yields */

typedef struct {
    struct pool *p;
    int ith;
} pool__worker;

struct pool {
    int n;                     /* threads including the caller */
    pthread_t *threads;        /* (n - 1) */
    pool__worker *workers;     /* (n - 1) */
    /* written by the caller, read by workers; separate cache lines from the counters */
    pool_fn fn;
    void *arg;
    _Alignas(64) atomic_uint gen;   /* job generation; also the futex word */
    _Alignas(64) atomic_int done;   /* workers finished with the current job */
    _Alignas(64) atomic_int n_sleeping;
    atomic_int stop;
};

static uint64_t pool__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pool__futex_wait(atomic_uint *addr, unsigned expected) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void pool__futex_wake_all(atomic_uint *addr) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Wait until gen != seen; returns the new generation. */
static unsigned pool__wait_gen(struct pool *p, unsigned seen) {
    unsigned g;
    uint64_t t0 = pool__now_ns();
    int yield = 0;
    for (unsigned i = 1;; i++) {
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
        if (yield) sched_yield();
        else POOL_PAUSE();
        if (yield || (i & 63) == 0) {
            uint64_t t = pool__now_ns() - t0;
            if (t > POOL_SPIN_NS) break;
            yield = t > POOL_PAUSE_NS;
        }
    }
    for (;;) {
        atomic_fetch_add(&p->n_sleeping, 1);
        pool__futex_wait(&p->gen, seen);
        atomic_fetch_sub(&p->n_sleeping, 1);
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
    }
}

static void *pool__main(void *varg) {
    pool__worker *w = varg;
    struct pool *p = w->p;
    unsigned seen = 0;
    for (;;) {
        seen = pool__wait_gen(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        p->fn(p->arg, w->ith, p->n);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
    return NULL;
}

int pool_default_threads(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

pool *pool_new(int n_threads) {
    if (n_threads <= 0) n_threads = pool_default_threads();
    struct pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->stop, 0);
    if (n_threads == 1) return p;
    p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
    p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
    if (!p->threads || !p->workers) {
        free(p->threads);
        free(p->workers);
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        p->workers[i - 1] = (pool__worker){ .p = p, .ith = i };
        if (pthread_create(&p->threads[i - 1], NULL, pool__main, &p->workers[i - 1]) != 0) {
            p->n = i;   /* the workers started so far are the pool; shut them down */
            pool_free(p);
            return NULL;
        }
    }
    return p;
}

int pool_size(const pool *p) {
    return p ? p->n : 1;
}

void pool_run(pool *p, pool_fn fn, void *arg) {
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->n_sleeping) > 0) pool__futex_wake_all(&p->gen);
    fn(arg, 0, p->n);
    int want = p->n - 1;
    for (unsigned i = 0; atomic_load_explicit(&p->done, memory_order_acquire) != want; i++) {
        if (i < POOL_YIELD_SPINS) POOL_PAUSE();
        else sched_yield();   /* a worker was descheduled: give it our CPU */
    }
}

void pool_free(pool *p) {
    if (!p) return;
    if (p->n > 1) {
        atomic_store_explicit(&p->stop, 1, memory_order_release);
        atomic_fetch_add(&p->gen, 1);
        pool__futex_wake_all(&p->gen);
        for (int i = 0; i < p->n - 1; i++) pthread_join(p->threads[i], NULL);
    }
    free(p->threads);
    free(p->workers);
    free(p);
}
