/* kernels/cuda/k_moe.cu — DeepSeekMoE routing: each position's k experts and their weights
 * from the router logits (wrapper declared in cuk_ops.h).
 *
 * One block of 128 threads per position; the rules are the CPU's cpu__moe_route
 * (runtime/backend_cpu.c), step by step:
 *   scores      softmax (max, exp(x - max), the sum in double in index order, times the float
 *               of 1 / sum) or sigmoid 1 / (1 + exp(-x)); element-wise steps spread over the
 *               threads, the sum by thread 0 in the CPU's order;
 *   selection   score + bias (exp_probs_b; none when NULL);
 *   groups      n_group > 1: group g's score is the sum of its best two selection scores
 *               (thread g, om_moe_group_score: the CPU's own function); the n_group_used best groups are kept (thread 0,
 *               ties to the lowest group), the experts of the others masked;
 *   top-k       k rounds of a block-wide argmax over the free experts, ties to the lowest id
 *               (each thread scans its stride, then a xor butterfly and the warps in order on
 *               (value, id) pairs: the maximum value, the lowest id among equals);
 *   weights     thread 0, in ascending id order: the unbiased scores, their float sum
 *               (clamped at 6.103515625e-5 as llama.cpp) when normalising, times scale.
 * ids and weights are (T, k); a position that finds fewer than k free experts has -1 in the
 * ids it did not fill (the backend reports it). Values differ from the CPU's only through
 * expf: CUDA's (2 ulp) against glibc's or the CPU's AVX2 exp in the softmax. So weights agree
 * to ~1e-6 relative and ids agree unless two selection scores are that close (the shim test
 * checks ids exactly, ties included).
 * Only a GPU can check: speed (one block per position; T blocks of a few microseconds).
 */
#include "cu_common.h"
#include "cuk_ops.h"
#include "ops_math.h"

#include <math.h>

enum { KR_NT = 128, KR_NW = KR_NT / CU_WARP };

struct kr_params {
    const float *logits;      /* (T, E) */
    const float *bias;        /* (E) or NULL */
    int32_t *ids;             /* (T, k) */
    float *w;                 /* (T, k) */
    int E, k, n_group, n_group_used, gating, norm;
    float scale;
};

/* (v, i) beats (bv, bi): a free entry (i >= 0) with the larger value, or the lower id */
static __device__ __forceinline__ bool kr__beats(float v, int i, float bv, int bi) {
    return i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi));
}

/* the largest of x[0, n) not taken, ties to the lowest index; -1 if none. Every thread gets
 * it; rv/ri: KR_NW floats / ints of shared memory */
static __device__ int kr__argmax_free(const float *x, const uint8_t *taken, int n, float *rv,
                                      int *ri) {
    const int tid = threadIdx.x, lane = tid % CU_WARP, warp = tid / CU_WARP;
    int bi = -1;
    float bv = 0.0f;
    for (int i = tid; i < n; i += KR_NT)
        if (!taken[i] && (bi < 0 || x[i] > bv)) bi = i, bv = x[i];
    for (int o = CU_WARP / 2; o > 0; o /= 2) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (kr__beats(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (lane == 0) rv[warp] = bv, ri[warp] = bi;
    __syncthreads();
    bv = rv[0];
    bi = ri[0];
    for (int w = 1; w < KR_NW; w++)
        if (kr__beats(rv[w], ri[w], bv, bi)) bv = rv[w], bi = ri[w];
    __syncthreads();   /* rv/ri are rewritten by the next call */
    return bi;
}

/* dynamic shared memory: prob (E), sel (E), gscore (n_group) floats, red (KR_NW floats +
 * KR_NW ints), taken (E), chosen (E), gtaken (n_group) bytes */
__global__ void __launch_bounds__(KR_NT) cuk__moe_route(kr_params a) {
    const int t = blockIdx.x, tid = threadIdx.x, E = a.E;
    const int NG = a.n_group > 1 ? a.n_group : 1;
    CU_DYN_SMEM(float, sm);
    float *prob = sm, *sel = prob + E, *gscore = sel + E, *rv = gscore + NG;
    int *ri = reinterpret_cast<int *>(rv + KR_NW);
    uint8_t *taken = reinterpret_cast<uint8_t *>(ri + KR_NW), *chosen = taken + E;
    uint8_t *gtaken = chosen + E;
    const float *lg = a.logits + (size_t)t * E;

    if (a.gating == 1) {   /* softmax, kern_softmax's steps */
        float mx = -INFINITY;
        for (int e = tid; e < E; e += KR_NT) mx = fmaxf(mx, lg[e]);
        for (int o = CU_WARP / 2; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        if (tid % CU_WARP == 0) rv[tid / CU_WARP] = mx;
        __syncthreads();
        mx = rv[0];
        for (int w = 1; w < KR_NW; w++) mx = fmaxf(mx, rv[w]);
        for (int e = tid; e < E; e += KR_NT) prob[e] = expf(lg[e] - mx);
        __syncthreads();
        if (tid == 0) {
            double sum = 0.0;
            for (int e = 0; e < E; e++) sum += prob[e];
            rv[0] = (float)(1.0 / sum);
        }
        __syncthreads();
        const float inv = rv[0];
        for (int e = tid; e < E; e += KR_NT) prob[e] *= inv;
    } else {               /* sigmoid */
        for (int e = tid; e < E; e += KR_NT) prob[e] = 1.0f / (1.0f + expf(-lg[e]));
    }
    for (int e = tid; e < E; e += KR_NT) {
        sel[e] = prob[e] + (a.bias ? a.bias[e] : 0.0f);
        taken[e] = chosen[e] = 0;
    }
    __syncthreads();
    if (a.n_group > 1) {   /* keep the n_group_used groups of the best top-2 sums */
        const int per = E / a.n_group;
        for (int g = tid; g < a.n_group; g += KR_NT) {
            gscore[g] = om_moe_group_score(sel + (size_t)g * per, per);
            gtaken[g] = 0;
        }
        __syncthreads();
        if (tid == 0)
            for (int u = 0; u < a.n_group_used; u++) {
                int best = -1;
                for (int g = 0; g < a.n_group; g++)
                    if (!gtaken[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
                if (best >= 0) gtaken[best] = 1;
            }
        __syncthreads();
        for (int e = tid; e < E; e += KR_NT) taken[e] = !gtaken[e / per];   /* masked out */
        __syncthreads();
    }
    int found = 0;
    for (; found < a.k; found++) {
        const int e = kr__argmax_free(sel, taken, E, rv, ri);
        if (e < 0) break;
        if (tid == 0) taken[e] = chosen[e] = 1;
        __syncthreads();
    }
    if (tid == 0) {
        int32_t *id = a.ids + (size_t)t * a.k;
        float *wt = a.w + (size_t)t * a.k, sum = 0.0f;
        for (int e = 0, i = 0; e < E; e++)   /* ascending ids: the combine order */
            if (chosen[e]) id[i] = e, wt[i] = prob[e], sum += prob[e], i++;
        for (int i = found; i < a.k; i++) id[i] = -1, wt[i] = 0.0f;
        if (a.norm) {
            if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
            for (int i = 0; i < found; i++) wt[i] /= sum;
        }
        for (int i = 0; i < found; i++) wt[i] *= a.scale;
    }
}

extern "C" int cuk_moe_route(int32_t *ids, float *w, const float *logits, const float *bias,
                             int T, int E, int k, int n_group, int n_group_used, int gating,
                             int norm, float scale, cuk_stream stream) {
    if (T < 0 || E <= 0 || k <= 0 || k > E || (gating != 1 && gating != 2) ||
        (n_group > 1 && (E % n_group || n_group_used < 1 || n_group_used > n_group)))
        return (int)cudaErrorInvalidValue;
    if (T == 0) return 0;
    const int NG = n_group > 1 ? n_group : 1;
    const size_t smem = (2 * (size_t)E + NG + 2 * KR_NW) * 4 + 2 * (size_t)E + NG;
    if (smem > 48 * 1024) return (int)cudaErrorInvalidValue;
    const kr_params p = { logits, bias, ids, w, E, k, n_group, n_group_used, gating, norm, scale };
    CU_LAUNCH(cuk__moe_route, dim3((unsigned)T), dim3(KR_NT), smem, (cudaStream_t)stream, p);
    return CU_LAST_ERROR();
}
