/* tests/comm/test_comm.c — the communicator against values each rank computes on its own.
 *
 *   test_comm self     no launcher: the self comm, argument errors, launcher detection
 *   test_comm mpi      under mpirun -np N: every operation of the MPI comm (expected values
 *                      are closed forms or brute force over the ranks' known inputs; the
 *                      bookkeeping uses raw MPI on MPI_COMM_WORLD, not the comm under test)
 *   test_comm loop     allreduce forever (the killed-rank test kills one rank)
 *   test_comm a2a      alltoallv (uneven counts) forever, for the same tests
 *   test_comm idle     rank 0 broadcasts every 100 ms, the others wait in comm_bcast_idle
 *   test_comm stuck    rank 1 never enters the allreduce (the watchdog test)
 *   test_comm big      messages over INT_MAX elements (2 GiB per rank; run by hand)
 * loop/a2a/idle/stuck print "rank R pid P" on stdout first, for the driver (comm_test.py).
 * Prints "N passed, N failed" (rank 0, totals over ranks) and exits 1 if anything failed.
 */
#include "comm.h"
#include "qtypes.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int g_pass, g_fail, g_rank;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (cond) g_pass++;                                                    \
        else {                                                                 \
            g_fail++;                                                          \
            fprintf(stderr, "FAIL rank %d line %d: ", g_rank, __LINE__);       \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static void nap(double s) {
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    nanosleep(&ts, NULL);
}

/* a value that depends on (rank, i) only; integer-valued so sums are exact */
static uint32_t mix(uint32_t r, uint32_t i) {
    uint32_t h = r * 0x9e3779b9u ^ (i + 0x7f4a7c15u) * 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    return h ^ (h >> 16);
}

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

/* ---- alltoallv: every rank knows what every peer sends it ------------------------------- */

/* elements rank s sends rank d in case k: uneven, with zeros (self blocks included) */
static size_t a2a_count(int k, int s, int d, size_t scale) {
    switch (k) {
    case 0: return (size_t)((s * 7 + d * 3 + 1) % 5) * scale;   /* 0..4 x scale */
    case 1: return s == 0 ? 0 : (size_t)(d + 1) * scale + (size_t)s;   /* rank 0 sends nothing */
    case 2: return d == s ? 0 : (size_t)(s + 2 * d + 1) * scale;   /* nothing to itself */
    default: return 0;   /* nothing at all */
    }
}

/* byte j of the block s sends d */
static unsigned char a2a_byte(int s, int d, size_t j) {
    return (unsigned char)mix(3000u + (uint32_t)(s * 64 + d), (uint32_t)j);
}

/* Blocks laid out apart from each other and in another order in each buffer (send: rank n-1
 * first, 3 elements of gap; recv: rank 0 first, 1 element of gap), so displacements are used
 * as given; the gaps must come back untouched. */
static void a2a_case(comm *w, int k, size_t scale, comm_dtype t, const char *tname) {
    const int n = w->size, r = w->rank;
    const size_t es = comm_dtype_size(t);
    size_t *sc = calloc((size_t)n, sizeof *sc), *sd = calloc((size_t)n, sizeof *sd);
    size_t *rcn = calloc((size_t)n, sizeof *rcn), *rd = calloc((size_t)n, sizeof *rd);
    size_t stot = 0, rtot = 0;
    for (int q = n - 1; q >= 0; q--) {
        sc[q] = a2a_count(k, r, q, scale);
        sd[q] = stot;
        stot += sc[q] + 3;
    }
    for (int q = 0; q < n; q++) {
        rcn[q] = a2a_count(k, q, r, scale);
        rd[q] = rtot;
        rtot += rcn[q] + 1;
    }
    size_t sbytes = 0, rbytes = 0;
    for (int q = 0; q < n; q++) sbytes += sc[q] * es, rbytes += rcn[q] * es;
    unsigned char *send = sbytes ? malloc(stot * es) : NULL;
    unsigned char *recv = rbytes ? malloc(rtot * es) : NULL;
    if (send) {
        memset(send, 0x11, stot * es);
        for (int q = 0; q < n; q++)
            for (size_t j = 0; j < sc[q] * es; j++) send[sd[q] * es + j] = a2a_byte(r, q, j);
    }
    if (recv) memset(recv, 0xEE, rtot * es);
    int rc = comm_alltoallv(w, send, sc, sd, recv, rcn, rd, t);
    size_t bad = 0, gap_bad = 0;
    for (int q = 0; q < n && recv; q++) {
        for (size_t j = 0; j < rcn[q] * es; j++) bad += recv[rd[q] * es + j] != a2a_byte(q, r, j);
        for (size_t j = 0; j < es; j++) gap_bad += recv[(rd[q] + rcn[q]) * es + j] != 0xEE;
    }
    CHECK(rc == 0 && bad == 0 && gap_bad == 0, "alltoallv case %d scale %zu %s: rc %d %s, %zu "
          "bytes wrong, %zu gap bytes written (sent %zu, received %zu bytes)", k, scale, tname, rc,
          comm_error(w), bad, gap_bad, sbytes, rbytes);
    free(send);
    free(recv);
    free(sc);
    free(sd);
    free(rcn);
    free(rd);
}

/* argument errors every rank makes alike (so none of them enters the collective) */
static void a2a_errors(comm *w) {
    const int n = w->size, r = w->rank;
    size_t *z = calloc((size_t)n, sizeof *z), *one = calloc((size_t)n, sizeof *one);
    size_t *big = calloc((size_t)n, sizeof *big), *two = calloc((size_t)n, sizeof *two);
    size_t *at2 = calloc((size_t)n, sizeof *at2);
    float buf[8] = { 0 }, out[8] = { 0 };
    for (int q = 0; q < n; q++) one[q] = q == r;
    int rc = comm_alltoallv(w, buf, one, z, out, one, z, (comm_dtype)9);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), "dtype 9"), "alltoallv dtype 9: %d %s", rc,
          comm_error(w));
    rc = comm_alltoallv(w, buf, one, NULL, out, one, z, COMM_F32);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), "NULL count or displacement"),
          "alltoallv NULL displs: %d %s", rc, comm_error(w));
    rc = comm_alltoallv(w, NULL, one, z, out, one, z, COMM_F32);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), "NULL send buffer for 4 bytes"),
          "alltoallv NULL send: %d %s", rc, comm_error(w));
    /* the block to itself: 1 element sent, 2 expected */
    for (int q = 0; q < n; q++) two[q] = 2 * (q == r);
    rc = comm_alltoallv(w, buf, one, z, out, two, z, COMM_F32);
    char want[96];
    snprintf(want, sizeof want, "this rank (%d) sends itself 1 elements but expects 2", r);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), want), "alltoallv self mismatch: %d %s",
          rc, comm_error(w));
    /* aliasing: recv overlaps send by one element */
    for (int q = 0; q < n; q++) at2[q] = 2;
    rc = comm_alltoallv(w, buf, two, z, buf + 1, two, z, COMM_F32);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), "must not alias"), "alltoallv alias: %d %s",
          rc, comm_error(w));
    /* adjacent, not overlapping: fine (self block only, other counts 0) */
    buf[0] = 1.5f, buf[1] = -2;
    rc = comm_alltoallv(w, buf, two, z, buf, two, at2, COMM_F32);
    CHECK(rc == 0 && buf[2] == 1.5f && buf[3] == -2, "alltoallv adjacent ranges: %d %s", rc,
          comm_error(w));
    /* a displacement past MPI's int (never dereferenced: the check comes first) */
    if (strcmp(w->i->name, "mpi") == 0) {
        for (int q = 0; q < n; q++) big[q] = q == n - 1 ? (size_t)INT32_MAX + 1 : 0;
        rc = comm_alltoallv(w, buf, one, big, out, one, z, COMM_U8);
        snprintf(want, sizeof want, "send_displs[%d] = 2147483648 does not fit MPI's int", n - 1);
        CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), want), "alltoallv displ > INT_MAX: %d "
              "%s", rc, comm_error(w));
    }
    free(z);
    free(one);
    free(big);
    free(two);
    free(at2);
}

static void test_alltoallv(comm *w) {
    const comm_dtype types[] = { COMM_F32, COMM_BF16, COMM_I32, COMM_U8 };
    const char *names[] = { "f32", "bf16", "i32", "u8" };
    const size_t scales[] = { 1, 3001 };   /* a few elements; blocks past the eager limit */
    for (int t = 0; t < 4; t++)
        for (int k = 0; k < 4; k++)
            for (int s = 0; s < 2; s++) a2a_case(w, k, scales[s], types[t], names[t]);
    a2a_errors(w);
}

/* ---- self -------------------------------------------------------------------------------- */

static int run_self(int argc, char **argv) {
    char err[256];
    comm *w = NULL;

    /* launcher detection: srun with several tasks and no PMI must not silently run alone */
    setenv("SLURM_STEP_NUM_TASKS", "4", 1);
    int rc = comm_world_init(&argc, &argv, 0, &w, err, sizeof err);
    CHECK(rc == COMM_ERR_ARG && strstr(err, "4 tasks") && strstr(err, "--mpi=pmix"),
          "srun without PMI: rc %d, %s", rc, err);
    unsetenv("SLURM_STEP_NUM_TASKS");
    setenv("SAMPAN_COMM_TIMEOUT", "soon", 1);
    rc = comm_world_init(&argc, &argv, 0, &w, err, sizeof err);
    CHECK(rc == COMM_ERR_ARG && strstr(err, "SAMPAN_COMM_TIMEOUT"), "bad timeout: rc %d, %s", rc,
          err);
    setenv("SAMPAN_COMM_TIMEOUT", "7.5", 1);

    rc = comm_world_init(&argc, &argv, 0, &w, err, sizeof err);
    CHECK(rc == 0 && w, "self init: %s", err);
    if (rc) return 1;
    int mpi_up = 1;
    MPI_Initialized(&mpi_up);
    CHECK(!mpi_up, "a plain run must not start MPI");
    CHECK(strcmp(w->i->name, "self") == 0 && w->size == 1 && w->rank == 0, "self: %s %d/%d",
          w->i->name, w->rank, w->size);
    CHECK(comm_get_timeout() == 7.5, "timeout from env: %g", comm_get_timeout());
    comm_set_timeout(12);
    CHECK(comm_get_timeout() == 12, "set_timeout: %g", comm_get_timeout());
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    char want[128];
    snprintf(want, sizeof want, "%s:rank 0", host);
    CHECK(strcmp(comm_where(w), want) == 0, "where: '%s' want '%s'", comm_where(w), want);

    float f[5] = { 1.5f, -2, 3, 1e30f, -0.0f };
    float f0[5];
    memcpy(f0, f, sizeof f);
    CHECK(comm_allreduce_sum(w, f, 5, COMM_F32) == 0 && memcmp(f, f0, sizeof f) == 0,
          "self allreduce f32 changed its input");
    qt_bf16 h[3] = { qt_f32_to_bf16(1.0f), qt_f32_to_bf16(-3.5f), 0x7fc0 };
    qt_bf16 h0[3];
    memcpy(h0, h, sizeof h);
    CHECK(comm_allreduce_sum(w, h, 3, COMM_BF16) == 0 && memcmp(h, h0, sizeof h) == 0,
          "self allreduce bf16 changed its input");
    uint8_t u[4] = { 1, 2, 3, 4 }, u2[4] = { 0 };
    rc = comm_allreduce_sum(w, u, 4, COMM_U8);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), "U8") && strstr(comm_error(w), host),
          "allreduce U8: rc %d, %s", rc, comm_error(w));
    rc = comm_allreduce_sum(w, f, 1, (comm_dtype)9);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), "dtype 9"), "bad dtype: %d %s", rc,
          comm_error(w));
    CHECK(comm_allgather(w, u, u2, 4, COMM_U8) == 0 && memcmp(u, u2, 4) == 0, "self allgather");
    CHECK(comm_allgather(w, u, u, 4, COMM_U8) == 0 && u[3] == 4, "self allgather in place");
    CHECK(comm_bcast(w, u, 4, 0) == 0 && u[0] == 1, "self bcast");
    rc = comm_bcast(w, u, 4, 1);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), "root 1"), "bcast root 1: %d %s", rc,
          comm_error(w));
    CHECK(comm_bcast_idle(w, u, 4, 0) == 0 && u[1] == 2, "self bcast_idle");
    test_alltoallv(w);
    float v = 2.5f;
    int32_t ix = 17;
    CHECK(comm_argmax(w, &v, &ix) == 0 && v == 2.5f && ix == 17, "self argmax: %g %d", v, ix);
    rc = comm_send(w, u, 4, 0, 0);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), "this rank"), "send to self: %d %s", rc,
          comm_error(w));
    rc = comm_recv(w, u, 4, 1, 0);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), "outside"), "recv from 1: %d %s", rc,
          comm_error(w));
    CHECK(comm_barrier(w) == 0, "self barrier");
    comm *s = NULL;
    CHECK(comm_split(w, 3, 0, &s) == 0 && s && s->size == 1 && s->rank == 0, "self split");
    comm *none = (comm *)1;
    CHECK(comm_split(w, -1, 0, &none) == 0 && none == NULL, "self split color -1");
    int lr = -1, ls = -1;
    CHECK(comm_local_rank(w, &lr, &ls) == 0 && lr == 0 && ls == 1, "self local rank %d/%d", lr,
          ls);
    comm_free(s);

    comm *nc = (comm *)1;
    rc = comm_nccl_new(w, 0, &nc, err, sizeof err);
    CHECK((rc == COMM_ERR_UNSUPPORTED && nc == NULL &&
           (strstr(err, "no GPU") || strstr(err, "built without CUDA"))) || rc == 0,
          "nccl on a machine without GPU: rc %d, %s", rc, err);
    if (rc == 0) comm_free(nc);
    CHECK(strcmp(comm_strerror(COMM_ERR_TIMEOUT), "timed out") == 0 &&
          strcmp(comm_strerror(12345), "unknown comm error") == 0, "strerror");
    CHECK(comm_dtype_size(COMM_BF16) == 2 && comm_dtype_size(COMM_U8) == 1 &&
          comm_dtype_size(COMM_I32) == 4 && comm_dtype_size((comm_dtype)7) == 0, "dtype sizes");
    rc = comm_world_init(&argc, &argv, 0, &s, err, sizeof err);
    CHECK(rc == COMM_ERR_ARG && strstr(err, "twice"), "second init: %d %s", rc, err);
    comm_world_finalize();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}

/* ---- mpi --------------------------------------------------------------------------------- */

/* 64-bit FNV-1a of the bytes, to compare results across ranks */
static uint64_t fnv(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < n; k++) h = (h ^ b[k]) * 1099511628211ull;
    return h;
}

/* 1 when every rank holds the same hash */
static int same_everywhere(uint64_t h) {
    uint64_t lo = h, hi = h;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

static void test_allreduce(comm *w, size_t count) {
    const int n = w->size, r = w->rank;
    float *f = malloc(count * sizeof *f);
    int32_t *k32 = malloc(count * sizeof *k32);
    qt_bf16 *h = malloc(count * sizeof *h);
    size_t bad = 0, first = 0;

    /* exact f32: (r+1) * (i%1000 - 500) sums to n(n+1)/2 * (i%1000 - 500) */
    for (size_t i = 0; i < count; i++) f[i] = (float)(r + 1) * (float)((int)(i % 1000) - 500);
    int rc = comm_allreduce_sum(w, f, count, COMM_F32);
    for (size_t i = 0; i < count; i++)
        if (f[i] != (float)(n * (n + 1) / 2) * (float)((int)(i % 1000) - 500) && !bad++) first = i;
    CHECK(rc == 0 && bad == 0, "allreduce f32 exact (count %zu): rc %d %s, %zu wrong, first %zu",
          count, rc, comm_error(w), bad, first);

    /* inexact f32: against a double sum over every rank's known inputs; same bits everywhere */
    for (size_t i = 0; i < count; i++) f[i] = sinf(0.37f * (float)i + (float)r);
    rc = comm_allreduce_sum(w, f, count, COMM_F32);
    bad = 0;
    double worst = 0;
    for (size_t i = 0; i < count; i++) {
        double s = 0, a = 0;
        for (int q = 0; q < n; q++) {
            double x = sinf(0.37f * (float)i + (float)q);
            s += x;
            a += fabs(x);
        }
        double e = fabs(f[i] - s) / (a * 1e-6 + 1e-30);
        if (e > worst) worst = e;
        if (e > 1 && !bad++) first = i;
    }
    CHECK(rc == 0 && bad == 0, "allreduce f32 (count %zu): %zu beyond 1e-6, worst %.3g", count,
          bad, worst);
    CHECK(same_everywhere(fnv(f, count * sizeof *f)), "allreduce f32: ranks hold different bits");

    /* i32: r*1000 + i%5000 sums to 1000 n(n-1)/2 + n (i%5000) */
    for (size_t i = 0; i < count; i++) k32[i] = r * 1000 + (int32_t)(i % 5000);
    rc = comm_allreduce_sum(w, k32, count, COMM_I32);
    bad = 0;
    for (size_t i = 0; i < count; i++)
        if (k32[i] != 1000 * n * (n - 1) / 2 + n * (int32_t)(i % 5000) && !bad++) first = i;
    CHECK(rc == 0 && bad == 0, "allreduce i32: %zu wrong, first %zu", bad, first);

    /* bf16, rounded once: rank 0 holds 256 + 2j, the others 1; summing in bf16 step by step
     * would lose each 1 (256 + 1 rounds back to 256), one rounding of the f32 sum does not */
    for (size_t i = 0; i < count; i++)
        h[i] = qt_f32_to_bf16(r == 0 ? 256.0f + 2.0f * (float)(i % 8) : 1.0f);
    rc = comm_allreduce_sum(w, h, count, COMM_BF16);
    bad = 0;
    for (size_t i = 0; i < count; i++) {
        float want = 256.0f + 2.0f * (float)(i % 8) + (float)(n - 1);
        if (h[i] != qt_f32_to_bf16(want) && !bad++) first = i;
    }
    CHECK(rc == 0 && bad == 0, "allreduce bf16 single rounding: %zu wrong, first %zu (%g)", bad,
          first, bad ? qt_bf16_to_f32(h[first]) : 0.0);

    /* bf16, general values: multiples of 1/16 with 8 significant bits; their sum is exact in
     * f32, so the answer is that sum rounded to bf16 */
    for (size_t i = 0; i < count; i++)
        h[i] = qt_f32_to_bf16((float)((int)(mix((uint32_t)r, (uint32_t)i) % 511) - 255) / 16);
    rc = comm_allreduce_sum(w, h, count, COMM_BF16);
    bad = 0;
    for (size_t i = 0; i < count; i++) {
        float s = 0;
        for (int q = 0; q < n; q++) s += (float)((int)(mix((uint32_t)q, (uint32_t)i) % 511) - 255) / 16;
        if (h[i] != qt_f32_to_bf16(s) && !bad++) first = i;
    }
    CHECK(rc == 0 && bad == 0, "allreduce bf16: %zu wrong, first %zu", bad, first);
    free(f);
    free(k32);
    free(h);
}

static void test_allgather(comm *w, size_t count) {
    const int n = w->size, r = w->rank;
    const comm_dtype types[] = { COMM_F32, COMM_BF16, COMM_I32, COMM_U8 };
    for (int t = 0; t < 4; t++) {
        size_t es = comm_dtype_size(types[t]);
        unsigned char *send = malloc(count * es), *recv = malloc((size_t)n * count * es);
        for (size_t i = 0; i < count * es; i++) send[i] = (unsigned char)mix((uint32_t)r, (uint32_t)i);
        memset(recv, 0xEE, (size_t)n * count * es);
        int rc = comm_allgather(w, send, recv, count, types[t]);
        size_t bad = 0;
        for (int q = 0; q < n; q++)
            for (size_t i = 0; i < count * es; i++)
                bad += recv[(size_t)q * count * es + i] != (unsigned char)mix((uint32_t)q, (uint32_t)i);
        CHECK(rc == 0 && bad == 0, "allgather dtype %d count %zu: rc %d %s, %zu bytes wrong", t,
              count, rc, comm_error(w), bad);

        /* in place: this rank's block already sits at its slot */
        memset(recv, 0xEE, (size_t)n * count * es);
        memcpy(recv + (size_t)r * count * es, send, count * es);
        rc = comm_allgather(w, recv + (size_t)r * count * es, recv, count, types[t]);
        bad = 0;
        for (int q = 0; q < n; q++)
            for (size_t i = 0; i < count * es; i++)
                bad += recv[(size_t)q * count * es + i] != (unsigned char)mix((uint32_t)q, (uint32_t)i);
        CHECK(rc == 0 && bad == 0, "allgather in place dtype %d: %zu bytes wrong", t, bad);
        free(send);
        free(recv);
    }
}

static void test_bcast(comm *w, size_t bytes) {
    unsigned char *b = malloc(bytes);
    for (int root = w->size - 1; root >= 0; root--) {
        for (size_t i = 0; i < bytes; i++)
            b[i] = w->rank == root ? (unsigned char)mix(1000u + (uint32_t)root, (uint32_t)i) : 0xEE;
        int rc = comm_bcast(w, b, bytes, root);
        size_t bad = 0;
        for (size_t i = 0; i < bytes; i++) bad += b[i] != (unsigned char)mix(1000u + (uint32_t)root, (uint32_t)i);
        CHECK(rc == 0 && bad == 0, "bcast %zu bytes from root %d: rc %d, %zu wrong", bytes, root,
              rc, bad);
    }
    free(b);
}

/* the winner by brute force over every rank's known pair */
static void argmax_case(comm *w, const char *name, float (*val)(int), int32_t (*idx)(int)) {
    float v = val(w->rank), best_v = val(0);
    int32_t i = idx(w->rank), best_i = idx(0);
    for (int q = 1; q < w->size; q++)
        if (val(q) > best_v || (val(q) == best_v && idx(q) < best_i)) best_v = val(q), best_i = idx(q);
    int rc = comm_argmax(w, &v, &i);
    CHECK(rc == 0 && v == best_v && i == best_i, "argmax %s: got (%g, %d) want (%g, %d)", name,
          v, (int)i, best_v, (int)best_i);
}
static float av_distinct(int q) { return (float)((q * 5 + 3) % 7) - 0.25f * (float)q; }
static int32_t ai_distinct(int q) { return 1000 * q + 7; }
static float av_tie(int q) { return 1.0f; }
static int32_t ai_down(int q) { return 100 - q; }   /* ties: the highest rank has the smallest index */
static int32_t ai_up(int q) { return 100 + q; }
static float av_pairs(int q) { return q % 2 ? 5.0f : 3.0f; }
static int32_t ai_scrambled(int q) { return (int32_t)(mix(7, (uint32_t)q) % 1000); }
static float av_neg(int q) { return q == 0 ? -INFINITY : -1e30f * (float)(q + 1); }

static void test_argmax(comm *w) {
    argmax_case(w, "distinct", av_distinct, ai_distinct);
    argmax_case(w, "all tied, index falling with rank", av_tie, ai_down);
    argmax_case(w, "all tied, index rising with rank", av_tie, ai_up);
    argmax_case(w, "tied pairs", av_pairs, ai_scrambled);
    argmax_case(w, "negative and -inf", av_neg, ai_scrambled);
}

static void test_p2p(comm *w) {
    const int n = w->size, r = w->rank;
    if (n < 2) return;
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    const size_t big = 200000;   /* above the eager limit: a real rendezvous */
    unsigned char *out = malloc(big), *in = malloc(big);
    for (size_t i = 0; i < big; i++) out[i] = (unsigned char)mix(2000u + (uint32_t)r, (uint32_t)i);
    memset(in, 0, big);
    int rc1, rc2;
    if (r % 2 == 0) {
        rc1 = comm_send(w, out, big, next, 3);
        rc2 = comm_recv(w, in, big, prev, 3);
    } else {
        rc2 = comm_recv(w, in, big, prev, 3);
        rc1 = comm_send(w, out, big, next, 3);
    }
    size_t bad = 0;
    for (size_t i = 0; i < big; i++) bad += in[i] != (unsigned char)mix(2000u + (uint32_t)prev, (uint32_t)i);
    CHECK(rc1 == 0 && rc2 == 0 && bad == 0, "ring %d->%d->%d: rc %d %d, %zu bytes wrong", prev, r,
          next, rc1, rc2, bad);

    /* tags select: two small (eager) messages received in the other order */
    if (r == 0) {
        int a = 111, b = 222;
        rc1 = comm_send(w, &a, sizeof a, 1, 7);
        rc2 = comm_send(w, &b, sizeof b, 1, 5);
        CHECK(rc1 == 0 && rc2 == 0, "tagged sends: %d %d", rc1, rc2);
        rc1 = comm_send(w, NULL, 0, 1, 9);
        CHECK(rc1 == 0, "zero-byte send: %d %s", rc1, comm_error(w));
    } else if (r == 1) {
        int a = 0, b = 0;
        rc2 = comm_recv(w, &b, sizeof b, 0, 5);
        rc1 = comm_recv(w, &a, sizeof a, 0, 7);
        CHECK(rc1 == 0 && rc2 == 0 && a == 111 && b == 222, "tag matching: a %d b %d", a, b);
        rc1 = comm_recv(w, NULL, 0, 0, 9);
        CHECK(rc1 == 0, "zero-byte recv: %d %s", rc1, comm_error(w));
    }
    rc1 = comm_send(w, out, 4, r, 0);
    CHECK(rc1 == COMM_ERR_ARG, "send to self: %d", rc1);
    rc1 = comm_recv(w, in, 4, n, 0);
    CHECK(rc1 == COMM_ERR_ARG && strstr(comm_error(w), "outside"), "recv from rank %d: %s", n,
          comm_error(w));
    rc1 = comm_send(w, out, 4, next, 40000);
    CHECK(rc1 == COMM_ERR_ARG && strstr(comm_error(w), "tag 40000"), "tag 40000: %s", comm_error(w));

    /* length mismatches: shorter than expected (our check), longer (MPI truncation) */
    if (r == 0) {
        rc1 = comm_send(w, out, 50, 1, 11);
        rc2 = comm_send(w, out, 200, 1, 12);
        CHECK(rc1 == 0 && rc2 == 0, "mismatch sends: %d %d", rc1, rc2);
    } else if (r == 1) {
        rc1 = comm_recv(w, in, 100, 0, 11);
        CHECK(rc1 == COMM_ERR_ARG && strstr(comm_error(w), "expected 100 bytes") &&
              strstr(comm_error(w), "had 50"), "short message: rc %d %s", rc1, comm_error(w));
        rc2 = comm_recv(w, in, 100, 0, 12);
        char want[64];
        snprintf(want, sizeof want, "rank %d: MPI_Recv failed: ", 1);
        CHECK(rc2 == COMM_ERR_MPI && strstr(comm_error(w), want) &&
              strstr(comm_error(w), "truncat"), "long message: rc %d %s", rc2, comm_error(w));
    }
    free(out);
    free(in);
}

static void test_barrier(comm *w) {
    if (w->rank == 0) nap(0.3);
    double t0 = now();
    int rc = comm_barrier(w);
    double t = now() - t0;
    CHECK(rc == 0 && (w->rank == 0 || t > 0.2), "barrier waited %.3f s for a 0.3 s late rank 0",
          t);
}

/* world = tp x pp: tensor-parallel groups are runs of tp consecutive ranks; a pipeline group
 * holds the ranks with the same position in their tp group */
static void test_split(comm *w, const char *host_list) {
    const int n = w->size, r = w->rank;
    for (int tp = 1; tp <= n; tp++) {
        if (n % tp) continue;
        int pp = n / tp;
        comm *tc = NULL, *pc = NULL;
        int rc1 = comm_split(w, r / tp, r % tp, &tc);
        int rc2 = comm_split(w, r % tp, r / tp, &pc);
        CHECK(rc1 == 0 && rc2 == 0 && tc && pc, "split tp %d pp %d: %d %d %s", tp, pp, rc1, rc2,
              comm_error(w));
        if (!tc || !pc) continue;
        CHECK(tc->size == tp && tc->rank == r % tp && pc->size == pp && pc->rank == r / tp,
              "tp %d: tp comm %d/%d pp comm %d/%d", tp, tc->rank, tc->size, pc->rank, pc->size);
        /* sum of (world rank + 1) over my tp group: ranks g*tp .. g*tp+tp-1 */
        int g = r / tp;
        float s = (float)(r + 1);
        int rc = comm_allreduce_sum(tc, &s, 1, COMM_F32);
        float want = (float)(tp * (g * tp) + tp * (tp + 1) / 2);
        CHECK(rc == 0 && s == want, "tp %d allreduce: %g want %g", tp, s, want);
        /* my pipeline group, in stage order: world ranks r%tp + tp*stage */
        int32_t me = r, *all = malloc((size_t)pp * sizeof *all);
        rc = comm_allgather(pc, &me, all, 1, COMM_I32);
        int bad = rc != 0;
        for (int st = 0; st < pp; st++) bad += all[st] != r % tp + tp * st;
        CHECK(!bad, "tp %d pp allgather: rc %d, %d wrong", tp, rc, bad);
        free(all);
        /* pipeline stage to stage: stage s sends to s+1 */
        if (pp > 1) {
            int v = -1;
            if (pc->rank + 1 < pp) rc1 = comm_send(pc, &me, sizeof me, pc->rank + 1, 1);
            else rc1 = 0;
            if (pc->rank > 0) {
                rc2 = comm_recv(pc, &v, sizeof v, pc->rank - 1, 1);
                CHECK(rc1 == 0 && rc2 == 0 && v == r - tp, "pp send/recv: got %d want %d", v,
                      r - tp);
            }
        }
        int lr = -1, ls = -1;
        /* node-local rank inside the tp group, by brute force over the host names */
        int want_lr = 0, want_ls = 0;
        for (int q = g * tp; q < g * tp + tp; q++) {
            if (strcmp(host_list + 64 * q, host_list + 64 * r) != 0) continue;
            want_ls++;
            if (q < r) want_lr++;
        }
        rc = comm_local_rank(tc, &lr, &ls);
        CHECK(rc == 0 && lr == want_lr && ls == want_ls, "tp local rank %d/%d want %d/%d", lr, ls,
              want_lr, want_ls);
        comm_free(tc);
        comm_free(pc);
    }
    /* key reverses the order; color < 0 leaves a rank out */
    comm *rev = NULL;
    int rc = comm_split(w, r == n - 1 && n > 1 ? -1 : 0, -r, &rev);
    if (r == n - 1 && n > 1) {
        CHECK(rc == 0 && rev == NULL, "color -1 must give no comm");
    } else {
        int m = n > 1 ? n - 1 : 1;
        CHECK(rc == 0 && rev && rev->size == m && rev->rank == m - 1 - r,
              "reversed split: rank %d size %d", rev ? rev->rank : -1, rev ? rev->size : -1);
        if (rev) {
            /* a split of a split */
            comm *half = NULL;
            rc = comm_split(rev, rev->rank % 2, rev->rank, &half);
            int hs = (m + 1 - rev->rank % 2) / 2;
            CHECK(rc == 0 && half && half->size == hs && half->rank == rev->rank / 2,
                  "nested split: %d/%d want %d/%d", half ? half->rank : -1,
                  half ? half->size : -1, rev->rank / 2, hs);
            float x = 1;
            CHECK(half && comm_allreduce_sum(half, &x, 1, COMM_F32) == 0 && x == (float)hs,
                  "nested allreduce %g", x);
            comm_free(half);
        }
        comm_free(rev);
    }
}

static void test_idle(comm *w) {
    /* rank 0 answers after 1.5 s: the others wait past the spinning phase and through the
     * watchdog's liveness checks, and must not burn a core meanwhile */
    int32_t msg[4] = { 0 };
    if (w->rank == 0) {
        nap(1.5);
        msg[0] = 42, msg[3] = -7;
    }
    double c0 = cpu_seconds(), t0 = now();
    int rc = comm_bcast_idle(w, msg, sizeof msg, 0);
    double cpu = cpu_seconds() - c0, wall = now() - t0;
    CHECK(rc == 0 && msg[0] == 42 && msg[3] == -7, "bcast_idle: rc %d msg %d %d", rc,
          (int)msg[0], (int)msg[3]);
    if (w->rank != 0)
        CHECK(cpu < 0.5 * wall, "idle wait used %.2f s of CPU in %.2f s", cpu, wall);
}

static int run_mpi(int argc, char **argv) {
    char err[256];
    comm *w = NULL;
    int rc = comm_world_init(&argc, &argv, 0, &w, err, sizeof err);
    if (rc) {
        fprintf(stderr, "comm_world_init: %s\n", err);
        return 1;
    }
    g_rank = w->rank;
    int n = w->size, r = w->rank;
    CHECK(strcmp(w->i->name, "mpi") == 0, "comm is '%s'", w->i->name);
    /* what the launcher says: mpirun's variables, or srun's */
    int env_n = env_int("OMPI_COMM_WORLD_SIZE", env_int("SLURM_STEP_NUM_TASKS", -1));
    int env_r = env_int("OMPI_COMM_WORLD_RANK", env_int("SLURM_PROCID", -1));
    CHECK(n == env_n && r == env_r, "rank %d/%d vs the launcher's %d/%d", r, n, env_r, env_n);
    char *hosts = calloc((size_t)n, 64), host[64] = "";
    gethostname(host, sizeof host - 1);
    MPI_Allgather(host, 64, MPI_CHAR, hosts, 64, MPI_CHAR, MPI_COMM_WORLD);
    char want[128];
    snprintf(want, sizeof want, "%s:rank %d", host, r);
    CHECK(strcmp(comm_where(w), want) == 0, "where '%s' want '%s'", comm_where(w), want);
    /* node-local rank: ranks on this host before me, by host name (and mpirun's variables) */
    int want_lr = 0, want_ls = 0, lr = -1, ls = -1;
    for (int q = 0; q < n; q++)
        if (strcmp(hosts + 64 * q, host) == 0) want_ls++, want_lr += q < r;
    rc = comm_local_rank(w, &lr, &ls);
    CHECK(rc == 0 && lr == want_lr && ls == want_ls, "local rank %d/%d want %d/%d", lr, ls,
          want_lr, want_ls);
    if (getenv("OMPI_COMM_WORLD_LOCAL_RANK"))
        CHECK(lr == env_int("OMPI_COMM_WORLD_LOCAL_RANK", -2) &&
              ls == env_int("OMPI_COMM_WORLD_LOCAL_SIZE", -2), "local rank %d/%d vs mpirun's "
              "%d/%d", lr, ls, env_int("OMPI_COMM_WORLD_LOCAL_RANK", -2),
              env_int("OMPI_COMM_WORLD_LOCAL_SIZE", -2));

    size_t counts[] = { 1, 1007, 70001 };
    for (int k = 0; k < 3; k++) {
        test_allreduce(w, counts[k]);
        test_allgather(w, counts[k]);
        test_bcast(w, counts[k] * 3 + 1);
    }
    test_alltoallv(w);
    test_argmax(w);
    test_p2p(w);
    test_barrier(w);
    test_split(w, hosts);
    test_idle(w);

    rc = comm_bcast(w, host, 4, n);
    CHECK(rc == COMM_ERR_ARG && strstr(comm_error(w), want), "bad root: %s", comm_error(w));
    comm *nc = (comm *)1;
    rc = comm_nccl_new(w, 0, &nc, err, sizeof err);
    CHECK((rc == COMM_ERR_UNSUPPORTED && nc == NULL) || rc == 0, "nccl here: %d %s", rc, err);
    if (rc == 0) comm_free(nc);

    free(hosts);
    int counts2[2] = { g_pass, g_fail };
    MPI_Allreduce(MPI_IN_PLACE, counts2, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    comm_world_finalize();
    if (r == 0) printf("%d passed, %d failed\n", counts2[0], counts2[1]);
    return counts2[1] ? 1 : 0;
}

/* ---- the failure scenarios (comm_test.py drives them) ------------------------------------ */

static int run_scenario(int argc, char **argv, const char *mode) {
    char err[256];
    comm *w = NULL;
    if (comm_world_init(&argc, &argv, 0, &w, err, sizeof err)) {
        fprintf(stderr, "comm_world_init: %s\n", err);
        return 1;
    }
    printf("rank %d pid %d\n", w->rank, (int)getpid());
    fflush(stdout);
    float buf[1024] = { 0 };
    const double end = now() + 120;   /* a bound on the loops, should the test driver die */
    if (strcmp(mode, "loop") == 0) {
        while (now() < end)
            if (comm_allreduce_sum(w, buf, 1024, COMM_F32)) break;
    } else if (strcmp(mode, "a2a") == 0) {
        /* rank q sends rank d (q + d) % 3 * 100 floats: uneven, some zero */
        size_t sc[64], sd[64], rcn[64], rd[64], so = 0, ro = 0;
        float *in = malloc((size_t)w->size * 200 * sizeof *in);
        for (int q = 0; q < w->size && q < 64; q++) {
            sc[q] = (size_t)((w->rank + q) % 3) * 100, sd[q] = so, so += sc[q];
            rcn[q] = sc[q], rd[q] = ro, ro += rcn[q];
        }
        float *out = calloc(so + 1, sizeof *out);
        while (in && out && w->size <= 64 && now() < end)
            if (comm_alltoallv(w, out, sc, sd, in, rcn, rd, COMM_F32)) break;
        free(in);
        free(out);
    } else if (strcmp(mode, "idle") == 0) {
        while (now() < end) {
            if (w->rank == 0) nap(0.1);
            if (comm_bcast_idle(w, buf, 64, 0)) break;
        }
    } else if (strcmp(mode, "stuck") == 0) {
        if (w->rank == 1) nap(120);
        comm_allreduce_sum(w, buf, 1024, COMM_F32);
    }
    fprintf(stderr, "%s: scenario '%s' ended: %s\n", comm_where(w), mode, comm_error(w));
    comm_abort(w, 2);
    return 2;
}

/* over INT_MAX elements: a broadcast of 2^31 + 3 bytes and an allgather of 2^31 + 3 bytes
 * per rank (2 ranks); checks a sample of positions */
static int run_big(int argc, char **argv) {
    char err[256];
    comm *w = NULL;
    if (comm_world_init(&argc, &argv, 0, &w, err, sizeof err)) {
        fprintf(stderr, "comm_world_init: %s\n", err);
        return 1;
    }
    g_rank = w->rank;
    const size_t bytes = ((size_t)1 << 31) + 3;
    unsigned char *b = malloc(bytes);
    CHECK(b != NULL, "no memory for %zu bytes", bytes);
    if (b) {
        for (size_t i = 0; i < bytes; i += 4096) b[i] = w->rank == 0 ? (unsigned char)(i >> 12) : 0;
        b[bytes - 1] = w->rank == 0 ? 0x5a : 0;
        double t0 = now();
        int rc = comm_bcast(w, b, bytes, 0);
        size_t bad = 0;
        for (size_t i = 0; i < bytes; i += 4096) bad += b[i] != (unsigned char)(i >> 12);
        CHECK(rc == 0 && bad == 0 && b[bytes - 1] == 0x5a, "bcast of %zu bytes: rc %d %s, %zu wrong "
              "(%.1f s)", bytes, rc, comm_error(w), bad, now() - t0);
        if (w->rank == 0) printf("bcast of %zu bytes: %.1f s\n", bytes, now() - t0);
        if (w->size <= 2) {
            unsigned char *all = malloc(bytes * (size_t)w->size);
            if (all) {
                /* first touch of fresh memory is slow on VMs (2 GiB: 10-20 s here): not timed */
                memset(all, 0xEE, bytes * (size_t)w->size);
                for (size_t i = 0; i < bytes; i += 4096) b[i] = (unsigned char)(w->rank + (i >> 12));
                b[bytes - 1] = (unsigned char)(0x70 + w->rank);
                t0 = now();
                rc = comm_allgather(w, b, all, bytes, COMM_U8);
                bad = 0;
                for (int q = 0; q < w->size; q++) {
                    for (size_t i = 0; i < bytes; i += 4096)
                        bad += all[(size_t)q * bytes + i] != (unsigned char)(q + (i >> 12));
                    bad += all[(size_t)q * bytes + bytes - 1] != (unsigned char)(0x70 + q);
                }
                CHECK(rc == 0 && bad == 0, "allgather of %zu bytes per rank: rc %d, %zu wrong "
                      "(%.1f s)", bytes, rc, bad, now() - t0);
                if (w->rank == 0) printf("allgather of %zu bytes per rank: %.1f s\n", bytes, now() - t0);
                free(all);
            }
        }
        free(b);
    }
    int c[2] = { g_pass, g_fail };
    MPI_Allreduce(MPI_IN_PLACE, c, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    comm_world_finalize();
    if (g_rank == 0) printf("%d passed, %d failed\n", c[0], c[1]);
    return c[1] ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "self") == 0) return run_self(argc, argv);
    if (strcmp(mode, "mpi") == 0) return run_mpi(argc, argv);
    if (strcmp(mode, "big") == 0) return run_big(argc, argv);
    if (!strcmp(mode, "loop") || !strcmp(mode, "a2a") || !strcmp(mode, "idle") ||
        !strcmp(mode, "stuck"))
        return run_scenario(argc, argv, mode);
    fprintf(stderr, "usage: test_comm self|mpi|loop|a2a|idle|stuck|big\n");
    return 2;
}
