/* tests/topo/test_topo.c — placement plans (runtime/topo.c) against hand-computed layouts.
 *
 *   synthetic "pack:2 numa:2 l3:2 core:8 pu:2" (64 cores, 4 NUMA nodes of 16 cores, PU = 2c,
 *   2c+1): 1, 2, 4, 8, 16 ranks, the uneven 3 and 6, oversubscribed 128; an uneven-NUMA node;
 *   GPU nodes written here as hwloc XML (write_node_xml): 2 packages x 2 NUMA x 16 cores x 2
 *   PUs with 2 NVIDIA GPUs per NUMA node (the brief's node) and 2 packages x 4 NUMA x 16 cores
 *   with 1 GPU per NUMA node (the issue's), each also holding PCI devices that are not
 *   compute GPUs (a BMC display, an InfiniBand HCA, an NVSwitch) which must not count;
 *   this machine against /sys; binding on this machine read back with sched_getaffinity and
 *   hwloc_get_cpubind, in the caller and in a thread started afterwards; error paths.
 * Expected core ranges are written out by hand from the rules in topo.h; each plan's NUMA
 * claim is also checked against the NUMA node's cpuset as hwloc reports it.
 *
 *   test_topo                 run everything
 *   test_topo --write-xml FILE [a|b]   write a GPU node (a: 4 NUMA x 2 GPUs, b: 8 NUMA x 1)
 */
#include <dirent.h>
#include <hwloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "topo.h"

static int g_pass, g_fail;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (cond) g_pass++;                                                                   \
        else {                                                                                \
            g_fail++;                                                                         \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                       \
            printf(__VA_ARGS__);                                                              \
            printf("\n");                                                                     \
        }                                                                                     \
    } while (0)

/* ---- a GPU node as hwloc XML -------------------------------------------------------------- */

typedef struct {
    int packs, numa_per_pack, cores_per_numa, pus_per_core, gpus_per_numa;
    int gpus_at_root;   /* attach the GPUs to the machine (no locality) instead of the NUMA */
} node_spec;

static int g_gp;   /* gp_index counter */

static void xml_set(FILE *f, const char *attr, hwloc_const_bitmap_t b) {
    char s[512];
    hwloc_bitmap_snprintf(s, sizeof s, b);
    fprintf(f, " %s=\"%s\"", attr, s);
}

static void xml_sets(FILE *f, hwloc_const_bitmap_t cpus, hwloc_const_bitmap_t nodes, int root) {
    xml_set(f, "cpuset", cpus);
    xml_set(f, "complete_cpuset", cpus);
    if (root) xml_set(f, "allowed_cpuset", cpus);
    xml_set(f, "nodeset", nodes);
    xml_set(f, "complete_nodeset", nodes);
    if (root) xml_set(f, "allowed_nodeset", nodes);
}

static int gpu_bus(int i) {
    static const int dgx[8] = { 0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd };
    return i < 8 ? dgx[i] : 0x07 + 0x10 * i;
}

/* one host bridge per bus holding one PCI device */
static void xml_pcidev(FILE *f, int bus, const char *type, const char *indent) {
    fprintf(f, "%s<object type=\"Bridge\" gp_index=\"%d\" bridge_type=\"0-1\" depth=\"0\" "
               "bridge_pci=\"0000:[%02x-%02x]\">\n", indent, ++g_gp, bus, bus);
    fprintf(f, "%s  <object type=\"PCIDev\" gp_index=\"%d\" pci_busid=\"0000:%02x:00.0\" "
               "pci_type=\"%s\" pci_link_speed=\"0.000000\"/>\n", indent, ++g_gp, bus, type);
    fprintf(f, "%s</object>\n", indent);
}

/* H100 SXM: 3D controller 10de:2330 */
#define NV_GPU "0302 [10de:2330] [10de:16c1] a1"

/* Linux-style PU numbering: PU k of core c is OS index c + k * total_cores */
static int write_node_xml(const char *path, const node_spec *s) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int n_numa = s->packs * s->numa_per_pack, n_cores = n_numa * s->cores_per_numa;
    hwloc_bitmap_t cpus = hwloc_bitmap_alloc(), nodes = hwloc_bitmap_alloc();
    g_gp = 0;
    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<!DOCTYPE topology SYSTEM \"hwloc2.dtd\">\n<topology version=\"2.0\">\n", f);
    hwloc_bitmap_set_range(cpus, 0, n_cores * s->pus_per_core - 1);
    hwloc_bitmap_set_range(nodes, 0, n_numa - 1);
    fprintf(f, "  <object type=\"Machine\" os_index=\"0\"");
    xml_sets(f, cpus, nodes, 1);
    fprintf(f, " gp_index=\"%d\">\n", ++g_gp);
    int gpu = 0;
    for (int p = 0; p < s->packs; p++) {
        hwloc_bitmap_zero(cpus);
        hwloc_bitmap_zero(nodes);
        int per_pack = s->numa_per_pack * s->cores_per_numa;
        for (int k = 0; k < s->pus_per_core; k++)
            hwloc_bitmap_set_range(cpus, p * per_pack + k * n_cores,
                                   (p + 1) * per_pack - 1 + k * n_cores);
        hwloc_bitmap_set_range(nodes, p * s->numa_per_pack, (p + 1) * s->numa_per_pack - 1);
        fprintf(f, "    <object type=\"Package\" os_index=\"%d\"", p);
        xml_sets(f, cpus, nodes, 0);
        fprintf(f, " gp_index=\"%d\">\n", ++g_gp);
        for (int m = 0; m < s->numa_per_pack; m++) {
            int numa = p * s->numa_per_pack + m, c0 = numa * s->cores_per_numa;
            hwloc_bitmap_zero(cpus);
            for (int k = 0; k < s->pus_per_core; k++)
                hwloc_bitmap_set_range(cpus, c0 + k * n_cores,
                                       c0 + s->cores_per_numa - 1 + k * n_cores);
            hwloc_bitmap_only(nodes, (unsigned)numa);
            fprintf(f, "      <object type=\"Group\"");
            xml_sets(f, cpus, nodes, 0);
            fprintf(f, " gp_index=\"%d\" kind=\"1001\" subkind=\"0\">\n", ++g_gp);
            fprintf(f, "        <object type=\"NUMANode\" os_index=\"%d\"", numa);
            xml_sets(f, cpus, nodes, 0);
            fprintf(f, " gp_index=\"%d\" local_memory=\"137438953472\"/>\n", ++g_gp);
            for (int c = c0; c < c0 + s->cores_per_numa; c++) {
                hwloc_bitmap_zero(cpus);
                for (int k = 0; k < s->pus_per_core; k++) hwloc_bitmap_set(cpus, c + k * n_cores);
                fprintf(f, "        <object type=\"Core\" os_index=\"%d\"", c);
                xml_sets(f, cpus, nodes, 0);
                fprintf(f, " gp_index=\"%d\">\n", ++g_gp);
                for (int k = 0; k < s->pus_per_core; k++) {
                    hwloc_bitmap_only(cpus, (unsigned)(c + k * n_cores));
                    fprintf(f, "          <object type=\"PU\" os_index=\"%d\"", c + k * n_cores);
                    xml_sets(f, cpus, nodes, 0);
                    fprintf(f, " gp_index=\"%d\"/>\n", ++g_gp);
                }
                fprintf(f, "        </object>\n");
            }
            if (!s->gpus_at_root)
                for (int g = 0; g < s->gpus_per_numa; g++)
                    xml_pcidev(f, gpu_bus(gpu++), NV_GPU, "        ");
            /* not compute GPUs: an InfiniBand HCA per NUMA node, an NVSwitch on the first */
            xml_pcidev(f, 0xc0 + numa, "0207 [15b3:101b] [15b3:0007] 00", "        ");
            if (numa == 0) xml_pcidev(f, 0xe0, "0680 [10de:22a3] [10de:1796] a1", "        ");
            fprintf(f, "      </object>\n");
        }
        fprintf(f, "    </object>\n");
    }
    if (s->gpus_at_root)
        for (int g = 0; g < n_numa * s->gpus_per_numa; g++)
            xml_pcidev(f, gpu_bus(gpu++), NV_GPU, "    ");
    /* the BMC's VGA display (ASPEED): class 0300 but not an NVIDIA/AMD device */
    xml_pcidev(f, 0xf0, "0300 [1a03:2000] [1a03:2000] 41", "    ");
    fputs("  </object>\n</topology>\n", f);
    hwloc_bitmap_free(cpus);
    hwloc_bitmap_free(nodes);
    return fclose(f);
}

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct {
    int first, n, numa, gpu;
    const char *cpus;   /* NULL: not checked */
} want;

/* the NUMA claim against hwloc's own NUMA cpusets, independently of topo.c's index */
static void check_numa_claim(const char *what, int r, const topo_rank_plan *p,
                             hwloc_topology_t h) {
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    hwloc_bitmap_list_sscanf(set, p->cpuset);
    int inside = -1, n = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < n; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(h, HWLOC_OBJ_NUMANODE, (unsigned)i);
        if (hwloc_bitmap_isincluded(set, o->cpuset)) inside = i;
    }
    CHECK(inside == p->numa_node, "%s rank %d: plan says numa %d, hwloc finds cpus %s inside %d",
          what, r, p->numa_node, p->cpuset, inside);
    hwloc_bitmap_free(set);
}

static hwloc_topology_t load_ref(const char *synth, const char *xml) {
    hwloc_topology_t h;
    hwloc_topology_init(&h);
    if (synth) hwloc_topology_set_synthetic(h, synth);
    if (xml) hwloc_topology_set_xml(h, xml);
    hwloc_topology_load(h);
    return h;
}

static void check_plans(const char *what, const topo *t, hwloc_topology_t ref, int size,
                        const want *w) {
    char err[256];
    for (int r = 0; r < size; r++) {
        topo_rank_plan p;
        int rc = topo_plan(t, r, size, &p, err, sizeof err);
        CHECK(rc == TOPO_OK, "%s: topo_plan(%d of %d) = %d: %s", what, r, size, rc, err);
        if (rc) continue;
        CHECK(p.local_rank == r && p.first_core == w[r].first && p.n_cores == w[r].n &&
                  p.numa_node == w[r].numa && p.gpu == w[r].gpu,
              "%s, %d ranks, rank %d: got cores %d+%d numa %d gpu %d, want %d+%d numa %d gpu %d",
              what, size, r, p.first_core, p.n_cores, p.numa_node, p.gpu, w[r].first, w[r].n,
              w[r].numa, w[r].gpu);
        if (w[r].cpus)
            CHECK(!strcmp(p.cpuset, w[r].cpus), "%s, %d ranks, rank %d: cpus '%s', want '%s'",
                  what, size, r, p.cpuset, w[r].cpus);
        if (ref) check_numa_claim(what, r, &p, ref);
    }
}

/* ---- synthetic nodes ---------------------------------------------------------------------- */

static const char *SYN = "pack:2 numa:2 l3:2 core:8 pu:2";

static void test_synthetic(void) {
    char err[256];
    topo *t = NULL;
    int rc = topo_open_synthetic(SYN, &t, err, sizeof err);
    CHECK(rc == TOPO_OK, "open synthetic: %s", err);
    if (rc) return;
    hwloc_topology_t ref = load_ref(SYN, NULL);
    CHECK(topo_n_cores(t) == 64 && topo_n_numa(t) == 4 && topo_n_gpus(t) == 0,
          "synthetic: %d cores %d numa %d gpus, want 64 4 0", topo_n_cores(t), topo_n_numa(t),
          topo_n_gpus(t));
    CHECK(!topo_is_this_system(t), "synthetic claims to be this system");

    want w1[] = { { 0, 64, -1, -1, "0-127" } };
    check_plans("syn", t, ref, 1, w1);
    want w2[] = { { 0, 32, -1, -1, "0-63" }, { 32, 32, -1, -1, "64-127" } };
    check_plans("syn", t, ref, 2, w2);
    want w4[] = { { 0, 16, 0, -1, "0-31" }, { 16, 16, 1, -1, "32-63" },
                  { 32, 16, 2, -1, "64-95" }, { 48, 16, 3, -1, "96-127" } };
    check_plans("syn", t, ref, 4, w4);
    want w8[8], w16[16], w128[128];
    char c8[8][16], c16[16][16], c128[128][16];
    for (int r = 0; r < 8; r++) {
        snprintf(c8[r], sizeof c8[r], "%d-%d", 16 * r, 16 * r + 15);
        w8[r] = (want){ 8 * r, 8, r / 2, -1, c8[r] };
    }
    check_plans("syn", t, ref, 8, w8);
    for (int r = 0; r < 16; r++) {
        snprintf(c16[r], sizeof c16[r], "%d-%d", 8 * r, 8 * r + 7);
        w16[r] = (want){ 4 * r, 4, r / 4, -1, c16[r] };
    }
    check_plans("syn", t, ref, 16, w16);
    /* 3 ranks: 64 = 22 + 21 + 21, every share crosses a NUMA boundary (16, 32, 48) */
    want w3[] = { { 0, 22, -1, -1, "0-43" }, { 22, 21, -1, -1, "44-85" },
                  { 43, 21, -1, -1, "86-127" } };
    check_plans("syn", t, ref, 3, w3);
    /* 6 ranks: 11 11 11 11 10 10 -> 0-10 | 11-21 | 22-32 | 33-43 | 44-53 | 54-63 */
    want w6[] = { { 0, 11, 0, -1, "0-21" },    { 11, 11, -1, -1, "22-43" },
                  { 22, 11, -1, -1, "44-65" }, { 33, 11, 2, -1, "66-87" },
                  { 44, 10, -1, -1, "88-107" }, { 54, 10, 3, -1, "108-127" } };
    check_plans("syn", t, ref, 6, w6);
    /* 128 ranks on 64 cores: two per core */
    for (int r = 0; r < 128; r++) {
        snprintf(c128[r], sizeof c128[r], "%d-%d", 2 * (r / 2), 2 * (r / 2) + 1);
        w128[r] = (want){ r / 2, 1, r / 32, -1, c128[r] };
    }
    check_plans("syn", t, ref, 128, w128);

    topo_rank_plan p;
    CHECK(topo_plan(t, 4, 4, &p, err, sizeof err) == TOPO_ERR_ARG && strstr(err, "4"),
          "rank 4 of 4 accepted (%s)", err);
    CHECK(topo_plan(t, 0, 0, &p, err, sizeof err) == TOPO_ERR_ARG, "0 ranks accepted");
    CHECK(topo_plan(t, -1, 2, &p, err, sizeof err) == TOPO_ERR_ARG, "rank -1 accepted");
    topo_plan(t, 0, 4, &p, err, sizeof err);
    cpu_set_t before, after;
    sched_getaffinity(0, sizeof before, &before);
    rc = topo_bind(t, &p, err, sizeof err);
    sched_getaffinity(0, sizeof after, &after);
    CHECK(rc == TOPO_NOT_BOUND && strstr(err, "not this machine"), "bind on synthetic: %d %s",
          rc, err);
    CHECK(CPU_EQUAL(&before, &after), "bind on a synthetic topology changed the affinity");

    char line[256];
    topo_plan(t, 3, 4, &p, err, sizeof err);
    topo_describe(&p, line, sizeof line);
    CHECK(!strcmp(line, "rank 3: cores 48-63 (16) numa 3 gpu -1 cpus 96-127"), "describe: '%s'",
          line);
    topo_plan(t, 5, 128, &p, err, sizeof err);
    topo_describe(&p, line, sizeof line);
    CHECK(!strcmp(line, "rank 5: cores 2 (1) numa 0 gpu -1 cpus 4-5"), "describe: '%s'", line);
    hwloc_topology_destroy(ref);
    topo_close(t);
}

/* NUMA nodes of 5 cores: 6 ranks split each into 3 + 2; 3 ranks on 6 NUMA nodes take 2 each */
static void test_uneven_numa(void) {
    char err[256];
    topo *t = NULL;
    const char *d = "pack:1 numa:3 core:5 pu:1";
    if (topo_open_synthetic(d, &t, err, sizeof err) != TOPO_OK) {
        CHECK(0, "open %s: %s", d, err);
        return;
    }
    hwloc_topology_t ref = load_ref(d, NULL);
    want w6[] = { { 0, 3, 0, -1, "0-2" },   { 3, 2, 0, -1, "3-4" },  { 5, 3, 1, -1, "5-7" },
                  { 8, 2, 1, -1, "8-9" },   { 10, 3, 2, -1, "10-12" }, { 13, 2, 2, -1, "13-14" } };
    check_plans(d, t, ref, 6, w6);
    /* 2 ranks, 3 NUMA nodes: neither rule applies: 8 + 7 */
    want w2[] = { { 0, 8, -1, -1, "0-7" }, { 8, 7, -1, -1, "8-14" } };
    check_plans(d, t, ref, 2, w2);
    hwloc_topology_destroy(ref);
    topo_close(t);

    d = "pack:2 numa:3 core:4 pu:1";
    if (topo_open_synthetic(d, &t, err, sizeof err) != TOPO_OK) {
        CHECK(0, "open %s: %s", d, err);
        return;
    }
    ref = load_ref(d, NULL);
    want w3[] = { { 0, 8, -1, -1, "0-7" }, { 8, 8, -1, -1, "8-15" }, { 16, 8, -1, -1, "16-23" } };
    check_plans(d, t, ref, 3, w3);
    hwloc_topology_destroy(ref);
    topo_close(t);

    CHECK(topo_open_synthetic("pack:two", &t, err, sizeof err) == TOPO_ERR_ARG && !t &&
              strstr(err, "pack:two"),
          "bad synthetic description accepted (%s)", err);
}

/* ---- GPU nodes ---------------------------------------------------------------------------- */

static int tmp_xml(char *path, size_t len, const node_spec *s) {
    const char *dir = getenv("TMPDIR");
    snprintf(path, len, "%s/sampan-topo-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    close(fd);
    return write_node_xml(path, s);
}

static void gpu_names_check(const char *what, const topo *t) {
    static const char *names[8] = { "0000:07:00.0", "0000:0f:00.0", "0000:47:00.0",
                                    "0000:4e:00.0", "0000:87:00.0", "0000:90:00.0",
                                    "0000:b7:00.0", "0000:bd:00.0" };
    char err[256];
    for (int r = 0; r < 8; r++) {
        topo_rank_plan p;
        topo_plan(t, r, 8, &p, err, sizeof err);
        CHECK(p.gpu == r && !strcmp(p.gpu_name, names[r]), "%s rank %d: gpu %d '%s', want %d '%s'",
              what, r, p.gpu, p.gpu_name, r, names[r]);
    }
}

static void test_gpu_node_a(void) {
    char path[512], err[256];
    node_spec s = { 2, 2, 16, 2, 2, 0 };
    if (tmp_xml(path, sizeof path, &s) != 0) {
        CHECK(0, "cannot write %s", path);
        return;
    }
    topo *t = NULL;
    int rc = topo_open(path, &t, err, sizeof err);
    CHECK(rc == TOPO_OK, "open XML node a: %s", err);
    if (rc) {
        unlink(path);
        return;
    }
    hwloc_topology_t ref = load_ref(NULL, path);
    CHECK(topo_n_cores(t) == 64 && topo_n_numa(t) == 4 && topo_n_gpus(t) == 8,
          "node a: %d cores %d numa %d gpus, want 64 4 8", topo_n_cores(t), topo_n_numa(t),
          topo_n_gpus(t));
    CHECK(!topo_is_this_system(t), "an XML topology claims to be this system");
    CHECK(strstr(topo_source(t), path) != NULL, "source '%s' does not name the file",
          topo_source(t));
    /* 8 ranks: two per NUMA node, each its own local GPU; PU k of core c is c + 64k */
    want w8[8];
    char c8[8][32];
    for (int r = 0; r < 8; r++) {
        snprintf(c8[r], sizeof c8[r], "%d-%d,%d-%d", 8 * r, 8 * r + 7, 64 + 8 * r, 64 + 8 * r + 7);
        w8[r] = (want){ 8 * r, 8, r / 2, r, c8[r] };
    }
    check_plans("node a", t, ref, 8, w8);
    gpu_names_check("node a", t);
    /* 4 ranks: one NUMA node each, the first GPU of that node */
    want w4[] = { { 0, 16, 0, 0, "0-15,64-79" },   { 16, 16, 1, 2, "16-31,80-95" },
                  { 32, 16, 2, 4, "32-47,96-111" }, { 48, 16, 3, 6, "48-63,112-127" } };
    check_plans("node a", t, ref, 4, w4);
    /* 16 ranks: four per NUMA node take its two GPUs round-robin */
    want w16[16];
    for (int r = 0; r < 16; r++) w16[r] = (want){ 4 * r, 4, r / 4, 2 * (r / 4) + r % 2, NULL };
    check_plans("node a", t, ref, 16, w16);
    /* 2 ranks: one package each, the first GPU among the four near it */
    want w2[] = { { 0, 32, -1, 0, "0-31,64-95" }, { 32, 32, -1, 4, "32-63,96-127" } };
    check_plans("node a", t, ref, 2, w2);
    /* 3 ranks (22 21 21 cores) touch NUMA 0-1, 1-2, 2-3: first free GPU of each */
    want w3[] = { { 0, 22, -1, 0, NULL }, { 22, 21, -1, 2, NULL }, { 43, 21, -1, 4, NULL } };
    check_plans("node a", t, ref, 3, w3);
    want w1[] = { { 0, 64, -1, 0, "0-127" } };
    check_plans("node a", t, ref, 1, w1);

    char line[256];
    topo_rank_plan p;
    topo_plan(t, 3, 4, &p, err, sizeof err);
    topo_describe(&p, line, sizeof line);
    CHECK(!strcmp(line, "rank 3: cores 48-63 (16) numa 3 gpu 6 (0000:b7:00.0) cpus 48-63,112-127"),
          "describe: '%s'", line);
    hwloc_topology_destroy(ref);
    topo_close(t);

    /* the same node through HWLOC_XMLFILE and topo_open(NULL) */
    setenv("HWLOC_XMLFILE", path, 1);
    rc = topo_open(NULL, &t, err, sizeof err);
    unsetenv("HWLOC_XMLFILE");
    CHECK(rc == TOPO_OK && topo_n_gpus(t) == 8 && topo_n_cores(t) == 64 && !topo_is_this_system(t)
              && strstr(topo_source(t), "HWLOC_XMLFILE"),
          "HWLOC_XMLFILE: rc %d, %d gpus, source '%s' (%s)", rc, t ? topo_n_gpus(t) : -1,
          t ? topo_source(t) : "", err);
    topo_close(t);
    unlink(path);
}

static void test_gpu_node_b(void) {
    char path[512], err[256];
    node_spec s = { 2, 4, 16, 2, 1, 0 };
    if (tmp_xml(path, sizeof path, &s) != 0) {
        CHECK(0, "cannot write %s", path);
        return;
    }
    topo *t = NULL;
    int rc = topo_open(path, &t, err, sizeof err);
    CHECK(rc == TOPO_OK, "open XML node b: %s", err);
    if (rc) {
        unlink(path);
        return;
    }
    hwloc_topology_t ref = load_ref(NULL, path);
    CHECK(topo_n_cores(t) == 128 && topo_n_numa(t) == 8 && topo_n_gpus(t) == 8,
          "node b: %d cores %d numa %d gpus, want 128 8 8", topo_n_cores(t), topo_n_numa(t),
          topo_n_gpus(t));
    /* 8 ranks: one NUMA node and its GPU each; PU k of core c is c + 128k */
    want w8[8];
    char c8[8][32];
    for (int r = 0; r < 8; r++) {
        snprintf(c8[r], sizeof c8[r], "%d-%d,%d-%d", 16 * r, 16 * r + 15, 128 + 16 * r,
                 128 + 16 * r + 15);
        w8[r] = (want){ 16 * r, 16, r, r, c8[r] };
    }
    check_plans("node b", t, ref, 8, w8);
    gpu_names_check("node b", t);
    /* 4 ranks: two whole NUMA nodes each, the first of their two GPUs */
    want w4[4];
    for (int r = 0; r < 4; r++) w4[r] = (want){ 32 * r, 32, -1, 2 * r, NULL };
    check_plans("node b", t, ref, 4, w4);
    /* 16 ranks: two per NUMA node share its GPU */
    want w16[16];
    for (int r = 0; r < 16; r++) w16[r] = (want){ 8 * r, 8, r / 2, r / 2, NULL };
    check_plans("node b", t, ref, 16, w16);
    hwloc_topology_destroy(ref);
    topo_close(t);
    unlink(path);

    /* GPUs hung off the machine: no locality, so every rank is near all: round-robin */
    node_spec root = { 2, 2, 16, 2, 2, 1 };
    if (tmp_xml(path, sizeof path, &root) != 0 || topo_open(path, &t, err, sizeof err)) {
        CHECK(0, "root-attached GPU node: %s", err);
        unlink(path);
        return;
    }
    CHECK(topo_n_gpus(t) == 8, "root-attached: %d gpus", topo_n_gpus(t));
    want w4r[] = { { 0, 16, 0, 0, NULL }, { 16, 16, 1, 1, NULL }, { 32, 16, 2, 2, NULL },
                   { 48, 16, 3, 3, NULL } };
    check_plans("root-attached", t, NULL, 4, w4r);
    topo_close(t);
    unlink(path);
}

static void test_bad_files(void) {
    char err[256], path[512];
    topo *t = (topo *)1;
    int rc = topo_open("/nonexistent/node.xml", &t, err, sizeof err);
    CHECK(rc < 0 && t == NULL && strstr(err, "/nonexistent/node.xml"),
          "missing file: rc %d '%s'", rc, err);
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/sampan-topo-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd >= 0) {
        static const char junk[] = "<?xml version=\"1.0\"?>\n<topology version=\"2.0\">\n<objec";
        CHECK(write(fd, junk, sizeof junk - 1) == (ssize_t)(sizeof junk - 1), "write");
        close(fd);
        rc = topo_open(path, &t, err, sizeof err);
        CHECK(rc < 0 && t == NULL && strstr(err, path), "truncated XML: rc %d '%s'", rc, err);
        unlink(path);
    }
}

/* ---- this machine -------------------------------------------------------------------------- */

/* independent counts from sysfs: distinct (package, core) pairs, NUMA nodes with CPUs,
 * NVIDIA/AMD PCI display/3D devices */
static int sys_read(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = 0;
    return (int)n;
}

static int sys_cores(void) {
    int pairs[4096][2], n = 0;
    cpu_set_t all;
    sched_getaffinity(0, sizeof all, &all);
    long ncpu = sysconf(_SC_NPROCESSORS_CONF);
    for (long c = 0; c < ncpu && n < 4096; c++) {
        char path[128], b[32];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/core_id", c);
        if (sys_read(path, b, sizeof b) <= 0) continue;
        int core = atoi(b);
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu%ld/topology/physical_package_id", c);
        if (sys_read(path, b, sizeof b) <= 0) continue;
        int pkg = atoi(b), seen = 0;
        for (int i = 0; i < n; i++) seen |= pairs[i][0] == pkg && pairs[i][1] == core;
        if (!seen) {
            pairs[n][0] = pkg;
            pairs[n][1] = core;
            n++;
        }
    }
    return n;
}

static int sys_numa(void) {
    DIR *d = opendir("/sys/devices/system/node");
    if (!d) return 1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "node", 4) || e->d_name[4] < '0' || e->d_name[4] > '9') continue;
        char path[300], b[256];
        snprintf(path, sizeof path, "/sys/devices/system/node/%s/cpulist", e->d_name);
        if (sys_read(path, b, sizeof b) > 1) n++;
    }
    closedir(d);
    return n ? n : 1;
}

static int sys_gpus(void) {
    DIR *d = opendir("/sys/bus/pci/devices");
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300], v[32], c[32];
        snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/vendor", e->d_name);
        if (sys_read(path, v, sizeof v) <= 0) continue;
        snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/class", e->d_name);
        if (sys_read(path, c, sizeof c) <= 0) continue;
        long vendor = strtol(v, NULL, 16), cls = strtol(c, NULL, 16) >> 8;
        n += (vendor == 0x10de || vendor == 0x1002) &&
             (cls == 0x0300 || cls == 0x0302 || cls == 0x0380 || cls == 0x1200);
    }
    closedir(d);
    return n;
}

static void *thread_affinity(void *arg) {
    sched_getaffinity(0, sizeof(cpu_set_t), arg);
    return NULL;
}

static void test_this_machine(void) {
    char err[256];
    topo *t = NULL;
    unsetenv("HWLOC_SYNTHETIC");
    unsetenv("HWLOC_XMLFILE");
    int rc = topo_open(NULL, &t, err, sizeof err);
    CHECK(rc == TOPO_OK, "open this machine: %s", err);
    if (rc) return;
    int cores = sys_cores(), numa = sys_numa(), gpus = sys_gpus();
    printf("this machine: %d cores, %d NUMA, %d GPUs (sysfs: %d, %d, %d)\n", topo_n_cores(t),
           topo_n_numa(t), topo_n_gpus(t), cores, numa, gpus);
    CHECK(topo_is_this_system(t) && !strcmp(topo_source(t), "this system"), "source '%s'",
          topo_source(t));
    CHECK(topo_n_cores(t) == cores, "cores: hwloc %d, sysfs %d", topo_n_cores(t), cores);
    CHECK(topo_n_numa(t) == numa, "numa: hwloc %d, sysfs %d", topo_n_numa(t), numa);
    CHECK(topo_n_gpus(t) == gpus, "gpus: hwloc %d, sysfs %d", topo_n_gpus(t), gpus);
    topo_rank_plan p;
    rc = topo_plan(t, 0, 1, &p, err, sizeof err);
    CHECK(rc == TOPO_OK && p.n_cores == cores && p.first_core == 0 &&
              (gpus > 0 || (p.gpu == -1 && p.gpu_name[0] == 0)) && (numa > 1 || p.numa_node == 0),
          "this machine, 1 rank: cores %d+%d numa %d gpu %d", p.first_core, p.n_cores,
          p.numa_node, p.gpu);

    /* binding: the last core of an n-rank plan (core 1 on a 2-core machine) */
    if (cores < 2) {
        printf("skip binding checks: one core\n");
        topo_close(t);
        return;
    }
    cpu_set_t orig;
    sched_getaffinity(0, sizeof orig, &orig);
    rc = topo_plan(t, cores - 1, cores, &p, err, sizeof err);
    CHECK(rc == TOPO_OK && p.n_cores == 1 && p.first_core == cores - 1, "plan last core: %s",
          err);
    rc = topo_bind(t, &p, err, sizeof err);
    CHECK(rc == TOPO_OK, "bind to core %d (cpus %s): %d %s", cores - 1, p.cpuset, rc, err);
    /* the kernel's view of the affinity must equal the plan's cpu list */
    cpu_set_t now, want_set, in_thread;
    CPU_ZERO(&want_set);
    hwloc_bitmap_t b = hwloc_bitmap_alloc();
    hwloc_bitmap_list_sscanf(b, p.cpuset);
    int i;
    hwloc_bitmap_foreach_begin(i, b) CPU_SET(i, &want_set);
    hwloc_bitmap_foreach_end();
    sched_getaffinity(0, sizeof now, &now);
    CHECK(CPU_EQUAL(&now, &want_set) && CPU_COUNT(&now) >= 1, "affinity after bind: %d cpus",
          CPU_COUNT(&now));
    pthread_t th;
    CPU_ZERO(&in_thread);
    if (pthread_create(&th, NULL, thread_affinity, &in_thread) == 0) {
        pthread_join(th, NULL);
        CHECK(CPU_EQUAL(&in_thread, &want_set), "a thread started after binding has %d cpus",
              CPU_COUNT(&in_thread));
    }
    hwloc_topology_t h = load_ref(NULL, NULL);
    hwloc_bitmap_t got = hwloc_bitmap_alloc();
    hwloc_get_cpubind(h, got, HWLOC_CPUBIND_PROCESS);
    CHECK(hwloc_bitmap_isequal(got, b), "hwloc_get_cpubind disagrees with the plan");
    /* the core hwloc calls logical core (cores - 1) must be the one bound */
    hwloc_obj_t last = hwloc_get_obj_by_type(h, HWLOC_OBJ_CORE, (unsigned)(cores - 1));
    CHECK(last && hwloc_bitmap_isequal(last->cpuset, got), "bound set is not core L#%d",
          cores - 1);
    hwloc_bitmap_free(got);
    hwloc_bitmap_free(b);
    hwloc_topology_destroy(h);
    sched_setaffinity(0, sizeof orig, &orig);

    /* HWLOC_SYNTHETIC replaces this machine: plans for it, binding refused */
    setenv("HWLOC_SYNTHETIC", SYN, 1);
    topo *s = NULL;
    rc = topo_open(NULL, &s, err, sizeof err);
    unsetenv("HWLOC_SYNTHETIC");
    CHECK(rc == TOPO_OK && topo_n_cores(s) == 64 && !topo_is_this_system(s) &&
              strstr(topo_source(s), "HWLOC_SYNTHETIC"),
          "HWLOC_SYNTHETIC: rc %d source '%s'", rc, s ? topo_source(s) : "");
    topo_close(s);
    topo_close(t);
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--write-xml")) {
        node_spec a = { 2, 2, 16, 2, 2, 0 }, b = { 2, 4, 16, 2, 1, 0 };
        int rc = write_node_xml(argv[2], argc >= 4 && !strcmp(argv[3], "b") ? &b : &a);
        if (rc) perror(argv[2]);
        return rc ? 1 : 0;
    }
    test_synthetic();
    test_uneven_numa();
    test_gpu_node_a();
    test_gpu_node_b();
    test_bad_files();
    test_this_machine();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
