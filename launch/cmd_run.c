/* launch/cmd_run.c — `sampan run`: tokenize a prompt and generate from it through the
 * scheduler (scheduler/sched.h) with one sequence: sched_step on the leader (chunked prefill,
 * sampling, stop strings, UTF-8 hold-back all happen there), sched_follow on the other ranks.
 * The emit callback streams text to stdout (or collects it for one JSON object with --json).
 * stderr gets the prompt and decode rates and the peak RSS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "clock.h"
#include "comm.h"
#include "rank.h"
#include "backend.h"
#include "kern.h"
#include "model.h"
#include "qtypes.h"
#include "sample.h"
#include "scheduler/sched.h"
#include "tok.h"
#include "utf8.h"

typedef struct {
    const char *model, *prompt, *backend;
    long n_predict, threads, n_ctx, batch, tp, pp, ep;
    int kv_type;
    sample_params sp;
    int json, ignore_eos;
    const char *stops[SCHED_MAX_STOPS];
    int n_stops;
} run_opts;

static void run_usage(void) {
    fputs("usage: sampan run -m MODEL -p PROMPT [options]\n"
          "  -n N                tokens to generate (default 128)\n"
          "  --temp T            temperature; 0 = greedy (default 0.8)\n"
          "  --top-k K --top-p P --min-p P --repeat-penalty R --repeat-last-n N\n"
          "  --seed S            sampling seed (default 0)\n"
          "  --stop STR          stop when the output contains STR (repeatable, at most 4: the\n"
          "                      scheduler's limit, the same as serve's)\n"
          "  --ignore-eos        keep generating past end-of-sequence\n"
          "  -t N                threads (default: the CPUs this process may run on)\n"
          "  -c N                context length (default: the model's, at most 4096)\n"
          "  -b N                tokens per forward step: prompt chunk size (default 256)\n"
          "  --kv-type T         KV cache elements: f32, f16 or bf16 (default f16)\n"
          "  --backend B         cpu, cuda or auto (default cpu)\n"
          "  --tp N --pp N       tensor x pipeline parallel ranks (under mpirun/srun; default:\n"
          "                      every rank in one tensor-parallel group)\n"
          "  --ep N              expert parallel ranks for MoE models (world = tp x ep x pp):\n"
          "                      each holds 1/N of the routed experts\n"
          "  --json              print one JSON object instead of streaming text\n",
          stdout);
}

static int parse(int argc, char **argv, run_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->batch = 256;
    o->kv_type = QT_F16;
    o->backend = "cpu";
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
        else if (!strcmp(a, "--ep")) { if (cli_int(a, v, 1, 4096, &o->ep)) return -1; }
        else if (!strcmp(a, "--kv-type")) { if (cli_kv_type(a, v, &o->kv_type)) return -1; }
        else if (!strcmp(a, "--backend")) { if (cli_backend(a, v, &o->backend)) return -1; }
        else if (!strcmp(a, "--temp")) { if (cli_float(a, v, 0, 100, &d)) return -1; o->sp.temp = (float)d; }
        else if (!strcmp(a, "--top-k")) { if (cli_int(a, v, 0, 1 << 24, &l)) return -1; o->sp.top_k = (int)l; }
        else if (!strcmp(a, "--top-p")) { if (cli_float(a, v, 0, 1, &d)) return -1; o->sp.top_p = (float)d; }
        else if (!strcmp(a, "--min-p")) { if (cli_float(a, v, 0, 1, &d)) return -1; o->sp.min_p = (float)d; }
        else if (!strcmp(a, "--repeat-penalty")) { if (cli_float(a, v, 0.01, 100, &d)) return -1; o->sp.rep_penalty = (float)d; }
        else if (!strcmp(a, "--repeat-last-n")) { if (cli_int(a, v, 0, 1 << 24, &l)) return -1; o->sp.rep_last_n = (int)l; }
        else if (!strcmp(a, "--seed")) { if (cli_int(a, v, 0, 0x7fffffffffffffffL, &l)) return -1; o->sp.seed = (uint64_t)l; }
        else if (!strcmp(a, "--stop")) {
            if (o->n_stops == SCHED_MAX_STOPS || !*v) {
                cli_error("--stop: at most %d non-empty stop strings (the scheduler's limit)",
                          SCHED_MAX_STOPS);
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

/* What the emit callback collects on the leader (step-loop = main thread). */
typedef struct {
    int json;                 /* collect text for --json instead of streaming it */
    int32_t *toks;            /* (cap) generated token ids */
    int n_gen, cap;
    char *text;               /* --json: every released byte */
    size_t len, text_cap;
    double t_first, t_end;    /* first sampled token; the finishing call */
    int finished, oom;
    char reason[16];
    char *errmsg;
} run_out;

static void run_emit(void *user, const sched_event *ev) {
    run_out *o = user;
    double now = clk_now();
    const char *text = ev->text;
    int len = ev->len;
    if (ev->token >= 0) {
        if (o->n_gen == 0) o->t_first = now;
        if (o->n_gen < o->cap) o->toks[o->n_gen++] = ev->token;
    }
    if (ev->finish != SCHED_FINISH_NONE) {
        o->finished = 1;
        o->t_end = now;
        snprintf(o->reason, sizeof o->reason, "%s", sched_finish_name(ev->finish));
        if (ev->finish == SCHED_FINISH_ERROR) {
            o->errmsg = strndup(text ? text : "", len > 0 ? (size_t)len : 0);
            return;
        }
    }
    if (len <= 0) return;
    if (!o->json) {
        /* never an invalid sequence on the terminal: the scheduler holds back a character
         * split between tokens, and what is not UTF-8 at all is shown as U+FFFD (the raw
         * bytes stay available as token ids with --json); a NUL byte is shown as U+FFFD too */
        char *v = utf8_sanitize(text, (size_t)len);
        if (v) fputs(v, stdout);
        else o->oom = 1;
        free(v);
        fflush(stdout);
        return;
    }
    if (o->len + (size_t)len + 1 > o->text_cap) {
        size_t cap = (o->len + (size_t)len + 1) * 2;
        char *p = realloc(o->text, cap);
        if (!p) {
            o->oom = 1;
            return;
        }
        o->text = p;
        o->text_cap = cap;
    }
    memcpy(o->text + o->len, text, (size_t)len);
    o->len += (size_t)len;
}

/* Leader: submits the prompt and steps the scheduler until the request finishes. 0, or -1
 * with the message printed. */
static int run_generate(sched *s, const run_opts *o, const int32_t *prompt, int n_prompt,
                        run_out *out) {
    char err[512];
    sched_request rq = { .prompt = prompt, .n_prompt = n_prompt, .max_tokens = (int)o->n_predict,
                         .sampling = o->sp, .ignore_eos = o->ignore_eos, .logprobs = -1 };
    for (int i = 0; i < o->n_stops; i++) rq.stop[i] = o->stops[i];
    if (sched_submit(s, &rq, run_emit, out, NULL, err, sizeof err)) {
        cli_error("run: %s", err);
        return -1;
    }
    while (!out->finished)
        if (sched_step(s) < 0) break;
    if (!out->finished || out->errmsg || out->oom) {
        cli_error("run: %s", out->errmsg ? out->errmsg : out->oom ? "out of memory" : "the scheduler stopped");
        return -1;
    }
    return 0;
}

int cmd_run(int argc, char **argv) {
    run_opts o;
    if (parse(argc, argv, &o)) return 2;
    char err[512];
    rank_ctx rk;
    if (rank_init(&argc, &argv, (int)o.tp, (int)o.pp, (int)o.ep, o.model, &rk)) {
        comm_world_finalize();
        return 1;
    }
    model *m = rank_load_model(&rk, o.model, (int)o.threads, o.kv_type, o.backend);
    if (!m) return 1;
    int rc = 1;
    sched *s = NULL;
    int32_t *toks = NULL;
    int64_t *rss_all = NULL;
    run_out out = { .json = o.json };
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
    /* one sequence: the KV pool holds exactly its context */
    const int bs = 16;
    sched_opts so = { .max_batch_tokens = (int)o.batch, .max_seqs = 1, .block_size = bs,
                      .n_ctx = n_ctx,
                      .kv_mem = model_kv_block_bytes(m, bs) * (size_t)((n_ctx + bs - 1) / bs) };
    s = sched_new(m, rk.size > 1 ? rk.world : NULL, rk.leader_rank, &so, err, sizeof err);
    toks = malloc((size_t)n_prompt * sizeof *toks);
    out.cap = (int)o.n_predict + 1;
    out.toks = malloc((size_t)out.cap * sizeof *out.toks);
    rss_all = calloc((size_t)rk.size, sizeof *rss_all);
    if (!rank_agree(&rk, s && toks && out.toks && rss_all)) {
        if (!s) cli_error("run: %s", err);
        else if (!toks || !out.toks || !rss_all) cli_error("run: out of memory");
        goto out;
    }
    tok_encode(m->tok, o.prompt, strlen(o.prompt), 1, 1, toks, n_prompt);

    double t0 = clk_now();
    if (rk.leader) {
        if (run_generate(s, &o, toks, n_prompt, &out)) goto out;
        sched_stop(s);
        sched_run(s);   /* only releases the followers */
    } else if (sched_follow(s)) {
        goto out;
    }
    /* every rank's peak RSS, for the leader's report (capacity planning needs the per-rank
     * figure, not just the leader's) */
    int64_t my_rss = cli_peak_rss_bytes();
    if (rk.size > 1 && comm_allgather(rk.world, &my_rss, rss_all, sizeof my_rss, COMM_U8)) {
        cli_error("run: %s", comm_error(rk.world));
        goto out;
    }
    if (rk.size == 1) rss_all[0] = my_rss;
    rc = 0;
    if (!rk.leader) goto out;
    /* prompt: to the first sampled token; decode: every later token, to the finish */
    double t1 = out.n_gen ? out.t_first : out.t_end, t2 = out.t_end;
    int n_decode = out.n_gen > 1 ? out.n_gen - 1 : 0;
    double pp_tps = n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9);
    double tg_tps = n_decode / (t2 - t1 > 0 ? t2 - t1 : 1e-9);
    long rss = cli_peak_rss_bytes();
    sched_stats st;
    sched_stats_get(s, &st);
    if (o.json) {
        js = cJSON_CreateObject();
        cJSON *pt = cJSON_AddArrayToObject(js, "prompt_tokens");
        for (int i = 0; i < n_prompt; i++) cJSON_AddItemToArray(pt, cJSON_CreateNumber(toks[i]));
        cJSON *gt = cJSON_AddArrayToObject(js, "tokens");
        for (int i = 0; i < out.n_gen; i++) cJSON_AddItemToArray(gt, cJSON_CreateNumber(out.toks[i]));
        char *valid = cli_utf8_valid(out.text ? out.text : "", out.len);
        cJSON_AddStringToObject(js, "text", valid ? valid : "");
        free(valid);
        cJSON_AddStringToObject(js, "stop_reason", out.reason);
        cJSON *tm = cJSON_AddObjectToObject(js, "timings");
        cJSON_AddNumberToObject(tm, "prompt_tokens_per_s", pp_tps);
        cJSON_AddNumberToObject(tm, "decode_tokens_per_s", tg_tps);
        cJSON_AddNumberToObject(tm, "prompt_ms", (t1 - t0) * 1e3);
        cJSON_AddNumberToObject(tm, "decode_ms", (t2 - t1) * 1e3);
        cJSON_AddNumberToObject(tm, "peak_rss_bytes", (double)rss);
        cJSON_AddNumberToObject(tm, "kv_cache_bytes", (double)st.kv_bytes_total);
        cJSON_AddNumberToObject(tm, "weight_bytes", (double)m->weight_bytes);
        cJSON_AddNumberToObject(tm, "threads", m->be->i->n_threads(m->be));
        cJSON_AddStringToObject(tm, "isa", kern_isa());
        cJSON *ra = cJSON_AddArrayToObject(tm, "rank_peak_rss_bytes");
        for (int i = 0; i < rk.size; i++) cJSON_AddItemToArray(ra, cJSON_CreateNumber((double)rss_all[i]));
        char *str = cJSON_PrintUnformatted(js);
        if (str) puts(str);
        free(str);
    } else {
        putchar('\n');
    }
    fflush(stdout);
    fprintf(stderr,
            "sampan: prompt %d tokens, %.2f tokens/s | decode %d tokens, %.2f tokens/s | "
            "peak RSS %.1f MiB\n",
            n_prompt, pp_tps, n_decode, tg_tps, (double)rss / (1 << 20));
out:
    cJSON_Delete(js);
    free(out.text);
    free(out.toks);
    free(out.errmsg);
    free(toks);
    free(rss_all);
    sched_free(s);
    model_free(m);
    if (rc == 0 || rk.size == 1) rank_finish(&rk);
    else comm_abort(rk.world, rc);   /* a peer may be waiting on us */
    return rc;
}
