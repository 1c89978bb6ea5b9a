/* tests/cuda/test_k_kv.cc — k_kv.cu's paged KV write under the CPU shim, every thread order,
 * for f32, f16 and bf16 caches: the whole cache after the write, bit for bit against the CPU's
 * placement (model.c: block from the position's table row, slot pos % block_size, head-major
 * block (Hkv, block_size, D)) and conversion (qt_f32_to_f16 / qt_f32_to_bf16); slots not
 * written keep their bytes; a negative block id skips its position. */
#include "kernels/cuda/k_kv.cu"
#include "test_k_util.h"

int main(void) {
    kern_init(NULL);
    const int T = 6, Hkv = 3, D = 10, bs = 4, max_blocks = 3, n_blocks = 9;
    const int W = Hkv * D;
    TK_FOR_ORDERS(o) {
        for (int et : {QT_F32, QT_F16, QT_BF16}) {
            const size_t esz = et == QT_F32 ? 4 : 2;
            const size_t n_el = (size_t)n_blocks * Hkv * bs * D;
            std::vector<float> k((size_t)T * W), v((size_t)T * W);
            for (auto &x : k) x = tk_unif(-4.0f, 4.0f) * (tk_int(5) == 0 ? 1e-6f : 1.0f);
            for (auto &x : v) x = tk_unif(-4.0f, 4.0f);
            k[3] = 70000.0f;   /* f16 overflow */
            std::vector<int32_t> pos(T), tables((size_t)T * max_blocks);
            /* two sequences: positions 0..3 of one (tables row A), 5..6 of the other (row B) */
            const int32_t rowA[3] = {4, 1, 7}, rowB[3] = {2, 8, 0};
            const int pp[T] = {0, 3, 5, 1, 6, 2};
            for (int t = 0; t < T; t++) {
                pos[t] = pp[t];
                const int32_t *row = (t == 2 || t == 4) ? rowB : rowA;
                memcpy(&tables[(size_t)t * max_blocks], row, sizeof rowA);
            }
            tables[(size_t)5 * max_blocks + 0] = -1;   /* position 2 of A: skipped */
            std::vector<uint8_t> kc(n_el * esz), vc(n_el * esz);
            for (auto &b : kc) b = (uint8_t)tk_next();
            for (auto &b : vc) b = (uint8_t)tk_next();
            std::vector<uint8_t> kref = kc, vref = vc;
            for (int t = 0; t < T; t++) {
                const int blk = tables[(size_t)t * max_blocks + pos[t] / bs];
                if (blk < 0) continue;
                for (int h = 0; h < Hkv; h++)
                    for (int d = 0; d < D; d++) {
                        const size_t i = (((size_t)blk * Hkv + h) * bs + pos[t] % bs) * D + d;
                        const float kx = k[(size_t)t * W + h * D + d], vx = v[(size_t)t * W + h * D + d];
                        if (et == QT_F32) {
                            memcpy(&kref[4 * i], &kx, 4);
                            memcpy(&vref[4 * i], &vx, 4);
                        } else {
                            const uint16_t kh = et == QT_F16 ? qt_f32_to_f16(kx) : qt_f32_to_bf16(kx);
                            const uint16_t vh = et == QT_F16 ? qt_f32_to_f16(vx) : qt_f32_to_bf16(vx);
                            memcpy(&kref[2 * i], &kh, 2);
                            memcpy(&vref[2 * i], &vh, 2);
                        }
                    }
            }
            void *dkc = tk_dev(kc.data(), kc.size()), *dvc = tk_dev(vc.data(), vc.size());
            float *dk = (float *)tk_dev(k.data(), k.size() * 4), *dv = (float *)tk_dev(v.data(), v.size() * 4);
            int32_t *dp = (int32_t *)tk_dev(pos.data(), T * 4), *dt = (int32_t *)tk_dev(tables.data(), tables.size() * 4);
            int rc = cuk_kv_write(dkc, dvc, et, dk, dv, dp, dt, max_blocks, T, Hkv, D, bs, NULL);
            TK_CHECK(rc == 0, "cuk_kv_write rc %d (%s)", rc, cu_shim_last_message());
            tk_get(kc.data(), dkc, kc.size());
            tk_get(vc.data(), dvc, vc.size());
            for (size_t i = 0; i < kc.size(); i++) {
                TK_CHECK(kc[i] == kref[i], "order %d type %d k cache byte %zu: %02x vs %02x", o, et, i, kc[i], kref[i]);
                TK_CHECK(vc[i] == vref[i], "order %d type %d v cache byte %zu: %02x vs %02x", o, et, i, vc[i], vref[i]);
            }
            cudaFree(dkc);
            cudaFree(dvc);
            cudaFree(dk);
            cudaFree(dv);
            cudaFree(dp);
            cudaFree(dt);
        }
    }
    TK_CHECK(cuk_kv_write(NULL, NULL, QT_Q8_0, NULL, NULL, NULL, NULL, 1, 1, 1, 1, 1, NULL) ==
                 cudaErrorInvalidValue, "Q8_0 cache accepted");
    return tk_finish("test_k_kv");
}
