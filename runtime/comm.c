/* runtime/comm.c — the communicator's front: start-up (self or MPI), the dispatchers that check
 * arguments once for every implementation, the watchdog thread and the polling wait.
 *
 * Rank start-up and shutdown:
 *
 *   (process) --comm_world_init--> WORLD --comm_split--> WORLD + children
 *       |                            |  collectives, each under the watchdog
 *       | launched alone:            |  (deadline, dead-peer check) --stuck-->
 *       |                            |    blocking call: fail hook, comm_abort --> (gone)
 *       |                            |    polled wait (comm__wait): returns COMM_ERR_*, and
 *       |                            |      comm_abort COMM__FAIL_GRACE s later at the latest
 *       v                            v
 *     self comm               comm_free (children first) --comm_world_finalize--> (MPI ended)
 *
 * Invariants:
 *   1. MPI is initialised only when a launcher set up a job (or force_mpi): a plain `./sampan`
 *      never touches MPI, so it runs where no MPI runtime is installed or allowed.
 *   2. Every blocking wait has a deadline unless the caller asked for an idle wait; a rank stuck
 *      past it ends the whole job, because its peers cannot make progress either. A wait the
 *      watchdog can interrupt (comm__wait polls) returns the error first, so the caller can
 *      tell its own clients (a server ends its streams); the job still ends within
 *      COMM__FAIL_GRACE seconds, whatever the caller does. Once failed, every later polled
 *      wait fails at once (the comm is unusable).
 *   3. Error lines start with comm_where(): "host:rank N", N being the rank in the world comm.
 */
#include "comm_impl.h"
#include "clock.h"

#include <limits.h>
#include <stdatomic.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int rank, pid;
    unsigned long long start;
} comm__peer;

static struct {
    comm *world;
    int started;
    double timeout;
    size_t max_count;
    char where[128];
    int npeers;
    comm__peer *peers;
} comm__g = { .timeout = 30.0, .max_count = INT_MAX, .where = "?:rank 0" };

/* ---- process-wide facts ------------------------------------------------------------------ */

const char *comm_where(const comm *c) { return comm__g.where; }

void comm_set_timeout(double seconds) { comm__g.timeout = seconds; }
double comm_get_timeout(void) { return comm__g.timeout; }
size_t comm__max_count(void) { return comm__g.max_count; }

const char *comm_strerror(int code) {
#define COMM__TEXT(name, value, text) if (code == value) return text;
    COMM_ERRORS(COMM__TEXT)
#undef COMM__TEXT
    return "unknown comm error";
}

int comm__fail(comm *c, int code, const char *fmt, ...) {
    int n = snprintf(c->err, sizeof c->err, "%s: ", comm__g.where);
    if (n < 0 || (size_t)n >= sizeof c->err) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, sizeof c->err - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

/* state letter and start time from /proc/PID/stat; -1 when the process is not there */
static int comm__proc_stat(int pid, char *state, unsigned long long *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* the command name (field 2) may hold spaces and parentheses: parse after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ') return -1;
    *state = p[2];
    p += 3;
    /* fields 4..21 precede starttime (22) */
    for (int field = 4; field <= 22; field++) {
        while (*p == ' ') p++;
        if (!*p) return -1;
        if (field == 22) {
            *start = strtoull(p, NULL, 10);
            return 0;
        }
        while (*p && *p != ' ') p++;
    }
    return -1;
}

unsigned long long comm__self_start(void) {
    char st;
    unsigned long long start = 0;
    return comm__proc_stat((int)getpid(), &st, &start) == 0 ? start : 0;
}

void comm__set_world(int world_rank, int n, const int *ranks, const int *pids,
                     const unsigned long long *starts) {
    char host[64] = "?";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    snprintf(comm__g.where, sizeof comm__g.where, "%s:rank %d", host, world_rank);

    free(comm__g.peers);
    comm__g.peers = NULL;
    comm__g.npeers = 0;
    if (n <= 0) return;
    comm__g.peers = calloc((size_t)n, sizeof *comm__g.peers);
    if (!comm__g.peers) return;   /* the liveness check is a bonus; the deadline still holds */
    for (int k = 0; k < n; k++) {
        char st;
        unsigned long long start = 0;
        /* watch only peers this process can see as they see themselves (a peer in another pid
         * namespace, or with an unreadable /proc, would look dead) */
        if (pids[k] == (int)getpid() || starts[k] == 0) continue;
        if (comm__proc_stat(pids[k], &st, &start) != 0 || start != starts[k]) continue;
        comm__g.peers[comm__g.npeers++] = (comm__peer){ ranks[k], pids[k], starts[k] };
    }
}

/* index of a node-local peer that has exited (gone, zombie, or its pid reused), or -1 */
static int comm__dead_peer(void) {
    for (int k = 0; k < comm__g.npeers; k++) {
        const comm__peer *p = &comm__g.peers[k];
        char st = '?';
        unsigned long long start = 0;
        if (comm__proc_stat(p->pid, &st, &start) != 0 || st == 'Z' || st == 'X' ||
            start != p->start)
            return k;
    }
    return -1;
}

int comm_peer_dead(char *msg, size_t len) {
    int k = comm__dead_peer();
    if (k < 0) return 0;
    if (msg && len)
        snprintf(msg, len, "%s: rank %d (pid %d) on this node has exited (a peer is dead)",
                 comm__g.where, comm__g.peers[k].rank, comm__g.peers[k].pid);
    return 1;
}

/* ---- the watchdog ------------------------------------------------------------------------
 * The blocking MPI collectives of Open MPI 4.1 are several times faster for small messages than
 * its non-blocking ones polled with MPI_Test (libnbc), so operations block in MPI and a second
 * thread keeps the deadline. It calls into MPI only to abort (MPI_Abort from another thread is
 * why MPI runs at MPI_THREAD_MULTIPLE). A blocking call cannot be made to return, so when one
 * is stuck the fail hook is the process's last word before the abort; a polled wait
 * (comm__wait) is told to return the error instead. */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int running, stop;
    int depth;            /* nesting of watch_begin; 0: nothing is blocked */
    comm *c;
    const char *op;
    int idle;
    int polled;           /* the outermost call is comm__wait's: it can return the error */
    double since, limit, next_check;
    double abort_at;      /* > 0: a polled wait failed; the job ends then at the latest */
    comm_fail_fn hook;
    void *hook_arg;
    int hook_called, hook_running;
    atomic_int failed;    /* 0, or the COMM_ERR_* every polled wait now returns */
    char msg[256];        /* why (the line printed), for comm_error() of those waits */
} comm__wd = { .mu = PTHREAD_MUTEX_INITIALIZER };

void comm_set_fail_hook(comm_fail_fn fn, void *arg) {
    pthread_mutex_lock(&comm__wd.mu);
    while (comm__wd.hook_running) {   /* the old hook's argument must outlive its call */
        pthread_mutex_unlock(&comm__wd.mu);
        struct timespec ts = { 0, 10000000L };
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&comm__wd.mu);
    }
    comm__wd.hook = fn;
    comm__wd.hook_arg = arg;
    pthread_mutex_unlock(&comm__wd.mu);
}

/* The watchdog found the blocked call dead or stuck (mu held on entry, released): the line;
 * then, for a blocking call, the hook (once) and the abort; for a polled wait, the error it
 * returns (its caller tells its clients on its own path: the hook is not called). */
static void comm__fail_now(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void comm__fail_now(int code, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    comm *c = comm__wd.c;
    int polled = comm__wd.polled && !atomic_load(&comm__wd.failed);
    comm_fail_fn hook = comm__wd.hook_called || polled ? NULL : comm__wd.hook;
    void *arg = comm__wd.hook_arg;
    comm__wd.hook_called |= hook != NULL;
    comm__wd.hook_running = hook != NULL;
    pthread_mutex_unlock(&comm__wd.mu);
    char line[400];
    snprintf(line, sizeof line, "%s: %s", comm__g.where, msg);
    fprintf(stderr, "sampan: %s\n", line);
    fflush(stderr);
    if (hook) hook(arg, line);
    if (!polled) comm_abort(c, 1);   /* the hook stays "running": nothing may free its arg */
    pthread_mutex_lock(&comm__wd.mu);
    comm__wd.hook_running = 0;
    snprintf(comm__wd.msg, sizeof comm__wd.msg, "%s", msg);
    comm__wd.abort_at = clk_now() + COMM__FAIL_GRACE;
    atomic_store(&comm__wd.failed, code);
}

static void *comm__watchdog(void *arg) {
    pthread_mutex_lock(&comm__wd.mu);
    while (!comm__wd.stop) {
        const struct timespec ts = clk_deadline_ms(100);
        pthread_cond_timedwait(&comm__wd.cv, &comm__wd.mu, &ts);
        if (comm__wd.stop) continue;
        double t = clk_now();
        if (comm__wd.abort_at > 0 && t > comm__wd.abort_at) {
            pthread_mutex_unlock(&comm__wd.mu);
            fprintf(stderr, "sampan: %s: still running %g s after a failed collective; ending "
                    "the job\n", comm__g.where, COMM__FAIL_GRACE);
            comm_abort(NULL, 1);   /* the world comm: the one that failed may be freed by now */
        }
        if (comm__wd.depth == 0 || atomic_load(&comm__wd.failed)) continue;
        double waited = t - comm__wd.since;
        const char *op = comm__wd.op;
        if (comm__wd.limit > 0 && waited > comm__wd.limit) {
            comm__fail_now(COMM_ERR_TIMEOUT, "%s timed out after %.3g s (a peer is dead or stuck)",
                           op, comm__wd.limit);
            continue;
        }
        if (waited >= COMM__PEER_CHECK && t >= comm__wd.next_check) {
            comm__wd.next_check = t + COMM__PEER_CHECK;
            int k = comm__dead_peer();
            if (k >= 0)
                comm__fail_now(COMM_ERR_PEER, "%s: rank %d (pid %d) on this node has exited (a "
                               "peer is dead)", op, comm__g.peers[k].rank, comm__g.peers[k].pid);
        }
    }
    pthread_mutex_unlock(&comm__wd.mu);
    return NULL;
}

int comm__watchdog_start(char *err, size_t errlen) {
    if (comm__wd.running) return 0;
    int rc = clk_cond_init(&comm__wd.cv);
    if (rc) {
        snprintf(err, errlen, "%s: watchdog: pthread_cond_init: %s", comm__g.where, strerror(rc));
        return COMM_ERR_NOMEM;
    }
    comm__wd.stop = 0;
    rc = pthread_create(&comm__wd.th, NULL, comm__watchdog, NULL);
    if (rc) {
        pthread_cond_destroy(&comm__wd.cv);
        snprintf(err, errlen, "%s: watchdog: pthread_create: %s", comm__g.where, strerror(rc));
        return COMM_ERR_NOMEM;
    }
    comm__wd.running = 1;
    return 0;
}

void comm__watchdog_stop(void) {
    if (!comm__wd.running) return;
    pthread_mutex_lock(&comm__wd.mu);
    comm__wd.stop = 1;
    pthread_cond_signal(&comm__wd.cv);
    pthread_mutex_unlock(&comm__wd.mu);
    pthread_join(comm__wd.th, NULL);
    pthread_cond_destroy(&comm__wd.cv);
    comm__wd.running = 0;
}

static void comm__watch_enter(comm *c, const char *op, int idle, size_t bytes, int polled) {
    pthread_mutex_lock(&comm__wd.mu);
    if (comm__wd.depth++ == 0) {
        comm__wd.c = c;
        comm__wd.op = op;
        comm__wd.idle = idle;
        comm__wd.polled = polled;
        comm__wd.since = clk_now();
        comm__wd.limit = idle || comm__g.timeout <= 0 ? 0.0 : comm__g.timeout + (double)bytes / 100e6;
        comm__wd.next_check = comm__wd.since + COMM__PEER_CHECK;
    }
    pthread_mutex_unlock(&comm__wd.mu);
}

void comm__watch_begin(comm *c, const char *op, int idle, size_t bytes) {
    comm__watch_enter(c, op, idle, bytes, 0);
}

void comm__watch_end(void) {
    pthread_mutex_lock(&comm__wd.mu);
    comm__wd.depth--;
    pthread_mutex_unlock(&comm__wd.mu);
}

/* the error of a polled wait after the watchdog gave up on it (or on an earlier one) */
static int comm__wait_failed(comm *c, const char *op) {
    int code = atomic_load(&comm__wd.failed);
    if (!code) return 0;
    pthread_mutex_lock(&comm__wd.mu);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", comm__wd.msg);
    pthread_mutex_unlock(&comm__wd.mu);
    (void)op;
    return comm__fail(c, code, "%s", msg);
}

int comm__wait(comm *c, const char *op, int idle, size_t bytes, comm__test_fn test, void *arg) {
    int done = 0;
    int rc = comm__wait_failed(c, op);
    if (rc) return rc;
    rc = test(c, arg, &done);
    if (rc || done) return rc;

    comm__watch_enter(c, op, idle, bytes, 1);
    const double t0 = clk_now();
    long nap_ns = 20000;
    for (;;) {
        rc = test(c, arg, &done);
        if (rc || done) break;
        if ((rc = comm__wait_failed(c, op))) break;
        double waited = clk_now() - t0;
        /* spinning answers fastest when the peer is a few microseconds behind; yielding lets an
         * oversubscribed peer run; sleeping stops burning a core on long waits */
        if (waited < 50e-6) continue;
        if (waited < 10e-3) {
            sched_yield();
            continue;
        }
        long cap = idle && waited > 1.0 ? 10000000L : 200000L;
        nap_ns = nap_ns * 2 > cap ? cap : nap_ns * 2;
        struct timespec ts = { 0, nap_ns };
        nanosleep(&ts, NULL);
    }
    comm__watch_end();
    return rc;
}

/* ---- start-up and shutdown --------------------------------------------------------------- */

static int comm__env_set(const char *name) {
    const char *v = getenv(name);
    return v && *v;
}

static long comm__env_long(const char *name) {
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : 0;
}

int comm_world_init(int *argc, char ***argv, int force_mpi, comm **world, char *err,
                    size_t errlen) {
    if (comm__g.started) {
        snprintf(err, errlen, "comm_world_init: called twice");
        return COMM_ERR_ARG;
    }
    const char *t = getenv("SAMPAN_COMM_TIMEOUT");
    if (t && *t) {
        char *end;
        double s = strtod(t, &end);
        if (end == t || *end) {
            snprintf(err, errlen, "SAMPAN_COMM_TIMEOUT=%s is not a number of seconds", t);
            return COMM_ERR_ARG;
        }
        comm__g.timeout = s;
    }
    long mc = comm__env_long("SAMPAN_COMM_MAX_COUNT");
    if (mc > 0 && mc < INT_MAX) comm__g.max_count = (size_t)mc;

    int launched = comm__env_set("OMPI_COMM_WORLD_SIZE") || comm__env_set("PMIX_RANK") ||
                   comm__env_set("PMI_RANK") || comm__env_set("PMI_SIZE");
    long srun_tasks = comm__env_long("SLURM_STEP_NUM_TASKS");
    if (!launched && !force_mpi && srun_tasks > 1) {
        snprintf(err, errlen,
                 "started by srun as one of %ld tasks but without PMI, so the ranks cannot find "
                 "each other: use srun --mpi=pmix", srun_tasks);
        return COMM_ERR_ARG;
    }
    int rc;
    if (launched || force_mpi) {
        rc = comm__mpi_world_new(argc, argv, world, err, errlen);
    } else {
        rc = comm__self_new(world);
        if (rc) snprintf(err, errlen, "comm_world_init: out of memory");
        else comm__set_world(0, 0, NULL, NULL, NULL);
    }
    if (rc) return rc;
    comm__g.started = 1;
    comm__g.world = *world;
    return 0;
}

void comm_world_finalize(void) {
    if (!comm__g.started) return;
    if (comm__g.world) {
        comm *w = comm__g.world;
        /* ranks leave together: one that finalises while a peer still expects a message would
         * leave that peer blocked until its deadline */
        if (comm_barrier(w) != 0) fprintf(stderr, "sampan: %s\n", comm_error(w));
        comm_free(w);
    }
    comm__watchdog_stop();
    comm__mpi_finalize();
    free(comm__g.peers);
    comm__g.peers = NULL;
    comm__g.npeers = 0;
    comm__g.started = 0;
}

void comm_abort(comm *c, int code) {
    fflush(stdout);
    fflush(stderr);
    if (!c) c = comm__g.world;
    if (c && c->i->abort) {
        /* MPI_Abort waits for the launcher to end the job; should that never happen, SIGALRM's
         * default action ends this process, an abnormal exit the launcher acts on */
        signal(SIGALRM, SIG_DFL);
        alarm(10);
        c->i->abort(c, code);
    }
    exit(code);
}

/* ---- dispatchers ------------------------------------------------------------------------- */

static int comm__check_dtype(comm *c, const char *op, comm_dtype t, int sum) {
    if (comm_dtype_size(t) == 0) return comm__fail(c, COMM_ERR_ARG, "%s: unknown dtype %d", op, (int)t);
    if (sum && t == COMM_U8)
        return comm__fail(c, COMM_ERR_ARG, "%s: sums F32, BF16 or I32, not U8", op);
    return 0;
}

static int comm__check_peer(comm *c, const char *op, int peer, int tag) {
    if (peer < 0 || peer >= c->size)
        return comm__fail(c, COMM_ERR_ARG, "%s: peer %d is outside the comm (size %d)", op, peer,
                          c->size);
    if (peer == c->rank)
        return comm__fail(c, COMM_ERR_ARG, "%s: peer %d is this rank (no messages to self)", op,
                          peer);
    if (tag < 0 || tag > 32767)
        return comm__fail(c, COMM_ERR_ARG, "%s: tag %d is outside 0..32767", op, tag);
    return 0;
}

static int comm__check_root(comm *c, const char *op, int root) {
    if (root < 0 || root >= c->size)
        return comm__fail(c, COMM_ERR_ARG, "%s: root %d is outside the comm (size %d)", op, root,
                          c->size);
    return 0;
}

int comm_allreduce_sum(comm *c, void *buf, size_t count, comm_dtype t) {
    int rc = comm__check_dtype(c, "allreduce", t, 1);
    if (rc) return rc;
    if (count == 0) return 0;
    if (!buf) return comm__fail(c, COMM_ERR_ARG, "allreduce: NULL buffer for %zu elements", count);
    return c->i->allreduce_sum(c, buf, count, t);
}

int comm_allgather(comm *c, const void *send, void *recv, size_t count, comm_dtype t) {
    int rc = comm__check_dtype(c, "allgather", t, 0);
    if (rc) return rc;
    if (count == 0) return 0;
    if (!send || !recv)
        return comm__fail(c, COMM_ERR_ARG, "allgather: NULL buffer for %zu elements", count);
    return c->i->allgather(c, send, recv, count, t);
}

/* the bytes [*lo, *hi) that the n blocks (counts, displs) of es-byte elements span (lo == hi:
 * none); an element count past SIZE_MAX bytes is an error naming the block */
static int comm__extent(comm *c, const char *what, const size_t *counts, const size_t *displs,
                        size_t es, size_t *lo, size_t *hi) {
    *lo = SIZE_MAX;
    *hi = 0;
    for (int q = 0; q < c->size; q++) {
        if (counts[q] == 0) continue;
        if (counts[q] > SIZE_MAX / es || displs[q] > SIZE_MAX / es - counts[q])
            return comm__fail(c, COMM_ERR_ARG, "alltoallv: %s block %d (displ %zu, count %zu) "
                              "overflows the address space", what, q, displs[q], counts[q]);
        if (displs[q] * es < *lo) *lo = displs[q] * es;
        if ((displs[q] + counts[q]) * es > *hi) *hi = (displs[q] + counts[q]) * es;
    }
    if (*hi == 0) *lo = 0;
    return 0;
}

int comm_alltoallv(comm *c, const void *send, const size_t *send_counts,
                   const size_t *send_displs, void *recv, const size_t *recv_counts,
                   const size_t *recv_displs, comm_dtype t) {
    int rc = comm__check_dtype(c, "alltoallv", t, 0);
    if (rc) return rc;
    if (!send_counts || !send_displs || !recv_counts || !recv_displs)
        return comm__fail(c, COMM_ERR_ARG, "alltoallv: NULL count or displacement array");
    const size_t es = comm_dtype_size(t);
    size_t slo, shi, rlo, rhi;
    if ((rc = comm__extent(c, "send", send_counts, send_displs, es, &slo, &shi)) ||
        (rc = comm__extent(c, "recv", recv_counts, recv_displs, es, &rlo, &rhi)))
        return rc;
    if ((shi > 0 && !send) || (rhi > 0 && !recv))
        return comm__fail(c, COMM_ERR_ARG, "alltoallv: NULL %s buffer for %zu bytes",
                          shi > 0 && !send ? "send" : "recv", shi > 0 && !send ? shi : rhi);
    if (send_counts[c->rank] != recv_counts[c->rank])
        return comm__fail(c, COMM_ERR_ARG, "alltoallv: this rank (%d) sends itself %zu elements "
                          "but expects %zu", c->rank, send_counts[c->rank],
                          recv_counts[c->rank]);
    const uintptr_t s = (uintptr_t)send, r = (uintptr_t)recv;
    if (shi > slo && rhi > rlo && s + slo < r + rhi && r + rlo < s + shi)
        return comm__fail(c, COMM_ERR_ARG, "alltoallv: send bytes [%zu, %zu) overlap recv bytes "
                          "[%zu, %zu) (%+td bytes apart; send and recv must not alias)", slo, shi,
                          rlo, rhi, (ptrdiff_t)(r - s));
    return c->i->alltoallv(c, send, send_counts, send_displs, recv, recv_counts, recv_displs, t);
}

int comm_bcast(comm *c, void *buf, size_t bytes, int root) {
    int rc = comm__check_root(c, "bcast", root);
    if (rc || bytes == 0) return rc;
    if (!buf) return comm__fail(c, COMM_ERR_ARG, "bcast: NULL buffer for %zu bytes", bytes);
    return c->i->bcast(c, buf, bytes, root);
}

int comm_bcast_idle(comm *c, void *buf, size_t bytes, int root) {
    int rc = comm__check_root(c, "bcast_idle", root);
    if (rc || bytes == 0) return rc;
    if (!buf) return comm__fail(c, COMM_ERR_ARG, "bcast_idle: NULL buffer for %zu bytes", bytes);
    return c->i->bcast_idle ? c->i->bcast_idle(c, buf, bytes, root)
                            : c->i->bcast(c, buf, bytes, root);
}

int comm_argmax(comm *c, float *value, int32_t *index) {
    if (!value || !index) return comm__fail(c, COMM_ERR_ARG, "argmax: NULL value or index");
    return c->i->argmax(c, value, index);
}

int comm_send(comm *c, const void *buf, size_t bytes, int peer, int tag) {
    int rc = comm__check_peer(c, "send", peer, tag);
    if (rc) return rc;
    if (!buf && bytes) return comm__fail(c, COMM_ERR_ARG, "send: NULL buffer for %zu bytes", bytes);
    return c->i->send(c, buf, bytes, peer, tag);
}

int comm_recv(comm *c, void *buf, size_t bytes, int peer, int tag) {
    int rc = comm__check_peer(c, "recv", peer, tag);
    if (rc) return rc;
    if (!buf && bytes) return comm__fail(c, COMM_ERR_ARG, "recv: NULL buffer for %zu bytes", bytes);
    return c->i->recv(c, buf, bytes, peer, tag);
}

int comm_barrier(comm *c) { return c->i->barrier(c); }

int comm_split(comm *c, int color, int key, comm **out) {
    if (!out) return comm__fail(c, COMM_ERR_ARG, "split: NULL out");
    *out = NULL;
    return c->i->split(c, color, key, out);
}

void comm_free(comm *c) {
    if (!c) return;
    if (c == comm__g.world) comm__g.world = NULL;
    c->i->free(c);
}

int comm_local_rank(const comm *c, int *local_rank, int *local_size) {
    if (c->i->local_rank) return c->i->local_rank(c, local_rank, local_size);
    *local_rank = 0;
    *local_size = 1;
    return 0;
}
