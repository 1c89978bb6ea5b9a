/* runtime/comm.h — the communicator: collectives and point-to-point between ranks.
 *
 * One interface (a vtable, like backend.h) with three implementations:
 *   comm_self.c  a single process (no MPI): every collective is a copy or a no-op;
 *   comm_mpi.c   Open MPI (CPU ranks), sub-communicators by MPI_Comm_split;
 *   comm_nccl.c  NCCL (GPU ranks; device buffers), its unique id broadcast over the MPI comm
 *                it is built on. Compiled and linked when the CUDA toolkit is found; used only
 *                where a GPU exists.
 * Every call returns 0 or a COMM_ERR_* code and writes a one-line message (with host and rank)
 * to the comm's error buffer (comm_error()). A failure on one rank must become an error on every
 * rank: collectives run under a watchdog (comm_set_timeout) and an unrecoverable error aborts
 * the whole job (comm_abort) instead of leaving peers blocked.
 *
 * Life cycle: comm_world_init -> split / collectives ... -> comm_free (children first) ->
 * comm_world_finalize.
 *
 * Calling convention. Callers use the comm_* functions below (comm_allreduce_sum, ...): they
 * check the arguments every implementation shares (dtype, root, peer, tag, NULL buffers,
 * alltoallv's overlapping or overflowing blocks) and then call the vtable. Every collective
 * must be entered by every rank of the comm with the same count / root / dtype; a rank that
 * never arrives is caught by the watchdog.
 *
 * The watchdog. A blocking call (collective, send, recv, barrier, split) runs under a watchdog
 * thread with a deadline of comm_set_timeout seconds (default 30, env SAMPAN_COMM_TIMEOUT) plus
 * the call's bytes at 100 MB/s (so a huge message is not taken for a stuck peer): past it the
 * rank prints "sampan: host:rank N: <op> timed out after 30 s (a peer is dead or stuck)" and
 * aborts the job. After a quarter of a second of waiting it also looks, that often, at the
 * node-local peers (pid and start time in /proc) and aborts at once when one has exited.
 * Before the abort it calls the fail hook (comm_set_fail_hook): the process's chance to tell
 * its own clients (the serving leader ends every open stream with an error). A wait the
 * watchdog can interrupt (comm_bcast_idle, NCCL's stream waits) returns COMM_ERR_TIMEOUT or
 * COMM_ERR_PEER instead (no hook: the caller learns of it as an error), and so does every
 * such wait after it; the caller ends the job (comm_abort), and the watchdog does 10 s later
 * should it not.
 * mpirun (Open MPI 4.1) and srun (with PMIx) end the job by themselves about 1 s after a rank
 * is killed; the watchdog covers launchers that do not, a peer that is alive but stuck, and
 * ranks on other nodes (through the deadline).
 * Ranks that wait an unbounded time on purpose (for the next request) use comm_bcast_idle: no
 * deadline, but a dead node-local peer is still noticed. A rank busy on purpose for longer than
 * the timeout while its peers wait in a collective (loading a large model, say) needs the same,
 * or a longer timeout around it (comm_get_timeout / comm_set_timeout).
 * Errors that are returned (COMM_ERR_MPI, COMM_ERR_NCCL) leave the comm unusable: the caller
 * prints comm_error() and calls comm_abort.
 *
 * Threads: one thread at a time may call into the comms (the caller serialises). MPI runs at
 * MPI_THREAD_MULTIPLE only so that the watchdog thread may call MPI_Abort.
 */
#ifndef SAMPAN_COMM_H
#define SAMPAN_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { COMM_F32 = 0, COMM_BF16 = 1, COMM_I32 = 2, COMM_U8 = 3 } comm_dtype;

/* status codes: name, value, text for comm_strerror */
#define COMM_ERRORS(X)                                                 \
    X(COMM_OK, 0, "ok")                                                \
    X(COMM_ERR_ARG, -1, "invalid argument")                            \
    X(COMM_ERR_MPI, -2, "MPI error")                                   \
    X(COMM_ERR_NCCL, -3, "NCCL or CUDA error")                         \
    X(COMM_ERR_TIMEOUT, -4, "timed out")                               \
    X(COMM_ERR_NOMEM, -5, "out of memory")                             \
    X(COMM_ERR_UNSUPPORTED, -6, "not supported by this build or machine")    \
    X(COMM_ERR_PEER, -7, "a peer rank has exited")

#define COMM__ENUM(name, value, text) name = value,
enum { COMM_ERRORS(COMM__ENUM) };
#undef COMM__ENUM

typedef struct comm comm;

typedef struct {
    int version;   /* 1 */
    const char *name;   /* "self", "mpi", "nccl" */
    /* in place: buf (count) = sum over ranks; F32, BF16 and I32 (BF16 summed in f32, rounded
     * once; see comm_nccl.c for NCCL's rounding) */
    int (*allreduce_sum)(comm *c, void *buf, size_t count, comm_dtype t);
    /* recv (size * count) = concatenation of every rank's send (count), in rank order; send may
     * be recv + rank * count (in place) */
    int (*allgather)(comm *c, const void *send, void *recv, size_t count, comm_dtype t);
    int (*bcast)(comm *c, void *buf, size_t bytes, int root);
    /* recv + recv_displs[q] (recv_counts[q] elements) = what rank q sent this rank, for every
     * q; arrays of size entries, counts and displacements in elements of t; checked by
     * comm_alltoallv (no aliasing, send_counts[rank] == recv_counts[rank]) */
    int (*alltoallv)(comm *c, const void *send, const size_t *send_counts,
                     const size_t *send_displs, void *recv, const size_t *recv_counts,
                     const size_t *recv_displs, comm_dtype t);
    /* (value, index) pairs: the largest value wins, ties to the smallest index (greedy
     * sampling over a vocabulary split across ranks). Host pointers for every implementation;
     * values must not be NaN. */
    int (*argmax)(comm *c, float *value, int32_t *index);
    /* blocking; tag in 0..32767 (NCCL ignores tags: messages between a pair arrive in order);
     * recv fails when the message has another length than `bytes` */
    int (*send)(comm *c, const void *buf, size_t bytes, int peer, int tag);
    int (*recv)(comm *c, void *buf, size_t bytes, int peer, int tag);
    int (*barrier)(comm *c);
    /* ranks with the same color form a new comm, ordered by key (MPI_Comm_split); a rank with
     * color < 0 joins none and gets *out = NULL */
    int (*split)(comm *c, int color, int key, comm **out);
    void (*free)(comm *c);
    /* optional slots (NULL: the dispatcher's default in brackets) */
    int (*local_rank)(const comm *c, int *local_rank, int *local_size);   /* [0 of 1] */
    int (*bcast_idle)(comm *c, void *buf, size_t bytes, int root);  /* [bcast] */
    void (*abort)(comm *c, int code);                                /* [exit(code)] */
} comm_i;

struct comm {
    const comm_i *i;
    int rank, size;
    void *ctx;
    char err[256];
};

/* Starts MPI when launched by mpirun or srun (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK or
 * PMI_SIZE in the environment) or when force_mpi is set; otherwise returns a "self" comm
 * of size 1 without touching MPI. srun with several tasks but no PMI (srun --mpi=none) is an
 * error: each task would otherwise run the whole job alone. Reads SAMPAN_COMM_TIMEOUT
 * (seconds, the default for comm_set_timeout) and SAMPAN_COMM_MAX_COUNT (elements per MPI
 * call, default INT_MAX; tests lower it to exercise the chunking of large messages).
 * Called once per process. */
int comm_world_init(int *argc, char ***argv, int force_mpi, comm **world, char *err,
                    size_t errlen);
/* frees the world comm (if not freed yet) after a barrier, and ends MPI if we started it */
void comm_world_finalize(void);
/* ends every rank of the job with this exit code (MPI_Abort; exit() for self) */
void comm_abort(comm *c, int code);
/* Called once per process, on the watchdog's thread, when a blocking call (one that cannot be
 * made to return) is found stuck or a node-local peer dead, before the job is ended; msg is
 * the line printed ("host:rank N: ...").
 * It should tell the process's clients and return within about a second: mpirun kills every
 * rank about 2 s after one dies. NULL: none (the default). Setting another (or NULL) waits
 * for a call in progress to return, so the old arg may be freed afterwards. */
typedef void (*comm_fail_fn)(void *arg, const char *msg);
void comm_set_fail_hook(comm_fail_fn fn, void *arg);
/* 1, with "host:rank N: rank P (pid Q) on this node has exited (a peer is dead)" in msg, when
 * a node-local peer of the world has exited (the watchdog's check, on demand: e.g. when a
 * launcher's SIGTERM may mean a peer died); 0 otherwise, and always for peers on other nodes
 * (only the collective timeout finds those). */
int comm_peer_dead(char *msg, size_t len);
/* host name and rank, for error lines: "host:rank 3" (the rank in the world comm) */
const char *comm_where(const comm *c);
/* seconds a collective may block (plus its bytes at 100 MB/s) before the job is aborted with
 * a message (default 30; <= 0 disables) */
void comm_set_timeout(double seconds);
double comm_get_timeout(void);
/* the node-local rank and count (MPI_Comm_split_type SHARED, computed when the comm was
 * made, so this call is local); 0/1 for self */
int comm_local_rank(const comm *c, int *local_rank, int *local_size);
/* an NCCL comm over the same ranks as `mpi` (one GPU per rank); COMM_ERR_UNSUPPORTED when
 * built without CUDA or when no GPU is present (callers report a skip). Collective over
 * `mpi`, which must outlive the NCCL comm. */
int comm_nccl_new(comm *mpi, int device, comm **out, char *err, size_t errlen);
/* The CUDA device of a GPU rank: when this process sees one device, that one (the launcher
 * chose: srun --gpus-per-task, CUDA_VISIBLE_DEVICES); else the GPU topo_plan picked, by its
 * PCI bus id (topo_rank_plan.gpu_name) when this process can see it; else local_rank modulo
 * the visible devices (local_rank: comm_local_rank, i.e. SLURM_LOCALID under srun). -1 with a
 * message naming the missing device when there is none (built without CUDA, no driver). */
int comm_nccl_device(const char *pci_bus_id, int local_rank, char *err, size_t errlen);
/* NCCL comms over a rank's tensor and pipeline groups, for a device backend: *tp_out over
 * tp_host and *pp_out over pp_host (NULL in, NULL out), both on `device`. Collective over each
 * group; both are attempted even when the first fails, so that no group waits for a rank that
 * gave up. Returns 0 or the first error (both outputs NULL then): the caller agrees over the
 * world (one failed rank fails all) before using them. The host comms must outlive them. With
 * these comms, model.c's collectives take device buffers (NCCL) and host ones (forwarded to
 * the host comm: model_logits_full). */
int comm_nccl_for_backend(comm *tp_host, comm *pp_host, int device, comm **tp_out,
                          comm **pp_out, char *err, size_t errlen);

/* dispatchers: argument checks shared by every implementation, then the vtable */
int comm_allreduce_sum(comm *c, void *buf, size_t count, comm_dtype t);
int comm_allgather(comm *c, const void *send, void *recv, size_t count, comm_dtype t);
int comm_bcast(comm *c, void *buf, size_t bytes, int root);
/* All-to-all with variable counts (MPI_Alltoallv), for expert parallelism: rank r sends
 * send_counts[q] elements of t from send + send_displs[q] to rank q, and receives
 * recv_counts[q] elements from rank q into recv + recv_displs[q]. Every array has c->size
 * entries; counts and displacements are in elements of t (any dtype: nothing is summed).
 * send_counts[q] on rank r must equal recv_counts[r] on rank q (the caller agrees on them,
 * e.g. by an earlier alltoallv of the counts); a mismatch is the caller's bug: MPI reports a
 * smaller recv count as truncation and leaves the tail of a larger block unwritten, NCCL
 * waits for bytes that never come (the watchdog ends it). Zero counts are allowed (a NULL
 * buffer too, when all its counts are 0). The blocks may sit anywhere in their buffer, in any
 * order, but the send and recv ranges must not overlap (no in-place form). The caller owns
 * both buffers and the four arrays; the arrays and send are only read during the call, and
 * recv is complete when it returns.
 * Host buffers (self, MPI); device buffers for NCCL (host ones go to its host comm: all
 * ranks must pass the same kind; a rank whose send and recv are both NULL takes NCCL's path).
 * MPI takes int counts: a count or displacement above INT_MAX is COMM_ERR_ARG on the rank
 * that holds it (its peers then meet the watchdog: the caller aborts, as after any error). */
int comm_alltoallv(comm *c, const void *send, const size_t *send_counts,
                   const size_t *send_displs, void *recv, const size_t *recv_counts,
                   const size_t *recv_displs, comm_dtype t);
int comm_argmax(comm *c, float *value, int32_t *index);
int comm_send(comm *c, const void *buf, size_t bytes, int peer, int tag);
int comm_recv(comm *c, void *buf, size_t bytes, int peer, int tag);
int comm_barrier(comm *c);
int comm_split(comm *c, int color, int key, comm **out);
void comm_free(comm *c);
/* A broadcast for ranks that wait an unbounded time on purpose (workers waiting for the next
 * request from rank `root`): the non-root ranks wait with no deadline, sleeping between polls
 * (about 10 ms once idle for a second), yet abort when a node-local peer has exited; the root
 * sends under the normal deadline. buf is host memory for every implementation (the NCCL comm
 * forwards to the comm it was built on). */
int comm_bcast_idle(comm *c, void *buf, size_t bytes, int root);

const char *comm_strerror(int code);

static inline const char *comm_error(const comm *c) { return c->err; }

/* bytes per element; 0 for an unknown dtype */
static inline size_t comm_dtype_size(comm_dtype t) {
    switch (t) {
    case COMM_F32: case COMM_I32: return 4;
    case COMM_BF16: return 2;
    case COMM_U8: return 1;
    }
    return 0;
}

#endif
