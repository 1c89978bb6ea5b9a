/* tests/cuda/test_shim.cc — the CPU shim checked with small kernels written here, launched as
 * kernel files launch theirs (CU_LAUNCH, CU_DYN_SMEM, CU_LAST_ERROR from cu_common.h), each
 * under every thread order:
 *   - a shared-memory block reduction is exact; two copies with one __syncthreads removed
 *     give a wrong sum under at least one order (the shim exposes the race);
 *   - __syncthreads in a divergent branch, after an early return, or at two call sites, and
 *     warp primitives whose mask names lanes that do not come, are reported as errors, and
 *     the next launch runs normally;
 *   - warp reductions (__shfl_xor_sync, __shfl_down_sync), scans (__shfl_up_sync), broadcasts
 *     with widths, ballots, __any/__all, __match_any, __reduce_add;
 *   - atomics from a whole grid into one counter, CAS loops, and that atomics yield (other
 *     threads run between a plain read and the atomic) in the order the setting says;
 *   - 2-D and 3-D blocks and grids: every thread runs once with the right indices;
 *   - dynamic shared memory: exactly the launch's bytes, poisoned (0xFF) before every block;
 *   - bad launch configurations return error codes and run nothing; a block spinning on a
 *     later block's flag is stopped with an error;
 *   - __dp4a (all four overloads) and the f16/bf16 conversions against independent values.
 * Every check prints what it expected; exit status 1 if any failed.
 */
#include "cuda/cu_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

static int n_fail = 0, n_check = 0;
#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        n_check++;                                                                           \
        if (!(cond)) {                                                                       \
            n_fail++;                                                                        \
            fprintf(stderr, "FAIL %s:%d [order %s]: ", __FILE__, __LINE__,                   \
                    cu_shim_order_name(cu_shim_get_order()));                                \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
        }                                                                                    \
    } while (0)

/* the last launch failed with `want`, and the shim's message mentions `what` */
static void expect_error(int got, cudaError_t want, const char *what, const char *test) {
    CHECK(got == (int)want, "%s: error %d (%s), expected %d (%s)", test, got,
          cudaGetErrorName((cudaError_t)got), (int)want, cudaGetErrorName(want));
    CHECK(strstr(cu_shim_last_message(), what) != nullptr, "%s: message \"%s\" lacks \"%s\"",
          test, cu_shim_last_message(), what);
    CHECK(cudaGetLastError() == cudaSuccess, "%s: the error is not reset by reading it", test);
}
static void expect_msg(const char *test) {
    fprintf(stderr, "(%s, order %s: the shim's error message below is expected)\n", test,
            cu_shim_order_name(cu_shim_get_order()));
}

/* ---- block reduction in shared memory ---------------------------------------------------- */

/* out[b] = sum of x[b*n .. b*n+n); blockDim.x a power of two; smem: blockDim.x floats */
__global__ void k_block_sum(const float *__restrict__ x, float *__restrict__ out, int n) {
    CU_DYN_SMEM(float, s);
    const int tid = (int)threadIdx.x;
    float v = 0.0f;
    for (int i = tid; i < n; i += (int)blockDim.x) v += x[(size_t)blockIdx.x * n + i];
    s[tid] = v;
    __syncthreads();
    for (int k = (int)blockDim.x / 2; k > 0; k >>= 1) {
        if (tid < k) s[tid] += s[tid + k];
        __syncthreads();
    }
    if (tid == 0) out[blockIdx.x] = s[0];
}

/* the same with the barrier after the store removed: a thread may read s[tid + k] before
 * its owner wrote it */
__global__ void k_block_sum_racy_store(const float *__restrict__ x, float *__restrict__ out,
                                       int n) {
    CU_DYN_SMEM(float, s);
    const int tid = (int)threadIdx.x;
    float v = 0.0f;
    for (int i = tid; i < n; i += (int)blockDim.x) v += x[(size_t)blockIdx.x * n + i];
    s[tid] = v;
    for (int k = (int)blockDim.x / 2; k > 0; k >>= 1) {
        if (tid < k) s[tid] += s[tid + k];
        __syncthreads();
    }
    if (tid == 0) out[blockIdx.x] = s[0];
}

/* the same with the barrier inside the tree removed: a step may read a partial sum before
 * the previous step added to it */
__global__ void k_block_sum_racy_tree(const float *__restrict__ x, float *__restrict__ out,
                                      int n) {
    CU_DYN_SMEM(float, s);
    const int tid = (int)threadIdx.x;
    float v = 0.0f;
    for (int i = tid; i < n; i += (int)blockDim.x) v += x[(size_t)blockIdx.x * n + i];
    s[tid] = v;
    __syncthreads();
    for (int k = (int)blockDim.x / 2; k > 0; k >>= 1)
        if (tid < k) s[tid] += s[tid + k];
    if (tid == 0) out[blockIdx.x] = s[0];
}

typedef void (*sum_kernel)(const float *, float *, int);

/* 0: exact; 1: some block's sum differs (or the launch failed) */
static int run_block_sum(sum_kernel k, const char *name, int n_blocks, int threads, int n) {
    std::vector<float> x((size_t)n_blocks * n), out((size_t)n_blocks, -12345.0f);
    /* small integers: every summation order gives the exact sum */
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)((int)(i * 7 % 13) - 6);
    const float *xp = x.data();
    float *op = out.data();
    int err;
    if (k == k_block_sum) {
        CU_LAUNCH(k_block_sum, n_blocks, threads, threads * sizeof(float), 0, xp, op, n);
        err = CU_LAST_ERROR();
    } else if (k == k_block_sum_racy_store) {
        CU_LAUNCH(k_block_sum_racy_store, n_blocks, threads, threads * sizeof(float), 0, xp, op, n);
        err = CU_LAST_ERROR();
    } else {
        CU_LAUNCH(k_block_sum_racy_tree, n_blocks, threads, threads * sizeof(float), 0, xp, op, n);
        err = CU_LAST_ERROR();
    }
    if (err) {
        fprintf(stderr, "%s: launch error %d\n", name, err);
        return 1;
    }
    int bad = 0;
    for (int b = 0; b < n_blocks; b++) {
        double want = 0;
        for (int i = 0; i < n; i++) want += x[(size_t)b * n + i];
        if (out[(size_t)b] != (float)want) bad++;
    }
    return bad != 0;
}

static void test_block_reduce(void) {
    for (int o = 0; o < cu_shim_n_orders(); o++) {
        cu_shim_set_order(o);
        CHECK(run_block_sum(k_block_sum, "k_block_sum", 5, 256, 1000) == 0,
              "k_block_sum: wrong sum");
        CHECK(run_block_sum(k_block_sum, "k_block_sum", 3, 64, 64) == 0,
              "k_block_sum (64 threads): wrong sum");
    }
    /* the races: some order must expose each */
    const struct { sum_kernel k; const char *name; } racy[] = {
        {k_block_sum_racy_store, "k_block_sum_racy_store"},
        {k_block_sum_racy_tree, "k_block_sum_racy_tree"}};
    for (const auto &r : racy) {
        int caught = 0;
        char which[64] = "";
        for (int o = 0; o < cu_shim_n_orders(); o++) {
            cu_shim_set_order(o);
            if (run_block_sum(r.k, r.name, 5, 256, 1000)) {
                caught++;
                strcat(which, " ");
                strcat(which, cu_shim_order_name(o));
            }
        }
        printf("%s (a __syncthreads removed): wrong under %d of %d orders:%s\n", r.name, caught,
               cu_shim_n_orders(), which);
        CHECK(caught >= 1, "%s: the missing __syncthreads went unnoticed under every order",
              r.name);
    }
}

/* ---- barrier misuse ---------------------------------------------------------------------- */

__global__ void k_bar_divergent(int *x) {
    if (threadIdx.x < 16) __syncthreads();
    x[threadIdx.x] = 1;
}
__global__ void k_bar_after_return(int *x, int n) {
    if ((int)threadIdx.x >= n) return;
    x[threadIdx.x] = 1;
    __syncthreads();
    x[threadIdx.x] = 2;
}
__global__ void k_bar_two_sites(int *x) {
    if (threadIdx.x & 1) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    x[threadIdx.x] = 1;
}
__global__ void k_bar_count(int *out) {
    const int c = __syncthreads_count(threadIdx.x % 3 == 0);
    const int a = __syncthreads_and(threadIdx.x < 1000);
    const int o = __syncthreads_or(threadIdx.x == 77);
    const int none = __syncthreads_or(0);
    if (threadIdx.x == 5) { out[0] = c; out[1] = a; out[2] = o; out[3] = none; }
}

static void test_barrier_errors(void) {
    std::vector<int> x(256, 0);
    int *xp = x.data();
    for (int o = 0; o < cu_shim_n_orders(); o++) {
        cu_shim_set_order(o);
        expect_msg("divergent __syncthreads");
        CU_LAUNCH(k_bar_divergent, 2, 64, 0, 0, xp);
        expect_error(CU_LAST_ERROR(), cudaErrorLaunchFailure, "__syncthreads", "k_bar_divergent");
        expect_msg("__syncthreads after a return");
        CU_LAUNCH(k_bar_after_return, 1, 64, 0, 0, xp, 40);
        expect_error(CU_LAST_ERROR(), cudaErrorLaunchFailure, "returned", "k_bar_after_return");
        /* ... while with every thread present the same kernel is fine */
        CU_LAUNCH(k_bar_after_return, 1, 64, 0, 0, xp, 64);
        CHECK(CU_LAST_ERROR() == 0 && x[0] == 2 && x[63] == 2, "k_bar_after_return(n = 64)");
        expect_msg("__syncthreads at two call sites");
        CU_LAUNCH(k_bar_two_sites, 1, 32, 0, 0, xp);
        expect_error(CU_LAST_ERROR(), cudaErrorLaunchFailure, "different barriers",
                     "k_bar_two_sites");
        /* a launch after the failed ones runs normally (fibers reused) */
        CHECK(run_block_sum(k_block_sum, "k_block_sum", 2, 128, 300) == 0,
              "k_block_sum after failed launches");
        int r[4] = {-1, -1, -1, -1};
        int *rp = r;
        CU_LAUNCH(k_bar_count, 1, 200, 0, 0, rp);
        CHECK(CU_LAST_ERROR() == 0 && r[0] == 67 && r[1] == 1 && r[2] == 1 && r[3] == 0,
              "__syncthreads_count/and/or: %d %d %d %d, expected 67 1 1 0", r[0], r[1], r[2], r[3]);
    }
}

/* ---- warp primitives --------------------------------------------------------------------- */

/* per thread: out[0..7][gid] = xor-sum, down-sum (lane 0), up-scan, broadcast lane 5,
 * broadcast lane 3 of each 16, xor-sum within 8, float xor-sum, down by 16 */
__global__ void k_warp(const int *x, int *out, float *fout, int nt) {
    const int gid = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    const int lane = (int)threadIdx.x % 32;
    const unsigned full = 0xffffffffu;
    const int v = x[gid];
    int a = v;
    for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(full, a, off);
    int b = v;
    for (int off = 16; off > 0; off >>= 1) b += __shfl_down_sync(full, b, off);
    int s = v;
    for (int d = 1; d < 32; d <<= 1) {
        const int t = __shfl_up_sync(full, s, d);
        if (lane >= d) s += t;
    }
    int c8 = v;
    for (int off = 4; off > 0; off >>= 1) c8 += __shfl_xor_sync(full, c8, off, 8);
    float f = (float)v * 0.5f;
    for (int off = 16; off > 0; off >>= 1) f += __shfl_xor_sync(full, f, off);
    out[0 * nt + gid] = a;
    out[1 * nt + gid] = lane == 0 ? b : 0;
    out[2 * nt + gid] = s;
    out[3 * nt + gid] = __shfl_sync(full, v, 5);
    out[4 * nt + gid] = __shfl_sync(full, v, 3, 16);
    out[5 * nt + gid] = c8;
    out[6 * nt + gid] = __shfl_down_sync(full, v, 16);
    fout[gid] = f;
}

__global__ void k_vote(int *out) {
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    const unsigned full = 0xffffffffu;
    const unsigned bal = __ballot_sync(full, lane % 3 == 0);
    const int any = __any_sync(full, lane == 31 && warp == 1);
    const int all = __all_sync(full, lane < 32);
    const int all2 = __all_sync(full, lane != 7);
    const unsigned m = __match_any_sync(full, lane / 4);
    const int sum = __reduce_add_sync(full, lane);
    const unsigned half = __ballot_sync(0x0000ffffu << (16 * (lane / 16)), lane & 1);
    __syncwarp();
    if (lane == 9) {
        out[warp * 7 + 0] = (int)bal;
        out[warp * 7 + 1] = any;
        out[warp * 7 + 2] = all;
        out[warp * 7 + 3] = all2;
        out[warp * 7 + 4] = (int)m;
        out[warp * 7 + 5] = sum;
        out[warp * 7 + 6] = (int)half;
    }
}

/* the second warp of a 48-thread block has 16 lanes: mask 0xffff is right, full is not */
__global__ void k_partial_warp(int *out, unsigned mask2) {
    const int lane = (int)threadIdx.x % 32;
    const unsigned mask = threadIdx.x < 32 ? 0xffffffffu : mask2;
    int v = lane;
    for (int off = 8; off > 0; off >>= 1) v += __shfl_xor_sync(mask, v, off);
    out[threadIdx.x] = v;
}
__global__ void k_shfl_divergent(int *out) {
    int v = (int)threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}
__global__ void k_shfl_not_self(int *out) {
    out[threadIdx.x] = __shfl_sync(0x0000ffffu, (int)threadIdx.x, 0);
}
__global__ void k_shfl_vs_barrier(int *out) {
    if (threadIdx.x == 0) __syncthreads();
    else __syncwarp();
    out[threadIdx.x] = 1;
}
__global__ void k_shfl_outside_mask(int *out) {
    /* lanes 0..15 read lane (lane + 16), which is not in their mask: poison */
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, 7, (int)threadIdx.x + 16, 32);
}

static void test_warp(void) {
    const int nb = 3, bd = 64, nt = nb * bd;
    std::vector<int> x((size_t)nt), out((size_t)nt * 7);
    std::vector<float> fout((size_t)nt);
    for (int i = 0; i < nt; i++) x[(size_t)i] = (i * 37) % 101 - 50;
    for (int o = 0; o < cu_shim_n_orders(); o++) {
        cu_shim_set_order(o);
        std::fill(out.begin(), out.end(), -999);
        const int *xp = x.data();
        int *op = out.data();
        float *fp = fout.data();
        CU_LAUNCH(k_warp, nb, bd, 0, 0, xp, op, fp, nt);
        CHECK(CU_LAST_ERROR() == 0, "k_warp: launch error");
        int bad[8] = {0};
        for (int g = 0; g < nt; g++) {
            const int lane = g % 32, w0 = g - lane;
            int sum = 0, pre = 0, s8 = 0;
            for (int j = 0; j < 32; j++) sum += x[(size_t)(w0 + j)];
            for (int j = 0; j <= lane; j++) pre += x[(size_t)(w0 + j)];
            for (int j = lane & ~7; j < (lane & ~7) + 8; j++) s8 += x[(size_t)(w0 + j)];
            bad[0] += out[(size_t)g] != sum;
            bad[1] += out[(size_t)(nt + g)] != (lane == 0 ? sum : 0);
            bad[2] += out[(size_t)(2 * nt + g)] != pre;
            bad[3] += out[(size_t)(3 * nt + g)] != x[(size_t)(w0 + 5)];
            bad[4] += out[(size_t)(4 * nt + g)] != x[(size_t)(w0 + (lane & 16) + 3)];
            bad[5] += out[(size_t)(5 * nt + g)] != s8;
            bad[6] += out[(size_t)(6 * nt + g)] != x[(size_t)(lane < 16 ? g + 16 : g)];
            bad[7] += fout[(size_t)g] != (float)sum * 0.5f;
        }
        const char *what[8] = {"__shfl_xor_sync sum", "__shfl_down_sync sum", "__shfl_up_sync scan",
                               "__shfl_sync broadcast", "__shfl_sync width 16",
                               "__shfl_xor_sync width 8", "__shfl_down_sync by 16 (own value past the end)",
                               "__shfl_xor_sync float sum"};
        for (int i = 0; i < 8; i++) CHECK(bad[i] == 0, "%s: %d wrong lanes", what[i], bad[i]);

        int v[14];
        for (int &e : v) e = -1;
        int *vp = v;
        CU_LAUNCH(k_vote, 1, 64, 0, 0, vp);
        CHECK(CU_LAST_ERROR() == 0, "k_vote: launch error");
        for (int w = 0; w < 2; w++) {
            const int *r = v + 7 * w;
            CHECK((unsigned)r[0] == 0x49249249u, "ballot: 0x%08x", (unsigned)r[0]);
            CHECK(r[1] == (w == 1), "any (warp %d): %d", w, r[1]);
            CHECK(r[2] == 1 && r[3] == 0, "all: %d %d", r[2], r[3]);
            CHECK((unsigned)r[4] == 0x00000f00u, "match_any (lane 9): 0x%08x", (unsigned)r[4]);
            CHECK(r[5] == 496, "reduce_add: %d", r[5]);
            CHECK((unsigned)r[6] == 0x0000aaaau, "ballot of half a warp: 0x%08x", (unsigned)r[6]);
        }

        std::vector<int> p(64, -1);
        int *pp = p.data();
        CU_LAUNCH(k_partial_warp, 1, 48, 0, 0, pp, 0x0000ffffu);
        CHECK(CU_LAST_ERROR() == 0 && p[0] == 120 && p[16] == 376 && p[32] == 120 && p[47] == 120,
              "partial warp with mask 0xffff: %d %d %d %d", p[0], p[16], p[32], p[47]);
        expect_msg("mask names lanes past the end of the block");
        CU_LAUNCH(k_partial_warp, 1, 48, 0, 0, pp, 0xffffffffu);
        expect_error(CU_LAST_ERROR(), cudaErrorLaunchFailure, "do not exist", "k_partial_warp");
        expect_msg("shuffle in a divergent branch with the full mask");
        CU_LAUNCH(k_shfl_divergent, 1, 32, 0, 0, pp);
        expect_error(CU_LAST_ERROR(), cudaErrorLaunchFailure, "__shfl_xor_sync",
                     "k_shfl_divergent");
        expect_msg("mask without the calling lane");
        CU_LAUNCH(k_shfl_not_self, 1, 32, 0, 0, pp);
        expect_error(CU_LAST_ERROR(), cudaErrorLaunchFailure, "does not name it", "k_shfl_not_self");
        expect_msg("__syncwarp while a lane waits at __syncthreads");
        CU_LAUNCH(k_shfl_vs_barrier, 1, 32, 0, 0, pp);
        expect_error(CU_LAST_ERROR(), cudaErrorLaunchFailure, "__syncthreads", "k_shfl_vs_barrier");
        CU_LAUNCH(k_shfl_outside_mask, 1, 32, 0, 0, pp);
        CHECK(CU_LAST_ERROR() == 0 && p[0] == -1 && p[15] == -1,
              "a shuffle from outside the mask reads poison (-1): %d %d", p[0], p[15]);
    }
}

/* ---- atomics ----------------------------------------------------------------------------- */

struct Counters {
    int n;
    unsigned int usum;
    unsigned long long big;
    float fsum;
    int imax;
    unsigned int umin;
    unsigned int bits_or, bits_and;
    int cas_max;
    int exch_seen;
    unsigned int inc;
};

__global__ void k_atomics(Counters *c) {
    const int gid = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    atomicAdd(&c->n, 1);
    atomicAdd(&c->usum, (unsigned int)gid);
    atomicAdd(&c->big, 1ull << 33);
    atomicAdd(&c->fsum, 0.5f);
    atomicMax(&c->imax, gid * 3 - 100);
    atomicMin(&c->umin, (unsigned int)gid + 7u);
    atomicOr(&c->bits_or, 1u << (gid % 32));
    atomicAnd(&c->bits_and, ~(1u << (gid % 31)));
    /* a CAS loop (how a float max or a packed update is written) */
    int old = c->cas_max, assumed;
    const int want = (gid * 7919) % 3001;
    do {
        assumed = old;
        old = atomicCAS(&c->cas_max, assumed, max(assumed, want));
    } while (assumed != old);
    if (atomicExch(&c->exch_seen, gid) == -1) atomicAdd(&c->n, 1000000);
    atomicInc(&c->inc, 9u);
}

/* each thread's ticket: the order in which the threads' atomics ran */
__global__ void k_ticket(int *counter, int *ticket) {
    ticket[threadIdx.x] = atomicAdd(counter, 1);
}
/* how many increments happened between a thread's plain read and its own atomic's return */
__global__ void k_gap(int *counter, int *gap) {
    const int before = *(volatile int *)counter;
    atomicAdd(counter, 1);
    gap[threadIdx.x] = *(volatile int *)counter - before;
}

static void test_atomics(void) {
    const int nb = 37, bd = 96, nt = nb * bd;
    for (int o = 0; o < cu_shim_n_orders(); o++) {
        cu_shim_set_order(o);
        Counters c = {0, 0, 0, 0.0f, -1000, 0xffffffffu, 0, 0xffffffffu, 0, -1, 0};
        Counters *cp = &c;
        CU_LAUNCH(k_atomics, nb, bd, 0, 0, cp);
        CHECK(CU_LAST_ERROR() == 0, "k_atomics: launch error");
        int cas_want = 0;
        for (int g = 0; g < nt; g++) cas_want = max(cas_want, (g * 7919) % 3001);
        CHECK(c.n == nt + 1000000, "atomicAdd int: %d, expected %d", c.n, nt + 1000000);
        CHECK(c.usum == (unsigned)(nt * (nt - 1) / 2), "atomicAdd unsigned: %u", c.usum);
        CHECK(c.big == (unsigned long long)nt << 33, "atomicAdd ull: %llu", c.big);
        CHECK(c.fsum == 0.5f * nt, "atomicAdd float: %g, expected %g", c.fsum, 0.5 * nt);
        CHECK(c.imax == (nt - 1) * 3 - 100, "atomicMax: %d", c.imax);
        CHECK(c.umin == 7u, "atomicMin: %u", c.umin);
        CHECK(c.bits_or == 0xffffffffu && c.bits_and == 0x80000000u, "atomicOr/And: 0x%x 0x%x",
              c.bits_or, c.bits_and);
        CHECK(c.cas_max == cas_want, "atomicCAS max loop: %d, expected %d", c.cas_max, cas_want);
        CHECK(c.exch_seen >= 0 && c.exch_seen < nt, "atomicExch: %d", c.exch_seen);
        CHECK(c.inc == (unsigned)(nt % 10), "atomicInc wraps at 9: %u, expected %d", c.inc, nt % 10);

        const int n = 64;
        int counter = 0;
        std::vector<int> t((size_t)n, -1), gap((size_t)n, -1);
        int *cnt = &counter, *tp = t.data(), *gp = gap.data();
        CU_LAUNCH(k_ticket, 1, n, 0, 0, cnt, tp);
        CHECK(CU_LAST_ERROR() == 0, "k_ticket: launch error");
        std::vector<int> seen((size_t)n, 0);
        int fwd = 1, rev = 1, perm = 1;
        for (int i = 0; i < n; i++) {
            if (t[(size_t)i] < 0 || t[(size_t)i] >= n || seen[(size_t)t[(size_t)i]]++) perm = 0;
            fwd &= t[(size_t)i] == i;
            rev &= t[(size_t)i] == n - 1 - i;
        }
        CHECK(perm, "atomicAdd tickets are not a permutation of 0..%d", n - 1);
        if (o == CU_SHIM_FORWARD) CHECK(fwd, "forward order: thread i must get ticket i");
        if (o == CU_SHIM_REVERSE) CHECK(rev, "reverse order: thread i must get ticket n-1-i");
        if (o == CU_SHIM_RANDOM) CHECK(!fwd && !rev, "random order ran the threads in sequence");

        counter = 0;
        CU_LAUNCH(k_gap, 1, n, 0, 0, cnt, gp);
        int max_gap = 0;
        for (int g : gap) max_gap = max(max_gap, g);
        CHECK(CU_LAST_ERROR() == 0 && counter == n && max_gap > 1,
              "atomics do not yield: the largest gap between a read and the atomic is %d", max_gap);
    }
}

/* ---- 2-D and 3-D launches ---------------------------------------------------------------- */

__global__ void k_ids(unsigned int *ids, int *hits) {
    const unsigned int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned int g = b * (blockDim.x * blockDim.y * blockDim.z) + t;
    ids[2 * g] = threadIdx.x | threadIdx.y << 8 | threadIdx.z << 16;
    ids[2 * g + 1] = blockIdx.x | blockIdx.y << 8 | blockIdx.z << 16;
    atomicAdd(&hits[g], 1);
}

static void test_dims(void) {
    const dim3 grids[3] = {dim3(5), dim3(3, 4), dim3(3, 2, 2)};
    const dim3 blocks[3] = {dim3(70), dim3(8, 6), dim3(4, 3, 5)};
    for (int o = 0; o < cu_shim_n_orders(); o++) {
        cu_shim_set_order(o);
        for (int c = 0; c < 3; c++) {
            const dim3 gr = grids[c], bl = blocks[c];
            const unsigned nthr = bl.x * bl.y * bl.z, n = gr.x * gr.y * gr.z * nthr;
            std::vector<unsigned int> ids(2 * (size_t)n, 0xffffffffu);
            std::vector<int> hits((size_t)n, 0);
            unsigned int *ip = ids.data();
            int *hp = hits.data();
            CU_LAUNCH(k_ids, gr, bl, 0, 0, ip, hp);
            CHECK(CU_LAST_ERROR() == 0, "k_ids: launch error");
            int bad = 0;
            for (unsigned g = 0; g < n; g++) {
                const unsigned b = g / nthr, t = g % nthr;
                const unsigned tx = t % bl.x, ty = t / bl.x % bl.y, tz = t / (bl.x * bl.y);
                const unsigned bx = b % gr.x, by = b / gr.x % gr.y, bz = b / (gr.x * gr.y);
                bad += hits[g] != 1 || ids[2 * g] != (tx | ty << 8 | tz << 16) ||
                       ids[2 * g + 1] != (bx | by << 8 | bz << 16);
            }
            CHECK(bad == 0, "grid (%u,%u,%u) block (%u,%u,%u): %d threads with wrong indices",
                  gr.x, gr.y, gr.z, bl.x, bl.y, bl.z, bad);
        }
    }
}

/* ---- dynamic shared memory and launch configuration -------------------------------------- */

/* thread 0 reads the block's shared memory before anyone writes it, then fills it with 0 */
__global__ void k_smem_probe(float *f, int *i, unsigned long long *bytes) {
    CU_DYN_SMEM(unsigned char, s);
    if (threadIdx.x == 0) {
        float fv;
        int iv;
        memcpy(&fv, s, 4);
        memcpy(&iv, s + 4, 4);
        f[blockIdx.x] = fv;
        i[blockIdx.x] = iv;
        bytes[blockIdx.x] = cu_shim_dyn_smem_bytes();
        memset(s, 0, cu_shim_dyn_smem_bytes());
    }
    __syncthreads();
}
__global__ void k_count(int *n) { atomicAdd(n, 1); }
/* waits for a flag that only a later block sets: blocks run one after another here, so this
 * never ends; the shim must stop it (on a GPU it works only if both blocks are resident) */
__global__ void k_wait_other_block(int *flag) {
    if (blockIdx.x == 1) {
        atomicExch(flag, 1);
        return;
    }
    while (atomicAdd(flag, 0) == 0) {
    }
}
__global__ void k_nested(int *n) {
    if (threadIdx.x == 0) CU_LAUNCH(k_count, 1, 1, 0, 0, n);
}

static void test_smem_and_config(void) {
    for (int o = 0; o < cu_shim_n_orders(); o++) {
        cu_shim_set_order(o);
        float f[3] = {0, 0, 0};
        int iv[3] = {0, 0, 0};
        unsigned long long by[3] = {0, 0, 0};
        float *fp = f;
        int *ip = iv;
        unsigned long long *bp = by;
        CU_LAUNCH(k_smem_probe, 3, 32, 1000, 0, fp, ip, bp);
        CHECK(CU_LAST_ERROR() == 0, "k_smem_probe: launch error");
        for (int b = 0; b < 3; b++)
            CHECK(f[b] != f[b] && iv[b] == -1 && by[b] == 1000,
                  "block %d: shared memory not poisoned before the block (float %g, int %d) or "
                  "not the launch's size (%llu)", b, f[b], iv[b], by[b]);
    }
    int n = 0;
    int *np = &n;
    struct { cu_shim_dim g, b; size_t smem; cudaError_t want; const char *what; } bad[] = {
        {cu_shim_dim(1), cu_shim_dim(1025), 0, cudaErrorInvalidConfiguration, "1025 threads"},
        {cu_shim_dim(1), cu_shim_dim(dim3(32, 32, 2)), 0, cudaErrorInvalidConfiguration, "2048 threads"},
        {cu_shim_dim(1), cu_shim_dim(dim3(1, 1, 65)), 0, cudaErrorInvalidConfiguration, "block z 65"},
        {cu_shim_dim(0), cu_shim_dim(32), 0, cudaErrorInvalidConfiguration, "grid 0"},
        {cu_shim_dim(dim3(4, 0)), cu_shim_dim(32), 0, cudaErrorInvalidConfiguration, "grid y 0"},
        {cu_shim_dim(4), cu_shim_dim(dim3(32, 0)), 0, cudaErrorInvalidConfiguration, "block y 0"},
        {cu_shim_dim(-3), cu_shim_dim(32), 0, cudaErrorInvalidConfiguration, "grid -3"},
        {cu_shim_dim(1ll << 33), cu_shim_dim(32), 0, cudaErrorInvalidConfiguration, "grid 2^33"},
        {cu_shim_dim(dim3(1, 65536)), cu_shim_dim(32), 0, cudaErrorInvalidConfiguration, "grid y 65536"},
        {cu_shim_dim(1), cu_shim_dim(32), 228 * 1024, cudaErrorInvalidValue, "228 KiB smem"},
        {cu_shim_dim(1), cu_shim_dim(32), (size_t)-4, cudaErrorInvalidValue, "smem -4"},
    };
    for (const auto &c : bad) {
        expect_msg(c.what);
        CU_LAUNCH(k_count, c.g, c.b, c.smem, 0, np);
        const int e = CU_LAST_ERROR();
        CHECK(e == (int)c.want, "%s: error %d, expected %d", c.what, e, (int)c.want);
    }
    CHECK(n == 0, "a refused launch ran %d threads", n);
    /* over 48 KiB needs the opt-in, named as the launch names the kernel */
    expect_msg("64 KiB without cudaFuncSetAttribute");
    CU_LAUNCH(k_count, 1, 32, 64 * 1024, 0, np);
    expect_error(CU_LAST_ERROR(), cudaErrorInvalidValue, "cudaFuncSetAttribute", "64 KiB smem");
    CHECK(cudaFuncSetAttribute(k_count, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) ==
              cudaSuccess, "cudaFuncSetAttribute(64 KiB)");
    CHECK(cudaFuncSetAttribute(k_count, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) ==
              cudaErrorInvalidValue, "cudaFuncSetAttribute(300 KiB) must be refused");
    (void)cudaGetLastError();
    CU_LAUNCH(k_count, 1, 32, 64 * 1024, 0, np);
    CHECK(CU_LAST_ERROR() == 0 && n == 32, "64 KiB after cudaFuncSetAttribute: n = %d", n);
    CU_LAUNCH((k_count), 1, 32, 60 * 1024, 0, np);
    CHECK(CU_LAST_ERROR() == 0 && n == 64, "(k_count) names the same kernel: n = %d", n);
    expect_msg("a launch from inside a kernel");
    CU_LAUNCH(k_nested, 1, 4, 0, 0, np);
    expect_error(CU_LAST_ERROR(), cudaErrorNotSupported, "inside a kernel", "k_nested");
    CHECK(n == 64, "the nested launch ran: n = %d", n);
    cu_shim_set_order(CU_SHIM_FORWARD);
    int flag = 0;
    int *flp = &flag;
    expect_msg("a block waiting for a later block");
    CU_LAUNCH(k_wait_other_block, 2, 1, 0, 0, flp);
    expect_error(CU_LAST_ERROR(), cudaErrorLaunchFailure, "another block", "k_wait_other_block");
}

/* ---- __dp4a ------------------------------------------------------------------------------ */

static void test_dp4a(void) {
    unsigned long long s = 12345;
    int bad = 0;
    for (int it = 0; it < 20000; it++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const unsigned a = (unsigned)(s >> 32), b = (unsigned)s;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const int c = (int)(s >> 40) - (1 << 23);
        int8_t sa[4], sb[4];
        uint8_t ua[4], ub[4];
        memcpy(sa, &a, 4); memcpy(sb, &b, 4); memcpy(ua, &a, 4); memcpy(ub, &b, 4);
        long long ws = c, wu = (unsigned)c;
        for (int k = 0; k < 4; k++) { ws += sa[k] * sb[k]; wu += ua[k] * ub[k]; }
        const char4 ca = make_char4(sa[0], sa[1], sa[2], sa[3]), cb = make_char4(sb[0], sb[1], sb[2], sb[3]);
        const uchar4 xa = make_uchar4(ua[0], ua[1], ua[2], ua[3]), xb = make_uchar4(ub[0], ub[1], ub[2], ub[3]);
        bad += __dp4a((int)a, (int)b, c) != (int)ws;
        bad += __dp4a(a, b, (unsigned)c) != (unsigned)wu;
        bad += __dp4a(ca, cb, c) != (int)ws;
        bad += __dp4a(xa, xb, (unsigned)c) != (unsigned)wu;
    }
    CHECK(bad == 0, "__dp4a: %d wrong results of 80000", bad);
    /* fixed cases: bytes 0x80 are -128 signed, 128 unsigned */
    CHECK(__dp4a((int)0x80808080u, (int)0x80808080u, 1) == 4 * 16384 + 1, "__dp4a(-128s)");
    CHECK(__dp4a(0x80808080u, 0x80808080u, 1u) == 4u * 16384u + 1u, "__dp4a(128u)");
    CHECK(__dp4a((int)0x7f80ff01u, (int)0x01020304, 10) == 127 * 1 - 128 * 2 - 1 * 3 + 1 * 4 + 10,
          "__dp4a mixed bytes");
    CHECK(__dp4a(0x7fffffff, 0x01010101, 0x7fffffff) == (int)(0x7fffffffu + 127u + 3u * (unsigned)-1),
          "__dp4a wraps");
}

/* ---- f16 / bf16 -------------------------------------------------------------------------- */

static unsigned f2u(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static float u2f(unsigned u) { float f; memcpy(&f, &u, 4); return f; }

static void test_half(void) {
    int bad_h = 0, bad_b = 0;
    for (unsigned u = 0; u < 65536; u++) {
        const unsigned short h = (unsigned short)u;
        const bool hnan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
        const bool bnan = (h & 0x7f80u) == 0x7f80u && (h & 0x7fu);
        const unsigned short rh = __half_as_ushort(__float2half_rn(__half2float(__ushort_as_half(h))));
        const unsigned short rb =
            __bfloat16_as_ushort(__float2bfloat16_rn(__bfloat162float(__ushort_as_bfloat16(h))));
        bad_h += rh != (hnan ? 0x7fffu : h);
        bad_b += rb != (bnan ? 0x7fffu : h);
        /* bf16 -> float is the upper half of the float */
        bad_b += !bnan && f2u(__bfloat162float(__ushort_as_bfloat16(h))) != u << 16;
    }
    CHECK(bad_h == 0, "f16 round trip: %d of 65536 patterns wrong", bad_h);
    CHECK(bad_b == 0, "bf16 round trip: %d of 65536 patterns wrong", bad_b);
    const struct { float f; unsigned short h; } hc[] = {
        {1.0f, 0x3c00}, {-2.0f, 0xc000}, {65504.0f, 0x7bff}, {65519.0f, 0x7bff},
        {65520.0f, 0x7c00}, {1e10f, 0x7c00}, {-1e10f, 0xfc00},
        {1.0f + 1.0f / 2048, 0x3c00},          /* tie: to even (down) */
        {1.0f + 3.0f / 2048, 0x3c02},          /* tie: to even (up) */
        {1.0f + 1.0f / 2048 + 1.0f / 65536, 0x3c01}, /* above the tie */
        {0x1p-24f, 0x0001},                    /* smallest subnormal */
        {0x1p-25f, 0x0000},                    /* half of it: tie to even (0) */
        {0x1.8p-24f, 0x0002},                  /* 1.5 x smallest: tie to even (2) */
        {0x1p-14f, 0x0400},                    /* smallest normal */
        {-0.0f, 0x8000},
    };
    for (const auto &c : hc)
        CHECK(__half_as_ushort(__float2half_rn(c.f)) == c.h && __half_as_ushort(__float2half(c.f)) == c.h,
              "__float2half_rn(%.9g) = 0x%04x, expected 0x%04x", c.f,
              __half_as_ushort(__float2half_rn(c.f)), c.h);
    const struct { unsigned f; unsigned short b; } bc[] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, /* tie: to even (down) */
        {0x3f818000u, 0x3f82},                        /* tie: to even (up) */
        {0x3f808001u, 0x3f81}, {0x7f7fffffu, 0x7f80}, /* max float rounds to inf */
        {0xff800000u, 0xff80}, {0x00000001u, 0x0000}, {0x7fc00001u, 0x7fff},
    };
    for (const auto &c : bc)
        CHECK(__bfloat16_as_ushort(__float2bfloat16_rn(u2f(c.f))) == c.b &&
                  __bfloat16_as_ushort(__float2bfloat16(u2f(c.f))) == c.b,
              "__float2bfloat16_rn(0x%08x) = 0x%04x, expected 0x%04x", c.f,
              __bfloat16_as_ushort(__float2bfloat16_rn(u2f(c.f))), c.b);
    CHECK(__half_as_ushort(__float2half_rn(u2f(0xffc01234u))) == 0x7fff, "f16 NaN is canonical");
    const __half h = 0.333333f;
    const __nv_bfloat16 b = 3;
    const float2 f2 = __half22float2(__floats2half2_rn(0.5f, -1.25f));
    CHECK((float)h == __half2float(__float2half_rn(0.333333f)) && (float)b == 3.0f &&
              f2.x == 0.5f && f2.y == -1.25f && sizeof(__half2) == 4,
          "__half/__nv_bfloat16 conversions");
}

int main(void) {
    test_block_reduce();
    test_barrier_errors();
    test_warp();
    test_atomics();
    test_dims();
    test_smem_and_config();
    test_dp4a();
    test_half();
    printf("test_shim: %d checks, %d failed, %llu fiber switches\n", n_check, n_fail,
           cu_shim_switches());
    return n_fail ? 1 : 0;
}
