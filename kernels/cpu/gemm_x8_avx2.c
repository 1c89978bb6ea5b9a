/* kernels/cpu/gemm_x8_avx2.c — AVX2 kernels for weights packed in 8-row groups (KERN_X8, made
 * by kern_pack in pack.c): Q4_0, Q5_0, Q8_0, IQ4_NL, Q4_1, Q5_1 (blocks of 32 values), Q4_K,
 * Q5_K, Q6_K (super-blocks of 256, their own section below) and F16 (its own section), for
 * every batch size from decode to prompt.
 *
 * Layout of a packed weight (N, K): ceil(N/8) groups, group g = rows 8g..8g+7 (rows past N are
 * zero), each the sequence of its packed blocks; packed block b holds block b of the 8 rows.
 * Quants come in 32-byte segments whose lane r (4 bytes at 4r) holds 4 bytes of row r, so a
 * 256-bit lane r of every segment belongs to row r, and the 8 rows of a group are one
 * sequential stream (one prefetch stream per thread in decode, instead of 8). Blocks of 32:
 *   d[8]      the 8 rows' f16 scales of block b                                   16 B
 *   q[S][8]   S 32-byte segments; segment s holds 4 bytes of each row r at 4r:
 *             Q4_0, Q5_0, IQ4_NL, Q4_1, Q5_1 (S = 4): row r's qs[4s..4s+3], i.e. values
 *                           4s..4s+3 (low nibbles) and 16+4s..16+4s+3 (high nibbles) 128 B
 *             Q8_0 (S = 8): row r's qs[4s..4s+3], values 4s..4s+3                   256 B
 *   h[8]      Q5_0, Q5_1: row r's 32 fifth bits, rearranged so that byte k of lane r holds
 *             those of the codes in byte k of every segment: bit s = value 4s+k's, bit 4+s =
 *             value 16+4s+k's                                                       32 B
 *   m[8]      Q4_1, Q5_1: the 8 rows' f16 mins of block b (x = d*q + m)              16 B
 * (Q4_0, IQ4_NL: 144 B; Q4_1: 160 B; Q5_0: 176 B; Q5_1: 192 B; Q8_0: 272 B.)
 * High bits in general (Q5_0, Q5_K, Q6_K): a 32-byte h segment goes with a family of q
 * segments, and byte k of lane r holds the high bits of the two codes (low and high nibble) in
 * byte k of lane r of each of them: the low nibble's at bit sh, the high nibble's at bit 4+sh
 * (sh: the q segment's place in the family), so that one shift of 16-bit lanes per code moves
 * them above the nibble (gx__codes).
 * F16 weights: group g is K steps of 16 B, step k = the 8 rows' w[8g+r][k] (f16); any K.
 *
 * F16 arithmetic of out[t][n], n = 8g + r: acc = fma(w[n][k], x[t][k], acc) for k = 0..K-1 in
 * order, one f32 accumulator in lane r, x rounded to f16 first (ggml's F16 vec_dot operands).
 * Tiles: GXF_G groups x GXF_T tokens (12 accumulators, FMA-bound) for batches; 4 groups x 1
 * token in decode, so that four independent chains hide the FMA latency.
 *
 * Arithmetic of out[t][n], n = 8g + r, fixed for every batch size (lane r of every vector):
 *   per block b: isum = exact int32 dot of row n's 32 quants with token t's 32 int8 activations
 *                (Q4_0: unsigned nibbles, minus 8 * sum(y), so it is the dot with q - 8;
 *                IQ4_NL: the int8 levels qt_iq4nl_values[q], looked up with vpshufb, times y
 *                with the sign trick as Q8_0; Q4_1, Q5_1: the unsigned codes q);
 *                acc = fma(d_w * d_y, (float)isum, acc)       one accumulator, blocks in order
 *                Q4_1, Q5_1 then acc = fma(m_w, d_y * (float)sum(y), acc) (d_y * sum(y) one
 *                f32 product, sum(y) exact and shared by the 8 rows)
 *   out = acc. (Not the float order of the per-row dots of dot_avx2_q32.c, which keep two
 *   blocks per step and a separate accumulator for the mins: those types' results differ
 *   from the rows' in the last bits, as Q4_0's does.)
 * Q5_0 and Q8_0 instead keep their vec_dots' float order (8 chains per output,
 * gx__q5_0_chains, gx__q8_0_chains; ggml's AVX2 order), so their packed results are the rows'
 * bits; K-quants: per super-block, see their section. A tile of 8 rows x TT tokens shares loads
 * only, so out[t][n] is the same bits whatever T, t's place in the batch, the tile or the
 * thread: batch invariance as in gemm_avx2.c. Decode (T = 1) runs GX_NS groups of a chunk far
 * apart side by side (gx__dec): the same arithmetic per output, more cache-line misses in
 * flight per core.
 * Per block and token the 8 rows cost 8 maddubs + 8 adds (Q4_0's int16 sums are exact: 16
 * products of |q*y| <= 15*127 per lane; Q5_1's are flushed to int32 after 8, IQ4_NL's
 * after each vpmaddubsw) and 5 ops for the scaling: about 3x fewer operations per multiply-add than the per-row tiles, and no
 * horizontal sums.
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

/* the packed kinds; Q4_K and after are the K-quants (Q8_K activations) */
enum { GX_Q4_0, GX_Q8_0, GX_Q5_0, GX_IQ4_NL, GX_Q4_1, GX_Q5_1, GX_Q4_K, GX_Q5_K, GX_Q6_K, GX_NKIND };

static int gx__kind(int type) {
    switch (type) {
    case QT_Q4_0: return GX_Q4_0;
    case QT_Q8_0: return GX_Q8_0;
    case QT_Q5_0: return GX_Q5_0;
    case QT_IQ4_NL: return GX_IQ4_NL;
    case QT_Q4_1: return GX_Q4_1;
    case QT_Q5_1: return GX_Q5_1;
    case QT_Q4_K: return GX_Q4_K;
    case QT_Q5_K: return GX_Q5_K;
    case QT_Q6_K: return GX_Q6_K;
    default: return -1;
    }
}

/* bytes of a packed block (of 32 values) or super-block (K-quants) of 8 rows */
GX_INLINE size_t gx__bsz(int kind) {
    switch (kind) {
    case GX_Q4_0: return X8_B32_Q + 128;
    case GX_Q8_0: return X8_B32_Q + 256;
    case GX_Q5_0: return X8_Q5_0_H + 32;
    case GX_IQ4_NL: return X8_B32_Q + 128;
    case GX_Q4_1: return X8_Q4_1_M + 16;
    case GX_Q5_1: return X8_Q5_1_M + 16;
    case GX_Q4_K: return X8_QK_Q + 1024;
    case GX_Q5_K: return X8_Q5K_H + 256;
    default: return X8_Q6K_QH + 512;
    }
}

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

/* The unsigned codes of the 32-byte segment at p: lo = its low nibbles, hi = its high ones,
 * plus (qh not NULL) their high bits from the h segment at qh (see the header): per byte
 * lo |= (h << (4 - sh)) & hm, hi |= (h >> sh) & hm. The shifts move 16-bit lanes, but a bit
 * that hm keeps never crosses a byte (sh + bits of hm above bit 4 <= 4). */
GX_INLINE void gx__codes(const uint8_t *p, const uint8_t *qh, int sh, int hm, __m256i *lo,
                         __m256i *hi) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i raw = _mm256_loadu_si256((const __m256i *)p);
    *lo = _mm256_and_si256(raw, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
    if (qh) {
        const __m256i m = _mm256_set1_epi8((char)hm);
        __m256i h = _mm256_loadu_si256((const __m256i *)qh);
        *lo = _mm256_or_si256(*lo, _mm256_and_si256(_mm256_sll_epi16(h, _mm_cvtsi32_si128(4 - sh)), m));
        *hi = _mm256_or_si256(*hi, _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(sh)), m));
    }
}

/* ---- blocks of 32: Q4_0, Q5_0, Q8_0 ------------------------------------------------------- */

/* exact int32 sums s[j] of one packed block with TT tokens' blocks y[j] (Q4_0 already minus
 * 8 * sum(y)); Q4_0, IQ4_NL, Q4_1, Q5_1 (Q5_0 and Q8_0 keep 8 chains: gx__q5_0_chains,
 * gx__q8_0_chains) */
GX_INLINE void gx__blk(int kind, int TT, const uint8_t *blk, const gemm_q8p *const *y, __m256i *s) {
    const __m256i ones = _mm256_set1_epi16(1);
    GX_UNROLL
    for (int j = 0; j < TT; j++) s[j] = _mm256_setzero_si256();
    if (kind == GX_IQ4_NL) {   /* signed x signed: the sign trick */
        static const int8_t levels[16] __attribute__((aligned(16))) = QT_IQ4NL_VALUES;
        const __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)levels));
        __m256i lo = lut, hi = lut;
        GX_UNROLL
        for (int c = 0; c < 8; c++) {   /* 8 vectors of 32 quants; IQ4_NL: segment c/2's levels */
            if (c % 2 == 0) gx__codes(blk + X8_B32_Q + 16 * c, NULL, 0, 0, &lo, &hi);
            const __m256i w = _mm256_shuffle_epi8(lut, c % 2 ? hi : lo);
            const int yo = 16 * (c % 2) + 2 * (c - c % 2);
            __m256i aw = _mm256_sign_epi8(w, w);
            GX_UNROLL
            for (int j = 0; j < TT; j++) {
                __m256i ys = _mm256_sign_epi8(gx__bcast4(y[j]->qs + yo), w);
                s[j] = _mm256_add_epi32(s[j], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, ys), ones));
                GX_PIN(s[j]);
            }
        }
        return;
    }
    /* unsigned codes: int16 sums of pairs <= 2 * 15 * 127 (Q4_0, Q4_1: 8 maddubs, 4 segments)
     * or 2 * 31 * 127 (Q5_1: 4 maddubs, 2 segments) before a vpmaddwd */
    const int flush = kind == GX_Q5_1 ? 2 : 4;
    const uint8_t *qh = kind == GX_Q5_1 ? blk + X8_Q5_1_H : NULL;
    __m256i s16[GX_TT];
    GX_UNROLL
    for (int m = 0; m < 4; m++) {
        __m256i lo, hi;
        gx__codes(blk + X8_B32_Q + 32 * m, qh, m, 0x10, &lo, &hi);
        GX_UNROLL
        for (int j = 0; j < TT; j++) {
            __m256i p = _mm256_maddubs_epi16(lo, gx__bcast4(y[j]->qs + 4 * m));
            s16[j] = m % flush ? _mm256_add_epi16(s16[j], p) : p;
            s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(hi, gx__bcast4(y[j]->qs + 16 + 4 * m)));
            GX_PIN(s16[j]);
        }
        if (m % flush == flush - 1) {
            GX_UNROLL
            for (int j = 0; j < TT; j++) s[j] = _mm256_add_epi32(s[j], _mm256_madd_epi16(s16[j], ones));
        }
    }
    if (kind == GX_Q4_0) {
        GX_UNROLL
        for (int j = 0; j < TT; j++) s[j] = _mm256_sub_epi32(s[j], _mm256_set1_epi32(y[j]->sy8));
    }
}

/* acc plus one block's terms for a token y, s its gx__blk sum: acc = fma(d_w * d_y, s, acc);
 * Q4_1, Q5_1 then acc = fma(m_w, d_y * sum(y), acc) (sum(y) exact, shared by the 8 rows) */
GX_INLINE __m256 gx__scale(int kind, const uint8_t *blk, const gemm_q8p *y, __m256i s, __m256 acc) {
    __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
    acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(&y->d)), _mm256_cvtepi32_ps(s), acc);
    if (kind == GX_Q4_1 || kind == GX_Q5_1) {
        __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + (kind == GX_Q4_1 ? X8_Q4_1_M : X8_Q5_1_M))));
        acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(y->d * (float)(y->sy8 / 8)), acc);
    }
    return acc;
}

/* Q5_0 keeps the float order of its vec_dot (qt_dot_q5_0_avx2, ggml's), so that packing does
 * not change its bits: 8 chains per output, chain l over the blocks' values 4l..4l+3 (segment
 * s: chain s for the low nibbles, 4+s for the high ones), acc[l] = fma(d_w * d_y, (float)p_l,
 * acc[l]) with p_l the exact int32 dot of those 4 values (q - 16), summed at the end as
 * qt__hsum_ps does. */
GX_INLINE void gx__q5_0_chains(const uint8_t *blk, const gemm_q8p *y, __m256 *acc) {
    const __m256i ones = _mm256_set1_epi16(1), sixteen = _mm256_set1_epi8(16);
    __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk)), _mm256_broadcast_ss(&y->d));
    GX_UNROLL
    for (int s = 0; s < 4; s++) {
        __m256i c[2];
        gx__codes(blk + X8_B32_Q + 32 * s, blk + X8_Q5_0_H, s, 0x10, &c[0], &c[1]);
        GX_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i yv = gx__bcast4(y->qs + 16 * h + 4 * s);
            __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(c[h], yv), _mm256_maddubs_epi16(sixteen, yv));
            acc[4 * h + s] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), acc[4 * h + s]);
        }
    }
}

/* Q8_0 keeps the float order of ggml's AVX2 Q8_0 dot (qt_dot_q8_0_avx2): 8 chains per output,
 * chain c over the blocks' values 4c..4c+3 (segment c), acc[c] = fma(d_w * d_y, (float)p_c,
 * acc[c]) with p_c the exact int32 dot of those 4 values, summed at the end as qt__hsum_ps. */
GX_INLINE void gx__q8_0_chains(const uint8_t *blk, const gemm_q8p *y, __m256 *acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk)), _mm256_broadcast_ss(&y->d));
    GX_UNROLL
    for (int c = 0; c < 8; c++) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(blk + X8_B32_Q + 32 * c));
        __m256i ys = _mm256_sign_epi8(gx__bcast4(y->qs + 4 * c), w);
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), ys), ones);
        acc[c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[c]);
    }
}

GX_INLINE __m256 gx__sum8(const __m256 *a) {   /* 8 chains in qt__hsum_ps / ga__hsum order */
    return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6])),
                         _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7])));
}

/* 8 rows of group base g x TT tokens starting at x (converted rows x_stride apart), over all
 * nb blocks; results to out[j * N + n0 + r] for r < nr (the kinds of gx__blk). */
GX_INLINE void gx__tile(int kind, int TT, const uint8_t *g, int64_t nb, const uint8_t *x,
                        size_t x_stride, float *out, int64_t N, int64_t n0, int nr) {
    const size_t bsz = gx__bsz(kind);
    __m256 acc[GX_TT];
    GX_UNROLL
    for (int j = 0; j < TT; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = g + (size_t)b * bsz;
        if (TT == 1)   /* a line ahead per 64 B of quants */
            for (size_t l = 0; l + 16 < bsz; l += 64) _mm_prefetch((const char *)blk + GX_PF + l, _MM_HINT_T0);
        const gemm_q8p *y[GX_TT];
        GX_UNROLL
        for (int j = 0; j < TT; j++) y[j] = (const gemm_q8p *)(x + (size_t)j * x_stride) + b;
        __m256i s[GX_TT];
        gx__blk(kind, TT, blk, y, s);
        GX_UNROLL
        for (int j = 0; j < TT; j++) acc[j] = gx__scale(kind, blk, y[j], s[j], acc[j]);
    }
    GX_UNROLL
    for (int j = 0; j < TT; j++) gx__store(out + (size_t)j * (size_t)N + n0, acc[j], nr);
}

/* ---- K-quants: Q4_K, Q5_K, Q6_K --------------------------------------------------------------
 * Group super-block (256 values of 8 rows):
 *   Q4_K (1184 B), Q5_K (1440 B):
 *     d[8], dmin[8]   f16                                                           32 B
 *     sc[s][r], mn[s][r]   sub-block s's 6-bit scale and min of row r, as bytes    128 B
 *     q[u][c]   32-byte segments, u = sub-block pair (2u, 2u+1), c = 0..7: row r's bytes
 *               qs[32u + 4c .. 32u + 4c + 3] (low nibbles: sub-block 2u values 4c..4c+3,
 *               high: sub-block 2u+1)                                              1024 B
 *     h[c]      Q5_K: the fifth bits of the segments q[0..3][c] (sh = u)            256 B
 *   Q6_K (1680 B):
 *     d[8]      f16                                                                 16 B
 *     sc[s][r]  sub-block s's (16 values) int8 scale of row r                      128 B
 *     ql[i]     i = 0..31: row r's ql[4i .. 4i + 3] as stored: for i = 16n + 8a + c
 *               (c = 0..7) low nibbles are values 128n + 32a + 4c.., high ones 64 further 1024 B
 *     qh[p]     p = 0..15: row r's qh[4p .. 4p + 3] as stored: for p = 8n + c, the two high
 *               bits of the segments ql[16n + c] (sh = 0) and ql[16n + 8 + c] (sh = 2)   512 B
 * Activations: Q8_K blocks. Q4_K, Q5_K: a unit u = 0..3 is the work of segments q[u][0..7],
 * sub-blocks 2u (low nibbles) and 2u+1 (high). Per super-block, row r, token t (exact int32):
 *   isum = sum_s sc[s][r] * dot_s, dot_s: unsigned codes . y over sub-block s
 *   imin = sum_s mn[s][r] * (sum of y over sub-block s)
 *   Q5_K: acc = fma(d_r * dy, isum, acc); acc = fnmadd(dmin_r * dy, imin, acc)
 *   Q4_K: the float order of ggml's repacked AVX2 Q4_K gemm, which llama.cpp's CPU backend
 *   runs for prompts (and Gemma 3's references come from): per unit u, in order,
 *   accd = fma((float)isum_u, d_r * dy, accd), accm = fma((float)imin_u, dmin_r * dy, accm)
 *   with isum_u, imin_u the unit's two sub-blocks; out = accd - accm (gx__kunit_acc)
 * A unit's int16 sums go to isum (madd with the scales) before they could overflow: after
 * 16 products of <= 15 * 128 per lane (Q4_K), 8 of <= 31 * 128 (Q5_K).
 * Q6_K keeps the float order of gemm_avx2.c's per-row tiles instead (gx__q6k_chains), so its
 * packed results are the rows' bits. */

GX_INLINE __m256i gx__pair16(const uint8_t *p, int sgn) {   /* 8 bytes -> lane r = (p[r], p[r]) int16 */
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    if (sgn) {
        __m256i v = _mm256_cvtepi8_epi32(b);
        return _mm256_blend_epi16(v, _mm256_slli_epi32(v, 16), 0xAA);
    }
    __m256i v = _mm256_cvtepu8_epi32(b);
    return _mm256_or_si256(v, _mm256_slli_epi32(v, 16));
}

/* isum[j] += unit u of a Q4_K or Q5_K super-block blk with tokens y[j] (exact) */
GX_INLINE void gx__kunit(int kind, int TT, const uint8_t *blk, const block_q8_K *const *y, int u,
                         __m256i *isum) {
    const int flush = kind == GX_Q4_K ? 8 : 4;   /* segments per int16 sum */
    const uint8_t *q = blk + X8_QK_Q + 256 * u, *qh = kind == GX_Q5_K ? blk + X8_Q5K_H : NULL;
    const int ylo = 64 * u, yhi = ylo + 32;
    const uint8_t *sclo = blk + X8_QK_SC + 16 * u, *schi = sclo + 8;
    __m256i slo[GX_TT], shi[GX_TT];
    GX_UNROLL
    for (int c = 0; c < 8; c++) {
        __m256i lo, hi;
        gx__codes(q + 32 * c, qh ? qh + 32 * c : NULL, u, 0x10, &lo, &hi);
        GX_UNROLL
        for (int j = 0; j < TT; j++) {
            __m256i pl = _mm256_maddubs_epi16(lo, gx__bcast4(y[j]->qs + ylo + 4 * c));
            __m256i ph = _mm256_maddubs_epi16(hi, gx__bcast4(y[j]->qs + yhi + 4 * c));
            slo[j] = c % flush ? _mm256_add_epi16(slo[j], pl) : pl;
            shi[j] = c % flush ? _mm256_add_epi16(shi[j], ph) : ph;
            GX_PIN(slo[j]);
            GX_PIN(shi[j]);
        }
        if (c % flush == flush - 1) {
            __m256i sl = gx__pair16(sclo, 0), sx = gx__pair16(schi, 0);
            GX_UNROLL
            for (int j = 0; j < TT; j++) {
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(slo[j], sl));
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(shi[j], sx));
            }
        }
    }
}

/* y's sums over sub-blocks as int16 pairs, ys2[i] = (sum over 2i, sum over 2i+1): Q4_K, Q5_K
 * 4 pairs of sub-blocks of 32; Q6_K 8 pairs of 16 (the bsums as they are) */
GX_INLINE void gx__ysums(int kind, const block_q8_K *y, int32_t ys2[8]) {
    if (kind == GX_Q6_K) {
        memcpy(ys2, y->bsums, sizeof y->bsums);
        return;
    }
    __m256i ys = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums),
                                   _mm256_set1_epi16(1));   /* |ys| <= 4096: packs is exact */
    _mm_storeu_si128((__m128i *)ys2, _mm_packs_epi32(_mm256_castsi256_si128(ys),
                                                      _mm256_extracti128_si256(ys, 1)));
}

/* lane r = m[2i][r] * ys[2i] + m[2i+1][r] * ys[2i+1] (exact), m[s][r] the bytes at p + 8s + r
 * (signed if sgn), ys2 from gx__ysums */
GX_INLINE __m256i gx__wpair(const uint8_t *p, int i, int sgn, const int32_t *ys2) {
    __m128i m = _mm_loadu_si128((const __m128i *)(p + 16 * i));
    __m128i il = _mm_unpacklo_epi8(m, _mm_srli_si128(m, 8));
    __m256i w = sgn ? _mm256_cvtepi8_epi16(il) : _mm256_cvtepu8_epi16(il);
    return _mm256_madd_epi16(w, _mm256_set1_epi32(ys2[i]));
}

/* lane r = sum_s m[s][r] * ys[s] (exact) over np pairs of sub-blocks */
GX_INLINE __m256i gx__wsum(const uint8_t *p, int np, int sgn, const int32_t *ys2) {
    __m256i s = _mm256_setzero_si256();
    GX_UNROLL
    for (int i = 0; i < np; i++) s = _mm256_add_epi32(s, gx__wpair(p, i, sgn, ys2));
    return s;
}

/* Q6_K keeps the float order of its per-row tiles (ga__tile_q6k in gemm_avx2.c), so that
 * packing does not change its bits: 8 chains per output; chain l's int32 per super-block is
 * sum over the values v = 32k + 4l..32k + 4l + 3 (k = 0..7) of sc[v / 16] * code * y, minus
 * 32 * (sc[2l] * bsum[2l] + sc[2l+1] * bsum[2l+1]); acc[l] = fma(d * dy, (float)that, acc[l]);
 * summed at the end as ga__hsum (gx__sum8). Segment ql[16n + 8a + c] holds values of
 * chain c in both nibbles. */
GX_INLINE void gx__q6k_chains(const uint8_t *blk, const block_q8_K *y, const int32_t *bs2, __m256 *acc) {
    const uint8_t *sc = blk + X8_Q6K_SC;
    __m256i A[8];
    GX_UNROLL
    for (int c = 0; c < 8; c++) A[c] = _mm256_setzero_si256();
    for (int na = 0; na < 4; na++) {
        const int n = na >> 1, a = na & 1;
        GX_UNROLL
        for (int c = 0; c < 8; c++) {
            __m256i lo, hi;
            gx__codes(blk + X8_Q6K_QL + 32 * (16 * n + 8 * a + c), blk + X8_Q6K_QH + 32 * (8 * n + c),
                      2 * a, 0x30, &lo, &hi);
            const int v = 128 * n + 32 * a + 4 * c;   /* the low nibbles' values; high: v + 64 */
            __m256i pl = _mm256_maddubs_epi16(lo, gx__bcast4(y->qs + v));
            __m256i ph = _mm256_maddubs_epi16(hi, gx__bcast4(y->qs + v + 64));
            A[c] = _mm256_add_epi32(A[c], _mm256_madd_epi16(pl, gx__pair16(sc + 8 * (v / 16), 1)));
            A[c] = _mm256_add_epi32(A[c], _mm256_madd_epi16(ph, gx__pair16(sc + 8 * (v / 16 + 4), 1)));
        }
    }
    __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk)), _mm256_broadcast_ss(&y->d));
    GX_UNROLL
    for (int l = 0; l < 8; l++) {
        __m256i sm = _mm256_sub_epi32(A[l], _mm256_slli_epi32(gx__wpair(sc, l, 1, bs2), 5));
        acc[l] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sm), acc[l]);
    }
}

/* acc after Q5_K super-block blk for token y, given its isum (all units) and
 * ys2 = gx__ysums(y) */
GX_INLINE __m256 gx__kfinish(const uint8_t *blk, const block_q8_K *y, const int32_t *ys2,
                             __m256i isum, __m256 acc) {
    __m256 dy = _mm256_broadcast_ss(&y->d);
    __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
    __m256i imin = gx__wsum(blk + X8_QK_MN, 4, 0, ys2);
    __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16)));
    acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(isum), acc);
    return _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), _mm256_cvtepi32_ps(imin), acc);
}

/* Q4_K in the float order of ggml's repacked AVX2 Q4_K gemm (block_q4_Kx8): two accumulators
 * per output, per unit u (sub-blocks 2u, 2u+1) in order: accd = fma((float)isum_u, d_r * dy,
 * accd), accm = fma((float)imin_u, dmin_r * dy, accm); out = accd - accm. dd[0], dd[1]: the
 * super-block's d_r * dy and dmin_r * dy (gx__kscales). */
GX_INLINE void gx__kscales(const uint8_t *blk, const block_q8_K *y, __m256 dd[2]) {
    __m256 dy = _mm256_broadcast_ss(&y->d);
    dd[0] = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk)), dy);
    dd[1] = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16))), dy);
}

GX_INLINE void gx__kunit_acc(const uint8_t *blk, const __m256 dd[2], const int32_t *ys2, int u,
                             __m256i isum, __m256 *accd, __m256 *accm) {
    __m256i imin = gx__wpair(blk + X8_QK_MN, u, 0, ys2);
    *accd = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd[0], *accd);
    *accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), dd[1], *accm);
}

/* gx__tile for Q4_K, Q5_K: nb super-blocks */
GX_INLINE void gx__tile_k(int kind, int TT, const uint8_t *g, int64_t nb, const uint8_t *x,
                          size_t x_stride, float *out, int64_t N, int64_t n0, int nr) {
    const size_t bsz = gx__bsz(kind);
    __m256 acc[GX_TT], accm[GX_TT];
    GX_UNROLL
    for (int j = 0; j < TT; j++) acc[j] = accm[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = g + (size_t)b * bsz;
        if (TT == 1)
            for (size_t i = 0; i < bsz; i += 64) _mm_prefetch((const char *)blk + GX_PF + i, _MM_HINT_T0);
        const block_q8_K *y[GX_TT];
        GX_UNROLL
        for (int j = 0; j < TT; j++) y[j] = (const block_q8_K *)(x + (size_t)j * x_stride) + b;
        __m256i isum[GX_TT];
        if (kind == GX_Q4_K) {
            int32_t ys2[GX_TT][8];
            __m256 dd[GX_TT][2];
            GX_UNROLL
            for (int j = 0; j < TT; j++) {
                gx__ysums(kind, y[j], ys2[j]);
                gx__kscales(blk, y[j], dd[j]);
            }
            for (int u = 0; u < 4; u++) {
                GX_UNROLL
                for (int j = 0; j < TT; j++) isum[j] = _mm256_setzero_si256();
                gx__kunit(kind, TT, blk, y, u, isum);
                GX_UNROLL
                for (int j = 0; j < TT; j++) gx__kunit_acc(blk, dd[j], ys2[j], u, isum[j], &acc[j], &accm[j]);
            }
            continue;
        }
        GX_UNROLL
        for (int j = 0; j < TT; j++) isum[j] = _mm256_setzero_si256();
        for (int u = 0; u < 4; u++) gx__kunit(kind, TT, blk, y, u, isum);
        GX_UNROLL
        for (int j = 0; j < TT; j++) {
            int32_t ys2[8];
            gx__ysums(kind, y[j], ys2);
            acc[j] = gx__kfinish(blk, y[j], ys2, isum[j], acc[j]);
        }
    }
    GX_UNROLL
    for (int j = 0; j < TT; j++)
        gx__store(out + (size_t)j * (size_t)N + n0, kind == GX_Q4_K ? _mm256_sub_ps(acc[j], accm[j]) : acc[j], nr);
}

/* the kinds that keep 8 float chains per output (their vec_dot's order) */
#define GX_CHAINED(kind) ((kind) == GX_Q5_0 || (kind) == GX_Q8_0 || (kind) == GX_Q6_K)

/* one block (Q5_0, Q8_0) or super-block (Q6_K) of an 8-chain kind into acc[8]; y: its activations */
GX_INLINE void gx__chains(int kind, const uint8_t *blk, const uint8_t *y, __m256 *acc) {
    if (kind == GX_Q6_K) {
        int32_t ys2[8];
        gx__ysums(kind, (const block_q8_K *)y, ys2);
        gx__q6k_chains(blk, (const block_q8_K *)y, ys2, acc);
    } else if (kind == GX_Q8_0) {
        gx__q8_0_chains(blk, (const gemm_q8p *)y, acc);
    } else {
        gx__q5_0_chains(blk, (const gemm_q8p *)y, acc);
    }
}

GX_INLINE size_t gx__ysz(int kind) {   /* bytes of a block's activations */
    return kind >= GX_Q4_K ? sizeof(block_q8_K) : sizeof(gemm_q8p);
}

/* Q5_0 over TT tokens: each block's 5-bit codes are decoded once for all TT tokens (the
 * decode is about as many operations as one token's products); every output's arithmetic is
 * gx__q5_0_chains' (the same products, fmas and chain sums in the same order), so the bits are
 * those of a token at a time. The TT x 8 chains live in L1, not in registers. */
GX_INLINE void gx__tile_q5_0(int TT, const uint8_t *g, int64_t nb, const uint8_t *x,
                             size_t x_stride, float *out, int64_t N, int64_t n0, int nr) {
    const __m256i ones = _mm256_set1_epi16(1), sixteen = _mm256_set1_epi8(16);
    const size_t bsz = gx__bsz(GX_Q5_0), ysz = gx__ysz(GX_Q5_0);
    __m256 acc[GX_TT][8];
    for (int j = 0; j < TT; j++)
        for (int l = 0; l < 8; l++) acc[j][l] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = g + (size_t)b * bsz;
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
        __m256i c[4][2];
        GX_UNROLL
        for (int q = 0; q < 4; q++) gx__codes(blk + X8_B32_Q + 32 * q, blk + X8_Q5_0_H, q, 0x10, &c[q][0], &c[q][1]);
        for (int j = 0; j < TT; j++) {
            const gemm_q8p *y = (const gemm_q8p *)(x + (size_t)j * x_stride + (size_t)b * ysz);
            const __m256 d = _mm256_mul_ps(dw, _mm256_broadcast_ss(&y->d));
            GX_UNROLL
            for (int q = 0; q < 4; q++)
                GX_UNROLL
                for (int h = 0; h < 2; h++) {
                    __m256i yv = gx__bcast4(y->qs + 16 * h + 4 * q);
                    __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(c[q][h], yv), _mm256_maddubs_epi16(sixteen, yv));
                    acc[j][4 * h + q] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), acc[j][4 * h + q]);
                }
        }
    }
    for (int j = 0; j < TT; j++) gx__store(out + (size_t)j * (size_t)N + n0, gx__sum8(acc[j]), nr);
}

/* gx__tile for the 8-chain kinds (Q5_0, Q6_K): a token at a time (Q5_0 with several:
 * gx__tile_q5_0) */
GX_INLINE void gx__tile_chains(int kind, int TT, const uint8_t *g, int64_t nb, const uint8_t *x,
                               size_t x_stride, float *out, int64_t N, int64_t n0, int nr) {
    const size_t bsz = gx__bsz(kind), ysz = gx__ysz(kind);
    if (kind == GX_Q5_0 && TT > 1) {
        gx__tile_q5_0(TT, g, nb, x, x_stride, out, N, n0, nr);
        return;
    }
    for (int j = 0; j < TT; j++) {
        __m256 acc[8];
        GX_UNROLL
        for (int l = 0; l < 8; l++) acc[l] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = g + (size_t)b * bsz;
            if (TT == 1)
                for (size_t i = 0; i < bsz; i += 64) _mm_prefetch((const char *)blk + GX_PF + i, _MM_HINT_T0);
            gx__chains(kind, blk, x + (size_t)j * x_stride + (size_t)b * ysz, acc);
        }
        gx__store(out + (size_t)j * (size_t)N + n0, gx__sum8(acc), nr);
    }
}

typedef void (*gx__fn)(const uint8_t *g, int64_t nb, const uint8_t *x, size_t x_stride,
                       float *out, int64_t N, int64_t n0, int nr);

/* ---- decode: one token, GX_NS weight streams ---------------------------------------------
 * With one token a group is a single pass over its weights, and one core's stream of demand
 * loads and prefetches does not keep enough cache-line misses in flight to reach the memory
 * bus's rate. The decode path therefore runs NS groups of a chunk far apart side by side
 * (groups i, i + q, i + 2q, ... of the chunk's groups), NS independent streams and NS
 * independent chains. The arithmetic of every output is gx__tile's (gx__tile_k's) with
 * TT = 1. Q4_K/Q5_K streams interleave by quarter super-block (a unit at a time). */

/* NS groups g[i] of one kind, one token x, to o[i][0..nr[i]) */
GX_INLINE void gx__dec(int kind, int NS, const uint8_t *const *g, int64_t nb, const uint8_t *x,
                       float *const *o, const int *nr) {
    const int kq = kind >= GX_Q4_K;
    const size_t bsz = gx__bsz(kind), ysz = gx__ysz(kind);
    if (GX_CHAINED(kind)) {   /* 8 chains per stream (gx__chains) */
        __m256 ac[4][8];
        GX_UNROLL
        for (int i = 0; i < NS; i++)
            GX_UNROLL
            for (int l = 0; l < 8; l++) ac[i][l] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++)
            GX_UNROLL
            for (int i = 0; i < NS; i++) {
                const uint8_t *blk = g[i] + (size_t)b * bsz;
                for (size_t l = 0; l < bsz; l += 64) _mm_prefetch((const char *)blk + GX_PF_DEC + l, _MM_HINT_T0);
                gx__chains(kind, blk, x + (size_t)b * ysz, ac[i]);
            }
        GX_UNROLL
        for (int i = 0; i < NS; i++) gx__store(o[i], gx__sum8(ac[i]), nr[i]);
        return;
    }
    __m256 acc[4], accm[4];
    GX_UNROLL
    for (int i = 0; i < NS; i++) acc[i] = accm[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *y = x + (size_t)b * ysz;
        if (kq) {
            const block_q8_K *yk = (const block_q8_K *)y;
            const int lines = (int)((bsz + 255) / 256);   /* prefetched per quarter (not all at once) */
            int32_t ys2[8];
            gx__ysums(kind, yk, ys2);   /* once for all streams */
            __m256i isum[4];
            __m256 dd[4][2];
            GX_UNROLL
            for (int i = 0; i < NS; i++) {
                isum[i] = _mm256_setzero_si256();
                if (kind == GX_Q4_K) gx__kscales(g[i] + (size_t)b * bsz, yk, dd[i]);
            }
            for (int qt = 0; qt < 4; qt++) {
                GX_UNROLL
                for (int i = 0; i < NS; i++) {
                    const uint8_t *blk = g[i] + (size_t)b * bsz;
                    for (int l = 0; l < lines; l++)
                        _mm_prefetch((const char *)blk + GX_PF_DEC + 64 * (lines * qt + l), _MM_HINT_T0);
                    if (kind == GX_Q4_K) isum[i] = _mm256_setzero_si256();
                    gx__kunit(kind, 1, blk, &yk, qt, &isum[i]);
                    if (kind == GX_Q4_K) gx__kunit_acc(blk, dd[i], ys2, qt, isum[i], &acc[i], &accm[i]);
                }
            }
            if (kind != GX_Q4_K)
                GX_UNROLL
                for (int i = 0; i < NS; i++)
                    acc[i] = gx__kfinish(g[i] + (size_t)b * bsz, yk, ys2, isum[i], acc[i]);
            continue;
        }
        GX_UNROLL
        for (int i = 0; i < NS; i++) {
            const uint8_t *blk = g[i] + (size_t)b * bsz;
            for (size_t l = 0; l + 16 < bsz; l += 64)   /* a line per 64 B of quants */
                _mm_prefetch((const char *)blk + GX_PF_DEC + l, _MM_HINT_T0);
            const gemm_q8p *yq = (const gemm_q8p *)y;
            __m256i si;
            gx__blk(kind, 1, blk, &yq, &si);
            acc[i] = gx__scale(kind, blk, yq, si, acc[i]);
        }
    }
    GX_UNROLL
    for (int i = 0; i < NS; i++) gx__store(o[i], kind == GX_Q4_K ? _mm256_sub_ps(acc[i], accm[i]) : acc[i], nr[i]);
}

typedef void (*gx__dfn)(const uint8_t *const *g, int64_t nb, const uint8_t *x, float *const *o,
                        const int *nr);

/* per kind: the batched tiles of 1..GX_TT tokens and the decode kernels of 1..4 streams */
#define GX_FN(kind, TT) \
    static void gx__t_##kind##_##TT(const uint8_t *g, int64_t nb, const uint8_t *x, size_t x_stride, \
                                    float *out, int64_t N, int64_t n0, int nr) { \
        if (GX_CHAINED(kind)) gx__tile_chains(kind, TT, g, nb, x, x_stride, out, N, n0, nr); \
        else if (kind >= GX_Q4_K) gx__tile_k(kind, TT, g, nb, x, x_stride, out, N, n0, nr); \
        else gx__tile(kind, TT, g, nb, x, x_stride, out, N, n0, nr); }
#define GXD_FN(kind, NS) \
    static void gx__d_##kind##_##NS(const uint8_t *const *g, int64_t nb, const uint8_t *x, \
                                    float *const *o, const int *nr) { \
        gx__dec(kind, NS, g, nb, x, o, nr); }
#define GX_KIND(kind) \
    GX_FN(kind, 1) GX_FN(kind, 2) GX_FN(kind, 3) GX_FN(kind, 4) \
    GXD_FN(kind, 1) GXD_FN(kind, 2) GXD_FN(kind, 3) GXD_FN(kind, 4)
#define GX_TROW(kind) { gx__t_##kind##_1, gx__t_##kind##_2, gx__t_##kind##_3, gx__t_##kind##_4 }
#define GX_DROW(kind) { gx__d_##kind##_1, gx__d_##kind##_2, gx__d_##kind##_3, gx__d_##kind##_4 }
GX_KIND(GX_Q4_0) GX_KIND(GX_Q8_0) GX_KIND(GX_Q5_0) GX_KIND(GX_IQ4_NL) GX_KIND(GX_Q4_1) GX_KIND(GX_Q5_1)
GX_KIND(GX_Q4_K) GX_KIND(GX_Q5_K) GX_KIND(GX_Q6_K)
static const gx__fn gx__tiles[GX_NKIND][GX_TT] = {
    GX_TROW(GX_Q4_0), GX_TROW(GX_Q8_0), GX_TROW(GX_Q5_0), GX_TROW(GX_IQ4_NL), GX_TROW(GX_Q4_1), GX_TROW(GX_Q5_1),
    GX_TROW(GX_Q4_K), GX_TROW(GX_Q5_K), GX_TROW(GX_Q6_K) };
static const gx__dfn gx__decs[GX_NKIND][4] = {
    GX_DROW(GX_Q4_0), GX_DROW(GX_Q8_0), GX_DROW(GX_Q5_0), GX_DROW(GX_IQ4_NL), GX_DROW(GX_Q4_1), GX_DROW(GX_Q5_1),
    GX_DROW(GX_Q4_K), GX_DROW(GX_Q5_K), GX_DROW(GX_Q6_K) };
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
    return type == QT_F16 || gx__kind(type) >= 0;
}

size_t gemm_x8_group_size(int type, int64_t K) {
    if (type == QT_F16) return (size_t)K * 16;
    int kind = gx__kind(type);
    return (size_t)(K / (kind >= GX_Q4_K ? QK_K : 32)) * gx__bsz(kind);
}

size_t gemm_x8_x_row_size(int type, int64_t K) {
    if (type == QT_F16) return (size_t)K * sizeof(float);
    if (gx__kind(type) >= GX_Q4_K) return (size_t)(K / QK_K) * sizeof(block_q8_K);
    return (size_t)(K / 32) * sizeof(gemm_q8p);
}

int64_t gemm_x8_x_chunk(int type, int64_t K) {
    return type == QT_F16 ? K : gx__kind(type) >= GX_Q4_K ? QK_K : 32;
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
    if (gx__kind(type) >= GX_Q4_K) {   /* chunk c: block c of the flattened (T, K) matrix */
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
    const int kind = gx__kind(a->type);
    const int64_t nb = a->K / (kind >= GX_Q4_K ? QK_K : 32);
    const size_t gs = gemm_x8_group_size(a->type, a->K);
    if (a->T == 1) {   /* decode: groups i, i + q, ... of the chunk side by side */
        const gx__dfn *dfn = gx__decs[kind];
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
    const gx__fn *fn = gx__tiles[kind];
    for (int tb = 0; tb < a->T; tb += GX_TB) {
        int te = tb + GX_TB < a->T ? tb + GX_TB : a->T;
        for (int64_t n = n0; n < n1; n += 8) {
            const uint8_t *g = a->w + (size_t)(n / 8) * gs;
            int nr = (int)(n1 - n < 8 ? n1 - n : 8);
            for (int t = tb; t < te; t += GX_TT) {
                int tt = te - t < GX_TT ? te - t : GX_TT;
                fn[tt - 1](g, nb, a->x + (size_t)t * a->x_stride, a->x_stride,
                           a->out + (size_t)t * (size_t)a->N, a->N, n, nr);
            }
        }
    }
}
