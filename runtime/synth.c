/* runtime/synth.c — deterministic synthetic models (see synth.h for the shapes).
 *
 * Vocabulary: the 256 bytes in GPT-2's byte-to-unicode form (so any text tokenizes), two control
 * tokens <|bos|> and <|eos|>, then merges: first those a byte-pair-encoding trainer learns from a
 * short English text kept here, then seeded random merges of existing tokens until the shape's
 * vocabulary size is reached. Weights: seeded uniform noise with the variance of a 1/sqrt(fan_in)
 * initialisation, norms 1, quantized to the requested type. A tensor whose rows do not divide
 * into the type's blocks falls back, in the llama-table shapes, to Q8_0, then F32 (kept so that
 * their files stay byte-identical to those made before); in deepseek2 ones to llama.cpp's
 * fallback types (synth_fallback_type, as `sampan model quantize`), because DeepSeek's own row
 * lengths (1408, 10944, 128) miss 256 and a synthetic file should carry the types llama.cpp's
 * files of the real model have.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gguf.h"
#include "kern.h"
#include "synth.h"

typedef struct {
    const char *name;
    int dim, layers, heads, kv_heads, ffn, vocab, ctx;
    const char *arch;   /* NULL: llama */
    int head_dim;       /* gemma3: attention.key_length (not dim/heads) */
    int window, period; /* gemma3: attention.sliding_window and _pattern (0: every layer local) */
    int blk;            /* SY_* tensors beyond Llama's */
    const char *rope_type; /* rope.scaling.type, with rope.scaling.factor and (yarn)
                              rope.scaling.original_context_length; NULL: none */
    float rope_factor;
    int rope_orig;
} synth_shape;

enum { SY_QKN = 1,      /* attn_q_norm / attn_k_norm */
       SY_POST = 2,     /* post_attention_norm / post_ffw_norm */
       SY_TIED = 4 };   /* no output.weight: the head is token_embd */

#define GEMMA (SY_QKN | SY_POST | SY_TIED)
static const synth_shape shapes[] = {
    { "tiny", 64, 2, 4, 2, 128, 512, 256, NULL, 0, 0, 0, 0, NULL, 0, 0 },
    { "small", 256, 4, 8, 2, 768, 4096, 1024, NULL, 0, 0, 0, 0, NULL, 0, 0 },
    { "tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, 2048, NULL, 0, 0, 0, 0, NULL, 0, 0 },
    { "llama-7b", 4096, 32, 32, 32, 11008, 32000, 4096, NULL, 0, 0, 0, 0, NULL, 0, 0 },
    /* Gemma 3 in miniature: head dim 32 != 64/4, window 16, layers 1 and 3 global */
    { "tiny-gemma3", 64, 4, 4, 2, 128, 512, 256, "gemma3", 32, 16, 2, GEMMA, NULL, 0, 0 },
    /* every layer local (window 16): the scheduler drops blocks that leave the window */
    { "tiny-gemma3-swa", 64, 3, 4, 2, 128, 512, 256, "gemma3", 32, 16, 0, GEMMA, NULL, 0, 0 },
    /* linear RoPE scaling (factor 8), which Gemma 3 applies to its global layers only */
    { "tiny-gemma3-linear", 64, 4, 4, 2, 128, 512, 256, "gemma3", 32, 16, 2, GEMMA, "linear",
      8.0f, 0 },
    /* Qwen3 dense in miniature: head dim 32 != 64/4, q/k norms, an output head of its own */
    { "tiny-qwen3", 64, 2, 4, 2, 128, 512, 256, "qwen3", 32, 0, 0, SY_QKN, NULL, 0, 0 },
    { "tiny-qwen3-linear", 64, 2, 4, 2, 128, 512, 256, "qwen3", 32, 0, 0, SY_QKN, "linear",
      4.0f, 0 },
    /* YaRN over 64 original positions (ramp over the first pairs), tied head */
    { "tiny-qwen3-yarn", 64, 2, 4, 2, 128, 512, 256, "qwen3", 32, 0, 0, SY_QKN | SY_TIED, "yarn",
      4.0f, 64 },
};
#undef GEMMA

/* deepseek2 (DeepSeek-V2/V3): multi-head latent attention in the split form llama.cpp writes
 * (attn_k_b / attn_v_b per head), MoE blocks after n_dense dense ones. The numbers: synth.h. */
typedef struct {
    const char *name;
    int dim, layers, heads;
    int q_lora;                   /* 0: a plain attn_q (V2-Lite) */
    int kv_lora, qk_nope, rope, v_head;
    int n_dense, ffn;             /* leading dense blocks and their FFN */
    int experts, expert_ffn, used, shared;
    int groups, groups_used;      /* 0: no expert groups */
    int gating;                   /* expert_gating_func: 1 softmax, 2 sigmoid */
    int probs_b;                  /* exp_probs_b.bias (V3's selection bias) */
    int norm;                     /* expert_weights_norm */
    float scale;                  /* expert_weights_scale */
    int vocab, ctx;
    float yarn_factor;            /* 0: no rope scaling */
    int yarn_orig;
    float yarn_log_mul;
} synth_ds2_shape;

static const synth_ds2_shape ds2_shapes[] = {
    /* the shape of ../shared/models/tiny-deepseek-f32.gguf, with our vocabulary */
    { "tiny", 32, 3, 4, 24, 16, 16, 8, 16, 1, 64, 8, 16, 2, 1, 0, 0, 2, 1, 1, 2.5f, 512, 512,
      0.0f, 0, 0.0f },
    /* DeepSeek-V2-Lite's own numbers (its YaRN too: mscale_all_dim 0.707 x 0.1) */
    { "v2-lite", 2048, 27, 16, 0, 512, 128, 64, 128, 1, 10944, 64, 1408, 6, 2, 0, 0, 1, 0, 0,
      1.0f, 102400, 163840, 40.0f, 4096, 0.0707f },
    /* V3's structure at 2048 wide: 1.2 GB at Q4_K */
    { "v3-mini", 2048, 9, 16, 512, 256, 128, 64, 128, 3, 5632, 64, 768, 8, 1, 8, 4, 2, 1, 1,
      2.5f, 32000, 163840, 40.0f, 4096, 0.1f },
};

static const char corpus[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park "
    "with her friends. One day, she saw a big red ball under a tree. The sun was warm and the sky "
    "was blue. Her mother said that they would go home after lunch, so Lily ran to the ball and "
    "gave it to her little brother. The Hong Kong AI Supercomputing Centre in Cyberport runs "
    "large language models for government departments: it drafts, translates and summarises "
    "documents, and answers questions about the city. The model reads the text, then writes "
    "the next word, one token at a time, until the answer is complete. Numbers like 12345 and "
    "2048 appear in tables; code uses symbols such as <tag>, & and \"quotes\".";

/* the weight types of the traits table (kernels/cpu/traits.c), by their names */
static const struct { int id; const char *name; int base; } synth__mixes[] = {
    { SYNTH_Q4_K_M, "Q4_K_M", QT_Q4_K },
    { SYNTH_Q5_K_M, "Q5_K_M", QT_Q5_K },
};
#define SYNTH_N_MIXES ((int)(sizeof synth__mixes / sizeof synth__mixes[0]))

int synth_type_from_name(const char *name) {
    for (int t = 0; t < QT_COUNT; t++)
        if (qt_supported(t) && !strcasecmp(name, qt_get(t)->name)) return t;
    for (int i = 0; i < SYNTH_N_MIXES; i++)
        if (!strcasecmp(name, synth__mixes[i].name)) return synth__mixes[i].id;
    return -1;
}

const char *synth_type_name(int type) {
    for (int i = 0; i < SYNTH_N_MIXES; i++)
        if (type == synth__mixes[i].id) return synth__mixes[i].name;
    const qt_traits *t = type >= 0 && type < QT_COUNT ? qt_get(type) : NULL;
    return t ? t->name : "?";
}

void synth_type_names(char *buf, size_t n) {
    size_t used = 0;
    if (n) buf[0] = 0;
    for (int t = 0; t < QT_COUNT + SYNTH_N_MIXES && used < n; t++) {
        const char *name = t < QT_COUNT ? (qt_supported(t) ? qt_get(t)->name : NULL)
                                        : synth__mixes[t - QT_COUNT].name;
        if (!name) continue;
        int w = snprintf(buf + used, n - used, "%s%s", used ? ", " : "", name);
        if (w < 0) break;
        used += (size_t)w;
    }
}

/* llama.cpp's use_more_bits(i, n): the layers a K-quant mix gives Q6_K attn_v and ffn_down */
static int synth__more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

int synth_mix_tensor_type(int type, const char *name, int n_layers, int n_expert) {
    int base = -1;
    for (int i = 0; i < SYNTH_N_MIXES; i++)
        if (type == synth__mixes[i].id) base = synth__mixes[i].base;
    if (base < 0) return type;
    if (!strcmp(name, "output.weight")) return QT_Q6_K;
    int l = -1;
    if (sscanf(name, "blk.%d.", &l) != 1) l = -1;
    const int more = l >= 0 && synth__more_bits(l, n_layers);
    /* llama.cpp matches these by substring: ffn_down also names ffn_down_exps and _shexp */
    if (strstr(name, "attn_v.weight")) return n_expert == 8 ? QT_Q8_0 : more ? QT_Q6_K : base;
    if (strstr(name, "attn_k.weight") && n_expert == 8) return QT_Q8_0;
    if (strstr(name, "ffn_down") && more) return QT_Q6_K;
    if (strstr(name, "attn_output.weight") && n_expert == 8 && type == SYNTH_Q4_K_M) return QT_Q5_K;
    return base;
}

int synth_fallback_type(int type, int64_t row) {
    const qt_traits *t = qt_get(type);
    if (t && row % t->block_size == 0) return type;
    int to = QT_F16;
    switch (type) {
    case QT_Q4_K: to = QT_Q5_0; break;
    case QT_Q5_K: to = QT_Q5_1; break;
    case QT_Q6_K: to = QT_Q8_0; break;
    case QT_Q2_K: case QT_Q3_K: case QT_IQ4_XS: to = QT_IQ4_NL; break;
    default: break;
    }
    t = qt_get(to);
    return t && row % t->block_size == 0 ? to : QT_F16;
}

/* ---- vocabulary ------------------------------------------------------------------------ */

typedef struct {
    char **tok;      /* token strings (UTF-8, byte-to-unicode form) */
    int n, cap;
    char **merges;   /* "a b" */
    int n_merges;
    int *slot;       /* open-addressing set of token strings -> id */
    int n_slot;
} vocab;

static uint64_t hash_str(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int vocab_find(const vocab *v, const char *s) {
    size_t n = strlen(s);
    for (uint64_t h = hash_str(s, n) & (uint64_t)(v->n_slot - 1);; h = (h + 1) & (uint64_t)(v->n_slot - 1)) {
        int id = v->slot[h];
        if (id < 0) return -1;
        if (!strcmp(v->tok[id], s)) return id;
    }
}

static int vocab_add(vocab *v, char *s) {
    size_t n = strlen(s);
    uint64_t h = hash_str(s, n) & (uint64_t)(v->n_slot - 1);
    while (v->slot[h] >= 0) h = (h + 1) & (uint64_t)(v->n_slot - 1);
    v->slot[h] = v->n;
    v->tok[v->n] = s;
    return v->n++;
}

/* GPT-2's byte-to-unicode: printable bytes map to themselves, the rest to U+0100 upwards */
static void byte_token(int b, char out[4]) {
    static int map[256];
    static int ready;
    if (!ready) {
        int n = 0;
        for (int i = 0; i < 256; i++) {
            int printable = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174);
            map[i] = printable ? i : 256 + n++;
        }
        ready = 1;
    }
    int cp = map[b];
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

static char *str_cat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static char *merge_str(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    s[la] = ' ';
    memcpy(s + la + 1, b, lb + 1);
    return s;
}

static uint64_t rng_next(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void vocab_free(vocab *v) {
    for (int i = 0; i < v->n; i++) free(v->tok[i]);
    for (int i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tok);
    free(v->merges);
    free(v->slot);
}

/* Trains merges on the corpus (words split before spaces, as GPT-2's pre-tokenizer does for
 * plain text), then adds random merges up to n_vocab. */
static int vocab_build(vocab *v, int n_vocab, uint64_t seed) {
    memset(v, 0, sizeof *v);
    v->cap = n_vocab;
    v->n_slot = 1;
    while (v->n_slot < 2 * n_vocab) v->n_slot <<= 1;
    v->tok = calloc((size_t)n_vocab, sizeof *v->tok);
    v->merges = calloc((size_t)n_vocab, sizeof *v->merges);
    v->slot = malloc((size_t)v->n_slot * sizeof *v->slot);
    int n_sym = (int)sizeof corpus - 1;
    int *sym = malloc((size_t)n_sym * sizeof *sym);        /* corpus as token ids */
    int *word = malloc((size_t)n_sym * sizeof *word);      /* word index of each symbol */
    if (!v->tok || !v->merges || !v->slot || !sym || !word) goto oom;
    memset(v->slot, 0xff, (size_t)v->n_slot * sizeof *v->slot);
    for (int b = 0; b < 256; b++) {
        char t[4];
        byte_token(b, t);
        char *s = str_cat(t, "");
        if (!s) goto oom;
        vocab_add(v, s);
    }
    char *bos = str_cat("<|bos|>", ""), *eos = str_cat("<|eos|>", "");
    if (!bos || !eos) goto oom;
    vocab_add(v, bos);
    vocab_add(v, eos);
    int w = 0;
    for (int i = 0; i < n_sym; i++) {
        if (corpus[i] == ' ' || (i > 0 && (corpus[i] == ',' || corpus[i] == '.'))) w++;
        sym[i] = (uint8_t)corpus[i];
        word[i] = w;
        if (corpus[i] == ',' || corpus[i] == '.') w++;
    }
    /* learned merges: most frequent adjacent pair inside a word, ties to the first seen */
    while (v->n < n_vocab) {
        int best_a = -1, best_b = -1, best_n = 1;
        for (int i = 0; i + 1 < n_sym; i++) {
            if (word[i] != word[i + 1]) continue;
            int cnt = 0;
            for (int j = i; j + 1 < n_sym; j++)
                if (sym[j] == sym[i] && sym[j + 1] == sym[i + 1] && word[j] == word[j + 1]) cnt++;
            if (cnt > best_n) {
                best_n = cnt;
                best_a = sym[i];
                best_b = sym[i + 1];
            }
        }
        if (best_a < 0) break;
        char *s = str_cat(v->tok[best_a], v->tok[best_b]);
        char *mg = merge_str(v->tok[best_a], v->tok[best_b]);
        if (!s || !mg) goto oom;
        int id = vocab_add(v, s);
        v->merges[v->n_merges++] = mg;
        int k = 0;
        for (int i = 0; i < n_sym; i++) {
            if (i + 1 < n_sym && sym[i] == best_a && sym[i + 1] == best_b && word[i] == word[i + 1]) {
                word[k] = word[i];
                sym[k++] = id;
                i++;
            } else {
                word[k] = word[i];
                sym[k++] = sym[i];
            }
        }
        n_sym = k;
    }
    /* random merges of existing normal tokens up to the vocabulary size */
    uint64_t r = seed ^ 0x5eed;
    int tries = 0;
    while (v->n < n_vocab && tries < 100 * n_vocab) {
        tries++;
        int a = (int)(rng_next(&r) % (uint64_t)v->n), b = (int)(rng_next(&r) % (uint64_t)v->n);
        if (a == 256 || a == 257 || b == 256 || b == 257) continue;
        if (strlen(v->tok[a]) + strlen(v->tok[b]) > 24) continue;
        char *s = str_cat(v->tok[a], v->tok[b]);
        if (!s) goto oom;
        if (vocab_find(v, s) >= 0) {
            free(s);
            continue;
        }
        char *mg = merge_str(v->tok[a], v->tok[b]);
        if (!mg) {
            free(s);
            goto oom;
        }
        vocab_add(v, s);
        v->merges[v->n_merges++] = mg;
    }
    free(sym);
    free(word);
    return v->n == n_vocab ? 0 : -1;
oom:
    free(sym);
    free(word);
    return -1;
}

/* ---- weights ---------------------------------------------------------------------------- */

typedef struct {
    gguf_writer *w;
    int type;             /* a qt_type or a mix (SYNTH_Q4_K_M ...) */
    int n_layers;         /* L, for the mixes' per-layer rule */
    int n_expert;         /* routed experts (0: dense), for the mixes' 8-expert rules */
    int llama_fallback;   /* 1: llama.cpp's fallback types (deepseek2); 0: Q8_0, then F32 */
    uint64_t rng;
    void **bufs;
    int n_bufs, cap_bufs;
    char *err;
    size_t errlen;
} synth_ctx;

static void *keep(synth_ctx *c, void *p) {
    if (!p) return NULL;
    if (c->n_bufs == c->cap_bufs) {
        int cap = c->cap_bufs ? 2 * c->cap_bufs : 64;
        void **q = realloc(c->bufs, (size_t)cap * sizeof *q);
        if (!q) {
            free(p);
            return NULL;
        }
        c->bufs = q;
        c->cap_bufs = cap;
    }
    return c->bufs[c->n_bufs++] = p;
}

/* a tensor of uniform noise with std `sd`: ne[0] is the row length, the rows are ne[1..] (a 3-D
 * [K, N, E] tensor is E*N rows of K). Stored as the context's type (or its mix's type for
 * `name`); when rows do not divide into the type's blocks, the context's fallback (see the top
 * of this file); f32: always F32 (routers, biases). */
static int synth__add_noise(synth_ctx *c, const char *name, int n_dims, const int64_t *ne, float sd,
                     int f32) {
    const int64_t cols = ne[0];
    int64_t rows = 1;
    for (int d = 1; d < n_dims; d++) rows *= ne[d];
    int type = f32 ? QT_F32 : synth_mix_tensor_type(c->type, name, c->n_layers, c->n_expert);
    const qt_traits *tr = qt_get(type);
    if (c->llama_fallback) {
        type = synth_fallback_type(type, cols);
    } else {
        if (!tr || !tr->from_float || cols % tr->block_size) type = QT_Q8_0;
        tr = qt_get(type);
        if (f32 || !tr || !tr->from_float || cols % tr->block_size) type = QT_F32;
    }
    tr = qt_get(type);
    size_t rs = qt_row_size(type, cols);
    char *data = keep(c, malloc(rs * (size_t)rows));
    float *row = malloc((size_t)cols * sizeof *row);
    if (!data || !row) {
        free(row);
        snprintf(c->err, c->errlen, "synth: out of memory for '%s' (%lld rows of %lld)", name,
                 (long long)rows, (long long)cols);
        return -1;
    }
    float a = sd * 1.7320508f;   /* uniform [-a, a] has std a/sqrt(3) */
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < cols; i++)
            row[i] = a * (2.0f * (float)(rng_next(&c->rng) >> 40) * (1.0f / 16777216.0f) - 1.0f);
        if (type == QT_F32) memcpy(data + r * rs, row, rs);
        else tr->from_float(row, data + r * rs, cols);
    }
    free(row);
    gguf_writer_add_tensor(c->w, name, type, n_dims, ne, data, rs * (size_t)rows);
    return 0;
}

/* a (rows, cols) matrix (GGUF ne [cols, rows]) of the context's type */
static int add_matrix(synth_ctx *c, const char *name, int64_t rows, int64_t cols, float sd) {
    const int64_t ne[2] = { cols, rows };
    return synth__add_noise(c, name, 2, ne, sd, 0);
}

static int add_ones(synth_ctx *c, const char *name, int64_t n) {
    float *v = keep(c, malloc((size_t)n * sizeof *v));
    if (!v) {
        snprintf(c->err, c->errlen, "synth: out of memory");
        return -1;
    }
    for (int64_t i = 0; i < n; i++) v[i] = 1.0f;
    gguf_writer_add_tensor(c->w, name, QT_F32, 1, &n, v, (uint64_t)n * sizeof *v);
    return 0;
}

/* a norm weight vector of n F32 values in [0.5, 1.5): not all ones, so a test sees it applied */
static int add_vec(synth_ctx *c, const char *name, int64_t n) {
    float *v = keep(c, malloc((size_t)n * sizeof *v));
    if (!v) {
        snprintf(c->err, c->errlen, "synth: out of memory");
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        v[i] = 0.5f + (float)(rng_next(&c->rng) >> 40) * (1.0f / 16777216.0f);
    gguf_writer_add_tensor(c->w, name, QT_F32, 1, &n, v, (uint64_t)n * sizeof *v);
    return 0;
}

/* ---- the files ---------------------------------------------------------------------------- */

/* llama and the shapes of its table (gemma3, qwen3): metadata under `ar`. */
static void synth__llama_kv(synth_ctx *c, const synth_shape *sh, int L) {
    const char *ar = sh->arch ? sh->arch : "llama";
    const int D = sh->head_dim ? sh->head_dim : sh->dim / sh->heads;
    char key[96];
#define K(s) (snprintf(key, sizeof key, "%s.%s", ar, s), key)
    gguf_writer_set_u32(c->w, K("context_length"), (uint32_t)sh->ctx);
    gguf_writer_set_u32(c->w, K("embedding_length"), (uint32_t)sh->dim);
    gguf_writer_set_u32(c->w, K("block_count"), (uint32_t)L);
    gguf_writer_set_u32(c->w, K("feed_forward_length"), (uint32_t)sh->ffn);
    gguf_writer_set_u32(c->w, K("attention.head_count"), (uint32_t)sh->heads);
    gguf_writer_set_u32(c->w, K("attention.head_count_kv"), (uint32_t)sh->kv_heads);
    gguf_writer_set_u32(c->w, K("rope.dimension_count"), (uint32_t)D);
    gguf_writer_set_f32(c->w, K("rope.freq_base"), sh->arch ? 1000000.0f : 10000.0f);
    gguf_writer_set_f32(c->w, K("attention.layer_norm_rms_epsilon"), sh->arch ? 1e-6f : 1e-5f);
    if (sh->head_dim) {
        gguf_writer_set_u32(c->w, K("attention.key_length"), (uint32_t)D);
        gguf_writer_set_u32(c->w, K("attention.value_length"), (uint32_t)D);
    }
    if (sh->window) {
        gguf_writer_set_u32(c->w, K("attention.sliding_window"), (uint32_t)sh->window);
        gguf_writer_set_u32(c->w, K("attention.sliding_window_pattern"), (uint32_t)sh->period);
    }
    if (sh->rope_type) {
        gguf_writer_set_str(c->w, K("rope.scaling.type"), sh->rope_type);
        gguf_writer_set_f32(c->w, K("rope.scaling.factor"), sh->rope_factor);
    }
    if (sh->rope_orig)
        gguf_writer_set_u32(c->w, K("rope.scaling.original_context_length"), (uint32_t)sh->rope_orig);
#undef K
}

static int synth__llama_tensors(synth_ctx *c, const synth_shape *sh, int L) {
    const int C = sh->dim, F = sh->ffn;
    const int D = sh->head_dim ? sh->head_dim : sh->dim / sh->heads;
    const float sc = 1.0f / sqrtf((float)C), sf = 1.0f / sqrtf((float)F);
    if (add_matrix(c, "token_embd.weight", sh->vocab, C, 1.0f) ||
        add_ones(c, "output_norm.weight", C) ||
        (!(sh->blk & SY_TIED) && add_matrix(c, "output.weight", sh->vocab, C, sc)))
        return -1;
    for (int l = 0; l < L; l++) {
        char tn[64];
#define T(s) (snprintf(tn, sizeof tn, "blk.%d.%s", l, s), tn)
        if (add_ones(c, T("attn_norm.weight"), C) ||
            add_matrix(c, T("attn_q.weight"), (int64_t)sh->heads * D, C, sc) ||
            add_matrix(c, T("attn_k.weight"), (int64_t)sh->kv_heads * D, C, sc) ||
            add_matrix(c, T("attn_v.weight"), (int64_t)sh->kv_heads * D, C, sc) ||
            add_matrix(c, T("attn_output.weight"), C, (int64_t)sh->heads * D, sc) ||
            add_ones(c, T("ffn_norm.weight"), C) ||
            add_matrix(c, T("ffn_gate.weight"), F, C, sc) ||
            add_matrix(c, T("ffn_up.weight"), F, C, sc) ||
            add_matrix(c, T("ffn_down.weight"), C, F, sf))
            return -1;
        if ((sh->blk & SY_QKN) && (add_vec(c, T("attn_q_norm.weight"), D) ||
                                   add_vec(c, T("attn_k_norm.weight"), D)))
            return -1;
        if ((sh->blk & SY_POST) && (add_vec(c, T("post_attention_norm.weight"), C) ||
                                    add_vec(c, T("post_ffw_norm.weight"), C)))
            return -1;
#undef T
    }
    return 0;
}

/* deepseek2's metadata as llama.cpp's converter writes it for the split MLA form: key_length and
 * value_length are the compressed (MQA) head, kv_lora + rope and kv_lora; the _mla keys are the
 * decompressed one, qk_nope + rope and v_head. */
static void synth__ds2_kv(synth_ctx *c, const synth_ds2_shape *sh, int L) {
    char key[96];
#define K(s) (snprintf(key, sizeof key, "deepseek2.%s", s), key)
    gguf_writer_set_u32(c->w, K("context_length"), (uint32_t)sh->ctx);
    gguf_writer_set_u32(c->w, K("embedding_length"), (uint32_t)sh->dim);
    gguf_writer_set_u32(c->w, K("block_count"), (uint32_t)L);
    gguf_writer_set_u32(c->w, K("feed_forward_length"), (uint32_t)sh->ffn);
    gguf_writer_set_u32(c->w, K("attention.head_count"), (uint32_t)sh->heads);
    gguf_writer_set_u32(c->w, K("attention.head_count_kv"), 1);
    gguf_writer_set_f32(c->w, K("rope.freq_base"), 10000.0f);
    gguf_writer_set_f32(c->w, K("attention.layer_norm_rms_epsilon"), 1e-6f);
    gguf_writer_set_u32(c->w, K("leading_dense_block_count"),
                        (uint32_t)(sh->n_dense < L ? sh->n_dense : L));
    gguf_writer_set_u32(c->w, K("vocab_size"), (uint32_t)sh->vocab);
    if (sh->q_lora) gguf_writer_set_u32(c->w, K("attention.q_lora_rank"), (uint32_t)sh->q_lora);
    gguf_writer_set_u32(c->w, K("attention.kv_lora_rank"), (uint32_t)sh->kv_lora);
    gguf_writer_set_u32(c->w, K("attention.key_length"), (uint32_t)(sh->kv_lora + sh->rope));
    gguf_writer_set_u32(c->w, K("attention.value_length"), (uint32_t)sh->kv_lora);
    gguf_writer_set_u32(c->w, K("attention.key_length_mla"), (uint32_t)(sh->qk_nope + sh->rope));
    gguf_writer_set_u32(c->w, K("attention.value_length_mla"), (uint32_t)sh->v_head);
    gguf_writer_set_u32(c->w, K("expert_feed_forward_length"), (uint32_t)sh->expert_ffn);
    gguf_writer_set_u32(c->w, K("expert_count"), (uint32_t)sh->experts);
    gguf_writer_set_u32(c->w, K("expert_used_count"), (uint32_t)sh->used);
    gguf_writer_set_u32(c->w, K("expert_shared_count"), (uint32_t)sh->shared);
    if (sh->groups) {
        gguf_writer_set_u32(c->w, K("expert_group_count"), (uint32_t)sh->groups);
        gguf_writer_set_u32(c->w, K("expert_group_used_count"), (uint32_t)sh->groups_used);
    }
    gguf_writer_set_f32(c->w, K("expert_weights_scale"), sh->scale);
    gguf_writer_set_bool(c->w, K("expert_weights_norm"), sh->norm);
    gguf_writer_set_u32(c->w, K("expert_gating_func"), (uint32_t)sh->gating);
    gguf_writer_set_u32(c->w, K("rope.dimension_count"), (uint32_t)sh->rope);
    if (sh->yarn_factor > 0) {
        gguf_writer_set_str(c->w, K("rope.scaling.type"), "yarn");
        gguf_writer_set_f32(c->w, K("rope.scaling.factor"), sh->yarn_factor);
        gguf_writer_set_u32(c->w, K("rope.scaling.original_context_length"), (uint32_t)sh->yarn_orig);
        gguf_writer_set_f32(c->w, K("rope.scaling.yarn_log_multiplier"), sh->yarn_log_mul);
    }
#undef K
}

/* Each std is 1/sqrt(the fan-in of the product the tensor takes part in), so every projection
 * keeps unit-scale activations: attn_k_b and attn_v_b decompress the kv_lora latent (the
 * absorbed form multiplies by them the other way round, but the scores come out the same).
 * exp_probs_b is small (std 0.03) beside sigmoid scores in (0, 1): it moves the choice of
 * experts without deciding it. */
static int synth__ds2_tensors(synth_ctx *c, const synth_ds2_shape *sh, int L) {
    const int64_t C = sh->dim, H = sh->heads, QK = sh->qk_nope + sh->rope, E = sh->experts;
    const int64_t Fe = sh->expert_ffn, Fs = sh->expert_ffn * sh->shared;
#define SD(n) (1.0f / sqrtf((float)(n)))
    if (add_matrix(c, "token_embd.weight", sh->vocab, C, 1.0f)) return -1;
    for (int l = 0; l < L; l++) {
        char tn[64];
#define T(s) (snprintf(tn, sizeof tn, "blk.%d.%s", l, s), tn)
        const int64_t k_b[3] = { sh->qk_nope, sh->kv_lora, H };
        const int64_t v_b[3] = { sh->kv_lora, sh->v_head, H };
        if (add_ones(c, T("attn_norm.weight"), C)) return -1;
        if (sh->q_lora ? add_matrix(c, T("attn_q_a.weight"), sh->q_lora, C, SD(C)) ||
                             add_vec(c, T("attn_q_a_norm.weight"), sh->q_lora) ||
                             add_matrix(c, T("attn_q_b.weight"), H * QK, sh->q_lora, SD(sh->q_lora))
                       : add_matrix(c, T("attn_q.weight"), H * QK, C, SD(C)))
            return -1;
        if (add_matrix(c, T("attn_kv_a_mqa.weight"), sh->kv_lora + sh->rope, C, SD(C)) ||
            add_vec(c, T("attn_kv_a_norm.weight"), sh->kv_lora) ||
            synth__add_noise(c, T("attn_k_b.weight"), 3, k_b, SD(sh->kv_lora), 0) ||
            synth__add_noise(c, T("attn_v_b.weight"), 3, v_b, SD(sh->kv_lora), 0) ||
            add_matrix(c, T("attn_output.weight"), C, H * sh->v_head, SD(H * sh->v_head)) ||
            add_ones(c, T("ffn_norm.weight"), C))
            return -1;
        if (l < sh->n_dense) {
            if (add_matrix(c, T("ffn_gate.weight"), sh->ffn, C, SD(C)) ||
                add_matrix(c, T("ffn_up.weight"), sh->ffn, C, SD(C)) ||
                add_matrix(c, T("ffn_down.weight"), C, sh->ffn, SD(sh->ffn)))
                return -1;
            continue;
        }
        const int64_t up[3] = { C, Fe, E }, down[3] = { Fe, C, E }, router[2] = { C, E };
        if (synth__add_noise(c, T("ffn_gate_inp.weight"), 2, router, SD(C), 1) ||
            (sh->probs_b && synth__add_noise(c, T("exp_probs_b.bias"), 1, &E, 0.03f, 1)) ||
            synth__add_noise(c, T("ffn_gate_exps.weight"), 3, up, SD(C), 0) ||
            synth__add_noise(c, T("ffn_up_exps.weight"), 3, up, SD(C), 0) ||
            synth__add_noise(c, T("ffn_down_exps.weight"), 3, down, SD(Fe), 0) ||
            add_matrix(c, T("ffn_gate_shexp.weight"), Fs, C, SD(C)) ||
            add_matrix(c, T("ffn_up_shexp.weight"), Fs, C, SD(C)) ||
            add_matrix(c, T("ffn_down_shexp.weight"), C, Fs, SD(Fs)))
            return -1;
#undef T
    }
    if (add_ones(c, "output_norm.weight", C) || add_matrix(c, "output.weight", sh->vocab, C, SD(C)))
        return -1;
#undef SD
    return 0;
}

static void synth__tokenizer_kv(synth_ctx *c, const vocab *v, const int32_t *types) {
    gguf_writer_set_str(c->w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(c->w, "tokenizer.ggml.pre", "gpt-2");
    gguf_writer_set_arr_str(c->w, "tokenizer.ggml.tokens", (const char *const *)v->tok, (uint64_t)v->n);
    gguf_writer_set_arr(c->w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)v->n);
    gguf_writer_set_arr_str(c->w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                            (uint64_t)v->n_merges);
    gguf_writer_set_u32(c->w, "tokenizer.ggml.bos_token_id", 256);
    gguf_writer_set_u32(c->w, "tokenizer.ggml.eos_token_id", 257);
    gguf_writer_set_bool(c->w, "tokenizer.ggml.add_bos_token", 1);
}

/* The entry of a shape table named `shape` (each entry's first member is its name); NULL, with
 * the table's names ("a, b, c") in names, when there is none. */
static const void *synth__find(const void *table, size_t count, size_t stride, const char *shape,
                               char *names, size_t n) {
    names[0] = 0;
    for (size_t i = 0; i < count; i++) {
        const char *entry = (const char *)table + i * stride, *name = *(const char *const *)entry;
        if (!strcmp(shape, name)) return entry;
        size_t used = strlen(names);
        snprintf(names + used, n - used, "%s%s", i ? ", " : "", name);
    }
    return NULL;
}

int synth_model(const char *path, const char *shape, int type, int layers, uint64_t seed,
                char *err, size_t errlen) {
    return synth_model_arch(path, NULL, shape, type, layers, seed, err, errlen);
}

int synth_model_arch(const char *path, const char *arch, const char *shape, int type, int layers,
                     uint64_t seed, char *err, size_t errlen) {
    const synth_shape *sh = NULL;
    const synth_ds2_shape *ds = NULL;
    char names[256];
    if (arch && !strcmp(arch, "deepseek2")) {
        ds = synth__find(ds2_shapes, sizeof ds2_shapes / sizeof ds2_shapes[0], sizeof ds2_shapes[0],
                         shape, names, sizeof names);
        if (!ds) {
            snprintf(err, errlen, "synth: unknown deepseek2 shape '%s' (%s)", shape, names);
            return -1;
        }
    } else {
        sh = synth__find(shapes, sizeof shapes / sizeof shapes[0], sizeof shapes[0], shape, names,
                         sizeof names);
        if (!sh) {
            snprintf(err, errlen, "synth: unknown shape '%s' (%s)", shape, names);
            return -1;
        }
        const char *own = sh->arch ? sh->arch : "llama";
        if (arch && strcmp(arch, own)) {
            snprintf(err, errlen, "synth: shape '%s' is a %s shape, not %s (architectures: llama, "
                     "gemma3, qwen3 by shape name; deepseek2)", shape, own, arch);
            return -1;
        }
    }
    const int base = synth_mix_tensor_type(type, "", 1, 0);   /* a mix's main type */
    const qt_traits *tt = base >= 0 && base < QT_COUNT ? qt_get(base) : NULL;
    if (!tt || (base != QT_F32 && !tt->from_float) || base == QT_Q8_K) {
        snprintf(err, errlen, "synth: unsupported weight type %d", type);
        return -1;
    }
    const int L = layers > 0 ? layers : sh ? sh->layers : ds->layers;
    const int n_vocab = sh ? sh->vocab : ds->vocab;
    vocab v;
    if (vocab_build(&v, n_vocab, seed)) {
        vocab_free(&v);
        snprintf(err, errlen, "synth: could not build a %d-token vocabulary", n_vocab);
        return -1;
    }
    synth_ctx c = { gguf_writer_new(), type, L, ds ? ds->experts : 0, ds != NULL,
                    seed * 0x2545F4914F6CDD1Dull + 1, NULL, 0, 0, err, errlen };
    int rc = -1;
    int32_t *tt_arr = keep(&c, malloc((size_t)v.n * sizeof *tt_arr));
    if (!c.w || !tt_arr) {
        snprintf(err, errlen, "synth: out of memory");
        goto out;
    }
    for (int i = 0; i < v.n; i++) tt_arr[i] = (i == 256 || i == 257) ? 3 : 1;
    char name[64];
    snprintf(name, sizeof name, ds ? "sampan-synth-deepseek2-%s" : "sampan-synth-%s",
             sh ? sh->name : ds->name);
    gguf_writer_set_str(c.w, "general.architecture",
                        sh ? (sh->arch ? sh->arch : "llama") : "deepseek2");
    gguf_writer_set_str(c.w, "general.name", name);
    gguf_writer_set_u32(c.w, "general.alignment", 32);
    if (type >= SYNTH_MIX_BASE) gguf_writer_set_u32(c.w, "general.file_type", (uint32_t)(type - SYNTH_MIX_BASE));
    if (sh) synth__llama_kv(&c, sh, L);
    else synth__ds2_kv(&c, ds, L);
    synth__tokenizer_kv(&c, &v, tt_arr);
    if (sh ? synth__llama_tensors(&c, sh, L) : synth__ds2_tensors(&c, ds, L)) goto out;
    rc = gguf_writer_write(c.w, path, err, errlen) == GGUF_OK ? 0 : -1;
out:
    gguf_writer_free(c.w);
    for (int i = 0; i < c.n_bufs; i++) free(c.bufs[i]);
    free(c.bufs);
    vocab_free(&v);
    return rc;
}
