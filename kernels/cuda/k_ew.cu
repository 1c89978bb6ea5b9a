/* kernels/cuda/k_ew.cu — the forward pass's element-wise ops that are not norms or RoPE:
 * SwiGLU, GeGLU, scaling, residual add, bias over rows, row gather, the MoE rows (scaled
 * scatter, sums of k rows), the tensor-parallel column interleave and the -inf padding of logit
 * rows.
 *
 * All are bound by memory: grid-stride loops with consecutive threads on consecutive floats
 * (coalesced), a grid capped at a few waves of blocks. Row-shaped ops put rows on grid.y (a
 * stride over rows when there are more than 65535) and columns on grid.x, so no thread divides
 * by the row length. Values are the CPU's bit for bit except SwiGLU, whose exp is CUDA's expf
 * (2 ulp; the CPU's AVX2 exp has its own error): within 1e-6 relative. GeGLU is bit for bit
 * because it does not evaluate tanhf on the device: it looks the gate up (om_gelu_lookup) in
 * the CPU's own table of halves, built on the host with glibc's tanhf (om_gelu_fill).
 */
#include "cu_common.h"
#include "cuk_ops.h"
#include "ops_math.h"

enum { CUK_EW_THREADS = 256, CUK_EW_MAX_BLOCKS = 4096 };

static dim3 cuk__grid1(size_t n) {
    size_t b = (n + CUK_EW_THREADS - 1) / CUK_EW_THREADS;
    return dim3((unsigned)(b < (size_t)CUK_EW_MAX_BLOCKS ? b : (size_t)CUK_EW_MAX_BLOCKS));
}

/* columns on x (enough blocks for cols, at most 64 per row), rows on y (at most 65535) */
static dim3 cuk__grid2(size_t cols, size_t rows) {
    size_t bx = (cols + CUK_EW_THREADS - 1) / CUK_EW_THREADS;
    return dim3((unsigned)(bx < 64 ? bx : 64), (unsigned)(rows < 65535 ? rows : 65535));
}

__global__ void cuk__swiglu(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = om_silu(gate[i]) * up[i];
}

/* table: om_gelu_fill's 65536 halves, uploaded once by the backend (reads hit L2: 128 KB) */
__global__ void cuk__geglu(float *out, const float *gate, const float *up,
                           const qt_f16 *__restrict__ table, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = om_gelu_lookup(gate[i], table) * up[i];
}

__global__ void cuk__scale(float *__restrict__ x, float s, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

__global__ void cuk__add(float *__restrict__ x, const float *__restrict__ y, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

/* x (T,N) += b (N) */
__global__ void cuk__bias(float *__restrict__ x, const float *__restrict__ b, int T, int N) {
    for (int t = blockIdx.y; t < T; t += gridDim.y) {
        float *xr = x + (size_t)t * N;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < N; j += gridDim.x * blockDim.x)
            xr[j] += b[j];
    }
}

/* out (n,C) = in[rows[i]] */
__global__ void cuk__gather_rows(float *__restrict__ out, const float *__restrict__ in,
                                 const int32_t *__restrict__ rows, int n, int C) {
    for (int r = blockIdx.y; r < n; r += gridDim.y) {
        const float *src = in + (size_t)rows[r] * C;
        float *dst = out + (size_t)r * C;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < C; j += gridDim.x * blockDim.x)
            dst[j] = src[j];
    }
}

/* out[dst[i]] = in[i] * w[i], rows of C (an expert's outputs to their tokens' rows) */
__global__ void cuk__scatter_rows_scaled(float *__restrict__ out, const float *__restrict__ in,
                                         const int32_t *__restrict__ dst,
                                         const float *__restrict__ w, int n, int C) {
    for (int r = blockIdx.y; r < n; r += gridDim.y) {
        const float *src = in + (size_t)r * C;
        float *d = out + (size_t)dst[r] * C;
        const float wr = w[r];
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < C; j += gridDim.x * blockDim.x)
            d[j] = src[j] * wr;
    }
}

/* out (n,C): row i = y[i*k] + y[i*k + 1] + ... in that order (the CPU's) */
__global__ void cuk__sum_rows(float *__restrict__ out, const float *__restrict__ y, int n, int k,
                              int C) {
    for (int r = blockIdx.y; r < n; r += gridDim.y) {
        const float *yr = y + (size_t)r * k * C;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < C; j += gridDim.x * blockDim.x) {
            float s = yr[j];
            for (int i = 1; i < k; i++) s += yr[(size_t)i * C + j];
            out[(size_t)r * C + j] = s;
        }
    }
}

/* out (T, tp*n) from in (tp, T, n): output piece (t, r) of n floats is input row (r, t) */
__global__ void cuk__interleave(float *__restrict__ out, const float *__restrict__ in, int tp,
                                int T, int n) {
    for (int u = blockIdx.y; u < T * tp; u += gridDim.y) {
        const int t = u / tp, r = u % tp;
        const float *src = in + ((size_t)r * T + t) * n;
        float *dst = out + (size_t)u * n;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x)
            dst[j] = src[j];
    }
}

/* out (R,P) = in (R,V) | -inf */
__global__ void cuk__pad_rows(float *__restrict__ out, const float *__restrict__ in, int R, int V,
                              int P) {
    for (int r = blockIdx.y; r < R; r += gridDim.y) {
        const float *src = in + (size_t)r * V;
        float *dst = out + (size_t)r * P;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < P; j += gridDim.x * blockDim.x)
            dst[j] = j < V ? src[j] : -INFINITY;
    }
}

extern "C" int cuk_swiglu(float *out, const float *gate, const float *up, size_t n,
                          cuk_stream stream) {
    if (n == 0) return 0;
    CU_LAUNCH(cuk__swiglu, cuk__grid1(n), dim3(CUK_EW_THREADS), 0, (cudaStream_t)stream, out,
              gate, up, n);
    return CU_LAST_ERROR();
}

extern "C" int cuk_geglu(float *out, const float *gate, const float *up, const uint16_t *table,
                         size_t n, cuk_stream stream) {
    if (n == 0) return 0;
    if (!table) return (int)cudaErrorInvalidValue;
    CU_LAUNCH(cuk__geglu, cuk__grid1(n), dim3(CUK_EW_THREADS), 0, (cudaStream_t)stream, out,
              gate, up, (const qt_f16 *)table, n);
    return CU_LAST_ERROR();
}

extern "C" int cuk_scale(float *x, float s, size_t n, cuk_stream stream) {
    if (n == 0) return 0;
    CU_LAUNCH(cuk__scale, cuk__grid1(n), dim3(CUK_EW_THREADS), 0, (cudaStream_t)stream, x, s, n);
    return CU_LAST_ERROR();
}

extern "C" int cuk_add(float *x, const float *y, size_t n, cuk_stream stream) {
    if (n == 0) return 0;
    CU_LAUNCH(cuk__add, cuk__grid1(n), dim3(CUK_EW_THREADS), 0, (cudaStream_t)stream, x, y, n);
    return CU_LAST_ERROR();
}

extern "C" int cuk_bias(float *x, const float *b, int T, int N, cuk_stream stream) {
    if (T < 0 || N < 0) return (int)cudaErrorInvalidValue;
    if (T == 0 || N == 0) return 0;
    CU_LAUNCH(cuk__bias, cuk__grid2((size_t)N, (size_t)T), dim3(CUK_EW_THREADS), 0,
              (cudaStream_t)stream, x, b, T, N);
    return CU_LAST_ERROR();
}

extern "C" int cuk_gather_rows(float *out, const float *in, const int32_t *rows, int n, int C,
                               cuk_stream stream) {
    if (n < 0 || C < 0) return (int)cudaErrorInvalidValue;
    if (n == 0 || C == 0) return 0;
    CU_LAUNCH(cuk__gather_rows, cuk__grid2((size_t)C, (size_t)n), dim3(CUK_EW_THREADS), 0,
              (cudaStream_t)stream, out, in, rows, n, C);
    return CU_LAST_ERROR();
}

extern "C" int cuk_scatter_rows_scaled(float *out, const float *in, const int32_t *dst,
                                       const float *w, int n, int C, cuk_stream stream) {
    if (n < 0 || C < 0) return (int)cudaErrorInvalidValue;
    if (n == 0 || C == 0) return 0;
    CU_LAUNCH(cuk__scatter_rows_scaled, cuk__grid2((size_t)C, (size_t)n), dim3(CUK_EW_THREADS), 0,
              (cudaStream_t)stream, out, in, dst, w, n, C);
    return CU_LAST_ERROR();
}

extern "C" int cuk_sum_rows(float *out, const float *y, int n, int k, int C, cuk_stream stream) {
    if (n < 0 || k < 1 || C < 0) return (int)cudaErrorInvalidValue;
    if (n == 0 || C == 0) return 0;
    CU_LAUNCH(cuk__sum_rows, cuk__grid2((size_t)C, (size_t)n), dim3(CUK_EW_THREADS), 0,
              (cudaStream_t)stream, out, y, n, k, C);
    return CU_LAST_ERROR();
}

extern "C" int cuk_interleave(float *out, const float *in, int tp, int T, int n,
                              cuk_stream stream) {
    if (tp <= 0 || T < 0 || n < 0) return (int)cudaErrorInvalidValue;
    if (T == 0 || n == 0) return 0;
    CU_LAUNCH(cuk__interleave, cuk__grid2((size_t)n, (size_t)T * tp), dim3(CUK_EW_THREADS), 0,
              (cudaStream_t)stream, out, in, tp, T, n);
    return CU_LAST_ERROR();
}

extern "C" int cuk_pad_rows(float *out, const float *in, int R, int V, int P, cuk_stream stream) {
    if (R < 0 || V < 0 || P < V) return (int)cudaErrorInvalidValue;
    if (R == 0 || P == 0) return 0;
    CU_LAUNCH(cuk__pad_rows, cuk__grid2((size_t)P, (size_t)R), dim3(CUK_EW_THREADS), 0,
              (cudaStream_t)stream, out, in, R, V, P);
    return CU_LAST_ERROR();
}
