/* tests/perf/test_ops.c — kern_attn and kern_attn_group over a paged KV cache; kern_softmax and
 * kern_swiglu.
 *
 * For each ISA path (best available, then "scalar"), head dims D in {64, 40, 36} (36: not a
 * multiple of 8, the scalar loop on every ISA), group sizes G in {1, 3, 8} and lengths n in
 * {1, 3, 4, 77} (77 positions over 5 blocks of 16, in a shuffled block table):
 *   1. accuracy: each head's output vs softmax attention computed in double, within
 *      1e-5 x max |v|;
 *   2. grouping: kern_attn_group's G outputs are memcmp-identical to G kern_attn calls (the
 *      grouped kernel only shares loads, never arithmetic, so the model may use either);
 *   3. f16 and bf16 caches: memcmp-identical to an f32 cache holding the same values.
 * Softmax and SwiGLU, each ISA path, lengths 1..41 (vector body and tail), inputs in [-30, 30]
 * plus +-90 (the clamps of the AVX2 exp): relative error vs float64 within 4e-7 (softmax: of
 * the largest output) and every element bit-identical to the same element computed alone (a
 * value never depends on its index or the length).
 * GeGLU (kern_geglu's table lookup): over every finite half, each half +- one f32 ulp (the
 * rounding boundaries) and values around the +-10 thresholds, bit-identical to om_gelu_f16
 * (ggml's formula) and within half precision of GELU's tanh form in float64.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"
#include "ops_math.h"

#define BS 16        /* positions per block */
#define NBLK 6       /* blocks in the cache */
#define KVH 3        /* KV heads per slot; the tests use head 1 */
#define NMAX 77

static int n_pass, n_fail;

static void check(int ok, const char *what) {
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAIL: %s\n", what);
    }
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float rnd(void) {   /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

static void run(const char *isa, int D) {
    const int G_list[] = { 1, 3, 8 }, n_list[] = { 1, 3, 4, NMAX };
    size_t slot = (size_t)KVH * D, blk = (size_t)BS * slot;
    float *k = malloc(sizeof(float) * NBLK * blk), *v = malloc(sizeof(float) * NBLK * blk);
    float *q = malloc(sizeof(float) * 8 * D), *o1 = malloc(sizeof(float) * 8 * D);
    float *o2 = malloc(sizeof(float) * 8 * D), *att = malloc(sizeof(float) * 8 * NMAX);
    for (size_t i = 0; i < NBLK * blk; i++) {
        k[i] = rnd();
        v[i] = rnd();
    }
    uint16_t *k16 = malloc(2 * NBLK * blk), *v16 = malloc(2 * NBLK * blk);
    float *kw = malloc(sizeof(float) * NBLK * blk), *vw = malloc(sizeof(float) * NBLK * blk);
    int32_t table[NBLK] = { 4, 0, 5, 2, 1, 3 };   /* position p lives in block table[p / BS] */
    kern_kv_view kv = { k + D, v + D, table, BS, blk, slot, QT_F32, 0, 0 };   /* KV head 1 */
    float scale = 1.0f / sqrtf((float)D);
    for (int gi = 0; gi < 3; gi++) {
        for (int ni = 0; ni < 4; ni++) {
            int G = G_list[gi], n = n_list[ni];
            char what[128];
            for (int i = 0; i < G * D; i++) q[i] = 2.0f * rnd();
            kern_attn_group(o1, q, G, D, scale, n, &kv, att);
            for (int g = 0; g < G; g++) kern_attn(o2 + (size_t)g * D, q + (size_t)g * D, D, scale, n, &kv, att);
            snprintf(what, sizeof what, "%s D=%d G=%d n=%d: group == per-head calls", isa, D, G, n);
            check(memcmp(o1, o2, sizeof(float) * (size_t)G * D) == 0, what);
            double worst = 0;
            for (int g = 0; g < G; g++) {
                double s[NMAX], mx = -1e300, sum = 0;
                for (int p = 0; p < n; p++) {
                    const float *kp = k + D + (size_t)table[p / BS] * blk + (size_t)(p % BS) * slot;
                    double d = 0;
                    for (int i = 0; i < D; i++) d += (double)kp[i] * q[(size_t)g * D + i];
                    s[p] = d * scale;
                    mx = s[p] > mx ? s[p] : mx;
                }
                for (int p = 0; p < n; p++) sum += (s[p] = exp(s[p] - mx));
                for (int i = 0; i < D; i++) {
                    double ref = 0;
                    for (int p = 0; p < n; p++)
                        ref += s[p] / sum * v[D + (size_t)table[p / BS] * blk + (size_t)(p % BS) * slot + i];
                    double e = fabs(ref - o1[(size_t)g * D + i]);
                    worst = e > worst ? e : worst;
                }
            }
            snprintf(what, sizeof what, "%s D=%d G=%d n=%d: |out - float64| = %.2g <= 1e-5", isa, D, G, n, worst);
            check(worst <= 1e-5, what);
            /* 16-bit caches: the output over an f16 / bf16 cache equals, bit for bit, the f32
             * output over the same values widened (the kernels widen exactly, then do the
             * f32 arithmetic) */
            for (int ty = 0; ty < 2; ty++) {
                int type = ty ? QT_BF16 : QT_F16;
                for (size_t i = 0; i < NBLK * blk; i++) {
                    uint16_t hk = ty ? qt_f32_to_bf16(k[i]) : qt_f32_to_f16(k[i]);
                    uint16_t hv = ty ? qt_f32_to_bf16(v[i]) : qt_f32_to_f16(v[i]);
                    k16[i] = hk, v16[i] = hv;
                    kw[i] = ty ? qt_bf16_to_f32(hk) : qt_f16_to_f32(hk);
                    vw[i] = ty ? qt_bf16_to_f32(hv) : qt_f16_to_f32(hv);
                }
                kern_kv_view k16v = { k16 + D, v16 + D, table, BS, blk, slot, type, 0, 0 };
                kern_kv_view kwv = { kw + D, vw + D, table, BS, blk, slot, QT_F32, 0, 0 };
                kern_attn_group(o1, q, G, D, scale, n, &k16v, att);
                kern_attn_group(o2, q, G, D, scale, n, &kwv, att);
                snprintf(what, sizeof what, "%s D=%d G=%d n=%d: %s cache == f32 cache of its values",
                         isa, D, G, n, ty ? "bf16" : "f16");
                check(memcmp(o1, o2, sizeof(float) * (size_t)G * D) == 0, what);
            }
        }
    }
    free(k);
    free(v);
    free(k16);
    free(v16);
    free(kw);
    free(vw);
    free(q);
    free(o1);
    free(o2);
    free(att);
}

static void run_elementwise(const char *isa) {
    enum { NE = 41 };
    float x[NE], g[NE], u[NE], o[NE], one;
    for (int n = 1; n <= NE; n++) {
        for (int i = 0; i < n; i++) {
            x[i] = 30.0f * rnd();
            g[i] = 30.0f * rnd();
            u[i] = rnd();
        }
        if (n > 3) {
            g[0] = 90.0f;
            g[1] = -90.0f;
            x[2] = -90.0f;
        }
        double mx = -1e300, sum = 0, worst = 0, worst_s = 0;
        for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
        for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
        float sm[NE];
        memcpy(sm, x, sizeof sm);
        kern_softmax(sm, n);
        for (int i = 0; i < n; i++) {
            double e = fabs(sm[i] - exp((double)x[i] - mx) / sum);
            worst = e > worst ? e : worst;
        }
        kern_swiglu(o, g, u, n);
        int alone = 1;
        for (int i = 0; i < n; i++) {
            double ref = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            double e = fabs(o[i] - ref) / (fabs(ref) > 1e-30 ? fabs(ref) : 1e-30);
            if (fabs(ref) > 1e-30) worst_s = e > worst_s ? e : worst_s;
            kern_swiglu(&one, &g[i], &u[i], 1);
            alone = alone && memcmp(&one, &o[i], sizeof one) == 0;
        }
        char what[128];
        snprintf(what, sizeof what, "%s softmax n=%d: max |p - float64| = %.2g <= 4e-7", isa, n, worst);
        check(worst <= 4e-7, what);
        snprintf(what, sizeof what, "%s swiglu n=%d: max rel error %.2g <= 4e-7", isa, n, worst_s);
        check(worst_s <= 4e-7, what);
        snprintf(what, sizeof what, "%s swiglu n=%d: each element equals it computed alone", isa, n);
        check(alone, what);
    }
}

static double gelu64(double x) {
    return 0.5 * x * (1.0 + tanh(0.79788456080286535588 * x * (1.0 + 0.044715 * x * x)));
}

static void run_geglu(void) {
    enum { N = 3 * 65536 + 64 };
    float *g = malloc(N * sizeof *g), *u = malloc(N * sizeof *u), *o = malloc(N * sizeof *o);
    int n = 0;
    for (uint32_t t = 0; t < 65536; t++) {
        float h = qt_f16_to_f32((qt_f16)t);
        if (!isfinite(h)) continue;
        g[n++] = h;
        g[n++] = nextafterf(h, INFINITY);
        g[n++] = nextafterf(h, -INFINITY);
    }
    for (int i = 0; i < 32; i++) {
        g[n++] = 10.0f - 0.001f * (float)i;
        g[n++] = -10.0f + 0.001f * (float)i;
    }
    for (int i = 0; i < n; i++) u[i] = i % 3 ? rnd() : 1.0f;
    kern_geglu(o, g, u, n);
    int same = 1;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        float want = om_gelu_f16(g[i]) * u[i];
        same = same && memcmp(&want, &o[i], sizeof want) == 0;
        if (fabsf(g[i]) < 10.0f) {   /* x and GELU(x) each rounded to half: 2^-11 relative, twice */
            double ref = gelu64(g[i]) * u[i];
            double e = fabs(o[i] - ref) / (fabs(ref) + 6.2e-5 * fabs(u[i]));
            worst = e > worst ? e : worst;
        }
    }
    char what[128];
    snprintf(what, sizeof what, "geglu over %d inputs: bit-identical to om_gelu_f16", n);
    check(same, what);
    snprintf(what, sizeof what, "geglu: max rel error vs float64 %.2g <= 2e-3", worst);
    check(worst <= 2e-3, what);
    free(g);
    free(u);
    free(o);
}

int main(void) {
    const char *isas[] = { NULL, "scalar" };
    for (int i = 0; i < 2; i++) {
        if (kern_init(isas[i]) != 0) {
            printf("FAIL: kern_init(%s)\n", isas[i] ? isas[i] : "best");
            return 1;
        }
        for (int d = 0; d < 3; d++) run(kern_isa(), (int[]){ 64, 40, 36 }[d]);
        run_elementwise(kern_isa());
    }
    run_geglu();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
