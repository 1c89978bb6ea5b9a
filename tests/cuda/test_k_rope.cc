/* tests/cuda/test_k_rope.cc — k_rope.cu under the CPU shim, every thread order, against
 * kern_rope (the CPU): normal and neox pairing, partial rotation, freq factors, positions up to
 * 500000, linear and YaRN scaling; within 1e-6 relative (1e-6 absolute near zero). Also om_sincos against glibc's
 * sinf/cosf over many angles (in ulps), and om_rope_theta against the CPU's running product. */
#include "kernels/cuda/k_rope.cu"
#include "test_k_util.h"


int main(void) {
    kern_init(NULL);
    /* om_sincos vs glibc */
    double max_ulp = 0.0, max_abs = 0.0;
    for (int i = 0; i < 400000; i++) {
        float t = i < 200000 ? tk_unif(-7.0f, 7.0f) : tk_unif(-600000.0f, 600000.0f);
        if (i % 97 == 0) t = (float)(i / 97);   /* integer positions, as theta of pair 0 */
        float s, c;
        om_sincos(t, &s, &c);
        const float gs = sinf(t), gc = cosf(t);
        const double es = fabs((double)s - gs), ec = fabs((double)c - gc);
        max_abs = fmax(max_abs, fmax(es, ec));
        /* ulps of the larger magnitude's spacing */
        const double us = es / (double)(nextafterf(fabsf(gs), INFINITY) - fabsf(gs));
        const double uc = ec / (double)(nextafterf(fabsf(gc), INFINITY) - fabsf(gc));
        max_ulp = fmax(max_ulp, fmax(us, uc));
        TK_CHECK(us <= 1.0 && uc <= 1.0, "om_sincos(%.9g) = %.9g %.9g, glibc %.9g %.9g", t, s, c, gs, gc);
    }
    printf("om_sincos vs glibc: max %.2f ulp, max abs %.3g\n", max_ulp, max_abs);

    /* theta bits */
    for (int pos = 0; pos < 5000; pos += 37) {
        const float sc = om_rope_theta_scale(10000.0f, 128);
        float th = (float)pos;
        for (int i = 0; i < 64; i++) {
            TK_CHECK(tk_bits(om_rope_theta(pos, sc, i)) == tk_bits(th), "theta pos %d i %d", pos, i);
            th *= sc;
        }
    }

    /* scal: 0 none, 1 linear (factor 4), 2 YaRN (factor 4, 256 original positions) */
    struct { int H, D, n_rot, neox, ff; float base; int scal; } cases[] = {
        {3, 64, 64, 0, 0, 10000.0f, 0}, {3, 64, 64, 1, 0, 10000.0f, 0}, {2, 32, 16, 0, 0, 10000.0f, 0},
        {2, 32, 16, 1, 1, 500000.0f, 0}, {4, 128, 128, 1, 1, 500000.0f, 0}, {5, 16, 8, 0, 1, 1000000.0f, 0},
        {3, 64, 64, 1, 0, 10000.0f, 1}, {2, 32, 16, 0, 1, 500000.0f, 1}, {3, 64, 64, 1, 0, 10000.0f, 2},
        {4, 128, 128, 0, 1, 1000000.0f, 2},
    };
    const int pos_pool[] = {0, 1, 2, 17, 511, 4095, 32767, 131071, 500000};
    double max_rel = 0.0;
    TK_FOR_ORDERS(o) {
        for (auto &c : cases) {
            const int T = 5, n = c.H * c.D;
            std::vector<float> x((size_t)T * n), ref, got((size_t)T * n), ff(c.n_rot / 2);
            std::vector<int32_t> pos(T);
            for (auto &v : x) v = tk_unif(-3.0f, 3.0f);
            for (auto &v : ff) v = tk_unif(1.0f, 8.0f);
            for (auto &p : pos) p = pos_pool[tk_int(9)];
            ref = x;
            kern_rope_scaling sc = {};
            if (c.scal) sc.freq_scale = 0.25f, sc.ext_factor = c.scal == 2 ? 1.0f : 0.0f;
            if (c.scal == 2) om_rope_yarn_corr(c.n_rot, 256, c.base, 32.0f, 1.0f, &sc.corr_lo, &sc.corr_hi);
            for (int t = 0; t < T; t++)
                kern_rope(&ref[(size_t)t * n], c.H, c.D, c.n_rot, pos[t], c.base, c.neox,
                          c.ff ? ff.data() : NULL, &sc);
            float *dx = (float *)tk_dev(x.data(), x.size() * 4);
            int32_t *dp = (int32_t *)tk_dev(pos.data(), T * 4);
            float *dff = (float *)tk_dev(ff.data(), ff.size() * 4);
            int rc = cuk_rope(dx, dp, T, c.H, c.D, c.n_rot, c.base, c.neox, c.ff ? dff : NULL, &sc, NULL);
            TK_CHECK(rc == 0, "cuk_rope rc %d (%s)", rc, cu_shim_last_message());
            tk_get(got.data(), dx, got.size() * 4);
            for (size_t i = 0; i < got.size(); i++) {
                const double err = fabs((double)got[i] - ref[i]);
                const double rel = err / fmax(fabs((double)ref[i]), 1.0);
                if (rel > max_rel) max_rel = rel;
                TK_CHECK(err <= 1e-6 * fmax(fabs((double)ref[i]), 1.0),
                         "order %d H %d D %d n_rot %d neox %d i %zu pos %d: %.9g vs cpu %.9g", o,
                         c.H, c.D, c.n_rot, c.neox, i, pos[i / n], got[i], ref[i]);
            }
            cudaFree(dx);
            cudaFree(dp);
            cudaFree(dff);
        }
    }
    printf("rope: max error vs CPU %.3g (relative, absolute below 1)\n", max_rel);
    return tk_finish("test_k_rope");
}
