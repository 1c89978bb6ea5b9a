/* launch/server.c — the HTTP front end: daemon, routing, authentication, request validation,
 * responses, server-sent events, metrics. The request life cycle is in server.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "chat.h"
#include "cli.h"
#include "sample.h"
#include "server.h"
#include "tok.h"
#include "scheduler/sched.h"

#define HTTP__WAIT_MS 100        /* how often a waiting connection looks at its client */
#define HTTP__SSE_BLOCK 16384    /* bytes libmicrohttpd asks the stream reader for at most */
#define HTTP__MAX_LE 16

/* ---- metrics ------------------------------------------------------------------------------ */

typedef struct {
    const char *name, *help;
    const double *le;
    int n;
    uint64_t cnt[HTTP__MAX_LE];   /* observations in (le[i-1], le[i]]; cnt[n]: above le[n-1] */
    double sum;
    uint64_t count;
} http__hist;

static const double http__ttft_le[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                        30, 60 };
static const double http__itl_le[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                       1, 2.5 };
static const double http__dur_le[] = { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                                       300 };

static void http__hist_observe(http__hist *hi, double v) {
    int i = 0;
    while (i < hi->n && v > hi->le[i]) i++;
    hi->cnt[i]++;
    hi->sum += v;
    hi->count++;
}

static const int http__codes[] = { 200, 400, 401, 404, 405, 413, 415, 500, 503 };
#define HTTP__N_CODES ((int)(sizeof http__codes / sizeof *http__codes))

/* ---- server and request ------------------------------------------------------------------- */

typedef struct http__req http__req;

struct http_server {
    http_opts o;
    char *host, *api_key, *model_name;
    struct sched *s;
    const struct tok *t;
    struct MHD_Daemon *d;
    int port;
    char url[320];
    atomic_int stopping;
    pthread_mutex_t mu;          /* guards everything below */
    http__req *live;             /* every request not yet freed */
    uint64_t counter, nonce;
    long started;
    http__hist ttft, itl, dur;
    uint64_t status[HTTP__N_CODES + 1];   /* responses per code in http__codes, then others */
};

enum { PH_ROLE, PH_TOKENS, PH_END };

struct http__req {
    http_server *h;
    pthread_mutex_t mu;          /* guards refs and the output below (emit vs connection) */
    pthread_cond_t cv;
    int refs;
    uint64_t sched_id;
    int cancelled;               /* sched_cancel was called */
    char *out;                   /* (out_len) valid UTF-8 produced so far */
    size_t out_len, out_cap;
    size_t *seg;                 /* (n_seg) end offsets in out, one per token that added text */
    int n_seg, seg_cap;
    char pend[8];                /* trailing bytes of an incomplete UTF-8 character */
    int n_pend;
    int n_tokens, finished, oom;
    char reason[16];
    char *errmsg;
    double t_submit, t_last;
    int got_first;
    /* set before submit, then read-only */
    int chat, stream, include_usage, n_prompt, fd;
    char id[48];
    long created;
    /* stream reader state: the connection thread only */
    int seg_sent, phase;
    char *sse;
    size_t sse_len, sse_off, sse_cap;
    double t_sent;
    http__req *prev, *next;      /* h->live, under h->mu */
};

/* per HTTP request, as libmicrohttpd's *con_cls */
typedef struct {
    int route;
    char *body;
    size_t len, cap;
    int too_large;
    http__req *req;              /* a streaming response holds one reference here */
} http__conn;

typedef struct {
    int status;
    const char *type, *param, *code;
    char msg[512];
} http__err;

static double http__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void http__set_err(http__err *e, int status, const char *param, const char *code,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void http__set_err(http__err *e, int status, const char *param, const char *code,
                          const char *fmt, ...) {
    e->status = status;
    e->type = status >= 500 ? "server_error" : "invalid_request_error";
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

/* ---- UTF-8 and authentication (exported for tests) ---------------------------------------- */

size_t http_utf8_complete(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t j = n;
    while (j > 0 && n - j < 4 && (u[j - 1] & 0xC0) == 0x80) j--;
    if (j == 0) return n;
    unsigned c = u[j - 1];
    size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3
                : c >= 0xC2 && c <= 0xDF ? 2 : 1;
    size_t have = n - (j - 1);
    return need > 1 && have < need ? j - 1 : n;
}

int http_auth_ok(const char *header, const char *key) {
    if (!header || !key || !*key) return 0;
    while (*header == ' ') header++;
    if (strncasecmp(header, "Bearer", 6) || header[6] != ' ') return 0;
    const char *bearer = header + 7;
    while (*bearer == ' ') bearer++;
    size_t tl = strlen(bearer), kl = strlen(key);
    while (tl && (bearer[tl - 1] == ' ' || bearer[tl - 1] == '\t')) tl--;
    unsigned diff = tl != kl;
    for (size_t i = 0; i < tl; i++)
        diff |= (unsigned)((unsigned char)bearer[i] ^ (unsigned char)key[i % kl]);
    return diff == 0;
}

/* ---- requests: creation, output queue, release -------------------------------------------- */

static http__req *http__req_new(http_server *h) {
    http__req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->mu, NULL);
    r->h = h;
    r->refs = 1;
    r->fd = -1;
    pthread_mutex_lock(&h->mu);
    uint64_t n = ++h->counter;
    r->next = h->live;
    if (h->live) h->live->prev = r;
    h->live = r;
    pthread_mutex_unlock(&h->mu);
    snprintf(r->id, sizeof r->id, "%016llx%08llx", (unsigned long long)h->nonce,
             (unsigned long long)(n & 0xffffffffu));
    r->created = (long)time(NULL);
    return r;
}

static void http__req_destroy(http__req *r) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->out);
    free(r->seg);
    free(r->errmsg);
    free(r->sse);
    free(r);
}

static void http__req_release(http__req *r) {
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left) return;
    http_server *h = r->h;
    pthread_mutex_lock(&h->mu);
    if (r->prev) r->prev->next = r->next;
    else h->live = r->next;
    if (r->next) r->next->prev = r->prev;
    pthread_mutex_unlock(&h->mu);
    http__req_destroy(r);
}

static int http__grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Appends a token's bytes (r->mu held): complete characters go to out (invalid bytes as
 * U+FFFD), an incomplete tail waits in pend; final flushes the tail too. */
static void http__req_append(http__req *r, const char *text, size_t len, int final) {
    size_t n = (size_t)r->n_pend + len;
    if (n == 0) return;
    char *raw = malloc(n);
    if (!raw) {
        r->oom = 1;
        return;
    }
    memcpy(raw, r->pend, (size_t)r->n_pend);
    if (len) memcpy(raw + r->n_pend, text, len);
    size_t k = final ? n : http_utf8_complete(raw, n);
    r->n_pend = (int)(n - k);
    memcpy(r->pend, raw + k, n - k);
    if (k) {
        char *v = cli_utf8_valid(raw, k);
        size_t vl = v ? strlen(v) : 0;
        size_t segcap = (size_t)r->seg_cap;
        if (!v || http__grow((void **)&r->out, &r->out_cap, r->out_len + vl + 1, 1) ||
            http__grow((void **)&r->seg, &segcap, (size_t)r->n_seg + 1, sizeof *r->seg)) {
            r->oom = 1;
        } else {
            memcpy(r->out + r->out_len, v, vl + 1);
            r->out_len += vl;
            r->seg[r->n_seg++] = r->out_len;
        }
        r->seg_cap = (int)segcap;
        free(v);
    }
    free(raw);
}

/* The scheduler's callback, on its step-loop thread: append, signal, never block on I/O. */
static void http__emit(void *user, int32_t token, const char *text, int len, int finished,
                       const char *reason) {
    http__req *r = user;
    http_server *h = r->h;
    double now = http__now(), ttft = -1, itl = -1, dur = -1;
    int failed = finished && reason && !strcmp(reason, "error");
    int counted = token >= 0 && !failed && !(finished && reason && !strcmp(reason, "cancelled"));
    pthread_mutex_lock(&r->mu);
    if (failed) {
        free(r->errmsg);
        r->errmsg = strndup(text ? text : "", len > 0 ? (size_t)len : 0);
        http__req_append(r, "", 0, 1);
    } else if (len > 0 || finished) {
        http__req_append(r, text ? text : "", len > 0 ? (size_t)len : 0, finished);
    }
    if (counted) {
        r->n_tokens++;
        if (!r->got_first) ttft = now - r->t_submit;
        else itl = now - r->t_last;
        r->got_first = 1;
        r->t_last = now;
    }
    if (finished) {
        r->finished = 1;
        snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "stop");
        dur = now - r->t_submit;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&h->mu);
    if (ttft >= 0) http__hist_observe(&h->ttft, ttft);
    if (itl >= 0) http__hist_observe(&h->itl, itl);
    if (dur >= 0) http__hist_observe(&h->dur, dur);
    pthread_mutex_unlock(&h->mu);
    if (finished) http__req_release(r);
}

/* 1 if the client hung up (or its socket failed) */
static int http__client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static void http__cancel(http__req *r) {
    if (!r->cancelled) {
        r->cancelled = 1;
        sched_cancel(r->h->s, r->sched_id);
    }
}

/* r->mu held: wait up to HTTP__WAIT_MS for the next emit */
static void http__req_wait(http__req *r) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += HTTP__WAIT_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

/* ---- responses ---------------------------------------------------------------------------- */

static void http__count(http_server *h, int status) {
    int i = 0;
    while (i < HTTP__N_CODES && http__codes[i] != status) i++;
    pthread_mutex_lock(&h->mu);
    h->status[i]++;
    pthread_mutex_unlock(&h->mu);
}

/* takes ownership of body (malloc'd); allow: the Allow header of a 405, else NULL */
static enum MHD_Result http__send(http_server *h, struct MHD_Connection *c, int status,
                                  const char *ctype, char *body, size_t len, const char *allow) {
    struct MHD_Response *res = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!res) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(res, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (allow) MHD_add_response_header(res, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == 401) MHD_add_response_header(res, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, res);
    MHD_destroy_response(res);
    http__count(h, status);
    return rc;
}

static enum MHD_Result http__send_json(http_server *h, struct MHD_Connection *c, int status,
                                       cJSON *obj, const char *allow) {
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s) return MHD_NO;
    return http__send(h, c, status, "application/json", s, strlen(s), allow);
}

static cJSON *http__error_json(const http__err *e) {
    cJSON *o = cJSON_CreateObject(), *x = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(x, "message", e->msg);
    cJSON_AddStringToObject(x, "type", e->type);
    if (e->param) cJSON_AddStringToObject(x, "param", e->param);
    else cJSON_AddNullToObject(x, "param");
    if (e->code) cJSON_AddStringToObject(x, "code", e->code);
    else cJSON_AddNullToObject(x, "code");
    return o;
}

static enum MHD_Result http__send_err(http_server *h, struct MHD_Connection *c,
                                      const http__err *e) {
    return http__send_json(h, c, e->status, http__error_json(e), NULL);
}

static enum MHD_Result http__fail(http_server *h, struct MHD_Connection *c, int status,
                                  const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static enum MHD_Result http__fail(http_server *h, struct MHD_Connection *c, int status,
                                  const char *param, const char *code, const char *fmt, ...) {
    http__err e;
    http__set_err(&e, status, param, code, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    return http__send_err(h, c, &e);
}

/* ---- request validation ------------------------------------------------------------------- */

static const char *http__type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "null";
}

/* the member, or NULL when absent or JSON null */
static cJSON *http__get(const cJSON *o, const char *key) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* 1 set, 0 absent, -1 error (e filled) */
static int http__num(const cJSON *o, const char *key, double lo, double hi, double *out,
                     http__err *e) {
    cJSON *v = http__get(o, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        if (cJSON_IsNumber(v))
            http__set_err(e, 400, key, "invalid_value", "'%s' must be a number in [%g, %g], got %g",
                          key, lo, hi, v->valuedouble);
        else
            http__set_err(e, 400, key, "invalid_type", "'%s' must be a number, got %s", key,
                          http__type_name(v));
        return -1;
    }
    *out = v->valuedouble;
    return 1;
}

static int http__int(const cJSON *o, const char *key, double lo, double hi, long long *out,
                     http__err *e) {
    cJSON *v = http__get(o, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || !isfinite(v->valuedouble)) {
        http__set_err(e, 400, key, "invalid_type", "'%s' must be an integer, got %s", key,
                      cJSON_IsNumber(v) ? "a fraction" : http__type_name(v));
        return -1;
    }
    if (v->valuedouble < lo || v->valuedouble > hi) {
        http__set_err(e, 400, key, "invalid_value", "'%s' must be an integer in [%.0f, %.0f], got %.0f",
                      key, lo, hi, v->valuedouble);
        return -1;
    }
    *out = (long long)v->valuedouble;
    return 1;
}

static int http__bool(const cJSON *o, const char *key, int *out, http__err *e) {
    cJSON *v = http__get(o, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) {
        http__set_err(e, 400, key, "invalid_type", "'%s' must be a boolean, got %s", key,
                      http__type_name(v));
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 1;
}

/* A validated request, ready for sched_submit. */
typedef struct {
    cJSON *json;
    int chat, stream, include_usage, ignore_eos;
    int32_t *prompt;
    int n_prompt;
    long long max_tokens;
    sample_params sp;
    const char *stops[SCHED_MAX_STOPS + 1];
} http__job;

static int http__tokenize(http_server *h, const char *text, size_t len, http__job *j,
                          const char *param, http__err *e) {
    int64_t cap = (int64_t)len + 8, n;
    for (;;) {
        free(j->prompt);
        j->prompt = malloc((size_t)cap * sizeof *j->prompt);
        if (!j->prompt) {
            http__set_err(e, 500, NULL, NULL, "out of memory tokenizing a %zu-byte %s", len, param);
            return -1;
        }
        n = tok_encode(h->t, text, len, 1, 1, j->prompt, cap);
        if (n < 0) {
            http__set_err(e, 400, param, "invalid_value", "the %s could not be tokenized", param);
            return -1;
        }
        if (n <= cap) break;
        cap = n;
    }
    j->n_prompt = (int)(n < INT32_MAX ? n : INT32_MAX);
    return 0;
}

static int http__prompt(http_server *h, const cJSON *root, http__job *j, http__err *e) {
    cJSON *p = http__get(root, "prompt");
    if (!p) {
        http__set_err(e, 400, "prompt", "missing_required_parameter", "'prompt' is required");
        return -1;
    }
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        p = cJSON_GetArrayItem(p, 0);
    if (cJSON_IsString(p)) return http__tokenize(h, p->valuestring, strlen(p->valuestring), j, "prompt", e);
    if (!cJSON_IsArray(p)) {
        http__set_err(e, 400, "prompt", "invalid_type",
                      "'prompt' must be a string or an array of token ids, got %s", http__type_name(p));
        return -1;
    }
    int n = cJSON_GetArraySize(p);
    if (n == 0) {
        http__set_err(e, 400, "prompt", "invalid_value", "'prompt' is an empty array");
        return -1;
    }
    if (n > h->o.n_ctx) {
        http__set_err(e, 400, "prompt", "context_length_exceeded",
                      "the prompt has %d tokens; this model's context is %d tokens", n, h->o.n_ctx);
        return -1;
    }
    j->prompt = malloc((size_t)n * sizeof *j->prompt);
    if (!j->prompt) {
        http__set_err(e, 500, NULL, NULL, "out of memory");
        return -1;
    }
    int i = 0;
    for (cJSON *v = p->child; v; v = v->next, i++) {
        if (cJSON_IsString(v)) {
            http__set_err(e, 400, "prompt", "invalid_value",
                          "'prompt' holds %d strings; one prompt per request is supported", n);
            return -1;
        }
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble >= h->o.n_vocab) {
            http__set_err(e, 400, "prompt", "invalid_value",
                          "'prompt'[%d] must be a token id in [0, %d)", i, h->o.n_vocab);
            return -1;
        }
        j->prompt[i] = (int32_t)v->valuedouble;
    }
    j->n_prompt = n;
    return 0;
}

/* content: a string, or an array of {"type": "text", "text": ...} parts joined by "\n";
 * returns a malloc'd copy */
static char *http__content(const cJSON *m, int i, int is_assistant, http__err *e) {
    cJSON *c = http__get(m, "content");
    if (!c) {
        if (is_assistant) return strdup("");
        http__set_err(e, 400, "messages", "missing_required_parameter",
                      "messages[%d].content is required", i);
        return NULL;
    }
    if (cJSON_IsString(c)) return strdup(c->valuestring);
    if (!cJSON_IsArray(c)) {
        http__set_err(e, 400, "messages", "invalid_type",
                      "messages[%d].content must be a string or an array of text parts, got %s", i,
                      http__type_name(c));
        return NULL;
    }
    size_t total = 1;
    int k = 0;
    for (cJSON *p = c->child; p; p = p->next, k++) {
        cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        cJSON *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text") ||
            !cJSON_IsString(tx)) {
            http__set_err(e, 400, "messages", "invalid_value",
                          "messages[%d].content[%d]: only {\"type\": \"text\", \"text\": ...} parts "
                          "are supported", i, k);
            return NULL;
        }
        total += strlen(tx->valuestring) + 1;
    }
    char *s = malloc(total), *o = s;
    if (!s) {
        http__set_err(e, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    *o = 0;
    for (cJSON *p = c->child; p; p = p->next) {
        const char *tx = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        if (o != s) *o++ = '\n';
        size_t l = strlen(tx);
        memcpy(o, tx, l + 1);
        o += l;
    }
    return s;
}

static int http__messages(http_server *h, const cJSON *root, http__job *j, http__err *e) {
    cJSON *ms = http__get(root, "messages");
    if (!ms) {
        http__set_err(e, 400, "messages", "missing_required_parameter", "'messages' is required");
        return -1;
    }
    if (!cJSON_IsArray(ms)) {
        http__set_err(e, 400, "messages", "invalid_type", "'messages' must be an array, got %s",
                      http__type_name(ms));
        return -1;
    }
    int n = cJSON_GetArraySize(ms);
    if (n == 0) {
        http__set_err(e, 400, "messages", "invalid_value", "'messages' must not be empty");
        return -1;
    }
    chat_msg *msgs = calloc((size_t)n, sizeof *msgs);
    if (!msgs) {
        http__set_err(e, 500, NULL, NULL, "out of memory");
        return -1;
    }
    int rc = -1, i = 0;
    for (cJSON *m = ms->child; m; m = m->next, i++) {
        if (!cJSON_IsObject(m)) {
            http__set_err(e, 400, "messages", "invalid_type", "messages[%d] must be an object, got %s",
                          i, http__type_name(m));
            goto out;
        }
        cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) {
            http__set_err(e, 400, "messages", "invalid_value", "messages[%d].role must be a string", i);
            goto out;
        }
        if (chat_role_parse(role->valuestring, &msgs[i].role)) {
            http__set_err(e, 400, "messages", "invalid_value",
                          "messages[%d].role '%.64s' is not one of system, developer, user, assistant",
                          i, role->valuestring);
            goto out;
        }
        if (!(msgs[i].content = http__content(m, i, msgs[i].role == CHAT_ASSISTANT, e))) goto out;
    }
    char err[256];
    char *text = chat_render(&h->o.chat, msgs, n, err, sizeof err);
    if (!text) {
        http__set_err(e, 400, "messages", "invalid_value", "%s", err);
        goto out;
    }
    rc = http__tokenize(h, text, strlen(text), j, "messages", e);
    free(text);
out:
    for (int k = 0; k < n; k++) free((char *)msgs[k].content);
    free(msgs);
    return rc;
}

/* Refused options: each either absent/null or equal to its neutral value. */
static int http__refuse(const cJSON *root, http__err *e) {
    static const char *const off_if_true[] = { "echo", "logprobs", NULL };
    for (int i = 0; off_if_true[i]; i++) {
        cJSON *v = http__get(root, off_if_true[i]);
        if (v && !cJSON_IsFalse(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0)) {
            http__set_err(e, 400, off_if_true[i], "unsupported_parameter",
                          "'%s' is not supported by this server", off_if_true[i]);
            return -1;
        }
    }
    cJSON *v;
    if ((v = http__get(root, "top_logprobs")) && !(cJSON_IsNumber(v) && v->valuedouble == 0)) {
        http__set_err(e, 400, "top_logprobs", "unsupported_parameter", "'top_logprobs' is not supported");
        return -1;
    }
    if ((v = http__get(root, "suffix")) && !(cJSON_IsString(v) && !*v->valuestring)) {
        http__set_err(e, 400, "suffix", "unsupported_parameter", "'suffix' is not supported");
        return -1;
    }
    if ((v = http__get(root, "tools")) && !(cJSON_IsArray(v) && !v->child)) {
        http__set_err(e, 400, "tools", "unsupported_parameter", "'tools' are not supported");
        return -1;
    }
    if ((v = http__get(root, "response_format"))) {
        cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
        if (!cJSON_IsObject(v) || !cJSON_IsString(t) || strcmp(t->valuestring, "text")) {
            http__set_err(e, 400, "response_format", "unsupported_parameter",
                          "only response_format {\"type\": \"text\"} is supported");
            return -1;
        }
    }
    long long n;
    int r;
    if ((r = http__int(root, "n", 1, 1e6, &n, e)) < 0) return -1;
    if (r && n != 1) {
        http__set_err(e, 400, "n", "unsupported_parameter", "only n = 1 is supported, got %lld", n);
        return -1;
    }
    if ((r = http__int(root, "best_of", 1, 1e6, &n, e)) < 0) return -1;
    if (r && n != 1) {
        http__set_err(e, 400, "best_of", "unsupported_parameter", "only best_of = 1 is supported");
        return -1;
    }
    return 0;
}

static int http__stop_strings(const cJSON *root, http__job *j, http__err *e) {
    cJSON *s = http__get(root, "stop");
    if (!s) return 0;
    if (cJSON_IsString(s)) {
        if (!*s->valuestring) {
            http__set_err(e, 400, "stop", "invalid_value", "'stop' must not be an empty string");
            return -1;
        }
        j->stops[0] = s->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(s) || cJSON_GetArraySize(s) > SCHED_MAX_STOPS) {
        http__set_err(e, 400, "stop", cJSON_IsArray(s) ? "invalid_value" : "invalid_type",
                      "'stop' must be a string or an array of at most %d strings, got %s",
                      SCHED_MAX_STOPS, cJSON_IsArray(s) ? "a longer array" : http__type_name(s));
        return -1;
    }
    int i = 0;
    for (cJSON *v = s->child; v; v = v->next) {
        if (!cJSON_IsString(v) || !*v->valuestring) {
            http__set_err(e, 400, "stop", "invalid_value", "'stop'[%d] must be a non-empty string", i);
            return -1;
        }
        j->stops[i++] = v->valuestring;
    }
    return 0;
}

/* Parses and checks a completion request; on success j holds the prompt tokens and options. */
static int http__parse(http_server *h, const char *body, size_t len, int chat, http__job *j,
                       http__err *e) {
    memset(j, 0, sizeof *j);
    j->chat = chat;
    const char *end = NULL;
    j->json = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!j->json) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        http__set_err(e, 400, NULL, "invalid_json", "the request body is not valid JSON (error near byte %zu of %zu)",
                      at, len);
        return -1;
    }
    while (end && (size_t)(end - body) < len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
    if (end && (size_t)(end - body) < len) {
        http__set_err(e, 400, NULL, "invalid_json", "trailing bytes after the JSON value at byte %zu",
                      (size_t)(end - body));
        return -1;
    }
    const cJSON *root = j->json;
    if (!cJSON_IsObject(root)) {
        http__set_err(e, 400, NULL, "invalid_json", "the request body must be a JSON object, got %s",
                      http__type_name(root));
        return -1;
    }
    cJSON *model = http__get(root, "model");
    if (model && !cJSON_IsString(model)) {
        http__set_err(e, 400, "model", "invalid_type", "'model' must be a string, got %s",
                      http__type_name(model));
        return -1;
    }
    if (model && strcmp(model->valuestring, h->model_name)) {
        http__set_err(e, 404, "model", "model_not_found",
                      "the model '%.200s' does not exist; this server serves '%.200s'",
                      model->valuestring, h->model_name);
        return -1;
    }
    if (http__refuse(root, e)) return -1;
    if (http__bool(root, "stream", &j->stream, e) < 0) return -1;
    cJSON *so = http__get(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) {
            http__set_err(e, 400, "stream_options", "invalid_type",
                          "'stream_options' must be an object, got %s", http__type_name(so));
            return -1;
        }
        if (http__bool(so, "include_usage", &j->include_usage, e) < 0) return -1;
    }
    if (http__bool(root, "ignore_eos", &j->ignore_eos, e) < 0) return -1;

    /* sampling: OpenAI's defaults (temperature 1, top_p 1), extensions off unless given */
    sample_params sp = sample_defaults();
    sp.temp = 1.0f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.rep_penalty = 1.0f;
    double d;
    long long l;
    int r;
    if ((r = http__num(root, "temperature", 0, 2, &d, e)) < 0) return -1;
    if (r) sp.temp = (float)d;
    if ((r = http__num(root, "top_p", 0, 1, &d, e)) < 0) return -1;
    if (r) sp.top_p = d > 0 ? (float)d : 1.0f;
    if ((r = http__int(root, "top_k", -1, h->o.n_vocab, &l, e)) < 0) return -1;
    if (r) sp.top_k = l > 0 ? (int)l : 0;
    if ((r = http__num(root, "min_p", 0, 1, &d, e)) < 0) return -1;
    if (r) sp.min_p = (float)d;
    if ((r = http__num(root, "repetition_penalty", 0.01, 100, &d, e)) < 0) return -1;
    if (r) sp.rep_penalty = (float)d;
    if (http__num(root, "presence_penalty", -2, 2, &d, e) < 0) return -1;
    if (http__num(root, "frequency_penalty", -2, 2, &d, e) < 0) return -1;
    if ((r = http__int(root, "seed", -9.2e18, 9.2e18, &l, e)) < 0) return -1;
    if (r) sp.seed = (uint64_t)l;
    else {
        pthread_mutex_lock(&h->mu);
        sp.seed = h->nonce ^ (++h->counter * 0x9e3779b97f4a7c15ull);
        pthread_mutex_unlock(&h->mu);
    }
    j->sp = sp;
    if (http__stop_strings(root, j, e)) return -1;

    long long max_tokens = 0;
    const char *mt_key = "max_tokens";
    if (chat && http__get(root, "max_completion_tokens")) mt_key = "max_completion_tokens";
    if ((r = http__int(root, mt_key, 1, h->o.n_ctx, &max_tokens, e)) < 0) return -1;

    if (chat ? http__messages(h, root, j, e) : http__prompt(h, root, j, e)) return -1;
    const char *what = chat ? "messages" : "prompt";
    if (j->n_prompt < 1) {
        http__set_err(e, 400, what, "invalid_value", "the %s is empty (no tokens)", what);
        return -1;
    }
    if (j->n_prompt >= h->o.n_ctx) {
        http__set_err(e, 400, what, "context_length_exceeded",
                      "this model's maximum context length is %d tokens, but the %s has %d tokens",
                      h->o.n_ctx, what, j->n_prompt);
        return -1;
    }
    int room = h->o.n_ctx - j->n_prompt;
    if (!r) max_tokens = chat ? room : (room < 16 ? room : 16);
    if (max_tokens > room) {
        http__set_err(e, 400, mt_key, "context_length_exceeded",
                      "this model's maximum context length is %d tokens; you requested %lld tokens "
                      "(%d in the %s, %lld for the completion)",
                      h->o.n_ctx, j->n_prompt + max_tokens, j->n_prompt, what, max_tokens);
        return -1;
    }
    j->max_tokens = max_tokens;
    return 0;
}

static void http__job_free(http__job *j) {
    cJSON_Delete(j->json);
    free(j->prompt);
}

/* ---- completion responses ----------------------------------------------------------------- */

static const char *http__finish(const char *reason) {
    return !strcmp(reason, "length") ? "length" : "stop";
}

static cJSON *http__base(const http__req *r, int chunk) {
    cJSON *o = cJSON_CreateObject();
    char id[64];
    snprintf(id, sizeof id, "%s-%s", r->chat ? "chatcmpl" : "cmpl", r->id);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", r->chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                 : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)r->created);
    cJSON_AddStringToObject(o, "model", r->h->model_name);
    cJSON_AddNullToObject(o, "system_fingerprint");
    return o;
}

static cJSON *http__usage(const http__req *r, int n_tokens) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", r->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", n_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", r->n_prompt + n_tokens);
    return u;
}

/* one choice: text (NULL for none), finish reason (NULL while running), role chunk */
static cJSON *http__choice(const http__req *r, int chunk, const char *text, const char *finish,
                           int role) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    if (!r->chat) {
        cJSON_AddStringToObject(c, "text", text ? text : "");
    } else {
        cJSON *m = cJSON_AddObjectToObject(c, chunk ? "delta" : "message");
        if (!chunk || role) cJSON_AddStringToObject(m, "role", "assistant");
        if (!chunk || role || text) cJSON_AddStringToObject(m, "content", text ? text : "");
    }
    cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    return c;
}

/* appends "data: JSON\n\n" of obj (freed) to the request's SSE buffer */
static int http__sse_put(http__req *r, const char *s, size_t n) {
    if (http__grow((void **)&r->sse, &r->sse_cap, r->sse_len + n + 1, 1)) return -1;
    memcpy(r->sse + r->sse_len, s, n);
    r->sse_len += n;
    return 0;
}

static int http__sse_event(http__req *r, cJSON *obj) {
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s) return -1;
    int rc = http__sse_put(r, "data: ", 6) || http__sse_put(r, s, strlen(s)) ||
             http__sse_put(r, "\n\n", 2);
    free(s);
    return rc;
}

static int http__sse_chunk(http__req *r, const char *text, const char *finish, int role,
                           int with_usage_null) {
    cJSON *o = http__base(r, 1);
    cJSON *ch = cJSON_AddArrayToObject(o, "choices");
    cJSON_AddItemToArray(ch, http__choice(r, 1, text, finish, role));
    if (with_usage_null) cJSON_AddNullToObject(o, "usage");
    return http__sse_event(r, o);
}

/* libmicrohttpd's content reader for a streamed completion (its connection thread). */
static ssize_t http__stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    http__req *r = cls;
    http_server *h = r->h;
    (void)pos;
    for (;;) {
        if (r->sse_off < r->sse_len) {
            size_t n = r->sse_len - r->sse_off < max ? r->sse_len - r->sse_off : max;
            memcpy(buf, r->sse + r->sse_off, n);
            r->sse_off += n;
            r->t_sent = http__now();
            return (ssize_t)n;
        }
        r->sse_len = r->sse_off = 0;
        if (r->phase == PH_END) return MHD_CONTENT_READER_END_OF_STREAM;
        if (r->phase == PH_ROLE) {
            r->phase = PH_TOKENS;
            if (r->chat && http__sse_chunk(r, NULL, NULL, 1, r->include_usage))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        double keepalive = h->o.timeout_s > 0 ? h->o.timeout_s / 3.0 : 15.0;
        pthread_mutex_lock(&r->mu);
        while (r->seg_sent == r->n_seg && !r->finished) {
            if (atomic_load(&h->stopping) || http__client_gone(r->fd)) {
                if (!atomic_load(&h->stopping)) http__cancel(r);
                pthread_mutex_unlock(&r->mu);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            if (http__now() - r->t_sent > keepalive) break;
            http__req_wait(r);
        }
        /* copy what is new, format it outside the lock */
        int s0 = r->seg_sent, s1 = r->n_seg, finished = r->finished, n_tokens = r->n_tokens;
        size_t base = s0 ? r->seg[s0 - 1] : 0, top = s1 ? r->seg[s1 - 1] : 0;
        char *text = NULL, *errmsg = NULL;
        size_t *ends = NULL;
        char reason[16];
        int oom = r->oom;
        memcpy(reason, r->reason, sizeof reason);
        if (s1 > s0) {
            text = malloc(top - base + 1);
            ends = malloc((size_t)(s1 - s0) * sizeof *ends);
            if (text && ends) {
                memcpy(text, r->out + base, top - base);
                for (int i = s0; i < s1; i++) ends[i - s0] = r->seg[i] - base;
            } else {
                oom = 1;
            }
        }
        if (finished && r->errmsg) errmsg = strdup(r->errmsg);
        r->seg_sent = s1;
        pthread_mutex_unlock(&r->mu);

        int bad = oom;
        if (s1 == s0 && !finished) bad |= http__sse_put(r, ": keep-alive\n\n", 14);
        size_t from = 0;
        for (int i = 0; i < s1 - s0 && !bad; i++) {
            char save = text[ends[i]];
            text[ends[i]] = 0;
            bad |= http__sse_chunk(r, text + from, NULL, 0, r->include_usage);
            text[ends[i]] = save;
            from = ends[i];
        }
        free(text);
        free(ends);
        if (finished && !bad) {
            if (!strcmp(reason, "cancelled")) {
                free(errmsg);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            if (!strcmp(reason, "error")) {
                http__err e;
                http__set_err(&e, 500, NULL, "generation_failed", "%s", errmsg ? errmsg : "generation failed");
                bad |= http__sse_event(r, http__error_json(&e));
            } else {
                bad |= http__sse_chunk(r, NULL, http__finish(reason), 0, r->include_usage);
                if (r->include_usage && !bad) {
                    cJSON *o = http__base(r, 1);
                    cJSON_AddArrayToObject(o, "choices");
                    cJSON_AddItemToObject(o, "usage", http__usage(r, n_tokens));
                    bad |= http__sse_event(r, o);
                }
            }
            bad |= http__sse_put(r, "data: [DONE]\n\n", 14);
            r->phase = PH_END;
        }
        free(errmsg);
        if (bad) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static enum MHD_Result http__complete(http_server *h, struct MHD_Connection *c, http__conn *cc,
                                      int chat) {
    http__job j;
    http__err e;
    if (http__parse(h, cc->body ? cc->body : "", cc->len, chat, &j, &e)) {
        http__job_free(&j);
        return http__send_err(h, c, &e);
    }
    http__req *r = http__req_new(h);
    if (!r) {
        http__job_free(&j);
        return http__fail(h, c, 500, NULL, NULL, "out of memory");
    }
    r->chat = chat;
    r->stream = j.stream;
    r->include_usage = j.include_usage;
    r->n_prompt = j.n_prompt;
    r->phase = PH_ROLE;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;

    sched_request sr = { .prompt = j.prompt, .n_prompt = j.n_prompt, .max_tokens = (int)j.max_tokens,
                         .sampling = j.sp, .ignore_eos = j.ignore_eos };
    for (int i = 0; i < SCHED_MAX_STOPS; i++) sr.stop[i] = j.stops[i];
    char err[256] = "";
    r->refs = 2;   /* the scheduler's reference, dropped by emit(finished) */
    r->t_submit = r->t_sent = http__now();
    uint64_t id;
    int rc = sched_submit(h->s, &sr, http__emit, r, &id, err, sizeof err);
    http__job_free(&j);
    if (rc) {
        r->refs = 1;
        http__req_release(r);
        if (atomic_load(&h->stopping))
            return http__fail(h, c, 503, NULL, "server_shutting_down", "the server is shutting down");
        return http__fail(h, c, 400, chat ? "messages" : "prompt", "invalid_request", "%s", err);
    }
    pthread_mutex_lock(&r->mu);
    r->sched_id = id;
    pthread_mutex_unlock(&r->mu);

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
        enum MHD_Result q = MHD_queue_response(c, MHD_HTTP_OK, res);
        MHD_destroy_response(res);
        http__count(h, 200);
        return q;
    }

    /* Not streamed: wait here (this connection's own thread). The idle timeout is off while
     * the server, not the client, is the slow side; setting it again restarts its clock. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    pthread_mutex_lock(&r->mu);
    while (!r->finished && !atomic_load(&h->stopping)) {
        if (!r->cancelled && http__client_gone(r->fd)) http__cancel(r);
        http__req_wait(r);
    }
    int finished = r->finished, cancelled = r->cancelled, oom = r->oom, n_tokens = r->n_tokens;
    char reason[16];
    memcpy(reason, r->reason, sizeof reason);
    char *text = finished && !oom ? strndup(r->out ? r->out : "", r->out_len) : NULL;
    char *errmsg = r->errmsg ? strdup(r->errmsg) : NULL;
    pthread_mutex_unlock(&r->mu);
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)h->o.timeout_s);

    enum MHD_Result q;
    if (!finished) {
        q = http__fail(h, c, 503, NULL, "server_shutting_down", "the server is shutting down");
    } else if (cancelled || !strcmp(reason, "cancelled")) {
        q = MHD_NO;   /* nobody is listening */
    } else if (!strcmp(reason, "error") || oom || !text) {
        q = http__fail(h, c, 500, NULL, "generation_failed", "%s",
                       errmsg ? errmsg : "out of memory collecting the output");
    } else {
        cJSON *o = http__base(r, 0);
        cJSON *ch = cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToArray(ch, http__choice(r, 0, text, http__finish(reason), 0));
        cJSON_AddItemToObject(o, "usage", http__usage(r, n_tokens));
        q = http__send_json(h, c, 200, o, NULL);
    }
    free(text);
    free(errmsg);
    http__req_release(r);
    return q;
}

/* ---- GET endpoints ------------------------------------------------------------------------ */

static cJSON *http__model_obj(http_server *h) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", h->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)h->started);
    cJSON_AddStringToObject(m, "owned_by", "sampan");
    cJSON_AddNumberToObject(m, "max_model_len", h->o.n_ctx);
    return m;
}

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} http__text;

static void http__printf(http__text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void http__printf(http__text *t, const char *fmt, ...) {
    if (t->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->p ? t->p + t->n : NULL, t->p ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->oom = 1;
            return;
        }
        if (t->p && t->n + (size_t)k < t->cap) {
            t->n += (size_t)k;
            return;
        }
        if (http__grow((void **)&t->p, &t->cap, t->n + (size_t)k + 1, 1)) {
            t->oom = 1;
            return;
        }
    }
}

static void http__metric(http__text *t, const char *name, const char *type, const char *help,
                         double v) {
    http__printf(t, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static void http__hist_print(http__text *t, const http__hist *hi) {
    http__printf(t, "# HELP %s %s\n# TYPE %s histogram\n", hi->name, hi->help, hi->name);
    uint64_t acc = 0;
    for (int i = 0; i < hi->n; i++) {
        acc += hi->cnt[i];
        http__printf(t, "%s_bucket{le=\"%g\"} %llu\n", hi->name, hi->le[i], (unsigned long long)acc);
    }
    http__printf(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n%s_count %llu\n", hi->name,
                 (unsigned long long)hi->count, hi->name, hi->sum, hi->name,
                 (unsigned long long)hi->count);
}

static enum MHD_Result http__metrics(http_server *h, struct MHD_Connection *c) {
    sched_stats st;
    sched_stats_get(h->s, &st);
    http__text t = { 0 };
    http__metric(&t, "sampan_requests_total", "counter", "Requests submitted to the scheduler.",
                 (double)st.requests_total);
    http__metric(&t, "sampan_requests_finished_total", "counter", "Requests the scheduler finished.",
                 (double)st.requests_finished);
    http__metric(&t, "sampan_requests_running", "gauge", "Sequences in the running batch.",
                 (double)st.requests_running);
    http__metric(&t, "sampan_requests_waiting", "gauge", "Requests queued for admission.",
                 (double)st.requests_waiting);
    http__metric(&t, "sampan_tokens_in_total", "counter", "Prompt tokens admitted.", (double)st.tokens_in);
    http__metric(&t, "sampan_tokens_out_total", "counter", "Tokens generated.", (double)st.tokens_out);
    http__metric(&t, "sampan_kv_blocks_total", "gauge", "KV cache blocks in the pool.",
                 (double)st.kv_blocks_total);
    http__metric(&t, "sampan_kv_blocks_used", "gauge", "KV cache blocks held by sequences.",
                 (double)st.kv_blocks_used);
    http__metric(&t, "sampan_kv_blocks_free", "gauge",
                 "KV cache blocks not held by any sequence (prefix-cached ones included).",
                 (double)(st.kv_blocks_total - st.kv_blocks_used));
    http__metric(&t, "sampan_kv_blocks_cached", "gauge",
                 "Free KV cache blocks that still hold a reusable prompt prefix.",
                 (double)st.kv_blocks_cached);
    http__metric(&t, "sampan_kv_bytes_total", "gauge",
                 "Bytes of the KV cache pool on the leader rank (its KV type's).",
                 (double)st.kv_bytes_total);
    http__metric(&t, "sampan_kv_bytes_used", "gauge",
                 "Bytes of the KV cache held by sequences on the leader rank.",
                 (double)st.kv_bytes_used);
    http__metric(&t, "sampan_preemptions_total", "counter",
                 "Running sequences preempted because the KV pool ran out.", (double)st.preemptions);
    http__metric(&t, "sampan_steps_total", "counter", "Forward steps run by the scheduler.",
                 (double)st.steps);
    pthread_mutex_lock(&h->mu);
    http__hist_print(&t, &h->ttft);
    http__hist_print(&t, &h->itl);
    http__hist_print(&t, &h->dur);
    http__printf(&t, "# HELP sampan_http_responses_total HTTP responses by status code.\n"
                     "# TYPE sampan_http_responses_total counter\n");
    for (int i = 0; i < HTTP__N_CODES; i++)
        http__printf(&t, "sampan_http_responses_total{code=\"%d\"} %llu\n", http__codes[i],
                     (unsigned long long)h->status[i]);
    http__printf(&t, "sampan_http_responses_total{code=\"other\"} %llu\n",
                 (unsigned long long)h->status[HTTP__N_CODES]);
    pthread_mutex_unlock(&h->mu);
    if (t.oom) {
        free(t.p);
        return http__fail(h, c, 500, NULL, NULL, "out of memory");
    }
    return http__send(h, c, 200, "text/plain; version=0.0.4; charset=utf-8", t.p, t.n, NULL);
}

/* ---- routing and the access handler ------------------------------------------------------- */

enum { R_NONE, R_HEALTH, R_METRICS, R_MODELS, R_MODEL, R_COMPLETIONS, R_CHAT };

static int http__route(const char *url, int *post) {
    static const struct { const char *path; int route, post; } tab[] = {
        { "/health", R_HEALTH, 0 },           { "/metrics", R_METRICS, 0 },
        { "/v1/models", R_MODELS, 0 },        { "/v1/completions", R_COMPLETIONS, 1 },
        { "/v1/chat/completions", R_CHAT, 1 },
    };
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
        if (!strcmp(url, tab[i].path)) {
            *post = tab[i].post;
            return tab[i].route;
        }
    *post = 0;
    return !strncmp(url, "/v1/models/", 11) && url[11] ? R_MODEL : R_NONE;
}

static enum MHD_Result http__handler(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload, size_t *upload_size, void **con_cls) {
    http_server *h = cls;
    http__conn *cc = *con_cls;
    (void)version;
    if (!cc) {
        /* first call: headers only. Refuse early what the body cannot fix. */
        if (!(cc = calloc(1, sizeof *cc))) return MHD_NO;
        *con_cls = cc;
        int post;
        cc->route = http__route(url, &post);
        if (cc->route != R_HEALTH && h->api_key &&
            !http_auth_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
                          h->api_key))
            return http__fail(h, c, 401, NULL, "invalid_api_key",
                              "missing or incorrect API key: send 'Authorization: Bearer KEY'");
        if (cc->route == R_NONE)
            return http__fail(h, c, 404, NULL, "not_found", "no such endpoint: %s %.200s", method, url);
        int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        if (post ? strcmp(method, "POST") : !is_get) {
            http__err e;
            http__set_err(&e, 405, NULL, "method_not_allowed", "%s is not allowed on %.200s (use %s)",
                          method, url, post ? "POST" : "GET");
            return http__send_json(h, c, 405, http__error_json(&e), post ? "POST" : "GET, HEAD");
        }
        if (post) {
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl && strtoull(cl, NULL, 10) > h->o.max_body)
                return http__fail(h, c, 413, NULL, "request_too_large",
                                  "the request body of %.32s bytes exceeds the limit of %zu bytes", cl,
                                  h->o.max_body);
            const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            if (ct && (!strncasecmp(ct, "multipart/", 10) || !strncasecmp(ct, "image/", 6) ||
                       !strncasecmp(ct, "audio/", 6) || !strncasecmp(ct, "video/", 6)))
                return http__fail(h, c, 415, NULL, "unsupported_media_type",
                                  "the body must be JSON (Content-Type: application/json), got %.100s", ct);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (cc->too_large) return MHD_YES;
        if (cc->len + n > h->o.max_body) {
            cc->too_large = 1;
            free(cc->body);
            cc->body = NULL;
            cc->len = cc->cap = 0;
            return MHD_YES;
        }
        if (http__grow((void **)&cc->body, &cc->cap, cc->len + n + 1, 1)) return MHD_NO;
        memcpy(cc->body + cc->len, upload, n);
        cc->len += n;
        cc->body[cc->len] = 0;
        return MHD_YES;
    }
    if (cc->too_large)
        return http__fail(h, c, 413, NULL, "request_too_large",
                          "the request body exceeds the limit of %zu bytes", h->o.max_body);
    switch (cc->route) {
    case R_HEALTH: {
        char *s = strdup("{\"status\":\"ok\"}");
        return s ? http__send(h, c, 200, "application/json", s, strlen(s), NULL) : MHD_NO;
    }
    case R_METRICS: return http__metrics(h, c);
    case R_MODELS: {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "list");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), http__model_obj(h));
        return http__send_json(h, c, 200, o, NULL);
    }
    case R_MODEL:
        if (strcmp(url + 11, h->model_name))
            return http__fail(h, c, 404, "model", "model_not_found", "the model '%.200s' does not exist",
                              url + 11);
        return http__send_json(h, c, 200, http__model_obj(h), NULL);
    case R_COMPLETIONS: return http__complete(h, c, cc, 0);
    case R_CHAT: return http__complete(h, c, cc, 1);
    default: return MHD_NO;
    }
}

/* A request is over: libmicrohttpd's own thread for the connection, after the last byte or
 * on failure. A stream whose client left early is cancelled so its KV blocks come back. */
static void http__completed(void *cls, struct MHD_Connection *c, void **con_cls,
                            enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    http__conn *cc = *con_cls;
    if (!cc) return;
    if (cc->req) {
        http__req *r = cc->req;
        pthread_mutex_lock(&r->mu);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !r->finished &&
            !atomic_load(&r->h->stopping))
            http__cancel(r);
        pthread_mutex_unlock(&r->mu);
        http__req_release(r);
    }
    free(cc->body);
    free(cc);
    *con_cls = NULL;
}

static void http__log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = 0;
    fprintf(stderr, "sampan: http: %s\n", line);
}

/* ---- life cycle --------------------------------------------------------------------------- */

int http_start(const http_opts *o, struct sched *s, const struct tok *t, http_server **out,
               char *err, size_t errlen) {
    *out = NULL;
    http_server *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->o = *o;
    h->host = strdup(o->host ? o->host : "127.0.0.1");
    h->model_name = strdup(o->model_name ? o->model_name : "model");
    h->api_key = o->api_key && *o->api_key ? strdup(o->api_key) : NULL;
    h->s = s;
    h->t = t;
    h->started = (long)time(NULL);
    pthread_mutex_init(&h->mu, NULL);
    atomic_init(&h->stopping, 0);
    h->ttft = (http__hist){ .name = "sampan_time_to_first_token_seconds",
                            .help = "Seconds from submission to the first generated token.",
                            .le = http__ttft_le, .n = sizeof http__ttft_le / sizeof *http__ttft_le };
    h->itl = (http__hist){ .name = "sampan_inter_token_latency_seconds",
                           .help = "Seconds between consecutive tokens of one request.",
                           .le = http__itl_le, .n = sizeof http__itl_le / sizeof *http__itl_le };
    h->dur = (http__hist){ .name = "sampan_request_duration_seconds",
                           .help = "Seconds from submission to the last token.",
                           .le = http__dur_le, .n = sizeof http__dur_le / sizeof *http__dur_le };
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->nonce = ((uint64_t)ts.tv_sec * 1000000007ull) ^ ((uint64_t)ts.tv_nsec << 20) ^
               ((uint64_t)getpid() << 40);
    if (!h->host || !h->model_name || (o->api_key && *o->api_key && !h->api_key)) {
        snprintf(err, errlen, "out of memory");
        http_free(h);
        return -1;
    }
    if (o->max_body == 0 || o->max_connections < 1 || o->timeout_s < 0 || o->port < 0 ||
        o->port > 65535) {
        snprintf(err, errlen, "http: bad limits (max body %zu, max connections %d, timeout %d s, port %d)",
                 o->max_body, o->max_connections, o->timeout_s, o->port);
        http_free(h);
        return -1;
    }

    struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
    struct addrinfo *ai = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", o->port);
    int g = getaddrinfo(h->host, portstr, &hints, &ai);
    if (g || !ai) {
        snprintf(err, errlen, "http: cannot resolve host '%s': %s", h->host, gai_strerror(g));
        http_free(h);
        return -1;
    }
    struct sockaddr_storage sa;
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    int ipv6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);
    h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, http__handler, h,
                            MHD_OPTION_EXTERNAL_LOGGER, http__log, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout_s,
                            MHD_OPTION_NOTIFY_COMPLETED, http__completed, h,
                            MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen, "http: cannot listen on %s port %d (%s)", h->host, o->port,
                 errno ? strerror(errno) : "libmicrohttpd refused the options");
        http_free(h);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    char addr[INET6_ADDRSTRLEN] = "";
    if (ipv6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, addr, sizeof addr);
    else inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, addr, sizeof addr);
    snprintf(h->url, sizeof h->url, ipv6 ? "http://[%s]:%d" : "http://%s:%d", addr, h->port);
    *out = h;
    return 0;
}

int http_port(const http_server *h) { return h->port; }

const char *http_url(const http_server *h) { return h->url; }

void http_stop(http_server *h) {
    if (!h || !h->d) return;
    atomic_store(&h->stopping, 1);
    pthread_mutex_lock(&h->mu);
    for (http__req *r = h->live; r; r = r->next) {
        pthread_mutex_lock(&r->mu);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&h->mu);
    MHD_stop_daemon(h->d);
    h->d = NULL;
}

void http_free(http_server *h) {
    if (!h) return;
    http_stop(h);
    while (h->live) {
        http__req *r = h->live;
        h->live = r->next;
        http__req_destroy(r);
    }
    pthread_mutex_destroy(&h->mu);
    free(h->host);
    free(h->api_key);
    free(h->model_name);
    free(h);
}
