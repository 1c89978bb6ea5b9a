/* runtime/model.h — a transformer model loaded from GGUF, and its forward pass.
 *
 * Architectures are data: model_load reads `general.architecture`, looks it up in a table of
 * architecture descriptions (runtime/model_load.c: which tensors, which options — QKV bias,
 * NeoX RoPE, tied output) and fills a model_cfg plus per-layer weight views into the mapping.
 * Supported now: llama (Llama 2/3, TinyLlama, Mistral without sliding window) and qwen2.
 *
 * Legend: V = vocab, C = embedding dim, L = layers, H = query heads, Hkv = KV heads, D = head dim,
 * F = FFN hidden dim, T = tokens in a batch, S = sequence slots, P = context length.
 *
 * A forward pass runs over a batch of T token positions drawn from any of S sequences at once:
 * each position names its sequence slot and its position in that sequence, attends to the KV
 * cache of its own slot (positions 0..pos), and writes its K and V there. Logits are produced only
 * for positions flagged in the batch.
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

typedef enum { ARCH_LLAMA = 1, ARCH_QWEN2 = 2 } model_arch;

typedef struct {
    model_arch arch;
    const char *arch_name;
    int n_vocab;     /* V */
    int dim;         /* C */
    int n_layers;    /* L */
    int n_heads;     /* H */
    int n_kv_heads;  /* Hkv */
    int head_dim;    /* D = C / H */
    int ffn_dim;     /* F */
    int n_ctx_train; /* P from metadata */
    int n_rot;       /* rotary dims (<= D) */
    int rope_neox;   /* pairing (i, i+D/2) instead of (2i, 2i+1) */
    float rope_base;
    float norm_eps;
    int qkv_bias;
    int tied_output; /* output head is token_embd */
} model_cfg;

typedef struct {
    kern_weight wq, wk, wv, wo;          /* (H*D, C), (Hkv*D, C), (Hkv*D, C), (C, H*D) */
    kern_weight w_gate, w_up, w_down;    /* (F, C), (F, C), (C, F) */
    const float *attn_norm, *ffn_norm;   /* (C) */
    const float *bq, *bk, *bv;           /* (H*D), (Hkv*D), (Hkv*D) or NULL */
} model_layer;

typedef struct model {
    model_cfg cfg;
    struct gguf_ctx *gguf;               /* owns the mapping the weights point into */
    struct tok *tok;
    kern_weight tok_embd;                /* (V, C) */
    kern_weight output;                  /* (V, C); == tok_embd when tied */
    const float *output_norm;            /* (C) */
    const float *rope_freqs;             /* (n_rot/2) or NULL */
    model_layer *layers;                 /* (L) */
    void *owned;                         /* weights converted at load (e.g. F32 norms stored
                                            as F16), freed with the model */
    size_t weight_bytes;                 /* bytes of all weights as used */
    struct backend *be;                  /* where the forward pass runs; owned */
} model;

typedef struct {
    int n_threads;   /* <= 0: pool_default_threads() */
} model_opts;

int model_load(const char *path, const model_opts *opts, model **out, char *err, size_t errlen);
void model_free(model *m);

/* KV cache and scratch for up to n_seq sequences of n_ctx positions each. */
typedef struct model_state model_state;
model_state *model_state_new(const model *m, int n_seq, int n_ctx, int max_batch,
                             char *err, size_t errlen);
void model_state_free(model_state *s);
size_t model_state_kv_bytes(const model_state *s);
int model_state_n_ctx(const model_state *s);

typedef struct {
    int n;                   /* T */
    const int32_t *tokens;   /* (T) */
    const int32_t *pos;      /* (T) position of each token in its sequence */
    const int32_t *seq;      /* (T) sequence slot, or NULL for all 0 */
    const int8_t *want;      /* (T) 1 = produce logits for this position; NULL = last only */
} model_batch;

/* logits: (n_out, V) for the n_out positions with want set, in batch order. Positions of one
 * sequence must come in increasing order within a batch. Returns 0 or an error (bad token id,
 * position beyond n_ctx, batch larger than max_batch). */
int model_forward(const model *m, model_state *s, const model_batch *b, float *logits,
                  char *err, size_t errlen);

#endif
