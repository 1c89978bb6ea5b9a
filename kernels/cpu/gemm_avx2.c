/* kernels/cpu/gemm_avx2.c — AVX2 tile kernels for kern_matmul: F32, F16, Q8_0, Q4_0, Q4_K, Q6_K.
 *
 * The arithmetic of one output out[t][n] is fixed here for every batch size: one 8-lane f32
 * accumulator, updated once per block in k order, then ga__hsum. The quantized types first form
 * an exact int32 sum per lane and block (lane l of a 32-value group holds values 4l..4l+3), so
 * only these f32 steps round, and they are the same in every path below:
 *   F32/F16   acc = fma(w[k..k+7], x[k..k+7], acc)            (a zero-padded last step if K%8)
 *   Q8_0/Q4_0 acc[b%2] = fma(dw*dy, (float)isum, acc[b%2])     per block b of 32; two
 *             accumulators (even and odd blocks) so that one row alone is not bound by FMA
 *             latency; out = ga__hsum(acc[0] + acc[1])
 *   Q4_K      acc = fma(d*dy, (float)isum, acc); acc = fnmadd(dmin*dy, (float)imin, acc)
 *   Q6_K      acc = fma(d*dy, (float)isum, acc)                per super-block of 256
 *
 * Each type has one tile function ga__tile_<type>(panel, R, TT, ...) used two ways, so both
 * run the same per-block code:
 *   direct   (panel = 0) T < t_batch (decode): a tile of R rows x T tokens over all of K, the
 *            weight blocks unpacked in registers. Quantized decode uses R = 1: one row after
 *            the other is one sequential stream, which the hardware prefetcher follows far
 *            better than R interleaved rows (about 2x the bandwidth from DRAM on Zen 3).
 *   chunked  (panel = 1) batches, ga__rows_chunked: blocks of GA_NB rows x GA_TB tokens, K in
 *            chunks (512 values for F32/F16, 1024 for the quantized types) so that the rows'
 *            chunk and a token tile's chunk stay in L1/L2; accumulators wait in a small buffer
 *            between chunks. Quantized rows are first unpacked into a panel (ints and f32
 *            scales) once per token block, which the token tiles then share. Tiles are
 *            3 rows x 4 tokens (F32/F16) and 2 rows x 4 tokens (quantized).
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_impl.h"
#include "qtypes.h"

#define GA_INLINE static inline __attribute__((always_inline))
/* loops over tile rows, tokens and sub-blocks must be unrolled for the accumulators to live in
 * registers */
#define GA_UNROLL _Pragma("GCC unroll 8")
#define GA_MAXR 4
#define GA_MAXT 4
#define GA_NB 48    /* weight rows per L2 block in the batched paths (a multiple of 2 and 3) */
#define GA_TB 64    /* tokens per L2 block in the chunked path */
#define GA_XG 4     /* tokens per interleaved group of F32/F16 activations (= GA_MAXT) */
/* Direct (decode) tiles prefetch each weight row this far ahead: DRAM latency x one core's
 * share of bandwidth is a few KiB, and the hardware prefetcher stops at 4 KiB page bounds
 * (measured on Zen 3: 30-50% more bandwidth for the quantized decode kernels) */
#define GA_PF 4096

GA_INLINE void ga__prefetch(const void *p, int lines) {
    for (int i = 0; i < lines; i++) _mm_prefetch((const char *)p + GA_PF + 64 * i, _MM_HINT_T0);
}

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

typedef __m256 ga__acc[GA_MAXR][GA_MAXT];

/* Keeps an integer sum in a register as it is: GCC otherwise reassociates the sums of a tile
 * into trees that compute every product first and spill them (exact either way). */
#define GA_PIN(v) __asm__("" : "+x"(v))

/* Stores the results of a tile: out[t + j][n + r] */
GA_INLINE void ga__store(int R, int TT, const gemm_args *a, int64_t n, int t, ga__acc acc) {
    GA_UNROLL
    for (int j = 0; j < TT; j++)
        GA_UNROLL
        for (int r = 0; r < R; r++) a->out[(int64_t)(t + j) * a->N + n + r] = ga__hsum(acc[r][j]);
}

/* ---- chunked tiles: accumulators kept between calls ------------------------------------ */

/* Chunk job: blocks [b0, b1) of R rows (quantized: unpacked, row r's block b at unit
 * r * nb + b of panel) x TT tokens starting at token t; accumulator h of (r, j) in/out of
 * accb[(r * GA_TB + tj + j) * nacc + h]. */
typedef struct {
    const void *panel;
    int64_t nb;           /* blocks per row */
    int64_t b0, b1;
    __m256 *accb;         /* [GA_MAXR][GA_TB][nacc] */
    int tj;               /* first token's index in the token block */
} ga__pjob;

GA_INLINE void ga__acc_in(int panel, int nacc, int R, int TT, const ga__pjob *pj, int h,
                          ga__acc acc) {
    GA_UNROLL
    for (int r = 0; r < R; r++)
        GA_UNROLL
        for (int j = 0; j < TT; j++)
            acc[r][j] = panel ? pj->accb[(r * GA_TB + pj->tj + j) * nacc + h]
                              : _mm256_setzero_ps();
}

GA_INLINE void ga__acc_save(int nacc, int R, int TT, const ga__pjob *pj, int h, ga__acc acc) {
    GA_UNROLL
    for (int r = 0; r < R; r++)
        GA_UNROLL
        for (int j = 0; j < TT; j++) pj->accb[(r * GA_TB + pj->tj + j) * nacc + h] = acc[r][j];
}

/* one accumulator per output: to accb, or summed and stored */
GA_INLINE void ga__acc_out(int panel, int R, int TT, const ga__pjob *pj, const gemm_args *a,
                           int64_t n, int t, ga__acc acc) {
    if (panel) ga__acc_save(1, R, TT, pj, 0, acc);
    else ga__store(R, TT, a, n, t, acc);
}

/* ---- F32 and F16 weights; activations are f32 -------------------------------------------- */

GA_INLINE __m256 ga__load_wf(int f16, const uint8_t *row, int64_t k) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * k)));
    return _mm256_loadu_ps((const float *)row + k);
}

/* Activations of F32/F16 weights are stored in groups of GA_XG tokens, interleaved by 8
 * values: x[t][k..k+7] at float (t / GA_XG) * GA_XG * Kp + (k / 8) * 8 * GA_XG + (t % GA_XG) * 8,
 * Kp = K rounded up to 8 (zero padded). A tile's tokens are one group (tiles start at multiples
 * of GA_XG), so a k step reads one contiguous 32 * TT byte run: no 4 KiB-strided rows that
 * collide in L1 sets. */
GA_INLINE const float *ga__xg(const gemm_args *a, int t) {
    int64_t Kp = (a->K + 7) / 8 * 8;
    return (const float *)a->x + (size_t)(t / GA_XG) * GA_XG * (size_t)Kp;
}

/* R rows x TT tokens over k in [k0, k1) (panel = 1: a K chunk, accumulators in pj->accb;
 * k0 is a multiple of 8 and only the chunk ending at K takes the zero-padded last step) */
GA_INLINE void ga__tile_fp(int f16, int panel, int R, int TT, const gemm_args *a,
                           const ga__pjob *pj, int64_t n, int t) {
    const uint8_t *w = a->w + (size_t)n * a->w_stride;
    const float *x = ga__xg(a, t);
    const int64_t K = a->K, k1 = panel ? pj->b1 : K;
    ga__acc acc;
    ga__acc_in(panel, 1, R, TT, pj, 0, acc);
    int64_t k = panel ? pj->b0 : 0;
    for (; k + 8 <= k1; k += 8) {
        __m256 wv[GA_MAXR];
        if (!panel && (k & (f16 ? 31 : 15)) == 0) {   /* once per 64 B of each row */
            GA_UNROLL
            for (int r = 0; r < R; r++) ga__prefetch(w + r * a->w_stride + (f16 ? 2 : 4) * k, 1);
        }
        GA_UNROLL
        for (int r = 0; r < R; r++) wv[r] = ga__load_wf(f16, w + r * a->w_stride, k);
        const float *xk = x + k * GA_XG;
        GA_UNROLL
        for (int j = 0; j < TT; j++) {
            __m256 xv = _mm256_loadu_ps(xk + 8 * j);
            GA_UNROLL
            for (int r = 0; r < R; r++) acc[r][j] = _mm256_fmadd_ps(wv[r], xv, acc[r][j]);
        }
    }
    if (k < k1) {   /* last partial step of the row: weights zero padded, x is already */
        int rest = (int)(k1 - k);
        for (int r = 0; r < R; r++) {
            float wp[8] = { 0 };
            const uint8_t *row = w + r * a->w_stride;
            for (int i = 0; i < rest; i++)
                wp[i] = f16 ? ga__h2f(row + 2 * (k + i)) : ((const float *)row)[k + i];
            __m256 wv = _mm256_loadu_ps(wp);
            for (int j = 0; j < TT; j++)
                acc[r][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + k * GA_XG + 8 * j), acc[r][j]);
        }
    }
    ga__acc_out(panel, R, TT, pj, a, n, t, acc);
}

/* ---- quantized types: shared pieces ----------------------------------------------------- */

GA_INLINE __m256 ga__h2f8(const void *p) {   /* f16 at p, broadcast to 8 lanes */
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* ---- Q8_0 and Q4_0 weights x Q8_0 activations (as gemm_q8x) ------------------------------ */

_Static_assert(sizeof(gemm_q8x) == 68, "gemm_q8x layout");

typedef struct {
    __m256i q;    /* Q8_0: the 32 signed weights; Q4_0: the 32 nibbles as unsigned bytes */
    __m256i qa;   /* Q8_0: |q| (maddubs wants its first operand unsigned); Q4_0: unused */
    float d;
} ga__u32;

GA_INLINE __m256i ga__q4_0_q(const uint8_t *blk) {   /* low nibbles: values 0..15 */
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2)));
    return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0)),
                            _mm256_set1_epi8(0x0f));
}

/* Q8_0 lanes: sum q*y by the sign trick. Q4_0 lanes: sum q*y - 8 * sum y = sum (q-8)*y. */
GA_INLINE __m256 ga__q32_step(int q4, __m256i q, __m256i qa, __m256 dw, __m256i yq, __m256i ys8,
                              __m256 dy, __m256 acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s;
    if (q4) s = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q, yq), ones), ys8);
    else s = _mm256_madd_epi16(_mm256_maddubs_epi16(qa, _mm256_sign_epi8(yq, q)), ones);
    return _mm256_fmadd_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(s), acc);
}

/* block b of R rows x TT tokens into acc */
GA_INLINE void ga__q32_block(int q4, int panel, int R, int TT, const gemm_args *a,
                             const ga__pjob *pj, const uint8_t *w, const uint8_t *x, int64_t b,
                             ga__acc acc) {
    const size_t wbs = q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    __m256i q[GA_MAXR], qa[GA_MAXR];
    __m256 dw[GA_MAXR];
    GA_UNROLL
    for (int r = 0; r < R; r++) {
        if (panel) {
            const ga__u32 *u = (const ga__u32 *)pj->panel + r * pj->nb + b;
            q[r] = u->q;
            qa[r] = q4 ? q[r] : u->qa;
            dw[r] = _mm256_broadcast_ss(&u->d);
        } else {
            const uint8_t *blk = w + r * a->w_stride + b * wbs;
            if (((uintptr_t)blk & 63) < wbs) ga__prefetch(blk, 1);   /* once per line */
            q[r] = q4 ? ga__q4_0_q(blk) : ga__loadu(blk + 2);
            qa[r] = q4 ? q[r] : _mm256_sign_epi8(q[r], q[r]);
            dw[r] = ga__h2f8(blk);
        }
    }
    GA_UNROLL
    for (int j = 0; j < TT; j++) {
        const gemm_q8x *yj = (const gemm_q8x *)(x + j * a->x_stride) + b;
        __m256i yq = ga__loadu(yj->qs);
        __m256i ys8 = q4 ? ga__loadu(yj->sum8) : _mm256_setzero_si256();
        __m256 dy = _mm256_broadcast_ss(&yj->d);
        GA_UNROLL
        for (int r = 0; r < R; r++)
            acc[r][j] = ga__q32_step(q4, q[r], qa[r], dw[r], yq, ys8, dy, acc[r][j]);
    }
}

/* even blocks into acc0, odd blocks into acc1; panel chunks start on even blocks */
GA_INLINE void ga__tile_q32(int q4, int panel, int R, int TT, const gemm_args *a,
                            const ga__pjob *pj, int64_t n, int t) {
    const uint8_t *w = a->w + (size_t)n * a->w_stride;
    const uint8_t *x = a->x + (size_t)t * a->x_stride;
    const int64_t b0 = panel ? pj->b0 : 0, b1 = panel ? pj->b1 : a->K / QK8_0;
    ga__acc acc0, acc1;
    ga__acc_in(panel, 2, R, TT, pj, 0, acc0);
    ga__acc_in(panel, 2, R, TT, pj, 1, acc1);
    int64_t b = b0;
    for (; b + 1 < b1; b += 2) {
        ga__q32_block(q4, panel, R, TT, a, pj, w, x, b, acc0);
        ga__q32_block(q4, panel, R, TT, a, pj, w, x, b + 1, acc1);
    }
    if (b < b1) ga__q32_block(q4, panel, R, TT, a, pj, w, x, b, acc0);
    if (panel) {
        ga__acc_save(2, R, TT, pj, 0, acc0);
        ga__acc_save(2, R, TT, pj, 1, acc1);
    } else {
        GA_UNROLL
        for (int r = 0; r < R; r++)
            GA_UNROLL
            for (int j = 0; j < TT; j++) acc0[r][j] = _mm256_add_ps(acc0[r][j], acc1[r][j]);
        ga__store(R, TT, a, n, t, acc0);
    }
}

static void ga__unpack_q32(int q4, const uint8_t *blk, ga__u32 *u) {
    u->q = q4 ? ga__q4_0_q(blk) : ga__loadu(blk + 2);
    u->qa = q4 ? u->q : _mm256_sign_epi8(u->q, u->q);
    u->d = ga__h2f(blk);
}

/* ---- Q4_K weights x Q8_K activations ------------------------------------------------------ */

typedef struct {
    __m256i q[8];      /* sub-block s: 32 unsigned 4-bit values */
    __m256i sc[8];     /* sub-block s: its 6-bit scale in every int16 */
    __m256i mins;      /* int16 pairs (m_s, m_s), s = 0..7 */
    float d, dmin;
} ga__q4k;

/* s16: the 8 scales as int16 in both 128-bit halves; mins: int16 pairs (m_s, m_s) */
GA_INLINE void ga__q4k_scales(const block_q4_K *blk, __m256i *s16, __m256i *mins) {
    uint32_t w0, w1, w2;
    memcpy(&w0, blk->scales, 4);
    memcpy(&w1, blk->scales + 4, 4);
    memcpy(&w2, blk->scales + 8, 4);
    uint32_t sc[2], mn[2];
    sc[0] = w0 & 0x3f3f3f3fu;
    sc[1] = (w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4);
    mn[0] = w1 & 0x3f3f3f3fu;
    mn[1] = ((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4);
    *s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
    __m128i m8 = _mm_loadl_epi64((const __m128i *)mn);
    *mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
}

GA_INLINE __m256i ga__q4k_sc(__m256i s16, int s) {   /* scale s in every int16 */
    return _mm256_shuffle_epi8(s16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * s)));
}

GA_INLINE __m256i ga__q4k_q(const block_q4_K *blk, int s) {   /* sub-block s: 32 nibbles */
    __m256i raw = ga__loadu(blk->qs + 32 * (s / 2));
    if (s & 1) raw = _mm256_srli_epi16(raw, 4);
    return _mm256_and_si256(raw, _mm256_set1_epi8(0x0f));
}

GA_INLINE void ga__tile_q4k(int panel, int R, int TT, const gemm_args *a, const ga__pjob *pj,
                            int64_t n, int t) {
    const uint8_t *w = a->w + (size_t)n * a->w_stride;
    const uint8_t *x = a->x + (size_t)t * a->x_stride;
    const int64_t b0 = panel ? pj->b0 : 0, b1 = panel ? pj->b1 : a->K / QK_K;
    ga__acc acc;
    ga__acc_in(panel, 1, R, TT, pj, 0, acc);
    for (int64_t b = b0; b < b1; b++) {
        const block_q4_K *wb[GA_MAXR];
        const ga__q4k *ub[GA_MAXR];
        __m256i s16[GA_MAXR], mins[GA_MAXR];
        __m256 d[GA_MAXR], dmin[GA_MAXR];
        GA_UNROLL
        for (int r = 0; r < R; r++) {
            if (panel) {
                ub[r] = (const ga__q4k *)pj->panel + r * pj->nb + b;
                mins[r] = ub[r]->mins;
                d[r] = _mm256_broadcast_ss(&ub[r]->d);
                dmin[r] = _mm256_broadcast_ss(&ub[r]->dmin);
            } else {
                wb[r] = (const block_q4_K *)(w + r * a->w_stride) + b;
                ga__prefetch(wb[r], 3);
                ga__q4k_scales(wb[r], &s16[r], &mins[r]);
                d[r] = ga__h2f8(&wb[r]->d);
                dmin[r] = ga__h2f8(&wb[r]->dmin);
            }
        }
        __m256i sum[GA_MAXR][GA_MAXT];
        GA_UNROLL
        for (int r = 0; r < R; r++)
            GA_UNROLL
            for (int j = 0; j < TT; j++) sum[r][j] = _mm256_setzero_si256();
        GA_UNROLL
        for (int s = 0; s < 8; s++) {
            GA_UNROLL
            for (int r = 0; r < R; r++) {
                __m256i q = panel ? ub[r]->q[s] : ga__q4k_q(wb[r], s);
                __m256i sc = panel ? ub[r]->sc[s] : ga__q4k_sc(s16[r], s);
                GA_UNROLL
                for (int j = 0; j < TT; j++) {
                    const block_q8_K *yj = (const block_q8_K *)(x + j * a->x_stride) + b;
                    __m256i p = _mm256_maddubs_epi16(q, ga__loadu(yj->qs + 32 * s));
                    sum[r][j] = _mm256_add_epi32(sum[r][j], _mm256_madd_epi16(p, sc));
                    GA_PIN(sum[r][j]);
                }
            }
        }
        GA_UNROLL
        for (int j = 0; j < TT; j++) {
            const block_q8_K *yj = (const block_q8_K *)(x + j * a->x_stride) + b;
            __m256i bs = ga__loadu(yj->bsums);
            __m256 dy = _mm256_broadcast_ss(&yj->d);
            GA_UNROLL
            for (int r = 0; r < R; r++) {
                __m256i mn = _mm256_madd_epi16(mins[r], bs);
                acc[r][j] = _mm256_fmadd_ps(_mm256_mul_ps(d[r], dy), _mm256_cvtepi32_ps(sum[r][j]),
                                            acc[r][j]);
                acc[r][j] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin[r], dy), _mm256_cvtepi32_ps(mn),
                                             acc[r][j]);
            }
        }
    }
    ga__acc_out(panel, R, TT, pj, a, n, t, acc);
}

static void ga__unpack_q4k(const block_q4_K *blk, ga__q4k *u) {
    __m256i s16;
    ga__q4k_scales(blk, &s16, &u->mins);
    for (int s = 0; s < 8; s++) {
        u->q[s] = ga__q4k_q(blk, s);
        u->sc[s] = ga__q4k_sc(s16, s);
    }
    u->d = ga__h2f(&blk->d);
    u->dmin = ga__h2f(&blk->dmin);
}

/* ---- Q6_K weights x Q8_K activations ------------------------------------------------------ */

typedef struct {
    __m256i q[8];      /* values 32s..32s+31: unsigned 6-bit */
    __m256i sc[8];     /* group s: int16 [scale 2s x8 | scale 2s+1 x8] */
    __m256i sc16;      /* the 16 scales as int16 */
    float d;
} ga__q6k;

/* values 32s..32s+31 (s = 4h + i): low 4 bits from ql, bits 4-5 from bits 2i, 2i+1 of qh */
GA_INLINE __m256i ga__q6k_q(const block_q6_K *blk, int s) {
    const int h = s / 4, i = s % 4;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30);
    __m256i l = ga__loadu(blk->ql + 64 * h + 32 * (i & 1));
    __m256i hb = ga__loadu(blk->qh + 32 * h);
    __m256i lo = _mm256_and_si256(i < 2 ? l : _mm256_srli_epi16(l, 4), m4);
    __m256i hi = i == 0 ? _mm256_slli_epi16(hb, 4) : i == 1 ? _mm256_slli_epi16(hb, 2)
               : i == 2 ? hb : _mm256_srli_epi16(hb, 2);
    return _mm256_or_si256(lo, _mm256_and_si256(hi, m2));
}

GA_INLINE __m256i ga__q6k_sc(__m128i s8, int s) {   /* int16 [scale 2s x8 | scale 2s+1 x8] */
    __m128i sel = _mm_set_epi64x((long long)(0x0101010101010101ULL * (unsigned)(2 * s + 1)),
                                 (long long)(0x0101010101010101ULL * (unsigned)(2 * s)));
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, sel));
}

GA_INLINE void ga__tile_q6k(int panel, int R, int TT, const gemm_args *a, const ga__pjob *pj,
                            int64_t n, int t) {
    const uint8_t *w = a->w + (size_t)n * a->w_stride;
    const uint8_t *x = a->x + (size_t)t * a->x_stride;
    const int64_t b0 = panel ? pj->b0 : 0, b1 = panel ? pj->b1 : a->K / QK_K;
    ga__acc acc;
    ga__acc_in(panel, 1, R, TT, pj, 0, acc);
    for (int64_t b = b0; b < b1; b++) {
        const block_q6_K *wb[GA_MAXR];
        const ga__q6k *ub[GA_MAXR];
        __m128i s8[GA_MAXR];
        __m256i sc16[GA_MAXR];
        __m256 d[GA_MAXR];
        GA_UNROLL
        for (int r = 0; r < R; r++) {
            if (panel) {
                ub[r] = (const ga__q6k *)pj->panel + r * pj->nb + b;
                sc16[r] = ub[r]->sc16;
                d[r] = _mm256_broadcast_ss(&ub[r]->d);
            } else {
                wb[r] = (const block_q6_K *)(w + r * a->w_stride) + b;
                ga__prefetch(wb[r], 4);
                s8[r] = _mm_loadu_si128((const __m128i *)wb[r]->scales);
                sc16[r] = _mm256_cvtepi8_epi16(s8[r]);
                d[r] = ga__h2f8(&wb[r]->d);
            }
        }
        __m256i sum[GA_MAXR][GA_MAXT];
        GA_UNROLL
        for (int r = 0; r < R; r++)
            GA_UNROLL
            for (int j = 0; j < TT; j++) sum[r][j] = _mm256_setzero_si256();
        GA_UNROLL
        for (int s = 0; s < 8; s++) {
            GA_UNROLL
            for (int r = 0; r < R; r++) {
                __m256i q = panel ? ub[r]->q[s] : ga__q6k_q(wb[r], s);
                __m256i sc = panel ? ub[r]->sc[s] : ga__q6k_sc(s8[r], s);
                GA_UNROLL
                for (int j = 0; j < TT; j++) {
                    const block_q8_K *yj = (const block_q8_K *)(x + j * a->x_stride) + b;
                    __m256i p = _mm256_maddubs_epi16(q, ga__loadu(yj->qs + 32 * s));
                    sum[r][j] = _mm256_add_epi32(sum[r][j], _mm256_madd_epi16(p, sc));
                    GA_PIN(sum[r][j]);
                }
            }
        }
        GA_UNROLL
        for (int j = 0; j < TT; j++) {
            const block_q8_K *yj = (const block_q8_K *)(x + j * a->x_stride) + b;
            __m256i bs = ga__loadu(yj->bsums);
            __m256 dy = _mm256_broadcast_ss(&yj->d);
            GA_UNROLL
            for (int r = 0; r < R; r++) {
                /* q - 32: subtract 32 * sum_g scale_g * bsum_g */
                __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(sc16[r], bs), 5);
                __m256i sm = _mm256_sub_epi32(sum[r][j], off);
                acc[r][j] = _mm256_fmadd_ps(_mm256_mul_ps(d[r], dy), _mm256_cvtepi32_ps(sm),
                                            acc[r][j]);
            }
        }
    }
    ga__acc_out(panel, R, TT, pj, a, n, t, acc);
}

static void ga__unpack_q6k(const block_q6_K *blk, ga__q6k *u) {
    __m128i s8 = _mm_loadu_si128((const __m128i *)blk->scales);
    u->sc16 = _mm256_cvtepi8_epi16(s8);
    for (int s = 0; s < 8; s++) {
        u->q[s] = ga__q6k_q(blk, s);
        u->sc[s] = ga__q6k_sc(s8, s);
    }
    u->d = ga__h2f(&blk->d);
}

/* ---- instantiation ------------------------------------------------------------------------ */

typedef void (*ga__tile_fn)(const gemm_args *a, int64_t n, int t);
typedef void (*ga__panel_fn)(const gemm_args *a, const ga__pjob *pj, int64_t n, int t);

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

#define GA_PFN(kind, expr, R, TT) \
    static void ga__p##kind##_##R##x##TT(const gemm_args *a, const ga__pjob *pj, int64_t n, \
                                         int t) { expr; }
#define GA_PROW(kind, body, R) \
    GA_PFN(kind, body(R, 1), R, 1) GA_PFN(kind, body(R, 2), R, 2) \
    GA_PFN(kind, body(R, 3), R, 3) GA_PFN(kind, body(R, 4), R, 4)
#define GA_PALL(kind, body) GA_PROW(kind, body, 1) GA_PROW(kind, body, 2) \
    GA_PROW(kind, body, 3) GA_PROW(kind, body, 4)
#define GA_PTABLE(kind) { \
    { ga__p##kind##_1x1, ga__p##kind##_1x2, ga__p##kind##_1x3, ga__p##kind##_1x4 }, \
    { ga__p##kind##_2x1, ga__p##kind##_2x2, ga__p##kind##_2x3, ga__p##kind##_2x4 }, \
    { ga__p##kind##_3x1, ga__p##kind##_3x2, ga__p##kind##_3x3, ga__p##kind##_3x4 }, \
    { ga__p##kind##_4x1, ga__p##kind##_4x2, ga__p##kind##_4x3, ga__p##kind##_4x4 } }

#define GA_B_F32(R, TT) ga__tile_fp(0, 0, R, TT, a, NULL, n, t)
#define GA_B_F16(R, TT) ga__tile_fp(1, 0, R, TT, a, NULL, n, t)
#define GA_P_F32(R, TT) ga__tile_fp(0, 1, R, TT, a, pj, n, t)
#define GA_P_F16(R, TT) ga__tile_fp(1, 1, R, TT, a, pj, n, t)
#define GA_B_Q8_0(R, TT) ga__tile_q32(0, 0, R, TT, a, NULL, n, t)
#define GA_B_Q4_0(R, TT) ga__tile_q32(1, 0, R, TT, a, NULL, n, t)
#define GA_B_Q4_K(R, TT) ga__tile_q4k(0, R, TT, a, NULL, n, t)
#define GA_B_Q6_K(R, TT) ga__tile_q6k(0, R, TT, a, NULL, n, t)
#define GA_P_Q8_0(R, TT) ga__tile_q32(0, 1, R, TT, a, pj, n, t)
#define GA_P_Q4_0(R, TT) ga__tile_q32(1, 1, R, TT, a, pj, n, t)
#define GA_P_Q4_K(R, TT) ga__tile_q4k(1, R, TT, a, pj, n, t)
#define GA_P_Q6_K(R, TT) ga__tile_q6k(1, R, TT, a, pj, n, t)

GA_ALL(f32, GA_B_F32)
GA_ALL(f16, GA_B_F16)
GA_PALL(f32, GA_P_F32)
GA_PALL(f16, GA_P_F16)
GA_ALL(q8_0, GA_B_Q8_0)
GA_ALL(q4_0, GA_B_Q4_0)
GA_ALL(q4_k, GA_B_Q4_K)
GA_ALL(q6_k, GA_B_Q6_K)
GA_PALL(q8_0, GA_P_Q8_0)
GA_PALL(q4_0, GA_P_Q4_0)
GA_PALL(q4_k, GA_P_Q4_K)
GA_PALL(q6_k, GA_P_Q6_K)

static void ga__unpack_q8_0(const uint8_t *blk, void *u) { ga__unpack_q32(0, blk, u); }
static void ga__unpack_q4_0(const uint8_t *blk, void *u) { ga__unpack_q32(1, blk, u); }
static void ga__unpack_q4_k(const uint8_t *blk, void *u) { ga__unpack_q4k((const void *)blk, u); }
static void ga__unpack_q6_k(const uint8_t *blk, void *u) { ga__unpack_q6k((const void *)blk, u); }

typedef struct {
    int type;
    int r_batch, t_batch;   /* tile used when T >= t_batch */
    int r_single;           /* rows per tile for smaller batches */
    ga__tile_fn fn[GA_MAXR][GA_MAXT];
    /* batches (T >= t_batch) in chunks of K: */
    int r_panel, t_panel;   /* chunk tile */
    int kc;                 /* blocks per K chunk (even: Q8_0/Q4_0 alternate accumulators) */
    int nacc;               /* accumulators per output: 2 for Q8_0/Q4_0, else 1 */
    int qk;                 /* values per block */
    size_t wsize;           /* bytes of one weight block */
    size_t usize;           /* bytes of one unpacked block (quantized types) */
    void (*unpack)(const uint8_t *blk, void *u);   /* NULL: tiles read the weights directly */
    ga__panel_fn pfn[GA_MAXR][GA_MAXT];
} ga__kset;

static const ga__kset ga__ksets[] = {
    /* F32/F16: kc counts values (a K chunk of 4 tokens' f32 activations is 8 KiB) */
    { QT_F32, 3, 4, 4, GA_TABLE(f32), 3, 4, 512, 1, 1, 4, 0, NULL, GA_PTABLE(f32) },
    { QT_F16, 3, 4, 4, GA_TABLE(f16), 3, 4, 512, 1, 1, 2, 0, NULL, GA_PTABLE(f16) },
    { QT_Q8_0, 2, 4, 1, GA_TABLE(q8_0), 2, 4, 32, 2, QK8_0, sizeof(block_q8_0), sizeof(ga__u32), ga__unpack_q8_0,
      GA_PTABLE(q8_0) },
    { QT_Q4_0, 2, 4, 1, GA_TABLE(q4_0), 2, 4, 32, 2, QK4_0, sizeof(block_q4_0), sizeof(ga__u32), ga__unpack_q4_0,
      GA_PTABLE(q4_0) },
    { QT_Q4_K, 2, 4, 1, GA_TABLE(q4_k), 2, 4, 4, 1, QK_K, sizeof(block_q4_K), sizeof(ga__q4k), ga__unpack_q4_k,
      GA_PTABLE(q4_k) },
    { QT_Q6_K, 2, 4, 1, GA_TABLE(q6_k), 2, 4, 4, 1, QK_K, sizeof(block_q6_K), sizeof(ga__q6k), ga__unpack_q6_k,
      GA_PTABLE(q6_k) },
};

static const ga__kset *ga__find(int type) {
    for (size_t i = 0; i < sizeof ga__ksets / sizeof ga__ksets[0]; i++)
        if (ga__ksets[i].type == type) return &ga__ksets[i];
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------ */

int gemm_avx2_supported(int type) {
    return ga__find(type) != NULL;
}

int gemm_avx2_x_chunk(int type) {
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
    case QT_F16: return (size_t)(K + 7) / 8 * 8 * sizeof(float);
    case QT_Q8_0:
    case QT_Q4_0: return (size_t)(K / QK8_0) * sizeof(gemm_q8x);
    case QT_Q4_K:
    case QT_Q6_K: return (size_t)(K / QK_K) * sizeof(block_q8_K);
    default: return 0;
    }
}

size_t gemm_avx2_x_size(int type, int64_t K, int T) {
    int groups = type == QT_F32 || type == QT_F16 ? (T + GA_XG - 1) / GA_XG * GA_XG : T;
    return gemm_avx2_x_row_size(type, K) * (size_t)groups;
}

/* F32/F16: chunk c = 8 values of row t = c / cpr at k = (c % cpr) * 8, to its interleaved
 * place; F16 weights get the values rounded to f16 (F16C rounds to nearest even) */
static void ga__convert_fp(int f16, const float *x, int64_t K, int64_t c0, int64_t c1,
                           float *dst) {
    const int64_t cpr = (K + 7) / 8, Kp = cpr * 8;
    for (int64_t c = c0; c < c1; c++) {
        int64_t t = c / cpr, k = (c % cpr) * 8;
        float v[8] = { 0 };
        memcpy(v, x + t * K + k, (size_t)(K - k < 8 ? K - k : 8) * sizeof(float));
        __m256 xv = _mm256_loadu_ps(v);
        if (f16) xv = _mm256_cvtph_ps(_mm256_cvtps_ph(xv, _MM_FROUND_TO_NEAREST_INT));
        float *d = dst + (t / GA_XG) * GA_XG * Kp + k * GA_XG + (t % GA_XG) * 8;
        _mm256_storeu_ps(d, xv);
    }
}

void gemm_avx2_convert(int type, const float *x, int64_t K, int64_t c0, int64_t c1, void *dst,
                       const qt_traits *vdt) {
    if (c0 >= c1) return;
    if (type == QT_F32 || type == QT_F16) {
        ga__convert_fp(type == QT_F16, x, K, c0, c1, dst);
    } else if (type == QT_Q8_0 || type == QT_Q4_0) {
        /* rows are whole blocks: chunk c is block c of the flattened (T, K) matrix */
        gemm_q8x *out = (gemm_q8x *)dst + c0;
        block_q8_0 tmp[16];
        const __m256i one8 = _mm256_set1_epi8(1), eight = _mm256_set1_epi16(8);
        for (int64_t c = c0; c < c1; c += 16) {
            int64_t m = c1 - c < 16 ? c1 - c : 16;
            vdt->from_float(x + c * QK8_0, tmp, m * QK8_0);
            for (int64_t b = 0; b < m; b++) {
                gemm_q8x *o = out + (c - c0) + b;
                o->d = _cvtsh_ss(tmp[b].d);
                memcpy(o->qs, tmp[b].qs, 32);
                /* |y| <= 128: maddubs(1, y) pairs, madd(8) quads, exact */
                __m256i p = _mm256_maddubs_epi16(one8, ga__loadu(tmp[b].qs));
                _mm256_storeu_si256((__m256i *)o->sum8, _mm256_madd_epi16(p, eight));
            }
        }
    } else {
        vdt->from_float(x + c0 * QK_K, (block_q8_K *)dst + c0, (c1 - c0) * QK_K);
    }
}

/* A batch in K chunks: for each block of GA_NB rows and GA_TB tokens, the rows' chunk of K
 * (unpacked into a panel first for the quantized types) meets each token tile while both are
 * in L1/L2; the accumulators wait in accb between chunks. Returns 0, or -1 if a buffer could
 * not be allocated (the caller then uses the direct tiles, which compute the same values). */
static int ga__rows_chunked(const ga__kset *ks, const gemm_args *a, int64_t n0, int64_t n1) {
    const int R = ks->r_panel, TT = ks->t_panel;
    const int64_t nb = (a->K + ks->qk - 1) / ks->qk;   /* F32/F16: qk = 1, nb = K */
    void *panel = NULL;
    if (ks->unpack) panel = aligned_alloc(64, ((size_t)R * (size_t)nb * ks->usize + 63) / 64 * 64);
    const int nacc = ks->nacc;
    __m256 *accb = aligned_alloc(64, sizeof(__m256) * GA_NB * GA_TB * (size_t)nacc);
    if ((ks->unpack && !panel) || !accb) {
        free(panel);
        free(accb);
        return -1;
    }
    for (int64_t nbk = n0; nbk < n1; nbk += GA_NB) {
        int64_t ne = nbk + GA_NB < n1 ? nbk + GA_NB : n1;
        int rows = (int)(ne - nbk);
        for (int tb = 0; tb < a->T; tb += GA_TB) {
            int te = tb + GA_TB < a->T ? tb + GA_TB : a->T;
            for (int i = 0; i < rows * GA_TB * nacc; i++) accb[i] = _mm256_setzero_ps();
            /* quantized: one panel of R rows at a time; F32/F16: the whole row block */
            int rstep = ks->unpack ? R : rows;
            for (int64_t n = nbk; n < ne; n += rstep) {
                int rr = (int)(ne - n < rstep ? ne - n : rstep);
                for (int i = 0; ks->unpack && i < rr; i++) {
                    const uint8_t *row = a->w + (size_t)(n + i) * a->w_stride;
                    uint8_t *pr = (uint8_t *)panel + (size_t)i * (size_t)nb * ks->usize;
                    for (int64_t b = 0; b < nb; b++)
                        ks->unpack(row + (size_t)b * ks->wsize, pr + (size_t)b * ks->usize);
                }
                for (int64_t b0 = 0; b0 < nb; b0 += ks->kc) {
                    ga__pjob pj = { .panel = panel, .nb = nb, .b0 = b0,
                                    .b1 = b0 + ks->kc < nb ? b0 + ks->kc : nb };
                    for (int t = tb; t < te; t += TT) {
                        int tt = te - t < TT ? te - t : TT;
                        pj.tj = t - tb;
                        for (int64_t m = n; m < n + rr; m += R) {
                            int r = (int)(n + rr - m < R ? n + rr - m : R);
                            pj.accb = accb + (size_t)(m - nbk) * GA_TB * nacc;
                            if (ks->unpack) pj.panel = (const uint8_t *)panel +
                                                       (size_t)(m - n) * (size_t)nb * ks->usize;
                            ks->pfn[r - 1][tt - 1](a, &pj, m, t);
                        }
                    }
                }
            }
            for (int t = tb; t < te; t++)
                for (int i = 0; i < rows; i++) {
                    const __m256 *ac = &accb[(i * GA_TB + t - tb) * nacc];
                    a->out[(int64_t)t * a->N + nbk + i] =
                        ga__hsum(nacc == 2 ? _mm256_add_ps(ac[0], ac[1]) : ac[0]);
                }
        }
    }
    free(panel);
    free(accb);
    return 0;
}

void gemm_avx2_rows(const gemm_args *a, int64_t n0, int64_t n1) {
    const ga__kset *ks = ga__find(a->type);
    if (!ks || n0 >= n1) return;
    if (a->T >= ks->t_batch && ga__rows_chunked(ks, a, n0, n1) == 0) return;
    int rs = a->T < ks->t_batch ? ks->r_single : ks->r_batch;
    for (int64_t n = n0; n < n1; n += rs) {
        int r = (int)(n1 - n < rs ? n1 - n : rs);
        for (int t = 0; t < a->T; t += GA_MAXT) {
            int tt = a->T - t < GA_MAXT ? a->T - t : GA_MAXT;
            ks->fn[r - 1][tt - 1](a, n, t);
        }
    }
}
