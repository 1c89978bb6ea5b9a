/* kernels/cuda/k_norm.cu — RMSNorm, one thread block per row.
 *
 * out (T,C) = x (T,C) * (1/sqrt(mean(x^2) + eps)) * w (C), the CPU's kern_rmsnorm. The CPU sums
 * the squares in double; so does this kernel (each thread over a stride of the row, then a tree
 * in shared memory), so the scale differs from the CPU's only when the two double sums, taken
 * in different orders, round to different floats after the division by C: in practice never,
 * and then by 1 ulp. FP64 throughput is no concern on the H100/H200 this is written for, and
 * the kernel is bound by reading the row twice (the second read hits L1/L2).
 * out may alias x: each thread reads and writes only its own elements, the write after the
 * block-wide reduction.
 */
#include "cu_common.h"
#include "cuk_ops.h"
#include "cuk_rows.cuh"

enum { CUK_NORM_THREADS = 256 };

/* one block per row t; dynamic shared memory: blockDim.x doubles */
__global__ void cuk__rmsnorm(float *out, const float *x, const float *w, int C, float eps) {
    CU_DYN_SMEM(double, red);
    const size_t t = blockIdx.x;
    const float *xr = x + t * C;
    float *orow = out + t * C;
    const float scale = cuk__rms_block_scale(xr, C, eps, red);
    for (int i = threadIdx.x; i < C; i += blockDim.x) orow[i] = om_mul_rn(xr[i], scale) * w[i];
}

extern "C" int cuk_rmsnorm(float *out, const float *x, const float *w, int T, int C, float eps,
                           cuk_stream stream) {
    if (T < 0 || C <= 0) return (int)cudaErrorInvalidValue;
    if (T == 0) return 0;
    CU_LAUNCH(cuk__rmsnorm, dim3((unsigned)T), dim3(CUK_NORM_THREADS),
              CUK_NORM_THREADS * sizeof(double), (cudaStream_t)stream, out, x, w, C, eps);
    return CU_LAST_ERROR();
}
