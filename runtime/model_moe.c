/* runtime/model_moe.c — the DeepSeekMoE FFN half of a block, and expert parallelism.
 *
 * x += shared(h) + sum over the k chosen experts e of w_e * FFN_e(h), h = rmsnorm(x): the
 * router (ffn_gate_inp) scores the E experts (softmax or sigmoid), selection adds exp_probs_b
 * and may be group-limited, the weights come from the unbiased scores (normalised, scaled):
 * backend_route. The step's (token, expert) pairs are grouped by expert, so each expert's
 * weights are read once per step (backend_moe). A token's k results are summed in ascending
 * expert id, then the shared experts' output is added: the same floats whatever shares the
 * step, and whatever the expert-parallel layout.
 *
 * Expert parallelism (model_shard.ep > 1): rank r of the ep group holds experts
 * [E r / ep, E (r+1) / ep) and owns the step's tokens [r c, (r+1) c), c = ceil(T / ep). Every
 * rank routes every token (the router is small and replicated, so all ranks know the plan).
 * An owner sends each of its tokens' rows once to every rank holding one of its experts
 * (all-to-all), the expert ranks compute their pairs and send each pair's row back
 * (all-to-all), the owner sums its tokens' k rows in expert order and adds the shared experts,
 * and an all-gather gives every rank the whole (T, C) update. Rows travel in ascending token
 * order, so every buffer's order follows from the routing alone.
 */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "comm.h"
#include "model.h"
#include "model_state.h"

/* the ep rank that holds routed expert e */
static int moe__owner(const model *m, int e) {
    const int E = m->cfg.n_expert, ep = m->shard.ep;
    int d = (int)((int64_t)e * ep / E);
    while (d + 1 < ep && (int64_t)E * (d + 1) / ep <= e) d++;
    while (d > 0 && (int64_t)E * d / ep > e) d--;
    return d;
}

/* out (n, C) += the shared experts of in (n, C); out is a scratch row block of n rows */
static int moe__shared(const model *m, model_state *s, const model_layer *L, const float *in,
                       int n, float *tmp, float *out, char *err, size_t errlen) {
    backend *be = m->be;
    const int C = m->cfg.dim, Fs = (int)L->sh_gate.n_rows;
    if (!L->sh_gate.data || n == 0) return 0;
    BE(matmul_n(be, 2, (float *const[]){ s->hb, s->hb2 },
                (const kern_weight *const[]){ &L->sh_gate, &L->sh_up }, in, n));
    BE(swiglu(be, s->hb, s->hb2, (size_t)n * Fs));
    BE(matmul(be, tmp, &L->sh_down, s->hb, n));
    BE(add(be, out, tmp, (size_t)n * C));
    return 0;
}

int model_moe_half(const model *m, model_state *s, int l, int T, char *err, size_t errlen) {
    backend *be = m->be;
    const model_cfg *c = &m->cfg;
    const model_shard *sh = &m->shard;
    const model_layer *L = &m->layers[l];
    const int C = c->dim, k = c->n_expert_used, ep = sh->ep, me = sh->ep_rank;
    const int El = sh->n_expert, e0 = sh->expert0;
    const backend_route r = { c->n_expert, k, c->n_group, c->n_group_used, (int)c->gating,
                              c->expert_norm, c->expert_scale, L->exp_bias };
    BE(rmsnorm(be, s->xb, s->x, L->ffn_norm, T, C, c->norm_eps));       /* h = xb (T,C) */
    BE(matmul(be, s->elog, &L->w_router, s->xb, T));                     /* (T,E) */
    BE(moe_route(be, s->ids, s->wts, s->elog, T, &r));                   /* host (T,k) */

    /* the plan (host): per token, its row among those this rank receives and where its pairs
     * go in the send-back order (token-major, then expert) */
    int32_t *off = s->plan, *row = off + El + 1, *dst = row + (size_t)T * k;
    int32_t *rin = dst + (size_t)T * k, *base = rin + T, *jlo = base + T, *perm = jlo + T;
    float *pw = s->pw;
    size_t *cnt = s->counts;   /* (4, ep): send, its displs, recv, its displs (in floats) */
    int n_in = 0, n_back = 0;
    for (int t = 0; t < T; t++) {
        const int32_t *id = s->ids + (size_t)t * k;
        int j0 = 0, j1;
        while (j0 < k && id[j0] < e0) j0++;
        for (j1 = j0; j1 < k && id[j1] < e0 + El; j1++) {}
        jlo[t] = j0;
        rin[t] = j1 > j0 ? n_in++ : -1;
        base[t] = n_back;
        n_back += j1 - j0;
    }
    int n_pairs = 0;
    for (int e = 0; e < El; e++) {   /* pairs grouped by expert, tokens ascending */
        off[e] = n_pairs;
        for (int t = 0; t < T; t++)
            for (int j = jlo[t]; j < k && s->ids[(size_t)t * k + j] <= e0 + e; j++)
                if (s->ids[(size_t)t * k + j] == e0 + e) {
                    row[n_pairs] = rin[t];
                    dst[n_pairs] = base[t] + (j - jlo[t]);
                    pw[n_pairs++] = s->wts[(size_t)t * k + j];
                }
    }
    off[El] = n_pairs;
    const backend_moe mo = { El, off, row, dst, pw, L->exp_gate, L->exp_up, L->exp_down };

    if (ep == 1) {   /* every expert here: rows are the tokens, pairs land in (t, j) order */
        BE(moe_experts(be, s->ypair, s->xb, C, &mo));
        BE(sum_rows(be, s->mout, s->ypair, T, k, C));
        if (moe__shared(m, s, L, s->xb, T, s->xsend, s->mout, err, errlen)) return -1;
        BE(add(be, s->x, s->mout, (size_t)T * C));
        return 0;
    }

    const int chunk = (T + ep - 1) / ep;
    const int t0 = me * chunk < T ? me * chunk : T, t1 = t0 + chunk < T ? t0 + chunk : T;
    const int n_own = t1 - t0;
    size_t *sc = cnt, *sd = cnt + ep, *rc = cnt + 2 * ep, *rd = cnt + 3 * ep;
    /* dispatch: each owned token's row once to every rank holding one of its experts */
    int n_send = 0;
    for (int d = 0; d < ep; d++) {
        sd[d] = (size_t)n_send * C;
        for (int t = t0; t < t1; t++) {
            const int32_t *id = s->ids + (size_t)t * k;
            int has = 0;
            for (int j = 0; j < k && !has; j++) has = moe__owner(m, id[j]) == d;
            if (has) perm[n_send++] = t;
        }
        sc[d] = (size_t)n_send * C - sd[d];
    }
    for (int q = 0, at = 0; q < ep; q++) {   /* from q: its tokens with an expert here */
        int q0 = q * chunk < T ? q * chunk : T, q1 = q0 + chunk < T ? q0 + chunk : T, n = 0;
        for (int t = q0; t < q1; t++) n += rin[t] >= 0;
        rd[q] = (size_t)at * C;
        rc[q] = (size_t)n * C;
        at += n;
    }
    if (n_send) BE(gather_rows(be, s->xsend, s->xb, perm, n_send, C));
    COMM(sh->ep_dev, comm_alltoallv(sh->ep_dev, s->xsend, sc, sd, s->xrecv, rc, rd, COMM_F32));
    BE(moe_experts(be, s->ypair, s->xrecv, C, &mo));   /* pairs in send-back order */
    /* combine: pairs back to their tokens' owners, each token's k rows in (t, j) order */
    for (int q = 0; q < ep; q++) {   /* to q: the pairs of its tokens, a contiguous run */
        int q0 = q * chunk < T ? q * chunk : T, q1 = q0 + chunk < T ? q0 + chunk : T;
        int start = q0 < T ? base[q0] : n_back, end = q1 < T ? base[q1] : n_back;
        sd[q] = (size_t)start * C;
        sc[q] = (size_t)(end - start) * C;
    }
    size_t cur[ep];
    for (int d = 0, at = 0; d < ep; d++) {
        int n = 0;
        for (int t = t0; t < t1; t++)
            for (int j = 0; j < k; j++) n += moe__owner(m, s->ids[(size_t)t * k + j]) == d;
        rd[d] = (size_t)at * C;
        rc[d] = (size_t)n * C;
        cur[d] = (size_t)at;
        at += n;
    }
    COMM(sh->ep_dev, comm_alltoallv(sh->ep_dev, s->ypair, sc, sd, s->ycomb, rc, rd, COMM_F32));
    for (int t = t0; t < t1; t++)
        for (int j = 0; j < k; j++)
            perm[(size_t)(t - t0) * k + j] = (int32_t)cur[moe__owner(m, s->ids[(size_t)t * k + j])]++;
    float *own = s->ycomb;   /* free once gathered: holds this rank's (n_own, C) result */
    if (n_own) {
        BE(gather_rows(be, s->ypair, s->ycomb, perm, n_own * k, C));
        BE(sum_rows(be, own, s->ypair, n_own, k, C));
        if (moe__shared(m, s, L, s->xb + (size_t)t0 * C, n_own, s->xsend, own, err, errlen))
            return -1;
    }
    COMM(sh->ep_dev, comm_allgather(sh->ep_dev, own, s->mout, (size_t)chunk * C, COMM_F32));
    BE(add(be, s->x, s->mout, (size_t)T * C));   /* rows beyond T are the last rank's padding */
    return 0;
}
