/* runtime/model_state.c — the KV cache and activations of a model's forward pass, in the
 * model's backend.
 *
 * The KV cache is paged: blocks of `block_size` positions, laid out (L_stage, n_blocks, Hkv,
 * block_size, D) for K and for V, elements of the model's kv_type (f32, f16 or bf16). A
 * position finds its sequence's blocks through the block table the batch gives for it
 * (scheduler/kv.c owns who holds which block). Latent attention (MLA) caches only K:
 * (L_stage, n_blocks, 1, block_size, R + Dr), the latent and the RoPE key.
 */
#include <stdio.h>
#include <stdlib.h>

#include "model_state.h"

static size_t kv_elem_size(int type) { return type == QT_F32 ? 4 : 2; }

int model_kv_values(const model *m) {
    return m->cfg.attn == ATTN_MLA ? m->cfg.kv_lora + m->cfg.n_rot : 2 * m->cfg.head_dim;
}

size_t model_kv_block_bytes(const model *m, int block_size) {
    const model_shard *sh = &m->shard;
    return (size_t)(sh->layer1 - sh->layer0) * block_size * sh->n_kv_heads *
           (size_t)model_kv_values(m) * kv_elem_size(m->kv_type);
}

static size_t st__max(size_t a, size_t b) { return a > b ? a : b; }

model_state *model_state_new_paged(const model *m, int n_blocks, int block_size, int max_ctx,
                                   int max_batch, char *err, size_t errlen) {
    const model_cfg *c = &m->cfg;
    backend *be = m->be;
    if (n_blocks < 1 || block_size < 1 || max_ctx < 1 || max_batch < 1) {
        snprintf(err, errlen, "model: bad KV cache: %d blocks of %d, context %d, batch %d",
                 n_blocks, block_size, max_ctx, max_batch);
        return NULL;
    }
    model_state *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->m = m;
    s->n_ctx = max_ctx;
    s->max_batch = max_batch;
    const model_shard *sh = &m->shard;
    const int mla = c->attn == ATTN_MLA;
    s->kv = (backend_kv){ .type = m->kv_type, .n_layers = sh->layer1 - sh->layer0,
                          .n_blocks = n_blocks, .n_kv_heads = sh->n_kv_heads,
                          .block_size = block_size,
                          .head_dim = mla ? c->kv_lora + c->n_rot : c->head_dim };
    s->kv_bytes = model_kv_block_bytes(m, block_size) * (size_t)n_blocks;
    const size_t T = (size_t)max_batch, C = (size_t)c->dim, H = (size_t)c->n_heads;
    /* k, v: GQA's (T, Hkv*D); MLA's q_a (T, Q) and latent + RoPE key (T, R + Dr) */
    const size_t kv_dim = st__max((size_t)sh->n_kv_heads * c->head_dim,
                                  st__max((size_t)c->q_lora, (size_t)c->kv_lora + c->n_rot));
    size_t wide = st__max(H * c->head_dim, st__max(H * c->v_dim, C));
    size_t ffn = st__max((size_t)c->ffn_dim, (size_t)c->expert_ffn * c->n_expert_shared);
    size_t widest = st__max(wide, ffn);
    const size_t f = sizeof(float);
    s->kv.k = be->i->alloc(be, s->kv_bytes / (mla ? 1 : 2));
    s->kv.v = mla ? NULL : be->i->alloc(be, s->kv_bytes / 2);
    if (mla) {
        s->qlat = be->i->alloc(be, T * H * (c->kv_lora + c->n_rot) * f);
        s->olat = be->i->alloc(be, T * H * c->kv_lora * f);
        if (!s->qlat || !s->olat) goto oom;
    }
    if (c->n_expert) {   /* model_moe.c's buffers (bounds there) */
        const size_t k = (size_t)c->n_expert_used, ep = (size_t)sh->ep, El = (size_t)sh->n_expert;
        s->elog = be->i->alloc(be, T * c->n_expert * f);
        s->ypair = be->i->alloc(be, T * k * C * f);
        s->ycomb = be->i->alloc(be, T * k * C * f);
        s->xsend = be->i->alloc(be, (T + ep) * C * f);
        s->xrecv = be->i->alloc(be, (T + ep) * C * f);
        s->mout = be->i->alloc(be, (T + ep) * C * f);
        s->ids = malloc(T * k * sizeof *s->ids);
        s->wts = malloc(T * k * sizeof *s->wts);
        s->pw = malloc(T * k * sizeof *s->pw);
        s->plan = malloc((El + 1 + 3 * T * k + 3 * T) * sizeof *s->plan);
        s->counts = malloc(4 * ep * sizeof *s->counts);
        if (!s->elog || !s->ypair || !s->ycomb || !s->xsend || !s->xrecv || !s->mout ||
            !s->ids || !s->wts || !s->pw || !s->plan || !s->counts)
            goto oom;
    }
    s->x = be->i->alloc(be, T * c->dim * f);
    s->xb = be->i->alloc(be, T * wide * f);
    s->q = be->i->alloc(be, T * wide * f);
    if (sh->tp > 1) {
        s->g1 = be->i->alloc(be, T * widest * f);
        s->g2 = be->i->alloc(be, T * widest * f);
        if (!s->g1 || !s->g2) goto oom;
    }
    s->k = be->i->alloc(be, T * kv_dim * f);
    s->v = be->i->alloc(be, T * kv_dim * f);
    s->hb = be->i->alloc(be, T * ffn * f);
    s->hb2 = be->i->alloc(be, T * ffn * f);
    s->tabs = malloc(T * sizeof *s->tabs);
    s->rows = malloc(T * sizeof *s->rows);
    if (!s->kv.k || (!mla && !s->kv.v) || !s->x || !s->xb || !s->q || !s->k || !s->v || !s->hb ||
        !s->hb2 || !s->tabs || !s->rows)
        goto oom;
    return s;
oom:
    model_state_free(s);
    snprintf(err, errlen, "model: out of %s memory for a KV cache of %d blocks of %d positions",
             be->i->name, n_blocks, block_size);
    return NULL;
}

void model_state_free(model_state *s) {
    if (!s) return;
    backend *be = s->m->be;
    void *bufs[] = { s->kv.k, s->kv.v, s->x, s->xb, s->q, s->k, s->v, s->hb, s->hb2, s->g1, s->g2,
                     s->qlat, s->olat, s->elog, s->ypair, s->ycomb, s->xsend, s->xrecv, s->mout };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->i->buf_free(be, bufs[i]);
    free(s->ids);
    free(s->wts);
    free(s->pw);
    free(s->plan);
    free(s->counts);
    free(s->tabs);
    free(s->rows);
    free(s);
}

size_t model_state_kv_bytes(const model_state *s) { return s->kv_bytes; }

int model_state_n_ctx(const model_state *s) { return s->n_ctx; }

int model_kv_window(const model *m) {
    int w = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (m->layers[l].window <= 0) return 0;   /* a global layer reads every position */
        if (m->layers[l].window > w) w = m->layers[l].window;
    }
    return w;
}
