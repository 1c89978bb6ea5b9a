/* kernels/cpu/attn_avx2.c — one head's attention over a paged KV cache, AVX2 (kern_attn in
 * ops.c chooses it when the ISA allows and D is a multiple of 8).
 *
 * Arithmetic, fixed for every batch (so a query's output does not depend on what shares its
 * step): score_p = hsum_8(sum over d-steps of fma(k_p[d..d+7], q[d..d+7])) * scale, one
 * 8-lane chain per position; softmax as kern_softmax; out[d] = sum_p a_p * v_p[d] as 8 fma
 * chains per element (positions p mod 8) summed as hsum_8. Both are the float order of
 * llama.cpp's F32 sgemm (8 lanes), which its CPU attention (KV cache F32, flash attention
 * off) uses, so references made with it are met bit for bit. Four positions are scored at
 * once (independent chains).
 * The G query heads that share a KV head are done in one call: each K row is loaded once and
 * scored against every head (then from L1); each head's arithmetic is the one above.
 * F16 and BF16 caches: each 8-element load is widened to f32 exactly (vcvtph2ps, a shift),
 * then the same arithmetic; the body is instantiated once per element type.
 */
#include <immintrin.h>

#include "attn_impl.h"
#include "kern.h"

#define AT_INLINE static inline __attribute__((always_inline))

static inline float at__hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 elements of a cache row as f32 */
AT_INLINE __m256 at__load(const char *row, int d, int type) {
    if (type == QT_F32) return _mm256_loadu_ps((const float *)row + d);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + d));
    if (type == QT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));   /* bf16 */
}

AT_INLINE const char *at__row(const void *base, const kern_kv_view *kv, int p, int type) {
    size_t es = type == QT_F32 ? 4 : 2;
    p += kv->first;
    return (const char *)base + ((size_t)kv->table[p / kv->block_size] * kv->block_stride +
                                 (size_t)(p % kv->block_size) * kv->slot_stride) * es;
}

/* scores of positions [p, p + 4) for head q into att[p..p+3] */
AT_INLINE void at__score4(float *att, const float *q, int D, float scale, int p, const char *k0,
                          const char *k1, const char *k2, const char *k3, int type) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int d = 0; d < D; d += 8) {
        __m256 qv = _mm256_loadu_ps(q + d);
        a0 = _mm256_fmadd_ps(at__load(k0, d, type), qv, a0);
        a1 = _mm256_fmadd_ps(at__load(k1, d, type), qv, a1);
        a2 = _mm256_fmadd_ps(at__load(k2, d, type), qv, a2);
        a3 = _mm256_fmadd_ps(at__load(k3, d, type), qv, a3);
    }
    att[p] = at__hsum(a0) * scale;
    att[p + 1] = at__hsum(a1) * scale;
    att[p + 2] = at__hsum(a2) * scale;
    att[p + 3] = at__hsum(a3) * scale;
}

/* out (D) = sum_p att[p] v_p in the float order of llama.cpp's F32 sgemm (tinyBLAS, 8 lanes)
 * over the positions: chain l = positions p = l, l + 8, ... (fma in p order), the 8 chains
 * then summed as at__hsum does ((c0 + c4) + (c2 + c6)) + ((c1 + c5) + (c3 + c7)). Vectors
 * run over 8 output elements at a time, so each c_l is one accumulator. */
AT_INLINE void at__values(float *out, const float *att, int D, int n, const kern_kv_view *kv,
                          int type) {
    for (int d0 = 0; d0 < D; d0 += 64) {   /* up to 8 vectors of outputs, 8 chains each */
        const int nv = (D - d0 < 64 ? D - d0 : 64) / 8;
        __m256 c[8][8];   /* [chain][vector] */
        for (int l = 0; l < 8; l++)
            for (int i = 0; i < 8; i++) c[l][i] = _mm256_setzero_ps();
        for (int pp = 0; pp < n; pp++) {
            const char *v = at__row(kv->v, kv, pp, type);   /* once per position and chunk */
            const __m256 a = _mm256_broadcast_ss(att + pp);
            __m256 *cl = c[pp % 8];
            for (int i = 0; i < nv; i++) cl[i] = _mm256_fmadd_ps(a, at__load(v, d0 + 8 * i, type), cl[i]);
        }
        for (int i = 0; i < nv; i++)
            _mm256_storeu_ps(out + d0 + 8 * i,
                             _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c[0][i], c[4][i]), _mm256_add_ps(c[2][i], c[6][i])),
                                           _mm256_add_ps(_mm256_add_ps(c[1][i], c[5][i]), _mm256_add_ps(c[3][i], c[7][i]))));
    }
}

AT_INLINE void at__group(float *out, const float *q, int G, int D, float scale, int n,
                         const kern_kv_view *kv, float *att, int type) {
    int p = 0;
    for (; p + 4 <= n; p += 4) {   /* four K rows, scored against every head of the group */
        const char *k0 = at__row(kv->k, kv, p, type), *k1 = at__row(kv->k, kv, p + 1, type);
        const char *k2 = at__row(kv->k, kv, p + 2, type), *k3 = at__row(kv->k, kv, p + 3, type);
        for (int g = 0; g < G; g++)
            at__score4(att + (size_t)g * n, q + (size_t)g * D, D, scale, p, k0, k1, k2, k3, type);
    }
    for (; p < n; p++) {
        const char *k0 = at__row(kv->k, kv, p, type);
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * D;
            __m256 a0 = _mm256_setzero_ps();
            for (int d = 0; d < D; d += 8)
                a0 = _mm256_fmadd_ps(at__load(k0, d, type), _mm256_loadu_ps(qg + d), a0);
            att[(size_t)g * n + p] = at__hsum(a0) * scale;
        }
    }
    const int Dv = kv->v_dim > 0 ? kv->v_dim : D;   /* latent attention: values are k[0, Dv) */
    for (int g = 0; g < G; g++) {
        kern_softmax(att + (size_t)g * n, n);
        at__values(out + (size_t)g * Dv, att + (size_t)g * n, Dv, n, kv, type);
    }
}

void attn_avx2_group(float *out, const float *q, int G, int D, float scale, int n,
                     const kern_kv_view *kv, float *att) {
    switch (kv->type) {
    case QT_F16: at__group(out, q, G, D, scale, n, kv, att, QT_F16); break;
    case QT_BF16: at__group(out, q, G, D, scale, n, kv, att, QT_BF16); break;
    default: at__group(out, q, G, D, scale, n, kv, att, QT_F32); break;
    }
}
