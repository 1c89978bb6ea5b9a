/* runtime/model.c — the forward pass of a Llama-family transformer over a batch of positions,
 * as calls to the backend's slots (runtime/backend.h) and the communicator; it touches no
 * activation itself, so the same code runs on the CPU and on a GPU.
 *
 * Per layer, in llama2.c's order: RMSNorm -> Q,K,V projections (+bias) [-> per-head RMSNorm of
 * q and k] -> RoPE (the layer's base and scaling) -> write K,V to the cache -> causal attention over the
 * cache of each position's own sequence (the last W positions on a sliding-window layer) ->
 * output projection [-> post-norm] + residual -> RMSNorm -> SwiGLU or GeGLU FFN [-> post-norm]
 * + residual. Then the final norm and the output head, only for positions that asked for
 * logits. The bracketed steps and the choices are the layer's variants (model_layer, filled
 * from the architecture's data by model_load.c): this loop does not know architectures.
 * The attention half is grouped-query (above) or latent (MLA: DeepSeek), the FFN half dense or
 * DeepSeekMoE (runtime/model_moe.c, with expert parallelism).
 *
 * Sharded (model_shard): a rank runs the layers of its pipeline stage with its heads and FFN
 * columns; one all-reduce (or two all-gathers, model_mix) per block half combines the tensor
 * group; stages pass the residual stream (T,C) to the next stage. With a device backend these
 * buffers are device memory and the communicator is NCCL.
 *
 * Every per-position result depends only on that position's inputs and its sequence's cache
 * (the backend's ops are batch-invariant), so a sequence's logits do not depend on what else
 * shares its batch. The KV cache and activations: runtime/model_state.c.
 */
#include <math.h>
#include <stdio.h>

#include "backend.h"
#include "comm.h"
#include "model.h"
#include "model_state.h"

/* (T, n) per rank, gathered as (tp, T, n), rearranged to (T, tp*n) in `out` */
static int gather_cols(const model *m, const float *in, int T, int n, float *tmp, float *out,
                       char *err, size_t errlen) {
    backend *be = m->be;
    const model_shard *sh = &m->shard;
    COMM(sh->tp_dev, comm_allgather(sh->tp_dev, in, tmp, (size_t)T * n, COMM_F32));
    BE(interleave(be, out, tmp, sh->tp, T, n));
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
        if (gather_cols(m, in, T, Kl, s->g2, s->g1, err, errlen)) return -1;  /* g1 (T, K) */
        BE(matmul(be, s->g2, w, s->g1, T));                                /* g2 (T, C/tp) */
        return gather_cols(m, s->g2, T, C / sh->tp, s->g1, out, err, errlen);
    }
    BE(matmul(be, out, w, in, T));
    if (mix == MIX_ALLREDUCE)
        COMM(sh->tp_dev, comm_allreduce_sum(sh->tp_dev, out, (size_t)T * C, COMM_F32));
    return 0;
}

/* x (T,C): this rank's embedding rows summed over the tensor group, or the previous stage's
 * residual stream */
static int embed(const model *m, model_state *s, int T, char *err, size_t errlen) {
    backend *be = m->be;
    const model_shard *sh = &m->shard;
    const int C = m->cfg.dim;
    if (sh->stage > 0) {
        COMM(sh->pp_dev, comm_recv(sh->pp_dev, s->x, (size_t)T * C * sizeof(float), sh->stage - 1, 1));
        return 0;
    }
    BE(embed(be, s->x, &m->tok_embd, sh->vocab0, C));
    if (sh->tp > 1) COMM(sh->tp_dev, comm_allreduce_sum(sh->tp_dev, s->x, (size_t)T * C, COMM_F32));
    if (m->cfg.emb_scale != 0.0f) BE(scale(be, s->x, m->cfg.emb_scale, (size_t)T * C));
    return 0;
}

/* x += attention(rmsnorm(x)) for layer l */
static int gqa_half(const model *m, model_state *s, int l, int T, char *err, size_t errlen) {
    backend *be = m->be;
    const model_cfg *c = &m->cfg;
    const model_shard *sh = &m->shard;
    const model_layer *L = &m->layers[l];
    const int C = c->dim, D = c->head_dim, H = sh->n_heads, Hkv = sh->n_kv_heads;
    const backend_rope rope = { c->n_rot, L->rope_base, c->rope_neox, m->rope_freqs,
                               L->rope_scaling };
    const backend_attn at = { H, sh->head0, c->n_heads / c->n_kv_heads, sh->kv_head0,
                              c->attn_scale, L->window };
    BE(rmsnorm(be, s->xb, s->x, L->attn_norm, T, C, c->norm_eps));
    BE(matmul_n(be, 3, (float *const[]){ s->q, s->k, s->v },
                (const kern_weight *const[]){ &L->wq, &L->wk, &L->wv }, s->xb, T));
    if (L->bq) BE(add_bias(be, s->q, L->bq, T, H * D));
    if (L->bk) BE(add_bias(be, s->k, L->bk, T, Hkv * D));
    if (L->bv) BE(add_bias(be, s->v, L->bv, T, Hkv * D));
    if (L->q_norm) BE(rmsnorm(be, s->q, s->q, L->q_norm, T * H, D, c->norm_eps));
    if (L->k_norm) BE(rmsnorm(be, s->k, s->k, L->k_norm, T * Hkv, D, c->norm_eps));
    BE(rope(be, s->q, T, H, D, &rope));
    BE(rope(be, s->k, T, Hkv, D, &rope));
    BE(kv_write(be, &s->kv, l - sh->layer0, s->k, s->v, T));
    BE(attention(be, &s->kv, l - sh->layer0, s->xb, s->q, T, &at));   /* xb (T, H*D) */
    if (mix_matmul(m, s, L->wo_mix, &L->wo, s->xb, H * D, T, s->q, err, errlen)) return -1;
    if (L->post_attn_norm) BE(rmsnorm(be, s->q, s->q, L->post_attn_norm, T, C, c->norm_eps));
    BE(add(be, s->x, s->q, (size_t)T * C));
    return 0;
}

/* x += MLA(rmsnorm(x)) for layer l: the query through the q_lora bottleneck (or attn_q), the
 * latent and RoPE key (kva) cached, attention absorbed per head (runtime/backend.h) */
static int mla_half(const model *m, model_state *s, int l, int T, char *err, size_t errlen) {
    backend *be = m->be;
    const model_cfg *c = &m->cfg;
    const model_shard *sh = &m->shard;
    const model_layer *L = &m->layers[l];
    const int C = c->dim, H = sh->n_heads, Dv = c->v_dim;
    const backend_mla a = { H, c->kv_lora, c->head_dim - c->n_rot, c->n_rot, Dv, c->attn_scale,
                            L->wk_b, L->wv_b,
                            { c->n_rot, L->rope_base, 0, m->rope_freqs, L->rope_scaling } };
    BE(rmsnorm(be, s->xb, s->x, L->attn_norm, T, C, c->norm_eps));
    if (c->q_lora) {   /* q = q_b(rmsnorm(q_a x)) */
        BE(matmul_n(be, 2, (float *const[]){ s->k, s->v },
                    (const kern_weight *const[]){ &L->wq_a, &L->wkv_a }, s->xb, T));
        BE(rmsnorm(be, s->k, s->k, L->q_a_norm, T, c->q_lora, c->norm_eps));
        BE(matmul(be, s->q, &L->wq_b, s->k, T));
    } else {
        BE(matmul_n(be, 2, (float *const[]){ s->q, s->v },
                    (const kern_weight *const[]){ &L->wq, &L->wkv_a }, s->xb, T));
    }
    BE(mla_kv_write(be, &s->kv, l - sh->layer0, s->v, L->kv_a_norm, c->norm_eps, T, &a));
    BE(mla_attention(be, &s->kv, l - sh->layer0, s->xb, s->q, s->qlat, s->olat, T, &a));
    if (mix_matmul(m, s, L->wo_mix, &L->wo, s->xb, H * Dv, T, s->q, err, errlen)) return -1;
    BE(add(be, s->x, s->q, (size_t)T * C));
    return 0;
}

/* x += FFN(rmsnorm(x)) for layer l: SwiGLU or GeGLU, with Gemma's post-norm */
static int ffn_half(const model *m, model_state *s, int l, int T, char *err, size_t errlen) {
    backend *be = m->be;
    const model_cfg *c = &m->cfg;
    const model_layer *L = &m->layers[l];
    const int C = c->dim, F = m->shard.n_ffn;
    BE(rmsnorm(be, s->xb, s->x, L->ffn_norm, T, C, c->norm_eps));
    BE(matmul_n(be, 2, (float *const[]){ s->hb, s->hb2 },
                (const kern_weight *const[]){ &L->w_gate, &L->w_up }, s->xb, T));
    if (c->ffn == FFN_GEGLU) BE(geglu(be, s->hb, s->hb2, (size_t)T * F));
    else BE(swiglu(be, s->hb, s->hb2, (size_t)T * F));
    if (mix_matmul(m, s, L->down_mix, &L->w_down, s->hb, F, T, s->xb, err, errlen)) return -1;
    if (L->post_ffn_norm) BE(rmsnorm(be, s->xb, s->xb, L->post_ffn_norm, T, C, c->norm_eps));
    BE(add(be, s->x, s->xb, (size_t)T * C));
    return 0;
}

static int check_batch(const model *m, const model_state *s, const model_batch *b, char *err,
                       size_t errlen) {
    if (b->n < 1 || b->n > s->max_batch) {
        snprintf(err, errlen, "model: batch of %d positions, limit %d", b->n, s->max_batch);
        return -1;
    }
    if (!b->tables) {
        snprintf(err, errlen, "model: a batch without block tables");
        return -1;
    }
    for (int t = 0; t < b->n; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.n_vocab) {
            snprintf(err, errlen, "model: token id %d out of range [0, %d)", b->tokens[t],
                     m->cfg.n_vocab);
            return -1;
        }
        if (b->pos[t] < 0 || b->pos[t] >= s->n_ctx) {
            snprintf(err, errlen, "model: position %d beyond the context of %d tokens", b->pos[t],
                     s->n_ctx);
            return -1;
        }
    }
    return 0;
}

/* hands the backend this pass's positions: tokens, positions and each one's block table */
static int begin_pass(const model *m, model_state *s, const model_batch *b, char *err,
                      size_t errlen) {
    backend *be = m->be;
    int max_blocks = 0, bs = s->kv.block_size;
    for (int t = 0; t < b->n; t++) {
        s->tabs[t] = b->tables[t];
        if (b->pos[t] / bs + 1 > max_blocks) max_blocks = b->pos[t] / bs + 1;
    }
    backend_batch bb = { b->n, b->tokens, b->pos, s->tabs, max_blocks, bs };
    BE(batch(be, &bb));
    return 0;
}

int model_forward(const model *m, model_state *s, const model_batch *b, float *logits, char *err,
                  size_t errlen) {
    if (check_batch(m, s, b, err, errlen) || begin_pass(m, s, b, err, errlen)) return -1;
    backend *be = m->be;
    const model_shard *sh = &m->shard;
    const int T = b->n, C = m->cfg.dim;

    if (embed(m, s, T, err, errlen)) return -1;   /* x (T,C) */
    for (int l = sh->layer0; l < sh->layer1; l++) {   /* each half as the layer's variant */
        int rc = m->cfg.attn == ATTN_MLA ? mla_half(m, s, l, T, err, errlen)
                                         : gqa_half(m, s, l, T, err, errlen);
        if (rc || (m->layers[l].moe ? model_moe_half(m, s, l, T, err, errlen)
                                    : ffn_half(m, s, l, T, err, errlen)))
            return -1;
    }

    if (sh->stage < sh->pp - 1) {   /* hand the residual stream to the next stage */
        COMM(sh->pp_dev, comm_send(sh->pp_dev, s->x, (size_t)T * C * sizeof(float), sh->stage + 1, 1));
        return 0;
    }
    /* final norm of the wanted positions, then this rank's rows of the output head */
    int n_out = 0;
    for (int t = 0; t < T; t++)
        if (b->want ? b->want[t] : t == T - 1) s->rows[n_out++] = t;
    if (n_out == 0) return 0;
    const backend_head head = { s->rows, n_out, m->output_norm, m->cfg.norm_eps, &m->output,
                                sh->vocab_pad };
    BE(logits(be, logits, s->x, C, s->xb, &head));   /* (n_out, vocab_pad) on the host */
    return 0;
}
