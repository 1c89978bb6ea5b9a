/* launch/rank.c — rank bootstrap (see rank.h). */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cli.h"
#include "comm.h"
#include "model.h"
#include "rank.h"
#include "topo.h"

/* Binds this rank per the hwloc plan, unless the launcher already narrowed our affinity (then
 * its choice stands) or more ranks share the node than it has cores. */
static void place(rank_ctx *r) {
    int lr = 0, ls = 1;
    comm_local_rank(r->world, &lr, &ls);
    char err[200];
    topo *t = NULL;
    if (topo_open(NULL, &t, err, sizeof err)) {
        snprintf(r->placement, sizeof r->placement, "unplaced (%s)", err);
        return;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    int bound = sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) < sysconf(_SC_NPROCESSORS_ONLN);
    topo_rank_plan p;
    r->local_rank = lr;
    if (topo_plan(t, lr, ls, &p, err, sizeof err)) {
        snprintf(r->placement, sizeof r->placement, "unplaced (%s)", err);
        topo_close(t);
        return;
    }
    snprintf(r->gpu_bus, sizeof r->gpu_bus, "%s", p.gpu_name);
    if (bound || ls > topo_n_cores(t) || getenv("SAMPAN_NO_BIND")) {
        snprintf(r->placement, sizeof r->placement, "%d cpus as launched (%s)", CPU_COUNT(&set),
                 bound ? "bound by the launcher" : "not bound");
    } else {
        char line[200];
        topo_describe(&p, line, sizeof line);
        const char *what = strchr(line, ':');
        if (topo_bind(t, &p, err, sizeof err) == 0)
            snprintf(r->placement, sizeof r->placement, "%s", what ? what + 2 : line);
        else
            snprintf(r->placement, sizeof r->placement, "unbound (%s)", err);
    }
    topo_close(t);
}

int rank_init(int *argc, char ***argv, int tp, int pp, int ep, const char *model_path,
              rank_ctx *r) {
    memset(r, 0, sizeof *r);
    char err[512];
    if (comm_world_init(argc, argv, 0, &r->world, err, sizeof err)) {
        cli_error("%s", err);
        return 1;
    }
    r->rank = r->world->rank;
    r->size = r->world->size;
    if (ep <= 0) ep = 1;
    if (pp <= 0) pp = tp > 0 && r->size % (tp * ep) == 0 ? r->size / (tp * ep) : 1;
    if (tp <= 0) tp = r->size / (pp * ep) > 0 ? r->size / (pp * ep) : 1;
    if (tp * pp * ep != r->size) {
        if (r->rank == 0)
            cli_error("layout: --tp %d x --ep %d x --pp %d = %d ranks, but the job has %d", tp,
                      ep, pp, tp * ep * pp, r->size);
        return 1;
    }
    r->tp = tp;
    r->pp = pp;
    r->ep = ep;
    r->stage = r->rank / (tp * ep);
    r->ep_rank = r->rank / tp % ep;
    r->tp_rank = r->rank % tp;
    r->leader_rank = (pp - 1) * tp * ep;
    r->leader = r->rank == r->leader_rank;
    /* the layout must fit the model: every rank checks the same numbers, rank 0 reports */
    model_cfg cfg;
    if (model_read_cfg(model_path, &cfg, err, sizeof err)) {
        cli_error("%s", err);
        return 1;
    }
    if (tp > 1 || pp > 1 || ep > 1) {
        size_t *lb = calloc((size_t)cfg.n_layers, sizeof *lb);
        model_shard sh;
        int bad = !lb || model_shard_plan(&cfg, lb, 0, tp, r->tp_rank, pp, r->stage, &sh, err,
                                          sizeof err) ||
                  model_shard_experts(&cfg, ep, r->ep_rank, &sh, err, sizeof err);
        free(lb);
        if (bad) {
            if (r->rank == 0) cli_error("layout: %s", err);
            return 1;
        }
    }
    /* tp group: same stage and ep rank (consecutive world ranks); ep group: same stage and tp
     * rank; pp group: same ep and tp rank */
    if ((tp > 1 && comm_split(r->world, r->stage * ep + r->ep_rank, r->tp_rank, &r->tp_comm)) ||
        (ep > 1 && comm_split(r->world, r->stage * tp + r->tp_rank, r->ep_rank, &r->ep_comm)) ||
        (pp > 1 && comm_split(r->world, r->ep_rank * tp + r->tp_rank, r->stage, &r->pp_comm))) {
        cli_error("%s", comm_error(r->world));
        return 1;
    }
    if (r->size > 1) place(r);
    return 0;
}

int rank_agree(rank_ctx *r, int ok) {
    if (r->size == 1) return ok;
    int32_t bad = !ok;
    if (comm_allreduce_sum(r->world, &bad, 1, COMM_I32)) {
        cli_error("%s", comm_error(r->world));
        return 0;
    }
    return bad == 0;
}

model *rank_load_model(rank_ctx *r, const char *path, int n_threads, int kv_type,
                       const char *backend) {
    char err[512];
    const char *mix = getenv("SAMPAN_TP_REDUCE"), *pack = getenv("SAMPAN_PACK");
    /* a device backend: this rank's GPU (nearest by topo, within CUDA_VISIBLE_DEVICES), and
     * NCCL over its tp / pp groups for the forward pass's device buffers */
    int device = -1;
    if (backend && strcmp(backend, "cpu") && (strcmp(backend, "auto") || backend_cuda_devices() > 0)) {
        device = comm_nccl_device(r->gpu_bus, r->local_rank, err, sizeof err);  /* -1: backend_new says why */
        if (device >= 0 && (r->tp_comm || r->pp_comm || r->ep_comm)) {
            int rc = comm_nccl_for_backend(r->tp_comm, r->pp_comm, device, &r->tp_nccl,
                                           &r->pp_nccl, err, sizeof err);
            if (!rc && r->ep_comm) rc = comm_nccl_new(r->ep_comm, device, &r->ep_nccl, err, sizeof err);
            if (rc) cli_error("%s: %s", comm_where(r->world), err);
            if (!rank_agree(r, rc == 0)) {
                rank_finish(r);
                return NULL;
            }
        }
    }
    model_opts mo = { .n_threads = n_threads, .tp = r->tp, .pp = r->pp, .tp_rank = r->tp_rank,
                      .stage = r->stage, .tp_comm = r->tp_comm, .pp_comm = r->pp_comm,
                      .tp_dev_comm = r->tp_nccl, .pp_dev_comm = r->pp_nccl,
                      .tp_allreduce = mix && !strcmp(mix, "allreduce"),
                      .no_pack = pack && !strcmp(pack, "0"), .backend = backend,
                      .device = device, .kv_type = kv_type, .ep = r->ep, .ep_rank = r->ep_rank,
                      .ep_comm = r->ep_comm, .ep_dev_comm = r->ep_nccl };
    model *m = NULL;
    int loaded = model_load(path, &mo, &m, err, sizeof err) == 0;
    if (!loaded) cli_error("%s%s%s", r->size > 1 ? comm_where(r->world) : "", r->size > 1 ? ": " : "", err);
    if (!rank_agree(r, loaded)) {
        model_free(m);
        rank_finish(r);
        return NULL;
    }
    rank_layout(r, m);
    return m;
}

void rank_layout(rank_ctx *r, const model *m) {
    if (r->size == 1) return;
    enum { LINE = 512 };
    char line[LINE];
    const model_shard *sh = &m->shard;
    char experts[48] = "";
    if (m->cfg.n_expert)
        snprintf(experts, sizeof experts, " ep %d/%d experts %d-%d", sh->ep_rank, sh->ep,
                 sh->expert0, sh->expert0 + sh->n_expert - 1);
    snprintf(line, sizeof line,
             "rank %d: stage %d/%d layers %d-%d, tp %d/%d heads %d-%d kv %d-%d ffn %d-%d vocab "
             "%d-%d%s, %.1f MiB; %s",
             r->rank, sh->stage, sh->pp, sh->layer0, sh->layer1 - 1, sh->tp_rank, sh->tp,
             sh->head0, sh->head0 + sh->n_heads - 1, sh->kv_head0,
             sh->kv_head0 + sh->n_kv_heads - 1, sh->ffn0, sh->ffn0 + sh->n_ffn - 1, sh->vocab0,
             sh->vocab0 + sh->n_vocab - 1, experts, (double)m->weight_bytes / (1 << 20),
             r->placement);
    char *all = r->rank == 0 ? malloc((size_t)LINE * r->size) : NULL;
    char *recv = all ? all : malloc((size_t)LINE * r->size);
    if (recv && comm_allgather(r->world, line, recv, LINE, COMM_U8) == 0 && r->rank == 0)
        for (int i = 0; i < r->size; i++) fprintf(stderr, "sampan: %s\n", recv + (size_t)i * LINE);
    free(recv);
}

void rank_finish(rank_ctx *r) {
    comm_free(r->tp_nccl);   /* before the host comms they were made over */
    comm_free(r->pp_nccl);
    comm_free(r->ep_nccl);
    r->tp_nccl = r->pp_nccl = r->ep_nccl = NULL;
    comm_free(r->tp_comm);
    comm_free(r->pp_comm);
    comm_free(r->ep_comm);
    r->tp_comm = r->pp_comm = r->ep_comm = NULL;
    comm_world_finalize();
}
