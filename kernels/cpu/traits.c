/* kernels/cpu/traits.c — the qt_traits table (one entry per supported tensor type) and the
 * run-time choice of dot-product variants from CPUID.
 *
 * The table starts out with the scalar functions, so qt_get() is usable even before kern_init();
 * kern_init() overwrites each vec_dot slot with the variant of the chosen ISA, and the
 * activation quantizers (from_float of Q8_0, Q8_K, F16) with their bit-identical AVX2 versions. It is meant to be
 * called once, before worker threads exist (tests call it again between runs to force an ISA).
 *
 * ISA levels and what they need (checked with cpuid, plus xgetbv for the OS saving the state):
 *   avx2:   AVX, AVX2, FMA, F16C; XCR0 has SSE+AVX state
 *   avx512: avx2 + AVX-512 F, BW, VL, DQ; XCR0 has opmask+ZMM state
 *
 * Q8_K is listed (matmul needs its from_float as the vec_dot_type of Q4_K/Q6_K) but has no
 * vec_dot, so qt_supported(QT_Q8_K) is 0: it is never a weight type.
 */
#include <cpuid.h>
#include <stddef.h>
#include <string.h>

#include "kern.h"
#include "quant_impl.h"

enum { QT__ISA_SCALAR, QT__ISA_AVX2, QT__ISA_AVX512, QT__ISA_COUNT };

static const char *const qt__isa_names[QT__ISA_COUNT] = {"scalar", "avx2", "avx512"};

typedef struct {
    int type;
    qt_vec_dot_fn dot[QT__ISA_COUNT];
} qt__dot_row;

static const qt__dot_row qt__dots[] = {
    {QT_F32, {qt_dot_f32_scalar, qt_dot_f32_avx2, qt_dot_f32_avx512}},
    {QT_F16, {qt_dot_f16_scalar, qt_dot_f16_avx2, qt_dot_f16_avx512}},
    {QT_BF16, {qt_dot_bf16_scalar, qt_dot_bf16_avx2, qt_dot_bf16_avx512}},
    {QT_Q8_0, {qt_dot_q8_0_scalar, qt_dot_q8_0_avx2, qt_dot_q8_0_avx512}},
    {QT_Q4_0, {qt_dot_q4_0_scalar, qt_dot_q4_0_avx2, qt_dot_q4_0_avx512}},
    /* no AVX-512 versions yet: the AVX2 dot in that slot */
    {QT_Q5_0, {qt_dot_q5_0_scalar, qt_dot_q5_0_avx2, qt_dot_q5_0_avx2}},
    {QT_Q5_K, {qt_dot_q5_K_scalar, qt_dot_q5_K_avx2, qt_dot_q5_K_avx2}},
    {QT_Q4_1, {qt_dot_q4_1_scalar, qt_dot_q4_1_avx2, qt_dot_q4_1_avx2}},
    {QT_Q5_1, {qt_dot_q5_1_scalar, qt_dot_q5_1_avx2, qt_dot_q5_1_avx2}},
    {QT_IQ4_NL, {qt_dot_iq4_nl_scalar, qt_dot_iq4_nl_avx2, qt_dot_iq4_nl_avx2}},
    {QT_Q4_K, {qt_dot_q4_K_scalar, qt_dot_q4_K_avx2, qt_dot_q4_K_avx512}},
    {QT_Q6_K, {qt_dot_q6_K_scalar, qt_dot_q6_K_avx2, qt_dot_q6_K_avx512}},
    {QT_Q2_K, {qt_dot_q2_K_scalar, qt_dot_q2_K_avx2, qt_dot_q2_K_avx2}},
    {QT_Q3_K, {qt_dot_q3_K_scalar, qt_dot_q3_K_avx2, qt_dot_q3_K_avx2}},
    {QT_IQ4_XS, {qt_dot_iq4_xs_scalar, qt_dot_iq4_xs_avx2, qt_dot_iq4_xs_avx2}},
};

#define QT__N_DOTS (sizeof(qt__dots) / sizeof(qt__dots[0]))

static qt_traits qt__table[QT_COUNT] = {
    [QT_F32] = {/* .name = */ "F32", /* .block_size = */ 1, /* .type_size = */ sizeof(float),
                /* .vec_dot_type = */ QT_F32, /* .to_float = */ qt_dequant_f32,
                /* .from_float = */ qt_quant_f32, /* .vec_dot = */ qt_dot_f32_scalar},
    [QT_F16] = {/* .name = */ "F16", /* .block_size = */ 1, /* .type_size = */ sizeof(qt_f16),
                /* .vec_dot_type = */ QT_F16, /* .to_float = */ qt_dequant_f16,
                /* .from_float = */ qt_quant_f16, /* .vec_dot = */ qt_dot_f16_scalar},
    [QT_BF16] = {/* .name = */ "BF16", /* .block_size = */ 1, /* .type_size = */ sizeof(qt_bf16),
                 /* .vec_dot_type = */ QT_BF16, /* .to_float = */ qt_dequant_bf16,
                 /* .from_float = */ qt_quant_bf16, /* .vec_dot = */ qt_dot_bf16_scalar},
    [QT_Q8_0] = {/* .name = */ "Q8_0", /* .block_size = */ QK8_0,
                 /* .type_size = */ sizeof(block_q8_0), /* .vec_dot_type = */ QT_Q8_0,
                 /* .to_float = */ qt_dequant_q8_0, /* .from_float = */ qt_quant_q8_0,
                 /* .vec_dot = */ qt_dot_q8_0_scalar},
    [QT_Q4_0] = {/* .name = */ "Q4_0", /* .block_size = */ QK4_0,
                 /* .type_size = */ sizeof(block_q4_0), /* .vec_dot_type = */ QT_Q8_0,
                 /* .to_float = */ qt_dequant_q4_0, /* .from_float = */ qt_quant_q4_0,
                 /* .vec_dot = */ qt_dot_q4_0_scalar},
    [QT_Q5_0] = {/* .name = */ "Q5_0", /* .block_size = */ QK4_0,
                 /* .type_size = */ sizeof(block_q5_0), /* .vec_dot_type = */ QT_Q8_0,
                 /* .to_float = */ qt_dequant_q5_0, /* .from_float = */ qt_quant_q5_0,
                 /* .vec_dot = */ qt_dot_q5_0_scalar},
    [QT_Q4_1] = {/* .name = */ "Q4_1", /* .block_size = */ QK4_0,
                 /* .type_size = */ sizeof(block_q4_1), /* .vec_dot_type = */ QT_Q8_0,
                 /* .to_float = */ qt_dequant_q4_1, /* .from_float = */ qt_quant_q4_1,
                 /* .vec_dot = */ qt_dot_q4_1_scalar},
    [QT_Q5_1] = {/* .name = */ "Q5_1", /* .block_size = */ QK4_0,
                 /* .type_size = */ sizeof(block_q5_1), /* .vec_dot_type = */ QT_Q8_0,
                 /* .to_float = */ qt_dequant_q5_1, /* .from_float = */ qt_quant_q5_1,
                 /* .vec_dot = */ qt_dot_q5_1_scalar},
    [QT_IQ4_NL] = {/* .name = */ "IQ4_NL", /* .block_size = */ QK4_0,
                   /* .type_size = */ sizeof(block_iq4_nl), /* .vec_dot_type = */ QT_Q8_0,
                   /* .to_float = */ qt_dequant_iq4_nl, /* .from_float = */ qt_quant_iq4_nl,
                   /* .vec_dot = */ qt_dot_iq4_nl_scalar},
    [QT_Q4_K] = {/* .name = */ "Q4_K", /* .block_size = */ QK_K,
                 /* .type_size = */ sizeof(block_q4_K), /* .vec_dot_type = */ QT_Q8_K,
                 /* .to_float = */ qt_dequant_q4_K, /* .from_float = */ qt_quant_q4_K,
                 /* .vec_dot = */ qt_dot_q4_K_scalar},
    [QT_Q5_K] = {/* .name = */ "Q5_K", /* .block_size = */ QK_K,
                 /* .type_size = */ sizeof(block_q5_K), /* .vec_dot_type = */ QT_Q8_K,
                 /* .to_float = */ qt_dequant_q5_K, /* .from_float = */ qt_quant_q5_K,
                 /* .vec_dot = */ qt_dot_q5_K_scalar},
    [QT_Q6_K] = {/* .name = */ "Q6_K", /* .block_size = */ QK_K,
                 /* .type_size = */ sizeof(block_q6_K), /* .vec_dot_type = */ QT_Q8_K,
                 /* .to_float = */ qt_dequant_q6_K, /* .from_float = */ qt_quant_q6_K,
                 /* .vec_dot = */ qt_dot_q6_K_scalar},
    [QT_Q2_K] = {/* .name = */ "Q2_K", /* .block_size = */ QK_K,
                 /* .type_size = */ sizeof(block_q2_K), /* .vec_dot_type = */ QT_Q8_K,
                 /* .to_float = */ qt_dequant_q2_K, /* .from_float = */ qt_quant_q2_K,
                 /* .vec_dot = */ qt_dot_q2_K_scalar},
    [QT_Q3_K] = {/* .name = */ "Q3_K", /* .block_size = */ QK_K,
                 /* .type_size = */ sizeof(block_q3_K), /* .vec_dot_type = */ QT_Q8_K,
                 /* .to_float = */ qt_dequant_q3_K, /* .from_float = */ qt_quant_q3_K,
                 /* .vec_dot = */ qt_dot_q3_K_scalar},
    [QT_IQ4_XS] = {/* .name = */ "IQ4_XS", /* .block_size = */ QK_K,
                   /* .type_size = */ sizeof(block_iq4_xs), /* .vec_dot_type = */ QT_Q8_K,
                   /* .to_float = */ qt_dequant_iq4_xs, /* .from_float = */ qt_quant_iq4_xs,
                   /* .vec_dot = */ qt_dot_iq4_xs_scalar},
    [QT_Q8_K] = {/* .name = */ "Q8_K", /* .block_size = */ QK_K,
                 /* .type_size = */ sizeof(block_q8_K), /* .vec_dot_type = */ QT_Q8_K,
                 /* .to_float = */ qt_dequant_q8_K, /* .from_float = */ qt_quant_q8_K,
                 /* .vec_dot = */ NULL},
};

static int qt__isa = QT__ISA_SCALAR;

static uint64_t qt__xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* highest ISA level this CPU and OS can run */
static int qt__detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return QT__ISA_SCALAR;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    const int f16c = (c >> 29) & 1;
    if (!(osxsave && avx && fma && f16c)) return QT__ISA_SCALAR;
    const uint64_t xcr0 = qt__xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return QT__ISA_SCALAR;
    if (__get_cpuid_max(0, NULL) < 7) return QT__ISA_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((b >> 5) & 1)) return QT__ISA_SCALAR;
    const int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);
    if (!avx512 || (xcr0 & 0xe0) != 0xe0) return QT__ISA_AVX2;
    return QT__ISA_AVX512;
}

int kern_init(const char *force) {
    const int best = qt__detect();
    int isa = best;
    if (force) {
        isa = -1;
        for (int i = 0; i < QT__ISA_COUNT; i++) {
            if (strcmp(force, qt__isa_names[i]) == 0) isa = i;
        }
        if (isa < 0 || isa > best) return -1;
    }
    for (size_t i = 0; i < QT__N_DOTS; i++) qt__table[qt__dots[i].type].vec_dot = qt__dots[i].dot[isa];
    /* activation quantizers: same results, vectorized */
    const int simd = isa >= QT__ISA_AVX2;
    qt__table[QT_Q8_0].from_float = simd ? qt_quant_q8_0_avx2 : qt_quant_q8_0;
    qt__table[QT_Q8_K].from_float = simd ? qt_quant_q8_K_avx2 : qt_quant_q8_K;
    qt__table[QT_F16].from_float = simd ? qt_quant_f16_avx2 : qt_quant_f16;
    qt__isa = isa;
    return 0;
}

const char *kern_isa(void) {
    return qt__isa_names[qt__isa];
}

const qt_traits *qt_get(int type) {
    if (type < 0 || type >= QT_COUNT || qt__table[type].name == NULL) return NULL;
    return &qt__table[type];
}

int qt_supported(int type) {
    const qt_traits *t = qt_get(type);
    return t != NULL && t->vec_dot != NULL;
}

size_t qt_row_size(int type, int64_t n) {
    const qt_traits *t = qt_get(type);
    if (t == NULL || n < 0 || n % t->block_size != 0) return 0;
    return (size_t)(n / t->block_size) * t->type_size;
}

qt_vec_dot_fn qt_vec_dot_scalar(int type) {
    for (size_t i = 0; i < QT__N_DOTS; i++) {
        if (qt__dots[i].type == type) return qt__dots[i].dot[QT__ISA_SCALAR];
    }
    return NULL;
}
