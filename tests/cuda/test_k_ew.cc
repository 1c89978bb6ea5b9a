/* tests/cuda/test_k_ew.cc — k_ew.cu under the CPU shim, every thread order: SwiGLU against
 * kern_swiglu within 1e-6 relative (in place too); GeGLU bit for bit against kern_geglu over
 * every half and random values (its table built here as backend_cuda.cu builds it, by
 * om_gelu_fill in C++, against the C build of kernels/cpu/ops.c); scale, add, bias, row
 * gather, the tensor-parallel interleave and -inf padding bit for bit against plain loops
 * written from model.c. */
#include "kernels/cuda/k_ew.cu"
#include "test_k_util.h"

static void cmp_exact(const char *what, int o, const std::vector<float> &got,
                      const std::vector<float> &ref) {
    for (size_t i = 0; i < ref.size(); i++)
        TK_CHECK(tk_bits(got[i]) == tk_bits(ref[i]), "%s order %d i %zu: %.9g vs %.9g", what, o, i,
                 got[i], ref[i]);
}

int main(void) {
    kern_init(NULL);
    double max_rel = 0.0;
    TK_FOR_ORDERS(o) {
        /* swiglu, n odd and larger than one grid-stride pass of a small grid */
        for (size_t n : {1ul, 37ul, 3001ul}) {
            std::vector<float> g(n), u(n), ref(n), got(n);
            for (size_t i = 0; i < n; i++) {
                g[i] = tk_unif(-12.0f, 12.0f);
                u[i] = tk_unif(-3.0f, 3.0f);
            }
            g[0] = n > 1 ? -90.0f : 0.5f;   /* exp overflow side */
            kern_swiglu(ref.data(), g.data(), u.data(), (int)n);
            float *dg = (float *)tk_dev(g.data(), n * 4), *du = (float *)tk_dev(u.data(), n * 4);
            for (int inplace = 0; inplace < 2; inplace++) {
                float *dout = inplace ? dg : (float *)tk_dev(NULL, n * 4);
                TK_CHECK(cuk_swiglu(dout, dg, du, n, NULL) == 0, "swiglu rc");
                tk_get(got.data(), dout, n * 4);
                for (size_t i = 0; i < n; i++) {
                    const double rel = fabs((double)got[i] - ref[i]) / fmax(fabs((double)ref[i]), 1e-30);
                    max_rel = fmax(max_rel, ref[i] == got[i] ? 0.0 : rel);
                    TK_CHECK(rel <= 1e-6 || got[i] == ref[i], "swiglu order %d n %zu i %zu: %.9g vs %.9g", o, n,
                             i, got[i], ref[i]);
                }
                if (!inplace) cudaFree(dout);
            }
            cudaFree(dg);
            cudaFree(du);
        }
        /* geglu: every half (inf and nan among them), then random gates across the +-10
         * thresholds and beyond, in place like the backend */
        {
            static qt_f16 table[1 << 16];
            om_gelu_fill(table);
            uint16_t *dtab = (uint16_t *)tk_dev(table, sizeof table);
            const size_t n = (1u << 16) + 4001;
            std::vector<float> g(n), u(n), ref(n), got(n);
            for (size_t i = 0; i < n; i++) {
                g[i] = i < (1u << 16) ? qt_f16_to_f32((qt_f16)i)
                       : tk_int(8) == 0 ? tk_unif(-40.0f, 40.0f) : tk_unif(-12.0f, 12.0f);
                u[i] = tk_unif(-3.0f, 3.0f);
            }
            g[n - 1] = -10.0f;
            g[n - 2] = 10.0f;
            g[n - 3] = nextafterf(10.0f, 0.0f);
            g[n - 4] = nextafterf(-10.0f, 0.0f);
            kern_geglu(ref.data(), g.data(), u.data(), (int)n);
            float *dg = (float *)tk_dev(g.data(), n * 4), *du = (float *)tk_dev(u.data(), n * 4);
            TK_CHECK(cuk_geglu(dg, dg, du, dtab, n, NULL) == 0, "geglu rc");
            tk_get(got.data(), dg, n * 4);
            cmp_exact("geglu", o, got, ref);
            cudaFree(dg);
            cudaFree(du);
            cudaFree(dtab);
        }
        /* scale: cpu__scale's loop */
        {
            const size_t n = 3001;
            std::vector<float> x(n), ref(n), got(n);
            for (auto &v : x) v = tk_unif(-100.0f, 100.0f);
            const float s = tk_unif(0.5f, 60.0f);
            for (size_t i = 0; i < n; i++) ref[i] = x[i] * s;
            float *dx = (float *)tk_dev(x.data(), n * 4);
            TK_CHECK(cuk_scale(dx, s, n, NULL) == 0, "scale rc");
            tk_get(got.data(), dx, n * 4);
            cmp_exact("scale", o, got, ref);
            cudaFree(dx);
        }
        /* add and bias */
        {
            const int T = 3, N = 523;
            std::vector<float> x((size_t)T * N), y(x.size()), b(N), ref, got(x.size());
            for (auto &v : x) v = tk_unif(-1.0f, 1.0f);
            for (auto &v : y) v = tk_unif(-1.0f, 1.0f);
            for (auto &v : b) v = tk_unif(-1.0f, 1.0f);
            float *dx = (float *)tk_dev(x.data(), x.size() * 4), *dy = (float *)tk_dev(y.data(), y.size() * 4);
            float *db = (float *)tk_dev(b.data(), N * 4);
            ref = x;
            for (size_t i = 0; i < ref.size(); i++) ref[i] += y[i];
            TK_CHECK(cuk_add(dx, dy, x.size(), NULL) == 0, "add rc");
            tk_get(got.data(), dx, got.size() * 4);
            cmp_exact("add", o, got, ref);
            for (int t = 0; t < T; t++)
                for (int i = 0; i < N; i++) ref[(size_t)t * N + i] += b[i];
            TK_CHECK(cuk_bias(dx, db, T, N, NULL) == 0, "bias rc");
            tk_get(got.data(), dx, got.size() * 4);
            cmp_exact("bias", o, got, ref);
            cudaFree(dx);
            cudaFree(dy);
            cudaFree(db);
        }
        /* gather rows */
        {
            const int R = 9, C = 300, n = 5;
            std::vector<float> in((size_t)R * C), ref((size_t)n * C), got(ref.size());
            std::vector<int32_t> rows = {8, 0, 3, 3, 7};
            for (auto &v : in) v = tk_unif(-1.0f, 1.0f);
            for (int i = 0; i < n; i++)
                memcpy(&ref[(size_t)i * C], &in[(size_t)rows[i] * C], C * 4);
            float *din = (float *)tk_dev(in.data(), in.size() * 4), *dout = (float *)tk_dev(NULL, ref.size() * 4);
            int32_t *dr = (int32_t *)tk_dev(rows.data(), n * 4);
            TK_CHECK(cuk_gather_rows(dout, din, dr, n, C, NULL) == 0, "gather rc");
            tk_get(got.data(), dout, got.size() * 4);
            cmp_exact("gather", o, got, ref);
            cudaFree(din);
            cudaFree(dout);
            cudaFree(dr);
        }
        /* interleave: model.c gather_cols */
        for (int tp : {1, 2, 3}) {
            const int T = 4, n = 70;
            std::vector<float> in((size_t)tp * T * n), ref(in.size()), got(in.size());
            for (auto &v : in) v = tk_unif(-1.0f, 1.0f);
            for (int r = 0; r < tp; r++)
                for (int t = 0; t < T; t++)
                    memcpy(&ref[((size_t)t * tp + r) * n], &in[((size_t)r * T + t) * n], n * 4);
            float *din = (float *)tk_dev(in.data(), in.size() * 4), *dout = (float *)tk_dev(NULL, in.size() * 4);
            TK_CHECK(cuk_interleave(dout, din, tp, T, n, NULL) == 0, "interleave rc");
            tk_get(got.data(), dout, got.size() * 4);
            cmp_exact("interleave", o, got, ref);
            cudaFree(din);
            cudaFree(dout);
        }
        /* pad: model.c end of model_forward */
        {
            const int R = 3, V = 301, P = 320;
            std::vector<float> in((size_t)R * V), ref((size_t)R * P), got(ref.size());
            for (auto &v : in) v = tk_unif(-10.0f, 10.0f);
            for (int r = 0; r < R; r++)
                for (int v = 0; v < P; v++) ref[(size_t)r * P + v] = v < V ? in[(size_t)r * V + v] : -INFINITY;
            float *din = (float *)tk_dev(in.data(), in.size() * 4), *dout = (float *)tk_dev(NULL, ref.size() * 4);
            TK_CHECK(cuk_pad_rows(dout, din, R, V, P, NULL) == 0, "pad rc");
            tk_get(got.data(), dout, got.size() * 4);
            cmp_exact("pad", o, got, ref);
            cudaFree(din);
            cudaFree(dout);
        }
    }
    printf("swiglu: max relative error vs CPU %.3g\n", max_rel);
    TK_CHECK(cuk_pad_rows(NULL, NULL, 1, 5, 4, NULL) == cudaErrorInvalidValue, "P < V accepted");
    TK_CHECK(cuk_geglu(NULL, NULL, NULL, NULL, 4, NULL) == cudaErrorInvalidValue,
             "geglu without a table accepted");
    return tk_finish("test_k_ew");
}
