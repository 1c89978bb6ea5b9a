/* launch/cmd_score.c — `sampan score`: evaluate tokens teacher-forced and print, per position,
 * the top-K logits, logsumexp, mean and std of the full logit vector (the schema of
 * ../shared/reference/<model>/prompt-N.json), plus the total log-likelihood and perplexity of
 * tokens 1..n-1. --logits FILE also writes the full (n, V) f32 logits. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "comm.h"
#include "rank.h"
#include "model.h"
#include "tok.h"

static int parse_ids(const char *s, int32_t **out, int *n) {
    int cap = 16, k = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    const char *p = s;
    while (ids && *p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 0x7fffffff || (*end && *end != ',')) {
            cli_error("score: --tokens expects comma-separated ids, bad at '%.20s'", p);
            free(ids);
            return -1;
        }
        if (k == cap) {
            int32_t *q = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!q) break;
            ids = q;
        }
        ids[k++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!ids || k == 0) {
        cli_error("score: --tokens is empty");
        free(ids);
        return -1;
    }
    *out = ids;
    *n = k;
    return 0;
}

typedef struct { float v; int id; } top_ent;

/* keeps the K largest (value desc, id asc) in a small sorted array */
static void top_k(const float *x, int n, int K, top_ent *out) {
    int have = 0;
    for (int i = 0; i < n; i++) {
        if (have == K && !(x[i] > out[K - 1].v)) continue;
        int j = have < K ? have++ : K - 1;
        while (j > 0 && out[j - 1].v < x[i]) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = (top_ent){ x[i], i };
    }
}

int cmd_score(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *ids_arg = NULL, *logits_path = NULL;
    long K = 32, threads = 0, batch = 512, tp = 0, pp = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs("usage: sampan score -m MODEL (-p PROMPT | --tokens ID,ID,...) [--top K] [-t N]\n"
                  "                    [-b BATCH] [--logits FILE] [--tp N --pp N]\n", stdout);
            return 0;
        }
        if (!(v = cli_arg(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--tokens")) ids_arg = v;
        else if (!strcmp(a, "--logits")) logits_path = v;
        else if (!strcmp(a, "--top")) { if (cli_int(a, v, 1, 1000, &K)) return 2; }
        else if (!strcmp(a, "-t")) { if (cli_int(a, v, 0, 4096, &threads)) return 2; }
        else if (!strcmp(a, "-b")) { if (cli_int(a, v, 1, 1 << 16, &batch)) return 2; }
        else if (!strcmp(a, "--tp")) { if (cli_int(a, v, 1, 4096, &tp)) return 2; }
        else if (!strcmp(a, "--pp")) { if (cli_int(a, v, 1, 4096, &pp)) return 2; }
        else {
            cli_error("score: unknown option '%s'", a);
            return 2;
        }
    }
    if (!model_path || (!prompt == !ids_arg)) {
        cli_error("score: -m MODEL and exactly one of -p PROMPT or --tokens are required");
        return 2;
    }
    char err[512];
    rank_ctx rk;
    if (rank_init(&argc, &argv, (int)tp, (int)pp, model_path, &rk)) {
        comm_world_finalize();
        return 1;
    }
    model *m = rank_load_model(&rk, model_path, (int)threads);
    if (!m) return 1;
    int rc = 1, n = 0;
    int32_t *toks = NULL, *pos = NULL;
    int8_t *want = NULL;
    float *logits = NULL, *slices = NULL;
    model_state *st = NULL;
    cJSON *js = NULL;
    FILE *lf = NULL;
    top_ent *top = NULL;
    const int V = m->cfg.n_vocab;

    if (ids_arg) {
        if (parse_ids(ids_arg, &toks, &n)) goto out;
    } else {
        int64_t need = tok_encode(m->tok, prompt, strlen(prompt), 1, 1, NULL, 0);
        if (need <= 0 || need > (1 << 24) || !(toks = malloc((size_t)need * sizeof *toks))) {
            cli_error("score: the prompt could not be tokenized");
            goto out;
        }
        n = (int)tok_encode(m->tok, prompt, strlen(prompt), 1, 1, toks, need);
    }
    for (int i = 0; i < n; i++)
        if (toks[i] >= V) {
            if (rk.leader) cli_error("score: token id %d at index %d is out of range [0, %d)", toks[i], i, V);
            goto out;
        }
    int n_ctx = m->cfg.n_ctx_train > n ? m->cfg.n_ctx_train : n;
    if (n > m->cfg.n_ctx_train && rk.leader)
        fprintf(stderr, "sampan: warning: %d tokens exceed the trained context of %d\n", n,
                m->cfg.n_ctx_train);
    if (batch > n) batch = n;
    st = model_state_new(m, 1, n_ctx, (int)batch, err, sizeof err);
    logits = malloc((size_t)batch * V * sizeof *logits);
    slices = malloc(model_logits_floats(m, (int)batch) * sizeof *slices);
    pos = malloc((size_t)batch * sizeof *pos);
    want = malloc((size_t)batch);
    top = malloc((size_t)K * sizeof *top);
    if (!rank_agree(&rk, st && logits && slices && pos && want && top)) {
        cli_error("score: %s", st ? "out of memory" : err);
        goto out;
    }
    memset(want, 1, (size_t)batch);
    if (rk.leader && logits_path && !(lf = fopen(logits_path, "wb"))) {
        cli_error("score: cannot write '%s': %s", logits_path, strerror(errno));
        goto out;
    }
    js = cJSON_CreateObject();
    cJSON *pt = cJSON_AddArrayToObject(js, "prompt_tokens");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(pt, cJSON_CreateNumber(toks[i]));
    cJSON *positions = cJSON_AddArrayToObject(js, "positions");
    double total_lp = 0.0;
    for (int i0 = 0; i0 < n; i0 += (int)batch) {
        int T = n - i0 < batch ? n - i0 : (int)batch;
        for (int t = 0; t < T; t++) pos[t] = i0 + t;
        model_batch b = { .n = T, .tokens = toks + i0, .pos = pos, .want = want };
        if (model_forward(m, st, &b, slices, err, sizeof err) ||
            (model_has_logits(m) && model_logits_full(m, slices, T, logits, err, sizeof err))) {
            cli_error("score: %s", err);
            goto out;
        }
        if (!rk.leader) continue;
        if (lf && fwrite(logits, sizeof(float) * V, (size_t)T, lf) != (size_t)T) {
            cli_error("score: write to '%s' failed", logits_path);
            goto out;
        }
        for (int t = 0; t < T; t++) {
            const float *l = logits + (size_t)t * V;
            double mx = -INFINITY, sum = 0, sum2 = 0, se = 0;
            for (int v = 0; v < V; v++) mx = l[v] > mx ? l[v] : mx;
            for (int v = 0; v < V; v++) {
                sum += l[v];
                se += exp(l[v] - mx);
            }
            double mean = sum / V;
            for (int v = 0; v < V; v++) sum2 += (l[v] - mean) * (l[v] - mean);
            double lse = mx + log(se);
            int k = (int)(K < V ? K : V);
            top_k(l, V, k, top);
            cJSON *p = cJSON_CreateObject();
            cJSON *ta = cJSON_AddArrayToObject(p, "top");
            for (int j = 0; j < k; j++) {
                cJSON *pair = cJSON_CreateArray();
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(top[j].id));
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(top[j].v));
                cJSON_AddItemToArray(ta, pair);
            }
            cJSON_AddNumberToObject(p, "logsumexp", lse);
            cJSON_AddNumberToObject(p, "mean", mean);
            cJSON_AddNumberToObject(p, "std", sqrt(sum2 / V));
            cJSON_AddItemToArray(positions, p);
            int next = i0 + t + 1;
            if (next < n) total_lp += l[toks[next]] - lse;
        }
    }
    rc = 0;
    if (!rk.leader) goto out;
    rc = 1;
    cJSON_AddNumberToObject(js, "n_vocab", V);
    cJSON_AddNumberToObject(js, "total_logprob", total_lp);
    cJSON_AddNumberToObject(js, "n_scored", n - 1);
    cJSON_AddNumberToObject(js, "perplexity", n > 1 ? exp(-total_lp / (n - 1)) : 1.0);
    char *s = cJSON_PrintUnformatted(js);
    if (!s) {
        cli_error("score: out of memory");
        goto out;
    }
    puts(s);
    free(s);
    rc = 0;
out:
    if (lf && fclose(lf) && rc == 0) {
        cli_error("score: write to '%s' failed", logits_path);
        rc = 1;
    }
    cJSON_Delete(js);
    free(toks);
    free(pos);
    free(want);
    free(logits);
    free(slices);
    free(top);
    model_state_free(st);
    model_free(m);
    if (rc == 0 || rk.size == 1) rank_finish(&rk);
    else comm_abort(rk.world, rc);   /* a peer may be waiting on us */
    return rc;
}
