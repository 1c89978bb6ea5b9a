/* kernels/cpu/dot_avx2.c — AVX2 + FMA + F16C dot products (compiled with -mavx2 -mfma -mf16c;
 * only called after kern_init saw those features).
 *
 * Quantized kernels: u8 x s8 products with vpmaddubsw (pairs summed to int16, never saturating
 * for the value ranges involved, noted per kernel), vpmaddwd to int32, so each block's sum is
 * exact; then one cvt + fma per block with the block's float scale into float accumulators.
 * Signed x signed (Q8_0) uses the sign trick: |w| · (x with w's sign); Q4_0 keeps its nibbles
 * unsigned and subtracts 8*sum(x) (cheaper).
 * Two blocks per iteration with independent accumulators for the small-block types.
 * The results match dot_scalar.c up to the order of float additions.
 */
#include <immintrin.h>
#include <string.h>

#include "kern.h"
#include "quant_impl.h"
#include "dot_avx2_impl.h"

/* ---- float types ---------------------------------------------------------------------- */

float qt_dot_f32_avx2(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        qt__prefetch(a + i, 128);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = qt__hsum_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline __m256 qt__ld_f16(const qt_f16 *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

float qt_dot_f16_avx2(int64_t n, const void *w, const void *x) {
    const qt_f16 *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        qt__prefetch(a + i, 64);
        s0 = _mm256_fmadd_ps(qt__ld_f16(a + i), qt__ld_f16(b + i), s0);
        s1 = _mm256_fmadd_ps(qt__ld_f16(a + i + 8), qt__ld_f16(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(qt__ld_f16(a + i + 16), qt__ld_f16(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(qt__ld_f16(a + i + 24), qt__ld_f16(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(qt__ld_f16(a + i), qt__ld_f16(b + i), s0);
    float s = qt__hsum_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += qt__h2f(a[i]) * qt__h2f(b[i]);
    return s;
}

static inline __m256 qt__ld_bf16(const qt_bf16 *p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

float qt_dot_bf16_avx2(int64_t n, const void *w, const void *x) {
    const qt_bf16 *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        qt__prefetch(a + i, 64);
        s0 = _mm256_fmadd_ps(qt__ld_bf16(a + i), qt__ld_bf16(b + i), s0);
        s1 = _mm256_fmadd_ps(qt__ld_bf16(a + i + 8), qt__ld_bf16(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(qt__ld_bf16(a + i + 16), qt__ld_bf16(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(qt__ld_bf16(a + i + 24), qt__ld_bf16(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(qt__ld_bf16(a + i), qt__ld_bf16(b + i), s0);
    float s = qt__hsum_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += qt_bf16_to_f32(a[i]) * qt_bf16_to_f32(b[i]);
    return s;
}

/* ---- Q8_0 and Q4_0 against Q8_0 ------------------------------------------------------- */

float qt_dot_q8_0_avx2(int64_t n, const void *w, const void *x) {
    /* ggml's AVX2 Q8_0 float order: one accumulator, blocks in order, 8 lanes of 4 consecutive
     * elements, fma(d_w * d_y, (float)lane sum, acc), then qt__hsum_ps */
    const block_q8_0 *a = w, *b = x;
    const int64_t nb = n / QK8_0;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        qt__prefetch(a + i, (int)sizeof(block_q8_0));
        const __m256i p = qt__dot_s8(_mm256_loadu_si256((const __m256i *)a[i].qs),
                                     _mm256_loadu_si256((const __m256i *)b[i].qs));
        acc = _mm256_fmadd_ps(qt__scale(a[i].d, b[i].d), _mm256_cvtepi32_ps(p), acc);
    }
    return qt__hsum_ps(acc);
}

/* Q4_0 (five = 0) and Q5_0 (five = 1, the fifth bits from qh or-ed in: qt__q5_hbits_pair).
 * Values stay unsigned (0..15 or 0..31): sum((q-o)*y) = sum(q*y) - sum(o*y), o = 8 or 16, both
 * from vpmaddubsw. Two blocks per step share one vector: nibble bytes of block i in the low
 * lane, i+1 in the high lane; the activations are regrouped to match (elements 0..15 of both
 * blocks, then 16..31), the two halves' int16 pair sums are added (<= 2*2*31*127 and
 * 2*2*16*127, their difference < 2^15: exact) before one vpmaddwd, and the four f16 scales
 * are converted with one vcvtph2ps. With pairs = 0 (Q5_0) every block is a step of its own,
 * 8 lanes of 4 consecutive elements: the float order of ggml's AVX2 Q5_0 dot, which Gemma 3's
 * references (Q5_0 in every layer) come from. Inlined into each wrapper with `five` and
 * `pairs` constant. */
static inline float qt__dot_off32(int64_t n, const uint8_t *w, size_t bs, int five, int pairs,
                                  const block_q8_0 *b) {
    const int64_t nb = n / QK4_0;
    const int qs_at = five ? 6 : 2; /* after d (and qh[4]) */
    const __m256i off = _mm256_set1_epi8(five ? 16 : 8), ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; pairs && i + 2 <= nb; i += 2, w += 2 * bs) {
        qt__prefetch(w, 2 * (int)bs);
        __m256i lo, hi, ylo, yhi;
        qt__q45_pair(w + qs_at, w + bs + qs_at, five ? w + 2 : NULL, w + bs + 2, &lo, &hi);
        qt__y_pair(b[i].qs, b[i + 1].qs, &ylo, &yhi);
        const __m256i qy = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
        const __m256i yo = _mm256_add_epi16(_mm256_maddubs_epi16(off, ylo), _mm256_maddubs_epi16(off, yhi));
        const __m256i p = _mm256_madd_epi16(_mm256_sub_epi16(qy, yo), ones); /* 4 lanes per block */
        qt_f16 d0, d1;
        memcpy(&d0, w, 2);
        memcpy(&d1, w + bs, 2);
        const __m128 dd = qt__h2f_mul(qt__h2(d0, d1), 0, qt__h2(b[i].d, b[i + 1].d), 0);
        acc = _mm256_fmadd_ps(qt__bcast2(dd, 0, 1), _mm256_cvtepi32_ps(p), acc);
    }
    for (; i < nb; i++, w += bs) {   /* one block: 8 lanes of 4 consecutive elements */
        qt__prefetch(w, (int)bs);
        __m256i q = qt__q4_0_unpack(w + qs_at);
        if (five) q = _mm256_or_si256(q, qt__q5_hbits(w + 2));
        const __m256i y = _mm256_loadu_si256((const __m256i *)b[i].qs);
        const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, y), _mm256_maddubs_epi16(off, y));
        qt_f16 d;
        memcpy(&d, w, 2);
        acc = _mm256_fmadd_ps(qt__scale(d, b[i].d), _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), acc);
    }
    return qt__hsum_ps(acc);
}

float qt_dot_q4_0_avx2(int64_t n, const void *w, const void *x) {
    return qt__dot_off32(n, w, sizeof(block_q4_0), 0, 1, x);
}

float qt_dot_q5_0_avx2(int64_t n, const void *w, const void *x) {
    return qt__dot_off32(n, w, sizeof(block_q5_0), 1, 0, x);
}

/* ---- Q4_K against Q8_K ---------------------------------------------------------------- */

/* Q4_K and Q5_K (qh != NULL: the fifth bits, bit 2c of each qh byte for chunk c's low half,
 * 2c+1 for its high half, or-ed in at bit 4). Per block: quants (0..15, or 0..31) x activations
 * with vpmaddubsw (pairs <= 2*31*127), times the sub-block scale (<= 63) with vpmaddwd; mins x
 * bsums pair sums with one vpmaddwd. Inlined into each wrapper with stride and qh constant. */
static inline __attribute__((always_inline)) float qt__dot_q45_K(int64_t n, const uint8_t *w,
                                                                 size_t bs, int five,
                                                                 const block_q8_K *b) {
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++, w += bs) {
        const block_q4_K *k4 = (const block_q4_K *)w;
        const block_q5_K *k5 = (const block_q5_K *)w;   /* Q5_K: qh[32] before qs */
        const uint8_t *q = five ? k5->qs : k4->qs;
        qt__prefetch(w, (int)bs);
        const __m128 dd = qt__dd(five ? &k5->d : &k4->d, b[i].d); /* d, dmin */
        const __m128i sm = qt__q4k_scales(five ? k5->scales : k4->scales);
        const __m256i mins = qt__q4k_mins(sm, b[i].bsums);
        accm = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)), _mm256_cvtepi32_ps(mins), accm);
        const __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm)); /* 8 x int16, twice */
        const int8_t *y = b[i].qs;
        const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)k5->qh) : _mm256_setzero_si256();
        __m256i s_lo = _mm256_setzero_si256(), s_hi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q4 = _mm256_loadu_si256((const __m256i *)(q + 32 * c));
            __m256i lo = _mm256_and_si256(q4, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            if (five) {
                const __m256i b_lo = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c)), one);
                const __m256i b_hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c + 1)), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(b_lo, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(b_hi, 4));
            }
            const __m256i p_lo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(y + 64 * c)));
            const __m256i p_hi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 64 * c + 32)));
            s_lo = _mm256_add_epi32(s_lo, _mm256_madd_epi16(p_lo, _mm256_shuffle_epi8(sc, qt__word_bcast(2 * c))));
            s_hi = _mm256_add_epi32(s_hi, _mm256_madd_epi16(p_hi, _mm256_shuffle_epi8(sc, qt__word_bcast(2 * c + 1))));
        }
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(_mm256_add_epi32(s_lo, s_hi)), acc);
    }
    return qt__hsum_ps(_mm256_sub_ps(acc, accm));
}

float qt_dot_q4_K_avx2(int64_t n, const void *w, const void *x) {
    return qt__dot_q45_K(n, w, sizeof(block_q4_K), 0, x);
}

float qt_dot_q5_K_avx2(int64_t n, const void *w, const void *x) {
    return qt__dot_q45_K(n, w, sizeof(block_q5_K), 1, x);
}

/* ---- Q6_K against Q8_K ---------------------------------------------------------------- */

/* Quants are used unsigned (0..63): sum((q-32)*y) = sum(q*y) - 32*sum(y), and the second term
 * per sub-block of 16 is the activation's bsum, so the correction is 32 * sum(scale*bsum) from
 * one vpmaddwd. vpmaddubsw pairs are <= 2*63*128; a 32-quant vector spans two sub-blocks, one
 * per 128-bit lane, hence the per-lane scale pairs. */
float qt_dot_q6_K_avx2(int64_t n, const void *w, const void *x) {
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        qt__prefetch(a + i, (int)sizeof(block_q6_K));
        const float d = qt__h2f(a[i].d) * b[i].d;
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a[i].scales));
        const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)b[i].bsums));
        /* each half's 8 scales (int16) in both lanes */
        const __m256i sch0 = _mm256_permute2x128_si256(sc16, sc16, 0x00);
        const __m256i sch1 = _mm256_permute2x128_si256(sc16, sc16, 0x11);
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = a[i].ql + 64 * h;
            const int8_t *y = b[i].qs + 128 * h;
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(a[i].qh + 32 * h));
            /* 2-bit fields of qh moved to bits 4,5 with 16-bit shifts; bits crossing between
             * the two bytes of a word land outside the 0x30 mask */
            const __m256i q1 = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2));
            const __m256i q2 = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2));
            const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                               _mm256_and_si256(qh, m2));
            const __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2));
            const __m256i sch = h ? sch1 : sch0;
            const __m256i p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)y)),
                _mm256_shuffle_epi8(sch, qt__word_pair(0)));
            const __m256i p2 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)(y + 32))),
                _mm256_shuffle_epi8(sch, qt__word_pair(1)));
            const __m256i p3 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(y + 64))),
                _mm256_shuffle_epi8(sch, qt__word_pair(2)));
            const __m256i p4 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(q4, _mm256_loadu_si256((const __m256i *)(y + 96))),
                _mm256_shuffle_epi8(sch, qt__word_pair(3)));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_add_epi32(p1, p2), _mm256_add_epi32(p3, p4)));
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return qt__hsum_ps(acc);
}
