/* runtime/comm_impl.h — what the communicator implementations (comm_self.c, comm_mpi.c,
 * comm_nccl.c) share with comm.c. Not for callers of the communicator: they use comm.h.
 *
 * comm.c owns the process-wide facts (host, world rank, the watchdog's timeout, the node-local
 * peers whose liveness it checks) and the wait loop every implementation blocks in.
 */
#ifndef SAMPAN_COMM_IMPL_H
#define SAMPAN_COMM_IMPL_H

#include "comm.h"

/* writes "<where>: <message>" to c->err and returns code */
int comm__fail(comm *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The watchdog. Between comm__watch_begin and comm__watch_end the calling thread is blocked in
 * `op` on c (a literal string), moving `bytes`. A thread checks every 100 ms: past the deadline
 * set at watch_begin (the timeout plus bytes at 100 MB/s, so a huge message on a slow link is
 * not taken for a stuck peer; none when idle) it prints "sampan: host:rank N: <op> timed out after T s (a peer
 * is dead or stuck)"; after COMM__PEER_CHECK s of waiting it also checks, that often, that the
 * node-local peers are alive ("... has exited (a peer is dead)"). Either way it then calls the
 * fail hook (comm_set_fail_hook, once per process) and ends the job through comm_abort(c, 1) —
 * unless the blocked call is comm__wait's, which then returns COMM_ERR_TIMEOUT / COMM_ERR_PEER
 * (and so does every later comm__wait) without the hook: its caller learns of the failure and
 * tells its clients itself; the watchdog ends the job COMM__FAIL_GRACE s later should the
 * process still be there. Calls nest (the outermost counts); one thread at a time
 * may be inside. */
#define COMM__PEER_CHECK 0.25   /* s: a dead node-local peer is seen within about twice this */
#define COMM__FAIL_GRACE 10.0   /* s a process may live on after a polled wait failed */
int comm__watchdog_start(char *err, size_t errlen);
void comm__watchdog_stop(void);
void comm__watch_begin(comm *c, const char *op, int idle, size_t bytes);
void comm__watch_end(void);

/* One poll of an outstanding operation: sets *done when it has completed; returns 0 or a
 * COMM_ERR_* code (with c->err written). */
typedef int (*comm__test_fn)(comm *c, void *arg, int *done);

/* Polls test() under the watchdog until it reports done, backing off from spinning (first
 * 50 us) to sched_yield (up to 10 ms) to short sleeps (200 us at most; 10 ms when idle for
 * over a second), so a long wait does not burn a core. For idle waits and for operations that
 * have no blocking form (CUDA streams). */
int comm__wait(comm *c, const char *op, int idle, size_t bytes, comm__test_fn test, void *arg);

/* elements per MPI call (INT_MAX unless SAMPAN_COMM_MAX_COUNT lowers it) */
size_t comm__max_count(void);

/* Records the world rank (for comm_where) and the node-local peers the watchdog watches:
 * n entries of (world rank, pid, start time in clock ticks since boot, as /proc/PID/stat). */
void comm__set_world(int world_rank, int n, const int *ranks, const int *pids,
                     const unsigned long long *starts);
/* this process's start time (field 22 of /proc/self/stat); 0 when unknown */
unsigned long long comm__self_start(void);

/* constructors of the implementations */
int comm__self_new(comm **out);
int comm__mpi_world_new(int *argc, char ***argv, comm **out, char *err, size_t errlen);
/* MPI_Finalize when comm_mpi.c started MPI (the world comm must be freed before) */
void comm__mpi_finalize(void);

#endif
