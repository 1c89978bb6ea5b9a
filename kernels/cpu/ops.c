/* kernels/cpu/ops.c — element-wise transformer ops on the CPU (RMSNorm, RoPE, softmax, SwiGLU)
 * and attention, built from the shared per-element math in kernels/ops_math.h. Softmax's
 * exponentials, SwiGLU and attention have AVX2 variants (ops_avx2.c, attn_avx2.c) used unless
 * the scalar ISA is forced. */
#include <pthread.h>
#include <string.h>

#include "attn_impl.h"
#include "ops_impl.h"
#include "kern.h"
#include "ops_math.h"

void kern_rmsnorm(float *out, const float *x, const float *w, int C, float eps) {
    double sum = 0.0;
    for (int i = 0; i < C; i++) sum += (double)x[i] * (double)x[i];
    float scale = om_rms_scale(sum, C, eps);
    for (int i = 0; i < C; i++) out[i] = (x[i] * scale) * w[i];
}

void kern_rope(float *x, int H, int D, int n_rot, int pos, float freq_base, int neox,
               const float *freq_factors, const kern_rope_scaling *sc) {
    static const kern_rope_scaling none = { 0 };
    if (!sc) sc = &none;
    float theta_scale = om_rope_theta_scale(freq_base, n_rot);
    float mscale = om_rope_mscale(sc->freq_scale, sc->ext_factor, sc->attn_factor);
    float theta = (float)pos;   /* om_rope_theta(pos, theta_scale, i), kept incrementally */
    for (int i = 0; i < n_rot / 2; i++) {
        float t = om_rope_scaled(freq_factors ? theta / freq_factors[i] : theta, i, sc->freq_scale,
                                 sc->ext_factor, sc->corr_lo, sc->corr_hi);
        float c = cosf(t) * mscale, s = sinf(t) * mscale;
        for (int h = 0; h < H; h++) {
            float *xh = x + (size_t)h * D;
            int a = neox ? i : 2 * i;
            int b = neox ? i + n_rot / 2 : 2 * i + 1;
            om_rope_pair(&xh[a], &xh[b], c, s);
        }
        theta *= theta_scale;
    }
}

static int ops__simd(void) { return strcmp(kern_isa(), "scalar") != 0; }

void kern_softmax(float *x, int n) {
    float max = -INFINITY;
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    if (ops__simd()) {
        ops_avx2_exp_shift(x, n, max);
    } else {
        for (int i = 0; i < n; i++) x[i] = expf(x[i] - max);
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += x[i];
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void kern_swiglu(float *out, const float *gate, const float *up, int n) {
    if (ops__simd()) {
        ops_avx2_swiglu(out, gate, up, n);
        return;
    }
    for (int i = 0; i < n; i++) out[i] = om_silu(gate[i]) * up[i];
}

/* The half-precision GELU of every half (om_gelu_fill; thresholds applied before the lookup,
 * om_gelu_lookup), as ggml keeps it: one lookup per element instead of a tanhf, equal to
 * om_gelu_f16 bit for bit (the quant_simd test checks every half). Built once. */
static qt_f16 ops__gelu_table[1 << 16];
static pthread_once_t ops__gelu_once = PTHREAD_ONCE_INIT;

static void ops__gelu_init(void) { om_gelu_fill(ops__gelu_table); }

void kern_geglu(float *out, const float *gate, const float *up, int n) {
    pthread_once(&ops__gelu_once, ops__gelu_init);
    for (int i = 0; i < n; i++) out[i] = om_gelu_lookup(gate[i], ops__gelu_table) * up[i];
}

/* element i of a cache row as f32 */
static inline float ops__kv_at(const void *row, int i, int type) {
    if (type == QT_F16) return qt_f16_to_f32(((const qt_f16 *)row)[i]);
    if (type == QT_BF16) return qt_bf16_to_f32(((const qt_bf16 *)row)[i]);
    return ((const float *)row)[i];
}

static inline const void *ops__kv_row(const void *base, const kern_kv_view *kv, int p) {
    size_t es = kv->type == QT_F32 ? 4 : 2;
    p += kv->first;
    return (const char *)base + ((size_t)kv->table[p / kv->block_size] * kv->block_stride +
                                 (size_t)(p % kv->block_size) * kv->slot_stride) * es;
}

void kern_attn_group(float *out, const float *q, int G, int D, float scale, int n,
                     const kern_kv_view *kv, float *att) {
    const int Dv = kv->v_dim > 0 ? kv->v_dim : D;
    if (D % 8 == 0 && Dv % 8 == 0 && strcmp(kern_isa(), "scalar") != 0) {
        attn_avx2_group(out, q, G, D, scale, n, kv, att);
        return;
    }
    for (int g = 0; g < G; g++) {
        const float *qg = q + (size_t)g * D;
        float *og = out + (size_t)g * Dv, *ag = att + (size_t)g * n;
        for (int p = 0; p < n; p++) {
            const void *k = ops__kv_row(kv->k, kv, p);
            float s = 0.0f;
            for (int d = 0; d < D; d++) s += ops__kv_at(k, d, kv->type) * qg[d];
            ag[p] = s * scale;
        }
        kern_softmax(ag, n);
        memset(og, 0, (size_t)Dv * sizeof(float));
        for (int p = 0; p < n; p++) {
            const void *v = ops__kv_row(kv->v, kv, p);
            for (int d = 0; d < Dv; d++) og[d] += ag[p] * ops__kv_at(v, d, kv->type);
        }
    }
}

void kern_attn(float *out, const float *q, int D, float scale, int n, const kern_kv_view *kv,
               float *att) {
    kern_attn_group(out, q, 1, D, scale, n, kv, att);
}
