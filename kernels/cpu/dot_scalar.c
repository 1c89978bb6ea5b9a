/* kernels/cpu/dot_scalar.c — scalar reference dot products, one per weight type.
 *
 * These are the definitions the SIMD variants are tested against. Float types accumulate in
 * double. Quantized types compute each block's sum exactly in int32, then add
 * isum * (weight scale * activation scale) in float, the same per-block value the SIMD
 * variants produce, so the two differ only by the order of the float additions.
 * Each function: w is one weight row of n elements, x the activation row in the weight type's
 * vec_dot_type (see quant_impl.h), n a multiple of the block size.
 */
#include <string.h>

#include "dequant_math.h"
#include "kern.h"
#include "quant_impl.h"

float qt_dot_f32_scalar(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return (float)s;
}

float qt_dot_f16_scalar(int64_t n, const void *w, const void *x) {
    const qt_f16 *a = w, *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)qt_f16_to_f32(a[i]) * qt_f16_to_f32(b[i]);
    return (float)s;
}

float qt_dot_bf16_scalar(int64_t n, const void *w, const void *x) {
    const qt_bf16 *a = w, *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)qt_bf16_to_f32(a[i]) * qt_bf16_to_f32(b[i]);
    return (float)s;
}

float qt_dot_q8_0_scalar(int64_t n, const void *w, const void *x) {
    const block_q8_0 *a = w, *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int32_t isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += a[i].qs[j] * b[i].qs[j];
        s += (float)isum * (qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d));
    }
    return s;
}

float qt_dot_q4_0_scalar(int64_t n, const void *w, const void *x) {
    const block_q4_0 *a = w;
    const block_q8_0 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int32_t isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            isum += ((a[i].qs[j] & 0xF) - 8) * b[i].qs[j];
            isum += ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + QK4_0 / 2];
        }
        s += (float)isum * (qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d));
    }
    return s;
}

/* per block: d*yd*sum((q-16)*y), q the 5-bit value of qt_dq_q5_0 */
float qt_dot_q5_0_scalar(int64_t n, const void *w, const void *x) {
    const block_q5_0 *a = w;
    const block_q8_0 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        uint32_t qh;
        memcpy(&qh, a[i].qh, 4);   /* little-endian, as the layout */
        int32_t isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            const int lo = (a[i].qs[j] & 0xF) | (int)((qh >> j) & 1u) << 4;
            const int hi = (a[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
            isum += (lo - 16) * b[i].qs[j] + (hi - 16) * b[i].qs[j + QK4_0 / 2];
        }
        s += (float)isum * (qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d));
    }
    return s;
}

/* Q4_1 / Q5_1 against Q8_0: per block d*yd*sum(q*y) + m*(yd*sum(y)) (llama.cpp's Q8_1 sum
 * term, here from the Q8_0 block itself) */
static float qt__dot_min32(int64_t n, const uint8_t *w, size_t bsize, int five, const block_q8_0 *b) {
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++, w += bsize) {
        qt_f16 d, m;
        memcpy(&d, w, 2);
        memcpy(&m, w + 2, 2);
        const uint8_t *qh = w + 4, *qs = five ? w + 8 : w + 4;
        int32_t isum = 0, ysum = 0;
        for (int j = 0; j < QK4_0; j++) {
            int q = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
            if (five) q |= ((qh[j >> 3] >> (j & 7)) & 1) << 4;
            isum += q * b[i].qs[j];
            ysum += b[i].qs[j];
        }
        const float yd = qt_f16_to_f32(b[i].d);
        s += (float)isum * (qt_f16_to_f32(d) * yd) + qt_f16_to_f32(m) * (yd * (float)ysum);
    }
    return s;
}

float qt_dot_q4_1_scalar(int64_t n, const void *w, const void *x) {
    return qt__dot_min32(n, w, sizeof(block_q4_1), 0, x);
}

float qt_dot_q5_1_scalar(int64_t n, const void *w, const void *x) {
    return qt__dot_min32(n, w, sizeof(block_q5_1), 1, x);
}

/* IQ4_NL against Q8_0: per block d*yd*sum(levels[q]*y) */
float qt_dot_iq4_nl_scalar(int64_t n, const void *w, const void *x) {
    static const int8_t levels[16] = QT_IQ4NL_VALUES;
    const block_iq4_nl *a = w;
    const block_q8_0 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int32_t isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++)
            isum += levels[a[i].qs[j] & 0xF] * b[i].qs[j] + levels[a[i].qs[j] >> 4] * b[i].qs[j + 16];
        s += (float)isum * (qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d));
    }
    return s;
}

/* One Q4_K or Q5_K block against a Q8_K one: d*yd*sum_j sc[j]*(q·y8 over sub-block j)
 * - dmin*yd*sum_j m[j]*(sum of y8 over j), the second sum read from the activation's bsums (two
 * per sub-block of 32). q is the low nibble (even sub-blocks) or the high one (odd), plus for
 * Q5_K (qh != NULL) the fifth bit: bit 2c of qh[l] for the low half, 2c+1 for the high. */
static inline float qt__dot_q45_K_block(qt_f16 d, qt_f16 dmin, const uint8_t *scales,
                                        const uint8_t *q, const uint8_t *qh, const block_q8_K *b) {
    int32_t isum = 0, msum = 0;
    const int8_t *y = b->qs;
    for (int c = 0; c < QK_K / 64; c++, q += 32, y += 64) {
        uint8_t sc1, m1, sc2, m2;
        qt_q4k_scale_min(2 * c, scales, &sc1, &m1);
        qt_q4k_scale_min(2 * c + 1, scales, &sc2, &m2);
        int32_t s1 = 0, s2 = 0;
        for (int l = 0; l < 32; l++) {
            const int h1 = qh ? ((qh[l] >> (2 * c)) & 1) << 4 : 0;
            const int h2 = qh ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0;
            s1 += ((q[l] & 0xF) | h1) * y[l];
            s2 += ((q[l] >> 4) | h2) * y[l + 32];
        }
        isum += sc1 * s1 + sc2 * s2;
        msum += m1 * (b->bsums[4 * c] + b->bsums[4 * c + 1]) +
                m2 * (b->bsums[4 * c + 2] + b->bsums[4 * c + 3]);
    }
    return (qt_f16_to_f32(d) * b->d) * (float)isum - (qt_f16_to_f32(dmin) * b->d) * (float)msum;
}

float qt_dot_q4_K_scalar(int64_t n, const void *w, const void *x) {
    const block_q4_K *a = w;
    const block_q8_K *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++)
        s += qt__dot_q45_K_block(a[i].d, a[i].dmin, a[i].scales, a[i].qs, NULL, &b[i]);
    return s;
}

float qt_dot_q5_K_scalar(int64_t n, const void *w, const void *x) {
    const block_q5_K *a = w;
    const block_q8_K *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++)
        s += qt__dot_q45_K_block(a[i].d, a[i].dmin, a[i].scales, a[i].qs, a[i].qh, &b[i]);
    return s;
}

/* per block: d*yd*sum_g scales[g]*((q6-32)·y8 over sub-block g of 16) */
float qt_dot_q6_K_scalar(int64_t n, const void *w, const void *x) {
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int32_t gsum[16] = {0};
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = a[i].ql + 64 * h, *qh = a[i].qh + 32 * h;
            const int8_t *y = b[i].qs + 128 * h;
            for (int l = 0; l < 32; l++) {
                const int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                const int g = 8 * h + l / 16;
                gsum[g] += q1 * y[l];
                gsum[g + 2] += q2 * y[l + 32];
                gsum[g + 4] += q3 * y[l + 64];
                gsum[g + 6] += q4 * y[l + 96];
            }
        }
        int32_t isum = 0;
        for (int g = 0; g < 16; g++) isum += a[i].scales[g] * gsum[g];
        s += (qt_f16_to_f32(a[i].d) * b[i].d) * (float)isum;
    }
    return s;
}

/* ---- Q2_K, Q3_K, IQ4_XS against Q8_K ------------------------------------------------------
 * One loop for the three: a per-type unpacker turns each block, with dequant_math.h's helpers
 * (the code the dequantizers use), into levels q[256], scales sc[16] (one per sub-block of 16;
 * IQ4_XS's scale of 32 twice), d and, for Q2_K, dmin with msum = sum_g m[g]*bsums[g]. Per
 * block: d*yd*sum_g sc[g]*(q·y over sub-block g) - dmin*yd*msum, the sums exact in int32
 * (|isum| <= 256 * 127 * 127 * 63 < 2^31). */
typedef struct { float d, dmin; int32_t msum; } qt__k16;
typedef qt__k16 (*qt__unpack16_fn)(const void *blk, const int16_t *bsums, int8_t *q, int *sc);

static float qt__dot_k16(int64_t n, const uint8_t *w, size_t bsize, qt__unpack16_fn unpack,
                         const block_q8_K *b) {
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, w += bsize) {
        int8_t q[QK_K];
        int sc[16];
        const qt__k16 k = unpack(w, b[i].bsums, q, sc);
        int32_t isum = 0;
        for (int g = 0; g < 16; g++) {
            int32_t gs = 0;
            for (int l = 0; l < 16; l++) gs += q[16 * g + l] * b[i].qs[16 * g + l];
            isum += sc[g] * gs;
        }
        s += (k.d * b[i].d) * (float)isum - (k.dmin * b[i].d) * (float)k.msum;
    }
    return s;
}

static qt__k16 qt__unpack_q2_K(const void *blk, const int16_t *bsums, int8_t *q, int *sc) {
    const block_q2_K *a = blk;
    qt__k16 k = {qt_f16_to_f32(a->d), qt_f16_to_f32(a->dmin), 0};
    for (int r = 0; r < QK_K; r++) q[r] = (int8_t)qt_q2k_level(a->qs, r);
    for (int g = 0; g < 16; g++) {
        sc[g] = a->scales[g] & 0xF;
        k.msum += (a->scales[g] >> 4) * bsums[g];
    }
    return k;
}

static qt__k16 qt__unpack_q3_K(const void *blk, const int16_t *bsums, int8_t *q, int *sc) {
    const block_q3_K *a = blk;
    for (int r = 0; r < QK_K; r++) q[r] = (int8_t)qt_q3k_level(a, r);
    for (int g = 0; g < 16; g++) sc[g] = qt_q3k_scale(g, a->scales);
    (void)bsums;
    return (qt__k16){qt_f16_to_f32(a->d), 0.0f, 0};
}

static qt__k16 qt__unpack_iq4_xs(const void *blk, const int16_t *bsums, int8_t *q, int *sc) {
    static const int8_t levels[16] = QT_IQ4NL_VALUES;
    const block_iq4_xs *a = blk;
    for (int r = 0; r < QK_K; r++) q[r] = levels[qt_iq4xs_index(a, r)];
    for (int g = 0; g < 16; g++) sc[g] = qt_iq4xs_scale(g / 2, a->scales_h, a->scales_l);
    (void)bsums;
    return (qt__k16){qt_f16_to_f32(a->d), 0.0f, 0};
}

float qt_dot_q2_K_scalar(int64_t n, const void *w, const void *x) {
    return qt__dot_k16(n, w, sizeof(block_q2_K), qt__unpack_q2_K, x);
}

float qt_dot_q3_K_scalar(int64_t n, const void *w, const void *x) {
    return qt__dot_k16(n, w, sizeof(block_q3_K), qt__unpack_q3_K, x);
}

float qt_dot_iq4_xs_scalar(int64_t n, const void *w, const void *x) {
    return qt__dot_k16(n, w, sizeof(block_iq4_xs), qt__unpack_iq4_xs, x);
}
