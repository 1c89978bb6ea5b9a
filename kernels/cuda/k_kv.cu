/* kernels/cuda/k_kv.cu — the paged KV cache write of one layer.
 *
 * k and v (T, Hkv*D) f32 go to caches laid out (n_blocks, Hkv, block_size, D): position t's
 * row for KV head h lands at block tables[t*max_blocks + pos[t]/block_size], slot
 * pos[t] % block_size, as f32, or f16 / bf16 rounded to nearest even by qt_f32_to_f16 /
 * qt_f32_to_bf16 (the CPU's conversions, bit for bit). One thread block per position (grid.y,
 * strided past 65535); threads walk the position's Hkv*D floats, so reads are coalesced and
 * each head's D consecutive elements are one coalesced write.
 */
#include "cu_common.h"
#include "cuk_ops.h"
#include "qtypes.h"

enum { CUK_KV_THREADS = 256 };

template <int ELEM>
static __device__ void cuk__kv_store(void *cache, size_t i, float v) {
    if (ELEM == QT_F32) ((float *)cache)[i] = v;
    else if (ELEM == QT_F16) ((qt_f16 *)cache)[i] = qt_f32_to_f16(v);
    else ((qt_bf16 *)cache)[i] = qt_f32_to_bf16(v);
}

template <int ELEM>
__global__ void cuk__kv_write(void *__restrict__ kc, void *__restrict__ vc,
                              const float *__restrict__ k, const float *__restrict__ v,
                              const int32_t *__restrict__ pos, const int32_t *__restrict__ tables,
                              int max_blocks, int T, int Hkv, int D, int block_size) {
    const int W = Hkv * D;
    for (int t = blockIdx.y; t < T; t += gridDim.y) {
        const int p = pos[t];
        const int blk = tables[(size_t)t * max_blocks + p / block_size];
        if (blk < 0) continue;
        const int slot = p % block_size;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < W; i += gridDim.x * blockDim.x) {
            const int h = i / D, d = i % D;
            const size_t o = (((size_t)blk * Hkv + h) * block_size + slot) * D + d;
            cuk__kv_store<ELEM>(kc, o, k[(size_t)t * W + i]);
            cuk__kv_store<ELEM>(vc, o, v[(size_t)t * W + i]);
        }
    }
}

extern "C" int cuk_kv_write(void *k_cache, void *v_cache, int elem_type, const float *k,
                            const float *v, const int32_t *pos, const int32_t *tables,
                            int max_blocks, int T, int Hkv, int D, int block_size,
                            cuk_stream stream) {
    if (T < 0 || Hkv <= 0 || D <= 0 || block_size <= 0 || max_blocks <= 0)
        return (int)cudaErrorInvalidValue;
    if (T == 0) return 0;
    const int W = Hkv * D;
    const int bx = (W + CUK_KV_THREADS - 1) / CUK_KV_THREADS;
    const dim3 grid((unsigned)(bx < 16 ? bx : 16), (unsigned)(T < 65535 ? T : 65535));
    const cudaStream_t s = (cudaStream_t)stream;
    switch (elem_type) {
    case QT_F32:
        CU_LAUNCH(cuk__kv_write<QT_F32>, grid, dim3(CUK_KV_THREADS), 0, s, k_cache, v_cache, k, v,
                  pos, tables, max_blocks, T, Hkv, D, block_size);
        break;
    case QT_F16:
        CU_LAUNCH(cuk__kv_write<QT_F16>, grid, dim3(CUK_KV_THREADS), 0, s, k_cache, v_cache, k, v,
                  pos, tables, max_blocks, T, Hkv, D, block_size);
        break;
    case QT_BF16:
        CU_LAUNCH(cuk__kv_write<QT_BF16>, grid, dim3(CUK_KV_THREADS), 0, s, k_cache, v_cache, k,
                  v, pos, tables, max_blocks, T, Hkv, D, block_size);
        break;
    default:
        return (int)cudaErrorInvalidValue;
    }
    return CU_LAST_ERROR();
}
