/* tests/sched/test_clock.c — runtime/clock.h, the clock the scheduler, the HTTP front end and
 * the comm watchdog wait on, against clock_gettime(CLOCK_MONOTONIC) read here:
 *   1. clk_now is that clock in seconds (between two readings taken around it)
 *   2. clk_deadline_ms(ms) is that clock plus ms, normalized (0 <= tv_nsec < 1e9), for ms
 *      that carry into tv_sec (999, 1000, 1001, 2500) or not (0, 1)
 *   3. a timed wait on a clk_cond_init condition variable with a clk_deadline_ms deadline
 *      times out after the deadline and not long after (a condition variable on the wall
 *      clock would return at once or after decades)
 */
#include <errno.h>
#include <stdio.h>

#include "clock.h"

static int passed, failed;
#define CHECK(c, ...) do { if (c) passed++; else { failed++; printf("FAIL %d: ", __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double ts_s(struct timespec ts) {
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void) {
    const double a = mono(), t = clk_now(), b = mono();
    CHECK(a <= t + 1e-9 && t <= b + 1e-9, "clk_now %.9f outside [%.9f, %.9f]", t, a, b);

    static const long ms[] = {0, 1, 999, 1000, 1001, 2500};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        const double lo = mono();
        const struct timespec d = clk_deadline_ms(ms[i]);
        const double hi = mono();
        CHECK(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L, "deadline(%ld ms): tv_nsec %ld", ms[i], d.tv_nsec);
        const double want_lo = lo + 1e-3 * (double)ms[i], want_hi = hi + 1e-3 * (double)ms[i];
        CHECK(ts_s(d) >= want_lo - 1e-6 && ts_s(d) <= want_hi + 1e-6,
              "deadline(%ld ms) %.6f outside [%.6f, %.6f]", ms[i], ts_s(d), want_lo, want_hi);
    }

    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    CHECK(clk_cond_init(&cv) == 0, "clk_cond_init");
    pthread_mutex_lock(&mu);
    const double t0 = mono();
    const struct timespec d = clk_deadline_ms(50);
    int rc;
    do rc = pthread_cond_timedwait(&cv, &mu, &d); while (rc == 0); /* spurious wake-ups */
    const double waited = mono() - t0;
    CHECK(rc == ETIMEDOUT, "timed wait: %d, not ETIMEDOUT", rc);
    pthread_mutex_unlock(&mu);
    pthread_cond_destroy(&cv);
    /* the upper bound is loose: the test machine is shared */
    CHECK(waited >= 0.049 && waited < 5.0, "a 50 ms timed wait took %.3f s", waited);

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
