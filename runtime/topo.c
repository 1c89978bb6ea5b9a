/* runtime/topo.c — placement of a node's ranks on cores, NUMA nodes and GPUs (hwloc 2).
 *
 * topo_open loads a topology with I/O devices kept (so PCI GPUs are visible), then indexes
 * what the plan needs: the cores in logical order, the NUMA "domains" (NUMA nodes with a
 * non-empty cpuset, one per distinct cpuset) as ranges of those cores, and the GPUs in PCI bus
 * order with their locality. topo_plan is pure arithmetic over that index (the rules are in
 * topo.h); topo_bind is the only call that touches the running process.
 */
#include "topo.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    hwloc_obj_t obj;            /* PCI device, or an OS device without a PCI parent */
    hwloc_cpuset_t locality;    /* cpuset of its nearest non-I/O ancestor */
    char name[64];              /* PCI bus id, or the OS device name */
    unsigned long long key;     /* sort key: domain, bus, dev, func */
} topo__gpu;

typedef struct {
    int numa_index;             /* logical index of the NUMA node */
    int first_core, n_cores;    /* its cores, a contiguous logical range */
    hwloc_const_cpuset_t cpuset;
} topo__domain;

struct topo {
    hwloc_topology_t h;
    hwloc_obj_type_t core_type; /* HWLOC_OBJ_CORE, or PU when the topology has no cores */
    int n_cores;
    int n_domains;
    int domains_ok;             /* every core lies in exactly one domain, domains contiguous */
    topo__domain *domains;
    int n_gpus;
    topo__gpu *gpus;
    char source[300];
};

/* ---- GPU discovery ------------------------------------------------------------------------ */

static int topo__pci_is_gpu(const struct hwloc_pcidev_attr_s *p) {
    int vendor = p->vendor_id == 0x10de || p->vendor_id == 0x1002;
    int cls = p->class_id == 0x0300 || p->class_id == 0x0302 || p->class_id == 0x0380 ||
              p->class_id == 0x1200;
    return vendor && cls;
}

/* compute devices the CUDA/NVML/RSMI/OpenCL/LevelZero plugins report; GL displays (":0.0")
 * and DRM nodes ("card0") are GPU-typed too but say nothing about compute */
static int topo__osdev_is_gpu(hwloc_obj_t o) {
    if (o->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC) return 1;
    if (o->attr->osdev.type != HWLOC_OBJ_OSDEV_GPU || !o->name) return 0;
    return !strncmp(o->name, "nvml", 4) || !strncmp(o->name, "rsmi", 4);
}

static hwloc_obj_t topo__pci_ancestor(hwloc_obj_t o) {
    for (hwloc_obj_t p = o->parent; p; p = p->parent)
        if (p->type == HWLOC_OBJ_PCI_DEVICE) return p;
    return NULL;
}

static int topo__gpu_cmp(const void *a, const void *b) {
    const topo__gpu *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int topo__gpu_add(topo *t, hwloc_obj_t obj, int *cap) {
    for (int i = 0; i < t->n_gpus; i++)
        if (t->gpus[i].obj == obj) return 0;
    if (t->n_gpus == *cap) {
        int ncap = *cap ? *cap * 2 : 8;
        topo__gpu *g = realloc(t->gpus, (size_t)ncap * sizeof *g);
        if (!g) return TOPO_ERR_NOMEM;
        t->gpus = g;
        *cap = ncap;
    }
    topo__gpu *g = &t->gpus[t->n_gpus];
    memset(g, 0, sizeof *g);
    g->obj = obj;
    hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t->h, obj);
    g->locality = hwloc_bitmap_dup(anc ? anc->cpuset : hwloc_topology_get_topology_cpuset(t->h));
    if (!g->locality) return TOPO_ERR_NOMEM;
    if (obj->type == HWLOC_OBJ_PCI_DEVICE) {
        const struct hwloc_pcidev_attr_s *p = &obj->attr->pcidev;
        snprintf(g->name, sizeof g->name, "%04x:%02x:%02x.%01x", (unsigned)p->domain,
                 (unsigned)p->bus, (unsigned)p->dev, (unsigned)p->func);
        g->key = ((unsigned long long)p->domain << 24) | ((unsigned long long)p->bus << 16) |
                 ((unsigned long long)p->dev << 8) | p->func;
    } else {
        snprintf(g->name, sizeof g->name, "%s", obj->name ? obj->name : "?");
        g->key = ~0ULL;
    }
    t->n_gpus++;
    return 0;
}

static int topo__find_gpus(topo *t) {
    int cap = 0, rc;
    for (hwloc_obj_t p = hwloc_get_next_pcidev(t->h, NULL); p; p = hwloc_get_next_pcidev(t->h, p))
        if (topo__pci_is_gpu(&p->attr->pcidev) && (rc = topo__gpu_add(t, p, &cap))) return rc;
    for (hwloc_obj_t o = hwloc_get_next_osdev(t->h, NULL); o; o = hwloc_get_next_osdev(t->h, o)) {
        if (!topo__osdev_is_gpu(o)) continue;
        hwloc_obj_t pci = topo__pci_ancestor(o);
        if ((rc = topo__gpu_add(t, pci ? pci : o, &cap))) return rc;
    }
    if (t->n_gpus > 1) qsort(t->gpus, (size_t)t->n_gpus, sizeof *t->gpus, topo__gpu_cmp);
    return 0;
}

/* ---- cores and NUMA domains --------------------------------------------------------------- */

static hwloc_obj_t topo__core(const topo *t, int i) {
    return hwloc_get_obj_by_type(t->h, t->core_type, (unsigned)i);
}

static int topo__index(topo *t) {
    t->core_type = hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE
                                                                     : HWLOC_OBJ_PU;
    t->n_cores = hwloc_get_nbobjs_by_type(t->h, t->core_type);
    int n_numa = hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_NUMANODE);
    t->domains = calloc((size_t)(n_numa > 0 ? n_numa : 1), sizeof *t->domains);
    if (!t->domains) return TOPO_ERR_NOMEM;
    for (int i = 0; i < n_numa; i++) {
        hwloc_obj_t n = hwloc_get_obj_by_type(t->h, HWLOC_OBJ_NUMANODE, (unsigned)i);
        if (!n->cpuset || hwloc_bitmap_iszero(n->cpuset)) continue;
        int dup = 0;
        for (int d = 0; d < t->n_domains; d++)
            dup |= hwloc_bitmap_isequal(t->domains[d].cpuset, n->cpuset);
        if (dup) continue;
        topo__domain *d = &t->domains[t->n_domains++];
        d->numa_index = (int)n->logical_index;
        d->cpuset = n->cpuset;
        d->first_core = -1;
    }
    /* each core must fall in exactly one domain and each domain's cores must be consecutive */
    t->domains_ok = t->n_domains > 0;
    int covered = 0;
    for (int c = 0; c < t->n_cores && t->domains_ok; c++) {
        hwloc_obj_t core = topo__core(t, c);
        int found = -1;
        for (int d = 0; d < t->n_domains; d++) {
            if (!hwloc_bitmap_isincluded(core->cpuset, t->domains[d].cpuset)) continue;
            if (found >= 0) t->domains_ok = 0;
            found = d;
        }
        if (found < 0) {
            t->domains_ok = 0;
            break;
        }
        topo__domain *d = &t->domains[found];
        if (d->first_core < 0) d->first_core = c;
        else if (d->first_core + d->n_cores != c) t->domains_ok = 0;
        d->n_cores++;
        covered++;
    }
    if (covered != t->n_cores) t->domains_ok = 0;
    return 0;
}

/* ---- open / close ------------------------------------------------------------------------- */

static int topo__load(const char *xml, const char *synth, topo **out, char *err, size_t errlen) {
    *out = NULL;
    topo *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "topo: out of memory");
        return TOPO_ERR_NOMEM;
    }
    if (hwloc_topology_init(&t->h) != 0) {
        snprintf(err, errlen, "topo: hwloc_topology_init failed: %s", strerror(errno));
        free(t);
        return TOPO_ERR_HWLOC;
    }
    /* GPUs are PCI devices: keep the I/O tree (bridges, PCI devices, OS devices) that leads
     * to display/3D/accelerator devices */
    hwloc_topology_set_io_types_filter(t->h, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    int rc = 0;
    if (xml) {
        rc = hwloc_topology_set_xml(t->h, xml);
        snprintf(t->source, sizeof t->source, "XML %s", xml);
    } else if (synth) {
        rc = hwloc_topology_set_synthetic(t->h, synth);
        snprintf(t->source, sizeof t->source, "synthetic '%s'", synth);
    }
    if (rc != 0) {
        snprintf(err, errlen, "topo: cannot use %s: %s", t->source,
                 synth ? "invalid synthetic description" : strerror(errno));
        topo_close(t);
        return TOPO_ERR_ARG;
    }
    if (hwloc_topology_load(t->h) != 0) {
        snprintf(err, errlen, "topo: loading the topology (%s) failed: %s",
                 t->source[0] ? t->source : "this system", strerror(errno));
        topo_close(t);
        return TOPO_ERR_HWLOC;
    }
    if (!xml && !synth) {
        const char *es = getenv("HWLOC_SYNTHETIC"), *ex = getenv("HWLOC_XMLFILE");
        /* hwloc falls back to this system silently when the variable's node cannot load */
        const char *ts = getenv("HWLOC_THISSYSTEM");
        if (hwloc_topology_is_thissystem(t->h) && ((es && *es) || (ex && *ex)) &&
            !(ts && !strcmp(ts, "1")))
            snprintf(t->source, sizeof t->source, "this system (%s=%s did not load)",
                     es && *es ? "HWLOC_SYNTHETIC" : "HWLOC_XMLFILE", es && *es ? es : ex);
        else if (hwloc_topology_is_thissystem(t->h))
            snprintf(t->source, sizeof t->source, "this system");
        else if (es && *es)
            snprintf(t->source, sizeof t->source, "synthetic '%s' (HWLOC_SYNTHETIC)", es);
        else if (ex && *ex)
            snprintf(t->source, sizeof t->source, "XML %s (HWLOC_XMLFILE)", ex);
        else
            snprintf(t->source, sizeof t->source, "another system");
    }
    if ((rc = topo__index(t)) || (rc = topo__find_gpus(t))) {
        snprintf(err, errlen, "topo: out of memory indexing %s", t->source);
        topo_close(t);
        return rc;
    }
    if (t->n_cores <= 0) {
        snprintf(err, errlen, "topo: %s has no cores", t->source);
        topo_close(t);
        return TOPO_ERR_HWLOC;
    }
    *out = t;
    return TOPO_OK;
}

int topo_open(const char *xml_path, topo **out, char *err, size_t errlen) {
    return topo__load(xml_path, NULL, out, err, errlen);
}

int topo_open_synthetic(const char *desc, topo **out, char *err, size_t errlen) {
    if (!desc || !*desc) {
        *out = NULL;
        snprintf(err, errlen, "topo: empty synthetic description");
        return TOPO_ERR_ARG;
    }
    return topo__load(NULL, desc, out, err, errlen);
}

void topo_close(topo *t) {
    if (!t) return;
    for (int i = 0; i < t->n_gpus; i++) hwloc_bitmap_free(t->gpus[i].locality);
    free(t->gpus);
    free(t->domains);
    hwloc_topology_destroy(t->h);
    free(t);
}

int topo_n_cores(const topo *t) { return t->n_cores; }
int topo_n_numa(const topo *t) { return t->n_domains; }
int topo_n_gpus(const topo *t) { return t->n_gpus; }
int topo_is_this_system(const topo *t) { return hwloc_topology_is_thissystem(t->h); }
const char *topo_source(const topo *t) { return t->source; }

/* ---- the plan ----------------------------------------------------------------------------- */

/* part idx of `count` items split into `parts` contiguous shares differing by at most one
 * (the first shares take the extra); with more parts than items, one item each, shared by
 * neighbouring parts */
static void topo__split(int count, int parts, int idx, int *start, int *n) {
    if (parts > count) {
        *start = (int)((long long)idx * count / parts);
        *n = 1;
        return;
    }
    int base = count / parts, extra = count % parts;
    *start = idx * base + (idx < extra ? idx : extra);
    *n = base + (idx < extra);
}

static void topo__share(const topo *t, int r, int size, int *first, int *n) {
    int d = t->n_domains;
    if (t->domains_ok && size % d == 0) {
        int per = size / d, s;
        const topo__domain *dom = &t->domains[r / per];
        topo__split(dom->n_cores, per, r % per, &s, n);
        *first = dom->first_core + s;
    } else if (t->domains_ok && d % size == 0) {
        int g = d / size;
        *first = t->domains[r * g].first_core;
        *n = 0;
        for (int i = r * g; i < (r + 1) * g; i++) *n += t->domains[i].n_cores;
    } else {
        topo__split(t->n_cores, size, r, first, n);
    }
}

static void topo__cpuset(const topo *t, int first, int n, hwloc_bitmap_t set) {
    hwloc_bitmap_zero(set);
    for (int c = first; c < first + n; c++) hwloc_bitmap_or(set, set, topo__core(t, c)->cpuset);
}

int topo_plan(const topo *t, int local_rank, int local_size, topo_rank_plan *out, char *err,
              size_t errlen) {
    memset(out, 0, sizeof *out);
    if (local_size < 1 || local_rank < 0 || local_rank >= local_size) {
        snprintf(err, errlen, "topo: local rank %d out of range for %d local ranks", local_rank,
                 local_size);
        return TOPO_ERR_ARG;
    }
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    int *load = t->n_gpus ? calloc((size_t)t->n_gpus, sizeof *load) : NULL;
    if (!set || (t->n_gpus && !load)) {
        hwloc_bitmap_free(set);
        free(load);
        snprintf(err, errlen, "topo: out of memory planning rank %d of %d", local_rank,
                 local_size);
        return TOPO_ERR_NOMEM;
    }
    /* a GPU goes to the least-taken of those near the rank, so the choice depends on the
     * ranks before this one: replay theirs */
    int gpu = -1;
    for (int q = 0; t->n_gpus && q <= local_rank; q++) {
        int first, n, near = 0;
        topo__share(t, q, local_size, &first, &n);
        topo__cpuset(t, first, n, set);
        for (int g = 0; g < t->n_gpus; g++)
            near |= hwloc_bitmap_intersects(t->gpus[g].locality, set);
        gpu = -1;
        for (int g = 0; g < t->n_gpus; g++) {
            if (near && !hwloc_bitmap_intersects(t->gpus[g].locality, set)) continue;
            if (gpu < 0 || load[g] < load[gpu]) gpu = g;
        }
        load[gpu]++;
    }
    topo__share(t, local_rank, local_size, &out->first_core, &out->n_cores);
    topo__cpuset(t, out->first_core, out->n_cores, set);
    out->local_rank = local_rank;
    out->gpu = gpu;
    if (gpu >= 0) snprintf(out->gpu_name, sizeof out->gpu_name, "%s", t->gpus[gpu].name);
    out->numa_node = -1;
    for (int d = 0; d < t->n_domains; d++)
        if (hwloc_bitmap_isincluded(set, t->domains[d].cpuset))
            out->numa_node = t->domains[d].numa_index;
    int len = hwloc_bitmap_list_snprintf(out->cpuset, sizeof out->cpuset, set);
    hwloc_bitmap_free(set);
    free(load);
    if (len < 0 || (size_t)len >= sizeof out->cpuset) {
        snprintf(err, errlen, "topo: cpu list of rank %d (%d cores from core %d) is longer than "
                 "%zu characters", local_rank, out->n_cores, out->first_core,
                 sizeof out->cpuset - 1);
        return TOPO_ERR_ARG;
    }
    return TOPO_OK;
}

int topo_bind(const topo *t, const topo_rank_plan *p, char *err, size_t errlen) {
    if (!hwloc_topology_is_thissystem(t->h)) {
        snprintf(err, errlen, "topo: not binding rank %d: the topology (%s) is not this "
                 "machine's", p->local_rank, t->source);
        return TOPO_NOT_BOUND;
    }
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set) {
        snprintf(err, errlen, "topo: out of memory binding rank %d", p->local_rank);
        return TOPO_ERR_NOMEM;
    }
    int rc = TOPO_OK;
    if (hwloc_bitmap_list_sscanf(set, p->cpuset) != 0 || hwloc_bitmap_iszero(set)) {
        snprintf(err, errlen, "topo: rank %d: bad cpu list '%s'", p->local_rank, p->cpuset);
        rc = TOPO_ERR_ARG;
    } else if (hwloc_set_cpubind(t->h, set, HWLOC_CPUBIND_PROCESS) != 0) {
        snprintf(err, errlen, "topo: binding rank %d to cpus %s failed: %s", p->local_rank,
                 p->cpuset, strerror(errno));
        rc = TOPO_ERR_HWLOC;
    }
    hwloc_bitmap_free(set);
    return rc;
}

int topo_describe(const topo_rank_plan *p, char *buf, size_t len) {
    char cores[32];
    if (p->n_cores == 1) snprintf(cores, sizeof cores, "%d", p->first_core);
    else snprintf(cores, sizeof cores, "%d-%d", p->first_core, p->first_core + p->n_cores - 1);
    char gpu[96];
    if (p->gpu >= 0) snprintf(gpu, sizeof gpu, "%d (%s)", p->gpu, p->gpu_name);
    else snprintf(gpu, sizeof gpu, "-1");
    return snprintf(buf, len, "rank %d: cores %s (%d) numa %d gpu %s cpus %s", p->local_rank,
                    cores, p->n_cores, p->numa_node, gpu, p->cpuset);
}
