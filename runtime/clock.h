/* runtime/clock.h — the project's one clock, CLOCK_MONOTONIC: elapsed seconds, and the deadlines
 * of timed condition waits (pthread_cond_timedwait takes an absolute time).
 *
 * A condition variable waited on with a clk_deadline_ms deadline must come from clk_cond_init:
 * a pthread_cond_t measures its deadline on CLOCK_REALTIME by default, and a deadline from one
 * clock read against another waits for the wrong time (forever, when the two are years apart;
 * and the wall clock jumps when it is set). Below runtime/, kernels/cpu/pool.c keeps its own
 * nanosecond reading of the same clock (kernels/ includes nothing from above).
 */
#ifndef SAMPAN_CLOCK_H
#define SAMPAN_CLOCK_H

#include <pthread.h>
#include <time.h>

double clk_now(void);                       /* seconds, monotonic, from an arbitrary origin */
struct timespec clk_deadline_ms(long ms);   /* now + ms (ms >= 0), normalized */
int clk_cond_init(pthread_cond_t *cv);      /* a condition variable on this clock: 0 or an errno */

#endif
