/* tests/model/test_sample.c — the sampler against independently computed expectations:
 * greedy ties, top-k / top-p / min-p truncation sets, repetition and presence / frequency
 * penalties, the temperature distribution (frequencies over many seeded draws vs
 * softmax(logits / T)), and determinism for a fixed seed. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sample.h"

static int passed, failed;
#define CHECK(cond, ...)                         \
    do {                                         \
        if (cond) passed++;                      \
        else {                                   \
            failed++;                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__); \
            printf(__VA_ARGS__);                 \
            printf("\n");                        \
        }                                        \
    } while (0)

#define V 6
static const float base[V] = { 1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 0.5f };

/* draws n samples with params p, counts per token */
static void draw(const sample_params *p, int n, int counts[V]) {
    sampler *s = sample_new(p, V);
    memset(counts, 0, V * sizeof counts[0]);
    for (int i = 0; i < n; i++) {
        float l[V];
        memcpy(l, base, sizeof l);
        counts[sample_next(s, l, NULL, 0, 0)]++;
    }
    sample_free(s);
}

int main(void) {
    sample_params p = { 0 };
    p.rep_penalty = 1.0f;
    p.top_p = 1.0f;
    float l[V];

    /* greedy: the highest logit, ties to the lowest id (ids 1 and 3 tie at 3.0) */
    memcpy(l, base, sizeof l);
    sampler *s = sample_new(&p, V);
    CHECK(sample_next(s, l, NULL, 0, 0) == 1, "greedy picks id 1");
    sample_free(s);

    /* repetition penalty 2 on ids 1 and 0: logit 3 -> 1.5 (positive divided), so id 3 wins */
    p.rep_penalty = 2.0f;
    p.rep_last_n = 8;
    int32_t hist[3] = { 1, 0, 1 };
    memcpy(l, base, sizeof l);
    s = sample_new(&p, V);
    CHECK(sample_next(s, l, hist, 3, 3) == 3, "penalty moves greedy to id 3");
    CHECK(fabsf(l[1] - 1.5f) < 1e-6f && fabsf(l[0] - 0.5f) < 1e-6f, "penalised logits %g %g", l[1], l[0]);
    sample_free(s);
    /* negative logits are multiplied */
    int32_t hist2[1] = { 4 };
    memcpy(l, base, sizeof l);
    s = sample_new(&p, V);
    sample_next(s, l, hist2, 1, 1);
    CHECK(fabsf(l[4] + 2.0f) < 1e-6f, "negative logit -1 penalised to -2, got %g", l[4]);
    sample_free(s);
    p.rep_penalty = 1.0f;

    /* presence 0.5 / frequency 1 (OpenAI's formula) over the generated tokens only: the prompt
     * {1, 1} is not counted; generated {2, 2, 3}: logit 2 -= 2 * 1 + 0.5, logit 3 -= 1 + 0.5.
     * Then one more generated 3, counted incrementally: logit 3 -= 2 + 0.5. */
    {
        sample_params pf = p;
        pf.presence_penalty = 0.5f;
        pf.frequency_penalty = 1.0f;
        int32_t h[6] = { 1, 1, 2, 2, 3, 3 };
        s = sample_new(&pf, V);
        memcpy(l, base, sizeof l);
        int32_t t = sample_next(s, l, h, 5, 2);
        CHECK(t == 1 && l[1] == 3.0f && l[2] == 2.0f - 2.5f && l[3] == 3.0f - 1.5f && l[0] == 1.0f,
              "presence/frequency: token %d, logits %g %g %g %g", t, l[0], l[1], l[2], l[3]);
        memcpy(l, base, sizeof l);
        sample_penalize(s, l, h, 6, 2);
        CHECK(l[2] == 2.0f - 2.5f && l[3] == 3.0f - 2.5f, "incremental count: %g %g", l[2], l[3]);
        memcpy(l, base, sizeof l);
        sample_penalize(s, l, h, 3, 1);   /* another history: prompt {1}, generated {1, 2} */
        CHECK(l[1] == 3.0f - 1.5f && l[2] == 2.0f - 1.5f && l[3] == 3.0f, "recount: %g %g %g", l[1], l[2], l[3]);
        sample_free(s);
    }

    /* temperature 1, no truncation: frequencies follow softmax within 4 sigma */
    p.temp = 1.0f;
    p.seed = 1234;
    int counts[V], N = 200000;
    draw(&p, N, counts);
    double z = 0;
    for (int i = 0; i < V; i++) z += exp(base[i]);
    for (int i = 0; i < V; i++) {
        double q = exp(base[i]) / z, sd = sqrt(N * q * (1 - q));
        CHECK(fabs(counts[i] - N * q) <= 4 * sd + 1, "temp 1: id %d drawn %d, expected %.0f", i, counts[i], N * q);
    }
    /* temperature 0.5 sharpens: softmax(2 * logits) */
    p.temp = 0.5f;
    draw(&p, N, counts);
    z = 0;
    for (int i = 0; i < V; i++) z += exp(2 * base[i]);
    for (int i = 0; i < V; i++) {
        double q = exp(2 * base[i]) / z, sd = sqrt(N * q * (1 - q));
        CHECK(fabs(counts[i] - N * q) <= 4 * sd + 1, "temp 0.5: id %d drawn %d, expected %.0f", i, counts[i], N * q);
    }
    p.temp = 1.0f;

    /* top-k 3 keeps ids {1, 3, 2} only */
    p.top_k = 3;
    draw(&p, 20000, counts);
    CHECK(counts[0] == 0 && counts[4] == 0 && counts[5] == 0 && counts[1] && counts[2] && counts[3],
          "top-k 3 support: %d %d %d %d %d %d", counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]);
    p.top_k = 0;

    /* top-p: probabilities sorted are ids 1, 3 (0.3841 each), 2 (0.1413), 0 (0.0520) ...
     * p = 0.8: cumulative 0.768 < 0.8 <= 0.910, keeps {1, 3, 2} */
    p.top_p = 0.8f;
    draw(&p, 20000, counts);
    CHECK(counts[0] == 0 && counts[4] == 0 && counts[5] == 0 && counts[2] > 0,
          "top-p 0.8 support: %d %d %d %d %d %d", counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]);
    p.top_p = 1.0f;

    /* min-p 0.2: keeps ids with p >= 0.2 * p_max, i.e. logit >= 3 + ln 0.2 = 1.39: {1, 3, 2} */
    p.min_p = 0.2f;
    draw(&p, 20000, counts);
    CHECK(counts[0] == 0 && counts[4] == 0 && counts[5] == 0 && counts[2] > 0,
          "min-p 0.2 support: %d %d %d %d %d %d", counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]);
    p.min_p = 0.0f;

    /* top-k on a larger vocabulary with many ties: the support is exactly the k best by
     * (logit descending, id ascending), as a full sort gives them */
    {
        enum { V2 = 1000, K2 = 7 };
        float big[V2], lb[V2];
        uint64_t x = 42;
        for (int i = 0; i < V2; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            big[i] = (float)((x >> 33) % 50) * 0.01f;   /* 50 distinct values: ties */
        }
        int want[V2] = { 0 }, ord[V2];
        for (int i = 0; i < V2; i++) ord[i] = i;
        for (int i = 0; i < K2; i++)   /* selection by the reference order */
            for (int j = i + 1; j < V2; j++)
                if (big[ord[j]] > big[ord[i]] || (big[ord[j]] == big[ord[i]] && ord[j] < ord[i])) {
                    int t = ord[i]; ord[i] = ord[j]; ord[j] = t;
                }
        for (int i = 0; i < K2; i++) want[ord[i]] = 1;
        sample_params pk = p;
        pk.top_k = K2;
        pk.temp = 5.0f;
        sampler *sk = sample_new(&pk, V2);
        int got[V2] = { 0 }, outside = 0, hit = 0;
        for (int i = 0; i < 20000; i++) {
            memcpy(lb, big, sizeof lb);
            int t = sample_next(sk, lb, NULL, 0, 0);
            got[t]++;
            outside += !want[t];
        }
        for (int i = 0; i < V2; i++) hit += want[i] && got[i] > 0;
        sample_free(sk);
        CHECK(outside == 0 && hit == K2, "top-k %d of %d with ties: %d draws outside, %d of %d kept ids drawn",
              K2, V2, outside, hit, K2);
    }

    /* same seed, same draws; another seed, other draws */
    int a[64], b[64], c[64];
    for (int r = 0; r < 3; r++) {
        p.seed = r == 2 ? 99 : 7;
        s = sample_new(&p, V);
        for (int i = 0; i < 64; i++) {
            memcpy(l, base, sizeof l);
            (r == 0 ? a : r == 1 ? b : c)[i] = sample_next(s, l, NULL, 0, 0);
        }
        sample_free(s);
    }
    CHECK(!memcmp(a, b, sizeof a), "same seed gives the same tokens");
    CHECK(memcmp(a, c, sizeof a) != 0, "another seed gives other tokens");

    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
