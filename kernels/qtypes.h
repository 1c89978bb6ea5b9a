/* kernels/qtypes.h — tensor element types and their on-disk block layouts.
 *
 * Owns: the type ids (identical to GGUF/ggml type ids, so a tensor's type field is used as is),
 * the block structs (bit-exact with the GGUF layouts), and the scalar conversions between
 * f32 and f16/bf16. Everything here is `static inline` and marked QT_HD so the CPU backend and the
 * CUDA backend compile the exact same math: CPU tests exercise the code the GPU runs.
 *
 * Block layouts (QK = elements per block, bytes = block size):
 *   F32    1 elem   4 B
 *   F16    1 elem   2 B   IEEE half
 *   BF16   1 elem   2 B   upper 16 bits of an f32
 *   Q8_0   32      34 B   d (f16), qs[32] int8                 x = d*q
 *   Q4_0   32      18 B   d (f16), qs[16] nibbles              x = d*(q-8); low nibbles are
 *                                                              elements 0..15, high 16..31
 *   Q5_0   32      22 B   d (f16), qh[4] (bit j = 5th bit of   x = d*(q-16), q = nibble as in
 *                         element j, little-endian), qs[16]    Q4_0 | (bit j of qh) << 4
 *   Q4_1   32      20 B   d, m (f16), qs[16] nibbles           x = d*q + m (nibbles as Q4_0)
 *   Q5_1   32      24 B   d, m (f16), qh[4], qs[16]            x = d*q + m (q as Q5_0)
 *   IQ4_NL 32      18 B   d (f16), qs[16] nibbles              x = d*qt_iq4nl_values[q]
 *   Q2_K   256     84 B   scales[16] (low nibble scale, high nibble min of sub-block j of 16),
 *                         qs[64] (bits 2k..2k+1 of qs[32h+l] = element 128h+32k+l), d, dmin (f16)
 *                                                              x = (d*sc)*q - dmin*m, q 0..3
 *   Q3_K   256    110 B   hmask[32] (bit 4h+k of hmask[l] = 3rd bit of element 128h+32k+l),
 *                         qs[64] low 2 bits as Q2_K, scales[12] (16 x 6-bit, qt_q3k_scale),
 *                         d (f16)                              x = (d*(sc-32))*(q - (hbit ? 0 : 4))
 *   IQ4_XS 256    136 B   d (f16), scales_h (u16: bits 2j..2j+1 = top of sub-block j's scale),
 *                         scales_l[4] (nibble j%2 of byte j/2 = low 4 bits), qs[128] (sub-block
 *                         j of 32 in qs[16j..16j+15], nibbles as IQ4_NL)
 *                                                              x = (d*(ls-32))*qt_iq4nl_values[q]
 *   Q4_K   256    144 B   d, dmin (f16), scales[12] (8 x 6-bit scale + 8 x 6-bit min), qs[128]
 *   Q5_K   256    176 B   d, dmin (f16), scales[12] as Q4_K, qh[32] (bit 2c+h of qh[l] = 5th bit
 *                         of element 64c+32h+l), qs[128] as Q4_K   x = (d*sc)*q - dmin*m
 *   Q6_K   256    210 B   ql[128], qh[64], scales[16] int8, d (f16)
 *   Q8_K   256    292 B   d (f32), qs[256] int8, bsums[16] int16 (activations only, never on disk)
 */
#ifndef SAMPAN_QTYPES_H
#define SAMPAN_QTYPES_H

#include <stdint.h>
#include <string.h>

#include "cuda/hd.h"   /* QT_HD */

typedef enum {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_IQ4_NL = 20,
    QT_Q8_0 = 8,
    QT_Q2_K = 10,
    QT_Q3_K = 11,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15,
    QT_IQ4_XS = 23,
    QT_BF16 = 30,
    QT_COUNT = 40 /* upper bound on ids we know by name; unsupported ids are refused */
} qt_type;

#define QK8_0 32
#define QK4_0 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t qt_f16;
typedef uint16_t qt_bf16;

typedef struct { qt_f16 d; int8_t qs[QK8_0]; } block_q8_0;                     /* 34 B */
typedef struct { qt_f16 d; uint8_t qs[QK4_0 / 2]; } block_q4_0;                /* 18 B */
typedef struct { qt_f16 d; uint8_t qh[4]; uint8_t qs[QK4_0 / 2]; } block_q5_0;  /* 22 B */
typedef struct { qt_f16 d, m; uint8_t qs[QK4_0 / 2]; } block_q4_1;             /* 20 B */
typedef struct { qt_f16 d, m; uint8_t qh[4]; uint8_t qs[QK4_0 / 2]; } block_q5_1; /* 24 B */
typedef struct { qt_f16 d; uint8_t qs[QK4_0 / 2]; } block_iq4_nl;              /* 18 B */

/* IQ4_NL's 16 non-linear levels (GGUF's kvalues_iq4nl) */
#define QT_IQ4NL_VALUES { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 }
typedef struct { qt_f16 d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K; /* 144 B */
typedef struct { qt_f16 d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K; /* 176 B */
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; qt_f16 d; } block_q6_K; /* 210 B */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K; /* 292 B */
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; qt_f16 d, dmin; } block_q2_K; /* 84 B */
typedef struct { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[K_SCALE_SIZE]; qt_f16 d; } block_q3_K; /* 110 B */
typedef struct { qt_f16 d; uint16_t scales_h; uint8_t scales_l[QK_K / 64]; uint8_t qs[QK_K / 2]; } block_iq4_xs; /* 136 B */

/* C11 _Static_assert; C++ (nvcc, and g++ for the CPU shim tests in tests/cuda/) static_assert */
#ifdef __cplusplus
#define QT_STATIC_ASSERT static_assert
#else
#define QT_STATIC_ASSERT _Static_assert
#endif

QT_STATIC_ASSERT(sizeof(block_q8_0) == 34, "q8_0 layout");
QT_STATIC_ASSERT(sizeof(block_q4_0) == 18, "q4_0 layout");
QT_STATIC_ASSERT(sizeof(block_q5_0) == 22, "q5_0 layout");
QT_STATIC_ASSERT(sizeof(block_q4_1) == 20, "q4_1 layout");
QT_STATIC_ASSERT(sizeof(block_q5_1) == 24, "q5_1 layout");
QT_STATIC_ASSERT(sizeof(block_iq4_nl) == 18, "iq4_nl layout");
QT_STATIC_ASSERT(sizeof(block_q4_K) == 144, "q4_K layout");
QT_STATIC_ASSERT(sizeof(block_q6_K) == 210, "q6_K layout");
QT_STATIC_ASSERT(sizeof(block_q5_K) == 176, "q5_K layout");
QT_STATIC_ASSERT(sizeof(block_q8_K) == 292, "q8_K layout");
QT_STATIC_ASSERT(sizeof(block_q2_K) == 84, "q2_K layout");
QT_STATIC_ASSERT(sizeof(block_q3_K) == 110, "q3_K layout");
QT_STATIC_ASSERT(sizeof(block_iq4_xs) == 136, "iq4_xs layout");

/* IEEE half -> float, exact for every input including subnormals, inf and nan. */
static inline QT_HD float qt_f16_to_f32(qt_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            man &= 0x3ffu;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> IEEE half, round to nearest even, overflow to inf, nan kept nan. */
static inline QT_HD qt_f16 qt_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (qt_f16)(sign | 0x7e00u);           /* nan */
    if (absx >= 0x477ff000u) return (qt_f16)(sign | 0x7c00u);          /* >= 65520: inf */
    if (absx < 0x38800000u) {                                          /* subnormal or zero */
        if (absx < 0x33000000u) return (qt_f16)sign;                   /* < 2^-25: 0 */
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;                                      /* 14..24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (qt_f16)(sign | r);
    }
    uint32_t r = ((absx >> 13) - ((127 - 15) << 10));
    uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
    return (qt_f16)(sign | r);
}

static inline QT_HD float qt_bf16_to_f32(qt_bf16 h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* round to nearest even; nan stays a quiet nan */
static inline QT_HD qt_bf16 qt_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (qt_bf16)((x >> 16) | 64);
    return (qt_bf16)((x + (0x7fffu + ((x >> 16) & 1))) >> 16);
}

/* Q4_K: unpack the j-th (0..7) 6-bit scale and min. */
static inline QT_HD void qt_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* Q3_K: the j-th (0..15) signed scale, -32..31. Byte j%8 holds the low 4 bits (low nibble for
 * j < 8, high nibble for j >= 8); byte 8 + j%4 holds the top 2 bits at bit 2*(j/4). */
static inline QT_HD int qt_q3k_scale(int j, const uint8_t *s) {
    const int lo = (s[j & 7] >> (4 * (j >> 3))) & 0xF;
    const int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    return (lo | hi << 4) - 32;
}

/* IQ4_XS: the j-th (0..7) signed sub-block scale, -32..31 */
static inline QT_HD int qt_iq4xs_scale(int j, uint16_t scales_h, const uint8_t *scales_l) {
    const int lo = (scales_l[j >> 1] >> (4 * (j & 1))) & 0xF;
    return (lo | ((scales_h >> (2 * j)) & 3) << 4) - 32;
}

#endif
