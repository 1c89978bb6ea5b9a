/* kernels/cpu/attn_avx2.c — one head's attention over a paged KV cache, AVX2 (kern_attn in
 * ops.c chooses it when the ISA allows and D is a multiple of 8).
 *
 * Arithmetic, fixed for every batch (so a query's output does not depend on what shares its
 * step): score_p = hsum_8(sum over d-steps of fma(k_p[d..d+7], q[d..d+7])) * scale, one
 * 8-lane chain per position; softmax as kern_softmax; out[d] = sum_p a_p * v_p[d] as one fma
 * chain per element in p order. Four positions are scored at once (independent chains).
 * The G query heads that share a KV head are done in one call: each K row is loaded once and
 * scored against every head (then from L1); each head's arithmetic is the one above.
 */
#include <immintrin.h>

#include "attn_impl.h"
#include "kern.h"

static inline float at__hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline const float *at__row(const float *base, const kern_kv_view *kv, int p) {
    return base + (size_t)kv->table[p / kv->block_size] * kv->block_stride +
           (size_t)(p % kv->block_size) * kv->slot_stride;
}

/* scores of positions [p, p + 4) for head q into att[p..p+3] */
static inline void at__score4(float *att, const float *q, int D, float scale, int p,
                              const float *k0, const float *k1, const float *k2, const float *k3) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int d = 0; d < D; d += 8) {
        __m256 qv = _mm256_loadu_ps(q + d);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + d), qv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + d), qv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(k2 + d), qv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(k3 + d), qv, a3);
    }
    att[p] = at__hsum(a0) * scale;
    att[p + 1] = at__hsum(a1) * scale;
    att[p + 2] = at__hsum(a2) * scale;
    att[p + 3] = at__hsum(a3) * scale;
}

/* out (D) = sum_p att[p] v_p */
static void at__values(float *out, const float *att, int D, int n, const kern_kv_view *kv) {
    for (int d0 = 0; d0 < D; d0 += 64) {   /* up to 8 accumulators of 8 values */
        int nv = (D - d0 < 64 ? D - d0 : 64) / 8;
        __m256 acc[8];
        for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
        for (int pp = 0; pp < n; pp++) {
            const float *v = at__row(kv->v, kv, pp) + d0;
            __m256 a = _mm256_broadcast_ss(att + pp);
            if (nv == 8) {
                for (int i = 0; i < 8; i++) acc[i] = _mm256_fmadd_ps(a, _mm256_loadu_ps(v + 8 * i), acc[i]);
            } else {
                for (int i = 0; i < nv; i++) acc[i] = _mm256_fmadd_ps(a, _mm256_loadu_ps(v + 8 * i), acc[i]);
            }
        }
        for (int i = 0; i < nv; i++) _mm256_storeu_ps(out + d0 + 8 * i, acc[i]);
    }
}

void attn_avx2_group(float *out, const float *q, int G, int D, float scale, int n,
                     const kern_kv_view *kv, float *att) {
    int p = 0;
    for (; p + 4 <= n; p += 4) {   /* four K rows, scored against every head of the group */
        const float *k0 = at__row(kv->k, kv, p), *k1 = at__row(kv->k, kv, p + 1);
        const float *k2 = at__row(kv->k, kv, p + 2), *k3 = at__row(kv->k, kv, p + 3);
        for (int g = 0; g < G; g++)
            at__score4(att + (size_t)g * n, q + (size_t)g * D, D, scale, p, k0, k1, k2, k3);
    }
    for (; p < n; p++) {
        const float *k0 = at__row(kv->k, kv, p);
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * D;
            __m256 a0 = _mm256_setzero_ps();
            for (int d = 0; d < D; d += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + d), _mm256_loadu_ps(qg + d), a0);
            att[(size_t)g * n + p] = at__hsum(a0) * scale;
        }
    }
    for (int g = 0; g < G; g++) {
        kern_softmax(att + (size_t)g * n, n);
        at__values(out + (size_t)g * D, att + (size_t)g * n, D, n, kv);
    }
}
