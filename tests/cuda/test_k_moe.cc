/* tests/cuda/test_k_moe.cc — the MoE kernels under the CPU shim, every thread order, against
 * the CPU backend's slots (runtime/backend_cpu.c) on random data.
 *
 * cuk_moe_route vs cpu__moe_route: softmax and sigmoid, with and without the selection bias,
 * normalised or not, k = 1, 2 and k = E, one group and 4 groups (2 kept), E = 8, 64 and 200
 * (more experts than threads), logits with many exact ties (ids must follow the lowest-id
 * rule): ids exactly, weights within 1e-6 relative (CUDA's expf against glibc's / the AVX2
 * one). A position whose groups hold fewer than k experts gets -1 ids.
 * cuk_sum_rows vs cpu__sum_rows and cuk_gather_rows vs cpu__gather_rows: bit for bit.
 * cuk_scatter_rows_scaled in the backend's expert loop (gather, products, SwiGLU, product,
 * scatter) vs cpu__moe_experts: bit for bit, the products taken on the host here with the
 * CPU's kern_matmul (the GEMV the backend uses is test_k_gemv's).
 * Not covered here (GPU only): backend_cuda.cu's cu__moe_route / cu__moe_experts glue (plan
 * upload, downloads, scratch).
 */
#include "kernels/cuda/k_moe.cu"
#include "kernels/cuda/k_ew.cu"
#include "test_k_util.h"


static void tr_case(backend *cpu, int E, int k, int ng, int ngu, int gating, int bias, int norm,
                    int ties) {
    const int T = 6;
    std::vector<float> lg((size_t)T * E), bs(E);
    for (auto &x : lg) x = ties ? (float)tk_int(4) * 0.5f - 1.0f : tk_unif(-4.0f, 4.0f);
    for (auto &x : bs) x = ties ? 0.25f * (float)tk_int(2) : tk_unif(-0.5f, 0.5f);
    const float scale = 2.5f;
    backend_route r = { E, k, ng, ngu, gating, norm, scale, bias ? bs.data() : NULL };
    std::vector<int32_t> ids((size_t)T * k), gids((size_t)T * k);
    std::vector<float> w((size_t)T * k), gw((size_t)T * k);
    TK_CHECK(cpu->i->moe_route(cpu, ids.data(), w.data(), lg.data(), T, &r) == 0, "cpu route: %s",
             backend_error(cpu));
    float *dlg = (float *)tk_dev(lg.data(), lg.size() * 4), *dbs = (float *)tk_dev(bs.data(), E * 4);
    int32_t *dids = (int32_t *)tk_dev(NULL, ids.size() * 4);
    float *dw = (float *)tk_dev(NULL, w.size() * 4);
    int rc = cuk_moe_route(dids, dw, dlg, bias ? dbs : NULL, T, E, k, ng, ngu, gating, norm, scale,
                           NULL);
    TK_CHECK(rc == 0, "cuk_moe_route rc %d (%s)", rc, cu_shim_last_message());
    tk_get(gids.data(), dids, gids.size() * 4);
    tk_get(gw.data(), dw, gw.size() * 4);
    for (size_t i = 0; i < ids.size(); i++) {
        TK_CHECK(gids[i] == ids[i], "E %d k %d groups %d/%d gating %d bias %d ties %d: id %zu %d vs cpu %d",
                 E, k, ngu, ng, gating, bias, ties, i, gids[i], ids[i]);
        TK_CHECK(fabsf(gw[i] - w[i]) <= 1e-6f * fabsf(w[i]) + 1e-12f,
                 "E %d k %d gating %d norm %d: weight %zu %.9g vs cpu %.9g", E, k, gating, norm, i,
                 gw[i], w[i]);
    }
    cudaFree(dlg); cudaFree(dbs); cudaFree(dids); cudaFree(dw);
}

/* fewer selectable experts than k: 2 groups of 4 kept of 8, k = 5 */
static void tr_short(void) {
    const int E = 16, k = 5;
    std::vector<float> lg(E);
    for (auto &x : lg) x = tk_unif(-1.0f, 1.0f);
    float *dlg = (float *)tk_dev(lg.data(), E * 4), *dw = (float *)tk_dev(NULL, k * 4);
    int32_t *dids = (int32_t *)tk_dev(NULL, k * 4);
    int rc = cuk_moe_route(dids, dw, dlg, NULL, 1, E, k, 4, 1, 2, 1, 1.0f, NULL);
    TK_CHECK(rc == 0, "cuk_moe_route rc %d", rc);
    std::vector<int32_t> ids(k);
    tk_get(ids.data(), dids, k * 4);
    for (int i = 0; i < k; i++)
        TK_CHECK((ids[i] < 0) == (i >= 4), "short routing id %d = %d", i, ids[i]);
    cudaFree(dlg); cudaFree(dw); cudaFree(dids);
}

static void tr_rows(backend *cpu) {
    const int n = 5, k = 3, C = 300;
    std::vector<float> y((size_t)n * k * C), ref((size_t)n * C), got((size_t)n * C);
    for (auto &x : y) x = tk_unif(-3.0f, 3.0f);
    cpu->i->sum_rows(cpu, ref.data(), y.data(), n, k, C);
    float *dy = (float *)tk_dev(y.data(), y.size() * 4), *dout = (float *)tk_dev(NULL, got.size() * 4);
    TK_CHECK(cuk_sum_rows(dout, dy, n, k, C, NULL) == 0, "cuk_sum_rows");
    tk_get(got.data(), dout, got.size() * 4);
    for (size_t i = 0; i < got.size(); i++)
        TK_CHECK(tk_bits(got[i]) == tk_bits(ref[i]), "sum_rows %zu: %.9g vs cpu %.9g", i, got[i], ref[i]);
    const int32_t rows[4] = {7, 0, 14, 7};
    cpu->i->gather_rows(cpu, ref.data(), y.data(), rows, 4, C);
    int32_t *drows = (int32_t *)tk_dev(rows, sizeof rows);
    TK_CHECK(cuk_gather_rows(dout, dy, drows, 4, C, NULL) == 0, "cuk_gather_rows");
    tk_get(got.data(), dout, (size_t)4 * C * 4);
    for (size_t i = 0; i < (size_t)4 * C; i++)
        TK_CHECK(tk_bits(got[i]) == tk_bits(ref[i]), "gather_rows %zu", i);
    cudaFree(dy); cudaFree(dout); cudaFree(drows);
}

/* the backend's expert loop with the kernels of this file and host products */
static void tr_experts(backend *cpu) {
    const int El = 3, C = 40, Fe = 24, T = 5, k = 2;
    std::vector<float> x((size_t)T * C), wg((size_t)El * Fe * C), wu(wg.size()), wd((size_t)El * C * Fe);
    for (auto &v : x) v = tk_unif(-1.0f, 1.0f);
    for (auto &v : wg) v = tk_unif(-0.3f, 0.3f);
    for (auto &v : wu) v = tk_unif(-0.3f, 0.3f);
    for (auto &v : wd) v = tk_unif(-0.3f, 0.3f);
    std::vector<kern_weight> g(El), u(El), d(El);
    for (int e = 0; e < El; e++) {
        g[e] = kern_weight{ &wg[(size_t)e * Fe * C], QT_F32, Fe, C, (size_t)C * 4, KERN_ROWS };
        u[e] = kern_weight{ &wu[(size_t)e * Fe * C], QT_F32, Fe, C, (size_t)C * 4, KERN_ROWS };
        d[e] = kern_weight{ &wd[(size_t)e * C * Fe], QT_F32, C, Fe, (size_t)Fe * 4, KERN_ROWS };
    }
    /* expert 0: tokens 0, 2, 4; expert 1: none; expert 2: tokens 0..4 but 2, and 2 */
    const int32_t off[El + 1] = {0, 3, 3, T * k};
    const int32_t row[T * k] = {0, 2, 4, 0, 1, 3, 4, 2, 1, 3};
    int32_t dst[T * k];
    float wt[T * k];
    int slot[T] = {0};
    for (int i = 0; i < T * k; i++) dst[i] = row[i] * k + slot[row[i]]++, wt[i] = tk_unif(0.1f, 2.0f);
    backend_moe m = { El, off, row, dst, wt, g.data(), u.data(), d.data() };
    std::vector<float> ref((size_t)T * k * C), got(ref.size());
    TK_CHECK(cpu->i->moe_experts(cpu, ref.data(), x.data(), C, &m) == 0, "cpu moe_experts");
    float *dx = (float *)tk_dev(x.data(), x.size() * 4), *dy = (float *)tk_dev(NULL, got.size() * 4);
    int32_t *drow = (int32_t *)tk_dev(row, sizeof row), *ddst = (int32_t *)tk_dev(dst, sizeof dst);
    float *dwt = (float *)tk_dev(wt, sizeof wt), *dg = (float *)tk_dev(NULL, (size_t)T * k * C * 4);
    float *dyd = (float *)tk_dev(NULL, (size_t)T * k * C * 4);
    for (int e = 0; e < El; e++) {
        const int p0 = off[e], n = off[e + 1] - p0;
        if (!n) continue;
        TK_CHECK(cuk_gather_rows(dg, dx, drow + p0, n, C, NULL) == 0, "gather");
        std::vector<float> xr((size_t)n * C), hg((size_t)n * Fe), hu(hg.size()), yd((size_t)n * C);
        tk_get(xr.data(), dg, xr.size() * 4);
        std::vector<uint8_t> scratch(kern_matmul_scratch(&g[e], n) + kern_matmul_scratch(&d[e], n) + 64);
        kern_matmul(NULL, hg.data(), &g[e], xr.data(), n, scratch.data());
        kern_matmul(NULL, hu.data(), &u[e], xr.data(), n, scratch.data());
        kern_swiglu(hg.data(), hg.data(), hu.data(), n * Fe);
        kern_matmul(NULL, yd.data(), &d[e], hg.data(), n, scratch.data());
        cudaMemcpy(dyd, yd.data(), yd.size() * 4, cudaMemcpyHostToDevice);
        TK_CHECK(cuk_scatter_rows_scaled(dy, dyd, ddst + p0, dwt + p0, n, C, NULL) == 0, "scatter");
    }
    tk_get(got.data(), dy, got.size() * 4);
    for (size_t i = 0; i < got.size(); i++)
        TK_CHECK(tk_bits(got[i]) == tk_bits(ref[i]), "experts %zu: %.9g vs cpu %.9g", i, got[i], ref[i]);
    cudaFree(dx); cudaFree(dy); cudaFree(drow); cudaFree(ddst); cudaFree(dwt); cudaFree(dg);
    cudaFree(dyd);
}

int main(void) {
    kern_init(NULL);
    backend *cpu = tk_cpu_backend();
    TK_FOR_ORDERS(o) {
        for (int gating = 1; gating <= 2; gating++)
            for (int ties = 0; ties < 2; ties++) {
                tr_case(cpu, 8, 2, 1, 1, gating, 1, 1, ties);
                tr_case(cpu, 8, 8, 1, 1, gating, 0, 1, ties);     /* k = E */
                tr_case(cpu, 8, 1, 1, 1, gating, 0, 0, ties);
                tr_case(cpu, 64, 6, 4, 2, gating, 1, 1, ties);    /* groups */
                tr_case(cpu, 64, 8, 8, 3, gating, 0, 0, ties);
                tr_case(cpu, 200, 8, 1, 1, gating, 1, 1, ties);   /* E > threads */
            }
        tr_short();
        tr_rows(cpu);
        tr_experts(cpu);
    }
    TK_CHECK(cuk_moe_route(NULL, NULL, NULL, NULL, 1, 8, 9, 1, 1, 2, 1, 1.0f, NULL) ==
                 cudaErrorInvalidValue, "k > E accepted");
    TK_CHECK(cuk_moe_route(NULL, NULL, NULL, NULL, 1, 10, 2, 4, 2, 2, 1, 1.0f, NULL) ==
                 cudaErrorInvalidValue, "E not a multiple of the groups accepted");
    cpu->i->free(cpu);
    return tk_finish("test_k_moe");
}
