/* kernels/cpu/dot_avx2_impl.h — private to kernels/cpu: AVX2 building blocks shared by
 * dot_avx2.c, dot_avx2_q32.c and dot_avx512.c (which uses them for tails and 256-bit side
 * sums). Include only from files compiled with -mavx2 -mfma -mf16c.
 */
#ifndef SAMPAN_DOT_AVX2_IMPL_H
#define SAMPAN_DOT_AVX2_IMPL_H

#include <immintrin.h>
#include <string.h>

#include "qtypes.h"

/* Software prefetch of the weight stream, QT__PF_AHEAD bytes ahead of [p, p + bytes): the
 * hardware prefetcher alone leaves these kernels 15-20% below a plain read of the same memory
 * (measured with tests/quant/bench_dot). Prefetches never fault, so reading past the end of the
 * row is harmless. */
#define QT__PF_AHEAD 2048
static inline void qt__prefetch(const void *p, int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + QT__PF_AHEAD + o, _MM_HINT_T0);
}

static inline float qt__hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float qt__h2f(qt_f16 h) {
    return _cvtsh_ss(h);
}

/* 32 signed x 32 signed bytes -> 8 int32 partial sums. |w| <= 128 and |x| <= 127 (activations
 * quantized from finite floats never hold -128), so each vpmaddubsw pair is at most
 * 2*128*127 = 32512: no saturation. */
static inline __m256i qt__dot_s8(__m256i w, __m256i x) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* 16 bytes of nibbles -> 32 bytes in 0..15: low nibbles are elements 0..15, high 16..31 */
static inline __m256i qt__q4_0_unpack(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* Nibbles stay unsigned (0..15): sum((q-8)*y) = sum(q*y) - sum(8*y), both halves from
 * vpmaddubsw (pairs <= 2*15*128 and 2*8*128), which is cheaper than the sign trick. */
static inline __m256i qt__dot_q4_0(const uint8_t *qs, const int8_t *ys) {
    const __m256i y = _mm256_loadu_si256((const __m256i *)ys);
    const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(qt__q4_0_unpack(qs), y),
                                       _mm256_maddubs_epi16(_mm256_set1_epi8(8), y));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

static inline __m256 qt__scale(qt_f16 a, qt_f16 b) {
    return _mm256_set1_ps(qt__h2f(a) * qt__h2f(b));
}

/* Two blocks of the 32-element nibble layout (Q4_0, Q4_1, IQ4_NL) in one vector: the 16 bytes
 * of block 0 in the low lane, block 1 in the high lane. *lo gets elements 0..15 of each block,
 * *hi elements 16..31, as bytes 0..15. */
static inline void qt__q4_pair(const uint8_t *qs0, const uint8_t *qs1, __m256i *lo, __m256i *hi) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i v = _mm256_loadu2_m128i((const __m128i *)qs1, (const __m128i *)qs0);
    *lo = _mm256_and_si256(v, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
}

/* Two Q8_0 blocks' quants regrouped to match qt__q4_pair: elements 0..15 of both, then 16..31 */
static inline void qt__y_pair(const int8_t *y0, const int8_t *y1, __m256i *ylo, __m256i *yhi) {
    const __m256i a = _mm256_loadu_si256((const __m256i *)y0), b = _mm256_loadu_si256((const __m256i *)y1);
    *ylo = _mm256_permute2x128_si256(a, b, 0x20);
    *yhi = _mm256_permute2x128_si256(a, b, 0x31);
}

/* Scale products for a block pair from one vcvtph2ps. Each argument packs two f16 values (low
 * half first); returns (w0.lo*y0.lo, w0.hi*y0.hi, w1.lo*y1.lo, w1.hi*y1.hi). */
static inline __m128 qt__h2f_mul(uint32_t w0, uint32_t w1, uint32_t y0, uint32_t y1) {
    const __m256 f = _mm256_cvtph_ps(_mm_setr_epi32((int)w0, (int)w1, (int)y0, (int)y1));
    return _mm_mul_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
}

/* lanes 0..3 = p[a], lanes 4..7 = p[b]: a block pair's scales against qt__q4_pair's sums */
static inline __m256 qt__bcast2(__m128 p, int a, int b) {
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(p), _mm256_setr_epi32(a, a, a, a, b, b, b, b));
}

/* two f16 values as one qt__h2f_mul argument */
static inline uint32_t qt__h2(qt_f16 lo, qt_f16 hi) {
    return (uint32_t)lo | (uint32_t)hi << 16;
}

/* The fifth bits of a Q5_0 / Q5_1 block as bytes (16 where bit j of qh is set, else 0, for
 * elements j = 0..31): a shuffle repeats each qh byte 8 times, a mask picks one bit per byte. */
static inline __m256i qt__q5_hbits(const uint8_t *qh4) {
    const __m256i rep = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    const __m256i hb = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), rep);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit), _mm256_set1_epi8(16));
}

/* qt__q5_hbits for a block pair in qt__q4_pair's layout: *lo gets the bits of elements 0..15 of
 * each block (block 0 in the low lane), *hi those of elements 16..31 */
static inline void qt__q5_hbits_pair(const uint8_t *qh0, const uint8_t *qh1, __m256i *lo, __m256i *hi) {
    const __m256i rep_lo = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m256i rep_hi = _mm256_add_epi8(rep_lo, _mm256_set1_epi8(2));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i sixteen = _mm256_set1_epi8(16);
    uint32_t h0, h1;
    memcpy(&h0, qh0, 4);
    memcpy(&h1, qh1, 4);
    const __m256i v = _mm256_setr_epi32((int)h0, 0, 0, 0, (int)h1, 0, 0, 0);
    const __m256i bl = _mm256_and_si256(_mm256_shuffle_epi8(v, rep_lo), bit);
    const __m256i bh = _mm256_and_si256(_mm256_shuffle_epi8(v, rep_hi), bit);
    *lo = _mm256_and_si256(_mm256_cmpeq_epi8(bl, bit), sixteen);
    *hi = _mm256_and_si256(_mm256_cmpeq_epi8(bh, bit), sixteen);
}

/* qt__q4_pair, and for the 5-bit types (qh0 != NULL) the fifth bits or-ed in at bit 4 */
static inline void qt__q45_pair(const uint8_t *qs0, const uint8_t *qs1, const uint8_t *qh0, const uint8_t *qh1,
                                __m256i *lo, __m256i *hi) {
    qt__q4_pair(qs0, qs1, lo, hi);
    if (qh0) {
        __m256i hlo, hhi;
        qt__q5_hbits_pair(qh0, qh1, &hlo, &hhi);
        *lo = _mm256_or_si256(*lo, hlo);
        *hi = _mm256_or_si256(*hi, hhi);
    }
}

/* Unpacks the 12 scale bytes of a Q4_K block. As little-endian words u0 u1 u2: scales 0..3
 * are the low 6 bits of u0's bytes, mins 0..3 of u1's; scales/mins 4..7 take their low 4 bits
 * from u2's low/high nibbles and their top 2 bits from the top 2 bits of u0/u1's bytes.
 * Returns bytes 0..7 = scales, 8..15 = mins. Reads 16 bytes: the 4 after `scales` are the
 * block's first quants, so the load stays inside the block. */
static inline __m128i qt__q4k_scales(const uint8_t *scales) {
    const __m128i s = _mm_loadu_si128((const __m128i *)scales);
    const __m128i x = _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 1, 2, 0)); /* u0 u2 u1 u2 */
    const __m128i y = _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 1, 0, 0)); /* u0 u0 u1 u1 */
    const __m128i lo = _mm_and_si128(_mm_srlv_epi32(x, _mm_setr_epi32(0, 0, 0, 4)),
                                     _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i hi = _mm_and_si128(_mm_srli_epi32(y, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo, hi);
}

/* vpshufb control that broadcasts int16 word k (0..7) of each 128-bit lane to the whole lane */
static inline __m256i qt__word_bcast(int k) {
    static const uint8_t tab[8][32] __attribute__((aligned(32))) = {
#define QT__W(k) {2 * k, 2 * k + 1, 2 * k, 2 * k + 1, 2 * k, 2 * k + 1, 2 * k, 2 * k + 1, \
                  2 * k, 2 * k + 1, 2 * k, 2 * k + 1, 2 * k, 2 * k + 1, 2 * k, 2 * k + 1, \
                  2 * k, 2 * k + 1, 2 * k, 2 * k + 1, 2 * k, 2 * k + 1, 2 * k, 2 * k + 1, \
                  2 * k, 2 * k + 1, 2 * k, 2 * k + 1, 2 * k, 2 * k + 1, 2 * k, 2 * k + 1}
        QT__W(0), QT__W(1), QT__W(2), QT__W(3), QT__W(4), QT__W(5), QT__W(6), QT__W(7)
#undef QT__W
    };
    return _mm256_load_si256((const __m256i *)tab[k]);
}

/* vpshufb masks: lane 0 gets int16 word 2k of the lane, lane 1 word 2k+1 (the scales of the two
 * sub-blocks of 16 that a 32-quant vector spans) */
static inline __m256i qt__word_pair(int k) {
    const short lo = (short)(((4 * k + 1) << 8) | (4 * k));
    const short hi = (short)(((4 * k + 3) << 8) | (4 * k + 2));
    return _mm256_setr_epi16(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi);
}

/* (d, dmin) of a K-quant block times the activation scale: lanes 0 and 1 */
static inline __m128 qt__dd(const qt_f16 *d_dmin, float yd) {
    uint32_t u;
    memcpy(&u, d_dmin, 4);
    return _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)u)), _mm_set1_ps(yd));
}

/* sum over sub-blocks j of min[j] * (bsums[2j] + bsums[2j+1]), as 8 int32 partial sums;
 * sm from qt__q4k_scales (mins in bytes 8..15) */
static inline __m256i qt__q4k_mins(__m128i sm, const int16_t *bsums) {
    const __m128i dup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, dup));
    return _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)bsums));
}

#endif
