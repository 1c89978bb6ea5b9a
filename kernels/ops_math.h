/* kernels/ops_math.h — element-wise math shared by the CPU and CUDA backends.
 *
 * Each function computes one element (or one small reduction step) and is `static inline QT_HD`,
 * so kernels/cpu/ops.c and a CUDA kernel compile the same expression and the CPU tests check the
 * math the GPU runs. The formulas follow llama.cpp's CPU backend where rounding matters
 * (iterative RoPE angles in float, RMS sum in double), because our references come from it.
 */
#ifndef SAMPAN_OPS_MATH_H
#define SAMPAN_OPS_MATH_H

#include <math.h>
#include "qtypes.h"

/* A product and a difference rounded on their own. nvcc contracts a*b - c into one fma by
 * default (C11 gcc does not: -std=c11 means -ffp-contract=off), so expressions whose bits the
 * CPU and the GPU must share are written with these (QT_MUL_RN / QT_SUB_RN: kernels/cuda/hd.h). */
static inline QT_HD float om_mul_rn(float a, float b) { return QT_MUL_RN(a, b); }
static inline QT_HD float om_sub_rn(float a, float b) { return QT_SUB_RN(a, b); }

static inline QT_HD float om_silu(float x) { return x / (1.0f + expf(-x)); }

/* GELU, tanh approximation, as ggml's CPU backend evaluates it (GGML_GELU_FP16): x rounded to
 * half, its GELU (f32, tanhf) rounded to half from a table; 0 below -10 and x above 10. */
static inline QT_HD float om_gelu_tanh(float h) {
    return 0.5f * h * (1.0f + tanhf(0.79788456080286535588f * h * (1.0f + 0.044715f * h * h)));
}

static inline QT_HD float om_gelu_f16(float x) {
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x;
    const float h = qt_f16_to_f32(qt_f32_to_f16(x));
    return qt_f16_to_f32(qt_f32_to_f16(om_gelu_tanh(h)));
}

/* GeGLU's gate as ggml's CPU backend looks it up: 0 at or below -10, x at or above 10, else
 * the table entry at x's half bits. table (65536 halves) is om_gelu_fill's, so the value is
 * om_gelu_f16(x) bit for bit. The CPU's kern_geglu and the CUDA kernel (k_ew.cu, the table
 * built on the host and uploaded by backend_cuda.cu) share this one expression. */
static inline QT_HD float om_gelu_lookup(float x, const qt_f16 *table) {
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x;
    return qt_f16_to_f32(table[qt_f32_to_f16(x)]);
}

/* table[t] = om_gelu_tanh of the half with bits t, rounded to half; host only (glibc tanhf),
 * so both backends' tables are the same bits */
static inline void om_gelu_fill(qt_f16 *table) {
    for (uint32_t t = 0; t < (1u << 16); t++)
        table[t] = qt_f32_to_f16(om_gelu_tanh(qt_f16_to_f32((qt_f16)t)));
}

/* 1 / rms given the sum of squares over n elements */
static inline QT_HD float om_rms_scale(double sumsq, int n, float eps) {
    float mean = (float)(sumsq / n);
    return 1.0f / sqrtf(mean + eps);
}

/* theta_scale = base^(-2/n_rot); the angle of pair i is pos * theta_scale^i, accumulated by
 * repeated float multiplication as llama.cpp does, then divided by the pair's freq factor. */
static inline QT_HD float om_rope_theta_scale(float base, int n_rot) {
    return powf(base, -2.0f / (float)n_rot);
}

/* The angle of pair i before its freq factor: pos * theta_scale^i by i float multiplications
 * in order, so that a GPU thread that owns pair i alone gets the CPU loop's bits. */
static inline QT_HD float om_rope_theta(int pos, float theta_scale, int i) {
    float theta = (float)pos;
    for (int k = 0; k < i; k++) theta *= theta_scale;
    return theta;
}

/* RoPE scaling (kern_rope_scaling's fields), after ggml's rope_yarn. The magnitude of cos and
 * sin: attn_factor (0: 1), times 1 + 0.1 ln(1/freq_scale) with YaRN. One value per call, computed
 * on the host by both backends (so the GPU's logf never enters). */
static inline QT_HD float om_rope_mscale(float freq_scale, float ext_factor, float attn_factor) {
    const float fs = freq_scale > 0.0f ? freq_scale : 1.0f;
    const float m = attn_factor > 0.0f ? attn_factor : 1.0f;
    return ext_factor != 0.0f ? m * (1.0f + 0.1f * logf(1.0f / fs)) : m;
}

/* The angle of pair i from its unscaled angle: freq_scale times it, and with YaRN a mix towards
 * the unscaled angle for the pairs below the ramp (ramp 1 below corr_lo, 0 above corr_hi). */
static inline QT_HD float om_rope_scaled(float theta, int i, float freq_scale, float ext_factor,
                                         float corr_lo, float corr_hi) {
    const float interp = om_mul_rn(freq_scale > 0.0f ? freq_scale : 1.0f, theta);
    if (ext_factor == 0.0f) return interp;
    const float y = ((float)i - corr_lo) / fmaxf(0.001f, corr_hi - corr_lo);
    const float mix = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * ext_factor;
    return om_mul_rn(interp, 1.0f - mix) + om_mul_rn(theta, mix);
}

/* YaRN's correction range for n_rot rotary dims trained on n_ctx_orig positions: the pairs
 * whose wavelength makes beta_fast (lo) and beta_slow (hi) turns over n_ctx_orig, i.e. the dim
 * n_rot ln(n_ctx_orig / (2 pi beta)) / (2 ln base), floor/ceil, clamped to [0, n_rot - 1]. */
static inline QT_HD void om_rope_yarn_corr(int n_rot, int n_ctx_orig, float base, float beta_fast,
                                           float beta_slow, float *lo, float *hi) {
    const float two_ln_base = 2.0f * logf(base);
    const float a = floorf((float)n_rot * logf((float)n_ctx_orig / (beta_fast * 2.0f * 3.14159265358979f)) / two_ln_base);
    const float b = ceilf((float)n_rot * logf((float)n_ctx_orig / (beta_slow * 2.0f * 3.14159265358979f)) / two_ln_base);
    *lo = fmaxf(0.0f, a);
    *hi = fminf((float)(n_rot - 1), b);
}

/* rotate one pair (a, b) by the angle whose cosine and sine are c, s; each product rounded
 * (no fma) so that both backends give the same bits */
static inline QT_HD void om_rope_pair(float *a, float *b, float c, float s) {
    float x0 = *a, x1 = *b;
    *a = om_sub_rn(om_mul_rn(x0, c), om_mul_rn(x1, s));
    *b = om_mul_rn(x0, s) + om_mul_rn(x1, c);
}

/* sinf and cosf of t for the GPU's RoPE: CUDA's sincosf keeps a Payne-Hanek path for large
 * angles that needs a local-memory frame, so this reduces in double instead (Cody-Waite with
 * pi/2 in three parts of 33, 33 and 53 bits: k*part is exact for |k| < 2^20, i.e. |t| < 1.6e6,
 * positions far beyond any context) and evaluates Taylor polynomials of degree 17/16 on
 * |r| <= pi/4 (truncation < 1e-16). The results are the correctly rounded float values except
 * in rare near-ties, so they agree with glibc's sinf/cosf to 1 ulp. */
static inline QT_HD void om_sincos(float t, float *s_out, float *c_out) {
    const double x = (double)t;
    const double k = rint(x * 0.63661977236758134308);
    double r = x - k * 1.57079632673412561417e+00;
    r -= k * 6.07710050630396597660e-11;
    r -= k * 2.02226624879595063154e-21;
    const double r2 = r * r;
    double ps = 1.0 / 355687428096000.0;                 /* 1/17! */
    ps = ps * r2 - 1.0 / 1307674368000.0;
    ps = ps * r2 + 1.0 / 6227020800.0;
    ps = ps * r2 - 1.0 / 39916800.0;
    ps = ps * r2 + 1.0 / 362880.0;
    ps = ps * r2 - 1.0 / 5040.0;
    ps = ps * r2 + 1.0 / 120.0;
    ps = ps * r2 - 1.0 / 6.0;
    const double sr = r + r * r2 * ps;
    double pc = 1.0 / 20922789888000.0;                  /* 1/16! */
    pc = pc * r2 - 1.0 / 87178291200.0;
    pc = pc * r2 + 1.0 / 479001600.0;
    pc = pc * r2 - 1.0 / 3628800.0;
    pc = pc * r2 + 1.0 / 40320.0;
    pc = pc * r2 - 1.0 / 720.0;
    pc = pc * r2 + 1.0 / 24.0;
    pc = pc * r2 - 0.5;
    const double cr = 1.0 + r2 * pc;
    const long q = (long)k & 3;
    const double sv = q == 0 ? sr : q == 1 ? cr : q == 2 ? -sr : -cr;
    const double cv = q == 0 ? cr : q == 1 ? -sr : q == 2 ? -cr : sr;
    *s_out = (float)sv;
    *c_out = (float)cv;
}

/* DeepSeekMoE's group-limited routing: the score of a group of per selection scores, the sum
 * of its best two (the best: the first maximum; the second: the first maximum of the others;
 * one element: itself). Shared by the CPU backend and the CUDA routing kernel (k_moe.cu). */
static inline QT_HD float om_moe_group_score(const float *sg, int per) {
    int a = 0;
    for (int i = 1; i < per; i++) a = sg[i] > sg[a] ? i : a;
    int b = -1;
    for (int i = 0; i < per; i++)
        if (i != a && (b < 0 || sg[i] > sg[b])) b = i;
    return sg[a] + (b >= 0 ? sg[b] : 0.0f);
}

#endif
