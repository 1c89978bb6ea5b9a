/* kernels/cuda/k_attn.cu — causal attention over the paged KV cache: a split-K decode kernel,
 * its merge, and a flash-attention prefill kernel (wrappers declared in cuk_attn.h).
 *
 * Legend: T = queries, H = local query heads, D = head dim, GM = query heads a decode block
 * serves (a power of two >= the unit width, kernels/attn_math.h), NT = 128 threads a block.
 * Index math (cache rows, which KV head a query head reads, units) is kernels/attn_math.h.
 *
 * Decode (cuk__attn_decode<type, GM>): grid (splits, units, T); a block takes one query, the
 * <= 8 query heads of one KV head (a unit) and CUK_ATTN_SPLIT positions of its context, so
 * each K and V row is read from memory once for the whole group. A key row of D elements is
 * LP = pow2(D/8) lanes wide: lane j holds 8 elements (f16/bf16: one 16-byte load at 8j; f32:
 * two 16-byte loads at 4j and D/2 + 4j), so a warp reads 32/LP whole rows per load, each
 * coalesced. q for the GM heads sits in registers (GM x 8 floats, static indices only).
 *   1. scores: each lane dots its 8 elements with the GM heads; the LP lanes of a row reduce
 *      with a butterfly that halves the heads at each step (reduce-scatter: GM - 1 + the
 *      remaining log2(LP/GM) shuffles instead of GM log2 LP); scale * q.k goes to shared
 *      memory as [position][GM] (consecutive lanes, consecutive words: no bank conflict).
 *   2. softmax statistics per head over the split: max, exp(s - max) in place, sum; a fixed
 *      order (thread strides, then a shuffle tree, then warps in order).
 *   3. values: the same row mapping over V, acc[GM][8] += p * v; the warp's rows fold by
 *      shuffles, the 4 warps through shared memory in warp order.
 *   With one split (context <= CUK_ATTN_SPLIT) the block writes out = acc / l; else it writes
 *   (acc, max, sum) to scratch and cuk__attn_merge (grid (H, T)) rescales and sums the splits
 *   in split order. A split past a query's context is skipped by both. Merging one split is
 *   exact (weights exp(0) = 1 and fma(x, 1, 0) = x), so a query's output is bit for bit the
 *   same whatever max_ctx, T and the other queries are: batch invariant, as the CPU is.
 *   Two rows are loaded per lane and iteration, so two 16-byte loads are in flight per lane
 *   besides the other warps'. The block table entries of the split are staged in shared memory
 *   first, so a row's address is one shared load away instead of a dependent global load.
 *
 * Prefill (cuk__attn_prefill<type, DC, RPT, KPT>): grid (query tiles, units); a block takes
 * BR = 16 RPT rows of (query, head of the unit) pairs (head fastest: the unit's heads share
 * every key tile) and walks key tiles of BK = 8 KPT positions from 0 to the tile's last
 * position, flash-attention style: K and V tiles converted to f32 in shared memory (row stride
 * D + 4 floats: the 8 rows a quarter-warp reads with 16-byte loads fall in distinct banks),
 * S = Q K^T as RPT x KPT per thread (16 x 8 threads), online softmax per row (max and sum
 * over the 8 lanes of a row by shuffles), P to shared memory, O += P V as RPT x DC/8 floats per
 * thread, the causal mask per element. Tiles are started last-first (the triangle's long rows
 * first). DC is D rounded up to 32, 64, 128 or 256; tile sizes keep shared memory under 48 KB
 * (no opt-in needed):  DC 32: 64x32 tiles, 26 KB; 64: 64x32, 43 KB; 128: 32x16, 36 KB;
 * 256: 16x8, 34 KB (at D = DC).
 *
 * Sliding window (a.window = W > 0: query p reads p-W+1..p, am_window_first). Decode: the
 * splits stay on multiples of CUK_ATTN_SPLIT; a split wholly before the window is skipped (no
 * block, and the merge starts at the window's split), the one the window starts in begins at
 * p-W+1, and only the table entries from there on are staged, so a -1 before the window is
 * never read. A query's splits and their arithmetic still depend only on its own position and
 * W: batch invariant as without a window. Prefill: key tiles start at the tile of the first
 * position any row of the query tile reads (still on multiples of BK, so a row meets the same
 * tiles as without the window, minus leading ones wholly masked for it, which change nothing),
 * K/V before that position are not loaded, and each element is masked to its row's window.
 *
 * Numerics: f32 products and sums, K/V converted exactly (f16 by the hardware conversion,
 * which equals qt_f16_to_f32 for every non-NaN input; bf16 by qt_bf16_to_f32), expf, scale
 * applied to q.k as the CPU does, 1/l by a correctly rounded reciprocal as the CPU multiplies.
 * Only the order of the additions differs from the CPU's kern_attn_group (which normalises p
 * before P V and sums the softmax in double). Against an exact (double) answer the shim tests
 * measure max error / std of the output: CPU 3.5e-6, decode 1.1e-6, prefill 4.2e-6 (two dot
 * chains per score; one chain of D measured 1.5x that).
 *
 * What only a GPU can check (an H200 will): speed and achieved bandwidth of decode (target:
 * the K/V bytes at HBM rate), occupancy (ptxas, sm_80: decode GM = 8 uses 126-128 registers,
 * GM = 1 44-56, prefill 112-166 (DC 64 the most; numbers with the sliding window in) under __launch_bounds__(128, 1); no spills,
 * no local memory), whether two rows in flight per lane (plus 4 blocks of 4 warps per SM at
 * GM = 8) cover HBM latency, and the prefill tile shapes, first guesses on CUDA cores in f32 (TF32 tensor
 * cores would miss the 1e-5 target; K/V tile loads are not overlapped with compute except by
 * other resident blocks). Known small bank conflicts, once per tile or block: the converted
 * K/V tile stores (2-way), P stores (2-way), the decode epilogue's per-warp outputs (<= 4-way).
 * Variants are to be timed against each other before one is kept (STYLE rule 15).
 */
#include "cu_common.h"
#include "cuk_attn.h"
#include "attn_math.h"
#include "qtypes.h"

#include <math.h>

enum { KA_NT = 128, KA_NW = KA_NT / CU_WARP };
/* loops over register arrays are unrolled fully (static indices keep them in registers); g++
 * under the shim knows no such pragma */
#if defined(__CUDACC__)
#define KA_UNROLL _Pragma("unroll")
#else
#define KA_UNROLL
#endif
#define KA_FULL 0xffffffffu

/* Everything a kernel needs, passed by value. */
struct ka_params {
    const void *k, *v;        /* this rank's cache of the layer */
    const float *q;           /* (T, H, D) */
    float *out;               /* (T, H, D) */
    const int32_t *pos;       /* (T) */
    const int32_t *tables;    /* decode: (T, max_blocks); prefill: one row */
    float *part;              /* decode with ns > 1: (T, H, ns, D) unnormalised outputs */
    float *part_ml;           /* ... and (T, H, ns, 2) max, sum */
    int H, D, Hkv, bs, bs_shift, max_blocks, head0, group, kv_head0;
    int ns;                   /* decode: splits of the longest context */
    int qpt;                  /* prefill: queries per tile */
    int window;               /* sliding window W, 0: none */
    float scale;
};

/* p / block_size, by a shift when block_size is a power of two */
static __device__ __forceinline__ int ka__blk(int p, int bs, int sh) {
    return sh >= 0 ? p >> sh : p / bs;
}

static __device__ __forceinline__ float ka__h2f(uint32_t h) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half((unsigned short)h));
#else
    return qt_f16_to_f32((qt_f16)h);
#endif
}

static __device__ __forceinline__ void ka__unpack4(float4 v, float *x) {
    x[0] = v.x; x[1] = v.y; x[2] = v.z; x[3] = v.w;
}

/* Element types of the cache. lane8: the 8 elements lane j holds in the decode mapping
 * (elements d0(j) .. +3 and d1(j) .. +3); row8: 8 consecutive elements from p. */
struct ka_f32 {
    typedef float elem;
    static __device__ __forceinline__ int d0(int j, int /* D */) { return 4 * j; }
    static __device__ __forceinline__ int d1(int j, int D) { return D / 2 + 4 * j; }
    static __device__ __forceinline__ void lane8(const float *row, int j, int D, float *x) {
        ka__unpack4(*reinterpret_cast<const float4 *>(row + d0(j, D)), x);
        ka__unpack4(*reinterpret_cast<const float4 *>(row + d1(j, D)), x + 4);
    }
    static __device__ __forceinline__ void row8(const float *p, float *x) {
        ka__unpack4(*reinterpret_cast<const float4 *>(p), x);
        ka__unpack4(*reinterpret_cast<const float4 *>(p + 4), x + 4);
    }
};

template <bool BF>
struct ka_16 {
    typedef uint16_t elem;
    static __device__ __forceinline__ float cvt(uint32_t h) {
        return BF ? qt_bf16_to_f32((qt_bf16)h) : ka__h2f(h);
    }
    static __device__ __forceinline__ void u4(uint4 u, float *x) {
        x[0] = cvt(u.x & 0xffffu); x[1] = cvt(u.x >> 16);
        x[2] = cvt(u.y & 0xffffu); x[3] = cvt(u.y >> 16);
        x[4] = cvt(u.z & 0xffffu); x[5] = cvt(u.z >> 16);
        x[6] = cvt(u.w & 0xffffu); x[7] = cvt(u.w >> 16);
    }
    static __device__ __forceinline__ int d0(int j, int /* D */) { return 8 * j; }
    static __device__ __forceinline__ int d1(int j, int /* D */) { return 8 * j + 4; }
    static __device__ __forceinline__ void lane8(const uint16_t *row, int j, int /* D */,
                                                  float *x) {
        u4(*reinterpret_cast<const uint4 *>(row + 8 * j), x);
    }
    static __device__ __forceinline__ void row8(const uint16_t *p, float *x) {
        u4(*reinterpret_cast<const uint4 *>(p), x);
    }
};
typedef ka_16<false> ka_f16;
typedef ka_16<true> ka_bf16;

/* ---- decode ------------------------------------------------------------------------------ */

/* Sum v[g] (one partial dot per head) over the LP lanes of a row, LP a power of two <= 32.
 * Each step halves the heads a lane keeps: the lane whose bit is set keeps the upper half and
 * sends the lower one. Returns the first head the lane holds; it holds max(GM / LP, 1) heads,
 * v[0..), fully summed. */
template <int GM>
static __device__ __forceinline__ int ka__reduce(float (&v)[GM], int LP, int lane) {
    int o = LP, hb = 0;
KA_UNROLL
    for (int n = GM; n > 1; n /= 2) {
        if (o > 1) {
            o /= 2;
            const bool up = (lane & o) != 0;
KA_UNROLL
            for (int i = 0; i < n / 2; i++) {
                const float send = up ? v[i] : v[i + n / 2];
                const float keep = up ? v[i + n / 2] : v[i];
                v[i] = keep + __shfl_xor_sync(KA_FULL, send, o);
            }
            if (up) hb += n / 2;
        }
    }
    while (o > 1) {
        o /= 2;
        v[0] += __shfl_xor_sync(KA_FULL, v[0], o);
    }
    return hb;
}

/* the GM partial dots of one row */
template <int GM>
static __device__ __forceinline__ void ka__dots(float (&s)[GM], const float (&q)[GM][8],
                                                const float *x) {
KA_UNROLL
    for (int g = 0; g < GM; g++) {
        float d = 0.0f;
KA_UNROLL
        for (int e = 0; e < 8; e++) d = fmaf(q[g][e], x[e], d);
        s[g] = d;
    }
}

/* shared memory of a decode block, in floats: scores (later the warps' outputs), the
 * statistics, the final max and sum, then the split's block ids */
static __host__ __device__ int ka__dec_region(int GM, int D) {
    return CUK_ATTN_SPLIT * GM > KA_NW * GM * D ? CUK_ATTN_SPLIT * GM : KA_NW * GM * D;
}
static size_t ka__dec_smem(int GM, int D, int bs) {
    int nb = (CUK_ATTN_SPLIT - 1) / bs + 2;
    return (size_t)(ka__dec_region(GM, D) + 2 * KA_NW * GM + 2 * GM + nb) * 4;
}

template <class KT, int GM>
__global__ void __launch_bounds__(KA_NT) cuk__attn_decode(ka_params a) {
    typedef typename KT::elem E;
    const int split = blockIdx.x, u = blockIdx.y, t = blockIdx.z;
    int h_lo, h_hi;
    am_unit_heads(u, a.H, a.head0, a.group, &h_lo, &h_hi);
    const int ctx = a.pos[t] + 1;
    /* the split's positions [s0, s1): the window cuts the first one it reaches and skips
     * those wholly before it (their table entries are never read) */
    const int sb = split * CUK_ATTN_SPLIT, first = am_window_first(a.pos[t], a.window);
    const int s0 = sb > first ? sb : first;
    const int s1 = ctx < sb + CUK_ATTN_SPLIT ? ctx : sb + CUK_ATTN_SPLIT;
    if (h_lo >= h_hi || s0 >= s1) return;
    const int Gu = h_hi - h_lo, D = a.D, nj = D / 8;
    const int kvh = am_kv_head(h_lo, a.head0, a.group, a.kv_head0);
    const int LP = nj > 16 ? 32 : nj > 8 ? 16 : nj > 4 ? 8 : nj > 2 ? 4 : nj > 1 ? 2 : 1;
    const int KPW = CU_WARP / LP, step = KA_NW * KPW;
    const int tid = threadIdx.x, lane = tid % CU_WARP, warp = tid / CU_WARP;
    const int j = lane % LP, kw = lane / LP;
    const bool on = j < nj;

    CU_DYN_SMEM(float, sm);
    float *sc = sm;                                   /* [SPLIT][GM], later [NW][GM][D] */
    float *red_m = sm + ka__dec_region(GM, D);        /* [NW][GM] */
    float *red_l = red_m + KA_NW * GM;                /* [NW][GM] */
    float *fin = red_l + KA_NW * GM;                  /* max [GM], sum [GM] */
    int32_t *stab = reinterpret_cast<int32_t *>(fin + 2 * GM);

    const int32_t *tab = a.tables + (size_t)t * a.max_blocks;
    const int b0 = ka__blk(s0, a.bs, a.bs_shift);
    const int nb = ka__blk(s1 - 1, a.bs, a.bs_shift) - b0 + 1;
    for (int i = tid; i < nb; i += KA_NT) stab[i] = tab[b0 + i];

    const size_t head_off = am_kv_row(0, 0, a.Hkv, kvh, a.bs, D);
    const size_t bstride = (size_t)a.Hkv * a.bs * D;
    const E *kbase = static_cast<const E *>(a.k) + head_off;
    const E *vbase = static_cast<const E *>(a.v) + head_off;

    float qr[GM][8];
KA_UNROLL
    for (int g = 0; g < GM; g++) {
        float4 x0 = make_float4(0.f, 0.f, 0.f, 0.f), x1 = x0;
        if (g < Gu && on) {
            const float *qg = a.q + ((size_t)t * a.H + h_lo + g) * D;
            x0 = *reinterpret_cast<const float4 *>(qg + KT::d0(j, D));
            x1 = *reinterpret_cast<const float4 *>(qg + KT::d1(j, D));
        }
        ka__unpack4(x0, qr[g]);
        ka__unpack4(x1, qr[g] + 4);
    }
    __syncthreads();   /* stab */

    /* row of position p (s0 <= p < s1) */
#define KA_ROW(base, p)                                                                    \
    ((base) + (size_t)stab[ka__blk((p), a.bs, a.bs_shift) - b0] * bstride +                 \
     (size_t)((p) - ka__blk((p), a.bs, a.bs_shift) * a.bs) * D)

    /* 1. scores */
    const int lo = LP > GM ? LP / GM : 1;          /* lanes that hold the same heads */
    const int nrem = GM > LP ? GM / LP : 1;        /* heads a lane holds after the reduce */
    const bool owner = (j % lo) == 0;
    for (int pb = s0 + warp * KPW; pb < s1; pb += 2 * step) {
        const int pA = pb + kw, pB = pA + step;
        float xa[8], xb[8];
KA_UNROLL
        for (int e = 0; e < 8; e++) xa[e] = xb[e] = 0.0f;
        if (on && pA < s1) KT::lane8(KA_ROW(kbase, pA), j, D, xa);
        if (on && pB < s1) KT::lane8(KA_ROW(kbase, pB), j, D, xb);
        float va[GM], vb[GM];
        ka__dots<GM>(va, qr, xa);
        ka__dots<GM>(vb, qr, xb);
        const int hb = ka__reduce<GM>(va, LP, lane);
        ka__reduce<GM>(vb, LP, lane);
        if (owner) {
KA_UNROLL
            for (int i = 0; i < GM; i++) {
                if (i < nrem) {
                    if (pA < s1) sc[(pA - s0) * GM + hb + i] = va[i] * a.scale;
                    if (pB < s1) sc[(pB - s0) * GM + hb + i] = vb[i] * a.scale;
                }
            }
        }
    }
    __syncthreads();

    /* 2. softmax statistics of head g = tid % GM (KA_NT is a multiple of GM) */
    const int n = (s1 - s0) * GM, gs = tid % GM;
    float mx = -INFINITY;
    for (int i = tid; i < n; i += KA_NT) mx = fmaxf(mx, sc[i]);
    for (int o = CU_WARP / 2; o >= GM; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(KA_FULL, mx, o));
    if (lane < GM) red_m[warp * GM + lane] = mx;
    __syncthreads();
    mx = red_m[gs];
    for (int w = 1; w < KA_NW; w++) mx = fmaxf(mx, red_m[w * GM + gs]);
    float sum = 0.0f;
    for (int i = tid; i < n; i += KA_NT) {
        const float e = expf(sc[i] - mx);
        sc[i] = e;
        sum += e;
    }
    for (int o = CU_WARP / 2; o >= GM; o /= 2) sum += __shfl_xor_sync(KA_FULL, sum, o);
    if (lane < GM) red_l[warp * GM + lane] = sum;
    __syncthreads();
    if (tid < GM) {
        float l = red_l[tid];
        for (int w = 1; w < KA_NW; w++) l += red_l[w * GM + tid];
        fin[tid] = mx;
        fin[GM + tid] = l;
    }

    /* 3. values */
    float acc[GM][8];
KA_UNROLL
    for (int g = 0; g < GM; g++)
KA_UNROLL
        for (int e = 0; e < 8; e++) acc[g][e] = 0.0f;
    for (int pb = s0 + warp * KPW; pb < s1; pb += 2 * step) {
        const int pA = pb + kw, pB = pA + step;
        float xa[8], xb[8];
KA_UNROLL
        for (int e = 0; e < 8; e++) xa[e] = xb[e] = 0.0f;
        if (on && pA < s1) KT::lane8(KA_ROW(vbase, pA), j, D, xa);
        if (on && pB < s1) KT::lane8(KA_ROW(vbase, pB), j, D, xb);
        const float *wa = sc + (pA - s0) * GM, *wb = sc + (pB - s0) * GM;
KA_UNROLL
        for (int g = 0; g < GM; g++) {
            const float pa = pA < s1 ? wa[g] : 0.0f;
            const float pv = pB < s1 ? wb[g] : 0.0f;
KA_UNROLL
            for (int e = 0; e < 8; e++) acc[g][e] = fmaf(pv, xb[e], fmaf(pa, xa[e], acc[g][e]));
        }
    }
#undef KA_ROW
    for (int o = LP; o < CU_WARP; o *= 2) {
KA_UNROLL
        for (int g = 0; g < GM; g++)
KA_UNROLL
            for (int e = 0; e < 8; e++) acc[g][e] += __shfl_xor_sync(KA_FULL, acc[g][e], o);
    }
    __syncthreads();   /* every warp is done with the scores: sc becomes [NW][GM][D] */
    if (kw == 0 && on) {
KA_UNROLL
        for (int g = 0; g < GM; g++) {
            float *dst = sc + (warp * GM + g) * D;
KA_UNROLL
            for (int e = 0; e < 4; e++) {
                dst[KT::d0(j, D) + e] = acc[g][e];
                dst[KT::d1(j, D) + e] = acc[g][4 + e];
            }
        }
    }
    __syncthreads();
    for (int i = tid; i < Gu * D; i += KA_NT) {
        const int g = i / D, d = i - g * D;
        float s = sc[g * D + d];
        for (int w = 1; w < KA_NW; w++) s += sc[(w * GM + g) * D + d];
        const size_t row = (size_t)t * a.H + h_lo + g;
        if (a.ns == 1) {
            a.out[row * D + d] = s * cu_rcp(fin[GM + g]);
        } else {
            const size_t slot = row * a.ns + split;
            a.part[slot * D + d] = s;
            if (d == 0) {
                a.part_ml[slot * 2] = fin[g];
                a.part_ml[slot * 2 + 1] = fin[GM + g];
            }
        }
    }
}

/* out[t][h] = sum_s w_s acc_s / sum_s w_s l_s, w_s = exp(m_s - max m), splits in order.
 * Grid (H, T); dynamic shared memory: ns floats. */
__global__ void __launch_bounds__(KA_NT) cuk__attn_merge(ka_params a) {
    const int h = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
    int nu = (a.pos[t] + CUK_ATTN_SPLIT) / CUK_ATTN_SPLIT;   /* splits the query has */
    if (nu > a.ns) nu = a.ns;
    const int sf = am_window_first(a.pos[t], a.window) / CUK_ATTN_SPLIT;   /* its first */
    const size_t row = (size_t)t * a.H + h, base = row * a.ns;
    CU_DYN_SMEM(float, w);
    float M = -INFINITY;
    for (int s = sf; s < nu; s++) M = fmaxf(M, a.part_ml[(base + s) * 2]);
    for (int s = sf + tid; s < nu; s += KA_NT) w[s] = expf(a.part_ml[(base + s) * 2] - M);
    __syncthreads();
    float L = 0.0f;
    for (int s = sf; s < nu; s++) L = fmaf(a.part_ml[(base + s) * 2 + 1], w[s], L);
    const float inv_l = cu_rcp(L);
    for (int d = tid; d < a.D; d += KA_NT) {
        float acc = 0.0f;
        for (int s = sf; s < nu; s++) acc = fmaf(a.part[(base + s) * a.D + d], w[s], acc);
        a.out[row * a.D + d] = acc * inv_l;
    }
}

/* ---- prefill ----------------------------------------------------------------------------- */

template <int RPT, int KPT>
static size_t ka__pre_smem(int D) {
    const int BR = 16 * RPT, BK = 8 * KPT, ld = D + 4;
    return (size_t)(BR * ld + 2 * BK * ld + BR * (BK + 1) + 4) * 4;
}

template <class KT, int DC, int RPT, int KPT>
__global__ void __launch_bounds__(KA_NT, 1) cuk__attn_prefill(ka_params a, int T) {
    typedef typename KT::elem E;
    enum { BR = 16 * RPT, BK = 8 * KPT, NC = DC / 32 };
    const int u = blockIdx.y;
    int h_lo, h_hi;
    am_unit_heads(u, a.H, a.head0, a.group, &h_lo, &h_hi);
    const int t0 = (gridDim.x - 1 - blockIdx.x) * a.qpt;   /* last tiles first */
    if (h_lo >= h_hi || t0 >= T) return;
    const int Gu = h_hi - h_lo, D = a.D, ld = D + 4;
    const int nq = a.qpt < T - t0 ? a.qpt : T - t0;
    const int kvh = am_kv_head(h_lo, a.head0, a.group, a.kv_head0);
    const int tid = threadIdx.x, tx = tid % 8, ty = tid / 8;

    CU_DYN_SMEM(float, sm);
    float *Qs = sm;                 /* [BR][ld] */
    float *Ks = Qs + BR * ld;       /* [BK][ld] */
    float *Vs = Ks + BK * ld;       /* [BK][ld] */
    float *Ps = Vs + BK * ld;       /* [BR][BK + 1] */
    int32_t *skmax = reinterpret_cast<int32_t *>(Ps + BR * (BK + 1));

    if (tid == 0) {
        int mx = 0, mn = a.pos[t0];
        for (int i = 0; i < nq; i++) {
            mx = a.pos[t0 + i] > mx ? a.pos[t0 + i] : mx;
            mn = a.pos[t0 + i] < mn ? a.pos[t0 + i] : mn;
        }
        skmax[0] = mx;
        skmax[1] = am_window_first(mn, a.window);   /* the first key any row reads */
    }
    const int nc4 = D / 4;
    for (int c = tid; c < BR * nc4; c += KA_NT) {
        const int r = c / nc4, part = c - r * nc4;
        const int tq = r / Gu, g = r - tq * Gu;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (tq < nq)
            x = *reinterpret_cast<const float4 *>(
                a.q + ((size_t)(t0 + tq) * a.H + h_lo + g) * D + 4 * part);
        *reinterpret_cast<float4 *>(Qs + r * ld + 4 * part) = x;
    }
    __syncthreads();
    const int kmax = skmax[0], klo = skmax[1];
    int pq[RPT], plo[RPT];
    float m[RPT], l[RPT], o[RPT][NC][4];
KA_UNROLL
    for (int i = 0; i < RPT; i++) {
        const int tq = (ty + 16 * i) / Gu;
        pq[i] = tq < nq ? a.pos[t0 + tq] : kmax;   /* idle rows see every key */
        plo[i] = am_window_first(pq[i], a.window);
        m[i] = -INFINITY;
        l[i] = 0.0f;
KA_UNROLL
        for (int c = 0; c < NC; c++)
KA_UNROLL
            for (int e = 0; e < 4; e++) o[i][c][e] = 0.0f;
    }
    const size_t head_off = am_kv_row(0, 0, a.Hkv, kvh, a.bs, D);
    const size_t bstride = (size_t)a.Hkv * a.bs * D;
    const E *kbase = static_cast<const E *>(a.k) + head_off;
    const E *vbase = static_cast<const E *>(a.v) + head_off;
    const int nc8 = D / 8;

    /* key tiles stay on multiples of BK, the window only skips the leading ones: a tile
     * that is all masked for a row changes nothing of it (alpha 1, p 0) */
    for (int kt = klo / BK * BK; kt <= kmax; kt += BK) {
        /* K and V tiles, converted; positions past kmax or before klo are zeros (and masked;
         * before klo the table may hold -1) */
        for (int c = tid; c < BK * nc8; c += KA_NT) {
            const int kk = c / nc8, part = c - kk * nc8, p = kt + kk;
            float x[8], y[8];
KA_UNROLL
            for (int e = 0; e < 8; e++) x[e] = y[e] = 0.0f;
            if (p <= kmax && p >= klo) {
                const int b = ka__blk(p, a.bs, a.bs_shift);
                const size_t off = (size_t)a.tables[b] * bstride + (size_t)(p - b * a.bs) * D +
                                   8 * part;
                KT::row8(kbase + off, x);
                KT::row8(vbase + off, y);
            }
            float *kd = Ks + kk * ld + 8 * part, *vd = Vs + kk * ld + 8 * part;
            *reinterpret_cast<float4 *>(kd) = make_float4(x[0], x[1], x[2], x[3]);
            *reinterpret_cast<float4 *>(kd + 4) = make_float4(x[4], x[5], x[6], x[7]);
            *reinterpret_cast<float4 *>(vd) = make_float4(y[0], y[1], y[2], y[3]);
            *reinterpret_cast<float4 *>(vd + 4) = make_float4(y[4], y[5], y[6], y[7]);
        }
        __syncthreads();

        /* S = Q K^T for rows ty + 16 i, keys tx + 8 jj */
        /* two chains (elements 4i, 4i+1 and 4i+2, 4i+3): a dot's rounding error grows with its
         * chain length; one chain of D measured 1.5x the error against exact of two (four
         * chains: no better than two, for 40 more registers) */
        float s[RPT][KPT], s2[RPT][KPT];
KA_UNROLL
        for (int i = 0; i < RPT; i++)
KA_UNROLL
            for (int jj = 0; jj < KPT; jj++) s[i][jj] = s2[i][jj] = 0.0f;
        for (int d = 0; d < D; d += 4) {
            float4 qv[RPT], kv[KPT];
KA_UNROLL
            for (int i = 0; i < RPT; i++)
                qv[i] = *reinterpret_cast<const float4 *>(Qs + (ty + 16 * i) * ld + d);
KA_UNROLL
            for (int jj = 0; jj < KPT; jj++)
                kv[jj] = *reinterpret_cast<const float4 *>(Ks + (tx + 8 * jj) * ld + d);
KA_UNROLL
            for (int i = 0; i < RPT; i++)
KA_UNROLL
                for (int jj = 0; jj < KPT; jj++) {
                    s[i][jj] = fmaf(qv[i].y, kv[jj].y, fmaf(qv[i].x, kv[jj].x, s[i][jj]));
                    s2[i][jj] = fmaf(qv[i].w, kv[jj].w, fmaf(qv[i].z, kv[jj].z, s2[i][jj]));
                }
        }
KA_UNROLL
        for (int i = 0; i < RPT; i++)
KA_UNROLL
            for (int jj = 0; jj < KPT; jj++) s[i][jj] += s2[i][jj];

        /* online softmax; a row's 8 key lanes are lanes 8k..8k+7 of a warp */
KA_UNROLL
        for (int i = 0; i < RPT; i++) {
            float mt = -INFINITY;
KA_UNROLL
            for (int jj = 0; jj < KPT; jj++) {
                const int p = kt + tx + 8 * jj;
                s[i][jj] = p <= pq[i] && p >= plo[i] ? s[i][jj] * a.scale : -INFINITY;
                mt = fmaxf(mt, s[i][jj]);
            }
            for (int off = 1; off < 8; off *= 2) mt = fmaxf(mt, __shfl_xor_sync(KA_FULL, mt, off));
            const float mn = fmaxf(m[i], mt);
            const float mref = mn == -INFINITY ? 0.0f : mn;   /* no key yet: p = 0, not nan */
            const float alpha = m[i] == mn ? 1.0f : expf(m[i] - mref);
            float ls = 0.0f;
KA_UNROLL
            for (int jj = 0; jj < KPT; jj++) {
                const float pr = expf(s[i][jj] - mref);
                Ps[(ty + 16 * i) * (BK + 1) + tx + 8 * jj] = pr;
                ls += pr;
            }
            for (int off = 1; off < 8; off *= 2) ls += __shfl_xor_sync(KA_FULL, ls, off);
            l[i] = fmaf(l[i], alpha, ls);
            m[i] = mn;
KA_UNROLL
            for (int c = 0; c < NC; c++)
KA_UNROLL
                for (int e = 0; e < 4; e++) o[i][c][e] *= alpha;
        }
        __syncthreads();

        /* O += P V, columns 4 tx + 32 c */
        for (int k = 0; k < BK; k++) {
            float pr[RPT];
KA_UNROLL
            for (int i = 0; i < RPT; i++) pr[i] = Ps[(ty + 16 * i) * (BK + 1) + k];
KA_UNROLL
            for (int c = 0; c < NC; c++) {
                const int col = 4 * tx + 32 * c;
                if (col < D) {
                    const float4 vv = *reinterpret_cast<const float4 *>(Vs + k * ld + col);
KA_UNROLL
                    for (int i = 0; i < RPT; i++) {
                        o[i][c][0] = fmaf(pr[i], vv.x, o[i][c][0]);
                        o[i][c][1] = fmaf(pr[i], vv.y, o[i][c][1]);
                        o[i][c][2] = fmaf(pr[i], vv.z, o[i][c][2]);
                        o[i][c][3] = fmaf(pr[i], vv.w, o[i][c][3]);
                    }
                }
            }
        }
        __syncthreads();
    }

KA_UNROLL
    for (int i = 0; i < RPT; i++) {
        const int r = ty + 16 * i, tq = r / Gu, g = r - tq * Gu;
        if (tq >= nq) continue;
        float *dst = a.out + ((size_t)(t0 + tq) * a.H + h_lo + g) * D;
        const float inv_l = cu_rcp(l[i]);
KA_UNROLL
        for (int c = 0; c < NC; c++) {
            const int col = 4 * tx + 32 * c;
            if (col < D)
                *reinterpret_cast<float4 *>(dst + col) =
                    make_float4(o[i][c][0] * inv_l, o[i][c][1] * inv_l, o[i][c][2] * inv_l,
                                o[i][c][3] * inv_l);
        }
    }
}

/* ---- host wrappers ----------------------------------------------------------------------- */

enum { KA_EINVAL = 1 };   /* cudaErrorInvalidValue */

static int ka__aligned(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static int ka__check(const cuk_attn_args *a, const float *out, const float *q,
                     const int32_t *pos) {
    if (!a || !out || !q || !pos || !a->k || !a->v || !a->tables) return 0;
    if (a->kv_type != QT_F32 && a->kv_type != QT_F16 && a->kv_type != QT_BF16) return 0;
    if (a->D < 8 || a->D > 256 || a->D % 8 != 0) return 0;
    if (a->H < 1 || a->Hkv < 1 || a->group < 1 || a->block_size < 1 || a->max_blocks < 1)
        return 0;
    if (a->head0 < 0 || a->kv_head0 < 0 || a->window < 0) return 0;
    if (!ka__aligned(a->k) || !ka__aligned(a->v) || !ka__aligned(q) || !ka__aligned(out))
        return 0;
    return am_unit_count(a->H, a->head0, a->group) <= 65535;
}

static ka_params ka__params(const cuk_attn_args *a, float *out, const float *q,
                            const int32_t *pos) {
    ka_params p;
    p.k = a->k;
    p.v = a->v;
    p.q = q;
    p.out = out;
    p.pos = pos;
    p.tables = a->tables;
    p.part = NULL;
    p.part_ml = NULL;
    p.H = a->H;
    p.D = a->D;
    p.Hkv = a->Hkv;
    p.bs = a->block_size;
    p.bs_shift = -1;
    for (int s = 0; s < 31; s++)
        if (a->block_size == 1 << s) p.bs_shift = s;
    p.max_blocks = a->max_blocks;
    p.head0 = a->head0;
    p.group = a->group;
    p.kv_head0 = a->kv_head0;
    p.ns = 1;
    p.qpt = 1;
    p.window = a->window;
    p.scale = a->scale;
    return p;
}

static int ka__splits(int max_ctx) { return (max_ctx + CUK_ATTN_SPLIT - 1) / CUK_ATTN_SPLIT; }

extern "C" size_t cuk_attn_scratch_bytes(const cuk_attn_args *a, int T, int max_ctx) {
    const int ns = max_ctx > 0 ? ka__splits(max_ctx) : 1;
    if (!a || T < 1 || ns <= 1) return 0;
    return (size_t)T * a->H * ns * (a->D + 2) * sizeof(float);
}

template <class KT, int GM>
static int ka__launch_decode(const ka_params &p, dim3 grid, cudaStream_t st) {
    void (*kern)(ka_params) = cuk__attn_decode<KT, GM>;
    CU_LAUNCH(kern, grid, dim3(KA_NT), ka__dec_smem(GM, p.D, p.bs), st, p);
    return CU_LAST_ERROR();
}

template <class KT>
static int ka__decode_type(const ka_params &p, int width, dim3 grid, cudaStream_t st) {
    if (width <= 1) return ka__launch_decode<KT, 1>(p, grid, st);
    if (width <= 2) return ka__launch_decode<KT, 2>(p, grid, st);
    if (width <= 4) return ka__launch_decode<KT, 4>(p, grid, st);
    return ka__launch_decode<KT, 8>(p, grid, st);
}

extern "C" int cuk_attn_decode(const cuk_attn_args *a, float *out, const float *q,
                               const int32_t *pos, int T, int max_ctx, void *scratch,
                               cuk_stream stream) {
    if (T < 0 || T > 65535 || max_ctx < 1 || !ka__check(a, out, q, pos)) return KA_EINVAL;
    if (T == 0) return 0;
    cudaStream_t st = (cudaStream_t)stream;
    ka_params p = ka__params(a, out, q, pos);
    p.ns = ka__splits(max_ctx);
    if (p.ns > 1) {
        if (!scratch || !ka__aligned(scratch)) return KA_EINVAL;
        p.part = static_cast<float *>(scratch);
        p.part_ml = p.part + (size_t)T * a->H * p.ns * a->D;
    }
    const dim3 grid((unsigned)p.ns, (unsigned)am_unit_count(a->H, a->head0, a->group),
                    (unsigned)T);
    const int width = am_unit_width(a->group);
    int err = a->kv_type == QT_F32   ? ka__decode_type<ka_f32>(p, width, grid, st)
              : a->kv_type == QT_F16 ? ka__decode_type<ka_f16>(p, width, grid, st)
                                     : ka__decode_type<ka_bf16>(p, width, grid, st);
    if (err || p.ns == 1) return err;
    CU_LAUNCH(cuk__attn_merge, dim3((unsigned)a->H, (unsigned)T), dim3(KA_NT),
              (size_t)p.ns * sizeof(float), st, p);
    return CU_LAST_ERROR();
}

template <class KT, int DC, int RPT, int KPT>
static int ka__launch_prefill(ka_params p, int T, int units, cudaStream_t st) {
    p.qpt = 16 * RPT / am_unit_width(p.group);
    const dim3 grid((unsigned)((T + p.qpt - 1) / p.qpt), (unsigned)units);
    void (*kern)(ka_params, int) = cuk__attn_prefill<KT, DC, RPT, KPT>;
    const size_t smem = ka__pre_smem<RPT, KPT>(p.D);
    CU_LAUNCH(kern, grid, dim3(KA_NT), smem, st, p, T);
    return CU_LAST_ERROR();
}

template <class KT>
static int ka__prefill_type(const ka_params &p, int T, int units, cudaStream_t st) {
    if (p.D <= 32) return ka__launch_prefill<KT, 32, 4, 4>(p, T, units, st);
    if (p.D <= 64) return ka__launch_prefill<KT, 64, 4, 4>(p, T, units, st);
    if (p.D <= 128) return ka__launch_prefill<KT, 128, 2, 2>(p, T, units, st);
    return ka__launch_prefill<KT, 256, 1, 1>(p, T, units, st);
}

extern "C" int cuk_attn_prefill(const cuk_attn_args *a, float *out, const float *q,
                                const int32_t *pos, int T, cuk_stream stream) {
    if (T < 0 || !ka__check(a, out, q, pos)) return KA_EINVAL;
    if (T == 0) return 0;
    cudaStream_t st = (cudaStream_t)stream;
    const ka_params p = ka__params(a, out, q, pos);
    const int units = am_unit_count(a->H, a->head0, a->group);
    return a->kv_type == QT_F32   ? ka__prefill_type<ka_f32>(p, T, units, st)
           : a->kv_type == QT_F16 ? ka__prefill_type<ka_f16>(p, T, units, st)
                                  : ka__prefill_type<ka_bf16>(p, T, units, st);
}

/* decode queries [t0, t1) of a call */
static int ka__decode_range(const cuk_attn_args *a, float *out, const float *q,
                            const int32_t *pos, int t0, int t1, int max_ctx, void *scratch,
                            cuk_stream stream) {
    const size_t row = (size_t)a->H * a->D;
    cuk_attn_args r = *a;
    r.tables = a->tables + (size_t)t0 * a->max_blocks;
    return cuk_attn_decode(&r, out + t0 * row, q + t0 * row, pos + t0, t1 - t0, max_ctx,
                           scratch, stream);
}

extern "C" int cuk_attention(const cuk_attn_args *a, float *out, const float *q,
                             const int32_t *pos, int T, const int32_t *pos_h,
                             const int32_t *seq_h, int max_ctx, void *scratch,
                             cuk_stream stream) {
    if (T < 0 || !pos_h || !ka__check(a, out, q, pos)) return KA_EINVAL;
    const size_t row = (size_t)a->H * a->D;
    int d0 = 0;   /* first query not yet enqueued */
    for (int t = 0; t < T;) {
        int e = t + 1;
        while (seq_h && e < T && seq_h[e] == seq_h[t] && pos_h[e] == pos_h[e - 1] + 1) e++;
        if (e - t >= CUK_ATTN_PREFILL_MIN) {
            int err;
            if (t > d0 &&
                (err = ka__decode_range(a, out, q, pos, d0, t, max_ctx, scratch, stream)))
                return err;
            cuk_attn_args r = *a;
            r.tables = a->tables + (size_t)t * a->max_blocks;
            if ((err = cuk_attn_prefill(&r, out + t * row, q + t * row, pos + t, e - t, stream)))
                return err;
            d0 = e;
        }
        t = e;
    }
    return T > d0 ? ka__decode_range(a, out, q, pos, d0, T, max_ctx, scratch, stream) : 0;
}
