/* launch/http_complete.c — the completion driver: a POST body -> oai_parse -> one
 * sched_submit per choice, then either a JSON answer once every choice finished (waiting on
 * the connection's own thread) or a server-sent-event stream that libmicrohttpd pulls through
 * http__stream_read.
 *
 * Streams: a chat stream opens each choice with a {"role": "assistant"} chunk, a completions
 * stream with echo with a chunk of the prompt's text (and its logprobs). Then one chunk per
 * emit call that released text (or, with logprobs, delivered a token), choices interleaved
 * with their "index"; a token's logprobs ride in the chunk of the event that delivered the
 * token, whose text may be empty (held back: a possible stop string, an unfinished UTF-8
 * character) or hold earlier tokens' bytes too. Each choice ends with its own chunk carrying
 * finish_reason ("error" when the server stopped or failed first), then an error event if a
 * step failed, the usage chunk (stream_options.include_usage; completion tokens summed over
 * the choices), and `data: [DONE]`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "http_impl.h"

/* ---- encoding ----------------------------------------------------------------------------- */

static int http__sse_put(http__req *r, const char *s, size_t n) {
    if (http__grow((void **)&r->sse, &r->sse_cap, r->sse_len + n + 1, 1)) return -1;
    memcpy(r->sse + r->sse_len, s, n);
    r->sse_len += n;
    return 0;
}

/* appends "data: JSON\n\n" of obj (freed) to the request's SSE buffer */
static int http__sse_event(http__req *r, cJSON *obj) {
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s) return -1;
    int rc = http__sse_put(r, "data: ", 6) || http__sse_put(r, s, strlen(s)) ||
             http__sse_put(r, "\n\n", 2);
    free(s);
    return rc;
}

/* The logprobs of n generated tokens (lp, tops at stride k), after the n_plp first entries of
 * the echoed prompt when n_plp > 0; off_add: characters before the generated text (the echo).
 * NULL: out of memory. */
static cJSON *http__lp_json(http__req *r, const http__lp *lp, const sched_top *top, size_t n,
                            long off_add, int n_plp) {
    size_t total = n + (size_t)n_plp;
    oai_lp *e = malloc((total ? total : 1) * sizeof *e);
    if (!e) return NULL;
    int k = r->logprobs;
    for (int i = 0; i < n_plp; i++)
        e[i] = (oai_lp){ .token = r->prompt[i], .logprob = i ? r->plp[i] : NAN,
                         .text_offset = r->plp_off[i], .n_top = i ? r->plp_ntop[i] : 0,
                         .top = r->plp_top + (size_t)i * k };
    for (size_t i = 0; i < n; i++)
        e[n_plp + i] = (oai_lp){ .token = lp[i].token, .logprob = lp[i].logprob,
                                 .text_offset = lp[i].text_off + off_add, .n_top = lp[i].n_top,
                                 .top = top ? top + i * (size_t)k : NULL };
    cJSON *o = oai_logprobs(r->chat, r->h->t, e, (int)total);
    free(e);
    return o;
}

/* one chunk of choice index: text (NULL: none), logprobs (taken), finish (NULL: null),
 * reasoning (NULL: none) */
static int http__sse_chunk(http__req *r, int index, const char *text, const char *finish, int role,
                           cJSON *logprobs, const char *reasoning) {
    cJSON *o = oai_base(r->chat, 1, r->id, r->created, r->h->model_name);
    cJSON *ch = cJSON_AddArrayToObject(o, "choices");
    cJSON_AddItemToArray(ch, oai_choice(r->chat, 1, index, text, finish, role, logprobs, reasoning));
    if (r->include_usage) cJSON_AddNullToObject(o, "usage");
    return http__sse_event(r, o);
}

/* a piece of choice index's text as a chunk; a reasoning chat splits it into the thought's
 * part (delta.reasoning_content) and the answer's (delta.content), holding back a possible
 * tag's start until the next piece or the last call; a chunk with neither part is sent only
 * to carry logprobs */
static int http__text_chunk(http__req *r, http__choice *c, int index, const char *text, size_t n,
                            int last, cJSON *logprobs) {
    if (!r->reasoning) return http__sse_chunk(r, index, text, NULL, 0, logprobs, NULL);
    char *rb = malloc(2 * (n + 16) + 2);
    if (!rb) {
        cJSON_Delete(logprobs);
        return 1;
    }
    char *cb = rb + n + 17;
    size_t rn, cn;
    oai_think_feed(&c->think, text, n, last, rb, &rn, cb, &cn);
    rb[rn] = cb[cn] = 0;
    int bad = rn || cn || logprobs
                  ? http__sse_chunk(r, index, cn ? cb : NULL, NULL, 0, logprobs, rn ? rb : NULL)
                  : 0;
    free(rb);
    return bad;
}

static int http__n_tokens(http__req *r) {
    int n = 0;
    for (int i = 0; i < r->n; i++) n += r->ch[i].n_tokens;
    return n;
}

/* ---- streams ------------------------------------------------------------------------------ */

/* What a stream step took from one choice under the lock: its new segments, copied. */
typedef struct {
    char *text;                  /* (seg[n_seg - 1].text_end) bytes */
    http__seg *seg;              /* offsets relative to text and lp */
    size_t n_seg;
    http__lp *lp;
    sched_top *top;              /* (n_lp * k) */
    size_t n_lp;
    int finished, oom;
    sched_finish finish;
    char *errmsg;
} http__snap;

/* r->mu held: copies choice c's unsent segments into s and marks them sent */
static void http__snap_take(http__req *r, http__choice *c, http__snap *s) {
    memset(s, 0, sizeof *s);
    s->finished = c->finished;
    s->finish = c->finish;
    s->oom = c->oom;
    if (c->finished && c->errmsg) s->errmsg = strdup(c->errmsg);
    size_t a = c->seg_sent, b = c->n_seg;
    if (b == a) return;
    size_t t0 = a ? c->seg[a - 1].text_end : 0, t1 = c->seg[b - 1].text_end;
    size_t l0 = a ? (size_t)c->seg[a - 1].lp_end : 0, l1 = (size_t)c->seg[b - 1].lp_end;
    size_t k = r->logprobs > 0 ? (size_t)r->logprobs : 0;
    s->text = malloc(t1 - t0 + 1);
    s->seg = malloc((b - a) * sizeof *s->seg);
    s->lp = malloc((l1 - l0 + 1) * sizeof *s->lp);
    s->top = malloc(((l1 - l0) * k + 1) * sizeof *s->top);
    if (!s->text || !s->seg || !s->lp || !s->top) {
        s->oom = 1;
        return;
    }
    memcpy(s->text, c->out + t0, t1 - t0);
    s->text[t1 - t0] = 0;
    for (size_t i = a; i < b; i++)
        s->seg[i - a] = (http__seg){ .text_end = c->seg[i].text_end - t0,
                                     .lp_end = c->seg[i].lp_end - (int)l0 };
    s->n_seg = b - a;
    if (l1 > l0) memcpy(s->lp, c->lp + l0, (l1 - l0) * sizeof *s->lp);
    if (k && l1 > l0) memcpy(s->top, c->top + l0 * k, (l1 - l0) * k * sizeof *s->top);
    s->n_lp = l1 - l0;
    c->seg_sent = b;
}

static void http__snap_free(http__snap *s) {
    free(s->text);
    free(s->seg);
    free(s->lp);
    free(s->top);
    free(s->errmsg);
}

/* r->mu held: the stream can open its choices (a chat's role chunks; an echo once the
 * prompt's logprobs are complete) */
static int http__can_open(http__req *r, int stopping) {
    return r->phase == PH_ROLE && (r->chat || !r->echo || r->prompt_done || stopping);
}

/* r->mu held: something to send */
static int http__news(http__req *r) {
    if (r->phase == PH_ROLE) return http__can_open(r, 0);
    for (int i = 0; i < r->n; i++) {
        http__choice *c = &r->ch[i];
        if (!c->closed && (c->seg_sent < c->n_seg || c->finished)) return 1;
    }
    return 0;
}

/* the opening chunks: role (chat) or the echoed prompt (completions); n_plp prompt logprobs */
static int http__stream_open(http__req *r, int n_plp) {
    int bad = 0;
    for (int i = 0; i < r->n && !bad; i++) {
        if (r->chat) {
            bad = http__sse_chunk(r, i, NULL, NULL, 1, NULL, NULL);
        } else if (r->echo) {
            cJSON *lp = NULL;
            if (r->logprobs >= 0 && !(lp = http__lp_json(r, NULL, NULL, 0, 0, n_plp))) bad = 1;
            else bad = http__sse_chunk(r, i, r->echo_text, NULL, 0, lp, NULL);
        }
    }
    r->phase = PH_TOKENS;
    return bad;
}

/* One round of a stream: waits for news (or the keep-alive time), then appends to r->sse the
 * chunks of everything new. -1: cut the stream (client gone, cancelled, out of memory). */
static int http__stream_step(http__req *r) {
    http_server *h = r->h;
    double keepalive = h->o.timeout_s > 0 ? h->o.timeout_s / 3.0 : 15.0;
    pthread_mutex_lock(&r->mu);
    int stopping;
    for (;;) {
        if ((stopping = atomic_load(&h->stopping))) break;
        if (http__client_gone(r->fd)) {
            http__cancel(r);
            pthread_mutex_unlock(&r->mu);
            return -1;
        }
        if (http__news(r) || clk_now() - r->t_sent > keepalive) break;
        http__req_wait(r);
    }
    int open = http__can_open(r, stopping);
    int n_plp = r->plp_next + 1 < r->n_prompt ? r->plp_next + 1 : r->n_prompt;
    if (!r->plp) n_plp = 0;
    http__snap s[OAI_MAX_N];
    int taken = open || r->phase == PH_TOKENS;
    for (int i = 0; i < r->n; i++) {
        if (taken && !r->ch[i].closed) http__snap_take(r, &r->ch[i], &s[i]);
        else memset(&s[i], 0, sizeof s[i]);
    }
    pthread_mutex_unlock(&r->mu);

    size_t len0 = r->sse_len;
    int bad = 0, cut = 0;
    if (open) bad = http__stream_open(r, n_plp);
    long off_add = r->echo ? r->echo_chars : 0;
    const char *errmsg = NULL;
    for (int i = 0; i < r->n && taken && !bad && !cut; i++) {
        http__choice *c = &r->ch[i];
        http__snap *p = &s[i];
        if (c->closed) continue;
        bad |= p->oom;
        size_t t = 0;
        int l = 0;
        for (size_t g = 0; g < p->n_seg && !bad; g++) {
            size_t te = p->seg[g].text_end;
            int le = p->seg[g].lp_end;
            char save = p->text[te];
            p->text[te] = 0;
            cJSON *lp = NULL;
            if (r->logprobs >= 0 &&
                !(lp = http__lp_json(r, p->lp + l, p->top + (size_t)l * (size_t)(r->logprobs > 0 ? r->logprobs : 0),
                                     (size_t)(le - l), off_add, 0)))
                bad = 1;
            else
                bad = http__text_chunk(r, c, i, p->text + t, te - t, 0, lp);
            p->text[te] = save;
            t = te;
            l = le;
        }
        if (bad || !(p->finished || stopping)) continue;
        sched_finish fin = p->finished ? p->finish : SCHED_FINISH_SHUTDOWN;
        if (fin == SCHED_FINISH_CANCELLED) {
            cut = 1;   /* nobody listens */
            break;
        }
        if (fin == SCHED_FINISH_ERROR && !errmsg) errmsg = p->errmsg ? p->errmsg : "generation failed";
        if (r->reasoning) bad = http__text_chunk(r, c, i, "", 0, 1, NULL);   /* what it held */
        bad = bad || http__sse_chunk(r, i, NULL, oai_finish_reason(fin), 0, NULL, NULL);
        c->closed = 1;
    }
    int all = 1;
    for (int i = 0; i < r->n; i++) all &= r->ch[i].closed;
    if (all && !bad && !cut) {
        if (errmsg) {
            oai_err e;
            oai_err_set(&e, 503, NULL, "generation_failed", "%s", errmsg);
            bad |= http__sse_event(r, oai_error_json(&e));
        }
        if (r->include_usage && !bad) {
            pthread_mutex_lock(&r->mu);
            int n_tokens = http__n_tokens(r);
            pthread_mutex_unlock(&r->mu);
            cJSON *o = oai_base(r->chat, 1, r->id, r->created, h->model_name);
            cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToObject(o, "usage", oai_usage(r->n_prompt, n_tokens));
            bad |= http__sse_event(r, o);
        }
        bad |= http__sse_put(r, "data: [DONE]\n\n", 14);
        r->phase = PH_END;
    }
    if (!bad && !cut && r->sse_len == len0 && r->phase != PH_END && !open)
        bad = http__sse_put(r, ": keep-alive\n\n", 14);
    for (int i = 0; i < r->n; i++) http__snap_free(&s[i]);
    return bad || cut ? -1 : 0;
}

/* libmicrohttpd's content reader for a streamed completion (its connection thread). */
static ssize_t http__stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    http__req *r = cls;
    (void)pos;
    for (;;) {
        if (r->sse_off < r->sse_len) {
            size_t n = r->sse_len - r->sse_off < max ? r->sse_len - r->sse_off : max;
            memcpy(buf, r->sse + r->sse_off, n);
            r->sse_off += n;
            r->t_sent = clk_now();
            return (ssize_t)n;
        }
        r->sse_len = r->sse_off = 0;
        if (r->phase == PH_END) return MHD_CONTENT_READER_END_OF_STREAM;
        if (http__stream_step(r)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

/* ---- a whole answer ----------------------------------------------------------------------- */

/* every choice finished: the response object, or NULL when out of memory */
static cJSON *http__answer(http__req *r) {
    cJSON *o = oai_base(r->chat, 0, r->id, r->created, r->h->model_name);
    cJSON *ch = cJSON_AddArrayToObject(o, "choices");
    int bad = !o || !ch;
    for (int i = 0; i < r->n && !bad; i++) {
        http__choice *c = &r->ch[i];
        size_t el = r->echo ? r->echo_len : 0;
        char *text = malloc(el + c->out_len + 1);
        cJSON *lp = NULL;
        if (!text) {
            bad = 1;
            break;
        }
        if (el) memcpy(text, r->echo_text, el);
        if (c->out_len) memcpy(text + el, c->out, c->out_len);
        text[el + c->out_len] = 0;
        if (r->logprobs >= 0 &&
            !(lp = http__lp_json(r, c->lp, c->top, c->n_lp, r->echo ? r->echo_chars : 0,
                                 r->plp ? r->n_prompt : 0)))
            bad = 1;
        else if (r->reasoning) {   /* the thought apart from the answer */
            oai_think th;
            oai_think_init(&th);
            size_t n = el + c->out_len, rn, cn;
            char *rb = malloc(2 * (n + 16) + 2);
            if (!rb) {
                cJSON_Delete(lp);
                bad = 1;
            } else {
                char *cb = rb + n + 17;
                oai_think_feed(&th, text, n, 1, rb, &rn, cb, &cn);
                rb[rn] = cb[cn] = 0;
                cJSON_AddItemToArray(ch, oai_choice(r->chat, 0, i, cb, oai_finish_reason(c->finish), 0, lp, rb));
                free(rb);
            }
        } else
            cJSON_AddItemToArray(ch, oai_choice(r->chat, 0, i, text, oai_finish_reason(c->finish), 0, lp, NULL));
        free(text);
    }
    cJSON_AddItemToObject(o, "usage", oai_usage(r->n_prompt, http__n_tokens(r)));
    if (bad) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---- the driver --------------------------------------------------------------------------- */

/* Copies what the request keeps of the job (echo text, the prompt for its logprobs). */
static int http__req_setup(http__req *r, const oai_job *j) {
    r->chat = j->chat;
    r->reasoning = j->chat && r->h->o.chat.reasoning;
    r->stream = j->stream;
    r->include_usage = j->include_usage;
    r->n_prompt = j->n_prompt;
    r->logprobs = j->logprobs;
    r->echo = j->echo;
    r->phase = PH_ROLE;
    if (!j->echo) return 0;
    if (!(r->echo_text = oai_text(j->echo_text ? j->echo_text : "", j->echo_len, &r->echo_len)))
        return -1;
    r->echo_chars = oai_chars(r->echo_text, r->echo_len);
    if (j->logprobs < 0) return 0;
    size_t n = (size_t)j->n_prompt, k = (size_t)j->logprobs;
    r->prompt = malloc(n * sizeof *r->prompt);
    r->plp = calloc(n, sizeof *r->plp);
    r->plp_ntop = calloc(n, sizeof *r->plp_ntop);
    r->plp_top = calloc(n * k + 1, sizeof *r->plp_top);
    r->plp_off = calloc(n, sizeof *r->plp_off);
    if (!r->prompt || !r->plp || !r->plp_ntop || !r->plp_top || !r->plp_off ||
        oai_prompt_offsets(r->h->t, j->prompt, j->n_prompt, r->plp_off))
        return -1;
    memcpy(r->prompt, j->prompt, n * sizeof *r->prompt);
    r->prompt_done = 0;
    return 0;
}

/* Submits choice 0, then choices 1..n-1 sharing its prompt blocks. 0, or -1 with the error
 * answered on c (the choices already submitted are cancelled). */
static int http__submit(http_server *h, struct MHD_Connection *c, http__req *r, const oai_job *j,
                        enum MHD_Result *q) {
    sched_request sr = { .prompt = j->prompt, .n_prompt = j->n_prompt,
                         .max_tokens = (int)j->max_tokens, .sampling = j->sp,
                         .ignore_eos = j->ignore_eos, .bias = j->bias, .n_bias = j->n_bias,
                         .logprobs = j->logprobs };
    for (int i = 0; i < SCHED_MAX_STOPS; i++) sr.stop[i] = j->stops[i];
    r->t_submit = r->t_sent = clk_now();
    uint64_t first = 0;
    for (int i = 0; i < r->n; i++) {
        sr.sampling.seed = j->sp.seed + (uint64_t)i * OAI_SEED_STEP;
        sr.share_prefix_of = i ? first : 0;
        sr.prompt_logits = i == 0 && r->plp ? http__prompt_logits : NULL;
        pthread_mutex_lock(&r->mu);
        r->refs++;   /* the choice's: dropped by its emit(finished) */
        pthread_mutex_unlock(&r->mu);
        char err[256] = "";
        uint64_t id;
        if (sched_submit(h->s, &sr, http__emit, &r->ch[i], &id, err, sizeof err)) {
            pthread_mutex_lock(&r->mu);
            r->refs--;
            http__cancel(r);
            pthread_mutex_unlock(&r->mu);
            if (atomic_load(&h->stopping))
                *q = http__fail(h, c, 503, NULL, "server_shutting_down", "the server is shutting down");
            else if (i == 0)
                *q = http__fail(h, c, 400, j->chat ? "messages" : "prompt", "invalid_request", "%s", err);
            else
                *q = http__fail(h, c, 500, NULL, "submit_failed", "choice %d of %d: %s", i, r->n, err);
            return -1;
        }
        pthread_mutex_lock(&r->mu);
        r->ch[i].sched_id = id;
        r->ch[i].submitted = 1;
        pthread_mutex_unlock(&r->mu);
        if (i == 0) first = id;
    }
    return 0;
}

enum MHD_Result http__complete(http_server *h, struct MHD_Connection *c, http__conn *cc,
                                      int chat) {
    oai_job j;
    oai_err e;
    if (oai_parse(&h->lim, cc->body ? cc->body : "", cc->len, chat, &j, &e)) {
        oai_job_free(&j);
        return http__send_err(h, c, &e);
    }
    http__req *r = http__req_new(h, j.n);
    if (!r || http__req_setup(r, &j)) {
        oai_job_free(&j);
        if (r) http__req_release(r);
        return http__fail(h, c, 500, NULL, NULL, "out of memory");
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    if (!j.seed_given) {
        pthread_mutex_lock(&h->mu);
        j.sp.seed = h->nonce ^ (++h->counter * 0x9e3779b97f4a7c15ull);
        pthread_mutex_unlock(&h->mu);
    }
    enum MHD_Result q = MHD_NO;
    int rc = http__submit(h, c, r, &j, &q);
    oai_job_free(&j);
    if (rc) {
        http__req_release(r);
        return q;
    }

    if (r->stream) {
        struct MHD_Response *res = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP__SSE_BLOCK,
                                                                     http__stream_read, r, NULL);
        if (!res) {
            pthread_mutex_lock(&r->mu);
            http__cancel(r);
            pthread_mutex_unlock(&r->mu);
            http__req_release(r);
            return MHD_NO;
        }
        MHD_add_response_header(res, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(res, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        cc->req = r;   /* released when libmicrohttpd reports the request done */
        q = MHD_queue_response(c, MHD_HTTP_OK, res);
        MHD_destroy_response(res);
        http__count(h, 200);
        return q;
    }

    /* Not streamed: wait here (this connection's own thread). The idle timeout is off while
     * the server, not the client, is the slow side; setting it again restarts its clock. Once
     * every choice finished, no emit touches them again: they are read without the lock. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    pthread_mutex_lock(&r->mu);
    while (!r->finished && !atomic_load(&h->stopping)) {
        if (!r->cancelled && http__client_gone(r->fd)) http__cancel(r);
        http__req_wait(r);
    }
    int finished = r->finished, cancelled = r->cancelled;
    pthread_mutex_unlock(&r->mu);
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)h->o.timeout_s);

    int shutdown = 0, oom = 0;
    const char *errmsg = NULL;
    for (int i = 0; finished && i < r->n; i++) {
        http__choice *ch = &r->ch[i];
        cancelled |= ch->finish == SCHED_FINISH_CANCELLED;
        shutdown |= ch->finish == SCHED_FINISH_SHUTDOWN;
        oom |= ch->oom;
        if (ch->finish == SCHED_FINISH_ERROR && !errmsg) errmsg = ch->errmsg ? ch->errmsg : "generation failed";
    }
    cJSON *o = NULL;
    if (!finished || shutdown) {
        q = http__fail(h, c, 503, NULL, "server_shutting_down",
                       "the server is shutting down; the completion did not finish");
    } else if (cancelled) {
        q = MHD_NO;   /* nobody is listening */
    } else if (errmsg) {
        q = http__fail(h, c, 503, NULL, "generation_failed", "%s", errmsg);
    } else if (oom || !(o = http__answer(r))) {
        q = http__fail(h, c, 500, NULL, NULL, "out of memory collecting the output");
    } else {
        q = http__send_json(h, c, 200, o, NULL);
    }
    http__req_release(r);
    return q;
}
