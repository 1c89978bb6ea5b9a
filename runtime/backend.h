/* runtime/backend.h — the compute backend seam: a backend owns the forward pass's memory and
 * runs every op of it.
 *
 * A backend is a vtable, after ggml's ggml_backend_i: a version field, required slots and
 * optional ones (marked [optional]). runtime/model.c calls only these slots and the
 * communicator; it never tests which device it runs on. The CPU backend (runtime/backend_cpu.c)
 * is first class; the CUDA backend (kernels/cuda/backend_cuda.cu) fills the same table.
 * backend_new (runtime/backend.c, the registry) picks one by name and checks that every
 * required slot is there: a missing one is an error naming the op, never a silent fallback.
 *
 * Memory. Buffers are device pointers (`void *`, `float *`): host memory for the CPU backend,
 * device memory for CUDA. The model's weights (kern_weight) are made the backend's own by
 * `weight` at load; norm and bias vectors are uploaded into one buffer. Activations, the KV
 * cache and scratch live in buffers from `alloc`. Nothing but `upload`, `download` and
 * `logits` moves bytes between host and device; a device backend synchronises only there.
 *
 * Ops. Every op works on T positions (rows) at once and returns 0, or -1 with the message in
 * backend_error(b). Shapes use the legend of runtime/model.h. Per-position inputs (token ids,
 * positions, block tables) are given once per forward pass by `batch` and hold until the next
 * `batch`. Results of every op for a position depend only on that position's inputs (and its
 * sequence's KV cache), never on the batch, so logits are batch-invariant on every backend.
 *
 * Life cycle: backend_new -> weight / alloc / upload -> (batch -> ops ...)* -> buf_free ->
 * i->free(b).
 */
#ifndef SAMPAN_BACKEND_H
#define SAMPAN_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "kern.h"
#include "pool.h"

#define BACKEND_VERSION 4   /* 3: backend_rope.scaling; 4: the MLA and MoE slots */

typedef struct backend backend;

/* The positions of one forward pass, on the host; the backend copies what it needs. */
typedef struct {
    int n;                         /* T */
    const int32_t *tokens;         /* (T) token ids */
    const int32_t *pos;            /* (T) position of each token in its sequence */
    const int32_t *const *tables;  /* (T) block table of each position's sequence: entry i is
                                      the KV block of positions [i*bs, (i+1)*bs) */
    int max_blocks;                /* entries any position needs: max over t of pos/bs + 1 */
    int block_size;                /* bs: positions per KV block */
} backend_batch;

/* A paged KV cache: K and V each (L, n_blocks, Hkv, block_size, D) of `type`; a block holds
 * each KV head's block_size vectors together. */
typedef struct {
    void *k, *v;                   /* device buffers */
    int type;                      /* QT_F32, QT_F16 or QT_BF16 */
    int n_layers, n_blocks, n_kv_heads, block_size, head_dim;
} backend_kv;

/* RoPE of one tensor: pairs (2i, 2i+1), or (i, i + n_rot/2) with neox, for i < n_rot/2.
 * Fields after freq_factors were added later: an initialiser that stops before them (zeros)
 * means no scaling. */
typedef struct {
    int n_rot;
    float base;
    int neox;
    const float *freq_factors;     /* (n_rot/2) device, or NULL */
    kern_rope_scaling scaling;     /* linear / YaRN (kern.h); all zero: none */
} backend_rope;

/* Grouped-query attention of this rank's H query heads: local head h reads KV head
 * (head0 + h) / group - kv_head0 of the rank's cache (group = query heads per KV head of the
 * whole model); position t attends to positions 0..pos[t] of its own sequence. */
typedef struct {
    int n_heads;                   /* H (this rank's) */
    int head0;                     /* first global query head of this rank */
    int group;                     /* n_heads / n_kv_heads of the whole model */
    int kv_head0;                  /* first global KV head in this rank's cache */
    float scale;                   /* applied to q . k */
    int window;                    /* W > 0: position p attends to p-W+1..p only (sliding window,
                                      and reads no block-table entry before that); 0: 0..p */
} backend_attn;

/* Multi-head latent attention (DeepSeek-V2/V3) of this rank's H heads. Its cache is a
 * backend_kv of one KV head whose head_dim is R + Dr (the RMS-normed latent, then the RoPE
 * key shared by all heads) and no V: values are the latent, the first R of each row. */
typedef struct {
    int n_heads;                   /* H (this rank's) */
    int rank;                      /* R: kv_lora_rank */
    int nope_dims, rope_dims;      /* Dn, Dr: a query head is Dn + Dr (no-RoPE part first) */
    int v_dim;                     /* Dv */
    float scale;                   /* applied to q . k (1/sqrt(Dn + Dr), YaRN's mscale^2) */
    const kern_weight *k_b;        /* (H) per head (R, Dn): q_nope into the latent */
    const kern_weight *v_b;        /* (H) per head (Dv, R): the latent output to values */
    backend_rope rope;             /* of the Dr RoPE dims, pairs (2i, 2i+1) */
} backend_mla;

/* DeepSeekMoE routing of T positions. */
typedef struct {
    int n_expert;                  /* E */
    int k;                         /* experts per position */
    int n_group, n_group_used;     /* group-limited routing; n_group <= 1: none */
    int gating;                    /* model_gating: 1 softmax, 2 sigmoid */
    int norm;                      /* the k weights normalised to sum 1 */
    float scale;                   /* then times this */
    const float *bias;             /* (E) device: exp_probs_b, added for selection only; or NULL */
} backend_route;

/* One step of a rank's routed experts, planned on the host (runtime/model_moe.c): expert e
 * (local index) serves the pairs [off[e], off[e+1]); pair i reads row row[i] of x and writes
 * w[i] * FFN_e(x_row) to row dst[i] of y. A step's tokens are grouped by expert, so each
 * expert's weights are read once per step. */
typedef struct {
    int n_expert;                  /* El: this rank's experts */
    const int32_t *off;            /* (El + 1) host */
    const int32_t *row, *dst;      /* (pairs) host */
    const float *w;                /* (pairs) host */
    const kern_weight *gate, *up, *down;  /* (El): (Fe, C), (Fe, C), (C, Fe) */
} backend_moe;

/* The output head for the positions that want logits. */
typedef struct {
    const int32_t *rows;           /* (n_out) host: which of the T positions, in batch order */
    int n_out;
    const float *norm;             /* (C) device: final RMSNorm weight */
    float eps;
    const kern_weight *w;          /* (n_vocab, C) this rank's rows of the output matrix */
    int vocab_pad;                 /* each output row is written padded to this with -inf */
} backend_head;

typedef struct {
    int version;                   /* BACKEND_VERSION */
    const char *name;
    int host_memory;               /* 1: buffers are host memory (weights are used in place,
                                      and may be repacked by kern_pack at load) */
    void (*free)(backend *b);

    /* ---- memory ---------------------------------------------------------------------- */
    void *(*alloc)(backend *b, size_t bytes);          /* zero-filled; NULL on failure */
    void (*buf_free)(backend *b, void *p);             /* NULL is a no-op */
    int (*upload)(backend *b, void *dst, const void *src, size_t bytes);
    int (*download)(backend *b, void *dst, const void *src, size_t bytes);
    /* [optional] makes w the backend's own (device copy, converted layout); w->data then
     * points into backend memory freed by i->free. Unset: w is used as it is. */
    int (*weight)(backend *b, kern_weight *w);
    /* 1 if the backend can multiply by (and embed from) weights of this type */
    int (*supports)(const backend *b, int type);

    /* ---- per-pass input ---------------------------------------------------------------- */
    int (*batch)(backend *b, const backend_batch *bb);

    /* ---- ops (all pointers device buffers unless said otherwise) ---------------------- */
    /* x (T,C) = rows tokens[t] - row0 of emb, zeros where that row is outside [0, emb->n_rows) */
    int (*embed)(backend *b, float *x, const kern_weight *emb, int row0, int C);
    /* out (T,C) = x / rms(x) * w; out may alias x */
    int (*rmsnorm)(backend *b, float *out, const float *x, const float *w, int T, int C, float eps);
    /* x (T,N) += bias (N) */
    int (*add_bias)(backend *b, float *x, const float *bias, int T, int N);
    /* x (T, H, D) rotated in place at each position's pos */
    int (*rope)(backend *b, float *x, int T, int H, int D, const backend_rope *r);
    /* k, v (T, Hkv*D) written to layer l of the cache at each position's slot */
    int (*kv_write)(backend *b, const backend_kv *kv, int l, const float *k, const float *v, int T);
    /* out (T, H*D) = attention of q (T, H*D) over layer l of the cache */
    int (*attention)(backend *b, const backend_kv *kv, int l, float *out, const float *q, int T,
                     const backend_attn *a);
    /* gate (n) = silu(gate) * up */
    int (*swiglu)(backend *b, float *gate, const float *up, size_t n);
    /* x (n) += y (n) */
    int (*add)(backend *b, float *x, const float *y, size_t n);
    /* out (T,N) = x (T,K) . W^T, batch-invariant per kern_matmul */
    int (*matmul)(backend *b, float *out, const kern_weight *w, const float *x, int T);
    /* out[i] = x . w[i]^T for i < n (n <= 3): the same values as n matmul calls, which a backend
     * may run as one job over a shared input (Q/K/V, gate/up) */
    int (*matmul_n)(backend *b, int n, float *const *out, const kern_weight *const *w,
                    const float *x, int T);
    /* tensor-parallel combine: out (T, parts*n) from in (parts, T, n), as all-gathered */
    int (*interleave)(backend *b, float *out, const float *in, int parts, int T, int n);
    /* logits (n_out, vocab_pad), HOST memory = W . rmsnorm(x[rows]) for the wanted rows of
     * x (T,C), padded with -inf; scratch: (n_out, C) device floats */
    int (*logits)(backend *b, float *logits, const float *x, int C, float *scratch,
                  const backend_head *h);

    /* ---- host threads ------------------------------------------------------------------ */
    int (*n_threads)(const backend *b);                /* [optional] host threads it uses */
    /* [optional] run fn(arg, ith, nth) on every one of those threads (benchmark probes) */
    void (*parallel)(backend *b, pool_fn fn, void *arg);

    /* ---- ops some architectures need ([optional]: a model that needs a missing one is
     *      refused at load, naming it) ------------------------------------------------------ */
    /* [optional] gate (n) = gelu(gate) * up (GeGLU FFN, Gemma), om_gelu_f16 per element */
    int (*geglu)(backend *b, float *gate, const float *up, size_t n);
    /* [optional] x (n) *= s (Gemma's embedding scale) */
    int (*scale)(backend *b, float *x, float s, size_t n);
    /* [optional] MLA cache write: kva (T, R + Dr) is the latent then the RoPE key of each
     * position; the latent is RMS-normed by norm (R), the key rotated (a->rope), and the R + Dr
     * values written to layer l of kv */
    int (*mla_kv_write)(backend *b, const backend_kv *kv, int l, const float *kva,
                        const float *norm, float eps, int T, const backend_mla *a);
    /* [optional] out (T, H*Dv) = MLA of q (T, H*(Dn+Dr)) over layer l, absorbed: each head's
     * RoPE part rotated in place in q, its q_nope taken into the latent by k_b (qlat (T, H,
     * R + Dr) scratch), all heads attending over the one latent head (olat (T, H, R) scratch),
     * then v_b per head */
    int (*mla_attention)(backend *b, const backend_kv *kv, int l, float *out, float *q,
                         float *qlat, float *olat, int T, const backend_mla *a);
    /* [optional] MoE routing: from router logits (T, E) (device), each position's k experts in
     * ascending id order, ids (T, k) and weights (T, k) in HOST memory */
    int (*moe_route)(backend *b, int32_t *ids, float *w, const float *logits, int T,
                     const backend_route *r);
    /* [optional] the routed experts' pairs of backend_moe: y rows (C) from x rows */
    int (*moe_experts)(backend *b, float *y, const float *x, int C, const backend_moe *m);
    /* [optional] out (n, C) = the k rows y[i*k .. i*k + k) summed in that order, for i < n */
    int (*sum_rows)(backend *b, float *out, const float *y, int n, int k, int C);
    /* [optional] out (n, C): row i = x[rows[i]] (rows: host) */
    int (*gather_rows)(backend *b, float *out, const float *x, const int32_t *rows, int n, int C);
} backend_i;

struct backend {
    const backend_i *i;
    void *ctx;
    char err[256];                 /* the last op's error */
};

static inline const char *backend_error(const backend *b) { return b->err; }

typedef struct {
    const char *name;              /* "cpu", "cuda" or "auto" (cuda when a device is visible) */
    int n_threads;                 /* host threads; <= 0: the CPUs of this process's mask */
    int device;                    /* device ordinal (CUDA); < 0: the first visible */
} backend_opts;

/* The registry: a backend by name; checks the version and every required slot. */
backend *backend_new(const backend_opts *o, char *err, size_t errlen);
/* Adds a backend by name beside cpu and cuda (a test's or an out-of-tree one); 0, or -1 when
 * the table is full or the name is taken. Not thread-safe: register before loading models. */
typedef backend *(*backend_ctor)(const backend_opts *o, char *err, size_t errlen);
int backend_register(const char *name, backend_ctor ctor);
/* 0 if a table is usable (this version, every required slot), else -1 naming what is not */
int backend_check(const backend_i *i, char *err, size_t errlen);
/* 1 if a backend of this name is compiled in and has a device here (cpu: always) */
int backend_available(const char *name);

/* The backends; use backend_new. */
backend *backend_cpu_new(int n_threads, char *err, size_t errlen);
backend *backend_cuda_new(int n_threads, int device, char *err, size_t errlen);
/* CUDA devices visible to this process (0 where the backend is not built or no driver) */
int backend_cuda_devices(void);

#endif
