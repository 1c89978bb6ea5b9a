/* runtime/model_state.c — the KV cache and activations of a model's forward pass, in the
 * model's backend.
 *
 * The KV cache is paged: blocks of `block_size` positions, laid out (L_stage, n_blocks, Hkv,
 * block_size, D) for K and for V, elements of the model's kv_type (f32, f16 or bf16). A
 * position finds its sequence's blocks through the block table the batch gives for it
 * (scheduler/kv.c owns who holds which block).
 */
#include <stdio.h>
#include <stdlib.h>

#include "model_state.h"

static size_t kv_elem_size(int type) { return type == QT_F32 ? 4 : 2; }

size_t model_kv_block_bytes(const model *m, int block_size) {
    const model_shard *sh = &m->shard;
    return 2 * (size_t)(sh->layer1 - sh->layer0) * block_size * sh->n_kv_heads *
           m->cfg.head_dim * kv_elem_size(m->kv_type);
}

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
    s->kv = (backend_kv){ .type = m->kv_type, .n_layers = sh->layer1 - sh->layer0,
                          .n_blocks = n_blocks, .n_kv_heads = sh->n_kv_heads,
                          .block_size = block_size, .head_dim = c->head_dim };
    s->kv_bytes = model_kv_block_bytes(m, block_size) * (size_t)n_blocks;
    const size_t T = (size_t)max_batch, kv_dim = (size_t)sh->n_kv_heads * c->head_dim;
    int qd = c->n_heads * c->head_dim;
    int wide = qd > c->dim ? qd : c->dim;
    int widest = wide > c->ffn_dim ? wide : c->ffn_dim;
    const size_t f = sizeof(float);
    s->kv.k = be->i->alloc(be, s->kv_bytes / 2);
    s->kv.v = be->i->alloc(be, s->kv_bytes / 2);
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
    s->hb = be->i->alloc(be, T * c->ffn_dim * f);
    s->hb2 = be->i->alloc(be, T * c->ffn_dim * f);
    s->tabs = malloc(T * sizeof *s->tabs);
    s->rows = malloc(T * sizeof *s->rows);
    if (!s->kv.k || !s->kv.v || !s->x || !s->xb || !s->q || !s->k || !s->v || !s->hb ||
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
    void *bufs[] = { s->kv.k, s->kv.v, s->x, s->xb, s->q, s->k, s->v, s->hb, s->hb2, s->g1, s->g2 };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->i->buf_free(be, bufs[i]);
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
