/* kernels/cpu/gemm_avx2.c — AVX2 tile kernels for kern_matmul: F32, F16, Q8_0, Q4_0, Q4_K, Q6_K.
 *
 * A tile computes out[t][n] for R weight rows x TT tokens. Each element owns one 8-lane f32
 * accumulator, updated once per block in k order; the quantized types first form an exact
 * int32 sum per lane and block, so only the f32 steps below fix the rounding, and they are the
 * same for every R and TT (see gemm_impl.h):
 *   F32/F16  acc = fma(w[k..k+7], x[k..k+7], acc)              (a zero-padded last step if K%8)
 *   Q8_0/Q4_0 acc = fma(dw*dx, (float)isum_lanes, acc)          per block of 32
 *   Q4_K     acc = fma(d*dy, (float)isum_lanes, acc); acc = fnmadd(dmin*dy, (float)imin_lanes, acc)
 *   Q6_K     acc = fma(d*dy, (float)isum_lanes, acc)           per super-block of 256
 *   out = ga__hsum(acc)
 * Integer lane l of a 32-byte group holds the products of its bytes 4l..4l+3; how a kernel
 * arrives at those integers (sign trick, offset correction) does not matter, they are exact.
 *
 * Weights are reused from registers across the TT tokens of a tile; the driver walks the rows
 * of a thread's range in blocks of GA_NB rows so that the block stays in L2 while all tokens pass.
 */
#include <immintrin.h>
#include <string.h>

#include "gemm_impl.h"
#include "qtypes.h"

#define GA_INLINE static inline __attribute__((always_inline))
#define GA_MAXR 4
#define GA_MAXT 4
#define GA_NB 32   /* weight rows per L2 block in the batched path */

GA_INLINE float ga__hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

GA_INLINE float ga__h2f(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

GA_INLINE __m256i ga__loadu(const void *p) {
    return _mm256_loadu_si256((const __m256i *)p);
}

/* Stores the TT x R results of a tile. */
GA_INLINE void ga__store(int R, int TT, const gemm_args *a, int64_t n, int t,
                         __m256 acc[GA_MAXR][GA_MAXT]) {
    for (int j = 0; j < TT; j++)
        for (int r = 0; r < R; r++) a->out[(int64_t)(t + j) * a->N + n + r] = ga__hsum(acc[r][j]);
}

/* ---- F32 and F16 weights; activations are f32 -------------------------------------------- */

GA_INLINE __m256 ga__load_wf(int f16, const uint8_t *row, int64_t k) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * k)));
    return _mm256_loadu_ps((const float *)row + k);
}

GA_INLINE void ga__tile_fp(int f16, int R, int TT, const gemm_args *a, int64_t n, int t) {
    const uint8_t *w = a->w + (size_t)n * a->w_stride;
    const uint8_t *x = a->x + (size_t)t * a->x_stride;
    __m256 acc[GA_MAXR][GA_MAXT];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < TT; j++) acc[r][j] = _mm256_setzero_ps();
    int64_t K = a->K, k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[GA_MAXR];
        for (int r = 0; r < R; r++) wv[r] = ga__load_wf(f16, w + r * a->w_stride, k);
        for (int j = 0; j < TT; j++) {
            __m256 xv = _mm256_loadu_ps((const float *)(x + j * a->x_stride) + k);
            for (int r = 0; r < R; r++) acc[r][j] = _mm256_fmadd_ps(wv[r], xv, acc[r][j]);
        }
    }
    if (k < K) {   /* last partial step, zero padded */
        int rest = (int)(K - k);
        for (int r = 0; r < R; r++) {
            float wp[8] = { 0 };
            const uint8_t *row = w + r * a->w_stride;
            for (int i = 0; i < rest; i++)
                wp[i] = f16 ? ga__h2f(row + 2 * (k + i)) : ((const float *)row)[k + i];
            __m256 wv = _mm256_loadu_ps(wp);
            for (int j = 0; j < TT; j++) {
                float xp[8] = { 0 };
                memcpy(xp, (const float *)(x + j * a->x_stride) + k, (size_t)rest * 4);
                acc[r][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp), acc[r][j]);
            }
        }
    }
    ga__store(R, TT, a, n, t, acc);
}

/* ---- Q8_0 and Q4_0 weights x Q8_0 activations (as gemm_q8x) ------------------------------ */

_Static_assert(sizeof(gemm_q8x) == 68, "gemm_q8x layout");

GA_INLINE __m256 ga__h2f8(const uint8_t *p) {   /* f16 at p, broadcast to 8 lanes */
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* Q8_0: lanes = sum of 4 products (w signed: the sign trick keeps maddubs' first operand
 * unsigned). Q4_0: nibbles q in 0..15 unsigned, lanes = sum q*y - 8 * sum y = sum (q-8)*y. */
GA_INLINE void ga__tile_q32(int q4, int R, int TT, const gemm_args *a, int64_t n, int t) {
    const size_t wbs = q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    const uint8_t *w = a->w + (size_t)n * a->w_stride;
    const uint8_t *x = a->x + (size_t)t * a->x_stride;
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0x0f);
    const __m256i hi4 = _mm256_set_epi64x(4, 4, 0, 0);
    __m256 acc[GA_MAXR][GA_MAXT];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < TT; j++) acc[r][j] = _mm256_setzero_ps();
    int64_t nb = a->K / 32;
    for (int64_t b = 0; b < nb; b++) {
        __m256i wq[GA_MAXR], wa[GA_MAXR];
        __m256 dw[GA_MAXR];
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * a->w_stride + b * wbs;
            if (q4) {
                /* low nibbles are elements 0..15, high nibbles 16..31 */
                __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2)));
                wq[r] = _mm256_and_si256(_mm256_srlv_epi64(v, hi4), m4);
            } else {
                wq[r] = ga__loadu(blk + 2);
                wa[r] = _mm256_sign_epi8(wq[r], wq[r]);
            }
            dw[r] = ga__h2f8(blk);
        }
        for (int j = 0; j < TT; j++) {
            const gemm_q8x *xb = (const gemm_q8x *)(x + j * a->x_stride) + b;
            __m256i yq = ga__loadu(xb->qs);
            __m256 dy = _mm256_broadcast_ss(&xb->d);
            for (int r = 0; r < R; r++) {
                __m256i s;
                if (q4) {
                    s = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[r], yq), ones);
                    s = _mm256_sub_epi32(s, ga__loadu(xb->sum8));
                } else {
                    s = _mm256_madd_epi16(_mm256_maddubs_epi16(wa[r], _mm256_sign_epi8(yq, wq[r])),
                                          ones);
                }
                acc[r][j] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dy), _mm256_cvtepi32_ps(s),
                                            acc[r][j]);
            }
        }
    }
    ga__store(R, TT, a, n, t, acc);
}

/* ---- Q4_K weights x Q8_K activations ------------------------------------------------------ */

typedef struct {
    __m256i q[8];      /* sub-block j: 32 unsigned 4-bit values */
    __m256i sc[8];     /* sub-block j: its 6-bit scale in every int16 */
    __m256i mins;      /* int16 pairs (m_j, m_j), j = 0..7 */
    float d, dmin;
} ga__q4k;

GA_INLINE void ga__q4k_unpack(const block_q4_K *blk, ga__q4k *u) {
    uint32_t w0, w1, w2;
    memcpy(&w0, blk->scales, 4);
    memcpy(&w1, blk->scales + 4, 4);
    memcpy(&w2, blk->scales + 8, 4);
    uint32_t sc[2], mn[2];
    sc[0] = w0 & 0x3f3f3f3fu;
    sc[1] = (w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4);
    mn[0] = w1 & 0x3f3f3f3fu;
    mn[1] = ((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4);
    /* the 8 scales as int16 in both 128-bit halves; sub-block j broadcasts element j */
    __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
    for (int j = 0; j < 8; j++)
        u->sc[j] = _mm256_shuffle_epi8(s16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * j)));
    __m128i m8 = _mm_loadl_epi64((const __m128i *)mn);
    u->mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int jp = 0; jp < 4; jp++) {
        __m256i raw = ga__loadu(blk->qs + 32 * jp);
        u->q[2 * jp] = _mm256_and_si256(raw, m4);
        u->q[2 * jp + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
    }
    u->d = _cvtsh_ss(blk->d);
    u->dmin = _cvtsh_ss(blk->dmin);
}

GA_INLINE void ga__tile_q4k(int R, int TT, const gemm_args *a, int64_t n, int t) {
    const uint8_t *w = a->w + (size_t)n * a->w_stride;
    const uint8_t *x = a->x + (size_t)t * a->x_stride;
    __m256 acc[GA_MAXR][GA_MAXT];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < TT; j++) acc[r][j] = _mm256_setzero_ps();
    int64_t nb = a->K / QK_K;
    ga__q4k u[GA_MAXR];
    for (int64_t b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++)
            ga__q4k_unpack((const block_q4_K *)(w + r * a->w_stride) + b, &u[r]);
        for (int j = 0; j < TT; j++) {
            const block_q8_K *y = (const block_q8_K *)(x + j * a->x_stride) + b;
            __m256i sum[GA_MAXR];
            for (int r = 0; r < R; r++) sum[r] = _mm256_setzero_si256();
            for (int s = 0; s < 8; s++) {
                __m256i yq = ga__loadu(y->qs + 32 * s);
                for (int r = 0; r < R; r++) {
                    __m256i p = _mm256_maddubs_epi16(u[r].q[s], yq);
                    sum[r] = _mm256_add_epi32(sum[r], _mm256_madd_epi16(p, u[r].sc[s]));
                }
            }
            __m256i bs = ga__loadu(y->bsums);
            for (int r = 0; r < R; r++) {
                __m256i mn = _mm256_madd_epi16(u[r].mins, bs);
                acc[r][j] = _mm256_fmadd_ps(_mm256_set1_ps(u[r].d * y->d),
                                            _mm256_cvtepi32_ps(sum[r]), acc[r][j]);
                acc[r][j] = _mm256_fnmadd_ps(_mm256_set1_ps(u[r].dmin * y->d),
                                             _mm256_cvtepi32_ps(mn), acc[r][j]);
            }
        }
    }
    ga__store(R, TT, a, n, t, acc);
}

/* ---- Q6_K weights x Q8_K activations ------------------------------------------------------ */

typedef struct {
    __m256i q[8];      /* elements 32i..32i+31: unsigned 6-bit values */
    __m256i sc[8];     /* group i: int16 [scale 2i x8 | scale 2i+1 x8] */
    __m256i sc16;      /* the 16 scales as int16 */
    float d;
} ga__q6k;

GA_INLINE void ga__q6k_unpack(const block_q6_K *blk, ga__q6k *u) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; h++) {
        __m256i l0 = ga__loadu(blk->ql + 64 * h);
        __m256i l1 = ga__loadu(blk->ql + 64 * h + 32);
        __m256i hb = ga__loadu(blk->qh + 32 * h);
        /* bits 2i, 2i+1 of qh are bits 4, 5 of group i of this half */
        u->q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                          _mm256_and_si256(_mm256_slli_epi16(hb, 4), m2));
        u->q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                          _mm256_and_si256(_mm256_slli_epi16(hb, 2), m2));
        u->q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                          _mm256_and_si256(hb, m2));
        u->q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                          _mm256_and_si256(_mm256_srli_epi16(hb, 2), m2));
    }
    __m128i s8 = _mm_loadu_si128((const __m128i *)blk->scales);
    u->sc16 = _mm256_cvtepi8_epi16(s8);
    for (int i = 0; i < 8; i++) {
        /* bytes [2i x8, 2i+1 x8] */
        __m128i sel = _mm_set_epi64x(0x0101010101010101LL * (2 * i + 1), 0x0101010101010101LL * (2 * i));
        u->sc[i] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, sel));
    }
    u->d = _cvtsh_ss(blk->d);
}

GA_INLINE void ga__tile_q6k(int R, int TT, const gemm_args *a, int64_t n, int t) {
    const uint8_t *w = a->w + (size_t)n * a->w_stride;
    const uint8_t *x = a->x + (size_t)t * a->x_stride;
    __m256 acc[GA_MAXR][GA_MAXT];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < TT; j++) acc[r][j] = _mm256_setzero_ps();
    int64_t nb = a->K / QK_K;
    ga__q6k u[GA_MAXR];
    for (int64_t b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++)
            ga__q6k_unpack((const block_q6_K *)(w + r * a->w_stride) + b, &u[r]);
        for (int j = 0; j < TT; j++) {
            const block_q8_K *y = (const block_q8_K *)(x + j * a->x_stride) + b;
            __m256i sum[GA_MAXR];
            for (int r = 0; r < R; r++) sum[r] = _mm256_setzero_si256();
            for (int s = 0; s < 8; s++) {
                __m256i yq = ga__loadu(y->qs + 32 * s);
                for (int r = 0; r < R; r++) {
                    __m256i p = _mm256_maddubs_epi16(u[r].q[s], yq);
                    sum[r] = _mm256_add_epi32(sum[r], _mm256_madd_epi16(p, u[r].sc[s]));
                }
            }
            __m256i bs = ga__loadu(y->bsums);
            for (int r = 0; r < R; r++) {
                /* q - 32: subtract 32 * sum_g scale_g * bsum_g */
                __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(u[r].sc16, bs), 5);
                sum[r] = _mm256_sub_epi32(sum[r], off);
                acc[r][j] = _mm256_fmadd_ps(_mm256_set1_ps(u[r].d * y->d),
                                            _mm256_cvtepi32_ps(sum[r]), acc[r][j]);
            }
        }
    }
    ga__store(R, TT, a, n, t, acc);
}

/* ---- instantiation and driver ------------------------------------------------------------- */

typedef void (*ga__tile_fn)(const gemm_args *a, int64_t n, int t);

#define GA_FN(kind, expr, R, TT) \
    static void ga__##kind##_##R##x##TT(const gemm_args *a, int64_t n, int t) { expr; }
#define GA_ROW(kind, body, R) \
    GA_FN(kind, body(R, 1), R, 1) GA_FN(kind, body(R, 2), R, 2) \
    GA_FN(kind, body(R, 3), R, 3) GA_FN(kind, body(R, 4), R, 4)
#define GA_ALL(kind, body) GA_ROW(kind, body, 1) GA_ROW(kind, body, 2) \
    GA_ROW(kind, body, 3) GA_ROW(kind, body, 4)
#define GA_TABLE(kind) { \
    { ga__##kind##_1x1, ga__##kind##_1x2, ga__##kind##_1x3, ga__##kind##_1x4 }, \
    { ga__##kind##_2x1, ga__##kind##_2x2, ga__##kind##_2x3, ga__##kind##_2x4 }, \
    { ga__##kind##_3x1, ga__##kind##_3x2, ga__##kind##_3x3, ga__##kind##_3x4 }, \
    { ga__##kind##_4x1, ga__##kind##_4x2, ga__##kind##_4x3, ga__##kind##_4x4 } }

#define GA_B_F32(R, TT) ga__tile_fp(0, R, TT, a, n, t)
#define GA_B_F16(R, TT) ga__tile_fp(1, R, TT, a, n, t)
#define GA_B_Q8_0(R, TT) ga__tile_q32(0, R, TT, a, n, t)
#define GA_B_Q4_0(R, TT) ga__tile_q32(1, R, TT, a, n, t)
#define GA_B_Q4_K(R, TT) ga__tile_q4k(R, TT, a, n, t)
#define GA_B_Q6_K(R, TT) ga__tile_q6k(R, TT, a, n, t)

GA_ALL(f32, GA_B_F32)
GA_ALL(f16, GA_B_F16)
GA_ALL(q8_0, GA_B_Q8_0)
GA_ALL(q4_0, GA_B_Q4_0)
GA_ALL(q4_k, GA_B_Q4_K)
GA_ALL(q6_k, GA_B_Q6_K)

typedef struct {
    int type;
    int r_batch, t_batch;   /* tile used when T >= t_batch */
    int r_single;           /* rows per tile for smaller batches */
    ga__tile_fn fn[GA_MAXR][GA_MAXT];
} ga__kset;

static const ga__kset ga__ksets[] = {
    { QT_F32, 3, 4, 4, GA_TABLE(f32) },
    { QT_F16, 3, 4, 4, GA_TABLE(f16) },
    { QT_Q8_0, 2, 4, 4, GA_TABLE(q8_0) },
    { QT_Q4_0, 2, 4, 4, GA_TABLE(q4_0) },
    { QT_Q4_K, 2, 4, 2, GA_TABLE(q4_k) },
    { QT_Q6_K, 2, 4, 2, GA_TABLE(q6_k) },
};

static const ga__kset *ga__find(int type) {
    for (size_t i = 0; i < sizeof ga__ksets / sizeof ga__ksets[0]; i++)
        if (ga__ksets[i].type == type) return &ga__ksets[i];
    return NULL;
}

int gemm_avx2_supported(int type) {
    return ga__find(type) != NULL;
}

int gemm_avx2_x_block(int type) {
    switch (type) {
    case QT_F32:
    case QT_F16: return 8;
    case QT_Q8_0:
    case QT_Q4_0: return QK8_0;
    case QT_Q4_K:
    case QT_Q6_K: return QK_K;
    default: return 0;
    }
}

size_t gemm_avx2_x_row_size(int type, int64_t K) {
    switch (type) {
    case QT_F32:
    case QT_F16: return (size_t)K * sizeof(float);
    case QT_Q8_0:
    case QT_Q4_0: return (size_t)(K / QK8_0) * sizeof(gemm_q8x);
    case QT_Q4_K:
    case QT_Q6_K: return (size_t)(K / QK_K) * sizeof(block_q8_K);
    default: return 0;
    }
}

void gemm_avx2_convert(int type, const float *x, void *dst, int64_t n, const qt_traits *vdt) {
    if (type == QT_F32) {
        memcpy(dst, x, (size_t)n * sizeof(float));
    } else if (type == QT_F16) {   /* round to f16 and back (F16C rounds to nearest even) */
        float *d = dst;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
            _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
        }
        for (; i < n; i++) d[i] = qt_f16_to_f32(qt_f32_to_f16(x[i]));
    } else if (type == QT_Q8_0 || type == QT_Q4_0) {
        gemm_q8x *out = dst;
        block_q8_0 tmp[16];
        const __m256i one8 = _mm256_set1_epi8(1), eight = _mm256_set1_epi16(8);
        for (int64_t e = 0; e < n; e += 16 * QK8_0) {
            int64_t m = n - e < 16 * QK8_0 ? n - e : 16 * QK8_0;
            vdt->from_float(x + e, tmp, m);
            for (int64_t b = 0; b < m / QK8_0; b++) {
                gemm_q8x *o = out + e / QK8_0 + b;
                o->d = _cvtsh_ss(tmp[b].d);
                memcpy(o->qs, tmp[b].qs, 32);
                /* |y| <= 128: maddubs(1, y) pairs, madd(8) quads, exact */
                __m256i p = _mm256_maddubs_epi16(one8, ga__loadu(tmp[b].qs));
                _mm256_storeu_si256((__m256i *)o->sum8, _mm256_madd_epi16(p, eight));
            }
        }
    } else {
        vdt->from_float(x, dst, n);
    }
}

void gemm_avx2_rows(const gemm_args *a, int64_t n0, int64_t n1) {
    const ga__kset *ks = ga__find(a->type);
    if (!ks || n0 >= n1) return;
    if (a->T < ks->t_batch) {
        for (int64_t n = n0; n < n1; n += ks->r_single) {
            int r = (int)(n1 - n < ks->r_single ? n1 - n : ks->r_single);
            for (int t = 0; t < a->T; t += GA_MAXT) {
                int tt = a->T - t < GA_MAXT ? a->T - t : GA_MAXT;
                ks->fn[r - 1][tt - 1](a, n, t);
            }
        }
        return;
    }
    for (int64_t nb = n0; nb < n1; nb += GA_NB) {
        int64_t ne = nb + GA_NB < n1 ? nb + GA_NB : n1;
        for (int t = 0; t < a->T; t += ks->t_batch) {
            int tt = a->T - t < ks->t_batch ? a->T - t : ks->t_batch;
            for (int64_t n = nb; n < ne; n += ks->r_batch) {
                int r = (int)(ne - n < ks->r_batch ? ne - n : ks->r_batch);
                ks->fn[r - 1][tt - 1](a, n, t);
            }
        }
    }
}
