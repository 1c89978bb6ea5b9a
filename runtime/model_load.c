/* runtime/model_load.c — from a GGUF file to a model: architectures as data.
 *
 * An architecture is a row of `archs` (its name and options) plus the tensor table `tensors`
 * (which tensors a block has, their shapes in model dimensions, which are optional). Loading
 * reads the hyper-parameters from `{arch}.*` metadata, then binds every tensor of the table to a
 * view into the mapping, checking type and shape. A new architecture of the same family is a new
 * row, not a new loop.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gguf.h"
#include "model.h"
#include "tok.h"

typedef struct {
    const char *name;
    model_arch arch;
    int qkv_bias;
    int rope_neox;
    float default_eps;
} arch_desc;

static const arch_desc archs[] = {
    { "llama", ARCH_LLAMA, 0, 0, 1e-5f },
    { "qwen2", ARCH_QWEN2, 1, 1, 1e-6f },
};

/* model dimensions a tensor shape is written in */
enum { D_1 = 0, D_C, D_Q, D_KV, D_F, D_V };

enum { T_MATRIX = 0, T_VECTOR = 1 };
enum { F_REQ = 0, F_OPT = 1, F_BIAS = 2 /* required iff the arch has QKV bias */ };

typedef struct {
    const char *suffix;   /* "attn_q.weight" after "blk.N." */
    int kind;             /* T_MATRIX: a kern_weight; T_VECTOR: const float * */
    size_t field;         /* offsetof into model_layer */
    int rows, cols;       /* matrices: (rows, cols) = GGUF ne[1], ne[0]; vectors: cols only */
    int flags;
} tensor_spec;

#define LF(f) offsetof(model_layer, f)
static const tensor_spec layer_tensors[] = {
    { "attn_norm.weight",   T_VECTOR, LF(attn_norm), D_1,  D_C,  F_REQ },
    { "attn_q.weight",      T_MATRIX, LF(wq),        D_Q,  D_C,  F_REQ },
    { "attn_k.weight",      T_MATRIX, LF(wk),        D_KV, D_C,  F_REQ },
    { "attn_v.weight",      T_MATRIX, LF(wv),        D_KV, D_C,  F_REQ },
    { "attn_q.bias",        T_VECTOR, LF(bq),        D_1,  D_Q,  F_BIAS },
    { "attn_k.bias",        T_VECTOR, LF(bk),        D_1,  D_KV, F_BIAS },
    { "attn_v.bias",        T_VECTOR, LF(bv),        D_1,  D_KV, F_BIAS },
    { "attn_output.weight", T_MATRIX, LF(wo),        D_C,  D_Q,  F_REQ },
    { "ffn_norm.weight",    T_VECTOR, LF(ffn_norm),  D_1,  D_C,  F_REQ },
    { "ffn_gate.weight",    T_MATRIX, LF(w_gate),    D_F,  D_C,  F_REQ },
    { "ffn_up.weight",      T_MATRIX, LF(w_up),      D_F,  D_C,  F_REQ },
    { "ffn_down.weight",    T_MATRIX, LF(w_down),    D_C,  D_F,  F_REQ },
};
#undef LF

static int64_t dim_of(const model_cfg *c, int d) {
    switch (d) {
    case D_C: return c->dim;
    case D_Q: return (int64_t)c->n_heads * c->head_dim;
    case D_KV: return (int64_t)c->n_kv_heads * c->head_dim;
    case D_F: return c->ffn_dim;
    case D_V: return c->n_vocab;
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

static int read_cfg(const gguf_ctx *g, model_cfg *c, char *err, size_t errlen) {
    gguf_str an;
    if (gguf_get_str(g, "general.architecture", &an, err, errlen) != GGUF_OK) {
        snprintf(err, errlen, "model: missing metadata key 'general.architecture'");
        return -1;
    }
    const arch_desc *ad = NULL;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (gguf_str_eq(an, archs[i].name)) ad = &archs[i];
    if (!ad) {
        snprintf(err, errlen, "model: unsupported architecture '%.*s' (supported: llama, qwen2)",
                 (int)(an.len > 64 ? 64 : an.len), an.ptr);
        return -1;
    }
    c->arch = ad->arch;
    c->arch_name = ad->name;
    c->qkv_bias = ad->qkv_bias;
    c->rope_neox = ad->rope_neox;
    uint32_t dim = 0, layers = 0, heads = 0, kv = 0, ffn = 0, ctx = 2048, rot = 0;
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
        dim % heads || heads % kv) {
        snprintf(err, errlen,
                 "model: bad hyper-parameters: dim %u, layers %u, heads %u, kv heads %u, ffn %u, "
                 "context %u (dim must divide by heads, heads by kv heads)",
                 dim, layers, heads, kv, ffn, ctx);
        return -1;
    }
    c->dim = (int)dim;
    c->n_layers = (int)layers;
    c->n_heads = (int)heads;
    c->n_kv_heads = (int)kv;
    c->head_dim = (int)(dim / heads);
    c->ffn_dim = (int)ffn;
    c->n_ctx_train = (int)(ctx > (1u << 24) ? (1u << 24) : ctx);
    rot = (uint32_t)c->head_dim;
    if (get_u32(g, a, "rope.dimension_count", &rot, 0, err, errlen)) return -1;
    if (rot == 0 || rot > (uint32_t)c->head_dim || rot % 2) {
        snprintf(err, errlen, "model: rope.dimension_count %u must be even and <= head dim %d",
                 rot, c->head_dim);
        return -1;
    }
    c->n_rot = (int)rot;
    c->rope_base = 10000.0f;
    c->norm_eps = ad->default_eps;
    if (get_f32(g, a, "rope.freq_base", &c->rope_base, err, errlen) ||
        get_f32(g, a, "attention.layer_norm_rms_epsilon", &c->norm_eps, err, errlen))
        return -1;
    return 0;
}

static const gguf_tensor *find(const gguf_ctx *g, const char *name, int required, char *err,
                               size_t errlen) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t && required) snprintf(err, errlen, "model: missing tensor '%s'", name);
    return t;
}

static int bind_tensors(model *m, arena *ar, char *err, size_t errlen) {
    const gguf_ctx *g = m->gguf;
    model_cfg *c = &m->cfg;
    const gguf_tensor *te = find(g, "token_embd.weight", 1, err, errlen);
    if (!te) return -1;
    if (te->n_dims != 2 || te->ne[0] != c->dim || te->ne[1] < 1 || te->ne[1] > (1 << 24)) {
        snprintf(err, errlen, "model: token_embd.weight has shape [%lld, %lld], expected [%d, V]",
                 (long long)te->ne[0], (long long)te->ne[1], c->dim);
        return -1;
    }
    c->n_vocab = (int)te->ne[1];
    if (load_matrix(te, &m->tok_embd, c->n_vocab, c->dim, err, errlen)) return -1;
    m->weight_bytes = te->nbytes;
    const gguf_tensor *on = find(g, "output_norm.weight", 1, err, errlen);
    if (!on || !(m->output_norm = load_vector(on, ar, c->dim, err, errlen))) return -1;
    const gguf_tensor *out = find(g, "output.weight", 0, err, errlen);
    c->tied_output = out == NULL;
    if (out) {
        if (load_matrix(out, &m->output, c->n_vocab, c->dim, err, errlen)) return -1;
        m->weight_bytes += out->nbytes;
    } else {
        m->output = m->tok_embd;
    }
    const gguf_tensor *rf = find(g, "rope_freqs.weight", 0, err, errlen);
    if (rf && !(m->rope_freqs = load_vector(rf, ar, c->n_rot / 2, err, errlen))) return -1;

    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        snprintf(err, errlen, "model: out of memory for %d layers", c->n_layers);
        return -1;
    }
    for (int l = 0; l < c->n_layers; l++) {
        for (size_t i = 0; i < sizeof layer_tensors / sizeof layer_tensors[0]; i++) {
            const tensor_spec *ts = &layer_tensors[i];
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s", l, ts->suffix);
            int required = ts->flags == F_REQ || (ts->flags == F_BIAS && c->qkv_bias);
            const gguf_tensor *t = find(g, name, required, err, errlen);
            if (!t) {
                if (required) return -1;
                continue;
            }
            char *base = (char *)&m->layers[l];
            if (ts->kind == T_MATRIX) {
                if (load_matrix(t, (kern_weight *)(base + ts->field), dim_of(c, ts->rows),
                                dim_of(c, ts->cols), err, errlen))
                    return -1;
            } else {
                const float *v = load_vector(t, ar, dim_of(c, ts->cols), err, errlen);
                if (!v) return -1;
                memcpy(base + ts->field, &v, sizeof v);
            }
            m->weight_bytes += t->nbytes;
        }
    }
    return 0;
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
    arena ar = { 0 };
    ar.cap = vector_floats(m->gguf);
    if (ar.cap && !(ar.buf = malloc(ar.cap * sizeof(float)))) {
        snprintf(err, errlen, "model: out of memory for %zu norm weights", ar.cap);
        goto fail;
    }
    m->owned = ar.buf;
    if (bind_tensors(m, &ar, err, errlen)) goto fail;
    if (tok_load(m->gguf, &m->tok, err, errlen)) goto fail;
    if (tok_n_vocab(m->tok) > m->cfg.n_vocab) {
        snprintf(err, errlen, "model: tokenizer has %d tokens but token_embd has %d rows",
                 tok_n_vocab(m->tok), m->cfg.n_vocab);
        goto fail;
    }
    m->be = backend_cpu_new(opts ? opts->n_threads : 0, err, errlen);
    if (!m->be) goto fail;
    *out = m;
    return 0;
fail:
    model_free(m);
    return -1;
}

void model_free(model *m) {
    if (!m) return;
    if (m->be) m->be->i->free(m->be);
    tok_free(m->tok);
    free(m->layers);
    free(m->owned);
    gguf_close(m->gguf);
    free(m);
}
