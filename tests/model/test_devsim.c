/* tests/model/test_devsim.c — the forward pass's device path, checked without a device.
 *
 * "devsim" is a test backend that says its buffers are not host memory (host_memory = 0), so
 * model_load takes the path a GPU backend takes (no kern_pack; every matrix through the
 * `weight` slot, every norm/bias vector uploaded into one backend buffer) and model.c's
 * buffers all come from `alloc`. Its memory is host memory underneath, and every op first
 * checks that each pointer it is given lies inside memory the backend handed out (alloc or a
 * weight copy), except the ones the seam says are host (the logits output, the batch): a
 * forward pass that hands a device op a host pointer (a norm weight left in the file
 * mapping, an activation in a host array) fails with the op's and the argument's name. Then
 * it runs the CPU backend's op on the same memory, so the logits must be bit-identical to
 * the CPU backend's with the same unpacked weights.
 *
 * Checks, per model of ../shared/models (stories260K, tiny-llama-f32, tiny-qwen2-f32 with QKV
 * biases, small-llama-q4_k_m, tiny-deepseek-f32: MLA's latent cache and the MoE slots, whose
 * routing results and expert plan are host memory) and KV type (f32, f16): a prompt prefilled in chunks of 7, then
 * 5 decode steps, logits of every step memcmp-equal between "devsim" and "cpu" (SAMPAN_PACK
 * off); the same for the synthetic tiny-gemma3 and tiny-qwen3-yarn (RoPE scaling); and that
 * the check itself fails when an op is given a host pointer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "kern.h"
#include "model.h"
#include "synth.h"

static int n_pass, n_fail;

static void check(int ok, const char *what) {
    if (ok) n_pass++;
    else n_fail++;
    printf("%s: %s\n", ok ? "ok" : "FAIL", what);
}

/* ---- the backend ------------------------------------------------------------------------- */

typedef struct {
    backend *cpu;              /* does the arithmetic */
    struct { const char *p; size_t n; } reg[4096];   /* device memory handed out */
    int n_reg;
} ds_ctx;

static ds_ctx *ds(backend *b) { return b->ctx; }

static int ds__in(backend *b, const void *p, size_t bytes) {
    const ds_ctx *c = ds(b);
    for (int i = 0; i < c->n_reg; i++)
        if ((const char *)p >= c->reg[i].p && (const char *)p + bytes <= c->reg[i].p + c->reg[i].n)
            return 1;
    return 0;
}

/* each device argument of an op must be device memory of the claimed size */
#define DEV(op, ptr, bytes)                                                                   \
    do {                                                                                      \
        if (!ds__in(b, (ptr), (bytes))) {                                                     \
            snprintf(b->err, sizeof b->err, "devsim: %s: '%s' (%zu bytes) is not device memory", \
                     op, #ptr, (size_t)(bytes));                                              \
            return -1;                                                                        \
        }                                                                                     \
    } while (0)
#define F(n) ((size_t)(n) * sizeof(float))
/* the CPU backend's op on the same memory; its error becomes ours */
#define CPU(call)                                                                             \
    do {                                                                                      \
        backend *in = ds(b)->cpu;                                                             \
        if (in->i->call) {                                                                    \
            snprintf(b->err, sizeof b->err, "%s", backend_error(in));                         \
            return -1;                                                                        \
        }                                                                                     \
        return 0;                                                                             \
    } while (0)

static void *ds__track(backend *b, void *p, size_t n) {
    ds_ctx *c = ds(b);
    if (!p || c->n_reg == (int)(sizeof c->reg / sizeof c->reg[0])) {
        free(p);
        return NULL;
    }
    c->reg[c->n_reg].p = p;
    c->reg[c->n_reg++].n = n;
    return p;
}

static void *ds__alloc(backend *b, size_t bytes) { return ds__track(b, calloc(1, bytes ? bytes : 1), bytes); }

static void ds__buf_free(backend *b, void *p) {
    ds_ctx *c = ds(b);
    if (!p) return;
    for (int i = 0; i < c->n_reg; i++)
        if (c->reg[i].p == p) {
            c->reg[i] = c->reg[--c->n_reg];
            free(p);
            return;
        }
}

static void ds__free(backend *b) {
    ds_ctx *c = ds(b);
    for (int i = 0; i < c->n_reg; i++) free((void *)c->reg[i].p);
    c->cpu->i->free(c->cpu);
    free(c);
    free(b);
}

static int ds__upload(backend *b, void *dst, const void *src, size_t n) {
    DEV("upload", dst, n);
    memcpy(dst, src, n);
    return 0;
}

static int ds__download(backend *b, void *dst, const void *src, size_t n) {
    DEV("download", src, n);
    memcpy(dst, src, n);
    return 0;
}

static size_t ds__wbytes(const kern_weight *w) { return w->row_stride * (size_t)w->n_rows; }

/* a compact copy of the rows, as a device backend uploads them */
static int ds__weight(backend *b, kern_weight *w) {
    if (w->layout != KERN_ROWS) {
        snprintf(b->err, sizeof b->err, "devsim: weight: a packed weight reached a device backend");
        return -1;
    }
    if (ds__in(b, w->data, ds__wbytes(w))) return 0;   /* already ours (a shared tensor) */
    size_t row = qt_row_size(w->type, w->n_cols);
    char *p = ds__alloc(b, row * (size_t)w->n_rows);
    if (!p) return -1;
    for (int64_t r = 0; r < w->n_rows; r++)
        memcpy(p + (size_t)r * row, (const char *)w->data + (size_t)r * w->row_stride, row);
    w->data = p;
    w->row_stride = row;
    return 0;
}

static int ds__supports(const backend *b, int type) {
    const backend *in = ((const ds_ctx *)b->ctx)->cpu;
    return in->i->supports(in, type);
}
static int ds__batch(backend *b, const backend_batch *bb) { CPU(batch(in, bb)); }
static int ds__embed(backend *b, float *x, const kern_weight *emb, int row0, int C) {
    DEV("embed", x, F(C));
    DEV("embed", emb->data, ds__wbytes(emb));
    CPU(embed(in, x, emb, row0, C));
}
static int ds__rmsnorm(backend *b, float *out, const float *x, const float *w, int T, int C, float eps) {
    DEV("rmsnorm", out, F(T) * C);
    DEV("rmsnorm", x, F(T) * C);
    DEV("rmsnorm", w, F(C));
    CPU(rmsnorm(in, out, x, w, T, C, eps));
}
static int ds__add_bias(backend *b, float *x, const float *bias, int T, int N) {
    DEV("add_bias", x, F(T) * N);
    DEV("add_bias", bias, F(N));
    CPU(add_bias(in, x, bias, T, N));
}
static int ds__rope(backend *b, float *x, int T, int H, int D, const backend_rope *r) {
    DEV("rope", x, F(T) * H * D);
    if (r->freq_factors) DEV("rope", r->freq_factors, F(r->n_rot / 2));
    CPU(rope(in, x, T, H, D, r));
}
static int ds__kv_write(backend *b, const backend_kv *kv, int l, const float *k, const float *v, int T) {
    DEV("kv_write", kv->k, 1);
    DEV("kv_write", kv->v, 1);
    DEV("kv_write", k, F(T) * kv->n_kv_heads * kv->head_dim);
    DEV("kv_write", v, F(T) * kv->n_kv_heads * kv->head_dim);
    CPU(kv_write(in, kv, l, k, v, T));
}
static int ds__attention(backend *b, const backend_kv *kv, int l, float *out, const float *q, int T,
                         const backend_attn *a) {
    DEV("attention", out, F(T) * a->n_heads * kv->head_dim);
    DEV("attention", q, F(T) * a->n_heads * kv->head_dim);
    DEV("attention", kv->k, 1);
    CPU(attention(in, kv, l, out, q, T, a));
}
static int ds__swiglu(backend *b, float *gate, const float *up, size_t n) {
    DEV("swiglu", gate, F(n));
    DEV("swiglu", up, F(n));
    CPU(swiglu(in, gate, up, n));
}
static int ds__geglu(backend *b, float *gate, const float *up, size_t n) {
    DEV("geglu", gate, F(n));
    DEV("geglu", up, F(n));
    CPU(geglu(in, gate, up, n));
}
static int ds__scale(backend *b, float *x, float s, size_t n) {
    DEV("scale", x, F(n));
    CPU(scale(in, x, s, n));
}
static int ds__add(backend *b, float *x, const float *y, size_t n) {
    DEV("add", x, F(n));
    DEV("add", y, F(n));
    CPU(add(in, x, y, n));
}
static int ds__matmul_n(backend *b, int n, float *const *out, const kern_weight *const *w,
                        const float *x, int T) {
    for (int i = 0; i < n; i++) {
        DEV("matmul", out[i], F(T) * w[i]->n_rows);
        DEV("matmul", w[i]->data, ds__wbytes(w[i]));
    }
    DEV("matmul", x, F(T) * w[0]->n_cols);
    CPU(matmul_n(in, n, out, w, x, T));
}
static int ds__matmul(backend *b, float *out, const kern_weight *w, const float *x, int T) {
    return ds__matmul_n(b, 1, &out, &w, x, T);
}
static int ds__interleave(backend *b, float *out, const float *in_, int parts, int T, int n) {
    DEV("interleave", out, F(parts) * T * n);
    DEV("interleave", in_, F(parts) * T * n);
    CPU(interleave(in, out, in_, parts, T, n));
}
static int ds__logits(backend *b, float *logits, const float *x, int C, float *scratch,
                      const backend_head *h) {
    if (ds__in(b, logits, 1)) {
        snprintf(b->err, sizeof b->err, "devsim: logits: the output must be host memory");
        return -1;
    }
    DEV("logits", scratch, F(h->n_out) * C);
    DEV("logits", h->norm, F(C));
    DEV("logits", h->w->data, ds__wbytes(h->w));
    DEV("logits", x, F(1) * C);
    CPU(logits(in, logits, x, C, scratch, h));
}

/* the seam's host arguments must not be device memory */
#define HOST(op, ptr)                                                                         \
    do {                                                                                      \
        if (ds__in(b, (ptr), 1)) {                                                            \
            snprintf(b->err, sizeof b->err, "devsim: %s: '%s' must be host memory", op, #ptr); \
            return -1;                                                                        \
        }                                                                                     \
    } while (0)
static int ds__mla_kv_write(backend *b, const backend_kv *kv, int l, const float *kva,
                            const float *norm, float eps, int T, const backend_mla *a) {
    DEV("mla_kv_write", kv->k, 1);
    DEV("mla_kv_write", kva, F(T) * (a->rank + a->rope_dims));
    DEV("mla_kv_write", norm, F(a->rank));
    CPU(mla_kv_write(in, kv, l, kva, norm, eps, T, a));
}
static int ds__mla_attention(backend *b, const backend_kv *kv, int l, float *out, float *q,
                             float *qlat, float *olat, int T, const backend_mla *a) {
    const int H = a->n_heads;
    DEV("mla_attention", kv->k, 1);
    DEV("mla_attention", out, F(T) * H * a->v_dim);
    DEV("mla_attention", q, F(T) * H * (a->nope_dims + a->rope_dims));
    DEV("mla_attention", qlat, F(T) * H * (a->rank + a->rope_dims));
    DEV("mla_attention", olat, F(T) * H * a->rank);
    for (int h = 0; h < H; h++) {
        DEV("mla_attention", a->k_b[h].data, ds__wbytes(&a->k_b[h]));
        DEV("mla_attention", a->v_b[h].data, ds__wbytes(&a->v_b[h]));
    }
    CPU(mla_attention(in, kv, l, out, q, qlat, olat, T, a));
}
static int ds__moe_route(backend *b, int32_t *ids, float *w, const float *logits, int T,
                         const backend_route *r) {
    HOST("moe_route", ids);
    HOST("moe_route", w);
    DEV("moe_route", logits, F(T) * r->n_expert);
    if (r->bias) DEV("moe_route", r->bias, F(r->n_expert));
    CPU(moe_route(in, ids, w, logits, T, r));
}
static int ds__moe_experts(backend *b, float *y, const float *x, int C, const backend_moe *m) {
    HOST("moe_experts", m->off);
    for (int e = 0; e < m->n_expert; e++)
        for (int i = m->off[e]; i < m->off[e + 1]; i++) {
            DEV("moe_experts", y + (size_t)m->dst[i] * C, F(C));
            DEV("moe_experts", x + (size_t)m->row[i] * C, F(C));
            DEV("moe_experts", m->gate[e].data, ds__wbytes(&m->gate[e]));
            DEV("moe_experts", m->up[e].data, ds__wbytes(&m->up[e]));
            DEV("moe_experts", m->down[e].data, ds__wbytes(&m->down[e]));
        }
    CPU(moe_experts(in, y, x, C, m));
}
static int ds__sum_rows(backend *b, float *out, const float *y, int n, int k, int C) {
    DEV("sum_rows", out, F(n) * C);
    DEV("sum_rows", y, F(n) * k * C);
    CPU(sum_rows(in, out, y, n, k, C));
}
static int ds__gather_rows(backend *b, float *out, const float *x, const int32_t *rows, int n, int C) {
    HOST("gather_rows", rows);
    DEV("gather_rows", out, F(n) * C);
    for (int i = 0; i < n; i++) DEV("gather_rows", x + (size_t)rows[i] * C, F(C));
    CPU(gather_rows(in, out, x, rows, n, C));
}

static const backend_i ds_iface = {
    /* .version     = */ BACKEND_VERSION,
    /* .name        = */ "devsim",
    /* .host_memory = */ 0,
    /* .free        = */ ds__free,
    /* .alloc       = */ ds__alloc,
    /* .buf_free    = */ ds__buf_free,
    /* .upload      = */ ds__upload,
    /* .download    = */ ds__download,
    /* .weight      = */ ds__weight,
    /* .supports    = */ ds__supports,
    /* .batch       = */ ds__batch,
    /* .embed       = */ ds__embed,
    /* .rmsnorm     = */ ds__rmsnorm,
    /* .add_bias    = */ ds__add_bias,
    /* .rope        = */ ds__rope,
    /* .kv_write    = */ ds__kv_write,
    /* .attention   = */ ds__attention,
    /* .swiglu      = */ ds__swiglu,
    /* .add         = */ ds__add,
    /* .matmul      = */ ds__matmul,
    /* .matmul_n    = */ ds__matmul_n,
    /* .interleave  = */ ds__interleave,
    /* .logits      = */ ds__logits,
    /* .n_threads   = */ NULL,
    /* .parallel    = */ NULL,
    /* .geglu       = */ ds__geglu,
    /* .scale       = */ ds__scale,
    /* .mla_kv_write = */ ds__mla_kv_write,
    /* .mla_attention = */ ds__mla_attention,
    /* .moe_route   = */ ds__moe_route,
    /* .moe_experts = */ ds__moe_experts,
    /* .sum_rows    = */ ds__sum_rows,
    /* .gather_rows = */ ds__gather_rows,
};

static backend *ds_new(const backend_opts *o, char *err, size_t errlen) {
    backend *b = calloc(1, sizeof *b);
    ds_ctx *c = calloc(1, sizeof *c);
    if (!b || !c || !(c->cpu = backend_cpu_new(o ? o->n_threads : 0, err, errlen))) {
        free(b);
        free(c);
        return NULL;
    }
    b->i = &ds_iface;
    b->ctx = c;
    return b;
}

/* ---- the comparison ---------------------------------------------------------------------- */

/* prefill P tokens in chunks of 7 then 5 decode steps; every step's logits of the last
 * position appended to out (6 + P/7 rows of V at most) */
static int drive(model *m, int kv_type, float *out, int *rows, char *err, size_t errlen) {
    enum { P = 19, DEC = 5, BS = 16 };
    int n_ctx = P + DEC + 1;
    int n_blocks = (n_ctx + BS - 1) / BS;
    model_state *st = model_state_new_paged(m, n_blocks, BS, n_ctx, 8, err, errlen);
    if (!st) return -1;
    (void)kv_type;
    int32_t table[8], tok[P + DEC], pos[8];
    const int32_t *tabs[8];
    for (int i = 0; i < n_blocks; i++) table[i] = n_blocks - 1 - i;   /* not the identity */
    for (int i = 0; i < 8; i++) tabs[i] = table;
    for (int i = 0; i < P + DEC; i++) tok[i] = (int32_t)((i * 7919 + 13) % m->cfg.n_vocab);
    *rows = 0;
    size_t V = (size_t)m->cfg.n_vocab;
    int rc = 0;
    for (int t0 = 0; t0 < P + DEC && !rc;) {
        int n = t0 < P ? (P - t0 < 7 ? P - t0 : 7) : 1;
        for (int i = 0; i < n; i++) pos[i] = t0 + i;
        model_batch b = { .n = n, .tokens = tok + t0, .pos = pos, .tables = tabs };
        rc = model_forward(m, st, &b, out + (size_t)*rows * V, err, errlen);
        (*rows)++;
        t0 += n;
    }
    model_state_free(st);
    return rc;
}

static void compare_file(const char *path, const char *name, int kv_type) {
    char what[1024], err[512];
    model *m[2] = { NULL, NULL };
    const char *be[2] = { "cpu", "devsim" };
    float *lg[2] = { NULL, NULL };
    int rows[2] = { 0, 0 };
    for (int k = 0; k < 2; k++) {
        model_opts mo = { .n_threads = 2, .no_pack = 1, .backend = be[k], .device = -1,
                          .kv_type = kv_type };
        if (model_load(path, &mo, &m[k], err, sizeof err)) {
            snprintf(what, sizeof what, "%s on %s: load: %s", name, be[k], err);
            check(0, what);
            goto out;
        }
        lg[k] = malloc(sizeof(float) * 16 * (size_t)m[k]->cfg.n_vocab);
        if (!lg[k] || drive(m[k], kv_type, lg[k], &rows[k], err, sizeof err)) {
            snprintf(what, sizeof what, "%s on %s (kv %s): forward: %s", name, be[k],
                     qt_get(kv_type)->name, err);
            check(0, what);
            goto out;
        }
    }
    snprintf(what, sizeof what, "%s, KV %s: %d steps of logits, devsim == cpu bit for bit", name,
             qt_get(kv_type)->name, rows[0]);
    check(rows[0] == rows[1] &&
          !memcmp(lg[0], lg[1], sizeof(float) * (size_t)rows[0] * m[0]->cfg.n_vocab), what);
out:
    for (int k = 0; k < 2; k++) {
        model_free(m[k]);
        free(lg[k]);
    }
}

static void compare(const char *dir, const char *name, int kv_type) {
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s.gguf", dir, name);
    compare_file(path, name, kv_type);
}

int main(void) {
    char err[256];
    kern_init(NULL);
    check(backend_register("devsim", ds_new) == 0, "register devsim");
    check(backend_register("cpu", ds_new) != 0, "cpu cannot be registered again");
    /* the check can fail: an op given a host pointer is refused, naming it */
    backend_opts o = { "devsim", 1, -1 };
    backend *b = backend_new(&o, err, sizeof err);
    check(b != NULL, "devsim passes the registry's check");
    if (b) {
        float host[8] = { 0 };
        float *dev = b->i->alloc(b, sizeof host);
        int rc = b->i->rmsnorm(b, dev, dev, host, 1, 8, 1e-5f);
        check(rc != 0 && strstr(backend_error(b), "rmsnorm") && strstr(backend_error(b), "'w'"),
              "a host pointer given to a device op is refused, naming op and argument");
        check(b->i->rmsnorm(b, dev, dev, dev, 1, 8, 1e-5f) == 0, "device pointers are accepted");
        b->i->free(b);
    }
    /* gemma3's ops (q/k norms, post norms, GeGLU, embedding scale, windowed attention) and
     * qwen3's with YaRN RoPE scaling on device buffers: synthetic models, no shared data needed */
    const char *synth_shapes[] = { "tiny-gemma3", "tiny-qwen3-yarn" };
    for (size_t i = 0; i < sizeof synth_shapes / sizeof synth_shapes[0]; i++) {
        char gpath[] = "/tmp/sampan-devsim-XXXXXX";
        int gfd = mkstemp(gpath);
        if (gfd < 0) continue;
        close(gfd);
        if (synth_model(gpath, synth_shapes[i], QT_F32, 0, 3, err, sizeof err) == 0) {
            compare_file(gpath, synth_shapes[i], QT_F32);
            compare_file(gpath, synth_shapes[i], QT_F16);
        } else {
            check(0, err);
        }
        unlink(gpath);
    }
    const char *dir = getenv("SAMPAN_SHARED");
    char models[1024];
    snprintf(models, sizeof models, "%s/models/stories260K.gguf", dir ? dir : "../shared");
    FILE *f = fopen(models, "rb");
    if (!f) {
        printf("skip: %s not found: the model comparisons need ../shared\n", models);
        printf("%d passed, %d failed\n", n_pass, n_fail);
        return n_fail ? 1 : 77;
    }
    fclose(f);
    const char *names[] = { "stories260K", "tiny-llama-f32", "tiny-qwen2-f32", "small-llama-q4_k_m",
                            "tiny-deepseek-f32" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        compare(dir ? dir : "../shared", names[i], QT_F32);
        compare(dir ? dir : "../shared", names[i], QT_F16);
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
