/* kernels/cuda/k_gemv.cu — decode GEMV: out (T,N) = x (T,K) · W^T for T <= 8, W in the file's
 * block layout (KERN_ROWS) of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K,
 * Q4_K, Q5_K, Q6_K or IQ4_XS, each quantized type by dp4a over its blocks (Q4_0, Q4_1, Q5_0,
 * Q5_1 and IQ4_NL share one template, Q4_K and Q5_K another, Q2_K and Q3_K a third in Q6_K's
 * lane mapping). Nothing here has run on a GPU: the speeds below are design targets.
 *
 * Numerics: the CPU's kern_matmul, summation order aside. As on the CPU (kern.h), x is first
 * converted to the weight type's vec_dot_type by a small kernel into scratch, bit for bit the
 * CPU's quantizer (dequant_math.h's rounding): Q8_0 blocks of 32 (d = f16(amax/127)) for
 * the 32-element types, Q8_K blocks of 256 (d = max/-127 in f32, bsums per 16) for the
 * 256-element ones, f16- or
 * bf16-rounded values for F16/BF16, x itself for F32. The quantized types then take exact int32
 * dot products with __dp4a over pieces of a block (4 bytes of weight and activation per
 * instruction) and add piece_sum * (weight scale * activation scale) into an f32 accumulator
 * per token (Q4_K, Q5_K: minus (dmin * activation scale) * sum of mins times bsums), the CPU's
 * per-block expression cut into 4 (the 32-element types), 8 (Q4_K, Q5_K, IQ4_XS) or 16
 * (Q6_K, Q2_K, Q3_K) pieces;
 * Q4_1/Q5_1 add (m * activation scale) * the activations' sum of the piece, Q2_K subtracts
 * (dmin * activation scale) * the mins times the activations' sums of its pieces; the float types
 * multiply dequantized weights by the rounded activations with f32 fma (the products are exact
 * for F16 and BF16). So the GPU and the CPU differ only by f32 rounding of the additions: each
 * lane sums its pieces in order, then a warp butterfly adds the 32 lanes; fma rounds once where
 * the CPU rounds twice. Against a float64 product of the dequantized weights and the
 * quantized activations the error is within about (pieces per lane + 5) * 2^-24 of
 * sum |w_i * xq_i|.
 *
 * Work: one warp per output row, 4 rows per 128-thread block, so each row's bytes are read
 * once for all T tokens and the grid is N/4 blocks. Lanes take consecutive pieces of
 * consecutive blocks, so a warp's loads cover 128-576 contiguous bytes of the row at a time
 * (16-byte loads for the quants of Q4_K and Q5_K, Q5_K's high bits and the float types when
 * the row is 16-byte aligned; the 18-34 and 210-byte blocks of the 32-element types and Q6_K
 * are only 2-byte aligned, so they are read as pairs of 2-byte loads). The activations (T*K bytes quantized) stay in L1/L2 and are read per row; at
 * T = 8 those L1 reads, not DRAM, bound the quantized kernels (about 16 activation bytes per
 * weight byte for Q4_0): a variant with 2 rows per warp would halve them.
 * Accumulators are NT registers (NT a template parameter; every loop over tokens unrolled).
 */
#include "cu_common.h"
#include "cuk_ops.h"
#include "dequant_math.h"

enum { CUK_GEMV_WARPS = 4 };

/* nvcc unrolls the loops over tokens (the accumulators stay registers); g++ (the shim) has no
 * such pragma */
#if defined(__CUDACC__)
#define CUK_UNROLL _Pragma("unroll")
#else
#define CUK_UNROLL
#endif

/* ---- helpers ---- */

/* c + the dot product of the 4 signed bytes of a and b */
static __device__ inline int cuk__dp4a(int a, int b, int c) {
#if defined(__CUDA_ARCH__)
    return __dp4a(a, b, c);
#else
    for (int k = 0; k < 4; k++) c += (int)(int8_t)(a >> (8 * k)) * (int)(int8_t)(b >> (8 * k));
    return c;
#endif
}

/* c + the dot product of 16 signed bytes: the words a0..a3 times the int4 x */
static __device__ inline int cuk__dp16(int a0, int a1, int a2, int a3, int4 x, int c) {
    return cuk__dp4a(a3, x.w, cuk__dp4a(a2, x.z, cuk__dp4a(a1, x.y, cuk__dp4a(a0, x.x, c))));
}

/* bytes of v (each <= 127) minus bytes of k (each <= 128), per byte, without borrows */
static __device__ inline int cuk__sub_bytes(uint32_t v, uint32_t k) {
    return (int)(((v | 0x80808080u) - k) ^ 0x80808080u);
}

/* 4 bytes at a 2-byte aligned address */
static __device__ inline uint32_t cuk__ld_u32_a2(const uint8_t *p) {
    const uint16_t *q = (const uint16_t *)p;
    return (uint32_t)q[0] | ((uint32_t)q[1] << 16);
}

static __device__ inline float cuk__f16(const uint8_t *p) {
    return qt_f16_to_f32(*(const uint16_t *)p);
}

static __device__ inline int cuk__ld_i32(const int8_t *p) { return *(const int *)p; }

/* every lane gets the warp's sums; lane t < NT stores token t's */
template <int NT>
static __device__ inline void cuk__store(float *out, const float *acc, int N, int n, int lane) {
CUK_UNROLL
    for (int t = 0; t < NT; t++) {
        float v = acc[t];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == t) out[(size_t)t * N + n] = v;
    }
}

#define CUK__ROW_SETUP()                                                      \
    const int lane = threadIdx.x % CU_WARP;                                   \
    const int n = blockIdx.x * CUK_GEMV_WARPS + threadIdx.x / CU_WARP;        \
    if (n >= N) return;                                                       \
    const uint8_t *row = w + (size_t)n * row_stride;                          \
    float acc[NT];                                                            \
    CUK_UNROLL for (int t = 0; t < NT; t++) acc[t] = 0.0f;

/* ---- activation conversion (scratch), bit for bit the CPU's from_float ---- */

/* x (T*K floats, blocks of 32) -> xq int8 + xd f32 (the f16 scale, widened); a warp per block */
__global__ void cuk__quant_q8_0(const float *__restrict__ x, int8_t *__restrict__ xq,
                                float *__restrict__ xd, size_t n_blocks) {
    const size_t b = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / CU_WARP;
    const int lane = threadIdx.x % CU_WARP;
    if (b >= n_blocks) return;
    const float v = x[b * QK8_0 + lane];
    const float av = fabsf(v);
    float amax = av > 0.0f ? av : 0.0f;   /* a nan is skipped, as the CPU's loop skips it */
    for (int o = 16; o > 0; o >>= 1) {
        const float u = __shfl_xor_sync(0xffffffffu, amax, o);
        amax = u > amax ? u : amax;
    }
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    if (lane == 0) xd[b] = qt_f16_to_f32(qt_f32_to_f16(d));
    xq[b * QK8_0 + lane] = qt_q8_round(v, id);
}

/* x (T*K floats, blocks of 256) -> xq int8 + xd f32 + xbs int32 (sums of 16); a warp per block,
 * 8 elements per lane */
__global__ void cuk__quant_q8_K(const float *__restrict__ x, int8_t *__restrict__ xq,
                                float *__restrict__ xd, int *__restrict__ xbs, size_t n_blocks) {
    const size_t b = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / CU_WARP;
    const int lane = threadIdx.x % CU_WARP;
    if (b >= n_blocks) return;
    const float *xb = x + b * QK_K + 8 * lane;
    /* the first element of largest |x| (the CPU's strict > in element order; nan skipped) */
    float best = 0.0f;
    int bi = QK_K;
    for (int k = 0; k < 8; k++) {
        const float a = fabsf(xb[k]);
        if (a > best) {
            best = a;
            bi = 8 * lane + k;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ob > best || (ob == best && oi < bi)) {
            best = ob;
            bi = oi;
        }
    }
    int8_t *q = xq + b * QK_K + 8 * lane;
    int s = 0;
    if (best == 0.0f) {
        for (int k = 0; k < 8; k++) q[k] = 0;
        if (lane == 0) xd[b] = 0.0f;
    } else {
        const float iscale = -127.0f / x[b * QK_K + bi];
        for (int k = 0; k < 8; k++) {
            q[k] = qt_q8_round(xb[k], iscale);
            s += q[k];
        }
        if (lane == 0) xd[b] = 1.0f / iscale;
    }
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if (!(lane & 1)) xbs[b * (QK_K / 16) + lane / 2] = s;
}

/* xr = x rounded to f16 (type QT_F16) or bf16, widened back to f32 */
__global__ void cuk__round_x(const float *__restrict__ x, float *__restrict__ xr, size_t n,
                             int type) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        xr[i] = type == QT_F16 ? qt_f16_to_f32(qt_f32_to_f16(x[i]))
                               : qt_bf16_to_f32(qt_f32_to_bf16(x[i]));
}

/* ---- the GEMV kernels: one warp per row n ---- */

/* bits 0..3 of b at bit 4 of bytes 0..3: the fifth bits of 4 elements */
static __device__ inline uint32_t cuk__spread4(uint32_t b) {
    return ((b & 1u) << 4) | ((b & 2u) << 11) | ((b & 4u) << 18) | ((b & 8u) << 25);
}

/* IQ4_NL's levels (int8) of the 4 nibbles held in the bytes of u */
static __device__ inline int cuk__iq4nl4(uint32_t u) {
    uint32_t r = 0;
CUK_UNROLL
    for (int k = 0; k < 4; k++)
        r |= (uint32_t)(uint8_t)qt_iq4nl_level((int)((u >> (8 * k)) & 0xFu)) << (8 * k);
    return (int)r;
}

/* The 32-element types of 18-24 B blocks: Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL. 4 lanes per block,
 * lane j takes quant bytes 4j..4j+3 (elements 4j.. in the low nibbles, 16+4j.. in the high);
 * Q5_0/Q5_1 add bits 4j.. and 16+4j.. of qh as the fifth bit, IQ4_NL maps each nibble to its
 * level; 8 blocks per warp step. Q4_1/Q5_1 (x = d q + m, q unsigned) add m times the
 * activations' sum over the lane's 8 elements (a dp4a with ones). */
template <int NT, int TYPE>
__global__ void cuk__gemv_q32(float *__restrict__ out, const uint8_t *__restrict__ w,
                              size_t row_stride, int N, int K, const int8_t *__restrict__ xq,
                              const float *__restrict__ xd) {
    CUK__ROW_SETUP();
    constexpr bool HM = TYPE == QT_Q4_1 || TYPE == QT_Q5_1;   /* an f16 m after d */
    constexpr bool H5 = TYPE == QT_Q5_0 || TYPE == QT_Q5_1;   /* 4 bytes of qh next */
    constexpr int QH = HM ? 4 : 2, QS = QH + (H5 ? 4 : 0), BB = QS + QK4_0 / 2;
    const int nb = K / QK4_0, j = lane & 3;
    for (int ib = lane >> 2; ib < nb; ib += 8) {
        const uint8_t *b = row + (size_t)ib * BB;
        const float dw = cuk__f16(b);
        const float mw = HM ? cuk__f16(b + 2) : 0.0f;
        const uint32_t q = cuk__ld_u32_a2(b + QS + 4 * j);
        uint32_t l = q & 0x0F0F0F0Fu, h = (q >> 4) & 0x0F0F0F0Fu;
        if (H5) {
            const uint32_t qh = cuk__ld_u32_a2(b + QH);
            l |= cuk__spread4((qh >> (4 * j)) & 0xFu);
            h |= cuk__spread4((qh >> (16 + 4 * j)) & 0xFu);
        }
        int lo, hi;
        if (TYPE == QT_Q4_0) {
            lo = cuk__sub_bytes(l, 0x08080808u);
            hi = cuk__sub_bytes(h, 0x08080808u);
        } else if (TYPE == QT_Q5_0) {
            lo = cuk__sub_bytes(l, 0x10101010u);
            hi = cuk__sub_bytes(h, 0x10101010u);
        } else if (TYPE == QT_IQ4_NL) {
            lo = cuk__iq4nl4(l);
            hi = cuk__iq4nl4(h);
        } else {
            lo = (int)l;
            hi = (int)h;
        }
CUK_UNROLL
        for (int t = 0; t < NT; t++) {
            const int8_t *xb = xq + (size_t)t * K + (size_t)ib * QK8_0 + 4 * j;
            const int x0 = cuk__ld_i32(xb), x1 = cuk__ld_i32(xb + 16);
            const int s = cuk__dp4a(hi, x1, cuk__dp4a(lo, x0, 0));
            const float dx = xd[(size_t)t * nb + ib];
            if (HM) {
                const int sx = cuk__dp4a(0x01010101, x1, cuk__dp4a(0x01010101, x0, 0));
                acc[t] += (float)s * (dw * dx) + (float)sx * (mw * dx);
            } else {
                acc[t] += (float)s * (dw * dx);
            }
        }
    }
    cuk__store<NT>(out, acc, N, n, lane);
}

/* Q8_0 (34 B blocks): 4 lanes per block, lane j takes quants 8j..8j+7; 8 blocks per step */
template <int NT>
__global__ void cuk__gemv_q8_0(float *__restrict__ out, const uint8_t *__restrict__ w,
                               size_t row_stride, int N, int K, const int8_t *__restrict__ xq,
                               const float *__restrict__ xd) {
    CUK__ROW_SETUP();
    const int nb = K / QK8_0, j = lane & 3;
    for (int ib = lane >> 2; ib < nb; ib += 8) {
        const uint8_t *b = row + (size_t)ib * sizeof(block_q8_0);
        const float dw = cuk__f16(b);
        const int q0 = (int)cuk__ld_u32_a2(b + 2 + 8 * j);
        const int q1 = (int)cuk__ld_u32_a2(b + 6 + 8 * j);
CUK_UNROLL
        for (int t = 0; t < NT; t++) {
            const int8_t *xb = xq + (size_t)t * K + (size_t)ib * QK8_0 + 8 * j;
            const int s = cuk__dp4a(q1, cuk__ld_i32(xb + 4), cuk__dp4a(q0, cuk__ld_i32(xb), 0));
            acc[t] += (float)s * (dw * xd[(size_t)t * nb + ib]);
        }
    }
    cuk__store<NT>(out, acc, N, n, lane);
}

/* 16 bytes at p: one vector load when a16, else four 4-byte (A4) or eight 2-byte loads */
template <bool A4>
static __device__ inline uint4 cuk__ld16(const uint8_t *p, int a16) {
    if (a16) return *(const uint4 *)p;
    if (A4) {
        const uint32_t *q = (const uint32_t *)p;
        return make_uint4(q[0], q[1], q[2], q[3]);
    }
    return make_uint4(cuk__ld_u32_a2(p), cuk__ld_u32_a2(p + 4), cuk__ld_u32_a2(p + 8),
                      cuk__ld_u32_a2(p + 12));
}

/* Q4_K (144 B) and Q5_K (176 B) super-blocks: 8 lanes per super-block; lane j takes 16 quant
 * bytes of chunk c = j/2 (half j%2): 16 elements of sub-block 2c (low nibbles) and 16 of 2c+1
 * (high); Q5_K adds bits 2c and 2c+1 of the same 16 qh bytes as the fifth bit; 4 super-blocks
 * per step. a16: the row's quants may be read as 16-byte vectors (Q4_K is 4-byte aligned
 * otherwise, Q5_K 2-byte). */
template <int NT, int TYPE>
__global__ void cuk__gemv_q45_K(float *__restrict__ out, const uint8_t *__restrict__ w,
                                size_t row_stride, int N, int K, const int8_t *__restrict__ xq,
                                const float *__restrict__ xd, const int *__restrict__ xbs,
                                int a16) {
    CUK__ROW_SETUP();
    constexpr bool H5 = TYPE == QT_Q5_K;
    constexpr int QS = H5 ? 48 : 16, BB = H5 ? (int)sizeof(block_q5_K) : (int)sizeof(block_q4_K);
    const int nsb = K / QK_K, j = lane & 7, c = j >> 1, hf = j & 1;
    for (int ib = lane >> 3; ib < nsb; ib += 4) {
        const uint8_t *b = row + (size_t)ib * BB;
        const float dw = cuk__f16(b), dmin = cuk__f16(b + 2);
        uint8_t sc1, m1, sc2, m2;
        qt_q4k_scale_min(2 * c, b + 4, &sc1, &m1);
        qt_q4k_scale_min(2 * c + 1, b + 4, &sc2, &m2);
        const uint4 v = cuk__ld16<!H5>(b + QS + 32 * c + 16 * hf, a16);
        uint32_t l0 = v.x & 0x0F0F0F0Fu, l1 = v.y & 0x0F0F0F0Fu;
        uint32_t l2 = v.z & 0x0F0F0F0Fu, l3 = v.w & 0x0F0F0F0Fu;
        uint32_t h0 = (v.x >> 4) & 0x0F0F0F0Fu, h1 = (v.y >> 4) & 0x0F0F0F0Fu;
        uint32_t h2 = (v.z >> 4) & 0x0F0F0F0Fu, h3 = (v.w >> 4) & 0x0F0F0F0Fu;
        if (H5) {
            const uint4 u = cuk__ld16<false>(b + 16 + 16 * hf, a16);
            const int sl = 2 * c, sh = 2 * c + 1;
            l0 |= ((u.x >> sl) & 0x01010101u) << 4;
            l1 |= ((u.y >> sl) & 0x01010101u) << 4;
            l2 |= ((u.z >> sl) & 0x01010101u) << 4;
            l3 |= ((u.w >> sl) & 0x01010101u) << 4;
            h0 |= ((u.x >> sh) & 0x01010101u) << 4;
            h1 |= ((u.y >> sh) & 0x01010101u) << 4;
            h2 |= ((u.z >> sh) & 0x01010101u) << 4;
            h3 |= ((u.w >> sh) & 0x01010101u) << 4;
        }
CUK_UNROLL
        for (int t = 0; t < NT; t++) {
            const int8_t *xb = xq + (size_t)t * K + (size_t)ib * QK_K + 64 * c + 16 * hf;
            const int4 x0 = *(const int4 *)xb, x1 = *(const int4 *)(xb + 32);
            const int s1 = cuk__dp16((int)l0, (int)l1, (int)l2, (int)l3, x0, 0);
            const int s2 = cuk__dp16((int)h0, (int)h1, (int)h2, (int)h3, x1, 0);
            const int *bs = xbs + (size_t)t * (K / 16) + (size_t)ib * 16 + 4 * c + hf;
            const int isum = sc1 * s1 + sc2 * s2, msum = m1 * bs[0] + m2 * bs[2];
            const float dx = xd[(size_t)t * nsb + ib];
            acc[t] += (dw * dx) * (float)isum - (dmin * dx) * (float)msum;
        }
    }
    cuk__store<NT>(out, acc, N, n, lane);
}

/* IQ4_XS (136 B super-blocks of 8 sub-blocks of 32): 8 lanes per super-block, lane j takes
 * sub-block j: its 16 quant bytes (elements 32j.. in the low nibbles, 32j+16.. in the high),
 * each nibble mapped to IQ4_NL's level, times the sub-block's signed 6-bit scale; 4
 * super-blocks per step; 2-byte loads (the blocks are 8-byte aligned at best) */
template <int NT>
__global__ void cuk__gemv_iq4_xs(float *__restrict__ out, const uint8_t *__restrict__ w,
                                 size_t row_stride, int N, int K, const int8_t *__restrict__ xq,
                                 const float *__restrict__ xd) {
    CUK__ROW_SETUP();
    const int nsb = K / QK_K, j = lane & 7;
    for (int ib = lane >> 3; ib < nsb; ib += 4) {
        const uint8_t *b = row + (size_t)ib * sizeof(block_iq4_xs);
        const float dw = cuk__f16(b);
        const int sc = qt_iq4xs_scale(j, *(const uint16_t *)(b + 2), b + 4);
        const uint4 v = cuk__ld16<false>(b + 8 + 16 * j, 0);
        const int l0 = cuk__iq4nl4(v.x & 0x0F0F0F0Fu), l1 = cuk__iq4nl4(v.y & 0x0F0F0F0Fu);
        const int l2 = cuk__iq4nl4(v.z & 0x0F0F0F0Fu), l3 = cuk__iq4nl4(v.w & 0x0F0F0F0Fu);
        const int h0 = cuk__iq4nl4((v.x >> 4) & 0x0F0F0F0Fu), h1 = cuk__iq4nl4((v.y >> 4) & 0x0F0F0F0Fu);
        const int h2 = cuk__iq4nl4((v.z >> 4) & 0x0F0F0F0Fu), h3 = cuk__iq4nl4((v.w >> 4) & 0x0F0F0F0Fu);
CUK_UNROLL
        for (int t = 0; t < NT; t++) {
            const int8_t *xb = xq + (size_t)t * K + (size_t)ib * QK_K + 32 * j;
            const int4 x0 = *(const int4 *)xb, x1 = *(const int4 *)(xb + 16);
            const int s = cuk__dp16(h0, h1, h2, h3, x1, cuk__dp16(l0, l1, l2, l3, x0, 0));
            acc[t] += (dw * xd[(size_t)t * nsb + ib]) * (float)(sc * s);
        }
    }
    cuk__store<NT>(out, acc, N, n, lane);
}

/* Q6_K (210 B super-blocks): 16 lanes per super-block; lane j takes, in half h = j/8, the 4
 * positions l = 4(j%8).. of each of the half's 4 element groups (l, 32+l, 64+l, 96+l); 2
 * super-blocks per step */
template <int NT>
__global__ void cuk__gemv_q6_K(float *__restrict__ out, const uint8_t *__restrict__ w,
                               size_t row_stride, int N, int K, const int8_t *__restrict__ xq,
                               const float *__restrict__ xd) {
    CUK__ROW_SETUP();
    const int nsb = K / QK_K, j = lane & 15, h = j >> 3, l4 = 4 * (j & 7);
    const int g = 8 * h + (l4 >> 4);
    for (int ib = lane >> 4; ib < nsb; ib += 2) {
        const uint8_t *b = row + (size_t)ib * sizeof(block_q6_K);
        const uint32_t A = cuk__ld_u32_a2(b + 64 * h + l4);
        const uint32_t B = cuk__ld_u32_a2(b + 64 * h + 32 + l4);
        const uint32_t Q = cuk__ld_u32_a2(b + 128 + 32 * h + l4);
        const int8_t *sc = (const int8_t *)(b + 192);
        const int sa = sc[g], sb = sc[g + 2], scc = sc[g + 4], sd = sc[g + 6];
        const float dw = cuk__f16(b + 208);
        const int q1 = cuk__sub_bytes((A & 0x0F0F0F0Fu) | ((Q & 0x03030303u) << 4), 0x20202020u);
        const int q2 = cuk__sub_bytes((B & 0x0F0F0F0Fu) | (((Q >> 2) & 0x03030303u) << 4), 0x20202020u);
        const int q3 = cuk__sub_bytes(((A >> 4) & 0x0F0F0F0Fu) | (((Q >> 4) & 0x03030303u) << 4), 0x20202020u);
        const int q4 = cuk__sub_bytes(((B >> 4) & 0x0F0F0F0Fu) | (((Q >> 6) & 0x03030303u) << 4), 0x20202020u);
CUK_UNROLL
        for (int t = 0; t < NT; t++) {
            const int8_t *xb = xq + (size_t)t * K + (size_t)ib * QK_K + 128 * h + l4;
            const int isum = sa * cuk__dp4a(q1, cuk__ld_i32(xb), 0) +
                             sb * cuk__dp4a(q2, cuk__ld_i32(xb + 32), 0) +
                             scc * cuk__dp4a(q3, cuk__ld_i32(xb + 64), 0) +
                             sd * cuk__dp4a(q4, cuk__ld_i32(xb + 96), 0);
            acc[t] += (dw * xd[(size_t)t * nsb + ib]) * (float)isum;
        }
    }
    cuk__store<NT>(out, acc, N, n, lane);
}

/* Q2_K (84 B) and Q3_K (110 B) super-blocks of 16 sub-blocks of 16, in Q6_K's mapping: 16
 * lanes per super-block; lane j takes, in half h = j/8, positions l = 4(j%8)..+3 of the half's
 * 4 groups 32k + l (k = 0..3), whose 2-bit levels are bits 2k..2k+1 of qs bytes 32h + l (Q3_K:
 * minus 4 unless bit 4h+k of hmask byte l is set) and whose sub-block is 8h + 2k + l/16; 2
 * super-blocks per step. Q2_K's mins take the activations' sum over the lane's 4 elements of
 * each group (a dp4a with ones; bsums cover 16). */
template <int NT, int TYPE>
__global__ void cuk__gemv_q23_K(float *__restrict__ out, const uint8_t *__restrict__ w,
                                size_t row_stride, int N, int K, const int8_t *__restrict__ xq,
                                const float *__restrict__ xd) {
    CUK__ROW_SETUP();
    constexpr bool Q3 = TYPE == QT_Q3_K;
    constexpr int BB = Q3 ? (int)sizeof(block_q3_K) : (int)sizeof(block_q2_K);
    constexpr int QS = Q3 ? 32 : 16, DO = Q3 ? 108 : 80;   /* offsets of qs and d */
    const int nsb = K / QK_K, j = lane & 15, h = j >> 3, l4 = 4 * (j & 7);
    for (int ib = lane >> 4; ib < nsb; ib += 2) {
        const uint8_t *b = row + (size_t)ib * BB;
        const uint32_t Q = cuk__ld_u32_a2(b + QS + 32 * h + l4);
        const uint32_t M = Q3 ? cuk__ld_u32_a2(b + l4) : 0u;   /* Q3_K's hmask bytes */
        int q[4], sc[4], mn[4];
CUK_UNROLL
        for (int k = 0; k < 4; k++) {
            const uint32_t v = (Q >> (2 * k)) & 0x03030303u;
            const int sb = 8 * h + 2 * k + (l4 >> 4);
            if (Q3) {
                q[k] = cuk__sub_bytes(v | (((M >> (4 * h + k)) & 0x01010101u) << 2), 0x04040404u);
                sc[k] = qt_q3k_scale(sb, b + 96);
                mn[k] = 0;
            } else {
                q[k] = (int)v;
                sc[k] = b[sb] & 0xF;
                mn[k] = b[sb] >> 4;
            }
        }
        const float dw = cuk__f16(b + DO), dmin = Q3 ? 0.0f : cuk__f16(b + DO + 2);
CUK_UNROLL
        for (int t = 0; t < NT; t++) {
            const int8_t *xb = xq + (size_t)t * K + (size_t)ib * QK_K + 128 * h + l4;
            int isum = 0, msum = 0;
CUK_UNROLL
            for (int k = 0; k < 4; k++) {
                const int xk = cuk__ld_i32(xb + 32 * k);
                isum += sc[k] * cuk__dp4a(q[k], xk, 0);
                if (!Q3) msum += mn[k] * cuk__dp4a(0x01010101, xk, 0);
            }
            const float dx = xd[(size_t)t * nsb + ib];
            if (Q3) acc[t] += (dw * dx) * (float)isum;
            else acc[t] += (dw * dx) * (float)isum - (dmin * dx) * (float)msum;
        }
    }
    cuk__store<NT>(out, acc, N, n, lane);
}

/* weight element k of a float-type row */
template <int TYPE>
static __device__ inline float cuk__wf(const uint8_t *row, int k) {
    if (TYPE == QT_F32) return ((const float *)row)[k];
    if (TYPE == QT_F16) return qt_f16_to_f32(((const uint16_t *)row)[k]);
    return qt_bf16_to_f32(((const uint16_t *)row)[k]);
}

/* 16 bytes of weights at k (VW elements) times xr */
template <int NT, int TYPE>
static __device__ inline void cuk__fvec(float *acc, const uint8_t *row, const float *xr, int K,
                                        int k) {
    const uint4 u = *(const uint4 *)(row + (size_t)k * (TYPE == QT_F32 ? 4 : 2));
    float wv[8];
    if (TYPE == QT_F32) {
        wv[0] = __uint_as_float(u.x); wv[1] = __uint_as_float(u.y);
        wv[2] = __uint_as_float(u.z); wv[3] = __uint_as_float(u.w);
    } else {
        const uint32_t p[4] = {u.x, u.y, u.z, u.w};
CUK_UNROLL
        for (int e = 0; e < 8; e++) {
            const uint16_t hb = (uint16_t)(p[e / 2] >> (16 * (e % 2)));
            wv[e] = TYPE == QT_F16 ? qt_f16_to_f32(hb) : qt_bf16_to_f32(hb);
        }
    }
    constexpr int VW = TYPE == QT_F32 ? 4 : 8;
CUK_UNROLL
    for (int t = 0; t < NT; t++) {
        const float4 *xv = (const float4 *)(xr + (size_t)t * K + k);
CUK_UNROLL
        for (int q = 0; q < VW / 4; q++) {
            const float4 a = xv[q];
            acc[t] = fmaf(wv[4 * q + 0], a.x, acc[t]);
            acc[t] = fmaf(wv[4 * q + 1], a.y, acc[t]);
            acc[t] = fmaf(wv[4 * q + 2], a.z, acc[t]);
            acc[t] = fmaf(wv[4 * q + 3], a.w, acc[t]);
        }
    }
}

/* F32, F16, BF16 rows times xr (T,K) f32 (already rounded to the weight's type); vec: 16-byte
 * loads of the row (it and xr aligned, K a multiple of 8), else one element per lane */
template <int NT, int TYPE>
static __device__ inline void cuk__gemv_float(float *out, const uint8_t *w, size_t row_stride,
                                              int N, int K, const float *xr, int vec) {
    CUK__ROW_SETUP();
    if (vec) {
        constexpr int VW = TYPE == QT_F32 ? 4 : 8;
        for (int k = lane * VW; k < K; k += CU_WARP * VW) cuk__fvec<NT, TYPE>(acc, row, xr, K, k);
    } else {
        for (int k = lane; k < K; k += CU_WARP) {
            const float wk = cuk__wf<TYPE>(row, k);
CUK_UNROLL
            for (int t = 0; t < NT; t++) acc[t] = fmaf(wk, xr[(size_t)t * K + k], acc[t]);
        }
    }
    cuk__store<NT>(out, acc, N, n, lane);
}

template <int NT>
__global__ void cuk__gemv_f32(float *__restrict__ out, const uint8_t *__restrict__ w,
                              size_t row_stride, int N, int K, const float *__restrict__ xr,
                              int vec) {
    cuk__gemv_float<NT, QT_F32>(out, w, row_stride, N, K, xr, vec);
}

template <int NT>
__global__ void cuk__gemv_f16(float *__restrict__ out, const uint8_t *__restrict__ w,
                              size_t row_stride, int N, int K, const float *__restrict__ xr,
                              int vec) {
    cuk__gemv_float<NT, QT_F16>(out, w, row_stride, N, K, xr, vec);
}

template <int NT>
__global__ void cuk__gemv_bf16(float *__restrict__ out, const uint8_t *__restrict__ w,
                               size_t row_stride, int N, int K, const float *__restrict__ xr,
                               int vec) {
    cuk__gemv_float<NT, QT_BF16>(out, w, row_stride, N, K, xr, vec);
}

/* ---- host side ---- */

static size_t cuk__al16(size_t n) { return (n + 15) & ~(size_t)15; }

/* the type x is converted to for weights of type (the CPU's vec_dot_type); -1: no kernel */
static int cuk__vdt(int type) {
    switch (type) {
    case QT_F32: case QT_F16: case QT_BF16: return type;
    case QT_Q8_0: case QT_Q4_0: case QT_Q4_1: case QT_Q5_0: case QT_Q5_1: case QT_IQ4_NL:
        return QT_Q8_0;
    case QT_Q2_K: case QT_Q3_K: case QT_Q4_K: case QT_Q5_K: case QT_Q6_K: case QT_IQ4_XS:
        return QT_Q8_K;
    default: return -1;
    }
}

/* elements per weight block (the activations' block for the quantized types); 0: no kernel */
static int cuk__block(int type) {
    const int v = cuk__vdt(type);
    return v == QT_Q8_0 ? QK8_0 : v == QT_Q8_K ? QK_K : v >= 0 ? 1 : 0;
}

/* scratch: Q8_0 / Q8_K types: xq (T*K int8) | xd (T*K/bs f32) | Q8_K: xbs (T*K/16 int32);
 * F16 / BF16: xr (T*K f32) */
extern "C" size_t cuk_gemv_scratch_bytes(int type, int64_t K, int T) {
    const size_t n = (size_t)K * (size_t)(T > 0 ? T : 0);
    switch (cuk__vdt(type)) {
    case QT_Q8_0: return cuk__al16(n) + cuk__al16(n / QK8_0 * sizeof(float));
    case QT_Q8_K:
        return cuk__al16(n) + cuk__al16(n / QK_K * sizeof(float)) + cuk__al16(n / 16 * sizeof(int));
    case QT_F16: case QT_BF16: return n * sizeof(float);
    default: return 0;
    }
}

#define CUK__T_SWITCH(KERN, ...)                                               \
    switch (T) {                                                               \
    case 1: CU_LAUNCH(KERN<1>, grid, block, 0, s, __VA_ARGS__); break;         \
    case 2: CU_LAUNCH(KERN<2>, grid, block, 0, s, __VA_ARGS__); break;         \
    case 3: CU_LAUNCH(KERN<3>, grid, block, 0, s, __VA_ARGS__); break;         \
    case 4: CU_LAUNCH(KERN<4>, grid, block, 0, s, __VA_ARGS__); break;         \
    case 5: CU_LAUNCH(KERN<5>, grid, block, 0, s, __VA_ARGS__); break;         \
    case 6: CU_LAUNCH(KERN<6>, grid, block, 0, s, __VA_ARGS__); break;         \
    case 7: CU_LAUNCH(KERN<7>, grid, block, 0, s, __VA_ARGS__); break;         \
    default: CU_LAUNCH(KERN<8>, grid, block, 0, s, __VA_ARGS__); break;        \
    }

/* The kernels with a type parameter (cuk__gemv_q32, cuk__gemv_q45_K, cuk__gemv_q23_K): a table of
 * the 8 instances NT = 1..8 for type TY, launched for T tokens (a function template is no
 * macro argument of CUK__T_SWITCH) */
template <class KT, class... A>
static void cuk__launch_t(const KT (&ks)[8], dim3 grid, dim3 block, cudaStream_t s, int T,
                          A... args) {
    const KT k = ks[T - 1];
    CU_LAUNCH(k, grid, block, 0, s, args...);
}

#define CUK__TY_CASE(TY, KERN, ...)                                                         \
    case TY: {                                                                              \
        static const decltype(&KERN<1, TY>) ks[8] = {KERN<1, TY>, KERN<2, TY>, KERN<3, TY>, \
                                                     KERN<4, TY>, KERN<5, TY>, KERN<6, TY>, \
                                                     KERN<7, TY>, KERN<8, TY>};             \
        cuk__launch_t(ks, grid, block, s, T, __VA_ARGS__);                                  \
        break;                                                                              \
    }

extern "C" int cuk_gemv(float *out, const void *w, int type, int N, int K, size_t row_stride,
                        const float *x, int T, void *scratch, cuk_stream stream) {
    const int bs = cuk__block(type);
    const size_t al = type == QT_F32 || type == QT_Q4_K ? 4 : 2;   /* the loads' alignment */
    if (bs == 0 || T < 1 || T > 8 || N < 0 || K <= 0 || K % bs || row_stride % al ||
        (uintptr_t)w % al)
        return (int)cudaErrorInvalidValue;
    if (N == 0) return 0;
    const cudaStream_t s = (cudaStream_t)stream;
    const size_t n = (size_t)T * K;
    const uint8_t *wb = (const uint8_t *)w;
    int8_t *xq = (int8_t *)scratch;
    float *xd = (float *)((char *)scratch + cuk__al16(n));
    const int qthreads = 256;
    const dim3 grid((unsigned)((N + CUK_GEMV_WARPS - 1) / CUK_GEMV_WARPS));
    const dim3 block(CUK_GEMV_WARPS * CU_WARP);
    int err;
    switch (cuk__vdt(type)) {
    case QT_Q8_0: {
        const size_t nb = n / QK8_0;
        CU_LAUNCH(cuk__quant_q8_0, dim3((unsigned)((nb * CU_WARP + qthreads - 1) / qthreads)),
                  dim3(qthreads), 0, s, x, xq, xd, nb);
        if ((err = CU_LAST_ERROR()) != 0) return err;
        switch (type) {
        case QT_Q8_0: CUK__T_SWITCH(cuk__gemv_q8_0, out, wb, row_stride, N, K, xq, xd) break;
        CUK__TY_CASE(QT_Q4_0, cuk__gemv_q32, out, wb, row_stride, N, K, xq, xd)
        CUK__TY_CASE(QT_Q4_1, cuk__gemv_q32, out, wb, row_stride, N, K, xq, xd)
        CUK__TY_CASE(QT_Q5_0, cuk__gemv_q32, out, wb, row_stride, N, K, xq, xd)
        CUK__TY_CASE(QT_Q5_1, cuk__gemv_q32, out, wb, row_stride, N, K, xq, xd)
        CUK__TY_CASE(QT_IQ4_NL, cuk__gemv_q32, out, wb, row_stride, N, K, xq, xd)
        }
        break;
    }
    case QT_Q8_K: {
        const size_t nb = n / QK_K;
        int *xbs = (int *)((char *)xd + cuk__al16(nb * sizeof(float)));
        CU_LAUNCH(cuk__quant_q8_K, dim3((unsigned)((nb * CU_WARP + qthreads - 1) / qthreads)),
                  dim3(qthreads), 0, s, x, xq, xd, xbs, nb);
        if ((err = CU_LAST_ERROR()) != 0) return err;
        const int a16 = (uintptr_t)w % 16 == 0 && row_stride % 16 == 0;
        switch (type) {
        case QT_Q6_K: CUK__T_SWITCH(cuk__gemv_q6_K, out, wb, row_stride, N, K, xq, xd) break;
        CUK__TY_CASE(QT_Q4_K, cuk__gemv_q45_K, out, wb, row_stride, N, K, xq, xd, xbs, a16)
        CUK__TY_CASE(QT_Q5_K, cuk__gemv_q45_K, out, wb, row_stride, N, K, xq, xd, xbs, a16)
        CUK__TY_CASE(QT_Q2_K, cuk__gemv_q23_K, out, wb, row_stride, N, K, xq, xd)
        CUK__TY_CASE(QT_Q3_K, cuk__gemv_q23_K, out, wb, row_stride, N, K, xq, xd)
        case QT_IQ4_XS: CUK__T_SWITCH(cuk__gemv_iq4_xs, out, wb, row_stride, N, K, xq, xd) break;
        }
        break;
    }
    default: {   /* float types */
        const float *xr = x;
        if (type != QT_F32) {
            float *r = (float *)scratch;
            const size_t b = (n + qthreads - 1) / qthreads;
            CU_LAUNCH(cuk__round_x, dim3((unsigned)(b < 4096 ? b : 4096)), dim3(qthreads), 0, s, x,
                      r, n, type);
            if ((err = CU_LAST_ERROR()) != 0) return err;
            xr = r;
        }
        const int vec = K % 8 == 0 && (uintptr_t)w % 16 == 0 && row_stride % 16 == 0 &&
                        (uintptr_t)xr % 16 == 0;
        if (type == QT_F32) {
            CUK__T_SWITCH(cuk__gemv_f32, out, wb, row_stride, N, K, xr, vec)
        } else if (type == QT_F16) {
            CUK__T_SWITCH(cuk__gemv_f16, out, wb, row_stride, N, K, xr, vec)
        } else {
            CUK__T_SWITCH(cuk__gemv_bf16, out, wb, row_stride, N, K, xr, vec)
        }
        break;
    }
    }
    return CU_LAST_ERROR();
}
