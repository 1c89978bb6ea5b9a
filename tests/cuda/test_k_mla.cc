/* tests/cuda/test_k_mla.cc — k_mla.cu's latent attention kernels under the CPU shim, every
 * thread order, against the CPU backend's slots (runtime/backend_cpu.c) on random data.
 *
 * Cache write (cuk_mla_kv_write): two sequences whose positions fall in different blocks of
 * a shuffled table, a skipped position (block -1), F32/F16/BF16 caches, no scaling / YaRN with
 * freq factors. Bit for bit against cuk_rmsnorm then cuk_rope on the same rows rounded by
 * qt_f32_to_f16 / qt_f32_to_bf16 (the same arithmetic), and against cpu__mla_kv_write within
 * 1e-6 relative plus one unit of the cache type (kern_rmsnorm and glibc's sin/cos may round a
 * float differently: test_k_norm / test_k_rope).
 * Attention (cuk_mla_attention): the CPU's cpu__mla_attention on a filled cache gives the
 * rotated q, the absorbed qlat and olat; the kernel on that qlat must give olat within 1e-5 x
 * its standard deviation (only the float order differs), for H = 3 (one block of heads), 11
 * (8 + 3) and contexts across the kernel's 32-position chunks; cuk_rope on q's RoPE parts at
 * offset Dn (how the backend rotates them) must give the CPU's q within 1e-6.
 * Not covered here (GPU only): the backend's glue in backend_cuda.cu (per-head products through
 * cu__matmul, the strided device copies).
 */
#include "kernels/cuda/k_mla.cu"
#include "kernels/cuda/k_norm.cu"
#include "kernels/cuda/k_rope.cu"
#include "test_k_util.h"


static float tm_unit(int type, float x) {   /* one unit in the last place of the cache type */
    const float m = fabsf(x) > 1e-4f ? fabsf(x) : 1e-4f;
    return type == QT_F32 ? 0.0f : type == QT_F16 ? m / 1024.0f : m / 128.0f;
}

/* a batch: T positions of two sequences, tables (T, max_blocks) and per-position pointers */
struct tm_batch {
    int T, bs, max_blocks, n_blocks;
    std::vector<int32_t> pos, tab, tok;
    std::vector<const int32_t *> rows;
    backend_batch bb;
};

static void tm_batch_make(tm_batch &b, int bs, int lenA, int lenB, int n_blocks) {
    b.bs = bs;
    b.n_blocks = n_blocks;
    b.max_blocks = ((lenA > lenB ? lenA : lenB) + bs - 1) / bs;
    std::vector<int32_t> pool(n_blocks);
    for (int i = 0; i < n_blocks; i++) pool[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) std::swap(pool[i], pool[tk_int(i + 1)]);
    /* the last positions of each sequence: A's last 3 and B's last 2 (contexts lenA, lenB) */
    b.T = 5;
    const int pp[5] = {lenA - 3, lenB - 2, lenA - 2, lenB - 1, lenA - 1};
    b.pos.assign(pp, pp + 5);
    b.tab.resize((size_t)b.T * b.max_blocks);
    for (int t = 0; t < b.T; t++)
        for (int i = 0; i < b.max_blocks; i++)
            b.tab[(size_t)t * b.max_blocks + i] = pool[(t % 2) * b.max_blocks + i];
    b.tok.assign(b.T, 0);
    b.rows.resize(b.T);
    for (int t = 0; t < b.T; t++) b.rows[t] = &b.tab[(size_t)t * b.max_blocks];
    b.bb = backend_batch{ b.T, b.tok.data(), b.pos.data(), b.rows.data(), b.max_blocks, bs };
}

static void tm_kv_write(backend *cpu, int type, int scal) {
    const int R = 16, Dr = 8, D = R + Dr, L = 2, l = 1;
    tm_batch b;
    tm_batch_make(b, 4, 11, 6, 8);
    const size_t es = type == QT_F32 ? 4 : 2, layer = (size_t)b.n_blocks * b.bs * D;
    std::vector<float> kva((size_t)b.T * D), norm(R), ff(Dr / 2);
    for (auto &x : kva) x = tk_unif(-3.0f, 3.0f);
    for (auto &x : norm) x = tk_unif(-1.5f, 1.5f);
    for (auto &x : ff) x = tk_unif(1.0f, 4.0f);
    kern_rope_scaling sc = {};
    if (scal) {
        sc.freq_scale = 0.25f;
        sc.ext_factor = 1.0f;
        sc.attn_factor = 1.2f;
        om_rope_yarn_corr(Dr, 64, 10000.0f, 32.0f, 1.0f, &sc.corr_lo, &sc.corr_hi);
    }
    const float eps = 1e-6f, base = 10000.0f;
    const float *ffp = scal ? ff.data() : NULL;
    std::vector<uint8_t> cache(L * layer * es);
    for (auto &x : cache) x = (uint8_t)tk_next();
    std::vector<uint8_t> ref = cache;
    backend_kv kv = { ref.data(), NULL, type, L, b.n_blocks, 1, b.bs, D };
    backend_mla a = {};
    a.rank = R;
    a.rope_dims = Dr;
    a.rope = backend_rope{ Dr, base, 0, ffp, sc };
    TK_CHECK(cpu->i->batch(cpu, &b.bb) == 0, "cpu batch");
    TK_CHECK(cpu->i->mla_kv_write(cpu, &kv, l, kva.data(), norm.data(), eps, b.T, &a) == 0,
             "cpu mla_kv_write");
    /* the same rows through cuk_rmsnorm and cuk_rope */
    std::vector<float> lat((size_t)b.T * R), key((size_t)b.T * Dr);
    for (int t = 0; t < b.T; t++) {
        memcpy(&lat[(size_t)t * R], &kva[(size_t)t * D], R * 4);
        memcpy(&key[(size_t)t * Dr], &kva[(size_t)t * D + R], Dr * 4);
    }
    float *dlat = (float *)tk_dev(lat.data(), lat.size() * 4), *dkey = (float *)tk_dev(key.data(), key.size() * 4);
    float *dnorm = (float *)tk_dev(norm.data(), R * 4), *dff = (float *)tk_dev(ff.data(), ff.size() * 4);
    int32_t *dpos = (int32_t *)tk_dev(b.pos.data(), b.T * 4);
    std::vector<int32_t> tab = b.tab;
    tab[(size_t)2 * b.max_blocks + b.pos[2] / b.bs] = -1;   /* position 2: skipped */
    int32_t *dtab = (int32_t *)tk_dev(tab.data(), tab.size() * 4);
    TK_CHECK(cuk_rmsnorm(dlat, dlat, dnorm, b.T, R, eps, NULL) == 0, "cuk_rmsnorm");
    TK_CHECK(cuk_rope(dkey, dpos, b.T, 1, Dr, Dr, base, 0, scal ? dff : NULL, &sc, NULL) == 0, "cuk_rope");
    tk_get(lat.data(), dlat, lat.size() * 4);
    tk_get(key.data(), dkey, key.size() * 4);
    std::vector<uint8_t> exact = cache;
    for (int t = 0; t < b.T; t++) {
        const int blk = tab[(size_t)t * b.max_blocks + b.pos[t] / b.bs];
        if (blk < 0) continue;
        for (int d = 0; d < D; d++) {
            const size_t i = l * layer + ((size_t)blk * b.bs + b.pos[t] % b.bs) * D + d;
            const float x = d < R ? lat[(size_t)t * R + d] : key[(size_t)t * Dr + d - R];
            tk_elem_put(exact, type, i, x);
        }
    }
    float *dkva = (float *)tk_dev(kva.data(), kva.size() * 4);
    void *dc = tk_dev(cache.data(), cache.size());
    int rc = cuk_mla_kv_write((char *)dc + l * layer * es, type, dkva, dnorm, eps, dpos, dtab,
                              b.max_blocks, b.T, R, Dr, b.bs, base, scal ? dff : NULL, &sc, NULL);
    TK_CHECK(rc == 0, "cuk_mla_kv_write rc %d (%s)", rc, cu_shim_last_message());
    std::vector<uint8_t> got(cache.size());
    tk_get(got.data(), dc, got.size());
    for (size_t i = 0; i < got.size(); i++)
        TK_CHECK(got[i] == exact[i], "type %d scal %d byte %zu: %02x vs norm+rope %02x", type, scal,
                 i, got[i], exact[i]);
    /* against the CPU slot, where position 2 was written too */
    for (int t = 0; t < b.T; t++) {
        if (t == 2) continue;
        const int blk = b.tab[(size_t)t * b.max_blocks + b.pos[t] / b.bs];
        for (int d = 0; d < D; d++) {
            const size_t i = l * layer + ((size_t)blk * b.bs + b.pos[t] % b.bs) * D + d;
            const float g = tk_elem_get(got, type, i), r = tk_elem_get(ref, type, i);
            TK_CHECK(fabsf(g - r) <= 1e-6f * fabsf(r) + tm_unit(type, r) + 1e-30f,
                     "type %d scal %d t %d d %d: %.9g vs cpu %.9g", type, scal, t, d, g, r);
        }
    }
    cudaFree(dlat); cudaFree(dkey); cudaFree(dnorm); cudaFree(dff); cudaFree(dpos);
    cudaFree(dtab); cudaFree(dkva); cudaFree(dc);
}

static double tm_worst = 0.0;

static void tm_attention(backend *cpu, int type, int H, int lenA, int lenB) {
    const int R = 16, Dr = 8, D = R + Dr, Dn = 16, Dq = Dn + Dr, Dv = 16, L = 1;
    tm_batch b;
    tm_batch_make(b, 5, lenA, lenB, 2 * ((lenA > lenB ? lenA : lenB) + 4) / 5 + 2);
    const size_t es = type == QT_F32 ? 4 : 2, layer = (size_t)b.n_blocks * b.bs * D;
    std::vector<uint8_t> cache(L * layer * es);
    for (size_t i = 0; i < layer; i++) {
        const float x = tk_unif(-2.0f, 2.0f);
        tk_elem_put(cache, type, i, x);
    }
    std::vector<float> q((size_t)b.T * H * Dq), kbw((size_t)H * R * Dn), vbw((size_t)H * Dv * R);
    for (auto &x : q) x = tk_unif(-1.0f, 1.0f);
    for (auto &x : kbw) x = tk_unif(-0.5f, 0.5f);
    for (auto &x : vbw) x = tk_unif(-0.5f, 0.5f);
    std::vector<kern_weight> kb(H), vb(H);
    for (int h = 0; h < H; h++) {
        kb[h] = kern_weight{ &kbw[(size_t)h * R * Dn], QT_F32, R, Dn, (size_t)Dn * 4, KERN_ROWS };
        vb[h] = kern_weight{ &vbw[(size_t)h * Dv * R], QT_F32, Dv, R, (size_t)R * 4, KERN_ROWS };
    }
    backend_kv kv = { cache.data(), NULL, type, L, b.n_blocks, 1, b.bs, D };
    backend_mla a = {};
    a.n_heads = H;
    a.rank = R;
    a.nope_dims = Dn;
    a.rope_dims = Dr;
    a.v_dim = Dv;
    a.scale = 1.0f / sqrtf((float)Dq);
    a.k_b = kb.data();
    a.v_b = vb.data();
    a.rope = backend_rope{ Dr, 10000.0f, 0, NULL, {} };
    std::vector<float> qcpu = q, qlat((size_t)b.T * H * D), olat((size_t)b.T * H * R),
                       out((size_t)b.T * H * Dv);
    TK_CHECK(cpu->i->batch(cpu, &b.bb) == 0, "cpu batch");
    TK_CHECK(cpu->i->mla_attention(cpu, &kv, 0, out.data(), qcpu.data(), qlat.data(), olat.data(),
                                   b.T, &a) == 0, "cpu mla_attention");
    /* q's RoPE parts in place, as the backend rotates them */
    float *dq = (float *)tk_dev(q.data(), q.size() * 4);
    int32_t *dpos = (int32_t *)tk_dev(b.pos.data(), b.T * 4);
    int32_t *dtab = (int32_t *)tk_dev(b.tab.data(), b.tab.size() * 4);
    TK_CHECK(cuk_rope(dq + Dn, dpos, b.T, H, Dq, Dr, 10000.0f, 0, NULL, NULL, NULL) == 0, "cuk_rope q");
    std::vector<float> qg(q.size());
    tk_get(qg.data(), dq, qg.size() * 4);
    for (size_t i = 0; i < qg.size(); i++)
        TK_CHECK(fabsf(qg[i] - qcpu[i]) <= 1e-6f * fmaxf(fabsf(qcpu[i]), 1.0f),
                 "rotated q %zu: %.9g vs cpu %.9g", i, qg[i], qcpu[i]);
    float *dql = (float *)tk_dev(qlat.data(), qlat.size() * 4), *dol = (float *)tk_dev(NULL, olat.size() * 4);
    void *dc = tk_dev(cache.data(), cache.size());
    int rc = cuk_mla_attention(dc, type, b.bs, D, R, dol, dql, dpos, dtab, b.max_blocks, b.T, H,
                               a.scale, NULL);
    TK_CHECK(rc == 0, "cuk_mla_attention rc %d (%s)", rc, cu_shim_last_message());
    std::vector<float> got(olat.size());
    tk_get(got.data(), dol, got.size() * 4);
    double mean = 0.0, var = 0.0, worst = 0.0;
    for (float x : olat) mean += x;
    mean /= (double)olat.size();
    for (float x : olat) var += (x - mean) * (x - mean);
    const double sd = sqrt(var / (double)olat.size());
    for (size_t i = 0; i < got.size(); i++) worst = fmax(worst, fabs((double)got[i] - olat[i]) / sd);
    if (worst > tm_worst) tm_worst = worst;
    TK_CHECK(worst <= 1e-5, "type %d H %d contexts %d/%d: max error %.3g x std", type, H, lenA,
             lenB, worst);
    cudaFree(dq); cudaFree(dpos); cudaFree(dtab); cudaFree(dql); cudaFree(dol); cudaFree(dc);
}

int main(void) {
    kern_init(NULL);
    backend *cpu = tk_cpu_backend();
    char err[64];
    TK_FOR_ORDERS(o) {
        for (int type : {QT_F32, QT_F16, QT_BF16}) {
            tm_kv_write(cpu, type, 0);
            tm_kv_write(cpu, type, 1);
            tm_attention(cpu, type, 3, 9, 4);
            tm_attention(cpu, type, 11, 70, 33);
        }
    }
    printf("mla attention: max error vs CPU %.3g x std\n", tm_worst);
    TK_CHECK(cuk_mla_kv_write(NULL, QT_Q8_0, NULL, NULL, 0, NULL, NULL, 1, 1, 16, 8, 4, 1e4f, NULL,
                              NULL, NULL) == cudaErrorInvalidValue, "Q8_0 cache accepted");
    TK_CHECK(cuk_mla_attention(&err, QT_F32, 4, 8192, 8192, (float *)err, (const float *)err,
                               (const int32_t *)err, (const int32_t *)err, 1, 1, 1, 1.0f, NULL) ==
                 cudaErrorInvalidValue, "a head over 48 KB of shared memory accepted");
    cpu->i->free(cpu);
    return tk_finish("test_k_mla");
}
