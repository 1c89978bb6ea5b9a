/* tests/quant/test_simd.c — kernel checks that need no shared data:
 *  0. traits: kern_init's ISA choice and refusals, qt_get / qt_supported / qt_row_size, the
 *     vec_dot_type mapping.
 *  1. f16 and bf16 conversions: exhaustive round trips over all 65536 codes; f16 against the
 *     CPU's F16C instructions (every half, and random / boundary floats incl. subnormals,
 *     overflow, nan); f32 -> bf16 against a nearest-even rule evaluated in double.
 *  2. activation quantizers reproduce llama.cpp's rounding: constructed blocks with exact .5
 *     ties and known signs for Q8_0 and Q8_K (bsums included); their AVX2 versions equal the
 *     scalar ones bit for bit.
 *  3. quantize -> dequantize relative RMS error per type on seeded gaussian data; nan, inf and
 *     huge values stay inside their block; zeros come back as zeros.
 *  4. every vec_dot variant (avx2, avx512 where the CPU has them) against the scalar reference,
 *     and the scalar reference against a double dot of the dequantized operands, on seeded data
 *     (weights both quantized from floats and raw random bytes), several lengths.
 *     Tolerance: 1e-5 * sum |w_i x_i|.
 * An ISA the CPU lacks is reported as "skip <isa>: CPU lacks it" and counts neither way.
 */
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"
#include "quant_check.h"

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static int f16_is_nan(uint16_t h) {
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}

/* ---- 1. conversions ------------------------------------------------------------------- */

static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && ((c >> 29) & 1) && ((c >> 28) & 1);
}

__attribute__((target("f16c"))) static float hw_h2f(uint16_t h) {
    return _cvtsh_ss(h);
}

__attribute__((target("f16c"))) static uint16_t hw_f2h(float f) {
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static void test_f16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = qt_f16_to_f32((qt_f16)h);
        const qt_f16 back = qt_f32_to_f16(f);
        if (f16_is_nan((uint16_t)h)) {
            bad += !(isnan(f) && f16_is_nan(back));
        } else {
            bad += back != h;
        }
    }
    check(bad == 0, "f16 -> f32 -> f16 is the identity on all 65536 codes (nan stays nan)");

    if (!cpu_has_f16c()) {
        printf("skip f16c: CPU lacks it\n");
        return;
    }
    bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float a = qt_f16_to_f32((qt_f16)h), b = hw_h2f((uint16_t)h);
        bad += isnan(b) ? !isnan(a) : f32_bits(a) != f32_bits(b);
    }
    check(bad == 0, "f16 -> f32 equals vcvtph2ps on all 65536 codes");

    /* random bit patterns, then dense neighbourhoods of the interesting boundaries: the
     * largest half, overflow to inf (65520), the normal/subnormal edge, the last value that
     * rounds to the smallest subnormal, and ties in between */
    static const float edges[] = {65504.0f, 65519.99f, 65520.0f, 6.103515625e-05f, 6.0975552e-05f,
                                  5.9604645e-08f, 2.9802322e-08f, 1.0f, 1.5f, 2048.0f, 3.0e-06f};
    bad = 0;
    long count = 0;
    for (int i = 0; i < 2000000; i++) {
        const float f = bits_f32((uint32_t)rnd_u64());
        const uint16_t a = qt_f32_to_f16(f), b = hw_f2h(f);
        bad += f16_is_nan(b) ? !f16_is_nan(a) : a != b;
        count++;
    }
    for (size_t e = 0; e < sizeof(edges) / sizeof(edges[0]); e++) {
        for (int sgn = 0; sgn < 2; sgn++) {
            const uint32_t c = f32_bits(edges[e]) | ((uint32_t)sgn << 31);
            for (int32_t k = -20000; k <= 20000; k++) {
                const float f = bits_f32((uint32_t)((int32_t)c + k));
                const uint16_t a = qt_f32_to_f16(f), b = hw_f2h(f);
                bad += f16_is_nan(b) ? !f16_is_nan(a) : a != b;
                count++;
            }
        }
    }
    char msg[160];
    snprintf(msg, sizeof msg, "f32 -> f16 equals vcvtps2ph (nearest even) on %ld values (%d differ)", count, bad);
    check(bad == 0, msg);
}

/* the bf16 value nearest to f, ties to even, overflow past the largest finite bf16 to inf */
static int bf16_nearest_ok(float f, uint16_t got) {
    if (isnan(f)) return (got & 0x7f80) == 0x7f80 && (got & 0x7f) != 0;
    if (isinf(f)) return got == (f32_bits(f) >> 16);
    const uint32_t t = f32_bits(f) >> 16; /* truncation, toward zero */
    const uint32_t up = t + 1;            /* next code away from zero */
    const double v = fabs((double)f);
    const double vt = fabs((double)qt_bf16_to_f32((qt_bf16)t));
    double vu = fabs((double)qt_bf16_to_f32((qt_bf16)up));
    if (isinf(vu)) vu = ldexp(1.0, 128); /* rounding to inf happens at the midpoint to 2^128 */
    uint32_t want;
    if (v - vt < vu - v) want = t;
    else if (v - vt > vu - v) want = up;
    else want = (t & 1) ? up : t;
    return got == want;
}

static void test_bf16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = qt_bf16_to_f32((qt_bf16)h);
        const qt_bf16 back = qt_f32_to_bf16(f);
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) bad += !(isnan(f) && (back & 0x7f));
        else bad += back != h;
    }
    check(bad == 0, "bf16 -> f32 -> bf16 is the identity on all 65536 codes (nan stays nan)");
    bad = 0;
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)rnd_u64();
        if (i & 1) u = (u & 0xffff0000u) | 0x8000u; /* exact ties */
        const float f = bits_f32(u);
        bad += !bf16_nearest_ok(f, qt_f32_to_bf16(f));
    }
    check(bad == 0, "f32 -> bf16 is nearest-even (2M random values, half of them ties)");
}

/* ---- 2. activation quantizers ---------------------------------------------------------- */

static int rne_expect(double v) { /* nearest integer, ties to even, written out */
    const double fl = floor(v);
    const double frac = v - fl;
    long k = (long)fl;
    if (frac > 0.5 || (frac == 0.5 && (k & 1))) k++;
    return (int)k;
}

static void test_act_quant(void) {
    /* Q8_0: amax 127 gives d = 1 and id = 127/127 = 1 exactly; the rest are exact ties */
    float x[QK_K];
    x[0] = 127.0f;
    for (int j = 1; j < 32; j++) x[j] = (float)j - 15.5f;
    block_q8_0 q8;
    qt_get(QT_Q8_0)->from_float(x, &q8, 32);
    int bad = q8.d != 0x3C00 || q8.qs[0] != 127;
    for (int j = 1; j < 32; j++) bad += q8.qs[j] != rne_expect(x[j]);
    check(!bad, "Q8_0 activations: d = amax/127 in f16, ties round to even");

    /* an amax that is not a power of two: q = rne(x * (127/amax)) in float */
    for (int j = 0; j < 32; j++) x[j] = rnd_gauss();
    qt_get(QT_Q8_0)->from_float(x, &q8, 32);
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float id = 127.0f / amax;
    bad = q8.d != qt_f32_to_f16(amax / 127.0f);
    for (int j = 0; j < 32; j++) bad += q8.qs[j] != rne_expect((double)(x[j] * id));
    check(!bad, "Q8_0 activations: q = round-even(x * (127/amax)) on gaussian data");

    /* Q8_K: block 0 has its largest magnitude positive (d = -1, q = -x), block 1 negative
     * (d = +1, q = x), block 2 is all zero */
    float xk[3 * QK_K];
    for (int j = 0; j < QK_K; j++) xk[j] = (float)(j % 100) - 49.5f;
    xk[7] = 127.0f;
    for (int j = 0; j < QK_K; j++) xk[QK_K + j] = (float)(j % 90) - 44.5f;
    xk[QK_K + 100] = -127.0f;
    memset(xk + 2 * QK_K, 0, QK_K * sizeof(float));
    block_q8_K qk[3];
    memset(qk, 0x55, sizeof qk);
    qt_get(QT_Q8_K)->from_float(xk, qk, 3 * QK_K);
    bad = qk[0].d != -1.0f || qk[1].d != 1.0f || qk[2].d != 0.0f;
    for (int j = 0; j < QK_K; j++) {
        bad += qk[0].qs[j] != (j == 7 ? -127 : rne_expect(-xk[j]));
        bad += qk[1].qs[j] != (j == 100 ? -127 : rne_expect(xk[QK_K + j]));
        bad += qk[2].qs[j] != 0;
    }
    for (int b = 0; b < 3; b++) {
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += qk[b].qs[16 * g + j];
            bad += qk[b].bsums[g] != s;
        }
    }
    check(!bad, "Q8_K activations: d = -max/127 signed, ties to even, bsums, zero block");
}

/* the AVX2 activation quantizers that kern_init installs must equal the scalar ones bit for bit */
static void test_act_quant_simd(void) {
    if (kern_init("avx2") != 0) {
        printf("skip avx2: CPU lacks it\n");
        return;
    }
    const int64_t nb = 48, n = nb * QK_K;
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t b = 0; b < nb; b++) {
        float *p = x + b * QK_K;
        const int kind = (int)(b % 8);
        for (int j = 0; j < QK_K; j++) {
            switch (kind) {
            case 0: p[j] = rnd_gauss() * (float)(1e-3 + rnd_unit()); break;
            case 1: p[j] = (float)((int)(rnd_u64() % 254) - 127) + 0.5f; break; /* ties */
            case 2: p[j] = 0.0f; break;
            case 3: p[j] = rnd_gauss() * 1e-41f; break;                       /* subnormal */
            case 4: p[j] = rnd_gauss() * 1e30f; break;
            default: p[j] = rnd_gauss(); break;
            }
        }
        if (kind == 1) p[0] = 127.0f;
        if (kind == 5) { /* equal magnitudes, opposite signs: the first one sets the sign */
            p[40] = -9.0f;
            p[41] = 9.0f;
            p[200] = 9.0f;
        }
        if (kind == 6) p[77] = NAN;
        if (kind == 7) p[(b * 13) % QK_K] = (b & 8) ? INFINITY : -3e38f;
    }
    static const int types[] = {QT_Q8_0, QT_Q8_K, QT_F16};
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        const size_t bytes = qt_row_size(types[t], n);
        uint8_t *a = malloc(bytes), *b = malloc(bytes);
        kern_init("scalar");
        qt_get(types[t])->from_float(x, a, n);
        kern_init("avx2");
        qt_get(types[t])->from_float(x, b, n);
        int same;
        if (types[t] == QT_F16) { /* nan payloads may differ; everything else bit for bit */
            same = 1;
            for (int64_t i = 0; i < n; i++) {
                const uint16_t ha = ((uint16_t *)a)[i], hb = ((uint16_t *)b)[i];
                same &= isnan(x[i]) ? (f16_is_nan(ha) && f16_is_nan(hb)) : ha == hb;
            }
        } else {
            same = memcmp(a, b, bytes) == 0;
        }
        char msg[128];
        snprintf(msg, sizeof msg, "%-4s activation quantizer: avx2 == scalar bit for bit (ties, zeros, nan, inf)",
                 qt_get(types[t])->name);
        check(same, msg);
        free(a);
        free(b);
    }
    kern_init("scalar");
    free(x);
}

/* ---- 3. round-trip error -------------------------------------------------------------- */

static double rel_rms(int type, const float *x, int64_t n) {
    const qt_traits *t = qt_get(type);
    void *q = malloc(qt_row_size(type, n));
    float *y = malloc((size_t)n * sizeof(float));
    t->from_float(x, q, n);
    t->to_float(q, y, n);
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        s += (double)x[i] * x[i];
    }
    free(q);
    free(y);
    return s > 0 ? sqrt(e / s) : sqrt(e);
}

static void test_roundtrip(void) {
    static const struct { int type; double bound; } cases[] = {
        {QT_F16, 5e-4}, {QT_BF16, 4e-3}, {QT_Q8_0, 0.01}, {QT_Q8_K, 0.01},
        {QT_Q4_0, 0.15}, {QT_Q4_K, 0.10}, {QT_Q6_K, 0.03},
        {QT_Q4_1, 0.15}, {QT_Q5_0, 0.08}, {QT_Q5_1, 0.08}, {QT_IQ4_NL, 0.15}, {QT_Q5_K, 0.05},
        /* the bounds stated above the quantizers in kernels/cpu/quant.c */
        {QT_Q2_K, 0.30}, {QT_Q3_K, 0.17}, {QT_IQ4_XS, 0.10},
    };
    const int64_t n = 64 * QK_K;
    float *x = malloc((size_t)n * sizeof(float));
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        /* gaussian rows whose scale changes every 256 elements, plus a positive offset in every
         * fourth row to exercise the Q4_K minimum */
        for (int64_t i = 0; i < n; i++) {
            const int64_t r = i / QK_K;
            x[i] = rnd_gauss() * (float)(0.01 + 0.05 * (double)(r % 7)) + ((r % 4) == 3 ? 0.05f : 0.0f);
        }
        const double err = rel_rms(cases[c].type, x, n);
        char msg[128];
        snprintf(msg, sizeof msg, "%-4s round trip: relative rms error %.5f < %.5f", qt_get(cases[c].type)->name,
                 err, cases[c].bound);
        check(err < cases[c].bound, msg);

        /* hostile values in block 0 (nan, inf, huge, denormal) must not reach block 1 */
        const int64_t bs = qt_get(cases[c].type)->block_size == 1 ? 8 : qt_get(cases[c].type)->block_size;
        static const float bad_vals[] = {NAN, INFINITY, -INFINITY, 3e38f, -3e38f, 1e-45f};
        for (int64_t i = 0; i < 2 * bs; i++) x[i] = i < bs ? bad_vals[i % 6] : rnd_gauss();
        const double err1 = rel_rms(cases[c].type, x + bs, bs);
        void *qb = malloc(qt_row_size(cases[c].type, 2 * bs));
        float *yb = malloc((size_t)(2 * bs) * sizeof(float));
        qt_get(cases[c].type)->from_float(x, qb, 2 * bs);
        qt_get(cases[c].type)->to_float(qb, yb, 2 * bs);
        double e2 = 0, s2 = 0;
        for (int64_t i = bs; i < 2 * bs; i++) {
            e2 += ((double)yb[i] - x[i]) * ((double)yb[i] - x[i]);
            s2 += (double)x[i] * x[i];
        }
        free(qb);
        free(yb);
        snprintf(msg, sizeof msg, "%-4s nan/inf/huge in one block leave the next block as it would be",
                 qt_get(cases[c].type)->name);
        check(fabs(sqrt(e2 / s2) - err1) <= 1e-12, msg);

        /* all-zero input comes back as zeros */
        memset(x, 0, QK_K * sizeof(float));
        snprintf(msg, sizeof msg, "%-4s all-zero block comes back as zeros", qt_get(cases[c].type)->name);
        check(rel_rms(cases[c].type, x, QK_K) == 0.0, msg);
    }
    free(x);
}

/* ---- 4. dot products ------------------------------------------------------------------ */

static const char *const g_isas[] = {"avx2", "avx512"};

static void test_dots(void) {
    static const int types[] = {QT_F32, QT_F16, QT_BF16, QT_Q8_0, QT_Q4_0, QT_Q4_K, QT_Q6_K,
                                QT_Q4_1, QT_Q5_0, QT_Q5_1, QT_IQ4_NL, QT_Q5_K, QT_Q2_K, QT_Q3_K,
                                QT_IQ4_XS};
    for (int k = 0; k < 2; k++) {
        if (kern_init(g_isas[k]) != 0) {
            printf("skip %s: CPU lacks it\n", g_isas[k]);
            continue;
        }
        for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
            const qt_vec_dot_fn fn = qt_get(types[ti])->vec_dot;
            dot_check(types[ti], fn, g_isas[k]);
        }
    }
    kern_init("scalar");
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) dot_check(types[ti], NULL, NULL);
}

/* ---- traits --------------------------------------------------------------------------- */

static void test_traits(void) {
    check(kern_init("no-such-isa") == -1, "kern_init refuses an unknown ISA name");
    check(kern_init(NULL) == 0, "kern_init(NULL) succeeds");
    printf("     best ISA here: %s\n", kern_isa());
    check(qt_get(16) == NULL && qt_get(-1) == NULL && qt_get(QT_COUNT) == NULL && !qt_supported(16),
          "unsupported type ids give NULL");
    check(qt_supported(QT_Q4_K) && qt_supported(QT_BF16) && !qt_supported(QT_Q8_K) && qt_get(QT_Q8_K) != NULL,
          "Q8_K has traits (activations) but is not a weight type");
    check(qt_row_size(QT_Q4_K, 512) == 288 && qt_row_size(QT_Q4_0, 64) == 36 && qt_row_size(QT_Q4_0, 48) == 0 &&
              qt_row_size(QT_F16, 3) == 6 && qt_row_size(QT_Q6_K, 256) == 210 && qt_row_size(QT_Q8_0, 32) == 34,
          "qt_row_size");
    check(qt_get(QT_Q4_0)->vec_dot_type == QT_Q8_0 && qt_get(QT_Q6_K)->vec_dot_type == QT_Q8_K &&
              qt_get(QT_F16)->vec_dot_type == QT_F16 && qt_get(QT_BF16)->vec_dot_type == QT_BF16,
          "vec_dot_type mapping");
    check(strcmp(qt_get(QT_Q4_K)->name, "Q4_K") == 0 && qt_get(QT_Q6_K)->block_size == QK_K,
          "names and block sizes");
}

int main(void) {
    test_traits();
    test_f16();
    test_bf16();
    test_act_quant();
    test_act_quant_simd();
    test_roundtrip();
    test_dots();
    kern_init(NULL);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
