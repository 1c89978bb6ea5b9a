/* benchmarks/allreduce.c — all-reduce time over message sizes, reported as nccl-tests does.
 *
 * For each size (bytes, from --min to --max by --factor): one checked all-reduce of known
 * integers (#wrong counts elements that differ from the closed-form sum), --warmup untimed
 * ones, then `iters` timed ones between barriers; time is the per-iteration mean, averaged over
 * the ranks. algbw = bytes / time; busbw = algbw * 2(n-1)/n, the factor nccl-tests uses for
 * all-reduce (the bytes each rank must move in a ring, so busbw is comparable across n).
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

static void bench__usage(FILE *f) {
    fprintf(f,
            "usage: allreduce [--min BYTES] [--max BYTES] [--factor F] [--dtype f32|bf16]\n"
            "                 [--iters N] [--warmup N] [--json FILE] [--mpi]\n"
            "  sizes from --min (4K) to --max (64M) by --factor (4); --iters 0 (default) picks\n"
            "  the count per size; run under mpirun or srun for several ranks\n");
}

static int bench__parse(int argc, char **argv, bench__opts *o) {
    *o = (bench__opts){ .min = 4096, .max = (size_t)64 << 20, .factor = 4, .dtype = COMM_F32,
                        .iters = 0, .warmup = 2 };
    for (int k = 1; k < argc; k++) {
        const char *a = argv[k], *v = k + 1 < argc ? argv[k + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--mpi")) { o->force_mpi = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { bench__usage(stdout); return 1; }
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
            fprintf(stderr, "allreduce: bad option %s %s\n", a, v ? v : "(missing value)");
            bench__usage(stderr);
            return 2;
        }
        k++;
    }
    if (o->min > o->max) {
        fprintf(stderr, "allreduce: --min %zu is above --max %zu\n", o->min, o->max);
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

static void bench__fill(void *buf, size_t count, comm_dtype t, int rank) {
    for (size_t i = 0; i < count; i++) {
        float v = (float)((rank + 1) * (int)(i % 7));
        if (t == COMM_F32) ((float *)buf)[i] = v;
        else ((qt_bf16 *)buf)[i] = qt_f32_to_bf16(v);
    }
}

/* elements that differ from n(n+1)/2 * (i%7) (exact in f32 and, for n <= 8, in bf16) */
static long bench__wrong(const void *buf, size_t count, comm_dtype t, int n) {
    long bad = 0;
    for (size_t i = 0; i < count; i++) {
        float want = (float)(n * (n + 1) / 2 * (int)(i % 7));
        float got = t == COMM_F32 ? ((const float *)buf)[i]
                                  : qt_bf16_to_f32(((const qt_bf16 *)buf)[i]);
        bad += got != want;
    }
    return bad;
}

int bench_allreduce_main(int argc, char **argv) {
    bench__opts o;
    int rc = bench__parse(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    char err[256];
    comm *w = NULL;
    if (comm_world_init(&argc, &argv, o.force_mpi, &w, err, sizeof err)) {
        fprintf(stderr, "allreduce: %s\n", err);
        return 2;
    }
    const int n = w->size, r = w->rank;
    const size_t es = comm_dtype_size(o.dtype);
    FILE *out = stdout;
    if (r == 0 && o.json && !(out = fopen(o.json, "w"))) {
        fprintf(stderr, "allreduce: cannot write %s\n", o.json);
        out = stdout;
    }
    float ceiling = r == 0 ? (float)bench__memcpy_gbps() : 0;
    rc = comm_bcast(w, &ceiling, sizeof ceiling, 0);
    void *buf = malloc(o.max / es * es + es);
    if (rc || !buf) {
        fprintf(stderr, "allreduce: %s\n", rc ? comm_error(w) : "out of memory");
        comm_abort(w, 2);
    }
    if (r == 0) {
        fprintf(out, "{\n  \"bench\": \"allreduce\",\n  \"comm\": \"%s\",\n  \"ranks\": %d,\n"
                "  \"dtype\": \"%s\",\n  \"ceiling\": {\"memcpy_GBps\": %.3f, \"what\": "
                "\"one core's memcpy on rank 0; busbw over shared memory stays below it\"},\n"
                "  \"results\": [", w->i->name, n, o.dtype == COMM_F32 ? "f32" : "bf16",
                ceiling);
        fprintf(stderr, "# all-reduce, %d ranks (%s), %s; ceiling: memcpy %.2f GB/s\n", n,
                w->i->name, o.dtype == COMM_F32 ? "f32" : "bf16", ceiling);
        fprintf(stderr, "# %12s %12s %6s %12s %10s %10s %7s\n", "size(B)", "count", "iters",
                "time(us)", "algbw", "busbw", "#wrong");
    }
    long total_wrong = 0;
    int first = 1;
    for (double sz = (double)o.min; sz <= (double)o.max * 1.0000001; sz *= o.factor) {
        size_t count = (size_t)sz / es, bytes = count * es;
        if (count == 0) continue;
        int iters = o.iters;
        if (iters == 0) {   /* about 0.1-0.2 s per size on this kind of machine */
            double it = (double)((size_t)512 << 20) / (double)bytes;
            iters = it < 5 ? 5 : it > 1000 ? 1000 : (int)it;
        }
        bench__fill(buf, count, o.dtype, r);
        rc = comm_allreduce_sum(w, buf, count, o.dtype);
        int32_t wrong = rc ? (int32_t)count : (int32_t)bench__wrong(buf, count, o.dtype, n);
        memset(buf, 0, bytes);   /* zeros stay zeros: no overflow over many iterations */
        for (int k = 0; k < o.warmup && !rc; k++) rc = comm_allreduce_sum(w, buf, count, o.dtype);
        if (!rc) rc = comm_barrier(w);
        double t0 = clk_now();
        for (int k = 0; k < iters && !rc; k++) rc = comm_allreduce_sum(w, buf, count, o.dtype);
        float t = (float)((clk_now() - t0) / iters);
        if (!rc) rc = comm_allreduce_sum(w, &t, 1, COMM_F32);
        if (!rc) rc = comm_allreduce_sum(w, &wrong, 1, COMM_I32);
        if (rc) {
            fprintf(stderr, "allreduce: %s\n", comm_error(w));
            comm_abort(w, 2);
        }
        double time = (double)t / n;
        double algbw = (double)bytes / time * 1e-9, busbw = algbw * 2.0 * (n - 1) / n;
        total_wrong += wrong;
        if (r == 0) {
            fprintf(out, "%s\n    {\"bytes\": %zu, \"count\": %zu, \"iters\": %d, \"time_us\": %.3f,"
                    " \"algbw_GBps\": %.4f, \"busbw_GBps\": %.4f, \"wrong\": %d}",
                    first ? "" : ",", bytes, count, iters, time * 1e6, algbw, busbw, (int)wrong);
            fprintf(stderr, "  %12zu %12zu %6d %12.2f %10.3f %10.3f %7d\n", bytes, count, iters,
                    time * 1e6, algbw, busbw, (int)wrong);
        }
        first = 0;
    }
    if (r == 0) {
        fprintf(out, "\n  ]\n}\n");
        if (out != stdout) fclose(out);
    }
    free(buf);
    comm_world_finalize();
    return total_wrong ? 1 : 0;
}
