/* launch/cmd_serve.c — `sampan serve`: load the model on every rank, start the scheduler, and
 * on the leader rank answer OpenAI-style HTTP requests (server.h) until SIGINT or SIGTERM.
 *
 * Start-up and shutdown, on every rank:
 *   1. SIGINT/SIGTERM are blocked before any thread exists (every thread inherits the mask);
 *      one thread takes them with sigwait, so no signal handler ever runs.
 *   2. rank_init, model_load, sched_new (collective: the leader sizes the KV pool), then the
 *      leader starts the HTTP daemon; rank_agree makes every rank learn whether all succeeded.
 *   3. The leader runs sched_run, the others sched_follow.
 *   4. A signal on the leader drains: http_drain (no new connections; new requests get 503),
 *      then up to --drain-seconds for the running requests to finish, then sched_stop (at once
 *      on a second signal): sched_run finishes what is left (SHUTDOWN: each stream gets a last
 *      chunk and [DONE]) and releases the followers; the leader then stops the daemon
 *      (http_stop: the streams' last events get 2 s to go out), frees the scheduler and then
 *      the server (http_free), and exits 0. Followers ignore signals: they end when the leader
 *      says so, so no rank is left inside a collective.
 *   5. A rank dies (or a collective is stuck): the leader's clients must hear of it before the
 *      job ends (mpirun kills every rank about 2 s after one dies, SIGTERM first). Three ways
 *      lead to serve_fail (http_fail: every running request ends with an error, a stream with
 *      an error event and [DONE]), then an exit non-zero through comm_abort:
 *        - the watchdog finds a blocking collective stuck or a node-local peer dead: its fail
 *          hook, then it aborts the job;
 *        - a polled wait returns the error: the step fails, sched_run finishes every request
 *          ERROR and returns -1, http_stop flushes, comm_abort;
 *        - SIGTERM while a node-local peer is dead (mpirun's reaction): the signal thread.
 */
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat.h"
#include "cli.h"
#include "clock.h"
#include "comm.h"
#include "gguf.h"
#include "model.h"
#include "qtypes.h"
#include "rank.h"
#include "scheduler/sched.h"
#include "server.h"
#include "tok.h"

typedef struct {
    const char *model, *host, *api_key, *model_name, *chat_template, *backend;
    int kv_type;
    long port, tp, pp, ep, threads, n_ctx, max_batch_tokens, max_seqs, max_connections, timeout;
    long block_size, request_timeout, max_per_client, drain_seconds;
    size_t kv_mem, max_body;
} serve_opts;

static void serve_usage(void) {
    fputs("usage: sampan serve -m MODEL [options]\n"
          "  --host ADDR            address to listen on (default 127.0.0.1; 0.0.0.0 or :: for all)\n"
          "  --port N               TCP port (default 8080; 0 = any free port)\n"
          "  --api-key KEY          require 'Authorization: Bearer KEY' on every endpoint but\n"
          "                         /health (default: $SAMPAN_API_KEY if set, else none)\n"
          "  --model-name NAME      the model id clients send (default: the file name without .gguf)\n"
          "  --chat-template NAME   plain|llama2|llama3|chatml|mistral (default: recognised from\n"
          "                         tokenizer.chat_template)\n"
          "  -c N                   context length per sequence (default: the model's, at most 4096)\n"
          "  --max-batch-tokens N   tokens per forward step, decodes + prompt chunks (default 512)\n"
          "  --max-seqs N           sequences running at once (default 64)\n"
          "  --kv-mem BYTES         KV cache pool, e.g. 512M or 2G (default: a quarter of free memory)\n"
          "  --block-size N         tokens per KV block (default 16)\n"
          "  --kv-type T            KV cache elements: f32, f16 or bf16 (default f16)\n"
          "  --backend B            cpu, cuda or auto (default cpu)\n"
          "  --max-body BYTES       largest request body (default 1M; larger: 413, sent before\n"
          "                         the body is read)\n"
          "  --max-connections N    connections served at once (default 64); a new connection\n"
          "                         always gets in: the oldest one still sending its request is\n"
          "                         closed, or, when all are busy answering, the new one gets 503\n"
          "  --max-conns-per-client N  connections from one address; more get 503 with\n"
          "                         Retry-After (default: half of --max-connections, at\n"
          "                         least 8; 0 = no cap, e.g. behind a proxy)\n"
          "  --timeout SEC          close a connection idle this long (default 60; 0 = never)\n"
          "  --request-timeout SEC  time a connection has to send a whole request, headers and\n"
          "                         body, however slowly it trickles (default 10; 0 = no limit)\n"
          "  --drain-seconds SEC    on SIGTERM/SIGINT: stop accepting, let running requests\n"
          "                         finish this long, then end the rest (default 30; a second\n"
          "                         signal ends them at once)\n"
          "  -t N                   threads (default: the CPUs this process may run on)\n"
          "  --tp N --pp N          tensor x pipeline parallel ranks (under mpirun/srun)\n"
          "  --ep N                 expert parallel ranks (MoE models; world = tp x ep x pp)\n",
          stdout);
}

/* "2G", "512M", "1.5K", "1048576": binary multiples */
static int serve_bytes(const char *opt, const char *v, size_t *out) {
    char *end;
    double d = strtod(v, &end);
    double mul = 1;
    if (*end && !end[1]) {
        switch (*end) {
        case 'k': case 'K': mul = 1024.0; break;
        case 'm': case 'M': mul = 1024.0 * 1024; break;
        case 'g': case 'G': mul = 1024.0 * 1024 * 1024; break;
        case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
        default: mul = 0;
        }
        end++;
    }
    if (end == v || *end || mul == 0 || !(d >= 1) || d * mul > 1e15) {
        cli_error("%s expects a size in bytes like 1048576, 512M or 2G, got '%s'", opt, v);
        return -1;
    }
    *out = (size_t)(d * mul);
    return 0;
}

static int serve_parse(int argc, char **argv, serve_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->max_batch_tokens = 512;
    o->max_seqs = 64;
    o->max_connections = 64;
    o->timeout = 60;
    o->request_timeout = 10;
    o->max_per_client = -1;
    o->drain_seconds = 30;
    o->block_size = 16;
    o->max_body = 1 << 20;
    o->kv_type = QT_F16;
    o->backend = "cpu";
    o->api_key = getenv("SAMPAN_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            serve_usage();
            exit(0);
        }
        if (!(v = cli_arg(argc, argv, &i))) return -1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--host")) o->host = v;
        else if (!strcmp(a, "--api-key")) o->api_key = v;
        else if (!strcmp(a, "--model-name")) o->model_name = v;
        else if (!strcmp(a, "--chat-template")) o->chat_template = v;
        else if (!strcmp(a, "--port")) { if (cli_int(a, v, 0, 65535, &o->port)) return -1; }
        else if (!strcmp(a, "--tp")) { if (cli_int(a, v, 1, 4096, &o->tp)) return -1; }
        else if (!strcmp(a, "--pp")) { if (cli_int(a, v, 1, 4096, &o->pp)) return -1; }
        else if (!strcmp(a, "--ep")) { if (cli_int(a, v, 1, 4096, &o->ep)) return -1; }
        else if (!strcmp(a, "-t")) { if (cli_int(a, v, 0, 4096, &o->threads)) return -1; }
        else if (!strcmp(a, "-c")) { if (cli_int(a, v, 1, 1 << 24, &o->n_ctx)) return -1; }
        else if (!strcmp(a, "--max-batch-tokens")) { if (cli_int(a, v, 1, 1 << 20, &o->max_batch_tokens)) return -1; }
        else if (!strcmp(a, "--max-seqs")) { if (cli_int(a, v, 1, 1 << 16, &o->max_seqs)) return -1; }
        else if (!strcmp(a, "--block-size")) { if (cli_int(a, v, 1, 1 << 12, &o->block_size)) return -1; }
        else if (!strcmp(a, "--max-connections")) { if (cli_int(a, v, 1, 1 << 16, &o->max_connections)) return -1; }
        else if (!strcmp(a, "--timeout")) { if (cli_int(a, v, 0, 1 << 20, &o->timeout)) return -1; }
        else if (!strcmp(a, "--request-timeout")) { if (cli_int(a, v, 0, 1 << 20, &o->request_timeout)) return -1; }
        else if (!strcmp(a, "--max-conns-per-client")) { if (cli_int(a, v, 0, 1 << 16, &o->max_per_client)) return -1; }
        else if (!strcmp(a, "--drain-seconds")) { if (cli_int(a, v, 0, 1 << 20, &o->drain_seconds)) return -1; }
        else if (!strcmp(a, "--kv-mem")) { if (serve_bytes(a, v, &o->kv_mem)) return -1; }
        else if (!strcmp(a, "--max-body")) { if (serve_bytes(a, v, &o->max_body)) return -1; }
        else if (!strcmp(a, "--kv-type")) { if (cli_kv_type(a, v, &o->kv_type)) return -1; }
        else if (!strcmp(a, "--backend")) { if (cli_backend(a, v, &o->backend)) return -1; }
        else {
            cli_error("serve: unknown option '%s'", a);
            return -1;
        }
    }
    if (!o->model) {
        cli_error("serve: -m MODEL is required");
        return -1;
    }
    if (o->max_per_client < 0) {   /* half, but at least 8 (all of them when fewer) */
        o->max_per_client = o->max_connections / 2;
        if (o->max_per_client < 8) o->max_per_client = o->max_connections < 8 ? o->max_connections : 8;
    }
    chat_family f;
    if (o->chat_template && chat_family_parse(o->chat_template, &f)) {
        cli_error("serve: --chat-template expects plain, llama2, llama3, chatml or mistral, got '%s'",
                  o->chat_template);
        return -1;
    }
    return 0;
}

/* the file name without directories and without ".gguf" */
static void serve_default_name(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 5 && !strcasecmp(b + n - 5, ".gguf")) n -= 5;
    snprintf(out, cap, "%.*s", (int)n, b);
}

static void serve_chat_tmpl(const model *m, const serve_opts *o, chat_tmpl *t) {
    gguf_str src = { 0 };
    char err[128];
    if (gguf_get_str(m->gguf, "tokenizer.chat_template", &src, err, sizeof err) != 0) src.ptr = NULL;
    chat_tmpl_detect(src.ptr, src.ptr ? (size_t)src.len : 0, t);
    if (o->chat_template) {
        chat_family_parse(o->chat_template, &t->family);
        if (t->family != CHAT_CHATML) t->default_system[0] = 0;
    }
}

/* The signal thread (every rank has one; only the leader's acts): SIGINT/SIGTERM drain and
 * stop the scheduler (step 4 of the header); SIGUSR1 (sent by the main thread) ends it. */
typedef struct {
    sched *s;
    http_server *h;
    comm *world;
    int leader, multi;
    long drain_seconds;
    sigset_t set;
} serve_sig;

/* the leader's clients hear of a failure before the job ends (step 5): once, whoever calls
 * first (http_fail makes a second caller wait until the first is done) */
static void serve_fail(void *arg, const char *msg) {
    serve_sig *g = arg;
    http_fail(g->h, msg);
}

/* a signal while a node-local peer is dead: the launcher is ending the job */
static void serve_peer_dead(serve_sig *g) {
    char msg[320];
    if (!g->multi || !comm_peer_dead(msg, sizeof msg)) return;
    fprintf(stderr, "sampan: %s\n", msg);
    serve_fail(g, msg);
    comm_abort(g->world, 1);
}

/* 1 once every request the scheduler holds has finished */
static int serve_idle(sched *s) {
    sched_stats st;
    sched_stats_get(s, &st);
    return st.requests_running == 0 && st.requests_waiting == 0;
}

static void *serve_sig_main(void *arg) {
    serve_sig *g = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&g->set, &sig)) continue;
        if (sig == SIGUSR1) return NULL;
        if (!g->leader) continue;
        const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
        serve_peer_dead(g);
        fprintf(stderr, "sampan: %s received: draining (running requests get up to %ld s; a "
                "second signal ends them now)\n", name, g->drain_seconds);
        http_drain(g->h);
        const double end = clk_now() + (double)g->drain_seconds;
        const struct timespec tick = { 0, 100000000L };
        while (clk_now() < end && !serve_idle(g->s)) {
            siginfo_t si;
            int got = sigtimedwait(&g->set, &si, &tick);
            if (got == SIGUSR1) return NULL;
            if (got == SIGINT || got == SIGTERM) {
                serve_peer_dead(g);
                fprintf(stderr, "sampan: %s received again: ending the running requests now\n",
                        got == SIGINT ? "SIGINT" : "SIGTERM");
                break;
            }
        }
        sched_stop(g->s);
    }
}

int cmd_serve(int argc, char **argv) {
    serve_opts o;
    if (serve_parse(argc, argv, &o)) return 2;

    serve_sig sg = { 0 };
    sigemptyset(&sg.set);
    sigaddset(&sg.set, SIGINT);
    sigaddset(&sg.set, SIGTERM);
    sigaddset(&sg.set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sg.set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    rank_ctx rk;
    if (rank_init(&argc, &argv, (int)o.tp, (int)o.pp, (int)o.ep, o.model, &rk)) {
        comm_world_finalize();
        return 1;
    }
    model *m = rank_load_model(&rk, o.model, (int)o.threads, o.kv_type, o.backend);
    if (!m) return 1;

    int rc = 1, n_ctx = (int)o.n_ctx;
    if (n_ctx == 0) n_ctx = m->cfg.n_ctx_train < 4096 ? m->cfg.n_ctx_train : 4096;
    sched_opts so = { .max_batch_tokens = (int)o.max_batch_tokens, .max_seqs = (int)o.max_seqs,
                      .kv_mem = o.kv_mem, .block_size = (int)o.block_size, .n_ctx = n_ctx };
    sched *s = sched_new(m, rk.size > 1 ? rk.world : NULL, rk.leader_rank, &so, err, sizeof err);
    if (!s) cli_error("serve: %s", err);
    http_server *h = NULL;
    char name[256];
    if (s && rk.leader) {
        serve_default_name(o.model, name, sizeof name);
        http_opts ho = { .host = o.host, .port = (int)o.port, .api_key = o.api_key,
                         .model_name = o.model_name ? o.model_name : name, .max_body = o.max_body,
                         .max_connections = (int)o.max_connections,
                         .max_conns_per_client = (int)o.max_per_client, .timeout_s = (int)o.timeout,
                         .request_timeout_s = (int)o.request_timeout, .n_ctx = n_ctx,
                         .n_vocab = m->cfg.n_vocab };
        serve_chat_tmpl(m, &o, &ho.chat);
        if (http_start(&ho, s, m->tok, &h, err, sizeof err)) cli_error("serve: %s", err);
        else
            fprintf(stderr, "sampan: serving '%s' (context %d, chat template %s)\n", ho.model_name,
                    n_ctx, chat_family_name(ho.chat.family));
    }
    if (!rank_agree(&rk, s && (!rk.leader || h))) goto out;

    sg.s = s;
    sg.h = h;
    sg.world = rk.world;
    sg.leader = rk.leader;
    sg.multi = rk.size > 1;
    sg.drain_seconds = o.drain_seconds;
    if (rk.leader && rk.size > 1) comm_set_fail_hook(serve_fail, &sg);
    pthread_t sig_thread;
    int have_sig = pthread_create(&sig_thread, NULL, serve_sig_main, &sg) == 0;
    if (!have_sig) {
        cli_error("serve: cannot start the signal thread");
        if (rk.leader) sched_stop(s);   /* still release the followers */
    }
    if (rk.leader) {
        fprintf(stderr, "sampan: listening on %s\n", http_url(h));
        fflush(stderr);
        rc = sched_run(s) ? 1 : 0;
        if (rc) fprintf(stderr, "sampan: serve: a step failed for good (see above): ending the "
                        "job\n");
        http_stop(h);   /* the last events of the streams go out first */
    } else {
        rc = sched_follow(s) ? 1 : 0;
    }
    if (have_sig) {
        pthread_kill(sig_thread, SIGUSR1);
        pthread_join(sig_thread, NULL);
    }
out:
    http_stop(h);   /* no connection thread may reach the scheduler once it is freed */
    if (rk.leader && rk.size > 1) comm_set_fail_hook(NULL, NULL);   /* sg.h goes next */
    if (rc && rk.size > 1) comm_abort(rk.world, rc);   /* the comm is broken: no teardown */
    sched_free(s);
    http_free(h);
    model_free(m);
    if (rc == 0 || rk.size == 1) rank_finish(&rk);
    else comm_abort(rk.world, rc);
    return rc;
}
