/* kernels/cuda/cu_common.h — what every CUDA kernel file includes first.
 *
 * Kernel files (kernels/cuda/k_*.cu) are compiled two ways:
 *   - by nvcc for the GPU (sm_80, sm_90 SASS + compute_90 PTX), linked into `sampan`;
 *   - by g++ as host C++ with -DCU_SHIM and tests/cuda/ on the include path, for the CI
 *     tests: tests/cuda/cu_shim.h then supplies threadIdx/blockIdx/blockDim/gridDim,
 *     __syncthreads, warp shuffles/ballots, atomics, __half/__nv_bfloat16 and runs every
 *     thread block as blockDim cooperative fibers on the CPU (several thread orders,
 *     dynamic shared memory poisoned).
 *
 * Rules for kernel code so both compilations work:
 *   - launch only through CU_LAUNCH(kernel, grid, block, smem_bytes, stream, args...);
 *   - dynamic shared memory only, declared with CU_DYN_SMEM(type, name) (the shim poisons it);
 *     no static __shared__ arrays;
 *   - after a launch, return CU_LAST_ERROR() (cudaError_t as int: 0 = success);
 *   - arithmetic that the CPU also does lives in QT_HD headers (kernels/qtypes.h,
 *     kernels/ops_math.h, ...), not in the .cu file.
 * Host wrappers (declared in kernels/cuda/cuk.h) take device pointers and a stream and return
 * 0 or a cudaError_t; they never synchronise and never print.
 */
#ifndef SAMPAN_CU_COMMON_H
#define SAMPAN_CU_COMMON_H

#if defined(CU_SHIM)
#include "cu_shim.h"   /* tests/cuda/cu_shim.h: the CPU execution shim (test-only) */
/* the kernel's text names the launch in the shim's error messages */
#define CU_LAUNCH(kern, grid, block, smem, stream, ...) \
    cu_shim_launch((grid), (block), (smem), (stream), [=]() { kern(__VA_ARGS__); }, #kern)
#define CU_DYN_SMEM(type, name) type *name = (type *)cu_shim_dyn_smem()
#define CU_LAST_ERROR() ((int)cu_shim_last_error())
#else
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define CU_LAUNCH(kern, grid, block, smem, stream, ...) \
    kern<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define CU_DYN_SMEM(type, name)                              \
    extern __shared__ __align__(16) unsigned char cu_dyn_smem_[]; \
    type *name = (type *)cu_dyn_smem_
#define CU_LAST_ERROR() ((int)cudaGetLastError())
#endif

#define CU_WARP 32

/* 1 / x, correctly rounded, without the subroutine call of IEEE division (whose register
 * saves ptxas reports as spills) */
static __device__ __forceinline__ float cu_rcp(float x) {
#if defined(__CUDA_ARCH__)
    return __frcp_rn(x);
#else
    return 1.0f / x;
#endif
}

#endif
