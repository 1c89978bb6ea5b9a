/* runtime/topo.h — where each rank and its threads live (hwloc).
 *
 * Given a node's topology (the real one, HWLOC_SYNTHETIC / HWLOC_XMLFILE, an XML file passed
 * with --topology, or a synthetic description) and the node-local rank count, topo_plan gives
 * each local rank an equal, contiguous share of the node's cores, inside one NUMA node where the
 * counts allow, and the GPU nearest that share when the node has GPUs (PCI devices of NVIDIA/AMD
 * vendor ids, or OS devices hwloc's CUDA/NVML/RSMI plugins report). topo_bind binds the process
 * (the calling thread and every thread it starts later, i.e. the worker pool) to the plan.
 *
 * The plan, for R = local_size ranks on a node of C cores in D NUMA nodes that hold cores:
 *   1. R a multiple of D: R/D ranks per NUMA node, each NUMA node's cores split between them;
 *      every share lies in one NUMA node.
 *   2. D a multiple of R: each rank takes D/R whole, consecutive NUMA nodes (numa_node -1 when
 *      that is more than one).
 *   3. otherwise: the C cores in logical order split into R contiguous shares; a share that
 *      crosses a NUMA boundary reports numa_node -1.
 *   Shares differ by at most one core (the first ranks take the extra cores). More ranks than
 *   cores: each rank gets one core and neighbouring ranks share it (core r * C / R).
 *   GPUs are numbered in PCI bus id order (CUDA_DEVICE_ORDER=PCI_BUS_ID numbering). Ranks are
 *   served in order; each takes, among the GPUs whose locality intersects its cores (all GPUs
 *   if none does), the one fewest earlier ranks took, lowest index on ties. So ranks of one NUMA
 *   node take that node's GPUs round-robin: 8 ranks on 4 NUMA nodes with 2 GPUs each get 8
 *   distinct local GPUs; 4 ranks get the first GPU of their NUMA node; 16 ranks share each GPU
 *   by two.
 * Memory is not bound: pages land on the NUMA node of the bound thread that first touches them.
 *
 * Life cycle: topo_open / topo_open_synthetic -> topo_plan / topo_bind / topo_describe ->
 * topo_close.
 */
#ifndef SAMPAN_TOPO_H
#define SAMPAN_TOPO_H

#include <stddef.h>

enum { TOPO_OK = 0, TOPO_NOT_BOUND = 1, TOPO_ERR_ARG = -1, TOPO_ERR_HWLOC = -2,
       TOPO_ERR_NOMEM = -3 };

typedef struct topo topo;

typedef struct {
    int local_rank;
    int n_cores;           /* cores assigned */
    int first_core;        /* logical index of the first assigned core */
    int numa_node;         /* logical index of the NUMA node holding them, -1 if they span */
    int gpu;               /* index of the nearest GPU among the node's GPUs, -1 if none */
    char cpuset[256];      /* PUs (OS indexes) as a list string, e.g. "0-15" */
    char gpu_name[64];     /* PCI bus id of that GPU ("0000:c1:00.0"), or "" */
} topo_rank_plan;

/* xml_path: NULL = this machine (or what HWLOC_SYNTHETIC / HWLOC_XMLFILE say).
 * Returns TOPO_OK or a TOPO_ERR_* code with a message naming the file. */
int topo_open(const char *xml_path, topo **out, char *err, size_t errlen);
/* a node described by hwloc's synthetic syntax, e.g. "pack:2 numa:2 l3:2 core:8 pu:2" */
int topo_open_synthetic(const char *desc, topo **out, char *err, size_t errlen);
void topo_close(topo *t);
int topo_n_cores(const topo *t);
/* NUMA nodes that hold cores (memory-only nodes and duplicates of one cpuset not counted) */
int topo_n_numa(const topo *t);
int topo_n_gpus(const topo *t);
int topo_is_this_system(const topo *t);
/* "this system", "synthetic 'pack:2 ...'", "XML file.xml" */
const char *topo_source(const topo *t);
/* plan for local rank `local_rank` of `local_size` on this node; TOPO_ERR_ARG when
 * local_rank is not in [0, local_size) */
int topo_plan(const topo *t, int local_rank, int local_size, topo_rank_plan *out, char *err,
              size_t errlen);
/* bind the process to the plan's PUs (HWLOC_CPUBIND_PROCESS: threads started afterwards
 * inherit it, so bind before creating the worker pool). Returns TOPO_OK, TOPO_NOT_BOUND with a
 * message when the topology is not this machine's (nothing done), or TOPO_ERR_*. */
int topo_bind(const topo *t, const topo_rank_plan *p, char *err, size_t errlen);
/* one line per rank, no newline:
 *   "rank 3: cores 48-63 (16) numa 3 gpu 3 (0000:c1:00.0) cpus 96-127"
 *   "rank 1: cores 1 (1) numa 0 gpu -1 cpus 1"
 * Returns what snprintf returns. */
int topo_describe(const topo_rank_plan *p, char *buf, size_t len);

#endif
