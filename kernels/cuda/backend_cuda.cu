/* kernels/cuda/backend_cuda.cu — the CUDA backend: the "cuda" table of runtime/backend.h over
 * the kernels of kernels/cuda (cuk.h) and cuBLAS, on one device per process.
 *
 * Memory. `weight` uploads each matrix once, compact (row_stride = the type's row size), in the
 * file's block layout: F32, F16 and BF16 as they are, the quantized types (Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS: cu__types) in their blocks for the
 * decode GEMV. A quantized matrix ALSO gets a BF16 copy (dequantized on the device at
 * load, each element the CPU's to_float value rounded once) for the tensor-core GEMM of
 * prefill: a memory trade-off, 2 bytes per weight on top of 0.56 (Q4_K) to 1.06 (Q8_0), i.e.
 * tinyllama-1.1b Q4_K: 0.6 GiB of blocks + 2.0 GiB of BF16. Copies are made only while the
 * device keeps SAMPAN_CUDA_RESERVE bytes free after them (default a fifth of its memory, for
 * the KV cache and activations); matrices beyond that multiply by GEMV at every batch size.
 * SAMPAN_CUDA_DEQUANT=0 makes no copies (GEMV only for quantized types). kern_weight has no
 * spare field: the backend keeps a table from each weight's device data to its copy.
 * alloc/buf_free are cudaMalloc (zero-filled)/cudaFree; the op scratch (converted activations,
 * attention partials, logits before padding) grows stream-ordered (cudaMallocAsync).
 *
 * Products (matmul, matmul_n, the output head). T <= 8: helper kernels' GEMV (k_gemv.cu) on
 * the blocks, activations quantized as the CPU does. T > 8: cublasGemmEx (cu_blas.cu): F16 and
 * BF16 weights on tensor cores with the activations rounded to F16/BF16, quantized weights
 * through their BF16 copy, f32 accumulation and output; F32 weights in full f32 (no TF32:
 * SAMPAN_CUDA_TF32=1 allows it), so F32 models stay within 1e-3 x std of the references.
 * matmul_n converts the shared input once per activation type.
 *
 * Gemma 3. geglu is k_ew.cu's lookup in om_gelu_fill's table of halves, built in
 * sampan_cuda_new by the host compiler with glibc's tanhf as the CPU builds its own and
 * uploaded once (128 KB), so the GPU's GeGLU is the CPU's bit for bit; scale is x *= s;
 * attention passes backend_attn.window to both kernels (k_attn.cu), which never read a
 * block-table entry wholly before the window.
 *
 * DeepSeek-V2/V3 (MLA and MoE). mla_kv_write is one kernel (k_mla.cu: RMSNorm of the latent
 * and RoPE of the key, k_norm/k_rope's arithmetic, stored in the cache type); mla_attention
 * rotates q's RoPE parts with cuk_rope, copies them after the latent (a strided device copy),
 * takes each head through k_b and v_b with cu__per_head (head by head through cu__matmul: see
 * there why not one batched cuBLAS call) and attends with k_mla.cu's latent kernel. moe_route
 * is k_moe.cu's kernel, its ids and weights downloaded (a host wait: the plan is made on the
 * host); moe_experts uploads the host plan once per call, then per expert gathers its rows,
 * gate/up (matmul_n), SwiGLU, down and a scaled scatter to y; sum_rows and gather_rows are
 * k_ew.cu kernels (gather_rows uploads its host row list).
 *
 * Batch invariance. The GEMV computes each (t, n) with the same operations whatever T is
 * (chunks of 8 positions), and so do the element-wise kernels and the decode attention kernel;
 * cuBLAS (whose kernel choice, tiling and split-K depend on T) and the prefill attention kernel
 * for runs of 16+ positions do not round like them. So the default is the batch-invariant
 * mode of runtime/backend.h's contract: every product a GEMV, every attention the decode
 * kernel, and a sequence's logits never depend on what shares its step (the promise the
 * scheduler makes on every backend). Prefill then runs at GEMV speed. SAMPAN_CUDA_INVARIANT=0
 * opts into the fast mode: cuBLAS on tensor cores for T > 8 and the tiled prefill attention,
 * where a position's logits can differ in the last bits between a step where it shares a
 * batch of more than 8 positions and one where it does not (greedy text agrees except near
 * ties). `sampan bench` reports which mode it measured; tests/gpu/run.sh runs both.
 * Stream. Every op is enqueued on the legacy default stream, which orders itself with every
 * blocking stream of the device: NCCL's comm stream (runtime/comm_nccl.c, default flags) waits
 * for our kernels before a collective, and our next kernel waits for the collective, with no
 * stream or event passed between the backend and the communicator. The only host waits are in
 * download and logits (cudaStreamSynchronize), plus an event wait before a pinned staging
 * buffer is rewritten (the previous pass's copy, long finished), and the collectives
 * themselves (comm_nccl.c waits for each under the watchdog). cudaMalloc/cudaFree happen at
 * load and when scratch grows. No CUDA graphs yet: a decode step is about 20 launches per
 * layer (a GEMV is two: the activation quantizer and the product), ~450 for tinyllama-1.1b, so
 * at a few microseconds each a small model is launch-bound (Q4_K's 0.6 GB take 0.13 ms at
 * 4.8 TB/s); capturing a step per (T, context bucket) in a graph, on a stream of its own, is
 * the next step for small models (large ones are bandwidth-bound already).
 *
 * Errors. A failed CUDA or cuBLAS call becomes "backend cuda: <call>: <error string>" in b->err
 * and the slot returns -1 (alloc: NULL); an allocation failure names the bytes asked for and
 * the device's free memory (cudaMemGetInfo). Nothing here exits or prints.
 *
 * Module. This file and the kernels are built as libsampan-cuda.so, which runtime/backend_cuda_load.c
 * opens on the first use of the backend (cuBLAS/cuBLASLt alone add ~200 MB of resident memory to a
 * process that links them): its entry points are sampan_cuda_new, sampan_cuda_devices and
 * sampan_cuda_info, and sampan_cuda_abi (backend.h's version, checked by the loader).
 *
 * Environment (read once, in sampan_cuda_new):
 *   SAMPAN_CUDA_DEQUANT=0     no BF16 copies of quantized weights (GEMV at every T; saves
 *                             2 bytes per weight)
 *   SAMPAN_CUDA_RESERVE=8G    bytes a BF16 copy must leave free (K/M/G suffixes; default 1/5)
 *   SAMPAN_CUDA_TF32=1        F32 products on TF32 tensor cores (default: full f32)
 *   SAMPAN_CUDA_INVARIANT=0   fast mode: cuBLAS tensor cores for T > 8 and tiled prefill
 *                             attention, not batch-invariant (default 1: invariant)
 *
 * Only a GPU can check: everything that runs on the device (tests/gpu/run.sh: the reference
 * suites, the scheduler, tp=2, serving, bench), the MLA/MoE glue above included (the kernels
 * it calls are tested under the CPU shim, tests/cuda/test_k_mla.cc and test_k_moe.cc). What this machine checks is that the file
 * compiles for sm_80/sm_90 under the ptxas gate, links, and that sampan_cuda_new without a
 * device returns NULL with its one-line message.
 */
#include <cuda_runtime.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "backend_cuda.h"
}
#include "cuk.h"
#include "ops_math.h"   /* om_gelu_fill */

#define SAMPAN_CUDA_EXPORT __attribute__((visibility("default")))
/* the loader's check that this module matches the binary: runtime/backend.h's version */
extern "C" SAMPAN_CUDA_EXPORT const int sampan_cuda_abi = BACKEND_VERSION;

#if defined(CUDA_API_PER_THREAD_DEFAULT_STREAM)
#error "backend_cuda.cu orders itself with NCCL through the legacy default stream: no --default-stream per-thread"
#endif

enum { CU_GEMV_MAX_T = 8 };
static const size_t CU_BLAS_WORKSPACE = (size_t)32 << 20;   /* cuBLAS's Hopper recommendation */

/* a weight made the backend's own */
typedef struct {
    const void *host;      /* kern_weight.data before `weight` (a second call shares the upload) */
    const char *dev;       /* device copy, compact rows of the file's layout */
    uint16_t *bf16;        /* (n_rows, K) BF16 copy for cuBLAS, or NULL */
    size_t row;            /* bytes of a row in dev */
    int type;
    int64_t n_rows, n_cols;
} cu_wentry;

/* growable device scratch */
typedef struct {
    void *p;
    size_t bytes;
} cu_buf;

typedef struct {
    int device;
    cudaStream_t st;                /* 0: the legacy default stream (see the header) */
    cublasHandle_t blas;
    void *blas_ws;
    int pools;                      /* cudaMallocAsync available */
    int dequant, invariant, tf32;   /* SAMPAN_CUDA_DEQUANT, _INVARIANT, _TF32 */
    size_t reserve;                 /* SAMPAN_CUDA_RESERVE */
    /* this pass, from `batch` */
    int T, max_blocks, max_ctx;
    int cap;                        /* positions the pass buffers hold */
    int32_t *h_pass, *d_pass;       /* pinned / device: tokens (T) | pos (T) */
    int32_t *pos_h, *seq_h;         /* host (cap): positions, and a sequence id per position */
    int32_t *nb_h;                  /* host (cap): table entries each sequence id needs */
    const int32_t *const *h_tables; /* (T) the batch's host tables, packed at first use */
    int tab_bs;                     /* block size d_tab is packed for this pass; 0: not yet */
    int32_t *h_tab, *d_tab;         /* pinned / device (T, max_blocks) */
    size_t tab_cap;
    int32_t *h_rows, *d_rows;       /* pinned / device: the output head's rows */
    int rows_cap;
    cudaEvent_t ev_pass, ev_tab, ev_rows;   /* the staging copies out of h_pass, h_tab, h_rows */
    cu_buf act, gv, attn, lg;       /* GEMM activations, GEMV activations, attention, logits */
    cu_buf rows, idx;               /* MLA / MoE: gathered rows and their products; uploaded
                                       row indices, plan and routing results */
    uint16_t *gelu;                 /* device (65536): om_gelu_fill's table, for geglu */
    cu_wentry *w;                   /* sorted by dev */
    int n_w, cap_w;
    size_t weight_bytes, copy_bytes, copy_skipped;
} cu_ctx;

static cu_ctx *cu__c(const backend *b) { return (cu_ctx *)b->ctx; }

/* ---- errors ------------------------------------------------------------------------------ */

static int cu__fail(backend *b, const char *call, cudaError_t e) {
    (void)cudaGetLastError();   /* a failed runtime call stays the last error: not the next launch's */
    snprintf(b->err, sizeof b->err, "backend cuda: %s: %s", call, cudaGetErrorString(e));
    return -1;
}

static int cu__msg(backend *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cu__msg(backend *b, const char *fmt, ...) {
    static const char prefix[] = "backend cuda: ";
    memcpy(b->err, prefix, sizeof prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err + sizeof prefix - 1, sizeof b->err - (sizeof prefix - 1), fmt, ap);
    va_end(ap);
    return -1;
}

static int cu__oom(backend *b, const char *what, size_t bytes, cudaError_t e) {
    size_t fr = 0, total = 0;
    if (cudaMemGetInfo(&fr, &total) != cudaSuccess) fr = total = 0;
    (void)cudaGetLastError();   /* an allocation failure is not sticky: clear it */
    return cu__msg(b, "%s: cudaMalloc of %zu bytes (%.1f MiB) failed: %s; device %d has %.1f MiB "
                   "free of %.1f MiB", what, bytes, bytes / 1048576.0, cudaGetErrorString(e),
                   cu__c(b)->device, fr / 1048576.0, total / 1048576.0);
}

/* a CUDA runtime call or a kernel wrapper (0 or a cudaError_t as int) */
#define CU_TRY(b, name, call)                                       \
    do {                                                            \
        cudaError_t e_ = (cudaError_t)(call);                       \
        if (e_ != cudaSuccess) return cu__fail((b), (name), e_);    \
    } while (0)

/* every slot runs on the backend's device, whichever host thread calls it */
#define CU_ENTER(b)                                                             \
    do {                                                                        \
        int d_ = -1;                                                            \
        if (cudaGetDevice(&d_) != cudaSuccess || d_ != cu__c(b)->device)        \
            CU_TRY((b), "cudaSetDevice", cudaSetDevice(cu__c(b)->device));      \
    } while (0)

static size_t cu__env_size(const char *name, size_t dflt) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) return dflt;
    switch (*end) {
    case 'k': case 'K': v *= 1024.0; break;
    case 'm': case 'M': v *= 1048576.0; break;
    case 'g': case 'G': v *= 1073741824.0; break;
    default: break;
    }
    return (size_t)v;
}

static int cu__env_flag(const char *name, int dflt) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    return strcmp(s, "0") != 0;
}

/* ---- scratch and staging ----------------------------------------------------------------- */

/* s holds at least `need` bytes; the old buffer is freed in stream order (kernels still
 * reading it finish first) */
static int cu__grow(backend *b, cu_buf *s, size_t need, const char *what) {
    cu_ctx *c = cu__c(b);
    if (need <= s->bytes) return 0;
    size_t nb = need + need / 4;
    nb = (nb + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
    if (s->p) {
        CU_TRY(b, "cudaFreeAsync", c->pools ? cudaFreeAsync(s->p, c->st) : cudaFree(s->p));
        s->p = NULL;
        s->bytes = 0;
    }
    void *p = NULL;
    cudaError_t e = c->pools ? cudaMallocAsync(&p, nb, c->st) : cudaMalloc(&p, nb);
    if (e != cudaSuccess) return cu__oom(b, what, nb, e);
    s->p = p;
    s->bytes = nb;
    return 0;
}

static void cu__buf_release(cu_buf *s) {
    if (s->p) cudaFree(s->p);
    s->p = NULL;
    s->bytes = 0;
}

/* pinned host + device arrays of n int32 each (contents not kept) */
static int cu__stage_grow(backend *b, int32_t **h, int32_t **d, size_t n, cudaEvent_t ev,
                          const char *what) {
    CU_TRY(b, "cudaEventSynchronize", cudaEventSynchronize(ev));
    if (*h) cudaFreeHost(*h);
    if (*d) cudaFree(*d);
    *h = *d = NULL;
    cudaError_t e = cudaHostAlloc((void **)h, n * sizeof(int32_t), cudaHostAllocDefault);
    if (e != cudaSuccess) {
        *h = NULL;
        (void)cudaGetLastError();
        return cu__msg(b, "%s: cudaHostAlloc of %zu bytes: %s", what, n * sizeof(int32_t),
                       cudaGetErrorString(e));
    }
    e = cudaMalloc((void **)d, n * sizeof(int32_t));
    if (e != cudaSuccess) {
        *d = NULL;
        return cu__oom(b, what, n * sizeof(int32_t), e);
    }
    return 0;
}

/* ---- weights ----------------------------------------------------------------------------- */

/* the entry whose device rows hold p (p may point at a later row), or NULL */
static const cu_wentry *cu__find(const cu_ctx *c, const void *p) {
    int lo = 0, hi = c->n_w - 1, at = -1;
    while (lo <= hi) {   /* last entry with dev <= p */
        int mid = (lo + hi) / 2;
        if ((const char *)c->w[mid].dev <= (const char *)p) at = mid, lo = mid + 1;
        else hi = mid - 1;
    }
    if (at < 0) return NULL;
    const cu_wentry *e = &c->w[at];
    size_t off = (size_t)((const char *)p - e->dev);
    return off < (size_t)e->n_rows * e->row ? e : NULL;
}

static int cu__insert(backend *b, const cu_wentry *e) {
    cu_ctx *c = cu__c(b);
    if (c->n_w == c->cap_w) {
        int nc = c->cap_w ? 2 * c->cap_w : 64;
        cu_wentry *w = (cu_wentry *)realloc(c->w, (size_t)nc * sizeof *w);
        if (!w) return cu__msg(b, "out of host memory for the weight table");
        c->w = w;
        c->cap_w = nc;
    }
    int i = c->n_w++;
    while (i > 0 && c->w[i - 1].dev > e->dev) {
        c->w[i] = c->w[i - 1];
        i--;
    }
    c->w[i] = *e;
    return 0;
}

/* The weight types the kernels take: name, elements and bytes per block (qtypes.h). Kept here
 * rather than asked of kern.h's traits so that this library needs nothing of the CPU one
 * (it comes after it on the link line). */
static const struct {
    int type;
    const char *name;
    int block;
    size_t bytes;
} cu__types[] = {
    { QT_F32, "F32", 1, 4 },
    { QT_F16, "F16", 1, 2 },
    { QT_BF16, "BF16", 1, 2 },
    { QT_Q8_0, "Q8_0", QK8_0, sizeof(block_q8_0) },
    { QT_Q4_0, "Q4_0", QK4_0, sizeof(block_q4_0) },
    { QT_Q4_1, "Q4_1", QK4_0, sizeof(block_q4_1) },
    { QT_Q5_0, "Q5_0", QK4_0, sizeof(block_q5_0) },
    { QT_Q5_1, "Q5_1", QK4_0, sizeof(block_q5_1) },
    { QT_IQ4_NL, "IQ4_NL", QK4_0, sizeof(block_iq4_nl) },
    { QT_Q2_K, "Q2_K", QK_K, sizeof(block_q2_K) },
    { QT_Q3_K, "Q3_K", QK_K, sizeof(block_q3_K) },
    { QT_Q4_K, "Q4_K", QK_K, sizeof(block_q4_K) },
    { QT_Q5_K, "Q5_K", QK_K, sizeof(block_q5_K) },
    { QT_Q6_K, "Q6_K", QK_K, sizeof(block_q6_K) },
    { QT_IQ4_XS, "IQ4_XS", QK_K, sizeof(block_iq4_xs) },
};

static int cu__type_at(int type) {
    for (int i = 0; i < (int)(sizeof cu__types / sizeof cu__types[0]); i++)
        if (cu__types[i].type == type) return i;
    return -1;
}

static int cu__supports(const backend *b, int type) {
    (void)b;
    return cu__type_at(type) >= 0;
}

static const char *cu__tname(int type) {
    const int i = cu__type_at(type);
    return i >= 0 ? cu__types[i].name : "?";
}

/* bytes of a row of n elements; 0 when n is not a whole number of blocks */
static size_t cu__row_size(int type, int64_t n) {
    const int i = cu__type_at(type);
    if (i < 0 || n <= 0 || n % cu__types[i].block) return 0;
    return (size_t)(n / cu__types[i].block) * cu__types[i].bytes;
}

static int cu__weight(backend *b, kern_weight *w) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    if (w->layout != KERN_ROWS)
        return cu__msg(b, "weight (%lld x %lld %s) is repacked for the CPU; the CUDA backend "
                       "takes the file's layout", (long long)w->n_rows, (long long)w->n_cols,
                       cu__tname(w->type));
    if (!cu__supports(b, w->type))
        return cu__msg(b, "no kernels for weights of type %s", cu__tname(w->type));
    const size_t row = cu__row_size(w->type, w->n_cols);
    if (!row || w->n_rows <= 0 || w->row_stride < row || w->n_rows > INT32_MAX ||
        w->n_cols > INT32_MAX)
        return cu__msg(b, "weight of %lld rows x %lld %s elements, rows %zu bytes apart: not a "
                       "matrix the kernels take", (long long)w->n_rows, (long long)w->n_cols,
                       cu__tname(w->type), w->row_stride);
    const cu_wentry *own = cu__find(c, w->data);
    if (own && own->dev == (const char *)w->data) return 0;   /* already ours */
    for (int i = 0; i < c->n_w; i++) {   /* the same matrix made own twice (tied output head) */
        const cu_wentry *e = &c->w[i];
        if (e->host == w->data && e->type == w->type && e->n_rows == w->n_rows &&
            e->n_cols == w->n_cols) {
            w->data = e->dev;
            w->row_stride = row;
            return 0;
        }
    }
    const size_t bytes = (size_t)w->n_rows * row;
    char what[96];
    snprintf(what, sizeof what, "weight %lld x %lld %s", (long long)w->n_rows,
             (long long)w->n_cols, cu__tname(w->type));
    cu_wentry e = { w->data, NULL, NULL, row, w->type, w->n_rows, w->n_cols };
    void *dev = NULL;
    cudaError_t err = cudaMalloc(&dev, bytes);
    if (err != cudaSuccess) return cu__oom(b, what, bytes, err);
    e.dev = (const char *)dev;
    err = w->row_stride == row
              ? cudaMemcpy(dev, w->data, bytes, cudaMemcpyHostToDevice)
              : cudaMemcpy2D(dev, row, w->data, w->row_stride, row, (size_t)w->n_rows,
                             cudaMemcpyHostToDevice);
    if (err != cudaSuccess) {
        cudaFree(dev);
        return cu__fail(b, "cudaMemcpy (weight upload)", err);
    }
    if (c->dequant && cub_act_type(w->type) < 0) {
        const size_t need = (size_t)w->n_rows * (size_t)w->n_cols * sizeof(uint16_t);
        size_t fr = 0, total = 0;
        CU_TRY(b, "cudaMemGetInfo", cudaMemGetInfo(&fr, &total));
        void *bf = NULL;
        if (fr >= need + c->reserve && cudaMalloc(&bf, need) == cudaSuccess) {
            int k = cuk_dequant(bf, QT_BF16, dev, w->type, w->n_rows, w->n_cols, row,
                                (cuk_stream)c->st);
            if (k) {
                cudaFree(bf);
                cudaFree(dev);
                return cu__fail(b, "cuk_dequant (BF16 copy)", (cudaError_t)k);
            }
            e.bf16 = (uint16_t *)bf;
            c->copy_bytes += need;
        } else {
            (void)cudaGetLastError();
            c->copy_skipped += need;
        }
    }
    if (cu__insert(b, &e)) {
        if (e.bf16) cudaFree(e.bf16);
        cudaFree(dev);
        return -1;
    }
    c->weight_bytes += bytes;
    w->data = dev;
    w->row_stride = row;
    return 0;
}

/* ---- products ---------------------------------------------------------------------------- */

/* The weight cuBLAS multiplies by for w, and its type: w itself for F32/F16/BF16, the BF16
 * copy (at w's row) for a quantized weight; NULL when there is none. */
static const void *cu__gemm_operand(const cu_ctx *c, const kern_weight *w, int *type) {
    if (cub_act_type(w->type) >= 0) {
        *type = w->type;
        return w->data;
    }
    const cu_wentry *e = cu__find(c, w->data);
    if (!e || !e->bf16) return NULL;
    size_t off = (size_t)((const char *)w->data - e->dev);
    if (off % e->row || w->n_cols != e->n_cols) return NULL;
    *type = QT_BF16;
    return e->bf16 + off / e->row * (size_t)e->n_cols;
}

static int cu__blas_fail(backend *b, cublasStatus_t s, const kern_weight *w, int T) {
    return cu__msg(b, "cublasGemmEx (%lld x %lld %s, T=%d): %s: %s", (long long)w->n_rows,
                   (long long)w->n_cols, cu__tname(w->type), T, cublasGetStatusName(s),
                   cublasGetStatusString(s));
}

static int cu__matmul_n(backend *b, int n, float *const *out, const kern_weight *const *w,
                        const float *x, int T) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    if (T <= 0) return 0;
    int conv = -1;          /* type x was converted to in c->act for this call */
    int64_t conv_k = -1;
    for (int i = 0; i < n; i++) {
        const kern_weight *wi = w[i];
        const int N = (int)wi->n_rows, K = (int)wi->n_cols;
        int gt = -1;
        const void *gw = T > CU_GEMV_MAX_T && !c->invariant ? cu__gemm_operand(c, wi, &gt) : NULL;
        if (gw) {
            const void *xa = x;
            if (gt != QT_F32) {
                if (conv != gt || conv_k != K) {
                    if (cu__grow(b, &c->act, (size_t)T * K * sizeof(uint16_t), "GEMM activations"))
                        return -1;
                    CU_TRY(b, "cuk_dequant (activations)",
                           cuk_dequant(c->act.p, gt, x, QT_F32, T, K, (size_t)K * sizeof(float),
                                       (cuk_stream)c->st));
                    conv = gt;
                    conv_k = K;
                }
                xa = c->act.p;
            }
            cublasStatus_t s = cub_gemm(c->blas, out[i], N, gw, gt, N, K, (size_t)K, xa, T, c->tf32);
            if (s != CUBLAS_STATUS_SUCCESS) return cu__blas_fail(b, s, wi, T);
            continue;
        }
        /* GEMV in chunks of at most 8 positions: each (t, n) the same operations whatever T */
        const int tt = T < CU_GEMV_MAX_T ? T : CU_GEMV_MAX_T;
        size_t sb = cuk_gemv_scratch_bytes(wi->type, K, tt);
        if (sb && cu__grow(b, &c->gv, sb, "GEMV activations")) return -1;
        for (int t0 = 0; t0 < T; t0 += CU_GEMV_MAX_T) {
            const int nt = T - t0 < CU_GEMV_MAX_T ? T - t0 : CU_GEMV_MAX_T;
            int k = cuk_gemv(out[i] + (size_t)t0 * N, wi->data, wi->type, N, K, wi->row_stride,
                             x + (size_t)t0 * K, nt, c->gv.p, (cuk_stream)c->st);
            if (k)
                return cu__msg(b, "cuk_gemv (%d x %d %s, T=%d): %s", N, K, cu__tname(wi->type),
                               nt, cudaGetErrorString((cudaError_t)k));
        }
    }
    return 0;
}

static int cu__matmul(backend *b, float *out, const kern_weight *w, const float *x, int T) {
    return cu__matmul_n(b, 1, &out, &w, x, T);
}

/* ---- memory ------------------------------------------------------------------------------ */

static void *cu__alloc(backend *b, size_t bytes) {
    cu_ctx *c = cu__c(b);
    int d = -1;
    if ((cudaGetDevice(&d) != cudaSuccess || d != c->device) &&
        cudaSetDevice(c->device) != cudaSuccess) {
        cu__fail(b, "cudaSetDevice", cudaGetLastError());
        return NULL;
    }
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cu__oom(b, "buffer", bytes, e);
        return NULL;
    }
    e = cudaMemsetAsync(p, 0, bytes ? bytes : 1, c->st);
    if (e != cudaSuccess) {
        cudaFree(p);
        cu__fail(b, "cudaMemsetAsync", e);
        return NULL;
    }
    return p;
}

static void cu__buf_free(backend *b, void *p) {
    if (!p) return;
    int d = -1;   /* on the backend's device: a fresh thread would otherwise start device 0's */
    if (cudaGetDevice(&d) != cudaSuccess || d != cu__c(b)->device) cudaSetDevice(cu__c(b)->device);
    cudaFree(p);
    (void)cudaGetLastError();
}

/* pageable src: cudaMemcpyAsync returns once src has been read into the driver's staging */
static int cu__upload(backend *b, void *dst, const void *src, size_t bytes) {
    CU_ENTER(b);
    if (!bytes) return 0;
    CU_TRY(b, "cudaMemcpyAsync (upload)",
           cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu__c(b)->st));
    return 0;
}

static int cu__download(backend *b, void *dst, const void *src, size_t bytes) {
    CU_ENTER(b);
    if (!bytes) return 0;
    cu_ctx *c = cu__c(b);
    CU_TRY(b, "cudaMemcpyAsync (download)",
           cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->st));
    CU_TRY(b, "cudaStreamSynchronize", cudaStreamSynchronize(c->st));
    return 0;
}

/* ---- per-pass input ---------------------------------------------------------------------- */

static int cu__batch(backend *b, const backend_batch *bb) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    const int T = bb->n;
    if (T < 0 || (T > 0 && (!bb->tokens || !bb->pos)))
        return cu__msg(b, "batch of %d positions without tokens or positions", T);
    if (T > c->cap) {
        int cap = c->cap ? c->cap : 64;
        while (cap < T) cap *= 2;
        c->cap = 0;   /* the old buffers are gone even if the new ones fail */
        if (cu__stage_grow(b, &c->h_pass, &c->d_pass, 2 * (size_t)cap, c->ev_pass, "batch"))
            return -1;
        int32_t *ph = (int32_t *)realloc(c->pos_h, (size_t)cap * sizeof *ph);
        if (ph) c->pos_h = ph;
        int32_t *sh = ph ? (int32_t *)realloc(c->seq_h, (size_t)cap * sizeof *sh) : NULL;
        if (sh) c->seq_h = sh;
        int32_t *nh = sh ? (int32_t *)realloc(c->nb_h, (size_t)cap * sizeof *nh) : NULL;
        if (nh) c->nb_h = nh;
        if (!ph || !sh || !nh)
            return cu__msg(b, "out of host memory for a batch of %d positions", T);
        c->cap = cap;
    }
    CU_TRY(b, "cudaEventSynchronize", cudaEventSynchronize(c->ev_pass));
    int max_pos = -1;
    for (int t = 0; t < T; t++) {
        c->h_pass[t] = bb->tokens[t];
        c->h_pass[T + t] = bb->pos[t];
        c->pos_h[t] = bb->pos[t];
        if (bb->pos[t] < 0) return cu__msg(b, "position %d of the batch is %d", t, bb->pos[t]);
        if (bb->pos[t] > max_pos) max_pos = bb->pos[t];
        /* positions with the same table are one sequence (cuk_attention's runs) */
        int s = t;
        if (bb->tables) {
            if (t > 0 && bb->tables[t] == bb->tables[t - 1]) s = c->seq_h[t - 1];
            else
                for (int u = 0; u < t; u++)
                    if (bb->tables[u] == bb->tables[t]) {
                        s = c->seq_h[u];
                        break;
                    }
        }
        c->seq_h[t] = s;
    }
    c->T = T;
    c->max_ctx = max_pos + 1;
    c->max_blocks = bb->max_blocks;
    c->h_tables = bb->tables;
    c->tab_bs = 0;
    if (T == 0) return 0;
    CU_TRY(b, "cudaMemcpyAsync (batch)",
           cudaMemcpyAsync(c->d_pass, c->h_pass, 2 * (size_t)T * sizeof(int32_t),
                           cudaMemcpyHostToDevice, c->st));
    CU_TRY(b, "cudaEventRecord", cudaEventRecord(c->ev_pass, c->st));
    return 0;
}

/* The pass's block tables as (T, max_blocks) on the device, for blocks of bs positions,
 * packed at the first op that knows bs (kv_write, attention); the host tables stay valid
 * through the pass (model_forward holds them). Row t gets the entries of the furthest
 * position of its sequence in this batch, not only pos[t]/bs + 1: cuk_attn_prefill reads a
 * whole run's keys through the row of the run's first query. Unused entries are -1. */
static int cu__tables(backend *b, int bs) {
    cu_ctx *c = cu__c(b);
    if (c->tab_bs == bs) return 0;
    if (!c->h_tables) return cu__msg(b, "the batch has no block tables");
    const int T = c->T, mb = c->max_blocks;
    if (bs < 1 || mb < 1) return cu__msg(b, "block tables of %d entries for blocks of %d", mb, bs);
    const size_t need = (size_t)T * mb;
    if (need > c->tab_cap) {
        size_t cap = c->tab_cap ? c->tab_cap : 4096;
        while (cap < need) cap *= 2;
        c->tab_cap = 0;
        if (cu__stage_grow(b, &c->h_tab, &c->d_tab, cap, c->ev_tab, "block tables")) return -1;
        c->tab_cap = cap;
    }
    CU_TRY(b, "cudaEventSynchronize", cudaEventSynchronize(c->ev_tab));
    for (int t = 0; t < T; t++) c->nb_h[t] = 0;
    for (int t = 0; t < T; t++) {   /* seq_h[t] is the first position of t's sequence */
        const int nb = c->pos_h[t] / bs + 1;
        if (nb > mb)
            return cu__msg(b, "position %d needs %d blocks of %d, the batch gave max_blocks %d",
                           c->pos_h[t], nb, bs, mb);
        if (nb > c->nb_h[c->seq_h[t]]) c->nb_h[c->seq_h[t]] = nb;
    }
    for (int t = 0; t < T; t++) {
        const int nb = c->nb_h[c->seq_h[t]];
        int32_t *row = c->h_tab + (size_t)t * mb;
        memcpy(row, c->h_tables[t], (size_t)nb * sizeof *row);
        for (int i = nb; i < mb; i++) row[i] = -1;
    }
    CU_TRY(b, "cudaMemcpyAsync (block tables)",
           cudaMemcpyAsync(c->d_tab, c->h_tab, need * sizeof(int32_t), cudaMemcpyHostToDevice,
                           c->st));
    CU_TRY(b, "cudaEventRecord", cudaEventRecord(c->ev_tab, c->st));
    c->tab_bs = bs;
    return 0;
}

static int cu__need_pass(backend *b, const char *op, int T) {
    if (T > cu__c(b)->T)
        return cu__msg(b, "%s of %d positions, but the batch has %d", op, T, cu__c(b)->T);
    return 0;
}

/* ---- ops --------------------------------------------------------------------------------- */

#define CU_ST(c) ((cuk_stream)(c)->st)

static int cu__embed(backend *b, float *x, const kern_weight *emb, int row0, int C) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    if (c->T == 0) return 0;
    CU_TRY(b, "cuk_embed",
           cuk_embed(x, emb->data, emb->type, emb->n_rows, row0, emb->row_stride, c->d_pass,
                     c->T, C, CU_ST(c)));
    return 0;
}

static int cu__rmsnorm(backend *b, float *out, const float *x, const float *w, int T, int C,
                       float eps) {
    CU_ENTER(b);
    if (T <= 0) return 0;
    CU_TRY(b, "cuk_rmsnorm", cuk_rmsnorm(out, x, w, T, C, eps, CU_ST(cu__c(b))));
    return 0;
}

static int cu__add_bias(backend *b, float *x, const float *bias, int T, int N) {
    CU_ENTER(b);
    if (T <= 0) return 0;
    CU_TRY(b, "cuk_bias", cuk_bias(x, bias, T, N, CU_ST(cu__c(b))));
    return 0;
}

static int cu__rope(backend *b, float *x, int T, int H, int D, const backend_rope *r) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    if (T <= 0) return 0;
    if (cu__need_pass(b, "rope", T)) return -1;
    CU_TRY(b, "cuk_rope",
           cuk_rope(x, c->d_pass + c->T, T, H, D, r->n_rot, r->base, r->neox, r->freq_factors,
                    &r->scaling, CU_ST(c)));
    return 0;
}

static size_t cu__kv_elem(int type) { return type == QT_F32 ? 4 : 2; }

/* layer l's K or V: (n_blocks, Hkv, block_size, D) of kv->type */
static size_t cu__kv_layer_bytes(const backend_kv *kv) {
    return (size_t)kv->n_blocks * kv->n_kv_heads * kv->block_size * kv->head_dim *
           cu__kv_elem(kv->type);
}

static int cu__kv_write(backend *b, const backend_kv *kv, int l, const float *k, const float *v,
                        int T) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    if (T <= 0) return 0;
    if (cu__need_pass(b, "kv_write", T) || cu__tables(b, kv->block_size)) return -1;
    const size_t off = (size_t)l * cu__kv_layer_bytes(kv);
    CU_TRY(b, "cuk_kv_write",
           cuk_kv_write((char *)kv->k + off, (char *)kv->v + off, kv->type, k, v,
                        c->d_pass + c->T, c->d_tab, c->max_blocks, T, kv->n_kv_heads,
                        kv->head_dim, kv->block_size, CU_ST(c)));
    return 0;
}

static int cu__attention(backend *b, const backend_kv *kv, int l, float *out, const float *q,
                         int T, const backend_attn *a) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    if (T <= 0) return 0;
    if (cu__need_pass(b, "attention", T) || cu__tables(b, kv->block_size)) return -1;
    const size_t off = (size_t)l * cu__kv_layer_bytes(kv);
    cuk_attn_args args;
    args.k = (const char *)kv->k + off;
    args.v = (const char *)kv->v + off;
    args.kv_type = kv->type;
    args.Hkv = kv->n_kv_heads;
    args.block_size = kv->block_size;
    args.D = kv->head_dim;
    args.H = a->n_heads;
    args.head0 = a->head0;
    args.group = a->group;
    args.kv_head0 = a->kv_head0;
    args.scale = a->scale;
    args.window = a->window;
    args.tables = c->d_tab;
    args.max_blocks = c->max_blocks;
    size_t sb = cuk_attn_scratch_bytes(&args, T, c->max_ctx);
    if (sb && cu__grow(b, &c->attn, sb, "attention scratch")) return -1;
    int k = cuk_attention(&args, out, q, c->d_pass + c->T, T, c->pos_h,
                          c->invariant ? NULL : c->seq_h, c->max_ctx, c->attn.p, CU_ST(c));
    if (k)
        return cu__msg(b, "cuk_attention (T=%d H=%d Hkv=%d D=%d context %d): %s", T, a->n_heads,
                       kv->n_kv_heads, kv->head_dim, c->max_ctx,
                       cudaGetErrorString((cudaError_t)k));
    return 0;
}

static int cu__swiglu(backend *b, float *gate, const float *up, size_t n) {
    CU_ENTER(b);
    if (!n) return 0;
    CU_TRY(b, "cuk_swiglu", cuk_swiglu(gate, gate, up, n, CU_ST(cu__c(b))));
    return 0;
}

static int cu__geglu(backend *b, float *gate, const float *up, size_t n) {
    CU_ENTER(b);
    if (!n) return 0;
    CU_TRY(b, "cuk_geglu", cuk_geglu(gate, gate, up, cu__c(b)->gelu, n, CU_ST(cu__c(b))));
    return 0;
}

static int cu__scale(backend *b, float *x, float s, size_t n) {
    CU_ENTER(b);
    if (!n) return 0;
    CU_TRY(b, "cuk_scale", cuk_scale(x, s, n, CU_ST(cu__c(b))));
    return 0;
}

static int cu__add(backend *b, float *x, const float *y, size_t n) {
    CU_ENTER(b);
    if (!n) return 0;
    CU_TRY(b, "cuk_add", cuk_add(x, y, n, CU_ST(cu__c(b))));
    return 0;
}

static int cu__interleave(backend *b, float *out, const float *in, int parts, int T, int n) {
    CU_ENTER(b);
    if (T <= 0 || n <= 0) return 0;
    CU_TRY(b, "cuk_interleave", cuk_interleave(out, in, parts, T, n, CU_ST(cu__c(b))));
    return 0;
}

/* the step's one wait: rows gathered, normed, multiplied, padded, brought back */
static int cu__logits(backend *b, float *logits, const float *x, int C, float *scratch,
                      const backend_head *h) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    const int n = h->n_out, N = (int)h->w->n_rows, P = h->vocab_pad;
    if (n <= 0) return 0;
    if (P < N) return cu__msg(b, "logits padded to %d, fewer than the head's %d rows", P, N);
    if (n > c->rows_cap) {
        int cap = c->rows_cap ? c->rows_cap : 64;
        while (cap < n) cap *= 2;
        c->rows_cap = 0;
        if (cu__stage_grow(b, &c->h_rows, &c->d_rows, (size_t)cap, c->ev_rows, "logits rows"))
            return -1;
        c->rows_cap = cap;
    }
    CU_TRY(b, "cudaEventSynchronize", cudaEventSynchronize(c->ev_rows));
    for (int i = 0; i < n; i++) {
        if (h->rows[i] < 0 || (c->T > 0 && h->rows[i] >= c->T))
            return cu__msg(b, "logits of row %d, but the batch has %d positions", h->rows[i], c->T);
        c->h_rows[i] = h->rows[i];
    }
    CU_TRY(b, "cudaMemcpyAsync (logits rows)",
           cudaMemcpyAsync(c->d_rows, c->h_rows, (size_t)n * sizeof(int32_t),
                           cudaMemcpyHostToDevice, c->st));
    CU_TRY(b, "cudaEventRecord", cudaEventRecord(c->ev_rows, c->st));
    CU_TRY(b, "cuk_gather_rows", cuk_gather_rows(scratch, x, c->d_rows, n, C, CU_ST(c)));
    CU_TRY(b, "cuk_rmsnorm", cuk_rmsnorm(scratch, scratch, h->norm, n, C, h->eps, CU_ST(c)));
    const size_t raw = (size_t)n * N, padded = P > N ? (size_t)n * P : 0;
    if (cu__grow(b, &c->lg, (raw + padded) * sizeof(float), "logits")) return -1;
    float *out = (float *)c->lg.p;
    if (cu__matmul_n(b, 1, &out, &h->w, scratch, n)) return -1;
    if (padded) {
        float *pad = out + raw;
        CU_TRY(b, "cuk_pad_rows", cuk_pad_rows(pad, out, n, N, P, CU_ST(c)));
        out = pad;
    }
    CU_TRY(b, "cudaMemcpyAsync (logits)",
           cudaMemcpyAsync(logits, out, (size_t)n * P * sizeof(float), cudaMemcpyDeviceToHost,
                           c->st));
    CU_TRY(b, "cudaStreamSynchronize", cudaStreamSynchronize(c->st));
    return 0;
}

/* ---- multi-head latent attention (DeepSeek) ---------------------------------------------- */

static int cu__mla_kv_write(backend *b, const backend_kv *kv, int l, const float *kva,
                            const float *norm, float eps, int T, const backend_mla *a) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    if (T <= 0) return 0;
    if (kv->n_kv_heads != 1 || kv->head_dim != a->rank + a->rope_dims)
        return cu__msg(b, "mla_kv_write: a latent cache has 1 KV head of R + Dr = %d, not %d of %d",
                       a->rank + a->rope_dims, kv->n_kv_heads, kv->head_dim);
    if (cu__need_pass(b, "mla_kv_write", T) || cu__tables(b, kv->block_size)) return -1;
    const size_t off = (size_t)l * cu__kv_layer_bytes(kv);
    CU_TRY(b, "cuk_mla_kv_write",
           cuk_mla_kv_write((char *)kv->k + off, kv->type, kva, norm, eps, c->d_pass + c->T,
                            c->d_tab, c->max_blocks, T, a->rank, a->rope_dims, kv->block_size,
                            a->rope.base, a->rope.freq_factors, &a->rope.scaling, CU_ST(c)));
    return 0;
}

/* out (T, H, ostride) from column o0 = w[h] . in[:, h] where in is (T, H, stride) from column
 * c0, for every head h: head by head, the head's columns gathered into c->rows (a strided
 * device copy), one cu__matmul (so GEMV, or cuBLAS in the fast mode, as every product), the
 * result spread back. Why not one strided-batched cuBLAS call: `weight` made each head's
 * matrix its own allocation (no common stride), quantized types need the GEMV or their BF16
 * copies, and the default mode promises batch invariance, which only the GEMV keeps. */
static int cu__per_head(backend *b, const kern_weight *w, int H, const float *in, int stride,
                        int c0, float *out, int ostride, int o0, int T) {
    cu_ctx *c = cu__c(b);
    const int K = (int)w[0].n_cols, N = (int)w[0].n_rows;
    if (cu__grow(b, &c->rows, (size_t)T * (K + N) * sizeof(float), "per-head rows")) return -1;
    float *g = (float *)c->rows.p, *y = g + (size_t)T * K;
    for (int h = 0; h < H; h++) {
        CU_TRY(b, "cudaMemcpy2DAsync (a head's columns)",
               cudaMemcpy2DAsync(g, (size_t)K * sizeof(float), in + (size_t)h * stride + c0,
                                 (size_t)H * stride * sizeof(float), (size_t)K * sizeof(float),
                                 (size_t)T, cudaMemcpyDeviceToDevice, c->st));
        if (cu__matmul(b, y, &w[h], g, T)) return -1;
        CU_TRY(b, "cudaMemcpy2DAsync (a head's products)",
               cudaMemcpy2DAsync(out + (size_t)h * ostride + o0, (size_t)H * ostride * sizeof(float),
                                 y, (size_t)N * sizeof(float), (size_t)N * sizeof(float),
                                 (size_t)T, cudaMemcpyDeviceToDevice, c->st));
    }
    return 0;
}

static int cu__mla_attention(backend *b, const backend_kv *kv, int l, float *out, float *q,
                             float *qlat, float *olat, int T, const backend_mla *a) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    if (T <= 0) return 0;
    const int H = a->n_heads, R = a->rank, Dn = a->nope_dims, Dr = a->rope_dims;
    const int Dq = Dn + Dr, D = R + Dr;
    if (kv->n_kv_heads != 1 || kv->head_dim != D)
        return cu__msg(b, "mla_attention: a latent cache has 1 KV head of R + Dr = %d, not %d of %d",
                       D, kv->n_kv_heads, kv->head_dim);
    if (Dn % 2)   /* cuk_rope rotates (2i, 2i+1) as one float2 */
        return cu__msg(b, "mla_attention: %d no-RoPE dims per head (odd) put the RoPE part off an "
                       "8-byte boundary", Dn);
    if (cu__need_pass(b, "mla_attention", T) || cu__tables(b, kv->block_size)) return -1;
    CU_TRY(b, "cuk_rope (MLA queries)",
           cuk_rope(q + Dn, c->d_pass + c->T, T, H, Dq, Dr, a->rope.base, 0, a->rope.freq_factors,
                    &a->rope.scaling, CU_ST(c)));
    /* the RoPE part joins the absorbed query as it is */
    CU_TRY(b, "cudaMemcpy2DAsync (MLA RoPE queries)",
           cudaMemcpy2DAsync(qlat + R, (size_t)D * sizeof(float), q + Dn, (size_t)Dq * sizeof(float),
                             (size_t)Dr * sizeof(float), (size_t)T * H, cudaMemcpyDeviceToDevice,
                             c->st));
    if (cu__per_head(b, a->k_b, H, q, Dq, 0, qlat, D, 0, T)) return -1;   /* q_nope -> latent */
    const size_t off = (size_t)l * cu__kv_layer_bytes(kv);
    int k = cuk_mla_attention((const char *)kv->k + off, kv->type, kv->block_size, D, R, olat,
                              qlat, c->d_pass + c->T, c->d_tab, c->max_blocks, T, H, a->scale,
                              CU_ST(c));
    if (k)
        return cu__msg(b, "cuk_mla_attention (T=%d H=%d D=%d Dv=%d): %s", T, H, D, R,
                       cudaGetErrorString((cudaError_t)k));
    return cu__per_head(b, a->v_b, H, olat, R, 0, out, a->v_dim, 0, T);   /* latent -> values */
}

/* ---- DeepSeekMoE ------------------------------------------------------------------------- */

/* c->idx holding n 4-byte words uploaded from host src (pageable: the copy has read src when
 * it returns; stream order keeps earlier kernels' reads of c->idx before it) */
static int cu__idx_upload(backend *b, const void *src, size_t n, const char *what) {
    cu_ctx *c = cu__c(b);
    if (cu__grow(b, &c->idx, n * 4, what)) return -1;
    if (n)
        CU_TRY(b, "cudaMemcpyAsync (MoE indices)",
               cudaMemcpyAsync(c->idx.p, src, n * 4, cudaMemcpyHostToDevice, c->st));
    return 0;
}

static int cu__moe_route(backend *b, int32_t *ids, float *w, const float *logits, int T,
                         const backend_route *r) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    if (T <= 0) return 0;
    const size_t n = (size_t)T * r->k;
    if (cu__grow(b, &c->idx, 2 * n * 4, "MoE routing")) return -1;
    int32_t *d_ids = (int32_t *)c->idx.p;
    float *d_w = (float *)(d_ids + n);
    int k = cuk_moe_route(d_ids, d_w, logits, r->bias, T, r->n_expert, r->k, r->n_group,
                          r->n_group_used, r->gating, r->norm, r->scale, CU_ST(c));
    if (k)
        return cu__msg(b, "cuk_moe_route (T=%d E=%d k=%d groups %d/%d gating %d): %s", T,
                       r->n_expert, r->k, r->n_group_used, r->n_group, r->gating,
                       cudaGetErrorString((cudaError_t)k));
    CU_TRY(b, "cudaMemcpyAsync (MoE ids)",
           cudaMemcpyAsync(ids, d_ids, n * 4, cudaMemcpyDeviceToHost, c->st));
    CU_TRY(b, "cudaMemcpyAsync (MoE weights)",
           cudaMemcpyAsync(w, d_w, n * 4, cudaMemcpyDeviceToHost, c->st));
    CU_TRY(b, "cudaStreamSynchronize", cudaStreamSynchronize(c->st));
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0)
            return cu__msg(b, "MoE routing of position %zu found %zu of %d experts", i / r->k,
                           i % r->k, r->k);
    return 0;
}

static int cu__moe_experts(backend *b, float *y, const float *x, int C, const backend_moe *m) {
    cu_ctx *c = cu__c(b);
    CU_ENTER(b);
    const int El = m->n_expert, pairs = El > 0 ? m->off[El] : 0;
    int most = 0;
    for (int e = 0; e < El; e++)
        most = m->off[e + 1] - m->off[e] > most ? m->off[e + 1] - m->off[e] : most;
    if (!most) return 0;
    const int Fe = (int)m->gate[0].n_rows;
    /* the plan, uploaded once: rows | dst | weights */
    if (cu__grow(b, &c->idx, 3 * (size_t)pairs * 4, "MoE plan")) return -1;
    int32_t *d_row = (int32_t *)c->idx.p, *d_dst = d_row + pairs;
    float *d_w = (float *)(d_dst + pairs);
    CU_TRY(b, "cudaMemcpyAsync (MoE plan)",
           cudaMemcpyAsync(d_row, m->row, (size_t)pairs * 4, cudaMemcpyHostToDevice, c->st));
    CU_TRY(b, "cudaMemcpyAsync (MoE plan)",
           cudaMemcpyAsync(d_dst, m->dst, (size_t)pairs * 4, cudaMemcpyHostToDevice, c->st));
    CU_TRY(b, "cudaMemcpyAsync (MoE plan)",
           cudaMemcpyAsync(d_w, m->w, (size_t)pairs * 4, cudaMemcpyHostToDevice, c->st));
    if (cu__grow(b, &c->rows, (size_t)most * (2 * (size_t)C + 2 * (size_t)Fe) * sizeof(float),
                 "MoE rows"))
        return -1;
    float *g = (float *)c->rows.p, *hg = g + (size_t)most * C, *hu = hg + (size_t)most * Fe;
    float *yd = hu + (size_t)most * Fe;
    for (int e = 0; e < El; e++) {
        const int p0 = m->off[e], n = m->off[e + 1] - p0;
        if (!n) continue;
        CU_TRY(b, "cuk_gather_rows (MoE)", cuk_gather_rows(g, x, d_row + p0, n, C, CU_ST(c)));
        float *const outs[2] = { hg, hu };
        const kern_weight *const ws[2] = { &m->gate[e], &m->up[e] };
        if (cu__matmul_n(b, 2, outs, ws, g, n)) return -1;
        CU_TRY(b, "cuk_swiglu (MoE)", cuk_swiglu(hg, hg, hu, (size_t)n * Fe, CU_ST(c)));
        if (cu__matmul(b, yd, &m->down[e], hg, n)) return -1;
        CU_TRY(b, "cuk_scatter_rows_scaled",
               cuk_scatter_rows_scaled(y, yd, d_dst + p0, d_w + p0, n, C, CU_ST(c)));
    }
    return 0;
}

static int cu__sum_rows(backend *b, float *out, const float *y, int n, int k, int C) {
    CU_ENTER(b);
    if (n <= 0) return 0;
    CU_TRY(b, "cuk_sum_rows", cuk_sum_rows(out, y, n, k, C, CU_ST(cu__c(b))));
    return 0;
}

static int cu__gather_rows(backend *b, float *out, const float *x, const int32_t *rows, int n,
                           int C) {
    CU_ENTER(b);
    if (n <= 0) return 0;
    if (cu__idx_upload(b, rows, (size_t)n, "gathered row indices")) return -1;
    CU_TRY(b, "cuk_gather_rows",
           cuk_gather_rows(out, x, (const int32_t *)cu__c(b)->idx.p, n, C, CU_ST(cu__c(b))));
    return 0;
}

/* ---- host threads ------------------------------------------------------------------------ */

static int cu__n_threads(const backend *b) {
    (void)b;
    return 1;   /* the calling thread, which only enqueues */
}

static void cu__parallel(backend *b, pool_fn fn, void *arg) {
    (void)b;
    fn(arg, 0, 1);
}

/* ---- life cycle -------------------------------------------------------------------------- */

static void cu__free(backend *b) {
    if (!b) return;
    cu_ctx *c = cu__c(b);
    if (c) {
        cudaSetDevice(c->device);
        cudaStreamSynchronize(c->st);
        for (int i = 0; i < c->n_w; i++) {
            cudaFree((void *)c->w[i].dev);
            if (c->w[i].bf16) cudaFree(c->w[i].bf16);
        }
        free(c->w);
        cu__buf_release(&c->act);
        cu__buf_release(&c->gv);
        cu__buf_release(&c->attn);
        cu__buf_release(&c->lg);
        cu__buf_release(&c->rows);
        cu__buf_release(&c->idx);
        if (c->h_pass) cudaFreeHost(c->h_pass);
        if (c->h_tab) cudaFreeHost(c->h_tab);
        if (c->h_rows) cudaFreeHost(c->h_rows);
        if (c->d_pass) cudaFree(c->d_pass);
        if (c->d_tab) cudaFree(c->d_tab);
        if (c->d_rows) cudaFree(c->d_rows);
        free(c->pos_h);
        free(c->seq_h);
        free(c->nb_h);
        if (c->ev_pass) cudaEventDestroy(c->ev_pass);
        if (c->ev_tab) cudaEventDestroy(c->ev_tab);
        if (c->ev_rows) cudaEventDestroy(c->ev_rows);
        if (c->blas) cublasDestroy(c->blas);
        if (c->blas_ws) cudaFree(c->blas_ws);
        if (c->gelu) cudaFree(c->gelu);
        free(c);
    }
    free(b);
}

static const backend_i cu_iface = {
    /* .version     = */ BACKEND_VERSION,
    /* .name        = */ "cuda",
    /* .host_memory = */ 0,
    /* .free        = */ cu__free,
    /* .alloc       = */ cu__alloc,
    /* .buf_free    = */ cu__buf_free,
    /* .upload      = */ cu__upload,
    /* .download    = */ cu__download,
    /* .weight      = */ cu__weight,
    /* .supports    = */ cu__supports,
    /* .batch       = */ cu__batch,
    /* .embed       = */ cu__embed,
    /* .rmsnorm     = */ cu__rmsnorm,
    /* .add_bias    = */ cu__add_bias,
    /* .rope        = */ cu__rope,
    /* .kv_write    = */ cu__kv_write,
    /* .attention   = */ cu__attention,
    /* .swiglu      = */ cu__swiglu,
    /* .add         = */ cu__add,
    /* .matmul      = */ cu__matmul,
    /* .matmul_n    = */ cu__matmul_n,
    /* .interleave  = */ cu__interleave,
    /* .logits      = */ cu__logits,
    /* .n_threads   = */ cu__n_threads,
    /* .parallel    = */ cu__parallel,
    /* .geglu       = */ cu__geglu,
    /* .scale       = */ cu__scale,
    /* .mla_kv_write = */ cu__mla_kv_write,
    /* .mla_attention = */ cu__mla_attention,
    /* .moe_route   = */ cu__moe_route,
    /* .moe_experts = */ cu__moe_experts,
    /* .sum_rows    = */ cu__sum_rows,
    /* .gather_rows = */ cu__gather_rows,
};

/* the visible devices, or -1 with the runtime's reason in why */
static int cu__count(char *why, size_t len) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, len, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return -1;
    }
    if (n <= 0) snprintf(why, len, "cudaGetDeviceCount found 0 devices");
    return n;
}

extern "C" SAMPAN_CUDA_EXPORT int sampan_cuda_devices(void) {
    char why[160];
    int n = cu__count(why, sizeof why);
    return n > 0 ? n : 0;
}

extern "C" SAMPAN_CUDA_EXPORT backend *sampan_cuda_new(int n_threads, int device, char *err,
                                                   size_t errlen) {
    (void)n_threads;   /* the host thread only enqueues */
    char why[160];
    const int n = cu__count(why, sizeof why);
    if (n <= 0) {
        snprintf(err, errlen, "backend cuda: no CUDA device (%s)", why);
        return NULL;
    }
    if (device < 0) device = 0;
    if (device >= n) {
        const char *vis = getenv("CUDA_VISIBLE_DEVICES");
        snprintf(err, errlen, "backend cuda: device %d does not exist (%d visible%s%s)", device, n,
                 vis ? ", CUDA_VISIBLE_DEVICES=" : "", vis ? vis : "");
        return NULL;
    }
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "backend cuda: cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
        return NULL;
    }
    backend *b = (backend *)calloc(1, sizeof *b);
    cu_ctx *c = (cu_ctx *)calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        snprintf(err, errlen, "backend cuda: out of host memory");
        return NULL;
    }
    b->i = &cu_iface;
    b->ctx = c;
    c->device = device;
    c->st = 0;
    c->dequant = cu__env_flag("SAMPAN_CUDA_DEQUANT", 1);
    c->invariant = cu__env_flag("SAMPAN_CUDA_INVARIANT", 1);
    c->tf32 = cu__env_flag("SAMPAN_CUDA_TF32", 0);
    if (c->invariant) c->dequant = 0;   /* GEMV only: the copies would never be read */
    int pools = 0;
    c->pools = cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device) ==
                   cudaSuccess && pools;
    size_t fr = 0, total = 0;
    const char *fail = NULL;
    cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
    if ((e = cudaMemGetInfo(&fr, &total)) != cudaSuccess) fail = "cudaMemGetInfo";
    else if ((e = cudaEventCreateWithFlags(&c->ev_pass, cudaEventDisableTiming)) != cudaSuccess ||
             (e = cudaEventCreateWithFlags(&c->ev_tab, cudaEventDisableTiming)) != cudaSuccess ||
             (e = cudaEventCreateWithFlags(&c->ev_rows, cudaEventDisableTiming)) != cudaSuccess)
        fail = "cudaEventCreateWithFlags";
    else if ((e = cudaMalloc(&c->blas_ws, CU_BLAS_WORKSPACE)) != cudaSuccess)
        fail = "cudaMalloc (cuBLAS workspace)";
    if (fail) {
        snprintf(err, errlen, "backend cuda: %s: %s", fail, cudaGetErrorString(e));
        cu__free(b);
        return NULL;
    }
    c->reserve = cu__env_size("SAMPAN_CUDA_RESERVE", total / 5);
    if ((bs = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS) fail = "cublasCreate";
    else if ((bs = cublasSetStream(c->blas, c->st)) != CUBLAS_STATUS_SUCCESS)
        fail = "cublasSetStream";
    else if ((bs = cublasSetWorkspace(c->blas, c->blas_ws, CU_BLAS_WORKSPACE)) !=
             CUBLAS_STATUS_SUCCESS)
        fail = "cublasSetWorkspace";
    if (fail) {
        snprintf(err, errlen, "backend cuda: %s: %s: %s", fail, cublasGetStatusName(bs),
                 cublasGetStatusString(bs));
        if (!strcmp(fail, "cublasCreate")) c->blas = NULL;
        cu__free(b);
        return NULL;
    }
    /* GeGLU's table, built here by the host compiler with glibc's tanhf exactly as the CPU
     * builds its own (om_gelu_fill), so the device looks up the CPU's bits */
    qt_f16 *tab = (qt_f16 *)malloc(sizeof(qt_f16) << 16);
    if (!tab) fail = "malloc (GELU table)";
    else if ((e = cudaMalloc(&c->gelu, sizeof(qt_f16) << 16)) != cudaSuccess)
        fail = "cudaMalloc (GELU table)";
    else {
        om_gelu_fill(tab);
        if ((e = cudaMemcpy(c->gelu, tab, sizeof(qt_f16) << 16, cudaMemcpyHostToDevice)) !=
            cudaSuccess)
            fail = "cudaMemcpy (GELU table)";
    }
    free(tab);
    if (fail) {
        snprintf(err, errlen, "backend cuda: %s: %s", fail,
                 e != cudaSuccess ? cudaGetErrorString(e) : "out of host memory");
        cu__free(b);
        return NULL;
    }
    return b;
}

/* ---- device properties (runtime/backend_cuda.h) ------------------------------------------ */

/* dense FLOP per SM per clock: BF16/F16 tensor, TF32 tensor, F32 SIMT (table in backend_cuda.h) */
static void cu__per_sm(int major, int minor, double *tc, double *tf32, double *f32) {
    const int cc = major * 10 + minor;
    *tc = *tf32 = *f32 = 0;
    if (cc == 80) *tc = 2048, *tf32 = 1024, *f32 = 128;
    else if (cc == 86 || cc == 89) *tc = 1024, *tf32 = 512, *f32 = 256;
    else if (cc == 90) *tc = 4096, *tf32 = 2048, *f32 = 256;
    else if (cc == 100) *tc = 8192, *tf32 = 4096, *f32 = 256;
}

extern "C" SAMPAN_CUDA_EXPORT int sampan_cuda_info(const backend *b, backend_cuda_props *out,
                                                char *err,
                                 size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!b || b->i != &cu_iface) {
        snprintf(err, errlen, "backend %s is not the CUDA backend", b ? b->i->name : "(none)");
        return -1;
    }
    const cu_ctx *c = cu__c(b);
    cudaDeviceProp p;
    int sm_khz = 0, mem_khz = 0;
    cudaError_t e = cudaGetDeviceProperties(&p, c->device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, c->device);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, c->device);
    if (e == cudaSuccess) e = cudaSetDevice(c->device);
    if (e == cudaSuccess) e = cudaMemGetInfo(&out->mem_free, &out->mem_total);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "backend cuda: device %d properties: %s", c->device,
                 cudaGetErrorString(e));
        return -1;
    }
    p.name[sizeof out->name - 1] = '\0';
    memcpy(out->name, p.name, sizeof out->name);
    out->device = c->device;
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    out->n_sm = p.multiProcessorCount;
    out->sm_clock_hz = sm_khz * 1e3;
    out->mem_clock_hz = mem_khz * 1e3;
    out->bus_bits = p.memoryBusWidth;
    out->hbm_bytes_s = out->mem_clock_hz * 2.0 * p.memoryBusWidth / 8.0;
    double tc, tf32, f32;
    cu__per_sm(p.major, p.minor, &tc, &tf32, &f32);
    const double sm_hz = out->n_sm * out->sm_clock_hz;
    out->flops_bf16 = out->flops_f16 = tc * sm_hz;
    out->flops_tf32 = tf32 * sm_hz;
    out->flops_f32 = f32 * sm_hz;
    out->dequant = c->dequant;
    out->invariant = c->invariant;
    out->tf32 = c->tf32;
    out->weight_bytes = c->weight_bytes;
    out->copy_bytes = c->copy_bytes;
    out->copy_skipped_bytes = c->copy_skipped;
    return 0;
}
