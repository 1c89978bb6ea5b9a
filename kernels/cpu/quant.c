/* kernels/cpu/quant.c — to_float and from_float for every tensor type (layouts in qtypes.h).
 *
 * Dequantization follows the GGUF definitions element for element. Quantizers come in two kinds:
 * - activation quantizers (Q8_0, Q8_K) reproduce llama.cpp's x86 CPU backend bit for bit, because
 *   our agreement with llama.cpp reference logits depends on rounding activations the same way:
 *     Q8_0: d = amax/127 (stored f16), q = round_half_even(x * (127/amax))
 *     Q8_K: max = the element of largest |x| (signed), iscale = -127/max, q = min(127,
 *           round_half_even(iscale*x)), d = 1/iscale (f32, negative when max > 0),
 *           bsums[i] = sum of quants 16i..16i+15
 *   (one deliberate difference: when subnormal activations make x*id overflow to +inf we store
 *   127, where llama.cpp's vcvtps2dq gives -128)
 * - weight quantizers (Q4_0, Q4_K, Q6_K, ...) aim for low error with simple searched scales; they
 *   are not bit-identical to llama.cpp's and need not be. The bound each one keeps is stated
 *   above it; for the super-block types it is the relative RMS error that tests/quant's
 *   round-trip check (quant_simd) holds it to on gaussian rows.
 * All functions take n a multiple of the type's block size; rows are processed block by block.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "dequant_math.h"
#include "kern.h"
#include "quant_impl.h"

/* ---- to_float: the element math of kernels/dequant_math.h, shared with the CUDA kernels ---- */

void qt_dequant_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

#define QT__DEQUANT(name, elem)                                        \
    void name(const void *src, float *dst, int64_t n) {               \
        for (int64_t e = 0; e < n; e++) dst[e] = elem(src, e);        \
    }
QT__DEQUANT(qt_dequant_f16, qt_dq_f16)
QT__DEQUANT(qt_dequant_bf16, qt_dq_bf16)
QT__DEQUANT(qt_dequant_q8_0, qt_dq_q8_0)
QT__DEQUANT(qt_dequant_q4_0, qt_dq_q4_0)
QT__DEQUANT(qt_dequant_q5_0, qt_dq_q5_0)
QT__DEQUANT(qt_dequant_q4_1, qt_dq_q4_1)
QT__DEQUANT(qt_dequant_q5_1, qt_dq_q5_1)
QT__DEQUANT(qt_dequant_iq4_nl, qt_dq_iq4_nl)
QT__DEQUANT(qt_dequant_q4_K, qt_dq_q4_K)
QT__DEQUANT(qt_dequant_q5_K, qt_dq_q5_K)
QT__DEQUANT(qt_dequant_q6_K, qt_dq_q6_K)
QT__DEQUANT(qt_dequant_q8_K, qt_dq_q8_K)
QT__DEQUANT(qt_dequant_q2_K, qt_dq_q2_K)
QT__DEQUANT(qt_dequant_q3_K, qt_dq_q3_K)
QT__DEQUANT(qt_dequant_iq4_xs, qt_dq_iq4_xs)

/* ---- from_float: plain types ---------------------------------------------------------- */

void qt_quant_f32(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void qt_quant_f16(const float *src, void *dst, int64_t n) {
    qt_f16 *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = qt_f32_to_f16(src[i]);
}

void qt_quant_bf16(const float *src, void *dst, int64_t n) {
    qt_bf16 *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = qt_f32_to_bf16(src[i]);
}

/* ---- from_float: activation types (llama.cpp x86 semantics, see the header comment) ------ */

/* qt_rne (dequant_math.h): round half to even, exact for |v| < 2^22, hostile inputs clamped */
static inline int qt__rne(float v) { return qt_rne(v); }

void qt_quant_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, src += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) {
            const float ax = fabsf(src[j]);
            amax = ax > amax ? ax : amax;
        }
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        b[i].d = qt_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++) {
            int q = qt__rne(src[j] * id);
            b[i].qs[j] = (int8_t)(q > 127 ? 127 : q < -128 ? -128 : q);
        }
    }
}

void qt_quant_q8_K(const float *src, void *dst, int64_t n) {
    block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            const float ax = fabsf(src[j]);
            if (ax > amax) {
                amax = ax;
                max = src[j];
            }
        }
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof(b[i]));
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            const int q = qt__rne(iscale * src[j]);
            b[i].qs[j] = (int8_t)(q > 127 ? 127 : q < -128 ? -128 : q); /* below -127 only for nan */
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += b[i].qs[16 * g + j];
            b[i].bsums[g] = (int16_t)s;
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---- from_float: AVX2 versions of the activation quantizers ----------------------------
 * Bit-identical to the scalar functions above (the same float operations in the same order;
 * vroundps rounds half to even like qt__rne; a product that overflows to +-inf, which needs
 * subnormal activations, saturates to 127 / -128 and nan gives -128 in both), except that F16
 * keeps a nan's payload where qt_f32_to_f16 makes it 0x7e00. kern_init installs them
 * when the CPU has AVX2; compiled through the target attribute so this file needs no ISA flags.
 */

#define QT__AVX2 __attribute__((target("avx2,fma,f16c")))

QT__AVX2 static inline float qt__hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* 32 int32 (4 vectors of 8, in element order) -> 32 int8 with signed saturation, in order */
QT__AVX2 static inline __m256i qt__pack32(__m256i i0, __m256i i1, __m256i i2, __m256i i3) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

QT__AVX2 void qt_quant_q8_0_avx2(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 top = _mm256_set1_ps(127.0f);
    for (int64_t i = 0; i < n / QK8_0; i++, src += QK8_0) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(src + 8 * k);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), m); /* a nan operand yields m */
        }
        const float amax = qt__hmax8(m);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        b[i].d = qt_f32_to_f16(d);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            const __m256 r = _mm256_round_ps(_mm256_mul_ps(v[k], _mm256_set1_ps(id)),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q[k] = _mm256_cvtps_epi32(_mm256_min_ps(top, r)); /* +inf -> 127, nan -> -128 */
        }
        _mm256_storeu_si256((__m256i *)b[i].qs, qt__pack32(q[0], q[1], q[2], q[3]));
    }
}

QT__AVX2 void qt_quant_q8_K_avx2(const float *src, void *dst, int64_t n) {
    block_q8_K *b = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < QK_K; k += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(src + k)), m);
        const float amax = qt__hmax8(m);
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof(b[i]));
            continue;
        }
        /* the signed value of the first element of largest magnitude, as the scalar loop finds */
        float max = 0.0f;
        for (int k = 0; k < QK_K; k += 8) {
            const __m256 eq = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(src + k)), _mm256_set1_ps(amax),
                                            _CMP_EQ_OQ);
            const int mask = _mm256_movemask_ps(eq);
            if (mask) {
                max = src[k + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256 top = _mm256_set1_ps(127.0f);
        for (int k = 0; k < QK_K; k += 32) {
            __m256i q[4];
            for (int u = 0; u < 4; u++) {
                const __m256 r = _mm256_round_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(src + k + 8 * u)),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q[u] = _mm256_cvtps_epi32(_mm256_min_ps(top, r)); /* +inf -> 127, nan -> -128 */
            }
            _mm256_storeu_si256((__m256i *)(b[i].qs + k), qt__pack32(q[0], q[1], q[2], q[3]));
            /* bsums of the two groups of 16, from the int8 values (nan became -128) */
            const __m256i q8 = _mm256_loadu_si256((const __m256i *)(b[i].qs + k));
            const __m256i w = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q8),
                                                _mm256_set1_epi16(1)); /* 8 sums of 4 */
            const __m256i h = _mm256_hadd_epi32(w, w);                  /* lane: s8a s8b s8a s8b */
            const __m256i g = _mm256_hadd_epi32(h, h);                  /* lane: s16 x4 */
            b[i].bsums[k / 16] = (int16_t)_mm256_extract_epi32(g, 0);
            b[i].bsums[k / 16 + 1] = (int16_t)_mm256_extract_epi32(g, 4);
        }
        b[i].d = 1.0f / iscale;
    }
}

QT__AVX2 void qt_quant_f16_avx2(const float *src, void *dst, int64_t n) {
    qt_f16 *d = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(d + i), h);
    }
    for (; i < n; i++) d[i] = qt_f32_to_f16(src[i]);
}

/* ---- from_float: weight types --------------------------------------------------------- */

/* the value of largest magnitude among x[0..n), with its sign (the first on ties; 0 when all are
 * zero or nan) */
static float qt__absmax_signed(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

void qt_quant_q4_0(const float *src, void *dst, int64_t n) {
    block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, src += QK4_0) {
        /* the element of largest magnitude maps to -8, the one level with no positive twin */
        const float max = qt__absmax_signed(src, QK4_0);
        b[i].d = qt_f32_to_f16(max / -8.0f);
        const float d = qt_f16_to_f32(b[i].d);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t q[QK4_0];
        for (int j = 0; j < QK4_0; j++) {
            int v = qt__rne(src[j] * id) + 8;
            q[j] = (uint8_t)(v < 0 ? 0 : v > 15 ? 15 : v);
        }
        for (int j = 0; j < QK4_0 / 2; j++) b[i].qs[j] = (uint8_t)(q[j] | (q[j + QK4_0 / 2] << 4));
    }
}

/* Q5_0 as llama.cpp's reference quantizer: the element of largest magnitude maps to -16;
 * |x - d*(q-16)| <= |d|/2 for every element (d = max/-16 rounded to f16, then used as stored). */
void qt_quant_q5_0(const float *src, void *dst, int64_t n) {
    block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, src += QK4_0) {
        const float max = qt__absmax_signed(src, QK4_0);
        b[i].d = qt_f32_to_f16(max / -16.0f);
        const float d = qt_f16_to_f32(b[i].d);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        uint8_t q[QK4_0];
        for (int j = 0; j < QK4_0; j++) {
            int v = qt__rne(src[j] * id) + 16;
            q[j] = (uint8_t)(v < 0 ? 0 : v > 31 ? 31 : v);
            qh |= (uint32_t)(q[j] >> 4) << j;
        }
        for (int j = 0; j < QK4_0 / 2; j++)
            b[i].qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + QK4_0 / 2] & 0xF) << 4));
        for (int k = 0; k < 4; k++) b[i].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}

/* Q4_1 / Q5_1 (nmax 15 / 31) as llama.cpp's reference quantizers: m = min, d = (max-min)/nmax,
 * q = round((x-m)/d); |x - (d*q + m)| <= |d|/2 plus the f16 rounding of d and m. */
static void qt__quant_min(const float *src, uint8_t *qs, uint8_t *qh, qt_f16 *dd, qt_f16 *mm,
                          int nmax) {
    float mn = src[0], mx = src[0];
    for (int j = 1; j < QK4_0; j++) {
        mn = src[j] < mn ? src[j] : mn;
        mx = src[j] > mx ? src[j] : mx;
    }
    *dd = qt_f32_to_f16((mx - mn) / (float)nmax);
    *mm = qt_f32_to_f16(mn);
    const float d = qt_f16_to_f32(*dd), m = qt_f16_to_f32(*mm);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t q[QK4_0];
    uint32_t h = 0;
    for (int j = 0; j < QK4_0; j++) {
        int v = qt__rne((src[j] - m) * id);
        q[j] = (uint8_t)(v < 0 ? 0 : v > nmax ? nmax : v);
        h |= (uint32_t)(q[j] >> 4) << j;
    }
    for (int j = 0; j < QK4_0 / 2; j++) qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
    if (qh)
        for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(h >> (8 * k));
}

void qt_quant_q4_1(const float *src, void *dst, int64_t n) {
    block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, src += QK4_0)
        qt__quant_min(src, b[i].qs, NULL, &b[i].d, &b[i].m, 15);
}

void qt_quant_q5_1(const float *src, void *dst, int64_t n) {
    block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, src += QK4_0)
        qt__quant_min(src, b[i].qs, b[i].qh, &b[i].d, &b[i].m, 31);
}

/* IQ4_NL: the element of largest magnitude maps to the level -127 (d = max/-127), every element
 * to its nearest level; |x - d*level| <= |d|*12 (half the widest gap, 24) plus d's rounding. */
/* index of the IQ4_NL level nearest to v (the lower one on ties) */
static int qt__iq4_nearest(float v) {
    static const int8_t levels[16] = QT_IQ4NL_VALUES;
    int best = 0;
    for (int k = 1; k < 16; k++)
        if (fabsf(v - levels[k]) < fabsf(v - levels[best])) best = k;
    return best;
}

/* one sub-block of 32 at step d into IQ4_NL's nibble layout (qs[16]) */
static void qt__iq4_pack32(const float *x, float d, uint8_t *qs) {
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(qt__iq4_nearest(x[j] * id) | (qt__iq4_nearest(x[j + 16] * id) << 4));
}

void qt_quant_iq4_nl(const float *src, void *dst, int64_t n) {
    block_iq4_nl *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, src += QK4_0) {
        b[i].d = qt_f32_to_f16(qt__absmax_signed(src, QK4_0) / -127.0f);
        qt__iq4_pack32(src, qt_f16_to_f32(b[i].d), b[i].qs);
    }
}

/* The step s of x ~ s*levels[q] for a sub-block of 32: around IQ4_NL's max/-127, a grid of 15
 * candidates (1 + 0.02t, t = -7..7), each with the nearest levels and a least-squares refit of
 * s; the one of least squared error. */
static float qt__iq4_fit32(const float *x) {
    static const int8_t levels[16] = QT_IQ4NL_VALUES;
    const float max = qt__absmax_signed(x, 32);
    if (max == 0.0f) return 0.0f;
    float best_s = max / -127.0f, best_err = INFINITY;
    for (int t = -7; t <= 7; t++) {
        const float id = 1.0f / (max / -127.0f * (1.0f + 0.02f * (float)t));
        float sll = 0.0f, slx = 0.0f;
        for (int i = 0; i < 32; i++) {
            const float l = levels[qt__iq4_nearest(x[i] * id)];
            sll += l * l;
            slx += l * x[i];
        }
        const float s = slx / sll, inv = 1.0f / s;
        if (!(s != 0.0f) || !isfinite(inv)) continue;
        float err = 0.0f;
        for (int i = 0; i < 32; i++) {
            const float e = s * (float)levels[qt__iq4_nearest(x[i] * inv)] - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_s = s;
        }
    }
    return best_s;
}

/* IQ4_XS: per sub-block of 32 a searched step (qt__iq4_fit32), the eight steps as 6-bit signed
 * multiples of d (the step of largest magnitude maps to -32), then every element to its nearest
 * level at the step as stored. Relative RMS error below 0.10 on quant_simd's gaussian rows
 * (measured: 0.075). */
void qt_quant_iq4_xs(const float *src, void *dst, int64_t n) {
    block_iq4_xs *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        float st[8];
        for (int j = 0; j < 8; j++) st[j] = qt__iq4_fit32(src + 32 * j);
        b[i].d = qt_f32_to_f16(qt__absmax_signed(st, 8) / -32.0f);
        const float d = qt_f16_to_f32(b[i].d);
        b[i].scales_h = 0;
        memset(b[i].scales_l, 0, sizeof b[i].scales_l);
        for (int j = 0; j < 8; j++) {
            int l = d != 0.0f ? qt__rne(st[j] / d) : 0;
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            const int u = l + 32;
            b[i].scales_l[j / 2] |= (uint8_t)((u & 0xF) << (4 * (j % 2)));
            b[i].scales_h |= (uint16_t)((u >> 4) << (2 * j));
            qt__iq4_pack32(src + 32 * j, d * (float)l, b[i].qs + 16 * j);
        }
    }
}

/* Fit x ~ s*q + o with q in [0, nmax] integers for one sub-block of n values: try a grid of
 * step sizes around (max-min)/nmax, quantize, solve the 2x2 least squares for (s, o) given q,
 * keep the fit with the least squared error. o is kept <= 0 (Q4_K stores -o as an unsigned min). */
static void qt__fit_affine(const float *x, int n, int nmax, float *s_out, float *o_out) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (lo > 0.0f) lo = 0.0f;
    if (!(hi > lo)) { /* constant block (or nan) */
        *s_out = 0.0f;
        *o_out = lo;
        return;
    }
    float sx = 0.0f;
    for (int i = 0; i < n; i++) sx += x[i];
    float best_err = INFINITY, best_s = (hi - lo) / (float)nmax, best_o = lo;
    for (int t = -5; t <= 5; t++) {
        const float iscale = ((float)nmax + 0.2f * (float)t) / (hi - lo);
        /* integer sums are exact in float (n*nmax^2 < 2^24) */
        float sq = 0.0f, sqq = 0.0f, sqx = 0.0f;
        for (int i = 0; i < n; i++) {
            int q = qt__rne(iscale * (x[i] - lo));
            q = q < 0 ? 0 : q > nmax ? nmax : q;
            sq += (float)q;
            sqq += (float)(q * q);
            sqx += (float)q * x[i];
        }
        const float det = (float)n * sqq - sq * sq;
        if (!(det > 0.0f)) continue;
        float s = ((float)n * sqx - sq * sx) / det;
        float o = (sqq * sx - sq * sqx) / det;
        if (o > 0.0f) { /* the offset may only lower values: refit the scale alone */
            o = 0.0f;
            s = sqx / sqq;
        }
        if (!(s > 0.0f)) continue;
        const float inv = 1.0f / s;
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            int q = qt__rne((x[i] - o) * inv);
            q = q < 0 ? 0 : q > nmax ? nmax : q;
            const float e = s * (float)q + o - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_s = s;
            best_o = o;
        }
    }
    *s_out = best_s;
    *o_out = best_o;
}

/* The affine super-block types: per sub-block of `sub` elements an affine fit with levels
 * 0..nmax, the QK_K/sub scales and mins as integers 0..smax against the block's d and dmin, then
 * every element requantized with the scales as stored. ls and lm receive the integer scales and
 * mins, q[256] the levels. Q2_K: sub 16, nmax 3, smax 15; Q4_K / Q5_K: sub 32, nmax 15 / 31,
 * smax 63. */
static void qt__quant_affine(const float *src, int sub, int nmax, int smax, qt_f16 *dd, qt_f16 *dmn,
                             uint8_t *ls, uint8_t *lm, uint8_t *q) {
    const int ns = QK_K / sub;
    float sc[QK_K / 16], mn[QK_K / 16], max_sc = 0.0f, max_mn = 0.0f;
    for (int j = 0; j < ns; j++) {
        float o;
        qt__fit_affine(src + sub * j, sub, nmax, &sc[j], &o);
        mn[j] = -o;
        max_sc = fmaxf(max_sc, sc[j]);
        max_mn = fmaxf(max_mn, mn[j]);
    }
    *dd = qt_f32_to_f16(max_sc / (float)smax);
    *dmn = qt_f32_to_f16(max_mn / (float)smax);
    const float d = qt_f16_to_f32(*dd), dmin = qt_f16_to_f32(*dmn);
    for (int j = 0; j < ns; j++) {
        int l = d > 0.0f ? qt__rne(sc[j] / d) : 0;
        ls[j] = (uint8_t)(l < 0 ? 0 : l > smax ? smax : l);
        l = dmin > 0.0f ? qt__rne(mn[j] / dmin) : 0;
        lm[j] = (uint8_t)(l < 0 ? 0 : l > smax ? smax : l);
    }
    for (int j = 0; j < ns; j++) {
        const float s = d * ls[j], m = dmin * lm[j];
        for (int l = 0; l < sub; l++) {
            int v = s > 0.0f ? qt__rne((src[sub * j + l] + m) / s) : 0;
            q[sub * j + l] = (uint8_t)(v < 0 ? 0 : v > nmax ? nmax : v);
        }
    }
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): the affine fit over 8 sub-blocks of 32, the scales and
 * mins packed in 6 bits; q[256] receives the levels (qh: the fifth bits when nmax is 31). */
static void qt__quant_k(const float *src, qt_f16 *dd, qt_f16 *dmn, uint8_t *scales, uint8_t *q,
                        int nmax) {
    uint8_t ls[8], lm[8];
    qt__quant_affine(src, 32, nmax, 63, dd, dmn, ls, lm, q);
    for (int j = 0; j < 4; j++) {
        scales[j] = (uint8_t)(ls[j] | ((ls[j + 4] >> 4) << 6));
        scales[j + 4] = (uint8_t)(lm[j] | ((lm[j + 4] >> 4) << 6));
        scales[j + 8] = (uint8_t)((ls[j + 4] & 0xF) | ((lm[j + 4] & 0xF) << 4));
    }
}

/* Q2_K: the affine fit over 16 sub-blocks of 16 with levels 0..3 and 4-bit scales and mins.
 * Relative RMS error below 0.30 on quant_simd's gaussian rows (measured: 0.266). */
void qt_quant_q2_K(const float *src, void *dst, int64_t n) {
    block_q2_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        uint8_t q[QK_K], ls[16], lm[16];
        qt__quant_affine(src, 16, 3, 15, &b[i].d, &b[i].dmin, ls, lm, q);
        for (int j = 0; j < 16; j++) b[i].scales[j] = (uint8_t)(ls[j] | (lm[j] << 4));
        memset(b[i].qs, 0, sizeof b[i].qs);
        for (int r = 0; r < QK_K; r++) b[i].qs[32 * (r / 128) + r % 32] |= (uint8_t)(q[r] << (2 * ((r / 32) % 4)));
    }
}

void qt_quant_q4_K(const float *src, void *dst, int64_t n) {
    block_q4_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        uint8_t q[QK_K];
        qt__quant_k(src, &b[i].d, &b[i].dmin, b[i].scales, q, 15);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
}

void qt_quant_q5_K(const float *src, void *dst, int64_t n) {
    block_q5_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        uint8_t q[QK_K];
        qt__quant_k(src, &b[i].d, &b[i].dmin, b[i].scales, q, 31);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
                b[i].qs[32 * c + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
                b[i].qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            }
    }
}

/* Symmetric fit x ~ s*q, q in [-lo, lo-1], for a sub-block of 16: the element of largest
 * magnitude maps near -lo (the level with no positive twin) and a small grid around that step
 * (lo + step*t, t = -3..3) is searched with a least-squares refit of s. */
static float qt__fit_sym(const float *x, int lo, float step) {
    const float max = qt__absmax_signed(x, 16);
    if (max == 0.0f) return 0.0f;
    float best_s = max / (float)-lo, best_err = INFINITY;
    for (int t = -3; t <= 3; t++) {
        const float iscale = -((float)lo + step * (float)t) / max;
        float sqq = 0.0f, sqx = 0.0f;
        for (int i = 0; i < 16; i++) {
            int q = qt__rne(iscale * x[i]);
            q = q < -lo ? -lo : q > lo - 1 ? lo - 1 : q;
            sqq += (float)(q * q);
            sqx += (float)q * x[i];
        }
        if (!(sqq > 0.0f)) continue;
        const float s = sqx / sqq, inv = 1.0f / s;
        float err = 0.0f;
        for (int i = 0; i < 16; i++) {
            int q = qt__rne(x[i] * inv);
            q = q < -lo ? -lo : q > lo - 1 ? lo - 1 : q;
            const float e = s * (float)q - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_s = s;
        }
    }
    return best_s;
}

void qt_quant_q6_K(const float *src, void *dst, int64_t n) {
    block_q6_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        float sc[16], amax = 0.0f;
        for (int g = 0; g < 16; g++) {
            sc[g] = qt__fit_sym(src + 16 * g, 32, 0.5f);
            amax = fmaxf(amax, fabsf(sc[g]));
        }
        b[i].d = qt_f32_to_f16(amax / 127.0f);
        const float d = qt_f16_to_f32(b[i].d);
        uint8_t q[QK_K];
        for (int g = 0; g < 16; g++) {
            int l = d > 0.0f ? qt__rne(sc[g] / d) : 0;
            l = l < -127 ? -127 : l > 127 ? 127 : l;
            b[i].scales[g] = (int8_t)l;
            const float s = d * (float)l;
            for (int e = 0; e < 16; e++) {
                int v = s != 0.0f ? qt__rne(src[16 * g + e] / s) : 0;
                v = v < -32 ? -32 : v > 31 ? 31 : v;
                q[16 * g + e] = (uint8_t)(v + 32);
            }
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *Q = q + 128 * h;
            uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Q[l] & 0xF) | ((Q[64 + l] & 0xF) << 4));
                ql[32 + l] = (uint8_t)((Q[32 + l] & 0xF) | ((Q[96 + l] & 0xF) << 4));
                qh[l] = (uint8_t)((Q[l] >> 4) | ((Q[32 + l] >> 4) << 2) | ((Q[64 + l] >> 4) << 4) |
                                  ((Q[96 + l] >> 4) << 6));
            }
        }
    }
}

/* Q3_K: per sub-block of 16 the symmetric fit with levels -4..3, the 16 steps as 6-bit signed
 * multiples of d (the step of largest magnitude maps to -32), then every element requantized at
 * its step as stored. Relative RMS error below 0.17 on quant_simd's gaussian rows (measured:
 * 0.142). */
void qt_quant_q3_K(const float *src, void *dst, int64_t n) {
    block_q3_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        float st[16];
        for (int g = 0; g < 16; g++) st[g] = qt__fit_sym(src + 16 * g, 4, 0.25f);
        b[i].d = qt_f32_to_f16(qt__absmax_signed(st, 16) / -32.0f);
        const float d = qt_f16_to_f32(b[i].d);
        memset(b[i].hmask, 0, sizeof b[i].hmask);
        memset(b[i].qs, 0, sizeof b[i].qs);
        memset(b[i].scales, 0, sizeof b[i].scales);
        for (int g = 0; g < 16; g++) {
            int l = d != 0.0f ? qt__rne(st[g] / d) : 0;
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            const int u = l + 32;
            b[i].scales[g % 8] |= (uint8_t)((u & 0xF) << (4 * (g / 8)));
            b[i].scales[8 + g % 4] |= (uint8_t)((u >> 4) << (2 * (g / 4)));
            const float s = d * (float)l;
            for (int e = 0; e < 16; e++) {
                const int r = 16 * g + e;
                int v = s != 0.0f ? qt__rne(src[r] / s) : 0;
                v = (v < -4 ? -4 : v > 3 ? 3 : v) + 4; /* 0..7: low 2 bits in qs, the 3rd in hmask */
                b[i].qs[32 * (r / 128) + r % 32] |= (uint8_t)((v & 3) << (2 * ((r / 32) % 4)));
                b[i].hmask[r % 32] |= (uint8_t)((v >> 2) << (r / 32));
            }
        }
    }
}
