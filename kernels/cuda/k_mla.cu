/* kernels/cuda/k_mla.cu — multi-head latent attention (DeepSeek-V2/V3) over its latent-only
 * paged cache: the cache write (RMSNorm of the latent, RoPE of the shared key) and the
 * attention of all heads over the one latent KV head (wrappers declared in cuk_ops.h).
 *
 * Legend: T = positions, H = query heads, R = latent rank, Dr = RoPE dims, D = R + Dr (a cache
 * row), Dv = value width (the first Dv elements of a row; R for MLA), G = heads a block serves.
 * One layer's cache is (n_blocks, block_size, D) of the element type: backend_kv with one KV
 * head, so position p lives at block tables[t * max_blocks + p / block_size], slot
 * p % block_size, as in k_kv.cu.
 *
 * Cache write (cuk__mla_kv_write): one block of 256 threads per position. The latent's scale
 * is k_norm.cu's (cuk__rms_block_scale: the same 256-thread double tree), each element
 * om_mul_rn(x, scale) * w as there; the key's cos/sin are k_rope.cu's (cuk__rope_cs, host
 * theta_scale and mscale) and each pair (2i, 2i+1) om_rope_pair: so the stored values are
 * those of cuk_rmsnorm then cuk_rope bit for bit, rounded once to the cache type by
 * qt_f32_to_f16 / qt_f32_to_bf16 (the CPU's conversions).
 *
 * Attention (cuk__mla_attn): a different shape from k_attn.cu's GQA kernels, which hold a
 * key row in the registers of <= 32 lanes (D <= 256): here D is 576 for DeepSeek-V3 and all H
 * heads share one KV head, so a variant of its own keeps that path untouched. Grid
 * (ceil(H / G), T), 128 threads; the block's G (<= 8) queries sit in shared memory. The
 * context is walked in chunks of KM_CHUNK positions, online softmax:
 *   1. scores: warp w takes positions w, w + 4, ...; lane j sums d = j, j + 32, ... for every
 *      head (one coalesced row read serves all G heads), a xor butterfly finishes each dot;
 *      scale * q.k goes to shared memory [position][G].
 *   2. per head (thread g): the chunk's max, the running max and the rescale factor alpha,
 *      p = exp(s - max) in place and the running sum, in position order.
 *   3. values: thread i owns output elements i, i + 128, ... of the (G, Dv) accumulator (in
 *      shared memory, never shared between threads): acc = acc * alpha + sum_p p v_p[d], in
 *      position order; consecutive threads read consecutive elements of a row (coalesced).
 *   Then out = acc * (1 / l). Every sum has a fixed order, so a query's output depends only
 *   on its own operands: batch invariant. K/V elements are widened exactly (qt_f16_to_f32 /
 *   qt_bf16_to_f32, the CPU's). Against the CPU's kern_attn_group (which normalises p before
 *   the values and sums the softmax in double) only the float order differs: the shim test
 *   holds it to 1e-5 x the output's standard deviation.
 *
 * Only a GPU can check (not run here): speed. Known limits of this first variant: no split
 * of long contexts (a decode step of one position runs ceil(H / 8) blocks, 16 for H = 128,
 * far fewer than the SMs; a split-K pass and merge as in k_attn.cu is the next step), f16
 * widening in software, and the value pass re-reads each row from L1/L2 after the score pass.
 */
#include "cu_common.h"
#include "cuk_ops.h"
#include "cuk_rows.cuh"
#include "qtypes.h"

#include <math.h>

enum { KM_KV_THREADS = 256, KM_NT = 128, KM_NW = KM_NT / CU_WARP, KM_G = 8, KM_CHUNK = 32 };
enum { KM_SMEM_MAX = 48 * 1024 };   /* no opt-in above the default dynamic shared memory */

#if defined(__CUDACC__)
#define KM_UNROLL _Pragma("unroll")
#else
#define KM_UNROLL
#endif

template <int ELEM>
static __device__ __forceinline__ void km__store(void *cache, size_t i, float v) {
    if (ELEM == QT_F32) ((float *)cache)[i] = v;
    else if (ELEM == QT_F16) ((qt_f16 *)cache)[i] = qt_f32_to_f16(v);
    else ((qt_bf16 *)cache)[i] = qt_f32_to_bf16(v);
}

template <int ELEM>
static __device__ __forceinline__ float km__load(const void *cache, size_t i) {
    if (ELEM == QT_F32) return ((const float *)cache)[i];
    if (ELEM == QT_F16) return qt_f16_to_f32(((const qt_f16 *)cache)[i]);
    return qt_bf16_to_f32(((const qt_bf16 *)cache)[i]);
}

/* ---- cache write ------------------------------------------------------------------------- */

/* kva (T, R + Dr); dynamic shared memory: KM_KV_THREADS doubles, then Dr floats */
template <int ELEM>
__global__ void cuk__mla_kv_write(void *cache, const float *kva, const float *norm, float eps,
                                  const int32_t *pos, const int32_t *tables, int max_blocks,
                                  int R, int Dr, int block_size, float theta_scale,
                                  const float *freq_factors, kern_rope_scaling sc,
                                  float mscale) {
    CU_DYN_SMEM(double, red);
    float *cs = reinterpret_cast<float *>(red + blockDim.x);
    const int t = blockIdx.x, p = pos[t], D = R + Dr, half = Dr / 2;
    const float *src = kva + (size_t)t * D;
    const float scale = cuk__rms_block_scale(src, R, eps, red);
    cuk__rope_cs(cs, p, half, theta_scale, freq_factors, sc, mscale);
    __syncthreads();
    const int blk = tables[(size_t)t * max_blocks + p / block_size];
    if (blk < 0) return;   /* after the last barrier: the whole block leaves */
    const size_t o = ((size_t)blk * block_size + (size_t)(p % block_size)) * D;
    for (int i = threadIdx.x; i < R; i += blockDim.x)
        km__store<ELEM>(cache, o + i, om_mul_rn(src[i], scale) * norm[i]);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float a = src[R + 2 * i], b = src[R + 2 * i + 1];
        om_rope_pair(&a, &b, cs[i], cs[half + i]);
        km__store<ELEM>(cache, o + R + 2 * i, a);
        km__store<ELEM>(cache, o + R + 2 * i + 1, b);
    }
}

extern "C" int cuk_mla_kv_write(void *cache, int elem_type, const float *kva, const float *norm,
                                float eps, const int32_t *pos, const int32_t *tables,
                                int max_blocks, int T, int R, int Dr, int block_size,
                                float freq_base, const float *freq_factors,
                                const kern_rope_scaling *scaling, cuk_stream stream) {
    if (T < 0 || R <= 0 || Dr <= 0 || Dr % 2 || block_size <= 0 || max_blocks <= 0)
        return (int)cudaErrorInvalidValue;
    if (T == 0) return 0;
    const float theta_scale = om_rope_theta_scale(freq_base, Dr);   /* host powf, as cuk_rope */
    const kern_rope_scaling sc = scaling ? *scaling : kern_rope_scaling{};
    const float mscale = om_rope_mscale(sc.freq_scale, sc.ext_factor, sc.attn_factor);
    const size_t smem = KM_KV_THREADS * sizeof(double) + (size_t)Dr * sizeof(float);
    const dim3 grid((unsigned)T), block(KM_KV_THREADS);
    const cudaStream_t s = (cudaStream_t)stream;
    switch (elem_type) {
    case QT_F32:
        CU_LAUNCH(cuk__mla_kv_write<QT_F32>, grid, block, smem, s, cache, kva, norm, eps, pos,
                  tables, max_blocks, R, Dr, block_size, theta_scale, freq_factors, sc, mscale);
        break;
    case QT_F16:
        CU_LAUNCH(cuk__mla_kv_write<QT_F16>, grid, block, smem, s, cache, kva, norm, eps, pos,
                  tables, max_blocks, R, Dr, block_size, theta_scale, freq_factors, sc, mscale);
        break;
    case QT_BF16:
        CU_LAUNCH(cuk__mla_kv_write<QT_BF16>, grid, block, smem, s, cache, kva, norm, eps, pos,
                  tables, max_blocks, R, Dr, block_size, theta_scale, freq_factors, sc, mscale);
        break;
    default:
        return (int)cudaErrorInvalidValue;
    }
    return CU_LAST_ERROR();
}

/* ---- attention --------------------------------------------------------------------------- */

struct km_params {
    const void *cache;        /* (n_blocks, bs, D) of the layer */
    const float *q;           /* (T, H, D) */
    float *out;               /* (T, H, Dv) */
    const int32_t *pos;       /* (T) */
    const int32_t *tables;    /* (T, max_blocks) */
    int H, G, D, Dv, bs, max_blocks;
    float scale;
};

/* shared memory of a block, in floats: queries (G, D), accumulators (G, Dv), scores
 * [KM_CHUNK][G], then running max, sum and alpha (G each) */
static __host__ __device__ size_t km__smem_floats(int G, int D, int Dv) {
    return (size_t)G * D + (size_t)G * Dv + (size_t)KM_CHUNK * G + 3 * (size_t)G;
}

template <int ELEM>
__global__ void cuk__mla_attn(km_params a) {
    const int t = blockIdx.y, h0 = blockIdx.x * a.G;
    const int G = a.H - h0 < a.G ? a.H - h0 : a.G, D = a.D, Dv = a.Dv;
    const int tid = threadIdx.x, lane = tid % CU_WARP, warp = tid / CU_WARP;
    CU_DYN_SMEM(float, sm);
    float *qs = sm, *acc = qs + (size_t)a.G * D, *sc = acc + (size_t)a.G * Dv;
    float *rm = sc + KM_CHUNK * a.G, *rl = rm + a.G, *ral = rl + a.G;

    for (int i = tid; i < G * D; i += KM_NT) qs[i] = a.q[((size_t)t * a.H + h0) * D + i];
    for (int i = tid; i < G * Dv; i += KM_NT) acc[i] = 0.0f;
    if (tid < G) rm[tid] = -INFINITY, rl[tid] = 0.0f;
    const int n = a.pos[t] + 1;
    const int32_t *tab = a.tables + (size_t)t * a.max_blocks;
    __syncthreads();

    for (int c0 = 0; c0 < n; c0 += KM_CHUNK) {
        const int nc = n - c0 < KM_CHUNK ? n - c0 : KM_CHUNK;
        /* 1. scores */
        for (int pp = warp; pp < nc; pp += KM_NW) {
            const int p = c0 + pp;
            const size_t row = ((size_t)tab[p / a.bs] * a.bs + (size_t)(p % a.bs)) * D;
            float part[KM_G];
KM_UNROLL
            for (int g = 0; g < KM_G; g++) part[g] = 0.0f;
            for (int d = lane; d < D; d += CU_WARP) {
                const float k = km__load<ELEM>(a.cache, row + d);
KM_UNROLL
                for (int g = 0; g < KM_G; g++)
                    if (g < G) part[g] = fmaf(qs[g * D + d], k, part[g]);
            }
KM_UNROLL
            for (int g = 0; g < KM_G; g++) {
                float s = part[g];
                for (int o = CU_WARP / 2; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
                if (g < G && lane == 0) sc[pp * a.G + g] = s * a.scale;
            }
        }
        __syncthreads();
        /* 2. softmax statistics, one thread per head, in position order */
        if (tid < G) {
            float mx = -INFINITY;
            for (int pp = 0; pp < nc; pp++) mx = fmaxf(mx, sc[pp * a.G + tid]);
            const float mo = rm[tid], mn = fmaxf(mo, mx);
            const float alpha = mo == mn ? 1.0f : expf(mo - mn);
            float l = 0.0f;
            for (int pp = 0; pp < nc; pp++) {
                const float e = expf(sc[pp * a.G + tid] - mn);
                sc[pp * a.G + tid] = e;
                l += e;
            }
            rl[tid] = fmaf(rl[tid], alpha, l);
            rm[tid] = mn;
            ral[tid] = alpha;
        }
        __syncthreads();
        /* 3. values: the first Dv elements of each row */
        for (int i = tid; i < G * Dv; i += KM_NT) {
            const int g = i / Dv, d = i - g * Dv;
            float v = acc[i] * ral[g];
            for (int pp = 0; pp < nc; pp++) {
                const int p = c0 + pp;
                const size_t row = ((size_t)tab[p / a.bs] * a.bs + (size_t)(p % a.bs)) * D;
                v = fmaf(sc[pp * a.G + g], km__load<ELEM>(a.cache, row + d), v);
            }
            acc[i] = v;
        }
        __syncthreads();   /* sc is rewritten by the next chunk */
    }
    for (int i = tid; i < G * Dv; i += KM_NT) {
        const int g = i / Dv;
        a.out[((size_t)t * a.H + h0) * Dv + i] = acc[i] * cu_rcp(rl[g]);
    }
}

extern "C" int cuk_mla_attention(const void *cache, int elem_type, int block_size, int D,
                                 int Dv, float *out, const float *q, const int32_t *pos,
                                 const int32_t *tables, int max_blocks, int T, int H,
                                 float scale, cuk_stream stream) {
    if (T < 0 || T > 65535 || H <= 0 || D <= 0 || Dv <= 0 || Dv > D || block_size <= 0 ||
        max_blocks <= 0 || !cache || !out || !q || !pos || !tables)
        return (int)cudaErrorInvalidValue;
    if (T == 0) return 0;
    int G = H < KM_G ? H : KM_G;
    while (G > 1 && km__smem_floats(G, D, Dv) * sizeof(float) > KM_SMEM_MAX) G--;
    const size_t smem = km__smem_floats(G, D, Dv) * sizeof(float);
    if (smem > KM_SMEM_MAX) return (int)cudaErrorInvalidValue;
    const km_params p = { cache, q, out, pos, tables, H, G, D, Dv, block_size, max_blocks, scale };
    const dim3 grid((unsigned)((H + G - 1) / G), (unsigned)T);
    const cudaStream_t s = (cudaStream_t)stream;
    switch (elem_type) {
    case QT_F32: CU_LAUNCH(cuk__mla_attn<QT_F32>, grid, dim3(KM_NT), smem, s, p); break;
    case QT_F16: CU_LAUNCH(cuk__mla_attn<QT_F16>, grid, dim3(KM_NT), smem, s, p); break;
    case QT_BF16: CU_LAUNCH(cuk__mla_attn<QT_BF16>, grid, dim3(KM_NT), smem, s, p); break;
    default: return (int)cudaErrorInvalidValue;
    }
    return CU_LAST_ERROR();
}
