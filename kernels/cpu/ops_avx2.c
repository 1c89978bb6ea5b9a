/* kernels/cpu/ops_avx2.c — AVX2 softmax and SwiGLU for kern_softmax / kern_swiglu (ops.c picks
 * them unless the scalar ISA is forced).
 *
 * exp is evaluated 8 lanes at a time: x = n ln2 + r with n = round(x log2 e) and r in
 * [-ln2/2, ln2/2] (ln2 split in two constants so that r is exact), e^r by a degree-6
 * polynomial (the Cephes single-precision coefficients, about 1 ulp on that interval), times
 * 2^n built in the exponent field. Inputs are clamped to [-87.3, 88.7], so the result is a
 * normal float or the largest one below inf (softmax arguments are <= 0; silu needs e^-x
 * only to saturate). Every element goes through the same vector code, the tail through a
 * zero-padded copy, so a value never depends on its index or on n (batch invariance).
 */
#include <immintrin.h>
#include <string.h>

#include "ops_impl.h"

static inline __m256 ox__exp(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n for n in [-126, 128]: 2^(n/2) twice keeps both factors normal */
    __m256i e = _mm256_cvtps_epi32(n);
    __m256i h = _mm256_srai_epi32(e, 1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(e, h), _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

void ops_avx2_exp_shift(float *x, int n, float shift) {   /* x[i] = e^(x[i] - shift) */
    const __m256 s = _mm256_set1_ps(shift);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, ox__exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)));
    if (i < n) {
        float t[8] = { 0 };
        memcpy(t, x + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(t, ox__exp(_mm256_sub_ps(_mm256_loadu_ps(t), s)));
        memcpy(x + i, t, sizeof(float) * (size_t)(n - i));
    }
}

static inline __m256 ox__swiglu(__m256 g, __m256 u) {   /* g / (1 + e^-g) * u */
    __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), ox__exp(_mm256_sub_ps(_mm256_setzero_ps(), g)));
    return _mm256_mul_ps(_mm256_div_ps(g, d), u);
}

void ops_avx2_swiglu(float *out, const float *gate, const float *up, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, ox__swiglu(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    if (i < n) {
        float g[8] = { 0 }, u[8] = { 0 };
        memcpy(g, gate + i, sizeof(float) * (size_t)(n - i));
        memcpy(u, up + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(g, ox__swiglu(_mm256_loadu_ps(g), _mm256_loadu_ps(u)));
        memcpy(out + i, g, sizeof(float) * (size_t)(n - i));
    }
}
