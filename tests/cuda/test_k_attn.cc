/* tests/cuda/test_k_attn.cc — k_attn.cu's attention over the paged KV cache under the CPU shim,
 * every thread order, against the CPU's kern_attn_group on the same cache contents.
 *
 * Each case builds a cache of one layer (f32, f16 or bf16; blocks of several sequences
 * interleaved in a shuffled pool, so tables are not the identity), a tensor-parallel head
 * layout (head0 not a multiple of the group, the rank's first KV head > 0) and queries, runs
 * the decode kernel (with and without the split-K merge), the prefill kernel, or
 * cuk_attention on a mixed batch, and holds max |gpu - cpu| / std(cpu) <= 1e-5. Also: a
 * shifted block table must fail that check (so the check can fail); decode is bit for bit
 * the same whatever max_ctx and the batch; bad arguments are refused.
 * Coverage: F32/F16/BF16 x D in {16, 32, 64, 128} x G in {1, 2, 4, 8} for both kernels,
 * contexts 1..300 across block and split boundaries, plus D = 24, 40, 256, G = 3, 7, 16,
 * block sizes 1, 5, 16, 32; sliding windows (ta_window_case) with the table entries before
 * each window set to -1 or to a block of NaN.
 */
#include "kernels/cuda/k_attn.cu"
#include "test_k_util.h"

#include <algorithm>

static const double TOL = 1e-5;
static double ta_worst = 0.0;   /* largest error / std over the cases that must pass */

/* a rank's view of a model and its cache of one layer */
struct ta_cache {
    int type, D, group, head0, H, kv_head0, Hkv, bs, n_blocks, max_blocks;
    std::vector<uint8_t> k, v;   /* (n_blocks, Hkv, bs, D) of type */
    std::vector<std::vector<int32_t>> seqs;   /* block table of each sequence */
    int spare;                                /* a block no sequence uses, all NaN */
    void *dk = nullptr, *dv = nullptr;
};

static size_t ta_esize(int type) { return type == QT_F32 ? 4 : 2; }

/* n_seq sequences of up to max_len positions; blocks drawn from a shuffled pool with spares */
static void ta_cache_make(ta_cache &c, int type, int D, int group, int n_kv_global, int tp,
                          int rank, int bs, int n_seq, int max_len) {
    const int n_heads = group * n_kv_global;
    c.type = type;
    c.D = D;
    c.group = group;
    c.H = n_heads / tp;
    c.head0 = rank * c.H;
    c.kv_head0 = c.head0 / group;
    c.Hkv = (c.head0 + c.H - 1) / group - c.kv_head0 + 1;
    c.bs = bs;
    c.max_blocks = (max_len + bs - 1) / bs;
    c.n_blocks = n_seq * c.max_blocks + 3;
    std::vector<int32_t> pool(c.n_blocks);
    for (int i = 0; i < c.n_blocks; i++) pool[i] = i;
    for (int i = c.n_blocks - 1; i > 0; i--) std::swap(pool[i], pool[tk_int(i + 1)]);
    c.seqs.assign(n_seq, std::vector<int32_t>(c.max_blocks));
    for (int s = 0, n = 0; s < n_seq; s++)
        for (int b = 0; b < c.max_blocks; b++) c.seqs[s][b] = pool[n++];
    const size_t n_el = (size_t)c.n_blocks * c.Hkv * bs * D;
    c.k.assign(n_el * ta_esize(type), 0);
    c.v.assign(n_el * ta_esize(type), 0);
    for (size_t i = 0; i < n_el; i++) {
        tk_elem_put(c.k, type, i, tk_unif(-1.0f, 1.0f));
        tk_elem_put(c.v, type, i, tk_unif(-1.0f, 1.0f));
    }
    c.spare = pool[c.n_blocks - 1];
    const size_t blk_el = (size_t)c.Hkv * bs * D;
    for (size_t i = 0; i < blk_el; i++) {
        tk_elem_put(c.k, type, (size_t)c.spare * blk_el + i, NAN);
        tk_elem_put(c.v, type, (size_t)c.spare * blk_el + i, NAN);
    }
    c.dk = tk_dev(c.k.data(), c.k.size());
    c.dv = tk_dev(c.v.data(), c.v.size());
}

static void ta_cache_free(ta_cache &c) {
    cudaFree(c.dk);
    cudaFree(c.dv);
}

/* a batch: query t of sequence seq[t] at position pos[t] */
struct ta_batch {
    int T;
    int window = 0;                          /* sliding window W, 0: none */
    std::vector<int32_t> pos, seq, tables;   /* tables (T, max_blocks) */
    std::vector<float> q;                    /* (T, H, D) */
};

static void ta_batch_fill(ta_batch &b, const ta_cache &c) {
    b.T = (int)b.pos.size();
    b.tables.resize((size_t)b.T * c.max_blocks);
    for (int t = 0; t < b.T; t++)
        memcpy(&b.tables[(size_t)t * c.max_blocks], c.seqs[b.seq[t]].data(), c.max_blocks * 4);
    b.q.resize((size_t)b.T * c.H * c.D);
    for (auto &x : b.q) x = tk_unif(-3.0f, 3.0f);   /* peaked enough that the mask matters */
}

/* Table entries of the blocks wholly before each query's window set to `poison`: -1 (as the
 * scheduler leaves them), or the cache's NaN block, which turns any read of them into NaN */
static void ta_poison(ta_batch &b, const ta_cache &c, int poison) {
    for (int t = 0; t < b.T; t++) {
        const int lo = am_window_first(b.pos[t], b.window);
        for (int blk = 0; (blk + 1) * c.bs <= lo; blk++)
            b.tables[(size_t)t * c.max_blocks + blk] = poison;
    }
}

/* the CPU's answer: kern_attn_group over each run of local heads that share a KV head (with
 * a window: the view starts at its first position, as runtime/backend_cpu.c does) */
static void ta_reference(std::vector<float> &ref, const ta_cache &c, const ta_batch &b) {
    const int D = c.D;
    ref.assign((size_t)b.T * c.H * D, 0.0f);
    int n_max = 1;
    for (int t = 0; t < b.T; t++) n_max = b.pos[t] + 1 > n_max ? b.pos[t] + 1 : n_max;
    std::vector<float> att((size_t)c.group * n_max);
    for (int t = 0; t < b.T; t++) {
        for (int h0 = 0; h0 < c.H;) {
            const int kvh = (c.head0 + h0) / c.group - c.kv_head0;
            int h1 = h0 + 1;
            while (h1 < c.H && (c.head0 + h1) / c.group - c.kv_head0 == kvh) h1++;
            kern_kv_view kv;
            memset(&kv, 0, sizeof kv);
            const size_t es = ta_esize(c.type), off = (size_t)kvh * c.bs * D * es;
            kv.k = c.k.data() + off;
            kv.v = c.v.data() + off;
            kv.table = &b.tables[(size_t)t * c.max_blocks];
            kv.block_size = c.bs;
            kv.block_stride = (size_t)c.Hkv * c.bs * D;
            kv.slot_stride = (size_t)D;
            kv.type = c.type;
            kv.first = am_window_first(b.pos[t], b.window);
            const size_t row = ((size_t)t * c.H + h0) * D;
            kern_attn_group(&ref[row], &b.q[row], h1 - h0, D, 1.0f / sqrtf((float)D),
                            b.pos[t] + 1 - kv.first, &kv, att.data());
            h0 = h1;
        }
    }
}

/* the exact answer, in double, for scale: how far the CPU and the GPU each are from it */
static double ta_exact_cpu = 0.0, ta_exact_gpu = 0.0;
static void ta_exact(std::vector<float> &ex, const ta_cache &c, const ta_batch &b) {
    const int D = c.D;
    ex.assign((size_t)b.T * c.H * D, 0.0f);
    for (int t = 0; t < b.T; t++)
        for (int h = 0; h < c.H; h++) {
            const int kvh = (c.head0 + h) / c.group - c.kv_head0, n = b.pos[t] + 1;
            const int first = am_window_first(b.pos[t], b.window);
            const float *q = &b.q[((size_t)t * c.H + h) * D];
            std::vector<double> w(n);
            std::vector<size_t> row(n);
            double mx = -INFINITY, l = 0.0;
            for (int p = first; p < n; p++) {
                const int32_t blk = b.tables[(size_t)t * c.max_blocks + p / c.bs];
                row[p] = (((size_t)blk * c.Hkv + kvh) * c.bs + p % c.bs) * D;
                double s = 0.0;
                for (int d = 0; d < D; d++) s += (double)q[d] * tk_elem_get(c.k, c.type, row[p] + d);
                w[p] = s / sqrt((double)D);
                mx = w[p] > mx ? w[p] : mx;
            }
            for (int p = first; p < n; p++) l += (w[p] = exp(w[p] - mx));
            for (int d = 0; d < D; d++) {
                double o = 0.0;
                for (int p = first; p < n; p++) o += w[p] * tk_elem_get(c.v, c.type, row[p] + d);
                ex[((size_t)t * c.H + h) * D + d] = (float)(o / l);
            }
        }
}

/* max |got - ref| / std(ref) */
static double ta_err(const std::vector<float> &got, const std::vector<float> &ref) {
    double s = 0.0, s2 = 0.0, e = 0.0;
    for (size_t i = 0; i < ref.size(); i++) {
        s += ref[i];
        s2 += (double)ref[i] * ref[i];
        const double d = fabs((double)got[i] - ref[i]);
        e = d > e || d != d ? d : e;
    }
    const double n = (double)ref.size(), var = s2 / n - (s / n) * (s / n);
    return e / sqrt(var > 1e-30 ? var : 1e-30);
}

enum { TA_DECODE, TA_PREFILL, TA_MIXED, TA_MIXED_NOSEQ };

/* runs one entry point on the batch; tables_dev overrides the batch's tables (the wrong-input
 * check). Returns the launch's rc; got receives out. */
static int ta_run(std::vector<float> &got, const ta_cache &c, const ta_batch &b, int mode,
                  int max_ctx, const std::vector<int32_t> *tables_override = nullptr) {
    const size_t n_out = (size_t)b.T * c.H * c.D;
    const std::vector<int32_t> &tab = tables_override ? *tables_override : b.tables;
    float *dq = (float *)tk_dev(b.q.data(), n_out * 4), *dout = (float *)tk_dev(NULL, n_out * 4);
    int32_t *dpos = (int32_t *)tk_dev(b.pos.data(), b.T * 4);
    int32_t *dtab = (int32_t *)tk_dev(tab.data(), tab.size() * 4);
    cuk_attn_args a;
    a.k = c.dk;
    a.v = c.dv;
    a.kv_type = c.type;
    a.Hkv = c.Hkv;
    a.block_size = c.bs;
    a.D = c.D;
    a.H = c.H;
    a.head0 = c.head0;
    a.group = c.group;
    a.kv_head0 = c.kv_head0;
    a.scale = 1.0f / sqrtf((float)c.D);
    a.window = b.window;
    a.tables = dtab;
    a.max_blocks = c.max_blocks;
    const size_t sb = cuk_attn_scratch_bytes(&a, b.T, max_ctx);
    void *scratch = sb ? tk_dev(NULL, sb) : NULL;
    int rc;
    if (mode == TA_DECODE)
        rc = cuk_attn_decode(&a, dout, dq, dpos, b.T, max_ctx, scratch, NULL);
    else if (mode == TA_PREFILL)
        rc = cuk_attn_prefill(&a, dout, dq, dpos, b.T, NULL);
    else
        rc = cuk_attention(&a, dout, dq, dpos, b.T, b.pos.data(),
                           mode == TA_MIXED ? b.seq.data() : NULL, max_ctx, scratch, NULL);
    got.resize(n_out);
    tk_get(got.data(), dout, n_out * 4);
    cudaFree(dq);
    cudaFree(dout);
    cudaFree(dpos);
    cudaFree(dtab);
    if (scratch) cudaFree(scratch);
    return rc;
}

static const char *ta_tname(int type) {
    return type == QT_F32 ? "F32" : type == QT_F16 ? "F16" : "BF16";
}

/* one entry point on one batch against the CPU */
static std::vector<float> ta_check(const char *what, const ta_cache &c, const ta_batch &b,
                                   int mode, int max_ctx, int order) {
    std::vector<float> ref, got;
    ta_reference(ref, c, b);
    const int rc = ta_run(got, c, b, mode, max_ctx);
    TK_CHECK(rc == 0, "%s: rc %d (%s)", what, rc, cu_shim_last_message());
    const double e = ta_err(got, ref);
    if (e > ta_worst) ta_worst = e;
    std::vector<float> ex;
    ta_exact(ex, c, b);
    const double ec = ta_err(ref, ex), eg = ta_err(got, ex);
    ta_exact_cpu = ec > ta_exact_cpu ? ec : ta_exact_cpu;
    ta_exact_gpu = eg > ta_exact_gpu ? eg : ta_exact_gpu;
    TK_CHECK(e <= TOL,
             "%s order %d %s D %d G %d head0 %d H %d bs %d T %d: max err / std %.3g > %.0e",
             what, order, ta_tname(c.type), c.D, c.group, c.head0, c.H, c.bs, b.T, e, TOL);
    return got;
}

/* decode: queries of the cache's sequences at positions across block and split boundaries,
 * run with max_ctx = the longest context (one pass when that is <= CUK_ATTN_SPLIT) and with
 * max_ctx = 1000 (split-K, empty splits, the merge): the same bits both ways */
static void ta_decode_case(ta_cache &c, int order, int T, int max_len) {
    static const int edge[] = {0, 1, 14, 15, 16, 17, 31, 32, 255, 256, 257, 299};
    ta_batch b;
    for (int t = 0; t < T; t++) {
        int p = tk_int(3) ? edge[tk_int((int)(sizeof edge / sizeof edge[0]))] : tk_int(max_len);
        b.pos.push_back(p < max_len ? p : max_len - 1);
        b.seq.push_back(tk_int((int)c.seqs.size()));
    }
    ta_batch_fill(b, c);
    const int longest = *std::max_element(b.pos.begin(), b.pos.end()) + 1;
    std::vector<float> g1 = ta_check("decode", c, b, TA_DECODE, longest, order);
    std::vector<float> g2 = ta_check("decode", c, b, TA_DECODE, 1000, order);
    int diff = 0;
    for (size_t i = 0; i < g1.size(); i++) diff += tk_bits(g1[i]) != tk_bits(g2[i]);
    TK_CHECK(diff == 0, "decode %s D %d G %d: %d values differ between max_ctx %d and 1000",
             ta_tname(c.type), c.D, c.group, diff, longest);
}

/* prefill: T consecutive positions from p0 of one sequence */
static void ta_prefill_case(ta_cache &c, int order, int p0, int T) {
    ta_batch b;
    const int s = tk_int((int)c.seqs.size());
    for (int t = 0; t < T; t++) {
        b.pos.push_back(p0 + t);
        b.seq.push_back(s);
    }
    ta_batch_fill(b, c);
    ta_check("prefill", c, b, TA_PREFILL, p0 + T, order);
}

/* cuk_attention on a mixed batch: decodes, a prefill run (>= CUK_ATTN_PREFILL_MIN), a short
 * run (decoded), more decodes; and with no sequence ids (all decoded) */
static void ta_mixed_batch(ta_batch &b, const ta_cache &c, int last, int run0) {
    const int plan[][3] = {{0, last - 10, 1}, {1, run0, 20}, {2, 5, 3}, {0, 299, 1}, {2, 8, 1}};
    for (const auto &r : plan)
        for (int i = 0; i < r[2]; i++) {
            b.pos.push_back(r[1] + i);
            b.seq.push_back(r[0]);
        }
    ta_batch_fill(b, c);
}

static void ta_mixed_case(int type, int order) {
    ta_cache c;
    ta_cache_make(c, type, 32, 4, 2, 2, 1, 16, 3, 300);
    ta_batch b;
    ta_mixed_batch(b, c, 300, 40);
    ta_check("cuk_attention", c, b, TA_MIXED, 300, order);
    ta_check("cuk_attention, no seq ids", c, b, TA_MIXED_NOSEQ, 300, order);
    ta_cache_free(c);
}

/* the check can fail: the same batch with each query's table shifted by one block */
static void ta_wrong_case(int order) {
    ta_cache c;
    ta_cache_make(c, QT_F16, 32, 2, 2, 2, 1, 16, 2, 300);
    ta_batch b;
    for (int t = 0; t < 20; t++) {
        b.pos.push_back(100 + t);
        b.seq.push_back(1);
    }
    ta_batch_fill(b, c);
    std::vector<int32_t> shifted = b.tables;
    for (int t = 0; t < b.T; t++) {
        int32_t *row = &shifted[(size_t)t * c.max_blocks];
        std::rotate(row, row + 1, row + c.max_blocks);
    }
    std::vector<float> ref, got;
    ta_reference(ref, c, b);
    for (int mode : {TA_DECODE, TA_PREFILL}) {
        TK_CHECK(ta_run(got, c, b, mode, 300, &shifted) == 0, "shifted table: rc");
        const double e = ta_err(got, ref);
        TK_CHECK(e > 1e-2, "order %d mode %d: a shifted table passes (err / std %.3g)", order,
                 mode, e);
        TK_CHECK(ta_run(got, c, b, mode, 300) == 0, "rc");
        TK_CHECK(ta_err(got, ref) <= TOL, "order %d mode %d: the unshifted table fails", order,
                 mode);
    }
    ta_cache_free(c);
}

/* batch invariance of decode: a query alone with max_ctx = its context (one pass) and in a
 * batch with max_ctx = 1000 (split-K and merge) give the same bits */
static void ta_invariance_case(int order) {
    ta_cache c;
    ta_cache_make(c, QT_BF16, 64, 4, 2, 1, 0, 16, 3, 1000);
    ta_batch big, one;
    for (int t = 0; t < 3; t++) {
        big.pos.push_back(t == 1 ? 200 : 700 + t);
        big.seq.push_back(t);
    }
    ta_batch_fill(big, c);
    one.pos = {200};
    one.seq = {1};
    ta_batch_fill(one, c);
    one.q.assign(big.q.begin() + (size_t)c.H * c.D, big.q.begin() + (size_t)2 * c.H * c.D);
    std::vector<float> gb = ta_check("decode, 1000 positions", c, big, TA_DECODE, 1000, order);
    std::vector<float> g1 = ta_check("decode, alone", c, one, TA_DECODE, 201, order);
    int diff = 0;
    for (size_t i = 0; i < g1.size(); i++)
        diff += tk_bits(g1[i]) != tk_bits(gb[(size_t)c.H * c.D + i]);
    TK_CHECK(diff == 0, "decode: %d values differ between the batch and the query alone", diff);
    ta_cache_free(c);
}

/* Sliding windows: W of 1, inside a block (7), one block (16), straddling a split (100 at
 * positions past 256), one split (256), longer than some contexts (300, 700), on a cache of
 * 600 positions (three splits). The blocks wholly before each query's window are poisoned in
 * its table: -1, as the scheduler leaves them, or the NaN block, which would turn any read of
 * them (even a masked one) into NaN. Decode must give the same bits for max_ctx = the longest
 * context and 1000 and for a query alone; prefill runs of consecutive positions from several
 * starts; cuk_attention on a mixed batch. */
static void ta_window_case(int type, int order) {
    ta_cache c;
    ta_cache_make(c, type, 32, 4, 2, 2, 1, 16, 3, 600);
    static const int edge[] = {0, 6, 7, 15, 16, 99, 100, 255, 256, 257, 299, 355, 511, 513, 599};
    for (int W : {1, 7, 16, 100, 256, 300, 700}) {
        for (int poison : {-1, c.spare}) {
            char what[96];
            snprintf(what, sizeof what, "window %d (poison %d) decode", W, poison);
            ta_batch b;
            b.window = W;
            for (int p : edge) {
                b.pos.push_back(p);
                b.seq.push_back(tk_int((int)c.seqs.size()));
            }
            ta_batch_fill(b, c);
            ta_poison(b, c, poison);
            const int longest = *std::max_element(b.pos.begin(), b.pos.end()) + 1;
            std::vector<float> g1 = ta_check(what, c, b, TA_DECODE, longest, order);
            std::vector<float> g2 = ta_check(what, c, b, TA_DECODE, 1000, order);
            int diff = 0;
            for (size_t i = 0; i < g1.size(); i++) diff += tk_bits(g1[i]) != tk_bits(g2[i]);
            TK_CHECK(diff == 0, "%s: %d values differ between max_ctx %d and 1000", what, diff,
                     longest);
            /* one query alone, max_ctx its own context */
            const int t1 = tk_int(b.T);
            ta_batch one;
            one.window = W;
            one.pos = {b.pos[t1]};
            one.seq = {b.seq[t1]};
            ta_batch_fill(one, c);
            ta_poison(one, c, poison);
            const size_t hd = (size_t)c.H * c.D;
            one.q.assign(b.q.begin() + t1 * hd, b.q.begin() + (t1 + 1) * hd);
            std::vector<float> ga = ta_check(what, c, one, TA_DECODE, b.pos[t1] + 1, order);
            diff = 0;
            for (size_t i = 0; i < hd; i++) diff += tk_bits(ga[i]) != tk_bits(g2[t1 * hd + i]);
            TK_CHECK(diff == 0, "%s: position %d alone differs from the batch in %d values",
                     what, b.pos[t1], diff);

            snprintf(what, sizeof what, "window %d (poison %d) prefill", W, poison);
            for (int p0 : {0, 90, 250, 470}) {
                ta_batch pb;
                pb.window = W;
                const int s = tk_int((int)c.seqs.size()), T = 17 + tk_int(24);
                for (int t = 0; t < T; t++) {
                    pb.pos.push_back(p0 + t);
                    pb.seq.push_back(s);
                }
                ta_batch_fill(pb, c);
                ta_poison(pb, c, poison);
                ta_check(what, c, pb, TA_PREFILL, p0 + T, order);
            }

            snprintf(what, sizeof what, "window %d (poison %d) cuk_attention", W, poison);
            ta_batch mb;
            mb.window = W;
            ta_mixed_batch(mb, c, 600, 240);
            ta_poison(mb, c, poison);
            ta_check(what, c, mb, TA_MIXED, 600, order);
        }
    }
    ta_cache_free(c);
}

static void ta_refusals(void) {
    cuk_attn_args a;
    memset(&a, 0, sizeof a);
    static float buf[64] __attribute__((aligned(16)));
    static int32_t ibuf[4] __attribute__((aligned(16)));
    a.k = a.v = buf;
    a.tables = ibuf;
    a.kv_type = QT_F32;
    a.Hkv = a.block_size = a.H = a.group = a.max_blocks = 1;
    a.D = 12;
    TK_CHECK(cuk_attn_decode(&a, buf, buf, ibuf, 1, 16, NULL, NULL) == cudaErrorInvalidValue,
             "D = 12 accepted");
    a.D = 264;
    TK_CHECK(cuk_attn_prefill(&a, buf, buf, ibuf, 1, NULL) == cudaErrorInvalidValue,
             "D = 264 accepted");
    a.D = 16;
    a.kv_type = QT_Q8_0;
    TK_CHECK(cuk_attn_prefill(&a, buf, buf, ibuf, 1, NULL) == cudaErrorInvalidValue,
             "Q8_0 cache accepted");
    a.kv_type = QT_F32;
    TK_CHECK(cuk_attn_decode(&a, buf, buf, ibuf, 1, 1000, NULL, NULL) == cudaErrorInvalidValue,
             "split-K without scratch accepted");
    TK_CHECK(cuk_attn_decode(&a, buf + 1, buf, ibuf, 1, 16, NULL, NULL) == cudaErrorInvalidValue,
             "unaligned out accepted");
    TK_CHECK(cuk_attention(&a, buf, buf, ibuf, 1, NULL, NULL, 16, NULL, NULL) ==
                 cudaErrorInvalidValue, "cuk_attention without host positions accepted");
    TK_CHECK(cuk_attn_decode(&a, buf, buf, ibuf, 0, 16, NULL, NULL) == 0, "T = 0 refused");
    a.window = -1;
    TK_CHECK(cuk_attn_decode(&a, buf, buf, ibuf, 1, 16, NULL, NULL) == cudaErrorInvalidValue,
             "window -1 accepted");
    a.window = 0;
    TK_CHECK(cuk_attn_scratch_bytes(&a, 3, 256) == 0 &&
                 cuk_attn_scratch_bytes(&a, 3, 257) == (size_t)3 * 1 * 2 * (16 + 2) * 4,
             "scratch bytes");
}

int main(void) {
    kern_init(NULL);
    const int types[] = {QT_F32, QT_F16, QT_BF16};
    TK_FOR_ORDERS(o) {
        /* the grid of the brief: every type, D and G, both kernels; n_kv 3 over tp 2 cuts a
         * group at the rank's first head whenever G > 1 (head0 = 3G/2) */
        for (int type : types)
            for (int D : {16, 32, 64, 128})
                for (int G : {1, 2, 4, 8}) {
                    ta_cache c;
                    const int max_len = 300;
                    ta_cache_make(c, type, D, G, G == 1 ? 4 : 3, 2, 1, 16, 3, max_len);
                    ta_decode_case(c, o, 3, max_len);
                    ta_prefill_case(c, o, tk_int(2) ? 0 : tk_int(250), 2 + tk_int(40));
                    ta_cache_free(c);
                }
        /* odd shapes: D whose row is not a power of two of lanes, D = 256, groups of 3, 7
         * (padded to 4, 8) and 16 (two units per KV head, one of them empty or cut by the rank's
         * head range), block sizes 1, 3, 5, 32, one rank */
        struct { int type, D, G, nkv, tp, rank, bs; } odd[] = {
            {QT_F16, 24, 3, 2, 3, 1, 5},    {QT_F32, 40, 7, 2, 1, 0, 1},
            {QT_BF16, 256, 2, 2, 2, 0, 32}, {QT_F32, 256, 1, 1, 1, 0, 16},
            {QT_F16, 64, 16, 1, 2, 1, 16},  {QT_BF16, 32, 16, 3, 4, 1, 3},
        };
        for (const auto &x : odd) {
            ta_cache c;
            ta_cache_make(c, x.type, x.D, x.G, x.nkv, x.tp, x.rank, x.bs, 2, 300);
            ta_decode_case(c, o, 3, 300);
            ta_prefill_case(c, o, tk_int(260), 1 + tk_int(40));
            ta_cache_free(c);
        }
        for (int type : types) ta_mixed_case(type, o);
        ta_wrong_case(o);
        ta_invariance_case(o);
        for (int type : types) ta_window_case(type, o);
    }
    ta_refusals();

    printf("attention: max error / std vs CPU %.3g (tolerance %.0e); vs exact (double): "
           "CPU %.3g, GPU %.3g\n", ta_worst, TOL, ta_exact_cpu, ta_exact_gpu);
    return tk_finish("test_k_attn");
}
