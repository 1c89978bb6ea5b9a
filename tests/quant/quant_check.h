/* tests/quant/quant_check.h — test helpers shared by test_simd.c and test_avx512_emu.c:
 * pass/fail counting, a seeded generator, and dot_check(), which runs one vec_dot variant
 * against the scalar reference on the standard data sets. Include from one .c file per program.
 */
#ifndef SAMPAN_QUANT_CHECK_H
#define SAMPAN_QUANT_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"

static int g_pass, g_fail;

static void check(int ok, const char *what) {
    if (ok) {
        g_pass++;
        printf("ok   %s\n", what);
    } else {
        g_fail++;
        printf("FAIL %s\n", what);
    }
}

/* ---- seeded random numbers ------------------------------------------------------------ */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd_u64(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rnd_unit(void) { /* [0,1) */
    return (double)(rnd_u64() >> 11) * (1.0 / 9007199254740992.0);
}

static float rnd_gauss(void) {
    const double u = rnd_unit() + 1e-300, v = rnd_unit();
    return (float)(sqrt(-2.0 * log(u)) * cos(2.0 * 3.14159265358979323846 * v));
}

/* random but finite and sane bytes for a weight row: raw random quants, scales set in range */
static void fill_raw(int type, void *dst, int64_t n) {
    const size_t bytes = qt_row_size(type, n);
    uint8_t *p = dst;
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rnd_u64();
    const qt_traits *t = qt_get(type);
    const int64_t nb = n / t->block_size;
    for (int64_t i = 0; i < nb; i++) {
        const float sgn = (rnd_u64() & 1) ? 1.0f : -1.0f;
        const qt_f16 d = qt_f32_to_f16(sgn * (float)(0.001 + 0.05 * rnd_unit()));
        const qt_f16 dmin = qt_f32_to_f16((float)(0.001 + 0.05 * rnd_unit()));
        switch (type) {
        case QT_F16: ((qt_f16 *)dst)[i] = qt_f32_to_f16(rnd_gauss()); break;
        case QT_BF16: ((qt_bf16 *)dst)[i] = qt_f32_to_bf16(rnd_gauss()); break;
        case QT_F32: ((float *)dst)[i] = rnd_gauss(); break;
        case QT_Q8_0: ((block_q8_0 *)dst)[i].d = d; break;
        case QT_Q4_0: ((block_q4_0 *)dst)[i].d = d; break;
        case QT_Q4_K: ((block_q4_K *)dst)[i].d = d; ((block_q4_K *)dst)[i].dmin = dmin; break;
        case QT_Q6_K: ((block_q6_K *)dst)[i].d = d; break;
        case QT_Q5_0: ((block_q5_0 *)dst)[i].d = d; break;
        case QT_Q5_K: ((block_q5_K *)dst)[i].d = d; ((block_q5_K *)dst)[i].dmin = dmin; break;
        case QT_IQ4_NL: ((block_iq4_nl *)dst)[i].d = d; break;
        case QT_Q4_1: ((block_q4_1 *)dst)[i].d = d; ((block_q4_1 *)dst)[i].m = dmin; break;
        case QT_Q5_1: ((block_q5_1 *)dst)[i].d = d; ((block_q5_1 *)dst)[i].m = dmin; break;
        case QT_Q2_K: ((block_q2_K *)dst)[i].d = d; ((block_q2_K *)dst)[i].dmin = dmin; break;
        case QT_Q3_K: ((block_q3_K *)dst)[i].d = d; break;
        case QT_IQ4_XS: ((block_iq4_xs *)dst)[i].d = d; break;
        default: break;
        }
    }
}

/* With fn == NULL: the scalar reference against a double dot of the dequantized operands.
 * Otherwise: fn against the scalar reference. Several lengths, six data sets each (quantized
 * gaussian weights, with an offset, with an outlier activation, raw random quants at two
 * activation scales). Tolerance 1e-5 * sum |w_i x_i|. Records one check. */
static void dot_check(int type, qt_vec_dot_fn fn, const char *isa) {
    const qt_traits *t = qt_get(type);
    const qt_traits *tv = qt_get(t->vec_dot_type);
    const qt_vec_dot_fn ref = qt_vec_dot_scalar(type);
    int64_t lens[8];
    int nlen = 0;
    if (t->block_size == 1) {
        static const int64_t l1[] = {1, 7, 16, 31, 64, 100, 1000, 4099};
        for (int i = 0; i < 8; i++) lens[nlen++] = l1[i];
    } else {
        static const int64_t m[] = {1, 2, 3, 5, 16};
        const int64_t scale = t->block_size == QK_K ? 1 : 8;
        for (int i = 0; i < 5; i++) lens[nlen++] = m[i] * t->block_size * (i == 4 ? scale : 1);
    }
    double worst = 0;
    int bad = 0;
    for (int li = 0; li < nlen; li++) {
        const int64_t n = lens[li];
        float *wf = malloc((size_t)n * sizeof(float)), *xf = malloc((size_t)n * sizeof(float));
        float *wd = malloc((size_t)n * sizeof(float)), *xd = malloc((size_t)n * sizeof(float));
        void *wq = malloc(qt_row_size(type, n)), *xq = malloc(qt_row_size(t->vec_dot_type, n));
        for (int trial = 0; trial < 6; trial++) {
            const float xs = trial == 5 ? 1e3f : (float)(0.1 + rnd_unit());
            for (int64_t i = 0; i < n; i++) {
                wf[i] = rnd_gauss() * 0.05f + (trial == 2 ? 0.02f : 0.0f);
                xf[i] = rnd_gauss() * xs;
            }
            if (trial == 3) xf[n / 2] = 50.0f * xs; /* an outlier activation */
            if (trial >= 4) fill_raw(type, wq, n);  /* every bit pattern of the quants */
            else t->from_float(wf, wq, n);
            tv->from_float(xf, xq, n);
            t->to_float(wq, wd, n);
            tv->to_float(xq, xd, n);
            double exact = 0, sumabs = 0;
            for (int64_t i = 0; i < n; i++) {
                exact += (double)wd[i] * xd[i];
                sumabs += fabs((double)wd[i] * xd[i]);
            }
            const double r = ref(n, wq, xq);
            const double want = fn ? r : exact;
            const double got = fn ? fn(n, wq, xq) : r;
            worst = fmax(worst, fabs(got - want) / (sumabs + 1e-30));
            if (!(fabs(got - want) <= 1e-5 * sumabs + 1e-30)) {
                bad++;
                printf("  %s %s n=%lld data set %d: %.9g, expected %.9g\n", t->name, fn ? isa : "scalar",
                       (long long)n, trial, got, want);
            }
        }
        free(wf);
        free(xf);
        free(wd);
        free(xd);
        free(wq);
        free(xq);
    }
    char msg[160];
    if (fn) {
        snprintf(msg, sizeof msg, "%-4s %s dot vs scalar (max err %.2e of sum|wx|)", t->name, isa, worst);
    } else {
        snprintf(msg, sizeof msg, "%-4s scalar dot vs double dot of dequantized operands (max err %.2e of sum|wx|)",
                 t->name, worst);
    }
    check(bad == 0, msg);
}

#endif
