/* kernels/cuda/hd.h — QT_HD, the mark of math shared by the CPU and the CUDA kernels.
 *
 * Shared headers (kernels/qtypes.h, kernels/ops_math.h, ...) mark their inline functions
 * QT_HD: under nvcc they become __host__ __device__, so the GPU runs the very expression the
 * CPU tests check; under a C compiler (and the test-only CPU shim, tests/cuda/) the mark is
 * empty. This is the one place outside the CUDA sources that knows about nvcc.
 */
#ifndef SAMPAN_CUDA_HD_H
#define SAMPAN_CUDA_HD_H

#if defined(__CUDACC__)
#define QT_HD __host__ __device__
#else
#define QT_HD
#endif

/* a * b and a - b each rounded on its own: on the device the _rn intrinsics, which nvcc never
 * contracts into an fma; on the host plain C (gcc -std=c11 does not contract) */
#if defined(__CUDA_ARCH__)
#define QT_MUL_RN(a, b) __fmul_rn((a), (b))
#define QT_SUB_RN(a, b) __fsub_rn((a), (b))
#else
#define QT_MUL_RN(a, b) ((a) * (b))
#define QT_SUB_RN(a, b) ((a) - (b))
#endif

#endif
