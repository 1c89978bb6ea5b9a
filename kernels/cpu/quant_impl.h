/* kernels/cpu/quant_impl.h — private to kernels/cpu: the per-type conversion and dot-product
 * functions that traits.c puts into the qt_traits table.
 *
 * Naming: qt_dequant_<type> (to_float), qt_quant_<type> (from_float), qt_dot_<type>_<isa>
 * (vec_dot with the weight in <type> and the activation in its vec_dot_type):
 *
 *   weight  activation (vec_dot_type)   scalar / avx2 / avx512
 *   F32     F32                         all three
 *   F16     F16 (activations rounded)   all three
 *   BF16    BF16 (activations rounded)  all three
 *   Q8_0    Q8_0                        all three
 *   Q4_0    Q8_0                        all three
 *   Q4_K    Q8_K                        all three
 *   Q6_K    Q8_K                        all three
 *   Q5_K    Q8_K                        scalar, avx2 (avx2's at avx512)
 *   Q2_K, Q3_K, IQ4_XS  Q8_K            scalar, avx2 (avx2's at avx512)
 *
 * Quantized dots are exact in integers per block, then scaled by the block's float scales, so
 * every ISA agrees with the scalar reference up to the order of float additions.
 * The avx2 functions may only be called when the CPU has AVX2+FMA+F16C, the avx512 ones when it
 * has AVX-512 F/BW/VL/DQ as well (kern_init checks).
 */
#ifndef SAMPAN_QUANT_IMPL_H
#define SAMPAN_QUANT_IMPL_H

#include <stdint.h>

/* ---- to_float: n elements (a multiple of the block size) ---- */
void qt_dequant_f32(const void *src, float *dst, int64_t n);
void qt_dequant_f16(const void *src, float *dst, int64_t n);
void qt_dequant_bf16(const void *src, float *dst, int64_t n);
void qt_dequant_q8_0(const void *src, float *dst, int64_t n);
void qt_dequant_q4_0(const void *src, float *dst, int64_t n);
void qt_dequant_q5_0(const void *src, float *dst, int64_t n);
void qt_dequant_q5_K(const void *src, float *dst, int64_t n);
void qt_dequant_q4_1(const void *src, float *dst, int64_t n);
void qt_dequant_q5_1(const void *src, float *dst, int64_t n);
void qt_dequant_iq4_nl(const void *src, float *dst, int64_t n);
void qt_dequant_q4_K(const void *src, float *dst, int64_t n);
void qt_dequant_q6_K(const void *src, float *dst, int64_t n);
void qt_dequant_q8_K(const void *src, float *dst, int64_t n);
void qt_dequant_q2_K(const void *src, float *dst, int64_t n);
void qt_dequant_q3_K(const void *src, float *dst, int64_t n);
void qt_dequant_iq4_xs(const void *src, float *dst, int64_t n);

/* ---- from_float ----
 * Q8_0 and Q8_K quantize activations exactly as llama.cpp's x86 CPU backend does, because the
 * reference logits were made that way; Q4_0, Q4_K and Q6_K are weight quantizers of reference
 * quality (searched scales, not bit-identical to llama.cpp). */
void qt_quant_f32(const float *src, void *dst, int64_t n);
void qt_quant_f16(const float *src, void *dst, int64_t n);
void qt_quant_bf16(const float *src, void *dst, int64_t n);
void qt_quant_q8_0(const float *src, void *dst, int64_t n);
void qt_quant_q4_0(const float *src, void *dst, int64_t n);
void qt_quant_q5_0(const float *src, void *dst, int64_t n);
void qt_quant_q5_K(const float *src, void *dst, int64_t n);
void qt_quant_q4_1(const float *src, void *dst, int64_t n);
void qt_quant_q5_1(const float *src, void *dst, int64_t n);
void qt_quant_iq4_nl(const float *src, void *dst, int64_t n);
void qt_quant_q4_K(const float *src, void *dst, int64_t n);
void qt_quant_q6_K(const float *src, void *dst, int64_t n);
void qt_quant_q8_K(const float *src, void *dst, int64_t n);
void qt_quant_q2_K(const float *src, void *dst, int64_t n);
void qt_quant_q3_K(const float *src, void *dst, int64_t n);
void qt_quant_iq4_xs(const float *src, void *dst, int64_t n);
/* bit-identical AVX2 versions (nan payloads aside for F16), installed by kern_init on AVX2 CPUs */
void qt_quant_q8_0_avx2(const float *src, void *dst, int64_t n);
void qt_quant_q8_K_avx2(const float *src, void *dst, int64_t n);
void qt_quant_f16_avx2(const float *src, void *dst, int64_t n);

/* ---- vec_dot: (n, weight row, activation row of the vec_dot_type) ---- */
float qt_dot_f32_scalar(int64_t n, const void *w, const void *x);
float qt_dot_f16_scalar(int64_t n, const void *w, const void *x);
float qt_dot_bf16_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q8_0_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q4_0_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q5_0_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q5_K_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q4_1_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q5_1_scalar(int64_t n, const void *w, const void *x);
float qt_dot_iq4_nl_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q4_K_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q6_K_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q2_K_scalar(int64_t n, const void *w, const void *x);
float qt_dot_q3_K_scalar(int64_t n, const void *w, const void *x);
float qt_dot_iq4_xs_scalar(int64_t n, const void *w, const void *x);

float qt_dot_f32_avx2(int64_t n, const void *w, const void *x);
float qt_dot_f16_avx2(int64_t n, const void *w, const void *x);
float qt_dot_bf16_avx2(int64_t n, const void *w, const void *x);
float qt_dot_q8_0_avx2(int64_t n, const void *w, const void *x);
float qt_dot_q4_0_avx2(int64_t n, const void *w, const void *x);
float qt_dot_q5_0_avx2(int64_t n, const void *w, const void *x);
float qt_dot_q4_1_avx2(int64_t n, const void *w, const void *x);
float qt_dot_q5_1_avx2(int64_t n, const void *w, const void *x);
float qt_dot_iq4_nl_avx2(int64_t n, const void *w, const void *x);
float qt_dot_q5_K_avx2(int64_t n, const void *w, const void *x);
float qt_dot_q4_K_avx2(int64_t n, const void *w, const void *x);
float qt_dot_q6_K_avx2(int64_t n, const void *w, const void *x);
float qt_dot_q2_K_avx2(int64_t n, const void *w, const void *x);   /* dot_avx2_k.c */
float qt_dot_q3_K_avx2(int64_t n, const void *w, const void *x);
float qt_dot_iq4_xs_avx2(int64_t n, const void *w, const void *x);

float qt_dot_f32_avx512(int64_t n, const void *w, const void *x);
float qt_dot_f16_avx512(int64_t n, const void *w, const void *x);
float qt_dot_bf16_avx512(int64_t n, const void *w, const void *x);
float qt_dot_q8_0_avx512(int64_t n, const void *w, const void *x);
float qt_dot_q4_0_avx512(int64_t n, const void *w, const void *x);
float qt_dot_q4_K_avx512(int64_t n, const void *w, const void *x);
float qt_dot_q6_K_avx512(int64_t n, const void *w, const void *x);

#endif
