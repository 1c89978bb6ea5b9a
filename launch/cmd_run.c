/* launch/cmd_run.c — `sampan run`: tokenize a prompt, prefill it in batches, then decode one
 * token at a time, streaming text to stdout (or one JSON object with --json). stderr gets the
 * prompt and decode rates and the peak RSS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "comm.h"
#include "rank.h"
#include "backend.h"
#include "kern.h"
#include "model.h"
#include "sample.h"
#include "tok.h"

#define MAX_STOPS 8

typedef struct {
    const char *model, *prompt;
    long n_predict, threads, n_ctx, batch, tp, pp;
    sample_params sp;
    int json, ignore_eos;
    const char *stops[MAX_STOPS];
    int n_stops;
} run_opts;

static void run_usage(void) {
    fputs("usage: sampan run -m MODEL -p PROMPT [options]\n"
          "  -n N                tokens to generate (default 128)\n"
          "  --temp T            temperature; 0 = greedy (default 0.8)\n"
          "  --top-k K --top-p P --min-p P --repeat-penalty R --repeat-last-n N\n"
          "  --seed S            sampling seed (default 0)\n"
          "  --stop STR          stop when the output contains STR (repeatable)\n"
          "  --ignore-eos        keep generating past end-of-sequence\n"
          "  -t N                threads (default: the CPUs this process may run on)\n"
          "  -c N                context length (default: the model's, at most 4096)\n"
          "  -b N                prompt batch size (default 256)\n"
          "  --tp N --pp N       tensor x pipeline parallel ranks (under mpirun/srun; default:\n"
          "                      every rank in one tensor-parallel group)\n"
          "  --json              print one JSON object instead of streaming text\n",
          stdout);
}

static int parse(int argc, char **argv, run_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->batch = 256;
    o->sp = sample_defaults();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        double d;
        long l;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            run_usage();
            exit(0);
        }
        if (!strcmp(a, "--json")) { o->json = 1; continue; }
        if (!strcmp(a, "--ignore-eos")) { o->ignore_eos = 1; continue; }
        if (!(v = cli_arg(argc, argv, &i))) return -1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "-n")) { if (cli_int(a, v, 0, 1 << 24, &o->n_predict)) return -1; }
        else if (!strcmp(a, "-t")) { if (cli_int(a, v, 0, 4096, &o->threads)) return -1; }
        else if (!strcmp(a, "-c")) { if (cli_int(a, v, 1, 1 << 24, &o->n_ctx)) return -1; }
        else if (!strcmp(a, "-b")) { if (cli_int(a, v, 1, 1 << 16, &o->batch)) return -1; }
        else if (!strcmp(a, "--tp")) { if (cli_int(a, v, 1, 4096, &o->tp)) return -1; }
        else if (!strcmp(a, "--pp")) { if (cli_int(a, v, 1, 4096, &o->pp)) return -1; }
        else if (!strcmp(a, "--temp")) { if (cli_float(a, v, 0, 100, &d)) return -1; o->sp.temp = (float)d; }
        else if (!strcmp(a, "--top-k")) { if (cli_int(a, v, 0, 1 << 24, &l)) return -1; o->sp.top_k = (int)l; }
        else if (!strcmp(a, "--top-p")) { if (cli_float(a, v, 0, 1, &d)) return -1; o->sp.top_p = (float)d; }
        else if (!strcmp(a, "--min-p")) { if (cli_float(a, v, 0, 1, &d)) return -1; o->sp.min_p = (float)d; }
        else if (!strcmp(a, "--repeat-penalty")) { if (cli_float(a, v, 0.01, 100, &d)) return -1; o->sp.rep_penalty = (float)d; }
        else if (!strcmp(a, "--repeat-last-n")) { if (cli_int(a, v, 0, 1 << 24, &l)) return -1; o->sp.rep_last_n = (int)l; }
        else if (!strcmp(a, "--seed")) { if (cli_int(a, v, 0, 0x7fffffffffffffffL, &l)) return -1; o->sp.seed = (uint64_t)l; }
        else if (!strcmp(a, "--stop")) {
            if (o->n_stops == MAX_STOPS || !*v) {
                cli_error("--stop: at most %d non-empty stop strings", MAX_STOPS);
                return -1;
            }
            o->stops[o->n_stops++] = v;
        } else {
            cli_error("run: unknown option '%s'", a);
            return -1;
        }
    }
    if (!o->model || !o->prompt) {
        cli_error("run: -m MODEL and -p PROMPT are required");
        return -1;
    }
    return 0;
}

/* Text accumulated for stop strings: bytes before `flushed` are already on stdout. */
typedef struct {
    char *buf;
    size_t len, cap, flushed;
} text_buf;

static int text_append(text_buf *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *p = realloc(t->buf, cap);
        if (!p) return -1;
        t->buf = p;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
    return 0;
}

/* Returns 1 when a stop string appeared (text cut before it). Streams what can no longer be
 * the start of a stop string. */
static int text_check_stops(text_buf *t, const run_opts *o, int stream) {
    size_t hold = 0;
    for (int i = 0; i < o->n_stops; i++) {
        size_t sl = strlen(o->stops[i]);
        size_t from = t->flushed > sl ? t->flushed - sl : 0;
        char *hit = t->len >= sl ? memmem(t->buf + from, t->len - from, o->stops[i], sl) : NULL;
        if (hit) {
            t->len = (size_t)(hit - t->buf);
            t->buf[t->len] = 0;
            if (stream && t->len > t->flushed) fwrite(t->buf + t->flushed, 1, t->len - t->flushed, stdout);
            t->flushed = t->len;
            return 1;
        }
        if (sl - 1 > hold) hold = sl - 1;
    }
    size_t upto = t->len > hold ? t->len - hold : 0;
    if (upto > t->flushed) {
        if (stream) {
            fwrite(t->buf + t->flushed, 1, upto - t->flushed, stdout);
            fflush(stdout);
        }
        t->flushed = upto;
    }
    return 0;
}

/* Prefill tokens[0..n) into slot 0 in batches; the last stage gets the logits slice of the
 * last position in `logits`. With pipeline stages the prompt goes in micro-batches, so stage
 * k works on one while stage k+1 works on the previous. */
int run_prefill(model *m, model_state *st, const int32_t *tokens, int n, int batch, float *logits,
                char *err, size_t errlen);
int run_prefill(model *m, model_state *st, const int32_t *tokens, int n, int batch, float *logits,
                char *err, size_t errlen) {
    if (m->shard.pp > 1) {
        int mb = (n + 2 * m->shard.pp - 1) / (2 * m->shard.pp);
        if (mb < 16) mb = 16;
        if (mb < batch) batch = mb;
    }
    int32_t *pos = malloc((size_t)batch * sizeof *pos);
    if (!pos) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n && !rc; i += batch) {
        int T = n - i < batch ? n - i : batch;
        for (int t = 0; t < T; t++) pos[t] = i + t;
        model_batch b = { .n = T, .tokens = tokens + i, .pos = pos };
        rc = model_forward(m, st, &b, logits, err, errlen);
    }
    free(pos);
    return rc;
}

/* The next token on the last stage: greedy through model_argmax (no full logits gathered) when
 * nothing else changes the logits, else the full vector on the leader for the sampler. */
static int run_pick(model *m, const rank_ctx *rk, const run_opts *o, sampler *smp, float *slices,
                    float *full, const int32_t *toks, int n, int32_t *next, char *err,
                    size_t errlen) {
    if (o->sp.temp <= 0.0f && o->sp.rep_penalty == 1.0f) return model_argmax(m, slices, 1, next, err, errlen);
    if (model_logits_full(m, slices, 1, full, err, errlen)) return -1;
    if (rk->leader) *next = sample_next(smp, full, toks, n);
    return 0;
}

int cmd_run(int argc, char **argv) {
    run_opts o;
    if (parse(argc, argv, &o)) return 2;
    char err[512];
    rank_ctx rk;
    if (rank_init(&argc, &argv, (int)o.tp, (int)o.pp, o.model, &rk)) {
        comm_world_finalize();
        return 1;
    }
    model *m = rank_load_model(&rk, o.model, (int)o.threads);
    if (!m) return 1;
    int rc = 1;
    model_state *st = NULL;
    sampler *smp = NULL;
    float *logits = NULL, *full = NULL;
    int32_t *toks = NULL;
    text_buf text = { 0 };
    cJSON *js = NULL;

    int n_ctx = (int)o.n_ctx;
    if (n_ctx == 0) n_ctx = m->cfg.n_ctx_train < 4096 ? m->cfg.n_ctx_train : 4096;
    /* every rank tokenizes the same prompt and reaches the same verdicts; the leader speaks */
    int64_t need = tok_encode(m->tok, o.prompt, strlen(o.prompt), 1, 1, NULL, 0);
    if (need <= 0 || need + o.n_predict > n_ctx) {
        if (rk.leader && need < 0) cli_error("run: the prompt could not be tokenized");
        else if (rk.leader && need == 0) cli_error("run: the prompt is empty and the model adds no BOS token");
        else if (rk.leader)
            cli_error("run: prompt of %lld tokens + %ld to generate exceeds the context of %d tokens",
                      (long long)need, o.n_predict, n_ctx);
        goto out;
    }
    int n_prompt = (int)need;
    toks = malloc((size_t)(n_prompt + o.n_predict + 1) * sizeof *toks);
    logits = malloc(model_logits_floats(m, 1) * sizeof *logits);
    full = malloc((size_t)m->cfg.n_vocab * sizeof *full);
    smp = sample_new(&o.sp, m->cfg.n_vocab);
    st = model_state_new(m, 1, n_ctx, (int)o.batch, err, sizeof err);
    if (!rank_agree(&rk, toks && logits && full && smp && st)) {
        cli_error("run: %s", st ? "out of memory" : err);
        goto out;
    }
    tok_encode(m->tok, o.prompt, strlen(o.prompt), 1, 1, toks, n_prompt);

    double t0 = cli_now();
    if (run_prefill(m, st, toks, n_prompt, (int)o.batch, logits, err, sizeof err)) {
        cli_error("run: %s", err);
        goto out;
    }
    double t1 = cli_now();
    int n = n_prompt, n_gen = 0, n_decode = 0;
    const char *stop_reason = "length";
    char piece[256];
    while (n_gen < o.n_predict) {
        int32_t msg[2] = { 0, 0 };   /* next token, stop flag: decided by the leader */
        if (model_has_logits(m) &&
            run_pick(m, &rk, &o, smp, logits, full, toks, n, &msg[0], err, sizeof err)) {
            cli_error("run: %s", err);
            goto out;
        }
        if (rk.leader) {
            if (!o.ignore_eos && tok_is_eog(m->tok, msg[0])) {
                stop_reason = "eos";
                msg[1] = 1;
            } else {
                int pl = tok_piece(m->tok, msg[0], piece, sizeof piece, 0);
                if (pl > (int)sizeof piece) pl = sizeof piece;
                if (text_append(&text, piece, (size_t)pl)) {
                    cli_error("run: out of memory");
                    goto out;
                }
                if (text_check_stops(&text, &o, !o.json)) {
                    stop_reason = "stop";
                    msg[1] = 1;
                }
            }
        }
        if (rk.size > 1 && comm_bcast(rk.world, msg, sizeof msg, rk.leader_rank)) {
            cli_error("run: %s", comm_error(rk.world));
            goto out;
        }
        toks[n++] = msg[0];
        n_gen++;
        if (msg[1] || n_gen == o.n_predict) break;
        int32_t pos = n - 1;
        model_batch b = { .n = 1, .tokens = &toks[n - 1], .pos = &pos };
        if (model_forward(m, st, &b, logits, err, sizeof err)) {
            cli_error("run: %s", err);
            goto out;
        }
        n_decode++;
    }
    double t2 = cli_now();
    /* every rank's peak RSS, for the leader's report (capacity planning needs the per-rank
     * figure, not just the leader's) */
    int64_t my_rss = cli_peak_rss_bytes();
    int64_t *rss_all = calloc((size_t)rk.size, sizeof *rss_all);
    if (!rss_all) goto out;
    if (rk.size > 1 && comm_allgather(rk.world, &my_rss, rss_all, sizeof my_rss, COMM_U8)) {
        cli_error("run: %s", comm_error(rk.world));
        free(rss_all);
        goto out;
    }
    if (rk.size == 1) rss_all[0] = my_rss;
    rc = 0;
    if (!rk.leader) {
        free(rss_all);
        goto out;
    }
    if (!o.json && text.len > text.flushed) fwrite(text.buf + text.flushed, 1, text.len - text.flushed, stdout);
    double pp_tps = n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9);
    double tg_tps = n_decode / (t2 - t1 > 0 ? t2 - t1 : 1e-9);
    long rss = cli_peak_rss_bytes();
    if (o.json) {
        js = cJSON_CreateObject();
        cJSON *pt = cJSON_AddArrayToObject(js, "prompt_tokens");
        for (int i = 0; i < n_prompt; i++) cJSON_AddItemToArray(pt, cJSON_CreateNumber(toks[i]));
        cJSON *gt = cJSON_AddArrayToObject(js, "tokens");
        for (int i = n_prompt; i < n; i++) cJSON_AddItemToArray(gt, cJSON_CreateNumber(toks[i]));
        char *valid = cli_utf8_valid(text.buf ? text.buf : "", text.len);
        cJSON_AddStringToObject(js, "text", valid ? valid : "");
        free(valid);
        cJSON_AddStringToObject(js, "stop_reason", stop_reason);
        cJSON *tm = cJSON_AddObjectToObject(js, "timings");
        cJSON_AddNumberToObject(tm, "prompt_tokens_per_s", pp_tps);
        cJSON_AddNumberToObject(tm, "decode_tokens_per_s", tg_tps);
        cJSON_AddNumberToObject(tm, "prompt_ms", (t1 - t0) * 1e3);
        cJSON_AddNumberToObject(tm, "decode_ms", (t2 - t1) * 1e3);
        cJSON_AddNumberToObject(tm, "peak_rss_bytes", (double)rss);
        cJSON_AddNumberToObject(tm, "kv_cache_bytes", (double)model_state_kv_bytes(st));
        cJSON_AddNumberToObject(tm, "weight_bytes", (double)m->weight_bytes);
        cJSON_AddNumberToObject(tm, "threads", m->be->i->n_threads(m->be));
        cJSON_AddStringToObject(tm, "isa", kern_isa());
        cJSON *ra = cJSON_AddArrayToObject(tm, "rank_peak_rss_bytes");
        for (int i = 0; i < rk.size; i++) cJSON_AddItemToArray(ra, cJSON_CreateNumber((double)rss_all[i]));
        char *s = cJSON_PrintUnformatted(js);
        if (s) puts(s);
        free(s);
    } else {
        putchar('\n');
    }
    free(rss_all);
    fflush(stdout);
    fprintf(stderr,
            "sampan: prompt %d tokens, %.2f tokens/s | decode %d tokens, %.2f tokens/s | "
            "peak RSS %.1f MiB\n",
            n_prompt, pp_tps, n_decode, tg_tps, (double)rss / (1 << 20));
out:
    cJSON_Delete(js);
    free(text.buf);
    free(toks);
    free(logits);
    free(full);
    sample_free(smp);
    model_state_free(st);
    model_free(m);
    if (rc == 0 || rk.size == 1) rank_finish(&rk);
    else comm_abort(rk.world, rc);   /* a peer may be waiting on us */
    return rc;
}
