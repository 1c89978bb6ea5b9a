/* runtime/sample.c — the sampler: penalties (repetition; presence and frequency), truncation
 * (top-k, top-p, min-p), temperature, and a seeded draw (splitmix64 -> uniform double). Owns a
 * scratch array of V candidates and, when presence / frequency penalties are on, a count per
 * token of the generated ones (V ints, allocated once) with the list of those counted. */
#include <math.h>
#include <stdlib.h>

#include "sample.h"

typedef struct { float logit; int32_t id; } cand;

struct sampler {
    sample_params p;
    int n_vocab;
    uint64_t rng;
    cand *c;                  /* (V) */
    /* presence / frequency penalties only (NULL otherwise) */
    int32_t *count;           /* (V) times each token appears in history[n_prompt, counted_to) */
    int32_t *seen;            /* (V) the tokens with count > 0, in first-seen order: n_seen */
    int n_seen;
    int64_t counted_to, counted_prompt;
};

sample_params sample_defaults(void) {
    sample_params p = { .temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                        .rep_penalty = 1.0f, .rep_last_n = 64, .seed = 0,
                        .presence_penalty = 0.0f, .frequency_penalty = 0.0f };
    return p;
}

sampler *sample_new(const sample_params *p, int n_vocab) {
    sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed ^ 0x9e3779b97f4a7c15ull;
    s->c = malloc((size_t)n_vocab * sizeof *s->c);
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        s->count = calloc((size_t)n_vocab, sizeof *s->count);
        s->seen = malloc((size_t)n_vocab * sizeof *s->seen);
        if (!s->count || !s->seen) {
            sample_free(s);
            return NULL;
        }
    }
    if (!s->c) {
        sample_free(s);
        return NULL;
    }
    return s;
}

void sample_free(sampler *s) {
    if (!s) return;
    free(s->c);
    free(s->count);
    free(s->seen);
    free(s);
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int32_t sample_argmax(const float *logits, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int cand_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

/* worse(a, b): a sorts after b */
static int cand_worse(const cand *a, const cand *b) { return cand_desc(a, b) > 0; }

/* restore the min-heap (worst kept candidate at the root) below c[j], k entries */
static void sift_down(cand *c, int k, int j) {
    for (;;) {
        int w = j, l = 2 * j + 1, r = l + 1;
        if (l < k && cand_worse(&c[l], &c[w])) w = l;
        if (r < k && cand_worse(&c[r], &c[w])) w = r;
        if (w == j) return;
        cand t = c[j];
        c[j] = c[w];
        c[w] = t;
        j = w;
    }
}

/* The k best of logits (V) by cand_desc into c[0..k), in that order: a heap of the k best so
 * far with the worst at its root, then a sort of the k. O(V log k) instead of sorting V. */
static int top_k_select(cand *c, const float *logits, int V, int k) {
    for (int i = 0; i < k; i++) c[i] = (cand){ logits[i], i };
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(c, k, i);   /* parent worse than children */
    for (int i = k; i < V; i++) {
        cand x = { logits[i], i };
        if (!cand_worse(&c[0], &x)) continue;   /* not better than the worst kept */
        c[0] = x;
        sift_down(c, k, 0);
    }
    qsort(c, (size_t)k, sizeof *c, cand_desc);
    return k;
}

/* brings s->count up to history[n_prompt, n): only the tokens added since the last call */
static void sample__count(sampler *s, const int32_t *history, int64_t n, int64_t n_prompt) {
    if (n < s->counted_to || n_prompt != s->counted_prompt) {   /* another history: recount */
        for (int i = 0; i < s->n_seen; i++) s->count[s->seen[i]] = 0;
        s->n_seen = 0;
        s->counted_to = s->counted_prompt = n_prompt;
    }
    for (int64_t i = s->counted_to; i < n; i++) {
        int32_t t = history[i];
        if (t < 0 || t >= s->n_vocab) continue;
        if (s->count[t]++ == 0) s->seen[s->n_seen++] = t;
    }
    s->counted_to = n;
}

void sample_penalize(sampler *s, float *logits, const int32_t *history, int64_t n,
                     int64_t n_prompt) {
    const sample_params *p = &s->p;
    if (p->rep_penalty != 1.0f && p->rep_penalty > 0.0f) {
        int64_t from = n > p->rep_last_n ? n - p->rep_last_n : 0;
        for (int64_t i = from; i < n; i++) {
            int32_t t = history[i];
            if (t < 0 || t >= s->n_vocab) continue;
            /* each distinct token penalised once: mark by checking earlier occurrences */
            int seen = 0;
            for (int64_t j = from; j < i && !seen; j++) seen = history[j] == t;
            if (seen) continue;
            logits[t] = logits[t] > 0 ? logits[t] / p->rep_penalty : logits[t] * p->rep_penalty;
        }
    }
    if (s->count) {
        if (n_prompt < 0) n_prompt = 0;
        if (n_prompt > n) n_prompt = n;
        sample__count(s, history, n, n_prompt);
        for (int i = 0; i < s->n_seen; i++) {
            int32_t t = s->seen[i];
            logits[t] -= (float)s->count[t] * p->frequency_penalty + p->presence_penalty;
        }
    }
}

int32_t sample_next(sampler *s, float *logits, const int32_t *history, int64_t n,
                    int64_t n_prompt) {
    sample_penalize(s, logits, history, n, n_prompt);
    return sample_draw(s, logits);
}

int32_t sample_draw(sampler *s, const float *logits) {
    const sample_params *p = &s->p;
    if (p->temp <= 0.0f) return sample_argmax(logits, s->n_vocab);

    int n_c = s->n_vocab;
    if (p->top_k > 0 && p->top_k < n_c) {
        n_c = top_k_select(s->c, logits, s->n_vocab, p->top_k);
    } else {
        for (int i = 0; i < n_c; i++) s->c[i] = (cand){ logits[i], i };
        if (p->top_p < 1.0f || p->min_p > 0.0f) {
            qsort(s->c, (size_t)n_c, sizeof *s->c, cand_desc);
        } else {   /* no truncation: the maximum first, the rest in a fixed order */
            int best = 0;
            for (int i = 1; i < n_c; i++)
                if (cand_desc(&s->c[i], &s->c[best]) < 0) best = i;
            cand t = s->c[0];
            s->c[0] = s->c[best];
            s->c[best] = t;
        }
    }

    /* probabilities at temperature 1 for the truncation rules, as llama.cpp applies them */
    double max = s->c[0].logit, sum = 0.0;
    for (int i = 0; i < n_c; i++) sum += exp(s->c[i].logit - max);
    if (p->top_p < 1.0f) {
        double acc = 0.0;
        for (int i = 0; i < n_c; i++) {
            acc += exp(s->c[i].logit - max) / sum;
            if (acc >= p->top_p) {
                n_c = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        double floor_logit = max + log(p->min_p);
        int keep = 1;
        while (keep < n_c && s->c[keep].logit >= floor_logit) keep++;
        n_c = keep;
    }
    sum = 0.0;
    for (int i = 0; i < n_c; i++) sum += exp((s->c[i].logit - max) / p->temp);
    double r = (double)(splitmix64(&s->rng) >> 11) * (1.0 / 9007199254740992.0) * sum;
    double acc = 0.0;
    for (int i = 0; i < n_c; i++) {
        acc += exp((s->c[i].logit - max) / p->temp);
        if (r < acc) return s->c[i].id;
    }
    return s->c[n_c - 1].id;
}
