/* kernels/dequant_math.h — one weight element from its GGUF block, and the activation
 * quantizers' rounding, shared by the CPU (kernels/cpu/quant.c) and the CUDA kernels
 * (kernels/cuda/k_dequant.cu, k_gemv.cu).
 *
 * qt_dq_<type>(row, e) is element e of a row stored in <type>'s blocks (layouts in qtypes.h),
 * written as the very float operations of the CPU's to_float in the same order, with products
 * and differences rounded on their own (om_mul_rn / om_sub_rn: nvcc would fuse d1*q - m1), so
 * the GPU's dequantized weights are the CPU's bit for bit. Each call is independent of the
 * others, which is what a GPU thread per element wants; the CPU's to_float loops over them.
 */
#ifndef SAMPAN_DEQUANT_MATH_H
#define SAMPAN_DEQUANT_MATH_H

#include <stdint.h>
#include <string.h>

#include "ops_math.h"
#include "qtypes.h"

static inline QT_HD float qt_dq_f32(const void *row, int64_t e) {
    return ((const float *)row)[e];
}

static inline QT_HD float qt_dq_f16(const void *row, int64_t e) {
    return qt_f16_to_f32(((const qt_f16 *)row)[e]);
}

static inline QT_HD float qt_dq_bf16(const void *row, int64_t e) {
    return qt_bf16_to_f32(((const qt_bf16 *)row)[e]);
}

/* x = d*q */
static inline QT_HD float qt_dq_q8_0(const void *row, int64_t e) {
    const block_q8_0 *b = (const block_q8_0 *)row + e / QK8_0;
    return om_mul_rn(qt_f16_to_f32(b->d), (float)b->qs[e % QK8_0]);
}

/* x = d*(q-8); byte j holds element j (low nibble) and element 16+j (high nibble) */
static inline QT_HD float qt_dq_q4_0(const void *row, int64_t e) {
    const block_q4_0 *b = (const block_q4_0 *)row + e / QK4_0;
    const int j = (int)(e % QK4_0);
    const int q = j < QK4_0 / 2 ? (b->qs[j] & 0xF) : (b->qs[j - QK4_0 / 2] >> 4);
    return om_mul_rn(qt_f16_to_f32(b->d), (float)(q - 8));
}

/* x = d*(q-16): the nibble as in Q4_0, its fifth bit bit j of the little-endian word qh */
static inline QT_HD float qt_dq_q5_0(const void *row, int64_t e) {
    const block_q5_0 *b = (const block_q5_0 *)row + e / QK4_0;
    const int j = (int)(e % QK4_0);
    const uint32_t qh = (uint32_t)b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 |
                        (uint32_t)b->qh[3] << 24;
    const int lo = j < QK4_0 / 2 ? (b->qs[j] & 0xF) : (b->qs[j - QK4_0 / 2] >> 4);
    const int q = lo | (int)((qh >> j) & 1u) << 4;
    return om_mul_rn(qt_f16_to_f32(b->d), (float)(q - 16));
}

/* the 4-bit value of element j of a 32-block's nibbles (low nibbles 0..15, high 16..31) */
static inline QT_HD int qt_nib32(const uint8_t *qs, int j) {
    return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
}

/* bit j of a little-endian 32-bit word stored as 4 bytes */
static inline QT_HD int qt_bit32(const uint8_t *qh, int j) {
    return (qh[j >> 3] >> (j & 7)) & 1;
}

/* x = d*q + m (q 0..15) */
static inline QT_HD float qt_dq_q4_1(const void *row, int64_t e) {
    const block_q4_1 *b = (const block_q4_1 *)row + e / QK4_0;
    const int q = qt_nib32(b->qs, (int)(e % QK4_0));
    return om_mul_rn(qt_f16_to_f32(b->d), (float)q) + qt_f16_to_f32(b->m);
}

/* x = d*q + m (q 0..31: the nibble, its fifth bit from qh) */
static inline QT_HD float qt_dq_q5_1(const void *row, int64_t e) {
    const block_q5_1 *b = (const block_q5_1 *)row + e / QK4_0;
    const int j = (int)(e % QK4_0);
    const int q = qt_nib32(b->qs, j) | qt_bit32(b->qh, j) << 4;
    return om_mul_rn(qt_f16_to_f32(b->d), (float)q) + qt_f16_to_f32(b->m);
}

/* QT_IQ4NL_VALUES[q] (q 0..15) from two words of its bytes instead of an array, which a
 * GPU thread indexing it by a loaded value would keep in local memory */
static inline QT_HD int qt_iq4nl_level(int q) {
    const uint64_t w = q < 8 ? 0xF6EADDCFBFAD9881ull : 0x7159453526190D01ull;
    return (int)(int8_t)(uint8_t)(w >> (8 * (q & 7)));
}

/* x = d*levels[q] */
static inline QT_HD float qt_dq_iq4_nl(const void *row, int64_t e) {
    const block_iq4_nl *b = (const block_iq4_nl *)row + e / QK4_0;
    return om_mul_rn(qt_f16_to_f32(b->d), (float)qt_iq4nl_level(qt_nib32(b->qs, (int)(e % QK4_0))));
}

/* 8 sub-blocks of 32: x = (d*sc[j])*q - dmin*m[j]; qs byte l of chunk c (64 elements) holds
 * element 64c+l in its low nibble and 64c+32+l in its high nibble */
static inline QT_HD float qt__dq_q45_K(qt_f16 d, qt_f16 dmin, const uint8_t *scales,
                                       const uint8_t *qs, const uint8_t *qh, int r) {
    const int c = r / 64, hi = (r % 64) >= 32, l = r % 32;
    uint8_t sc, m;
    qt_q4k_scale_min(2 * c + hi, scales, &sc, &m);
    const uint8_t byte = qs[32 * c + l];
    int q = hi ? byte >> 4 : byte & 0xF;
    if (qh) q |= ((qh[l] >> (2 * c + hi)) & 1) << 4;   /* Q5_K: the fifth bit, bit 2c+hi of qh[l] */
    const float d1 = om_mul_rn(qt_f16_to_f32(d), (float)sc);
    const float m1 = om_mul_rn(qt_f16_to_f32(dmin), (float)m);
    return om_sub_rn(om_mul_rn(d1, (float)q), m1);
}

static inline QT_HD float qt_dq_q4_K(const void *row, int64_t e) {
    const block_q4_K *b = (const block_q4_K *)row + e / QK_K;
    return qt__dq_q45_K(b->d, b->dmin, b->scales, b->qs, NULL, (int)(e % QK_K));
}

/* Q5_K: Q4_K's element with a fifth bit */
static inline QT_HD float qt_dq_q5_K(const void *row, int64_t e) {
    const block_q5_K *b = (const block_q5_K *)row + e / QK_K;
    return qt__dq_q45_K(b->d, b->dmin, b->scales, b->qs, b->qh, (int)(e % QK_K));
}

/* Q6_K: 16 sub-blocks of 16 with int8 scales; x = (d*scales[e/16])*(q-32). In each half of
 * 128 elements, ql byte l holds (low 4 bits) element l and element 64+l (high nibble), ql byte
 * 32+l holds elements 32+l and 96+l; qh byte l holds the 2 high bits of elements l, 32+l,
 * 64+l, 96+l at bit 0, 2, 4, 6. */
static inline QT_HD float qt_dq_q6_K(const void *row, int64_t e) {
    const block_q6_K *b = (const block_q6_K *)row + e / QK_K;
    const int r = (int)(e % QK_K), h = r / 128, e2 = r % 128;
    const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
    const int l = e2 & 31, part = e2 >> 5;
    const int lo = (part & 1) ? ql[32 + l] : ql[l];
    const int nib = (part & 2) ? (lo >> 4) : (lo & 0xF);
    const int q = (nib | (((qh[l] >> (2 * part)) & 3) << 4)) - 32;
    const float ds = om_mul_rn(qt_f16_to_f32(b->d), (float)b->scales[8 * h + e2 / 16]);
    return om_mul_rn(ds, (float)q);
}

/* Q2_K's 2-bit level (0..3) of element r (0..255) of a block: bits 2k..2k+1 of qs[32h+l] for
 * r = 128h+32k+l; Q3_K's low two bits are laid out the same way */
static inline QT_HD int qt_q2k_level(const uint8_t *qs, int r) {
    return (qs[32 * (r >> 7) + (r & 31)] >> (2 * ((r >> 5) & 3))) & 3;
}

/* Q3_K's signed level (-4..3) of element r: the Q2_K bits, minus 4 unless hmask's bit r/32 of
 * byte r%32 is set */
static inline QT_HD int qt_q3k_level(const block_q3_K *b, int r) {
    return qt_q2k_level(b->qs, r) - (((b->hmask[r & 31] >> (r >> 5)) & 1) ? 0 : 4);
}

/* IQ4_XS's level index (0..15) of element r: sub-block r/32 stored as an IQ4_NL block's nibbles */
static inline QT_HD int qt_iq4xs_index(const block_iq4_xs *b, int r) {
    return qt_nib32(b->qs + 16 * (r >> 5), r & 31);
}

/* Q2_K: 16 sub-blocks of 16; x = (d*sc)*q - dmin*m, sc and m the nibbles of scales[r/16] */
static inline QT_HD float qt_dq_q2_K(const void *row, int64_t e) {
    const block_q2_K *b = (const block_q2_K *)row + e / QK_K;
    const int r = (int)(e % QK_K);
    const uint8_t s = b->scales[r / 16];
    const float d1 = om_mul_rn(qt_f16_to_f32(b->d), (float)(s & 0xF));
    const float m1 = om_mul_rn(qt_f16_to_f32(b->dmin), (float)(s >> 4));
    return om_sub_rn(om_mul_rn(d1, (float)qt_q2k_level(b->qs, r)), m1);
}

/* Q3_K: 16 sub-blocks of 16; x = (d*scale[r/16])*level */
static inline QT_HD float qt_dq_q3_K(const void *row, int64_t e) {
    const block_q3_K *b = (const block_q3_K *)row + e / QK_K;
    const int r = (int)(e % QK_K);
    const float d1 = om_mul_rn(qt_f16_to_f32(b->d), (float)qt_q3k_scale(r / 16, b->scales));
    return om_mul_rn(d1, (float)qt_q3k_level(b, r));
}

/* IQ4_XS: 8 sub-blocks of 32; x = (d*scale[r/32])*levels[q] */
static inline QT_HD float qt_dq_iq4_xs(const void *row, int64_t e) {
    const block_iq4_xs *b = (const block_iq4_xs *)row + e / QK_K;
    const int r = (int)(e % QK_K);
    const float d1 = om_mul_rn(qt_f16_to_f32(b->d), (float)qt_iq4xs_scale(r / 32, b->scales_h, b->scales_l));
    return om_mul_rn(d1, (float)qt_iq4nl_level(qt_iq4xs_index(b, r)));
}

static inline QT_HD float qt_dq_q8_K(const void *row, int64_t e) {
    const block_q8_K *b = (const block_q8_K *)row + e / QK_K;
    return om_mul_rn(b->d, (float)b->qs[e % QK_K]);
}

/* Element e of a row of `type`, for the types above; 0 for any other type. */
static inline QT_HD float qt_dq(int type, const void *row, int64_t e) {
    switch (type) {
    case QT_F32: return qt_dq_f32(row, e);
    case QT_F16: return qt_dq_f16(row, e);
    case QT_BF16: return qt_dq_bf16(row, e);
    case QT_Q8_0: return qt_dq_q8_0(row, e);
    case QT_Q4_0: return qt_dq_q4_0(row, e);
    case QT_Q5_0: return qt_dq_q5_0(row, e);
    case QT_Q4_1: return qt_dq_q4_1(row, e);
    case QT_Q5_1: return qt_dq_q5_1(row, e);
    case QT_IQ4_NL: return qt_dq_iq4_nl(row, e);
    case QT_Q4_K: return qt_dq_q4_K(row, e);
    case QT_Q5_K: return qt_dq_q5_K(row, e);
    case QT_Q6_K: return qt_dq_q6_K(row, e);
    case QT_Q8_K: return qt_dq_q8_K(row, e);
    case QT_Q2_K: return qt_dq_q2_K(row, e);
    case QT_Q3_K: return qt_dq_q3_K(row, e);
    case QT_IQ4_XS: return qt_dq_iq4_xs(row, e);
    default: return 0.0f;
    }
}

/* ---- activation quantizers' rounding (Q8_0, Q8_K: quant.c's header has their semantics) --- */

/* Round half to even, as vroundps with _MM_ROUND_NEAREST and ggml's nearest_int do: adding
 * 1.5*2^23 leaves a float whose unit in the last place is 1, so the addition itself rounds
 * (exact for |v| < 2^22). The clamp keeps hostile inputs (inf, nan, huge) defined. Callers
 * form v with om_mul_rn, so that no fma reaches the addition. */
static inline QT_HD int qt_rne(float v) {
    v = v > 4194303.0f ? 4194303.0f : v;
    v = !(v >= -4194303.0f) ? -4194303.0f : v; /* also nan */
    const float t = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* q = clamp(rne(x * id), -128, 127), the int8 of an activation quantizer */
static inline QT_HD int8_t qt_q8_round(float x, float id) {
    const int q = qt_rne(om_mul_rn(x, id));
    return (int8_t)(q > 127 ? 127 : q < -128 ? -128 : q);
}

#endif
