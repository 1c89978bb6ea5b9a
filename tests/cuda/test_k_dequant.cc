/* tests/cuda/test_k_dequant.cc — k_dequant.cu under the CPU shim, every thread order:
 * dequantization of rows of every weight type to f32 (bit for bit qt_get(type)->to_float), to
 * f16 and bf16 (bit for bit qt_f32_to_f16 / qt_f32_to_bf16 of it), on random bytes (every
 * scale bit pattern, subnormal and nan included) and on quantized random data, with a row
 * stride beyond the row; the embedding lookup with ids outside the rank's rows; and rows of
 * every tensor of ../shared/models/small-llama-{q4_k_m,q8_0}.gguf and of the new-type files of
 * ../shared/new-types/models when present. */
#include "kernels/cuda/k_dequant.cu"
#include "test_k_util.h"

#include <string>

extern "C" {
#include "gguf.h"
}

static const int types[] = {QT_F32,  QT_F16,    QT_BF16, QT_Q8_0, QT_Q4_0, QT_Q4_1,
                            QT_Q5_0, QT_Q5_1,   QT_IQ4_NL, QT_Q2_K, QT_Q3_K, QT_Q4_K,
                            QT_Q5_K, QT_Q6_K, QT_IQ4_XS};

/* rows of w (n_rows x K of type, stride bytes apart) through the GPU to every output type,
 * compared with to_float; returns the number of elements checked */
static size_t check_rows(const void *w_host, int type, int64_t n_rows, int64_t K, size_t stride,
                         const char *what, int o) {
    const qt_traits *tr = qt_get(type);
    std::vector<float> ref((size_t)(n_rows * K));
    for (int64_t r = 0; r < n_rows; r++)
        tr->to_float((const char *)w_host + r * stride, &ref[(size_t)(r * K)], K);
    void *dw = tk_dev(w_host, (size_t)(n_rows - 1) * stride + qt_row_size(type, K));
    void *dout = tk_dev(NULL, ref.size() * 4);
    for (int ot : {QT_F32, QT_F16, QT_BF16}) {
        int rc = cuk_dequant(dout, ot, dw, type, n_rows, K, stride, NULL);
        TK_CHECK(rc == 0, "%s: cuk_dequant rc %d (%s)", what, rc, cu_shim_last_message());
        if (ot == QT_F32) {
            std::vector<float> got(ref.size());
            tk_get(got.data(), dout, got.size() * 4);
            for (size_t i = 0; i < got.size(); i++)
                TK_CHECK(tk_bits(got[i]) == tk_bits(ref[i]), "%s %s order %d -> f32 [%zu]: %.9g vs %.9g",
                         what, tr->name, o, i, got[i], ref[i]);
        } else {
            std::vector<uint16_t> got(ref.size());
            tk_get(got.data(), dout, got.size() * 2);
            for (size_t i = 0; i < got.size(); i++) {
                const uint16_t want = ot == QT_F16 ? qt_f32_to_f16(ref[i]) : qt_f32_to_bf16(ref[i]);
                TK_CHECK(got[i] == want, "%s %s order %d -> %s [%zu]: %04x vs %04x", what, tr->name, o,
                         ot == QT_F16 ? "f16" : "bf16", i, got[i], want);
            }
        }
    }
    cudaFree(dw);
    cudaFree(dout);
    return ref.size();
}

static void check_embed(const void *w_host, int type, int64_t n_rows, int64_t C, size_t stride,
                        int64_t row0, const std::vector<int32_t> &tokens, const char *what, int o) {
    const int T = (int)tokens.size();
    std::vector<float> ref((size_t)(T * C)), got(ref.size());
    for (int t = 0; t < T; t++) {
        const int64_t r = tokens[t] - row0;
        if (r >= 0 && r < n_rows)
            qt_get(type)->to_float((const char *)w_host + r * stride, &ref[(size_t)(t * C)], C);
        else
            memset(&ref[(size_t)(t * C)], 0, C * 4);
    }
    void *dw = tk_dev(w_host, (size_t)(n_rows - 1) * stride + qt_row_size(type, C));
    int32_t *dt = (int32_t *)tk_dev(tokens.data(), T * 4);
    float *dout = (float *)tk_dev(NULL, ref.size() * 4);
    int rc = cuk_embed(dout, dw, type, n_rows, row0, stride, dt, T, (int)C, NULL);
    TK_CHECK(rc == 0, "%s: cuk_embed rc %d (%s)", what, rc, cu_shim_last_message());
    tk_get(got.data(), dout, got.size() * 4);
    for (size_t i = 0; i < got.size(); i++)
        TK_CHECK(tk_bits(got[i]) == tk_bits(ref[i]), "%s embed %s order %d [%zu]: %.9g vs %.9g", what,
                 qt_get(type)->name, o, i, got[i], ref[i]);
    cudaFree(dw);
    cudaFree(dt);
    cudaFree(dout);
}

static void real_weights(const char *shared, const char *file, int o) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/models/%s", shared, file);
    gguf_ctx *g = NULL;
    if (gguf_open(path, &g, err, sizeof err)) {
        printf("skipping real weights of %s: %s\n", path, err);
        return;
    }
    size_t n = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (!qt_supported(t->type)) continue;
        const int64_t K = t->ne[0], rows = t->nbytes / qt_row_size(t->type, K);
        const size_t rs = qt_row_size(t->type, K);
        /* the first two and the last row */
        char what[160];
        snprintf(what, sizeof what, "%s %.*s", file, (int)t->name.len, t->name.ptr);
        n += check_rows(t->data, t->type, rows < 2 ? rows : 2, K, rs, what, o);
        if (rows > 2) n += check_rows((const char *)t->data + (rows - 1) * rs, t->type, 1, K, rs, what, o);
        if (gguf_str_eq(t->name, "token_embd.weight"))
            check_embed(t->data, t->type, rows, K, rs, 0, {1, 31999, 2, (int32_t)rows, -1, 0}, what, o);
    }
    printf("%s: %zu elements of real weights bit for bit (order %d)\n", file, n, o);
    gguf_close(g);
}

int main(void) {
    kern_init(NULL);
    TK_FOR_ORDERS(o) {
        for (int type : types) {
            const qt_traits *tr = qt_get(type);
            const int bs = tr->block_size;
            const int64_t K = bs == 1 ? 37 : 3 * bs, n_rows = 3;
            const size_t rs = qt_row_size(type, K), stride = rs + (type == QT_F32 ? 8 : 6);
            /* random bytes */
            std::vector<uint8_t> raw(n_rows * stride);
            for (auto &b : raw) b = (uint8_t)tk_next();
            check_rows(raw.data(), type, n_rows, K, stride, "random bytes", o);
            /* quantized random data */
            std::vector<float> src(K);
            for (int64_t r = 0; r < n_rows; r++) {
                for (auto &v : src) v = tk_unif(-2.0f, 2.0f);
                if (type == QT_F32) memcpy(&raw[r * stride], src.data(), K * 4);
                else tr->from_float(src.data(), &raw[r * stride], K);
            }
            check_rows(raw.data(), type, n_rows, K, stride, "quantized", o);
            check_embed(raw.data(), type, n_rows, K, stride, 5, {5, 7, 4, 8, 6, -3, 6}, "embed", o);
        }
    }
    const char *shared = tk_shared();
    if (!shared) {
        printf("skipping real weights: SAMPAN_SHARED is not set\n");
    } else {
        TK_FOR_ORDERS(o) {
            if (o == 1) continue;   /* forward and random suffice for the big part */
            real_weights(shared, "small-llama-q4_k_m.gguf", o);
            real_weights(shared, "small-llama-q8_0.gguf", o);
            const std::string nt = std::string(shared) + "/new-types";
            for (const char *f : tk_new_type_files) real_weights(nt.c_str(), f, o);
        }
    }
    TK_CHECK(cuk_dequant(NULL, QT_F32, NULL, QT_Q4_K, 1, 100, 144, NULL) == cudaErrorInvalidValue,
             "K not a multiple of the block accepted");
    return tk_finish("test_k_dequant");
}
