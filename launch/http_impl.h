/* launch/http_impl.h — what the files of the HTTP front end share. Not for callers of the
 * server: they use server.h.
 *
 *   server.c        the daemon: start/drain/stop, routing, authentication, the access handler
 *   http_conn.c     the connection table: per-client and total caps, the request time limit
 *                   (a reaper thread), shedding, the flush wait of a stop
 *   http_req.c      a request's life cycle: references, the output queue the scheduler's emit
 *                   fills, cancellation, waiting
 *   http_complete.c the completion driver: job -> sched_submit -> a JSON answer or an SSE
 *                   stream
 *   http_metrics.c  counters and histograms, GET /metrics
 *   oai_*.c         the OpenAI wire format (oai.h), pure
 */
#ifndef SAMPAN_HTTP_IMPL_H
#define SAMPAN_HTTP_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "oai.h"
#include "oai_think.h"
#include "server.h"
#include "scheduler/sched.h"

#define HTTP__WAIT_MS 100        /* how often a waiting connection looks at its client */
#define HTTP__SSE_BLOCK 16384    /* bytes libmicrohttpd asks the stream reader for at most */
#define HTTP__MAX_LE 16
#define HTTP__DRAIN_MAX (64u << 20)   /* bytes of a refused request body read and discarded at
                                         most; a larger one is refused at once, unread */
#define HTTP__FLUSH_S 2.0             /* http_stop: seconds for the last events to go out */
#define HTTP__FAIL_FLUSH_S 1.0        /* http_fail: the same, racing the launcher's SIGKILL */

/* ---- metrics (http_metrics.c) ---- */

typedef struct {
    const char *name, *help;
    const double *le;
    int n;
    uint64_t cnt[HTTP__MAX_LE];   /* observations in (le[i-1], le[i]]; cnt[n]: above le[n-1] */
    double sum;
    uint64_t count;
} http__hist;

#define HTTP__N_CODES 10          /* response codes counted one by one (http_metrics.c) */

typedef struct {
    http__hist ttft, itl, dur;
    uint64_t status[HTTP__N_CODES + 1];   /* per code, then all others */
} http__metrics;

void http__metrics_init(http__metrics *m);
/* under the server's mu */
void http__hist_observe(http__hist *hi, double v);
void http__count(http_server *h, int status);
enum MHD_Result http__metrics_get(http_server *h, struct MHD_Connection *c);

/* ---- the server (server.c) ---- */

typedef struct http__req http__req;

/* Why a connection's next request is refused (503 + Retry-After), decided when it is
 * accepted; /health and /metrics are answered all the same (the reserved path). */
enum { HTTP__OK = 0, HTTP__REFUSE_CLIENT, HTTP__REFUSE_BUSY };

/* One TCP connection, as libmicrohttpd's socket_context (http_conn.c). Lives from
 * MHD_CONNECTION_NOTIFY_STARTED to _CLOSED, which libmicrohttpd calls before it closes fd: so
 * while an entry is in the table under conn_mu, fd is this connection's and shutdown() on it
 * is safe. */
typedef struct http__sock {
    int fd;
    unsigned char addr[17];      /* family byte + IPv4 or IPv6 address: the per-client key */
    int busy;                    /* 1: a request is complete and being answered (no deadline);
                                    0: waiting for a request's headers and body */
    int refuse;                  /* HTTP__OK / HTTP__REFUSE_* */
    int shed;                    /* shutdown() was called: it is on its way out */
    double since;                /* when it began waiting (accepted, or its last answer) */
    struct http__sock *prev, *next;   /* oldest first */
} http__sock;

struct http_server {
    http_opts o;
    char *host, *api_key, *model_name;
    struct sched *s;
    const struct tok *t;
    oai_limits lim;
    struct MHD_Daemon *d;
    int port;
    char url[320];
    atomic_int stopping;         /* http_stop: waiting requests give up */
    atomic_int draining;         /* http_drain / http_fail: new requests get 503 */
    int listen_fd;               /* quiesced listen socket, closed after MHD_stop_daemon */
    pthread_mutex_t life_mu;     /* orders http_drain's quiesce and http_stop's stop */
    pthread_mutex_t mu;          /* guards everything below */
    http__req *live;             /* every request not yet freed */
    uint64_t counter, nonce;
    long started;
    http__metrics met;
    /* the connection table (http_conn.c) */
    pthread_mutex_t conn_mu;     /* guards the table; never held while calling out */
    pthread_cond_t conn_cv;      /* the reaper's tick, and "a connection went idle" */
    pthread_t reaper;
    int conn_init, reaper_on, reaper_stop;
    http__sock *socks, *socks_tail;
    int n_socks, n_waiting, n_busy;   /* not shed / of those: waiting, busy */
    uint64_t n_shed, n_timed_out, n_refused;
    pthread_mutex_t fail_mu;     /* http_fail runs once; a second caller waits for the first */
    int failed;
};

/* per HTTP request, as libmicrohttpd's *con_cls */
typedef struct {
    int route;
    char *body;
    size_t len, cap;
    int too_large;
    size_t discarded;            /* body bytes of a too-large chunked request thrown away */
    int linger;                  /* answered before its body was read: read and discard that
                                    body before the close, or the client sees a reset instead
                                    of the answer (http__completed) */
    http__req *req;              /* a streaming response holds one reference here */
} http__conn;

/* ---- the connection table (http_conn.c) ---- */

int http__conns_init(http_server *h, char *err, size_t errlen);
/* stops the reaper; the table must be empty (after MHD_stop_daemon) */
void http__conns_free(http_server *h);
/* MHD_OPTION_NOTIFY_CONNECTION: STARTED enters the table and applies the caps (shedding the
 * oldest waiting connection when the waiting or the total count is over its limit; marking
 * the new one refused when over the per-client cap, or when every other connection is
 * busy); CLOSED leaves it. */
void http__conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);
/* the table entry of c (NULL if libmicrohttpd has none) */
http__sock *http__sock_of(struct MHD_Connection *c);
/* at a request's headers: HTTP__OK, or why it is refused (the per-client count taken again) */
int http__sock_admit(http_server *h, http__sock *k);
/* the request's body is in: it is answered now, with no deadline */
void http__sock_busy(http_server *h, http__sock *k);
/* the request is over (answered or failed): the connection waits for the next one */
void http__sock_idle(http_server *h, http__sock *k);
/* waits up to `seconds` until no connection is busy; returns how many still are */
int http__conns_flush(http_server *h, double seconds);
/* a lingering close of a connection answered before its body was read: FIN after the answer,
 * then read and discard what the client still sends (HTTP__DRAIN_MAX bytes, 10 s at most) */
void http__linger(http_server *h, struct MHD_Connection *c);

int http__grow(void **p, size_t *cap, size_t need, size_t elem);
/* responses: each counts its status in the metrics. send takes ownership of body (malloc'd);
 * allow: the Allow header of a 405, else NULL */
enum MHD_Result http__send(http_server *h, struct MHD_Connection *c, int status,
                           const char *ctype, char *body, size_t len, const char *allow);
enum MHD_Result http__send_json(http_server *h, struct MHD_Connection *c, int status, cJSON *obj,
                                const char *allow);
enum MHD_Result http__send_err(http_server *h, struct MHD_Connection *c, const oai_err *e);
enum MHD_Result http__fail(http_server *h, struct MHD_Connection *c, int status,
                           const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* ---- a request (http_req.c) ---- */

enum { PH_ROLE, PH_TOKENS, PH_END };

/* one token's logprobs as the scheduler reported them; its top entries are
 * top[i * k .. i * k + n_top) of its choice (k: the request's logprobs) */
typedef struct {
    int32_t token;
    float logprob;
    int n_top;
    long text_off;               /* characters of the choice's text released before its event */
} http__lp;

/* one emit call that added text or (with logprobs) a token: what a stream chunk carries */
typedef struct {
    size_t text_end;             /* end offset in out */
    int lp_end;                  /* end index in lp */
} http__seg;

/* One choice of a request (`n` of them): its own scheduler request and output queue. The
 * emit callback's user; guarded by its request's mu. */
typedef struct {
    http__req *r;
    int index;
    uint64_t sched_id;
    int submitted;               /* sched_submit accepted it: it holds a reference */
    char *out;                   /* (out_len) valid UTF-8 produced so far */
    size_t out_len, out_cap;
    long out_chars;              /* characters in out */
    http__seg *seg;
    size_t n_seg, seg_cap;
    http__lp *lp;
    size_t n_lp, lp_cap;
    sched_top *top;              /* (n_lp * k) */
    size_t top_cap;
    char pend[8];                /* trailing bytes of an incomplete UTF-8 character */
    int n_pend;
    int n_tokens, finished, oom;
    sched_finish finish;
    char *errmsg;
    double t_last;
    /* stream reader state: the connection thread only */
    size_t seg_sent;
    int closed;                  /* its final chunk was sent */
    oai_think think;             /* the reasoning split of its stream (http__req.reasoning) */
} http__choice;

struct http__req {
    http_server *h;
    pthread_mutex_t mu;          /* guards refs and every choice's output (emit vs connection) */
    pthread_cond_t cv;
    int refs;                    /* the connection + one per submitted, unfinished choice */
    int cancelled;               /* sched_cancel was called for every choice */
    int n;                       /* choices */
    http__choice ch[OAI_MAX_N];
    int n_finished;
    int finished;                /* every choice finished (n_finished == n) */
    double t_submit;
    int got_first;
    /* the echoed prompt's logprobs (echo with logprobs), filled from choice 0's
     * prompt_logits; entry 0 has none. prompt_done: complete, or never coming */
    float *plp;                  /* (n_prompt) */
    int *plp_ntop;               /* (n_prompt) */
    sched_top *plp_top;          /* (n_prompt * logprobs) */
    long *plp_off;               /* (n_prompt) text_offset of each prompt token */
    int plp_next, prompt_done;
    /* set before submit, then read-only */
    int chat, stream, include_usage, n_prompt, fd;
    int reasoning;               /* a reasoning model's chat: the thought as reasoning_content */
    int logprobs;                /* -1 none, else k (oai_job.logprobs) */
    int echo;
    char *echo_text;             /* (echo_len) valid UTF-8 */
    size_t echo_len;
    long echo_chars;
    int32_t *prompt;             /* (n_prompt) with echo: for its logprobs' tokens */
    char id[48];
    long created;
    /* stream reader state: the connection thread only */
    int phase;
    char *sse;
    size_t sse_len, sse_off, sse_cap;
    double t_sent;
    http__req *prev, *next;      /* h->live, under h->mu */
};

/* refs = 1 (the connection), n choices, nothing submitted */
http__req *http__req_new(http_server *h, int n);
void http__req_destroy(http__req *r);
void http__req_release(http__req *r);
/* the scheduler's emit callback (user: an http__choice). A choice finishes once: events
 * after its first finish are dropped (a finish still drops its caller's reference). */
void http__emit(void *user, const sched_event *ev);
/* Ends every submitted, unfinished choice of every live request with SCHED_FINISH_ERROR and
 * msg, as the scheduler would (a rank died and the scheduler cannot say so itself); the
 * scheduler's own later emit for such a choice only drops its reference. Returns how many. */
size_t http__req_fail_all(http_server *h, const char *msg);
/* its prompt_logits callback (user: choice 0, with echo and logprobs) */
void http__prompt_logits(void *user, int pos, const float *logits, int n_vocab);
/* 1 if the client hung up (or its socket failed) */
int http__client_gone(int fd);
/* r->mu held: sched_cancel every submitted choice that has not finished, once */
void http__cancel(http__req *r);
/* r->mu held: wait up to HTTP__WAIT_MS for the next emit */
void http__req_wait(http__req *r);

/* ---- completions (http_complete.c) ---- */

/* POST /v1/completions (chat 0) and /v1/chat/completions (chat 1), body in cc */
enum MHD_Result http__complete(http_server *h, struct MHD_Connection *c, http__conn *cc, int chat);

#endif
