/* kernels/cuda/cuk.h — every host wrapper of the CUDA kernels, for the CUDA backend
 * (kernels/cuda/backend_cuda.cu): one include instead of one per kernel family.
 *
 *   cuk_ops.h   k_norm, k_rope, k_ew, k_dequant, k_kv, k_gemv, k_mla, k_moe: element-wise
 *               ops, embedding, dequantization, the paged KV write, the decode GEMV (T <= 8),
 *               latent attention (MLA) and MoE routing
 *   cuk_attn.h  k_attn: attention over the paged KV cache (decode and prefill kernels)
 *   cu_blas.h   cu_blas: the prefill products through cuBLAS (tensor cores)
 *
 * The wrappers take device pointers and a stream, never synchronise and never print; they
 * return 0 or a cudaError_t as int (cu_blas: a cublasStatus_t). cuk_stream is cudaStream_t.
 */
#ifndef SAMPAN_CUK_H
#define SAMPAN_CUK_H

#include "cuk_ops.h"
#include "cuk_attn.h"
#include "cu_blas.h"

#endif
