/* launch/rank.h — rank bootstrap: from `mpirun`/`srun` (or a plain process) to a placed rank
 * that knows its tensor-parallel group and pipeline stage.
 *
 * Life cycle (every rank runs it, in this order):
 *   rank_init      comm_world_init; tp x ep x pp layout checked against the world size and the
 *                  model (rank 0 reports a bad layout once, with the numbers; every rank then
 *                  exits non-zero); world split into tp groups (consecutive ranks: a tp group
 *                  stays inside a node under the usual by-slot mapping) and pp groups; the rank
 *                  bound to its cores by the hwloc plan unless the launcher already bound it.
 *   rank_agree     after each rank's own fallible step (loading its slice): all ranks learn
 *                  whether every rank succeeded, so none is left waiting in a collective.
 *   rank_layout    rank 0 prints which rank owns which layers, slices and cores.
 *   rank_finish    frees the sub-communicators and ends MPI.
 * World rank = (stage * ep + ep_rank) * tp + tp_rank: a stage's ranks are ep groups of tp
 * consecutive ranks. The tp group splits heads and FFN columns; the ep group (same stage and
 * tp rank) splits the routed experts of MoE layers and replicates everything else; the pp
 * group (same ep and tp rank) chains the stages. The leader (who samples, prints and answers)
 * is the first rank of the last stage.
 */
#ifndef SAMPAN_RANK_H
#define SAMPAN_RANK_H

#include <stddef.h>

struct comm;
struct model;

typedef struct {
    struct comm *world, *tp_comm, *pp_comm, *ep_comm;
    int tp, pp, ep, tp_rank, stage, ep_rank;
    int rank, size;
    int leader;           /* 1 on the leader */
    int leader_rank;      /* its world rank */
    char placement[300];  /* this rank's cores, e.g. "cores 0-15 (16) numa 0 gpu -1 cpus 0-15" */
    int local_rank;       /* among the ranks of this node */
    char gpu_bus[64];     /* PCI bus id of the GPU topo placed this rank next to, or "" */
    struct comm *tp_nccl, *pp_nccl, *ep_nccl; /* the tp / pp / ep groups over device memory (NCCL), made by
                                         rank_load_model for a device backend; else NULL */
} rank_ctx;

/* tp, pp <= 0: chosen from the world size (pp = 1 unless given; tp = size / (pp ep)); ep <= 0:
 * 1 (expert parallelism only when asked: --ep).
 * Returns 0, or 1 when this rank must exit with status 1 (the message was printed by rank 0
 * or by this rank). */
int rank_init(int *argc, char ***argv, int tp, int pp, int ep, const char *model_path,
              rank_ctx *r);
/* ok: this rank's step succeeded; returns 1 if every rank's did. Collective. */
int rank_agree(rank_ctx *r, int ok);
/* Loads this rank's slice of the model (SAMPAN_TP_REDUCE=allreduce picks Megatron's
 * all-reduce), agrees with every rank that all loaded, and prints the layout. n_threads <= 0:
 * the affinity mask's CPUs; kv_type: QT_F32, QT_F16 or QT_BF16 (model_opts.kv_type); backend:
 * "cpu", "cuda" or "auto" (NULL: cpu). Returns the model, or NULL after rank_finish when any
 * rank failed (its message printed). */
struct model *rank_load_model(rank_ctx *r, const char *path, int n_threads, int kv_type,
                              const char *backend);
/* rank 0 prints one line per rank to stderr (collective) */
void rank_layout(rank_ctx *r, const struct model *m);
void rank_finish(rank_ctx *r);

#endif
