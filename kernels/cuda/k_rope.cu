/* kernels/cuda/k_rope.cu — rotary position embedding in place, one thread block per position.
 *
 * The CPU (kern_rope) finds the angle of pair i by i float multiplications of pos by
 * theta_scale, divides by the pair's freq factor, then takes cosf/sinf. Here thread i of the
 * block computes that same angle alone (om_rope_theta: the same i multiplications, so the same
 * bits; theta_scale comes from the host's powf, as on the CPU, because CUDA's powf may differ by
 * an ulp), its sine and cosine with om_sincos (double reduction, no local memory; within 1 ulp
 * of glibc), and leaves them in shared memory; then the block rotates every head's pairs with
 * om_rope_pair, whose products are rounded on their own as on the CPU. So only the 1-ulp
 * sin/cos differences separate the two backends. RoPE scaling (linear, YaRN) goes through the
 * same om_rope_scaled per pair and the host's om_rope_mscale, as on the CPU.
 * Loads: neox pairs (i, i + n_rot/2) are two coalesced streams; normal pairs (2i, 2i+1) are
 * one float2 each.
 */
#include "cu_common.h"
#include "cuk_ops.h"
#include "cuk_rows.cuh"

enum { CUK_ROPE_THREADS = 256 };

/* x (T, H, D); dynamic shared memory: n_rot floats (cos, then sin, n_rot/2 each) */
__global__ void cuk__rope(float *x, const int32_t *pos, int H, int D, int n_rot,
                          float theta_scale, int neox, const float *freq_factors,
                          kern_rope_scaling sc, float mscale) {
    CU_DYN_SMEM(float, cs);
    const int half = n_rot / 2;
    const int t = blockIdx.x, p = pos[t];
    cuk__rope_cs(cs, p, half, theta_scale, freq_factors, sc, mscale);
    __syncthreads();
    float *xt = x + (size_t)t * H * D;
    for (int u = threadIdx.x; u < H * half; u += blockDim.x) {
        const int h = u / half, i = u % half;
        float *xh = xt + (size_t)h * D;
        if (neox) {
            om_rope_pair(&xh[i], &xh[i + half], cs[i], cs[half + i]);
        } else {
            float2 v = *(float2 *)&xh[2 * i];   /* D even, so 8-byte aligned */
            om_rope_pair(&v.x, &v.y, cs[i], cs[half + i]);
            *(float2 *)&xh[2 * i] = v;
        }
    }
}

extern "C" int cuk_rope(float *x, const int32_t *pos, int T, int H, int D, int n_rot,
                        float freq_base, int neox, const float *freq_factors,
                        const kern_rope_scaling *scaling, cuk_stream stream) {
    if (T < 0 || H <= 0 || D <= 0 || n_rot <= 0 || n_rot > D || n_rot % 2 || D % 2)
        return (int)cudaErrorInvalidValue;
    if (T == 0) return 0;
    const float theta_scale = om_rope_theta_scale(freq_base, n_rot);   /* host powf */
    const kern_rope_scaling sc = scaling ? *scaling : kern_rope_scaling{};
    const float mscale = om_rope_mscale(sc.freq_scale, sc.ext_factor, sc.attn_factor);   /* host logf */
    CU_LAUNCH(cuk__rope, dim3((unsigned)T), dim3(CUK_ROPE_THREADS), (size_t)n_rot * sizeof(float),
              (cudaStream_t)stream, x, pos, H, D, n_rot, theta_scale, neox, freq_factors, sc,
              mscale);
    return CU_LAST_ERROR();
}
