/* tests/cuda/test_k_norm.cc — k_norm.cu's RMSNorm under the CPU shim, every thread order,
 * against kern_rmsnorm (the CPU): within 1e-6 relative, C up to 8192, in place and not. */
#include "kernels/cuda/k_norm.cu"
#include "test_k_util.h"

int main(void) {
    kern_init(NULL);
    const int Cs[] = {1, 7, 256, 1000, 8192};
    double max_rel = 0.0;
    TK_FOR_ORDERS(o) {
        for (int ci = 0; ci < (int)(sizeof Cs / sizeof Cs[0]); ci++) {
            const int C = Cs[ci], T = C > 1000 ? 2 : 3;
            std::vector<float> x((size_t)T * C), w(C), ref((size_t)T * C), got((size_t)T * C);
            for (auto &v : x) v = tk_unif(-2.0f, 2.0f) * (tk_int(8) == 0 ? 100.0f : 1.0f);
            for (auto &v : w) v = tk_unif(-1.5f, 1.5f);
            for (int t = 0; t < T; t++)
                kern_rmsnorm(&ref[(size_t)t * C], &x[(size_t)t * C], w.data(), C, 1e-5f);
            float *dx = (float *)tk_dev(x.data(), x.size() * 4), *dw = (float *)tk_dev(w.data(), C * 4);
            float *dout = (float *)tk_dev(NULL, x.size() * 4);
            for (int inplace = 0; inplace < 2; inplace++) {
                if (inplace) cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
                int rc = cuk_rmsnorm(inplace ? dx : dout, dx, dw, T, C, 1e-5f, NULL);
                TK_CHECK(rc == 0, "cuk_rmsnorm rc %d (%s)", rc, cu_shim_last_message());
                tk_get(got.data(), inplace ? dx : dout, got.size() * 4);
                for (size_t i = 0; i < got.size(); i++) {
                    const double rel = fabs((double)got[i] - ref[i]) / fmax(fabs((double)ref[i]), 1e-30);
                    if (rel > max_rel) max_rel = rel;
                    TK_CHECK(rel <= 1e-6, "order %d C %d inplace %d i %zu: %.9g vs cpu %.9g", o, C,
                             inplace, i, got[i], ref[i]);
                }
            }
            cudaFree(dx);
            cudaFree(dw);
            cudaFree(dout);
        }
    }
    printf("rmsnorm: max relative error vs CPU %.3g\n", max_rel);
    TK_CHECK(cuk_rmsnorm(NULL, NULL, NULL, 1, 0, 1e-5f, NULL) == cudaErrorInvalidValue, "C = 0 accepted");
    return tk_finish("test_k_norm");
}
