/* launch/cmd_topo.c — `sampan topo`: the placement plan (runtime/topo.h) for this node.
 *
 *   sampan topo [--topology FILE.xml | --synthetic "pack:2 numa:2 ..."] [--ranks N] [--bind]
 *
 * With --ranks N it prints the plan for N local ranks and starts nothing. Otherwise the rank
 * learns its node-local rank and count from the launcher's environment (Open MPI's mpirun,
 * MPICH's hydra, or srun), and local rank 0 of each node prints the node's whole plan as one
 * block (every rank could compute it: the plan is a function of the topology and the count).
 * --bind makes every rank bind itself to its share and print the affinity the kernel reports
 * afterwards, one line per rank, so a launch can be checked for real placement.
 *
 * The launcher environment is read rather than MPI because this command must run where MPI
 * cannot (inside a batch script, before srun) and must not pay MPI_Init to print a plan.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "topo.h"

typedef struct {
    int local_rank, local_size, rank;   /* rank: the global rank, -1 when unknown */
    const char *via;                    /* which launcher's variables were used */
} topo_cmd_where;

static int topo_cmd__env_int(const char *name, int *out) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 1 << 24) return 0;
    *out = (int)v;
    return 1;
}

/* Slurm's tasks-per-node list, e.g. "2(x3),1": the count of node `node` (0-based) */
static int topo_cmd__slurm_tasks(const char *list, int node, int *out) {
    const char *s = list;
    int seen = 0;
    while (s && *s) {
        char *end;
        long n = strtol(s, &end, 10), rep = 1;
        if (end == s || n < 0) return 0;
        s = end;
        if (!strncmp(s, "(x", 2)) {
            rep = strtol(s + 2, &end, 10);
            if (end == s + 2 || *end != ')' || rep < 1) return 0;
            s = end + 1;
        }
        if (node < seen + rep) {
            *out = (int)n;
            return 1;
        }
        seen += (int)rep;
        if (*s == ',') s++;
        else if (*s) return 0;
    }
    return 0;
}

static void topo_cmd__locate(topo_cmd_where *w) {
    *w = (topo_cmd_where){ 0, 1, -1, NULL };
    if (topo_cmd__env_int("OMPI_COMM_WORLD_LOCAL_RANK", &w->local_rank) &&
        topo_cmd__env_int("OMPI_COMM_WORLD_LOCAL_SIZE", &w->local_size)) {
        topo_cmd__env_int("OMPI_COMM_WORLD_RANK", &w->rank);
        w->via = "mpirun";
        return;
    }
    if (topo_cmd__env_int("MPI_LOCALRANKID", &w->local_rank) &&
        topo_cmd__env_int("MPI_LOCALNRANKS", &w->local_size)) {
        topo_cmd__env_int("PMI_RANK", &w->rank);
        w->via = "hydra";
        return;
    }
    int node = 0;
    const char *tpn = getenv("SLURM_STEP_TASKS_PER_NODE");
    if (!tpn || !*tpn) tpn = getenv("SLURM_TASKS_PER_NODE");
    topo_cmd__env_int("SLURM_NODEID", &node);
    if (topo_cmd__env_int("SLURM_LOCALID", &w->local_rank) &&
        topo_cmd__slurm_tasks(tpn, node, &w->local_size) && w->local_rank < w->local_size) {
        topo_cmd__env_int("SLURM_PROCID", &w->rank);
        w->via = getenv("SLURM_STEP_ID") ? "srun" : "slurm batch";
        return;
    }
    *w = (topo_cmd_where){ 0, 1, -1, NULL };
}

static void topo_cmd__usage(FILE *f) {
    fputs("usage: sampan topo [--topology FILE.xml | --synthetic DESC] [--ranks N] [--bind]\n"
          "  prints where each node-local rank runs: its cores, NUMA node and nearest GPU.\n"
          "  --topology FILE.xml  a node described by hwloc XML (lstopo --of xml)\n"
          "  --synthetic DESC     a node in hwloc's synthetic syntax,\n"
          "                       e.g. \"pack:2 numa:2 core:16 pu:2\"\n"
          "                       (default: this machine, or HWLOC_XMLFILE / HWLOC_SYNTHETIC)\n"
          "  --ranks N            plan for N ranks on the node, without a launcher\n"
          "  --bind               each rank binds itself to its plan and prints its affinity\n"
          "Under mpirun or srun, local rank 0 of each node prints the node's plan.\n",
          f);
}

/* the node's plan as one block, written with one call so nodes' blocks do not interleave */
static int topo_cmd__print_plan(const topo *t, const char *host, int size, const char *via) {
    char err[256];
    size_t cap = 256 + (size_t)size * 400, len = 0;
    char *out = malloc(cap);
    if (!out) {
        cli_error("topo: out of memory for %d ranks", size);
        return 1;
    }
    int nc = topo_n_cores(t), nn = topo_n_numa(t), ng = topo_n_gpus(t);
    len += (size_t)snprintf(out + len, cap - len,
                            "node %s (%s): %d cores, %d NUMA node%s, %d GPU%s; "
                            "%d local rank%s%s%s\n",
                            host, topo_source(t), nc, nn, nn == 1 ? "" : "s", ng,
                            ng == 1 ? "" : "s", size, size == 1 ? "" : "s", via ? " via " : "",
                            via ? via : "");
    if (size > nc)
        len += (size_t)snprintf(out + len, cap - len,
                                "note: %d ranks on %d cores: neighbouring ranks share a core\n",
                                size, nc);
    for (int r = 0; r < size; r++) {
        topo_rank_plan p;
        if (topo_plan(t, r, size, &p, err, sizeof err) != TOPO_OK) {
            cli_error("%s", err);
            free(out);
            return 1;
        }
        int n = topo_describe(&p, out + len, cap - len - 1);
        if (n < 0 || (size_t)n >= cap - len - 1) {
            cli_error("topo: plan of rank %d does not fit the output buffer", r);
            free(out);
            return 1;
        }
        len += (size_t)n;
        out[len++] = '\n';
    }
    fwrite(out, 1, len, stdout);
    fflush(stdout);
    free(out);
    return 0;
}

static int topo_cmd__bind(const topo *t, const char *host, const topo_cmd_where *w) {
    char err[256];
    topo_rank_plan p;
    if (topo_plan(t, w->local_rank, w->local_size, &p, err, sizeof err) != TOPO_OK) {
        cli_error("%s: %s", host, err);
        return 1;
    }
    int rc = topo_bind(t, &p, err, sizeof err);
    if (rc < 0) {
        cli_error("%s rank %d: %s", host, w->rank, err);
        return 1;
    }
    char rank[32] = "-";
    if (w->rank >= 0) snprintf(rank, sizeof rank, "%d", w->rank);
    if (rc == TOPO_NOT_BOUND) {
        printf("%s rank %s (local %d): %s\n", host, rank, w->local_rank, err);
        return 0;
    }
    /* the kernel's view, as a list of ranges like the plan's */
    cpu_set_t now;
    char aff[512] = "?";
    size_t len = 0;
    if (sched_getaffinity(0, sizeof now, &now) == 0)
        for (int c = 0; c < CPU_SETSIZE && len + 24 < sizeof aff; c++) {
            if (!CPU_ISSET(c, &now)) continue;
            int e = c;
            while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &now)) e++;
            len += (size_t)(e > c ? snprintf(aff + len, sizeof aff - len, "%s%d-%d",
                                             len ? "," : "", c, e)
                                  : snprintf(aff + len, sizeof aff - len, "%s%d",
                                             len ? "," : "", c));
            c = e;
        }
    printf("%s rank %s (local %d): bound to cpus %s, affinity now %s\n", host, rank,
           w->local_rank, p.cpuset, aff);
    return 0;
}

int cmd_topo(int argc, char **argv) {
    const char *xml = NULL, *synth = NULL;
    long ranks = 0;
    int bind = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            topo_cmd__usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--bind")) {
            bind = 1;
            continue;
        }
        if (strcmp(a, "--topology") && strcmp(a, "--synthetic") && strcmp(a, "--ranks")) {
            cli_error("topo: unknown option '%s' (run 'sampan topo --help')", a);
            return 2;
        }
        if (!(v = cli_arg(argc, argv, &i))) return 2;
        if (!strcmp(a, "--topology")) xml = v;
        else if (!strcmp(a, "--synthetic")) synth = v;
        else if (cli_int(a, v, 1, 4096, &ranks)) return 2;
    }
    if (xml && synth) {
        cli_error("topo: --topology and --synthetic exclude each other");
        return 2;
    }
    char err[512];
    topo *t = NULL;
    int rc = synth ? topo_open_synthetic(synth, &t, err, sizeof err)
                   : topo_open(xml, &t, err, sizeof err);
    if (rc != TOPO_OK) {
        cli_error("%s", err);
        return rc == TOPO_ERR_ARG ? 2 : 1;
    }
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    topo_cmd_where w;
    if (ranks > 0) w = (topo_cmd_where){ 0, (int)ranks, -1, NULL };
    else topo_cmd__locate(&w);
    int status = 0;
    if (w.local_rank == 0) status = topo_cmd__print_plan(t, host, w.local_size, w.via);
    if (!status && bind) {
        if (ranks > 0) {
            cli_error("topo: --bind binds the running rank; it cannot be combined with --ranks");
            status = 2;
        } else status = topo_cmd__bind(t, host, &w);
    }
    topo_close(t);
    return status;
}
