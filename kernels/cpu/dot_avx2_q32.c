/* kernels/cpu/dot_avx2_q32.c — AVX2 dot products of the 32-element block types beyond Q4_0 and
 * Q5_0 (Q4_1, Q5_1, IQ4_NL) against Q8_0 activations (compiled with -mavx2 -mfma -mf16c; only
 * called after kern_init saw those features; also the AVX-512 slot's choice).
 *
 * Same scheme as Q4_0 / Q5_0 in dot_avx2.c, with their unpacking helpers (dot_avx2_impl.h):
 * exact int32 block sums, then one fma per block and scale into float accumulators.
 *   Q4_1 / Q5_1: x = d*q + m, so a block gives d*yd*sum(q*y) + m*yd*sum(y). Q8_0 carries no
 *     sum of its quants, so sum(y) comes from one more vpmaddubsw with ones; the two terms
 *     have their own accumulators.
 *   IQ4_NL: the 16 int8 levels are looked up with vpshufb (the nibble is the index), then a
 *     signed x signed product with the sign trick (qt__dot_s8; |level| <= 127).
 * The results match dot_scalar.c up to the order of float additions.
 */
#include <immintrin.h>
#include <string.h>

#include "kern.h"
#include "quant_impl.h"
#include "dot_avx2_impl.h"

/* Q4_1 (five = 0) and Q5_1 (five = 1, the fifth bits or-ed in from qh), two blocks per step as
 * in qt_dot_q4_0_avx2; the same layout walk as dot_scalar.c's qt__dot_min32. Values 0..31
 * unsigned: vpmaddubsw pairs <= 2*31*127 for q*y and 2*127 for 1*y, the two halves' sums added
 * in int16 (<= 15748 and 508) before one vpmaddwd. Scales: (d_i, m_i, d_i+1, m_i+1) times the
 * activation scales in one vcvtph2ps. Inlined into each wrapper with `five` constant. */
static inline float qt__dot_min32(int64_t n, const uint8_t *w, size_t bs, int five, const block_q8_0 *b) {
    const int64_t nb = n / QK4_0;
    const int qs_at = five ? 8 : 4; /* after d, m (and qh[4]) */
    const __m256i one = _mm256_set1_epi8(1), ones = _mm256_set1_epi16(1);
    __m256 accd = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2, w += 2 * bs) {
        qt__prefetch(w, 2 * (int)bs);
        __m256i lo, hi, ylo, yhi;
        qt__q45_pair(w + qs_at, w + bs + qs_at, five ? w + 4 : NULL, w + bs + 4, &lo, &hi);
        qt__y_pair(b[i].qs, b[i + 1].qs, &ylo, &yhi);
        const __m256i qy = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
        const __m256i ys = _mm256_add_epi16(_mm256_maddubs_epi16(one, ylo), _mm256_maddubs_epi16(one, yhi));
        uint32_t dm0, dm1;
        memcpy(&dm0, w, 4);
        memcpy(&dm1, w + bs, 4);
        const __m128 s = qt__h2f_mul(dm0, dm1, qt__h2(b[i].d, b[i].d), qt__h2(b[i + 1].d, b[i + 1].d));
        accd = _mm256_fmadd_ps(qt__bcast2(s, 0, 2), _mm256_cvtepi32_ps(_mm256_madd_epi16(qy, ones)), accd);
        accm = _mm256_fmadd_ps(qt__bcast2(s, 1, 3), _mm256_cvtepi32_ps(_mm256_madd_epi16(ys, ones)), accm);
    }
    if (i < nb) {
        __m256i q = qt__q4_0_unpack(w + qs_at);
        if (five) q = _mm256_or_si256(q, qt__q5_hbits(w + 4));
        const __m256i y = _mm256_loadu_si256((const __m256i *)b[i].qs);
        const __m256i qy = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones);
        const __m256i ys = _mm256_madd_epi16(_mm256_maddubs_epi16(one, y), ones);
        uint32_t dm;
        memcpy(&dm, w, 4);
        const __m128 s = qt__h2f_mul(dm, 0, qt__h2(b[i].d, b[i].d), 0);
        accd = _mm256_fmadd_ps(qt__bcast2(s, 0, 0), _mm256_cvtepi32_ps(qy), accd);
        accm = _mm256_fmadd_ps(qt__bcast2(s, 1, 1), _mm256_cvtepi32_ps(ys), accm);
    }
    return qt__hsum_ps(_mm256_add_ps(accd, accm));
}

float qt_dot_q4_1_avx2(int64_t n, const void *w, const void *x) {
    return qt__dot_min32(n, w, sizeof(block_q4_1), 0, x);
}

float qt_dot_q5_1_avx2(int64_t n, const void *w, const void *x) {
    return qt__dot_min32(n, w, sizeof(block_q5_1), 1, x);
}

/* Two blocks per step as in qt_dot_q4_0_avx2, the nibbles replaced by their levels. Each half's
 * pairs reach 2*127*127, so the halves are summed after vpmaddwd, in int32. */
float qt_dot_iq4_nl_avx2(int64_t n, const void *w, const void *x) {
    static const int8_t levels[16] __attribute__((aligned(16))) = QT_IQ4NL_VALUES;
    const block_iq4_nl *a = w;
    const block_q8_0 *b = x;
    const int64_t nb = n / QK4_0;
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)levels));
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        qt__prefetch(a + i, 2 * (int)sizeof(block_iq4_nl));
        __m256i lo, hi, ylo, yhi;
        qt__q4_pair(a[i].qs, a[i + 1].qs, &lo, &hi);
        qt__y_pair(b[i].qs, b[i + 1].qs, &ylo, &yhi);
        const __m256i p = _mm256_add_epi32(qt__dot_s8(_mm256_shuffle_epi8(lut, lo), ylo),
                                           qt__dot_s8(_mm256_shuffle_epi8(lut, hi), yhi));
        const __m128 dd = qt__h2f_mul(qt__h2(a[i].d, a[i + 1].d), 0, qt__h2(b[i].d, b[i + 1].d), 0);
        acc = _mm256_fmadd_ps(qt__bcast2(dd, 0, 1), _mm256_cvtepi32_ps(p), acc);
    }
    if (i < nb) {
        const __m256i q = _mm256_shuffle_epi8(lut, qt__q4_0_unpack(a[i].qs));
        const __m256i p = qt__dot_s8(q, _mm256_loadu_si256((const __m256i *)b[i].qs));
        acc = _mm256_fmadd_ps(qt__scale(a[i].d, b[i].d), _mm256_cvtepi32_ps(p), acc);
    }
    return qt__hsum_ps(acc);
}
