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

static inline QT_HD float om_silu(float x) { return x / (1.0f + expf(-x)); }

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

/* rotate one pair (a, b) by the angle whose cosine and sine are c, s */
static inline QT_HD void om_rope_pair(float *a, float *b, float c, float s) {
    float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * s;
    *b = x0 * s + x1 * c;
}

#endif
