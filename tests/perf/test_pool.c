/* tests/perf/test_pool.c — the worker pool: every thread runs every job exactly once, jobs see
 * the writes of earlier jobs, workers that went to sleep wake up, and the cost of one pool_run
 * (printed, not asserted: the machine is shared).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

#define MAXT 8

static int n_pass, n_fail;

static void check(int ok, const char *what) {
    if (ok) n_pass++;
    else {
        n_fail++;
        printf("FAIL: %s\n", what);
    }
}

typedef struct {
    int calls[MAXT];         /* per ith, written only by that thread */
    int bad_nth;
    atomic_int total;
    int r;                   /* job number, set by the caller */
    long buf[2][MAXT * 64];  /* job r reads all of buf[r%2], writes its slice of the other */
    long sum_seen[MAXT];
} job_state;

static void job(void *arg, int ith, int nth) {
    job_state *s = arg;
    s->calls[ith]++;
    if (nth < 1 || nth > MAXT) s->bad_nth = 1;
    atomic_fetch_add(&s->total, 1);
    const long *cur = s->buf[s->r & 1];
    long *nxt = s->buf[(s->r + 1) & 1];
    long sum = 0;
    for (int i = 0; i < nth * 64; i++) sum += cur[i];
    s->sum_seen[ith] = sum;
    for (int i = ith * 64; i < ith * 64 + 64; i++) nxt[i] = cur[i] + 1;
}

static void nop(void *arg, int ith, int nth) {
    (void)arg;
    (void)ith;
    (void)nth;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void) {
    char what[128];
    check(pool_default_threads() >= 1, "pool_default_threads() >= 1");
    for (int nth = 1; nth <= 4; nth++) {
        pool *p = pool_new(nth);
        snprintf(what, sizeof what, "pool_new(%d)", nth);
        check(p != NULL && pool_size(p) == nth, what);
        if (!p) continue;
        job_state *s = calloc(1, sizeof *s);
        /* fewer jobs when oversubscribed: each then costs a scheduler time slice */
        const int runs = nth <= pool_default_threads() ? 2000 : 200;
        int order_ok = 1;
        for (int r = 0; r < runs; r++) {
            s->r = r;
            pool_run(p, job, s);
            /* every slot held r when job r ran, on every thread */
            for (int i = 0; i < nth; i++)
                if (s->sum_seen[i] != (long)r * nth * 64) order_ok = 0;
            if (r == runs / 2) usleep(300000);   /* long enough for workers to go to sleep */
        }
        int calls_ok = !s->bad_nth && atomic_load(&s->total) == runs * nth;
        for (int i = 0; i < nth; i++) calls_ok &= s->calls[i] == runs;
        snprintf(what, sizeof what, "%d threads: each thread ran each of %d jobs once", nth, runs);
        check(calls_ok, what);
        snprintf(what, sizeof what, "%d threads: jobs see the previous job's writes", nth);
        check(order_ok, what);
        free(s);

        /* overhead of an empty job, back to back (decode issues ~200 per token) */
        const int n = nth <= pool_default_threads() ? 20000 : 500;
        double best = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now();
            for (int i = 0; i < n; i++) pool_run(p, nop, NULL);
            double us = (now() - t0) / n * 1e6;
            best = us < best ? us : best;
        }
        /* after an idle gap: workers asleep, one futex wake */
        double wake = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            usleep(5000);
            double t0 = now();
            pool_run(p, nop, NULL);
            double us = (now() - t0) * 1e6;
            wake = us < wake ? us : wake;
        }
        printf("pool_run, %d threads: %.2f us back to back, %.1f us after 5 ms idle\n", nth, best,
               wake);
        pool_free(p);
    }
    pool_run(NULL, nop, NULL);
    check(pool_size(NULL) == 1, "a NULL pool runs on the caller");
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
