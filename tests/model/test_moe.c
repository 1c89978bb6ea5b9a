/* tests/model/test_moe.c — the CPU backend's DeepSeekMoE slots against hand-worked cases.
 *
 * moe_route (backend_route), each case's expected experts and weights worked out by hand from
 * DeepSeek's rules (as llama.cpp's build_moe_ffn applies them), not by running the code:
 *   1. sigmoid scores + selection bias: the bias changes which experts win, the weights are
 *      the unbiased scores, normalised to sum 1, then scaled;
 *   2. group-limited routing: 4 groups of 2, 2 kept by the sum of each group's top-2 scores;
 *      the overall top-2 lies in a dropped group and must not be chosen;
 *   3. softmax gating without normalisation (DeepSeek-V2): weights = softmax probabilities x
 *      scale; ties go to the lowest id; ids come out ascending;
 *   4. k = E: every expert, ascending.
 * moe_experts / sum_rows / gather_rows: an identity-like expert (F32 weights) on chosen rows,
 * each pair scaled by its weight and written to its dst row; sum_rows adds k rows in order.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"

static int n_pass, n_fail;

static void check(int ok, const char *what) {
    if (ok) n_pass++;
    else n_fail++;
    printf("%s: %s\n", ok ? "ok" : "FAIL", what);
}

static float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

static int near(float a, float b) { return fabsf(a - b) <= 1e-6f * (1.0f + fabsf(b)); }

int main(void) {
    char err[256];
    kern_init(NULL);
    backend_opts o = { "cpu", 2, -1 };
    backend *b = backend_new(&o, err, sizeof err);
    if (!b) {
        printf("FAIL: cpu backend: %s\n", err);
        return 1;
    }
    const backend_i *bi = b->i;
    int32_t ids[16];
    float w[16];

    { /* 1. sigmoid + bias: logits favour 0 and 1, the bias lifts 5 and 6 over them */
        float lg[8] = { 2.0f, 1.5f, -1.0f, -2.0f, 0.0f, 0.5f, 0.2f, -0.5f };
        float bias[8] = { 0, 0, 0, 0, 0, 1.0f, 1.0f, 0 };
        backend_route r = { 8, 2, 1, 1, 2, 1, 2.5f, bias };
        /* selection: sigm(2)=.881, sigm(1.5)=.818, sigm(.5)+1=1.622, sigm(.2)+1=1.550 -> 5, 6 */
        int rc = bi->moe_route(b, ids, w, lg, 1, &r);
        float s5 = sigm(0.5f), s6 = sigm(0.2f);
        check(rc == 0 && ids[0] == 5 && ids[1] == 6, "sigmoid + bias: the bias picks experts 5, 6");
        check(near(w[0], 2.5f * s5 / (s5 + s6)) && near(w[1], 2.5f * s6 / (s5 + s6)),
              "sigmoid + bias: weights are the unbiased scores, normalised, x 2.5");
    }
    { /* 2. group-limited: groups {0,1} {2,3} {4,5} {6,7}; expert 7 alone is the best, but its
       * group's top-2 sum (7 with 6 very low) loses to groups {0,1} and {2,3} */
        float lg[8] = { 1.0f, 0.9f, 0.8f, 0.95f, -3.0f, -3.0f, -4.0f, 3.0f };
        backend_route r = { 8, 2, 4, 2, 2, 0, 1.0f, NULL };
        /* group sums: {0,1} .731+.711=1.442, {2,3} .690+.721=1.411, {4,5} .095, {6,7} .018+.953=.971 */
        int rc = bi->moe_route(b, ids, w, lg, 1, &r);
        check(rc == 0 && ids[0] == 0 && ids[1] == 3,
              "group-limited: experts 0 and 3 from the two best groups, not 7");
        check(near(w[0], sigm(1.0f)) && near(w[1], sigm(0.95f)), "group-limited: unnormalised scores");
        r.n_group = 1;
        r.n_group_used = 1;
        rc = bi->moe_route(b, ids, w, lg, 1, &r);
        check(rc == 0 && ids[0] == 0 && ids[1] == 7, "without groups the same logits pick 0 and 7");
    }
    { /* 3. softmax, no normalisation, scale 1.5, a tie between 2 and 4; two positions */
        float lg[12] = { 0.0f, 1.0f, 2.0f, 0.5f, 2.0f, -1.0f,     /* position 0 */
                         3.0f, 0.0f, 0.0f, 0.0f, 0.0f, 3.0f };    /* position 1 */
        backend_route r = { 6, 2, 1, 1, 1, 0, 1.5f, NULL };
        int rc = bi->moe_route(b, ids, w, lg, 2, &r);
        double z = exp(0.0) + exp(1.0) + 2 * exp(2.0) + exp(0.5) + exp(-1.0);
        check(rc == 0 && ids[0] == 2 && ids[1] == 4, "softmax: the tie at 2.0 takes experts 2 and 4");
        check(near(w[0], (float)(1.5 * exp(2.0) / z)) && near(w[1], w[0]), "softmax: weights = probabilities x 1.5");
        double z1 = 2 * exp(3.0) + 4;
        check(ids[2] == 0 && ids[3] == 5 && near(w[2], (float)(1.5 * exp(3.0) / z1)),
              "softmax: position 1 takes 0 and 5, ascending");
    }
    { /* 4. k = E */
        float lg[4] = { 0.3f, -0.2f, 0.1f, 0.0f };
        backend_route r = { 4, 4, 1, 1, 2, 1, 1.0f, NULL };
        int rc = bi->moe_route(b, ids, w, lg, 1, &r);
        float sum = 0;
        for (int i = 0; i < 4; i++) sum += sigm(lg[i]);
        check(rc == 0 && ids[0] == 0 && ids[1] == 1 && ids[2] == 2 && ids[3] == 3 &&
              near(w[1], sigm(-0.2f) / sum), "k = E: every expert, ascending, normalised");
    }
    { /* experts: gate = up = identity rows scaled, down = identity; C = Fe = 8, F32.
       * FFN_e(x) = silu(g_e * x) * (u_e * x) elementwise, checked per pair */
        enum { C = 8, E = 2 };
        float gate[E][C * C], up[E][C * C], down[E][C * C];
        memset(gate, 0, sizeof gate);
        memset(up, 0, sizeof up);
        memset(down, 0, sizeof down);
        for (int e = 0; e < E; e++)
            for (int i = 0; i < C; i++) {
                gate[e][i * C + i] = 1.0f + e;
                up[e][i * C + i] = 0.5f;
                down[e][i * C + i] = 1.0f;
            }
        kern_weight g[E], u[E], d[E];
        for (int e = 0; e < E; e++) {
            g[e] = (kern_weight){ gate[e], QT_F32, C, C, C * sizeof(float), KERN_ROWS };
            u[e] = (kern_weight){ up[e], QT_F32, C, C, C * sizeof(float), KERN_ROWS };
            d[e] = (kern_weight){ down[e], QT_F32, C, C, C * sizeof(float), KERN_ROWS };
        }
        float x[3 * C], y[4 * C], s[2 * C], gx[2 * C];
        for (int i = 0; i < 3 * C; i++) x[i] = 0.1f * (float)(i - 7);
        /* expert 0: rows 2, 0 -> dst 1, 2; expert 1: row 2 -> dst 0, row 1 -> dst 3 */
        int32_t off[E + 1] = { 0, 2, 4 }, row[4] = { 2, 0, 2, 1 }, dst[4] = { 1, 2, 0, 3 };
        float pw[4] = { 0.5f, 2.0f, -1.0f, 0.25f };
        backend_moe mo = { E, off, row, dst, pw, g, u, d };
        int rc = bi->moe_experts(b, y, x, C, &mo);
        int ok = rc == 0;
        for (int p = 0; p < 4; p++) {
            int e = p < 2 ? 0 : 1;
            for (int i = 0; i < C; i++) {
                float xv = x[row[p] * C + i], gv = (1.0f + e) * xv;
                float want = pw[p] * (gv / (1.0f + expf(-gv))) * (0.5f * xv);
                ok &= fabsf(y[dst[p] * C + i] - want) <= 1e-5f * (1.0f + fabsf(want));
            }
        }
        check(ok, "moe_experts: each pair w * down(silu(gate x) * up x) at its dst row");
        rc = bi->sum_rows(b, s, y, 2, 2, C);
        ok = rc == 0;
        for (int i = 0; i < C; i++)
            ok &= s[i] == y[i] + y[C + i] && s[C + i] == y[2 * C + i] + y[3 * C + i];
        check(ok, "sum_rows: rows (0,1) and (2,3) summed in order");
        int32_t pick[2] = { 2, 0 };
        rc = bi->gather_rows(b, gx, x, pick, 2, C);
        check(rc == 0 && !memcmp(gx, x + 2 * C, C * sizeof(float)) && !memcmp(gx + C, x, C * sizeof(float)),
              "gather_rows: rows 2 and 0");
    }
    bi->free(b);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
