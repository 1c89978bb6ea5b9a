/* benchmarks/allreduce.c — collective time over message sizes, reported as nccl-tests does:
 * all-reduce (`sampan bench allreduce`) and all-to-all (`sampan bench alltoall`), one harness.
 *
 * For each size (bytes per rank, from --min to --max by --factor): one checked collective of
 * known values (#wrong counts elements that differ from what each rank computes on its own),
 * --warmup untimed ones, then `iters` timed ones between barriers; time is the per-iteration
 * mean, averaged over the ranks. algbw = bytes / time; busbw = algbw times the factor
 * nccl-tests uses (the bytes each rank must move, so busbw is comparable across n):
 *   all-reduce  in place over `bytes`; factor 2(n-1)/n (a ring's reduce-scatter + allgather);
 *   all-to-all  comm_alltoallv with equal blocks: `bytes` sent by each rank, bytes/n to every
 *               rank (itself included), as many received; factor (n-1)/n (the block a rank
 *               keeps does not cross a link). The size is rounded down to n elements.
 * Each collective supplies only its buffers, its check and its factor (bench__coll_i).
 * The ceiling printed with it is one core's memcpy bandwidth on rank 0: the shared-memory
 * transport moves every byte through such copies, so busbw on one node stays below it.
 * Output: a JSON document (stdout or --json FILE) and a table on stderr, from rank 0.
 */
#include "benchmarks/allreduce.h"
#include "clock.h"
#include "comm.h"
#include "qtypes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t min, max;
    double factor;
    comm_dtype dtype;
    int iters, warmup, force_mpi;
    const char *json;
} bench__opts;

/* "4096", "4K", "64M", "1G" (binary units) */
static int bench__size(const char *s, size_t *out) {
    char *end;
    double v = strtod(s, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1024, end++;
    else if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024, end++;
    if (end == s || *end || v <= 0) return -1;
    *out = (size_t)(v * mul);
    return 0;
}

static void bench__usage(FILE *f, const char *name) {
    fprintf(f,
            "usage: %s [--min BYTES] [--max BYTES] [--factor F] [--dtype f32|bf16]\n"
            "       %*s [--iters N] [--warmup N] [--json FILE] [--mpi]\n"
            "  sizes (bytes per rank) from --min (4K) to --max (64M) by --factor (4); --iters 0\n"
            "  (default) picks the count per size; run under mpirun or srun for several ranks\n",
            name, (int)strlen(name), "");
}

static int bench__parse(int argc, char **argv, const char *name, bench__opts *o) {
    *o = (bench__opts){ .min = 4096, .max = (size_t)64 << 20, .factor = 4, .dtype = COMM_F32,
                        .iters = 0, .warmup = 2 };
    for (int k = 1; k < argc; k++) {
        const char *a = argv[k], *v = k + 1 < argc ? argv[k + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--mpi")) { o->force_mpi = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { bench__usage(stdout, name); return 1; }
        if (!v) bad = 1;
        else if (!strcmp(a, "--min")) bad = bench__size(v, &o->min);
        else if (!strcmp(a, "--max")) bad = bench__size(v, &o->max);
        else if (!strcmp(a, "--factor")) bad = (o->factor = atof(v)) < 1.01;
        else if (!strcmp(a, "--iters")) bad = (o->iters = atoi(v)) < 0;
        else if (!strcmp(a, "--warmup")) bad = (o->warmup = atoi(v)) < 0;
        else if (!strcmp(a, "--json")) o->json = v;
        else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f32")) o->dtype = COMM_F32;
            else if (!strcmp(v, "bf16")) o->dtype = COMM_BF16;
            else bad = 1;
        } else bad = 1;
        if (bad) {
            fprintf(stderr, "%s: bad option %s %s\n", name, a, v ? v : "(missing value)");
            bench__usage(stderr, name);
            return 2;
        }
        k++;
    }
    if (o->min > o->max) {
        fprintf(stderr, "%s: --min %zu is above --max %zu\n", name, o->min, o->max);
        return 2;
    }
    return 0;
}

/* one core's memcpy bandwidth, bytes copied per second (best of 5 copies of 64 MiB) */
static double bench__memcpy_gbps(void) {
    const size_t n = (size_t)64 << 20;
    char *a = malloc(n), *b = malloc(n);
    double best = 0;
    if (a && b) {
        memset(a, 1, n);
        memset(b, 2, n);
        for (int k = 0; k < 5; k++) {
            double t0 = clk_now();
            memcpy(k % 2 ? a : b, k % 2 ? b : a, n);
            double t = clk_now() - t0;
            if (t > 0 && (double)n / t > best) best = (double)n / t;
        }
    }
    free(a);
    free(b);
    return best * 1e-9;
}

/* One collective's part of the run: buffers sized for `count` elements per rank (send holds
 * them; recv is the all-to-all's output, NULL for the in-place all-reduce). */
typedef struct {
    comm *w;
    comm_dtype t;
    size_t count;
    void *send, *recv;
    size_t *counts, *displs;   /* all-to-all: count/n per peer, packed in rank order */
} bench__ctx;

typedef struct {
    const char *name;    /* the subcommand and the JSON's "bench" */
    const char *title;   /* for the table */
    int per_rank;        /* counts are multiples of n (one equal block per peer) */
    double (*busbw)(int n);   /* busbw = algbw * busbw(n) */
    void (*fill)(bench__ctx *x);          /* known values into send */
    long (*wrong)(const bench__ctx *x);   /* after one run on fill()'s values */
    void (*reset)(bench__ctx *x);         /* before the untimed and timed runs */
    int (*run)(bench__ctx *x);
} bench__coll_i;

static float bench__get(const void *buf, size_t i, comm_dtype t) {
    return t == COMM_F32 ? ((const float *)buf)[i] : qt_bf16_to_f32(((const qt_bf16 *)buf)[i]);
}

static void bench__set(void *buf, size_t i, comm_dtype t, float v) {
    if (t == COMM_F32) ((float *)buf)[i] = v;
    else ((qt_bf16 *)buf)[i] = qt_f32_to_bf16(v);
}

/* ---- all-reduce: (rank+1) * (i%7), summing to n(n+1)/2 * (i%7), exact in f32 and, for
 * n <= 8, in bf16 ---------------------------------------------------------------------------- */

static double bench__ar_busbw(int n) { return 2.0 * (n - 1) / n; }

static void bench__ar_fill(bench__ctx *x) {
    for (size_t i = 0; i < x->count; i++)
        bench__set(x->send, i, x->t, (float)((x->w->rank + 1) * (int)(i % 7)));
}

static long bench__ar_wrong(const bench__ctx *x) {
    const int n = x->w->size;
    long bad = 0;
    for (size_t i = 0; i < x->count; i++)
        bad += bench__get(x->send, i, x->t) != (float)(n * (n + 1) / 2 * (int)(i % 7));
    return bad;
}

/* zeros stay zeros: no overflow over many iterations */
static void bench__ar_reset(bench__ctx *x) { memset(x->send, 0, x->count * comm_dtype_size(x->t)); }

static int bench__ar_run(bench__ctx *x) {
    return comm_allreduce_sum(x->w, x->send, x->count, x->t);
}

/* ---- all-to-all: element i of the block s sends d is (s*31 + d*7 + i) % 251, an integer that
 * f32 and bf16 hold exactly --------------------------------------------------------------- */

static float bench__a2a_value(int s, int d, size_t i) {
    return (float)(((size_t)s * 31 + (size_t)d * 7 + i) % 251);
}

static double bench__a2a_busbw(int n) { return (double)(n - 1) / n; }

static void bench__a2a_layout(bench__ctx *x) {
    const int n = x->w->size;
    for (int q = 0; q < n; q++) {
        x->counts[q] = x->count / (size_t)n;
        x->displs[q] = (size_t)q * x->counts[q];
    }
}

static void bench__a2a_fill(bench__ctx *x) {
    bench__a2a_layout(x);
    for (int q = 0; q < x->w->size; q++)
        for (size_t i = 0; i < x->counts[q]; i++)
            bench__set(x->send, x->displs[q] + i, x->t, bench__a2a_value(x->w->rank, q, i));
    memset(x->recv, 0xEE, x->count * comm_dtype_size(x->t));
}

static long bench__a2a_wrong(const bench__ctx *x) {
    long bad = 0;
    for (int q = 0; q < x->w->size; q++)
        for (size_t i = 0; i < x->counts[q]; i++)
            bad += bench__get(x->recv, x->displs[q] + i, x->t) !=
                   bench__a2a_value(q, x->w->rank, i);
    return bad;
}

static void bench__a2a_reset(bench__ctx *x) {}

static int bench__a2a_run(bench__ctx *x) {
    return comm_alltoallv(x->w, x->send, x->counts, x->displs, x->recv, x->counts, x->displs,
                          x->t);
}

static const bench__coll_i bench__allreduce = {
    /* .name = */ "allreduce",
    /* .title = */ "all-reduce",
    /* .per_rank = */ 0,
    /* .busbw = */ bench__ar_busbw,
    /* .fill = */ bench__ar_fill,
    /* .wrong = */ bench__ar_wrong,
    /* .reset = */ bench__ar_reset,
    /* .run = */ bench__ar_run,
};

static const bench__coll_i bench__alltoall = {
    /* .name = */ "alltoall",
    /* .title = */ "all-to-all",
    /* .per_rank = */ 1,
    /* .busbw = */ bench__a2a_busbw,
    /* .fill = */ bench__a2a_fill,
    /* .wrong = */ bench__a2a_wrong,
    /* .reset = */ bench__a2a_reset,
    /* .run = */ bench__a2a_run,
};

static int bench__coll_main(int argc, char **argv, const bench__coll_i *op) {
    bench__opts o;
    int rc = bench__parse(argc, argv, op->name, &o);
    if (rc) return rc == 1 ? 0 : 2;
    char err[256];
    comm *w = NULL;
    if (comm_world_init(&argc, &argv, o.force_mpi, &w, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", op->name, err);
        return 2;
    }
    const int n = w->size, r = w->rank;
    const size_t es = comm_dtype_size(o.dtype);
    const char *tname = o.dtype == COMM_F32 ? "f32" : "bf16";
    FILE *out = stdout;
    if (r == 0 && o.json && !(out = fopen(o.json, "w"))) {
        fprintf(stderr, "%s: cannot write %s\n", op->name, o.json);
        out = stdout;
    }
    float ceiling = r == 0 ? (float)bench__memcpy_gbps() : 0;
    rc = comm_bcast(w, &ceiling, sizeof ceiling, 0);
    bench__ctx x = { .w = w, .t = o.dtype };
    x.send = malloc(o.max / es * es + es);
    x.recv = op->per_rank ? malloc(o.max / es * es + es) : NULL;
    x.counts = calloc((size_t)n, sizeof *x.counts);
    x.displs = calloc((size_t)n, sizeof *x.displs);
    if (rc || !x.send || (op->per_rank && !x.recv) || !x.counts || !x.displs) {
        fprintf(stderr, "%s: %s\n", op->name, rc ? comm_error(w) : "out of memory");
        comm_abort(w, 2);
    }
    if (r == 0) {
        fprintf(out, "{\n  \"bench\": \"%s\",\n  \"comm\": \"%s\",\n  \"ranks\": %d,\n"
                "  \"dtype\": \"%s\",\n  \"busbw_factor\": %.6f,\n  \"ceiling\": {\"memcpy_GBps\": "
                "%.3f, \"what\": \"one core's memcpy on rank 0; busbw over shared memory stays "
                "below it\"},\n  \"results\": [", op->name, w->i->name, n, tname, op->busbw(n),
                ceiling);
        fprintf(stderr, "# %s, %d ranks (%s), %s; ceiling: memcpy %.2f GB/s\n", op->title, n,
                w->i->name, tname, ceiling);
        fprintf(stderr, "# %12s %12s %6s %6s %12s %10s %10s %7s\n", "size(B)", "count", "type",
                "iters", "time(us)", "algbw", "busbw", "#wrong");
    }
    long total_wrong = 0;
    int first = 1;
    for (double sz = (double)o.min; sz <= (double)o.max * 1.0000001; sz *= o.factor) {
        size_t count = (size_t)sz / es;
        if (op->per_rank) count -= count % (size_t)n;
        size_t bytes = count * es;
        if (count == 0) continue;
        int iters = o.iters;
        if (iters == 0) {   /* about 0.1-0.2 s per size on this kind of machine */
            double it = (double)((size_t)512 << 20) / (double)bytes;
            iters = it < 5 ? 5 : it > 1000 ? 1000 : (int)it;
        }
        x.count = count;
        op->fill(&x);
        rc = op->run(&x);
        int32_t wrong = rc ? (int32_t)count : (int32_t)op->wrong(&x);
        op->reset(&x);
        for (int k = 0; k < o.warmup && !rc; k++) rc = op->run(&x);
        if (!rc) rc = comm_barrier(w);
        double t0 = clk_now();
        for (int k = 0; k < iters && !rc; k++) rc = op->run(&x);
        float t = (float)((clk_now() - t0) / iters);
        if (!rc) rc = comm_allreduce_sum(w, &t, 1, COMM_F32);
        if (!rc) rc = comm_allreduce_sum(w, &wrong, 1, COMM_I32);
        if (rc) {
            fprintf(stderr, "%s: %s\n", op->name, comm_error(w));
            comm_abort(w, 2);
        }
        double time = (double)t / n;
        double algbw = (double)bytes / time * 1e-9, busbw = algbw * op->busbw(n);
        total_wrong += wrong;
        if (r == 0) {
            fprintf(out, "%s\n    {\"bytes\": %zu, \"count\": %zu, \"type\": \"%s\", \"iters\": %d, "
                    "\"time_us\": %.3f, \"algbw_GBps\": %.4f, \"busbw_GBps\": %.4f, "
                    "\"wrong\": %d}", first ? "" : ",", bytes, count, tname, iters, time * 1e6,
                    algbw, busbw, (int)wrong);
            fprintf(stderr, "  %12zu %12zu %6s %6d %12.2f %10.3f %10.3f %7d\n", bytes, count,
                    tname, iters, time * 1e6, algbw, busbw, (int)wrong);
        }
        first = 0;
    }
    if (r == 0) {
        fprintf(out, "\n  ]\n}\n");
        if (out != stdout) fclose(out);
    }
    free(x.send);
    free(x.recv);
    free(x.counts);
    free(x.displs);
    comm_world_finalize();
    return total_wrong ? 1 : 0;
}

int bench_allreduce_main(int argc, char **argv) {
    return bench__coll_main(argc, argv, &bench__allreduce);
}

int bench_alltoall_main(int argc, char **argv) {
    return bench__coll_main(argc, argv, &bench__alltoall);
}
