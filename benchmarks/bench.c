/* benchmarks/bench.c — `sampan bench`: prompt and decode speed against measured ceilings.
 *
 * One harness, one schema (nccl-tests): a run first measures, with each requested thread count,
 *   read   GB/s     AVX2 read-sum of a 1 GiB buffer (far above the caches), best of 5 passes
 *   triad  GB/s     STREAM a[i] = b[i] + s*c[i] on doubles, 3 x 128 MiB, 24 B per element counted
 *   fma    GFLOP/s  12 independent ymm FMA chains per thread (2 flops x 8 lanes per FMA), timed
 *                    by each thread's CPU clock and summed: the cores' peak
 * then, for each model and thread count,
 *   pp  one batch of --pp tokens:  tokens/s, GFLOP/s (2 x weight params x tokens + attention),
 *       fraction of the FMA ceiling (MoE: the active params, k of E routed experts per token)
 *   tg  --tg single-token steps:   tokens/s, weight GB/s (weight bytes streamed per token, for
 *       MoE the active ones: the dense matrices and k / E of the routed experts' bytes, x
 *       tokens/s), fraction of the read ceiling, and fraction of the adjacent read bandwidth:
 *       a read pass over a 128 MiB buffer (the same AVX2 loop and threads) before the first
 *       step and after every BENCH_PROBE_EVERY steps, outside the timed steps; their mean is
 *       what the memory bus gave a streaming read while this repetition ran; %adj is the median
 *       over the repetitions of (weight GB/s / adjacent read GB/s). On a shared host the
 *       bandwidth moves by a third within a minute, so this pairs like with like; the best-of
 *       ceiling stays beside it.
 * Model mode drives the model the way `sampan run` does, through the scheduler's step
 * (scheduler/sched.h: one sequence, one sched_step per timed forward pass, sampling and the
 * step's bookkeeping included), so its figures are those of the serving code path.
 * Models: each -m file, or tinyllama-1.1b-shaped synthetic models (synth_model) of each --types
 * entry, made once in --model-dir. --matmul measures kern_matmul alone on the same shapes
 * (7 matrices per layer plus the output head) with random weights in memory, no model file.
 * The ceilings are measured again after the runs and the better value kept (the machine may be
 * shared). Output: progress on stderr, then the ceilings and one table row per run on stdout
 * and, with --json, the machine, the ceilings and every run.
 */
#include <errno.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "backend.h"
#include "backend_cuda.h"
#include "bench.h"
#include "clock.h"
#include "gguf.h"
#include "kern.h"
#include "model.h"
#include "pool.h"
#include "scheduler/sched.h"
#include "synth.h"

#define BENCH_SCHEMA "sampan-bench-1"
#define BENCH_MAX_LIST 16
#define BENCH_PROBE_EVERY 8    /* decode steps between adjacent read passes */
#define BENCH_PROBE_MIB 128    /* 4x the L3 */

typedef struct {
    const char *models[BENCH_MAX_LIST];
    int n_models;
    int types[BENCH_MAX_LIST];
    int n_types;
    int threads[BENCH_MAX_LIST];
    int n_threads;
    int pp, tg, reps, layers;
    const char *json;
    const char *model_dir;
    const char *shape;
    int quick, matmul;
    int kv_type;          /* model mode: KV cache elements (QT_F16 unless --kv-type) */
    const char *backend;  /* model mode: "cpu" unless --backend */
} bench_opts;

typedef struct {
    int threads;
    double read_gbs, triad_gbs, fma_gflops;
} bench_ceil;

typedef struct {
    const char *kind;     /* "model" or "matmul" */
    char model[256];      /* file, or the shape for matmul runs */
    char type[16];        /* the file's type mix (general.file_type), else its main weight type */
    char mix[128];        /* model runs: share of the streamed weight bytes by type */
    int threads;
    const char *test;     /* "pp" or "tg" */
    int tokens;
    double seconds;       /* best of the repetitions */
    double flops;         /* per repetition */
    double bytes;         /* weight bytes streamed per repetition */
    double read_adj_gbs;  /* tg: mean adjacent read pass of the best repetition; 0: none */
    double adj[BENCH_MAX_LIST];   /* tg: each repetition's weight GB/s / its adjacent read */
    int n_adj;
    /* device backends (CUDA): the device's peaks, from backend_cuda_info; 0 on the CPU */
    char device[160];
    double dev_peak_bytes_s;  /* HBM */
    double dev_peak_flops;    /* of the path this weight type takes (tensor cores or SIMT) */
    int dev_invariant;        /* the batch-invariant mode was measured */
} bench_result;

typedef struct {
    bench_ceil ceil[BENCH_MAX_LIST];
    int n_ceil;
    bench_result *res;
    int n_res, cap_res;
} bench_log;

static uint64_t bench__rng(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---- ceilings --------------------------------------------------------------------------- */

static void *bench__alloc(size_t bytes) {
    void *p = NULL;
    size_t align = 2u << 20;
    bytes = (bytes + align - 1) / align * align;
    if (posix_memalign(&p, align, bytes) != 0) return NULL;
    madvise(p, bytes, MADV_HUGEPAGE);   /* fewer TLB misses; advisory */
    return p;
}

typedef struct {
    uint8_t *buf;
    size_t bytes;
    double *a, *b, *c;
    size_t n;             /* triad elements */
    long iters;           /* fma loop */
    uint64_t *sink;       /* (threads * 8): results, so that no loop is optimised away */
    double *cpu;          /* (threads * 8): CPU seconds of each thread's FMA loop */
} bench__job;

static void bench__slice(size_t n, size_t align, int ith, int nth, size_t *lo, size_t *hi) {
    size_t per = (n / nth + align - 1) / align * align;
    *lo = per * (size_t)ith < n ? per * (size_t)ith : n;
    *hi = *lo + per < n ? *lo + per : n;
}

__attribute__((target("avx2"))) static uint64_t bench__read_avx2(const uint8_t *p, size_t n) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    s0 = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t v[4];
    _mm256_storeu_si256((__m256i *)v, s0);
    return v[0] + v[1] + v[2] + v[3];
}

static uint64_t bench__read_plain(const uint8_t *p, size_t n) {
    uint64_t s = 0, w;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        s += w;
    }
    return s;
}

static int bench__have_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static void bench__touch_job(void *arg, int ith, int nth) {
    bench__job *j = arg;
    size_t lo, hi;
    bench__slice(j->bytes, 4096, ith, nth, &lo, &hi);
    for (size_t i = lo; i < hi; i++) j->buf[i] = (uint8_t)(i * 131u);
}

static void bench__read_job(void *arg, int ith, int nth) {
    bench__job *j = arg;
    size_t lo, hi;
    bench__slice(j->bytes, 4096, ith, nth, &lo, &hi);
    j->sink[ith * 8] += bench__have_avx2() ? bench__read_avx2(j->buf + lo, hi - lo)
                                           : bench__read_plain(j->buf + lo, hi - lo);
}

__attribute__((target("avx2,fma"))) static void bench__triad_avx2(double *a, const double *b,
                                                                  const double *c, size_t n,
                                                                  double s) {
    for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

static void bench__triad_plain(double *a, const double *b, const double *c, size_t n, double s) {
    for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

static void bench__triad_init_job(void *arg, int ith, int nth) {
    bench__job *j = arg;
    size_t lo, hi;
    bench__slice(j->n, 512, ith, nth, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        j->a[i] = 0.0;
        j->b[i] = 1.0;
        j->c[i] = 2.0;
    }
}

static void bench__triad_job(void *arg, int ith, int nth) {
    bench__job *j = arg;
    size_t lo, hi;
    bench__slice(j->n, 512, ith, nth, &lo, &hi);
    if (bench__have_avx2()) bench__triad_avx2(j->a + lo, j->b + lo, j->c + lo, hi - lo, 3.0);
    else bench__triad_plain(j->a + lo, j->b + lo, j->c + lo, hi - lo, 3.0);
}

#define BENCH_FMA_CHAINS 12
/* 12 chains in named registers: 12 in flight cover 2 FMA ports x 4-5 cycles of latency */
__attribute__((target("avx2,fma"))) static double bench__fma_avx2(long iters) {
    const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
    __m256 a0 = _mm256_set1_ps(1.0f), a1 = _mm256_set1_ps(2.0f), a2 = _mm256_set1_ps(3.0f);
    __m256 a3 = _mm256_set1_ps(4.0f), a4 = _mm256_set1_ps(5.0f), a5 = _mm256_set1_ps(6.0f);
    __m256 a6 = _mm256_set1_ps(7.0f), a7 = _mm256_set1_ps(8.0f), a8 = _mm256_set1_ps(9.0f);
    __m256 a9 = _mm256_set1_ps(10.0f), a10 = _mm256_set1_ps(11.0f), a11 = _mm256_set1_ps(12.0f);
    for (long i = 0; i < iters; i++) {
        a0 = _mm256_fmadd_ps(a0, m, c);
        a1 = _mm256_fmadd_ps(a1, m, c);
        a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c);
        a4 = _mm256_fmadd_ps(a4, m, c);
        a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c);
        a7 = _mm256_fmadd_ps(a7, m, c);
        a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c);
        a10 = _mm256_fmadd_ps(a10, m, c);
        a11 = _mm256_fmadd_ps(a11, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float v[8];
    _mm256_storeu_ps(v, s);
    return v[0] + v[7];
}

static double bench__cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench__fma_job(void *arg, int ith, int nth) {
    bench__job *j = arg;
    double t0 = bench__cpu_now();
    double r = bench__have_avx2() ? bench__fma_avx2(j->iters) : 0.0;
    j->cpu[ith * 8] = bench__cpu_now() - t0;
    j->sink[ith * 8] += (uint64_t)r;
}

/* Adjacent read passes (see the header): `run` runs a job on the threads under test. */
typedef void (*bench__runner)(void *ctx, pool_fn fn, void *arg);
typedef struct {
    bench__job j;
    bench__runner run;
    void *ctx;
    double sum;           /* GB/s of the passes since bench__probe_reset */
    int n;
} bench__probe;

static void bench__run_pool(void *ctx, pool_fn fn, void *arg) { pool_run(ctx, fn, arg); }

static int bench__probe_init(bench__probe *pr, const bench_opts *o, int threads,
                             bench__runner run, void *ctx) {
    memset(pr, 0, sizeof *pr);
    pr->run = run;
    pr->ctx = ctx;
    pr->j.bytes = (size_t)(o->quick ? 64 : BENCH_PROBE_MIB) << 20;
    pr->j.sink = calloc((size_t)threads * 8, sizeof *pr->j.sink);
    pr->j.buf = bench__alloc(pr->j.bytes);
    if (!pr->j.sink || !pr->j.buf) return -1;
    run(ctx, bench__touch_job, &pr->j);
    return 0;
}

static void bench__probe_pass(bench__probe *pr) {
    double t0 = clk_now();
    pr->run(pr->ctx, bench__read_job, &pr->j);
    pr->sum += (double)pr->j.bytes / (clk_now() - t0) * 1e-9;
    pr->n++;
}

static void bench__probe_free(bench__probe *pr) {
    free(pr->j.sink);
    free(pr->j.buf);
}

/* Best-of-passes ceilings with `threads` threads; 0 or an error message. */
static int bench__ceilings(const bench_opts *o, int threads, bench_ceil *out, char *err,
                           size_t errlen) {
    pool *p = pool_new(threads);
    if (!p) {
        snprintf(err, errlen, "bench: cannot start a pool of %d threads", threads);
        return -1;
    }
    bench__job j;
    memset(&j, 0, sizeof j);
    out->threads = threads;
    int passes = 5;
    j.sink = calloc((size_t)threads * 8, sizeof *j.sink);
    j.cpu = calloc((size_t)threads * 8, sizeof *j.cpu);
    if (!j.sink || !j.cpu) goto oom;

    j.bytes = (o->quick ? 256u : 1024u) << 20;   /* both far above a 32 MiB L3 */
    j.buf = bench__alloc(j.bytes);
    if (!j.buf) goto oom;
    pool_run(p, bench__touch_job, &j);
    double best = 1e30;
    for (int i = 0; i < passes; i++) {
        double t0 = clk_now();
        pool_run(p, bench__read_job, &j);
        double t = clk_now() - t0;
        best = t < best ? t : best;
    }
    out->read_gbs = (double)j.bytes / best * 1e-9;
    free(j.buf);
    j.buf = NULL;

    j.n = ((o->quick ? 64u : 128u) << 20) / sizeof(double);
    j.a = bench__alloc(j.n * sizeof(double));
    j.b = bench__alloc(j.n * sizeof(double));
    j.c = bench__alloc(j.n * sizeof(double));
    if (!j.a || !j.b || !j.c) goto oom;
    pool_run(p, bench__triad_init_job, &j);
    best = 1e30;
    for (int i = 0; i < passes; i++) {
        double t0 = clk_now();
        pool_run(p, bench__triad_job, &j);
        double t = clk_now() - t0;
        best = t < best ? t : best;
    }
    out->triad_gbs = 3.0 * sizeof(double) * (double)j.n / best * 1e-9;
    free(j.a);
    free(j.b);
    free(j.c);
    j.a = j.b = j.c = NULL;

    /* a core's FMA rate is its own: timed by each thread's CPU clock, so other processes on a
     * shared machine do not lower the ceiling (they lower the runs measured against it) */
    j.iters = o->quick ? 1000000 : 10000000;
    out->fma_gflops = 0;
    for (int i = 0; i < 3; i++) {
        pool_run(p, bench__fma_job, &j);
        double rate = 0;
        for (int t = 0; t < threads; t++)
            rate += (double)j.iters * BENCH_FMA_CHAINS * 16.0 / j.cpu[t * 8] * 1e-9;
        if (bench__have_avx2() && rate > out->fma_gflops) out->fma_gflops = rate;
    }
    free(j.sink);
    free(j.cpu);
    pool_free(p);
    return 0;
oom:
    free(j.sink);
    free(j.cpu);
    free(j.buf);
    free(j.a);
    free(j.b);
    free(j.c);
    pool_free(p);
    snprintf(err, errlen, "bench: out of memory for the bandwidth buffers");
    return -1;
}

/* ---- results ---------------------------------------------------------------------------- */

static bench_result *bench__add(bench_log *lg) {
    if (lg->n_res == lg->cap_res) {
        int cap = lg->cap_res ? 2 * lg->cap_res : 16;
        bench_result *r = realloc(lg->res, (size_t)cap * sizeof *r);
        if (!r) return NULL;
        lg->res = r;
        lg->cap_res = cap;
    }
    bench_result *r = &lg->res[lg->n_res++];
    memset(r, 0, sizeof *r);
    return r;
}

static const bench_ceil *bench__ceil_for(const bench_log *lg, int threads) {
    for (int i = 0; i < lg->n_ceil; i++)
        if (lg->ceil[i].threads == threads) return &lg->ceil[i];
    return NULL;
}

/* median of the repetitions' adjacent fractions (reps are few: insertion sort of a copy) */
static double bench__adj_median(const bench_result *r) {
    double v[BENCH_MAX_LIST];
    int n = r->n_adj;
    for (int i = 0; i < n; i++) {
        double x = r->adj[i];
        int j = i;
        for (; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
        v[j] = x;
    }
    if (n == 0) return 0;
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Decode repetitions: (warmup ? one untimed step first, then) --reps times --tg calls of
 * step(ctx, k), timed one by one, with adjacent read passes before step 0, every
 * BENCH_PROBE_EVERY steps and after the last. begin(ctx, n) (may be NULL), untimed, starts
 * each run of n steps. Fills r->seconds (fastest repetition), r->read_adj_gbs (its mean read
 * pass) and r->adj (each repetition's weight GB/s over its own mean read pass; rep_bytes:
 * weight bytes of one repetition). 0, or -1 from begin or step. */
static int bench__tg_reps(const bench_opts *o, bench__probe *pr, int warmup, double rep_bytes,
                          int (*begin)(void *ctx, int n), int (*step)(void *ctx, int k),
                          void *ctx, bench_result *r) {
    r->seconds = 1e30;
    r->n_adj = 0;
    for (int rep = warmup ? -1 : 0; rep < o->reps; rep++) {
        int n = rep < 0 ? 1 : o->tg;
        double dt = 0;
        if (begin && begin(ctx, n) != 0) return -1;
        if (pr) pr->sum = pr->n = 0;
        for (int k = 0; k < n; k++) {
            if (pr && k % BENCH_PROBE_EVERY == 0) bench__probe_pass(pr);
            double t0 = clk_now();
            if (step(ctx, k) != 0) return -1;
            dt += clk_now() - t0;
        }
        if (pr) bench__probe_pass(pr);
        if (rep < 0) continue;
        double mean = pr ? pr->sum / pr->n : 0;
        if (pr && r->n_adj < BENCH_MAX_LIST) r->adj[r->n_adj++] = rep_bytes / dt * 1e-9 / mean;
        if (dt < r->seconds) {
            r->seconds = dt;
            r->read_adj_gbs = mean;
        }
    }
    return 0;
}

static void bench__progress(const bench_result *r) {
    const char *name = strrchr(r->model, '/') ? strrchr(r->model, '/') + 1 : r->model;
    fprintf(stderr, "# %s %s %d thread%s %s %d: %.3f s, %.2f tokens/s\n", name, r->type,
            r->threads, r->threads == 1 ? "" : "s", r->test, r->tokens, r->seconds,
            r->tokens / r->seconds);
}

static void bench__print_header(void) {
    printf("%-34s %-7s %3s %4s %6s %9s %10s %9s %6s %8s %6s %6s\n", "model", "type", "thr",
           "test", "tokens", "time_s", "tok/s", "GFLOP/s", "%fma", "GB/s", "%read", "%adj");
}

static void bench__print(const bench_log *lg, const bench_result *r) {
    const bench_ceil *c = bench__ceil_for(lg, r->threads);
    double gf = r->flops / r->seconds * 1e-9, gb = r->bytes / r->seconds * 1e-9;
    const char *name = strrchr(r->model, '/') ? strrchr(r->model, '/') + 1 : r->model;
    char adj[16] = "-";
    if (r->n_adj > 0) snprintf(adj, sizeof adj, "%.1f", 100.0 * bench__adj_median(r));
    if (r->device[0]) {   /* GPU: %fma is of the device's FLOP peak, %read of its HBM peak */
        printf("%-34.34s %-7s %3d %4s %6d %9.4f %10.2f %9.2f %6.1f %8.2f %6.1f %6s  %s%s\n", name,
               r->type, r->threads, r->test, r->tokens, r->seconds, r->tokens / r->seconds, gf,
               r->dev_peak_flops > 0 ? 100.0 * gf * 1e9 / r->dev_peak_flops : 0.0, gb,
               r->dev_peak_bytes_s > 0 ? 100.0 * gb * 1e9 / r->dev_peak_bytes_s : 0.0, "-",
               r->device, r->dev_invariant ? ", invariant mode" : ", fast mode");
        fflush(stdout);
        return;
    }
    printf("%-34.34s %-7s %3d %4s %6d %9.4f %10.2f %9.2f %6.1f %8.2f %6.1f %6s\n", name, r->type,
           r->threads, r->test, r->tokens, r->seconds, r->tokens / r->seconds, gf,
           c && c->fma_gflops > 0 ? 100.0 * gf / c->fma_gflops : 0.0, gb,
           c && c->read_gbs > 0 ? 100.0 * gb / c->read_gbs : 0.0, adj);
    fflush(stdout);
}

static void bench__cpu_model(char *buf, size_t len) {
    snprintf(buf, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        v[strcspn(v, "\n")] = 0;
        snprintf(buf, len, "%s", v);
        break;
    }
    fclose(f);
}

static int bench__write_json(const bench_opts *o, const bench_log *lg, char *err, size_t errlen) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "schema", BENCH_SCHEMA);
    cJSON *mach = cJSON_AddObjectToObject(root, "machine");
    char cpu[256], host[256] = "unknown";
    bench__cpu_model(cpu, sizeof cpu);
    gethostname(host, sizeof host - 1);
    cJSON_AddStringToObject(mach, "host", host);
    cJSON_AddStringToObject(mach, "cpu", cpu);
    cJSON_AddStringToObject(mach, "isa", kern_isa());
    cJSON_AddNumberToObject(mach, "cpus_online", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddNumberToObject(mach, "cpus_affinity", pool_default_threads());
    cJSON *opts = cJSON_AddObjectToObject(root, "options");
    cJSON_AddBoolToObject(opts, "quick", o->quick);
    cJSON_AddStringToObject(opts, "mode", o->matmul ? "matmul" : "model");
    cJSON_AddNumberToObject(opts, "pp", o->pp);
    cJSON_AddNumberToObject(opts, "tg", o->tg);
    cJSON_AddNumberToObject(opts, "reps", o->reps);
    cJSON_AddStringToObject(opts, "shape", o->shape);
    cJSON_AddNumberToObject(opts, "layers", o->layers);   /* 0: the shape's own */
    cJSON_AddStringToObject(opts, "kv_type", qt_get(o->kv_type)->name);
    cJSON_AddStringToObject(opts, "backend", o->backend);
    cJSON *ceils = cJSON_AddArrayToObject(root, "ceilings");
    for (int i = 0; i < lg->n_ceil; i++) {
        const bench_ceil *c = &lg->ceil[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "threads", c->threads);
        cJSON_AddNumberToObject(e, "read_gbs", c->read_gbs);
        cJSON_AddNumberToObject(e, "triad_gbs", c->triad_gbs);
        cJSON_AddNumberToObject(e, "fma_gflops", c->fma_gflops);
        cJSON_AddItemToArray(ceils, e);
    }
    cJSON *runs = cJSON_AddArrayToObject(root, "runs");
    for (int i = 0; i < lg->n_res; i++) {
        const bench_result *r = &lg->res[i];
        const bench_ceil *c = bench__ceil_for(lg, r->threads);
        double gf = r->flops / r->seconds * 1e-9, gb = r->bytes / r->seconds * 1e-9;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "kind", r->kind);
        cJSON_AddStringToObject(e, "model", r->model);
        cJSON_AddStringToObject(e, "type", r->type);
        if (r->mix[0]) cJSON_AddStringToObject(e, "weight_mix", r->mix);
        cJSON_AddNumberToObject(e, "threads", r->threads);
        cJSON_AddStringToObject(e, "test", r->test);
        cJSON_AddNumberToObject(e, "tokens", r->tokens);
        cJSON_AddNumberToObject(e, "seconds", r->seconds);
        cJSON_AddNumberToObject(e, "tokens_per_s", r->tokens / r->seconds);
        cJSON_AddNumberToObject(e, "flops", r->flops);
        cJSON_AddNumberToObject(e, "gflops", gf);
        cJSON_AddNumberToObject(e, "frac_fma_peak", c && c->fma_gflops > 0 ? gf / c->fma_gflops : 0);
        cJSON_AddNumberToObject(e, "weight_bytes", r->bytes);
        /* per token: tg's are the active bytes a token reads (MoE: k of E routed experts) */
        if (r->tokens > 0) cJSON_AddNumberToObject(e, "weight_bytes_per_token", r->bytes / r->tokens);
        cJSON_AddNumberToObject(e, "weight_gbs", gb);
        cJSON_AddNumberToObject(e, "frac_read_bw", c && c->read_gbs > 0 ? gb / c->read_gbs : 0);
        if (r->device[0]) {   /* GPU: fractions of the device's peaks, not the host's */
            cJSON_AddStringToObject(e, "device", r->device);
            cJSON_AddBoolToObject(e, "batch_invariant_mode", r->dev_invariant);
            cJSON_AddNumberToObject(e, "hbm_peak_gbs", r->dev_peak_bytes_s * 1e-9);
            cJSON_AddNumberToObject(e, "frac_hbm_peak", r->dev_peak_bytes_s > 0 ? gb * 1e9 / r->dev_peak_bytes_s : 0);
            cJSON_AddNumberToObject(e, "tc_peak_tflops", r->dev_peak_flops * 1e-12);
            cJSON_AddNumberToObject(e, "frac_tc_peak", r->dev_peak_flops > 0 ? gf * 1e9 / r->dev_peak_flops : 0);
        }
        if (r->n_adj > 0) {
            cJSON_AddNumberToObject(e, "read_adjacent_gbs", r->read_adj_gbs);
            cJSON_AddNumberToObject(e, "frac_read_adjacent", bench__adj_median(r));
            cJSON *reps = cJSON_AddArrayToObject(e, "frac_read_adjacent_reps");
            for (int k = 0; k < r->n_adj; k++) cJSON_AddItemToArray(reps, cJSON_CreateNumber(r->adj[k]));
        }
        cJSON_AddItemToArray(runs, e);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) {
        snprintf(err, errlen, "bench: out of memory writing JSON");
        return -1;
    }
    FILE *f = fopen(o->json, "w");
    int rc = 0;
    if (!f || fputs(text, f) < 0 || fputc('\n', f) < 0) {
        snprintf(err, errlen, "bench: cannot write %s: %s", o->json, strerror(errno));
        rc = -1;
    }
    if (f && fclose(f) != 0 && rc == 0) {
        snprintf(err, errlen, "bench: cannot write %s: %s", o->json, strerror(errno));
        rc = -1;
    }
    free(text);
    return rc;
}

/* ---- matmul mode: kern_matmul on model shapes, random weights in memory ------------------ */

typedef struct {
    const char *name;
    int C, F, KV, V, L;   /* dim, ffn, kv heads x head dim, vocab, layers */
} bench_shape;

/* the shapes of runtime/synth.h; KV = kv heads x head dim */
static const bench_shape bench__shapes[] = {
    { "tiny", 64, 128, 32, 512, 2 },
    { "small", 256, 768, 64, 4096, 4 },
    { "tinyllama-1.1b", 2048, 5632, 256, 32000, 22 },
    { "llama-7b", 4096, 11008, 4096, 32000, 32 },
};

static const bench_shape *bench__shape(const char *name) {
    for (size_t i = 0; i < sizeof bench__shapes / sizeof bench__shapes[0]; i++)
        if (!strcmp(bench__shapes[i].name, name)) return &bench__shapes[i];
    return NULL;
}

/* Random blocks with finite, moderate values: random bits, then the scale fields overwritten. */
static void bench__fill_weight(int type, uint8_t *p, size_t bytes, uint64_t seed) {
    uint64_t s = seed | 1;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t r = bench__rng(&s);
        memcpy(p + i, &r, 8);
    }
    for (; i < bytes; i++) p[i] = (uint8_t)bench__rng(&s);
    const qt_traits *t = qt_get(type);
    size_t bs = t->type_size, nb = bytes / bs;
    const uint16_t h = 0x2c00;   /* 1/16 */
    for (size_t b = 0; b < nb; b++) {
        uint8_t *q = p + b * bs;
        switch (type) {
        case QT_F16: {
            uint16_t v;
            memcpy(&v, q, 2);
            v = (uint16_t)((v & 0x83ffu) | 0x2c00u);
            memcpy(q, &v, 2);
            break;
        }
        case QT_BF16: {
            uint16_t v;
            memcpy(&v, q, 2);
            v = (uint16_t)((v & 0x807fu) | 0x3d00u);
            memcpy(q, &v, 2);
            break;
        }
        case QT_F32: {
            uint32_t v;
            memcpy(&v, q, 4);
            v = (v & 0x807fffffu) | 0x3c000000u;
            memcpy(q, &v, 4);
            break;
        }
        case QT_Q4_K: memcpy(q, &h, 2); memcpy(q + 2, &h, 2); break;   /* d, dmin */
        case QT_Q8_0:
        case QT_Q4_0: memcpy(q, &h, 2); break;
        case QT_Q6_K: memcpy(q + offsetof(block_q6_K, d), &h, 2); break;
        default: break;
        }
    }
}

typedef struct {
    kern_weight w[8];       /* wq wk wv wo gate up down, output (only in the last layer slot) */
    int n;
    uint8_t *buf;
} bench_layer;

static int bench__layer_new(bench_layer *l, const bench_shape *s, int type, int with_output,
                            uint64_t seed) {
    int64_t dims[8][2] = { { s->C, s->C }, { s->KV, s->C }, { s->KV, s->C }, { s->C, s->C },
                           { s->F, s->C }, { s->F, s->C }, { s->C, s->F }, { s->V, s->C } };
    l->n = with_output ? 8 : 7;
    size_t total = 0, off[8];
    for (int i = 0; i < l->n; i++) {
        size_t row = qt_row_size(type, dims[i][1]);
        if (!row) return -1;
        off[i] = total;
        total += row * (size_t)dims[i][0];
        l->w[i] = (kern_weight){ NULL, type, dims[i][0], dims[i][1], row, KERN_ROWS };
    }
    l->buf = bench__alloc(total);
    if (!l->buf) return -1;
    bench__fill_weight(type, l->buf, total, seed);
    for (int i = 0; i < l->n; i++) l->w[i].data = l->buf + off[i];
    /* the layout the model loader gives these types (kern_pack), as a model would run them */
    size_t ptotal = 0, poff[8];
    for (int i = 0; i < l->n; i++) {
        poff[i] = ptotal;
        ptotal += (kern_pack_size(&l->w[i]) + 63) / 64 * 64;
    }
    if (ptotal) {
        uint8_t *pb = bench__alloc(ptotal);
        if (!pb) return -1;
        for (int i = 0; i < l->n; i++)
            if (kern_pack_size(&l->w[i])) l->w[i] = kern_pack(&l->w[i], pb + poff[i]);
        free(l->buf);
        l->buf = pb;
    }
    return 0;
}

static double bench__layer_params(const bench_layer *l, int with_output) {
    double p = 0;
    for (int i = 0; i < (with_output ? l->n : 7); i++)
        p += (double)l->w[i].n_rows * (double)l->w[i].n_cols;
    return p;
}

static double bench__layer_bytes(const bench_layer *l, int with_output) {
    double b = 0;
    for (int i = 0; i < (with_output ? l->n : 7); i++)
        b += (double)l->w[i].n_rows * (double)l->w[i].row_stride;
    return b;
}

/* one decode step of --matmul: every matrix of every layer plus the output head, T = 1 */
typedef struct {
    pool *p;
    const bench_layer *ls;
    int L;
    const float *x;
    float *out;
    void *scratch;
} bench__mm_step;

static int bench__mm_tg_step(void *ctx, int k) {
    const bench__mm_step *m = ctx;
    (void)k;
    for (int l = 0; l < m->L; l++)
        for (int i = 0; i < m->ls[l].n; i++) kern_matmul(m->p, m->out, &m->ls[l].w[i], m->x, 1, m->scratch);
    return 0;
}

static int bench__matmul_type(const bench_opts *o, const bench_shape *s, int type, bench_log *lg,
                              char *err, size_t errlen) {
    const qt_traits *t = qt_get(type);
    int L = o->layers > 0 ? o->layers : s->L;
    bench_layer *ls = calloc((size_t)L, sizeof *ls);
    int T = o->pp > 1 ? o->pp : 1;
    int64_t xdim = s->F > s->C ? s->F : s->C;
    float *x = malloc(sizeof(float) * (size_t)T * (size_t)xdim);
    float *out = malloc(sizeof(float) * (size_t)T * (size_t)(s->V > xdim ? s->V : xdim));
    void *scratch = NULL;
    int rc = -1;
    if (!ls || !x || !out) goto oom;
    for (int l = 0; l < L; l++)
        if (bench__layer_new(&ls[l], s, type, l == L - 1, 1000 + (uint64_t)l) != 0) goto oom;
    size_t ss = 0;
    for (int i = 0; i < ls[L - 1].n; i++) {
        size_t need = kern_matmul_scratch(&ls[L - 1].w[i], T);
        ss = need > ss ? need : ss;
    }
    scratch = malloc(ss ? ss : 1);
    if (!scratch) goto oom;
    uint64_t r = 7;
    for (size_t i = 0; i < (size_t)T * (size_t)xdim; i++)
        x[i] = (float)((int64_t)(bench__rng(&r) >> 40) - (1 << 23)) / (float)(1 << 23);
    double params = 0, bytes = 0;
    for (int l = 0; l < L; l++) {
        params += bench__layer_params(&ls[l], 1);
        bytes += bench__layer_bytes(&ls[l], 1);
    }
    for (int ti = 0; ti < o->n_threads; ti++) {
        int nth = o->threads[ti];
        pool *p = pool_new(nth);
        if (!p) {
            snprintf(err, errlen, "bench: cannot start a pool of %d threads", nth);
            goto done;
        }
        /* pp: one layer's seven matrices with T = pp */
        if (o->pp > 0) {
            double best = 1e30;
            for (int rep = 0; rep <= o->reps; rep++) {   /* rep 0 warms up */
                double t0 = clk_now();
                for (int i = 0; i < 7; i++) kern_matmul(p, out, &ls[0].w[i], x, o->pp, scratch);
                double dt = clk_now() - t0;
                if (rep > 0 && dt < best) best = dt;
            }
            bench_result *res = bench__add(lg);
            if (!res) goto oom_pool;
            *res = (bench_result){ .kind = "matmul", .threads = nth, .test = "pp",
                                   .tokens = o->pp, .seconds = best,
                                   .flops = 2.0 * bench__layer_params(&ls[0], 0) * o->pp,
                                   .bytes = bench__layer_bytes(&ls[0], 0) };
            snprintf(res->model, sizeof res->model, "matmul %s x1 layer", s->name);
            snprintf(res->type, sizeof res->type, "%s", t->name);
            bench__progress(res);
        }
        /* tg: every matrix of every layer plus the output head, T = 1, --tg times */
        if (o->tg > 0) {
            bench__probe pr;
            bench_result tg = { 0 };
            bench__mm_step ms = { p, ls, L, x, out, scratch };
            if (bench__probe_init(&pr, o, nth, bench__run_pool, p) != 0) {
                bench__probe_free(&pr);
                goto oom_pool;
            }
            bench__tg_reps(o, &pr, 1, bytes * o->tg, NULL, bench__mm_tg_step, &ms, &tg);
            bench__probe_free(&pr);
            bench_result *res = bench__add(lg);
            if (!res) goto oom_pool;
            *res = tg;
            res->kind = "matmul";
            res->threads = nth;
            res->test = "tg";
            res->tokens = o->tg;
            res->flops = 2.0 * params * o->tg;
            res->bytes = bytes * o->tg;
            snprintf(res->model, sizeof res->model, "matmul %s x%d layers", s->name, L);
            snprintf(res->type, sizeof res->type, "%s", t->name);
            bench__progress(res);
        }
        pool_free(p);
        continue;
    oom_pool:
        pool_free(p);
        goto oom;
    }
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "bench: out of memory for %s weights of shape %s", t->name, s->name);
done:
    if (ls)
        for (int l = 0; l < L; l++) free(ls[l].buf);
    free(ls);
    free(x);
    free(out);
    free(scratch);
    return rc;
}

/* ---- model mode ------------------------------------------------------------------------- */

static double bench__weight_params(const kern_weight *w) {
    return w->data ? (double)w->n_rows * (double)w->n_cols : 0.0;
}
static double bench__weight_bytes(const kern_weight *w) {
    return w->data ? (double)w->n_rows * (double)w->row_stride : 0.0;
}

static void bench__run_backend(void *ctx, pool_fn fn, void *arg) {
    backend *be = ctx;
    be->i->parallel(be, fn, arg);
}

/* The scheduler with one sequence: a request per measurement, fresh random prompt tokens each
 * time (so no prefix is reused from an earlier request's cached blocks), greedy, EOS ignored. */
typedef struct {
    sched *s;
    int n_vocab;
    int32_t *tok;             /* (max_batch) prompt of the next request */
    uint64_t rng;
    int live, failed;         /* a request is running; it finished other than "length" */
    char *err;
    size_t errlen;
} bench__seq;

static void bench__seq_emit(void *user, const sched_event *ev) {
    bench__seq *q = user;
    if (ev->finish == SCHED_FINISH_NONE) return;
    q->live = 0;
    if (ev->finish != SCHED_FINISH_LENGTH) {
        q->failed = 1;
        snprintf(q->err, q->errlen, "bench: the request finished '%s' %.*s",
                 sched_finish_name(ev->finish), ev->len, ev->text);
    }
}

/* submits n_prompt random tokens asking for max_tokens */
static int bench__seq_submit(bench__seq *q, int n_prompt, int max_tokens) {
    if (q->live) {
        snprintf(q->err, q->errlen, "bench: a request is still running");
        return -1;
    }
    for (int i = 0; i < n_prompt; i++) q->tok[i] = (int32_t)(bench__rng(&q->rng) % (uint64_t)q->n_vocab);
    sched_request rq = { .prompt = q->tok, .n_prompt = n_prompt, .max_tokens = max_tokens,
                         .sampling = sample_defaults(), .ignore_eos = 1, .logprobs = -1 };
    rq.sampling.temp = 0;
    if (sched_submit(q->s, &rq, bench__seq_emit, q, NULL, q->err, q->errlen) != 0) return -1;
    q->live = 1;
    return 0;
}

/* one step: the forward pass of the sequence's next positions, its sampling and emit */
static int bench__seq_step(bench__seq *q) {
    int n = sched_step(q->s);
    if (q->failed) return -1;
    if (n != 1) {
        snprintf(q->err, q->errlen, "bench: a scheduler step ran %d sequences, not 1", n);
        return -1;
    }
    return 0;
}

/* decode: a one-token prompt generating n tokens takes exactly n steps, step k the one
 * position k (attention over k + 1 positions) */
static int bench__model_tg_begin(void *ctx, int n) { return bench__seq_submit(ctx, 1, n); }
static int bench__model_tg_step(void *ctx, int k) {
    (void)k;
    return bench__seq_step(ctx);
}

/* a run on a GPU: the device and the peaks its figures are fractions of */
/* llama.cpp's file types (general.file_type, enum llama_ftype) by number: the mix a quantized
 * file was made as ("Q4_K_M" is mostly Q4_K with Q6_K, and Q5_0/Q8_0 where rows are not
 * multiples of 256). NULL: a number not named here. */
static const char *bench__ftype_name(uint32_t ft) {
    static const char *const names[] = {
        [0] = "F32", [1] = "F16", [2] = "Q4_0", [3] = "Q4_1", [7] = "Q8_0", [8] = "Q5_0",
        [9] = "Q5_1", [10] = "Q2_K", [11] = "Q3_K_S", [12] = "Q3_K_M", [13] = "Q3_K_L",
        [14] = "Q4_K_S", [15] = "Q4_K_M", [16] = "Q5_K_S", [17] = "Q5_K_M", [18] = "Q6_K",
        [25] = "IQ4_NL", [30] = "IQ4_XS", [32] = "BF16",
    };
    return ft < sizeof names / sizeof names[0] ? names[ft] : NULL;
}

/* weight params and bytes of a model's layers: all of them, and a decode token's share */
typedef struct {
    double params, bytes;                 /* every matrix */
    double act_params, act_bytes;         /* times the share a token reads (MoE: k of E) */
    double by[QT_COUNT];                  /* active bytes by type */
} bench__weights;

static void bench__weight_add(void *ctx, const kern_weight *w, double share) {
    bench__weights *bw = ctx;
    bw->params += bench__weight_params(w);
    bw->bytes += bench__weight_bytes(w);
    bw->act_params += share * bench__weight_params(w);
    bw->act_bytes += share * bench__weight_bytes(w);
    if (w->type >= 0 && w->type < QT_COUNT) bw->by[w->type] += share * bench__weight_bytes(w);
}

/* The label of a model run: the file type when the file names one, else the weight type with
 * the most streamed bytes ("+" when others are present); mix: every type's share of the bytes
 * a decode step streams (layer matrices and output head), largest first. */
static void bench__label(const model *m, char *type, size_t tn, char *mix, size_t mn) {
    bench__weights bw = { 0 };
    model_each_weight(m, bench__weight_add, &bw);
    double *by = bw.by, total = 0;
    if (m->output.type >= 0 && m->output.type < QT_COUNT)
        by[m->output.type] += bench__weight_bytes(&m->output);
    int n_types = 0, top = -1;
    for (int t = 0; t < QT_COUNT; t++) {
        total += by[t];
        if (by[t] > 0) n_types++;
        if (by[t] > 0 && (top < 0 || by[t] > by[top])) top = t;
    }
    uint32_t ft;
    const char *fname = NULL;
    if (gguf_find_key(m->gguf, "general.file_type") >= 0 &&
        gguf_get_u32(m->gguf, "general.file_type", &ft, NULL, 0) == 0)
        fname = bench__ftype_name(ft);
    const qt_traits *tt = top >= 0 ? qt_get(top) : NULL;
    if (fname) snprintf(type, tn, "%s", fname);
    else snprintf(type, tn, "%s%s", tt ? tt->name : "?", n_types > 1 ? "+" : "");
    size_t used = 0;
    mix[0] = 0;
    for (int k = 0; k < n_types && used < mn; k++) {   /* selection by falling share */
        int best = -1;
        for (int t = 0; t < QT_COUNT; t++)
            if (by[t] > 0 && (best < 0 || by[t] > by[best])) best = t;
        const qt_traits *bt = qt_get(best);
        used += (size_t)snprintf(mix + used, mn - used, "%s%s %.0f%%", k ? ", " : "",
                                 bt ? bt->name : "?", 100.0 * by[best] / total);
        by[best] = 0;
    }
}

static void bench__set_device(bench_result *r, const backend_cuda_props *p, int weight_type) {
    snprintf(r->device, sizeof r->device, "%.96s (cc %d.%d, %d SMs)", p->name, p->cc_major,
             p->cc_minor, p->n_sm);
    r->dev_peak_bytes_s = p->hbm_bytes_s;
    r->dev_peak_flops = backend_cuda_peak_flops(p, weight_type);
    r->dev_invariant = p->invariant;
}

static int bench__model(const bench_opts *o, const char *path, int nth, bench_log *lg, char *err,
                        size_t errlen) {
    model *m = NULL;
    sched *s = NULL;
    int32_t *tok = NULL;
    int rc = -1;
    const char *pack = getenv("SAMPAN_PACK");   /* as sampan run: 0 keeps the file's layout */
    model_opts mo = { .n_threads = nth, .kv_type = o->kv_type, .backend = o->backend,
                      .device = -1, .no_pack = pack && !strcmp(pack, "0") };
    if (model_load(path, &mo, &m, err, errlen) != 0) return -1;
    const model_cfg *c = &m->cfg;
    /* a GPU: its peaks are the ceilings (the host read probe would measure the wrong memory) */
    backend_cuda_props gp;
    char ge[256];
    int gpu = !m->be->i->host_memory && backend_cuda_info(m->be, &gp, ge, sizeof ge) == 0;
    int n_ctx = (o->pp > o->tg ? o->pp : o->tg) + 1;
    int max_batch = o->pp > 1 ? o->pp : 1;
    const int bs = 16;
    sched_opts so = { .max_batch_tokens = max_batch, .max_seqs = 1, .block_size = bs,
                      .n_ctx = n_ctx,
                      .kv_mem = model_kv_block_bytes(m, bs) * (size_t)((n_ctx + bs - 1) / bs) };
    tok = malloc(sizeof(int32_t) * (size_t)max_batch);
    if (!tok) {
        snprintf(err, errlen, "bench: out of memory for a batch of %d", max_batch);
        goto done;
    }
    if (!(s = sched_new(m, NULL, 0, &so, err, errlen))) goto done;
    bench__seq q = { .s = s, .n_vocab = c->n_vocab, .tok = tok, .rng = 11, .err = err,
                     .errlen = errlen };
    /* weight params and bytes streamed per token (the token embedding is a row lookup): a
     * decode token reads the active weights (MoE: k of the E routed experts), a prompt step
     * reads every matrix once (its tokens grouped by expert) and multiplies by the active ones */
    bench__weights bw = { 0 };
    model_each_weight(m, bench__weight_add, &bw);
    double params = bw.act_params, bytes = bw.act_bytes + 2.0 * c->n_layers * c->dim * sizeof(float);
    double all_bytes = bw.bytes + 2.0 * c->n_layers * c->dim * sizeof(float);
    double out_params = bench__weight_params(&m->output);
    double out_bytes = bench__weight_bytes(&m->output) + c->dim * sizeof(float);
    /* flops per (query, key) pair: q.k and a.v per head; MLA's over the latent (R + Dr, R) */
    double att = c->attn == ATTN_MLA ? 2.0 * c->n_heads * (2.0 * c->kv_lora + c->n_rot) * c->n_layers
                                     : 4.0 * c->n_heads * c->head_dim * c->n_layers;
    char type[16], mix[128];
    bench__label(m, type, sizeof type, mix, sizeof mix);

    /* warm-up: one decode step touches every weight page */
    if (bench__seq_submit(&q, 1, 1) != 0 || bench__seq_step(&q) != 0) goto done;
    if (o->pp > 0) {
        /* prompt: one step of all --pp positions (logits of the last, one token sampled) */
        double best = 1e30;
        for (int rep = 0; rep < o->reps; rep++) {
            if (bench__seq_submit(&q, o->pp, 1) != 0) goto done;
            double t0 = clk_now();
            if (bench__seq_step(&q) != 0) goto done;
            double dt = clk_now() - t0;
            best = dt < best ? dt : best;
        }
        bench_result *res = bench__add(lg);
        if (!res) goto oom;
        double n = o->pp;
        *res = (bench_result){ .kind = "model", .threads = nth, .test = "pp", .tokens = o->pp,
                               .seconds = best,
                               .flops = 2.0 * params * n + 2.0 * out_params + att * n * (n + 1) / 2,
                               .bytes = all_bytes + out_bytes };
        snprintf(res->model, sizeof res->model, "%s", path);
        snprintf(res->type, sizeof res->type, "%s", type);
        snprintf(res->mix, sizeof res->mix, "%s", mix);
        if (gpu) bench__set_device(res, &gp, m->output.type);
        bench__progress(res);
    }
    if (o->tg > 0) {
        bench__probe pr;
        bench_result tg = { 0 };
        if (!gpu && bench__probe_init(&pr, o, nth, bench__run_backend, m->be) != 0) {
            bench__probe_free(&pr);
            goto oom;
        }
        int step_rc = bench__tg_reps(o, gpu ? NULL : &pr, 0, o->tg * (bytes + out_bytes),
                                     bench__model_tg_begin, bench__model_tg_step, &q, &tg);
        if (!gpu) bench__probe_free(&pr);
        if (step_rc != 0) goto done;
        bench_result *res = bench__add(lg);
        if (!res) goto oom;
        double n = o->tg;
        *res = tg;
        res->kind = "model";
        res->threads = nth;
        res->test = "tg";
        res->tokens = o->tg;
        res->flops = n * (2.0 * params + 2.0 * out_params) + att * n * (n + 1) / 2;
        res->bytes = n * (bytes + out_bytes);
        snprintf(res->model, sizeof res->model, "%s", path);
        snprintf(res->type, sizeof res->type, "%s", type);
        snprintf(res->mix, sizeof res->mix, "%s", mix);
        if (gpu) bench__set_device(res, &gp, m->output.type);
        bench__progress(res);
    }
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "bench: out of memory for results");
done:
    sched_free(s);
    free(tok);
    model_free(m);
    return rc;
}

/* ---- options ---------------------------------------------------------------------------- */

static void bench__usage(FILE *f) {
    fputs("usage: sampan bench [-m MODEL ...] [--types F16,Q8_0,Q4_0,Q4_K] [--threads 1,2]\n"
          "                    [--pp 512] [--tg 128] [--reps N] [--json OUT.json]\n"
          "                    [--model-dir DIR] [--shape NAME] [--layers N] [--matmul] [--quick]\n"
          "  -m MODEL      a GGUF model (repeatable); without -m, synthetic models of --shape\n"
          "                (default tinyllama-1.1b) in each --types entry are made in --model-dir\n"
          "                (default build/bench-models) and reused\n"
          "  --threads     comma list of thread counts (default: the CPUs of the affinity mask)\n"
          "  --pp N        prompt tokens in one batch (0 skips); --tg N decode steps (0 skips)\n"
          "  --reps N      timed repetitions, best kept (default 1, or 2 with --matmul)\n"
          "  --shape NAME  tiny, small, tinyllama-1.1b or llama-7b\n"
          "  --layers N    layers of the synthetic model or matmul set (default: the shape's)\n"
          "  --matmul      kern_matmul alone on the shape's matrices, random weights in memory\n"
          "  --quick       smoke test in seconds: 1 layer of tinyllama-1.1b in Q4_0 (weights still\n"
          "                far larger than the caches), --pp 32 --tg 8, smaller ceiling buffers\n"
          "  --kv-type T   KV cache elements: f32, f16 or bf16 (default f16)\n"
          "  --backend B   cpu, cuda or auto (default cpu)\n"
          "Model mode runs through the scheduler's step (one sequence), as `sampan run` does.\n"
          "Ceilings (read, triad, fma) are measured first with each thread count.\n",
          f);
}

static int bench__int(const char *opt, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "sampan: bench: %s wants an integer in [%d, %d], got '%s'\n", opt, lo, hi,
                s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int bench__list(const char *opt, const char *s, int is_type, int *out, int *n) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    for (char *save = NULL, *tokn = strtok_r(buf, ",", &save); tokn;
         tokn = strtok_r(NULL, ",", &save)) {
        if (*n == BENCH_MAX_LIST) {
            fprintf(stderr, "sampan: bench: %s takes at most %d entries\n", opt, BENCH_MAX_LIST);
            return -1;
        }
        if (is_type) {
            int t = synth_type_from_name(tokn);
            if (t < 0 || (t < SYNTH_MIX_BASE && !qt_get(t))) {
                fprintf(stderr, "sampan: bench: %s: unknown type '%s'\n", opt, tokn);
                return -1;
            }
            out[(*n)++] = t;
        } else if (bench__int(opt, tokn, 1, 1024, &out[(*n)++]) != 0) {
            return -1;
        }
    }
    if (*n == 0) {
        fprintf(stderr, "sampan: bench: %s needs at least one entry\n", opt);
        return -1;
    }
    return 0;
}

/* f32 | f16 | bf16, the names `sampan run --kv-type` takes */
static int bench__kv_type(const char *s, int *out) {
    static const struct { const char *name; int type; } kv[] = {
        { "f32", QT_F32 }, { "f16", QT_F16 }, { "bf16", QT_BF16 },
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (!strcmp(s, kv[i].name)) {
            *out = kv[i].type;
            return 0;
        }
    fprintf(stderr, "sampan: bench: --kv-type expects f32, f16 or bf16, got '%s'\n", s);
    return -1;
}

static int bench__parse(int argc, char **argv, bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->pp = -1;
    o->tg = -1;
    o->reps = -1;
    o->model_dir = "build/bench-models";
    o->kv_type = QT_F16;
    o->backend = "cpu";
    const char *types = NULL, *threads = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int need = !strcmp(a, "-m") || !strcmp(a, "--types") || !strcmp(a, "--threads") ||
                   !strcmp(a, "--pp") || !strcmp(a, "--tg") || !strcmp(a, "--json") ||
                   !strcmp(a, "--model-dir") || !strcmp(a, "--reps") || !strcmp(a, "--layers") ||
                   !strcmp(a, "--shape") || !strcmp(a, "--kv-type") || !strcmp(a, "--backend");
        if (need && !v) {
            fprintf(stderr, "sampan: bench: %s needs a value\n", a);
            return -1;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench__usage(stdout);
            return 1;
        } else if (!strcmp(a, "-m")) {
            if (o->n_models == BENCH_MAX_LIST) {
                fprintf(stderr, "sampan: bench: at most %d models\n", BENCH_MAX_LIST);
                return -1;
            }
            o->models[o->n_models++] = v;
        } else if (!strcmp(a, "--types")) {
            types = v;
        } else if (!strcmp(a, "--threads")) {
            threads = v;
        } else if (!strcmp(a, "--pp")) {
            if (bench__int(a, v, 0, 1 << 16, &o->pp)) return -1;
        } else if (!strcmp(a, "--tg")) {
            if (bench__int(a, v, 0, 1 << 16, &o->tg)) return -1;
        } else if (!strcmp(a, "--reps")) {
            if (bench__int(a, v, 1, 1000, &o->reps)) return -1;
        } else if (!strcmp(a, "--layers")) {
            if (bench__int(a, v, 1, 1000, &o->layers)) return -1;
        } else if (!strcmp(a, "--json")) {
            o->json = v;
        } else if (!strcmp(a, "--model-dir")) {
            o->model_dir = v;
        } else if (!strcmp(a, "--shape")) {
            if (!bench__shape(v)) {
                fprintf(stderr, "sampan: bench: unknown --shape '%s' (tiny, small, "
                                "tinyllama-1.1b, llama-7b)\n", v);
                return -1;
            }
            o->shape = v;
        } else if (!strcmp(a, "--kv-type")) {
            if (bench__kv_type(v, &o->kv_type)) return -1;
        } else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) {
                fprintf(stderr, "sampan: bench: --backend expects cpu, cuda or auto, got '%s'\n", v);
                return -1;
            }
            o->backend = v;
        } else if (!strcmp(a, "--quick")) {
            o->quick = 1;
        } else if (!strcmp(a, "--matmul")) {
            o->matmul = 1;
        } else {
            fprintf(stderr, "sampan: bench: unknown option '%s' (see sampan bench --help)\n", a);
            return -1;
        }
        if (need) i++;
    }
    if (!o->shape) o->shape = "tinyllama-1.1b";
    if (o->quick && o->layers == 0) o->layers = 1;
    if (o->pp < 0) o->pp = o->quick ? 32 : 512;
    if (o->tg < 0) o->tg = o->quick ? 8 : 128;
    if (o->reps < 0) o->reps = o->matmul ? 2 : 1;
    if (types) {
        if (bench__list("--types", types, 1, o->types, &o->n_types)) return -1;
    } else {
        static const int def[] = { QT_F16, QT_Q8_0, QT_Q4_0, QT_Q4_K };
        static const int quick[] = { QT_Q4_0 };
        const int *d = o->quick ? quick : def;
        o->n_types = o->quick ? 1 : 4;
        memcpy(o->types, d, sizeof(int) * (size_t)o->n_types);
    }
    for (int i = 0; o->matmul && i < o->n_types; i++)
        if (o->types[i] >= SYNTH_MIX_BASE) {
            fprintf(stderr, "sampan: bench: --matmul times one type at a time; %s is a mix\n",
                    synth_type_name(o->types[i]));
            return -1;
        }
    if (threads) {
        if (bench__list("--threads", threads, 0, o->threads, &o->n_threads)) return -1;
    } else {
        o->threads[0] = pool_default_threads();
        o->n_threads = 1;
    }
    return 0;
}

/* mkdir -p */
static int bench__mkdirs(const char *dir, char *err, size_t errlen) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "bench: cannot create directory %.400s: %s", buf,
                         strerror(errno));
                return -1;
            }
            *p = c;
            if (!c) break;
        }
    }
    return 0;
}

int bench_main(int argc, char **argv) {
    bench_opts o;
    int prc = bench__parse(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 2;
    char err[512] = "";
    bench_log lg;
    memset(&lg, 0, sizeof lg);
    int rc = 0;
    const bench_shape *shape = bench__shape(o.shape);

    char cpu[256];
    bench__cpu_model(cpu, sizeof cpu);
    printf("# sampan bench (%s): cpu %s, isa %s, %d cpus in affinity mask\n", BENCH_SCHEMA, cpu,
           kern_isa(), pool_default_threads());
    for (int i = 0; i < o.n_threads; i++) {
        if (bench__ceilings(&o, o.threads[i], &lg.ceil[lg.n_ceil], err, sizeof err) != 0) {
            fprintf(stderr, "sampan: %s\n", err);
            return 1;
        }
        lg.n_ceil++;
    }

    if (o.matmul) {
        for (int i = 0; i < o.n_types && rc == 0; i++)
            if (bench__matmul_type(&o, shape, o.types[i], &lg, err, sizeof err) != 0) rc = 1;
    } else {
        char paths[BENCH_MAX_LIST][1024];
        const char *models[BENCH_MAX_LIST];
        int n_models = o.n_models;
        for (int i = 0; i < o.n_models; i++) models[i] = o.models[i];
        if (n_models == 0) {
            if (bench__mkdirs(o.model_dir, err, sizeof err) != 0) rc = 1;
            for (int i = 0; i < o.n_types && rc == 0; i++) {
                char lay[32] = "";
                if (o.layers > 0) snprintf(lay, sizeof lay, "-L%d", o.layers);
                snprintf(paths[i], sizeof paths[i], "%s/%s%s-%s.gguf", o.model_dir, shape->name,
                         lay, synth_type_name(o.types[i]));
                struct stat sb;
                if (stat(paths[i], &sb) != 0) {
                    printf("# making %s\n", paths[i]);
                    fflush(stdout);
                    if (synth_model(paths[i], shape->name, o.types[i], o.layers, 1, err,
                                    sizeof err) != 0) {
                        rc = 1;
                        break;
                    }
                }
                models[n_models++] = paths[i];
            }
        }
        for (int i = 0; i < n_models && rc == 0; i++)
            for (int j = 0; j < o.n_threads && rc == 0; j++)
                if (bench__model(&o, models[i], o.threads[j], &lg, err, sizeof err) != 0) rc = 1;
    }
    if (rc) fprintf(stderr, "sampan: %s\n", err);
    /* a shared machine can be busy while the ceilings are measured: measure them again after
     * the runs and keep the better value, so that fractions are not flattered */
    for (int i = 0; i < lg.n_ceil; i++) {
        bench_ceil again;
        char err2[256];
        if (bench__ceilings(&o, lg.ceil[i].threads, &again, err2, sizeof err2) != 0) continue;
        bench_ceil *c = &lg.ceil[i];
        c->read_gbs = again.read_gbs > c->read_gbs ? again.read_gbs : c->read_gbs;
        c->triad_gbs = again.triad_gbs > c->triad_gbs ? again.triad_gbs : c->triad_gbs;
        c->fma_gflops = again.fma_gflops > c->fma_gflops ? again.fma_gflops : c->fma_gflops;
    }
    for (int i = 0; i < lg.n_ceil; i++) {
        const bench_ceil *c = &lg.ceil[i];
        printf("# ceilings, %d thread%s: read %.2f GB/s, triad %.2f GB/s, fma %.1f GFLOP/s "
               "(best of before and after the runs)\n",
               c->threads, c->threads == 1 ? "" : "s", c->read_gbs, c->triad_gbs, c->fma_gflops);
    }
    if (lg.n_res) bench__print_header();
    for (int i = 0; i < lg.n_res; i++) bench__print(&lg, &lg.res[i]);
    if (o.json && bench__write_json(&o, &lg, err, sizeof err) != 0) {
        fprintf(stderr, "sampan: %s\n", err);
        rc = 1;
    }
    free(lg.res);
    return rc;
}
