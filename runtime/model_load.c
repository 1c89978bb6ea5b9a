/* runtime/model_load.c — from a GGUF file to a model: architectures as data.
 *
 * An architecture is a row of `archs` (its name and options) plus the tensor table `tensors`
 * (which tensors a block has, their shapes in model dimensions, which are optional). Loading
 * reads the hyper-parameters from `{arch}.*` metadata, then binds every tensor of the table to a
 * view into the mapping, checking type and shape. A new architecture of the same family is a new
 * row, not a new loop.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "gguf.h"
#include "model.h"
#include "ops_math.h"
#include "tok.h"

typedef struct {
    const char *name;
    model_arch arch;
    int qkv_bias;
    int rope_neox;
    float default_eps;
    model_ffn ffn;
    int emb_scale;      /* embedding scaled by sqrt(C) */
    int swa_period;     /* with attention.sliding_window: local layers l % p < p - 1 */
    int qk_norm;        /* attn_q_norm / attn_k_norm required */
    int post_norms;     /* post_attention_norm / post_ffw_norm required */
    model_attn attn;    /* GQA, or multi-head latent attention */
    int moe;            /* MoE FFN blocks (DeepSeekMoE routing) where expert_count says */
    model_gating gating;/* the router's default (expert_gating_func may say otherwise) */
    int expert_norm;    /* the default of expert_weights_norm */
} arch_desc;

static const arch_desc archs[] = {
    { "llama", ARCH_LLAMA, 0, 0, 1e-5f, FFN_SWIGLU, 0, 0, 0, 0, ATTN_GQA, 0, 0, 0 },
    { "qwen2", ARCH_QWEN2, 1, 1, 1e-6f, FFN_SWIGLU, 0, 0, 0, 0, ATTN_GQA, 0, 0, 0 },
    { "gemma3", ARCH_GEMMA3, 0, 1, 1e-6f, FFN_GEGLU, 1, 6, 1, 1, ATTN_GQA, 0, 0, 0 },
    { "qwen3", ARCH_QWEN3, 0, 1, 1e-6f, FFN_SWIGLU, 0, 0, 1, 0, ATTN_GQA, 0, 0, 0 },
    /* DeepSeek-V2/V3: softmax unless expert_gating_func says sigmoid (V3) */
    { "deepseek2", ARCH_DEEPSEEK2, 0, 0, 1e-6f, FFN_SWIGLU, 0, 0, 0, 0, ATTN_MLA, 1,
      GATE_SOFTMAX, 0 },
    /* Qwen3-MoE: llama.cpp routes it by softmax with the top-k weights normalised */
    { "qwen3moe", ARCH_QWEN3MOE, 0, 1, 1e-6f, FFN_SWIGLU, 0, 0, 1, 0, ATTN_GQA, 1,
      GATE_SOFTMAX, 1 },
};

/* architectures known by name and refused, with what they lack here */
static const struct { const char *name, *why; } archs_refused[] = {
    { "qwen2moe", "its shared expert's sigmoid gate (ffn_gate_inp_shexp)" },
};

/* model dimensions a tensor shape is written in */
enum { D_1 = 0, D_C, D_Q, D_KV, D_F, D_V, D_HD,
       D_QV,    /* H * Dv: attention output's columns */
       D_QL,    /* Q: q_lora_rank */
       D_KVA,   /* R + Dr: the latent and the RoPE key */
       D_R,     /* R */
       D_DN,    /* Dn */
       D_DV,    /* Dv */
       D_H,     /* H: per-head matrices (3-D tensors) */
       D_E,     /* E: experts (3-D tensors; routers) */
       D_FE,    /* Fe */
       D_FS };  /* Fs: the shared experts' FFN */

enum { T_MATRIX = 0, T_VECTOR = 1,
       T_HEADS,     /* 3-D [cols, rows, H]: one matrix per head, this rank's heads bound */
       T_EXPERTS }; /* 3-D [cols, rows, E]: one matrix per expert, this rank's experts bound */
/* when a tensor is required (else absent, or optional where said) */
enum { F_REQ = 0, F_OPT = 1, F_BIAS = 2, /* required iff the arch has QKV bias */
       F_QKN = 3,   /* required iff the arch has q/k norms, else absent */
       F_POST = 4,  /* required iff the arch has post norms, else absent */
       F_GQA,       /* grouped-query attention's K and V */
       F_Q,         /* attn_q: GQA, or MLA without q_lora */
       F_MLA,       /* MLA */
       F_QLORA,     /* MLA with q_lora */
       F_DENSE,     /* a dense FFN block */
       F_MOE,       /* an MoE block */
       F_MOE_OPT,   /* may be in an MoE block */
       F_SHEXP };   /* an MoE block with shared experts */

/* how a tensor is cut for tensor parallelism */
enum { S_NONE = 0,  /* replicated (norms; MLA's latent projections; experts, which expert
                       parallelism splits instead) */
       S_Q,         /* rows (matrices) or elements (biases) of this rank's query heads */
       S_KV,        /* ... of this rank's KV heads */
       S_FFN,       /* ... of this rank's FFN columns */
       S_MIX_Q,     /* attention output: columns of the query heads, or rows (GATHER) */
       S_MIX_FFN }; /* FFN down: columns of the FFN slice, or rows (GATHER) */

typedef struct {
    const char *suffix;   /* "attn_q.weight" after "blk.N." */
    int kind;             /* T_MATRIX: a kern_weight; T_VECTOR: const float *; T_HEADS /
                             T_EXPERTS: a kern_weight * array (of this rank's heads / experts) */
    size_t field;         /* offsetof into model_layer */
    int rows, cols;       /* matrices: (rows, cols) = GGUF ne[1], ne[0]; vectors: cols only */
    int flags;
    int split;            /* S_* */
} tensor_spec;

#define LF(f) offsetof(model_layer, f)
static const tensor_spec layer_tensors[] = {
    { "attn_norm.weight",   T_VECTOR, LF(attn_norm), D_1,  D_C,  F_REQ,  S_NONE },
    { "attn_q.weight",      T_MATRIX, LF(wq),        D_Q,  D_C,  F_Q,    S_Q },
    { "attn_k.weight",      T_MATRIX, LF(wk),        D_KV, D_C,  F_GQA,  S_KV },
    { "attn_v.weight",      T_MATRIX, LF(wv),        D_KV, D_C,  F_GQA,  S_KV },
    { "attn_q.bias",        T_VECTOR, LF(bq),        D_1,  D_Q,  F_BIAS, S_Q },
    { "attn_k.bias",        T_VECTOR, LF(bk),        D_1,  D_KV, F_BIAS, S_KV },
    { "attn_v.bias",        T_VECTOR, LF(bv),        D_1,  D_KV, F_BIAS, S_KV },
    { "attn_output.weight", T_MATRIX, LF(wo),        D_C,  D_QV, F_REQ,  S_MIX_Q },
    { "ffn_norm.weight",    T_VECTOR, LF(ffn_norm),  D_1,  D_C,  F_REQ,  S_NONE },
    { "ffn_gate.weight",    T_MATRIX, LF(w_gate),    D_F,  D_C,  F_DENSE, S_FFN },
    { "ffn_up.weight",      T_MATRIX, LF(w_up),      D_F,  D_C,  F_DENSE, S_FFN },
    { "ffn_down.weight",    T_MATRIX, LF(w_down),    D_C,  D_F,  F_DENSE, S_MIX_FFN },
    { "attn_q_norm.weight", T_VECTOR, LF(q_norm),    D_1,  D_HD, F_QKN,  S_NONE },
    { "attn_k_norm.weight", T_VECTOR, LF(k_norm),    D_1,  D_HD, F_QKN,  S_NONE },
    { "post_attention_norm.weight", T_VECTOR, LF(post_attn_norm), D_1, D_C, F_POST, S_NONE },
    { "post_ffw_norm.weight", T_VECTOR, LF(post_ffn_norm), D_1, D_C, F_POST, S_NONE },
    /* multi-head latent attention */
    { "attn_q_a.weight",    T_MATRIX, LF(wq_a),      D_QL, D_C,  F_QLORA, S_NONE },
    { "attn_q_a_norm.weight", T_VECTOR, LF(q_a_norm), D_1, D_QL, F_QLORA, S_NONE },
    { "attn_q_b.weight",    T_MATRIX, LF(wq_b),      D_Q,  D_QL, F_QLORA, S_Q },
    { "attn_kv_a_mqa.weight", T_MATRIX, LF(wkv_a),   D_KVA, D_C, F_MLA,  S_NONE },
    { "attn_kv_a_norm.weight", T_VECTOR, LF(kv_a_norm), D_1, D_R, F_MLA, S_NONE },
    { "attn_k_b.weight",    T_HEADS,  LF(wk_b),      D_R,  D_DN, F_MLA,  S_Q },
    { "attn_v_b.weight",    T_HEADS,  LF(wv_b),      D_DV, D_R,  F_MLA,  S_Q },
    /* DeepSeekMoE */
    { "ffn_gate_inp.weight", T_MATRIX, LF(w_router), D_E,  D_C,  F_MOE,  S_NONE },
    { "exp_probs_b.bias",   T_VECTOR, LF(exp_bias),  D_1,  D_E,  F_MOE_OPT, S_NONE },
    { "ffn_gate_exps.weight", T_EXPERTS, LF(exp_gate), D_FE, D_C, F_MOE, S_NONE },
    { "ffn_up_exps.weight", T_EXPERTS, LF(exp_up),   D_FE, D_C,  F_MOE,  S_NONE },
    { "ffn_down_exps.weight", T_EXPERTS, LF(exp_down), D_C, D_FE, F_MOE, S_NONE },
    { "ffn_gate_shexp.weight", T_MATRIX, LF(sh_gate), D_FS, D_C, F_SHEXP, S_NONE },
    { "ffn_up_shexp.weight", T_MATRIX, LF(sh_up),    D_FS, D_C,  F_SHEXP, S_NONE },
    { "ffn_down_shexp.weight", T_MATRIX, LF(sh_down), D_C, D_FS, F_SHEXP, S_NONE },
};
#undef LF

/* whether layer l must have a tensor with these flags (absent ones are skipped, but for F_OPT
 * and F_MOE_OPT a present one is bound) */
static int spec_required(const model_cfg *c, int l, int flags) {
    const int mla = c->attn == ATTN_MLA, moe = c->n_expert > 0 && l >= c->n_dense;
    switch (flags) {
    case F_REQ: return 1;
    case F_BIAS: return c->qkv_bias;
    case F_QKN: return c->qk_norm;
    case F_POST: return c->post_norms;
    case F_GQA: return !mla;
    case F_Q: return !mla || c->q_lora == 0;
    case F_MLA: return mla;
    case F_QLORA: return mla && c->q_lora > 0;
    case F_DENSE: return !moe;
    case F_MOE: return moe;
    case F_SHEXP: return moe && c->n_expert_shared > 0;
    default: return 0;
    }
}

/* whether a tensor with these flags is bound in layer l when present */
static int spec_used(const model_cfg *c, int l, int flags) {
    if (flags == F_OPT) return 1;
    if (flags == F_MOE_OPT) return spec_required(c, l, F_MOE);
    return spec_required(c, l, flags);
}

static int64_t dim_of(const model_cfg *c, int d) {
    switch (d) {
    case D_C: return c->dim;
    case D_Q: return (int64_t)c->n_heads * c->head_dim;
    case D_KV: return (int64_t)c->n_kv_heads * c->head_dim;
    case D_F: return c->ffn_dim;
    case D_V: return c->n_vocab;
    case D_HD: return c->head_dim;
    case D_QV: return (int64_t)c->n_heads * c->v_dim;
    case D_QL: return c->q_lora;
    case D_KVA: return (int64_t)c->kv_lora + c->n_rot;
    case D_R: return c->kv_lora;
    case D_DN: return c->head_dim - c->n_rot;
    case D_DV: return c->v_dim;
    case D_H: return c->n_heads;
    case D_E: return c->n_expert;
    case D_FE: return c->expert_ffn;
    case D_FS: return (int64_t)c->expert_ffn * c->n_expert_shared;
    default: return 1;
    }
}

/* Vectors (norms, biases) are used as f32; other stored types are converted once into the
 * model's owned arena. */
typedef struct {
    float *buf;
    size_t used, cap;   /* in floats */
} arena;

static const float *load_vector(const gguf_tensor *t, arena *a, int64_t n, char *err,
                                size_t errlen) {
    if (t->n_dims != 1 || t->ne[0] != n) {
        snprintf(err, errlen, "model: tensor '%.*s' has %lld elements in %u dims, expected %lld",
                 (int)t->name.len, t->name.ptr, (long long)t->ne[0], t->n_dims, (long long)n);
        return NULL;
    }
    if (t->type == QT_F32) return t->data;
    const qt_traits *tr = qt_get(t->type);
    if (!tr || !tr->to_float || n % tr->block_size) {
        snprintf(err, errlen, "model: tensor '%.*s' has unsupported type %d for a vector",
                 (int)t->name.len, t->name.ptr, t->type);
        return NULL;
    }
    if (a->used + (size_t)n > a->cap) {
        snprintf(err, errlen, "model: internal arena too small for '%.*s'", (int)t->name.len,
                 t->name.ptr);
        return NULL;
    }
    float *dst = a->buf + a->used;
    a->used += (size_t)n;
    tr->to_float(t->data, dst, n);
    return dst;
}

static int load_matrix(const gguf_tensor *t, kern_weight *w, int64_t rows, int64_t cols,
                       char *err, size_t errlen) {
    const qt_traits *tr = qt_get(t->type);
    if (!tr) {
        snprintf(err, errlen, "model: tensor '%.*s' has unsupported type id %d", (int)t->name.len,
                 t->name.ptr, t->type);
        return -1;
    }
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows) {
        snprintf(err, errlen,
                 "model: tensor '%.*s' has shape [%lld, %lld] (%u dims), expected [%lld, %lld]",
                 (int)t->name.len, t->name.ptr, (long long)t->ne[0],
                 (long long)(t->n_dims > 1 ? t->ne[1] : 1), t->n_dims, (long long)cols,
                 (long long)rows);
        return -1;
    }
    w->data = t->data;
    w->type = t->type;
    w->n_rows = rows;
    w->n_cols = cols;
    w->row_stride = qt_row_size(t->type, cols);
    return 0;
}

/* A 3-D tensor [cols, rows, n] as n matrices (rows, cols); binds the n_local of them from i0
 * into arr (per-head MLA matrices, experts). */
static int load_stack(const gguf_tensor *t, kern_weight *arr, int64_t rows, int64_t cols,
                      int64_t n, int64_t i0, int64_t n_local, char *err, size_t errlen) {
    const qt_traits *tr = qt_get(t->type);
    if (!tr) {
        snprintf(err, errlen, "model: tensor '%.*s' has unsupported type id %d", (int)t->name.len,
                 t->name.ptr, t->type);
        return -1;
    }
    if (t->n_dims != 3 || t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != n ||
        !qt_row_size(t->type, cols)) {
        snprintf(err, errlen,
                 "model: tensor '%.*s' has shape [%lld, %lld, %lld] (%u dims) of %s, expected "
                 "[%lld, %lld, %lld]", (int)t->name.len, t->name.ptr, (long long)t->ne[0],
                 (long long)(t->n_dims > 1 ? t->ne[1] : 1),
                 (long long)(t->n_dims > 2 ? t->ne[2] : 1), t->n_dims, tr->name,
                 (long long)cols, (long long)rows, (long long)n);
        return -1;
    }
    size_t rs = qt_row_size(t->type, cols);
    for (int64_t i = 0; i < n_local; i++)
        arr[i] = (kern_weight){ (const char *)t->data + (size_t)((i0 + i) * rows) * rs, t->type,
                                rows, cols, rs, KERN_ROWS };
    return 0;
}

static int get_u32(const gguf_ctx *g, const char *arch, const char *key, uint32_t *out,
                   int required, char *err, size_t errlen) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = gguf_get_u32(g, full, out, err, errlen);
    if (rc == GGUF_ERR_NOTFOUND && !required) return 0;
    if (rc == GGUF_ERR_NOTFOUND) snprintf(err, errlen, "model: missing metadata key '%s'", full);
    return rc;
}

static int get_f32(const gguf_ctx *g, const char *arch, const char *key, float *out,
                   char *err, size_t errlen) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = gguf_get_f32(g, full, out, err, errlen);
    return rc == GGUF_ERR_NOTFOUND ? 0 : rc;
}

/* a bool (or integer) key; absent: *out unchanged */
static int get_bool(const gguf_ctx *g, const char *arch, const char *key, int *out, char *err,
                    size_t errlen) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    const gguf_value *v = gguf_get(g, full);
    if (!v) return 0;
    if (v->type == GGUF_TYPE_BOOL) {
        *out = v->v.b;
        return 0;
    }
    uint32_t u = 0;
    if (gguf_get_u32(g, full, &u, err, errlen) != GGUF_OK) return -1;
    *out = u != 0;
    return 0;
}

/* RoPE scaling as llama.cpp reads it: rope.scaling.type (absent: linear, so a factor alone
 * scales), the factor from rope.scale_linear or rope.scaling.factor (absent: no scaling); YaRN's
 * original context (default the training context) and ramp ends (32, 1). Unknown types are
 * refused rather than run with the wrong positions. */
static int read_rope_scaling(const gguf_ctx *g, const char *a, model_cfg *c, char *err,
                             size_t errlen) {
    char full[96];
    gguf_str rst;
    snprintf(full, sizeof full, "%s.rope.scaling.type", a);
    int rc = gguf_get_str(g, full, &rst, err, errlen);
    if (rc != GGUF_OK && rc != GGUF_ERR_NOTFOUND) return -1;
    c->rope_scaling = ROPE_SCALING_LINEAR;
    if (rc == GGUF_OK && gguf_str_eq(rst, "none")) c->rope_scaling = ROPE_SCALING_NONE;
    else if (rc == GGUF_OK && gguf_str_eq(rst, "yarn")) c->rope_scaling = ROPE_SCALING_YARN;
    else if (rc == GGUF_OK && !gguf_str_eq(rst, "linear")) {
        snprintf(err, errlen, "model: %s '%.*s' is not supported (none, linear or yarn)", full,
                 (int)(rst.len > 32 ? 32 : rst.len), rst.ptr);
        return -1;
    }
    float factor = 0.0f;
    uint32_t orig = (uint32_t)c->n_ctx_train;
    c->yarn_beta_fast = 32.0f;
    c->yarn_beta_slow = 1.0f;
    if (get_f32(g, a, "rope.scale_linear", &factor, err, errlen) ||
        (factor == 0.0f && get_f32(g, a, "rope.scaling.factor", &factor, err, errlen)) ||
        get_u32(g, a, "rope.scaling.original_context_length", &orig, 0, err, errlen) ||
        get_f32(g, a, "rope.scaling.yarn_beta_fast", &c->yarn_beta_fast, err, errlen) ||
        get_f32(g, a, "rope.scaling.yarn_beta_slow", &c->yarn_beta_slow, err, errlen))
        return -1;
    if (factor == 0.0f || c->rope_scaling == ROPE_SCALING_NONE) {
        c->rope_scaling = ROPE_SCALING_NONE;   /* llama.cpp: type none never scales */
        c->rope_factor = 1.0f;
        return 0;
    }
    if (!(factor > 0.0f && factor <= 1e6f) || orig == 0 || orig > (1u << 24) ||
        !(c->yarn_beta_fast > c->yarn_beta_slow && c->yarn_beta_slow > 0.0f &&
          c->yarn_beta_fast < 1e6f)) {
        snprintf(err, errlen, "model: %s.rope.scaling: factor %g, original_context_length %u, "
                 "yarn_beta_fast %g, yarn_beta_slow %g (factor in (0, 1e6], context in "
                 "[1, 2^24], 0 < beta_slow < beta_fast)", a, (double)factor, orig,
                 (double)c->yarn_beta_fast, (double)c->yarn_beta_slow);
        return -1;
    }
    c->rope_factor = factor;
    c->rope_ctx_orig = (int)orig;
    return 0;
}

/* the head dim of grouped-query attention: attention.key_length (Gemma 3: 256, Qwen3: 128,
 * not C/H), else C/H; and the rotary dims */
static int read_head_dims(const gguf_ctx *g, const char *a, model_cfg *c, char *err,
                          size_t errlen) {
    uint32_t rot = 0, hd = 0, vl = 0;
    char kl[96];
    snprintf(kl, sizeof kl, "%s.attention.key_length", a);
    int krc = gguf_get_u32(g, kl, &hd, err, errlen);
    if ((krc != GGUF_OK && krc != GGUF_ERR_NOTFOUND) ||
        get_u32(g, a, "attention.value_length", &vl, 0, err, errlen))
        return -1;
    if (krc == GGUF_OK && hd == 0) {
        snprintf(err, errlen, "model: %s is 0 (the head dim)", kl);
        return -1;
    }
    if (hd == 0 && (uint32_t)c->dim % (uint32_t)c->n_heads) {
        snprintf(err, errlen, "model: embedding_length %d does not divide by %d heads and "
                 "attention.key_length is absent", c->dim, c->n_heads);
        return -1;
    }
    if (hd == 0) hd = (uint32_t)(c->dim / c->n_heads);
    if (hd > 4096 || hd % 2 || (vl && vl != hd)) {
        snprintf(err, errlen, "model: attention.key_length %u / value_length %u unsupported "
                 "(even, <= 4096, equal)", hd, vl);
        return -1;
    }
    c->head_dim = (int)hd;
    c->v_dim = (int)hd;
    rot = (uint32_t)c->head_dim;
    if (get_u32(g, a, "rope.dimension_count", &rot, 0, err, errlen)) return -1;
    if (rot == 0 || rot > (uint32_t)c->head_dim || rot % 2) {
        snprintf(err, errlen, "model: rope.dimension_count %u must be even and <= head dim %d",
                 rot, c->head_dim);
        return -1;
    }
    c->n_rot = (int)rot;
    return 0;
}

/* DeepSeek-V2/V3 (deepseek2): the latent attention's ranks and head dims, and DeepSeekMoE.
 * Head dims as llama.cpp reads them: key_length_mla / value_length_mla when present (newer
 * conversions write key_length = R + Dr there), else key_length / value_length. */
static int read_deepseek(const gguf_ctx *g, const char *a, model_cfg *c, char *err,
                         size_t errlen) {
    uint32_t ql = 0, kvl = 0, kl = 0, vl = 0, klm = 0, vlm = 0, rot = 0;
    if (get_u32(g, a, "attention.q_lora_rank", &ql, 0, err, errlen) ||
        get_u32(g, a, "attention.kv_lora_rank", &kvl, 1, err, errlen) ||
        get_u32(g, a, "attention.key_length", &kl, 1, err, errlen) ||
        get_u32(g, a, "attention.value_length", &vl, 1, err, errlen) ||
        get_u32(g, a, "attention.key_length_mla", &klm, 0, err, errlen) ||
        get_u32(g, a, "attention.value_length_mla", &vlm, 0, err, errlen) ||
        get_u32(g, a, "rope.dimension_count", &rot, 1, err, errlen))
        return -1;
    uint32_t dk = klm ? klm : kl, dv = vlm ? vlm : vl;
    if (kvl == 0 || kvl > 65536 || ql > 65536 || dk > 4096 || dv == 0 || dv > 4096 ||
        rot == 0 || rot % 2 || rot >= dk) {
        snprintf(err, errlen, "model: bad latent attention: q_lora_rank %u, kv_lora_rank %u, "
                 "key length %u, value length %u, rope dims %u (rope dims even and below the "
                 "key length)", ql, kvl, dk, dv, rot);
        return -1;
    }
    c->q_lora = (int)ql;
    c->kv_lora = (int)kvl;
    c->head_dim = (int)dk;
    c->v_dim = (int)dv;
    c->n_rot = (int)rot;
    c->n_kv_heads = 1;   /* one latent head, shared by every query head */
    return 0;
}

/* The MoE FFN's metadata (deepseek2, qwen3moe): routed and shared experts, groups, gating and
 * the weights' normalisation and scale; absent keys keep the architecture's defaults (c's
 * gating and expert_norm on entry). No expert_count: a dense model. */
static int read_moe(const gguf_ctx *g, const char *a, model_cfg *c, char *err, size_t errlen) {
    uint32_t dense = 0, E = 0, k = 0, shared = 0, grp = 1, grp_used = 1, gate = (uint32_t)c->gating,
             fe = 0;
    c->expert_scale = 1.0f;
    if (get_u32(g, a, "leading_dense_block_count", &dense, 0, err, errlen) ||
        get_u32(g, a, "expert_count", &E, 0, err, errlen) ||
        get_u32(g, a, "expert_used_count", &k, E > 0, err, errlen) ||
        get_u32(g, a, "expert_shared_count", &shared, 0, err, errlen) ||
        get_u32(g, a, "expert_group_count", &grp, 0, err, errlen) ||
        get_u32(g, a, "expert_group_used_count", &grp_used, 0, err, errlen) ||
        get_u32(g, a, "expert_gating_func", &gate, 0, err, errlen) ||
        get_u32(g, a, "expert_feed_forward_length", &fe, E > 0, err, errlen) ||
        get_f32(g, a, "expert_weights_scale", &c->expert_scale, err, errlen) ||
        get_bool(g, a, "expert_weights_norm", &c->expert_norm, err, errlen) ||
        get_f32(g, a, "rope.scaling.yarn_log_multiplier", &c->yarn_log_mul, err, errlen))
        return -1;
    if (grp == 0) grp = 1;
    if (grp_used == 0 || grp == 1) grp_used = grp;
    if (E > 0 && (E > 4096 || k == 0 || k > E || fe == 0 || fe > (1u << 20) || shared > 64 ||
                  E % grp || grp_used > grp || k > grp_used * (E / grp) ||
                  (gate != GATE_SOFTMAX && gate != GATE_SIGMOID) ||
                  !(c->expert_scale > 0.0f && c->expert_scale < 1e6f))) {
        snprintf(err, errlen, "model: bad MoE: %u experts, %u used, %u shared, FFN %u, %u groups "
                 "(%u used), gating %u, weights scale %g", E, k, shared, fe, grp, grp_used, gate,
                 (double)c->expert_scale);
        return -1;
    }
    c->n_dense = (int)(dense < (uint32_t)c->n_layers ? dense : (uint32_t)c->n_layers);
    c->n_expert = (int)E;
    c->n_expert_used = (int)k;
    c->n_expert_shared = (int)shared;
    c->n_group = (int)grp;
    c->n_group_used = (int)grp_used;
    c->gating = (model_gating)gate;
    c->expert_ffn = (int)fe;
    return 0;
}

static int read_cfg(const gguf_ctx *g, model_cfg *c, char *err, size_t errlen) {
    gguf_str an;
    memset(c, 0, sizeof *c);   /* what an architecture does not read stays 0 (no MoE, ...) */
    if (gguf_get_str(g, "general.architecture", &an, err, errlen) != GGUF_OK) {
        snprintf(err, errlen, "model: missing metadata key 'general.architecture'");
        return -1;
    }
    const arch_desc *ad = NULL;
    char names[96] = "";
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        if (gguf_str_eq(an, archs[i].name)) ad = &archs[i];
        size_t n = strlen(names);
        snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "", archs[i].name);
    }
    for (size_t i = 0; i < sizeof archs_refused / sizeof archs_refused[0]; i++)
        if (gguf_str_eq(an, archs_refused[i].name)) {
            snprintf(err, errlen, "model: architecture '%s' is not supported yet (%s; "
                     "supported: %s)", archs_refused[i].name, archs_refused[i].why, names);
            return -1;
        }
    if (!ad) {
        snprintf(err, errlen, "model: unsupported architecture '%.*s' (supported: %s)",
                 (int)(an.len > 64 ? 64 : an.len), an.ptr, names);
        return -1;
    }
    c->arch = ad->arch;
    c->arch_name = ad->name;
    c->qkv_bias = ad->qkv_bias;
    c->rope_neox = ad->rope_neox;
    uint32_t dim = 0, layers = 0, heads = 0, kv = 0, ffn = 0, ctx = 2048;
    const char *a = ad->name;
    if (get_u32(g, a, "embedding_length", &dim, 1, err, errlen) ||
        get_u32(g, a, "block_count", &layers, 1, err, errlen) ||
        get_u32(g, a, "attention.head_count", &heads, 1, err, errlen) ||
        get_u32(g, a, "feed_forward_length", &ffn, 1, err, errlen) ||
        get_u32(g, a, "context_length", &ctx, 0, err, errlen))
        return -1;
    kv = heads;
    if (get_u32(g, a, "attention.head_count_kv", &kv, 0, err, errlen)) return -1;
    if (dim == 0 || layers == 0 || heads == 0 || kv == 0 || ffn == 0 || ctx == 0 ||
        dim > (1u << 20) || layers > 4096 || heads > 4096 || ffn > (1u << 24) ||
        heads % kv) {
        snprintf(err, errlen,
                 "model: bad hyper-parameters: dim %u, layers %u, heads %u, kv heads %u, ffn %u, "
                 "context %u (heads must divide by kv heads)",
                 dim, layers, heads, kv, ffn, ctx);
        return -1;
    }
    c->dim = (int)dim;
    c->n_layers = (int)layers;
    c->n_heads = (int)heads;
    c->n_kv_heads = (int)kv;
    c->ffn_dim = (int)ffn;
    c->n_ctx_train = (int)(ctx > (1u << 24) ? (1u << 24) : ctx);
    c->attn = ad->attn;
    if (ad->attn == ATTN_MLA ? read_deepseek(g, a, c, err, errlen)
                             : read_head_dims(g, a, c, err, errlen))
        return -1;
    c->gating = ad->gating;
    c->expert_norm = ad->expert_norm;
    if (ad->moe && read_moe(g, a, c, err, errlen)) return -1;
    c->rope_base = 10000.0f;
    c->norm_eps = ad->default_eps;
    if (get_f32(g, a, "rope.freq_base", &c->rope_base, err, errlen) ||
        get_f32(g, a, "attention.layer_norm_rms_epsilon", &c->norm_eps, err, errlen))
        return -1;
    /* the block's variants, from the architecture's row and its metadata */
    c->ffn = ad->ffn;
    c->qk_norm = ad->qk_norm;
    c->post_norms = ad->post_norms;
    c->emb_scale = ad->emb_scale ? sqrtf((float)c->dim) : 0.0f;
    float qpa = 0.0f;   /* query_pre_attn_scalar: Gemma's q scale is its inverse square root */
    if (get_f32(g, a, "attention.query_pre_attn_scalar", &qpa, err, errlen)) return -1;
    c->attn_scale = 1.0f / sqrtf(qpa > 0.0f ? qpa : (float)c->head_dim);
    uint32_t win = 0, period = (uint32_t)ad->swa_period;
    if (get_u32(g, a, "attention.sliding_window", &win, 0, err, errlen) ||
        get_u32(g, a, "attention.sliding_window_pattern", &period, 0, err, errlen))
        return -1;
    if (!ad->swa_period) win = 0;   /* read only where the architecture defines the layers */
    c->window = (int)(win > (1u << 24) ? (1u << 24) : win);
    c->swa_period = (int)period;
    c->rope_base_local = 10000.0f;
    if (get_f32(g, a, "rope.freq_base_swa", &c->rope_base_local, err, errlen)) return -1;
    if (read_rope_scaling(g, a, c, err, errlen)) return -1;
    if (c->attn == ATTN_MLA && c->rope_scaling == ROPE_SCALING_YARN) {
        /* DeepSeek's YaRN: the attention scale times mscale^2, mscale = 1 + yarn_log_mul
         * ln(factor) (the reference's softmax_scale); the rotation keeps magnitude 1 */
        float ms = 1.0f + c->yarn_log_mul * logf(c->rope_factor);
        c->attn_scale *= ms * ms;
    }
    return 0;
}

static const gguf_tensor *find(const gguf_ctx *g, const char *name, int required, char *err,
                               size_t errlen) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t && required) snprintf(err, errlen, "model: missing tensor '%s'", name);
    return t;
}

/* ---- slicing for tensor parallelism ------------------------------------------------------ */

/* Owned copies (column slices) live until model_free. */
static void *model__keep(model *m, size_t bytes) {
    void **list = realloc(m->copies, (size_t)(m->n_copies + 1) * sizeof *list);
    if (!list) return NULL;
    m->copies = list;
    void *p = malloc(bytes ? bytes : 1);
    if (p) m->copies[m->n_copies++] = p;
    return p;
}

/* Tell the kernel it may drop the mapped pages inside [p, p + n): a rank that copied its
 * columns out of a tensor does not keep the rest resident. */
static void drop_pages(const void *p, size_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~(uintptr_t)(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* A rank's row slice [s, s + sn) of a mapped tensor [t, t + tn): fault the slice in now and
 * drop the rest of the tensor's pages. The page cache keeps large folios, and the first touch
 * of a row maps the whole folio around it (up to 2 MiB), so without this a rank's resident set
 * would include its neighbours' rows at every slice boundary. Done tensor by tensor, the
 * excess never adds up in the peak. */
static void settle(const void *t, size_t tn, const void *s, size_t sn) {
    long pg = sysconf(_SC_PAGESIZE);
    volatile const char *p = s;
    unsigned sum = 0;
    for (size_t i = 0; i < sn; i += (size_t)pg) sum += (unsigned char)p[i];
    (void)sum;
    drop_pages(t, (size_t)((const char *)s - (const char *)t));
    drop_pages((const char *)s + sn, (size_t)((const char *)t + tn - ((const char *)s + sn)));
}

static size_t pack_bytes(const model *m, const kern_weight *w);

static kern_weight rows_of(kern_weight w, int64_t r0, int64_t n) {
    w.data = (const char *)w.data + (size_t)r0 * w.row_stride;
    w.n_rows = n;
    return w;
}

/* columns [c0, c0 + n) of every row, copied once; c0 and n fall on block boundaries */
static int cols_of(model *m, kern_weight *w, int64_t c0, int64_t n, char *err, size_t errlen) {
    const qt_traits *tr = qt_get(w->type);
    size_t off = (size_t)(c0 / tr->block_size) * tr->type_size;
    size_t rs = qt_row_size(w->type, n);
    char *dst = model__keep(m, rs * (size_t)w->n_rows);
    if (!dst) {
        snprintf(err, errlen, "model: out of memory for a %lld x %lld column slice",
                 (long long)w->n_rows, (long long)n);
        return -1;
    }
    for (int64_t r = 0; r < w->n_rows; r++)
        memcpy(dst + (size_t)r * rs, (const char *)w->data + (size_t)r * w->row_stride + off, rs);
    drop_pages(w->data, w->row_stride * (size_t)w->n_rows);
    w->data = dst;
    w->n_cols = n;
    w->row_stride = rs;
    return 0;
}

static int block_aligned(int type, int64_t c0, int64_t n) {
    const qt_traits *tr = qt_get(type);
    return tr && c0 % tr->block_size == 0 && n % tr->block_size == 0;
}

/* Cuts a whole-matrix view down to this rank's share, per the spec's split. */
static int slice_matrix(model *m, const tensor_spec *ts, kern_weight *w, model_mix *mix,
                        char *err, size_t errlen) {
    const model_shard *sh = &m->shard;
    const int D = m->cfg.head_dim;
    if (sh->tp <= 1) return 0;
    switch (ts->split) {
    case S_Q: *w = rows_of(*w, (int64_t)sh->head0 * D, (int64_t)sh->n_heads * D); return 0;
    case S_KV: *w = rows_of(*w, (int64_t)sh->kv_head0 * D, (int64_t)sh->n_kv_heads * D); return 0;
    case S_FFN: *w = rows_of(*w, sh->ffn0, sh->n_ffn); return 0;
    case S_MIX_Q:
    case S_MIX_FFN: {
        const int Dv = m->cfg.v_dim;   /* the output's columns are the heads' values */
        int64_t c0 = ts->split == S_MIX_Q ? (int64_t)sh->head0 * Dv : sh->ffn0;
        int64_t n = ts->split == S_MIX_Q ? (int64_t)sh->n_heads * Dv : sh->n_ffn;
        if (m->tp_allreduce && block_aligned(w->type, c0, n)) {
            *mix = MIX_ALLREDUCE;
            return cols_of(m, w, c0, n, err, errlen);
        }
        int64_t rows = m->cfg.dim / sh->tp;
        *mix = MIX_GATHER;
        *w = rows_of(*w, rows * sh->tp_rank, rows);
        return 0;
    }
    default: return 0;
    }
}

static const float *slice_vector(const model *m, const tensor_spec *ts, const float *v) {
    const model_shard *sh = &m->shard;
    const int D = m->cfg.head_dim;
    if (sh->tp <= 1) return v;
    switch (ts->split) {
    case S_Q: return v + (size_t)sh->head0 * D;
    case S_KV: return v + (size_t)sh->kv_head0 * D;
    case S_FFN: return v + sh->ffn0;
    default: return v;
    }
}

static int bind_tensors(model *m, arena *ar, char *err, size_t errlen) {
    const gguf_ctx *g = m->gguf;
    model_cfg *c = &m->cfg;
    const model_shard *sh = &m->shard;
    const gguf_tensor *te = find(g, "token_embd.weight", 1, err, errlen);
    if (!te) return -1;
    if (te->n_dims != 2 || te->ne[0] != c->dim || te->ne[1] != c->n_vocab) {
        snprintf(err, errlen, "model: token_embd.weight has shape [%lld, %lld], expected [%d, %d]",
                 (long long)te->ne[0], (long long)te->ne[1], c->dim, c->n_vocab);
        return -1;
    }
    if (load_matrix(te, &m->tok_embd, c->n_vocab, c->dim, err, errlen)) return -1;
    const gguf_tensor *on = find(g, "output_norm.weight", 1, err, errlen);
    if (!on || !(m->output_norm = load_vector(on, ar, c->dim, err, errlen))) return -1;
    const gguf_tensor *out = find(g, "output.weight", 0, err, errlen);
    c->tied_output = out == NULL;
    if (out) {
        if (load_matrix(out, &m->output, c->n_vocab, c->dim, err, errlen)) return -1;
    } else {
        m->output = m->tok_embd;
    }
    /* vocabulary slices: embedding rows on the first stage, output rows on the last */
    m->tok_embd = rows_of(m->tok_embd, sh->vocab0, sh->n_vocab);
    m->output = rows_of(m->output, sh->vocab0, sh->n_vocab);
    if (sh->tp > 1 && sh->stage == sh->pp - 1 && !(out && pack_bytes(m, &m->output))) {
        const gguf_tensor *ot = out ? out : te;
        settle(ot->data, ot->nbytes, m->output.data, m->output.row_stride * (size_t)sh->n_vocab);
    }
    m->weight_bytes = 0;
    if (sh->stage == 0) m->weight_bytes += m->tok_embd.row_stride * (size_t)sh->n_vocab;
    if (sh->stage == sh->pp - 1 && (out || sh->stage != 0))
        m->weight_bytes += m->output.row_stride * (size_t)sh->n_vocab;
    const gguf_tensor *rf = find(g, "rope_freqs.weight", 0, err, errlen);
    if (rf && !(m->rope_freqs = load_vector(rf, ar, c->n_rot / 2, err, errlen))) return -1;

    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    /* per layer: MLA's per-head matrices of this rank's heads, and its routed experts */
    const size_t per = (c->attn == ATTN_MLA ? 2 * (size_t)sh->n_heads : 0) +
                       (c->n_expert ? 3 * (size_t)sh->n_expert : 0);
    m->views = per ? calloc(per * (size_t)c->n_layers, sizeof *m->views) : NULL;
    if (!m->layers || (per && !m->views)) {
        snprintf(err, errlen, "model: out of memory for %d layers", c->n_layers);
        return -1;
    }
    for (int l = sh->layer0; l < sh->layer1; l++) {
        model_layer *L = &m->layers[l];
        kern_weight *views = m->views + per * (size_t)l;
        L->moe = c->n_expert > 0 && l >= c->n_dense;
        char kvb[48];
        snprintf(kvb, sizeof kvb, "blk.%d.attn_kv_b.weight", l);
        if (c->attn == ATTN_MLA && gguf_find_tensor(g, kvb)) {
            snprintf(err, errlen, "model: '%s' is the unsplit form of an older conversion; "
                     "convert the model again with a current llama.cpp (attn_k_b / attn_v_b)", kvb);
            return -1;
        }
        /* sliding window: with a period p, layers l % p < p - 1 are local (Gemma 3: five of
         * every six), the others global; local layers have their own RoPE base */
        int local = c->window > 0 && (c->swa_period <= 0 || l % c->swa_period < c->swa_period - 1);
        L->window = local ? c->window : 0;
        L->rope_base = local ? c->rope_base_local : c->rope_base;
        /* scaling on the global layers only (llama.cpp: local layers keep freq_scale 1) */
        memset(&L->rope_scaling, 0, sizeof L->rope_scaling);
        if (!local && c->rope_scaling != ROPE_SCALING_NONE) {
            L->rope_scaling.freq_scale = 1.0f / c->rope_factor;
            L->rope_scaling.attn_factor = 1.0f;
        }
        if (!local && c->rope_scaling == ROPE_SCALING_YARN) {
            L->rope_scaling.ext_factor = 1.0f;
            if (c->attn == ATTN_MLA)   /* cancels YaRN's 1 + 0.1 ln(factor) on cos and sin */
                L->rope_scaling.attn_factor = 1.0f / (1.0f + 0.1f * logf(c->rope_factor));
            om_rope_yarn_corr(c->n_rot, c->rope_ctx_orig, L->rope_base, c->yarn_beta_fast,
                              c->yarn_beta_slow, &L->rope_scaling.corr_lo,
                              &L->rope_scaling.corr_hi);
        }
        for (size_t i = 0; i < sizeof layer_tensors / sizeof layer_tensors[0]; i++) {
            const tensor_spec *ts = &layer_tensors[i];
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s", l, ts->suffix);
            if (!spec_used(c, l, ts->flags)) continue;
            int required = spec_required(c, l, ts->flags);
            const gguf_tensor *t = find(g, name, required, err, errlen);
            if (!t) {
                if (required) return -1;
                continue;
            }
            char *base = (char *)L;
            if (ts->kind == T_HEADS || ts->kind == T_EXPERTS) {
                const int heads = ts->kind == T_HEADS;
                int64_t n_local = heads ? sh->n_heads : sh->n_expert;
                kern_weight *arr = views;
                views += n_local;
                if (load_stack(t, arr, dim_of(c, ts->rows), dim_of(c, ts->cols),
                               dim_of(c, heads ? D_H : D_E), heads ? sh->head0 : sh->expert0,
                               n_local, err, errlen))
                    return -1;
                memcpy(base + ts->field, &arr, sizeof arr);
                size_t bytes = arr[0].row_stride * (size_t)arr[0].n_rows * (size_t)n_local;
                if ((sh->tp > 1 || sh->ep > 1) && !pack_bytes(m, &arr[0]))
                    settle(t->data, t->nbytes, arr[0].data, bytes);
                m->weight_bytes += bytes;
            } else if (ts->kind == T_MATRIX) {
                kern_weight *w = (kern_weight *)(base + ts->field);
                model_mix *mix = ts->split == S_MIX_Q ? &L->wo_mix : &L->down_mix;
                if (load_matrix(t, w, dim_of(c, ts->rows), dim_of(c, ts->cols), err, errlen) ||
                    slice_matrix(m, ts, w, mix, err, errlen))
                    return -1;
                /* a weight that pack_weights will copy is faulted in there, tensor by tensor */
                if (sh->tp > 1 && w->data >= t->data && !pack_bytes(m, w) &&
                    (const char *)w->data < (const char *)t->data + t->nbytes)
                    settle(t->data, t->nbytes, w->data, w->row_stride * (size_t)w->n_rows);
                m->weight_bytes += w->row_stride * (size_t)w->n_rows;
            } else {
                const float *v = load_vector(t, ar, dim_of(c, ts->cols), err, errlen);
                if (!v) return -1;
                v = slice_vector(m, ts, v);
                memcpy(base + ts->field, &v, sizeof v);
            }
        }
    }
    return 0;
}

/* ---- packed weights ----------------------------------------------------------------------- */

/* Calls fn on every matrix this rank multiplies by (its layers' matrices, and the output head
 * when it is a tensor of its own and this is the last stage). */
static void each_matrix(model *m, void (*fn)(model *m, kern_weight *w, void *ctx), void *ctx) {
    const model_shard *sh = &m->shard;
    for (int l = sh->layer0; l < sh->layer1; l++)
        for (size_t i = 0; i < sizeof layer_tensors / sizeof layer_tensors[0]; i++) {
            const tensor_spec *ts = &layer_tensors[i];
            char *slot = (char *)&m->layers[l] + ts->field;
            kern_weight *w = (kern_weight *)slot;
            if (ts->kind == T_MATRIX && w->data) fn(m, w, ctx);
            if (ts->kind == T_HEADS || ts->kind == T_EXPERTS) {   /* each matrix of the stack */
                kern_weight *arr;
                memcpy(&arr, slot, sizeof arr);
                int n = arr ? (ts->kind == T_HEADS ? sh->n_heads : sh->n_expert) : 0;
                for (int j = 0; j < n; j++) fn(m, &arr[j], ctx);
            }
        }
    if (!m->cfg.tied_output && sh->stage == sh->pp - 1) fn(m, &m->output, ctx);
}

void model_each_weight(const model *m, void (*fn)(void *ctx, const kern_weight *w, double share),
                       void *ctx) {
    const model_shard *sh = &m->shard;
    const double routed = m->cfg.n_expert ? (double)m->cfg.n_expert_used / m->cfg.n_expert : 1.0;
    for (int l = sh->layer0; l < sh->layer1; l++)
        for (size_t i = 0; i < sizeof layer_tensors / sizeof layer_tensors[0]; i++) {
            const tensor_spec *ts = &layer_tensors[i];
            const char *slot = (const char *)&m->layers[l] + ts->field;
            const kern_weight *w = (const kern_weight *)slot;
            if (ts->kind == T_MATRIX && w->data) fn(ctx, w, 1.0);
            if (ts->kind == T_HEADS || ts->kind == T_EXPERTS) {
                const kern_weight *arr;
                memcpy(&arr, slot, sizeof arr);
                int n = arr ? (ts->kind == T_HEADS ? sh->n_heads : sh->n_expert) : 0;
                for (int j = 0; j < n; j++) fn(ctx, &arr[j], ts->kind == T_HEADS ? 1.0 : routed);
            }
        }
}

/* Bytes of w's packed copy, 0 for none (packing off, or no packed layout for its type) */
static size_t pack_bytes(const model *m, const kern_weight *w) {
    return m->pack ? kern_pack_size(w) : 0;
}

static void pack_size(model *m, kern_weight *w, void *ctx) {
    *(size_t *)ctx += (pack_bytes(m, w) + 63) / 64 * 64;
}

/* Packs w at *ctx (a cursor in m->packed), then lets the kernel drop the source pages (or
 * frees the column-slice copy it came from), so the peak stays one tensor above the result;
 * a mapped source goes in pieces of about 8 MiB, each dropped once packed, so that a large
 * one (an output head) adds a piece to the peak, not itself. */
static void pack_one(model *m, kern_weight *w, void *ctx) {
    size_t n = pack_bytes(m, w);
    if (!n) return;
    size_t *at = ctx;
    const void *src = w->data;
    size_t src_bytes = w->row_stride * (size_t)w->n_rows;
    const char *lo = (const char *)gguf_base(m->gguf), *hi = lo + gguf_file_size(m->gguf);
    const int mapped = (const char *)src >= lo && (const char *)src < hi;
    int64_t piece = ((int64_t)(8 << 20) / (int64_t)w->row_stride + 7) / 8 * 8;   /* rows */
    if (piece < 8) piece = 8;
    for (int64_t r0 = 0; r0 < w->n_rows; r0 += piece) {
        int64_t r1 = r0 + piece < w->n_rows ? r0 + piece : w->n_rows;
        kern_pack_rows(w, r0, r1, (char *)m->packed + *at);
        if (mapped) drop_pages((const char *)src + (size_t)r0 * w->row_stride, (size_t)(r1 - r0) * w->row_stride);
    }
    *w = kern_pack_view(w, (char *)m->packed + *at);
    *at += (n + 63) / 64 * 64;
    for (int i = 0; i < m->n_copies; i++)
        if (m->copies[i] == src) {
            free(m->copies[i]);
            m->copies[i] = NULL;
            return;
        }
    /* the slice, and the large folios around it that reading it mapped (up to 2 MiB each way;
     * dropping a mapped page only means a later fault from the page cache) */
    const char *a = (const char *)src, *b = a + src_bytes;
    a = a - lo > (ptrdiff_t)(2 << 20) ? a - (2 << 20) : lo;
    b = hi - b > (ptrdiff_t)(2 << 20) ? b + (2 << 20) : hi;
    drop_pages(a, (size_t)(b - a));
}

/* Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K and F16 matrices get the KERN_X8 layout of the AVX2
 * kernels (about 2x the batched rate for the quantized types, 1.3x for F16) in one anonymous
 * buffer advised into 2 MiB pages (decode reads weights ~20% faster than from 4 KiB page-cache
 * pages). The file's pages of a packed tensor are dropped: resident memory stays at the
 * weights' size. A tied output head gets a packed copy of its own (it is most of a small
 * model's decode reads: Gemma 3 270M's is 73%); the embedding keeps the file's rows, whose
 * pages fault back in one row per token. Other types are used from the mapping as stored. */
static int pack_weights(model *m, char *err, size_t errlen) {
    size_t total = 0;
    const int tied_head = m->cfg.tied_output && m->shard.stage == m->shard.pp - 1;
    each_matrix(m, pack_size, &total);
    if (tied_head) pack_size(m, &m->output, &total);
    if (!total) return 0;
    const size_t huge = (size_t)2 << 20;
    size_t bytes = (total + huge - 1) / huge * huge;
    if (posix_memalign(&m->packed, huge, bytes) != 0) {
        m->packed = NULL;
        snprintf(err, errlen, "model: out of memory for %zu bytes of packed weights", total);
        return -1;
    }
    madvise(m->packed, bytes, MADV_HUGEPAGE);   /* advisory: fewer TLB misses */
    m->packed_bytes = total;
    size_t at = 0;
    each_matrix(m, pack_one, &at);
    if (tied_head) pack_one(m, &m->output, &at);   /* its source is no copy: only pages drop */
    return 0;
}

/* ---- the shard plan --------------------------------------------------------------------- */

int model_shard_plan(const model_cfg *c, const size_t *layer_bytes, size_t head_bytes, int tp,
                     int tp_rank, int pp, int stage, model_shard *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (tp < 1) tp = 1;
    if (pp < 1) pp = 1;
    if (c->n_heads % tp || c->dim % tp ||
        (c->n_kv_heads % tp && tp % c->n_kv_heads)) {
        snprintf(err, errlen,
                 "model: tensor parallel size %d must divide the %d attention heads and the "
                 "model dim %d, and divide or be a multiple of the %d KV heads",
                 tp, c->n_heads, c->dim, c->n_kv_heads);
        return -1;
    }
    if (c->ffn_dim % tp) {
        snprintf(err, errlen, "model: tensor parallel size %d must divide the FFN dim %d", tp,
                 c->ffn_dim);
        return -1;
    }
    if (pp > c->n_layers) {
        snprintf(err, errlen, "model: %d pipeline stages for %d layers: at most one stage per layer",
                 pp, c->n_layers);
        return -1;
    }
    out->tp = tp;
    out->tp_rank = tp_rank;
    out->pp = pp;
    out->stage = stage;
    int group = c->n_heads / c->n_kv_heads;
    out->n_heads = c->n_heads / tp;
    out->head0 = tp_rank * out->n_heads;
    out->kv_head0 = out->head0 / group;
    out->n_kv_heads = (out->head0 + out->n_heads - 1) / group - out->kv_head0 + 1;
    out->n_ffn = c->ffn_dim / tp;
    out->ffn0 = tp_rank * out->n_ffn;
    out->vocab_pad = (c->n_vocab + tp - 1) / tp;
    out->vocab0 = tp_rank * out->vocab_pad;
    if (out->vocab0 > c->n_vocab) out->vocab0 = c->n_vocab;
    out->n_vocab = c->n_vocab - out->vocab0 < out->vocab_pad ? c->n_vocab - out->vocab0
                                                              : out->vocab_pad;
    /* stages: contiguous layers balanced by bytes; the last stage also reads the output head */
    double total = (double)head_bytes;
    for (int l = 0; l < c->n_layers; l++) total += (double)layer_bytes[l];
    int l = 0;
    double acc = 0;
    for (int s = 0; s <= stage; s++) {
        int first = l;
        double target = total * (s + 1) / pp;
        /* leave at least one layer for each later stage */
        while (l < c->n_layers - (pp - 1 - s) &&
               (l == first || acc + (double)layer_bytes[l] / 2 <= target ||
                s == pp - 1)) {
            acc += (double)layer_bytes[l];
            l++;
        }
        if (s == stage) {
            out->layer0 = first;
            out->layer1 = l;
        }
    }
    return 0;
}

int model_shard_experts(const model_cfg *c, int ep, int ep_rank, model_shard *sh, char *err,
                        size_t errlen) {
    if (ep < 1) ep = 1;
    if (ep > 1 && (c->n_expert == 0 || ep > c->n_expert)) {
        snprintf(err, errlen, "model: expert parallel size %d needs an MoE model with at least "
                 "%d routed experts (this one has %d)", ep, ep, c->n_expert);
        return -1;
    }
    sh->ep = ep;
    sh->ep_rank = ep > 1 ? ep_rank : 0;
    sh->expert0 = (int)((int64_t)c->n_expert * sh->ep_rank / ep);   /* balanced by count */
    sh->n_expert = (int)((int64_t)c->n_expert * (sh->ep_rank + 1) / ep) - sh->expert0;
    return 0;
}

static void layer_bytes_of(const gguf_ctx *g, const model_cfg *c, size_t *lb, size_t *head) {
    for (int l = 0; l < c->n_layers; l++) {
        char prefix[32];
        int n = snprintf(prefix, sizeof prefix, "blk.%d.", l);
        lb[l] = 0;
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const gguf_tensor *t = gguf_tensor_at(g, i);
            if (t->name.len > (uint64_t)n && !memcmp(t->name.ptr, prefix, (size_t)n))
                lb[l] += t->nbytes;
        }
    }
    const gguf_tensor *o = gguf_find_tensor(g, "output.weight");
    if (!o) o = gguf_find_tensor(g, "token_embd.weight");
    *head = o ? o->nbytes : 0;
}

int model_read_cfg(const char *path, model_cfg *out, char *err, size_t errlen) {
    gguf_ctx *g = NULL;
    if (gguf_open(path, &g, err, errlen) != GGUF_OK) return -1;
    int rc = read_cfg(g, out, err, errlen);
    gguf_close(g);
    return rc;
}

/* ---- the model in its backend ------------------------------------------------------------ */

typedef struct {
    model *m;
    const char *bad;   /* first matrix whose type the backend cannot multiply by */
    int bad_type;
    int failed;        /* the weight slot failed (message in the backend) */
} weight_walk;

static void weight_check(model *m, kern_weight *w, void *ctx) {
    weight_walk *ww = ctx;
    if (!ww->bad && !m->be->i->supports(m->be, w->type)) {
        ww->bad = "a weight";
        ww->bad_type = w->type;
    }
}

static void weight_make_own(model *m, kern_weight *w, void *ctx) {
    weight_walk *ww = ctx;
    if (!ww->failed && m->be->i->weight(m->be, w)) ww->failed = 1;
}

enum { EACH_VECTOR_PER_LAYER = 12 };

/* the vector fields of every bound layer and of the model, with their lengths */
static int each_vector(model *m, const float ***ptrs, size_t *lens, int cap) {
    const model_shard *sh = &m->shard;
    const int C = m->cfg.dim, D = m->cfg.head_dim;
    int n = 0;
    ptrs[n] = &m->output_norm, lens[n++] = (size_t)C;
    if (m->rope_freqs) ptrs[n] = &m->rope_freqs, lens[n++] = (size_t)m->cfg.n_rot / 2;
    for (int l = sh->layer0; l < sh->layer1; l++) {
        model_layer *L = &m->layers[l];
        const float **f[] = { &L->attn_norm, &L->ffn_norm, &L->bq, &L->bk, &L->bv, &L->q_norm,
                              &L->k_norm, &L->post_attn_norm, &L->post_ffn_norm, &L->q_a_norm,
                              &L->kv_a_norm, &L->exp_bias };
        size_t len[] = { (size_t)C, (size_t)C, (size_t)sh->n_heads * D, (size_t)sh->n_kv_heads * D,
                         (size_t)sh->n_kv_heads * D, (size_t)D, (size_t)D, (size_t)C, (size_t)C,
                         (size_t)m->cfg.q_lora, (size_t)m->cfg.kv_lora, (size_t)m->cfg.n_expert };
        for (int i = 0; i < EACH_VECTOR_PER_LAYER; i++)
            if (*f[i] && n < cap) ptrs[n] = f[i], lens[n++] = len[i];
    }
    return n;
}

/* Checks that the backend has every weight type, then (device backends) makes the matrices
 * its own and uploads every norm/bias vector into one buffer. */
static int to_backend(model *m, char *err, size_t errlen) {
    backend *be = m->be;
    const backend_i *bi = be->i;
    const int mla = m->cfg.attn == ATTN_MLA, moe = m->cfg.n_expert > 0;
    const struct { int need, has; const char *name; } ops[] = {
        { m->cfg.ffn == FFN_GEGLU, bi->geglu != NULL, "geglu" },
        { m->cfg.emb_scale != 0.0f, bi->scale != NULL, "scale" },
        { mla, bi->mla_kv_write != NULL, "mla_kv_write" },
        { mla, bi->mla_attention != NULL, "mla_attention" },
        { moe, bi->moe_route != NULL, "moe_route" },
        { moe, bi->moe_experts != NULL, "moe_experts" },
        { moe, bi->sum_rows != NULL, "sum_rows" },
        { moe, bi->gather_rows != NULL, "gather_rows" },
    };
    const char *op = NULL;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0] && !op; i++)
        if (ops[i].need && !ops[i].has) op = ops[i].name;
    if (op) {
        snprintf(err, errlen, "model: backend %s has no %s op, which %s needs", be->i->name, op,
                 m->cfg.arch_name);
        return -1;
    }
    weight_walk ww = { m, NULL, 0, 0 };
    each_matrix(m, weight_check, &ww);
    if (!ww.bad && m->shard.stage == 0 && !be->i->supports(be, m->tok_embd.type))
        ww.bad = "token_embd", ww.bad_type = m->tok_embd.type;
    if (ww.bad) {
        const qt_traits *t = qt_get(ww.bad_type);
        snprintf(err, errlen, "model: backend %s cannot use %s of type %s", be->i->name, ww.bad,
                 t ? t->name : "?");
        return -1;
    }
    if (be->i->host_memory) return 0;
    /* device memory: weights first (the tied output head is the embedding: made own once) */
    if (be->i->weight) {
        each_matrix(m, weight_make_own, &ww);
        if (!ww.failed && m->shard.stage == 0 && be->i->weight(be, &m->tok_embd)) ww.failed = 1;
        if (ww.failed) {
            snprintf(err, errlen, "model: %s", backend_error(be));
            return -1;
        }
        if (m->cfg.tied_output && m->shard.stage == m->shard.pp - 1) {
            if (m->shard.stage != 0 && be->i->weight(be, &m->tok_embd)) {
                snprintf(err, errlen, "model: %s", backend_error(be));
                return -1;
            }
            m->output = m->tok_embd;
        }
    }
    int cap = 2 + EACH_VECTOR_PER_LAYER * m->cfg.n_layers;
    const float ***ptrs = malloc((size_t)cap * sizeof *ptrs);
    size_t *lens = malloc((size_t)cap * sizeof *lens), total = 0;
    if (!ptrs || !lens) {
        free(ptrs);
        free(lens);
        snprintf(err, errlen, "model: out of memory");
        return -1;
    }
    int n = each_vector(m, ptrs, lens, cap);
    for (int i = 0; i < n; i++) total += lens[i];
    float *dev = be->i->alloc(be, total * sizeof(float));
    int rc = dev ? 0 : -1;
    size_t at = 0;
    for (int i = 0; i < n && !rc; i++) {
        rc = be->i->upload(be, dev + at, *ptrs[i], lens[i] * sizeof(float));
        *ptrs[i] = dev + at;
        at += lens[i];
    }
    m->dev_vectors = dev;
    if (rc) snprintf(err, errlen, "model: %s vectors (%zu bytes): %s", be->i->name,
                     total * sizeof(float), dev ? backend_error(be) : "out of device memory");
    free(ptrs);
    free(lens);
    return rc;
}

/* floats needed to hold every vector tensor as f32 */
static size_t vector_floats(const gguf_ctx *g) {
    size_t n = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->n_dims == 1) n += (size_t)t->ne[0];
    }
    return n;
}

int model_load(const char *path, const model_opts *opts, model **out, char *err, size_t errlen) {
    *out = NULL;
    model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "model: out of memory");
        return -1;
    }
    if (gguf_open(path, &m->gguf, err, errlen) != GGUF_OK) goto fail;
    if (read_cfg(m->gguf, &m->cfg, err, errlen)) goto fail;
    /* Map the weights in base pages: with huge or large folios a rank touching the first row
     * of its slice would map the 2 MiB around it, much of it a neighbour's rows. */
    if (opts && opts->tp > 1) {
        long pg = sysconf(_SC_PAGESIZE);
        uintptr_t b = (uintptr_t)gguf_base(m->gguf) & ~(uintptr_t)(pg - 1);
        madvise((void *)b, gguf_file_size(m->gguf) + ((uintptr_t)gguf_base(m->gguf) - b),
                MADV_NOHUGEPAGE);
    }
    const gguf_tensor *te = gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!te || te->n_dims != 2 || te->ne[1] < 1 || te->ne[1] > (1 << 24)) {
        snprintf(err, errlen, "model: missing or malformed tensor 'token_embd.weight'");
        goto fail;
    }
    m->cfg.n_vocab = (int)te->ne[1];
    size_t *lb = malloc((size_t)m->cfg.n_layers * sizeof *lb), head = 0;
    if (!lb) {
        snprintf(err, errlen, "model: out of memory");
        goto fail;
    }
    layer_bytes_of(m->gguf, &m->cfg, lb, &head);
    int tp = opts && opts->tp > 1 ? opts->tp : 1, pp = opts && opts->pp > 1 ? opts->pp : 1;
    int prc = model_shard_plan(&m->cfg, lb, head, tp, tp > 1 ? opts->tp_rank : 0, pp,
                               pp > 1 ? opts->stage : 0, &m->shard, err, errlen);
    free(lb);
    int ep = opts && opts->ep > 1 ? opts->ep : 1;
    if (prc || model_shard_experts(&m->cfg, ep, ep > 1 ? opts->ep_rank : 0, &m->shard, err,
                                   errlen))
        goto fail;
    m->shard.ep_comm = ep > 1 ? opts->ep_comm : NULL;
    m->shard.ep_dev = ep > 1 && opts->ep_dev_comm ? opts->ep_dev_comm : m->shard.ep_comm;
    m->shard.tp_comm = tp > 1 ? opts->tp_comm : NULL;
    m->tp_allreduce = opts && opts->tp_allreduce;
    m->kv_type = opts ? opts->kv_type : QT_F32;
    if (m->kv_type != QT_F32 && m->kv_type != QT_F16 && m->kv_type != QT_BF16) {
        snprintf(err, errlen, "model: KV cache type %d is not f32, f16 or bf16", m->kv_type);
        goto fail;
    }
    backend_opts bo = { opts ? opts->backend : NULL, opts ? opts->n_threads : 0,
                        opts ? opts->device : -1 };
    if (!(m->be = backend_new(&bo, err, errlen))) goto fail;
    m->pack = !(opts && opts->no_pack) && m->be->i->host_memory;
    m->shard.pp_comm = pp > 1 ? opts->pp_comm : NULL;
    m->shard.tp_dev = tp > 1 && opts->tp_dev_comm ? opts->tp_dev_comm : m->shard.tp_comm;
    m->shard.pp_dev = pp > 1 && opts->pp_dev_comm ? opts->pp_dev_comm : m->shard.pp_comm;
    if (!m->be->i->host_memory && ((tp > 1 && !opts->tp_dev_comm) || (pp > 1 && !opts->pp_dev_comm) ||
                                   (ep > 1 && !opts->ep_dev_comm))) {
        snprintf(err, errlen, "model: backend %s across %d x %d x %d ranks needs device-memory "
                 "communicators (NCCL), and none were made", m->be->i->name, tp, ep, pp);
        goto fail;
    }
    arena ar = { 0 };
    ar.cap = vector_floats(m->gguf);
    if (ar.cap && !(ar.buf = malloc(ar.cap * sizeof(float)))) {
        snprintf(err, errlen, "model: out of memory for %zu norm weights", ar.cap);
        goto fail;
    }
    m->owned = ar.buf;
    if (bind_tensors(m, &ar, err, errlen)) goto fail;
    if (m->pack && pack_weights(m, err, errlen)) goto fail;
    if (tok_load(m->gguf, &m->tok, err, errlen)) goto fail;
    if (tok_n_vocab(m->tok) > m->cfg.n_vocab) {
        snprintf(err, errlen, "model: tokenizer has %d tokens but token_embd has %d rows",
                 tok_n_vocab(m->tok), m->cfg.n_vocab);
        goto fail;
    }
    if (to_backend(m, err, errlen)) goto fail;
    *out = m;
    return 0;
fail:
    model_free(m);
    return -1;
}

void model_free(model *m) {
    if (!m) return;
    if (m->be) {
        m->be->i->buf_free(m->be, m->dev_vectors);
        m->be->i->free(m->be);
    }
    tok_free(m->tok);
    free(m->layers);
    free(m->views);
    free(m->owned);
    for (int i = 0; i < m->n_copies; i++) free(m->copies[i]);
    free(m->copies);
    free(m->packed);
    gguf_close(m->gguf);
    free(m);
}
