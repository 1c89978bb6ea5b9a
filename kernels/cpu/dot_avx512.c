/* kernels/cpu/dot_avx512.c — AVX-512 (F, BW, VL, DQ) dot products; compiled with those flags
 * plus -mavx2 -mfma -mf16c and only called after kern_init saw all of them.
 *
 * Same integer scheme as dot_avx2.c on 512-bit vectors: the small-block types (Q8_0, Q4_0)
 * put two blocks in one vector, with a scale vector holding one block's scale in each 256-bit
 * half; Q4_K and Q6_K handle 64 quants per instruction and pick per-sub-block scales with
 * vpermw. AVX-512 has no vpsignb, so Q8_0's sign trick uses a byte mask from vpmovb2m and a
 * masked subtraction; Q4_0 keeps its nibbles unsigned as in dot_avx2.c. VNNI (vpdpbusd) is
 * deliberately not used: it needs its own CPUID bit and flag, and these kernels are bound by
 * memory bandwidth, not by the multiply.
 * On CPUs without AVX-512 these kernels are still tested, under SIMDe emulation
 * (tests/quant/test_avx512_emu.c).
 * The results match dot_scalar.c up to the order of float additions.
 */
#include <immintrin.h>

#include "kern.h"
#include "quant_impl.h"
#include "dot_avx2_impl.h"

static inline float qt__hsum512(__m512 v) {
    return qt__hsum_ps(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}

/* ---- float types (tails of fewer than 16 elements are scalar) ------------------------- */

float qt_dot_f32_avx512(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        qt__prefetch(a + i, 256);
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    float s = qt__hsum512(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline __m512 qt__ld16_f16(const qt_f16 *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

float qt_dot_f16_avx512(int64_t n, const void *w, const void *x) {
    const qt_f16 *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        qt__prefetch(a + i, 128);
        s0 = _mm512_fmadd_ps(qt__ld16_f16(a + i), qt__ld16_f16(b + i), s0);
        s1 = _mm512_fmadd_ps(qt__ld16_f16(a + i + 16), qt__ld16_f16(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(qt__ld16_f16(a + i + 32), qt__ld16_f16(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(qt__ld16_f16(a + i + 48), qt__ld16_f16(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(qt__ld16_f16(a + i), qt__ld16_f16(b + i), s0);
    float s = qt__hsum512(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) s += qt__h2f(a[i]) * qt__h2f(b[i]);
    return s;
}

static inline __m512 qt__ld16_bf16(const qt_bf16 *p) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

float qt_dot_bf16_avx512(int64_t n, const void *w, const void *x) {
    const qt_bf16 *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        qt__prefetch(a + i, 128);
        s0 = _mm512_fmadd_ps(qt__ld16_bf16(a + i), qt__ld16_bf16(b + i), s0);
        s1 = _mm512_fmadd_ps(qt__ld16_bf16(a + i + 16), qt__ld16_bf16(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(qt__ld16_bf16(a + i + 32), qt__ld16_bf16(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(qt__ld16_bf16(a + i + 48), qt__ld16_bf16(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(qt__ld16_bf16(a + i), qt__ld16_bf16(b + i), s0);
    float s = qt__hsum512(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) s += qt_bf16_to_f32(a[i]) * qt_bf16_to_f32(b[i]);
    return s;
}

/* ---- Q8_0 and Q4_0 against Q8_0: two blocks per vector -------------------------------- */

/* 64 signed x 64 signed bytes -> 16 int32 partial sums (bounds as qt__dot_s8) */
static inline __m512i qt__dot_s8_512(__m512i w, __m512i x) {
    const __m512i aw = _mm512_abs_epi8(w);
    const __m512i sx = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), _mm512_set1_epi16(1));
}

static inline __m512i qt__ld_2x32(const int8_t *p0, const int8_t *p1) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p0)),
                              _mm256_loadu_si256((const __m256i *)p1), 1);
}

/* block 0's scale in lanes 0..7, block 1's in lanes 8..15 */
static inline __m512 qt__scale_2(float d0, float d1) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(d0)), _mm256_set1_ps(d1), 1);
}

float qt_dot_q8_0_avx512(int64_t n, const void *w, const void *x) {
    const block_q8_0 *a = w, *b = x;
    const int64_t nb = n / QK8_0;
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        qt__prefetch(a + i, 2 * (int)sizeof(block_q8_0));
        const __m512i p = qt__dot_s8_512(qt__ld_2x32(a[i].qs, a[i + 1].qs), qt__ld_2x32(b[i].qs, b[i + 1].qs));
        const __m512 d = qt__scale_2(qt__h2f(a[i].d) * qt__h2f(b[i].d), qt__h2f(a[i + 1].d) * qt__h2f(b[i + 1].d));
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc);
    }
    float s = qt__hsum512(acc);
    if (i < nb) {
        const __m256i p = qt__dot_s8(_mm256_loadu_si256((const __m256i *)a[i].qs),
                                     _mm256_loadu_si256((const __m256i *)b[i].qs));
        s += qt__hsum_ps(_mm256_mul_ps(qt__scale(a[i].d, b[i].d), _mm256_cvtepi32_ps(p)));
    }
    return s;
}

float qt_dot_q4_0_avx512(int64_t n, const void *w, const void *x) {
    const block_q4_0 *a = w;
    const block_q8_0 *b = x;
    const int64_t nb = n / QK4_0;
    const __m512i m4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8), ones = _mm512_set1_epi16(1);
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        qt__prefetch(a + i, 2 * (int)sizeof(block_q4_0));
        /* 128-bit lanes after the masks: [b0 elems 0..15, b1 0..15, b0 16..31, b1 16..31];
         * the lane shuffle puts each block's 32 quants in its own 256-bit half */
        const __m256i t = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)a[i + 1].qs),
                                           _mm_loadu_si128((const __m128i *)a[i].qs));
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(t), _mm256_srli_epi16(t, 4), 1);
        v = _mm512_and_si512(v, m4);
        v = _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0));
        /* unsigned nibbles: sum((q-8)*y) = sum(q*y) - sum(8*y), as in dot_avx2.c */
        const __m512i y = qt__ld_2x32(b[i].qs, b[i + 1].qs);
        const __m512i p16 = _mm512_sub_epi16(_mm512_maddubs_epi16(v, y), _mm512_maddubs_epi16(eight, y));
        const __m512i p = _mm512_madd_epi16(p16, ones);
        const __m512 d = qt__scale_2(qt__h2f(a[i].d) * qt__h2f(b[i].d), qt__h2f(a[i + 1].d) * qt__h2f(b[i + 1].d));
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc);
    }
    float s = qt__hsum512(acc);
    if (i < nb) {
        const __m256i p = qt__dot_q4_0(a[i].qs, b[i].qs);
        s += qt__hsum_ps(_mm256_mul_ps(qt__scale(a[i].d, b[i].d), _mm256_cvtepi32_ps(p)));
    }
    return s;
}

/* ---- Q4_K and Q6_K against Q8_K ------------------------------------------------------- */

/* vpermw index: int16 lanes 0..31 take word lo for the first 16 and word hi for the last 16 */
static inline __m512i qt__idx_halves(short lo, short hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(lo)), _mm256_set1_epi16(hi), 1);
}

/* vpermw index: each 128-bit lane L (8 words) takes word base+L */
static inline __m512i qt__idx_lanes(short base) {
    const __m256i lo = _mm256_setr_epi16(base, base, base, base, base, base, base, base,
                                         (short)(base + 1), (short)(base + 1), (short)(base + 1), (short)(base + 1),
                                         (short)(base + 1), (short)(base + 1), (short)(base + 1), (short)(base + 1));
    const __m256i two = _mm256_set1_epi16(2);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_add_epi16(lo, two), 1);
}

float qt_dot_q4_K_avx512(int64_t n, const void *w, const void *x) {
    const block_q4_K *a = w;
    const block_q8_K *b = x;
    const int64_t nb = n / QK_K;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i idx[4] = {qt__idx_halves(0, 1), qt__idx_halves(2, 3), qt__idx_halves(4, 5),
                            qt__idx_halves(6, 7)};
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        qt__prefetch(a + i, (int)sizeof(block_q4_K));
        const __m128 dd = qt__dd(&a[i].d, b[i].d); /* d, dmin */
        const __m128i sm = qt__q4k_scales(a[i].scales);
        accm = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
                               _mm256_cvtepi32_ps(qt__q4k_mins(sm, b[i].bsums)), accm);
        const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(sm)); /* words 0..7 = scales */
        const uint8_t *q = a[i].qs;
        const int8_t *y = b[i].qs;
        __m512i sumi = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            /* 64 quants: low nibbles (sub-block 2c) in the low half, high (2c+1) in the high */
            const __m256i q4 = _mm256_loadu_si256((const __m256i *)(q + 32 * c));
            __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(q4), _mm256_srli_epi16(q4, 4), 1);
            v = _mm512_and_si512(v, m4);
            const __m512i p = _mm512_maddubs_epi16(v, _mm512_loadu_si512((const void *)(y + 64 * c)));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p, _mm512_permutexvar_epi16(idx[c], sc)));
        }
        acc = _mm512_fmadd_ps(_mm512_broadcastss_ps(dd), _mm512_cvtepi32_ps(sumi), acc);
    }
    return qt__hsum512(acc) - qt__hsum_ps(accm);
}

float qt_dot_q6_K_avx512(int64_t n, const void *w, const void *x) {
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    const int64_t nb = n / QK_K;
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x30);
    const __m512i idx[4] = {qt__idx_lanes(0), qt__idx_lanes(4), qt__idx_lanes(8), qt__idx_lanes(12)};
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        qt__prefetch(a + i, (int)sizeof(block_q6_K));
        const float d = qt__h2f(a[i].d) * b[i].d;
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a[i].scales));
        const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)b[i].bsums));
        const __m512i sc = _mm512_castsi256_si512(sc16);
        __m512i sumi = _mm512_setzero_si512();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            /* ql bytes 0..63 of this half; qh next to itself shifted by 2, so that one mask
             * pattern serves elements 0..63 (ql low nibbles) and 64..127 (high nibbles) */
            const __m512i ql = _mm512_loadu_si512((const void *)(a[i].ql + 64 * h));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(a[i].qh + 32 * h));
            const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
            const __m512i q12 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                                _mm512_and_si512(_mm512_slli_epi16(qh2, 4), m2));
            const __m512i q34 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                                _mm512_and_si512(qh2, m2));
            const int8_t *y = b[i].qs + 128 * h;
            const __m512i p12 = _mm512_maddubs_epi16(q12, _mm512_loadu_si512((const void *)y));
            const __m512i p34 = _mm512_maddubs_epi16(q34, _mm512_loadu_si512((const void *)(y + 64)));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p12, _mm512_permutexvar_epi16(idx[2 * h], sc)));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p34, _mm512_permutexvar_epi16(idx[2 * h + 1], sc)));
        }
        __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(sumi), _mm512_extracti64x4_epi64(sumi, 1));
        s8 = _mm256_sub_epi32(s8, _mm256_slli_epi32(corr, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s8), acc);
    }
    return qt__hsum_ps(acc);
}
