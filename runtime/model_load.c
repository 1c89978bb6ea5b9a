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
} arch_desc;

static const arch_desc archs[] = {
    { "llama", ARCH_LLAMA, 0, 0, 1e-5f, FFN_SWIGLU, 0, 0, 0, 0 },
    { "qwen2", ARCH_QWEN2, 1, 1, 1e-6f, FFN_SWIGLU, 0, 0, 0, 0 },
    { "gemma3", ARCH_GEMMA3, 0, 1, 1e-6f, FFN_GEGLU, 1, 6, 1, 1 },
    { "qwen3", ARCH_QWEN3, 0, 1, 1e-6f, FFN_SWIGLU, 0, 0, 1, 0 },
};

/* architectures known by name and refused, with what they lack here */
static const struct { const char *name, *why; } archs_refused[] = {
    { "qwen3moe", "mixture-of-experts FFN" },
};

/* model dimensions a tensor shape is written in */
enum { D_1 = 0, D_C, D_Q, D_KV, D_F, D_V, D_HD };

enum { T_MATRIX = 0, T_VECTOR = 1 };
enum { F_REQ = 0, F_OPT = 1, F_BIAS = 2, /* required iff the arch has QKV bias */
       F_QKN = 3,   /* required iff the arch has q/k norms, else absent */
       F_POST = 4 }; /* required iff the arch has post norms, else absent */

/* how a tensor is cut for tensor parallelism */
enum { S_NONE = 0,  /* replicated (norms) */
       S_Q,         /* rows (matrices) or elements (biases) of this rank's query heads */
       S_KV,        /* ... of this rank's KV heads */
       S_FFN,       /* ... of this rank's FFN columns */
       S_MIX_Q,     /* attention output: columns of the query heads, or rows (GATHER) */
       S_MIX_FFN }; /* FFN down: columns of the FFN slice, or rows (GATHER) */

typedef struct {
    const char *suffix;   /* "attn_q.weight" after "blk.N." */
    int kind;             /* T_MATRIX: a kern_weight; T_VECTOR: const float * */
    size_t field;         /* offsetof into model_layer */
    int rows, cols;       /* matrices: (rows, cols) = GGUF ne[1], ne[0]; vectors: cols only */
    int flags;
    int split;            /* S_* */
} tensor_spec;

#define LF(f) offsetof(model_layer, f)
static const tensor_spec layer_tensors[] = {
    { "attn_norm.weight",   T_VECTOR, LF(attn_norm), D_1,  D_C,  F_REQ,  S_NONE },
    { "attn_q.weight",      T_MATRIX, LF(wq),        D_Q,  D_C,  F_REQ,  S_Q },
    { "attn_k.weight",      T_MATRIX, LF(wk),        D_KV, D_C,  F_REQ,  S_KV },
    { "attn_v.weight",      T_MATRIX, LF(wv),        D_KV, D_C,  F_REQ,  S_KV },
    { "attn_q.bias",        T_VECTOR, LF(bq),        D_1,  D_Q,  F_BIAS, S_Q },
    { "attn_k.bias",        T_VECTOR, LF(bk),        D_1,  D_KV, F_BIAS, S_KV },
    { "attn_v.bias",        T_VECTOR, LF(bv),        D_1,  D_KV, F_BIAS, S_KV },
    { "attn_output.weight", T_MATRIX, LF(wo),        D_C,  D_Q,  F_REQ,  S_MIX_Q },
    { "ffn_norm.weight",    T_VECTOR, LF(ffn_norm),  D_1,  D_C,  F_REQ,  S_NONE },
    { "ffn_gate.weight",    T_MATRIX, LF(w_gate),    D_F,  D_C,  F_REQ,  S_FFN },
    { "ffn_up.weight",      T_MATRIX, LF(w_up),      D_F,  D_C,  F_REQ,  S_FFN },
    { "ffn_down.weight",    T_MATRIX, LF(w_down),    D_C,  D_F,  F_REQ,  S_MIX_FFN },
    { "attn_q_norm.weight", T_VECTOR, LF(q_norm),    D_1,  D_HD, F_QKN,  S_NONE },
    { "attn_k_norm.weight", T_VECTOR, LF(k_norm),    D_1,  D_HD, F_QKN,  S_NONE },
    { "post_attention_norm.weight", T_VECTOR, LF(post_attn_norm), D_1, D_C, F_POST, S_NONE },
    { "post_ffw_norm.weight", T_VECTOR, LF(post_ffn_norm), D_1, D_C, F_POST, S_NONE },
};
#undef LF

static int64_t dim_of(const model_cfg *c, int d) {
    switch (d) {
    case D_C: return c->dim;
    case D_Q: return (int64_t)c->n_heads * c->head_dim;
    case D_KV: return (int64_t)c->n_kv_heads * c->head_dim;
    case D_F: return c->ffn_dim;
    case D_V: return c->n_vocab;
    case D_HD: return c->head_dim;
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

static int read_cfg(const gguf_ctx *g, model_cfg *c, char *err, size_t errlen) {
    gguf_str an;
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
        heads % kv) {
        snprintf(err, errlen,
                 "model: bad hyper-parameters: dim %u, layers %u, heads %u, kv heads %u, ffn %u, "
                 "context %u (heads must divide by kv heads)",
                 dim, layers, heads, kv, ffn, ctx);
        return -1;
    }
    /* head dim: attention.key_length (Gemma 3: 256, Qwen3: 128, not C/H), else C/H */
    uint32_t hd = 0, vl = 0;
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
    if (hd == 0 && dim % heads) {
        snprintf(err, errlen, "model: embedding_length %u does not divide by %u heads and "
                 "attention.key_length is absent", dim, heads);
        return -1;
    }
    if (hd == 0) hd = dim / heads;
    if (hd > 4096 || hd % 2 || (vl && vl != hd)) {
        snprintf(err, errlen, "model: attention.key_length %u / value_length %u unsupported "
                 "(even, <= 4096, equal)", hd, vl);
        return -1;
    }
    c->dim = (int)dim;
    c->n_layers = (int)layers;
    c->n_heads = (int)heads;
    c->n_kv_heads = (int)kv;
    c->head_dim = (int)hd;
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
    return read_rope_scaling(g, a, c, err, errlen);
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
        int64_t c0 = ts->split == S_MIX_Q ? (int64_t)sh->head0 * D : sh->ffn0;
        int64_t n = ts->split == S_MIX_Q ? (int64_t)sh->n_heads * D : sh->n_ffn;
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
    if (!m->layers) {
        snprintf(err, errlen, "model: out of memory for %d layers", c->n_layers);
        return -1;
    }
    for (int l = sh->layer0; l < sh->layer1; l++) {
        model_layer *L = &m->layers[l];
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
            om_rope_yarn_corr(c->n_rot, c->rope_ctx_orig, L->rope_base, c->yarn_beta_fast,
                              c->yarn_beta_slow, &L->rope_scaling.corr_lo,
                              &L->rope_scaling.corr_hi);
        }
        for (size_t i = 0; i < sizeof layer_tensors / sizeof layer_tensors[0]; i++) {
            const tensor_spec *ts = &layer_tensors[i];
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s", l, ts->suffix);
            int required = ts->flags == F_REQ || (ts->flags == F_BIAS && c->qkv_bias) ||
                           (ts->flags == F_QKN && c->qk_norm) ||
                           (ts->flags == F_POST && c->post_norms);
            const gguf_tensor *t = find(g, name, required, err, errlen);
            if (!t) {
                if (required) return -1;
                continue;
            }
            char *base = (char *)L;
            if (ts->kind == T_MATRIX) {
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
            kern_weight *w = (kern_weight *)((char *)&m->layers[l] + ts->field);
            if (ts->kind == T_MATRIX && w->data) fn(m, w, ctx);
        }
    if (!m->cfg.tied_output && sh->stage == sh->pp - 1) fn(m, &m->output, ctx);
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
                              &L->k_norm, &L->post_attn_norm, &L->post_ffn_norm };
        size_t len[] = { (size_t)C, (size_t)C, (size_t)sh->n_heads * D, (size_t)sh->n_kv_heads * D,
                         (size_t)sh->n_kv_heads * D, (size_t)D, (size_t)D, (size_t)C, (size_t)C };
        for (int i = 0; i < 9; i++)
            if (*f[i] && n < cap) ptrs[n] = f[i], lens[n++] = len[i];
    }
    return n;
}

/* Checks that the backend has every weight type, then (device backends) makes the matrices
 * its own and uploads every norm/bias vector into one buffer. */
static int to_backend(model *m, char *err, size_t errlen) {
    backend *be = m->be;
    const char *op = m->cfg.ffn == FFN_GEGLU && !be->i->geglu ? "geglu"
                     : m->cfg.emb_scale != 0.0f && !be->i->scale ? "scale" : NULL;
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
    int cap = 2 + 9 * m->cfg.n_layers;
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
    if (prc) goto fail;
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
    if (!m->be->i->host_memory && ((tp > 1 && !opts->tp_dev_comm) || (pp > 1 && !opts->pp_dev_comm))) {
        snprintf(err, errlen, "model: backend %s across %d x %d ranks needs device-memory "
                 "communicators (NCCL), and none were made", m->be->i->name, tp, pp);
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
    free(m->owned);
    for (int i = 0; i < m->n_copies; i++) free(m->copies[i]);
    free(m->copies);
    free(m->packed);
    gguf_close(m->gguf);
    free(m);
}
