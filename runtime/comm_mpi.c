/* runtime/comm_mpi.c — the communicator over Open MPI (CPU ranks, host buffers).
 *
 * Every comm wraps its own MPI_Comm (the world comm is a duplicate of MPI_COMM_WORLD, so the
 * program's own MPI traffic never matches ours) with MPI_ERRORS_RETURN set: an MPI failure
 * comes back as COMM_ERR_MPI with "host:rank N: MPI_Allreduce failed: <MPI_Error_string>".
 * Each blocking call runs between comm__watch_begin/end (comm.c), whose thread aborts the job
 * past the deadline. Counts above comm__max_count() (INT_MAX: MPI counts are int) are sent in
 * chunks; an allgather that large becomes one chunked broadcast per rank. An alltoallv is
 * one MPI_Alltoallv, not chunked: a count or displacement above INT_MAX is an error naming
 * it. BF16 sums go through f32 in chunks of at most 4 Mi elements and are rounded once.
 * comm_bcast_idle is the one non-blocking path (MPI_Ibcast polled with sleeps) so waiting
 * workers do not spin.
 */
#include "comm_impl.h"
#include "qtypes.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    comm c;
    MPI_Comm mc;
    int local_rank, local_size;
} mpi__comm;

static int mpi__started;   /* MPI_Init_thread was ours, so MPI_Finalize is ours too */

static MPI_Comm mpi__mc(const comm *c) { return ((const mpi__comm *)c)->mc; }

static int mpi__fail(comm *c, int rc, const char *call) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", rc);
    return comm__fail(c, COMM_ERR_MPI, "%s failed: %s", call, s);
}

static MPI_Datatype mpi__type(comm_dtype t) {
    switch (t) {
    case COMM_F32: return MPI_FLOAT;
    case COMM_BF16: return MPI_UINT16_T;
    case COMM_I32: return MPI_INT32_T;
    case COMM_U8: return MPI_UINT8_T;
    }
    return MPI_DATATYPE_NULL;
}

static size_t mpi__min(size_t a, size_t b) { return a < b ? a : b; }

static int mpi__allreduce_sum(comm *c, void *buf, size_t count, comm_dtype t) {
    const size_t max = comm__max_count();
    if (t != COMM_BF16) {
        char *p = buf;
        MPI_Datatype dt = mpi__type(t);
        for (size_t off = 0; off < count; off += max) {
            int n = (int)mpi__min(max, count - off);
            comm__watch_begin(c, "allreduce", 0, (size_t)n * 4);
            int rc = MPI_Allreduce(MPI_IN_PLACE, p + off * 4, n, dt, MPI_SUM, mpi__mc(c));
            comm__watch_end();
            if (rc != MPI_SUCCESS) return mpi__fail(c, rc, "MPI_Allreduce");
        }
        return 0;
    }
    /* bf16: widen to f32, sum, round once; the chunk bounds the f32 scratch */
    qt_bf16 *h = buf;
    size_t chunk = mpi__min(mpi__min(max, (size_t)1 << 22), count);
    float *f = malloc(chunk * sizeof *f);
    if (!f) return comm__fail(c, COMM_ERR_NOMEM, "allreduce: no memory for %zu f32", chunk);
    int err = 0;
    for (size_t off = 0; off < count && !err; off += chunk) {
        size_t n = mpi__min(chunk, count - off);
        for (size_t k = 0; k < n; k++) f[k] = qt_bf16_to_f32(h[off + k]);
        comm__watch_begin(c, "allreduce", 0, n * 4);
        int rc = MPI_Allreduce(MPI_IN_PLACE, f, (int)n, MPI_FLOAT, MPI_SUM, mpi__mc(c));
        comm__watch_end();
        if (rc != MPI_SUCCESS) err = mpi__fail(c, rc, "MPI_Allreduce");
        else for (size_t k = 0; k < n; k++) h[off + k] = qt_f32_to_bf16(f[k]);
    }
    free(f);
    return err;
}

static int mpi__bcast(comm *c, void *buf, size_t bytes, int root) {
    const size_t max = comm__max_count();
    char *p = buf;
    for (size_t off = 0; off < bytes; off += max) {
        int n = (int)mpi__min(max, bytes - off);
        comm__watch_begin(c, "bcast", 0, (size_t)n);
        int rc = MPI_Bcast(p + off, n, MPI_BYTE, root, mpi__mc(c));
        comm__watch_end();
        if (rc != MPI_SUCCESS) return mpi__fail(c, rc, "MPI_Bcast");
    }
    return 0;
}

static int mpi__allgather(comm *c, const void *send, void *recv, size_t count, comm_dtype t) {
    const size_t es = comm_dtype_size(t);
    char *r = recv;
    char *mine = r + (size_t)c->rank * count * es;
    if (count <= comm__max_count()) {
        MPI_Datatype dt = mpi__type(t);
        comm__watch_begin(c, "allgather", 0, (size_t)c->size * count * es);
        int rc = MPI_Allgather(send == mine ? MPI_IN_PLACE : send, (int)count, dt, recv,
                               (int)count, dt, mpi__mc(c));
        comm__watch_end();
        return rc == MPI_SUCCESS ? 0 : mpi__fail(c, rc, "MPI_Allgather");
    }
    /* over the MPI count: each rank broadcasts its block (chunked). Simpler than a strided
     * receive type, and faster with Open MPI 4.1 (2 GiB per rank: 30 s as MPI_Allgather of a
     * resized type, a few seconds as broadcasts) */
    if (send != mine) memcpy(mine, send, count * es);
    for (int q = 0; q < c->size; q++) {
        int rc = mpi__bcast(c, r + (size_t)q * count * es, count * es, q);
        if (rc) return rc;
    }
    return 0;
}

/* MPI counts and displacements are int: each value is converted, or named in the error */
static int mpi__ints(comm *c, const char *what, const size_t *v, int *out) {
    for (int q = 0; q < c->size; q++) {
        if (v[q] > INT_MAX)
            return comm__fail(c, COMM_ERR_ARG, "alltoallv: %s[%d] = %zu does not fit MPI's int "
                              "(max %d)", what, q, v[q], INT_MAX);
        out[q] = (int)v[q];
    }
    return 0;
}

static int mpi__alltoallv(comm *c, const void *send, const size_t *send_counts,
                          const size_t *send_displs, void *recv, const size_t *recv_counts,
                          const size_t *recv_displs, comm_dtype t) {
    const int n = c->size;
    int *a = malloc(4 * (size_t)n * sizeof *a);
    if (!a) return comm__fail(c, COMM_ERR_NOMEM, "alltoallv: no memory for %d ranks' counts", n);
    int *sc = a, *sd = a + n, *rcn = a + 2 * n, *rd = a + 3 * n;
    int rc = mpi__ints(c, "send_counts", send_counts, sc);
    if (!rc) rc = mpi__ints(c, "send_displs", send_displs, sd);
    if (!rc) rc = mpi__ints(c, "recv_counts", recv_counts, rcn);
    if (!rc) rc = mpi__ints(c, "recv_displs", recv_displs, rd);
    if (!rc) {
        size_t bytes = 0;
        for (int q = 0; q < n; q++) bytes += send_counts[q] + recv_counts[q];
        MPI_Datatype dt = mpi__type(t);
        comm__watch_begin(c, "alltoallv", 0, bytes * comm_dtype_size(t));
        int mrc = MPI_Alltoallv(send, sc, sd, dt, recv, rcn, rd, dt, mpi__mc(c));
        comm__watch_end();
        if (mrc != MPI_SUCCESS) rc = mpi__fail(c, mrc, "MPI_Alltoallv");
    }
    free(a);
    return rc;
}

/* MPI_Ibcast polled: the only non-blocking path, for ranks that may wait for minutes */
static int mpi__test(comm *c, void *arg, int *done) {
    int rc = MPI_Test(arg, done, MPI_STATUS_IGNORE);
    return rc == MPI_SUCCESS ? 0 : mpi__fail(c, rc, "MPI_Ibcast");
}

static int mpi__bcast_idle(comm *c, void *buf, size_t bytes, int root) {
    const size_t max = comm__max_count();
    char *p = buf;
    for (size_t off = 0; off < bytes; off += max) {
        int n = (int)mpi__min(max, bytes - off);
        MPI_Request req;
        int rc = MPI_Ibcast(p + off, n, MPI_BYTE, root, mpi__mc(c), &req);
        if (rc != MPI_SUCCESS) return mpi__fail(c, rc, "MPI_Ibcast");
        rc = comm__wait(c, "bcast_idle", c->rank != root, (size_t)n, mpi__test, &req);
        if (rc) return rc;
    }
    return 0;
}

static int mpi__argmax(comm *c, float *value, int32_t *index) {
    struct { float v; int i; } p = { *value, (int)*index };   /* the layout of MPI_FLOAT_INT */
    comm__watch_begin(c, "argmax", 0, 0);
    int rc = MPI_Allreduce(MPI_IN_PLACE, &p, 1, MPI_FLOAT_INT, MPI_MAXLOC, mpi__mc(c));
    comm__watch_end();
    if (rc != MPI_SUCCESS) return mpi__fail(c, rc, "MPI_Allreduce");
    *value = p.v;
    *index = p.i;
    return 0;
}

static int mpi__send(comm *c, const void *buf, size_t bytes, int peer, int tag) {
    const size_t max = comm__max_count();
    const char *p = buf;
    size_t off = 0;
    do {   /* a zero-byte message is still a message */
        int n = (int)mpi__min(max, bytes - off);
        comm__watch_begin(c, "send", 0, (size_t)n);
        int rc = MPI_Send(p + off, n, MPI_BYTE, peer, tag, mpi__mc(c));
        comm__watch_end();
        if (rc != MPI_SUCCESS) return mpi__fail(c, rc, "MPI_Send");
        off += (size_t)n;
    } while (off < bytes);
    return 0;
}

static int mpi__recv(comm *c, void *buf, size_t bytes, int peer, int tag) {
    const size_t max = comm__max_count();
    char *p = buf;
    size_t off = 0;
    do {
        int n = (int)mpi__min(max, bytes - off), got = 0;
        MPI_Status st;
        comm__watch_begin(c, "recv", 0, (size_t)n);
        int rc = MPI_Recv(p + off, n, MPI_BYTE, peer, tag, mpi__mc(c), &st);
        comm__watch_end();
        if (rc != MPI_SUCCESS) return mpi__fail(c, rc, "MPI_Recv");
        MPI_Get_count(&st, MPI_BYTE, &got);
        if (got != n)
            return comm__fail(c, COMM_ERR_ARG,
                              "recv: expected %zu bytes from rank %d (tag %d), the message had %zu",
                              bytes, peer, tag, off + (size_t)got);
        off += (size_t)n;
    } while (off < bytes);
    return 0;
}

static int mpi__barrier(comm *c) {
    comm__watch_begin(c, "barrier", 0, 0);
    int rc = MPI_Barrier(mpi__mc(c));
    comm__watch_end();
    return rc == MPI_SUCCESS ? 0 : mpi__fail(c, rc, "MPI_Barrier");
}

static const comm_i mpi__i;

/* takes ownership of mc (freed on failure too) */
static int mpi__wrap(comm *parent, MPI_Comm mc, comm **out) {
    MPI_Comm node = MPI_COMM_NULL;
    mpi__comm *m = calloc(1, sizeof *m);
    if (!m) {
        MPI_Comm_free(&mc);
        return comm__fail(parent, COMM_ERR_NOMEM, "split: out of memory");
    }
    m->c.i = &mpi__i;
    m->mc = mc;
    const char *call = "MPI_Comm_set_errhandler";
    int rc = MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) call = "MPI_Comm_rank", rc = MPI_Comm_rank(mc, &m->c.rank);
    if (rc == MPI_SUCCESS) call = "MPI_Comm_size", rc = MPI_Comm_size(mc, &m->c.size);
    if (rc == MPI_SUCCESS) {
        call = "MPI_Comm_split_type";
        comm__watch_begin(parent, "split", 0, 0);
        rc = MPI_Comm_split_type(mc, MPI_COMM_TYPE_SHARED, m->c.rank, MPI_INFO_NULL, &node);
        comm__watch_end();
    }
    if (rc == MPI_SUCCESS) call = "MPI_Comm_rank", rc = MPI_Comm_rank(node, &m->local_rank);
    if (rc == MPI_SUCCESS) call = "MPI_Comm_size", rc = MPI_Comm_size(node, &m->local_size);
    if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
    if (rc != MPI_SUCCESS) {
        int code = mpi__fail(parent, rc, call);
        MPI_Comm_free(&m->mc);
        free(m);
        return code;
    }
    *out = &m->c;
    return 0;
}

static int mpi__split(comm *c, int color, int key, comm **out) {
    MPI_Comm nc = MPI_COMM_NULL;
    comm__watch_begin(c, "split", 0, 0);
    int rc = MPI_Comm_split(mpi__mc(c), color < 0 ? MPI_UNDEFINED : color, key, &nc);
    comm__watch_end();
    if (rc != MPI_SUCCESS) return mpi__fail(c, rc, "MPI_Comm_split");
    if (nc == MPI_COMM_NULL) return 0;
    return mpi__wrap(c, nc, out);
}

static void mpi__free(comm *c) {
    mpi__comm *m = (mpi__comm *)c;
    MPI_Comm_free(&m->mc);
    free(m);
}

static int mpi__local_rank(const comm *c, int *local_rank, int *local_size) {
    const mpi__comm *m = (const mpi__comm *)c;
    *local_rank = m->local_rank;
    *local_size = m->local_size;
    return 0;
}

static void mpi__abort(comm *c, int code) { MPI_Abort(MPI_COMM_WORLD, code); }

static const comm_i mpi__i = {
    /* .version = */ 1,
    /* .name = */ "mpi",
    /* .allreduce_sum = */ mpi__allreduce_sum,
    /* .allgather = */ mpi__allgather,
    /* .bcast = */ mpi__bcast,
    /* .alltoallv = */ mpi__alltoallv,
    /* .argmax = */ mpi__argmax,
    /* .send = */ mpi__send,
    /* .recv = */ mpi__recv,
    /* .barrier = */ mpi__barrier,
    /* .split = */ mpi__split,
    /* .free = */ mpi__free,
    /* .local_rank = */ mpi__local_rank,
    /* .bcast_idle = */ mpi__bcast_idle,
    /* .abort = */ mpi__abort,
};

/* the node-local peers (world rank, pid, start time) for the watchdog's liveness check */
static int mpi__peers(comm *w, char *err, size_t errlen) {
    struct { int rank, pid; unsigned long long start; } me = { w->rank, (int)getpid(),
                                                                comm__self_start() }, *all;
    MPI_Comm node;
    int rc = MPI_Comm_split_type(mpi__mc(w), MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &node);
    if (rc != MPI_SUCCESS) {
        mpi__fail(w, rc, "MPI_Comm_split_type");
        snprintf(err, errlen, "%s", w->err);
        return COMM_ERR_MPI;
    }
    int n = 0;
    MPI_Comm_size(node, &n);
    all = calloc((size_t)n, sizeof *all);
    int *ranks = calloc((size_t)n, sizeof *ranks), *pids = calloc((size_t)n, sizeof *pids);
    unsigned long long *starts = calloc((size_t)n, sizeof *starts);
    int code = 0;
    if (!all || !ranks || !pids || !starts) {
        snprintf(err, errlen, "%s: out of memory for %d node peers", comm_where(w), n);
        code = COMM_ERR_NOMEM;
    } else {
        rc = MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, node);
        if (rc != MPI_SUCCESS) {
            mpi__fail(w, rc, "MPI_Allgather");
            snprintf(err, errlen, "%s", w->err);
            code = COMM_ERR_MPI;
        } else {
            for (int k = 0; k < n; k++) {
                ranks[k] = all[k].rank;
                pids[k] = all[k].pid;
                starts[k] = all[k].start;
            }
            comm__set_world(w->rank, n, ranks, pids, starts);
        }
    }
    free(all);
    free(ranks);
    free(pids);
    free(starts);
    MPI_Comm_free(&node);
    return code;
}

int comm__mpi_world_new(int *argc, char ***argv, comm **out, char *err, size_t errlen) {
    int inited = 0, provided = 0, rank = 0;
    *out = NULL;
    MPI_Initialized(&inited);
    if (!inited) {
        /* MULTIPLE only so the watchdog thread may call MPI_Abort; should a build provide less,
         * the abort is still tried and comm_abort's alarm ends the process if it hangs */
        if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
            snprintf(err, errlen, "MPI_Init_thread failed");
            return COMM_ERR_MPI;
        }
        mpi__started = 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    comm__set_world(rank, 0, NULL, NULL, NULL);

    /* holds error messages (and aborts) until the world comm exists */
    comm boot = { .i = &mpi__i, .rank = rank };
    MPI_Comm dup;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    if (rc != MPI_SUCCESS) rc = mpi__fail(&boot, rc, "MPI_Comm_dup");
    else rc = mpi__wrap(&boot, dup, out);
    if (!rc) rc = mpi__peers(*out, err, errlen);
    else snprintf(err, errlen, "%s", boot.err);
    if (!rc) rc = comm__watchdog_start(err, errlen);
    if (rc) {
        if (*out) mpi__free(*out);
        *out = NULL;
    }
    return rc;
}

void comm__mpi_finalize(void) {
    int done = 0;
    if (!mpi__started) return;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
    mpi__started = 0;
}
