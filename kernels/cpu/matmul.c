/* kernels/cpu/matmul.c — kern_matmul: out (T,N) = x (T,K) · W^T over the worker pool.
 *
 * One pool job per call, in two phases separated by a spin barrier:
 *   1. convert x to the weight type's activation format into `scratch`; the (T,K) matrix is cut
 *      into whole blocks, split evenly over the threads (so T = 1 is split too);
 *   2. compute: threads take chunks of MM_CHUNK_ALIGN-aligned weight rows from a shared counter
 *      (dynamic, because the machine is shared and a thread may be descheduled); a chunk covers
 *      all T tokens.
 * Batch invariance: out[t][n] is computed by one call of the same arithmetic whatever T, t's
 * place in the batch and the thread count: the AVX2 tile kernels of gemm_avx2.c when the ISA
 * has them (they fix one accumulation order for every tile shape), otherwise the type's vec_dot.
 */
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "gemm_impl.h"
#include "kern.h"
#include "pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MM_PAUSE() _mm_pause()
#else
#define MM_PAUSE() ((void)0)
#endif

#define MM_CHUNK_ALIGN 16
#define MM_CHUNKS_PER_THREAD 8

typedef struct {
    const kern_weight *w;
    const float *x;          /* (T, K) */
    float *out;              /* (T, N) */
    int T;
    int fast;                /* use gemm_avx2_rows */
    const qt_traits *xt;     /* traits of the activation format (generic path, quantized fast) */
    const uint8_t *xc;       /* converted activations; == x when none is needed */
    uint8_t *xdst;           /* == xc, writable; NULL when none is needed */
    size_t xc_row;           /* bytes per converted row */
    int64_t cblk;            /* elements per block of the converted activations */
    size_t cbytes;           /* bytes per such block */
    int64_t chunk_rows;
    int64_t n_chunks;
    atomic_int arrived;
    atomic_llong next;
} mm__ctx;

/* kern_init may switch ISA between calls (tests compare paths), so ask every time */
static int mm__use_fast(int type) {
    return strcmp(kern_isa(), "scalar") != 0 && gemm_avx2_supported(type);
}

/* bytes of one converted activation row, and the element format behind it */
static size_t mm__x_row(const kern_weight *w, int fast) {
    if (fast) return gemm_avx2_x_row_size(w->type, w->n_cols);
    const qt_traits *t = qt_get(w->type);
    if (!t || t->vec_dot_type == QT_F32) return (size_t)w->n_cols * sizeof(float);
    return qt_row_size(t->vec_dot_type, w->n_cols);
}

size_t kern_matmul_scratch(const kern_weight *w, int T) {
    if (T <= 0) return 0;
    size_t a = mm__x_row(w, 0);
    size_t b = gemm_avx2_supported(w->type) ? gemm_avx2_x_row_size(w->type, w->n_cols) : 0;
    return (a > b ? a : b) * (size_t)T;
}

/* Converts elements [e0, e1) of the flattened (T, K) activations; e0 on a block bound. */
static void mm__convert(const mm__ctx *c, int64_t e0, int64_t e1) {
    if (e0 >= e1) return;
    uint8_t *dst = c->xdst + (size_t)(e0 / c->cblk) * c->cbytes;
    if (c->fast) gemm_avx2_convert(c->w->type, c->x + e0, dst, e1 - e0, c->xt);
    else c->xt->from_float(c->x + e0, dst, e1 - e0);
}

static void mm__barrier(mm__ctx *c, int nth) {
    atomic_fetch_add(&c->arrived, 1);
    for (unsigned i = 0; atomic_load_explicit(&c->arrived, memory_order_acquire) < nth; i++) {
        if (i < 1000) MM_PAUSE();
        else sched_yield();
    }
}

static void mm__rows_generic(const mm__ctx *c, int64_t n0, int64_t n1) {
    const kern_weight *w = c->w;
    qt_vec_dot_fn dot = qt_get(w->type)->vec_dot;
    for (int t = 0; t < c->T; t++) {
        const uint8_t *xr = c->xc + (size_t)t * c->xc_row;
        float *o = c->out + (int64_t)t * w->n_rows;
        for (int64_t n = n0; n < n1; n++)
            o[n] = dot(w->n_cols, (const uint8_t *)w->data + (size_t)n * w->row_stride, xr);
    }
}

static void mm__work(void *arg, int ith, int nth) {
    mm__ctx *c = arg;
    const kern_weight *w = c->w;
    if (c->xdst) {
        /* rows are whole blocks, except F16's 8-float steps: those map element to element */
        int64_t bs = c->cblk;
        int64_t total = (int64_t)c->T * w->n_cols;
        int64_t nblk = (total + bs - 1) / bs;
        int64_t b0 = nblk * ith / nth, b1 = nblk * (ith + 1) / nth;
        int64_t e1 = b1 * bs < total ? b1 * bs : total;
        mm__convert(c, b0 * bs, e1);
        if (nth > 1) mm__barrier(c, nth);
    }
    gemm_args ga = {
        .w = w->data, .w_stride = w->row_stride, .type = w->type, .K = w->n_cols,
        .x = c->xc, .x_stride = c->xc_row, .out = c->out, .N = w->n_rows, .T = c->T,
    };
    for (;;) {
        int64_t ch = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        if (ch >= c->n_chunks) break;
        int64_t n0 = ch * c->chunk_rows;
        int64_t n1 = n0 + c->chunk_rows < w->n_rows ? n0 + c->chunk_rows : w->n_rows;
        if (c->fast) gemm_avx2_rows(&ga, n0, n1);
        else mm__rows_generic(c, n0, n1);
    }
}

void kern_matmul(struct pool *pool, float *out, const kern_weight *w, const float *x, int T,
                 void *scratch) {
    if (T <= 0 || w->n_rows <= 0) return;
    int nth = pool_size(pool);
    mm__ctx c = { .w = w, .x = x, .out = out, .T = T };
    c.fast = mm__use_fast(w->type);
    const qt_traits *wt = qt_get(w->type);
    c.xt = qt_get(wt->vec_dot_type);
    c.xc_row = mm__x_row(w, c.fast);
    if (wt->vec_dot_type == QT_F32) {   /* F32 activations are used as they are */
        c.xc = (const uint8_t *)x;
        c.xc_row = (size_t)w->n_cols * sizeof(float);
    } else {
        c.xdst = scratch;
        c.xc = scratch;
        if (c.fast) {
            c.cblk = gemm_avx2_x_block(w->type);
            c.cbytes = w->type == QT_F16 ? (size_t)c.cblk * sizeof(float)
                                         : gemm_avx2_x_row_size(w->type, c.cblk);
        } else {
            c.cblk = c.xt->block_size;
            c.cbytes = c.xt->type_size;
        }
    }
    int64_t want = (w->n_rows + (int64_t)nth * MM_CHUNKS_PER_THREAD - 1) /
                   ((int64_t)nth * MM_CHUNKS_PER_THREAD);
    c.chunk_rows = (want + MM_CHUNK_ALIGN - 1) / MM_CHUNK_ALIGN * MM_CHUNK_ALIGN;
    c.n_chunks = (w->n_rows + c.chunk_rows - 1) / c.chunk_rows;
    atomic_init(&c.arrived, 0);
    atomic_init(&c.next, 0);
    if (nth == 1) mm__work(&c, 0, 1);
    else pool_run(pool, mm__work, &c);
}
