/* launch/cmd_serve.c — `sampan serve`: load the model on every rank, start the scheduler, and
 * on the leader rank answer OpenAI-style HTTP requests (server.h) until SIGINT or SIGTERM.
 *
 * Start-up and shutdown, on every rank:
 *   1. SIGINT/SIGTERM are blocked before any thread exists (every thread inherits the mask);
 *      one thread takes them with sigwait, so no signal handler ever runs.
 *   2. rank_init, model_load, sched_new (collective: the leader sizes the KV pool), then the
 *      leader starts the HTTP daemon; rank_agree makes every rank learn whether all succeeded.
 *   3. The leader runs sched_run, the others sched_follow.
 *   4. A signal on the leader calls sched_stop: sched_run finishes every request ("cancelled")
 *      and releases the followers; the leader then stops the daemon (http_stop), frees the
 *      scheduler and then the server (http_free). Followers ignore signals: they end when the
 *      leader says so, so no rank is left inside a collective.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat.h"
#include "cli.h"
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
    long port, tp, pp, threads, n_ctx, max_batch_tokens, max_seqs, max_connections, timeout;
    long block_size;
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
          "  --max-body BYTES       largest request body (default 1M)\n"
          "  --max-connections N    concurrent connections (default 64)\n"
          "  --timeout SEC          close a connection idle this long (default 60; 0 = never)\n"
          "  -t N                   threads (default: the CPUs this process may run on)\n"
          "  --tp N --pp N          tensor x pipeline parallel ranks (under mpirun/srun)\n",
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
        else if (!strcmp(a, "-t")) { if (cli_int(a, v, 0, 4096, &o->threads)) return -1; }
        else if (!strcmp(a, "-c")) { if (cli_int(a, v, 1, 1 << 24, &o->n_ctx)) return -1; }
        else if (!strcmp(a, "--max-batch-tokens")) { if (cli_int(a, v, 1, 1 << 20, &o->max_batch_tokens)) return -1; }
        else if (!strcmp(a, "--max-seqs")) { if (cli_int(a, v, 1, 1 << 16, &o->max_seqs)) return -1; }
        else if (!strcmp(a, "--block-size")) { if (cli_int(a, v, 1, 1 << 12, &o->block_size)) return -1; }
        else if (!strcmp(a, "--max-connections")) { if (cli_int(a, v, 1, 1 << 16, &o->max_connections)) return -1; }
        else if (!strcmp(a, "--timeout")) { if (cli_int(a, v, 0, 1 << 20, &o->timeout)) return -1; }
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

/* The signal thread: SIGINT/SIGTERM stop the scheduler on the leader; SIGUSR1 (sent by the
 * main thread) ends the thread. */
typedef struct {
    sched *s;
    int leader;
    sigset_t set;
} serve_sig;

static void *serve_sig_main(void *arg) {
    serve_sig *g = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&g->set, &sig)) continue;
        if (sig == SIGUSR1) return NULL;
        if (g->leader) {
            fprintf(stderr, "sampan: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
            sched_stop(g->s);
        }
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
    if (rank_init(&argc, &argv, (int)o.tp, (int)o.pp, o.model, &rk)) {
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
                         .max_connections = (int)o.max_connections, .timeout_s = (int)o.timeout,
                         .n_ctx = n_ctx, .n_vocab = m->cfg.n_vocab };
        serve_chat_tmpl(m, &o, &ho.chat);
        if (http_start(&ho, s, m->tok, &h, err, sizeof err)) cli_error("serve: %s", err);
        else
            fprintf(stderr, "sampan: serving '%s' (context %d, chat template %s)\n", ho.model_name,
                    n_ctx, chat_family_name(ho.chat.family));
    }
    if (!rank_agree(&rk, s && (!rk.leader || h))) goto out;

    sg.s = s;
    sg.leader = rk.leader;
    pthread_t sig_thread;
    int have_sig = pthread_create(&sig_thread, NULL, serve_sig_main, &sg) == 0;
    if (!have_sig) {
        cli_error("serve: cannot start the signal thread");
        if (rk.leader) sched_stop(s);   /* still release the followers */
    }
    if (rk.leader) {
        fprintf(stderr, "sampan: listening on %s\n", http_url(h));
        fflush(stderr);
        sched_run(s);
        http_stop(h);
        rc = 0;
    } else {
        rc = sched_follow(s) ? 1 : 0;
    }
    if (have_sig) {
        pthread_kill(sig_thread, SIGUSR1);
        pthread_join(sig_thread, NULL);
    }
out:
    http_stop(h);   /* no connection thread may reach the scheduler once it is freed */
    sched_free(s);
    http_free(h);
    model_free(m);
    if (rc == 0 || rk.size == 1) rank_finish(&rk);
    else comm_abort(rk.world, rc);
    return rc;
}
