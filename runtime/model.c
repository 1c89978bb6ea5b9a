/* runtime/model.c — the forward pass of a Llama-family transformer over a batch of positions.
 *
 * Per layer, in llama2.c's order: RMSNorm -> Q,K,V projections (+bias) -> RoPE -> write K,V to
 * the cache -> causal attention over the cache of each position's own sequence -> output
 * projection + residual -> RMSNorm -> SwiGLU FFN + residual. Then the final norm and the output
 * head, only for positions that asked for logits.
 *
 * Sharded (model_shard): a rank runs the layers of its pipeline stage with its heads and FFN
 * columns; one all-reduce (or two all-gathers, model_mix) per block half combines the tensor
 * group; stages pass the residual stream (T,C) to the next stage.
 *
 * The KV cache is paged: f32 blocks of `block_size` positions, laid out (L, n_blocks,
 * block_size, Hkv*D) for K and for V. A position finds its sequence's blocks through the block
 * table the batch gives for it (scheduler/kv.c owns who holds which block); without tables,
 * sequence slot s owns the contiguous blocks [s * P/bs, (s + 1) * P/bs). Every per-position result
 * depends only on that position's inputs and its sequence's cache (matmuls are batch-invariant,
 * attention is computed per position), so a sequence's logits do not depend on what else shares
 * its batch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "comm.h"
#include "model.h"

struct model_state {
    int n_seq, n_ctx, max_batch;  /* slots and their length when used without block tables */
    int block_size, n_blocks;
    int32_t *identity;            /* (n_seq * n_ctx / block_size) the slots' own tables */
    int layer0;                   /* first layer of this stage: cache layer 0 */
    float *k_cache, *v_cache;     /* (L_stage, n_blocks, n_kv_heads, block_size, head_dim) */
    size_t kv_floats;             /* of each cache */
    int n_kv_heads, head_dim;     /* this rank's KV heads, and D */
    /* activations for up to max_batch positions */
    float *x;                     /* (T, C) residual stream */
    float *xb;                    /* (T, max(C, H*D)) normed input / attention output */
    float *q;                     /* (T, max(C, H*D)) */
    float *k, *v;                 /* (T, n_kv_heads * D) */
    float *hb, *hb2;              /* (T, F) */
    float *g1, *g2;               /* (T, max(C, H*D, F)) all-gather scratch (tp > 1) */
    float *att;                   /* (n_att, G, n_ctx) scores, G = heads per KV head */
    int n_att;                    /* threads */
};

/* first float of KV head h's K (or V) vector in block `blk`, slot `off`, layer l: a block
 * holds each KV head's block_size vectors together, so attention over one head reads
 * block_size * head_dim contiguous floats per block */
static size_t kv_index(const model_state *s, int l, int blk, int h, int off) {
    l -= s->layer0;
    return ((((size_t)l * s->n_blocks + (size_t)blk) * s->n_kv_heads + (size_t)h) * s->block_size +
            (size_t)off) * (size_t)s->head_dim;
}

/* the block table of position t's sequence */
static const int32_t *table_of(const model_state *s, const model_batch *b, int t) {
    if (b->tables) return b->tables[t];
    int seq = b->seq ? b->seq[t] : 0;
    return s->identity + (size_t)seq * (s->n_ctx / s->block_size);
}

model_state *model_state_new(const model *m, int n_seq, int n_ctx, int max_batch, char *err,
                             size_t errlen) {
    if (n_seq < 1 || n_ctx < 1 || max_batch < 1) {
        snprintf(err, errlen, "model: bad state size: %d sequences, context %d, batch %d", n_seq,
                 n_ctx, max_batch);
        return NULL;
    }
    const int bs = 16;
    int per_seq = (n_ctx + bs - 1) / bs;
    model_state *s = model_state_new_paged(m, n_seq * per_seq, bs, n_ctx, max_batch, err, errlen);
    if (!s) return NULL;
    s->n_seq = n_seq;
    s->n_ctx = per_seq * bs;
    s->identity = malloc((size_t)n_seq * per_seq * sizeof *s->identity);
    if (!s->identity) {
        model_state_free(s);
        snprintf(err, errlen, "model: out of memory");
        return NULL;
    }
    for (int i = 0; i < n_seq * per_seq; i++) s->identity[i] = i;
    s->n_ctx = n_ctx;
    return s;
}

model_state *model_state_new_paged(const model *m, int n_blocks, int block_size, int max_ctx,
                                   int max_batch, char *err, size_t errlen) {
    const model_cfg *c = &m->cfg;
    int n_ctx = max_ctx;
    if (n_blocks < 1 || block_size < 1 || max_ctx < 1 || max_batch < 1) {
        snprintf(err, errlen, "model: bad KV cache: %d blocks of %d, context %d, batch %d",
                 n_blocks, block_size, max_ctx, max_batch);
        return NULL;
    }
    model_state *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->n_seq = 0;
    s->n_ctx = n_ctx;
    s->block_size = block_size;
    s->n_blocks = n_blocks;
    s->max_batch = max_batch;
    const model_shard *sh = &m->shard;
    s->layer0 = sh->layer0;
    s->n_kv_heads = sh->n_kv_heads;
    s->head_dim = c->head_dim;
    const size_t kv_dim = (size_t)sh->n_kv_heads * c->head_dim;
    size_t kv = (size_t)(sh->layer1 - sh->layer0) * n_blocks * block_size * kv_dim;
    s->kv_floats = kv;
    size_t T = (size_t)max_batch;
    int qd = c->n_heads * c->head_dim;
    int wide = qd > c->dim ? qd : c->dim;
    int widest = wide > c->ffn_dim ? wide : c->ffn_dim;
    s->n_att = m->be->i->n_threads(m->be);
    s->k_cache = calloc(kv, sizeof(float));
    s->v_cache = calloc(kv, sizeof(float));
    s->x = malloc(T * c->dim * sizeof(float));
    s->xb = malloc(T * wide * sizeof(float));
    s->q = malloc(T * wide * sizeof(float));
    if (sh->tp > 1) {
        s->g1 = malloc(T * widest * sizeof(float));
        s->g2 = malloc(T * widest * sizeof(float));
        if (!s->g1 || !s->g2) goto oom;
    }
    s->k = malloc(T * kv_dim * sizeof(float));
    s->v = malloc(T * kv_dim * sizeof(float));
    s->hb = malloc(T * c->ffn_dim * sizeof(float));
    s->hb2 = malloc(T * c->ffn_dim * sizeof(float));
    s->att = malloc((size_t)s->n_att * (c->n_heads / c->n_kv_heads) * n_ctx * sizeof(float));
    if (!s->k_cache || !s->v_cache || !s->x || !s->xb || !s->q || !s->k || !s->v || !s->hb ||
        !s->hb2 || !s->att)
        goto oom;
    return s;
oom:
    model_state_free(s);
    snprintf(err, errlen, "model: out of memory for a KV cache of %d blocks of %d positions",
             n_blocks, block_size);
    return NULL;
}

void model_state_free(model_state *s) {
    if (!s) return;
    free(s->k_cache);
    free(s->v_cache);
    free(s->x);
    free(s->xb);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->hb);
    free(s->hb2);
    free(s->att);
    free(s->g1);
    free(s->g2);
    free(s->identity);
    free(s);
}

size_t model_state_kv_bytes(const model_state *s) {
    return 2 * s->kv_floats * sizeof(float);
}

int model_state_n_ctx(const model_state *s) { return s->n_ctx; }

size_t model_kv_block_bytes(const model *m, int block_size) {
    const model_shard *sh = &m->shard;
    return 2 * (size_t)(sh->layer1 - sh->layer0) * block_size * sh->n_kv_heads *
           m->cfg.head_dim * sizeof(float);
}

/* ---- attention: one unit per (position, KV head), split over the backend's threads ------ */

typedef struct {
    const model *m;
    model_state *s;
    const model_batch *b;
    int layer;
} attn_job;

static void attn_worker(void *arg, int ith, int nth) {
    const attn_job *j = arg;
    const model_cfg *c = &j->m->cfg;
    model_state *s = j->s;
    const model_shard *sh = &j->m->shard;
    int H = sh->n_heads, D = c->head_dim, group = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)D);
    float *att = s->att + (size_t)ith * group * s->n_ctx;
    /* units: (position t, run r of this rank's heads that share one KV head); the first run
     * may be cut by the shard's head0. A thread takes a contiguous range of units, so each
     * KV head's rows of a position are read by one thread, once for its group. */
    int first = group - sh->head0 % group < H ? group - sh->head0 % group : H;
    int runs = 1 + (H - first + group - 1) / group;
    int total = j->b->n * runs;
    for (int u = total * ith / nth; u < total * (ith + 1) / nth; u++) {
        int t = u / runs, r = u % runs;
        int h0 = r == 0 ? 0 : first + (r - 1) * group;
        int h1 = r == 0 ? first : (h0 + group < H ? h0 + group : H);
        int kvh = (sh->head0 + h0) / group - sh->kv_head0;   /* this rank's copy of the KV head */
        size_t base = kv_index(s, j->layer, 0, kvh, 0);
        kern_kv_view kv = { s->k_cache + base, s->v_cache + base, table_of(s, j->b, t),
                            s->block_size, (size_t)s->block_size * s->n_kv_heads * D, (size_t)D };
        kern_attn_group(s->xb + ((size_t)t * H + h0) * D, s->q + ((size_t)t * H + h0) * D,
                        h1 - h0, D, scale, j->b->pos[t] + 1, &kv, att);
    }
}

/* hb = silu(hb) * hb2 over (T, F), split over the backend's threads in 64-float pieces */
typedef struct {
    float *hb;
    const float *hb2;
    size_t n;
} swiglu_job;

static void swiglu_worker(void *arg, int ith, int nth) {
    const swiglu_job *j = arg;
    size_t pieces = (j->n + 63) / 64;
    size_t i0 = pieces * (size_t)ith / (size_t)nth * 64, i1 = pieces * (size_t)(ith + 1) / (size_t)nth * 64;
    if (i1 > j->n) i1 = j->n;
    if (i0 < i1) kern_swiglu(j->hb + i0, j->hb + i0, j->hb2 + i0, (int)(i1 - i0));
}

static int check_batch(const model *m, const model_state *s, const model_batch *b, char *err,
                       size_t errlen) {
    if (b->n < 1 || b->n > s->max_batch) {
        snprintf(err, errlen, "model: batch of %d positions, limit %d", b->n, s->max_batch);
        return -1;
    }
    for (int t = 0; t < b->n; t++) {
        int seq = b->seq ? b->seq[t] : 0;
        if (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.n_vocab) {
            snprintf(err, errlen, "model: token id %d out of range [0, %d)", b->tokens[t],
                     m->cfg.n_vocab);
            return -1;
        }
        if (b->pos[t] < 0 || b->pos[t] >= s->n_ctx) {   /* tables too: attention scratch is n_ctx */
            snprintf(err, errlen, "model: position %d beyond the context of %d tokens", b->pos[t],
                     s->n_ctx);
            return -1;
        }
        if (!b->tables && (seq < 0 || seq >= s->n_seq)) {
            snprintf(err, errlen, "model: sequence slot %d out of range [0, %d)", seq, s->n_seq);
            return -1;
        }
    }
    return 0;
}

/* a backend matmul call; on failure the forward pass returns with the message */
#define MM_TRY(call)                                                                     \
    do {                                                                                 \
        if (call) {                                                                      \
            snprintf(err, errlen, "model: out of memory in a matmul of %d positions", T); \
            return -1;                                                                   \
        }                                                                                \
    } while (0)
#define MM(out, w, in) MM_TRY(be->i->matmul(be, (out), (w), (in), T))
/* n products of one input, as one backend job where it can */
#define MMN(n, outs, ws, in) MM_TRY(be->i->matmul_n(be, (n), (outs), (ws), (in), T))

static int comm_fail(const struct comm *c, char *err, size_t errlen) {
    snprintf(err, errlen, "model: %s", comm_error(c));
    return -1;
}

/* (T, n) per rank, gathered as (tp, T, n), rearranged to (T, tp*n) in `out` */
static int gather_cols(const model_shard *sh, const float *in, int T, int n, float *tmp,
                       float *out, char *err, size_t errlen) {
    if (comm_allgather(sh->tp_comm, in, tmp, (size_t)T * n, COMM_F32))
        return comm_fail(sh->tp_comm, err, errlen);
    for (int r = 0; r < sh->tp; r++)
        for (int t = 0; t < T; t++)
            memcpy(out + ((size_t)t * sh->tp + r) * n, tmp + ((size_t)r * T + t) * n,
                   (size_t)n * sizeof(float));
    return 0;
}

/* out (T,C) = in · W^T for the second matrix of a block half, combined across the tensor
 * group as the layer's mix says; in is this rank's (T, Kl) */
static int mix_matmul(const model *m, model_state *s, model_mix mix, const kern_weight *w,
                      const float *in, int Kl, int T, float *out, char *err, size_t errlen) {
    backend *be = m->be;
    const model_shard *sh = &m->shard;
    const int C = m->cfg.dim;
    if (mix == MIX_GATHER) {
        if (gather_cols(sh, in, T, Kl, s->g2, s->g1, err, errlen)) return -1;  /* g1 (T, K) */
        MM(s->g2, w, s->g1);                                                /* g2 (T, C/tp) */
        return gather_cols(sh, s->g2, T, C / sh->tp, s->g1, out, err, errlen);
    }
    MM(out, w, in);
    if (mix == MIX_ALLREDUCE && comm_allreduce_sum(sh->tp_comm, out, (size_t)T * C, COMM_F32))
        return comm_fail(sh->tp_comm, err, errlen);
    return 0;
}

static int embed(const model *m, model_state *s, const model_batch *b, char *err, size_t errlen) {
    const model_shard *sh = &m->shard;
    const int C = m->cfg.dim, T = b->n;
    if (sh->stage > 0) {   /* the residual stream comes from the previous stage */
        if (comm_recv(sh->pp_comm, s->x, (size_t)T * C * sizeof(float), sh->stage - 1, 1))
            return comm_fail(sh->pp_comm, err, errlen);
        return 0;
    }
    const qt_traits *et = qt_get(m->tok_embd.type);
    for (int t = 0; t < T; t++) {
        int row = b->tokens[t] - sh->vocab0;
        float *x = s->x + (size_t)t * C;
        if (row >= 0 && row < sh->n_vocab)
            et->to_float((const char *)m->tok_embd.data + (size_t)row * m->tok_embd.row_stride, x, C);
        else
            memset(x, 0, (size_t)C * sizeof(float));   /* another rank owns this row */
    }
    if (sh->tp > 1 && comm_allreduce_sum(sh->tp_comm, s->x, (size_t)T * C, COMM_F32))
        return comm_fail(sh->tp_comm, err, errlen);
    return 0;
}

int model_forward(const model *m, model_state *s, const model_batch *b, float *logits, char *err,
                  size_t errlen) {
    if (check_batch(m, s, b, err, errlen)) return -1;
    const model_cfg *c = &m->cfg;
    const model_shard *sh = &m->shard;
    backend *be = m->be;
    const int T = b->n, C = c->dim, H = sh->n_heads, D = c->head_dim, F = sh->n_ffn;
    const int KV = sh->n_kv_heads * D, QD = H * D;

    if (embed(m, s, b, err, errlen)) return -1;   /* x (T,C) */

    for (int l = sh->layer0; l < sh->layer1; l++) {
        const model_layer *L = &m->layers[l];
        /* attention half */
        for (int t = 0; t < T; t++)
            kern_rmsnorm(s->xb + (size_t)t * C, s->x + (size_t)t * C, L->attn_norm, C, c->norm_eps);
        MMN(3, ((float *const[]){ s->q, s->k, s->v }),
            ((const kern_weight *const[]){ &L->wq, &L->wk, &L->wv }), s->xb);
        for (int t = 0; t < T; t++) {
            float *q = s->q + (size_t)t * QD, *k = s->k + (size_t)t * KV, *v = s->v + (size_t)t * KV;
            if (L->bq)
                for (int i = 0; i < QD; i++) q[i] += L->bq[i];
            if (L->bk)
                for (int i = 0; i < KV; i++) k[i] += L->bk[i];
            if (L->bv)
                for (int i = 0; i < KV; i++) v[i] += L->bv[i];
            kern_rope(q, H, D, c->n_rot, b->pos[t], c->rope_base, c->rope_neox, m->rope_freqs);
            kern_rope(k, sh->n_kv_heads, D, c->n_rot, b->pos[t], c->rope_base, c->rope_neox,
                      m->rope_freqs);
            const int32_t *tab = table_of(s, b, t);
            int blk = tab[b->pos[t] / s->block_size], off = b->pos[t] % s->block_size;
            for (int h = 0; h < sh->n_kv_heads; h++) {
                memcpy(s->k_cache + kv_index(s, l, blk, h, off), k + (size_t)h * D, (size_t)D * sizeof(float));
                memcpy(s->v_cache + kv_index(s, l, blk, h, off), v + (size_t)h * D, (size_t)D * sizeof(float));
            }
        }
        attn_job job = { m, s, b, l };
        be->i->parallel(be, attn_worker, &job);         /* xb (T, Hl*D) = attention output */
        if (mix_matmul(m, s, L->wo_mix, &L->wo, s->xb, QD, T, s->q, err, errlen)) return -1;
        for (size_t i = 0; i < (size_t)T * C; i++) s->x[i] += s->q[i];

        /* FFN half */
        for (int t = 0; t < T; t++)
            kern_rmsnorm(s->xb + (size_t)t * C, s->x + (size_t)t * C, L->ffn_norm, C, c->norm_eps);
        MMN(2, ((float *const[]){ s->hb, s->hb2 }),
            ((const kern_weight *const[]){ &L->w_gate, &L->w_up }), s->xb);
        swiglu_job sj = { s->hb, s->hb2, (size_t)T * F };
        be->i->parallel(be, swiglu_worker, &sj);
        if (mix_matmul(m, s, L->down_mix, &L->w_down, s->hb, F, T, s->xb, err, errlen)) return -1;
        for (size_t i = 0; i < (size_t)T * C; i++) s->x[i] += s->xb[i];
    }

    if (sh->stage < sh->pp - 1) {   /* hand the residual stream to the next stage */
        if (comm_send(sh->pp_comm, s->x, (size_t)T * C * sizeof(float), sh->stage + 1, 1))
            return comm_fail(sh->pp_comm, err, errlen);
        return 0;
    }

    /* final norm of the wanted positions, packed, then this rank's rows of the output head */
    int n_out = 0;
    for (int t = 0; t < T; t++) {
        int want = b->want ? b->want[t] : t == T - 1;
        if (!want) continue;
        kern_rmsnorm(s->xb + (size_t)n_out * C, s->x + (size_t)t * C, m->output_norm, C,
                     c->norm_eps);
        n_out++;
    }
    if (n_out == 0) return 0;
    if (be->i->matmul(be, logits, &m->output, s->xb, n_out)) {
        snprintf(err, errlen, "model: out of memory in the output head");
        return -1;
    }
    if (sh->n_vocab < sh->vocab_pad) {   /* spread rows to vocab_pad, pad with -inf */
        for (int r = n_out - 1; r >= 0; r--) {
            memmove(logits + (size_t)r * sh->vocab_pad, logits + (size_t)r * sh->n_vocab,
                    (size_t)sh->n_vocab * sizeof(float));
            for (int v = sh->n_vocab; v < sh->vocab_pad; v++)
                logits[(size_t)r * sh->vocab_pad + v] = -INFINITY;
        }
    }
    return 0;
}

int model_has_logits(const model *m) { return m->shard.stage == m->shard.pp - 1; }

size_t model_logits_floats(const model *m, int n_out) {
    size_t V = (size_t)m->cfg.n_vocab, padded = (size_t)m->shard.tp * m->shard.vocab_pad;
    return (size_t)n_out * (V > padded ? V : padded);
}

int model_logits_full(const model *m, const float *slices, int n_out, float *full, char *err,
                      size_t errlen) {
    const model_shard *sh = &m->shard;
    const int V = m->cfg.n_vocab, P = sh->vocab_pad;
    if (sh->tp <= 1) {
        if (full != slices) memcpy(full, slices, (size_t)n_out * V * sizeof(float));
        return 0;
    }
    float *tmp = malloc((size_t)sh->tp * n_out * P * sizeof(float));
    if (!tmp) {
        snprintf(err, errlen, "model: out of memory gathering %d rows of logits", n_out);
        return -1;
    }
    if (comm_allgather(sh->tp_comm, slices, tmp, (size_t)n_out * P, COMM_F32)) {
        free(tmp);
        return comm_fail(sh->tp_comm, err, errlen);
    }
    /* tmp is (tp, n_out, P); full row r is the concatenation of every rank's row r, cut to V */
    for (int r = 0; r < n_out; r++)
        for (int k = 0; k < sh->tp; k++) {
            int v0 = k * P, n = V - v0 < P ? V - v0 : P;
            if (n > 0)
                memcpy(full + (size_t)r * V + v0, tmp + ((size_t)k * n_out + r) * P,
                       (size_t)n * sizeof(float));
        }
    free(tmp);
    return 0;
}

int model_argmax(const model *m, const float *slices, int n_out, int32_t *ids, char *err,
                 size_t errlen) {
    const model_shard *sh = &m->shard;
    const int P = sh->vocab_pad;
    for (int r = 0; r < n_out; r++) {
        const float *l = slices + (size_t)r * P;
        int32_t best = 0;
        for (int v = 1; v < sh->n_vocab; v++)
            if (l[v] > l[best]) best = v;
        float val = l[best];
        int32_t id = best + sh->vocab0;
        if (sh->tp > 1 && comm_argmax(sh->tp_comm, &val, &id)) return comm_fail(sh->tp_comm, err, errlen);
        ids[r] = id;
    }
    return 0;
}
