/* kernels/cuda/cu_blas.cu — matrix products through cuBLAS (contract in cu_blas.h).
 *
 * Why cublasGemmEx and not cuBLASLt: one call covers the three weight types with f32 output,
 * its heuristics pick the tensor-core kernels of the device for F16/BF16 inputs with
 * CUBLAS_COMPUTE_32F, and no epilogue is fused yet (bias, residual add and SwiGLU are separate
 * ops of the seam; a cublasLtMatmul with a bias/GELU epilogue is the next step when a profile
 * says the extra passes matter).
 * Precision: F16/BF16 products on tensor cores accumulate in f32; F32 weights multiply in full
 * f32 (SIMT) unless the caller asks for TF32, because the F32 references hold the CUDA backend
 * to 1e-3 x std, which TF32's 10-bit mantissa does not promise.
 *
 * Only a GPU can check: that cuBLAS accepts these shapes and leading dimensions (else it
 * returns CUBLAS_STATUS_INVALID_VALUE or NOT_SUPPORTED, which the backend reports with the
 * call's name), the algorithms its heuristics pick, and the speed.
 */
#include "cu_blas.h"

#include "qtypes.h"

int cub_act_type(int wtype) {
    switch (wtype) {
    case QT_F32: return QT_F32;
    case QT_F16: return QT_F16;
    case QT_BF16: return QT_BF16;
    default: return -1;
    }
}

/* Row-major out (T,N) = xa (T,K) . W^T is column-major out^T (N,T) = op_T(W) (N,K) . xa^T (K,T):
 * W row-major (N, ldw) is column-major (ldw, N), so A = W with CUBLAS_OP_T and lda = ldw;
 * xa row-major (T,K) is column-major (K,T): B = xa, ldb = K; C = out, ldc = ldo. */
cublasStatus_t cub_gemm(cublasHandle_t h, float *out, int ldo, const void *w, int wtype, int N,
                        int K, size_t ldw, const void *xa, int T, int tf32) {
    const float one = 1.0f, zero = 0.0f;
    cudaDataType_t at;
    cublasComputeType_t ct = CUBLAS_COMPUTE_32F;
    switch (wtype) {
    case QT_F16: at = CUDA_R_16F; break;
    case QT_BF16: at = CUDA_R_16BF; break;
    case QT_F32:
        at = CUDA_R_32F;
        if (tf32) ct = CUBLAS_COMPUTE_32F_FAST_TF32;
        break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
    return cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, w, at, (int)ldw, xa, at, K,
                        &zero, out, CUDA_R_32F, ldo, ct, CUBLAS_GEMM_DEFAULT);
}
