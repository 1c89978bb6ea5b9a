/* tests/perf/test_matmul.c — kern_matmul against a float64 reference, and its batch invariance.
 *
 * For each weight type (F32, F16, Q8_0, Q4_0, Q5_0, IQ4_NL, Q4_1, Q5_1, Q4_K, Q5_K, Q6_K, BF16
 * when supported) and
 * each ISA path (best available, then "scalar"):
 *   1. accuracy: out[t][n] vs sum_k dequant(W)[n][k] * back(x)[t][k] in double, where back(x) is
 *      x converted to the type's vec_dot_type and dequantized again (the exact operands of the
 *      dot product); tolerance TOL_REL * sum_k |w*x| (the only rounding is the f32 accumulation);
 *   2. invariance: the rows of a T = 70 single-thread result must be memcmp-identical to the
 *      same tokens computed with T = 1 (every token alone), T = 7 (a slice from the middle), and
 *      T = 70 on 2 and 3 threads; packed Q5_0 and Q6_K also to the rows' (same float order).
 * Weights come two ways: quantized from random floats by the type's from_float, and raw random
 * blocks (every bit pattern, with sane scales) for the quantized types.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"
#include "pool.h"

#define TOL_REL 2e-6
#define T_MAX 70   /* more than one 64-token block of the batched kernels */

static int n_pass, n_fail;

static int verbose;

static void check(int ok, const char *what) {
    if (verbose) printf("%s: %s\n", ok ? "ok" : "FAIL", what);
    if (ok) n_pass++;
    else if (!verbose) {
        n_fail++;
        printf("FAIL: %s\n", what);
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float rnd_f(void) { /* roughly normal, mean 0, sd 1 */
    float s = 0;
    for (int i = 0; i < 4; i++) s += (float)(rnd_u64() >> 40) / (float)(1 << 24);
    return (s - 2.0f) * 1.7f;
}

/* Raw random blocks with the f16/f32 scale fields set to sane random values. */
static void fill_raw(int type, uint8_t *dst, size_t bytes, int64_t n_blocks, size_t bsz) {
    for (size_t i = 0; i < bytes; i++) dst[i] = (uint8_t)rnd_u64();
    for (int64_t b = 0; b < n_blocks; b++) {
        uint8_t *p = dst + (size_t)b * bsz;
        qt_f16 d = qt_f32_to_f16(rnd_f() * 0.01f), dm = qt_f32_to_f16(rnd_f() * 0.01f);
        switch (type) {
        case QT_Q8_0:
        case QT_Q4_0:
        case QT_Q5_0:
        case QT_IQ4_NL: memcpy(p, &d, 2); break;
        case QT_Q4_1:
        case QT_Q5_1:
        case QT_Q4_K:
        case QT_Q5_K: memcpy(p, &d, 2); memcpy(p + 2, &dm, 2); break;
        case QT_Q6_K: memcpy(p + offsetof(block_q6_K, d), &d, 2); break;
        default: break;
        }
    }
}

typedef struct {
    int type, K, N;
    int raw;              /* raw random blocks instead of from_float */
    uint8_t *w;           /* (N, K) in type */
    size_t row;
    float *wd;            /* (N, K) dequantized */
    float *x;             /* (T_MAX, K) */
    float *xd;            /* (T_MAX, K) through vec_dot_type and back */
    const kern_weight *pw;   /* the KERN_X8 copy (kern_pack) when that is under test */
} tcase;

static int case_init(tcase *c, int type, int K, int N, int raw) {
    const qt_traits *t = qt_get(type);
    memset(c, 0, sizeof *c);
    c->type = type;
    c->K = K;
    c->N = N;
    c->raw = raw;
    c->row = qt_row_size(type, K);
    c->w = malloc(c->row * N);
    c->wd = malloc(sizeof(float) * K * N);
    c->x = malloc(sizeof(float) * K * T_MAX);
    c->xd = malloc(sizeof(float) * K * T_MAX);
    float *tmp = malloc(sizeof(float) * K);
    if (!c->w || !c->wd || !c->x || !c->xd || !tmp) return -1;
    for (int n = 0; n < N; n++) {
        uint8_t *wr = c->w + c->row * n;
        if (raw) {
            fill_raw(type, wr, c->row, K / t->block_size, t->type_size);
        } else {
            for (int k = 0; k < K; k++) tmp[k] = rnd_f() * 0.05f;
            t->from_float(tmp, wr, K);
        }
        t->to_float(wr, c->wd + (size_t)n * K, K);
    }
    const qt_traits *xt = qt_get(t->vec_dot_type);
    void *xq = malloc(qt_row_size(t->vec_dot_type, K));
    if (!xq) return -1;
    for (int i = 0; i < T_MAX; i++) {
        float *xr = c->x + (size_t)i * K;
        for (int k = 0; k < K; k++) xr[k] = rnd_f();
        if (i == 5)   /* one row with a large dynamic range */
            for (int k = 0; k < K; k += 7) xr[k] *= 40.0f;
        xt->from_float(xr, xq, K);
        if (xt->to_float) {
            xt->to_float(xq, c->xd + (size_t)i * K, K);
        } else { /* Q8_K has no to_float in every implementation: d * q */
            const block_q8_K *b = xq;
            for (int k = 0; k < K; k++) c->xd[(size_t)i * K + k] = b[k / QK_K].d * b[k / QK_K].qs[k % QK_K];
        }
    }
    free(xq);
    free(tmp);
    return 0;
}

static void case_free(tcase *c) {
    free(c->w);
    free(c->wd);
    free(c->x);
    free(c->xd);
}

static void run(pool *p, const tcase *c, float *out, int t0, int T) {
    kern_weight w = { c->w, c->type, c->N, c->K, c->row, KERN_ROWS };
    if (c->pw) w = *c->pw;
    size_t ss = kern_matmul_scratch(&w, T);
    void *scratch = malloc(ss ? ss : 1);
    kern_matmul(p, out, &w, c->x + (size_t)t0 * c->K, T, scratch);
    free(scratch);
}

static void test_case(const tcase *c, const char *isa, pool *p1, pool *p2, pool *p3) {
    char what[160];
    char name[32];
    snprintf(name, sizeof name, "%s%s", qt_get(c->type)->name, c->pw ? " packed" : "");
    float *base = malloc(sizeof(float) * T_MAX * c->N);
    float *o = malloc(sizeof(float) * T_MAX * c->N);
    run(p1, c, base, 0, T_MAX);

    /* accuracy */
    double worst = 0;
    int bad = 0;
    for (int t = 0; t < T_MAX; t++) {
        for (int n = 0; n < c->N; n++) {
            const float *wr = c->wd + (size_t)n * c->K, *xr = c->xd + (size_t)t * c->K;
            double s = 0, sa = 0;
            for (int k = 0; k < c->K; k++) {
                s += (double)wr[k] * xr[k];
                sa += fabs((double)wr[k] * xr[k]);
            }
            double err = fabs(base[(size_t)t * c->N + n] - s);
            double rel = sa > 0 ? err / sa : err;
            if (rel > worst) worst = rel;
            if (!(err <= TOL_REL * sa + 1e-30)) {
                if (bad++ < 3)
                    printf("  %s %s%s t=%d n=%d: got %.9g want %.9g (sum|wx| %.3g)\n", isa, name,
                           c->raw ? " raw" : "", t, n, base[(size_t)t * c->N + n], s, sa);
            }
        }
    }
    snprintf(what, sizeof what, "%s %s%s K=%d N=%d: accuracy (worst err/sum|wx| %.2e)", isa,
             name, c->raw ? " raw" : "", c->K, c->N, worst);
    check(bad == 0, what);

    /* invariance: T = 1 for every token */
    int diff = 0;
    for (int t = 0; t < T_MAX; t++) {
        run(p1, c, o, t, 1);
        diff += memcmp(o, base + (size_t)t * c->N, sizeof(float) * c->N) != 0;
    }
    snprintf(what, sizeof what, "%s %s%s: T=1 rows identical to T=70 (%d differ)", isa, name,
             c->raw ? " raw" : "", diff);
    check(diff == 0, what);

    run(p1, c, o, 13, 7);
    snprintf(what, sizeof what, "%s %s%s: T=7 rows identical to T=70", isa, name,
             c->raw ? " raw" : "");
    check(memcmp(o, base + (size_t)13 * c->N, sizeof(float) * 7 * c->N) == 0, what);

    pool *ps[2] = { p2, p3 };
    for (int i = 0; i < 2; i++) {
        run(ps[i], c, o, 0, T_MAX);
        snprintf(what, sizeof what, "%s %s%s: %d threads identical to 1 thread", isa, name,
                 c->raw ? " raw" : "", pool_size(ps[i]));
        check(memcmp(o, base, sizeof(float) * T_MAX * c->N) == 0, what);
    }
    free(base);
    free(o);
}

/* Packed Q5_0 and Q6_K keep the float order of their rows' kernels: the same bits, T = 1 and 70 */
static void same_as_rows(tcase *c, pool *p) {
    float *a = malloc(sizeof(float) * T_MAX * c->N), *b = malloc(sizeof(float) * T_MAX * c->N);
    const kern_weight *pw = c->pw;
    for (int T = 1; T <= T_MAX; T += T_MAX - 1) {
        run(p, c, a, 0, T);
        c->pw = NULL;
        run(p, c, b, 0, T);
        c->pw = pw;
        char what[120];
        snprintf(what, sizeof what, "%s packed%s T=%d: bit-identical to the rows' kernel",
                 qt_get(c->type)->name, c->raw ? " raw" : "", T);
        check(!memcmp(a, b, sizeof(float) * (size_t)T * (size_t)c->N), what);
    }
    free(a);
    free(b);
}

/* kern_matmul_n: the same bits as one kern_matmul per weight, for weights that share type and
 * K (one job) and for mixed layouts (the fallback), at T = 1 and T = 9 on 2 threads */
static void test_multi(pool *p2) {
    tcase c;
    if (case_init(&c, QT_Q4_0, 2304, 67, 0) != 0) {
        check(0, "out of memory");
        return;
    }
    kern_weight a = { c.w, c.type, c.N, c.K, c.row, KERN_ROWS };
    kern_weight b = a, d = a;
    b.data = c.w + 5 * c.row;
    b.n_rows = 40;
    d.data = c.w + 20 * c.row;
    d.n_rows = 33;
    size_t psz = kern_pack_size(&b);
    void *pbuf = psz ? aligned_alloc(64, (psz + 63) / 64 * 64) : NULL;
    kern_weight bp = pbuf ? kern_pack(&b, pbuf) : b;
    const kern_weight *sets[2][3] = { { &a, &b, &d }, { &a, &bp, &d } };
    for (int si = 0; si < 2; si++)
        for (int T = 1; T <= 9; T += 8) {
            float *ref[3], *got[3];
            size_t ss = 0;
            for (int i = 0; i < 3; i++) {
                size_t n = sizeof(float) * (size_t)T * (size_t)sets[si][i]->n_rows;
                ref[i] = malloc(n);
                got[i] = malloc(n);
                size_t k = kern_matmul_scratch(sets[si][i], T);
                ss = k > ss ? k : ss;
            }
            void *scratch = malloc(ss);
            for (int i = 0; i < 3; i++) kern_matmul(p2, ref[i], sets[si][i], c.x, T, scratch);
            kern_matmul_n(p2, 3, got, sets[si], c.x, T, scratch);
            int same = 1;
            for (int i = 0; i < 3; i++)
                same &= !memcmp(ref[i], got[i], sizeof(float) * (size_t)T * (size_t)sets[si][i]->n_rows);
            char what[120];
            snprintf(what, sizeof what, "matmul_n of 3 %s weights, T=%d: identical to 3 matmuls",
                     si ? "mixed-layout" : "same-layout", T);
            check(same, what);
            for (int i = 0; i < 3; i++) {
                free(ref[i]);
                free(got[i]);
            }
            free(scratch);
        }
    free(pbuf);
    case_free(&c);
}

int main(void) {
    verbose = getenv("TEST_VERBOSE") != NULL;
    if (kern_init(NULL) != 0) {
        printf("kern_init failed\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    pool *p1 = pool_new(1), *p2 = pool_new(2), *p3 = pool_new(3);
    if (!p1 || !p2 || !p3) {
        printf("pool_new failed\n0 passed, 1 failed\n");
        return 1;
    }
    static const int types[] = { QT_F32, QT_F16, QT_BF16, QT_Q8_0, QT_Q4_0, QT_Q5_0, QT_IQ4_NL, QT_Q4_1,
                                 QT_Q5_1, QT_Q4_K, QT_Q5_K, QT_Q6_K };
    const char *isas[2] = { NULL, "scalar" };
    for (int ii = 0; ii < 2; ii++) {
        if (kern_init(isas[ii]) != 0) continue;
        const char *isa = kern_isa();
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            int type = types[ti];
            const qt_traits *t = qt_get(type);
            if (!t || !t->to_float) continue;
            int bs = t->block_size;
            /* K = 2304 (9 super-blocks: several K chunks with a tail in the batched kernels),
             * plus K = 100 for unblocked types (a partial SIMD step); N = 67 leaves tails in
             * every tile and chunk */
            int Ks[2] = { 2304, bs == 1 ? 100 : 0 };
            for (int ki = 0; ki < 2 && Ks[ki]; ki++) {
                for (int raw = 0; raw < 2; raw++) {
                    if (raw && bs == 1) continue;
                    if (!raw && !t->from_float) continue;
                    tcase c;
                    if (case_init(&c, type, Ks[ki], 67, raw) != 0) {
                        check(0, "out of memory");
                        continue;
                    }
                    test_case(&c, isa, p1, p2, p3);
                    /* the KERN_X8 layout of the same weights, where this ISA has one */
                    kern_weight w = { c.w, c.type, c.N, c.K, c.row, KERN_ROWS };
                    size_t psz = kern_pack_size(&w);
                    void *pbuf = psz ? aligned_alloc(64, (psz + 63) / 64 * 64) : NULL;
                    if (pbuf) {
                        kern_weight pw = kern_pack(&w, pbuf);
                        c.pw = &pw;
                        test_case(&c, isa, p1, p2, p3);
                        if (type == QT_Q5_0 || type == QT_Q6_K) same_as_rows(&c, p2);
                        c.pw = NULL;
                        free(pbuf);
                    } else if (psz) {
                        check(0, "out of memory for a packed weight");
                    }
                    case_free(&c);
                }
            }
        }
    }
    kern_init(NULL);
    test_multi(p2);
    pool_free(p1);
    pool_free(p2);
    pool_free(p3);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
