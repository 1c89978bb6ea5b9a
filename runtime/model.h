/* runtime/model.h — a transformer model loaded from GGUF, and its forward pass.
 *
 * Architectures are data: model_load reads `general.architecture`, looks it up in a table of
 * architecture descriptions (runtime/model_load.c: which tensors, which options — QKV bias,
 * NeoX RoPE, tied output) and fills a model_cfg plus per-layer weight views into the mapping.
 * Supported now: llama (Llama 2/3, TinyLlama, Mistral without sliding window), qwen2, qwen3
 * (dense: q/k norms, key_length head dim), gemma3 (q/k norms, pre+post norms, GeGLU,
 * interleaved sliding-window layers), deepseek2 (DeepSeek-V2/V3/R1: multi-head latent
 * attention with a latent KV cache, DeepSeekMoE FFN with shared experts, leading dense blocks;
 * runtime/model_moe.c) and qwen3moe (qwen3's attention, a softmax-routed MoE FFN); RoPE
 * scaling none, linear or yarn.
 *
 * Legend: V = vocab, C = embedding dim, L = layers, H = query heads, Hkv = KV heads, D = head dim,
 * F = FFN hidden dim, T = tokens in a batch, P = context length. MLA: R = kv_lora_rank (the
 * latent), Dr = RoPE dims (n_rot), Dn = D - Dr, Dv = value head dim, Q = q_lora_rank. MoE:
 * E = routed experts, k = experts used per token, Fe = an expert's FFN dim, Fs = the shared
 * experts' FFN dim.
 *
 * A forward pass runs over a batch of T token positions drawn from any number of sequences at
 * once: each position gives its position in its sequence and that sequence's block table,
 * attends to its sequence's KV cache (positions 0..pos) and writes its K and V there. Logits
 * are produced only for positions flagged in the batch. The pass runs on the model's backend
 * (runtime/backend.h: CPU or CUDA); model_opts choose it and the KV cache's element type.
 */
#ifndef SAMPAN_MODEL_H
#define SAMPAN_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "kern.h"

struct gguf_ctx;
struct tok;
struct pool;
struct backend;
struct comm;

typedef enum { ARCH_LLAMA = 1, ARCH_QWEN2 = 2, ARCH_GEMMA3 = 3, ARCH_QWEN3 = 4,
               ARCH_DEEPSEEK2 = 5, ARCH_QWEN3MOE = 6 } model_arch;

/* RoPE scaling from `{arch}.rope.scaling.type` (llama.cpp's names) */
typedef enum { ROPE_SCALING_NONE = 0, ROPE_SCALING_LINEAR = 1, ROPE_SCALING_YARN = 2 } model_rope_scaling;

/* the FFN variant of a block */
typedef enum { FFN_SWIGLU = 0, FFN_GEGLU = 1 } model_ffn;
/* the attention variant: grouped-query, or DeepSeek's multi-head latent attention */
typedef enum { ATTN_GQA = 0, ATTN_MLA = 1 } model_attn;
/* MoE router scores, `{arch}.expert_gating_func` as llama.cpp numbers it */
typedef enum { GATE_SOFTMAX = 1, GATE_SIGMOID = 2 } model_gating;

typedef struct {
    model_arch arch;
    const char *arch_name;
    int n_vocab;     /* V */
    int dim;         /* C */
    int n_layers;    /* L */
    int n_heads;     /* H */
    int n_kv_heads;  /* Hkv */
    int head_dim;    /* D: attention.key_length, else C / H */
    int ffn_dim;     /* F */
    int n_ctx_train; /* P from metadata */
    int n_rot;       /* rotary dims (<= D) */
    int rope_neox;   /* pairing (i, i+D/2) instead of (2i, 2i+1) */
    float rope_base;
    float norm_eps;
    int qkv_bias;
    int tied_output; /* output head is token_embd */
    model_ffn ffn;   /* SwiGLU or GeGLU */
    int qk_norm;     /* per-head RMSNorm of q and k (attn_q_norm, attn_k_norm) */
    int post_norms;  /* RMSNorm of each block half's output (Gemma) */
    float emb_scale; /* x = embedding * emb_scale (Gemma: sqrt(C)); 0: none */
    float attn_scale;/* applied to q . k: 1/sqrt(query_pre_attn_scalar or D) */
    int window;      /* attention.sliding_window W of the local layers; 0: none */
    int swa_period;  /* layer l is local iff l % swa_period < swa_period - 1 (Gemma 3: 6);
                        0 with a window: every layer local */
    float rope_base_local; /* RoPE base of the local layers (Gemma 3: 10000) */
    model_rope_scaling rope_scaling; /* of the global layers (local ones are never scaled) */
    float rope_factor;     /* rope.scaling.factor: freq_scale = 1/factor */
    int rope_ctx_orig;     /* YaRN: rope.scaling.original_context_length (else n_ctx_train) */
    float yarn_beta_fast, yarn_beta_slow; /* YaRN ramp ends, in turns (32 and 1) */
    float yarn_log_mul;    /* rope.scaling.yarn_log_multiplier (DeepSeek: the attention scale
                              is times (1 + yarn_log_mul ln factor)^2) */
    /* DeepSeek-V2/V3 (deepseek2) */
    model_attn attn;       /* every layer's attention variant */
    int v_dim;             /* Dv: value head dim (== D but for MLA) */
    int q_lora;            /* MLA: Q, q_lora_rank; 0: a plain attn_q (V2-Lite) */
    int kv_lora;           /* MLA: R; the cache holds R + Dr values per position and layer */
    int n_dense;           /* MoE models: the first n_dense blocks have a dense FFN */
    int n_expert;          /* E; 0: no MoE */
    int n_expert_used;     /* k */
    int n_expert_shared;   /* shared experts (their FFN is one of Fs = Fe * n_expert_shared) */
    int n_group, n_group_used; /* group-limited routing: E in n_group groups, the top
                                  n_group_used (by the sum of their top-2 scores) kept; 1: none */
    model_gating gating;
    int expert_norm;       /* weights of the chosen experts normalised to sum 1 */
    float expert_scale;    /* then times this */
    int expert_ffn;        /* Fe */
} model_cfg;

/* How a rank's slice of a second matrix of a block half (attention output, FFN down) is
 * combined across the tensor-parallel group (Megatron: the first matrices are split by output
 * rows, so each rank holds whole heads / FFN columns and needs no communication until here). */
/* The default is MIX_GATHER: every dot product is then the single-rank one, so a sharded model
 * gives bit-identical logits and tokens (quantized activations make an all-reduce's different
 * summation order flip roundings downstream). Opt in to Megatron's all-reduce with
 * model_opts.tp_allreduce. Both move the same bytes per token: an all-reduce moves
 * 2(n-1)/n of (T,C), the two all-gathers (n-1)/n of (T,K) and of (T,C). */
typedef enum {
    MIX_NONE = 0,      /* tp = 1: the whole matrix */
    MIX_ALLREDUCE,     /* columns of this rank's heads / FFN slice (copied once at load);
                          partial (T,C) summed by one all-reduce */
    MIX_GATHER         /* the slice's columns do not fall on the type's block boundaries:
                          all-gather the (T, K/tp) inputs, multiply by this rank's C/tp output
                          rows (rows of the mapping, no copy), all-gather the (T, C/tp) outputs.
                          Every dot product is then the single-rank one, bit for bit. */
} model_mix;

typedef struct {
    kern_weight wq, wk, wv, wo;          /* local: (Hl*D, C), (Hkvl*D, C), (Hkvl*D, C), and wo
                                            (C, Hl*D) for ALLREDUCE or (C/tp, H*D) for GATHER */
    kern_weight w_gate, w_up, w_down;    /* local: (Fl, C), (Fl, C), (C, Fl) or (C/tp, F) */
    model_mix wo_mix, down_mix;
    const float *attn_norm, *ffn_norm;   /* (C) */
    const float *bq, *bk, *bv;           /* (Hl*D), (Hkvl*D), (Hkvl*D) or NULL */
    /* the block's variants (architectures are data): a NULL norm is not applied */
    const float *q_norm, *k_norm;        /* (D) per-head RMSNorm of q and k before RoPE */
    const float *post_attn_norm, *post_ffn_norm; /* (C) on the block half's output, before the
                                                    residual add (Gemma) */
    int window;                          /* W: attends to the last W positions; 0: all */
    float rope_base;                     /* this layer's RoPE base */
    kern_rope_scaling rope_scaling;      /* this layer's RoPE scaling; zeros: none */
    /* multi-head latent attention (cfg.attn == ATTN_MLA; wq above when Q == 0) */
    kern_weight wq_a, wq_b;              /* (Q, C), (Hl*D, Q) */
    kern_weight wkv_a;                   /* (R + Dr, C): the latent, then the shared RoPE key */
    kern_weight *wk_b, *wv_b;            /* (Hl) per local head: (R, Dn) and (Dv, R) */
    const float *q_a_norm, *kv_a_norm;   /* (Q), (R) */
    /* DeepSeekMoE FFN (moe != 0; the dense w_gate/w_up/w_down are unbound) */
    int moe;
    kern_weight w_router;                /* (E, C) ffn_gate_inp */
    const float *exp_bias;               /* (E) exp_probs_b: added for selection only; or NULL */
    kern_weight *exp_gate, *exp_up, *exp_down; /* (El): this rank's experts [expert0,
                                                  expert0 + El): (Fe, C), (Fe, C), (C, Fe) */
    kern_weight sh_gate, sh_up, sh_down; /* shared experts (Fs, C), (Fs, C), (C, Fs), or unbound */
} model_layer;

/* This rank's share of the model: tensor-parallel rank within its stage, pipeline stage,
 * and the slices that follow from them. tp = pp = 1 is the whole model. */
typedef struct {
    int tp, tp_rank, pp, stage;
    struct comm *tp_comm;      /* ranks of this stage (NULL when tp == 1); host buffers */
    struct comm *pp_comm;      /* ranks with this tp_rank, one per stage (NULL when pp == 1) */
    struct comm *tp_dev, *pp_dev;  /* the same groups for the forward pass's buffers: NCCL
                                      over device memory with a device backend, else the
                                      comms above */
    int layer0, layer1;        /* layers [layer0, layer1) live on this stage */
    int head0, n_heads;        /* query heads [head0, head0 + n_heads) */
    int kv_head0, n_kv_heads;  /* KV heads this rank keeps (replicated when Hkv < tp) */
    int ffn0, n_ffn;           /* FFN columns */
    int vocab0, n_vocab;       /* rows of token_embd / output on this rank */
    int vocab_pad;             /* ceil(V / tp): every rank's logits slice is this long */
    /* expert parallelism (MoE models): the ep ranks with this tp_rank and stage split each MoE
     * layer's routed experts; attention and the dense parts are replicated across them */
    int ep, ep_rank;
    struct comm *ep_comm;      /* those ranks (NULL when ep == 1); host buffers */
    struct comm *ep_dev;       /* the same for the forward pass's buffers */
    int expert0, n_expert;     /* routed experts [expert0, expert0 + n_expert) live here */
} model_shard;

typedef struct model {
    model_cfg cfg;
    struct gguf_ctx *gguf;               /* owns the mapping the weights point into */
    struct tok *tok;
    kern_weight tok_embd;                /* (V, C) */
    kern_weight output;                  /* (V, C); == tok_embd when tied */
    const float *output_norm;            /* (C) */
    const float *rope_freqs;             /* (n_rot/2) or NULL */
    model_layer *layers;                 /* (L); only [layer0, layer1) are bound */
    model_shard shard;
    void *owned;                         /* weights converted at load (e.g. F32 norms stored
                                            as F16), freed with the model */
    size_t weight_bytes;                 /* bytes of this rank's weights as used */
    int tp_allreduce;                    /* model_opts.tp_allreduce */
    void **copies;                       /* column slices copied at load (tensor parallel) */
    int n_copies;
    int pack;                            /* !model_opts.no_pack */
    void *packed;                        /* kern_pack copies of the matrices that have a faster
                                            layout (Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K,
                                            F16), in huge pages; owned */
    size_t packed_bytes;
    struct backend *be;                  /* where the forward pass runs; owned */
    void *dev_vectors;                   /* device backends: every norm/bias vector, uploaded
                                            into one buffer of be (the pointers above point
                                            into it); NULL on host-memory backends */
    int kv_type;                         /* KV cache element type (model_opts.kv_type) */
    kern_weight *views;                  /* the per-head / per-expert arrays of the layers */
} model;

typedef struct {
    int n_threads;   /* <= 0: pool_default_threads() */
    /* sharding: tp x pp ranks; NULL comms and tp = pp = 0 or 1 mean a single rank */
    int tp, pp, tp_rank, stage;
    struct comm *tp_comm, *pp_comm;
    /* comms of the same groups for device buffers (NCCL, comm_nccl_new over the ones above);
     * NULL: tp_comm / pp_comm (host-memory backends) */
    struct comm *tp_dev_comm, *pp_dev_comm;
    int tp_allreduce;   /* Megatron all-reduce where slices fall on block boundaries */
    int no_pack;        /* keep every weight as the file stores it (no kern_pack copies) */
    const char *backend; /* "cpu" (NULL: cpu), "cuda" or "auto" (runtime/backend.h) */
    int device;         /* CUDA device ordinal; < 0: chosen by topo / the first visible */
    int kv_type;        /* KV cache elements: QT_F32 (0, the library default), QT_F16, QT_BF16 */
    /* expert parallelism: ep ranks (ep_comm, this one ep_rank) split the routed experts;
     * ep_dev_comm as tp_dev_comm. ep <= 1: none. */
    int ep, ep_rank;
    struct comm *ep_comm, *ep_dev_comm;
} model_opts;

/* Checks that tp x pp ranks can split this model (heads, KV heads, FFN and layers divide) and
 * computes this rank's slices; err names the numbers. Expert parallelism is set after it by
 * model_shard_experts (ep <= E). */
int model_shard_plan(const model_cfg *c, const size_t *layer_bytes, size_t head_bytes, int tp,
                     int tp_rank, int pp, int stage, model_shard *out, char *err, size_t errlen);
int model_shard_experts(const model_cfg *c, int ep, int ep_rank, model_shard *sh, char *err,
                        size_t errlen);
/* Reads only the metadata: the config, and bytes per layer (for stage balancing). */
int model_read_cfg(const char *path, model_cfg *out, char *err, size_t errlen);

int model_load(const char *path, const model_opts *opts, model **out, char *err, size_t errlen);
void model_free(model *m);

typedef struct model_state model_state;
/* The KV cache and activations of the forward pass, in the model's backend (model_state.c):
 * a paged KV cache of n_blocks blocks of block_size positions for sequences of at most
 * max_ctx positions; batches must give block tables (scheduler/kv.c hands out blocks). */
model_state *model_state_new_paged(const model *m, int n_blocks, int block_size, int max_ctx,
                                   int max_batch, char *err, size_t errlen);
/* fn(ctx, w, share) on every matrix of this rank's layers, with the share of a decode token's
 * steps that read it: 1, or k / E for each routed expert (a token reads k of the E). The output
 * head and the embedding are not included. */
void model_each_weight(const model *m, void (*fn)(void *ctx, const kern_weight *w, double share),
                       void *ctx);
/* values cached per position, layer and KV head: 2 D (K and V), or R + Dr with MLA */
int model_kv_values(const model *m);
/* bytes one KV block takes on this rank */
size_t model_kv_block_bytes(const model *m, int block_size);
/* The sliding window the scheduler may rely on: W when every layer of the model reads only the
 * last W positions (position p reads p-W+1..p and never a block-table entry of a block wholly
 * before p-W+1), 0 when some layer reads them all. */
int model_kv_window(const model *m);
void model_state_free(model_state *s);
size_t model_state_kv_bytes(const model_state *s);
int model_state_n_ctx(const model_state *s);

typedef struct {
    int n;                   /* T */
    const int32_t *tokens;   /* (T) */
    const int32_t *pos;      /* (T) position of each token in its sequence */
    const int8_t *want;      /* (T) 1 = produce logits for this position; NULL = last only */
    const int32_t *const *tables;  /* (T) block table of each position's sequence (entry i =
                                      block of positions [i*bs, (i+1)*bs)); required */
} model_batch;

/* logits: (n_out, V) for the n_out positions with want set, in batch order. Positions of one
 * sequence must come in increasing order within a batch. Returns 0 or an error (bad token id,
 * position beyond n_ctx, batch larger than max_batch).
 * Sharded: every rank of the job calls it with the same batch. Stage 0 embeds, later stages
 * receive the residual stream from the previous stage; the last stage writes its vocabulary
 * slice, (n_out, vocab_pad) with -inf padding, into `logits`; other stages write nothing.
 * model_logits_full and model_argmax then combine the slices across the tensor group. */
int model_forward(const model *m, model_state *s, const model_batch *b, float *logits,
                  char *err, size_t errlen);
/* 1 on the ranks of the last stage (they hold logits after model_forward) */
int model_has_logits(const model *m);
/* last stage: full (n_out, V) logits from the slices, on every rank of the tensor group;
 * `slices` is (n_out, vocab_pad) as model_forward wrote it; `full` may not alias it */
int model_logits_full(const model *m, const float *slices, int n_out, float *full, char *err,
                      size_t errlen);
/* last stage: greedy ids for n_out rows (highest logit, ties to the lowest id) */
int model_argmax(const model *m, const float *slices, int n_out, int32_t *ids, char *err,
                 size_t errlen);
/* floats a caller must provide for n_out rows of logits: n_out * max(V, tp * vocab_pad) */
size_t model_logits_floats(const model *m, int n_out);

#endif
