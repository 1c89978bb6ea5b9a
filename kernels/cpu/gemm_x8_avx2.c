/* kernels/cpu/gemm_x8_avx2.c — AVX2 kernels for Q4_0, Q8_0, Q4_K and F16 weights packed in
 * 8-row groups (KERN_X8, made by kern_pack in pack.c), for every batch size from decode to
 * prompt. Q4_K and F16 have their own sections below.
 *
 * Layout of a packed weight (N, K): ceil(N/8) groups, group g = rows 8g..8g+7 (rows past N are
 * zero). A group is K/32 blocks; block b of a group is
 *   d[8]      the 8 rows' f16 scales of block b                                   16 B
 *   q[S][8]   S 32-byte segments; segment s holds 4 bytes of each row r at 4r:
 *             Q4_0 (S = 4): row r's qs[4s..4s+3], i.e. values 4s..4s+3 (low nibbles) and
 *                           16+4s..16+4s+3 (high nibbles)                           128 B
 *             Q8_0 (S = 8): row r's qs[4s..4s+3], values 4s..4s+3                   256 B
 * so a 256-bit lane r of every segment belongs to row r, and the 8 rows of a group are one
 * sequential stream (one prefetch stream per thread in decode, instead of 8).
 * F16 weights: group g is K steps of 16 B, step k = the 8 rows' w[8g+r][k] (f16); any K.
 *
 * F16 arithmetic of out[t][n], n = 8g + r: acc = fma(w[n][k], x[t][k], acc) for k = 0..K-1 in
 * order, one f32 accumulator in lane r, x rounded to f16 first (ggml's F16 vec_dot operands).
 * Tiles: GXF_G groups x GXF_T tokens (12 accumulators, FMA-bound) for batches; 4 groups x 1
 * token in decode, so that four independent chains hide the FMA latency.
 *
 * Arithmetic of out[t][n], n = 8g + r, fixed for every batch size (lane r of every vector):
 *   per block b: isum = exact int32 dot of row n's 32 quants with token t's 32 int8 activations
 *                (Q4_0: unsigned nibbles, minus 8 * sum(y), so it is the dot with q - 8);
 *                acc = fma(d_w * d_y, (float)isum, acc)       one accumulator, blocks in order
 *   out = acc.
 * A tile of 8 rows x TT tokens shares loads only, so out[t][n] is the same bits whatever T,
 * t's place in the batch, the tile or the thread: batch invariance as in gemm_avx2.c.
 * Decode (T = 1) runs GX_NS groups of a chunk far apart side by side (gx__dec): the same
 * arithmetic per output, more cache-line misses in flight per core.
 * Per block and token the 8 rows cost 8 maddubs + 8 adds (Q4_0: int16 sums are exact since
 * |q*y| <= 15*127, 16 of them per lane) and 5 ops for the scaling: about 3x fewer operations
 * per multiply-add than the per-row tiles, and no horizontal sums.
 */
#include <immintrin.h>
#include <string.h>

#include "gemm_impl.h"
#include "qtypes.h"

#define GX_INLINE static inline __attribute__((always_inline))
#define GX_UNROLL _Pragma("GCC unroll 8")
#define GX_TT 4      /* tokens per tile */
#define GX_TB 64     /* tokens per L2 block in batches */
#define GX_PF 2048   /* software prefetch distance in the weight stream (bytes) */
#ifndef GX_NS
#define GX_NS 2          /* weight streams per thread in decode */
#endif
#ifndef GX_PF_DEC
#define GX_PF_DEC 4096   /* prefetch distance of each decode stream (bytes) */
#endif

_Static_assert(sizeof(gemm_q8p) == 40, "gemm_q8p layout");

/* Keeps v in a register as it is: GCC otherwise reassociates the integer sums into a tree that
 * computes every product first and spills them (half the speed). */
#define GX_PIN(v) __asm__("" : "+x"(v))

/* the first nr (<= 8) lanes of v to o */
GX_INLINE void gx__store(float *o, __m256 v, int nr) {
    if (nr == 8) {
        _mm256_storeu_ps(o, v);
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, v);
        memcpy(o, tmp, sizeof(float) * (size_t)nr);
    }
}

GX_INLINE __m256i gx__bcast4(const int8_t *p) {   /* 4 bytes at p into every 32-bit lane */
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

GX_INLINE void gx__nibbles(const uint8_t *p, __m256i *lo, __m256i *hi) {   /* 32 B at p */
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i raw = _mm256_loadu_si256((const __m256i *)p);
    *lo = _mm256_and_si256(raw, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
}

/* 8 rows of group base g x TT tokens starting at x (converted rows x_stride apart), over all
 * K/32 blocks; results to out[j * N + n0 + r] for r < nr. */
GX_INLINE void gx__tile(int q4, int TT, const uint8_t *g, int64_t nb, const uint8_t *x,
                        size_t x_stride, float *out, int64_t N, int64_t n0, int nr) {
    const size_t bsz = q4 ? 16 + 128 : 16 + 256;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[GX_TT];
    GX_UNROLL
    for (int j = 0; j < TT; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = g + (size_t)b * bsz;
        if (TT == 1) {   /* a line ahead per 64 B */
            _mm_prefetch((const char *)blk + GX_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + GX_PF + 64, _MM_HINT_T0);
            if (!q4) {
                _mm_prefetch((const char *)blk + GX_PF + 128, _MM_HINT_T0);
                _mm_prefetch((const char *)blk + GX_PF + 192, _MM_HINT_T0);
            }
        }
        const gemm_q8p *y[GX_TT];
        GX_UNROLL
        for (int j = 0; j < TT; j++) y[j] = (const gemm_q8p *)(x + (size_t)j * x_stride) + b;
        __m256i s[GX_TT];
        GX_UNROLL
        for (int j = 0; j < TT; j++) s[j] = _mm256_setzero_si256();
        if (q4) {
            GX_UNROLL
            for (int m = 0; m < 4; m++) {
                __m256i lo, hi;
                gx__nibbles(blk + 16 + 32 * m, &lo, &hi);
                GX_UNROLL
                for (int j = 0; j < TT; j++) {
                    s[j] = _mm256_add_epi16(s[j], _mm256_maddubs_epi16(lo, gx__bcast4(y[j]->qs + 4 * m)));
                    s[j] = _mm256_add_epi16(s[j],
                                            _mm256_maddubs_epi16(hi, gx__bcast4(y[j]->qs + 16 + 4 * m)));
                    GX_PIN(s[j]);
                }
            }
            GX_UNROLL
            for (int j = 0; j < TT; j++)
                s[j] = _mm256_sub_epi32(_mm256_madd_epi16(s[j], ones), _mm256_set1_epi32(y[j]->sy8));
        } else {
            GX_UNROLL
            for (int c = 0; c < 8; c++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c));
                __m256i aw = _mm256_sign_epi8(w, w);
                GX_UNROLL
                for (int j = 0; j < TT; j++) {
                    __m256i ys = _mm256_sign_epi8(gx__bcast4(y[j]->qs + 4 * c), w);
                    s[j] = _mm256_add_epi32(s[j], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, ys), ones));
                    GX_PIN(s[j]);
                }
            }
        }
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
        GX_UNROLL
        for (int j = 0; j < TT; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(&y[j]->d)),
                                     _mm256_cvtepi32_ps(s[j]), acc[j]);
    }
    GX_UNROLL
    for (int j = 0; j < TT; j++) gx__store(out + (size_t)j * (size_t)N + n0, acc[j], nr);
}

typedef void (*gx__fn)(const uint8_t *g, int64_t nb, const uint8_t *x, size_t x_stride,
                       float *out, int64_t N, int64_t n0, int nr);
#define GX_FN(name, q4, TT) \
    static void name(const uint8_t *g, int64_t nb, const uint8_t *x, size_t x_stride, float *out, \
                     int64_t N, int64_t n0, int nr) { gx__tile(q4, TT, g, nb, x, x_stride, out, N, n0, nr); }
GX_FN(gx__q4_1, 1, 1)
GX_FN(gx__q4_2, 1, 2)
GX_FN(gx__q4_3, 1, 3)
GX_FN(gx__q4_4, 1, 4)
GX_FN(gx__q8_1, 0, 1)
GX_FN(gx__q8_2, 0, 2)
GX_FN(gx__q8_3, 0, 3)
GX_FN(gx__q8_4, 0, 4)
static const gx__fn gx__q4[GX_TT] = { gx__q4_1, gx__q4_2, gx__q4_3, gx__q4_4 };
static const gx__fn gx__q8[GX_TT] = { gx__q8_1, gx__q8_2, gx__q8_3, gx__q8_4 };

/* ---- Q4_K ----------------------------------------------------------------------------------
 * Group super-block (256 values of 8 rows), 1184 B:
 *   d[8], dmin[8]   f16                                                             32 B
 *   sc[s][r], mn[s][r]   sub-block s's 6-bit scale and min of row r, as bytes     128 B
 *   q[j][c]   32-byte segments, j = sub-block pair (2j, 2j+1), c = 0..7: row r's bytes
 *             qs[32j + 4c .. 32j + 4c + 3] (low nibbles: sub-block 2j values 4c..4c+3, high:
 *             sub-block 2j+1)                                                     1024 B
 * Activations: Q8_K blocks. Per super-block, row r, token t (exact int32):
 *   isum = sum_s sc[s][r] * dot_s,  imin = sum_s mn[s][r] * (sum of y over sub-block s)
 *   acc = fma(d_r * dy, isum, acc); acc = fnmadd(dmin_r * dy, imin, acc)
 * int16 sums are exact: 16 products of <= 15 * 128 per lane and sub-block. */

#define GXK_TT 4
#define GXK_BS 1184

GX_INLINE __m256i gx__pair16(const uint8_t *p) {   /* 8 bytes -> lane r = (p[r], p[r]) int16 */
    __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_or_si256(v, _mm256_slli_epi32(v, 16));
}

/* y's sums over its 8 sub-blocks of 32 values as 4 int16 pairs: ys2[i] = (ys[2i], ys[2i+1]) */
GX_INLINE void gx__q8k_ys2(const block_q8_K *y, int32_t ys2[4]) {
    __m256i ys = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums),
                                   _mm256_set1_epi16(1));   /* |ys| <= 4096: packs is exact */
    _mm_storeu_si128((__m128i *)ys2, _mm_packs_epi32(_mm256_castsi256_si128(ys),
                                                      _mm256_extracti128_si256(ys, 1)));
}

/* imin of gx__tile_q4k (exact): lane r = sum_s mn[s][r] * ys[s], two sub-blocks per madd */
GX_INLINE __m256i gx__q4k_imin(const uint8_t *blk, const int32_t *ys2) {
    __m256i imin = _mm256_setzero_si256();
    GX_UNROLL
    for (int i = 0; i < 4; i++) {   /* lane r: (mn[2i][r], mn[2i+1][r]) . (ys[2i], ys[2i+1]) */
        __m128i m = _mm_loadu_si128((const __m128i *)(blk + 96 + 16 * i));
        __m256i mn = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, _mm_srli_si128(m, 8)));
        imin = _mm256_add_epi32(imin, _mm256_madd_epi16(mn, _mm256_set1_epi32(ys2[i])));
    }
    return imin;
}

GX_INLINE void gx__tile_q4k(int TT, const uint8_t *g, int64_t nb, const uint8_t *x,
                            size_t x_stride, float *out, int64_t N, int64_t n0, int nr) {
    __m256 acc[GXK_TT];
    GX_UNROLL
    for (int j = 0; j < TT; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = g + (size_t)b * GXK_BS;
        if (TT == 1) {
            for (int i = 0; i < GXK_BS; i += 64) _mm_prefetch((const char *)blk + GX_PF + i, _MM_HINT_T0);
        }
        const block_q8_K *y[GXK_TT];
        GX_UNROLL
        for (int j = 0; j < TT; j++) y[j] = (const block_q8_K *)(x + (size_t)j * x_stride) + b;
        __m256i isum[GXK_TT];
        GX_UNROLL
        for (int j = 0; j < TT; j++) isum[j] = _mm256_setzero_si256();
        for (int jp = 0; jp < 4; jp++) {
            __m256i slo[GXK_TT], shi[GXK_TT];
            GX_UNROLL
            for (int j = 0; j < TT; j++) slo[j] = shi[j] = _mm256_setzero_si256();
            GX_UNROLL
            for (int c = 0; c < 8; c++) {
                __m256i lo, hi;
                gx__nibbles(blk + 160 + 32 * (8 * jp + c), &lo, &hi);
                GX_UNROLL
                for (int j = 0; j < TT; j++) {
                    slo[j] = _mm256_add_epi16(slo[j], _mm256_maddubs_epi16(lo, gx__bcast4(y[j]->qs + 64 * jp + 4 * c)));
                    shi[j] = _mm256_add_epi16(shi[j],
                                              _mm256_maddubs_epi16(hi, gx__bcast4(y[j]->qs + 64 * jp + 32 + 4 * c)));
                    GX_PIN(slo[j]);
                    GX_PIN(shi[j]);
                }
            }
            __m256i sclo = gx__pair16(blk + 32 + 8 * (2 * jp)), schi = gx__pair16(blk + 32 + 8 * (2 * jp + 1));
            GX_UNROLL
            for (int j = 0; j < TT; j++) {
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(slo[j], sclo));
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(shi[j], schi));
            }
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
        __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16)));
        GX_UNROLL
        for (int j = 0; j < TT; j++) {
            int32_t ys2[4];
            gx__q8k_ys2(y[j], ys2);
            __m256i imin = gx__q4k_imin(blk, ys2);
            __m256 dy = _mm256_broadcast_ss(&y[j]->d);
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(isum[j]), acc[j]);
            acc[j] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), _mm256_cvtepi32_ps(imin), acc[j]);
        }
    }
    GX_UNROLL
    for (int j = 0; j < TT; j++) gx__store(out + (size_t)j * (size_t)N + n0, acc[j], nr);
}

/* One token, one group super-block, gx__tile_q4k's arithmetic with TT = 1, in two steps so
 * that the decode streams interleave by quarter: isum of quarter jp (sub-blocks 2jp, 2jp+1),
 * then the scales and mins (ys2 from gx__q8k_ys2(y), once per super-block for all streams). */
GX_INLINE __m256i gx__q4k_quarter(const uint8_t *blk, const block_q8_K *y, int jp, __m256i isum) {
    for (int l = 0; l < 5; l++)   /* 20 lines per 1184 B, 5 per quarter (not 19 at once) */
        _mm_prefetch((const char *)blk + GX_PF_DEC + 320 * jp + 64 * l, _MM_HINT_T0);
    __m256i slo = _mm256_setzero_si256(), shi = slo;
    GX_UNROLL
    for (int c = 0; c < 8; c++) {
        __m256i lo, hi;
        gx__nibbles(blk + 160 + 32 * (8 * jp + c), &lo, &hi);
        slo = _mm256_add_epi16(slo, _mm256_maddubs_epi16(lo, gx__bcast4(y->qs + 64 * jp + 4 * c)));
        shi = _mm256_add_epi16(shi, _mm256_maddubs_epi16(hi, gx__bcast4(y->qs + 64 * jp + 32 + 4 * c)));
        GX_PIN(slo);
        GX_PIN(shi);
    }
    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(slo, gx__pair16(blk + 32 + 8 * (2 * jp))));
    return _mm256_add_epi32(isum, _mm256_madd_epi16(shi, gx__pair16(blk + 32 + 8 * (2 * jp + 1))));
}

/* acc after super-block blk given its isum (the 4 quarters) */
GX_INLINE __m256 gx__q4k_finish(const uint8_t *blk, const block_q8_K *y, const int32_t *ys2,
                                __m256i isum, __m256 acc) {
    __m256i imin = gx__q4k_imin(blk, ys2);
    __m256 dy = _mm256_broadcast_ss(&y->d);
    __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
    __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16)));
    acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(isum), acc);
    return _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), _mm256_cvtepi32_ps(imin), acc);
}

#define GXK_FN(TT) \
    static void gx__q4k_##TT(const uint8_t *g, int64_t nb, const uint8_t *x, size_t x_stride, \
                             float *out, int64_t N, int64_t n0, int nr) { \
        gx__tile_q4k(TT, g, nb, x, x_stride, out, N, n0, nr); }
GXK_FN(1) GXK_FN(2) GXK_FN(3) GXK_FN(4)
static const gx__fn gx__q4k[GXK_TT] = { gx__q4k_1, gx__q4k_2, gx__q4k_3, gx__q4k_4 };
/* ---- decode: one token, GX_NS weight streams ---------------------------------------------
 * With one token a group is a single pass over its weights, and one core's stream of demand
 * loads and prefetches does not keep enough cache-line misses in flight to reach the memory
 * bus's rate. The decode path therefore runs NS groups of a chunk far apart side by side
 * (groups i, i + q, i + 2q, ... of the chunk's groups), NS independent streams and NS
 * independent chains. The arithmetic of every output is gx__tile's with TT = 1. */

/* exact int32 sums of one block (gx__tile's, one token): Q4_0 already minus 8 * sum(y) */
GX_INLINE __m256i gx__blk1(int q4, const uint8_t *blk, const gemm_q8p *y) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s = _mm256_setzero_si256();
    if (q4) {
        GX_UNROLL
        for (int m = 0; m < 4; m++) {
            __m256i lo, hi;
            gx__nibbles(blk + 16 + 32 * m, &lo, &hi);
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo, gx__bcast4(y->qs + 4 * m)));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(hi, gx__bcast4(y->qs + 16 + 4 * m)));
            GX_PIN(s);
        }
        return _mm256_sub_epi32(_mm256_madd_epi16(s, ones), _mm256_set1_epi32(y->sy8));
    }
    GX_UNROLL
    for (int c = 0; c < 8; c++) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c));
        __m256i aw = _mm256_sign_epi8(w, w);
        __m256i ys = _mm256_sign_epi8(gx__bcast4(y->qs + 4 * c), w);
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(aw, ys), ones));
        GX_PIN(s);
    }
    return s;
}

/* NS groups g[i] of a Q4_0 (kind 0), Q8_0 (1) or Q4_K (2) weight, one token x, to
 * o[i][0..nr[i]) */
GX_INLINE void gx__dec(int kind, int NS, const uint8_t *const *g, int64_t nb, const uint8_t *x,
                       float *const *o, const int *nr) {
    const size_t bsz = kind == 2 ? GXK_BS : kind == 0 ? 16 + 128 : 16 + 256;
    const size_t ysz = kind == 2 ? sizeof(block_q8_K) : sizeof(gemm_q8p);
    __m256 acc[4];
    GX_UNROLL
    for (int i = 0; i < NS; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *y = x + (size_t)b * ysz;
        int32_t ys2[4];
        if (kind == 2) gx__q8k_ys2((const block_q8_K *)y, ys2);
        if (kind == 2) {   /* the streams side by side at quarter granularity */
            __m256i isum[4];
            GX_UNROLL
            for (int i = 0; i < NS; i++) isum[i] = _mm256_setzero_si256();
            for (int jp = 0; jp < 4; jp++)
                GX_UNROLL
                for (int i = 0; i < NS; i++)
                    isum[i] = gx__q4k_quarter(g[i] + (size_t)b * bsz, (const block_q8_K *)y, jp, isum[i]);
            GX_UNROLL
            for (int i = 0; i < NS; i++)
                acc[i] = gx__q4k_finish(g[i] + (size_t)b * bsz, (const block_q8_K *)y, ys2, isum[i], acc[i]);
            continue;
        }
        GX_UNROLL
        for (int i = 0; i < NS; i++) {
            const uint8_t *blk = g[i] + (size_t)b * bsz;
            for (size_t l = 0; l + 16 < bsz; l += 64)   /* a line per 64 B of quants */
                _mm_prefetch((const char *)blk + GX_PF_DEC + l, _MM_HINT_T0);
            const gemm_q8p *yq = (const gemm_q8p *)y;
            __m256i si = gx__blk1(kind == 0, blk, yq);
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
            acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(&yq->d)),
                                     _mm256_cvtepi32_ps(si), acc[i]);
        }
    }
    GX_UNROLL
    for (int i = 0; i < NS; i++) gx__store(o[i], acc[i], nr[i]);
}

typedef void (*gx__dfn)(const uint8_t *const *g, int64_t nb, const uint8_t *x, float *const *o,
                        const int *nr);
#define GXD_FN(kind, NS) \
    static void gx__dec_##kind##_##NS(const uint8_t *const *g, int64_t nb, const uint8_t *x, \
                                      float *const *o, const int *nr) { \
        gx__dec(kind, NS, g, nb, x, o, nr); }
GXD_FN(0, 1) GXD_FN(0, 2) GXD_FN(0, 3) GXD_FN(0, 4)
GXD_FN(1, 1) GXD_FN(1, 2) GXD_FN(1, 3) GXD_FN(1, 4)
GXD_FN(2, 1) GXD_FN(2, 2) GXD_FN(2, 3) GXD_FN(2, 4)
static const gx__dfn gx__decs[3][4] = {
    { gx__dec_0_1, gx__dec_0_2, gx__dec_0_3, gx__dec_0_4 },
    { gx__dec_1_1, gx__dec_1_2, gx__dec_1_3, gx__dec_1_4 },
    { gx__dec_2_1, gx__dec_2_2, gx__dec_2_3, gx__dec_2_4 } };
_Static_assert(GX_NS >= 1 && GX_NS <= 4, "GX_NS streams: 1..4");

/* ---- F16 ---------------------------------------------------------------------------------- */

#define GXF_G 2   /* groups per batched tile */
#define GXF_T 6   /* tokens per batched tile */
#define GXF_D 4   /* groups per decode tile */

/* G groups (g0, g0 + gs, ...) x TT tokens (x rows K apart), k over [0, K) */
GX_INLINE void gx__tile_f16(int G, int TT, const uint8_t *g0, size_t gs, const float *x, int64_t K,
                            float *out, int64_t N, int64_t n0, int nr_last) {
    __m256 acc[GXF_D > GXF_G ? GXF_D : GXF_G][GXF_T];
    GX_UNROLL
    for (int i = 0; i < G; i++)
        GX_UNROLL
        for (int j = 0; j < TT; j++) acc[i][j] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m256 w[GXF_D > GXF_G ? GXF_D : GXF_G];
        if (TT == 1 && (k & 3) == 0)
            GX_UNROLL
            for (int i = 0; i < G; i++)
                _mm_prefetch((const char *)g0 + (size_t)i * gs + 16 * k + GX_PF, _MM_HINT_T0);
        GX_UNROLL
        for (int i = 0; i < G; i++)
            w[i] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(g0 + (size_t)i * gs + 16 * k)));
        GX_UNROLL
        for (int j = 0; j < TT; j++) {
            __m256 xb = _mm256_broadcast_ss(x + (size_t)j * (size_t)K + k);
            GX_UNROLL
            for (int i = 0; i < G; i++) acc[i][j] = _mm256_fmadd_ps(w[i], xb, acc[i][j]);
        }
    }
    GX_UNROLL
    for (int i = 0; i < G; i++)
        GX_UNROLL
        for (int j = 0; j < TT; j++)
            gx__store(out + (size_t)j * (size_t)N + n0 + 8 * i, acc[i][j], i == G - 1 ? nr_last : 8);
}

typedef void (*gx__ffn)(const uint8_t *g0, size_t gs, const float *x, int64_t K, float *out,
                        int64_t N, int64_t n0, int nr_last);
#define GXF_FN(G, TT) \
    static void gx__f16_##G##x##TT(const uint8_t *g0, size_t gs, const float *x, int64_t K, \
                                   float *out, int64_t N, int64_t n0, int nr_last) { \
        gx__tile_f16(G, TT, g0, gs, x, K, out, N, n0, nr_last); }
GXF_FN(1, 1) GXF_FN(1, 2) GXF_FN(1, 3) GXF_FN(1, 4) GXF_FN(1, 5) GXF_FN(1, 6)
GXF_FN(2, 1) GXF_FN(2, 2) GXF_FN(2, 3) GXF_FN(2, 4) GXF_FN(2, 5) GXF_FN(2, 6)
GXF_FN(3, 1) GXF_FN(4, 1)
static const gx__ffn gx__f16b[2][GXF_T] = {
    { gx__f16_1x1, gx__f16_1x2, gx__f16_1x3, gx__f16_1x4, gx__f16_1x5, gx__f16_1x6 },
    { gx__f16_2x1, gx__f16_2x2, gx__f16_2x3, gx__f16_2x4, gx__f16_2x5, gx__f16_2x6 } };
static const gx__ffn gx__f16d[GXF_D] = { gx__f16_1x1, gx__f16_2x1, gx__f16_3x1, gx__f16_4x1 };

/* tokens in blocks of GX_TB; groups of rows [n0, n1) in tiles of G groups */
static void gx__rows_f16(const gemm_args *a, int64_t n0, int64_t n1) {
    const size_t gs = gemm_x8_group_size(QT_F16, a->K);
    const float *x = (const float *)a->x;
    const int dec = a->T == 1;
    const int G = dec ? GXF_D : GXF_G;
    for (int tb = 0; tb < a->T; tb += GX_TB) {
        int te = tb + GX_TB < a->T ? tb + GX_TB : a->T;
        for (int64_t n = n0; n < n1; n += 8 * G) {
            int64_t ne = n + 8 * G < n1 ? n + 8 * G : n1;
            int ng = (int)((ne - n + 7) / 8), nr_last = (int)(ne - n - 8 * (ng - 1));
            const uint8_t *g0 = a->w + (size_t)(n / 8) * gs;
            if (dec) {
                gx__f16d[ng - 1](g0, gs, x, a->K, a->out, a->N, n, nr_last);
                continue;
            }
            for (int t = tb; t < te; t += GXF_T) {
                int tt = te - t < GXF_T ? te - t : GXF_T;
                gx__f16b[ng - 1][tt - 1](g0, gs, x + (size_t)t * (size_t)a->K, a->K,
                                          a->out + (size_t)t * (size_t)a->N, a->N, n, nr_last);
            }
        }
    }
}

/* ---- public ------------------------------------------------------------------------------- */

int gemm_x8_supported(int type) {
    return type == QT_Q4_0 || type == QT_Q8_0 || type == QT_F16 || type == QT_Q4_K;
}

size_t gemm_x8_group_size(int type, int64_t K) {
    if (type == QT_F16) return (size_t)K * 16;
    if (type == QT_Q4_K) return (size_t)(K / QK_K) * GXK_BS;
    return (size_t)(K / 32) * (type == QT_Q4_0 ? 16 + 128 : 16 + 256);
}

size_t gemm_x8_x_row_size(int type, int64_t K) {
    if (type == QT_Q4_K) return (size_t)(K / QK_K) * sizeof(block_q8_K);
    return type == QT_F16 ? (size_t)K * sizeof(float) : (size_t)(K / 32) * sizeof(gemm_q8p);
}

int64_t gemm_x8_x_chunk(int type, int64_t K) {
    return type == QT_F16 ? K : type == QT_Q4_K ? QK_K : 32;
}

/* F16: chunk c = row c, values rounded to f16 (F16C rounds to nearest even) */
static void gx__convert_f16(const float *x, int64_t K, int64_t c0, int64_t c1, float *dst) {
    for (int64_t i = c0 * K; i < c1 * K;) {
        if (c1 * K - i >= 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT)));
            i += 8;
        } else {
            dst[i] = _cvtsh_ss(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
            i++;
        }
    }
}

void gemm_x8_convert(int type, const float *x, int64_t K, int64_t c0, int64_t c1, void *dst,
                     const qt_traits *q8) {
    if (type == QT_F16) {
        gx__convert_f16(x, K, c0, c1, dst);
        return;
    }
    if (type == QT_Q4_K) {   /* chunk c: block c of the flattened (T, K) matrix */
        qt_get(QT_Q8_K)->from_float(x + c0 * QK_K, (block_q8_K *)dst + c0, (c1 - c0) * QK_K);
        return;
    }
    gemm_q8p *out = (gemm_q8p *)dst + c0;
    block_q8_0 tmp[16];
    for (int64_t c = c0; c < c1; c += 16) {
        int64_t m = c1 - c < 16 ? c1 - c : 16;
        q8->from_float(x + c * 32, tmp, m * 32);
        for (int64_t b = 0; b < m; b++) {
            gemm_q8p *o = out + (c - c0) + b;
            o->d = _cvtsh_ss(tmp[b].d);
            memcpy(o->qs, tmp[b].qs, 32);
            int32_t sum = 0;
            for (int i = 0; i < 32; i++) sum += tmp[b].qs[i];
            o->sy8 = 8 * sum;
        }
    }
}

/* Rows [n0, n1) (n0 a multiple of 8) for all T tokens; tokens in blocks of GX_TB so that a
 * block's activations stay in L2 while the groups' weights stream past them. */
void gemm_x8_rows(const gemm_args *a, int64_t n0, int64_t n1) {
    if (a->type == QT_F16) {
        gx__rows_f16(a, n0, n1);
        return;
    }
    const int q4k = a->type == QT_Q4_K;
    const int64_t nb = q4k ? a->K / QK_K : a->K / 32;
    const size_t gs = gemm_x8_group_size(a->type, a->K);
    const gx__fn *fn = q4k ? gx__q4k : a->type == QT_Q4_0 ? gx__q4 : gx__q8;
    const int TTm = q4k ? GXK_TT : GX_TT;
    if (a->T == 1) {   /* decode: groups i, i + q, ... of the chunk side by side */
        const gx__dfn *dfn = gx__decs[q4k ? 2 : a->type == QT_Q4_0 ? 0 : 1];
        int64_t ng = (n1 - n0 + 7) / 8, q = (ng + GX_NS - 1) / GX_NS;
        for (int64_t k = 0; k < ng; k += q)   /* the kernels prefetch GX_PF_DEC ahead: start */
            for (int i = 0; i < GX_PF_DEC; i += 64)   /* each stream's first lines now */
                _mm_prefetch((const char *)a->w + (size_t)(n0 / 8 + k) * gs + i, _MM_HINT_T0);
        for (int64_t i = 0; i < q; i++) {
            const uint8_t *g[GX_NS];
            float *o[GX_NS];
            int nr[GX_NS], m = 0;
            for (int64_t k = i; k < ng && m < GX_NS; k += q, m++) {
                int64_t n = n0 + 8 * k;
                g[m] = a->w + (size_t)(n / 8) * gs;
                o[m] = a->out + n;
                nr[m] = (int)(n1 - n < 8 ? n1 - n : 8);
            }
            dfn[m - 1](g, nb, a->x, o, nr);
        }
        return;
    }
    for (int tb = 0; tb < a->T; tb += GX_TB) {
        int te = tb + GX_TB < a->T ? tb + GX_TB : a->T;
        for (int64_t n = n0; n < n1; n += 8) {
            const uint8_t *g = a->w + (size_t)(n / 8) * gs;
            int nr = (int)(n1 - n < 8 ? n1 - n : 8);
            for (int t = tb; t < te; t += TTm) {
                int tt = te - t < TTm ? te - t : TTm;
                fn[tt - 1](g, nb, a->x + (size_t)t * a->x_stride, a->x_stride,
                           a->out + (size_t)t * (size_t)a->N, a->N, n, nr);
            }
        }
    }
}
