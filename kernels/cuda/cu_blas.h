/* kernels/cuda/cu_blas.h — the CUDA backend's matrix products through cuBLAS
 * (kernels/cuda/cu_blas.cu): prefill (T > 8) on tensor cores.
 *
 * Legend (runtime/model.h): T positions, K input features, N output features. A weight W is
 * (N,K) row-major, rows `ldw` elements apart; activations are row-major (T,K).
 *
 * cub_gemm: out (T,N) f32, rows `ldo` floats apart, = xa (T,K) . W^T in one cublasGemmEx call.
 * W is F32, F16 or BF16 (a quantized weight multiplies through its BF16 copy); xa holds the
 * activations in W's type (cub_act_type; converted by cuk_dequant from f32). Accumulation and
 * output are f32. F32 weights multiply in full f32 (CUBLAS_COMPUTE_32F, no TF32) unless
 * tf32 != 0 (CUBLAS_COMPUTE_32F_FAST_TF32). Enqueues on the handle's stream; never
 * synchronises, never prints; returns the cublasStatus_t.
 */
#ifndef SAMPAN_CU_BLAS_H
#define SAMPAN_CU_BLAS_H

#include <stddef.h>

#include <cublas_v2.h>

cublasStatus_t cub_gemm(cublasHandle_t h, float *out, int ldo, const void *w, int wtype, int N,
                        int K, size_t ldw, const void *xa, int T, int tf32);

/* the activation type cub_gemm takes with a weight of this type (QT_F32, QT_F16 or QT_BF16);
 * -1 for a type cuBLAS does not take (quantized: use the weight's BF16 copy) */
int cub_act_type(int wtype);

#endif
