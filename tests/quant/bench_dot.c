/* tests/quant/bench_dot.c — how close each vec_dot comes to memory bandwidth (built, not run
 * as a test).
 *
 * For every weight type: a 64 MiB weight matrix of rows of K = 4096 elements (filled by
 * quantizing a few random rows and repeating them), one activation row in the type's
 * vec_dot_type, and single-threaded passes of vec_dot over all rows, as decode does. Reported:
 * GB/s of weight bytes (best of several passes) next to the ceiling, a plain AVX2 read of the
 * same buffer (best of passes interleaved with the dot passes), for every ISA the CPU has.
 * Usage: bench_dot [passes [KiB]]   (defaults 10 and 65536; a buffer that fits in cache, e.g.
 * 256 KiB, shows the compute-bound speed of each kernel instead)
 */
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kern.h"

#define BENCH_K 4096

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* the ceiling: stream the buffer through 256-bit loads, four independent accumulators */
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t bytes) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= bytes; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, s);
    return out[0] + out[1] + out[2] + out[3];
}

static int cpu_has_avx2(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 5) & 1;
}

static volatile float g_sink;
static volatile uint64_t g_sink_u;

int main(int argc, char **argv) {
    const int passes = argc > 1 ? atoi(argv[1]) : 10;
    const long kib = argc > 2 ? atol(argv[2]) : 65536;
    if (passes < 1 || kib < 64) {
        fprintf(stderr, "usage: bench_dot [passes >= 1 [KiB of weights >= 64]]\n");
        return 2;
    }
    const size_t BENCH_BYTES = (size_t)kib << 10;
    if (kern_init(NULL) != 0) return 1;
    const char *best = kern_isa();
    const int has_avx2 = cpu_has_avx2();
    static const int types[] = {QT_F32, QT_F16, QT_BF16, QT_Q8_0, QT_Q4_0, QT_Q4_K, QT_Q6_K,
                                QT_Q4_1, QT_Q5_0, QT_Q5_1, QT_IQ4_NL, QT_Q5_K, QT_Q2_K, QT_Q3_K,
                                QT_IQ4_XS};
    static const char *const isas[] = {"scalar", "avx2", "avx512"};
    printf("bench_dot: single thread, K = %d, %zu KiB of weights per type, best of %d passes; best ISA %s\n",
           BENCH_K, BENCH_BYTES >> 10, passes, best);
    printf("%-5s %-7s %10s %10s %8s %10s\n", "type", "isa", "GB/s", "read GB/s", "of read", "ns/row");

    float *xf = malloc(BENCH_K * sizeof(float));
    uint64_t seed = 42;
    for (int i = 0; i < BENCH_K; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        xf[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        const qt_traits *t = qt_get(types[ti]);
        const size_t row = qt_row_size(types[ti], BENCH_K);
        const int64_t rows = (int64_t)(BENCH_BYTES / row);
        const size_t bytes = (size_t)rows * row;
        uint8_t *w = aligned_alloc(64, (bytes + 63) / 64 * 64);
        void *xq = aligned_alloc(64, (qt_row_size(t->vec_dot_type, BENCH_K) + 63) / 64 * 64);
        if (!w || !xq) {
            fprintf(stderr, "bench_dot: cannot allocate %zu bytes for %s\n", bytes, t->name);
            return 1;
        }
        /* 16 distinct rows, repeated: realistic values at a fraction of the quantizing cost */
        float *wf = malloc(BENCH_K * sizeof(float));
        for (int r = 0; r < 16 && r < rows; r++) {
            for (int i = 0; i < BENCH_K; i++) wf[i] = xf[(i * 7 + r * 13) % BENCH_K] * 0.05f;
            t->from_float(wf, w + (size_t)r * row, BENCH_K);
        }
        for (int64_t r = 16; r < rows; r++) memcpy(w + (size_t)r * row, w + (size_t)(r % 16) * row, row);
        free(wf);
        qt_get(t->vec_dot_type)->from_float(xf, xq, BENCH_K);

        /* read and dot passes alternate, so a machine shared with other work slows both alike */
        for (int k = 0; k < 3; k++) {
            if (kern_init(isas[k]) != 0) {
                printf("%-5s %-7s skipped: CPU lacks it\n", t->name, isas[k]);
                continue;
            }
            const qt_vec_dot_fn dot = qt_get(types[ti])->vec_dot;
            const int np = k == 0 && kib > 4096 ? 1 : passes; /* the scalar reference is slow: one pass */
            double best_gbs = 0, best_read = 0;
            for (int p = 0; p < np + 1; p++) { /* pass 0 warms up */
                double t0 = now_s();
                if (has_avx2) g_sink_u = read_avx2(w, bytes);
                const double dt_read = now_s() - t0;
                float s = 0;
                t0 = now_s();
                for (int64_t r = 0; r < rows; r++) s += dot(BENCH_K, w + (size_t)r * row, xq);
                const double dt = now_s() - t0;
                g_sink = s;
                if (p == 0) continue;
                best_gbs = fmax(best_gbs, (double)bytes / dt * 1e-9);
                if (has_avx2) best_read = fmax(best_read, (double)bytes / dt_read * 1e-9);
            }
            printf("%-5s %-7s %10.2f %10.2f %7.0f%% %10.1f\n", t->name, isas[k], best_gbs, best_read,
                   best_read > 0 ? 100.0 * best_gbs / best_read : 0.0, (double)row / best_gbs);
        }
        free(w);
        free(xq);
    }
    free(xf);
    kern_init(NULL);
    return 0;
}
