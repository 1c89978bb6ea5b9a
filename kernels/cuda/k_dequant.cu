/* kernels/cuda/k_dequant.cu — weight rows in their GGUF blocks to f32, f16 or bf16 rows, and
 * the embedding lookup.
 *
 * Each thread makes one output element with qt_dq_<type> (kernels/dequant_math.h), the
 * function the CPU's to_float loops over, so the f32 values are the CPU's bit for bit; f16 and
 * bf16 outputs round that f32 with qt_f32_to_f16 / qt_f32_to_bf16. Consecutive threads make
 * consecutive elements: output stores are coalesced and the neighbours' reads of one block
 * meet in L1. Used at load (whole matrices, once) and per step for the embedding (T rows), so
 * the kernel is simple rather than tuned. Rows are on grid.y (strided past 65535), columns on
 * grid.x.
 */
#include "cu_common.h"
#include "cuk_ops.h"
#include "dequant_math.h"

enum { CUK_DQ_THREADS = 256 };

template <int TYPE>
static __device__ float cuk__dq(const void *row, int64_t e) {
    return qt_dq(TYPE, row, e);   /* TYPE is a constant: the switch folds away */
}

/* out (n_rows, K) of out_type from rows of w */
template <int TYPE>
__global__ void cuk__dequant(void *__restrict__ out, int out_type, const uint8_t *__restrict__ w,
                             int64_t n_rows, int64_t K, size_t row_stride) {
    for (int64_t r = blockIdx.y; r < n_rows; r += gridDim.y) {
        const uint8_t *row = w + (size_t)r * row_stride;
        for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < K;
             e += (int64_t)gridDim.x * blockDim.x) {
            const float v = cuk__dq<TYPE>(row, e);
            const size_t o = (size_t)r * K + e;
            if (out_type == QT_F32) ((float *)out)[o] = v;
            else if (out_type == QT_F16) ((qt_f16 *)out)[o] = qt_f32_to_f16(v);
            else ((qt_bf16 *)out)[o] = qt_f32_to_bf16(v);
        }
    }
}

/* out (T,C) f32 = row tokens[t] - row0 of w, or zeros */
template <int TYPE>
__global__ void cuk__embed(float *__restrict__ out, const uint8_t *__restrict__ w, int64_t n_rows,
                           int64_t row0, size_t row_stride, const int32_t *__restrict__ tokens,
                           int T, int C) {
    for (int t = blockIdx.y; t < T; t += gridDim.y) {
        const int64_t r = (int64_t)tokens[t] - row0;
        const uint8_t *row = w + (size_t)(r >= 0 && r < n_rows ? r : 0) * row_stride;
        float *o = out + (size_t)t * C;
        for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < C; e += gridDim.x * blockDim.x)
            o[e] = r >= 0 && r < n_rows ? cuk__dq<TYPE>(row, e) : 0.0f;
    }
}

static int cuk__block_size(int type) {
    switch (type) {
    case QT_F32: case QT_F16: case QT_BF16: return 1;
    case QT_Q8_0: case QT_Q4_0: case QT_Q4_1: case QT_Q5_0: case QT_Q5_1: case QT_IQ4_NL:
        return 32;
    case QT_Q2_K: case QT_Q3_K: case QT_Q4_K: case QT_Q5_K: case QT_Q6_K: case QT_IQ4_XS:
        return QK_K;
    default: return 0;
    }
}

static dim3 cuk__grid(int64_t cols, int64_t rows) {
    int64_t bx = (cols + CUK_DQ_THREADS - 1) / CUK_DQ_THREADS;
    return dim3((unsigned)(bx < 64 ? bx : 64), (unsigned)(rows < 65535 ? rows : 65535));
}

#define CUK__DQ_CASE(TY)                                                                     \
    case TY:                                                                                 \
        CU_LAUNCH(cuk__dequant<TY>, grid, dim3(CUK_DQ_THREADS), 0, (cudaStream_t)stream, out, \
                  out_type, (const uint8_t *)w, n_rows, K, row_stride);                     \
        break;

extern "C" int cuk_dequant(void *out, int out_type, const void *w, int type, int64_t n_rows,
                           int64_t K, size_t row_stride, cuk_stream stream) {
    const int bs = cuk__block_size(type);
    const size_t al = type == QT_F32 ? 4 : 2;   /* the element loads' alignment */
    if (bs == 0 || K <= 0 || K % bs || n_rows < 0 || row_stride % al || (uintptr_t)w % al ||
        (out_type != QT_F32 && out_type != QT_F16 && out_type != QT_BF16))
        return (int)cudaErrorInvalidValue;
    if (n_rows == 0) return 0;
    const dim3 grid = cuk__grid(K, n_rows);
    switch (type) {
        CUK__DQ_CASE(QT_F32)
        CUK__DQ_CASE(QT_F16)
        CUK__DQ_CASE(QT_BF16)
        CUK__DQ_CASE(QT_Q8_0)
        CUK__DQ_CASE(QT_Q4_0)
        CUK__DQ_CASE(QT_Q4_1)
        CUK__DQ_CASE(QT_Q5_0)
        CUK__DQ_CASE(QT_Q5_1)
        CUK__DQ_CASE(QT_IQ4_NL)
        CUK__DQ_CASE(QT_Q2_K)
        CUK__DQ_CASE(QT_Q3_K)
        CUK__DQ_CASE(QT_Q4_K)
        CUK__DQ_CASE(QT_Q5_K)
        CUK__DQ_CASE(QT_Q6_K)
        CUK__DQ_CASE(QT_IQ4_XS)
    }
    return CU_LAST_ERROR();
}

#define CUK__EMB_CASE(TY)                                                                    \
    case TY:                                                                                 \
        CU_LAUNCH(cuk__embed<TY>, grid, dim3(CUK_DQ_THREADS), 0, (cudaStream_t)stream, out,   \
                  (const uint8_t *)w, n_rows, row0, row_stride, tokens, T, C);              \
        break;

extern "C" int cuk_embed(float *out, const void *w, int type, int64_t n_rows, int64_t row0,
                         size_t row_stride, const int32_t *tokens, int T, int C,
                         cuk_stream stream) {
    const int bs = cuk__block_size(type);
    const size_t al = type == QT_F32 ? 4 : 2;
    if (bs == 0 || C <= 0 || C % bs || T < 0 || n_rows < 0 || row_stride % al || (uintptr_t)w % al)
        return (int)cudaErrorInvalidValue;
    if (T == 0) return 0;
    const dim3 grid = cuk__grid(C, T);
    switch (type) {
        CUK__EMB_CASE(QT_F32)
        CUK__EMB_CASE(QT_F16)
        CUK__EMB_CASE(QT_BF16)
        CUK__EMB_CASE(QT_Q8_0)
        CUK__EMB_CASE(QT_Q4_0)
        CUK__EMB_CASE(QT_Q4_1)
        CUK__EMB_CASE(QT_Q5_0)
        CUK__EMB_CASE(QT_Q5_1)
        CUK__EMB_CASE(QT_IQ4_NL)
        CUK__EMB_CASE(QT_Q2_K)
        CUK__EMB_CASE(QT_Q3_K)
        CUK__EMB_CASE(QT_Q4_K)
        CUK__EMB_CASE(QT_Q5_K)
        CUK__EMB_CASE(QT_Q6_K)
        CUK__EMB_CASE(QT_IQ4_XS)
    }
    return CU_LAST_ERROR();
}
