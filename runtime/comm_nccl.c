/* runtime/comm_nccl.c — the communicator over NCCL (GPU ranks, device buffers).
 *
 * An NCCL comm is built on a host comm (MPI, or self for one GPU) that carries NCCL's unique id
 * from rank 0, the ranks' agreement before NCCL's collective init, comm_bcast_idle (host
 * buffers) and comm_local_rank. Each operation is enqueued on the comm's own stream and waited
 * for before returning, polling cudaStreamQuery and ncclCommGetAsyncError under the watchdog
 * (comm.c); on a timeout the abort slot calls ncclCommAbort before the host comm ends the job.
 *
 * Buffer contract: buffers are device memory, and the caller has finished writing them (its
 * kernels synchronised) before the call; the result is in place when the call returns. The
 * stream is created with default flags, so work on the legacy default stream is ordered before
 * it (the CUDA backend, kernels/cuda/backend_cuda.cu, runs there: its kernels need no sync
 * before a collective, and its next kernels wait for it). Host buffers (pageable or pinned:
 * cudaPointerGetAttributes says which) go to the host comm instead, so that the model's host
 * collectives (model_logits_full's gather of logits) work over the same comm.
 * argmax takes host pointers like every implementation: each rank's (value, index) pair is
 * gathered (ncclAllGather of 8 bytes per rank) and every rank picks the same winner on the host
 * (largest value, ties to the smallest index). alltoallv is a group (ncclGroupStart/End) of
 * one ncclSend and one ncclRecv per peer with a non-zero count; it is compiled and linked here
 * but has not run on a GPU yet (no machine with one ran tests/comm/test_nccl.c since it was
 * added). Tags are not NCCL's: messages between a pair
 * arrive in the order sent, whatever the tag.
 *
 * BF16 sums use ncclBfloat16: NCCL rounds to bf16 after each reduction step, which equals the
 * interface's single rounding for 2 ranks and may differ in the last bit for more (a device
 * conversion kernel would give the f32 path of comm_mpi.c; see the report of issue 3).
 */
#include "comm_impl.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float v;
    int32_t i;
} nccl__pair;

typedef struct {
    comm c;
    comm *host;        /* the comm this one was built on */
    int own_host;      /* children made by split own their host child */
    ncclComm_t nc;
    cudaStream_t st;
    int device;
    void *scratch;     /* device: size argmax pairs, then the barrier's word */
    nccl__pair *pairs; /* host: size argmax pairs */
} nccl__comm;

static nccl__comm *nccl__of(comm *c) { return (nccl__comm *)c; }

static int nccl__nfail(comm *c, ncclResult_t r, const char *call) {
    nccl__comm *n = nccl__of(c);
    const char *last = n->nc ? ncclGetLastError(n->nc) : NULL;
    return comm__fail(c, COMM_ERR_NCCL, "%s failed: %s%s%s", call, ncclGetErrorString(r),
                      last && *last ? ": " : "", last && *last ? last : "");
}

static int nccl__cfail(comm *c, cudaError_t e, const char *call) {
    return comm__fail(c, COMM_ERR_NCCL, "%s failed: %s (CUDA error %d)", call,
                      cudaGetErrorString(e), (int)e);
}

/* 1 when p is host memory (NCCL takes device memory only) */
static int nccl__is_host(const void *p) {
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        (void)cudaGetLastError();
        return 1;
    }
    return a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged;
}

/* the host comm's result of a forwarded call, its message copied */
static int nccl__fwd(comm *c, int rc) {
    if (rc) snprintf(c->err, sizeof c->err, "%s", comm_error(nccl__of(c)->host));
    return rc;
}

/* one poll of the stream; arg is the name of the NCCL call being waited for */
static int nccl__test(comm *c, void *arg, int *done) {
    nccl__comm *n = nccl__of(c);
    ncclResult_t async = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(n->nc, &async);
    if (r != ncclSuccess) return nccl__nfail(c, r, "ncclCommGetAsyncError");
    if (async != ncclSuccess && async != ncclInProgress) return nccl__nfail(c, async, arg);
    cudaError_t e = cudaStreamQuery(n->st);
    if (e == cudaSuccess) {
        *done = 1;
        return 0;
    }
    if (e == cudaErrorNotReady) return 0;
    return nccl__cfail(c, e, "cudaStreamQuery");
}

/* checks the enqueue, then waits for the stream */
static int nccl__finish(comm *c, ncclResult_t r, const char *call, const char *op, size_t bytes) {
    if (r != ncclSuccess) return nccl__nfail(c, r, call);
    return comm__wait(c, op, 0, bytes, nccl__test, (void *)call);
}

static int nccl__type(comm_dtype t, ncclDataType_t *out) {
    switch (t) {
    case COMM_F32: *out = ncclFloat32; return 0;
    case COMM_BF16: *out = ncclBfloat16; return 0;
    case COMM_I32: *out = ncclInt32; return 0;
    case COMM_U8: *out = ncclUint8; return 0;
    }
    return -1;
}

static int nccl__allreduce_sum(comm *c, void *buf, size_t count, comm_dtype t) {
    ncclDataType_t dt;
    if (nccl__type(t, &dt)) return comm__fail(c, COMM_ERR_ARG, "allreduce: dtype %d", (int)t);
    nccl__comm *n = nccl__of(c);
    if (nccl__is_host(buf)) return nccl__fwd(c, comm_allreduce_sum(n->host, buf, count, t));
    return nccl__finish(c, ncclAllReduce(buf, buf, count, dt, ncclSum, n->nc, n->st),
                        "ncclAllReduce", "allreduce", count * comm_dtype_size(t));
}

static int nccl__allgather(comm *c, const void *send, void *recv, size_t count, comm_dtype t) {
    nccl__comm *n = nccl__of(c);
    size_t bytes = count * comm_dtype_size(t);
    int hs = nccl__is_host(send), hr = nccl__is_host(recv);
    if (hs != hr)
        return comm__fail(c, COMM_ERR_ARG, "allgather: send in %s memory, recv in %s memory",
                          hs ? "host" : "device", hr ? "host" : "device");
    if (hs) return nccl__fwd(c, comm_allgather(n->host, send, recv, count, t));
    return nccl__finish(c, ncclAllGather(send, recv, bytes, ncclUint8, n->nc, n->st),
                        "ncclAllGather", "allgather", bytes * (size_t)c->size);
}

/* One group of a send and a receive per peer with a non-zero count (this rank's own block
 * included: NCCL copies it). Not run yet: no machine with GPUs has executed this path (CI
 * compiles and links it against $CUDA_HOME); tests/comm/test_nccl.c checks it where one does. */
static int nccl__alltoallv(comm *c, const void *send, const size_t *send_counts,
                           const size_t *send_displs, void *recv, const size_t *recv_counts,
                           const size_t *recv_displs, comm_dtype t) {
    nccl__comm *n = nccl__of(c);
    const size_t es = comm_dtype_size(t);
    size_t sbytes = 0, rbytes = 0;
    for (int q = 0; q < c->size; q++) sbytes += send_counts[q], rbytes += recv_counts[q];
    /* a rank with nothing to send or receive may pass NULL: the other buffer decides */
    int hs = send ? nccl__is_host(send) : -1, hr = recv ? nccl__is_host(recv) : -1;
    if (hs >= 0 && hr >= 0 && hs != hr)
        return comm__fail(c, COMM_ERR_ARG, "alltoallv: send in %s memory, recv in %s memory",
                          hs ? "host" : "device", hr ? "host" : "device");
    /* every rank must take the same path: a host call on one and a device call on another
     * would meet the watchdog; callers keep one kind of buffer per comm (both NULL: device) */
    if (hs == 1 || hr == 1)
        return nccl__fwd(c, comm_alltoallv(n->host, send, send_counts, send_displs, recv,
                                           recv_counts, recv_displs, t));
    ncclResult_t r = ncclGroupStart();
    const char *call = "ncclGroupStart";
    for (int q = 0; q < c->size && r == ncclSuccess; q++) {
        if (send_counts[q]) {
            call = "ncclSend";
            r = ncclSend((const char *)send + send_displs[q] * es, send_counts[q] * es, ncclUint8,
                         q, n->nc, n->st);
        }
        if (r == ncclSuccess && recv_counts[q]) {
            call = "ncclRecv";
            r = ncclRecv((char *)recv + recv_displs[q] * es, recv_counts[q] * es, ncclUint8, q,
                         n->nc, n->st);
        }
    }
    if (r != ncclSuccess) {   /* the group must still be closed */
        ncclGroupEnd();
        return nccl__nfail(c, r, call);
    }
    return nccl__finish(c, ncclGroupEnd(), "ncclGroupEnd", "alltoallv", (sbytes + rbytes) * es);
}

static int nccl__bcast(comm *c, void *buf, size_t bytes, int root) {
    nccl__comm *n = nccl__of(c);
    if (nccl__is_host(buf)) return nccl__fwd(c, comm_bcast(n->host, buf, bytes, root));
    return nccl__finish(c, ncclBroadcast(buf, buf, bytes, ncclUint8, root, n->nc, n->st),
                        "ncclBroadcast", "bcast", bytes);
}

static int nccl__argmax(comm *c, float *value, int32_t *index) {
    nccl__comm *n = nccl__of(c);
    nccl__pair me = { *value, *index };
    char *slot = (char *)n->scratch + (size_t)c->rank * sizeof me;
    cudaError_t e = cudaMemcpyAsync(slot, &me, sizeof me, cudaMemcpyHostToDevice, n->st);
    if (e != cudaSuccess) return nccl__cfail(c, e, "cudaMemcpyAsync");
    ncclResult_t r = ncclAllGather(slot, n->scratch, sizeof me, ncclUint8, n->nc, n->st);
    if (r != ncclSuccess) return nccl__nfail(c, r, "ncclAllGather");
    e = cudaMemcpyAsync(n->pairs, n->scratch, (size_t)c->size * sizeof me,
                        cudaMemcpyDeviceToHost, n->st);
    if (e != cudaSuccess) return nccl__cfail(c, e, "cudaMemcpyAsync");
    int rc = comm__wait(c, "argmax", 0, 0, nccl__test, (void *)"ncclAllGather");
    if (rc) return rc;
    nccl__pair best = n->pairs[0];
    for (int k = 1; k < c->size; k++) {
        nccl__pair p = n->pairs[k];
        if (p.v > best.v || (p.v == best.v && p.i < best.i)) best = p;
    }
    *value = best.v;
    *index = best.i;
    return 0;
}

static int nccl__send(comm *c, const void *buf, size_t bytes, int peer, int tag) {
    nccl__comm *n = nccl__of(c);
    if (nccl__is_host(buf)) return nccl__fwd(c, comm_send(n->host, buf, bytes, peer, tag));
    return nccl__finish(c, ncclSend(buf, bytes, ncclUint8, peer, n->nc, n->st), "ncclSend",
                        "send", bytes);
}

static int nccl__recv(comm *c, void *buf, size_t bytes, int peer, int tag) {
    nccl__comm *n = nccl__of(c);
    if (nccl__is_host(buf)) return nccl__fwd(c, comm_recv(n->host, buf, bytes, peer, tag));
    return nccl__finish(c, ncclRecv(buf, bytes, ncclUint8, peer, n->nc, n->st), "ncclRecv",
                        "recv", bytes);
}

static int nccl__barrier(comm *c) {
    nccl__comm *n = nccl__of(c);
    void *word = (char *)n->scratch + (size_t)c->size * sizeof(nccl__pair);
    return nccl__finish(c, ncclAllReduce(word, word, 1, ncclInt32, ncclSum, n->nc, n->st),
                        "ncclAllReduce", "barrier", 0);
}

static void nccl__destroy(nccl__comm *n) {
    if (n->nc) {
        comm__watch_begin(&n->c, "free", 0, 0);
        ncclCommFinalize(n->nc);
        ncclCommDestroy(n->nc);
        comm__watch_end();
    }
    if (n->st) cudaStreamDestroy(n->st);
    if (n->scratch) cudaFree(n->scratch);
    free(n->pairs);
    if (n->own_host) comm_free(n->host);
    free(n);
}

static const comm_i nccl__i;

/* wraps an initialised NCCL comm (owned from here on, destroyed on failure) */
static int nccl__make(comm *host, int own_host, ncclComm_t nc, int device, comm **out,
                      char *err, size_t errlen) {
    nccl__comm *n = calloc(1, sizeof *n);
    if (!n) {
        ncclCommDestroy(nc);
        if (own_host) comm_free(host);
        snprintf(err, errlen, "%s: NCCL comm: out of memory", comm_where(host));
        return COMM_ERR_NOMEM;
    }
    n->c.i = &nccl__i;
    n->c.rank = host->rank;
    n->c.size = host->size;
    n->host = host;
    n->own_host = own_host;
    n->nc = nc;
    n->device = device;
    int rc = 0;
    cudaError_t e = cudaStreamCreate(&n->st);
    if (e != cudaSuccess) rc = nccl__cfail(&n->c, e, "cudaStreamCreate");
    size_t scratch = (size_t)host->size * sizeof(nccl__pair) + sizeof(int32_t);
    if (!rc && (e = cudaMalloc(&n->scratch, scratch)) != cudaSuccess)
        rc = nccl__cfail(&n->c, e, "cudaMalloc");
    if (!rc && !(n->pairs = calloc((size_t)host->size, sizeof *n->pairs)))
        rc = comm__fail(&n->c, COMM_ERR_NOMEM, "NCCL comm: out of memory");
    if (rc) {
        snprintf(err, errlen, "%s", n->c.err);
        nccl__destroy(n);
        return rc;
    }
    *out = &n->c;
    return 0;
}

static int nccl__split(comm *c, int color, int key, comm **out) {
    nccl__comm *n = nccl__of(c);
    comm *hchild = NULL;
    int rc = comm_split(n->host, color, key, &hchild);
    if (rc) {
        snprintf(c->err, sizeof c->err, "%s", comm_error(n->host));
        return rc;
    }
    ncclComm_t child = NULL;
    comm__watch_begin(c, "split", 0, 0);
    ncclResult_t r = ncclCommSplit(n->nc, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child,
                                   NULL);
    comm__watch_end();
    if (r != ncclSuccess) {
        comm_free(hchild);
        return nccl__nfail(c, r, "ncclCommSplit");
    }
    if (!child || !hchild) {
        if (child) ncclCommDestroy(child);
        comm_free(hchild);
        return 0;
    }
    return nccl__make(hchild, 1, child, n->device, out, c->err, sizeof c->err);
}

static void nccl__free(comm *c) { nccl__destroy(nccl__of(c)); }

static int nccl__local_rank(const comm *c, int *local_rank, int *local_size) {
    return comm_local_rank(((const nccl__comm *)c)->host, local_rank, local_size);
}

static int nccl__bcast_idle(comm *c, void *buf, size_t bytes, int root) {
    comm *h = nccl__of(c)->host;
    int rc = comm_bcast_idle(h, buf, bytes, root);
    if (rc) snprintf(c->err, sizeof c->err, "%s", comm_error(h));
    return rc;
}

static void nccl__abort(comm *c, int code) {
    nccl__comm *n = nccl__of(c);
    if (n->nc) ncclCommAbort(n->nc);
    comm_abort(n->host, code);
}

static const comm_i nccl__i = {
    /* .version = */ 1,
    /* .name = */ "nccl",
    /* .allreduce_sum = */ nccl__allreduce_sum,
    /* .allgather = */ nccl__allgather,
    /* .bcast = */ nccl__bcast,
    /* .alltoallv = */ nccl__alltoallv,
    /* .argmax = */ nccl__argmax,
    /* .send = */ nccl__send,
    /* .recv = */ nccl__recv,
    /* .barrier = */ nccl__barrier,
    /* .split = */ nccl__split,
    /* .free = */ nccl__free,
    /* .local_rank = */ nccl__local_rank,
    /* .bcast_idle = */ nccl__bcast_idle,
    /* .abort = */ nccl__abort,
};

int comm_nccl_new(comm *host, int device, comm **out, char *err, size_t errlen) {
    *out = NULL;
    char why[200] = "";
    int code = 0, ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess) {
        code = COMM_ERR_UNSUPPORTED;
        snprintf(why, sizeof why, "no GPU: cudaGetDeviceCount: %s (error %d)",
                 cudaGetErrorString(e), (int)e);
    } else if (ndev <= 0) {
        code = COMM_ERR_UNSUPPORTED;
        snprintf(why, sizeof why, "no GPU: cudaGetDeviceCount found 0 devices");
    } else if (device < 0 || device >= ndev) {
        code = COMM_ERR_ARG;
        snprintf(why, sizeof why, "GPU %d does not exist (%d found)", device, ndev);
    } else if ((e = cudaSetDevice(device)) != cudaSuccess) {
        code = COMM_ERR_NCCL;
        snprintf(why, sizeof why, "cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
    }
    /* the ranks agree before any of them enters NCCL's collective init, where a missing peer
     * would leave the others blocked */
    int32_t bad = code != 0;
    int rc = comm_allreduce_sum(host, &bad, 1, COMM_I32);
    if (rc) {
        snprintf(err, errlen, "%s", comm_error(host));
        return rc;
    }
    if (code) {
        snprintf(err, errlen, "%s: %s", comm_where(host), why);
        return code;
    }
    if (bad) {
        snprintf(err, errlen, "%s: NCCL comm not made: %d of %d ranks cannot use their GPU",
                 comm_where(host), (int)bad, host->size);
        return COMM_ERR_UNSUPPORTED;
    }

    struct { int32_t ok; ncclUniqueId id; } msg;
    memset(&msg, 0, sizeof msg);
    ncclResult_t r = ncclSuccess;
    if (host->rank == 0) {
        r = ncclGetUniqueId(&msg.id);
        msg.ok = r == ncclSuccess;
    }
    rc = comm_bcast(host, &msg, sizeof msg, 0);
    if (rc) {
        snprintf(err, errlen, "%s", comm_error(host));
        return rc;
    }
    if (!msg.ok) {
        snprintf(err, errlen, "%s: ncclGetUniqueId failed on rank 0%s%s", comm_where(host),
                 host->rank == 0 ? ": " : "", host->rank == 0 ? ncclGetErrorString(r) : "");
        return COMM_ERR_NCCL;
    }
    rc = comm__watchdog_start(err, errlen);
    if (rc) return rc;
    ncclComm_t nc = NULL;
    comm__watch_begin(host, "ncclCommInitRank", 0, 0);
    r = ncclCommInitRank(&nc, host->size, msg.id, host->rank);
    comm__watch_end();
    bad = r != ncclSuccess;
    rc = comm_allreduce_sum(host, &bad, 1, COMM_I32);
    if (rc || bad) {
        if (r != ncclSuccess)
            snprintf(err, errlen, "%s: ncclCommInitRank failed: %s", comm_where(host),
                     ncclGetErrorString(r));
        else if (rc) snprintf(err, errlen, "%s", comm_error(host));
        else snprintf(err, errlen, "%s: ncclCommInitRank failed on %d of %d ranks",
                      comm_where(host), (int)bad, host->size);
        if (nc) ncclCommAbort(nc);
        return rc ? rc : COMM_ERR_NCCL;
    }
    return nccl__make(host, 0, nc, device, out, err, errlen);
}

int comm_nccl_device(const char *pci_bus_id, int local_rank, char *err, size_t errlen) {
    int n = 0, dev = -1;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(err, errlen, "no CUDA device (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
        return -1;
    }
    if (n <= 0) {
        snprintf(err, errlen, "no CUDA device (cudaGetDeviceCount found 0 devices)");
        return -1;
    }
    if (n == 1) return 0;
    if (pci_bus_id && *pci_bus_id) {
        if (cudaDeviceGetByPCIBusId(&dev, pci_bus_id) == cudaSuccess && dev >= 0 && dev < n)
            return dev;
        (void)cudaGetLastError();   /* that GPU is not visible to this process */
    }
    return (local_rank > 0 ? local_rank : 0) % n;
}

int comm_nccl_for_backend(comm *tp_host, comm *pp_host, int device, comm **tp_out,
                          comm **pp_out, char *err, size_t errlen) {
    *tp_out = *pp_out = NULL;
    char perr[256] = "";
    int rc = tp_host ? comm_nccl_new(tp_host, device, tp_out, err, errlen) : 0;
    int rc2 = pp_host ? comm_nccl_new(pp_host, device, pp_out, perr, sizeof perr) : 0;
    if (rc || rc2) {
        if (!rc) snprintf(err, errlen, "%s", perr);
        comm_free(*tp_out);
        comm_free(*pp_out);
        *tp_out = *pp_out = NULL;
        return rc ? rc : rc2;
    }
    return 0;
}
