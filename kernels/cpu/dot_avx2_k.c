/* kernels/cpu/dot_avx2_k.c — AVX2 dot products of the smaller super-block types against Q8_K:
 * Q2_K, Q3_K (sub-blocks of 16) and IQ4_XS (sub-blocks of 32). Compiled with -mavx2 -mfma
 * -mf16c; only called after kern_init saw those features.
 *
 * The pattern of dot_avx2.c's Q4_K and Q6_K: the quants as unsigned bytes times the activations
 * with vpmaddubsw (pairs summed to int16, never saturating for the ranges noted per kernel),
 * times the sub-block scales with vpmaddwd, so each block's integer sum is exact; then one
 * cvt + fma per block with its float scale. A 32-quant vector of the 16-element types spans two
 * sub-blocks, one per 128-bit lane, hence qt__word_pair's per-lane scale pairs. The results
 * match dot_scalar.c up to the order of float additions.
 */
#include <immintrin.h>
#include <string.h>

#include "kern.h"
#include "quant_impl.h"
#include "dot_avx2_impl.h"

/* each half's 8 int16 scales (bytes 0..15 of the 16 sub-blocks widened) in both lanes */
static inline __m256i qt__half_scales(__m256i sc16, int h) {
    return h ? _mm256_permute2x128_si256(sc16, sc16, 0x11) : _mm256_permute2x128_si256(sc16, sc16, 0x00);
}

/* sum_g sc[g] * (u·y over sub-block g) for the 2-bit fields of qs (bits 2k..2k+1 of qs[32h+l]
 * = element 128h+32k+l), each with `hi` or-ed in: Q3_K's third bits at bit 2 (or zero for Q2_K),
 * from hbits(h, k). u <= 7, so vpmaddubsw pairs stay <= 2*7*128. */
#define QT__K16_SUM(qs, y, sc16, sumi, hbits)                                                        \
    do {                                                                                             \
        for (int h = 0; h < 2; h++) {                                                                \
            const __m256i qv = _mm256_loadu_si256((const __m256i *)((qs) + 32 * h));               \
            const __m256i sch = qt__half_scales((sc16), h);                                          \
            for (int k = 0; k < 4; k++) {                                                            \
                const __m256i lo2 = _mm256_and_si256(_mm256_srl_epi16(qv, _mm_cvtsi32_si128(2 * k)), \
                                                     _mm256_set1_epi8(3));                           \
                const __m256i u = _mm256_or_si256(lo2, hbits(h, k));                                 \
                const __m256i p = _mm256_maddubs_epi16(                                              \
                    u, _mm256_loadu_si256((const __m256i *)((y) + 128 * h + 32 * k)));               \
                (sumi) = _mm256_add_epi32((sumi),                                                    \
                                          _mm256_madd_epi16(p, _mm256_shuffle_epi8(sch, qt__word_pair(k)))); \
            }                                                                                        \
        }                                                                                            \
    } while (0)

/* Q2_K's 16 scales (the low nibbles) widened to int16; *mins gets sum_g min[g]*bsums[g] (the
 * high nibbles) as 8 int32 partial sums from one vpmaddwd */
static inline __m256i qt__q2k_scales(const uint8_t *scales, const int16_t *bsums, __m256i *mins) {
    const __m128i m4 = _mm_set1_epi8(0x0F), s8 = _mm_loadu_si128((const __m128i *)scales);
    *mins = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s8, 4), m4)),
                              _mm256_loadu_si256((const __m256i *)bsums));
    return _mm256_cvtepu8_epi16(_mm_and_si128(s8, m4));
}

/* Q2_K: levels 0..3 (vpmaddubsw pairs <= 2*3*128), 4-bit scales and mins (<= 15). */
float qt_dot_q2_K_avx2(int64_t n, const void *w, const void *x) {
    const block_q2_K *a = w;
    const block_q8_K *b = x;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        qt__prefetch(a + i, (int)sizeof(block_q2_K));
        __m256i mins;
        const __m256i sc16 = qt__q2k_scales(a[i].scales, b[i].bsums, &mins);
        const __m128 dd = qt__dd(&a[i].d, b[i].d); /* d, dmin */
        accm = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)), _mm256_cvtepi32_ps(mins), accm);
        __m256i sumi = _mm256_setzero_si256();
#define QT__NO_HBITS(h, k) _mm256_setzero_si256()
        QT__K16_SUM(a[i].qs, b[i].qs, sc16, sumi, QT__NO_HBITS);
#undef QT__NO_HBITS
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(sumi), acc);
    }
    return qt__hsum_ps(_mm256_sub_ps(acc, accm));
}

/* Q3_K's 16 signed scales as int16: qtypes.h's qt_q3k_scale for all j at once. The low 4 bits
 * are the nibbles of bytes 0..7 (low nibbles first); the top 2 bits of scale 4k+b are bits
 * 2k..2k+1 of byte 8+b, here from the little-endian word of bytes 8..11 shifted by 2k in
 * dword k (bits that a 32-bit shift brings in from the next byte land above the mask).
 * Reads only the 12 scale bytes. */
static inline __m256i qt__q3k_scales(const uint8_t *s) {
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i a = _mm_loadl_epi64((const __m128i *)s);
    const __m128i lo4 = _mm_unpacklo_epi64(_mm_and_si128(a, m4), _mm_and_si128(_mm_srli_epi16(a, 4), m4));
    uint32_t u;
    memcpy(&u, s + 8, 4);
    const __m128i t = _mm_srlv_epi32(_mm_set1_epi32((int)u), _mm_setr_epi32(0, 2, 4, 6));
    const __m128i hi2 = _mm_slli_epi16(_mm_and_si128(t, _mm_set1_epi8(3)), 4);
    return _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_or_si128(lo4, hi2), _mm_set1_epi8(32)));
}

/* Q3_K: the level plus 4 (0..7: the low 2 bits, the hmask bit at bit 2) stays unsigned:
 * sum(level*y) = sum(u*y) - 4*sum(y), the second term per sub-block the activation's bsum, so
 * the correction is 4 * sum(scale*bsum) from one vpmaddwd. */
float qt_dot_q3_K_avx2(int64_t n, const void *w, const void *x) {
    const block_q3_K *a = w;
    const block_q8_K *b = x;
    const int64_t nb = n / QK_K;
    const __m256i one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        qt__prefetch(a + i, (int)sizeof(block_q3_K));
        const __m256i sc16 = qt__q3k_scales(a[i].scales);
        const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)b[i].bsums));
        const __m256i hm = _mm256_loadu_si256((const __m256i *)a[i].hmask);
        __m256i sumi = _mm256_setzero_si256();
        /* bit 4h+k of each hmask byte, moved to bit 2 (16-bit shifts: a byte's bit lands in its
         * own byte's bit 0 before the mask) */
#define QT__HBITS(h, k) \
    _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * (h) + (k))), one), 2)
        QT__K16_SUM(a[i].qs, b[i].qs, sc16, sumi, QT__HBITS);
#undef QT__HBITS
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 2));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(qt__h2f(a[i].d) * b[i].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return qt__hsum_ps(acc);
}

/* IQ4_XS: per sub-block of 32 the nibbles (IQ4_NL's layout) looked up in the level table with
 * vpshufb, then the sign trick of qt__dot_s8 (|level| <= 127, |y| <= 127: pairs <= 32258) and
 * the sub-block's scale (-32..31) with vpmaddwd. */
float qt_dot_iq4_xs_avx2(int64_t n, const void *w, const void *x) {
    static const int8_t levels[16] = QT_IQ4NL_VALUES;
    const block_iq4_xs *a = w;
    const block_q8_K *b = x;
    const int64_t nb = n / QK_K;
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)levels));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        qt__prefetch(a + i, (int)sizeof(block_iq4_xs));
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            const __m256i v = _mm256_shuffle_epi8(lut, qt__q4_0_unpack(a[i].qs + 16 * j));
            const __m256i y = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * j));
            const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(y, v));
            const int ls = qt_iq4xs_scale(j, a[i].scales_h, a[i].scales_l);
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, _mm256_set1_epi16((short)ls)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(qt__h2f(a[i].d) * b[i].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return qt__hsum_ps(acc);
}
