/* runtime/backend_cpu.c — the CPU backend: every slot of runtime/backend.h on the kernels of
 * kernels/cpu (kern_*) and the persistent thread pool.
 *
 * Owns the pool, one growable scratch buffer for activations converted to a weight's
 * vec_dot_type, the attention scratch (per thread: G * context floats) and the current
 * batch (host pointers, valid until the next `batch`). Buffers are plain host memory, so the
 * model's weights are used in place (kern_pack may repack them at load: host_memory = 1).
 * The ops are the loops runtime/model.c had, in the same order with the same kernels: a
 * model's logits are bit-identical to those before the seam.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

typedef struct {
    pool *pool;
    void *scratch;          /* matmul: activations in the weight's vec_dot_type */
    size_t scratch_size;
    float *att;             /* (n_threads, att_per) attention scores */
    size_t att_per;
    backend_batch bb;       /* the current pass's positions (host, the caller's) */
} cpu_ctx;

static int cpu__oom(backend *b, const char *what, size_t bytes) {
    snprintf(b->err, sizeof b->err, "backend cpu: out of memory for %s (%zu bytes)", what, bytes);
    return -1;
}

static void cpu__free(backend *b) {
    if (!b) return;
    cpu_ctx *c = b->ctx;
    pool_free(c->pool);
    free(c->scratch);
    free(c->att);
    free(c);
    free(b);
}

/* ---- memory ------------------------------------------------------------------------------ */

static void *cpu__alloc(backend *b, size_t bytes) {
    (void)b;
    return calloc(1, bytes ? bytes : 1);
}

static void cpu__buf_free(backend *b, void *p) {
    (void)b;
    free(p);
}

static int cpu__copy(backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static int cpu__supports(const backend *b, int type) {
    (void)b;
    const qt_traits *t = qt_get(type);
    return t && t->to_float && t->vec_dot;
}

static int cpu__batch(backend *b, const backend_batch *bb) {
    cpu_ctx *c = b->ctx;
    c->bb = *bb;
    return 0;
}

/* ---- element-wise ops -------------------------------------------------------------------- */

static int cpu__embed(backend *b, float *x, const kern_weight *emb, int row0, int C) {
    const cpu_ctx *c = b->ctx;
    const qt_traits *et = qt_get(emb->type);
    for (int t = 0; t < c->bb.n; t++) {
        int64_t row = (int64_t)c->bb.tokens[t] - row0;
        float *xt = x + (size_t)t * C;
        if (row >= 0 && row < emb->n_rows)
            et->to_float((const char *)emb->data + (size_t)row * emb->row_stride, xt, C);
        else
            memset(xt, 0, (size_t)C * sizeof(float));   /* another rank owns this row */
    }
    return 0;
}

static int cpu__rmsnorm(backend *b, float *out, const float *x, const float *w, int T, int C,
                        float eps) {
    (void)b;
    for (int t = 0; t < T; t++)
        kern_rmsnorm(out + (size_t)t * C, x + (size_t)t * C, w, C, eps);
    return 0;
}

static int cpu__add_bias(backend *b, float *x, const float *bias, int T, int N) {
    (void)b;
    for (int t = 0; t < T; t++) {
        float *xt = x + (size_t)t * N;
        for (int i = 0; i < N; i++) xt[i] += bias[i];
    }
    return 0;
}

static int cpu__rope(backend *b, float *x, int T, int H, int D, const backend_rope *r) {
    const cpu_ctx *c = b->ctx;
    for (int t = 0; t < T; t++)
        kern_rope(x + (size_t)t * H * D, H, D, r->n_rot, c->bb.pos[t], r->base, r->neox,
                  r->freq_factors, &r->scaling);
    return 0;
}

static int cpu__add(backend *b, float *x, const float *y, size_t n) {
    (void)b;
    for (size_t i = 0; i < n; i++) x[i] += y[i];
    return 0;
}

static int cpu__interleave(backend *b, float *out, const float *in, int parts, int T, int n) {
    (void)b;
    for (int r = 0; r < parts; r++)
        for (int t = 0; t < T; t++)
            memcpy(out + ((size_t)t * parts + r) * n, in + ((size_t)r * T + t) * n,
                   (size_t)n * sizeof(float));
    return 0;
}

/* gate = act(gate) * up over n elements (act: silu for SwiGLU, gelu for GeGLU), split over
 * the threads in 64-float pieces */
typedef struct {
    void (*fn)(float *out, const float *gate, const float *up, int n);   /* kern_swiglu/geglu */
    float *gate;
    const float *up;
    size_t n;
} glu_job;

static void cpu__glu_worker(void *arg, int ith, int nth) {
    const glu_job *j = arg;
    size_t pieces = (j->n + 63) / 64;
    size_t i0 = pieces * (size_t)ith / (size_t)nth * 64, i1 = pieces * (size_t)(ith + 1) / (size_t)nth * 64;
    if (i1 > j->n) i1 = j->n;
    if (i0 < i1) j->fn(j->gate + i0, j->gate + i0, j->up + i0, (int)(i1 - i0));
}

static int cpu__swiglu(backend *b, float *gate, const float *up, size_t n) {
    cpu_ctx *c = b->ctx;
    glu_job j = { kern_swiglu, gate, up, n };
    pool_run(c->pool, cpu__glu_worker, &j);
    return 0;
}

static int cpu__geglu(backend *b, float *gate, const float *up, size_t n) {
    cpu_ctx *c = b->ctx;
    glu_job j = { kern_geglu, gate, up, n };
    pool_run(c->pool, cpu__glu_worker, &j);
    return 0;
}

static int cpu__scale(backend *b, float *x, float s, size_t n) {
    (void)b;
    for (size_t i = 0; i < n; i++) x[i] *= s;
    return 0;
}

/* ---- KV cache and attention -------------------------------------------------------------- */

static size_t kv__esize(int type) { return type == QT_F32 ? 4 : 2; }

/* element index of KV head h's vector in block blk, slot off, layer l */
static size_t kv__index(const backend_kv *kv, int l, int blk, int h, int off) {
    return ((((size_t)l * kv->n_blocks + (size_t)blk) * kv->n_kv_heads + (size_t)h) *
                kv->block_size + (size_t)off) * (size_t)kv->head_dim;
}

static void kv__store(void *dst, const float *src, int n, int type) {
    if (type == QT_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    } else if (type == QT_F16) {
        qt_f16 *d = dst;
        for (int i = 0; i < n; i++) d[i] = qt_f32_to_f16(src[i]);
    } else {
        qt_bf16 *d = dst;
        for (int i = 0; i < n; i++) d[i] = qt_f32_to_bf16(src[i]);
    }
}

static int cpu__kv_write(backend *b, const backend_kv *kv, int l, const float *k, const float *v,
                         int T) {
    const cpu_ctx *c = b->ctx;
    const int D = kv->head_dim, Hkv = kv->n_kv_heads;
    const size_t es = kv__esize(kv->type);
    for (int t = 0; t < T; t++) {
        int p = c->bb.pos[t];
        int blk = c->bb.tables[t][p / kv->block_size], off = p % kv->block_size;
        for (int h = 0; h < Hkv; h++) {
            size_t at = kv__index(kv, l, blk, h, off) * es;
            kv__store((char *)kv->k + at, k + ((size_t)t * Hkv + h) * D, D, kv->type);
            kv__store((char *)kv->v + at, v + ((size_t)t * Hkv + h) * D, D, kv->type);
        }
    }
    return 0;
}

/* one unit per (position, run of local heads that share one KV head), over the threads */
typedef struct {
    const cpu_ctx *c;
    const backend_kv *kv;
    int l, T;
    float *out;
    const float *q;
    const backend_attn *a;
} attn_job;

static void cpu__attn_worker(void *arg, int ith, int nth) {
    const attn_job *j = arg;
    const backend_kv *kv = j->kv;
    const backend_attn *a = j->a;
    const int H = a->n_heads, D = kv->head_dim, group = a->group;
    const size_t es = kv__esize(kv->type);
    float *att = j->c->att + (size_t)ith * j->c->att_per;
    /* the first run may be cut by the shard's head0. A thread takes a contiguous range of
     * units, so each KV head's rows of a position are read by one thread, once per group. */
    int first = group - a->head0 % group < H ? group - a->head0 % group : H;
    int runs = 1 + (H - first + group - 1) / group;
    int total = j->T * runs;
    for (int u = total * ith / nth; u < total * (ith + 1) / nth; u++) {
        int t = u / runs, r = u % runs;
        int h0 = r == 0 ? 0 : first + (r - 1) * group;
        int h1 = r == 0 ? first : (h0 + group < H ? h0 + group : H);
        int kvh = (a->head0 + h0) / group - a->kv_head0;   /* this rank's copy of the KV head */
        size_t base = kv__index(kv, j->l, 0, kvh, 0) * es;
        const int n = j->c->bb.pos[t] + 1;
        const int first = a->window > 0 && n > a->window ? n - a->window : 0;
        kern_kv_view v = { (const char *)kv->k + base, (const char *)kv->v + base,
                           j->c->bb.tables[t], kv->block_size,
                           (size_t)kv->block_size * kv->n_kv_heads * D, (size_t)D, kv->type,
                           first };
        kern_attn_group(j->out + ((size_t)t * H + h0) * D, j->q + ((size_t)t * H + h0) * D,
                        h1 - h0, D, a->scale, n - first, &v, att);
    }
}

static int cpu__attention(backend *b, const backend_kv *kv, int l, float *out, const float *q,
                          int T, const backend_attn *a) {
    cpu_ctx *c = b->ctx;
    int n_max = 0;
    for (int t = 0; t < T; t++) n_max = c->bb.pos[t] + 1 > n_max ? c->bb.pos[t] + 1 : n_max;
    size_t per = (size_t)a->group * (size_t)n_max;
    if (per > c->att_per) {   /* grows to the longest context seen, then stays */
        size_t bytes = per * (size_t)pool_size(c->pool) * sizeof(float);
        float *p = realloc(c->att, bytes);
        if (!p) return cpu__oom(b, "attention scores", bytes);
        c->att = p;
        c->att_per = per;
    }
    attn_job j = { c, kv, l, T, out, q, a };
    pool_run(c->pool, cpu__attn_worker, &j);
    return 0;
}

/* ---- matrix products --------------------------------------------------------------------- */

static int cpu__matmul_n(backend *b, int n, float *const *out, const kern_weight *const *w,
                         const float *x, int T) {
    cpu_ctx *c = b->ctx;
    size_t need = 0;
    for (int i = 0; i < n; i++) {
        size_t s = kern_matmul_scratch(w[i], T);
        need = s > need ? s : need;
    }
    if (need > c->scratch_size) {
        void *p = realloc(c->scratch, need);
        if (!p) return cpu__oom(b, "a matmul's activations", need);
        c->scratch = p;
        c->scratch_size = need;
    }
    kern_matmul_n(c->pool, n, out, w, x, T, c->scratch);
    return 0;
}

static int cpu__matmul(backend *b, float *out, const kern_weight *w, const float *x, int T) {
    return cpu__matmul_n(b, 1, &out, &w, x, T);   /* kern_matmul_n of one is kern_matmul */
}

static int cpu__logits(backend *b, float *logits, const float *x, int C, float *scratch,
                       const backend_head *h) {
    for (int r = 0; r < h->n_out; r++)
        kern_rmsnorm(scratch + (size_t)r * C, x + (size_t)h->rows[r] * C, h->norm, C, h->eps);
    if (cpu__matmul(b, logits, h->w, scratch, h->n_out)) return -1;
    const int nv = (int)h->w->n_rows, P = h->vocab_pad;
    if (nv < P) {   /* spread rows to vocab_pad, pad with -inf */
        for (int r = h->n_out - 1; r >= 0; r--) {
            memmove(logits + (size_t)r * P, logits + (size_t)r * nv, (size_t)nv * sizeof(float));
            for (int v = nv; v < P; v++) logits[(size_t)r * P + v] = -INFINITY;
        }
    }
    return 0;
}

/* ---- host threads ------------------------------------------------------------------------ */

static void cpu__parallel(backend *b, pool_fn fn, void *arg) {
    cpu_ctx *c = b->ctx;
    pool_run(c->pool, fn, arg);
}

static int cpu__n_threads(const backend *b) {
    const cpu_ctx *c = b->ctx;
    return pool_size(c->pool);
}

static const backend_i cpu_iface = {
    /* .version     = */ BACKEND_VERSION,
    /* .name        = */ "cpu",
    /* .host_memory = */ 1,
    /* .free        = */ cpu__free,
    /* .alloc       = */ cpu__alloc,
    /* .buf_free    = */ cpu__buf_free,
    /* .upload      = */ cpu__copy,
    /* .download    = */ cpu__copy,
    /* .weight      = */ NULL,
    /* .supports    = */ cpu__supports,
    /* .batch       = */ cpu__batch,
    /* .embed       = */ cpu__embed,
    /* .rmsnorm     = */ cpu__rmsnorm,
    /* .add_bias    = */ cpu__add_bias,
    /* .rope        = */ cpu__rope,
    /* .kv_write    = */ cpu__kv_write,
    /* .attention   = */ cpu__attention,
    /* .swiglu      = */ cpu__swiglu,
    /* .add         = */ cpu__add,
    /* .matmul      = */ cpu__matmul,
    /* .matmul_n    = */ cpu__matmul_n,
    /* .interleave  = */ cpu__interleave,
    /* .logits      = */ cpu__logits,
    /* .n_threads   = */ cpu__n_threads,
    /* .parallel    = */ cpu__parallel,
    /* .geglu       = */ cpu__geglu,
    /* .scale       = */ cpu__scale,
};

backend *backend_cpu_new(int n_threads, char *err, size_t errlen) {
    backend *b = calloc(1, sizeof *b);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        snprintf(err, errlen, "backend cpu: out of memory");
        return NULL;
    }
    c->pool = pool_new(n_threads);
    if (!c->pool) {
        free(b);
        free(c);
        snprintf(err, errlen, "backend cpu: cannot start %d worker threads", n_threads);
        return NULL;
    }
    b->i = &cpu_iface;
    b->ctx = c;
    return b;
}
