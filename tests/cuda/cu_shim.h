/* tests/cuda/cu_shim.h — a test-only CPU execution shim for CUDA kernel source.
 *
 * No GPU runs in CI, yet every kernel of kernels/cuda/ must execute there. A kernel test (a .cc
 * compiled by g++ -std=c++17 -DCU_SHIM, linked with cu_shim.cc) #includes a kernel file; the
 * kernel file includes kernels/cuda/cu_common.h, which includes this header and expands
 *   CU_LAUNCH(k, grid, block, smem, stream, args...) -> cu_shim_launch(grid, block, smem,
 *                                                        stream, [=]() { k(args...); }, "k")
 *   CU_DYN_SMEM(type, name)                         -> type *name = (type *)cu_shim_dyn_smem()
 *   CU_LAST_ERROR()                                 -> (int)cu_shim_last_error()
 * This header supplies the CUDA vocabulary such files use (qualifiers, dim3 and vector types,
 * __half/__nv_bfloat16, math and integer intrinsics, warp primitives, atomics, a few runtime
 * calls); cu_shim.cc runs the launches.
 *
 * Execution model (what a launch does here):
 *   - the blocks of the grid run one after another on the calling thread, to completion;
 *     the order of the blocks and of the threads follows the thread order (below);
 *   - a block runs blockDim.x*y*z fibers (one mmap'd stack each, a guard page below it;
 *     a hand-written x86-64 context switch, ucontext elsewhere), switched cooperatively:
 *     a fiber runs until __syncthreads*, a warp primitive (__shfl*_sync, __ballot_sync, ...,
 *     __syncwarp), an atomic (it yields before and after its read-modify-write), a fence or
 *     __nanosleep, or its end. Each such point is a resume point: the runnable fibers are
 *     resumed in the order's sequence, recomputed at every point;
 *   - __syncthreads: every thread of the block must reach the same __syncthreads call site;
 *     a thread that returns while others wait at a barrier, a barrier reached after some
 *     thread returned, or threads waiting at different call sites stop the launch with
 *     cudaErrorLaunchFailure and a message on stderr naming the kernel, block, threads and
 *     source lines (CUDA leaves all of these undefined: they hang or corrupt on a GPU);
 *   - warp primitives: lane = linear thread id % 32. Every lane named in the mask must call
 *     the same primitive with the same mask (and width); the calling lane must be in its
 *     mask; a lane named in a mask that has exited, never arrives, or does not exist (past
 *     the end of the block) is an error, as above. Stricter than CUDA, which tolerates exited
 *     lanes: take the mask from __ballot_sync before threads leave. A shuffle that reads a
 *     lane outside the mask returns all-ones bits (a NaN for float), as its value is
 *     undefined on a GPU;
 *   - dynamic shared memory: cu_shim_dyn_smem() is one malloc of exactly the launch's bytes
 *     (ASan sees any byte past it), filled with 0xFF before every block: a float reads as NaN,
 *     an int as -1, a __half as NaN, so reading before writing shows;
 *   - launch errors come back through cu_shim_last_error()/cudaGetLastError() (codes as in
 *     CUDA, not sticky): grid/block dimension zero or over the limits (block x,y <= 1024,
 *     z <= 64, x*y*z <= 1024; grid x < 2^31, y,z <= 65535) -> cudaErrorInvalidConfiguration;
 *     dynamic shared memory over CU_SHIM_SMEM_MAX (default 227 KiB, the sm_90 opt-in limit;
 *     sm_80 allows 163 KiB), or over 48 KiB without cudaFuncSetAttribute(kernel,
 *     cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) named as in CU_LAUNCH ->
 *     cudaErrorInvalidValue; a launch from inside a kernel -> cudaErrorNotSupported.
 *
 * Thread orders (cu_shim_set_order, or env CU_SHIM_ORDER; cu_shim_n_orders() of them):
 *   0 forward (thread 0 first, block 0 first), 1 reverse, 2 seeded random (a fresh
 *   permutation of the runnable threads at every resume point and of the blocks at every
 *   launch; env CU_SHIM_SEED, printed with every error). A kernel test runs every kernel under
 *   every order: a missing __syncthreads usually breaks one order but not another.
 *
 * Environment: CU_SHIM_ORDER, CU_SHIM_SEED, CU_SHIM_STACK_KB (fiber stack, default 64; 256
 * under ASan; an overflow faults in the guard page and is named on stderr), CU_SHIM_SMEM_MAX
 * (bytes), CU_SHIM_STATS=1 (print launches, blocks, fibers and switches at exit: a block costs
 * ~0.1 us per thread plus ~0.1 us per thread per barrier or warp operation; size tests by it).
 *
 * For kernel authors: a template kernel whose arguments hold a comma goes in parentheses,
 * CU_LAUNCH((k_gemv<4, 8>), ...); tests/cuda/meson.build builds with -fstack-clash-protection
 * and -Wno-unknown-pragmas (`#pragma unroll` is ignored); a kernel may call printf and assert.
 *
 * What it cannot check: the memory model (visibility between threads without a barrier or
 * fence, blocks running concurrently; a thread waiting for another block's flag is reported
 * after 2^24 yields if it spins through atomics or fences, else it hangs to the test timeout),
 * tensor cores (mma/wmma), cp.async/TMA, inline PTX, cooperative groups, static __shared__
 * (refused at compile time: use CU_DYN_SMEM), code under #ifdef __CUDA_ARCH__ (undefined
 * here), __launch_bounds__ (ignored), registers, occupancy and speed. __expf and the other
 * fast intrinsics are computed as accurately as expf here; on a GPU they are not.
 * Not thread-safe: launch from one thread at a time.
 */
#ifndef SAMPAN_CU_SHIM_H
#define SAMPAN_CU_SHIM_H

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "cu_shim.h needs C++17 (g++ -std=c++17 -DCU_SHIM)"
#endif
#if defined(__CUDACC__)
#error "cu_shim.h is the CPU shim for g++ -DCU_SHIM; nvcc uses the CUDA headers"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <type_traits>

#include "qtypes.h" /* exact f16/bf16 <-> f32 converters */

/* ---- qualifiers -------------------------------------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __constant__
#define __grid_constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
/* __restrict__ is a g++ keyword already. Static shared arrays are refused (cu_common.h): */
#define __shared__ \
    static_assert(false, "cu_shim: no static __shared__ arrays; use CU_DYN_SMEM (cu_common.h)");

/* ---- dimensions and vector types --------------------------------------------------------- */
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

#define CU_SHIM_VEC2(name, T, al)                                                   \
    struct __attribute__((aligned(al))) name { T x, y; };                           \
    static inline name make_##name(T x, T y) { name v; v.x = x; v.y = y; return v; }
#define CU_SHIM_VEC3(name, T)                                                       \
    struct name { T x, y, z; };                                                     \
    static inline name make_##name(T x, T y, T z) { name v; v.x = x; v.y = y; v.z = z; return v; }
#define CU_SHIM_VEC4(name, T, al)                                                   \
    struct __attribute__((aligned(al))) name { T x, y, z, w; };                     \
    static inline name make_##name(T x, T y, T z, T w) {                            \
        name v; v.x = x; v.y = y; v.z = z; v.w = w; return v;                       \
    }
CU_SHIM_VEC2(char2, signed char, 2)
CU_SHIM_VEC4(char4, signed char, 4)
CU_SHIM_VEC2(uchar2, unsigned char, 2)
CU_SHIM_VEC4(uchar4, unsigned char, 4)
CU_SHIM_VEC2(short2, short, 4)
CU_SHIM_VEC4(short4, short, 8)
CU_SHIM_VEC2(ushort2, unsigned short, 4)
CU_SHIM_VEC4(ushort4, unsigned short, 8)
CU_SHIM_VEC2(int2, int, 8)
CU_SHIM_VEC3(int3, int)
CU_SHIM_VEC4(int4, int, 16)
CU_SHIM_VEC2(uint2, unsigned int, 8)
CU_SHIM_VEC4(uint4, unsigned int, 16)
CU_SHIM_VEC2(float2, float, 8)
CU_SHIM_VEC3(float3, float)
CU_SHIM_VEC4(float4, float, 16)
CU_SHIM_VEC2(double2, double, 16)
CU_SHIM_VEC2(longlong2, long long, 16)
CU_SHIM_VEC2(ulonglong2, unsigned long long, 16)
static inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) {
    uint3 v; v.x = x; v.y = y; v.z = z; return v;
}
#undef CU_SHIM_VEC2
#undef CU_SHIM_VEC3
#undef CU_SHIM_VEC4

/* ---- built-in variables (per fiber; read-only) ------------------------------------------- */
struct cu_shim_builtins { uint3 thread_idx, block_idx; dim3 block_dim, grid_dim; };
extern cu_shim_builtins cu_shim_bi;
#define threadIdx (static_cast<const uint3 &>(cu_shim_bi.thread_idx))
#define blockIdx (static_cast<const uint3 &>(cu_shim_bi.block_idx))
#define blockDim (static_cast<const dim3 &>(cu_shim_bi.block_dim))
#define gridDim (static_cast<const dim3 &>(cu_shim_bi.grid_dim))
inline constexpr int warpSize = 32;

/* ---- errors, streams, a few runtime calls ------------------------------------------------ */
enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInsufficientDriver = 35,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchTimeout = 702,
    cudaErrorAssert = 710,
    cudaErrorIllegalInstruction = 715,
    cudaErrorMisalignedAddress = 716,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
    cudaErrorUnknown = 999
};
typedef enum cudaError cudaError_t;
struct CUstream_st;
typedef struct CUstream_st *cudaStream_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4
};
enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9
};
enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1, cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10, cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};

/* the last error (launch configuration or kernel fault), reset to cudaSuccess by reading */
cudaError_t cu_shim_last_error(void);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
/* the message printed for the last error (kept until the next one; "" if none yet) */
const char *cu_shim_last_message(void);

/* "device" memory is malloc'd host memory (ASan-checked); every call is synchronous */
cudaError_t cu_shim_malloc(void **p, size_t bytes);
template <class T> inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cu_shim_malloc(reinterpret_cast<void **>(p), bytes);
}
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = 0);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaGetDevice(int *dev);
/* an H100 (sm_90, 132 SMs, 227 KiB opt-in shared memory) */
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int dev);
/* Recorded by the kernel's text, as CU_LAUNCH names it (spaces, outer parentheses, a leading
 * & and a cast are ignored): cudaFuncSetAttribute(k_attn<64>, attr, bytes) allows
 * CU_LAUNCH(k_attn<64>, ...) up to bytes of dynamic shared memory. */
cudaError_t cu_shim_func_set_attribute(const char *args_text, cudaFuncAttribute attr, int value);
#define cudaFuncSetAttribute(...) cu_shim__fsa(#__VA_ARGS__, __VA_ARGS__)
template <class K>
inline cudaError_t cu_shim__fsa(const char *text, K &&, cudaFuncAttribute attr, int value) {
    return cu_shim_func_set_attribute(text, attr, value);
}

/* ---- launches ---------------------------------------------------------------------------- */
/* A grid or block dimension: a dim3, or an integer checked to fit an unsigned int (a negative
 * or too large block count is an invalid configuration, not a wrapped one). */
struct cu_shim_dim {
    unsigned int x, y, z;
    bool bad;
    cu_shim_dim(dim3 d) : x(d.x), y(d.y), z(d.z), bad(false) {}
    cu_shim_dim(uint3 d) : x(d.x), y(d.y), z(d.z), bad(false) {}
    template <class T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
    cu_shim_dim(T v) : x(static_cast<unsigned int>(v)), y(1), z(1), bad(false) {
        if constexpr (std::is_signed_v<T>) bad = v < 0;
        if (static_cast<unsigned long long>(v) > 0xffffffffull) bad = true;
    }
};
typedef void (*cu_shim_body_fn)(void *ctx);
void cu_shim_launch_impl(const cu_shim_dim &grid, const cu_shim_dim &block, size_t smem_bytes,
                         cudaStream_t stream, cu_shim_body_fn body, void *ctx, const char *name);
/* Runs f() once per thread of the grid (see the top of this file). Synchronous; the stream is
 * ignored. Errors: cu_shim_last_error(). */
template <class F>
inline void cu_shim_launch(cu_shim_dim grid, cu_shim_dim block, size_t smem_bytes,
                           cudaStream_t stream, F f, const char *name = "(lambda)") {
    cu_shim_launch_impl(grid, block, smem_bytes, stream,
                        [](void *c) { (*static_cast<F *>(c))(); }, &f, name);
}
/* this block's dynamic shared memory (NULL outside a kernel) and its size in bytes */
void *cu_shim_dyn_smem(void);
size_t cu_shim_dyn_smem_bytes(void);

/* thread orders */
enum { CU_SHIM_FORWARD = 0, CU_SHIM_REVERSE = 1, CU_SHIM_RANDOM = 2, CU_SHIM_N_ORDERS = 3 };
int cu_shim_n_orders(void);
void cu_shim_set_order(int order); /* 0 <= order < cu_shim_n_orders() */
int cu_shim_get_order(void);
const char *cu_shim_order_name(int order); /* "forward", "reverse", "random" */
void cu_shim_set_seed(unsigned long long seed);
/* fiber switches so far (for tests of the shim itself) */
unsigned long long cu_shim_switches(void);

/* ---- synchronisation --------------------------------------------------------------------- */
/* kind: 0 plain, 1 count, 2 and, 3 or; returns the count of nonzero predicates */
int cu_shim_barrier(int kind, int pred, const char *file, int line);
inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    (void)cu_shim_barrier(0, 0, file, line);
}
inline int __syncthreads_count(int pred, const char *file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
    return cu_shim_barrier(1, pred != 0, file, line);
}
inline int __syncthreads_and(int pred, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
    return cu_shim_barrier(2, pred != 0, file, line) == (int)(blockDim.x * blockDim.y * blockDim.z);
}
inline int __syncthreads_or(int pred, const char *file = __builtin_FILE(),
                            int line = __builtin_LINE()) {
    return cu_shim_barrier(3, pred != 0, file, line) != 0;
}
/* a resume point: other fibers of the block may run (atomics, fences, __nanosleep) */
void cu_shim_yield(void);
inline void __threadfence(void) { cu_shim_yield(); }
inline void __threadfence_block(void) { cu_shim_yield(); }
inline void __threadfence_system(void) { cu_shim_yield(); }
inline void __nanosleep(unsigned int) { cu_shim_yield(); }
long long cu_shim_clock64(void);
inline long long clock64(void) { return cu_shim_clock64(); }

/* ---- warp primitives --------------------------------------------------------------------- */
enum {
    CU_SHIM_W_SHFL, CU_SHIM_W_SHFL_UP, CU_SHIM_W_SHFL_DOWN, CU_SHIM_W_SHFL_XOR,
    CU_SHIM_W_BALLOT, CU_SHIM_W_ANY, CU_SHIM_W_ALL, CU_SHIM_W_SYNCWARP, CU_SHIM_W_MATCH_ANY,
    CU_SHIM_W_MATCH_ALL, CU_SHIM_W_ADD, CU_SHIM_W_MIN_S, CU_SHIM_W_MAX_S, CU_SHIM_W_MIN_U,
    CU_SHIM_W_MAX_U, CU_SHIM_W_AND, CU_SHIM_W_OR, CU_SHIM_W_XOR, CU_SHIM_W_N
};
/* one warp-synchronous operation: val is the lane's value (bits), arg the lane/delta, size the
 * value's bytes; returns the lane's result (bits) */
unsigned long long cu_shim_warp(int op, unsigned int mask, unsigned long long val, int arg,
                                int width, int size, const char *file, int line);
/* lanes of the caller's warp that exist and have not exited */
unsigned int __activemask(void);

template <class T> inline unsigned long long cu_shim__bits(T v) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                  "cu_shim: warp shuffles move trivially copyable values of up to 8 bytes");
    unsigned long long b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}
template <class T> inline T cu_shim__from_bits(unsigned long long b) {
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}
#define CU_SHIM_SITE const char *file = __builtin_FILE(), int line = __builtin_LINE()
template <class T>
inline T __shfl_sync(unsigned int mask, T var, int src_lane, int width = 32, CU_SHIM_SITE) {
    return cu_shim__from_bits<T>(cu_shim_warp(CU_SHIM_W_SHFL, mask, cu_shim__bits(var), src_lane,
                                              width, (int)sizeof(T), file, line));
}
template <class T>
inline T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = 32, CU_SHIM_SITE) {
    return cu_shim__from_bits<T>(cu_shim_warp(CU_SHIM_W_SHFL_UP, mask, cu_shim__bits(var),
                                              (int)delta, width, (int)sizeof(T), file, line));
}
template <class T>
inline T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = 32,
                          CU_SHIM_SITE) {
    return cu_shim__from_bits<T>(cu_shim_warp(CU_SHIM_W_SHFL_DOWN, mask, cu_shim__bits(var),
                                              (int)delta, width, (int)sizeof(T), file, line));
}
template <class T>
inline T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = 32, CU_SHIM_SITE) {
    return cu_shim__from_bits<T>(cu_shim_warp(CU_SHIM_W_SHFL_XOR, mask, cu_shim__bits(var),
                                              lane_mask, width, (int)sizeof(T), file, line));
}
inline unsigned int __ballot_sync(unsigned int mask, int pred, CU_SHIM_SITE) {
    return (unsigned int)cu_shim_warp(CU_SHIM_W_BALLOT, mask, pred != 0, 0, 32, 4, file, line);
}
inline int __any_sync(unsigned int mask, int pred, CU_SHIM_SITE) {
    return (int)cu_shim_warp(CU_SHIM_W_ANY, mask, pred != 0, 0, 32, 4, file, line);
}
inline int __all_sync(unsigned int mask, int pred, CU_SHIM_SITE) {
    return (int)cu_shim_warp(CU_SHIM_W_ALL, mask, pred != 0, 0, 32, 4, file, line);
}
inline void __syncwarp(unsigned int mask = 0xffffffffu, CU_SHIM_SITE) {
    (void)cu_shim_warp(CU_SHIM_W_SYNCWARP, mask, 0, 0, 32, 4, file, line);
}
template <class T> inline unsigned int __match_any_sync(unsigned int mask, T value, CU_SHIM_SITE) {
    return (unsigned int)cu_shim_warp(CU_SHIM_W_MATCH_ANY, mask, cu_shim__bits(value), 0, 32,
                                      (int)sizeof(T), file, line);
}
template <class T>
inline unsigned int __match_all_sync(unsigned int mask, T value, int *pred, CU_SHIM_SITE) {
    unsigned int r = (unsigned int)cu_shim_warp(CU_SHIM_W_MATCH_ALL, mask, cu_shim__bits(value), 0,
                                                32, (int)sizeof(T), file, line);
    *pred = r != 0;
    return r;
}
#define CU_SHIM_REDUCE(name, T, op)                                                          \
    inline T name(unsigned int mask, T value, CU_SHIM_SITE) {                               \
        return (T)cu_shim_warp(op, mask, (unsigned int)value, 0, 32, 4, file, line);         \
    }
CU_SHIM_REDUCE(__reduce_add_sync, unsigned int, CU_SHIM_W_ADD)
CU_SHIM_REDUCE(__reduce_add_sync, int, CU_SHIM_W_ADD)
CU_SHIM_REDUCE(__reduce_min_sync, unsigned int, CU_SHIM_W_MIN_U)
CU_SHIM_REDUCE(__reduce_min_sync, int, CU_SHIM_W_MIN_S)
CU_SHIM_REDUCE(__reduce_max_sync, unsigned int, CU_SHIM_W_MAX_U)
CU_SHIM_REDUCE(__reduce_max_sync, int, CU_SHIM_W_MAX_S)
CU_SHIM_REDUCE(__reduce_and_sync, unsigned int, CU_SHIM_W_AND)
CU_SHIM_REDUCE(__reduce_or_sync, unsigned int, CU_SHIM_W_OR)
CU_SHIM_REDUCE(__reduce_xor_sync, unsigned int, CU_SHIM_W_XOR)
#undef CU_SHIM_REDUCE
#undef CU_SHIM_SITE

/* ---- atomics: a yield, the read-modify-write (atomic: no fiber runs inside it), a yield ---- */
template <class T, class Op> inline T cu_shim__rmw(T *p, Op op) {
    cu_shim_yield();
    T old = *p;
    *p = op(old);
    cu_shim_yield();
    return old;
}
#define CU_SHIM_ATOMIC(name, T, expr)                                                        \
    inline T name(T *p, T v) {                                                               \
        return cu_shim__rmw(p, [v](T o) -> T { (void)o; (void)v; return (expr); });          \
    }
/* integer arithmetic wraps as on the GPU (unsigned arithmetic: no UB for int) */
CU_SHIM_ATOMIC(atomicAdd, int, (int)((unsigned int)o + (unsigned int)v))
CU_SHIM_ATOMIC(atomicAdd, unsigned int, o + v)
CU_SHIM_ATOMIC(atomicAdd, unsigned long long, o + v)
CU_SHIM_ATOMIC(atomicAdd, float, o + v)
CU_SHIM_ATOMIC(atomicAdd, double, o + v)
CU_SHIM_ATOMIC(atomicSub, int, (int)((unsigned int)o - (unsigned int)v))
CU_SHIM_ATOMIC(atomicSub, unsigned int, o - v)
CU_SHIM_ATOMIC(atomicExch, int, v)
CU_SHIM_ATOMIC(atomicExch, unsigned int, v)
CU_SHIM_ATOMIC(atomicExch, unsigned long long, v)
CU_SHIM_ATOMIC(atomicExch, float, v)
CU_SHIM_ATOMIC(atomicMax, int, o > v ? o : v)
CU_SHIM_ATOMIC(atomicMax, unsigned int, o > v ? o : v)
CU_SHIM_ATOMIC(atomicMax, long long, o > v ? o : v)
CU_SHIM_ATOMIC(atomicMax, unsigned long long, o > v ? o : v)
CU_SHIM_ATOMIC(atomicMin, int, o < v ? o : v)
CU_SHIM_ATOMIC(atomicMin, unsigned int, o < v ? o : v)
CU_SHIM_ATOMIC(atomicMin, long long, o < v ? o : v)
CU_SHIM_ATOMIC(atomicMin, unsigned long long, o < v ? o : v)
CU_SHIM_ATOMIC(atomicAnd, int, o & v)
CU_SHIM_ATOMIC(atomicAnd, unsigned int, o & v)
CU_SHIM_ATOMIC(atomicAnd, unsigned long long, o & v)
CU_SHIM_ATOMIC(atomicOr, int, o | v)
CU_SHIM_ATOMIC(atomicOr, unsigned int, o | v)
CU_SHIM_ATOMIC(atomicOr, unsigned long long, o | v)
CU_SHIM_ATOMIC(atomicXor, int, o ^ v)
CU_SHIM_ATOMIC(atomicXor, unsigned int, o ^ v)
CU_SHIM_ATOMIC(atomicXor, unsigned long long, o ^ v)
CU_SHIM_ATOMIC(atomicInc, unsigned int, o >= v ? 0u : o + 1u)
CU_SHIM_ATOMIC(atomicDec, unsigned int, (o == 0u || o > v) ? v : o - 1u)
#undef CU_SHIM_ATOMIC
#define CU_SHIM_CAS(T)                                                                       \
    inline T atomicCAS(T *p, T cmp, T v) {                                                   \
        return cu_shim__rmw(p, [cmp, v](T o) -> T { return o == cmp ? v : o; });             \
    }
CU_SHIM_CAS(int)
CU_SHIM_CAS(unsigned int)
CU_SHIM_CAS(unsigned long long)
CU_SHIM_CAS(unsigned short)
#undef CU_SHIM_CAS
/* block- and system-scope variants: one block runs at a time, so they are the same here */
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicSub_block atomicSub
#define atomicExch_block atomicExch
#define atomicMax_block atomicMax
#define atomicMin_block atomicMin
#define atomicAnd_block atomicAnd
#define atomicOr_block atomicOr
#define atomicXor_block atomicXor
#define atomicCAS_block atomicCAS

/* ---- math: the libm functions as they are; fast intrinsics computed accurately ------------ */
/* glibc declares __expf & co. itself: the intrinsics are renamed to cu_shim_ functions */
static inline float cu_shim_rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float cu_shim_expf(float x) { return expf(x); }
static inline float cu_shim_exp10f(float x) { return powf(10.0f, x); }
static inline float cu_shim_logf(float x) { return logf(x); }
static inline float cu_shim_log2f(float x) { return log2f(x); }
static inline float cu_shim_log10f(float x) { return log10f(x); }
static inline float cu_shim_sinf(float x) { return sinf(x); }
static inline float cu_shim_cosf(float x) { return cosf(x); }
static inline float cu_shim_tanf(float x) { return tanf(x); }
static inline float cu_shim_powf(float x, float y) { return powf(x, y); }
static inline void cu_shim_sincosf(float x, float *s, float *c) { *s = sinf(x); *c = cosf(x); }
static inline float cu_shim_fdividef(float a, float b) { return a / b; }
static inline float cu_shim_saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
static inline float cu_shim_fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float cu_shim_fadd_rn(float a, float b) { return a + b; }
static inline float cu_shim_fsub_rn(float a, float b) { return a - b; }
static inline float cu_shim_fmul_rn(float a, float b) { return a * b; }
static inline float cu_shim_fdiv_rn(float a, float b) { return a / b; }
static inline float cu_shim_frcp_rn(float a) { return 1.0f / a; }
static inline float cu_shim_frsqrt_rn(float a) { return (float)(1.0 / sqrt((double)a)); }
/* sin(pi x), cos(pi x): x reduced exactly to a quarter period, so integers and halves give
 * exact zeros and ones (+0 as IEEE 754 recommends, sinpi(-n) = -0) */
static inline void cu_shim_sincospif(float x, float *s, float *c) {
    const double r = fmod((double)x, 2.0), n = nearbyint(2.0 * r), t = r - 0.5 * n;
    const double st = sin(3.14159265358979323846 * t), ct = cos(3.14159265358979323846 * t);
    double sv, cv;
    switch ((long)n & 3) {
    case 0: sv = st; cv = ct; break;
    case 1: sv = ct; cv = -st; break;
    case 2: sv = -st; cv = -ct; break;
    default: sv = -ct; cv = st; break;
    }
    *s = sv == 0.0 ? copysignf(0.0f, x) : (float)sv;
    *c = cv == 0.0 ? 0.0f : (float)cv;
}
static inline float cu_shim_sinpif(float x) { float s, c; cu_shim_sincospif(x, &s, &c); return s; }
static inline float cu_shim_cospif(float x) { float s, c; cu_shim_sincospif(x, &s, &c); return c; }
static inline float cu_shim_fsqrt_rn(float a) { return sqrtf(a); }
#define rsqrtf cu_shim_rsqrtf
#define __expf cu_shim_expf
#define __exp10f cu_shim_exp10f
#define __logf cu_shim_logf
#define __log2f cu_shim_log2f
#define __log10f cu_shim_log10f
#define __sinf cu_shim_sinf
#define __cosf cu_shim_cosf
#define __tanf cu_shim_tanf
#define __powf cu_shim_powf
#define __sincosf cu_shim_sincosf
#define __fdividef cu_shim_fdividef
#define __saturatef cu_shim_saturatef
#define __fmaf_rn cu_shim_fmaf_rn
#define __fadd_rn cu_shim_fadd_rn
#define __fsub_rn cu_shim_fsub_rn
#define __fmul_rn cu_shim_fmul_rn
#define __fdiv_rn cu_shim_fdiv_rn
#define __frcp_rn cu_shim_frcp_rn
#define __fsqrt_rn cu_shim_fsqrt_rn
#define __frsqrt_rn cu_shim_frsqrt_rn
#define fdividef cu_shim_fdividef
#define sincospif cu_shim_sincospif
#define sinpif cu_shim_sinpif
#define cospif cu_shim_cospif

/* float -> int as the cvt instructions do: rounded (nearest even, toward zero, down, up),
 * saturated to the range, NaN -> 0 */
static inline int cu_shim_f2i_sat(float r) {
    return r != r ? 0 : (r <= -2147483648.0f ? (-2147483647 - 1) : (r >= 2147483648.0f ? 2147483647 : (int)r));
}
static inline unsigned int cu_shim_f2u_sat(float r) {
    return r != r ? 0u : (r <= 0.0f ? 0u : (r >= 4294967296.0f ? 4294967295u : (unsigned int)r));
}
static inline int __float2int_rn(float x) { return cu_shim_f2i_sat(nearbyintf(x)); }
static inline int __float2int_rz(float x) { return cu_shim_f2i_sat(truncf(x)); }
static inline int __float2int_rd(float x) { return cu_shim_f2i_sat(floorf(x)); }
static inline int __float2int_ru(float x) { return cu_shim_f2i_sat(ceilf(x)); }
static inline unsigned int __float2uint_rn(float x) { return cu_shim_f2u_sat(nearbyintf(x)); }
static inline unsigned int __float2uint_rz(float x) { return cu_shim_f2u_sat(truncf(x)); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned int x) { return (float)x; }

/* ---- bit casts and integer intrinsics ---------------------------------------------------- */
static inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
static inline float __uint_as_float(unsigned int x) { float f; memcpy(&f, &x, 4); return f; }
static inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
static inline unsigned int __float_as_uint(float x) { unsigned int i; memcpy(&i, &x, 4); return i; }
static inline double __longlong_as_double(long long x) { double d; memcpy(&d, &x, 8); return d; }
static inline long long __double_as_longlong(double x) { long long i; memcpy(&i, &x, 8); return i; }

static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
static inline int __clzll(long long x) {
    return x == 0 ? 64 : __builtin_clzll((unsigned long long)x);
}
static inline unsigned int __brev(unsigned int x) {
    unsigned int r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
/* byte i of the result is byte (s >> 4i) & 7 of the 8 bytes {y:x} */
static inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned int r = 0;
    for (int i = 0; i < 4; i++) r |= (unsigned int)((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
    return r;
}
static inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned int)((v << (s & 31u)) >> 32);
}
static inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned int)(v >> (s & 31u));
}
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
__extension__ typedef unsigned __int128 cu_shim_u128;
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((cu_shim_u128)a * b) >> 64);
}

/* dp4a: the four byte products of a and b (signed or unsigned bytes) plus c, wrapping */
static inline int __dp4a(int a, int b, int c) {
    unsigned int s = (unsigned int)c;
    for (int i = 0; i < 4; i++)
        s += (unsigned int)((int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i)));
    return (int)s;
}
static inline unsigned int __dp4a(unsigned int a, unsigned int b, unsigned int c) {
    for (int i = 0; i < 4; i++) c += ((a >> (8 * i)) & 0xffu) * ((b >> (8 * i)) & 0xffu);
    return c;
}
static inline int __dp4a(char4 a, char4 b, int c) {
    unsigned int s = (unsigned int)c;
    s += (unsigned int)(a.x * b.x) + (unsigned int)(a.y * b.y) + (unsigned int)(a.z * b.z) +
         (unsigned int)(a.w * b.w);
    return (int)s;
}
static inline unsigned int __dp4a(uchar4 a, uchar4 b, unsigned int c) {
    return c + (unsigned int)(a.x * b.x) + (unsigned int)(a.y * b.y) + (unsigned int)(a.z * b.z) +
           (unsigned int)(a.w * b.w);
}

/* min/max as CUDA overloads them (mixed int/unsigned compares as unsigned) */
#define CU_SHIM_MINMAX(A, B, R)                                                               \
    static inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }                       \
    static inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
CU_SHIM_MINMAX(int, int, int)
CU_SHIM_MINMAX(unsigned int, unsigned int, unsigned int)
CU_SHIM_MINMAX(int, unsigned int, unsigned int)
CU_SHIM_MINMAX(unsigned int, int, unsigned int)
CU_SHIM_MINMAX(long, long, long)
CU_SHIM_MINMAX(unsigned long, unsigned long, unsigned long)
CU_SHIM_MINMAX(long long, long long, long long)
CU_SHIM_MINMAX(unsigned long long, unsigned long long, unsigned long long)
#undef CU_SHIM_MINMAX
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline double min(float a, double b) { return fmin(a, b); }
static inline double max(float a, double b) { return fmax(a, b); }
static inline double min(double a, float b) { return fmin(a, b); }
static inline double max(double a, float b) { return fmax(a, b); }
static inline unsigned int umin(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int umax(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline long long llmin(long long a, long long b) { return a < b ? a : b; }
static inline long long llmax(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

/* cached/streaming loads and stores are plain accesses here */
template <class T> inline T __ldg(const T *p) { return *p; }
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T> inline T __ldca(const T *p) { return *p; }
template <class T> inline T __ldcs(const T *p) { return *p; }
template <class T> inline T __ldlu(const T *p) { return *p; }
template <class T> inline void __stcg(T *p, T v) { *p = v; }
template <class T> inline void __stcs(T *p, T v) { *p = v; }
template <class T> inline void __stwb(T *p, T v) { *p = v; }

/* ---- __half and __nv_bfloat16: 16-bit storage, converted through float ------------------- */
/* round to nearest even, bit-exact with IEEE (kernels/qtypes.h); a NaN becomes the canonical
 * 0x7fff, as the GPU's cvt.rn.f16.f32 / cvt.rn.bf16.f32 do */
static inline unsigned short cu_shim_f2h(float f) {
    return f != f ? (unsigned short)0x7fffu : qt_f32_to_f16(f);
}
static inline unsigned short cu_shim_f2bf(float f) {
    return f != f ? (unsigned short)0x7fffu : qt_f32_to_bf16(f);
}
struct __half_raw { unsigned short x; };
struct __nv_bfloat16_raw { unsigned short x; };
struct __attribute__((aligned(2))) __half {
    unsigned short __x;
    __half() = default;
    template <class T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
    __half(T v) : __x(cu_shim_f2h(static_cast<float>(v))) {}
    __half(__half_raw r) : __x(r.x) {}
    operator __half_raw() const { return __half_raw{__x}; }
    operator float() const { return qt_f16_to_f32(__x); }
};
struct __attribute__((aligned(2))) __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    template <class T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
    __nv_bfloat16(T v) : __x(cu_shim_f2bf(static_cast<float>(v))) {}
    __nv_bfloat16(__nv_bfloat16_raw r) : __x(r.x) {}
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
    operator float() const { return qt_bf16_to_f32(__x); }
};
typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;
struct __attribute__((aligned(4))) __half2 { __half x, y; };
struct __attribute__((aligned(4))) __nv_bfloat162 { __nv_bfloat16 x, y; };
static_assert(sizeof(__half) == 2 && std::is_trivially_copyable_v<__half>, "__half layout");
static_assert(sizeof(__nv_bfloat16) == 2 && std::is_trivially_copyable_v<__nv_bfloat16>,
              "__nv_bfloat16 layout");

static inline __half __ushort_as_half(unsigned short b) { return __half(__half_raw{b}); }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) {
    return __nv_bfloat16(__nv_bfloat16_raw{b});
}
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline __half __float2half(float f) { return __ushort_as_half(cu_shim_f2h(f)); }
static inline __half __float2half_rn(float f) { return __ushort_as_half(cu_shim_f2h(f)); }
static inline float __half2float(__half h) { return qt_f16_to_f32(h.__x); }
static inline __nv_bfloat16 __float2bfloat16(float f) { return __ushort_as_bfloat16(cu_shim_f2bf(f)); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    return __ushort_as_bfloat16(cu_shim_f2bf(f));
}
static inline float __bfloat162float(__nv_bfloat16 h) { return qt_bf16_to_f32(h.__x); }
static inline __half2 __floats2half2_rn(float a, float b) {
    return __half2{__float2half_rn(a), __float2half_rn(b)};
}
static inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
static inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
static inline float2 __half22float2(__half2 h) {
    return make_float2(__half2float(h.x), __half2float(h.y));
}
static inline float __low2float(__half2 h) { return __half2float(h.x); }
static inline float __high2float(__half2 h) { return __half2float(h.y); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
static inline __nv_bfloat162 __float22bfloat162_rn(float2 v) {
    return __floats2bfloat162_rn(v.x, v.y);
}
static inline float2 __bfloat1622float2(__nv_bfloat162 h) {
    return make_float2(__bfloat162float(h.x), __bfloat162float(h.y));
}
static inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
static inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }

#endif
