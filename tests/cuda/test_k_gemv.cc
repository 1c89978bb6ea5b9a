/* tests/cuda/test_k_gemv.cc — k_gemv.cu's decode GEMV under the CPU shim, every thread order,
 * T = 1..8, every weight type, N = 7 (not a multiple of the 4 rows of a block), K an odd
 * number of blocks, row strides with and without 16-byte alignment; then rows of real weights
 * of ../shared/models/small-llama-{q4_k_m,q8_0}.gguf and of ../shared/new-types/models (the
 * newer types: two small-llama models, one-tensor files) when present.
 *
 * Two references, both in float64 over dequantized weights (to_float):
 *  (a) times the activations as the CPU converts them (vec_dot_type: Q8_0 / Q8_K blocks, f16 or
 *      bf16 rounding): the GPU must agree to f32 accumulation, |gpu - ref| <= 1e-5 * S with
 *      S = sum |w_i * xq_i| (k_gemv.cu's header: about (pieces per lane + 5) * 2^-24 * S);
 *      the CPU's own kern_matmul is held to the same bound, and the scratch must hold the CPU's
 *      quantized activations bit for bit;
 *  (b) times x itself: |gpu - ref| <= sum_i |w_i| * e_i + 1e-5 * S, with e_i the bound of
 *      the activation's conversion error: Q8_0 amax*(1/254 + 2^-11) (half a step, and the f16
 *      scale), Q8_K amax/254 * 1.001, f16 |x| 2^-11 + 2^-25, bf16 |x| 2^-8, f32 0.
 */
#include "kernels/cuda/k_gemv.cu"
#include "test_k_util.h"

#include <string>

extern "C" {
#include "gguf.h"
}

static double worst_a = 0.0, worst_b = 0.0, worst_cpu = 0.0;   /* error / bound, max */

/* bound on |x - converted x| for element k of row x */
static double conv_err(int type, const float *x, int K, int k) {
    if (type == QT_F32) return 0.0;
    if (type == QT_F16) return fabs(x[k]) * 0x1p-11 + 0x1p-25;
    if (type == QT_BF16) return fabs(x[k]) * 0x1p-8;
    const int bs = qt_get(type)->vec_dot_type == QT_Q8_0 ? 32 : 256;
    double amax = 0.0;
    for (int j = k / bs * bs; j < k / bs * bs + bs && j < K; j++) amax = fmax(amax, fabs(x[j]));
    return bs == 32 ? amax * (1.0 / 254 + 0x1p-11) : amax / 254 * 1.001;
}

static void check(const uint8_t *w_host, int type, int N, int K, size_t stride, int T,
                  const char *what, int o) {
    const qt_traits *tr = qt_get(type), *vt = qt_get(tr->vec_dot_type);
    std::vector<float> x((size_t)T * K), xq((size_t)T * K), wd((size_t)N * K);
    for (auto &v : x) v = tk_unif(-1.0f, 1.0f) * (tk_int(16) == 0 ? 8.0f : 1.0f);
    for (int n = 0; n < N; n++) tr->to_float(w_host + (size_t)n * stride, &wd[(size_t)n * K], K);
    /* the CPU's conversion of x, kept for the scratch comparison */
    const size_t vrow = qt_row_size(tr->vec_dot_type, K);
    std::vector<uint8_t> xv((size_t)T * vrow);
    for (int t = 0; t < T; t++) {
        if (tr->vec_dot_type == QT_F32) memcpy(&xv[(size_t)t * vrow], &x[(size_t)t * K], (size_t)K * 4);
        else vt->from_float(&x[(size_t)t * K], &xv[(size_t)t * vrow], K);
        if (tr->vec_dot_type == QT_F32) memcpy(&xq[(size_t)t * K], &x[(size_t)t * K], (size_t)K * 4);
        else vt->to_float(&xv[(size_t)t * vrow], &xq[(size_t)t * K], K);
    }
    /* CPU */
    kern_weight kw = {w_host, type, N, K, stride, KERN_ROWS};
    std::vector<uint8_t> cscr(kern_matmul_scratch(&kw, T) + 64);
    std::vector<float> cpu((size_t)T * N), got((size_t)T * N);
    kern_matmul(NULL, cpu.data(), &kw, x.data(), T, cscr.data());
    /* GPU */
    const size_t scr = cuk_gemv_scratch_bytes(type, K, T);
    void *dw = tk_dev(w_host, (size_t)(N - 1) * stride + qt_row_size(type, K));
    float *dx = (float *)tk_dev(x.data(), x.size() * 4), *dout = (float *)tk_dev(NULL, got.size() * 4);
    void *dscr = tk_dev(NULL, scr);
    int rc = cuk_gemv(dout, dw, type, N, K, stride, dx, T, dscr, NULL);
    TK_CHECK(rc == 0, "%s: cuk_gemv rc %d (%s)", what, rc, cu_shim_last_message());
    tk_get(got.data(), dout, got.size() * 4);
    /* the scratch holds the CPU's conversion */
    std::vector<uint8_t> hs(scr);
    if (scr) tk_get(hs.data(), dscr, scr);
    const size_t n = (size_t)T * K, al = (n + 15) & ~(size_t)15;
    for (int t = 0; t < T && scr; t++) {
        const uint8_t *cv = &xv[(size_t)t * vrow];
        if (type == QT_F16 || type == QT_BF16) {
            const float *xr = (const float *)hs.data() + (size_t)t * K;
            for (int k = 0; k < K; k++) {
                const uint16_t h = ((const uint16_t *)cv)[k];
                const float want = type == QT_F16 ? qt_f16_to_f32(h) : qt_bf16_to_f32(h);
                TK_CHECK(tk_bits(xr[k]) == tk_bits(want), "%s: rounded x[%d][%d]", what, t, k);
            }
        } else if (tr->vec_dot_type == QT_Q8_0) {
            const int nb = K / 32;
            const float *xd = (const float *)(hs.data() + al);
            for (int b = 0; b < nb; b++) {
                const block_q8_0 *cb = (const block_q8_0 *)cv + b;
                TK_CHECK(tk_bits(xd[(size_t)t * nb + b]) == tk_bits(qt_f16_to_f32(cb->d)), "%s: q8_0 d t %d b %d", what, t, b);
                TK_CHECK(!memcmp(hs.data() + (size_t)t * K + 32 * b, cb->qs, 32), "%s: q8_0 qs t %d b %d", what, t, b);
            }
        } else {
            const int nb = K / 256;
            const float *xd = (const float *)(hs.data() + al);
            const int *xbs = (const int *)(hs.data() + al + ((n / 256 * 4 + 15) & ~(size_t)15));
            for (int b = 0; b < nb; b++) {
                const block_q8_K *cb = (const block_q8_K *)cv + b;
                TK_CHECK(tk_bits(xd[(size_t)t * nb + b]) == tk_bits(cb->d), "%s: q8_K d t %d b %d", what, t, b);
                TK_CHECK(!memcmp(hs.data() + (size_t)t * K + 256 * b, cb->qs, 256), "%s: q8_K qs t %d b %d", what, t, b);
                for (int g = 0; g < 16; g++)
                    TK_CHECK(xbs[((size_t)t * nb + b) * 16 + g] == cb->bsums[g], "%s: q8_K bsums t %d b %d", what, t, b);
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < N; r++) {
            double ra = 0, rb = 0, S = 0, E = 0;
            for (int k = 0; k < K; k++) {
                const double wv = wd[(size_t)r * K + k];
                ra += wv * xq[(size_t)t * K + k];
                rb += wv * x[(size_t)t * K + k];
                S += fabs(wv * xq[(size_t)t * K + k]);
                E += fabs(wv) * conv_err(type, &x[(size_t)t * K], K, k);
            }
            const double g = got[(size_t)t * N + r], c = cpu[(size_t)t * N + r];
            const double ba = 1e-5 * S + 1e-30, bb = E + 1e-5 * S + 1e-30;
            worst_a = fmax(worst_a, fabs(g - ra) / ba);
            worst_b = fmax(worst_b, fabs(g - rb) / bb);
            worst_cpu = fmax(worst_cpu, fabs(c - ra) / ba);
            TK_CHECK(fabs(g - ra) <= ba, "%s %s T %d order %d out[%d][%d] %.9g vs ref(xq) %.9g (bound %.3g)",
                     what, tr->name, T, o, t, r, g, ra, ba);
            TK_CHECK(fabs(g - rb) <= bb, "%s %s T %d order %d out[%d][%d] %.9g vs ref(x) %.9g (bound %.3g)",
                     what, tr->name, T, o, t, r, g, rb, bb);
            TK_CHECK(fabs(c - ra) <= ba, "%s %s: the CPU's out[%d][%d] %.9g vs ref(xq) %.9g", what, tr->name, t,
                     r, c, ra);
        }
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dout);
    cudaFree(dscr);
}

static void real_weights(const char *shared, const char *file, int o) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/models/%s", shared, file);
    gguf_ctx *g = NULL;
    if (gguf_open(path, &g, err, sizeof err)) {
        printf("skipping real weights of %s: %s\n", path, err);
        return;
    }
    int n = 0;
    for (const char *name : {"blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.1.ffn_down.weight",
                             "blk.3.ffn_gate.weight", "output.weight", "token_embd.weight"}) {
        const gguf_tensor *t = gguf_find_tensor(g, name);
        if (!t || !qt_supported(t->type)) continue;
        char what[160];
        snprintf(what, sizeof what, "%s %s", file, name);
        const int K = (int)t->ne[0];
        for (int T : {1, 3, 8}) check((const uint8_t *)t->data, t->type, 9, K, qt_row_size(t->type, K), T, what, o);
        n++;
    }
    if (gguf_n_tensors(g) == 1) {   /* a one-tensor file of ../shared/new-types */
        const gguf_tensor *t = gguf_tensor_at(g, 0);
        const int K = (int)t->ne[0];
        const size_t rs = qt_supported(t->type) ? qt_row_size(t->type, K) : 0;
        const int rows = rs ? (int)(t->nbytes / rs) : 0;
        char what[160];
        snprintf(what, sizeof what, "%s %.*s", file, (int)t->name.len, t->name.ptr);
        for (int T : {1, 3, 8})
            if (rows > 0) check((const uint8_t *)t->data, t->type, rows < 9 ? rows : 9, K, rs, T, what, o);
        n += rows > 0;
    }
    printf("%s: %d real tensors (order %d)\n", file, n, o);
    gguf_close(g);
}

int main(void) {
    kern_init(NULL);
    const int types[] = {QT_F32,  QT_F16,  QT_BF16,   QT_Q8_0, QT_Q4_0, QT_Q4_1, QT_Q5_0, QT_Q5_1,
                         QT_IQ4_NL, QT_Q2_K, QT_Q3_K, QT_Q4_K, QT_Q5_K, QT_Q6_K, QT_IQ4_XS};
    const int N = 7;
    TK_FOR_ORDERS(o) {
        for (int type : types) {
            const qt_traits *tr = qt_get(type);
            const int bs = tr->block_size;
            for (int K : bs == 1 ? std::vector<int>{37, 264} : std::vector<int>{bs == 32 ? 9 * 32 : 3 * 256}) {
                const size_t rs = qt_row_size(type, K);
                for (size_t stride : {rs, rs + (type == QT_Q4_K || type == QT_F32 ? 4 : 2)}) {
                    std::vector<uint8_t> w(N * stride);
                    std::vector<float> src(K);
                    for (int r = 0; r < N; r++) {
                        for (auto &v : src) v = tk_unif(-1.0f, 1.0f);
                        if (type == QT_F32) memcpy(&w[r * stride], src.data(), (size_t)K * 4);
                        else tr->from_float(src.data(), &w[r * stride], K);
                    }
                    for (int T = 1; T <= 8; T++) check(w.data(), type, N, K, stride, T, "random", o);
                }
            }
        }
    }
    const char *shared = tk_shared();
    if (!shared) {
        printf("skipping real weights: SAMPAN_SHARED is not set\n");
    } else {
        TK_FOR_ORDERS(o) {
            if (o == 1) continue;
            real_weights(shared, "small-llama-q4_k_m.gguf", o);
            real_weights(shared, "small-llama-q8_0.gguf", o);
            const std::string nt = std::string(shared) + "/new-types";
            for (const char *f : tk_new_type_files) real_weights(nt.c_str(), f, o);
        }
    }
    printf("gemv: max |gpu - ref(xq)| / (1e-5 S) = %.3g, max |gpu - ref(x)| / bound = %.3g, "
           "CPU kern_matmul |cpu - ref(xq)| / (1e-5 S) = %.3g\n", worst_a, worst_b, worst_cpu);
    TK_CHECK(cuk_gemv(NULL, NULL, QT_Q4_0, 4, 32, 18, NULL, 9, NULL, NULL) == cudaErrorInvalidValue,
             "T = 9 accepted");
    TK_CHECK(cuk_gemv(NULL, NULL, QT_Q4_K, 4, 128, 144, NULL, 1, NULL, NULL) == cudaErrorInvalidValue,
             "K = 128 for Q4_K accepted");
    return tk_finish("test_k_gemv");
}
