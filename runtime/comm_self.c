/* runtime/comm_self.c — the communicator of a process that runs alone (no MPI): size 1, rank 0.
 *
 * A sum over one rank is its input, a gather or an all-to-all is a copy, a broadcast from
 * rank 0 leaves the buffer as it is, and there is no peer to send to (comm_send/comm_recv
 * already refuse peer 0 as "this rank"). Splitting gives another self comm, so code written for sub-comms runs
 * unchanged on one process.
 */
#include "comm_impl.h"

#include <stdlib.h>
#include <string.h>

static int self__allreduce_sum(comm *c, void *buf, size_t count, comm_dtype t) { return 0; }

static int self__allgather(comm *c, const void *send, void *recv, size_t count, comm_dtype t) {
    if (send != recv) memmove(recv, send, count * comm_dtype_size(t));
    return 0;
}

static int self__bcast(comm *c, void *buf, size_t bytes, int root) { return 0; }

/* the one block this rank sends itself (comm_alltoallv checked that the counts agree and that
 * the buffers do not overlap) */
static int self__alltoallv(comm *c, const void *send, const size_t *send_counts,
                           const size_t *send_displs, void *recv, const size_t *recv_counts,
                           const size_t *recv_displs, comm_dtype t) {
    const size_t es = comm_dtype_size(t);
    if (send_counts[0])
        memcpy((char *)recv + recv_displs[0] * es, (const char *)send + send_displs[0] * es,
               send_counts[0] * es);
    return 0;
}

static int self__argmax(comm *c, float *value, int32_t *index) { return 0; }

static int self__send(comm *c, const void *buf, size_t bytes, int peer, int tag) {
    return comm__fail(c, COMM_ERR_ARG, "send: a comm of size 1 has no peer");
}

static int self__recv(comm *c, void *buf, size_t bytes, int peer, int tag) {
    return comm__fail(c, COMM_ERR_ARG, "recv: a comm of size 1 has no peer");
}

static int self__barrier(comm *c) { return 0; }

static int self__split(comm *c, int color, int key, comm **out) {
    if (color < 0) return 0;
    if (comm__self_new(out)) return comm__fail(c, COMM_ERR_NOMEM, "split: out of memory");
    return 0;
}

static void self__free(comm *c) { free(c); }

static const comm_i self__i = {
    /* .version = */ 1,
    /* .name = */ "self",
    /* .allreduce_sum = */ self__allreduce_sum,
    /* .allgather = */ self__allgather,
    /* .bcast = */ self__bcast,
    /* .alltoallv = */ self__alltoallv,
    /* .argmax = */ self__argmax,
    /* .send = */ self__send,
    /* .recv = */ self__recv,
    /* .barrier = */ self__barrier,
    /* .split = */ self__split,
    /* .free = */ self__free,
    /* .local_rank = */ NULL,
    /* .bcast_idle = */ NULL,
    /* .abort = */ NULL,
};

int comm__self_new(comm **out) {
    comm *c = calloc(1, sizeof *c);
    if (!c) return COMM_ERR_NOMEM;
    c->i = &self__i;
    c->rank = 0;
    c->size = 1;
    *out = c;
    return 0;
}
