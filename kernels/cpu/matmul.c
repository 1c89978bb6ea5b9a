/* kernels/cpu/matmul.c — kern_matmul: out (T,N) = x (T,K) · W^T over the worker pool.
 *
 * One pool job per call, in two phases separated by a spin barrier:
 *   1. convert x into `scratch` (the weight type's activation format: the vec_dot_type, laid
 *      out for the tile kernels on the fast path); the chunks of all T rows are split evenly
 *      over the threads, so T = 1 is split too;
 *   2. compute: threads take chunks of MM_CHUNK_ALIGN-aligned weight rows from a shared counter
 *      (dynamic, because the machine is shared and a thread may be descheduled); a chunk covers
 *      all T tokens. Small batches on packed weights (each weight byte read once per call)
 *      take guided chunks, a 1/(2 nth) share of the rows left, shrinking to MM_CHUNK_ALIGN
 *      rows: few long streams, and a tail of small chunks so that the threads finish
 *      together. Larger batches take fixed chunks (MM_CHUNKS_PER_THREAD per thread), small
 *      enough that a chunk's weights stay in L2 while the token blocks pass over them.
 * Batch invariance: out[t][n] is computed by the same arithmetic whatever T, t's place in the
 * batch and the thread count: the AVX2 tile kernels of gemm_avx2.c when kern_isa() is not
 * "scalar" (they fix one accumulation order for every tile shape), otherwise one call of the
 * type's vec_dot. The two paths round differently from each other, so one process must not
 * switch ISA between runs it compares.
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

#define MM_CHUNK_ALIGN 16         /* rows: 64 B of output per token, no false sharing */
#define MM_CHUNKS_PER_THREAD 8    /* row chunks per thread, for dynamic balance */
#define MM_MAXW 3                 /* weights sharing one input in kern_matmul_n */
#define MM_GUIDED_T 64            /* batches up to this take guided chunks on packed weights */

typedef struct {
    const kern_weight *w;    /* == ws[0]: type, K and layout of every weight */
    const kern_weight *ws[MM_MAXW];
    float *outs[MM_MAXW];    /* (T, N_i) */
    int nw;
    const float *x;          /* (T, K) */
    int T;
    int fast;                /* 1: gemm_avx2_rows, 2: gemm_x8_rows (KERN_X8), 0: vec_dot */
    const qt_traits *xt;     /* traits of the vec_dot_type */
    const uint8_t *xc;       /* converted activations; == x when none is needed */
    uint8_t *xdst;           /* == xc, writable; NULL when none is needed */
    size_t xc_row;           /* bytes per converted row */
    int64_t n_xchunks;       /* conversion chunks of all T rows */
    int guided;              /* chunks from the rows left (see the header), else fixed */
    int64_t chunk_rows[MM_MAXW];  /* fixed chunks */
    int64_t first[MM_MAXW + 1];   /* fixed: weight i owns chunks [first[i], first[i + 1]);
                                     guided: rows [first[i], first[i + 1]) of the rows of all
                                     weights end to end */
    atomic_int arrived;
    atomic_llong next;       /* fixed: the next chunk; guided: the next row */
} mm__ctx;

/* kern_init may switch ISA between calls (tests compare paths), so ask every time */
static int mm__use_fast(int type) {
    return strcmp(kern_isa(), "scalar") != 0 && gemm_avx2_supported(type);
}

size_t kern_matmul_scratch(const kern_weight *w, int T) {
    if (T <= 0) return 0;
    if (w->layout == KERN_X8) return (size_t)T * gemm_x8_x_row_size(w->type, w->n_cols);
    const qt_traits *t = qt_get(w->type);
    size_t generic = 0, fast = 0;
    if (t && t->vec_dot_type != QT_F32) generic = qt_row_size(t->vec_dot_type, w->n_cols) * T;
    if (gemm_avx2_supported(w->type)) fast = gemm_avx2_x_size(w->type, w->n_cols, T);
    return generic > fast ? generic : fast;
}

/* Converts chunks [c0, c1) of the activations (fast path: gemm_avx2_x_chunk values of a row;
 * vec_dot path: blocks of the vec_dot_type, rows being whole blocks). */
static void mm__convert(const mm__ctx *c, int64_t c0, int64_t c1) {
    if (c0 >= c1) return;
    if (c->fast == 2) {
        gemm_x8_convert(c->w->type, c->x, c->w->n_cols, c0, c1, c->xdst, qt_get(QT_Q8_0));
    } else if (c->fast) {
        gemm_avx2_convert(c->w->type, c->x, c->w->n_cols, c0, c1, c->xdst, c->xt);
    } else {
        int64_t bs = c->xt->block_size;
        c->xt->from_float(c->x + c0 * bs, c->xdst + (size_t)c0 * c->xt->type_size,
                          (c1 - c0) * bs);
    }
}

static void mm__barrier(mm__ctx *c, int nth) {
    atomic_fetch_add(&c->arrived, 1);
    for (unsigned i = 0; atomic_load_explicit(&c->arrived, memory_order_acquire) < nth; i++) {
        if (i < 1000) MM_PAUSE();
        else sched_yield();   /* a thread was descheduled: give it our CPU */
    }
}

#define MM_PF 4096

static void mm__rows_generic(const mm__ctx *c, const kern_weight *w, float *out, int64_t n0,
                             int64_t n1) {
    qt_vec_dot_fn dot = qt_get(w->type)->vec_dot;
    if (c->T == 1) {
        /* decode: two streams of rows, the chunk's two halves, so that a core keeps enough
         * cache-line misses in flight (as the packed kernels do), each prefetched MM_PF bytes
         * ahead to carry the hardware prefetcher over 4 KiB page bounds (as GA_PF does). Each
         * row's dot is the same call as in the batched loop below. */
        const uint8_t *xr = c->xc;
        const int64_t h = (n1 - n0 + 1) / 2;
        for (int64_t i = 0; i < h; i++)
            for (int64_t n = n0 + i; n < n1; n += h) {
                const uint8_t *wr = (const uint8_t *)w->data + (size_t)n * w->row_stride;
                for (size_t off = 0; off < w->row_stride; off += 64) __builtin_prefetch(wr + MM_PF + off);
                out[n] = dot(w->n_cols, wr, xr);
            }
        return;
    }
    for (int t = 0; t < c->T; t++) {
        const uint8_t *xr = c->xc + (size_t)t * c->xc_row;
        float *o = out + (int64_t)t * w->n_rows;
        for (int64_t n = n0; n < n1; n++)
            o[n] = dot(w->n_cols, (const uint8_t *)w->data + (size_t)n * w->row_stride, xr);
    }
}

/* The next chunk: weight *wi, its rows [*n0, *n1); 0 when none is left. */
static int mm__claim(mm__ctx *c, int nth, int *wi, int64_t *n0, int64_t *n1) {
    const int64_t total = c->first[c->nw];
    if (!c->guided) {
        int64_t ch = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        if (ch >= total) return 0;
        int i = 0;
        while (ch >= c->first[i + 1]) i++;
        *wi = i;
        *n0 = (ch - c->first[i]) * c->chunk_rows[i];
        *n1 = *n0 + c->chunk_rows[i] < c->ws[i]->n_rows ? *n0 + c->chunk_rows[i] : c->ws[i]->n_rows;
        return 1;
    }
    long long r = atomic_load_explicit(&c->next, memory_order_relaxed);
    for (;;) {
        if (r >= total) return 0;
        int i = 0;
        while (r >= c->first[i + 1]) i++;
        int64_t want = (total - r + 2 * nth - 1) / (2 * nth);
        want = (want + MM_CHUNK_ALIGN - 1) / MM_CHUNK_ALIGN * MM_CHUNK_ALIGN;
        int64_t end = r + want < c->first[i + 1] ? r + want : c->first[i + 1];
        if (atomic_compare_exchange_weak_explicit(&c->next, &r, end, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *wi = i;
            *n0 = r - c->first[i];
            *n1 = end - c->first[i] < c->ws[i]->n_rows ? end - c->first[i] : c->ws[i]->n_rows;
            return 1;
        }
    }
}

static void mm__work(void *arg, int ith, int nth) {
    mm__ctx *c = arg;
    const kern_weight *w = c->w;
    if (c->xdst) {
        mm__convert(c, c->n_xchunks * ith / nth, c->n_xchunks * (ith + 1) / nth);
        if (nth > 1) mm__barrier(c, nth);
    }
    int i;
    int64_t n0, n1;
    while (mm__claim(c, nth, &i, &n0, &n1)) {
        const kern_weight *wi = c->ws[i];
        gemm_args ga = {
            .w = wi->data, .w_stride = wi->row_stride, .type = w->type, .K = w->n_cols,
            .x = c->xc, .x_stride = c->xc_row, .out = c->outs[i], .N = wi->n_rows, .T = c->T,
        };
        if (c->fast == 2) gemm_x8_rows(&ga, n0, n1);
        else if (c->fast) gemm_avx2_rows(&ga, n0, n1);
        else mm__rows_generic(c, wi, c->outs[i], n0, n1);
    }
}

/* one pool job for nw weights of one type, K and layout that share the input x */
static void mm__run(struct pool *pool, int nw, float *const *outs, const kern_weight *const *ws,
                    const float *x, int T, void *scratch) {
    const kern_weight *w = ws[0];
    int nth = pool_size(pool);
    mm__ctx c = { .w = w, .nw = nw, .x = x, .T = T };
    for (int i = 0; i < nw; i++) {
        c.ws[i] = ws[i];
        c.outs[i] = outs[i];
    }
    c.fast = w->layout == KERN_X8 ? 2 : mm__use_fast(w->type);
    const int vdt = qt_get(w->type)->vec_dot_type;
    c.xt = qt_get(vdt);
    if (c.fast == 2) {
        c.xdst = scratch;
        c.xc_row = gemm_x8_x_row_size(w->type, w->n_cols);
        c.n_xchunks = (int64_t)T * (w->n_cols / gemm_x8_x_chunk(w->type, w->n_cols));
    } else if (c.fast) {
        int64_t chunk = gemm_avx2_x_chunk(w->type);
        c.xdst = scratch;
        c.xc_row = gemm_avx2_x_row_size(w->type, w->n_cols);
        c.n_xchunks = (int64_t)T * ((w->n_cols + chunk - 1) / chunk);
    } else if (vdt == QT_F32) {
        c.xc = (const uint8_t *)x;   /* F32 activations are used as they are */
        c.xc_row = (size_t)w->n_cols * sizeof(float);
    } else {
        c.xdst = scratch;
        c.xc_row = qt_row_size(vdt, w->n_cols);
        c.n_xchunks = (int64_t)T * (w->n_cols / c.xt->block_size);
    }
    if (c.xdst) c.xc = c.xdst;
    c.guided = c.fast == 2 && T <= MM_GUIDED_T;
    for (int i = 0; i < nw; i++) {
        int64_t N = ws[i]->n_rows > 0 ? ws[i]->n_rows : 0;
        if (c.guided) {   /* rows end to end; a weight's rows start at a multiple of 16 */
            c.first[i + 1] = c.first[i] + (N + MM_CHUNK_ALIGN - 1) / MM_CHUNK_ALIGN * MM_CHUNK_ALIGN;
            continue;
        }
        int64_t want = (N + (int64_t)nth * MM_CHUNKS_PER_THREAD - 1) /
                       ((int64_t)nth * MM_CHUNKS_PER_THREAD);
        c.chunk_rows[i] = want < 1 ? MM_CHUNK_ALIGN
                                   : (want + MM_CHUNK_ALIGN - 1) / MM_CHUNK_ALIGN * MM_CHUNK_ALIGN;
        c.first[i + 1] = c.first[i] + (N + c.chunk_rows[i] - 1) / c.chunk_rows[i];
    }
    atomic_init(&c.arrived, 0);
    atomic_init(&c.next, 0);
    if (nth == 1) mm__work(&c, 0, 1);
    else pool_run(pool, mm__work, &c);
}

void kern_matmul(struct pool *pool, float *out, const kern_weight *w, const float *x, int T,
                 void *scratch) {
    if (T <= 0 || w->n_rows <= 0) return;
    mm__run(pool, 1, &out, &w, x, T, scratch);
}

void kern_matmul_n(struct pool *pool, int n, float *const *out, const kern_weight *const *w,
                   const float *x, int T, void *scratch) {
    if (T <= 0) return;
    int same = n >= 1 && n <= MM_MAXW;
    for (int i = 1; same && i < n; i++)
        same = w[i]->type == w[0]->type && w[i]->n_cols == w[0]->n_cols &&
               w[i]->layout == w[0]->layout;
    if (same) {
        mm__run(pool, n, out, w, x, T, scratch);
        return;
    }
    for (int i = 0; i < n; i++) kern_matmul(pool, out[i], w[i], x, T, scratch);
}
