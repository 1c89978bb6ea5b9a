/* launch/cmd_score.c — `sampan score`: evaluate tokens teacher-forced and print, per position,
 * the top-K logits, logsumexp, mean and std of the full logit vector (the schema of
 * ../shared/reference/<model>/prompt-N.json), plus the total log-likelihood and perplexity of
 * tokens 1..n-1. --logits FILE also writes the full (n, V) f32 logits.
 * The tokens go through the scheduler like any prompt (chunks of -b positions per step) as one
 * request with max_tokens 0 whose prompt_logits callback receives every position's logits. */
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
#include "qtypes.h"
#include "scheduler/sched.h"
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

/* The leader's view of one scoring run, filled by score_logits position by position. */
typedef struct {
    const int32_t *toks;
    int n, K;
    top_ent *top;             /* (K) */
    cJSON *positions;
    FILE *lf;                 /* --logits, or NULL */
    double total_lp;
    int n_done, failed;       /* failed: 1 write error, 2 out of memory */
    int finished;
    char reason[16];
    char *errmsg;
} score_run;

static void score_logits(void *user, int pos, const float *l, int V) {
    score_run *sr = user;
    if (sr->failed) return;
    if (sr->lf && fwrite(l, sizeof(float), (size_t)V, sr->lf) != (size_t)V) {
        sr->failed = 1;
        return;
    }
    double mx = -INFINITY, sum = 0, sum2 = 0, se = 0;
    for (int v = 0; v < V; v++) mx = l[v] > mx ? l[v] : mx;
    for (int v = 0; v < V; v++) {
        sum += l[v];
        se += exp(l[v] - mx);
    }
    double mean = sum / V;
    for (int v = 0; v < V; v++) sum2 += (l[v] - mean) * (l[v] - mean);
    double lse = mx + log(se);
    int k = sr->K < V ? sr->K : V;
    top_k(l, V, k, sr->top);
    cJSON *p = cJSON_CreateObject();
    cJSON *ta = p ? cJSON_AddArrayToObject(p, "top") : NULL;
    if (!ta) {
        cJSON_Delete(p);
        sr->failed = 2;
        return;
    }
    for (int j = 0; j < k; j++) {
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateNumber(sr->top[j].id));
        cJSON_AddItemToArray(pair, cJSON_CreateNumber(sr->top[j].v));
        cJSON_AddItemToArray(ta, pair);
    }
    cJSON_AddNumberToObject(p, "logsumexp", lse);
    cJSON_AddNumberToObject(p, "mean", mean);
    cJSON_AddNumberToObject(p, "std", sqrt(sum2 / V));
    cJSON_AddItemToArray(sr->positions, p);
    if (pos + 1 < sr->n) sr->total_lp += l[sr->toks[pos + 1]] - lse;
    sr->n_done = pos + 1;
}

static void score_emit(void *user, const sched_event *ev) {
    score_run *sr = user;
    if (ev->finish == SCHED_FINISH_NONE) return;
    sr->finished = 1;
    snprintf(sr->reason, sizeof sr->reason, "%s", sched_finish_name(ev->finish));
    if (ev->finish == SCHED_FINISH_ERROR)
        sr->errmsg = strndup(ev->text ? ev->text : "", ev->len > 0 ? (size_t)ev->len : 0);
}

int cmd_score(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *ids_arg = NULL, *logits_path = NULL;
    const char *backend = "cpu";
    long K = 32, threads = 0, batch = 512, tp = 0, pp = 0, ep = 0;
    int kv_type = QT_F32;   /* a scoring tool: the reference tolerances are F32's */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs("usage: sampan score -m MODEL (-p PROMPT | --tokens ID,ID,...) [--top K] [-t N]\n"
                  "                    [-b BATCH] [--logits FILE] [--tp N --pp N --ep N]\n"
                  "                    [--kv-type f32|f16|bf16 (default f32)] [--backend cpu|cuda|auto]\n",
                  stdout);
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
        else if (!strcmp(a, "--ep")) { if (cli_int(a, v, 1, 4096, &ep)) return 2; }
        else if (!strcmp(a, "--kv-type")) { if (cli_kv_type(a, v, &kv_type)) return 2; }
        else if (!strcmp(a, "--backend")) { if (cli_backend(a, v, &backend)) return 2; }
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
    if (rank_init(&argc, &argv, (int)tp, (int)pp, (int)ep, model_path, &rk)) {
        comm_world_finalize();
        return 1;
    }
    model *m = rank_load_model(&rk, model_path, (int)threads, kv_type, backend);
    if (!m) return 1;
    int rc = 1, n = 0;
    int32_t *toks = NULL;
    sched *s = NULL;
    score_run sr = { .K = (int)K };
    cJSON *js = NULL;
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
    if (n > m->cfg.n_ctx_train && rk.leader)
        fprintf(stderr, "sampan: warning: %d tokens exceed the trained context of %d\n", n,
                m->cfg.n_ctx_train);
    if (batch > n) batch = n;
    /* one sequence of exactly the tokens: the KV pool holds them and nothing more */
    const int bs = 16;
    sched_opts so = { .max_batch_tokens = (int)batch, .max_seqs = 1, .block_size = bs, .n_ctx = n,
                      .kv_mem = model_kv_block_bytes(m, bs) * (size_t)((n + bs - 1) / bs) };
    s = sched_new(m, rk.size > 1 ? rk.world : NULL, rk.leader_rank, &so, err, sizeof err);
    sr.toks = toks;
    sr.n = n;
    sr.top = malloc((size_t)K * sizeof *sr.top);
    js = cJSON_CreateObject();
    cJSON *pt = js ? cJSON_AddArrayToObject(js, "prompt_tokens") : NULL;
    sr.positions = js ? cJSON_AddArrayToObject(js, "positions") : NULL;
    if (!rank_agree(&rk, s && sr.top && pt && sr.positions)) {
        cli_error("score: %s", s ? "out of memory" : err);
        goto out;
    }
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(pt, cJSON_CreateNumber(toks[i]));
    if (!rk.leader) {
        if (sched_follow(s)) goto out;
        rc = 0;
        goto out;
    }
    if (logits_path && !(sr.lf = fopen(logits_path, "wb"))) {
        cli_error("score: cannot write '%s': %s", logits_path, strerror(errno));
        goto out;
    }
    sched_request rq = { .prompt = toks, .n_prompt = n, .max_tokens = 0,
                         .sampling = sample_defaults(), .prompt_logits = score_logits,
                         .logprobs = -1 };
    if (sched_submit(s, &rq, score_emit, &sr, NULL, err, sizeof err)) {
        cli_error("score: %s", err);
        goto out;
    }
    while (!sr.finished)
        if (sched_step(s) < 0) break;
    if (!sr.finished || sr.errmsg || sr.failed || sr.n_done != n) {
        if (sr.failed == 1) cli_error("score: write to '%s' failed", logits_path);
        else if (sr.failed == 2) cli_error("score: out of memory");
        else cli_error("score: %s", sr.errmsg ? sr.errmsg : "the scheduler stopped early");
        goto out;
    }
    sched_stop(s);
    sched_run(s);   /* only releases the followers */
    cJSON_AddNumberToObject(js, "n_vocab", V);
    cJSON_AddNumberToObject(js, "total_logprob", sr.total_lp);
    cJSON_AddNumberToObject(js, "n_scored", n - 1);
    cJSON_AddNumberToObject(js, "perplexity", n > 1 ? exp(-sr.total_lp / (n - 1)) : 1.0);
    char *str = cJSON_PrintUnformatted(js);
    if (!str) {
        cli_error("score: out of memory");
        goto out;
    }
    puts(str);
    free(str);
    rc = 0;
out:
    if (sr.lf && fclose(sr.lf) && rc == 0) {
        cli_error("score: write to '%s' failed", logits_path);
        rc = 1;
    }
    cJSON_Delete(js);
    free(toks);
    free(sr.top);
    free(sr.errmsg);
    sched_free(s);
    model_free(m);
    if (rc == 0 || rk.size == 1) rank_finish(&rk);
    else comm_abort(rk.world, rc);   /* a peer may be waiting on us */
    return rc;
}
