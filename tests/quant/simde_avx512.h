/* tests/quant/simde_avx512.h — force-included (-include) when dot_avx512.c is compiled for
 * test_quant_avx512_emu: maps the AVX-512 intrinsics onto SIMDe's portable versions so the
 * AVX-512 kernels run (slowly) on a CPU without AVX-512. The few intrinsics SIMDe 0.7 lacks are
 * written here from their documented semantics, built out of 256-bit halves.
 */
#ifndef SAMPAN_SIMDE_AVX512_H
#define SAMPAN_SIMDE_AVX512_H

#include <immintrin.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

/* SIMDe 0.7.4 declares this alias with four parameters */
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)

/* missing from SIMDe 0.7.4: built from two 256-bit halves (native AVX2) */
static inline simde__m512 qt_emu_cvtepi32_ps(simde__m512i v) {
    const __m256 lo = _mm256_cvtepi32_ps(simde_mm512_castsi512_si256(v));
    const __m256 hi = _mm256_cvtepi32_ps(simde_mm512_extracti64x4_epi64(v, 1));
    return simde_mm512_insertf32x8(simde_mm512_castps256_ps512(lo), hi, 1);
}

static inline simde__m512 qt_emu_cvtph_ps(__m256i h) {
    const __m256 lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    const __m256 hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
    return simde_mm512_insertf32x8(simde_mm512_castps256_ps512(lo), hi, 1);
}

static inline simde__m512i qt_emu_cvtepu16_epi32(__m256i h) {
    const __m256i lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(h));
    const __m256i hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1));
    return simde_mm512_inserti64x4(simde_mm512_castsi256_si512(lo), hi, 1);
}

static inline __m256 qt_emu_extractf32x8_ps(simde__m512 v, int imm) {
    const simde__m512d d = simde_mm512_castps_pd(v);
    return _mm256_castpd_ps(imm ? simde_mm512_extractf64x4_pd(d, 1) : simde_mm512_extractf64x4_pd(d, 0));
}

/* clang's headers define some of these as macros already */
#undef _mm512_cvtepi32_ps
#undef _mm512_cvtph_ps
#undef _mm512_cvtepu16_epi32
#undef _mm512_extractf32x8_ps
#undef _mm512_shuffle_i64x2
#define _mm512_cvtepi32_ps(v) qt_emu_cvtepi32_ps(v)
#define _mm512_cvtph_ps(h) qt_emu_cvtph_ps(h)
#define _mm512_cvtepu16_epi32(h) qt_emu_cvtepu16_epi32(h)
#define _mm512_extractf32x8_ps(v, imm) qt_emu_extractf32x8_ps((v), (imm))
#define _mm512_shuffle_i64x2(a, b, imm) simde_mm512_shuffle_i64x2(a, b, imm)

#endif
