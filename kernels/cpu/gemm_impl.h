/* kernels/cpu/gemm_impl.h — private seam between the matmul driver (matmul.c, no ISA flags) and
 * the AVX2 tile kernels (gemm_avx2.c, built with -mavx2 -mfma -mf16c).
 *
 * The tile kernels define the arithmetic of one output element out[t][n] once, for every
 * batch size: 8 f32 lanes accumulated block by block in k order (per lane: one FMA per block,
 * fed by an exact integer block sum for the quantized types), then one fixed horizontal sum.
 * A tile of R rows x TT tokens only shares loads between elements, never arithmetic, so the
 * value of out[t][n] is the same whatever tile, batch size, batch position or thread computed it.
 *
 * Activations reach the kernels converted to the same values as the traits' vec_dot_type,
 * laid out for the kernels (gemm_avx2_x_size bytes for T rows):
 *   F32 weights  -> f32, F16 weights -> f32 values rounded to f16 (exactly ggml's F16 vec_dot
 *                   operands, kept in f32 so the inner loop converts only the weights); both
 *                   in groups of 4 tokens interleaved by 8 values (see gemm_avx2.c), rows
 *                   zero-padded to a multiple of 8
 *   Q8_0, Q4_0   -> gemm_q8x blocks: a Q8_0 block with its scale widened to f32 and, per lane
 *                   of 4 values, 8 x their sum (Q4_0 kernels use unsigned nibbles and subtract it)
 *   Q4_K, Q6_K   -> Q8_K blocks as they are
 */
#ifndef SAMPAN_GEMM_IMPL_H
#define SAMPAN_GEMM_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "kern.h"

typedef struct {
    float d;             /* the Q8_0 block's f16 scale, exactly */
    int32_t sum8[8];     /* 8 * (qs[4l] + qs[4l+1] + qs[4l+2] + qs[4l+3]) */
    int8_t qs[32];
} gemm_q8x;              /* 68 B */

typedef struct {
    float d;             /* the Q8_0 block's f16 scale, exactly */
    int32_t sy8;         /* 8 * sum(qs) */
    int8_t qs[32];
} gemm_q8p;              /* 40 B: activations of KERN_X8 weights (gemm_x8_avx2.c) */

typedef struct {
    const uint8_t *w;     /* row 0 of the weight, (N, K) in its type */
    size_t w_stride;      /* bytes between weight rows */
    int type;             /* qt_type of w */
    int64_t K;
    const uint8_t *x;     /* (T, K) activations converted as above */
    size_t x_stride;      /* bytes between activation rows (quantized types) */
    float *out;           /* (T, N) */
    int64_t N;            /* row stride of out */
    int T;
} gemm_args;

/* 1 if gemm_avx2_rows handles weights of this type */
int gemm_avx2_supported(int type);
/* bytes of one converted activation row of K values, and of all T rows */
size_t gemm_avx2_x_row_size(int type, int64_t K);
size_t gemm_avx2_x_size(int type, int64_t K, int T);
/* Conversion works in chunks of gemm_avx2_x_chunk(type) values of a row (a row of K values
 * has ceil(K / chunk) of them; K is a multiple of the chunk for the quantized types):
 * converts chunks [c0, c1) of x (T, K) into dst (the whole converted matrix), using the
 * vec_dot_type's from_float where values need quantizing. Chunks are independent, so threads
 * may convert disjoint ranges at once. */
int gemm_avx2_x_chunk(int type);
void gemm_avx2_convert(int type, const float *x, int64_t K, int64_t c0, int64_t c1, void *dst,
                       const qt_traits *vdt);
/* out[t][n] for all t < T and n0 <= n < n1 */
void gemm_avx2_rows(const gemm_args *a, int64_t n0, int64_t n1);

/* KERN_X8 weights (gemm_x8_avx2.c; layout in its header): Q4_0, Q5_0, Q8_0, IQ4_NL, Q4_1, Q5_1,
 * Q4_K, Q5_K, Q6_K and F16. Activations are gemm_q8p blocks (the blocks of 32; 32 values per
 * conversion chunk), Q8_K blocks (the K-quants; a block of 256 per chunk) or f32 rows rounded
 * to f16 (F16; a row per chunk); a->w is the packed base, n0 a multiple of 8. */
/* byte offsets in the packed blocks, shared by kern_pack (pack.c) and the kernels */
enum {
    X8_B32_Q = 16,      /* blocks of 32: the q segments, after the 8 scales */
    X8_Q5_0_H = 144,    /* Q5_0: the h segment */
    X8_Q4_1_M = 144,    /* Q4_1: the 8 rows' f16 mins */
    X8_Q5_1_H = 144,    /* Q5_1: the h segment */
    X8_Q5_1_M = 176,    /* Q5_1: the 8 rows' f16 mins */
    X8_QK_SC = 32,      /* Q4_K, Q5_K: sc[s][r] at X8_QK_SC + 8s + r */
    X8_QK_MN = 96,      /* Q4_K, Q5_K: mn[s][r] */
    X8_QK_Q = 160,      /* Q4_K, Q5_K: q[u][c] at X8_QK_Q + 32 (8u + c) */
    X8_Q5K_H = 1184,    /* Q5_K: h[c] */
    X8_Q6K_SC = 16,     /* Q6_K: sc[s][r] */
    X8_Q6K_QL = 144,    /* Q6_K: ql[i] */
    X8_Q6K_QH = 1168,   /* Q6_K: qh[p] */
};
int gemm_x8_supported(int type);
size_t gemm_x8_group_size(int type, int64_t K);   /* bytes of one group of 8 rows */
size_t gemm_x8_x_row_size(int type, int64_t K);   /* bytes of one converted activation row */
int64_t gemm_x8_x_chunk(int type, int64_t K);     /* values per conversion chunk */
/* chunks [c0, c1) of x (T, K) into dst; q8: the Q8_0 traits (quantized types) */
void gemm_x8_convert(int type, const float *x, int64_t K, int64_t c0, int64_t c1, void *dst,
                     const qt_traits *q8);
void gemm_x8_rows(const gemm_args *a, int64_t n0, int64_t n1);

#endif
