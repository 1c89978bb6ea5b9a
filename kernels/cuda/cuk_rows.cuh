/* kernels/cuda/cuk_rows.cuh — the device halves of RMSNorm and RoPE that more than one kernel
 * runs: k_norm.cu and k_rope.cu (their own ops), k_mla.cu (the latent cache write, which norms
 * and rotates one row per block). One copy of each, so the fused kernel's values are the
 * plain kernels' bit for bit. Include after cu_common.h; kernel-file internal (cuk__ names).
 */
#ifndef SAMPAN_CUK_ROWS_CUH
#define SAMPAN_CUK_ROWS_CUH

#include "ops_math.h"

/* RMSNorm's scale of row xr (C floats) over the whole block: each thread sums the squares of a
 * stride in double, then a tree in `red` (blockDim.x doubles of shared memory, blockDim.x a
 * power of two). Every thread returns the same scale; red[0] is read after the last barrier,
 * so `red` may be rewritten only after another __syncthreads. */
static inline __device__ float cuk__rms_block_scale(const float *xr, int C, float eps,
                                                    double *red) {
    double s = 0.0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += (double)xr[i] * (double)xr[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    return om_rms_scale(red[0], C, eps);
}

/* RoPE's cos (cs[i]) and sin (cs[half + i]) of pairs i < half at position p, times mscale,
 * spread over the block's threads (kern_rope's angles: om_rope_theta, then the freq factor,
 * then om_rope_scaled); the caller syncs before reading them */
static inline __device__ void cuk__rope_cs(float *cs, int p, int half, float theta_scale,
                                           const float *freq_factors,
                                           const kern_rope_scaling &sc, float mscale) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float theta = om_rope_theta(p, theta_scale, i);
        const float a = om_rope_scaled(freq_factors ? theta / freq_factors[i] : theta, i,
                                       sc.freq_scale, sc.ext_factor, sc.corr_lo, sc.corr_hi);
        float s, c;
        om_sincos(a, &s, &c);
        cs[i] = c * mscale;
        cs[half + i] = s * mscale;
    }
}

#endif
