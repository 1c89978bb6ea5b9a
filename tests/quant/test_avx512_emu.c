/* tests/quant/test_avx512_emu.c — the AVX-512 kernels on any x86-64 CPU with AVX2.
 *
 * This program links a copy of dot_avx512.c compiled with tests/quant/simde_avx512.h forced in,
 * which maps every AVX-512 intrinsic onto SIMDe's portable implementation. So the kernels' logic
 * (lane layouts, shuffles, masks, scale selection) is checked against the scalar reference even
 * where the CPU has no AVX-512, as on the development machines. The real instructions are
 * covered by test_quant_simd on a CPU that has them. Built only where SIMDe's headers exist
 * (Debian package libsimde-dev).
 */
#include "kern.h"
#include "cpu/quant_impl.h"
#include "quant_check.h"

int main(void) {
    static const struct { int type; qt_vec_dot_fn fn; } cases[] = {
        {QT_F32, qt_dot_f32_avx512},   {QT_F16, qt_dot_f16_avx512},   {QT_BF16, qt_dot_bf16_avx512},
        {QT_Q8_0, qt_dot_q8_0_avx512}, {QT_Q4_0, qt_dot_q4_0_avx512}, {QT_Q4_K, qt_dot_q4_K_avx512},
        {QT_Q6_K, qt_dot_q6_K_avx512},
    };
    kern_init("scalar");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dot_check(cases[i].type, cases[i].fn, "avx512(emulated)");
    }
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
