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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "ops_math.h"   /* om_moe_group_score */

typedef struct {
    pool *pool;
    void *scratch;          /* matmul: activations in the weight's vec_dot_type */
    size_t scratch_size;
    float *att;             /* (n_threads, att_per) attention scores */
    size_t att_per;
    backend_batch bb;       /* the current pass's positions (host, the caller's) */
    float *rows;            /* MLA / MoE: gathered rows and their products (grows) */
    size_t rows_floats;
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
    free(c->rows);
    free(c);
    free(b);
}

/* c->rows holding at least n floats */
static float *cpu__rows(backend *b, size_t n) {
    cpu_ctx *c = b->ctx;
    if (n > c->rows_floats) {
        float *p = realloc(c->rows, n * sizeof(float));
        if (!p) {
            cpu__oom(b, "gathered rows", n * sizeof(float));
            return NULL;
        }
        c->rows = p;
        c->rows_floats = n;
    }
    return c->rows;
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
                           first, 0 };
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

/* ---- multi-head latent attention (DeepSeek) ---------------------------------------------- */

static int cpu__mla_kv_write(backend *b, const backend_kv *kv, int l, const float *kva,
                             const float *norm, float eps, int T, const backend_mla *a) {
    const cpu_ctx *c = b->ctx;
    const int R = a->rank, Dr = a->rope_dims, D = kv->head_dim;   /* D == R + Dr */
    const size_t es = kv__esize(kv->type);
    float row[D];
    for (int t = 0; t < T; t++) {
        const float *src = kva + (size_t)t * D;
        int p = c->bb.pos[t];
        kern_rmsnorm(row, src, norm, R, eps);
        memcpy(row + R, src + R, (size_t)Dr * sizeof(float));
        kern_rope(row + R, 1, Dr, Dr, p, a->rope.base, 0, a->rope.freq_factors, &a->rope.scaling);
        int blk = c->bb.tables[t][p / kv->block_size], off = p % kv->block_size;
        kv__store((char *)kv->k + kv__index(kv, l, blk, 0, off) * es, row, D, kv->type);
    }
    return 0;
}

/* out (T, n_out per head) for every head h: w[h] . in[:, h] where in is (T, H, stride) from
 * column c0; the result goes to (T, H, ostride) from column o0. Head by head, each one
 * matmul over the pool (its rows gathered first), so every value is kern_matmul's. */
static int cpu__per_head(backend *b, const kern_weight *w, int H, const float *in, int stride,
                         int c0, float *out, int ostride, int o0, int T) {
    const int K = (int)w[0].n_cols, N = (int)w[0].n_rows;
    float *g = cpu__rows(b, (size_t)T * (size_t)(K + N));
    if (!g) return -1;
    float *y = g + (size_t)T * K;
    for (int h = 0; h < H; h++) {
        for (int t = 0; t < T; t++)
            memcpy(g + (size_t)t * K, in + ((size_t)t * H + h) * stride + c0, (size_t)K * sizeof(float));
        if (cpu__matmul(b, y, &w[h], g, T)) return -1;
        for (int t = 0; t < T; t++)
            memcpy(out + ((size_t)t * H + h) * ostride + o0, y + (size_t)t * N, (size_t)N * sizeof(float));
    }
    return 0;
}

/* one unit per (position, chunk of heads): all heads read the one latent KV head */
typedef struct {
    const cpu_ctx *c;
    const backend_kv *kv;
    int l, T, H, R, chunk;
    float *olat;
    const float *qlat;
    float scale;
} mla_job;

static void cpu__mla_worker(void *arg, int ith, int nth) {
    const mla_job *j = arg;
    const backend_kv *kv = j->kv;
    const int D = kv->head_dim, chunks = (j->H + j->chunk - 1) / j->chunk;
    const size_t es = kv__esize(kv->type);
    float *att = j->c->att + (size_t)ith * j->c->att_per;
    const char *base = (const char *)kv->k + kv__index(kv, j->l, 0, 0, 0) * es;
    int total = j->T * chunks;
    for (int u = total * ith / nth; u < total * (ith + 1) / nth; u++) {
        int t = u / chunks, h0 = (u % chunks) * j->chunk;
        int h1 = h0 + j->chunk < j->H ? h0 + j->chunk : j->H;
        const int n = j->c->bb.pos[t] + 1;
        kern_kv_view v = { base, base, j->c->bb.tables[t], kv->block_size,
                           (size_t)kv->block_size * D, (size_t)D, kv->type, 0, j->R };
        kern_attn_group(j->olat + ((size_t)t * j->H + h0) * j->R,
                        j->qlat + ((size_t)t * j->H + h0) * D, h1 - h0, D, j->scale, n, &v, att);
    }
}

static int cpu__mla_attention(backend *b, const backend_kv *kv, int l, float *out, float *q,
                              float *qlat, float *olat, int T, const backend_mla *a) {
    cpu_ctx *c = b->ctx;
    const int H = a->n_heads, R = a->rank, Dn = a->nope_dims, Dr = a->rope_dims;
    const int Dq = Dn + Dr, D = R + Dr;
    int n_max = 0;
    for (int t = 0; t < T; t++) {
        kern_rope(q + (size_t)t * H * Dq + Dn, H, Dq, Dr, c->bb.pos[t], a->rope.base, 0,
                  a->rope.freq_factors, &a->rope.scaling);
        for (int h = 0; h < H; h++)   /* the RoPE part joins the absorbed query as it is */
            memcpy(qlat + ((size_t)t * H + h) * D + R, q + ((size_t)t * H + h) * Dq + Dn,
                   (size_t)Dr * sizeof(float));
        n_max = c->bb.pos[t] + 1 > n_max ? c->bb.pos[t] + 1 : n_max;
    }
    if (cpu__per_head(b, a->k_b, H, q, Dq, 0, qlat, D, 0, T)) return -1;   /* q_nope -> latent */
    /* a thread's unit: a position's heads in chunks, so that one position keeps both busy */
    int nth = pool_size(c->pool), chunk = T >= nth ? H : (H + nth - 1) / nth;
    size_t per = (size_t)chunk * (size_t)n_max;
    if (per > c->att_per) {
        size_t bytes = per * (size_t)nth * sizeof(float);
        float *p = realloc(c->att, bytes);
        if (!p) return cpu__oom(b, "attention scores", bytes);
        c->att = p;
        c->att_per = per;
    }
    mla_job j = { c, kv, l, T, H, R, chunk, olat, qlat, a->scale };
    pool_run(c->pool, cpu__mla_worker, &j);
    return cpu__per_head(b, a->v_b, H, olat, R, 0, out, a->v_dim, 0, T);   /* latent -> values */
}

/* ---- DeepSeekMoE ------------------------------------------------------------------------- */

/* index of the largest of x[0, n) not yet taken, ties to the lowest index; -1 if none */
static int cpu__argmax_free(const float *x, const uint8_t *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || x[i] > x[best])) best = i;
    return best;
}

static int cpu__moe_route(backend *b, int32_t *ids, float *w, const float *logits, int T,
                          const backend_route *r) {
    const size_t E = (size_t)r->n_expert, G = r->n_group > 1 ? (size_t)r->n_group : 1;
    const int k = r->k;
    /* scores (E), selection scores (E), group scores (G), then flags: taken (E), chosen (E),
     * groups kept (G) */
    float *buf = cpu__rows(b, 2 * E + G + (2 * E + G) / sizeof(float) + 1);
    if (!buf) return -1;
    float *prob = buf, *sel = buf + E, *gscore = buf + 2 * E;
    uint8_t *taken = (uint8_t *)(gscore + G), *chosen = taken + E, *gtaken = chosen + E;
    for (int t = 0; t < T; t++) {
        const float *lg = logits + (size_t)t * E;
        if (r->gating == 1) {   /* softmax */
            memcpy(prob, lg, (size_t)E * sizeof(float));
            kern_softmax(prob, (int)E);
        } else {                /* sigmoid */
            for (size_t e = 0; e < E; e++) prob[e] = 1.0f / (1.0f + expf(-lg[e]));
        }
        for (size_t e = 0; e < E; e++) sel[e] = prob[e] + (r->bias ? r->bias[e] : 0.0f);
        memset(taken, 0, (size_t)E);
        if (r->n_group > 1) {   /* keep the n_group_used groups of the best top-2 sums */
            const int per = E / r->n_group;
            for (int g = 0; g < r->n_group; g++)
                gscore[g] = om_moe_group_score(sel + (size_t)g * per, per);
            memset(gtaken, 0, (size_t)r->n_group);
            for (int i = 0; i < r->n_group_used; i++) gtaken[cpu__argmax_free(gscore, gtaken, r->n_group)] = 1;
            for (size_t e = 0; e < E; e++) taken[e] = !gtaken[e / per];   /* masked out */
        }
        memset(chosen, 0, E);
        for (int i = 0; i < k; i++) {
            int e = cpu__argmax_free(sel, taken, (int)E);
            if (e < 0) {
                snprintf(b->err, sizeof b->err, "backend cpu: MoE routing found %d of %d experts", i, k);
                return -1;
            }
            taken[e] = chosen[e] = 1;
        }
        int32_t *id = ids + (size_t)t * k;
        float *wt = w + (size_t)t * k, sum = 0.0f;
        for (int e = 0, i = 0; e < (int)E; e++)   /* ascending ids: the combine order */
            if (chosen[e]) id[i] = e, wt[i] = prob[e], sum += prob[e], i++;
        if (r->norm) {   /* llama.cpp clamps the sum at 2^-14 */
            if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
            for (int i = 0; i < k; i++) wt[i] /= sum;
        }
        for (int i = 0; i < k; i++) wt[i] *= r->scale;
    }
    return 0;
}

/* one expert's pairs on the calling thread: gather its rows into g, gate/up, SwiGLU, down,
 * scale and scatter (pool NULL: kern_matmul on this thread; else split over the pool) */
typedef struct {
    const backend_moe *mo;
    const float *x;
    float *y;
    int C, Fe, most;
    size_t rows_f;          /* floats of one thread's rows, hg, hu, yd (a multiple of 16) */
    size_t per;             /* floats of one thread's scratch: those, then matmul's */
    float *scratch;         /* (nth, per) */
    atomic_int next;        /* the next expert a thread takes */
} moe_job;

static void cpu__expert(const moe_job *j, int e, float *g, pool *pl, void *mm) {
    const backend_moe *mo = j->mo;
    const int C = j->C, Fe = j->Fe, p0 = mo->off[e], n = mo->off[e + 1] - p0;
    float *hg = g + (size_t)j->most * C, *hu = hg + (size_t)j->most * Fe, *yd = hu + (size_t)j->most * Fe;
    for (int i = 0; i < n; i++)
        memcpy(g + (size_t)i * C, j->x + (size_t)mo->row[p0 + i] * C, (size_t)C * sizeof(float));
    kern_matmul_n(pl, 2, (float *const[]){ hg, hu },
                  (const kern_weight *const[]){ &mo->gate[e], &mo->up[e] }, g, n, mm);
    if (pl) {
        glu_job gj = { kern_swiglu, hg, hu, (size_t)n * Fe };
        pool_run(pl, cpu__glu_worker, &gj);
    } else {
        kern_swiglu(hg, hg, hu, n * Fe);
    }
    kern_matmul(pl, yd, &mo->down[e], hg, n, mm);
    for (int i = 0; i < n; i++) {
        float *dst = j->y + (size_t)mo->dst[p0 + i] * C;
        const float *src = yd + (size_t)i * C, wi = mo->w[p0 + i];
        for (int d = 0; d < C; d++) dst[d] = src[d] * wi;
    }
}

/* experts in parallel: each thread takes whole experts (no barrier between them) */
static void cpu__experts_worker(void *arg, int ith, int nth) {
    (void)nth;
    moe_job *j = arg;
    float *g = j->scratch + (size_t)ith * j->per;
    void *mm = g + j->rows_f;
    for (int e; (e = atomic_fetch_add(&j->next, 1)) < j->mo->n_expert;)
        if (j->mo->off[e + 1] > j->mo->off[e]) cpu__expert(j, e, g, NULL, mm);
}

/* Each pair's value is kern_matmul's for its row (one vec_dot per output whatever the rows
 * and the thread), so both schedules give the same floats: experts spread over the threads
 * when there are enough of them (a prompt step; decode with k >= 2 per thread), else each
 * expert's rows split over the pool. */
static int cpu__moe_experts(backend *b, float *y, const float *x, int C, const backend_moe *mo) {
    cpu_ctx *c = b->ctx;
    int most = 0, active = 0;
    for (int e = 0; e < mo->n_expert; e++) {
        int n = mo->off[e + 1] - mo->off[e];
        most = n > most ? n : most;
        active += n > 0;
    }
    if (!most) return 0;
    const int Fe = (int)mo->gate[0].n_rows, nth = pool_size(c->pool);
    size_t mm = kern_matmul_scratch(&mo->gate[0], most);
    size_t md = kern_matmul_scratch(&mo->down[0], most);
    mm = (mm > md ? mm : md) / sizeof(float) + 16;
    const int spread = active >= 2 * nth;
    size_t rows_f = ((size_t)most * (2 * (size_t)C + 2 * (size_t)Fe) + 15) / 16 * 16;
    size_t per = rows_f + (mm + 15) / 16 * 16;
    float *g = cpu__rows(b, per * (size_t)(spread ? nth : 1));
    if (!g) return -1;
    moe_job j = { mo, x, y, C, Fe, most, rows_f, per, g, 0 };
    if (spread) {
        pool_run(c->pool, cpu__experts_worker, &j);
        return 0;
    }
    for (int e = 0; e < mo->n_expert; e++)
        if (mo->off[e + 1] > mo->off[e])
            cpu__expert(&j, e, g, c->pool, g + rows_f);
    return 0;
}

static int cpu__sum_rows(backend *b, float *out, const float *y, int n, int k, int C) {
    (void)b;
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * C;
        const float *yi = y + (size_t)i * k * C;
        memcpy(o, yi, (size_t)C * sizeof(float));
        for (int j = 1; j < k; j++)
            for (int d = 0; d < C; d++) o[d] += yi[(size_t)j * C + d];
    }
    return 0;
}

static int cpu__gather_rows(backend *b, float *out, const float *x, const int32_t *rows, int n,
                            int C) {
    (void)b;
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * C, x + (size_t)rows[i] * C, (size_t)C * sizeof(float));
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
    /* .mla_kv_write = */ cpu__mla_kv_write,
    /* .mla_attention = */ cpu__mla_attention,
    /* .moe_route   = */ cpu__moe_route,
    /* .moe_experts = */ cpu__moe_experts,
    /* .sum_rows    = */ cpu__sum_rows,
    /* .gather_rows = */ cpu__gather_rows,
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
